//! The gateway's configuration: one TOML file, every field defaulted.
//!
//! Loading runs four steps, each reporting the offending field by its path
//! (`providers[0].kind`, `tenants[1].keys[0]`):
//! 1. parse with `deny_unknown_fields` everywhere, through
//!    `serde_path_to_error`;
//! 2. resolve `env:NAME` values: `server.admin_token`, `state.url`,
//!    `state.cluster[*]`, `providers[*].base_url`, `providers[*].keys[*]`,
//!    `tenants[*].keys[*]` (never plugin config: plugins get no secrets);
//! 3. fill derived defaults (provider name and base URL from its kind);
//! 4. [`Config::validate`] the cross-field rules, then index: compile the
//!    model globs and hash the virtual keys.
//!
//! Without a file, `sluice serve` runs [`Config::embedded_default`].

mod embedded;
mod jobs;
mod plugins;
mod secret;
mod sections;
mod spend;
mod validate;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSetBuilder};
use serde::Deserialize;

use crate::policy::Slot;
pub use crate::state::StateSettings;
pub use jobs::{JobsConfig, WebhooksConfig, compile_callback_allow, decode_webhook_secret};
pub use plugins::{PluginLimits, PluginSlotConfig, PluginSource, PluginsConfig};
pub use secret::{EnvLookup, Secret};
pub use sections::{
    AnonymousConfig, Balance, BreakerConfig, BreakerOverride, CacheConfig, EmbedderKind, KeyQuota,
    MIN_HEADER_BYTES, ProviderConfig, ProviderKind, RetryConfig, RoutingConfig, SemanticConfig,
    ServerConfig, TelemetryConfig, TenantConfig,
};
pub use spend::{AlertsConfig, BudgetUsd, MAX_USD, PriceConfig, WebhookConfig};

/// Why a config could not be loaded. Every variant except `Read` and
/// `Syntax` names the offending field by its path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML.
    #[error("invalid TOML at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// A field has the wrong type or value, or is unknown.
    #[error("{path}: {message}{}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Field {
        path: String,
        message: String,
        line: Option<usize>,
    },
    /// An `env:NAME` value names a variable that is not set.
    #[error("{path}: environment variable {var} is not set")]
    MissingEnv { path: String, var: String },
    /// A field breaks a rule that involves its value or other fields.
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl ConfigError {
    pub(crate) fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The path of the offending field, when the error has one.
    pub fn field_path(&self) -> Option<&str> {
        match self {
            ConfigError::Field { path, .. }
            | ConfigError::MissingEnv { path, .. }
            | ConfigError::Invalid { path, .. } => Some(path),
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => None,
        }
    }
}

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub state: StateSettings,
    /// In routing order: the first provider whose glob matches a model wins.
    pub providers: Vec<ProviderConfig>,
    pub anonymous: AnonymousConfig,
    pub tenants: Vec<TenantConfig>,
    pub cache: CacheConfig,
    pub retry: RetryConfig,
    /// `[fallbacks]`: model -> the models to try next, in order, when its
    /// attempts fail and the retry policy stops (any provider kind: the
    /// request is translated when the fallback speaks another format).
    pub fallbacks: BTreeMap<String, Vec<String>>,
    pub routing: RoutingConfig,
    pub breaker: BreakerConfig,
    pub semantic: SemanticConfig,
    pub plugins: PluginsConfig,
    pub telemetry: TelemetryConfig,
    /// `[[prices]]`: matched before the shipped price table.
    pub prices: Vec<PriceConfig>,
    /// `[alerts]`: budget alert webhooks.
    pub alerts: AlertsConfig,
    /// `[jobs]`: asynchronous jobs (`Prefer: respond-async`) and webhooks.
    pub jobs: JobsConfig,
    /// blake3(virtual key) → index into `tenants`. Hashing first means the
    /// map lookup's timing says nothing about the key bytes themselves.
    #[serde(skip)]
    tenant_keys: HashMap<[u8; 32], usize>,
}

impl Config {
    /// A metrics registry whose provider and tenant labels are this
    /// config's.
    pub fn metrics(&self) -> crate::telemetry::Metrics {
        crate::telemetry::Metrics::new(
            self.providers.iter().map(|p| p.name.as_str()),
            self.tenants.iter().map(|t| t.name.as_str()),
        )
    }

