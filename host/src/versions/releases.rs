//! Fleet-wide plugin releases through the shared state.
//!
//! A release is a component (stored content-addressed under its blake3
//! hash, `component:<hash>` in the [`NAMESPACE`] namespace) plus an optional
//! plugin config, under an id unique across books and data losses (UUID
//! v7): two nodes that name the same release serve the same component with
//! the same config. One document, the [`ReleaseBook`] (key `book`), says
//! which release each slot serves, keeps up to [`MAX_HISTORY`] earlier ones
//! for rollback, and carries a lineage (a random id made when the book is
//! first written) and a version bumped by every change. Writers update it
//! with compare-and-swap, so two pushes never lose one another.
//!
//! Every node polls the book every [`POLL`] and judges it against the book
//! it follows ([`super::follow`]). When a slot's current release changes it
//! fetches the component, checks its hash, loads it (the compiled-code
//! cache makes that one compile per hash per machine) and swaps it in
//! through [`super::PluginVersions`]. A node that refuses a release records
//! why and keeps its previous version; a node that starts later applies the
//! book before it serves. A rollback past the first release returns the
//! slot to each node's configured plugin. A book that vanished or went
//! backwards (Redis lost its data) is lost: the node keeps serving what it
//! serves and says so, until an operator starts a new book.
//!
//! Pushes go through a node (the admin API), which loads the new version
//! before publishing it: a version that fails to compile, link or `init`
//! is never published, so a broken push changes nothing anywhere. A node
//! does not write over a lost book unless the operator asks (`new_book`).
//!
//! With the memory state the same book lives in-process: releases and
//! rollback work on that one node.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::follow::{BookId, Follower, Judgement};
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
    /// Unique across books and data losses (UUID v7); origins show it as
    /// `release:<id>`.
    #[serde(default)]
    pub id: String,
    /// The book version that published it: unique within one book only.
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
    /// Made when the book is first written; a book started after the
    /// previous one was lost has a new one.
    #[serde(default)]
    pub lineage: String,
    pub version: u64,
    #[serde(default)]
    pub slots: BTreeMap<String, SlotReleases>,
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl ReleaseBook {
    /// An empty book of a new lineage.
    pub fn start() -> Self {
        Self {
            lineage: new_id(),
            ..Self::default()
        }
    }

    /// Its lineage and version.
    pub fn id(&self) -> BookId<'_> {
        BookId {
            lineage: &self.lineage,
            version: self.version,
        }
    }

    /// The releases of `kind`'s slot.
    pub fn slot(&self, kind: Slot) -> Option<&SlotReleases> {
        self.slots.get(kind.name())
    }

    /// The release `kind`'s slot should serve, if any.
    pub fn current(&self, kind: Slot) -> Option<&Release> {
        self.slot(kind).and_then(|s| s.current.as_ref())
    }

    /// Books written before releases had ids: name their releases by
    /// lineage (`legacy` when the book had none) and sequence.
    fn fill_legacy_ids(&mut self) {
        let lineage = match self.lineage.as_str() {
            "" => "legacy".to_string(),
            l => l.to_string(),
        };
        for slot in self.slots.values_mut() {
            for r in slot.current.iter_mut().chain(&mut slot.previous) {
                if r.id.is_empty() {
                    r.id = format!("{lineage}-{}", r.seq);
                }
            }
        }
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
    #[error(
        "nothing was written: {0}. Starting a new book replaces the lost one everywhere: \
         slots it does not name serve each node's configured plugin"
    )]
    BookLost(String),
}

/// Who writes the book, and how.
#[derive(Clone, Copy, Default)]
pub struct Writer<'a> {
    /// The node writing on an operator's request (its admin API): it does
    /// not write over a book it lost. None: an operator's tool writing
    /// straight to the state, which has no view of the book to lose.
    pub node: Option<&'a Follower>,
    /// Write a book of a new lineage, from what the state holds: the
    /// operator's go-ahead after a book was lost. Without it a book is
    /// continued as found (and started where there is none).
    pub new_book: bool,
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

/// Reads the book (None when there is none).
pub async fn read_book(state: &State) -> Result<Option<ReleaseBook>, ReleaseError> {
    read_raw(state).await.map(|(book, _)| book)
}

async fn read_raw(state: &State) -> Result<(Option<ReleaseBook>, Option<Vec<u8>>), ReleaseError> {
    let raw = state.get(NAMESPACE, BOOK_KEY).await?;
    let book = match &raw {
        None => None,
        Some(bytes) => {
            let mut book: ReleaseBook =
                serde_json::from_slice(bytes).map_err(|e| ReleaseError::Corrupt(e.to_string()))?;
            book.fill_legacy_ids();
            Some(book)
        }
    };
    Ok((book, raw))
}

