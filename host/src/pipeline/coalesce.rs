//! Coalescing phase: after both caches missed, identical cacheable requests
//! in flight share one upstream call. On this node, the first is the leader
//! and the others wait for its answer. Across nodes, the exact-cache lookup
//! already took the entry's lock or found another node holding it
//! ([`super::caching::lookup`]); a local leader whose lock is held elsewhere
//! waits for that node's answer. A follower answers with the leader's
//! answer; a leader goes on to call upstream holding its roles in the
//! context, which [`super::store::StorePlan`] completes or releases.

use std::sync::Arc;

use super::RequestCtx;
use crate::cache::coalesce::{Joined, Leader, Role, SharedLease};
use crate::cache::{Answer, CacheKey};
use crate::gateway::Gateway;

/// This request's coalescing roles.
#[derive(Default)]
pub struct Coalescing {
    /// Followers on this node wait for this leader.
    pub leader: Option<Leader<CacheKey, Answer>>,
    /// The cross-node lock this request holds.
    pub lease: Option<SharedLease>,
    /// Another node holds the cross-node lock.
    pub held_elsewhere: bool,
}

/// Joins the identical requests in flight: the answer when another request
/// (here or on another node) led and succeeded; otherwise records this
/// request's roles in `ctx.coalescing` and returns None (call upstream).
pub(super) async fn join(gw: &Arc<Gateway>, ctx: &mut RequestCtx) -> Option<Arc<Answer>> {
    let (key, _) = ctx.cache_key?;
    let leader = match gw.coalescer.join(key) {
        Role::Leader(leader) => leader,
        // Holding the cross-node lock, this request leads for every node:
        // a local leader may be waiting for it, so it must not wait there.
        Role::Follower(_) if ctx.coalescing.lease.is_some() => return None,
        Role::Follower(follower) => {
            // A failed leader releases its followers to call on their own.
            let answer = follower.wait().await?;
            gw.metrics.coalesced();
            return Some(answer);
        }
    };
    let held_elsewhere = std::mem::take(&mut ctx.coalescing.held_elsewhere);
    if held_elsewhere && let Some(shared) = &gw.shared_coalescer {
        match shared.wait(&gw.cache, &key).await {
            Joined::Answer(answer) => {
                leader.complete(answer.clone());
                gw.metrics.coalesced();
                return Some(answer);
            }
            Joined::Lead(lease) => ctx.coalescing.lease = lease,
        }
    }
    ctx.coalescing.leader = Some(leader);
    None
}
