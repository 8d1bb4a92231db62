//! The policy vocabulary in plain Rust: what the pipeline hands to plugins and
//! what they answer. These mirror `wit/policy.wit`; the WIT-generated types stay
//! private to [`crate::plugin`], which converts at the boundary.

use serde::{Deserialize, Serialize};

mod slot;

/// The tenant of callers that present no key (when anonymous access is
/// allowed): a name no configured tenant may take.
pub const ANONYMOUS_TENANT: &str = "anonymous";

pub use slot::{FailurePolicy, Slot, SlotMap};

/// Which API surface a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Route {
    Chat,
    Embeddings,
    AnthropicMessages,
}

/// One message, flattened for policy decisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Message {
    pub role: String,
    /// Text parts joined with "\n".
    pub text: String,
    pub has_tool_calls: bool,
    /// Canonical JSON of the non-text parts (tool calls, ids, images).
    pub extra_json: Option<String>,
}

/// A body field other than model/messages/stream, as canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Param {
    pub name: String,
    pub json: String,
}

/// The request view every plugin call receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyRequest {
    pub id: String,
    pub route: Route,
    pub provider: String,
    pub model: String,
    pub streaming: bool,
    pub max_tokens: Option<u32>,
    pub estimated_prompt_tokens: u32,
    pub temperature: Option<f64>,
    pub messages: Vec<Message>,
    /// Sorted by name.
    pub params: Vec<Param>,
    pub tenant: String,
    pub tier: String,
    pub key_id: Option<String>,
    pub client_ip: String,
    /// Lower-cased names, credentials removed.
    pub headers: Vec<(String, String)>,
}

impl Default for PolicyRequest {
    fn default() -> Self {
        Self {
            id: String::new(),
            route: Route::Chat,
            provider: String::new(),
            model: String::new(),
            streaming: false,
            max_tokens: None,
            estimated_prompt_tokens: 0,
            temperature: None,
            messages: Vec::new(),
            params: Vec::new(),
            tenant: String::new(),
            tier: String::new(),
            key_id: None,
            client_ip: String::new(),
            headers: Vec::new(),
        }
    }
}

/// What a rate-limit bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unit {
    Requests,
    Tokens,
}

/// How a bucket refills; both are continuously refilled token buckets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// `limit` per `window_ms`, burst up to `limit`.
    Window { limit: u64, window_ms: u64 },
    /// `per_second` refill, burst up to `burst`.
    Rate { per_second: f64, burst: u64 },
}

impl Shape {
    /// Bucket capacity.
    pub fn capacity(&self) -> u64 {
        match *self {
            Shape::Window { limit, .. } => limit,
            Shape::Rate { burst, .. } => burst,
        }
    }

    /// Refill rate in units per millisecond.
    pub fn per_ms(&self) -> f64 {
        match *self {
            Shape::Window { limit, window_ms } => limit as f64 / window_ms.max(1) as f64,
            Shape::Rate { per_second, .. } => per_second / 1000.0,
        }
    }
}

/// One bucket to charge (positive cost) or correct (negative cost refunds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub key: String,
    pub shape: Shape,
    pub cost: i64,
    pub unit: Unit,
}

/// A bucket's state after a charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketState {
    pub key: String,
    pub unit: Unit,
    pub limit: u64,
    pub remaining: u64,
    pub reset_ms: u64,
}

/// The result of an all-or-nothing charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ChargeResult {
    pub admitted: bool,
    pub retry_after_ms: u64,
    pub buckets: Vec<BucketState>,
}

/// Cache entry visibility.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheScope {
    Tenant,
    Shared,
}

/// The cache-key plugin's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "decision")]
pub enum CacheDecision {
    Bypass {
        reason: String,
    },
    Cache {
        key: String,
        ttl_seconds: u32,
        scope: CacheScope,
    },
}

/// What the semantic plugin wants embedded and searched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SemanticProbe {
    pub text: String,
    pub namespace: String,
    pub threshold: f32,
}

/// The best match found in the semantic index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SemanticCandidate {
    pub score: f32,
    pub prompt: String,
    pub age_seconds: u32,
}

/// The throttle plugin's admission answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "admission")]
pub enum Admission {
    Charge {
        buckets: Vec<Bucket>,
    },
    Reject {
        status: u16,
        message: String,
        retry_after_ms: Option<u64>,
    },
}

