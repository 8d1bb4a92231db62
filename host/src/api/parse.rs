//! Request bodies → [`ParsedRequest`], per route.
//!
//! Validation is deliberately shallow: the types the gateway itself relies on
//! are checked and named precisely; everything else is forwarded for the
//! provider to judge.
//!
//! Memory: the body is read in place ([`super::raw`]). Its fields and
//! messages are slices of the body; arrays are counted against [`Limits`]
//! before any element is converted, and each message is converted on its own
//! (only scalars ever become a `serde_json::Value`). What a parse keeps is the
//! body plus the flattened messages and params, together about twice the body.

use bytes::Bytes;
use serde_json::Value;
use serde_json::value::RawValue;

use super::canonical::{canonical_object, canonical_raw};
use super::raw::{self, Kind, MemberList, RawBody, kind, member, members};
use super::{ApiError, ParsedRequest, estimate_prompt, estimate_tokens};
use crate::policy::{Message, Param, Route};

/// Caps on how many elements one request may carry, checked by counting
/// before the elements are converted (`[server]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Messages per request (`messages`, or embedding `input` items):
    /// `server.max_messages`.
    pub max_messages: usize,
    /// Content parts per request, over all messages and `system` blocks:
    /// `server.max_content_parts`.
    pub max_content_parts: usize,
}

impl Limits {
    /// The defaults: room for long agent conversations (thousands of
    /// messages, a few parts each) while bounding what one body may cost.
    pub const DEFAULT: Limits = Limits {
        max_messages: 10_000,
        max_content_parts: 20_000,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Parses a request body received on `route`, with the default [`Limits`]
/// (copies `body`; the gateway uses [`parse_with`]).
pub fn parse(route: Route, body: &[u8]) -> Result<ParsedRequest, ApiError> {
    parse_with(route, Bytes::copy_from_slice(body), &Limits::DEFAULT)
}

/// Parses a request body received on `route`; the result keeps `body`
/// (shared, not copied) to forward it.
pub fn parse_with(route: Route, body: Bytes, limits: &Limits) -> Result<ParsedRequest, ApiError> {
    let body = RawBody::parse(body)?;

    let model = match scalar(body.text("model")) {
        None | Some(Value::Null) => return Err(ApiError::missing("model")),
        Some(Value::String(m)) if !m.trim().is_empty() => m,
        Some(_) => return Err(ApiError::invalid("model", "a non-empty string")),
    };
    let stream = match scalar(body.text("stream")) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
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
    let temperature = match scalar(body.text("temperature")) {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(_) => return Err(ApiError::invalid("temperature", "a number")),
    };

    let mut parts = PartBudget::new(limits.max_content_parts);
    let (messages, folded, estimated_prompt_tokens) = match route {
        Route::Chat => {
            let messages = openai_messages(&body, limits, &mut parts)?;
            let estimate = estimate_prompt(&messages);
            (messages, "messages", estimate)
        }
        Route::AnthropicMessages => {
            let messages = anthropic_messages(&body, limits, &mut parts)?;
            let estimate = estimate_prompt(&messages);
            (messages, "system", estimate)
        }
        Route::Embeddings => {
            let (messages, estimate) = embedding_inputs(&body, limits)?;
            (messages, "input", estimate)
        }
    };

    let mut params = Vec::new();
    for (name, json) in body.fields() {
        if matches!(name, "model" | "messages" | "stream") || name == folded {
            continue;
        }
        params.push(Param {
            name: name.to_owned(),
            json: canonical(json, || name.to_owned())?,
        });
    }
    params.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    body.check_strictly()?;

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

/// A scalar field's value; arrays and objects come back empty (callers only
/// look at their type), so a large one is never built. A number no `Value`
/// can hold (`1e400`) comes back as an empty array too: of the wrong type
/// for every scalar field, so it is refused, never read as absent.
fn scalar(json: Option<&str>) -> Option<Value> {
    json.map(|json| match kind(json) {
        Kind::Object => Value::Object(serde_json::Map::new()),
        Kind::Array => Value::Array(Vec::new()),
        _ => serde_json::from_str(json).unwrap_or(Value::Array(Vec::new())),
    })
}

/// The canonical JSON of the value `json` found at `at`. The body parsed
/// already, so this fails only on numbers a `Value` cannot hold.
fn canonical(json: &str, at: impl FnOnce() -> String) -> Result<String, ApiError> {
    canonical_raw(json).map_err(|_| ApiError::invalid(at(), "valid JSON"))
}

/// An optional non-negative integer field that fits in u32.
fn opt_u32(body: &RawBody, field: &'static str) -> Result<Option<u32>, ApiError> {
    match scalar(body.text(field)) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| ApiError::invalid(field, "a non-negative integer")),
    }
}

/// What is left of [`Limits::max_content_parts`] as messages are read.
struct PartBudget {
    limit: usize,
    used: usize,
}

impl PartBudget {
    fn new(limit: usize) -> Self {
        Self { limit, used: 0 }
    }

