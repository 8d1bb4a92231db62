//! Redis trouble under a serving gateway: killed under load, restarted,
//! paused. What clients see must be exactly what `[state] on_error` says, and
//! /readyz and /metrics must tell the operator. Real `redis-server`
//! processes killed or paused by the test; gateways in-process on
//! 127.0.0.1:0; nothing sleeps to synchronise (polls have deadlines).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::gateway::{TestGateway, mock, providers};
use crate::support::redis::RedisServer;
use serde_json::{Value, json};

const OP_TIMEOUT_MS: u64 = 50;
/// How soon a restarted Redis must be in use again.
const RECOVERY: Duration = Duration::from_secs(2);

fn config(up: &sluice::mock::MockHandle, redis: &RedisServer, on_error: &str) -> String {
    format!(
        r#"{providers}
[state]
kind = "redis"
url = "{url}"
on_error = "{on_error}"
op_timeout_ms = {OP_TIMEOUT_MS}

[anonymous]
allowed = false

[[tenants]]
name = "load"
tier = "roomy"
keys = ["sk-load"]

[[tenants]]
name = "after"
tier = "three"
keys = ["sk-after"]

[plugins.throttle.config]
tiers.roomy = {{ requests_per_minute = 1000000, tokens_per_minute = 1000000000 }}
tiers.three = {{ requests_per_minute = 3, tokens_per_minute = 1000000 }}
"#,
        providers = providers(up),
        url = redis.url(),
    )
}

fn chat(prompt: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]})
}

async fn post(gw: &TestGateway, key: &str, body: &Value) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("request");
    let cache = r
        .headers()
        .get("x-sluice-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (r.status().as_u16(), cache)
}

async fn readyz(gw: &TestGateway) -> (u16, String) {
    let r = reqwest::get(gw.url("/readyz")).await.expect("readyz");
    let code = r.status().as_u16();
    let v: Value = r.json().await.expect("json");
    (code, v["status"].as_str().unwrap_or("").to_owned())
}

