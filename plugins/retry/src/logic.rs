//! Retry decisions over plain attempt data.
//!
//! After a failed attempt:
//! - a client error (any 4xx not in `retry_on`: 400, 401, 403, 404, 422, …)
//!   stops at once: repeating the same request cannot succeed;
//! - a retryable failure (a status in `retry_on`, a timeout, a connect error)
//!   is retried while attempts and time remain, after
//!   `max(full-jitter backoff, upstream retry-after)`. Full jitter means a
//!   uniformly random delay in `[0, min(max_backoff_ms, base_ms * 2^(n-1))]`
//!   for attempt n, which spreads the retries of many clients apart;
//! - when retries run out, or the upstream fails with a server error that is
//!   not worth retrying (501, 505, …), the request falls back to
//!   `fallback_model` / `fallback_provider` if configured and not already in
//!   use, after the jittered backoff (the upstream's retry-after is about the
//!   upstream that failed, not the fallback); otherwise it stops.
//!
//! Whether the fallback gets retries of its own depends on the host's attempt
//! numbering: if numbers keep counting across the fallback (as the WIT
//! implies: `number` is per request) the fallback gets one attempt.
//!
//! Config (all fields optional): `max_attempts` (4, counting the first),
//! `base_ms` (200), `max_backoff_ms` (10 000), `retry_on` (408, 429, 500,
//! 502, 503, 504, 529), `fallback_model`, `fallback_provider`,
//! `max_elapsed_ms` (60 000: no retry or fallback is scheduled to start later
//! than this after the first attempt began).

use serde::Deserialize;
use sluice_plugin_common::config::{ConfigError, PluginConfig};

use crate::exports::sluice::policy::retry::{Attempt, Fallback, Outcome, Verdict};

/// The retry plugin's config; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub max_attempts: u32,
    pub base_ms: u64,
    pub max_backoff_ms: u64,
    pub retry_on: Vec<u16>,
    pub fallback_model: Option<String>,
    pub fallback_provider: Option<String>,
    pub max_elapsed_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_ms: 200,
            max_backoff_ms: 10_000,
            retry_on: vec![408, 429, 500, 502, 503, 504, 529],
            fallback_model: None,
            fallback_provider: None,
            max_elapsed_ms: 60_000,
        }
    }
}

impl PluginConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::field(
                "max_attempts",
                "must be at least 1 (the first attempt counts)",
            ));
        }
        if self.base_ms > self.max_backoff_ms {
            return Err(ConfigError::field(
                "base_ms",
                format!("must not exceed max_backoff_ms ({})", self.max_backoff_ms),
            ));
        }
        for (i, code) in self.retry_on.iter().enumerate() {
            if !(400..=599).contains(code) {
                return Err(ConfigError::field(
                    &format!("retry_on[{i}]"),
                    format!("{code} is not an HTTP error status (400..=599)"),
                ));
            }
        }
        for (field, value) in [
            ("fallback_model", &self.fallback_model),
            ("fallback_provider", &self.fallback_provider),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(ConfigError::field(field, "must not be empty"));
            }
        }
        Ok(())
    }
}

/// What to do after the failed `attempt`; `random` is any uniformly
/// distributed value (see [`seed`]).
pub fn decide(config: &Config, attempt: &Attempt, random: u64) -> Verdict {
    let backoff = full_jitter(config, attempt.number, random);
    let in_budget = |delay: u64| attempt.elapsed_ms.saturating_add(delay) <= config.max_elapsed_ms;
    let fallback_or_stop = || match fallback(config, attempt) {
        Some((model, provider)) if in_budget(backoff) => Verdict::Fallback(Fallback {
            model,
            provider,
            after_ms: backoff,
        }),
        _ => Verdict::Stop,
    };

    let (retryable, retry_after_ms) = match &attempt.outcome {
        Outcome::Status(status) => (
            config.retry_on.contains(&status.code),
            status.retry_after_ms,
        ),
        Outcome::Timeout | Outcome::ConnectError(_) => (true, None),
    };
    if !retryable {
        return match &attempt.outcome {
            Outcome::Status(status) if status.code < 500 => Verdict::Stop,
            _ => fallback_or_stop(),
        };
    }
    let delay = backoff.max(retry_after_ms.unwrap_or(0));
    if attempt.number < config.max_attempts && in_budget(delay) {
        return Verdict::Retry(delay);
    }
    fallback_or_stop()
}

