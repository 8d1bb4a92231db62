//! Exact-cache phase: the cache-key plugin decides bypass or key; the host
//! scopes the key by tenant and looks it up.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use super::RequestCtx;
use crate::cache::coalesce::Lookup;
use crate::cache::{Answer, CacheKey};
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::policy::{CacheDecision, Slot};
use crate::telemetry::CacheOutcome;

/// The client's `cache-control` directives that sluice honours.
struct Directives {
    no_cache: bool,
    no_store: bool,
    /// `x-sluice-semantic-feedback: wrong`: the semantic answer this
    /// request got before was wrong.
    semantic_wrong: bool,
}

/// The header a client sends, repeating a request, to say the semantic
/// answer it got was wrong (value `wrong`).
pub const SEMANTIC_FEEDBACK_HEADER: &str = "x-sluice-semantic-feedback";

fn directives(headers: &HeaderMap) -> Directives {
    let mut d = Directives {
        no_cache: false,
        no_store: false,
        semantic_wrong: headers
            .get(SEMANTIC_FEEDBACK_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("wrong")),
    };
    for value in headers.get_all(http::header::CACHE_CONTROL) {
        for token in value.to_str().unwrap_or("").split(',') {
            match token.trim().to_ascii_lowercase().as_str() {
                "no-cache" => d.no_cache = true,
                "no-store" => d.no_store = true,
                _ => {}
            }
        }
    }
    d
}

/// Runs `cache-key.derive` and records the scoped key, or bypass.
pub async fn derive_key(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    headers: &HeaderMap,
) -> Result<(), GatewayError> {
    ctx.cache = CacheOutcome::Bypass;
    if !gw.config.cache.enabled {
        return Ok(());
    }
    let d = directives(headers);
    ctx.no_store = d.no_store;
    let decision = match ctx.plugins[Slot::CacheKey]
        .derive_cache_key(&ctx.policy)
        .await
    {
        Ok(d) => d,
        Err(e) => return super::plugin_failed(gw, Slot::CacheKey, &e),
    };
    let CacheDecision::Cache {
        key,
        ttl_seconds,
        scope,
    } = decision
    else {
        return Ok(());
    };
    if ttl_seconds == 0 {
        return Ok(());
    }
    let key = CacheKey::new(&ctx.caller.tenant, scope, ctx.route, &key);
    ctx.cache_key = Some((key, Duration::from_secs(u64::from(ttl_seconds))));
    ctx.cache = CacheOutcome::Miss;
    // no-cache skips the lookup but still stores the fresh answer.
    ctx.no_cache = d.no_cache;
    ctx.semantic_wrong = d.semantic_wrong;
    Ok(())
}

/// Looks the request up in the exact cache, unless the client said
/// no-cache: the node's own tier (no state call), then the shared tier. With
/// coalescing across nodes, the shared lookup also takes the lock to fill
/// the entry when nobody holds it, in the same round trip; what it found is
/// left in `ctx.coalescing` for the coalescing phase.
pub async fn lookup(gw: &Gateway, ctx: &mut RequestCtx) -> Option<Arc<Answer>> {
    let (key, _) = ctx.cache_key?;
    if ctx.no_cache {
        return None;
    }
    if let Some(answer) = gw.cache.get_local(&key) {
        return Some(answer);
    }
    let Some(shared) = &gw.shared_coalescer else {
        let (answer, _tier) = gw.cache.get(&key).await?;
        return Some(answer);
    };
    match shared.lookup(&gw.cache, &key).await {
        Lookup::Hit(answer) => Some(answer),
        Lookup::Lead(lease) => {
            ctx.coalescing.lease = Some(lease);
            None
        }
        Lookup::Held => {
            ctx.coalescing.held_elsewhere = true;
            None
        }
        Lookup::Unavailable => None,
    }
}
