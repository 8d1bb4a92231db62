//! Asynchronous jobs (`Prefer: respond-async`), end to end over real
//! sockets: the in-process gateway with memory or Redis state, `sluice
//! serve` nodes sharing a real redis-server, a webhook receiver in this
//! process. Waits poll with a deadline; nothing sleeps to synchronise.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http::HeaderMap;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::support::gateway::{TestGateway, mock, providers};
use crate::support::node::Node;
use crate::support::redis::{RedisCluster, RedisServer};
use crate::support::scrape::{metrics_text, sample};

/// A `whsec_` secret (24 bytes, base64).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ADMIN: &str = "admin-token-for-jobs";

/// A webhook receiver: records every delivery, answers `status`.
#[derive(Clone)]
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    status: Arc<AtomicU16>,
}

impl Receiver {
    async fn start() -> Receiver {
        let seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>> = Arc::default();
        let status = Arc::new(AtomicU16::new(200));
        let (s, st) = (seen.clone(), status.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (s, st) = (s.clone(), st.clone());
                async move {
                    s.lock().push((headers, body));
                    http::StatusCode::from_u16(st.load(Ordering::SeqCst)).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://127.0.0.1:{}/hook", addr.port()),
            seen,
            status,
        }
    }

    /// Deliveries per `webhook-id`.
    fn by_id(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for (h, _) in self.seen.lock().iter() {
            let id = h["webhook-id"].to_str().unwrap().to_string();
            *out.entry(id).or_default() += 1;
        }
        out
    }
}

/// `[jobs]` for tests: fast retries, callbacks to 127.0.0.1 allowed; a
/// throttle that does not get in the way (`rpm` requests a minute).
fn jobs_toml_rpm(extra: &str, rpm: u32) -> String {
    format!(
        r#"
[plugins.throttle.config]
anonymous = {{ requests_per_minute = {rpm}, tokens_per_minute = 100000000 }}

[jobs]
enabled = true
concurrency = 4
visibility_timeout_ms = 2000
retry_base_ms = 50
retry_max_ms = 200
poll_ms = 50
{extra}

[jobs.webhooks]
secret = "{SECRET}"
allow = ["http://127.0.0.1:*/*"]
allow_private = true
retry_base_ms = 20
"#
    )
}

fn jobs_toml(extra: &str) -> String {
    jobs_toml_rpm(extra, 100_000)
}

fn chat(content: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]})
}

async fn submit(
    client: &reqwest::Client,
    base: &str,
    body: &Value,
    priority: Option<&str>,
) -> String {
    let mut req = client
        .post(format!("{base}/v1/chat/completions"))
        .header("prefer", "respond-async")
        .json(body);
    if let Some(p) = priority {
        req = req.header("x-sluice-priority", p);
    }
    let r = req.send().await.expect("submit");
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "queued");
    assert_eq!(v["status_url"], location.as_str());
    v["id"].as_str().unwrap().to_string()
}

