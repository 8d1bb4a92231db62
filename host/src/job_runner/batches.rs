//! The OpenAI Batch API over jobs: `POST /v1/files` (purpose `batch`,
//! JSONL), `POST /v1/batches`, `GET /v1/batches` (list), `GET
//! /v1/batches/{id}`, `POST
//! /v1/batches/{id}/cancel`, `GET /v1/files/{id}` and
//! `GET /v1/files/{id}/content`, so the official SDKs' batch workflow works
//! against sluice.
//!
//! Each good line of the input file becomes one job at `bulk` priority;
//! a bad line (not JSON, no `custom_id`, another endpoint, not POST, body
//! not an object) is reported with its line number in the error file. Files
//! and batches live in the state (namespaces `jobs:files`,
//! `jobs:batches`), files up to `[jobs] max_file_bytes`, kept
//! `result_ttl_secs`. A batch is completed when its last job is final: the
//! next read writes the output file (2xx answers) and the error file (bad
//! lines, non-2xx answers, cancelled jobs).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::jobs::{JobSpec, JobStatus, Jobs, Priority, new_id, now_ms};
use crate::pipeline::{self, Caller};
use crate::policy::Route;

const FILES: &str = "jobs:files";
const BATCHES: &str = "jobs:batches";
/// Most lines one batch takes.
const MAX_LINES: usize = 50_000;
/// Batches of a tenant `GET /v1/batches` can list (the most recent).
const MAX_LISTED: usize = 1_000;

/// The Batch API routes (with `[jobs]` enabled).
pub fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/v1/files", post(upload))
        .route("/v1/files/{id}", get(file_meta))
        .route("/v1/files/{id}/content", get(file_content))
        .route("/v1/batches", post(create).get(list))
        .route("/v1/batches/{id}", get(retrieve))
        .route("/v1/batches/{id}/cancel", post(cancel))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileMeta {
    id: String,
    tenant: String,
    bytes: usize,
    created_at: u64,
    filename: String,
    purpose: String,
}

impl FileMeta {
    fn view(&self) -> Value {
        json!({
            "id": self.id, "object": "file", "bytes": self.bytes,
            "created_at": self.created_at, "filename": self.filename,
            "purpose": self.purpose, "status": "processed",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Batch {
    id: String,
    tenant: String,
    endpoint: String,
    input_file_id: String,
    completion_window: String,
    created_at: u64,
    status: String,
    /// (custom_id, job id) per good line.
    jobs: Vec<(String, String)>,
    /// Error-file lines for the input's bad lines.
    bad_lines: Vec<Value>,
    output_file_id: Option<String>,
    error_file_id: Option<String>,
    completed_at: Option<u64>,
    cancelled_at: Option<u64>,
    metadata: Option<Value>,
    counts: (usize, usize, usize),
}

impl Batch {
    fn view(&self) -> Value {
        let (total, completed, failed) = self.counts;
        json!({
            "id": self.id, "object": "batch", "endpoint": self.endpoint,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "created_at": self.created_at, "status": self.status,
            "in_progress_at": self.created_at,
            "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
            "completed_at": self.completed_at, "cancelled_at": self.cancelled_at,
            "errors": null, "metadata": self.metadata,
            "request_counts": {"total": total, "completed": completed, "failed": failed},
        })
    }
}

fn err(status: StatusCode, message: impl Into<String>) -> GatewayError {
    let mut e = GatewayError::bad_request(message);
    e.status = status;
    e
}

fn unavailable(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::unavailable(format!("the job store is unavailable: {e}"))
}

fn reply(r: Result<Response, GatewayError>) -> Response {
    r.unwrap_or_else(|e| e.into_response(Route::Chat))
}

async fn context(gw: &Gateway, headers: &HeaderMap) -> Result<(Arc<Jobs>, Caller), GatewayError> {
    let jobs = gw.jobs.clone().ok_or_else(|| {
        err(
            StatusCode::NOT_FOUND,
            "Jobs are not enabled on this gateway.",
        )
    })?;
    Ok((jobs, pipeline::authenticate(gw, headers).await?))
}

async fn store_file(jobs: &Jobs, meta: &FileMeta, content: &[u8]) -> Result<(), GatewayError> {
    let ttl = Some(jobs.config.result_ttl());
    let json = serde_json::to_vec(meta).map_err(unavailable)?;
    jobs.state
        .set(FILES, &format!("data/{}", meta.id), content, ttl)
        .await
        .map_err(unavailable)?;
    jobs.state
        .set(FILES, &format!("meta/{}", meta.id), &json, ttl)
        .await
        .map_err(unavailable)
}

async fn load_file(jobs: &Jobs, tenant: &str, id: &str) -> Result<FileMeta, GatewayError> {
    let missing = || err(StatusCode::NOT_FOUND, format!("No such File object: {id}"));
    if id.is_empty() || id.len() > 64 {
        return Err(missing());
    }
    let raw = jobs
        .state
        .get(FILES, &format!("meta/{id}"))
        .await
        .map_err(unavailable)?
        .ok_or_else(missing)?;
    let meta: FileMeta = serde_json::from_slice(&raw).map_err(|_| missing())?;
    if meta.tenant != tenant {
        return Err(missing());
    }
    Ok(meta)
}

/// One part of a `multipart/form-data` body: name, filename, content.
type Part = (String, Option<String>, Vec<u8>);

/// The parts of a `multipart/form-data` body.
fn multipart(content_type: &str, body: &[u8]) -> Option<Vec<Part>> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))?
        .trim_matches('"');
    let delim = format!("--{boundary}");
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay.get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let mut parts = Vec::new();
    let mut at = find(body, delim.as_bytes(), 0)? + delim.len();
    loop {
        if body.get(at..at + 2) == Some(b"--") {
            return Some(parts);
        }
        at += 2; // CRLF after the delimiter
        let head_end = find(body, b"\r\n\r\n", at)?;
        let head = String::from_utf8_lossy(&body[at..head_end]).to_string();
        let next = find(body, format!("\r\n{delim}").as_bytes(), head_end + 4)?;
        let content = body[head_end + 4..next].to_vec();
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))?
            .to_string();
        let param = |key: &str| {
            disposition.split(';').find_map(|p| {
                p.trim()
                    .strip_prefix(key)
                    .and_then(|v| v.strip_prefix('='))
                    .map(|v| v.trim_matches('"').to_string())
            })
        };
        parts.push((param("name")?, param("filename"), content));
        at = next + 2 + delim.len();
    }
}

