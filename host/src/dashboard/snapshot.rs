//! One dashboard snapshot: every metric family of this node (typed, by
//! name) and what the metrics do not hold: breaker and key state per
//! provider, the version serving each slot and its install history, the
//! release book, the state backend's health, the configured tenant budgets
//! with their current spend, and the job queue's depth (both read from the
//! shared state, so they cover every node).

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::gateway::Gateway;
use crate::jobs::Priority;
use crate::spend::{BudgetLimits, BudgetSubject, usd_of_nano};
use crate::versions::{Origin, releases, unix_ms};

/// How long a snapshot waits for each state read (the release book, the
/// budgets, the job queue) before showing it as unavailable; the rest of
/// the snapshot never waits.
const STATE_TIMEOUT: Duration = Duration::from_millis(300);
/// Tenants whose budgets a snapshot reads (the first in the config).
pub const MAX_BUDGETS: usize = 50;

/// The snapshot as JSON (the shape `dashboard.js` reads).
pub async fn build(gw: &Gateway) -> Value {
    let metrics = super::openmetrics::parse(&crate::scrape::encode(gw));
    let health = gw.state.health();
    let (book, budgets, jobs) = tokio::join!(
        tokio::time::timeout(STATE_TIMEOUT, releases::read_book(&gw.state)),
        budgets(gw),
        jobs(gw),
    );
    let book = match book {
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
        "budgets": budgets,
        "jobs": jobs,
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
    gw.config
        .plugins
        .serving()
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

/// Each configured tenant budget (at most [`MAX_BUDGETS`]) with the spend
/// of its capped periods, in USD: `[{tenant, periods: [{period, period_id,
/// limit_usd, spent_usd, committed_usd}]}]`, or `{tenant, error}` when the
/// state did not answer.
async fn budgets(gw: &Gateway) -> Vec<Value> {
    let capped = gw
        .config
        .tenants
        .iter()
        .filter_map(|t| {
            Some((
                t.name.clone(),
                BudgetLimits::from_usd(t.budget_usd.as_ref()?),
            ))
        })
        .filter(|(_, limits)| !limits.is_empty())
        .take(MAX_BUDGETS);
    let reads = capped.map(|(tenant, limits)| async move {
        let subject = BudgetSubject::Tenant(tenant.clone());
        let read = gw.spend.budgets.usage(&subject, &limits);
        match tokio::time::timeout(STATE_TIMEOUT, read).await {
            Ok(Ok(usage)) => {
                let periods: Vec<Value> = usage
                    .into_iter()
                    .filter_map(|u| {
                        Some(json!({
                            "period": u.period.as_str(),
                            "period_id": u.period_id,
                            "limit_usd": usd_of_nano(u.limit?),
                            "spent_usd": usd_of_nano(u.spent),
                            "committed_usd": usd_of_nano(u.committed),
                        }))
                    })
                    .collect();
                json!({"tenant": tenant, "periods": periods})
            }
            Ok(Err(e)) => json!({"tenant": tenant, "error": e.to_string()}),
            Err(_) => json!({"tenant": tenant, "error": "the state did not answer in time"}),
        }
    });
    futures::future::join_all(reads).await
}

/// The job queue, when jobs are on: entries per priority (queued or held
/// by a worker), read now rather than the workers' 5-second sample.
async fn jobs(gw: &Gateway) -> Value {
    let Some(jobs) = &gw.jobs else {
        return Value::Null;
    };
    match tokio::time::timeout(STATE_TIMEOUT, jobs.queue.depths()).await {
        Ok(Ok(depths)) => {
            let by_priority: serde_json::Map<String, Value> = Priority::ALL
                .into_iter()
                .map(|p| (p.as_str().to_owned(), json!(depths[p.index()])))
                .collect();
            json!({"depths": by_priority})
        }
        Ok(Err(e)) => json!({"error": e.to_string()}),
        Err(_) => json!({"error": "the state did not answer in time"}),
    }
}
