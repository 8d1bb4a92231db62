//! The load generator against tiny in-process axum servers on 127.0.0.1:0:
//! short bounded runs whose report counts must match what was sent.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use parking_lot::Mutex;
use sluice_loadgen::{self as loadgen, BenchError, BenchOptions, Interleave, Load, Report, Target};

/// How the tiny upstream answers.
#[derive(Clone, Copy)]
enum Reply {
    Json,
    Status(StatusCode),
    /// Two SSE chunks a few milliseconds apart.
    Stream,
}

struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    prompts: Arc<Mutex<HashSet<String>>>,
    /// Requests that carried `x-bench-tag: yes`.
    tagged: Arc<AtomicU64>,
}

struct Shared {
    reply: Reply,
    hits: Arc<AtomicU64>,
    prompts: Arc<Mutex<HashSet<String>>>,
    tagged: Arc<AtomicU64>,
}

impl Upstream {
    async fn start(reply: Reply) -> Self {
        let hits = Arc::new(AtomicU64::new(0));
        let prompts = Arc::new(Mutex::new(HashSet::new()));
        let tagged = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(Shared {
            reply,
            hits: hits.clone(),
            prompts: prompts.clone(),
            tagged: tagged.clone(),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/probe", get(probe))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Without TCP_NODELAY a streamed chunk waits for the client's delayed
        // ACK (~40ms), hiding the gap the stream test looks for.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            addr,
            hits,
            prompts,
            tagged,
        }
    }

    fn target(&self, name: &str) -> Target {
        Target::new(name, format!("http://{}/v1/chat/completions", self.addr))
    }
}

/// A GET-only endpoint, like `/healthz`: a POST gets 405.
async fn probe(State(s): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    s.hits.fetch_add(1, Ordering::Relaxed);
    if body.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    }
}

async fn chat(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    s.hits.fetch_add(1, Ordering::Relaxed);
    if headers.get("x-bench-tag").is_some_and(|v| v == "yes") {
        s.tagged.fetch_add(1, Ordering::Relaxed);
    }
    if headers
        .get("authorization")
        .is_some_and(|v| v != "Bearer k1")
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Ok(req) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    // Kept with the model asked for: "model|prompt".
    if let Some(p) = req["messages"][0]["content"].as_str() {
        let model = req["model"].as_str().unwrap_or("");
        s.prompts.lock().insert(format!("{model}|{p}"));
    }
    match s.reply {
        Reply::Json => (
            [("content-type", "application/json")],
            r#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#,
        )
            .into_response(),
        Reply::Status(status) => (status, "{}").into_response(),
        Reply::Stream => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(4);
            tokio::spawn(async move {
                let _ = tx.send(Ok(Bytes::from_static(b"data: {\"choices\":[]}\n\n"))).await;
                // The gap between first and last byte the report must show.
                tokio::time::sleep(Duration::from_millis(5)).await;
                let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
            });
            (
                [("content-type", "text/event-stream")],
                Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
            )
                .into_response()
        }
    }
}

/// Runs the (blocking) generator off the test's runtime, which serves the
/// upstreams meanwhile.
async fn bench(opts: BenchOptions) -> Result<Report, BenchError> {
    tokio::task::spawn_blocking(move || loadgen::run(opts))
        .await
        .unwrap()
}

