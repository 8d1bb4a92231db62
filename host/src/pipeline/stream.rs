//! [`Tee`]: passes a provider's event stream to the client event by event,
//! while recording it for the cache and counting usage for settle.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;

use crate::api::{self, SseEvent, SseParser, StreamAccumulator};
use crate::policy::{Route, TokenCount};

/// How a stream ended.
pub struct Finished {
    /// Tokens: reported, else counted.
    pub usage: TokenCount,
    /// Every event as it came, when the stream completed (terminator, no
    /// error event) and fit the record limit.
    pub recorded: Option<Bytes>,
}

type FinishHook = Box<dyn FnOnce(Finished) + Send>;

/// The client-facing side of a provider stream.
pub struct Tee<E> {
    inner: BoxStream<'static, Result<Bytes, E>>,
    parser: SseParser,
    accumulator: StreamAccumulator,
    events: Vec<SseEvent>,
    recorded: Vec<u8>,
    record_limit: usize,
    over_limit: bool,
    keep_usage_chunk: bool,
    estimated_prompt_tokens: u32,
    on_finish: Option<FinishHook>,
}

impl<E> Tee<E> {
    /// Wraps `inner`. `keep_usage_chunk` is false when an OpenAI client did
    /// not ask for the usage chunk that sluice requested upstream.
    pub fn new(
        route: Route,
        inner: BoxStream<'static, Result<Bytes, E>>,
        keep_usage_chunk: bool,
        estimated_prompt_tokens: u32,
        record_limit: usize,
        on_finish: impl FnOnce(Finished) + Send + 'static,
    ) -> Self {
        Self {
            inner,
            parser: SseParser::new(),
            accumulator: StreamAccumulator::new(route),
            events: Vec::new(),
            recorded: Vec::new(),
            record_limit,
            over_limit: false,
            keep_usage_chunk,
            estimated_prompt_tokens,
            on_finish: Some(Box::new(on_finish)),
        }
    }

    fn finish(&mut self, ended_cleanly: bool) {
        if let Some(hook) = self.on_finish.take() {
            let complete = ended_cleanly && self.accumulator.is_complete();
            hook(Finished {
                usage: self.accumulator.usage(self.estimated_prompt_tokens),
                recorded: (complete && !self.over_limit)
                    .then(|| Bytes::from(std::mem::take(&mut self.recorded))),
            });
        }
    }

    /// Turns a chunk into the bytes the client gets.
    fn relay(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.parser.feed_into(chunk, &mut self.events);
        let mut out = Vec::with_capacity(chunk.len());
        for event in self.events.drain(..) {
            self.accumulator.observe(&event);
            if !self.over_limit {
                event.write_to(&mut self.recorded);
                if self.recorded.len() > self.record_limit {
                    self.over_limit = true;
                    self.recorded = Vec::new();
                }
            }
            if self.keep_usage_chunk || !api::is_usage_only_chunk(&event) {
                event.write_to(&mut out);
            }
        }
        out
    }
}

impl<E: std::fmt::Display> Stream for Tee<E> {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match self.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let out = self.relay(&chunk);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Bytes::from(out))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.finish(false);
                    return Poll::Ready(Some(Err(std::io::Error::other(e.to_string()))));
                }
                Poll::Ready(None) => {
                    self.finish(true);
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<E> Drop for Tee<E> {
    fn drop(&mut self) {
        // The client went away mid-stream: settle what was produced, cache
        // nothing.
        self.finish(false);
    }
}

/// The events of a recorded stream as a client should get them.
pub fn replay_bytes(recorded: Bytes, keep_usage_chunk: bool) -> Bytes {
    if keep_usage_chunk {
        return recorded;
    }
    let mut out = Vec::with_capacity(recorded.len());
    for event in SseParser::new().feed(&recorded) {
        if !api::is_usage_only_chunk(&event) {
            event.write_to(&mut out);
        }
    }
    Bytes::from(out)
}
