//! The arithmetic of a run: when each open-loop request is due, which
//! requests are warm-up, which target a request goes to, and how long each
//! target was the active one. Pure functions of nanosecond offsets from the
//! start of the run, so they are tested without a clock.

use super::options::Interleave;

/// The open-loop timeline: request `i` is due `i / rate` seconds after the
/// start, rounded to the nanosecond.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeline {
    rate: f64,
}

impl Timeline {
    /// `rate` is in requests per second; validated to be in (0, 1e6].
    pub fn new(rate: f64) -> Self {
        Self { rate }
    }

    /// When request `i` is due, in nanoseconds from the start.
    pub fn offset_ns(&self, i: u64) -> u64 {
        (i as f64 * 1e9 / self.rate).round() as u64
    }

    /// How many requests are due strictly before `ns`.
    pub fn count_before(&self, ns: u64) -> u64 {
        // Estimate, then correct for rounding so the answer agrees exactly
        // with `offset_ns` (a request is never released twice or skipped).
        let mut c = (ns as f64 * self.rate / 1e9).ceil() as u64;
        while c > 0 && self.offset_ns(c - 1) >= ns {
            c -= 1;
        }
        while self.offset_ns(c) < ns {
            c += 1;
        }
        c
    }

    /// How many requests are due at or before `ns`.
    pub fn due_at(&self, ns: u64) -> u64 {
        self.count_before(ns.saturating_add(1))
    }
}

/// The requests of an open-loop run: `0..warm` are warm-up (due before
/// `start_ns`), `warm..total` are measured (due in `[start_ns, end_ns)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenPlan {
    pub start_ns: u64,
    pub warm: u64,
    pub total: u64,
    pub end_ns: u64,
}

impl OpenPlan {
    /// Bounds the run by measured duration, measured request count, or both
    /// (whichever ends first). At least one bound is given (validated).
    pub fn new(
        timeline: Timeline,
        warmup_ns: u64,
        duration_ns: Option<u64>,
        requests: Option<u64>,
    ) -> Self {
        let warm = timeline.count_before(warmup_ns);
        let by_duration = duration_ns.map(|d| warmup_ns.saturating_add(d));
        let by_count = requests.map(|n| timeline.offset_ns(warm.saturating_add(n)));
        let end_ns = match (by_duration, by_count) {
            (Some(d), Some(c)) => d.min(c),
            (Some(x), None) | (None, Some(x)) => x,
            (None, None) => warmup_ns,
        };
        Self {
            start_ns: warmup_ns,
            warm,
            total: timeline.count_before(end_ns),
            end_ns,
        }
    }
}

/// How requests are spread over `targets` targets.
///
/// Warm-up always alternates request by request, so every target is warmed
/// whatever the warm-up's length; measured rounds count from the end of
/// warm-up, so the first measured round is the first target's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Split {
    targets: u64,
    /// Round length in ns; `None` alternates request by request.
    round_ns: Option<u64>,
    warmup_ns: u64,
}