    /// How many more parts may be kept.
    fn left(&self) -> usize {
        self.limit.saturating_sub(self.used)
    }

    /// Takes `count` parts for the array at `at`, or refuses the request.
    fn take(&mut self, count: usize, at: impl FnOnce() -> String) -> Result<(), ApiError> {
        self.used = self.used.saturating_add(count);
        if self.used > self.limit {
            return Err(ApiError::TooMany {
                field: at(),
                count: self.used,
                what: "content parts (counted over the whole request)",
                limit: self.limit,
                setting: "server.max_content_parts",
            });
        }
        Ok(())
    }
}

/// The `messages` array, required and non-empty on both chat routes, and at
/// most [`Limits::max_messages`] long (counted before any is read).
fn messages_array<'a>(body: &'a RawBody, limits: &Limits) -> Result<Vec<&'a RawValue>, ApiError> {
    const EXPECTED: &str = "a non-empty array of messages";
    let json = match body.text("messages") {
        Some(json) if kind(json) != Kind::Null => json,
        _ => return Err(ApiError::missing("messages")),
    };
    let Some(items) = raw::elements(json, limits.max_messages)? else {
        return Err(ApiError::invalid("messages", EXPECTED));
    };
    if items.count == 0 {
        return Err(ApiError::invalid("messages", EXPECTED));
    }
    if items.count > limits.max_messages {
        return Err(ApiError::TooMany {
            field: "messages".into(),
            count: items.count,
            what: "messages",
            limit: limits.max_messages,
            setting: "server.max_messages",
        });
    }
    Ok(items.items)
}

/// A message's members and its `role`.
fn message_object<'a>(item: &'a RawValue, at: &str) -> Result<(MemberList<'a>, String), ApiError> {
    let Some(msg) = members(item.get(), || at.to_owned())? else {
        return Err(ApiError::invalid(at, "a message object"));
    };
    let role = match member(&msg, "role") {
        None => return Err(ApiError::missing(format!("{at}.role"))),
        Some(json) if kind(json) == Kind::Null => {
            return Err(ApiError::missing(format!("{at}.role")));
        }
        Some(json) => {
            raw::string(json).ok_or_else(|| ApiError::invalid(format!("{at}.role"), "a string"))?
        }
    };
    Ok((msg, role))
}

/// A message's `content` split into the text of its "text" parts (the same
/// name on both providers) and the canonical JSON of the other parts.
#[derive(Default)]
struct Content {
    texts: Vec<String>,
    others: Vec<String>,
    /// Some other part is an Anthropic `tool_use` block.
    has_tool_use: bool,
}

/// Splits `content` (a string, null, or an array of typed parts).
fn split_content(
    content: Option<&str>,
    at: &str,
    allow_null: bool,
    parts: &mut PartBudget,
) -> Result<Content, ApiError> {
    let mut out = Content::default();
    let content = content.filter(|json| kind(json) != Kind::Null);
    let Some(json) = content else {
        if allow_null {
            return Ok(out);
        }
        return Err(ApiError::missing(format!("{at}.content")));
    };
    if let Some(text) = raw::string(json) {
        out.texts.push(text);
        return Ok(out);
    }
    let Some(items) = raw::elements(json, parts.left())? else {
        return Err(ApiError::invalid(
            format!("{at}.content"),
            "a string or an array of content parts",
        ));
    };
    parts.take(items.count, || format!("{at}.content"))?;
    for (j, part) in items.items.iter().enumerate() {
        let Some(obj) = members(part.get(), || format!("{at}.content[{j}]"))? else {
            return Err(ApiError::invalid(
                format!("{at}.content[{j}]"),
                "a content part object",
            ));
        };
        match member(&obj, "type").and_then(raw::string).as_deref() {
            Some("text") => match member(&obj, "text").and_then(raw::string) {
                Some(text) => out.texts.push(text),
                None => {
                    return Err(ApiError::invalid(
                        format!("{at}.content[{j}].text"),
                        "a string",
                    ));
                }
            },
            Some(other) => {
                out.has_tool_use |= other == "tool_use";
                out.others
                    .push(canonical(part.get(), || format!("{at}.content[{j}]"))?);
            }
            None => {
                return Err(ApiError::invalid(
                    format!("{at}.content[{j}].type"),
                    "a string",
                ));
            }
        }
    }
    Ok(out)
}

