//! Converting an answer between its streamed and non-streamed forms, so a
//! cached answer can be replayed to a client that asked for the other form.
//!
//! Covered: OpenAI chat completions (content, refusal, tool calls, logprobs,
//! finish reasons, several choices, usage) and Anthropic messages (text,
//! tool_use, thinking blocks; other block types pass through whole in their
//! `content_block_start`). Message fields outside that set (e.g. OpenAI
//! `annotations`, `audio`) are not carried across.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::sse::SseEvent;
use super::to_json_bytes;
use crate::policy::Route;

/// Why an answer could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The non-streamed answer is not JSON.
    #[error("answer is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but not the answer shape the route produces.
    #[error("answer is not {0}")]
    Shape(&'static str),
    /// The stream carried no answer event at all.
    #[error("the stream holds no answer")]
    Empty,
    /// Embeddings have no streamed form.
    #[error("embeddings are never streamed")]
    NotStreamable,
}

/// Assembles a streamed answer (its events, in order) into the body the
/// provider would have sent without streaming.
pub fn stream_to_json(route: Route, events: &[SseEvent]) -> Result<Vec<u8>, ConvertError> {
    let value = match route {
        Route::Chat => openai_from_stream(events)?,
        Route::AnthropicMessages => anthropic_from_stream(events)?,
        Route::Embeddings => return Err(ConvertError::NotStreamable),
    };
    Ok(to_json_bytes(&value))
}

/// Splits a complete non-streamed answer into a valid event sequence ending
/// with `[DONE]` (OpenAI) or `message_stop` (Anthropic). OpenAI sequences
/// include the usage-only chunk when the answer has usage; see
/// [`is_usage_only_chunk`].
pub fn json_to_stream(route: Route, body: &[u8]) -> Result<Vec<SseEvent>, ConvertError> {
    let value: Value = serde_json::from_slice(body)?;
    json_value_to_stream(route, &value)
}

/// [`json_to_stream`] for an answer already parsed.
pub(crate) fn json_value_to_stream(
    route: Route,
    answer: &Value,
) -> Result<Vec<SseEvent>, ConvertError> {
    match route {
        Route::Chat => openai_to_stream(answer),
        Route::AnthropicMessages => anthropic_to_stream(answer),
        Route::Embeddings => Err(ConvertError::NotStreamable),
    }
}

/// Whether `event` is OpenAI's usage-only chunk (`"choices":[]` with usage),
/// which the gateway drops for clients that did not ask for usage.
pub fn is_usage_only_chunk(event: &SseEvent) -> bool {
    // Cheap pre-check: most chunks are content deltas without usage.
    if event.event.is_some() || !event.data.contains("\"usage\"") {
        return false;
    }
    let Ok(chunk) = serde_json::from_str::<Value>(&event.data) else {
        return false;
    };
    chunk.get("usage").is_some_and(Value::is_object)
        && chunk
            .get("choices")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
}

/// Pieces a replayed text is cut into: whole words, at least `MIN_PIECE`
/// bytes each where the text allows, never more than `MAX_PIECE` bytes
/// (a long word is cut at a character boundary).
const MIN_PIECE: usize = 16;
const MAX_PIECE: usize = 64;

