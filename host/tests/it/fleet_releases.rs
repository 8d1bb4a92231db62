//! Fleet releases: three `sluice serve` processes on one redis-server. A
//! push through one node's admin API changes the behaviour of all three
//! within a second; broken pushes change nothing anywhere and the push
//! command fails with the reason; a node started later serves the current
//! release; rollback returns every node to the previous behaviour.
//!
//! When Redis loses its data, nodes keep serving their release and say so
//! (`/readyz`, a WARN line, `sluice_release_book_lost`); two nodes never
//! name one release while serving different plugins; a push with
//! `--new-book` brings the fleet back to one release.

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
# Generous: on a loaded test machine a 50 ms bound marks Redis failing.
op_timeout_ms = 2000

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
    all_serve_within(nodes, want, FLEET_DEADLINE).await
}

/// [`all_serve`] with another deadline.
async fn all_serve_within(nodes: &[&Node], want: &str, deadline: Duration) -> Vec<Duration> {
    let started = Instant::now();
    let mut took = vec![None; nodes.len()];
    while took.iter().any(Option::is_none) {
        for (i, node) in nodes.iter().enumerate() {
            if took[i].is_none() && request_limit(&node.url("/v1/chat/completions")).await == want {
                took[i] = Some(started.elapsed());
            }
        }
        assert!(
            started.elapsed() < deadline,
            "not every node serves {want} within {deadline:?}: {took:?}"
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
    book["book"]["version"].as_u64().unwrap_or(0)
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

/// How long the data-loss tests wait for nodes: to notice the loss (a
/// restart means a reconnect first) or to switch. Not the fleet's switch
/// target ([`FLEET_DEADLINE`]), which the first test holds them to.
const NOTICE_DEADLINE: Duration = Duration::from_secs(10);

async fn get_json(client: &reqwest::Client, node: &Node, path: &str) -> Value {
    client
        .get(node.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect(path)
        .json()
        .await
        .expect("json")
}

/// The throttle slot's source and hash on `node`.
async fn throttle_source(client: &reqwest::Client, node: &Node) -> (String, String) {
    let listing = get_json(client, node, "/admin/plugins").await;
    let slot = listing["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .find(|p| p["slot"] == "throttle")
        .expect("throttle slot")
        .clone();
    (
        slot["source"].as_str().expect("source").to_string(),
        slot["hash"].as_str().expect("hash").to_string(),
    )
}

/// What `node` serves in the throttle slot: (source, hash, the limit its
/// config gives), or None when it switched while being asked.
async fn serving(client: &reqwest::Client, node: &Node) -> Option<(String, String, String)> {
    let before = throttle_source(client, node).await;
    let limit = request_limit(&node.url("/v1/chat/completions")).await;
    let after = throttle_source(client, node).await;
    (before == after).then_some((before.0, before.1, limit))
}

/// Pushes the throttle component with `limit` requests per minute through
/// `node`'s admin API (a new book when `new_book`); the status and body.
async fn push_throttle(
    client: &reqwest::Client,
    node: &Node,
    limit: u64,
    new_book: bool,
) -> (u16, Value) {
    let config =
        json!({"anonymous": {"requests_per_minute": limit, "tokens_per_minute": 100000000}});
    let query = if new_book { "?new_book=true" } else { "" };
    let resp = client
        .post(node.url(&format!("/admin/plugins/throttle{query}")))
        .bearer_auth(TOKEN)
        .header("x-sluice-plugin-config", config.to_string())
        .body(std::fs::read(component("sluice_plugin_throttle")).expect("component"))
        .send()
        .await
        .expect("push");
    (resp.status().as_u16(), resp.json().await.expect("json"))
}

/// Pauses (SIGSTOP) or resumes (SIGCONT) a node, as a long GC pause or a
/// VM migration would.
fn signal(node: &Node, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &node.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_never_serve_different_plugins_under_one_release_id_after_redis_loses_its_data() {
    let redis = RedisServer::start();
    let mock = sluice::mock::spawn(Default::default());
    let config = node_config(&mock, &redis);
    let a = Node::start(&config, &[]);
    let b = Node::start(&config, &[]);
    let client = reqwest::Client::new();

    let (status, body) = push_throttle(&client, &a, 200000, false).await;
    assert_eq!(status, 200, "{body}");
    all_serve_within(&[&a, &b], "200000", NOTICE_DEADLINE).await;

    // Node a is paused while Redis loses its data and another release goes
    // out through node b (its operator starting a new book): a wakes up to
    // a book it never saw vanish.
    signal(&a, "-STOP");
    redis.cmd(&["FLUSHALL"]).expect("flushall");
    let (status, body) = push_throttle(&client, &b, 300000, true).await;
    signal(&a, "-CONT");
    assert_eq!(status, 200, "{body}");

    // Until both serve release B, whenever they name the same release they
    // serve the same component with the same config.
    let deadline = Instant::now() + NOTICE_DEADLINE;
    loop {
        assert!(Instant::now() < deadline, "the nodes did not converge");
        let (Some(on_a), Some(on_b)) = (serving(&client, &a).await, serving(&client, &b).await)
        else {
            continue;
        };
        if on_a.0 == on_b.0 {
            assert_eq!(
                on_a, on_b,
                "two nodes serve different plugins under one release"
            );
            if on_a.2 == "300000" {
                break;
            }
        }
    }
}

/// Polls `node`'s `/readyz` until its `releases.status` is `want`.
async fn releases_status(client: &reqwest::Client, node: &Node, want: &str) -> Value {
    let deadline = Instant::now() + NOTICE_DEADLINE;
    loop {
        let resp = client
            .get(node.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        let code = resp.status();
        let body: Value = resp.json().await.expect("json");
        if body["releases"]["status"] == want && body["status"] == "ready" {
            assert_eq!(code, 200);
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{} never reported releases {want}: {body}",
            node.url
        );
    }
}

async fn book_lost_metric(client: &reqwest::Client, node: &Node) -> String {
    let text = client
        .get(node.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find(|l| l.starts_with("sluice_release_book_lost "))
        .unwrap_or("no sluice_release_book_lost")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_keep_their_release_when_redis_loses_its_data_and_a_new_book_brings_them_back() {
    let mut redis = RedisServer::start();
    let mock = sluice::mock::spawn(Default::default());
    let config = node_config(&mock, &redis);
    let a = Node::start(&config, &[]);
    let b = Node::start(&config, &[]);
    let fleet = [&a, &b];
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let throttle = component("sluice_plugin_throttle").display().to_string();

    // Release A everywhere.
    let v2 = write_json(
        dir.path(),
        "v2.json",
        json!({"anonymous": {"requests_per_minute": 200000, "tokens_per_minute": 100000000}}),
    );
    let out = plugin_cli(
        &a,
        &["push", &throttle, "--slot", "throttle", "--config", &v2],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    all_serve_within(&fleet, "200000", NOTICE_DEADLINE).await;
    let release_a = throttle_source(&client, &a).await;
    assert_eq!(throttle_source(&client, &b).await, release_a);
    for node in fleet {
        assert_eq!(
            book_lost_metric(&client, node).await,
            "sluice_release_book_lost 0"
        );
    }

    // Redis restarts without persistence: the book is gone.
    redis.restart();
    let restarted = Instant::now();
    for node in fleet {
        let ready = releases_status(&client, node, "missing").await;
        eprintln!(
            "{} reported the book missing {:?} after the restart",
            node.url,
            restarted.elapsed()
        );
        let message = ready["releases"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("--new-book"), "{ready}");
        // Still serving release A, not the configured plugin.
        assert_eq!(throttle_source(&client, node).await, release_a);
        assert_eq!(
            request_limit(&node.url("/v1/chat/completions")).await,
            "200000"
        );
        assert_eq!(
            book_lost_metric(&client, node).await,
            "sluice_release_book_lost 1"
        );
        let releases = get_json(&client, node, "/admin/releases").await;
        assert_eq!(releases["book"], Value::Null, "{releases}");
        assert_eq!(releases["node"]["status"], "missing", "{releases}");
        assert_eq!(releases["serving"][0]["slot"], "throttle", "{releases}");
        assert_eq!(releases["serving"][0]["source"], release_a.0.as_str());
    }

    // A push does not silently start a new book.
    let v3 = write_json(
        dir.path(),
        "v3.json",
        json!({"anonymous": {"requests_per_minute": 300000, "tokens_per_minute": 100000000}}),
    );
    let push_b: [&str; 6] = ["push", &throttle, "--slot", "throttle", "--config", &v3];
    let out = plugin_cli(&b, &push_b).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a push wrote over a lost book");
    assert!(
        stderr.contains("409") && stderr.contains("--new-book"),
        "{stderr}"
    );
    let out = plugin_cli(&b, &["status"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: "));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"missing\""));
    for node in fleet {
        assert_eq!(throttle_source(&client, node).await, release_a);
        // Said loudly, once.
        let log = node.log();
        let warned: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("is missing from the state"))
            .collect();
        assert_eq!(warned.len(), 1, "{warned:#?}");
    }

    // The documented recovery: push with --new-book.
    let mut with_new_book = push_b.to_vec();
    with_new_book.push("--new-book");
    let out = plugin_cli(&b, &with_new_book).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed: Value = serde_json::from_slice(&out.stdout).expect("json");
    let release_b = format!("release:{}", pushed["release"]["id"].as_str().expect("id"));
    let took = all_serve_within(&fleet, "300000", NOTICE_DEADLINE).await;
    eprintln!("after the push with --new-book every node served it after {took:?}");
    for node in fleet {
        assert_eq!(throttle_source(&client, node).await.0, release_b);
        releases_status(&client, node, "ok").await;
        assert_eq!(
            book_lost_metric(&client, node).await,
            "sluice_release_book_lost 0"
        );
    }
    assert_ne!(release_a.0, release_b);
}
