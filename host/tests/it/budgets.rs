//! Prices, budgets, spend records and alerts (docs/budgets.md).
//!
//! The fleet test runs three `sluice serve` processes on one real Redis, a
//! tenant with a $0.05 total budget, and a mix of streamed and JSON requests
//! with and without `max_tokens` from several clients at once; then checks
//! the budget held, `/admin/spend` agrees with the usage the mock reported,
//! each alert fired once with a valid signature, and the official OpenAI
//! SDK sees its quota error.
//!
//! Prices are set in the test's config so that one answer costs a sizeable
//! part of the budget: output dominates ($80 per million tokens) and the
//! mock's answer echoes the prompt, so a 200-character prompt costs about
//! $0.0045 and its worst case about $0.0055.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::support::gateway::{TestGateway, mock, providers};
use crate::support::node::Node;
use crate::support::redis::RedisServer;

const ADMIN: &str = "adm-budget-test";
const SECRET: &str = "whsec-budget-test";
/// USD per million tokens, as pico-USD per token.
const INPUT_PICO: u64 = 1_000_000;
const OUTPUT_PICO: u64 = 80_000_000;
const MAX_OUTPUT: u64 = 64;
const LIMIT_NANO: i64 = 50_000_000;

/// Alerts as the receiver accepted them: body and signature header.
type Received = Arc<Mutex<Vec<(Bytes, String)>>>;

/// An HTTP server in the test that records every POST; its URL. It fails
/// the first delivery of each alert with a 500, so each is retried once.
async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    async fn hook(
        State(got): State<Received>,
        headers: HeaderMap,
        body: Bytes,
    ) -> axum::http::StatusCode {
        static REFUSED: Mutex<Vec<Bytes>> = Mutex::new(Vec::new());
        let mut refused = REFUSED.lock();
        if !refused.contains(&body) {
            refused.push(body);
            return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
        }
        let sig = headers
            .get(sluice::alerts::SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        got.lock().push((body, sig));
        axum::http::StatusCode::OK
    }
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), got)
}

fn prices_toml() -> String {
    format!(
        r#"
[[prices]]
model = "gpt-*"
input_per_mtok = {}
output_per_mtok = {}
max_output_tokens = {MAX_OUTPUT}
"#,
        INPUT_PICO as f64 / 1e6,
        OUTPUT_PICO as f64 / 1e6
    )
}

fn fleet_config(up: &sluice::mock::MockHandle, redis: &RedisServer, hook: &str) -> String {
    format!(
        r#"
[server]
admin_token = "{ADMIN}"
admin_on_listen = true

{providers}
{prices}
[state]
kind = "redis"
url = "{redis}"
on_error = "fail-closed"
op_timeout_ms = 2000

[[tenants]]
name = "acme"
keys = ["sk-acme"]
budget_usd = {{ total = 0.05 }}

[[alerts.webhooks]]
url = "{hook}"
secret = "{SECRET}"

[plugins.throttle]
failure = "fail-closed"
[plugins.throttle.limits]
deadline_ms = 2000
[plugins.cache_key.limits]
deadline_ms = 2000
"#,
        providers = providers(up),
        prices = prices_toml(),
        redis = redis.url(),
    )
}

/// The cost of `usage` at the test's prices, computed here.
fn cost_nano(prompt: u64, completion: u64) -> i64 {
    ((prompt * INPUT_PICO + completion * OUTPUT_PICO).div_ceil(1000)) as i64
}

/// One request's outcome: status, usage, worst case, error body.
#[derive(Debug)]
struct Outcome {
    status: u16,
    usage: Option<(u64, u64)>,
    header_cost: Option<String>,
    error: Value,
    retry_after: Option<String>,
}

fn body(prompt: &str, stream: bool, max_tokens: Option<u64>) -> Value {
    let mut b = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": prompt}],
    });
    if stream {
        b["stream"] = json!(true);
        b["stream_options"] = json!({"include_usage": true});
    }
    if let Some(m) = max_tokens {
        b["max_tokens"] = json!(m);
    }
    b
}

/// The worst case of `b` as the docs define it: every body byte an input
/// token, plus `max_tokens` or the model's max output.
fn worst_nano(b: &Value, max_tokens: Option<u64>) -> i64 {
    let bytes = serde_json::to_vec(b).unwrap().len() as u64;
    cost_nano(bytes, max_tokens.unwrap_or(MAX_OUTPUT))
}

