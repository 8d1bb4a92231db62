//! Answers, usage, stop reasons and errors: Anthropic <-> OpenAI.

use serde_json::{Map, Value, json};

use crate::api::error_body;
use crate::policy::Route;

/// OpenAI's `finish_reason` for an Anthropic `stop_reason`.
pub fn openai_finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn
        _ => "stop",
    }
}

/// Anthropic's `stop_reason` for an OpenAI `finish_reason`.
pub fn anthropic_stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

fn count(usage: &Value, name: &str) -> u64 {
    usage.get(name).and_then(Value::as_u64).unwrap_or(0)
}

/// OpenAI usage for Anthropic usage. Anthropic's `input_tokens` leaves
/// out the cached prompt (read or written); OpenAI's `prompt_tokens`
/// includes it, with the part read from cache in `cached_tokens`.
pub fn openai_usage(usage: &Value) -> Value {
    let read = count(usage, "cache_read_input_tokens");
    let prompt = count(usage, "input_tokens") + read + count(usage, "cache_creation_input_tokens");
    let completion = count(usage, "output_tokens");
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": { "cached_tokens": read },
    })
}

/// Anthropic usage for OpenAI usage (the inverse of [`openai_usage`]; a
/// cache write is not reported by OpenAI, so it is zero).
pub fn anthropic_usage(usage: &Value) -> Value {
    let cached = usage
        .get("prompt_tokens_details")
        .map_or(0, |d| count(d, "cached_tokens"));
    json!({
        "input_tokens": count(usage, "prompt_tokens").saturating_sub(cached),
        "output_tokens": count(usage, "completion_tokens"),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    })
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An Anthropic message answer as an OpenAI chat completion.
pub fn anthropic_to_openai_response(answer: &Value) -> Value {
    let mut text: Option<String> = None;
    let mut calls = Vec::new();
    for block in answer
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text
                .get_or_insert_with(String::new)
                .push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": serde_json::to_string(block.get("input").unwrap_or(&json!({}))).unwrap_or_default(),
                },
            })),
            // Thinking and server-tool blocks have no place in a chat
            // completion.
            _ => {}
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    message.insert("content".into(), text.map_or(Value::Null, Value::String));
    message.insert("refusal".into(), Value::Null);
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    let finish = answer
        .get("stop_reason")
        .and_then(Value::as_str)
        .map_or(Value::Null, |r| openai_finish_reason(r).into());
    let mut out = json!({
        "id": answer.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": unix_now(),
        "model": answer.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish }],
    });
    if let Some(usage) = answer.get("usage").filter(|u| u.is_object()) {
        out["usage"] = openai_usage(usage);
    }
    out
}

/// An OpenAI chat completion as an Anthropic message answer (its first
/// choice).
pub fn openai_to_anthropic_response(answer: &Value) -> Value {
    let choice = answer
        .get("choices")
        .and_then(|c| c.get(0))
        .cloned()
        .unwrap_or(Value::Null);
    let message = choice.get("message").cloned().unwrap_or(Value::Null);
    let mut content = Vec::new();
    for key in ["content", "refusal"] {
        if let Some(text) = message.get(key).and_then(Value::as_str)
            && !text.is_empty()
        {
            content.push(json!({ "type": "text", "text": text }));
        }
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let function = call.get("function");
        let arguments = function
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or("");
        content.push(json!({
            "type": "tool_use",
            "id": call.get("id").cloned().unwrap_or(Value::Null),
            "name": function.and_then(|f| f.get("name")).cloned().unwrap_or(Value::Null),
            "input": tool_input(arguments),
        }));
    }
    let refused = message
        .get("refusal")
        .and_then(Value::as_str)
        .is_some_and(|r| !r.is_empty());
    let stop = if refused {
        "refusal"
    } else {
        choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map_or("end_turn", anthropic_stop_reason)
    };
    json!({
        "id": answer.get("id").cloned().unwrap_or(Value::Null),
        "type": "message",
        "role": "assistant",
        "model": answer.get("model").cloned().unwrap_or(Value::Null),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": answer.get("usage").filter(|u| u.is_object()).map_or_else(
            || json!({ "input_tokens": 0, "output_tokens": 0 }),
            anthropic_usage,
        ),
    })
}

/// A tool call's argument string as an Anthropic input object; anything
/// that is not a JSON object (a model can emit broken JSON) is kept as
/// `{"arguments": "<the text>"}` rather than lost.
pub(super) fn tool_input(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({ "arguments": arguments }),
    }
}

/// The message of an error body of either shape, else the body's text.
pub(super) fn error_message(body: &[u8]) -> String {
    // OpenAI, Anthropic and Gemini all put it at error.message.
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.get("message")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned())
}

/// An error body for the client's `route`, from a provider error of
/// either shape.
pub(super) fn error_for(route: Route, status: u16, body: &[u8]) -> Vec<u8> {
    let message = error_message(body);
    let message = if message.is_empty() {
        format!("the provider answered {status}")
    } else {
        message
    };
    error_body(route, status, &message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_answer_becomes_a_chat_completion() {
        let answer = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [
                { "type": "thinking", "thinking": "hmm", "signature": "s" },
                { "type": "text", "text": "Checking." },
                { "type": "tool_use", "id": "toolu_1", "name": "look", "input": { "at": 1 } }
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": { "input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20 }
        });
        let out = anthropic_to_openai_response(&answer);
        assert_eq!(out["object"], "chat.completion");
        assert_eq!(out["id"], "msg_1");
        let m = &out["choices"][0]["message"];
        assert_eq!(m["content"], "Checking.");
        assert_eq!(m["tool_calls"][0]["id"], "toolu_1");
        assert_eq!(m["tool_calls"][0]["function"]["arguments"], "{\"at\":1}");
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            out["usage"],
            json!({ "prompt_tokens": 130, "completion_tokens": 5, "total_tokens": 135, "prompt_tokens_details": { "cached_tokens": 100 } })
        );
    }

    #[test]
    fn chat_completion_becomes_an_anthropic_answer() {
        let answer = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-x",
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": "Sure.", "refusal": null, "tool_calls": [
                { "id": "call_1", "type": "function", "function": { "name": "look", "arguments": "{\"at\":1}" } },
                { "id": "call_2", "type": "function", "function": { "name": "look", "arguments": "not json" } }
            ]}, "finish_reason": "tool_calls" }],
            "usage": { "prompt_tokens": 130, "completion_tokens": 5, "total_tokens": 135, "prompt_tokens_details": { "cached_tokens": 100 } }
        });
        let out = openai_to_anthropic_response(&answer);
        assert_eq!(
            out,
            json!({
                "id": "chatcmpl-1", "type": "message", "role": "assistant", "model": "gpt-x",
                "content": [
                    { "type": "text", "text": "Sure." },
                    { "type": "tool_use", "id": "call_1", "name": "look", "input": { "at": 1 } },
                    { "type": "tool_use", "id": "call_2", "name": "look", "input": { "arguments": "not json" } }
                ],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": { "input_tokens": 30, "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 100 }
            })
        );
    }

    #[test]
    fn stop_reasons_map_both_ways() {
        for (anthropic, openai) in [
            ("end_turn", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
        ] {
            assert_eq!(openai_finish_reason(anthropic), openai);
            assert_eq!(anthropic_stop_reason(openai), anthropic);
        }
        assert_eq!(openai_finish_reason("stop_sequence"), "stop");
    }
}
