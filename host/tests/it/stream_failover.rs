//! Streams and fallbacks: a provider that fails before its first content
//! event is failed over without the client noticing (the response head is
//! held until then); one that fails after it ends the client's stream with
//! an error event in the client's format, counted in /metrics. Fallbacks
//! come from the `[fallbacks]` chain or the retry plugin, across formats.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice::api::{SseEvent, SseParser};
use sluice::mock::{self, Fault, MockConfig, MockHandle};
use sluice::policy::Route;

use crate::support::gateway::TestGateway;
use crate::support::scrape::{metrics_text, sample};

/// `primary` (OpenAI kind) serves gpt-4o on one mock; `backup`
/// (Anthropic kind) serves claude-* on another. `extra` is appended.
fn config(primary: &MockHandle, backup: &MockHandle, extra: &str) -> String {
    format!(
        r#"
[[providers]]
name = "primary"
kind = "openai"
base_url = "{p}"
models = ["gpt-4o"]
timeout_ms = 5000
first_token_timeout_ms = 500

[[providers]]
name = "backup"
kind = "anthropic"
base_url = "{b}"
models = ["claude-*"]
timeout_ms = 5000

{extra}
"#,
        p = primary.base_url(),
        b = backup.base_url(),
    )
}

/// The retry plugin gives up at once (or falls back at once when told to).
fn retry(extra: &str) -> String {
    format!(
        "[plugins.retry]\nsource = \"builtin\"\n[plugins.retry.config]\nmax_attempts = 1\nbase_ms = 1\nmax_backoff_ms = 1\n{extra}\n"
    )
}

const CHAIN: &str = "[fallbacks]\n\"gpt-4o\" = [\"claude-3-5-haiku-latest\"]\n";

async fn stream_chat(gw: &TestGateway, prompt: &str) -> (u16, Vec<SseEvent>) {
    let response = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({
            "model": "gpt-4o", "stream": true,
            "messages": [{ "role": "user", "content": prompt }]
        }))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let body = response.bytes().await.expect("the body ends cleanly");
    (status, SseParser::new().feed(&body))
}

