//! The memory backend: in-process maps with TTL, and the limiter
//! (`limiter::run`) over them. Also the local fallback of the Redis backend
//! in fail-open mode.
//!
//! The key space is split into shards by hash tag (like Redis Cluster slots),
//! so every bucket of a namespace sits in one shard and a charge is atomic
//! under that shard's lock. Locks are `parking_lot` mutexes held for
//! microseconds and never across an `.await`.

use std::cmp::Reverse;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::backend::{Answer, Backend};
use super::budget::{BudgetCall, BudgetMemory, BudgetReply};
use super::keys;
use super::limiter::{self, LimitCall, Limited};
use super::{OnError, StateError, StateHealth};
use crate::policy::ChargeResult;

const SHARDS: usize = 16;
/// Expired entries dropped per write, so memory is reclaimed without a
/// sweeper task and no single call pays for a large sweep.
const PURGE_PER_WRITE: usize = 32;

/// In-process state.
pub(crate) struct MemoryBackend {
    shards: Box<[Mutex<Shard>]>,
    /// Budget counters and spend hashes.
    budgets: BudgetMemory,
    /// Zero point of the limiter's clock (monotonic: wall-clock jumps must
    /// not refill or drain buckets).
    epoch: Instant,
}

struct Entry {
    value: Vec<u8>,
    expires_at: Option<Instant>,
    /// When this entry's record in the expiry heap fires, if it has one.
    heap_at: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

#[derive(Default)]
struct Shard {
    map: HashMap<String, Entry>,
    /// Expiry records, soonest first. At most one live record per entry
    /// (`Entry::heap_at`); a record that no longer matches is skipped.
    expiries: BinaryHeap<Reverse<(Instant, String)>>,
}

impl Shard {
    fn get(&mut self, key: &str, now: Instant) -> Option<&Entry> {
        if self.map.get(key).is_some_and(|e| !e.live(now)) {
            self.map.remove(key);
        }
        self.map.get(key)
    }

    fn put(&mut self, key: &str, value: Vec<u8>, ttl: Option<Duration>, now: Instant) {
        // An unrepresentable deadline is as good as none.
        let expires_at = ttl.and_then(|t| now.checked_add(t));
        let heap_at = self.map.get(key).and_then(|e| e.heap_at);
        let entry = Entry {
            value,
            expires_at,
            heap_at,
        };
        self.map.insert(key.to_owned(), entry);
        self.schedule(key);
        self.purge(now);
    }

    /// Makes sure the entry's expiry has a heap record no later than it.
    fn schedule(&mut self, key: &str) {
        let Some(entry) = self.map.get_mut(key) else {
            return;
        };
        let Some(at) = entry.expires_at else {
            return;
        };
        // An earlier record reschedules itself when it fires (see `purge`).
        if entry.heap_at.is_some_and(|h| h <= at) {
            return;
        }
        entry.heap_at = Some(at);
        self.expiries.push(Reverse((at, key.to_owned())));
    }

    /// Removes `key`. Its expiry record, if any, is left to fall due, unless
    /// stale records pass a quarter of the live entries (and 64): then they
    /// are dropped at once, so deleting keys with long TTLs does not
    /// accumulate them. A record is about 100 bytes that no cache's byte
    /// count includes, so the slack is kept small: the semantic index at its
    /// bound deletes entries all the time.
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let removed = self.map.remove(key)?;
        if removed.heap_at.is_some()
            && self.expiries.len() > self.map.len() + self.map.len() / 4 + 64
        {
            let map = &self.map;
            self.expiries
                .retain(|Reverse((at, k))| map.get(k).is_some_and(|e| e.heap_at == Some(*at)));
            self.expiries.shrink_to_fit();
        }
        Some(removed)
    }

