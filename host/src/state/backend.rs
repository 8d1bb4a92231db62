//! [`Backend`]: the operations every state backend provides, over full keys
//! (already namespaced and validated by [`super::State`]). Implemented by
//! the in-process [`super::memory::MemoryBackend`], by Redis
//! ([`super::redis_backend::RedisBackend`]) and by
//! [`super::fallback::Fallback`], which puts Redis in front of a local
//! stand-in and owns every failure rule.

use std::time::Duration;

use futures::future::BoxFuture;

use super::StateHealth;
use super::budget::{BudgetCall, BudgetReply};
use super::limiter::{LimitCall, Limited};
use crate::state::StateError;

/// What a backend operation returns.
pub(crate) type Answer<'a, T> = BoxFuture<'a, Result<T, StateError>>;

/// One state backend. TTLs arrive validated: at least 1 ms, never absurdly
/// long; `None` means the key does not expire.
pub(crate) trait Backend: Send + Sync {
    fn get<'a>(&'a self, key: &'a str) -> Answer<'a, Option<Vec<u8>>>;
    fn set<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Option<Duration>) -> Answer<'a, ()>;
    fn delete<'a>(&'a self, key: &'a str) -> Answer<'a, bool>;
    fn incr<'a>(&'a self, key: &'a str, delta: i64, ttl: Option<Duration>) -> Answer<'a, i64>;
    fn compare_and_swap<'a>(
        &'a self,
        key: &'a str,
        expected: Option<&'a [u8]>,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> Answer<'a, bool>;
    fn release<'a>(&'a self, key: &'a str, token: &'a [u8]) -> Answer<'a, bool>;
    fn set_and_release<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
        lock: &'a str,
        token: &'a [u8],
    ) -> Answer<'a, bool>;
    /// The value of `key`, or, when it has none, `lock` set to `token` for
    /// `ttl` if nobody holds it: `(value, took_the_lock)`. `lock` shares
    /// `key`'s hash tag, so this is one atomic step on every backend.
    fn get_or_lock<'a>(
        &'a self,
        key: &'a str,
        lock: &'a str,
        token: &'a [u8],
        ttl: Duration,
    ) -> Answer<'a, (Option<Vec<u8>>, bool)>;
    /// The rate-limit algorithm over `call.keys` (one namespace, so one hash
    /// tag).
    fn limit<'a>(&'a self, call: LimitCall<'a>) -> Answer<'a, Limited>;
    /// A budget call (see [`super::budget`]): its keys share one hash tag.
    fn budget<'a>(&'a self, call: BudgetCall<'a>) -> Answer<'a, BudgetReply>;
    /// Every field of a budget hash.
    fn budget_hash<'a>(&'a self, key: &'a str) -> Answer<'a, Vec<(String, i64)>>;
    /// Backend name, degraded flag and counters.
    fn health(&self) -> StateHealth;
    /// Whether the backend is failing and answering from a fallback (or
    /// failing calls); cheaper than [`Self::health`].
    fn is_degraded(&self) -> bool {
        false
    }
}
