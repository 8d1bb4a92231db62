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

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, EmbedderKind};
use crate::state::State;
use crate::telemetry::Metrics;
use crate::upstream::Upstreams;

pub use embed::{Cached, EmbedError, Embedder, LocalEmbedder, OpenAiEmbedder};
pub use index::{Hit, IndexKey, IndexSettings, SemanticIndex};

/// Texts whose embeddings are remembered per node.
const EMBED_CACHE_ENTRIES: usize = 4096;
/// How far under the threshold a best score counts as a near miss.
pub const NEAR_MISS_BAND: f32 = 0.05;
/// Deadline of one `openai` embedding call.
const EMBED_TIMEOUT: Duration = Duration::from_secs(10);

/// An embedder plus the index, with their metrics.
pub struct SemanticCache {
    embedder: Cached,
    index: SemanticIndex,
    metrics: Option<Arc<Metrics>>,
}

impl SemanticCache {
    pub fn new(
        embedder: Box<dyn Embedder>,
        state: State,
        settings: IndexSettings,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        Self {
            embedder: Cached::new(embedder, EMBED_CACHE_ENTRIES),
            index: SemanticIndex::new(state, settings),
            metrics,
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
        Ok(SemanticCache::new(
            embedder,
            state,
            IndexSettings::default(),
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

    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }
}