/// Cuts `text` into stream-sized pieces that concatenate back to it.
pub(crate) fn split_pieces(text: &str) -> Vec<&str> {
    let mut pieces = Vec::with_capacity(text.len() / MIN_PIECE + 1);
    let mut start = 0;
    let mut last_space_end = None;
    for (i, c) in text.char_indices() {
        let end = i + c.len_utf8();
        if end - start > MAX_PIECE {
            // Cut before this character: after the last whitespace when there
            // was one, else right here.
            let cut = last_space_end.filter(|&s| s > start).unwrap_or(i);
            pieces.push(&text[start..cut]);
            start = cut;
            last_space_end = None;
        }
        if c.is_whitespace() {
            last_space_end = Some(end);
            if end - start >= MIN_PIECE {
                pieces.push(&text[start..end]);
                start = end;
            }
        }
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

// === OpenAI ===

/// The fields every chunk repeats, copied from the answer (and back).
const OPENAI_HEAD: [&str; 4] = ["id", "created", "model", "service_tier"];

#[derive(Default)]
struct OpenAiChoice {
    role: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u64, OpenAiToolCall>,
    logprobs: Option<Map<String, Value>>,
    finish_reason: Value,
}

#[derive(Default)]
struct OpenAiToolCall {
    id: Option<Value>,
    kind: Option<Value>,
    name: String,
    arguments: String,
}

fn openai_from_stream(events: &[SseEvent]) -> Result<Value, ConvertError> {
    let mut head = Map::new();
    let mut fingerprint = None;
    let mut usage = None;
    let mut choices: BTreeMap<u64, OpenAiChoice> = BTreeMap::new();
    let mut saw_chunk = false;

    for event in events.iter().filter(|e| !e.is_done()) {
        let Ok(Value::Object(chunk)) = serde_json::from_str::<Value>(&event.data) else {
            continue;
        };
        if chunk.contains_key("error") {
            continue;
        }
        saw_chunk = true;
        for key in OPENAI_HEAD {
            if let Some(v) = chunk.get(key).filter(|v| !v.is_null()) {
                head.entry(key).or_insert_with(|| v.clone());
            }
        }
        if let Some(v) = chunk.get("system_fingerprint").filter(|v| !v.is_null()) {
            fingerprint.get_or_insert_with(|| v.clone());
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            usage = Some(u.clone());
        }
        let Some(Value::Array(deltas)) = chunk.get("choices") else {
            continue;
        };
        for choice in deltas {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let acc = choices.entry(index).or_default();
            if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
                acc.finish_reason = reason.clone();
            }
            if let Some(Value::Object(lp)) = choice.get("logprobs") {
                merge_logprobs(acc.logprobs.get_or_insert_with(Map::new), lp);
            }
            let Some(delta) = choice.get("delta") else {
                continue;
            };
            if let Some(role) = delta.get("role").and_then(Value::as_str) {
                acc.role = Some(role.to_owned());
            }
            if let Some(text) = delta.get("content").and_then(Value::as_str) {
                acc.content.get_or_insert_with(String::new).push_str(text);
            }
            if let Some(text) = delta.get("refusal").and_then(Value::as_str) {
                acc.refusal.get_or_insert_with(String::new).push_str(text);
            }
            let calls = delta.get("tool_calls").and_then(Value::as_array);
            for (position, call) in calls.into_iter().flatten().enumerate() {
                let index = call
                    .get("index")
                    .and_then(Value::as_u64)
                    .unwrap_or(position as u64);
                let tool = acc.tool_calls.entry(index).or_default();
                if let Some(id) = call.get("id").filter(|v| !v.is_null()) {
                    tool.id = Some(id.clone());
                }
                if let Some(kind) = call.get("type").filter(|v| !v.is_null()) {
                    tool.kind = Some(kind.clone());
                }
                if let Some(function) = call.get("function") {
                    if let Some(name) = function.get("name").and_then(Value::as_str) {
                        tool.name.push_str(name);
                    }
                    if let Some(args) = function.get("arguments").and_then(Value::as_str) {
                        tool.arguments.push_str(args);
                    }
                }
            }
        }
    }
    if !saw_chunk {
        return Err(ConvertError::Empty);
    }

    let choices: Vec<Value> = choices
        .into_iter()
        .map(|(index, c)| {
            let mut message = Map::new();
            message.insert(
                "role".into(),
                Value::String(c.role.unwrap_or_else(|| "assistant".into())),
            );
            message.insert(
                "content".into(),
                c.content.map_or(Value::Null, Value::String),
            );
            message.insert(
                "refusal".into(),
                c.refusal.map_or(Value::Null, Value::String),
            );
            if !c.tool_calls.is_empty() {
                let calls = c
                    .tool_calls
                    .into_values()
                    .map(|t| {
                        json!({
                            "id": t.id.unwrap_or(Value::Null),
                            "type": t.kind.unwrap_or_else(|| "function".into()),
                            "function": { "name": t.name, "arguments": t.arguments },
                        })
                    })
                    .collect();
                message.insert("tool_calls".into(), Value::Array(calls));
            }
            json!({
                "index": index,
                "message": message,
                "logprobs": c.logprobs.map_or(Value::Null, Value::Object),
                "finish_reason": c.finish_reason,
            })
        })
        .collect();

    let mut out = Map::new();
    out.insert("id".into(), head.remove("id").unwrap_or(Value::Null));
    out.insert("object".into(), "chat.completion".into());
    out.insert("created".into(), head.remove("created").unwrap_or(0.into()));
    out.insert("model".into(), head.remove("model").unwrap_or(Value::Null));
    out.insert("choices".into(), Value::Array(choices));
    if let Some(usage) = usage {
        out.insert("usage".into(), usage);
    }
    if let Some(tier) = head.remove("service_tier") {
        out.insert("service_tier".into(), tier);
    }
    if let Some(fp) = fingerprint {
        out.insert("system_fingerprint".into(), fp);
    }
    Ok(Value::Object(out))
}

/// Streamed logprobs arrive per chunk; their arrays concatenate.
fn merge_logprobs(acc: &mut Map<String, Value>, chunk: &Map<String, Value>) {
    for (key, value) in chunk {
        match (acc.get_mut(key), value) {
            (Some(Value::Array(have)), Value::Array(more)) => have.extend(more.iter().cloned()),
            (Some(have), v) if have.is_null() => *have = v.clone(),
            (Some(_), _) => {}
            (None, v) => {
                acc.insert(key.clone(), v.clone());
            }
        }
    }
}

fn openai_to_stream(answer: &Value) -> Result<Vec<SseEvent>, ConvertError> {
    const SHAPE: &str = "a chat.completion object with choices";
    let choices = answer
        .get("choices")
        .and_then(Value::as_array)
        .ok_or(ConvertError::Shape(SHAPE))?;

    let mut base = Map::new();
    for key in OPENAI_HEAD {
        if let Some(v) = answer.get(key) {
            base.insert(key.into(), v.clone());
        }
    }
    base.insert("object".into(), "chat.completion.chunk".into());
    if let Some(fp) = answer.get("system_fingerprint") {
        base.insert("system_fingerprint".into(), fp.clone());
    }
    let chunk = |choice: Value| {
        let mut c = base.clone();
        c.insert("choices".into(), Value::Array(vec![choice]));
        SseEvent::data(String::from_utf8_lossy(&to_json_bytes(&c)).into_owned())
    };
    let delta = |index: &Value, delta: Value| {
        chunk(json!({ "index": index, "delta": delta, "logprobs": null, "finish_reason": null }))
    };

    let mut events = Vec::new();
    for choice in choices {
        let index = choice.get("index").cloned().unwrap_or(0.into());
        let message = choice.get("message").ok_or(ConvertError::Shape(SHAPE))?;
        let role = message.get("role").cloned().unwrap_or("assistant".into());
        let content = message.get("content").and_then(Value::as_str);

        let mut first = Map::new();
        first.insert("role".into(), role);
        first.insert(
            "content".into(),
            content.map_or(Value::Null, |_| Value::String(String::new())),
        );
        first.insert("refusal".into(), Value::Null);
        events.push(delta(&index, Value::Object(first)));

        for piece in content.map(split_pieces).unwrap_or_default() {
            events.push(delta(&index, json!({ "content": piece })));
        }
        if let Some(refusal) = message.get("refusal").and_then(Value::as_str) {
            // An empty refusal still has to arrive as a string.
            let pieces = split_pieces(refusal);
            for piece in if pieces.is_empty() { vec![""] } else { pieces } {
                events.push(delta(&index, json!({ "refusal": piece })));
            }
        }
        let calls = message.get("tool_calls").and_then(Value::as_array);
        for (position, call) in calls.into_iter().flatten().enumerate() {
            let function = call.get("function");
            let field = |name: &str| {
                function
                    .and_then(|f| f.get(name))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            };
            events.push(delta(
                &index,
                json!({ "tool_calls": [{
                    "index": position,
                    "id": call.get("id").cloned().unwrap_or(Value::Null),
                    "type": call.get("type").cloned().unwrap_or("function".into()),
                    "function": { "name": field("name"), "arguments": "" },
                }]}),
            ));
            for piece in split_pieces(field("arguments")) {
                events.push(delta(
                    &index,
                    json!({ "tool_calls": [{ "index": position, "function": { "arguments": piece } }] }),
                ));
            }
        }
        events.push(chunk(json!({
            "index": index,
            "delta": {},
            "logprobs": choice.get("logprobs").cloned().unwrap_or(Value::Null),
            "finish_reason": choice.get("finish_reason").cloned().unwrap_or(Value::Null),
        })));
    }

    if let Some(usage) = answer.get("usage").filter(|u| u.is_object()) {
        let mut c = base.clone();
        c.insert("choices".into(), Value::Array(Vec::new()));
        c.insert("usage".into(), usage.clone());
        events.push(SseEvent::data(
            String::from_utf8_lossy(&to_json_bytes(&c)).into_owned(),
        ));
    }
    events.push(SseEvent::done());
    Ok(events)
}

// === Anthropic ===

fn anthropic_from_stream(events: &[SseEvent]) -> Result<Value, ConvertError> {
    let mut message: Option<Map<String, Value>> = None;
    // Blocks by index, with the partial JSON of a tool_use input.
    let mut blocks: BTreeMap<u64, (Value, String)> = BTreeMap::new();
    let mut stop_reason = None;
    let mut stop_sequence = None;
    let mut final_usage: Option<Map<String, Value>> = None;

    for event in events {
        let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
            continue;
        };
        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
        match data.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                if let Some(Value::Object(m)) = data.get("message") {
                    message = Some(m.clone());
                }
            }
            Some("content_block_start") => {
                if let Some(block) = data.get("content_block") {
                    blocks.insert(index, (block.clone(), String::new()));
                }
            }
            Some("content_block_delta") => {
                let (Some(delta), Some((block, partial))) =
                    (data.get("delta"), blocks.get_mut(&index))
                else {
                    continue;
                };
                apply_block_delta(block, partial, delta);
            }
            Some("message_delta") => {
                if let Some(delta) = data.get("delta") {
                    if let Some(r) = delta.get("stop_reason") {
                        stop_reason = Some(r.clone());
                    }
                    if let Some(s) = delta.get("stop_sequence") {
                        stop_sequence = Some(s.clone());
                    }
                }
                if let Some(Value::Object(u)) = data.get("usage") {
                    let acc = final_usage.get_or_insert_with(Map::new);
                    for (k, v) in u {
                        acc.insert(k.clone(), v.clone());
                    }
                }
            }
            _ => {}
        }
    }

    let mut message = message.ok_or(ConvertError::Empty)?;
    let content = blocks
        .into_values()
        .map(|(mut block, partial)| {
            if !partial.is_empty() {
                // A cut stream can leave invalid JSON; keep the start's input
                // rather than invent one.
                if let (Ok(input), Some(obj)) = (
                    serde_json::from_str::<Value>(&partial),
                    block.as_object_mut(),
                ) {
                    obj.insert("input".into(), input);
                }
            }
            block
        })
        .collect();
    message.insert("content".into(), Value::Array(content));
    if let Some(r) = stop_reason {
        message.insert("stop_reason".into(), r);
    }
    if let Some(s) = stop_sequence {
        message.insert("stop_sequence".into(), s);
    }
    if let Some(update) = final_usage {
        let usage = message
            .entry("usage")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(usage) = usage {
            for (k, v) in update {
                usage.insert(k, v);
            }
        }
    }
    Ok(Value::Object(message))
}

