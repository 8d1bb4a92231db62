//! Config of prices, budgets and alerts: `[[prices]]`, `budget_usd` on
//! `[[tenants]]` and `[alerts]` (see docs/budgets.md).

use serde::Deserialize;

use super::{Config, ConfigError, Secret};

/// Largest price per million tokens, and largest budget, in USD: far above
/// any real one, and small enough that spend in nano-USD stays exact.
pub const MAX_USD: f64 = 1_000_000.0;

/// `[[prices]]`: what a model costs, in USD per million tokens. Entries in
/// the config are matched before the shipped table (first match wins).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// A glob over model names (`gpt-4o*`; `*` also matches `/`).
    pub model: String,
    /// Only for this provider (by name); any provider when unset.
    #[serde(default)]
    pub provider: Option<String>,
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    /// Cached (cache-read) input tokens; the input price when unset.
    #[serde(default)]
    pub cached_input_per_mtok: Option<f64>,
    /// The model's longest answer, for the worst case of a request without
    /// `max_tokens`; when unset, the shipped table's for the model.
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
}

/// `budget_usd = { day = …, month = …, total = … }`: caps on spend in USD
/// per UTC day, per UTC month and in total; each optional.
/// The same shape is a virtual key's `budget_usd` (stored as JSON).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetUsd {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
}

impl BudgetUsd {
    /// Whether no period is capped.
    pub fn is_empty(&self) -> bool {
        self.day.is_none() && self.month.is_none() && self.total.is_none()
    }
}

/// `[alerts]`: where budget alerts go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// `[[alerts.webhooks]]`: each gets every alert as a signed POST.
    pub webhooks: Vec<WebhookConfig>,
}

/// One `[[alerts.webhooks]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL the alert is POSTed to.
    pub url: String,
    /// Signs each body: header `x-sluice-signature: sha256=<hex HMAC>`; may
    /// be `env:NAME`.
    pub secret: Secret,
}

/// A price or budget amount: finite, not negative, at most [`MAX_USD`].
pub(super) fn usd(path: &str, value: f64) -> Result<(), ConfigError> {
    if !value.is_finite() || value < 0.0 {
        return Err(ConfigError::invalid(
            path,
            format!("must be a number of USD, 0 or more (got {value})"),
        ));
    }
    if value > MAX_USD {
        return Err(ConfigError::invalid(
            path,
            format!("must be at most {MAX_USD} USD (got {value})"),
        ));
    }
    Ok(())
}

/// The rules of this file's sections.
pub(super) fn validate(c: &Config) -> Result<(), ConfigError> {
    for (i, p) in c.prices.iter().enumerate() {
        let at = |field: &str| format!("prices[{i}].{field}");
        globset::Glob::new(&p.model).map_err(|e| {
            ConfigError::invalid(
                at("model"),
                format!("invalid glob `{}`: {}", p.model, e.kind()),
            )
        })?;
        if let Some(name) = &p.provider
            && c.provider(name).is_none()
        {
            return Err(ConfigError::invalid(
                at("provider"),
                format!("no provider is named `{name}`"),
            ));
        }
        usd(&at("input_per_mtok"), p.input_per_mtok)?;
        usd(&at("output_per_mtok"), p.output_per_mtok)?;
        if let Some(v) = p.cached_input_per_mtok {
            usd(&at("cached_input_per_mtok"), v)?;
        }
        if p.max_output_tokens == Some(0) {
            return Err(ConfigError::invalid(
                at("max_output_tokens"),
                "must be greater than 0",
            ));
        }
    }
    for (i, t) in c.tenants.iter().enumerate() {
        if let Some(b) = &t.budget_usd {
            for (name, value) in [("day", b.day), ("month", b.month), ("total", b.total)] {
                if let Some(v) = value {
                    usd(&format!("tenants[{i}].budget_usd.{name}"), v)?;
                }
            }
        }
    }
    for (i, w) in c.alerts.webhooks.iter().enumerate() {
        let url = w.url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || reqwest::Url::parse(url).is_err()
        {
            return Err(ConfigError::invalid(
                format!("alerts.webhooks[{i}].url"),
                format!("`{url}` is not an http:// or https:// URL"),
            ));
        }
        if w.secret.expose().is_empty() {
            return Err(ConfigError::invalid(
                format!("alerts.webhooks[{i}].secret"),
                "must not be empty",
            ));
        }
    }
    Ok(())
}
