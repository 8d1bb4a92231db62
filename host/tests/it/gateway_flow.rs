//! The request flow end to end: a real sluice on 127.0.0.1:0, the mock
//! provider upstream, raw HTTP from the test.

use std::time::{Duration, Instant};

use crate::support::gateway::{TestGateway, mock, providers};
use serde_json::{Value, json};

fn chat(prompt: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]})
}

async fn post(gw: &TestGateway, path: &str, key: Option<&str>, body: &Value) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(gw.url(path)).json(body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().await.expect("request")
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn a_repeated_request_is_a_cache_hit() {
    let up = mock();
    let gw = TestGateway::start(&providers(&up)).await;
    let first = post(&gw, "/v1/chat/completions", None, &chat("hello")).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-sluice-cache"), "miss");
    assert!(!header(&first, "x-request-id").is_empty());
    let first_body: Value = first.json().await.expect("json");
    assert_eq!(
        first_body["choices"][0]["message"]["content"],
        "mock answer to: hello"
    );
    let second = post(&gw, "/v1/chat/completions", None, &chat("hello")).await;
    assert_eq!(header(&second, "x-sluice-cache"), "hit");
    let second_body: Value = second.json().await.expect("json");
    assert_eq!(first_body, second_body);
    assert_eq!(up.total_calls(), 1);
    // The upstream got the provider key, never the client's.
    let seen = up.last_request().expect("seen");
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer sk-upstream-secret")
    );
}

#[tokio::test]
async fn cache_control_no_cache_and_no_store_are_honoured() {
    let up = mock();
    let gw = TestGateway::start(&providers(&up)).await;
    let send = |cc: &'static str| {
        reqwest::Client::new()
            .post(gw.url("/v1/chat/completions"))
            .header("cache-control", cc)
            .json(&chat("directives"))
            .send()
    };
    // no-store: answered, not stored.
    let r = send("no-store").await.expect("send");
    assert_eq!(header(&r, "x-sluice-cache"), "bypass");
    let r = post(&gw, "/v1/chat/completions", None, &chat("directives")).await;
    assert_eq!(header(&r, "x-sluice-cache"), "miss");
    // Now stored; no-cache skips the lookup.
    let r = send("no-cache").await.expect("send");
    assert_eq!(header(&r, "x-sluice-cache"), "miss");
    assert_eq!(up.total_calls(), 3);
    let r = post(&gw, "/v1/chat/completions", None, &chat("directives")).await;
    assert_eq!(header(&r, "x-sluice-cache"), "hit");
}

#[tokio::test]
async fn a_streamed_answer_replays_identically_and_converts_both_ways() {
    let up = mock();
    let gw = TestGateway::start(&providers(&up)).await;
    let mut body = chat("stream me");
    body["stream"] = json!(true);
    let first = post(&gw, "/v1/chat/completions", None, &body).await;
    assert_eq!(header(&first, "x-sluice-cache"), "miss");
    assert!(header(&first, "content-type").starts_with("text/event-stream"));
    let first_bytes = first.bytes().await.expect("stream");
    let text = String::from_utf8_lossy(&first_bytes);
    assert!(text.contains("data: [DONE]"), "{text}");
    // The client did not ask for usage, so the usage-only chunk is not relayed.
    assert!(!text.contains("\"usage\""), "{text}");

    let second = post(&gw, "/v1/chat/completions", None, &body).await;
    assert_eq!(header(&second, "x-sluice-cache"), "hit");
    let second_bytes = second.bytes().await.expect("stream");
    assert_eq!(first_bytes, second_bytes, "replay must be byte-identical");

    // A non-streaming client gets one JSON body from the streamed entry.
    let json_resp = post(&gw, "/v1/chat/completions", None, &chat("stream me")).await;
    assert_eq!(header(&json_resp, "x-sluice-cache"), "hit");
    let v: Value = json_resp.json().await.expect("json");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "mock answer to: stream me"
    );
    assert_eq!(up.total_calls(), 1);

    // And the other way: a JSON entry replayed as a stream.
    let _ = post(&gw, "/v1/chat/completions", None, &chat("json first")).await;
    let mut s = chat("json first");
    s["stream"] = json!(true);
    let streamed = post(&gw, "/v1/chat/completions", None, &s).await;
    assert_eq!(header(&streamed, "x-sluice-cache"), "hit");
    let text = streamed.text().await.expect("text");
    assert!(
        text.contains("mock answer to: json first") || text.contains("mock answer"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(up.total_calls(), 2);
}

#[tokio::test]
async fn anthropic_messages_flow_json_and_stream() {
    let up = mock();
    let gw = TestGateway::start(&providers(&up)).await;
    let body = json!({
        "model": "claude-3-5-haiku-latest",
        "max_tokens": 64,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "hi claude"}]
    });
    let r = post(&gw, "/v1/messages", None, &body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["type"], "message");
    let seen = up.last_request().expect("seen");
    assert_eq!(seen.header("x-api-key"), Some("sk-ant-upstream-secret"));
    assert!(seen.header("anthropic-version").is_some());

    let mut s = body.clone();
    s["stream"] = json!(true);
    s["messages"][0]["content"] = json!("stream claude");
    let r = post(&gw, "/v1/messages", None, &s).await;
    let text = r.text().await.expect("text");
    assert!(text.contains("event: message_start"), "{text}");
    assert!(text.contains("event: message_stop"), "{text}");
    let again = post(&gw, "/v1/messages", None, &s).await;
    assert_eq!(header(&again, "x-sluice-cache"), "hit");
    assert_eq!(again.text().await.expect("text"), text);
}

