//! A per-provider circuit breaker over a rolling window of outcomes (the
//! resilience4j / Envoy outlier-detection model), tuned by
//! [`BreakerConfig`]:
//!
//! - **closed**: every attempt is sent; outcomes are counted in ten slots
//!   spanning `window_ms`. When the window holds at least `min_calls`
//!   outcomes and at least `failure_ratio` of them are failures (connect
//!   error, timeout, 5xx, a stream failing before its first content event:
//!   see `client::FirstContent`), the circuit opens. A failure rate under the ratio
//!   never opens it, however long it lasts: retries mend those.
//! - **open**: attempts are refused without touching the network for the
//!   cooldown, which starts at `open_for_ms`.
//! - **half-open**: after the cooldown, `half_open_probes` attempts are let
//!   through (more are refused). When all of them succeed the circuit closes
//!   with an empty window and the cooldown back at `open_for_ms`; the first
//!   failure opens it again for twice the previous cooldown, up to
//!   `max_open_for_ms`.
//!
//! Every admitted attempt carries a [`Permit`] naming the period it was
//! admitted in; a result from an earlier period (an attempt sent before the
//! circuit opened, a probe of an earlier half-open spell) decides nothing.
//! Time is a millisecond count passed in by the caller, so tests drive it by
//! hand.

use parking_lot::Mutex;

use crate::config::BreakerConfig;
pub use crate::telemetry::CircuitState;

/// Slots of the rolling window.
const SLOTS: usize = 10;

/// `closed`, `open` or `half-open`, as in the metrics.
impl serde::Serialize for CircuitState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The breaker's answer to "may I send?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Send, and report the result with this permit.
    Allowed(Permit),
    /// Do not send. A probe may be let through in `retry_in_ms` (0: when
    /// one of the probes in flight frees its place or closes the circuit).
    Refused { retry_in_ms: u64 },
}

/// Leave to send one attempt; hand it back to [`Breaker::record`] or
/// [`Breaker::abandon`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Permit {
    /// The period (one closed, open or half-open spell) it was issued in.
    epoch: u64,
    /// Issued while half-open: the attempt is one of the probes.
    probe: bool,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    config: BreakerConfig,
    /// Width of one window slot (at least 1 ms).
    slot_ms: u64,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: CircuitState,
    /// Bumped on every transition.
    epoch: u64,
    window: Window,
    /// Cooldown of the current opening (or the first of the next one).
    open_for_ms: u64,
    /// While open: when the cooldown ends.
    until_ms: u64,
    /// While half-open: probes let through (and not abandoned) so far.
    probes_out: u32,
    /// While half-open: probes that succeeded.
    probes_ok: u32,
}

/// Outcomes of the last [`SLOTS`] slots; a slot is reused (cleared) when
/// time reaches its next turn.
#[derive(Debug, Default)]
struct Window {
    slots: [Slot; SLOTS],
}

#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    /// `now_ms / slot_ms` of the outcomes counted here.
    index: u64,
    calls: u32,
    failures: u32,
}

impl Window {
    fn record(&mut self, slot_index: u64, failed: bool) {
        let slot = &mut self.slots[(slot_index % SLOTS as u64) as usize];
        if slot.index != slot_index {
            *slot = Slot {
                index: slot_index,
                calls: 0,
                failures: 0,
            };
        }
        slot.calls = slot.calls.saturating_add(1);
        slot.failures = slot.failures.saturating_add(u32::from(failed));
    }

    /// (calls, failures) in the slots still inside the window at
    /// `slot_index`.
    fn totals(&self, slot_index: u64) -> (u32, u32) {
        self.slots
            .iter()
            .filter(|s| slot_index.saturating_sub(s.index) < SLOTS as u64)
            .fold((0, 0), |(calls, failures), s| {
                (
                    calls.saturating_add(s.calls),
                    failures.saturating_add(s.failures),
                )
            })
    }
}

