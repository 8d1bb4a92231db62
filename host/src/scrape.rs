//! `/metrics`: the Prometheus scrape endpoint, behind
//! `server.metrics_token` when one is set (tenant names and usage are in
//! it), on the public listener or, with `metrics_on_admin_listen`, on the
//! admin listener.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, header};

use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::policy::Route;

/// The `/metrics` route.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            gw.clone(),
            require_token,
        ))
        .with_state(gw)
}

/// Admits a scrape carrying `Authorization: Bearer <metrics_token>`, or any
/// scrape when no token is configured.
async fn require_token(
    State(gw): State<Arc<Gateway>>,
    request: http::Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    if let Some(token) = &gw.config.server.metrics_token
        && !token.is_bearer_of(request.headers())
    {
        let mut resp = GatewayError::unauthorized(
            "/metrics needs `Authorization: Bearer <server.metrics_token>`.",
        )
        .into_response(Route::Chat);
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    next.run(request).await
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    let mut resp = encode(&gw).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::telemetry::CONTENT_TYPE),
    );
    resp
}

/// Every series of this node in OpenMetrics text: the registry, after
/// copying in the state's counters, with the plugin reload counters (their
/// own registry) spliced in. `/metrics` serves it; the dashboard reads it
/// in-process ([`crate::dashboard`]).
pub fn encode(gw: &Gateway) -> String {
    let health = gw.state.health();
    gw.metrics.set_state_degraded(health.degraded);
    gw.metrics.sync_state_fallbacks(health.fallbacks);
    if let Some(edge) = gw.state.edge_stats() {
        gw.metrics.sync_edge(&edge);
    }
    if let Some(slices) = gw.state.budget_slice_stats() {
        gw.metrics.sync_budget_slices(&slices);
    }
    gw.metrics
        .keys()
        .key_cache(gw.keys.len(), gw.keys.unknown_cached());
    gw.metrics
        .sync_connections(&gw.connections.api.read(), &gw.connections.admin.read());
    let mut text = gw.metrics.encode();
    // The reload counters live in their own registry: splice them in
    // before the OpenMetrics terminator.
    if let Some(body) = text.strip_suffix("# EOF\n") {
        let mut spliced = body.to_string();
        if gw.plugins.encode_metrics(&mut spliced).is_ok() {
            spliced.push_str("# EOF\n");
            text = spliced;
        }
    }
    text
}
