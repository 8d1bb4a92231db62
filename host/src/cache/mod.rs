//! The exact-match response cache: an in-process LRU bounded in bytes, in
//! front of an optional shared tier in [`State`] (Redis), so an answer cached
//! through one node is a hit on every node.
//!
//! Keys are always scoped: [`CacheKey::new`] mixes the tenant into the hash
//! unless the cache-key plugin explicitly asked for a shared entry, so no
//! entry can leak across tenants by accident.

mod answer;
pub mod bounded;
pub mod coalesce;
pub mod footprint;

pub use answer::{Answer, AnswerBody};

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::policy::{CacheScope, Route, TokenCount};
use crate::state::State;
use bounded::ByteLru;

/// The namespace cached answers (and the locks guarding their filling) use
/// in the shared state.
pub(crate) const STATE_NAMESPACE: &str = "cache";

/// A scoped cache key: blake3 over scope, tenant, route and the plugin's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The key for `plugin_key` as seen by `tenant`.
    pub fn new(tenant: &str, scope: CacheScope, route: Route, plugin_key: &str) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(b"sluice-cache-v1\0");
        match scope {
            CacheScope::Tenant => {
                h.update(b"tenant\0");
                h.update(tenant.as_bytes());
            }
            CacheScope::Shared => {
                h.update(b"shared");
            }
        }
        h.update(b"\0");
        h.update(route_tag(route));
        h.update(b"\0");
        h.update(plugin_key.as_bytes());
        Self(*h.finalize().as_bytes())
    }

    /// Hex form, as stored in the shared tier.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

fn route_tag(route: Route) -> &'static [u8] {
    match route {
        Route::Chat => b"chat",
        Route::Embeddings => b"embeddings",
        Route::AnthropicMessages => b"messages",
    }
}

/// Where a hit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Local,
    Shared,
}

/// Exact cache sizing.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    /// Bound on what the in-process tier holds, in bytes: its table, and
    /// per entry the list node, the answer and its body
    /// ([`Answer::retained_bytes`]).
    pub max_bytes: usize,
    /// Largest single answer kept.
    pub max_entry_bytes: usize,
}

/// The two-tier exact cache.
pub struct ExactCache {
    local: Mutex<ByteLru<CacheKey, LocalEntry>>,
    shared: Option<State>,
    limits: CacheLimits,
}

struct LocalEntry {
    answer: Arc<Answer>,
    expires: Instant,
}

impl LocalEntry {
    /// What it owns besides its list node.
    fn bytes(&self) -> usize {
        self.answer.retained_bytes()
    }
}

impl ExactCache {
    /// A cache with an in-process tier and, when `shared` is given, a shared
    /// tier in that state.
    pub fn new(limits: CacheLimits, shared: Option<State>) -> Self {
        let smallest = Answer::json(Route::Chat, bytes::Bytes::new(), TokenCount::new(0, 0));
        Self {
            local: Mutex::new(ByteLru::new(limits.max_bytes, smallest.retained_bytes())),
            shared,
            limits,
        }
    }