    fn purge(&mut self, now: Instant) {
        for _ in 0..PURGE_PER_WRITE {
            match self.expiries.peek() {
                Some(Reverse((at, _))) if *at <= now => {}
                _ => return,
            }
            let Some(Reverse((at, key))) = self.expiries.pop() else {
                return;
            };
            let Some(entry) = self.map.get_mut(&key) else {
                continue;
            };
            if entry.heap_at != Some(at) {
                continue; // stale record
            }
            entry.heap_at = None;
            if !entry.live(now) {
                self.map.remove(&key);
            } else {
                self.schedule(&key);
            }
        }
    }
}

impl MemoryBackend {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            budgets: BudgetMemory::default(),
            epoch: Instant::now(),
        }
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        let mut h = DefaultHasher::new();
        keys::hash_tag(key).hash(&mut h);
        &self.shards[(h.finish() % SHARDS as u64) as usize]
    }

    pub(crate) fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let now = Instant::now();
        let mut shard = self.shard(key).lock();
        Ok(shard.get(key, now).map(|e| e.value.clone()))
    }

    pub(crate) fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StateError> {
        let now = Instant::now();
        self.shard(key).lock().put(key, value.to_vec(), ttl, now);
        Ok(())
    }

    pub(crate) fn delete(&self, key: &str) -> Result<bool, StateError> {
        let now = Instant::now();
        let mut shard = self.shard(key).lock();
        Ok(shard.remove(key).is_some_and(|e| e.live(now)))
    }

    /// Deletes `key` if it holds `token`; whether it did.
    pub(crate) fn release(&self, key: &str, token: &[u8]) -> Result<bool, StateError> {
        let now = Instant::now();
        let mut shard = self.shard(key).lock();
        if shard.get(key, now).map(|e| e.value.as_slice()) != Some(token) {
            return Ok(false);
        }
        shard.remove(key);
        Ok(true)
    }

    /// `set`, then `release`. The two keys may live in different shards, so
    /// this is two steps, in the order Redis runs them: the value is visible
    /// before the lock goes.
    pub(crate) fn set_and_release(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        lock: &str,
        token: &[u8],
    ) -> Result<bool, StateError> {
        self.set(key, value, ttl)?;
        self.release(lock, token)
    }

    /// The value of `key`, or else `lock` taken for `token` when free. Both
    /// keys share a hash tag, so one shard lock covers both.
    pub(crate) fn get_or_lock(
        &self,
        key: &str,
        lock: &str,
        token: &[u8],
        ttl: Duration,
    ) -> Result<(Option<Vec<u8>>, bool), StateError> {
        let now = Instant::now();
        let mut shard = self.shard(key).lock();
        if let Some(e) = shard.get(key, now) {
            return Ok((Some(e.value.clone()), false));
        }
        if shard.get(lock, now).is_some() {
            return Ok((None, false));
        }
        shard.put(lock, token.to_vec(), Some(ttl), now);
        Ok((None, true))
    }

    pub(crate) fn incr(
        &self,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, StateError> {
        let now = Instant::now();
        let mut shard = self.shard(key).lock();
        let (current, keep_ttl) = match shard.get(key, now) {
            Some(e) => (parse_integer(&e.value)?, Some(e.expires_at)),
            None => (0, None),
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| StateError::Invalid("increment or decrement would overflow".into()))?;
        let value = next.to_string().into_bytes();
        match keep_ttl {
            // Existing key: keep its expiry, as INCRBY does.
            Some(expires_at) => {
                if let Some(e) = shard.map.get_mut(key) {
                    e.value = value;
                    e.expires_at = expires_at;
                }
                shard.purge(now);
            }
            None => shard.put(key, value, ttl, now),
        }
        Ok(next)
    }

    pub(crate) fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StateError> {
        let now = Instant::now();
        let mut shard = self.shard(key).lock();
        let current = shard.get(key, now).map(|e| e.value.as_slice());
        if current != expected {
            return Ok(false);
        }
        shard.put(key, value.to_vec(), ttl, now);
        Ok(true)
    }

    /// Runs the limiter over `call.keys` (bucket keys of one namespace, so
    /// one shard).
    pub(crate) fn limit(&self, call: &LimitCall<'_>) -> Result<Limited, StateError> {
        let keys = call.keys;
        let Some(first) = keys.first() else {
            return Ok(Limited {
                result: ChargeResult {
                    admitted: true,
                    ..ChargeResult::default()
                },
                granted: Vec::new(),
            });
        };
        // One namespace, one hash tag, one shard: the lock below covers all.
        debug_assert!(
            keys.iter()
                .all(|k| super::keys::hash_tag(k) == super::keys::hash_tag(first))
        );
        let now = Instant::now();
        let now_ms = now.duration_since(self.epoch).as_secs_f64() * 1000.0;
        let mut shard = self.shard(first).lock();
        let outcome = {
            let states: Vec<Option<&[u8]>> = keys
                .iter()
                .map(|k| {
                    shard
                        .map
                        .get(k)
                        .filter(|e| e.live(now))
                        .map(|e| e.value.as_slice())
                })
                .collect();
            limiter::run(&states, call, now_ms)
        };
        for (key, write) in keys.iter().zip(outcome.writes) {
            if let Some((state, ttl_ms)) = write {
                shard.put(
                    key,
                    state.into_bytes(),
                    Some(Duration::from_millis(ttl_ms)),
                    now,
                );
            }
        }
        Ok(outcome.limited)
    }
}

