//! [`EdgeLimits`]: rate limits on Redis for a node that may be far from it.
//!
//! - Charges: with `limits = "leased"`, a charge covered by this node's
//!   leases is admitted without Redis ([`Leases`]); otherwise one Redis call
//!   charges exactly and asks for a lease. With `limits = "exact"`, every
//!   charge is that one Redis call, without the lease.
//! - Corrections (settles, returned leases) never wait on Redis: they are
//!   queued ([`Settles`]) and flushed in the background at least every
//!   [`FLUSH_EVERY`], to Redis only, and once more when the node stops
//!   ([`EdgeLimits::close`]).
//!
//! What a node killed without a chance to stop (SIGKILL, power loss) loses:
//! the corrections queued since the last flush (at most [`FLUSH_EVERY`] of
//! settles: buckets stay charged at the estimate for those requests) and the
//! unused tokens of its leases, which Redis counts out until the lease
//! period ends and which then come back only as the bucket refills. Neither
//! can admit more than the limit allows; both can admit less for a while.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::fallback::Fallback;
use super::leases::{LEASE_PERIOD, Leases};
use super::limiter::{LeaseTerms, LimitCall, Limited, Mode};
use super::settle::{FLUSH_EVERY, Settles};
use super::{LimitsMode, StateError, StateSettings};
use crate::policy::{Bucket, ChargeResult};

/// Counters of the edge machinery, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EdgeStats {
    /// Charges admitted from leases, without Redis.
    pub local_admits: u64,
    /// Charges sent to Redis.
    pub remote_charges: u64,
    /// Leases granted, and the tokens in them.
    pub leases_granted: u64,
    pub lease_tokens_granted: u64,
    /// Leases returned, and their unused tokens.
    pub leases_returned: u64,
    pub lease_tokens_returned: u64,
    /// Tokens held in leases now.
    pub lease_tokens_held: u64,
    /// Buckets with corrections waiting to be written.
    pub settle_queue_depth: u64,
    /// Flushes that wrote something, and their total time in microseconds.
    pub settle_flushes: u64,
    pub settle_flush_micros: u64,
    /// Flushes Redis did not take (the corrections wait for the next one).
    pub settle_flush_failures: u64,
    /// Corrections dropped because the queue was full.
    pub settles_dropped: u64,
}

#[derive(Default)]
struct Counters {
    local_admits: AtomicU64,
    remote_charges: AtomicU64,
    leases_granted: AtomicU64,
    lease_tokens_granted: AtomicU64,
    leases_returned: AtomicU64,
    lease_tokens_returned: AtomicU64,
    settle_flushes: AtomicU64,
    settle_flush_micros: AtomicU64,
    settle_flush_failures: AtomicU64,
    settles_dropped: AtomicU64,
}

