//! The reference throttle policy in Python (componentize-py), C (clang +
//! wasi-libc) and JavaScript (componentize-js), built from source by the
//! test, against the Rust reference:
//! the same decision for every request and config, the same config
//! refusals, and the same behaviour through the gateway (429 at the limit,
//! with the same x-ratelimit headers).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::gateway::{TestGateway, mock, providers};
use crate::support::polyglot::{built, rust_throttle};
use serde_json::{Value, json};
use sluice::plugin::{EngineSettings, Limits, LoadOptions, PluginRuntime};
use sluice::policy::Slot;
use sluice::policy::{PolicyRequest, Usage};
use sluice::state::State;

/// Python and JavaScript pay for a fresh interpreter instance per call
/// (~20 ms on a debug host), close to the default 50 ms deadline on a busy
/// machine; see docs/tutorial.md.
const DEADLINE_MS: u64 = 2000;

/// `(language, component)` for the four implementations.
fn implementations() -> Vec<(&'static str, PathBuf)> {
    vec![
        ("rust", rust_throttle()),
        ("c", built("c", "throttle")),
        ("python", built("python", "throttle")),
        ("js", built("js", "throttle")),
    ]
}

fn limits() -> Limits {
    Limits {
        memory_bytes: 32 << 20,
        deadline: Duration::from_millis(DEADLINE_MS),
        ..Limits::default()
    }
}

async fn load(
    rt: &PluginRuntime,
    wasm: &Path,
    config: &Value,
) -> Result<std::sync::Arc<sluice::plugin::Plugin>, String> {
    let bytes = std::fs::read(wasm).expect("read component");
    let mut opts = LoadOptions::new(Slot::Throttle);
    opts.require = vec![Slot::Throttle];
    opts.config = config.clone();
    opts.limits = limits();
    rt.load(&bytes, opts).await.map_err(|e| e.to_string())
}

