//! Builders for requests in native unit tests of the plugins' logic.

use crate::types::{Header, Message, Param, Request, Route};

/// A plain chat request from tenant `acme` (tier `pro`) for `gpt-4o-mini`
/// with one user message.
pub fn request(user_text: &str) -> Request {
    Request {
        id: "req-1".into(),
        route: Route::Chat,
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        streaming: false,
        max_tokens: None,
        estimated_prompt_tokens: 10,
        temperature: None,
        messages: vec![message("user", user_text)],
        params: Vec::new(),
        tenant: "acme".into(),
        tier: "pro".into(),
        key_id: Some("key-1".into()),
        client_ip: "192.0.2.7".into(),
        headers: Vec::new(),
    }
}

/// A text-only message.
pub fn message(role: &str, text: &str) -> Message {
    Message {
        role: role.into(),
        text: text.into(),
        has_tool_calls: false,
        extra_json: None,
    }
}

/// A body parameter given as canonical JSON.
pub fn param(name: &str, json: &str) -> Param {
    Param {
        name: name.into(),
        json: json.into(),
    }
}

/// A request header.
pub fn header(name: &str, value: &str) -> Header {
    Header {
        name: name.into(),
        value: value.into(),
    }
}