async fn upload(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Body) -> Response {
    reply(
        async {
            let (jobs, caller) = context(&gw, &headers).await?;
            let body =
                crate::listener::read_body(body, jobs.config.max_file_bytes + 64 * 1024).await?;
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let parts = multipart(ct, &body).ok_or_else(|| {
                GatewayError::bad_request(
                    "Expected a multipart/form-data body with `file` and `purpose`.",
                )
            })?;
            let purpose = parts
                .iter()
                .find(|p| p.0 == "purpose")
                .map(|p| String::from_utf8_lossy(&p.2).trim().to_string())
                .unwrap_or_default();
            if purpose != "batch" {
                return Err(GatewayError::bad_request(format!(
                    "Only purpose `batch` is supported here, not `{purpose}`."
                )));
            }
            let (_, filename, content) = parts
                .into_iter()
                .find(|p| p.0 == "file")
                .ok_or_else(|| GatewayError::bad_request("Missing the `file` part."))?;
            if content.len() > jobs.config.max_file_bytes {
                return Err(GatewayError::payload_too_large(jobs.config.max_file_bytes));
            }
            let meta = FileMeta {
                id: format!("file-{}", uuid::Uuid::now_v7().simple()),
                tenant: caller.tenant,
                bytes: content.len(),
                created_at: now_ms() / 1000,
                filename: filename.unwrap_or_else(|| "input.jsonl".into()),
                purpose,
            };
            store_file(&jobs, &meta, &content).await?;
            Ok(axum::Json(meta.view()).into_response())
        }
        .await,
    )
}

async fn file_meta(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    reply(
        async {
            let (jobs, caller) = context(&gw, &headers).await?;
            let meta = load_file(&jobs, &caller.tenant, &id).await?;
            Ok(axum::Json(meta.view()).into_response())
        }
        .await,
    )
}

async fn file_content(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    reply(
        async {
            let (jobs, caller) = context(&gw, &headers).await?;
            load_file(&jobs, &caller.tenant, &id).await?;
            let data = jobs
                .state
                .get(FILES, &format!("data/{id}"))
                .await
                .map_err(unavailable)?
                .unwrap_or_default();
            let mut r = Response::new(Body::from(data));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/jsonl"),
            );
            Ok(r)
        }
        .await,
    )
}

#[derive(Deserialize)]
struct CreateBatch {
    input_file_id: String,
    endpoint: String,
    completion_window: Option<String>,
    metadata: Option<Value>,
}

const ENDPOINTS: [&str; 3] = ["/v1/chat/completions", "/v1/embeddings", "/v1/messages"];

