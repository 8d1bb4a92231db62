//! [`Upstreams`]: the per-provider HTTP clients and one attempt's mechanics.

use std::borrow::Cow;
use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use tokio::time::Instant;

use super::balance::PeakEwma;
use super::body::{self, IdleTimeout, Read};
use super::breaker::{Admission, Breaker, CircuitState, Permit};
use super::clock::{self, Clock};
use super::keys::{KeyPick, KeyPool};
use super::quota::{self, KeyLimits, QuotaCharge};
use super::{
    AttemptFailure, AttemptOutcome, ProviderHealth, UpstreamBody, UpstreamError, UpstreamRequest,
    UpstreamResponse, retry_after,
};
use crate::config::{BreakerConfig, ProviderConfig, ProviderKind};
use crate::policy::{Circuit, Health};
use crate::telemetry::Metrics;

/// Longest a key rests after a rejection, whatever `retry-after` says: an
/// hour later one probe costs little and finds out.
const MAX_KEY_COOLDOWN_MS: u64 = 60 * 60 * 1000;

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const API_KEY: HeaderName = HeaderName::from_static("api-key");
const X_GOOG_API_KEY: HeaderName = HeaderName::from_static("x-goog-api-key");
const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");

/// Client tuning shared by every provider; the defaults suit ~1000 req/s.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Every provider's breaker, unless its `breaker` override says
    /// otherwise (`[breaker]` in the config).
    pub breaker: BreakerConfig,
    /// A stream that sends nothing for this long is cut.
    pub stream_idle_timeout: Duration,
    /// Largest complete (non-streamed) success body accepted.
    pub max_response_bytes: usize,
    /// Error bodies larger than this are dropped (not truncated: a cut JSON
    /// body is worse than none).
    pub max_error_body_bytes: usize,
    /// Idle keep-alive connections kept per provider host.
    pub pool_max_idle_per_host: usize,
    /// How long an idle connection is kept.
    pub pool_idle_timeout: Duration,
    /// Clock for key cooldowns and the breaker.
    pub clock: Arc<dyn Clock>,
    /// Where breaker transitions are counted (none in some tests).
    pub metrics: Option<Arc<Metrics>>,
    /// Where upstream key quotas are counted ([`super::quota`]); without
    /// it quotas are not enforced.
    pub state: Option<crate::state::State>,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            breaker: BreakerConfig::default(),
            stream_idle_timeout: Duration::from_secs(60),
            max_response_bytes: 64 * 1024 * 1024,
            max_error_body_bytes: 64 * 1024,
            // Enough idle connections that a 1000 req/s burst after a lull
            // does not pay TCP+TLS handshakes again.
            pool_max_idle_per_host: 1024,
            pool_idle_timeout: Duration::from_secs(90),
            clock: clock::system(),
            metrics: None,
            state: None,
        }
    }
}

/// Why the provider clients could not be built (bad config values that
/// validation let through, or a TLS backend failure).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("provider `{provider}`: base_url `{url}` is not a valid URL: {message}")]
    BaseUrl {
        provider: String,
        url: String,
        message: String,
    },
    #[error(
        "provider `{provider}`: keys[{index}] contains characters not allowed in an HTTP header"
    )]
    Key { provider: String, index: usize },
    #[error("provider `{provider}`: anthropic_version is not a valid header value")]
    AnthropicVersion { provider: String },
    #[error("provider `{provider}`: cannot build the HTTP client: {message}")]
    Client { provider: String, message: String },
}

/// The provider clients; cheap to clone (one `Arc`).
#[derive(Debug, Clone)]
pub struct Upstreams {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    providers: Vec<Provider>,
    settings: UpstreamSettings,
}

#[derive(Debug)]
struct Provider {
    name: String,
    kind: ProviderKind,
    /// Base URL without a trailing `/`, ending in `/v1` for Anthropic.
    base_url: String,
    /// Full URLs of the fixed paths (`Cow::Borrowed`: one per route), parsed
    /// once ([`Self::fixed_url`]): parsing a URL per attempt was 2.5% of a
    /// miss's CPU.
    urls: parking_lot::Mutex<std::collections::HashMap<&'static str, reqwest::Url>>,
    client: reqwest::Client,
    keys: KeyPool,
    /// Each key's quota, when any key has one.
    quotas: Vec<Option<KeyLimits>>,
    key_cooldown_ms: u64,
    anthropic_version: HeaderValue,
    breaker: Breaker,
    latency: PeakEwma,
}

