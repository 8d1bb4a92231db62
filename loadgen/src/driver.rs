//! Running the load: worker tasks (one per connection) on the caller's
//! runtime, fed by a pacer thread in open loop or by their own completions
//! in closed loop.
//!
//! Why a pacer thread: tokio's timer has millisecond resolution, which would
//! add up to a millisecond of generator lateness to every open-loop request:
//! more than the overhead being measured. A plain thread sleeping until each
//! due time (with the kernel's timer slack turned off) wakes within tens of
//! microseconds, costs one wake-up per release, and its lateness is reported
//! as the generator's send delay.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};

use super::BenchError;
use super::cpu;
use super::options::{BenchOptions, Load, ResolvedTarget};
use super::record::{Recorder, nanos};
use super::schedule::{OpenPlan, Split, Timeline};
use super::send::Sender;

/// What a finished run hands to the report.
pub(crate) struct Measured {
    pub recorder: Recorder,
    /// The measured window, in ns from the run start.
    pub window_ns: (u64, u64),
    /// CPU time of the pacer thread, when it ran and could be read.
    pub pacer_cpu_ns: Option<u64>,
}

/// Runs the whole benchmark on the current runtime.
pub(crate) async fn drive(
    opts: &BenchOptions,
    targets: &[ResolvedTarget],
) -> Result<Measured, BenchError> {
    let workers = match opts.load {
        Load::Rate(_) => opts.connections,
        Load::Concurrency(c) => c,
    };
    let sender = Arc::new(Sender::new(targets, opts, workers)?);
    let warmup_ns = nanos(opts.warmup);
    let split = Split::new(targets.len(), opts.interleave, warmup_ns);
    let duration_ns = opts.duration.map(nanos);
    match opts.load {
        Load::Rate(rate) => {
            let timeline = Timeline::new(rate);
            let plan = OpenPlan::new(timeline, warmup_ns, duration_ns, opts.requests);
            let ctx = OpenCtx {
                gate: Arc::new(Gate::new(plan.total)),
                sender,
                timeline,
                plan,
                split,
                t0: Instant::now(),
                targets: targets.len(),
                keep_ttfb: opts.stream,
            };
            open_loop(ctx, workers).await
        }
        Load::Concurrency(_) => {
            let ctx = ClosedCtx {
                sender,
                split,
                warmup_ns,
                end_ns: duration_ns.map(|d| warmup_ns.saturating_add(d)),
                limit: opts.requests,
                seq: AtomicU64::new(0),
                measured: AtomicU64::new(0),
                t0: Instant::now(),
                targets: targets.len(),
                keep_ttfb: opts.stream,
            };
            closed_loop(Arc::new(ctx), workers).await
        }
    }
}

// === open loop ===

/// Hands due requests to idle workers: the pacer raises `released`, workers
/// claim indices below it.
struct Gate {
    next: AtomicU64,
    released: AtomicU64,
    total: u64,
    notify: Notify,
    /// Set when the run is dropped early, so the pacer thread stops.
    abort: AtomicBool,
}

enum Claim {
    Got(u64),
    NotYet,
    Done,
}

impl Gate {
    fn new(total: u64) -> Self {
        Self {
            next: AtomicU64::new(0),
            released: AtomicU64::new(0),
            total,
            notify: Notify::new(),
            abort: AtomicBool::new(false),
        }
    }

    fn try_claim(&self) -> Claim {
        loop {
            let n = self.next.load(Ordering::Acquire);
            if n >= self.total {
                return Claim::Done;
            }
            if n >= self.released.load(Ordering::Acquire) {
                return Claim::NotYet;
            }
            if self
                .next
                .compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Claim::Got(n);
            }
        }
    }

    /// The next due request, waiting for the pacer if none is; `None` once
    /// every request has been claimed.
    async fn claim(&self) -> Option<u64> {
        loop {
            // Register before checking, so a release between the check and
            // the await still wakes us.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_claim() {
                Claim::Got(i) => return Some(i),
                Claim::Done => return None,
                Claim::NotYet => notified.await,
            }
        }
    }
}

/// Stops the pacer if the run is dropped before it finishes.
struct AbortOnDrop(Arc<Gate>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort.store(true, Ordering::Release);
    }
}

struct OpenCtx {
    gate: Arc<Gate>,
    sender: Arc<Sender>,
    timeline: Timeline,
    plan: OpenPlan,
    split: Split,
    t0: Instant,
    targets: usize,
    keep_ttfb: bool,
}