async fn create(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Body) -> Response {
    reply(
        async {
            let (jobs, caller) = context(&gw, &headers).await?;
            let body = crate::listener::read_body(body, 64 * 1024).await?;
            let req: CreateBatch = serde_json::from_slice(&body)
                .map_err(|e| GatewayError::bad_request(format!("Invalid batch request: {e}")))?;
            if !ENDPOINTS.contains(&req.endpoint.as_str()) {
                return Err(GatewayError::bad_request(format!(
                    "Unsupported endpoint `{}`: use one of {}.",
                    req.endpoint,
                    ENDPOINTS.join(", ")
                )));
            }
            load_file(&jobs, &caller.tenant, &req.input_file_id).await?;
            let input = jobs
                .state
                .get(FILES, &format!("data/{}", req.input_file_id))
                .await
                .map_err(unavailable)?
                .unwrap_or_default();
            let batch_id = format!("batch_{}", uuid::Uuid::now_v7().simple());
            let mut batch = Batch {
                id: batch_id.clone(),
                tenant: caller.tenant.clone(),
                endpoint: req.endpoint.clone(),
                input_file_id: req.input_file_id.clone(),
                completion_window: req.completion_window.unwrap_or_else(|| "24h".into()),
                created_at: now_ms() / 1000,
                status: "in_progress".into(),
                jobs: Vec::new(),
                bad_lines: Vec::new(),
                output_file_id: None,
                error_file_id: None,
                completed_at: None,
                cancelled_at: None,
                metadata: req.metadata,
                counts: (0, 0, 0),
            };
            let text = String::from_utf8_lossy(&input);
            let lines: Vec<(usize, &str)> = text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .collect();
            if lines.len() > MAX_LINES {
                return Err(GatewayError::bad_request(format!(
                    "A batch takes at most {MAX_LINES} requests."
                )));
            }
            let now = now_ms();
            for (n, line) in lines {
                let line_no = n + 1;
                let parsed = parse_line(line, &req.endpoint);
                let (custom_id, body) = match parsed {
                    Ok(ok) => ok,
                    Err((custom_id, message)) => {
                        batch.bad_lines.push(json!({
                            "id": format!("batch_req_line_{line_no}"),
                            "custom_id": custom_id,
                            "response": null,
                            "error": {"code": "invalid_request", "message": format!("line {line_no}: {message}"), "line": line_no},
                        }));
                        continue;
                    }
                };
                let spec = JobSpec {
                    id: new_id(),
                    tenant: caller.tenant.clone(),
                    tier: caller.tier.clone(),
                    key_id: caller.key_id.clone(),
                    path: req.endpoint.clone(),
                    priority: Priority::Bulk,
                    created_ms: now,
                    deadline_ms: now + jobs.config.max_wait().as_millis() as u64,
                    callback_url: None,
                    client_ip: "0.0.0.0".into(),
                    headers: vec![("content-type".into(), "application/json".into())],
                };
                let bytes = serde_json::to_vec(&body).unwrap_or_default();
                jobs.submit(&spec, &bytes).await.map_err(unavailable)?;
                batch.jobs.push((custom_id, spec.id));
            }
            batch.counts = (batch.jobs.len() + batch.bad_lines.len(), 0, batch.bad_lines.len());
            save(&jobs, &batch).await?;
            add_to_index(&jobs, &batch).await?;
            Ok(axum::Json(batch.view()).into_response())
        }
        .await,
    )
}

/// A line's `custom_id` and request body, or why it is refused (with the
/// `custom_id` when it was readable).
fn parse_line(line: &str, endpoint: &str) -> Result<(String, Value), (Option<String>, String)> {
    let v: Value =
        serde_json::from_str(line).map_err(|e| (None, format!("not valid JSON: {e}")))?;
    let custom_id = v
        .get("custom_id")
        .and_then(|c| c.as_str())
        .map(str::to_owned);
    let fail = |m: String| (custom_id.clone(), m);
    let Some(id) = custom_id.clone() else {
        return Err(fail("missing `custom_id`".into()));
    };
    let method = v.get("method").and_then(|m| m.as_str()).unwrap_or("POST");
    if !method.eq_ignore_ascii_case("POST") {
        return Err(fail(format!("method must be POST, not {method}")));
    }
    let url = v.get("url").and_then(|u| u.as_str()).unwrap_or(endpoint);
    if url != endpoint {
        return Err(fail(format!(
            "url `{url}` differs from the batch endpoint `{endpoint}`"
        )));
    }
    match v.get("body") {
        Some(b @ Value::Object(o)) if o.get("stream").and_then(|s| s.as_bool()) != Some(true) => {
            Ok((id, b.clone()))
        }
        Some(Value::Object(_)) => Err(fail("`stream: true` is not allowed in a batch".into())),
        _ => Err(fail("`body` must be a JSON object".into())),
    }
}

