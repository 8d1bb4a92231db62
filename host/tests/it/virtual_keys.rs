//! Virtual keys made at run time through the admin API (`/admin/keys`) and
//! `sluice keys`: they authenticate, their limits and model globs hold,
//! only digests are stored, and a revocation or rotation made through one
//! node holds on every node within a second.

use std::time::{Duration, Instant};

use crate::support::gateway::{TestGateway, mock, providers};
use crate::support::node::Node;
use crate::support::redis::RedisServer;
use serde_json::{Value, json};

const TOKEN: &str = "keys-admin-secret";
/// A change through one node holds on every node within this.
const FLEET_DEADLINE: Duration = Duration::from_secs(1);

fn tenants() -> &'static str {
    r#"
[[tenants]]
name = "acme"
tier = "pro"
keys = ["sk-config-acme"]

[[tenants]]
name = "globex"
keys = ["sk-config-globex"]

# Polling until a change holds sends many requests: the tiers' own limits
# stay out of the way.
[plugins.throttle.config.tiers]
pro = { requests_per_minute = 1000000, tokens_per_minute = 1000000000 }
default = { requests_per_minute = 1000000, tokens_per_minute = 1000000000 }
"#
}

fn config(up: &sluice::mock::MockHandle, state: &str) -> String {
    format!(
        "{}\n{}\n[server]\nadmin_token = \"{TOKEN}\"\nadmin_on_listen = true\n{state}\n",
        providers(up),
        tenants()
    )
}

fn redis_state(redis: &RedisServer) -> String {
    format!(
        "[state]\nkind = \"redis\"\nurl = \"{}\"\nop_timeout_ms = 2000\n",
        redis.url()
    )
}

