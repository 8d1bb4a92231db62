//! Pre-initialisation: a plugin's `init` runs once, after the load, and
//! the memory and globals it leaves become the starting image of every
//! later instance (a snapshot taken with `wasmtime-wizer`), so no call
//! parses its config again. Every call still gets a fresh instance; it just
//! starts from the initialised image instead of the component's own.
//!
//! Only when that changes nothing a plugin could observe: `init` must call
//! no import (it runs against imports that all trap, so a clock read, a log
//! line, a state call or WASI falls back to running `init` on every
//! instance, as the WIT contract describes), and the component must be one
//! core module (what the reference plugins are: Rust without WASI). A
//! deterministic function of the config, run once or on every instance,
//! leaves the same memory. Everything else keeps `init` per instance.

use std::path::Path;
use std::sync::Arc;

use wasmtime::component::{Component, Instance, Lift, Linker, WasmList};
use wasmtime::{Engine, Store};
use wasmtime_wizer::ComponentInstanceState;
use wasmtime_wizer::Wizer;

use super::bindings::exports::sluice::policy::lifecycle;
use super::engine::EpochTicker;
use super::instance::ExportFunc;
use super::runtime::first_line;
use super::sandbox::{CallClock, HostEnv, Limits, SlowLanes, StoreData};

/// The outcome of pre-initialising one (component, config).
#[derive(Debug)]
pub(crate) enum Preinit {
    /// The initialised component (wasm bytes): instances start where `init`
    /// left off, and the host does not call `init` again.
    Snapshot(Vec<u8>),
    /// `init` refused the config.
    Rejected(String),
    /// No snapshot (why): `init` runs on every fresh instance.
    PerInstance(String),
}

/// Runs `init` with the plugin's config once and snapshots the instance,
/// when that is safe (see the module docs). `cache_dir` keeps snapshots
/// across restarts, keyed by the component, the config and the engine.
pub(crate) async fn preinitialise(
    engine: &Engine,
    cache_dir: Option<&Path>,
    wasm: &[u8],
    env: Arc<HostEnv>,
    limits: &Limits,
    lanes: &SlowLanes,
    ticker: &EpochTicker,
) -> Preinit {
    if let Err(why) = single_core_module(wasm) {
        return Preinit::PerInstance(why);
    }
    let cached = cache_dir.map(|dir| {
        let key = snapshot_key(engine, wasm, &env.config_json);
        dir.join(format!("{}.preinit.wasm", key.to_hex()))
    });
    if let Some(path) = &cached
        && let Ok(bytes) = std::fs::read(path)
    {
        return Preinit::Snapshot(bytes);
    }
    let outcome = run_init(engine, wasm, env, limits, lanes, ticker).await;
    if let (Preinit::Snapshot(bytes), Some(path)) = (&outcome, &cached)
        && let Err(e) = super::engine::write_atomically(path, bytes)
    {
        tracing::warn!(path = %path.display(), error = %e, "could not cache a plugin snapshot");
    }
    outcome
}

/// The snapshot's cache key: what `init` saw and the engine that ran it.
fn snapshot_key(engine: &Engine, wasm: &[u8], config_json: &str) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"sluice-preinit-v1\0");
    h.update(super::engine::artifact_key(engine, wasm).as_bytes());
    h.update(config_json.as_bytes());
    h.finalize()
}

/// Wizer handles components whose core modules import no memory or table;
/// the components it can snapshot in practice hold a single core module
/// (several mean a WASI adapter or import shims, which import both). Nested
/// components without modules (wit-component's typed exports) are fine.
fn single_core_module(wasm: &[u8]) -> Result<(), String> {
    let mut modules = 0;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| format!("unreadable component: {e}"))?;
        if let wasmparser::Payload::ModuleSection { .. } = payload {
            modules += 1;
        }
    }
    match modules {
        1 => Ok(()),
        n => Err(format!("holds {n} core modules")),
    }
}

