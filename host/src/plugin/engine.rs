//! The one wasmtime engine: its sandbox configuration, the epoch ticker that
//! time-slices guests and enforces their deadlines, and the on-disk cache of
//! compiled components.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// One epoch tick: the longest a guest runs before it yields its thread,
/// and the precision of deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Engine-wide sandbox sizing.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Most plugin instances alive at once (the pooling allocator's size).
    pub max_instances: u32,
    /// Largest memory any one instance may be configured for, in bytes.
    pub max_memory_bytes: usize,
    /// Where compiled components are cached; None disables the disk cache.
    pub cache_dir: Option<PathBuf>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            max_instances: 256,
            max_memory_bytes: 64 << 20,
            cache_dir: default_cache_dir(),
        }
    }
}

/// `$SLUICE_CACHE_DIR`, else `$XDG_CACHE_HOME/sluice`, else `~/.cache/sluice`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("sluice"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("sluice"))
}

pub(crate) fn build_engine(settings: &EngineSettings) -> anyhow::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    let instances = settings.max_instances.max(1);
    pool.total_component_instances(instances)
        // A Rust wasip2 guest is one core module plus a few adapter shims.
        .total_core_instances(instances * 8)
        .total_memories(instances * 2)
        .total_tables(instances * 8)
        .total_stacks(instances)
        .max_memory_size(settings.max_memory_bytes)
        // A freed slot is reset by finding the pages the instance wrote
        // (PAGEMAP_SCAN, Linux 6.7+) and restoring just those, up to 2 MiB;
        // the pages stay mapped, so the next instance takes no page faults
        // and no TLB shootdowns. Without the ioctl the resident part is
        // memset whole, so it is kept small. One page covers a plugin's
        // tables, which a memset resets faster than a scan.
        .linear_memory_keep_resident(if PoolingAllocationConfig::is_pagemap_scan_available() {
            2 << 20
        } else {
            256 << 10
        })
        .pagemap_scan(wasmtime::Enabled::Auto)
        .table_keep_resident(4 << 10)
        .async_stack_keep_resident(64 << 10);

    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .wasm_component_model(true)
        .max_wasm_stack(256 << 10)
        .async_stack_size(512 << 10)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(|e| anyhow::anyhow!("wasmtime engine: {e}"))
}

/// Increments the engine's epoch every [`EPOCH_TICK`] while any store is
/// alive (see [`Ticking`]), and parks its thread after [`IDLE_BEFORE_PARK`]
/// with none, so an idle node does not wake a thousand times a second.
pub(crate) struct EpochTicker {
    shared: Arc<TickerShared>,
    thread: Option<JoinHandle<()>>,
}

/// How long the ticker keeps ticking with no store alive before it parks:
/// long enough that steady traffic never pays the wake-up.
const IDLE_BEFORE_PARK: Duration = Duration::from_millis(100);

struct TickerShared {
    /// Stores alive now (the [`Ticking`] guards).
    alive: AtomicUsize,
    /// The thread is parked, or about to: the next guard unparks it.
    parked: AtomicBool,
    stop: AtomicBool,
    /// Ticks made so far.
    ticks: AtomicU64,
    thread: OnceLock<Thread>,
}