#[tokio::test]
async fn open_loop_run_reports_every_scheduled_request() {
    let (a, b) = (
        Upstream::start(Reply::Json).await,
        Upstream::start(Reply::Json).await,
    );
    let report = bench(BenchOptions {
        targets: vec![a.target("direct"), b.target("gateway")],
        load: Load::Rate(200.0),
        warmup: Duration::from_millis(100),
        duration: Some(Duration::from_millis(500)),
        interleave: Interleave::Requests,
        unique: true,
        bearer: Some("k1".into()),
        ..BenchOptions::default()
    })
    .await
    .unwrap();
    // Shown when the test fails.
    println!("{report}");

    // 0.1 s warm-up + 0.5 s at 200/s, alternating: 60 sent to each, 50 measured.
    assert_eq!(a.hits.load(Ordering::Relaxed), 60);
    assert_eq!(b.hits.load(Ordering::Relaxed), 60);
    assert_eq!(
        a.prompts.lock().len() + b.prompts.lock().len(),
        120,
        "every prompt unique"
    );
    assert_eq!(report.baseline, "direct");
    for t in &report.targets {
        assert_eq!((t.requests, t.ok), (50, 50), "{}", t.name);
        assert!(t.errors.is_empty(), "{:?}", t.errors);
        assert!(
            (t.throughput_rps - 100.0).abs() < 1e-6,
            "{}",
            t.throughput_rps
        );
        let l = t.latency.expect("latency of successful requests");
        assert!(0.0 < l.p50_us && l.p50_us <= l.p99_us && l.p99_us <= l.max_us);
        assert!(t.ttfb.is_none(), "first byte is reported for streams only");
    }
    assert_eq!(report.overhead.len(), 1);
    assert_eq!(report.overhead[0].target, "gateway");
    assert!(report.overhead[0].p50.is_some());
    assert_eq!(report.overhead[0].throughput_ratio, Some(1.0));
    assert!(report.generator.send_delay.is_some());

    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["targets"][1]["requests"], 50);
    assert_eq!(json["settings"]["mode"], "open-loop");
    let table = report.to_string();
    assert!(
        table.contains("direct (base)") && table.contains("overhead vs direct"),
        "{table}"
    );
}

/// `repeat` gives one target the same prompt every time in a run of unique
/// prompts (its hits and the others' misses in one run); a target's own
/// headers go to it alone.
#[tokio::test]
async fn repeat_headers_and_models_apply_to_their_target_only() {
    let (a, b) = (
        Upstream::start(Reply::Json).await,
        Upstream::start(Reply::Json).await,
    );
    let mut hit = a.target("hit");
    hit.repeat = true;
    let mut miss = b.target("miss");
    miss.headers.push(("x-bench-tag".into(), "yes".into()));
    miss.model = Some("claude-3-5-haiku".into());
    let report = bench(BenchOptions {
        targets: vec![hit, miss],
        load: Load::Concurrency(2),
        warmup: Duration::ZERO,
        duration: None,
        requests: Some(40),
        interleave: Interleave::Requests,
        unique: true,
        ..BenchOptions::default()
    })
    .await
    .unwrap();
    println!("{report}");
    let (a_hits, b_hits) = (
        a.hits.load(Ordering::Relaxed),
        b.hits.load(Ordering::Relaxed),
    );
    assert!(a_hits >= 20 && b_hits >= 20, "{a_hits} {b_hits}");
    assert_eq!(
        a.prompts.lock().len(),
        1,
        "the repeated target's one prompt"
    );
    assert_eq!(b.prompts.lock().len() as u64, b_hits, "every prompt unique");
    assert!(
        a.prompts
            .lock()
            .iter()
            .all(|p| p.starts_with("gpt-4o-mini|"))
            && b.prompts
                .lock()
                .iter()
                .all(|p| p.starts_with("claude-3-5-haiku|")),
        "each target's own model"
    );
    assert_eq!(a.tagged.load(Ordering::Relaxed), 0);
    assert_eq!(b.tagged.load(Ordering::Relaxed), b_hits);
}

#[tokio::test]
async fn open_loop_rounds_give_each_target_the_full_rate_in_turn() {
    let (a, b) = (
        Upstream::start(Reply::Json).await,
        Upstream::start(Reply::Json).await,
    );
    let report = bench(BenchOptions {
        targets: vec![a.target("a"), b.target("b")],
        load: Load::Rate(200.0),
        warmup: Duration::from_millis(100),
        duration: Some(Duration::from_millis(500)),
        interleave: Interleave::Rounds(Duration::from_millis(100)),
        ..BenchOptions::default()
    })
    .await
    .unwrap();
    // Shown when the test fails.
    println!("{report}");

    // Warm-up alternates (10 each), then 100ms rounds A, B, A, B, A.
    assert_eq!(a.hits.load(Ordering::Relaxed), 70);
    assert_eq!(b.hits.load(Ordering::Relaxed), 50);
    let (ra, rb) = (&report.targets[0], &report.targets[1]);
    assert_eq!((ra.requests, rb.requests), (60, 40));
    assert_eq!((ra.active_s, rb.active_s), (0.3, 0.2));
    for t in [ra, rb] {
        assert!(
            (t.throughput_rps - 200.0).abs() < 1e-6,
            "{}: {}",
            t.name,
            t.throughput_rps
        );
    }
}

