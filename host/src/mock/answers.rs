//! What the mock answers: deterministic texts, tool calls and embeddings.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::api::{self, ParsedRequest};
use crate::policy::Route;

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The answer text for a request, and whether `max_tokens` cut it.
fn answer_text(req: &ParsedRequest) -> (String, bool) {
    let text = format!("mock answer to: {}", req.last_user_text());
    match req.max_tokens {
        Some(max) if api::estimate_tokens(&text) > max => {
            let keep = usize::try_from(max).unwrap_or(usize::MAX).saturating_mul(4);
            (text.chars().take(keep).collect(), true)
        }
        _ => (text, false),
    }
}

/// The tool a request forces the model to call, if any.
fn forced_tool(req: &ParsedRequest) -> Option<String> {
    let tools = req.field("tools")?;
    let tools = tools.as_array().filter(|t| !t.is_empty())?;
    let choice = req.field("tool_choice")?;
    let choice = &choice;
    let first = || {
        let tool = &tools[0];
        // OpenAI nests the name under "function"; Anthropic does not.
        tool.get("function")
            .unwrap_or(tool)
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    match req.route {
        Route::Chat => match choice {
            Value::String(s) if s == "required" => first(),
            Value::Object(o) => o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            _ => None,
        },
        Route::AnthropicMessages => match choice.get("type").and_then(Value::as_str) {
            Some("any") => first(),
            Some("tool") => choice
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned),
            _ => None,
        },
        Route::Embeddings => None,
    }
}

fn tool_arguments(req: &ParsedRequest) -> Value {
    json!({ "query": req.last_user_text() })
}

pub(super) fn chat_answer(req: &ParsedRequest, id: u64) -> Value {
    let n = req
        .field("n")
        .as_ref()
        .and_then(Value::as_u64)
        .map_or(1, |n| n.clamp(1, 16));
    // Completion tokens are counted over exactly what a stream would carry
    // (content, tool name, arguments), so counting a stream agrees.
    let (message, finish, chars) = match forced_tool(req) {
        Some(name) => {
            let arguments = tool_arguments(req).to_string();
            let chars = name.chars().count() + arguments.chars().count();
            let message = json!({
                "role": "assistant",
                "content": null,
                "refusal": null,
                "tool_calls": [{
                    "id": format!("call_mock_{id}"),
                    "type": "function",
                    "function": { "name": name, "arguments": arguments },
                }],
            });
            (message, "tool_calls", chars)
        }
        None => {
            let (text, cut) = answer_text(req);
            let chars = text.chars().count();
            let message = json!({ "role": "assistant", "content": text, "refusal": null });
            (message, if cut { "length" } else { "stop" }, chars)
        }
    };
    let choices: Vec<Value> = (0..n)
        .map(|i| json!({ "index": i, "message": message, "logprobs": null, "finish_reason": finish }))
        .collect();
    let prompt = req.estimated_prompt_tokens;
    let completion = api::tokens_for_chars(chars).saturating_mul(n as u32);
    json!({
        "id": format!("chatcmpl-mock-{id}"),
        "object": "chat.completion",
        "created": unix_now(),
        "model": req.model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt.saturating_add(completion),
        },
        "system_fingerprint": "fp_sluice_mock",
    })
}

pub(super) fn anthropic_answer(req: &ParsedRequest, id: u64) -> Value {
    let (block, stop, chars) = match forced_tool(req) {
        Some(name) => {
            let input = tool_arguments(req);
            let chars = name.chars().count() + input.to_string().chars().count();
            let block = json!({
                "type": "tool_use",
                "id": format!("toolu_mock_{id}"),
                "name": name,
                "input": input,
            });
            (block, "tool_use", chars)
        }
        None => {
            let (text, cut) = answer_text(req);
            let chars = text.chars().count();
            let block = json!({ "type": "text", "text": text });
            (block, if cut { "max_tokens" } else { "end_turn" }, chars)
        }
    };
    json!({
        "id": format!("msg_mock_{id}"),
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": [block],
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": {
            "input_tokens": req.estimated_prompt_tokens,
            "output_tokens": api::tokens_for_chars(chars),
        },
    })
}

