//! `sluice:policy/metrics`: custom metrics, exported with the plugin's slot
//! as a label.

use wasmtime::component::{HasSelf, Linker};

use super::wit;
use crate::plugin::sandbox::StoreData;

pub(super) fn add_to_linker(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    wit::metrics::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
}

impl wit::metrics::Host for StoreData {
    fn counter_add(&mut self, name: String, value: u64) {
        if let Some(m) = &self.host.metrics {
            m.counter_add(self.host.slot, &name, value);
        }
    }

    fn gauge_set(&mut self, name: String, value: f64) {
        if let Some(m) = &self.host.metrics {
            m.gauge_set(self.host.slot, &name, value);
        }
    }

    fn histogram_observe(&mut self, name: String, value: f64) {
        if let Some(m) = &self.host.metrics {
            m.histogram_observe(self.host.slot, &name, value);
        }
    }
}
