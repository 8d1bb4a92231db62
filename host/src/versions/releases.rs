//! Fleet-wide plugin releases through the shared state.
//!
//! A release is a component (stored content-addressed under its blake3
//! hash, `component:<hash>` in the [`NAMESPACE`] namespace) plus an optional
//! plugin config. One document, the [`ReleaseBook`] (key `book`), says which
//! release each slot serves, keeps up to [`MAX_HISTORY`] earlier ones for
//! rollback, and carries a version number bumped by every change. Writers
//! update it with compare-and-swap, so two pushes never lose one another.
//!
//! Every node polls the book every [`POLL`]; when a slot's current release
//! changes it fetches the component, checks its hash, loads it (the
//! compiled-code cache makes that one compile per hash per machine) and
//! swaps it in through [`super::PluginVersions`]. A node that refuses a
//! release records why and keeps its previous version; a node that starts
//! later applies the book before it serves. A rollback past the first
//! release returns the slot to each node's configured plugin.
//!
//! Pushes go through a node (the admin API), which loads the new version
//! before publishing it: a version that fails to compile, link or `init`
//! is never published, so a broken push changes nothing anywhere.
//!
//! With the memory state the same book lives in-process: releases and
//! rollback work on that one node.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Origin, PluginVersions, Refusal, SlotGuard, unix_ms};
use crate::plugin::Plugin;
use crate::policy::Slot;
use crate::state::{State, StateError};

/// The state namespace of releases (plugins only reach `plugin:*`).
pub const NAMESPACE: &str = "releases";
const BOOK_KEY: &str = "book";
/// How often nodes check the book.
pub const POLL: Duration = Duration::from_millis(200);
/// Earlier releases kept per slot for rollback.
pub const MAX_HISTORY: usize = 10;
/// Compare-and-swap attempts before a concurrent writer wins.
const CAS_ATTEMPTS: usize = 20;

/// One published version of a slot's plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// The book version that published it; unique per release.
    pub seq: u64,
    /// blake3 of the component.
    pub hash: String,
    /// The plugin config it runs with; none: each node's configured one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    pub size_bytes: usize,
    pub published_at_ms: u64,
}

/// A slot's current release and the ones before it (oldest first).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlotReleases {
    pub current: Option<Release>,
    #[serde(default)]
    pub previous: Vec<Release>,
}

/// Every slot's releases, as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReleaseBook {
    pub version: u64,
    #[serde(default)]
    pub slots: BTreeMap<String, SlotReleases>,
}

impl ReleaseBook {
    /// The releases of `kind`'s slot.
    pub fn slot(&self, kind: Slot) -> Option<&SlotReleases> {
        self.slots.get(kind.name())
    }

    /// The release `kind`'s slot should serve, if any.
    pub fn current(&self, kind: Slot) -> Option<&Release> {
        self.slot(kind).and_then(|s| s.current.as_ref())
    }
}

/// Why a release could not be published, fetched or rolled back.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("state: {0}")]
    State(#[from] StateError),
    #[error("the shared state (Redis) is failing; the release was not published to the fleet: {0}")]
    Degraded(String),
    #[error("the release book in the state is unreadable: {0}")]
    Corrupt(String),
    #[error("the release book kept changing under us; try again")]
    Contended,
    #[error("slot {0} has no release to roll back")]
    NothingToRollBack(String),
    #[error("component {0} is missing from the state")]
    MissingComponent(String),
    #[error("component {0} does not match its hash")]
    HashMismatch(String),
}

fn ensure_healthy(state: &State) -> Result<(), ReleaseError> {
    if state.is_degraded() {
        let reason = state.health().last_error.unwrap_or_default();
        return Err(ReleaseError::Degraded(reason));
    }
    Ok(())
}

fn component_key(hash: &str) -> String {
    format!("component:{hash}")
}

/// Reads the book (empty when none was ever written).
pub async fn read_book(state: &State) -> Result<ReleaseBook, ReleaseError> {
    read_raw(state).await.map(|(book, _)| book)
}

async fn read_raw(state: &State) -> Result<(ReleaseBook, Option<Vec<u8>>), ReleaseError> {
    let raw = state.get(NAMESPACE, BOOK_KEY).await?;
    let book = match &raw {
        None => ReleaseBook::default(),
        Some(bytes) => {
            serde_json::from_slice(bytes).map_err(|e| ReleaseError::Corrupt(e.to_string()))?
        }
    };
    Ok((book, raw))
}

