//! The HTTP surface: routes, and [`run`] which serves a listener until
//! shutdown, letting in-flight requests finish.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode, header};
use serde_json::json;

use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::listener::{Limits, error_route};
use crate::pipeline;
use crate::policy::Route;

/// The gateway's router.
pub fn router(gw: Arc<Gateway>) -> Router {
    // `/admin` lives here only when the config opts in (`admin_on_listen`).
    let admin = if gw.config.server.admin_on_public_listener() {
        crate::admin::router(gw.clone())
    } else {
        None
    };
    let metrics = gw
        .config
        .server
        .metrics_on_public_listener()
        .then(|| crate::scrape::router(gw.clone()));
    let api = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/messages", post(messages))
        .route("/v1/models", get(models))
        .merge(if gw.jobs.is_some() {
            crate::job_runner::routes::api()
        } else {
            Router::new()
        })
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(require_one_host))
        .with_state(gw);
    [admin, metrics]
        .into_iter()
        .flatten()
        .fold(api, Router::merge)
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and
/// waits for in-flight requests (streams included) to finish. The
/// connections are bounded and timed as `[server]` says (see
/// [`crate::listener`]).
pub async fn run(
    listener: tokio::net::TcpListener,
    gw: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = Limits::api(&gw.config.server);
    let stats = gw.connections.api.clone();
    crate::listener::serve(listener, router(gw), limits, stats, shutdown).await
}

/// The client address: the socket peer, or the first `x-forwarded-for` hop
/// when the config trusts a proxy in front.
fn client_ip(gw: &Gateway, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    if gw.config.server.trust_forwarded_for
        && let Some(ip) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return ip;
    }
    peer.ip()
}

async fn api(
    gw: Arc<Gateway>,
    route: Route,
    peer: SocketAddr,
    request: http::Request<Body>,
) -> Response {
    let ip = client_ip(&gw, peer, request.headers());
    if let Some(jobs) = gw.jobs.clone()
        && crate::job_runner::routes::wants_async(request.headers())
    {
        return Box::pin(crate::job_runner::routes::accept(
            gw, jobs, route, ip, request,
        ))
        .await;
    }
    // Boxed: a request's future is large, and each level that holds it by
    // value copies it when it is built (measured: memcpy was 9% of a hit's
    // CPU before these boxes).
    Box::pin(pipeline::handle(gw, route, ip, request)).await
}

async fn chat(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: http::Request<Body>,
) -> Response {
    api(gw, Route::Chat, peer, request).await
}

async fn embeddings(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: http::Request<Body>,
) -> Response {
    api(gw, Route::Embeddings, peer, request).await
}

async fn messages(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: http::Request<Body>,
) -> Response {
    api(gw, Route::AnthropicMessages, peer, request).await
}

/// The models the config routes, OpenAI's list shape. Patterns without
/// wildcards are listed as models; wildcard patterns are listed as written.
async fn models(State(gw): State<Arc<Gateway>>) -> Response {
    let data: Vec<_> = gw
        .config
        .providers
        .iter()
        .flat_map(|p| {
            p.models
                .iter()
                .map(move |m| json!({"id": m, "object": "model", "created": 0, "owned_by": p.name}))
        })
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready unless the state backend is failing; degraded (200, fail-open:
/// still serving from the local fallback) or unavailable (503, fail-closed).
/// `providers` shows each circuit breaker; an open one does not make the
/// node unready: every node sees the same provider, and the node still
/// serves other providers, caches and fallbacks.
/// `releases` tells whether the release book this node follows is lost.
async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    let health = gw.state.health();
    gw.metrics.set_state_degraded(health.degraded);
    gw.metrics.sync_state_fallbacks(health.fallbacks);
    let status = match (health.degraded, health.on_error) {
        (false, _) => "ready",
        (true, crate::state::OnError::FailOpen) => "degraded",
        (true, crate::state::OnError::FailClosed) => "unavailable",
    };
    let code = if status == "unavailable" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let providers: serde_json::Map<String, serde_json::Value> = gw
        .upstreams
        .health()
        .into_iter()
        .map(|p| {
            let state = json!({
                "circuit": p.circuit,
                "probe_in_ms": p.probe_in_ms,
                "keys": p.keys,
                "keys_cooling": p.keys_cooling,
            });
            (p.name, state)
        })
        .collect();
    let body = json!({
        "status": status,
        "state": {
            "backend": health.backend,
            "degraded": health.degraded,
            "fallbacks": health.fallbacks,
            // A past outage's error, once recovered, would read as a
            // current fault next to "ready".
            "last_error": health.last_error.filter(|_| health.degraded),
        },
        "providers": providers,
        // A lost release book is reported, not a reason to stop serving.
        "releases": gw.plugins.book().view(),
    });
    (code, axum::Json(body)).into_response()
}

/// HTTP/1.1 requires exactly one `Host` header (RFC 9112 §3.2): a request
/// with none or several is refused before routing, as request smuggling
/// and cache-poisoning probes rely on servers that guess.
async fn require_one_host(request: http::Request<Body>, next: axum::middleware::Next) -> Response {
    let hosts = request.headers().get_all(header::HOST).iter().count();
    if request.version() == http::Version::HTTP_11 && hosts != 1 {
        let route = error_route(request.uri().path());
        let what = if hosts == 0 { "no" } else { "more than one" };
        return GatewayError::bad_request(format!(
            "An HTTP/1.1 request needs exactly one Host header; this one has {what}."
        ))
        .into_response(route);
    }
    next.run(request).await
}

async fn not_found(request: http::Request<Body>) -> Response {
    let route = error_route(request.uri().path());
    let mut e = GatewayError::bad_request(format!(
        "Unknown request URL: {} {}",
        request.method(),
        request.uri().path()
    ));
    e.status = StatusCode::NOT_FOUND;
    e.into_response(route)
}