impl Upstreams {
    /// Clients for `providers` with default settings.
    pub fn new(providers: &[ProviderConfig]) -> Result<Self, BuildError> {
        Self::with_settings(providers, UpstreamSettings::default())
    }

    /// Clients for `providers` with explicit settings (tests shorten
    /// timeouts and inject a clock).
    pub fn with_settings(
        providers: &[ProviderConfig],
        settings: UpstreamSettings,
    ) -> Result<Self, BuildError> {
        let providers = providers
            .iter()
            .map(|config| Provider::build(config, &settings))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                providers,
                settings,
            }),
        })
    }

    /// Makes one attempt at `provider`. Never retries; see the module docs.
    pub async fn send(
        &self,
        provider: &str,
        request: UpstreamRequest,
    ) -> Result<UpstreamResponse, AttemptFailure> {
        let Some(index) = self.inner.providers.iter().position(|p| p.name == provider) else {
            return Err(AttemptFailure::connect(format!(
                "no provider named `{provider}`"
            )));
        };
        let (result, deferred) = self.inner.providers[index]
            .send(request, &self.inner.settings)
            .await;
        result.map(|mut response| {
            response.first_content = deferred.map(|permit| FirstContent {
                upstreams: self.clone(),
                provider: index,
                permit: Some(permit),
            });
            response
        })
    }

    /// Whether a provider of that name is configured.
    pub fn contains(&self, provider: &str) -> bool {
        self.provider(provider).is_some()
    }

    /// Breaker and key state of every provider, in config order.
    pub fn health(&self) -> Vec<ProviderHealth> {
        let now = self.inner.settings.clock.now_ms();
        self.inner
            .providers
            .iter()
            .map(|p| {
                let (circuit, probe_in_ms) = p.breaker.state(now);
                ProviderHealth {
                    name: p.name.clone(),
                    circuit,
                    probe_in_ms,
                    keys: p.keys.len(),
                    keys_cooling: p.keys.cooling(now),
                    key_rest_ms: p.keys.rest_ms(now),
                }
            })
            .collect()
    }

    /// Whether `provider` takes attempts now: its circuit is not open, or
    /// its cooldown is over and a probe may go. An unknown name is not.
    pub fn available(&self, provider: &str) -> bool {
        self.provider(provider).is_some_and(|p| {
            let (_, retry_in) = p.breaker.state(self.inner.settings.clock.now_ms());
            retry_in.is_none_or(|ms| ms == 0)
        })
    }

    /// The least-latency balancer's cost of one more attempt at
    /// `provider` (see [`super::balance::PeakEwma::cost`]).
    pub fn load(&self, provider: &str) -> f64 {
        let now = self.inner.settings.clock.now_ms();
        self.provider(provider)
            .map_or(f64::MAX, |p| p.latency.cost(now))
    }

    /// What the route plugin is shown of `provider` now: its latency
    /// estimate, its breaker's error rate and state (open with the cooldown
    /// over reads half-open: the next attempt probes), and the share of its
    /// keys not resting. None for an unknown name.
    pub fn route_health(&self, provider: &str) -> Option<Health> {
        let p = self.provider(provider)?;
        let now = self.inner.settings.clock.now_ms();
        let circuit = match p.breaker.state(now) {
            (CircuitState::Open, Some(0)) | (CircuitState::HalfOpen, _) => Circuit::HalfOpen,
            (CircuitState::Open, _) => Circuit::Open,
            (CircuitState::Closed, _) => Circuit::Closed,
        };
        let keys = p.keys.len();
        let key_headroom = if keys == 0 {
            1.0
        } else {
            keys.saturating_sub(p.keys.cooling(now)) as f64 / keys as f64
        };
        Some(Health {
            latency_ms: p.latency.estimate_ms(now),
            error_rate: p.breaker.error_rate(now),
            circuit,
            key_headroom,
        })
    }

    fn provider(&self, name: &str) -> Option<&Provider> {
        // A handful of providers: a scan beats hashing the name.
        self.inner.providers.iter().find(|p| p.name == name)
    }
}

