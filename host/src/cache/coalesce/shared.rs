//! Coalescing across nodes: when the state is shared (Redis), identical
//! cacheable requests in flight on different nodes make one upstream call.
//!
//! The in-process [`super::local::Coalescer`] still runs first, so only a
//! node's local leader comes here. It tries to take a short-lived lock key in
//! the shared state (set-if-absent with a TTL, through
//! [`State::compare_and_swap`]). The node that gets it calls upstream, stores
//! the answer in the shared cache tier and releases the lock in one state
//! call ([`State::set_and_release`]); while the call runs it renews the
//! lock, so the TTL can be short: a leader that dies with its node holds the
//! others up for at most one TTL. The others poll the cache with backoff: a
//! hit is their answer; a free lock (the leader
//! failed, or its lock expired) makes them try to lead themselves; past
//! `max_wait` they call upstream without waiting any longer.
//!
//! Every state failure errs towards calling upstream: coalescing saves calls,
//! it must never cost an answer. With the memory backend there is nothing to
//! coalesce across, and with `[cache] coalesce_across_nodes = false` the
//! operator chose not to: then the gateway does not build a
//! [`SharedCoalescer`], and the hot path pays nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::{Answer, CacheKey, ExactCache};
use crate::state::{Lock, State};

/// The state namespace the lock keys live in.
const NAMESPACE: &str = "coalesce";
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

/// What joining a key across nodes made of this request.
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

    /// Leads `key` across nodes, or waits for the node that does and returns
    /// its answer from `cache`.
    pub async fn join(&self, cache: &ExactCache, key: &CacheKey) -> Joined {
        let lock = key.to_hex();
        let started = Instant::now();
        let mut pause = FIRST_POLL;
        loop {
            match self.try_lock(&lock).await {
                Ok(Some(lease)) => return Joined::Lead(Some(lease)),
                Ok(None) => {}
                Err(()) => return Joined::Lead(None),
            }
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
            if let Some((answer, _tier)) = cache.get(key).await {
                return Joined::Answer(answer);
            }
        }
    }

    /// Takes the lock if it is free: `Ok(None)` when another node holds it,
    /// `Err` when the state could not tell.
    async fn try_lock(&self, lock: &str) -> Result<Option<SharedLease>, ()> {
        let token = uuid::Uuid::new_v4().as_bytes().to_vec();
        match self
            .state
            .compare_and_swap(NAMESPACE, lock, None, &token, Some(self.lock_ttl))
            .await
        {
            Ok(true) => Ok(Some(SharedLease {
                renewal: self.renew(lock, &token),
                state: self.state.clone(),
                key: lock.to_owned(),
                token,
            })),
            Ok(false) => Ok(None),
            Err(e) => {
                tracing::debug!(error = %e, "coalescing: lock unavailable; calling upstream");
                Err(())
            }
        }
    }

    /// Extends the lock every third of its TTL until aborted, or until it
    /// turns out lost (expired during a Redis outage and taken by another
    /// node: that node leads now).
    fn renew(&self, lock: &str, token: &[u8]) -> tokio::task::AbortHandle {
        let (state, ttl) = (self.state.clone(), self.lock_ttl);
        let (lock, token) = (lock.to_owned(), token.to_vec());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                let renewed = state
                    .compare_and_swap(NAMESPACE, &lock, Some(&token), &token, Some(ttl))
                    .await;
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
        let lock = Lock {
            ns: NAMESPACE,
            key: &self.key,
            token: &self.token,
        };
        if cache.put_and_release(key, answer, ttl, Some(lock)).await {
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
            if let Err(e) = state.release(NAMESPACE, &key, &token).await {
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
        // Stored and released in one call, not by a task spawned later.
        let lock = lock_state.get(NAMESPACE, &key().to_hex()).await;
        assert_eq!(lock.expect("get"), None);
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
        let lock = other.to_hex();
        assert!(
            state
                .compare_and_swap(NAMESPACE, &lock, None, b"dead", Some(ttl))
                .await
                .expect("cas")
        );
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
