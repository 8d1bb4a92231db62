//! The per-provider circuit breaker end to end (issue 12): a provider that
//! fails half its calls stays in service, a dead one is refused fast with a
//! clear 503 and gets traffic again after the cooldown, and a refusal moves
//! the request to another provider serving the model. A real sluice on
//! 127.0.0.1:0 and the mock provider; the breaker's own rules (window,
//! ratio, probes, cooldown) are unit-tested in `upstream/breaker.rs`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice::mock::{self, MockConfig, MockHandle};
use sluice::upstream::CircuitState;

use crate::support::gateway::TestGateway;

/// Throttle limits no test here reaches: only the breaker refuses.
const THROTTLE: &str = "[plugins.throttle.config]\nanonymous = { requests_per_minute = 10000000, tokens_per_minute = 10000000000 }\n";

fn failing_mock(error_rate: f64) -> MockHandle {
    mock::spawn(MockConfig {
        error_rate,
        ..MockConfig::default()
    })
}

/// A `[[providers]]` block for an OpenAI-style provider serving `gpt-*`.
fn provider(name: &str, mock: &MockHandle) -> String {
    format!(
        "[[providers]]\nname = \"{name}\"\nkind = \"openai\"\nbase_url = \"{}\"\nmodels = [\"gpt-*\"]\ntimeout_ms = 5000\n",
        mock.base_url()
    )
}

async fn chat(client: &reqwest::Client, gw: &TestGateway, prompt: &str) -> reqwest::Response {
    client
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}))
        .send()
        .await
        .expect("request")
}

/// The value of one series in `/metrics` (`name{labels}` as exposed).
async fn metric(gw: &TestGateway, series: &str) -> f64 {
    let text = crate::support::scrape::metrics_text(gw.url("/metrics")).await;
    crate::support::scrape::sample(&text, series)
        .unwrap_or_else(|| panic!("{series} not in /metrics"))
}

async fn transitions(gw: &TestGateway, provider: &str, to: &str) -> f64 {
    metric(
        gw,
        &format!("sluice_circuit_transitions_total{{provider=\"{provider}\",to=\"{to}\"}}"),
    )
    .await
}

async fn readyz(gw: &TestGateway) -> (u16, Value) {
    let r = reqwest::get(gw.url("/readyz")).await.expect("readyz");
    let status = r.status().as_u16();
    (status, r.json().await.expect("readyz json"))
}

fn circuit(gw: &TestGateway, provider: &str) -> CircuitState {
    gw.gw
        .upstreams
        .health()
        .into_iter()
        .find(|p| p.name == provider)
        .expect("provider")
        .circuit
}

/// Sends requests (at most 50) to a failing `provider` until its circuit
/// opens.
async fn trip(client: &reqwest::Client, gw: &TestGateway, provider: &str) {
    for i in 0..50 {
        if circuit(gw, provider) == CircuitState::Open {
            return;
        }
        chat(client, gw, &format!("trip {i}")).await;
    }
    panic!("the circuit of {provider} did not open within 50 requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_failing_half_its_calls_stays_in_service() {
    let up = failing_mock(0.5);
    // The retry plugin mends the failures: five attempts, short backoffs,
    // and a retry budget that allows one retry per request.
    let gw = TestGateway::start(&format!(
        "{}[retry]\nbudget_ratio = 1.0\n[plugins.retry.config]\nmax_attempts = 5\nbase_ms = 5\nmax_backoff_ms = 20\n{THROTTLE}",
        provider("mock", &up)
    ))
    .await;
    let client = reqwest::Client::new();

    // ~100 requests/s for 4 s.
    let requests = 400;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = Vec::with_capacity(requests);
    for i in 0..requests {
        tick.tick().await;
        let client = client.clone();
        let url = gw.url("/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": format!("half {i}")}]});
            match client.post(url).json(&body).send().await {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            }
        }));
    }
    let mut ok = 0;
    for task in tasks {
        if task.await.expect("task") == 200 {
            ok += 1;
        }
    }

    // The mock did fail about half of the attempts sent to it...
    let failed = metric(
        &gw,
        "sluice_upstream_attempts_total{provider=\"mock\",outcome=\"server_error\"}",
    )
    .await;
    let succeeded = metric(
        &gw,
        "sluice_upstream_attempts_total{provider=\"mock\",outcome=\"ok\"}",
    )
    .await;
    let ratio = failed / (failed + succeeded);
    assert!((0.4..0.6).contains(&ratio), "failure ratio {ratio}");
    // ...yet the breaker stayed closed and the clients were served.
    assert!(
        ok * 10 >= requests * 9,
        "{ok} of {requests} requests succeeded"
    );
    assert_eq!(transitions(&gw, "mock", "open").await, 0.0);
    assert_eq!(circuit(&gw, "mock"), CircuitState::Closed);
}

