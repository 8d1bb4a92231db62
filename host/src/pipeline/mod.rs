//! The request pipeline: one function per phase over a typed [`RequestCtx`],
//! in the order of the request flow (docs/architecture.md). Each phase may
//! answer early by returning an error or a response.
//!
//! 1. `auth::authenticate` + `parse`: tenant/tier, body limit, then the
//!    body read in place with its message and part counts capped first.
//! 2. `throttle::admit`: the throttle plugin names buckets; one atomic charge.
//! 3. `caching::derive_key` and `caching::lookup`: exact cache;
//!    `semantic::lookup`: after an exact miss, a near-duplicate's answer.
//! 4. `coalesce::join`: identical cacheable requests in flight share one call.
//! 5. `budget::reserve`: the worst-case cost out of the budgets;
//!    `call::call_upstream`: provider call (in the route plugin's order,
//!    `route::order`, when one is configured), retry plugin decides after
//!    failures.
//! 6. `respond`: shape the response; `store` keeps a fresh answer and
//!    `throttle::settle` reconciles usage, both after the answer.

mod auth;
mod budget;
mod caching;
mod call;
mod coalesce;
mod respond;
mod route;
mod semantic;
mod store;
mod stream;
mod throttle;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::HeaderMap;

use crate::api::{self, ParsedRequest};
use crate::cache::CacheKey;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::plugin::{CallError, Plugin};
use crate::policy::{ChargeResult, FailurePolicy, PolicyRequest, Route, Slot, SlotMap};
use crate::telemetry::traces::{self, RequestTrace};
use crate::telemetry::{CacheOutcome, log_safe};
use coalesce::Coalescing;
use opentelemetry::KeyValue;
use opentelemetry::context::FutureExt as _;

pub use auth::{Caller, policy_headers};
pub use call::retry_verdict;

/// The plugin versions one request uses from start to end, so every decision
/// of a request comes from one version even across a hot swap.
pub type PinnedPlugins = SlotMap<Arc<Plugin>>;

/// What the phases of one request know and share.
pub struct RequestCtx {
    pub id: String,
    pub route: Route,
    pub started: Instant,
    pub client_ip: IpAddr,
    pub caller: Caller,
    pub plugins: PinnedPlugins,
    /// Set once the body parsed; its messages and params have moved into
    /// `policy` (one copy of the conversation, not two).
    pub parsed: Option<ParsedRequest>,
    /// The view plugins get; filled after parsing.
    pub policy: PolicyRequest,
    /// The outcome of the throttle charge, for the `x-ratelimit-*` headers.
    pub limits: Option<ChargeResult>,
    /// Whether the throttle charged buckets that settle must reconcile.
    pub charged: bool,
    pub cache: CacheOutcome,
    /// The scoped key and TTL when the answer may be cached.
    pub cache_key: Option<(CacheKey, std::time::Duration)>,
    /// The client sent `cache-control: no-cache` (skip lookup).
    pub no_cache: bool,
    /// The client sent `cache-control: no-store` (skip storing).
    pub no_store: bool,
    /// The client said the semantic answer it got for this request before
    /// was wrong (`x-sluice-semantic-feedback: wrong`).
    pub semantic_wrong: bool,
    /// What storing a semantic miss's answer needs (set by [`semantic::lookup`]).
    pub semantic: Option<store::SemanticPending>,
    /// This request's roles when it leads a coalesced call.
    pub coalescing: Coalescing,
    /// Upstream attempts made.
    pub attempts: u32,
    /// How the last failed upstream attempt failed (what the retry plugin
    /// was shown).
    pub last_failure: Option<crate::policy::AttemptOutcome>,
    /// The provider and model that produced the answer.
    pub provider: String,
    pub model: String,
    /// Budgets charged, the reservation, the cost once known.
    pub spend: crate::spend::RequestSpend,
    /// The upstream key quota's worst-case token charge, settled to the
    /// actual tokens with the answer's usage.
    pub quota: Option<crate::upstream::quota::QuotaCharge>,
}