// === impl Backend ===

/// Every operation is synchronous and cheap; the trait's futures are ready.
impl Backend for MemoryBackend {
    fn get<'a>(&'a self, key: &'a str) -> Answer<'a, Option<Vec<u8>>> {
        Box::pin(std::future::ready(MemoryBackend::get(self, key)))
    }

    fn set<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Option<Duration>) -> Answer<'a, ()> {
        Box::pin(std::future::ready(MemoryBackend::set(
            self, key, value, ttl,
        )))
    }

    fn delete<'a>(&'a self, key: &'a str) -> Answer<'a, bool> {
        Box::pin(std::future::ready(MemoryBackend::delete(self, key)))
    }

    fn incr<'a>(&'a self, key: &'a str, delta: i64, ttl: Option<Duration>) -> Answer<'a, i64> {
        Box::pin(std::future::ready(MemoryBackend::incr(
            self, key, delta, ttl,
        )))
    }

    fn compare_and_swap<'a>(
        &'a self,
        key: &'a str,
        expected: Option<&'a [u8]>,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> Answer<'a, bool> {
        let swapped = MemoryBackend::compare_and_swap(self, key, expected, value, ttl);
        Box::pin(std::future::ready(swapped))
    }

    fn release<'a>(&'a self, key: &'a str, token: &'a [u8]) -> Answer<'a, bool> {
        Box::pin(std::future::ready(MemoryBackend::release(self, key, token)))
    }

    fn set_and_release<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
        lock: &'a str,
        token: &'a [u8],
    ) -> Answer<'a, bool> {
        let released = MemoryBackend::set_and_release(self, key, value, ttl, lock, token);
        Box::pin(std::future::ready(released))
    }

    fn get_or_lock<'a>(
        &'a self,
        key: &'a str,
        lock: &'a str,
        token: &'a [u8],
        ttl: Duration,
    ) -> Answer<'a, (Option<Vec<u8>>, bool)> {
        let got = MemoryBackend::get_or_lock(self, key, lock, token, ttl);
        Box::pin(std::future::ready(got))
    }

    fn limit<'a>(&'a self, call: LimitCall<'a>) -> Answer<'a, Limited> {
        Box::pin(std::future::ready(MemoryBackend::limit(self, &call)))
    }

    fn budget<'a>(&'a self, call: BudgetCall<'a>) -> Answer<'a, BudgetReply> {
        Box::pin(std::future::ready(Ok(self.budgets.call(&call))))
    }

    fn budget_hash<'a>(&'a self, key: &'a str) -> Answer<'a, Vec<(String, i64)>> {
        Box::pin(std::future::ready(Ok(self.budgets.hash(key))))
    }

    fn health(&self) -> StateHealth {
        StateHealth {
            backend: "memory",
            on_error: OnError::FailOpen,
            degraded: false,
            fallbacks: 0,
            errors: 0,
            last_error: None,
        }
    }
}

