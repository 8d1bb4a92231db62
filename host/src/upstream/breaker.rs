//! A per-provider circuit breaker: after N consecutive unhealthy attempts
//! (connect error, timeout, 5xx) the provider is skipped for a cooldown, then
//! one probe decides whether it is back. Failed probes double the cooldown up
//! to a cap, so a dead provider costs one attempt per cooldown, not one per
//! request.

use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

/// Where a provider's breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CircuitState {
    /// Traffic flows.
    Closed,
    /// Attempts fail fast without touching the network.
    Open,
    /// The cooldown is over: the next attempt is a probe.
    HalfOpen,
}

impl CircuitState {
    /// `closed`, `open` or `half-open` (metric label, /readyz text).
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
        }
    }
}

/// Breaker tuning; the defaults suit a public LLM API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive unhealthy attempts that open the circuit.
    pub failure_threshold: u32,
    /// First cooldown after opening.
    pub open_for: Duration,
    /// Cap for the cooldown, which doubles after each failed probe.
    pub max_open_for: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(60),
        }
    }
}

/// The breaker's answer to "may I send?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Send; when `probe` is true the result decides the circuit and must be
    /// reported with `probe = true` (or the probe abandoned).
    Allowed { probe: bool },
    /// Fail fast. `retry_in_ms` is when a probe will be let through (0 when
    /// a probe is already in flight).
    Rejected {
        state: CircuitState,
        retry_in_ms: u64,
    },
}

#[derive(Debug)]
pub(crate) struct Breaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: CircuitState,
    /// Consecutive unhealthy results while closed.
    failures: u32,
    /// Cooldown used for the current (or next) opening.
    open_for_ms: u64,
    /// While open: when the cooldown ends.
    until_ms: u64,
    /// While half-open: a probe is out.
    probe_in_flight: bool,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            inner: Mutex::new(Inner {
                state: CircuitState::Closed,
                failures: 0,
                open_for_ms: millis(settings.open_for),
                until_ms: 0,
                probe_in_flight: false,
            }),
        }
    }

    /// Asks to send one attempt at `now_ms`.
    pub fn admit(&self, now_ms: u64) -> Admission {
        let mut inner = self.inner.lock();
        match inner.state {
            CircuitState::Closed => Admission::Allowed { probe: false },
            CircuitState::Open if now_ms >= inner.until_ms => {
                inner.state = CircuitState::HalfOpen;
                inner.probe_in_flight = true;
                Admission::Allowed { probe: true }
            }
            CircuitState::Open => Admission::Rejected {
                state: CircuitState::Open,
                retry_in_ms: inner.until_ms - now_ms,
            },
            CircuitState::HalfOpen if inner.probe_in_flight => Admission::Rejected {
                state: CircuitState::HalfOpen,
                retry_in_ms: 0,
            },
            CircuitState::HalfOpen => {
                inner.probe_in_flight = true;
                Admission::Allowed { probe: true }
            }
        }
    }

    /// Reports an admitted attempt: `healthy` is false for connect errors,
    /// timeouts and 5xx. Results of attempts admitted before the circuit
    /// opened are ignored; only the probe decides a half-open circuit.
    pub fn record(&self, probe: bool, healthy: bool, now_ms: u64) {
        let mut inner = self.inner.lock();
        match inner.state {
            CircuitState::Closed if healthy => inner.failures = 0,
            CircuitState::Closed => {
                inner.failures = inner.failures.saturating_add(1);
                if inner.failures >= self.settings.failure_threshold {
                    inner.open_for_ms = millis(self.settings.open_for);
                    open(&mut inner, now_ms);
                }
            }
            CircuitState::HalfOpen if probe && healthy => {
                inner.state = CircuitState::Closed;
                inner.failures = 0;
                inner.probe_in_flight = false;
                inner.open_for_ms = millis(self.settings.open_for);
            }
            CircuitState::HalfOpen if probe => {
                inner.open_for_ms = inner
                    .open_for_ms
                    .saturating_mul(2)
                    .min(millis(self.settings.max_open_for));
                open(&mut inner, now_ms);
            }
            CircuitState::HalfOpen | CircuitState::Open => {}
        }
    }

    /// The probe was cancelled before it produced a result; let the next
    /// attempt probe instead.
    pub fn abandon_probe(&self) {
        let mut inner = self.inner.lock();
        if inner.state == CircuitState::HalfOpen {
            inner.probe_in_flight = false;
        }
    }

    /// The state as an operator should see it: an open circuit whose
    /// cooldown is over reads as half-open.
    pub fn state(&self, now_ms: u64) -> CircuitState {
        let inner = self.inner.lock();
        match inner.state {
            CircuitState::Open if now_ms >= inner.until_ms => CircuitState::HalfOpen,
            state => state,
        }
    }
}

