//! Request bodies: OpenAI chat completions <-> Anthropic messages.

use serde_json::{Map, Value, json};

use super::DEFAULT_MAX_TOKENS;
use crate::api::ApiError;

type Obj = Map<String, Value>;

fn object<'a>(v: &'a Value, field: &str) -> Result<&'a Obj, ApiError> {
    v.as_object()
        .ok_or_else(|| ApiError::invalid(field, "an object"))
}

fn string<'a>(v: Option<&'a Value>, field: &str) -> Result<&'a str, ApiError> {
    v.and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid(field, "a string"))
}

fn array<'a>(v: Option<&'a Value>, field: &str) -> Result<&'a Vec<Value>, ApiError> {
    v.and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid(field, "an array"))
}

/// A value that is present and not null.
fn present<'a>(obj: &'a Obj, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

/// Appends blocks to the conversation, merging into the previous message
/// when it has the same role (Anthropic alternates roles; OpenAI's
/// consecutive tool messages become one user turn of tool results).
fn push_blocks(messages: &mut Vec<(String, Vec<Value>)>, role: &str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match messages.last_mut() {
        Some((last, have)) if last == role => have.extend(blocks),
        _ => messages.push((role.to_owned(), blocks)),
    }
}

// === OpenAI -> Anthropic ===

/// An OpenAI chat completions request as an Anthropic messages request.
pub fn openai_to_anthropic_request(req: &Value) -> Result<Value, ApiError> {
    let req = req.as_object().ok_or(ApiError::NotAnObject)?;
    if let Some(n) = present(req, "n").and_then(Value::as_u64)
        && n > 1
    {
        return Err(ApiError::invalid(
            "n",
            "1 (Anthropic models answer one choice)",
        ));
    }
    let mut system: Vec<Value> = Vec::new();
    let mut messages: Vec<(String, Vec<Value>)> = Vec::new();
    for (i, m) in array(req.get("messages"), "messages")?.iter().enumerate() {
        let field = format!("messages[{i}]");
        let m = object(m, &field)?;
        let role = string(m.get("role"), &format!("{field}.role"))?;
        let content = present(m, "content");
        let content_field = format!("{field}.content");
        match role {
            "system" | "developer" => {
                system.extend(openai_text_blocks(content, &content_field)?);
            }
            "user" => {
                let blocks = openai_user_blocks(content, &content_field)?;
                push_blocks(&mut messages, "user", blocks);
            }
            "assistant" => {
                let mut blocks = openai_text_blocks(content, &content_field)?;
                if let Some(refusal) = present(m, "refusal").and_then(Value::as_str)
                    && !refusal.is_empty()
                {
                    blocks.push(json!({ "type": "text", "text": refusal }));
                }
                if let Some(calls) = present(m, "tool_calls") {
                    let calls = array(Some(calls), &format!("{field}.tool_calls"))?;
                    for (j, call) in calls.iter().enumerate() {
                        blocks.push(tool_use_block(call, &format!("{field}.tool_calls[{j}]"))?);
                    }
                }
                push_blocks(&mut messages, "assistant", blocks);
            }
            "tool" => {
                let id = string(m.get("tool_call_id"), &format!("{field}.tool_call_id"))?;
                let text = openai_text_blocks(content, &content_field)?;
                let mut block = json!({ "type": "tool_result", "tool_use_id": id });
                if !text.is_empty() {
                    block["content"] = Value::Array(text);
                }
                push_blocks(&mut messages, "user", vec![block]);
            }
            _ => {
                return Err(ApiError::invalid(
                    format!("{field}.role"),
                    "system, developer, user, assistant or tool (other roles cannot be translated for an Anthropic model)",
                ));
            }
        }
    }

    let mut out = Obj::new();
    out.insert(
        "model".into(),
        req.get("model").cloned().unwrap_or(Value::Null),
    );
    let max_tokens = present(req, "max_completion_tokens")
        .or_else(|| present(req, "max_tokens"))
        .cloned()
        .unwrap_or_else(|| DEFAULT_MAX_TOKENS.into());
    out.insert("max_tokens".into(), max_tokens);
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    let messages = messages
        .into_iter()
        .map(|(role, content)| json!({ "role": role, "content": content }))
        .collect();
    out.insert("messages".into(), Value::Array(messages));
    if let Some(t) = present(req, "temperature").and_then(Value::as_f64) {
        // OpenAI's range is 0..2, Anthropic's 0..1.
        out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = present(req, "top_p") {
        out.insert("top_p".into(), p.clone());
    }
    match present(req, "stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(list)) if !list.is_empty() => {
            out.insert("stop_sequences".into(), Value::Array(list.clone()));
        }
        _ => {}
    }
    if let Some(Value::Bool(true)) = present(req, "stream") {
        out.insert("stream".into(), true.into());
    }
    if let Some(user) = present(req, "user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    let tools = match present(req, "tools") {
        Some(tools) => array(Some(tools), "tools")?
            .iter()
            .enumerate()
            .map(|(i, t)| anthropic_tool(t, i))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let parallel = present(req, "parallel_tool_calls").and_then(Value::as_bool);
    let choice = match present(req, "tool_choice") {
        None => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(json!({ "type": "auto" })),
            "required" => Some(json!({ "type": "any" })),
            "none" => Some(json!({ "type": "none" })),
            _ => {
                return Err(ApiError::invalid(
                    "tool_choice",
                    "auto, required, none or a function",
                ));
            }
        },
        Some(Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::invalid("tool_choice.function.name", "a string"))?;
            Some(json!({ "type": "tool", "name": name }))
        }
        Some(_) => return Err(ApiError::invalid("tool_choice", "a string or an object")),
    };
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        let mut choice = choice.unwrap_or_else(|| json!({ "type": "auto" }));
        if parallel == Some(false) && choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = true.into();
        }
        out.insert("tool_choice".into(), choice);
    }
    Ok(Value::Object(out))
}

