//! The host's retry budget (Finagle / linkerd style): per provider, retries
//! in the last 10 seconds may not exceed `ratio` × requests in the same
//! window plus `min_per_sec` × 10. Whatever the retry plugin asks for, an
//! outage then adds at most `ratio` extra load instead of multiplying it.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::clock::{self, Clock};
use crate::config::RetryConfig;

/// Length of the sliding window, in one-second slots.
const WINDOW_SECS: u64 = 10;

/// Budget tuning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetSettings {
    /// Retries allowed per original request, on top of the floor.
    pub ratio: f64,
    /// Retries per second always allowed (the floor), so a quiet provider
    /// can still be retried.
    pub min_per_sec: u32,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_sec: 10,
        }
    }
}

impl From<&RetryConfig> for BudgetSettings {
    fn from(config: &RetryConfig) -> Self {
        Self {
            ratio: config.budget_ratio,
            min_per_sec: config.budget_min_per_sec,
        }
    }
}

/// Per-provider retry budgets; clones share the same counters.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: BudgetSettings,
    clock: Arc<dyn Clock>,
    // Providers are few and fixed after the first request each; the write
    // lock is taken once per provider name.
    windows: RwLock<HashMap<Box<str>, Arc<Mutex<Window>>>>,
}

impl RetryBudget {
    /// Budgets on the real clock.
    pub fn new(settings: BudgetSettings) -> Self {
        Self::with_clock(settings, clock::system())
    }

    /// Budgets on `clock` (tests pass a [`super::ManualClock`]).
    pub fn with_clock(settings: BudgetSettings, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                clock,
                windows: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// Counts one original client request routed to `provider`. Call it
    /// once per request, not per attempt: retries are counted by
    /// [`Self::try_spend_retry`].
    pub fn record_request(&self, provider: &str) {
        let second = self.second();
        self.window(provider).lock().slot(second).requests += 1;
    }

    /// Takes one retry from `provider`'s budget; false when it is spent (the
    /// caller then gives up instead of retrying).
    pub fn try_spend_retry(&self, provider: &str) -> bool {
        let second = self.second();
        let window = self.window(provider);
        let mut window = window.lock();
        let (requests, retries) = window.totals(second);
        if (retries + 1) as f64 > self.allowance(requests) {
            return false;
        }
        window.slot(second).retries += 1;
        true
    }

    /// Retries `provider` could still spend right now.
    pub fn available(&self, provider: &str) -> u64 {
        let (requests, retries) = self.window(provider).lock().totals(self.second());
        // Float-to-int casts saturate; the allowance is never negative.
        (self.allowance(requests).floor() as u64).saturating_sub(retries)
    }

    fn allowance(&self, requests: u64) -> f64 {
        let s = &self.inner.settings;
        s.ratio * requests as f64 + f64::from(s.min_per_sec) * WINDOW_SECS as f64
    }

    fn second(&self) -> u64 {
        self.inner.clock.now_ms() / 1000
    }

    fn window(&self, provider: &str) -> Arc<Mutex<Window>> {
        if let Some(window) = self.inner.windows.read().get(provider) {
            return Arc::clone(window);
        }
        Arc::clone(
            self.inner
                .windows
                .write()
                .entry(provider.into())
                .or_default(),
        )
    }
}

/// Ten one-second slots, reused round-robin; a slot whose `second` is out of
/// date is reset before use, so stale counts never leak into the sums.
#[derive(Debug, Default)]
struct Window {
    slots: [Slot; WINDOW_SECS as usize],
}

#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    second: u64,
    requests: u64,
    retries: u64,
}

impl Window {
    fn slot(&mut self, second: u64) -> &mut Slot {
        let slot = &mut self.slots[(second % WINDOW_SECS) as usize];
        if slot.second != second {
            *slot = Slot {
                second,
                ..Slot::default()
            };
        }
        slot
    }

    /// (requests, retries) over the current second and the nine before it.
    fn totals(&self, now: u64) -> (u64, u64) {
        self.slots
            .iter()
            .filter(|s| s.second <= now && now - s.second < WINDOW_SECS)
            .fold((0, 0), |(q, r), s| (q + s.requests, r + s.retries))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::upstream::ManualClock;

    fn budget(ratio: f64, min_per_sec: u32) -> (RetryBudget, ManualClock) {
        let clock = ManualClock::new(1_000_000);
        let budget = RetryBudget::with_clock(
            BudgetSettings { ratio, min_per_sec },
            Arc::new(clock.clone()),
        );
        (budget, clock)
    }

    fn spend_all(b: &RetryBudget, provider: &str) -> u64 {
        let mut spent = 0;
        while b.try_spend_retry(provider) {
            spent += 1;
            assert!(spent < 1_000_000, "budget never ran out");
        }
        spent
    }

    #[test]
    fn the_floor_allows_min_per_sec_times_ten_without_traffic() {
        let (b, _) = budget(0.2, 10);
        assert_eq!(b.available("openai"), 100);
        assert_eq!(spend_all(&b, "openai"), 100);
        assert_eq!(b.available("openai"), 0);
    }

    #[test]
    fn requests_add_ratio_worth_of_retries() {
        let (b, _) = budget(0.2, 10);
        for _ in 0..1_000 {
            b.record_request("openai");
        }
        // 0.2 × 1000 + 10 × 10
        assert_eq!(spend_all(&b, "openai"), 300);
        // Five more requests earn exactly one more retry.
        for _ in 0..5 {
            b.record_request("openai");
        }
        assert!(b.try_spend_retry("openai"));
        assert!(!b.try_spend_retry("openai"));
    }

    #[test]
    fn providers_have_separate_budgets() {
        let (b, _) = budget(0.0, 1);
        assert_eq!(spend_all(&b, "openai"), 10);
        assert!(b.try_spend_retry("anthropic"));
    }

    #[test]
    fn spent_retries_age_out_of_the_ten_second_window() {
        let (b, clock) = budget(0.0, 1);
        assert_eq!(spend_all(&b, "p"), 10);
        clock.advance(Duration::from_millis(9_999));
        // Still inside the window that started at second 1000.
        assert!(!b.try_spend_retry("p"));
        clock.advance(Duration::from_millis(1));
        assert_eq!(spend_all(&b, "p"), 10);
    }

    #[test]
    fn requests_age_out_too() {
        let (b, clock) = budget(1.0, 0);
        for _ in 0..3 {
            b.record_request("p");
        }
        clock.advance(Duration::from_secs(5));
        b.record_request("p");
        assert_eq!(b.available("p"), 4);
        clock.advance(Duration::from_secs(5));
        // The first three requests are ten seconds old now.
        assert_eq!(b.available("p"), 1);
        assert_eq!(spend_all(&b, "p"), 1);
    }

    #[test]
    fn settings_come_from_retry_config() {
        let s = BudgetSettings::from(&RetryConfig::default());
        assert_eq!(s, BudgetSettings::default());
    }
}
