//! An in-process sluice on 127.0.0.1:0 with the mock provider upstream, for
//! end-to-end tests over real sockets.

use std::net::SocketAddr;
use std::sync::Arc;

use sluice::config::Config;
use sluice::gateway::Gateway;
use sluice::mock::{MockConfig, MockHandle};

/// A running gateway; stops when dropped.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub gw: Arc<Gateway>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Upstream providers pointing at `mock`: "mock" (OpenAI kind) serves gpt-*,
/// mock-* and text-embedding-*; "anthropic" serves claude-*.
pub fn providers(mock: &MockHandle) -> String {
    format!(
        r#"
[[providers]]
name = "mock"
kind = "openai"
base_url = "{url}"
keys = ["sk-upstream-secret"]
models = ["gpt-*", "mock-*", "text-embedding-*"]
timeout_ms = 2000

[[providers]]
name = "anthropic"
kind = "anthropic"
base_url = "{url}"
keys = ["sk-ant-upstream-secret"]
models = ["claude-*"]
timeout_ms = 2000
"#,
        url = mock.base_url()
    )
}

impl TestGateway {
    /// Starts a gateway from `config` (TOML; no env lookups).
    pub async fn start(config: &str) -> TestGateway {
        let mut config = Config::from_toml_str(config, &|_| None).expect("test config is valid");
        config.server.listen = "127.0.0.1:0".parse().expect("addr");
        let gw = Gateway::build(config).await.expect("gateway builds");
        // As `sluice serve` does: plugin files and fleet releases are watched.
        sluice::versions::spawn_watchers(&gw.plugins);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server_gw = gw.clone();
        tokio::spawn(async move {
            let _ = sluice::server::run(listener, server_gw, async {
                let _ = stopped.await;
            })
            .await;
        });
        TestGateway {
            addr,
            gw,
            stop: Some(stop),
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The OpenAI-style base URL (`.../v1`).
    pub fn base_url(&self) -> String {
        self.url("/v1")
    }

    /// Serves this gateway's admin listener (as `server.admin_listen`
    /// would) on a free port, until the test ends; its address.
    pub async fn spawn_admin_listener(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the admin listener");
        let addr = listener.local_addr().expect("admin listener address");
        tokio::spawn(sluice::admin::serve(
            listener,
            self.gw.clone(),
            std::future::pending(),
        ));
        addr
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A mock provider with default behaviour.
pub fn mock() -> MockHandle {
    sluice::mock::spawn(MockConfig::default())
}

/// The `x-ratelimit-limit-requests` that a one-message chat sent to
/// `chat_url` is answered with: it tells which throttle version and config
/// served the request.
pub async fn request_limit(chat_url: &str) -> String {
    let r = reqwest::Client::new()
        .post(chat_url)
        .json(&serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("chat");
    assert_eq!(r.status(), 200, "{chat_url}");
    r.headers()["x-ratelimit-limit-requests"]
        .to_str()
        .expect("ascii")
        .to_string()
}
