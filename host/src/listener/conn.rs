//! One accepted connection: hyper serving it, its timers (head, idle), the
//! body stall timeout on each request, and the lingering close.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, watch};
use tokio::time::Instant;

use super::Shared;
use super::body::StallTimeout;
use super::stall::StallTimer;
use super::stats::{ConnectionEvent, ConnectionStats};

// A lingering close reads and discards for at most LINGER_TIME, and stops
// sooner after LINGER_IDLE without a byte or after LINGER_BYTES.
const LINGER_TIME: Duration = Duration::from_secs(10);
const LINGER_IDLE: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 << 20;

/// Serves one connection until it ends, the client is too slow with a
/// request head, or it stays idle too long.
pub(super) async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
    mut stopping: watch::Receiver<bool>,
    alive: watch::Receiver<()>,
) {
    let _open = shared.stats.opened();
    let state = Arc::new(ConnState::new());
    let io = TokioIo::new(Conn {
        stream: Some(stream),
        state: state.clone(),
        read_eof: false,
        slot: Some(slot),
        write_stall: StallTimer::new(shared.limits.write_stall_timeout),
        stats: shared.stats.clone(),
    });
    let service = ConnService {
        app: TowerToHyperService::new(shared.app.clone()),
        peer,
        state: state.clone(),
        body_timeout: shared.limits.body_read_timeout,
        stats: shared.stats.clone(),
    };
    let conn = shared.builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    // Armed when an idle connection was asked to close: bounds how long
    // that takes (an HTTP/2 GOAWAY exchange).
    let closing = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(closing);
    let mut closing_armed = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = stopping.wait_for(|stop| *stop), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            expired = state.expired(&shared.limits), if !closing_armed => match expired {
                Expiry::Head => {
                    tracing::debug!(%peer, "request head not received in time; closing");
                    shared.stats.record(ConnectionEvent::HeadTimeout);
                    break;
                }
                Expiry::Idle => {
                    shared.stats.record(ConnectionEvent::IdleClosed);
                    conn.as_mut().graceful_shutdown();
                    closing.as_mut().reset(Instant::now() + shared.limits.header_read_timeout);
                    closing_armed = true;
                }
            },
            () = &mut closing, if closing_armed => break,
        }
    }
    drop(alive);
}

/// Why a connection's timer fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// A request head started (or the connection opened) and did not
    /// arrive within `header_read_timeout`.
    Head,
    /// No request in flight for `idle_timeout`.
    Idle,
}

/// Whether the connection has requests in flight, and since when it has
/// had none.
struct ConnState {
    timers: Mutex<Timers>,
    changed: Notify,
}

struct Timers {
    in_flight: usize,
    /// When the current wait (head or idle) began.
    since: Instant,
    /// Waiting for a request head: a new connection, or bytes arrived on
    /// an idle HTTP/1 one.
    reading_head: bool,
    /// HTTP/2 connections carry frames between requests: bytes there do
    /// not start a head.
    http2: bool,
}

impl ConnState {
    fn new() -> Self {
        ConnState {
            timers: Mutex::new(Timers {
                in_flight: 0,
                since: Instant::now(),
                reading_head: true,
                http2: false,
            }),
            changed: Notify::new(),
        }
    }

    fn request_started(&self, version: http::Version) {
        let mut t = self.timers.lock();
        t.in_flight += 1;
        t.reading_head = false;
        t.http2 |= version == http::Version::HTTP_2;
    }

    fn request_finished(&self) {
        let mut t = self.timers.lock();
        t.in_flight = t.in_flight.saturating_sub(1);
        if t.in_flight == 0 {
            t.since = Instant::now();
            t.reading_head = false;
            drop(t);
            self.changed.notify_one();
        }
    }

    /// Bytes arrived: on an idle HTTP/1 connection, a request head began.
    fn bytes_read(&self) {
        let mut t = self.timers.lock();
        if t.in_flight == 0 && !t.reading_head && !t.http2 {
            t.reading_head = true;
            t.since = Instant::now();
            drop(t);
            self.changed.notify_one();
        }
    }