fn apply_block_delta(block: &mut Value, partial: &mut String, delta: &Value) {
    let Some(obj) = block.as_object_mut() else {
        return;
    };
    let append = |obj: &mut Map<String, Value>, key: &str, more: Option<&Value>| {
        let Some(more) = more.and_then(Value::as_str) else {
            return;
        };
        match obj.get_mut(key) {
            Some(Value::String(have)) => have.push_str(more),
            _ => {
                obj.insert(key.into(), Value::String(more.to_owned()));
            }
        }
    };
    match delta.get("type").and_then(Value::as_str) {
        Some("text_delta") => append(obj, "text", delta.get("text")),
        Some("thinking_delta") => append(obj, "thinking", delta.get("thinking")),
        Some("signature_delta") => append(obj, "signature", delta.get("signature")),
        Some("input_json_delta") => {
            if let Some(p) = delta.get("partial_json").and_then(Value::as_str) {
                partial.push_str(p);
            }
        }
        Some("citations_delta") => {
            if let Some(citation) = delta.get("citation") {
                match obj.get_mut("citations") {
                    Some(Value::Array(have)) => have.push(citation.clone()),
                    _ => {
                        obj.insert("citations".into(), json!([citation]));
                    }
                }
            }
        }
        _ => {}
    }
}

