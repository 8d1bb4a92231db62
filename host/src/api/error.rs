//! Why a request body was rejected, and error bodies in each provider's shape.

use serde_json::{Value, json};

use crate::policy::Route;

/// A request body the gateway cannot accept; every variant is a 400 and names
/// what is wrong precisely enough for the client to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON at all.
    #[error("malformed JSON at line {line} column {column}: {message}")]
    MalformedJson {
        line: usize,
        column: usize,
        message: String,
    },
    /// Valid JSON, but not an object.
    #[error("the request body must be a JSON object")]
    NotAnObject,
    /// A required field is absent (or null), e.g. `model`, `messages[1].role`.
    #[error("missing required field '{0}'")]
    MissingField(String),
    /// A field has the wrong type or an impossible value.
    #[error("invalid field '{field}': expected {expected}")]
    InvalidField {
        field: String,
        expected: &'static str,
    },
    /// More elements than a configured cap allows, e.g. `messages` over
    /// `server.max_messages`; refused before any element is converted.
    #[error("{field}: {count} {what} exceed this gateway's limit of {limit} ({setting})")]
    TooMany {
        field: String,
        count: usize,
        /// What is counted, e.g. "messages".
        what: &'static str,
        limit: usize,
        /// The config setting that holds the limit.
        setting: &'static str,
    },
    /// An object with more members than [`super::raw::MAX_MEMBERS`].
    #[error("{at}: {count} members exceed this gateway's limit of {limit} per object")]
    TooManyMembers {
        at: String,
        count: usize,
        limit: usize,
    },
}

impl ApiError {
    /// The offending field's path (`model`, `messages[2].content`), if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::MissingField(field)
            | ApiError::InvalidField { field, .. }
            | ApiError::TooMany { field, .. } => Some(field),
            ApiError::TooManyMembers { at, .. } if at != "body" => Some(at),
            ApiError::MalformedJson { .. }
            | ApiError::NotAnObject
            | ApiError::TooManyMembers { .. } => None,
        }
    }

    /// The 400 body in the shape of `route`'s provider.
    pub fn to_body(&self, route: Route) -> Vec<u8> {
        let message = self.to_string();
        match route {
            Route::AnthropicMessages => anthropic_error("invalid_request_error", &message),
            Route::Chat | Route::Embeddings => {
                openai_error_body(&message, "invalid_request_error", self.field(), None)
            }
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, expected: &'static str) -> Self {
        ApiError::InvalidField {
            field: field.into(),
            expected,
        }
    }

    pub(crate) fn missing(field: impl Into<String>) -> Self {
        ApiError::MissingField(field.into())
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(err: serde_json::Error) -> Self {
        // serde's Display appends " at line L column C"; keep only the cause,
        // the position has its own fields.
        let full = err.to_string();
        let message = match full.rfind(" at line ") {
            Some(at) => full[..at].to_owned(),
            None => full,
        };
        ApiError::MalformedJson {
            line: err.line(),
            column: err.column(),
            message,
        }
    }
}

/// An OpenAI-shaped error body:
/// `{"error":{"message","type","param":null,"code"}}`.
pub fn openai_error(message: &str, error_type: &str, code: Option<&str>) -> Vec<u8> {
    openai_error_body(message, error_type, None, code)
}

fn openai_error_body(
    message: &str,
    error_type: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Vec<u8> {
    super::to_json_bytes(&json!({
        "error": {
            "message": message,
            "type": error_type,
            "param": param,
            "code": code,
        }
    }))
}

/// An Anthropic-shaped error body: `{"type":"error","error":{"type","message"}}`.
pub fn anthropic_error(error_type: &str, message: &str) -> Vec<u8> {
    super::to_json_bytes(&json!({
        "type": "error",
        "error": { "type": error_type, "message": message }
    }))
}

/// The error `type` each provider uses for an HTTP status.
pub fn error_type(route: Route, status: u16) -> &'static str {
    let anthropic = route == Route::AnthropicMessages;
    match status {
        400 | 413 | 422 => "invalid_request_error",
        401 if anthropic => "authentication_error",
        // OpenAI reports a bad key as an invalid request, code invalid_api_key.
        401 => "invalid_request_error",
        403 if anthropic => "permission_error",
        403 => "permission_denied",
        404 if anthropic => "not_found_error",
        404 => "invalid_request_error",
        429 if anthropic => "rate_limit_error",
        // OpenAI names the exhausted limit ("requests" or "tokens").
        429 => "requests",
        529 if anthropic => "overloaded_error",
        _ if anthropic => "api_error",
        503 | 529 => "service_unavailable",
        _ => "server_error",
    }
}

/// An error body for `status` in `route`'s provider shape, with the type (and
/// for OpenAI the code) that provider uses for it.
pub fn error_body(route: Route, status: u16, message: &str) -> Vec<u8> {
    let error_type = error_type(route, status);
    if route == Route::AnthropicMessages {
        return anthropic_error(error_type, message);
    }
    let code = match status {
        401 => Some("invalid_api_key"),
        429 => Some("rate_limit_exceeded"),
        _ => None,
    };
    openai_error(message, error_type, code)
}

/// Parses an error body of either shape back into `(type, message)`; handy
/// for tests and for logging what an upstream said.
pub fn parse_error_body(body: &[u8]) -> Option<(String, String)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let err = v.get("error")?;
    let error_type = err.get("type")?.as_str()?.to_owned();
    let message = err.get("message")?.as_str()?.to_owned();
    Some((error_type, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_error_has_the_documented_shape() {
        let body = openai_error("nope", "invalid_request_error", Some("bad"));
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"error":{"message":"nope","type":"invalid_request_error","param":null,"code":"bad"}}"#
        );
        let body = openai_error("x", "server_error", None);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"error":{"message":"x","type":"server_error","param":null,"code":null}}"#
        );
    }

    #[test]
    fn anthropic_error_has_the_documented_shape() {
        let body = anthropic_error("overloaded_error", "Overloaded");
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
        );
    }

    #[test]
    fn api_error_body_names_the_field_in_openai_param() {
        let err = ApiError::invalid("messages[0].content", "a string");
        let v: Value = serde_json::from_slice(&err.to_body(Route::Chat)).unwrap();
        assert_eq!(v["error"]["param"], "messages[0].content");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("messages[0].content")
        );
        let v: Value = serde_json::from_slice(&err.to_body(Route::AnthropicMessages)).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn malformed_json_keeps_serde_position() {
        let err: ApiError = serde_json::from_slice::<Value>(b"{\n  \"model\": }")
            .unwrap_err()
            .into();
        match &err {
            ApiError::MalformedJson {
                line,
                column,
                message,
            } => {
                assert_eq!((*line, *column), (2, 12));
                assert!(!message.contains("at line"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("line 2 column 12"));
    }

    #[test]
    fn error_body_uses_each_providers_vocabulary() {
        let v: Value = serde_json::from_slice(&error_body(Route::Chat, 429, "slow")).unwrap();
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        let v: Value =
            serde_json::from_slice(&error_body(Route::AnthropicMessages, 529, "busy")).unwrap();
        assert_eq!(v["error"]["type"], "overloaded_error");
        assert_eq!(
            parse_error_body(&error_body(Route::Embeddings, 500, "boom")),
            Some(("server_error".into(), "boom".into()))
        );
        assert_eq!(parse_error_body(b"{}"), None);
    }
}
