//! The fifth plugin kind, `route`: the Rust reference (plugins/route) and
//! its C twin (plugins/c/route, built from source here) make the same
//! decisions over the same candidate sets, put the cheapest healthy
//! candidate first and an open circuit last; through the gateway, either
//! one sends a request to the cheapest provider whose circuit is not open.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice::mock::{self, MockConfig, MockHandle};
use sluice::plugin::{EngineSettings, Limits, LoadOptions, Plugin, PluginRuntime};
use sluice::policy::{
    Circuit, Health, PolicyRequest, Route, RouteCandidate, RouteChoice, RoutePrice, Slot,
};
use sluice::state::State;

use crate::support::gateway::TestGateway;
use crate::support::polyglot::built;

fn rust_route() -> PathBuf {
    PathBuf::from(env!("SLUICE_TEST_PLUGINS_DIR")).join("sluice_plugin_route.wasm")
}

/// `(language, component)` of both implementations.
fn implementations() -> Vec<(&'static str, PathBuf)> {
    vec![("rust", rust_route()), ("c", built("c", "route"))]
}

async fn load(rt: &PluginRuntime, wasm: &Path, config: &Value) -> Result<Arc<Plugin>, String> {
    let bytes = std::fs::read(wasm).expect("read component");
    let mut opts = LoadOptions::new(Slot::Route);
    opts.require = vec![Slot::Route];
    opts.config = config.clone();
    opts.limits = Limits {
        deadline: Duration::from_millis(2000),
        ..Limits::default()
    };
    rt.load(&bytes, opts).await.map_err(|e| e.to_string())
}

fn runtime() -> PluginRuntime {
    PluginRuntime::new(
        EngineSettings {
            cache_dir: None,
            ..EngineSettings::default()
        },
        State::memory(),
        None,
    )
    .expect("runtime")
}

fn candidate(
    provider: &str,
    model: &str,
    price: Option<(f64, f64)>,
    circuit: Circuit,
    error_rate: f64,
) -> RouteCandidate {
    RouteCandidate {
        provider: provider.into(),
        model: model.into(),
        kind: "openai".into(),
        health: Health {
            latency_ms: 200.0,
            error_rate,
            circuit,
            key_headroom: 1.0,
        },
        price: price.map(|(input_per_mtok, output_per_mtok)| RoutePrice {
            input_per_mtok,
            output_per_mtok,
        }),
    }
}

fn request(prompt: u32, max_tokens: Option<u32>) -> PolicyRequest {
    PolicyRequest {
        id: "route-test".into(),
        model: "gpt-4o".into(),
        provider: "a".into(),
        tenant: "acme".into(),
        estimated_prompt_tokens: prompt,
        max_tokens,
        ..Default::default()
    }
}

fn providers(order: &[RouteChoice]) -> Vec<&str> {
    order.iter().map(|c| c.provider.as_str()).collect()
}

