//! What each plugin instance runs inside: its store data, memory guard,
//! capability-less WASI context and captured stdout/stderr; and the clock
//! of each call, which time-slices its guest code on the runtime's slow
//! lanes and enforces its deadline.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWrite;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreContextMut, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::engine::{EpochTicker, Ticking};
use crate::policy::Slot;
use crate::state::State;

/// Where the runtime reports plugin calls and plugins' custom metrics.
pub trait PluginMetrics: Send + Sync {
    /// One call of `slot` ended with `result` ("ok", "trap", "timeout", "oom", "error").
    fn call(&self, slot: Slot, result: &'static str, took: Duration);
    fn counter_add(&self, slot: Slot, name: &str, value: u64);
    fn gauge_set(&self, slot: Slot, name: &str, value: f64);
    fn histogram_observe(&self, slot: Slot, name: &str, value: f64);
}

/// Per-plugin sandbox limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Linear memory cap per instance, in bytes.
    pub memory_bytes: usize,
    /// Deadline for one call (init included): the time it is active, not
    /// the time it gives to other tasks (see [`CallClock`]).
    pub deadline: Duration,
    /// Largest text (cache key, semantic text, reason) accepted back.
    pub max_answer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 16 << 20,
            deadline: Duration::from_millis(50),
            max_answer_bytes: 64 << 10,
        }
    }
}

/// Turns at running guest code past its first epoch tick: one per worker
/// thread of the runtime, shared by every plugin call. A call that outlasts
/// a tick waits for a turn (off the run queue) and keeps it until it ends,
/// yielding at every tick; so each worker runs at most one slow guest
/// between its other tasks, however many slow calls are in flight, and the
/// rest queue. Calls that end within a tick never take a turn.
#[derive(Clone)]
pub(crate) struct SlowLanes(Arc<Semaphore>);

impl SlowLanes {
    /// One lane per worker of the current tokio runtime (one per core
    /// outside a runtime).
    pub(crate) fn per_worker() -> Self {
        let workers = tokio::runtime::Handle::try_current()
            .map(|h| h.metrics().num_workers())
            .or_else(|_| std::thread::available_parallelism().map(usize::from))
            .unwrap_or(1);
        Self(Arc::new(Semaphore::new(workers.max(1))))
    }
}

/// The clock of one call: how long it has been active, meaning its time
/// less the time it spent yielded or waiting for a turn. Deadlines count
/// active time: what the call would have used had it held its thread
/// throughout. Time waiting in a host import is active time.
#[derive(Clone)]
pub(crate) struct CallClock {
    started: Instant,
    shared: Arc<Shared>,
}

struct Shared {
    yielded_ns: AtomicU64,
    lanes: SlowLanes,
    /// Taken at the first tick; released when the call ends.
    turn: OnceLock<OwnedSemaphorePermit>,
}

impl CallClock {
    /// A clock for a call starting now.
    pub(crate) fn start(lanes: &SlowLanes) -> Self {
        Self {
            started: Instant::now(),
            shared: Arc::new(Shared {
                yielded_ns: AtomicU64::new(0),
                lanes: lanes.clone(),
                turn: OnceLock::new(),
            }),
        }
    }

    /// How long the call has been active.
    pub(crate) fn active(&self) -> Duration {
        let yielded = Duration::from_nanos(self.shared.yielded_ns.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(yielded)
    }

    /// Gives the thread up once: waits for a turn if the call has none yet,
    /// then yields. Neither counts as active time.
    async fn pause(self) {
        let at = Instant::now();
        if self.shared.turn.get().is_none() {
            // The semaphore is never closed.
            if let Ok(turn) = self.shared.lanes.0.clone().acquire_owned().await {
                let _ = self.shared.turn.set(turn);
            }
        }
        // Tokio's yield lets every other ready task run first (a plain wake
        // would put this one straight back in front).
        tokio::task::yield_now().await;
        let ns = u64::try_from(at.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.shared.yielded_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// A store's epoch callback: at every epoch tick the guest runs
    /// through, it pauses ([`SlowLanes`]), so a slow guest shares its worker
    /// thread with other requests a tick at a time; once the call has been
    /// active for `deadline` it traps instead (`Trap::Interrupt`, reported
    /// as a deadline).
    pub(crate) fn time_slices(
        &self,
        deadline: Duration,
    ) -> impl FnMut(StoreContextMut<'_, StoreData>) -> wasmtime::Result<UpdateDeadline>
    + Send
    + Sync
    + 'static {
        let clock = self.clone();
        move |_| {
            if clock.active() >= deadline {
                return Ok(UpdateDeadline::Interrupt);
            }
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(clock.clone().pause()),
            ))
        }
    }

    /// Runs `work` until it ends (`Some`) or the call has been active for
    /// `budget` (`None`): bounds time spent waiting in host imports, where
    /// no epoch tick reaches the guest.
    pub(crate) async fn bound<R>(
        &self,
        budget: Duration,
        work: impl Future<Output = R>,
    ) -> Option<R> {
        let mut work = std::pin::pin!(work);
        loop {
            let left = budget.saturating_sub(self.active());
            if left.is_zero() {
                return None;
            }
            // Re-armed with what is left after time spent paused.
            if let Ok(r) = tokio::time::timeout(left, &mut work).await {
                return Some(r);
            }
        }
    }
}

/// What host imports may reach on behalf of one plugin.
pub(crate) struct HostEnv {
    /// The slot, used in logs and metric labels.
    pub slot: Slot,
    /// The state namespace the plugin's keys live in.
    pub namespace: String,
    /// The plugin's own config as JSON.
    pub config_json: Arc<str>,
    pub state: State,
    pub metrics: Option<Arc<dyn PluginMetrics>>,
}

/// The data of one instance's store.
pub(crate) struct StoreData {
    /// Built on a guest's first WASI call: most plugins never make one, and
    /// a context costs more than the rest of a fresh store.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    pub(crate) memory: MemoryGuard,
    pub(crate) host: Arc<HostEnv>,
    pub(crate) output: CapturedOutput,
    /// Keeps the epoch advancing while this store lives.
    _ticking: Ticking,
}

impl StoreData {
    /// The data of a new store, which keeps `ticker` ticking while it lives.
    pub(crate) fn new(host: Arc<HostEnv>, limits: &Limits, ticker: &EpochTicker) -> Self {
        Self {
            wasi: None,
            table: ResourceTable::new(),
            memory: MemoryGuard::new(limits.memory_bytes),
            host,
            output: CapturedOutput::new(OUTPUT_CAPTURE_BYTES),
            _ticking: ticker.ticking(),
        }
    }
}

/// No preopened directories, no sockets, no environment, no args: WASI is
/// linked only so std-using guests instantiate; stdout and stderr go to the
/// log.
fn capability_less_wasi(output: &CapturedOutput) -> WasiCtx {
    let mut builder = WasiCtx::builder();
    builder
        .stdout(output.clone())
        .stderr(output.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    builder.build()
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let output = &self.output;
        WasiCtxView {
            ctx: self
                .wasi
                .get_or_insert_with(|| capability_less_wasi(output)),
            table: &mut self.table,
        }
    }
}

/// Caps an instance's linear memory and tables; remembers whether the cap was
/// hit so a resulting trap is reported as out-of-memory.
pub(crate) struct MemoryGuard {
    limit: usize,
    pub(crate) exceeded: bool,
}

const MAX_TABLE_ELEMENTS: usize = 100_000;

impl MemoryGuard {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            exceeded: false,
        }
    }
}