fn request(
    tenant: &str,
    tier: &str,
    ip: &str,
    prompt: u32,
    max_tokens: Option<u32>,
) -> PolicyRequest {
    PolicyRequest {
        id: "t".into(),
        model: "gpt-4o-mini".into(),
        provider: "mock".into(),
        tenant: tenant.into(),
        tier: tier.into(),
        client_ip: ip.into(),
        estimated_prompt_tokens: prompt,
        max_tokens,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_language_decides_exactly_like_rust() {
    let configs = [
        json!({}),
        json!({
            "tiers": {
                "pro": {"requests_per_minute": 3, "tokens_per_minute": 100000},
                "free": {"requests_per_minute": 0},
                "custom": {"tokens_per_minute": 500}
            },
            "anonymous": {"requests_per_minute": 2, "tokens_per_minute": null},
            "completion_estimate_tokens": 50
        }),
        json!({"tiers": {"default": {"tokens_per_minute": 1000}}, "anonymous": null}),
    ];
    let requests = [
        request("acme", "pro", "10.0.0.1", 40, Some(100)),
        request("globex", "free", "10.0.0.2", 40, None),
        request("initech", "custom", "10.0.0.3", 400, Some(200)),
        request("umbrella", "no-such-tier", "10.0.0.4", 10, None),
        request("acme", "enterprise", "10.0.0.1", 10, Some(3_000_000)),
        request("anonymous", "anonymous", "2001:db8::1", 5, Some(10)),
        request("anonymous", "", "", 5, None),
        request("anonymous", "pro", "192.0.2.7", 5, Some(10)),
    ];
    let usages = [
        Usage {
            prompt_tokens: 30,
            completion_tokens: 20,
            estimated_prompt_tokens: 40,
            cached: false,
        },
        Usage {
            prompt_tokens: 30,
            completion_tokens: 20,
            estimated_prompt_tokens: 40,
            cached: true,
        },
        Usage {
            prompt_tokens: 40,
            completion_tokens: 100,
            estimated_prompt_tokens: 40,
            cached: false,
        },
    ];
    let rt = PluginRuntime::new(EngineSettings::default(), State::memory(), None).expect("runtime");
    let impls = implementations();
    for config in &configs {
        let mut answers: Vec<(&str, Vec<Value>)> = Vec::new();
        for (lang, wasm) in &impls {
            let plugin = load(&rt, wasm, config)
                .await
                .unwrap_or_else(|e| panic!("{lang} refused config {config}: {e}"));
            let mut decisions = Vec::new();
            for req in &requests {
                let admit = plugin.throttle_admit(req).await.expect("admit");
                decisions.push(json!(admit));
                for usage in &usages {
                    let settle = plugin.throttle_settle(req, usage).await.expect("settle");
                    decisions.push(json!(settle));
                }
            }
            answers.push((lang, decisions));
        }
        let (_, reference) = &answers[0];
        for (lang, decisions) in &answers[1..] {
            for (i, (want, got)) in reference.iter().zip(decisions).enumerate() {
                assert_eq!(
                    got, want,
                    "{lang} differs from rust on decision {i} with config {config}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_language_refuses_the_configs_rust_refuses() {
    let bad = [
        json!({"bogus": 1}),
        json!({"tiers": {"anonymous": {"requests_per_minute": 1}}}),
        json!({"tiers": {"": {}}}),
        json!({"tiers": {"pro": {"requests_per_minute": -1}}}),
        json!({"tiers": {"pro": {"rpm": 1}}}),
        json!({"completion_estimate_tokens": "many"}),
    ];
    let rt = PluginRuntime::new(EngineSettings::default(), State::memory(), None).expect("runtime");
    for (lang, wasm) in implementations() {
        for config in &bad {
            let err = load(&rt, &wasm, config)
                .await
                .err()
                .unwrap_or_else(|| panic!("{lang} accepted the bad config {config}"));
            assert!(err.contains("config"), "{lang}: {err}");
        }
    }
}

const TENANTS: &str = r#"
[[tenants]]
name = "acme"
tier = "pro"
keys = ["sk-acme"]

[[tenants]]
name = "globex"
tier = "free"
keys = ["sk-globex"]

[anonymous]
allowed = true
"#;

fn gateway_config(up: &sluice::mock::MockHandle, wasm: &Path, plugin_config: &str) -> String {
    format!(
        r#"{providers}{TENANTS}
[plugins.throttle]
source = "{source}"
failure = "fail-closed"

[plugins.throttle.limits]
deadline_ms = {DEADLINE_MS}
memory_mib = 32

[plugins.throttle.config]
{plugin_config}
"#,
        providers = providers(up),
        source = wasm.display(),
    )
}

async fn post(gw: &TestGateway, key: Option<&str>, body: &Value) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .json(body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().await.expect("request")
}

fn chat(prompt: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]})
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_language_refuses_at_the_limit_with_openai_headers() {
    for (lang, wasm) in implementations() {
        let up = mock();
        let gw = TestGateway::start(&gateway_config(
            &up,
            &wasm,
            "tiers.pro = { requests_per_minute = 3, tokens_per_minute = 100000 }",
        ))
        .await;
        for i in 0..3 {
            let r = post(&gw, Some("sk-acme"), &chat(&format!("n{i}"))).await;
            assert_eq!(r.status(), 200, "{lang}");
            assert_eq!(header(&r, "x-ratelimit-limit-requests"), "3", "{lang}");
            assert_eq!(
                header(&r, "x-ratelimit-remaining-requests"),
                (2 - i).to_string(),
                "{lang}"
            );
            assert!(
                !header(&r, "x-ratelimit-reset-requests").is_empty(),
                "{lang}"
            );
            assert_eq!(header(&r, "x-ratelimit-limit-tokens"), "100000", "{lang}");
        }
        let r = post(&gw, Some("sk-acme"), &chat("n3")).await;
        assert_eq!(r.status(), 429, "{lang}");
        let retry_after: u64 = header(&r, "retry-after").parse().expect("retry-after");
        assert!((1..=20).contains(&retry_after), "{lang}: {retry_after}");
        assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "0", "{lang}");
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{lang}");
        // Another tenant is unaffected.
        let other = post(&gw, Some("sk-globex"), &chat("n0")).await;
        assert_eq!(other.status(), 200, "{lang}");
        assert_eq!(up.total_calls(), 4, "{lang}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_language_limits_anonymous_callers_and_refuses_oversized_requests() {
    for (lang, wasm) in implementations() {
        let up = mock();
        let gw = TestGateway::start(&gateway_config(
            &up,
            &wasm,
            "anonymous = { requests_per_minute = 2, tokens_per_minute = 1000 }",
        ))
        .await;
        // Waiting would not help a request larger than the per-minute budget.
        let huge = json!({"model": "gpt-4o-mini", "max_tokens": 5000,
                          "messages": [{"role": "user", "content": "big"}]});
        let r = post(&gw, None, &huge).await;
        assert_eq!(r.status(), 429, "{lang}");
        assert_eq!(header(&r, "retry-after"), "", "{lang}");
        let v: Value = r.json().await.expect("json");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("request too large"), "{lang}: {message}");

        for i in 0..2 {
            let r = post(&gw, None, &chat(&format!("a{i}"))).await;
            assert_eq!(r.status(), 200, "{lang}");
            assert_eq!(header(&r, "x-ratelimit-limit-requests"), "2", "{lang}");
        }
        let r = post(&gw, None, &chat("a2")).await;
        assert_eq!(r.status(), 429, "{lang}");
        assert_eq!(up.total_calls(), 2, "{lang}");
    }
}
