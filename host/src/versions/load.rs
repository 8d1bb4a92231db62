//! What a slot's config names: the component's bytes (built-in or a file),
//! its sandbox limits, and the first load of it at startup.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::{PluginLimits, PluginSlotConfig, PluginSource};
use crate::plugin::{self, Limits, LoadOptions, PluginRuntime, SlotPlugin};
use crate::policy::Slot;

/// The bytes a slot's config points at: the built-in plugin or a file.
pub fn plugin_bytes(slot: Slot, source: &PluginSource) -> anyhow::Result<Vec<u8>> {
    match source {
        PluginSource::Builtin => plugin::builtin::builtin(slot)
            .map(<[u8]>::to_vec)
            .with_context(|| format!("no built-in plugin for slot {slot}")),
        PluginSource::Path(path) => {
            std::fs::read(path).with_context(|| format!("reading plugin {}", path.display()))
        }
    }
}

/// Sandbox limits from a slot's config.
pub fn slot_limits(cfg: &PluginSlotConfig) -> Limits {
    sandbox_limits(&cfg.limits)
}

/// The sandbox limits `[plugins.<slot>.limits]` describe.
pub fn sandbox_limits(limits: &PluginLimits) -> Limits {
    Limits {
        memory_bytes: (limits.memory_mib as usize) << 20,
        deadline: Duration::from_millis(limits.deadline_ms),
        max_answer_bytes: limits.max_return_bytes as usize,
    }
}

/// Loads `slot`'s configured plugin.
pub(super) async fn load_slot(
    runtime: &PluginRuntime,
    slot: Slot,
    cfg: &PluginSlotConfig,
) -> anyhow::Result<SlotPlugin> {
    let wasm = plugin_bytes(slot, &cfg.source)?;
    let opts = LoadOptions {
        slot,
        require: vec![slot],
        config: cfg.config.clone(),
        limits: slot_limits(cfg),
        preinit: true,
    };
    let plugin: Arc<_> = runtime
        .load(&wasm, opts)
        .await
        .with_context(|| format!("plugins.{slot}"))?;
    Ok(SlotPlugin::new(slot, cfg.failure, plugin))
}
