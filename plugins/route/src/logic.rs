//! Cost- and health-aware routing over plain candidate data.
//!
//! Every candidate falls in one of three groups, tried in this order:
//! 1. **healthy**: circuit not open, error rate at most `max_error_percent`,
//!    some key headroom, and latency at most `max_latency_ms` (when set);
//! 2. **degraded**: circuit not open, but not healthy;
//! 3. **open**: circuit open. Tried last rather than dropped, so a request
//!    whose every candidate is open fails fast with the host's circuit 503.
//!
//! Within a group, priced candidates come first, cheapest first: the cost
//! is `prompt × input + completion × output` (USD per million tokens), with
//! the request's prompt estimate and its `max_tokens` (or
//! `completion_tokens` when it sets none). Ties go to the lower latency,
//! then to the host's order. Nothing is dropped. The C version
//! (plugins/c/route) makes the same decisions.
//!
//! Config (all fields optional): `max_error_percent` (50, 0 to 100),
//! `max_latency_ms` (0: no limit), `completion_tokens` (256).

use std::cmp::Ordering;

use serde::Deserialize;
use sluice_plugin_common::config::{ConfigError, PluginConfig};
use sluice_plugin_common::types::Request;

use crate::exports::sluice::policy::route::{Candidate, Choice, Circuit};

/// The route plugin's config; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub max_error_percent: u32,
    pub max_latency_ms: u64,
    pub completion_tokens: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_error_percent: 50,
            max_latency_ms: 0,
            completion_tokens: 256,
        }
    }
}

impl PluginConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_error_percent > 100 {
            return Err(ConfigError::field(
                "max_error_percent",
                format!("{} is not a percentage (0 to 100)", self.max_error_percent),
            ));
        }
        Ok(())
    }
}

/// The group a candidate falls in: 0 healthy, 1 degraded, 2 open.
pub fn group(config: &Config, c: &Candidate) -> u8 {
    let h = &c.health;
    if h.circuit == Circuit::Open {
        return 2;
    }
    let healthy = h.error_rate * 100.0 <= f64::from(config.max_error_percent)
        && h.key_headroom > 0.0
        && (config.max_latency_ms == 0 || h.latency_ms <= config.max_latency_ms as f64);
    if healthy { 0 } else { 1 }
}

/// The estimated cost of the request at `c`, in USD per million tokens
/// times tokens (so micro-USD); None when it has no price.
pub fn cost(config: &Config, req: &Request, c: &Candidate) -> Option<f64> {
    let p = c.price.as_ref()?;
    let completion = req.max_tokens.unwrap_or(config.completion_tokens);
    Some(
        f64::from(req.estimated_prompt_tokens) * p.input_per_mtok
            + f64::from(completion) * p.output_per_mtok,
    )
}

/// The candidates in the order to try them.
pub fn order(config: &Config, req: &Request, candidates: &[Candidate]) -> Vec<Choice> {
    let mut keyed: Vec<(u8, Option<f64>, f64, usize)> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                group(config, c),
                cost(config, req, c),
                c.health.latency_ms,
                i,
            )
        })
        .collect();
    keyed.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| match (a.1, b.1) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            })
            .then_with(|| a.2.total_cmp(&b.2))
            .then_with(|| a.3.cmp(&b.3))
    });
    keyed
        .into_iter()
        .map(|(.., i)| Choice {
            provider: candidates[i].provider.clone(),
            model: candidates[i].model.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exports::sluice::policy::route::{Health, Price};
    use sluice_plugin_common::parse_config;
    use sluice_plugin_common::testing::request;

    fn candidate(
        provider: &str,
        price: Option<(f64, f64)>,
        circuit: Circuit,
        error_rate: f64,
    ) -> Candidate {
        Candidate {
            provider: provider.into(),
            model: "m".into(),
            kind: "openai".into(),
            health: Health {
                latency_ms: 100.0,
                error_rate,
                circuit,
                key_headroom: 1.0,
            },
            price: price.map(|(i, o)| Price {
                input_per_mtok: i,
                output_per_mtok: o,
            }),
        }
    }

    fn names(choices: &[Choice]) -> Vec<&str> {
        choices.iter().map(|c| c.provider.as_str()).collect()
    }

    #[test]
    fn cheapest_healthy_first_open_last() {
        let config = Config::default();
        let req = request("hi");
        let cands = vec![
            candidate("dear", Some((10.0, 30.0)), Circuit::Closed, 0.0),
            candidate("cheapest-open", Some((0.1, 0.1)), Circuit::Open, 0.0),
            candidate("unpriced", None, Circuit::Closed, 0.0),
            candidate("cheap", Some((0.5, 1.5)), Circuit::HalfOpen, 0.0),
            candidate("failing", Some((0.2, 0.2)), Circuit::Closed, 0.9),
        ];
        assert_eq!(
            names(&order(&config, &req, &cands)),
            ["cheap", "dear", "unpriced", "failing", "cheapest-open"]
        );
    }

    #[test]
    fn no_key_headroom_or_slow_is_degraded() {
        let config: Config = parse_config(r#"{"max_latency_ms": 500}"#).unwrap();
        let req = request("hi");
        let mut resting = candidate("resting", Some((0.1, 0.1)), Circuit::Closed, 0.0);
        resting.health.key_headroom = 0.0;
        let mut slow = candidate("slow", Some((0.1, 0.1)), Circuit::Closed, 0.0);
        slow.health.latency_ms = 900.0;
        let ok = candidate("ok", Some((5.0, 5.0)), Circuit::Closed, 0.0);
        assert_eq!(
            names(&order(&config, &req, &[resting, slow, ok])),
            ["ok", "resting", "slow"]
        );
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = parse_config::<Config>(r#"{"max_error_percent": 101}"#).unwrap_err();
        assert!(err.to_string().contains("max_error_percent"), "{err}");
        let err = parse_config::<Config>(r#"{"nope": 1}"#).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
