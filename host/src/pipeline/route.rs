//! The route slot, inside the upstream phase: the (provider, model)
//! candidates the config allows for a request, each with its provider's
//! health and the model's price, ordered (and perhaps pruned) by the route
//! plugin. Only with `[plugins.route]` configured; without it the upstream
//! phase picks by `[routing] balance` and `[fallbacks]` as before.
//!
//! The plugin can only order the candidates: the runtime refuses an answer
//! naming anything else ([`crate::plugin::Plugin::route_order`]). A failed
//! call follows the slot's failure policy: fail-open goes on in the host's
//! own order, fail-closed answers 503.

use std::collections::VecDeque;

use super::RequestCtx;
use super::call::provider_speaks;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::policy::{Route, RouteCandidate, RoutePrice, Slot};

/// Most candidates shown to the plugin: a model's deployments and its
/// fallbacks' are a handful; a runaway config does not make every request
/// carry hundreds.
pub const MAX_CANDIDATES: usize = 64;

/// Every (provider, model) the config allows for `model` on `route`: the
/// providers serving it in config order, then those serving each of its
/// `[fallbacks]` models in order; each with its provider's health now and
/// the model's price (None when unpriced).
pub fn candidates(gw: &Gateway, route: Route, model: &str) -> Vec<RouteCandidate> {
    let mut out: Vec<RouteCandidate> = Vec::new();
    let models =
        std::iter::once(model).chain(gw.config.fallbacks(model).iter().map(String::as_str));
    for model in models {
        for p in &gw.config.providers {
            if out.len() == MAX_CANDIDATES {
                return out;
            }
            if !p.serves(model)
                || !provider_speaks(p.kind, route)
                || out.iter().any(|c| c.provider == p.name && c.model == model)
            {
                continue;
            }
            let Some(health) = gw.upstreams.route_health(&p.name) else {
                continue;
            };
            // Pico-USD per token is USD per million tokens times 10^6.
            let price = gw
                .spend
                .prices
                .price(&p.name, model)
                .map(|price| RoutePrice {
                    input_per_mtok: price.input as f64 / 1e6,
                    output_per_mtok: price.output as f64 / 1e6,
                });
            out.push(RouteCandidate {
                provider: p.name.clone(),
                model: model.to_owned(),
                kind: p.kind.as_str().to_owned(),
                health,
                price,
            });
        }
    }
    out
}

/// The (provider, model) pairs to try, in the route plugin's order; None
/// when no route plugin is configured, or it failed and its slot is
/// fail-open (the caller then goes by its own order). An answer that keeps
/// no candidate is a 503 naming the model.
pub async fn order(
    gw: &Gateway,
    ctx: &RequestCtx,
) -> Result<Option<VecDeque<(String, String)>>, GatewayError> {
    if !gw.config.plugins.routes() {
        return Ok(None);
    }
    let candidates = candidates(gw, ctx.route, &ctx.model);
    if candidates.is_empty() {
        return Ok(None);
    }
    match ctx.plugins[Slot::Route]
        .route_order(&ctx.policy, &candidates)
        .await
    {
        Ok(choices) if choices.is_empty() => Err(GatewayError::unavailable(format!(
            "the route policy kept none of the {} candidates for model `{}`",
            candidates.len(),
            ctx.model
        ))),
        Ok(choices) => Ok(Some(
            choices.into_iter().map(|c| (c.provider, c.model)).collect(),
        )),
        Err(e) => {
            super::plugin_failed(gw, Slot::Route, &e)?;
            Ok(None)
        }
    }
}
