//! [`Gateway`]: everything a request needs, built once from the config and
//! shared by every connection.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::cache::{Answer, CacheKey, CacheLimits, ExactCache};
use crate::coalesce::Coalescer;
use crate::coalesce_shared::{LOCK_TTL, SharedCoalescer};
use crate::config::{Config, PluginLimits, PluginSlotConfig, PluginSource};
use crate::plugin::{
    self, EngineSettings, FailurePolicy, Kind, Limits, LoadOptions, PluginRuntime, PluginSlot,
};
use crate::reload::Reloader;
use crate::state::State;
use crate::telemetry::Metrics;
use crate::upstream::{BudgetSettings, RetryBudget, Upstreams};

/// The four policy slots.
pub struct Plugins {
    pub throttle: PluginSlot,
    pub cache_key: PluginSlot,
    pub semantic: PluginSlot,
    pub retry: PluginSlot,
}

impl Plugins {
    /// The slot serving `kind`.
    pub fn slot(&self, kind: Kind) -> &PluginSlot {
        match kind {
            Kind::Throttle => &self.throttle,
            Kind::CacheKey => &self.cache_key,
            Kind::Semantic => &self.semantic,
            Kind::Retry => &self.retry,
        }
    }
}

/// Shared per-process gateway state.
pub struct Gateway {
    pub config: Arc<Config>,
    pub state: State,
    pub runtime: PluginRuntime,
    pub plugins: Plugins,
    pub cache: ExactCache,
    pub coalescer: Coalescer<CacheKey, Answer>,
    /// Coalescing across nodes; only when the state is shared and
    /// `[cache] coalesce_across_nodes` is on.
    pub shared_coalescer: Option<SharedCoalescer>,
    pub upstreams: Upstreams,
    pub retry_budget: RetryBudget,
    pub metrics: Arc<Metrics>,
    /// Plugin versions at run time: hot reload, refusals, fleet releases.
    pub reload: Reloader,
}

impl Gateway {
    /// Connects the state backend, loads every plugin and builds the
    /// upstream clients. Any failure here is a startup error naming its cause.
    pub async fn build(config: Config) -> anyhow::Result<Arc<Gateway>> {
        let metrics = Arc::new(Metrics::from_config(&config));
        let state = State::connect(&config.state)
            .await
            .context("state backend")?;
        let runtime = PluginRuntime::new(
            EngineSettings::default(),
            state.clone(),
            Some(metrics.clone() as Arc<dyn plugin::PluginMetrics>),
        )?;
        let plugins = Plugins {
            throttle: load_slot(&runtime, Kind::Throttle, &config.plugins.throttle).await?,
            cache_key: load_slot(&runtime, Kind::CacheKey, &config.plugins.cache_key).await?,
            semantic: load_slot(&runtime, Kind::Semantic, &config.plugins.semantic).await?,
            retry: load_slot(&runtime, Kind::Retry, &config.plugins.retry).await?,
        };
        // The shared tier only makes sense when the state is shared.
        let shared = (state.health().backend != "memory").then(|| state.clone());
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
        let upstreams = Upstreams::new(&config.providers).context("providers")?;
        let retry_budget = RetryBudget::new(BudgetSettings {
            ratio: config.retry.budget_ratio,
            min_per_sec: config.retry.budget_min_per_sec,
        });
        let reload = Reloader::new(&config.plugins);
        let gw = Arc::new(Gateway {
            config: Arc::new(config),
            state,
            runtime,
            plugins,
            cache,
            coalescer: Coalescer::default(),
            shared_coalescer,
            upstreams,
            retry_budget,
            metrics,
            reload,
        });
        // A node that starts after a fleet release serves it from the start.
        crate::releases::sync(&gw).await;
        crate::reload::spawn_file_watcher(&gw);
        crate::releases::spawn_watcher(&gw);
        Ok(gw)
    }

    /// The overall deadline of one request.
    pub fn request_timeout(&self) -> Duration {
        self.config.server.request_timeout()
    }
}

/// The bytes a slot's config points at: the built-in plugin or a file.
pub fn plugin_bytes(kind: Kind, source: &PluginSource) -> anyhow::Result<Vec<u8>> {
    match source {
        PluginSource::Builtin => plugin::builtin::builtin(kind.slot())
            .map(<[u8]>::to_vec)
            .with_context(|| format!("no built-in plugin for slot {}", kind.slot())),
        PluginSource::Path(path) => {
            std::fs::read(path).with_context(|| format!("reading plugin {}", path.display()))
        }
    }
}

/// Sandbox limits from a slot's config.
pub fn slot_limits(cfg: &PluginSlotConfig) -> Limits {
    sandbox_limits(&cfg.limits)
}

/// The sandbox limits `[plugins.<slot>.limits]` describe.
pub fn sandbox_limits(limits: &PluginLimits) -> Limits {
    Limits {
        memory_bytes: (limits.memory_mib as usize) << 20,
        deadline: Duration::from_millis(limits.deadline_ms),
        max_answer_bytes: limits.max_return_bytes as usize,
    }
}

async fn load_slot(
    runtime: &PluginRuntime,
    kind: Kind,
    cfg: &PluginSlotConfig,
) -> anyhow::Result<PluginSlot> {
    let wasm = plugin_bytes(kind, &cfg.source)?;
    let opts = LoadOptions {
        slot: kind.slot().to_string(),
        require: vec![kind],
        config: cfg.config.clone(),
        limits: slot_limits(cfg),
    };
    let plugin = runtime
        .load(&wasm, opts)
        .await
        .with_context(|| format!("plugins.{}", kind.slot()))?;
    let failure = match cfg.failure {
        crate::config::FailurePolicy::FailOpen => FailurePolicy::FailOpen,
        crate::config::FailurePolicy::FailClosed => FailurePolicy::FailClosed,
    };
    Ok(PluginSlot::new(kind.slot(), failure, plugin))
}
