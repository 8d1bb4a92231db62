//! [`PluginRuntime`]: inspects components and loads them as [`Plugin`]s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, InstancePre, Linker};

use super::engine::{self, EngineSettings, EpochTicker};
use super::imports;
use super::instance::{Init, Plugin};
use super::preinit;
use super::recent::RecentRequests;
use super::sandbox::{HostEnv, Limits, PluginMetrics, SlowLanes, StoreData};
use super::{WIT_PACKAGE, WIT_VERSION};
use crate::policy::Slot;
use crate::state::State;

/// Why a component cannot serve as a plugin. Each message is one line an
/// operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("not a WebAssembly binary")]
    NotWasm,
    #[error(
        "a core WebAssembly module, not a component: turn it into a component (e.g. `sluice plugin build`, or `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("invalid component: {0}")]
    Invalid(String),
    #[error(
        "exports none of the sluice:policy@{WIT_VERSION} plugin interfaces (cache-key, semantic, throttle, retry, route); it exports: {found}"
    )]
    NoPolicyExports { found: String },
    #[error("built against {found}; this host provides {WIT_PACKAGE}@{WIT_VERSION}")]
    WrongVersion { found: String },
    #[error("does not provide {wanted}; it provides: {found}")]
    MissingKind { wanted: Slot, found: String },
    #[error("imports something this host does not provide: {0}")]
    Imports(String),
    #[error("init rejected its config: {0}")]
    InitRejected(String),
    #[error("init failed: {0}")]
    InitFailed(String),
    #[error("limits: {0}")]
    Limits(String),
}

/// What `sluice plugin check` reports about a component.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentInfo {
    /// blake3 of the component bytes.
    pub hash: String,
    pub size_bytes: usize,
    pub kinds: Vec<Slot>,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// Time to compile (or load from the cache).
    pub compile_time: Duration,
    pub from_cache: bool,
}

/// How to load one plugin.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The slot it serves: names its state namespace and labels its logs
    /// and metrics.
    pub slot: Slot,
    /// The kinds it must provide; empty accepts whatever it exports.
    pub require: Vec<Slot>,
    /// Its config, handed to `init` and the `config` import.
    pub config: serde_json::Value,
    pub limits: Limits,
    /// Run `init` once and start instances from the snapshot it leaves,
    /// where that is safe (the default); false keeps `init` on every
    /// instance (benchmarks compare the two).
    pub preinit: bool,
}

impl LoadOptions {
    /// Options for `slot` with an empty config and default limits.
    pub fn new(slot: Slot) -> Self {
        Self {
            slot,
            require: Vec::new(),
            config: serde_json::Value::Object(Default::default()),
            limits: Limits::default(),
            preinit: true,
        }
    }
}

/// The one engine, linker and compiled-code cache every plugin shares.
#[derive(Clone)]
pub struct PluginRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<StoreData>,
    cache_dir: Option<PathBuf>,
    max_memory_bytes: usize,
    state: State,
    metrics: Option<Arc<dyn PluginMetrics>>,
    slow_lanes: SlowLanes,
    recent: RecentRequests,
    /// One pre-initialisation at a time: a burst of new versions queues its
    /// compilations instead of running them all at once.
    preinit_turn: tokio::sync::Semaphore,
    ticker: EpochTicker,
}

