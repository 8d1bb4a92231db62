//! The semantic cache: near-duplicate prompts answered from an index shared
//! by every node.
//!
//! The semantic plugin chooses the text to embed, the namespace and the
//! threshold ([`crate::plugin::Plugin::semantic_prepare`]); this module
//! embeds the text ([`embed`]), searches the tenant's namespace of the shared
//! index ([`index`]), and the plugin accepts or refuses the best candidate.
//! The request flow around it lives in `pipeline/semantic.rs`.

pub mod embed;
pub mod hnsw;
pub mod index;
pub mod learn;
mod mirror;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, EmbedderKind};
use crate::state::State;
use crate::telemetry::Metrics;
use crate::upstream::Upstreams;

pub use embed::{Cached, EmbedError, Embedder, LocalEmbedder, OpenAiEmbedder};
pub use index::{Hit, IndexKey, IndexSettings, IndexStats, SemanticIndex, Served};
pub use learn::RecentHits;

/// The share of `[semantic] max_bytes` that remembers recent embeddings
/// (one part in this many); the index has the rest.
const EMBED_CACHE_SHARE: usize = 8;
/// How far under the threshold a best score counts as a near miss.
pub const NEAR_MISS_BAND: f32 = 0.05;
/// Deadline of one `openai` embedding call.
const EMBED_TIMEOUT: Duration = Duration::from_secs(10);

/// An embedder plus the index, with their metrics, and what this node
/// remembers to learn from contradicted hits ([`learn`]).
pub struct SemanticCache {
    embedder: Cached,
    index: SemanticIndex,
    metrics: Option<Arc<Metrics>>,
    recent: RecentHits,
    learn_margin: f32,
}

/// How entries learn from contradicted hits (`[semantic]`'s
/// `reask_window_seconds` and `learn_margin`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearnSettings {
    /// A re-ask of the exact request this soon after a semantic hit
    /// contradicts it; zero: only explicit feedback does.
    pub reask_window: Duration,
    /// A contradicted entry requires more than the contradicted score plus
    /// this.
    pub margin: f32,
}

impl SemanticCache {
    /// A semantic cache holding at most `max_bytes` on this node: an eighth
    /// for recent embeddings, the rest for the index (`settings.max_bytes`
    /// is set from it).
    pub fn new(
        embedder: Box<dyn Embedder>,
        state: State,
        max_bytes: usize,
        settings: IndexSettings,
        learn: LearnSettings,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        let embed_bytes = max_bytes / EMBED_CACHE_SHARE;
        let settings = IndexSettings {
            max_bytes: max_bytes - embed_bytes,
            ..settings
        };
        Self {
            embedder: Cached::new(embedder, embed_bytes),
            index: SemanticIndex::new(state, settings),
            metrics,
            recent: RecentHits::new(learn.reask_window),
            learn_margin: learn.margin,
        }
    }

    /// The embedder `[semantic]` configures. A local model is loaded here
    /// (blocking: call from a blocking task or at startup).
    pub fn embedder_from_config(
        config: &Config,
        upstreams: &Upstreams,
    ) -> Result<Box<dyn Embedder>, EmbedError> {
        let s = &config.semantic;
        match s.embedder {
            EmbedderKind::Openai => {
                let provider = match &s.provider {
                    Some(p) => p.clone(),
                    None => config
                        .route(&s.model)
                        .map(|p| p.name.clone())
                        .ok_or_else(|| {
                            EmbedError::Upstream(format!("no provider serves `{}`", s.model))
                        })?,
                };
                Ok(Box::new(OpenAiEmbedder::new(
                    upstreams.clone(),
                    provider,
                    s.model.clone(),
                    s.dimensions,
                    EMBED_TIMEOUT,
                )))
            }
            EmbedderKind::Local => {
                let path = s
                    .path
                    .as_deref()
                    .ok_or_else(|| EmbedError::Model("semantic.path is not set".into()))?;
                Ok(Box::new(LocalEmbedder::load(path)?))
            }
        }
    }

    /// The semantic cache `[semantic]` configures, or why it cannot be
    /// built. A local model is loaded here: call from a blocking task.
    pub fn from_config(
        config: &Config,
        upstreams: &Upstreams,
        state: State,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<SemanticCache, EmbedError> {
        let embedder = SemanticCache::embedder_from_config(config, upstreams)?;
        tracing::info!(embedder = embedder.kind(), "semantic cache ready");
        let s = &config.semantic;
        Ok(SemanticCache::new(
            embedder,
            state,
            usize::try_from(s.max_bytes).unwrap_or(usize::MAX),
            IndexSettings {
                max_namespaces: s.max_namespaces as usize,
                ..IndexSettings::default()
            },
            LearnSettings {
                reask_window: Duration::from_secs(s.reask_window_seconds),
                margin: s.learn_margin,
            },
            metrics,
        ))
    }

    /// The unit embedding of `text` (recent texts come from memory).
    pub async fn embed(&self, text: &str) -> Result<Arc<Vec<f32>>, EmbedError> {
        let started = Instant::now();
        let (v, cached) = self.embedder.embed(text).await?;
        if !cached && let Some(m) = &self.metrics {
            m.semantic_embed(self.embedder.kind(), started.elapsed());
        }
        Ok(v)
    }

    pub fn index(&self) -> &SemanticIndex {
        &self.index
    }

    /// This node's recent semantic hits (the re-ask signal).
    pub fn recent(&self) -> &RecentHits {
        &self.recent
    }

    /// Marks `hit`'s entry as having answered wrongly: it now requires a
    /// higher score ([`SemanticIndex::contradict`]); logged and counted.
    pub async fn contradict(&self, key: &IndexKey, hit: &Hit, signal: &'static str) {
        match self.index.contradict(key, hit, self.learn_margin).await {
            Ok(required) => {
                tracing::info!(
                    namespace = key.label(),
                    entry = hit.seq,
                    score = hit.score,
                    required,
                    signal,
                    "semantic entry contradicted; it now requires a higher score"
                );
                if let Some(m) = &self.metrics {
                    m.semantic_contradiction();
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not record a contradicted semantic entry"),
        }
    }

    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// Brings the index's gauges up to date.
    pub fn record_index(&self) {
        if let Some(m) = &self.metrics {
            let s = self.index.stats();
            m.semantic_index(s.entries, s.namespaces, s.bytes);
        }
    }

    /// Bytes the embeddings cache holds.
    pub fn embed_cache_bytes(&self) -> usize {
        self.embedder.bytes()
    }
}

/// A deterministic pseudo-random unit vector of `dim` dimensions (xorshift
/// from `seed`), for the index's tests.
#[cfg(test)]
pub(crate) fn test_vector(seed: u64, dim: usize) -> Vec<f32> {
    let mut x = seed
        .wrapping_add(1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .max(1);
    let mut v: Vec<f32> = (0..dim)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    embed::normalise(&mut v);
    v
}
