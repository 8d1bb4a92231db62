//! Upstream phase: call the provider; after every failed attempt the retry
//! plugin decides (retry, fall back, stop), within the host's retry budget,
//! attempt cap and the request's overall deadline.
//!
//! When the policy stops, the model's `[fallbacks]` chain from the config
//! is tried next, in order; a plugin's fallback and the chain may each go
//! to a provider of another kind (the request is translated, see
//! [`crate::translate`]). A stream counts as answered only at its first
//! content event ([`super::stream::first_content`]).
//!
//! Among several providers serving the model, [`pick`] chooses by
//! `[routing] balance` (first, weighted, least latency), ejecting those
//! whose circuit is open.
//!
//! With a route plugin (`[plugins.route]`, [`super::route`]) its order
//! replaces both: the first choice is tried first, and each refusal or
//! stop moves to the next choice not yet refused.
//!
//! A retry the retry plugin asks for goes to another deployment of the
//! same model when one has not failed this request yet (by the balance,
//! or the route plugin's order), else to the same one.
//!
//! A provider whose circuit breaker is open refuses without sending. That
//! is not an attempt: it is not counted, spends no retry and is not shown
//! to the retry plugin. The request moves on to the next provider (in
//! config order) that serves its model and has not refused it, or, when
//! none is left, fails at once with a 503 carrying `retry-after`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::RequestCtx;
use crate::config::{Balance, ProviderConfig, ProviderKind};
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::plugin::Plugin;
use crate::policy::{Attempt, AttemptOutcome, PolicyRequest, RetryVerdict, Route, Slot};
use crate::telemetry::{UpstreamOutcome, log_safe};
use crate::translate::{self, Plan};
use crate::upstream::{AttemptFailure, UpstreamBody, UpstreamRequest, UpstreamResponse, balance};

/// Longest pause between attempts a plugin may ask for.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The path (and query) under the provider's base URL for a request of
/// `route` to `model` (see [`crate::upstream`] for the base URLs).
fn upstream_path(
    provider: &ProviderConfig,
    route: Route,
    model: &str,
    stream: bool,
) -> std::borrow::Cow<'static, str> {
    let openai = if route == Route::Embeddings {
        "/embeddings"
    } else {
        "/chat/completions"
    };
    match provider.kind {
        ProviderKind::Openai => openai.into(),
        ProviderKind::Anthropic => "/messages".into(),
        ProviderKind::Azure => format!(
            "/openai/deployments/{}{openai}?api-version={}",
            path_segment(provider.deployment(model)),
            path_segment(&provider.api_version)
        )
        .into(),
        ProviderKind::Gemini if stream => format!(
            "/v1beta/models/{}:streamGenerateContent?alt=sse",
            path_segment(model)
        )
        .into(),
        ProviderKind::Gemini => {
            format!("/v1beta/models/{}:generateContent", path_segment(model)).into()
        }
    }
}

/// `s` percent-encoded for one URL path segment or query value.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether a provider of `kind` can serve `route`: natively or through
/// [`translate`] (OpenAI chat <-> Anthropic messages).
pub fn provider_speaks(kind: ProviderKind, route: Route) -> bool {
    translate::plan(route, kind).possible()
}