impl Breaker {
    /// A closed breaker. `config` is assumed valid (config validation
    /// checks it); out-of-range values are clamped, not trusted.
    pub fn new(config: BreakerConfig) -> Self {
        let slot_ms = (config.window_ms / SLOTS as u64).max(1);
        Self {
            inner: Mutex::new(Inner {
                state: CircuitState::Closed,
                epoch: 0,
                window: Window::default(),
                open_for_ms: config.open_for_ms,
                until_ms: 0,
                probes_out: 0,
                probes_ok: 0,
            }),
            slot_ms,
            config,
        }
    }

    /// Asks to send one attempt at `now_ms`. The second value is the state
    /// entered, when asking moved the circuit (open → half-open once the
    /// cooldown is over).
    pub fn admit(&self, now_ms: u64) -> (Admission, Option<CircuitState>) {
        let mut inner = self.inner.lock();
        let mut entered = None;
        if inner.state == CircuitState::Open {
            if now_ms < inner.until_ms {
                let retry_in_ms = inner.until_ms - now_ms;
                return (Admission::Refused { retry_in_ms }, None);
            }
            inner.enter(CircuitState::HalfOpen);
            entered = Some(CircuitState::HalfOpen);
        }
        let admission = match inner.state {
            CircuitState::HalfOpen if inner.probes_out >= self.config.half_open_probes.max(1) => {
                Admission::Refused { retry_in_ms: 0 }
            }
            CircuitState::HalfOpen => {
                inner.probes_out += 1;
                Admission::Allowed(Permit {
                    epoch: inner.epoch,
                    probe: true,
                })
            }
            _ => Admission::Allowed(Permit {
                epoch: inner.epoch,
                probe: false,
            }),
        };
        (admission, entered)
    }

    /// Reports the result of an admitted attempt: `failed` for a connect
    /// error, a timeout or a 5xx. Returns the state entered, if the result
    /// moved the circuit.
    pub fn record(&self, permit: Permit, failed: bool, now_ms: u64) -> Option<CircuitState> {
        let mut inner = self.inner.lock();
        if permit.epoch != inner.epoch {
            return None;
        }
        match inner.state {
            CircuitState::Closed => {
                let slot = now_ms / self.slot_ms;
                inner.window.record(slot, failed);
                if !failed {
                    return None;
                }
                let (calls, failures) = inner.window.totals(slot);
                let tripped = calls >= self.config.min_calls
                    && f64::from(failures) >= self.config.failure_ratio * f64::from(calls);
                if !tripped {
                    return None;
                }
                inner.open_for_ms = self.config.open_for_ms;
                inner.open(now_ms);
                Some(CircuitState::Open)
            }
            CircuitState::HalfOpen if permit.probe && failed => {
                inner.open_for_ms = inner
                    .open_for_ms
                    .saturating_mul(2)
                    .min(self.config.max_open_for_ms)
                    .max(self.config.open_for_ms);
                inner.open(now_ms);
                Some(CircuitState::Open)
            }
            CircuitState::HalfOpen if permit.probe => {
                inner.probes_ok += 1;
                if inner.probes_ok < self.config.half_open_probes {
                    return None;
                }
                inner.open_for_ms = self.config.open_for_ms;
                inner.enter(CircuitState::Closed);
                Some(CircuitState::Closed)
            }
            CircuitState::HalfOpen | CircuitState::Open => None,
        }
    }

    /// The attempt was cancelled before it produced a result; a probe's
    /// place goes to the next attempt.
    pub fn abandon(&self, permit: Permit) {
        let mut inner = self.inner.lock();
        if permit.probe && permit.epoch == inner.epoch && inner.state == CircuitState::HalfOpen {
            inner.probes_out = inner.probes_out.saturating_sub(1);
        }
    }

    /// The state, and while open how long until a probe may go (0: the
    /// cooldown is over and the next attempt probes).
    pub fn state(&self, now_ms: u64) -> (CircuitState, Option<u64>) {
        let inner = self.inner.lock();
        let retry_in =
            (inner.state == CircuitState::Open).then(|| inner.until_ms.saturating_sub(now_ms));
        (inner.state, retry_in)
    }

