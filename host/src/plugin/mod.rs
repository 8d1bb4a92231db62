//! The plugin runtime: loads policy components, sandboxes them and calls them.
//!
//! - [`PluginRuntime`] owns the one wasmtime engine, the linker with every
//!   host import, the epoch ticker and the compiled-code cache. It inspects
//!   and loads components.
//! - [`Plugin`] is one loaded, initialised component: every call runs in a
//!   fresh instance under a CPU deadline and a memory cap; a trap, deadline
//!   or out-of-memory fails that call only ([`CallError`]).
//! - [`SlotPlugin`] holds the plugin currently serving a slot and its
//!   failure policy; a new version swaps in atomically.
//!
//! The WIT-generated types stay in `bindings` and `convert`; everything
//! outside this module speaks [`crate::policy`].

mod bindings;
pub mod builtin;
mod convert;
mod engine;
mod imports;
mod instance;
mod output;
mod preinit;
mod recent;
mod runtime;
mod sandbox;
mod slot;

pub(crate) use convert::request as request_view;
pub use engine::{EngineSettings, default_cache_dir};
pub use instance::{CallError, Init, Plugin, PluginStats};
pub use recent::{RECENT_PER_SLOT, SAMPLE_ID_PREFIX};
pub use runtime::{ComponentInfo, LoadOptions, PluginError, PluginRuntime};
pub use sandbox::{Access, Limits, PluginMetrics, import_access};
pub use slot::SlotPlugin;

/// The WIT package every plugin is built against.
pub const WIT_PACKAGE: &str = "sluice:policy";
/// The version of [`WIT_PACKAGE`] this host provides.
pub const WIT_VERSION: &str = "0.1.0";
