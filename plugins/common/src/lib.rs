//! What every reference plugin shares:
//! - [`bindings`]: the `sluice:policy` types and host imports, generated once
//!   so that each plugin crate reuses them (`with:` in its own `generate!`)
//!   and plain Rust tests can build requests without a host.
//! - [`config`]: strict JSON config parsing whose errors name the bad field,
//!   and [`ConfigCell`], which keeps the parsed config for the instance.
//! - [`testing`]: request builders for native unit tests.
//! - `arena` (wasm only): the bump allocator every plugin instance uses.

#[cfg(target_arch = "wasm32")]
pub mod arena;
pub mod config;
pub mod testing;

pub use config::{ConfigCell, ConfigError, parse_config};

/// Generated bindings for the `host` world: the shared types and the
/// capabilities (state, limits, config, log, metrics, clock) a plugin imports.
///
/// Outside wasm the import functions exist but must not be called; the plugin
/// logic is written over the plain types only, so tests never reach them.
pub mod bindings {
    wit_bindgen::generate!({
        world: "host",
        path: "../../wit",
    additional_derives: [PartialEq],
    });
}

pub use bindings::sluice::policy::types;

impl types::Route {
    /// The route's WIT name (`chat`, `embeddings`, `anthropic-messages`), as
    /// used in plugin configs and in reasons shown to operators.
    pub fn name(self) -> &'static str {
        match self {
            types::Route::Chat => "chat",
            types::Route::Embeddings => "embeddings",
            types::Route::AnthropicMessages => "anthropic-messages",
        }
    }
}

/// Parses a route name as written in plugin configs.
pub fn parse_route(name: &str) -> Option<types::Route> {
    match name {
        "chat" => Some(types::Route::Chat),
        "embeddings" => Some(types::Route::Embeddings),
        "anthropic-messages" => Some(types::Route::AnthropicMessages),
        _ => None,
    }
}

/// Appends `s` to `out` as a JSON string literal. Used to build canonical
/// serialisations by hand, so that hashes do not depend on a JSON library's
/// formatting choices.
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_like_json() {
        let mut out = String::new();
        push_json_str(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}é");
    }

    #[test]
    fn route_names_round_trip() {
        for r in [
            types::Route::Chat,
            types::Route::Embeddings,
            types::Route::AnthropicMessages,
        ] {
            assert_eq!(parse_route(r.name()), Some(r));
        }
        assert_eq!(parse_route("completions"), None);
    }
}
