//! A plugin that runs to its deadline does not stall the gateway (issue 12,
//! item 5): guest code gives its worker thread up at every epoch tick, and
//! at most one slow call per worker runs at a time, so other tasks wait a
//! tick at most; the looping calls still end at their deadline, with the
//! slot's failure policy.
//!
//! Two views: on one thread, measured in that thread's CPU time, which a
//! busy machine cannot blur; and end to end, `/healthz` latency of a
//! `sluice serve` child on two worker threads (as on the 2-core machines it
//! runs on) while eight clients keep a looping throttle busy, which is what
//! the issue measured. Both builds of the hostile fixture loop: the one
//! importing nothing that may wait and the WASI one (see `plugin_sandbox`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use sluice::mock::MockHandle;
use sluice::plugin::{CallError, EngineSettings, Limits, LoadOptions, PluginRuntime};
use sluice::policy::{PolicyRequest, Slot};
use sluice::state::State;

use crate::support::gateway::{mock, providers};
use crate::support::node::Node;

/// Clients keeping the looping plugin busy, as in the issue.
const CLIENTS: usize = 8;
/// How long they keep it busy.
const LOAD: Duration = Duration::from_secs(3);
/// The throttle's deadline.
const DEADLINE: Duration = Duration::from_millis(50);
/// The bar for `/healthz` p99 while the plugin loops: the 10 ms with
/// a margin for a debug build on a shared machine (this debug build gave
/// 7 to 10 ms with the machine's other load deprioritised; calls that held
/// their worker gave 310 ms, and 170 ms at p50). Like any latency figure it
/// needs a machine that is not oversubscribed; the one-thread test does not.
const HEALTHZ_P99: Duration = Duration::from_millis(25);

/// The two builds of the hostile fixture: importing nothing that may wait,
/// and importing WASI and state.
const BUILDS: [&str; 2] = ["sluice_plugin_hostile_fiberless", "sluice_plugin_hostile"];

fn fixture(build: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("SLUICE_TEST_PLUGINS_DIR")).join(format!("{build}.wasm"))
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// On one thread (a current-thread runtime), looping calls take turns with a
/// task woken every millisecond: between two of its turns the thread spends
/// little CPU time, where a call that held the thread would spend its whole
/// deadline. CPU time, not wall time, so a busy machine cannot blur it. Each
/// call still runs for its deadline and fails as a deadline.
#[tokio::test]
async fn looping_calls_hold_the_thread_a_tick_at_a_time() {
    for build in BUILDS {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = EngineSettings {
            cache_dir: Some(dir.path().to_path_buf()),
            ..EngineSettings::default()
        };
        let rt = PluginRuntime::new(settings, State::memory(), None).expect("runtime");
        let wasm = std::fs::read(fixture(build)).expect("fixture");
        let opts = LoadOptions {
            slot: Slot::Throttle,
            require: vec![Slot::Throttle],
            config: json!({ "mode": "loop" }),
            limits: Limits {
                deadline: DEADLINE,
                ..Limits::default()
            },
            preinit: true,
        };
        let plugin = rt.load(&wasm, opts).await.expect("loads");

        let running = Arc::new(AtomicBool::new(true));
        let heartbeat = {
            let running = running.clone();
            tokio::spawn(async move {
                let mut pace = tokio::time::interval(Duration::from_millis(1));
                let mut last = thread_cpu();
                let mut longest = Duration::ZERO;
                while running.load(Ordering::Relaxed) {
                    pace.tick().await;
                    let now = thread_cpu();
                    longest = longest.max(now - last);
                    last = now;
                }
                longest
            })
        };
        let calls: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let plugin = plugin.clone();
                tokio::spawn(async move {
                    let req = PolicyRequest {
                        id: format!("r{i}"),
                        model: "gpt-4o-mini".into(),
                        tenant: "acme".into(),
                        ..PolicyRequest::default()
                    };
                    let started = Instant::now();
                    let result = plugin.throttle_admit(&req).await;
                    (result, started.elapsed())
                })
            })
            .collect();
        for call in calls {
            let (result, took) = call.await.expect("call task");
            assert!(
                matches!(result, Err(CallError::Deadline(_))),
                "{build}: {result:?}"
            );
            assert!(took >= DEADLINE, "{build}: ended after {took:?}");
        }
        running.store(false, Ordering::Relaxed);
        let longest = heartbeat.await.expect("heartbeat");
        eprintln!("{build}: the thread ran at most {longest:?} of CPU between heartbeats");
        assert!(
            longest < DEADLINE / 2,
            "{build}: {longest:?} of CPU between two heartbeats; the deadline is {DEADLINE:?}"
        );
    }
}

