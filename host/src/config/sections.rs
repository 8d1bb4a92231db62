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

/// `[server]`: listeners, limits and deadlines.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the API listener (`sluice serve --listen` overrides).
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    /// Largest accepted request body; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Bearer token for `/admin`; the admin API is off without one.
    pub admin_token: Option<Secret>,
    /// A separate listener for `/admin` (and nothing else); requires
    /// `admin_token`. Unset: `/admin` is served on `listen`.
    #[serde(deserialize_with = "optional_socket_addr")]
    pub admin_listen: Option<SocketAddr>,
    /// Overall deadline for one client request, retries included.
    pub request_timeout_ms: u64,
    /// How long in-flight requests may finish after a shutdown signal.
    pub shutdown_grace_ms: u64,
    /// Take the client IP from `x-forwarded-for` (only behind a trusted
    /// load balancer; otherwise clients could pick their own rate-limit key).
    pub trust_forwarded_for: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 4 * MIB as usize,
            admin_token: None,
            admin_listen: None,
            request_timeout_ms: 120_000,
            shutdown_grace_ms: 30_000,
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

    /// [`Self::request_timeout_ms`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// [`Self::shutdown_grace_ms`] as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
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
}

impl ProviderKind {
    /// The config spelling, also the default provider name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
        }
    }

    /// The public endpoint used when `base_url` is not set. OpenAI's includes
    /// `/v1`; Anthropic's does not (same convention as each vendor's SDK and
    /// its `*_BASE_URL` variable).
    pub fn default_base_url(self) -> &'static str {
        match self {
            ProviderKind::Openai => "https://api.openai.com/v1",
            ProviderKind::Anthropic => "https://api.anthropic.com",
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
    /// `anthropic-version` header (Anthropic only).
    pub anthropic_version: String,
    /// How long a key rests after the upstream rate-limits it.
    pub key_cooldown_ms: u64,
    /// `models` compiled; built by [`super::Config::prepare`].
    #[serde(skip)]
    pub(super) matcher: GlobSet,
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
            anthropic_version: "2023-06-01".to_owned(),
            key_cooldown_ms: 30_000,
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
            && self.anthropic_version == other.anthropic_version
            && self.key_cooldown_ms == other.key_cooldown_ms
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

    /// [`Self::timeout_ms`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
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
    /// When false, a request without a known virtual key gets 401.
    pub allowed: bool,
    /// The tier anonymous requests are throttled as.
    pub tier: String,
}

impl Default for AnonymousConfig {
    fn default() -> Self {
        Self {
            allowed: true,
            tier: "anonymous".to_owned(),
        }
    }
}

/// `[[tenants]]`: a client organisation and its virtual keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantConfig {
    /// Unique name; cache scope, metrics label, the `tenant` plugins see.
    pub name: String,
    /// Tier handed to plugins (`free`, `pro`, …).
    pub tier: String,
    /// Virtual keys clients send as `Bearer` tokens; each may be `env:` and
    /// belongs to exactly one tenant.
    pub keys: Vec<Secret>,
}

impl Default for TenantConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            tier: "default".to_owned(),
            keys: Vec::new(),
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
        }
    }
}

// === [telemetry] ===

/// `[telemetry]`: logging.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// A `tracing` filter: `info`, `sluice=debug,info`, …
    pub log_level: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
        }
    }
}