impl TickerShared {
    fn wake(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

/// Held by every store for its whole life: while one is alive the epoch
/// advances, so its guest is time-sliced and meets its deadline.
pub(crate) struct Ticking(Arc<TickerShared>);

impl Drop for Ticking {
    fn drop(&mut self) {
        self.0.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine) -> Self {
        Self::start_parking_after(engine, IDLE_BEFORE_PARK)
    }

    fn start_parking_after(engine: Engine, idle_before_park: Duration) -> Self {
        let shared = Arc::new(TickerShared {
            alive: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
            thread: OnceLock::new(),
        });
        let state = shared.clone();
        let idle_limit = idle_before_park.as_nanos() / EPOCH_TICK.as_nanos();
        let thread = std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                // Set here, before any park, so a guard never finds it unset
                // while the thread sleeps.
                state.thread.get_or_init(std::thread::current);
                let mut idle = 0;
                while !state.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                    state.ticks.fetch_add(1, Ordering::Relaxed);
                    if state.alive.load(Ordering::SeqCst) > 0 {
                        idle = 0;
                        continue;
                    }
                    idle += 1;
                    if idle < idle_limit {
                        continue;
                    }
                    // Announce the park, then look again: a guard taken in
                    // between either is seen here or sees the flag and
                    // unparks (both sides are SeqCst).
                    state.parked.store(true, Ordering::SeqCst);
                    while state.alive.load(Ordering::SeqCst) == 0
                        && !state.stop.load(Ordering::SeqCst)
                    {
                        std::thread::park();
                    }
                    state.parked.store(false, Ordering::SeqCst);
                    idle = 0;
                }
            })
            .expect("spawning the epoch ticker thread");
        Self {
            shared,
            thread: Some(thread),
        }
    }

    /// A guard that keeps the epoch advancing until dropped.
    pub(crate) fn ticking(&self) -> Ticking {
        let shared = &self.shared;
        if shared.alive.fetch_add(1, Ordering::SeqCst) == 0 && shared.parked.load(Ordering::SeqCst)
        {
            shared.wake();
        }
        Ticking(shared.clone())
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Content hash of a component for this engine: the wasm bytes plus the
/// engine's compatibility hash, so an artifact is only ever loaded by an
/// engine that could have written it.
pub(crate) fn artifact_key(engine: &Engine, wasm: &[u8]) -> blake3::Hash {
    struct Blake(blake3::Hasher);
    impl Hasher for Blake {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut h = Blake(blake3::Hasher::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    h.0.update(b"\0sluice-artifact-v1\0");
    h.0.update(wasm);
    h.0.finalize()
}

/// Compiles `wasm`, or loads the artifact a previous run cached for it.
/// Returns the component and whether it came from the cache.
pub(crate) fn compile_cached(
    engine: &Engine,
    cache_dir: Option<&Path>,
    wasm: &[u8],
) -> wasmtime::Result<(Component, bool)> {
    let Some(dir) = cache_dir else {
        return Ok((Component::new(engine, wasm)?, false));
    };
    let path = dir.join(format!("{}.cwasm", artifact_key(engine, wasm).to_hex()));
    if path.exists() {
        // SAFETY: the file name is keyed by the engine's compatibility hash and
        // the source's content hash, and only this function writes there.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok((component, true)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "discarding unreadable compiled plugin")
            }
        }
    }
    let component = Component::new(engine, wasm)?;
    if let Err(e) = store_artifact(&path, &component) {
        tracing::warn!(path = %path.display(), error = %e, "could not cache compiled plugin");
    }
    Ok((component, false))
}

fn store_artifact(path: &Path, component: &Component) -> anyhow::Result<()> {
    let bytes = component
        .serialize()
        .map_err(|e| anyhow::anyhow!("serialize: {e}"))?;
    write_atomically(path, &bytes)
}

/// Writes `bytes` to a temporary file beside `path`, then renames it, so a
/// concurrent reader never sees half a file.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("artifact"),
        uuid::Uuid::new_v4()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Waits (yielding, at most 20 s) until `what` holds.
    fn until(what: impl Fn() -> bool, waiting_for: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !what() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {waiting_for}"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn the_ticker_parks_while_no_store_is_alive_and_wakes_for_one() {
        let engine = Engine::new(Config::new().epoch_interruption(true)).unwrap();
        let ticker = EpochTicker::start_parking_after(engine, Duration::from_millis(5));
        let shared = ticker.shared.clone();
        let parked = || shared.parked.load(Ordering::SeqCst);
        let ticks = || shared.ticks.load(Ordering::Relaxed);
        until(parked, "the idle ticker to park");

        let from = ticks();
        let store = ticker.ticking();
        until(|| ticks() >= from + 3, "ticks while a store is alive");
        assert!(!parked(), "a ticker ticking for a store is not parked");

        // A second store while the first lives does not disturb it.
        let second = ticker.ticking();
        drop(store);
        let from = ticks();
        until(|| ticks() >= from + 3, "ticks while the second store lives");
        drop(second);
        until(parked, "the ticker to park once the last store is gone");

        let from = ticks();
        let again = ticker.ticking();
        until(|| ticks() >= from + 3, "ticks again for a new store");
        drop(again);
        drop(ticker);
    }
}
