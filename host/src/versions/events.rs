//! File-change events for the reload loop: the directories holding the
//! watched files (plugin files, the config file) are watched with the OS's
//! notification API (inotify on Linux, through the `notify` crate), so a
//! change is picked up within a millisecond instead of at the next poll.
//!
//! A Kubernetes ConfigMap or Secret volume changes by swapping its `..data`
//! symlink (the watched files are symlinks through it): that rename wakes
//! the loop too.
//!
//! The poll ([`super::FILE_POLL`]) stays as the fallback: for filesystems
//! that send no events (network mounts, some container bind mounts), for
//! changes made through a symlink's target, and when the OS refuses another
//! watcher (inotify instance limits).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Watches a set of files and wakes [`FileEvents::changed`] when one of them
/// is replaced, written and closed, or removed.
#[derive(Default)]
pub(super) struct FileEvents {
    /// Created on the first non-empty [`FileEvents::watch`]; None until then
    /// or when the OS refused one (then only the poll sees changes).
    watcher: Option<notify::RecommendedWatcher>,
    /// Set once creating a watcher failed, so it is not retried every poll.
    unavailable: bool,
    wake: Arc<Notify>,
    /// The watched files, as the event paths name them (directory + name).
    files: Arc<Mutex<HashSet<PathBuf>>>,
    /// The directories being watched.
    dirs: HashSet<PathBuf>,
}

impl FileEvents {
    /// Watches exactly `files` from now on (adding and removing directory
    /// watches as the set changes).
    pub(super) fn watch(&mut self, files: &[PathBuf]) {
        let keys: HashSet<PathBuf> = files.iter().filter_map(|f| key(f)).collect();
        let dirs: HashSet<PathBuf> = keys
            .iter()
            .filter_map(|k| k.parent().map(Path::to_path_buf))
            .collect();
        // Unchanged, unless a directory could not be watched yet (it may
        // exist by now).
        if *self.files.lock() == keys && (self.dirs == dirs || self.unavailable) {
            return;
        }
        *self.files.lock() = keys;
        if self.watcher.is_none() && !dirs.is_empty() && !self.unavailable {
            self.watcher = self.start();
            self.unavailable = self.watcher.is_none();
        }
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        for gone in self.dirs.difference(&dirs) {
            let _ = watcher.unwatch(gone);
        }
        let mut watched = HashSet::new();
        for dir in dirs {
            if self.dirs.contains(&dir) {
                watched.insert(dir);
                continue;
            }
            // Watch the directory, not the file: a deploy that renames a new
            // file over the old one replaces the inode a file watch is on.
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watched.insert(dir);
                }
                Err(e) => tracing::debug!(
                    dir = %dir.display(),
                    error = %e,
                    "no change events for this directory; polling it"
                ),
            }
        }
        self.dirs = watched;
    }

    /// Resolves when a watched file changed since the last call (at once if
    /// it already did). Never resolves while nothing is watched.
    pub(super) async fn changed(&self) {
        self.wake.notified().await;
    }

    fn start(&self) -> Option<notify::RecommendedWatcher> {
        let files = self.files.clone();
        let wake = self.wake.clone();
        let handler = move |event: notify::Result<notify::Event>| {
            // An error (e.g. the event queue overflowed) loses nothing the
            // poll will not see.
            let Ok(event) = event else {
                return;
            };
            if !settles_a_file(&event.kind) {
                return;
            }
            let files = files.lock();
            if event
                .paths
                .iter()
                .any(|p| files.contains(p) || swaps_a_mounted_volume(p, &files))
            {
                // Stores a permit when nobody waits: the loop is checking
                // files and will check again.
                wake.notify_one();
            }
        };
        match notify::recommended_watcher(handler) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "no file change events; plugin and config files are polled only");
                None
            }
        }
    }
}

/// A file's identity in events: its directory (`.` for a bare name) joined
/// with its name, as the watcher reports paths below a watched directory.
fn key(file: &Path) -> Option<PathBuf> {
    let name = file.file_name()?;
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Some(dir.join(name))
}

/// The name Kubernetes (its atomic writer, for ConfigMap and Secret
/// volumes) gives the symlink to the current version of a volume's files:
/// each file is a symlink through it, and an update swaps `..data` alone.
const VOLUME_DATA_LINK: &str = "..data";

