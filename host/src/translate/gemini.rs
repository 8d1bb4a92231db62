//! Google Gemini's native `generateContent` format <-> OpenAI chat
//! completions. Anthropic clients reach Gemini through the OpenAI form
//! (Anthropic -> OpenAI -> Gemini and back), so this file only knows
//! OpenAI and Gemini.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::response::unix_now;
use crate::api::{ApiError, SseEvent, to_json_bytes};

type Obj = Map<String, Value>;

fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// A Gemini part for an OpenAI content part.
fn part(p: &Value, at: &str) -> Result<Option<Value>, ApiError> {
    match p.get("type").and_then(Value::as_str) {
        Some("text") => Ok(p
            .get("text")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(|t| json!({ "text": t }))),
        Some("image_url") => {
            let url = p
                .get("image_url")
                .and_then(|i| i.get("url").or(Some(i)))
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::invalid(format!("{at}.image_url.url"), "a string"))?;
            if let Some(rest) = url.strip_prefix("data:")
                && let Some((mime, data)) = rest.split_once(";base64,")
            {
                return Ok(Some(
                    json!({ "inlineData": { "mimeType": mime, "data": data } }),
                ));
            }
            let mime = match url
                .rsplit('.')
                .next()
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("png") => "image/png",
                Some("webp") => "image/webp",
                Some("gif") => "image/gif",
                _ => "image/jpeg",
            };
            Ok(Some(
                json!({ "fileData": { "mimeType": mime, "fileUri": url } }),
            ))
        }
        _ => Err(ApiError::invalid(
            format!("{at}.type"),
            "text or image_url (other parts cannot be translated for a Gemini model)",
        )),
    }
}

fn push(contents: &mut Vec<(String, Vec<Value>)>, role: &str, parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    match contents.last_mut() {
        Some((last, have)) if last == role => have.extend(parts),
        _ => contents.push((role.to_owned(), parts)),
    }
}

/// An OpenAI chat completions request as a Gemini `generateContent` body
/// (the model and streaming go in the URL, not the body).
pub fn openai_to_gemini_request(req: &Value) -> Result<Value, ApiError> {
    let req = req.as_object().ok_or(ApiError::NotAnObject)?;
    if req.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(ApiError::invalid("n", "1 (one candidate per request)"));
    }
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid("messages", "an array"))?;
    let mut system = Vec::new();
    let mut contents: Vec<(String, Vec<Value>)> = Vec::new();
    // Gemini answers a function by name, OpenAI by call id.
    let mut names: HashMap<String, String> = HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::invalid(format!("{at}.role"), "a string"))?;
        let content = m.get("content");
        match role {
            "system" | "developer" => {
                let t = text_of(content);
                if !t.is_empty() {
                    system.push(json!({ "text": t }));
                }
            }
            "user" => {
                let parts = match content {
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .enumerate()
                        .map(|(j, p)| part(p, &format!("{at}.content[{j}]")))
                        .collect::<Result<Vec<_>, _>>()?
                        .into_iter()
                        .flatten()
                        .collect(),
                    _ => {
                        let t = text_of(content);
                        if t.is_empty() {
                            Vec::new()
                        } else {
                            vec![json!({ "text": t })]
                        }
                    }
                };
                push(&mut contents, "user", parts);
            }
            "assistant" => {
                let mut parts = Vec::new();
                let t = text_of(content);
                if !t.is_empty() {
                    parts.push(json!({ "text": t }));
                }
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let f = call.get("function").cloned().unwrap_or(Value::Null);
                    let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
                    if let Some(id) = call.get("id").and_then(Value::as_str) {
                        names.insert(id.to_owned(), name.to_owned());
                    }
                    let args = f.get("arguments").and_then(Value::as_str).unwrap_or("");
                    parts.push(json!({ "functionCall": { "name": name, "args": super::response::tool_input(args) } }));
                }
                push(&mut contents, "model", parts);
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let name = names.get(id).cloned().unwrap_or_else(|| id.to_owned());
                let part = json!({ "functionResponse": { "name": name, "response": { "content": text_of(content) } } });
                push(&mut contents, "user", vec![part]);
            }
            _ => {
                return Err(ApiError::invalid(
                    format!("{at}.role"),
                    "system, developer, user, assistant or tool",
                ));
            }
        }
    }

    let mut out = Obj::new();
    out.insert(
        "contents".into(),
        contents
            .into_iter()
            .map(|(role, parts)| json!({ "role": role, "parts": parts }))
            .collect(),
    );
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    let mut generation = Obj::new();
    if let Some(max) = req
        .get("max_completion_tokens")
        .or_else(|| req.get("max_tokens"))
        .filter(|v| !v.is_null())
    {
        generation.insert("maxOutputTokens".into(), max.clone());
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
    ] {
        if let Some(v) = req.get(from).filter(|v| !v.is_null()) {
            generation.insert(to.into(), v.clone());
        }
    }
    match req.get("stop") {
        Some(Value::String(s)) => {
            generation.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(list)) if !list.is_empty() => {
            generation.insert("stopSequences".into(), Value::Array(list.clone()));
        }
        _ => {}
    }
    if !generation.is_empty() {
        out.insert("generationConfig".into(), Value::Object(generation));
    }
    let declarations: Vec<Value> = req
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("function"))
        .map(|f| {
            let mut d = json!({ "name": f.get("name").cloned().unwrap_or(Value::Null) });
            if let Some(desc) = f.get("description") {
                d["description"] = desc.clone();
            }
            if let Some(p) = f.get("parameters") {
                d["parameters"] = p.clone();
            }
            d
        })
        .collect();
    if !declarations.is_empty() {
        out.insert(
            "tools".into(),
            json!([{ "functionDeclarations": declarations }]),
        );
        let config = match req.get("tool_choice") {
            Some(Value::String(s)) if s == "required" => json!({ "mode": "ANY" }),
            Some(Value::String(s)) if s == "none" => json!({ "mode": "NONE" }),
            Some(Value::Object(o)) => {
                let name = o.get("function").and_then(|f| f.get("name")).cloned();
                json!({ "mode": "ANY", "allowedFunctionNames": [name.unwrap_or(Value::Null)] })
            }
            _ => json!({ "mode": "AUTO" }),
        };
        out.insert(
            "toolConfig".into(),
            json!({ "functionCallingConfig": config }),
        );
    }
    Ok(Value::Object(out))
}

