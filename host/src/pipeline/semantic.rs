//! Semantic-cache phase: after an exact miss, `prepare` → embed → search →
//! `accept`, answering a near-duplicate prompt from the shared index; after
//! a fresh upstream answer, storing it for the next one.
//!
//! The semantic cache only ever helps: a plugin error, an embedder error or
//! a state error skips it (logged) and the request goes upstream.

use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use http::HeaderValue;

use super::{RequestCtx, respond};
use crate::cache::Answer;
use crate::gateway::Gateway;
use crate::policy::SemanticCandidate;
use crate::semantic::{IndexKey, NEAR_MISS_BAND, SemanticCache};
use crate::telemetry::CacheOutcome;

/// What storing the fresh answer of a semantic miss needs.
pub struct Pending {
    cache: Arc<SemanticCache>,
    key: IndexKey,
    text: String,
    vector: Arc<Vec<f32>>,
}

/// Answers from the semantic index when the plugin accepts the nearest
/// cached prompt; otherwise leaves what storing needs in `ctx.semantic`.
pub(super) async fn lookup(gw: &Arc<Gateway>, ctx: &mut RequestCtx) -> Option<Response> {
    // Only answers the cache-key plugin lets the exact cache keep are shared.
    ctx.cache_key?;
    if ctx.no_cache && ctx.no_store {
        return None;
    }
    let cache = SemanticCache::for_gateway(gw).await?;
    let plugin = gw.plugins.semantic.current();
    let probe = match plugin.semantic_prepare(&ctx.policy).await {
        Ok(Some(p)) => p,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(id = %ctx.id, error = %e, "semantic prepare failed; skipping the semantic cache");
            return None;
        }
    };
    let vector = match cache.embed(&probe.text).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(id = %ctx.id, error = %e, "embedding failed; skipping the semantic cache");
            return None;
        }
    };
    let key = IndexKey::new(&ctx.caller.tenant, &probe.namespace);
    if !ctx.no_store {
        ctx.semantic = Some(Pending {
            cache: cache.clone(),
            key: key.clone(),
            text: probe.text.clone(),
            vector: vector.clone(),
        });
    }
    if ctx.no_cache {
        return None;
    }
    let hit = match cache.index().search(&key, &vector).await {
        Ok(Some(hit)) => hit,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(id = %ctx.id, error = %e, "semantic index unavailable");
            return None;
        }
    };
    if let Some(m) = cache.metrics() {
        m.semantic_index_entries(key.label(), cache.index().len(&key).await);
    }
    if hit.score < probe.threshold {
        if hit.score >= probe.threshold - NEAR_MISS_BAND
            && let Some(m) = cache.metrics()
        {
            m.semantic_near_miss();
        }
        return None;
    }
    let candidate = SemanticCandidate {
        score: hit.score,
        prompt: hit.prompt.clone(),
        age_seconds: age_seconds(hit.stored_at_ms),
    };
    match plugin.semantic_accept(&ctx.policy, &candidate).await {
        Ok(true) => {}
        Ok(false) => return None,
        Err(e) => {
            tracing::warn!(id = %ctx.id, error = %e, "semantic accept failed; skipping the semantic cache");
            return None;
        }
    }
    let answer = match cache.index().answer(&key, hit.seq).await {
        Ok(Some(a)) if a.route == ctx.route => a,
        Ok(_) => return None,
        Err(e) => {
            tracing::warn!(id = %ctx.id, error = %e, "semantic answer unavailable");
            return None;
        }
    };
    // A hit is not stored again.
    ctx.semantic = None;
    let mut response = respond::replay(gw, ctx, Arc::new(answer), CacheOutcome::SemanticHit);
    if let Ok(v) = HeaderValue::from_str(&format!("{:.4}", hit.score)) {
        response.headers_mut().insert("x-sluice-semantic-score", v);
    }
    Some(response)
}

fn age_seconds(stored_at_ms: u64) -> u32 {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    u32::try_from(now_ms.saturating_sub(stored_at_ms) / 1000).unwrap_or(u32::MAX)
}

/// Stores a fresh answer under the prompt a semantic miss embedded; runs in
/// the background.
pub(super) fn store(pending: Option<Pending>, answer: &Arc<Answer>, ttl: Duration) {
    let Some(pending) = pending else {
        return;
    };
    let answer = answer.clone();
    tokio::spawn(async move {
        let Pending {
            cache,
            key,
            text,
            vector,
        } = pending;
        let index = cache.index();
        match index
            .insert(&key, vector.as_ref().clone(), &text, &answer, ttl)
            .await
        {
            Ok(_) => {
                if let Some(m) = cache.metrics() {
                    m.semantic_index_entries(key.label(), index.len(&key).await);
                }
            }
            Err(e) => tracing::warn!(error = %e, "semantic store failed"),
        }
    });
}
