//! The semantic index: prompt vectors and their answers in the shared state,
//! mirrored on every node by an in-memory search structure.
//!
//! Layout, in state namespace [`STATE_NS`], per index namespace `h` (a hash
//! of tenant and plugin namespace, so tenants never share entries):
//! - `{h}:seq`: a counter; each stored entry takes the next number;
//! - `{h}:a:{seq}`: the answer ([`Answer::encode`]), written first;
//! - `{h}:v:{seq}`: the vector, prompt and times ([`encode_entry`]);
//! - `{h}:t:{seq}`: once the entry was served and contradicted, the score a
//!   candidate must now beat to be answered by it ([`SemanticIndex::contradict`]).
//!
//! Every entry expires with its TTL. The counter is an append log: a node
//! that sees it move reads the new entries, so nodes converge within
//! [`IndexSettings::sync_every`] of a write. The size bound is by sequence:
//! only the last `max_entries` numbers are live; storing entry `n` deletes
//! entry `n - max_entries`, and nodes drop it from their mirror.
//!
//! What a node keeps is bounded in bytes ([`IndexSettings::max_bytes`]) and
//! in namespaces ([`IndexSettings::max_namespaces`]): each mirror counts
//! what it holds ([`Mirror::bytes`]), and when the sum passes the bound the
//! least recently used namespaces are dropped whole; a namespace too large
//! for the bound alone drops its oldest segments, keeping its newest
//! entries (see [`Mirror`]: nothing is ever rebuilt). When the state is this
//! process's memory, the stored entries and answers are counted with their
//! mirror and deleted with it, so the bound covers them too.

use std::mem::size_of;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use lru::LruCache;
use parking_lot::Mutex;

use super::mirror::{Mirror, STATE_KEY_BYTES};
use crate::cache::{Answer, footprint};
use crate::state::{State, StateError};

/// The state namespace of every semantic key.
pub const STATE_NS: &str = "semantic";

/// Index behaviour; the defaults suit a gateway.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexSettings {
    /// Live entries kept per namespace; older ones are evicted.
    pub max_entries: u64,
    /// How stale a node's mirror of a namespace may get before a lookup
    /// refreshes it from the shared state.
    pub sync_every: Duration,
    /// Namespaces up to this size are scanned exactly; larger ones use HNSW.
    pub exact_up_to: usize,
    /// Candidate list size of an HNSW search.
    pub ef_search: usize,
    /// Bound on what this node keeps for the index, in bytes (see the
    /// module documentation).
    pub max_bytes: usize,
    /// Namespaces this node mirrors at once; the least recently used one is
    /// dropped to make room.
    pub max_namespaces: usize,
}

impl Default for IndexSettings {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            sync_every: Duration::from_millis(250),
            exact_up_to: 2048,
            ef_search: 64,
            max_bytes: 56 << 20,
            max_namespaces: 4096,
        }
    }
}

/// Which index a prompt belongs to: always per tenant, then per plugin
/// namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndexKey {
    hash: String,
}

impl IndexKey {
    pub fn new(tenant: &str, namespace: &str) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(&(tenant.len() as u64).to_le_bytes());
        h.update(tenant.as_bytes());
        h.update(namespace.as_bytes());
        let hex = h.finalize().to_hex();
        Self {
            hash: hex[..32].to_owned(),
        }
    }

    /// A short label for metrics and logs (no tenant data in clear).
    pub fn label(&self) -> &str {
        &self.hash[..12]
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.hash)
    }
}

/// The best match of a search.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub seq: u64,
    pub score: f32,
    pub prompt: String,
    pub stored_at_ms: u64,
    pub expires_ms: u64,
}

/// What entry `seq` may answer, from [`SemanticIndex::answer_for`].
#[derive(Debug)]
pub enum Served {
    /// The stored answer: the hit's score beats what the entry requires.
    Answer(Answer),
    /// The entry was contradicted before; it now requires a score above
    /// `required`, which this hit does not reach.
    Distrusted { required: f32 },
    /// The entry or its answer is gone.
    Gone,
}

/// Bytes a contradicted entry's `t:` value takes.
const REQUIRED_SCORE_BYTES: usize = 4;

