//! Azure OpenAI and Google Gemini provider kinds against the mock: Azure's
//! deployment URLs, `api-version` and `api-key`; Gemini's native
//! `generateContent` / `streamGenerateContent` translated for OpenAI and
//! Anthropic clients.

use serde_json::{Value, json};
use sluice::api::{SseParser, stream_to_json};
use sluice::mock::{self, MockConfig};
use sluice::policy::Route;

use crate::support::gateway::TestGateway;

fn config(url: &str) -> String {
    format!(
        r#"
[[providers]]
name = "azure"
kind = "azure"
base_url = "{url}"
keys = ["azure-key"]
models = ["gpt-*"]
api_version = "2024-10-21"
deployments = {{ "gpt-4o" = "prod-4o" }}

[[providers]]
name = "gemini"
kind = "gemini"
base_url = "{url}"
keys = ["goog-key"]
models = ["gemini-*"]
"#
    )
}

async fn post(gw: &TestGateway, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(gw.url(path))
        .json(&body)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn azure_deployments_get_the_api_version_and_key() {
    let up = mock::spawn(MockConfig {
        expected_key: Some("azure-key".into()),
        ..MockConfig::default()
    });
    let gw = TestGateway::start(&config(&up.url(""))).await;

    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({ "model": "gpt-4o", "messages": [{ "role": "user", "content": "hi azure" }] }),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "mock answer to: hi azure"
    );
    let seen = up.last_request().unwrap();
    assert_eq!(
        seen.path,
        "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(seen.header("api-key"), Some("azure-key"));
    assert_eq!(seen.header("authorization"), None);

    // A model without a deployment entry is its own deployment; the
    // Anthropic route reaches Azure translated, streaming.
    let r = post(
        &gw,
        "/v1/messages",
        json!({ "model": "gpt-4o-mini", "max_tokens": 50, "stream": true,
                "messages": [{ "role": "user", "content": "stream azure" }] }),
    )
    .await;
    assert_eq!(r.status(), 200);
    let events = SseParser::new().feed(&r.bytes().await.unwrap());
    let v: Value =
        serde_json::from_slice(&stream_to_json(Route::AnthropicMessages, &events).unwrap())
            .unwrap();
    assert_eq!(v["content"][0]["text"], "mock answer to: stream azure");
    assert_eq!(
        up.last_request().unwrap().path,
        "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"
    );
}

#[tokio::test]
async fn gemini_is_reached_natively_from_both_formats() {
    let up = mock::spawn(MockConfig {
        expected_key: Some("goog-key".into()),
        ..MockConfig::default()
    });
    let gw = TestGateway::start(&config(&up.url(""))).await;

    // OpenAI JSON.
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({ "model": "gemini-2.0-flash", "messages": [
            { "role": "system", "content": "Be brief." },
            { "role": "user", "content": "hi gemini" }
        ]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "mock answer to: hi gemini"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let seen = up.last_request().unwrap();
    assert_eq!(seen.path, "/v1beta/models/gemini-2.0-flash:generateContent");
    assert_eq!(seen.header("x-goog-api-key"), Some("goog-key"));
    let body = seen.json().unwrap();
    assert_eq!(body["systemInstruction"]["parts"][0]["text"], "Be brief.");

    // OpenAI streaming with a forced tool.
    let r = post(
        &gw,
        "/v1/chat/completions",
        json!({ "model": "gemini-2.0-flash", "stream": true,
                "messages": [{ "role": "user", "content": "Paris" }],
                "tools": [{ "type": "function", "function": { "name": "get_weather", "parameters": { "type": "object" } } }],
                "tool_choice": "required" }),
    )
    .await;
    assert_eq!(r.status(), 200);
    let events = SseParser::new().feed(&r.bytes().await.unwrap());
    assert!(events.last().unwrap().is_done());
    let v: Value = serde_json::from_slice(&stream_to_json(Route::Chat, &events).unwrap()).unwrap();
    let call = &v["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(call["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).unwrap(),
        json!({ "query": "Paris" })
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        up.last_request().unwrap().path,
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    );

    // Anthropic streaming.
    let r = post(
        &gw,
        "/v1/messages",
        json!({ "model": "gemini-2.0-flash", "max_tokens": 50, "stream": true,
                "messages": [{ "role": "user", "content": "stream gemini" }] }),
    )
    .await;
    assert_eq!(r.status(), 200);
    let events = SseParser::new().feed(&r.bytes().await.unwrap());
    let v: Value =
        serde_json::from_slice(&stream_to_json(Route::AnthropicMessages, &events).unwrap())
            .unwrap();
    assert_eq!(v["content"][0]["text"], "mock answer to: stream gemini");
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["usage"]["output_tokens"].as_u64().unwrap() > 0);

    // A Gemini error reaches an Anthropic client in its shape.
    up.fail_next(1, 400, None);
    let r = post(
        &gw,
        "/v1/messages",
        json!({ "model": "gemini-2.0-flash", "max_tokens": 5, "messages": [{ "role": "user", "content": "x" }] }),
    )
    .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["message"], "mock scripted 400");
}
