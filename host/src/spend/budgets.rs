//! [`Budgets`]: caps on spend per UTC day, UTC month and in total, for any
//! [`BudgetSubject`] (a tenant, a virtual key), held in the state so they
//! are exact across nodes.
//!
//! Before the upstream call a request reserves its worst-case cost from
//! every period of every subject it is charged to, all or nothing, in one
//! state call ([`Budgets::reserve`]); a period that cannot cover it refuses
//! the request. After the answer, [`Budgets::settle`] replaces the
//! reservation by the actual cost (refunding the difference) and adds the
//! actual cost to the subject's spend counters, which drive the alerts. A
//! [`Reservation`] dropped without settling (an error, a client gone) is
//! refunded in full. So the counters never pass a limit, on one node or
//! many, as long as the actual cost does not exceed the worst case.
//!
//! Counter keys: `b|<subject>|<period id>` (reserved + settled spend, the
//! one checked against the limit) and `a|<subject>|<period id>` (settled
//! spend only), where the subject is `tenant:<name>` or `key:<id>` and the
//! period id `d2026-11-29`, `m2026-11` or `total`.
//!
//! Using it for another subject (the virtual-keys API does this for keys):
//! build a [`SubjectBudget`] with [`BudgetSubject::Key`] and the key's
//! [`BudgetLimits`], and push it onto the request's
//! [`super::RequestSpend::subjects`] during authentication; reserve,
//! settle, refusals and alerts then cover it like a tenant. Read its spend
//! with [`Budgets::usage`].

use std::sync::Arc;
use std::time::Duration;

use super::period::{Date, Period, unix_ms};
use super::prices::{Nano, nano_of_usd, usd_of_nano};
use crate::alerts::{Alert, Alerts, crossed};
use crate::config::BudgetUsd;
use crate::state::{BudgetCounter, HashAdd, State, StateError};
use crate::telemetry::Metrics;

/// Whose budget: a tenant (by name) or a virtual key (by id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BudgetSubject {
    Tenant(String),
    Key(String),
}

impl BudgetSubject {
    /// `tenant:<name>` or `key:<id>`: its part of state keys, alerts and
    /// messages.
    pub fn label(&self) -> String {
        match self {
            BudgetSubject::Tenant(name) => format!("tenant:{name}"),
            BudgetSubject::Key(id) => format!("key:{id}"),
        }
    }

    fn noun(&self) -> String {
        match self {
            BudgetSubject::Tenant(name) => format!("tenant `{name}`"),
            BudgetSubject::Key(id) => format!("key `{id}`"),
        }
    }
}

/// Caps in nano-USD per period; `None`: not capped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetLimits {
    pub day: Option<Nano>,
    pub month: Option<Nano>,
    pub total: Option<Nano>,
}

impl BudgetLimits {
    /// From the config's USD amounts.
    pub fn from_usd(b: &BudgetUsd) -> Self {
        Self {
            day: b.day.map(nano_of_usd),
            month: b.month.map(nano_of_usd),
            total: b.total.map(nano_of_usd),
        }
    }

    /// The cap of `period`.
    pub fn get(&self, period: Period) -> Option<Nano> {
        match period {
            Period::Day => self.day,
            Period::Month => self.month,
            Period::Total => self.total,
        }
    }

    /// Whether no period is capped.
    pub fn is_empty(&self) -> bool {
        self.day.is_none() && self.month.is_none() && self.total.is_none()
    }
}

/// A subject and its caps, as a request is charged to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectBudget {
    pub subject: BudgetSubject,
    pub limits: BudgetLimits,
}

impl SubjectBudget {
    /// `subject`'s budget of `b`, if it caps any period.
    pub fn capping(subject: BudgetSubject, b: &BudgetUsd) -> Option<Self> {
        let limits = BudgetLimits::from_usd(b);
        (!limits.is_empty()).then_some(SubjectBudget { subject, limits })
    }
}

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BudgetError {
    /// A period of a subject cannot cover the worst case.
    Exhausted {
        subject: BudgetSubject,
        period: Period,
        limit: Nano,
        /// Spent and reserved in the period.
        used: Nano,
        worst: Nano,
        /// Until the period resets; `None` for `total`.
        retry_after: Option<Duration>,
    },
    /// The state could not be asked (fail-closed).
    State(StateError),
}

