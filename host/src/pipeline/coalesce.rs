//! Coalescing phase: after both caches missed, identical cacheable requests
//! in flight share one upstream call, on this node and then (the local
//! leader only) across nodes. A follower answers with the leader's answer;
//! a leader goes on to call upstream holding its roles in the context,
//! which [`super::store::StorePlan`] completes or releases.

use std::sync::Arc;

use super::RequestCtx;
use crate::cache::coalesce::{Joined, Leader, Role, SharedLease};
use crate::cache::{Answer, CacheKey};
use crate::gateway::Gateway;

/// This request's roles when it leads a coalesced call.
#[derive(Default)]
pub struct Coalescing {
    /// Followers on this node wait for this leader.
    pub leader: Option<Leader<CacheKey, Answer>>,
    /// The cross-node lock this node holds.
    pub lease: Option<SharedLease>,
}

/// Joins the identical requests in flight: the answer when another request
/// (here or on another node) led and succeeded; otherwise records this
/// request's roles in `ctx.coalescing` and returns None (call upstream).
pub(super) async fn join(gw: &Arc<Gateway>, ctx: &mut RequestCtx) -> Option<Arc<Answer>> {
    let (key, _) = ctx.cache_key?;
    let leader = match gw.coalescer.join(key) {
        Role::Leader(leader) => leader,
        Role::Follower(follower) => {
            // A failed leader releases its followers to call on their own.
            let answer = follower.wait().await?;
            gw.metrics.coalesced();
            return Some(answer);
        }
    };
    let shared = gw.shared_coalescer.as_ref().filter(|_| !ctx.no_cache);
    let lease = match shared {
        None => None,
        Some(shared) => match shared.join(&gw.cache, &key).await {
            Joined::Lead(lease) => lease,
            Joined::Answer(answer) => {
                leader.complete(answer.clone());
                gw.metrics.coalesced();
                return Some(answer);
            }
        },
    };
    ctx.coalescing = Coalescing {
        leader: Some(leader),
        lease,
    };
    None
}
