//! Verification before serving: a candidate version answers a set of
//! sample requests (built-in ones per kind, plus the slot's recent real
//! requests, credentials stripped) and is refused if it traps, exceeds its
//! limits or returns an invalid answer on a sample the serving version
//! answers. The refusal names the sample and carries the guest's error
//! (for Python and JavaScript, the exception text).

use crate::plugin::{CallError, Plugin, SAMPLE_ID_PREFIX};
use crate::policy::{
    Attempt, AttemptOutcome, Message, Param, PolicyRequest, Route, RouteCandidate,
    SemanticCandidate, Slot, Usage,
};

/// One sample: its name (in refusals) and request.
pub(super) struct Sample {
    pub name: String,
    pub request: PolicyRequest,
}

/// The built-in samples: a minimal anonymous chat, a tenant's chat with
/// parameters, a streaming Anthropic message and an embedding.
pub(super) fn builtin() -> Vec<Sample> {
    let id = |n: &str| format!("{SAMPLE_ID_PREFIX}{n}");
    let user = |text: &str| Message {
        role: "user".into(),
        text: text.into(),
        ..Message::default()
    };
    vec![
        Sample {
            name: "built-in 'anonymous chat'".into(),
            request: PolicyRequest {
                id: id("anonymous-chat"),
                provider: "openai".into(),
                model: "gpt-4o-mini".into(),
                estimated_prompt_tokens: 2,
                messages: vec![user("hello")],
                tenant: crate::policy::ANONYMOUS_TENANT.into(),
                tier: crate::policy::ANONYMOUS_TENANT.into(),
                client_ip: "192.0.2.1".into(),
                ..PolicyRequest::default()
            },
        },
        Sample {
            name: "built-in 'tenant chat'".into(),
            request: PolicyRequest {
                id: id("tenant-chat"),
                provider: "openai".into(),
                model: "gpt-4o".into(),
                max_tokens: Some(256),
                estimated_prompt_tokens: 24,
                temperature: Some(0.7),
                messages: vec![
                    Message {
                        role: "system".into(),
                        text: "You are terse.".into(),
                        ..Message::default()
                    },
                    user("Summarise the plot of Hamlet in one line."),
                ],
                params: vec![Param {
                    name: "top_p".into(),
                    json: "0.9".into(),
                }],
                tenant: "sample-tenant".into(),
                tier: "free".into(),
                key_id: Some("sample-key".into()),
                client_ip: "198.51.100.7".into(),
                headers: vec![("user-agent".into(), "sluice-verify".into())],
                ..PolicyRequest::default()
            },
        },
        Sample {
            name: "built-in 'streaming anthropic message'".into(),
            request: PolicyRequest {
                id: id("anthropic-stream"),
                route: Route::AnthropicMessages,
                provider: "anthropic".into(),
                model: "claude-3-5-haiku-latest".into(),
                streaming: true,
                max_tokens: Some(1024),
                estimated_prompt_tokens: 5,
                messages: vec![user("Write a haiku about rivers.")],
                tenant: "sample-tenant".into(),
                tier: "pro".into(),
                client_ip: "2001:db8::7".into(),
                ..PolicyRequest::default()
            },
        },
        Sample {
            name: "built-in 'embedding'".into(),
            request: PolicyRequest {
                id: id("embedding"),
                route: Route::Embeddings,
                provider: "openai".into(),
                model: "text-embedding-3-small".into(),
                estimated_prompt_tokens: 3,
                messages: vec![user("sluice gateway")],
                tenant: "sample-tenant".into(),
                tier: "free".into(),
                client_ip: "198.51.100.7".into(),
                ..PolicyRequest::default()
            },
        },
    ]
}

/// The slot's recent real requests as samples.
pub(super) fn recent(requests: Vec<PolicyRequest>) -> Vec<Sample> {
    requests
        .into_iter()
        .enumerate()
        .map(|(i, mut request)| {
            let name = format!(
                "recent request {} (tenant {:?}, model {:?})",
                i + 1,
                request.tenant,
                request.model
            );
            request.id = format!("{SAMPLE_ID_PREFIX}recent-{}", i + 1);
            Sample { name, request }
        })
        .collect()
}

/// Every call of `kind` for `req`, as the gateway would make them: admit
/// then settle, prepare then accept, derive, decide.
async fn exercise(plugin: &Plugin, kind: Slot, req: &PolicyRequest) -> Result<(), CallError> {
    match kind {
        Slot::CacheKey => plugin.derive_cache_key(req).await.map(drop),
        Slot::Throttle => {
            plugin.throttle_admit(req).await?;
            let usage = Usage {
                prompt_tokens: req.estimated_prompt_tokens,
                completion_tokens: req.max_tokens.unwrap_or(16).min(4096),
                estimated_prompt_tokens: req.estimated_prompt_tokens,
                cached: false,
            };
            plugin.throttle_settle(req, &usage).await.map(drop)
        }
        Slot::Semantic => {
            if plugin.semantic_prepare(req).await?.is_some() {
                let text = req.messages.last().map(|m| m.text.clone());
                let candidate = SemanticCandidate {
                    score: 0.97,
                    prompt: text.unwrap_or_default(),
                    age_seconds: 60,
                };
                plugin.semantic_accept(req, &candidate).await?;
            }
            Ok(())
        }
        Slot::Retry => {
            let attempt = Attempt {
                number: 1,
                elapsed_ms: 120,
                provider: req.provider.clone(),
                model: req.model.clone(),
                outcome: AttemptOutcome::Status {
                    code: 503,
                    retry_after_ms: None,
                },
            };
            plugin.retry_decide(req, &attempt).await.map(drop)
        }
        Slot::Route => plugin
            .route_order(req, &RouteCandidate::samples(&req.model))
            .await
            .map(drop),
    }
}

/// Whether a failure is the candidate's own doing (not a full instance
/// pool, which says nothing about the version).
fn counts(e: &CallError) -> bool {
    !matches!(e, CallError::Unavailable(_) | CallError::NotProvided(_))
}

/// Runs `samples` through `candidate`; the first sample it fails on while
/// `serving` does not is the refusal's reason. A deadline is given a
/// second try, so a busy moment does not refuse a sound version.
pub(super) async fn verify(
    candidate: &Plugin,
    serving: &Plugin,
    kind: Slot,
    samples: &[Sample],
) -> Result<(), String> {
    for sample in samples {
        let mut outcome = exercise(candidate, kind, &sample.request).await;
        if matches!(outcome, Err(CallError::Deadline(_))) {
            outcome = exercise(candidate, kind, &sample.request).await;
        }
        let Err(e) = outcome else { continue };
        if !counts(&e) {
            continue;
        }
        if exercise(serving, kind, &sample.request).await.is_err() {
            // The serving version fails this sample too: not a regression.
            continue;
        }
        return Err(format!(
            "verification failed on sample {}: {e} (the serving version answers it)",
            sample.name
        ));
    }
    Ok(())
}
