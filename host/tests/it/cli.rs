//! The `sluice` binary: `plugin check`, `plugin test`, and `serve` shutting
//! down gracefully on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

fn sluice() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.env(
        "SLUICE_CACHE_DIR",
        std::env::temp_dir().join("sluice-cli-tests"),
    );
    cmd
}

fn plugin(name: &str) -> PathBuf {
    PathBuf::from(env!("SLUICE_TEST_PLUGINS_DIR")).join(format!("{name}.wasm"))
}

#[test]
fn plugin_check_describes_a_plugin() {
    let out = sluice()
        .args(["plugin", "check", "--json"])
        .arg(plugin("sluice_plugin_throttle"))
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(info["kinds"], json!(["throttle"]));
    assert_eq!(info["init"], "done", "init runs once, at load");
    assert!(info["size_bytes"].as_u64().unwrap_or(0) > 1000);
    assert!(info["imports"].as_array().is_some_and(|i| {
        i.iter()
            .any(|n| n.as_str().unwrap_or("").starts_with("sluice:policy/"))
    }));
}

#[test]
fn plugin_check_refuses_what_is_not_a_plugin_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "random.wasm",
            b"\x13\x37 not wasm at all".to_vec(),
            "not a WebAssembly binary",
        ),
        (
            "core.wasm",
            b"\0asm\x01\0\0\0".to_vec(),
            "core WebAssembly module",
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        let out = sluice()
            .args(["plugin", "check"])
            .arg(&path)
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{name} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(expected), "{name}: {err}");
    }
    let out = sluice()
        .args(["plugin", "check", "/nonexistent/plugin.wasm"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
}

/// Writes a one-message chat request to `dir/request.json` for `plugin test`.
fn sample_request(dir: &std::path::Path) -> std::path::PathBuf {
    let input = dir.join("request.json");
    std::fs::write(
        &input,
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
    )
    .expect("write");
    input
}

#[test]
fn plugin_test_prints_the_decision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = sample_request(dir.path());
    let out = sluice()
        .args(["plugin", "test"])
        .arg(plugin("sluice_plugin_cache_key"))
        .args(["--kind", "cache-key", "--input"])
        .arg(&input)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decision: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(decision["decision"], "cache");
    assert_eq!(decision["scope"], "tenant");

    let out = sluice()
        .args(["plugin", "test"])
        .arg(plugin("sluice_plugin_retry"))
        .args(["--kind", "retry", "--input"])
        .arg(&input)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["verdict"]["verdict"], "retry");

    // The wrong kind for the component: refused.
    let out = sluice()
        .args(["plugin", "test"])
        .arg(plugin("sluice_plugin_retry"))
        .args(["--kind", "throttle", "--input"])
        .arg(&input)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not provide throttle"));
}

/// `plugin test` of the hostile fixture as a cache-key plugin with `config`
/// and the extra flags `limits`: (success, stdout, stderr).
fn hostile_test(config: Value, limits: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = sample_request(dir.path());
    let config_file = dir.path().join("config.json");
    std::fs::write(&config_file, config.to_string()).expect("write");
    let out = sluice()
        .args(["plugin", "test"])
        .arg(plugin("sluice_plugin_hostile"))
        .args(["--kind", "cache-key", "--input"])
        .arg(&input)
        .arg("--config")
        .arg(&config_file)
        .args(limits)
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plugin_test_takes_a_slots_deadline_and_memory_limits() {
    // A call that computes for 150 ms: over the default 50 ms deadline...
    let slow = json!({"mode": "slow", "ms": 150});
    let (ok, _, err) = hostile_test(slow.clone(), &[]);
    assert!(!ok, "a 150 ms call passed the default deadline");
    assert!(err.contains("deadline of 50ms exceeded"), "{err}");
    assert!(err.contains("--deadline-ms"), "no hint: {err}");
    // ...and within a longer one.
    let (ok, out, err) = hostile_test(slow, &["--deadline-ms", "5000"]);
    assert!(ok, "{err}");
    let decision: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(decision["decision"], "bypass", "{decision}");

    // 24 MiB: over the default 16 MiB cap, within 64 MiB.
    let hungry = json!({"mode": "allocate", "bytes": 24 << 20});
    let (ok, _, err) = hostile_test(hungry.clone(), &[]);
    assert!(!ok, "24 MiB fitted in the default memory cap");
    assert!(err.contains("memory limit exceeded"), "{err}");
    let (ok, _, err) = hostile_test(
        hungry.clone(),
        &["--memory-mib", "64", "--deadline-ms", "5000"],
    );
    assert!(ok, "{err}");
    // Above the engine's default ceiling (64 MiB) too; touching 100 MiB
    // takes longer than 50 ms on a busy machine.
    let (ok, _, err) = hostile_test(
        json!({"mode": "allocate", "bytes": 100 << 20}),
        &["--memory-mib", "128", "--deadline-ms", "5000"],
    );
    assert!(ok, "{err}");

    // Out-of-range values are refused by name, like the config's.
    for bad in [["--deadline-ms", "0"], ["--memory-mib", "0"]] {
        let (ok, _, err) = hostile_test(hungry.clone(), &bad);
        assert!(!ok, "{bad:?} accepted");
        assert!(err.contains(bad[0]), "{bad:?}: {err}");
    }

    let help = sluice()
        .args(["plugin", "test", "--help"])
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--deadline-ms <MS>"), "{help}");
    assert!(help.contains("--memory-mib <MIB>"), "{help}");
}

#[tokio::test]
async fn serve_finishes_in_flight_requests_on_sigterm() {
    let up = crate::support::gateway::mock();
    up.set_latency(Duration::from_millis(700));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, crate::support::gateway::providers(&up)).expect("write");
    let mut child = sluice()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawns");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .expect("join")
    .expect("a listening line");
    let url = line
        .trim()
        .strip_prefix("sluice listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_string();
    let request = tokio::spawn(
        reqwest::Client::new()
            .post(format!("{url}/v1/chat/completions"))
            .json(
                &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "slow"}]}),
            )
            .send(),
    );
    // Signal once the request is at the upstream, i.e. in flight.
    assert!(
        up.wait_until(Duration::from_secs(5), |m| m.in_flight() == 1)
            .await
    );
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let response = request
        .await
        .expect("join")
        .expect("answered despite shutdown");
    assert_eq!(response.status(), 200);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("exits");
    assert!(status.success(), "{status}");
}
