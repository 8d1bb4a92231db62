//! The listeners' accept loop: how a TCP connection is served, bounded and
//! closed. [`crate::server`] and [`crate::admin`] hand it their routes.
//!
//! What it enforces (settings in `[server]`):
//! - `max_connections` open connections per listener (lowered at start to
//!   what the open-file limit leaves room for); one more is answered 503 in
//!   the provider's shape and closed (`refuse.rs`).
//! - `header_read_timeout_ms`: a request head must arrive within this long
//!   of the connection's accept, or of its first byte on a kept-alive
//!   connection; otherwise the connection is closed.
//! - `idle_timeout_ms`: a connection with no request in flight (a streamed
//!   response is in flight until its last byte) is closed after this long.
//! - `body_read_timeout_ms`: a request body that makes no progress for this
//!   long fails to read ([`read_body`] turns that into a 408).
//! - `write_stall_timeout_ms`: a response write that makes no progress for
//!   this long (a client that stopped reading) closes the connection.
//! - `max_headers` and `max_header_bytes`: larger heads get 431 from hyper.
//! - After an early answer (a 413 before the body is read, a 408), the rest
//!   of the request is read and discarded for a bounded time before the
//!   socket closes, so the client reads the answer instead of a reset.
//!
//! hyper's own `header_read_timeout` is not used: hyper 1.x starts it as
//! soon as it waits for the next request, so on a kept-alive connection it
//! is an idle timeout of the same length.

mod body;
mod conn;
mod refuse;
mod stall;
mod stats;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::config::ServerConfig;
use crate::policy::Route;

pub use body::{BodyError, read_body};
use stats::ConnectionEvent;
pub use stats::{ConnectionCounts, ConnectionStats, ListenerStats};

/// Connections the admin listener holds at most (it has few clients; a
/// flood on it cannot take descriptors from the API listener).
pub const ADMIN_MAX_CONNECTIONS: usize = 64;
/// Connections being refused with a 503 at once; more are closed unanswered.
const REFUSING: usize = 64;
/// Descriptors kept out of the connection budget: config and plugin files,
/// Redis, refusals in progress.
const FD_RESERVE: u64 = 256;

/// What one listener enforces on its connections; each field is the
/// `[server]` setting of the same name.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_stall_timeout: Duration,
    pub max_connections: usize,
    pub max_headers: usize,
    pub max_header_bytes: usize,
}

impl Limits {
    /// The API listener's limits, from `[server]`.
    pub fn api(s: &ServerConfig) -> Self {
        Limits {
            header_read_timeout: s.header_read_timeout(),
            body_read_timeout: s.body_read_timeout(),
            idle_timeout: s.idle_timeout(),
            write_stall_timeout: s.write_stall_timeout(),
            max_connections: s.max_connections,
            max_headers: s.max_headers,
            max_header_bytes: s.max_header_bytes,
        }
    }

    /// The admin listener's: the API's, with at most
    /// [`ADMIN_MAX_CONNECTIONS`] connections.
    pub fn admin(s: &ServerConfig) -> Self {
        let mut limits = Self::api(s);
        limits.max_connections = limits.max_connections.min(ADMIN_MAX_CONNECTIONS);
        limits
    }
}

/// The provider shape an error for a request to `path` takes before it is
/// routed: Anthropic's under `/v1/messages`, OpenAI's elsewhere.
pub fn error_route(path: &str) -> Route {
    if path.starts_with("/v1/messages") {
        Route::AnthropicMessages
    } else {
        Route::Chat
    }
}

/// What every connection task of one listener shares.
struct Shared {
    app: Router,
    limits: Limits,
    builder: Builder<TokioExecutor>,
    stats: Arc<ConnectionStats>,
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting and waits for the connections' in-flight requests (streams
/// included) to finish. Handlers see the peer as
/// `ConnectInfo<SocketAddr>`; what happens to connections is counted in
/// `stats`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    mut limits: Limits,
    stats: Arc<ConnectionStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Some(capacity) = fd_capacity()
        && capacity < limits.max_connections
    {
        tracing::warn!(
            addr = ?listener.local_addr().ok(),
            max_connections = limits.max_connections,
            serving = capacity,
            "the open-file limit (ulimit -n) cannot hold server.max_connections client and upstream sockets; serving fewer connections"
        );
        limits.max_connections = capacity;
    }
    let shared = Arc::new(Shared {
        app,
        builder: builder(&limits),
        limits,
        stats,
    });
    let slots = Arc::new(Semaphore::new(shared.limits.max_connections));
    let refusing = Arc::new(Semaphore::new(REFUSING));
    // `stopping` tells the connections to finish; `alive` is held by each
    // connection task, so its sender sees when all are done.
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let (alive_tx, alive_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Without TCP_NODELAY each streamed event can wait for the client's
        // delayed ACK (~40 ms).
        let _ = stream.set_nodelay(true);
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            tokio::spawn(conn::serve(
                shared.clone(),
                stream,
                peer,
                slot,
                stopping_rx.clone(),
                alive_rx.clone(),
            ));
        } else if let Ok(slot) = refusing.clone().try_acquire_owned() {
            shared.stats.record(ConnectionEvent::Refused);
            tokio::spawn(refuse::refuse(stream, shared.limits.max_connections, slot));
        } else {
            // Closed unanswered.
            shared.stats.record(ConnectionEvent::Dropped);
        }
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    drop(alive_rx);
    alive_tx.closed().await;
    Ok(())
}

fn builder(limits: &Limits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .header_read_timeout(None)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// After a failed accept: a connection reset before it was accepted is
/// nothing; out of descriptors (EMFILE), wait a moment for some to close
/// rather than spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Raises the soft open-file limit to the hard one (as nginx and Go do),
/// so `server.max_connections` is not capped by a low default soft limit
/// such as systemd's 1024.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `lim`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::debug!("could not raise the open-file limit");
            }
        }
    }
}

/// Connections the open-file limit leaves room for: each may hold a second
/// descriptor upstream, and [`FD_RESERVE`] are kept for everything else.
/// `None` when there is no limit.
fn fd_capacity() -> Option<usize> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0
        || lim.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    let capacity = lim.rlim_cur.saturating_sub(FD_RESERVE) / 2;
    Some(usize::try_from(capacity).unwrap_or(usize::MAX).max(1))
}
