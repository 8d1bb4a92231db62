//! [`Alerts`]: threshold alerts (budgets, quotas) as a log line, a metric
//! (`sluice_alerts_total{kind,threshold}`) and a signed HTTP POST to each
//! `[[alerts.webhooks]]` URL.
//!
//! Reusable by anything with a limit: call [`crossed`] with the usage before
//! and after a change to learn which of [`THRESHOLDS`] it crossed, claim
//! each with [`Alerts::claim`] (once per threshold, subject and period over
//! every node), and [`Alerts::raise`] the ones claimed.
//!
//! Webhook body: the [`Alert`] as JSON. Header `x-sluice-signature:
//! sha256=<hex>` is HMAC-SHA256 of the exact body bytes with the webhook's
//! `secret`. A POST that fails (connection error, timeout, non-2xx) is
//! retried up to [`MAX_ATTEMPTS`] times with doubling backoff from
//! [`FIRST_BACKOFF`]; delivery is in the background and never delays a
//! request.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::WebhookConfig;
use crate::state::State;
use crate::telemetry::Metrics;

/// Percentages of a limit that raise an alert.
pub const THRESHOLDS: [u8; 4] = [70, 85, 95, 100];
/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "x-sluice-signature";
/// Delivery attempts per webhook and alert.
pub const MAX_ATTEMPTS: u32 = 5;
/// Wait before the first retry; doubles after each.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Bound on one delivery attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The state namespace of claimed alerts.
const CLAIMS_NS: &str = "sluice-alerts";

/// One alert, as webhooks receive it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// What crossed: `budget` (this module's users may add e.g. `quota`).
    pub kind: &'static str,
    /// Whose limit: `tenant:<name>`, `key:<id>`, …
    pub subject: String,
    /// `day`, `month`, `total`, `minute`, …
    pub period: &'static str,
    /// The period's id (`d2026-11-29`, `m2026-11`, `total`).
    pub period_id: String,
    /// Percent of the limit reached.
    pub threshold: u8,
    /// Usage and limit, in `unit`.
    pub used: f64,
    pub limit: f64,
    /// `usd`, `requests`, `tokens`.
    pub unit: &'static str,
    /// Unix time in milliseconds when it was raised.
    pub at_ms: u64,
}

/// The thresholds passed going from `before` to `after` of `limit` (all
/// in one unit): those `t` with `before < t% of limit <= after`.
pub fn crossed(before: f64, after: f64, limit: f64) -> Vec<u8> {
    if limit <= 0.0 {
        return Vec::new();
    }
    THRESHOLDS
        .into_iter()
        .filter(|t| {
            let at = limit * f64::from(*t) / 100.0;
            before < at && at <= after
        })
        .collect()
}

/// HMAC-SHA256 of `body` with `secret`, as lowercase hex.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut key = [0u8; BLOCK];
    if secret.len() > BLOCK {
        key[..32].copy_from_slice(&Sha256::digest(secret));
    } else {
        key[..secret.len()].copy_from_slice(secret);
    }
    let pad = |byte: u8| key.map(|k| k ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(body)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

/// Raises alerts; cheap to clone.
#[derive(Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
}

struct Inner {
    webhooks: Vec<WebhookConfig>,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    state: State,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts")
            .field("webhooks", &self.inner.webhooks.len())
            .finish()
    }
}

impl Alerts {
    /// Alerts to `webhooks`, claimed in `state`.
    pub fn new(webhooks: Vec<WebhookConfig>, metrics: Arc<Metrics>, state: State) -> Self {
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                webhooks,
                client,
                metrics,
                state,
            }),
        }
    }

    /// Claims the alert `id` (e.g. `budget|tenant:acme|d2026-11-29|85`) for
    /// `ttl` (at least the period's length): true for the first caller on
    /// any node, false after. When the state fails the alert is raised
    /// (a duplicate is better than a lost alert).
    pub async fn claim(&self, id: &str, ttl: Option<Duration>) -> bool {
        match self
            .inner
            .state
            .compare_and_swap(CLAIMS_NS, id, None, b"1", ttl)
            .await
        {
            Ok(first) => first,
            Err(e) => {
                tracing::warn!(error = %e, alert = id, "could not claim an alert; raising it anyway");
                true
            }
        }
    }

    /// Logs, counts and delivers `alert` (delivery in the background).
    pub fn raise(&self, alert: Alert) {
        tracing::warn!(
            target: "sluice::alerts",
            kind = alert.kind,
            subject = %alert.subject,
            period = alert.period,
            period_id = %alert.period_id,
            threshold = alert.threshold,
            used = alert.used,
            limit = alert.limit,
            unit = alert.unit,
            "{} of {} reached {}% of its {} limit",
            alert.kind,
            alert.subject,
            alert.threshold,
            alert.period
        );
        self.inner
            .metrics
            .spend()
            .alert(alert.kind, alert.threshold);
        if self.inner.webhooks.is_empty() {
            return;
        }
        let body = match serde_json::to_vec(&alert) {
            Ok(b) => bytes::Bytes::from(b),
            Err(_) => return,
        };
        for hook in &self.inner.webhooks {
            let signature = format!("sha256={}", sign(hook.secret.expose().as_bytes(), &body));
            let (client, url, body) = (self.inner.client.clone(), hook.url.clone(), body.clone());
            tokio::spawn(deliver(client, url, body, signature));
        }
    }
}

/// POSTs `body` to `url`, retrying with backoff.
async fn deliver(client: reqwest::Client, url: String, body: bytes::Bytes, signature: String) {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=MAX_ATTEMPTS {
        let sent = client
            .post(&url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, &signature)
            .body(body.clone())
            .send()
            .await;
        let failure = match sent {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => format!("status {}", r.status().as_u16()),
            Err(e) => e.to_string(),
        };
        if attempt == MAX_ATTEMPTS {
            tracing::warn!(url = %url, error = %failure, attempts = attempt, "alert webhook failed; giving up");
            return;
        }
        tracing::debug!(url = %url, error = %failure, attempt, "alert webhook failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            sign(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn thresholds_fire_when_crossed_and_not_again() {
        assert_eq!(crossed(0.0, 69.0, 100.0), Vec::<u8>::new());
        assert_eq!(crossed(0.0, 70.0, 100.0), vec![70]);
        assert_eq!(crossed(70.0, 96.0, 100.0), vec![85, 95]);
        assert_eq!(crossed(96.0, 100.0, 100.0), vec![100]);
        assert_eq!(crossed(100.0, 120.0, 100.0), Vec::<u8>::new());
        assert!(crossed(0.0, 1.0, 0.0).is_empty());
    }
}
