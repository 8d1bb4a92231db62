//! Config and plugins mounted from a Kubernetes ConfigMap: every file is a
//! symlink through `..data`, and an update swaps that one symlink
//! atomically. A swap that changes the plugin, then one that changes the
//! plugin's config, each serve. How soon is a speed target (a second),
//! measured alone in bench/README.md ("Plugin reload and cold start"):
//! inside the parallel suite on a slow 2-core machine a real compile can
//! take longer, so this bound only catches a swap that is never seen.

use std::path::Path;
use std::time::{Duration, Instant};

use sluice::policy::Slot;

use crate::reload_files::{tagged, throttle_bytes};
use crate::support::gateway::{TestGateway, mock, providers, request_limit};

/// A swap not seen by then is lost (the target, a second, is benchmarked).
const WITHIN: Duration = Duration::from_secs(20);

/// Writes a new version directory and swaps `..data` to it, as the
/// kubelet's atomic writer does.
fn publish(volume: &Path, version: &str, files: &[(&str, &[u8])]) {
    let dir = volume.join(format!("..{version}"));
    std::fs::create_dir(&dir).expect("version dir");
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).expect("write");
    }
    let tmp = volume.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).expect("symlink");
    std::fs::rename(&tmp, volume.join("..data")).expect("swap ..data");
}

fn config(up: &sluice::mock::MockHandle, plugin: &Path, rpm: u64) -> String {
    format!(
        "{}\n[plugins.throttle]\nsource = \"{}\"\n[plugins.throttle.config]\nanonymous = {{ requests_per_minute = {rpm} }}\n",
        providers(up),
        plugin.display()
    )
}

async fn within(what: &str, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < WITHIN, "{what}: not within {WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn a_configmap_swap_of_a_plugin_and_of_the_config_is_served() {
    let up = mock();
    let volume = tempfile::tempdir().expect("tempdir");
    let v = volume.path();
    let plugin = v.join("throttle.wasm");
    let config_path = v.join("sluice.toml");
    let v1 = throttle_bytes();
    let text = config(&up, &plugin, 100);
    publish(
        v,
        "v1",
        &[("sluice.toml", text.as_bytes()), ("throttle.wasm", &v1)],
    );
    for name in ["sluice.toml", "throttle.wasm"] {
        std::os::unix::fs::symlink(format!("..data/{name}"), v.join(name)).expect("symlink");
    }

    let gw = TestGateway::start(&text).await;
    // As `sluice serve --config` does.
    gw.gw.plugins.watch_config_file(&config_path);
    let chat = format!("{}/chat/completions", gw.base_url());
    assert_eq!(request_limit(&chat).await, "100");

    // 1. A new plugin version, same config.
    let v2 = tagged(v1.clone(), "v2");
    let v2_hash = blake3::hash(&v2).to_hex().to_string();
    publish(
        v,
        "v2",
        &[("sluice.toml", text.as_bytes()), ("throttle.wasm", &v2)],
    );
    let took = within("the swapped plugin serves", async || {
        gw.gw.plugins.slot(Slot::Throttle).current().info().hash == v2_hash
    })
    .await;
    eprintln!("plugin swap served after {took:?}");

    // 2. The same plugin with a new config.
    let text = config(&up, &plugin, 200);
    publish(
        v,
        "v3",
        &[("sluice.toml", text.as_bytes()), ("throttle.wasm", &v2)],
    );
    let took = within("the swapped config serves", async || {
        request_limit(&chat).await == "200"
    })
    .await;
    eprintln!("config swap served after {took:?}");
    assert_eq!(
        gw.gw.plugins.slot(Slot::Throttle).current().info().hash,
        v2_hash
    );
}