#[tokio::test]
async fn closed_loop_run_counts_errors_by_status() {
    let ok = Upstream::start(Reply::Json).await;
    let failing = Upstream::start(Reply::Status(StatusCode::SERVICE_UNAVAILABLE)).await;
    let report = bench(BenchOptions {
        targets: vec![ok.target("ok"), failing.target("failing")],
        load: Load::Concurrency(4),
        warmup: Duration::ZERO,
        duration: None,
        requests: Some(40),
        interleave: Interleave::Requests,
        ..BenchOptions::default()
    })
    .await
    .unwrap();
    // Shown when the test fails.
    println!("{report}");

    let (good, bad) = (&report.targets[0], &report.targets[1]);
    // Exactly the requested count, alternating between the two.
    assert_eq!((good.requests, bad.requests), (20, 20));
    assert_eq!(ok.hits.load(Ordering::Relaxed), good.requests);
    assert_eq!(failing.hits.load(Ordering::Relaxed), bad.requests);
    assert_eq!(good.ok, good.requests);
    assert_eq!(bad.ok, 0);
    assert_eq!(bad.errors.get("503").copied(), Some(bad.requests));
    assert!(
        bad.latency.is_none(),
        "failed requests have no latency figures"
    );
    assert!(report.overhead[0].p50.is_none());
    assert!(
        report.generator.send_delay.is_none(),
        "closed loop sends on time by definition"
    );
}

#[tokio::test]
async fn streamed_responses_report_first_and_last_byte() {
    let up = Upstream::start(Reply::Stream).await;
    let report = bench(BenchOptions {
        targets: vec![up.target("stream")],
        load: Load::Rate(100.0),
        warmup: Duration::from_millis(50),
        duration: Some(Duration::from_millis(200)),
        stream: true,
        ..BenchOptions::default()
    })
    .await
    .unwrap();
    // Shown when the test fails.
    println!("{report}");

    let t = &report.targets[0];
    assert_eq!((t.requests, t.ok), (20, 20));
    assert_eq!(up.prompts.lock().len(), 1, "a fixed prompt by default");
    let (first, last) = (t.ttfb.unwrap(), t.latency.unwrap());
    assert!(
        last.p50_us >= 5000.0,
        "last byte comes after the 5ms gap: {last:?}"
    );
    // The 5ms gap separates first and last byte (a server holding chunks
    // back, e.g. Nagle's algorithm, would merge them).
    assert!(
        last.p50_us - first.p50_us >= 1000.0,
        "{first:?} vs {last:?}"
    );
    assert!(report.overhead.is_empty());
}

#[tokio::test]
async fn targets_off_this_machine_are_refused_before_sending() {
    let err = bench(BenchOptions {
        targets: vec![Target::new(
            "remote",
            "http://192.0.2.1:80/v1/chat/completions",
        )],
        ..BenchOptions::default()
    })
    .await
    .unwrap_err();
    assert!(matches!(err, BenchError::NotLoopback { .. }), "{err}");
}

#[tokio::test]
async fn get_probes_a_bodyless_endpoint() {
    let up = Upstream::start(Reply::Json).await;
    let report = bench(BenchOptions {
        targets: vec![Target::new("probe", format!("http://{}/probe", up.addr))],
        load: Load::Rate(200.0),
        warmup: Duration::ZERO,
        duration: Some(Duration::from_millis(250)),
        get: true,
        ..BenchOptions::default()
    })
    .await
    .unwrap();
    let t = &report.targets[0];
    assert_eq!((t.requests, t.ok), (50, 50), "{:?}", t.errors);
    assert_eq!(up.hits.load(Ordering::Relaxed), 50);
}
