//! `sluice:policy/log`: structured logging into the host's log, tagged with
//! the plugin's slot.

use wasmtime::component::{HasSelf, Linker};

use super::wit;
use crate::plugin::sandbox::StoreData;
use wit::log::Level;

/// Longest message kept; longer ones are cut so a plugin cannot flood the log.
const MAX_MESSAGE_BYTES: usize = 4096;
/// Most fields kept per line.
const MAX_FIELDS: usize = 16;

pub(super) fn add_to_linker(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    wit::log::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

impl wit::log::Host for StoreData {
    fn log(&mut self, level: Level, mut message: String, fields: Vec<(String, String)>) {
        truncate(&mut message, MAX_MESSAGE_BYTES);
        let mut rendered = String::new();
        for (k, v) in fields.iter().take(MAX_FIELDS) {
            rendered.push_str(k);
            rendered.push('=');
            rendered.push_str(v);
            rendered.push(' ');
        }
        truncate(&mut rendered, MAX_MESSAGE_BYTES);
        let slot = self.host.slot.name();
        let fields = rendered.trim_end();
        match level {
            Level::Trace => tracing::trace!(target: "sluice::plugin", slot, fields, "{message}"),
            Level::Debug => tracing::debug!(target: "sluice::plugin", slot, fields, "{message}"),
            Level::Info => tracing::info!(target: "sluice::plugin", slot, fields, "{message}"),
            Level::Warn => tracing::warn!(target: "sluice::plugin", slot, fields, "{message}"),
            Level::Error => tracing::error!(target: "sluice::plugin", slot, fields, "{message}"),
        }
    }
}
