//! Response phase: shape upstream answers and cache hits for the client;
//! hand fresh answers to [`StorePlan`] and settle usage after the fact.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};

use super::store::StorePlan;
use super::stream::{Finished, Tee, replay_bytes};
use super::{RequestCtx, throttle};
use crate::api::{self, SseParser};
use crate::cache::{Answer, AnswerBody};
use crate::gateway::Gateway;
use crate::policy::{Route, Slot, TokenCount, Unit, Usage};
use crate::spend::Settlement;
use crate::telemetry::CacheOutcome;
use crate::upstream::{UpstreamBody, UpstreamResponse};

fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn stream_response(body: Body) -> Response {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// Splits recorded events so a replay arrives event by event, like the
/// original did.
fn event_chunks(bytes: Bytes) -> Body {
    let mut chunks = Vec::new();
    let mut rest = bytes;
    while let Some(end) = rest.windows(2).position(|w| w == b"\n\n") {
        chunks.push(Ok::<_, std::io::Error>(rest.split_to(end + 2)));
    }
    if !rest.is_empty() {
        chunks.push(Ok(rest));
    }
    Body::from_stream(futures::stream::iter(chunks))
}

/// Answers from a cached (or coalesced) answer, converting between JSON and
/// stream when the new request wants the other form.
pub fn replay(
    gw: &Arc<Gateway>,
    ctx: &mut RequestCtx,
    answer: Arc<Answer>,
    outcome: CacheOutcome,
) -> Response {
    ctx.cache = outcome;
    gw.metrics.cache_outcome(outcome);
    let parsed = ctx.parsed();
    let route = ctx.route;
    let keep_usage = route != Route::Chat || parsed.client_wants_usage();
    let response = match (&answer.body, parsed.stream) {
        (AnswerBody::Json(body), false) => json_response(StatusCode::OK, body.clone()),
        (AnswerBody::Stream(events), true) => {
            stream_response(event_chunks(replay_bytes(events.clone(), keep_usage)))
        }
        (AnswerBody::Stream(events), false) => {
            let events = SseParser::new().feed(events);
            match api::stream_to_json(route, &events) {
                Ok(body) => json_response(StatusCode::OK, Bytes::from(body)),
                Err(e) => return conversion_failed(route, e),
            }
        }
        (AnswerBody::Json(body), true) => match api::json_to_stream(route, body) {
            Ok(events) => {
                let events = events
                    .into_iter()
                    .filter(|e| keep_usage || !api::is_usage_only_chunk(e))
                    .collect::<Vec<_>>();
                stream_response(event_chunks(Bytes::from(api::sse::encode(&events))))
            }
            Err(e) => return conversion_failed(route, e),
        },
    };
    let estimated = ctx.policy.estimated_prompt_tokens;
    let usage = Usage::of(answer.usage, estimated, true);
    spawn_settle(gw, ctx, usage, answer.usage.cached_prompt);
    response
}

fn conversion_failed(route: Route, e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "cached answer could not be converted");
    crate::error::GatewayError::upstream_failed("a cached answer could not be converted")
        .into_response(route)
}

/// Answers from a fresh upstream response: relays it, stores it when it may
/// be cached ([`StorePlan`], which also completes or releases coalesced
/// requests) and settles usage.
pub fn answer(gw: &Arc<Gateway>, ctx: &mut RequestCtx, mut upstream: UpstreamResponse) -> Response {
    gw.metrics.cache_outcome(ctx.cache);
    ctx.quota = upstream.quota.take();
    let route = ctx.route;
    let plan = StorePlan::take(ctx);
    let estimated = ctx.policy.estimated_prompt_tokens;
    let status = upstream.status;
    match upstream.body {
        UpstreamBody::Full(body) => {
            let tokens =
                api::usage_from_json(route, &body).unwrap_or(TokenCount::new(estimated, 0));
            let answer = (status.is_success() && plan.wants_answer())
                .then(|| Arc::new(Answer::json(route, body.clone(), tokens)));
            plan.finish(gw, answer);
            ctx.spend.failed = !status.is_success();
            let usage = Usage::of(tokens, estimated, false);
            spawn_settle(gw, ctx, usage, tokens.cached_prompt);
            let mut resp = json_response(status, body);
            copy_upstream_headers(&upstream.headers, &mut resp);
            resp
        }
        UpstreamBody::Stream(events) => {
            let keep_usage = route != Route::Chat || ctx.parsed().client_wants_usage();
            let record_limit = if plan.wants_answer() {
                gw.config.cache.max_entry_bytes as usize
            } else {
                0
            };
            let provider = ctx.provider.clone();
            let metrics = gw.metrics.clone();
            let on_failure = move || metrics.stream_failure(&provider);
            let settle = settle_later(gw, ctx);
            let gw = gw.clone();
            let on_finish = move |done: Finished| {
                let answer = done
                    .recorded
                    .map(|recorded| Arc::new(Answer::stream(route, recorded, done.usage)));
                plan.finish(&gw, answer);
                settle(
                    Usage::of(done.usage, estimated, false),
                    done.usage.cached_prompt,
                );
            };
            let tee = Tee::new(
                route,
                events,
                keep_usage,
                estimated,
                record_limit,
                on_finish,
                on_failure,
            );
            let mut resp = stream_response(Body::from_stream(tee));
            copy_upstream_headers(&upstream.headers, &mut resp);
            resp
        }
    }
}

fn copy_upstream_headers(from: &http::HeaderMap, resp: &mut Response) {
    for (name, value) in from {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            resp.headers_mut().insert(name.clone(), value.clone());
        }
    }
}

