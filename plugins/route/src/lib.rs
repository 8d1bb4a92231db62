//! The reference route plugin: the cheapest healthy candidate first, a
//! provider whose circuit is open last. The decisions live in [`logic`];
//! this file only adapts them to the WIT.

pub mod logic;

use sluice_plugin_common::ConfigCell;
use sluice_plugin_common::types::Request;

use crate::exports::sluice::policy::lifecycle::Guest as Lifecycle;
use crate::exports::sluice::policy::route::{Candidate, Choice, Guest as Route};

wit_bindgen::generate!({
    world: "route-plugin",
    path: "../../wit",
    additional_derives: [PartialEq],
    with: {
        "sluice:policy/types@0.1.0": sluice_plugin_common::bindings::sluice::policy::types,
        "sluice:policy/state@0.1.0": sluice_plugin_common::bindings::sluice::policy::state,
        "sluice:policy/limits@0.1.0": sluice_plugin_common::bindings::sluice::policy::limits,
        "sluice:policy/config@0.1.0": sluice_plugin_common::bindings::sluice::policy::config,
        "sluice:policy/log@0.1.0": sluice_plugin_common::bindings::sluice::policy::log,
        "sluice:policy/metrics@0.1.0": sluice_plugin_common::bindings::sluice::policy::metrics,
        "sluice:policy/clock@0.1.0": sluice_plugin_common::bindings::sluice::policy::clock,
    },
});

static CONFIG: ConfigCell<logic::Config> = ConfigCell::new();

struct Plugin;

impl Lifecycle for Plugin {
    fn init(config: String) -> Result<(), String> {
        CONFIG.init(&config)
    }
}

impl Route for Plugin {
    fn order(req: Request, candidates: Vec<Candidate>) -> Vec<Choice> {
        logic::order(&CONFIG.get(), &req, &candidates)
    }
}

// Only the component exports these symbols: their WIT names are not valid in
// a native linker's version script, and native builds exist for tests only.
#[cfg(target_arch = "wasm32")]
export!(Plugin);
