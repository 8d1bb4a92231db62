//! Host imports: the capabilities a plugin may use. One module per WIT
//! interface, each with its own `add_to_linker`.

mod clock;
mod config;
mod limits;
mod log;
mod metrics;
mod state;

use wasmtime::component::{HasSelf, Linker};

use super::bindings::sluice::policy as wit;
use super::sandbox::StoreData;

/// Links every sluice host interface and capability-less WASI into `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wit::types::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    state::add_to_linker(linker)?;
    limits::add_to_linker(linker)?;
    config::add_to_linker(linker)?;
    log::add_to_linker(linker)?;
    metrics::add_to_linker(linker)?;
    clock::add_to_linker(linker)?;
    Ok(())
}

impl wit::types::Host for StoreData {}

/// Whether the import named `name` (as a component type lists it, e.g.
/// `sluice:policy/state@0.1.0`) may wait on I/O: WASI and the state-backed
/// interfaces are async (see [`super::bindings`]); the rest answer at once.
pub(crate) fn may_wait(name: &str) -> bool {
    name.starts_with("wasi:")
        || name.starts_with("sluice:policy/state@")
        || name.starts_with("sluice:policy/limits@")
}

/// Longest key a plugin may use, in bytes.
const MAX_KEY_BYTES: usize = 512;
/// Largest value a plugin may store, in bytes.
const MAX_VALUE_BYTES: usize = 1 << 20;

fn check_key(key: &str) -> Result<(), wit::types::StateError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(wit::types::StateError::Invalid(format!(
            "key must be 1 to {MAX_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}

fn state_error(err: crate::state::StateError) -> wit::types::StateError {
    match err {
        crate::state::StateError::Unavailable(m) => wit::types::StateError::Unavailable(m),
        crate::state::StateError::Invalid(m) => wit::types::StateError::Invalid(m),
    }
}