/// The HTTP client every provider gets (and the bench floor, so it proxies
/// with the same client): HTTP/1.1, a deep keep-alive pool, no redirects.
pub fn http_client(
    settings: &UpstreamSettings,
    connect_timeout: Duration,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        // HTTP/1.1 with a deep keep-alive pool: under h2 one connection's
        // stream limit (often 100) would cap concurrent generations.
        .http1_only()
        .pool_max_idle_per_host(settings.pool_max_idle_per_host)
        .pool_idle_timeout(settings.pool_idle_timeout)
        .tcp_nodelay(true)
        .tcp_keepalive(Duration::from_secs(60))
        .connect_timeout(connect_timeout)
        // A redirect from an API endpoint is a misconfiguration; following
        // it could carry a key somewhere unexpected.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .build()
}

// === impl Provider ===

impl Provider {
    fn build(config: &ProviderConfig, settings: &UpstreamSettings) -> Result<Self, BuildError> {
        let provider = || config.name.clone();
        let base_url = base_url(config.kind, &config.base_url);
        reqwest::Url::parse(&base_url).map_err(|e| BuildError::BaseUrl {
            provider: provider(),
            url: config.base_url.clone(),
            message: e.to_string(),
        })?;
        let keys = config
            .keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                let value = match config.kind {
                    ProviderKind::Openai => format!("Bearer {}", key.expose()),
                    ProviderKind::Anthropic | ProviderKind::Azure | ProviderKind::Gemini => {
                        key.expose().to_owned()
                    }
                };
                let mut value = HeaderValue::try_from(value).map_err(|_| BuildError::Key {
                    provider: provider(),
                    index,
                })?;
                value.set_sensitive(true);
                Ok(value)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let anthropic_version =
            HeaderValue::try_from(config.anthropic_version.as_str()).map_err(|_| {
                BuildError::AnthropicVersion {
                    provider: provider(),
                }
            })?;
        let client =
            http_client(settings, config.connect_timeout()).map_err(|e| BuildError::Client {
                provider: provider(),
                message: error_chain(e),
            })?;
        Ok(Self {
            name: config.name.clone(),
            kind: config.kind,
            base_url,
            urls: Default::default(),
            client,
            keys: KeyPool::new(keys),
            quotas: {
                let quotas = KeyLimits::of(config);
                if quotas.iter().any(Option::is_some) {
                    quotas
                } else {
                    Vec::new()
                }
            },
            key_cooldown_ms: config.key_cooldown_ms,
            anthropic_version,
            breaker: Breaker::new(config.breaker.apply(&settings.breaker)),
            latency: PeakEwma::default(),
        })
    }

