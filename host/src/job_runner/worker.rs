//! The workers of one node: a supervisor that claims jobs (up to `[jobs]
//! concurrency` at once) and one task per claimed job.
//!
//! Claiming: the supervisor picks a priority by smooth weighted round robin
//! over the non-empty queues (weights 16, 8, 4, 2, 1 from `critical` to
//! `bulk`): a level passed over gains credit every round until it is
//! picked, so under a steady backlog `bulk` gets one claim in 31. Aging
//! adds a bound on the wait: a job queued `aging_ms` without being claimed
//! moves up one level (done by the queue's promotion, which the
//! supervisor runs with an aging cutoff a few times per `aging_ms`). It
//! also moves due retries into their queues, takes over jobs whose node
//! stopped renewing them for the visibility timeout, and renews its own
//! every third of it.
//!
//! Running: the stored request goes through [`crate::pipeline::handle_as`]
//! as the tenant that sent it. Its answer decides:
//! - 2xx: `succeeded`, the answer kept as the result;
//! - 429 from the tenant's own rate limit: the job waits `retry-after`
//!   (no attempt counted) and runs again, up to its deadline;
//! - 408, 429 from the provider, 5xx: the pipeline's retry plugin has
//!   already retried within the call; it is then asked again, about the
//!   whole run (run number, time since the first run, the last failure):
//!   `retry`/`fallback` runs the job again after its delay (bounded by
//!   `retry_base_ms` and `retry_max_ms`), `stop` or `max_attempts` runs
//!   dead-letter it;
//! - other 4xx: `failed` (retrying a bad request cannot help).
//!
//! Shutdown: the supervisor stops claiming, waits for running jobs up to
//! the grace period, and hands the rest back to the queue (queued again, no
//! attempt counted) for another node.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use parking_lot::Mutex;
use tokio::task::JoinSet;

use crate::error::Origin;
use crate::gateway::Gateway;
use crate::jobs::queue::{Delivery, Finish, Start};
use crate::jobs::webhook;
use crate::jobs::{JobRecord, JobResult, JobStatus, Jobs, Priority, now_ms};
use crate::pipeline::Caller;
use crate::policy::{Attempt, AttemptOutcome, RetryVerdict, Route};

/// Largest answer a job keeps.
const MAX_RESULT_BYTES: usize = 64 << 20;
/// How often a node samples queue depths for the metrics.
const DEPTH_EVERY: Duration = Duration::from_secs(5);

/// The running workers of a node; [`Workers::shutdown`] stops them.
pub struct Workers {
    stop: Arc<tokio::sync::watch::Sender<Option<Duration>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Workers {
    /// Tells the workers to stop (see [`Workers::shutdown`]) without
    /// waiting: for a signal handler.
    pub fn stopper(&self) -> impl Fn(Duration) + Send + Sync + 'static {
        let stop = self.stop.clone();
        move |grace| {
            let _ = stop.send(Some(grace));
        }
    }

    /// Stops claiming, lets running jobs finish within `grace`, hands the
    /// others back to the queue, and returns when done.
    pub async fn shutdown(self, grace: Duration) {
        if self.stop.borrow().is_none() {
            let _ = self.stop.send(Some(grace));
        }
        let _ = self.task.await;
    }
}

/// Starts the workers when `[jobs]` is enabled.
pub fn spawn_workers(gw: &Arc<Gateway>) -> Option<Workers> {
    let jobs = gw.jobs.clone()?;
    let (stop, stopped) = tokio::sync::watch::channel(None);
    let task = tokio::spawn(supervise(gw.clone(), jobs, stopped));
    Some(Workers {
        stop: Arc::new(stop),
        task,
    })
}

/// Smooth weighted round robin over the priorities.
#[derive(Default)]
struct Picker {
    credit: [i64; 5],
}

impl Picker {
    fn pick(&mut self, empty: &[bool; 5]) -> Option<Priority> {
        let live: Vec<Priority> = Priority::ALL
            .into_iter()
            .filter(|p| !empty[p.index()])
            .collect();
        let total: i64 = live.iter().map(|p| i64::from(p.weight())).sum();
        if total == 0 {
            return None;
        }
        for p in &live {
            self.credit[p.index()] += i64::from(p.weight());
        }
        // Ties go to the higher priority (the earlier one).
        let best = *live
            .iter()
            .max_by_key(|p| (self.credit[p.index()], -(p.index() as i64)))?;
        self.credit[best.index()] -= total;
        Some(best)
    }
}

type Held = Arc<Mutex<HashMap<String, Delivery>>>;

/// Stops renewing an entry when its task ends, however it ends (a
/// panicking task's job is then taken over after the visibility timeout).
struct Release(Held, String);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

