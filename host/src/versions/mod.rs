//! Plugin versions at run time: which version serves each slot, where it
//! came from, and every way a new one arrives.
//!
//! A new version of a slot's plugin is loaded (compiled, linked, `init`-ed
//! with its config and smoke-tested), verified against sample requests
//! ([`verify`]: built-in ones and the slot's recent real requests; a trap,
//! limit or invalid answer where the serving version answers refuses it)
//! off the request path, then swapped in
//! atomically; requests in flight keep the version they pinned. A version
//! that fails any step is refused: logged, counted in
//! `sluice_plugin_reloads_total{result="refused"}`, kept in a short list the
//! admin API shows, and the previous version keeps serving.
//!
//! - [`PluginVersions`] (here): the serving plugin of every slot, where it
//!   came from, the slot config in effect, refusals and reload counters.
//! - [`load`]: the bytes and sandbox limits a slot's config names.
//! - [`files`]: plugin files named in the config (and the config file
//!   itself), checked on every change event ([`events`]) and every
//!   [`files::FILE_POLL`].
//! - [`releases`]: fleet-wide releases through the shared state, and
//!   [`follow`]: whether the state still holds the release book this node
//!   follows.
//!
//! The gateway holds a [`PluginVersions`]; `sluice serve` starts its
//! watchers ([`spawn_watchers`]), the gateway does not.

mod events;
pub mod files;
pub mod follow;
pub mod load;
pub mod releases;
mod verify;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde_json::Value;

use crate::config::{PluginSlotConfig, PluginSource, PluginsConfig};
use crate::plugin::{LoadOptions, Plugin, PluginRuntime, SlotPlugin};
use crate::policy::{Slot, SlotMap};
use crate::state::State;
use files::{FileStamp, stamp};
use load::{plugin_bytes, slot_limits};

/// How many refused versions the admin API remembers.
const MAX_REFUSED: usize = 20;
/// How many version changes (installs and refusals) the dashboard shows.
const MAX_HISTORY: usize = 50;

/// Where the version serving a slot came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The reference plugin compiled into the binary.
    Builtin,
    /// A component file named in the config.
    File(PathBuf),
    /// A fleet release, by its unique id.
    Release(String),
    /// An upload to the admin API not yet published (seen only in refusals).
    Upload,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Builtin => f.write_str("builtin"),
            Origin::File(p) => write!(f, "file:{}", p.display()),
            Origin::Release(id) => write!(f, "release:{id}"),
            Origin::Upload => f.write_str("upload"),
        }
    }
}

impl Serialize for Origin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A version that was not installed, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub slot: String,
    /// blake3 of the component bytes.
    pub hash: String,
    pub source: Origin,
    /// The one-line load error.
    pub reason: String,
    /// When it was refused, in Unix milliseconds.
    pub at_ms: u64,
}

/// What serving a slot looks like after a successful install.
#[derive(Debug, Clone, Serialize)]
pub struct Installed {
    pub slot: String,
    pub hash: String,
    pub source: Origin,
    /// Load time: compile (or cache hit), link, init, smoke test.
    pub load_ms: f64,
}

/// One install or refusal of a slot's version, for the dashboard's history.
#[derive(Debug, Clone, Serialize)]
pub struct VersionEvent {
    /// Unix milliseconds.
    pub at_ms: u64,
    pub slot: String,
    /// `"installed"` or `"refused"`.
    pub event: &'static str,
    pub hash: String,
    pub source: Origin,
    /// Why a version was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    slot: String,
    result: &'static str,
}

/// What a slot is serving and what it watches.
struct SlotRecord {
    origin: Origin,
    /// The slot config in effect (source, config, limits): the file's, or
    /// the last one reloaded from a changed config file.
    config: PluginSlotConfig,
    /// The plugin file's last seen (mtime, size, hash).
    file: Option<FileStamp>,
    /// The fleet release this node last tried for the slot (installed or
    /// refused), so a refused release is not retried on every poll.
    release_seen: Option<String>,
}

/// The plugin versions of one node: what serves each slot, where it came
/// from, refused versions and reload counters.
pub struct PluginVersions {
    runtime: PluginRuntime,
    state: State,
    serving: SlotMap<SlotPlugin>,
    records: SlotMap<Mutex<SlotRecord>>,
    /// Serialises installs per slot, so two reloads of one slot cannot end
    /// with the older one serving.
    locks: SlotMap<tokio::sync::Mutex<()>>,
    refused: Mutex<VecDeque<Refusal>>,
    history: Mutex<VecDeque<VersionEvent>>,
    config_file: Mutex<Option<(PathBuf, Option<FileStamp>)>>,
    registry: Registry,
    reloads: Family<ReloadLabels, Counter>,
    /// The release book this node follows.
    book: follow::Follower,
}

