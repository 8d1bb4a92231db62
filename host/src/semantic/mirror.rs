//! [`Mirror`]: what a node keeps in memory of one namespace of the semantic
//! index (vectors, prompts, the HNSW graph), and what that costs in bytes.

use std::collections::{HashMap, VecDeque};
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

/// Most entries one segment holds before the next one opens.
const SEGMENT_ENTRIES: usize = 4096;
/// The share of the index's byte bound one segment may hold before the next
/// one opens, so dropping the oldest segment frees a bounded part of it.
const SEGMENT_SHARE: usize = 8;

/// One namespace's in-memory search structure: a run of segments, oldest
/// first, each with its own vectors and (once the namespace outgrew the
/// exact scan) its own HNSW graph. New entries go into the newest segment;
/// old ones leave by whole segments. Nothing is ever rebuilt, so no lookup
/// waits on a rebuild and trimming frees memory at once.
#[derive(Debug, Default)]
pub(super) struct Mirror {
    pub dim: usize,
    segments: VecDeque<Segment>,
    /// Number of the oldest segment in `segments`.
    first_segment: u64,
    /// Where each live entry is: its segment's number and its node there.
    by_seq: HashMap<u64, (u64, u32)>,
    pub live: usize,
    /// The namespace once held more than the exact scan covers: segments
    /// opened since have graphs.
    graphs: bool,
    /// Highest sequence number read from the counter.
    pub seen: u64,
    /// Numbers the counter passed whose entry was not there yet (a writer
    /// between its counter increment and its write), with when first missed.
    pub pending: HashMap<u64, Instant>,
    pub synced: Option<Instant>,
    /// A background sync is running.
    pub syncing: bool,
    /// Bytes live entries hold in the in-process state ([`Meta::held`]).
    held_bytes: usize,
}

/// A run of entries added together, dropped together.
#[derive(Debug, Default)]
struct Segment {
    vectors: Vec<f32>,
    meta: Vec<Meta>,
    graph: Option<Graph>,
    live: usize,
    /// Bytes of every kept prompt.
    prompt_bytes: usize,
    /// No more entries go here.
    sealed: bool,
}

impl Segment {
    fn bytes(&self) -> usize {
        footprint::vec::<f32>(self.vectors.capacity())
            + footprint::vec::<Meta>(self.meta.capacity())
            + self.graph.as_ref().map_or(0, Graph::bytes)
            + self.prompt_bytes
    }

    /// The live, unexpired entry of this segment closest to `q`.
    fn best(&self, dim: usize, q: &[f32], now_ms: u64, ef: usize) -> Option<Scored> {
        let usable = |m: &Meta| m.live && m.expires_ms > now_ms;
        match &self.graph {
            Some(g) => g
                .search(&self.vectors, dim, q, ef)
                .into_iter()
                .find(|s| usable(&self.meta[s.node as usize])),
            None => self
                .meta
                .iter()
                .enumerate()
                .filter(|(_, m)| usable(m))
                .map(|(i, _)| Scored {
                    score: dot(q, &self.vectors[i * dim..(i + 1) * dim]),
                    node: i as u32,
                })
                .max(),
        }
    }
}

impl Mirror {
    /// Adds entry `seq`, which holds `held` bytes in the in-process state.
    pub fn add(&mut self, seq: u64, entry: Entry, held: usize, settings: &IndexSettings) {
        if self.by_seq.contains_key(&seq) {
            return;
        }
        if self.segments.is_empty() {
            self.dim = entry.vector.len();
        }
        if entry.vector.len() != self.dim || self.dim == 0 {
            return; // another embedder's vector: cannot be compared
        }
        if !self.graphs && self.live >= settings.exact_up_to {
            // Too many to scan: from now on segments have graphs. Those
            // without one (at most the exact scan's worth) leave in time.
            self.graphs = true;
            self.seal_newest();
        }
        if self.segments.back().is_none_or(|s| s.sealed) {
            // Most namespaces never need a second segment: room for one.
            self.segments.reserve_exact(1);
            self.segments.push_back(Segment {
                graph: self.graphs.then(Graph::new),
                ..Segment::default()
            });
        }
        let number = self.first_segment + self.segments.len() as u64 - 1;
        let dim = self.dim;
        let segment = self
            .segments
            .back_mut()
            .expect("a segment was just ensured");
        let node = segment.meta.len() as u32;
        segment.vectors.extend_from_slice(&entry.vector);
        let prompt: Arc<str> = entry.prompt.into();
        segment.prompt_bytes += prompt_bytes(&prompt);
        let held = u32::try_from(held).unwrap_or(u32::MAX);
        self.held_bytes += held as usize;
        segment.meta.push(Meta {
            seq,
            prompt,
            stored_at_ms: entry.stored_at_ms,
            expires_ms: entry.expires_ms,
            live: true,
            held,
        });
        if let Some(g) = &mut segment.graph {
            g.insert(&segment.vectors, dim, node);
        }
        segment.live += 1;
        let full = segment.meta.len() >= SEGMENT_ENTRIES
            || segment.bytes() >= settings.max_bytes / SEGMENT_SHARE;
        self.by_seq.insert(seq, (number, node));
        self.live += 1;
        if full {
            self.seal_newest();
        }
    }

