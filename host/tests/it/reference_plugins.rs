//! The embedded reference plugins, run as the gateway runs them (compiled
//! components in the sandbox), on representative requests.

use std::sync::Arc;

use serde_json::{Value, json};
use sluice::plugin::{EngineSettings, Init, LoadOptions, Plugin, PluginRuntime};
use sluice::policy::Slot;
use sluice::policy::{
    Admission, Attempt, AttemptOutcome, CacheDecision, Message, Param, PolicyRequest, RetryVerdict,
    Route, SemanticCandidate, Shape, Unit, Usage,
};
use sluice::state::State;

async fn load(kind: Slot, config: Value) -> Arc<Plugin> {
    let runtime = PluginRuntime::new(
        EngineSettings {
            cache_dir: None,
            ..EngineSettings::default()
        },
        State::memory(),
        None,
    )
    .expect("runtime");
    let wasm = sluice::plugin::builtin::builtin(kind).expect("embedded");
    let mut opts = LoadOptions::new(kind);
    opts.require = vec![kind];
    opts.config = config;
    // What these tests check is decisions and memory, not speed: a debug
    // build on a busy two-core machine can take longer than a slot's 50 ms
    // to copy a 4 MiB request into an instance.
    opts.limits.deadline = std::time::Duration::from_secs(5);
    let plugin = runtime.load(wasm, opts).await.expect("loads");
    // Every reference plugin starts its instances from a snapshot taken
    // after `init`: these tests show the config it parsed is there.
    assert_eq!(plugin.preinitialised().await, Init::Done);
    plugin
}

fn user(text: &str) -> Message {
    Message {
        role: "user".into(),
        text: text.into(),
        ..Message::default()
    }
}

fn request(prompt: &str) -> PolicyRequest {
    PolicyRequest {
        id: "req-1".into(),
        route: Route::Chat,
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        estimated_prompt_tokens: 12,
        messages: vec![user(prompt)],
        tenant: "acme".into(),
        tier: "pro".into(),
        client_ip: "10.1.2.3".into(),
        ..PolicyRequest::default()
    }
}

fn param(name: &str, json: &str) -> Param {
    Param {
        name: name.into(),
        json: json.into(),
    }
}

#[tokio::test]
async fn cache_key_ignores_what_does_not_change_the_answer() {
    let p = load(Slot::CacheKey, json!({})).await;
    let key = |r: PolicyRequest| {
        let p = p.clone();
        async move {
            match p.derive_cache_key(&r).await.expect("derive") {
                CacheDecision::Cache { key, .. } => key,
                other => panic!("expected a key, got {other:?}"),
            }
        }
    };
    let base = key(request("capital of France?")).await;
    let mut with_user = request("capital of France?");
    with_user.params = vec![param("user", "\"u-42\""), param("stream", "true")];
    assert_eq!(
        key(with_user).await,
        base,
        "user and stream do not change the answer"
    );
    let mut with_seed = request("capital of France?");
    with_seed.params = vec![param("seed", "7")];
    assert_ne!(key(with_seed).await, base, "seed does");
    assert_ne!(key(request("capital of Spain?")).await, base);
    let mut other_model = request("capital of France?");
    other_model.model = "gpt-4o".into();
    assert_ne!(key(other_model).await, base);
}

#[tokio::test]
async fn cache_key_bypasses_on_no_store_and_hot_temperatures() {
    let p = load(Slot::CacheKey, json!({"max_temperature": 0.5})).await;
    let mut no_store = request("x");
    no_store.headers = vec![("cache-control".into(), "no-store".into())];
    assert!(matches!(
        p.derive_cache_key(&no_store).await.expect("derive"),
        CacheDecision::Bypass { .. }
    ));
    let mut hot = request("x");
    hot.temperature = Some(0.9);
    assert!(matches!(
        p.derive_cache_key(&hot).await.expect("derive"),
        CacheDecision::Bypass { .. }
    ));
    let mut cool = request("x");
    cool.temperature = Some(0.2);
    assert!(matches!(
        p.derive_cache_key(&cool).await.expect("derive"),
        CacheDecision::Cache { .. }
    ));
}

#[tokio::test]
async fn a_bad_config_is_refused_at_load_naming_the_field() {
    let runtime =
        PluginRuntime::new(EngineSettings::default(), State::memory(), None).expect("runtime");
    let wasm = sluice::plugin::builtin::builtin(Slot::Throttle).expect("embedded");
    let mut opts = LoadOptions::new(Slot::Throttle);
    opts.config = json!({"tiers": {"free": {"requests_per_minute": "lots"}}});
    let err = runtime.load(wasm, opts).await.err().map(|e| e.to_string());
    let err = err.expect("refused");
    assert!(err.contains("tiers.free.requests_per_minute"), "{err}");
}

