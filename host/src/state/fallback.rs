//! [`Fallback`]: Redis in front of a local stand-in, with every failure
//! rule written once.
//!
//! Each operation runs on Redis within `op_timeout` unless the state is
//! degraded. When Redis fails or is slow, `on_error` decides: fail-open
//! answers the same operation from a local memory backend (approximate: per
//! node), fail-closed answers [`StateError::Unavailable`]. Either way the
//! state is marked degraded; while degraded, operations skip Redis entirely
//! (no timeout paid per call) and a background probe PINGs it every
//! [`PROBE_INTERVAL`], clearing the flag as soon as it answers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::backend::{Answer, Backend};
use super::budget::{BudgetCall, BudgetReply};
use super::limiter::{LimitCall, Limited};
use super::memory::MemoryBackend;
use super::redis_backend::RedisBackend;
use super::{OnError, StateError, StateHealth, StateSettings};

/// How often a degraded state checks whether Redis answers again.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// At most one Redis warning per this period; the rest are counted.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Redis plus what failure handling needs.
pub(crate) struct Fallback {
    redis: Arc<RedisBackend>,
    /// The local stand-in in fail-open mode.
    local: Option<MemoryBackend>,
    on_error: OnError,
    op_timeout: Duration,
    status: Arc<Status>,
}

/// Whether Redis is failing, and what it cost; shared with the probe.
#[derive(Default)]
struct Status {
    degraded: AtomicBool,
    fallbacks: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// When the last warning was logged, and how many were skipped since.
    warned: Mutex<(Option<Instant>, u64)>,
}

impl Fallback {
    /// Builds the Redis client (no traffic yet) and, in fail-open mode, the
    /// local stand-in.
    pub(crate) fn new(settings: &StateSettings) -> Result<Self, StateError> {
        let local = match settings.on_error {
            OnError::FailOpen => Some(MemoryBackend::new()),
            OnError::FailClosed => None,
        };
        Ok(Self {
            redis: Arc::new(RedisBackend::new(settings)?),
            local,
            on_error: settings.on_error,
            op_timeout: settings.op_timeout,
            status: Arc::default(),
        })
    }

    /// Connects and checks that Redis answers within `timeout`.
    pub(crate) async fn heal(&self, timeout: Duration) -> Result<(), StateError> {
        self.redis.heal(timeout).await
    }

    /// `"redis"` or `"redis-cluster"`.
    pub(crate) fn name(&self) -> &'static str {
        self.redis.name()
    }

    /// Raw Redis access with this state's connection and `op_timeout`,
    /// for data that must live in Redis or nowhere (the job queue).
    pub(crate) fn link(&self) -> super::RedisLink {
        super::RedisLink {
            redis: self.redis.clone(),
            op_timeout: self.op_timeout,
        }
    }

    /// Whether Redis is failing (calls answer from the fallback, or fail).
    pub(crate) fn is_failing(&self) -> bool {
        self.status.degraded.load(Ordering::Acquire)
    }

    /// Runs the limiter on Redis itself, never on the fallback: for writes
    /// that must reach Redis or wait (queued corrections). Fails at once
    /// while Redis is failing.
    pub(crate) async fn limit_on_redis(&self, call: LimitCall<'_>) -> Result<Limited, StateError> {
        if self.is_failing() {
            return Err(StateError::Unavailable("Redis is failing".into()));
        }
        let reason = match tokio::time::timeout(self.op_timeout, self.redis.limit(&call)).await {
            Ok(Err(StateError::Unavailable(reason))) => reason,
            Ok(answer) => return answer,
            Err(_) => format!("no answer within {} ms", self.op_timeout.as_millis()),
        };
        self.status.errors.fetch_add(1, Ordering::Relaxed);
        self.failed(&reason);
        Err(StateError::Unavailable(reason))
    }

    /// Runs a budget call on Redis itself, never on the fallback (budget
    /// slices come from Redis or nowhere). Fails at once while Redis is
    /// failing.
    pub(crate) async fn budget_on_redis(
        &self,
        call: BudgetCall<'_>,
    ) -> Result<BudgetReply, StateError> {
        if self.is_failing() {
            return Err(StateError::Unavailable("Redis is failing".into()));
        }
        let reason = match tokio::time::timeout(self.op_timeout, self.redis.budget(call)).await {
            Ok(Err(StateError::Unavailable(reason))) => reason,
            Ok(answer) => return answer,
            Err(_) => format!("no answer within {} ms", self.op_timeout.as_millis()),
        };
        self.status.errors.fetch_add(1, Ordering::Relaxed);
        self.failed(&reason);
        Err(StateError::Unavailable(reason))
    }

    /// Runs `op` on Redis within `op_timeout` unless degraded; on failure
    /// (or while degraded) runs it on the local stand-in, or fails.
    async fn run<'a, T>(
        &'a self,
        op: impl Fn(&'a dyn Backend) -> Answer<'a, T>,
    ) -> Result<T, StateError> {
        if !self.status.degraded.load(Ordering::Acquire) {
            let reason = match tokio::time::timeout(self.op_timeout, op(self.redis.as_ref())).await
            {
                Ok(Err(StateError::Unavailable(reason))) => reason,
                Ok(answer) => return answer,
                Err(_) => format!("no answer within {} ms", self.op_timeout.as_millis()),
            };
            self.status.errors.fetch_add(1, Ordering::Relaxed);
            self.failed(&reason);
        }
        match &self.local {
            Some(local) => {
                self.status.fallbacks.fetch_add(1, Ordering::Relaxed);
                op(local).await
            }
            None => Err(StateError::Unavailable(format!(
                "Redis is failing ({})",
                self.status
                    .last_error
                    .lock()
                    .as_deref()
                    .unwrap_or("unknown error")
            ))),
        }
    }

    /// Records a Redis failure; the first one marks the state degraded and
    /// starts the probe that clears it.
    pub(crate) fn failed(&self, reason: &str) {
        let status = &self.status;
        *status.last_error.lock() = Some(reason.to_owned());
        let newly = !status.degraded.swap(true, Ordering::AcqRel);
        if newly {
            spawn_probe(Arc::downgrade(&self.redis), status.clone(), self.op_timeout);
        }
        let skipped = {
            let mut warned = status.warned.lock();
            let due = warned.0.is_none_or(|at| at.elapsed() >= WARN_EVERY);
            if !due {
                warned.1 += 1;
                return;
            }
            *warned = (Some(Instant::now()), 0);
            warned.1
        };
        let action = match self.on_error {
            OnError::FailOpen => "answering from the local fallback",
            OnError::FailClosed => "failing state calls",
        };
        tracing::warn!(
            backend = self.redis.name(),
            error = reason,
            skipped_warnings = skipped,
            "state: Redis failed; {action} until it answers again"
        );
    }
}

