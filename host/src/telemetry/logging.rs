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

/// Longest value a log field carries; the rest is cut (with `…`).
pub const MAX_LOG_FIELD_CHARS: usize = 256;

/// `value` made safe for one log line in any format: control characters
/// (newlines above all, which would let a client forge a line) escaped as
/// `\n`, `\u{1b}`, …, and cut after [`MAX_LOG_FIELD_CHARS`] characters.
/// Client-controlled values (model names, tenant ids from keys, error
/// messages quoting input, upstream bodies) go through this before logging.
pub fn log_safe(value: &str) -> std::borrow::Cow<'_, str> {
    let clean =
        value.chars().count() <= MAX_LOG_FIELD_CHARS && !value.chars().any(char::is_control);
    if clean {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len().min(4 * MAX_LOG_FIELD_CHARS));
    for (i, c) in value.chars().enumerate() {
        if i == MAX_LOG_FIELD_CHARS {
            out.push('…');
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_fields_cannot_forge_lines_or_grow_without_bound() {
        assert_eq!(log_safe("gpt-4o"), "gpt-4o");
        let forged = log_safe("gpt-4o\n2026-01-01T00:00:00Z INFO forged\u{1b}[31m");
        assert!(
            !forged.contains('\n') && !forged.contains('\u{1b}'),
            "{forged}"
        );
        assert!(
            forged.contains("\\n2026") && forged.contains("\\u{1b}"),
            "{forged}"
        );
        let megabyte = "x".repeat(1 << 20);
        let long = log_safe(&megabyte);
        assert_eq!(long.chars().count(), MAX_LOG_FIELD_CHARS + 1);
    }

    #[test]
    fn init_is_idempotent_and_rejects_bad_levels() {
        init_logging(LogFormat::Json, "info").unwrap();
        init_logging(LogFormat::Text, "sluice=debug,warn").unwrap();
        let err = init_logging(LogFormat::Text, "sluice=loud").unwrap_err();
        assert!(err.to_string().contains("sluice=loud"), "{err}");
        tracing::info!("still logging after repeated init");
    }
}
