//! The admin API: authentication, listing, uploads that validate before
//! anything changes, rollback, and a separate admin listener.

use std::path::PathBuf;

use crate::support::gateway::{TestGateway, mock, providers, request_limit};
use serde_json::{Value, json};

const TOKEN: &str = "admin-secret";

fn plugin(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("SLUICE_TEST_PLUGINS_DIR")).join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn config(up: &sluice::mock::MockHandle, server: &str) -> String {
    format!(
        "{}\n[server]\n{server}\n[plugins.throttle.config]\nanonymous = {{ requests_per_minute = 5000, tokens_per_minute = 5000000 }}\n",
        providers(up)
    )
}

async fn upload(
    base: &str,
    slot: &str,
    wasm: Vec<u8>,
    config: Option<Value>,
) -> (reqwest::StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/admin/plugins/{slot}"))
        .bearer_auth(TOKEN)
        .body(wasm);
    if let Some(c) = config {
        req = req.header("x-sluice-plugin-config", c.to_string());
    }
    let r = req.send().await.expect("upload");
    (r.status(), r.json().await.expect("json"))
}

async fn list(base: &str) -> Value {
    let r = reqwest::Client::new()
        .get(format!("{base}/admin/plugins"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), 200);
    r.json().await.expect("json")
}

fn slot<'a>(listing: &'a Value, name: &str) -> &'a Value {
    listing["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .find(|p| p["slot"] == name)
        .expect("slot listed")
}

#[tokio::test]
async fn without_a_token_configured_there_is_no_admin_api() {
    let up = mock();
    let gw = TestGateway::start(&config(&up, "")).await;
    let r = reqwest::Client::new()
        .get(gw.url("/admin/plugins"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn missing_or_wrong_token_is_401() {
    let up = mock();
    let gw = TestGateway::start(&config(
        &up,
        &format!("admin_token = \"{TOKEN}\"\nadmin_on_listen = true"),
    ))
    .await;
    let client = reqwest::Client::new();
    let none = client
        .get(gw.url("/admin/plugins"))
        .send()
        .await
        .expect("get");
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    let wrong = client
        .post(gw.url("/admin/plugins/throttle"))
        .bearer_auth("admin-secreT")
        .body(plugin("sluice_plugin_throttle"))
        .send()
        .await
        .expect("post");
    assert_eq!(wrong.status(), 401);
    assert_eq!(request_limit(&gw.url("/v1/chat/completions")).await, "5000");
}

#[tokio::test]
async fn list_upload_refuse_and_roll_back() {
    let up = mock();
    let gw = TestGateway::start(&config(
        &up,
        &format!("admin_token = \"{TOKEN}\"\nadmin_on_listen = true"),
    ))
    .await;
    let base = gw.url("");
    assert_eq!(request_limit(&gw.url("/v1/chat/completions")).await, "5000");

    let listing = list(&base).await;
    let throttle = slot(&listing, "throttle");
    assert_eq!(throttle["kinds"], json!(["throttle"]));
    assert_eq!(throttle["source"], "builtin");
    // Pre-initialisation runs after the load: done, or still under way.
    assert!(
        throttle["init"] == "done" || throttle["init"] == "pending",
        "{throttle}"
    );
    assert!(
        throttle["calls"].as_u64().expect("calls") >= 1,
        "{throttle}"
    );
    for field in ["hash", "loaded_at_ms", "failures", "p50_us", "p99_us"] {
        assert!(!throttle[field].is_null(), "{field} missing: {throttle}");
    }
    let builtin_hash = throttle["hash"].clone();
    assert_eq!(listing["plugins"].as_array().map(Vec::len), Some(4));

    // Broken versions: refused with a reason, nothing changes.
    let broken = [
        (
            "garbage",
            b"definitely not wasm".to_vec(),
            None,
            "not a WebAssembly binary",
        ),
        (
            "trap in init",
            plugin("sluice_plugin_hostile"),
            Some(json!({"mode": "trap-in-init"})),
            "init",
        ),
        (
            "wrong world",
            plugin("sluice_plugin_cache_key"),
            None,
            "does not provide throttle",
        ),
    ];
    for (what, wasm, cfg, reason) in broken {
        let (status, body) = upload(&base, "throttle", wasm, cfg).await;
        assert_eq!(status, 422, "{what}: {body}");
        let msg = body["error"].as_str().expect("error");
        assert!(msg.contains(reason), "{what}: {msg}");
        assert_eq!(
            request_limit(&gw.url("/v1/chat/completions")).await,
            "5000",
            "{what} changed behaviour"
        );
    }
    let listing = list(&base).await;
    assert_eq!(slot(&listing, "throttle")["hash"], builtin_hash);
    let refused = listing["refused"].as_array().expect("refused");
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(
        refused[0]["reason"]
            .as_str()
            .expect("reason")
            .contains("does not provide")
    );
    assert_eq!(refused[0]["slot"], "throttle");

    // Nothing to roll back yet.
    let r = reqwest::Client::new()
        .post(format!("{base}/admin/plugins/throttle/rollback"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("rollback");
    assert_eq!(r.status(), 409);

    // A good version with its own config serves at once.
    let (status, body) = upload(
        &base,
        "throttle",
        plugin("sluice_plugin_throttle"),
        Some(json!({"anonymous": {"requests_per_minute": 7000}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["fleet"], false);
    assert_eq!(request_limit(&gw.url("/v1/chat/completions")).await, "7000");
    let listing = list(&base).await;
    let id = body["release"]["id"].as_str().expect("id");
    assert_eq!(
        slot(&listing, "throttle")["source"],
        format!("release:{id}")
    );

    // Rollback past the first release: the configured plugin again.
    let r = reqwest::Client::new()
        .post(format!("{base}/admin/plugins/throttle/rollback"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("rollback");
    assert_eq!(r.status(), 200);
    assert_eq!(request_limit(&gw.url("/v1/chat/completions")).await, "5000");
    assert_eq!(slot(&list(&base).await, "throttle")["source"], "builtin");

    // Unknown slots are 404s; the reload counters are on /metrics.
    let (status, _) = upload(&base, "nope", plugin("sluice_plugin_throttle"), None).await;
    assert_eq!(status, 404);
    let metrics = crate::support::scrape::metrics_text(gw.url("/metrics")).await;
    assert!(
        metrics.contains("sluice_plugin_reloads_total{slot=\"throttle\",result=\"refused\"} 3"),
        "{metrics}"
    );
    assert!(metrics.trim_end().ends_with("# EOF"));
}

#[tokio::test]
async fn admin_listen_moves_the_admin_api_off_the_main_listener() {
    let up = mock();
    let gw = TestGateway::start(&config(
        &up,
        &format!("admin_token = \"{TOKEN}\"\nadmin_listen = \"127.0.0.1:0\""),
    ))
    .await;
    let main = reqwest::Client::new()
        .get(gw.url("/admin/plugins"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(main.status(), 404);
    let admin = format!("http://{}", gw.spawn_admin_listener().await);
    assert_eq!(slot(&list(&admin).await, "retry")["source"], "builtin");
    let chat = reqwest::Client::new()
        .post(format!("{admin}/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o-mini", "messages": []}))
        .send()
        .await
        .expect("post");
    assert_eq!(chat.status(), 404);
}
