//! The admin API under `/admin`, behind `server.admin_token` (a bearer
//! token). Without a token configured the routes do not exist (404); a
//! missing or wrong token gets 401. It is served on `server.admin_listen`,
//! or on `server.listen` when `server.admin_on_listen` opts in.
//!
//! - `GET  /admin/plugins`: every slot (kinds, hash, source, loaded at,
//!   calls, failures, latency percentiles), the last refused versions with
//!   their reasons, and the release book.
//! - `POST /admin/plugins/{slot}`: body = a component. It is loaded here
//!   (compile, link, `init`, smoke test); if that fails, 422 with the reason
//!   and nothing changes. Otherwise it is published as the slot's release
//!   (to every node when the state is Redis) and installed here. Header
//!   `x-sluice-plugin-config`: the plugin config (JSON) to run it with;
//!   without it each node uses its configured one. When the release book
//!   this node follows is lost (Redis lost its data), 409 and nothing is
//!   written, unless `?new_book=true` starts a new book.
//! - `POST /admin/plugins/{slot}/rollback`: the slot's previous release
//!   serves everywhere (past the first release: the configured plugin).
//! - `GET  /admin/releases`: the release book (`book`, null when the state
//!   holds none), this node's view of it (`node`: `status` ok, missing or
//!   regressed, the lineage and version it follows, what to do) and what
//!   each slot serves (`serving`: source and hash).
//! - `GET  /admin/spend`: spend records, grouped (see
//!   [`crate::spend::admin`]).
//! - `/admin/keys…`: virtual keys (routes in `admin/keys.rs`, the keys
//!   themselves in [`crate::keys`]).
//! - `/dashboard` and `/admin/dashboard/*`: the live dashboard
//!   ([`crate::dashboard`]); the page itself asks for the token.

mod keys;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::gateway::Gateway;
use crate::policy::Slot;
use crate::versions::releases::{self, ReleaseError};
use crate::versions::{Origin, unix_ms};

/// Largest component the admin API accepts.
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;
/// The header carrying an uploaded plugin's config (JSON).
pub const CONFIG_HEADER: &str = "x-sluice-plugin-config";

/// The `/admin` routes, or `None` when no admin token is configured.
pub fn router(gw: Arc<Gateway>) -> Option<Router> {
    gw.config.server.admin_token.as_ref()?;
    Some(
        Router::new()
            .route("/admin/plugins", get(list))
            .route("/admin/plugins/{slot}", post(upload))
            .route("/admin/plugins/{slot}/rollback", post(rollback))
            .route("/admin/releases", get(book))
            .route("/admin/spend", get(spend))
            .merge(keys::routes())
            .merge(crate::job_runner::routes::admin())
            .merge(crate::dashboard::data())
            .route_layer(middleware::from_fn_with_state(gw.clone(), authorize))
            .merge(crate::dashboard::pages())
            .with_state(gw),
    )
}

/// Serves only the admin API on `listener` until `shutdown` resolves, with
/// the API listener's limits but fewer connections
/// ([`crate::listener::Limits::admin`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    gw: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = crate::listener::Limits::admin(&gw.config.server);
    let stats = gw.connections.admin.clone();
    let mut app = router(gw.clone()).unwrap_or_default();
    if gw.config.server.metrics_on_admin_listen {
        app = app.merge(crate::scrape::router(gw));
    }
    let app = app.fallback(not_found);
    crate::listener::serve(listener, app, limits, stats, shutdown).await
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not found")
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

/// Admits a request carrying `Authorization: Bearer <admin_token>`.
async fn authorize(State(gw): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let Some(token) = gw.config.server.admin_token.as_ref() else {
        return not_found().await;
    };
    let ok = token.is_bearer_of(request.headers());
    if !ok {
        let mut resp = error(StatusCode::UNAUTHORIZED, "missing or wrong admin token");
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    next.run(request).await
}

async fn spend(
    State(gw): State<Arc<Gateway>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    crate::spend::admin::report(gw.spend.state(), &q).await
}

fn unknown_slot(slot: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no plugin slot {slot:?}: throttle, cache_key, semantic, retry, route"),
    )
}

fn fleet(gw: &Gateway) -> bool {
    gw.state.is_shared()
}

