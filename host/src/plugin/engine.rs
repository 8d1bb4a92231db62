//! The one wasmtime engine: its sandbox configuration, the epoch ticker that
//! time-slices guests and enforces their deadlines, and the on-disk cache of
//! compiled components.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
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

/// Increments the engine's epoch every [`EPOCH_TICK`] until dropped.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch ticker thread");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
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
