//! [`Leases`]: the slices of rate-limit buckets this node holds and spends
//! without asking Redis (`[state] limits = "leased"`).
//!
//! A charge whose every bucket is covered by a live lease is admitted here,
//! at local speed. Otherwise the charge goes to Redis as an exact charge
//! that also asks for a lease per bucket ([`Leases::terms`]); what Redis
//! grants ([`Leases::grant`]) is spent by the next charges. How much to ask
//! for follows this node's own recent demand on the bucket (its share of
//! the traffic), so a busy node holds more than an idle one; Redis grants
//! at most half of what the charge leaves and never lets the tokens out in
//! leases exceed `max_overshoot` of the limit (see `limiter.lua`).
//!
//! A lease is spent only until [`LEASE_PERIOD`] after the request that took
//! it was sent: Redis counts it out until at least that long after it
//! answered, so a node never spends a lease Redis has forgotten. When it
//! runs out, or the node stops, or a refused charge finds it too small to
//! use, its unused tokens go back ([`Leases::expired`], [`Leases::drain`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::limiter::{LeaseTerms, Limited};
use crate::policy::{Bucket, BucketState, ChargeResult};

/// How long a lease may be spent after the request that took it was sent.
pub const LEASE_PERIOD: Duration = Duration::from_secs(1);
/// Weight of the newest interval in the demand estimate.
const DEMAND_SMOOTHING: f64 = 0.3;

/// A lease this node holds on one bucket.
#[derive(Debug, Clone)]
struct Lease {
    /// The bucket's namespace and its key within it, to return the lease.
    ns: String,
    bucket: Bucket,
    /// Tokens left to spend.
    tokens: u64,
    /// Tokens granted into this lease (retired from Redis's count on return).
    granted: u64,
    /// The size of the last grant.
    last_grant: u64,
    /// Tokens spent since Redis was last told, and told so far.
    unreported: u64,
    retired: u64,
    /// A background refill is on its way.
    refilling: bool,
    /// Spend only before this.
    until: Instant,
    /// What Redis said of the bucket when it granted the lease.
    remaining: u64,
    reset_ms: u64,
}

/// This node's recent demand on one bucket.
#[derive(Debug, Clone, Copy)]
struct Demand {
    /// Units per second, smoothed.
    rate: f64,
    /// Units charged since `since`.
    units: u64,
    since: Instant,
    /// A lease size that demand has shown to be too small or about right:
    /// doubled when a lease runs dry before its period ends, halved when
    /// one runs out with tokens left (the rate estimate lags a burst).
    hint: u64,
}

/// A lease to hand back: its unused tokens and the grant to retire.
#[derive(Debug, Clone)]
pub(crate) struct Returned {
    pub ns: String,
    pub bucket: Bucket,
    pub unused: u64,
    pub granted: u64,
}

/// The leases and demand estimates of one node, by full bucket key.
#[derive(Default)]
pub(crate) struct Leases {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    leases: HashMap<String, Lease>,
    demand: HashMap<String, Demand>,
}

impl Leases {
    /// Spends from the leases when every bucket with a positive cost is
    /// covered (all or nothing). Refunds (negative costs) are not applied
    /// here: the caller queues them.
    /// The second value says a lease is running low (half of its last grant
    /// spent, or most of its period gone) and no refill is on its way: the
    /// caller should refill it in the background ([`Leases::refill_done`]
    /// when that ends), so the next requests need not wait on Redis.
    pub fn try_spend(
        &self,
        keys: &[String],
        buckets: &[Bucket],
        now: Instant,
    ) -> Option<(ChargeResult, bool)> {
        let mut inner = self.inner.lock();
        for (key, b) in keys.iter().zip(buckets) {
            inner.note_demand(key, b.cost, now);
        }
        // Refunds alone are corrections, not admissions: Redis applies them.
        if buckets.iter().all(|b| b.cost <= 0) {
            return None;
        }
        let covered = keys.iter().zip(buckets).all(|(key, b)| {
            b.cost <= 0
                || inner
                    .leases
                    .get(key)
                    .is_some_and(|l| l.until > now && l.tokens >= b.cost as u64)
        });
        if !covered {
            return None;
        }
        let mut states = Vec::with_capacity(buckets.len());
        let mut refill = false;
        for (key, b) in keys.iter().zip(buckets) {
            let state = match inner.leases.get_mut(key) {
                Some(l) => {
                    if b.cost > 0 {
                        l.tokens -= b.cost as u64;
                        l.unreported += b.cost as u64;
                        if !l.refilling && l.running_low(now) {
                            l.refilling = true;
                            refill = true;
                        }
                    }
                    BucketState {
                        key: b.key.clone(),
                        unit: b.unit,
                        limit: b.shape.capacity(),
                        // What Redis had left, plus what this node still holds.
                        remaining: l.remaining + l.tokens,
                        reset_ms: l.reset_ms,
                    }
                }
                None => BucketState {
                    key: b.key.clone(),
                    unit: b.unit,
                    limit: b.shape.capacity(),
                    remaining: b.shape.capacity(),
                    reset_ms: 0,
                },
            };
            states.push(state);
        }
        Some((
            ChargeResult {
                admitted: true,
                retry_after_ms: 0,
                buckets: states,
            },
            refill,
        ))
    }