/// Proof that the caller holds a slot's install lock.
pub struct SlotGuard<'a> {
    slot: Slot,
    _guard: tokio::sync::MutexGuard<'a, ()>,
}

fn origin_of(source: &PluginSource) -> Origin {
    match source {
        PluginSource::Builtin => Origin::Builtin,
        PluginSource::Path(p) => Origin::File(p.clone()),
    }
}

/// Now, in Unix milliseconds.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl PluginVersions {
    /// Loads every slot's configured plugin (the built-in one or a file).
    /// Any failure is a startup error naming the slot.
    pub async fn load(
        runtime: PluginRuntime,
        state: State,
        plugins: &PluginsConfig,
    ) -> anyhow::Result<Self> {
        let mut serving = Vec::with_capacity(Slot::COUNT);
        for slot in Slot::ALL {
            serving.push(load::load_slot(&runtime, slot, plugins.slot(slot)).await?);
        }
        let mut serving = serving.into_iter();
        let serving = SlotMap::from_fn(|_| serving.next().expect("one plugin per slot"));
        let records = SlotMap::from_fn(|slot| {
            let cfg = plugins.slot(slot).clone();
            let file = match &cfg.source {
                PluginSource::Path(p) => Some(stamp(p, true)),
                PluginSource::Builtin => None,
            };
            Mutex::new(SlotRecord {
                origin: origin_of(&cfg.source),
                config: cfg,
                file,
                release_seen: None,
            })
        });
        let reloads = Family::<ReloadLabels, Counter>::default();
        let mut registry = Registry::default();
        registry.register(
            "sluice_plugin_reloads",
            "Plugin versions installed (ok) or refused, by slot",
            reloads.clone(),
        );
        let book = follow::Follower::new(&mut registry);
        Ok(Self {
            runtime,
            state,
            serving,
            records,
            locks: SlotMap::default(),
            refused: Mutex::new(VecDeque::new()),
            history: Mutex::new(VecDeque::new()),
            config_file: Mutex::new(None),
            registry,
            reloads,
            book,
        })
    }

    /// The plugin serving `slot` and its failure policy.
    pub fn slot(&self, slot: Slot) -> &SlotPlugin {
        &self.serving[slot]
    }

    /// The runtime every version of every slot is loaded in.
    pub fn runtime(&self) -> &PluginRuntime {
        &self.runtime
    }

    /// The state releases are read from and published to.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Takes the install lock of `kind`'s slot.
    pub async fn lock(&self, kind: Slot) -> SlotGuard<'_> {
        SlotGuard {
            slot: kind,
            _guard: self.locks[kind].lock().await,
        }
    }

    /// Where the version serving `kind` came from.
    pub fn origin(&self, kind: Slot) -> Origin {
        self.records[kind].lock().origin.clone()
    }

    /// The slot config in effect for `kind`.
    pub fn slot_config(&self, kind: Slot) -> PluginSlotConfig {
        self.records[kind].lock().config.clone()
    }

    /// The refused versions, newest first.
    pub fn refused(&self) -> Vec<Refusal> {
        self.refused.lock().iter().rev().cloned().collect()
    }

    /// The last installs and refusals of every slot, newest first.
    pub fn history(&self) -> Vec<VersionEvent> {
        self.history.lock().iter().rev().cloned().collect()
    }

    fn remember(&self, event: VersionEvent) {
        let mut history = self.history.lock();
        if history.len() == MAX_HISTORY {
            history.pop_front();
        }
        history.push_back(event);
    }

    /// The fleet release this node last tried for the slot.
    pub fn release_seen(&self, kind: Slot) -> Option<String> {
        self.records[kind].lock().release_seen.clone()
    }

    /// Notes that the release `id` (None: no release) was tried for a slot.
    pub fn set_release_seen(&self, guard: &SlotGuard<'_>, id: Option<String>) {
        self.records[guard.slot].lock().release_seen = id;
    }

    /// The release book this node follows, and whether it is lost.
    pub fn book(&self) -> &follow::Follower {
        &self.book
    }

    /// Also watch `path` (the config file) and reload a slot whose
    /// `[plugins.<slot>]` source, config or limits change.
    pub fn watch_config_file(&self, path: &Path) {
        *self.config_file.lock() = Some((path.to_owned(), Some(stamp(path, false))));
    }

    /// Appends the reload counters and `sluice_release_book_lost` to an
    /// OpenMetrics text (before `# EOF`).
    pub fn encode_metrics(&self, out: &mut String) -> std::fmt::Result {
        prometheus_client::encoding::text::encode_registry(out, &self.registry)
    }

    /// Loads `wasm` for `kind` with `config` (None: the slot's config) and
    /// the slot's limits, and verifies it against sample requests (see
    /// [`verify`]), without installing it. A failure is recorded as a
    /// refusal of `origin`.
    pub async fn prepare(
        &self,
        guard: &SlotGuard<'_>,
        wasm: &[u8],
        config: Option<Value>,
        origin: &Origin,
    ) -> Result<Arc<Plugin>, Refusal> {
        let kind = guard.slot;
        let slot_cfg = self.slot_config(kind);
        let limits = slot_limits(&slot_cfg);
        let opts = LoadOptions {
            slot: kind,
            require: vec![kind],
            config: config.unwrap_or(slot_cfg.config),
            limits,
            preinit: true,
        };
        let candidate = self
            .runtime
            .load(wasm, opts)
            .await
            .map_err(|e| self.refuse(kind, wasm, origin, e.to_string()))?;
        // Before it serves: the samples the serving version answers, the
        // candidate must answer too.
        let mut samples = verify::builtin();
        samples.extend(verify::recent(self.runtime.recent_requests(kind)));
        let serving = self.serving[kind].current();
        verify::verify(&candidate, &serving, kind, &samples)
            .await
            .map_err(|reason| self.refuse(kind, wasm, origin, reason))?;
        Ok(candidate)
    }

    /// Installs a prepared plugin: from now on new requests use it.
    pub fn commit(&self, guard: &SlotGuard<'_>, plugin: Arc<Plugin>, origin: Origin) {
        let kind = guard.slot;
        tracing::info!(
            slot = kind.name(),
            hash = %plugin.info().hash,
            source = %origin,
            "plugin version installed"
        );
        self.remember(VersionEvent {
            at_ms: unix_ms(SystemTime::now()),
            slot: kind.name().to_string(),
            event: "installed",
            hash: plugin.info().hash.clone(),
            source: origin.clone(),
            reason: None,
        });
        self.serving[kind].swap(plugin);
        self.records[kind].lock().origin = origin;
        self.count(kind, "ok");
    }

    /// [`Self::prepare`] then [`Self::commit`].
    pub async fn install(
        &self,
        guard: &SlotGuard<'_>,
        wasm: &[u8],
        config: Option<Value>,
        origin: Origin,
    ) -> Result<Installed, Refusal> {
        let started = Instant::now();
        let plugin = self.prepare(guard, wasm, config, &origin).await?;
        let installed = Installed {
            slot: guard.slot.name().to_string(),
            hash: plugin.info().hash.clone(),
            source: origin.clone(),
            load_ms: started.elapsed().as_secs_f64() * 1e3,
        };
        self.commit(guard, plugin, origin);
        Ok(installed)
    }

    /// Reinstalls the slot from its config source (file or built-in), e.g.
    /// when a rollback leaves the slot without a fleet release.
    pub async fn install_configured(&self, guard: &SlotGuard<'_>) -> Result<Installed, Refusal> {
        let kind = guard.slot;
        let cfg = self.slot_config(kind);
        let origin = origin_of(&cfg.source);
        let wasm = plugin_bytes(kind, &cfg.source)
            .map_err(|e| self.refuse(kind, &[], &origin, format!("{e:#}")))?;
        if let PluginSource::Path(p) = &cfg.source {
            self.records[kind].lock().file = Some(stamp(p, true));
        }
        self.install(guard, &wasm, None, origin).await
    }

    fn refuse(&self, kind: Slot, wasm: &[u8], origin: &Origin, reason: String) -> Refusal {
        let refusal = Refusal {
            slot: kind.name().to_string(),
            hash: blake3::hash(wasm).to_hex().to_string(),
            source: origin.clone(),
            reason,
            at_ms: unix_ms(SystemTime::now()),
        };
        tracing::warn!(
            slot = kind.name(),
            hash = %refusal.hash,
            source = %origin,
            reason = %refusal.reason,
            "plugin version refused; the previous version keeps serving"
        );
        let mut refused = self.refused.lock();
        if refused.len() == MAX_REFUSED {
            refused.pop_front();
        }
        refused.push_back(refusal.clone());
        drop(refused);
        self.remember(VersionEvent {
            at_ms: refusal.at_ms,
            slot: refusal.slot.clone(),
            event: "refused",
            hash: refusal.hash.clone(),
            source: origin.clone(),
            reason: Some(refusal.reason.clone()),
        });
        self.count(kind, "refused");
        refusal
    }

    fn count(&self, kind: Slot, result: &'static str) {
        self.reloads
            .get_or_create(&ReloadLabels {
                slot: kind.name().to_string(),
                result,
            })
            .inc();
    }
}

/// Starts the watchers that bring new versions in: plugin and config files
/// ([`files::spawn_watcher`]) and fleet releases
/// ([`releases::spawn_watcher`]). They stop when `versions` is dropped.
pub fn spawn_watchers(versions: &Arc<PluginVersions>) {
    files::spawn_watcher(versions);
    releases::spawn_watcher(versions);
}
