//! Request bodies → [`ParsedRequest`], per route.
//!
//! Validation is deliberately shallow: the types the gateway itself relies on
//! are checked and named precisely; everything else is forwarded for the
//! provider to judge.

use serde_json::{Map, Value};

use super::canonical::canonical_json;
use super::{ApiError, ParsedRequest, estimate_prompt, estimate_tokens};
use crate::policy::{Message, Param, Route};

/// Parses a request body received on `route`.
pub fn parse(route: Route, body: &[u8]) -> Result<ParsedRequest, ApiError> {
    let value: Value = serde_json::from_slice(body)?;
    let Value::Object(body) = value else {
        return Err(ApiError::NotAnObject);
    };

    let model = match body.get("model") {
        None | Some(Value::Null) => return Err(ApiError::missing("model")),
        Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
        Some(_) => return Err(ApiError::invalid("model", "a non-empty string")),
    };
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("stream", "a boolean")),
    };
    let max_tokens = match route {
        Route::Chat => match opt_u32(&body, "max_completion_tokens")? {
            Some(n) => Some(n),
            None => opt_u32(&body, "max_tokens")?,
        },
        Route::AnthropicMessages => opt_u32(&body, "max_tokens")?,
        Route::Embeddings => None,
    };
    let temperature = match body.get("temperature") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(_) => return Err(ApiError::invalid("temperature", "a number")),
    };

    let (messages, folded, estimated_prompt_tokens) = match route {
        Route::Chat => {
            let messages = openai_messages(&body)?;
            let estimate = estimate_prompt(&messages);
            (messages, "messages", estimate)
        }
        Route::AnthropicMessages => {
            let messages = anthropic_messages(&body)?;
            let estimate = estimate_prompt(&messages);
            (messages, "system", estimate)
        }
        Route::Embeddings => {
            let (messages, estimate) = embedding_inputs(&body)?;
            (messages, "input", estimate)
        }
    };

    let mut params: Vec<Param> = body
        .iter()
        .filter(|(name, _)| {
            !matches!(name.as_str(), "model" | "messages" | "stream") && *name != folded
        })
        .map(|(name, value)| Param {
            name: name.clone(),
            json: canonical_json(value),
        })
        .collect();
    params.sort_unstable_by(|a, b| a.name.cmp(&b.name));

    Ok(ParsedRequest {
        route,
        model,
        stream,
        max_tokens,
        temperature,
        messages,
        params,
        estimated_prompt_tokens,
        body,
    })
}

/// An optional non-negative integer field that fits in u32.
fn opt_u32(body: &Map<String, Value>, field: &'static str) -> Result<Option<u32>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| ApiError::invalid(field, "a non-negative integer")),
    }
}

/// The `messages` array, required and non-empty on both chat routes.
fn messages_array(body: &Map<String, Value>) -> Result<&[Value], ApiError> {
    match body.get("messages") {
        None | Some(Value::Null) => Err(ApiError::missing("messages")),
        Some(Value::Array(items)) if !items.is_empty() => Ok(items),
        Some(_) => Err(ApiError::invalid(
            "messages",
            "a non-empty array of messages",
        )),
    }
}

/// A message's object and its `role`.
fn message_object<'a>(
    item: &'a Value,
    at: &str,
) -> Result<(&'a Map<String, Value>, String), ApiError> {
    let Value::Object(msg) = item else {
        return Err(ApiError::invalid(at, "a message object"));
    };
    let role = match msg.get("role") {
        None | Some(Value::Null) => return Err(ApiError::missing(format!("{at}.role"))),
        Some(Value::String(r)) => r.clone(),
        Some(_) => return Err(ApiError::invalid(format!("{at}.role"), "a string")),
    };
    Ok((msg, role))
}