    /// Closes the newest segment: the next entry opens another.
    fn seal_newest(&mut self) {
        if let Some(segment) = self.segments.back_mut() {
            segment.sealed = true;
            segment.vectors.shrink_to_fit();
            segment.meta.shrink_to_fit();
        }
    }

    /// Marks entry `seq` dead; whether it was live. A segment left with no
    /// live entry goes with its memory.
    pub fn remove(&mut self, seq: u64) -> bool {
        let Some((number, node)) = self.by_seq.remove(&seq) else {
            return false;
        };
        let index = (number - self.first_segment) as usize;
        let segment = &mut self.segments[index];
        let m = &mut segment.meta[node as usize];
        m.live = false;
        self.held_bytes -= m.held as usize;
        segment.live -= 1;
        self.live -= 1;
        if segment.live == 0 && segment.sealed {
            // Its memory goes now; its place in the run when it is oldest.
            *segment = Segment {
                sealed: true,
                ..Segment::default()
            };
        }
        self.drop_empty_segments();
        true
    }

    /// Drops the oldest segments while they have no live entry (entries
    /// die roughly oldest first: by the entry bound and by TTL).
    fn drop_empty_segments(&mut self) {
        while self.segments.front().is_some_and(|s| s.live == 0) {
            self.segments.pop_front();
            self.first_segment += 1;
        }
        if self.segments.is_empty() {
            // Empty again: the next entry starts afresh.
            self.graphs = false;
            self.by_seq.shrink_to_fit();
        }
    }

    /// Sequence numbers of the live entries.
    pub fn live_seqs(&self) -> Vec<u64> {
        self.by_seq.keys().copied().collect()
    }

    /// Whether entry `seq` is live here.
    pub fn contains(&self, seq: u64) -> bool {
        self.by_seq.contains_key(&seq)
    }

    /// Live entries numbered below `oldest`.
    pub fn older_than(&self, oldest: u64) -> Vec<u64> {
        self.by_seq
            .keys()
            .copied()
            .filter(|s| *s < oldest)
            .collect()
    }

    /// Live entries whose TTL passed.
    pub fn expired(&self, now_ms: u64) -> Vec<u64> {
        self.segments
            .iter()
            .flat_map(|s| &s.meta)
            .filter(|e| e.live && e.expires_ms <= now_ms)
            .map(|e| e.seq)
            .collect()
    }

    /// Drops the oldest segment, live entries and all, with its memory;
    /// returns the sequence numbers of the live entries it dropped.
    pub fn drop_oldest(&mut self) -> Vec<u64> {
        let Some(segment) = self.segments.pop_front() else {
            return Vec::new();
        };
        self.first_segment += 1;
        let mut dropped = Vec::with_capacity(segment.live);
        for m in segment.meta.iter().filter(|m| m.live) {
            self.by_seq.remove(&m.seq);
            self.held_bytes -= m.held as usize;
            dropped.push(m.seq);
        }
        self.live -= dropped.len();
        self.drop_empty_segments();
        if self.by_seq.capacity() > 4 * self.by_seq.len() + 64 {
            self.by_seq.shrink_to_fit();
        }
        self.pending.shrink_to_fit();
        dropped
    }