    /// One attempt. A stream's breaker outcome is left to its first
    /// content event: its permit comes back with the response.
    async fn send(
        &self,
        request: UpstreamRequest,
        settings: &UpstreamSettings,
    ) -> (Result<UpstreamResponse, AttemptFailure>, Option<Permit>) {
        let clock = &*settings.clock;
        let now = clock.now_ms();
        let (admission, entered) = self.breaker.admit(now);
        if let Some(to) = entered {
            self.circuit_moved(to, now, settings);
        }
        let permit = match admission {
            Admission::Allowed(permit) => permit,
            Admission::Refused { retry_in_ms } => {
                return (Err(self.circuit_open(retry_in_ms)), None);
            }
        };
        let mut guard = PermitGuard {
            breaker: &self.breaker,
            permit: Some(permit),
        };
        let (key, quota) = match self.pick_key(now, request.tokens, settings).await {
            Ok(picked) => picked,
            Err(failure) => {
                // Nothing was sent: the breaker neither counts nor waits on it.
                guard.permit = None;
                self.breaker.abandon(permit);
                return (Err(failure), None);
            }
        };
        let key_index = key.map(|k| k.index);

        let in_flight = self.latency.start();
        let started = Instant::now();
        // Inside a traced request: a client span per attempt, sent to the
        // provider as `traceparent`.
        let span = crate::telemetry::traces::start_child(
            "sluice.upstream_attempt",
            opentelemetry::trace::SpanKind::Client,
            || {
                vec![opentelemetry::KeyValue::new(
                    "sluice.provider",
                    self.name.clone(),
                )]
            },
        );
        let result = self
            .attempt(request, key_index, settings, span.as_ref())
            .await
            .map(|mut answer| {
                answer.quota = quota;
                answer
            });
        drop(in_flight);
        self.latency.observe(started.elapsed(), clock.now_ms());
        if let Some(cx) = &span {
            let error = result.as_ref().err().map(|f| format!("{:?}", f.outcome));
            crate::telemetry::traces::end(cx, error.as_deref());
        }

        // The provider failing, not the request or a key: a 4xx (429
        // included: the key pool handles those) counts as an answer.
        let failed = match &result {
            Ok(_) => false,
            Err(failure) => match failure.outcome {
                AttemptOutcome::Status { code, .. } => code >= 500,
                AttemptOutcome::Timeout | AttemptOutcome::ConnectError { .. } => true,
            },
        };
        let now = clock.now_ms();
        guard.permit = None;
        if matches!(&result, Ok(r) if matches!(r.body, UpstreamBody::Stream(_))) {
            // Headers are not an answer yet: the caller settles the permit
            // at the first content event (FirstContent).
            return (result, Some(permit));
        }
        if let Some(to) = self.breaker.record(permit, failed, now) {
            self.circuit_moved(to, now, settings);
        }

        let result = result.map_err(|mut failure| {
            // 429: this key is rate limited; 401/403: this key is refused.
            // Either way the next attempts should use another one.
            if let (
                Some(index),
                AttemptOutcome::Status {
                    code: 401 | 403 | 429,
                    retry_after_ms,
                },
            ) = (key_index, &failure.outcome)
            {
                let rest = retry_after_ms
                    .unwrap_or(self.key_cooldown_ms)
                    .min(MAX_KEY_COOLDOWN_MS);
                self.keys.cool(index, now.saturating_add(rest));
            }
            failure.key_index = key_index;
            failure.all_keys_cooling = key.is_some_and(|k| k.all_cooling);
            failure
        });
        (result, None)
    }

    /// The next key of the pool with quota headroom ([`super::quota`]): a
    /// key without rests until its buckets refill. Every key out of quota:
    /// a 429 failure with `retry-after`, nothing sent.
    async fn pick_key(
        &self,
        now: u64,
        tokens: u64,
        settings: &UpstreamSettings,
    ) -> Result<(Option<KeyPick>, Option<QuotaCharge>), AttemptFailure> {
        let state = match &settings.state {
            Some(state) if !self.quotas.is_empty() => state,
            _ => return Ok((self.keys.pick(now), None)),
        };
        let mut soonest = u64::MAX;
        for _ in 0..self.keys.len() {
            let Some(pick) = self.keys.pick(now) else {
                return Ok((None, None));
            };
            let Some(Some(limits)) = self.quotas.get(pick.index) else {
                return Ok((Some(pick), None));
            };
            let buckets = limits.buckets(tokens);
            let charged = state.charge(quota::NAMESPACE, &buckets).await;
            if let (Ok(charged), Some(metrics)) = (&charged, &settings.metrics) {
                for b in &charged.buckets {
                    let window = b.key.rsplit(':').next().unwrap_or("");
                    metrics.keys().quota_headroom(
                        &self.name,
                        pick.index,
                        window,
                        b.remaining,
                        b.limit,
                    );
                }
                if !charged.admitted {
                    metrics.keys().quota_exhausted(&self.name);
                }
            }
            match charged {
                Ok(charged) if charged.admitted => {
                    return Ok((Some(pick), QuotaCharge::of(state, &buckets)));
                }
                Ok(charged) => {
                    let wait = charged.retry_after_ms.max(1);
                    self.keys.cool(pick.index, now.saturating_add(wait));
                    soonest = soonest.min(wait);
                }
                Err(e) => {
                    // Quotas protect the provider account; a state outage
                    // does not stop traffic (the state's on_error already
                    // chose between its local fallback and this error).
                    tracing::warn!(provider = %self.name, error = %e, "upstream key quota not checked");
                    return Ok((Some(pick), None));
                }
            }
            if pick.all_cooling {
                break;
            }
        }
        Err(self.over_quota(soonest))
    }

