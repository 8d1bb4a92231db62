//! `sluice eval semantic`: precision and recall of semantic hits on a
//! labelled set of prompt pairs, through the real request flow.
//!
//! An in-process gateway (semantic cache on, the chosen embedder, the
//! reference plugin at the chosen threshold) sits in front of the mock
//! provider. For each pair, prompt `a` is asked (a miss, stored), then
//! prompt `b`; a `semantic-hit` on `b` is a predicted "same answer". Each pair
//! gets its own system prompt, hence its own namespace, so pairs never
//! answer each other.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::config::Config;
use crate::gateway::Gateway;

/// `sluice eval …`
#[derive(Debug, clap::Subcommand)]
pub enum EvalCommand {
    /// Precision/recall of semantic hits on labelled prompt pairs.
    Semantic(SemanticEvalArgs),
}

/// `sluice eval semantic` options.
#[derive(Debug, clap::Args)]
pub struct SemanticEvalArgs {
    /// Labelled pairs, one JSON object per line: {kind, same, a, b}.
    #[arg(long, default_value = "bench/semantic/pairs.jsonl")]
    pub pairs: PathBuf,
    /// `local` (a BERT sentence model from --model-dir) or `mock` (the
    /// `openai` embedder against the mock provider's hashed-word vectors).
    #[arg(long, default_value = "local")]
    pub embedder: String,
    /// Model files for the local embedder.
    #[arg(long, default_value = "target/models/all-minilm-l6-v2")]
    pub model_dir: PathBuf,
    /// The reference plugin's similarity threshold.
    #[arg(long, default_value_t = 0.92)]
    pub threshold: f32,
    /// Print every misclassified pair.
    #[arg(long)]
    pub verbose: bool,
}

/// One labelled pair.
#[derive(Debug, Clone, Deserialize)]
pub struct Pair {
    pub kind: String,
    pub same: bool,
    pub a: String,
    pub b: String,
}

/// The outcome over a set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub true_pos: u32,
    pub false_pos: u32,
    pub false_neg: u32,
    pub true_neg: u32,
    /// (kind, pairs, semantic hits)
    pub by_kind: Vec<(String, u32, u32)>,
}

impl Report {
    /// Of the semantic hits, the share that were labelled same-answer.
    pub fn precision(&self) -> f64 {
        let hits = self.true_pos + self.false_pos;
        if hits == 0 {
            1.0
        } else {
            f64::from(self.true_pos) / f64::from(hits)
        }
    }

    /// Of the same-answer pairs, the share answered by a semantic hit.
    pub fn recall(&self) -> f64 {
        let same = self.true_pos + self.false_neg;
        if same == 0 {
            0.0
        } else {
            f64::from(self.true_pos) / f64::from(same)
        }
    }
}

/// Reads a pairs file.
pub fn load_pairs(path: &std::path::Path) -> anyhow::Result<Vec<Pair>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), i + 1))
        })
        .collect()
}

/// The gateway config for an eval run against the mock at `mock_url`.
fn config(args: &SemanticEvalArgs, mock_url: &str) -> anyhow::Result<Config> {
    let embedder = match args.embedder.as_str() {
        "local" => {
            let dir = args.model_dir.canonicalize().with_context(|| {
                format!("model dir {} (run scripts/setup)", args.model_dir.display())
            })?;
            format!(
                "embedder = \"local\"\nmodel = \"all-MiniLM-L6-v2\"\npath = {:?}",
                dir.display().to_string()
            )
        }
        "mock" => {
            "embedder = \"openai\"\nmodel = \"text-embedding-3-small\"\ndimensions = 256".to_owned()
        }
        other => bail!("unknown embedder {other:?}: expected local or mock"),
    };
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[[providers]]
name = "mock"
kind = "openai"
base_url = "{mock_url}"
keys = ["sk-eval"]
models = ["gpt-*", "text-embedding-*"]
timeout_ms = 10000

[anonymous]
tier = "eval"

[plugins.throttle.config]
tiers.eval = {{ requests_per_minute = 1000000, tokens_per_minute = 1000000000 }}

[semantic]
enabled = true
{embedder}

[plugins.semantic.config]
threshold = {threshold}
"#,
        threshold = args.threshold,
    );
    Config::from_toml_str(&toml, &|_| None).context("eval config")
}

/// Entries the gateway's semantic index holds, over every namespace.
fn indexed(gw: &Gateway) -> i64 {
    gw.metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("sluice_semantic_index_entries{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .sum()
}

async fn wait_indexed(gw: &Gateway, n: i64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while indexed(gw) < n {
        if Instant::now() > deadline {
            bail!("an answer was never indexed (is the embedder working?)");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// Asks `prompt` in pair `i`'s context; returns `x-sluice-cache`.
async fn ask(
    client: &reqwest::Client,
    addr: SocketAddr,
    i: usize,
    prompt: &str,
) -> anyhow::Result<String> {
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": format!("eval pair {i}")},
            {"role": "user", "content": prompt},
        ],
    });
    let resp = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("pair {i}: status {}", resp.status());
    }
    Ok(resp
        .headers()
        .get("x-sluice-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned())
}

/// Runs the pairs through a fresh in-process gateway.
pub async fn evaluate(args: &SemanticEvalArgs, pairs: &[Pair]) -> anyhow::Result<Report> {
    let mock = crate::mock::spawn(crate::mock::MockConfig::default());
    let gw = Gateway::build(config(args, &mock.base_url())?).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::server::run(listener, gw.clone(), async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let mut report = Report::default();
    let mut stored = 0i64;
    for (i, pair) in pairs.iter().enumerate() {
        let first = ask(&client, addr, i, &pair.a).await?;
        if first != "miss" {
            bail!("pair {i}: the first prompt was a {first:?}, not a miss");
        }
        stored += 1;
        wait_indexed(&gw, stored).await?;
        let hit = ask(&client, addr, i, &pair.b).await? == "semantic-hit";
        if !hit {
            stored += 1; // the miss is stored too
        }
        match (pair.same, hit) {
            (true, true) => report.true_pos += 1,
            (false, true) => report.false_pos += 1,
            (true, false) => report.false_neg += 1,
            (false, false) => report.true_neg += 1,
        }
        if args.verbose && hit != pair.same {
            println!(
                "{} [{}] {:?} / {:?}",
                if hit { "false hit" } else { "missed" },
                pair.kind,
                pair.a,
                pair.b
            );
        }
        match report.by_kind.iter_mut().find(|(k, _, _)| *k == pair.kind) {
            Some(entry) => {
                entry.1 += 1;
                entry.2 += u32::from(hit);
            }
            None => report.by_kind.push((pair.kind.clone(), 1, u32::from(hit))),
        }
    }
    let _ = stop.send(());
    let _ = server.await;
    Ok(report)
}

/// `sluice eval …`
pub async fn run_cli(command: EvalCommand) -> anyhow::Result<ExitCode> {
    let EvalCommand::Semantic(args) = command;
    let pairs = load_pairs(&args.pairs)?;
    let started = Instant::now();
    let report = evaluate(&args, &pairs).await?;
    println!(
        "semantic eval: {} pairs, embedder {}, threshold {}",
        pairs.len(),
        args.embedder,
        args.threshold
    );
    for (kind, n, hits) in &report.by_kind {
        println!("  {kind:<11} {n:>4} pairs  {hits:>4} semantic hits");
    }
    println!(
        "  tp {} fp {} fn {} tn {}",
        report.true_pos, report.false_pos, report.false_neg, report.true_neg
    );
    println!(
        "  precision {:.3}  recall {:.3}  ({:.1} s)",
        report.precision(),
        report.recall(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