fn text_of(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter(|e| !e.is_done())
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

async fn metric(gw: &TestGateway, series: &str) -> f64 {
    sample(&metrics_text(gw.url("/metrics")).await, series).unwrap_or(0.0)
}

#[tokio::test]
async fn a_stream_failing_before_its_first_token_is_served_by_the_fallback_chain() {
    let primary = mock::spawn(MockConfig::default());
    let backup = mock::spawn(MockConfig::default());
    let gw = TestGateway::start(&config(&primary, &backup, &format!("{CHAIN}{}", retry("")))).await;

    primary.push_fault(Fault::AbortBeforeContent);
    let (status, events) = stream_chat(&gw, "first try").await;
    assert_eq!(status, 200);
    assert_eq!(text_of(&events), "mock answer to: first try");
    assert!(events.last().unwrap().is_done());
    assert!(!events.iter().any(|e| e.data.contains("\"error\"")));
    assert_eq!(primary.calls(Route::Chat), 1);
    // The chain went to the Anthropic provider, translated.
    assert_eq!(backup.calls(Route::AnthropicMessages), 1);
    assert_eq!(
        metric(&gw, "sluice_stream_failures_total{provider=\"primary\"}").await,
        0.0
    );

    // A stream that stalls before its first token past
    // first_token_timeout_ms (500 ms) is failed over too.
    primary.push_fault(Fault::StallBeforeContent(Duration::from_secs(10)));
    let started = Instant::now();
    let (status, events) = stream_chat(&gw, "stalled").await;
    assert_eq!(status, 200);
    assert_eq!(text_of(&events), "mock answer to: stalled");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(backup.calls(Route::AnthropicMessages), 2);
}

#[tokio::test]
async fn the_retry_plugins_fallback_may_cross_formats() {
    let primary = mock::spawn(MockConfig::default());
    let backup = mock::spawn(MockConfig::default());
    let plugin = retry("fallback_model = \"claude-3-5-haiku-latest\"");
    let gw = TestGateway::start(&config(&primary, &backup, &plugin)).await;

    primary.fail_next(1, 503, None);
    let response = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({ "model": "gpt-4o", "messages": [{ "role": "user", "content": "json" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluice-attempts"], "2");
    let v: Value = response.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "mock answer to: json"
    );
    assert_eq!(backup.calls(Route::AnthropicMessages), 1);
}

#[tokio::test]
async fn a_stream_failing_after_its_first_token_ends_with_an_error_event() {
    let primary = mock::spawn(MockConfig::default());
    let backup = mock::spawn(MockConfig::default());
    let gw = TestGateway::start(&config(&primary, &backup, &format!("{CHAIN}{}", retry("")))).await;
    // Long enough that half the events hold content.
    let prompt = "a long question with many words ".repeat(20);

    primary.push_fault(Fault::Abort);
    let (status, events) = stream_chat(&gw, &prompt).await;
    assert_eq!(status, 200);
    assert!(!text_of(&events).is_empty(), "content came first");
    let last: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(last["error"]["type"], "server_error");
    assert_eq!(last["error"]["code"], "stream_interrupted");
    assert!(!events.iter().any(SseEvent::is_done));
    // No fallback once the client has content.
    assert_eq!(backup.total_calls(), 0);
    assert_eq!(
        metric(&gw, "sluice_stream_failures_total{provider=\"primary\"}").await,
        1.0
    );

    // A clean close without the terminator is no silent cut either.
    primary.push_fault(Fault::Truncate);
    let (_, events) = stream_chat(&gw, &prompt).await;
    let last: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted");
    assert_eq!(
        metric(&gw, "sluice_stream_failures_total{provider=\"primary\"}").await,
        2.0
    );

    // Anthropic clients get an `error` event (here from a translated
    // OpenAI stream: the Anthropic route's gpt-4o goes to `primary`).
    primary.push_fault(Fault::Abort);
    let response = reqwest::Client::new()
        .post(gw.url("/v1/messages"))
        .json(&json!({
            "model": "gpt-4o", "max_tokens": 1000, "stream": true,
            "messages": [{ "role": "user", "content": prompt }]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = SseParser::new().feed(&response.bytes().await.unwrap());
    assert!(
        events
            .iter()
            .any(|e| e.event.as_deref() == Some("content_block_delta"))
    );
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    let v: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "api_error");
}

#[tokio::test]
async fn a_stream_failing_before_its_first_token_counts_against_the_breaker() {
    let primary = mock::spawn(MockConfig::default());
    let backup = mock::spawn(MockConfig::default());
    let breaker = "[breaker]\nmin_calls = 2\nfailure_ratio = 0.5\nopen_for_ms = 60000\n";
    let gw = TestGateway::start(&config(
        &primary,
        &backup,
        &format!("{CHAIN}{}{breaker}", retry("")),
    ))
    .await;

    // The headers came (200), the content never did: a failure, not an
    // answer.
    primary.push_fault(Fault::AbortBeforeContent);
    let (status, events) = stream_chat(&gw, "breaker one").await;
    assert_eq!(
        (status, text_of(&events).as_str()),
        (200, "mock answer to: breaker one")
    );
    let health = gw.gw.upstreams.route_health("primary").unwrap();
    assert_eq!(health.error_rate, 1.0, "the first failure was counted");
    assert!(gw.gw.upstreams.available("primary"), "under min_calls");

    primary.push_fault(Fault::AbortBeforeContent);
    let (status, _) = stream_chat(&gw, "breaker two").await;
    assert_eq!(status, 200);
    assert!(
        !gw.gw.upstreams.available("primary"),
        "two failures in two calls open the circuit"
    );
    // Now refused without sending: the fallback serves.
    let (status, events) = stream_chat(&gw, "breaker three").await;
    assert_eq!(
        (status, text_of(&events).as_str()),
        (200, "mock answer to: breaker three")
    );
    assert_eq!(primary.calls(Route::Chat), 2);
    assert_eq!(backup.calls(Route::AnthropicMessages), 3);
}