/// The embeddings answer, or the message of a 400.
pub(super) fn embeddings_answer(
    req: &ParsedRequest,
    default_dim: usize,
) -> Result<Value, &'static str> {
    let dim = match req.field("dimensions").as_ref() {
        None | Some(Value::Null) => default_dim,
        Some(v) => match v.as_u64().filter(|d| (1..=4096).contains(d)) {
            Some(d) => d as usize,
            None => return Err("Invalid 'dimensions': expected an integer between 1 and 4096."),
        },
    };
    let base64 = req
        .field("encoding_format")
        .as_ref()
        .and_then(Value::as_str)
        == Some("base64");
    let data: Vec<Value> = req
        .messages
        .iter()
        .enumerate()
        .map(|(index, m)| {
            // Token-id inputs embed their id list.
            let text = m.extra_json.as_deref().unwrap_or(&m.text);
            let vector = embedding(text, dim);
            let encoded = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64_encode(&bytes))
            } else {
                Value::Array(vector.into_iter().map(Value::from).collect())
            };
            json!({ "object": "embedding", "index": index, "embedding": encoded })
        })
        .collect();
    let prompt = req.estimated_prompt_tokens;
    Ok(json!({
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": { "prompt_tokens": prompt, "total_tokens": prompt },
    }))
}

