//! The upstream client against a real HTTP server on 127.0.0.1: auth the way
//! each provider expects, bodies and streams delivered as sent, timeouts,
//! connection failures, key cooldown on 429 and the circuit breaker.
//!
//! Each test starts its own tiny axum server on a port picked by the OS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use parking_lot::Mutex;
use sluice::config::{BreakerConfig, ProviderConfig, ProviderKind, Secret};
use sluice::policy::AttemptOutcome;
use sluice::upstream::{
    CircuitState, ManualClock, UPSTREAM_REQUEST_ID, UpstreamBody, UpstreamError, UpstreamRequest,
    UpstreamResponse, UpstreamSettings, Upstreams,
};
use tokio::sync::mpsc;

// === fixtures ===

/// What the server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    fn push(&self, uri: &Uri, headers: &HeaderMap, body: &Bytes) {
        self.0.lock().push(Seen {
            path: uri.path().to_owned(),
            headers: headers.clone(),
            body: body.clone(),
        });
    }

    fn all(&self) -> Vec<Seen> {
        self.0.lock().clone()
    }
}

/// Serves `router` on 127.0.0.1 (OS-picked port) until the test ends.
async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.ok();
    });
    addr
}

fn provider(name: &str, kind: ProviderKind, base_url: String, keys: &[&str]) -> ProviderConfig {
    let mut config = ProviderConfig::new(name, kind);
    config.base_url = base_url;
    config.keys = keys.iter().map(|k| Secret::new(*k)).collect();
    config.connect_timeout_ms = 2_000;
    config
}

fn request(path: &'static str, stream: bool, timeout: Duration) -> UpstreamRequest {
    UpstreamRequest {
        path: path.into(),
        body: Bytes::from_static(br#"{"model":"m","messages":[]}"#),
        stream,
        timeout,
        request_id: "req-123".to_owned(),
        tokens: 0,
    }
}

fn chat() -> UpstreamRequest {
    request("/chat/completions", false, Duration::from_secs(5))
}

fn full_body(response: UpstreamResponse) -> Bytes {
    match response.body {
        UpstreamBody::Full(bytes) => bytes,
        UpstreamBody::Stream(_) => panic!("expected a complete body"),
    }
}

/// A server that answers every request with a fixed JSON body and a few
/// headers a gateway must not pass on, recording what it saw.
async fn echo_server(log: Log) -> SocketAddr {
    let router = Router::new().fallback(
        |State(log): State<Log>, uri: Uri, headers: HeaderMap, body: Bytes| async move {
            log.push(&uri, &headers, &body);
            (
                [
                    ("content-type", "application/json"),
                    ("set-cookie", "session=secret"),
                    ("x-request-id", "upstream-42"),
                    ("openai-processing-ms", "7"),
                    ("x-ratelimit-remaining-requests", "99"),
                ],
                r#"{"id":"ok"}"#,
            )
        },
    );
    serve(router.with_state(log)).await
}

// === auth and headers ===

#[tokio::test]
async fn openai_gets_a_bearer_key_and_nothing_else_from_the_client() {
    let log = Log::default();
    let addr = echo_server(log.clone()).await;
    let config = provider(
        "openai",
        ProviderKind::Openai,
        format!("http://{addr}/v1"),
        &["sk-one"],
    );
    let upstreams = Upstreams::new(&[config]).unwrap();

    let response = upstreams.send("openai", chat()).await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.key_index, Some(0));
    // Only allowlisted headers come back; the provider's request id is renamed.
    assert_eq!(response.headers["content-type"], "application/json");
    assert_eq!(response.headers["openai-processing-ms"], "7");
    assert_eq!(response.headers[UPSTREAM_REQUEST_ID], "upstream-42");
    assert!(response.headers.get("set-cookie").is_none());
    assert!(response.headers.get("x-request-id").is_none());
    assert!(
        response
            .headers
            .get("x-ratelimit-remaining-requests")
            .is_none()
    );
    assert_eq!(full_body(response), r#"{"id":"ok"}"#);

    let seen = log.all();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(seen[0].body, r#"{"model":"m","messages":[]}"#);
    let h = &seen[0].headers;
    assert_eq!(h["authorization"], "Bearer sk-one");
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["x-request-id"], "req-123");
    assert!(h.get("x-api-key").is_none());
    assert!(h.get("anthropic-version").is_none());
    let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "accept",
            "authorization",
            "content-length",
            "content-type",
            "host",
            "user-agent",
            "x-request-id"
        ]
    );
}

