//! Coalescing across nodes: when the state is shared (Redis), identical
//! cacheable requests in flight on different nodes make one upstream call.
//!
//! A request that misses the node's own cache looks the answer up in the
//! shared tier and, when it is not there, takes the lock that guards its
//! filling if nobody holds it: one script, one round trip
//! ([`SharedCoalescer::lookup`], [`State::get_or_lock`]; the lock lives
//! beside the entry, in its hash tag, so this holds on Redis Cluster too).
//! The request that gets the lock calls upstream, and stores the answer and
//! releases the lock in one step ([`State::set_and_unlock`]); while the call
//! runs it renews the lock, so the TTL can be short: a leader that dies with
//! its node holds the others up for at most one TTL. Requests that found the
//! lock held poll with backoff ([`SharedCoalescer::wait`]): a hit is their
//! answer; a free lock (the leader failed, or its lock expired) makes them
//! lead; past `max_wait` they call upstream without waiting any longer. On
//! one node, the in-process [`super::local::Coalescer`] keeps identical
//! requests from polling more than once.
//!
//! Every state failure errs towards calling upstream: coalescing saves calls,
//! it must never cost an answer. With the memory backend there is nothing to
//! coalesce across, and with `[cache] coalesce_across_nodes = false` the
//! operator chose not to: then the gateway does not build a
//! [`SharedCoalescer`], and the hot path pays nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::{Answer, CacheKey, ExactCache, STATE_NAMESPACE};
use crate::state::{Fill, State};

/// First and longest pause between two polls of a follower.
const FIRST_POLL: Duration = Duration::from_millis(5);
const MAX_POLL: Duration = Duration::from_millis(50);

/// How long a lock outlives a leader that vanished (node crash); a live
/// leader renews it every third of this.
pub const LOCK_TTL: Duration = Duration::from_secs(5);

/// Cluster-wide leadership of in-flight cacheable requests.
pub struct SharedCoalescer {
    state: State,
    lock_ttl: Duration,
    /// How long a follower waits for another node before calling upstream.
    max_wait: Duration,
}

/// What the one-round-trip lookup found ([`SharedCoalescer::lookup`]).
pub enum Lookup {
    /// The shared tier had the answer.
    Hit(Arc<Answer>),
    /// Nobody was filling it: this request now holds the lock.
    Lead(SharedLease),
    /// Another node holds the lock: wait for it ([`SharedCoalescer::wait`]).
    Held,
    /// The state could not tell: call upstream without coalescing.
    Unavailable,
}

/// What waiting for another node made of this request.
pub enum Joined {
    /// Call upstream; the lease (when the lock was taken) is released with
    /// the stored answer ([`SharedLease::store`]), or when dropped.
    Lead(Option<SharedLease>),
    /// Another node's leader answered; replay this.
    Answer(Arc<Answer>),
}

/// The lock a leading node holds, renewed in the background while held.
/// Dropping it releases the lock, so a leader that fails frees its
/// followers at once.
pub struct SharedLease {
    state: State,
    /// The cache entry the lock guards (its hex key); empty once released.
    key: String,
    token: Vec<u8>,
    renewal: tokio::task::AbortHandle,
}

impl SharedCoalescer {
    /// A coalescer over `state`; locks last `lock_ttl` past their last
    /// renewal (see [`LOCK_TTL`]), followers wait at most `max_wait`.
    pub fn new(state: State, lock_ttl: Duration, max_wait: Duration) -> Self {
        Self {
            state,
            lock_ttl,
            max_wait,
        }
    }

    /// Looks `key` up in the shared tier and, when it is not there, takes
    /// the lock to fill it if it is free: one round trip, one script (the
    /// lock shares the entry's hash tag, so on Redis Cluster too).
    pub async fn lookup(&self, cache: &ExactCache, key: &CacheKey) -> Lookup {
        let hex = key.to_hex();
        let token = uuid::Uuid::new_v4().as_bytes().to_vec();
        match self
            .state
            .get_or_lock(STATE_NAMESPACE, &hex, &token, self.lock_ttl)
            .await
        {
            Ok(Fill::Value(bytes)) => match cache.adopt(key, &bytes) {
                Some(answer) => Lookup::Hit(answer),
                None => Lookup::Unavailable,
            },
            Ok(Fill::Locked) => Lookup::Lead(self.lease(hex, token)),
            Ok(Fill::Held) => Lookup::Held,
            Err(e) => {
                tracing::debug!(error = %e, "coalescing: shared lookup failed; calling upstream");
                Lookup::Unavailable
            }
        }
    }

