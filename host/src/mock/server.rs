//! The accept loop, the request handlers and the responses they build.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use axum::routing::{get, post};
use bytes::Bytes;
use futures::StreamExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::answers::{anthropic_answer, chat_answer, embeddings_answer, gemini_answer, unix_now};
use super::{Fault, MAX_BODY, MockConfig, Mode, RECENT_REQUESTS, SeenRequest, Shared, route_index};
use crate::api::{self, ParsedRequest};
use crate::policy::Route;

/// Serves the mock on `listener` until `shutdown` resolves; open connections
/// are then closed.
pub async fn serve(
    listener: TcpListener,
    config: MockConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    run(listener, Arc::new(Shared::new(config)), shutdown).await
}

/// Marks a response whose connection must be closed instead of answered.
#[derive(Debug, Clone, Copy)]
struct DropConnection;

#[derive(Debug, thiserror::Error)]
#[error("mock upstream closed the connection on purpose")]
struct Dropped;

pub(super) async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/messages", post(messages))
        .route("/v1/models", get(models))
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(azure_chat),
        )
        .route("/v1beta/models/{target}", post(gemini))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared.clone());
    let service = TowerToHyperService::new(router);
    // A handler cannot close its connection; it marks the response and this
    // wrapper turns the mark into a service error, on which hyper closes the
    // connection without writing a response.
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let answer = hyper::service::Service::call(&service, req);
        async move {
            let response: Response<Body> = answer.await.unwrap_or_else(|e: Infallible| match e {});
            if response.extensions().get::<DropConnection>().is_some() {
                Err(Dropped)
            } else {
                Ok(response)
            }
        }
    });
    let builder = Arc::new(Builder::new(TokioExecutor::new()));

    let mut shutdown = pin!(shutdown);
    let mut mode = shared.mode.subscribe();
    let mut listener = Some(listener);
    loop {
        let wanted = *mode.borrow_and_update();
        match wanted {
            Mode::Stopped => break,
            Mode::Down => listener = None,
            Mode::Up if listener.is_none() => {
                if let Some(std) = shared.relisten.lock().take() {
                    listener = Some(TcpListener::from_std(std)?);
                }
            }
            Mode::Up => {}
        }
        if *shared.applied.borrow() != wanted {
            shared.applied.send_replace(wanted);
        }

        tokio::select! {
            _ = &mut shutdown => break,
            changed = mode.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            accepted = accept(listener.as_ref()) => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Out of descriptors or a connection reset before we
                        // took it: back off a moment rather than spin.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                };
                // Small answers must not wait for Nagle.
                let _ = stream.set_nodelay(true);
                let service = service.clone();
                let builder = builder.clone();
                let mut conn_mode = shared.mode.subscribe();
                tokio::spawn(async move {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    // Going down or stopping drops the connection mid-flight,
                    // like a crashed provider would.
                    tokio::select! {
                        _ = conn => {}
                        _ = conn_mode.wait_for(|m| *m != Mode::Up) => {}
                    }
                });
            }
        }
    }
    shared.mode.send_replace(Mode::Stopped);
    shared.applied.send_replace(Mode::Stopped);
    Ok(())
}

async fn accept(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

// === handlers ===

async fn chat(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response<Body> {
    handle(s, Route::Chat, headers, body).await
}

async fn embeddings(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    handle(s, Route::Embeddings, headers, body).await
}

async fn messages(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response<Body> {
    handle(s, Route::AnthropicMessages, headers, body).await
}

async fn models(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response<Body> {
    s.model_calls.fetch_add(1, Ordering::Relaxed);
    record(&s, Method::GET, "/v1/models", &headers, Bytes::new());
    // Either provider's header will do here; both providers list models.
    if !authorized(&s.config, Route::Chat, &headers)
        && !authorized(&s.config, Route::AnthropicMessages, &headers)
    {
        return error(Route::Chat, 401, "Incorrect API key provided.", None);
    }
    let created = unix_now();
    let data: Vec<Value> = ["mock-gpt", "mock-claude", "mock-embedding"]
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "created": created, "owned_by": "sluice-mock" }))
        .collect();
    json_response(StatusCode::OK, &json!({ "object": "list", "data": data }))
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response<Body> {
    let message = format!("Unknown request URL: {method} {}.", uri.path());
    bytes_response(
        StatusCode::NOT_FOUND,
        "application/json",
        api::openai_error(&message, "invalid_request_error", Some("unknown_url")),
    )
}

/// Counts a request as in flight until dropped.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        shared.activity.notify_waiters();
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.activity.notify_waiters();
    }
}

