//! [`Gateway`]: everything a request needs, built once from the config and
//! shared by every connection.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::cache::coalesce::{Coalescer, LOCK_TTL, SharedCoalescer};
use crate::cache::{Answer, CacheKey, CacheLimits, ExactCache};
use crate::config::Config;
use crate::keys::VirtualKeys;
use crate::plugin::{self, EngineSettings, PluginRuntime};
use crate::semantic::SemanticCache;
use crate::state::State;
use crate::telemetry::Metrics;
use crate::upstream::{BudgetSettings, RetryBudget, UpstreamSettings, Upstreams};
use crate::versions::{self, PluginVersions};

/// Shared per-process gateway state.
pub struct Gateway {
    pub config: Arc<Config>,
    pub state: State,
    /// The plugin serving each slot, and how new versions arrive.
    pub plugins: Arc<PluginVersions>,
    pub cache: ExactCache,
    /// The semantic cache, built on first use (a local embedder loads its
    /// model then); `None` inside when `[semantic]` is off or failed to load.
    pub semantic: tokio::sync::OnceCell<Option<Arc<SemanticCache>>>,
    pub coalescer: Coalescer<CacheKey, Answer>,
    /// Coalescing across nodes; only when the state is shared and
    /// `[cache] coalesce_across_nodes` is on.
    pub shared_coalescer: Option<SharedCoalescer>,
    pub upstreams: Upstreams,
    pub retry_budget: RetryBudget,
    pub metrics: Arc<Metrics>,
    /// What the API and admin listeners count about their connections.
    pub connections: crate::listener::ListenerStats,
    /// Prices, budgets and spend records.
    pub spend: crate::spend::Spend,
    /// Virtual keys made at run time (`/admin/keys`), this node's table.
    pub keys: Arc<VirtualKeys>,
    /// The job queue, when `[jobs]` is enabled (workers start with
    /// [`crate::job_runner::spawn_workers`]).
    pub jobs: Option<Arc<crate::jobs::Jobs>>,
    /// OTLP traces (`[telemetry.otlp]`); off by default.
    pub traces: crate::telemetry::Traces,
}

impl Gateway {
    /// Connects the state backend, loads every plugin (and the fleet's
    /// current releases) and builds the upstream clients. Any failure here
    /// is a startup error naming its cause. Watchers for new plugin versions
    /// are started by the caller ([`versions::spawn_watchers`]).
    pub async fn build(config: Config) -> anyhow::Result<Arc<Gateway>> {
        let metrics = Arc::new(config.metrics());
        let traces = crate::telemetry::Traces::from_config(&config.telemetry.otlp)
            .context("telemetry.otlp")?;
        let state = State::connect(&config.state)
            .await
            .context("state backend")?;
        let runtime = PluginRuntime::new(
            EngineSettings::default(),
            state.clone(),
            Some(metrics.clone() as Arc<dyn plugin::PluginMetrics>),
        )?;
        let plugins =
            Arc::new(PluginVersions::load(runtime, state.clone(), &config.plugins).await?);
        // A node that starts after a fleet release serves it from the start.
        versions::releases::sync(&plugins).await;
        // The shared tier only makes sense when the state is shared.
        let shared = state.is_shared().then(|| state.clone());
        let cache = ExactCache::new(
            CacheLimits {
                max_bytes: config.cache.max_bytes as usize,
                max_entry_bytes: config.cache.max_entry_bytes as usize,
            },
            shared.clone(),
        );
        // A follower waits for a live leader at most half a request timeout,
        // keeping time for its own call.
        let max_wait = config.server.request_timeout() / 2;
        let shared_coalescer = (shared.is_some() && config.cache.coalesce_across_nodes)
            .then(|| SharedCoalescer::new(state.clone(), LOCK_TTL, max_wait));
        let upstreams = Upstreams::with_settings(
            &config.providers,
            UpstreamSettings {
                breaker: config.breaker.clone(),
                metrics: Some(metrics.clone()),
                state: Some(state.clone()),
                ..UpstreamSettings::default()
            },
        )
        .context("providers")?;
        let retry_budget = RetryBudget::new(BudgetSettings {
            ratio: config.retry.budget_ratio,
            min_per_sec: config.retry.budget_min_per_sec,
        });
        let spend =
            crate::spend::Spend::new(&config, state.clone(), metrics.clone()).context("prices")?;
        let config = Arc::new(config);
        let keys = VirtualKeys::new(state.clone(), config.clone());
        // A node that starts after keys were made knows them from the start;
        // if the state cannot say now, the sync task reads them later.
        if state.is_shared()
            && let Err(e) = keys.sync().await
        {
            tracing::warn!(error = %e, "virtual keys not loaded yet: will retry");
        }
        VirtualKeys::spawn_sync(&keys);
        let jobs = crate::jobs::Jobs::build(&config.jobs, &state, metrics.clone())
            .await
            .context("jobs")?;
        Ok(Arc::new(Gateway {
            spend,
            config,
            state,
            plugins,
            cache,
            semantic: tokio::sync::OnceCell::new(),
            coalescer: Coalescer::default(),
            shared_coalescer,
            upstreams,
            retry_budget,
            metrics,
            connections: Default::default(),
            keys,
            jobs,
            traces,
        }))
    }

    /// The semantic cache, built on first use; None when `[semantic]
    /// enabled = false` or the embedder could not be built (that is logged
    /// once and the gateway serves without it).
    pub async fn semantic_cache(&self) -> Option<Arc<SemanticCache>> {
        if !self.config.semantic.enabled {
            return None;
        }
        self.semantic
            .get_or_init(|| async {
                let config = self.config.clone();
                let upstreams = self.upstreams.clone();
                let state = self.state.clone();
                let metrics = Some(self.metrics.clone());
                let built = tokio::task::spawn_blocking(move || {
                    SemanticCache::from_config(&config, &upstreams, state, metrics)
                })
                .await;
                match built {
                    Ok(Ok(cache)) => Some(Arc::new(cache)),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "semantic cache disabled: the embedder failed to load");
                        None
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "semantic cache disabled: loading panicked");
                        None
                    }
                }
            })
            .await
            .clone()
    }

    /// The overall deadline of one request.
    pub fn request_timeout(&self) -> Duration {
        self.config.server.request_timeout()
    }
}
