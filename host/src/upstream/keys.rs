//! A provider's pool of API keys: round-robin over the keys that are not
//! resting after the provider rejected or rate-limited them.
//!
//! Lock-free: one atomic cursor and one atomic "cooling until" per key, so
//! picking a key costs a few atomic loads on the request path.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use http::HeaderValue;

/// The key chosen for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyPick {
    /// Position of the key in the provider's `keys`.
    pub index: usize,
    /// Every key was cooling down; this one's cooldown ends first.
    pub all_cooling: bool,
}

/// Keys with their ready-made auth header values.
#[derive(Debug)]
pub(crate) struct KeyPool {
    /// `Bearer KEY` or `KEY`, marked sensitive so it never shows in debug
    /// output.
    headers: Box<[HeaderValue]>,
    /// Clock milliseconds until which each key rests; 0 = available.
    cooling_until: Box<[AtomicU64]>,
    next: AtomicUsize,
}

impl KeyPool {
    /// A pool over `headers` (one per key, in config order).
    pub fn new(headers: Vec<HeaderValue>) -> Self {
        let cooling_until = headers.iter().map(|_| AtomicU64::new(0)).collect();
        Self {
            headers: headers.into_boxed_slice(),
            cooling_until,
            next: AtomicUsize::new(0),
        }
    }

    /// Number of keys (0 for servers that need none).
    pub fn len(&self) -> usize {
        self.headers.len()
    }

    /// The auth header value of key `index`.
    pub fn header(&self, index: usize) -> Option<&HeaderValue> {
        self.headers.get(index)
    }

    /// The next available key in round-robin order; when all are cooling,
    /// the one that becomes available first. `None` when the pool is empty.
    pub fn pick(&self, now_ms: u64) -> Option<KeyPick> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for offset in 0..n {
            let index = start.wrapping_add(offset) % n;
            if self.cooling_until[index].load(Ordering::Relaxed) <= now_ms {
                if offset > 0 {
                    // Continue the rotation after the key we landed on, so the
                    // key after a cooling one does not get a double share.
                    // Racing stores only perturb the order, never correctness.
                    self.next
                        .store(start.wrapping_add(offset + 1), Ordering::Relaxed);
                }
                return Some(KeyPick {
                    index,
                    all_cooling: false,
                });
            }
        }
        let index = (0..n)
            .min_by_key(|&i| self.cooling_until[i].load(Ordering::Relaxed))
            .unwrap_or(0);
        Some(KeyPick {
            index,
            all_cooling: true,
        })
    }

    /// Rests key `index` until `until_ms` (never shortens a longer rest).
    pub fn cool(&self, index: usize, until_ms: u64) {
        if let Some(slot) = self.cooling_until.get(index) {
            slot.fetch_max(until_ms, Ordering::Relaxed);
        }
    }

    /// Milliseconds each key (in config order) still rests at `now_ms`;
    /// 0 = available.
    pub fn rest_ms(&self, now_ms: u64) -> Vec<u64> {
        self.cooling_until
            .iter()
            .map(|until| until.load(Ordering::Relaxed).saturating_sub(now_ms))
            .collect()
    }

    /// How many keys are resting at `now_ms`.
    pub fn cooling(&self, now_ms: u64) -> usize {
        self.cooling_until
            .iter()
            .filter(|until| until.load(Ordering::Relaxed) > now_ms)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> KeyPool {
        KeyPool::new(
            (0..n)
                .map(|i| HeaderValue::from_str(&format!("k{i}")).unwrap())
                .collect(),
        )
    }

    fn picks(pool: &KeyPool, now: u64, count: usize) -> Vec<usize> {
        (0..count).map(|_| pool.pick(now).unwrap().index).collect()
    }

    #[test]
    fn empty_pool_picks_nothing() {
        assert_eq!(pool(0).pick(0), None);
    }

    #[test]
    fn rotates_round_robin() {
        let p = pool(3);
        assert_eq!(picks(&p, 0, 7), [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(p.header(2).unwrap(), "k2");
    }

    #[test]
    fn skips_cooling_keys_evenly_until_their_cooldown_ends() {
        let p = pool(3);
        p.cool(1, 1_000);
        assert_eq!(p.cooling(999), 1);
        assert_eq!(picks(&p, 999, 6), [0, 2, 0, 2, 0, 2]);
        // At the deadline the key is back in rotation.
        assert_eq!(p.cooling(1_000), 0);
        let back = picks(&p, 1_000, 3);
        assert!(back.contains(&1), "{back:?}");
    }

    #[test]
    fn all_cooling_uses_the_key_that_recovers_first_and_says_so() {
        let p = pool(3);
        p.cool(0, 5_000);
        p.cool(1, 2_000);
        p.cool(2, 9_000);
        let pick = p.pick(100).unwrap();
        assert_eq!(
            pick,
            KeyPick {
                index: 1,
                all_cooling: true
            }
        );
        assert_eq!(p.cooling(100), 3);
        assert_eq!(p.pick(2_000).unwrap().index, 1);
        assert!(!p.pick(2_000).unwrap().all_cooling);
    }

    #[test]
    fn a_shorter_cooldown_never_shortens_a_longer_one() {
        let p = pool(1);
        p.cool(0, 10_000);
        p.cool(0, 1_000);
        assert_eq!(p.cooling(5_000), 1);
        p.cool(7, 1_000); // out of range: ignored
    }
}
