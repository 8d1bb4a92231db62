//! Prices, spend and budgets (docs/budgets.md).
//!
//! - [`prices`]: the price table (config `[[prices]]`, then the shipped
//!   `host/data/prices.toml`); costs in integer nano-USD.
//! - [`budgets`]: day/month/total caps for tenants and virtual keys,
//!   reserved before the upstream call and settled after, in the state.
//! - [`records`]: per-day spend records in the state, read by
//!   `GET /admin/spend` ([`admin`]).
//!
//! [`Spend`] ties them together for the pipeline: one per gateway.

pub mod admin;
pub mod budgets;
pub mod period;
pub mod prices;
pub mod records;

use std::sync::Arc;

use crate::alerts::Alerts;
use crate::config::Config;
use crate::policy::Usage;
use crate::state::State;
use crate::telemetry::Metrics;
pub use budgets::{
    BudgetError, BudgetLimits, BudgetSubject, Budgets, PeriodUsage, Reservation, SubjectBudget,
};
pub use period::Period;
pub use prices::{Nano, Price, PriceTable, TokenUse, usd_of_nano};

/// Prices, budgets and spend records of one gateway.
#[derive(Debug)]
pub struct Spend {
    pub prices: PriceTable,
    pub budgets: Budgets,
    pub alerts: Alerts,
    state: State,
    metrics: Arc<Metrics>,
}

/// What one request carries through the pipeline for spend.
#[derive(Debug, Default)]
pub struct RequestSpend {
    /// The budgets the request is charged to. Authentication fills it: the
    /// tenant's from the config; a virtual key's is pushed by whoever
    /// resolves keys (see [`budgets`]).
    pub subjects: Vec<SubjectBudget>,
    /// The worst case reserved before the upstream call.
    pub reservation: Option<Reservation>,
    /// The cost, once known while the response is built (JSON answers and
    /// cache hits; not streams): the `x-sluice-cost-usd` header.
    pub cost: Option<Nano>,
    /// The provider answered with an error: nothing is charged.
    pub failed: bool,
}

/// What settling a request needs once its usage is known.
#[derive(Debug)]
pub struct Settlement {
    pub reservation: Option<Reservation>,
    pub tenant: String,
    pub key: Option<String>,
    pub provider: String,
    pub model: String,
    pub failed: bool,
}

impl Spend {
    /// Builds prices and budgets from `config` over `state`.
    pub fn new(config: &Config, state: State, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let prices = PriceTable::new(&config.prices).map_err(anyhow::Error::msg)?;
        let alerts = Alerts::new(
            config.alerts.webhooks.clone(),
            metrics.clone(),
            state.clone(),
        );
        Ok(Self {
            prices,
            budgets: Budgets::new(state.clone(), alerts.clone(), metrics.clone()),
            alerts,
            state,
            metrics,
        })
    }

    /// The state the records live in.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The budget of `tenant` from the config, if it has one.
    pub fn tenant_budget(config: &Config, tenant: &str) -> Option<SubjectBudget> {
        let b = config.tenant(tenant)?.budget_usd.as_ref()?;
        let limits = BudgetLimits::from_usd(b);
        (!limits.is_empty()).then(|| SubjectBudget {
            subject: BudgetSubject::Tenant(tenant.to_owned()),
            limits,
        })
    }

    /// `(cost, saved)` of an answer: a cached one cost nothing upstream and
    /// saved what it would have cost; a failed one costs nothing. Unpriced
    /// models cost nothing.
    pub fn cost(&self, provider: &str, model: &str, usage: &Usage, failed: bool) -> (Nano, Nano) {
        let Some(price) = self.prices.price(provider, model) else {
            return (0, 0);
        };
        if failed {
            return (0, 0);
        }
        let full = price.cost(TokenUse {
            input: u64::from(usage.prompt_tokens),
            cached_input: 0,
            output: u64::from(usage.completion_tokens),
        });
        if usage.cached { (0, full) } else { (full, 0) }
    }

    /// Prices `usage`, counts it in the metrics and the day's records, and
    /// settles the reservation; off the request path.
    pub async fn settle(&self, s: Settlement, usage: Usage) {
        let (cost, saved) = self.cost(&s.provider, &s.model, &usage, s.failed);
        if cost > 0 {
            self.metrics
                .spend()
                .spent(&s.tenant, &s.provider, &s.model, usd_of_nano(cost));
        }
        if saved > 0 {
            self.metrics
                .spend()
                .saved(&s.tenant, &s.provider, &s.model, usd_of_nano(saved));
        }
        let record = (!s.failed).then(|| {
            let (input, output) = if usage.cached {
                (0, 0)
            } else {
                (
                    u64::from(usage.prompt_tokens),
                    u64::from(usage.completion_tokens),
                )
            };
            records::record(
                period::Date::today(),
                &records::SpendEvent {
                    tenant: &s.tenant,
                    key: s.key.as_deref(),
                    provider: &s.provider,
                    model: &s.model,
                    cost,
                    saved,
                    input_tokens: input,
                    output_tokens: output,
                },
            )
        });
        if let Err(e) = self.budgets.settle(s.reservation, cost, record).await {
            tracing::warn!(error = %e, "could not record spend");
        }
    }
}