async fn job(client: &reqwest::Client, base: &str, id: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = client.get(format!("{base}/v1/jobs/{id}"));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.expect("get job");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls `check` until it answers `Some`, at most `within`.
async fn until<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn until_final(client: &reqwest::Client, base: &str, id: &str, key: Option<&str>) -> Value {
    let last = Mutex::new(Value::Null);
    let what = format!("job {id} to finish");
    let waited = tokio::time::timeout(
        Duration::from_secs(30),
        until(Duration::from_secs(3600), &what, || async {
            let (code, v) = job(client, base, id, key).await;
            assert_eq!(code, 200, "{v}");
            *last.lock() = v.clone();
            let s = v["status"].as_str().unwrap_or_default().to_string();
            (s != "queued" && s != "running").then_some(v)
        }),
    )
    .await;
    waited.unwrap_or_else(|_| panic!("timed out waiting for {what}: {}", last.lock()))
}

#[tokio::test]
async fn a_job_returns_the_synchronous_answer_and_only_to_its_tenant() {
    let mock = mock();
    let config = format!(
        r#"{providers}
[[tenants]]
name = "acme"
keys = ["sk-acme"]

[[tenants]]
name = "globex"
keys = ["sk-globex"]
{jobs}"#,
        providers = providers(&mock),
        jobs = jobs_toml("")
    );
    let gw = TestGateway::start(&config).await;
    let _workers = sluice::job_runner::spawn_workers(&gw.gw).unwrap();
    let c = reqwest::Client::new();
    let base = gw.url("");

    // Unauthenticated: refused before anything is queued.
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .header("prefer", "respond-async")
        .json(&chat("hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let r = c
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-acme")
        .header("prefer", "respond-async")
        .json(&chat("hello async"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["preference-applied"], "respond-async");
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let done = until(Duration::from_secs(20), "the job", || async {
        let (_, v) = job(&c, &base, &id, Some("sk-acme")).await;
        (v["status"] == "succeeded").then_some(v)
    })
    .await;
    assert_eq!(done["attempts"], 1);
    assert!(done["finished_at_ms"].as_u64() >= done["started_at_ms"].as_u64());
    let result = &done["result"];
    assert_eq!(result["status"], 200);
    assert_eq!(result["body"]["object"], "chat.completion");
    assert!(
        result["headers"]["content-type"]
            .as_str()
            .unwrap()
            .starts_with("application/json")
    );

    // The same request answered synchronously has the same shape; the raw
    // result is the answer byte for byte.
    let sync: Value = c
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-acme")
        .json(&chat("hello async"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sync["choices"], result["body"]["choices"]);
    let raw = c
        .get(gw.url(&format!("/v1/jobs/{id}/result")))
        .bearer_auth("sk-acme")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    let raw: Value = raw.json().await.unwrap();
    assert_eq!(raw, result["body"]);

    // Another tenant, or nobody, cannot see it.
    let (code, _) = job(&c, &base, &id, Some("sk-globex")).await;
    assert_eq!(code, 404);
    let (code, _) = job(&c, &base, &id, None).await;
    assert_eq!(code, 401);
    let (code, _) = job(
        &c,
        &base,
        "job_0123456789abcdef0123456789abcdef",
        Some("sk-acme"),
    )
    .await;
    assert_eq!(code, 404);

    // A finished job cannot be cancelled.
    let r = c
        .delete(gw.url(&format!("/v1/jobs/{id}")))
        .bearer_auth("sk-acme")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);

    // A queued job can: hold the provider so the workers are busy.
    mock.pause();
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = c
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth("sk-acme")
            .header("prefer", "respond-async")
            .json(&chat(&format!("held {i}")))
            .send()
            .await
            .unwrap();
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Four run (concurrency 4), the fifth is queued.
    mock.wait_until(Duration::from_secs(10), |m| m.in_flight() == 4)
        .await;
    let mut cancelled = None;
    for id in &ids {
        let (_, v) = job(&c, &base, id, Some("sk-acme")).await;
        if v["status"] == "queued" {
            let r = c
                .delete(gw.url(&format!("/v1/jobs/{id}")))
                .bearer_auth("sk-acme")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.json::<Value>().await.unwrap()["status"], "cancelled");
            cancelled = Some(id.clone());
        }
    }
    let cancelled = cancelled.expect("one job was still queued");
    mock.resume();
    for id in &ids {
        let v = until_final(&c, &base, id, Some("sk-acme")).await;
        let want = if *id == cancelled {
            "cancelled"
        } else {
            "succeeded"
        };
        assert_eq!(v["status"], want, "{v}");
    }

    // Embeddings and Anthropic messages queue the same way.
    for (path, body) in [
        (
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": "x"}),
        ),
        (
            "/v1/messages",
            json!({"model": "claude-3-5-haiku", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
        ),
    ] {
        let r = c
            .post(gw.url(path))
            .bearer_auth("sk-acme")
            .header("prefer", "respond-async")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{path}");
        let id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let v = until_final(&c, &base, &id, Some("sk-acme")).await;
        assert_eq!(v["status"], "succeeded", "{path}: {v}");
        assert_eq!(v["result"]["status"], 200);
    }

    // Streaming cannot be queued; a bad priority is named.
    let mut streaming = chat("s");
    streaming["stream"] = json!(true);
    for (body, prio) in [(streaming, None), (chat("p"), Some("urgent"))] {
        let mut req = c
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth("sk-acme")
            .header("prefer", "respond-async")
            .json(&body);
        if let Some(p) = prio {
            req = req.header("x-sluice-priority", p);
        }
        assert_eq!(req.send().await.unwrap().status(), 400);
    }
}

#[tokio::test]
async fn under_a_backlog_higher_priorities_finish_first_and_bulk_progresses() {
    let mock = mock();
    let config = format!(
        "{}{}",
        providers(&mock),
        jobs_toml("").replace("concurrency = 4", "concurrency = 1")
    );
    let gw = TestGateway::start(&config).await;
    let _workers = sluice::job_runner::spawn_workers(&gw.gw).unwrap();
    let c = reqwest::Client::new();
    let base = gw.url("");
    // The first job holds the only worker while the backlog builds.
    mock.pause();
    let first = submit(&c, &base, &chat("first"), Some("bulk")).await;
    mock.wait_until(Duration::from_secs(10), |m| m.in_flight() == 1)
        .await;
    let mut ids: Vec<(String, &str)> = Vec::new();
    // Lowest first, so submission order works against the priorities.
    for p in ["bulk", "low", "normal", "high", "critical"] {
        for i in 0..8 {
            // The body field works like the header.
            let mut body = chat(&format!("{p} {i}"));
            body["priority"] = json!(p);
            ids.push((submit(&c, &base, &body, None).await, p));
        }
    }
    mock.resume();
    let _ = until_final(&c, &base, &first, None).await;
    let mut finished = Vec::new();
    for (id, p) in &ids {
        let v = until_final(&c, &base, id, None).await;
        assert_eq!(v["status"], "succeeded");
        assert_eq!(v["priority"], *p);
        finished.push((v["started_at_ms"].as_u64().unwrap(), *p));
    }
    finished.sort();
    let ranks = |p: &str| -> Vec<usize> {
        finished
            .iter()
            .enumerate()
            .filter(|(_, (_, q))| *q == p)
            .map(|(i, _)| i)
            .collect()
    };
    let mean = |p: &str| ranks(p).iter().sum::<usize>() as f64 / 8.0;
    let order: Vec<f64> = ["critical", "high", "normal", "low", "bulk"]
        .iter()
        .map(|p| mean(p))
        .collect();
    println!("mean start rank by priority (critical..bulk): {order:?}");
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    // Bulk is not starved: one bulk job started before the last low one.
    assert!(
        ranks("bulk")[0] < *ranks("low").last().unwrap(),
        "{finished:?}"
    );
    let text = metrics_text(gw.url("/metrics")).await;
    assert_eq!(
        sample(&text, "sluice_jobs_accepted_total{priority=\"critical\"}"),
        Some(8.0)
    );
}

#[tokio::test]
async fn a_bulk_job_waiting_past_the_aging_time_moves_up_to_critical() {
    let redis = RedisServer::start();
    let mock = mock();
    let config = format!(
        "{}{}{}",
        providers(&mock).replace("timeout_ms = 2000", "timeout_ms = 20000"),
        redis_state(Some(&redis.url()), &[]),
        jobs_toml("aging_ms = 150").replace("concurrency = 4", "concurrency = 1")
    );
    let gw = TestGateway::start(&config).await;
    let _workers = sluice::job_runner::spawn_workers(&gw.gw).unwrap();
    let c = reqwest::Client::new();
    let base = gw.url("");
    // The only worker is busy, so the bulk job waits in its queue.
    mock.pause();
    let first = submit(&c, &base, &chat("holds the worker"), Some("critical")).await;
    mock.wait_until(Duration::from_secs(10), |m| m.in_flight() == 1)
        .await;
    let id = submit(&c, &base, &chat("waits"), Some("bulk")).await;
    let len = |p: &str| match redis.cmd(&["XLEN", &format!("sluice:jobs:{{q}}:{p}")]) {
        Ok(redis::Value::Int(n)) => n,
        other => panic!("{other:?}"),
    };
    // One level per aging period: bulk, low, normal, high, then critical
    // (where the running job's entry also is).
    until(
        Duration::from_secs(20),
        "the job to reach critical",
        || async { (len("critical") == 2).then_some(()) },
    )
    .await;
    for p in ["high", "normal", "low", "bulk"] {
        assert_eq!(len(p), 0, "{p}");
    }
    assert_eq!(job(&c, &base, &id, None).await.1["status"], "queued");
    mock.resume();
    assert_eq!(
        until_final(&c, &base, &first, None).await["status"],
        "succeeded"
    );
    let v = until_final(&c, &base, &id, None).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    // It is still a bulk job (its record and metrics say so).
    assert_eq!(v["priority"], "bulk");
    let text = metrics_text(gw.url("/metrics")).await;
    assert_eq!(
        sample(&text, "sluice_jobs_wait_seconds_count{priority=\"bulk\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_job_failing_every_attempt_is_dead_lettered_and_can_be_requeued() {
    let redis = RedisServer::start();
    let mock = mock();
    let config = format!(
        r#"{providers}
[server]
admin_token = "{ADMIN}"
admin_listen = "127.0.0.1:0"

[state]
kind = "redis"
url = "{url}"
on_error = "fail-closed"
op_timeout_ms = 2000
{jobs}"#,
        providers = providers(&mock),
        url = redis.url(),
        jobs = jobs_toml("max_attempts = 2")
    );
    let gw = TestGateway::start(&config).await;
    let admin = format!("http://{}", gw.spawn_admin_listener().await);
    let _workers = sluice::job_runner::spawn_workers(&gw.gw).unwrap();
    let c = reqwest::Client::new();
    let base = gw.url("");
    mock.set_error_rate(1.0);
    let id = submit(&c, &base, &chat("doomed"), Some("high")).await;
    let v = until_final(&c, &base, &id, None).await;
    assert_eq!(v["status"], "dead", "{v}");
    assert_eq!(v["attempts"], 2);
    assert!(
        v["result"]["status"].as_u64().unwrap() >= 500,
        "the last answer is kept: {v}"
    );
    assert!(
        v["error"].as_str().unwrap().contains("failed 2 times"),
        "{v}"
    );

    let dead: Value = c
        .get(format!("{admin}/admin/jobs/dead"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = dead["data"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{dead}");
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["priority"], "high");
    // In the dead-letter stream itself.
    assert!(matches!(
        redis.cmd(&["XLEN", "sluice:jobs:{q}:dead"]),
        Ok(redis::Value::Int(1))
    ));
    // Without the token: 401.
    let r = c
        .get(format!("{admin}/admin/jobs/dead"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    mock.set_error_rate(0.0);
    let r = c
        .post(format!("{admin}/admin/jobs/dead/{id}/requeue"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = until_final(&c, &base, &id, None).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["attempts"], 1);
    let dead: Value = c
        .get(format!("{admin}/admin/jobs/dead"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dead["data"].as_array().unwrap().len(), 0);

    // Purge: another dead job goes with its record.
    mock.set_error_rate(1.0);
    let id2 = submit(&c, &base, &chat("doomed again"), None).await;
    assert_eq!(until_final(&c, &base, &id2, None).await["status"], "dead");
    let purged: Value = c
        .delete(format!("{admin}/admin/jobs/dead"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(purged["purged"], 1);
    assert_eq!(job(&c, &base, &id2, None).await.0, 404);
    let text = metrics_text(gw.url("/metrics")).await;
    assert_eq!(sample(&text, "sluice_jobs_dead_letters_total"), Some(2.0));
}

#[tokio::test]
async fn job_retries_follow_the_retry_plugin() {
    let mock = mock();
    // The retry plugin allows 2 attempts and retries only a 503; the job
    // level alone would allow 5 runs.
    let config = format!(
        r#"{providers}
[plugins.retry.config]
max_attempts = 2
base_ms = 1
max_backoff_ms = 5
retry_on = [503]
{jobs}"#,
        providers = providers(&mock),
        jobs = jobs_toml("max_attempts = 5")
    );
    let gw = TestGateway::start(&config).await;
    let _workers = sluice::job_runner::spawn_workers(&gw.gw).unwrap();
    let c = reqwest::Client::new();
    let base = gw.url("");

    // A 503 the plugin retries: two upstream attempts per run, and a second
    // run, after which the plugin (attempt 2 of 2) stops.
    mock.fail_next(100, 503, None);
    let id = submit(&c, &base, &chat("retried by the plugin"), None).await;
    let v = until_final(&c, &base, &id, None).await;
    assert_eq!(v["status"], "dead", "{v}");
    assert_eq!(v["attempts"], 2, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("failed 2 times (the retry policy stopped)"),
        "{v}"
    );
    assert_eq!(mock.total_calls(), 4);

    // A 500 is not in the plugin's `retry_on`: one attempt, one run.
    mock.reset();
    mock.set_error_rate(1.0);
    let id = submit(&c, &base, &chat("stopped by the plugin"), None).await;
    let v = until_final(&c, &base, &id, None).await;
    assert_eq!(v["status"], "dead", "{v}");
    assert_eq!(v["attempts"], 1, "{v}");
    assert_eq!(mock.total_calls(), 1);

    // Once the provider recovers, a retried job succeeds on its next run.
    mock.set_error_rate(0.0);
    mock.fail_next(2, 503, None);
    let id = submit(&c, &base, &chat("recovers"), None).await;
    let v = until_final(&c, &base, &id, None).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["attempts"], 2, "{v}");
}

#[tokio::test]
async fn a_node_killed_while_running_jobs_leaves_every_job_succeeded_once() {
    const JOBS: usize = 24;
    const PER_NODE: usize = 3;
    let redis = RedisServer::start();
    // Three `sluice serve` processes share one queue. A's provider never
    // answers (its calls hang until A dies); B's and C's answer slowly
    // enough that all three nodes hold jobs at once.
    let stuck = mock();
    stuck.pause();
    let slow = mock();
    slow.set_latency(Duration::from_millis(150));
    let hooks = Receiver::start().await;
    let config = |m: &sluice::mock::MockHandle| {
        format!(
            "{}{}{}",
            providers(m).replace("timeout_ms = 2000", "timeout_ms = 60000"),
            redis_state(Some(&redis.url()), &[]),
            jobs_toml("").replace("concurrency = 4", &format!("concurrency = {PER_NODE}"))
        )
    };
    let a = Node::start(&config(&stuck), &[]);
    let b = Node::start(&config(&slow), &[]);
    let c_node = Node::start(&config(&slow), &[]);
    let c = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..JOBS {
        let mut body = chat(&format!("survive {i}"));
        body["callback_url"] = json!(hooks.url);
        // Accepted by all three nodes in turn; any node may run any job.
        let via = [&a.url, &b.url, &c_node.url][i % 3];
        ids.push(submit(&c, via, &body, None).await);
    }
    // A holds a full share of jobs, mid-call.
    assert!(
        stuck
            .wait_until(Duration::from_secs(20), |m| m.in_flight() == PER_NODE)
            .await,
        "node A never held {PER_NODE} jobs"
    );
    let held: Vec<String> = stuck
        .requests()
        .iter()
        .map(|r| {
            let content = r.json().unwrap()["messages"][0]["content"]
                .as_str()
                .unwrap()
                .to_string();
            let i: usize = content.strip_prefix("survive ").unwrap().parse().unwrap();
            ids[i].clone()
        })
        .collect();
    assert_eq!(held.len(), PER_NODE);
    for id in &held {
        assert_eq!(job(&c, &b.url, id, None).await.1["status"], "running");
    }
    // SIGKILL (dropping a node kills it): no chance to hand anything back.
    drop(a);
    // B and C run the rest, and take A's jobs over after the visibility
    // timeout (2 s here).
    for id in &ids {
        let v = until_final(&c, &b.url, id, None).await;
        assert_eq!(v["status"], "succeeded", "{v}");
        assert_eq!(v["result"]["status"], 200, "{v}");
        let runs = if held.contains(id) { 2 } else { 1 };
        assert_eq!(v["attempts"], runs, "{v}");
    }
    // Exactly one stored result per job: the final transition was won once
    // per job, all on B and C, and no later run overwrote it.
    let mut won = 0.0;
    for node in [&b, &c_node] {
        let text = metrics_text(node.url("/metrics")).await;
        won += sample(&text, "sluice_jobs_finished_total{status=\"succeeded\"}").unwrap_or(0.0);
        assert_eq!(
            sample(&text, "sluice_jobs_duplicates_suppressed_total").unwrap_or(0.0),
            0.0
        );
    }
    assert_eq!(won, JOBS as f64);
    // One webhook per job, whatever ran twice: deliveries are counted by
    // `webhook-id` (`msg_<job id>`), and none was sent twice.
    until(Duration::from_secs(10), "every webhook", || async {
        (hooks.by_id().len() == JOBS).then_some(())
    })
    .await;
    for id in &ids {
        let v = until(Duration::from_secs(10), "webhook recorded", || async {
            let v = job(&c, &b.url, id, None).await.1;
            (v["webhook"] == "delivered").then_some(v)
        })
        .await;
        assert_eq!(v["status"], "succeeded");
    }
    let counts = hooks.by_id();
    for id in &ids {
        assert_eq!(counts.get(&format!("msg_{id}")), Some(&1), "{counts:?}");
    }
    assert_eq!(hooks.seen.lock().len(), JOBS);
    for (_, body) in hooks.seen.lock().iter() {
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["type"], "job.succeeded", "{v}");
    }
    // Nothing left pending in the group.
    let pending = redis.cmd(&["XPENDING", "sluice:jobs:{q}:normal", "workers"]);
    assert!(
        matches!(&pending, Ok(redis::Value::Array(v)) if matches!(v.first(), Some(redis::Value::Int(0)))),
        "{pending:?}"
    );
    let logs = format!("{}{}", b.log(), c_node.log());
    assert_eq!(logs.matches("took over a job").count(), PER_NODE, "{logs}");
}

#[tokio::test]
async fn webhooks_verify_with_the_standardwebhooks_package() {
    let mock = mock();
    let hooks = Receiver::start().await;
    let config = format!("{}{}", providers(&mock), jobs_toml(""));
    let gw = TestGateway::start(&config).await;
    let _workers = sluice::job_runner::spawn_workers(&gw.gw).unwrap();
    let c = reqwest::Client::new();
    let base = gw.url("");
    let mut body = chat("signed");
    body["callback_url"] = json!(hooks.url);
    let id = submit(&c, &base, &body, None).await;
    until(Duration::from_secs(20), "the webhook", || async {
        (!hooks.seen.lock().is_empty()).then_some(())
    })
    .await;
    let (headers, payload) = hooks.seen.lock()[0].clone();
    assert_eq!(headers["webhook-id"], format!("msg_{id}").as_str());
    let delivered: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(delivered["type"], "job.succeeded");
    assert_eq!(delivered["data"]["id"], id.as_str());
    assert_eq!(delivered["data"]["result"]["status"], 200);

    // The reference Python library verifies it (scripts/setup installs it).
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
d = json.load(sys.stdin)
Webhook(d["secret"]).verify(d["body"], d["headers"])
try:
    Webhook(d["secret"]).verify(d["body"] + " ", d["headers"])
    print("tampered body verified")
    sys.exit(1)
except Exception:
    print("ok")
"#;
    let input = json!({
        "secret": SECRET,
        "body": String::from_utf8(payload.to_vec()).unwrap(),
        "headers": {
            "webhook-id": headers["webhook-id"].to_str().unwrap(),
            "webhook-timestamp": headers["webhook-timestamp"].to_str().unwrap(),
            "webhook-signature": headers["webhook-signature"].to_str().unwrap(),
        },
    });
    let mut child = tokio::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/setup installs standardwebhooks)");
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "standardwebhooks refused the signature: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn an_endpoint_failing_ten_times_is_disabled_and_can_be_re_enabled() {
    let mock = mock();
    let hooks = Receiver::start().await;
    hooks.status.store(500, Ordering::SeqCst);
    let config = format!(
        "{}\n[server]\nadmin_token = \"{ADMIN}\"\nadmin_listen = \"127.0.0.1:0\"\n{}",
        providers(&mock),
        jobs_toml("").replace("retry_base_ms = 20", "retry_base_ms = 1\nattempts = 6")
    );
    let gw = TestGateway::start(&config).await;
    let admin = format!("http://{}", gw.spawn_admin_listener().await);
    let _workers = sluice::job_runner::spawn_workers(&gw.gw).unwrap();
    let c = reqwest::Client::new();
    let base = gw.url("");
    let with_hook = |s: &str| {
        let mut b = chat(s);
        b["callback_url"] = json!(hooks.url);
        b
    };
    // 6 failed deliveries for the first job, then 4 more for the second.
    let first = submit(&c, &base, &with_hook("one"), None).await;
    let v = until(
        Duration::from_secs(20),
        "the first webhook to give up",
        || async {
            let v = job(&c, &base, &first, None).await.1;
            (v["webhook"] == "failed").then_some(v)
        },
    )
    .await;
    assert_eq!(v["status"], "succeeded");
    assert_eq!(hooks.seen.lock().len(), 6);
    let second = submit(&c, &base, &with_hook("two"), None).await;
    until(
        Duration::from_secs(20),
        "the endpoint to be disabled",
        || async {
            let v = job(&c, &base, &second, None).await.1;
            (v["webhook"] == "disabled").then_some(())
        },
    )
    .await;
    assert_eq!(hooks.seen.lock().len(), 10, "exactly 10 failures in a row");
    let text = metrics_text(gw.url("/metrics")).await;
    assert_eq!(
        sample(&text, "sluice_job_webhook_endpoints_disabled_total"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "sluice_job_webhook_deliveries_total{result=\"error\"}"
        ),
        Some(10.0)
    );
    // Disabled: the next job's webhook is not even tried.
    let third = submit(&c, &base, &with_hook("three"), None).await;
    until(Duration::from_secs(20), "the third job", || async {
        let v = job(&c, &base, &third, None).await.1;
        (v["webhook"] == "disabled").then_some(())
    })
    .await;
    assert_eq!(hooks.seen.lock().len(), 10);

    // Re-enabled through the admin API, with the endpoint healthy again.
    hooks.status.store(204, Ordering::SeqCst);
    let r = c
        .post(format!("{admin}/admin/jobs/webhooks/enable"))
        .bearer_auth(ADMIN)
        .json(&json!({"url": hooks.url}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["was_disabled"], true);
    let fourth = submit(&c, &base, &with_hook("four"), None).await;
    until(Duration::from_secs(20), "the fourth webhook", || async {
        let v = job(&c, &base, &fourth, None).await.1;
        (v["webhook"] == "delivered").then_some(())
    })
    .await;
    assert_eq!(hooks.seen.lock().len(), 11);
}

#[tokio::test]
async fn callbacks_outside_the_allow_list_or_to_private_addresses_are_refused() {
    let mock = mock();
    let config = format!(
        "{}{}",
        providers(&mock),
        jobs_toml("")
            .replace("allow_private = true", "allow_private = false")
            .replace(
                r#"allow = ["http://127.0.0.1:*/*"]"#,
                r#"allow = ["http://127.0.0.1:*/*", "http://localhost:*/*", "http://?::1?:*/*", "http://169.254.169.254/*", "ftp://*"]"#
            )
    );
    let gw = TestGateway::start(&config).await;
    let c = reqwest::Client::new();
    for (url, why) in [
        ("https://evil.example.org/hook", "allow-list"),
        ("http://127.0.0.1:9/hook", "loopback"),
        ("http://localhost:9/hook", "loopback"),
        ("http://[::1]:9/hook", "loopback"),
        ("http://169.254.169.254/latest", "link-local"),
        ("ftp://files.example.com/x", "http or https"),
        ("not a url", "not a URL"),
    ] {
        let mut body = chat("cb");
        body["callback_url"] = json!(url);
        let r = c
            .post(gw.url("/v1/chat/completions"))
            .header("prefer", "respond-async")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{url}");
        let text = r.text().await.unwrap();
        assert!(text.contains("callback_url refused"), "{url}: {text}");
        assert!(text.contains(why), "{url}: {text}");
    }
    assert_eq!(mock.total_calls(), 0);
}

#[tokio::test]
async fn a_rate_limited_job_waits_for_its_bucket_instead_of_failing() {
    let mock = mock();
    // 20 a minute: a burst of 20, then one every 3 s.
    let config = format!("{}{}", providers(&mock), jobs_toml_rpm("", 20));
    let gw = TestGateway::start(&config).await;
    let _workers = sluice::job_runner::spawn_workers(&gw.gw).unwrap();
    let c = reqwest::Client::new();
    let base = gw.url("");
    // A synchronous call over the limit is refused...
    for i in 0..20 {
        let r = c
            .post(gw.url("/v1/chat/completions"))
            .json(&chat(&format!("sync {i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .json(&chat("sync over"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // ...a job waits for the bucket and then runs, no attempt spent.
    let id = submit(&c, &base, &chat("patient"), None).await;
    let v = until(Duration::from_secs(20), "the job to wait", || async {
        let v = job(&c, &base, &id, None).await.1;
        (v["error"].as_str().is_some_and(|e| e.contains("429"))).then_some(v)
    })
    .await;
    assert_eq!(v["status"], "queued", "waiting, not failed: {v}");
    let v = until_final(&c, &base, &id, None).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["attempts"], 1, "waits are not attempts: {v}");
}

/// `[state]` on one Redis or a cluster; fail-closed so a Redis problem
/// shows as an error, never as a silent local fallback.
fn redis_state(url: Option<&str>, cluster: &[String]) -> String {
    let target = match url {
        Some(u) => format!("url = \"{u}\""),
        None => format!(
            "cluster = [{}]",
            cluster
                .iter()
                .map(|u| format!("\"{u}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!(
        "[state]\nkind = \"redis\"\n{target}\non_error = \"fail-closed\"\nop_timeout_ms = 2000\n"
    )
}

#[tokio::test]
async fn a_stopping_node_hands_its_running_jobs_back() {
    const JOBS: usize = 3;
    let redis = RedisServer::start();
    let mock = mock();
    let config = format!(
        "{}\n[server]\nshutdown_grace_ms = 300\n{}{}",
        providers(&mock).replace("timeout_ms = 2000", "timeout_ms = 20000"),
        redis_state(Some(&redis.url()), &[]),
        // A long visibility timeout: only a hand-back lets B run them soon.
        jobs_toml("").replace(
            "visibility_timeout_ms = 2000",
            "visibility_timeout_ms = 600000"
        )
    );
    let c = reqwest::Client::new();
    mock.set_latency(Duration::from_secs(60));
    let a = Node::start(&config, &[]);
    let mut ids = Vec::new();
    for i in 0..JOBS {
        ids.push(submit(&c, &a.url, &chat(&format!("handed {i}")), None).await);
    }
    mock.wait_until(Duration::from_secs(20), |m| m.in_flight() == JOBS)
        .await;
    // SIGTERM: the grace period passes with the provider still stalled.
    unsafe { libc::kill(a.pid() as i32, libc::SIGTERM) };
    until(
        Duration::from_secs(20),
        "the jobs to be handed back",
        || async {
            let all = ids.iter().all(|id| {
                redis.cmd_text(&["HGET", &format!("sluice:job:{{{id}}}"), "status"]) == "queued"
            });
            all.then_some(())
        },
    )
    .await;
    mock.set_latency(Duration::ZERO);
    let b = Node::start(&config, &[]);
    for id in &ids {
        let v = until_final(&c, &b.url, id, None).await;
        assert_eq!(v["status"], "succeeded", "{v}");
        assert_eq!(v["attempts"], 1, "a hand-back is no attempt: {v}");
    }
    assert!(a.log().contains("handed back at shutdown"), "{}", a.log());
}

#[tokio::test]
async fn jobs_run_on_a_redis_cluster_with_retries_and_dead_letters() {
    let cluster = RedisCluster::start(3);
    let mock = mock();
    let config = format!(
        "{}\n[server]\nadmin_token = \"{ADMIN}\"\nadmin_listen = \"127.0.0.1:0\"\n{}{}",
        providers(&mock),
        redis_state(None, &cluster.urls()),
        jobs_toml("max_attempts = 2")
    );
    let gw = TestGateway::start(&config).await;
    let admin = format!("http://{}", gw.spawn_admin_listener().await);
    let _workers = sluice::job_runner::spawn_workers(&gw.gw).unwrap();
    let c = reqwest::Client::new();
    let base = gw.url("");
    // Every priority; the provider fails the first few calls, so some jobs
    // go through the delayed set and back.
    mock.fail_next(3, 500, None);
    let mut ids = Vec::new();
    for p in ["critical", "high", "normal", "low", "bulk"] {
        ids.push(submit(&c, &base, &chat(&format!("cluster {p}")), Some(p)).await);
    }
    for id in &ids {
        let v = until_final(&c, &base, id, None).await;
        assert_eq!(v["status"], "succeeded", "{v}");
    }
    mock.set_error_rate(1.0);
    let dead = submit(&c, &base, &chat("cluster dead"), None).await;
    assert_eq!(until_final(&c, &base, &dead, None).await["status"], "dead");
    mock.set_error_rate(0.0);
    let r = c
        .post(format!("{admin}/admin/jobs/dead/{dead}/requeue"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        until_final(&c, &base, &dead, None).await["status"],
        "succeeded"
    );
}

#[tokio::test]
async fn the_openai_sdk_batch_workflow_runs_end_to_end() {
    let mock = mock();
    let config = format!(
        "{}\n[[tenants]]\nname = \"acme\"\nkeys = [\"sk-acme\"]\n[[tenants]]\nname = \"globex\"\nkeys = [\"sk-globex\"]\n{}",
        providers(&mock),
        jobs_toml("")
    );
    let gw = TestGateway::start(&config).await;
    let _workers = sluice::job_runner::spawn_workers(&gw.gw).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/batch_sdk.py");
    let output = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new("python3")
            .arg(script)
            .env("SLUICE_URL", gw.url(""))
            .env("SLUICE_KEY", "sk-acme")
            .output(),
    )
    .await
    .expect("the batch script finishes")
    .expect("python3 runs (scripts/setup installs the SDKs)");
    assert!(
        output.status.success(),
        "the batch script failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(out["file_purpose"], "batch");
    assert_eq!(out["status"], "completed");
    assert_eq!(
        out["counts"],
        json!({"total": 4, "completed": 3, "failed": 1})
    );
    let mut ids: Vec<&str> = out["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert_eq!(l["response"]["status_code"], 200, "{l}");
            assert_eq!(l["response"]["body"]["object"], "chat.completion");
            l["custom_id"].as_str().unwrap()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["req-1", "req-2", "req-3"]);
    let errors = out["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["error"]["line"], 3);
    assert!(
        errors[0]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("line 3: not valid JSON")
    );
    // batches.list: both batches, newest first, across pages.
    let created = out["created"].as_array().unwrap();
    assert_eq!(
        out["listed"],
        json!([created[1], created[0]]),
        "{}",
        out["listed"]
    );
    // Another tenant lists none of them.
    let other: Value = reqwest::Client::new()
        .get(gw.url("/v1/batches"))
        .bearer_auth("sk-globex")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(other["data"], json!([]), "{other}");
    assert_eq!(other["has_more"], false);
    // The batch's jobs ran at bulk priority, as jobs (3 lines, twice).
    let text = metrics_text(gw.url("/metrics")).await;
    assert_eq!(
        sample(&text, "sluice_jobs_accepted_total{priority=\"bulk\"}"),
        Some(6.0)
    );
}

#[tokio::test]
async fn a_tenant_default_callback_is_used_and_redis_down_refuses_new_jobs() {
    let mut redis = RedisServer::start();
    let mock = mock();
    let hooks = Receiver::start().await;
    let config = format!(
        r#"{providers}
[[tenants]]
name = "acme"
keys = ["sk-acme"]
{state}{jobs}
[jobs.webhooks.tenant_urls]
acme = "{hook}"
"#,
        providers = providers(&mock),
        state = redis_state(Some(&redis.url()), &[]),
        jobs = jobs_toml(""),
        hook = hooks.url
    );
    let gw = TestGateway::start(&config).await;
    let _workers = sluice::job_runner::spawn_workers(&gw.gw).unwrap();
    let c = reqwest::Client::new();
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-acme")
        .header("prefer", "respond-async")
        .json(&chat("default hook"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = until_final(&c, &gw.url(""), &id, Some("sk-acme")).await;
    assert_eq!(v["callback_url"], hooks.url.as_str());
    until(Duration::from_secs(20), "the tenant's webhook", || async {
        (hooks.by_id().get(&format!("msg_{id}")) == Some(&1)).then_some(())
    })
    .await;

    // Jobs live in Redis or nowhere: with Redis gone, a new job is a 503.
    redis.kill();
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-acme")
        .header("prefer", "respond-async")
        .json(&chat("no redis"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("unavailable"));
}