#[tokio::test]
async fn anthropic_gets_x_api_key_and_version_under_v1() {
    let log = Log::default();
    let addr = echo_server(log.clone()).await;
    // Anthropic base URLs conventionally omit /v1.
    let mut config = provider(
        "claude",
        ProviderKind::Anthropic,
        format!("http://{addr}"),
        &["sk-ant-1"],
    );
    config.anthropic_version = "2023-06-01".to_owned();
    let upstreams = Upstreams::new(&[config]).unwrap();

    let response = upstreams
        .send(
            "claude",
            request("/messages", false, Duration::from_secs(5)),
        )
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK);

    let seen = log.all();
    assert_eq!(seen[0].path, "/v1/messages");
    let h = &seen[0].headers;
    assert_eq!(h["x-api-key"], "sk-ant-1");
    assert_eq!(h["anthropic-version"], "2023-06-01");
    assert!(h.get("authorization").is_none());
}

#[tokio::test]
async fn keyless_servers_get_no_auth_header() {
    let log = Log::default();
    let addr = echo_server(log.clone()).await;
    let config = provider(
        "vllm",
        ProviderKind::Openai,
        format!("http://{addr}/v1/"),
        &[],
    );
    let upstreams = Upstreams::new(&[config]).unwrap();
    let response = upstreams.send("vllm", chat()).await.unwrap();
    assert_eq!(response.key_index, None);
    let seen = log.all();
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert!(seen[0].headers.get("authorization").is_none());
}

// === failures ===

#[tokio::test]
async fn a_client_error_passes_its_body_through_unchanged() {
    const ERROR: &str = r#"{"error":{"message":"bad model","type":"invalid_request_error","param":null,"code":null}}"#;
    let router = Router::new().fallback(|| async {
        (
            StatusCode::BAD_REQUEST,
            [("content-type", "application/json"), ("set-cookie", "x=1")],
            ERROR,
        )
    });
    let addr = serve(router).await;
    let upstreams = Upstreams::new(&[provider(
        "openai",
        ProviderKind::Openai,
        format!("http://{addr}/v1"),
        &["k"],
    )])
    .unwrap();

    let failure = upstreams.send("openai", chat()).await.unwrap_err();
    assert_eq!(
        failure.outcome,
        AttemptOutcome::Status {
            code: 400,
            retry_after_ms: None
        }
    );
    assert_eq!(failure.body.as_deref(), Some(ERROR.as_bytes()));
    assert_eq!(failure.headers["content-type"], "application/json");
    assert!(failure.headers.get("set-cookie").is_none());
    // A 400 is the caller's fault: the key is fine and the circuit closed.
    let health = upstreams.health();
    assert_eq!(health[0].keys_cooling, 0);
    assert_eq!(health[0].circuit, CircuitState::Closed);
}

