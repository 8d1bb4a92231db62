//! Custom metrics plugins record through the `sluice:policy/metrics` import,
//! exposed as `sluice_plugin_<name>{slot="…"}`.
//!
//! Plugins choose the names, so the host bounds them: names are sanitised to
//! `[a-z0-9_]` (64 characters at most), each slot may use at most
//! [`MAX_NAMES_PER_SLOT`] names, a name keeps the kind (counter, gauge,
//! histogram) it was first used with, and names that would collide with the
//! host's own `sluice_plugin_*` families are refused. Refused records are
//! counted in `sluice_plugin_metrics_dropped_total{slot}`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use parking_lot::RwLock;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::policy::Slot;

/// Distinct custom metric names one slot may create.
pub const MAX_NAMES_PER_SLOT: usize = 64;

/// Longest name kept (after sanitising); longer names are cut.
const MAX_NAME_LEN: usize = 64;

/// Buckets for plugin histograms: Prometheus's defaults, a fair guess when
/// the host cannot know the unit.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Names (after sanitising) of the host's own `sluice_plugin_*` families;
/// with [`RESERVED_SUFFIXES`] this keeps every exposed name unique.
const RESERVED_NAMES: [&str; 3] = ["calls", "call_duration_seconds", "metrics_dropped"];

/// Suffixes Prometheus gives meaning to; a gauge named `x_sum` would clash
/// with a histogram named `x`.
const RESERVED_SUFFIXES: [&str; 6] = ["_total", "_bucket", "_sum", "_count", "_created", "_info"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone)]
enum Metric {
    Counter(Counter),
    Gauge(Gauge<f64, AtomicU64>),
    Histogram(Histogram),
}

impl Metric {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::Counter => Metric::Counter(Counter::default()),
            Kind::Gauge => Metric::Gauge(Gauge::default()),
            Kind::Histogram => Metric::Histogram(Histogram::new(BUCKETS)),
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Metric::Counter(_) => Kind::Counter,
            Metric::Gauge(_) => Kind::Gauge,
            Metric::Histogram(_) => Kind::Histogram,
        }
    }
}

/// The value a plugin recorded.
#[derive(Debug, Clone, Copy)]
pub(super) enum Record {
    CounterAdd(u64),
    GaugeSet(f64),
    HistogramObserve(f64),
}

impl Record {
    fn kind(self) -> Kind {
        match self {
            Record::CounterAdd(_) => Kind::Counter,
            Record::GaugeSet(_) => Kind::Gauge,
            Record::HistogramObserve(_) => Kind::Histogram,
        }
    }

    fn apply(self, metric: &Metric) {
        match (self, metric) {
            (Record::CounterAdd(v), Metric::Counter(c)) => {
                c.inc_by(v);
            }
            (Record::GaugeSet(v), Metric::Gauge(g)) => {
                g.set(v);
            }
            (Record::HistogramObserve(v), Metric::Histogram(h)) => h.observe(v),
            // Kinds are checked before `apply`.
            _ => {}
        }
    }
}

#[derive(Debug)]
struct Family {
    /// One series per slot that used the name.
    per_slot: [Option<Metric>; Slot::COUNT],
    kind: Kind,
}

#[derive(Debug, Default)]
struct Families {
    by_name: HashMap<Box<str>, Family>,
    names_per_slot: [usize; Slot::COUNT],
}

/// Why a record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    BadName,
    KindMismatch,
    TooManyNames,
    NotFinite,
}

/// The registry-side collector of plugin metrics.
#[derive(Debug, Default)]
pub(super) struct PluginMetrics {
    families: RwLock<Families>,
}