/// Applies `change` to the book atomically (compare-and-swap, retried).
async fn update_book<T>(
    state: &State,
    mut change: impl FnMut(&mut ReleaseBook) -> Result<T, ReleaseError>,
) -> Result<(ReleaseBook, T), ReleaseError> {
    for _ in 0..CAS_ATTEMPTS {
        ensure_healthy(state)?;
        let (mut book, raw) = read_raw(state).await?;
        book.version += 1;
        let out = change(&mut book)?;
        let bytes = serde_json::to_vec(&book).map_err(|e| ReleaseError::Corrupt(e.to_string()))?;
        if state
            .compare_and_swap(NAMESPACE, BOOK_KEY, raw.as_deref(), &bytes, None)
            .await?
        {
            // A fail-open state that fell back mid-way wrote locally only.
            ensure_healthy(state)?;
            return Ok((book, out));
        }
    }
    Err(ReleaseError::Contended)
}

/// Stores `wasm` and makes it `kind`'s current release (with `config`, or
/// each node's configured one). The caller has validated it.
pub async fn publish(
    state: &State,
    kind: Slot,
    wasm: &[u8],
    config: Option<Value>,
) -> Result<Release, ReleaseError> {
    ensure_healthy(state)?;
    let hash = blake3::hash(wasm).to_hex().to_string();
    state
        .set(NAMESPACE, &component_key(&hash), wasm, None)
        .await?;
    let now = unix_ms(SystemTime::now());
    let (_, (release, dropped)) = update_book(state, |book| {
        let release = Release {
            seq: book.version,
            hash: hash.clone(),
            config: config.clone(),
            size_bytes: wasm.len(),
            published_at_ms: now,
        };
        let slot = book.slots.entry(kind.name().to_string()).or_default();
        if let Some(old) = slot.current.replace(release.clone()) {
            slot.previous.push(old);
        }
        let excess = slot.previous.len().saturating_sub(MAX_HISTORY);
        let dropped: Vec<Release> = slot.previous.drain(..excess).collect();
        Ok((release, dropped))
    })
    .await?;
    forget_components(state, dropped).await;
    Ok(release)
}

/// Makes the release before the current one `kind`'s current release; with
/// none before it, the slot returns to each node's configured plugin
/// (`Ok(None)`).
pub async fn rollback(state: &State, kind: Slot) -> Result<Option<Release>, ReleaseError> {
    let (book, ()) = update_book(state, |book| {
        let slot = book.slots.entry(kind.name().to_string()).or_default();
        if slot.current.is_none() {
            return Err(ReleaseError::NothingToRollBack(kind.name().to_string()));
        }
        slot.current = slot.previous.pop();
        Ok(())
    })
    .await?;
    Ok(book.current(kind).cloned())
}

/// Deletes the components of releases that fell off every slot's history.
async fn forget_components(state: &State, dropped: Vec<Release>) {
    if dropped.is_empty() {
        return;
    }
    let Ok(book) = read_book(state).await else {
        return;
    };
    let in_use = |hash: &str| {
        book.slots
            .values()
            .any(|s| s.current.iter().chain(&s.previous).any(|r| r.hash == hash))
    };
    for r in dropped {
        if !in_use(&r.hash) {
            let _ = state.delete(NAMESPACE, &component_key(&r.hash)).await;
        }
    }
}

/// Fetches a release's component and checks it against its hash.
pub async fn fetch_component(state: &State, release: &Release) -> Result<Vec<u8>, ReleaseError> {
    let bytes = state
        .get(NAMESPACE, &component_key(&release.hash))
        .await?
        .ok_or_else(|| ReleaseError::MissingComponent(release.hash.clone()))?;
    if blake3::hash(&bytes).to_hex().as_str() != release.hash {
        return Err(ReleaseError::HashMismatch(release.hash.clone()));
    }
    Ok(bytes)
}

/// Brings `guard`'s slot to the release `book` names for it (or back to
/// the configured plugin), unless this node already tried that release.
/// Returns the refusal when this node cannot serve it.
pub async fn apply_slot(
    reloader: &PluginVersions,
    guard: &SlotGuard<'_>,
    kind: Slot,
    book: &ReleaseBook,
) -> Result<(), Refusal> {
    let wanted = book.current(kind);
    let seen = reloader.release_seen(kind);
    if wanted.map(|r| r.seq) == seen {
        return Ok(());
    }
    reloader.set_release_seen(guard, wanted.map(|r| r.seq));
    match wanted {
        Some(release) => {
            let origin = Origin::Release(release.seq);
            let wasm = match fetch_component(reloader.state(), release).await {
                Ok(w) => w,
                Err(e) => {
                    // Not this node's fault: retry on the next poll.
                    reloader.set_release_seen(guard, seen);
                    tracing::warn!(slot = kind.name(), seq = release.seq, error = %e, "cannot fetch release");
                    return Ok(());
                }
            };
            reloader
                .install(guard, &wasm, release.config.clone(), origin)
                .await
                .map(drop)
        }
        // Rolled back past the first release.
        None if matches!(reloader.origin(kind), Origin::Release(_)) => {
            reloader.install_configured(guard).await.map(drop)
        }
        None => Ok(()),
    }
}

