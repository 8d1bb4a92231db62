//! `/dashboard`: a live page on the admin surface, served by sluice itself
//! with its assets compiled into the binary (no CDN; works offline).
//!
//! - `GET /dashboard` (and its `dashboard.js`, `dashboard.css`): the page.
//!   It holds no data: it asks for the admin token in a form and keeps it
//!   in the tab's `sessionStorage`, never in a URL.
//! - `GET /admin/dashboard/snapshot`: one snapshot ([`snapshot::build`]),
//!   behind the admin token like the rest of `/admin`.
//! - `GET /admin/dashboard/events`: server-sent events, one `snapshot`
//!   event a second, behind the admin token. The page reads it with
//!   `fetch()` (which can send the `Authorization` header, unlike
//!   `EventSource`). A stream ends after [`MAX_STREAM`] and the page
//!   reconnects, so a forgotten tab never holds a connection (or a graceful
//!   shutdown) for long.
//!
//! The routes exist only where the admin API does (`server.admin_token`).

mod openmetrics;
pub mod snapshot;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures::StreamExt as _;
use http::{HeaderValue, header};

use crate::gateway::Gateway;

/// Time between two snapshots on the event stream.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// How long one event stream lasts before the page reconnects.
pub const MAX_STREAM: Duration = Duration::from_secs(300);

const INDEX_HTML: &str = include_str!("assets/index.html");
const DASHBOARD_JS: &str = include_str!("assets/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("assets/dashboard.css");

/// Only this origin's scripts, styles and connections; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// The page and its assets (no token: they hold no data).
pub fn pages() -> Router<Arc<Gateway>> {
    Router::new()
        .route(
            "/dashboard",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/dashboard/dashboard.js",
            get(|| async { asset(DASHBOARD_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/dashboard/dashboard.css",
            get(|| async { asset(DASHBOARD_CSS, "text/css; charset=utf-8") }),
        )
}

/// The data routes; the caller puts them behind the admin token.
pub fn data() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/admin/dashboard/snapshot", get(snapshot_json))
        .route("/admin/dashboard/events", get(events))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

async fn snapshot_json(State(gw): State<Arc<Gateway>>) -> Response {
    let mut resp = axum::Json(snapshot::build(&gw).await).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn events(State(gw): State<Arc<Gateway>>) -> Response {
    let ticks = (MAX_STREAM.as_millis() / INTERVAL.as_millis()) as usize;
    let mut interval = tokio::time::interval(INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let stream = tokio_stream::wrappers::IntervalStream::new(interval)
        .take(ticks)
        .then(move |_| {
            let gw = gw.clone();
            async move {
                let snapshot = snapshot::build(&gw).await;
                Ok::<_, std::convert::Infallible>(Bytes::from(format!(
                    "event: snapshot\ndata: {snapshot}\n\n"
                )))
            }
        });
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
