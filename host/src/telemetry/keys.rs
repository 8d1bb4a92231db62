//! Series of virtual keys, upstream key quotas and budget slices:
//! `sluice_virtual_key_auth_total{outcome}`, `sluice_virtual_keys` and
//! `sluice_virtual_key_unknown_cached` (this node's key table and its
//! remembered unknown secrets), `sluice_upstream_key_quota_exhaustions_total
//! {provider}`, `sluice_upstream_key_quota_headroom_ratio{provider,key,window}`
//! and the `sluice_budget_slice_*` series (see `state::budget_leases`).
//!
//! Provider labels are config names (others `_other`); the `key` label is
//! the key's index in the provider's `keys` (never the secret), `window` one
//! of `rpm`, `rph`, `rpd`, `tpm`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::labels::KeyAuthOutcome;
use super::metrics::OTHER_LABEL;
use crate::state::BudgetSliceStats;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AuthLabels {
    outcome: KeyAuthOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HeadroomLabels {
    provider: String,
    key: String,
    window: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DecidedLabels {
    decided: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

/// Windows of an upstream key quota, the `window` label's values.
const WINDOWS: [&str; 4] = ["rpm", "rph", "rpd", "tpm"];

/// The registered series.
#[derive(Debug)]
pub struct KeyMetrics {
    auth: Family<AuthLabels, Counter>,
    keys: Gauge,
    unknown: Gauge,
    exhaustions: Family<ProviderLabels, Counter>,
    headroom: Family<HeadroomLabels, Gauge<f64, AtomicU64>>,
    slice_reserves: Family<DecidedLabels, Counter>,
    slice_nano: Family<EventLabels, Counter>,
    slice_held: Gauge,
    slice_retries: Family<EventLabels, Counter>,
    providers: HashSet<String>,
}

impl KeyMetrics {
    pub(super) fn register<'a>(
        registry: &mut Registry,
        providers: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let auth = Family::<AuthLabels, Counter>::default();
        registry.register(
            "virtual_key_auth",
            "Authentications with a run-time virtual key's secret, by outcome (ok, unknown, refused: 401, error: 503)",
            auth.clone(),
        );
        let keys = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "virtual_keys",
            "Run-time virtual keys in this node's table (its key cache)",
            keys.clone(),
        );
        let unknown = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "virtual_key_unknown_cached",
            "Unknown secrets this node remembers as unknown (no state read until they expire)",
            unknown.clone(),
        );
        let exhaustions = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "upstream_key_quota_exhaustions",
            "Upstream keys found without quota headroom (the pool moved on to another key), by provider",
            exhaustions.clone(),
        );
        let headroom = Family::<HeadroomLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "upstream_key_quota_headroom_ratio",
            "What an upstream key's quota window had left at its last charge, as a fraction of the limit",
            headroom.clone(),
        );
        let slice_reserves = Family::<DecidedLabels, Counter>::default();
        registry.register(
            "budget_slice_reserves",
            "Budget reservations on a shared state, by where they were decided (slice: on this node; redis: a round trip)",
            slice_reserves.clone(),
        );
        let slice_nano = Family::<EventLabels, Counter>::default();
        registry.register(
            "budget_slice_nano_usd",
            "Nano-USD of budget slices granted to this node, and unused ones it gave back",
            slice_nano.clone(),
        );
        let slice_held = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "budget_slice_nano_usd_held",
            "Nano-USD this node holds in budget slices now",
            slice_held.clone(),
        );
        let slice_retries = Family::<EventLabels, Counter>::default();
        registry.register(
            "budget_slice_retries",
            "Budget reservations refused at first that waited for other nodes' slices and tried again, by result",
            slice_retries.clone(),
        );
        Self {
            auth,
            keys,
            unknown,
            exhaustions,
            headroom,
            slice_reserves,
            slice_nano,
            slice_held,
            slice_retries,
            providers: providers.into_iter().map(str::to_owned).collect(),
        }
    }

    fn provider(&self, provider: &str) -> String {
        if self.providers.contains(provider) {
            provider.to_owned()
        } else {
            OTHER_LABEL.to_owned()
        }
    }

    /// One virtual-key authentication ended with `outcome`.
    pub fn auth(&self, outcome: KeyAuthOutcome) {
        self.auth.get_or_create(&AuthLabels { outcome }).inc();
    }

    /// The sizes of this node's key table and unknown-secret cache.
    pub fn key_cache(&self, keys: usize, unknown: usize) {
        self.keys.set(keys as i64);
        self.unknown.set(unknown as i64);
    }

    /// Key `index` of `provider` had no headroom.
    pub fn quota_exhausted(&self, provider: &str) {
        self.exhaustions
            .get_or_create(&ProviderLabels {
                provider: self.provider(provider),
            })
            .inc();
    }

    /// Key `index` of `provider`'s window `window` had `remaining` of
    /// `limit` left after a charge.
    pub fn quota_headroom(
        &self,
        provider: &str,
        index: usize,
        window: &str,
        remaining: u64,
        limit: u64,
    ) {
        let Some(window) = WINDOWS.iter().find(|w| **w == window) else {
            return;
        };
        if limit == 0 || index >= 1024 {
            return;
        }
        self.headroom
            .get_or_create(&HeadroomLabels {
                provider: self.provider(provider),
                key: index.to_string(),
                window: (*window).to_owned(),
            })
            .set((remaining as f64 / limit as f64).min(1.0));
    }

    /// Copies the state's budget slice counters in (at scrape time).
    pub(super) fn sync_slices(&self, s: &BudgetSliceStats) {
        let raise = |c: &Counter, v: u64| {
            c.inner().fetch_max(v, Ordering::Relaxed);
        };
        let decided = |d| DecidedLabels { decided: d };
        let event = |e| EventLabels { event: e };
        raise(
            &self.slice_reserves.get_or_create(&decided("slice")),
            s.local_reserves,
        );
        raise(
            &self.slice_reserves.get_or_create(&decided("redis")),
            s.remote_reserves,
        );
        raise(
            &self.slice_nano.get_or_create(&event("granted")),
            s.nano_granted,
        );
        raise(
            &self.slice_nano.get_or_create(&event("returned")),
            s.nano_returned,
        );
        self.slice_held.set(s.nano_held as i64);
        raise(
            &self.slice_retries.get_or_create(&event("admitted")),
            s.retries_admitted,
        );
        raise(
            &self.slice_retries.get_or_create(&event("refused")),
            s.retries.saturating_sub(s.retries_admitted),
        );
    }
}
