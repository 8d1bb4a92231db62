//! [`PluginSlot`]: the plugin serving one slot, and what a failed call means.

use std::sync::Arc;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use super::instance::Plugin;

/// What a request sees when a plugin call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Go on as if the plugin had no opinion (no throttle charge, cache
    /// bypass, no semantic lookup, no retry).
    #[default]
    FailOpen,
    /// Answer 503.
    FailClosed,
}

/// The plugin currently serving a slot. Swapping installs a new version
/// atomically; requests already holding the old `Arc<Plugin>` finish on it.
pub struct PluginSlot {
    name: String,
    failure: FailurePolicy,
    current: RwLock<Arc<Plugin>>,
}

impl PluginSlot {
    /// A slot served by `plugin`.
    pub fn new(name: impl Into<String>, failure: FailurePolicy, plugin: Arc<Plugin>) -> Self {
        Self {
            name: name.into(),
            failure,
            current: RwLock::new(plugin),
        }
    }

    /// The slot's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its failure policy.
    pub fn failure(&self) -> FailurePolicy {
        self.failure
    }

    /// The plugin serving now; hold the Arc for the whole request so every
    /// decision of one request comes from one version.
    pub fn current(&self) -> Arc<Plugin> {
        self.current.read().clone()
    }

    /// Installs `plugin`, returning the one it replaced.
    pub fn swap(&self, plugin: Arc<Plugin>) -> Arc<Plugin> {
        std::mem::replace(&mut *self.current.write(), plugin)
    }
}