    /// What the mirror holds, in bytes: its segments and tables, and what
    /// its live entries hold in the in-process state.
    pub fn bytes(&self) -> usize {
        footprint::vec::<Segment>(self.segments.capacity())
            + self.segments.iter().map(Segment::bytes).sum::<usize>()
            + footprint::hash_table(self.by_seq.capacity(), size_of::<(u64, (u64, u32))>())
            + footprint::hash_table(self.pending.capacity(), size_of::<(u64, Instant)>())
            + self.held_bytes
    }

    /// The live, unexpired entry closest to `q`.
    pub fn best(&self, q: &[f32], now_ms: u64, settings: &IndexSettings) -> Option<Hit> {
        if q.len() != self.dim || self.live == 0 {
            return None;
        }
        let (segment, best) = self
            .segments
            .iter()
            .filter(|s| s.live > 0)
            .filter_map(|s| Some((s, s.best(self.dim, q, now_ms, settings.ef_search)?)))
            .max_by(|a, b| a.1.cmp(&b.1))?;
        let m = &segment.meta[best.node as usize];
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

    /// Settings whose segments hold about a hundred 32-float entries.
    fn small_segments() -> IndexSettings {
        IndexSettings {
            exact_up_to: 64,
            max_bytes: 256 * 1024,
            ..IndexSettings::default()
        }
    }

    #[test]
    fn counted_bytes_match_what_is_allocated_and_trimming_frees_them() {
        let settings = small_segments();
        let before = footprint::counting::live();
        let mut m = Mirror::default();
        for i in 0..500 {
            // Built outside the count of the mirror's own allocations.
            m.add(i as u64 + 1, entry(i, 32), 0, &settings);
        }
        assert!(m.segments.len() >= 4, "{} segments", m.segments.len());
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
        let mut dropped = Vec::new();
        while m.live > 150 {
            dropped.extend(m.drop_oldest());
        }
        // The oldest went, and only they: what is left is the newest run.
        dropped.sort_unstable();
        assert_eq!(dropped, (51..=500 - m.live as u64).collect::<Vec<_>>());
        let mut left = m.live_seqs();
        left.sort_unstable();
        assert_eq!(left, (501 - m.live as u64..=500).collect::<Vec<_>>());
        let measured = usize::try_from(footprint::counting::live() - before).expect("held");
        assert!(m.bytes() >= measured, "{} < {measured}", m.bytes());
        assert!(measured < counted / 2, "trimming freed memory: {measured}");
        // The newest entries are still found.
        let q = entry(499, 32).vector;
        let hit = m.best(&q, 0, &settings).expect("a hit");
        assert_eq!(hit.seq, 500);
    }

    #[test]
    fn a_segment_whose_entries_all_died_frees_its_memory() {
        let settings = small_segments();
        let mut m = Mirror::default();
        for i in 0..400 {
            m.add(i as u64 + 1, entry(i, 32), 0, &settings);
        }
        let full = m.bytes();
        let segments = m.segments.len();
        // The entry bound and TTLs remove the oldest entries one by one.
        for seq in 1..=200 {
            m.remove(seq);
        }
        assert!(m.segments.len() < segments, "{} segments", m.segments.len());
        assert!(m.bytes() < full * 3 / 4, "{} of {full}", m.bytes());
        for seq in 201..=400 {
            m.remove(seq);
        }
        assert_eq!((m.live, m.segments.len()), (0, 0));
        assert!(m.best(&entry(1, 32).vector, 0, &settings).is_none());
    }

    #[test]
    fn lookups_across_segments_find_the_nearest_entry() {
        let settings = small_segments();
        let (dim, n) = (32, 3000);
        let mut m = Mirror::default();
        let vectors: Vec<Vec<f32>> = (0..n).map(|i| entry(i, dim).vector).collect();
        for i in 0..n {
            m.add(i as u64 + 1, entry(i, dim), 0, &settings);
        }
        assert!(m.segments.len() > 10, "{} segments", m.segments.len());
        assert!(m.graphs);
        let mut found = 0;
        for q in 0..100u64 {
            let query = crate::semantic::test_vector(q * 7919 + 5, dim);
            let exact = (0..n)
                .max_by(|a, b| dot(&query, &vectors[*a]).total_cmp(&dot(&query, &vectors[*b])))
                .expect("entries");
            let hit = m.best(&query, 0, &settings).expect("a hit");
            if hit.seq == exact as u64 + 1 {
                found += 1;
            }
        }
        assert!(found >= 95, "recall@1 was {found}/100");
    }
}
