//! [`Queue`]: what a job backend provides, and [`MemoryQueue`], the
//! in-process backend used with memory state (one node).
//!
//! A backend keeps one record per job (spec, status, attempts, result) and
//! one queue per [`Priority`]. A claimed job is *held* by a consumer until
//! it is acknowledged; a held job whose consumer stops renewing it for the
//! visibility timeout can be reclaimed by another. Final transitions are
//! compare-and-set on the record: the first run to finish a job wins, so a
//! job that ran twice still has one result.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::Serialize;

use super::{JobRecord, JobResult, JobSpec, JobStatus, Priority};
use crate::state::StateError;

/// What a queue operation returns.
pub(crate) type Answer<'a, T> = BoxFuture<'a, Result<T, StateError>>;

/// One claimed queue entry of job `id`.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub id: String,
    pub priority: Priority,
    /// The entry in the priority's queue (a stream entry id on Redis).
    pub entry: String,
}

/// What starting a claimed job found.
pub(crate) enum Start {
    /// It is now `running` (attempts counted): run it with this body.
    Run(JobRecord, Vec<u8>),
    /// It is already final (finished elsewhere, or cancelled).
    Done(JobRecord),
    /// Its record expired or was purged.
    Gone,
}

/// What cancelling found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cancel {
    Cancelled,
    NotFound,
    NotQueued(JobStatus),
}

/// A final transition.
pub(crate) struct Finish<'a> {
    pub status: JobStatus,
    pub result: Option<&'a JobResult>,
    pub error: Option<&'a str>,
    /// The webhook state to record (`pending` when a callback will follow).
    pub webhook: Option<&'a str>,
    pub now_ms: u64,
    /// How long the record stays.
    pub ttl: Duration,
    /// Keep the request body (dead letters, for a requeue).
    pub keep_body: bool,
}

/// A dead-lettered job.
#[derive(Debug, Clone, Serialize)]
pub struct DeadEntry {
    pub entry: String,
    pub id: String,
    pub priority: Priority,
    pub error: String,
    pub at_ms: u64,
}

/// A job backend (see the module docs).
pub(crate) trait Queue: Send + Sync {
    /// Stores `spec` (status `queued`, kept `ttl`) and enqueues it.
    fn submit<'a>(&'a self, spec: &'a JobSpec, body: &'a [u8], ttl: Duration) -> Answer<'a, ()>;
    fn load<'a>(&'a self, id: &'a str) -> Answer<'a, Option<JobRecord>>;
    /// Cancels a queued job.
    fn cancel<'a>(&'a self, id: &'a str, now_ms: u64, ttl: Duration) -> Answer<'a, Cancel>;
    /// Claims up to `n` new entries of `priority` for `consumer`.
    fn claim<'a>(
        &'a self,
        consumer: &'a str,
        priority: Priority,
        n: usize,
    ) -> Answer<'a, Vec<Delivery>>;
    /// Claims up to `n` entries held by anyone but not renewed for `idle`.
    fn reclaim<'a>(
        &'a self,
        consumer: &'a str,
        idle: Duration,
        n: usize,
    ) -> Answer<'a, Vec<Delivery>>;
    /// Renews `consumer`'s hold on `held`, unless another consumer took an
    /// entry over meanwhile (held entries idle less than `min_idle`).
    fn renew<'a>(
        &'a self,
        consumer: &'a str,
        held: &'a [Delivery],
        min_idle: Duration,
    ) -> Answer<'a, ()>;
    /// Marks the job running and counts the attempt, unless it is final.
    fn start<'a>(&'a self, id: &'a str, now_ms: u64) -> Answer<'a, Start>;
    /// The final transition, if the job is not final yet: whether it won.
    fn finish<'a>(&'a self, id: &'a str, f: Finish<'a>) -> Answer<'a, bool>;
    /// Records the webhook outcome.
    fn set_webhook<'a>(&'a self, id: &'a str, state: &'a str) -> Answer<'a, ()>;
    /// Puts a running job back to `queued`, to be claimed again at
    /// `ready_ms`, and acknowledges `d`. `count` false gives the attempt
    /// back (a wait for a rate-limit bucket or a hand-back is no attempt).
    fn later<'a>(
        &'a self,
        d: &'a Delivery,
        ready_ms: u64,
        count: bool,
        error: Option<&'a str>,
    ) -> Answer<'a, ()>;
    /// Adds the job to the dead letters at its own `priority` (where a
    /// requeue puts it) and acknowledges `d` (its record must already be
    /// `dead`).
    fn bury<'a>(
        &'a self,
        d: &'a Delivery,
        priority: Priority,
        error: &'a str,
        now_ms: u64,
    ) -> Answer<'a, ()>;
    /// Removes `d` from the queue.
    fn ack<'a>(&'a self, d: &'a Delivery) -> Answer<'a, ()>;
    /// Moves delayed jobs that are due into their queues and, with
    /// `aged_before_ms`, jobs queued (not claimed) at or before that time
    /// one priority up (aging); how many moved.
    fn promote<'a>(&'a self, now_ms: u64, aged_before_ms: Option<u64>) -> Answer<'a, usize>;
    /// Entries per priority (queued, delayed excluded, or held).
    fn depths(&self) -> Answer<'_, [u64; 5]>;
    fn dead_list(&self, limit: usize) -> Answer<'_, Vec<DeadEntry>>;
    /// Back to `queued` with its attempts reset; whether it was dead.
    fn dead_requeue<'a>(&'a self, id: &'a str, ttl: Duration) -> Answer<'a, bool>;
    /// Removes every dead letter and its record; how many.
    fn dead_purge(&self) -> Answer<'_, u64>;
}

