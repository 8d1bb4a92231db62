//! [`Mirror`]: what a node keeps in memory of one namespace of the semantic
//! index (vectors, prompts, the HNSW graph), and what that costs in bytes.

use std::collections::HashMap;
use std::mem::size_of;
use std::sync::Arc;
use std::time::Instant;

use super::hnsw::{Graph, Scored, dot};
use super::index::{Entry, Hit, IndexSettings};
use crate::cache::footprint;

/// What one key in the in-process state (the memory backend) costs besides
/// its value: the key text twice (map and expiry heap), its map slot and its
/// expiry record, with the tables' spare room.
pub(super) const STATE_KEY_BYTES: usize = 448;

/// What a node mirrors of one entry.
#[derive(Debug, Clone)]
pub(super) struct Meta {
    pub seq: u64,
    pub prompt: Arc<str>,
    pub stored_at_ms: u64,
    pub expires_ms: u64,
    pub live: bool,
    /// Bytes the entry holds in the in-process state (0 when the state is
    /// shared: another process holds them).
    pub held: u32,
}

/// One namespace's in-memory search structure.
#[derive(Debug, Default)]
pub(super) struct Mirror {
    pub dim: usize,
    vectors: Vec<f32>,
    meta: Vec<Meta>,
    pub by_seq: HashMap<u64, u32>,
    pub live: usize,
    graph: Option<Graph>,
    /// Highest sequence number read from the counter.
    pub seen: u64,
    /// Numbers the counter passed whose entry was not there yet (a writer
    /// between its counter increment and its write), with when first missed.
    pub pending: HashMap<u64, Instant>,
    pub synced: Option<Instant>,
    /// A background sync is running.
    pub syncing: bool,
    /// Bytes of every kept prompt.
    prompt_bytes: usize,
    /// Bytes live entries hold in the in-process state ([`Meta::held`]).
    held_bytes: usize,
}

impl Mirror {
    /// Adds entry `seq`, which holds `held` bytes in the in-process state.
    pub fn add(&mut self, seq: u64, entry: Entry, held: usize, settings: &IndexSettings) {
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
        let prompt: Arc<str> = entry.prompt.into();
        self.prompt_bytes += prompt_bytes(&prompt);
        let held = u32::try_from(held).unwrap_or(u32::MAX);
        self.held_bytes += held as usize;
        self.meta.push(Meta {
            seq,
            prompt,
            stored_at_ms: entry.stored_at_ms,
            expires_ms: entry.expires_ms,
            live: true,
            held,
        });
        self.by_seq.insert(seq, node);
        self.live += 1;
        match &mut self.graph {
            Some(g) => g.insert(&self.vectors, self.dim, node),
            None if self.live > settings.exact_up_to => self.rebuild(settings),
            None => {}
        }
    }

    /// Marks entry `seq` dead; whether it was live.
    pub fn remove(&mut self, seq: u64) -> bool {
        let Some(node) = self.by_seq.remove(&seq) else {
            return false;
        };
        let m = &mut self.meta[node as usize];
        m.live = false;
        self.held_bytes -= m.held as usize;
        self.live -= 1;
        true
    }

    /// Sequence numbers of the live entries.
    pub fn live_seqs(&self) -> Vec<u64> {
        self.by_seq.keys().copied().collect()
    }

    /// Live entries whose TTL passed.
    pub fn expired(&self, now_ms: u64) -> Vec<u64> {
        self.meta
            .iter()
            .filter(|e| e.live && e.expires_ms <= now_ms)
            .map(|e| e.seq)
            .collect()
    }

    /// Drops dead nodes and rebuilds the graph when it pays.
    pub fn compact(&mut self, settings: &IndexSettings) {
        let dead = self.meta.len() - self.live;
        if dead > 1024 && dead > self.live {
            self.rebuild(settings);
        }
    }