    /// Every key is out of quota: a 429 in the provider's error shape
    /// (Anthropic's, else OpenAI's), handled like a provider's own 429.
    fn over_quota(&self, retry_after_ms: u64) -> AttemptFailure {
        let retry_after_ms = retry_after_ms.clamp(1, super::MAX_RETRY_AFTER_MS);
        let route = match self.kind {
            ProviderKind::Anthropic => crate::policy::Route::AnthropicMessages,
            _ => crate::policy::Route::Chat,
        };
        let message = format!(
            "Every API key of provider `{}` is at its quota; try again in {:.1}s.",
            self.name,
            retry_after_ms as f64 / 1000.0
        );
        let mut failure = AttemptFailure::from_outcome(AttemptOutcome::Status {
            code: 429,
            retry_after_ms: Some(retry_after_ms),
        });
        failure.body = Some(bytes::Bytes::from(crate::api::error_body(
            route, 429, &message,
        )));
        failure.all_keys_cooling = true;
        if let Ok(v) = HeaderValue::try_from(retry_after_ms.div_ceil(1000).to_string()) {
            failure.headers.insert(http::header::RETRY_AFTER, v);
        }
        failure
    }

    /// The URL of a path fixed in the code (one per route), parsed once.
    fn fixed_url(&self, path: &'static str) -> Result<reqwest::Url, String> {
        let mut urls = self.urls.lock();
        if let Some(url) = urls.get(path) {
            return Ok(url.clone());
        }
        let url = self.parse_url(path)?;
        urls.insert(path, url.clone());
        Ok(url)
    }

    /// The URL of `path` at this provider.
    fn parse_url(&self, path: &str) -> Result<reqwest::Url, String> {
        reqwest::Url::parse(&format!("{}{path}", self.base_url))
            .map_err(|e| format!("invalid upstream URL: {e}"))
    }

