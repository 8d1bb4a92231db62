//! sluice: an edge gateway for AI-provider traffic whose policies are
//! sandboxed WebAssembly components.
//!
//! Where things live:
//! - [`policy`]: the policy vocabulary in plain Rust (requests, buckets,
//!   decisions) shared by the pipeline and the plugin runtime.
//! - [`plugin`]: the wasmtime runtime that loads, sandboxes and calls policy
//!   components, and the host imports they may use.
//! - [`state`]: shared state (memory or Redis): key-value, the atomic
//!   rate-limit charge.
//! - [`config`]: the TOML config, its defaults and validation.
//! - [`telemetry`]: metrics registry and logging.

pub mod api;
#[cfg(feature = "wip-plugin")]
pub mod cache;
#[cfg(feature = "wip-plugin")]
pub mod coalesce;
pub mod config;
pub mod loadgen;
pub mod mock;
#[cfg(feature = "wip-plugin")]
pub mod error;
#[cfg(feature = "wip-plugin")]
pub mod gateway;
#[cfg(feature = "wip-plugin")]
pub mod pipeline;
#[cfg(feature = "wip-plugin")]
pub mod plugin;
#[cfg(feature = "wip-plugin")]
pub mod plugin_cli;
#[cfg(feature = "wip-plugin")]
pub mod server;
#[cfg(feature = "wip-plugin")]
pub mod cli;
pub mod policy;
pub mod state;
pub mod telemetry;
pub mod upstream;