async fn supervise(
    gw: Arc<Gateway>,
    jobs: Arc<Jobs>,
    mut stop: tokio::sync::watch::Receiver<Option<Duration>>,
) {
    let cfg = jobs.config.clone();
    let visibility = cfg.visibility_timeout();
    let renew_every = visibility / 3;
    let held: Held = Arc::default();
    let mut tasks = JoinSet::new();
    let mut picker = Picker::default();
    let long_ago = Instant::now() - visibility;
    let (mut last_renew, mut last_reclaim, mut last_depth) = (Instant::now(), long_ago, long_ago);
    // Aging is checked a few times per aging period (at most every second).
    let aging_every = cfg.aging().map(|a| (a / 4).min(Duration::from_secs(1)));
    let mut last_aging = long_ago;
    let mut warned: Option<Instant> = None;
    let mut warn = |what: &str, e: &dyn std::fmt::Display| {
        if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            tracing::warn!(error = %e, "jobs: {what} failed");
            warned = Some(Instant::now());
        }
    };
    let grace = loop {
        if let Some(grace) = *stop.borrow() {
            break grace;
        }
        let queue = &jobs.queue;
        let now = now_ms();
        let aged_before = match (cfg.aging(), aging_every) {
            (Some(aging), Some(every)) if last_aging.elapsed() >= every => {
                last_aging = Instant::now();
                Some(now.saturating_sub(aging.as_millis() as u64))
            }
            _ => None,
        };
        if let Err(e) = queue.promote(now, aged_before).await {
            warn("moving due retries", &e);
        }
        if last_renew.elapsed() >= renew_every {
            renew(&jobs, &held).await;
            last_renew = Instant::now();
        }
        if last_depth.elapsed() >= DEPTH_EVERY {
            if let Ok(d) = queue.depths().await {
                jobs.metrics.jobs.depths(d);
            }
            last_depth = Instant::now();
        }
        let free = cfg.concurrency.saturating_sub(tasks.len());
        let mut claimed = Vec::new();
        if free > 0 && last_reclaim.elapsed() >= visibility / 4 {
            match queue.reclaim(&jobs.node, visibility, free).await {
                Ok(mut v) => {
                    for d in &v {
                        tracing::info!(job = %d.id, "jobs: took over a job whose node stopped renewing it");
                    }
                    claimed.append(&mut v);
                }
                Err(e) => warn("reclaiming", &e),
            }
            last_reclaim = Instant::now();
        }
        let mut empty = [false; 5];
        while claimed.len() < free {
            let Some(p) = picker.pick(&empty) else { break };
            match queue.claim(&jobs.node, p, 1).await {
                Ok(v) if v.is_empty() => empty[p.index()] = true,
                Ok(mut v) => claimed.append(&mut v),
                Err(e) => {
                    warn("claiming", &e);
                    break;
                }
            }
        }
        for d in claimed {
            held.lock().insert(d.entry.clone(), d.clone());
            let (gw, jobs, held) = (gw.clone(), jobs.clone(), held.clone());
            tasks.spawn(async move {
                let _release = Release(held, d.entry.clone());
                run_one(&gw, &jobs, &d).await;
            });
        }
        let poll = tokio::time::sleep(cfg.poll().min(renew_every));
        tokio::select! {
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = jobs.wake.notified() => {}
            _ = poll => {}
            _ = stop.changed() => {}
        }
    };
    // Shutdown: finish within the grace period, renewing meanwhile.
    let deadline = tokio::time::Instant::now() + grace;
    while !tasks.is_empty() {
        tokio::select! {
            _ = tasks.join_next() => {}
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tokio::time::sleep(renew_every) => renew(&jobs, &held).await,
        }
    }
    // What is still running goes back to the queue (a task that ends
    // between this snapshot and the abort has acknowledged its entry; the
    // hand-back then only schedules a claim that finds the job final).
    let left: Vec<Delivery> = held.lock().values().cloned().collect();
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    for d in &left {
        let handed = jobs
            .queue
            .later(d, now_ms(), false, Some("handed back by a stopping node"))
            .await;
        match handed {
            Ok(()) => tracing::info!(job = %d.id, "jobs: handed back at shutdown"),
            Err(e) => {
                tracing::warn!(job = %d.id, error = %e, "jobs: could not hand back; another node takes it after the visibility timeout")
            }
        }
    }
}

