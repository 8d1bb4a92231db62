//! [`JobMetrics`]: the job series of the gateway's registry.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The job priorities, highest first (label values).
const PRIORITIES: [&str; 5] = ["critical", "high", "normal", "low", "bulk"];

/// Queue wait and run time buckets (seconds): 10 ms to 1 h.
const BUCKETS: [f64; 14] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PriorityLabels {
    priority: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

type Histograms = Family<PriorityLabels, Histogram, fn() -> Histogram>;

/// Queue depth, wait and run times per priority; attempts, final
/// statuses, dead letters, duplicates suppressed, webhook deliveries.
#[derive(Debug, Clone)]
pub struct JobMetrics {
    accepted: Family<PriorityLabels, Counter>,
    depth: Family<PriorityLabels, Gauge>,
    wait: Histograms,
    run: Histograms,
    attempts: Counter,
    finished: Family<StatusLabels, Counter>,
    dead: Counter,
    duplicates: Counter,
    webhooks: Family<ResultLabels, Counter>,
    endpoints_disabled: Counter,
}

impl JobMetrics {
    /// Registers the job series in `registry`.
    pub fn register(registry: &mut Registry) -> JobMetrics {
        let m = JobMetrics {
            accepted: Family::default(),
            depth: Family::default(),
            wait: Family::new_with_constructor(|| Histogram::new(BUCKETS)),
            run: Family::new_with_constructor(|| Histogram::new(BUCKETS)),
            attempts: Counter::default(),
            finished: Family::default(),
            dead: Counter::default(),
            duplicates: Counter::default(),
            webhooks: Family::default(),
            endpoints_disabled: Counter::default(),
        };
        registry.register(
            "jobs_accepted",
            "Jobs accepted (Prefer: respond-async), by priority",
            m.accepted.clone(),
        );
        registry.register(
            "jobs_queue_depth",
            "Jobs queued or running, by priority (sampled by each node's workers)",
            m.depth.clone(),
        );
        registry.register_with_unit(
            "jobs_wait",
            "Time from a job's acceptance to a run starting, by priority",
            Unit::Seconds,
            m.wait.clone(),
        );
        registry.register_with_unit(
            "jobs_run",
            "Time one run of a job took, by priority",
            Unit::Seconds,
            m.run.clone(),
        );
        registry.register(
            "jobs_attempts",
            "Runs of jobs started (first runs and retries)",
            m.attempts.clone(),
        );
        registry.register(
            "jobs_finished",
            "Jobs that reached a final status, by status",
            m.finished.clone(),
        );
        registry.register(
            "jobs_dead_letters",
            "Jobs moved to the dead-letter stream after their last attempt",
            m.dead.clone(),
        );
        registry.register(
            "jobs_duplicates_suppressed",
            "Runs whose result was dropped because another run of the same job finished first",
            m.duplicates.clone(),
        );
        registry.register(
            "job_webhook_deliveries",
            "Webhook delivery attempts, by result (ok, error)",
            m.webhooks.clone(),
        );
        registry.register(
            "job_webhook_endpoints_disabled",
            "Webhook endpoints disabled after failing repeatedly (an alert)",
            m.endpoints_disabled.clone(),
        );
        for priority in PRIORITIES {
            let l = PriorityLabels { priority };
            let _ = m.accepted.get_or_create(&l);
            let _ = m.depth.get_or_create(&l);
        }
        m
    }

    /// A job of `priority` accepted.
    pub fn accepted(&self, priority: &'static str) {
        self.accepted
            .get_or_create(&PriorityLabels { priority })
            .inc();
    }

    /// Queue depths, highest priority first.
    pub fn depths(&self, depths: [u64; 5]) {
        for (priority, depth) in PRIORITIES.into_iter().zip(depths) {
            self.depth
                .get_or_create(&PriorityLabels { priority })
                .set(depth as i64);
        }
    }

    /// A run started after the job `waited` since it was accepted.
    pub fn started(&self, priority: &'static str, waited: Duration) {
        self.attempts.inc();
        self.wait
            .get_or_create(&PriorityLabels { priority })
            .observe(waited.as_secs_f64());
    }

    /// A run that took `took`.
    pub fn ran(&self, priority: &'static str, took: Duration) {
        self.run
            .get_or_create(&PriorityLabels { priority })
            .observe(took.as_secs_f64());
    }

    /// A job reached final `status` (`dead` also counts a dead letter).
    pub fn finished(&self, status: &'static str) {
        self.finished.get_or_create(&StatusLabels { status }).inc();
        if status == "dead" {
            self.dead.inc();
        }
    }

    /// A run's result dropped: another run finished the job first.
    pub fn duplicate(&self) {
        self.duplicates.inc();
    }

    /// One webhook delivery attempt.
    pub fn webhook(&self, ok: bool) {
        self.webhooks
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// An endpoint disabled (the alert).
    pub fn endpoint_disabled(&self) {
        self.endpoints_disabled.inc();
    }
}
