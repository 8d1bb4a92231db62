//! Plugin versions at run time: a new version of a slot's plugin is loaded
//! (compiled, linked, `init`-ed with its config and smoke-tested) off the
//! request path, then swapped in atomically; requests in flight keep the
//! version they pinned. A version that fails any step is refused: logged,
//! counted in `sluice_plugin_reloads_total{result="refused"}`, kept in a
//! short list the admin API shows, and the previous version keeps serving.
//!
//! [`Reloader`] remembers, per slot, where the serving version came from and
//! the slot config in effect; [`spawn_file_watcher`] checks the plugin files
//! named in the config (and, once told, the config file itself) when the OS
//! reports a change to one of them, and in any case every [`FILE_POLL`], and
//! reloads what changed. Fleet releases ([`crate::releases`]) install through
//! the same [`Reloader`].

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde_json::Value;

use crate::config::{Config, PluginSlotConfig, PluginSource, PluginsConfig};
use crate::gateway::{Gateway, plugin_bytes, slot_limits};
use crate::plugin::{Kind, LoadOptions, Plugin};

mod events;

/// How often plugin files and the config file are checked for changes
/// without a change event (the fallback; events are seen at once).
pub const FILE_POLL: Duration = Duration::from_millis(50);
/// How many refused versions the admin API remembers.
const MAX_REFUSED: usize = 20;

/// Where the version serving a slot came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The reference plugin compiled into the binary.
    Builtin,
    /// A component file named in the config.
    File(PathBuf),
    /// A fleet release, by its sequence number.
    Release(u64),
    /// An upload to the admin API not yet published (seen only in refusals).
    Upload,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Builtin => f.write_str("builtin"),
            Origin::File(p) => write!(f, "file:{}", p.display()),
            Origin::Release(seq) => write!(f, "release:{seq}"),
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
    release_seen: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    hash: Option<blake3::Hash>,
}

/// Per-slot versions, refused versions and reload counters of one node.
pub struct Reloader {
    slots: [Mutex<SlotRecord>; 4],
    /// Serialises installs per slot, so two reloads of one slot cannot end
    /// with the older one serving.
    locks: [tokio::sync::Mutex<()>; 4],
    refused: Mutex<VecDeque<Refusal>>,
    config_file: Mutex<Option<(PathBuf, Option<FileStamp>)>>,
    registry: Registry,
    reloads: Family<ReloadLabels, Counter>,
}

/// Proof that the caller holds a slot's install lock.
pub struct SlotGuard<'a> {
    kind: Kind,
    _guard: tokio::sync::MutexGuard<'a, ()>,
}