impl RequestCtx {
    fn new(gw: &Gateway, route: Route, id: String, client_ip: IpAddr) -> Self {
        Self {
            id,
            route,
            started: Instant::now(),
            client_ip,
            caller: Caller::anonymous(&gw.config.anonymous.tier),
            plugins: SlotMap::from_fn(|slot| gw.plugins.slot(slot).current()),
            parsed: None,
            policy: PolicyRequest::default(),
            limits: None,
            charged: false,
            cache: CacheOutcome::Bypass,
            cache_key: None,
            no_cache: false,
            no_store: false,
            semantic_wrong: false,
            semantic: None,
            coalescing: Coalescing::default(),
            attempts: 0,
            last_failure: None,
            provider: String::new(),
            model: String::new(),
            spend: crate::spend::RequestSpend::default(),
            quota: None,
        }
    }

    /// The parsed request; phases after parsing may rely on it.
    pub fn parsed(&self) -> &ParsedRequest {
        self.parsed
            .as_ref()
            .expect("phases after parse run only once the body parsed")
    }
}

/// Handles one API request from arrival to response.
pub async fn handle(
    gw: Arc<Gateway>,
    route: Route,
    client_ip: IpAddr,
    request: http::Request<Body>,
) -> Response {
    handle_with(gw, route, client_ip, None, request)
        .await
        .response
}

/// [`handle`] for a caller authenticated earlier (a queued job, whose
/// request carries no credentials): every other phase runs as for a
/// synchronous call. Also says who caused a failure, so the job worker
/// tells the tenant's own rate limit (wait) from a provider's (retry), and
/// what the retry plugin needs to decide about running the job again.
pub async fn handle_as(
    gw: Arc<Gateway>,
    route: Route,
    client_ip: IpAddr,
    caller: Caller,
    request: http::Request<Body>,
) -> Ran {
    handle_with(gw, route, client_ip, Some(caller), request).await
}

/// A request run for a job worker ([`handle_as`]).
pub struct Ran {
    pub response: Response,
    /// Who caused a failure (`None` on success).
    pub origin: Option<crate::error::Origin>,
    /// The request as the plugins saw it (empty fields when it failed
    /// before its body parsed).
    pub policy: PolicyRequest,
    /// The provider and model of the answer, or of the first attempt when
    /// none answered.
    pub provider: String,
    pub model: String,
    /// How the last upstream attempt failed, when one did.
    pub last_failure: Option<crate::policy::AttemptOutcome>,
}

/// The caller presenting `headers`'s credentials (the auth phase alone).
pub async fn authenticate(gw: &Gateway, headers: &HeaderMap) -> Result<Caller, GatewayError> {
    let mut ctx = RequestCtx::new(gw, Route::Chat, String::new(), IpAddr::from([0, 0, 0, 0]));
    auth::authenticate(gw, headers, &mut ctx).await?;
    Ok(ctx.caller)
}

