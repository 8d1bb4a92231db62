//! Coalescing across nodes, in detail: two gateways (in-process, each with
//! its own connections, caches and coalescer, like two nodes) on one real
//! Redis. The three-process version is in `multinode_redis.rs`.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice::mock::MockHandle;
use support::gateway::{TestGateway, mock, providers};
use support::redis::RedisServer;

const UPSTREAM_LATENCY: Duration = Duration::from_millis(300);

async fn node(up: &MockHandle, redis: &RedisServer) -> TestGateway {
    TestGateway::start(&format!(
        "{}\n[state]\nkind = \"redis\"\nurl = \"{}\"\n",
        providers(up),
        redis.url()
    ))
    .await
}

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
