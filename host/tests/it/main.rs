//! The host's integration and end-to-end tests, one binary with a module
//! per area (one link of wasmtime, cranelift and candle instead of one per
//! file). Each module starts what it needs on free ports: an in-process
//! sluice, `sluice serve` child processes, real `redis-server` processes,
//! the mock provider. Shared fixtures live in [`support`].

mod support;

mod admin_api;
mod architecture;
mod authoring_mistakes;
mod authoring_new;
mod breaker;
mod budget_slices;
mod budgets;
mod cli;
mod config_load;
mod configmap_swap;
mod dashboard;
mod deployments;
mod edge_state;
mod fleet_releases;
mod fuzz_corpora;
mod gateway_flow;
mod hardening;
mod hardening_http;
mod jobs;
mod loadgen_smoke;
mod memory_caches;
mod memory_parse;
mod mock_upstream;
mod multinode_coalescing;
mod multinode_redis;
mod otlp_traces;
mod plugin_sandbox;
mod plugin_yield;
mod polyglot_throttle;
mod polyglot_tutorial;
mod provider_kinds;
mod redis_faults_gateway;
mod reference_plugins;
mod reload_files;
mod reload_under_load;
mod route_plugin;
mod sdk_clients;
mod semantic_cache;
mod state_faults;
mod state_suite;
mod stream_failover;
mod translation;
mod upstream_client;
mod upstream_mock;
mod virtual_keys;
