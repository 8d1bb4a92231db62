//! Who is calling: virtual key → tenant and tier, or an anonymous caller.

use std::sync::Arc;

use http::HeaderMap;

use super::RequestCtx;
use crate::error::GatewayError;
use crate::gateway::Gateway;

use crate::policy::ANONYMOUS_TENANT;
use crate::telemetry::KeyAuthOutcome;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub tenant: String,
    pub tier: String,
    /// An opaque id of the virtual key used (a hash prefix for config keys,
    /// the key's id for keys made at run time), never the key.
    pub key_id: Option<String>,
    /// The run-time virtual key used, with its limits, models and budgets.
    pub key: Option<Arc<crate::keys::ActiveKey>>,
}

impl Caller {
    /// An anonymous caller on `tier`.
    pub fn anonymous(tier: &str) -> Self {
        Self {
            tenant: ANONYMOUS_TENANT.to_string(),
            tier: tier.to_string(),
            key_id: None,
            key: None,
        }
    }
}

/// The token a client presented: `authorization: Bearer …` (OpenAI SDKs) or
/// `x-api-key` (Anthropic SDKs).
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION)
        && let Ok(v) = v.to_str()
    {
        let v = v.trim();
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or(v)
            .trim();
        if !token.is_empty() {
            return Some(token);
        }
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Resolves the caller. With no tenants configured everyone is anonymous
/// (whatever token an SDK sends); once tenants exist an unknown token is a
/// 401 and no token is anonymous if allowed. Config keys are checked first,
/// then run-time keys ([`crate::keys`]: from memory; an unknown secret costs
/// at most one state read).
pub async fn authenticate(
    gw: &Gateway,
    headers: &HeaderMap,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    let config = &gw.config;
    let anonymous = || {
        if config.anonymous_allowed() {
            Ok(Caller::anonymous(&config.anonymous.tier))
        } else {
            Err(GatewayError::unauthorized(
                "This gateway requires an API key: send `Authorization: Bearer <key>`.",
            ))
        }
    };
    ctx.caller = if config.tenants.is_empty() {
        anonymous()?
    } else {
        match presented_key(headers) {
            None => anonymous()?,
            Some(key) => match config.tenant_for_key(key) {
                Some(tenant) => Caller {
                    tenant: tenant.name.clone(),
                    tier: tenant.tier.clone(),
                    key_id: Some(key_id(key)),
                    key: None,
                },
                None => {
                    let found = gw.keys.authenticate(key).await;
                    gw.metrics.keys().auth(match &found {
                        Ok(Some(_)) => KeyAuthOutcome::Ok,
                        Ok(None) => KeyAuthOutcome::Unknown,
                        Err(e) if e.status == http::StatusCode::UNAUTHORIZED => {
                            KeyAuthOutcome::Refused
                        }
                        Err(_) => KeyAuthOutcome::Error,
                    });
                    let active = found?
                        .ok_or_else(|| GatewayError::unauthorized("Incorrect API key provided."))?;
                    let tier = gw
                        .keys
                        .tier_of(&active)
                        .ok_or_else(|| GatewayError::unauthorized("Incorrect API key provided."))?;
                    Caller {
                        tenant: active.record.tenant.clone(),
                        tier,
                        key_id: Some(active.record.id.clone()),
                        key: Some(active),
                    }
                }
            },
        }
    };
    Ok(())
}

/// Refuses a model the caller's run-time key may not use (403 naming it).
pub fn authorize_model(ctx: &RequestCtx) -> Result<(), GatewayError> {
    match &ctx.caller.key {
        Some(key) if !key.allows_model(&ctx.model) => {
            Err(GatewayError::model_not_allowed(&ctx.model))
        }
        _ => Ok(()),
    }
}

/// A stable opaque id for a virtual key.
fn key_id(key: &str) -> String {
    let hash = blake3::hash(key.as_bytes()).to_hex();
    format!("vk_{}", &hash[..16])
}

/// Request headers as plugins see them: lower-cased, credentials removed.
pub fn policy_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    const HIDDEN: &[&str] = &[
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "cookie",
    ];
    headers
        .iter()
        .filter(|(name, _)| !HIDDEN.contains(&name.as_str()))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_plugins() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer sk-secret".parse().unwrap());
        h.insert("x-api-key", "sk-secret".parse().unwrap());
        h.insert("cookie", "session=1".parse().unwrap());
        h.insert("cache-control", "no-store".parse().unwrap());
        let seen = policy_headers(&h);
        assert_eq!(
            seen,
            vec![("cache-control".to_string(), "no-store".to_string())]
        );
    }

    #[test]
    fn keys_are_read_from_either_sdk_header() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "k1".parse().unwrap());
        assert_eq!(presented_key(&h), Some("k1"));
        h.insert("authorization", "Bearer k2".parse().unwrap());
        assert_eq!(presented_key(&h), Some("k2"));
        assert!(key_id("k2").starts_with("vk_"));
        assert!(!key_id("k2").contains("k2"));
    }
}
