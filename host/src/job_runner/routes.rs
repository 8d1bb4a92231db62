//! The HTTP side of jobs:
//! - [`accept`]: an API request with `Prefer: respond-async` becomes a job
//!   (`202`, `Location: /v1/jobs/{id}`, `{id, status, status_url}`);
//! - `GET /v1/jobs/{id}`: status, attempts, timestamps, and the result as
//!   the synchronous call returned it (status, headers that matter, body);
//!   `GET /v1/jobs/{id}/result`: that answer itself, byte for byte;
//!   `DELETE /v1/jobs/{id}`: cancels a queued job. A tenant sees only its
//!   own jobs (others get 404).
//! - [`admin`]: `/admin/jobs/*` (dead letters, requeue, purge, webhook
//!   endpoints), behind the admin token.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;

use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::jobs::queue::Cancel;
use crate::jobs::{
    JobRecord, JobSpec, JobStatus, Jobs, Priority, new_id, now_ms, status_url, webhook,
};
use crate::pipeline::{self, Caller};
use crate::policy::Route;

/// The header naming a job's priority.
pub const PRIORITY_HEADER: &str = "x-sluice-priority";

/// Whether `headers` ask for an asynchronous answer (`Prefer:
/// respond-async`, RFC 7240, among other preferences or not).
pub fn wants_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| {
            p.split([';', '='])
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("respond-async"))
        })
}

/// Request headers not replayed to the pipeline (hop-by-hop, and the ones
/// consumed here). Credentials never are (see
/// [`crate::pipeline::policy_headers`]).
const DROPPED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "upgrade",
    "expect",
    "prefer",
    PRIORITY_HEADER,
];

fn err(status: StatusCode, message: impl Into<String>) -> GatewayError {
    let mut e = GatewayError::bad_request(message);
    e.status = status;
    e
}

/// Queues `request` as a job of `route` for the caller it authenticates.
pub async fn accept(
    gw: Arc<Gateway>,
    jobs: Arc<Jobs>,
    route: Route,
    client_ip: IpAddr,
    request: http::Request<Body>,
) -> Response {
    match accept_inner(&gw, &jobs, client_ip, request).await {
        Ok(r) => r,
        Err(e) => e.into_response(route),
    }
}

async fn accept_inner(
    gw: &Gateway,
    jobs: &Jobs,
    client_ip: IpAddr,
    request: http::Request<Body>,
) -> Result<Response, GatewayError> {
    let (parts, body) = request.into_parts();
    let caller = pipeline::authenticate(gw, &parts.headers).await?;
    let body = crate::listener::read_body(body, jobs.config.max_body_bytes).await?;
    let mut json: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| GatewayError::bad_request(format!("The body is not valid JSON: {e}")))?;
    let obj = json
        .as_object_mut()
        .ok_or_else(|| GatewayError::bad_request("The body must be a JSON object."))?;
    if obj.get("stream").and_then(|v| v.as_bool()) == Some(true) {
        return Err(GatewayError::bad_request(
            "`stream: true` cannot be combined with `Prefer: respond-async`: a job's result is kept whole.",
        ));
    }
    let from_body = match obj.get("priority") {
        Some(serde_json::Value::String(s)) => {
            let s = s.clone();
            obj.remove("priority");
            Some(s)
        }
        _ => None,
    };
    let named = parts
        .headers
        .get(PRIORITY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(from_body);
    let priority = match named {
        None => Priority::Normal,
        Some(p) => Priority::parse(&p).ok_or_else(|| {
            GatewayError::bad_request(format!(
                "Unknown priority `{p}`: use critical, high, normal, low or bulk."
            ))
        })?,
    };
    let callback = match obj.remove("callback_url") {
        Some(serde_json::Value::String(url)) => Some(url),
        Some(serde_json::Value::Null) | None => jobs
            .config
            .webhooks
            .tenant_urls
            .get(&caller.tenant)
            .cloned(),
        Some(_) => {
            return Err(GatewayError::bad_request(
                "`callback_url` must be a string.",
            ));
        }
    };
    if let Some(url) = &callback {
        webhook::check(jobs, url)
            .await
            .map_err(|e| GatewayError::bad_request(format!("callback_url refused: {e}")))?;
    }
    let headers = pipeline::policy_headers(&parts.headers)
        .into_iter()
        .filter(|(n, _)| !DROPPED.contains(&n.as_str()))
        .collect();
    let body = serde_json::to_vec(&json).map_err(|e| GatewayError::bad_request(e.to_string()))?;
    let now = now_ms();
    let spec = JobSpec {
        id: new_id(),
        tenant: caller.tenant.clone(),
        tier: caller.tier.clone(),
        key_id: caller.key_id.clone(),
        path: parts.uri.path().to_string(),
        priority,
        created_ms: now,
        deadline_ms: now + jobs.config.max_wait().as_millis() as u64,
        callback_url: callback,
        client_ip: client_ip.to_string(),
        headers,
    };
    jobs.submit(&spec, &body)
        .await
        .map_err(|e| GatewayError::unavailable(format!("the job queue is unavailable: {e}")))?;
    let url = status_url(&spec.id);
    let mut response = (
        StatusCode::ACCEPTED,
        axum::Json(json!({
            "id": spec.id,
            "object": "job",
            "status": "queued",
            "priority": priority.as_str(),
            "status_url": url,
        })),
    )
        .into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&url) {
        h.insert(header::LOCATION, v);
    }
    h.insert(
        "preference-applied",
        HeaderValue::from_static("respond-async"),
    );
    Ok(response)
}