    /// The failed share of the attempts in the current window at `now_ms`
    /// (0 when it is empty, and while open or half-open: the window
    /// restarts at every transition).
    pub fn error_rate(&self, now_ms: u64) -> f64 {
        let inner = self.inner.lock();
        let (calls, failures) = inner.window.totals(now_ms / self.slot_ms);
        if calls == 0 {
            0.0
        } else {
            f64::from(failures) / f64::from(calls)
        }
    }
}

impl Inner {
    /// A new period in `state` with fresh counters.
    fn enter(&mut self, state: CircuitState) {
        self.state = state;
        self.epoch += 1;
        self.window = Window::default();
        self.probes_out = 0;
        self.probes_ok = 0;
    }

    fn open(&mut self, now_ms: u64) {
        self.enter(CircuitState::Open);
        self.until_ms = now_ms.saturating_add(self.open_for_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_ratio: 0.8,
            min_calls: 10,
            window_ms: 10_000,
            half_open_probes: 3,
            open_for_ms: 5_000,
            max_open_for_ms: 60_000,
        }
    }

    fn permit(b: &Breaker, now: u64) -> Permit {
        match b.admit(now).0 {
            Admission::Allowed(p) => p,
            refused => panic!("refused at {now}: {refused:?}"),
        }
    }

    /// Sends `calls` attempts at `now`, the first `failures` of them failing;
    /// the last transition they caused.
    #[test]
    fn error_rate_is_the_windows_failed_share() {
        let b = Breaker::new(BreakerConfig {
            min_calls: 100,
            ..BreakerConfig::default()
        });
        assert_eq!(b.error_rate(0), 0.0);
        send(&b, 0, 4, 1);
        assert_eq!(b.error_rate(0), 0.25);
    }

    fn send(b: &Breaker, now: u64, calls: u32, failures: u32) -> Option<CircuitState> {
        let mut entered = None;
        for i in 0..calls {
            let p = permit(b, now);
            entered = b.record(p, i < failures, now).or(entered);
        }
        entered
    }

    fn refused(b: &Breaker, now: u64) -> u64 {
        match b.admit(now).0 {
            Admission::Refused { retry_in_ms } => retry_in_ms,
            allowed => panic!("allowed at {now}: {allowed:?}"),
        }
    }

    fn trip(b: &Breaker, now: u64) {
        assert_eq!(send(b, now, 10, 10), Some(CircuitState::Open));
    }

    #[test]
    fn a_ratio_under_the_threshold_never_opens() {
        let b = Breaker::new(config());
        // 70% failing, for a long time, in every slot.
        for second in 0..600 {
            assert_eq!(send(&b, second * 1_000, 3, 0), None);
            assert_eq!(send(&b, second * 1_000, 7, 7), None);
        }
        assert_eq!(b.state(600_000).0, CircuitState::Closed);
    }

    #[test]
    fn failures_under_min_calls_do_not_count() {
        let b = Breaker::new(config());
        assert_eq!(send(&b, 0, 9, 9), None);
        assert_eq!(b.state(0).0, CircuitState::Closed);
        // The tenth outcome reaches min_calls; 9/10 failed.
        let p = permit(&b, 1);
        assert_eq!(b.record(p, true, 1), Some(CircuitState::Open));
    }

    #[test]
    fn the_ratio_is_over_the_rolling_window_only() {
        // The window is 10 s in 1 s slots.
        let b = Breaker::new(config());
        assert_eq!(send(&b, 0, 40, 0), None);
        assert_eq!(send(&b, 9_000, 10, 10), None, "10 failures of 50");
        // At t=10 s the successes of t=0 have left the window.
        assert_eq!(send(&b, 10_000, 1, 1), Some(CircuitState::Open));

        // Failures age out the same way.
        let b = Breaker::new(config());
        assert_eq!(send(&b, 0, 9, 9), None);
        assert_eq!(
            send(&b, 10_000, 9, 9),
            None,
            "9 in the window: under min_calls"
        );
        assert_eq!(send(&b, 10_500, 1, 1), Some(CircuitState::Open));
    }

