//! Shared state: namespaced key-value with TTL/incr/CAS, and the atomic
//! rate-limit charge, on one of two backends chosen by `[state] kind`:
//!
//! - `memory` ([`memory`]): in-process, one node, nothing to install;
//! - `redis` ([`redis_backend`]): standalone or Redis Cluster, shared by
//!   every node.
//!
//! The rate-limit algorithm is written once, in Lua (`limiter.lua`), and runs
//! inside a Redis script on the server clock, or in-process through mlua on
//! the memory backend. Keys are laid out in [`keys`].
//!
//! Every backend implements one trait ([`backend`]); the Redis backend is
//! always wrapped in [`fallback`], which owns the failure rules: when Redis
//! fails or exceeds `op_timeout`, `on_error` decides between a local memory
//! fallback (fail-open, approximate: per node) and
//! [`StateError::Unavailable`] (fail-closed), and a degraded state skips
//! Redis until a background probe sees it answer again.
//!
//! At startup Redis is checked once: fail-open starts degraded if it is
//! unreachable (the gateway serves, and switches to Redis when it appears);
//! fail-closed refuses to start, because every state call would fail and the
//! operator asked for refusals over approximations — better a clear startup
//! error (wrong URL, wrong password) than a node that answers 503 to all.

mod backend;
mod budget;
mod budget_leases;
mod edge;
mod fallback;
mod keys;
mod leases;
mod limiter;
mod memory;
mod redis_backend;
pub mod round_trips;
mod settings;
mod settle;

use std::sync::Arc;
use std::time::Duration;

pub use budget::{BudgetCounter, BudgetReply, HashAdd, MAX_BUDGET_COUNTERS, MAX_BUDGET_KEY_BYTES};
pub use budget_leases::{BudgetSliceStats, FLAG_TTL, IDLE_AFTER, REFILL_EVERY};
pub use edge::EdgeStats;
pub use leases::LEASE_PERIOD;
pub use limiter::{MAX_BUCKET_KEY_BYTES, MAX_BUCKETS};
pub use settings::{DEFAULT_OP_TIMEOUT, LimitsMode, OnError, StateKind, StateSettings};
pub use settle::FLUSH_EVERY;

use crate::policy::{Bucket, ChargeResult};
use backend::Backend;
use edge::EdgeLimits;
use fallback::Fallback;
use limiter::{LimitCall, Mode};
use memory::MemoryBackend;
use redis_backend::CONNECT_TIMEOUT;

/// Longest namespace, in bytes.
pub const MAX_NAMESPACE_BYTES: usize = 128;
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Why a state operation failed. Never a reason to trap a plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The backend could not be reached in time.
    #[error("state unavailable: {0}")]
    Unavailable(String),
    /// The call was refused (bad namespace, key, TTL, bucket; not a counter).
    #[error("invalid state call: {0}")]
    Invalid(String),
}

/// A snapshot for /readyz and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateHealth {
    /// `"memory"`, `"redis"` or `"redis-cluster"`.
    pub backend: &'static str,
    pub on_error: OnError,
    /// Redis is failing: calls answer from the fallback (fail-open) or fail.
    pub degraded: bool,
    /// Calls answered from the local fallback so far.
    pub fallbacks: u64,
    /// Redis calls that failed or timed out so far.
    pub errors: u64,
    /// The last Redis failure, if any.
    pub last_error: Option<String>,
}

/// A lock in the state: `key` in namespace `ns`, held while it holds
/// `token` (see [`State::set_and_release`]).
#[derive(Debug, Clone, Copy)]
pub struct Lock<'a> {
    /// The lock key's namespace.
    pub ns: &'a str,
    /// The lock key.
    pub key: &'a str,
    /// What the key holds while this holder has it.
    pub token: &'a [u8],
}

/// What [`State::get_or_lock`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fill {
    /// The entry is there.
    Value(Vec<u8>),
    /// It is not, and this caller now holds the lock to fill it.
    Locked,
    /// It is not, and another holder is filling it.
    Held,
}

/// Raw Redis access for data that lives in Redis or nowhere (the job
/// queue's streams): the state's own connection (standalone or cluster,
/// reconnecting by itself), each call bounded by `op_timeout`. No local
/// fallback: a failure is an error for the caller to handle.
#[derive(Clone)]
pub struct RedisLink {
    redis: Arc<redis_backend::RedisBackend>,
    op_timeout: Duration,
}

impl RedisLink {
    /// Runs `cmd` within `op_timeout`.
    pub async fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StateError> {
        self.bounded(self.redis.query_cmd(cmd)).await
    }

