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

pub mod admin;
pub mod admin_client;
pub mod api;
pub mod authoring;
pub mod cache;
pub mod cli;
pub mod coalesce;
pub mod coalesce_shared;
pub mod config;
pub mod error;
pub mod gateway;
pub mod loadgen;
pub mod mock;
pub mod pipeline;
pub mod plugin;
pub mod plugin_cli;
pub mod policy;
pub mod releases;
pub mod reload;
pub mod semantic;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod upstream;