    /// Keeps the newest `keep` live entries, dropping the older ones with
    /// their memory; returns the dropped sequence numbers.
    pub fn keep_newest(&mut self, keep: usize, settings: &IndexSettings) -> Vec<u64> {
        let mut seqs = self.live_seqs();
        seqs.sort_unstable();
        let dropped: Vec<u64> = seqs[..seqs.len().saturating_sub(keep)].to_vec();
        for &seq in &dropped {
            self.remove(seq);
        }
        self.rebuild(settings);
        dropped
    }

    fn rebuild(&mut self, settings: &IndexSettings) {
        let dim = self.dim;
        let mut vectors = Vec::with_capacity(self.live * dim);
        let mut meta = Vec::with_capacity(self.live);
        let mut by_seq = HashMap::with_capacity(self.live);
        let mut prompts = 0;
        for (i, m) in self.meta.iter().enumerate() {
            if m.live {
                by_seq.insert(m.seq, meta.len() as u32);
                vectors.extend_from_slice(&self.vectors[i * dim..(i + 1) * dim]);
                prompts += prompt_bytes(&m.prompt);
                meta.push(m.clone());
            }
        }
        self.vectors = vectors;
        self.meta = meta;
        self.by_seq = by_seq;
        self.prompt_bytes = prompts;
        self.pending.shrink_to_fit();
        self.graph = (self.live > settings.exact_up_to).then(|| {
            let mut g = Graph::new();
            for node in 0..self.meta.len() as u32 {
                g.insert(&self.vectors, dim, node);
            }
            g
        });
    }

    /// What the mirror holds, in bytes: its arrays and tables, prompts and
    /// graph, and what its live entries hold in the in-process state.
    pub fn bytes(&self) -> usize {
        footprint::vec::<f32>(self.vectors.capacity())
            + footprint::vec::<Meta>(self.meta.capacity())
            + footprint::hash_table(self.by_seq.capacity(), size_of::<(u64, u32)>())
            + footprint::hash_table(self.pending.capacity(), size_of::<(u64, Instant)>())
            + self.graph.as_ref().map_or(0, Graph::bytes)
            + self.prompt_bytes
            + self.held_bytes
    }

    /// The live, unexpired entry closest to `q`.
    pub fn best(&self, q: &[f32], now_ms: u64, settings: &IndexSettings) -> Option<Hit> {
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
            expires_ms: m.expires_ms,
        })
    }
}

/// Bytes of an `Arc<str>`: two counters and the text.
fn prompt_bytes(prompt: &str) -> usize {
    footprint::alloc_size(2 * size_of::<usize>() + prompt.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize, dim: usize) -> Entry {
        let vector = crate::semantic::test_vector(i as u64, dim);
        Entry {
            vector,
            prompt: format!("prompt number {i}"),
            stored_at_ms: 0,
            expires_ms: u64::MAX,
        }
    }

    #[test]
    fn counted_bytes_match_what_is_allocated_and_trimming_frees_them() {
        let settings = IndexSettings {
            exact_up_to: 64,
            ..IndexSettings::default()
        };
        let before = footprint::counting::live();
        let mut m = Mirror::default();
        for i in 0..500 {
            // Built outside the count of the mirror's own allocations.
            m.add(i as u64 + 1, entry(i, 32), 0, &settings);
        }
        // Some dead nodes, as evictions leave them.
        for seq in 1..=50 {
            m.remove(seq);
        }
        let measured = usize::try_from(footprint::counting::live() - before).expect("held");
        let counted = m.bytes();
        assert!(
            counted >= measured,
            "counted {counted} < measured {measured}"
        );
        assert!(
            counted <= measured + measured / 4,
            "counted {counted}, measured {measured}"
        );
        let dropped = m.keep_newest(100, &settings);
        assert_eq!(dropped.len(), 350);
        assert_eq!(m.live, 100);
        let measured = usize::try_from(footprint::counting::live() - before).expect("held");
        assert!(m.bytes() >= measured, "{} < {measured}", m.bytes());
        assert!(measured < counted / 3, "trimming freed memory: {measured}");
        // The newest entries are still found.
        let q = entry(499, 32).vector;
        let hit = m.best(&q, 0, &settings).expect("a hit");
        assert_eq!(hit.seq, 500);
    }
}
