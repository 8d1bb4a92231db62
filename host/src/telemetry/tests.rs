//! Metrics tests: encode the registry and check names, labels and values.

use std::time::{Duration, Instant};

use super::*;
use crate::policy::Slot;

fn metrics() -> Metrics {
    Metrics::new(["openai", "anthropic"], ["acme"])
}

/// The value of the sample line starting with `series ` (name + labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
}

#[test]
fn fresh_registry_exposes_every_family_with_precreated_series() {
    let text = metrics().encode();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        sample(
            &text,
            &format!("sluice_build_info{{version=\"{version}\"}}")
        ),
        Some(1.0)
    );
    for family in [
        "# TYPE sluice_cache_outcomes counter",
        "# TYPE sluice_request_duration_seconds histogram",
        "# TYPE sluice_upstream_attempts counter",
        "# TYPE sluice_upstream_duration_seconds histogram",
        "# TYPE sluice_retries counter",
        "# TYPE sluice_retry_budget_exhausted counter",
        "# TYPE sluice_throttle_rejects counter",
        "# TYPE sluice_tokens counter",
        "# TYPE sluice_plugin_calls counter",
        "# TYPE sluice_plugin_call_duration_seconds histogram",
        "# TYPE sluice_plugin_metrics_dropped counter",
        "# TYPE sluice_state_fallbacks counter",
        "# TYPE sluice_state_degraded gauge",
        "# TYPE sluice_coalesced_requests counter",
    ] {
        assert!(text.contains(family), "missing {family:?} in\n{text}");
    }
    assert_eq!(
        sample(
            &text,
            "sluice_cache_outcomes_total{outcome=\"semantic-hit\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "sluice_upstream_attempts_total{provider=\"anthropic\",outcome=\"rate_limited\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "sluice_throttle_rejects_total{tenant=\"anonymous\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "sluice_plugin_calls_total{slot=\"cache_key\",result=\"oom\"}"
        ),
        Some(0.0)
    );
    assert_eq!(sample(&text, "sluice_state_degraded"), Some(0.0));
    // Nothing requested yet: no request series.
    assert!(!text.contains("sluice_requests_total"), "{text}");
}

#[test]
fn recorded_events_show_with_their_labels() {
    let m = metrics();
    m.request(ApiRoute::ChatCompletions, 200, Duration::from_millis(30));
    m.request(ApiRoute::ChatCompletions, 200, Duration::from_millis(70));
    m.request(ApiRoute::Messages, 429, Duration::from_millis(1));
    m.cache_outcome(CacheOutcome::Hit);
    m.throttle_reject("acme");
    m.throttle_reject("someone-else");
    m.tokens("acme", 12, 30);
    m.upstream_attempt(
        "openai",
        UpstreamOutcome::from_status(503),
        Duration::from_millis(5),
    );
    m.upstream_attempt("openai", UpstreamOutcome::Ok, Duration::from_millis(5));
    m.upstream_attempt(
        "unconfigured",
        UpstreamOutcome::Timeout,
        Duration::from_secs(60),
    );
    m.retry("openai");
    m.retry_budget_exhausted("anthropic");
    m.plugin_call(Slot::Throttle, "trap", Duration::from_micros(300));
    m.plugin_call(
        Slot::Retry,
        PluginCallResult::Ok.as_str(),
        Duration::from_micros(80),
    );
    m.state_fallback();
    m.set_state_degraded(true);
    m.coalesced();

    let text = m.encode();
    let s = |series: &str| sample(&text, series);
    assert_eq!(
        s("sluice_requests_total{route=\"/v1/chat/completions\",status=\"200\"}"),
        Some(2.0)
    );
    assert_eq!(
        s("sluice_requests_total{route=\"/v1/messages\",status=\"429\"}"),
        Some(1.0)
    );
    assert_eq!(
        s("sluice_request_duration_seconds_bucket{le=\"0.05\",route=\"/v1/chat/completions\"}"),
        Some(1.0)
    );
    assert_eq!(
        s("sluice_request_duration_seconds_count{route=\"/v1/chat/completions\"}"),
        Some(2.0)
    );
    assert_eq!(s("sluice_cache_outcomes_total{outcome=\"hit\"}"), Some(1.0));
    assert_eq!(
        s("sluice_throttle_rejects_total{tenant=\"acme\"}"),
        Some(1.0)
    );
    assert_eq!(
        s("sluice_throttle_rejects_total{tenant=\"_other\"}"),
        Some(1.0)
    );
    assert!(
        !text.contains("someone-else"),
        "unknown tenants must not become labels"
    );
    assert_eq!(
        s("sluice_tokens_total{tenant=\"acme\",kind=\"prompt\"}"),
        Some(12.0)
    );
    assert_eq!(
        s("sluice_tokens_total{tenant=\"acme\",kind=\"completion\"}"),
        Some(30.0)
    );
    assert_eq!(
        s("sluice_upstream_attempts_total{provider=\"openai\",outcome=\"server_error\"}"),
        Some(1.0)
    );
    assert_eq!(
        s("sluice_upstream_attempts_total{provider=\"_other\",outcome=\"timeout\"}"),
        Some(1.0)
    );
    assert!(!text.contains("unconfigured"));
    assert_eq!(
        s("sluice_upstream_duration_seconds_count{provider=\"openai\"}"),
        Some(2.0)
    );
    assert_eq!(s("sluice_retries_total{provider=\"openai\"}"), Some(1.0));
    assert_eq!(
        s("sluice_retry_budget_exhausted_total{provider=\"anthropic\"}"),
        Some(1.0)
    );
    assert_eq!(
        s("sluice_plugin_calls_total{slot=\"throttle\",result=\"trap\"}"),
        Some(1.0)
    );
    assert_eq!(
        s("sluice_plugin_calls_total{slot=\"retry\",result=\"ok\"}"),
        Some(1.0)
    );
    assert_eq!(
        s("sluice_plugin_call_duration_seconds_count{slot=\"throttle\"}"),
        Some(1.0)
    );
    assert_eq!(s("sluice_state_fallbacks_total"), Some(1.0));
    assert_eq!(s("sluice_state_degraded"), Some(1.0));
    assert_eq!(s("sluice_coalesced_requests_total"), Some(1.0));
}

#[test]
fn plugin_custom_metrics_are_exposed_per_slot_and_bounded() {
    let m = metrics();
    m.plugin_counter_add(Slot::Throttle, "sunday_boosts", 2);
    m.plugin_counter_add(Slot::Throttle, "sunday_boosts_total", 1);
    m.plugin_counter_add(Slot::Retry, "sunday_boosts", 5);
    m.plugin_gauge_set(Slot::Semantic, "Index Size", 42.5);
    m.plugin_histogram_observe(Slot::CacheKey, "key_bytes", 0.3);
    // Refused: reserved name, kind change, non-finite, unknown slot.
    m.plugin_counter_add(Slot::Throttle, "calls", 1);
    m.plugin_gauge_set(Slot::Throttle, "sunday_boosts", 1.0);
    m.plugin_histogram_observe(Slot::Throttle, "latency", f64::INFINITY);
    for i in 0..(MAX_NAMES_PER_SLOT + 10) {
        m.plugin_counter_add(Slot::CacheKey, &format!("n{i}"), 1);
    }

    let text = m.encode();
    let s = |series: &str| sample(&text, series);
    assert!(
        text.contains("# TYPE sluice_plugin_sunday_boosts counter"),
        "{text}"
    );
    assert_eq!(
        s("sluice_plugin_sunday_boosts_total{slot=\"throttle\"}"),
        Some(3.0)
    );
    assert_eq!(
        s("sluice_plugin_sunday_boosts_total{slot=\"retry\"}"),
        Some(5.0)
    );
    assert!(
        text.contains("# TYPE sluice_plugin_index_size gauge"),
        "{text}"
    );
    assert_eq!(s("sluice_plugin_index_size{slot=\"semantic\"}"), Some(42.5));
    assert!(
        text.contains("# TYPE sluice_plugin_key_bytes histogram"),
        "{text}"
    );
    assert_eq!(
        s("sluice_plugin_key_bytes_bucket{le=\"0.5\",slot=\"cache_key\"}"),
        Some(1.0)
    );
    assert_eq!(
        s("sluice_plugin_metrics_dropped_total{slot=\"throttle\"}"),
        Some(3.0)
    );
    // cache_key already used `key_bytes`, so 63 of the n* names fit.
    let kept = (0..MAX_NAMES_PER_SLOT + 10)
        .filter(|i| text.contains(&format!("sluice_plugin_n{i}_total{{slot=\"cache_key\"}} 1")))
        .count();
    assert_eq!(kept, MAX_NAMES_PER_SLOT - 1);
    assert_eq!(
        s("sluice_plugin_metrics_dropped_total{slot=\"cache_key\"}"),
        Some(11.0)
    );
    // Exactly one family per exposed name.
    let mut types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let before = types.len();
    types.sort();
    types.dedup();
    assert_eq!(types.len(), before, "duplicate families in\n{text}");
}

/// Rough per-record cost. Run with
/// `cargo test -p sluice --release --lib record_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn record_cost() {
    let m = metrics();
    let n = 1_000_000u32;
    let bench = |label: &str, f: &dyn Fn()| {
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        println!(
            "{label}: {:.1} ns/op",
            start.elapsed().as_nanos() as f64 / f64::from(n)
        );
    };
    bench("request", &|| {
        m.request(ApiRoute::ChatCompletions, 200, Duration::from_millis(3))
    });
    bench("upstream_attempt", &|| {
        m.upstream_attempt("openai", UpstreamOutcome::Ok, Duration::from_millis(3))
    });
    bench("tokens", &|| m.tokens("acme", 10, 20));
    bench("plugin_call", &|| {
        m.plugin_call(Slot::Throttle, "ok", Duration::from_micros(50))
    });
    bench("plugin_counter_add", &|| {
        m.plugin_counter_add(Slot::Throttle, "hits", 1)
    });
    let start = Instant::now();
    for _ in 0..1000 {
        std::hint::black_box(m.encode());
    }
    // 1000 runs: the total in ms is the mean in µs.
    println!("encode: {:.1} us/op", start.elapsed().as_secs_f64() * 1e3);
}

#[test]
fn circuit_series_follow_transitions_per_provider() {
    let m = metrics();
    let text = m.encode();
    assert!(text.contains("# TYPE sluice_circuit_state gauge"), "{text}");
    assert_eq!(
        sample(&text, "sluice_circuit_state{provider=\"openai\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "sluice_circuit_transitions_total{provider=\"openai\",to=\"half-open\"}"
        ),
        Some(0.0)
    );
    m.circuit_transition("openai", CircuitState::Open);
    m.circuit_transition("openai", CircuitState::HalfOpen);
    m.circuit_transition("openai", CircuitState::Open);
    m.circuit_refusal("openai");
    let text = m.encode();
    assert_eq!(
        sample(&text, "sluice_circuit_state{provider=\"openai\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "sluice_circuit_state{provider=\"anthropic\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "sluice_circuit_transitions_total{provider=\"openai\",to=\"open\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "sluice_circuit_transitions_total{provider=\"openai\",to=\"half-open\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "sluice_circuit_refusals_total{provider=\"openai\"}"),
        Some(1.0)
    );
}
