//! Load balancing among providers serving one model: weighted random
//! choice, and power of two choices over a peak-EWMA latency estimate
//! (Finagle's / Linkerd's "least loaded" balancer).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// How fast the estimate forgets: a sample `DECAY_MS` old weighs 1/e.
const DECAY_MS: f64 = 10_000.0;

/// One provider's latency estimate and requests in flight. A sample above
/// the estimate replaces it at once (the peak); lower ones pull it down
/// exponentially with time, so a provider that slows down is avoided at
/// once and trusted again gradually.
#[derive(Debug, Default)]
pub struct PeakEwma {
    /// (estimate in ms, time of the last sample in ms).
    estimate: Mutex<(f64, u64)>,
    in_flight: AtomicUsize,
}

impl PeakEwma {
    /// Records one attempt's duration.
    pub fn observe(&self, rtt: Duration, now_ms: u64) {
        let rtt = rtt.as_secs_f64() * 1000.0;
        let mut e = self.estimate.lock();
        let (estimate, last) = *e;
        let next = if rtt > estimate {
            rtt
        } else {
            let w = (-(now_ms.saturating_sub(last) as f64) / DECAY_MS).exp();
            estimate * w + rtt * (1.0 - w)
        };
        *e = (next, now_ms);
    }

    /// Marks an attempt started; the guard marks it ended.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// The latency estimate at `now_ms` in ms, decayed for the time since
    /// its last sample (0 before the first).
    pub fn estimate_ms(&self, now_ms: u64) -> f64 {
        let (estimate, last) = *self.estimate.lock();
        estimate * (-(now_ms.saturating_sub(last) as f64) / DECAY_MS).exp()
    }

    /// The cost of sending one more request here at `now_ms`: the
    /// estimate, decayed for the time since its last sample (so a provider
    /// measured slow once is tried again later), times the requests in
    /// flight plus this one. Zero until a first sample (a new provider gets
    /// tried).
    pub fn cost(&self, now_ms: u64) -> f64 {
        self.estimate_ms(now_ms) * (self.in_flight.load(Ordering::Relaxed) + 1) as f64
    }
}

/// An attempt in flight at one provider.
pub struct InFlight<'a>(&'a PeakEwma);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The index chosen in proportion to `weights`, for a uniform `random`.
/// `None` when every weight is zero or there is none.
pub fn weighted(weights: &[u32], random: u64) -> Option<usize> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 {
        return None;
    }
    let mut point = random % total;
    for (i, &w) in weights.iter().enumerate() {
        if point < u64::from(w) {
            return Some(i);
        }
        point -= u64::from(w);
    }
    None
}

/// Power of two choices: two distinct candidates at random (from
/// `random`), the cheaper of the two. `None` when `costs` is empty.
pub fn two_choices(costs: &[f64], random: u64) -> Option<usize> {
    match costs.len() {
        0 => None,
        1 => Some(0),
        n => {
            let a = (random % n as u64) as usize;
            let b = (a + 1 + ((random >> 32) % (n as u64 - 1)) as usize) % n;
            Some(if costs[b] < costs[a] { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_choice_follows_the_weights() {
        let mut counts = [0; 3];
        for r in 0..600u64 {
            counts[weighted(&[1, 2, 3], r).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 200, 300]);
        assert_eq!(weighted(&[0, 0], 5), None);
        assert_eq!(weighted(&[], 5), None);
    }

    #[test]
    fn two_choices_picks_the_cheaper_of_two_distinct() {
        for r in 0..1000u64 {
            let i = two_choices(&[5.0, 1.0], r.wrapping_mul(0x9E37_79B9_7F4A_7C15)).unwrap();
            assert_eq!(i, 1);
        }
        // Three candidates: the dearest is never chosen.
        for r in 0..1000u64 {
            let i = two_choices(&[1.0, 9.0, 2.0], r.wrapping_mul(0x9E37_79B9_7F4A_7C15)).unwrap();
            assert_ne!(i, 1);
        }
        assert_eq!(two_choices(&[], 1), None);
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let p = PeakEwma::default();
        assert_eq!(p.cost(0), 0.0);
        p.observe(Duration::from_millis(100), 0);
        assert_eq!(p.cost(0), 100.0);
        p.observe(Duration::from_millis(500), 10);
        assert_eq!(p.cost(10), 500.0);
        // Unobserved, it decays: ten seconds later it is about 1/e.
        let decayed = p.cost(10_010);
        assert!(
            (decayed - 500.0 / std::f64::consts::E).abs() < 1e-6,
            "{decayed}"
        );
        // A fast sample pulls it most of the way down.
        p.observe(Duration::from_millis(10), 10_010);
        let c = p.cost(10_010);
        assert!(c > 10.0 && c < 200.0, "{c}");
        let guard = p.start();
        assert!((p.cost(10_010) - 2.0 * c).abs() < 1e-9);
        drop(guard);
        assert!((p.cost(10_010) - c).abs() < 1e-9);
    }
}
