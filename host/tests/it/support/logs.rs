//! The gateway's log, captured for a test: a tokio runtime whose threads
//! (workers, the blocking pool, and the test's own thread while it runs)
//! send their `tracing` events to an in-memory buffer, formatted as
//! `sluice serve` prints them. Other tests in the binary are unaffected:
//! the subscriber is each thread's default, not the process's.

use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing::Dispatch;

/// The captured log.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `test` on a fresh two-worker runtime logging at `level` and above
/// to the [`Logs`] it is given.
pub fn with_logs<F: Future>(level: tracing::Level, test: impl FnOnce(Logs) -> F) -> F::Output {
    let logs = Logs::default();
    let writer = logs.clone();
    let dispatch = Dispatch::new(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(level)
            .finish(),
    );
    let for_threads = dispatch.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            // For the thread's whole life: the guard is never dropped.
            std::mem::forget(tracing::dispatcher::set_default(&for_threads));
        })
        .build()
        .expect("runtime");
    let _guard = tracing::dispatcher::set_default(&dispatch);
    runtime.block_on(test(logs))
}
