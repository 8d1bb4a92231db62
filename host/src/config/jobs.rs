//! `[jobs]` and `[jobs.webhooks]`: asynchronous jobs and their callbacks.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use base64::Engine as _;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::{ConfigError, EnvLookup, Secret};

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
    /// Runs of a job before it is dead-lettered (the retry plugin may
    /// stop sooner).
    pub max_attempts: u32,
    /// Bounds on the retry plugin's delay before a job runs again: at
    /// least `retry_base_ms`, at most `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// A job waiting this long in its priority's queue moves up one level
    /// (again after as long in the next); 0 turns aging off.
    pub aging_ms: u64,
    /// A job not finished this long after it was accepted fails (a
    /// rate-limited job waits for its bucket at most until then).
    pub max_wait_secs: u64,
    /// Largest request body a job accepts.
    pub max_body_bytes: usize,
    /// Largest Batch API input file (`POST /v1/files`).
    pub max_file_bytes: usize,
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
            aging_ms: 300_000,
            max_wait_secs: 24 * 3600,
            max_body_bytes: 1 << 20,
            max_file_bytes: 16 << 20,
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

    /// `None` when aging is off.
    pub fn aging(&self) -> Option<Duration> {
        (self.aging_ms > 0).then(|| Duration::from_millis(self.aging_ms))
    }

    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms)
    }

    /// Checks every field; the error names the first bad one.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
        positive("jobs.max_file_bytes", self.max_file_bytes as u64)?;
        positive("jobs.poll_ms", self.poll_ms)?;
        let w = &self.webhooks;
        if let Some(secret) = &w.secret
            && decode_webhook_secret(secret.expose()).is_none()
        {
            return Err(ConfigError::invalid(
                "jobs.webhooks.secret",
                "must be `whsec_` followed by base64 (at least 16 bytes decoded)",
            ));
        }
        for (i, pattern) in w.allow.iter().enumerate() {
            if let Err(e) = compile_callback_allow(std::slice::from_ref(pattern)) {
                return Err(ConfigError::invalid(format!("jobs.webhooks.allow[{i}]"), e));
            }
        }
        positive("jobs.webhooks.attempts", w.attempts.into())?;
        positive("jobs.webhooks.retry_base_ms", w.retry_base_ms)?;
        positive("jobs.webhooks.timeout_ms", w.timeout_ms)?;
        positive("jobs.webhooks.disable_after", w.disable_after.into())?;
        let allow = compile_callback_allow(&w.allow)
            .map_err(|e| ConfigError::invalid("jobs.webhooks.allow", e))?;
        for (tenant, url) in &w.tenant_urls {
            let path = format!("jobs.webhooks.tenant_urls.{tenant}");
            let Ok(parsed) = reqwest::Url::parse(url) else {
                return Err(ConfigError::invalid(path, format!("`{url}` is not a URL")));
            };
            // Otherwise every job of that tenant would be refused.
            if w.secret.is_none() {
                return Err(ConfigError::invalid(
                    "jobs.webhooks.secret",
                    "is needed with jobs.webhooks.tenant_urls (callbacks are signed)",
                ));
            }
            if !allow.is_match(parsed.as_str()) {
                return Err(ConfigError::invalid(
                    path,
                    format!("`{url}` does not match jobs.webhooks.allow"),
                ));
            }
        }
        Ok(())
    }

    /// Resolves `env:` in the webhook secret.
    pub(super) fn resolve_env(&mut self, env: EnvLookup<'_>) -> Result<(), ConfigError> {
        if let Some(secret) = &mut self.webhooks.secret {
            secret.resolve_env("jobs.webhooks.secret", env)?;
        }
        Ok(())
    }
}

/// The signing key of a `whsec_<base64>` webhook secret (at least 16
/// bytes), as the Standard Webhooks specification defines it.
pub fn decode_webhook_secret(secret: &str) -> Option<Vec<u8>> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim().strip_prefix("whsec_")?)
        .ok()?;
    (key.len() >= 16).then_some(key)
}

/// The callback allow-list globs (`*` matches across `/`).
pub fn compile_callback_allow(patterns: &[String]) -> Result<GlobSet, String> {
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        let glob = GlobBuilder::new(p)
            .literal_separator(false)
            .build()
            .map_err(|e| format!("invalid glob `{p}`: {}", e.kind()))?;
        set.add(glob);
    }
    set.build().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn error(toml: &str) -> String {
        let e = Config::from_toml_str(toml, &|_| None).expect_err("refused");
        format!("{} | {}", e.field_path().unwrap_or_default(), e)
    }

    #[test]
    fn jobs_errors_name_the_field() {
        for (toml, field) in [
            ("[jobs]\nconcurrency = 0", "jobs.concurrency"),
            (
                "[jobs]\nvisibility_timeout_ms = 10",
                "jobs.visibility_timeout_ms",
            ),
            ("[jobs]\nresult_ttl_secs = 0", "jobs.result_ttl_secs"),
            ("[jobs]\nmax_attempts = 0", "jobs.max_attempts"),
            ("[jobs]\nmax_body_bytes = 0", "jobs.max_body_bytes"),
            (
                "[jobs]\nretry_base_ms = 10\nretry_max_ms = 5",
                "jobs.retry_max_ms",
            ),
            ("[jobs]\nnope = 1", "jobs"),
            (
                "[jobs.webhooks]\nsecret = \"hunter2\"",
                "jobs.webhooks.secret",
            ),
            (
                "[jobs.webhooks]\nallow = [\"ok/*\", \"[bad\"]",
                "jobs.webhooks.allow[1]",
            ),
            (
                "[jobs.webhooks]\ndisable_after = 0",
                "jobs.webhooks.disable_after",
            ),
            (
                "[jobs.webhooks.tenant_urls]\nacme = \"not a url\"",
                "jobs.webhooks.tenant_urls.acme",
            ),
            (
                "[jobs.webhooks.tenant_urls]\nacme = \"https://h.example.com/x\"",
                "jobs.webhooks.secret",
            ),
            (
                "[jobs.webhooks]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n[jobs.webhooks.tenant_urls]\nacme = \"https://elsewhere.example.com/x\"",
                "jobs.webhooks.tenant_urls.acme",
            ),
        ] {
            let e = error(toml);
            assert!(e.starts_with(field), "{toml}: {e}");
        }
        let e = Config::from_toml_str("[jobs.webhooks]\nsecret = \"env:NOPE\"", &|_| None)
            .expect_err("missing env");
        assert_eq!(e.field_path(), Some("jobs.webhooks.secret"));
    }

    #[test]
    fn a_good_jobs_section_loads() {
        let c = Config::from_toml_str(
            "[jobs]\nenabled = true\n[jobs.webhooks]\nsecret = \"env:S\"\nallow = [\"https://h.example.com/*\"]",
            &|_| Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        )
        .unwrap();
        assert!(c.jobs.enabled);
        assert_eq!(
            super::decode_webhook_secret(c.jobs.webhooks.secret.unwrap().expose())
                .unwrap()
                .len(),
            24
        );
    }
}
