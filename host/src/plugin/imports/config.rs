//! `sluice:policy/config`: the plugin's own config, as JSON.

use wasmtime::component::{HasSelf, Linker};

use super::wit;
use crate::plugin::sandbox::StoreData;

pub(super) fn add_to_linker(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    wit::config::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
}

impl wit::config::Host for StoreData {
    fn get(&mut self) -> String {
        self.host.config_json.to_string()
    }
}