fn config(up: &MockHandle, build: &str) -> String {
    let path = fixture(build);
    format!(
        "{providers}\n[plugins.throttle]\nsource = \"{path}\"\nfailure = \"fail-closed\"\n\
         [plugins.throttle.limits]\ndeadline_ms = {deadline}\n\
         [plugins.throttle.config]\nmode = \"loop\"\n",
        providers = providers(up),
        path = path.display(),
        deadline = DEADLINE.as_millis(),
    )
}

/// One chat request: its status and how long it took.
async fn chat(client: &reqwest::Client, url: &str) -> (u16, Duration) {
    let started = Instant::now();
    let r = client
        .post(url)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("chat");
    let status = r.status().as_u16();
    r.bytes().await.expect("body");
    (status, started.elapsed())
}

/// The `q` quantile of `samples` (sorted in place).
fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    let rank = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

/// Sum of the `sluice_plugin_calls_total` series of the throttle slot with
/// `result`.
async fn throttle_calls(node: &Node, result: &str) -> u64 {
    let text = crate::support::scrape::metrics_text(node.url("/metrics")).await;
    text.lines()
        .filter(|l| {
            l.starts_with("sluice_plugin_calls_total")
                && l.contains("slot=\"throttle\"")
                && l.contains(&format!("result=\"{result}\""))
        })
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("metric line {l:?}")) as u64
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_looping_to_its_deadline_leaves_healthz_fast() {
    let up = mock();
    for build in BUILDS {
        loop_under_load(&up, build).await;
    }
}

async fn loop_under_load(up: &MockHandle, build: &str) {
    let node = Node::start(&config(up, build), &[("TOKIO_WORKER_THREADS", "2")]);
    let chat_url = node.url("/v1/chat/completions");
    let healthz_url = node.url("/healthz");

    // Alone, a call runs to its deadline and fails closed.
    let client = reqwest::Client::new();
    let (status, took) = chat(&client, &chat_url).await;
    assert_eq!(status, 503, "{build}: a looping throttle fails closed");
    assert!(
        took >= DEADLINE && took < Duration::from_secs(2),
        "{build}: the call took {took:?}; the deadline is {DEADLINE:?}"
    );

    let running = Arc::new(AtomicBool::new(true));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let running = running.clone();
            let url = chat_url.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut seen = Vec::new();
                while running.load(Ordering::Relaxed) {
                    seen.push(chat(&client, &url).await);
                }
                seen
            })
        })
        .collect();

    // Probe /healthz on one kept-alive connection every few milliseconds
    // while the clients keep the plugin looping.
    let prober = reqwest::Client::new();
    let mut healthz = Vec::new();
    let mut pace = tokio::time::interval(Duration::from_millis(5));
    let started = Instant::now();
    while started.elapsed() < LOAD {
        pace.tick().await;
        let t = Instant::now();
        let r = prober.get(&healthz_url).send().await.expect("healthz");
        assert_eq!(r.status(), 200, "{build}: /healthz");
        r.bytes().await.expect("body");
        healthz.push(t.elapsed());
    }
    running.store(false, Ordering::Relaxed);
    let mut chats = Vec::new();
    for c in clients {
        chats.extend(c.await.expect("client task"));
    }

    // Every looping call ended at its deadline: fail-closed, not before the
    // deadline, not long after it, and counted as a timeout.
    assert!(chats.len() >= CLIENTS, "{build}: {} requests", chats.len());
    for (status, took) in &chats {
        assert_eq!(*status, 503, "{build}: a looping throttle fails closed");
        assert!(
            *took >= DEADLINE && *took < Duration::from_secs(2),
            "{build}: a request took {took:?} under load; the deadline is {DEADLINE:?}"
        );
    }
    let timeouts = throttle_calls(&node, "timeout").await;
    assert_eq!(
        timeouts,
        chats.len() as u64 + 1,
        "{build}: every throttle call ends as a timeout"
    );
    assert_eq!(throttle_calls(&node, "ok").await, 0, "{build}");

    let samples = healthz.len();
    let p50 = quantile(&mut healthz, 0.5);
    let p99 = quantile(&mut healthz, 0.99);
    let rate = chats.len() as f64 / LOAD.as_secs_f64();
    eprintln!(
        "{build}: /healthz p50 {p50:?} p99 {p99:?} over {samples} probes; \
         {} looping requests ({rate:.0}/s)",
        chats.len()
    );
    assert!(samples >= 100, "{build}: only {samples} probes");
    assert!(
        p99 < HEALTHZ_P99,
        "{build}: /healthz p99 {p99:?} (p50 {p50:?}) while a plugin loops; the bar is {HEALTHZ_P99:?}"
    );
}
