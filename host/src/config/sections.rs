//! The config sections other than `[state]` (owned by [`crate::state`]) and
//! `[plugins]` (see [`super::plugins`]). Every field has a default.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use globset::GlobSet;
use serde::{Deserialize, Deserializer};

use super::secret::Secret;
use crate::telemetry::LogFormat;

const MIB: u64 = 1024 * 1024;

// === [server] ===

/// The smallest `server.max_header_bytes`: hyper's smallest read buffer.
pub const MIN_HEADER_BYTES: usize = 8192;

/// `[server]`: listeners, limits and deadlines.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the API listener (`sluice serve --listen` overrides).
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    /// Largest accepted request body; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Most messages (or embedding inputs) in one request; more get a 400
    /// naming the limit, counted before any message is converted.
    pub max_messages: usize,
    /// Most content parts in one request, over all its messages and
    /// `system` blocks; more get a 400 naming the limit.
    pub max_content_parts: usize,
    /// Bearer token for `/admin`; the admin API is off without one.
    pub admin_token: Option<Secret>,
    /// A separate listener for `/admin` (and nothing else); requires
    /// `admin_token`. Where `/admin` belongs at an internet-facing site.
    #[serde(deserialize_with = "optional_socket_addr")]
    pub admin_listen: Option<SocketAddr>,
    /// Also serve `/admin` (behind the token) on the public `listen`: an
    /// explicit opt-in, for a node with no separate admin network.
    pub admin_on_listen: bool,
    /// Bearer token `/metrics` requires (tenant names and usage are in
    /// it); unset, `/metrics` is open to whoever reaches its listener.
    pub metrics_token: Option<Secret>,
    /// Serve `/metrics` on `admin_listen` instead of `listen`.
    pub metrics_on_admin_listen: bool,
    /// Overall deadline for one client request, retries included.
    pub request_timeout_ms: u64,
    /// How long in-flight requests may finish after a shutdown signal.
    pub shutdown_grace_ms: u64,
    /// A request head (request line and headers) must arrive within this
    /// long of its first byte, or of the accept for a new connection;
    /// otherwise the connection is closed.
    pub header_read_timeout_ms: u64,
    /// A request body that makes no progress for this long is cut: 408
    /// when the response has not started (a stall timeout, per read).
    pub body_read_timeout_ms: u64,
    /// A keep-alive connection with no request in flight for this long is
    /// closed (a response being streamed is in flight: never cut).
    pub idle_timeout_ms: u64,
    /// A response write that makes no progress for this long (the client
    /// stopped reading) closes the connection (a stall timeout, per write,
    /// as nginx's `send_timeout`).
    pub write_stall_timeout_ms: u64,
    /// Open client connections per listener; past it a new connection
    /// gets a 503 and is closed. Lowered at start to what the open-file
    /// limit allows.
    pub max_connections: usize,
    /// Header fields in one request; more get 431.
    pub max_headers: usize,
    /// Bytes in one request head (HTTP/1) or header list (HTTP/2); larger
    /// heads get 431. At least 8192.
    pub max_header_bytes: usize,
    /// Take the client IP from `x-forwarded-for` (only behind a trusted
    /// load balancer; otherwise clients could pick their own rate-limit key).
    pub trust_forwarded_for: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 4 * MIB as usize,
            max_messages: crate::api::Limits::DEFAULT.max_messages,
            max_content_parts: crate::api::Limits::DEFAULT.max_content_parts,
            admin_token: None,
            admin_listen: None,
            admin_on_listen: false,
            metrics_token: None,
            metrics_on_admin_listen: false,
            request_timeout_ms: 120_000,
            shutdown_grace_ms: 30_000,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            write_stall_timeout_ms: 30_000,
            max_connections: 10_000,
            max_headers: 100,
            max_header_bytes: 32 * 1024,
            trust_forwarded_for: false,
        }
    }
}

