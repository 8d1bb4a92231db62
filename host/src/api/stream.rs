//! Watching a provider's event stream as it passes: usage at the end, and
//! whether the stream finished properly (so an incomplete answer is neither
//! cached nor settled as if it were whole).

use serde_json::Value;

use super::sse::SseEvent;
use super::tokens_for_chars;
use crate::policy::{Route, TokenCount};

/// Follows one streamed answer event by event.
#[derive(Debug, Clone)]
pub struct StreamAccumulator {
    route: Route,
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
    /// Of the prompt, read from the provider's prompt cache.
    cached_prompt_tokens: u32,
    /// Anthropic's cache reads and writes, which its `input_tokens` leaves
    /// out (added to the prompt).
    anthropic_cache_tokens: u32,
    /// Characters of generated content seen (text, refusals, tool names and
    /// arguments, thinking), for counting when the provider sends no usage.
    completion_chars: usize,
    complete: bool,
    error: Option<String>,
}

impl StreamAccumulator {
    /// A fresh accumulator for a stream on `route`.
    pub fn new(route: Route) -> Self {
        StreamAccumulator {
            route,
            prompt_tokens: None,
            completion_tokens: None,
            cached_prompt_tokens: 0,
            anthropic_cache_tokens: 0,
            completion_chars: 0,
            complete: false,
            error: None,
        }
    }

    /// Takes one event into account. Events that are not JSON (pings, keep
    /// alives) are ignored.
    pub fn observe(&mut self, event: &SseEvent) {
        match self.route {
            Route::Chat | Route::Embeddings => self.observe_openai(event),
            Route::AnthropicMessages => self.observe_anthropic(event),
        }
    }

    /// Whether the terminator arrived: `[DONE]` (OpenAI) or `message_stop`
    /// (Anthropic), with no error event before it.
    pub fn is_complete(&self) -> bool {
        self.complete && self.error.is_none()
    }

    /// The message of an error event the provider sent mid-stream.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Usage as the provider reported it, when it did.
    pub fn reported_usage(&self) -> Option<TokenCount> {
        Some(TokenCount {
            cached_prompt: self.cached_prompt_tokens,
            ..TokenCount::new(self.prompt_tokens?, self.completion_tokens?)
        })
    }

    /// Completion tokens counted from the content deltas with
    /// [`super::estimate_tokens`] (over the concatenated content).
    pub fn counted_completion_tokens(&self) -> u32 {
        tokens_for_chars(self.completion_chars)
    }

    /// Usage to settle with: what the provider reported, else the caller's
    /// prompt estimate and the counted completion.
    pub fn usage(&self, estimated_prompt_tokens: u32) -> TokenCount {
        TokenCount {
            cached_prompt: self.cached_prompt_tokens,
            ..TokenCount::new(
                self.prompt_tokens.unwrap_or(estimated_prompt_tokens),
                self.completion_tokens
                    .unwrap_or_else(|| self.counted_completion_tokens()),
            )
        }
    }

    fn observe_openai(&mut self, event: &SseEvent) {
        if event.is_done() {
            self.complete = true;
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&event.data) else {
            return;
        };
        if let Some(err) = chunk.get("error") {
            self.error = Some(error_message(err));
            return;
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.prompt_tokens = count(usage, "prompt_tokens").or(self.prompt_tokens);
            self.completion_tokens = count(usage, "completion_tokens").or(self.completion_tokens);
            if let Some(u) = usage.as_object() {
                self.cached_prompt_tokens = super::openai_cached(u);
            }
        }
        let choices = chunk.get("choices").and_then(Value::as_array);
        for choice in choices.into_iter().flatten() {
            let Some(delta) = choice.get("delta") else {
                continue;
            };
            self.completion_chars += chars(delta.get("content")) + chars(delta.get("refusal"));
            let calls = delta.get("tool_calls").and_then(Value::as_array);
            for call in calls.into_iter().flatten() {
                if let Some(function) = call.get("function") {
                    self.completion_chars +=
                        chars(function.get("name")) + chars(function.get("arguments"));
                }
            }
        }
    }

    /// Anthropic's prompt: `input_tokens` plus the cache reads and writes
    /// (kept from an earlier event when this one does not repeat them).
    fn anthropic_prompt(&mut self, usage: &Value) {
        if let Some(u) = usage.as_object()
            && (u.contains_key("cache_read_input_tokens")
                || u.contains_key("cache_creation_input_tokens"))
        {
            let (extra, read) = super::anthropic_cache(u);
            self.anthropic_cache_tokens = extra;
            self.cached_prompt_tokens = read;
        }
        if let Some(input) = count(usage, "input_tokens") {
            self.prompt_tokens = Some(input.saturating_add(self.anthropic_cache_tokens));
        }
    }

