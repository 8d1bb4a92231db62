//! The upstream client against the in-process mock provider
//! ([`sluice::mock`]): real OpenAI / Anthropic answers and the scripted
//! faults the retry loop has to survive (rejected keys, 429s with hints,
//! delays, dropped and aborted connections, a provider that goes down).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use sluice::config::{BreakerConfig, ProviderConfig, ProviderKind, Secret};
use sluice::mock::{self, Fault, MockConfig, MockHandle};
use sluice::policy::AttemptOutcome;
use sluice::upstream::{
    CircuitState, ManualClock, UpstreamBody, UpstreamError, UpstreamRequest, UpstreamSettings,
    Upstreams,
};

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_STREAM: &str =
    r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const MESSAGES: &str =
    r#"{"model":"claude-3-5-haiku","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;

fn provider(name: &str, kind: ProviderKind, mock: &MockHandle, keys: &[&str]) -> ProviderConfig {
    let mut config = ProviderConfig::new(name, kind);
    config.base_url = mock.base_url();
    config.keys = keys.iter().map(|k| Secret::new(*k)).collect();
    config
}

/// Upstreams on a manual clock, so key cooldowns and the breaker stay put
/// for the length of a test.
fn upstreams(config: ProviderConfig) -> Upstreams {
    let settings = UpstreamSettings {
        clock: Arc::new(ManualClock::new(0)),
        stream_idle_timeout: Duration::from_secs(5),
        ..UpstreamSettings::default()
    };
    Upstreams::with_settings(&[config], settings).unwrap()
}

fn request(path: &'static str, body: &'static str, stream: bool) -> UpstreamRequest {
    UpstreamRequest {
        path: path.into(),
        body: Bytes::from_static(body.as_bytes()),
        stream,
        timeout: Duration::from_secs(5),
        request_id: "req-mock".to_owned(),
        tokens: 0,
    }
}

fn chat() -> UpstreamRequest {
    request("/chat/completions", CHAT, false)
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("a JSON body")
}

#[tokio::test]
async fn openai_chat_round_trip() {
    let mock = mock::spawn(MockConfig {
        expected_key: Some("sk-right".into()),
        ..MockConfig::default()
    });
    let up = upstreams(provider(
        "openai",
        ProviderKind::Openai,
        &mock,
        &["sk-right"],
    ));

    let response = up.send("openai", chat()).await.unwrap();
    let UpstreamBody::Full(body) = response.body else {
        panic!("expected a complete body");
    };
    let body = json(&body);
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "mock answer to: hi"
    );
    let seen = mock.last_request().unwrap();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.header("x-request-id"), Some("req-mock"));
}

#[tokio::test]
async fn anthropic_messages_round_trip() {
    let mock = mock::spawn(MockConfig {
        expected_key: Some("sk-ant".into()),
        ..MockConfig::default()
    });
    let up = upstreams(provider(
        "claude",
        ProviderKind::Anthropic,
        &mock,
        &["sk-ant"],
    ));

    let response = up
        .send("claude", request("/messages", MESSAGES, false))
        .await
        .unwrap();
    let UpstreamBody::Full(body) = response.body else {
        panic!("expected a complete body");
    };
    assert_eq!(json(&body)["type"], "message");
    let seen = mock.last_request().unwrap();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("x-api-key"), Some("sk-ant"));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(seen.header("authorization"), None);
}

#[tokio::test]
async fn a_rejected_key_rests_and_the_pool_moves_on() {
    let mock = mock::spawn(MockConfig {
        expected_key: Some("sk-right".into()),
        ..MockConfig::default()
    });
    let up = upstreams(provider(
        "openai",
        ProviderKind::Openai,
        &mock,
        &["sk-revoked", "sk-right"],
    ));

    let failure = up.send("openai", chat()).await.unwrap_err();
    assert_eq!(failure.status(), Some(401));
    assert_eq!(failure.key_index, Some(0));
    // The provider's error body comes back as it was sent.
    let body = json(failure.body.as_deref().unwrap());
    assert!(body["error"]["message"].is_string(), "{body}");

    for _ in 0..3 {
        let response = up.send("openai", chat()).await.unwrap();
        assert_eq!(response.key_index, Some(1));
    }
    assert_eq!(up.health()[0].keys_cooling, 1);
    assert_eq!(mock.total_calls(), 4);
}

#[tokio::test]
async fn a_scripted_429_reports_the_precise_retry_hint() {
    let mock = mock::spawn(MockConfig::default());
    let up = upstreams(provider("openai", ProviderKind::Openai, &mock, &["k"]));
    mock.fail_next(1, 429, Some(Duration::from_millis(1_500)));

    let failure = up.send("openai", chat()).await.unwrap_err();
    assert_eq!(
        failure.outcome,
        AttemptOutcome::Status {
            code: 429,
            retry_after_ms: Some(1_500)
        }
    );
    assert_eq!(failure.headers["retry-after"], "2");
    assert_eq!(up.health()[0].keys_cooling, 1);
}