/// `/v1/jobs/*` (only when `[jobs]` is enabled).
pub fn api() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/v1/jobs/{id}", get(show).delete(cancel))
        .route("/v1/jobs/{id}/result", get(result))
        .merge(super::batches::routes())
}

/// The job `id` if it belongs to the caller `headers` authenticate.
async fn own_job(
    gw: &Gateway,
    headers: &HeaderMap,
    id: &str,
) -> Result<(Arc<Jobs>, Caller, JobRecord), GatewayError> {
    let jobs = gw.jobs.clone().ok_or_else(|| {
        err(
            StatusCode::NOT_FOUND,
            "Jobs are not enabled on this gateway.",
        )
    })?;
    let caller = pipeline::authenticate(gw, headers).await?;
    let missing = || {
        err(
            StatusCode::NOT_FOUND,
            format!("No job found with id '{id}'."),
        )
    };
    let record = jobs
        .get(id)
        .await
        .map_err(|e| GatewayError::unavailable(format!("the job store is unavailable: {e}")))?
        .ok_or_else(missing)?;
    if record.spec.tenant != caller.tenant {
        return Err(missing());
    }
    Ok((jobs, caller, record))
}

async fn show(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match own_job(&gw, &headers, &id).await {
        Ok((_, _, record)) => axum::Json(record.view()).into_response(),
        Err(e) => e.into_response(Route::Chat),
    }
}

async fn result(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let record = match own_job(&gw, &headers, &id).await {
        Ok((_, _, record)) => record,
        Err(e) => return e.into_response(Route::Chat),
    };
    let Some(r) = record.result else {
        return err(
            StatusCode::CONFLICT,
            format!(
                "Job '{id}' has no result yet (status {}).",
                record.status.as_str()
            ),
        )
        .into_response(Route::Chat);
    };
    let mut response = Response::new(Body::from(r.body));
    *response.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    for (name, value) in &r.headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(n, v);
        }
    }
    response
}

async fn cancel(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (jobs, _, _) = match own_job(&gw, &headers, &id).await {
        Ok(found) => found,
        Err(e) => return e.into_response(Route::Chat),
    };
    match jobs
        .queue
        .cancel(&id, now_ms(), jobs.config.result_ttl())
        .await
    {
        Ok(Cancel::Cancelled) => match jobs.get(&id).await {
            Ok(Some(record)) => {
                jobs.metrics.jobs.finished(JobStatus::Cancelled.as_str());
                axum::Json(record.view()).into_response()
            }
            _ => axum::Json(json!({"id": id, "object": "job", "status": "cancelled"}))
                .into_response(),
        },
        Ok(Cancel::NotFound) => err(
            StatusCode::NOT_FOUND,
            format!("No job found with id '{id}'."),
        )
        .into_response(Route::Chat),
        Ok(Cancel::NotQueued(status)) => err(
            StatusCode::CONFLICT,
            format!(
                "Job '{id}' is {} and can no longer be cancelled.",
                status.as_str()
            ),
        )
        .into_response(Route::Chat),
        Err(e) => GatewayError::unavailable(format!("the job store is unavailable: {e}"))
            .into_response(Route::Chat),
    }
}

