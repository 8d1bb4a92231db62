//! `sluice mock`: a mock OpenAI + Anthropic provider for demos, tests and
//! benchmarks.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context as _, bail};

/// `sluice mock` options.
#[derive(Debug, clap::Args)]
pub struct MockArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    /// Delay before every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Delay between streamed events, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub chunk_delay_ms: u64,
    /// Fraction of requests answered with a server error (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Fraction of requests answered 429 with retry-after (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub rate_limit_rate: f64,
    /// The retry-after of 429s, in seconds.
    #[arg(long, default_value_t = 1)]
    pub retry_after_s: u64,
    /// Require this API key.
    #[arg(long)]
    pub key: Option<String>,
}

pub(super) async fn mock(args: MockArgs) -> anyhow::Result<ExitCode> {
    for (name, rate) in [
        ("--error-rate", args.error_rate),
        ("--rate-limit-rate", args.rate_limit_rate),
    ] {
        if !(0.0..=1.0).contains(&rate) {
            bail!("{name} must be between 0 and 1, not {rate}");
        }
    }
    let config = crate::mock::MockConfig {
        expected_key: args.key,
        latency: std::time::Duration::from_millis(args.latency_ms),
        chunk_delay: std::time::Duration::from_millis(args.chunk_delay_ms),
        error_rate: args.error_rate,
        rate_limit_rate: args.rate_limit_rate,
        retry_after: std::time::Duration::from_secs(args.retry_after_s),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    println!(
        "sluice mock provider on http://{}/v1",
        listener.local_addr()?
    );
    crate::mock::serve(listener, config, super::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
