//! [`Upstreams`]: the per-provider HTTP clients and one attempt's mechanics.

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use tokio::time::Instant;

use super::body::{self, IdleTimeout, Read};
use super::breaker::{Admission, Breaker, BreakerSettings, CircuitState};
use super::clock::{self, Clock};
use super::keys::KeyPool;
use super::{
    AttemptFailure, AttemptOutcome, ProviderHealth, UpstreamBody, UpstreamError, UpstreamRequest,
    UpstreamResponse, retry_after,
};
use crate::config::{ProviderConfig, ProviderKind};

/// Longest a key rests after a rejection, whatever `retry-after` says: an
/// hour later one probe costs little and finds out.
const MAX_KEY_COOLDOWN_MS: u64 = 60 * 60 * 1000;

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");

/// Client tuning shared by every provider; the defaults suit ~1000 req/s.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub breaker: BreakerSettings,
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
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            breaker: BreakerSettings::default(),
            stream_idle_timeout: Duration::from_secs(60),
            max_response_bytes: 64 * 1024 * 1024,
            max_error_body_bytes: 64 * 1024,
            // Enough idle connections that a 1000 req/s burst after a lull
            // does not pay TCP+TLS handshakes again.
            pool_max_idle_per_host: 1024,
            pool_idle_timeout: Duration::from_secs(90),
            clock: clock::system(),
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
    client: reqwest::Client,
    keys: KeyPool,
    key_cooldown_ms: u64,
    anthropic_version: HeaderValue,
    breaker: Breaker,
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
        match self.provider(provider) {
            Some(p) => p.send(request, &self.inner.settings).await,
            None => Err(AttemptFailure::connect(format!(
                "no provider named `{provider}`"
            ))),
        }
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
            .map(|p| ProviderHealth {
                name: p.name.clone(),
                circuit: p.breaker.state(now),
                keys: p.keys.len(),
                keys_cooling: p.keys.cooling(now),
            })
            .collect()
    }

    fn provider(&self, name: &str) -> Option<&Provider> {
        // A handful of providers: a scan beats hashing the name.
        self.inner.providers.iter().find(|p| p.name == name)
    }
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
                    ProviderKind::Anthropic => key.expose().to_owned(),
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
        let client = reqwest::Client::builder()
            // HTTP/1.1 with a deep keep-alive pool: under h2 one connection's
            // stream limit (often 100) would cap concurrent generations.
            .http1_only()
            .pool_max_idle_per_host(settings.pool_max_idle_per_host)
            .pool_idle_timeout(settings.pool_idle_timeout)
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(60))
            .connect_timeout(config.connect_timeout())
            // A redirect from an API endpoint is a misconfiguration; following
            // it could carry a key somewhere unexpected.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BuildError::Client {
                provider: provider(),
                message: error_chain(e),
            })?;
        Ok(Self {
            name: config.name.clone(),
            kind: config.kind,
            base_url,
            client,
            keys: KeyPool::new(keys),
            key_cooldown_ms: config.key_cooldown_ms,
            anthropic_version,
            breaker: Breaker::new(settings.breaker),
        })
    }

    async fn send(
        &self,
        request: UpstreamRequest,
        settings: &UpstreamSettings,
    ) -> Result<UpstreamResponse, AttemptFailure> {
        let clock = &*settings.clock;
        let now = clock.now_ms();
        let probe = match self.breaker.admit(now) {
            Admission::Allowed { probe } => probe,
            Admission::Rejected { state, retry_in_ms } => {
                return Err(self.circuit_open(state, retry_in_ms));
            }
        };
        let mut probe_guard = ProbeGuard {
            breaker: &self.breaker,
            armed: probe,
        };
        let key = self.keys.pick(now);
        let key_index = key.map(|k| k.index);

        let result = self.attempt(request, key_index, settings).await;

        let healthy = match &result {
            Ok(_) => true,
            Err(failure) => match failure.outcome {
                AttemptOutcome::Status { code, .. } => code < 500,
                AttemptOutcome::Timeout | AttemptOutcome::ConnectError { .. } => false,
            },
        };
        let now = clock.now_ms();
        self.breaker.record(probe, healthy, now);
        probe_guard.armed = false;

        result.map_err(|mut failure| {
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
        })
    }

    /// The network part of [`Self::send`]: request out, response classified.
    async fn attempt(
        &self,
        request: UpstreamRequest,
        key_index: Option<usize>,
        settings: &UpstreamSettings,
    ) -> Result<UpstreamResponse, AttemptFailure> {
        let deadline = Instant::now() + request.timeout;
        let url = format!("{}{}", self.base_url, request.path);
        let url = reqwest::Url::parse(&url)
            .map_err(|e| AttemptFailure::connect(format!("invalid upstream URL: {e}")))?;
        let mut http = reqwest::Request::new(Method::POST, url);
        *http.headers_mut() = self.request_headers(key_index, request.request_id, request.stream);
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

    fn circuit_open(&self, state: CircuitState, retry_in_ms: u64) -> AttemptFailure {
        let message = match state {
            CircuitState::HalfOpen => format!(
                "circuit open for provider `{}` (half-open, probe in flight)",
                self.name
            ),
            _ => format!(
                "circuit open for provider `{}` (next probe in {retry_in_ms} ms)",
                self.name
            ),
        };
        AttemptFailure {
            circuit_open: true,
            ..AttemptFailure::connect(message)
        }
    }
}

/// Releases a half-open probe slot if the attempt is dropped mid-flight, so
/// a cancelled client request cannot wedge the breaker half-open.
struct ProbeGuard<'a> {
    breaker: &'a Breaker,
    armed: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.breaker.abandon_probe();
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
                    keys: 2,
                    keys_cooling: 0
                },
                ProviderHealth {
                    name: "claude".into(),
                    circuit: CircuitState::Closed,
                    keys: 0,
                    keys_cooling: 0
                },
            ]
        );
        assert!(upstreams.contains("claude"));
        assert!(!upstreams.contains("nope"));
    }
}
