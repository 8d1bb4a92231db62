//! The provider wire formats: parsing OpenAI and Anthropic requests into the
//! policy vocabulary, and shaping what goes back out.
//!
//! Pure functions and small structs, no HTTP server code:
//! - [`parse`] turns a request body into a [`ParsedRequest`] (or an
//!   [`ApiError`] precise enough for a 400), reading it in place ([`raw`])
//!   under the counts in [`Limits`].
//! - [`ParsedRequest::upstream_body`] rewrites the model for a fallback and
//!   forces usage reporting on OpenAI streams, splicing the client's bytes.
//! - [`usage_from_json`] reads token usage from a non-streamed answer;
//!   [`stream::StreamAccumulator`] does it for a stream.
//! - [`sse`] is the incremental server-sent-events parser and encoder.
//! - [`stream_to_json`] / [`json_to_stream`] convert cached answers between
//!   the streamed and the non-streamed form.
//! - [`openai_error`], [`anthropic_error`], [`error_body`] build error bodies
//!   in the provider's shape.

mod canonical;
mod convert;
mod error;
mod parse;
pub mod raw;
pub mod sse;
pub mod stream;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::policy::{Message, Param, Route, TokenCount};

pub use canonical::{canonical_json, canonical_raw};
pub(crate) use convert::json_value_to_stream;
pub use convert::{ConvertError, is_usage_only_chunk, json_to_stream, stream_to_json};
pub use error::{
    ApiError, anthropic_error, error_body, error_type, openai_error, parse_error_body,
};
pub use parse::{Limits, parse, parse_with};
pub use raw::RawBody;
pub use sse::{SseEvent, SseParser};
pub use stream::StreamAccumulator;

/// A request body parsed into what policies and the pipeline need.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRequest {
    pub route: Route,
    pub model: String,
    pub stream: bool,
    /// `max_completion_tokens` (OpenAI, preferred) or `max_tokens`.
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    /// Conversation flattened; for Anthropic a top-level `system` becomes a
    /// leading "system" message, for embeddings each input is a "user" message.
    /// (The pipeline moves these and `params` into the plugins' view.)
    pub messages: Vec<Message>,
    /// Every body field other than model/messages/stream (and `system` on
    /// Anthropic, `input` on embeddings), canonical JSON, sorted by name.
    pub params: Vec<Param>,
    /// Cheap deterministic estimate, see [`estimate_tokens`].
    pub estimated_prompt_tokens: u32,
    /// The body as the client sent it, forwarded upstream.
    pub body: RawBody,
}

impl ParsedRequest {
    /// Whether an OpenAI streaming client asked for the usage chunk itself
    /// (`stream_options.include_usage: true`). When it did not, the gateway
    /// drops events for which [`is_usage_only_chunk`] is true before they
    /// reach the client; the `"usage":null` OpenAI then puts on the other
    /// chunks stays, clients ignore it.
    pub fn client_wants_usage(&self) -> bool {
        stream_options(self.body.text("stream_options"))
            .iter()
            .any(|(name, value)| name == "include_usage" && value.get() == "true")
    }

    /// The body to send upstream for `model`: the client's body with the model
    /// replaced (the field keeps its position), and on OpenAI chat streams
    /// `stream_options.include_usage` forced on so the last chunk carries
    /// usage for `throttle.settle`. The client's own bytes when neither
    /// changes anything.
    pub fn upstream_body(&self, model: &str) -> Bytes {
        let mut changes = Vec::new();
        if model != self.model {
            changes.push(("model", to_json_string(model)));
        }
        if self.route == Route::Chat && self.stream && !self.client_wants_usage() {
            changes.push((
                "stream_options",
                with_include_usage(self.body.text("stream_options")),
            ));
        }
        self.body.rebuilt(&changes)
    }

    /// The body field `name` as a value, for small fields (the pipeline
    /// itself reads the body in place).
    pub fn field(&self, name: &str) -> Option<Value> {
        serde_json::from_str(self.body.text(name)?).ok()
    }

    /// The text of the last "user" message, empty when there is none.
    pub fn last_user_text(&self) -> &str {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map_or("", |m| m.text.as_str())
    }
}

/// The members of a `stream_options` field; none unless it is an object.
fn stream_options(json: Option<&str>) -> raw::MemberList<'_> {
    json.and_then(|json| {
        raw::members(json, || "stream_options".into())
            .ok()
            .flatten()
    })
    .unwrap_or_default()
}

