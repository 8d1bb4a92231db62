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
use crate::config::{BudgetUsd, Config};
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
        // The series alert rules watch exist from the start, at 0.
        for threshold in crate::alerts::THRESHOLDS {
            metrics.spend().expect_alert("budget", threshold);
        }
        for tenant in &config.tenants {
            let Some(limits) = tenant.budget_usd.as_ref().map(BudgetLimits::from_usd) else {
                continue;
            };
            for period in Period::ALL {
                if limits.get(period).is_some() {
                    metrics
                        .spend()
                        .expect_refusals(&tenant.name, period.as_str());
                }
            }
        }
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
        SubjectBudget::capping(BudgetSubject::Tenant(tenant.to_owned()), b)
    }

    /// The budget of the run-time virtual key `id`, if it caps anything.
    pub fn key_budget(id: &str, b: &BudgetUsd) -> Option<SubjectBudget> {
        SubjectBudget::capping(BudgetSubject::Key(id.to_owned()), b)
    }

    /// `(cost, saved)` of an answer whose prompt the provider read
    /// `cached_prompt` tokens of from its prompt cache: a cache hit of
    /// sluice's cost nothing upstream and saved what it would have cost; a
    /// failed one costs nothing. Unpriced models cost nothing.
    pub fn cost(
        &self,
        provider: &str,
        model: &str,
        usage: &Usage,
        cached_prompt: u32,
        failed: bool,
    ) -> (Nano, Nano) {
        let Some(price) = self.prices.price(provider, model) else {
            return (0, 0);
        };
        if failed {
            return (0, 0);
        }
        let cached = cached_prompt.min(usage.prompt_tokens);
        let full = price.cost(TokenUse {
            input: u64::from(usage.prompt_tokens - cached),
            cached_input: u64::from(cached),
            output: u64::from(usage.completion_tokens),
        });
        if usage.cached { (0, full) } else { (full, 0) }
    }

    /// Prices `usage`, counts it in the metrics and the day's records, and
    /// settles the reservation; off the request path.
    pub async fn settle(&self, s: Settlement, usage: Usage, cached_prompt: u32) {
        let (cost, saved) = self.cost(&s.provider, &s.model, &usage, cached_prompt, s.failed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{SseParser, StreamAccumulator, usage_from_json};
    use crate::policy::{Route, TokenCount};

    #[test]
    fn prompt_cache_reads_are_priced_at_the_cached_price() {
        let openai = br#"{"usage":{"prompt_tokens":1000,"completion_tokens":10,
            "prompt_tokens_details":{"cached_tokens":800}}}"#;
        let t = usage_from_json(Route::Chat, openai).unwrap();
        assert_eq!((t.prompt, t.cached_prompt), (1000, 800));
        // Anthropic's input_tokens leaves cache reads and writes out.
        let anthropic = br#"{"usage":{"input_tokens":100,"output_tokens":10,
            "cache_read_input_tokens":800,"cache_creation_input_tokens":50}}"#;
        let t = usage_from_json(Route::AnthropicMessages, anthropic).unwrap();
        assert_eq!((t.prompt, t.cached_prompt), (950, 800));
        let mut acc = StreamAccumulator::new(Route::AnthropicMessages);
        let events = SseParser::new().feed(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":100,\"cache_read_input_tokens\":800,\"cache_creation_input_tokens\":50,\"output_tokens\":1}}}\n\n\
              event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":100,\"output_tokens\":10}}\n\n",
        );
        for e in &events {
            acc.observe(e);
        }
        assert_eq!(
            acc.usage(0),
            TokenCount {
                cached_prompt: 800,
                ..TokenCount::new(950, 10)
            }
        );

        let spend = Spend::new(
            &Config::default(),
            State::memory(),
            Arc::new(Metrics::default()),
        )
        .unwrap();
        let usage = Usage::of(TokenCount::new(1000, 10), 0, false);
        // gpt-4o-mini: 200 × $0.15/M + 800 × $0.075/M + 10 × $0.60/M.
        let (cost, saved) = spend.cost("openai", "gpt-4o-mini", &usage, 800, false);
        assert_eq!((cost, saved), (30_000 + 60_000 + 6_000, 0));
        let hit = Usage {
            cached: true,
            ..usage
        };
        assert_eq!(
            spend.cost("openai", "gpt-4o-mini", &hit, 800, false),
            (0, 96_000)
        );
        assert_eq!(spend.cost("openai", "gpt-4o-mini", &usage, 0, true), (0, 0));
        assert_eq!(spend.cost("openai", "unknown", &usage, 0, false), (0, 0));
    }
}