/// An entry as stored under `{h}:v:{seq}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub vector: Vec<f32>,
    pub prompt: String,
    pub stored_at_ms: u64,
    pub expires_ms: u64,
}

const ENTRY_MAGIC: &[u8; 4] = b"SLV1";

/// The binary form of an entry.
pub fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + e.vector.len() * 4 + e.prompt.len());
    out.extend_from_slice(ENTRY_MAGIC);
    out.extend_from_slice(&e.stored_at_ms.to_le_bytes());
    out.extend_from_slice(&e.expires_ms.to_le_bytes());
    out.extend_from_slice(&(e.vector.len() as u32).to_le_bytes());
    for x in &e.vector {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.extend_from_slice(e.prompt.as_bytes());
    out
}

/// Parses [`encode_entry`]'s output; garbage yields None.
pub fn decode_entry(bytes: &[u8]) -> Option<Entry> {
    let rest = bytes.strip_prefix(ENTRY_MAGIC)?;
    let u64_at = |i: usize| Some(u64::from_le_bytes(rest.get(i..i + 8)?.try_into().ok()?));
    let stored_at_ms = u64_at(0)?;
    let expires_ms = u64_at(8)?;
    let dim = u32::from_le_bytes(rest.get(16..20)?.try_into().ok()?) as usize;
    let end = 20usize.checked_add(dim.checked_mul(4)?)?;
    let vector = rest
        .get(20..end)?
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let prompt = std::str::from_utf8(rest.get(end..)?).ok()?.to_owned();
    Some(Entry {
        vector,
        prompt,
        stored_at_ms,
        expires_ms,
    })
}

/// A `t:` value: a little-endian f32.
fn decode_score(bytes: &[u8]) -> Option<f32> {
    Some(f32::from_le_bytes(bytes.try_into().ok()?)).filter(|s| s.is_finite())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How long a counter number may stay unreadable before it is given up.
const PENDING_GRACE: Duration = Duration::from_secs(2);
/// Concurrent reads while catching up with a namespace.
const READ_CONCURRENCY: usize = 32;
/// Entries a catch-up adds to a mirror between yields.
const APPLY_BATCH: usize = 64;

/// Live entries, namespaces and bytes this node keeps for the index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexStats {
    pub entries: usize,
    pub namespaces: usize,
    pub bytes: usize,
}

/// One mirrored namespace.
#[derive(Default)]
struct Namespace {
    mirror: tokio::sync::Mutex<Mirror>,
    /// Bytes and live entries last counted for it in [`Namespaces`]; only
    /// changed under that lock.
    bytes: AtomicUsize,
    entries: AtomicUsize,
    /// Dropped from [`Namespaces`]: whoever still holds it must not count it.
    evicted: AtomicBool,
}

/// The mirrored namespaces, least recently used first, and their sums.
struct Namespaces {
    lru: LruCache<IndexKey, Arc<Namespace>>,
    bytes: usize,
    entries: usize,
}

/// What the index shares with its background tasks.
struct Inner {
    state: State,
    settings: IndexSettings,
    /// The state is this process's memory: the index's entries there are
    /// counted with their mirror, and deleted when it drops them.
    local: bool,
    /// What a namespace costs besides its mirror's contents.
    namespace_bytes: usize,
    namespaces: Mutex<Namespaces>,
}

/// The index over the shared state, with this node's mirrors.
pub struct SemanticIndex {
    inner: Arc<Inner>,
}

impl SemanticIndex {
    pub fn new(state: State, settings: IndexSettings) -> Self {
        let local = !state.is_shared();
        let cap = NonZeroUsize::new(settings.max_namespaces).unwrap_or(NonZeroUsize::MIN);
        // Per namespace: its Arc'd mirror, list node and key text, and in
        // the in-process state its counter.
        let namespace_bytes =
            footprint::alloc_size(2 * size_of::<usize>() + size_of::<Namespace>())
                + footprint::alloc_size(size_of::<IndexKey>() + 3 * size_of::<usize>())
                + footprint::alloc_size(32)
                + if local { STATE_KEY_BYTES + 8 } else { 0 };
        // The table is allocated for `max_namespaces` up front, and counted.
        let table = footprint::hash_table(cap.get(), 2 * size_of::<usize>());
        Self {
            inner: Arc::new(Inner {
                state,
                settings,
                local,
                namespace_bytes,
                namespaces: Mutex::new(Namespaces {
                    lru: LruCache::new(cap),
                    bytes: table,
                    entries: 0,
                }),
            }),
        }
    }

