//! Throttle decisions over plain request data.
//!
//! Every caller gets request buckets (cost 1) and token buckets (cost: the
//! prompt estimate plus `max_tokens`, or `completion_estimate_tokens` when
//! the request sets none), each refilled continuously over its window: a
//! second, a minute, an hour or a day. Buckets are per tenant
//! (`t:<tenant>:rpm`, `t:<tenant>:tpm`; `rps`, `rph`, `rpd`, `tps`, `tph`,
//! `tpd` for the other windows) with the limits of the tenant's tier;
//! anonymous callers (tenant `anonymous`) are limited per client IP
//! (`ip:<ip>:rpm`, …) with the `anonymous` limits, or with a tier's limits
//! when the gateway's `[anonymous] tier` names one other than `anonymous`.
//! All of a request's buckets are charged together, all or nothing.
//!
//! After the response, `settle` corrects every token bucket by the
//! difference between the tokens actually used and the tokens charged:
//! unused `max_tokens` are refunded, an underestimated prompt is charged
//! extra. A cache hit spent no provider tokens, so its whole token charge is
//! refunded; the request still counts against the request limits.
//!
//! Config (all fields optional):
//! ```json
//! {
//!   "tiers": { "free": { "requests_per_minute": 100, "tokens_per_minute": 20000,
//!                        "requests_per_second": 5, "requests_per_day": 2000,
//!                        "tokens_per_hour": 500000, "tokens_per_day": 2000000 } },
//!   "anonymous": { "requests_per_minute": 20 },
//!   "completion_estimate_tokens": 256
//! }
//! ```
//! Each tier takes `requests_per_{second,minute,hour,day}` and
//! `tokens_per_{second,minute,hour,day}`; configs written with only the
//! per-minute pair (the original syntax) mean what they always meant.
//! Built-in tiers (per minute only): free 100 requests / 20 000 tokens,
//! default 300 / 100 000, pro 1 000 / 400 000, enterprise 5 000 / 2 000 000;
//! anonymous 20 / 10 000. A configured tier replaces the built-in one of that
//! name entirely; a limit it leaves out is not enforced (no bucket). Any
//! other tier name may be configured; a tenant whose tier is neither
//! configured nor built in gets the `default` tier. A limit of 0 refuses
//! every request, and a request that needs more tokens than a token limit
//! of its tier allows is refused outright (429 without `retry-after`:
//! waiting would not help), as the providers do.

use std::collections::BTreeMap;

use serde::Deserialize;
use sluice_plugin_common::config::{ConfigError, PluginConfig};
use sluice_plugin_common::types::{Bucket, Request, Shape, Unit, WindowSpec};

use crate::exports::sluice::policy::throttle::{Admission, Rejection, Usage};

/// The tenant name the host gives callers without a key.
pub const ANONYMOUS: &str = "anonymous";

/// The windows a limit may be set for: name, bucket suffix letter and
/// length in milliseconds.
const WINDOWS: [(&str, char, u64); 4] = [
    ("second", 's', 1_000),
    ("minute", 'm', 60_000),
    ("hour", 'h', 3_600_000),
    ("day", 'd', 86_400_000),
];

/// The throttle plugin's config; see the module docs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub tiers: BTreeMap<String, Limits>,
    pub anonymous: Option<Limits>,
    pub completion_estimate_tokens: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tiers: BTreeMap::new(),
            anonymous: None,
            completion_estimate_tokens: 256,
        }
    }
}

/// The limits of one tier, per second, minute, hour and day; an absent
/// limit is not enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub requests_per_second: Option<u64>,
    pub requests_per_minute: Option<u64>,
    pub requests_per_hour: Option<u64>,
    pub requests_per_day: Option<u64>,
    pub tokens_per_second: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub tokens_per_hour: Option<u64>,
    pub tokens_per_day: Option<u64>,
}

impl Limits {
    const fn new(requests_per_minute: u64, tokens_per_minute: u64) -> Self {
        Self {
            requests_per_second: None,
            requests_per_minute: Some(requests_per_minute),
            requests_per_hour: None,
            requests_per_day: None,
            tokens_per_second: None,
            tokens_per_minute: Some(tokens_per_minute),
            tokens_per_hour: None,
            tokens_per_day: None,
        }
    }

    /// Request limits by window, in [`WINDOWS`] order.
    fn requests(&self) -> [Option<u64>; 4] {
        [
            self.requests_per_second,
            self.requests_per_minute,
            self.requests_per_hour,
            self.requests_per_day,
        ]
    }

