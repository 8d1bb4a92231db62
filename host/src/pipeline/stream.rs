//! [`Tee`]: passes a provider's event stream to the client event by event,
//! while recording it for the cache and counting usage for settle; a
//! stream that breaks (or ends without its terminator) ends with an error
//! event in the client's format instead of a silent cut.
//! [`first_content`]: holds a stream until its first content event, so a
//! provider failing before it can be failed over unseen.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;

use crate::api::{self, SseEvent, SseParser, StreamAccumulator};
use crate::policy::{AttemptOutcome, Route, TokenCount};
use crate::upstream::BodyStream;

/// How a stream ended.
pub struct Finished {
    /// Tokens: reported, else counted.
    pub usage: TokenCount,
    /// Every event as it came, when the stream completed (terminator, no
    /// error event) and fit the record limit.
    pub recorded: Option<Bytes>,
}

type FinishHook = Box<dyn FnOnce(Finished) + Send>;
type FailureHook = Box<dyn FnOnce() + Send>;

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
    route: Route,
    /// Called once if the stream fails after it started (broken, cut, or
    /// ended by the provider's own error event).
    on_failure: Option<FailureHook>,
    /// The error event was sent: nothing more follows.
    ended: bool,
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
        on_failure: impl FnOnce() + Send + 'static,
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
            route,
            on_failure: Some(Box::new(on_failure)),
            ended: false,
        }
    }

    /// Ends a failed stream: the error event in the client's format
    /// (OpenAI's SDK raises on an `error` chunk, Anthropic's on an `error`
    /// event), counted once.
    fn fail(&mut self, message: &str) -> Bytes {
        self.finish(false);
        self.ended = true;
        if let Some(hook) = self.on_failure.take() {
            hook();
        }
        let message = format!("the provider's stream failed mid-answer: {message}");
        let event = match self.route {
            Route::AnthropicMessages => SseEvent::named(
                "error",
                String::from_utf8_lossy(&api::anthropic_error("api_error", &message)),
            ),
            Route::Chat | Route::Embeddings => SseEvent::data(String::from_utf8_lossy(
                &api::openai_error(&message, "server_error", Some("stream_interrupted")),
            )),
        };
        Bytes::from(event.to_bytes())
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
        if self.ended {
            return Poll::Ready(None);
        }
        loop {
            match self.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let out = self.relay(&chunk);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Bytes::from(out))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    let event = self.fail(&e.to_string());
                    return Poll::Ready(Some(Ok(event)));
                }
                Poll::Ready(None) => {
                    if !self.accumulator.is_complete() && self.accumulator.error().is_none() {
                        // A clean close without the terminator: a cut the
                        // client could mistake for a whole answer.
                        let event = self.fail("it ended without its terminator");
                        return Poll::Ready(Some(Ok(event)));
                    }
                    if self.accumulator.error().is_some()
                        && let Some(hook) = self.on_failure.take()
                    {
                        // The provider itself ended the stream with an
                        // error event, which the client got: counted too.
                        hook();
                    }
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

/// What an event before the first content means for a held stream.
enum Early {
    /// Framing (`message_start`, a role chunk, `ping`): keep waiting.
    Preamble,
    /// Content, a stop, or the end: release the stream to the client.
    Content,
    /// The provider reported an error in the stream.
    Error(String),
}

fn early(route: Route, event: &SseEvent) -> Early {
    if event.is_done() {
        return Early::Content;
    }
    let Ok(data) = serde_json::from_str::<serde_json::Value>(&event.data) else {
        return Early::Preamble;
    };
    let error = |data: &serde_json::Value| {
        Early::Error(
            data.get("error")
                .and_then(|e| e.get("message"))
                .and_then(serde_json::Value::as_str)
                .unwrap_or("error event")
                .to_owned(),
        )
    };
    if route == Route::AnthropicMessages {
        return match data.get("type").and_then(serde_json::Value::as_str) {
            Some("content_block_delta" | "message_delta" | "message_stop") => Early::Content,
            Some("error") => error(&data),
            _ => Early::Preamble,
        };
    }
    if data.get("error").is_some() {
        return error(&data);
    }
    let Some(choices) = data.get("choices").and_then(serde_json::Value::as_array) else {
        return Early::Preamble;
    };
    if choices.is_empty() {
        // The usage chunk: the answer is over.
        return Early::Content;
    }
    let has = |v: Option<&serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => !s.is_empty(),
        Some(serde_json::Value::Array(a)) => !a.is_empty(),
        _ => false,
    };
    let content = choices.iter().any(|c| {
        let delta = c.get("delta");
        let field = |name| delta.and_then(|d: &serde_json::Value| d.get(name));
        has(field("content"))
            || has(field("refusal"))
            || has(field("tool_calls"))
            || c.get("finish_reason").is_some_and(|r| !r.is_null())
    });
    if content {
        Early::Content
    } else {
        Early::Preamble
    }
}

/// Reads `stream` (already in `route`'s format) until its first content
/// event, within `within`, and hands back a stream that replays what was
/// read and goes on. Before that point the client has seen nothing, so a
/// break, an error event, an early end or the timeout is an attempt
/// failure the retry policy can act on (retry, fall back).
pub async fn first_content(
    route: Route,
    mut stream: BodyStream,
    within: std::time::Duration,
) -> Result<BodyStream, AttemptOutcome> {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + within;
    let mut parser = SseParser::new();
    let mut held: Vec<Bytes> = Vec::new();
    let mut events = Vec::new();
    let failed = |message: String| AttemptOutcome::ConnectError { message };
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| AttemptOutcome::Timeout)?;
        match next {
            Some(Ok(chunk)) => {
                parser.feed_into(&chunk, &mut events);
                held.push(chunk);
                for event in events.drain(..) {
                    match early(route, &event) {
                        Early::Preamble => {}
                        Early::Content => {
                            let replay = futures::stream::iter(held.into_iter().map(Ok));
                            return Ok(Box::pin(replay.chain(stream)));
                        }
                        Early::Error(message) => {
                            return Err(failed(format!(
                                "the stream failed before its first token: {message}"
                            )));
                        }
                    }
                }
            }
            Some(Err(e)) => {
                return Err(failed(format!(
                    "the stream broke before its first token: {e}"
                )));
            }
            None => {
                return Err(failed("the stream ended before its first token".into()));
            }
        }
    }
}