fn index(kind: Kind) -> usize {
    match kind {
        Kind::Throttle => 0,
        Kind::CacheKey => 1,
        Kind::Semantic => 2,
        Kind::Retry => 3,
    }
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

impl Reloader {
    /// Records the slots as loaded from `plugins` at startup.
    pub fn new(plugins: &PluginsConfig) -> Self {
        let record = |kind: Kind| {
            let cfg = plugin_config(plugins, kind).clone();
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
        };
        let reloads = Family::<ReloadLabels, Counter>::default();
        let mut registry = Registry::default();
        registry.register(
            "sluice_plugin_reloads",
            "Plugin versions installed (ok) or refused, by slot",
            reloads.clone(),
        );
        Self {
            slots: Kind::ALL.map(record),
            locks: Default::default(),
            refused: Mutex::new(VecDeque::new()),
            config_file: Mutex::new(None),
            registry,
            reloads,
        }
    }

    /// Takes the install lock of `kind`'s slot.
    pub async fn lock(&self, kind: Kind) -> SlotGuard<'_> {
        SlotGuard {
            kind,
            _guard: self.locks[index(kind)].lock().await,
        }
    }

    /// Where the version serving `kind` came from.
    pub fn origin(&self, kind: Kind) -> Origin {
        self.slots[index(kind)].lock().origin.clone()
    }

    /// The slot config in effect for `kind`.
    pub fn slot_config(&self, kind: Kind) -> PluginSlotConfig {
        self.slots[index(kind)].lock().config.clone()
    }

    /// The refused versions, newest first.
    pub fn refused(&self) -> Vec<Refusal> {
        self.refused.lock().iter().rev().cloned().collect()
    }

    /// The fleet release this node last tried for the slot.
    pub fn release_seen(&self, kind: Kind) -> Option<u64> {
        self.slots[index(kind)].lock().release_seen
    }

    /// Notes that the release `seq` (None: no release) was tried for a slot.
    pub fn set_release_seen(&self, guard: &SlotGuard<'_>, seq: Option<u64>) {
        self.slots[index(guard.kind)].lock().release_seen = seq;
    }

    /// Also watch `path` (the config file) and reload a slot whose
    /// `[plugins.<slot>]` source, config or limits change.
    pub fn watch_config_file(&self, path: &Path) {
        *self.config_file.lock() = Some((path.to_owned(), Some(stamp(path, false))));
    }

    /// Appends the reload counters to an OpenMetrics text (before `# EOF`).
    pub fn encode_metrics(&self, out: &mut String) -> std::fmt::Result {
        prometheus_client::encoding::text::encode_registry(out, &self.registry)
    }

    /// Loads `wasm` for `kind` with `config` (None: the slot's config) and
    /// the slot's limits, without installing it. A failure is recorded as a
    /// refusal of `origin`.
    pub async fn prepare(
        &self,
        gw: &Gateway,
        guard: &SlotGuard<'_>,
        wasm: &[u8],
        config: Option<Value>,
        origin: &Origin,
    ) -> Result<Arc<Plugin>, Refusal> {
        let kind = guard.kind;
        let slot_cfg = self.slot_config(kind);
        let limits = slot_limits(&slot_cfg);
        let opts = LoadOptions {
            slot: kind.slot().to_string(),
            require: vec![kind],
            config: config.unwrap_or(slot_cfg.config),
            limits,
        };
        gw.runtime
            .load(wasm, opts)
            .await
            .map_err(|e| self.refuse(kind, wasm, origin, e.to_string()))
    }

    /// Installs a prepared plugin: from now on new requests use it.
    pub fn commit(&self, gw: &Gateway, guard: &SlotGuard<'_>, plugin: Arc<Plugin>, origin: Origin) {
        let kind = guard.kind;
        tracing::info!(
            slot = kind.slot(),
            hash = %plugin.info().hash,
            source = %origin,
            "plugin version installed"
        );
        gw.plugins.slot(kind).swap(plugin);
        self.slots[index(kind)].lock().origin = origin;
        self.count(kind, "ok");
    }

    /// [`Self::prepare`] then [`Self::commit`].
    pub async fn install(
        &self,
        gw: &Gateway,
        guard: &SlotGuard<'_>,
        wasm: &[u8],
        config: Option<Value>,
        origin: Origin,
    ) -> Result<Installed, Refusal> {
        let started = Instant::now();
        let plugin = self.prepare(gw, guard, wasm, config, &origin).await?;
        let installed = Installed {
            slot: guard.kind.slot().to_string(),
            hash: plugin.info().hash.clone(),
            source: origin.clone(),
            load_ms: started.elapsed().as_secs_f64() * 1e3,
        };
        self.commit(gw, guard, plugin, origin);
        Ok(installed)
    }

    /// Reinstalls the slot from its config source (file or built-in), e.g.
    /// when a rollback leaves the slot without a fleet release.
    pub async fn install_configured(
        &self,
        gw: &Gateway,
        guard: &SlotGuard<'_>,
    ) -> Result<Installed, Refusal> {
        let kind = guard.kind;
        let cfg = self.slot_config(kind);
        let origin = origin_of(&cfg.source);
        let wasm = plugin_bytes(kind, &cfg.source)
            .map_err(|e| self.refuse(kind, &[], &origin, format!("{e:#}")))?;
        if let PluginSource::Path(p) = &cfg.source {
            self.slots[index(kind)].lock().file = Some(stamp(p, true));
        }
        self.install(gw, guard, &wasm, None, origin).await
    }

    fn refuse(&self, kind: Kind, wasm: &[u8], origin: &Origin, reason: String) -> Refusal {
        let refusal = Refusal {
            slot: kind.slot().to_string(),
            hash: blake3::hash(wasm).to_hex().to_string(),
            source: origin.clone(),
            reason,
            at_ms: unix_ms(SystemTime::now()),
        };
        tracing::warn!(
            slot = kind.slot(),
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
        self.count(kind, "refused");
        refusal
    }

    fn count(&self, kind: Kind, result: &'static str) {
        self.reloads
            .get_or_create(&ReloadLabels {
                slot: kind.slot().to_string(),
                result,
            })
            .inc();
    }
}

fn plugin_config(plugins: &PluginsConfig, kind: Kind) -> &PluginSlotConfig {
    match kind {
        Kind::Throttle => &plugins.throttle,
        Kind::CacheKey => &plugins.cache_key,
        Kind::Semantic => &plugins.semantic,
        Kind::Retry => &plugins.retry,
    }
}

/// The file's mtime and size, and its hash when `hash` is set (or the
/// file cannot be read: then both are "missing").
fn stamp(path: &Path, hash: bool) -> FileStamp {
    let meta = std::fs::metadata(path).ok();
    FileStamp {
        modified: meta.as_ref().and_then(|m| m.modified().ok()),
        len: meta.as_ref().map_or(0, |m| m.len()),
        hash: if hash {
            std::fs::read(path).ok().map(|b| blake3::hash(&b))
        } else {
            None
        },
    }
}

/// Starts the task that checks plugin files (and the config file, once
/// [`Reloader::watch_config_file`] named it) on every change event and every
/// [`FILE_POLL`]. It stops when the gateway is dropped.
pub fn spawn_file_watcher(gw: &Arc<Gateway>) -> tokio::task::JoinHandle<()> {
    let weak: Weak<Gateway> = Arc::downgrade(gw);
    tokio::spawn(async move {
        let mut events = events::FileEvents::default();
        let mut tick = tokio::time::interval(FILE_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = events.changed() => {}
            }
            let Some(gw) = weak.upgrade() else {
                return;
            };
            check_config_file(&gw).await;
            for kind in Kind::ALL {
                check_plugin_file(&gw, kind).await;
            }
            // After the checks: a config change may name other files.
            events.watch(&watched_files(&gw.reload));
        }
    })
}