impl PluginRuntime {
    /// Builds the engine and linker and starts the epoch ticker. Slow calls
    /// get one turn per worker of the tokio runtime this is called on.
    pub fn new(
        settings: EngineSettings,
        state: State,
        metrics: Option<Arc<dyn PluginMetrics>>,
    ) -> anyhow::Result<Self> {
        let engine = engine::build_engine(&settings)?;
        let mut linker = Linker::new(&engine);
        imports::add_to_linker(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking host imports: {e}"))?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                cache_dir: settings.cache_dir,
                max_memory_bytes: settings.max_memory_bytes,
                state,
                metrics,
                slow_lanes: SlowLanes::per_worker(),
                recent: RecentRequests::default(),
                preinit_turn: tokio::sync::Semaphore::new(1),
                ticker,
            }),
        })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The clock guests are time-sliced by: every store keeps it ticking.
    pub(crate) fn ticker(&self) -> &EpochTicker {
        &self.inner.ticker
    }

    pub(crate) fn slow_lanes(&self) -> &SlowLanes {
        &self.inner.slow_lanes
    }

    pub(crate) fn recent(&self) -> &RecentRequests {
        &self.inner.recent
    }

    /// The last few real requests `slot`'s plugins answered (credentials
    /// stripped), oldest first: samples to verify a new version against.
    pub fn recent_requests(&self, slot: Slot) -> Vec<crate::policy::PolicyRequest> {
        self.inner.recent.of(slot)
    }

    /// Compiles (or loads from cache) and describes a component without
    /// instantiating it.
    pub fn inspect(&self, wasm: &[u8]) -> Result<ComponentInfo, PluginError> {
        self.compile(wasm).map(|(_, info)| info)
    }

    fn compile(&self, wasm: &[u8]) -> Result<(Component, ComponentInfo), PluginError> {
        check_header(wasm)?;
        let started = Instant::now();
        let (component, from_cache) =
            engine::compile_cached(&self.inner.engine, self.inner.cache_dir.as_deref(), wasm)
                .map_err(|e| PluginError::Invalid(first_line(&e)))?;
        let compile_time = started.elapsed();
        let ty = component.component_type();
        let engine = &self.inner.engine;
        let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
        let exports: Vec<(String, bool)> = ty
            .exports(engine)
            .map(|(n, item)| {
                (
                    n.to_string(),
                    matches!(item.ty, ComponentItem::ComponentInstance(_)),
                )
            })
            .collect();
        let kinds = kinds_from_exports(&exports)?;
        Ok((
            component,
            ComponentInfo {
                hash: blake3::hash(wasm).to_hex().to_string(),
                size_bytes: wasm.len(),
                kinds,
                imports,
                exports: exports.into_iter().map(|(n, _)| n).collect(),
                compile_time,
                from_cache,
            },
        ))
    }

    /// Compiles, links and initialises a plugin: everything that can fail
    /// happens here, off the request path, so a loaded [`Plugin`] is usable.
    pub async fn load(&self, wasm: &[u8], opts: LoadOptions) -> Result<Arc<Plugin>, PluginError> {
        if opts.limits.memory_bytes > self.inner.max_memory_bytes {
            return Err(PluginError::Limits(format!(
                "memory limit {} bytes exceeds the engine's maximum of {} bytes",
                opts.limits.memory_bytes, self.inner.max_memory_bytes
            )));
        }
        if opts.limits.deadline.is_zero() {
            return Err(PluginError::Limits("deadline must be > 0".into()));
        }
        // Compilation is CPU-bound (tens of ms): keep it off the async workers.
        let this = self.clone();
        let bytes = wasm.to_vec();
        let (component, info) = tokio::task::spawn_blocking(move || this.compile(&bytes))
            .await
            .map_err(|e| PluginError::Invalid(format!("compiler task failed: {e}")))??;
        for wanted in &opts.require {
            if !info.kinds.contains(wanted) {
                return Err(PluginError::MissingKind {
                    wanted: *wanted,
                    found: join_kinds(&info.kinds),
                });
            }
        }
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PluginError::Imports(first_line(&e)))?;
        let env = Arc::new(HostEnv {
            namespace: format!("plugin:{}", opts.slot),
            slot: opts.slot,
            config_json: opts.config.to_string().into(),
            state: self.inner.state.clone(),
            metrics: self.inner.metrics.clone(),
        });
        let plugin = Plugin::new(self.clone(), pre, info, env, opts.limits)
            .map_err(|e| PluginError::Invalid(first_line(&e)))?;
        plugin.smoke_test().await?;
        let plugin = Arc::new(plugin);
        match (plugin.init(), opts.preinit) {
            (Init::Pending, false) => plugin.end_preinit(None),
            (Init::Pending, true) => self.spawn_preinit(&plugin, wasm),
            _ => {}
        }
        Ok(plugin)
    }

    /// Pre-initialises `plugin` in the background (see [`preinit`]).
    fn spawn_preinit(&self, plugin: &Arc<Plugin>, wasm: &[u8]) {
        // After the load, so a new version serves at once: its calls run
        // `init` until the snapshot is linked (two more compilations). A
        // version dropped before its turn (replaced, or loaded only to be
        // verified) is skipped.
        let this = self.clone();
        let (waiting, wasm) = (Arc::downgrade(plugin), wasm.to_vec());
        tokio::spawn(async move {
            // The semaphore is never closed.
            let Ok(_turn) = this.inner.preinit_turn.acquire().await else {
                return;
            };
            let Some(plugin) = waiting.upgrade() else {
                return;
            };
            let snapshot = this.preinitialise(&plugin, &wasm).await;
            plugin.end_preinit(snapshot);
        });
    }

    /// Runs `plugin`'s `init` once and links the snapshot it leaves (see
    /// [`preinit`]); None when no snapshot can be taken, and `init` keeps
    /// running on every instance.
    async fn preinitialise(&self, plugin: &Plugin, wasm: &[u8]) -> Option<InstancePre<StoreData>> {
        let inner = &self.inner;
        let slot = plugin.slot();
        let outcome = preinit::preinitialise(
            &inner.engine,
            inner.cache_dir.as_deref(),
            wasm,
            plugin.env().clone(),
            &plugin.limits(),
            &inner.slow_lanes,
            &inner.ticker,
        )
        .await;
        let snapshot = match outcome {
            preinit::Preinit::Snapshot(bytes) => bytes,
            preinit::Preinit::PerInstance(why) => {
                tracing::debug!(%slot, reason = %why, "init runs on every instance");
                return None;
            }
            // The load ran the same `init` on the same config and it agreed:
            // only an `init` that is not a function of its config gets here.
            preinit::Preinit::Rejected(msg) => {
                tracing::warn!(%slot, reason = %msg, "init refused its config once loaded; it runs on every instance");
                return None;
            }
        };
        let this = self.clone();
        let compiled = tokio::task::spawn_blocking(move || {
            engine::compile_cached(
                &this.inner.engine,
                this.inner.cache_dir.as_deref(),
                &snapshot,
            )
        })
        .await;
        let linked = match compiled {
            Ok(Ok((component, _))) => inner.linker.instantiate_pre(&component),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(wasmtime::format_err!("compiler task failed: {e}")),
        };
        linked
            .inspect_err(|e| {
                tracing::warn!(%slot, error = %first_line(e), "plugin snapshot unusable; init runs on every instance");
            })
            .ok()
    }
}

