//! Translation between OpenAI chat completions and Anthropic messages, so a
//! client of either SDK reaches a provider of the other kind.
//!
//! The pipeline asks [`plan`] whether the chosen provider speaks the
//! route's format. When it does not, [`request_body`] turns the body the
//! client sent into the provider's format, and on the way back
//! [`response_body`] (JSON), [`translate_stream`] (SSE, event by event) and
//! [`error_body`] (a provider's error) turn the answer into the client's.
//! Everything downstream of the call (cache, usage, metrics) sees the
//! client's format only.
//!
//! - `request.rs`: request bodies both ways;
//! - `response.rs`: answers, usage, stop reasons and errors both ways;
//! - `stream.rs`: the incremental SSE translators;
//! - `gemini.rs`: Gemini's native `generateContent` <-> OpenAI (Anthropic
//!   clients reach Gemini through the OpenAI form).
//!
//! What cannot be carried across, and what happens to it, is listed in
//! docs/translation.md.

mod gemini;
mod request;
mod response;
mod stream;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;

use crate::api::{ApiError, SseEvent, SseParser, to_json_bytes};
use crate::config::ProviderKind;
use crate::policy::Route;
use crate::upstream::BodyStream;

pub use gemini::{GeminiToOpenAi, gemini_to_openai_response, openai_to_gemini_request};
pub use request::{anthropic_to_openai_request, openai_to_anthropic_request};
pub use response::{
    anthropic_to_openai_response, openai_finish_reason, openai_to_anthropic_response,
};
pub use stream::{AnthropicToOpenAi, EventTranslator, OpenAiToAnthropic};

/// `max_tokens` sent to Anthropic when an OpenAI client set no limit
/// (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// How a request of some route reaches a provider of some kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The provider speaks the route's format.
    Native,
    /// An OpenAI chat request to an Anthropic provider.
    OpenAiToAnthropic,
    /// An Anthropic messages request to an OpenAI-compatible provider.
    AnthropicToOpenAi,
    /// An OpenAI chat request to Gemini.
    OpenAiToGemini,
    /// An Anthropic messages request to Gemini (through the OpenAI form).
    AnthropicToGemini,
    /// No translation exists (embeddings to Anthropic).
    Unsupported,
}

impl Plan {
    /// Whether the request can go to the provider at all.
    pub fn possible(self) -> bool {
        self != Plan::Unsupported
    }

    /// Whether bodies must be translated.
    pub fn translates(self) -> bool {
        !matches!(self, Plan::Native | Plan::Unsupported)
    }
}

/// How `route` reaches a provider of `kind`.
pub fn plan(route: Route, kind: ProviderKind) -> Plan {
    use ProviderKind::{Anthropic, Azure, Gemini, Openai};
    match (route, kind) {
        (Route::Chat | Route::Embeddings, Openai | Azure)
        | (Route::AnthropicMessages, Anthropic) => Plan::Native,
        (Route::Chat, Anthropic) => Plan::OpenAiToAnthropic,
        (Route::AnthropicMessages, Openai | Azure) => Plan::AnthropicToOpenAi,
        (Route::Chat, Gemini) => Plan::OpenAiToGemini,
        (Route::AnthropicMessages, Gemini) => Plan::AnthropicToGemini,
        (Route::Embeddings, Anthropic | Gemini) => Plan::Unsupported,
    }
}

/// The provider-format body for a client body (`body`, with the model
/// already set). A 400-worthy [`ApiError`] when the request uses something
/// that has no equivalent on the other side.
pub fn request_body(plan: Plan, body: &[u8]) -> Result<Bytes, ApiError> {
    let value: Value = serde_json::from_slice(body)?;
    let out = match plan {
        Plan::OpenAiToAnthropic => openai_to_anthropic_request(&value)?,
        Plan::AnthropicToOpenAi => anthropic_to_openai_request(&value)?,
        Plan::OpenAiToGemini => openai_to_gemini_request(&value)?,
        Plan::AnthropicToGemini => openai_to_gemini_request(&anthropic_to_openai_request(&value)?)?,
        Plan::Native | Plan::Unsupported => return Ok(Bytes::copy_from_slice(body)),
    };
    Ok(Bytes::from(to_json_bytes(&out)))
}