async fn admin(
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (reqwest::StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("admin call");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn create(base: &str, body: Value) -> (String, String) {
    let (status, key) = admin(
        reqwest::Method::POST,
        format!("{base}/admin/keys"),
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    (
        key["id"].as_str().expect("id").to_owned(),
        key["key"].as_str().expect("key").to_owned(),
    )
}

/// Status and body of a one-message chat with `secret` for `model`.
async fn chat_as(base: &str, secret: &str, model: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(secret)
        .json(&json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("chat");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls `secret` on `base` until it gets `want`; how long that took.
async fn until_status(base: &str, secret: &str, want: u16, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (status, body) = chat_as(base, secret, "gpt-4o-mini").await;
        if status == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{base} still answers {status} ({body}) after {within:?}, expected {want}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_made_through_the_admin_api_work_and_only_digests_are_stored() {
    let redis = RedisServer::start();
    let up = mock();
    let gw = TestGateway::start(&config(&up, &redis_state(&redis))).await;
    let base = gw.url("");
    let (id, secret) = create(
        &base,
        json!({"tenant": "acme", "name": "ci", "budget_usd": {"day": 1.5, "total": 20},
               "models": ["gpt-4o*"], "metadata": {"team": "search"}}),
    )
    .await;
    assert!(secret.starts_with("sk-sluice-"), "{secret}");
    assert!(id.starts_with("key_"), "{id}");

    let (status, body) = chat_as(&base, &secret, "gpt-4o-mini").await;
    assert_eq!(status, 200, "{body}");
    // Config keys keep working beside run-time ones.
    assert_eq!(
        chat_as(&base, "sk-config-globex", "gpt-4o-mini").await.0,
        200
    );
    assert_eq!(
        chat_as(&base, "sk-sluice-unknown", "gpt-4o-mini").await.0,
        401
    );

    // The model globs hold, in each provider's error shape.
    let (status, body) = chat_as(&base, &secret, "mock-large").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("mock-large"),
        "{body}"
    );
    let r = reqwest::Client::new()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", &secret)
        .json(&json!({"model": "claude-3-5-haiku", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("messages");
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["type"], "error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("claude-3-5-haiku")
    );

    // Listing and reading never show a secret, nor its digest.
    let digest = blake3::hash(secret.as_bytes()).to_hex().to_string();
    for url in [
        format!("{base}/admin/keys"),
        format!("{base}/admin/keys/{id}"),
    ] {
        let (status, body) = admin(reqwest::Method::GET, url, None).await;
        assert_eq!(status, 200);
        let text = body.to_string();
        assert!(!text.contains(&secret) && !text.contains(&digest), "{text}");
        assert!(text.contains(&id) && text.contains("search"), "{text}");
    }
    let (_, listed) = admin(reqwest::Method::GET, format!("{base}/admin/keys"), None).await;
    assert_eq!(
        listed["keys"][0]["budget_usd"],
        json!({"day": 1.5, "total": 20.0})
    );
    assert_eq!(listed["keys"][0]["status"], "active");

    // Redis holds the digest, never the secret.
    let keys = redis::from_redis_value::<Vec<String>>(
        redis
            .cmd(&["KEYS", "sluice:kv:{sluice:vkeys*"])
            .expect("KEYS"),
    )
    .expect("key names");
    assert!(keys.len() >= 3, "{keys:?}");
    let mut seen_digest = false;
    for k in &keys {
        assert!(!k.contains(&secret), "{k}");
        let value = redis.cmd_text(&["GET", k]);
        assert!(!value.contains(&secret), "{k} holds the secret");
        seen_digest |= k.contains(&digest) || value.contains(&digest);
    }
    assert!(seen_digest, "the digest is what is stored: {keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_rpm_holds_and_updates_apply() {
    let up = mock();
    let gw = TestGateway::start(&config(&up, "")).await;
    let base = gw.url("");
    let (id, secret) = create(&base, json!({"tenant": "globex", "rpm": 2})).await;
    assert_eq!(chat_as(&base, &secret, "gpt-4o-mini").await.0, 200);
    assert_eq!(chat_as(&base, &secret, "gpt-4o-mini").await.0, 200);
    let (status, body) = chat_as(&base, &secret, "gpt-4o-mini").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    // The other tenant's key is not affected.
    assert_eq!(
        chat_as(&base, "sk-config-globex", "gpt-4o-mini").await.0,
        200
    );

    // A tpm below one request's worst case refuses it outright.
    let (status, key) = admin(
        reqwest::Method::PATCH,
        format!("{base}/admin/keys/{id}"),
        Some(json!({"rpm": null, "tpm": 10})),
    )
    .await;
    assert_eq!(status, 200, "{key}");
    assert_eq!(key["rpm"], Value::Null);
    let (status, body) = chat_as(&base, &secret, "gpt-4o-mini").await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("tokens per minute")
    );
}

#[tokio::test]
async fn each_bad_input_gets_a_4xx_naming_the_field() {
    let up = mock();
    let gw = TestGateway::start(&config(&up, "")).await;
    let base = gw.url("");
    let cases = [
        (json!({"name": "no tenant"}), "tenant"),
        (json!({"tenant": "initech"}), "tenant"),
        (
            json!({"tenant": "acme", "budget_usd": {"day": -1}}),
            "budget_usd.day",
        ),
        (
            json!({"tenant": "acme", "budget_usd": {"month": "ten"}}),
            "budget_usd.month",
        ),
        (
            json!({"tenant": "acme", "budget_usd": {"total": "1e3x"}}),
            "budget_usd.total",
        ),
        (
            json!({"tenant": "acme", "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (
            json!({"tenant": "acme", "expires_at": 1_000_000_000}),
            "expires_at",
        ),
        (json!({"tenant": "acme", "rpm": -3}), "rpm"),
        (json!({"tenant": "acme", "models": ["gpt-[4"]}), "models[0]"),
        (json!({"tenant": "acme", "metadata": "x"}), "metadata"),
    ];
    for (body, field) in cases {
        let (status, answer) = admin(
            reqwest::Method::POST,
            format!("{base}/admin/keys"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["field"], field, "{body} -> {answer}");
        assert!(
            answer["error"].as_str().unwrap_or("").starts_with(field),
            "{answer}"
        );
    }
    for (method, path) in [
        (reqwest::Method::GET, "/admin/keys/key_nope"),
        (reqwest::Method::PATCH, "/admin/keys/key_nope"),
        (reqwest::Method::DELETE, "/admin/keys/key_nope"),
        (reqwest::Method::POST, "/admin/keys/key_nope/rotate"),
    ] {
        let body = (method == reqwest::Method::PATCH).then(|| json!({"rpm": 1}));
        let (status, answer) = admin(method.clone(), format!("{base}{path}"), body).await;
        assert_eq!(status, 404, "{method} {path}: {answer}");
        assert_eq!(answer["field"], "id");
        assert!(answer["error"].as_str().unwrap_or("").contains("key_nope"));
    }
    // Without the admin token: 401, nothing made.
    let r = reqwest::Client::new()
        .post(format!("{base}/admin/keys"))
        .json(&json!({"tenant": "acme"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 401);
    let (_, listed) = admin(reqwest::Method::GET, format!("{base}/admin/keys"), None).await;
    assert_eq!(listed["keys"], json!([]));
}

#[tokio::test]
async fn an_expired_key_gets_401() {
    let up = mock();
    let gw = TestGateway::start(&config(&up, "")).await;
    let base = gw.url("");
    let soon = sluice::keys::now_ms() + 400;
    let at = format!(
        "{}.{:03}Z",
        sluice::keys::format_rfc3339(soon).trim_end_matches('Z'),
        soon % 1000
    );
    let (_, secret) = create(&base, json!({"tenant": "acme", "expires_at": at})).await;
    assert_eq!(chat_as(&base, &secret, "gpt-4o-mini").await.0, 200);
    until_status(&base, &secret, 401, Duration::from_secs(5)).await;
    let (_, body) = chat_as(&base, &secret, "gpt-4o-mini").await;
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("expired"),
        "{body}"
    );
}

fn node_config(up: &sluice::mock::MockHandle, redis: &RedisServer) -> String {
    config(up, &redis_state(redis))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_through_node_a_refused_by_node_c_within_a_second_and_rotation_has_grace() {
    let redis = RedisServer::start();
    let up = mock();
    let cfg = node_config(&up, &redis);
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&cfg, &[])).collect();
    let (a, c) = (&nodes[0].url, &nodes[2].url);

    // Made through A, usable at once on C (one state read for a secret C
    // has not seen yet).
    let (id, secret) = create(a, json!({"tenant": "acme"})).await;
    for node in &nodes {
        let (status, body) = chat_as(&node.url, &secret, "gpt-4o-mini").await;
        assert_eq!(status, 200, "{}: {body}", node.url);
    }

    let (status, _) = admin(
        reqwest::Method::DELETE,
        format!("{a}/admin/keys/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let took = until_status(c, &secret, 401, FLEET_DEADLINE).await;
    let (_, body) = chat_as(c, &secret, "gpt-4o-mini").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("revoked"),
        "{body}"
    );
    eprintln!("revocation through A held on C after {took:?}");
    until_status(&nodes[1].url, &secret, 401, FLEET_DEADLINE).await;

    // Rotation: the old secret works through its grace period, then 401.
    let (id, old) = create(a, json!({"tenant": "globex"})).await;
    assert_eq!(chat_as(c, &old, "gpt-4o-mini").await.0, 200);
    let grace = Duration::from_secs(2);
    // The node's clock counts whole milliseconds.
    let at_least = grace - Duration::from_millis(5);
    // Taken before the call: the grace period cannot have started earlier.
    let sent = Instant::now();
    let (status, rotated) = admin(
        reqwest::Method::POST,
        format!("{a}/admin/keys/{id}/rotate"),
        Some(json!({"grace_seconds": grace.as_secs()})),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["key"].as_str().expect("new secret").to_owned();
    assert_ne!(new, old);
    until_status(c, &new, 200, FLEET_DEADLINE).await;
    // Within the grace period the old secret works on every node (a 401 is
    // acceptable only once the period may have ended: a slow machine).
    for node in &nodes {
        let (status, body) = chat_as(&node.url, &old, "gpt-4o-mini").await;
        assert!(
            status == 200 || sent.elapsed() >= at_least,
            "{}: {status} {body} within the grace period",
            node.url
        );
    }
    until_status(c, &old, 401, grace + Duration::from_secs(2)).await;
    assert!(
        sent.elapsed() >= at_least,
        "refused before the grace period ended"
    );
    let (_, body) = chat_as(c, &old, "gpt-4o-mini").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("rotated"),
        "{body}"
    );
    assert_eq!(chat_as(c, &new, "gpt-4o-mini").await.0, 200);
}

async fn keys_cli(node: &Node, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("keys")
        .args(args)
        .args(["--admin", &node.url, "--token", TOKEN])
        .output()
        .await
        .expect("run sluice keys");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keys_cli_drives_the_same_api() {
    let up = mock();
    let node = Node::start(&config(&up, ""), &[]);
    let (ok, out, err) = keys_cli(
        &node,
        &[
            "create",
            "--tenant",
            "acme",
            "--name",
            "cli",
            "--rpm",
            "50",
            "--model",
            "gpt-*",
            "--budget-day",
            "2.5",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).expect("json");
    let id = created["id"].as_str().expect("id").to_owned();
    let secret = created["key"].as_str().expect("key").to_owned();
    assert_eq!(created["budget_usd"]["day"], 2.5);
    assert_eq!(chat_as(&node.url, &secret, "gpt-4o-mini").await.0, 200);

    let (ok, out, err) = keys_cli(&node, &["list"]).await;
    assert!(ok, "{err}");
    assert!(
        out.starts_with("ID") && out.contains(&id) && !out.contains(&secret),
        "{out}"
    );

    let (ok, out, err) = keys_cli(&node, &["update", &id, "--tpm", "5000", "--clear", "rpm"]).await;
    assert!(ok, "{err}");
    let updated: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (updated["tpm"].clone(), updated["rpm"].clone()),
        (json!(5000), Value::Null)
    );

    let (ok, out, err) = keys_cli(&node, &["rotate", &id, "--grace-seconds", "0"]).await;
    assert!(ok, "{err}");
    let new = serde_json::from_str::<Value>(&out).expect("json")["key"]
        .as_str()
        .expect("new key")
        .to_owned();
    assert_eq!(chat_as(&node.url, &secret, "gpt-4o-mini").await.0, 401);
    assert_eq!(chat_as(&node.url, &new, "gpt-4o-mini").await.0, 200);

    let (ok, _, err) = keys_cli(&node, &["revoke", &id]).await;
    assert!(ok, "{err}");
    assert_eq!(chat_as(&node.url, &new, "gpt-4o-mini").await.0, 401);

    // Errors name the field and fail the command.
    let (ok, _, err) = keys_cli(&node, &["create", "--tenant", "initech"]).await;
    assert!(!ok && err.contains("tenant"), "{err}");
    let (ok, _, err) = keys_cli(
        &node,
        &["create", "--tenant", "acme", "--budget-total", "-4"],
    )
    .await;
    assert!(!ok && err.contains("budget_usd.total"), "{err}");
    let (ok, _, err) = keys_cli(&node, &["revoke", "key_nope"]).await;
    assert!(!ok && err.contains("key_nope"), "{err}");
}

/// A provider with three upstream keys under quotas, for two nodes on one
/// Redis.
fn quota_config(up: &sluice::mock::MockHandle, redis: &RedisServer) -> String {
    format!(
        r#"
[state]
kind = "redis"
url = "{redis}"
op_timeout_ms = 2000
limits = "exact"

[[providers]]
name = "pool"
kind = "openai"
base_url = "{url}"
keys = ["sk-up-0", "sk-up-1", "sk-up-2"]
models = ["gpt-*"]
key_quota = {{ rpm = 3, rpd = 1000 }}
# The first key is smaller.
key_quotas = [{{ rpm = 1 }}]

# One attempt: the retry policy would otherwise wait for a key to refill
# (within the request's deadline).
[retry]
max_attempts_cap = 1

[plugins.throttle.config]
anonymous = {{ requests_per_minute = 100000, tokens_per_minute = 100000000 }}
"#,
        redis = redis.url(),
        url = up.base_url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_key_quotas_skip_exhausted_keys_across_nodes() {
    let redis = RedisServer::start();
    let up = mock();
    let cfg = quota_config(&up, &redis);
    let nodes = [
        TestGateway::start(&cfg).await,
        TestGateway::start(&cfg).await,
    ];
    let client = reqwest::Client::new();
    let chat = |i: usize, n: usize| {
        client
            .post(nodes[i % 2].url("/v1/chat/completions"))
            .json(&json!({"model": "gpt-4o-mini", "max_tokens": 8,
                          "messages": [{"role": "user", "content": format!("q{n}")}]}))
            .send()
    };
    // 1 + 3 + 3 requests fit the three keys' minute quotas, on either node.
    for n in 0..7 {
        let r = chat(n, n).await.expect("chat");
        assert_eq!(r.status(), 200, "request {n}");
    }
    let mut per_key = std::collections::BTreeMap::new();
    for seen in up.requests() {
        *per_key
            .entry(seen.header("authorization").unwrap_or("").to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(
        per_key.into_iter().collect::<Vec<_>>(),
        [
            ("Bearer sk-up-0".to_owned(), 1),
            ("Bearer sk-up-1".to_owned(), 3),
            ("Bearer sk-up-2".to_owned(), 3)
        ]
    );
    // Every key is at its quota: 429 with retry-after, nothing sent.
    let r = chat(1, 99).await.expect("chat");
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("quota"),
        "{body}"
    );
    assert_eq!(up.requests().len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_key_costs_no_state_call_and_an_unknown_one_at_most_one() {
    use sluice::state::round_trips::counted;
    let redis = RedisServer::start();
    let up = mock();
    let cfg = config(&up, &redis_state(&redis));
    let a = TestGateway::start(&cfg).await;
    let c = TestGateway::start(&cfg).await;
    let (_, secret) = create(&a.url(""), json!({"tenant": "acme"})).await;

    // Node C has not seen the key yet, or has: at most one read either way.
    let (found, trips) = counted(c.gw.keys.authenticate(&secret)).await;
    assert!(found.expect("no error").is_some());
    assert!(trips <= 1, "{trips} round trips");
    // From then on it is C's own memory.
    for _ in 0..3 {
        let (found, trips) = counted(c.gw.keys.authenticate(&secret)).await;
        assert!(found.expect("no error").is_some());
        assert_eq!(trips, 0);
    }
    // An unknown secret: one read, then remembered as unknown.
    let (found, trips) = counted(c.gw.keys.authenticate("sk-sluice-nobody")).await;
    assert!(found.expect("no error").is_none());
    assert_eq!(trips, 1);
    let (found, trips) = counted(c.gw.keys.authenticate("sk-sluice-nobody")).await;
    assert!(found.expect("no error").is_none());
    assert_eq!(trips, 0);
}

#[tokio::test]
async fn the_reference_throttle_takes_daily_and_per_second_windows() {
    let up = mock();
    let gw = TestGateway::start(&format!(
        "{}\n[plugins.throttle.config]\nanonymous = {{ requests_per_day = 2, requests_per_second = 100, tokens_per_hour = 100000 }}\n",
        providers(&up)
    ))
    .await;
    let base = gw.url("");
    for _ in 0..2 {
        assert_eq!(chat_as(&base, "sk-any", "gpt-4o-mini").await.0, 200);
    }
    let (status, body) = chat_as(&base, "sk-any", "gpt-4o-mini").await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("requests (limit 2)"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_fails_known_keys_keep_working_and_changes_are_refused() {
    let mut redis = RedisServer::start();
    let up = mock();
    let gw = TestGateway::start(&config(
        &up,
        &format!(
            "[state]\nkind = \"redis\"\nurl = \"{}\"\non_error = \"fail-open\"\nop_timeout_ms = 300\n",
            redis.url()
        ),
    ))
    .await;
    let base = gw.url("");
    let (_, secret) = create(&base, json!({"tenant": "acme"})).await;
    assert_eq!(chat_as(&base, &secret, "gpt-4o-mini").await.0, 200);

    redis.kill();
    let started = Instant::now();
    while !gw.gw.state.is_degraded() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "Redis failure not noticed"
        );
        tokio::task::yield_now().await;
        // The key sync reads Redis every 200 ms; a request also notices.
        let _ = chat_as(&base, &secret, "gpt-4o-mini").await;
    }
    // The node's table still knows the key; the fallback knows none.
    for _ in 0..3 {
        let (status, body) = chat_as(&base, &secret, "gpt-4o-mini").await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = admin(
        reqwest::Method::POST,
        format!("{base}/admin/keys"),
        Some(json!({"tenant": "acme"})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("Redis"),
        "{body}"
    );
}

/// The value of the series `name{labels}` in a `/metrics` text (labels as
/// written there, e.g. `outcome="ok"`; empty for none).
fn series(text: &str, name: &str, labels: &str) -> Option<f64> {
    let want = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&want))
        .and_then(|v| v.trim().parse().ok())
}

async fn scrape(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_key_outcomes_and_the_key_cache_show_in_metrics() {
    let up = mock();
    let gw = TestGateway::start(&config(&up, "")).await;
    let base = gw.url("");
    let (id, secret) = create(&base, json!({"tenant": "acme"})).await;
    for _ in 0..2 {
        assert_eq!(chat_as(&base, &secret, "gpt-4o-mini").await.0, 200);
    }
    assert_eq!(
        chat_as(&base, "sk-sluice-nobody", "gpt-4o-mini").await.0,
        401
    );
    let text = scrape(&base).await;
    assert_eq!(
        series(&text, "sluice_virtual_keys", ""),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        series(&text, "sluice_virtual_key_auth_total", "outcome=\"ok\""),
        Some(2.0)
    );
    assert_eq!(
        series(
            &text,
            "sluice_virtual_key_auth_total",
            "outcome=\"unknown\""
        ),
        Some(1.0)
    );
    let (status, _) = admin(
        reqwest::Method::DELETE,
        format!("{base}/admin/keys/{id}"),
        None,
    )
    .await;
    assert!(status.is_success());
    assert_eq!(chat_as(&base, &secret, "gpt-4o-mini").await.0, 401);
    let text = scrape(&base).await;
    assert_eq!(
        series(
            &text,
            "sluice_virtual_key_auth_total",
            "outcome=\"refused\""
        ),
        Some(1.0),
        "a revoked key is refused"
    );
}

/// One upstream key with 300 tokens a minute; requests whose worst case is
/// about 130 tokens (two at most fit at once) and whose actual use is a
/// fraction of that.
fn tpm_config(up: &sluice::mock::MockHandle) -> String {
    format!(
        r#"
[[providers]]
name = "pool"
kind = "openai"
base_url = "{url}"
keys = ["sk-up-0"]
models = ["gpt-*"]
key_quota = {{ tpm = 300 }}

[retry]
max_attempts_cap = 1

[plugins.throttle.config]
anonymous = {{ requests_per_minute = 100000, tokens_per_minute = 100000000 }}
"#,
        url = up.base_url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_key_quota_tokens_settle_to_actual_usage() {
    let up = mock();
    let gw = TestGateway::start(&tpm_config(&up)).await;
    let client = reqwest::Client::new();
    // Each prompt differs, so none is answered from the cache.
    let chat = |max_tokens: u64, n: usize| {
        client
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": "gpt-4o-mini", "max_tokens": max_tokens,
                          "messages": [{"role": "user", "content": format!("hi {n}")}]}))
            .send()
    };
    // Eight requests of a ~130-token worst case: 1,040 tokens charged
    // against 300 a minute, unless each is settled to what it used. The
    // settle is written after the answer: a request that comes too soon
    // is polled until it fits (the bucket itself refills 5 tokens a second,
    // far too slowly to let eight through in the deadline).
    let mut used = 0u64;
    for n in 0..8 {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let r = chat(120, n).await.expect("chat");
            if r.status() == 200 {
                let v: Value = r.json().await.unwrap();
                used += v["usage"]["total_tokens"].as_u64().unwrap();
                break;
            }
            assert_eq!(r.status(), 429, "request {n}");
            assert!(
                Instant::now() < deadline,
                "request {n} refused: the quota was not settled"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(used < 300, "the requests used {used} tokens");
    assert_eq!(up.requests().len(), 8, "every answer came from upstream");
    let text = scrape(&gw.url("")).await;
    let headroom = series(
        &text,
        "sluice_upstream_key_quota_headroom_ratio",
        "provider=\"pool\",key=\"0\",window=\"tpm\"",
    )
    .expect("headroom series");
    assert!((0.0..1.0).contains(&headroom), "{headroom}");
    // A worst case above the whole quota: refused without calling, counted.
    let before = up.requests().len();
    assert_eq!(chat(1000, 99).await.unwrap().status(), 429);
    assert_eq!(up.requests().len(), before);
    let text = scrape(&gw.url("")).await;
    assert!(
        series(
            &text,
            "sluice_upstream_key_quota_exhaustions_total",
            "provider=\"pool\""
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
}