#[tokio::test]
async fn a_slow_answer_is_a_timeout() {
    let mock = mock::spawn(MockConfig::default());
    let up = upstreams(provider("openai", ProviderKind::Openai, &mock, &["k"]));
    mock.delay_next(1, Duration::from_secs(30));

    let mut req = chat();
    req.timeout = Duration::from_millis(150);
    let failure = up.send("openai", req).await.unwrap_err();
    assert_eq!(failure.outcome, AttemptOutcome::Timeout);
}

#[tokio::test]
async fn a_dropped_connection_is_a_connect_error_and_the_next_attempt_works() {
    let mock = mock::spawn(MockConfig::default());
    let up = upstreams(provider("openai", ProviderKind::Openai, &mock, &["k"]));
    // Warm the pool so the drop hits a reused keep-alive connection.
    up.send("openai", chat()).await.unwrap();
    mock.push_fault(Fault::Drop);

    let failure = up.send("openai", chat()).await.unwrap_err();
    assert!(
        matches!(failure.outcome, AttemptOutcome::ConnectError { .. }),
        "{:?}",
        failure.outcome
    );
    up.send("openai", chat()).await.unwrap();
}

#[tokio::test]
async fn a_stream_arrives_in_chunks_and_ends_with_done() {
    let mock = mock::spawn(MockConfig {
        chunk_delay: Duration::from_millis(2),
        ..MockConfig::default()
    });
    let up = upstreams(provider("openai", ProviderKind::Openai, &mock, &["k"]));

    let response = up
        .send("openai", request("/chat/completions", CHAT_STREAM, true))
        .await
        .unwrap();
    assert_eq!(
        response.headers["content-type"]
            .to_str()
            .unwrap()
            .split(';')
            .next(),
        Some("text/event-stream")
    );
    let UpstreamBody::Stream(mut body) = response.body else {
        panic!("expected a stream");
    };
    let mut chunks = 0;
    let mut all = Vec::new();
    while let Some(chunk) = body.next().await {
        all.extend_from_slice(&chunk.unwrap());
        chunks += 1;
    }
    let text = String::from_utf8(all).unwrap();
    assert!(chunks > 1, "one chunk: {text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
}

#[tokio::test]
async fn a_stream_cut_by_a_reset_ends_with_an_error() {
    let mock = mock::spawn(MockConfig::default());
    let up = upstreams(provider("openai", ProviderKind::Openai, &mock, &["k"]));
    mock.push_fault(Fault::Abort);

    let response = up
        .send("openai", request("/chat/completions", CHAT_STREAM, true))
        .await
        .unwrap();
    let UpstreamBody::Stream(mut body) = response.body else {
        panic!("expected a stream");
    };
    let mut last = None;
    while let Some(item) = body.next().await {
        last = Some(item);
    }
    assert!(
        matches!(last, Some(Err(UpstreamError::Body(_)))),
        "{last:?}"
    );
}

#[tokio::test]
async fn a_provider_that_goes_down_opens_the_circuit() {
    let mock = mock::spawn(MockConfig::default());
    let settings = UpstreamSettings {
        clock: Arc::new(ManualClock::new(0)),
        breaker: BreakerConfig {
            min_calls: 5,
            ..BreakerConfig::default()
        },
        ..UpstreamSettings::default()
    };
    let config = provider("openai", ProviderKind::Openai, &mock, &["k"]);
    let up = Upstreams::with_settings(&[config], settings).unwrap();
    mock.set_down(true).await.unwrap();

    for _ in 0..5 {
        let failure = up.send("openai", chat()).await.unwrap_err();
        assert!(
            matches!(failure.outcome, AttemptOutcome::ConnectError { .. }),
            "{:?}",
            failure.outcome
        );
        assert!(failure.circuit_open.is_none());
    }
    assert_eq!(up.health()[0].circuit, CircuitState::Open);
    let failure = up.send("openai", chat()).await.unwrap_err();
    assert!(failure.circuit_open.is_some());
    assert_eq!(mock.total_calls(), 0);
}

#[tokio::test]
async fn a_cancelled_probe_does_not_wedge_the_circuit_half_open() {
    let mock = mock::spawn(MockConfig::default());
    let clock = ManualClock::new(0);
    let settings = UpstreamSettings {
        clock: Arc::new(clock.clone()),
        breaker: BreakerConfig {
            min_calls: 1,
            half_open_probes: 1,
            ..BreakerConfig::default()
        },
        ..UpstreamSettings::default()
    };
    let config = provider("openai", ProviderKind::Openai, &mock, &["k"]);
    let up = Upstreams::with_settings(&[config], settings).unwrap();
    mock.fail_next(1, 503, None);
    assert_eq!(
        up.send("openai", chat()).await.unwrap_err().status(),
        Some(503)
    );
    assert_eq!(up.health()[0].circuit, CircuitState::Open);

    // The probe hangs and the client gives up on it (the future is dropped).
    clock.advance(Duration::from_millis(BreakerConfig::default().open_for_ms));
    mock.delay_next(1, Duration::from_secs(30));
    let cancelled =
        tokio::time::timeout(Duration::from_millis(100), up.send("openai", chat())).await;
    assert!(cancelled.is_err());

    // The next attempt probes instead of failing fast, and closes the circuit.
    up.send("openai", chat()).await.unwrap();
    assert_eq!(up.health()[0].circuit, CircuitState::Closed);
}
