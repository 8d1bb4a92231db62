//! The input of `sluice plugin test`: one request (or, with `--scenario`, a
//! list of them) as the policy sees it, every field optional with a
//! default, unknown fields refused by name. docs/plugin-test.md describes
//! it field by field.
//!
//! Names are snake_case (`max_tokens`, `retry_after_ms`); enum values are
//! kebab-case as in WIT (`anthropic-messages`, `connect-error`), and their
//! snake_case spelling is accepted too.

use std::collections::BTreeMap;

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::Value;

use crate::policy::{
    Attempt, AttemptOutcome, Message, Param, PolicyRequest, Route, RouteCandidate,
    SemanticCandidate, Usage,
};

/// One request of a `plugin test` input.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestInput {
    /// An OpenAI or Anthropic request body; the fields below override what
    /// it gives.
    pub body: Option<Value>,
    pub route: Option<String>,
    pub id: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub streaming: Option<bool>,
    pub max_tokens: Option<u32>,
    pub estimated_prompt_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub messages: Option<Vec<TestMessage>>,
    /// Other body fields, by name.
    pub params: Option<BTreeMap<String, Value>>,
    pub tenant: Option<String>,
    pub tier: Option<String>,
    pub key_id: Option<String>,
    pub client_ip: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    /// Throttle: the usage `settle` sees.
    pub usage: Option<TestUsage>,
    /// Retry: the failed attempt `decide` sees.
    pub attempt: Option<TestAttempt>,
    /// Semantic: a cached answer `accept` is asked about.
    pub candidate: Option<TestCandidate>,
    /// Route: the (provider, model) candidates `order` sees.
    pub candidates: Option<Vec<RouteCandidate>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestMessage {
    pub role: Option<String>,
    /// The text (`content` is accepted, as in an OpenAI body).
    #[serde(alias = "content")]
    pub text: Option<String>,
    pub has_tool_calls: Option<bool>,
    pub extra_json: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestUsage {
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    pub cached: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestAttempt {
    pub number: Option<u32>,
    pub elapsed_ms: Option<u64>,
    pub provider: Option<String>,
    pub model: Option<String>,
    /// `status` (default), `timeout` or `connect-error`.
    pub outcome: Option<String>,
    /// For `status`: the upstream's status code (default 503).
    pub code: Option<u16>,
    pub retry_after_ms: Option<u64>,
    /// For `connect-error`.
    pub message: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCandidate {
    pub score: Option<f32>,
    pub prompt: Option<String>,
    pub age_seconds: Option<u32>,
}

/// `value` parsed as [`TestInput`], naming an unknown field.
pub fn parse_input(value: Value) -> anyhow::Result<TestInput> {
    let looks_like_body = value.get("messages").is_some() || value.get("input").is_some();
    serde_json::from_value(value).map_err(|e| {
        let hint = if looks_like_body && e.to_string().contains("unknown field") {
            " (an OpenAI or Anthropic request body goes under \"body\")"
        } else {
            ""
        };
        anyhow::anyhow!("input: {e}{hint}; see docs/plugin-test.md for the fields")
    })
}

/// A `--scenario` file: a JSON array of inputs, or `{"requests": [...]}`.
pub fn parse_scenario(value: Value) -> anyhow::Result<Vec<TestInput>> {
    let list = match value {
        Value::Array(items) => items,
        Value::Object(mut map) if map.len() == 1 && map.contains_key("requests") => {
            match map.remove("requests") {
                Some(Value::Array(items)) => items,
                _ => anyhow::bail!("scenario: \"requests\" must be an array"),
            }
        }
        _ => anyhow::bail!("scenario: expected an array of requests or {{\"requests\": [...]}}"),
    };
    list.into_iter()
        .enumerate()
        .map(|(i, v)| parse_input(v).with_context(|| format!("scenario request {}", i + 1)))
        .collect()
}

/// An enum value in kebab-case, accepting snake_case.
fn kebab(s: &str) -> String {
    s.trim().to_ascii_lowercase().replace('_', "-")
}

fn route(name: &str) -> anyhow::Result<Route> {
    match kebab(name).as_str() {
        "chat" => Ok(Route::Chat),
        "embeddings" => Ok(Route::Embeddings),
        "anthropic-messages" => Ok(Route::AnthropicMessages),
        other => anyhow::bail!(
            "input: unknown route {other:?}: expected chat, embeddings or anthropic-messages"
        ),
    }
}

impl TestInput {
    /// The request view: the body's (if any), then every field given.
    pub fn request(&self) -> anyhow::Result<PolicyRequest> {
        let mut req = PolicyRequest {
            id: "test".into(),
            provider: "test".into(),
            model: "gpt-4o-mini".into(),
            tenant: crate::policy::ANONYMOUS_TENANT.into(),
            tier: crate::policy::ANONYMOUS_TENANT.into(),
            client_ip: "127.0.0.1".into(),
            ..PolicyRequest::default()
        };
        if let Some(body) = &self.body {
            req.route = match &self.route {
                Some(r) => route(r)?,
                None => body_route(body),
            };
            let bytes = serde_json::to_vec(body)?;
            let parsed = crate::api::parse(req.route, &bytes).context("input: body")?;
            req.model = parsed.model;
            req.streaming = parsed.stream;
            req.max_tokens = parsed.max_tokens;
            req.estimated_prompt_tokens = parsed.estimated_prompt_tokens;
            req.temperature = parsed.temperature;
            req.messages = parsed.messages;
            req.params = parsed.params;
        } else if let Some(r) = &self.route {
            req.route = route(r)?;
        }
        macro_rules! set {
            ($($f:ident),*) => {$(
                if let Some(v) = &self.$f { req.$f = v.clone(); }
            )*};
        }
        set!(id, provider, model, streaming, tenant, tier, client_ip);
        if self.max_tokens.is_some() {
            req.max_tokens = self.max_tokens;
        }
        if self.temperature.is_some() {
            req.temperature = self.temperature;
        }
        if self.key_id.is_some() {
            req.key_id = self.key_id.clone();
        }
        if let Some(messages) = &self.messages {
            req.messages = messages
                .iter()
                .map(|m| Message {
                    role: m.role.clone().unwrap_or_else(|| "user".into()),
                    text: m.text.clone().unwrap_or_default(),
                    has_tool_calls: m.has_tool_calls.unwrap_or(false),
                    extra_json: m.extra_json.clone(),
                })
                .collect();
        }
        req.estimated_prompt_tokens = match self.estimated_prompt_tokens {
            Some(n) => n,
            None if self.body.is_none() => {
                // About four characters a token, as the gateway estimates.
                let chars: usize = req.messages.iter().map(|m| m.text.len()).sum();
                u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX)
            }
            None => req.estimated_prompt_tokens,
        };
        if let Some(params) = &self.params {
            req.params = params
                .iter()
                .map(|(name, v)| Param {
                    name: name.clone(),
                    json: v.to_string(),
                })
                .collect();
        }
        if let Some(headers) = &self.headers {
            req.headers = headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect();
        }
        Ok(req)
    }

    /// What `settle` sees: the given usage, by default the estimated prompt
    /// and `max_tokens` (or 0) completion tokens, not cached.
    pub fn usage(&self, req: &PolicyRequest) -> Usage {
        let u = self.usage.as_ref();
        Usage {
            prompt_tokens: u
                .and_then(|u| u.prompt_tokens)
                .unwrap_or(req.estimated_prompt_tokens),
            completion_tokens: u
                .and_then(|u| u.completion_tokens)
                .unwrap_or(req.max_tokens.unwrap_or(0)),
            estimated_prompt_tokens: req.estimated_prompt_tokens,
            cached: u.and_then(|u| u.cached).unwrap_or(false),
        }
    }

    /// What `retry.decide` sees: by default attempt 1 failed with a 503.
    pub fn attempt(&self, req: &PolicyRequest) -> anyhow::Result<Attempt> {
        let a = self.attempt.as_ref();
        let outcome = match a.and_then(|a| a.outcome.as_deref()).map(kebab).as_deref() {
            None | Some("status") => AttemptOutcome::Status {
                code: a.and_then(|a| a.code).unwrap_or(503),
                retry_after_ms: a.and_then(|a| a.retry_after_ms),
            },
            Some("timeout") => AttemptOutcome::Timeout,
            Some("connect-error") => AttemptOutcome::ConnectError {
                message: a
                    .and_then(|a| a.message.clone())
                    .unwrap_or_else(|| "connection refused".into()),
            },
            Some(other) => anyhow::bail!(
                "input: attempt.outcome {other:?}: expected status, timeout or connect-error"
            ),
        };
        Ok(Attempt {
            number: a.and_then(|a| a.number).unwrap_or(1),
            elapsed_ms: a.and_then(|a| a.elapsed_ms).unwrap_or(0),
            provider: a
                .and_then(|a| a.provider.clone())
                .unwrap_or_else(|| req.provider.clone()),
            model: a
                .and_then(|a| a.model.clone())
                .unwrap_or_else(|| req.model.clone()),
            outcome,
        })
    }

    /// The candidates `route.order` sees: those given, else
    /// [`RouteCandidate::samples`] for the request's model.
    pub fn route_candidates(&self, req: &PolicyRequest) -> Vec<RouteCandidate> {
        self.candidates
            .clone()
            .unwrap_or_else(|| RouteCandidate::samples(&req.model))
    }

    /// The cached answer `semantic.accept` is asked about, if given.
    pub fn candidate(&self) -> Option<SemanticCandidate> {
        self.candidate.as_ref().map(|c| SemanticCandidate {
            score: c.score.unwrap_or(0.95),
            prompt: c.prompt.clone().unwrap_or_default(),
            age_seconds: c.age_seconds.unwrap_or(0),
        })
    }
}

/// The route a raw body came in on: Anthropic when it has `system` or a
/// `claude` model, embeddings when it has `input`, else chat.
fn body_route(body: &Value) -> Route {
    if body.get("system").is_some()
        || body
            .get("model")
            .and_then(Value::as_str)
            .is_some_and(|m| m.starts_with("claude"))
    {
        Route::AnthropicMessages
    } else if body.get("input").is_some() {
        Route::Embeddings
    } else {
        Route::Chat
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Slot;
    use serde_json::json;

    #[test]
    fn a_misspelt_field_is_refused_by_name() {
        let err = parse_input(json!({"tennant": "acme"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `tennant`"), "{err}");
    }

    #[test]
    fn defaults_fill_what_is_not_given() {
        let input = parse_input(json!({"tier": "free"})).unwrap();
        let req = input.request().unwrap();
        assert_eq!(req.tenant, "anonymous");
        assert_eq!(req.tier, "free");
        assert_eq!(req.model, "gpt-4o-mini");
        let a = input.attempt(&req).unwrap();
        assert_eq!(
            a.outcome,
            AttemptOutcome::Status {
                code: 503,
                retry_after_ms: None
            }
        );
    }

    #[test]
    fn variants_take_either_case() {
        for spelling in ["connect-error", "connect_error"] {
            let input = parse_input(json!({"attempt": {"outcome": spelling}})).unwrap();
            let req = input.request().unwrap();
            assert!(matches!(
                input.attempt(&req).unwrap().outcome,
                AttemptOutcome::ConnectError { .. }
            ));
        }
        for spelling in ["anthropic-messages", "anthropic_messages"] {
            let input = parse_input(json!({"route": spelling})).unwrap();
            assert_eq!(input.request().unwrap().route, Route::AnthropicMessages);
        }
    }

    #[test]
    fn a_chat_body_reads_as_is_or_under_body() {
        let plain =
            parse_input(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
                .unwrap()
                .request()
                .unwrap();
        assert_eq!(plain.messages[0].text, "hi");
        let body = parse_input(
            json!({"tenant": "acme", "body": {"model": "m", "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}}),
        )
        .unwrap()
        .request()
        .unwrap();
        assert_eq!((body.tenant.as_str(), body.streaming), ("acme", true));
        let err = parse_input(json!({"model": "m", "stream": true, "messages": []}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"body\""), "{err}");
    }

    #[test]
    fn every_sample_parses() {
        for kind in Slot::ALL {
            let v: Value = serde_json::from_str(&crate::authoring::sample_request(kind)).unwrap();
            parse_input(v).unwrap().request().unwrap();
        }
    }
}
