//! The upstream (provider) client: one attempt at a time, with the
//! mechanics the retry loop needs. Whether to retry is not decided here (the
//! retry plugin does that in the pipeline); this module makes each attempt
//! cheap, bounded and well described.
//!
//! - [`Upstreams`]: one pooled HTTP/1.1 client per provider, its key pool and
//!   circuit breaker (`breaker.rs`: a rolling failure ratio, half-open
//!   probes, capped exponential cooldown); [`Upstreams::send`] makes one attempt and answers an
//!   [`UpstreamResponse`] or an [`AttemptFailure`] carrying the
//!   [`AttemptOutcome`] the retry plugin sees.
//! - [`RetryBudget`]: the host-side cap on retries per provider.
//! - [`balance`]: weighted and least-latency (peak EWMA, two choices)
//!   selection among providers of one model; [`Upstreams::available`] and
//!   [`Upstreams::load`] feed it.
//! - [`retry_after_ms`]: `retry-after` / `retry-after-ms` parsing.
//! - [`Clock`] / [`ManualClock`]: the injectable clock cooldowns, the breaker
//!   and the budget run on.
//!
//! Paths are appended to the provider's `base_url`, which ends with `/v1`:
//! OpenAI-style URLs carry it in config; for Anthropic, whose SDK convention
//! is a base URL without it, `/v1` is added when missing. Either way callers
//! pass `/chat/completions`, `/embeddings` or `/messages`. Azure and Gemini
//! base URLs are the service's root; callers pass the whole path
//! (`/openai/deployments/D/chat/completions?api-version=V`,
//! `/v1beta/models/M:generateContent`). Keys go in `authorization: Bearer`
//! (OpenAI), `x-api-key` (Anthropic), `api-key` (Azure) or
//! `x-goog-api-key` (Gemini).

pub mod balance;
mod body;
mod breaker;
mod budget;
mod client;
mod clock;
mod keys;
pub mod quota;
mod retry_after;

use std::borrow::Cow;
use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use http::{HeaderMap, StatusCode};
use serde::Serialize;

pub use crate::policy::AttemptOutcome;
pub use body::UPSTREAM_REQUEST_ID;
pub use breaker::CircuitState;
pub use budget::{BudgetSettings, RetryBudget};
pub use client::{BuildError, FirstContent, UpstreamSettings, Upstreams, http_client};
pub use clock::{Clock, ManualClock, SystemClock};
pub use retry_after::{MAX_RETRY_AFTER_MS, parse_retry_after, retry_after_ms};

/// One attempt to send to a provider.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    /// Appended to the provider's base URL: `/chat/completions`,
    /// `/embeddings`, `/messages`.
    pub path: Cow<'static, str>,
    /// The JSON body, sent as is.
    pub body: Bytes,
    /// Expect server-sent events and hand the body over as a stream.
    pub stream: bool,
    /// Deadline for this attempt: the whole exchange for a complete body,
    /// time to response headers for a stream.
    pub timeout: Duration,
    /// Sent as `x-request-id` so provider logs can be matched to ours.
    pub request_id: String,
    /// The most tokens the request may use (prompt estimate plus
    /// `max_tokens`), charged to upstream key quotas; 0 when unknown.
    pub tokens: u64,
}

/// A body stream of raw bytes (SSE for chat streams), as the provider sent
/// them; ends with an error if the connection breaks or goes idle.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>>;

/// A successful (2xx) answer's body.
pub enum UpstreamBody {
    /// The whole body (non-streaming requests).
    Full(Bytes),
    /// Chunks as they arrive (streaming requests).
    Stream(BodyStream),
}

impl fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamBody::Full(bytes) => f.debug_tuple("Full").field(&bytes.len()).finish(),
            UpstreamBody::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

/// A provider's successful answer.
#[derive(Debug)]
pub struct UpstreamResponse {
    pub status: StatusCode,
    /// Only headers worth passing to the client: `content-type`,
    /// `openai-processing-ms`, `openai-version`, `request-id`, and OpenAI's
    /// `x-request-id` renamed to [`UPSTREAM_REQUEST_ID`]. Never `set-cookie`.
    pub headers: HeaderMap,
    pub body: UpstreamBody,
    /// Which of the provider's keys served it (`None` for keyless servers).
    pub key_index: Option<usize>,
    /// For a stream: the circuit breaker's outcome, to settle at the first
    /// content event (dropped unsettled, a success).
    pub first_content: Option<FirstContent>,
    /// The worst-case tokens charged to that key's quota, to settle to the
    /// actual tokens once known (see [`quota`]).
    pub quota: Option<quota::QuotaCharge>,
}

/// Why an attempt produced no successful answer.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(&self.outcome))]
pub struct AttemptFailure {
    /// What the retry plugin is shown.
    pub outcome: AttemptOutcome,
    /// The provider's error body (at most 64 KiB by default), so a
    /// caller-fault 4xx can be passed through unchanged.
    pub body: Option<Bytes>,
    /// Allowlisted provider headers, including `retry-after`.
    pub headers: HeaderMap,
    /// The key the attempt used, if any.
    pub key_index: Option<usize>,
    /// Every key of the provider was cooling down, so a rate-limited key was
    /// used anyway: retrying the same provider soon is unlikely to help.
    pub all_keys_cooling: bool,
    /// The circuit breaker refused the attempt and nothing was sent; a
    /// probe may go in this long (zero: when a probe in flight ends).
    pub circuit_open: Option<Duration>,
}

impl AttemptFailure {
    /// A failure before any HTTP status was seen.
    pub(crate) fn connect(message: impl Into<String>) -> Self {
        Self::from_outcome(AttemptOutcome::ConnectError {
            message: message.into(),
        })
    }

    pub(crate) fn from_outcome(outcome: AttemptOutcome) -> Self {
        Self {
            outcome,
            body: None,
            headers: HeaderMap::new(),
            key_index: None,
            all_keys_cooling: false,
            circuit_open: None,
        }
    }

    /// The upstream HTTP status, when it answered with one.
    pub fn status(&self) -> Option<u16> {
        match self.outcome {
            AttemptOutcome::Status { code, .. } => Some(code),
            _ => None,
        }
    }
}

fn describe(outcome: &AttemptOutcome) -> String {
    match outcome {
        AttemptOutcome::Status { code, .. } => format!("upstream answered {code}"),
        AttemptOutcome::Timeout => "upstream attempt timed out".to_owned(),
        AttemptOutcome::ConnectError { message } => format!("upstream unreachable: {message}"),
    }
}

/// A streamed body broke after the response had started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// No chunk arrived for this long.
    #[error("upstream stream idle for {0:?}")]
    IdleTimeout(Duration),
    /// The connection failed mid-body.
    #[error("upstream stream failed: {0}")]
    Body(String),
}

/// One provider's state, for /metrics and /readyz.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderHealth {
    pub name: String,
    pub circuit: CircuitState,
    /// While open: time until the next attempt may probe (0: it will).
    pub probe_in_ms: Option<u64>,
    /// Keys configured.
    pub keys: usize,
    /// Keys resting after a 429/401/403.
    pub keys_cooling: usize,
    /// Per key (config order, never the key itself): milliseconds it still
    /// rests; 0 = available.
    pub key_rest_ms: Vec<u64>,
}
