//! Fuzz targets: what the gateway does with bytes a stranger controls, as
//! functions of `&[u8]` that panic when an invariant breaks. cargo-fuzz
//! drives them (`fuzz/`, nightly); the integration suite replays every
//! committed corpus file through them on stable (`fuzz_corpora`).
//!
//! Each target must never panic on any input; where a round trip is part
//! of the contract (SSE encode → parse, canonical JSON) it is checked too.

use serde_json::Value;

use crate::api::sse::encode;
use crate::api::{self, SseParser, canonical_json};
use crate::config::Config;
use crate::policy::{PolicyRequest, Route};

/// The routes, picked by a target's first byte.
fn route(selector: u8) -> Route {
    match selector % 3 {
        0 => Route::Chat,
        1 => Route::AnthropicMessages,
        _ => Route::Embeddings,
    }
}

/// A request body on any route (first byte picks it): parsing, the plugin
/// request view built from it, the canonical form of its parameters, and
/// re-serialising it for the upstream with another model.
pub fn request(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let route = route(selector);
    let Ok(parsed) = api::parse(route, body) else {
        return;
    };
    assert!(
        !parsed.model.trim().is_empty(),
        "a parsed model is never blank"
    );
    let view = PolicyRequest {
        route,
        model: parsed.model.clone(),
        streaming: parsed.stream,
        max_tokens: parsed.max_tokens,
        estimated_prompt_tokens: parsed.estimated_prompt_tokens,
        temperature: parsed.temperature,
        messages: parsed.messages.clone(),
        params: parsed.params.clone(),
        ..PolicyRequest::default()
    };
    let wit = crate::plugin::request_view(&view);
    assert_eq!(
        wit.messages.len(),
        view.messages.len(),
        "every message reaches plugins"
    );
    for param in &parsed.params {
        let value: Value = serde_json::from_str(&param.json).expect("params are JSON");
        assert_eq!(canonical_json(&value), param.json, "params are canonical");
    }
    let upstream = parsed.upstream_body("fuzz-model");
    let again: Value = serde_json::from_slice(&upstream).expect("upstream body is JSON");
    assert_eq!(again["model"], "fuzz-model");
}

/// An event stream split at arbitrary points (first byte picks the split
/// size): parsing never panics, splitting never changes the events, and
/// encoding what was parsed parses back to the same events.
pub fn sse(data: &[u8]) {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let whole = SseParser::new().feed(stream);
    let mut parser = SseParser::new();
    let mut pieces = Vec::new();
    for chunk in stream.chunks(usize::from(split).max(1)) {
        parser.feed_into(chunk, &mut pieces);
    }
    assert_eq!(whole, pieces, "where the bytes split changes nothing");
    let again = SseParser::new().feed(&encode(&whole));
    assert_eq!(whole, again, "encode then parse is the identity");
    for route in [Route::Chat, Route::AnthropicMessages] {
        let _ = api::stream_to_json(route, &whole);
    }
}

/// Conversion between a JSON answer and its stream (first byte picks the
/// route): a JSON answer that converts to a stream converts back.
pub fn convert(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let route = route(selector);
    if let Ok(events) = api::json_to_stream(route, body) {
        let back = api::stream_to_json(route, &events);
        assert!(back.is_ok(), "a stream made from an answer converts back");
    }
    let _ = api::usage_from_json(route, body);
    let _ = api::parse_error_body(body);
}

/// Canonical JSON: deterministic, valid JSON, a fixed point, and the same
/// whether written from a parsed value or straight from the text.
pub fn canonical(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let once = canonical_json(&value);
    if let Ok(text) = std::str::from_utf8(data) {
        let raw = api::canonical_raw(text).expect("text that parses canonicalizes");
        assert_eq!(
            raw, once,
            "canonical from the text and from the value agree"
        );
    }
    let reparsed: Value = serde_json::from_str(&once).expect("canonical JSON parses");
    assert_eq!(
        canonical_json(&reparsed),
        once,
        "canonical form is a fixed point"
    );
}

/// A config file: any text loads or is refused with an error naming where.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::from_toml_str(text, &|_| None) {
        assert!(!e.to_string().is_empty(), "errors say something");
    }
}