async fn send(client: &reqwest::Client, url: &str, key: &str, b: &Value) -> Outcome {
    let r = client
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .body(serde_json::to_vec(b).unwrap())
        .header("content-type", "application/json")
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let header_cost = header("x-sluice-cost-usd");
    let retry_after = header("retry-after");
    let text = r.text().await.unwrap_or_default();
    if status != 200 {
        return Outcome {
            status,
            usage: None,
            header_cost,
            error: serde_json::from_str(&text).unwrap_or(Value::Null),
            retry_after,
        };
    }
    let usage_of = |v: &Value| {
        let u = v.get("usage")?;
        Some((
            u.get("prompt_tokens")?.as_u64()?,
            u.get("completion_tokens")?.as_u64()?,
        ))
    };
    let usage = if b["stream"] == json!(true) {
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find_map(|v| usage_of(&v))
    } else {
        serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| usage_of(&v))
    };
    Outcome {
        status,
        usage,
        header_cost,
        error: Value::Null,
        retry_after,
    }
}

async fn admin_spend(client: &reqwest::Client, url: &str, query: &str) -> reqwest::Response {
    client
        .get(format!("{url}/admin/spend?{query}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("admin spend")
}

/// Polls `/admin/spend` until it counts `requests` requests; its total.
async fn settled_total(client: &reqwest::Client, url: &str, requests: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v: Value = admin_spend(client, url, "group_by=tenant")
            .await
            .json()
            .await
            .unwrap();
        if v["total"]["requests"].as_i64() == Some(requests) || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks a refusal: 429 `insufficient_quota` whose own numbers show the
/// budget could not cover the worst case.
fn check_refusal(o: &Outcome) {
    assert_eq!(o.status, 429, "{o:?}");
    assert_eq!(o.error["error"]["code"], "insufficient_quota", "{o:?}");
    assert_eq!(o.error["error"]["type"], "insufficient_quota", "{o:?}");
    assert!(o.retry_after.is_none(), "a total budget never resets");
    let msg = o.error["error"]["message"].as_str().unwrap();
    let dollars: Vec<f64> = msg
        .split('$')
        .skip(1)
        .filter_map(|s| {
            s.split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .next()?
                .trim_end_matches('.')
                .parse()
                .ok()
        })
        .collect();
    let [limit, used, worst] = dollars[..] else {
        panic!("three amounts in {msg:?}");
    };
    assert!(
        used + worst > limit - 1e-6,
        "refused although {used} + {worst} fits {limit}: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_total_budget_holds_across_three_nodes_and_spend_adds_up() {
    let up = mock();
    let redis = RedisServer::start();
    let (hook, received) = receiver().await;
    let config = fleet_config(&up, &redis, &hook);
    let nodes: Vec<Node> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| Node::start(&config, &[])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let client = reqwest::Client::new();

    // Phase 1: six clients at once, mixed, until the budget refuses.
    let prompt = |i: usize| format!("client request {i:03} {}", "x".repeat(180));
    let mut outcomes = Vec::new();
    for batch in 0..5 {
        let calls = (0..6).map(|j| {
            let i = batch * 6 + j;
            let (client, url) = (client.clone(), urls[i % 3].clone());
            let stream = i % 2 == 0;
            let max_tokens = (i % 3 != 0).then_some(60);
            let b = body(&prompt(i), stream, max_tokens);
            async move { (send(&client, &url, "sk-acme", &b).await, stream) }
        });
        outcomes.extend(futures::future::join_all(calls).await);
    }
    let mut expected_cost = 0i64;
    let mut admitted = 0i64;
    for (o, stream) in &outcomes {
        match o.status {
            200 => {
                let (p, c) = o.usage.expect("usage on every answer");
                let cost = cost_nano(p, c);
                expected_cost += cost;
                admitted += 1;
                if !stream {
                    let header: f64 = o.header_cost.as_deref().unwrap().parse().unwrap();
                    assert!((header - cost as f64 / 1e9).abs() < 1e-12, "{o:?}");
                } else {
                    assert!(o.header_cost.is_none(), "streams carry no cost header");
                }
            }
            _ => check_refusal(o),
        }
    }
    assert!(admitted >= 5, "the budget admits about ten: {outcomes:?}");
    assert!(
        outcomes.iter().any(|(o, _)| o.status == 429),
        "30 requests overrun $0.05"
    );

    // Phase 2: one small request at a time until refused. Nothing is in
    // flight, so a refusal means the recorded spend left less than this
    // request's worst case, computed here.
    let mut refused_tail = false;
    for i in 0..200 {
        let b = body(&format!("tail {i}"), i % 2 == 0, Some(2));
        let spent = settled_total(&client, &urls[0], admitted).await["total"]["cost_nano_usd"]
            .as_i64()
            .unwrap();
        let o = send(&client, &urls[i % 3], "sk-acme", &b).await;
        if o.status == 429 {
            check_refusal(&o);
            assert!(
                LIMIT_NANO - spent < worst_nano(&b, Some(2)),
                "refused while ${} left covered the worst case ${}",
                (LIMIT_NANO - spent) as f64 / 1e9,
                worst_nano(&b, Some(2)) as f64 / 1e9
            );
            refused_tail = true;
            break;
        }
        assert_eq!(o.status, 200, "{o:?}");
        let (p, c) = o.usage.expect("usage");
        expected_cost += cost_nano(p, c);
        admitted += 1;
    }
    assert!(refused_tail, "the tail reaches the limit");

    // The records over all nodes: within the budget, and equal to the cost
    // of the usage the mock reported.
    let v = settled_total(&client, &urls[1], admitted).await;
    let total = v["total"]["cost_nano_usd"].as_i64().unwrap();
    assert_eq!(v["total"]["requests"].as_i64(), Some(admitted), "{v}");
    assert!(
        total <= LIMIT_NANO,
        "spent {total} nano-USD of {LIMIT_NANO}"
    );
    assert_eq!(total, expected_cost, "{v}");
    assert_eq!(v["rows"][0]["tenant"], "acme");
    eprintln!(
        "budget fleet: {admitted} answered ({} refused at once), spent {total} of {LIMIT_NANO} nano-USD",
        outcomes.iter().filter(|(o, _)| o.status == 429).count(),
    );
    let csv = admin_spend(&client, &urls[2], "group_by=model,provider&format=csv")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        csv.starts_with("model,provider,cost_usd,saved_usd,requests"),
        "{csv}"
    );
    assert!(csv.contains("gpt-4o-mini,mock,"), "{csv}");
    // `sluice spend` prints the same as a table.
    let cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["spend", "--admin", &urls[0], "--group-by", "tenant,model"])
        .env("SLUICE_ADMIN_TOKEN", ADMIN)
        .output()
        .await
        .expect("sluice spend runs");
    let table = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(table.starts_with("TENANT  MODEL"), "{table}");
    assert!(
        table.contains(&format!("{:.6}", total as f64 / 1e9)),
        "the total in {table}"
    );
    let bad = admin_spend(&client, &urls[0], "group_by=colour").await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("group_by"));
    let unauthorized = client
        .get(format!("{}/admin/spend", urls[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);

    // Each threshold once, signed.
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.lock().len() < 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = received.lock().clone();
    let mut thresholds: Vec<u64> = got
        .iter()
        .map(|(body, sig)| {
            assert_eq!(
                *sig,
                format!("sha256={}", sluice::alerts::sign(SECRET.as_bytes(), body))
            );
            let a: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(a["subject"], "tenant:acme");
            assert_eq!(a["period"], "total");
            assert_eq!(a["kind"], "budget");
            a["threshold"].as_u64().unwrap()
        })
        .collect();
    thresholds.sort();
    assert_eq!(
        thresholds,
        vec![70, 85, 95, 100],
        "each threshold once, delivered on its retry"
    );

    // The official SDK sees its quota error.
    let script = r#"
import os, openai
c = openai.OpenAI(base_url=os.environ["SLUICE_URL"] + "/v1", api_key="sk-acme", max_retries=0)
try:
    c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "more"}])
    print("admitted")
except openai.RateLimitError as e:
    print(type(e).__name__, e.code)
"#;
    let out = tokio::process::Command::new("python3")
        .args(["-c", script])
        .env("SLUICE_URL", &urls[2])
        .output()
        .await
        .expect("python3 runs (scripts/setup installs the SDK)");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "RateLimitError insufficient_quota",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(nodes);
}