async fn renew(jobs: &Jobs, held: &Held) {
    let mine: Vec<Delivery> = held.lock().values().cloned().collect();
    if mine.is_empty() {
        return;
    }
    if let Err(e) = jobs
        .queue
        .renew(&jobs.node, &mine, jobs.config.visibility_timeout() / 4)
        .await
    {
        tracing::warn!(error = %e, "jobs: renewing claims failed");
    }
}

fn route_of(path: &str) -> Option<Route> {
    match path {
        "/v1/chat/completions" => Some(Route::Chat),
        "/v1/embeddings" => Some(Route::Embeddings),
        "/v1/messages" => Some(Route::AnthropicMessages),
        _ => None,
    }
}

/// Response headers a job result keeps.
fn kept_header(name: &str) -> bool {
    matches!(
        name,
        "content-type" | "retry-after" | "retry-after-ms" | "x-request-id" | "request-id"
    ) || name.starts_with("x-ratelimit-")
        || name.starts_with("x-sluice-")
        || name.starts_with("anthropic-ratelimit-")
}

async fn run_one(gw: &Arc<Gateway>, jobs: &Jobs, d: &Delivery) {
    let queue = &jobs.queue;
    let start = match queue.start(&d.id, now_ms()).await {
        Ok(s) => s,
        Err(e) => {
            // Left unacknowledged: taken over after the visibility timeout.
            tracing::warn!(job = %d.id, error = %e, "jobs: could not start a job");
            return;
        }
    };
    let (record, body) = match start {
        Start::Gone => {
            let _ = queue.ack(d).await;
            return;
        }
        Start::Done(record) => {
            // Finished (or cancelled) already; a node that died before its
            // webhook went out left it pending.
            if record.webhook.as_deref() == Some("pending") {
                notify(jobs, &record).await;
            }
            let _ = queue.ack(d).await;
            return;
        }
        Start::Run(record, body) => (record, body),
    };
    let spec = &record.spec;
    let now = now_ms();
    jobs.metrics.jobs.started(
        spec.priority.as_str(),
        Duration::from_millis(now.saturating_sub(spec.created_ms)),
    );
    if now >= spec.deadline_ms {
        let error = "the job's deadline passed before it could run";
        finalize(jobs, d, &record, JobStatus::Failed, None, error).await;
        return;
    }
    let Some(route) = route_of(&spec.path) else {
        let error = format!("unknown job route {}", spec.path);
        finalize(jobs, d, &record, JobStatus::Failed, None, &error).await;
        return;
    };
    let mut request = http::Request::builder()
        .method(http::Method::POST)
        .uri(&spec.path);
    for (name, value) in &spec.headers {
        request = request.header(name, value);
    }
    if !spec.headers.iter().any(|(n, _)| n == "x-request-id") {
        request = request.header("x-request-id", &spec.id);
    }
    let request = match request.body(Body::from(body)) {
        Ok(r) => r,
        Err(e) => {
            let error = format!("the stored request is not valid: {e}");
            finalize(jobs, d, &record, JobStatus::Failed, None, &error).await;
            return;
        }
    };
    // A run-time virtual key's limits apply while it is on this node's
    // table (a key revoked since the job was accepted no longer limits it).
    let key = spec.key_id.as_deref().and_then(|id| gw.keys.local(id));
    let caller = Caller {
        tenant: spec.tenant.clone(),
        tier: spec.tier.clone(),
        key_id: spec.key_id.clone(),
        key,
    };
    let ip = spec.client_ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let t0 = Instant::now();
    let ran = crate::pipeline::handle_as(gw.clone(), route, ip, caller, request).await;
    let origin = ran.origin;
    let result = collect(ran.response).await;
    jobs.metrics.jobs.ran(spec.priority.as_str(), t0.elapsed());
    let status = result.status;
    let now = now_ms();
    if (200..300).contains(&status) {
        finalize(jobs, d, &record, JobStatus::Succeeded, Some(&result), "").await;
        return;
    }
    let error = error_text(&result);
    if status == 429 && origin == Some(Origin::Downstream) {
        let wait = retry_after(&result).max(Duration::from_millis(50));
        if now + (wait.as_millis() as u64) < spec.deadline_ms {
            tracing::debug!(job = %spec.id, wait_ms = wait.as_millis() as u64, "jobs: waiting for the tenant's rate limit");
            if let Err(e) = queue
                .later(d, now + wait.as_millis() as u64, false, Some(&error))
                .await
            {
                tracing::warn!(job = %spec.id, error = %e, "jobs: could not reschedule");
            }
            return;
        }
        finalize(jobs, d, &record, JobStatus::Failed, Some(&result), &error).await;
        return;
    }
    let retryable = status == 408 || status == 429 || status >= 500;
    if !retryable {
        finalize(jobs, d, &record, JobStatus::Failed, Some(&result), &error).await;
        return;
    }
    // The retry plugin decides about the whole run as it does about an
    // upstream attempt: the job's run number, the time since its first
    // run, how the run failed.
    let attempt = Attempt {
        number: record.attempts,
        elapsed_ms: now.saturating_sub(record.first_started_ms.unwrap_or(now)),
        provider: ran.provider,
        model: ran.model,
        outcome: run_outcome(ran.last_failure, origin, &result),
    };
    let verdict = if record.attempts >= jobs.config.max_attempts {
        None
    } else {
        match crate::pipeline::retry_verdict(gw, &ran.policy, &attempt).await {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(job = %spec.id, error = %e.message, "jobs: the retry policy failed; no retry");
                Some(RetryVerdict::Stop)
            }
        }
    };
    let after_ms = match verdict {
        Some(RetryVerdict::Retry { after_ms } | RetryVerdict::Fallback { after_ms, .. }) => {
            Some(after_ms)
        }
        Some(RetryVerdict::Stop) | None => None,
    };
    if let Some(after_ms) = after_ms {
        let delay = between_runs(jobs, after_ms);
        let at = now + delay.as_millis() as u64;
        if at < spec.deadline_ms {
            tracing::debug!(job = %spec.id, delay_ms = delay.as_millis() as u64, "jobs: retrying, as the retry policy says");
            if let Err(e) = queue.later(d, at, true, Some(&error)).await {
                tracing::warn!(job = %spec.id, error = %e, "jobs: could not reschedule");
            }
            return;
        }
    }
    let why = match verdict {
        Some(RetryVerdict::Stop) => "the retry policy stopped",
        None => "max_attempts reached",
        Some(_) => "the next run would start after the deadline",
    };
    let error = format!("failed {} times ({why}); last: {error}", record.attempts);
    finalize(jobs, d, &record, JobStatus::Dead, Some(&result), &error).await;
}

