//! Response bodies and headers: bounded reads of complete bodies, an idle
//! timeout between streamed chunks, and the allowlist of provider headers
//! worth passing on.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use http::{HeaderMap, HeaderName};
use tokio::time::{Instant, Sleep};

use super::UpstreamError;

// === headers ===

/// Provider headers a client may see on a successful answer. Everything else
/// (set-cookie, the provider's own rate-limit state, organisation ids) stays
/// behind the gateway.
const PASS_ON: &[&str] = &[
    "content-type",
    "openai-processing-ms",
    "openai-version",
    // Anthropic's request id; its name does not clash with ours.
    "request-id",
];

/// On failures the retry hints matter too.
const PASS_ON_FAILURE: &[&str] = &["retry-after", "retry-after-ms", "x-should-retry"];

/// OpenAI's request id, renamed so it cannot be mistaken for (or overwrite)
/// the gateway's own `x-request-id`.
pub const UPSTREAM_REQUEST_ID: &str = "x-upstream-request-id";

/// The allowlisted subset of `from`; `failure` adds the retry hints.
pub(crate) fn pass_on(from: &HeaderMap, failure: bool) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(4);
    let extra: &[&str] = if failure { PASS_ON_FAILURE } else { &[] };
    for name in PASS_ON.iter().chain(extra) {
        if let Some(value) = from.get(*name) {
            out.insert(HeaderName::from_static(name), value.clone());
        }
    }
    if let Some(value) = from.get("x-request-id") {
        out.insert(HeaderName::from_static(UPSTREAM_REQUEST_ID), value.clone());
    }
    out
}

// === complete bodies ===

/// A body read to its end, or the news that it was larger than allowed.
pub(crate) enum Read {
    Complete(Bytes),
    TooLarge,
}

/// Reads `response`'s body, giving up once it exceeds `limit` bytes. A body
/// that arrives in one chunk is returned without copying.
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Read, reqwest::Error> {
    let declared = response.content_length();
    if declared.is_some_and(|len| len > limit as u64) {
        return Ok(Read::TooLarge);
    }
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut total = 0usize;
    while let Some(chunk) = response.chunk().await? {
        total = total.saturating_add(chunk.len());
        if total > limit {
            return Ok(Read::TooLarge);
        }
        match (&mut joined, first.take()) {
            (Some(buf), _) => buf.extend_from_slice(&chunk),
            (None, None) => first = Some(chunk),
            (None, Some(head)) => {
                let capacity = declared
                    .and_then(|len| usize::try_from(len).ok())
                    .unwrap_or(0)
                    .max(head.len() + chunk.len());
                let mut buf = BytesMut::with_capacity(capacity);
                buf.extend_from_slice(&head);
                buf.extend_from_slice(&chunk);
                joined = Some(buf);
            }
        }
    }
    Ok(Read::Complete(match joined {
        Some(buf) => buf.freeze(),
        None => first.unwrap_or_default(),
    }))
}

// === streamed bodies ===

/// Ends a stream with [`UpstreamError::IdleTimeout`] when no chunk arrives
/// for `idle`. The timer is re-armed lazily (only when it fires early), so a
/// busy stream costs one clock read per chunk, not a timer-wheel update.
pub(crate) struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    last_chunk: Instant,
    sleep: Pin<Box<Sleep>>,
    done: bool,
}

impl<S> IdleTimeout<S> {
    pub(crate) fn new(inner: S, idle: Duration) -> Self {
        let now = Instant::now();
        Self {
            inner,
            idle,
            last_chunk: now,
            sleep: Box::pin(tokio::time::sleep_until(now + idle)),
            done: false,
        }
    }
}

impl<S> Stream for IdleTimeout<S>
where
    S: Stream<Item = Result<Bytes, UpstreamError>> + Unpin,
{
    type Item = Result<Bytes, UpstreamError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.last_chunk = Instant::now();
                return Poll::Ready(Some(Ok(chunk)));
            }
            Poll::Ready(other) => {
                // An error or the end: either way the stream is over.
                this.done = true;
                return Poll::Ready(other);
            }
            Poll::Pending => {}
        }
        loop {
            ready!(this.sleep.as_mut().poll(cx));
            let deadline = this.last_chunk + this.idle;
            if Instant::now() >= deadline {
                this.done = true;
                return Poll::Ready(Some(Err(UpstreamError::IdleTimeout(this.idle))));
            }
            this.sleep.as_mut().reset(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use http::HeaderValue;

    use super::*;

    #[test]
    fn only_allowlisted_headers_pass_and_the_request_id_is_renamed() {
        let mut from = HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/json"),
            ("set-cookie", "session=1"),
            ("openai-processing-ms", "12"),
            ("openai-organization", "acme-corp"),
            ("x-ratelimit-remaining-requests", "3"),
            ("x-request-id", "req_abc"),
            ("retry-after", "3"),
        ] {
            from.insert(name, HeaderValue::from_static(value));
        }
        let ok = pass_on(&from, false);
        let names: Vec<_> = ok.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            ["content-type", "openai-processing-ms", UPSTREAM_REQUEST_ID]
        );
        assert_eq!(ok[UPSTREAM_REQUEST_ID], "req_abc");
        let failed = pass_on(&from, true);
        assert_eq!(failed["retry-after"], "3");
        assert!(failed.get("set-cookie").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_stream_ends_with_an_idle_timeout() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, UpstreamError>>(4);
        let inner = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut stream = IdleTimeout::new(inner, Duration::from_secs(10));
        let started = Instant::now();

        // Chunks 6 s apart never trip a 10 s idle timeout.
        for i in 0..3u8 {
            tokio::time::advance(Duration::from_secs(6)).await;
            tx.send(Ok(Bytes::from(vec![i]))).await.unwrap();
            assert_eq!(stream.next().await.unwrap().unwrap(), Bytes::from(vec![i]));
        }
        // Then silence: the error comes 10 s after the last chunk.
        let err = stream.next().await.unwrap().unwrap_err();
        assert!(matches!(err, UpstreamError::IdleTimeout(d) if d == Duration::from_secs(10)));
        assert_eq!(started.elapsed(), Duration::from_secs(28));
        assert!(stream.next().await.is_none());
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_stream_stays_finished() {
        let inner = futures::stream::iter(vec![Ok(Bytes::from_static(b"a"))]);
        let mut stream = IdleTimeout::new(inner, Duration::from_secs(1));
        assert_eq!(stream.next().await.unwrap().unwrap(), "a");
        assert!(stream.next().await.is_none());
        assert!(stream.next().await.is_none());
    }
}
