//! [`EdgeBudgets`]: budget slices, the edge leases of budgets, with zero
//! overshoot (`[state] limits = "leased"` on Redis).
//!
//! A node reserves a slice of a budget counter's remaining room in Redis,
//! in the same script call that reserves a request's worst case. Redis
//! counts the slice as reserved (it is added to the counter), so spend plus
//! reservations plus every node's slices never pass the limit: there is no
//! overshoot at all, unlike rate-limit leases. The node then reserves the
//! worst case of the next requests from its slices without asking Redis,
//! and gives back what a request did not spend into its slice when it
//! settles.
//!
//! Slices are sized by the node's recent demand (about [`SLICE_SPAN`] of
//! it, at least two of its largest requests), and Redis grants at most a
//! quarter of what is left under the limit, so slices shrink as the budget
//! nears exhaustion and stop when a request's worst case no longer fits a
//! quarter of what is left.
//!
//! Every [`REFILL_EVERY`] a background task tops up slices running low,
//! returns slices idle for [`IDLE_AFTER`], and reads each counter's
//! give-back flag. A request that neither its node's slices nor the
//! unleased remainder can cover raises that flag in the same call that
//! refuses it (and returns its own node's slice in that call); the other
//! nodes see the flag on their next refill and return their unused slices,
//! no slice is granted while it is up ([`FLAG_TTL`]), and the refused
//! request waits about a refill period ([`retry_wait`]) and tries once
//! more before it is answered 429. So a request is refused only when what
//! is spent and reserved by requests leaves no room for it.
//!
//! Slices go back when the node stops ([`EdgeBudgets::close`]). A node
//! killed without stopping loses its unused slices: they stay counted as
//! reserved (for a `total` budget, for good), which can refuse requests
//! later but never admit more than the budget.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::StateError;
use super::budget::{
    BudgetCall, BudgetCounter, BudgetReply, MAX_BUDGET_COUNTERS, SliceTerms, Slices, flag_key,
};
use super::fallback::Fallback;

/// How often slices are topped up, returned when idle, and checked for the
/// give-back flag.
pub const REFILL_EVERY: Duration = Duration::from_millis(100);
/// A slice unused this long goes back.
pub const IDLE_AFTER: Duration = Duration::from_secs(2);
/// How long a raised give-back flag stays up (no slices granted meanwhile).
pub const FLAG_TTL: Duration = Duration::from_secs(1);
/// A slice aims at this long of the node's demand.
pub const SLICE_SPAN: Duration = Duration::from_secs(1);
/// Weight of the newest refill period in the demand estimate.
const DEMAND_SMOOTHING: f64 = 0.3;

/// This node's slice of one budget counter, by full key.
#[derive(Debug, Clone)]
struct Slice {
    /// The counter (short key, limit, TTL), for refill and return calls.
    counter: BudgetCounter,
    /// Units left to reserve from.
    units: i64,
    /// The size of the last grant.
    last_grant: i64,
    /// The largest worst case reserved on this counter here.
    largest: i64,
    /// Units reserved since the last refill period, and the smoothed rate
    /// (units a second).
    recent: i64,
    rate: f64,
    /// When a request last used the counter here.
    used: Instant,
    /// Redis asked nodes to give slices back.
    give_back: bool,
}

impl Slice {
    fn new(counter: &BudgetCounter, now: Instant) -> Self {
        Slice {
            counter: BudgetCounter {
                delta: 0,
                ..counter.clone()
            },
            units: 0,
            last_grant: 0,
            largest: 0,
            recent: 0,
            rate: 0.0,
            used: now,
            give_back: false,
        }
    }

    /// The slice to ask for: about [`SLICE_SPAN`] of demand, at least two
    /// of the largest requests, less what is held.
    fn want(&self) -> i64 {
        let by_rate = (self.rate * SLICE_SPAN.as_secs_f64()).ceil() as i64;
        let target = by_rate.max(self.largest.saturating_mul(2)).max(self.recent);
        (target - self.units).max(0)
    }

    /// Less than the largest request or than half the last grant is left.
    fn running_low(&self) -> bool {
        self.units < self.largest || self.units * 2 < self.last_grant
    }
}

/// Counters of budget slices, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetSliceStats {
    /// Reservations served from slices, without Redis.
    pub local_reserves: u64,
    /// Reservations sent to Redis.
    pub remote_reserves: u64,
    /// Reservations refused at first and tried again after the wait, and
    /// those the second try admitted.
    pub retries: u64,
    pub retries_admitted: u64,
    /// Slices granted, and their nano-USD.
    pub slices_granted: u64,
    pub nano_granted: u64,
    /// Unused nano-USD given back to Redis.
    pub nano_returned: u64,
    /// Nano-USD held in slices now, over all counters.
    pub nano_held: u64,
}