/// A small deterministic generator (SplitMix64), so both plugins see the
/// same varied candidate sets on every run.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// Candidate sets with every kind of tie and edge: equal prices, no
/// price, zero prices, exhausted keys, error rates at and over the limit,
/// every circuit state.
fn candidate_sets(n: usize) -> Vec<(PolicyRequest, Vec<RouteCandidate>)> {
    let mut g = Gen(15);
    (0..n)
        .map(|_| {
            let req = request(
                g.pick(&[0, 12, 700, 50_000]),
                g.pick(&[None, Some(1), Some(64), Some(4096)]),
            );
            let count = (g.next() % 7) as usize;
            let set = (0..count)
                .map(|i| RouteCandidate {
                    provider: format!("p{i}"),
                    model: g.pick(&["gpt-4o", "gpt-4o-mini"]).into(),
                    kind: g.pick(&["openai", "azure", "anthropic"]).into(),
                    health: Health {
                        latency_ms: g.pick(&[0.0, 100.0, 250.5, 300.0, 900.0]),
                        error_rate: g.pick(&[0.0, 0.1, 0.5, 0.51, 0.9, 1.0]),
                        circuit: g.pick(&[
                            Circuit::Closed,
                            Circuit::Closed,
                            Circuit::Open,
                            Circuit::HalfOpen,
                        ]),
                        key_headroom: g.pick(&[0.0, 0.5, 1.0, 1.0]),
                    },
                    price: g
                        .pick(&[
                            None,
                            Some((0.15, 0.6)),
                            Some((0.15, 0.6)),
                            Some((2.5, 10.0)),
                            Some((3.0, 15.0)),
                            Some((0.0, 0.0)),
                            Some((1.1, 0.2)),
                        ])
                        .map(|(input_per_mtok, output_per_mtok)| RoutePrice {
                            input_per_mtok,
                            output_per_mtok,
                        }),
                })
                .collect();
            (req, set)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_c_pick_the_cheapest_healthy_and_put_an_open_circuit_last() {
    let rt = runtime();
    // "cheapest" is cheapest but its circuit is open; "failing" is next
    // but fails 90% of its attempts; "cheap" is the cheapest healthy one.
    let set = vec![
        candidate("dear", "gpt-4o", Some((2.5, 10.0)), Circuit::Closed, 0.0),
        candidate("cheapest", "gpt-4o", Some((0.1, 0.4)), Circuit::Open, 0.0),
        candidate("unpriced", "gpt-4o", None, Circuit::Closed, 0.0),
        candidate("failing", "gpt-4o", Some((0.12, 0.5)), Circuit::Closed, 0.9),
        candidate(
            "cheap",
            "gpt-4o-mini",
            Some((0.15, 0.6)),
            Circuit::HalfOpen,
            0.1,
        ),
    ];
    for (lang, wasm) in implementations() {
        let plugin = load(&rt, &wasm, &json!({})).await.unwrap();
        let order = plugin.route_order(&request(100, Some(50)), &set).await;
        assert_eq!(
            providers(&order.unwrap()),
            ["cheap", "dear", "unpriced", "failing", "cheapest"],
            "{lang}"
        );
        // A stricter error limit moves "cheap" (10% errors) behind "dear".
        let strict = load(&rt, &wasm, &json!({"max_error_percent": 5}))
            .await
            .unwrap();
        let order = strict.route_order(&request(100, Some(50)), &set).await;
        assert_eq!(
            providers(&order.unwrap()),
            ["dear", "unpriced", "failing", "cheap", "cheapest"],
            "{lang}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_c_make_identical_decisions() {
    let rt = runtime();
    let configs = [
        json!({}),
        json!({"max_error_percent": 10, "max_latency_ms": 300}),
        json!({"max_error_percent": 100, "completion_tokens": 4000}),
        json!({"max_error_percent": 0, "max_latency_ms": 100, "completion_tokens": 1}),
    ];
    let sets = candidate_sets(60);
    let mut compared = 0;
    let mut reordered = 0;
    for config in &configs {
        let rust = load(&rt, &rust_route(), config).await.unwrap();
        let c = load(&rt, &built("c", "route"), config).await.unwrap();
        for (i, (req, set)) in sets.iter().enumerate() {
            let want = rust.route_order(req, set).await.unwrap();
            let got = c.route_order(req, set).await.unwrap();
            assert_eq!(got, want, "config {config}, set {i}: {set:?}");
            assert_eq!(want.len(), set.len(), "nothing is dropped");
            let kept = set.iter().zip(&want).all(|(c, w)| c.provider == w.provider);
            reordered += usize::from(!kept);
            compared += 1;
        }
    }
    assert_eq!(compared, configs.len() * sets.len());
    // The sets exercise the ordering, not just the identity.
    assert!(
        reordered > compared / 3,
        "{reordered} of {compared} reordered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_c_refuse_the_same_configs() {
    let rt = runtime();
    for bad in [
        json!({"max_error_percent": 101}),
        json!({"max_error_percent": "high"}),
        json!({"cheapest": true}),
    ] {
        for (lang, wasm) in implementations() {
            let Err(err) = load(&rt, &wasm, &bad).await else {
                panic!("{lang} accepted {bad}");
            };
            let field = bad.as_object().unwrap().keys().next().unwrap();
            assert!(err.contains(field.as_str()), "{lang} {bad}: {err}");
        }
    }
}

fn gateway_config(cheap: &MockHandle, mid: &MockHandle, dear: &MockHandle, source: &str) -> String {
    format!(
        r#"
[[providers]]
name = "dear"
base_url = "{dear}"
models = ["gpt-4o"]

[[providers]]
name = "cheap"
base_url = "{cheap}"
models = ["gpt-4o"]

[[providers]]
name = "mid"
base_url = "{mid}"
models = ["gpt-4o"]

[[prices]]
model = "gpt-4o"
provider = "dear"
input_per_mtok = 5.0
output_per_mtok = 20.0

[[prices]]
model = "gpt-4o"
provider = "cheap"
input_per_mtok = 0.5
output_per_mtok = 1.0

[[prices]]
model = "gpt-4o"
provider = "mid"
input_per_mtok = 1.0
output_per_mtok = 4.0

[breaker]
min_calls = 3
failure_ratio = 0.5
open_for_ms = 60000

[plugins.retry.config]
max_attempts = 1

[plugins.throttle.config]
anonymous = {{ requests_per_minute = 1000000, tokens_per_minute = 1000000000 }}

[plugins.route]
source = "{source}"
"#,
        cheap = cheap.base_url(),
        mid = mid.base_url(),
        dear = dear.base_url(),
    )
}

/// Sends `n` requests with prompts never sent before; returns how many
/// succeeded.
async fn send(gw: &TestGateway, n: usize) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let client = reqwest::Client::new();
    let mut ok = 0;
    for _ in 0..n {
        let i = NEXT.fetch_add(1, Ordering::Relaxed);
        let r = client
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": format!("route {i}")}]}))
            .send()
            .await
            .expect("request");
        ok += usize::from(r.status().is_success());
    }
    ok
}

/// Through the gateway: requests go to the cheapest provider; once its
/// circuit opens, to the next cheapest, never to the dearest, and no
/// request fails (a failed attempt at the cheapest moves on in the
/// plugin's order).
async fn routes_to_the_cheapest_healthy(source: &str) {
    let cheap = mock::spawn(MockConfig::default());
    let mid = mock::spawn(MockConfig::default());
    let dear = mock::spawn(MockConfig::default());
    let gw = TestGateway::start(&gateway_config(&cheap, &mid, &dear, source)).await;

    assert_eq!(send(&gw, 5).await, 5);
    assert_eq!(cheap.calls(Route::Chat), 5, "the cheapest took none");
    assert_eq!((mid.calls(Route::Chat), dear.calls(Route::Chat)), (0, 0));

    cheap.set_error_rate(1.0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.gw.upstreams.available("cheap") {
        assert_eq!(send(&gw, 1).await, 1, "a failure at the cheapest moves on");
        assert!(
            Instant::now() < deadline,
            "the cheapest's circuit never opened"
        );
    }
    let before = (cheap.calls(Route::Chat), mid.calls(Route::Chat));
    assert_eq!(send(&gw, 10).await, 10);
    assert_eq!(
        cheap.calls(Route::Chat),
        before.0,
        "an open circuit got traffic"
    );
    assert_eq!(mid.calls(Route::Chat), before.1 + 10);
    assert_eq!(dear.calls(Route::Chat), 0, "the dearest was never needed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_route_plugin_sends_to_the_cheapest_healthy_provider() {
    routes_to_the_cheapest_healthy("builtin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_c_route_plugin_sends_to_the_cheapest_healthy_provider() {
    let wasm = built("c", "route");
    routes_to_the_cheapest_healthy(wasm.to_str().expect("utf-8 path")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_route_plugin_the_config_order_holds() {
    let cheap = mock::spawn(MockConfig::default());
    let mid = mock::spawn(MockConfig::default());
    let dear = mock::spawn(MockConfig::default());
    let text = gateway_config(&cheap, &mid, &dear, "builtin");
    let text = text.replace("[plugins.route]\nsource = \"builtin\"\n", "");
    let gw = TestGateway::start(&text).await;
    assert!(!gw.gw.config.plugins.routes());
    assert_eq!(send(&gw, 3).await, 3);
    assert_eq!(
        dear.calls(Route::Chat),
        3,
        "config order: the first provider"
    );
}