/// The fallback (model, provider) unless none is configured or the failed
/// attempt already used it.
fn fallback(config: &Config, attempt: &Attempt) -> Option<(String, Option<String>)> {
    if config.fallback_model.is_none() && config.fallback_provider.is_none() {
        return None;
    }
    let model = config
        .fallback_model
        .clone()
        .unwrap_or_else(|| attempt.model.clone());
    let same_provider = config
        .fallback_provider
        .as_ref()
        .is_none_or(|p| *p == attempt.provider);
    if model == attempt.model && same_provider {
        return None;
    }
    Some((model, config.fallback_provider.clone()))
}

/// A uniformly random delay in `[0, min(max_backoff_ms, base_ms * 2^(n-1))]`.
pub fn full_jitter(config: &Config, attempt_number: u32, random: u64) -> u64 {
    let doublings = attempt_number.saturating_sub(1);
    let growth = 1u64.checked_shl(doublings).unwrap_or(u64::MAX);
    let cap = config
        .base_ms
        .saturating_mul(growth)
        .min(config.max_backoff_ms);
    match cap.checked_add(1) {
        Some(span) => random % span,
        None => random,
    }
}

/// A random-enough value for jitter, from the request id, the attempt number
/// and the host's monotonic clock.
///
/// Jitter only has to decorrelate clients, not resist prediction, so this
/// avoids importing wasi:random: the request id differs per request, the
/// clock per call, and SplitMix64 spreads them over all 64 bits.
pub fn seed(request_id: &str, attempt_number: u32, monotonic_ns: u64) -> u64 {
    // FNV-1a over the id.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in request_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    splitmix64(h ^ splitmix64(monotonic_ns ^ (u64::from(attempt_number) << 32)))
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exports::sluice::policy::retry::StatusOutcome;
    use sluice_plugin_common::parse_config;

    fn attempt(number: u32, outcome: Outcome) -> Attempt {
        Attempt {
            number,
            elapsed_ms: 1_000,
            provider: "openai".into(),
            model: "gpt-4o".into(),
            outcome,
        }
    }

    fn status(code: u16) -> Outcome {
        Outcome::Status(StatusOutcome {
            code,
            retry_after_ms: None,
        })
    }

    fn with_fallback() -> Config {
        parse_config(r#"{"fallback_model": "gpt-4o-mini"}"#).unwrap()
    }

    #[test]
    fn retryable_failures_are_retried_with_jitter_in_range() {
        let config = Config::default();
        for outcome in [
            status(429),
            status(500),
            status(503),
            status(529),
            status(408),
            Outcome::Timeout,
            Outcome::ConnectError("connection refused".into()),
        ] {
            for (n, cap) in [(1, 200), (2, 400), (3, 800)] {
                for random in [0, 1, 12_345, u64::MAX] {
                    let Verdict::Retry(ms) = decide(&config, &attempt(n, outcome.clone()), random)
                    else {
                        panic!("{outcome:?} attempt {n}: expected a retry");
                    };
                    assert!(ms <= cap, "{ms} > {cap}");
                }
            }
        }
    }

    #[test]
    fn backoff_is_capped() {
        let config: Config =
            parse_config(r#"{"max_attempts": 100, "max_elapsed_ms": 10000000}"#).unwrap();
        for n in [10, 40, 64, 65, 99] {
            let Verdict::Retry(ms) = decide(&config, &attempt(n, status(503)), u64::MAX - 1) else {
                panic!("expected a retry");
            };
            assert!(ms <= 10_000, "attempt {n}: {ms}");
        }
        assert_eq!(full_jitter(&config, 1, 200), 200);
        assert_eq!(full_jitter(&config, 1, 201), 0);
        assert_eq!(full_jitter(&config, 0, 7), 7);
    }

    #[test]
    fn jitter_spreads_delays() {
        let config = Config::default();
        let delays: std::collections::BTreeSet<u64> = (0..100)
            .map(|i| full_jitter(&config, 3, seed(&format!("req-{i}"), 3, 42)))
            .collect();
        assert!(delays.len() > 50, "only {} distinct delays", delays.len());
        assert_ne!(seed("a", 1, 5), seed("a", 1, 6));
        assert_ne!(seed("a", 1, 5), seed("a", 2, 5));
        assert_ne!(seed("a", 1, 5), seed("b", 1, 5));
    }

    #[test]
    fn upstream_retry_after_is_honoured() {
        let config = Config::default();
        let outcome = Outcome::Status(StatusOutcome {
            code: 429,
            retry_after_ms: Some(5_000),
        });
        assert_eq!(
            decide(&config, &attempt(1, outcome), 17),
            Verdict::Retry(5_000)
        );
    }

    #[test]
    fn client_errors_stop_at_once_even_with_a_fallback() {
        for code in [400, 401, 403, 404, 413, 422] {
            assert_eq!(
                decide(&with_fallback(), &attempt(1, status(code)), 0),
                Verdict::Stop,
                "{code}"
            );
        }
    }

    #[test]
    fn exhausted_attempts_stop_without_fallback() {
        let config = Config::default();
        assert!(matches!(
            decide(&config, &attempt(3, status(503)), 0),
            Verdict::Retry(_)
        ));
        assert_eq!(decide(&config, &attempt(4, status(503)), 0), Verdict::Stop);
    }

    #[test]
    fn exhausted_attempts_fall_back() {
        let Verdict::Fallback(f) = decide(&with_fallback(), &attempt(4, status(529)), 99) else {
            panic!("expected a fallback");
        };
        assert_eq!(f.model, "gpt-4o-mini");
        assert_eq!(f.provider, None);
        // Attempt 4: jitter in [0, 200 * 2^3].
        assert_eq!(f.after_ms, 99);
        let Verdict::Fallback(f) = decide(&with_fallback(), &attempt(4, status(529)), 1601 + 5)
        else {
            panic!("expected a fallback");
        };
        assert_eq!(f.after_ms, 5);

        // Already on the fallback model: give up.
        let mut on_fallback = attempt(5, status(529));
        on_fallback.model = "gpt-4o-mini".into();
        assert_eq!(decide(&with_fallback(), &on_fallback, 0), Verdict::Stop);
    }

    #[test]
    fn fallback_provider_alone_moves_the_same_model() {
        let config: Config = parse_config(r#"{"fallback_provider": "azure"}"#).unwrap();
        let Verdict::Fallback(f) = decide(&config, &attempt(4, Outcome::Timeout), 0) else {
            panic!("expected a fallback");
        };
        assert_eq!(
            (f.model.as_str(), f.provider.as_deref()),
            ("gpt-4o", Some("azure"))
        );

        let mut moved = attempt(5, Outcome::Timeout);
        moved.provider = "azure".into();
        assert_eq!(decide(&config, &moved, 0), Verdict::Stop);
    }

    #[test]
    fn unretryable_server_errors_fall_back_at_once() {
        let config = with_fallback();
        assert!(matches!(
            decide(&config, &attempt(1, status(501)), 0),
            Verdict::Fallback(_)
        ));
        assert_eq!(
            decide(&Config::default(), &attempt(1, status(501)), 0),
            Verdict::Stop
        );
    }

    #[test]
    fn time_budget_limits_retries_and_fallback() {
        let config = with_fallback();
        // Retry-after beyond the budget: fall back instead of waiting.
        let mut a = attempt(
            1,
            Outcome::Status(StatusOutcome {
                code: 429,
                retry_after_ms: Some(120_000),
            }),
        );
        assert!(matches!(decide(&config, &a, 0), Verdict::Fallback(_)));
        // Budget used up: stop.
        a.elapsed_ms = 60_001;
        assert_eq!(decide(&config, &a, 0), Verdict::Stop);
    }

    #[test]
    fn retry_on_is_configurable() {
        let config: Config = parse_config(r#"{"retry_on": [503], "max_attempts": 2}"#).unwrap();
        assert!(matches!(
            decide(&config, &attempt(1, status(503)), 0),
            Verdict::Retry(_)
        ));
        assert_eq!(decide(&config, &attempt(1, status(429)), 0), Verdict::Stop);
        assert_eq!(decide(&config, &attempt(1, status(500)), 0), Verdict::Stop);
        assert_eq!(decide(&config, &attempt(2, status(503)), 0), Verdict::Stop);
    }

    #[test]
    fn bad_config_names_the_field() {
        for (json, field) in [
            (r#"{"max_attempts": 0}"#, "`max_attempts`"),
            (r#"{"base_ms": 20000}"#, "`base_ms`"),
            (r#"{"retry_on": [429, 200]}"#, "`retry_on[1]`"),
            (r#"{"retry_on": [70000]}"#, "`retry_on[0]`"),
            (r#"{"fallback_model": ""}"#, "`fallback_model`"),
            (r#"{"fallback_provider": 3}"#, "`fallback_provider`"),
            (r#"{"max_elapsed": 5}"#, "unknown field `max_elapsed`"),
        ] {
            let e = parse_config::<Config>(json).unwrap_err().to_string();
            assert!(e.contains(field), "{json}: {e}");
        }
    }
}
