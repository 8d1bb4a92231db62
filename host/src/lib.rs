//! sluice: an edge gateway for AI-provider traffic whose policies are
//! sandboxed WebAssembly components.
//!
//! Where things live, following a request (docs/architecture.md tells the
//! same story in prose):
//! - [`server`]: the HTTP routes and `run(listener, gateway, shutdown)`;
//!   [`listener`]: the accept loop under it (connection cap, header, body
//!   and idle timeouts, lingering close); [`gateway`]: everything a
//!   request needs, built once from the config.
//! - [`pipeline`]: one function per phase over a typed `RequestCtx`
//!   (auth, parse, throttle, exact cache, semantic cache, coalescing,
//!   upstream with retries, respond, store); [`error`]: every failure, who
//!   caused it, and its provider-shaped response.
//! - [`api`]: the OpenAI and Anthropic wire formats (parsing, SSE, usage,
//!   stream/JSON conversion, error bodies).
//! - [`policy`]: the policy vocabulary in plain Rust shared by the pipeline
//!   and the plugin runtime, including [`policy::Slot`], the one name of a
//!   plugin's place in the flow; [`plugin`]: the wasmtime runtime that
//!   loads, sandboxes and calls policy components, and the host imports
//!   they use; [`versions`]: which version serves each slot and how new
//!   ones arrive (file watch, config edits, fleet releases, admin pushes).
//! - [`cache`]: the exact cache (in-process LRU in front of a shared tier)
//!   and coalescing (one upstream call for identical requests in flight, on
//!   one node and across nodes); [`semantic`]: embedders and the shared
//!   semantic index.
//! - [`upstream`]: provider clients, key pools, circuit breakers, the retry
//!   budget.
//! - [`state`]: shared state (memory or Redis / Redis Cluster) behind one
//!   backend trait: key-value and the atomic rate-limit charge, one Lua
//!   algorithm for both backends, the Redis-with-local-fallback wrapper.
//! - [`jobs`]: asynchronous jobs (`Prefer: respond-async`): records,
//!   queues (Redis Streams or in process) and signed webhooks;
//!   [`job_runner`]: the workers that run them through the pipeline, and
//!   their routes.
//! - [`admin`]: the admin API; [`dashboard`]: its live page; [`keys`]: virtual keys made at run time
//!   (admin API, state, each node's in-memory table); [`config`]: the TOML config, defaults and
//!   validation; [`telemetry`]: metrics and logging.
//! - [`translate`]: OpenAI chat <-> Anthropic messages, requests, answers,
//!   errors and streams, for a provider of the other kind.
//! - [`cli`]: the `sluice` command, one module per verb (serve, mock,
//!   plugin, bench, eval); `authoring` (feature `authoring`, on by
//!   default): scaffolding and building policies
//!   in Rust, C, Python and JavaScript; [`mock`]: a mock provider. The load
//!   generator behind `sluice bench` is its own crate, `sluice-loadgen`.

pub mod admin;
pub mod alerts;
pub mod api;
#[cfg(feature = "authoring")]
pub mod authoring;
pub mod cache;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod job_runner;
pub mod jobs;
pub mod keys;
pub mod listener;
pub mod mock;
pub mod pipeline;
pub mod plugin;
pub mod policy;
pub mod scrape;
pub mod semantic;
pub mod server;
pub mod spend;
pub mod state;
pub mod telemetry;
pub mod translate;
pub mod upstream;
pub mod versions;