    /// A background refill of `keys` ended (granted or not).
    pub fn refill_done(&self, keys: &[String]) {
        let mut inner = self.inner.lock();
        for key in keys {
            if let Some(l) = inner.leases.get_mut(key) {
                l.refilling = false;
            }
        }
    }

    /// The lease to ask for with a charge sent to Redis: this node's demand
    /// over one lease period, at most `max_overshoot` of the limit.
    pub fn terms(
        &self,
        keys: &[String],
        buckets: &[Bucket],
        max_overshoot: f64,
        now: Instant,
    ) -> Vec<LeaseTerms> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        keys.iter()
            .zip(buckets)
            .map(|(key, b)| {
                // Spent tokens are no longer out in leases: say so with
                // every call, so Redis's count is of unspent tokens only.
                let retire = inner.leases.get_mut(key).map_or(0, |l| {
                    let spent = std::mem::take(&mut l.unreported);
                    l.retired += spent;
                    spent
                });
                let max_leased = (b.shape.capacity() as f64 * max_overshoot).floor() as u64;
                // A lease smaller than one charge would never be spent.
                if b.cost <= 0 || b.cost as u64 >= max_leased {
                    return LeaseTerms {
                        retire,
                        ..LeaseTerms::default()
                    };
                }
                // A live lease too small for this charge, or half spent in
                // its first half: demand outran it.
                let ran_dry = inner
                    .leases
                    .get(key)
                    .filter(|l| l.until > now && (l.tokens < b.cost as u64 || l.spent_fast(now)))
                    .map(|l| l.last_grant);
                let Some(d) = inner.demand.get_mut(key) else {
                    return LeaseTerms {
                        retire,
                        ..LeaseTerms::default()
                    };
                };
                let by_rate = (d.rate * LEASE_PERIOD.as_secs_f64()).ceil() as u64;
                if let Some(granted) = ran_dry {
                    // Doubling catches up with a burst the rate estimate
                    // lags; a few periods of demand is plenty.
                    let cap = (4 * by_rate).max(b.cost as u64);
                    d.hint = (d.hint.max(granted).max(b.cost as u64) * 2).min(cap);
                }
                LeaseTerms {
                    lease: by_rate.max(d.hint).max(b.cost as u64).min(max_leased),
                    max_leased,
                    retire,
                }
            })
            .collect()
    }

    /// Records what Redis granted with an admitted charge sent at `sent`;
    /// after a refusal, hands back the leases too small to use (stranded).
    pub fn grant(
        &self,
        ns: &str,
        keys: &[String],
        buckets: &[Bucket],
        limited: &Limited,
        sent: Instant,
    ) -> Vec<Returned> {
        let mut inner = self.inner.lock();
        let mut stranded = Vec::new();
        for (i, (key, b)) in keys.iter().zip(buckets).enumerate() {
            let granted = limited.granted.get(i).copied().unwrap_or(0);
            let state = limited.result.buckets.get(i);
            if !limited.result.admitted {
                if b.cost > 0
                    && let Some(lease) = inner.leases.remove(key)
                {
                    stranded.push(lease.returned());
                }
                continue;
            }
            if granted == 0 {
                if let (Some(lease), Some(s)) = (inner.leases.get_mut(key), state) {
                    lease.remaining = s.remaining;
                    lease.reset_ms = s.reset_ms;
                }
                continue;
            }
            let lease = inner.leases.entry(key.clone()).or_insert_with(|| Lease {
                ns: ns.to_owned(),
                bucket: Bucket {
                    cost: 0,
                    ..b.clone()
                },
                tokens: 0,
                granted: 0,
                last_grant: 0,
                unreported: 0,
                retired: 0,
                refilling: false,
                until: sent,
                remaining: 0,
                reset_ms: 0,
            });
            // Redis extended the bucket's lease deadline to cover both.
            lease.tokens += granted;
            lease.granted += granted;
            lease.last_grant = granted;
            lease.until = lease.until.max(sent + LEASE_PERIOD);
            if let Some(s) = state {
                lease.remaining = s.remaining;
                lease.reset_ms = s.reset_ms;
            }
        }
        stranded
    }

    /// Takes the leases that ran out by `now`, and forgets demand not seen
    /// for a while.
    pub fn expired(&self, now: Instant) -> Vec<Returned> {
        let mut inner = self.inner.lock();
        let done: Vec<String> = inner
            .leases
            .iter()
            .filter(|(_, l)| l.until <= now)
            .map(|(k, _)| k.clone())
            .collect();
        inner
            .demand
            .retain(|_, d| now.saturating_duration_since(d.since) < 10 * LEASE_PERIOD);
        let mut returned = Vec::with_capacity(done.len());
        for key in done {
            let Some(lease) = inner.leases.remove(&key) else {
                continue;
            };
            if lease.tokens > 0
                && let Some(d) = inner.demand.get_mut(&key)
            {
                d.hint /= 2;
            }
            returned.push(lease.returned());
        }
        returned
    }

    /// Takes every lease (the node is stopping).
    pub fn drain(&self) -> Vec<Returned> {
        let mut inner = self.inner.lock();
        inner.leases.drain().map(|(_, l)| l.returned()).collect()
    }

    /// Tokens held in leases right now, over all buckets.
    pub fn held(&self) -> u64 {
        self.inner.lock().leases.values().map(|l| l.tokens).sum()
    }
}