/// Splits `content` (a string, null, or an array of typed parts) into the
/// text of its "text" parts (the same name on both providers) and the rest.
fn split_content(
    content: Option<&Value>,
    at: &str,
    allow_null: bool,
) -> Result<(Vec<String>, Vec<Value>), ApiError> {
    let mut texts = Vec::new();
    let mut others = Vec::new();
    match content {
        None | Some(Value::Null) if allow_null => {}
        None | Some(Value::Null) => return Err(ApiError::missing(format!("{at}.content"))),
        Some(Value::String(s)) => texts.push(s.clone()),
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                let Value::Object(obj) = part else {
                    return Err(ApiError::invalid(
                        format!("{at}.content[{j}]"),
                        "a content part object",
                    ));
                };
                match obj.get("type") {
                    Some(Value::String(t)) if t == "text" => match obj.get("text") {
                        Some(Value::String(s)) => texts.push(s.clone()),
                        _ => {
                            return Err(ApiError::invalid(
                                format!("{at}.content[{j}].text"),
                                "a string",
                            ));
                        }
                    },
                    Some(Value::String(_)) => others.push(part.clone()),
                    _ => {
                        return Err(ApiError::invalid(
                            format!("{at}.content[{j}].type"),
                            "a string",
                        ));
                    }
                }
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{at}.content"),
                "a string or an array of content parts",
            ));
        }
    }
    Ok((texts, others))
}

/// Builds the flattened message: text parts joined, and everything else
/// (other message fields, non-text parts under "content") as canonical JSON.
fn flatten(
    role: String,
    msg: &Map<String, Value>,
    texts: Vec<String>,
    others: Vec<Value>,
    has_tool_calls: bool,
) -> Message {
    let mut extra: Map<String, Value> = msg
        .iter()
        .filter(|(k, _)| *k != "role" && *k != "content")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !others.is_empty() {
        extra.insert("content".into(), Value::Array(others));
    }
    Message {
        role,
        text: texts.join("\n"),
        has_tool_calls,
        extra_json: (!extra.is_empty()).then(|| canonical_json(&Value::Object(extra))),
    }
}

/// OpenAI chat: `messages[].{role, content, tool_calls, tool_call_id, name}`.
fn openai_messages(body: &Map<String, Value>) -> Result<Vec<Message>, ApiError> {
    let items = messages_array(body)?;
    let mut messages = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("messages[{i}]");
        let (msg, role) = message_object(item, &at)?;
        // Assistant turns with tool calls (and tool results) may omit content.
        let (texts, others) = split_content(msg.get("content"), &at, true)?;
        let tool_calls = match msg.get("tool_calls") {
            None | Some(Value::Null) => false,
            Some(Value::Array(calls)) => !calls.is_empty(),
            Some(_) => return Err(ApiError::invalid(format!("{at}.tool_calls"), "an array")),
        };
        let legacy_call = matches!(msg.get("function_call"), Some(Value::Object(_)));
        let has_tool_calls = role == "assistant" && (tool_calls || legacy_call);
        messages.push(flatten(role, msg, texts, others, has_tool_calls));
    }
    Ok(messages)
}

/// Anthropic messages: top-level `system` then `messages[]` with blocks.
fn anthropic_messages(body: &Map<String, Value>) -> Result<Vec<Message>, ApiError> {
    let items = messages_array(body)?;
    let mut messages = Vec::with_capacity(items.len() + 1);

    match body.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(Message {
            role: "system".into(),
            text: s.clone(),
            has_tool_calls: false,
            extra_json: None,
        }),
        Some(Value::Array(blocks)) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (j, block) in blocks.iter().enumerate() {
                // Only text blocks are allowed here; their cache_control is
                // provider bookkeeping, not part of the prompt.
                match block.get("text") {
                    Some(Value::String(s))
                        if block.get("type").and_then(Value::as_str) == Some("text") =>
                    {
                        texts.push(s.clone())
                    }
                    _ => return Err(ApiError::invalid(format!("system[{j}]"), "a text block")),
                }
            }
            messages.push(Message {
                role: "system".into(),
                text: texts.join("\n"),
                has_tool_calls: false,
                extra_json: None,
            });
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "system",
                "a string or an array of text blocks",
            ));
        }
    }

    for (i, item) in items.iter().enumerate() {
        let at = format!("messages[{i}]");
        let (msg, role) = message_object(item, &at)?;
        let (texts, others) = split_content(msg.get("content"), &at, false)?;
        let has_tool_calls = others
            .iter()
            .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"));
        messages.push(flatten(role, msg, texts, others, has_tool_calls));
    }
    Ok(messages)
}

