//! The official OpenAI and Anthropic Python SDKs against a real sluice: what
//! users actually point at the gateway. `scripts/setup` installs them.

use crate::support::gateway::{TestGateway, mock, providers};
use serde_json::Value;

#[tokio::test]
async fn the_official_sdks_work_through_sluice() {
    let up = mock();
    let config = format!(
        "{}\n[[tenants]]\nname = \"acme\"\nkeys = [\"sk-acme\"]\n",
        providers(&up)
    );
    let gw = TestGateway::start(&config).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sdk_clients.py");
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
    assert_eq!(out["chat_cache_first"], "miss");
    assert_eq!(out["chat_cache_second"], "hit");
    assert_eq!(out["chat_content"], "mock answer to: hello from the sdk");
    assert!(out["chat_usage_total"].as_u64().unwrap_or(0) > 0);
    assert_eq!(out["stream_content"], "mock answer to: stream from the sdk");
    assert!(out["stream_usage_completion"].as_u64().unwrap_or(0) > 0);
    assert_eq!(out["embedding_len"], 16);
    assert_eq!(out["unknown_model"], "model_not_found");
    assert_eq!(out["bad_key"], 401);
    assert_eq!(out["anthropic_text"], "mock answer to: hello claude sdk");
    assert!(out["anthropic_output_tokens"].as_u64().unwrap_or(0) > 0);
    assert_eq!(
        out["anthropic_stream_text"],
        "mock answer to: stream claude sdk"
    );
}
