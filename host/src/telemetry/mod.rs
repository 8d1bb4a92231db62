//! Telemetry: the Prometheus metrics registry ([`Metrics`]), process-wide
//! logging ([`init_logging`]) and a gateway's OTLP traces ([`traces`]).
//!
//! Metric label values are bounded: routes, statuses, outcomes and slots are
//! small enums ([`ApiRoute`], [`CacheOutcome`], [`UpstreamOutcome`],
//! [`PluginCallResult`]); provider and tenant labels are config names only.

mod connections;
mod edge;
mod jobs;
mod keys;
mod labels;
mod logging;
mod metrics;
mod plugin_metrics;
mod spend;
#[cfg(test)]
mod tests;
pub mod traces;

pub use connections::ConnectionCounts;
pub use jobs::JobMetrics;
pub use keys::KeyMetrics;
pub use labels::{
    ApiRoute, CacheOutcome, CircuitState, KeyAuthOutcome, PluginCallResult, TokenKind,
    UpstreamOutcome,
};
pub use logging::{
    LogFormat, MAX_LOG_FIELD_CHARS, TelemetryError, init_logging, log_safe, parse_log_filter,
};
pub use metrics::{CONTENT_TYPE, Metrics, OTHER_LABEL};
pub use plugin_metrics::MAX_NAMES_PER_SLOT;
pub use spend::{MAX_MODEL_LABELS, SpendMetrics};
pub use traces::{OtlpConfig, Traces};