    #[test]
    fn a_mixed_window_opens_at_the_ratio() {
        let b = Breaker::new(config());
        assert_eq!(send(&b, 0, 4, 0), None);
        // 16 failures of 20 reach 0.8 exactly.
        assert_eq!(send(&b, 500, 15, 15), None);
        assert_eq!(send(&b, 900, 1, 1), Some(CircuitState::Open));
        assert_eq!(refused(&b, 1_900), 4_000);
        assert_eq!(b.state(1_900), (CircuitState::Open, Some(4_000)));
    }

    #[test]
    fn half_open_lets_the_configured_probes_through_and_closes_when_all_succeed() {
        let b = Breaker::new(config());
        trip(&b, 0);
        let (admission, entered) = b.admit(5_000);
        assert_eq!(entered, Some(CircuitState::HalfOpen));
        let Admission::Allowed(first) = admission else {
            panic!("{admission:?}")
        };
        let second = permit(&b, 5_001);
        let third = permit(&b, 5_002);
        assert_eq!(refused(&b, 5_003), 0, "only three probes at once");
        assert_eq!(b.record(first, false, 5_010), None);
        assert_eq!(b.record(second, false, 5_011), None);
        assert_eq!(b.state(5_011).0, CircuitState::HalfOpen);
        assert_eq!(b.record(third, false, 5_012), Some(CircuitState::Closed));
        assert_eq!(b.state(5_012), (CircuitState::Closed, None));
        // The window starts empty: nine failures do not reopen it.
        assert_eq!(send(&b, 5_013, 9, 9), None);
    }

    #[test]
    fn one_failed_probe_reopens_and_the_cooldown_doubles_up_to_the_cap() {
        let b = Breaker::new(config());
        trip(&b, 0);
        let mut now = 5_000;
        for cooldown in [10_000, 20_000, 40_000, 60_000, 60_000] {
            let probe = permit(&b, now);
            let other = permit(&b, now);
            assert_eq!(b.record(probe, true, now), Some(CircuitState::Open));
            // The other probe's late success decides nothing.
            assert_eq!(b.record(other, false, now + 1), None);
            assert_eq!(refused(&b, now + 1), cooldown - 1);
            assert_eq!(refused(&b, now + cooldown - 1), 1);
            now += cooldown;
        }
        // Closing resets the cooldown to open_for.
        assert_eq!(send(&b, now, 3, 0), Some(CircuitState::Closed));
        trip(&b, now);
        assert_eq!(refused(&b, now), 5_000);
    }

    #[test]
    fn results_from_before_the_circuit_opened_decide_nothing() {
        let b = Breaker::new(config());
        let early = permit(&b, 0);
        trip(&b, 0);
        // Sent while closed, answered after opening and after the cooldown.
        assert_eq!(b.admit(5_000).1, Some(CircuitState::HalfOpen));
        assert_eq!(b.record(early, true, 5_000), None);
        assert_eq!(b.state(5_000).0, CircuitState::HalfOpen);
    }

    #[test]
    fn an_abandoned_probe_frees_its_place() {
        let b = Breaker::new(BreakerConfig {
            half_open_probes: 1,
            ..config()
        });
        trip(&b, 0);
        let probe = permit(&b, 5_000);
        assert_eq!(refused(&b, 5_001), 0);
        b.abandon(probe);
        let next = permit(&b, 5_002);
        assert_eq!(b.record(next, false, 5_003), Some(CircuitState::Closed));
        // Abandoning a permit of an earlier period changes nothing.
        b.abandon(probe);
        assert_eq!(b.state(5_004).0, CircuitState::Closed);
    }

    #[test]
    fn states_serialize_as_their_metric_labels() {
        assert_eq!(
            serde_json::to_string(&CircuitState::HalfOpen).unwrap(),
            "\"half-open\""
        );
    }
}
