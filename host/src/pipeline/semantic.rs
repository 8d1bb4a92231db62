//! Semantic-cache phase: after an exact miss, `prepare` → embed → search →
//! `accept`, answering a near-duplicate prompt from the shared index; after
//! a fresh upstream answer, storing it for the next one.
//!
//! The semantic cache only ever helps: an embedder error or a state error
//! skips it (logged) and the request goes upstream; a plugin error does the
//! same unless the slot is configured fail-closed.
//!
//! A request that contradicts an earlier semantic hit (the client says it
//! was wrong, or re-asks; see [`crate::semantic::learn`]) goes upstream and
//! raises the score that hit's entry requires.

use std::sync::Arc;

use axum::response::Response;
use http::HeaderValue;

use super::store::SemanticPending;
use super::{RequestCtx, respond};
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::policy::{SemanticCandidate, Slot};
use crate::semantic::learn::Asked;
use crate::semantic::{IndexKey, NEAR_MISS_BAND, Served};
use crate::telemetry::CacheOutcome;

/// Answers from the semantic index when the plugin accepts the nearest
/// cached prompt; otherwise leaves what storing needs in `ctx.semantic`.
/// A plugin failure follows the slot's failure policy: fail-open skips the
/// semantic cache, fail-closed answers 503.
pub(super) async fn lookup(
    gw: &Arc<Gateway>,
    ctx: &mut RequestCtx,
) -> Result<Option<Response>, GatewayError> {
    // Only answers the cache-key plugin lets the exact cache keep are shared.
    if ctx.cache_key.is_none() || (ctx.no_cache && ctx.no_store) {
        return Ok(None);
    }
    let Some(cache) = gw.semantic_cache().await else {
        return Ok(None);
    };
    let plugin = ctx.plugins[Slot::Semantic].clone();
    let probe = match plugin.semantic_prepare(&ctx.policy).await {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(None),
        Err(e) => return super::plugin_failed(gw, Slot::Semantic, &e).map(|()| None),
    };
    let vector = match cache.embed(&probe.text).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(id = %ctx.id, error = %e, "embedding failed; skipping the semantic cache");
            return Ok(None);
        }
    };
    let key = IndexKey::new(&ctx.caller.tenant, &probe.namespace);
    let asked = ctx.cache_key.as_ref().map(|(exact, _)| Asked {
        exact: *exact,
        streaming: ctx.policy.streaming,
    });
    if !ctx.no_store {
        ctx.semantic = Some(SemanticPending {
            cache: cache.clone(),
            key: key.clone(),
            text: probe.text.clone(),
            vector: vector.clone(),
        });
    }
    // A re-ask of a request this node answered from the semantic cache
    // contradicts that answer.
    if let Some(asked) = asked
        && let Some(served) = cache.recent().reasked(&key, asked)
    {
        cache.contradict(&key, &served, "reask").await;
        return Ok(None);
    }
    if ctx.no_cache && !ctx.semantic_wrong {
        return Ok(None);
    }
    let hit = match cache.index().search(&key, &vector).await {
        Ok(Some(hit)) => hit,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::warn!(id = %ctx.id, error = %e, "semantic index unavailable");
            return Ok(None);
        }
    };
    cache.record_index();
    if hit.score < probe.threshold {
        if hit.score >= probe.threshold - NEAR_MISS_BAND
            && let Some(m) = cache.metrics()
        {
            m.semantic_near_miss();
        }
        return Ok(None);
    }
    let candidate = SemanticCandidate {
        score: hit.score,
        prompt: hit.prompt.clone(),
        age_seconds: age_seconds(hit.stored_at_ms),
    };
    match plugin.semantic_accept(&ctx.policy, &candidate).await {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(e) => return super::plugin_failed(gw, Slot::Semantic, &e).map(|()| None),
    }
    // The client says this answer was wrong: the entry learns, and the
    // request goes upstream.
    if ctx.semantic_wrong {
        cache.contradict(&key, &hit, "feedback").await;
        return Ok(None);
    }
    let answer = match cache.index().answer_for(&key, &hit).await {
        Ok(Served::Answer(a)) if a.route == ctx.route => a,
        Ok(Served::Distrusted { required }) => {
            tracing::debug!(id = %ctx.id, score = hit.score, required, "semantic entry distrusted");
            if let Some(m) = cache.metrics() {
                m.semantic_distrusted();
            }
            return Ok(None);
        }
        Ok(_) => return Ok(None),
        Err(e) => {
            tracing::warn!(id = %ctx.id, error = %e, "semantic answer unavailable");
            return Ok(None);
        }
    };
    if let Some(asked) = asked {
        cache.recent().served(&key, asked, &hit);
    }
    // A hit is not stored again.
    ctx.semantic = None;
    let mut response = respond::replay(gw, ctx, Arc::new(answer), CacheOutcome::SemanticHit);
    if let Ok(v) = HeaderValue::from_str(&format!("{:.4}", hit.score)) {
        response.headers_mut().insert("x-sluice-semantic-score", v);
    }
    Ok(Some(response))
}

fn age_seconds(stored_at_ms: u64) -> u32 {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    u32::try_from(now_ms.saturating_sub(stored_at_ms) / 1000).unwrap_or(u32::MAX)
}