/// Reads the book from Redis itself: an answer from a fail-open state's
/// local fallback (which holds no book) is an error, not a vanished book,
/// even when Redis healed before the caller could ask.
async fn read_settled(
    state: &State,
) -> Result<(Option<ReleaseBook>, Option<Vec<u8>>), ReleaseError> {
    ensure_healthy(state)?;
    let fallbacks = state.health().fallbacks;
    let read = read_raw(state).await?;
    let health = state.health();
    if health.degraded || health.fallbacks != fallbacks {
        return Err(ReleaseError::Degraded(
            health.last_error.unwrap_or_default(),
        ));
    }
    Ok(read)
}

/// The book `writer` may change, given what the state holds.
fn base(writer: Writer<'_>, found: Option<ReleaseBook>) -> Result<ReleaseBook, ReleaseError> {
    if let Some(follower) = writer.node
        && !writer.new_book
        && follower.judge(found.as_ref().map(ReleaseBook::id)) == Judgement::Lost
    {
        let why = follower
            .lost_message()
            .unwrap_or_else(|| "the release book this node followed is lost".to_string());
        return Err(ReleaseError::BookLost(why));
    }
    let mut book = found.unwrap_or_else(ReleaseBook::start);
    if writer.new_book || book.lineage.is_empty() {
        book.lineage = new_id();
    }
    Ok(book)
}

