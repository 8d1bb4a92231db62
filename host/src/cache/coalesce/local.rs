//! Request coalescing: identical cacheable requests in flight at once make
//! one upstream call. The first becomes the leader; the others wait for its
//! answer and replay it. A leader that fails or is dropped releases its
//! followers to make their own calls.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

/// Leaders' answer channels by key.
type Inflight<K, V> = Arc<Mutex<HashMap<K, watch::Receiver<Option<Arc<V>>>>>>;

/// In-flight calls by key.
pub struct Coalescer<K, V> {
    inflight: Inflight<K, V>,
}

impl<K, V> Default for Coalescer<K, V> {
    fn default() -> Self {
        Self {
            inflight: Arc::default(),
        }
    }
}

/// What joining a key made of this request.
pub enum Role<K: Hash + Eq + Clone, V> {
    /// Make the call and [`Leader::complete`] it.
    Leader(Leader<K, V>),
    /// Wait for the leader with [`Follower::wait`].
    Follower(Follower<V>),
}

/// The request that makes the call. Dropping it without completing releases
/// the followers empty-handed.
pub struct Leader<K: Hash + Eq + Clone, V> {
    key: K,
    tx: watch::Sender<Option<Arc<V>>>,
    inflight: Inflight<K, V>,
}

/// A request waiting for a leader's answer.
pub struct Follower<V> {
    rx: watch::Receiver<Option<Arc<V>>>,
}

impl<K: Hash + Eq + Clone, V> Coalescer<K, V> {
    /// Leads `key` if nobody does, else follows the current leader.
    pub fn join(&self, key: K) -> Role<K, V> {
        let mut inflight = self.inflight.lock();
        if let Some(rx) = inflight.get(&key) {
            return Role::Follower(Follower { rx: rx.clone() });
        }
        let (tx, rx) = watch::channel(None);
        inflight.insert(key.clone(), rx);
        Role::Leader(Leader {
            key,
            tx,
            inflight: self.inflight.clone(),
        })
    }

    /// Keys with a call in flight.
    pub fn len(&self) -> usize {
        self.inflight.lock().len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq + Clone, V> Leader<K, V> {
    /// Hands `value` to every follower.
    pub fn complete(self, value: Arc<V>) {
        // Remove first: a request arriving now should find the cache, not a
        // finished leader.
        self.inflight.lock().remove(&self.key);
        let _ = self.tx.send(Some(value));
    }
}

impl<K: Hash + Eq + Clone, V> Drop for Leader<K, V> {
    fn drop(&mut self) {
        let mut inflight = self.inflight.lock();
        // Only remove our own entry (complete() may have removed it and a new
        // leader taken the key since).
        if inflight
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&self.tx.subscribe()))
        {
            inflight.remove(&self.key);
        }
    }
}

impl<V> Follower<V> {
    /// The leader's answer, or None when it failed or went away.
    pub async fn wait(mut self) -> Option<Arc<V>> {
        match self.rx.wait_for(|v| v.is_some()).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_get_the_leaders_answer() {
        let c: Coalescer<&str, u32> = Coalescer::default();
        let Role::Leader(leader) = c.join("k") else {
            panic!("first joiner leads")
        };
        let followers: Vec<_> = (0..5)
            .map(|_| match c.join("k") {
                Role::Follower(f) => tokio::spawn(f.wait()),
                Role::Leader(_) => panic!("second joiner follows"),
            })
            .collect();
        leader.complete(Arc::new(42));
        for f in followers {
            assert_eq!(f.await.expect("joined").as_deref(), Some(&42));
        }
        assert!(c.is_empty());
        assert!(matches!(c.join("k"), Role::Leader(_)));
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_followers_empty() {
        let c: Coalescer<&str, u32> = Coalescer::default();
        let leader = c.join("k");
        let Role::Follower(f) = c.join("k") else {
            panic!("follows")
        };
        drop(leader);
        assert_eq!(f.wait().await, None);
        assert!(c.is_empty());
    }
}
