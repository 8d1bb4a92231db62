//! Translation between formats with the official SDKs: the OpenAI SDK
//! reaches a `claude-*` model on an Anthropic provider, the Anthropic SDK a
//! `gpt-*` model on an OpenAI provider (tests/fixtures/sdk_translate.py).

use crate::support::gateway::TestGateway;
use serde_json::{Value, json};
use sluice::mock::{self, MockConfig};
use sluice::policy::Route;

/// One mock speaking both formats behind two providers; error models are
/// split so each side's errors come from the other format.
fn config(url: &str) -> String {
    format!(
        r#"
[[providers]]
name = "openai"
kind = "openai"
base_url = "{url}"
keys = ["sk-upstream"]
models = ["gpt-*", "mock-error-429"]
timeout_ms = 5000

[[providers]]
name = "anthropic"
kind = "anthropic"
base_url = "{url}"
keys = ["sk-ant-upstream"]
models = ["claude-*", "mock-error-400"]
timeout_ms = 5000

[[tenants]]
name = "acme"
keys = ["sk-acme"]
"#
    )
}

#[tokio::test]
async fn the_official_sdks_reach_models_of_the_other_format() {
    let up = mock::spawn(MockConfig::default());
    let gw = TestGateway::start(&config(&up.base_url())).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sdk_translate.py"
    );
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .env("SLUICE_URL", gw.url(""))
        .env("SLUICE_KEY", "sk-acme")
        .output()
        .await
        .expect("python3 runs (scripts/setup installs the SDKs)");
    assert!(
        output.status.success(),
        "the SDK script failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_slice(&output.stdout).expect("json");

    // OpenAI SDK -> Anthropic provider.
    assert_eq!(out["oa_object"], "chat.completion");
    assert_eq!(out["oa_text"], "mock answer to: hello claude via openai");
    assert_eq!(out["oa_finish"], "stop");
    assert!(out["oa_prompt_tokens"].as_u64().unwrap() > 0);
    assert!(out["oa_completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(out["oa_tool_name"], "get_weather");
    assert_eq!(out["oa_tool_args"], json!({ "query": "Paris" }));
    assert_eq!(out["oa_tool_finish"], "tool_calls");
    assert!(
        out["oa_multi_text"]
            .as_str()
            .unwrap()
            .contains("so what is it like"),
        "{}",
        out["oa_multi_text"]
    );
    assert_eq!(
        out["oa_stream_text"],
        "mock answer to: stream claude via openai"
    );
    assert!(out["oa_stream_usage"].as_u64().unwrap() > 0);
    assert_eq!(out["oa_stream_tool_name"], "get_weather");
    assert_eq!(out["oa_stream_tool_args"], json!({ "query": "Lyon" }));
    assert_eq!(out["oa_stream_tool_finish"], "tool_calls");
    assert_eq!(out["oa_error"], "invalid_request_error");

    // Anthropic SDK -> OpenAI provider.
    assert_eq!(out["an_text"], "mock answer to: hello gpt via anthropic");
    assert_eq!(out["an_stop"], "end_turn");
    assert!(out["an_input_tokens"].as_u64().unwrap() > 0);
    assert!(out["an_output_tokens"].as_u64().unwrap() > 0);
    assert_eq!(out["an_tool_name"], "get_weather");
    assert_eq!(out["an_tool_input"], json!({ "query": "Rome" }));
    assert_eq!(out["an_tool_stop"], "tool_use");
    assert!(
        out["an_multi_text"]
            .as_str()
            .unwrap()
            .contains("and tomorrow"),
        "{}",
        out["an_multi_text"]
    );
    assert_eq!(
        out["an_stream_text"],
        "mock answer to: stream gpt via anthropic"
    );
    assert!(out["an_stream_output_tokens"].as_u64().unwrap() > 0);
    assert_eq!(out["an_stream_stop"], "end_turn");
    assert_eq!(out["an_stream_tool_name"], "get_weather");
    assert_eq!(out["an_stream_tool_input"], json!({ "query": "Oslo" }));
    assert_eq!(out["an_stream_tool_stop"], "tool_use");
    assert_eq!(out["an_error"], "rate_limit_error");

    // The providers saw their own formats, with their own credentials.
    let seen = up.requests();
    let claude = seen
        .iter()
        .find(|r| r.model().as_deref() == Some("claude-3-5-haiku-latest"))
        .expect("a claude request");
    assert_eq!(claude.path, "/v1/messages");
    assert_eq!(claude.header("x-api-key"), Some("sk-ant-upstream"));
    let body = claude.json().unwrap();
    assert!(body["max_tokens"].as_u64().is_some());
    let gpt = seen
        .iter()
        .find(|r| r.model().as_deref() == Some("gpt-4o-mini"))
        .expect("a gpt request");
    assert_eq!(gpt.path, "/v1/chat/completions");
    assert_eq!(gpt.header("authorization"), Some("Bearer sk-upstream"));
    assert!(up.calls(Route::AnthropicMessages) >= 5);
    assert!(up.calls(Route::Chat) >= 5);
}