/// Azure OpenAI: a deployment's chat completions, `api-version` required,
/// the key in `api-key`; answered as OpenAI chat.
async fn azure_chat(
    State(s): State<Arc<Shared>>,
    axum::extract::Path(deployment): axum::extract::Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let query = query.unwrap_or_default();
    let path = format!("/openai/deployments/{deployment}/chat/completions?{query}");
    if !query.split('&').any(|kv| kv.starts_with("api-version=")) {
        record(&s, Method::POST, &path, &headers, body);
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({ "error": { "code": "404", "message": "Resource not found" } }),
        );
    }
    handle_at(s, Route::Chat, &path, headers, body).await
}

async fn handle(s: Arc<Shared>, route: Route, headers: HeaderMap, body: Bytes) -> Response<Body> {
    handle_at(s, route, api::route_path(route), headers, body).await
}

async fn handle_at(
    s: Arc<Shared>,
    route: Route,
    path: &str,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    s.calls[route_index(route)].fetch_add(1, Ordering::SeqCst);
    let _in_flight = InFlight::enter(&s);
    record(&s, Method::POST, path, &headers, body.clone());

    // A keep-alive connection may carry a request just as the mock goes
    // down; it must not be answered.
    if *s.mode.borrow() != Mode::Up {
        return drop_connection();
    }
    wait_while_paused(&s).await;
    let latency = s.latency_us.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_micros(latency)).await;
    }
    if !authorized(&s.config, route, &headers) {
        // Like the real providers, the message quotes the key it was given.
        let presented = match route {
            Route::AnthropicMessages => headers.get("x-api-key"),
            _ => headers.get(header::AUTHORIZATION),
        }
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
        let message = match route {
            Route::AnthropicMessages => format!("invalid x-api-key: {presented}"),
            _ => format!("Incorrect API key provided: {presented}."),
        };
        return error(route, 401, &message, None);
    }

    let fault = {
        let mut script = s.script.lock();
        script.pop_front()
    };
    let mut cut = None;
    match fault {
        None => {}
        Some(Fault::Status {
            status,
            retry_after,
        }) => {
            return error(
                route,
                status,
                &format!("mock scripted {status}"),
                retry_after,
            );
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::Drop) => return drop_connection(),
        Some(
            f @ (Fault::Truncate
            | Fault::Abort
            | Fault::AbortBeforeContent
            | Fault::StallBeforeContent(_)),
        ) => cut = Some(f),
    }

    let roll = |rate: f64| rate > 0.0 && rand::random::<f64>() < rate;
    if roll(f64::from_bits(s.error_rate.load(Ordering::Relaxed))) {
        let status = if route == Route::AnthropicMessages {
            529
        } else {
            500
        };
        return error(route, status, "mock random server error", None);
    }
    if roll(s.config.rate_limit_rate) {
        let retry = Some(s.config.retry_after);
        return error(route, 429, "mock random rate limit", retry);
    }

    let req = match api::parse(route, &body) {
        Ok(req) => req,
        Err(e) => {
            return bytes_response(
                StatusCode::BAD_REQUEST,
                "application/json",
                e.to_body(route),
            );
        }
    };
    if let Some(status) = req
        .model
        .strip_prefix("mock-error-")
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (400..=599).contains(s))
    {
        let retry = (status == 429).then_some(s.config.retry_after);
        return error(route, status, &format!("mock error {status}"), retry);
    }

    let id = s.next_id.fetch_add(1, Ordering::Relaxed);
    let answer = match route {
        Route::Chat => chat_answer(&req, id),
        Route::AnthropicMessages => anthropic_answer(&req, id),
        Route::Embeddings => match embeddings_answer(&req, s.config.embedding_dim) {
            Ok(answer) => answer,
            Err(message) => return error(route, 400, message, None),
        },
    };

    if req.stream && route != Route::Embeddings {
        stream_response(&s, &req, &answer, cut)
    } else {
        let body = api_json(&answer);
        match cut {
            None => bytes_response(StatusCode::OK, "application/json", body),
            Some(Fault::StallBeforeContent(d)) => {
                tokio::time::sleep(d).await;
                bytes_response(StatusCode::OK, "application/json", body)
            }
            Some(Fault::AbortBeforeContent) => {
                cut_response("application/json", vec![Bytes::from(body)], Fault::Abort)
            }
            Some(fault) => cut_response("application/json", vec![Bytes::from(body)], fault),
        }
    }
}

