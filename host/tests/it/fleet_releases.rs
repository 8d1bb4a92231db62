//! Fleet releases: three `sluice serve` processes on one redis-server. A
//! push through one node's admin API changes the behaviour of all three
//! within a second; broken pushes change nothing anywhere and the push
//! command fails with the reason; a node started later serves the current
//! release; rollback returns every node to the previous behaviour.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::gateway::request_limit;
use crate::support::node::Node;
use crate::support::redis::RedisServer;
use serde_json::{Value, json};

const TOKEN: &str = "fleet-admin-secret";
/// The fleet-wide switch target.
const FLEET_DEADLINE: Duration = Duration::from_secs(1);

fn component(name: &str) -> PathBuf {
    PathBuf::from(env!("SLUICE_TEST_PLUGINS_DIR")).join(format!("{name}.wasm"))
}

fn node_config(mock: &sluice::mock::MockHandle, redis: &RedisServer) -> String {
    format!(
        r#"
[server]
admin_token = "{TOKEN}"
admin_on_listen = true

[state]
kind = "redis"
url = "{redis}"

[[providers]]
name = "mock"
kind = "openai"
base_url = "{mock}"
keys = ["sk-upstream"]
models = ["gpt-*"]

[plugins.throttle.config]
anonymous = {{ requests_per_minute = 100000, tokens_per_minute = 100000000 }}
"#,
        redis = redis.url(),
        mock = mock.base_url()
    )
}

/// Polls every node until each answers with `want`; per-node latency.
async fn all_serve(nodes: &[&Node], want: &str) -> Vec<Duration> {
    let started = Instant::now();
    let mut took = vec![None; nodes.len()];
    while took.iter().any(Option::is_none) {
        for (i, node) in nodes.iter().enumerate() {
            if took[i].is_none() && request_limit(&node.url("/v1/chat/completions")).await == want {
                took[i] = Some(started.elapsed());
            }
        }
        assert!(
            started.elapsed() < FLEET_DEADLINE,
            "not every node serves {want} within {FLEET_DEADLINE:?}: {took:?}"
        );
    }
    took.into_iter().flatten().collect()
}

/// Runs `sluice plugin <args>` against `node`'s admin API.
async fn plugin_cli(node: &Node, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("plugin")
        .args(args)
        .args(["--admin", &node.url, "--token", TOKEN])
        .output()
        .await
        .expect("run sluice plugin")
}

async fn book_version(client: &reqwest::Client, node: &Node) -> u64 {
    let book: Value = client
        .get(node.url("/admin/releases"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("book")
        .json()
        .await
        .expect("json");
    book["version"].as_u64().unwrap_or(0)
}

fn write_json(dir: &Path, name: &str, value: Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, value.to_string()).expect("write");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_reaches_every_node_broken_pushes_change_nothing_rollback_works() {
    let redis = RedisServer::start();
    let mock = sluice::mock::spawn(Default::default());
    let config = node_config(&mock, &redis);
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&config, &[])).collect();
    let fleet: Vec<&Node> = nodes.iter().collect();
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().expect("tempdir");
    for node in &fleet {
        assert_eq!(
            request_limit(&node.url("/v1/chat/completions")).await,
            "100000"
        );
    }

    // A release with its own config, pushed through the first node.
    let v2 = write_json(
        dir.path(),
        "v2.json",
        json!({"anonymous": {"requests_per_minute": 200000, "tokens_per_minute": 100000000}}),
    );
    let throttle = component("sluice_plugin_throttle").display().to_string();
    let pushed = Instant::now();
    let out = plugin_cli(
        &nodes[0],
        &["push", &throttle, "--slot", "throttle", "--config", &v2],
    )
    .await;
    assert!(
        out.status.success(),
        "push failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let push_ms = pushed.elapsed();
    let took = all_serve(&fleet, "200000").await;
    eprintln!("push took {push_ms:?}; then every node served it after {took:?}");
    let version = book_version(&client, &nodes[1]).await;

    // Broken pushes: refused by the pushing node, published nowhere.
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not a component at all").expect("write");
    let trap = write_json(dir.path(), "trap.json", json!({"mode": "trap-in-init"}));
    let hostile = component("sluice_plugin_hostile").display().to_string();
    let cache_key = component("sluice_plugin_cache_key").display().to_string();
    let garbage = garbage.display().to_string();
    let broken: [(&str, Vec<&str>, &str); 3] = [
        (
            "garbage",
            vec!["push", &garbage, "--slot", "throttle"],
            "not a WebAssembly binary",
        ),
        (
            "trap in init",
            vec!["push", &hostile, "--slot", "throttle", "--config", &trap],
            "init",
        ),
        (
            "wrong world",
            vec!["push", &cache_key, "--slot", "throttle"],
            "does not provide throttle",
        ),
    ];
    for (what, args, reason) in broken {
        let out = plugin_cli(&nodes[2], &args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: push succeeded");
        assert!(stderr.contains("422"), "{what}: {stderr}");
        assert!(stderr.contains(reason), "{what}: {stderr}");
    }
    assert_eq!(book_version(&client, &nodes[0]).await, version);
    for node in &fleet {
        assert_eq!(
            request_limit(&node.url("/v1/chat/completions")).await,
            "200000"
        );
    }
    let listing: Value = client
        .get(nodes[2].url("/admin/plugins"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(listing["refused"].as_array().map(Vec::len), Some(3));
    assert_eq!(listing["fleet"], true);

    // A node that starts now serves the current release from the start.
    let late = Node::start(&config, &[]);
    assert_eq!(
        request_limit(&late.url("/v1/chat/completions")).await,
        "200000"
    );

    // Rollback (through another node) returns everyone to the configured plugin.
    let out = plugin_cli(&nodes[1], &["rollback", "--slot", "throttle"]).await;
    assert!(
        out.status.success(),
        "rollback failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut everyone = fleet.clone();
    everyone.push(&late);
    let took = all_serve(&everyone, "100000").await;
    eprintln!("rollback served everywhere after {took:?}");

    // Nothing left to roll back: a clear refusal.
    let out = plugin_cli(&nodes[0], &["rollback", "--slot", "throttle"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no release to roll back"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `sluice plugin <args> --redis URL` (no node involved).
async fn plugin_cli_redis(redis: &RedisServer, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("plugin")
        .args(args)
        .args(["--redis", &redis.url()])
        .env_remove("SLUICE_ADMIN_TOKEN")
        .output()
        .await
        .expect("run sluice plugin")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_straight_to_redis_validates_before_publishing() {
    let redis = RedisServer::start();
    let mock = sluice::mock::spawn(Default::default());
    let node = Node::start(&node_config(&mock, &redis), &[]);
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        request_limit(&node.url("/v1/chat/completions")).await,
        "100000"
    );

    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"garbage").expect("write");
    let out = plugin_cli_redis(
        &redis,
        &["push", &garbage.display().to_string(), "--slot", "throttle"],
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a WebAssembly binary"), "{stderr}");
    assert_eq!(book_version(&client, &node).await, 0);

    let v2 = write_json(
        dir.path(),
        "v2.json",
        json!({"anonymous": {"requests_per_minute": 200000, "tokens_per_minute": 100000000}}),
    );
    let throttle = component("sluice_plugin_throttle").display().to_string();
    let out = plugin_cli_redis(
        &redis,
        &["push", &throttle, "--slot", "throttle", "--config", &v2],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    all_serve(&[&node], "200000").await;

    let out = plugin_cli_redis(&redis, &["rollback", "--slot", "throttle"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    all_serve(&[&node], "100000").await;
}
