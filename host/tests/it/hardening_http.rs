//! The listener against hostile or careless clients over raw TCP: slow
//! heads, stalled bodies, idle keep-alive connections, too many
//! connections, oversized heads, bodies refused early (issue 12).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};
use sluice::mock::MockConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::gateway::{TestGateway, mock, providers};
use crate::support::scrape::{metrics_text, sample};

const TOKEN: &str = "admin-secret";

/// A gateway in front of `up` with `server` appended to `[server]`.
async fn gateway(up: &sluice::mock::MockHandle, server: &str) -> TestGateway {
    // Streams in these tests outlast the fixture's 2 s upstream deadline.
    let providers = providers(up).replace("timeout_ms = 2000", "timeout_ms = 30000");
    TestGateway::start(&format!("[server]\n{server}\n{providers}")).await
}

/// How a read that should end in the peer closing ended.
#[derive(Debug, PartialEq)]
enum Ending {
    /// EOF: the peer closed (its FIN).
    Closed,
    /// The peer reset the connection.
    Reset(String),
    /// Still open at the deadline.
    Open,
}

/// Reads until the peer closes or `deadline`; returns what arrived.
async fn read_to_close(stream: &mut TcpStream, deadline: Instant) -> (Vec<u8>, Ending) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (out, Ending::Open),
            Ok(Ok(0)) => return (out, Ending::Closed),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return (out, Ending::Reset(e.to_string())),
        }
    }
}

/// One HTTP/1.1 response: status and body (by `content-length`), leaving
/// the connection open.
async fn read_response(stream: &mut TcpStream, deadline: Instant) -> (u16, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().expect("content-length"))
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                let status = head[9..12].parse().expect("status");
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + length]).into_owned();
                return (status, body);
            }
        }
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(
            n > 0,
            "closed mid-response: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

/// Status and JSON body of a whole response read until the peer closed.
fn parse_closed(bytes: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    let status = head[9..12].parse().expect("status");
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, body)
}

/// Between two tries of a condition polled until a deadline.
const POLL: Duration = Duration::from_millis(50);

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: sluice\r\n\r\n";

async fn healthz(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(HEALTHZ).await.expect("write");
    let (status, body) = read_response(&mut s, Instant::now() + Duration::from_secs(5)).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    s
}

#[tokio::test]
async fn slow_heads_neither_delay_others_nor_outlive_the_header_timeout() {
    let up = mock();
    let timeout = Duration::from_millis(1500);
    let gw = gateway(&up, "header_read_timeout_ms = 1500").await;
    // The admin API on a listener of its own gets the same limits.
    let admin_addr = gw.spawn_admin_listener().await;

    let mut slow = Vec::new();
    for i in 0..500 {
        let addr = if i % 50 == 0 { admin_addr } else { gw.addr };
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: sluice\r\nContent-Le")
            .await
            .expect("write");
        slow.push((Instant::now(), s));
    }
    // A normal request on a fresh connection is served at once.
    let started = Instant::now();
    let r = reqwest::get(gw.url("/healthz")).await.expect("healthz");
    assert_eq!(r.status(), 200);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "healthz took {took:?}");

    // Each slow connection is closed at the header timeout.
    let deadline = Instant::now() + timeout + Duration::from_secs(5);
    let endings = join_all(slow.into_iter().map(|(opened, mut s)| async move {
        let (_, ending) = read_to_close(&mut s, deadline).await;
        (ending, opened.elapsed())
    }))
    .await;
    let open = endings.iter().filter(|(e, _)| *e == Ending::Open).count();
    assert_eq!(open, 0, "{open} of 500 slow connections still open");
    let earliest = endings.iter().map(|(_, t)| *t).min().expect("500");
    assert!(
        earliest >= timeout - Duration::from_millis(100),
        "closed after {earliest:?}, before the header timeout"
    );
    // /metrics counts them per listener.
    let text = metrics_text(gw.url("/metrics")).await;
    let head = |listener: &str| {
        sample(
            &text,
            &format!(
                "sluice_connection_timeouts_total{{listener=\"{listener}\",timeout=\"head\"}}"
            ),
        )
    };
    assert_eq!((head("api"), head("admin")), (Some(490.0), Some(10.0)));
}