#[derive(Default)]
struct Counters {
    local_reserves: AtomicU64,
    remote_reserves: AtomicU64,
    retries: AtomicU64,
    retries_admitted: AtomicU64,
    slices_granted: AtomicU64,
    nano_granted: AtomicU64,
    nano_returned: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// Budget slices of one node over one Redis.
pub(crate) struct EdgeBudgets {
    redis: Arc<Fallback>,
    slices: Mutex<HashMap<String, Slice>>,
    /// Units taken out of slices to return, by full key, with their counter
    /// (kept here until Redis takes them).
    returning: Mutex<HashMap<String, (BudgetCounter, i64)>>,
    counters: Counters,
    closing: AtomicBool,
    /// Held by the refill task while it runs; `close` takes it whole.
    refilling: tokio::sync::Mutex<()>,
}

/// How long a refused request waits before its second try: two refill
/// periods (the other nodes see the flag on their next one and return their
/// slices in the same), plus two of the refused call's round trips.
pub fn retry_wait(round_trip: Duration) -> Duration {
    (2 * REFILL_EVERY + 2 * round_trip).min(2 * FLAG_TTL)
}

impl EdgeBudgets {
    /// Budget slices over `redis`; starts the refill task, which stops when
    /// the returned `Arc` is dropped.
    pub fn start(redis: Arc<Fallback>) -> Arc<Self> {
        let edge = Arc::new(Self {
            redis,
            slices: Mutex::default(),
            returning: Mutex::default(),
            counters: Counters::default(),
            closing: AtomicBool::new(false),
            refilling: tokio::sync::Mutex::new(()),
        });
        spawn_refills(Arc::downgrade(&edge));
        edge
    }

    /// Reserves each counter's delta, all or nothing (see the module docs):
    /// from this node's slices when they cover it, else on Redis, asking
    /// for slices; a refusal waits for other nodes' slices and tries once
    /// more.
    pub async fn reserve(
        &self,
        keys: &[String],
        counters: &[BudgetCounter],
    ) -> Result<BudgetReply, StateError> {
        let now = Instant::now();
        if let Some(reply) = self.try_local(keys, counters, now) {
            bump(&self.counters.local_reserves, 1);
            return Ok(reply);
        }
        let sent = Instant::now();
        let reply = self.remote(keys, counters).await?;
        if reply.admitted || self.redis.is_failing() {
            return Ok(reply);
        }
        bump(&self.counters.retries, 1);
        tokio::time::sleep(retry_wait(sent.elapsed())).await;
        let reply = self.remote(keys, counters).await?;
        if reply.admitted {
            bump(&self.counters.retries_admitted, 1);
        }
        Ok(reply)
    }

    /// Takes the deltas from the slices when every counter's covers its
    /// delta (and no give-back flag is up).
    fn try_local(
        &self,
        keys: &[String],
        counters: &[BudgetCounter],
        now: Instant,
    ) -> Option<BudgetReply> {
        let mut slices = self.slices.lock();
        let covered = keys.iter().zip(counters).all(|(k, c)| {
            c.delta <= 0
                || slices
                    .get(k)
                    .is_some_and(|s| !s.give_back && s.units >= c.delta)
        });
        if !covered || counters.iter().all(|c| c.delta <= 0) {
            return None;
        }
        for (k, c) in keys.iter().zip(counters) {
            if let Some(s) = slices.get_mut(k) {
                s.units -= c.delta.max(0);
                s.recent += c.delta.max(0);
                s.largest = s.largest.max(c.delta);
                s.used = now;
            }
        }
        Some(BudgetReply {
            admitted: true,
            refused: None,
            values: vec![0; counters.len()],
            granted: Vec::new(),
            give_back: Vec::new(),
            local: true,
        })
    }