/// Text blocks of a string or an array of text (or refusal) parts.
fn openai_text_blocks(content: Option<&Value>, field: &str) -> Result<Vec<Value>, ApiError> {
    let mut blocks = Vec::new();
    match content {
        None => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::String(s)) => blocks.push(json!({ "type": "text", "text": s })),
        Some(Value::Array(parts)) => {
            for (i, part) in parts.iter().enumerate() {
                let text = part
                    .get("text")
                    .or_else(|| part.get("refusal"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::invalid(format!("{field}[{i}]"), "a text part"))?;
                if !text.is_empty() {
                    blocks.push(json!({ "type": "text", "text": text }));
                }
            }
        }
        Some(_) => return Err(ApiError::invalid(field, "a string or an array of parts")),
    }
    Ok(blocks)
}

/// A user message's blocks: text and images.
fn openai_user_blocks(content: Option<&Value>, field: &str) -> Result<Vec<Value>, ApiError> {
    let Some(Value::Array(parts)) = content else {
        return openai_text_blocks(content, field);
    };
    let mut blocks = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let at = format!("{field}[{i}]");
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = string(part.get("text"), &format!("{at}.text"))?;
                if !text.is_empty() {
                    blocks.push(json!({ "type": "text", "text": text }));
                }
            }
            Some("image_url") => {
                let image = part.get("image_url");
                let url = image
                    .and_then(|i| i.get("url").or(Some(i)))
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::invalid(format!("{at}.image_url.url"), "a string"))?;
                blocks.push(json!({ "type": "image", "source": image_source(url) }));
            }
            _ => {
                return Err(ApiError::invalid(
                    format!("{at}.type"),
                    "text or image_url (other parts cannot be translated for an Anthropic model)",
                ));
            }
        }
    }
    Ok(blocks)
}

/// An Anthropic image source for an OpenAI image URL: a `data:` URL
/// becomes base64 data, anything else stays a URL.
fn image_source(url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((media_type, data)) = rest.split_once(";base64,")
    {
        return json!({ "type": "base64", "media_type": media_type, "data": data });
    }
    json!({ "type": "url", "url": url })
}