#[tokio::test]
async fn a_stalled_body_is_cut_with_a_408_at_the_body_timeout() {
    let up = mock();
    let gw = gateway(
        &up,
        "body_read_timeout_ms = 1000\nrequest_timeout_ms = 60000",
    )
    .await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    let body = br#"{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi "#;
    assert_eq!(body.len(), 70);
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: sluice\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
    )
    .await
    .expect("head");
    s.write_all(body).await.expect("70 bytes");
    let started = Instant::now();
    let (bytes, ending) = read_to_close(&mut s, started + Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert_eq!(
        ending,
        Ending::Closed,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let (status, body) = parse_closed(&bytes);
    assert_eq!(status, 408, "{body}");
    let message = body["error"]["message"]
        .as_str()
        .expect("OpenAI error shape");
    assert!(message.contains("body_read_timeout_ms"), "{message}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "cut after {took:?}"
    );
    let text = metrics_text(gw.url("/metrics")).await;
    assert_eq!(
        sample(
            &text,
            "sluice_connection_timeouts_total{listener=\"api\",timeout=\"body\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout_and_long_streams_do_not() {
    let up = sluice::mock::spawn(MockConfig {
        chunk_delay: Duration::from_millis(500),
        ..MockConfig::default()
    });
    let idle = Duration::from_millis(2000);
    let gw = gateway(&up, "idle_timeout_ms = 2000\nheader_read_timeout_ms = 300").await;

    // Idle longer than the header timeout between two requests is fine:
    // the header timer starts with the next request's first byte.
    let mut s = healthz(gw.addr).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    s.write_all(HEALTHZ).await.expect("second request");
    let (status, _) = read_response(&mut s, Instant::now() + Duration::from_secs(5)).await;
    assert_eq!(status, 200);
    // Then, with no request in flight, it is closed at the idle timeout.
    let last = Instant::now();
    let (_, ending) = read_to_close(&mut s, last + idle + Duration::from_secs(5)).await;
    let after = last.elapsed();
    assert_eq!(ending, Ending::Closed);
    assert!(
        after >= idle - Duration::from_millis(100),
        "closed after {after:?}"
    );
    let text = metrics_text(gw.url("/metrics")).await;
    assert_eq!(
        sample(
            &text,
            "sluice_connection_timeouts_total{listener=\"api\",timeout=\"idle\"}"
        ),
        Some(1.0)
    );

    // A stream longer than the idle timeout is not cut, over HTTP/1.1 or
    // HTTP/2 (prior knowledge).
    let stream = |client: reqwest::Client, prompt: &'static str| {
        let url = gw.url("/v1/chat/completions");
        async move {
            let started = Instant::now();
            let r = client
                .post(url)
                .json(&json!({
                    "model": "gpt-4o-mini",
                    "stream": true,
                    "messages": [{"role": "user", "content": prompt}],
                }))
                .send()
                .await
                .expect("stream");
            assert_eq!(r.status(), 200);
            let version = r.version();
            let text = r.text().await.expect("the whole stream");
            assert!(
                text.trim_end().ends_with("data: [DONE]"),
                "{version:?}: {text}"
            );
            (version, started.elapsed())
        }
    };
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let (one, two) = tokio::join!(
        stream(
            reqwest::Client::new(),
            "one question long enough for many chunks"
        ),
        stream(h2, "another question long enough for many chunks"),
    );
    assert_eq!(
        (one.0, two.0),
        (reqwest::Version::HTTP_11, reqwest::Version::HTTP_2)
    );
    for (version, took) in [one, two] {
        assert!(
            took > idle + Duration::from_millis(500),
            "{version:?} streamed in {took:?}"
        );
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_at_the_write_stall_timeout() {
    let up = mock();
    let gw = gateway(&up, "write_stall_timeout_ms = 1000").await;
    // About 9 MB of embeddings: more than the socket buffers hold, so the
    // gateway's writes wait on a client that reads nothing.
    let inputs: Vec<String> = (0..120).map(|i| format!("text {i}")).collect();
    let body = serde_json::to_vec(&json!({
        "model": "text-embedding-3-small",
        "input": inputs,
        "dimensions": 4096,
    }))
    .expect("json");
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    let head = format!(
        "POST /v1/embeddings HTTP/1.1\r\nHost: sluice\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(&body).await.expect("body");
    let series = "sluice_connection_timeouts_total{listener=\"api\",timeout=\"write\"}";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = metrics_text(gw.url("/metrics")).await;
        if sample(&text, series) == Some(1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "no write stall counted");
        tokio::time::sleep(POLL).await;
    }
    // The connection is gone: what the client can still read ends before
    // the whole answer.
    let (bytes, ending) = read_to_close(&mut s, Instant::now() + Duration::from_secs(10)).await;
    assert_ne!(ending, Ending::Open);
    assert!(bytes.len() < 8_000_000, "{} bytes arrived", bytes.len());
}

#[tokio::test]
async fn past_max_connections_a_connection_gets_a_503_until_one_closes() {
    let up = mock();
    let gw = gateway(&up, "max_connections = 4").await;
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(healthz(gw.addr).await);
    }
    let addr = gw.addr;
    let refused = |request: &'static [u8]| async move {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request).await.expect("write");
        let (bytes, ending) = read_to_close(&mut s, Instant::now() + Duration::from_secs(5)).await;
        assert_eq!(
            ending,
            Ending::Closed,
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        parse_closed(&bytes)
    };
    let (status, body) = refused(b"GET /v1/models HTTP/1.1\r\nHost: sluice\r\n\r\n").await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().expect("OpenAI shape");
    assert!(message.contains("max_connections"), "{message}");
    let (status, body) =
        refused(b"POST /v1/messages HTTP/1.1\r\nHost: sluice\r\nContent-Length: 2\r\n\r\n{}").await;
    assert_eq!(status, 503);
    assert_eq!(body["type"], "error", "Anthropic shape: {body}");

    // Once one closes, a new connection is served.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = TcpStream::connect(gw.addr).await.expect("connect");
        s.write_all(HEALTHZ).await.expect("write");
        let (status, _) = read_response(&mut s, deadline).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still refused");
        tokio::time::sleep(POLL).await;
    }
    // /metrics (on a connection freed for it) counts the refusals and the
    // connections open.
    drop(open.pop());
    let text = metrics_text(gw.url("/metrics")).await;
    let refused = sample(
        &text,
        "sluice_connections_total{listener=\"api\",outcome=\"refused\"}",
    );
    assert!(refused >= Some(2.0), "{refused:?}");
    let open_now = sample(&text, "sluice_connections_open{listener=\"api\"}");
    assert!(
        open_now >= Some(3.0) && open_now <= Some(4.0),
        "{open_now:?}"
    );
}

#[tokio::test]
async fn too_many_or_too_large_headers_get_431_and_harm_nothing() {
    let up = mock();
    let gw = gateway(&up, "max_headers = 20\nmax_header_bytes = 16384").await;
    let many: String = (0..30).map(|i| format!("x-filler-{i}: {i}\r\n")).collect();
    let large = format!("x-large: {}\r\n", "a".repeat(20 << 10));
    for extra in [many, large] {
        let mut s = TcpStream::connect(gw.addr).await.expect("connect");
        let request = format!("GET /healthz HTTP/1.1\r\nHost: sluice\r\n{extra}\r\n");
        s.write_all(request.as_bytes()).await.expect("write");
        let (bytes, _) = read_to_close(&mut s, Instant::now() + Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    }
    // Within the limits, and afterwards, requests are served.
    let fine: String = (0..15).map(|i| format!("x-filler-{i}: {i}\r\n")).collect();
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    let request = format!("GET /healthz HTTP/1.1\r\nHost: sluice\r\n{fine}\r\n");
    s.write_all(request.as_bytes()).await.expect("write");
    let (status, _) = read_response(&mut s, Instant::now() + Duration::from_secs(5)).await;
    assert_eq!(status, 200);
    healthz(gw.addr).await;
}

/// Writes `body` in 64 KiB pieces; every write must succeed.
async fn write_all_of(s: &mut TcpStream, body: &[u8]) {
    for piece in body.chunks(64 << 10) {
        s.write_all(piece)
            .await
            .expect("the client may send its whole body");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_client_sending_a_body_past_the_limit_reads_the_413() {
    let up = mock();
    let gw = gateway(&up, "max_body_bytes = 65536").await;
    let body = vec![b' '; 16 << 20];

    // Announced by Content-Length (no `Expect: 100-continue`).
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: sluice\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("head");
    write_all_of(&mut s, &body).await;
    let (bytes, ending) = read_to_close(&mut s, Instant::now() + Duration::from_secs(15)).await;
    assert_eq!(ending, Ending::Closed);
    let (status, json) = parse_closed(&bytes);
    assert_eq!(status, 413, "{json}");
    assert!(json["error"]["message"].as_str().is_some(), "{json}");

    // Chunked: the limit is found while reading.
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: sluice\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .expect("head");
    let mut chunked = Vec::new();
    for piece in body.chunks(64 << 10) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    write_all_of(&mut s, &chunked).await;
    let (bytes, ending) = read_to_close(&mut s, Instant::now() + Duration::from_secs(15)).await;
    assert_eq!(ending, Ending::Closed);
    let (status, json) = parse_closed(&bytes);
    assert_eq!(status, 413, "{json}");
}

#[tokio::test]
async fn the_admin_apis_413_is_json() {
    let up = mock();
    let gw = gateway(
        &up,
        &format!("admin_token = \"{TOKEN}\"\nadmin_on_listen = true"),
    )
    .await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    let head = format!(
        "POST /admin/plugins/throttle HTTP/1.1\r\nHost: sluice\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n",
        70 << 20
    );
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(&[0u8; 4096]).await.expect("some body");
    let (bytes, ending) = read_to_close(&mut s, Instant::now() + Duration::from_secs(10)).await;
    assert_eq!(ending, Ending::Closed);
    let (status, json) = parse_closed(&bytes);
    assert_eq!(status, 413, "{json}");
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.contains("larger than the limit")),
        "{json}"
    );
}

/// `sluice serve` under `ulimit -n {nofile}` (soft and hard); killed when
/// dropped.
struct LimitedNode {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl LimitedNode {
    fn start(config: &str, nofile: u32) -> LimitedNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, config).expect("config");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -n {nofile} && exec \"$0\" serve --listen 127.0.0.1:0 --config \"$1\""
            ))
            .arg(env!("CARGO_BIN_EXE_sluice"))
            .arg(&path)
            .env(
                "SLUICE_CACHE_DIR",
                std::env::temp_dir().join("sluice-test-cache"),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sluice");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the listening line");
        let addr = line
            .trim()
            .strip_prefix("sluice listening on http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("sluice did not start: {line:?}")
            });
        LimitedNode {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for LimitedNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `/healthz` on a new connection: its status, or `None` when the
/// connection was closed unanswered. Panics when nothing happens within
/// a second.
async fn healthz_within_a_second(addr: SocketAddr) -> Option<u16> {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut s = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
        .await
        .expect("connected within a second")
        .expect("connect");
    if s.write_all(HEALTHZ).await.is_err() {
        return None;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => panic!("/healthz: no answer and no close within a second"),
            Ok(Ok(0) | Err(_)) => return None,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got[9..12]).parse().ok()
}

#[tokio::test]
async fn more_idle_connections_than_descriptors_do_not_hang_healthz() {
    let up = mock();
    // 512 descriptors: sluice serves (512 - 256) / 2 = 128 connections.
    let node = LimitedNode::start(
        &format!(
            "[server]\nheader_read_timeout_ms = 2000\n{}",
            providers(&up)
        ),
        512,
    );
    let mut idle = Vec::new();
    for _ in 0..600 {
        idle.push(TcpStream::connect(node.addr).await.expect("connect"));
    }
    // Every /healthz is answered or closed at once; once the idle
    // connections time out, it is served.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let status = healthz_within_a_second(node.addr).await;
        seen.push(status);
        if status == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "never served: {seen:?}");
        assert!(matches!(status, None | Some(503)), "{seen:?}");
        tokio::time::sleep(POLL).await;
    }
    drop(idle);
}