    /// Token limits by window, in [`WINDOWS`] order.
    fn tokens(&self) -> [Option<u64>; 4] {
        [
            self.tokens_per_second,
            self.tokens_per_minute,
            self.tokens_per_hour,
            self.tokens_per_day,
        ]
    }
}

const BUILTIN_TIERS: &[(&str, Limits)] = &[
    ("free", Limits::new(100, 20_000)),
    ("default", Limits::new(300, 100_000)),
    ("pro", Limits::new(1_000, 400_000)),
    ("enterprise", Limits::new(5_000, 2_000_000)),
];

const BUILTIN_ANONYMOUS: Limits = Limits::new(20, 10_000);

impl PluginConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        for name in self.tiers.keys() {
            if name.is_empty() {
                return Err(ConfigError::field("tiers", "tier names must not be empty"));
            }
            if name == ANONYMOUS {
                return Err(ConfigError::field(
                    "tiers.anonymous",
                    "set anonymous limits with the top-level `anonymous` field",
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// The limits for a tier: configured, else built in, else `default`.
    pub fn tier(&self, name: &str) -> Limits {
        let builtin = |name: &str| {
            BUILTIN_TIERS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, limits)| *limits)
        };
        self.tiers
            .get(name)
            .copied()
            .or_else(|| builtin(name))
            .or_else(|| self.tiers.get("default").copied())
            .or_else(|| builtin("default"))
            .unwrap_or_default()
    }

    /// The limits for anonymous callers.
    pub fn anonymous(&self) -> Limits {
        self.anonymous.unwrap_or(BUILTIN_ANONYMOUS)
    }

    /// The limits for a tier name as the host sends it: `anonymous` (the
    /// host's default tier for callers without a key) means [`Self::anonymous`].
    fn limits(&self, tier: &str) -> Limits {
        if tier == ANONYMOUS {
            self.anonymous()
        } else {
            self.tier(tier)
        }
    }
}

/// Who a request is charged to: the key prefix, the limits, and the name
/// used in messages.
struct Subject {
    prefix: String,
    limits: Limits,
    name: String,
}

fn subject(config: &Config, req: &Request) -> Subject {
    if req.tenant == ANONYMOUS {
        let ip = if req.client_ip.is_empty() {
            "unknown"
        } else {
            req.client_ip.as_str()
        };
        let limits = if req.tier.is_empty() {
            config.anonymous()
        } else {
            config.limits(&req.tier)
        };
        Subject {
            prefix: format!("ip:{ip}"),
            limits,
            name: "anonymous access".into(),
        }
    } else {
        Subject {
            prefix: format!("t:{}", req.tenant),
            limits: config.limits(&req.tier),
            name: format!("tier {}", req.tier),
        }
    }
}

/// Tokens charged at admission: the prompt estimate plus the most the
/// completion may use.
pub fn token_charge(config: &Config, req: &Request) -> u64 {
    u64::from(req.estimated_prompt_tokens)
        + u64::from(req.max_tokens.unwrap_or(config.completion_estimate_tokens))
}

/// The buckets to charge for `req`, or a refusal.
pub fn admit(config: &Config, req: &Request) -> Admission {
    let subject = subject(config, req);
    let mut buckets = Vec::with_capacity(2);
    for (limit, (_, letter, window_ms)) in subject.limits.requests().into_iter().zip(WINDOWS) {
        let Some(limit) = limit else { continue };
        if limit == 0 {
            return reject(format!("{} allows no requests", subject.name));
        }
        buckets.push(bucket(
            format!("{}:rp{letter}", subject.prefix),
            limit,
            window_ms,
            1,
            Unit::Requests,
        ));
    }
    let tokens = token_charge(config, req);
    for (limit, (period, letter, window_ms)) in subject.limits.tokens().into_iter().zip(WINDOWS) {
        let Some(limit) = limit else { continue };
        if tokens > limit {
            return reject(format!(
                "request too large: it may use {tokens} tokens, more than the {limit} tokens per {period} {} allows; send a shorter prompt or a lower max_tokens",
                subject.name
            ));
        }
        buckets.push(bucket(
            format!("{}:tp{letter}", subject.prefix),
            limit,
            window_ms,
            saturating_i64(tokens),
            Unit::Tokens,
        ));
    }
    Admission::Charge(buckets)
}

/// The token-bucket corrections once the actual usage is known.
pub fn settle(config: &Config, req: &Request, usage: &Usage) -> Vec<Bucket> {
    let subject = subject(config, req);
    let charged = u64::from(usage.estimated_prompt_tokens)
        + u64::from(req.max_tokens.unwrap_or(config.completion_estimate_tokens));
    let used = if usage.cached {
        0
    } else {
        u64::from(usage.prompt_tokens) + u64::from(usage.completion_tokens)
    };
    let correction = saturating_i64(used) - saturating_i64(charged);
    if correction == 0 {
        return Vec::new();
    }
    subject
        .limits
        .tokens()
        .into_iter()
        .zip(WINDOWS)
        .filter_map(|(limit, (_, letter, window_ms))| {
            Some(bucket(
                format!("{}:tp{letter}", subject.prefix),
                limit?,
                window_ms,
                correction,
                Unit::Tokens,
            ))
        })
        .collect()
}

fn bucket(key: String, limit: u64, window_ms: u64, cost: i64, unit: Unit) -> Bucket {
    Bucket {
        key,
        shape: Shape::Window(WindowSpec { limit, window_ms }),
        cost,
        unit,
    }
}

fn reject(message: String) -> Admission {
    Admission::Reject(Rejection {
        status: 429,
        message,
        retry_after_ms: None,
    })
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_common::parse_config;
    use sluice_plugin_common::testing::request;

    fn charged(admission: Admission) -> Vec<(String, u64, i64, Unit)> {
        match admission {
            Admission::Charge(buckets) => buckets
                .into_iter()
                .map(|b| {
                    let Shape::Window(w) = b.shape else {
                        panic!("expected a window shape");
                    };
                    assert_eq!(w.window_ms, 60_000);
                    (b.key, w.limit, b.cost, b.unit)
                })
                .collect(),
            Admission::Reject(r) => panic!("unexpected rejection: {}", r.message),
        }
    }

    fn rejected(admission: Admission) -> Rejection {
        match admission {
            Admission::Reject(r) => r,
            Admission::Charge(b) => panic!("unexpected charge: {b:?}"),
        }
    }

    /// A request without a virtual key, as the host sends it by default.
    fn anonymous_request() -> Request {
        let mut r = request("hi");
        r.tenant = ANONYMOUS.into();
        r.tier = ANONYMOUS.into();
        r
    }

    fn usage(prompt: u32, completion: u32, estimated: u32, cached: bool) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            estimated_prompt_tokens: estimated,
            cached,
        }
    }

    #[test]
    fn tenant_is_charged_one_request_and_estimated_tokens() {
        let config = Config::default();
        let mut r = request("hi");
        r.estimated_prompt_tokens = 40;
        r.max_tokens = Some(100);
        assert_eq!(
            charged(admit(&config, &r)),
            vec![
                ("t:acme:rpm".into(), 1_000, 1, Unit::Requests),
                ("t:acme:tpm".into(), 400_000, 140, Unit::Tokens),
            ]
        );
    }

    #[test]
    fn completion_estimate_is_used_without_max_tokens() {
        let config: Config = parse_config(r#"{"completion_estimate_tokens": 50}"#).unwrap();
        let mut r = request("hi");
        r.estimated_prompt_tokens = 40;
        assert_eq!(charged(admit(&config, &r))[1].2, 90);
        assert_eq!(charged(admit(&Config::default(), &r))[1].2, 296);
    }

    #[test]
    fn anonymous_callers_are_limited_per_ip() {
        let config: Config = parse_config(r#"{"anonymous": {"requests_per_minute": 20}}"#).unwrap();
        let mut r = request("hi");
        r.tenant = ANONYMOUS.into();
        r.tier = ANONYMOUS.into();
        r.client_ip = "2001:db8::1".into();
        assert_eq!(
            charged(admit(&config, &r)),
            vec![("ip:2001:db8::1:rpm".into(), 20, 1, Unit::Requests)]
        );

        let mut r2 = r.clone();
        r2.client_ip = String::new();
        assert_eq!(charged(admit(&config, &r2))[0].0, "ip:unknown:rpm");

        // Built-in anonymous limits when none are configured.
        assert_eq!(
            charged(admit(&Config::default(), &r))
                .iter()
                .map(|b| (b.0.as_str(), b.1))
                .collect::<Vec<_>>(),
            vec![("ip:2001:db8::1:rpm", 20), ("ip:2001:db8::1:tpm", 10_000)]
        );
    }

    #[test]
    fn anonymous_callers_on_a_named_tier_get_its_limits_per_ip() {
        let config = Config::default();
        let mut r = request("hi");
        r.tenant = ANONYMOUS.into();
        r.tier = "free".into();
        let buckets = charged(admit(&config, &r));
        assert_eq!(
            buckets
                .iter()
                .map(|b| (b.0.as_str(), b.1))
                .collect::<Vec<_>>(),
            vec![("ip:192.0.2.7:rpm", 100), ("ip:192.0.2.7:tpm", 20_000)]
        );
    }

    #[test]
    fn tiers_pick_limits_and_unknown_tiers_get_default() {
        let config: Config = parse_config(
            r#"{"tiers": {
                "free": {"requests_per_minute": 10},
                "gold": {"requests_per_minute": 7, "tokens_per_minute": 7000},
                "default": {"requests_per_minute": 3, "tokens_per_minute": 3000}
            }}"#,
        )
        .unwrap();
        let limits = |tier: &str| {
            let mut r = request("hi");
            r.tier = tier.into();
            charged(admit(&config, &r))
                .into_iter()
                .map(|(_, limit, _, unit)| (unit, limit))
                .collect::<Vec<_>>()
        };
        // A configured tier replaces the built-in one: no token limit here.
        assert_eq!(limits("free"), vec![(Unit::Requests, 10)]);
        assert_eq!(
            limits("gold"),
            vec![(Unit::Requests, 7), (Unit::Tokens, 7000)]
        );
        // Built-in tiers that were not configured keep their defaults.
        assert_eq!(
            limits("pro"),
            vec![(Unit::Requests, 1000), (Unit::Tokens, 400_000)]
        );
        // Unknown tier: the configured default.
        assert_eq!(
            limits("platinum"),
            vec![(Unit::Requests, 3), (Unit::Tokens, 3000)]
        );
        // Unknown tier, default not configured: the built-in default.
        let mut r = request("hi");
        r.tier = "platinum".into();
        assert_eq!(charged(admit(&Config::default(), &r))[0].1, 300);
    }

    #[test]
    fn a_tier_without_limits_charges_nothing() {
        let config: Config = parse_config(r#"{"tiers": {"internal": {}}}"#).unwrap();
        let mut r = request("hi");
        r.tier = "internal".into();
        assert_eq!(charged(admit(&config, &r)), vec![]);
        assert_eq!(settle(&config, &r, &usage(5, 5, 10, false)), vec![]);
    }

    #[test]
    fn zero_limit_refuses() {
        let config: Config = parse_config(r#"{"anonymous": {"requests_per_minute": 0}}"#).unwrap();
        let r = anonymous_request();
        let rejection = rejected(admit(&config, &r));
        assert_eq!(rejection.status, 429);
        assert_eq!(rejection.message, "anonymous access allows no requests");
        assert_eq!(rejection.retry_after_ms, None);
    }

    #[test]
    fn oversized_request_is_refused_outright() {
        let config: Config =
            parse_config(r#"{"tiers": {"free": {"tokens_per_minute": 1000}}}"#).unwrap();
        let mut r = request("long");
        r.tier = "free".into();
        r.estimated_prompt_tokens = 900;
        r.max_tokens = Some(100);
        assert_eq!(charged(admit(&config, &r)).len(), 1);
        r.max_tokens = Some(101);
        let rejection = rejected(admit(&config, &r));
        assert_eq!(rejection.status, 429);
        assert_eq!(rejection.retry_after_ms, None);
        assert!(
            rejection.message.contains("1001 tokens"),
            "{}",
            rejection.message
        );
        assert!(
            rejection.message.contains("tier free"),
            "{}",
            rejection.message
        );
    }

    #[test]
    fn settle_refunds_unused_tokens_and_charges_underestimates() {
        let config = Config::default();
        let mut r = request("hi");
        r.estimated_prompt_tokens = 40;
        r.max_tokens = Some(100);
        // Charged 40 + 100; used 42 + 30.
        let fix = settle(&config, &r, &usage(42, 30, 40, false));
        assert_eq!(fix.len(), 1);
        assert_eq!(fix[0].key, "t:acme:tpm");
        assert_eq!(fix[0].unit, Unit::Tokens);
        assert_eq!(fix[0].cost, 72 - 140);
        assert_eq!(
            fix[0].shape,
            Shape::Window(WindowSpec {
                limit: 400_000,
                window_ms: 60_000
            })
        );

        // Prompt far above the estimate: charge the difference.
        let fix = settle(&config, &r, &usage(400, 100, 40, false));
        assert_eq!(fix[0].cost, 500 - 140);

        // Exactly as charged: nothing to do.
        assert_eq!(settle(&config, &r, &usage(40, 100, 40, false)), vec![]);
    }

    #[test]
    fn cache_hits_refund_the_whole_token_charge() {
        let config = Config::default();
        let mut r = request("hi");
        r.estimated_prompt_tokens = 40;
        let fix = settle(&config, &r, &usage(40, 12, 40, true));
        assert_eq!(fix.len(), 1);
        assert_eq!(fix[0].cost, -(40 + 256));
    }

    #[test]
    fn anonymous_settle_uses_the_ip_bucket() {
        let config = Config::default();
        let r = anonymous_request();
        let fix = settle(&config, &r, &usage(1, 1, 10, false));
        assert_eq!(fix[0].key, "ip:192.0.2.7:tpm");
    }

    #[test]
    fn every_window_charges_its_own_bucket_and_settles() {
        let config: Config = parse_config(
            r#"{"tiers": {"pro": {"requests_per_second": 2, "requests_per_hour": 50,
                "requests_per_day": 100, "tokens_per_hour": 9000, "tokens_per_day": 20000,
                "tokens_per_second": 500}}}"#,
        )
        .unwrap();
        let mut r = request("hi");
        r.estimated_prompt_tokens = 40;
        r.max_tokens = Some(100);
        let Admission::Charge(buckets) = admit(&config, &r) else {
            panic!("refused")
        };
        let got: Vec<(String, u64, u64, i64)> = buckets
            .into_iter()
            .map(|b| {
                let Shape::Window(w) = b.shape else {
                    panic!("expected a window shape");
                };
                (b.key, w.limit, w.window_ms, b.cost)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("t:acme:rps".into(), 2, 1_000, 1),
                ("t:acme:rph".into(), 50, 3_600_000, 1),
                ("t:acme:rpd".into(), 100, 86_400_000, 1),
                ("t:acme:tps".into(), 500, 1_000, 140),
                ("t:acme:tph".into(), 9000, 3_600_000, 140),
                ("t:acme:tpd".into(), 20000, 86_400_000, 140),
            ]
        );
        let fix = settle(&config, &r, &usage(40, 10, 40, false));
        assert_eq!(
            fix.iter()
                .map(|b| (b.key.as_str(), b.cost))
                .collect::<Vec<_>>(),
            vec![
                ("t:acme:tps", -90),
                ("t:acme:tph", -90),
                ("t:acme:tpd", -90)
            ]
        );
        // A request larger than the per-second token limit is refused,
        // naming the window.
        r.max_tokens = Some(461);
        let rejection = rejected(admit(&config, &r));
        assert!(
            rejection.message.contains("500 tokens per second"),
            "{}",
            rejection.message
        );
    }

    #[test]
    fn bad_config_names_the_field() {
        for (json, field) in [
            (
                r#"{"tiers": {"free": {"requests_per_minute": -1}}}"#,
                "`tiers.free.requests_per_minute`",
            ),
            (r#"{"tiers": {"free": {"rpm": 1}}}"#, "unknown field `rpm`"),
            (r#"{"tiers": {"": {}}}"#, "`tiers`"),
            (r#"{"tiers": {"anonymous": {}}}"#, "`tiers.anonymous`"),
            (
                r#"{"anonymous": {"tokens_per_minute": "lots"}}"#,
                "`anonymous.tokens_per_minute`",
            ),
            (
                r#"{"completion_estimate_tokens": 1.5}"#,
                "`completion_estimate_tokens`",
            ),
            (r#"{"tier": {}}"#, "unknown field `tier`"),
            (
                r#"{"tiers": {"free": {"requests_per_day": "many"}}}"#,
                "`tiers.free.requests_per_day`",
            ),
            (
                r#"{"tiers": {"free": {"tokens_per_week": 1}}}"#,
                "unknown field `tokens_per_week`",
            ),
        ] {
            let e = parse_config::<Config>(json).unwrap_err().to_string();
            assert!(e.contains(field), "{json}: {e}");
        }
    }
}
