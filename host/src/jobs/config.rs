//! `[jobs]` and `[jobs.webhooks]`: asynchronous jobs and their callbacks.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, Secret};

/// `[jobs]`: `Prefer: respond-async` requests queued and run by workers on
/// every node.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Whether `Prefer: respond-async` queues a job (otherwise the header is
    /// ignored and the call is synchronous) and workers run.
    pub enabled: bool,
    /// Jobs one node runs at once.
    pub concurrency: usize,
    /// A job claimed by a node that stops renewing its claim for this long
    /// (the node died) is taken over by another node.
    pub visibility_timeout_ms: u64,
    /// How long a finished job and its result stay readable.
    pub result_ttl_secs: u64,
    /// How long a dead-lettered job stays for inspection and requeue.
    pub dead_ttl_secs: u64,
    /// Runs of a job before it is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay; doubled per attempt (with full jitter) up to
    /// `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// A job not finished this long after it was accepted fails (a
    /// rate-limited job waits for its bucket at most until then).
    pub max_wait_secs: u64,
    /// Largest request body a job accepts.
    pub max_body_bytes: usize,
    /// How often an idle worker looks for new jobs from other nodes (jobs
    /// accepted on the same node start at once).
    pub poll_ms: u64,
    pub webhooks: WebhooksConfig,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            concurrency: 4,
            visibility_timeout_ms: 30_000,
            result_ttl_secs: 24 * 3600,
            dead_ttl_secs: 7 * 24 * 3600,
            max_attempts: 3,
            retry_base_ms: 1_000,
            retry_max_ms: 60_000,
            max_wait_secs: 24 * 3600,
            max_body_bytes: 1 << 20,
            poll_ms: 200,
            webhooks: WebhooksConfig::default(),
        }
    }
}

/// `[jobs.webhooks]`: where results may be sent and how they are signed.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// The Standard Webhooks signing secret, `whsec_<base64>` (or
    /// `env:NAME`). Without it no callback is accepted.
    pub secret: Option<Secret>,
    /// Globs a callback URL must match (`https://hooks.example.com/*`); an
    /// empty list refuses every callback.
    pub allow: Vec<String>,
    /// Whether callbacks may reach loopback, link-local and private
    /// addresses (refused by default, checked on the resolved addresses).
    pub allow_private: bool,
    /// Deliveries of one result before giving up.
    pub attempts: u32,
    /// First redelivery delay, doubled per attempt.
    pub retry_base_ms: u64,
    /// Bound on one delivery.
    pub timeout_ms: u64,
    /// Consecutive failed deliveries after which an endpoint is disabled
    /// (until re-enabled through the admin API).
    pub disable_after: u32,
    /// Per tenant, the callback used when a job names none.
    pub tenant_urls: BTreeMap<String, String>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            secret: None,
            allow: Vec::new(),
            allow_private: false,
            attempts: 5,
            retry_base_ms: 500,
            timeout_ms: 5_000,
            disable_after: 10,
            tenant_urls: BTreeMap::new(),
        }
    }
}

impl JobsConfig {
    pub fn visibility_timeout(&self) -> Duration {
        Duration::from_millis(self.visibility_timeout_ms)
    }

    pub fn result_ttl(&self) -> Duration {
        Duration::from_secs(self.result_ttl_secs)
    }

    pub fn dead_ttl(&self) -> Duration {
        Duration::from_secs(self.dead_ttl_secs)
    }

    pub fn max_wait(&self) -> Duration {
        Duration::from_secs(self.max_wait_secs)
    }

    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms)
    }

    /// Checks every field; the error names the first bad one.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let positive = |path: &str, v: u64| {
            if v == 0 {
                Err(ConfigError::invalid(path, "must be greater than 0"))
            } else {
                Ok(())
            }
        };
        positive("jobs.concurrency", self.concurrency as u64)?;
        if self.concurrency > 1024 {
            return Err(ConfigError::invalid(
                "jobs.concurrency",
                "must be at most 1024",
            ));
        }
        if self.visibility_timeout_ms < 1_000 {
            return Err(ConfigError::invalid(
                "jobs.visibility_timeout_ms",
                "must be at least 1000 (claims are renewed every third of it)",
            ));
        }
        positive("jobs.result_ttl_secs", self.result_ttl_secs)?;
        positive("jobs.dead_ttl_secs", self.dead_ttl_secs)?;
        positive("jobs.max_attempts", self.max_attempts.into())?;
        positive("jobs.retry_base_ms", self.retry_base_ms)?;
        if self.retry_max_ms < self.retry_base_ms {
            return Err(ConfigError::invalid(
                "jobs.retry_max_ms",
                "must be at least jobs.retry_base_ms",
            ));
        }
        positive("jobs.max_wait_secs", self.max_wait_secs)?;
        positive("jobs.max_body_bytes", self.max_body_bytes as u64)?;
        positive("jobs.poll_ms", self.poll_ms)?;
        let w = &self.webhooks;
        if let Some(secret) = &w.secret
            && super::webhook::decode_secret(secret.expose()).is_none()
        {
            return Err(ConfigError::invalid(
                "jobs.webhooks.secret",
                "must be `whsec_` followed by base64 (at least 16 bytes decoded)",
            ));
        }
        for (i, pattern) in w.allow.iter().enumerate() {
            if let Err(e) = super::webhook::compile_allow(std::slice::from_ref(pattern)) {
                return Err(ConfigError::invalid(format!("jobs.webhooks.allow[{i}]"), e));
            }
        }
        positive("jobs.webhooks.attempts", w.attempts.into())?;
        positive("jobs.webhooks.retry_base_ms", w.retry_base_ms)?;
        positive("jobs.webhooks.timeout_ms", w.timeout_ms)?;
        positive("jobs.webhooks.disable_after", w.disable_after.into())?;
        for (tenant, url) in &w.tenant_urls {
            if reqwest::Url::parse(url).is_err() {
                return Err(ConfigError::invalid(
                    format!("jobs.webhooks.tenant_urls.{tenant}"),
                    format!("`{url}` is not a URL"),
                ));
            }
        }
        Ok(())
    }

    /// Resolves `env:` in the webhook secret.
    pub(crate) fn resolve_env(
        &mut self,
        env: crate::config::EnvLookup<'_>,
    ) -> Result<(), ConfigError> {
        if let Some(secret) = &mut self.webhooks.secret {
            secret.resolve_env("jobs.webhooks.secret", env)?;
        }
        Ok(())
    }
}
