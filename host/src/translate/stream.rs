//! Incremental SSE translation: each provider event in, the client-format
//! events it amounts to out, with the little state the formats need
//! (which block or tool call is open, the stop reason, usage).

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::response::{anthropic_stop_reason, anthropic_usage, openai_finish_reason, openai_usage};
use crate::api::{SseEvent, to_json_bytes};

fn text(v: &Value) -> String {
    String::from_utf8_lossy(&to_json_bytes(v)).into_owned()
}

/// One of the two translators.
pub enum EventTranslator {
    AnthropicToOpenAi(AnthropicToOpenAi),
    OpenAiToAnthropic(OpenAiToAnthropic),
    GeminiToOpenAi(super::GeminiToOpenAi),
    /// Gemini to OpenAI chunks, then those to Anthropic events.
    GeminiToAnthropic(super::GeminiToOpenAi, OpenAiToAnthropic),
}

impl EventTranslator {
    /// The client-format events for one provider event.
    pub fn translate(&mut self, event: &SseEvent) -> Vec<SseEvent> {
        match self {
            EventTranslator::AnthropicToOpenAi(t) => t.translate(event),
            EventTranslator::OpenAiToAnthropic(t) => t.translate(event),
            EventTranslator::GeminiToOpenAi(t) => t.translate(event),
            EventTranslator::GeminiToAnthropic(first, second) => first
                .translate(event)
                .iter()
                .flat_map(|e| second.translate(e))
                .collect(),
        }
    }
}

// === Anthropic events -> OpenAI chunks ===

/// Turns Anthropic `message_start` .. `message_stop` events into OpenAI
/// chat completion chunks ending with the usage chunk and `[DONE]`.
#[derive(Default)]
pub struct AnthropicToOpenAi {
    id: Value,
    model: Value,
    created: u64,
    usage: Map<String, Value>,
    /// Content block index -> tool call index.
    tools: HashMap<u64, u64>,
}

impl AnthropicToOpenAi {
    pub fn new() -> Self {
        Self {
            created: super::response::unix_now(),
            ..Self::default()
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> SseEvent {
        SseEvent::data(text(&json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
        })))
    }

    pub fn translate(&mut self, event: &SseEvent) -> Vec<SseEvent> {
        let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
            return Vec::new();
        };
        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
        match data.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let message = data.get("message").cloned().unwrap_or(Value::Null);
                self.id = message.get("id").cloned().unwrap_or(Value::Null);
                self.model = message.get("model").cloned().unwrap_or(Value::Null);
                if let Some(Value::Object(u)) = message.get("usage") {
                    self.usage = u.clone();
                }
                vec![self.chunk(json!({ "role": "assistant", "content": "" }), None)]
            }
            Some("content_block_start") => {
                let block = data.get("content_block").cloned().unwrap_or(Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => match block.get("text").and_then(Value::as_str) {
                        Some(t) if !t.is_empty() => vec![self.chunk(json!({ "content": t }), None)],
                        _ => Vec::new(),
                    },
                    Some("tool_use") => {
                        let call = self.tools.len() as u64;
                        self.tools.insert(index, call);
                        vec![self.chunk(
                            json!({ "tool_calls": [{
                                "index": call,
                                "id": block.get("id").cloned().unwrap_or(Value::Null),
                                "type": "function",
                                "function": { "name": block.get("name").cloned().unwrap_or(Value::Null), "arguments": "" },
                            }]}),
                            None,
                        )]
                    }
                    _ => Vec::new(),
                }
            }
            Some("content_block_delta") => {
                let delta = data.get("delta").cloned().unwrap_or(Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let t = delta.get("text").and_then(Value::as_str).unwrap_or("");
                        vec![self.chunk(json!({ "content": t }), None)]
                    }
                    Some("input_json_delta") => {
                        let partial = delta
                            .get("partial_json")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        match self.tools.get(&index) {
                            Some(call) if !partial.is_empty() => vec![self.chunk(
                                json!({ "tool_calls": [{ "index": call, "function": { "arguments": partial } }] }),
                                None,
                            )],
                            _ => Vec::new(),
                        }
                    }
                    // Thinking, signatures and citations have no chunk form.
                    _ => Vec::new(),
                }
            }
            Some("message_delta") => {
                if let Some(Value::Object(u)) = data.get("usage") {
                    for (k, v) in u {
                        self.usage.insert(k.clone(), v.clone());
                    }
                }
                let reason = data
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                    .map(openai_finish_reason);
                match reason {
                    Some(r) => vec![self.chunk(json!({}), Some(r))],
                    None => Vec::new(),
                }
            }
            Some("message_stop") => {
                let usage = openai_usage(&Value::Object(self.usage.clone()));
                vec![
                    SseEvent::data(text(&json!({
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "choices": [],
                        "usage": usage,
                    }))),
                    SseEvent::done(),
                ]
            }
            Some("error") => {
                let error = data.get("error").cloned().unwrap_or(Value::Null);
                vec![SseEvent::data(text(&json!({ "error": {
                    "message": error.get("message").cloned().unwrap_or_else(|| "provider error".into()),
                    "type": openai_error_type(error.get("type").and_then(Value::as_str)),
                    "param": null,
                    "code": null,
                }})))]
            }
            _ => Vec::new(),
        }
    }
}