fn tool_use_block(call: &Value, field: &str) -> Result<Value, ApiError> {
    let id = string(call.get("id"), &format!("{field}.id"))?;
    let function = call
        .get("function")
        .ok_or_else(|| ApiError::missing(format!("{field}.function")))?;
    let name = string(function.get("name"), &format!("{field}.function.name"))?;
    let arguments = function
        .get("arguments")
        .and_then(Value::as_str)
        .unwrap_or("");
    let input = if arguments.trim().is_empty() {
        json!({})
    } else {
        match serde_json::from_str::<Value>(arguments) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return Err(ApiError::invalid(
                    format!("{field}.function.arguments"),
                    "a JSON object in a string (Anthropic tool inputs are objects)",
                ));
            }
        }
    };
    Ok(json!({ "type": "tool_use", "id": id, "name": name, "input": input }))
}

fn anthropic_tool(tool: &Value, i: usize) -> Result<Value, ApiError> {
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err(ApiError::invalid(
            format!("tools[{i}].type"),
            "function (other tools cannot be translated for an Anthropic model)",
        ));
    }
    let function = tool
        .get("function")
        .ok_or_else(|| ApiError::missing(format!("tools[{i}].function")))?;
    let name = string(function.get("name"), &format!("tools[{i}].function.name"))?;
    let mut out = json!({
        "name": name,
        "input_schema": function
            .get("parameters")
            .filter(|p| p.is_object())
            .cloned()
            .unwrap_or_else(|| json!({ "type": "object", "properties": {} })),
    });
    if let Some(d) = function.get("description").and_then(Value::as_str) {
        out["description"] = d.into();
    }
    Ok(out)
}

// === Anthropic -> OpenAI ===

/// An Anthropic messages request as an OpenAI chat completions request.
pub fn anthropic_to_openai_request(req: &Value) -> Result<Value, ApiError> {
    let req = req.as_object().ok_or(ApiError::NotAnObject)?;
    let mut messages: Vec<Value> = Vec::new();
    match present(req, "system") {
        None => {}
        Some(Value::String(s)) => messages.push(json!({ "role": "system", "content": s })),
        Some(Value::Array(blocks)) => {
            let text = joined_text(blocks, "system")?;
            messages.push(json!({ "role": "system", "content": text }));
        }
        Some(_) => return Err(ApiError::invalid("system", "a string or text blocks")),
    }
    for (i, m) in array(req.get("messages"), "messages")?.iter().enumerate() {
        let field = format!("messages[{i}]");
        let m = object(m, &field)?;
        let role = string(m.get("role"), &format!("{field}.role"))?;
        let content_field = format!("{field}.content");
        let blocks = match m.get("content") {
            Some(Value::String(s)) => {
                messages.push(json!({ "role": role, "content": s }));
                continue;
            }
            Some(Value::Array(blocks)) => blocks,
            _ => {
                return Err(ApiError::invalid(
                    content_field,
                    "a string or an array of blocks",
                ));
            }
        };
        match role {
            "user" => user_messages(blocks, &content_field, &mut messages)?,
            "assistant" => messages.push(assistant_message(blocks, &content_field)?),
            _ => {
                return Err(ApiError::invalid(
                    format!("{field}.role"),
                    "user or assistant",
                ));
            }
        }
    }

    let mut out = Obj::new();
    out.insert(
        "model".into(),
        req.get("model").cloned().unwrap_or(Value::Null),
    );
    out.insert("messages".into(), Value::Array(messages));
    if let Some(max) = present(req, "max_tokens") {
        out.insert("max_completion_tokens".into(), max.clone());
    }
    for name in ["temperature", "top_p"] {
        if let Some(v) = present(req, name) {
            out.insert(name.into(), v.clone());
        }
    }
    if let Some(Value::Array(stops)) = present(req, "stop_sequences")
        && !stops.is_empty()
    {
        out.insert("stop".into(), Value::Array(stops.clone()));
    }
    if let Some(Value::Bool(true)) = present(req, "stream") {
        out.insert("stream".into(), true.into());
        // Usage arrives only in the final chunk, and only when asked for.
        out.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    if let Some(user) = present(req, "metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        out.insert("user".into(), user.into());
    }
    if let Some(tools) = present(req, "tools") {
        let tools = array(Some(tools), "tools")?
            .iter()
            .enumerate()
            .map(|(i, t)| openai_tool(t, i))
            .collect::<Result<Vec<_>, _>>()?;
        if !tools.is_empty() {
            out.insert("tools".into(), Value::Array(tools));
        }
    }
    if let Some(choice) = present(req, "tool_choice") {
        let kind = string(choice.get("type"), "tool_choice.type")?;
        let mapped = match kind {
            "auto" => json!("auto"),
            "any" => json!("required"),
            "none" => json!("none"),
            "tool" => {
                let name = string(choice.get("name"), "tool_choice.name")?;
                json!({ "type": "function", "function": { "name": name } })
            }
            _ => {
                return Err(ApiError::invalid(
                    "tool_choice.type",
                    "auto, any, tool or none",
                ));
            }
        };
        if out.contains_key("tools") {
            out.insert("tool_choice".into(), mapped);
            if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
                out.insert("parallel_tool_calls".into(), false.into());
            }
        }
    }
    Ok(Value::Object(out))
}