/// The retry plugin's delay bounded by `[jobs] retry_base_ms` (a whole run
/// already went through the plugin's retries inside the call, so it is
/// not repeated sooner) and `retry_max_ms`.
fn between_runs(jobs: &Jobs, after_ms: u64) -> Duration {
    let c = &jobs.config;
    Duration::from_millis(after_ms.clamp(c.retry_base_ms, c.retry_max_ms))
}

/// How a failed run looks to the retry plugin: the last upstream attempt's
/// failure when the provider caused it, else the answer's status (and its
/// `retry-after`).
fn run_outcome(
    last: Option<AttemptOutcome>,
    origin: Option<Origin>,
    result: &JobResult,
) -> AttemptOutcome {
    match last {
        Some(outcome) if origin == Some(Origin::Upstream) => outcome,
        _ => AttemptOutcome::Status {
            code: result.status,
            retry_after_ms: has_retry_after(result).then(|| retry_after(result).as_millis() as u64),
        },
    }
}

fn has_retry_after(result: &JobResult) -> bool {
    result
        .headers
        .iter()
        .any(|(n, _)| n == "retry-after" || n == "retry-after-ms")
}

fn retry_after(result: &JobResult) -> Duration {
    let header = |name: &str| {
        result
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.parse::<f64>().ok())
    };
    if let Some(ms) = header("retry-after-ms") {
        return Duration::from_millis(ms.max(0.0) as u64);
    }
    header("retry-after")
        .map(|s| Duration::from_secs_f64(s.clamp(0.0, 86400.0)))
        .unwrap_or(Duration::from_secs(1))
}

/// `HTTP <status>: <error message>` from a provider-shaped error body.
fn error_text(result: &JobResult) -> String {
    let message = serde_json::from_str::<serde_json::Value>(&result.body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    format!("HTTP {}: {message}", result.status)
}

async fn collect(response: axum::response::Response) -> JobResult {
    let (parts, body) = response.into_parts();
    let headers = parts
        .headers
        .iter()
        .filter(|(n, _)| kept_header(n.as_str()))
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let body = match axum::body::to_bytes(body, MAX_RESULT_BYTES).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => format!("{{\"error\":{{\"message\":\"reading the answer failed: {e}\"}}}}"),
    };
    JobResult {
        status: parts.status.as_u16(),
        headers,
        body,
    }
}