async fn save(jobs: &Jobs, batch: &Batch) -> Result<(), GatewayError> {
    let json = serde_json::to_vec(batch).map_err(unavailable)?;
    jobs.state
        .set(
            BATCHES,
            &batch.id,
            &json,
            Some(jobs.config.max_wait() + jobs.config.result_ttl()),
        )
        .await
        .map_err(unavailable)
}

async fn load(jobs: &Jobs, tenant: &str, id: &str) -> Result<Batch, GatewayError> {
    let missing = || {
        err(
            StatusCode::NOT_FOUND,
            format!("No batch found with id '{id}'."),
        )
    };
    if id.is_empty() || id.len() > 64 {
        return Err(missing());
    }
    let raw = jobs
        .state
        .get(BATCHES, id)
        .await
        .map_err(unavailable)?
        .ok_or_else(missing)?;
    let batch: Batch = serde_json::from_slice(&raw).map_err(|_| missing())?;
    if batch.tenant != tenant {
        return Err(missing());
    }
    Ok(batch)
}

/// Counts the batch's jobs; once all are final, writes the output and
/// error files and completes it.
async fn refresh(jobs: &Jobs, batch: &mut Batch) -> Result<(), GatewayError> {
    if batch.output_file_id.is_some()
        || batch.error_file_id.is_some()
        || batch.status == "completed"
    {
        return Ok(());
    }
    let mut out = String::new();
    let mut errors: String = batch.bad_lines.iter().map(|l| format!("{l}\n")).collect();
    let (mut done, mut failed, mut pending) = (0, batch.bad_lines.len(), 0);
    for (custom_id, job_id) in &batch.jobs {
        let Some(record) = jobs.get(job_id).await.map_err(unavailable)? else {
            failed += 1;
            continue;
        };
        if !record.status.is_final() {
            pending += 1;
            continue;
        }
        let response = record.result.as_ref().map(|r| {
            let body =
                serde_json::from_str::<Value>(&r.body).unwrap_or(Value::String(r.body.clone()));
            let request_id = r
                .headers
                .iter()
                .find(|(n, _)| n == "x-request-id")
                .map(|(_, v)| v.clone());
            json!({"status_code": r.status, "request_id": request_id, "body": body})
        });
        let ok = record.status == JobStatus::Succeeded;
        let line = json!({
            "id": format!("batch_req_{}", job_id.trim_start_matches("job_")),
            "custom_id": custom_id,
            "response": response,
            "error": if ok { Value::Null } else {
                json!({"code": record.status.as_str(), "message": record.error})
            },
        });
        if ok {
            done += 1;
            out.push_str(&format!("{line}\n"));
        } else {
            failed += 1;
            errors.push_str(&format!("{line}\n"));
        }
    }
    batch.counts = (batch.jobs.len() + batch.bad_lines.len(), done, failed);
    if pending > 0 {
        return Ok(());
    }
    let now = now_ms() / 1000;
    let file = |content: &str, suffix: &str| FileMeta {
        id: format!("file-{}", uuid::Uuid::now_v7().simple()),
        tenant: batch.tenant.clone(),
        bytes: content.len(),
        created_at: now,
        filename: format!("{}_{suffix}.jsonl", batch.id),
        purpose: "batch_output".into(),
    };
    if !out.is_empty() {
        let meta = file(&out, "output");
        store_file(jobs, &meta, out.as_bytes()).await?;
        batch.output_file_id = Some(meta.id);
    }
    if !errors.is_empty() {
        let meta = file(&errors, "error");
        store_file(jobs, &meta, errors.as_bytes()).await?;
        batch.error_file_id = Some(meta.id);
    }
    if batch.status == "cancelling" {
        batch.status = "cancelled".into();
        batch.cancelled_at = Some(now);
    } else {
        batch.status = "completed".into();
        batch.completed_at = Some(now);
    }
    save(jobs, batch).await
}

/// The key of a tenant's list of batch ids (oldest first).
fn index_key(tenant: &str) -> String {
    format!("index/{tenant}")
}