fn record(s: &Shared, method: Method, path: &str, headers: &HeaderMap, body: Bytes) {
    let seen = SeenRequest {
        method,
        path: path.to_owned(),
        headers: headers.clone(),
        body,
    };
    let mut recent = s.recent.lock();
    if recent.len() == RECENT_REQUESTS {
        recent.pop_front();
    }
    recent.push_back(seen);
}

async fn wait_while_paused(s: &Shared) {
    loop {
        // Registered before the check, so a resume in between is not lost.
        let resumed = s.resumed.notified();
        if !s.paused.load(Ordering::SeqCst) {
            return;
        }
        resumed.await;
    }
}

fn authorized(config: &MockConfig, route: Route, headers: &HeaderMap) -> bool {
    let Some(expected) = &config.expected_key else {
        return true;
    };
    let presented = match route {
        Route::AnthropicMessages => headers.get("x-api-key").and_then(|v| v.to_str().ok()),
        Route::Chat | Route::Embeddings => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            // Azure's header.
            .or_else(|| headers.get("api-key").and_then(|v| v.to_str().ok())),
    };
    presented == Some(expected.as_str())
}

// === responses ===

fn api_json(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn bytes_response(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    bytes_response(status, "application/json", api_json(value))
}

fn error(
    route: Route,
    status: u16,
    message: &str,
    retry_after: Option<Duration>,
) -> Response<Body> {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = bytes_response(
        code,
        "application/json",
        api::error_body(route, status, message),
    );
    if let Some(after) = retry_after {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        headers.insert(
            "retry-after-ms",
            HeaderValue::from(after.as_millis() as u64),
        );
    }
    response
}

fn drop_connection() -> Response<Body> {
    let mut response = Response::new(Body::empty());
    response.extensions_mut().insert(DropConnection);
    response
}

fn stream_response(
    s: &Shared,
    req: &ParsedRequest,
    answer: &Value,
    cut: Option<Fault>,
) -> Response<Body> {
    let Ok(mut events) = api::json_value_to_stream(req.route, answer) else {
        return error(req.route, 500, "mock could not stream its answer", None);
    };
    if req.route == Route::Chat && !req.client_wants_usage() {
        events.retain(|e| !api::is_usage_only_chunk(e));
    }
    let delay = Duration::from_micros(s.chunk_delay_us.load(Ordering::Relaxed));
    if cut.is_none() && delay.is_zero() {
        // The common (benchmark) case: one write of the whole stream.
        let mut response = Response::new(Body::from(api::sse::encode(&events)));
        set_sse_headers(&mut response);
        return response;
    }
    let chunks: Vec<Bytes> = events.iter().map(|e| Bytes::from(e.to_bytes())).collect();
    match cut {
        Some(Fault::AbortBeforeContent) => {
            let mut response = Response::new(reset_after(chunks[..1].to_vec()));
            set_sse_headers(&mut response);
            return response;
        }
        Some(Fault::StallBeforeContent(stall)) => {
            let stream = futures::stream::iter(chunks.into_iter().enumerate()).then(
                move |(i, chunk)| async move {
                    if i == 1 {
                        tokio::time::sleep(stall).await;
                    }
                    Ok::<Bytes, Infallible>(chunk)
                },
            );
            let mut response = Response::new(Body::from_stream(stream));
            set_sse_headers(&mut response);
            return response;
        }
        Some(fault) => return cut_response("text/event-stream", chunks, fault),
        None => {}
    }
    let stream =
        futures::stream::iter(chunks.into_iter().enumerate()).then(move |(i, chunk)| async move {
            if i > 0 {
                tokio::time::sleep(delay).await;
            }
            Ok::<Bytes, Infallible>(chunk)
        });
    let mut response = Response::new(Body::from_stream(stream));
    set_sse_headers(&mut response);
    response
}

fn set_sse_headers(response: &mut Response<Body>) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

/// A body that sends `chunks`, then resets the connection.
fn reset_after(chunks: Vec<Bytes>) -> Body {
    let sent = futures::stream::iter(chunks.into_iter().map(Ok));
    let reset = futures::stream::once(async {
        // Yield once so hyper flushes the head and the chunks before the
        // error makes it drop the connection.
        tokio::task::yield_now().await;
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "mock upstream aborted the body",
        ))
    });
    Body::from_stream(sent.chain(reset))
}

