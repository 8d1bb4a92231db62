//! Process-wide logging through `tracing-subscriber`.

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// How log lines are written (`[telemetry] log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, for terminals.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Errors from setting up telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The level is not a valid `tracing` filter.
    #[error("invalid log level {level:?}: {source}")]
    InvalidLogLevel {
        level: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
}

/// Parses a log level / filter (`info`, `sluice=debug,warn`).
pub fn parse_log_filter(level: &str) -> Result<EnvFilter, TelemetryError> {
    EnvFilter::try_new(level).map_err(|source| TelemetryError::InvalidLogLevel {
        level: level.to_owned(),
        source,
    })
}

/// Installs the global subscriber writing to stderr (stdout stays free for
/// CLI output). Idempotent: when a subscriber is already installed (a second
/// call, or tests running in one process) the first one stays and this
/// returns `Ok`. Only an invalid `level` is an error.
pub fn init_logging(format: LogFormat, level: &str) -> Result<(), TelemetryError> {
    let filter = parse_log_filter(level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `try_init` fails only when a global subscriber (or `log` logger) is
    // already set, which is exactly the idempotent case.
    let _already_set = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_idempotent_and_rejects_bad_levels() {
        init_logging(LogFormat::Json, "info").unwrap();
        init_logging(LogFormat::Text, "sluice=debug,warn").unwrap();
        let err = init_logging(LogFormat::Text, "sluice=loud").unwrap_err();
        assert!(err.to_string().contains("sluice=loud"), "{err}");
        tracing::info!("still logging after repeated init");
    }
}