/// A settle call to run once usage (and how much of the prompt the
/// provider read from its prompt cache) is known (a stream settles at its
/// end). Takes the policy view out of `ctx`: settling is the last use of it.
fn settle_later(
    gw: &Arc<Gateway>,
    ctx: &mut RequestCtx,
) -> impl FnOnce(Usage, u32) + Send + 'static {
    let gw = gw.clone();
    let plugin = ctx.plugins[Slot::Throttle].clone();
    let charged = ctx.charged;
    let tenant = ctx.caller.tenant.clone();
    let policy = std::mem::take(&mut ctx.policy);
    let settlement = Settlement {
        reservation: ctx.spend.reservation.take(),
        tenant: tenant.clone(),
        key: ctx.caller.key_id.clone(),
        provider: ctx.provider.clone(),
        model: ctx.model.clone(),
        failed: ctx.spend.failed,
    };
    let quota = ctx.quota.take();
    move |usage: Usage, cached_prompt: u32| {
        tokio::spawn(async move {
            if let Some(quota) = quota {
                let used = if usage.cached {
                    0
                } else {
                    u64::from(usage.prompt_tokens) + u64::from(usage.completion_tokens)
                };
                quota.settle(used).await;
            }
            gw.spend.settle(settlement, usage, cached_prompt).await;
            if charged {
                throttle::settle(&gw, &plugin, &policy, usage, &tenant).await;
            } else if !usage.cached {
                gw.metrics.tokens(
                    &tenant,
                    u64::from(usage.prompt_tokens),
                    u64::from(usage.completion_tokens),
                );
            }
        });
    }
}

fn spawn_settle(gw: &Arc<Gateway>, ctx: &mut RequestCtx, usage: Usage, cached_prompt: u32) {
    let (cost, _) = gw.spend.cost(
        &ctx.provider,
        &ctx.model,
        &usage,
        cached_prompt,
        ctx.spend.failed,
    );
    ctx.spend.cost = Some(cost);
    settle_later(gw, ctx)(usage, cached_prompt);
}

/// Adds `x-request-id`, `x-sluice-cache`, `x-sluice-attempts`,
/// `x-sluice-cost-usd` (when the cost is known as the headers leave: not on
/// streams) and the `x-ratelimit-*` headers to every response.
pub fn decorate(ctx: &RequestCtx, resp: &mut Response) {
    let h = resp.headers_mut();
    if let Some(cost) = ctx.spend.cost
        && let Ok(v) = HeaderValue::from_str(&usd_text(cost))
    {
        h.insert(COST_USD, v);
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.id) {
        h.insert(REQUEST_ID, v);
    }
    h.insert(CACHE, HeaderValue::from_static(ctx.cache.as_str()));
    if ctx.attempts > 0 {
        h.insert(ATTEMPTS, HeaderValue::from(ctx.attempts));
    }
    let Some(limits) = &ctx.limits else {
        return;
    };
    for (unit, [limit, remaining, reset]) in RATELIMIT_HEADERS {
        // The most constraining bucket of the unit speaks for it.
        let Some(b) = limits
            .buckets
            .iter()
            .filter(|b| b.unit == unit)
            .min_by_key(|b| (b.remaining, std::cmp::Reverse(b.reset_ms)))
        else {
            continue;
        };
        h.insert(limit, HeaderValue::from(b.limit));
        h.insert(remaining, HeaderValue::from(b.remaining));
        if let Ok(v) = HeaderValue::from_str(&openai_duration(b.reset_ms)) {
            h.insert(reset, v);
        }
    }
}

// The headers every response carries, parsed at compile time (as
// `upstream::client` keeps its own): a name given as a string is parsed
// again on every insert.
const COST_USD: HeaderName = HeaderName::from_static("x-sluice-cost-usd");
pub(super) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const CACHE: HeaderName = HeaderName::from_static("x-sluice-cache");
const ATTEMPTS: HeaderName = HeaderName::from_static("x-sluice-attempts");
/// OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, per
/// unit.
const RATELIMIT_HEADERS: [(Unit, [HeaderName; 3]); 2] = [
    (
        Unit::Requests,
        [
            HeaderName::from_static("x-ratelimit-limit-requests"),
            HeaderName::from_static("x-ratelimit-remaining-requests"),
            HeaderName::from_static("x-ratelimit-reset-requests"),
        ],
    ),
    (
        Unit::Tokens,
        [
            HeaderName::from_static("x-ratelimit-limit-tokens"),
            HeaderName::from_static("x-ratelimit-remaining-tokens"),
            HeaderName::from_static("x-ratelimit-reset-tokens"),
        ],
    ),
];

/// Nano-USD as decimal USD without trailing zeros: `0.00045`, `0`.
fn usd_text(nano: crate::spend::Nano) -> String {
    let text = format!("{}.{:09}", nano / 1_000_000_000, nano % 1_000_000_000);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// OpenAI's reset format: "120ms", "1.5s", "6m0s", "1h2m3s".
pub fn openai_duration(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let total_s = ms / 1000;
    let (h, m, s) = (total_s / 3600, (total_s % 3600) / 60, total_s % 60);
    let frac = ms % 1000;
    let secs = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{:.3}", frac as f64 / 1000.0);
        format!("{s}{}s", f.trim_start_matches('0').trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{openai_duration, usd_text};

    #[test]
    fn costs_print_as_plain_decimals() {
        assert_eq!(usd_text(450_000), "0.00045");
        assert_eq!(usd_text(0), "0");
        assert_eq!(usd_text(1_500_000_000), "1.5");
        assert_eq!(usd_text(1), "0.000000001");
    }

    #[test]
    fn durations_read_like_openais() {
        assert_eq!(openai_duration(120), "120ms");
        assert_eq!(openai_duration(1500), "1.5s");
        assert_eq!(openai_duration(60_000), "1m0s");
        assert_eq!(openai_duration(3_723_000), "1h2m3s");
    }
}
