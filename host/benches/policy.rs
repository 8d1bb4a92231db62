//! The cost of policy decisions: each reference plugin alone, and the four
//! together as one request pays for them (fresh instances every call), both
//! from the snapshot taken after `init` and with `init` on every instance;
//! and
//! the semantic plugin's `accept` with its structural guards on and off,
//! for a short prompt and a long one (the guards' cost inside Wasm).
//!
//! `cargo bench -p sluice --bench policy`
//!
//! Times are the benchmark thread's CPU time (CLOCK_THREAD_CPUTIME_ID), not
//! wall time: everything runs on that thread (a current-thread runtime; guest
//! code on fibers of the same thread), and on a shared 2-core machine wall
//! time mostly measures the neighbours. `--wall` style figures are in the
//! criterion history for comparison only.

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use sluice::plugin::{EngineSettings, LoadOptions, Plugin, PluginRuntime};
use sluice::policy::Slot;
use sluice::policy::{
    Attempt, AttemptOutcome, Message, Param, PolicyRequest, Route, SemanticCandidate, Usage,
};
use sluice::state::State;
use std::sync::Arc;
use std::time::Duration;

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

/// Runs `f` `iters` times on `rt` and returns the thread CPU time it took.
fn cpu_time<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, f: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    rt.block_on(async {
        let start = thread_cpu();
        for _ in 0..iters {
            f().await;
        }
        thread_cpu() - start
    })
}

fn request() -> PolicyRequest {
    let msg = |role: &str, text: &str| Message {
        role: role.into(),
        text: text.into(),
        has_tool_calls: false,
        extra_json: None,
    };
    PolicyRequest {
        id: "bench".into(),
        route: Route::Chat,
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        streaming: false,
        max_tokens: Some(256),
        estimated_prompt_tokens: 60,
        temperature: Some(0.2),
        messages: vec![
            msg(
                "system",
                "You are a concise assistant for a travel company.",
            ),
            msg("user", "What is the capital of Portugal?"),
            msg("assistant", "Lisbon."),
            msg("user", "And how many people live there, roughly, in 2024?"),
        ],
        params: vec![Param {
            name: "temperature".into(),
            json: "0.2".into(),
        }],
        tenant: "acme".into(),
        tier: "pro".into(),
        key_id: Some("vk_0123456789abcdef".into()),
        client_ip: "127.0.0.1".into(),
        headers: vec![("user-agent".into(), "bench/1.0".into())],
    }
}

struct Set {
    throttle: Arc<Plugin>,
    cache_key: Arc<Plugin>,
    semantic: Arc<Plugin>,
    retry: Arc<Plugin>,
}

/// The four reference plugins with empty configs; `preinit` false keeps
/// `init` on every instance, as before pre-initialisation.
async fn load_set(runtime: &PluginRuntime, preinit: bool) -> Set {
    let load = |kind| load_opts(runtime, kind, json!({}), preinit);
    Set {
        throttle: load(Slot::Throttle).await,
        cache_key: load(Slot::CacheKey).await,
        semantic: load(Slot::Semantic).await,
        retry: load(Slot::Retry).await,
    }
}

async fn load_with(runtime: &PluginRuntime, kind: Slot, config: serde_json::Value) -> Arc<Plugin> {
    load_opts(runtime, kind, config, true).await
}

async fn load_opts(
    runtime: &PluginRuntime,
    kind: Slot,
    config: serde_json::Value,
    preinit: bool,
) -> Arc<Plugin> {
    let wasm = sluice::plugin::builtin::builtin(kind).expect("builtin plugin");
    let mut opts = LoadOptions::new(kind);
    opts.require = vec![kind];
    opts.config = config;
    opts.preinit = preinit;
    // Generous: a benchmark on a shared machine must not trip the deadline
    // when the scheduler parks it; it measures cost, not limits.
    opts.limits.deadline = Duration::from_secs(1);
    let plugin = runtime.load(wasm, opts).await.expect("loads");
    // Calls as they run once the snapshot after `init` is linked.
    plugin.preinitialised().await;
    plugin
}