    pub fn settings(&self) -> &IndexSettings {
        &self.inner.settings
    }

    /// Live entries, namespaces and bytes this node keeps for the index.
    pub fn stats(&self) -> IndexStats {
        let ns = self.inner.namespaces.lock();
        IndexStats {
            entries: ns.entries,
            namespaces: ns.lru.len(),
            bytes: ns.bytes,
        }
    }

    /// The closest live entry to `vector` in `key`'s namespace, from this
    /// node's mirror: no round trip to the shared state, except the first
    /// lookup of a namespace on this node, which reads it once. A mirror
    /// older than `sync_every` is brought up to date in the background.
    pub async fn search(&self, key: &IndexKey, vector: &[f32]) -> Result<Option<Hit>, StateError> {
        let ns = self.inner.namespace(key);
        if ns.mirror.lock().await.synced.is_none() {
            // A namespace this node has never read: one catch-up, then
            // every later lookup answers from memory.
            self.inner.sync(key, &ns).await?;
        }
        let mut m = ns.mirror.lock().await;
        let stale = m
            .synced
            .is_none_or(|t| t.elapsed() >= self.inner.settings.sync_every);
        if stale && !m.syncing {
            m.syncing = true;
            let (inner, key, ns) = (self.inner.clone(), key.clone(), ns.clone());
            tokio::spawn(async move {
                if let Err(e) = inner.sync(&key, &ns).await {
                    tracing::debug!(error = %e, "semantic index sync failed; retried on the next lookup");
                }
                ns.mirror.lock().await.syncing = false;
            });
        }
        Ok(m.best(vector, now_ms(), &self.inner.settings))
    }

    /// Brings this node's mirror of `key` up to date now (tools and tests;
    /// lookups do it in the background).
    pub async fn sync_now(&self, key: &IndexKey) -> Result<(), StateError> {
        let ns = self.inner.namespace(key);
        self.inner.sync(key, &ns).await
    }

    /// Entries this node mirrors for `key` (live, possibly expired).
    pub async fn len(&self, key: &IndexKey) -> usize {
        let ns = self.inner.namespaces.lock().lru.peek(key).cloned();
        match ns {
            Some(ns) => ns.mirror.lock().await.live,
            None => 0,
        }
    }

    /// The answer stored with entry `seq`, if it is still there.
    pub async fn answer(&self, key: &IndexKey, seq: u64) -> Result<Option<Answer>, StateError> {
        let raw = self
            .inner
            .state
            .get(STATE_NS, &key.key(&format!("a:{seq}")))
            .await?;
        Ok(raw
            .and_then(|b| Answer::decode(&b))
            .and_then(|(answer, left)| left.map(|_| answer)))
    }

    /// The answer `hit`'s entry may give: read together with the score the
    /// entry requires since it was last contradicted (both reads in one
    /// round trip to a shared state).
    pub async fn answer_for(&self, key: &IndexKey, hit: &Hit) -> Result<Served, StateError> {
        let required_key = key.key(&format!("t:{}", hit.seq));
        let (answer, required) = tokio::join!(
            self.answer(key, hit.seq),
            self.inner.state.get(STATE_NS, &required_key)
        );
        if let Some(required) = required?.as_deref().and_then(decode_score)
            && hit.score <= required
        {
            return Ok(Served::Distrusted { required });
        }
        Ok(answer?.map_or(Served::Gone, Served::Answer))
    }