impl Split {
    pub fn new(targets: usize, interleave: Interleave, warmup_ns: u64) -> Self {
        let round_ns = match interleave {
            Interleave::Requests => None,
            // Validated to be at least 10ms, so never zero.
            Interleave::Rounds(d) => Some(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)),
        };
        Self {
            targets: targets.max(1) as u64,
            round_ns,
            warmup_ns,
        }
    }

    /// The target of the request with sequence number `seq` that is due (open
    /// loop) or sent (closed loop) at `offset_ns`.
    pub fn target(&self, offset_ns: u64, seq: u64) -> usize {
        let slot = match self.round_ns {
            Some(r) if offset_ns >= self.warmup_ns => (offset_ns - self.warmup_ns) / r,
            _ => seq,
        };
        (slot % self.targets) as usize
    }

    /// How long each target was the active one within the measured window
    /// `[from_ns, to_ns)` (which starts at or after the end of warm-up).
    /// Alternating by request, every target is active the whole window.
    pub fn active_ns(&self, from_ns: u64, to_ns: u64) -> Vec<u64> {
        let n = self.targets as usize;
        let Some(r) = self.round_ns else {
            return vec![to_ns.saturating_sub(from_ns); n];
        };
        let mut active = vec![0; n];
        let mut at = from_ns.max(self.warmup_ns);
        while at < to_ns {
            let slot = (at - self.warmup_ns) / r;
            let slot_end = slot
                .saturating_add(1)
                .saturating_mul(r)
                .saturating_add(self.warmup_ns)
                .min(to_ns);
            active[(slot % self.targets) as usize] += slot_end - at;
            at = slot_end;
        }
        active
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn requests_are_due_at_even_intervals() {
        let t = Timeline::new(1000.0);
        assert_eq!(t.offset_ns(0), 0);
        assert_eq!(t.offset_ns(1), MS);
        assert_eq!(t.offset_ns(2500), 2500 * MS);
        assert_eq!(t.due_at(0), 1, "request 0 is due at the start");
        assert_eq!(t.due_at(MS - 1), 1);
        assert_eq!(t.due_at(MS), 2);
        assert_eq!(t.count_before(MS), 1);
        assert_eq!(t.count_before(MS + 1), 2);
    }

    #[test]
    fn due_counts_agree_with_offsets_at_awkward_rates() {
        for rate in [3.0, 7.3, 999.9, 1000.0, 12_345.678, 1_000_000.0] {
            let t = Timeline::new(rate);
            for i in 0..20_000 {
                let at = t.offset_ns(i);
                assert_eq!(t.due_at(at), i + 1, "rate {rate}, request {i}");
                assert_eq!(t.count_before(at), i, "rate {rate}, request {i}");
            }
        }
    }

    #[test]
    fn warm_up_and_bounds_partition_the_requests() {
        let t = Timeline::new(200.0);
        // 0.1 s warm-up + 0.5 s measured at 200/s: 20 warm-up, 100 measured.
        let plan = OpenPlan::new(t, 100 * MS, Some(500 * MS), None);
        assert_eq!(
            plan,
            OpenPlan {
                start_ns: 100 * MS,
                warm: 20,
                total: 120,
                end_ns: 600 * MS
            }
        );
        // A request count ends the run early.
        let plan = OpenPlan::new(t, 100 * MS, Some(500 * MS), Some(30));
        assert_eq!(
            plan,
            OpenPlan {
                start_ns: 100 * MS,
                warm: 20,
                total: 50,
                end_ns: 250 * MS
            }
        );
        // A duration ends it before the count does.
        let plan = OpenPlan::new(t, 0, Some(50 * MS), Some(1000));
        assert_eq!(
            plan,
            OpenPlan {
                start_ns: 0,
                warm: 0,
                total: 10,
                end_ns: 50 * MS
            }
        );
        // Warm-up ending between two due times: the measured window still
        // starts at the end of warm-up.
        let plan = OpenPlan::new(Timeline::new(3.0), 500 * MS, Some(1000 * MS), None);
        assert_eq!(
            (plan.warm, plan.total),
            (2, 5),
            "due at 0, .33 | .67, 1.0, 1.33"
        );
    }

    #[test]
    fn rounds_alternate_targets_by_time_from_the_end_of_warm_up() {
        let s = Split::new(2, Interleave::Rounds(Duration::from_millis(100)), 50 * MS);
        // Warm-up alternates by request, so both targets warm up.
        assert_eq!(s.target(0, 7), 1);
        assert_eq!(s.target(49 * MS, 8), 0);
        // Measured rounds start with the first target.
        assert_eq!(s.target(50 * MS, 9), 0);
        assert_eq!(s.target(149 * MS, 10), 0);
        assert_eq!(s.target(150 * MS, 11), 1);
        assert_eq!(s.target(300 * MS, 12), 0);
        // Window [50ms, 550ms): rounds A, B, A, B, A.
        assert_eq!(s.active_ns(50 * MS, 550 * MS), vec![300 * MS, 200 * MS]);
        // Partial rounds at both ends.
        assert_eq!(s.active_ns(100 * MS, 180 * MS), vec![50 * MS, 30 * MS]);
        assert_eq!(s.active_ns(60 * MS, 60 * MS), vec![0, 0]);
        // Three targets in a window of two rounds: the third gets none.
        let s = Split::new(3, Interleave::Rounds(Duration::from_secs(1)), 1_000 * MS);
        assert_eq!(
            s.active_ns(1_000 * MS, 3_000 * MS),
            vec![1_000 * MS, 1_000 * MS, 0]
        );
    }

    #[test]
    fn request_interleave_alternates_by_sequence() {
        let s = Split::new(3, Interleave::Requests, 0);
        let targets: Vec<_> = (0..6).map(|i| s.target(123 * MS, i)).collect();
        assert_eq!(targets, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(s.active_ns(MS, 4 * MS), vec![3 * MS; 3]);
    }
}
