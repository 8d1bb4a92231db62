//! [`SlotPlugin`]: the plugin serving one slot, and what a failed call means.

use std::sync::Arc;

use parking_lot::RwLock;

use super::instance::Plugin;
use crate::policy::{FailurePolicy, Slot};

/// The plugin currently serving a slot. Swapping installs a new version
/// atomically; requests already holding the old `Arc<Plugin>` finish on it.
pub struct SlotPlugin {
    slot: Slot,
    failure: FailurePolicy,
    current: RwLock<Arc<Plugin>>,
}

impl SlotPlugin {
    /// A slot served by `plugin`.
    pub fn new(slot: Slot, failure: FailurePolicy, plugin: Arc<Plugin>) -> Self {
        Self {
            slot,
            failure,
            current: RwLock::new(plugin),
        }
    }

    /// The slot it serves.
    pub fn slot(&self) -> Slot {
        self.slot
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