fn finish_reason(reason: &str, called: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            "content_filter"
        }
        _ if called => "tool_calls",
        _ => "stop",
    }
}

fn usage(meta: &Value) -> Value {
    let n = |k: &str| meta.get(k).and_then(Value::as_u64).unwrap_or(0);
    let prompt = n("promptTokenCount");
    let completion = n("candidatesTokenCount") + n("thoughtsTokenCount");
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": { "cached_tokens": n("cachedContentTokenCount") },
    })
}

/// Text and function calls of a candidate's parts (thought parts skipped).
fn parts_of(candidate: &Value) -> (String, Vec<(String, String)>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    let parts = candidate.get("content").and_then(|c| c.get("parts"));
    for p in parts.and_then(Value::as_array).into_iter().flatten() {
        if p.get("thought") == Some(&Value::Bool(true)) {
            continue;
        }
        if let Some(t) = p.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(call) = p.get("functionCall") {
            let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
            let args = call.get("args").cloned().unwrap_or_else(|| json!({}));
            calls.push((
                name.to_owned(),
                String::from_utf8_lossy(&to_json_bytes(&args)).into_owned(),
            ));
        }
    }
    (text, calls)
}

/// A Gemini `generateContent` answer as an OpenAI chat completion. Gemini
/// has no call ids: calls are named `call_<n>` in order.
pub fn gemini_to_openai_response(answer: &Value) -> Value {
    let candidate = answer
        .get("candidates")
        .and_then(|c| c.get(0))
        .cloned()
        .unwrap_or(Value::Null);
    let (text, calls) = parts_of(&candidate);
    let mut message = json!({ "role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }, "refusal": null });
    if !calls.is_empty() {
        message["tool_calls"] = calls
            .iter()
            .enumerate()
            .map(|(i, (name, args))| json!({ "id": format!("call_{i}"), "type": "function", "function": { "name": name, "arguments": args } }))
            .collect();
    }
    let reason = candidate
        .get("finishReason")
        .and_then(Value::as_str)
        .unwrap_or("STOP");
    let mut out = json!({
        "id": answer.get("responseId").cloned().unwrap_or_else(|| "gemini".into()),
        "object": "chat.completion",
        "created": unix_now(),
        "model": answer.get("modelVersion").cloned().unwrap_or(Value::Null),
        "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(reason, !calls.is_empty()) }],
    });
    if let Some(meta) = answer.get("usageMetadata") {
        out["usage"] = usage(meta);
    }
    out
}

/// Turns Gemini `streamGenerateContent?alt=sse` chunks into OpenAI chat
/// completion chunks; the chunk with a `finishReason` ends the stream
/// (finish chunk, usage chunk, `[DONE]`), as Gemini sends no terminator.
#[derive(Default)]
pub struct GeminiToOpenAi {
    started: bool,
    calls: u64,
    id: Value,
    model: Value,
    created: u64,
    done: bool,
}

impl GeminiToOpenAi {
    pub fn new() -> Self {
        Self {
            created: unix_now(),
            ..Self::default()
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>, usage: Option<Value>) -> SseEvent {
        let mut c = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": if usage.is_some() { json!([]) } else { json!([{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }]) },
        });
        if let Some(u) = usage {
            c["usage"] = u;
        }
        SseEvent::data(String::from_utf8_lossy(&to_json_bytes(&c)).into_owned())
    }

    pub fn translate(&mut self, event: &SseEvent) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let Ok(chunk) = serde_json::from_str::<Value>(&event.data) else {
            return out;
        };
        if self.done {
            return out;
        }
        if let Some(error) = chunk.get("error") {
            let message = error
                .get("message")
                .cloned()
                .unwrap_or_else(|| "provider error".into());
            out.push(SseEvent::data(String::from_utf8_lossy(&to_json_bytes(&json!({
                "error": { "message": message, "type": "server_error", "param": null, "code": null }
            }))).into_owned()));
            return out;
        }
        if !self.started {
            self.started = true;
            self.id = chunk
                .get("responseId")
                .cloned()
                .unwrap_or_else(|| "gemini".into());
            self.model = chunk.get("modelVersion").cloned().unwrap_or(Value::Null);
            out.push(self.chunk(json!({ "role": "assistant", "content": "" }), None, None));
        }
        let candidate = chunk
            .get("candidates")
            .and_then(|c| c.get(0))
            .cloned()
            .unwrap_or(Value::Null);
        let (text, calls) = parts_of(&candidate);
        if !text.is_empty() {
            out.push(self.chunk(json!({ "content": text }), None, None));
        }
        for (name, args) in calls {
            let index = self.calls;
            self.calls += 1;
            out.push(self.chunk(
                json!({ "tool_calls": [{ "index": index, "id": format!("call_{index}"), "type": "function", "function": { "name": name, "arguments": args } }] }),
                None,
                None,
            ));
        }
        if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
            self.done = true;
            out.push(self.chunk(json!({}), Some(finish_reason(reason, self.calls > 0)), None));
            let meta = chunk
                .get("usageMetadata")
                .cloned()
                .unwrap_or_else(|| json!({}));
            out.push(self.chunk(Value::Null, None, Some(usage(&meta))));
            out.push(SseEvent::done());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{self, StreamAccumulator};
    use crate::policy::{Route, TokenCount};

    #[test]
    fn openai_request_becomes_gemini() {
        let req = json!({
            "model": "gemini-2.0-flash",
            "messages": [
                { "role": "system", "content": "Be brief." },
                { "role": "user", "content": [{ "type": "text", "text": "Weather?" }, { "type": "image_url", "image_url": { "url": "data:image/png;base64,AA" } }] },
                { "role": "assistant", "content": null, "tool_calls": [{ "id": "call_9", "type": "function", "function": { "name": "get_weather", "arguments": "{\"q\":\"Paris\"}" } }] },
                { "role": "tool", "tool_call_id": "call_9", "content": "sunny" }
            ],
            "max_tokens": 20, "temperature": 0.2, "stop": "END",
            "tools": [{ "type": "function", "function": { "name": "get_weather", "parameters": { "type": "object" } } }],
            "tool_choice": "required"
        });
        assert_eq!(
            openai_to_gemini_request(&req).unwrap(),
            json!({
                "contents": [
                    { "role": "user", "parts": [{ "text": "Weather?" }, { "inlineData": { "mimeType": "image/png", "data": "AA" } }] },
                    { "role": "model", "parts": [{ "functionCall": { "name": "get_weather", "args": { "q": "Paris" } } }] },
                    { "role": "user", "parts": [{ "functionResponse": { "name": "get_weather", "response": { "content": "sunny" } } }] }
                ],
                "systemInstruction": { "parts": [{ "text": "Be brief." }] },
                "generationConfig": { "maxOutputTokens": 20, "temperature": 0.2, "stopSequences": ["END"] },
                "tools": [{ "functionDeclarations": [{ "name": "get_weather", "parameters": { "type": "object" } }] }],
                "toolConfig": { "functionCallingConfig": { "mode": "ANY" } }
            })
        );
    }

    #[test]
    fn gemini_answer_and_stream_become_openai() {
        let answer = json!({
            "candidates": [{ "content": { "role": "model", "parts": [{ "text": "Hi", "thought": false }, { "functionCall": { "name": "f", "args": { "a": 1 } } }] }, "finishReason": "STOP", "index": 0 }],
            "usageMetadata": { "promptTokenCount": 5, "candidatesTokenCount": 3, "totalTokenCount": 8, "cachedContentTokenCount": 2 },
            "modelVersion": "gemini-2.0-flash", "responseId": "r1"
        });
        let v = gemini_to_openai_response(&answer);
        assert_eq!(v["choices"][0]["message"]["content"], "Hi");
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 2);

        let mut t = GeminiToOpenAi::new();
        let chunks = [
            json!({ "candidates": [{ "content": { "role": "model", "parts": [{ "text": "Hel" }] }, "index": 0 }], "modelVersion": "g", "responseId": "r" }),
            json!({ "candidates": [{ "content": { "role": "model", "parts": [{ "text": "lo" }] }, "finishReason": "MAX_TOKENS", "index": 0 }], "usageMetadata": { "promptTokenCount": 4, "candidatesTokenCount": 2 } }),
        ];
        let out: Vec<SseEvent> = chunks
            .iter()
            .flat_map(|c| t.translate(&SseEvent::data(c.to_string())))
            .collect();
        let body: Value =
            serde_json::from_slice(&api::stream_to_json(Route::Chat, &out).unwrap()).unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "Hello");
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        let mut acc = StreamAccumulator::new(Route::Chat);
        out.iter().for_each(|e| acc.observe(e));
        assert!(acc.is_complete());
        assert_eq!(acc.reported_usage(), Some(TokenCount::new(4, 2)));
    }
}