fn open(inner: &mut Inner, now_ms: u64) {
    inner.state = CircuitState::Open;
    inner.failures = 0;
    inner.probe_in_flight = false;
    inner.until_ms = now_ms.saturating_add(inner.open_for_ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOWED: Admission = Admission::Allowed { probe: false };
    const PROBE: Admission = Admission::Allowed { probe: true };

    fn breaker() -> Breaker {
        Breaker::new(BreakerSettings {
            failure_threshold: 3,
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(60),
        })
    }

    fn fail(b: &Breaker, times: u32, now: u64) {
        for _ in 0..times {
            assert_eq!(b.admit(now), ALLOWED);
            b.record(false, false, now);
        }
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker();
        fail(&b, 2, 0);
        b.record(false, true, 0); // a success resets the streak
        fail(&b, 2, 0);
        assert_eq!(b.state(0), CircuitState::Closed);
        fail(&b, 1, 100);
        assert_eq!(b.state(100), CircuitState::Open);
        assert_eq!(
            b.admit(1_100),
            Admission::Rejected {
                state: CircuitState::Open,
                retry_in_ms: 4_000
            }
        );
    }

    #[test]
    fn half_open_lets_exactly_one_probe_through() {
        let b = breaker();
        fail(&b, 3, 0);
        assert_eq!(b.state(5_000), CircuitState::HalfOpen);
        assert_eq!(b.admit(5_000), PROBE);
        assert_eq!(
            b.admit(5_001),
            Admission::Rejected {
                state: CircuitState::HalfOpen,
                retry_in_ms: 0
            }
        );
        // A late result from before the circuit opened decides nothing.
        b.record(false, true, 5_002);
        assert_eq!(b.state(5_002), CircuitState::HalfOpen);
        b.record(true, true, 5_003);
        assert_eq!(b.state(5_003), CircuitState::Closed);
        assert_eq!(b.admit(5_003), ALLOWED);
    }

    #[test]
    fn failed_probes_double_the_cooldown_up_to_the_cap_and_success_resets_it() {
        let b = breaker();
        fail(&b, 3, 0);
        let mut now = 5_000;
        for expected in [10_000, 20_000, 40_000, 60_000, 60_000] {
            assert_eq!(b.admit(now), PROBE);
            b.record(true, false, now);
            assert_eq!(
                b.admit(now),
                Admission::Rejected {
                    state: CircuitState::Open,
                    retry_in_ms: expected
                }
            );
            now += expected;
        }
        assert_eq!(b.admit(now), PROBE);
        b.record(true, true, now);
        fail(&b, 3, now);
        assert_eq!(
            b.admit(now),
            Admission::Rejected {
                state: CircuitState::Open,
                retry_in_ms: 5_000
            }
        );
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_attempt_probe() {
        let b = breaker();
        fail(&b, 3, 0);
        assert_eq!(b.admit(5_000), PROBE);
        b.abandon_probe();
        assert_eq!(b.admit(5_001), PROBE);
    }

    #[test]
    fn failures_while_open_do_not_extend_it() {
        let b = breaker();
        fail(&b, 3, 0);
        b.record(false, false, 4_000);
        assert_eq!(b.state(5_000), CircuitState::HalfOpen);
    }

    #[test]
    fn labels() {
        assert_eq!(CircuitState::HalfOpen.as_str(), "half-open");
        assert_eq!(
            serde_json::to_string(&CircuitState::HalfOpen).unwrap(),
            "\"half-open\""
        );
    }
}