    /// Runs `pipe` in one round trip within `op_timeout` (on a cluster all
    /// its keys must share one hash tag).
    pub async fn pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StateError> {
        self.bounded(self.redis.query_pipe(pipe)).await
    }

    /// Runs a script invocation within `op_timeout`.
    pub async fn script<T: redis::FromRedisValue>(
        &self,
        call: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StateError> {
        self.bounded(self.redis.run_script(call)).await
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.redis.name() == "redis-cluster"
    }

    async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, StateError>>,
    ) -> Result<T, StateError> {
        tokio::time::timeout(self.op_timeout, op)
            .await
            .unwrap_or_else(|_| {
                Err(StateError::Unavailable(format!(
                    "no answer from Redis within {} ms",
                    self.op_timeout.as_millis()
                )))
            })
    }
}

/// A handle on the shared state: cheap to clone, usable from any task.
#[derive(Clone)]
pub struct State {
    backend: Arc<dyn Backend>,
    /// Raw Redis access, when the state is Redis.
    link: Option<RedisLink>,
    /// Leases and queued corrections, when the state is Redis.
    edge: Option<Arc<EdgeLimits>>,
    /// Budget slices, when the state is Redis and `limits = "leased"`.
    budget_edge: Option<Arc<budget_leases::EdgeBudgets>>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("health", &self.health())
            .finish()
    }
}

impl State {
    /// Opens the backend `settings` choose (see the module docs for startup
    /// behaviour when Redis is down).
    pub async fn connect(settings: &StateSettings) -> Result<State, StateError> {
        settings.validate()?;
        match settings.kind {
            StateKind::Memory => Ok(State::memory()),
            StateKind::Redis => {
                let remote = Arc::new(Fallback::new(settings)?);
                let checked =
                    tokio::time::timeout(2 * CONNECT_TIMEOUT, remote.heal(CONNECT_TIMEOUT))
                        .await
                        .unwrap_or_else(|_| Err(StateError::Unavailable("timed out".into())));
                match (checked, settings.on_error) {
                    (Ok(()), _) => {
                        tracing::info!(backend = remote.name(), "state: connected to Redis");
                    }
                    (Err(e), OnError::FailClosed) => {
                        return Err(StateError::Unavailable(format!(
                            "cannot reach Redis at startup and on_error = \"fail-closed\": {e}"
                        )));
                    }
                    (Err(e), OnError::FailOpen) => {
                        remote.failed(&e.to_string());
                    }
                }
                Ok(State {
                    budget_edge: (settings.limits == LimitsMode::Leased)
                        .then(|| budget_leases::EdgeBudgets::start(remote.clone())),
                    edge: Some(EdgeLimits::start(remote.clone(), settings)),
                    link: Some(remote.link()),
                    backend: remote,
                })
            }
        }
    }

    /// An in-process state (the `memory` backend); needs no runtime.
    pub fn memory() -> State {
        State {
            backend: Arc::new(MemoryBackend::new()),
            edge: None,
            budget_edge: None,
            link: None,
        }
    }

