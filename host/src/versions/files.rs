//! Plugin files named in the config, and the config file itself: checked
//! when the OS reports a change to one of them ([`super::events`]), and in
//! any case every [`FILE_POLL`]; what changed is reloaded.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use super::events::FileEvents;
use super::load::plugin_bytes;
use super::{Origin, PluginVersions, origin_of};
use crate::config::{Config, PluginSource};
use crate::policy::Slot;

/// How often plugin files and the config file are checked for changes
/// without a change event (the fallback; events are seen at once).
pub const FILE_POLL: Duration = Duration::from_millis(50);

/// A file's last seen (mtime, size, hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FileStamp {
    pub(super) modified: Option<SystemTime>,
    pub(super) len: u64,
    pub(super) hash: Option<blake3::Hash>,
}

/// The file's mtime and size, and its hash when `hash` is set (or the
/// file cannot be read: then both are "missing").
pub(super) fn stamp(path: &Path, hash: bool) -> FileStamp {
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
/// [`PluginVersions::watch_config_file`] named it) on every change event and every
/// [`FILE_POLL`]. It stops when `versions` is dropped.
pub fn spawn_watcher(versions: &Arc<PluginVersions>) -> tokio::task::JoinHandle<()> {
    let weak: Weak<PluginVersions> = Arc::downgrade(versions);
    tokio::spawn(async move {
        let mut events = FileEvents::default();
        let mut tick = tokio::time::interval(FILE_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = events.changed() => {}
            }
            let Some(versions) = weak.upgrade() else {
                return;
            };
            check_config_file(&versions).await;
            for slot in Slot::ALL {
                check_plugin_file(&versions, slot).await;
            }
            // After the checks: a config change may name other files.
            events.watch(&watched_files(&versions));
        }
    })
}

/// The plugin files named by the slots' configs, and the config file.
fn watched_files(reloader: &PluginVersions) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = reloader
        .records
        .iter()
        .filter_map(|(_, slot)| match &slot.lock().config.source {
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
async fn check_plugin_file(reloader: &PluginVersions, kind: Slot) {
    let (path, old) = {
        let slot = reloader.records[kind].lock();
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
        let mut slot = reloader.records[kind].lock();
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
                slot = kind.name(),
                file = %path.display(),
                "plugin file changed, but the slot follows a fleet release; not reloading (roll the release back to return to the file)"
            );
        }
        Ok(bytes) => {
            let _ = reloader.install(&guard, &bytes, None, origin).await;
        }
    }
}

/// Re-reads the config file when it changed and reloads every slot whose
/// source, config or limits differ from what it serves with.
async fn check_config_file(reloader: &PluginVersions) {
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
    for kind in Slot::ALL {
        let new = config.plugins.slot(kind).clone();
        let old = reloader.slot_config(kind);
        if new.failure != old.failure {
            tracing::warn!(
                slot = kind.name(),
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
            reloader.records[kind].lock().config = new;
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
        let previous = std::mem::replace(&mut reloader.records[kind].lock().config, new);
        if reloader.install(&guard, &wasm, None, origin).await.is_err() {
            reloader.records[kind].lock().config = previous;
        } else if let PluginSource::Path(p) = &reloader.slot_config(kind).source {
            reloader.records[kind].lock().file = Some(stamp(p, true));
        }
    }
}
