//! A millisecond clock that tests can drive by hand.
//!
//! Key cooldowns, the circuit breaker and the retry budget only ever compare
//! durations, so they read a monotonic millisecond counter through [`Clock`]
//! instead of `Instant::now()`: tests advance a [`ManualClock`] and assert
//! exact transitions without sleeping.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Monotonic milliseconds since an arbitrary origin.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds elapsed since the clock's origin; never decreases.
    fn now_ms(&self) -> u64;
}

/// The real clock: milliseconds since it was created.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        // u64 milliseconds last 584 million years; truncation cannot happen.
        self.origin.elapsed().as_millis() as u64
    }
}

/// A clock that moves only when told to; clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        Self {
            now: Arc::new(AtomicU64::new(start_ms)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.now.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

/// The clock used when none is given.
pub(crate) fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock::new())
}