/// The mock's embedding of `text`: a deterministic unit vector of `dim`
/// components, the normalised sum of one pseudo-random vector per lower-cased
/// word (derived from the word's blake3 hash). Equal texts embed equally, and
/// texts sharing most of their words score close, which is what semantic-cache
/// demos need; unrelated texts score near zero.
pub fn embedding(text: &str, dim: usize) -> Vec<f32> {
    let mut v = vec![0f32; dim.max(1)];
    let mut words = 0;
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        add_word_vector(&mut v, &word.to_lowercase());
        words += 1;
    }
    if words == 0 {
        add_word_vector(&mut v, text);
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn add_word_vector(v: &mut [f32], word: &str) {
    let mut hasher = blake3::Hasher::new();
    hasher.update(word.as_bytes());
    let mut xof = hasher.finalize_xof();
    let mut buf = [0u8; 4];
    for x in v.iter_mut() {
        xof.fill(&mut buf);
        *x += u32::from_le_bytes(buf) as f32 / u32::MAX as f32 * 2.0 - 1.0;
    }
}

/// Standard base64 with padding, for `encoding_format: "base64"` (what the
/// official OpenAI SDKs request by default).
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A Gemini `generateContent` answer: `mock answer to: <last user text>`,
/// or a call of the forced function (`toolConfig` mode `ANY`) with
/// `{"query": <last user text>}`.
pub(super) fn gemini_answer(model: &str, req: &Value, id: u64) -> Value {
    let texts = |content: &Value| -> String {
        content["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("")
    };
    let contents = req["contents"].as_array().cloned().unwrap_or_default();
    let last_user = contents
        .iter()
        .rev()
        .find(|c| c["role"] == "user" && !texts(c).is_empty())
        .map(texts)
        .unwrap_or_default();
    let prompt_chars: usize = contents
        .iter()
        .map(|c| texts(c).chars().count())
        .sum::<usize>()
        + texts(&req["systemInstruction"]).chars().count();
    let config = &req["toolConfig"]["functionCallingConfig"];
    let forced = (config["mode"] == "ANY").then(|| {
        config["allowedFunctionNames"][0]
            .as_str()
            .or_else(|| req["tools"][0]["functionDeclarations"][0]["name"].as_str())
            .map(str::to_owned)
    });
    let (part, chars) = match forced.flatten() {
        Some(name) => {
            let args = json!({ "query": last_user });
            let chars = name.chars().count() + args.to_string().chars().count();
            (
                json!({ "functionCall": { "name": name, "args": args } }),
                chars,
            )
        }
        None => {
            let text = format!("mock answer to: {last_user}");
            let chars = text.chars().count();
            (json!({ "text": text }), chars)
        }
    };
    let prompt = api::tokens_for_chars(prompt_chars);
    let completion = api::tokens_for_chars(chars);
    json!({
        "candidates": [{ "content": { "role": "model", "parts": [part] }, "finishReason": "STOP", "index": 0 }],
        "usageMetadata": { "promptTokenCount": prompt, "candidatesTokenCount": completion, "totalTokenCount": prompt + completion },
        "modelVersion": model,
        "responseId": format!("mock-gemini-{id}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embedding("What is the capital of France?", 16);
        assert_eq!(a.len(), 16);
        assert_eq!(a, embedding("what is the capital of france", 16));
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-5);
        let empty = embedding("", 8);
        assert!((cosine(&empty, &empty) - 1.0).abs() < 1e-5);
        assert_eq!(embedding("x", 0).len(), 1);
    }

    #[test]
    fn similar_texts_embed_closer_than_unrelated_ones() {
        let dim = 256;
        let a = embedding("what is the capital city of france today", dim);
        let b = embedding("what is the capital city of france", dim);
        let c = embedding("recipe for chocolate banana bread muffins", dim);
        assert!(cosine(&a, &b) > 0.85, "{}", cosine(&a, &b));
        assert!(cosine(&a, &c) < 0.5, "{}", cosine(&a, &c));
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(&[0xff, 0xfe, 0x00, 0x01]), "//4AAQ==");
    }

    fn parsed(route: Route, body: &str) -> ParsedRequest {
        api::parse(route, body.as_bytes()).unwrap()
    }

    #[test]
    fn answers_follow_the_last_user_message_and_max_tokens() {
        let req = parsed(
            Route::Chat,
            r#"{"model":"m","messages":[{"role":"user","content":"hello"}]}"#,
        );
        let a = chat_answer(&req, 1);
        assert_eq!(
            a["choices"][0]["message"]["content"],
            "mock answer to: hello"
        );
        assert_eq!(a["choices"][0]["finish_reason"], "stop");
        assert_eq!(a["usage"]["prompt_tokens"], req.estimated_prompt_tokens);
        assert_eq!(
            a["usage"]["completion_tokens"],
            api::estimate_tokens("mock answer to: hello")
        );

        let short = parsed(
            Route::AnthropicMessages,
            r#"{"model":"c","max_tokens":2,"messages":[{"role":"user","content":"hello"}]}"#,
        );
        let a = anthropic_answer(&short, 2);
        assert_eq!(a["content"][0]["text"], "mock ans");
        assert_eq!(a["stop_reason"], "max_tokens");
        assert_eq!(a["usage"]["output_tokens"], 2);
    }

    #[test]
    fn forced_tools_are_called_with_the_question() {
        let req = parsed(
            Route::Chat,
            r#"{"model":"m","messages":[{"role":"user","content":"rain?"}],
                "tools":[{"type":"function","function":{"name":"weather"}}],"tool_choice":"required"}"#,
        );
        let a = chat_answer(&req, 3);
        let call = &a["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "weather");
        assert_eq!(call["function"]["arguments"], r#"{"query":"rain?"}"#);
        assert_eq!(a["choices"][0]["finish_reason"], "tool_calls");

        let req = parsed(
            Route::AnthropicMessages,
            r#"{"model":"c","max_tokens":9,"messages":[{"role":"user","content":"rain?"}],
                "tools":[{"name":"a"},{"name":"b"}],"tool_choice":{"type":"tool","name":"b"}}"#,
        );
        let a = anthropic_answer(&req, 4);
        assert_eq!(a["content"][0]["type"], "tool_use");
        assert_eq!(a["content"][0]["name"], "b");
        assert_eq!(a["content"][0]["input"]["query"], "rain?");
        assert_eq!(a["stop_reason"], "tool_use");

        let auto = parsed(
            Route::Chat,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"w"}}]}"#,
        );
        assert!(chat_answer(&auto, 5)["choices"][0]["message"]["tool_calls"].is_null());
    }

    #[test]
    fn embeddings_honour_dimensions_and_base64() {
        let req = parsed(
            Route::Embeddings,
            r#"{"model":"e","input":["a","b"],"dimensions":4,"encoding_format":"base64"}"#,
        );
        let a = embeddings_answer(&req, 16).unwrap();
        assert_eq!(a["data"].as_array().unwrap().len(), 2);
        let encoded = a["data"][1]["embedding"].as_str().unwrap();
        // 4 floats = 16 bytes = 24 base64 characters.
        assert_eq!(encoded.len(), 24);
        let bad = parsed(
            Route::Embeddings,
            r#"{"model":"e","input":"a","dimensions":0}"#,
        );
        assert!(
            embeddings_answer(&bad, 16)
                .unwrap_err()
                .contains("dimensions")
        );
    }
}