async fn handle_with(
    gw: Arc<Gateway>,
    route: Route,
    client_ip: IpAddr,
    caller: Option<Caller>,
    request: http::Request<Body>,
) -> Ran {
    let id = request_id(request.headers());
    let api_route = crate::telemetry::ApiRoute::from(route);
    let trace = gw
        .traces
        .request(request.headers(), api_route.as_str(), &id);
    let mut ctx = RequestCtx::new(&gw, route, id, client_ip);
    // Boxed so the levels above hold a pointer, not the phases' state (see
    // `server::api`).
    let counted = crate::state::round_trips::counted(Box::pin(run(
        &gw,
        &mut ctx,
        caller,
        request,
        trace.as_ref(),
    )));
    let (outcome, round_trips) = match &trace {
        // The request's context travels with its future: plugin calls and
        // upstream attempts find it as the current context.
        Some(t) => counted.with_context(t.context().clone()).await,
        None => counted.await,
    };
    if gw.state.is_shared() {
        gw.metrics.round_trips(ctx.cache, round_trips);
    }
    let (mut response, failure) = match outcome {
        Ok(r) => (r, None),
        Err(e) => {
            let failure = (e.origin, e.message.clone());
            (e.into_response(route), Some(failure))
        }
    };
    respond::decorate(&ctx, &mut response);
    if let Some(t) = &trace
        && let Ok(v) = http::HeaderValue::from_str(&t.trace_id())
    {
        response
            .headers_mut()
            .insert(crate::telemetry::traces::TRACE_ID_HEADER, v);
    }
    let status = response.status().as_u16();
    gw.metrics
        .request(route.into(), status, ctx.started.elapsed());
    let (origin, error) = match &failure {
        Some((origin, message)) => {
            gw.metrics.request_error(route.into(), *origin);
            (origin.as_str(), message.as_str())
        }
        None => ("", ""),
    };
    tracing::info!(
        target: "sluice::access",
        id = %ctx.id,
        route = ?route,
        tenant = %log_safe(&ctx.caller.tenant),
        model = %log_safe(&ctx.model),
        provider = %log_safe(&ctx.provider),
        status,
        cache = ctx.cache.as_str(),
        attempts = ctx.attempts,
        ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
        origin,
        error = %log_safe(error),
        "request"
    );
    if let Some(t) = trace {
        t.finish(
            status,
            vec![
                KeyValue::new("sluice.tenant", ctx.caller.tenant.clone()),
                KeyValue::new("sluice.provider", ctx.provider.clone()),
                KeyValue::new("sluice.model", ctx.model.clone()),
                KeyValue::new("sluice.cache", ctx.cache.as_str()),
                KeyValue::new("sluice.attempts", i64::from(ctx.attempts)),
            ],
        );
    }
    Ran {
        response,
        origin: failure.map(|(origin, _)| origin),
        policy: std::mem::take(&mut ctx.policy),
        provider: ctx.provider,
        model: ctx.model,
        last_failure: ctx.last_failure,
    }
}

/// Runs one phase of a traced request inside its own span. The phase's
/// future comes boxed, so the request's future holds a pointer rather than
/// the largest phase (a plugin call, the upstream call) moved in by value
/// at every level.
async fn phase<T>(
    trace: Option<&RequestTrace>,
    name: &'static str,
    work: std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + '_>>,
) -> T {
    let Some(trace) = trace else {
        return work.await;
    };
    let cx = trace.phase(name);
    let out = work.with_context(cx.clone()).await;
    traces::end(&cx, None);
    out
}

/// [`phase`] for work that does not wait.
fn phase_now<T>(trace: Option<&RequestTrace>, name: &'static str, work: impl FnOnce() -> T) -> T {
    let Some(trace) = trace else {
        return work();
    };
    let cx = trace.phase(name);
    let out = {
        let _attached = cx.clone().attach();
        work()
    };
    traces::end(&cx, None);
    out
}

