//! `sluice_connections_*` series: what each listener did with its
//! connections. The listener keeps its own counters
//! ([`crate::listener::ConnectionStats`]); they are copied in when
//! `/metrics` is scraped.

use std::sync::atomic::Ordering;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::listener::ConnectionCounts;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    listener: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TimeoutLabels {
    listener: &'static str,
    timeout: &'static str,
}

/// The registered series.
#[derive(Debug)]
pub(super) struct ConnectionMetrics {
    open: Family<ListenerLabels, Gauge>,
    connections: Family<OutcomeLabels, Counter>,
    timeouts: Family<TimeoutLabels, Counter>,
}

/// The listeners, as their label spells them.
const LISTENERS: [&str; 2] = ["api", "admin"];

impl ConnectionMetrics {
    /// Registers the series (every label combination up front, at 0).
    pub(super) fn register(registry: &mut Registry) -> Self {
        let open = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "connections_open",
            "Client connections open on each listener",
            open.clone(),
        );
        let connections = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "connections",
            "Client connections by what became of them: accepted, refused (503 past server.max_connections) or dropped (closed unanswered past it)",
            connections.clone(),
        );
        let timeouts = Family::<TimeoutLabels, Counter>::default();
        registry.register(
            "connection_timeouts",
            "Connections closed or bodies failed by a [server] timeout: head (header_read_timeout_ms), idle (idle_timeout_ms), body (body_read_timeout_ms, a 408), write (write_stall_timeout_ms)",
            timeouts.clone(),
        );
        for listener in LISTENERS {
            let _ = open.get_or_create(&ListenerLabels { listener });
            for outcome in ["accepted", "refused", "dropped"] {
                let _ = connections.get_or_create(&OutcomeLabels { listener, outcome });
            }
            for timeout in ["head", "idle", "body", "write"] {
                let _ = timeouts.get_or_create(&TimeoutLabels { listener, timeout });
            }
        }
        ConnectionMetrics {
            open,
            connections,
            timeouts,
        }
    }

    /// Copies `listener`'s counters in (at scrape time).
    pub(super) fn sync(&self, listener: &'static str, c: &ConnectionCounts) {
        let raise = |counter: &Counter, v: u64| {
            // fetch_max: concurrent scrapes never count an event twice.
            counter.inner().fetch_max(v, Ordering::Relaxed);
        };
        self.open
            .get_or_create(&ListenerLabels { listener })
            .set(i64::try_from(c.open).unwrap_or(i64::MAX));
        for (outcome, v) in [
            ("accepted", c.accepted),
            ("refused", c.refused),
            ("dropped", c.dropped),
        ] {
            raise(
                &self
                    .connections
                    .get_or_create(&OutcomeLabels { listener, outcome }),
                v,
            );
        }
        for (timeout, v) in [
            ("head", c.head_timeouts),
            ("idle", c.idle_closed),
            ("body", c.body_stalls),
            ("write", c.write_stalls),
        ] {
            raise(
                &self
                    .timeouts
                    .get_or_create(&TimeoutLabels { listener, timeout }),
                v,
            );
        }
    }
}
