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
//! fragmentation ([`SLACK`]). Measured on a debug build (2 busy cores): the
//! exact cache test grew RSS by 1.6 MiB with a 512 KiB bound (13.5 MiB
//! before answers owned their bodies); the semantic one by 4.7 MiB with
//! 1.25 MiB of bounds (46 MiB, and a 110 KB `/metrics`, before the index
//! was bounded).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::gateway::{mock, providers};
use crate::support::node::Node;

const MIB: u64 = 1 << 20;
/// What RSS may exceed the fixed overhead plus the bounds by: allocator
/// fragmentation and pages not yet returned, more where a request makes
/// more (and larger) allocations.
const SLACK: u64 = 4 * MIB;
const SEMANTIC_SLACK: u64 = 6 * MIB;
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
    crate::support::scrape::metrics_text(node.url("/metrics")).await
}

/// The value of the unlabelled series `name` in `text`.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// One tenant, in a tier the throttle never stops.
const TENANT: &str = r#"
[[tenants]]
name = "acme"
tier = "bulk"
keys = ["sk-acme"]

[plugins.throttle.config]
tiers.bulk = { requests_per_minute = 100000000, tokens_per_minute = 100000000000 }
"#;

/// A question of about 150 bytes, different for every `i`; the mock echoes
/// it in an answer body of about 500 bytes.
fn question(i: usize) -> String {
    format!("question number {i}: {}", "tell me more ".repeat(10))
}

/// A debug build through the whole gateway answers a few dozen requests a
/// second on a busy 2-core machine, so the counts are small and the bounds
/// too: the point is the ratio of what is inserted to the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exact_cache_bound_holds_in_resident_memory() {
    let up = mock();
    let max_bytes = 512 * 1024;
    let config = format!(
        "{}{TENANT}\n[cache]\nmax_bytes = {max_bytes}\nmax_entry_bytes = 65536\n",
        providers(&up)
    );
    let node = Node::start(&config, &[]);
    let chat = |i: usize| json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": question(i)}]});
    // Warm-up, not cached: connections, plugin instances, buffers.
    send(&node, 400, true, chat).await;
    let overhead = steady_rss(node.pid()).await;

    // Each answer holds ~800 bytes in the cache: 2,500 of them are about
    // 4 times the bound. (Before answers owned their body, each kept the
    // ~8 KiB read buffer it was sliced from alive: 20 MiB and more here.)
    let n = 2_500;
    let started = Instant::now();
    send(&node, n, false, move |i| chat(1_000_000 + i)).await;
    let took = started.elapsed();
    let bound = overhead + max_bytes + SLACK;
    let after = settled_rss(node.pid(), bound).await;
    println!(
        "exact cache: {n} answers in {took:?}; RSS {} KiB idle after warm-up, {} KiB after (bound {} KiB)",
        overhead / 1024,
        after / 1024,
        bound / 1024
    );
    let text = metrics(&node).await;
    let misses = text
        .lines()
        .find_map(|l| l.strip_prefix("sluice_cache_outcomes_total{outcome=\"miss\"} "))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    // (The last answers may go out before their outcome is counted.)
    assert!(
        misses >= n - n / 100,
        "the answers were misses, so stored: {misses}"
    );
    assert!(
        after <= bound,
        "RSS {after} over {bound} (fixed overhead {overhead} + max_bytes {max_bytes} + {SLACK})"
    );
}

/// Distinct system prompts make distinct namespaces. Counts are small for
/// the same reason as above (a semantic miss is two upstream calls); the
/// lib tests in `semantic::index` cover thousands of namespaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_semantic_cache_bounds_namespaces_bytes_and_metrics() {
    let up = mock();
    let max_bytes = MIB;
    let cache_bytes = 256 * 1024;
    let config = format!(
        r#"{providers}{TENANT}
[cache]
max_bytes = {cache_bytes}
max_entry_bytes = 65536

[semantic]
enabled = true
embedder = "openai"
model = "text-embedding-3-small"
dimensions = 1024
max_bytes = {max_bytes}
max_namespaces = 500
"#,
        providers = providers(&up)
    );
    let node = Node::start(&config, &[]);
    let chat = |i: usize| {
        json!({"model": "gpt-4o-mini", "messages": [
            {"role": "system", "content": format!("You are assistant number {i}, helpful and brief.")},
            {"role": "user", "content": question(i)},
        ]})
    };
    send(&node, 300, true, chat).await;
    let overhead = steady_rss(node.pid()).await;

    // Each namespace holds ~10 KiB (a 4 KiB vector in the mirror and in the
    // state, the answer): 1,500 of them are over 10 times the bound.
    let n = 1_500;
    let started = Instant::now();
    send(&node, n, false, move |i| chat(1_000_000 + i)).await;
    let took = started.elapsed();
    let bound = overhead + max_bytes + cache_bytes + SEMANTIC_SLACK;
    let after = settled_rss(node.pid(), bound).await;
    let text = metrics(&node).await;
    println!(
        "semantic cache: {n} namespaces in {took:?}; RSS {} KiB idle after warm-up, {} KiB after (bound {} KiB); /metrics {} bytes",
        overhead / 1024,
        after / 1024,
        bound / 1024,
        text.len()
    );
    assert!(text.len() < 32 * 1024, "/metrics is {} bytes", text.len());
    let namespaces = gauge(&text, "sluice_semantic_index_namespaces").expect("namespaces gauge");
    let bytes = gauge(&text, "sluice_semantic_index_bytes").expect("bytes gauge");
    let entries = gauge(&text, "sluice_semantic_index_entries").expect("entries gauge");
    assert!(namespaces <= 500.0, "{namespaces} namespaces");
    assert!(
        bytes <= (max_bytes - max_bytes / 8) as f64,
        "{bytes} bytes counted"
    );
    assert!(entries >= 20.0, "the index kept entries: {entries}");
    assert!(
        after <= bound,
        "RSS {after} over {bound} (fixed overhead {overhead} + bounds + {SEMANTIC_SLACK})"
    );
}
