//! Embedders: text to unit vector, behind one trait.
//!
//! - [`OpenAiEmbedder`]: an OpenAI-compatible `/embeddings` endpoint of a
//!   configured provider, sent through [`Upstreams`] so the provider's keys,
//!   key pool, breaker and timeouts apply.
//! - [`LocalEmbedder`]: a BERT sentence model (e.g. all-MiniLM-L6-v2) run in
//!   process with candle from `config.json`, `model.safetensors` and
//!   `tokenizer.json` on disk; mean pooling over real tokens, L2-normalised.
//!
//! [`Cached`] wraps either and remembers the vectors of recent texts.

use std::borrow::Cow;
use std::mem::size_of;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;

use crate::cache::bounded::ByteLru;
use crate::cache::footprint;
use crate::upstream::{UpstreamBody, UpstreamRequest, Upstreams};

/// Why a text could not be embedded. The semantic cache then steps aside.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    #[error("embedding provider failed: {0}")]
    Upstream(String),
    #[error("embedding answer was not understood: {0}")]
    BadAnswer(String),
    #[error("local model: {0}")]
    Model(String),
}

/// Turns text into a unit vector.
pub trait Embedder: Send + Sync {
    /// The unit-length embedding of `text`.
    fn embed<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<Vec<f32>, EmbedError>>;
    /// A label for metrics: `openai` or `local`.
    fn kind(&self) -> &'static str;
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

// === openai ===

/// Embeddings from a provider's `/embeddings` endpoint.
pub struct OpenAiEmbedder {
    upstreams: Upstreams,
    provider: String,
    model: String,
    dimensions: Option<u32>,
    timeout: Duration,
}

impl OpenAiEmbedder {
    pub fn new(
        upstreams: Upstreams,
        provider: impl Into<String>,
        model: impl Into<String>,
        dimensions: Option<u32>,
        timeout: Duration,
    ) -> Self {
        Self {
            upstreams,
            provider: provider.into(),
            model: model.into(),
            dimensions,
            timeout,
        }
    }

    async fn call(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let mut body = serde_json::json!({ "model": self.model, "input": text });
        if let Some(d) = self.dimensions {
            body["dimensions"] = d.into();
        }
        let request = UpstreamRequest {
            path: Cow::Borrowed("/embeddings"),
            body: Bytes::from(body.to_string()),
            stream: false,
            timeout: self.timeout,
            request_id: uuid::Uuid::now_v7().to_string(),
            tokens: 0,
        };
        let response = self
            .upstreams
            .send(&self.provider, request)
            .await
            .map_err(|e| EmbedError::Upstream(e.to_string()))?;
        let UpstreamBody::Full(bytes) = response.body else {
            return Err(EmbedError::BadAnswer("a stream".into()));
        };
        parse_embedding(&bytes)
    }
}

/// The first vector of an OpenAI embeddings answer, normalised.
pub fn parse_embedding(bytes: &[u8]) -> Result<Vec<f32>, EmbedError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| EmbedError::BadAnswer(e.to_string()))?;
    let numbers = value
        .pointer("/data/0/embedding")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| EmbedError::BadAnswer("no data[0].embedding array".into()))?;
    let mut v = numbers
        .iter()
        .map(|n| n.as_f64().map(|f| f as f32))
        .collect::<Option<Vec<f32>>>()
        .filter(|v| !v.is_empty() && v.iter().all(|x| x.is_finite()))
        .ok_or_else(|| EmbedError::BadAnswer("embedding is not a list of numbers".into()))?;
    normalise(&mut v);
    Ok(v)
}

impl Embedder for OpenAiEmbedder {
    fn embed<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<Vec<f32>, EmbedError>> {
        Box::pin(self.call(text))
    }

    fn kind(&self) -> &'static str {
        "openai"
    }
}

// === local ===

/// Longest input, in tokens (BERT's position table; longer text is cut).
#[cfg(feature = "local-embedder")]
const MAX_TOKENS: usize = 256;

/// A BERT sentence model on the CPU (feature `local-embedder`; without it
/// [`LocalEmbedder::load`] says this build has none).
pub struct LocalEmbedder {
    #[cfg(feature = "local-embedder")]
    inner: Arc<LocalModel>,
    /// A build without the feature cannot hold one.
    #[cfg(not(feature = "local-embedder"))]
    never: std::convert::Infallible,
}

#[cfg(not(feature = "local-embedder"))]
impl LocalEmbedder {
    /// Always fails: this build has no local embedder.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        Err(EmbedError::Model(format!(
            "{}: this sluice was built without the `local-embedder` feature; use embedder = \"openai\" or a full build",
            dir.display()
        )))
    }

    /// Unreachable: no value exists.
    pub fn embed_blocking(&self, _text: &str) -> Result<Vec<f32>, EmbedError> {
        match self.never {}
    }
}

#[cfg(not(feature = "local-embedder"))]
impl Embedder for LocalEmbedder {
    fn embed<'a>(&'a self, _text: &'a str) -> BoxFuture<'a, Result<Vec<f32>, EmbedError>> {
        match self.never {}
    }

    fn kind(&self) -> &'static str {
        "local"
    }
}

#[cfg(feature = "local-embedder")]
struct LocalModel {
    model: candle_transformers::models::bert::BertModel,
    tokenizer: tokenizers::Tokenizer,
    device: candle_core::Device,
}

