//! A mock OpenAI + Anthropic upstream for the demo, the tests and the
//! benchmarks.
//!
//! Serves `POST /v1/chat/completions` (JSON, or SSE when `stream: true`, with
//! the usage chunk when `stream_options.include_usage`), `POST /v1/embeddings`
//! (deterministic unit vectors), `POST /v1/messages` (Anthropic JSON or its
//! SSE event sequence) and `GET /v1/models`; Azure OpenAI's
//! `POST /openai/deployments/{deployment}/chat/completions?api-version=…`
//! (key in `api-key`, answered as OpenAI chat) and Gemini's
//! `POST /v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse` (key in `x-goog-api-key`; only
//! [`Fault::Status`] faults apply to Gemini).
//!
//! Answers are deterministic from the request: the text is
//! `mock answer to: <last user text>` (cut to `max_tokens * 4` characters when
//! that is smaller), usage is computed with [`crate::api::estimate_tokens`], so the
//! prompt tokens equal the gateway's own estimate. When the request has tools
//! and forces a call (OpenAI `tool_choice: "required"` or a named function;
//! Anthropic `tool_choice` `any` or `tool`), the answer calls that tool (the
//! first one for "required"/"any") with arguments `{"query": <last user text>}`.
//!
//! Errors come in the provider's shape: a wrong or missing key (when
//! [`MockConfig::expected_key`] is set: OpenAI `authorization: Bearer`,
//! Anthropic `x-api-key`) is a 401; a model named `mock-error-<status>`
//! always answers that status; random 500s (Anthropic: 529) and 429s follow
//! the configured rates; and [`MockHandle`] scripts faults for tests.
//!
//! Hot path: no logging, no per-request work beyond parsing the body and
//! building the answer.

mod answers;
mod handle;
mod server;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::time::Duration;

use axum::http::{HeaderMap, Method};
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{Notify, watch};

use crate::policy::Route;

pub use answers::embedding;
pub use handle::{MockHandle, spawn, try_spawn};
pub use server::serve;

/// How the mock behaves; every field has a default, none depends on clap.
#[derive(Debug, Clone, PartialEq)]
pub struct MockConfig {
    /// When set, requests must carry this key (else 401).
    pub expected_key: Option<String>,
    /// Added before every answer (time to first byte).
    pub latency: Duration,
    /// Between the events of a streamed answer.
    pub chunk_delay: Duration,
    /// Fraction of API requests answered with a server error (OpenAI 500,
    /// Anthropic 529 overloaded).
    pub error_rate: f64,
    /// Fraction of API requests answered 429 with `retry-after`.
    pub rate_limit_rate: f64,
    /// The `retry-after` of random 429s and `mock-error-429` models.
    pub retry_after: Duration,
    /// Embedding dimension when the request does not ask for `dimensions`.
    pub embedding_dim: usize,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            expected_key: None,
            latency: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            error_rate: 0.0,
            rate_limit_rate: 0.0,
            retry_after: Duration::from_secs(1),
            embedding_dim: 16,
        }
    }
}

/// A scripted misbehaviour for one upcoming API request (see
/// [`MockHandle::push_fault`]). Faults are consumed in order, one per
/// request, on any of the three API routes, after the key check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer `status` in the provider's error shape; with `retry_after`, also
    /// send `retry-after` (whole seconds, rounded up) and `retry-after-ms`.
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// Wait this long (on top of the latency), then answer normally.
    Delay(Duration),
    /// Answer 200 but end the body early and cleanly: a stream stops halfway
    /// without its terminator (`[DONE]` / `message_stop`); a JSON body is cut
    /// in half.
    Truncate,
    /// Answer 200 and send half the body, then reset the connection.
    Abort,
    /// A stream sends its first event (OpenAI's role chunk, Anthropic's
    /// `message_start`), no content, then resets the connection. A JSON
    /// answer is treated as [`Fault::Abort`].
    AbortBeforeContent,
    /// A stream sends its first event, waits this long, then the rest. A
    /// JSON answer waits, then answers.
    StallBeforeContent(Duration),
    /// Close the connection without answering.
    Drop,
}

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl SeenRequest {
    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The `model` field of the body.
    pub fn model(&self) -> Option<String> {
        self.json()?.get("model")?.as_str().map(str::to_owned)
    }
}

/// How many recent requests a handle keeps for inspection.
const RECENT_REQUESTS: usize = 64;
/// Request bodies above this are refused (the gateway's default is 4 MiB).
const MAX_BODY: usize = 32 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Up,
    Down,
    Stopped,
}

/// State shared by the accept loop, the handlers and the handle.
struct Shared {
    config: MockConfig,
    latency_us: AtomicU64,
    chunk_delay_us: AtomicU64,
    /// `error_rate` as f64 bits; [`MockHandle::set_error_rate`] changes it.
    error_rate: AtomicU64,
    /// Indexed by [`route_index`].
    calls: [AtomicU64; 3],
    model_calls: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    next_id: AtomicU64,
    script: Mutex<VecDeque<Fault>>,
    recent: Mutex<VecDeque<SeenRequest>>,
    paused: AtomicBool,
    /// Wakes paused requests on resume.
    resumed: Notify,
    /// Wakes [`MockHandle::wait_until`] whenever a request starts or ends.
    activity: Notify,
    /// What the accept loop should do.
    mode: watch::Sender<Mode>,
    /// What the accept loop has done (set_down waits on it).
    applied: watch::Sender<Mode>,
    /// A listener bound by `set_down(false)` for the loop to take over.
    relisten: Mutex<Option<std::net::TcpListener>>,
}

impl Shared {
    fn new(config: MockConfig) -> Self {
        Shared {
            latency_us: AtomicU64::new(micros(config.latency)),
            chunk_delay_us: AtomicU64::new(micros(config.chunk_delay)),
            error_rate: AtomicU64::new(config.error_rate.to_bits()),
            config,
            calls: Default::default(),
            model_calls: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            script: Mutex::new(VecDeque::new()),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_REQUESTS)),
            paused: AtomicBool::new(false),
            resumed: Notify::new(),
            activity: Notify::new(),
            mode: watch::Sender::new(Mode::Up),
            applied: watch::Sender::new(Mode::Up),
            relisten: Mutex::new(None),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn route_index(route: Route) -> usize {
    match route {
        Route::Chat => 0,
        Route::Embeddings => 1,
        Route::AnthropicMessages => 2,
    }
}
