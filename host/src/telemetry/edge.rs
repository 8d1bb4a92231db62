//! `sluice_state_*` series of a node's edge machinery: leases, limit
//! charges by where they were decided, queued corrections and their flushes,
//! and Redis round trips per request. The state keeps its own counters
//! ([`EdgeStats`]); they are copied in when `/metrics` is scraped, so the
//! state needs no handle on the metrics.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::labels::CacheOutcome;
use crate::state::EdgeStats;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DecidedLabels {
    decided: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: CacheOutcome,
}

/// Round trips a request may make before the histogram stops telling apart.
const ROUND_TRIP_BUCKETS: [f64; 7] = [0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 10.0];

/// The registered series.
#[derive(Debug)]
pub(super) struct EdgeMetrics {
    leases: Family<EventLabels, Counter>,
    lease_tokens: Family<EventLabels, Counter>,
    lease_tokens_held: Gauge,
    charges: Family<DecidedLabels, Counter>,
    settle_queue_depth: Gauge,
    settle_flushes: Counter,
    settle_flush_seconds: Counter<f64, AtomicU64>,
    settle_flush_failures: Counter,
    settles_dropped: Counter,
    round_trips: Family<OutcomeLabels, Histogram>,
}

impl EdgeMetrics {
    /// Registers the series in `registry` (the `sluice`-prefixed one of
    /// [`super::Metrics`]).
    pub(super) fn register(registry: &mut Registry) -> Self {
        let leases = Family::<EventLabels, Counter>::default();
        registry.register(
            "state_leases",
            "Rate-limit leases taken from Redis (granted) and handed back (returned)",
            leases.clone(),
        );
        let lease_tokens = Family::<EventLabels, Counter>::default();
        registry.register(
            "state_lease_tokens",
            "Tokens in leases granted, and unused tokens returned",
            lease_tokens.clone(),
        );
        let lease_tokens_held = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "state_lease_tokens_held",
            "Tokens this node holds in leases now",
            lease_tokens_held.clone(),
        );
        let charges = Family::<DecidedLabels, Counter>::default();
        registry.register(
            "state_limit_charges",
            "Rate-limit charges on a shared state, by where they were decided (lease: on this node; redis: a round trip)",
            charges.clone(),
        );
        let settle_queue_depth = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "state_settle_queue_depth",
            "Buckets with corrections (settles, returned leases) waiting to be written to Redis",
            settle_queue_depth.clone(),
        );
        let settle_flushes = Counter::<u64>::default();
        registry.register(
            "state_settle_flushes",
            "Flushes of queued corrections that Redis took",
            settle_flushes.clone(),
        );
        let settle_flush_seconds = Counter::<f64, AtomicU64>::default();
        registry.register(
            "state_settle_flush_seconds",
            "Time spent flushing queued corrections (divide by the flushes for the mean)",
            settle_flush_seconds.clone(),
        );
        let settle_flush_failures = Counter::<u64>::default();
        registry.register(
            "state_settle_flush_failures",
            "Flushes Redis did not take; their corrections wait for the next",
            settle_flush_failures.clone(),
        );
        let settles_dropped = Counter::<u64>::default();
        registry.register(
            "state_settles_dropped",
            "Corrections dropped because the queue was full",
            settles_dropped.clone(),
        );
        let round_trips = Family::<OutcomeLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(ROUND_TRIP_BUCKETS)
        });
        registry.register(
            "state_round_trips_per_request",
            "Redis round trips made on a request's path before its response, by cache outcome",
            round_trips.clone(),
        );
        Self {
            leases,
            lease_tokens,
            lease_tokens_held,
            charges,
            settle_queue_depth,
            settle_flushes,
            settle_flush_seconds,
            settle_flush_failures,
            settles_dropped,
            round_trips,
        }
    }

    /// Copies the state's counters in (at scrape time).
    pub(super) fn sync(&self, s: &EdgeStats) {
        let raise = |c: &Counter, v: u64| {
            c.inner().fetch_max(v, Ordering::Relaxed);
        };
        let event = |e| EventLabels { event: e };
        raise(
            &self.leases.get_or_create(&event("granted")),
            s.leases_granted,
        );
        raise(
            &self.leases.get_or_create(&event("returned")),
            s.leases_returned,
        );
        raise(
            &self.lease_tokens.get_or_create(&event("granted")),
            s.lease_tokens_granted,
        );
        raise(
            &self.lease_tokens.get_or_create(&event("returned")),
            s.lease_tokens_returned,
        );
        self.lease_tokens_held.set(s.lease_tokens_held as i64);
        raise(
            &self
                .charges
                .get_or_create(&DecidedLabels { decided: "lease" }),
            s.local_admits,
        );
        raise(
            &self
                .charges
                .get_or_create(&DecidedLabels { decided: "redis" }),
            s.remote_charges,
        );
        self.settle_queue_depth.set(s.settle_queue_depth as i64);
        raise(&self.settle_flushes, s.settle_flushes);
        let seconds = s.settle_flush_micros as f64 / 1e6;
        let current = self.settle_flush_seconds.get();
        if seconds > current {
            self.settle_flush_seconds.inc_by(seconds - current);
        }
        raise(&self.settle_flush_failures, s.settle_flush_failures);
        raise(&self.settles_dropped, s.settles_dropped);
    }

    /// One request made `round_trips` Redis round trips before answering.
    pub(super) fn round_trips(&self, outcome: CacheOutcome, round_trips: u32) {
        self.round_trips
            .get_or_create(&OutcomeLabels { outcome })
            .observe(f64::from(round_trips));
    }
}
