//! `sluice bench-floor`: the floor of the benchmarks. A pass-through proxy
//! built from sluice's own HTTP stack and nothing else: the same accept
//! loop and connection handling ([`crate::listener`], axum on hyper) and
//! the same upstream client ([`crate::upstream::http_client`]), but no
//! parsing, no plugins, no cache, no state, no metrics and no logs. The
//! request body goes upstream as received and the answer comes back as
//! the upstream sent it, so `bench/peers.sh` can tell the cost of
//! proxying from the cost of sluice.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};

use crate::config::ServerConfig;
use crate::listener::{ConnectionStats, Limits};
use crate::upstream::{UpstreamSettings, http_client};

/// `sluice bench-floor` options.
#[derive(Debug, clap::Args)]
pub struct FloorArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Where requests go: this base URL followed by the request's path,
    /// e.g. http://127.0.0.1:9090 (the mock's root, not its /v1).
    #[arg(long)]
    pub upstream: String,
}

/// The request headers passed on (the rest, hop-by-hop ones included,
/// are the client's business with the floor).
const FORWARDED: [header::HeaderName; 3] =
    [header::CONTENT_TYPE, header::AUTHORIZATION, header::ACCEPT];

struct Floor {
    client: reqwest::Client,
    upstream: String,
    max_body_bytes: usize,
}

pub(super) async fn floor(args: FloorArgs) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    println!(
        "sluice bench floor on http://{} -> {}",
        listener.local_addr()?,
        args.upstream
    );
    serve(listener, &args.upstream, super::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Serves the floor on `listener`, forwarding to `upstream`, until
/// `shutdown` resolves.
async fn serve(
    listener: tokio::net::TcpListener,
    upstream: &str,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let upstream = upstream.trim_end_matches('/').to_owned();
    reqwest::Url::parse(&upstream)
        .with_context(|| format!("--upstream {upstream:?} is not a URL"))?;
    let client = http_client(&UpstreamSettings::default(), Duration::from_secs(5))
        .context("building the upstream client")?;
    let app = Router::new().fallback(forward).with_state(Arc::new(Floor {
        client,
        upstream,
        max_body_bytes: ServerConfig::default().max_body_bytes,
    }));
    crate::listener::serve(
        listener,
        app,
        Limits::api(&ServerConfig::default()),
        Arc::new(ConnectionStats::default()),
        shutdown,
    )
    .await?;
    Ok(())
}

/// One request: body read whole (as sluice reads it), sent upstream with
/// the same method and path, and the answer streamed back.
async fn forward(State(floor): State<Arc<Floor>>, request: http::Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let body = match crate::listener::read_body(body, floor.max_body_bytes).await {
        Ok(body) => body,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = HeaderMap::new();
    for name in FORWARDED {
        if let Some(v) = parts.headers.get(&name) {
            headers.insert(name, v.clone());
        }
    }
    let sent = floor
        .client
        .request(parts.method, format!("{}{path}", floor.upstream))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let upstream = match sent {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let mut response = Response::builder().status(upstream.status());
    if let Some(v) = upstream.headers().get(header::CONTENT_TYPE) {
        response = response.header(header::CONTENT_TYPE, v);
    }
    response
        .body(Body::from_stream(upstream.bytes_stream()))
        .unwrap_or_else(|e| (StatusCode::BAD_GATEWAY, e.to_string()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The floor passes a chat completion through to the mock and back:
    /// the answer is the mock's own, status and body.
    #[tokio::test]
    async fn passes_requests_through_to_the_upstream() {
        let mock = crate::mock::spawn(crate::mock::MockConfig::default());
        let floor = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let floor_addr = floor.local_addr().unwrap();
        tokio::spawn(async move { serve(floor, &mock.url("/"), std::future::pending()).await });
        let client = reqwest::Client::new();
        let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
        let response = client
            .post(format!("http://{floor_addr}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["object"], "chat.completion", "{answer}");
        assert_eq!(answer["model"], "gpt-4o-mini", "{answer}");

        // The mock's own error for a bad body comes back as it was sent.
        let response = client
            .post(format!("http://{floor_addr}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body("{")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
    }
}
