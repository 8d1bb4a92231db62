//! `sluice plugin`: author, inspect and release policy plugins.
//!
//! - `new`, `build` (`project`, feature `authoring`): scaffold and build a
//!   policy project in Rust, Python, C or JavaScript.
//! - `check`, `test` ([`inspect`]): is a file a usable plugin; run one call
//!   in the sandbox.
//! - `push`, `rollback`, `status` ([`release`]): fleet releases through a
//!   node's admin API or straight to Redis.

mod input;
mod inspect;
#[cfg(feature = "authoring")]
mod project;
mod release;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::PluginLimits;

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Scaffold a policy project (Rust, Python, C or JavaScript) that builds as generated.
    #[cfg(feature = "authoring")]
    New(project::NewArgs),
    /// Build a policy project to a component and check it.
    #[cfg(feature = "authoring")]
    Build(project::BuildArgs),
    /// Write a project's generated bindings for editors and its own tests
    /// (Python: bindings/, C: build/bindings/).
    #[cfg(feature = "authoring")]
    Bindings(project::BuildArgs),
    /// Check that a file is a usable plugin: kinds, imports, size, compile time.
    Check {
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run one call in the sandbox and print the decision as JSON; what the
    /// plugin prints or raises goes to stderr (`guest: ...`).
    Test {
        file: PathBuf,
        /// Plugin kind to call: cache-key, semantic, throttle, retry, route.
        #[arg(long)]
        kind: String,
        /// A request (JSON; fields in docs/plugin-test.md, unknown ones
        /// refused); default: a sample request of the kind.
        #[arg(long, conflicts_with = "scenario")]
        input: Option<PathBuf>,
        /// A JSON array of requests run in order; a throttle's buckets are
        /// charged in memory as the gateway would, so refusals show as 429.
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// The plugin's config (JSON file); default `{}`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Deadline of each call, `init` included, in milliseconds (a slot's
        /// `deadline_ms`). Python and JavaScript components start their
        /// interpreter in every fresh instance: give them 500.
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
    Push(release::PushArgs),
    /// Return a slot to its previous release on every node.
    Rollback(release::RollbackArgs),
    /// Show the release book and whether the node still finds the one it follows.
    Status(release::StatusArgs),
}

/// Runs one `sluice plugin` verb.
pub(super) async fn run(command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        #[cfg(feature = "authoring")]
        PluginCommand::New(args) => project::new(args),
        #[cfg(feature = "authoring")]
        PluginCommand::Build(args) => project::build(args).await,
        #[cfg(feature = "authoring")]
        PluginCommand::Bindings(args) => project::bindings(args),
        PluginCommand::Check { file, json } => inspect::check(&file, json).await,
        PluginCommand::Test {
            file,
            kind,
            input,
            scenario,
            config,
            deadline_ms,
            memory_mib,
        } => {
            let limits = PluginLimits {
                deadline_ms,
                memory_mib,
                ..PluginLimits::default()
            };
            inspect::test(inspect::TestArgs {
                file: &file,
                kind: &kind,
                input: input.as_deref(),
                scenario: scenario.as_deref(),
                config: config.as_deref(),
                limits: &limits,
            })
            .await
        }
        PluginCommand::Push(args) => release::push(args).await,
        PluginCommand::Rollback(args) => release::rollback(args).await,
        PluginCommand::Status(args) => release::status(args).await,
    }
}
