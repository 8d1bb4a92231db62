//! One dashboard snapshot: every metric family of this node (typed, by
//! name) and what the metrics do not hold: breaker and key state per
//! provider, the version serving each slot and its install history, the
//! release book, and the state backend's health.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::gateway::Gateway;
use crate::policy::Slot;
use crate::versions::{Origin, releases, unix_ms};

/// How long a snapshot waits for the release book (a Redis read) before
/// showing it as unavailable; the rest of the snapshot never waits.
const BOOK_TIMEOUT: Duration = Duration::from_millis(300);

/// The snapshot as JSON (the shape `dashboard.js` reads).
pub async fn build(gw: &Gateway) -> Value {
    let metrics = super::openmetrics::parse(&crate::scrape::encode(gw));
    let health = gw.state.health();
    let book = match tokio::time::timeout(BOOK_TIMEOUT, releases::read_book(&gw.state)).await {
        Ok(Ok(book)) => json!({"book": book, "node": gw.plugins.book().view()}),
        Ok(Err(e)) => json!({"error": e.to_string(), "node": gw.plugins.book().view()}),
        Err(_) => {
            json!({"error": "the state did not answer in time", "node": gw.plugins.book().view()})
        }
    };
    json!({
        "at_ms": unix_ms(SystemTime::now()),
        "version": env!("CARGO_PKG_VERSION"),
        "metrics": metrics,
        "providers": gw.upstreams.health(),
        "plugins": plugins(gw),
        "history": gw.plugins.history(),
        "releases": book,
        "state": {
            "backend": health.backend,
            "shared": gw.state.is_shared(),
            "on_error": format!("{:?}", health.on_error),
            "degraded": health.degraded,
            "fallbacks": health.fallbacks,
            "errors": health.errors,
            "last_error": health.last_error,
        },
    })
}

/// The version serving each slot: hash, where it came from, call stats.
fn plugins(gw: &Gateway) -> Vec<Value> {
    Slot::ALL
        .into_iter()
        .map(|kind| {
            let slot = gw.plugins.slot(kind);
            let plugin = slot.current();
            let info = plugin.info();
            let stats = plugin.stats().snapshot();
            let origin = gw.plugins.origin(kind);
            let release = match &origin {
                Origin::Release(id) => Some(id.clone()),
                _ => None,
            };
            json!({
                "slot": kind.name(),
                "hash": info.hash,
                "source": origin,
                "release": release,
                "failure": slot.failure(),
                "loaded_at_ms": unix_ms(plugin.loaded_at()),
                "calls": stats.calls,
                "failures": stats.failures,
                "p50_us": stats.p50_us,
                "p99_us": stats.p99_us,
            })
        })
        .collect()
}