/// Appends `batch` to its tenant's list (compare-and-swap, so concurrent
/// creations on several nodes all land), keeping the last [`MAX_LISTED`].
async fn add_to_index(jobs: &Jobs, batch: &Batch) -> Result<(), GatewayError> {
    let key = index_key(&batch.tenant);
    let ttl = Some(jobs.config.max_wait() + jobs.config.result_ttl());
    for _ in 0..32 {
        let current = jobs.state.get(BATCHES, &key).await.map_err(unavailable)?;
        let mut ids: Vec<String> = current
            .as_deref()
            .and_then(|raw| serde_json::from_slice(raw).ok())
            .unwrap_or_default();
        ids.push(batch.id.clone());
        if ids.len() > MAX_LISTED {
            ids.drain(..ids.len() - MAX_LISTED);
        }
        let next = serde_json::to_vec(&ids).map_err(unavailable)?;
        let swapped = jobs
            .state
            .compare_and_swap(BATCHES, &key, current.as_deref(), &next, ttl)
            .await
            .map_err(unavailable)?;
        if swapped {
            return Ok(());
        }
    }
    Err(unavailable("the batch list kept changing; try again"))
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    after: Option<String>,
}

/// `GET /v1/batches?limit=&after=`: the tenant's batches, newest first, in
/// the OpenAI list shape (cursor `after` = the last id of the previous
/// page).
async fn list(
    State(gw): State<Arc<Gateway>>,
    axum::extract::Query(q): axum::extract::Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    reply(
        async {
            let (jobs, caller) = context(&gw, &headers).await?;
            let limit = q.limit.unwrap_or(20);
            if !(1..=100).contains(&limit) {
                return Err(GatewayError::bad_request(
                    "`limit` must be between 1 and 100.",
                ));
            }
            let ids: Vec<String> = jobs
                .state
                .get(BATCHES, &index_key(&caller.tenant))
                .await
                .map_err(unavailable)?
                .and_then(|raw| serde_json::from_slice(&raw).ok())
                .unwrap_or_default();
            let newest_first = ids.iter().rev();
            let start = match &q.after {
                Some(after) => ids
                    .iter()
                    .rev()
                    .position(|id| id == after)
                    .map_or(ids.len(), |i| i + 1),
                None => 0,
            };
            let mut data = Vec::new();
            let mut more = false;
            for id in newest_first.skip(start) {
                // Expired batches drop out of the list.
                let mut batch = match load(&jobs, &caller.tenant, id).await {
                    Ok(b) => b,
                    Err(e) if e.status == StatusCode::NOT_FOUND => continue,
                    Err(e) => return Err(e),
                };
                if data.len() == limit {
                    more = true;
                    break;
                }
                refresh(&jobs, &mut batch).await?;
                data.push(batch.view());
            }
            let first = data.first().map(|b| b["id"].clone());
            let last = data.last().map(|b| b["id"].clone());
            Ok(axum::Json(json!({
                "object": "list", "data": data,
                "first_id": first, "last_id": last, "has_more": more,
            }))
            .into_response())
        }
        .await,
    )
}

async fn retrieve(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    reply(
        async {
            let (jobs, caller) = context(&gw, &headers).await?;
            let mut batch = load(&jobs, &caller.tenant, &id).await?;
            refresh(&jobs, &mut batch).await?;
            Ok(axum::Json(batch.view()).into_response())
        }
        .await,
    )
}

async fn cancel(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    reply(
        async {
            let (jobs, caller) = context(&gw, &headers).await?;
            let mut batch = load(&jobs, &caller.tenant, &id).await?;
            if batch.status == "in_progress" {
                for (_, job_id) in &batch.jobs {
                    let _ = jobs
                        .queue
                        .cancel(job_id, now_ms(), jobs.config.result_ttl())
                        .await;
                }
                batch.status = "cancelling".into();
                save(&jobs, &batch).await?;
            }
            refresh(&jobs, &mut batch).await?;
            Ok(axum::Json(batch.view()).into_response())
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_bodies_split_into_parts() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\nContent-Type: application/octet-stream\r\n\r\n{\"a\":1}\n{\"b\":2}\n\r\n--XyZ--\r\n";
        let parts = multipart("multipart/form-data; boundary=XyZ", body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0, "purpose");
        assert_eq!(parts[0].2, b"batch");
        assert_eq!(parts[1].1.as_deref(), Some("in.jsonl"));
        assert_eq!(parts[1].2, b"{\"a\":1}\n{\"b\":2}\n");
    }

    #[test]
    fn bad_lines_say_why() {
        let e = "/v1/chat/completions";
        assert!(parse_line("{", e).is_err());
        assert_eq!(parse_line(r#"{"body":{}}"#, e).unwrap_err().0, None);
        let (id, why) =
            parse_line(r#"{"custom_id":"a","url":"/v1/embeddings","body":{}}"#, e).unwrap_err();
        assert_eq!(id.as_deref(), Some("a"));
        assert!(why.contains("differs"));
        assert!(parse_line(r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}"#, e).is_ok());
    }
}