/// An `ip:port` address, with an error that shows the expected form (the
/// std parser's own message is just "invalid socket address syntax").
fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let raw = String::deserialize(d)?;
    raw.trim().parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{raw}` is not an ip:port address (e.g. \"127.0.0.1:8080\" or \"[::]:8080\")"
        ))
    })
}

fn optional_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    socket_addr(d).map(Some)
}

impl ServerConfig {
    /// Whether `/admin` is served at all.
    pub fn admin_enabled(&self) -> bool {
        self.admin_token.is_some()
    }

    /// Whether the public listener serves `/admin`.
    pub fn admin_on_public_listener(&self) -> bool {
        self.admin_enabled() && self.admin_listen.is_none() && self.admin_on_listen
    }

    /// Whether the public listener serves `/metrics`.
    pub fn metrics_on_public_listener(&self) -> bool {
        !(self.metrics_on_admin_listen && self.admin_listen.is_some())
    }

    /// [`Self::request_timeout_ms`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// [`Self::shutdown_grace_ms`] as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// [`Self::header_read_timeout_ms`] as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// [`Self::body_read_timeout_ms`] as a duration.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }

    /// [`Self::idle_timeout_ms`] as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// [`Self::write_stall_timeout_ms`] as a duration.
    pub fn write_stall_timeout(&self) -> Duration {
        Duration::from_millis(self.write_stall_timeout_ms)
    }
}

// === [[providers]] ===

/// Which wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI or any OpenAI-compatible server (vLLM, Ollama, …).
    #[default]
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
    /// Azure OpenAI: OpenAI's format on per-deployment URLs with an
    /// `api-version` query and an `api-key` header.
    Azure,
    /// Google Gemini's native `generateContent` API (translated).
    Gemini,
}

impl ProviderKind {
    /// The config spelling, also the default provider name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Azure => "azure",
            ProviderKind::Gemini => "gemini",
        }
    }

    /// The public endpoint used when `base_url` is not set. OpenAI's includes
    /// `/v1`; Anthropic's does not (same convention as each vendor's SDK and
    /// its `*_BASE_URL` variable).
    pub fn default_base_url(self) -> &'static str {
        match self {
            ProviderKind::Openai => "https://api.openai.com/v1",
            ProviderKind::Anthropic => "https://api.anthropic.com",
            // Each Azure resource has its own host: base_url is required.
            ProviderKind::Azure => "",
            ProviderKind::Gemini => "https://generativelanguage.googleapis.com",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[[providers]]`: one upstream, its key pool and the models it serves.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    /// Unique name (metrics label, fallback target); defaults to `kind`.
    pub name: String,
    pub kind: ProviderKind,
    /// Defaults to [`ProviderKind::default_base_url`]; may be `env:`.
    pub base_url: String,
    /// Upstream API keys forming a pool; each may be `env:`. Empty for
    /// servers that need no key.
    pub keys: Vec<Secret>,
    /// Model-name globs (`gpt-*`, `*`); the first provider whose glob
    /// matches serves the model. A provider with none is reachable only as a
    /// named retry fallback.
    pub models: Vec<String>,
    /// Deadline for one upstream attempt.
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// How long a stream may take to send its first content event; until
    /// then the client has seen nothing and a failure moves on to the next
    /// attempt (retry or fallback). Defaults to `timeout_ms`.
    pub first_token_timeout_ms: Option<u64>,
    /// `anthropic-version` header (Anthropic only).
    pub anthropic_version: String,
    /// `api-version` query parameter (Azure only).
    pub api_version: String,
    /// Model -> deployment name (Azure only); a model not listed is its
    /// own deployment name.
    pub deployments: std::collections::BTreeMap<String, String>,
    /// How long a key rests after the upstream rate-limits it.
    pub key_cooldown_ms: u64,
    /// Quota of each key (requests per minute, hour and day, tokens per
    /// minute), counted in the state across nodes; the pool skips a key
    /// without headroom. None: no quota.
    pub key_quota: Option<KeyQuota>,
    /// Per-key quotas, by position in `keys`: an entry replaces
    /// `key_quota` for that key (`{}`: no quota).
    pub key_quotas: Vec<KeyQuota>,
    /// This provider's circuit breaker: fields set here replace those of
    /// `[breaker]`.
    pub breaker: BreakerOverride,
    /// Share of its model's traffic under `[routing] balance = "weighted"`.
    pub weight: u32,
    /// `models` compiled; built by [`super::Config::prepare`].
    #[serde(skip)]
    pub(super) matcher: GlobSet,
}