/// `stream_options` (JSON text, if sent) with `include_usage: true`, keeping
/// the other options. A non-object is replaced: the provider would reject it
/// anyway, and this keeps the usage settling needs without a new error.
fn with_include_usage(json: Option<&str>) -> String {
    let mut out = String::from("{");
    let mut set = false;
    for (name, value) in stream_options(json) {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&to_json_string(&name));
        out.push(':');
        if name == "include_usage" {
            out.push_str("true");
            set = true;
        } else {
            out.push_str(value.get());
        }
    }
    if !set {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(r#""include_usage":true"#);
    }
    out.push('}');
    out
}

/// A cheap deterministic token estimate: one token per four characters,
/// rounded up. Used for prompts, for counting streamed completions whose
/// provider sent no usage, and by the mock upstream to report usage.
pub fn estimate_tokens(text: &str) -> u32 {
    tokens_for_chars(text.chars().count())
}

/// [`estimate_tokens`] for a text of `chars` characters.
pub(crate) fn tokens_for_chars(chars: usize) -> u32 {
    u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX)
}

/// Prompt estimate for chat-like routes: 3 tokens of framing, plus per
/// message 4 tokens of overhead and its text and non-text parts.
pub(crate) fn estimate_prompt(messages: &[Message]) -> u32 {
    messages.iter().fold(3u32, |acc, m| {
        let extra = m.extra_json.as_deref().map_or(0, estimate_tokens);
        acc.saturating_add(4)
            .saturating_add(estimate_tokens(&m.text))
            .saturating_add(extra)
    })
}

