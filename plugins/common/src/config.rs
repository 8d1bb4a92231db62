//! Plugin config: the JSON the host hands to `lifecycle.init`.
//!
//! Configs are strict (unknown fields are rejected) and every error names the
//! offending field, because the message ends up in the operator's terminal
//! when `sluice serve` refuses to load a plugin.

use std::fmt;
use std::sync::{Arc, RwLock};

use serde::de::DeserializeOwned;

/// A config the plugin cannot run with; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl ConfigError {
    /// An error about one field, e.g. `field("threshold", "must be in 0..=1")`.
    pub fn field(path: &str, message: impl fmt::Display) -> Self {
        Self(format!("config field `{path}`: {message}"))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// A plugin's config type: strict JSON plus checks serde cannot express.
pub trait PluginConfig: DeserializeOwned {
    /// Rejects values that parse but make no sense (ranges, empty names).
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// Parses and validates a plugin config. An empty string or `null` means
/// "no config" and yields the defaults, like `{}`.
pub fn parse_config<T: PluginConfig>(json: &str) -> Result<T, ConfigError> {
    let json = match json.trim() {
        "" | "null" => "{}",
        other => other,
    };
    // serde's derived structs also accept arrays (fields by position).
    if !json.starts_with('{') {
        return Err(ConfigError("config: must be a JSON object".into()));
    }
    let mut de = serde_json::Deserializer::from_str(json);
    let config: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let message = without_position(e.inner());
        if path == "." {
            ConfigError(format!("config: {message}"))
        } else {
            ConfigError::field(&path, message)
        }
    })?;
    de.end()
        .map_err(|e| ConfigError(format!("config: {}", without_position(&e))))?;
    config.validate()?;
    Ok(config)
}

/// serde_json's message without " at line 1 column 17": configs are one
/// line of JSON by the time a plugin sees them, so the field path says more.
fn without_position(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match message.strip_suffix(&suffix) {
        Some(stripped) => stripped.to_owned(),
        None => message,
    }
}

/// The parsed config of this instance.
///
/// `init` stores it; the host calls `init` on every fresh instance before
/// its first call (see `lifecycle` in wit/policy.wit). The reference plugins
/// deliberately do not fall back to the `config.get` import: importing it
/// would make wit-component add shim modules to every instance.
pub struct ConfigCell<T> {
    current: RwLock<Option<Arc<T>>>,
}

impl<T: PluginConfig> ConfigCell<T> {
    /// An empty cell, for a `static`.
    pub const fn new() -> Self {
        Self {
            current: RwLock::new(None),
        }
    }

    /// `lifecycle.init`: parse, validate and keep the config.
    pub fn init(&self, json: &str) -> Result<(), String> {
        let config = parse_config::<T>(json).map_err(|e| e.to_string())?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(config));
        Ok(())
    }

    /// The config for this call.
    ///
    /// Traps (panics) if `init` was never called on this instance, which
    /// only a host outside the contract would do; the slot's failure policy
    /// then applies.
    pub fn get(&self) -> Arc<T> {
        if let Some(config) = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            return config.clone();
        }
        panic!("plugin used before init")
    }
}

impl<T: PluginConfig> Default for ConfigCell<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        limit: u32,
        inner: Inner,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        name: String,
    }

    impl Default for Sample {
        fn default() -> Self {
            Self {
                limit: 7,
                inner: Inner::default(),
            }
        }
    }

    impl PluginConfig for Sample {
        fn validate(&self) -> Result<(), ConfigError> {
            if self.limit == 0 {
                return Err(ConfigError::field("limit", "must be at least 1"));
            }
            Ok(())
        }
    }

    #[test]
    fn empty_config_means_defaults() {
        for json in ["", "  ", "null", "{}"] {
            assert_eq!(parse_config::<Sample>(json).unwrap(), Sample::default());
        }
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_config::<Sample>(r#"{"limit": "x"}"#).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("config field `limit`: invalid type"),
            "{e}"
        );
        assert!(!e.to_string().contains("line 1"), "{e}");

        let e = parse_config::<Sample>(r#"{"inner": {"nme": "a"}}"#).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("config field `inner.nme`: unknown field `nme`, expected `name`"),
            "{e}"
        );

        let e = parse_config::<Sample>(r#"{"limt": 1}"#).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("config field `limt`: unknown field `limt`"),
            "{e}"
        );

        let e = parse_config::<Sample>(r#"{"limit": 0}"#).unwrap_err();
        assert_eq!(e.to_string(), "config field `limit`: must be at least 1");

        assert!(parse_config::<Sample>(r#"{} {}"#).is_err());
        assert!(parse_config::<Sample>(r#"[1]"#).is_err());
    }

    #[test]
    fn init_keeps_the_config() {
        let cell = ConfigCell::<Sample>::new();
        assert!(
            cell.init(r#"{"limit": 0}"#)
                .unwrap_err()
                .contains("`limit`")
        );
        cell.init(r#"{"limit": 3}"#).unwrap();
        assert_eq!(cell.get().limit, 3);
        cell.init(r#"{"limit": 4}"#).unwrap();
        assert_eq!(cell.get().limit, 4);
    }
}