async fn open_loop(ctx: OpenCtx, workers: usize) -> Result<Measured, BenchError> {
    let ctx = Arc::new(ctx);
    let _abort = AbortOnDrop(ctx.gate.clone());
    let (cpu_tx, cpu_rx) = oneshot::channel();
    let pacer_ctx = ctx.clone();
    std::thread::Builder::new()
        .name("sluice-loadgen-pacer".into())
        .spawn(move || {
            cpu::precise_sleep();
            let before = cpu::thread_cpu_ns();
            pace(&pacer_ctx, workers);
            let used = before
                .zip(cpu::thread_cpu_ns())
                .map(|(b, a)| a.saturating_sub(b));
            let _ = cpu_tx.send(used);
        })
        .map_err(BenchError::Start)?;

    let handles: Vec<_> = (0..workers)
        .map(|_| tokio::spawn(open_worker(ctx.clone())))
        .collect();
    let recorder = merge(handles, ctx.targets, ctx.keep_ttfb, ctx.t0).await?;
    Ok(Measured {
        recorder,
        window_ns: (ctx.plan.start_ns, ctx.plan.end_ns),
        pacer_cpu_ns: cpu_rx.await.ok().flatten(),
    })
}

/// The pacer thread: sleeps until the next request is due, then releases
/// every request due by now and wakes that many idle workers.
fn pace(ctx: &OpenCtx, workers: usize) {
    let gate = &ctx.gate;
    let mut released = 0;
    while released < gate.total && !gate.abort.load(Ordering::Acquire) {
        let due_at = ctx.t0 + Duration::from_nanos(ctx.timeline.offset_ns(released));
        let now = Instant::now();
        if due_at > now {
            std::thread::sleep(due_at - now);
        }
        let elapsed = nanos(ctx.t0.elapsed());
        let due = ctx.timeline.due_at(elapsed).clamp(released + 1, gate.total);
        gate.released.store(due, Ordering::Release);
        // Busy workers look for more work when they finish; only idle ones
        // need waking, and never more than there are workers.
        for _ in 0..(due - released).min(workers as u64) {
            gate.notify.notify_one();
        }
        released = due;
    }
    // Wake idle workers so they see the end.
    gate.notify.notify_waiters();
}

async fn open_worker(ctx: Arc<OpenCtx>) -> Recorder {
    let mut rec = Recorder::new(ctx.targets, ctx.keep_ttfb, ctx.t0);
    while let Some(i) = ctx.gate.claim().await {
        let offset = ctx.timeline.offset_ns(i);
        let scheduled = ctx.t0 + Duration::from_nanos(offset);
        let target = ctx.split.target(offset, i);
        let sent = Instant::now();
        let exchange = ctx.sender.send(target, i).await;
        if i >= ctx.plan.warm {
            rec.record(target, scheduled, Some(sent), &exchange);
        }
    }
    rec
}

// === closed loop ===

struct ClosedCtx {
    sender: Arc<Sender>,
    split: Split,
    warmup_ns: u64,
    end_ns: Option<u64>,
    limit: Option<u64>,
    /// Every request sent, warm-up included: the interleave and unique tags.
    seq: AtomicU64,
    /// Measured requests started, against `limit`.
    measured: AtomicU64,
    t0: Instant,
    targets: usize,
    keep_ttfb: bool,
}

async fn closed_loop(ctx: Arc<ClosedCtx>, workers: usize) -> Result<Measured, BenchError> {
    let handles: Vec<_> = (0..workers)
        .map(|_| tokio::spawn(closed_worker(ctx.clone())))
        .collect();
    let recorder = merge(handles, ctx.targets, ctx.keep_ttfb, ctx.t0).await?;
    // Requests still in flight at the deadline finish after it but started
    // before it, so the window ends at the deadline; a count bound ends it
    // at the last completion.
    let end = ctx
        .end_ns
        .map_or(recorder.last_done_ns, |e| e.min(recorder.last_done_ns));
    Ok(Measured {
        recorder,
        window_ns: (ctx.warmup_ns.min(end), end),
        pacer_cpu_ns: None,
    })
}

async fn closed_worker(ctx: Arc<ClosedCtx>) -> Recorder {
    let mut rec = Recorder::new(ctx.targets, ctx.keep_ttfb, ctx.t0);
    loop {
        let sent = Instant::now();
        let offset = nanos(sent.saturating_duration_since(ctx.t0));
        if ctx.end_ns.is_some_and(|end| offset >= end) {
            break;
        }
        let measured = offset >= ctx.warmup_ns;
        if measured
            && let Some(limit) = ctx.limit
            && ctx.measured.fetch_add(1, Ordering::AcqRel) >= limit
        {
            break;
        }
        let seq = ctx.seq.fetch_add(1, Ordering::AcqRel);
        let target = ctx.split.target(offset, seq);
        let exchange = ctx.sender.send(target, seq).await;
        if measured {
            rec.record(target, sent, None, &exchange);
        }
    }
    rec
}

/// Waits for every worker and folds their samples together.
async fn merge(
    handles: Vec<tokio::task::JoinHandle<Recorder>>,
    targets: usize,
    keep_ttfb: bool,
    t0: Instant,
) -> Result<Recorder, BenchError> {
    let mut all = Recorder::new(targets, keep_ttfb, t0);
    for h in handles {
        all.merge(h.await.map_err(|_| BenchError::Panicked)?);
    }
    Ok(all)
}