/// A sample's value from the Prometheus text at /metrics.
async fn metric(gw: &TestGateway, name: &str) -> f64 {
    let text = crate::support::scrape::metrics_text(gw.url("/metrics")).await;
    crate::support::scrape::sample(&text, name).unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// Polls `/readyz` until its status is `want`; returns how long it took.
async fn until_ready_status(gw: &TestGateway, want: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (_, status) = readyz(gw).await;
        if status == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "/readyz still {status:?} (want {want:?}) after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Four clients sending unique prompts back to back until stopped, keeping
/// every status they get where the test can watch it.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<std::sync::Mutex<Vec<u16>>>,
    clients: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(gw: &Arc<TestGateway>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (gw, stop_flag, seen_by) = (gw.clone(), stop.clone(), seen.clone());
        let clients = tokio::spawn(async move {
            let clients = (0..4).map(|c| {
                let (gw, stop, seen) = (gw.clone(), stop_flag.clone(), seen_by.clone());
                async move {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let status = post(&gw, "sk-load", &chat(&format!("load {c} {i}")))
                            .await
                            .0;
                        seen.lock().expect("statuses").push(status);
                        i += 1;
                    }
                }
            });
            futures::future::join_all(clients).await;
        });
        Self {
            stop,
            seen,
            clients,
        }
    }

    /// Waits until the clients have been answered `status` at least once.
    async fn until_seen(&self, status: u16, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.seen.lock().expect("statuses").contains(&status) {
            assert!(
                Instant::now() < deadline,
                "the load was never answered {status} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the clients; every status they were answered.
    async fn finish(self) -> Vec<u16> {
        self.stop.store(true, Ordering::Relaxed);
        self.clients.await.expect("load");
        std::mem::take(&mut *self.seen.lock().expect("statuses"))
    }
}

/// After a restart: shared limits and the shared cache are in use again,
/// seen through two gateways on the same Redis.
async fn shared_state_resumes(a: &TestGateway, b: &TestGateway, redis: &RedisServer) {
    let started = Instant::now();
    until_ready_status(a, "ready", RECOVERY).await;
    until_ready_status(b, "ready", RECOVERY).await;
    // A limit of 3 a minute, spent over both gateways: the 4th is refused.
    for (i, gw) in [a, b, a].into_iter().enumerate() {
        assert_eq!(
            post(gw, "sk-after", &chat(&format!("after {i}"))).await.0,
            200
        );
    }
    assert_eq!(post(b, "sk-after", &chat("after 3")).await.0, 429);
    // An answer cached through one gateway is a hit on the other.
    let cached = || match redis.cmd(&["KEYS", "sluice:kv:{cache/*"]) {
        Ok(redis::Value::Array(keys)) => keys.len(),
        other => panic!("KEYS: {other:?}"),
    };
    let before = cached();
    let body = chat("cached after the restart");
    assert_eq!(post(a, "sk-load", &body).await, (200, "miss".to_owned()));
    // The store lands just after the answer.
    let deadline = Instant::now() + RECOVERY;
    while cached() <= before {
        assert!(Instant::now() < deadline, "the answer never reached Redis");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(post(b, "sk-load", &body).await, (200, "hit".to_owned()));
    eprintln!(
        "shared limits and cache in use {:?} after the restart",
        started.elapsed()
    );
    assert!(started.elapsed() < RECOVERY + Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_serves_everything_while_redis_is_killed_and_resumes_after_restart() {
    let up = mock();
    let mut redis = RedisServer::start();
    let a = Arc::new(TestGateway::start(&config(&up, &redis, "fail-open")).await);
    let b = TestGateway::start(&config(&up, &redis, "fail-open")).await;
    assert_eq!(readyz(&a).await, (200, "ready".to_owned()));

    let traffic = Load::start(&a);
    // Some traffic on a healthy Redis, then kill it under load.
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.total_calls() < 20 {
        assert!(Instant::now() < deadline, "no traffic");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    redis.kill();
    until_ready_status(&a, "degraded", Duration::from_secs(5)).await;
    let calls = up.total_calls();
    while up.total_calls() < calls + 20 {
        assert!(Instant::now() < deadline, "no traffic while Redis is down");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let statuses = traffic.finish().await;
    let failed: Vec<_> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(
        failed.is_empty(),
        "fail-open, yet {failed:?} of {}",
        statuses.len()
    );
    assert_eq!(readyz(&a).await, (200, "degraded".to_owned()));
    assert!(metric(&a, "sluice_state_fallbacks_total").await > 0.0);
    assert_eq!(metric(&a, "sluice_state_degraded").await, 1.0);

    redis.restart();
    shared_state_resumes(&a, &b, &redis).await;
    assert_eq!(metric(&a, "sluice_state_degraded").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_limit_checks_with_503_while_redis_is_killed() {
    let up = mock();
    let mut redis = RedisServer::start();
    let a = Arc::new(TestGateway::start(&config(&up, &redis, "fail-closed")).await);
    let b = TestGateway::start(&config(&up, &redis, "fail-closed")).await;

    let traffic = Load::start(&a);
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.total_calls() < 20 {
        assert!(Instant::now() < deadline, "no traffic");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    redis.kill();
    until_ready_status(&a, "unavailable", Duration::from_secs(5)).await;
    assert_eq!(readyz(&a).await.0, 503);
    // The node spends the leases it holds (they were taken from Redis
    // before it died), then the limit check cannot be made: refused, not
    // waved through.
    let spent_by = Instant::now() + sluice::state::LEASE_PERIOD + Duration::from_secs(1);
    let r = loop {
        let r = reqwest::Client::new()
            .post(a.url("/v1/chat/completions"))
            .bearer_auth("sk-load")
            .json(&chat("while Redis is down"))
            .send()
            .await
            .expect("request");
        if r.status() != 200 || Instant::now() > spent_by {
            break r;
        }
    };
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.expect("json");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("rate limits"),
        "{v}"
    );
    // The clients under way meet the same refusal: a request they started
    // before the leases ran out may still be answered 200, so wait for it.
    traffic.until_seen(503, Duration::from_secs(10)).await;
    let statuses = traffic.finish().await;
    let other: Vec<_> = statuses
        .iter()
        .filter(|s| **s != 200 && **s != 503)
        .collect();
    assert!(other.is_empty(), "only 200 or 503 expected: {other:?}");

    redis.restart();
    shared_state_resumes(&a, &b, &redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_adds_at_most_the_op_timeout() {
    let up = mock();
    let redis = RedisServer::start();
    let gw = TestGateway::start(&config(&up, &redis, "fail-open")).await;
    // Baseline: the slowest of a few requests on a healthy Redis.
    let mut baseline = Duration::ZERO;
    for i in 0..5 {
        let t = Instant::now();
        assert_eq!(
            post(&gw, "sk-load", &chat(&format!("before {i}"))).await.0,
            200
        );
        baseline = baseline.max(t.elapsed());
    }
    redis
        .cmd(&["CLIENT", "PAUSE", "1500", "ALL"])
        .expect("CLIENT PAUSE");
    // Slack for a busy 2-core machine on top of the one timeout a request
    // can pay: after it, the state is degraded and skips Redis.
    let bound = baseline + Duration::from_millis(OP_TIMEOUT_MS + 300);
    let mut worst = Duration::ZERO;
    for i in 0..5 {
        let t = Instant::now();
        assert_eq!(
            post(&gw, "sk-load", &chat(&format!("paused {i}"))).await.0,
            200
        );
        worst = worst.max(t.elapsed());
    }
    eprintln!("baseline {baseline:?}, worst while paused {worst:?}, bound {bound:?}");
    assert!(worst <= bound, "{worst:?} while paused (bound {bound:?})");
    assert_eq!(readyz(&gw).await.1, "degraded");
    // The pause ends by itself; the gateway uses Redis again.
    until_ready_status(&gw, "ready", Duration::from_millis(1500) + RECOVERY).await;
}