fn policy(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let runtime = rt.block_on(async {
        PluginRuntime::new(
            EngineSettings {
                cache_dir: None,
                ..EngineSettings::default()
            },
            State::memory(),
            None,
        )
        .expect("runtime")
    });
    let set = rt.block_on(load_set(&runtime, true));
    let per_instance = rt.block_on(load_set(&runtime, false));
    let req = request();
    let attempt = Attempt {
        number: 1,
        elapsed_ms: 120,
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        outcome: AttemptOutcome::Status {
            code: 503,
            retry_after_ms: None,
        },
    };
    let usage = Usage {
        prompt_tokens: 58,
        completion_tokens: 40,
        estimated_prompt_tokens: 60,
        cached: false,
    };

    let mut g = c.benchmark_group("policy");
    g.bench_function("throttle.admit", |b| {
        b.iter_custom(|iters| {
            cpu_time(&rt, iters, || async {
                set.throttle.throttle_admit(&req).await.expect("admit");
            })
        })
    });
    g.bench_function("throttle.settle", |b| {
        b.iter_custom(|iters| {
            cpu_time(&rt, iters, || async {
                set.throttle
                    .throttle_settle(&req, &usage)
                    .await
                    .expect("settle");
            })
        })
    });
    g.bench_function("cache-key.derive", |b| {
        b.iter_custom(|iters| {
            cpu_time(&rt, iters, || async {
                set.cache_key.derive_cache_key(&req).await.expect("derive");
            })
        })
    });
    g.bench_function("semantic.prepare", |b| {
        b.iter_custom(|iters| {
            cpu_time(&rt, iters, || async {
                set.semantic.semantic_prepare(&req).await.expect("prepare");
            })
        })
    });
    g.bench_function("retry.decide", |b| {
        b.iter_custom(|iters| {
            cpu_time(&rt, iters, || async {
                set.retry
                    .retry_decide(&req, &attempt)
                    .await
                    .expect("decide");
            })
        })
    });
    for (name, set) in [
        ("all four (admit+derive+prepare+decide)", &set),
        ("all four, init on every instance", &per_instance),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                cpu_time(&rt, iters, || async {
                    set.throttle.throttle_admit(&req).await.expect("admit");
                    set.cache_key.derive_cache_key(&req).await.expect("derive");
                    set.semantic.semantic_prepare(&req).await.expect("prepare");
                    set.retry
                        .retry_decide(&req, &attempt)
                        .await
                        .expect("decide");
                })
            })
        });
    }
    g.finish();

    // The semantic plugin's accept: the guards compare the request's last
    // user message with the candidate's prompt. A 90-character pair, and
    // one of 40 times that (3,600 characters).
    let unguarded = rt.block_on(load_with(
        &runtime,
        Slot::Semantic,
        json!({"guards": false}),
    ));
    let asked = "And how many people live there, roughly, in 2024? Please give a round number.";
    let stored =
        "And how many people live in Lisbon, roughly, in 2024? Please give a round number.";
    let long = |s: &str| std::iter::repeat_n(s, 40).collect::<Vec<_>>().join(" ");
    let mut g = c.benchmark_group("semantic-accept");
    for (size, asked, stored) in [
        ("short", asked.to_owned(), stored.to_owned()),
        ("long", long(asked), long(stored)),
    ] {
        let mut req = request();
        if let Some(last) = req.messages.last_mut() {
            last.text = asked;
        }
        let candidate = SemanticCandidate {
            score: 0.95,
            prompt: stored,
            age_seconds: 10,
        };
        for (guards, plugin) in [("guards", &set.semantic), ("no guards", &unguarded)] {
            g.bench_function(format!("{size}, {guards}"), |b| {
                b.iter_custom(|iters| {
                    cpu_time(&rt, iters, || async {
                        plugin
                            .semantic_accept(&req, &candidate)
                            .await
                            .expect("accept");
                    })
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, policy);
criterion_main!(benches);