/// Token usage of a non-streamed answer body: OpenAI
/// `usage.prompt_tokens/completion_tokens`, Anthropic
/// `usage.input_tokens/output_tokens`, embeddings `usage.prompt_tokens` (and
/// zero completion). `None` when the body carries no usable usage.
pub fn usage_from_json(route: Route, body: &[u8]) -> Option<TokenCount> {
    #[derive(serde::Deserialize)]
    struct Answer {
        usage: Option<Map<String, Value>>,
    }
    let usage = serde_json::from_slice::<Answer>(body).ok()?.usage?;
    let get = |name: &str| {
        usage
            .get(name)
            .and_then(Value::as_u64)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    match route {
        Route::Chat => Some(TokenCount {
            cached_prompt: openai_cached(&usage),
            ..TokenCount::new(get("prompt_tokens")?, get("completion_tokens")?)
        }),
        Route::Embeddings => Some(TokenCount::new(get("prompt_tokens")?, 0)),
        Route::AnthropicMessages => {
            let (extra, cached) = anthropic_cache(&usage);
            Some(TokenCount {
                cached_prompt: cached,
                ..TokenCount::new(
                    get("input_tokens")?.saturating_add(extra),
                    get("output_tokens")?,
                )
            })
        }
    }
}

fn usage_count(usage: &Map<String, Value>, name: &str) -> u32 {
    usage
        .get(name)
        .and_then(Value::as_u64)
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// OpenAI's cached prompt tokens (`prompt_tokens_details.cached_tokens`),
/// part of `prompt_tokens`.
pub(crate) fn openai_cached(usage: &Map<String, Value>) -> u32 {
    usage
        .get("prompt_tokens_details")
        .and_then(Value::as_object)
        .map_or(0, |d| usage_count(d, "cached_tokens"))
}

/// Anthropic's prompt-cache tokens, which its `input_tokens` leaves out:
/// (cache reads + cache writes, cache reads).
pub(crate) fn anthropic_cache(usage: &Map<String, Value>) -> (u32, u32) {
    let read = usage_count(usage, "cache_read_input_tokens");
    let written = usage_count(usage, "cache_creation_input_tokens");
    (read.saturating_add(written), read)
}

/// The path a route is served on, below the host.
pub fn route_path(route: Route) -> &'static str {
    match route {
        Route::Chat => "/v1/chat/completions",
        Route::Embeddings => "/v1/embeddings",
        Route::AnthropicMessages => "/v1/messages",
    }
}

/// The route served on `path`, if any.
pub fn route_for_path(path: &str) -> Option<Route> {
    match path {
        "/v1/chat/completions" => Some(Route::Chat),
        "/v1/embeddings" => Some(Route::Embeddings),
        "/v1/messages" => Some(Route::AnthropicMessages),
        _ => None,
    }
}

/// Serializes a JSON value held in memory. This cannot fail: map keys are
/// strings and `Value` numbers are finite, so the fallback is unreachable.
pub(crate) fn to_json_bytes<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// A string as a JSON string literal.
pub(crate) fn to_json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> ParsedRequest {
        parse(Route::Chat, body.as_bytes()).expect("valid request")
    }

    #[test]
    fn estimate_rounds_up_per_four_chars() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abc"), 1);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        // Characters, not bytes: four accented letters are one token.
        assert_eq!(estimate_tokens("éééé"), 1);
    }

    #[test]
    fn upstream_body_rewrites_the_model_in_place_and_keeps_other_fields() {
        let sent = r#"{"model":"a", "messages":[{"role":"user","content":"hi"}],"seed":7}"#;
        let req = chat(sent);
        assert_eq!(
            std::str::from_utf8(&req.upstream_body("b")).unwrap(),
            r#"{"model":"b","messages":[{"role":"user","content":"hi"}],"seed":7}"#
        );
        // Nothing to change: the client's own bytes go out.
        assert_eq!(&req.upstream_body("a")[..], sent.as_bytes());
    }

    #[test]
    fn upstream_body_forces_usage_on_openai_streams_only() {
        let req = chat(
            r#"{"model":"a","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"x":1}}"#,
        );
        assert!(!req.client_wants_usage());
        let out: Value = serde_json::from_slice(&req.upstream_body("b")).unwrap();
        assert_eq!(out["model"], "b");
        assert_eq!(out["stream_options"]["include_usage"], true);
        assert_eq!(out["stream_options"]["x"], 1);

        let asked = chat(
            r#"{"model":"a","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#,
        );
        assert!(asked.client_wants_usage());

        let plain = chat(r#"{"model":"a","messages":[{"role":"user","content":"hi"}]}"#);
        let out: Value = serde_json::from_slice(&plain.upstream_body("b")).unwrap();
        assert!(out.get("stream_options").is_none());

        let anthropic = parse(
            Route::AnthropicMessages,
            br#"{"model":"a","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"stream":true}"#,
        )
        .unwrap();
        let out: Value = serde_json::from_slice(&anthropic.upstream_body("b")).unwrap();
        assert!(out.get("stream_options").is_none());
    }

    #[test]
    fn include_usage_is_forced_keeping_other_stream_options() {
        assert_eq!(with_include_usage(None), r#"{"include_usage":true}"#);
        assert_eq!(
            with_include_usage(Some(r#""nonsense""#)),
            r#"{"include_usage":true}"#
        );
        assert_eq!(
            with_include_usage(Some(r#"{"include_usage": false, "x": [1]}"#)),
            r#"{"include_usage":true,"x":[1]}"#
        );
        let asked = chat(
            r#"{"model":"a","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":true}}"#,
        );
        // Already asked: forwarded as sent.
        assert_eq!(asked.upstream_body("a"), asked.body.rebuilt(&[]));
    }

    #[test]
    fn usage_is_read_per_route() {
        let openai =
            br#"{"id":"x","usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#;
        assert_eq!(
            usage_from_json(Route::Chat, openai),
            Some(TokenCount::new(12, 5))
        );
        let anthropic = br#"{"type":"message","usage":{"input_tokens":9,"output_tokens":3}}"#;
        assert_eq!(
            usage_from_json(Route::AnthropicMessages, anthropic),
            Some(TokenCount::new(9, 3))
        );
        let embeddings =
            br#"{"object":"list","data":[],"usage":{"prompt_tokens":4,"total_tokens":4}}"#;
        assert_eq!(
            usage_from_json(Route::Embeddings, embeddings),
            Some(TokenCount::new(4, 0))
        );
        assert_eq!(usage_from_json(Route::Chat, b"{}"), None);
        assert_eq!(usage_from_json(Route::Chat, br#"{"usage":null}"#), None);
        assert_eq!(usage_from_json(Route::Chat, b"not json"), None);
        assert_eq!(usage_from_json(Route::AnthropicMessages, openai), None);
    }

    #[test]
    fn routes_and_paths_agree() {
        for route in [Route::Chat, Route::Embeddings, Route::AnthropicMessages] {
            assert_eq!(route_for_path(route_path(route)), Some(route));
        }
        assert_eq!(route_for_path("/v1/models"), None);
    }

    #[test]
    fn last_user_text_skips_assistant_turns() {
        let req = chat(
            r#"{"model":"a","messages":[{"role":"user","content":"first"},{"role":"user","content":"second"},{"role":"assistant","content":"ok"}]}"#,
        );
        assert_eq!(req.last_user_text(), "second");
    }
}
