//! [`ByteLru`]: a least-recently-used map whose bound is the memory it
//! holds: its table, its list nodes and what each value owns, as the caller
//! counts it with [`super::footprint`].

use std::hash::Hash;
use std::mem::size_of;
use std::num::NonZeroUsize;

use lru::LruCache;

use super::footprint;

/// A table slot: a pointer to the key and one to the node.
const SLOT_BYTES: usize = 2 * size_of::<usize>();

/// An LRU map that never holds more than `max_bytes`.
pub struct ByteLru<K, V> {
    entries: LruCache<K, (V, usize)>,
    bytes: usize,
    /// What the empty map holds (its table).
    fixed: usize,
    max_bytes: usize,
}

impl<K: Hash + Eq, V> ByteLru<K, V> {
    /// A map of at most `max_bytes`, whose values own at least
    /// `min_value_bytes` each. The table is allocated here, for as many
    /// entries as fit at that size, and counted from the start (so a large
    /// bound with tiny values does not reserve a table beyond it).
    pub fn new(max_bytes: usize, min_value_bytes: usize) -> Self {
        // A table is at most 7/8 full and has a power-of-two number of
        // slots: under 2.3 slots (and control bytes) per entry.
        let per_entry = Self::node_bytes() + min_value_bytes + 3 * (SLOT_BYTES + 1);
        let cap = NonZeroUsize::new(max_bytes / per_entry).unwrap_or(NonZeroUsize::MIN);
        // The table, and the list's two sentinel nodes.
        let bytes = footprint::hash_table(cap.get(), SLOT_BYTES) + 2 * Self::node_bytes();
        Self {
            entries: LruCache::new(cap),
            bytes,
            fixed: bytes,
            max_bytes,
        }
    }

    /// One list node: key, value, its counted size and two links.
    fn node_bytes() -> usize {
        footprint::alloc_size(size_of::<K>() + size_of::<(V, usize)>() + 2 * size_of::<usize>())
    }

    /// The value of `key`, now the most recently used.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(v, _)| v)
    }

    /// Removes `key`'s entry.
    pub fn pop(&mut self, key: &K) -> Option<V> {
        let (v, bytes) = self.entries.pop(key)?;
        self.bytes -= bytes;
        Some(v)
    }

    /// Keeps `value`, which owns `value_bytes`, under `key`, evicting the
    /// least recently used entries to make room first. False (and nothing
    /// kept) when it could not fit even alone.
    pub fn put(&mut self, key: K, value: V, value_bytes: usize) -> bool {
        let bytes = Self::node_bytes() + value_bytes;
        if self.fixed + bytes > self.max_bytes {
            return false;
        }
        if self.bytes + bytes > self.max_bytes {
            self.pop(&key);
            while self.bytes + bytes > self.max_bytes {
                match self.entries.pop_lru() {
                    Some((_, (_, evicted))) => self.bytes -= evicted,
                    None => break,
                }
            }
        }
        // Replaces the key's old entry, or evicts the least recent one when
        // the table is full.
        if let Some((_, (_, old))) = self.entries.push(key, (value, bytes)) {
            self.bytes -= old;
        }
        self.bytes += bytes;
        true
    }

    /// Bytes held: the table and every entry.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_holds_and_counts_what_is_allocated() {
        let before = footprint::counting::live();
        let mut lru: ByteLru<u64, Vec<u8>> = ByteLru::new(64 * 1024, 16);
        for i in 0..10_000u64 {
            let v = vec![0u8; 16 + (i as usize * 13) % 300];
            let bytes = footprint::vec::<u8>(v.capacity());
            assert!(lru.put(i, v, bytes));
            assert!(lru.bytes() <= 64 * 1024);
        }
        let measured = usize::try_from(footprint::counting::live() - before).expect("held");
        assert!(lru.bytes() >= measured, "{} < {measured}", lru.bytes());
        assert!(
            lru.bytes() <= measured + measured / 5,
            "{} vs {measured}",
            lru.bytes()
        );
        // The most recent entries stayed.
        assert!(lru.get(&9_999).is_some());
        assert!(lru.get(&0).is_none());
        assert!(
            !lru.put(1, vec![0; 100_000], 100_000),
            "larger than the bound"
        );
    }
}
