//! `[plugins.<slot>]`: which component fills each policy slot, how it fails,
//! its sandbox limits and its own config.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::policy::{FailurePolicy, Slot};

/// Where a slot's component comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PluginSource {
    /// The reference plugin compiled into the gateway.
    #[default]
    Builtin,
    /// A WebAssembly component on disk. [`super::Config::load`] makes a
    /// relative path relative to the config file's directory.
    Path(PathBuf),
}

impl<'de> Deserialize<'de> for PluginSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        match raw.trim() {
            "" => Err(serde::de::Error::custom(
                "expected \"builtin\" or a path to a .wasm component, found an empty string",
            )),
            "builtin" => Ok(PluginSource::Builtin),
            path => Ok(PluginSource::Path(PathBuf::from(path))),
        }
    }
}

/// Sandbox limits for one slot's plugin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginLimits {
    /// Linear memory cap per instance (StoreLimits).
    pub memory_mib: u32,
    /// Deadline per call, init included: the time the call runs, checked at
    /// 1 ms epoch ticks (time it spends yielded to other requests does not
    /// count; time a starved machine adds does).
    pub deadline_ms: u64,
    /// Largest value (string, list) the host accepts back from one call.
    pub max_return_bytes: u32,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            memory_mib: 16,
            deadline_ms: 50,
            max_return_bytes: 1024 * 1024,
        }
    }
}

/// `[plugins.<slot>]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginSlotConfig {
    /// `"builtin"` (default) or a path to a component.
    pub source: PluginSource,
    /// Fail-open (default) or fail-closed when the plugin misbehaves.
    pub failure: FailurePolicy,
    /// `[plugins.<slot>.config]`, converted to JSON: what the plugin's
    /// `config.get` and `lifecycle.init` receive. Never `env:`-resolved.
    #[serde(deserialize_with = "table_as_json")]
    pub config: Value,
    /// Sandbox limits.
    pub limits: PluginLimits,
}

impl Default for PluginSlotConfig {
    fn default() -> Self {
        Self {
            source: PluginSource::Builtin,
            failure: FailurePolicy::FailOpen,
            config: Value::Object(Map::new()),
            limits: PluginLimits::default(),
        }
    }
}

/// `[plugins]`: one entry per slot.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    pub cache_key: PluginSlotConfig,
    pub semantic: PluginSlotConfig,
    pub throttle: PluginSlotConfig,
    pub retry: PluginSlotConfig,
    /// `[plugins.route]`: optional. Without it no route plugin is called
    /// and requests go by `[routing] balance` and `[fallbacks]`; the slot
    /// still holds the built-in plugin (so a release or reload can target
    /// it), unused.
    pub route: Option<PluginSlotConfig>,
}

/// The route slot's config when `[plugins.route]` is absent.
static UNCONFIGURED: std::sync::LazyLock<PluginSlotConfig> =
    std::sync::LazyLock::new(PluginSlotConfig::default);

impl PluginsConfig {
    /// The config of one slot.
    pub fn slot(&self, slot: Slot) -> &PluginSlotConfig {
        match slot {
            Slot::CacheKey => &self.cache_key,
            Slot::Semantic => &self.semantic,
            Slot::Throttle => &self.throttle,
            Slot::Retry => &self.retry,
            Slot::Route => self.route.as_ref().unwrap_or(&UNCONFIGURED),
        }
    }

    /// The config of a slot that is set (every slot but an unconfigured
    /// route).
    pub(super) fn slot_mut(&mut self, slot: Slot) -> Option<&mut PluginSlotConfig> {
        match slot {
            Slot::CacheKey => Some(&mut self.cache_key),
            Slot::Semantic => Some(&mut self.semantic),
            Slot::Throttle => Some(&mut self.throttle),
            Slot::Retry => Some(&mut self.retry),
            Slot::Route => self.route.as_mut(),
        }
    }

    /// Whether requests are routed by a route plugin (`[plugins.route]`).
    pub fn routes(&self) -> bool {
        self.route.is_some()
    }