/// The final transition, then the webhook, then the queue entry goes.
async fn finalize(
    jobs: &Jobs,
    d: &Delivery,
    record: &JobRecord,
    status: JobStatus,
    result: Option<&JobResult>,
    error: &str,
) {
    let now = now_ms();
    let dead = status == JobStatus::Dead;
    let callback = record.spec.callback_url.as_deref();
    let error_kept = (!error.is_empty()).then_some(error);
    let finish = Finish {
        status,
        result,
        error: error_kept,
        webhook: callback.map(|_| "pending"),
        now_ms: now,
        ttl: if dead {
            jobs.config.dead_ttl()
        } else {
            jobs.config.result_ttl()
        },
        keep_body: dead,
    };
    match jobs.queue.finish(&record.spec.id, finish).await {
        Ok(true) => {}
        Ok(false) => {
            // Another run of this job finished first: its result stands.
            jobs.metrics.jobs.duplicate();
            tracing::info!(job = %record.spec.id, "jobs: duplicate run; the first result stands");
            let _ = jobs.queue.ack(d).await;
            return;
        }
        Err(e) => {
            tracing::warn!(job = %record.spec.id, error = %e, "jobs: could not store the result; the job runs again after the visibility timeout");
            return;
        }
    }
    jobs.metrics.jobs.finished(status.as_str());
    tracing::info!(job = %record.spec.id, status = status.as_str(), attempts = record.attempts, "jobs: finished");
    if callback.is_some() {
        let mut done = record.clone();
        done.status = status;
        done.result = result.cloned();
        done.error = error_kept.map(str::to_owned);
        done.finished_ms = Some(now);
        notify(jobs, &done).await;
    }
    let gone = if dead {
        jobs.queue.bury(d, record.spec.priority, error, now).await
    } else {
        jobs.queue.ack(d).await
    };
    if let Err(e) = gone {
        tracing::warn!(job = %record.spec.id, error = %e, "jobs: could not acknowledge");
    }
}

/// Delivers the webhook of a final `record` and records how it went.
async fn notify(jobs: &Jobs, record: &JobRecord) {
    let Some(url) = record.spec.callback_url.as_deref() else {
        return;
    };
    let outcome = webhook::deliver(jobs, record, url).await;
    if let Err(e) = jobs
        .queue
        .set_webhook(&record.spec.id, outcome.as_str())
        .await
    {
        tracing::warn!(job = %record.spec.id, error = %e, "jobs: could not record the webhook outcome");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&str, &str)]) -> JobResult {
        JobResult {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: String::new(),
        }
    }

    #[test]
    fn a_run_shows_the_retry_plugin_how_it_failed() {
        // The provider's own failure, as the plugin saw it inside the call.
        let timeout = run_outcome(
            Some(AttemptOutcome::Timeout),
            Some(Origin::Upstream),
            &answer(504, &[]),
        );
        assert_eq!(timeout, AttemptOutcome::Timeout);
        // No upstream attempt (an open circuit, a fail-closed plugin): the
        // answer's status and retry-after.
        let refused = run_outcome(
            None,
            Some(Origin::Upstream),
            &answer(503, &[("retry-after", "7")]),
        );
        assert_eq!(
            refused,
            AttemptOutcome::Status {
                code: 503,
                retry_after_ms: Some(7000)
            }
        );
        let internal = run_outcome(
            Some(AttemptOutcome::Timeout),
            Some(Origin::Internal),
            &answer(503, &[]),
        );
        assert_eq!(
            internal,
            AttemptOutcome::Status {
                code: 503,
                retry_after_ms: None
            }
        );
    }

    #[test]
    fn picker_follows_the_weights_and_never_starves_bulk() {
        let mut p = Picker::default();
        let mut counts = [0u32; 5];
        for _ in 0..31 {
            counts[p.pick(&[false; 5]).unwrap().index()] += 1;
        }
        assert_eq!(counts, [16, 8, 4, 2, 1]);
        // Only bulk and critical queued: bulk still gets its share.
        let mut counts = [0u32; 5];
        for _ in 0..17 {
            counts[p.pick(&[false, true, true, true, false]).unwrap().index()] += 1;
        }
        assert_eq!(counts[0] + counts[4], 17);
        assert!(counts[4] >= 1);
        assert_eq!(p.pick(&[true; 5]), None);
    }

    #[test]
    fn bulk_waits_a_bounded_number_of_claims_while_other_levels_come_and_go() {
        // Levels above bulk are queued or empty at random (70% queued);
        // bulk always is. docs/jobs.md quotes the longest gap.
        let mut p = Picker::default();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let (mut last, mut gap) = (0usize, 0usize);
        for i in 1..=200_000usize {
            let mut empty = [false; 5];
            for slot in empty.iter_mut().take(4) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *slot = x % 10 >= 7;
            }
            if p.pick(&empty) == Some(Priority::Bulk) {
                gap = gap.max(i - last);
                last = i;
            }
        }
        assert!((31..=42).contains(&gap), "{gap}");
    }
}
