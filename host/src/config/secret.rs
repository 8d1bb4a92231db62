//! Secrets and `env:NAME` resolution.
//!
//! Only the fields that carry host settings resolve `env:` (see
//! [`super::Config`]); plugin config tables never do, because a plugin must
//! not be able to read the host's environment through its own config.

use std::fmt;

use serde::Deserialize;

use super::ConfigError;

/// Looks up an environment variable; tests pass a map instead of the process
/// environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The prefix that marks a string value as "read this environment variable".
const ENV_PREFIX: &str = "env:";

/// A secret string (upstream API key, virtual key, admin token). `Debug`
/// never prints it, so a logged config does not leak credentials.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a plain value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the few places that must send or compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `headers` carry `Authorization: Bearer <this secret>`.
    /// Digests are compared, so the timing says nothing about how much of
    /// the secret a guess got right.
    pub fn is_bearer_of(&self, headers: &http::HeaderMap) -> bool {
        headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| {
                blake3::hash(given.trim().as_bytes()) == blake3::hash(self.0.as_bytes())
            })
    }

    pub(crate) fn resolve_env(
        &mut self,
        path: &str,
        env: EnvLookup<'_>,
    ) -> Result<(), ConfigError> {
        resolve_env(&mut self.0, path, env)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

/// Replaces an `env:NAME` value with the variable's value. A missing or empty
/// variable is an error: an empty API key or admin token is always a mistake
/// (for example a compose file passing `KEY=` through unset).
pub(super) fn resolve_env(
    value: &mut String,
    path: &str,
    env: EnvLookup<'_>,
) -> Result<(), ConfigError> {
    let Some(name) = value.strip_prefix(ENV_PREFIX) else {
        return Ok(());
    };
    let name = name.trim();
    let valid_name =
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid_name {
        return Err(ConfigError::invalid(
            path,
            format!(
                "`{value}` is not a valid env reference (expected env:NAME with NAME made of letters, digits and _)"
            ),
        ));
    }
    match env(name) {
        Some(resolved) if !resolved.is_empty() => {
            *value = resolved;
            Ok(())
        }
        Some(_) => Err(ConfigError::invalid(
            path,
            format!("environment variable {name} is set but empty"),
        )),
        None => Err(ConfigError::MissingEnv {
            path: path.to_owned(),
            var: name.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-real".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn plain_values_are_left_alone() {
        let mut v = "sk-plain".to_owned();
        resolve_env(&mut v, "x", &env).unwrap();
        assert_eq!(v, "sk-plain");
    }

    #[test]
    fn env_values_resolve() {
        let mut v = "env:KEY".to_owned();
        resolve_env(&mut v, "x", &env).unwrap();
        assert_eq!(v, "sk-real");
    }

    #[test]
    fn missing_and_empty_variables_are_errors_naming_field_and_variable() {
        let mut v = "env:NOPE".to_owned();
        let err = resolve_env(&mut v, "providers[0].keys[1]", &env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "providers[0].keys[1]: environment variable NOPE is not set"
        );
        let mut v = "env:EMPTY".to_owned();
        let err = resolve_env(&mut v, "server.admin_token", &env).unwrap_err();
        assert!(err.to_string().contains("EMPTY is set but empty"), "{err}");
        let mut v = "env:".to_owned();
        let err = resolve_env(&mut v, "server.admin_token", &env).unwrap_err();
        assert!(err.to_string().starts_with("server.admin_token: "), "{err}");
    }

    #[test]
    fn debug_redacts() {
        let s = Secret::new("sk-very-secret");
        assert_eq!(format!("{s:?}"), "Secret(****)");
        assert_eq!(s.expose(), "sk-very-secret");
    }
}