/// PINGs Redis every [`PROBE_INTERVAL`] until it answers, then clears the
/// degraded flag. Stops once the backend is dropped.
fn spawn_probe(redis: Weak<RedisBackend>, status: Arc<Status>, op_timeout: Duration) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(PROBE_INTERVAL).await;
            let Some(redis) = redis.upgrade() else {
                return;
            };
            match redis.heal(op_timeout).await {
                Ok(()) => {
                    status.degraded.store(false, Ordering::Release);
                    tracing::info!(backend = redis.name(), "state: Redis answers again");
                    return;
                }
                Err(e) => *status.last_error.lock() = Some(e.to_string()),
            }
        }
    });
}

impl Backend for Fallback {
    fn get<'a>(&'a self, key: &'a str) -> Answer<'a, Option<Vec<u8>>> {
        Box::pin(self.run(move |b| b.get(key)))
    }

    fn set<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Option<Duration>) -> Answer<'a, ()> {
        Box::pin(self.run(move |b| b.set(key, value, ttl)))
    }

    fn delete<'a>(&'a self, key: &'a str) -> Answer<'a, bool> {
        Box::pin(self.run(move |b| b.delete(key)))
    }

    fn incr<'a>(&'a self, key: &'a str, delta: i64, ttl: Option<Duration>) -> Answer<'a, i64> {
        Box::pin(self.run(move |b| b.incr(key, delta, ttl)))
    }

    fn compare_and_swap<'a>(
        &'a self,
        key: &'a str,
        expected: Option<&'a [u8]>,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> Answer<'a, bool> {
        Box::pin(self.run(move |b| b.compare_and_swap(key, expected, value, ttl)))
    }

    fn release<'a>(&'a self, key: &'a str, token: &'a [u8]) -> Answer<'a, bool> {
        Box::pin(self.run(move |b| b.release(key, token)))
    }

    fn set_and_release<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
        lock: &'a str,
        token: &'a [u8],
    ) -> Answer<'a, bool> {
        Box::pin(self.run(move |b| b.set_and_release(key, value, ttl, lock, token)))
    }

    fn get_or_lock<'a>(
        &'a self,
        key: &'a str,
        lock: &'a str,
        token: &'a [u8],
        ttl: Duration,
    ) -> Answer<'a, (Option<Vec<u8>>, bool)> {
        Box::pin(self.run(move |b| b.get_or_lock(key, lock, token, ttl)))
    }

    fn limit<'a>(&'a self, call: LimitCall<'a>) -> Answer<'a, Limited> {
        Box::pin(self.run(move |b| b.limit(call)))
    }

    fn budget<'a>(&'a self, call: BudgetCall<'a>) -> Answer<'a, BudgetReply> {
        Box::pin(self.run(move |b| b.budget(call)))
    }

    fn budget_hash<'a>(&'a self, key: &'a str) -> Answer<'a, Vec<(String, i64)>> {
        Box::pin(self.run(move |b| b.budget_hash(key)))
    }

    fn is_degraded(&self) -> bool {
        self.status.degraded.load(Ordering::Acquire)
    }

    fn health(&self) -> StateHealth {
        let s = &self.status;
        StateHealth {
            backend: self.redis.name(),
            on_error: self.on_error,
            degraded: s.degraded.load(Ordering::Acquire),
            fallbacks: s.fallbacks.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            last_error: s.last_error.lock().clone(),
        }
    }
}