#[tokio::test]
async fn a_dead_provider_is_refused_fast_with_a_clear_503() {
    let up = failing_mock(1.0);
    let gw = TestGateway::start(&format!(
        "{}[breaker]\nmin_calls = 10\nopen_for_ms = 60000\n[plugins.retry.config]\nmax_attempts = 2\nbase_ms = 1\nmax_backoff_ms = 2\n{THROTTLE}",
        provider("mock", &up)
    ))
    .await;
    let client = reqwest::Client::new();
    trip(&client, &gw, "mock").await;
    let calls = up.total_calls();

    for i in 0..20 {
        let started = Instant::now();
        let r = chat(&client, &gw, &format!("refused {i}")).await;
        let took = started.elapsed();
        assert_eq!(r.status(), 503);
        let retry_after: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry_after), "retry-after {retry_after}");
        let body: Value = r.json().await.expect("json");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(
            message.starts_with("circuit breaker open: provider `mock` is failing"),
            "{message}"
        );
        // Nothing to wait for: no upstream call, no retry backoff.
        assert!(took < Duration::from_millis(500), "refusal took {took:?}");
    }
    assert_eq!(up.total_calls(), calls, "an open circuit sends nothing");

    // Refusals are not attempts; the state and transition are exported.
    assert_eq!(
        metric(&gw, "sluice_circuit_refusals_total{provider=\"mock\"}").await,
        20.0
    );
    assert_eq!(
        metric(
            &gw,
            "sluice_upstream_attempts_total{provider=\"mock\",outcome=\"connect_error\"}"
        )
        .await,
        0.0
    );
    assert_eq!(
        metric(&gw, "sluice_circuit_state{provider=\"mock\"}").await,
        1.0
    );
    assert_eq!(transitions(&gw, "mock", "open").await, 1.0);
    // The node stays ready: /readyz shows the breaker without failing.
    let (status, ready) = readyz(&gw).await;
    assert_eq!(status, 200);
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["providers"]["mock"]["circuit"], "open");
    assert!(ready["providers"]["mock"]["probe_in_ms"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_recovered_provider_gets_traffic_again_after_the_cooldown() {
    let up = failing_mock(1.0);
    let gw = TestGateway::start(&format!(
        "{}[breaker]\nmin_calls = 10\nopen_for_ms = 300\nhalf_open_probes = 2\n[plugins.retry.config]\nmax_attempts = 2\nbase_ms = 1\nmax_backoff_ms = 2\n{THROTTLE}",
        provider("mock", &up)
    ))
    .await;
    let client = reqwest::Client::new();
    trip(&client, &gw, "mock").await;
    let opened = Instant::now();
    up.set_error_rate(0.0);

    // Until the cooldown is over requests are refused without reaching
    // the mock; then they flow again.
    let deadline = opened + Duration::from_secs(10);
    let mut i = 0;
    let recovered = loop {
        assert!(Instant::now() < deadline, "no request succeeded in 10 s");
        let calls = up.total_calls();
        let r = chat(&client, &gw, &format!("recover {i}")).await;
        i += 1;
        if r.status() == 200 {
            break opened.elapsed();
        }
        assert_eq!(r.status(), 503);
        assert_eq!(up.total_calls(), calls, "a refusal reached the mock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Within the cooldown, plus a generous margin for a loaded machine.
    assert!(
        recovered < Duration::from_millis(300 + 1_500),
        "traffic came back after {recovered:?}"
    );
    // The second probe closes the circuit.
    let r = chat(&client, &gw, "second probe").await;
    assert_eq!(r.status(), 200);
    assert_eq!(circuit(&gw, "mock"), CircuitState::Closed);
    assert_eq!(transitions(&gw, "mock", "half-open").await, 1.0);
    assert_eq!(transitions(&gw, "mock", "closed").await, 1.0);
    assert_eq!(
        metric(&gw, "sluice_circuit_state{provider=\"mock\"}").await,
        0.0
    );
}

#[tokio::test]
async fn a_refused_request_moves_to_another_provider_serving_the_model() {
    let flaky = failing_mock(1.0);
    let backup = failing_mock(0.0);
    // Both serve gpt-*; config order makes `flaky` the first choice. No
    // fallback is configured in the retry plugin.
    let gw = TestGateway::start(&format!(
        "{}{}[breaker]\nmin_calls = 5\nopen_for_ms = 60000\n[plugins.retry.config]\nmax_attempts = 2\nbase_ms = 1\nmax_backoff_ms = 2\n{THROTTLE}",
        provider("flaky", &flaky),
        provider("backup", &backup)
    ))
    .await;
    let client = reqwest::Client::new();
    trip(&client, &gw, "flaky").await;
    let (flaky_calls, backup_calls) = (flaky.total_calls(), backup.total_calls());
    let retries = metric(&gw, "sluice_retries_total{provider=\"flaky\"}").await;
    let refusals = metric(&gw, "sluice_circuit_refusals_total{provider=\"flaky\"}").await;

    for i in 0..10 {
        let r = chat(&client, &gw, &format!("moved {i}")).await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(backup.total_calls(), backup_calls + 10);
    assert_eq!(flaky.total_calls(), flaky_calls);
    assert_eq!(
        metric(&gw, "sluice_circuit_refusals_total{provider=\"flaky\"}").await,
        refusals + 10.0
    );
    // A refusal spends no retry.
    assert_eq!(
        metric(&gw, "sluice_retries_total{provider=\"flaky\"}").await,
        retries
    );
}