fn anthropic_to_stream(answer: &Value) -> Result<Vec<SseEvent>, ConvertError> {
    const SHAPE: &str = "an Anthropic message with content";
    let Value::Object(message) = answer else {
        return Err(ConvertError::Shape(SHAPE));
    };
    let content = message
        .get("content")
        .and_then(Value::as_array)
        .ok_or(ConvertError::Shape(SHAPE))?;

    let event = |name: &str, data: Value| {
        SseEvent::named(
            name,
            String::from_utf8_lossy(&to_json_bytes(&data)).into_owned(),
        )
    };

    let mut start = message.clone();
    start.insert("content".into(), Value::Array(Vec::new()));
    start.insert("stop_reason".into(), Value::Null);
    start.insert("stop_sequence".into(), Value::Null);
    let output_tokens = message
        .get("usage")
        .and_then(|u| u.get("output_tokens"))
        .cloned();
    if let Some(Value::Object(usage)) = start.get_mut("usage")
        && usage.contains_key("output_tokens")
    {
        // Output is reported in message_delta, as the provider does.
        usage.insert("output_tokens".into(), 0.into());
    }

    let mut events = vec![event(
        "message_start",
        json!({ "type": "message_start", "message": start }),
    )];
    for (index, block) in content.iter().enumerate() {
        let kind = block
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut head = block.clone();
        let mut deltas: Vec<Value> = Vec::new();
        match (kind, head.as_object_mut()) {
            ("text", Some(obj)) => {
                let text = obj.insert("text".into(), "".into());
                let text = text.as_ref().and_then(Value::as_str).unwrap_or_default();
                for piece in split_pieces(text) {
                    deltas.push(json!({ "type": "text_delta", "text": piece }));
                }
            }
            ("tool_use", Some(obj)) => {
                let input = obj.insert("input".into(), json!({}));
                let input = match input {
                    Some(Value::Object(o)) if o.is_empty() => String::new(),
                    Some(v) => String::from_utf8_lossy(&to_json_bytes(&v)).into_owned(),
                    None => String::new(),
                };
                for piece in split_pieces(&input) {
                    deltas.push(json!({ "type": "input_json_delta", "partial_json": piece }));
                }
            }
            ("thinking", Some(obj)) => {
                let thinking = obj.insert("thinking".into(), "".into());
                let thinking = thinking
                    .as_ref()
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                for piece in split_pieces(thinking) {
                    deltas.push(json!({ "type": "thinking_delta", "thinking": piece }));
                }
                if let Some(Value::String(sig)) = obj.remove("signature") {
                    deltas.push(json!({ "type": "signature_delta", "signature": sig }));
                }
            }
            // Other blocks (redacted thinking, server tool results, ...) go
            // whole in their start event.
            _ => {}
        }
        events.push(event(
            "content_block_start",
            json!({ "type": "content_block_start", "index": index, "content_block": head }),
        ));
        for delta in deltas {
            events.push(event(
                "content_block_delta",
                json!({ "type": "content_block_delta", "index": index, "delta": delta }),
            ));
        }
        events.push(event(
            "content_block_stop",
            json!({ "type": "content_block_stop", "index": index }),
        ));
    }

    let mut delta_usage = Map::new();
    if let Some(out) = output_tokens {
        delta_usage.insert("output_tokens".into(), out);
    }
    events.push(event(
        "message_delta",
        json!({
            "type": "message_delta",
            "delta": {
                "stop_reason": message.get("stop_reason").cloned().unwrap_or(Value::Null),
                "stop_sequence": message.get("stop_sequence").cloned().unwrap_or(Value::Null),
            },
            "usage": delta_usage,
        }),
    ));
    events.push(event("message_stop", json!({ "type": "message_stop" })));
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::StreamAccumulator;
    use crate::api::sse::{SseParser, encode};
    use crate::policy::TokenCount;

    fn round_trip(route: Route, answer: &Value) -> Value {
        let events = json_to_stream(route, &to_json_bytes(answer)).expect("to stream");
        // Through the wire and back, as a cached stream would be.
        let replayed = SseParser::new().feed(&encode(&events));
        assert_eq!(replayed, events);
        serde_json::from_slice(&stream_to_json(route, &replayed).expect("to json")).unwrap()
    }

    #[test]
    fn split_pieces_concatenate_back_and_respect_bounds() {
        let texts = [
            "",
            "short",
            "mock answer to: what is the capital of France?",
            &"x".repeat(200),
            &"é".repeat(100),
            "a b c d e f g h i j k l m n o p q r s t u v w x y z and some more words",
            &format!("{} tail", "y".repeat(70)),
        ];
        for text in texts {
            let pieces = split_pieces(text);
            assert_eq!(pieces.concat(), text);
            assert!(pieces.iter().all(|p| !p.is_empty() && p.len() <= MAX_PIECE));
        }
        assert!(split_pieces("mock answer to: what is the capital of France?").len() > 1);
    }

    #[test]
    fn openai_text_answer_round_trips() {
        let answer = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-mini",
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": "The capital of France is Paris, a city on the Seine.", "refusal": null },
                "logprobs": null, "finish_reason": "stop"
            }],
            "usage": { "prompt_tokens": 12, "completion_tokens": 13, "total_tokens": 25,
                       "prompt_tokens_details": { "cached_tokens": 0 } },
            "system_fingerprint": "fp_1"
        });
        assert_eq!(round_trip(Route::Chat, &answer), answer);
    }

    #[test]
    fn openai_tool_calls_and_several_choices_round_trip() {
        let answer = json!({
            "id": "chatcmpl-2", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [
                {
                    "index": 0,
                    "message": { "role": "assistant", "content": null, "refusal": null, "tool_calls": [
                        { "id": "call_a", "type": "function",
                          "function": { "name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"celsius\",\"days\":3}" } },
                        { "id": "call_b", "type": "function", "function": { "name": "noop", "arguments": "" } }
                    ]},
                    "logprobs": null, "finish_reason": "tool_calls"
                },
                {
                    "index": 1,
                    "message": { "role": "assistant", "content": "", "refusal": "I can't help with that request, sorry." },
                    "logprobs": { "content": [{ "token": "I", "logprob": -0.1, "bytes": [73], "top_logprobs": [] }], "refusal": null },
                    "finish_reason": "stop"
                }
            ],
            "usage": { "prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12 }
        });
        assert_eq!(round_trip(Route::Chat, &answer), answer);
    }

    #[test]
    fn openai_stream_is_well_formed() {
        let answer = json!({
            "id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": "hello there general kenobi, long time" }, "finish_reason": "stop" }],
            "usage": { "prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3 }
        });
        let events = json_to_stream(Route::Chat, &to_json_bytes(&answer)).unwrap();
        let last = events.last().unwrap();
        assert!(last.is_done());
        assert!(is_usage_only_chunk(&events[events.len() - 2]));
        assert_eq!(events.iter().filter(|e| is_usage_only_chunk(e)).count(), 1);
        for e in &events[..events.len() - 1] {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            assert_eq!(v["object"], "chat.completion.chunk");
            assert_eq!(v["id"], "c");
            assert!(e.event.is_none());
        }
        let mut acc = StreamAccumulator::new(Route::Chat);
        events.iter().for_each(|e| acc.observe(e));
        assert!(acc.is_complete());
        assert_eq!(acc.reported_usage(), Some(TokenCount::new(1, 2)));
    }

    #[test]
    fn anthropic_answer_round_trips() {
        let answer = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [
                { "type": "thinking", "thinking": "The user wants weather; call the tool.", "signature": "sig==" },
                { "type": "text", "text": "Let me check the weather in Paris for you right away." },
                { "type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": { "city": "Paris", "days": [1, 2] } },
                { "type": "tool_use", "id": "toolu_2", "name": "noop", "input": {} },
                { "type": "redacted_thinking", "data": "opaque" }
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": { "input_tokens": 40, "output_tokens": 30, "cache_read_input_tokens": 0 }
        });
        assert_eq!(round_trip(Route::AnthropicMessages, &answer), answer);
    }

    #[test]
    fn anthropic_stream_is_well_formed() {
        let answer = json!({
            "id": "msg_2", "type": "message", "role": "assistant", "model": "c",
            "content": [{ "type": "text", "text": "hi" }],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": { "input_tokens": 4, "output_tokens": 1 }
        });
        let events = json_to_stream(Route::AnthropicMessages, &to_json_bytes(&answer)).unwrap();
        let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        for e in &events {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            assert_eq!(v["type"], e.event.as_deref().unwrap());
        }
        let mut acc = StreamAccumulator::new(Route::AnthropicMessages);
        events.iter().for_each(|e| acc.observe(e));
        assert!(acc.is_complete());
        assert_eq!(acc.reported_usage(), Some(TokenCount::new(4, 1)));
    }

    #[test]
    fn assembles_a_provider_style_openai_stream() {
        // As OpenAI sends it: interleaved tool-call deltas, usage:null on
        // every chunk, a usage chunk at the end.
        let wire = concat!(
            "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
            "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\"\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
            "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
            "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}],\"usage\":null}\n\n",
            "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"gpt\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\n",
            "data: [DONE]\n\n",
        );
        let events = SseParser::new().feed(wire.as_bytes());
        let v: Value =
            serde_json::from_slice(&stream_to_json(Route::Chat, &events).unwrap()).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "gpt");
        let msg = &v["choices"][0]["message"];
        assert_eq!(msg["content"], Value::Null);
        assert_eq!(msg["tool_calls"][0]["id"], "call_1");
        assert_eq!(msg["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["usage"]["total_tokens"], 7);
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        assert!(matches!(
            stream_to_json(Route::Chat, &[SseEvent::done()]),
            Err(ConvertError::Empty)
        ));
        assert!(matches!(
            stream_to_json(Route::AnthropicMessages, &[SseEvent::named("ping", "{}")]),
            Err(ConvertError::Empty)
        ));
        assert!(matches!(
            json_to_stream(Route::Chat, b"nope"),
            Err(ConvertError::Json(_))
        ));
        assert!(matches!(
            json_to_stream(Route::Chat, b"{\"choices\":5}"),
            Err(ConvertError::Shape(_))
        ));
        assert!(matches!(
            json_to_stream(Route::AnthropicMessages, b"[1]"),
            Err(ConvertError::Shape(_))
        ));
        assert!(matches!(
            json_to_stream(Route::Embeddings, b"{}"),
            Err(ConvertError::NotStreamable)
        ));
    }

    #[test]
    fn usage_only_chunk_is_recognised_precisely() {
        assert!(is_usage_only_chunk(&SseEvent::data(
            r#"{"choices":[],"usage":{"prompt_tokens":1}}"#
        )));
        assert!(!is_usage_only_chunk(&SseEvent::data(
            r#"{"choices":[{"index":0,"delta":{}}],"usage":null}"#
        )));
        assert!(!is_usage_only_chunk(&SseEvent::data(
            r#"{"choices":[{"index":0,"delta":{"content":"\"usage\""}}]}"#
        )));
        assert!(!is_usage_only_chunk(&SseEvent::done()));
    }
}