/// An upstream key's quota; a limit left out is not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyQuota {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Requests per hour.
    pub rph: Option<u64>,
    /// Requests per day.
    pub rpd: Option<u64>,
    /// Tokens per minute (each request counts its prompt estimate plus
    /// `max_tokens`, or 256 without one).
    pub tpm: Option<u64>,
}

impl KeyQuota {
    /// Whether any limit is set.
    pub fn is_empty(&self) -> bool {
        self.rpm.is_none() && self.rph.is_none() && self.rpd.is_none() && self.tpm.is_none()
    }
}

impl ProviderConfig {
    /// The quota of key `index`: its `key_quotas` entry, else `key_quota`.
    pub fn quota_of(&self, index: usize) -> Option<KeyQuota> {
        self.key_quotas
            .get(index)
            .copied()
            .or(self.key_quota)
            .filter(|q| !q.is_empty())
    }
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            kind: ProviderKind::Openai,
            base_url: String::new(),
            keys: Vec::new(),
            models: Vec::new(),
            timeout_ms: 60_000,
            connect_timeout_ms: 5_000,
            first_token_timeout_ms: None,
            anthropic_version: "2023-06-01".to_owned(),
            api_version: "2024-10-21".to_owned(),
            deployments: std::collections::BTreeMap::new(),
            weight: 1,
            key_cooldown_ms: 30_000,
            key_quota: None,
            key_quotas: Vec::new(),
            breaker: BreakerOverride::default(),
            matcher: GlobSet::empty(),
        }
    }
}

impl PartialEq for ProviderConfig {
    // The compiled matcher is derived from `models`, so it is left out.
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.kind == other.kind
            && self.base_url == other.base_url
            && self.keys == other.keys
            && self.models == other.models
            && self.timeout_ms == other.timeout_ms
            && self.connect_timeout_ms == other.connect_timeout_ms
            && self.first_token_timeout_ms == other.first_token_timeout_ms
            && self.anthropic_version == other.anthropic_version
            && self.api_version == other.api_version
            && self.deployments == other.deployments
            && self.weight == other.weight
            && self.key_cooldown_ms == other.key_cooldown_ms
            && self.key_quota == other.key_quota
            && self.key_quotas == other.key_quotas
            && self.breaker == other.breaker
    }
}

impl ProviderConfig {
    /// A provider of `kind` named `name`, every other field defaulted.
    pub fn new(name: impl Into<String>, kind: ProviderKind) -> Self {
        Self {
            name: name.into(),
            kind,
            base_url: kind.default_base_url().to_owned(),
            ..Self::default()
        }
    }

    /// Whether one of this provider's `models` globs matches `model`.
    pub fn serves(&self, model: &str) -> bool {
        self.matcher.is_match(model)
    }

    /// The Azure deployment serving `model`.
    pub fn deployment<'a>(&'a self, model: &'a str) -> &'a str {
        self.deployments.get(model).map_or(model, String::as_str)
    }

    /// [`Self::timeout_ms`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// [`Self::first_token_timeout_ms`] (else `timeout_ms`) as a duration.
    pub fn first_token_timeout(&self) -> Duration {
        Duration::from_millis(self.first_token_timeout_ms.unwrap_or(self.timeout_ms))
    }

    /// [`Self::connect_timeout_ms`] as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// [`Self::key_cooldown_ms`] as a duration.
    pub fn key_cooldown(&self) -> Duration {
        Duration::from_millis(self.key_cooldown_ms)
    }
}

// === [anonymous] and [[tenants]] ===

/// `[anonymous]`: requests that carry no virtual key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnonymousConfig {
    /// Whether a request without a known virtual key is served (false:
    /// 401). Unwritten, it is true only when no `[[tenants]]` are
    /// configured: see [`super::Config::anonymous_allowed`].
    pub allowed: Option<bool>,
    /// The tier anonymous requests are throttled as.
    pub tier: String,
}

