//! sluice: an edge gateway for AI-provider traffic whose policies are
//! sandboxed WebAssembly components.
//!
//! Where things live, following a request:
//! - [`server`]: the HTTP routes and `run(listener, gateway, shutdown)`;
//!   [`gateway`]: everything a request needs, built once from the config.
//! - [`pipeline`]: one function per phase over a typed `RequestCtx`
//!   (auth, parse, throttle, exact cache, semantic cache, coalescing,
//!   upstream with retries, respond); [`error`]: every failure and its
//!   provider-shaped response.
//! - [`api`]: the OpenAI and Anthropic wire formats (parsing, SSE, usage,
//!   stream/JSON conversion, error bodies).
//! - [`policy`]: the policy vocabulary in plain Rust shared by the pipeline
//!   and the plugin runtime; [`plugin`]: the wasmtime runtime that loads,
//!   sandboxes and calls policy components, and the host imports they use.
//! - [`cache`]: the exact cache (in-process LRU in front of a shared tier);
//!   [`semantic`]: embedders and the shared semantic index; [`coalesce`] and
//!   [`coalesce_shared`]: one upstream call for identical requests in flight,
//!   on one node and across nodes.
//! - [`upstream`]: provider clients, key pools, circuit breakers, the retry
//!   budget.
//! - [`state`]: shared state (memory or Redis / Redis Cluster): key-value and
//!   the atomic rate-limit charge, one Lua algorithm for both backends.
//! - [`reload`], [`releases`], [`admin`], [`admin_client`]: hot reload,
//!   fleet-wide plugin releases through the state, the admin API and the CLI
//!   side of it.
//! - [`config`]: the TOML config, defaults and validation; [`telemetry`]:
//!   metrics and logging.
//! - [`cli`] (the `sluice` command), [`plugin_cli`] (`plugin check|test`),
//!   [`authoring`] (`plugin new|build` in Rust, C, Python, JS), [`mock`] (a
//!   mock provider), [`loadgen`] (`sluice bench`).

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
