//! The `[state]` config section.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::StateError;

/// Default bound on one state operation against Redis.
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_millis(50);
/// Default bound on the tokens out in leases, as a fraction of a limit.
pub const DEFAULT_MAX_OVERSHOOT: f64 = 0.01;

/// Which backend holds the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateKind {
    /// In-process maps: one node, nothing to install.
    #[default]
    Memory,
    /// Redis (standalone via `url`, or Redis Cluster via `cluster`), shared by every node.
    Redis,
}

/// What an operation does when Redis fails or times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Serve from a local in-memory fallback (approximate: per node, not shared).
    #[default]
    FailOpen,
    /// Answer `StateError::Unavailable`.
    FailClosed,
}

/// How rate limits are charged against Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitsMode {
    /// A node admits from leases: slices of a bucket's remaining capacity
    /// taken from Redis in one atomic call and spent locally, so most
    /// admissions make no Redis call. The tokens out in leases never exceed
    /// `max_overshoot` of a bucket's limit, which bounds how far any window
    /// can go over it, on all nodes together. Leases shrink as a bucket
    /// empties, down to exact charges.
    #[default]
    Leased,
    /// One Redis charge per admission: exact, and a round trip each.
    Exact,
}

/// The `[state]` section of the config file.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateSettings {
    pub kind: StateKind,
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS).
    pub url: Option<String>,
    /// Seed node URLs of a Redis Cluster (instead of `url`).
    pub cluster: Vec<String>,
    pub on_error: OnError,
    /// Bound on each Redis operation (config: `op_timeout_ms`). Keep it
    /// above the round trip to Redis: an edge site 80 ms away needs more
    /// than the default.
    #[serde(rename = "op_timeout_ms", deserialize_with = "millis")]
    pub op_timeout: Duration,
    /// `leased` (default) or `exact`; the memory backend is always exact.
    pub limits: LimitsMode,
    /// With `leased`: the most a bucket's tokens out in leases may be, as a
    /// fraction of its limit (0 to 1); also the bound on overshoot.
    pub max_overshoot: f64,
}

impl Default for StateSettings {
    fn default() -> Self {
        Self {
            kind: StateKind::Memory,
            url: None,
            cluster: Vec::new(),
            on_error: OnError::FailOpen,
            op_timeout: DEFAULT_OP_TIMEOUT,
            limits: LimitsMode::Leased,
            max_overshoot: DEFAULT_MAX_OVERSHOOT,
        }
    }
}

impl StateSettings {
    /// Settings for a standalone Redis at `url`, other fields at their defaults.
    pub fn redis(url: impl Into<String>) -> Self {
        Self {
            kind: StateKind::Redis,
            url: Some(url.into()),
            ..Self::default()
        }
    }

    /// Settings for a Redis Cluster reached through `seeds`.
    pub fn redis_cluster(seeds: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            kind: StateKind::Redis,
            cluster: seeds.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Checks that the fields fit together (run by `State::connect` too).
    pub fn validate(&self) -> Result<(), StateError> {
        let invalid = |m: &str| Err(StateError::Invalid(format!("state: {m}")));
        if self.op_timeout.is_zero() {
            return invalid("op_timeout_ms must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.max_overshoot) {
            return invalid(&format!(
                "max_overshoot must be a fraction from 0 to 1, not {}",
                self.max_overshoot
            ));
        }
        match self.kind {
            StateKind::Memory if self.url.is_some() || !self.cluster.is_empty() => {
                invalid("`url`/`cluster` are only used with kind = \"redis\"")
            }
            StateKind::Memory => Ok(()),
            StateKind::Redis => match (&self.url, self.cluster.is_empty()) {
                (Some(_), false) => invalid("set either `url` or `cluster`, not both"),
                (None, true) => invalid("kind = \"redis\" needs `url` or `cluster`"),
                _ => Ok(()),
            },
        }
    }
}

// Debug by hand: URLs may carry passwords, and settings end up in logs.
impl fmt::Debug for StateSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateSettings")
            .field("kind", &self.kind)
            .field("url", &self.url.as_deref().map(redact_url))
            .field(
                "cluster",
                &self
                    .cluster
                    .iter()
                    .map(|u| redact_url(u))
                    .collect::<Vec<_>>(),
            )
            .field("on_error", &self.on_error)
            .field("op_timeout", &self.op_timeout)
            .field("limits", &self.limits)
            .field("max_overshoot", &self.max_overshoot)
            .finish()
    }
}

/// `url` with any `user:password@` replaced by `***@`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_src: &str) -> Result<StateSettings, toml::de::Error> {
        toml::from_str(toml_src)
    }

    #[test]
    fn empty_section_is_memory_with_defaults() {
        let s = parse("").unwrap();
        assert_eq!(s, StateSettings::default());
        assert_eq!(s.kind, StateKind::Memory);
        assert_eq!(s.on_error, OnError::FailOpen);
        assert_eq!(s.op_timeout, Duration::from_millis(50));
        s.validate().unwrap();
    }

    #[test]
    fn redis_fields_parse_in_kebab_case() {
        let s = parse(
            r#"
            kind = "redis"
            url = "redis://127.0.0.1:6379"
            on_error = "fail-closed"
            op_timeout_ms = 75
            "#,
        )
        .unwrap();
        assert_eq!(s.kind, StateKind::Redis);
        assert_eq!(s.url.as_deref(), Some("redis://127.0.0.1:6379"));
        assert_eq!(s.on_error, OnError::FailClosed);
        assert_eq!(s.op_timeout, Duration::from_millis(75));
        s.validate().unwrap();

        let c = parse(
            r#"kind = "redis"
cluster = ["redis://a:1", "redis://b:2"]"#,
        )
        .unwrap();
        assert_eq!(c.cluster.len(), 2);
        c.validate().unwrap();
    }

    #[test]
    fn unknown_fields_and_values_are_rejected() {
        let err = parse("kind = \"redis\"\nurls = \"x\"").unwrap_err();
        assert!(err.to_string().contains("urls"), "{err}");
        assert!(parse("kind = \"memcached\"").is_err());
        assert!(parse("on_error = \"fail_open\"").is_err());
    }

    #[test]
    fn inconsistent_settings_fail_validation() {
        let both = StateSettings {
            cluster: vec!["redis://a:1".into()],
            ..StateSettings::redis("redis://b:2")
        };
        assert!(both.validate().is_err());
        let neither = StateSettings {
            kind: StateKind::Redis,
            ..StateSettings::default()
        };
        assert!(neither.validate().is_err());
        let memory_with_url = StateSettings {
            kind: StateKind::Memory,
            ..StateSettings::redis("redis://b:2")
        };
        assert!(memory_with_url.validate().is_err());
        let zero = StateSettings {
            op_timeout: Duration::ZERO,
            ..StateSettings::default()
        };
        assert!(zero.validate().is_err());
    }

    #[test]
    fn debug_output_hides_passwords() {
        let s = StateSettings::redis("rediss://user:s3cret@cache.internal:6380/0");
        let shown = format!("{s:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("cache.internal:6380"), "{shown}");
        assert_eq!(redact_url("redis://:pw@h:1"), "redis://***@h:1");
        assert_eq!(redact_url("redis://h:1/2"), "redis://h:1/2");
    }
}
