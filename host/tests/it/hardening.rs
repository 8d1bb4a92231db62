//! Hostile but fair clients and misconfigured upstreams: what they may not
//! get out of the gateway (a forged log line, the operator's provider key).

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use sluice::mock::MockConfig;

use crate::support::gateway::{TestGateway, providers};

#[tokio::test]
async fn a_model_name_with_a_newline_writes_one_escaped_log_line() {
    let up = sluice::mock::spawn(MockConfig::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[telemetry]\nlog_format = \"text\"\nlog_level = \"info\"\n",
            providers(&up)
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let url = line
        .trim()
        .strip_prefix("sluice listening on ")
        .expect("listening")
        .to_owned();

    let forged =
        "gpt-4o-mini\n2026-11-29T00:00:00.000000Z  INFO sluice::access: forged-entry status=200";
    let long = format!("gpt-{}", "x".repeat(1 << 20));
    for model in [forged, long.as_str()] {
        reqwest::Client::new()
            .post(format!("{url}/v1/chat/completions"))
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .expect("request");
    }
    let _ = child.kill();
    let mut log = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut log)
        .expect("log");
    let _ = child.wait();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("forged-entry")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("sluice::access"), "{}", lines[0]);
    assert!(lines[0].contains("gpt-4o-mini\\n2026"), "{}", lines[0]);
    // The megabyte model name is logged cut short.
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 4096, "a log line of {longest} bytes");
}

#[tokio::test]
async fn an_upstream_401_does_not_reveal_the_upstream_key() {
    let up = sluice::mock::spawn(MockConfig {
        expected_key: Some("the-right-key".into()),
        ..MockConfig::default()
    });
    // providers() configures the upstream key `sk-upstream-secret`.
    let gw = TestGateway::start(&providers(&up)).await;
    let r = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.expect("json");
    let text = body.to_string();
    assert!(!text.contains("sk-upstream-secret"), "{text}");
    assert!(text.contains("credentials"), "{text}");
}

#[tokio::test]
async fn http11_without_exactly_one_host_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = sluice::mock::spawn(MockConfig::default());
    let gw = TestGateway::start(&providers(&up)).await;
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    for hosts in ["", "host: a\r\nhost: b\r\n", "host: a\r\n"] {
        let mut conn = tokio::net::TcpStream::connect(gw.addr)
            .await
            .expect("connect");
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\n{hosts}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.expect("read");
        let status = answer.split(' ').nth(1).unwrap_or("");
        let expected = if hosts == "host: a\r\n" { "200" } else { "400" };
        assert_eq!(status, expected, "{hosts:?}: {answer}");
    }
}

/// `/metrics` names tenants and their usage: with `metrics_token` it needs
/// the bearer token, and with `metrics_on_admin_listen` it leaves the
/// public listener for the admin one.
#[tokio::test]
async fn metrics_are_behind_their_token_or_on_the_admin_listener() {
    let up = sluice::mock::spawn(MockConfig::default());
    let client = reqwest::Client::new();
    let gw = TestGateway::start(&format!(
        "{}\n[server]\nmetrics_token = \"scrape-secret\"\n",
        providers(&up)
    ))
    .await;
    let open = client.get(gw.url("/metrics")).send().await.expect("get");
    assert_eq!(open.status(), 401);
    let body: Value = open.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("metrics_token")),
        "{body}"
    );
    let wrong = client
        .get(gw.url("/metrics"))
        .bearer_auth("guess")
        .send()
        .await
        .expect("get");
    assert_eq!(wrong.status(), 401);
    let scrape = client
        .get(gw.url("/metrics"))
        .bearer_auth("scrape-secret")
        .send()
        .await
        .expect("get");
    assert_eq!(scrape.status(), 200);
    assert!(scrape.text().await.expect("text").contains("# EOF"));
    // The rest of the public surface is unaffected.
    let health = client.get(gw.url("/healthz")).send().await.expect("get");
    assert_eq!(health.status(), 200);

    let gw = TestGateway::start(&format!(
        "{}\n[server]\nadmin_token = \"adm\"\nadmin_listen = \"127.0.0.1:0\"\nmetrics_on_admin_listen = true\n",
        providers(&up)
    ))
    .await;
    let public = client.get(gw.url("/metrics")).send().await.expect("get");
    assert_eq!(public.status(), 404, "no /metrics on the public listener");
    let admin_public = client
        .get(gw.url("/admin/plugins"))
        .bearer_auth("adm")
        .send()
        .await
        .expect("get");
    assert_eq!(
        admin_public.status(),
        404,
        "no /admin on the public listener"
    );
    let admin = format!("http://{}", gw.spawn_admin_listener().await);
    let scrape = client
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .expect("get");
    assert_eq!(scrape.status(), 200, "scrapers need no admin token");
}

/// A config with an admin token but nowhere private to serve `/admin` is
/// refused, naming the field and the two ways out.
#[test]
fn an_admin_token_without_a_private_listener_is_refused() {
    let err = sluice::config::Config::from_toml_str("[server]\nadmin_token = \"t\"\n", &|_| None)
        .expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("server.admin_listen"), "{text}");
    assert!(text.contains("admin_on_listen"), "{text}");
}
