//! Hot reload on one node from files: a changed plugin file serves within
//! the poll period, a broken file is refused while the previous version
//! keeps serving, and a change to a plugin's config reloads it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice::policy::Slot;

use crate::support::gateway::{TestGateway, mock, providers, request_limit};

const DEADLINE: Duration = Duration::from_secs(3);

pub(crate) fn throttle_bytes() -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("SLUICE_TEST_PLUGINS_DIR")).join("sluice_plugin_throttle.wasm"),
    )
    .expect("throttle component")
}

/// The same component with a custom section appended: a new version (new
/// hash) that behaves the same.
pub(crate) fn tagged(mut wasm: Vec<u8>, tag: &str) -> Vec<u8> {
    let name = b"sluice-test";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    assert!(payload.len() < 128, "one-byte LEB128 size");
    wasm.push(0);
    wasm.push(payload.len() as u8);
    wasm.extend(payload);
    wasm
}

/// Replaces `path` atomically, as a deploy tool would.
fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn config_text(up: &sluice::mock::MockHandle, plugin: &Path, rpm: u64) -> String {
    format!(
        "{}\n[plugins.throttle]\nsource = \"{}\"\n[plugins.throttle.config]\nanonymous = {{ requests_per_minute = {rpm} }}\n",
        providers(up),
        plugin.display()
    )
}

fn serving_hash(gw: &TestGateway) -> String {
    gw.gw
        .plugins
        .slot(Slot::Throttle)
        .current()
        .info()
        .hash
        .clone()
}

/// Polls `check` until it holds; returns how long that took.
async fn within(what: &str, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn plugin_file_and_config_changes_reload_and_broken_files_are_refused() {
    let up = mock();
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = dir.path().join("throttle.wasm");
    let config = dir.path().join("sluice.toml");
    std::fs::write(&plugin, throttle_bytes()).expect("write plugin");
    std::fs::write(&config, config_text(&up, &plugin, 5000)).expect("write config");
    let gw = TestGateway::start(&config_text(&up, &plugin, 5000)).await;
    gw.gw.plugins.watch_config_file(&config);
    assert_eq!(request_limit(&gw.url("/v1/chat/completions")).await, "5000");

    // A new version of the file serves soon after it is written.
    let v2 = tagged(throttle_bytes(), "v2");
    let v2_hash = blake3::hash(&v2).to_hex().to_string();
    write_atomically(&plugin, &v2);
    let took = within("v2 serving", async || serving_hash(&gw) == v2_hash).await;
    eprintln!("file write to new version serving: {took:?}");
    assert_eq!(
        gw.gw
            .plugins
            .origin(sluice::policy::Slot::Throttle)
            .to_string(),
        format!("file:{}", plugin.display())
    );
    assert_eq!(request_limit(&gw.url("/v1/chat/completions")).await, "5000");

    // Garbage, then a component of the wrong kind: refused, v2 keeps serving.
    write_atomically(&plugin, b"\0asm garbage that is not a component");
    within("garbage refused", async || {
        gw.gw.plugins.refused().len() == 1
    })
    .await;
    let cache_key = std::fs::read(
        PathBuf::from(env!("SLUICE_TEST_PLUGINS_DIR")).join("sluice_plugin_cache_key.wasm"),
    )
    .expect("cache-key component");
    write_atomically(&plugin, &cache_key);
    within("wrong kind refused", async || {
        gw.gw.plugins.refused().len() == 2
    })
    .await;
    let refused = gw.gw.plugins.refused();
    assert!(
        refused[0].reason.contains("does not provide throttle"),
        "{refused:?}"
    );
    assert_eq!(serving_hash(&gw), v2_hash);
    assert_eq!(request_limit(&gw.url("/v1/chat/completions")).await, "5000");

    // A fixed file serves again.
    let v3 = tagged(throttle_bytes(), "v3");
    let v3_hash = blake3::hash(&v3).to_hex().to_string();
    write_atomically(&plugin, &v3);
    within("v3 serving", async || serving_hash(&gw) == v3_hash).await;

    // Editing the plugin's config in the config file reloads it.
    write_atomically(&config, config_text(&up, &plugin, 60000).as_bytes());
    let took = within("new config serving", async || {
        request_limit(&gw.url("/v1/chat/completions")).await == "60000"
    })
    .await;
    eprintln!("config write to new config serving: {took:?}");
    assert_eq!(gw.gw.plugins.refused().len(), 2);
}
