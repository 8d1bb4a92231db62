
/// Tests: `cargo test` runs them natively (no component, no gateway). The
/// builders give every field a default, so a test names only what it is
/// about: `Request { tenant: "acme".into(), ..request() }`.
#[cfg(test)]
mod tests {
    use super::*;
    use sluice::policy::types::{Message, Route};

    /// A request as the policy sees it (WIT `request`).
    fn request() -> Request {
        Request {
            id: "test".into(),
            route: Route::Chat,
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            streaming: false,
            max_tokens: None,
            estimated_prompt_tokens: 2,
            temperature: None,
            messages: vec![message("hello")],
            params: Vec::new(),
            tenant: "acme".into(),
            tier: "free".into(),
            key_id: None,
            client_ip: "127.0.0.1".into(),
            headers: Vec::new(),
        }
    }

    /// One user message (WIT `message`).
    fn message(text: &str) -> Message {
        Message {
            role: "user".into(),
            text: text.into(),
            has_tool_calls: false,
            extra_json: None,
        }
    }

    #[test]
    fn init_accepts_an_empty_config() {
        assert!(<Policy as Lifecycle>::init("{}".into()).is_ok());
    }
