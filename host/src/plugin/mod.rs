//! The plugin runtime: loads policy components, sandboxes them and calls them.
//!
//! - [`PluginRuntime`] owns the one wasmtime engine, the linker with every
//!   host import, the epoch ticker and the compiled-code cache. It inspects
//!   and loads components.
//! - [`Plugin`] is one loaded, initialised component: every call runs in a
//!   fresh instance under a CPU deadline and a memory cap; a trap, deadline
//!   or out-of-memory fails that call only ([`CallError`]).
//! - [`PluginSlot`] holds the plugin currently serving a slot and its
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
mod runtime;
mod sandbox;
mod slot;

pub use engine::{EngineSettings, default_cache_dir};
pub use instance::{CallError, Plugin, PluginStats};
pub use runtime::{ComponentInfo, LoadOptions, PluginError, PluginRuntime};
pub use sandbox::{Limits, PluginMetrics};
pub use slot::{FailurePolicy, PluginSlot};

use serde::{Deserialize, Serialize};

/// A plugin kind: one exported WIT interface of `sluice:policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    CacheKey,
    Semantic,
    Throttle,
    Retry,
}

impl Kind {
    /// Every kind, in pipeline order.
    pub const ALL: [Kind; 4] = [Kind::Throttle, Kind::CacheKey, Kind::Semantic, Kind::Retry];

    /// The WIT interface name without package or version ("cache-key").
    pub fn interface(self) -> &'static str {
        match self {
            Kind::CacheKey => "cache-key",
            Kind::Semantic => "semantic",
            Kind::Throttle => "throttle",
            Kind::Retry => "retry",
        }
    }

    /// The config slot name ("cache_key").
    pub fn slot(self) -> &'static str {
        match self {
            Kind::CacheKey => "cache_key",
            Kind::Semantic => "semantic",
            Kind::Throttle => "throttle",
            Kind::Retry => "retry",
        }
    }

    /// Parses an interface name or a slot name.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.interface() == name || k.slot() == name)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.interface())
    }
}

/// The WIT package every plugin is built against.
pub const WIT_PACKAGE: &str = "sluice:policy";
/// The version of [`WIT_PACKAGE`] this host provides.
pub const WIT_VERSION: &str = "0.1.0";