#[tokio::test]
async fn a_429_parses_retry_after_and_rests_that_key_until_it_passes() {
    // Key "sk-limited" is rate limited; "sk-fine" is not.
    let log = Log::default();
    let router = Router::new().fallback(
        |State(log): State<Log>, uri: Uri, headers: HeaderMap, body: Bytes| async move {
            log.push(&uri, &headers, &body);
            if headers["authorization"] == "Bearer sk-limited" {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "7")],
                    r#"{"error":{"type":"rate_limit"}}"#,
                )
                    .into_response()
            } else {
                r#"{"id":"ok"}"#.into_response()
            }
        },
    );
    let addr = serve(router.with_state(log.clone())).await;
    let clock = ManualClock::new(0);
    let settings = UpstreamSettings {
        clock: Arc::new(clock.clone()),
        ..UpstreamSettings::default()
    };
    let config = provider(
        "openai",
        ProviderKind::Openai,
        format!("http://{addr}/v1"),
        &["sk-limited", "sk-fine"],
    );
    let upstreams = Upstreams::with_settings(&[config], settings).unwrap();

    let failure = upstreams.send("openai", chat()).await.unwrap_err();
    assert_eq!(
        failure.outcome,
        AttemptOutcome::Status {
            code: 429,
            retry_after_ms: Some(7_000)
        }
    );
    assert_eq!(failure.key_index, Some(0));
    assert!(!failure.all_keys_cooling);
    assert_eq!(failure.headers["retry-after"], "7");
    assert_eq!(upstreams.health()[0].keys_cooling, 1);

    // While it rests, every attempt uses the other key.
    for _ in 0..4 {
        let response = upstreams.send("openai", chat()).await.unwrap();
        assert_eq!(response.key_index, Some(1));
    }
    // Once retry-after has passed the limited key is tried again.
    clock.advance(Duration::from_secs(7));
    assert_eq!(upstreams.health()[0].keys_cooling, 0);
    let mut used = Vec::new();
    for _ in 0..2 {
        match upstreams.send("openai", chat()).await {
            Ok(r) => used.push(r.key_index),
            Err(f) => used.push(f.key_index),
        }
    }
    assert!(used.contains(&Some(0)), "{used:?}");
}

#[tokio::test]
async fn when_every_key_rests_the_failure_says_so() {
    let router = Router::new().fallback(|| async {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after-ms", "1500")],
            "{}",
        )
    });
    let addr = serve(router).await;
    let clock = ManualClock::new(0);
    let settings = UpstreamSettings {
        clock: Arc::new(clock.clone()),
        ..UpstreamSettings::default()
    };
    let config = provider(
        "openai",
        ProviderKind::Openai,
        format!("http://{addr}/v1"),
        &["a"],
    );
    let upstreams = Upstreams::with_settings(&[config], settings).unwrap();

    let first = upstreams.send("openai", chat()).await.unwrap_err();
    assert!(!first.all_keys_cooling);
    assert_eq!(first.status(), Some(429));
    let second = upstreams.send("openai", chat()).await.unwrap_err();
    assert!(second.all_keys_cooling);
    assert_eq!(
        second.outcome,
        AttemptOutcome::Status {
            code: 429,
            retry_after_ms: Some(1_500)
        }
    );
}

