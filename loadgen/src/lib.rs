//! The load generator behind `sluice bench`: measures what the gateway adds
//! to a request by loading it and a baseline (usually the upstream mock
//! called directly) in the same run.
//!
//! - Open loop ([`Load::Rate`]): requests are due on a fixed timeline and
//!   latency runs from each request's due time, so a stalled target is
//!   charged for every request it held up (coordinated omission corrected,
//!   as in wrk2). Closed loop ([`Load::Concurrency`]): a fixed number of
//!   requests in flight, for capacity.
//! - Targets are interleaved in the same run ([`Interleave`]): alternating
//!   rounds by default, or request by request, so noise on this shared
//!   machine lands on all of them.
//! - Every run is bounded (duration, request count, or both) and starts with
//!   an unreported warm-up.
//! - Only `http://` loopback targets are accepted: this tool must never send
//!   load anywhere but the machine it runs on.
//!
//! The generator is one current-thread tokio runtime on its own OS thread
//! (plus a pacer thread in open loop), so it takes at most about one core
//! from the gateway and the mock it measures; the report says how much.
//!
//! Modules: `delay` (a TCP proxy that adds latency, to put Redis "far"),
//! `options` (what to run),
//! `schedule` (timeline arithmetic), `driver` (workers and pacer), `send`
//! (HTTP client and bodies), `record` (per-worker samples), `stats`
//! (percentiles), `report` (table and JSON), `cpu` (own CPU use).

mod cpu;
pub mod delay;
mod driver;
mod options;
mod record;
mod report;
mod schedule;
mod send;
pub mod soak;
mod stats;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub use options::{BenchOptions, DEFAULT_PATH, Interleave, Load, Target};
pub use report::{Delta, GeneratorReport, Overhead, Report, Settings, TargetReport};
pub use stats::LatencyStats;

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An option is out of range or inconsistent.
    #[error("invalid benchmark options: {0}")]
    Invalid(String),
    /// A target could not be parsed or used.
    #[error("target {target:?}: {reason}")]
    Target { target: String, reason: String },
    /// A target is not on this machine.
    #[error(
        "target {url} is not a loopback address: sluice bench only sends load to this machine (use 127.0.0.1)"
    )]
    NotLoopback { url: String },
    /// The generator's thread or runtime could not be started.
    #[error("could not start the load generator: {0}")]
    Start(#[source] std::io::Error),
    /// A generator thread panicked (a bug in the generator).
    #[error("the load generator failed unexpectedly")]
    Panicked,
}

/// Runs a benchmark and returns its report. Blocks the calling thread for
/// the length of the run (warm-up plus duration): the load runs on a
/// dedicated thread with its own single-threaded runtime, so this may be
/// called from anywhere; from async code, prefer `spawn_blocking`.
pub fn run(opts: BenchOptions) -> Result<Report, BenchError> {
    let (targets, baseline) = opts.validate()?;
    let thread = std::thread::Builder::new()
        .name("sluice-loadgen".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(BenchError::Start)?;
            let started_unix_s = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let cpu_before = cpu::thread_cpu_ns();
            let wall = Instant::now();
            let measured = rt.block_on(driver::drive(&opts, &targets))?;
            let wall_s = wall.elapsed().as_secs_f64();
            let runtime_cpu = cpu_before
                .zip(cpu::thread_cpu_ns())
                .map(|(b, a)| a.saturating_sub(b));
            let cpu_ns = match (runtime_cpu, measured.pacer_cpu_ns) {
                (Some(r), Some(p)) => Some(r + p),
                (Some(r), None) if matches!(opts.load, Load::Concurrency(_)) => Some(r),
                _ => None,
            };
            let facts = report::RunFacts {
                started_unix_s,
                wall_s,
                cpu_ns,
            };
            Ok(Report::build(&opts, &targets, baseline, measured, facts))
        })
        .map_err(BenchError::Start)?;
    thread.join().map_err(|_| BenchError::Panicked)?
}