    /// The network part of [`Self::send`]: request out, response classified.
    async fn attempt(
        &self,
        request: UpstreamRequest,
        key_index: Option<usize>,
        settings: &UpstreamSettings,
        trace: Option<&opentelemetry::Context>,
    ) -> Result<UpstreamResponse, AttemptFailure> {
        let deadline = Instant::now() + request.timeout;
        let url = match &request.path {
            Cow::Borrowed(fixed) => self.fixed_url(fixed),
            Cow::Owned(built) => self.parse_url(built),
        }
        .map_err(AttemptFailure::connect)?;
        let mut http = reqwest::Request::new(Method::POST, url);
        *http.headers_mut() = self.request_headers(key_index, request.request_id, request.stream);
        if let Some(cx) = trace {
            crate::telemetry::traces::inject(cx, http.headers_mut());
        }
        *http.body_mut() = Some(request.body.into());

        let response = match tokio::time::timeout_at(deadline, self.client.execute(http)).await {
            Err(_elapsed) => return Err(AttemptFailure::from_outcome(AttemptOutcome::Timeout)),
            Ok(Err(e)) => return Err(transport_failure(e)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();

        if !status.is_success() {
            let headers = body::pass_on(response.headers(), true);
            let retry_after_ms = retry_after::retry_after_ms(response.headers(), SystemTime::now());
            // The status is known; a slow or oversized error body only costs
            // us the body, not the status.
            let body = match tokio::time::timeout_at(
                deadline,
                body::read_limited(response, settings.max_error_body_bytes),
            )
            .await
            {
                Ok(Ok(Read::Complete(bytes))) => Some(bytes),
                _ => None,
            };
            return Err(AttemptFailure {
                body,
                headers,
                ..AttemptFailure::from_outcome(AttemptOutcome::Status {
                    code: status.as_u16(),
                    retry_after_ms,
                })
            });
        }

        let headers = body::pass_on(response.headers(), false);
        let body = if request.stream {
            let chunks = response
                .bytes_stream()
                .map_err(|e| UpstreamError::Body(error_chain(e)));
            UpstreamBody::Stream(Box::pin(IdleTimeout::new(
                chunks,
                settings.stream_idle_timeout,
            )))
        } else {
            let read = body::read_limited(response, settings.max_response_bytes);
            match tokio::time::timeout_at(deadline, read).await {
                Err(_elapsed) => return Err(AttemptFailure::from_outcome(AttemptOutcome::Timeout)),
                Ok(Err(e)) => return Err(transport_failure(e)),
                Ok(Ok(Read::TooLarge)) => {
                    return Err(AttemptFailure::connect(format!(
                        "response body larger than {} bytes",
                        settings.max_response_bytes
                    )));
                }
                Ok(Ok(Read::Complete(bytes))) => UpstreamBody::Full(bytes),
            }
        };
        Ok(UpstreamResponse {
            status,
            headers,
            body,
            key_index,
            first_content: None,
            quota: None,
        })
    }

    /// Built from scratch: nothing the client sent (its credentials above
    /// all) can reach the provider except the body.
    fn request_headers(
        &self,
        key_index: Option<usize>,
        request_id: String,
        stream: bool,
    ) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(5);
        headers.insert(CONTENT_TYPE, JSON);
        headers.insert(ACCEPT, if stream { EVENT_STREAM } else { JSON });
        if let Some(key) = key_index.and_then(|i| self.keys.header(i)) {
            let name = match self.kind {
                ProviderKind::Openai => AUTHORIZATION,
                ProviderKind::Anthropic => X_API_KEY,
                ProviderKind::Azure => API_KEY,
                ProviderKind::Gemini => X_GOOG_API_KEY,
            };
            headers.insert(name, key.clone());
        }
        if self.kind == ProviderKind::Anthropic {
            headers.insert(ANTHROPIC_VERSION, self.anthropic_version.clone());
        }
        // An id that is not a valid header value is simply not forwarded.
        if let Ok(id) = HeaderValue::try_from(request_id) {
            headers.insert(X_REQUEST_ID, id);
        }
        headers
    }

    /// The refusal of an open (or fully probed half-open) circuit.
    fn circuit_open(&self, retry_in_ms: u64) -> AttemptFailure {
        let message = if retry_in_ms == 0 {
            format!(
                "circuit open for provider `{}` (half-open, probes in flight)",
                self.name
            )
        } else {
            format!(
                "circuit open for provider `{}` (next probe in {retry_in_ms} ms)",
                self.name
            )
        };
        AttemptFailure {
            circuit_open: Some(Duration::from_millis(retry_in_ms)),
            ..AttemptFailure::connect(message)
        }
    }

    /// Logs and counts a breaker transition.
    fn circuit_moved(&self, to: CircuitState, now_ms: u64, settings: &UpstreamSettings) {
        match to {
            CircuitState::Open => {
                let cooldown_ms = self.breaker.state(now_ms).1.unwrap_or_default();
                tracing::warn!(
                    provider = %self.name,
                    cooldown_ms,
                    "circuit breaker opened: the provider is failing; its attempts are refused until probes succeed"
                );
            }
            CircuitState::HalfOpen => tracing::info!(
                provider = %self.name,
                "circuit breaker half-open: probing the provider"
            ),
            CircuitState::Closed => tracing::info!(
                provider = %self.name,
                "circuit breaker closed: the provider answers again"
            ),
        }
        if let Some(metrics) = &settings.metrics {
            metrics.circuit_transition(&self.name, to);
        }
    }
}

/// Hands the permit back if the attempt is dropped mid-flight, so a
/// cancelled client request cannot hold a half-open probe place forever.
/// The circuit breaker's outcome of a stream, given at its first content
/// event rather than at its headers: a provider that answers 200 and then
/// fails before any content has failed. [`Self::settle`] records it;
/// dropped unsettled (the caller never looked at the content) it counts
/// as a success, as the headers did.
pub struct FirstContent {
    upstreams: Upstreams,
    /// Index of the provider in `upstreams`.
    provider: usize,
    permit: Option<Permit>,
}

impl FirstContent {
    /// Records the attempt: `failed` when the stream broke, went idle or
    /// timed out before its first content event.
    pub fn settle(mut self, failed: bool) {
        self.record(failed);
    }