#[tokio::test]
async fn a_day_budget_refuses_with_retry_after_and_cache_hits_are_free() {
    let up = mock();
    let config = format!(
        "{}\n{}\n[[tenants]]\nname = \"day\"\nkeys = [\"sk-day\"]\nbudget_usd = {{ day = 0.01 }}\n",
        providers(&up),
        prices_toml()
    );
    let gw = TestGateway::start(&config).await;
    let client = reqwest::Client::new();
    let url = gw.url("");
    let b = body(&"y".repeat(200), false, Some(60));
    let first = send(&client, &url, "sk-day", &b).await;
    assert_eq!(first.status, 200, "{first:?}");
    let (p, c) = first.usage.unwrap();
    let cost = cost_nano(p, c);
    // The same request again is a cache hit: free, and counted as saved.
    let again = send(&client, &url, "sk-day", &b).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header_cost.as_deref(), Some("0"));
    let mut refusal = None;
    for i in 0..10 {
        let o = send(
            &client,
            &url,
            "sk-day",
            &body(&format!("{i} {}", "z".repeat(200)), false, Some(60)),
        )
        .await;
        if o.status != 200 {
            refusal = Some(o);
            break;
        }
    }
    let o = refusal.expect("$0.01 runs out");
    assert_eq!(o.status, 429);
    assert_eq!(o.error["error"]["code"], "insufficient_quota");
    let after: u64 = o.retry_after.as_deref().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&after), "until UTC midnight: {after}");
    // Saved spend shows in /metrics.
    let metrics = crate::support::scrape::metrics_text(gw.url("/metrics")).await;
    let saved = crate::support::scrape::sample(
        &metrics,
        "sluice_saved_usd_total{tenant=\"day\",provider=\"mock\",model=\"gpt-4o-mini\"}",
    )
    .unwrap_or(0.0);
    assert!(
        (saved - cost as f64 / 1e9).abs() < 1e-12,
        "{saved} vs {cost}"
    );
    let spent = crate::support::scrape::sample(
        &metrics,
        "sluice_spend_usd_total{tenant=\"day\",provider=\"mock\",model=\"gpt-4o-mini\"}",
    )
    .unwrap_or(0.0);
    assert!(spent > 0.0 && spent <= 0.01, "{spent}");
}