    /// `hit`'s entry answered a prompt it should not have (a client said
    /// so): from now on it answers only candidates scoring above
    /// `hit.score + margin` (at most 1, where only the same text is
    /// answered). Raises, never lowers, what it required before; lives as
    /// long as the entry. Returns the new requirement.
    pub async fn contradict(
        &self,
        key: &IndexKey,
        hit: &Hit,
        margin: f32,
    ) -> Result<f32, StateError> {
        let state = &self.inner.state;
        let required_key = key.key(&format!("t:{}", hit.seq));
        let before = state
            .get(STATE_NS, &required_key)
            .await?
            .as_deref()
            .and_then(decode_score)
            .unwrap_or(f32::NEG_INFINITY);
        let required = (hit.score + margin).min(1.0).max(before);
        let left = Duration::from_millis(hit.expires_ms.saturating_sub(now_ms()).max(1000));
        state
            .set(STATE_NS, &required_key, &required.to_le_bytes(), Some(left))
            .await?;
        Ok(required)
    }

    /// Appends an entry; returns its sequence number. Evicts the entry that
    /// falls out of the size bound.
    pub async fn insert(
        &self,
        key: &IndexKey,
        vector: Vec<f32>,
        prompt: &str,
        answer: &Answer,
        ttl: Duration,
    ) -> Result<u64, StateError> {
        let inner = &self.inner;
        let state = &inner.state;
        let seq = state.incr(STATE_NS, &key.key("seq"), 1, None).await?;
        let seq = u64::try_from(seq).unwrap_or(0);
        let stored_at_ms = now_ms();
        let entry = Entry {
            vector,
            prompt: prompt.to_owned(),
            stored_at_ms,
            expires_ms: stored_at_ms.saturating_add(ttl.as_millis() as u64),
        };
        // The answer first: a node that reads the entry finds its answer.
        let (answer, encoded) = (answer.encode(ttl), encode_entry(&entry));
        // Room for a `t:` value too, should the entry be contradicted.
        let held =
            inner.held(encoded.len()) + inner.held(answer.len()) + inner.held(REQUIRED_SCORE_BYTES);
        state
            .set(STATE_NS, &key.key(&format!("a:{seq}")), &answer, Some(ttl))
            .await?;
        state
            .set(STATE_NS, &key.key(&format!("v:{seq}")), &encoded, Some(ttl))
            .await?;
        drop((answer, encoded));
        let max = inner.settings.max_entries.max(1);
        if seq > max {
            // Best effort: the TTL removes it anyway, and mirrors skip it.
            inner.delete_entries(key, &[seq - max]).await;
        }
        // This node sees its own write at once.
        let ns = inner.namespace(key);
        {
            let mut m = ns.mirror.lock().await;
            if m.contains(seq) {
                // The counter started again (the namespace was dropped and
                // its keys deleted meanwhile): what the mirror has is stale.
                *m = Mirror::default();
            }
            m.add(seq, entry, held, &inner.settings);
            if seq == m.seen + 1 {
                // Nothing unseen in between: the next sync need not re-read it.
                m.seen = seq;
            }
            let oldest = seq.saturating_sub(max) + 1;
            let evicted = m.older_than(oldest);
            for s in evicted {
                m.remove(s);
            }
            if ns.evicted.load(Ordering::Relaxed) {
                // Dropped while this was stored: nobody counts it any more.
                let seqs = m.live_seqs();
                *m = Mirror::default();
                drop(m);
                inner.delete_dropped(key, &seqs).await;
                return Ok(seq);
            }
            inner.count(&ns, &m);
        }
        inner.enforce(key, &ns).await;
        Ok(seq)
    }
}

impl Inner {
    /// `key`'s namespace, now the most recently used; a new one may push the
    /// least recently used out.
    fn namespace(self: &Arc<Self>, key: &IndexKey) -> Arc<Namespace> {
        let mut namespaces = self.namespaces.lock();
        if let Some(ns) = namespaces.lru.get(key) {
            return ns.clone();
        }
        let ns = Arc::new(Namespace::default());
        ns.bytes.store(self.namespace_bytes, Ordering::Relaxed);
        namespaces.bytes += self.namespace_bytes;
        if let Some((old_key, old)) = namespaces.lru.push(key.clone(), ns.clone()) {
            self.evict(&mut namespaces, old_key, old);
        }
        ns
    }

    /// Bytes an entry's value of `len` bytes holds in the in-process state.
    fn held(&self, len: usize) -> usize {
        if self.local {
            STATE_KEY_BYTES + footprint::alloc_size(len)
        } else {
            0
        }
    }