    fn observe_anthropic(&mut self, event: &SseEvent) {
        let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
            return;
        };
        // The `type` field repeats the event name; trust the data, as the
        // official SDKs do.
        match data.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                if let Some(usage) = data.get("message").and_then(|m| m.get("usage")) {
                    self.anthropic_prompt(usage);
                }
            }
            Some("content_block_start") => {
                if let Some(block) = data.get("content_block") {
                    self.completion_chars += chars(block.get("text")) + chars(block.get("name"));
                }
            }
            Some("content_block_delta") => {
                if let Some(delta) = data.get("delta") {
                    self.completion_chars += chars(delta.get("text"))
                        + chars(delta.get("partial_json"))
                        + chars(delta.get("thinking"));
                }
            }
            Some("message_delta") => {
                if let Some(usage) = data.get("usage") {
                    // Cumulative counts; newer API versions repeat input here.
                    self.anthropic_prompt(usage);
                    self.completion_tokens =
                        count(usage, "output_tokens").or(self.completion_tokens);
                }
            }
            Some("message_stop") => self.complete = true,
            Some("error") => {
                let message = data
                    .get("error")
                    .map_or_else(|| "error".into(), error_message);
                self.error = Some(message);
            }
            _ => {}
        }
    }
}

fn count(usage: &Value, name: &str) -> Option<u32> {
    usage
        .get(name)?
        .as_u64()
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

fn chars(value: Option<&Value>) -> usize {
    value
        .and_then(Value::as_str)
        .map_or(0, |s| s.chars().count())
}

fn error_message(err: &Value) -> String {
    err.get("message")
        .and_then(Value::as_str)
        .map_or_else(|| err.to_string(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(route: Route, events: &[SseEvent]) -> StreamAccumulator {
        let mut acc = StreamAccumulator::new(route);
        for e in events {
            acc.observe(e);
        }
        acc
    }

    #[test]
    fn openai_usage_chunk_is_reported() {
        let acc = feed(
            Route::Chat,
            &[
                SseEvent::data(
                    r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}"#,
                ),
                SseEvent::data(
                    r#"{"choices":[{"index":0,"delta":{"content":"Hello there"}}],"usage":null}"#,
                ),
                SseEvent::data(
                    r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#,
                ),
                SseEvent::data(
                    r#"{"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":2,"total_tokens":13}}"#,
                ),
                SseEvent::done(),
            ],
        );
        assert!(acc.is_complete());
        assert_eq!(acc.reported_usage(), Some(TokenCount::new(11, 2)));
        assert_eq!(acc.usage(99), TokenCount::new(11, 2));
        assert_eq!(acc.counted_completion_tokens(), 3);
    }

    #[test]
    fn openai_without_usage_counts_content_and_tool_calls() {
        let acc = feed(
            Route::Chat,
            &[
                SseEvent::data(r#"{"choices":[{"index":0,"delta":{"content":"abcd"}}]}"#),
                SseEvent::data(r#"{"choices":[{"index":0,"delta":{"content":"efgh"}}]}"#),
                SseEvent::data(
                    r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{}"}}]}}]}"#,
                ),
                SseEvent::done(),
            ],
        );
        assert!(acc.is_complete());
        assert_eq!(acc.reported_usage(), None);
        // 4 + 4 + 1 + 2 = 11 characters → 3 tokens.
        assert_eq!(acc.usage(7), TokenCount::new(7, 3));
    }

    #[test]
    fn openai_stream_without_done_is_incomplete() {
        let acc = feed(
            Route::Chat,
            &[SseEvent::data(
                r#"{"choices":[{"index":0,"delta":{"content":"abc"}}]}"#,
            )],
        );
        assert!(!acc.is_complete());
        let errored = feed(
            Route::Chat,
            &[
                SseEvent::data(r#"{"error":{"message":"boom","type":"server_error"}}"#),
                SseEvent::done(),
            ],
        );
        assert!(!errored.is_complete());
        assert_eq!(errored.error(), Some("boom"));
    }

    #[test]
    fn anthropic_usage_comes_from_start_and_delta() {
        let acc = feed(
            Route::AnthropicMessages,
            &[
                SseEvent::named(
                    "message_start",
                    r#"{"type":"message_start","message":{"id":"m","usage":{"input_tokens":25,"output_tokens":1}}}"#,
                ),
                SseEvent::named(
                    "content_block_start",
                    r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
                ),
                SseEvent::named("ping", r#"{"type": "ping"}"#),
                SseEvent::named(
                    "content_block_delta",
                    r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi!"}}"#,
                ),
                SseEvent::named(
                    "content_block_stop",
                    r#"{"type":"content_block_stop","index":0}"#,
                ),
                SseEvent::named(
                    "message_delta",
                    r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}"#,
                ),
                SseEvent::named("message_stop", r#"{"type":"message_stop"}"#),
            ],
        );
        assert!(acc.is_complete());
        assert_eq!(acc.reported_usage(), Some(TokenCount::new(25, 15)));
        assert_eq!(acc.counted_completion_tokens(), 1);
    }

    #[test]
    fn anthropic_error_event_marks_the_stream_failed() {
        let acc = feed(
            Route::AnthropicMessages,
            &[
                SseEvent::named(
                    "message_start",
                    r#"{"type":"message_start","message":{"usage":{"input_tokens":3}}}"#,
                ),
                SseEvent::named(
                    "content_block_delta",
                    r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}"#,
                ),
                SseEvent::named(
                    "error",
                    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                ),
            ],
        );
        assert!(!acc.is_complete());
        assert_eq!(acc.error(), Some("Overloaded"));
        assert_eq!(acc.reported_usage(), None);
        assert_eq!(acc.usage(0), TokenCount::new(3, 2));
    }
}