/// Builds the flattened message: text parts joined, and everything else
/// (other message fields, non-text parts under "content") as canonical JSON.
fn flatten(
    role: String,
    msg: &[(String, &RawValue)],
    content: Content,
    has_tool_calls: bool,
    at: &str,
) -> Result<Message, ApiError> {
    let mut extra = Vec::new();
    for (key, value) in msg {
        if key != "role" && key != "content" {
            extra.push((
                key.clone(),
                canonical(value.get(), || format!("{at}.{key}"))?,
            ));
        }
    }
    if !content.others.is_empty() {
        extra.push(("content".into(), format!("[{}]", content.others.join(","))));
    }
    let extra_json = (!extra.is_empty()).then(|| {
        let mut out = String::new();
        canonical_object(extra, &mut out);
        out
    });
    Ok(Message {
        role,
        text: content.texts.join("\n"),
        has_tool_calls,
        extra_json,
    })
}

/// OpenAI chat: `messages[].{role, content, tool_calls, tool_call_id, name}`.
fn openai_messages(
    body: &RawBody,
    limits: &Limits,
    parts: &mut PartBudget,
) -> Result<Vec<Message>, ApiError> {
    let items = messages_array(body, limits)?;
    let mut messages = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("messages[{i}]");
        let (msg, role) = message_object(item, &at)?;
        // Assistant turns with tool calls (and tool results) may omit content.
        let content = split_content(member(&msg, "content"), &at, true, parts)?;
        let tool_calls = match member(&msg, "tool_calls") {
            None => false,
            Some(json) => match kind(json) {
                Kind::Null => false,
                Kind::Array => !json[1..].trim_start().starts_with(']'),
                _ => return Err(ApiError::invalid(format!("{at}.tool_calls"), "an array")),
            },
        };
        let legacy_call = member(&msg, "function_call").is_some_and(|j| kind(j) == Kind::Object);
        let has_tool_calls = role == "assistant" && (tool_calls || legacy_call);
        messages.push(flatten(role, &msg, content, has_tool_calls, &at)?);
    }
    Ok(messages)
}

