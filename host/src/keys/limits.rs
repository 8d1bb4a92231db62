//! A run-time key's own `rpm` and `tpm`: host buckets charged in the same
//! atomic charge as the throttle plugin's (same namespace, so one round
//! trip and all or nothing), refilled over a minute. Tokens are charged as
//! the prompt estimate plus `max_tokens` (or [`COMPLETION_ESTIMATE`]) and
//! corrected to actual usage after the answer, like the reference throttle.

use super::ActiveKey;
use crate::error::GatewayError;
use crate::policy::{Bucket, PolicyRequest, Shape, Unit, Usage};

/// Completion tokens assumed when a request sets no `max_tokens`.
pub const COMPLETION_ESTIMATE: u32 = 256;
const WINDOW_MS: u64 = 60_000;

fn bucket(key: &ActiveKey, what: &str, limit: u64, cost: i64, unit: Unit) -> Bucket {
    Bucket {
        key: format!("vkey:{}:{what}", key.record.id),
        shape: Shape::Window {
            limit,
            window_ms: WINDOW_MS,
        },
        cost,
        unit,
    }
}

fn charged_tokens(req: &PolicyRequest, estimated_prompt: u32) -> u64 {
    u64::from(estimated_prompt) + u64::from(req.max_tokens.unwrap_or(COMPLETION_ESTIMATE))
}

/// The buckets `key` adds to the charge of `req`, or a refusal when the
/// request alone needs more tokens than the key allows per minute.
pub fn admit(key: &ActiveKey, req: &PolicyRequest) -> Result<Vec<Bucket>, GatewayError> {
    let mut out = Vec::new();
    if let Some(rpm) = key.record.rpm {
        out.push(bucket(key, "rpm", rpm, 1, Unit::Requests));
    }
    if let Some(tpm) = key.record.tpm {
        let tokens = charged_tokens(req, req.estimated_prompt_tokens);
        if tokens > tpm {
            return Err(GatewayError::rejected(
                429,
                format!(
                    "request too large: it may use {tokens} tokens, more than the {tpm} tokens per minute this API key allows; send a shorter prompt or a lower max_tokens"
                ),
                None,
            ));
        }
        let cost = i64::try_from(tokens).unwrap_or(i64::MAX);
        out.push(bucket(key, "tpm", tpm, cost, Unit::Tokens));
    }
    Ok(out)
}

/// The token correction once `usage` is known (none without `tpm`).
pub fn settle(key: &ActiveKey, req: &PolicyRequest, usage: &Usage) -> Option<Bucket> {
    let tpm = key.record.tpm?;
    let charged = charged_tokens(req, usage.estimated_prompt_tokens);
    let used = if usage.cached {
        0
    } else {
        u64::from(usage.prompt_tokens) + u64::from(usage.completion_tokens)
    };
    let correction =
        i64::try_from(used).unwrap_or(i64::MAX) - i64::try_from(charged).unwrap_or(i64::MAX);
    (correction != 0).then(|| bucket(key, "tpm", tpm, correction, Unit::Tokens))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyRecord;

    fn key(rpm: Option<u64>, tpm: Option<u64>) -> ActiveKey {
        let record: KeyRecord = serde_json::from_value(serde_json::json!({
            "id": "key_1", "tenant": "acme", "rpm": rpm, "tpm": tpm,
            "created_ms": 0, "updated_ms": 0, "secrets": []
        }))
        .unwrap();
        ActiveKey::new(record)
    }

    fn request(prompt: u32, max_tokens: Option<u32>) -> PolicyRequest {
        PolicyRequest {
            estimated_prompt_tokens: prompt,
            max_tokens,
            ..PolicyRequest::default()
        }
    }

    #[test]
    fn charges_requests_and_worst_case_tokens_then_settles_to_usage() {
        let k = key(Some(60), Some(1000));
        let b = admit(&k, &request(40, Some(100))).unwrap();
        let got: Vec<(&str, i64)> = b.iter().map(|b| (b.key.as_str(), b.cost)).collect();
        assert_eq!(got, [("vkey:key_1:rpm", 1), ("vkey:key_1:tpm", 140)]);
        let usage = Usage {
            prompt_tokens: 42,
            completion_tokens: 30,
            estimated_prompt_tokens: 40,
            cached: false,
        };
        assert_eq!(
            settle(&k, &request(40, Some(100)), &usage).unwrap().cost,
            72 - 140
        );
        let hit = Usage {
            cached: true,
            ..usage
        };
        assert_eq!(
            settle(&k, &request(40, None), &hit).unwrap().cost,
            -(40 + 256)
        );
        assert!(settle(&key(Some(5), None), &request(1, None), &usage).is_none());
    }

    #[test]
    fn a_request_larger_than_tpm_is_refused_outright() {
        let e = admit(&key(None, Some(100)), &request(50, Some(51))).unwrap_err();
        assert_eq!(e.status, 429);
        assert!(e.retry_after.is_none());
        assert!(
            admit(&key(None, None), &request(50, None))
                .unwrap()
                .is_empty()
        );
    }
}