    fn record(&mut self, failed: bool) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let settings = &self.upstreams.inner.settings;
        let p = &self.upstreams.inner.providers[self.provider];
        let now = settings.clock.now_ms();
        if let Some(to) = p.breaker.record(permit, failed, now) {
            p.circuit_moved(to, now, settings);
        }
    }
}

impl Drop for FirstContent {
    fn drop(&mut self) {
        self.record(false);
    }
}

impl std::fmt::Debug for FirstContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirstContent")
            .field(
                "provider",
                &self.upstreams.inner.providers[self.provider].name,
            )
            .finish()
    }
}

struct PermitGuard<'a> {
    breaker: &'a Breaker,
    permit: Option<Permit>,
}

impl Drop for PermitGuard<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.breaker.abandon(permit);
        }
    }
}

/// The base URL callers' paths are appended to.
fn base_url(kind: ProviderKind, configured: &str) -> String {
    let trimmed = configured.trim().trim_end_matches('/');
    if kind == ProviderKind::Anthropic && !trimmed.ends_with("/v1") {
        format!("{trimmed}/v1")
    } else {
        trimmed.to_owned()
    }
}

/// Classifies a reqwest error from before a status was seen.
fn transport_failure(e: reqwest::Error) -> AttemptFailure {
    if e.is_timeout() && !e.is_connect() {
        return AttemptFailure::from_outcome(AttemptOutcome::Timeout);
    }
    AttemptFailure::connect(error_chain(e))
}

/// `error: cause: cause`, without the URL (it is ours and known) and
/// without repeating a cause already in the text.
fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_base_urls_gain_v1_and_trailing_slashes_go() {
        assert_eq!(
            base_url(ProviderKind::Anthropic, "https://api.anthropic.com"),
            "https://api.anthropic.com/v1"
        );
        assert_eq!(
            base_url(ProviderKind::Anthropic, "https://proxy.example/v1/"),
            "https://proxy.example/v1"
        );
        assert_eq!(
            base_url(ProviderKind::Openai, "http://127.0.0.1:8000/v1/"),
            "http://127.0.0.1:8000/v1"
        );
    }

    #[test]
    fn bad_keys_are_named_by_index_not_value() {
        let mut config = ProviderConfig::new("openai", ProviderKind::Openai);
        config.keys = vec![
            crate::config::Secret::new("sk-ok"),
            crate::config::Secret::new("sk-bad\nline"),
        ];
        let err = Upstreams::new(&[config]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "provider `openai`: keys[1] contains characters not allowed in an HTTP header"
        );
    }

    #[test]
    fn health_lists_providers_in_config_order() {
        let mut openai = ProviderConfig::new("openai", ProviderKind::Openai);
        openai.keys = vec![
            crate::config::Secret::new("a"),
            crate::config::Secret::new("b"),
        ];
        let anthropic = ProviderConfig::new("claude", ProviderKind::Anthropic);
        let upstreams = Upstreams::new(&[openai, anthropic]).unwrap();
        let health = upstreams.health();
        assert_eq!(
            health,
            [
                ProviderHealth {
                    name: "openai".into(),
                    circuit: CircuitState::Closed,
                    probe_in_ms: None,
                    keys: 2,
                    keys_cooling: 0,
                    key_rest_ms: vec![0, 0],
                },
                ProviderHealth {
                    name: "claude".into(),
                    circuit: CircuitState::Closed,
                    probe_in_ms: None,
                    keys: 0,
                    keys_cooling: 0,
                    key_rest_ms: vec![],
                },
            ]
        );
        assert!(upstreams.contains("claude"));
        assert!(!upstreams.contains("nope"));
    }
}