    /// One checked call on Redis: returns this node's slices of `keys`
    /// first, asks for new ones, keeps what is granted.
    async fn remote(
        &self,
        keys: &[String],
        counters: &[BudgetCounter],
    ) -> Result<BudgetReply, StateError> {
        bump(&self.counters.remote_reserves, 1);
        let now = Instant::now();
        let terms: Vec<SliceTerms> = {
            let mut slices = self.slices.lock();
            keys.iter()
                .zip(counters)
                .map(|(k, c)| {
                    let s = slices
                        .entry(k.clone())
                        .or_insert_with(|| Slice::new(c, now));
                    s.largest = s.largest.max(c.delta);
                    s.recent += c.delta.max(0);
                    s.used = now;
                    let ret = std::mem::take(&mut s.units);
                    SliceTerms {
                        ret,
                        want: if s.give_back || c.delta <= 0 {
                            0
                        } else {
                            s.want() + c.delta
                        },
                        min: c.delta.max(1),
                    }
                })
                .collect()
        };
        let flags: Vec<String> = keys.iter().map(|k| flag_key(k)).collect();
        let call = BudgetCall {
            keys,
            counters,
            check: true,
            hash: None,
            slices: Some(Slices {
                terms: &terms,
                flags: &flags,
                flag_ttl: FLAG_TTL,
            }),
        };
        let answer = if self.redis.is_failing() {
            None
        } else {
            self.redis.budget_on_redis(call).await.ok()
        };
        if let Some(r) = answer {
            bump(
                &self.counters.nano_returned,
                terms.iter().map(|t| t.ret as u64).sum(),
            );
            self.keep(keys, &r.granted, &r.give_back);
            return Ok(r);
        }
        // Redis fails: the returned units wait here, and the call goes to
        // the fail-open fallback (or fails), without slices.
        self.requeue(keys, counters, &terms);
        super::backend::Backend::budget(
            self.redis.as_ref(),
            BudgetCall {
                slices: None,
                ..call
            },
        )
        .await
    }

    /// Keeps the slices Redis granted, and its flags.
    fn keep(&self, keys: &[String], granted: &[i64], flags: &[bool]) {
        let mut orphans = Vec::new();
        {
            let mut slices = self.slices.lock();
            for (i, k) in keys.iter().enumerate() {
                let g = granted.get(i).copied().unwrap_or(0);
                let flag = flags.get(i).copied().unwrap_or(false);
                if g > 0 {
                    bump(&self.counters.slices_granted, 1);
                    bump(&self.counters.nano_granted, g as u64);
                }
                match slices.get_mut(k) {
                    Some(s) => {
                        s.give_back = flag;
                        if g > 0 {
                            s.units += g;
                            s.last_grant = g;
                        }
                    }
                    // Dropped meanwhile (idle, or the node is stopping).
                    None if g > 0 => orphans.push((k.clone(), g)),
                    None => {}
                }
            }
        }
        let mut returning = self.returning.lock();
        for (k, g) in orphans {
            returning.entry(k).or_default().1 += g;
        }
    }

    /// Units a failed call did not return wait to be returned.
    fn requeue(&self, keys: &[String], counters: &[BudgetCounter], terms: &[SliceTerms]) {
        let mut returning = self.returning.lock();
        for ((k, c), t) in keys.iter().zip(counters).zip(terms) {
            if t.ret > 0 {
                let e = returning.entry(k.clone()).or_insert_with(|| {
                    (
                        BudgetCounter {
                            delta: 0,
                            ..c.clone()
                        },
                        0,
                    )
                });
                e.1 += t.ret;
            }
        }
    }

    /// Puts `amount` back into the slices of `keys`; the indexes of those
    /// holding no slice.
    pub fn put_back(&self, keys: &[String], amount: i64) -> Vec<usize> {
        let mut slices = self.slices.lock();
        let mut missing = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            match slices.get_mut(k) {
                Some(s) => s.units += amount,
                None => missing.push(i),
            }
        }
        missing
    }

    /// One refill period: folds demand, takes the slices to return (idle,
    /// or flagged), asks for slices running low, reads the flags; returns
    /// at once what newly flagged slices hold.
    async fn refill(&self) {
        if self.closing.load(Ordering::Acquire) || self.redis.is_failing() {
            return;
        }
        let now = Instant::now();
        let mut calls: Vec<(String, BudgetCounter, SliceTerms)> = Vec::new();
        {
            let mut slices = self.slices.lock();
            let mut returning = self.returning.lock();
            slices.retain(|k, s| {
                let per_second = s.recent as f64 / REFILL_EVERY.as_secs_f64();
                s.rate = DEMAND_SMOOTHING * per_second + (1.0 - DEMAND_SMOOTHING) * s.rate;
                s.recent = 0;
                let idle = now.saturating_duration_since(s.used) >= IDLE_AFTER;
                if idle {
                    if s.units > 0 {
                        let e = returning
                            .entry(k.clone())
                            .or_insert_with(|| (s.counter.clone(), 0));
                        e.0 = s.counter.clone();
                        e.1 += s.units;
                    }
                    return false;
                }
                let ret = if s.give_back {
                    std::mem::take(&mut s.units)
                } else {
                    0
                };
                let want = if !s.give_back && s.running_low() {
                    s.want()
                } else {
                    0
                };
                calls.push((
                    k.clone(),
                    s.counter.clone(),
                    SliceTerms {
                        ret,
                        want,
                        min: s.largest.max(1),
                    },
                ));
                true
            });
            for (k, (c, units)) in returning.drain() {
                match calls.iter_mut().find(|(key, _, _)| *key == k) {
                    Some((_, _, t)) => t.ret += units,
                    None => calls.push((
                        k,
                        c,
                        SliceTerms {
                            ret: units,
                            ..SliceTerms::default()
                        },
                    )),
                }
            }
        }
        let newly_flagged = self.send(calls).await;
        if newly_flagged.is_empty() {
            return;
        }
        // Return what the flagged slices hold now, in a second call.
        let mut calls = Vec::new();
        {
            let mut slices = self.slices.lock();
            for k in newly_flagged {
                if let Some(s) = slices.get_mut(&k)
                    && s.units > 0
                {
                    let ret = std::mem::take(&mut s.units);
                    calls.push((
                        k,
                        s.counter.clone(),
                        SliceTerms {
                            ret,
                            ..SliceTerms::default()
                        },
                    ));
                }
            }
        }
        self.send(calls).await;
    }