    /// Resolves when the head or idle timer runs out.
    async fn expired(&self, limits: &super::Limits) -> Expiry {
        loop {
            let changed = self.changed.notified();
            let due = {
                let t = self.timers.lock();
                (t.in_flight == 0).then(|| {
                    if t.reading_head {
                        (t.since + limits.header_read_timeout, Expiry::Head)
                    } else {
                        (t.since + limits.idle_timeout, Expiry::Idle)
                    }
                })
            };
            match due {
                None => changed.await,
                Some((at, expiry)) if at <= Instant::now() => return expiry,
                Some((at, _)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = changed => {}
                    }
                }
            }
        }
    }
}

/// Counts a request as in flight until its response body is dropped
/// (after its last byte, or when the connection dies).
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// The router, with the peer address and the body stall timeout added to
/// each request, and each response counted until its end.
struct ConnService {
    app: TowerToHyperService<axum::Router>,
    peer: SocketAddr,
    state: Arc<ConnState>,
    body_timeout: Duration,
    stats: Arc<ConnectionStats>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.state.request_started(request.version());
        let in_flight = InFlight(self.state.clone());
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(ConnectInfo(self.peer));
        let body = Body::new(StallTimeout::new(
            body,
            self.body_timeout,
            self.stats.clone(),
        ));
        let response = self.app.call(Request::from_parts(parts, body));
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Tracked {
                body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A response body that keeps its request in flight.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The client socket as hyper sees it: reads start the head timer, and
/// dropping it closes with a linger unless the client already finished.
struct Conn {
    /// Always `Some` until dropped.
    stream: Option<TcpStream>,
    state: Arc<ConnState>,
    /// The client closed its side: nothing unread can cause a reset.
    read_eof: bool,
    /// The connection's place under `max_connections`, held through the
    /// linger.
    slot: Option<OwnedSemaphorePermit>,
    /// Fails a write that waits `write_stall_timeout` for the client to
    /// read.
    write_stall: StallTimer,
    stats: Arc<ConnectionStats>,
}

impl Conn {
    fn stream(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        match self.stream.as_mut() {
            Some(s) => Ok(Pin::new(s)),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Runs `write` on the socket under the write stall timeout: a write
    /// that stays pending that long fails with `TimedOut`, which ends the
    /// connection.
    fn poll_write_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let written = write(self.stream()?, cx);
        if written.is_ready() {
            self.write_stall.progressed();
            return written;
        }
        match self.write_stall.poll_stalled(cx) {
            Poll::Ready(()) => {
                self.stats.record(ConnectionEvent::WriteStall);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client read nothing for server.write_stall_timeout_ms",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let room = buf.remaining();
        let filled = buf.filled().len();
        let read = this.stream()?.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            if buf.filled().len() > filled {
                this.state.bytes_read();
            } else if room > 0 {
                this.read_eof = true;
            }
        }
        read
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, |stream, cx| stream.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, |stream, cx| stream.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream()?.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream()?.poll_shutdown(cx)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        if self.read_eof {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(linger(stream, self.slot.take()));
        }
    }
}

/// Closes `stream` without a reset: sends FIN, then reads and discards
/// what the client still sends (the rest of a refused body) until it
/// closes too or the linger bounds run out. Closing a socket with unread
/// data sends a reset instead, and the client may lose the answer.
pub(super) async fn linger(mut stream: TcpStream, slot: Option<OwnedSemaphorePermit>) {
    let _ = stream.shutdown().await;
    let until = Instant::now() + LINGER_TIME;
    let mut buf = vec![0u8; 16 << 10];
    let mut drained = 0usize;
    while drained < LINGER_BYTES {
        let deadline = until.min(Instant::now() + LINGER_IDLE);
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
    drop(slot);
}
