//! Learning from semantic hits that were wrong.
//!
//! One similarity threshold cannot tell right hits from wrong ones: their
//! scores overlap. So each entry learns: when a client contradicts an
//! answer it was served, the entry that served it raises the score it
//! requires ([`super::SemanticIndex::contradict`]), on every node (the
//! requirement lives in the state beside the entry). Two signals count as
//! a contradiction:
//!
//! - explicit: the client repeats the request with
//!   `x-sluice-semantic-feedback: wrong`;
//! - implicit: within `[semantic] reask_window_seconds` of a semantic hit,
//!   the same tenant sends the exact same request again, streamed or not as
//!   before, to the node that served it (a client that got what it asked
//!   for does not ask again).
//!   [`RecentHits`] remembers this node's recent semantic hits for it.
//!
//! Either way the request is answered upstream, and that fresh answer is
//! stored for the prompt.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;

use super::{Hit, IndexKey};
use crate::cache::CacheKey;

/// Semantic hits remembered for the re-ask signal, per node (each about
/// 200 bytes: under 1 MiB in all).
pub const RECENT_HITS: usize = 4096;

/// A request as the re-ask signal compares it: its exact cache key, and
/// whether it was streamed (a client asking once as a stream and once not
/// is not re-asking).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Asked {
    pub exact: CacheKey,
    pub streaming: bool,
}

/// This node's recent semantic hits, by tenant namespace and request.
pub struct RecentHits {
    window: Duration,
    served: Mutex<LruCache<(IndexKey, Asked), (Hit, Instant)>>,
}

impl RecentHits {
    /// Remembers up to [`RECENT_HITS`] hits for `window` each; a zero
    /// window remembers none.
    pub fn new(window: Duration) -> Self {
        RecentHits {
            window,
            served: Mutex::new(LruCache::new(
                NonZeroUsize::new(RECENT_HITS).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// `hit` answered the request `asked` in namespace `key`.
    pub fn served(&self, key: &IndexKey, asked: Asked, hit: &Hit) {
        if self.window.is_zero() {
            return;
        }
        // The prompt is not needed to contradict the entry.
        let hit = Hit {
            prompt: String::new(),
            ..hit.clone()
        };
        self.served
            .lock()
            .put((key.clone(), asked), (hit, Instant::now()));
    }

    /// The request `asked` came again: the hit that answered it within the
    /// window, which it contradicts (forgotten here once returned).
    pub fn reasked(&self, key: &IndexKey, asked: Asked) -> Option<Hit> {
        let (hit, at) = self.served.lock().pop(&(key.clone(), asked))?;
        (at.elapsed() <= self.window).then_some(hit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{CacheScope, Route};

    fn hit(seq: u64) -> Hit {
        Hit {
            seq,
            score: 0.95,
            prompt: "a prompt".into(),
            stored_at_ms: 0,
            expires_ms: u64::MAX,
        }
    }

    fn asked(key: &str, streaming: bool) -> Asked {
        Asked {
            exact: CacheKey::new("t", CacheScope::Tenant, Route::Chat, key),
            streaming,
        }
    }

    #[test]
    fn a_reask_within_the_window_returns_the_hit_once() {
        let recent = RecentHits::new(Duration::from_secs(60));
        let key = IndexKey::new("t", "ns");
        let exact = asked("k", false);
        recent.served(&key, exact, &hit(7));
        assert!(recent.reasked(&key, asked("other", false)).is_none());
        assert!(recent.reasked(&key, asked("k", true)).is_none());
        assert!(recent.reasked(&IndexKey::new("u", "ns"), exact).is_none());
        let got = recent.reasked(&key, exact).expect("re-asked");
        assert_eq!((got.seq, got.prompt.as_str()), (7, ""));
        assert!(recent.reasked(&key, exact).is_none(), "once");
    }

    #[test]
    fn a_zero_window_remembers_nothing() {
        let recent = RecentHits::new(Duration::ZERO);
        let key = IndexKey::new("t", "ns");
        let exact = asked("k", false);
        recent.served(&key, exact, &hit(1));
        assert!(recent.reasked(&key, exact).is_none());
    }
}
