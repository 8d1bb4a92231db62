//! Memory bounds of the caches, measured where they matter: the resident
//! memory of a `sluice serve` process (jemalloc, whose background thread
//! returns freed pages within about a second) with the mock provider
//! upstream.
//!
//! Each test warms the node up with traffic that is not cached, takes its
//! RSS then as the fixed overhead (code, plugin instances, connection
//! buffers, the allocator's working set), sends many distinct cacheable
//! requests, and checks that the RSS settles under that overhead plus the
//! configured bounds plus a slack for the allocator's page granularity and
//! fragmentation ([`SLACK`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::gateway::{mock, providers};
use crate::support::node::Node;

const MIB: u64 = 1 << 20;
/// What RSS may exceed the fixed overhead plus the bounds by.
const SLACK: u64 = 6 * MIB;
/// Requests in flight at once.
const CONCURRENCY: usize = 24;

/// The resident set of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// Waits (bounded) for `pid`'s RSS to fall to `bound` (freed pages go back
/// within about a second); returns the last reading.
async fn settled_rss(pid: u32, bound: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = rss(pid);
        if now <= bound || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The idle RSS once it stopped falling after the warm-up.
async fn steady_rss(pid: u32) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = rss(pid);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = rss(pid);
        if now >= last || Instant::now() > deadline {
            return now.min(last);
        }
        last = now;
    }
}

/// Sends `n` chat requests built by `body(i)` to `node`, `CONCURRENCY` at a
/// time over keep-alive connections, `uncached` or not; every answer must
/// be a 200.
async fn send(
    node: &Node,
    n: usize,
    uncached: bool,
    body: impl Fn(usize) -> Value + Send + Sync + 'static,
) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .expect("client");
    let url = node.url("/v1/chat/completions");
    let next = Arc::new(AtomicUsize::new(0));
    let body = Arc::new(body);
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (client, url, next, body) =
                (client.clone(), url.clone(), next.clone(), body.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let mut req = client.post(&url).bearer_auth("sk-acme").json(&body(i));
                    if uncached {
                        // Neither looked up nor stored, by either cache.
                        req = req.header("cache-control", "no-cache, no-store");
                    }
                    let resp = req.send().await.expect("request");
                    assert_eq!(resp.status(), 200, "request {i}");
                    resp.bytes().await.expect("body");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
}

async fn metrics(node: &Node) -> String {
    reqwest::get(node.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// The value of the unlabelled series `name` in `text`.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

const TENANT: &str = r#"
[[tenants]]
name = "acme"
tier = "pro"
keys = ["sk-acme"]
"#;

/// A question of about 300 bytes, different for every `i`; the mock echoes
/// it in an answer of about 600 bytes.
fn question(i: usize) -> String {
    format!(
        "question number {i}: {}",
        "tell me more about it ".repeat(13)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exact_cache_bound_holds_in_resident_memory() {
    let up = mock();
    let max_bytes = 8 * MIB;
    let config = format!(
        "{}{TENANT}\n[cache]\nmax_bytes = {max_bytes}\n",
        providers(&up)
    );
    let node = Node::start(&config, &[]);
    let chat = |i: usize| json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": question(i)}]});
    // Warm-up, not cached: connections, plugin instances, buffers.
    send(&node, 3_000, true, chat).await;
    let overhead = steady_rss(node.pid()).await;

    // Answers of ~600 bytes hold ~900 bytes each in the cache: 40,000 of
    // them are over 4 times the bound.
    let n = 40_000;
    let started = Instant::now();
    send(&node, n, false, move |i| chat(1_000_000 + i)).await;
    let took = started.elapsed();
    let bound = overhead + max_bytes + SLACK;
    let after = settled_rss(node.pid(), bound).await;
    println!(
        "exact cache: {n} answers in {took:?}; RSS {} MiB idle after warm-up, {} MiB after (bound {} MiB)",
        overhead / MIB,
        after / MIB,
        bound / MIB
    );
    let text = metrics(&node).await;
    assert!(
        text.contains(&format!(
            "sluice_cache_outcomes_total{{outcome=\"miss\"}} {n}"
        )),
        "every answer was a miss, so stored"
    );
    assert!(
        after <= bound,
        "RSS {after} over {bound} (fixed overhead {overhead} + max_bytes {max_bytes} + {SLACK})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_semantic_cache_bounds_namespaces_bytes_and_metrics() {
    let up = mock();
    let max_bytes = 8 * MIB;
    let cache_bytes = MIB;
    let config = format!(
        r#"{providers}{TENANT}
[cache]
max_bytes = {cache_bytes}

[semantic]
enabled = true
embedder = "openai"
model = "text-embedding-3-small"
dimensions = 256
max_bytes = {max_bytes}
max_namespaces = 2000
"#,
        providers = providers(&up)
    );
    let node = Node::start(&config, &[]);
    // A distinct system prompt makes a namespace of its own.
    let chat = |i: usize| {
        json!({"model": "gpt-4o-mini", "messages": [
            {"role": "system", "content": format!("You are assistant number {i}, helpful and brief.")},
            {"role": "user", "content": question(i)},
        ]})
    };
    send(&node, 2_000, true, chat).await;
    let overhead = steady_rss(node.pid()).await;

    let n = 10_000;
    let started = Instant::now();
    send(&node, n, false, move |i| chat(1_000_000 + i)).await;
    let took = started.elapsed();
    let bound = overhead + max_bytes + cache_bytes + SLACK;
    let after = settled_rss(node.pid(), bound).await;
    let text = metrics(&node).await;
    println!(
        "semantic cache: {n} namespaces in {took:?}; RSS {} MiB idle after warm-up, {} MiB after (bound {} MiB); /metrics {} bytes",
        overhead / MIB,
        after / MIB,
        bound / MIB,
        text.len()
    );
    let namespaces = gauge(&text, "sluice_semantic_index_namespaces").expect("namespaces gauge");
    let bytes = gauge(&text, "sluice_semantic_index_bytes").expect("bytes gauge");
    let entries = gauge(&text, "sluice_semantic_index_entries").expect("entries gauge");
    assert!(namespaces <= 2000.0, "{namespaces} namespaces");
    assert!(bytes <= max_bytes as f64, "{bytes} bytes counted");
    assert!(entries >= 100.0, "the index kept entries: {entries}");
    assert!(text.len() < 64 * 1024, "/metrics is {} bytes", text.len());
    assert!(
        after <= bound,
        "RSS {after} over {bound} (fixed overhead {overhead} + bounds + {SLACK})"
    );
}
