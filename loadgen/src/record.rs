//! Per-worker sample collection. Each worker task owns a [`Recorder`] (no
//! locks on the request path); they are merged once the run is over.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use super::send::Exchange;

/// Why a request did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Failure {
    /// A complete response with a non-2xx status.
    Status(u16),
    /// The connection could not be opened.
    Connect,
    /// Not complete within the configured timeout.
    Timeout,
    /// The connection failed mid-request or mid-body.
    Io,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status(s) => write!(f, "{s}"),
            Failure::Connect => f.write_str("connect"),
            Failure::Timeout => f.write_str("timeout"),
            Failure::Io => f.write_str("io"),
        }
    }
}

/// Measured outcomes of one target. Latencies are of successful requests
/// only: a fast error page must not make a target look quick.
#[derive(Debug, Default)]
pub(crate) struct TargetSamples {
    pub latency_ns: Vec<u64>,
    pub ttfb_ns: Vec<u64>,
    pub errors: BTreeMap<Failure, u64>,
}

impl TargetSamples {
    pub fn ok(&self) -> u64 {
        self.latency_ns.len() as u64
    }

    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Samples of every target, plus how late requests left the generator.
#[derive(Debug)]
pub(crate) struct Recorder {
    pub targets: Vec<TargetSamples>,
    /// Open loop: actual send time minus scheduled time.
    pub send_delay_ns: Vec<u64>,
    /// Latest completion of a measured request, in ns from the run start.
    pub last_done_ns: u64,
    keep_ttfb: bool,
    t0: Instant,
}

impl Recorder {
    pub fn new(targets: usize, keep_ttfb: bool, t0: Instant) -> Self {
        Self {
            targets: (0..targets).map(|_| TargetSamples::default()).collect(),
            send_delay_ns: Vec::new(),
            last_done_ns: 0,
            keep_ttfb,
            t0,
        }
    }

    /// Records a measured request. Latency runs from `start` (the scheduled
    /// send time in open loop); `sent` is the actual send time when it can
    /// differ from `start`.
    pub fn record(&mut self, target: usize, start: Instant, sent: Option<Instant>, ex: &Exchange) {
        let ns = |later: Instant| nanos(later.saturating_duration_since(start));
        if let Some(sent) = sent {
            self.send_delay_ns.push(ns(sent));
        }
        self.last_done_ns = self
            .last_done_ns
            .max(nanos(ex.done.saturating_duration_since(self.t0)));
        let Some(samples) = self.targets.get_mut(target) else {
            return;
        };
        match ex.result {
            Ok(()) => {
                samples.latency_ns.push(ns(ex.done));
                if self.keep_ttfb {
                    samples.ttfb_ns.push(ns(ex.first_byte));
                }
            }
            Err(failure) => *samples.errors.entry(failure).or_default() += 1,
        }
    }

    /// Folds another worker's samples into this one.
    pub fn merge(&mut self, other: Recorder) {
        for (mine, theirs) in self.targets.iter_mut().zip(other.targets) {
            mine.latency_ns.extend(theirs.latency_ns);
            mine.ttfb_ns.extend(theirs.ttfb_ns);
            for (failure, n) in theirs.errors {
                *mine.errors.entry(failure).or_default() += n;
            }
        }
        self.send_delay_ns.extend(other.send_delay_ns);
        self.last_done_ns = self.last_done_ns.max(other.last_done_ns);
    }
}

/// Nanoseconds of a duration, saturating (a u64 holds 584 years).
pub(crate) fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn successes_are_timed_from_the_start_and_errors_counted_by_kind() {
        let t0 = Instant::now();
        let start = t0 + Duration::from_millis(10);
        let sent = start + Duration::from_millis(2);
        let done = start + Duration::from_millis(5);
        let ok = Exchange {
            first_byte: start + Duration::from_millis(3),
            done,
            result: Ok(()),
        };
        let bad = Exchange {
            result: Err(Failure::Status(503)),
            ..ok
        };

        let mut a = Recorder::new(2, true, t0);
        a.record(1, start, Some(sent), &ok);
        let mut b = Recorder::new(2, true, t0);
        b.record(1, start, Some(sent), &bad);
        b.record(1, start, None, &bad);
        a.merge(b);

        let s = &a.targets[1];
        assert_eq!(s.latency_ns, vec![5_000_000]);
        assert_eq!(s.ttfb_ns, vec![3_000_000]);
        assert_eq!(s.errors.get(&Failure::Status(503)), Some(&2));
        assert_eq!((s.ok(), s.failed()), (1, 2));
        assert_eq!(a.targets[0].ok() + a.targets[0].failed(), 0);
        assert_eq!(a.send_delay_ns, vec![2_000_000, 2_000_000]);
        assert_eq!(a.last_done_ns, 15_000_000);
    }
}