/// The text of text blocks, joined with blank lines.
fn joined_text(blocks: &[Value], field: &str) -> Result<String, ApiError> {
    let mut texts = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => texts.push(string(b.get("text"), &format!("{field}[{i}].text"))?),
            _ => return Err(ApiError::invalid(format!("{field}[{i}].type"), "text")),
        }
    }
    Ok(texts.join("\n\n"))
}

/// A user turn: its tool results become `tool` messages (first, as OpenAI
/// wants them right after the assistant's calls), the rest one user message.
fn user_messages(blocks: &[Value], field: &str, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let mut parts = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        let at = format!("{field}[{i}]");
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = string(b.get("text"), &format!("{at}.text"))?;
                parts.push(json!({ "type": "text", "text": text }));
            }
            Some("image") => parts.push(image_part(b.get("source"), &at)?),
            Some("tool_result") => {
                let id = string(b.get("tool_use_id"), &format!("{at}.tool_use_id"))?;
                let text = match b.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(inner)) => inner
                        .iter()
                        .filter_map(|c| c.get("text").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join("\n\n"),
                    Some(_) => {
                        return Err(ApiError::invalid(
                            format!("{at}.content"),
                            "a string or blocks",
                        ));
                    }
                };
                let text = if b.get("is_error") == Some(&Value::Bool(true)) {
                    format!("Error: {text}")
                } else {
                    text
                };
                out.push(json!({ "role": "tool", "tool_call_id": id, "content": text }));
            }
            _ => {
                return Err(ApiError::invalid(
                    format!("{at}.type"),
                    "text, image or tool_result (other blocks cannot be translated for an OpenAI model)",
                ));
            }
        }
    }
    if !parts.is_empty() {
        out.push(json!({ "role": "user", "content": parts }));
    }
    Ok(())
}

fn image_part(source: Option<&Value>, at: &str) -> Result<Value, ApiError> {
    let source = source.ok_or_else(|| ApiError::missing(format!("{at}.source")))?;
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => format!(
            "data:{};base64,{}",
            string(source.get("media_type"), &format!("{at}.source.media_type"))?,
            string(source.get("data"), &format!("{at}.source.data"))?
        ),
        Some("url") => string(source.get("url"), &format!("{at}.source.url"))?.to_owned(),
        _ => {
            return Err(ApiError::invalid(
                format!("{at}.source.type"),
                "base64 or url",
            ));
        }
    };
    Ok(json!({ "type": "image_url", "image_url": { "url": url } }))
}