async fn run_init(
    engine: &Engine,
    wasm: &[u8],
    env: Arc<HostEnv>,
    limits: &Limits,
    lanes: &SlowLanes,
    ticker: &EpochTicker,
) -> Preinit {
    let wizer = Wizer::new();
    let (cx, instrumented) = match wizer.instrument_component(wasm) {
        Ok(c) => c,
        Err(e) => {
            return Preinit::PerInstance(format!("cannot be instrumented: {}", first_line(&e)));
        }
    };
    // Compiling is CPU-bound (tens of ms): off the async workers.
    let compiled = {
        let engine = engine.clone();
        tokio::task::spawn_blocking(move || Component::new(&engine, &instrumented)).await
    };
    let component = match compiled {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Preinit::PerInstance(format!("instrumented: {}", first_line(&e))),
        Err(e) => return Preinit::PerInstance(format!("compiler task failed: {e}")),
    };

    let clock = CallClock::start(lanes);
    let mut store = Store::new(engine, StoreData::new(env.clone(), limits, ticker));
    store.limiter(|d| &mut d.memory);
    store.epoch_deadline_callback(clock.time_slices(limits.deadline));
    store.set_epoch_deadline(1);
    // Every import traps: an `init` that calls one is not a pure function
    // of its config, and keeps running on every instance.
    let mut linker = Linker::<StoreData>::new(engine);
    if let Err(e) = linker.define_unknown_imports_as_traps(&component) {
        return Preinit::PerInstance(format!("imports: {}", first_line(&e)));
    }
    let linked = linker
        .instantiate_pre(&component)
        .and_then(|pre| Ok((ExportFunc::init(&pre)?, pre)));
    let (init, pre) = match linked {
        Ok(l) => l,
        Err(e) => return Preinit::PerInstance(format!("linking: {}", first_line(&e))),
    };
    let instance = match pre.instantiate_async(&mut store).await {
        Ok(i) => i,
        Err(e) => return Preinit::PerInstance(format!("instantiating: {}", first_line(&e))),
    };
    match call_init(&mut store, &instance, &init, &env.config_json).await {
        Ok(Ok(())) => {}
        Ok(Err(msg)) => return Preinit::Rejected(msg),
        Err(why) => return Preinit::PerInstance(why),
    }
    let mut state = InitialisedInstance {
        store: &mut store,
        instance,
        failed: None,
    };
    let snapshot = wizer.snapshot_component(&cx, &mut state).await;
    if let Some(why) = state.failed {
        return Preinit::PerInstance(why);
    }
    match snapshot {
        Ok(bytes) => Preinit::Snapshot(bytes),
        Err(e) => Preinit::PerInstance(format!("snapshot: {}", first_line(&e))),
    }
}

/// `lifecycle.init(config)`: the guest's answer, or why it could not run.
async fn call_init(
    store: &mut Store<StoreData>,
    instance: &Instance,
    init: &ExportFunc,
    config: &str,
) -> Result<Result<(), String>, String> {
    let init = init
        .typed(&mut *store, instance, lifecycle::Guest::func_init)
        .map_err(|e| format!("init: {}", first_line(&e)))?;
    match init.call_async(&mut *store, (config,)).await {
        Ok((answer,)) => Ok(answer),
        // A trap here is most often an import called from `init`.
        Err(e) => Err(format!(
            "init did not run without imports: {}",
            first_line(&e)
        )),
    }
}

/// What Wizer reads the initialised state through: the accessor functions
/// its instrumentation exported. A call that fails (a deadline, say)
/// records why, and the snapshot is discarded.
struct InitialisedInstance<'a> {
    store: &'a mut Store<StoreData>,
    instance: Instance,
    failed: Option<String>,
}

impl InitialisedInstance<'_> {
    async fn call<R, Out: Default + Send>(
        &mut self,
        instance: &str,
        func: &str,
        read: impl FnOnce(&Store<StoreData>, R) -> Out + Send,
    ) -> Out
    where
        R: Lift + Send + Sync + 'static,
    {
        if self.failed.is_some() {
            return Out::default();
        }
        match self.try_call::<R>(instance, func).await {
            Ok(r) => read(self.store, r),
            Err(why) => {
                self.failed = Some(format!("reading {instance}#{func}: {why}"));
                Out::default()
            }
        }
    }

    async fn try_call<R>(&mut self, instance: &str, func: &str) -> Result<R, String>
    where
        R: Lift + Send + Sync + 'static,
    {
        let store = &mut *self.store;
        let iface = self
            .instance
            .get_export_index(&mut *store, None, instance)
            .ok_or("no such instance")?;
        let idx = self
            .instance
            .get_export_index(&mut *store, Some(&iface), func)
            .ok_or("no such function")?;
        let f = self
            .instance
            .get_typed_func::<(), (R,)>(&mut *store, idx)
            .map_err(|e| first_line(&e))?;
        f.call_async(&mut *store, ())
            .await
            .map(|(r,)| r)
            .map_err(|e| first_line(&e))
    }
}

impl ComponentInstanceState for InitialisedInstance<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        let mut contents = Some(contents);
        self.call(instance, func, |store, list: WasmList<u8>| {
            if let Some(f) = contents.take() {
                f(list.as_le_slice(store));
            }
        })
        .await;
        // Wizer expects the bytes whatever happened; an empty read marks a
        // failure that `failed` already holds.
        if let Some(f) = contents {
            f(&[]);
        }
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func, |_, r: i32| r).await
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func, |_, r: i64| r).await
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call(instance, func, |_, r: f32| r.to_bits()).await
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call(instance, func, |_, r: f64| r.to_bits()).await
    }
}