#[tokio::test]
async fn embeddings_pass_through_and_cache() {
    let up = mock();
    let gw = TestGateway::start(&providers(&up)).await;
    let body = json!({"model": "text-embedding-3-small", "input": "vector please"});
    let r = post(&gw, "/v1/embeddings", None, &body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert!(
        v["data"][0]["embedding"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );
    let again = post(&gw, "/v1/embeddings", None, &body).await;
    assert_eq!(header(&again, "x-sluice-cache"), "hit");
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
"#;

#[tokio::test]
async fn the_cache_never_crosses_tenants() {
    let up = mock();
    let gw = TestGateway::start(&format!("{}{TENANTS}", providers(&up))).await;
    let a = post(
        &gw,
        "/v1/chat/completions",
        Some("sk-acme"),
        &chat("same prompt"),
    )
    .await;
    assert_eq!(header(&a, "x-sluice-cache"), "miss");
    let b = post(
        &gw,
        "/v1/chat/completions",
        Some("sk-globex"),
        &chat("same prompt"),
    )
    .await;
    assert_eq!(header(&b, "x-sluice-cache"), "miss");
    let a2 = post(
        &gw,
        "/v1/chat/completions",
        Some("sk-acme"),
        &chat("same prompt"),
    )
    .await;
    assert_eq!(header(&a2, "x-sluice-cache"), "hit");
    assert_eq!(up.total_calls(), 2);
}

#[tokio::test]
async fn keys_and_anonymous_callers() {
    let up = mock();
    let gw = TestGateway::start(&format!("{}{TENANTS}", providers(&up))).await;
    let bad = post(&gw, "/v1/chat/completions", Some("sk-nope"), &chat("x")).await;
    assert_eq!(bad.status(), 401);
    let v: Value = bad.json().await.expect("json");
    assert_eq!(v["error"]["code"], "invalid_api_key");
    // No key, with tenants configured: refused unless the config says
    // anonymous callers are welcome.
    let anon = post(&gw, "/v1/chat/completions", None, &chat("x")).await;
    assert_eq!(anon.status(), 401);
    let v: Value = anon.json().await.expect("json");
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let welcoming = TestGateway::start(&format!(
        "{}{TENANTS}[anonymous]\nallowed = true\n",
        providers(&up)
    ))
    .await;
    let anon = post(&welcoming, "/v1/chat/completions", None, &chat("x")).await;
    assert_eq!(anon.status(), 200);

    // With no tenants configured any token is anonymous.
    let open = TestGateway::start(&providers(&up)).await;
    let r = post(
        &open,
        "/v1/chat/completions",
        Some("sk-whatever-the-sdk-sends"),
        &chat("y"),
    )
    .await;
    assert_eq!(r.status(), 200);

    // Anonymous access off: no key is a 401.
    let closed = TestGateway::start(&format!(
        "{}{TENANTS}\n[anonymous]\nallowed = false\n",
        providers(&up)
    ))
    .await;
    let r = post(&closed, "/v1/chat/completions", None, &chat("z")).await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn the_throttle_refuses_at_the_limit_with_openai_headers() {
    let up = mock();
    let config = format!(
        r#"{}{TENANTS}
[plugins.throttle.config]
tiers.pro = {{ requests_per_minute = 3, tokens_per_minute = 100000 }}
"#,
        providers(&up)
    );
    let gw = TestGateway::start(&config).await;
    for i in 0..3 {
        let r = post(
            &gw,
            "/v1/chat/completions",
            Some("sk-acme"),
            &chat(&format!("n{i}")),
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-ratelimit-limit-requests"), "3");
        assert_eq!(
            header(&r, "x-ratelimit-remaining-requests"),
            (2 - i).to_string()
        );
        assert!(!header(&r, "x-ratelimit-reset-requests").is_empty());
        assert_eq!(header(&r, "x-ratelimit-limit-tokens"), "100000");
    }
    let r = post(&gw, "/v1/chat/completions", Some("sk-acme"), &chat("n3")).await;
    assert_eq!(r.status(), 429);
    let retry_after: u64 = header(&r, "retry-after").parse().expect("retry-after");
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "0");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    // Another tenant is unaffected.
    let other = post(&gw, "/v1/chat/completions", Some("sk-globex"), &chat("n0")).await;
    assert_eq!(other.status(), 200);
    assert_eq!(up.total_calls(), 4);
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let up = mock();
    let gw = TestGateway::start(&format!(
        "{}\n[plugins.retry.config]\nbase_ms = 10\nmax_backoff_ms = 50\n",
        providers(&up)
    ))
    .await;
    up.fail_next(2, 503, None);
    let r = post(&gw, "/v1/chat/completions", None, &chat("flaky")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-sluice-attempts"), "3");
    assert_eq!(up.total_calls(), 3);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let up = mock();
    let gw = TestGateway::start(&format!(
        "{}\n[plugins.retry.config]\nbase_ms = 1\nmax_backoff_ms = 5\n",
        providers(&up)
    ))
    .await;
    up.fail_next(1, 429, Some(Duration::from_secs(1)));
    let started = Instant::now();
    let r = post(&gw, "/v1/chat/completions", None, &chat("limited upstream")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-sluice-attempts"), "2");
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "retried after {:?}, before the upstream's retry-after of 1 s",
        started.elapsed()
    );
}

#[tokio::test]
async fn after_the_attempts_the_fallback_model_answers() {
    let up = mock();
    let gw = TestGateway::start(&format!(
        "{}\n[plugins.retry.config]\nbase_ms = 1\nmax_backoff_ms = 5\nmax_attempts = 3\nfallback_model = \"gpt-4o-mini-fallback\"\n",
        providers(&up)
    ))
    .await;
    up.fail_next(3, 503, None);
    let r = post(&gw, "/v1/chat/completions", None, &chat("fall back")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-sluice-attempts"), "4");
    let seen = up.last_request().expect("seen");
    assert_eq!(seen.model().as_deref(), Some("gpt-4o-mini-fallback"));
}

#[tokio::test]
async fn a_sustained_outage_does_not_become_a_retry_storm() {
    let up = mock();
    // The breaker stays out of it (it would refuse most of these requests
    // without sending them): this is about the retry budget alone.
    let gw = TestGateway::start(&format!(
        "{}\n[retry]\nbudget_ratio = 0.2\nbudget_min_per_sec = 1\n[breaker]\nmin_calls = 100000\n[plugins.retry.config]\nbase_ms = 1\nmax_backoff_ms = 2\n[plugins.throttle.config]\nanonymous = {{ requests_per_minute = 10000 }}\n",
        providers(&up)
    ))
    .await;
    let requests = 60;
    let mut failed = 0;
    for i in 0..requests {
        let mut body = chat(&format!("outage {i}"));
        body["model"] = json!("mock-error-503");
        let r = post(&gw, "/v1/chat/completions", None, &body).await;
        if r.status() == 502 {
            failed += 1;
        }
    }
    assert_eq!(failed, requests);
    let attempts = up.total_calls();
    // Without a budget: 4 attempts each = 240. With it: 60 + 20% + the
    // 10-second floor of 1/s.
    let allowed = requests as u64 + (requests as u64) / 5 + 10;
    assert!(
        attempts <= allowed,
        "{attempts} upstream attempts for {requests} requests (allowed {allowed})"
    );
}

#[tokio::test]
async fn concurrent_identical_requests_make_one_upstream_call() {
    let up = mock();
    up.set_latency(Duration::from_millis(300));
    let gw = TestGateway::start(&providers(&up)).await;
    let body = chat("thundering herd");
    let calls = (0..10).map(|_| post(&gw, "/v1/chat/completions", None, &body));
    let responses = futures::future::join_all(calls).await;
    let mut bodies = Vec::new();
    for r in responses {
        assert_eq!(r.status(), 200);
        bodies.push(r.json::<Value>().await.expect("json"));
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(up.total_calls(), 1);
}

#[tokio::test]
async fn bad_input_gets_provider_shaped_errors() {
    let up = mock();
    let gw = TestGateway::start(&format!(
        "{}\n[server]\nmax_body_bytes = 2048\n",
        providers(&up)
    ))
    .await;
    let client = reqwest::Client::new();
    // Malformed JSON.
    let r = client
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    // Anthropic shape on /v1/messages.
    let r = client
        .post(gw.url("/v1/messages"))
        .body("not json")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    // Oversized.
    let r = post(&gw, "/v1/chat/completions", None, &chat(&"x".repeat(4096))).await;
    assert_eq!(r.status(), 413);
    // Unknown model.
    let mut body = chat("x");
    body["model"] = json!("llama-unknown");
    let r = post(&gw, "/v1/chat/completions", None, &body).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "model_not_found");
    // A model whose provider has no equivalent of the route (chat and
    // messages translate; embeddings have no Anthropic counterpart).
    let body = json!({ "model": "claude-3-5-haiku-latest", "input": "x" });
    let r = post(&gw, "/v1/embeddings", None, &body).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("no equivalent")
    );
    // Unknown route.
    let r = client.post(gw.url("/v1/nope")).send().await.expect("send");
    assert_eq!(r.status(), 404);
    assert_eq!(up.total_calls(), 0);
}

#[tokio::test]
async fn upstream_errors_map_to_gateway_statuses() {
    let up = mock();
    let gw = TestGateway::start(&format!(
        "{}\n[plugins.retry.config]\nbase_ms = 1\nmax_backoff_ms = 2\n",
        providers(&up)
    ))
    .await;
    // A caller-fault 400 passes through unchanged, without retries.
    let mut body = chat("x");
    body["model"] = json!("mock-error-400");
    let r = post(&gw, "/v1/chat/completions", None, &body).await;
    assert_eq!(r.status(), 400);
    assert_eq!(header(&r, "x-sluice-attempts"), "1");
    // 5xx after retries: 502.
    body["model"] = json!("mock-error-500");
    let r = post(&gw, "/v1/chat/completions", None, &body).await;
    assert_eq!(r.status(), 502);
    assert_eq!(header(&r, "x-sluice-attempts"), "4");
    let v: Value = r.json().await.expect("json");
    assert!(v["error"]["message"].as_str().unwrap_or("").contains("500"));
}

#[tokio::test]
async fn a_slow_provider_is_a_504() {
    let up = mock();
    up.set_latency(Duration::from_secs(5));
    let gw = TestGateway::start(&format!(
        "{}\n[server]\nrequest_timeout_ms = 600\n",
        providers(&up).replace("timeout_ms = 2000", "timeout_ms = 200")
    ))
    .await;
    let started = Instant::now();
    let r = post(&gw, "/v1/chat/completions", None, &chat("slow")).await;
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn request_ids_are_honoured_and_health_endpoints_answer() {
    let up = mock();
    let gw = TestGateway::start(&providers(&up)).await;
    let r = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-id", "req-abc-123")
        .json(&chat("id"))
        .send()
        .await
        .expect("send");
    assert_eq!(header(&r, "x-request-id"), "req-abc-123");
    let h = reqwest::get(gw.url("/healthz")).await.expect("healthz");
    assert_eq!(h.status(), 200);
    let ready: Value = reqwest::get(gw.url("/readyz"))
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["status"], "ready");
    let models: Value = reqwest::get(gw.url("/v1/models"))
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    assert_eq!(models["object"], "list");
    let metrics = crate::support::scrape::metrics_text(gw.url("/metrics")).await;
    assert!(metrics.contains("sluice_requests_total"), "{metrics}");
    assert!(metrics.contains("sluice_plugin_calls_total"), "{metrics}");
}

fn hostile_plugin() -> String {
    std::path::Path::new(env!("SLUICE_TEST_PLUGINS_DIR"))
        .join("sluice_plugin_hostile.wasm")
        .display()
        .to_string()
}

#[tokio::test]
async fn a_broken_plugin_follows_its_slots_failure_policy() {
    let up = mock();
    for (failure, mode, expected) in [
        ("fail-closed", "loop", 503),
        ("fail-open", "loop", 200),
        ("fail-closed", "panic", 503),
        ("fail-open", "memory", 200),
    ] {
        let config = format!(
            "{}\n[plugins.throttle]\nsource = \"{}\"\nfailure = \"{failure}\"\n[plugins.throttle.config]\nmode = \"{mode}\"\n",
            providers(&up),
            hostile_plugin()
        );
        let gw = TestGateway::start(&config).await;
        let started = Instant::now();
        let r = post(
            &gw,
            "/v1/chat/completions",
            None,
            &chat(&format!("{failure} {mode}")),
        )
        .await;
        assert_eq!(r.status(), expected, "{failure} {mode}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{failure} {mode}"
        );
        // The gateway keeps serving.
        let again = post(&gw, "/v1/chat/completions", None, &chat("again")).await;
        assert_eq!(again.status(), expected, "{failure} {mode}, second request");
        let metrics = crate::support::scrape::metrics_text(gw.url("/metrics")).await;
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("sluice_plugin_calls_total")
                    && l.contains("slot=\"throttle\"")
                    && !l.contains("result=\"ok\"")
                    && !l.ends_with(" 0")),
            "{metrics}"
        );
    }
}
