//! [`GatewayError`]: every way a request can fail, where the failure came
//! from, and its provider-shaped response. Errors become HTTP responses here
//! and nowhere else.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

use crate::api;
use crate::policy::Route;

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The client: bad input, bad key, over its limit.
    Downstream,
    /// The provider: errors, timeouts, refused connections.
    Upstream,
    /// sluice itself: a fail-closed plugin or state backend.
    Internal,
}

impl Origin {
    /// The `origin` label and access-log value: `downstream`, `upstream`
    /// or `internal`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Downstream => "downstream",
            Origin::Upstream => "upstream",
            Origin::Internal => "internal",
        }
    }
}

/// A failed request, ready to become a response.
#[derive(Debug, Clone)]
pub struct GatewayError {
    pub status: StatusCode,
    pub origin: Origin,
    pub message: String,
    /// OpenAI `code` (e.g. "model_not_found"); None uses the status default.
    pub code: Option<&'static str>,
    pub retry_after: Option<Duration>,
    /// An upstream error body to pass through unchanged (caller-fault 4xx).
    pub passthrough: Option<Bytes>,
}

impl GatewayError {
    fn new(status: StatusCode, origin: Origin, message: impl Into<String>) -> Self {
        Self {
            status,
            origin,
            message: message.into(),
            code: None,
            retry_after: None,
            passthrough: None,
        }
    }

    /// 400: the request body is not what the API accepts.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Origin::Downstream, message)
    }

    /// 413: the body is larger than `server.max_body_bytes`.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Origin::Downstream,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 404: no provider serves this model.
    pub fn unknown_model(model: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            Origin::Downstream,
            format!("The model `{model}` does not exist or is not served by this gateway."),
        );
        e.code = Some("model_not_found");
        e
    }

    /// 401: the bearer token is not a known virtual key (or none was sent
    /// where anonymous access is off).
    pub fn unauthorized(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, Origin::Downstream, message);
        e.code = Some("invalid_api_key");
        e
    }

    /// 403: the virtual key may not use this model.
    pub fn model_not_allowed(model: &str) -> Self {
        let mut e = Self::new(
            StatusCode::FORBIDDEN,
            Origin::Downstream,
            format!("This API key is not allowed to use the model `{model}`."),
        );
        e.code = Some("model_not_allowed");
        e
    }

    /// 429 from the throttle.
    pub fn rate_limited(message: impl Into<String>, retry_after: Duration) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, Origin::Downstream, message);
        e.code = Some("rate_limit_exceeded");
        e.retry_after = Some(retry_after);
        e
    }

    /// 429: a budget cannot cover the request's worst-case cost. OpenAI's
    /// `insufficient_quota` (type and code), which the SDKs raise as their
    /// quota error; `retry_after` when the period resets.
    pub fn budget_exhausted(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, Origin::Downstream, message);
        e.code = Some("insufficient_quota");
        e.retry_after = retry_after;
        e
    }

    /// A throttle plugin's own rejection with its status.
    pub fn rejected(status: u16, message: String, retry_after: Option<Duration>) -> Self {
        let status = StatusCode::from_u16(status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .unwrap_or(StatusCode::TOO_MANY_REQUESTS);
        let mut e = Self::new(status, Origin::Downstream, message);
        e.retry_after = retry_after;
        e
    }

    /// 503: a fail-closed plugin or state backend failed.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, Origin::Internal, message)
    }

    /// 502: the provider failed after the retries the policy allowed.
    pub fn upstream_failed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, Origin::Upstream, message)
    }

    /// 503: the provider is known to be failing (its circuit breaker is
    /// open), so nothing was sent; come back after `retry_after`.
    pub fn upstream_unavailable(message: impl Into<String>, retry_after: Duration) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, Origin::Upstream, message);
        e.retry_after = Some(retry_after);
        e
    }

    /// 504: the provider did not answer in time.
    pub fn upstream_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, Origin::Upstream, message)
    }

    /// The provider's own error for a caller-fault status, passed through.
    pub fn upstream_passthrough(status: u16, body: Bytes) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut e = Self::new(status, Origin::Upstream, "upstream rejected the request");
        e.passthrough = Some(body);
        e
    }

    /// The response in `route`'s provider shape.
    pub fn into_response(self, route: Route) -> Response {
        let body = match self.passthrough {
            Some(body) => body,
            None => Bytes::from(self.shaped_body(route)),
        };
        let mut resp = Response::new(Body::from(body));
        *resp.status_mut() = self.status;
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(after) = self.retry_after {
            let secs = after.as_millis().div_ceil(1000).max(1);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs as u64));
            headers.insert(
                "retry-after-ms",
                HeaderValue::from(after.as_millis() as u64),
            );
        }
        if route == Route::AnthropicMessages && self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert("x-should-retry", HeaderValue::from_static("true"));
        }
        resp
    }

    fn shaped_body(&self, route: Route) -> Vec<u8> {
        match (route, self.code) {
            (Route::AnthropicMessages, _) | (_, None) => {
                api::error_body(route, self.status.as_u16(), &self.message)
            }
            (_, Some(code @ "insufficient_quota")) => {
                api::openai_error(&self.message, code, Some(code))
            }
            (_, Some(code)) => api::openai_error(
                &self.message,
                api::error_type(route, self.status.as_u16()),
                Some(code),
            ),
        }
    }
}

impl From<api::ApiError> for GatewayError {
    fn from(e: api::ApiError) -> Self {
        GatewayError::bad_request(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(resp: Response) -> serde_json::Value {
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        serde_json::from_slice(&bytes).expect("json")
    }

    #[tokio::test]
    async fn errors_take_each_providers_shape() {
        let resp = GatewayError::unknown_model("gpt-9").into_response(Route::Chat);
        assert_eq!(resp.status(), 404);
        let v = body_json(resp).await;
        assert_eq!(v["error"]["code"], "model_not_found");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("gpt-9")
        );

        let resp = GatewayError::unknown_model("claude-9").into_response(Route::AnthropicMessages);
        let v = body_json(resp).await;
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "not_found_error");
    }

    #[tokio::test]
    async fn rate_limited_sets_retry_after() {
        let resp = GatewayError::rate_limited("slow down", Duration::from_millis(1500))
            .into_response(Route::Chat);
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "2");
        assert_eq!(resp.headers()["retry-after-ms"], "1500");
    }
}