    /// The slots requests call, in request-flow order: the four always, the
    /// route slot only where routing is on. What operators are shown.
    pub fn serving(&self) -> impl Iterator<Item = Slot> + '_ {
        Slot::ALL
            .into_iter()
            .filter(|slot| *slot != Slot::Route || self.routes())
    }

    /// Every slot with its config, in request-flow order.
    pub fn iter(&self) -> impl Iterator<Item = (Slot, &PluginSlotConfig)> {
        Slot::ALL.into_iter().map(|s| (s, self.slot(s)))
    }
}

/// Reads a TOML table and converts it to a JSON object. Going through
/// `toml::Value` (rather than deserializing JSON directly) turns TOML
/// datetimes into plain RFC 3339 strings instead of toml's private marker map.
fn table_as_json<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    match toml::Value::deserialize(d)? {
        toml::Value::Table(table) => toml_to_json(toml::Value::Table(table)),
        other => Err(serde::de::Error::custom(format!(
            "expected a table, found {}",
            other.type_str()
        ))),
    }
}

fn toml_to_json<E: serde::de::Error>(value: toml::Value) -> Result<Value, E> {
    Ok(match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{f} cannot be represented in JSON")))?,
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(dt) => Value::String(dt.to_string()),
        toml::Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(toml_to_json)
                .collect::<Result<_, E>>()?,
        ),
        toml::Value::Table(table) => Value::Object(
            table
                .into_iter()
                .map(|(k, v)| Ok((k, toml_to_json(v)?)))
                .collect::<Result<_, E>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Deserialize)]
    struct Wrap {
        plugins: PluginsConfig,
    }

    fn parse(text: &str) -> Result<PluginsConfig, toml::de::Error> {
        toml::from_str::<Wrap>(text).map(|w| w.plugins)
    }

    #[test]
    fn slots_default_to_builtin_fail_open_empty_config() {
        let p = parse("[plugins]").unwrap();
        for (_, slot) in p.iter() {
            assert_eq!(slot.source, PluginSource::Builtin);
            assert_eq!(slot.failure, FailurePolicy::FailOpen);
            assert_eq!(slot.config, json!({}));
            assert_eq!(slot.limits, PluginLimits::default());
        }
    }

    #[test]
    fn dotted_and_inline_tables_become_nested_json_objects() {
        let p = parse(
            r#"
            [plugins.throttle]
            source = "plugins/throttle.wasm"
            failure = "fail-closed"
            [plugins.throttle.config]
            tiers.free = { requests_per_minute = 100, tokens_per_minute = 20000 }
            tiers.pro  = { requests_per_minute = 1000 }
            anonymous  = { requests_per_minute = 20 }
            sundays = [0, 1.5, "x", true]
            since = 2024-01-01T00:00:00Z
            "#,
        )
        .unwrap();
        assert_eq!(
            p.throttle.source,
            PluginSource::Path(PathBuf::from("plugins/throttle.wasm"))
        );
        assert_eq!(p.throttle.failure, FailurePolicy::FailClosed);
        assert_eq!(
            p.throttle.config,
            json!({
                "tiers": {
                    "free": {"requests_per_minute": 100, "tokens_per_minute": 20000},
                    "pro": {"requests_per_minute": 1000}
                },
                "anonymous": {"requests_per_minute": 20},
                "sundays": [0, 1.5, "x", true],
                "since": "2024-01-01T00:00:00Z"
            })
        );
    }

    #[test]
    fn config_must_be_a_table_and_floats_finite() {
        let err = parse("[plugins.retry]\nconfig = 3").unwrap_err();
        assert!(err.message().contains("expected a table"), "{err}");
        let err = parse("[plugins.retry.config]\nx = nan").unwrap_err();
        assert!(err.message().contains("cannot be represented"), "{err}");
    }

    #[test]
    fn the_route_slot_is_optional() {
        let p = parse("[plugins]").unwrap();
        assert!(!p.routes());
        assert_eq!(p.slot(Slot::Route).source, PluginSource::Builtin);
        let p = parse("[plugins.route]\nconfig = { max_error_percent = 20 }").unwrap();
        assert!(p.routes());
        assert_eq!(p.slot(Slot::Route).config, json!({"max_error_percent": 20}));
    }

    #[test]
    fn empty_source_is_rejected() {
        let err = parse("[plugins.retry]\nsource = \"\"").unwrap_err();
        assert!(err.message().contains("\"builtin\" or a path"), "{err}");
    }
}