#[tokio::test]
async fn throttle_charges_tenant_tiers_and_per_ip_anonymous_buckets() {
    let p = load(
        Slot::Throttle,
        json!({"tiers": {"pro": {"requests_per_minute": 1000, "tokens_per_minute": 400000}},
               "anonymous": {"requests_per_minute": 20}}),
    )
    .await;
    let mut req = request("hello");
    req.max_tokens = Some(100);
    let Admission::Charge { buckets } = p.throttle_admit(&req).await.expect("admit") else {
        panic!("expected a charge")
    };
    let rpm = buckets
        .iter()
        .find(|b| b.unit == Unit::Requests)
        .expect("rpm");
    assert_eq!(
        rpm.shape,
        Shape::Window {
            limit: 1000,
            window_ms: 60_000
        }
    );
    assert_eq!(rpm.cost, 1);
    assert!(rpm.key.contains("acme"));
    let tpm = buckets
        .iter()
        .find(|b| b.unit == Unit::Tokens)
        .expect("tpm");
    assert_eq!(tpm.cost, 12 + 100, "prompt estimate + max_tokens");

    let mut anon = request("hello");
    anon.tenant = "anonymous".into();
    anon.tier = "anonymous".into();
    let Admission::Charge { buckets } = p.throttle_admit(&anon).await.expect("admit") else {
        panic!("expected a charge")
    };
    assert!(
        buckets.iter().all(|b| b.key.contains("10.1.2.3")),
        "{buckets:?}"
    );
    assert!(buckets.iter().any(|b| b.shape
        == Shape::Window {
            limit: 20,
            window_ms: 60_000
        }));

    // Settle refunds what the estimate over-charged.
    let corrections = p
        .throttle_settle(
            &req,
            &Usage {
                prompt_tokens: 10,
                completion_tokens: 30,
                estimated_prompt_tokens: 12,
                cached: false,
            },
        )
        .await
        .expect("settle");
    let total: i64 = corrections.iter().map(|b| b.cost).sum();
    assert_eq!(total, (10 + 30) - (12 + 100));
}

#[tokio::test]
async fn semantic_guards_numbers_and_negations() {
    let p = load(Slot::Semantic, json!({"threshold": 0.9})).await;
    let req = request("How many moons does Mars have?");
    let probe = p
        .semantic_prepare(&req)
        .await
        .expect("prepare")
        .expect("a probe");
    assert_eq!(probe.text, "How many moons does Mars have?");
    assert!((probe.threshold - 0.9).abs() < 1e-6);
    let candidate = |prompt: &str, score: f32| SemanticCandidate {
        score,
        prompt: prompt.into(),
        age_seconds: 5,
    };
    let accept = |c: SemanticCandidate| {
        let p = p.clone();
        let req = req.clone();
        async move { p.semantic_accept(&req, &c).await.expect("accept") }
    };
    assert!(accept(candidate("how many moons does mars have", 0.97)).await);
    assert!(
        !accept(candidate("how many moons does mars have", 0.85)).await,
        "under threshold"
    );
    assert!(
        !accept(candidate("How many moons does Mars not have?", 0.97)).await,
        "negation"
    );
    let numbers = request("Is 17 a prime number?");
    assert!(
        !p.semantic_accept(&numbers, &candidate("Is 15 a prime number?", 0.99))
            .await
            .expect("accept")
    );
}

#[tokio::test]
async fn retry_backs_off_honours_retry_after_and_falls_back() {
    let p = load(
        Slot::Retry,
        json!({"max_attempts": 3, "base_ms": 100, "max_backoff_ms": 1000, "fallback_model": "gpt-4o-mini-backup"}),
    )
    .await;
    let req = request("x");
    let attempt = |number: u32, outcome: AttemptOutcome| Attempt {
        number,
        elapsed_ms: 10,
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        outcome,
    };
    let status = |code: u16, retry_after_ms: Option<u64>| AttemptOutcome::Status {
        code,
        retry_after_ms,
    };
    match p
        .retry_decide(&req, &attempt(1, status(503, None)))
        .await
        .expect("decide")
    {
        RetryVerdict::Retry { after_ms } => assert!(after_ms <= 100, "{after_ms}"),
        v => panic!("{v:?}"),
    }
    match p
        .retry_decide(&req, &attempt(1, status(429, Some(2500))))
        .await
        .expect("decide")
    {
        RetryVerdict::Retry { after_ms } => assert!(after_ms >= 2500, "{after_ms}"),
        v => panic!("{v:?}"),
    }
    assert!(matches!(
        p.retry_decide(&req, &attempt(1, AttemptOutcome::Timeout))
            .await
            .expect("decide"),
        RetryVerdict::Retry { .. }
    ));
    assert_eq!(
        p.retry_decide(&req, &attempt(1, status(400, None)))
            .await
            .expect("decide"),
        RetryVerdict::Stop
    );
    match p
        .retry_decide(&req, &attempt(3, status(503, None)))
        .await
        .expect("decide")
    {
        RetryVerdict::Fallback { model, .. } => assert_eq!(model, "gpt-4o-mini-backup"),
        v => panic!("{v:?}"),
    }
}

/// The largest request the gateway accepts (4 MiB body by default) still
/// fits each reference plugin's default 16 MiB memory cap: their instances
/// allocate from a bump arena that never frees, so this guards its headroom.
#[tokio::test]
async fn a_request_at_the_body_limit_fits_every_plugin() {
    let text = "All work and no play makes Jack a dull boy. ".repeat((3 << 20) / 44);
    let mut req = request(&text);
    req.messages.insert(
        0,
        Message {
            role: "system".into(),
            text: "s".repeat(256 << 10),
            ..Message::default()
        },
    );
    req.estimated_prompt_tokens = 800_000;
    let cache_key = load(Slot::CacheKey, json!({})).await;
    assert!(matches!(
        cache_key.derive_cache_key(&req).await.expect("derive"),
        CacheDecision::Cache { .. }
    ));
    let semantic = load(Slot::Semantic, json!({})).await;
    semantic.semantic_prepare(&req).await.expect("prepare");
    let throttle = load(Slot::Throttle, json!({})).await;
    throttle.throttle_admit(&req).await.expect("admit");
    let retry = load(Slot::Retry, json!({})).await;
    let attempt = Attempt {
        number: 1,
        elapsed_ms: 10,
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        outcome: AttemptOutcome::Status {
            code: 503,
            retry_after_ms: None,
        },
    };
    retry.retry_decide(&req, &attempt).await.expect("decide");
}
