//! Conversions between the WIT-generated types and [`crate::policy`].

use super::bindings::exports::sluice::policy as ex;
use super::bindings::sluice::policy::types as wit;
use crate::policy::{
    Admission, Attempt, AttemptOutcome, Bucket, BucketState, CacheDecision, CacheScope,
    ChargeResult, Circuit, PolicyRequest, RetryVerdict, Route, RouteCandidate, RouteChoice,
    SemanticCandidate, SemanticProbe, Shape, Unit, Usage,
};

pub(crate) fn request(r: &PolicyRequest) -> wit::Request {
    wit::Request {
        id: r.id.clone(),
        route: match r.route {
            Route::Chat => wit::Route::Chat,
            Route::Embeddings => wit::Route::Embeddings,
            Route::AnthropicMessages => wit::Route::AnthropicMessages,
        },
        provider: r.provider.clone(),
        model: r.model.clone(),
        streaming: r.streaming,
        max_tokens: r.max_tokens,
        estimated_prompt_tokens: r.estimated_prompt_tokens,
        temperature: r.temperature,
        messages: r
            .messages
            .iter()
            .map(|m| wit::Message {
                role: m.role.clone(),
                text: m.text.clone(),
                has_tool_calls: m.has_tool_calls,
                extra_json: m.extra_json.clone(),
            })
            .collect(),
        params: r
            .params
            .iter()
            .map(|p| wit::Param {
                name: p.name.clone(),
                json: p.json.clone(),
            })
            .collect(),
        tenant: r.tenant.clone(),
        tier: r.tier.clone(),
        key_id: r.key_id.clone(),
        client_ip: r.client_ip.clone(),
        headers: r
            .headers
            .iter()
            .map(|(name, value)| wit::Header {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
    }
}

fn unit_from_wit(u: wit::Unit) -> Unit {
    match u {
        wit::Unit::Requests => Unit::Requests,
        wit::Unit::Tokens => Unit::Tokens,
    }
}

fn unit_to_wit(u: Unit) -> wit::Unit {
    match u {
        Unit::Requests => wit::Unit::Requests,
        Unit::Tokens => wit::Unit::Tokens,
    }
}

/// Validates and converts plugin-named buckets; an invalid shape is the
/// plugin's mistake, reported as an error message.
pub(crate) fn buckets_from_wit(buckets: Vec<wit::Bucket>) -> Result<Vec<Bucket>, String> {
    buckets
        .into_iter()
        .map(|b| {
            let shape = match b.shape {
                wit::Shape::Window(w) => {
                    if w.limit == 0 || w.window_ms == 0 {
                        return Err(format!(
                            "bucket {:?}: limit and window-ms must be > 0",
                            b.key
                        ));
                    }
                    Shape::Window {
                        limit: w.limit,
                        window_ms: w.window_ms,
                    }
                }
                wit::Shape::Rate(r) => {
                    if !(r.per_second.is_finite() && r.per_second > 0.0) || r.burst == 0 {
                        return Err(format!(
                            "bucket {:?}: per-second and burst must be > 0",
                            b.key
                        ));
                    }
                    Shape::Rate {
                        per_second: r.per_second,
                        burst: r.burst,
                    }
                }
            };
            Ok(Bucket {
                key: b.key,
                shape,
                cost: b.cost,
                unit: unit_from_wit(b.unit),
            })
        })
        .collect()
}

pub(crate) fn charge_result_to_wit(r: ChargeResult) -> wit::ChargeResult {
    wit::ChargeResult {
        admitted: r.admitted,
        retry_after_ms: r.retry_after_ms,
        buckets: r
            .buckets
            .into_iter()
            .map(|b: BucketState| wit::BucketState {
                key: b.key,
                unit: unit_to_wit(b.unit),
                limit: b.limit,
                remaining: b.remaining,
                reset_ms: b.reset_ms,
            })
            .collect(),
    }
}

pub(crate) fn cache_decision(d: ex::cache_key::Decision) -> CacheDecision {
    match d {
        ex::cache_key::Decision::Bypass(reason) => CacheDecision::Bypass { reason },
        ex::cache_key::Decision::Cache(e) => CacheDecision::Cache {
            key: e.key,
            ttl_seconds: e.ttl_seconds,
            scope: match e.scope {
                ex::cache_key::Scope::Tenant => CacheScope::Tenant,
                ex::cache_key::Scope::Shared => CacheScope::Shared,
            },
        },
    }
}

pub(crate) fn probe(p: ex::semantic::Probe) -> SemanticProbe {
    SemanticProbe {
        text: p.text,
        namespace: p.namespace,
        threshold: p.threshold,
    }
}

pub(crate) fn candidate(c: &SemanticCandidate) -> ex::semantic::Candidate {
    ex::semantic::Candidate {
        score: c.score,
        prompt: c.prompt.clone(),
        age_seconds: c.age_seconds,
    }
}

pub(crate) fn admission(a: ex::throttle::Admission) -> Result<Admission, String> {
    Ok(match a {
        ex::throttle::Admission::Charge(buckets) => Admission::Charge {
            buckets: buckets_from_wit(buckets)?,
        },
        ex::throttle::Admission::Reject(r) => Admission::Reject {
            status: r.status,
            message: r.message,
            retry_after_ms: r.retry_after_ms,
        },
    })
}

pub(crate) fn usage(u: &Usage) -> ex::throttle::Usage {
    ex::throttle::Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        estimated_prompt_tokens: u.estimated_prompt_tokens,
        cached: u.cached,
    }
}

pub(crate) fn attempt(a: &Attempt) -> ex::retry::Attempt {
    ex::retry::Attempt {
        number: a.number,
        elapsed_ms: a.elapsed_ms,
        provider: a.provider.clone(),
        model: a.model.clone(),
        outcome: match &a.outcome {
            AttemptOutcome::Status {
                code,
                retry_after_ms,
            } => ex::retry::Outcome::Status(ex::retry::StatusOutcome {
                code: *code,
                retry_after_ms: *retry_after_ms,
            }),
            AttemptOutcome::Timeout => ex::retry::Outcome::Timeout,
            AttemptOutcome::ConnectError { message } => {
                ex::retry::Outcome::ConnectError(message.clone())
            }
        },
    }
}

pub(crate) fn verdict(v: ex::retry::Verdict) -> RetryVerdict {
    match v {
        ex::retry::Verdict::Stop => RetryVerdict::Stop,
        ex::retry::Verdict::Retry(after_ms) => RetryVerdict::Retry { after_ms },
        ex::retry::Verdict::Fallback(f) => RetryVerdict::Fallback {
            model: f.model,
            provider: f.provider,
            after_ms: f.after_ms,
        },
    }
}

pub(crate) fn route_candidate(c: &RouteCandidate) -> ex::route::Candidate {
    ex::route::Candidate {
        provider: c.provider.clone(),
        model: c.model.clone(),
        kind: c.kind.clone(),
        health: ex::route::Health {
            latency_ms: c.health.latency_ms,
            error_rate: c.health.error_rate,
            circuit: match c.health.circuit {
                Circuit::Closed => ex::route::Circuit::Closed,
                Circuit::Open => ex::route::Circuit::Open,
                Circuit::HalfOpen => ex::route::Circuit::HalfOpen,
            },
            key_headroom: c.health.key_headroom,
        },
        price: c.price.map(|p| ex::route::Price {
            input_per_mtok: p.input_per_mtok,
            output_per_mtok: p.output_per_mtok,
        }),
    }
}

pub(crate) fn route_choice(c: ex::route::Choice) -> RouteChoice {
    RouteChoice {
        provider: c.provider,
        model: c.model,
    }
}
