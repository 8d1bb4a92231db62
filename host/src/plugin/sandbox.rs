//! What each plugin instance runs inside: its store data, memory guard,
//! capability-less WASI context and captured stdout/stderr.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWrite;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

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
    /// Deadline for one call (init included), in wall-clock epoch ticks.
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
}

impl StoreData {
    pub(crate) fn new(host: Arc<HostEnv>, limits: &Limits) -> Self {
        Self {
            wasi: None,
            table: ResourceTable::new(),
            memory: MemoryGuard::new(limits.memory_bytes),
            host,
            output: CapturedOutput::new(OUTPUT_CAPTURE_BYTES),
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
