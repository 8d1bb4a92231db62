//! Webhooks: a finished job's result POSTed to its callback URL, signed per
//! the Standard Webhooks specification:
//!
//! - `webhook-id`: `msg_<job id>`, the same on every redelivery, so a
//!   receiver drops duplicates by it;
//! - `webhook-timestamp`: Unix seconds;
//! - `webhook-signature`: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`
//!   keyed with the decoded `whsec_` secret.
//!
//! A callback URL must match `[jobs.webhooks] allow` and, unless
//! `allow_private`, every address its host resolves to must be public
//! (loopback, private, link-local, unique-local, CGNAT, multicast and
//! unspecified are refused); the connection then goes to the address that
//! was checked, so a second DNS answer cannot point it elsewhere.
//!
//! An endpoint failing `disable_after` deliveries in a row is disabled
//! (logged as an error, counted in `sluice_job_webhook_endpoints_disabled`)
//! until `POST /admin/jobs/webhooks/enable` re-enables it. Failure counts
//! live in the state, so every node sees them.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::{JobRecord, Jobs};

/// State namespace of endpoint failure counts and disabled marks.
const NS: &str = "jobs:webhooks";

/// The signing key of a `whsec_<base64>` secret (16 bytes at least).
pub fn decode_secret(secret: &str) -> Option<Vec<u8>> {
    crate::config::decode_webhook_secret(secret)
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
pub fn sign(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("v1,{}", B64.encode(ctx.sign().as_ref()))
}

/// Whether `ip` is an address a callback may not reach by default.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 (CGNAT)
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 (embeds IPv4)
                || s[0] == 0x2001 && s[1] == 0x0db8 // documentation
        }
    }
}

/// Checks `url` against the config: scheme, allow-list, and (resolving its
/// host) the addresses. The addresses to connect to, all checked.
pub async fn check(jobs: &Jobs, url: &str) -> Result<(reqwest::Url, Vec<SocketAddr>), String> {
    let w = &jobs.config.webhooks;
    if jobs.secret.is_none() {
        return Err(
            "callbacks are not enabled on this gateway (no `[jobs.webhooks] secret`)".into(),
        );
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("a callback URL must be http or https".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("a callback URL must not carry credentials".into());
    }
    if !jobs.allow.is_match(parsed.as_str()) {
        return Err(format!(
            "the callback URL `{parsed}` is not in this gateway's allow-list"
        ));
    }
    let host = parsed
        .host_str()
        .ok_or("a callback URL needs a host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await
        .map_err(|_| format!("resolving `{host}` timed out"))?
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .collect(),
    };
    if addrs.is_empty() {
        return Err(format!("`{host}` has no address"));
    }
    if !w.allow_private
        && let Some(bad) = addrs.iter().find(|a| is_private(a.ip()))
    {
        return Err(format!(
            "the callback host `{host}` resolves to {}, a loopback, private or link-local address",
            bad.ip()
        ));
    }
    Ok((parsed, addrs))
}

fn endpoint_key(kind: &str, url: &str) -> String {
    let hash = blake3::hash(url.as_bytes()).to_hex();
    format!("{kind}/{}", &hash[..32])
}

/// Whether `url` is disabled after repeated failures.
pub async fn is_disabled(jobs: &Jobs, url: &str) -> bool {
    matches!(
        jobs.state.get(NS, &endpoint_key("off", url)).await,
        Ok(Some(_))
    )
}

/// Re-enables `url` and clears its failure count; whether it was disabled.
pub async fn enable(jobs: &Jobs, url: &str) -> Result<bool, crate::state::StateError> {
    jobs.state.delete(NS, &endpoint_key("fail", url)).await?;
    jobs.state.delete(NS, &endpoint_key("off", url)).await
}

/// How a delivery ended: the record's `webhook` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Failed,
    Disabled,
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Failed => "failed",
            Outcome::Disabled => "disabled",
            Outcome::Refused => "refused",
        }
    }
}

/// The webhook body for a finished job.
pub fn payload(record: &JobRecord) -> Vec<u8> {
    let body = serde_json::json!({
        "type": format!("job.{}", record.status.as_str()),
        "timestamp": iso8601(super::now_ms() / 1000),
        "data": record.view(),
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Delivers `record`'s result to `url`, retrying with exponential backoff
/// up to `[jobs.webhooks] attempts` times.
pub async fn deliver(jobs: &Jobs, record: &JobRecord, url: &str) -> Outcome {
    let w = &jobs.config.webhooks;
    let Some(key) = jobs.secret.as_deref() else {
        return Outcome::Refused;
    };
    let body = payload(record);
    let msg_id = format!("msg_{}", record.spec.id);
    for attempt in 0..w.attempts {
        if attempt > 0 {
            let backoff = w.retry_base_ms.saturating_mul(1 << (attempt - 1).min(16));
            tokio::time::sleep(Duration::from_millis(backoff.min(60_000))).await;
        }
        if is_disabled(jobs, url).await {
            return Outcome::Disabled;
        }
        let (parsed, addrs) = match check(jobs, url).await {
            Ok(ok) => ok,
            Err(e) => {
                tracing::warn!(job = %record.spec.id, error = %e, "webhook refused");
                return Outcome::Refused;
            }
        };
        let ok = send(jobs, key, &msg_id, &parsed, &addrs, &body).await;
        jobs.metrics.jobs.webhook(ok.is_ok());
        match ok {
            Ok(()) => {
                let _ = jobs.state.delete(NS, &endpoint_key("fail", url)).await;
                return Outcome::Delivered;
            }
            Err(e) => {
                tracing::warn!(job = %record.spec.id, url = %crate::telemetry::log_safe(url), attempt = attempt + 1, error = %e, "webhook delivery failed");
                let failures = jobs
                    .state
                    .incr(
                        NS,
                        &endpoint_key("fail", url),
                        1,
                        Some(Duration::from_secs(7 * 86400)),
                    )
                    .await
                    .unwrap_or(0);
                if failures >= i64::from(w.disable_after) {
                    let _ = jobs
                        .state
                        .set(NS, &endpoint_key("off", url), url.as_bytes(), None)
                        .await;
                    jobs.metrics.jobs.endpoint_disabled();
                    tracing::error!(
                        url = %crate::telemetry::log_safe(url),
                        failures,
                        "webhook endpoint disabled after failing {failures} times in a row; re-enable with POST /admin/jobs/webhooks/enable"
                    );
                    return Outcome::Disabled;
                }
            }
        }
    }
    Outcome::Failed
}

async fn send(
    jobs: &Jobs,
    key: &[u8],
    msg_id: &str,
    url: &reqwest::Url,
    addrs: &[SocketAddr],
    body: &[u8],
) -> Result<(), String> {
    let host = url.host_str().unwrap_or_default();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_millis(jobs.config.webhooks.timeout_ms))
        .resolve_to_addrs(host, addrs)
        .build()
        .map_err(|e| e.to_string())?;
    let ts = super::now_ms() / 1000;
    let response = client
        .post(url.clone())
        .header("content-type", "application/json")
        .header("webhook-id", msg_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sign(key, msg_id, ts, body))
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", response.status()))
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds `t`.
pub fn iso8601(t: u64) -> String {
    let days = (t / 86400) as i64;
    let rem = t % 86400;
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification's reference
        // libraries (svix test vector).
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn dates_format() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1614265330), "2021-02-25T15:02:10Z");
    }
}
