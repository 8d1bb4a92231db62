//! Three `sluice serve` processes sharing one Redis (standalone, then a
//! 3-primary Redis Cluster) act as one gateway: one request limit, one token
//! limit, one cache, one upstream call for identical requests in flight.
//!
//! Everything runs on 127.0.0.1 on free ports: the mock provider in this test
//! process, the sluice children and the redis-servers started by the test.
//!
//! About "exactly 60 of 300": the throttle's buckets refill continuously
//! (60 a minute is one request a second), so over a burst lasting `t`
//! seconds a correct shared limiter admits between 60 and 60 + ⌊t⌋. The burst
//! below normally takes well under a second, which makes that exactly 60;
//! the assertion uses the measured duration so that a very slow machine
//! cannot make it flaky, and prints the duration. Per-node limiting would
//! admit up to 180. The throttle slot is fail-closed here, so a plugin
//! timeout under load is a 503 (which fails the test), never an uncharged
//! admission.

use std::time::{Duration, Instant};

use crate::support::gateway::{mock, providers};
use crate::support::node::Node;
use crate::support::redis::{RedisCluster, RedisServer};
use serde_json::{Value, json};
use sluice::mock::MockHandle;

const RPM_LIMIT: u64 = 60;
const TPM_LIMIT: u64 = 1_000;
/// `max_tokens` of the token-limit requests: the completion part of each
/// request's estimate.
const MAX_TOKENS: u64 = 40;

/// The Redis the fleet shares.
enum Shared {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl Shared {
    fn state_toml(&self) -> String {
        // fail-closed: a Redis problem shows as 503s (which these tests
        // refuse), never as a silent per-node fallback that would pass for
        // over-admission. A generous op timeout: a loaded 2-core machine
        // must not turn a slow answer into an error.
        let target = match self {
            Shared::Single(r) => format!("url = \"{}\"", r.url()),
            Shared::Cluster(c) => format!(
                "cluster = [{}]",
                c.urls()
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

    /// Keys matching `pattern` over every Redis node.
    fn count_keys(&mut self, pattern: &str) -> usize {
        let count = |r: &RedisServer| match r.cmd(&["KEYS", pattern]) {
            Ok(redis::Value::Array(keys)) => keys.len(),
            other => panic!("KEYS {pattern}: {other:?}"),
        };
        match self {
            Shared::Single(r) => count(r),
            Shared::Cluster(c) => (0..c.len()).map(|i| count(c.node(i))).sum(),
        }
    }
}

fn fleet_config(mock: &MockHandle, shared: &Shared) -> String {
    format!(
        r#"{providers}
{state}
[anonymous]
allowed = false

[[tenants]]
name = "rpm"
tier = "rpm60"
keys = ["sk-rpm"]

[[tenants]]
name = "tok"
tier = "tpm1k"
keys = ["sk-tok"]

[[tenants]]
name = "cache"
tier = "roomy"
keys = ["sk-cache"]

# The throttle's default slot policy is fail-open with a 20 ms deadline:
# a 300-request burst on three debug-build processes sharing two cores can
# exceed it, and each such request would be admitted uncharged (seen in
# sluice_plugin_calls_total{{slot="throttle",result="timeout"}}). That is the
# slot policy, not the shared limiter under test, so: fail-closed, roomy.
[plugins.throttle]
failure = "fail-closed"
[plugins.throttle.limits]
deadline_ms = 2000
[plugins.cache_key.limits]
deadline_ms = 2000

[plugins.throttle.config]
tiers.rpm60 = {{ requests_per_minute = {RPM_LIMIT}, tokens_per_minute = 100000000 }}
tiers.tpm1k = {{ requests_per_minute = 100000, tokens_per_minute = {TPM_LIMIT} }}
tiers.roomy = {{ requests_per_minute = 100000, tokens_per_minute = 100000000 }}
"#,
        providers = providers(mock),
        state = shared.state_toml(),
    )
}

/// Starts three nodes at once (each start compiles nothing new: the plugin
/// code cache is shared, but process start-up still takes a moment).
fn start_fleet(config: &str) -> Vec<Node> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| Node::start(config, &[])))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("node started"))
            .collect()
    })
}

fn chat(prompt: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]})
}

async fn post(
    client: &reqwest::Client,
    node: &Node,
    key: &str,
    body: &Value,
) -> (u16, String, Value) {
    let r = client
        .post(node.url("/v1/chat/completions"))
        .bearer_auth(key)
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
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, cache, body)
}

/// 300 requests of a tenant limited to 60 a minute, spread evenly over the
/// nodes, all in flight at once.
async fn requests_per_minute_hold_across_nodes(client: &reqwest::Client, nodes: &[Node]) {
    let started = Instant::now();
    let calls = (0..300).map(|i| {
        let node = &nodes[i % nodes.len()];
        async move { post(client, node, "sk-rpm", &chat(&format!("rpm {i}"))).await }
    });
    let results = futures::future::join_all(calls).await;
    let elapsed = started.elapsed();
    let admitted = results.iter().filter(|r| r.0 == 200).count() as u64;
    let refused = results.iter().filter(|r| r.0 == 429).count() as u64;
    let other: Vec<_> = results
        .iter()
        .filter(|r| r.0 != 200 && r.0 != 429)
        .collect();
    assert!(other.is_empty(), "unexpected answers: {other:?}");
    // One request refills per second of burst (see the module docs).
    let refilled = elapsed.as_secs();
    eprintln!("rpm: {admitted} admitted, {refused} refused in {elapsed:?}");
    assert!(
        (RPM_LIMIT..=RPM_LIMIT + refilled).contains(&admitted),
        "{admitted} admitted of 300 with a limit of {RPM_LIMIT}/min over a {elapsed:?} burst"
    );
    assert_eq!(admitted + refused, 300);
}