#[tokio::test]
async fn an_attempt_that_outlives_its_timeout_is_a_timeout() {
    let router = Router::new().fallback(futures::future::pending::<&'static str>);
    let addr = serve(router).await;
    let upstreams = Upstreams::new(&[provider(
        "openai",
        ProviderKind::Openai,
        format!("http://{addr}/v1"),
        &["k"],
    )])
    .unwrap();

    let started = Instant::now();
    let failure = upstreams
        .send(
            "openai",
            request("/chat/completions", false, Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(failure.outcome, AttemptOutcome::Timeout);
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[tokio::test]
async fn a_stream_whose_headers_never_come_times_out() {
    let router = Router::new().fallback(futures::future::pending::<&'static str>);
    let addr = serve(router).await;
    let upstreams = Upstreams::new(&[provider(
        "openai",
        ProviderKind::Openai,
        format!("http://{addr}/v1"),
        &["k"],
    )])
    .unwrap();

    let failure = upstreams
        .send(
            "openai",
            request("/chat/completions", true, Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
    assert_eq!(failure.outcome, AttemptOutcome::Timeout);
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    // Bind then drop: nothing listens on that port any more.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let upstreams = Upstreams::new(&[provider(
        "openai",
        ProviderKind::Openai,
        format!("http://{addr}/v1"),
        &["k"],
    )])
    .unwrap();

    let failure = upstreams.send("openai", chat()).await.unwrap_err();
    let AttemptOutcome::ConnectError { message } = &failure.outcome else {
        panic!("expected a connect error, got {:?}", failure.outcome);
    };
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(
        !message.contains("127.0.0.1"),
        "the URL stays out: {message}"
    );
    assert!(failure.circuit_open.is_none());
}

#[tokio::test]
async fn an_unknown_provider_is_refused_without_a_request() {
    let upstreams = Upstreams::new(&[]).unwrap();
    let failure = upstreams.send("nope", chat()).await.unwrap_err();
    assert!(matches!(
        failure.outcome,
        AttemptOutcome::ConnectError { .. }
    ));
}

// === circuit breaker ===

#[tokio::test]
async fn repeated_5xx_open_the_circuit_which_fails_fast_then_probes() {
    let hits = Arc::new(AtomicUsize::new(0));
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let router = Router::new().fallback({
        let hits = hits.clone();
        let healthy = healthy.clone();
        move || async move {
            hits.fetch_add(1, Ordering::SeqCst);
            if healthy.load(Ordering::SeqCst) {
                (StatusCode::OK, r#"{"id":"ok"}"#)
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, r#"{"error":"down"}"#)
            }
        }
    });
    let addr = serve(router).await;
    let clock = ManualClock::new(0);
    let settings = UpstreamSettings {
        clock: Arc::new(clock.clone()),
        breaker: BreakerConfig {
            min_calls: 3,
            half_open_probes: 1,
            open_for_ms: 5_000,
            max_open_for_ms: 60_000,
            ..BreakerConfig::default()
        },
        ..UpstreamSettings::default()
    };
    let config = provider(
        "openai",
        ProviderKind::Openai,
        format!("http://{addr}/v1"),
        &["k"],
    );
    let upstreams = Upstreams::with_settings(&[config], settings).unwrap();

    for _ in 0..3 {
        let failure = upstreams.send("openai", chat()).await.unwrap_err();
        assert_eq!(failure.status(), Some(503));
        // A 5xx does not rest the key: the provider is down, not the key.
        assert_eq!(upstreams.health()[0].keys_cooling, 0);
    }
    assert_eq!(upstreams.health()[0].circuit, CircuitState::Open);

    let failure = upstreams.send("openai", chat()).await.unwrap_err();
    assert_eq!(failure.circuit_open, Some(Duration::from_secs(5)));
    let AttemptOutcome::ConnectError { message } = &failure.outcome else {
        panic!("{:?}", failure.outcome);
    };
    assert!(message.starts_with("circuit open"), "{message}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        3,
        "an open circuit sends nothing"
    );

    // After the cooldown one probe goes through; the provider is back.
    clock.advance(Duration::from_secs(5));
    assert_eq!(upstreams.health()[0].probe_in_ms, Some(0));
    healthy.store(true, Ordering::SeqCst);
    upstreams.send("openai", chat()).await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    assert_eq!(upstreams.health()[0].circuit, CircuitState::Closed);
}

#[tokio::test]
async fn connect_errors_open_the_circuit_too() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let settings = UpstreamSettings {
        clock: Arc::new(ManualClock::new(0)),
        ..UpstreamSettings::default()
    };
    let config = provider(
        "openai",
        ProviderKind::Openai,
        format!("http://{addr}/v1"),
        &[],
    );
    let upstreams = Upstreams::with_settings(&[config], settings).unwrap();
    // Defaults: 20 attempts in the window, at least 80% of them failed.
    for _ in 0..20 {
        let failure = upstreams.send("openai", chat()).await.unwrap_err();
        assert!(failure.circuit_open.is_none());
    }
    let failure = upstreams.send("openai", chat()).await.unwrap_err();
    assert!(failure.circuit_open.is_some());
    assert_eq!(upstreams.health()[0].circuit, CircuitState::Open);
}

// === streaming ===

/// A server whose single response streams whatever the test pushes into
/// the returned sender, as soon as it is pushed.
async fn streaming_server() -> (SocketAddr, mpsc::Sender<Bytes>) {
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let rx = Arc::new(Mutex::new(Some(rx)));
    let router = Router::new().fallback(move || {
        let rx = rx.lock().take();
        async move {
            let Some(rx) = rx else {
                return StatusCode::GONE.into_response();
            };
            let chunks = tokio_stream::wrappers::ReceiverStream::new(rx)
                .map(Ok::<_, std::convert::Infallible>);
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(chunks))
                .unwrap()
        }
    });
    (serve(router).await, tx)
}

#[tokio::test]
async fn a_stream_is_delivered_chunk_by_chunk_as_the_provider_sends() {
    let (addr, tx) = streaming_server().await;
    let upstreams = Upstreams::new(&[provider(
        "openai",
        ProviderKind::Openai,
        format!("http://{addr}/v1"),
        &["k"],
    )])
    .unwrap();

    let response = upstreams
        .send(
            "openai",
            request("/chat/completions", true, Duration::from_secs(5)),
        )
        .await
        .unwrap();
    assert_eq!(response.headers["content-type"], "text/event-stream");
    let UpstreamBody::Stream(mut body) = response.body else {
        panic!("expected a stream");
    };

    // Each event reaches us before the next one is even sent.
    let events = [
        "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
        "data: [DONE]\n\n",
    ];
    for event in events {
        tx.send(Bytes::from_static(event.as_bytes())).await.unwrap();
        let mut received = Vec::new();
        while received.len() < event.len() {
            let chunk = body.next().await.expect("stream ended early").unwrap();
            received.extend_from_slice(&chunk);
        }
        assert_eq!(received, event.as_bytes());
    }
    drop(tx);
    assert!(body.next().await.is_none());
}

#[tokio::test]
async fn a_stream_that_goes_quiet_ends_with_an_idle_timeout() {
    let (addr, tx) = streaming_server().await;
    let settings = UpstreamSettings {
        stream_idle_timeout: Duration::from_millis(200),
        ..UpstreamSettings::default()
    };
    let config = provider(
        "openai",
        ProviderKind::Openai,
        format!("http://{addr}/v1"),
        &["k"],
    );
    let upstreams = Upstreams::with_settings(&[config], settings).unwrap();

    let response = upstreams
        .send(
            "openai",
            request("/chat/completions", true, Duration::from_secs(5)),
        )
        .await
        .unwrap();
    let UpstreamBody::Stream(mut body) = response.body else {
        panic!("expected a stream");
    };
    tx.send(Bytes::from_static(b"data: {}\n\n")).await.unwrap();
    assert_eq!(body.next().await.unwrap().unwrap(), "data: {}\n\n");
    // The provider keeps the connection open but sends nothing more.
    let started = Instant::now();
    let err = body.next().await.unwrap().unwrap_err();
    assert_eq!(err, UpstreamError::IdleTimeout(Duration::from_millis(200)));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(body.next().await.is_none());
    drop(tx);
}

#[tokio::test]
async fn a_streaming_request_that_fails_returns_the_json_error() {
    let router = Router::new().fallback(|| async {
        (
            StatusCode::from_u16(529).unwrap(),
            [("content-type", "application/json")],
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )
    });
    let addr = serve(router).await;
    let upstreams = Upstreams::new(&[provider(
        "claude",
        ProviderKind::Anthropic,
        format!("http://{addr}"),
        &["k"],
    )])
    .unwrap();
    let failure = upstreams
        .send("claude", request("/messages", true, Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert_eq!(failure.status(), Some(529));
    let body = failure.body.unwrap();
    assert!(body.starts_with(br#"{"type":"error""#));
}