impl PluginMetrics {
    /// Records `record` under `name` for `slot`.
    pub(super) fn record(&self, slot: Slot, name: &str, record: Record) -> Result<(), Refusal> {
        if let Record::HistogramObserve(v) = record
            && !v.is_finite()
        {
            return Err(Refusal::NotFinite);
        }
        let name = sanitise(name, record.kind()).ok_or(Refusal::BadName)?;
        let s = slot.index();
        // Fast path: the series exists (every record after the first).
        {
            let families = self.families.read();
            if let Some(family) = families.by_name.get(name.as_ref()) {
                if family.kind != record.kind() {
                    return Err(Refusal::KindMismatch);
                }
                if let Some(metric) = &family.per_slot[s] {
                    record.apply(metric);
                    return Ok(());
                }
            }
        }
        let mut families = self.families.write();
        let Families {
            by_name,
            names_per_slot,
        } = &mut *families;
        if !by_name.contains_key(name.as_ref()) {
            if names_per_slot[s] >= MAX_NAMES_PER_SLOT {
                return Err(Refusal::TooManyNames);
            }
            let family = Family {
                per_slot: Default::default(),
                kind: record.kind(),
            };
            by_name.insert(name.as_ref().into(), family);
        }
        let Some(family) = by_name.get_mut(name.as_ref()) else {
            return Err(Refusal::BadName);
        };
        if family.kind != record.kind() {
            return Err(Refusal::KindMismatch);
        }
        let metric = match &family.per_slot[s] {
            Some(m) => m,
            None => {
                if names_per_slot[s] >= MAX_NAMES_PER_SLOT {
                    return Err(Refusal::TooManyNames);
                }
                names_per_slot[s] += 1;
                family.per_slot[s].insert(Metric::new(record.kind()))
            }
        };
        record.apply(metric);
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SlotLabel {
    slot: Slot,
}

impl Collector for PluginMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let families = self.families.read();
        // Sorted so scrapes are stable and diffable.
        let mut names: Vec<&Box<str>> = families.by_name.keys().collect();
        names.sort();
        for name in names {
            let Some(family) = families.by_name.get(name) else {
                continue;
            };
            let full = format!("plugin_{name}");
            let metric_type = match Metric::new(family.kind) {
                Metric::Counter(c) => c.metric_type(),
                Metric::Gauge(g) => g.metric_type(),
                Metric::Histogram(h) => h.metric_type(),
            };
            let mut metric_encoder = encoder.encode_descriptor(
                &full,
                "Custom metric recorded by a policy plugin.",
                None,
                metric_type,
            )?;
            for slot in Slot::ALL {
                let Some(metric) = &family.per_slot[slot.index()] else {
                    continue;
                };
                let label = SlotLabel { slot };
                let series = metric_encoder.encode_family(&label)?;
                debug_assert_eq!(metric.kind(), family.kind);
                match metric {
                    Metric::Counter(c) => c.encode(series)?,
                    Metric::Gauge(g) => g.encode(series)?,
                    Metric::Histogram(h) => h.encode(series)?,
                }
            }
        }
        Ok(())
    }
}

/// Lower-cases and replaces anything outside `[a-z0-9_]` with `_`; strips a
/// counter's `_total` (the encoder adds it). Borrows when the name is
/// already clean, so steady-state records do not allocate. `None` for names
/// that are empty or reserved.
fn sanitise(name: &str, kind: Kind) -> Option<Cow<'_, str>> {
    let clean = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    let name: Cow<'_, str> = if name.bytes().all(clean) {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(
            name.chars()
                .map(|c| {
                    let c = c.to_ascii_lowercase();
                    if c.is_ascii() && clean(c as u8) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect(),
        )
    };
    let mut end = name.len();
    if kind == Kind::Counter && name.ends_with("_total") {
        end -= "_total".len();
    }
    // All ASCII by now, so any byte index is a char boundary.
    end = end.min(MAX_NAME_LEN);
    let name = match name {
        Cow::Borrowed(b) => Cow::Borrowed(&b[..end]),
        Cow::Owned(mut o) => {
            o.truncate(end);
            Cow::Owned(o)
        }
    };
    let refused = name.trim_matches('_').is_empty()
        || RESERVED_NAMES.contains(&name.as_ref())
        || RESERVED_SUFFIXES.iter().any(|s| name.ends_with(s));
    if refused { None } else { Some(name) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitised_without_allocating_when_clean() {
        assert!(matches!(
            sanitise("hits", Kind::Counter),
            Some(Cow::Borrowed("hits"))
        ));
        assert_eq!(
            sanitise("hits_total", Kind::Counter).as_deref(),
            Some("hits")
        );
        assert_eq!(
            sanitise("Cache Hits/β", Kind::Gauge).as_deref(),
            Some("cache_hits__")
        );
        assert_eq!(
            sanitise(&"a".repeat(100), Kind::Gauge).map(|n| n.len()),
            Some(64)
        );
        assert_eq!(sanitise("", Kind::Gauge), None);
        assert_eq!(sanitise("___", Kind::Gauge), None);
        assert_eq!(sanitise("calls", Kind::Counter), None);
        assert_eq!(sanitise("call_duration_seconds", Kind::Histogram), None);
        assert_eq!(sanitise("metrics_dropped", Kind::Counter), None);
        assert_eq!(sanitise("depth_sum", Kind::Gauge), None);
        assert_eq!(sanitise("depth_total", Kind::Gauge), None);
    }

    #[test]
    fn kind_is_fixed_by_first_use_and_names_are_capped_per_slot() {
        let m = PluginMetrics::default();
        m.record(Slot::Throttle, "x", Record::CounterAdd(1))
            .unwrap();
        assert_eq!(
            m.record(Slot::Retry, "x", Record::GaugeSet(1.0)),
            Err(Refusal::KindMismatch)
        );
        for i in 1..MAX_NAMES_PER_SLOT {
            m.record(Slot::Throttle, &format!("n{i}"), Record::CounterAdd(1))
                .unwrap();
        }
        assert_eq!(
            m.record(Slot::Throttle, "one_too_many", Record::CounterAdd(1)),
            Err(Refusal::TooManyNames)
        );
        // Names already in use keep working, and other slots have their own cap.
        m.record(Slot::Throttle, "n1", Record::CounterAdd(1))
            .unwrap();
        m.record(Slot::Retry, "n1", Record::CounterAdd(1)).unwrap();
        assert_eq!(
            m.record(Slot::Retry, "h", Record::HistogramObserve(f64::NAN)),
            Err(Refusal::NotFinite)
        );
    }
}