/// Whether `path` is the `..data` link of a directory holding a watched
/// file: its swap changes what every file of the volume points to.
fn swaps_a_mounted_volume(path: &Path, files: &HashSet<PathBuf>) -> bool {
    path.file_name() == Some(std::ffi::OsStr::new(VOLUME_DATA_LINK))
        && files.iter().any(|f| f.parent() == path.parent())
}

/// Whether an event can mean a file now holds its new content. Creating,
/// opening and writing come before that (a reader would see a half-written
/// file); the close after writing, a rename onto the name, or a removal
/// come after. Backends that report only writes (kqueue) are left to the poll.
fn settles_a_file(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Create(CreateKind::File) => false,
        EventKind::Modify(ModifyKind::Data(_)) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keys_match_event_paths() {
        assert_eq!(key(Path::new("a.wasm")), Some(PathBuf::from("./a.wasm")));
        assert_eq!(
            key(Path::new("/etc/sluice/a.wasm")),
            Some(PathBuf::from("/etc/sluice/a.wasm"))
        );
        assert_eq!(key(Path::new("/")), None);
    }

    async fn woken(events: &FileEvents) -> bool {
        tokio::time::timeout(Duration::from_secs(2), events.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn wakes_on_a_rename_and_a_finished_write_of_a_watched_file_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let watched = dir.path().join("plugin.wasm");
        std::fs::write(&watched, b"v1").expect("write");
        let mut events = FileEvents::default();
        events.watch(std::slice::from_ref(&watched));
        assert!(events.watcher.is_some(), "inotify is available here");

        // Another file in the same directory: no wake.
        std::fs::write(dir.path().join("other.wasm"), b"x").expect("write");
        let quiet = tokio::time::timeout(Duration::from_millis(200), events.changed()).await;
        assert!(quiet.is_err(), "woken by a file nobody watches");

        // Renamed over the watched name, as a deploy does.
        let tmp = dir.path().join("plugin.tmp");
        std::fs::write(&tmp, b"v2").expect("write");
        std::fs::rename(&tmp, &watched).expect("rename");
        assert!(woken(&events).await, "no wake after a rename");

        // Written in place.
        std::fs::write(&watched, b"v3").expect("write");
        assert!(woken(&events).await, "no wake after a write");

        // No longer watched: no wake.
        events.watch(&[]);
        while tokio::time::timeout(Duration::from_millis(100), events.changed())
            .await
            .is_ok()
        {}
        std::fs::write(&watched, b"v4").expect("write");
        let quiet = tokio::time::timeout(Duration::from_millis(200), events.changed()).await;
        assert!(quiet.is_err(), "woken by a file no longer watched");
    }

    #[tokio::test]
    async fn wakes_when_a_configmap_volume_swaps_its_data_link() {
        // The layout of a ConfigMap volume: the file is a symlink through
        // `..data`, itself a symlink to a timestamped directory.
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir(d.join("..v1")).expect("mkdir");
        std::fs::write(d.join("..v1/sluice.toml"), b"v1").expect("write");
        std::os::unix::fs::symlink("..v1", d.join("..data")).expect("symlink");
        std::os::unix::fs::symlink("..data/sluice.toml", d.join("sluice.toml")).expect("symlink");
        let mut events = FileEvents::default();
        events.watch(&[d.join("sluice.toml")]);
        assert!(events.watcher.is_some(), "inotify is available here");

        // The atomic writer's update: a new directory, a temporary link to
        // it, renamed over `..data`.
        std::fs::create_dir(d.join("..v2")).expect("mkdir");
        std::fs::write(d.join("..v2/sluice.toml"), b"v2").expect("write");
        std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).expect("symlink");
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).expect("rename");
        assert!(woken(&events).await, "no wake after the ..data swap");
        assert_eq!(std::fs::read(d.join("sluice.toml")).expect("read"), b"v2");
    }

    #[tokio::test]
    async fn a_directory_that_appears_later_is_watched_once_it_exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let watched = dir.path().join("later").join("plugin.wasm");
        let mut events = FileEvents::default();
        events.watch(std::slice::from_ref(&watched));
        assert!(events.dirs.is_empty());
        std::fs::create_dir(dir.path().join("later")).expect("mkdir");
        events.watch(std::slice::from_ref(&watched));
        std::fs::write(&watched, b"v1").expect("write");
        assert!(woken(&events).await, "no wake in a directory made later");
    }
}