impl BudgetError {
    /// A message for the client.
    pub fn message(&self) -> String {
        match self {
            BudgetError::Exhausted {
                subject,
                period,
                limit,
                used,
                worst,
                retry_after,
            } => {
                let when = match retry_after {
                    Some(d) => format!(" It resets in {} s.", d.as_secs().max(1)),
                    None => String::new(),
                };
                format!(
                    "You exceeded your current quota: the {} budget of {} is ${:.6}, ${:.6} of it is spent or reserved, and this request may cost up to ${:.6}.{when}",
                    period.as_str(),
                    subject.noun(),
                    usd_of_nano(*limit),
                    usd_of_nano(*used),
                    usd_of_nano(*worst),
                )
            }
            BudgetError::State(e) => format!("budgets could not be checked: {e}"),
        }
    }
}

/// One counter a reservation holds, and whose it is.
#[derive(Debug, Clone)]
struct Held {
    subject: BudgetSubject,
    period: Period,
    period_id: String,
    limit: Nano,
}

/// The worst case a request reserved; settle it with [`Budgets::settle`].
/// Dropped unsettled, it is refunded in full in the background.
#[derive(Debug)]
pub struct Reservation {
    state: State,
    held: Vec<Held>,
    worst: Nano,
    settled: bool,
    /// Taken from this node's budget slices (no Redis call): what is not
    /// spent goes back into them.
    local: bool,
}

impl Reservation {
    /// The reserved worst case.
    pub fn worst(&self) -> Nano {
        self.worst
    }

    /// Whether it was taken from this node's budget slices.
    pub fn is_local(&self) -> bool {
        self.local
    }

    fn counters(&self, delta: i64) -> Vec<BudgetCounter> {
        self.held
            .iter()
            .map(|h| BudgetCounter {
                key: budget_key(&h.subject, &h.period_id),
                delta,
                limit: None,
                ttl: h.period.ttl(),
            })
            .collect()
    }

    /// The corrections to the reserved counters once `actual` is known:
    /// an exact reservation moves by `actual - worst`; one from slices puts
    /// what it did not spend back into them, and only counters without a
    /// slice any more (or a cost above the worst case) go to the state.
    fn corrections(&self, actual: Nano) -> Vec<BudgetCounter> {
        let mut counters = self.counters(actual - self.worst);
        if !self.local {
            return counters;
        }
        let unspent = self.worst - actual;
        if unspent <= 0 {
            return counters;
        }
        let missing = self.state.budget_put_back(&counters, unspent);
        let mut i = 0;
        counters.retain(|_| {
            i += 1;
            missing.contains(&(i - 1))
        });
        counters
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.settled || self.held.is_empty() {
            return;
        }
        let refund = self.corrections(0);
        if refund.is_empty() {
            return;
        }
        let state = self.state.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = state.budget(&refund, false, None).await {
                    tracing::warn!(error = %e, "could not refund a budget reservation");
                }
            });
        }
    }
}

fn budget_key(subject: &BudgetSubject, period_id: &str) -> String {
    format!("b|{}|{period_id}", subject.label())
}

fn spent_key(subject: &BudgetSubject, period_id: &str) -> String {
    format!("a|{}|{period_id}", subject.label())
}

/// Spend in one period of a subject, for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodUsage {
    pub period: Period,
    pub period_id: String,
    pub limit: Option<Nano>,
    /// Settled spend.
    pub spent: Nano,
    /// Settled spend plus reservations in flight.
    pub committed: Nano,
}

/// Budgets over the state; cheap to clone.
#[derive(Debug, Clone)]
pub struct Budgets {
    state: State,
    alerts: Alerts,
    metrics: Arc<Metrics>,
}

impl Budgets {
    pub fn new(state: State, alerts: Alerts, metrics: Arc<Metrics>) -> Self {
        Self {
            state,
            alerts,
            metrics,
        }
    }