/// Calls upstream until an attempt succeeds or the policy stops.
pub async fn call_upstream(
    gw: &Gateway,
    ctx: &mut RequestCtx,
) -> Result<UpstreamResponse, GatewayError> {
    let deadline = ctx.started + gw.request_timeout();
    let retry = ctx.plugins[Slot::Retry].clone();
    let cap = gw.config.retry.max_attempts_cap.max(1);
    // The route plugin's order, when one is configured: every later
    // choice (after a refusal, a stop or a retry) comes from it.
    let mut routed = super::route::order(gw, ctx).await?;
    let (mut provider, mut model) = match routed.as_mut().and_then(VecDeque::pop_front) {
        Some(first) => first,
        None => (
            pick(gw, ctx.route, &ctx.model, &[]).unwrap_or_else(|| ctx.provider.clone()),
            ctx.model.clone(),
        ),
    };
    gw.retry_budget.record_request(&provider);
    // Providers whose open circuit refused this request, and the soonest
    // any of them lets a probe through.
    let mut refused: Vec<String> = Vec::new();
    // Providers an attempt of this request failed at.
    let mut failed: Vec<String> = Vec::new();
    let mut soonest = Duration::MAX;
    let mut number = 1;
    // The configured fallback chain of the requested model.
    let mut chain = FallbackChain::new(gw, ctx.route, &ctx.model);
    loop {
        let Some(provider_cfg) = gw.config.provider(&provider) else {
            return Err(GatewayError::upstream_failed(format!(
                "provider {provider} is not configured"
            )));
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(GatewayError::upstream_timeout(
                "the request deadline passed before the provider answered",
            ));
        }
        let plan = translate::plan(ctx.route, provider_cfg.kind);
        let mut body = ctx.parsed().upstream_body(&model);
        if plan.translates() {
            body = translate::request_body(plan, &body)?;
        }
        let request = UpstreamRequest {
            path: upstream_path(provider_cfg, ctx.route, &model, ctx.parsed().stream),
            body,
            stream: ctx.parsed().stream,
            timeout: provider_cfg.timeout().min(remaining),
            request_id: ctx.id.clone(),
            tokens: u64::from(ctx.policy.estimated_prompt_tokens)
                + u64::from(
                    ctx.policy
                        .max_tokens
                        .unwrap_or(crate::keys::limits::COMPLETION_ESTIMATE),
                ),
        };
        ctx.attempts = number;
        let started = Instant::now();
        let result = gw.upstreams.send(&provider, request).await;
        if let Err(AttemptFailure {
            circuit_open: Some(probe_in),
            ..
        }) = &result
        {
            ctx.attempts = number - 1;
            gw.metrics.circuit_refusal(&provider);
            soonest = soonest.min(*probe_in);
            if !refused.contains(&provider) {
                refused.push(provider);
            }
            let next = match routed.as_mut() {
                Some(queue) => next_routed(queue, &refused, None),
                None => pick(gw, ctx.route, &model, &refused)
                    .map(|p| (p, model.clone()))
                    .or_else(|| chain.next(&refused)),
            };
            match next {
                Some((next_provider, next_model)) => {
                    gw.retry_budget.record_request(&next_provider);
                    provider = next_provider;
                    model = next_model;
                    continue;
                }
                None => return Err(circuit_open_error(&refused, &model, soonest)),
            }
        }
        let result = match result {
            Ok(response) => {
                let within = provider_cfg
                    .first_token_timeout()
                    .min(deadline.saturating_duration_since(Instant::now()));
                held_until_content(ctx.route, plan, response, within).await
            }
            Err(f) => Err(translated_failure(plan, ctx.route, f)),
        };
        gw.metrics.upstream_attempt(
            &provider,
            match &result {
                Ok(_) => UpstreamOutcome::Ok,
                Err(f) => outcome_label(&f.outcome),
            },
            started.elapsed(),
        );
        let failure = match result {
            Ok(response) => {
                ctx.provider = provider;
                ctx.model = model;
                return Ok(response);
            }
            Err(f) => f,
        };
        ctx.last_failure = Some(failure.outcome.clone());
        if caller_fault(&failure.outcome) || number >= cap {
            return Err(final_error(failure, number));
        }
        let attempt = Attempt {
            number,
            elapsed_ms: ctx.started.elapsed().as_millis() as u64,
            provider: provider.clone(),
            model: model.clone(),
            outcome: failure.outcome.clone(),
        };
        let verdict = decide(gw, &retry, &ctx.policy, &attempt).await?;
        if !failed.contains(&provider) {
            failed.push(provider.clone());
        }
        let (next_provider, next_model, wait_ms) = match verdict {
            RetryVerdict::Stop => {
                let next = match routed.as_mut() {
                    Some(queue) => next_routed(queue, &refused, None),
                    None => chain.next(&refused),
                };
                match next {
                    Some((p, m)) => (p, m, 0),
                    None => return Err(final_error(failure, number)),
                }
            }
            // Another deployment of the model, when one has not failed
            // this request yet; else the same one again.
            RetryVerdict::Retry { after_ms } => {
                let avoid: Vec<String> = refused.iter().chain(&failed).cloned().collect();
                let other = match routed.as_mut() {
                    Some(queue) => next_routed(queue, &avoid, Some(&model)).map(|(p, _)| p),
                    None => pick(gw, ctx.route, &model, &avoid),
                };
                (
                    other.unwrap_or_else(|| provider.clone()),
                    model.clone(),
                    after_ms,
                )
            }
            RetryVerdict::Fallback {
                model: fallback,
                provider: named,
                after_ms,
            } => {
                let target = match named {
                    Some(name) => gw.config.provider(&name),
                    None => gw.config.route(&fallback),
                };
                match target.filter(|p| provider_speaks(p.kind, ctx.route)) {
                    Some(p) => (p.name.clone(), fallback, after_ms),
                    None => {
                        tracing::warn!(model = %fallback, "retry policy fell back to a model no compatible provider serves");
                        return Err(final_error(failure, number));
                    }
                }
            }
        };
        if !gw.retry_budget.try_spend_retry(&next_provider) {
            gw.metrics.retry_budget_exhausted(&next_provider);
            return Err(final_error(failure, number));
        }
        let wait = Duration::from_millis(wait_ms).min(MAX_BACKOFF);
        if Instant::now() + wait >= deadline {
            return Err(final_error(failure, number));
        }
        gw.metrics.retry(&next_provider);
        tokio::time::sleep(wait).await;
        provider = next_provider;
        model = next_model;
        number += 1;
    }
}

