//! `sluice-soak BASE_URL RATE SECONDS [PERIOD_SECONDS]`: an open-loop mix of
//! hits, misses, streams, rate-limited requests, embeddings and semantic
//! paraphrases against one gateway (see `sluice_loadgen::soak`), printing
//! one JSON line per period. bench/soak.sh runs it. Environment:
//! SOAK_MODEL (gpt-4o-mini), SOAK_EMBEDDING_MODEL (text-embedding-3-small),
//! SOAK_LIMITED_KEY (sk-soak-limited), SOAK_MAX_IN_FLIGHT (256).

use std::time::Duration;

use sluice_loadgen::soak::{self, SoakOptions};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [base, rate, secs] => Some((base, rate.parse::<f64>().ok(), secs.parse().ok(), Some(60))),
        [base, rate, secs, period] => Some((
            base,
            rate.parse().ok(),
            secs.parse().ok(),
            period.parse().ok(),
        )),
        _ => None,
    };
    let Some((base, Some(rate), Some(secs), Some(period))) = parsed else {
        eprintln!("usage: sluice-soak BASE_URL RATE SECONDS [PERIOD_SECONDS]");
        return std::process::ExitCode::FAILURE;
    };
    if !base.starts_with("http://127.0.0.1:") || rate <= 0.0 {
        eprintln!("sluice-soak: BASE_URL must be http://127.0.0.1:PORT and RATE positive");
        return std::process::ExitCode::FAILURE;
    }
    let opts = SoakOptions {
        base: base.trim_end_matches('/').to_owned(),
        rate,
        duration: Duration::from_secs(secs),
        period: Duration::from_secs(period),
        model: env_or("SOAK_MODEL", "gpt-4o-mini"),
        embedding_model: env_or("SOAK_EMBEDDING_MODEL", "text-embedding-3-small"),
        limited_key: env_or("SOAK_LIMITED_KEY", "sk-soak-limited"),
        max_in_flight: env_or("SOAK_MAX_IN_FLIGHT", "256").parse().unwrap_or(256),
        timeout: Duration::from_secs(30),
    };
    soak::run(opts, |minute| {
        println!(
            "{}",
            serde_json::to_string(minute).expect("report serialises")
        );
    })
    .await;
    std::process::ExitCode::SUCCESS
}
