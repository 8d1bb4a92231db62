//! The semantic index: prompt vectors and their answers in the shared state,
//! mirrored on every node by an in-memory search structure.
//!
//! Layout, in state namespace [`STATE_NS`], per index namespace `h` (a hash
//! of tenant and plugin namespace, so tenants never share entries):
//! - `{h}:seq`: a counter; each stored entry takes the next number;
//! - `{h}:a:{seq}`: the answer ([`Answer::encode`]), written first;
//! - `{h}:v:{seq}`: the vector, prompt and times ([`encode_entry`]).
//!
//! Every entry expires with its TTL. The counter is an append log: a node
//! that sees it move reads the new entries, so nodes converge within
//! [`IndexSettings::sync_every`] of a write. The size bound is by sequence:
//! only the last `max_entries` numbers are live; storing entry `n` deletes
//! entry `n - max_entries`, and nodes drop it from their mirror.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use parking_lot::Mutex;

use super::hnsw::{Graph, Scored, dot};
use crate::cache::Answer;
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
}

impl Default for IndexSettings {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            sync_every: Duration::from_millis(250),
            exact_up_to: 2048,
            ef_search: 64,
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
}

/// What a node mirrors of one entry.
#[derive(Debug, Clone)]
struct Meta {
    seq: u64,
    prompt: Arc<str>,
    stored_at_ms: u64,
    expires_ms: u64,
    live: bool,
}

/// One namespace's in-memory search structure.
#[derive(Debug, Default)]
struct Mirror {
    dim: usize,
    vectors: Vec<f32>,
    meta: Vec<Meta>,
    by_seq: HashMap<u64, u32>,
    live: usize,
    graph: Option<Graph>,
    /// Highest sequence number read from the counter.
    seen: u64,
    /// Numbers the counter passed whose entry was not there yet (a writer
    /// between its counter increment and its write), with when first missed.
    pending: HashMap<u64, Instant>,
    synced: Option<Instant>,
    /// A background sync is running.
    syncing: bool,
}

impl Mirror {
    fn add(&mut self, seq: u64, entry: Entry, settings: &IndexSettings) {
        if self.by_seq.contains_key(&seq) {
            return;
        }
        if self.meta.is_empty() {
            self.dim = entry.vector.len();
        }
        if entry.vector.len() != self.dim || self.dim == 0 {
            return; // another embedder's vector: cannot be compared
        }
        let node = self.meta.len() as u32;
        self.vectors.extend_from_slice(&entry.vector);
        self.meta.push(Meta {
            seq,
            prompt: entry.prompt.into(),
            stored_at_ms: entry.stored_at_ms,
            expires_ms: entry.expires_ms,
            live: true,
        });
        self.by_seq.insert(seq, node);
        self.live += 1;
        match &mut self.graph {
            Some(g) => g.insert(&self.vectors, self.dim, node),
            None if self.live > settings.exact_up_to => self.rebuild(settings),
            None => {}
        }
    }

    fn remove(&mut self, seq: u64) {
        if let Some(node) = self.by_seq.remove(&seq) {
            self.meta[node as usize].live = false;
            self.live -= 1;
        }
    }

    /// Drops dead nodes and rebuilds the graph when it pays.
    fn compact(&mut self, settings: &IndexSettings) {
        let dead = self.meta.len() - self.live;
        if dead > 1024 && dead > self.live {
            self.rebuild(settings);
        }
    }

    fn rebuild(&mut self, settings: &IndexSettings) {
        let dim = self.dim;
        let mut vectors = Vec::with_capacity(self.live * dim);
        let mut meta = Vec::with_capacity(self.live);
        let mut by_seq = HashMap::with_capacity(self.live);
        for (i, m) in self.meta.iter().enumerate() {
            if m.live {
                by_seq.insert(m.seq, meta.len() as u32);
                vectors.extend_from_slice(&self.vectors[i * dim..(i + 1) * dim]);
                meta.push(m.clone());
            }
        }
        self.vectors = vectors;
        self.meta = meta;
        self.by_seq = by_seq;
        self.graph = (self.live > settings.exact_up_to).then(|| {
            let mut g = Graph::new();
            for node in 0..self.meta.len() as u32 {
                g.insert(&self.vectors, dim, node);
            }
            g
        });
    }

