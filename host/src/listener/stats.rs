//! What a listener counts about its connections: how many are open, how
//! many were accepted, refused with a 503 or closed unanswered past
//! `server.max_connections`, and how many were cut by each timeout. The
//! listener keeps plain atomics; `/metrics` copies them in when scraped
//! (`Metrics::sync_connections`), so the listener needs no handle on the
//! metrics.

use std::sync::atomic::{AtomicU64, Ordering};

/// One listener's connection counters, shared by its connection tasks.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    open: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
    head_timeouts: AtomicU64,
    idle_closed: AtomicU64,
    body_stalls: AtomicU64,
    write_stalls: AtomicU64,
}

/// A reading of [`ConnectionStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionCounts {
    /// Connections open now (served, not counting refusals).
    pub open: u64,
    /// Connections taken under `max_connections`.
    pub accepted: u64,
    /// Connections past `max_connections` answered 503.
    pub refused: u64,
    /// Connections past `max_connections` closed unanswered (too many
    /// refusals in progress).
    pub dropped: u64,
    /// Connections closed because a request head did not arrive within
    /// `header_read_timeout_ms`.
    pub head_timeouts: u64,
    /// Connections closed after `idle_timeout_ms` without a request.
    pub idle_closed: u64,
    /// Request bodies that stalled for `body_read_timeout_ms` (a 408).
    pub body_stalls: u64,
    /// Connections closed because a response write made no progress for
    /// `write_stall_timeout_ms`.
    pub write_stalls: u64,
}

/// What happened to a connection, for [`ConnectionStats::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConnectionEvent {
    Refused,
    Dropped,
    HeadTimeout,
    IdleClosed,
    BodyStall,
    WriteStall,
}

impl ConnectionStats {
    /// The counters now.
    pub fn read(&self) -> ConnectionCounts {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ConnectionCounts {
            open: get(&self.open),
            accepted: get(&self.accepted),
            refused: get(&self.refused),
            dropped: get(&self.dropped),
            head_timeouts: get(&self.head_timeouts),
            idle_closed: get(&self.idle_closed),
            body_stalls: get(&self.body_stalls),
            write_stalls: get(&self.write_stalls),
        }
    }

    pub(super) fn record(&self, event: ConnectionEvent) {
        let counter = match event {
            ConnectionEvent::Refused => &self.refused,
            ConnectionEvent::Dropped => &self.dropped,
            ConnectionEvent::HeadTimeout => &self.head_timeouts,
            ConnectionEvent::IdleClosed => &self.idle_closed,
            ConnectionEvent::BodyStall => &self.body_stalls,
            ConnectionEvent::WriteStall => &self.write_stalls,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection accepted and open until the guard drops.
    pub(super) fn opened(self: &std::sync::Arc<Self>) -> OpenGuard {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(self.clone())
    }
}

/// Holds one count in [`ConnectionStats`]'s `open` while the connection
/// lives.
pub(super) struct OpenGuard(std::sync::Arc<ConnectionStats>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The counters of a gateway's two listeners.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// The API listener (`server.listen`).
    pub api: std::sync::Arc<ConnectionStats>,
    /// The admin listener (`server.admin_listen`).
    pub admin: std::sync::Arc<ConnectionStats>,
}