    /// Records what `ns`'s mirror `m` now holds in the sums.
    fn count(&self, ns: &Namespace, m: &Mirror) {
        let bytes = self.namespace_bytes + m.bytes();
        let mut namespaces = self.namespaces.lock();
        if ns.evicted.load(Ordering::Relaxed) {
            return;
        }
        namespaces.bytes = namespaces.bytes + bytes - ns.bytes.swap(bytes, Ordering::Relaxed);
        namespaces.entries =
            namespaces.entries + m.live - ns.entries.swap(m.live, Ordering::Relaxed);
    }

    /// Drops namespace `key` from the sums and, in the background, its
    /// mirror and (in-process state) its stored entries and counter.
    fn evict(self: &Arc<Self>, namespaces: &mut Namespaces, key: IndexKey, ns: Arc<Namespace>) {
        ns.evicted.store(true, Ordering::Relaxed);
        namespaces.bytes -= ns.bytes.swap(0, Ordering::Relaxed);
        namespaces.entries -= ns.entries.swap(0, Ordering::Relaxed);
        // Its memory goes now, unless someone is using it (then as soon as
        // they are done).
        let dropped = ns.mirror.try_lock().ok().map(|mut m| {
            let seqs = m.live_seqs();
            *m = Mirror::default();
            seqs
        });
        let inner = self.clone();
        tokio::spawn(async move {
            let seqs = match dropped {
                Some(seqs) => seqs,
                None => {
                    let mut m = ns.mirror.lock().await;
                    let seqs = m.live_seqs();
                    *m = Mirror::default();
                    seqs
                }
            };
            drop(ns);
            inner.delete_dropped(&key, &seqs).await;
            // Its counter too, unless the namespace came back meanwhile.
            let back = inner.namespaces.lock().lru.contains(&key);
            if inner.local && !back {
                let _ = inner.state.delete(STATE_NS, &key.key("seq")).await;
            }
        });
    }

    /// Deletes the stored entries `seqs` of `key` that this node dropped,
    /// when the state is in-process; a shared state keeps them for the
    /// other nodes.
    async fn delete_dropped(&self, key: &IndexKey, seqs: &[u64]) {
        if self.local {
            self.delete_entries(key, seqs).await;
        }
    }

    /// Deletes stored entries `seqs` of `key` (best effort: their TTL
    /// removes them anyway).
    async fn delete_entries(&self, key: &IndexKey, seqs: &[u64]) {
        for seq in seqs {
            for kind in ["v", "a", "t"] {
                let _ = self
                    .state
                    .delete(STATE_NS, &key.key(&format!("{kind}:{seq}")))
                    .await;
            }
        }
    }

    /// Brings the sums back under `max_bytes` after `key`'s namespace grew:
    /// drops the least recently used other namespaces, then, if `key`'s
    /// alone is too large, its oldest entries.
    async fn enforce(self: &Arc<Self>, key: &IndexKey, ns: &Arc<Namespace>) {
        let max = self.settings.max_bytes;
        {
            let mut namespaces = self.namespaces.lock();
            while namespaces.bytes > max {
                match namespaces.lru.peek_lru() {
                    Some((k, _)) if k != key => {}
                    _ => break,
                }
                if let Some((k, old)) = namespaces.lru.pop_lru() {
                    self.evict(&mut namespaces, k, old);
                }
            }
            if namespaces.bytes <= max {
                return;
            }
        }
        // Its oldest segments go, whole, until the sums fit; the lock is
        // not held across the deletes.
        let dropped = {
            let mut m = ns.mirror.lock().await;
            let mut dropped = Vec::new();
            while self.namespaces.lock().bytes > max
                && m.live > 0
                && !ns.evicted.load(Ordering::Relaxed)
            {
                dropped.extend(m.drop_oldest());
                self.count(ns, &m);
            }
            dropped
        };
        self.delete_dropped(key, &dropped).await;
    }

