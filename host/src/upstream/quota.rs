//! Upstream key quotas (`key_quota`, `key_quotas` on a provider): requests
//! per minute, hour and day and tokens per minute for each provider key,
//! counted in the state, so every node spends from one count. Before an
//! attempt the pool's next key is charged (one atomic charge of its
//! buckets); a key without headroom rests locally until its buckets refill
//! and the next key is tried, so the load spreads over the keys that have
//! room. When none has, the attempt fails as a 429 with `retry-after`
//! without calling the provider.
//!
//! Tokens are charged at their worst case (the prompt estimate plus
//! `max_tokens`, or [`crate::keys::limits::COMPLETION_ESTIMATE`]) before
//! the attempt, so concurrent requests never pass a key's tokens per
//! minute; the answer's [`UpstreamResponse`](super::UpstreamResponse)
//! carries the charge ([`QuotaCharge`]) and the pipeline settles it to the
//! tokens the provider reported once they are known (a stream at its end),
//! refunding the difference. A failed attempt stays charged at its worst
//! case (the provider may have counted some of it).

use crate::config::{KeyQuota, ProviderConfig};
use crate::policy::{Bucket, Shape, Unit};
use crate::state::State;

/// The worst-case tokens an answered request charged to its key's
/// tokens-per-minute bucket; [`QuotaCharge::settle`] corrects it to the
/// actual tokens.
#[derive(Debug, Clone)]
pub struct QuotaCharge {
    state: State,
    /// The tokens bucket, with the charged worst case as its cost.
    bucket: Bucket,
}

impl QuotaCharge {
    /// The tokens bucket of `buckets` (charged in `state`), if any.
    pub(crate) fn of(state: &State, buckets: &[Bucket]) -> Option<Self> {
        let bucket = buckets.iter().find(|b| b.unit == Unit::Tokens)?.clone();
        Some(QuotaCharge {
            state: state.clone(),
            bucket,
        })
    }

    /// The tokens charged before the attempt.
    pub fn charged(&self) -> i64 {
        self.bucket.cost
    }

    /// Replaces the worst case by `actual` tokens (written behind, like
    /// rate-limit settles).
    pub async fn settle(self, actual: u64) {
        let delta = i64::try_from(actual).unwrap_or(i64::MAX) - self.bucket.cost;
        if delta == 0 {
            return;
        }
        let bucket = Bucket {
            cost: delta,
            ..self.bucket
        };
        if let Err(e) = self.state.settle(NAMESPACE, &[bucket]).await {
            tracing::warn!(error = %e, "upstream key quota not settled");
        }
    }
}

/// The state namespace of upstream key quota buckets.
pub const NAMESPACE: &str = "sluice:upstream-keys";

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 86_400_000;

/// One key's quota and the name its buckets go by.
#[derive(Debug, Clone)]
pub(crate) struct KeyLimits {
    /// `<provider>:<fingerprint>`: a short digest of the key, so the count
    /// follows the key when the config reorders keys, and names no secret.
    prefix: String,
    quota: KeyQuota,
}

impl KeyLimits {
    /// The quota of each key of `config` (None where it has none).
    pub fn of(config: &ProviderConfig) -> Vec<Option<KeyLimits>> {
        config
            .keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let quota = config.quota_of(i)?;
                let hash = blake3::hash(key.expose().as_bytes()).to_hex();
                Some(KeyLimits {
                    prefix: format!("{}:{}", config.name, &hash[..12]),
                    quota,
                })
            })
            .collect()
    }

    /// The buckets one request of `tokens` charges.
    pub fn buckets(&self, tokens: u64) -> Vec<Bucket> {
        let q = &self.quota;
        let windows = [
            ("rpm", q.rpm, MINUTE_MS, Unit::Requests, 1),
            ("rph", q.rph, HOUR_MS, Unit::Requests, 1),
            ("rpd", q.rpd, DAY_MS, Unit::Requests, 1),
            ("tpm", q.tpm, MINUTE_MS, Unit::Tokens, tokens),
        ];
        windows
            .into_iter()
            .filter_map(|(name, limit, window_ms, unit, cost)| {
                Some(Bucket {
                    key: format!("{}:{name}", self.prefix),
                    shape: Shape::Window {
                        limit: limit?,
                        window_ms,
                    },
                    cost: i64::try_from(cost).unwrap_or(i64::MAX),
                    unit,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn per_key_entries_replace_the_default_and_name_no_secret() {
        let mut config = ProviderConfig::default();
        config.name = "openai".into();
        config.keys = vec![
            Secret::new("sk-a"),
            Secret::new("sk-b"),
            Secret::new("sk-c"),
        ];
        config.key_quota = Some(KeyQuota {
            rpm: Some(10),
            tpm: Some(1000),
            ..KeyQuota::default()
        });
        config.key_quotas = vec![
            KeyQuota::default(),
            KeyQuota {
                rpd: Some(5),
                ..KeyQuota::default()
            },
        ];
        let limits = KeyLimits::of(&config);
        assert!(limits[0].is_none(), "{{}} means no quota");
        let b = limits[1].as_ref().unwrap().buckets(300);
        assert_eq!(b.len(), 1);
        assert!(b[0].key.ends_with(":rpd") && !b[0].key.contains("sk-b"));
        let c = limits[2].as_ref().unwrap().buckets(300);
        let costs: Vec<(String, i64)> = c
            .iter()
            .map(|b| (b.key.rsplit(':').next().unwrap().to_owned(), b.cost))
            .collect();
        assert_eq!(costs, [("rpm".into(), 1), ("tpm".into(), 300)]);
    }
}
