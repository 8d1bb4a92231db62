//! Several deployments of one model: weighted selection follows the
//! weights; a deployment whose circuit opened gets no traffic until it
//! recovers; least-latency selection prefers the faster deployment; a
//! retry goes to another deployment.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use sluice::mock::{self, MockConfig, MockHandle};
use sluice::policy::Route;

use crate::support::gateway::TestGateway;

fn config(a: &MockHandle, b: &MockHandle, balance: &str, extra: &str) -> String {
    format!(
        r#"
[routing]
balance = "{balance}"

[[providers]]
name = "a"
base_url = "{a}"
models = ["gpt-4o"]
weight = 3

[[providers]]
name = "b"
base_url = "{b}"
models = ["gpt-4o"]
weight = 1

[plugins.throttle.config]
anonymous = {{ requests_per_minute = 1000000, tokens_per_minute = 1000000000 }}

{extra}
"#,
        a = a.base_url(),
        b = b.base_url(),
    )
}

/// Sends `n` requests, each with a prompt never sent before (so none is a
/// cache hit); returns how many succeeded.
async fn send(gw: &TestGateway, n: usize, tag: &str) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let client = reqwest::Client::new();
    let mut ok = 0;
    for _ in 0..n {
        let i = NEXT.fetch_add(1, Ordering::Relaxed);
        let r = client
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({ "model": "gpt-4o", "messages": [{ "role": "user", "content": format!("{tag} {i}") }] }))
            .send()
            .await
            .expect("request");
        ok += usize::from(r.status().is_success());
    }
    ok
}

#[tokio::test]
async fn weighted_selection_follows_the_weights_within_five_percent() {
    let a = mock::spawn(MockConfig::default());
    let b = mock::spawn(MockConfig::default());
    let gw = TestGateway::start(&config(&a, &b, "weighted", "")).await;
    // Ten at a time: 1,000 requests stay fast on a busy machine.
    let sent = futures::future::join_all((0..10).map(|_| send(&gw, 100, "weighted"))).await;
    assert_eq!(sent.iter().sum::<usize>(), 1000);
    let share = a.calls(Route::Chat) as f64 / 1000.0;
    assert_eq!(a.calls(Route::Chat) + b.calls(Route::Chat), 1000);
    assert!(
        (share - 0.75).abs() <= 0.05,
        "a got {share} of the traffic, weight 3/4"
    );
}

#[tokio::test]
async fn an_ejected_deployment_gets_no_traffic_until_it_recovers() {
    let a = mock::spawn(MockConfig::default());
    let b = mock::spawn(MockConfig::default());
    let extra = "[breaker]\nmin_calls = 3\nfailure_ratio = 0.5\nopen_for_ms = 3000\n\
                 [plugins.retry.config]\nmax_attempts = 1\n";
    let gw = TestGateway::start(&config(&a, &b, "weighted", extra)).await;

    // `a` fails until its circuit opens.
    a.set_error_rate(1.0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        send(&gw, 1, "break a").await;
        if !gw.gw.upstreams.available("a") {
            break;
        }
        assert!(Instant::now() < deadline, "a's circuit never opened");
    }
    let opened = Instant::now();
    a.set_error_rate(0.0);
    let before = a.calls(Route::Chat);

    // While ejected: every request goes to `b`, none fails.
    assert_eq!(send(&gw, 40, "ejected").await, 40);
    assert!(
        opened.elapsed() < Duration::from_millis(3000),
        "the machine is too slow for this test's window"
    );
    assert_eq!(
        a.calls(Route::Chat),
        before,
        "an ejected deployment got traffic"
    );

    // After the cooldown a probe goes to `a`, which has recovered, and it
    // takes its share again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.calls(Route::Chat) < before + 5 {
        assert_eq!(send(&gw, 5, "recovered").await, 5);
        assert!(Instant::now() < deadline, "a never got traffic back");
    }
    assert!(gw.gw.upstreams.available("a"));
}

#[tokio::test]
async fn least_latency_prefers_the_faster_deployment() {
    let a = mock::spawn(MockConfig {
        latency: Duration::from_millis(300),
        ..MockConfig::default()
    });
    let b = mock::spawn(MockConfig::default());
    let gw = TestGateway::start(&config(&a, &b, "least-latency", "")).await;
    assert_eq!(send(&gw, 60, "fast").await, 60);
    // With two candidates both are compared every time: after each has
    // been measured once, the slow one is only chosen again when its
    // estimate has decayed below the fast one's (tens of seconds here).
    assert!(b.calls(Route::Chat) >= 55, "b: {}", b.calls(Route::Chat));
}

#[tokio::test]
async fn a_retry_moves_to_another_deployment_of_the_model() {
    let a = mock::spawn(MockConfig::default());
    let b = mock::spawn(MockConfig::default());
    let extra = "[plugins.retry.config]\nbase_ms = 1\nmax_backoff_ms = 1\n";
    let gw = TestGateway::start(&config(&a, &b, "first", extra)).await;

    // `first` sends every request to `a`; its 503 is retried at `b`.
    a.fail_next(1, 503, None);
    assert_eq!(send(&gw, 1, "retry elsewhere").await, 1);
    assert_eq!((a.calls(Route::Chat), b.calls(Route::Chat)), (1, 1));

    // Both fail once: the second retry has no other deployment left and
    // stays where it is (`b`, whose second try answers).
    a.fail_next(1, 503, None);
    b.fail_next(1, 503, None);
    assert_eq!(send(&gw, 1, "both fail once").await, 1);
    assert_eq!((a.calls(Route::Chat), b.calls(Route::Chat)), (2, 3));
}
