//! Request bodies: the stall timeout the listener puts on each, and
//! [`read_body`], which reads one whole and says why it could not.

use std::error::Error;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::stall::StallTimer;
use super::stats::{ConnectionEvent, ConnectionStats};
use crate::error::GatewayError;

/// Why a request body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// More than the limit: 413.
    TooLarge { limit: usize },
    /// No byte for `server.body_read_timeout_ms`: 408.
    Stalled { after: Duration },
    /// The client broke off or sent a malformed body: 400.
    Broken(String),
}

impl BodyError {
    /// The status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Stalled { .. } => StatusCode::REQUEST_TIMEOUT,
            BodyError::Broken(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge { limit } => {
                write!(f, "request body is larger than the limit of {limit} bytes")
            }
            BodyError::Stalled { after } => write!(
                f,
                "the request body stopped arriving: nothing for {} ms (server.body_read_timeout_ms)",
                after.as_millis()
            ),
            BodyError::Broken(e) => write!(f, "could not read the request body: {e}"),
        }
    }
}

impl From<BodyError> for GatewayError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge { limit } => GatewayError::payload_too_large(limit),
            other => {
                let mut error = GatewayError::bad_request(other.to_string());
                error.status = other.status();
                error
            }
        }
    }
}

/// Reads `body` whole, refusing more than `limit` bytes; a body announcing
/// more (`Content-Length`) is refused before any of it is read.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    if body.size_hint().lower() > limit as u64 {
        return Err(BodyError::TooLarge { limit });
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge { limit }),
        Err(e) => Err(match stalled(&*e) {
            Some(after) => BodyError::Stalled { after },
            None => BodyError::Broken(e.to_string()),
        }),
    }
}

/// The stall timeout in `e`'s chain of sources, if it is why the read failed.
fn stalled(e: &(dyn Error + 'static)) -> Option<Duration> {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if let Some(stall) = e.downcast_ref::<Stalled>() {
            return Some(stall.0);
        }
        cause = e.source();
    }
    None
}

/// The error a stalled body ends with.
#[derive(Debug, thiserror::Error)]
#[error("no request body data for {0:?}")]
struct Stalled(Duration);

/// A body that fails with [`Stalled`] when a read waits longer than
/// `timeout` for data. The clock runs only while the handler waits on the
/// body, and restarts with each frame.
pub(super) struct StallTimeout<B> {
    inner: B,
    stall: StallTimer,
    /// Counts the stall.
    stats: Arc<ConnectionStats>,
}

impl<B> StallTimeout<B> {
    pub(super) fn new(inner: B, timeout: Duration, stats: Arc<ConnectionStats>) -> Self {
        StallTimeout {
            inner,
            stall: StallTimer::new(timeout),
            stats,
        }
    }
}

impl<B> HttpBody for StallTimeout<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.stall.progressed();
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.stall.poll_stalled(cx) {
            Poll::Ready(()) => {
                this.stats.record(ConnectionEvent::BodyStall);
                Poll::Ready(Some(Err(Box::new(Stalled(this.stall.timeout())))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