#[cfg(feature = "local-embedder")]
impl LocalEmbedder {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from
    /// `dir`. Slow (reads the whole model); call once at startup.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let file = |name: &str| -> std::path::PathBuf { dir.join(name) };
        let read = |name: &str| {
            std::fs::read(file(name))
                .map_err(|e| EmbedError::Model(format!("{}: {e}", file(name).display())))
        };
        let config: candle_transformers::models::bert::Config =
            serde_json::from_slice(&read("config.json")?)
                .map_err(|e| EmbedError::Model(format!("config.json: {e}")))?;
        let mut tokenizer = tokenizers::Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|e| EmbedError::Model(format!("tokenizer.json: {e}")))?;
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| EmbedError::Model(format!("tokenizer: {e}")))?;
        tokenizer.with_padding(None);
        let device = candle_core::Device::Cpu;
        let vb = candle_nn::VarBuilder::from_buffered_safetensors(
            read("model.safetensors")?,
            candle_transformers::models::bert::DTYPE,
            &device,
        )
        .map_err(|e| EmbedError::Model(format!("model.safetensors: {e}")))?;
        let model = candle_transformers::models::bert::BertModel::load(vb, &config)
            .map_err(|e| EmbedError::Model(format!("model.safetensors: {e}")))?;
        Ok(Self {
            inner: Arc::new(LocalModel {
                model,
                tokenizer,
                device,
            }),
        })
    }

    /// Embeds on the calling thread (CPU-bound: call from a blocking task).
    pub fn embed_blocking(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        self.inner.embed(text)
    }
}

#[cfg(feature = "local-embedder")]
impl LocalModel {
    fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        use candle_core::{DType, Tensor};
        let err = |e: candle_core::Error| EmbedError::Model(e.to_string());
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EmbedError::Model(format!("tokenizer: {e}")))?;
        let ids = encoding.get_ids();
        let n = ids.len();
        if n == 0 {
            return Err(EmbedError::Model("no tokens".into()));
        }
        let ids = Tensor::from_slice(ids, (1, n), &self.device).map_err(err)?;
        let types = ids.zeros_like().map_err(err)?;
        let mask = ids.ones_like().map_err(err)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask)).map_err(err)?;
        // Mean over tokens (one unpadded sequence, so every token counts).
        let pooled = hidden
            .to_dtype(DType::F32)
            .and_then(|h| h.mean(1))
            .and_then(|h| h.squeeze(0))
            .map_err(err)?;
        let mut v: Vec<f32> = pooled.to_vec1().map_err(err)?;
        normalise(&mut v);
        Ok(v)
    }
}

#[cfg(feature = "local-embedder")]
impl Embedder for LocalEmbedder {
    fn embed<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<Vec<f32>, EmbedError>> {
        let model = self.inner.clone();
        let text = text.to_owned();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || model.embed(&text))
                .await
                .map_err(|e| EmbedError::Model(format!("embedding task failed: {e}")))?
        })
    }

    fn kind(&self) -> &'static str {
        "local"
    }
}

// === cache ===

/// Remembers the vectors of the most recently embedded texts, in at most a
/// given number of bytes.
pub struct Cached {
    inner: Box<dyn Embedder>,
    recent: Mutex<ByteLru<blake3::Hash, Arc<Vec<f32>>>>,
}

/// What a remembered vector of `len` numbers holds: the `Arc`'d `Vec` and
/// its buffer.
fn vector_bytes(len: usize) -> usize {
    footprint::alloc_size(2 * size_of::<usize>() + size_of::<Vec<f32>>())
        + footprint::vec::<f32>(len)
}

impl Cached {
    /// Remembers vectors in at most `max_bytes`.
    pub fn new(inner: Box<dyn Embedder>, max_bytes: usize) -> Self {
        // The table is sized as if vectors had 16 numbers (the smallest
        // embedders' size is 256 and up).
        Self {
            inner,
            recent: Mutex::new(ByteLru::new(max_bytes, vector_bytes(16))),
        }
    }

    /// Bytes held by remembered vectors and their table.
    pub fn bytes(&self) -> usize {
        self.recent.lock().bytes()
    }

    /// The embedding of `text`, and whether it came from the cache.
    pub async fn embed(&self, text: &str) -> Result<(Arc<Vec<f32>>, bool), EmbedError> {
        let key = blake3::hash(text.as_bytes());
        if let Some(v) = self.recent.lock().get(&key) {
            return Ok((v.clone(), true));
        }
        let v = Arc::new(self.inner.embed(text).await?);
        let bytes = vector_bytes(v.capacity());
        self.recent.lock().put(key, v.clone(), bytes);
        Ok((v, false))
    }

    pub fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(Arc<AtomicUsize>);

    impl Embedder for Counting {
        fn embed<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<Vec<f32>, EmbedError>> {
            self.0.fetch_add(1, Ordering::Relaxed);
            let mut v = vec![text.len() as f32, 1.0];
            normalise(&mut v);
            Box::pin(async move { Ok(v) })
        }
        fn kind(&self) -> &'static str {
            "test"
        }
    }

    #[tokio::test]
    async fn identical_texts_are_embedded_once() {
        let calls = Arc::new(AtomicUsize::new(0));
        let cached = Cached::new(Box::new(Counting(calls.clone())), 4096);
        let (a, hit_a) = cached.embed("hello").await.unwrap();
        let (b, hit_b) = cached.embed("hello").await.unwrap();
        assert_eq!(a, b);
        assert!(!hit_a && hit_b);
        cached.embed("other").await.unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn openai_answers_parse_and_normalise() {
        let v = parse_embedding(br#"{"data":[{"embedding":[3.0,4.0]}]}"#).unwrap();
        assert_eq!(v, vec![0.6, 0.8]);
        assert!(parse_embedding(br#"{"data":[]}"#).is_err());
        assert!(parse_embedding(br#"{"data":[{"embedding":["x"]}]}"#).is_err());
        assert!(parse_embedding(b"not json").is_err());
    }
}