    /// Leads `key` across nodes, or waits for the node that does and returns
    /// its answer from `cache`.
    pub async fn join(&self, cache: &ExactCache, key: &CacheKey) -> Joined {
        match self.lookup(cache, key).await {
            Lookup::Hit(answer) => Joined::Answer(answer),
            Lookup::Lead(lease) => Joined::Lead(Some(lease)),
            Lookup::Held => self.wait(cache, key).await,
            Lookup::Unavailable => Joined::Lead(None),
        }
    }

    /// Waits for the node holding `key`'s lock: its answer from the shared
    /// tier; or the lock, when that node failed or its lock expired; or, past
    /// `max_wait`, neither (call upstream without waiting any longer).
    pub async fn wait(&self, cache: &ExactCache, key: &CacheKey) -> Joined {
        let started = Instant::now();
        let mut pause = FIRST_POLL;
        loop {
            let waited = started.elapsed();
            if waited >= self.max_wait {
                tracing::debug!(
                    waited_ms = waited.as_millis() as u64,
                    "coalescing: no answer from the leading node in time; calling upstream"
                );
                return Joined::Lead(None);
            }
            tokio::time::sleep(pause.min(self.max_wait - waited)).await;
            pause = (pause * 2).min(MAX_POLL);
            match self.lookup(cache, key).await {
                Lookup::Hit(answer) => return Joined::Answer(answer),
                Lookup::Lead(lease) => return Joined::Lead(Some(lease)),
                Lookup::Held => {}
                Lookup::Unavailable => return Joined::Lead(None),
            }
        }
    }

    fn lease(&self, key: String, token: Vec<u8>) -> SharedLease {
        SharedLease {
            renewal: self.renew(&key, &token),
            state: self.state.clone(),
            key,
            token,
        }
    }

    /// Extends the lock every third of its TTL until aborted, or until it
    /// turns out lost (expired during a Redis outage and taken by another
    /// node: that node leads now).
    fn renew(&self, key: &str, token: &[u8]) -> tokio::task::AbortHandle {
        let (state, ttl) = (self.state.clone(), self.lock_ttl);
        let (key, token) = (key.to_owned(), token.to_vec());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                let renewed = state.renew_lock(STATE_NAMESPACE, &key, &token, ttl).await;
                if !matches!(renewed, Ok(true)) {
                    return;
                }
            }
        })
        .abort_handle()
    }
}

impl SharedLease {
    /// Stores the leader's answer in `cache` and releases the lock in the
    /// same state call: followers on other nodes find the answer as soon as
    /// the lock is gone, and the miss costs one round trip less.
    pub async fn store(
        mut self,
        cache: &ExactCache,
        key: CacheKey,
        answer: Arc<Answer>,
        ttl: Duration,
    ) {
        self.renewal.abort();
        if cache.put_and_unlock(key, answer, ttl, &self.token).await {
            self.key.clear(); // released (or no longer ours): nothing to drop
        }
    }
}