    /// Reads what other nodes appended to `key`'s namespace since the last
    /// sync into its mirror. The mirror is locked only to plan and to apply,
    /// never across a round trip, so lookups keep answering from it
    /// meanwhile.
    async fn sync(self: &Arc<Self>, key: &IndexKey, ns: &Arc<Namespace>) -> Result<(), StateError> {
        let (state, settings) = (&self.state, &self.settings);
        let head = state
            .get(STATE_NS, &key.key("seq"))
            .await?
            .and_then(|b| std::str::from_utf8(&b).ok()?.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let max = settings.max_entries.max(1);
        let oldest = head.saturating_sub(max) + 1;
        let wanted = {
            let mut m = ns.mirror.lock().await;
            if head < m.seen {
                // The counter started again: what the mirror has is stale.
                *m = Mirror::default();
            }
            // Evicted by the size bound.
            let evicted = m.older_than(oldest);
            for seq in evicted {
                m.remove(seq);
            }
            for seq in m.expired(now_ms()) {
                m.remove(seq);
            }
            m.pending
                .retain(|s, since| *s >= oldest && since.elapsed() < PENDING_GRACE);
            let mut wanted: Vec<u64> = m.pending.keys().copied().collect();
            wanted.extend(oldest.max(m.seen + 1)..=head);
            m.seen = m.seen.max(head);
            wanted
        };
        let reads = futures::stream::iter(wanted)
            .map(|seq| async move {
                let got = state.get(STATE_NS, &key.key(&format!("v:{seq}"))).await;
                (seq, got)
            })
            .buffer_unordered(READ_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        // An entry that could not be read is retried by the next sync, as
        // one not written yet is.
        let failed = reads.iter().find_map(|(_, got)| got.clone().err());
        // Applied a batch at a time, yielding in between: a node catching up
        // on thousands of entries lets lookups and other requests run.
        let mut reads = reads.into_iter().peekable();
        while reads.peek().is_some() {
            {
                let mut m = ns.mirror.lock().await;
                for (seq, got) in reads.by_ref().take(APPLY_BATCH) {
                    match got.ok().flatten() {
                        Some(bytes) => {
                            m.pending.remove(&seq);
                            let held = self.held(bytes.len());
                            if let Some(entry) = decode_entry(&bytes) {
                                m.add(seq, entry, held, settings);
                            }
                        }
                        None => {
                            m.pending.entry(seq).or_insert_with(Instant::now);
                        }
                    }
                }
                self.count(ns, &m);
            }
            self.enforce(key, ns).await;
            tokio::task::yield_now().await;
        }
        if let Some(e) = failed {
            return Err(e);
        }
        ns.mirror.lock().await.synced = Some(Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_garbage_is_refused() {
        let e = Entry {
            vector: vec![0.5, -0.25, 1.0],
            prompt: "héllo".into(),
            stored_at_ms: 7,
            expires_ms: 9,
        };
        assert_eq!(decode_entry(&encode_entry(&e)), Some(e.clone()));
        let bytes = encode_entry(&e);
        assert_eq!(decode_entry(&bytes[..10]), None);
        assert_eq!(decode_entry(b"nope"), None);
        let mut huge = bytes.clone();
        huge[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_entry(&huge), None);
    }

    fn vector(i: usize) -> Vec<f32> {
        crate::semantic::test_vector(i as u64, 64)
    }

    fn answer(i: usize) -> Answer {
        Answer::json(
            crate::policy::Route::Chat,
            bytes::Bytes::from(format!("{{\"answer\":\"number {i}\"}}")),
            crate::policy::TokenCount::new(1, 1),
        )
    }

    const TTL: Duration = Duration::from_secs(600);

    /// Lets the index's background evictions run (one thread: they run
    /// when this task yields).
    async fn settle() {
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn the_least_recently_used_namespace_is_dropped_with_its_stored_entries() {
        let settings = IndexSettings {
            max_namespaces: 3,
            ..IndexSettings::default()
        };
        let state = State::memory();
        let index = SemanticIndex::new(state.clone(), settings);
        let keys: Vec<IndexKey> = (0..5).map(|i| IndexKey::new("t", &i.to_string())).collect();
        for (i, key) in keys.iter().enumerate() {
            index
                .insert(key, vector(i), "p", &answer(i), TTL)
                .await
                .expect("insert");
            // Using namespace 0 keeps it the most recently used.
            index.search(&keys[0], &vector(0)).await.expect("search");
        }
        settle().await;
        let stats = index.stats();
        assert_eq!((stats.namespaces, stats.entries), (3, 3), "{stats:?}");
        // Namespaces 1 and 2 went, with their entry, answer and counter.
        for key in &keys[1..3] {
            assert_eq!(index.len(key).await, 0);
            assert!(index.answer(key, 1).await.expect("get").is_none());
            assert!(
                state
                    .get(STATE_NS, &key.key("seq"))
                    .await
                    .expect("get")
                    .is_none()
            );
        }
        for key in [&keys[0], &keys[3], &keys[4]] {
            assert_eq!(index.len(key).await, 1);
            assert!(index.answer(key, 1).await.expect("get").is_some());
        }
        // A dropped namespace starts again empty, and works.
        let seq = index
            .insert(&keys[1], vector(9), "p", &answer(9), TTL)
            .await
            .expect("insert");
        assert_eq!(seq, 1);
        let hit = index.search(&keys[1], &vector(9)).await.expect("search");
        assert!(hit.is_some_and(|h| h.score > 0.999));
    }

    #[tokio::test]
    async fn the_byte_bound_holds_over_many_namespaces_and_counts_what_is_held() {
        let before = crate::cache::footprint::counting::live();
        let state = State::memory();
        let settings = IndexSettings {
            max_bytes: 256 * 1024,
            max_namespaces: 1024,
            ..IndexSettings::default()
        };
        let index = SemanticIndex::new(state.clone(), settings);
        let mut peak = 0;
        for i in 0..2_000 {
            let key = IndexKey::new("t", &format!("system prompt {i}"));
            index
                .insert(&key, vector(i), &format!("prompt {i}"), &answer(i), TTL)
                .await
                .expect("insert");
            peak = peak.max(index.stats().bytes);
            // Dropped namespaces' entries are deleted in the background.
            settle().await;
        }
        let stats = index.stats();
        assert!(peak <= settings.max_bytes, "peak {peak}");
        assert!(stats.namespaces > 50, "{stats:?}");
        assert!(stats.namespaces < 2_000, "{stats:?}");
        // What the index and the state hold now, measured: the count covers
        // it but for the memory backend's expiry records of deleted keys
        // (dropped when they fall due) and its own tables.
        let measured =
            usize::try_from(crate::cache::footprint::counting::live() - before).expect("held");
        assert!(
            stats.bytes * 3 >= measured * 2,
            "counted {} of {measured} measured",
            stats.bytes
        );
        assert!(
            stats.bytes <= measured + measured / 4,
            "counted {} of {measured}",
            stats.bytes
        );
    }

    #[tokio::test]
    async fn a_namespace_larger_than_the_bound_keeps_its_newest_entries() {
        let settings = IndexSettings {
            max_bytes: 200 * 1024,
            max_namespaces: 16,
            exact_up_to: 64,
            ..IndexSettings::default()
        };
        let index = SemanticIndex::new(State::memory(), settings);
        let key = IndexKey::new("t", "ns");
        for i in 0..1_000 {
            index
                .insert(&key, vector(i), &format!("prompt {i}"), &answer(i), TTL)
                .await
                .expect("insert");
            assert!(index.stats().bytes <= settings.max_bytes, "after {i}");
        }
        let live = index.len(&key).await;
        assert!((50..1_000).contains(&live), "{live} entries kept");
        let hit = index.search(&key, &vector(999)).await.expect("search");
        assert_eq!(hit.map(|h| h.seq), Some(1_000));
        // A dropped entry's answer is gone from the in-process state.
        assert!(index.answer(&key, 1).await.expect("get").is_none());
    }

    #[test]
    fn index_keys_separate_tenants() {
        assert_ne!(IndexKey::new("a", "ns"), IndexKey::new("b", "ns"));
        assert_ne!(IndexKey::new("ab", "c"), IndexKey::new("a", "bc"));
        assert_eq!(IndexKey::new("a", "ns"), IndexKey::new("a", "ns"));
    }
}
