//! The in-process mock for tests: start, inspect, script.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;

use super::server::run;
use super::{Fault, MockConfig, Mode, SeenRequest, Shared, micros, route_index};
use crate::policy::Route;

/// A mock running in-process on 127.0.0.1, scriptable from a test. Dropping
/// the handle stops it.
pub struct MockHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

/// Starts a mock on 127.0.0.1 (a port the OS picks) in the current tokio
/// runtime.
///
/// # Panics
/// When no loopback port can be bound or there is no tokio runtime; this is a
/// test convenience, see [`try_spawn`].
pub fn spawn(config: MockConfig) -> MockHandle {
    try_spawn(config).expect("mock upstream: bind 127.0.0.1:0")
}

/// [`spawn`], reporting a bind failure instead of panicking.
pub fn try_spawn(config: MockConfig) -> std::io::Result<MockHandle> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let listener = TcpListener::from_std(std_listener)?;
    let shared = Arc::new(Shared::new(config));
    // The handle stops the loop through `mode` when dropped.
    tokio::spawn(run(listener, shared.clone(), std::future::pending()));
    Ok(MockHandle { addr, shared })
}

impl MockHandle {
    /// The address the mock listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI-style base URL, e.g. `http://127.0.0.1:PORT/v1` (the
    /// Anthropic route is below it too: `{base_url}/messages`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// A full URL for `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests received on `route`, whatever their outcome (failures,
    /// scripted faults and auth errors count).
    pub fn calls(&self, route: Route) -> u64 {
        self.shared.calls[route_index(route)].load(Ordering::SeqCst)
    }

    /// Requests received on the three API routes together.
    pub fn total_calls(&self) -> u64 {
        self.shared
            .calls
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .sum()
    }

    /// `GET /v1/models` requests received.
    pub fn model_list_calls(&self) -> u64 {
        self.shared.model_calls.load(Ordering::SeqCst)
    }

    /// API requests being handled right now (paused ones included).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The most API requests ever handled at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// The last request received (any route).
    pub fn last_request(&self) -> Option<SeenRequest> {
        self.shared.recent.lock().back().cloned()
    }

    /// The most recent requests, oldest first (up to 64).
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.recent.lock().iter().cloned().collect()
    }

    /// Queues a fault for the next API request after those already queued.
    pub fn push_fault(&self, fault: Fault) {
        self.shared.script.lock().push_back(fault);
    }

    /// The next `n` API requests answer `status` in the provider's error
    /// shape, with `retry-after` / `retry-after-ms` when given.
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<Duration>) {
        let mut script = self.shared.script.lock();
        script.extend(std::iter::repeat_n(
            Fault::Status {
                status,
                retry_after,
            },
            n,
        ));
    }

    /// The next `n` API requests wait `delay` before answering.
    pub fn delay_next(&self, n: usize, delay: Duration) {
        let mut script = self.shared.script.lock();
        script.extend(std::iter::repeat_n(Fault::Delay(delay), n));
    }

    /// Faults not consumed yet.
    pub fn pending_faults(&self) -> usize {
        self.shared.script.lock().len()
    }

    /// Forgets queued faults, counters and recorded requests.
    pub fn reset(&self) {
        self.shared.script.lock().clear();
        self.shared.recent.lock().clear();
        for c in &self.shared.calls {
            c.store(0, Ordering::SeqCst);
        }
        self.shared.model_calls.store(0, Ordering::SeqCst);
        let now = self.shared.in_flight.load(Ordering::SeqCst);
        self.shared.max_in_flight.store(now, Ordering::SeqCst);
    }

    /// Latency added before every answer from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.shared
            .latency_us
            .store(micros(latency), Ordering::Relaxed);
    }

    /// Fraction of API requests answered with a server error from now on
    /// (see [`MockConfig::error_rate`]).
    pub fn set_error_rate(&self, rate: f64) {
        self.shared
            .error_rate
            .store(rate.to_bits(), Ordering::Relaxed);
    }

    /// Delay between streamed events from now on.
    pub fn set_chunk_delay(&self, delay: Duration) {
        self.shared
            .chunk_delay_us
            .store(micros(delay), Ordering::Relaxed);
    }

    /// Holds every API request (after counting and recording it) until
    /// [`resume`](Self::resume): lets a test line up concurrent requests
    /// (e.g. to check coalescing) without sleeping.
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
    }

    /// Releases held requests and stops holding new ones.
    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
        self.shared.resumed.notify_waiters();
    }

    /// Takes the mock down (`true`): the port is closed, so new connections
    /// are refused, and open connections are dropped mid-request. `false`
    /// listens again on the same port. Returns once the change is in effect.
    pub async fn set_down(&self, down: bool) -> std::io::Result<()> {
        let target = if down { Mode::Down } else { Mode::Up };
        if *self.shared.applied.borrow() == target {
            return Ok(());
        }
        if !down {
            let listener = std::net::TcpListener::bind(self.addr)?;
            listener.set_nonblocking(true)?;
            *self.shared.relisten.lock() = Some(listener);
        }
        let mut applied = self.shared.applied.subscribe();
        self.shared.mode.send_replace(target);
        applied
            .wait_for(|m| *m == target || *m == Mode::Stopped)
            .await
            .map_err(|_| std::io::Error::other("mock upstream stopped"))?;
        Ok(())
    }

    /// Waits until `condition` holds, re-checking whenever a request starts
    /// or finishes; false if `within` passes first.
    pub async fn wait_until(&self, within: Duration, condition: impl Fn(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let activity = self.shared.activity.notified();
            if condition(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, activity).await.is_err() {
                return condition(self);
            }
        }
    }
}

impl std::fmt::Debug for MockHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockHandle")
            .field("addr", &self.addr)
            .field("total_calls", &self.total_calls())
            .finish()
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        // Ends the accept loop and closes every open connection.
        self.shared.mode.send_replace(Mode::Stopped);
    }
}
