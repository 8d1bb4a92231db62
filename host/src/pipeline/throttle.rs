//! Throttle phase: the plugin names the buckets, the host charges them all or
//! none in one state call; after the answer, settle reconciles token
//! estimates with actual usage.

use std::time::Duration;

use super::RequestCtx;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::plugin::Plugin;
use crate::policy::{Admission, ChargeResult, PolicyRequest, Slot, Unit, Usage};

/// The state namespace throttle buckets live in: the throttle plugin's own,
/// so buckets it charges through the `limits` import are the same ones.
pub fn namespace(plugin: &Plugin) -> String {
    format!("plugin:{}", plugin.slot())
}

/// Runs `throttle.admit` and charges its buckets. A refusal is a 429.
pub async fn admit(gw: &Gateway, ctx: &mut RequestCtx) -> Result<(), GatewayError> {
    let plugin = ctx.plugins[Slot::Throttle].clone();
    let admission = match plugin.throttle_admit(&ctx.policy).await {
        Ok(a) => a,
        Err(e) => return super::plugin_failed(gw, Slot::Throttle, &e),
    };
    let mut buckets = match admission {
        Admission::Charge { buckets } => buckets,
        Admission::Reject {
            status,
            message,
            retry_after_ms,
        } => {
            gw.metrics.throttle_reject(&ctx.caller.tenant);
            return Err(GatewayError::rejected(
                status,
                message,
                retry_after_ms.map(Duration::from_millis),
            ));
        }
    };
    if let Some(key) = &ctx.caller.key {
        buckets.extend(crate::keys::limits::admit(key, &ctx.policy)?);
    }
    if buckets.is_empty() {
        return Ok(());
    }
    let result = gw
        .state
        .charge(&namespace(&plugin), &buckets)
        .await
        .map_err(|e| GatewayError::unavailable(format!("rate limits could not be checked: {e}")))?;
    let admitted = result.admitted;
    let retry_after = Duration::from_millis(result.retry_after_ms);
    ctx.charged = admitted;
    let message = (!admitted).then(|| refusal_message(&result));
    ctx.limits = Some(result);
    if let Some(message) = message {
        gw.metrics.throttle_reject(&ctx.caller.tenant);
        return Err(GatewayError::rate_limited(message, retry_after));
    }
    Ok(())
}

fn refusal_message(result: &ChargeResult) -> String {
    let exhausted = result
        .buckets
        .iter()
        .filter(|b| b.remaining == 0)
        .map(|b| match b.unit {
            Unit::Requests => format!("requests (limit {})", b.limit),
            Unit::Tokens => format!("tokens (limit {})", b.limit),
        })
        .collect::<Vec<_>>();
    let what = if exhausted.is_empty() {
        "your limits".to_string()
    } else {
        exhausted.join(", ")
    };
    format!(
        "Rate limit reached for {what}. Please try again in {:.1}s.",
        result.retry_after_ms as f64 / 1000.0
    )
}

/// Reports actual usage to the plugin and applies its corrections. Runs
/// after the response, off the request path.
pub async fn settle(
    gw: &Gateway,
    plugin: &Plugin,
    request: &PolicyRequest,
    usage: Usage,
    tenant: &str,
) {
    if !usage.cached {
        gw.metrics.tokens(
            tenant,
            u64::from(usage.prompt_tokens),
            u64::from(usage.completion_tokens),
        );
    }
    // A failed settle was logged and counted by the runtime.
    let mut corrections: Vec<crate::policy::Bucket> = plugin
        .throttle_settle(request, &usage)
        .await
        .unwrap_or_default();
    // A run-time key's own token bucket (see `keys::limits`).
    if let Some(key) = request.key_id.as_deref().and_then(|id| gw.keys.local(id))
        && let Some(b) = crate::keys::limits::settle(&key, request, &usage)
    {
        corrections.push(b);
    }
    if corrections.is_empty() {
        return;
    }
    if let Err(e) = gw.state.settle(&namespace(plugin), &corrections).await {
        tracing::warn!(error = %e, "could not settle token usage");
    }
}