/// Applies `change` to the book atomically (compare-and-swap, retried).
async fn update_book<T>(
    state: &State,
    writer: Writer<'_>,
    mut change: impl FnMut(&mut ReleaseBook) -> Result<T, ReleaseError>,
) -> Result<(ReleaseBook, T), ReleaseError> {
    for _ in 0..CAS_ATTEMPTS {
        let (found, raw) = read_settled(state).await?;
        let mut book = base(writer, found)?;
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
/// each node's configured one). The caller has validated it. Returns the
/// book written and the release.
pub async fn publish(
    state: &State,
    writer: Writer<'_>,
    kind: Slot,
    wasm: &[u8],
    config: Option<Value>,
) -> Result<(ReleaseBook, Release), ReleaseError> {
    ensure_healthy(state)?;
    let hash = blake3::hash(wasm).to_hex().to_string();
    state
        .set(NAMESPACE, &component_key(&hash), wasm, None)
        .await?;
    let now = unix_ms(SystemTime::now());
    let id = new_id();
    let (book, (release, dropped)) = update_book(state, writer, |book| {
        let release = Release {
            id: id.clone(),
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
    Ok((book, release))
}

/// Makes the release before the current one `kind`'s current release; with
/// none before it, the slot returns to each node's configured plugin
/// (None). Returns the book written and the slot's release now.
pub async fn rollback(
    state: &State,
    writer: Writer<'_>,
    kind: Slot,
) -> Result<(ReleaseBook, Option<Release>), ReleaseError> {
    let (book, ()) = update_book(state, writer, |book| {
        let slot = book.slots.entry(kind.name().to_string()).or_default();
        if slot.current.is_none() {
            return Err(ReleaseError::NothingToRollBack(kind.name().to_string()));
        }
        slot.current = slot.previous.pop();
        Ok(())
    })
    .await?;
    let now = book.current(kind).cloned();
    Ok((book, now))
}

/// Deletes the components of releases that fell off every slot's history.
async fn forget_components(state: &State, dropped: Vec<Release>) {
    if dropped.is_empty() {
        return;
    }
    let Ok(Some(book)) = read_book(state).await else {
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
/// the configured plugin), unless this node already tried that release or
/// follows a newer book by now. Returns the refusal when this node cannot
/// serve it.
pub async fn apply_slot(
    reloader: &PluginVersions,
    guard: &SlotGuard<'_>,
    kind: Slot,
    book: &ReleaseBook,
) -> Result<(), Refusal> {
    if !reloader.book().is_current(book.id()) {
        return Ok(());
    }
    let wanted = book.current(kind);
    let seen = reloader.release_seen(kind);
    if wanted.map(|r| r.id.as_str()) == seen.as_deref() {
        return Ok(());
    }
    reloader.set_release_seen(guard, wanted.map(|r| r.id.clone()));
    match wanted {
        Some(release) => {
            let origin = Origin::Release(release.id.clone());
            let wasm = match fetch_component(reloader.state(), release).await {
                Ok(w) => w,
                Err(e) => {
                    // Not this node's fault: retry on the next poll.
                    reloader.set_release_seen(guard, seen);
                    tracing::warn!(slot = kind.name(), release = %release.id, error = %e, "cannot fetch release");
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

/// Reads the book, judges it against the one this node follows and applies
/// it, or keeps serving (and says so) when the followed book is lost.
async fn check(versions: &PluginVersions) -> Result<(), ReleaseError> {
    let state = versions.state();
    let follower = versions.book();
    let turn = follower.turn().await;
    // While Redis fails, a fail-open state answers from its local
    // fallback, where there is no book: that is no reason to leave the
    // current release, nor to call the book lost.
    let (found, _) = read_settled(state).await?;
    match (follower.judge(found.as_ref().map(ReleaseBook::id)), found) {
        (Judgement::Follow, Some(book)) => {
            follower.follow(book.id());
            drop(turn);
            apply_book(versions, &book).await;
        }
        (Judgement::Lost, found) => follower.lost(found.as_ref().map(ReleaseBook::id)),
        // Nothing to follow.
        _ => {}
    }
    Ok(())
}

/// Applies the current releases once, e.g. at startup before serving.
pub async fn sync(versions: &PluginVersions) {
    match check(versions).await {
        Ok(()) => {}
        Err(ReleaseError::Degraded(_)) => {
            tracing::warn!("Redis is failing: serving the configured plugins until it answers");
        }
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
            // Skip the read while Redis fails (see `check`). Applying an
            // unchanged book costs a lock per slot: a slot whose component
            // could not be fetched is retried on the next poll.
            if versions.state().is_degraded() {
                continue;
            }
            if let Err(e) = check(&versions).await {
                tracing::debug!(error = %e, "release poll failed");
            }
        }
    })
}

/// Publishes an already loaded `plugin` (from `wasm`) and installs it here.
/// On a publish failure nothing changes on this node either. `new_book`:
/// the operator's go-ahead to start a new book when the followed one is
/// lost.
pub async fn publish_and_commit(
    versions: &PluginVersions,
    guard: &SlotGuard<'_>,
    kind: Slot,
    wasm: &[u8],
    config: Option<Value>,
    plugin: Arc<Plugin>,
    new_book: bool,
) -> Result<Release, ReleaseError> {
    let follower = versions.book();
    let _turn = follower.turn().await;
    let writer = Writer {
        node: Some(follower),
        new_book,
    };
    let (book, release) = publish(versions.state(), writer, kind, wasm, config).await?;
    follower.follow(book.id());
    versions.set_release_seen(guard, Some(release.id.clone()));
    versions.commit(guard, plugin, Origin::Release(release.id.clone()));
    Ok(release)
}

/// Rolls `guard`'s slot back everywhere (see [`rollback`]) and applies
/// that here at once. Returns the slot's release now, and the refusal
/// when this node cannot serve it.
pub async fn rollback_and_apply(
    versions: &PluginVersions,
    guard: &SlotGuard<'_>,
    kind: Slot,
) -> Result<(Option<Release>, Result<(), Refusal>), ReleaseError> {
    let follower = versions.book();
    let turn = follower.turn().await;
    let writer = Writer {
        node: Some(follower),
        new_book: false,
    };
    let (book, release) = rollback(versions.state(), writer, kind).await?;
    follower.follow(book.id());
    drop(turn);
    Ok((release, apply_slot(versions, guard, kind, &book).await))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[tokio::test]
    async fn publish_keeps_history_and_rollback_walks_it_back() {
        let state = State::memory();
        let d = Writer::default();
        assert_eq!(read_book(&state).await.unwrap(), None);
        let (first, a) = publish(&state, d, Slot::Throttle, b"a", None)
            .await
            .unwrap();
        let (book, b) = publish(
            &state,
            d,
            Slot::Throttle,
            b"b",
            Some(serde_json::json!({"x": 1})),
        )
        .await
        .unwrap();
        assert!(b.seq > a.seq);
        assert_ne!(a.id, b.id);
        assert_eq!(book.lineage, first.lineage);
        assert_eq!(read_book(&state).await.unwrap(), Some(book.clone()));
        assert_eq!(book.current(Slot::Throttle), Some(&b));
        assert_eq!(book.current(Slot::Retry), None);
        assert_eq!(fetch_component(&state, &b).await.unwrap(), b"b");

        let (_, now) = rollback(&state, d, Slot::Throttle).await.unwrap();
        assert_eq!(now, Some(a));
        let (_, now) = rollback(&state, d, Slot::Throttle).await.unwrap();
        assert_eq!(now, None);
        let err = rollback(&state, d, Slot::Throttle).await.unwrap_err();
        assert!(matches!(err, ReleaseError::NothingToRollBack(_)), "{err}");
    }

    #[tokio::test]
    async fn history_is_bounded_and_dropped_components_are_deleted() {
        let state = State::memory();
        let d = Writer::default();
        let (_, first) = publish(&state, d, Slot::Retry, b"v0", None).await.unwrap();
        for i in 1..=MAX_HISTORY + 1 {
            publish(&state, d, Slot::Retry, format!("v{i}").as_bytes(), None)
                .await
                .unwrap();
        }
        let book = read_book(&state).await.unwrap().unwrap();
        let slot = book.slot(Slot::Retry).unwrap();
        assert_eq!(slot.previous.len(), MAX_HISTORY);
        assert!(slot.previous.iter().all(|r| r.hash != first.hash));
        let err = fetch_component(&state, &first).await.unwrap_err();
        assert!(matches!(err, ReleaseError::MissingComponent(_)), "{err}");
    }

    #[tokio::test]
    async fn a_tampered_component_is_refused() {
        let state = State::memory();
        let (_, r) = publish(&state, Writer::default(), Slot::Throttle, b"good", None)
            .await
            .unwrap();
        state
            .set(NAMESPACE, &component_key(&r.hash), b"evil", None)
            .await
            .unwrap();
        let err = fetch_component(&state, &r).await.unwrap_err();
        assert!(matches!(err, ReleaseError::HashMismatch(_)), "{err}");
    }

    #[tokio::test]
    async fn a_node_writes_over_a_lost_book_only_when_told_to_start_a_new_one() {
        let state = State::memory();
        let follower = Follower::new(&mut Registry::default());
        let node = |new_book| Writer {
            node: Some(&follower),
            new_book,
        };
        // The first book: nothing was lost.
        let (first, _) = publish(&state, node(false), Slot::Throttle, b"a", None)
            .await
            .unwrap();
        follower.follow(first.id());

        // The book vanishes (Redis lost its data).
        state.delete(NAMESPACE, BOOK_KEY).await.unwrap();
        let err = publish(&state, node(false), Slot::Retry, b"b", None)
            .await
            .unwrap_err();
        assert!(matches!(err, ReleaseError::BookLost(_)), "{err}");
        let err = rollback(&state, node(false), Slot::Throttle)
            .await
            .unwrap_err();
        assert!(matches!(err, ReleaseError::BookLost(_)), "{err}");
        assert_eq!(read_book(&state).await.unwrap(), None);

        // The operator starts a new book: a new lineage, naming only it.
        let (second, b) = publish(&state, node(true), Slot::Retry, b"b", None)
            .await
            .unwrap();
        assert_ne!(second.lineage, first.lineage);
        assert_eq!(second.current(Slot::Retry), Some(&b));
        assert_eq!(second.current(Slot::Throttle), None);
        follower.follow(second.id());

        // An older version of the followed book comes back (an old snapshot).
        let mut old = second.clone();
        old.version -= 1;
        let bytes = serde_json::to_vec(&old).unwrap();
        state.set(NAMESPACE, BOOK_KEY, &bytes, None).await.unwrap();
        let err = publish(&state, node(false), Slot::Retry, b"c", None)
            .await
            .unwrap_err();
        assert!(matches!(err, ReleaseError::BookLost(_)), "{err}");
        // Told to, the node starts a new book from what the state holds.
        let (third, _) = publish(&state, node(true), Slot::Retry, b"c", None)
            .await
            .unwrap();
        assert_ne!(third.lineage, second.lineage);
        assert_eq!(third.version, old.version + 1);

        // A tool writing straight to the state continues the book as found,
        // or starts a new lineage when told to.
        let direct = |new_book| Writer {
            node: None,
            new_book,
        };
        let (fourth, _) = publish(&state, direct(false), Slot::Retry, b"d", None)
            .await
            .unwrap();
        assert_eq!(fourth.lineage, third.lineage);
        let (fifth, _) = publish(&state, direct(true), Slot::Retry, b"e", None)
            .await
            .unwrap();
        assert_ne!(fifth.lineage, fourth.lineage);
    }

    #[test]
    fn releases_of_books_without_ids_are_named_by_lineage_and_seq() {
        let raw = r#"{"version":3,"slots":{"throttle":{"current":{"seq":3,"hash":"h","size_bytes":1,"published_at_ms":0},"previous":[{"seq":1,"hash":"g","size_bytes":1,"published_at_ms":0}]}}}"#;
        let mut book: ReleaseBook = serde_json::from_str(raw).unwrap();
        book.fill_legacy_ids();
        assert_eq!(book.current(Slot::Throttle).unwrap().id, "legacy-3");
        assert_eq!(
            book.slot(Slot::Throttle).unwrap().previous[0].id,
            "legacy-1"
        );
    }
}
