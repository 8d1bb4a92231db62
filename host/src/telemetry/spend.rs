//! `sluice_spend_usd_total`, `sluice_saved_usd_total`,
//! `sluice_budget_refusals_total` and `sluice_alerts_total`.
//!
//! Tenant and provider labels are config names (others are `_other`, like
//! every per-tenant series); model labels are the first [`MAX_MODEL_LABELS`]
//! model names seen, then `_other`, so no client can grow the number of
//! series without bound.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::metrics::OTHER_LABEL;
use crate::policy::ANONYMOUS_TENANT;

/// Distinct model label values before the rest become `_other`.
pub const MAX_MODEL_LABELS: usize = 64;

type UsdCounter = Counter<f64, AtomicU64>;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SpendLabels {
    tenant: String,
    provider: String,
    model: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabels {
    tenant: String,
    period: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AlertLabels {
    kind: &'static str,
    threshold: u8,
}

/// The spend series and the names they may carry.
#[derive(Debug)]
pub struct SpendMetrics {
    spend: Family<SpendLabels, UsdCounter>,
    saved: Family<SpendLabels, UsdCounter>,
    refusals: Family<RefusalLabels, Counter>,
    alerts: Family<AlertLabels, Counter>,
    tenants: HashSet<String>,
    providers: HashSet<String>,
    models: Mutex<HashSet<String>>,
}

impl SpendMetrics {
    pub(super) fn register<'a>(
        registry: &mut Registry,
        providers: impl IntoIterator<Item = &'a str>,
        tenants: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let spend = Family::<SpendLabels, UsdCounter>::default();
        registry.register(
            "spend_usd",
            "Upstream spend in USD priced from actual usage, by tenant, provider and model",
            spend.clone(),
        );
        let saved = Family::<SpendLabels, UsdCounter>::default();
        registry.register(
            "saved_usd",
            "Spend in USD avoided by answering from a cache, by tenant, provider and model",
            saved.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "budget_refusals",
            "Requests refused because a budget could not cover their worst-case cost, by tenant and period",
            refusals.clone(),
        );
        let alerts = Family::<AlertLabels, Counter>::default();
        registry.register(
            "alerts",
            "Alerts raised (budget, quota), by kind and threshold percent",
            alerts.clone(),
        );
        let mut tenants: HashSet<String> = tenants.into_iter().map(str::to_owned).collect();
        tenants.insert(ANONYMOUS_TENANT.to_owned());
        Self {
            spend,
            saved,
            refusals,
            alerts,
            tenants,
            providers: providers.into_iter().map(str::to_owned).collect(),
            models: Mutex::new(HashSet::new()),
        }
    }

    fn labels(&self, tenant: &str, provider: &str, model: &str) -> SpendLabels {
        let known = |set: &HashSet<String>, v: &str| {
            if set.contains(v) {
                v.to_owned()
            } else {
                OTHER_LABEL.to_owned()
            }
        };
        let model = {
            let mut models = self.models.lock();
            if models.contains(model) || (models.len() < MAX_MODEL_LABELS && model.len() <= 128) {
                models.insert(model.to_owned());
                model.to_owned()
            } else {
                OTHER_LABEL.to_owned()
            }
        };
        SpendLabels {
            tenant: known(&self.tenants, tenant),
            provider: known(&self.providers, provider),
            model,
        }
    }

    /// `usd` spent upstream.
    pub fn spent(&self, tenant: &str, provider: &str, model: &str, usd: f64) {
        self.spend
            .get_or_create(&self.labels(tenant, provider, model))
            .inc_by(usd);
    }

    /// `usd` not spent thanks to a cache hit.
    pub fn saved(&self, tenant: &str, provider: &str, model: &str, usd: f64) {
        self.saved
            .get_or_create(&self.labels(tenant, provider, model))
            .inc_by(usd);
    }

    /// A budget of `tenant`'s request refused it.
    pub fn refused(&self, tenant: &str, period: &'static str) {
        let tenant = if self.tenants.contains(tenant) {
            tenant.to_owned()
        } else {
            OTHER_LABEL.to_owned()
        };
        self.refusals
            .get_or_create(&RefusalLabels { tenant, period })
            .inc();
    }

    /// Creates `tenant`'s refusal series of `period` at 0, so a first
    /// refusal is an increase to PromQL's `increase()` and `rate()` (a
    /// series that appears at 1 is not).
    pub fn expect_refusals(&self, tenant: &str, period: &'static str) {
        if self.tenants.contains(tenant) {
            let _ = self.refusals.get_or_create(&RefusalLabels {
                tenant: tenant.to_owned(),
                period,
            });
        }
    }

    /// Creates the alert series of `kind` at `threshold` at 0 (see
    /// [`SpendMetrics::expect_refusals`]).
    pub fn expect_alert(&self, kind: &'static str, threshold: u8) {
        let _ = self.alerts.get_or_create(&AlertLabels { kind, threshold });
    }

    /// An alert of `kind` at `threshold` percent.
    pub fn alert(&self, kind: &'static str, threshold: u8) {
        self.alerts
            .get_or_create(&AlertLabels { kind, threshold })
            .inc();
    }
}