// === in-process backend ===

/// The memory-state backend: the same behaviour as Redis Streams, on one
/// node (a worker task that panics leaves its job held until reclaimed).
#[derive(Default)]
pub(crate) struct MemoryQueue {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    seq: u64,
    records: HashMap<String, Stored>,
    /// Per priority: (sequence, when it was queued in ms, job id).
    ready: [VecDeque<(u64, u64, String)>; 5],
    held: HashMap<u64, Held>,
    delayed: BTreeMap<(u64, u64), (Priority, String)>,
    dead: VecDeque<DeadEntry>,
}

struct Stored {
    record: JobRecord,
    body: Option<Vec<u8>>,
    expires: Instant,
}

struct Held {
    id: String,
    priority: Priority,
    consumer: String,
    since: Instant,
}

impl Inner {
    fn record(&mut self, id: &str) -> Option<&mut Stored> {
        let now = Instant::now();
        if self.records.get(id).is_some_and(|s| s.expires <= now) {
            self.records.remove(id);
        }
        self.records.get_mut(id)
    }

    fn enqueue(&mut self, priority: Priority, id: String) {
        self.seq += 1;
        let seq = self.seq;
        self.ready[priority.index()].push_back((seq, super::now_ms(), id));
    }
}

fn entry_seq(d: &Delivery) -> u64 {
    d.entry.parse().unwrap_or(0)
}

fn ready<'a, T: Send + 'a>(v: T) -> Answer<'a, T> {
    Box::pin(std::future::ready(Ok(v)))
}