/// The retry plugin's verdict on a failed `attempt` of `req`. A failing
/// plugin counts as `Stop` when its slot is fail-open, and is an error
/// (503) when fail-closed.
async fn decide(
    gw: &Gateway,
    plugin: &Plugin,
    req: &PolicyRequest,
    attempt: &Attempt,
) -> Result<RetryVerdict, GatewayError> {
    match plugin.retry_decide(req, attempt).await {
        Ok(v) => Ok(v),
        Err(e) => {
            super::plugin_failed(gw, Slot::Retry, &e)?;
            Ok(RetryVerdict::Stop)
        }
    }
}

/// [`decide`] with the retry slot's current plugin: for a job worker
/// deciding whether a whole run is repeated, the same way a request's
/// upstream attempts are.
pub async fn retry_verdict(
    gw: &Gateway,
    req: &PolicyRequest,
    attempt: &Attempt,
) -> Result<RetryVerdict, GatewayError> {
    let plugin = gw.plugins.slot(Slot::Retry).current();
    decide(gw, &plugin, req, attempt).await
}

/// Takes the first (provider, model) of the route plugin's `queue` whose
/// provider is not in `avoid` (and whose model is `model`, when given);
/// passed-over entries of another model stay queued.
fn next_routed(
    queue: &mut VecDeque<(String, String)>,
    avoid: &[String],
    model: Option<&str>,
) -> Option<(String, String)> {
    let at = queue
        .iter()
        .position(|(p, m)| !avoid.contains(p) && model.is_none_or(|want| want == m))?;
    queue.remove(at)
}

/// A provider's answer in the client's format; a stream is held until
/// its first content event ([`super::stream::first_content`]), and failing
/// before it is a failed attempt, for the circuit breaker too.
async fn held_until_content(
    route: Route,
    plan: Plan,
    response: UpstreamResponse,
    within: Duration,
) -> Result<UpstreamResponse, AttemptFailure> {
    let mut response = translated_response(plan, response);
    let breaker = response.first_content.take();
    if let UpstreamBody::Stream(events) = response.body {
        let events = super::stream::first_content(route, events, within).await;
        // The breaker counts a stream failing before its first content
        // event as a failure, not as the answer its headers looked like.
        if let Some(breaker) = breaker {
            breaker.settle(events.is_err());
        }
        response.body = UpstreamBody::Stream(events.map_err(AttemptFailure::from_outcome)?);
    }
    Ok(response)
}

/// A provider's answer in the client's format.
fn translated_response(plan: Plan, mut response: UpstreamResponse) -> UpstreamResponse {
    if !plan.translates() {
        return response;
    }
    response.body = match response.body {
        UpstreamBody::Full(body) if response.status.is_success() => {
            UpstreamBody::Full(translate::response_body(plan, &body))
        }
        UpstreamBody::Full(body) => UpstreamBody::Full(body),
        UpstreamBody::Stream(events) => {
            UpstreamBody::Stream(translate::translate_stream(plan, events))
        }
    };
    response
}

/// A failed attempt whose error body is in the client's format, so a
/// passed-through 4xx reads as the client's SDK expects.
fn translated_failure(plan: Plan, route: Route, mut failure: AttemptFailure) -> AttemptFailure {
    if let (true, Some(code), Some(body)) = (plan.translates(), failure.status(), &failure.body) {
        failure.body = Some(translate::error_body(route, code, body));
    }
    failure
}

/// The `[fallbacks]` models of the requested model still to try, each
/// with the provider that serves it (of any kind the route can reach).
struct FallbackChain<'a> {
    gw: &'a Gateway,
    route: Route,
    models: &'a [String],
}

impl<'a> FallbackChain<'a> {
    fn new(gw: &'a Gateway, route: Route, model: &str) -> Self {
        Self {
            gw,
            route,
            models: gw.config.fallbacks(model),
        }
    }

    /// The next (provider, model) whose provider has not refused this
    /// request; consumes the entries it passes.
    fn next(&mut self, refused: &[String]) -> Option<(String, String)> {
        while let Some((model, rest)) = self.models.split_first() {
            self.models = rest;
            let target = self.gw.config.providers.iter().find(|p| {
                p.serves(model) && provider_speaks(p.kind, self.route) && !refused.contains(&p.name)
            });
            if let Some(p) = target {
                return Some((p.name.clone(), model.clone()));
            }
        }
        None
    }
}

