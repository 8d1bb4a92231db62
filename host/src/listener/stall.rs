//! [`StallTimer`]: "no progress for this long", for request body reads and
//! response writes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Runs only while an I/O poll waits: armed by the first pending poll,
/// disarmed by progress. Fires when one wait lasts `timeout`.
pub(super) struct StallTimer {
    timeout: Duration,
    /// Created on the first wait and reset after; `armed` while waiting.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl StallTimer {
    pub(super) fn new(timeout: Duration) -> Self {
        StallTimer {
            timeout,
            timer: None,
            armed: false,
        }
    }

    /// The stall timeout.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The I/O made progress: the next wait starts a new clock.
    pub(super) fn progressed(&mut self) {
        self.armed = false;
    }

    /// The I/O is pending: `Ready` once this wait has lasted the timeout
    /// (`cx` is woken then).
    pub(super) fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = Instant::now() + self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        timer.as_mut().poll(cx)
    }
}
