//! [`DelayProxy`]: a TCP proxy that puts a service "far away": every byte
//! is forwarded after a fixed one-way delay in each direction (so a request
//! and its answer take twice the delay more), in order, with pipelining
//! kept; and it can blackhole the link, as a network partition does:
//! connections stay open and nothing gets through until the partition
//! heals, when what was sent meanwhile arrives (as TCP retransmission would
//! deliver it). Tests and benchmarks put edge nodes behind one in front of
//! a real `redis-server`.
//!
//! Loopback only, like the rest of this crate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Bytes in flight per direction before the reader waits.
const QUEUE_CHUNKS: usize = 1024;
/// How often a held link checks whether the partition healed.
const BLACKHOLE_CHECK: Duration = Duration::from_millis(1);

/// A running proxy; stops accepting when dropped (connections already open
/// end when either side closes).
pub struct DelayProxy {
    addr: SocketAddr,
    settings: Arc<Settings>,
    accept: tokio::task::JoinHandle<()>,
}

struct Settings {
    one_way_micros: AtomicU64,
    blackhole: AtomicBool,
}

impl DelayProxy {
    /// Listens on `listen` (use port 0 for a free one) and forwards to
    /// `upstream` with `one_way` delay each way. Both must be loopback.
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        one_way: Duration,
    ) -> std::io::Result<Self> {
        if !listen.ip().is_loopback() || !upstream.ip().is_loopback() {
            return Err(std::io::Error::other(
                "the delay proxy only runs on loopback addresses",
            ));
        }
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let settings = Arc::new(Settings {
            one_way_micros: AtomicU64::new(one_way.as_micros() as u64),
            blackhole: AtomicBool::new(false),
        });
        let shared = settings.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let settings = shared.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        pipe(client, server, settings).await;
                    }
                });
            }
        });
        Ok(Self {
            addr,
            settings,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the one-way delay for bytes read from now on.
    pub fn set_delay(&self, one_way: Duration) {
        self.settings
            .one_way_micros
            .store(one_way.as_micros() as u64, Ordering::Relaxed);
    }

    /// While on, nothing gets through in either direction; connections stay
    /// open and bytes sent meanwhile are held, then delivered once it is off.
    pub fn set_blackhole(&self, on: bool) {
        self.settings.blackhole.store(on, Ordering::Relaxed);
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Forwards both directions until either side closes.
async fn pipe(client: TcpStream, server: TcpStream, settings: Arc<Settings>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = one_direction(cr, sw, settings.clone());
    let down = one_direction(sr, cw, settings);
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Reads from `from`, and writes each chunk to `to` once its delay passed.
async fn one_direction(
    mut from: impl AsyncReadExt + Unpin + Send + 'static,
    mut to: impl AsyncWriteExt + Unpin + Send + 'static,
    settings: Arc<Settings>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(QUEUE_CHUNKS);
    let settings_w = settings.clone();
    let reader = async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let due = Instant::now()
                + Duration::from_micros(settings.one_way_micros.load(Ordering::Relaxed));
            if tx
                .send((due, Bytes::copy_from_slice(&buf[..n])))
                .await
                .is_err()
            {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            // The delay itself: this is the link's latency, not a wait for
            // another task. (No timer at all when it is due: a zero delay
            // must not add the timer's millisecond granularity.)
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            // A partition: hold the bytes until it heals.
            while settings_w.blackhole.load(Ordering::Relaxed) {
                tokio::time::sleep(BLACKHOLE_CHECK).await;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_arrive_in_order_after_the_delay_and_a_blackhole_drops_them() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            loop {
                let n = s.read(&mut buf).await.unwrap_or(0);
                if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
        let proxy = DelayProxy::start(
            "127.0.0.1:0".parse().unwrap(),
            echo_addr,
            Duration::from_millis(10),
        )
        .await
        .unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        let started = std::time::Instant::now();
        c.write_all(b"one").await.unwrap();
        c.write_all(b"two").await.unwrap();
        let mut got = [0u8; 6];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"onetwo");
        assert!(
            started.elapsed() >= Duration::from_millis(20),
            "{:?}",
            started.elapsed()
        );

        proxy.set_blackhole(true);
        c.write_all(b"held").await.unwrap();
        let mut held = [0u8; 4];
        let read = tokio::time::timeout(Duration::from_millis(100), c.read_exact(&mut held)).await;
        assert!(read.is_err(), "nothing gets through a blackhole");
        proxy.set_blackhole(false);
        c.read_exact(&mut held).await.unwrap();
        assert_eq!(&held, b"held");
    }
}