/// An assistant turn: text joined, tool uses as tool calls; thinking is
/// dropped (OpenAI has no way to take it back).
fn assistant_message(blocks: &[Value], field: &str) -> Result<Value, ApiError> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        let at = format!("{field}[{i}]");
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(string(b.get("text"), &format!("{at}.text"))?),
            Some("tool_use") => {
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": string(b.get("id"), &format!("{at}.id"))?,
                    "type": "function",
                    "function": {
                        "name": string(b.get("name"), &format!("{at}.name"))?,
                        "arguments": serde_json::to_string(&input).unwrap_or_default(),
                    }
                }));
            }
            Some("thinking" | "redacted_thinking") => {}
            _ => {
                return Err(ApiError::invalid(
                    format!("{at}.type"),
                    "text, tool_use or thinking (other blocks cannot be translated for an OpenAI model)",
                ));
            }
        }
    }
    let mut m = json!({ "role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) } });
    if !calls.is_empty() {
        m["tool_calls"] = Value::Array(calls);
    }
    Ok(m)
}

fn openai_tool(tool: &Value, i: usize) -> Result<Value, ApiError> {
    if let Some(kind) = tool.get("type").and_then(Value::as_str)
        && kind != "custom"
    {
        return Err(ApiError::invalid(
            format!("tools[{i}].type"),
            "a client tool (Anthropic server tools cannot run on an OpenAI model)",
        ));
    }
    let name = string(tool.get("name"), &format!("tools[{i}].name"))?;
    let mut function = json!({
        "name": name,
        "parameters": tool.get("input_schema").cloned().unwrap_or_else(|| json!({ "type": "object", "properties": {} })),
    });
    if let Some(d) = tool.get("description").and_then(Value::as_str) {
        function["description"] = d.into();
    }
    Ok(json!({ "type": "function", "function": function }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_conversation_becomes_anthropic() {
        let req = json!({
            "model": "claude-x",
            "messages": [
                { "role": "system", "content": "Be brief." },
                { "role": "developer", "content": [{ "type": "text", "text": "Use tools." }] },
                { "role": "user", "content": [
                    { "type": "text", "text": "What is here?" },
                    { "type": "image_url", "image_url": { "url": "data:image/png;base64,AAAA" } },
                    { "type": "image_url", "image_url": { "url": "https://x/y.jpg", "detail": "low" } }
                ]},
                { "role": "assistant", "content": null, "tool_calls": [
                    { "id": "call_1", "type": "function", "function": { "name": "look", "arguments": "{\"at\":1}" } },
                    { "id": "call_2", "type": "function", "function": { "name": "look", "arguments": "" } }
                ]},
                { "role": "tool", "tool_call_id": "call_1", "content": "a cat" },
                { "role": "tool", "tool_call_id": "call_2", "content": [{ "type": "text", "text": "a dog" }] },
                { "role": "user", "content": "thanks" }
            ],
            "max_tokens": 100, "temperature": 1.5, "top_p": 0.9, "stop": "END", "stream": true,
            "stream_options": { "include_usage": true }, "user": "u1", "seed": 3,
            "tools": [{ "type": "function", "function": { "name": "look", "description": "Looks", "parameters": { "type": "object", "properties": { "at": { "type": "integer" } } } } }],
            "tool_choice": "required", "parallel_tool_calls": false
        });
        let out = openai_to_anthropic_request(&req).unwrap();
        assert_eq!(
            out,
            json!({
                "model": "claude-x",
                "max_tokens": 100,
                "system": [{ "type": "text", "text": "Be brief." }, { "type": "text", "text": "Use tools." }],
                "messages": [
                    { "role": "user", "content": [
                        { "type": "text", "text": "What is here?" },
                        { "type": "image", "source": { "type": "base64", "media_type": "image/png", "data": "AAAA" } },
                        { "type": "image", "source": { "type": "url", "url": "https://x/y.jpg" } }
                    ]},
                    { "role": "assistant", "content": [
                        { "type": "tool_use", "id": "call_1", "name": "look", "input": { "at": 1 } },
                        { "type": "tool_use", "id": "call_2", "name": "look", "input": {} }
                    ]},
                    { "role": "user", "content": [
                        { "type": "tool_result", "tool_use_id": "call_1", "content": [{ "type": "text", "text": "a cat" }] },
                        { "type": "tool_result", "tool_use_id": "call_2", "content": [{ "type": "text", "text": "a dog" }] },
                        { "type": "text", "text": "thanks" }
                    ]}
                ],
                "temperature": 1.0, "top_p": 0.9, "stop_sequences": ["END"], "stream": true,
                "metadata": { "user_id": "u1" },
                "tools": [{ "name": "look", "description": "Looks", "input_schema": { "type": "object", "properties": { "at": { "type": "integer" } } } }],
                "tool_choice": { "type": "any", "disable_parallel_tool_use": true }
            })
        );
    }

    #[test]
    fn openai_without_limit_gets_the_default_and_untranslatable_parts_are_errors() {
        let out = openai_to_anthropic_request(&json!({
            "model": "c", "messages": [{ "role": "user", "content": "hi" }]
        }))
        .unwrap();
        assert_eq!(out["max_tokens"], DEFAULT_MAX_TOKENS);
        assert!(out.get("tools").is_none());

        let audio = json!({ "model": "c", "messages": [{ "role": "user", "content": [{ "type": "input_audio", "input_audio": {} }] }] });
        let err = openai_to_anthropic_request(&audio).unwrap_err();
        assert_eq!(err.field(), Some("messages[0].content[0].type"));
        let n = json!({ "model": "c", "n": 2, "messages": [] });
        assert_eq!(
            openai_to_anthropic_request(&n).unwrap_err().field(),
            Some("n")
        );
        let bad_args = json!({ "model": "c", "messages": [{ "role": "assistant", "tool_calls": [{ "id": "x", "function": { "name": "f", "arguments": "[1]" } }] }] });
        assert!(openai_to_anthropic_request(&bad_args).is_err());
    }

    #[test]
    fn anthropic_conversation_becomes_openai() {
        let req = json!({
            "model": "gpt-x", "max_tokens": 50,
            "system": [{ "type": "text", "text": "Be brief.", "cache_control": { "type": "ephemeral" } }],
            "messages": [
                { "role": "user", "content": [
                    { "type": "text", "text": "Look" },
                    { "type": "image", "source": { "type": "base64", "media_type": "image/png", "data": "AAAA" } }
                ]},
                { "role": "assistant", "content": [
                    { "type": "thinking", "thinking": "hmm", "signature": "s" },
                    { "type": "text", "text": "Looking." },
                    { "type": "tool_use", "id": "toolu_1", "name": "look", "input": { "at": 1 } }
                ]},
                { "role": "user", "content": [
                    { "type": "tool_result", "tool_use_id": "toolu_1", "content": [{ "type": "text", "text": "a cat" }] },
                    { "type": "tool_result", "tool_use_id": "toolu_2", "content": "broken", "is_error": true },
                    { "type": "text", "text": "and?" }
                ]},
                { "role": "assistant", "content": "plain" }
            ],
            "stop_sequences": ["END"], "temperature": 0.5, "top_k": 5, "stream": true,
            "metadata": { "user_id": "u1" },
            "tools": [{ "name": "look", "input_schema": { "type": "object" } }],
            "tool_choice": { "type": "tool", "name": "look", "disable_parallel_tool_use": true }
        });
        let out = anthropic_to_openai_request(&req).unwrap();
        assert_eq!(
            out,
            json!({
                "model": "gpt-x",
                "messages": [
                    { "role": "system", "content": "Be brief." },
                    { "role": "user", "content": [
                        { "type": "text", "text": "Look" },
                        { "type": "image_url", "image_url": { "url": "data:image/png;base64,AAAA" } }
                    ]},
                    { "role": "assistant", "content": "Looking.", "tool_calls": [
                        { "id": "toolu_1", "type": "function", "function": { "name": "look", "arguments": "{\"at\":1}" } }
                    ]},
                    { "role": "tool", "tool_call_id": "toolu_1", "content": "a cat" },
                    { "role": "tool", "tool_call_id": "toolu_2", "content": "Error: broken" },
                    { "role": "user", "content": [{ "type": "text", "text": "and?" }] },
                    { "role": "assistant", "content": "plain" }
                ],
                "max_completion_tokens": 50, "temperature": 0.5, "stop": ["END"],
                "stream": true, "stream_options": { "include_usage": true }, "user": "u1",
                "tools": [{ "type": "function", "function": { "name": "look", "parameters": { "type": "object" } } }],
                "tool_choice": { "type": "function", "function": { "name": "look" } },
                "parallel_tool_calls": false
            })
        );
    }

    #[test]
    fn anthropic_server_tools_and_documents_are_errors() {
        let tool = json!({ "model": "g", "max_tokens": 5, "messages": [], "tools": [{ "type": "web_search_20250305", "name": "web_search" }] });
        assert_eq!(
            anthropic_to_openai_request(&tool).unwrap_err().field(),
            Some("tools[0].type")
        );
        let doc = json!({ "model": "g", "max_tokens": 5, "messages": [{ "role": "user", "content": [{ "type": "document", "source": {} }] }] });
        assert_eq!(
            anthropic_to_openai_request(&doc).unwrap_err().field(),
            Some("messages[0].content[0].type")
        );
    }
}