/// Leases, queued corrections and their flusher, over one Redis.
pub(crate) struct EdgeLimits {
    /// This, for background refills.
    me: Weak<EdgeLimits>,
    redis: Arc<Fallback>,
    /// None with `limits = "exact"`.
    leases: Option<Leases>,
    max_overshoot: f64,
    settles: Settles,
    counters: Counters,
    /// The node is stopping: no more refills.
    closing: std::sync::atomic::AtomicBool,
    /// Held (shared) by every refill in flight; `close` takes it whole, so
    /// no grant lands after the leases were handed back.
    refills: tokio::sync::RwLock<()>,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl EdgeLimits {
    /// Edge limits over `redis`; starts the flusher, which stops when the
    /// returned `Arc` is dropped.
    pub fn start(redis: Arc<Fallback>, settings: &StateSettings) -> Arc<Self> {
        let edge = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            redis,
            leases: (settings.limits == LimitsMode::Leased).then(Leases::default),
            max_overshoot: settings.max_overshoot,
            settles: Settles::default(),
            counters: Counters::default(),
            closing: std::sync::atomic::AtomicBool::new(false),
            refills: tokio::sync::RwLock::new(()),
        });
        spawn_flusher(Arc::downgrade(&edge));
        edge
    }

    /// The all-or-nothing charge over `buckets` (full keys in `keys`).
    pub async fn charge(
        &self,
        ns: &str,
        keys: &[String],
        buckets: &[Bucket],
    ) -> Result<ChargeResult, StateError> {
        let Some(leases) = &self.leases else {
            return self
                .remote_charge(keys, buckets, &[])
                .await
                .map(|l| l.result);
        };
        let now = Instant::now();
        if let Some((result, refill)) = leases.try_spend(keys, buckets, now) {
            bump(&self.counters.local_admits, 1);
            if refill {
                self.spawn_refill(ns, keys, buckets);
            }
            let refunds: Vec<Bucket> = buckets.iter().filter(|b| b.cost < 0).cloned().collect();
            if !refunds.is_empty() {
                self.queue(ns, &refunds);
            }
            return Ok(result);
        }
        // A lease granted while Redis fails would come from the local
        // fallback: ask for none then.
        let terms = if self.redis.is_failing() {
            Vec::new()
        } else {
            leases.terms(keys, buckets, self.max_overshoot, now)
        };
        let limited = self.remote_charge(keys, buckets, &terms).await?;
        if self.redis.is_failing() {
            return Ok(limited.result);
        }
        self.record_grant(leases, ns, keys, buckets, &limited, now);
        Ok(limited.result)
    }

    /// Counts and keeps what Redis granted with a charge sent at `sent`, and
    /// queues the leases a refusal stranded.
    fn record_grant(
        &self,
        leases: &Leases,
        ns: &str,
        keys: &[String],
        buckets: &[Bucket],
        limited: &Limited,
        sent: Instant,
    ) {
        let granted = limited.granted.iter().filter(|g| **g > 0);
        bump(
            &self.counters.leases_granted,
            granted.clone().count() as u64,
        );
        bump(&self.counters.lease_tokens_granted, granted.sum());
        for stranded in leases.grant(ns, keys, buckets, limited, sent) {
            self.queue_returned(stranded);
        }
    }

    /// Tops the leases on `buckets` up in the background: a charge of
    /// nothing that asks for leases, so requests keep finding tokens here.
    fn spawn_refill(&self, ns: &str, keys: &[String], buckets: &[Bucket]) {
        let Some(edge) = self.me.upgrade() else {
            return;
        };
        let (ns, keys) = (ns.to_owned(), keys.to_vec());
        let units = buckets.to_vec();
        tokio::spawn(async move {
            let Some(leases) = &edge.leases else {
                return;
            };
            let _refilling = edge.refills.read().await;
            if edge.closing.load(Ordering::Acquire) {
                leases.refill_done(&keys);
                return;
            }
            let now = Instant::now();
            let terms = leases.terms(&keys, &units, edge.max_overshoot, now);
            let nothing: Vec<Bucket> = units
                .iter()
                .map(|b| Bucket {
                    cost: 0,
                    ..b.clone()
                })
                .collect();
            if !edge.redis.is_failing()
                && let Ok(limited) = edge.remote_charge(&keys, &nothing, &terms).await
                && !edge.redis.is_failing()
            {
                edge.record_grant(leases, &ns, &keys, &nothing, &limited, now);
            }
            leases.refill_done(&keys);
        });
    }

    async fn remote_charge(
        &self,
        keys: &[String],
        buckets: &[Bucket],
        terms: &[LeaseTerms],
    ) -> Result<Limited, StateError> {
        bump(&self.counters.remote_charges, 1);
        let call = LimitCall {
            keys,
            buckets,
            mode: Mode::Charge,
            terms,
            lease_ms: LEASE_PERIOD.as_millis() as u64,
        };
        super::backend::Backend::limit(self.redis.as_ref(), call).await
    }

    /// Queues corrections to `buckets` in `ns`, applied within
    /// [`FLUSH_EVERY`].
    pub fn queue(&self, ns: &str, buckets: &[Bucket]) {
        if !self.settles.push(ns, buckets) {
            bump(&self.counters.settles_dropped, 1);
            tracing::warn!(ns, "rate-limit settle queue full: a correction was dropped");
        }
    }

    fn queue_returned(&self, returned: super::leases::Returned) {
        bump(&self.counters.leases_returned, 1);
        bump(&self.counters.lease_tokens_returned, returned.unused);
        if !self.settles.push_returned(returned) {
            bump(&self.counters.settles_dropped, 1);
        }
    }

    /// Hands back leases that ran out and writes every queued correction
    /// Redis takes; the rest wait for the next flush.
    pub async fn flush(&self) -> Result<(), StateError> {
        if let Some(leases) = &self.leases {
            for returned in leases.expired(Instant::now()) {
                self.queue_returned(returned);
            }
        }
        let batches = self.settles.take();
        if batches.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut batches = batches.into_iter();
        while let Some(batch) = batches.next() {
            let call = LimitCall {
                keys: &batch.keys,
                buckets: &batch.buckets,
                mode: Mode::Adjust,
                terms: &batch.terms,
                lease_ms: 0,
            };
            if let Err(e) = self.redis.limit_on_redis(call).await {
                bump(&self.counters.settle_flush_failures, 1);
                self.settles.restore(batch);
                batches.for_each(|b| self.settles.restore(b));
                return Err(e);
            }
        }
        bump(&self.counters.settle_flushes, 1);
        bump(
            &self.counters.settle_flush_micros,
            started.elapsed().as_micros() as u64,
        );
        Ok(())
    }

    /// Returns every lease and flushes, for a node that is stopping; gives
    /// up after `deadline` (what is left is what a killed node loses).
    pub async fn close(&self, deadline: Duration) {
        self.closing.store(true, Ordering::Release);
        // Let refills in flight land first, so their grants go back too.
        let _no_refills = self.refills.write().await;
        if let Some(leases) = &self.leases {
            for returned in leases.drain() {
                self.queue_returned(returned);
            }
        }
        let flushed = tokio::time::timeout(deadline, async {
            while self.settles.depth() > 0 {
                if self.flush().await.is_err() {
                    return false;
                }
            }
            true
        })
        .await;
        if !matches!(flushed, Ok(true)) {
            tracing::warn!(
                waiting = self.settles.depth(),
                "stopping with rate-limit corrections Redis did not take"
            );
        }
    }

    /// The counters, for `/metrics`.
    pub fn stats(&self) -> EdgeStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EdgeStats {
            local_admits: get(&c.local_admits),
            remote_charges: get(&c.remote_charges),
            leases_granted: get(&c.leases_granted),
            lease_tokens_granted: get(&c.lease_tokens_granted),
            leases_returned: get(&c.leases_returned),
            lease_tokens_returned: get(&c.lease_tokens_returned),
            lease_tokens_held: self.leases.as_ref().map_or(0, Leases::held),
            settle_queue_depth: self.settles.depth() as u64,
            settle_flushes: get(&c.settle_flushes),
            settle_flush_micros: get(&c.settle_flush_micros),
            settle_flush_failures: get(&c.settle_flush_failures),
            settles_dropped: get(&c.settles_dropped),
        }
    }
}

/// Flushes every [`FLUSH_EVERY`] until the edge limits are dropped.
fn spawn_flusher(edge: Weak<EdgeLimits>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(edge) = edge.upgrade() else {
                return;
            };
            if let Err(e) = edge.flush().await {
                tracing::debug!(error = %e, "rate-limit corrections wait for Redis");
            }
        }
    });
}