/// The provider for an attempt at `model` on `route`, among those serving
/// it that have not refused this request, by `[routing] balance`: the
/// first in config order, weighted random, or least latency (two choices
/// over peak EWMA). Weighted and least-latency choices eject providers
/// whose circuit is open (until a probe may go); when every candidate is
/// ejected they choose among all, which then refuse, so the request fails
/// fast with the circuit's 503.
fn pick(gw: &Gateway, route: Route, model: &str, refused: &[String]) -> Option<String> {
    let candidates: Vec<&ProviderConfig> = gw
        .config
        .providers
        .iter()
        .filter(|p| p.serves(model) && provider_speaks(p.kind, route) && !refused.contains(&p.name))
        .collect();
    let balance = gw.config.routing.balance;
    if balance == Balance::First || candidates.len() <= 1 {
        return candidates.first().map(|p| p.name.clone());
    }
    let healthy: Vec<&ProviderConfig> = candidates
        .iter()
        .copied()
        .filter(|p| gw.upstreams.available(&p.name))
        .collect();
    let pool = if healthy.is_empty() {
        &candidates
    } else {
        &healthy
    };
    let random = rand::random::<u64>();
    let index = match balance {
        Balance::Weighted => {
            let weights: Vec<u32> = pool.iter().map(|p| p.weight).collect();
            balance::weighted(&weights, random)
        }
        Balance::LeastLatency => {
            let costs: Vec<f64> = pool.iter().map(|p| gw.upstreams.load(&p.name)).collect();
            balance::two_choices(&costs, random)
        }
        Balance::First => Some(0),
    };
    index.map(|i| pool[i].name.clone())
}

/// Every provider the request could use refused it: 503, come back when
/// the first of them probes again (at least a second from now: a half-open
/// circuit's probes are already out).
fn circuit_open_error(refused: &[String], model: &str, soonest: Duration) -> GatewayError {
    let which = match refused {
        [one] => format!("provider `{one}` is"),
        many => format!(
            "providers {} are",
            many.iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let retry_after = soonest.max(Duration::from_secs(1));
    GatewayError::upstream_unavailable(
        format!(
            "circuit breaker open: {which} failing, so the request for model `{model}` was not sent; retry in {} s",
            retry_after.as_millis().div_ceil(1000)
        ),
        retry_after,
    )
}

fn outcome_label(outcome: &AttemptOutcome) -> UpstreamOutcome {
    match outcome {
        AttemptOutcome::Status { code, .. } => UpstreamOutcome::from_status(*code),
        AttemptOutcome::Timeout => UpstreamOutcome::Timeout,
        AttemptOutcome::ConnectError { .. } => UpstreamOutcome::ConnectError,
    }
}

/// A 4xx that retrying cannot fix. 408 and 429 are transient; 401 and 403
/// are about the gateway's upstream key, not the client, and another key of
/// the pool may work.
fn caller_fault(outcome: &AttemptOutcome) -> bool {
    matches!(outcome, AttemptOutcome::Status { code, .. }
        if (400..500).contains(code) && !matches!(code, 401 | 403 | 408 | 429))
}

/// What the client sees once the policy gave up.
fn final_error(failure: AttemptFailure, attempts: u32) -> GatewayError {
    let tries = if attempts == 1 {
        "1 attempt".to_string()
    } else {
        format!("{attempts} attempts")
    };
    match failure.outcome {
        // The provider refused the gateway's own credentials: the operator's
        // problem, and its body may quote the upstream key. The client gets
        // the gateway's message; the log gets the provider's.
        AttemptOutcome::Status {
            code: code @ (401 | 403),
            ..
        } => {
            let body = failure.body.unwrap_or_default();
            tracing::warn!(
                status = code,
                body = %log_safe(&String::from_utf8_lossy(&body)),
                "the provider refused the gateway's credentials"
            );
            GatewayError::upstream_failed(format!(
                "the provider refused the gateway's credentials (status {code}); the gateway's operator must fix its provider key"
            ))
        }
        AttemptOutcome::Status {
            code,
            retry_after_ms,
        } if (400..500).contains(&code) && code != 408 => {
            // The caller's fault (or its provider quota): the provider's own
            // error, unchanged.
            let body = failure.body.unwrap_or_default();
            let mut e = GatewayError::upstream_passthrough(code, body);
            e.retry_after = retry_after_ms.map(Duration::from_millis);
            e
        }
        AttemptOutcome::Status { code, .. } => GatewayError::upstream_failed(format!(
            "the provider failed with status {code} after {tries}"
        )),
        AttemptOutcome::Timeout => {
            GatewayError::upstream_timeout(format!("the provider did not answer in time ({tries})"))
        }
        AttemptOutcome::ConnectError { message } => GatewayError::upstream_failed(format!(
            "could not reach the provider after {tries}: {message}"
        )),
    }
}
