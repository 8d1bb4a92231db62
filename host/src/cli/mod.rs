//! The `sluice` command line, one file per verb:
//!
//! - `serve` ([`serve`]): the gateway; starts the plugin-version watchers.
//! - `mock` ([`mock`]): a mock OpenAI + Anthropic provider.
//! - `plugin new|build|check|test|push|rollback` ([`plugin`]).
//! - `bench` ([`bench`]): the load generator (the `sluice-loadgen` crate).
//! - `bench-floor` ([`floor`]): a bare pass-through proxy on sluice's HTTP
//!   stack, the floor the benchmarks compare sluice with.
//! - `eval semantic` ([`eval`]): precision and recall of the semantic cache.
//! - `spend` ([`spend`]): spend records from a node's admin API, as a table.
//! - `keys create|list|show|update|revoke|rotate` ([`keys`]): virtual keys
//!   through a node's admin API.

mod bench;
pub mod eval;
mod floor;
mod keys;
mod mock;
pub mod plugin;
mod serve;
pub mod spend;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// sluice: an edge gateway for AI-provider traffic with WebAssembly policies.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// Config file (TOML). Without one, the embedded default runs.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen address, overriding `server.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Run a mock OpenAI + Anthropic provider (for demos, tests, benchmarks).
    Mock(mock::MockArgs),
    /// Work with policy plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Measure the gateway's overhead against a direct baseline.
    Bench(bench::BenchArgs),
    /// A bare pass-through proxy on sluice's HTTP server and client (no
    /// parsing, no plugins): the floor for `bench/peers.sh`.
    BenchFloor(floor::FloorArgs),
    /// Evaluate a cache on a labelled set (`sluice eval semantic`).
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Print spend records (`GET /admin/spend`) as a table.
    Spend(spend::SpendArgs),
    /// Manage virtual keys through a node's admin API.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { config, listen } => serve::serve(config, listen).await,
        Command::Mock(args) => mock::mock(args).await,
        Command::Plugin(cmd) => plugin::run(cmd).await,
        Command::Bench(args) => bench::run_cli(args).await,
        Command::BenchFloor(args) => floor::floor(args).await,
        Command::Eval(cmd) => eval::run_cli(cmd).await,
        Command::Spend(args) => spend::run(args).await,
        Command::Keys(cmd) => keys::run(cmd).await,
    }
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
