//! Coalescing across nodes, in detail: two gateways (in-process, each with
//! its own connections, caches and coalescer, like two nodes) on one real
//! Redis. The three-process version is in `multinode_redis.rs`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::gateway::{TestGateway, mock, providers};
use crate::support::redis::RedisServer;
use serde_json::{Value, json};
use sluice::mock::MockHandle;

const UPSTREAM_LATENCY: Duration = Duration::from_millis(300);

async fn node(up: &MockHandle, redis: &RedisServer) -> TestGateway {
    node_with(up, redis, "").await
}

async fn node_with(up: &MockHandle, redis: &RedisServer, extra: &str) -> TestGateway {
    TestGateway::start(&format!(
        "{}\n[state]\nkind = \"redis\"\nurl = \"{}\"\n{extra}",
        providers(up),
        redis.url()
    ))
    .await
}

/// Every command Redis receives while this lives (`redis-cli monitor`),
/// scripts' inner commands included.
struct Monitor {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Monitor {
    fn start(redis: &RedisServer) -> Self {
        let mut child = Command::new("redis-cli")
            .args(["-p", &redis.port().to_string(), "monitor"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli monitor");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        std::thread::spawn({
            let lines = lines.clone();
            move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while lines.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "MONITOR did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { child, lines }
    }

    /// How many commands seen so far contain every one of `needles`.
    fn count(&self, needles: &[&str]) -> usize {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Cached answers are `sluice:kv:{cache/<key>}`; the lock guarding the
/// filling of one is the same key with `#lock` after it.
const LOCK_KEYS: &str = "}#lock";
const CACHE_KEYS: &str = "{cache/";

fn chat(prompt: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]})
}

async fn post(gw: &TestGateway, body: &Value) -> (u16, String, Value) {
    let r = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("x-sluice-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, cache, r.json().await.unwrap_or(Value::Null))
}

/// Waits until the mock is serving `n` requests at once.
async fn until_in_flight(up: &MockHandle, n: usize) {
    assert!(
        up.wait_until(Duration::from_secs(5), |m| m.in_flight() >= n)
            .await,
        "the upstream call never started"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_on_one_node_answers_the_same_request_on_another() {
    let up = mock();
    up.set_latency(UPSTREAM_LATENCY);
    let redis = RedisServer::start();
    let (a, b) = (node(&up, &redis).await, node(&up, &redis).await);
    let monitor = Monitor::start(&redis);
    let body = chat("asked on two nodes at once");
    let first = tokio::spawn({
        let (url, body) = (a.url("/v1/chat/completions"), body.clone());
        async move { reqwest::Client::new().post(url).json(&body).send().await }
    });
    until_in_flight(&up, 1).await;
    let (status, cache, answer) = post(&b, &body).await;
    let first = first.await.expect("joined").expect("request");
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.expect("json");
    assert_eq!((status, cache.as_str()), (200, "hit"));
    assert_eq!(answer, first);
    assert_eq!(up.total_calls(), 1);
    assert_eq!(up.max_in_flight(), 1);
    assert!(
        monitor.count(&[LOCK_KEYS]) > 0,
        "the lock went through Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_cross_node_coalescing_off_no_lock_reaches_redis_and_answers_are_still_shared() {
    let up = mock();
    up.set_latency(UPSTREAM_LATENCY);
    let redis = RedisServer::start();
    let off = "[cache]\ncoalesce_across_nodes = false\n";
    let (a, b) = (
        node_with(&up, &redis, off).await,
        node_with(&up, &redis, off).await,
    );
    let monitor = Monitor::start(&redis);
    // The same request on two nodes at once: each node calls upstream.
    let body = chat("asked on two nodes, each on its own");
    let first = tokio::spawn({
        let (url, body) = (a.url("/v1/chat/completions"), body.clone());
        async move { reqwest::Client::new().post(url).json(&body).send().await }
    });
    until_in_flight(&up, 1).await;
    let (status, cache, _) = post(&b, &body).await;
    let first = first.await.expect("joined").expect("request");
    assert_eq!((first.status().as_u16(), status), (200, 200));
    assert_eq!(cache, "miss");
    assert_eq!(up.total_calls(), 2);
    assert_eq!(up.max_in_flight(), 2);
    // The shared cache tier still serves one node's answer to the other.
    let body = chat("cached on one node, served by the other");
    let (_, cache, stored) = post(&a, &body).await;
    assert_eq!(cache, "miss");
    // The answer is stored just after it is sent: wait for the third store.
    let deadline = Instant::now() + Duration::from_secs(5);
    while monitor.count(&["\"SET\"", CACHE_KEYS]) < 3 {
        assert!(Instant::now() < deadline, "the answer was never stored");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, cache, answer) = post(&b, &body).await;
    assert_eq!((status, cache.as_str()), (200, "hit"));
    assert_eq!(answer, stored);
    assert_eq!(up.total_calls(), 3);
    assert!(monitor.count(&[CACHE_KEYS]) > 0, "the shared tier was used");
    assert_eq!(
        monitor.count(&[LOCK_KEYS]),
        0,
        "no coalescing lock in Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leading_node_fails_a_waiting_node_calls_upstream_at_once() {
    let up = mock();
    up.set_latency(UPSTREAM_LATENCY);
    // The leader's call fails (400: not retried); the next one succeeds.
    up.fail_next(1, 400, None);
    let redis = RedisServer::start();
    let (a, b) = (node(&up, &redis).await, node(&up, &redis).await);
    let body = chat("the leader fails");
    let first = tokio::spawn({
        let (url, body) = (a.url("/v1/chat/completions"), body.clone());
        async move { reqwest::Client::new().post(url).json(&body).send().await }
    });
    until_in_flight(&up, 1).await;
    let started = Instant::now();
    let (status, cache, answer) = post(&b, &body).await;
    let waited = started.elapsed();
    let first = first.await.expect("joined").expect("request");
    assert_eq!(first.status(), 400);
    // b waited for a (no second call while a's was in flight), then made its
    // own call as soon as a's lock was released: about two upstream
    // latencies, far below the follower's maximum wait (60 s by default).
    assert_eq!((status, cache.as_str()), (200, "miss"), "{answer}");
    assert_eq!(up.total_calls(), 2);
    assert_eq!(up.max_in_flight(), 1);
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}
