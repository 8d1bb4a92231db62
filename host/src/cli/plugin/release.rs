//! `sluice plugin push`, `rollback` and `status`: clients of a node's admin
//! API. Pushing through a node means the version is loaded (compiled,
//! linked, `init`-ed, smoke-tested) before it is published, so a broken
//! version never reaches the fleet; the node publishes it through the shared
//! state and every node switches to it. When the release book the node
//! follows is lost (Redis lost its data), a push is refused unless
//! `--new-book` starts a new one; `status` shows the book and the node's
//! view of it.
//!
//! With `--redis URL` instead, the command loads the version itself (with
//! default sandbox limits, and an empty config unless `--config` names one)
//! and writes the release to Redis directly: for fleets whose admin API is
//! not reachable. A node whose own limits refuse it records why.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::admin::CONFIG_HEADER;
use crate::plugin::{EngineSettings, LoadOptions, PluginRuntime};
use crate::policy::Slot;
use crate::state::{OnError, State, StateSettings};
use crate::versions::releases::{self, Writer};

/// How to reach a node's admin API.
#[derive(Debug, clap::Args)]
pub struct AdminTarget {
    /// The node's admin base URL (its `server.admin_listen`, or `server.listen`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub admin: String,
    /// The admin bearer token.
    #[arg(long, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Publish straight to this Redis (`redis://…`) instead of through a node.
    #[arg(long)]
    pub redis: Option<String>,
}

impl AdminTarget {
    fn token(&self) -> anyhow::Result<&str> {
        self.token
            .as_deref()
            .context("--token (or SLUICE_ADMIN_TOKEN) is required with --admin")
    }
}

fn parse_slot(slot: &str) -> anyhow::Result<Slot> {
    Slot::parse(slot).with_context(|| {
        format!("no plugin slot {slot:?}: throttle, cache_key, semantic, retry, route")
    })
}

async fn connect(url: &str) -> anyhow::Result<State> {
    let mut settings = StateSettings::redis(url);
    // A release written to a local fallback would reach no node.
    settings.on_error = OnError::FailClosed;
    settings.op_timeout = Duration::from_secs(5);
    State::connect(&settings).await.context("Redis")
}

/// `sluice plugin push` options.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The component (.wasm) to release.
    pub file: PathBuf,
    /// The slot it serves: throttle, cache_key, semantic, retry.
    #[arg(long)]
    pub slot: String,
    /// The plugin config to release with it (JSON file); default: each
    /// node's configured `[plugins.<slot>.config]`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Start a new release book (a new lineage, from what Redis holds): the
    /// go-ahead a node needs once the book it followed is lost (Redis lost
    /// its data); with --redis, after Redis came back from an older
    /// snapshot. Slots the book does not name serve each node's configured
    /// plugin until they are pushed again.
    #[arg(long)]
    pub new_book: bool,
    #[command(flatten)]
    pub target: AdminTarget,
}

/// `sluice plugin status` options.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: AdminTarget,
}

/// `sluice plugin rollback` options.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The slot to roll back.
    #[arg(long)]
    pub slot: String,
    #[command(flatten)]
    pub target: AdminTarget,
}

fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .context("HTTP client")
}

fn endpoint(target: &AdminTarget, path: &str) -> String {
    format!("{}{path}", target.admin.trim_end_matches('/'))
}

/// Prints a success body, or fails with the server's reason.
async fn finish(resp: reqwest::Response) -> anyhow::Result<ExitCode> {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if !status.is_success() {
        let reason = body
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string());
        bail!("{status}: {reason}");
    }
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(ExitCode::SUCCESS)
}

/// Uploads a component to a node, which validates and publishes it.
pub async fn push(args: PushArgs) -> anyhow::Result<ExitCode> {
    let wasm =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let config: Option<Value> = match &args.config {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", path.display()))?,
            )
        }
    };
    if let Some(url) = &args.target.redis {
        return push_to_redis(url, &args.slot, wasm, config, args.new_book).await;
    }
    let query = if args.new_book { "?new_book=true" } else { "" };
    let mut request = client()?
        .post(endpoint(
            &args.target,
            &format!("/admin/plugins/{}{query}", args.slot),
        ))
        .bearer_auth(args.target.token()?)
        .body(wasm);
    if let Some(config) = &config {
        // One line: header values cannot hold newlines.
        request = request.header(CONFIG_HEADER, config.to_string());
    }
    let resp = request.send().await.context("reaching the admin API")?;
    finish(resp).await
}

/// Validates `wasm` here, then publishes it to Redis.
async fn push_to_redis(
    url: &str,
    slot: &str,
    wasm: Vec<u8>,
    config: Option<Value>,
    new_book: bool,
) -> anyhow::Result<ExitCode> {
    let kind = parse_slot(slot)?;
    let state = connect(url).await?;
    let runtime = PluginRuntime::new(EngineSettings::default(), state.clone(), None)?;
    let mut opts = LoadOptions::new(kind);
    opts.require = vec![kind];
    if let Some(c) = &config {
        opts.config = c.clone();
    }
    runtime
        .load(&wasm, opts)
        .await
        .context("refused; nothing was published")?;
    let writer = Writer {
        node: None,
        new_book,
    };
    let (book, release) = releases::publish(&state, writer, kind, &wasm, config).await?;
    if book.version == 1 {
        eprintln!(
            "note: Redis held no release book; started a new one (lineage {})",
            book.lineage
        );
    } else if new_book {
        eprintln!(
            "note: started a new release book (lineage {})",
            book.lineage
        );
    }
    println!("{}", serde_json::to_string_pretty(&release)?);
    Ok(ExitCode::SUCCESS)
}

/// Asks a node to roll a slot back to its previous release everywhere.
pub async fn rollback(args: RollbackArgs) -> anyhow::Result<ExitCode> {
    if let Some(url) = &args.target.redis {
        let kind = parse_slot(&args.slot)?;
        let state = connect(url).await?;
        let (_, now) = releases::rollback(&state, Writer::default(), kind).await?;
        println!("{}", serde_json::to_string_pretty(&now)?);
        return Ok(ExitCode::SUCCESS);
    }
    let resp = client()?
        .post(endpoint(
            &args.target,
            &format!("/admin/plugins/{}/rollback", args.slot),
        ))
        .bearer_auth(args.target.token()?)
        .send()
        .await
        .context("reaching the admin API")?;
    finish(resp).await
}

/// Prints the release book and the node's view of it; warns on stderr
/// when the book the node follows is lost.
pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    if let Some(url) = &args.target.redis {
        let state = connect(url).await?;
        let book = releases::read_book(&state).await?;
        println!("{}", serde_json::to_string_pretty(&book)?);
        return Ok(ExitCode::SUCCESS);
    }
    let resp = client()?
        .get(endpoint(&args.target, "/admin/releases"))
        .bearer_auth(args.target.token()?)
        .send()
        .await
        .context("reaching the admin API")?;
    if resp.status().is_success() {
        let bytes = resp.bytes().await.context("reading the answer")?;
        let body: Value = serde_json::from_slice(&bytes).context("reading the answer")?;
        if let Some(message) = body["node"]["message"].as_str() {
            eprintln!("warning: {message}");
        }
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    finish(resp).await
}
