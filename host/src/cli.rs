//! The `sluice` command line: `serve`, `mock`, `plugin new|build|check|test`, `bench`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

use crate::config::{Config, PluginLimits};

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
    Mock(MockArgs),
    /// Work with policy plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Measure the gateway's overhead against a direct baseline.
    Bench(crate::loadgen::BenchArgs),
    /// Evaluate a cache on a labelled set (`sluice eval semantic`).
    #[command(subcommand)]
    Eval(crate::semantic::eval::EvalCommand),
}

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

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Scaffold a policy project (Rust, Python, C or JavaScript) that builds as generated.
    New(crate::authoring::cli::NewArgs),
    /// Build a policy project to a component and check it.
    Build(crate::authoring::cli::BuildArgs),
    /// Check that a file is a usable plugin: kinds, imports, size, compile time.
    Check {
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run one call in the sandbox and print the decision as JSON.
    Test {
        file: PathBuf,
        /// Plugin kind to call: cache-key, semantic, throttle, retry.
        #[arg(long)]
        kind: String,
        /// A request: an OpenAI/Anthropic body or a policy request view (JSON).
        #[arg(long)]
        input: PathBuf,
        /// The plugin's config (JSON file); default `{}`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Deadline of each call, `init` included, in milliseconds (a slot's
        /// `deadline_ms`). Python and JavaScript components start their
        /// interpreter in every fresh instance: give them 200 or more.
        #[arg(
            long,
            value_name = "MS",
            default_value_t = PluginLimits::default().deadline_ms,
            value_parser = clap::value_parser!(u64).range(1..=60_000),
        )]
        deadline_ms: u64,
        /// Linear memory cap of the instance, in MiB (a slot's `memory_mib`).
        #[arg(
            long,
            value_name = "MIB",
            default_value_t = PluginLimits::default().memory_mib,
            value_parser = clap::value_parser!(u32).range(1..=4096),
        )]
        memory_mib: u32,
    },
    /// Release a component to a slot on every node (through a node's admin API).
    Push(crate::admin_client::PushArgs),
    /// Return a slot to its previous release on every node.
    Rollback(crate::admin_client::RollbackArgs),
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
        Command::Serve { config, listen } => serve(config, listen).await,
        Command::Mock(args) => mock(args).await,
        Command::Plugin(PluginCommand::New(args)) => crate::authoring::cli::new(args),
        Command::Plugin(PluginCommand::Build(args)) => crate::authoring::cli::build(args).await,
        Command::Plugin(PluginCommand::Check { file, json }) => {
            crate::plugin_cli::check(&file, json).await
        }
        Command::Plugin(PluginCommand::Test {
            file,
            kind,
            input,
            config,
            deadline_ms,
            memory_mib,
        }) => {
            let limits = PluginLimits {
                deadline_ms,
                memory_mib,
                ..PluginLimits::default()
            };
            crate::plugin_cli::test(&file, &kind, &input, config.as_deref(), &limits).await
        }
        Command::Plugin(PluginCommand::Push(args)) => crate::admin_client::push(args).await,
        Command::Plugin(PluginCommand::Rollback(args)) => crate::admin_client::rollback(args).await,
        Command::Bench(args) => crate::loadgen::run_cli(args).await,
        Command::Eval(cmd) => crate::semantic::eval::run_cli(cmd).await,
    }
}

fn load_config(path: Option<PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Config::load(&path).with_context(|| format!("{}", path.display())),
        None => Ok(Config::embedded_default(&|name| std::env::var(name).ok())),
    }
}

async fn serve(config: Option<PathBuf>, listen: Option<SocketAddr>) -> anyhow::Result<ExitCode> {
    let embedded = config.is_none();
    let config_path = config.clone();
    let mut config = load_config(config)?;
    crate::telemetry::init_logging(config.telemetry.log_format, &config.telemetry.log_level)
        .context("telemetry")?;
    if let Some(listen) = listen {
        config.server.listen = listen;
    }
    // With no config and no provider in the environment, serve a demo: an
    // in-process mock provider, so the first run works with no key.
    let _demo = if embedded && demo_wanted() {
        let mock = crate::mock::try_spawn(Default::default()).context("demo mock provider")?;
        tracing::warn!(
            upstream = %mock.base_url(),
            "no OPENAI_API_KEY or OPENAI_BASE_URL set: serving a built-in mock provider (demo mode)"
        );
        for p in &mut config.providers {
            if p.name == "openai" {
                p.base_url = mock.base_url();
            }
        }
        Some(mock)
    } else {
        None
    };
    let gw = crate::gateway::Gateway::build(config).await?;
    let addr = gw.config.server.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "sluice listening");
    println!("sluice listening on http://{local}");
    if let Some(path) = &config_path {
        // Changes to a plugin's `[plugins.<slot>]` reload it.
        gw.reload.watch_config_file(path);
    }
    if let Some(admin_addr) = gw.config.server.admin_listen {
        let admin = tokio::net::TcpListener::bind(admin_addr)
            .await
            .with_context(|| format!("admin API: listening on {admin_addr}"))?;
        println!("sluice admin API on http://{}", admin.local_addr()?);
        // Dies with the process; the admin API has no long requests to drain.
        tokio::spawn(crate::admin::serve(
            admin,
            gw.clone(),
            std::future::pending(),
        ));
    }
    let grace = gw.config.server.shutdown_grace();
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stopping_tx.send(());
    };
    let server = crate::server::run(listener, gw, shutdown);
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r?,
        _ = async { let _ = stopping_rx.await; tokio::time::sleep(grace).await } => {
            tracing::warn!("shutdown grace period over; closing remaining connections");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn mock(args: MockArgs) -> anyhow::Result<ExitCode> {
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
    crate::mock::serve(listener, config, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

fn demo_wanted() -> bool {
    std::env::var_os("OPENAI_API_KEY").is_none()
        && std::env::var_os("OPENAI_BASE_URL").is_none()
        && std::env::var_os("ANTHROPIC_API_KEY").is_none()
        && std::env::var_os("ANTHROPIC_BASE_URL").is_none()
}

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