impl ResourceLimiter for MemoryGuard {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            // Refuse the growth; the guest sees memory.grow fail and (for
            // Rust) aborts, which traps this call only.
            self.exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }
}

/// How much of a plugin's stdout/stderr one call keeps for the log; the rest
/// is dropped (the guest still sees its writes succeed).
const OUTPUT_CAPTURE_BYTES: usize = 16 * 1024;

/// Stdout/stderr of one instance, captured up to a cap.
#[derive(Clone)]
pub(crate) struct CapturedOutput {
    inner: Arc<Mutex<Captured>>,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    cap: usize,
    dropped: usize,
}

impl CapturedOutput {
    fn new(cap: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Captured {
                cap,
                ..Default::default()
            })),
        }
    }

    /// Takes what was captured so far and how many bytes were dropped.
    pub(crate) fn take(&self) -> (Vec<u8>, usize) {
        let mut inner = self.inner.lock();
        let dropped = std::mem::take(&mut inner.dropped);
        (std::mem::take(&mut inner.bytes), dropped)
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut inner = self.inner.lock();
        let room = inner.cap.saturating_sub(inner.bytes.len());
        let kept = room.min(buf.len());
        inner.bytes.extend_from_slice(&buf[..kept]);
        inner.dropped += buf.len() - kept;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What the sandbox gives a component for one import it declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Works as declared.
    Granted,
    /// Works, but goes somewhere else (stdout and stderr: the log).
    Captured,
    /// Links, but every use is refused or sees nothing.
    Denied,
}

/// What the capability-less sandbox grants for the import `name`, and why:
/// the host API, read-only clocks and random numbers are granted;
/// stdout/stderr are captured to the log; sockets, files, environment and
/// arguments are denied (they link, so std-using guests start, but a
/// socket is refused, there are no preopened directories, and the
/// environment and arguments are empty).
pub fn import_access(name: &str) -> (Access, &'static str) {
    let iface = name.split('@').next().unwrap_or(name);
    match iface {
        i if i.starts_with("sluice:policy/") => (Access::Granted, "the gateway's policy API"),
        "wasi:cli/stdout" | "wasi:cli/stderr" => (
            Access::Captured,
            "to the gateway log (WARN) and `plugin test` output",
        ),
        "wasi:cli/stdin" => (Access::Denied, "empty"),
        "wasi:cli/environment" => (Access::Denied, "no environment variables, no arguments"),
        i if i.starts_with("wasi:cli/terminal") => (Access::Denied, "not a terminal"),
        "wasi:cli/exit" => (Access::Granted, "ends the call, as a trap"),
        i if i.starts_with("wasi:clocks/") => (Access::Granted, "read-only clock"),
        i if i.starts_with("wasi:random/") => (Access::Granted, "random numbers"),
        i if i.starts_with("wasi:io/") => (Access::Granted, "streams of the imports above"),
        i if i.starts_with("wasi:filesystem/") => (Access::Denied, "no preopened directories"),
        i if i.starts_with("wasi:sockets/") => (
            Access::Denied,
            "no network: TCP, UDP and name lookup are refused",
        ),
        _ => (Access::Denied, "linked, not granted"),
    }
}

// The gateway's metrics take what the runtime reports. (Here, not in
// telemetry: telemetry does not depend on the plugin runtime.)
impl PluginMetrics for crate::telemetry::Metrics {
    fn call(&self, slot: Slot, result: &'static str, took: Duration) {
        self.plugin_call(slot, result, took);
    }

    fn counter_add(&self, slot: Slot, name: &str, value: u64) {
        self.plugin_counter_add(slot, name, value);
    }

    fn gauge_set(&self, slot: Slot, name: &str, value: f64) {
        self.plugin_gauge_set(slot, name, value);
    }

    fn histogram_observe(&self, slot: Slot, name: &str, value: f64) {
        self.plugin_histogram_observe(slot, name, value);
    }
}