fn openai_error_type(anthropic: Option<&str>) -> &'static str {
    match anthropic {
        Some("invalid_request_error") => "invalid_request_error",
        Some("rate_limit_error") => "requests",
        Some("overloaded_error") => "service_unavailable",
        _ => "server_error",
    }
}

// === OpenAI chunks -> Anthropic events ===

#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    /// The tool call of that OpenAI index.
    Tool(u64),
}

/// Turns OpenAI chat completion chunks (first choice) into Anthropic
/// `message_start` .. `message_stop` events.
#[derive(Default)]
pub struct OpenAiToAnthropic {
    started: bool,
    /// The open content block and its index.
    open: Option<(u64, Open)>,
    next_block: u64,
    /// OpenAI tool call index -> content block index.
    tools: HashMap<u64, u64>,
    finish: Option<String>,
    refused: bool,
    usage: Option<Value>,
    stopped: bool,
}

fn event(name: &str, data: Value) -> SseEvent {
    SseEvent::named(name, text(&data))
}

impl OpenAiToAnthropic {
    pub fn new() -> Self {
        Self::default()
    }

    fn close(&mut self, out: &mut Vec<SseEvent>) {
        if let Some((index, _)) = self.open.take() {
            out.push(event(
                "content_block_stop",
                json!({ "type": "content_block_stop", "index": index }),
            ));
        }
    }

    fn open(&mut self, kind: Open, block: Value, out: &mut Vec<SseEvent>) -> u64 {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some((index, kind));
        out.push(event(
            "content_block_start",
            json!({ "type": "content_block_start", "index": index, "content_block": block }),
        ));
        index
    }

    fn text(&mut self, t: &str, out: &mut Vec<SseEvent>) {
        let index = match self.open {
            Some((index, Open::Text)) => index,
            _ => self.open(Open::Text, json!({ "type": "text", "text": "" }), out),
        };
        out.push(event(
            "content_block_delta",
            json!({ "type": "content_block_delta", "index": index, "delta": { "type": "text_delta", "text": t } }),
        ));
    }

