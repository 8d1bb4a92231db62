//! Asynchronous jobs, the part below the gateway: records, queues and
//! webhooks. `Prefer: respond-async` on an API route answers `202` with a
//! job id; workers on every node ([`crate::job_runner`]) run the job
//! through the whole pipeline and keep its result for `[jobs]
//! result_ttl_secs`; a signed webhook reports it (docs/jobs.md).
//!
//! - [`queue`]: the [`queue::Queue`] trait, one stream per [`Priority`], and
//!   the in-process backend used with memory state; [`redis_queue`]: Redis
//!   Streams with one consumer group (at-least-once; a dead node's jobs are
//!   reclaimed with `XAUTOCLAIM` after the visibility timeout).
//! - [`webhook`]: Standard Webhooks signing, the callback allow-list and
//!   address checks, delivery with backoff, disabling failing endpoints.
//! - [`crate::job_runner`] (above the gateway): claiming, running,
//!   retries, dead letters, shutdown, and the HTTP routes.
//!
//! Duplicates: a job may run twice (its node stalled past the visibility
//! timeout), but its result is stored once: the transition to a final
//! status is a compare-and-set on the job record (first writer wins), and
//! only the run that wins it delivers the webhook (whose `webhook-id` is
//! fixed per job, so a receiver can also drop a redelivery).

pub(crate) mod queue;
mod redis_queue;
pub mod webhook;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::JobsConfig;
use crate::state::{State, StateError};
use crate::telemetry::Metrics;
use queue::Queue;

/// The five priorities, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Critical,
    High,
    Normal,
    Low,
    Bulk,
}

impl Priority {
    pub const ALL: [Priority; 5] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
        Priority::Bulk,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
            Priority::Bulk => "bulk",
        }
    }

    pub fn parse(s: &str) -> Option<Priority> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Share of the claims under a full backlog: each level gets twice the
    /// next one's, so `bulk` still gets 1 claim in 31.
    pub fn weight(self) -> u32 {
        1 << (4 - self.index())
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Dead,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Succeeded,
            JobStatus::Failed,
            JobStatus::Cancelled,
            JobStatus::Dead,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }

    /// Whether the job will not run again (unless requeued from dead).
    pub fn is_final(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

/// What a job is: fixed when it is accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSpec {
    pub id: String,
    pub tenant: String,
    pub tier: String,
    pub key_id: Option<String>,
    /// The API path it was sent to (`/v1/chat/completions`, ...).
    pub path: String,
    pub priority: Priority,
    pub created_ms: u64,
    /// After this the job fails instead of running or waiting.
    pub deadline_ms: u64,
    pub callback_url: Option<String>,
    pub client_ip: String,
    /// Request headers replayed to the pipeline (credentials removed: the
    /// caller was authenticated when the job was accepted).
    pub headers: Vec<(String, String)>,
}

/// The synchronous call's answer, kept as it was returned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    pub status: u16,
    /// The headers that matter to a client (content type, request id,
    /// rate limits, cache outcome, retry-after).
    pub headers: Vec<(String, String)>,
    /// The body as returned (API bodies are JSON text).
    pub body: String,
}

/// A job as stored.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub spec: JobSpec,
    pub status: JobStatus,
    pub attempts: u32,
    /// When the latest run started.
    pub started_ms: Option<u64>,
    /// When the first run started (the retry plugin's `elapsed_ms` counts
    /// from it).
    pub first_started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub result: Option<JobResult>,
    pub error: Option<String>,
    /// `pending`, `delivered`, `failed` or `disabled` when a callback is set.
    pub webhook: Option<String>,
}