    /// Reads and checks the file at `path`, resolving `env:` values from the
    /// process environment. Relative plugin and model paths are taken as
    /// relative to the file's directory.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::from_toml_str(&text, &|name| std::env::var(name).ok())?;
        if let Some(dir) = path.parent() {
            config.anchor_paths(dir);
        }
        Ok(config)
    }

    /// Parses and checks `text`, resolving `env:` values through `env`.
    pub fn from_toml_str(text: &str, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
        let mut config = parse(text)?;
        config.resolve_env(env)?;
        config.fill_derived_defaults();
        config.prepare()?;
        Ok(config)
    }

    /// The config used when no file is given: memory state, built-in
    /// plugins, anonymous access, an OpenAI-compatible provider `openai`
    /// from `OPENAI_BASE_URL` / `OPENAI_API_KEY` serving every model, and,
    /// when `ANTHROPIC_BASE_URL` or `ANTHROPIC_API_KEY` is set, a provider
    /// `anthropic` serving `claude-*` (listed first so it wins for those).
    /// `SLUICE_ADMIN_TOKEN`, when set, enables the admin API.
    pub fn embedded_default(env: EnvLookup<'_>) -> Config {
        embedded::embedded_default(env)
    }

    /// Checks the cross-field rules (unique names, keys owned by one tenant,
    /// globs compile, positive limits, …) without changing anything.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::validate(self)
    }

    /// Validates, then rebuilds the routing and virtual-key indexes. Call it
    /// after editing a `Config` by hand (e.g. a CLI override).
    pub fn prepare(&mut self) -> Result<(), ConfigError> {
        self.validate()?;
        for (i, provider) in self.providers.iter_mut().enumerate() {
            provider.matcher = compile_models(i, &provider.models)?;
        }
        for (model, chain) in &self.fallbacks {
            for (j, next) in chain.iter().enumerate() {
                if self.route(next).is_none() {
                    return Err(ConfigError::invalid(
                        format!("fallbacks.{model}[{j}]"),
                        format!("no provider serves the model `{next}`"),
                    ));
                }
            }
        }
        self.tenant_keys = self
            .tenants
            .iter()
            .enumerate()
            .flat_map(|(i, t)| t.keys.iter().map(move |k| (key_digest(k.expose()), i)))
            .collect();
        Ok(())
    }

    /// The provider that serves `model`: the first whose `models` glob
    /// matches, in config order.
    pub fn route(&self, model: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.serves(model))
    }

    /// The configured fallback models of `model`, in order (none when it
    /// has no `[fallbacks]` entry).
    pub fn fallbacks(&self, model: &str) -> &[String] {
        self.fallbacks.get(model).map_or(&[], Vec::as_slice)
    }

    /// The provider named `name` (retry fallbacks name one).
    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// The tenant owning the virtual key `bearer`, if any.
    pub fn tenant_for_key(&self, bearer: &str) -> Option<&TenantConfig> {
        let index = *self.tenant_keys.get(&key_digest(bearer))?;
        self.tenants.get(index)
    }

    /// Whether requests without a known virtual key are served: as written
    /// in `[anonymous] allowed`, else only when no tenants are configured
    /// (a gateway with tenants does not serve strangers on the operator's
    /// provider keys unless told to).
    pub fn anonymous_allowed(&self) -> bool {
        self.anonymous.allowed.unwrap_or(self.tenants.is_empty())
    }

    /// The tenant named `name`.
    pub fn tenant(&self, name: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.name == name)
    }

    fn resolve_env(&mut self, env: EnvLookup<'_>) -> Result<(), ConfigError> {
        if let Some(token) = &mut self.server.metrics_token {
            token.resolve_env("server.metrics_token", env)?;
        }
        if let Some(token) = &mut self.server.admin_token {
            token.resolve_env("server.admin_token", env)?;
        }
        if let Some(url) = &mut self.state.url {
            secret::resolve_env(url, "state.url", env)?;
        }
        for (i, url) in self.state.cluster.iter_mut().enumerate() {
            secret::resolve_env(url, &format!("state.cluster[{i}]"), env)?;
        }
        for (i, p) in self.providers.iter_mut().enumerate() {
            secret::resolve_env(&mut p.base_url, &format!("providers[{i}].base_url"), env)?;
            for (j, key) in p.keys.iter_mut().enumerate() {
                key.resolve_env(&format!("providers[{i}].keys[{j}]"), env)?;
            }
        }
        for (i, t) in self.tenants.iter_mut().enumerate() {
            for (j, key) in t.keys.iter_mut().enumerate() {
                key.resolve_env(&format!("tenants[{i}].keys[{j}]"), env)?;
            }
        }
        for (i, w) in self.alerts.webhooks.iter_mut().enumerate() {
            w.secret
                .resolve_env(&format!("alerts.webhooks[{i}].secret"), env)?;
        }
        self.jobs.resolve_env(env)
    }

    fn fill_derived_defaults(&mut self) {
        for p in &mut self.providers {
            if p.name.is_empty() {
                p.name = p.kind.as_str().to_owned();
            }
            if p.base_url.is_empty() {
                p.base_url = p.kind.default_base_url().to_owned();
            }
            // Provider clients append `/chat/completions` etc.
            let trimmed = p.base_url.trim().trim_end_matches('/');
            if trimmed.len() != p.base_url.len() {
                p.base_url = trimmed.to_owned();
            }
        }
    }

    /// Makes relative file paths relative to `dir` (the config file's).
    fn anchor_paths(&mut self, dir: &Path) {
        for slot in Slot::ALL {
            if let Some(PluginSource::Path(p)) = self.plugins.slot_mut(slot).map(|s| &mut s.source)
                && p.is_relative()
            {
                *p = dir.join(&*p);
            }
        }
        if let Some(p) = &mut self.semantic.path
            && p.is_relative()
        {
            *p = dir.join(&*p);
        }
    }
}

/// Step 1: TOML → `Config`, with the failing field's path on error.
fn parse(text: &str) -> Result<Config, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| {
        let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
        ConfigError::Syntax {
            line,
            column,
            message: e.message().trim().to_owned(),
        }
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ConfigError::Field {
            path,
            message: inner.message().trim().to_owned(),
            line: inner.span().map(|s| line_col(text, s.start).0),
        }
    })
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Compiles one provider's model globs into a set; `*` also matches `/`
/// (model names like `meta-llama/Llama-3-8B`).
fn compile_models(provider: usize, models: &[String]) -> Result<globset::GlobSet, ConfigError> {
    let mut set = GlobSetBuilder::new();
    for (j, pattern) in models.iter().enumerate() {
        let glob = GlobBuilder::new(pattern)
            .literal_separator(false)
            .build()
            .map_err(|e| {
                ConfigError::invalid(
                    format!("providers[{provider}].models[{j}]"),
                    format!("invalid glob `{pattern}`: {}", e.kind()),
                )
            })?;
        set.add(glob);
    }
    set.build()
        .map_err(|e| ConfigError::invalid(format!("providers[{provider}].models"), e.to_string()))
}

fn key_digest(key: &str) -> [u8; 32] {
    *blake3::hash(key.as_bytes()).as_bytes()
}

#[cfg(test)]
mod tests;