    /// The value of `key`, if present and not expired.
    pub async fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let k = kv_key(ns, key)?;
        self.backend.get(&k).await
    }

    /// Stores `value` under `key`, expiring after `ttl` (none: never).
    pub async fn set(
        &self,
        ns: &str,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StateError> {
        let k = kv_key(ns, key)?;
        check_ttl(ttl)?;
        self.backend.set(&k, value, ttl).await
    }

    /// Removes `key`; whether it was there.
    pub async fn delete(&self, ns: &str, key: &str) -> Result<bool, StateError> {
        let k = kv_key(ns, key)?;
        self.backend.delete(&k).await
    }

    /// Adds `delta` to the integer at `key` (missing counts as 0) and returns
    /// the new value; `ttl` applies only when this call creates the key. The
    /// value is stored as decimal text, so `get` reads e.g. `b"42"`.
    pub async fn incr(
        &self,
        ns: &str,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, StateError> {
        let k = kv_key(ns, key)?;
        check_ttl(ttl)?;
        self.backend.incr(&k, delta, ttl).await
    }

    /// Writes `value` only if the current value equals `expected` (`None`:
    /// the key must be absent); whether it wrote. Like `set`, a write without
    /// `ttl` leaves the key without expiry.
    pub async fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StateError> {
        let k = kv_key(ns, key)?;
        check_ttl(ttl)?;
        self.backend
            .compare_and_swap(&k, expected, value, ttl)
            .await
    }

    /// Deletes `key` only if it holds `token` (a lock taken with
    /// [`State::compare_and_swap`] is released by its owner only); whether
    /// it deleted.
    pub async fn release(&self, ns: &str, key: &str, token: &[u8]) -> Result<bool, StateError> {
        let k = kv_key(ns, key)?;
        self.backend.release(&k, token).await
    }

    /// [`State::set`] then [`State::release`] of `lock`, in one round trip:
    /// a leader stores its answer and frees its followers at once. The value
    /// is stored before the lock goes. On Redis Cluster the two keys hash to
    /// different slots (every KV key is its own hash tag, see [`keys`]), so
    /// there it costs two round trips. Whether the lock was released.
    pub async fn set_and_release(
        &self,
        ns: &str,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        lock: Lock<'_>,
    ) -> Result<bool, StateError> {
        let k = kv_key(ns, key)?;
        check_ttl(ttl)?;
        let lk = kv_key(lock.ns, lock.key)?;
        self.backend
            .set_and_release(&k, value, ttl, &lk, lock.token)
            .await
    }

    /// The value of `key`, or, when it has none, the lock guarding its
    /// filling taken for `token` (`ttl`) if nobody holds it: one round trip.
    /// The lock lives beside the entry, in its hash tag, so on Redis Cluster
    /// too the lookup, the lock and [`State::set_and_unlock`] are single
    /// atomic steps.
    pub async fn get_or_lock(
        &self,
        ns: &str,
        key: &str,
        token: &[u8],
        ttl: Duration,
    ) -> Result<Fill, StateError> {
        let k = kv_key(ns, key)?;
        check_ttl(Some(ttl))?;
        let lock = keys::lock_key(&k);
        Ok(
            match self.backend.get_or_lock(&k, &lock, token, ttl).await? {
                (Some(value), _) => Fill::Value(value),
                (None, true) => Fill::Locked,
                (None, false) => Fill::Held,
            },
        )
    }

    /// Extends the entry lock `token` holds by `ttl`; false when it is no
    /// longer held by `token` (it expired, and maybe another took it).
    pub async fn renew_lock(
        &self,
        ns: &str,
        key: &str,
        token: &[u8],
        ttl: Duration,
    ) -> Result<bool, StateError> {
        let lock = keys::lock_key(&kv_key(ns, key)?);
        check_ttl(Some(ttl))?;
        self.backend
            .compare_and_swap(&lock, Some(token), token, Some(ttl))
            .await
    }

    /// Frees the entry lock if `token` holds it; whether it did.
    pub async fn release_lock(
        &self,
        ns: &str,
        key: &str,
        token: &[u8],
    ) -> Result<bool, StateError> {
        let lock = keys::lock_key(&kv_key(ns, key)?);
        self.backend.release(&lock, token).await
    }

    /// Stores `value` under `key` and frees the entry's lock if `token`
    /// holds it, in one step (one slot on a cluster): followers waiting on
    /// other nodes find the value as soon as the lock is gone. Whether the
    /// lock was released.
    pub async fn set_and_unlock(
        &self,
        ns: &str,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        token: &[u8],
    ) -> Result<bool, StateError> {
        let k = kv_key(ns, key)?;
        check_ttl(ttl)?;
        let lock = keys::lock_key(&k);
        self.backend
            .set_and_release(&k, value, ttl, &lock, token)
            .await
    }

    /// The atomic, all-or-nothing rate-limit charge over `buckets`.
    ///
    /// Each bucket is a token bucket of `shape.capacity()` tokens refilled
    /// continuously at `shape.per_ms()`; a bucket never charged is full. If
    /// every bucket with a positive cost holds enough tokens, all are taken
    /// and the result is admitted; otherwise nothing is taken and
    /// `retry_after_ms` is the longest wait until every refused bucket could
    /// pay (at least 1). Negative costs are refunds: they always apply, capped
    /// at capacity, even when the charge is refused.
    ///
    /// A cost above a bucket's capacity is never admitted; its
    /// `retry_after_ms` is one full refill period of that bucket.
    ///
    /// All buckets of a namespace share one Redis hash tag (see [`keys`]), so
    /// any of them can be charged together, atomically, in one round trip.
    pub async fn charge(&self, ns: &str, buckets: &[Bucket]) -> Result<ChargeResult, StateError> {
        self.limit(ns, buckets, Mode::Charge).await
    }

    /// Applies every signed cost unconditionally, e.g. to reconcile an
    /// estimated charge with actual usage. A bucket may go below zero (debt):
    /// later charges wait until it has refilled. Always admitted.
    pub async fn adjust(&self, ns: &str, buckets: &[Bucket]) -> Result<ChargeResult, StateError> {
        self.limit(ns, buckets, Mode::Adjust).await
    }

    /// [`State::adjust`] written behind: on Redis the corrections are queued
    /// and sent at least every [`FLUSH_EVERY`] (and when the node stops),
    /// kept while Redis fails, so no request waits on them; in memory they
    /// apply at once. For settles after an answer, whose result nobody reads.
    pub async fn settle(&self, ns: &str, buckets: &[Bucket]) -> Result<(), StateError> {
        let Some(edge) = &self.edge else {
            return self.adjust(ns, buckets).await.map(drop);
        };
        check_namespace(ns)?;
        limiter::validate(buckets)?;
        edge.queue(ns, buckets);
        Ok(())
    }

    /// Hands back every lease and writes every queued correction, for a node
    /// that is stopping; waits at most `deadline`.
    pub async fn close(&self, deadline: Duration) {
        if let Some(budgets) = &self.budget_edge {
            budgets.close(deadline).await;
        }
        if let Some(edge) = &self.edge {
            edge.close(deadline).await;
        }
    }

    /// Writes queued corrections now (tests and tools; the gateway flushes
    /// by itself).
    pub async fn flush(&self) -> Result<(), StateError> {
        match &self.edge {
            Some(edge) => edge.flush().await,
            None => Ok(()),
        }
    }

    /// Raw Redis access, when the state is Redis (see [`RedisLink`]).
    pub fn redis_link(&self) -> Option<&RedisLink> {
        self.link.as_ref()
    }

    /// Whether the state is shared by several nodes (Redis).
    pub fn is_shared(&self) -> bool {
        self.edge.is_some()
    }

    /// Leases and queued corrections, when the state is Redis.
    pub fn edge_stats(&self) -> Option<EdgeStats> {
        self.edge.as_ref().map(|e| e.stats())
    }

    /// Budget slices, when the state is Redis and `limits = "leased"`.
    pub fn budget_slice_stats(&self) -> Option<BudgetSliceStats> {
        self.budget_edge.as_ref().map(|e| e.stats())
    }

    async fn limit(
        &self,
        ns: &str,
        buckets: &[Bucket],
        mode: Mode,
    ) -> Result<ChargeResult, StateError> {
        check_namespace(ns)?;
        limiter::validate(buckets)?;
        if buckets.is_empty() {
            return Ok(ChargeResult {
                admitted: true,
                ..ChargeResult::default()
            });
        }
        let keys: Vec<String> = buckets
            .iter()
            .map(|b| keys::bucket_key(ns, &b.key))
            .collect();
        if let (Some(edge), Mode::Charge) = (&self.edge, mode) {
            return edge.charge(ns, &keys, buckets).await;
        }
        let call = LimitCall {
            keys: &keys,
            buckets,
            mode,
            terms: &[],
            lease_ms: 0,
        };
        self.backend.limit(call).await.map(|l| l.result)
    }

    /// Whether Redis is currently failing (always false for memory).
    pub fn is_degraded(&self) -> bool {
        self.backend.is_degraded()
    }

    /// Backend name, degraded flag and counters, for /readyz and metrics.
    pub fn health(&self) -> StateHealth {
        self.backend.health()
    }
}

// === input checks ===

fn check_namespace(ns: &str) -> Result<(), StateError> {
    if ns.is_empty() || ns.len() > MAX_NAMESPACE_BYTES {
        return Err(StateError::Invalid(format!(
            "namespace must be 1 to {MAX_NAMESPACE_BYTES} bytes"
        )));
    }
    Ok(())
}

fn kv_key(ns: &str, key: &str) -> Result<String, StateError> {
    check_namespace(ns)?;
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(StateError::Invalid(format!(
            "key must be 1 to {MAX_KEY_BYTES} bytes"
        )));
    }
    Ok(keys::kv_key(ns, key))
}

/// Refuses a TTL under 1 ms (rather than guess it means "none" or "already
/// expired") or too long for Redis.
fn check_ttl(ttl: Option<Duration>) -> Result<(), StateError> {
    let Some(ttl) = ttl else {
        return Ok(());
    };
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    if ms == 0 {
        return Err(StateError::Invalid("ttl must be at least 1 ms".into()));
    }
    // Redis adds the TTL to its clock in signed 64-bit milliseconds.
    if ms > (i64::MAX / 2) as u128 {
        return Err(StateError::Invalid("ttl is too long".into()));
    }
    Ok(())
}