#[tokio::test]
async fn an_exhausted_budget_answers_in_each_providers_shape() {
    let up = mock();
    let config = format!(
        "{}\n[[tenants]]\nname = \"broke\"\nkeys = [\"sk-broke\"]\nbudget_usd = {{ month = 0 }}\n",
        providers(&up)
    );
    let gw = TestGateway::start(&config).await;
    let client = reqwest::Client::new();
    let openai = client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-broke")
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(openai.status(), 429);
    let after: u64 = openai.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=31 * 86_400).contains(&after), "until the 1st: {after}");
    let v: Value = openai.json().await.unwrap();
    assert_eq!(v["error"]["type"], "insufficient_quota");
    assert_eq!(v["error"]["code"], "insufficient_quota");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("month budget of tenant `broke`")
    );
    let anthropic = client
        .post(gw.url("/v1/messages"))
        .header("x-api-key", "sk-broke")
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-3-5-haiku-latest", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(anthropic.status(), 429);
    let v: Value = anthropic.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(up.calls(sluice::policy::Route::Chat), 0, "nothing was sent");
}

#[tokio::test]
async fn a_failed_request_gives_its_reservation_back_and_costs_nothing() {
    use sluice::spend::{BudgetLimits, BudgetSubject, Period};
    let up = mock();
    let config = format!(
        "{}\n[[prices]]\nmodel = \"mock-*\"\ninput_per_mtok = 1\noutput_per_mtok = 1\nmax_output_tokens = 100\n[[tenants]]\nname = \"t\"\nkeys = [\"sk-t\"]\nbudget_usd = {{ day = 1.0 }}\n",
        providers(&up)
    );
    let gw = TestGateway::start(&config).await;
    let r = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-t")
        .json(&json!({"model": "mock-error-400", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.headers().get("x-sluice-cost-usd").is_none(),
        "errors carry no cost"
    );
    let subject = BudgetSubject::Tenant("t".into());
    let limits = BudgetLimits {
        day: Some(1_000_000_000),
        ..BudgetLimits::default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let usage = gw.gw.spend.budgets.usage(&subject, &limits).await.unwrap();
        let day = usage.iter().find(|u| u.period == Period::Day).unwrap();
        if day.committed == 0 {
            assert_eq!(day.spent, 0);
            break;
        }
        assert!(Instant::now() < deadline, "the reservation stays: {day:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn bad_prices_budgets_and_webhooks_name_their_field() {
    use sluice::config::Config;
    let cases = [
        (
            "[[prices]]\nmodel = \"m\"\ninput_per_mtok = -1\noutput_per_mtok = 1\n",
            "prices[0].input_per_mtok",
        ),
        (
            "[[prices]]\nmodel = \"m\"\ninput_per_mtok = \"cheap\"\noutput_per_mtok = 1\n",
            "prices[0].input_per_mtok",
        ),
        (
            "[[prices]]\nmodel = \"m[\"\ninput_per_mtok = 1\noutput_per_mtok = 1\n",
            "prices[0].model",
        ),
        (
            "[[prices]]\nmodel = \"m\"\ninput_per_mtok = 1\noutput_per_mtok = 1\nmax_output_tokens = 0\n",
            "prices[0].max_output_tokens",
        ),
        (
            "[[tenants]]\nname = \"t\"\nkeys = [\"k\"]\nbudget_usd = { day = -5 }\n",
            "tenants[0].budget_usd.day",
        ),
        (
            "[[tenants]]\nname = \"t\"\nkeys = [\"k\"]\nbudget_usd = { month = \"lots\" }\n",
            "tenants[0].budget_usd.month",
        ),
        (
            "[[tenants]]\nname = \"t\"\nkeys = [\"k\"]\nbudget_usd = { week = 1 }\n",
            "tenants[0].budget_usd",
        ),
        (
            "[[alerts.webhooks]]\nurl = \"ftp://x\"\nsecret = \"s\"\n",
            "alerts.webhooks[0].url",
        ),
        (
            "[[alerts.webhooks]]\nurl = \"http://x\"\nsecret = \"\"\n",
            "alerts.webhooks[0].secret",
        ),
    ];
    for (text, field) in cases {
        let e = Config::from_toml_str(text, &|_| None).expect_err(text);
        assert!(
            e.field_path().is_some_and(|p| p.starts_with(field)),
            "{text}: {e} (path {:?}) should name {field}",
            e.field_path()
        );
    }
}

#[tokio::test]
async fn a_virtual_keys_budget_holds_beside_its_tenants() {
    let up = mock();
    let config = format!(
        "[server]\nadmin_token = \"{ADMIN}\"\nadmin_on_listen = true\n{}\n{}\n[[tenants]]\nname = \"roomy\"\nkeys = [\"sk-roomy\"]\nbudget_usd = {{ total = 100.0 }}\n",
        providers(&up),
        prices_toml()
    );
    let gw = TestGateway::start(&config).await;
    let client = reqwest::Client::new();
    let url = gw.url("");
    let made: Value = client
        .post(gw.url("/admin/keys"))
        .bearer_auth(ADMIN)
        .json(&json!({"tenant": "roomy", "name": "tight", "budget_usd": {"total": 0.005}}))
        .send()
        .await
        .expect("create key")
        .json()
        .await
        .expect("key json");
    let (id, secret) = (
        made["id"].as_str().expect("id"),
        made["key"].as_str().expect("key"),
    );
    // The tenant has $100 left; the key runs out of its $0.005.
    let mut refusal = None;
    for i in 0..20 {
        let o = send(
            &client,
            &url,
            secret,
            &body(&format!("{i} {}", "k".repeat(200)), false, Some(60)),
        )
        .await;
        if o.status != 200 {
            refusal = Some(o);
            break;
        }
    }
    let o = refusal.expect("$0.005 runs out");
    assert_eq!(o.status, 429, "{o:?}");
    assert_eq!(o.error["error"]["code"], "insufficient_quota");
    assert!(
        o.error["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains(id),
        "the refusal names the key: {o:?}"
    );
    // The tenant's own key is not held to the virtual key's budget.
    let other = send(
        &client,
        &url,
        "sk-roomy",
        &body("tenant key", false, Some(60)),
    )
    .await;
    assert_eq!(other.status, 200, "{other:?}");
}