    /// Looks `key` up locally, then in the shared tier (filling the local one).
    pub async fn get(&self, key: &CacheKey) -> Option<(Arc<Answer>, Tier)> {
        if let Some(answer) = self.get_local(key) {
            return Some((answer, Tier::Local));
        }
        let shared = self.shared.as_ref()?;
        let bytes = match shared.get(STATE_NAMESPACE, &key.to_hex()).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "shared cache lookup failed");
                return None;
            }
        };
        Some((self.adopt(key, &bytes)?, Tier::Shared))
    }

    /// Looks `key` up in the in-process tier only (no state call).
    pub fn get_local(&self, key: &CacheKey) -> Option<Arc<Answer>> {
        let mut local = self.local.lock();
        let entry = local.get(key)?;
        if entry.expires > Instant::now() {
            return Some(entry.answer.clone());
        }
        local.pop(key);
        None
    }

    /// Decodes a shared-tier entry found for `key` and keeps it in the
    /// local tier for what is left of its TTL; None when it is garbage.
    pub fn adopt(&self, key: &CacheKey, bytes: &[u8]) -> Option<Arc<Answer>> {
        let (answer, remaining) = Answer::decode(bytes)?;
        let answer = Arc::new(answer);
        if let Some(ttl) = remaining {
            self.put_local(*key, answer.clone(), ttl);
        }
        Some(answer)
    }

    /// Stores `answer` for `ttl` in both tiers. Oversized answers are not
    /// cached.
    pub async fn put(&self, key: CacheKey, answer: Arc<Answer>, ttl: Duration) {
        self.store(key, answer, ttl, None).await;
    }

    /// Like [`ExactCache::put`], and releases the entry's lock if `token`
    /// holds it, in the same state call as the shared store (see
    /// [`State::set_and_unlock`]). Whether the shared store succeeded: if not
    /// (not cacheable, no shared tier, or the state failed), the lock is
    /// still the caller's to release.
    pub async fn put_and_unlock(
        &self,
        key: CacheKey,
        answer: Arc<Answer>,
        ttl: Duration,
        token: &[u8],
    ) -> bool {
        self.store(key, answer, ttl, Some(token)).await
    }

    async fn store(
        &self,
        key: CacheKey,
        answer: Arc<Answer>,
        ttl: Duration,
        token: Option<&[u8]>,
    ) -> bool {
        if ttl.is_zero() || answer.size() > self.limits.max_entry_bytes {
            return false;
        }
        self.put_local(key, answer.clone(), ttl);
        let Some(shared) = &self.shared else {
            return false;
        };
        let bytes = answer.encode(ttl);
        let (hex, ttl) = (key.to_hex(), Some(ttl));
        let stored = match token {
            Some(token) => shared
                .set_and_unlock(STATE_NAMESPACE, &hex, &bytes, ttl, token)
                .await
                .map(drop),
            None => shared.set(STATE_NAMESPACE, &hex, &bytes, ttl).await,
        };
        match stored {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "shared cache store failed");
                false
            }
        }
    }

    fn put_local(&self, key: CacheKey, answer: Arc<Answer>, ttl: Duration) {
        if answer.size() > self.limits.max_entry_bytes {
            return;
        }
        let entry = LocalEntry {
            answer,
            expires: Instant::now() + ttl,
        };
        let bytes = entry.bytes();
        self.local.lock().put(key, entry, bytes);
    }

    /// Bytes held by the in-process tier: its table and its entries.
    pub fn local_bytes(&self) -> usize {
        self.local.lock().bytes()
    }

    /// Answers held by the in-process tier.
    pub fn local_len(&self) -> usize {
        self.local.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn answer(n: usize) -> Arc<Answer> {
        Arc::new(Answer::json(
            Route::Chat,
            Bytes::from(vec![b'x'; n]),
            TokenCount::new(1, 2),
        ))
    }

    #[test]
    fn tenant_scope_separates_tenants_and_shared_does_not() {
        let a = CacheKey::new("acme", CacheScope::Tenant, Route::Chat, "k");
        let b = CacheKey::new("globex", CacheScope::Tenant, Route::Chat, "k");
        assert_ne!(a, b);
        let sa = CacheKey::new("acme", CacheScope::Shared, Route::Chat, "k");
        let sb = CacheKey::new("globex", CacheScope::Shared, Route::Chat, "k");
        assert_eq!(sa, sb);
        assert_ne!(a, sa);
        // A tenant whose name embeds the separator cannot forge another's key.
        let c = CacheKey::new("acme\0chat", CacheScope::Tenant, Route::Chat, "k");
        assert_ne!(a, c);
    }

    #[tokio::test]
    async fn local_tier_is_bounded_in_bytes_and_evicts_least_recent() {
        // Room for the table and three entries of 900 body bytes (1,216
        // bytes each, counted), not four.
        let cache = ExactCache::new(
            CacheLimits {
                max_bytes: 4_500,
                max_entry_bytes: 2_000,
            },
            None,
        );
        let ttl = Duration::from_secs(60);
        let keys: Vec<_> = (0..4)
            .map(|i| CacheKey::new("t", CacheScope::Tenant, Route::Chat, &i.to_string()))
            .collect();
        for k in &keys[..3] {
            cache.put(*k, answer(900), ttl).await;
        }
        // Touch key 0 so key 1 is the least recently used.
        assert!(cache.get(&keys[0]).await.is_some());
        cache.put(keys[3], answer(900), ttl).await;
        assert!(cache.local_bytes() <= 4_500);
        assert_eq!(cache.local_len(), 3);
        assert!(cache.get(&keys[1]).await.is_none());
        assert!(cache.get(&keys[0]).await.is_some());
        assert!(cache.get(&keys[3]).await.is_some());
        // Too large for one entry: not stored.
        let big = CacheKey::new("t", CacheScope::Tenant, Route::Chat, "big");
        cache.put(big, answer(2_500), ttl).await;
        assert!(cache.get(&big).await.is_none());
    }

    #[test]
    fn counted_bytes_stay_under_the_bound_and_match_what_is_allocated() {
        let max_bytes = 256 * 1024;
        let ttl = Duration::from_secs(60);
        let before = footprint::counting::live();
        let cache = ExactCache::new(
            CacheLimits {
                max_bytes,
                max_entry_bytes: 10_000,
            },
            None,
        );
        let mut inserted = 0;
        for i in 0..5_000usize {
            let key = CacheKey::new("t", CacheScope::Tenant, Route::Chat, &i.to_string());
            // A body sliced out of a larger buffer, as read from a socket.
            let buffer = Bytes::from(vec![b'x'; 4096]);
            let body = buffer.slice(..50 + (i * 37) % 900);
            inserted += body.len();
            let answer = Answer::json(Route::Chat, body, TokenCount::new(1, 2));
            cache.put_local(key, Arc::new(answer), ttl);
            assert!(cache.local_bytes() <= max_bytes);
        }
        assert!(inserted > 4 * max_bytes, "the bound was exercised");
        // What the cache holds, measured by the counting allocator (which
        // sees requested sizes; the count rounds up to size classes).
        let measured = usize::try_from(footprint::counting::live() - before).expect("held");
        let counted = cache.local_bytes();
        assert!(
            counted >= measured,
            "counted {counted} < measured {measured}"
        );
        assert!(
            counted <= measured + measured / 5,
            "counted {counted}, measured {measured}"
        );
        assert!(cache.local_len() > 100, "{}", cache.local_len());
        drop(cache);
        assert_eq!(footprint::counting::live(), before, "all freed");
    }

    #[test]
    fn a_large_bound_does_not_preallocate_a_large_table() {
        let before = footprint::counting::live();
        let cache = ExactCache::new(
            CacheLimits {
                max_bytes: 1 << 20,
                max_entry_bytes: 1 << 20,
            },
            None,
        );
        let table = usize::try_from(footprint::counting::live() - before).expect("held");
        assert!(
            table < (1 << 20) / 4,
            "an empty 1 MiB cache holds {table} bytes"
        );
        assert!(cache.local_bytes() >= table);
    }

    #[tokio::test]
    async fn entries_expire() {
        let cache = ExactCache::new(
            CacheLimits {
                max_bytes: 10_000,
                max_entry_bytes: 10_000,
            },
            None,
        );
        let k = CacheKey::new("t", CacheScope::Tenant, Route::Chat, "k");
        let empty = cache.local_bytes();
        cache.put(k, answer(10), Duration::from_millis(1)).await;
        std::thread::sleep(Duration::from_millis(5));
        assert!(cache.get(&k).await.is_none());
        assert_eq!(cache.local_bytes(), empty);
    }

    #[tokio::test]
    async fn shared_tier_serves_another_cache() {
        let state = State::memory();
        let limits = CacheLimits {
            max_bytes: 10_000,
            max_entry_bytes: 10_000,
        };
        let node_a = ExactCache::new(limits, Some(state.clone()));
        let node_b = ExactCache::new(limits, Some(state));
        let k = CacheKey::new("t", CacheScope::Tenant, Route::Chat, "k");
        node_a.put(k, answer(10), Duration::from_secs(60)).await;
        let (hit, tier) = node_b.get(&k).await.expect("hit through the shared tier");
        assert_eq!(tier, Tier::Shared);
        assert_eq!(hit.body_bytes().len(), 10);
        let (_, tier) = node_b.get(&k).await.expect("now local");
        assert_eq!(tier, Tier::Local);
    }
}