/// Anthropic messages: top-level `system` then `messages[]` with blocks.
fn anthropic_messages(
    body: &RawBody,
    limits: &Limits,
    parts: &mut PartBudget,
) -> Result<Vec<Message>, ApiError> {
    let items = messages_array(body, limits)?;
    let mut messages = Vec::with_capacity(items.len() + 1);

    match body.text("system") {
        None => {}
        Some(json) if kind(json) == Kind::Null => {}
        Some(json) if kind(json) == Kind::String => messages.push(Message {
            role: "system".into(),
            text: raw::string(json).unwrap_or_default(),
            has_tool_calls: false,
            extra_json: None,
        }),
        Some(json) if kind(json) == Kind::Array => {
            let blocks = raw::elements(json, parts.left())?.unwrap_or_default();
            parts.take(blocks.count, || "system".into())?;
            let mut texts = Vec::with_capacity(blocks.items.len());
            for (j, block) in blocks.items.iter().enumerate() {
                // Only text blocks are allowed here; their cache_control is
                // provider bookkeeping, not part of the prompt.
                let at = format!("system[{j}]");
                let block = members(block.get(), || at.clone())?.unwrap_or_default();
                let is_text =
                    member(&block, "type").and_then(raw::string).as_deref() == Some("text");
                match member(&block, "text").and_then(raw::string) {
                    Some(text) if is_text => texts.push(text),
                    _ => return Err(ApiError::invalid(at, "a text block")),
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

    for (i, item) in items.into_iter().enumerate() {
        let at = format!("messages[{i}]");
        let (msg, role) = message_object(item, &at)?;
        let content = split_content(member(&msg, "content"), &at, false, parts)?;
        let has_tool_calls = content.has_tool_use;
        messages.push(flatten(role, &msg, content, has_tool_calls, &at)?);
    }
    Ok(messages)
}

/// Embeddings `input`: a string, or an array of strings, of token ids, or of
/// token-id arrays. Each input becomes one "user" message; token inputs have
/// empty text and their ids in `extra_json` as `{"tokens":[...]}`. The
/// estimate is the sum of the inputs' estimates (token inputs count exactly),
/// with no per-message overhead: embeddings have none. Inputs count against
/// [`Limits::max_messages`]; the ids of one token input do not.
fn embedding_inputs(body: &RawBody, limits: &Limits) -> Result<(Vec<Message>, u32), ApiError> {
    const EXPECTED: &str = "a string, an array of strings, or an array of token arrays";
    let mut messages = Vec::new();
    let mut estimate = 0u32;
    let mut push_text = |messages: &mut Vec<Message>, text: String| {
        estimate = estimate.saturating_add(estimate_tokens(&text));
        messages.push(Message {
            role: "user".into(),
            text,
            has_tool_calls: false,
            extra_json: None,
        });
    };
    let mut token_inputs = 0u32;
    let mut push_tokens = |messages: &mut Vec<Message>, json: &str, at: &str| {
        let (ids, count) =
            token_ids(json).ok_or_else(|| ApiError::invalid(at, "an array of token ids"))?;
        token_inputs = token_inputs.saturating_add(u32::try_from(count).unwrap_or(u32::MAX));
        messages.push(Message {
            role: "user".into(),
            text: String::new(),
            has_tool_calls: false,
            extra_json: Some(format!("{{\"tokens\":{ids}}}")),
        });
        Ok::<(), ApiError>(())
    };

    let json = match body.text("input") {
        Some(json) if kind(json) != Kind::Null => json,
        _ => return Err(ApiError::missing("input")),
    };
    match kind(json) {
        Kind::String => push_text(&mut messages, raw::string(json).unwrap_or_default()),
        Kind::Array => {
            let items = raw::elements(json, limits.max_messages)?.unwrap_or_default();
            if items.count == 0 {
                return Err(ApiError::invalid("input", EXPECTED));
            }
            if items.all_numbers {
                push_tokens(&mut messages, json, "input")?;
            } else if items.count > limits.max_messages {
                return Err(ApiError::TooMany {
                    field: "input".into(),
                    count: items.count,
                    what: "inputs",
                    limit: limits.max_messages,
                    setting: "server.max_messages",
                });
            } else {
                for (i, item) in items.items.iter().enumerate() {
                    let item = item.get();
                    match kind(item) {
                        Kind::String => {
                            push_text(&mut messages, raw::string(item).unwrap_or_default())
                        }
                        Kind::Array => push_tokens(&mut messages, item, &format!("input[{i}]"))?,
                        _ => return Err(ApiError::invalid(format!("input[{i}]"), EXPECTED)),
                    }
                }
            }
        }
        _ => return Err(ApiError::invalid("input", EXPECTED)),
    }
    Ok((messages, estimate.saturating_add(token_inputs)))
}

/// A token-id array's canonical JSON and length, written as it is read;
/// `None` unless every element is a non-negative integer.
fn token_ids(json: &str) -> Option<(String, usize)> {
    use serde::de::{Deserializer, SeqAccess, Visitor};

    struct Ids;
    impl<'de> Visitor<'de> for Ids {
        type Value = (String, usize);

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of token ids")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = String::from("[");
            let mut count = 0;
            while let Some(id) = seq.next_element::<u64>()? {
                if count > 0 {
                    out.push(',');
                }
                out.push_str(&id.to_string());
                count += 1;
            }
            out.push(']');
            Ok((out, count))
        }
    }
    serde_json::Deserializer::from_str(json)
        .deserialize_seq(Ids)
        .ok()
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

    fn chat_of(n: usize) -> String {
        let messages = vec![r#"{"role":"user","content":"w"}"#; n].join(",");
        format!(r#"{{"model":"m","messages":[{messages}]}}"#)
    }

    fn limited(
        route: Route,
        body: &str,
        max_messages: usize,
        max_content_parts: usize,
    ) -> Result<ParsedRequest, ApiError> {
        let limits = Limits {
            max_messages,
            max_content_parts,
        };
        parse_with(route, Bytes::copy_from_slice(body.as_bytes()), &limits)
    }

    #[test]
    fn messages_over_the_cap_are_refused_by_count() {
        assert_eq!(
            limited(Route::Chat, &chat_of(3), 3, 10)
                .unwrap()
                .messages
                .len(),
            3
        );
        let e = limited(Route::Chat, &chat_of(120), 3, 10).unwrap_err();
        assert_eq!(e.field(), Some("messages"));
        assert_eq!(
            e.to_string(),
            "messages: 120 messages exceed this gateway's limit of 3 (server.max_messages)"
        );
        // Counted before any message is read: a bad message does not change
        // the answer.
        let bad_first = chat_of(4).replace(r#""messages":["#, r#""messages":[5,"#);
        assert!(matches!(
            limited(Route::Chat, &bad_first, 3, 10),
            Err(ApiError::TooMany { count: 5, .. })
        ));
        let anthropic = chat_of(4).replace(r#""model":"m""#, r#""model":"c","max_tokens":1"#);
        assert!(matches!(
            limited(Route::AnthropicMessages, &anthropic, 3, 10),
            Err(ApiError::TooMany {
                count: 4,
                limit: 3,
                ..
            })
        ));
        // The default is generous.
        assert_eq!(ok(Route::Chat, &chat_of(2_000)).messages.len(), 2_000);
    }

    #[test]
    fn content_parts_count_over_the_whole_request() {
        let body = r#"{"model":"c","max_tokens":1,"system":[{"type":"text","text":"s"}],"messages":[
            {"role":"user","content":[{"type":"text","text":"a"},{"type":"image","source":{}}]},
            {"role":"assistant","content":"plain strings are no parts"},
            {"role":"user","content":[{"type":"text","text":"b"}]}]}"#;
        let req = limited(Route::AnthropicMessages, body, 10, 4).unwrap();
        assert_eq!(req.messages.len(), 4);
        let e = limited(Route::AnthropicMessages, body, 10, 3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "messages[2].content: 4 content parts (counted over the whole request) exceed this gateway's limit of 3 (server.max_content_parts)"
        );
        assert_eq!(e.field(), Some("messages[2].content"));
        let e = limited(Route::AnthropicMessages, body, 10, 0).unwrap_err();
        assert_eq!(e.field(), Some("system"));
    }

    #[test]
    fn embedding_inputs_count_but_token_ids_do_not() {
        let strings = r#"{"model":"e","input":["a","b","c"]}"#;
        let e = limited(Route::Embeddings, strings, 2, 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            "input: 3 inputs exceed this gateway's limit of 2 (server.max_messages)"
        );
        let ids = r#"{"model":"e","input":[1,2,3,4,5]}"#;
        let req = limited(Route::Embeddings, ids, 2, 10).unwrap();
        assert_eq!(
            req.messages[0].extra_json.as_deref(),
            Some(r#"{"tokens":[1,2,3,4,5]}"#)
        );
        assert_eq!(req.estimated_prompt_tokens, 5);
    }

    #[test]
    fn objects_with_too_many_members_are_refused() {
        let fields: Vec<String> = (0..2000).map(|i| format!(r#""p{i}":0"#)).collect();
        let body = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],{}}}"#,
            fields.join(",")
        );
        let e = err(Route::Chat, &body);
        assert!(
            matches!(e, ApiError::TooManyMembers { count: 2002, .. }),
            "{e:?}"
        );
        assert_eq!(e.field(), None);
        let msg = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"x",{}}}]}}"#,
            fields.join(",")
        );
        assert_eq!(err(Route::Chat, &msg).field(), Some("messages[0]"));
    }

    #[test]
    fn flattening_matches_a_parsed_value() {
        // Escapes, repeated keys and number spellings come out as the
        // canonical JSON of the parsed value.
        let req = ok(
            Route::Chat,
            r#"{"model":"m","seed":1.50,"messages":[{"role":"tool","name":"a\u00e9","tool_call_id":"x","tool_call_id":"y",
               "content":[{"type":"text","text":"t\n1"},{"type":"file","file":{"z":1e2,"a":"\ud83d\ude00"}}]}],
               "seed":2}"#,
        );
        assert_eq!(req.messages[0].text, "t\n1");
        assert_eq!(
            req.messages[0].extra_json.as_deref(),
            Some(
                r#"{"content":[{"file":{"a":"😀","z":100.0},"type":"file"}],"name":"aé","tool_call_id":"y"}"#
            )
        );
        assert_eq!(
            req.params,
            vec![Param {
                name: "seed".into(),
                json: "2".into()
            }]
        );
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
                Chat,
                r#"{"model":"m","temperature":1e400,"messages":[{"role":"user","content":"x"}]}"#,
                "temperature",
            ),
            (
                Chat,
                r#"{"model":"m","seed":1e400,"messages":[{"role":"user","content":"x"}]}"#,
                "seed",
            ),
            (
                Chat,
                r#"{"model":"m","messages":[{"role":"user","content":"x","n":-1e999}]}"#,
                "messages[0].n",
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