impl JobRecord {
    /// The `GET /v1/jobs/{id}` body.
    pub fn view(&self) -> serde_json::Value {
        let result = self.result.as_ref().map(|r| {
            let headers: serde_json::Map<String, serde_json::Value> = r
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            let body = serde_json::from_str::<serde_json::Value>(&r.body)
                .unwrap_or_else(|_| serde_json::Value::String(r.body.clone()));
            serde_json::json!({"status": r.status, "headers": headers, "body": body})
        });
        serde_json::json!({
            "id": self.spec.id,
            "object": "job",
            "status": self.status.as_str(),
            "priority": self.spec.priority.as_str(),
            "attempts": self.attempts,
            "created_at": self.spec.created_ms / 1000,
            "created_at_ms": self.spec.created_ms,
            "started_at_ms": self.started_ms,
            "finished_at_ms": self.finished_ms,
            "status_url": status_url(&self.spec.id),
            "result_url": self.result.as_ref().map(|_| format!("{}/result", status_url(&self.spec.id))),
            "callback_url": self.spec.callback_url,
            "webhook": self.webhook,
            "error": self.error,
            "result": result,
        })
    }
}

/// `/v1/jobs/{id}`.
pub fn status_url(id: &str) -> String {
    format!("/v1/jobs/{id}")
}

/// The job service of one node: its queue backend, config and metrics.
pub struct Jobs {
    pub config: JobsConfig,
    pub(crate) queue: Arc<dyn Queue>,
    /// Wakes this node's workers when it accepts a job.
    pub(crate) wake: tokio::sync::Notify,
    pub(crate) state: State,
    pub(crate) metrics: Arc<Metrics>,
    /// This node's consumer name in the group.
    pub(crate) node: String,
    pub(crate) allow: globset::GlobSet,
    pub(crate) secret: Option<Vec<u8>>,
}

impl Jobs {
    /// The job service `config` asks for, on the state's backend (Redis
    /// Streams when the state is Redis, in-process otherwise); `None` when
    /// `[jobs] enabled = false`.
    pub async fn build(
        config: &JobsConfig,
        state: &State,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Option<Arc<Jobs>>> {
        if !config.enabled {
            return Ok(None);
        }
        let queue: Arc<dyn Queue> = match state.redis_link() {
            Some(link) => {
                let q = redis_queue::RedisQueue::new(link.clone());
                // Redis may be down at startup (fail-open state): the
                // groups are created again on the first claim.
                if let Err(e) = q.ensure_groups().await {
                    tracing::warn!(error = %e, "jobs: could not create the consumer groups yet");
                }
                Arc::new(q)
            }
            None => Arc::new(queue::MemoryQueue::default()),
        };
        let allow = crate::config::compile_callback_allow(&config.webhooks.allow)
            .map_err(|e| anyhow::anyhow!("jobs.webhooks.allow: {e}"))?;
        let secret = config
            .webhooks
            .secret
            .as_ref()
            .and_then(|s| crate::config::decode_webhook_secret(s.expose()));
        Ok(Some(Arc::new(Jobs {
            config: config.clone(),
            queue,
            wake: tokio::sync::Notify::new(),
            state: state.clone(),
            metrics,
            node: uuid::Uuid::new_v4().simple().to_string(),
            allow,
            secret,
        })))
    }

    /// Stores and enqueues a new job.
    pub(crate) async fn submit(&self, spec: &JobSpec, body: &[u8]) -> Result<(), StateError> {
        let ttl = self.config.max_wait() + self.config.result_ttl();
        self.queue.submit(spec, body, ttl).await?;
        self.metrics.jobs.accepted(spec.priority.as_str());
        self.wake.notify_one();
        Ok(())
    }

    /// The job `id`, if it exists and has not expired.
    pub async fn get(&self, id: &str) -> Result<Option<JobRecord>, StateError> {
        if !valid_id(id) {
            return Ok(None);
        }
        self.queue.load(id).await
    }
}

/// Job ids are `job_` and 32 hex digits; anything else is not a job.
pub(crate) fn valid_id(id: &str) -> bool {
    id.len() == 36 && id.starts_with("job_") && id[4..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// A fresh job id.
pub(crate) fn new_id() -> String {
    format!("job_{}", uuid::Uuid::now_v7().simple())
}

/// Milliseconds since the Unix epoch, on this node's clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}