    /// The live, unexpired entry closest to `q`.
    fn best(&self, q: &[f32], now_ms: u64, settings: &IndexSettings) -> Option<Hit> {
        if q.len() != self.dim || self.live == 0 {
            return None;
        }
        let usable = |m: &Meta| m.live && m.expires_ms > now_ms;
        let best = match &self.graph {
            Some(g) => g
                .search(&self.vectors, self.dim, q, settings.ef_search)
                .into_iter()
                .find(|s| usable(&self.meta[s.node as usize])),
            None => self
                .meta
                .iter()
                .enumerate()
                .filter(|(_, m)| usable(m))
                .map(|(i, _)| Scored {
                    score: dot(q, &self.vectors[i * self.dim..(i + 1) * self.dim]),
                    node: i as u32,
                })
                .max(),
        }?;
        let m = &self.meta[best.node as usize];
        Some(Hit {
            seq: m.seq,
            score: best.score,
            prompt: m.prompt.to_string(),
            stored_at_ms: m.stored_at_ms,
        })
    }
}

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

/// Reads what other nodes appended to `key`'s namespace since the last sync
/// into `mirror`. The mirror is locked only to plan and to apply, never
/// across a round trip, so lookups keep answering from it meanwhile.
async fn sync(
    state: &State,
    settings: &IndexSettings,
    key: &IndexKey,
    mirror: &tokio::sync::Mutex<Mirror>,
) -> Result<(), StateError> {
    let head = state
        .get(STATE_NS, &key.key("seq"))
        .await?
        .and_then(|b| std::str::from_utf8(&b).ok()?.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let max = settings.max_entries.max(1);
    let oldest = head.saturating_sub(max) + 1;
    let wanted = {
        let mut m = mirror.lock().await;
        // Evicted by the size bound.
        let evicted: Vec<u64> = m.by_seq.keys().copied().filter(|s| *s < oldest).collect();
        for seq in evicted {
            m.remove(seq);
        }
        let now = now_ms();
        let expired: Vec<u64> = m
            .meta
            .iter()
            .filter(|e| e.live && e.expires_ms <= now)
            .map(|e| e.seq)
            .collect();
        for seq in expired {
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
    let mut m = mirror.lock().await;
    for (seq, got) in reads {
        match got? {
            Some(bytes) => {
                m.pending.remove(&seq);
                if let Some(entry) = decode_entry(&bytes) {
                    m.add(seq, entry, settings);
                }
            }
            None => {
                m.pending.entry(seq).or_insert_with(Instant::now);
            }
        }
    }
    m.compact(settings);
    m.synced = Some(Instant::now());
    Ok(())
}

/// The index over the shared state, with this node's mirrors.
pub struct SemanticIndex {
    state: State,
    settings: IndexSettings,
    mirrors: Mutex<HashMap<IndexKey, Arc<tokio::sync::Mutex<Mirror>>>>,
}

impl SemanticIndex {
    pub fn new(state: State, settings: IndexSettings) -> Self {
        Self {
            state,
            settings,
            mirrors: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &IndexSettings {
        &self.settings
    }

    fn mirror(&self, key: &IndexKey) -> Arc<tokio::sync::Mutex<Mirror>> {
        self.mirrors.lock().entry(key.clone()).or_default().clone()
    }

    /// The closest live entry to `vector` in `key`'s namespace, from this
    /// node's mirror: no round trip to the shared state, except the first
    /// lookup of a namespace on this node, which reads it once. A mirror
    /// older than `sync_every` is brought up to date in the background.
    pub async fn search(&self, key: &IndexKey, vector: &[f32]) -> Result<Option<Hit>, StateError> {
        let mirror = self.mirror(key);
        if mirror.lock().await.synced.is_none() {
            // A namespace this node has never read: one catch-up, then
            // every later lookup answers from memory.
            sync(&self.state, &self.settings, key, &mirror).await?;
        }
        let mut m = mirror.lock().await;
        let stale = m
            .synced
            .is_none_or(|t| t.elapsed() >= self.settings.sync_every);
        if stale && !m.syncing {
            m.syncing = true;
            let (state, settings, key) = (self.state.clone(), self.settings, key.clone());
            let mirror = mirror.clone();
            tokio::spawn(async move {
                if let Err(e) = sync(&state, &settings, &key, &mirror).await {
                    tracing::debug!(error = %e, "semantic index sync failed; retried on the next lookup");
                }
                mirror.lock().await.syncing = false;
            });
        }
        Ok(m.best(vector, now_ms(), &self.settings))
    }

    /// Brings this node's mirror of `key` up to date now (tools and tests;
    /// lookups do it in the background).
    pub async fn sync_now(&self, key: &IndexKey) -> Result<(), StateError> {
        sync(&self.state, &self.settings, key, &self.mirror(key)).await
    }

    /// Entries this node mirrors for `key` (live, possibly expired).
    pub async fn len(&self, key: &IndexKey) -> usize {
        self.mirror(key).lock().await.live
    }

    /// The answer stored with entry `seq`, if it is still there.
    pub async fn answer(&self, key: &IndexKey, seq: u64) -> Result<Option<Answer>, StateError> {
        let raw = self
            .state
            .get(STATE_NS, &key.key(&format!("a:{seq}")))
            .await?;
        Ok(raw
            .and_then(|b| Answer::decode(&b))
            .and_then(|(answer, left)| left.map(|_| answer)))
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
        let seq = self.state.incr(STATE_NS, &key.key("seq"), 1, None).await?;
        let seq = u64::try_from(seq).unwrap_or(0);
        let stored_at_ms = now_ms();
        let entry = Entry {
            vector,
            prompt: prompt.to_owned(),
            stored_at_ms,
            expires_ms: stored_at_ms.saturating_add(ttl.as_millis() as u64),
        };
        // The answer first: a node that reads the entry finds its answer.
        let answer_key = key.key(&format!("a:{seq}"));
        let entry_key = key.key(&format!("v:{seq}"));
        self.state
            .set(STATE_NS, &answer_key, &answer.encode(ttl), Some(ttl))
            .await?;
        self.state
            .set(STATE_NS, &entry_key, &encode_entry(&entry), Some(ttl))
            .await?;
        let max = self.settings.max_entries.max(1);
        if seq > max {
            let old = seq - max;
            // Best effort: the TTL removes it anyway, and mirrors skip it.
            let _ = self
                .state
                .delete(STATE_NS, &key.key(&format!("v:{old}")))
                .await;
            let _ = self
                .state
                .delete(STATE_NS, &key.key(&format!("a:{old}")))
                .await;
        }
        // This node sees its own write at once.
        let mirror = self.mirror(key);
        let mut m = mirror.lock().await;
        m.add(seq, entry, &self.settings);
        if seq == m.seen + 1 {
            // Nothing unseen in between: the next sync need not re-read it.
            m.seen = seq;
        }
        let oldest = seq.saturating_sub(max) + 1;
        let evicted: Vec<u64> = m.by_seq.keys().copied().filter(|s| *s < oldest).collect();
        for s in evicted {
            m.remove(s);
        }
        Ok(seq)
    }

    /// Live entries per namespace this node mirrors, by [`IndexKey::label`].
    pub fn sizes(&self) -> Vec<(String, usize)> {
        let mirrors: Vec<(IndexKey, Arc<tokio::sync::Mutex<Mirror>>)> = self
            .mirrors
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        mirrors
            .into_iter()
            .filter_map(|(k, m)| m.try_lock().ok().map(|m| (k.label().to_owned(), m.live)))
            .collect()
    }

    /// Namespaces this node mirrors.
    pub fn namespaces(&self) -> HashSet<IndexKey> {
        self.mirrors.lock().keys().cloned().collect()
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

    #[test]
    fn index_keys_separate_tenants() {
        assert_ne!(IndexKey::new("a", "ns"), IndexKey::new("b", "ns"));
        assert_ne!(IndexKey::new("ab", "c"), IndexKey::new("a", "bc"));
        assert_eq!(IndexKey::new("a", "ns"), IndexKey::new("a", "ns"));
    }
}