/// Parses a counter the way Redis does: optional `-`, digits, no leading
/// zeros, no spaces, in range of i64.
fn parse_integer(bytes: &[u8]) -> Result<i64, StateError> {
    let not_integer = || StateError::Invalid("value is not an integer or out of range".into());
    let s = std::str::from_utf8(bytes).map_err(|_| not_integer())?;
    let digits = s.strip_prefix('-').unwrap_or(s);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && s != "-0";
    if !canonical {
        return Err(not_integer());
    }
    s.parse().map_err(|_| not_integer())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_parse_like_redis() {
        assert_eq!(parse_integer(b"42").unwrap(), 42);
        assert_eq!(parse_integer(b"-7").unwrap(), -7);
        assert_eq!(parse_integer(b"0").unwrap(), 0);
        for bad in [
            &b""[..],
            b"+1",
            b" 1",
            b"01",
            b"-0",
            b"1.5",
            b"x",
            b"99999999999999999999",
        ] {
            assert!(parse_integer(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn expired_entries_are_reclaimed_by_later_writes() {
        let m = MemoryBackend::new();
        let key = keys::kv_key("ns", "gone");
        m.set(&key, b"v", Some(Duration::from_millis(1))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while m.get(&key).unwrap().is_some() {
            assert!(Instant::now() < deadline, "entry never expired");
            std::thread::yield_now();
        }
        // Reading expired it; now check the heap path on another key.
        m.set(&key, b"v", Some(Duration::from_millis(1))).unwrap();
        let shard = m.shard(&key);
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            shard.lock().purge(Instant::now());
            if shard.lock().map.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "purge never dropped the entry");
            std::thread::yield_now();
        }
        assert!(shard.lock().expiries.is_empty());
    }

    #[test]
    fn rewrites_keep_one_expiry_record_per_key() {
        let m = MemoryBackend::new();
        let key = keys::kv_key("ns", "hot");
        for _ in 0..1000 {
            m.set(&key, b"v", Some(Duration::from_secs(60))).unwrap();
        }
        assert_eq!(m.shard(&key).lock().expiries.len(), 1);
    }

    #[test]
    fn deleted_keys_do_not_keep_their_expiry_records() {
        let m = MemoryBackend::new();
        for i in 0..10_000 {
            let key = keys::kv_key("ns", &i.to_string());
            m.set(&key, b"v", Some(Duration::from_secs(3600))).unwrap();
            m.delete(&key).unwrap();
        }
        let records: usize = m.shards.iter().map(|s| s.lock().expiries.len()).sum();
        assert!(
            records < 16 * 65,
            "{records} expiry records of deleted keys"
        );
    }

    #[test]
    fn stale_expiry_records_stay_under_a_quarter_of_the_live_entries() {
        let m = MemoryBackend::new();
        let live = 8_000;
        for i in 0..live {
            let key = keys::kv_key("ns", &format!("live-{i}"));
            m.set(&key, b"v", Some(Duration::from_secs(3600))).unwrap();
        }
        for i in 0..20_000 {
            let key = keys::kv_key("ns", &format!("gone-{i}"));
            m.set(&key, b"v", Some(Duration::from_secs(3600))).unwrap();
            m.delete(&key).unwrap();
        }
        let records: usize = m.shards.iter().map(|s| s.lock().expiries.len()).sum();
        let stale = records - live;
        assert!(
            stale <= live / 4 + 16 * 65,
            "{stale} stale expiry records beside {live} live entries"
        );
    }
}