/// The plugin files named by the slots' configs, and the config file.
fn watched_files(reloader: &Reloader) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = reloader
        .slots
        .iter()
        .filter_map(|slot| match &slot.lock().config.source {
            PluginSource::Path(p) => Some(p.clone()),
            PluginSource::Builtin => None,
        })
        .collect();
    if let Some((path, _)) = reloader.config_file.lock().as_ref() {
        files.push(path.clone());
    }
    files
}

/// Reloads `kind` when its plugin file's bytes changed.
async fn check_plugin_file(gw: &Gateway, kind: Kind) {
    let reloader = &gw.reload;
    let (path, old) = {
        let slot = reloader.slots[index(kind)].lock();
        match &slot.config.source {
            PluginSource::Path(p) => (p.clone(), slot.file.clone()),
            PluginSource::Builtin => return,
        }
    };
    let quick = stamp(&path, false);
    if old
        .as_ref()
        .is_some_and(|o| o.modified == quick.modified && o.len == quick.len)
    {
        return;
    }
    let guard = reloader.lock(kind).await;
    // Read once: the hash and the installed bytes are the same bytes.
    let bytes = std::fs::read(&path);
    let hash = bytes.as_ref().ok().map(|b| blake3::hash(b));
    let changed = old.as_ref().is_none_or(|o| o.hash != hash);
    let follows_release = {
        let mut slot = reloader.slots[index(kind)].lock();
        slot.file = Some(FileStamp { hash, ..quick });
        matches!(slot.origin, Origin::Release(_))
    };
    if !changed {
        return;
    }
    let origin = Origin::File(path.clone());
    match bytes {
        Err(e) => {
            reloader.refuse(
                kind,
                &[],
                &origin,
                format!("reading {}: {e}", path.display()),
            );
        }
        Ok(_) if follows_release => {
            tracing::warn!(
                slot = kind.slot(),
                file = %path.display(),
                "plugin file changed, but the slot follows a fleet release; not reloading (roll the release back to return to the file)"
            );
        }
        Ok(bytes) => {
            let _ = reloader.install(gw, &guard, &bytes, None, origin).await;
        }
    }
}

/// Re-reads the config file when it changed and reloads every slot whose
/// source, config or limits differ from what it serves with.
async fn check_config_file(gw: &Gateway) {
    let reloader = &gw.reload;
    let path = {
        let mut watched = reloader.config_file.lock();
        let Some((path, old)) = watched.as_mut() else {
            return;
        };
        let now = stamp(path, false);
        if old.as_ref() == Some(&now) {
            return;
        }
        *old = Some(now);
        path.clone()
    };
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "config changed but does not load; plugins unchanged");
            return;
        }
    };
    for kind in Kind::ALL {
        let new = plugin_config(&config.plugins, kind).clone();
        let old = reloader.slot_config(kind);
        if new.failure != old.failure {
            tracing::warn!(
                slot = kind.slot(),
                "a plugin's failure policy changes only with a restart"
            );
        }
        if new.source == old.source && new.config == old.config && new.limits == old.limits {
            continue;
        }
        let guard = reloader.lock(kind).await;
        if matches!(reloader.origin(kind), Origin::Release(_)) {
            // The slot follows a fleet release: keep serving it, but use the
            // new config once it returns to its configured plugin.
            reloader.slots[index(kind)].lock().config = new;
            continue;
        }
        let origin = origin_of(&new.source);
        let wasm = match plugin_bytes(kind, &new.source) {
            Ok(w) => w,
            Err(e) => {
                reloader.refuse(kind, &[], &origin, format!("{e:#}"));
                continue;
            }
        };
        // Load with the new limits and config; keep the old ones if refused.
        let previous = std::mem::replace(&mut reloader.slots[index(kind)].lock().config, new);
        if reloader
            .install(gw, &guard, &wasm, None, origin)
            .await
            .is_err()
        {
            reloader.slots[index(kind)].lock().config = previous;
        } else if let PluginSource::Path(p) = &reloader.slot_config(kind).source {
            reloader.slots[index(kind)].lock().file = Some(stamp(p, true));
        }
    }
}
