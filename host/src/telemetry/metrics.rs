//! [`Metrics`]: the gateway's Prometheus registry, with one typed handle per
//! series the hot path records into.
//!
//! Label values come from small enums or from names in the config
//! (providers, tenants); a name the registry was not built with is recorded
//! under `_other`, so no input can grow the number of series. Per-provider,
//! per-tenant, per-slot and per-outcome series are created up front (they
//! show as 0 before the first event); recording into them is an atomic add
//! after at most one hash-map lookup by `&str`, with no allocation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::labels::{
    ApiRoute, CacheOutcome, CircuitState, PluginCallResult, TokenKind, UpstreamOutcome,
};
use super::plugin_metrics::{PluginMetrics, Record};
use crate::policy::{ANONYMOUS_TENANT, Slot, SlotMap};

/// Content type of [`Metrics::encode`]'s output: OpenMetrics text, which
/// Prometheus asks for first and scrapes natively. Serve `/metrics` with it:
/// under the older `text/plain; version=0.0.4` a scraper still reads every
/// sample, but sees counters as untyped (their `# TYPE` line names the family
/// without `_total`).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label value for a provider or tenant name the registry does not know.
pub const OTHER_LABEL: &str = "_other";

/// End-to-end request latency buckets (seconds): 5 ms to 2 min.
const REQUEST_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Plugin call latency buckets (seconds): 50 µs to 100 ms; the default
/// deadline is 20 ms.
const PLUGIN_BUCKETS: [f64; 11] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1,
];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: ApiRoute,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    route: ApiRoute,
    origin: crate::error::Origin,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: ApiRoute,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: CacheOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TokenLabels {
    tenant: String,
    kind: TokenKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AttemptLabels {
    provider: String,
    outcome: UpstreamOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransitionLabels {
    provider: String,
    to: CircuitState,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SlotLabels {
    slot: Slot,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PluginCallLabels {
    slot: Slot,
    result: PluginCallResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Handles for one provider's series.
#[derive(Debug)]
struct ProviderSeries {
    attempts: Vec<Counter>,
    retries: Counter,
    budget_exhausted: Counter,
    duration: Histogram,
    circuit_state: Gauge,
    /// Indexed by [`CircuitState::index`].
    circuit_transitions: Vec<Counter>,
    circuit_refusals: Counter,
    stream_failures: Counter,
}

/// Handles for one tenant's series.
#[derive(Debug)]
struct TenantSeries {
    throttle_rejects: Counter,
    tokens: [Counter; 2],
}

/// The gateway's metrics. Build one per process (usually from the config),
/// share it as `Arc<Metrics>`, scrape with [`Metrics::encode`].
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Vec<Histogram>,
    request_errors: Family<ErrorLabels, Counter>,
    cache_outcomes: Vec<Counter>,
    tenants: HashMap<Box<str>, TenantSeries>,
    other_tenant: TenantSeries,
    providers: HashMap<Box<str>, ProviderSeries>,
    other_provider: ProviderSeries,
    plugin_calls: SlotMap<Vec<Counter>>,
    plugin_duration: SlotMap<Histogram>,
    plugin_dropped: SlotMap<Counter>,
    plugin_custom: Arc<PluginMetrics>,
    state_fallbacks: Counter,
    state_degraded: Gauge,
    edge: super::edge::EdgeMetrics,
    connections: super::connections::ConnectionMetrics,
    coalesced: Counter,
    semantic: SemanticSeries,
    spend: super::spend::SpendMetrics,
    keys: super::keys::KeyMetrics,
    /// Asynchronous jobs and webhooks.
    pub jobs: super::jobs::JobMetrics,
}

/// The semantic cache's series (hits are a [`CacheOutcome`]).
#[derive(Debug)]
struct SemanticSeries {
    near_misses: Counter,
    contradictions: Counter,
    distrusted: Counter,
    embed_duration: HistogramFamily<Vec<(String, String)>>,
    index_entries: Gauge,
    index_namespaces: Gauge,
    index_bytes: Gauge,
}

impl SemanticSeries {
    fn register(registry: &mut Registry) -> Self {
        let near_misses = Counter::default();
        registry.register(
            "semantic_near_misses",
            "Semantic lookups whose best candidate scored just under the threshold",
            near_misses.clone(),
        );
        let contradictions = Counter::default();
        registry.register(
            "semantic_contradictions",
            "Semantic hits a client contradicted (feedback header or re-ask); each raises its entry's required score",
            contradictions.clone(),
        );
        let distrusted = Counter::default();
        registry.register(
            "semantic_distrusted",
            "Semantic candidates refused because their entry, once contradicted, requires a higher score",
            distrusted.clone(),
        );
        let embed_duration: HistogramFamily<Vec<(String, String)>> =
            Family::new_with_constructor(|| Histogram::new(PLUGIN_BUCKETS));
        registry.register_with_unit(
            "semantic_embed_duration",
            "Time to embed one prompt, by embedder (openai, local)",
            Unit::Seconds,
            embed_duration.clone(),
        );
        // Totals, not per namespace: namespaces come and go with clients'
        // prompts, and a series each would grow without bound.
        let index_entries = Gauge::default();
        registry.register(
            "semantic_index_entries",
            "Live entries of the semantic index on this node, over all namespaces",
            index_entries.clone(),
        );
        let index_namespaces = Gauge::default();
        registry.register(
            "semantic_index_namespaces",
            "Semantic index namespaces this node keeps in memory",
            index_namespaces.clone(),
        );
        let index_bytes = Gauge::default();
        registry.register_with_unit(
            "semantic_index",
            "Memory this node holds for the semantic index ([semantic] max_bytes bounds it)",
            Unit::Bytes,
            index_bytes.clone(),
        );
        Self {
            near_misses,
            contradictions,
            distrusted,
            embed_duration,
            index_entries,
            index_namespaces,
            index_bytes,
        }
    }
}

impl Default for Metrics {
    /// A registry with no providers and no configured tenants (only
    /// `anonymous`); handy in tests.
    fn default() -> Self {
        Self::new(std::iter::empty(), std::iter::empty())
    }
}

impl Metrics {
    /// A registry for these provider and tenant names (`anonymous` is
    /// always added to the tenants).
    pub fn new<'a>(
        providers: impl IntoIterator<Item = &'a str>,
        tenants: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut registry = Registry::with_prefix("sluice");

        // A gauge rather than an OpenMetrics `info`: the classic Prometheus
        // text parser rejects `# TYPE … info`, and some scrapers still ask
        // for that format.
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "build_info",
            "The running sluice version (always 1)",
            build_info,
        );

        // === requests and cache ===
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Client requests answered, by route and HTTP status",
            requests.clone(),
        );
        let request_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "request_errors",
            "Requests answered with an error, by route and who caused it (downstream: the client; upstream: the provider; internal: sluice)",
            request_errors.clone(),
        );
        let request_duration_family: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(|| Histogram::new(REQUEST_BUCKETS));
        registry.register_with_unit(
            "request_duration",
            "Time from request received to response headers sent, by route",
            Unit::Seconds,
            request_duration_family.clone(),
        );
        let request_duration = ApiRoute::ALL
            .iter()
            .map(|&route| request_duration_family.get_or_create_owned(&RouteLabels { route }))
            .collect();

        let cache_family = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "cache_outcomes",
            "Cache answers: hit, semantic-hit, miss, bypass",
            cache_family.clone(),
        );
        let cache_outcomes = CacheOutcome::ALL
            .iter()
            .map(|&outcome| cache_family.get_or_create_owned(&OutcomeLabels { outcome }))
            .collect();

        // === tenants ===
        let rejects = Family::<TenantLabels, Counter>::default();
        registry.register(
            "throttle_rejects",
            "Requests refused by the throttle, by tenant",
            rejects.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokens",
            "Upstream tokens used, by tenant and kind (prompt, completion)",
            tokens.clone(),
        );
        let tenant_series = |name: &str| TenantSeries {
            throttle_rejects: rejects.get_or_create_owned(&TenantLabels {
                tenant: name.to_owned(),
            }),
            tokens: [TokenKind::Prompt, TokenKind::Completion].map(|kind| {
                tokens.get_or_create_owned(&TokenLabels {
                    tenant: name.to_owned(),
                    kind,
                })
            }),
        };
        let mut tenant_map: HashMap<Box<str>, TenantSeries> = tenants
            .into_iter()
            .map(|name| (name.into(), tenant_series(name)))
            .collect();
        tenant_map.insert(ANONYMOUS_TENANT.into(), tenant_series(ANONYMOUS_TENANT));
        let other_tenant = tenant_series(OTHER_LABEL);

        // === providers ===
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "upstream_attempts",
            "Upstream attempts, by provider and outcome",
            attempts.clone(),
        );
        let retries = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "retries",
            "Retries (and fallbacks) started, by the provider that failed",
            retries.clone(),
        );
        let exhausted = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "retry_budget_exhausted",
            "Retries the plugin asked for but the retry budget refused, by provider",
            exhausted.clone(),
        );
        let upstream_duration: HistogramFamily<ProviderLabels> =
            Family::new_with_constructor(|| Histogram::new(REQUEST_BUCKETS));
        registry.register_with_unit(
            "upstream_duration",
            "Duration of one upstream attempt, by provider",
            Unit::Seconds,
            upstream_duration.clone(),
        );
        let circuit_state = Family::<ProviderLabels, Gauge>::default();
        registry.register(
            "circuit_state",
            "Circuit breaker state, by provider: 0 closed, 1 open, 2 half-open",
            circuit_state.clone(),
        );
        let circuit_transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "circuit_transitions",
            "Circuit breaker state changes, by provider and the state entered (to)",
            circuit_transitions.clone(),
        );
        let circuit_refusals = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "circuit_refusals",
            "Attempts an open circuit breaker refused without sending them (not counted in upstream_attempts), by provider",
            circuit_refusals.clone(),
        );
        let stream_failures = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "stream_failures",
            "Streams that failed after their first content event and were ended with an error event, by provider",
            stream_failures.clone(),
        );
        let provider_series = |name: &str| {
            let labels = ProviderLabels {
                provider: name.to_owned(),
            };
            ProviderSeries {
                attempts: UpstreamOutcome::ALL
                    .iter()
                    .map(|&outcome| {
                        attempts.get_or_create_owned(&AttemptLabels {
                            provider: name.to_owned(),
                            outcome,
                        })
                    })
                    .collect(),
                retries: retries.get_or_create_owned(&labels),
                budget_exhausted: exhausted.get_or_create_owned(&labels),
                duration: upstream_duration.get_or_create_owned(&labels),
                circuit_state: circuit_state.get_or_create_owned(&labels),
                circuit_transitions: CircuitState::ALL
                    .iter()
                    .map(|&to| {
                        circuit_transitions.get_or_create_owned(&TransitionLabels {
                            provider: name.to_owned(),
                            to,
                        })
                    })
                    .collect(),
                circuit_refusals: circuit_refusals.get_or_create_owned(&labels),
                stream_failures: stream_failures.get_or_create_owned(&labels),
            }
        };
        let provider_map: HashMap<Box<str>, ProviderSeries> = providers
            .into_iter()
            .map(|name| (name.into(), provider_series(name)))
            .collect();
        let other_provider = provider_series(OTHER_LABEL);

        // === plugins ===
        let calls = Family::<PluginCallLabels, Counter>::default();
        registry.register(
            "plugin_calls",
            "Plugin calls, by slot and result (ok, trap, timeout, oom, error)",
            calls.clone(),
        );
        let plugin_calls = SlotMap::from_fn(|slot| {
            PluginCallResult::ALL
                .iter()
                .map(|&result| calls.get_or_create_owned(&PluginCallLabels { slot, result }))
                .collect()
        });
        let call_duration: HistogramFamily<SlotLabels> =
            Family::new_with_constructor(|| Histogram::new(PLUGIN_BUCKETS));
        registry.register_with_unit(
            "plugin_call_duration",
            "Duration of one plugin call, by slot",
            Unit::Seconds,
            call_duration.clone(),
        );
        let plugin_duration =
            SlotMap::from_fn(|slot| call_duration.get_or_create_owned(&SlotLabels { slot }));
        let dropped = Family::<SlotLabels, Counter>::default();
        registry.register(
            "plugin_metrics_dropped",
            "Custom plugin metric records refused (bad or reserved name, kind change, too many names, non-finite value)",
            dropped.clone(),
        );
        let plugin_dropped =
            SlotMap::from_fn(|slot| dropped.get_or_create_owned(&SlotLabels { slot }));
        let plugin_custom = Arc::new(PluginMetrics::default());
        registry.register_collector(Box::new(plugin_custom.clone()));

        // === state and coalescing ===
        let state_fallbacks = Counter::default();
        registry.register(
            "state_fallbacks",
            "State operations served by the local fallback because the shared store failed",
            state_fallbacks.clone(),
        );
        let state_degraded = Gauge::default();
        registry.register(
            "state_degraded",
            "1 while the shared state store is unreachable, else 0",
            state_degraded.clone(),
        );
        let edge = super::edge::EdgeMetrics::register(&mut registry);
        let connections = super::connections::ConnectionMetrics::register(&mut registry);
        let coalesced = Counter::default();
        registry.register(
            "coalesced_requests",
            "Requests answered by joining an identical request already in flight",
            coalesced.clone(),
        );
        let semantic = SemanticSeries::register(&mut registry);
        let spend = super::spend::SpendMetrics::register(
            &mut registry,
            provider_map.keys().map(|k| &**k),
            tenant_map.keys().map(|k| &**k),
        );
        let keys =
            super::keys::KeyMetrics::register(&mut registry, provider_map.keys().map(|k| &**k));
        let jobs = super::jobs::JobMetrics::register(&mut registry);

        Self {
            jobs,
            registry,
            requests,
            request_duration,
            request_errors,
            cache_outcomes,
            tenants: tenant_map,
            other_tenant,
            providers: provider_map,
            other_provider,
            plugin_calls,
            plugin_duration,
            plugin_dropped,
            plugin_custom,
            state_fallbacks,
            edge,
            connections,
            state_degraded,
            coalesced,
            semantic,
            spend,
            keys,
        }
    }

    /// The virtual-key, upstream key quota and budget slice series.
    pub fn keys(&self) -> &super::keys::KeyMetrics {
        &self.keys
    }

    /// Copies a shared state's budget slice counters in (at scrape time).
    pub fn sync_budget_slices(&self, stats: &crate::state::BudgetSliceStats) {
        self.keys.sync_slices(stats);
    }

    /// The spend, budget and alert series.
    pub fn spend(&self) -> &super::spend::SpendMetrics {
        &self.spend
    }

    /// The whole registry in OpenMetrics text (serve with [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing to a String cannot fail; keep whatever was written.
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }

    // === requests and cache ===

    /// One client request answered with `status` after `took`.
    pub fn request(&self, route: ApiRoute, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        if let Some(h) = self.request_duration.get(route.index()) {
            h.observe(took.as_secs_f64());
        }
    }

    /// A request answered with an error that `origin` caused.
    pub fn request_error(&self, route: ApiRoute, origin: crate::error::Origin) {
        self.request_errors
            .get_or_create(&ErrorLabels { route, origin })
            .inc();
    }

    /// How the cache answered one request.
    pub fn cache_outcome(&self, outcome: CacheOutcome) {
        if let Some(c) = self.cache_outcomes.get(outcome.index()) {
            c.inc();
        }
    }

    /// One request coalesced onto an identical one in flight.
    pub fn coalesced(&self) {
        self.coalesced.inc();
    }

    // === semantic cache ===

    /// A semantic lookup's best score fell just under the threshold.
    pub fn semantic_near_miss(&self) {
        self.semantic.near_misses.inc();
    }

    /// A client contradicted a semantic hit.
    pub fn semantic_contradiction(&self) {
        self.semantic.contradictions.inc();
    }

    /// A semantic candidate refused by its entry's learned requirement.
    pub fn semantic_distrusted(&self) {
        self.semantic.distrusted.inc();
    }

    /// One prompt embedded by `embedder` in `took`.
    pub fn semantic_embed(&self, embedder: &str, took: Duration) {
        self.semantic
            .embed_duration
            .get_or_create(&vec![("embedder".to_owned(), embedder.to_owned())])
            .observe(took.as_secs_f64());
    }

    /// The semantic index now holds `entries` live entries in `namespaces`
    /// namespaces, and `bytes` of memory, on this node.
    pub fn semantic_index(&self, entries: usize, namespaces: usize, bytes: usize) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let s = &self.semantic;
        s.index_entries.set(gauge(entries));
        s.index_namespaces.set(gauge(namespaces));
        s.index_bytes.set(gauge(bytes));
    }

    // === tenants ===

    fn tenant(&self, tenant: &str) -> &TenantSeries {
        self.tenants.get(tenant).unwrap_or(&self.other_tenant)
    }

    /// The throttle refused a request of `tenant`.
    pub fn throttle_reject(&self, tenant: &str) {
        self.tenant(tenant).throttle_rejects.inc();
    }

    /// Upstream tokens spent for `tenant`.
    pub fn tokens(&self, tenant: &str, prompt: u64, completion: u64) {
        let series = self.tenant(tenant);
        series.tokens[TokenKind::Prompt.index()].inc_by(prompt);
        series.tokens[TokenKind::Completion.index()].inc_by(completion);
    }

    // === providers ===

    fn provider(&self, provider: &str) -> &ProviderSeries {
        self.providers.get(provider).unwrap_or(&self.other_provider)
    }

    /// One upstream attempt against `provider` ended with `outcome` after
    /// `took`.
    pub fn upstream_attempt(&self, provider: &str, outcome: UpstreamOutcome, took: Duration) {
        let series = self.provider(provider);
        if let Some(c) = series.attempts.get(outcome.index()) {
            c.inc();
        }
        series.duration.observe(took.as_secs_f64());
    }

    /// A retry (or fallback) after a failed attempt against `provider`.
    pub fn retry(&self, provider: &str) {
        self.provider(provider).retries.inc();
    }

    /// The retry budget of `provider` refused a retry.
    pub fn retry_budget_exhausted(&self, provider: &str) {
        self.provider(provider).budget_exhausted.inc();
    }

    /// `provider`'s circuit breaker entered `to`.
    pub fn circuit_transition(&self, provider: &str, to: CircuitState) {
        let series = self.provider(provider);
        series.circuit_state.set(to.index() as i64);
        if let Some(c) = series.circuit_transitions.get(to.index()) {
            c.inc();
        }
    }

    /// `provider`'s open circuit breaker refused an attempt (nothing sent).
    pub fn circuit_refusal(&self, provider: &str) {
        self.provider(provider).circuit_refusals.inc();
    }

    /// `provider`'s stream broke (or ended without its terminator) after
    /// the client had its first event; the client got an error event.
    pub fn stream_failure(&self, provider: &str) {
        self.provider(provider).stream_failures.inc();
    }

    // === state ===

    /// A state operation fell back to the local store.
    pub fn state_fallback(&self) {
        self.state_fallbacks.inc();
    }

    /// Raises the fallback counter to `total`, the state's own count (read
    /// at scrape time, so the state needs no handle on the metrics).
    pub fn sync_state_fallbacks(&self, total: u64) {
        // fetch_max: concurrent scrapes never count a fallback twice.
        self.state_fallbacks
            .inner()
            .fetch_max(total, std::sync::atomic::Ordering::Relaxed);
    }

    /// Copies a shared state's lease and settle counters in (at scrape time).
    pub fn sync_edge(&self, stats: &crate::state::EdgeStats) {
        self.edge.sync(stats);
    }

    /// Copies the API and admin listeners' connection counters in (at
    /// scrape time).
    pub fn sync_connections(&self, api: &super::ConnectionCounts, admin: &super::ConnectionCounts) {
        self.connections.sync("api", api);
        self.connections.sync("admin", admin);
    }

    /// One request made `round_trips` Redis round trips on its path.
    pub fn round_trips(&self, outcome: CacheOutcome, round_trips: u32) {
        self.edge.round_trips(outcome, round_trips);
    }

    /// Whether the shared store is currently unreachable.
    pub fn set_state_degraded(&self, degraded: bool) {
        self.state_degraded.set(i64::from(degraded));
    }

    // === plugins ===

    /// One plugin call in `slot` ended with `result` (`"ok"`, `"trap"`, …
    /// as [`PluginCallResult`] spells them) after `took`. Unknown results
    /// count as `error`.
    pub fn plugin_call(&self, slot: Slot, result: &str, took: Duration) {
        let result = PluginCallResult::parse(result).unwrap_or(PluginCallResult::Error);
        if let Some(c) = self.plugin_calls[slot].get(result.index()) {
            c.inc();
        }
        self.plugin_duration[slot].observe(took.as_secs_f64());
    }

    /// A plugin's `counter-add(name, value)`.
    pub fn plugin_counter_add(&self, slot: Slot, name: &str, value: u64) {
        self.plugin_record(slot, name, Record::CounterAdd(value));
    }

    /// A plugin's `gauge-set(name, value)`.
    pub fn plugin_gauge_set(&self, slot: Slot, name: &str, value: f64) {
        self.plugin_record(slot, name, Record::GaugeSet(value));
    }

    /// A plugin's `histogram-observe(name, value)`.
    pub fn plugin_histogram_observe(&self, slot: Slot, name: &str, value: f64) {
        self.plugin_record(slot, name, Record::HistogramObserve(value));
    }

    fn plugin_record(&self, slot: Slot, name: &str, record: Record) {
        if let Err(refusal) = self.plugin_custom.record(slot, name, record) {
            self.plugin_dropped[slot].inc();
            // Debug level: a looping plugin could otherwise flood the log.
            tracing::debug!(%slot, name, ?refusal, "custom plugin metric dropped");
        }
    }
}