/// Tokens one answer used: as the provider reported them, or estimated
/// where it did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TokenCount {
    /// Every input token, those read from the provider's prompt cache
    /// included.
    pub prompt: u32,
    pub completion: u32,
    /// Of `prompt`, the tokens read from the provider's prompt cache
    /// (OpenAI `prompt_tokens_details.cached_tokens`, Anthropic
    /// `cache_read_input_tokens`); priced at the cached-input price.
    #[serde(default)]
    pub cached_prompt: u32,
}

impl TokenCount {
    /// `prompt` and `completion` tokens, none of them cached.
    pub fn new(prompt: u32, completion: u32) -> Self {
        Self {
            prompt,
            completion,
            cached_prompt: 0,
        }
    }
}

/// Actual usage reported to `throttle.settle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub estimated_prompt_tokens: u32,
    pub cached: bool,
}

impl Usage {
    /// The usage of an answer that used `tokens`, for a request whose prompt
    /// was estimated at `estimated_prompt_tokens`; `cached` when it was
    /// served from a cache (no upstream tokens were spent).
    pub fn of(tokens: TokenCount, estimated_prompt_tokens: u32, cached: bool) -> Usage {
        Usage {
            prompt_tokens: tokens.prompt,
            completion_tokens: tokens.completion,
            estimated_prompt_tokens,
            cached,
        }
    }
}

/// How an upstream attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum AttemptOutcome {
    Status {
        code: u16,
        retry_after_ms: Option<u64>,
    },
    Timeout,
    ConnectError {
        message: String,
    },
}

/// A failed attempt, as shown to `retry.decide`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    pub elapsed_ms: u64,
    pub provider: String,
    pub model: String,
    pub outcome: AttemptOutcome,
}

/// The retry plugin's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "verdict")]
pub enum RetryVerdict {
    Stop,
    Retry {
        after_ms: u64,
    },
    Fallback {
        model: String,
        provider: Option<String>,
        after_ms: u64,
    },
}

/// A candidate provider's circuit breaker, as the route plugin sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Circuit {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

/// How a candidate's provider is doing (see `route.health` in the WIT).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Health {
    /// Peak-EWMA latency estimate of one attempt, in ms (0 before any).
    pub latency_ms: f64,
    /// Failed share of the breaker window's attempts, 0 to 1.
    pub error_rate: f64,
    pub circuit: Circuit,
    /// Share of the provider's keys not resting, 0 to 1 (1 when keyless).
    pub key_headroom: f64,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            latency_ms: 0.0,
            error_rate: 0.0,
            circuit: Circuit::Closed,
            key_headroom: 1.0,
        }
    }
}

/// A model's price in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RoutePrice {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

/// One (provider, model) a request may be sent to, shown to `route.order`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteCandidate {
    pub provider: String,
    pub model: String,
    /// The provider's kind (`openai`, `anthropic`, `azure`, `gemini`).
    pub kind: String,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub price: Option<RoutePrice>,
}

/// One entry of the route plugin's answer: a (provider, model) to try.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RouteChoice {
    pub provider: String,
    pub model: String,
}

impl RouteCandidate {
    /// Candidates to exercise a route plugin with when no gateway supplies
    /// them (`sluice plugin test`, verification of a new version): `model`
    /// at a dear and healthy provider, at a cheap one whose circuit is
    /// open, and at a cheap healthy one, then an unpriced fallback.
    pub fn samples(model: &str) -> Vec<RouteCandidate> {
        let candidate =
            |provider: &str, model: &str, price: Option<(f64, f64)>, circuit| RouteCandidate {
                provider: provider.to_owned(),
                model: model.to_owned(),
                kind: "openai".to_owned(),
                health: Health {
                    latency_ms: 420.0,
                    error_rate: 0.02,
                    circuit,
                    key_headroom: 1.0,
                },
                price: price.map(|(input_per_mtok, output_per_mtok)| RoutePrice {
                    input_per_mtok,
                    output_per_mtok,
                }),
            };
        vec![
            candidate("primary", model, Some((2.5, 10.0)), Circuit::Closed),
            candidate("budget", model, Some((0.15, 0.6)), Circuit::Open),
            candidate("replica", model, Some((0.3, 1.2)), Circuit::Closed),
            candidate("local", "fallback-model", None, Circuit::Closed),
        ]
    }
}