impl Queue for MemoryQueue {
    fn submit<'a>(&'a self, spec: &'a JobSpec, body: &'a [u8], ttl: Duration) -> Answer<'a, ()> {
        let mut inner = self.inner.lock();
        inner.records.insert(
            spec.id.clone(),
            Stored {
                record: JobRecord {
                    spec: spec.clone(),
                    status: JobStatus::Queued,
                    attempts: 0,
                    started_ms: None,
                    first_started_ms: None,
                    finished_ms: None,
                    result: None,
                    error: None,
                    webhook: None,
                },
                body: Some(body.to_vec()),
                expires: Instant::now() + ttl,
            },
        );
        inner.enqueue(spec.priority, spec.id.clone());
        ready(())
    }

    fn load<'a>(&'a self, id: &'a str) -> Answer<'a, Option<JobRecord>> {
        let mut inner = self.inner.lock();
        ready(inner.record(id).map(|s| s.record.clone()))
    }

    fn cancel<'a>(&'a self, id: &'a str, now_ms: u64, ttl: Duration) -> Answer<'a, Cancel> {
        let mut inner = self.inner.lock();
        let answer = match inner.record(id) {
            None => Cancel::NotFound,
            Some(s) if s.record.status == JobStatus::Queued => {
                s.record.status = JobStatus::Cancelled;
                s.record.finished_ms = Some(now_ms);
                s.body = None;
                s.expires = Instant::now() + ttl;
                Cancel::Cancelled
            }
            Some(s) => Cancel::NotQueued(s.record.status),
        };
        ready(answer)
    }

    fn claim<'a>(
        &'a self,
        consumer: &'a str,
        priority: Priority,
        n: usize,
    ) -> Answer<'a, Vec<Delivery>> {
        let mut inner = self.inner.lock();
        let mut out = Vec::new();
        while out.len() < n {
            let Some((seq, _, id)) = inner.ready[priority.index()].pop_front() else {
                break;
            };
            inner.held.insert(
                seq,
                Held {
                    id: id.clone(),
                    priority,
                    consumer: consumer.to_string(),
                    since: Instant::now(),
                },
            );
            out.push(Delivery {
                id,
                priority,
                entry: seq.to_string(),
            });
        }
        ready(out)
    }

    fn reclaim<'a>(
        &'a self,
        consumer: &'a str,
        idle: Duration,
        n: usize,
    ) -> Answer<'a, Vec<Delivery>> {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        let mut out = Vec::new();
        for (seq, held) in inner.held.iter_mut() {
            if out.len() >= n {
                break;
            }
            if now.duration_since(held.since) >= idle {
                held.consumer = consumer.to_string();
                held.since = now;
                out.push(Delivery {
                    id: held.id.clone(),
                    priority: held.priority,
                    entry: seq.to_string(),
                });
            }
        }
        ready(out)
    }

    fn renew<'a>(
        &'a self,
        consumer: &'a str,
        held: &'a [Delivery],
        _min_idle: Duration,
    ) -> Answer<'a, ()> {
        let mut inner = self.inner.lock();
        for d in held {
            if let Some(h) = inner.held.get_mut(&entry_seq(d))
                && h.consumer == consumer
            {
                h.since = Instant::now();
            }
        }
        ready(())
    }

    fn start<'a>(&'a self, id: &'a str, now_ms: u64) -> Answer<'a, Start> {
        let mut inner = self.inner.lock();
        let answer = match inner.record(id) {
            None => Start::Gone,
            Some(s) if s.record.status.is_final() => Start::Done(s.record.clone()),
            Some(s) => {
                s.record.status = JobStatus::Running;
                s.record.attempts += 1;
                s.record.started_ms = Some(now_ms);
                s.record.first_started_ms.get_or_insert(now_ms);
                Start::Run(s.record.clone(), s.body.clone().unwrap_or_default())
            }
        };
        ready(answer)
    }

    fn finish<'a>(&'a self, id: &'a str, f: Finish<'a>) -> Answer<'a, bool> {
        let mut inner = self.inner.lock();
        let won = match inner.record(id) {
            Some(s) if !s.record.status.is_final() => {
                s.record.status = f.status;
                s.record.result = f.result.cloned();
                s.record.error = f.error.map(str::to_owned);
                s.record.webhook = f.webhook.map(str::to_owned);
                s.record.finished_ms = Some(f.now_ms);
                if !f.keep_body {
                    s.body = None;
                }
                s.expires = Instant::now() + f.ttl;
                true
            }
            _ => false,
        };
        ready(won)
    }

    fn set_webhook<'a>(&'a self, id: &'a str, state: &'a str) -> Answer<'a, ()> {
        let mut inner = self.inner.lock();
        if let Some(s) = inner.record(id) {
            s.record.webhook = Some(state.to_string());
        }
        ready(())
    }

    fn later<'a>(
        &'a self,
        d: &'a Delivery,
        ready_ms: u64,
        count: bool,
        error: Option<&'a str>,
    ) -> Answer<'a, ()> {
        let mut inner = self.inner.lock();
        if let Some(s) = inner.record(&d.id)
            && s.record.status == JobStatus::Running
        {
            s.record.status = JobStatus::Queued;
            if !count {
                s.record.attempts = s.record.attempts.saturating_sub(1);
            }
            if let Some(e) = error {
                s.record.error = Some(e.to_string());
            }
        }
        inner.held.remove(&entry_seq(d));
        inner.seq += 1;
        let seq = inner.seq;
        inner
            .delayed
            .insert((ready_ms, seq), (d.priority, d.id.clone()));
        ready(())
    }

    fn bury<'a>(
        &'a self,
        d: &'a Delivery,
        priority: Priority,
        error: &'a str,
        now_ms: u64,
    ) -> Answer<'a, ()> {
        let mut inner = self.inner.lock();
        inner.held.remove(&entry_seq(d));
        inner.seq += 1;
        let seq = inner.seq;
        inner.dead.push_back(DeadEntry {
            entry: seq.to_string(),
            id: d.id.clone(),
            priority,
            error: error.to_string(),
            at_ms: now_ms,
        });
        ready(())
    }

    fn ack<'a>(&'a self, d: &'a Delivery) -> Answer<'a, ()> {
        self.inner.lock().held.remove(&entry_seq(d));
        ready(())
    }

    fn promote<'a>(&'a self, now_ms: u64, aged_before_ms: Option<u64>) -> Answer<'a, usize> {
        let mut inner = self.inner.lock();
        let later = inner.delayed.split_off(&(now_ms + 1, 0));
        let due = std::mem::replace(&mut inner.delayed, later);
        let mut n = due.len();
        for (_, (priority, id)) in due {
            inner.enqueue(priority, id);
        }
        // Aging, highest level first: a job moved up now is queued anew
        // there, so it moves at most one level per call.
        if let Some(cutoff) = aged_before_ms {
            for p in Priority::ALL.into_iter().skip(1) {
                let up = Priority::ALL[p.index() - 1];
                while inner.ready[p.index()]
                    .front()
                    .is_some_and(|(_, at, _)| *at <= cutoff)
                {
                    if let Some((_, _, id)) = inner.ready[p.index()].pop_front() {
                        inner.enqueue(up, id);
                        n += 1;
                    }
                }
            }
        }
        // Expired records go (lookups drop them lazily too).
        let now = Instant::now();
        inner.records.retain(|_, s| s.expires > now);
        ready(n)
    }

    fn depths(&self) -> Answer<'_, [u64; 5]> {
        let inner = self.inner.lock();
        let mut out = [0u64; 5];
        for p in Priority::ALL {
            out[p.index()] = inner.ready[p.index()].len() as u64;
        }
        for h in inner.held.values() {
            out[h.priority.index()] += 1;
        }
        ready(out)
    }

    fn dead_list(&self, limit: usize) -> Answer<'_, Vec<DeadEntry>> {
        let inner = self.inner.lock();
        ready(inner.dead.iter().take(limit).cloned().collect())
    }

    fn dead_requeue<'a>(&'a self, id: &'a str, ttl: Duration) -> Answer<'a, bool> {
        let mut inner = self.inner.lock();
        let Some(pos) = inner.dead.iter().position(|d| d.id == id) else {
            return ready(false);
        };
        let priority = match inner.record(id) {
            Some(s) if s.record.status == JobStatus::Dead => {
                s.record.status = JobStatus::Queued;
                s.record.attempts = 0;
                s.record.first_started_ms = None;
                s.record.finished_ms = None;
                s.record.result = None;
                s.expires = Instant::now() + ttl;
                s.record.spec.priority
            }
            _ => return ready(false),
        };
        inner.dead.remove(pos);
        inner.enqueue(priority, id.to_string());
        ready(true)
    }

    fn dead_purge(&self) -> Answer<'_, u64> {
        let mut inner = self.inner.lock();
        let dead = std::mem::take(&mut inner.dead);
        for d in &dead {
            if inner
                .records
                .get(&d.id)
                .is_some_and(|s| s.record.status == JobStatus::Dead)
            {
                inner.records.remove(&d.id);
            }
        }
        ready(dead.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, priority: Priority) -> JobSpec {
        JobSpec {
            id: id.into(),
            tenant: "t".into(),
            tier: "default".into(),
            key_id: None,
            path: "/v1/chat/completions".into(),
            priority,
            created_ms: 0,
            deadline_ms: u64::MAX,
            callback_url: None,
            client_ip: "127.0.0.1".into(),
            headers: Vec::new(),
        }
    }

    fn claim_all(q: &MemoryQueue, p: Priority) -> Vec<String> {
        let claimed = futures::executor::block_on(q.claim("n", p, 100)).unwrap();
        claimed.into_iter().map(|d| d.id).collect()
    }

    #[test]
    fn an_aged_job_moves_up_one_level_per_promotion() {
        let q = MemoryQueue::default();
        let ttl = Duration::from_secs(60);
        futures::executor::block_on(q.submit(&spec("old", Priority::Bulk), b"{}", ttl)).unwrap();
        let queued = super::super::now_ms();
        let promote = |cutoff| futures::executor::block_on(q.promote(0, cutoff)).unwrap();
        // Not aged yet (queued after the cutoff), or aging off: stays.
        assert_eq!(promote(Some(queued.saturating_sub(1_000))), 0);
        assert_eq!(promote(None), 0);
        // Aged: one level up per promotion, up to critical.
        for level in [
            Priority::Low,
            Priority::Normal,
            Priority::High,
            Priority::Critical,
        ] {
            assert_eq!(promote(Some(u64::MAX)), 1);
            let depths = futures::executor::block_on(q.depths()).unwrap();
            assert_eq!(depths[level.index()], 1, "{level:?}: {depths:?}");
            assert_eq!(depths.iter().sum::<u64>(), 1);
        }
        assert_eq!(promote(Some(u64::MAX)), 0, "critical is the top");
        assert_eq!(claim_all(&q, Priority::Critical), vec!["old".to_string()]);
        // A claimed job does not age.
        assert_eq!(promote(Some(u64::MAX)), 0);
    }
}
