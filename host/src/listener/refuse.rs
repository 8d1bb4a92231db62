//! A connection past `server.max_connections`: answered 503 in the shape
//! of the route it asked for, then closed.

use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::error::GatewayError;

/// How long to wait for the request line (to pick the error's shape): a
/// client sends it as soon as it is connected, and a refusal should cost
/// little.
const REQUEST_LINE_WAIT: Duration = Duration::from_millis(250);

/// Answers `stream` with a 503 and closes it with a linger.
pub(super) async fn refuse(
    mut stream: TcpStream,
    max_connections: usize,
    slot: OwnedSemaphorePermit,
) {
    let mut head = [0u8; 1024];
    let mut len = 0;
    let _ = tokio::time::timeout(REQUEST_LINE_WAIT, async {
        while len < head.len() && !head[..len].contains(&b'\n') {
            match stream.read(&mut head[len..]).await {
                Ok(n) if n > 0 => len += n,
                _ => break,
            }
        }
    })
    .await;
    let path = std::str::from_utf8(&head[..len])
        .ok()
        .and_then(|line| line.split(' ').nth(1))
        .unwrap_or("/");
    let mut error = GatewayError::unavailable(format!(
        "sluice is serving as many connections as it may (server.max_connections = {max_connections}); retry shortly"
    ));
    error.retry_after = Some(Duration::from_secs(1));
    let response = error.into_response(super::error_route(path));
    let _ = stream.write_all(&http1_bytes(response).await).await;
    super::conn::linger(stream, Some(slot)).await;
}

/// `response` as HTTP/1.1 bytes, with `connection: close`.
async fn http1_bytes(response: axum::response::Response) -> Vec<u8> {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        parts.status.as_str(),
        parts.status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(
        format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&body);
    out
}