async fn run(
    gw: &Arc<Gateway>,
    ctx: &mut RequestCtx,
    caller: Option<Caller>,
    request: http::Request<Body>,
    trace: Option<&RequestTrace>,
) -> Result<Response, GatewayError> {
    let (parts, body) = request.into_parts();
    phase(
        trace,
        "auth",
        Box::pin(async {
            match caller {
                Some(caller) => {
                    ctx.caller = caller;
                    Ok(())
                }
                None => auth::authenticate(gw, &parts.headers, ctx).await,
            }
        }),
    )
    .await?;
    let body = phase(
        trace,
        "read_body",
        Box::pin(read_body(body, gw.config.server.max_body_bytes)),
    )
    .await?;
    phase_now(trace, "parse", || parse(gw, ctx, &parts.headers, body))?;
    auth::authorize_model(ctx)?;
    phase(trace, "throttle", Box::pin(throttle::admit(gw, ctx))).await?;
    phase(
        trace,
        "cache_key",
        Box::pin(caching::derive_key(gw, ctx, &parts.headers)),
    )
    .await?;
    if let Some(answer) = phase(trace, "cache_lookup", Box::pin(caching::lookup(gw, ctx))).await {
        return Ok(respond::replay(gw, ctx, answer, CacheOutcome::Hit));
    }
    if let Some(response) = phase(
        trace,
        "semantic_lookup",
        Box::pin(semantic::lookup(gw, ctx)),
    )
    .await?
    {
        return Ok(response);
    }
    if let Some(answer) = phase(trace, "coalesce", Box::pin(coalesce::join(gw, ctx))).await {
        return Ok(respond::replay(gw, ctx, answer, CacheOutcome::Hit));
    }
    phase(trace, "budget", Box::pin(budget::reserve(gw, ctx))).await?;
    let upstream = phase(trace, "upstream", Box::pin(call::call_upstream(gw, ctx))).await?;
    Ok(phase_now(trace, "respond", || {
        respond::answer(gw, ctx, upstream)
    }))
}

/// What a failed call of `slot`'s plugin means for the request: go on
/// without the plugin's opinion (fail-open), or answer 503 (fail-closed).
/// The runtime has already logged and counted the failure.
fn plugin_failed(gw: &Gateway, slot: Slot, error: &CallError) -> Result<(), GatewayError> {
    match gw.plugins.slot(slot).failure() {
        FailurePolicy::FailOpen => Ok(()),
        FailurePolicy::FailClosed => Err(GatewayError::unavailable(format!(
            "the {} policy failed ({error}) and is configured fail-closed",
            slot.interface()
        ))),
    }
}

/// Reads the body, refusing more than `limit` bytes with a 413 (408 when
/// it stalls, see [`crate::listener::read_body`]).
async fn read_body(body: Body, limit: usize) -> Result<Bytes, GatewayError> {
    Ok(crate::listener::read_body(body, limit).await?)
}

/// Parses the body and resolves the provider; fills the policy view. The
/// parsed request keeps `body` itself (shared) to forward it.
fn parse(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(), GatewayError> {
    let server = &gw.config.server;
    let limits = api::Limits {
        max_messages: server.max_messages,
        max_content_parts: server.max_content_parts,
    };
    let mut parsed = api::parse_with(ctx.route, body, &limits)?;
    let provider = gw
        .config
        .route(&parsed.model)
        .ok_or_else(|| GatewayError::unknown_model(&parsed.model))?;
    if !call::provider_speaks(provider.kind, ctx.route) {
        return Err(GatewayError::bad_request(format!(
            "The model `{}` is served by provider `{}` ({}), which has no equivalent of this API.",
            parsed.model, provider.name, provider.kind
        )));
    }
    ctx.provider = provider.name.clone();
    ctx.model = parsed.model.clone();
    ctx.policy = PolicyRequest {
        id: ctx.id.clone(),
        route: ctx.route,
        provider: provider.name.clone(),
        model: parsed.model.clone(),
        streaming: parsed.stream,
        max_tokens: parsed.max_tokens,
        estimated_prompt_tokens: parsed.estimated_prompt_tokens,
        temperature: parsed.temperature,
        messages: std::mem::take(&mut parsed.messages),
        params: std::mem::take(&mut parsed.params),
        tenant: ctx.caller.tenant.clone(),
        tier: ctx.caller.tier.clone(),
        key_id: ctx.caller.key_id.clone(),
        client_ip: ctx.client_ip.to_string(),
        headers: auth::policy_headers(headers),
    };
    ctx.parsed = Some(parsed);
    Ok(())
}

/// The client's `x-request-id` when it is sane, else a fresh UUIDv7.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&respond::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}