async fn list(State(gw): State<Arc<Gateway>>) -> Response {
    let plugins: Vec<Value> = gw
        .config
        .plugins
        .serving()
        .map(|kind| {
            let slot = gw.plugins.slot(kind);
            let plugin = slot.current();
            let info = plugin.info();
            let stats = plugin.stats().snapshot();
            json!({
                "slot": kind.name(),
                "kinds": info.kinds,
                "hash": info.hash,
                "size_bytes": info.size_bytes,
                "source": gw.plugins.origin(kind),
                "failure": slot.failure(),
                "loaded_at_ms": unix_ms(plugin.loaded_at()),
                "init": plugin.init(),
                "calls": stats.calls,
                "failures": stats.failures,
                "p50_us": stats.p50_us,
                "p99_us": stats.p99_us,
            })
        })
        .collect();
    let releases = releases_view(&gw)
        .await
        .unwrap_or_else(|e| json!({"error": e.to_string()}));
    axum::Json(json!({
        "plugins": plugins,
        "refused": gw.plugins.refused(),
        "releases": releases,
        "fleet": fleet(&gw),
    }))
    .into_response()
}

/// The release book and this node's view of it.
async fn releases_view(gw: &Gateway) -> Result<Value, ReleaseError> {
    let book = releases::read_book(&gw.state).await?;
    Ok(json!({"book": book, "node": gw.plugins.book().view()}))
}

/// [`releases_view`] and what each slot serves.
async fn book(State(gw): State<Arc<Gateway>>) -> Response {
    let mut view = match releases_view(&gw).await {
        Ok(v) => v,
        Err(e) => return release_error(e),
    };
    view["serving"] = Slot::ALL
        .into_iter()
        .map(|kind| {
            json!({
                "slot": kind.name(),
                "source": gw.plugins.origin(kind),
                "hash": gw.plugins.slot(kind).current().info().hash,
            })
        })
        .collect();
    axum::Json(view).into_response()
}

fn release_error(e: ReleaseError) -> Response {
    let status = match e {
        ReleaseError::NothingToRollBack(_) | ReleaseError::BookLost(_) => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}

/// `POST /admin/plugins/{slot}` query parameters.
#[derive(Debug, Default, serde::Deserialize)]
struct UploadParams {
    /// Start a new release book if the one this node follows is lost.
    #[serde(default)]
    new_book: bool,
}

async fn upload(
    State(gw): State<Arc<Gateway>>,
    Path(slot): Path<String>,
    Query(params): Query<UploadParams>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(kind) = Slot::parse(&slot) else {
        return unknown_slot(&slot);
    };
    let body = match crate::listener::read_body(body, MAX_COMPONENT_BYTES).await {
        Ok(body) => body,
        Err(e) => return error(e.status(), e.to_string()),
    };
    if body.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "the request body must be a WebAssembly component",
        );
    }
    let config = match headers.get(CONFIG_HEADER) {
        None => None,
        Some(v) => match v
            .to_str()
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
        {
            Some(c @ Value::Object(_)) => Some(c),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("{CONFIG_HEADER} must be a JSON object"),
                );
            }
        },
    };
    let guard = gw.plugins.lock(kind).await;
    let plugin = match gw
        .plugins
        .prepare(&guard, &body, config.clone(), &Origin::Upload)
        .await
    {
        Ok(p) => p,
        Err(refusal) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(json!({"error": refusal.reason, "refused": refusal})),
            )
                .into_response();
        }
    };
    let hash = plugin.info().hash.clone();
    let published = releases::publish_and_commit(
        &gw.plugins,
        &guard,
        kind,
        &body,
        config,
        plugin,
        params.new_book,
    );
    match published.await {
        Ok(release) => axum::Json(json!({
            "slot": kind.name(),
            "hash": hash,
            "release": release,
            "fleet": fleet(&gw),
        }))
        .into_response(),
        Err(e) => release_error(e),
    }
}

async fn rollback(State(gw): State<Arc<Gateway>>, Path(slot): Path<String>) -> Response {
    let Some(kind) = Slot::parse(&slot) else {
        return unknown_slot(&slot);
    };
    let guard = gw.plugins.lock(kind).await;
    // Applied here now rather than on the next poll.
    let (release, applied) = match releases::rollback_and_apply(&gw.plugins, &guard, kind).await {
        Ok(r) => r,
        Err(e) => return release_error(e),
    };
    let serving = gw.plugins.slot(kind).current();
    let mut body = json!({
        "slot": kind.name(),
        "release": release,
        "hash": serving.info().hash,
        "source": gw.plugins.origin(kind),
        "fleet": fleet(&gw),
    });
    if let Err(refusal) = applied {
        body["refused_here"] = serde_json::to_value(refusal).unwrap_or(Value::Null);
    }
    axum::Json(body).into_response()
}