/// The client-format answer for a provider's successful JSON answer. A
/// body that is not JSON is passed on unchanged (the client's SDK reports
/// it as it would have from the provider).
pub fn response_body(plan: Plan, body: &[u8]) -> Bytes {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Bytes::copy_from_slice(body);
    };
    let out = match plan {
        Plan::OpenAiToAnthropic => anthropic_to_openai_response(&value),
        Plan::AnthropicToOpenAi => openai_to_anthropic_response(&value),
        Plan::OpenAiToGemini => gemini_to_openai_response(&value),
        Plan::AnthropicToGemini => openai_to_anthropic_response(&gemini_to_openai_response(&value)),
        Plan::Native | Plan::Unsupported => return Bytes::copy_from_slice(body),
    };
    Bytes::from(to_json_bytes(&out))
}

/// A provider's error body (either shape) re-shaped for the client's
/// `route`, keeping the message; `status` picks the error type.
pub fn error_body(route: Route, status: u16, body: &[u8]) -> Bytes {
    Bytes::from(response::error_for(route, status, body))
}

/// The client-format SSE stream for a provider's SSE stream, translated
/// event by event as it arrives.
pub fn translate_stream(plan: Plan, upstream: BodyStream) -> BodyStream {
    let translator = match plan {
        Plan::OpenAiToAnthropic => EventTranslator::AnthropicToOpenAi(AnthropicToOpenAi::new()),
        Plan::AnthropicToOpenAi => EventTranslator::OpenAiToAnthropic(OpenAiToAnthropic::new()),
        Plan::OpenAiToGemini => EventTranslator::GeminiToOpenAi(GeminiToOpenAi::new()),
        Plan::AnthropicToGemini => {
            EventTranslator::GeminiToAnthropic(GeminiToOpenAi::new(), OpenAiToAnthropic::new())
        }
        Plan::Native | Plan::Unsupported => return upstream,
    };
    let state = (
        upstream,
        SseParser::new(),
        translator,
        Vec::<SseEvent>::new(),
    );
    Box::pin(futures::stream::unfold(Some(state), |state| async move {
        let (mut upstream, mut parser, mut translator, mut events) = state?;
        loop {
            match upstream.next().await {
                Some(Ok(chunk)) => {
                    parser.feed_into(&chunk, &mut events);
                    let mut out = Vec::new();
                    for event in events.drain(..) {
                        for translated in translator.translate(&event) {
                            translated.write_to(&mut out);
                        }
                    }
                    if !out.is_empty() {
                        let next = Some((upstream, parser, translator, events));
                        return Some((Ok(Bytes::from(out)), next));
                    }
                }
                Some(Err(e)) => return Some((Err(e), None)),
                None => return None,
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_cover_every_route_and_kind() {
        assert_eq!(plan(Route::Chat, ProviderKind::Openai), Plan::Native);
        assert_eq!(
            plan(Route::Chat, ProviderKind::Anthropic),
            Plan::OpenAiToAnthropic
        );
        assert_eq!(
            plan(Route::AnthropicMessages, ProviderKind::Openai),
            Plan::AnthropicToOpenAi
        );
        assert!(!plan(Route::Embeddings, ProviderKind::Anthropic).possible());
        assert_eq!(
            plan(Route::AnthropicMessages, ProviderKind::Gemini),
            Plan::AnthropicToGemini
        );
        assert_eq!(plan(Route::Embeddings, ProviderKind::Azure), Plan::Native);
    }

    #[test]
    fn errors_are_reshaped_for_the_client() {
        let anthropic = br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too big"}}"#;
        let v: Value = serde_json::from_slice(&error_body(Route::Chat, 400, anthropic)).unwrap();
        assert_eq!(v["error"]["message"], "max_tokens: too big");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        let openai = br#"{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        let v: Value =
            serde_json::from_slice(&error_body(Route::AnthropicMessages, 429, openai)).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["message"], "slow down");
        // Not JSON at all: the text becomes the message.
        let v: Value =
            serde_json::from_slice(&error_body(Route::Chat, 502, b"bad gateway")).unwrap();
        assert_eq!(v["error"]["message"], "bad gateway");
    }
}