/// Applies the whole book on this node (every slot).
pub async fn apply_book(versions: &PluginVersions, book: &ReleaseBook) {
    for kind in Slot::ALL {
        let guard = versions.lock(kind).await;
        let _ = apply_slot(versions, &guard, kind, book).await;
    }
}

/// Applies the current releases once, e.g. at startup before serving.
pub async fn sync(versions: &PluginVersions) {
    let state = versions.state();
    match read_book(state).await {
        Ok(_) if state.is_degraded() => {
            tracing::warn!("Redis is failing: serving the configured plugins until it answers");
        }
        Ok(book) => apply_book(versions, &book).await,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read plugin releases; serving the configured plugins")
        }
    }
}

/// Starts the task that polls the book every [`POLL`] and applies changes.
/// It stops when `versions` is dropped.
pub fn spawn_watcher(versions: &Arc<PluginVersions>) -> tokio::task::JoinHandle<()> {
    let weak: Weak<PluginVersions> = Arc::downgrade(versions);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(versions) = weak.upgrade() else {
                return;
            };
            let state = versions.state();
            // While Redis fails, a fail-open state answers from its local
            // fallback, where the book is empty: that is no reason to leave
            // the current release, so skip the poll.
            if state.is_degraded() {
                continue;
            }
            // Applying an unchanged book costs a lock per slot: a slot whose
            // component could not be fetched is retried on the next poll.
            match read_book(state).await {
                Ok(book) if !state.is_degraded() => apply_book(&versions, &book).await,
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "release poll failed"),
            }
        }
    })
}

/// Publishes an already loaded `plugin` (from `wasm`) and installs it here.
/// On a publish failure nothing changes on this node either.
pub async fn publish_and_commit(
    versions: &PluginVersions,
    guard: &SlotGuard<'_>,
    kind: Slot,
    wasm: &[u8],
    config: Option<Value>,
    plugin: Arc<Plugin>,
) -> Result<Release, ReleaseError> {
    let release = publish(versions.state(), kind, wasm, config).await?;
    versions.set_release_seen(guard, Some(release.seq));
    versions.commit(guard, plugin, Origin::Release(release.seq));
    Ok(release)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publish_keeps_history_and_rollback_walks_it_back() {
        let state = State::memory();
        assert_eq!(read_book(&state).await.unwrap(), ReleaseBook::default());
        let a = publish(&state, Slot::Throttle, b"a", None).await.unwrap();
        let b = publish(
            &state,
            Slot::Throttle,
            b"b",
            Some(serde_json::json!({"x": 1})),
        )
        .await
        .unwrap();
        assert!(b.seq > a.seq);
        let book = read_book(&state).await.unwrap();
        assert_eq!(book.current(Slot::Throttle), Some(&b));
        assert_eq!(book.current(Slot::Retry), None);
        assert_eq!(fetch_component(&state, &b).await.unwrap(), b"b");

        assert_eq!(rollback(&state, Slot::Throttle).await.unwrap(), Some(a));
        assert_eq!(rollback(&state, Slot::Throttle).await.unwrap(), None);
        let err = rollback(&state, Slot::Throttle).await.unwrap_err();
        assert!(matches!(err, ReleaseError::NothingToRollBack(_)), "{err}");
    }

    #[tokio::test]
    async fn history_is_bounded_and_dropped_components_are_deleted() {
        let state = State::memory();
        let first = publish(&state, Slot::Retry, b"v0", None).await.unwrap();
        for i in 1..=MAX_HISTORY + 1 {
            publish(&state, Slot::Retry, format!("v{i}").as_bytes(), None)
                .await
                .unwrap();
        }
        let book = read_book(&state).await.unwrap();
        let slot = book.slot(Slot::Retry).unwrap();
        assert_eq!(slot.previous.len(), MAX_HISTORY);
        assert!(slot.previous.iter().all(|r| r.hash != first.hash));
        let err = fetch_component(&state, &first).await.unwrap_err();
        assert!(matches!(err, ReleaseError::MissingComponent(_)), "{err}");
    }

    #[tokio::test]
    async fn a_tampered_component_is_refused() {
        let state = State::memory();
        let r = publish(&state, Slot::Throttle, b"good", None)
            .await
            .unwrap();
        state
            .set(NAMESPACE, &component_key(&r.hash), b"evil", None)
            .await
            .unwrap();
        let err = fetch_component(&state, &r).await.unwrap_err();
        assert!(matches!(err, ReleaseError::HashMismatch(_)), "{err}");
    }
}