/// Waves of requests with `max_tokens` against a 1,000 tokens/minute limit:
/// the tokens the provider actually reports for admitted requests stay
/// within the limit, plus what refilled during the run, plus one request's
/// estimate error.
async fn tokens_per_minute_hold_across_nodes(client: &reqwest::Client, nodes: &[Node]) {
    let started = Instant::now();
    let (mut used, mut admitted, mut refused, mut worst_error) = (0u64, 0u64, 0u64, 0u64);
    for wave in 0..10 {
        let calls = (0..30).map(|i| {
            let node = &nodes[i % nodes.len()];
            let mut body = chat(&format!("tokens {wave} {i}"));
            body["max_tokens"] = json!(MAX_TOKENS);
            async move { post(client, node, "sk-tok", &body).await }
        });
        for (status, _, body) in futures::future::join_all(calls).await {
            match status {
                200 => {
                    let usage = &body["usage"];
                    let total = usage["total_tokens"].as_u64().expect("usage");
                    let completion = usage["completion_tokens"].as_u64().expect("usage");
                    // Estimate = prompt estimate (the mock reports exactly
                    // that as prompt tokens) + max_tokens.
                    worst_error = worst_error.max(MAX_TOKENS.abs_diff(completion));
                    used += total;
                    admitted += 1;
                }
                429 => refused += 1,
                other => panic!("unexpected status {other}: {body}"),
            }
        }
    }
    let elapsed = started.elapsed();
    let refilled = TPM_LIMIT * elapsed.as_millis() as u64 / 60_000;
    let bound = TPM_LIMIT + refilled + worst_error;
    eprintln!(
        "tpm: {admitted} admitted, {refused} refused, {used} tokens used (bound {bound}) in {elapsed:?}"
    );
    assert!(
        used <= bound,
        "{used} tokens used with a limit of {TPM_LIMIT}/min (+{refilled} refilled, +{worst_error} estimate error)"
    );
    assert!(refused > 0, "the token limit never bound");
    // Settling refunds unused max_tokens, so the limit is actually used up,
    // not just reserved (each request reserves about twice what it uses).
    assert!(
        used > TPM_LIMIT / 2,
        "only {used} tokens used: unused reservations were not refunded"
    );
}

/// An answer cached through node A is a hit on node B.
async fn cache_is_shared_across_nodes(
    client: &reqwest::Client,
    nodes: &[Node],
    shared: &mut Shared,
    mock: &MockHandle,
) {
    const CACHED: &str = "sluice:kv:{cache/*";
    let before = shared.count_keys(CACHED);
    let calls = mock.total_calls();
    let body = chat("cached once, served everywhere");
    let (status, cache, first) = post(client, &nodes[0], "sk-cache", &body).await;
    assert_eq!((status, cache.as_str()), (200, "miss"));
    // The shared store is written just after the answer: wait for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while shared.count_keys(CACHED) <= before {
        assert!(Instant::now() < deadline, "the answer never reached Redis");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for node in &nodes[1..] {
        let (status, cache, again) = post(client, node, "sk-cache", &body).await;
        assert_eq!((status, cache.as_str()), (200, "hit"), "on {}", node.url);
        assert_eq!(again, first);
    }
    assert_eq!(mock.total_calls() - calls, 1);
}

/// Identical cacheable requests in flight on every node: one upstream call.
async fn identical_requests_coalesce_across_nodes(
    client: &reqwest::Client,
    nodes: &[Node],
    mock: &MockHandle,
) {
    mock.set_latency(Duration::from_millis(300));
    let calls = mock.total_calls();
    let body = chat("a thundering herd over three nodes");
    let requests = (0..9).map(|i| post(client, &nodes[i % nodes.len()], "sk-cache", &body));
    let results = futures::future::join_all(requests).await;
    mock.set_latency(Duration::ZERO);
    for (status, cache, answer) in &results {
        assert_eq!(*status, 200, "{answer}");
        assert!(cache == "miss" || cache == "hit", "{cache}");
        assert_eq!(answer, &results[0].2);
    }
    assert_eq!(
        mock.total_calls() - calls,
        1,
        "9 identical requests over 3 nodes"
    );
}

async fn fleet_acts_as_one_gateway(mut shared: Shared) {
    let up = mock();
    let nodes = start_fleet(&fleet_config(&up, &shared));
    let client = reqwest::Client::new();
    cache_is_shared_across_nodes(&client, &nodes, &mut shared, &up).await;
    identical_requests_coalesce_across_nodes(&client, &nodes, &up).await;
    requests_per_minute_hold_across_nodes(&client, &nodes).await;
    tokens_per_minute_hold_across_nodes(&client, &nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_one_redis_act_as_one_gateway() {
    fleet_acts_as_one_gateway(Shared::Single(RedisServer::start())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_a_redis_cluster_act_as_one_gateway() {
    fleet_acts_as_one_gateway(Shared::Cluster(RedisCluster::start(3))).await;
}