impl Default for AnonymousConfig {
    fn default() -> Self {
        Self {
            allowed: None,
            tier: "anonymous".to_owned(),
        }
    }
}

/// `[[tenants]]`: a client organisation and its virtual keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantConfig {
    /// Unique name; cache scope, metrics label, the `tenant` plugins see.
    pub name: String,
    /// Tier handed to plugins (`free`, `pro`, …).
    pub tier: String,
    /// Virtual keys clients send as `Bearer` tokens; each may be `env:` and
    /// belongs to exactly one tenant.
    pub keys: Vec<Secret>,
    /// Caps on the tenant's spend (see docs/budgets.md).
    pub budget_usd: Option<super::BudgetUsd>,
}

impl Default for TenantConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            tier: "default".to_owned(),
            keys: Vec::new(),
            budget_usd: None,
        }
    }
}

// === [cache] ===

/// `[cache]`: the exact-match response cache.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Master switch; off means every request is a `bypass`.
    pub enabled: bool,
    /// Bound of the in-process (L1) LRU, in bytes of stored responses.
    pub max_bytes: u64,
    /// Responses larger than this are not cached.
    pub max_entry_bytes: u64,
    /// TTL used when a cache-key plugin answers `ttl_seconds = 0`.
    pub default_ttl_seconds: u32,
    /// With shared (Redis) state, identical cacheable misses in flight on
    /// different nodes make one upstream call, at the price of a lock in the
    /// state per miss; off, only requests on the same node are coalesced.
    pub coalesce_across_nodes: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: 64 * MIB,
            max_entry_bytes: MIB,
            default_ttl_seconds: 3600,
            coalesce_across_nodes: true,
        }
    }
}

// === [routing] ===

/// How a request picks among several providers serving its model (several
/// deployments of one model: two organisations, Azure and OpenAI, vLLM
/// replicas).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// The first in config order (the others serve when its circuit is open).
    #[default]
    First,
    /// At random in proportion to each provider's `weight`.
    Weighted,
    /// Power of two choices over each provider's peak-EWMA latency times
    /// its requests in flight.
    LeastLatency,
}

/// `[routing]`: selection among the providers serving a model. Providers
/// whose circuit breaker is open are ejected from selection until a probe
/// may go (see `[breaker]`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    pub balance: Balance,
}

// === [retry] ===

/// `[retry]`: host-enforced bounds on what the retry plugin may ask for.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries per provider may be at most this fraction of its recent
    /// requests (on top of `budget_min_per_sec`), so an outage cannot turn
    /// into a retry storm.
    pub budget_ratio: f64,
    /// Retries per second always allowed, whatever the ratio says.
    pub budget_min_per_sec: u32,
    /// Hard cap on attempts for one request, first attempt included.
    pub max_attempts_cap: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            budget_ratio: 0.2,
            budget_min_per_sec: 10,
            max_attempts_cap: 10,
        }
    }
}

// === [breaker] ===

/// `[breaker]`: every provider's circuit breaker (a provider's own
/// `breaker = { ... }` replaces single fields). Outcomes of the last
/// `window_ms` are counted; the breaker opens when at least `min_calls`
/// attempts ended and at least `failure_ratio` of them failed (connect
/// error, timeout, 5xx; a 4xx or 429 is not the provider failing). While
/// open, attempts are refused without being sent. After `open_for_ms`,
/// `half_open_probes` attempts are let through: all succeed and it closes,
/// one fails and it opens again for twice as long, up to `max_open_for_ms`.
///
/// The defaults ride out a provider that fails half its calls (retries
/// mend those) and open on one that fails at least 80% of them: in a
/// window of 20 attempts, a 50% failure rate reaches 80% with a
/// probability of about 0.6%, and in a busy window (hundreds of
/// attempts) practically never.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Fraction of failed attempts in the window that opens the circuit.
    pub failure_ratio: f64,
    /// Attempts the window must hold before the ratio counts.
    pub min_calls: u32,
    /// Length of the rolling window (counted in ten slots); at least 100.
    pub window_ms: u64,
    /// Probe attempts let through when half-open; all must succeed.
    pub half_open_probes: u32,
    /// First cooldown after opening.
    pub open_for_ms: u64,
    /// Cap of the cooldown, which doubles each time a probe fails.
    pub max_open_for_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_ratio: 0.8,
            min_calls: 20,
            window_ms: 10_000,
            half_open_probes: 3,
            open_for_ms: 5_000,
            max_open_for_ms: 60_000,
        }
    }
}