impl Inner {
    fn note_demand(&mut self, key: &str, cost: i64, now: Instant) {
        if cost <= 0 {
            return;
        }
        let d = self.demand.entry(key.to_owned()).or_insert(Demand {
            rate: 0.0,
            units: 0,
            since: now,
            hint: 0,
        });
        d.units += cost as u64;
        let elapsed = now.saturating_duration_since(d.since);
        // Fold a full interval into the rate; the first charge counts at once.
        if elapsed >= LEASE_PERIOD / 4 || d.rate == 0.0 {
            let secs = elapsed.as_secs_f64().max(0.001);
            let sample = d.units as f64 / secs.max((LEASE_PERIOD / 4).as_secs_f64());
            d.rate = if d.rate == 0.0 {
                sample
            } else {
                DEMAND_SMOOTHING * sample + (1.0 - DEMAND_SMOOTHING) * d.rate
            };
            d.units = 0;
            d.since = now;
        }
    }
}

impl Lease {
    /// Half of the last grant spent, or less than a quarter of the period
    /// left: time to refill in the background.
    fn running_low(&self, now: Instant) -> bool {
        self.tokens * 2 < self.last_grant
            || self.until.saturating_duration_since(now) < LEASE_PERIOD / 4
    }

    /// Half of the last grant spent while more than half the period is left.
    fn spent_fast(&self, now: Instant) -> bool {
        self.tokens * 2 < self.last_grant
            && self.until.saturating_duration_since(now) > LEASE_PERIOD / 2
    }