    /// Sends unchecked slice calls (no deltas), in chunks of the most
    /// counters a call takes; keeps grants and flags; requeues the returns
    /// of failed calls. The keys whose flag went up with slices held.
    async fn send(&self, calls: Vec<(String, BudgetCounter, SliceTerms)>) -> Vec<String> {
        let mut newly_flagged = Vec::new();
        for chunk in calls.chunks(MAX_BUDGET_COUNTERS) {
            let keys: Vec<String> = chunk.iter().map(|(k, _, _)| k.clone()).collect();
            let counters: Vec<BudgetCounter> = chunk.iter().map(|(_, c, _)| c.clone()).collect();
            let terms: Vec<SliceTerms> = chunk.iter().map(|(_, _, t)| *t).collect();
            let flags: Vec<String> = keys.iter().map(|k| flag_key(k)).collect();
            let call = BudgetCall {
                keys: &keys,
                counters: &counters,
                check: false,
                hash: None,
                slices: Some(Slices {
                    terms: &terms,
                    flags: &flags,
                    flag_ttl: FLAG_TTL,
                }),
            };
            match self.redis.budget_on_redis(call).await {
                Ok(r) => {
                    bump(
                        &self.counters.nano_returned,
                        terms.iter().map(|t| t.ret as u64).sum(),
                    );
                    {
                        let slices = self.slices.lock();
                        for (i, k) in keys.iter().enumerate() {
                            if r.give_back.get(i).copied().unwrap_or(false)
                                && slices.get(k).is_some_and(|s| !s.give_back && s.units > 0)
                            {
                                newly_flagged.push(k.clone());
                            }
                        }
                    }
                    self.keep(&keys, &r.granted, &r.give_back);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "budget slices wait for Redis");
                    self.requeue(&keys, &counters, &terms);
                }
            }
        }
        newly_flagged
    }

    /// Returns every slice, for a node that is stopping; gives up after
    /// `deadline`.
    pub async fn close(&self, deadline: Duration) {
        self.closing.store(true, Ordering::Release);
        let _no_refills = self.refilling.lock().await;
        let calls: Vec<(String, BudgetCounter, SliceTerms)> = {
            let mut slices = self.slices.lock();
            let mut returning = self.returning.lock();
            for (k, s) in slices.drain() {
                let e = returning.entry(k).or_insert_with(|| (s.counter.clone(), 0));
                e.0 = s.counter;
                e.1 += s.units;
            }
            returning
                .drain()
                .filter(|(_, (_, units))| *units > 0)
                .map(|(k, (c, units))| {
                    (
                        k,
                        c,
                        SliceTerms {
                            ret: units,
                            ..SliceTerms::default()
                        },
                    )
                })
                .collect()
        };
        if calls.is_empty() {
            return;
        }
        let sent = tokio::time::timeout(deadline, self.send(calls)).await;
        let left: i64 = self.returning.lock().values().map(|(_, u)| *u).sum();
        if sent.is_err() || left > 0 {
            tracing::warn!(
                nano_usd = left,
                "stopping with budget slices Redis did not take back"
            );
        }
    }

    /// The counters, for `/metrics`.
    pub fn stats(&self) -> BudgetSliceStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BudgetSliceStats {
            local_reserves: get(&c.local_reserves),
            remote_reserves: get(&c.remote_reserves),
            retries: get(&c.retries),
            retries_admitted: get(&c.retries_admitted),
            slices_granted: get(&c.slices_granted),
            nano_granted: get(&c.nano_granted),
            nano_returned: get(&c.nano_returned),
            nano_held: self
                .slices
                .lock()
                .values()
                .map(|s| s.units.max(0) as u64)
                .sum(),
        }
    }
}

/// Runs a refill every [`REFILL_EVERY`] until the slices are dropped.
fn spawn_refills(edge: Weak<EdgeBudgets>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFILL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(edge) = edge.upgrade() else {
                return;
            };
            let _refilling = edge.refilling.lock().await;
            edge.refill().await;
        }
    });
}