/// Distinguishes random bytes and core modules from components by the
/// binary header, for a precise message.
fn check_header(wasm: &[u8]) -> Result<(), PluginError> {
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err(PluginError::NotWasm);
    }
    // Layer 0 is a core module, layer 1 a component.
    match (wasm[6], wasm[7]) {
        (0, 0) => Err(PluginError::CoreModule),
        _ => Ok(()),
    }
}

fn kinds_from_exports(exports: &[(String, bool)]) -> Result<Vec<Slot>, PluginError> {
    let mut kinds = Vec::new();
    let mut other_version = None;
    let prefix = format!("{WIT_PACKAGE}/");
    for (name, is_instance) in exports {
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let (iface, version) = rest.split_once('@').unwrap_or((rest, ""));
        let Some(kind) = Slot::parse(iface) else {
            continue;
        };
        if version != WIT_VERSION || !is_instance {
            other_version = Some(format!("{WIT_PACKAGE}@{version}"));
            continue;
        }
        kinds.push(kind);
    }
    if kinds.is_empty() {
        if let Some(found) = other_version {
            return Err(PluginError::WrongVersion { found });
        }
        let found = if exports.is_empty() {
            "nothing".to_string()
        } else {
            exports
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(PluginError::NoPolicyExports { found });
    }
    kinds.sort();
    Ok(kinds)
}

fn join_kinds(kinds: &[Slot]) -> String {
    kinds
        .iter()
        .map(|k| k.interface())
        .collect::<Vec<_>>()
        .join(", ")
}

/// wasmtime errors carry long context chains; the first line (plus the root
/// cause) is what an operator needs.
pub(crate) fn first_line(e: &wasmtime::Error) -> String {
    let mut msg = e.to_string();
    if let Some(root) = e.chain().last() {
        let root = root.to_string();
        if root != msg {
            msg = format!("{msg}: {root}");
        }
    }
    msg.lines().next().unwrap_or_default().to_string()
}