    /// Reserves `worst` from every capped period of every subject, or
    /// nothing. `tenant` labels the refusal metric.
    pub async fn reserve(
        &self,
        subjects: &[SubjectBudget],
        worst: Nano,
        tenant: &str,
    ) -> Result<Reservation, BudgetError> {
        let today = Date::today();
        let mut held = Vec::new();
        for s in subjects {
            for period in Period::ALL {
                if let Some(limit) = s.limits.get(period) {
                    held.push(Held {
                        subject: s.subject.clone(),
                        period,
                        period_id: period.id(today),
                        limit,
                    });
                }
            }
        }
        let mut reservation = Reservation {
            state: self.state.clone(),
            held,
            worst: worst.max(0),
            settled: false,
            local: false,
        };
        if reservation.held.is_empty() {
            return Ok(reservation);
        }
        let counters: Vec<BudgetCounter> = reservation
            .held
            .iter()
            .map(|h| BudgetCounter {
                key: budget_key(&h.subject, &h.period_id),
                delta: reservation.worst,
                limit: Some(h.limit),
                ttl: h.period.ttl(),
            })
            .collect();
        let reply = match self.state.budget_reserve(&counters).await {
            Ok(r) => r,
            Err(e) => {
                reservation.settled = true;
                return Err(BudgetError::State(e));
            }
        };
        if reply.admitted {
            reservation.local = reply.local;
            return Ok(reservation);
        }
        reservation.settled = true;
        let i = reply.refused.unwrap_or(0).min(reservation.held.len() - 1);
        let h = reservation.held.swap_remove(i);
        let used = reply.values.get(i).copied().unwrap_or(0);
        self.metrics.spend().refused(tenant, h.period.as_str());
        self.exhausted(&h, used);
        Err(BudgetError::Exhausted {
            subject: h.subject,
            period: h.period,
            limit: h.limit,
            used,
            worst: reservation.worst,
            retry_after: h.period.resets_in(unix_ms()),
        })
    }

    /// The 100% alert of a period that refused a request, once per period.
    fn exhausted(&self, h: &Held, used: Nano) {
        let (alerts, h) = (self.alerts.clone(), h.clone());
        tokio::spawn(async move {
            let id = format!("budget|{}|{}|100", h.subject.label(), h.period_id);
            if alerts.claim(&id, h.period.ttl()).await {
                alerts.raise(alert(&h, 100, used.min(h.limit)));
            }
        });
    }

    /// Replaces `reservation` (if any) by the `actual` cost, adds it to the
    /// spend counters and `record` (the day's spend record), in one state
    /// call, and raises the alerts it crossed.
    pub async fn settle(
        &self,
        reservation: Option<Reservation>,
        actual: Nano,
        record: Option<HashAdd>,
    ) -> Result<(), StateError> {
        let actual = actual.max(0);
        let (held, mut counters) = match reservation {
            Some(mut r) => {
                r.settled = true;
                let counters = r.corrections(actual);
                (std::mem::take(&mut r.held), counters)
            }
            None => (Vec::new(), Vec::new()),
        };
        let corrections = counters.len();
        counters.extend(held.iter().map(|h| BudgetCounter {
            key: spent_key(&h.subject, &h.period_id),
            delta: actual,
            limit: None,
            ttl: h.period.ttl(),
        }));
        if counters.is_empty() && record.is_none() {
            return Ok(());
        }
        let reply = self.state.budget(&counters, false, record.as_ref()).await?;
        for (h, after) in held.iter().zip(reply.values.iter().skip(corrections)) {
            let before = after - actual;
            for t in crossed(before as f64, *after as f64, h.limit as f64) {
                let id = format!("budget|{}|{}|{t}", h.subject.label(), h.period_id);
                if self.alerts.claim(&id, h.period.ttl()).await {
                    self.alerts.raise(alert(h, t, *after));
                }
            }
        }
        Ok(())
    }

    /// The current periods' spend of `subject`.
    pub async fn usage(
        &self,
        subject: &BudgetSubject,
        limits: &BudgetLimits,
    ) -> Result<Vec<PeriodUsage>, StateError> {
        let today = Date::today();
        let ids: Vec<(Period, String)> = Period::ALL.map(|p| (p, p.id(today))).to_vec();
        let counters: Vec<BudgetCounter> = ids
            .iter()
            .flat_map(|(_, id)| [spent_key(subject, id), budget_key(subject, id)])
            .map(|key| BudgetCounter {
                key,
                delta: 0,
                limit: None,
                ttl: None,
            })
            .collect();
        let reply = self.state.budget(&counters, false, None).await?;
        Ok(ids
            .into_iter()
            .zip(reply.values.chunks_exact(2))
            .map(|((period, period_id), v)| PeriodUsage {
                period,
                period_id,
                limit: limits.get(period),
                spent: v[0],
                committed: v[1],
            })
            .collect())
    }
}

fn alert(h: &Held, threshold: u8, used: Nano) -> Alert {
    Alert {
        kind: "budget",
        subject: h.subject.label(),
        period: h.period.as_str(),
        period_id: h.period_id.clone(),
        threshold,
        used: usd_of_nano(used),
        limit: usd_of_nano(h.limit),
        unit: "usd",
        at_ms: unix_ms(),
    }
}