// === admin ===

/// `/admin/jobs/*`; the caller puts them behind the admin token.
/// - `GET /admin/jobs/dead?limit=N`: dead letters, oldest first;
/// - `POST /admin/jobs/dead/{id}/requeue`: back to `queued`, attempts reset;
/// - `DELETE /admin/jobs/dead`: removes every dead letter and its job;
/// - `GET /admin/jobs/{id}`: any tenant's job;
/// - `POST /admin/jobs/webhooks/enable` `{"url": …}`: re-enables an
///   endpoint disabled after repeated failures.
pub fn admin() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/admin/jobs/dead", get(dead_list).delete(dead_purge))
        .route("/admin/jobs/dead/{id}/requeue", post(dead_requeue))
        .route("/admin/jobs/webhooks/enable", post(webhook_enable))
        .route("/admin/jobs/{id}", get(admin_show))
}

fn admin_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

fn jobs_off() -> Response {
    admin_error(StatusCode::NOT_FOUND, "jobs are not enabled")
}

#[derive(serde::Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn dead_list(State(gw): State<Arc<Gateway>>, Query(q): Query<Limit>) -> Response {
    let Some(jobs) = gw.jobs.clone() else {
        return jobs_off();
    };
    match jobs
        .queue
        .dead_list(q.limit.unwrap_or(100).min(10_000))
        .await
    {
        Ok(list) => axum::Json(json!({"object": "list", "data": list})).into_response(),
        Err(e) => admin_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn dead_requeue(State(gw): State<Arc<Gateway>>, Path(id): Path<String>) -> Response {
    let Some(jobs) = gw.jobs.clone() else {
        return jobs_off();
    };
    let ttl = jobs.config.max_wait() + jobs.config.result_ttl();
    match jobs.queue.dead_requeue(&id, ttl).await {
        Ok(true) => {
            jobs.wake.notify_one();
            axum::Json(json!({"id": id, "requeued": true})).into_response()
        }
        Ok(false) => admin_error(StatusCode::NOT_FOUND, format!("no dead job {id}")),
        Err(e) => admin_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn dead_purge(State(gw): State<Arc<Gateway>>) -> Response {
    let Some(jobs) = gw.jobs.clone() else {
        return jobs_off();
    };
    match jobs.queue.dead_purge().await {
        Ok(n) => axum::Json(json!({"purged": n})).into_response(),
        Err(e) => admin_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn admin_show(State(gw): State<Arc<Gateway>>, Path(id): Path<String>) -> Response {
    let Some(jobs) = gw.jobs.clone() else {
        return jobs_off();
    };
    match jobs.get(&id).await {
        Ok(Some(record)) => {
            let mut view = record.view();
            view["tenant"] = json!(record.spec.tenant);
            axum::Json(view).into_response()
        }
        Ok(None) => admin_error(StatusCode::NOT_FOUND, format!("no job {id}")),
        Err(e) => admin_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(serde::Deserialize)]
struct EnableBody {
    url: String,
}

async fn webhook_enable(State(gw): State<Arc<Gateway>>, body: axum::body::Bytes) -> Response {
    let Some(jobs) = gw.jobs.clone() else {
        return jobs_off();
    };
    let Ok(EnableBody { url }) = serde_json::from_slice(&body) else {
        return admin_error(StatusCode::BAD_REQUEST, "expected {\"url\": \"...\"}");
    };
    match webhook::enable(&jobs, &url).await {
        Ok(was) => {
            tracing::info!(url = %crate::telemetry::log_safe(&url), "webhook endpoint re-enabled");
            axum::Json(json!({"url": url, "enabled": true, "was_disabled": was})).into_response()
        }
        Err(e) => admin_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_respond_async_is_found_among_preferences() {
        let mut h = HeaderMap::new();
        assert!(!wants_async(&h));
        h.insert(
            "prefer",
            HeaderValue::from_static("return=minimal, respond-async"),
        );
        assert!(wants_async(&h));
        h.insert("prefer", HeaderValue::from_static("Respond-Async; wait=5"));
        assert!(wants_async(&h));
        h.insert("prefer", HeaderValue::from_static("respond-asyncx"));
        assert!(!wants_async(&h));
    }
}