impl Drop for SharedLease {
    fn drop(&mut self) {
        self.renewal.abort();
        if self.key.is_empty() {
            return;
        }
        // Only our own lock: it may have expired and another node taken it.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime: the TTL frees the lock
        };
        let state = self.state.clone();
        let key = std::mem::take(&mut self.key);
        let token = std::mem::take(&mut self.token);
        runtime.spawn(async move {
            if let Err(e) = state.release_lock(STATE_NAMESPACE, &key, &token).await {
                tracing::debug!(error = %e, "coalescing: lock not released; it expires");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheLimits;
    use crate::policy::{CacheScope, Route, TokenCount};
    use bytes::Bytes;

    fn cache(state: &State) -> ExactCache {
        ExactCache::new(
            CacheLimits {
                max_bytes: 10_000,
                max_entry_bytes: 10_000,
            },
            Some(state.clone()),
        )
    }

    fn key() -> CacheKey {
        CacheKey::new("t", CacheScope::Tenant, Route::Chat, "k")
    }

    fn coalescer(state: &State, max_wait: Duration) -> SharedCoalescer {
        SharedCoalescer::new(state.clone(), Duration::from_secs(10), max_wait)
    }

    #[tokio::test]
    async fn a_follower_gets_the_leaders_stored_answer() {
        let state = State::memory();
        let lock_state = state.clone();
        let (node_a, node_b) = (cache(&state), cache(&state));
        let c = coalescer(&state, Duration::from_secs(5));
        let Joined::Lead(Some(lease)) = c.join(&node_a, &key()).await else {
            panic!("the first node leads")
        };
        let follower = tokio::spawn(async move {
            let c = coalescer(&state, Duration::from_secs(5));
            match c.join(&node_b, &key()).await {
                Joined::Answer(a) => a.body_bytes().len(),
                Joined::Lead(_) => 0,
            }
        });
        // Let the follower find the lock taken and start polling.
        tokio::task::yield_now().await;
        let answer = Arc::new(Answer::json(
            Route::Chat,
            Bytes::from_static(b"{}"),
            TokenCount::new(1, 1),
        ));
        lease
            .store(&node_a, key(), answer, Duration::from_secs(60))
            .await;
        // Stored and released in one call, not by a task spawned later: a
        // lookup now finds the answer (it would otherwise take the lock).
        let fresh = cache(&lock_state);
        assert!(matches!(c.lookup(&fresh, &key()).await, Lookup::Hit(_)));
        assert_eq!(follower.await.expect("joined"), 2);
    }

    #[tokio::test]
    async fn a_live_leader_keeps_its_lock_and_a_vanished_one_loses_it_after_the_ttl() {
        let state = State::memory();
        let node = cache(&state);
        let ttl = Duration::from_millis(60);
        let c = SharedCoalescer::new(state.clone(), ttl, Duration::from_millis(400));
        let Joined::Lead(Some(lease)) = c.join(&node, &key()).await else {
            panic!("leads")
        };
        // Renewed: over several TTLs nobody else gets the lock.
        assert!(matches!(c.join(&node, &key()).await, Joined::Lead(None)));
        drop(lease);
        // A leader whose node died: its lock is never renewed nor released.
        let other = CacheKey::new("t", CacheScope::Tenant, Route::Chat, "other");
        let dead = SharedCoalescer::new(state.clone(), ttl, Duration::ZERO);
        let Lookup::Lead(dead_lease) = dead.lookup(&node, &other).await else {
            panic!("the dead leader took the lock")
        };
        // Its node dies: no renewal, no release.
        dead_lease.renewal.abort();
        std::mem::forget(dead_lease);
        let started = Instant::now();
        let Joined::Lead(Some(_lease)) = c.join(&node, &other).await else {
            panic!("takes over once the dead leader's lock expires")
        };
        assert!(started.elapsed() < Duration::from_millis(400));
    }

    #[tokio::test]
    async fn a_failed_leader_hands_over_and_a_lost_one_is_waited_for_at_most_max_wait() {
        let state = State::memory();
        let c = coalescer(&state, Duration::from_millis(100));
        let node = cache(&state);
        let Joined::Lead(Some(lease)) = c.join(&node, &key()).await else {
            panic!("leads")
        };
        // The leader fails: its lock is released and the next caller leads.
        drop(lease);
        let deadline = Instant::now() + Duration::from_secs(5);
        let lease = loop {
            if let Joined::Lead(Some(lease)) = c.join(&node, &key()).await {
                break lease;
            }
            assert!(Instant::now() < deadline, "the lock was never released");
        };
        // A leader that holds the lock but never answers is waited for only
        // up to max_wait.
        let started = Instant::now();
        assert!(matches!(c.join(&node, &key()).await, Joined::Lead(None)));
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        drop(lease);
    }
}
