//! Storing a fresh answer: in the exact cache (completing coalesced
//! followers on this node and releasing the cross-node lock once the answer
//! is shared) and in the semantic index under the prompt a semantic miss
//! embedded. Runs after the response has gone out, off the request path.
//!
//! The phases before the upstream call gather what storing needs into the
//! request context ([`RequestCtx::cache_key`], [`RequestCtx::semantic`],
//! [`RequestCtx::coalescing`]); [`StorePlan::take`] collects it once the
//! answer is known.

use std::sync::Arc;
use std::time::Duration;

use super::RequestCtx;
use super::coalesce::Coalescing;
use crate::cache::{Answer, CacheKey};
use crate::gateway::Gateway;
use crate::semantic::{IndexKey, SemanticCache};

/// What storing the fresh answer of a semantic miss needs (set by the
/// semantic phase).
pub struct SemanticPending {
    pub cache: Arc<SemanticCache>,
    pub key: IndexKey,
    pub text: String,
    pub vector: Arc<Vec<f32>>,
}

/// Where a request's fresh answer goes.
pub struct StorePlan {
    /// The exact-cache key and TTL, unless the answer may not be stored.
    exact: Option<(CacheKey, Duration)>,
    semantic: Option<SemanticPending>,
    coalescing: Coalescing,
}

impl StorePlan {
    /// Takes what the phases gathered out of `ctx`.
    pub fn take(ctx: &mut RequestCtx) -> StorePlan {
        StorePlan {
            exact: ctx.cache_key.filter(|_| !ctx.no_store),
            semantic: ctx.semantic.take(),
            coalescing: std::mem::take(&mut ctx.coalescing),
        }
    }

    /// Whether a successful answer will be stored (streams then record it).
    pub fn wants_answer(&self) -> bool {
        self.exact.is_some()
    }

    /// Stores `answer`, or, when `answer` is `None` (the call failed or the
    /// answer may not be kept), lets coalesced followers go make their own
    /// calls.
    pub fn finish(self, gw: &Arc<Gateway>, answer: Option<Arc<Answer>>) {
        let (Some((key, ttl)), Some(answer)) = (self.exact, answer) else {
            return; // dropping the coalescing roles releases the followers
        };
        store_semantic(self.semantic, &answer, ttl);
        let Coalescing { leader, lease, .. } = self.coalescing;
        if let Some(leader) = leader {
            leader.complete(answer.clone());
        }
        let gw = gw.clone();
        tokio::spawn(async move {
            match lease {
                // Other nodes' followers find the answer in the shared tier
                // as soon as the lock goes.
                Some(lease) => lease.store(&gw.cache, key, answer, ttl).await,
                None => gw.cache.put(key, answer, ttl).await,
            }
        });
    }
}

/// Stores a fresh answer under the prompt a semantic miss embedded.
fn store_semantic(pending: Option<SemanticPending>, answer: &Arc<Answer>, ttl: Duration) {
    let Some(SemanticPending {
        cache,
        key,
        text,
        vector,
    }) = pending
    else {
        return;
    };
    let answer = answer.clone();
    tokio::spawn(async move {
        let index = cache.index();
        match index
            .insert(&key, vector.as_ref().clone(), &text, &answer, ttl)
            .await
        {
            Ok(_) => cache.record_index(),
            Err(e) => tracing::warn!(error = %e, "semantic store failed"),
        }
    });
}