    /// Hands the lease back: its unused tokens, and every token of it Redis
    /// still counts out (granted, less what was already reported spent).
    fn returned(self) -> Returned {
        Returned {
            ns: self.ns,
            bucket: self.bucket,
            unused: self.tokens,
            granted: self.granted.saturating_sub(self.retired),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Shape, Unit};

    fn bucket(cost: i64) -> Bucket {
        Bucket {
            key: "k".into(),
            shape: Shape::Window {
                limit: 10_000,
                window_ms: 60_000,
            },
            cost,
            unit: Unit::Requests,
        }
    }

    fn limited(admitted: bool, granted: u64) -> Limited {
        Limited {
            result: ChargeResult {
                admitted,
                retry_after_ms: 0,
                buckets: vec![BucketState {
                    key: "k".into(),
                    unit: Unit::Requests,
                    limit: 10_000,
                    remaining: 5_000,
                    reset_ms: 1,
                }],
            },
            granted: vec![granted],
        }
    }

    #[test]
    fn a_granted_lease_is_spent_locally_until_it_runs_out() {
        let leases = Leases::default();
        let keys = vec!["full:k".to_owned()];
        let t0 = Instant::now();
        assert!(leases.try_spend(&keys, &[bucket(1)], t0).is_none());
        let terms = leases.terms(&keys, &[bucket(1)], 0.01, t0);
        assert_eq!(terms[0].max_leased, 100);
        assert!(terms[0].lease >= 1);
        leases.grant("ns", &keys, &[bucket(1)], &limited(true, 3), t0);
        for _ in 0..3 {
            let (r, _) = leases.try_spend(&keys, &[bucket(1)], t0).expect("local");
            assert!(r.admitted);
        }
        assert!(leases.try_spend(&keys, &[bucket(1)], t0).is_none(), "spent");
        leases.grant("ns", &keys, &[bucket(1)], &limited(true, 2), t0);
        let late = t0 + LEASE_PERIOD;
        assert!(
            leases.try_spend(&keys, &[bucket(1)], late).is_none(),
            "expired"
        );
        let back = leases.expired(late);
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].unused, back[0].granted), (2, 5));
        assert_eq!(leases.held(), 0);
    }

    #[test]
    fn a_lease_that_runs_dry_early_doubles_the_next_request_up_to_four_periods_of_demand() {
        let leases = Leases::default();
        let keys = vec!["full:k".to_owned()];
        let t0 = Instant::now();
        let mut asked = Vec::new();
        for _ in 0..4 {
            assert!(leases.try_spend(&keys, &[bucket(1)], t0).is_none());
            let want = leases.terms(&keys, &[bucket(1)], 0.01, t0)[0].lease;
            asked.push(want);
            leases.grant("ns", &keys, &[bucket(1)], &limited(true, want), t0);
            while leases.try_spend(&keys, &[bucket(1)], t0).is_some() {}
        }
        // The first charge estimates 4 a second; doubling stops at 4 periods.
        assert_eq!(asked, vec![4, 8, 16, 16]);
        assert!(asked.windows(2).all(|w| w[1] >= w[0]), "{asked:?}");
    }

    #[test]
    fn spent_tokens_are_reported_with_the_next_call_and_not_again_on_return() {
        let leases = Leases::default();
        let keys = vec!["full:k".to_owned()];
        let t0 = Instant::now();
        leases.try_spend(&keys, &[bucket(1)], t0);
        leases.terms(&keys, &[bucket(1)], 0.01, t0);
        leases.grant("ns", &keys, &[bucket(1)], &limited(true, 10), t0);
        for _ in 0..4 {
            leases.try_spend(&keys, &[bucket(1)], t0).expect("local");
        }
        assert_eq!(leases.terms(&keys, &[bucket(1)], 0.01, t0)[0].retire, 4);
        assert_eq!(leases.terms(&keys, &[bucket(1)], 0.01, t0)[0].retire, 0);
        let back = leases.drain();
        // 6 unused come back; 10 granted less the 4 already retired.
        assert_eq!((back[0].unused, back[0].granted), (6, 6));
    }

    #[test]
    fn no_lease_is_asked_for_a_charge_above_the_bound() {
        let leases = Leases::default();
        let keys = vec!["k".to_owned()];
        let t0 = Instant::now();
        assert!(leases.try_spend(&keys, &[bucket(270)], t0).is_none());
        let terms = leases.terms(&keys, &[bucket(270)], 0.01, t0);
        assert_eq!(terms[0], LeaseTerms::default());
    }

    #[test]
    fn no_lease_is_asked_for_when_the_bound_rounds_to_zero() {
        let leases = Leases::default();
        let small = Bucket {
            shape: Shape::Window {
                limit: 50,
                window_ms: 60_000,
            },
            ..bucket(1)
        };
        let terms = leases.terms(&["k".into()], &[small], 0.01, Instant::now());
        assert_eq!(terms[0], LeaseTerms::default());
    }

    #[test]
    fn a_refused_charge_hands_back_a_lease_too_small_to_use() {
        let leases = Leases::default();
        let keys = vec!["full:k".to_owned()];
        let t0 = Instant::now();
        leases.grant("ns", &keys, &[bucket(1)], &limited(true, 1), t0);
        assert!(leases.try_spend(&keys, &[bucket(2)], t0).is_none());
        let stranded = leases.grant("ns", &keys, &[bucket(2)], &limited(false, 0), t0);
        assert_eq!(stranded.len(), 1);
        assert_eq!(stranded[0].unused, 1);
        assert_eq!(leases.held(), 0);
    }
}