/// A 200 whose body stops halfway: cleanly for [`Fault::Truncate`], with a
/// connection reset for [`Fault::Abort`]. For a single JSON chunk, halfway
/// is half its bytes; for a stream, half its events.
fn cut_response(content_type: &'static str, chunks: Vec<Bytes>, fault: Fault) -> Response<Body> {
    let mut chunks = chunks;
    if chunks.len() == 1 {
        let whole = chunks.remove(0);
        chunks.push(whole.slice(..whole.len() / 2));
    } else {
        chunks.truncate(chunks.len() / 2);
    }
    let body = if fault == Fault::Abort {
        reset_after(chunks)
    } else {
        Body::from(chunks.concat())
    };
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

// === Gemini ===

fn gemini_error(status: u16, message: &str) -> Response<Body> {
    let name = match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    };
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &json!({ "error": { "code": status, "message": message, "status": name } }),
    )
}

/// Gemini's native API: `POST /v1beta/models/{model}:generateContent` (JSON)
/// and `:streamGenerateContent?alt=sse` (SSE), the key in
/// `x-goog-api-key`. Scripted [`Fault::Status`] faults apply; other faults
/// are consumed without effect.
async fn gemini(
    State(s): State<Arc<Shared>>,
    axum::extract::Path(target): axum::extract::Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let _in_flight = InFlight::enter(&s);
    let path = match &query {
        Some(q) => format!("/v1beta/models/{target}?{q}"),
        None => format!("/v1beta/models/{target}"),
    };
    record(&s, Method::POST, &path, &headers, body.clone());
    if let Some(expected) = &s.config.expected_key
        && headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()) != Some(expected)
    {
        return gemini_error(401, "API key not valid. Please pass a valid API key.");
    }
    let fault = s.script.lock().pop_front();
    if let Some(Fault::Status { status, .. }) = fault {
        return gemini_error(status, &format!("mock scripted {status}"));
    }
    let Some((model, method)) = target.split_once(':') else {
        return gemini_error(404, "unknown method");
    };
    let stream = match method {
        "generateContent" => false,
        // Without alt=sse Gemini streams a JSON array; sluice reads SSE.
        "streamGenerateContent" if query.as_deref() == Some("alt=sse") => true,
        _ => return gemini_error(404, "unknown method"),
    };
    if let Some(status) = model
        .strip_prefix("mock-error-")
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (400..=599).contains(s))
    {
        return gemini_error(status, &format!("mock error {status}"));
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return gemini_error(400, "Invalid JSON payload received.");
    };
    let id = s.next_id.fetch_add(1, Ordering::Relaxed);
    let answer = gemini_answer(model, &request, id);
    if !stream {
        return json_response(StatusCode::OK, &answer);
    }
    // Streamed: the text in two chunks, the last with the finish reason
    // and usage (Gemini sends no terminator).
    let candidate = &answer["candidates"][0];
    let parts = candidate["content"]["parts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut chunks = Vec::new();
    for part in parts {
        match part.get("text").and_then(Value::as_str) {
            Some(text) => {
                let mid = text
                    .char_indices()
                    .nth(text.chars().count() / 2)
                    .map_or(0, |(i, _)| i);
                for piece in [&text[..mid], &text[mid..]] {
                    if !piece.is_empty() {
                        chunks.push(json!({ "text": piece }));
                    }
                }
            }
            None => chunks.push(part),
        }
    }
    let last = chunks.len().saturating_sub(1);
    let mut out = Vec::new();
    for (i, part) in chunks.into_iter().enumerate() {
        let mut chunk = json!({
            "candidates": [{ "content": { "role": "model", "parts": [part] }, "index": 0 }],
            "modelVersion": answer["modelVersion"], "responseId": answer["responseId"],
        });
        if i == last {
            chunk["candidates"][0]["finishReason"] = candidate["finishReason"].clone();
            chunk["usageMetadata"] = answer["usageMetadata"].clone();
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&api_json(&chunk));
        out.extend_from_slice(b"\r\n\r\n");
    }
    let mut response = Response::new(Body::from(out));
    set_sse_headers(&mut response);
    response
}