/// Embeddings `input`: a string, or an array of strings, of token ids, or of
/// token-id arrays. Each input becomes one "user" message; token inputs have
/// empty text and their ids in `extra_json` as `{"tokens":[...]}`. The
/// estimate is the sum of the inputs' estimates (token inputs count exactly),
/// with no per-message overhead: embeddings have none.
fn embedding_inputs(body: &Map<String, Value>) -> Result<(Vec<Message>, u32), ApiError> {
    const EXPECTED: &str = "a string, an array of strings, or an array of token arrays";
    let mut messages = Vec::new();
    let mut estimate = 0u32;
    let mut push_text = |messages: &mut Vec<Message>, text: &str| {
        estimate = estimate.saturating_add(estimate_tokens(text));
        messages.push(Message {
            role: "user".into(),
            text: text.to_owned(),
            has_tool_calls: false,
            extra_json: None,
        });
    };
    let mut token_inputs = 0u32;
    let mut push_tokens = |messages: &mut Vec<Message>, ids: &[Value], at: &str| {
        if ids.iter().any(|t| t.as_u64().is_none()) {
            return Err(ApiError::invalid(at, "an array of token ids"));
        }
        token_inputs = token_inputs.saturating_add(u32::try_from(ids.len()).unwrap_or(u32::MAX));
        messages.push(Message {
            role: "user".into(),
            text: String::new(),
            has_tool_calls: false,
            extra_json: Some(canonical_json(&serde_json::json!({ "tokens": ids }))),
        });
        Ok(())
    };

    match body.get("input") {
        None | Some(Value::Null) => return Err(ApiError::missing("input")),
        Some(Value::String(s)) => push_text(&mut messages, s),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(ApiError::invalid("input", EXPECTED));
        }
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => {
            push_tokens(&mut messages, items, "input")?;
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => push_text(&mut messages, s),
                    Value::Array(ids) => push_tokens(&mut messages, ids, &format!("input[{i}]"))?,
                    _ => return Err(ApiError::invalid(format!("input[{i}]"), EXPECTED)),
                }
            }
        }
        Some(_) => return Err(ApiError::invalid("input", EXPECTED)),
    }
    Ok((messages, estimate.saturating_add(token_inputs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(route: Route, body: &str) -> ParsedRequest {
        parse(route, body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"))
    }

    fn err(route: Route, body: &str) -> ApiError {
        parse(route, body.as_bytes()).expect_err(body)
    }

    #[test]
    fn openai_chat_request_is_flattened() {
        let req = ok(
            Route::Chat,
            r#"{
              "model": "gpt-4o-mini",
              "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [
                  {"type": "text", "text": "what is"},
                  {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
                  {"type": "text", "text": "this?"}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                  {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "a cat"}
              ],
              "temperature": 0.2,
              "max_tokens": 50,
              "stream": true,
              "top_p": 1,
              "tools": [{"type": "function", "function": {"name": "look", "parameters": {"type": "object", "properties": {}}}}]
            }"#,
        );
        assert_eq!(req.route, Route::Chat);
        assert_eq!(req.model, "gpt-4o-mini");
        assert!(req.stream);
        assert_eq!(req.max_tokens, Some(50));
        assert_eq!(req.temperature, Some(0.2));
        assert_eq!(req.messages.len(), 4);

        assert_eq!(req.messages[0].role, "system");
        assert_eq!(req.messages[0].text, "be brief");
        assert_eq!(req.messages[0].extra_json, None);

        assert_eq!(req.messages[1].text, "what is\nthis?");
        assert_eq!(
            req.messages[1].extra_json.as_deref(),
            Some(
                r#"{"content":[{"image_url":{"detail":"low","url":"https://x/y.png"},"type":"image_url"}]}"#
            )
        );
        assert!(!req.messages[1].has_tool_calls);

        assert_eq!(req.messages[2].text, "");
        assert!(req.messages[2].has_tool_calls);
        assert_eq!(
            req.messages[2].extra_json.as_deref(),
            Some(
                r#"{"tool_calls":[{"function":{"arguments":"{}","name":"look"},"id":"call_1","type":"function"}]}"#
            )
        );

        assert_eq!(req.messages[3].role, "tool");
        assert_eq!(req.messages[3].text, "a cat");
        assert_eq!(
            req.messages[3].extra_json.as_deref(),
            Some(r#"{"tool_call_id":"call_1"}"#)
        );
        assert!(!req.messages[3].has_tool_calls);

        let names: Vec<&str> = req.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["max_tokens", "temperature", "tools", "top_p"]);
        assert_eq!(req.params[0].json, "50");
        assert_eq!(
            req.params[2].json,
            r#"[{"function":{"name":"look","parameters":{"properties":{},"type":"object"}},"type":"function"}]"#
        );
    }

    #[test]
    fn max_completion_tokens_wins_over_max_tokens() {
        let req = ok(
            Route::Chat,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":10,"max_completion_tokens":20}"#,
        );
        assert_eq!(req.max_tokens, Some(20));
    }

    #[test]
    fn prompt_estimate_is_deterministic_and_counts_every_part() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"abcdefgh"}]}"#;
        // 3 framing + 4 overhead + 2 for eight characters.
        assert_eq!(ok(Route::Chat, body).estimated_prompt_tokens, 9);
        let with_tool =
            r#"{"model":"m","messages":[{"role":"tool","tool_call_id":"c","content":"abcdefgh"}]}"#;
        // The extra JSON {"tool_call_id":"c"} (20 chars) adds 5.
        assert_eq!(ok(Route::Chat, with_tool).estimated_prompt_tokens, 14);
    }

    #[test]
    fn params_do_not_depend_on_key_order() {
        let a = ok(
            Route::Chat,
            r#"{"seed":1,"model":"m","response_format":{"type":"json_schema","json_schema":{"b":1,"a":2}},"messages":[{"role":"user","content":"x"}]}"#,
        );
        let b = ok(
            Route::Chat,
            r#"{"messages":[{"content":"x","role":"user"}],"response_format":{"json_schema":{"a":2,"b":1},"type":"json_schema"},"model":"m","seed":1}"#,
        );
        assert_eq!(a.params, b.params);
        assert_eq!(a.messages, b.messages);
    }

    #[test]
    fn anthropic_system_and_blocks_are_flattened() {
        let req = ok(
            Route::AnthropicMessages,
            r#"{
              "model": "claude-sonnet-4-5",
              "max_tokens": 1024,
              "system": [{"type": "text", "text": "you are terse", "cache_control": {"type": "ephemeral"}},
                         {"type": "text", "text": "and kind"}],
              "messages": [
                {"role": "user", "content": "weather in Paris?"},
                {"role": "assistant", "content": [
                  {"type": "text", "text": "checking"},
                  {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}
                ]},
                {"role": "user", "content": [
                  {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                  {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
                ]}
              ],
              "stream": false,
              "temperature": 1
            }"#,
        );
        assert_eq!(req.route, Route::AnthropicMessages);
        assert!(!req.stream);
        assert_eq!(req.max_tokens, Some(1024));
        assert_eq!(req.temperature, Some(1.0));
        assert_eq!(req.messages.len(), 4);
        assert_eq!(req.messages[0].role, "system");
        assert_eq!(req.messages[0].text, "you are terse\nand kind");
        assert_eq!(req.messages[1].text, "weather in Paris?");
        assert_eq!(req.messages[1].extra_json, None);
        assert_eq!(req.messages[2].text, "checking");
        assert!(req.messages[2].has_tool_calls);
        assert_eq!(
            req.messages[2].extra_json.as_deref(),
            Some(
                r#"{"content":[{"id":"toolu_1","input":{"city":"Paris"},"name":"weather","type":"tool_use"}]}"#
            )
        );
        assert_eq!(req.messages[3].text, "");
        assert!(!req.messages[3].has_tool_calls);
        assert!(
            req.messages[3]
                .extra_json
                .as_deref()
                .unwrap()
                .contains("tool_result")
        );
        assert!(
            req.messages[3]
                .extra_json
                .as_deref()
                .unwrap()
                .contains("image/png")
        );
        let names: Vec<&str> = req.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["max_tokens", "temperature"]);
        assert_eq!(req.last_user_text(), "");
    }

    #[test]
    fn anthropic_string_system_becomes_leading_message() {
        let req = ok(
            Route::AnthropicMessages,
            r#"{"model":"c","max_tokens":5,"system":"sys","messages":[{"role":"user","content":"hi"}]}"#,
        );
        assert_eq!(req.messages[0].role, "system");
        assert_eq!(req.messages[0].text, "sys");
        assert_eq!(req.last_user_text(), "hi");
    }

    #[test]
    fn embeddings_inputs_become_user_messages() {
        let one = ok(
            Route::Embeddings,
            r#"{"model":"text-embedding-3-small","input":"hello world","dimensions":8}"#,
        );
        assert_eq!(one.messages.len(), 1);
        assert_eq!(one.messages[0].role, "user");
        assert_eq!(one.messages[0].text, "hello world");
        assert_eq!(one.estimated_prompt_tokens, 3);
        assert!(!one.stream);
        let names: Vec<&str> = one.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["dimensions"]);

        let many = ok(
            Route::Embeddings,
            r#"{"model":"e","input":["abcd","efgh"]}"#,
        );
        assert_eq!(many.messages.len(), 2);
        assert_eq!(many.messages[1].text, "efgh");
        assert_eq!(many.estimated_prompt_tokens, 2);

        let ids = ok(Route::Embeddings, r#"{"model":"e","input":[1,2,3]}"#);
        assert_eq!(ids.messages.len(), 1);
        assert_eq!(ids.messages[0].text, "");
        assert_eq!(
            ids.messages[0].extra_json.as_deref(),
            Some(r#"{"tokens":[1,2,3]}"#)
        );
        assert_eq!(ids.estimated_prompt_tokens, 3);

        let nested = ok(
            Route::Embeddings,
            r#"{"model":"e","input":[[1,2],[3],"abc"]}"#,
        );
        assert_eq!(nested.messages.len(), 3);
        assert_eq!(nested.estimated_prompt_tokens, 4);
    }

    #[test]
    fn malformed_json_reports_position() {
        match err(Route::Chat, "{\"model\": \"m\",\n \"messages\": [}") {
            ApiError::MalformedJson { line, column, .. } => assert_eq!((line, column), (2, 15)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            err(Route::Chat, ""),
            ApiError::MalformedJson { .. }
        ));
    }

    #[test]
    fn non_object_bodies_are_rejected() {
        for body in ["[]", "\"x\"", "1", "null"] {
            assert_eq!(err(Route::Chat, body), ApiError::NotAnObject, "{body}");
        }
    }

    #[test]
    fn each_malformed_field_is_named() {
        use Route::*;
        let cases: &[(Route, &str, &str)] = &[
            (
                Chat,
                r#"{"messages":[{"role":"user","content":"x"}]}"#,
                "model",
            ),
            (Chat, r#"{"model":null,"messages":[]}"#, "model"),
            (Chat, r#"{"model":7,"messages":[]}"#, "model"),
            (Chat, r#"{"model":"  ","messages":[]}"#, "model"),
            (Chat, r#"{"model":"m"}"#, "messages"),
            (Chat, r#"{"model":"m","messages":[]}"#, "messages"),
            (Chat, r#"{"model":"m","messages":{}}"#, "messages"),
            (Chat, r#"{"model":"m","messages":["hi"]}"#, "messages[0]"),
            (
                Chat,
                r#"{"model":"m","messages":[{"content":"x"}]}"#,
                "messages[0].role",
            ),
            (
                Chat,
                r#"{"model":"m","messages":[{"role":1,"content":"x"}]}"#,
                "messages[0].role",
            ),
            (
                Chat,
                r#"{"model":"m","messages":[{"role":"user","content":"x"},{"role":"user","content":5}]}"#,
                "messages[1].content",
            ),
            (
                Chat,
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]}"#,
                "messages[0].content[0].text",
            ),
            (
                Chat,
                r#"{"model":"m","messages":[{"role":"user","content":[{"text":"x"}]}]}"#,
                "messages[0].content[0].type",
            ),
            (
                Chat,
                r#"{"model":"m","messages":[{"role":"user","content":["x"]}]}"#,
                "messages[0].content[0]",
            ),
            (
                Chat,
                r#"{"model":"m","messages":[{"role":"assistant","tool_calls":{}}]}"#,
                "messages[0].tool_calls",
            ),
            (
                Chat,
                r#"{"model":"m","stream":"yes","messages":[{"role":"user","content":"x"}]}"#,
                "stream",
            ),
            (
                Chat,
                r#"{"model":"m","max_tokens":-1,"messages":[{"role":"user","content":"x"}]}"#,
                "max_tokens",
            ),
            (
                Chat,
                r#"{"model":"m","max_tokens":1.5,"messages":[{"role":"user","content":"x"}]}"#,
                "max_tokens",
            ),
            (
                Chat,
                r#"{"model":"m","max_completion_tokens":"9","messages":[{"role":"user","content":"x"}]}"#,
                "max_completion_tokens",
            ),
            (
                Chat,
                r#"{"model":"m","temperature":"hot","messages":[{"role":"user","content":"x"}]}"#,
                "temperature",
            ),
            (
                AnthropicMessages,
                r#"{"model":"c","messages":[{"role":"user"}]}"#,
                "messages[0].content",
            ),
            (
                AnthropicMessages,
                r#"{"model":"c","system":5,"messages":[{"role":"user","content":"x"}]}"#,
                "system",
            ),
            (
                AnthropicMessages,
                r#"{"model":"c","system":[{"type":"image"}],"messages":[{"role":"user","content":"x"}]}"#,
                "system[0]",
            ),
            (
                AnthropicMessages,
                r#"{"model":"c","max_tokens":4294967296,"messages":[{"role":"user","content":"x"}]}"#,
                "max_tokens",
            ),
            (Embeddings, r#"{"model":"e"}"#, "input"),
            (Embeddings, r#"{"model":"e","input":[]}"#, "input"),
            (Embeddings, r#"{"model":"e","input":{"a":1}}"#, "input"),
            (Embeddings, r#"{"model":"e","input":[1,-2]}"#, "input"),
            (Embeddings, r#"{"model":"e","input":["a",{}]}"#, "input[1]"),
            (
                Embeddings,
                r#"{"model":"e","input":["a",["x"]]}"#,
                "input[1]",
            ),
        ];
        for (route, body, field) in cases {
            let e = err(*route, body);
            assert_eq!(e.field(), Some(*field), "{body}: {e}");
            assert!(e.to_string().contains(field), "{e}");
        }
    }
}