    fn stop(&mut self, out: &mut Vec<SseEvent>) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.close(out);
        let reason = if self.refused {
            "refusal"
        } else {
            self.finish
                .as_deref()
                .map_or("end_turn", anthropic_stop_reason)
        };
        let usage = self
            .usage
            .as_ref()
            .map_or_else(|| json!({ "output_tokens": 0 }), anthropic_usage);
        out.push(event(
            "message_delta",
            json!({ "type": "message_delta", "delta": { "stop_reason": reason, "stop_sequence": null }, "usage": usage }),
        ));
        out.push(event("message_stop", json!({ "type": "message_stop" })));
    }

    pub fn translate(&mut self, sse: &SseEvent) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if sse.is_done() {
            self.stop(&mut out);
            return out;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&sse.data) else {
            return out;
        };
        if let Some(error) = chunk.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("provider error");
            out.push(event(
                "error",
                json!({ "type": "error", "error": { "type": "api_error", "message": message } }),
            ));
            return out;
        }
        if !self.started {
            self.started = true;
            out.push(event(
                "message_start",
                json!({ "type": "message_start", "message": {
                    "id": chunk.get("id").cloned().unwrap_or(Value::Null),
                    "type": "message",
                    "role": "assistant",
                    "model": chunk.get("model").cloned().unwrap_or(Value::Null),
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": { "input_tokens": 0, "output_tokens": 0 },
                }}),
            ));
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage.clone());
        }
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| {
                c.iter()
                    .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
            });
        let Some(choice) = choice else {
            return out;
        };
        if let Some(delta) = choice.get("delta") {
            if let Some(t) = delta.get("content").and_then(Value::as_str)
                && !t.is_empty()
            {
                self.text(t, &mut out);
            }
            if let Some(t) = delta.get("refusal").and_then(Value::as_str)
                && !t.is_empty()
            {
                self.refused = true;
                self.text(t, &mut out);
            }
            let calls = delta.get("tool_calls").and_then(Value::as_array);
            for (position, call) in calls.into_iter().flatten().enumerate() {
                let call_index = call
                    .get("index")
                    .and_then(Value::as_u64)
                    .unwrap_or(position as u64);
                let function = call.get("function");
                let block = match self.tools.get(&call_index) {
                    Some(&block) => block,
                    None => {
                        let block = self.open(
                            Open::Tool(call_index),
                            json!({
                                "type": "tool_use",
                                "id": call.get("id").cloned().unwrap_or(Value::Null),
                                "name": function.and_then(|f| f.get("name")).cloned().unwrap_or(Value::Null),
                                "input": {},
                            }),
                            &mut out,
                        );
                        self.tools.insert(call_index, block);
                        block
                    }
                };
                let arguments = function
                    .and_then(|f| f.get("arguments"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !arguments.is_empty() {
                    out.push(event(
                        "content_block_delta",
                        json!({ "type": "content_block_delta", "index": block, "delta": { "type": "input_json_delta", "partial_json": arguments } }),
                    ));
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(reason.to_owned());
            self.close(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{self, StreamAccumulator};
    use crate::policy::{Route, TokenCount};

    fn run(
        translate: impl FnMut(&SseEvent) -> Vec<SseEvent>,
        events: &[SseEvent],
    ) -> Vec<SseEvent> {
        events.iter().flat_map(translate).collect()
    }

    #[test]
    fn anthropic_stream_with_a_tool_becomes_openai_chunks() {
        let answer = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [
                { "type": "thinking", "thinking": "hmm", "signature": "s" },
                { "type": "text", "text": "Let me look that up for you, one moment please." },
                { "type": "tool_use", "id": "toolu_1", "name": "look", "input": { "query": "a rather long query to be split" } }
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": { "input_tokens": 10, "output_tokens": 7, "cache_read_input_tokens": 4 }
        });
        let events =
            api::json_to_stream(Route::AnthropicMessages, &to_json_bytes(&answer)).unwrap();
        let mut t = AnthropicToOpenAi::new();
        let out = run(|e| t.translate(e), &events);
        assert!(out.last().unwrap().is_done());
        // Assembled with the gateway's own OpenAI stream reader.
        let body = api::stream_to_json(Route::Chat, &out).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        let m = &v["choices"][0]["message"];
        assert_eq!(
            m["content"],
            "Let me look that up for you, one moment please."
        );
        assert_eq!(m["tool_calls"][0]["id"], "toolu_1");
        assert_eq!(m["tool_calls"][0]["function"]["name"], "look");
        assert_eq!(
            serde_json::from_str::<Value>(
                m["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .unwrap()
            )
            .unwrap(),
            json!({ "query": "a rather long query to be split" })
        );
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["usage"]["prompt_tokens"], 14);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
        let mut acc = StreamAccumulator::new(Route::Chat);
        out.iter().for_each(|e| acc.observe(e));
        assert!(acc.is_complete());
        // The provider's cache read stays known (it is priced apart).
        assert_eq!(
            acc.reported_usage(),
            Some(TokenCount {
                cached_prompt: 4,
                ..TokenCount::new(14, 7)
            })
        );
    }

    #[test]
    fn openai_stream_with_tools_becomes_anthropic_events() {
        let answer = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-x",
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": "Sure, calling the tools now.", "tool_calls": [
                { "id": "call_1", "type": "function", "function": { "name": "look", "arguments": "{\"query\":\"the first of two long queries\"}" } },
                { "id": "call_2", "type": "function", "function": { "name": "look", "arguments": "{\"query\":\"b\"}" } }
            ]}, "finish_reason": "tool_calls" }],
            "usage": { "prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29 }
        });
        let events = api::json_to_stream(Route::Chat, &to_json_bytes(&answer)).unwrap();
        let mut t = OpenAiToAnthropic::new();
        let out = run(|e| t.translate(e), &events);
        let names: Vec<&str> = out.iter().map(|e| e.event.as_deref().unwrap()).collect();
        assert_eq!(names.first(), Some(&"message_start"));
        assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
        let body = api::stream_to_json(Route::AnthropicMessages, &out).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["content"][0],
            json!({ "type": "text", "text": "Sure, calling the tools now." })
        );
        assert_eq!(
            v["content"][1],
            json!({ "type": "tool_use", "id": "call_1", "name": "look", "input": { "query": "the first of two long queries" } })
        );
        assert_eq!(v["content"][2]["input"], json!({ "query": "b" }));
        assert_eq!(v["stop_reason"], "tool_use");
        let mut acc = StreamAccumulator::new(Route::AnthropicMessages);
        out.iter().for_each(|e| acc.observe(e));
        assert!(acc.is_complete());
        assert_eq!(acc.reported_usage(), Some(TokenCount::new(20, 9)));
    }

    #[test]
    fn errors_cross_as_error_events() {
        let mut t = AnthropicToOpenAi::new();
        let out = t.translate(&SseEvent::named(
            "error",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ));
        let v: Value = serde_json::from_str(&out[0].data).unwrap();
        assert_eq!(v["error"]["message"], "Overloaded");

        let mut t = OpenAiToAnthropic::new();
        let out = t.translate(&SseEvent::data(
            r#"{"error":{"message":"boom","type":"server_error"}}"#,
        ));
        assert_eq!(out[0].event.as_deref(), Some("error"));
        let v: Value = serde_json::from_str(&out[0].data).unwrap();
        assert_eq!(v["error"]["message"], "boom");
    }
}