/// A provider's `breaker = { ... }`: the `[breaker]` fields it replaces.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerOverride {
    pub failure_ratio: Option<f64>,
    pub min_calls: Option<u32>,
    pub window_ms: Option<u64>,
    pub half_open_probes: Option<u32>,
    pub open_for_ms: Option<u64>,
    pub max_open_for_ms: Option<u64>,
}

impl BreakerOverride {
    /// `base` with the fields set here replaced.
    pub fn apply(&self, base: &BreakerConfig) -> BreakerConfig {
        BreakerConfig {
            failure_ratio: self.failure_ratio.unwrap_or(base.failure_ratio),
            min_calls: self.min_calls.unwrap_or(base.min_calls),
            window_ms: self.window_ms.unwrap_or(base.window_ms),
            half_open_probes: self.half_open_probes.unwrap_or(base.half_open_probes),
            open_for_ms: self.open_for_ms.unwrap_or(base.open_for_ms),
            max_open_for_ms: self.max_open_for_ms.unwrap_or(base.max_open_for_ms),
        }
    }
}

// === [semantic] ===

/// How prompts are embedded for the semantic cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbedderKind {
    /// An OpenAI-compatible `/embeddings` endpoint of a configured provider.
    #[default]
    Openai,
    /// A model on local disk (`path`).
    Local,
}

/// `[semantic]`: the semantic cache.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SemanticConfig {
    pub enabled: bool,
    pub embedder: EmbedderKind,
    /// Embedding model name (`openai`) or label (`local`).
    pub model: String,
    /// Provider that serves embeddings (`openai` embedder); unset: the
    /// provider `model` routes to.
    pub provider: Option<String>,
    /// Model files directory (`local` embedder). [`super::Config::load`]
    /// makes a relative path relative to the config file's directory.
    pub path: Option<PathBuf>,
    /// Requested embedding size; unset: the model's native size.
    pub dimensions: Option<u32>,
    /// Bound on the memory the semantic cache holds on this node, in bytes:
    /// recent embeddings (an eighth) and the index's mirrored namespaces
    /// (with, when the state is in-process, their entries and answers).
    pub max_bytes: u64,
    /// Namespaces kept in memory at once; the least recently used is
    /// dropped to make room.
    pub max_namespaces: u32,
    /// A client re-sending the exact request this many seconds or less
    /// after it was answered by a semantic hit contradicts that hit (the
    /// entry then requires a higher score); 0: only the explicit
    /// `x-sluice-semantic-feedback: wrong` header does.
    pub reask_window_seconds: u64,
    /// How far above a contradicted score an entry's requirement rises.
    pub learn_margin: f32,
}

impl Default for SemanticConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            embedder: EmbedderKind::Openai,
            model: "text-embedding-3-small".to_owned(),
            provider: None,
            path: None,
            dimensions: None,
            max_bytes: 64 * MIB,
            max_namespaces: 4096,
            reask_window_seconds: 120,
            learn_margin: 0.01,
        }
    }
}

// === [telemetry] ===

/// `[telemetry]`: logging and traces.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// A `tracing` filter: `info`, `sluice=debug,info`, …
    pub log_level: String,
    /// `[telemetry.otlp]`: OTLP trace export, off without an endpoint.
    pub otlp: crate::telemetry::OtlpConfig,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            otlp: crate::telemetry::OtlpConfig::default(),
        }
    }
}
