//! `sluice eval semantic`: precision and recall of semantic hits on a
//! labelled set of prompt pairs, through the real request flow.
//!
//! An in-process gateway (semantic cache on, the chosen embedder, the
//! reference semantic plugin) sits in front of the mock
//! provider. For each pair, prompt `a` is asked (a miss, stored), then
//! prompt `b`; a `semantic-hit` on `b` is a predicted "same answer". Each pair
//! gets its own system prompt, hence its own namespace, so pairs never
//! answer each other.
//!
//! Every pair belongs to the `tune` or the `test` half of the set (its
//! `split` field): thresholds and guards are tuned on the first only, and the
//! two are reported separately, overall and per kind of pair. The plugin runs
//! with its shipped config unless `--threshold` or `--plugin-config`
//! overrides it, so the figures are what a gateway with the default semantic
//! plugin serves.

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
    /// Labelled pairs, one JSON object per line: {kind, split, same, a, b}.
    #[arg(long, default_value = "bench/semantic/pairs.jsonl")]
    pub pairs: PathBuf,
    /// `local` (a BERT sentence model from --model-dir) or `mock` (the
    /// `openai` embedder against the mock provider's hashed-word vectors).
    #[arg(long, default_value = "local")]
    pub embedder: String,
    /// Model files for the local embedder.
    #[arg(long, default_value = "target/models/all-minilm-l6-v2")]
    pub model_dir: PathBuf,
    /// Override the reference plugin's similarity threshold; unset: the
    /// plugin's shipped default.
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Other reference plugin config fields, as a JSON object (for example
    /// `{"guards": false}`); unset fields keep the plugin's defaults.
    #[arg(long)]
    pub plugin_config: Option<String>,
    /// Run only the pairs of one half: `tune` or `test`.
    #[arg(long, value_parser = ["tune", "test"])]
    pub split: Option<String>,
    /// Print every misclassified pair.
    #[arg(long)]
    pub verbose: bool,
}

/// One labelled pair.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pair {
    pub kind: String,
    /// `tune` or `test`; pairs without one are reported as `unsplit`.
    #[serde(default = "unsplit")]
    pub split: String,
    pub same: bool,
    pub a: String,
    pub b: String,
}

fn unsplit() -> String {
    "unsplit".to_owned()
}

/// Outcome counts over some pairs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub true_pos: u32,
    pub false_pos: u32,
    pub false_neg: u32,
    pub true_neg: u32,
}

impl Counts {
    fn add(&mut self, same: bool, hit: bool) {
        match (same, hit) {
            (true, true) => self.true_pos += 1,
            (false, true) => self.false_pos += 1,
            (true, false) => self.false_neg += 1,
            (false, false) => self.true_neg += 1,
        }
    }

    pub fn pairs(&self) -> u32 {
        self.true_pos + self.false_pos + self.false_neg + self.true_neg
    }

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

/// The outcome over a set: per split, and per (split, kind), in the order
/// they first appear in the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub by_split: Vec<(String, Counts)>,
    pub by_kind: Vec<(String, String, Counts)>,
}

impl Report {
    /// Counts one pair's outcome.
    pub fn add(&mut self, pair: &Pair, hit: bool) {
        match self.by_split.iter_mut().find(|(s, _)| *s == pair.split) {
            Some((_, c)) => c.add(pair.same, hit),
            None => {
                let mut c = Counts::default();
                c.add(pair.same, hit);
                self.by_split.push((pair.split.clone(), c));
            }
        }
        let entry = self
            .by_kind
            .iter_mut()
            .find(|(s, k, _)| *s == pair.split && *k == pair.kind);
        match entry {
            Some((_, _, c)) => c.add(pair.same, hit),
            None => {
                let mut c = Counts::default();
                c.add(pair.same, hit);
                self.by_kind
                    .push((pair.split.clone(), pair.kind.clone(), c));
            }
        }
    }

    /// All splits together.
    pub fn total(&self) -> Counts {
        let mut t = Counts::default();
        for (_, c) in &self.by_split {
            t.true_pos += c.true_pos;
            t.false_pos += c.false_pos;
            t.false_neg += c.false_neg;
            t.true_neg += c.true_neg;
        }
        t
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
    let plugin_config = plugin_config(args)?;
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

{plugin_config}"#,
    );
    Config::from_toml_str(&toml, &|_| None).context("eval config")
}

/// The `[plugins.semantic.config]` section: only explicit overrides, so
/// that otherwise the plugin's own defaults apply.
fn plugin_config(args: &SemanticEvalArgs) -> anyhow::Result<String> {
    let mut fields = match &args.plugin_config {
        Some(json) => match serde_json::from_str(json).context("--plugin-config")? {
            serde_json::Value::Object(fields) => fields,
            _ => bail!("--plugin-config: expected a JSON object"),
        },
        None => serde_json::Map::new(),
    };
    if let Some(t) = args.threshold {
        // As written ("0.9"), not as the nearest f64 to the f32.
        let t: f64 = t.to_string().parse()?;
        fields.insert("threshold".to_owned(), serde_json::json!(t));
    }
    if fields.is_empty() {
        return Ok(String::new());
    }
    let table = toml::to_string(&fields).context("--plugin-config as TOML")?;
    Ok(format!("[plugins.semantic.config]\n{table}"))
}

/// Entries the gateway's semantic index holds, over every namespace.
fn indexed(gw: &Gateway) -> i64 {
    gw.metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("sluice_semantic_index_entries "))
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
        report.add(pair, hit);
        if args.verbose && hit != pair.same {
            println!(
                "{} [{} {}] {:?} / {:?}",
                if hit { "false hit" } else { "missed" },
                pair.split,
                pair.kind,
                pair.a,
                pair.b
            );
        }
    }
    let _ = stop.send(());
    let _ = server.await;
    Ok(report)
}

/// `sluice eval …`
pub async fn run_cli(command: EvalCommand) -> anyhow::Result<ExitCode> {
    let EvalCommand::Semantic(args) = command;
    let mut pairs = load_pairs(&args.pairs)?;
    if let Some(split) = &args.split {
        pairs.retain(|p| p.split == *split);
    }
    let started = Instant::now();
    let report = evaluate(&args, &pairs).await?;
    let threshold = match (&args.threshold, &args.plugin_config) {
        (None, None) => "the semantic plugin's shipped config".to_owned(),
        _ => format!(
            "semantic plugin config overrides: {}",
            plugin_config(&args)?.replace('\n', " ")
        ),
    };
    println!(
        "semantic eval: {} pairs from {}, embedder {}, {threshold}",
        pairs.len(),
        args.pairs.display(),
        args.embedder,
    );
    print!("{}", render(&report));
    println!("  ({:.1} s)", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

/// The report as printed: per split, a line per kind, then the totals.
pub fn render(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let line = |out: &mut String, label: &str, c: &Counts| {
        let _ = writeln!(
            out,
            "  {label:<16} {:>4} pairs  {:>4} same  {:>4} hits  {:>3} false hits  {:>3} missed  precision {:.3}  recall {:.3}",
            c.pairs(),
            c.true_pos + c.false_neg,
            c.true_pos + c.false_pos,
            c.false_pos,
            c.false_neg,
            c.precision(),
            c.recall(),
        );
    };
    for (split, counts) in &report.by_split {
        let _ = writeln!(out, "{split}:");
        for (_, kind, c) in report.by_kind.iter().filter(|(s, _, _)| s == split) {
            line(&mut out, kind, c);
        }
        let _ = writeln!(
            out,
            "  {split} total: tp {} fp {} fn {} tn {}",
            counts.true_pos, counts.false_pos, counts.false_neg, counts.true_neg
        );
        line(&mut out, &format!("{split} overall"), counts);
    }
    if report.by_split.len() > 1 {
        line(&mut out, "all splits", &report.total());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(split: &str, kind: &str, same: bool) -> Pair {
        Pair {
            kind: kind.to_owned(),
            split: split.to_owned(),
            same,
            a: "a".to_owned(),
            b: "b".to_owned(),
        }
    }

    #[test]
    fn splits_and_kinds_are_counted_apart() {
        let mut r = Report::default();
        r.add(&pair("tune", "paraphrase", true), true);
        r.add(&pair("tune", "number", false), true);
        r.add(&pair("test", "paraphrase", true), false);
        r.add(&pair("test", "paraphrase", true), true);
        r.add(&pair("test", "number", false), false);
        let tune = r.by_split[0].1;
        let test = r.by_split[1].1;
        assert_eq!((tune.true_pos, tune.false_pos), (1, 1));
        assert_eq!(tune.precision(), 0.5);
        assert_eq!((test.true_pos, test.false_neg, test.true_neg), (1, 1, 1));
        assert_eq!((test.precision(), test.recall()), (1.0, 0.5));
        assert_eq!(r.total().pairs(), 5);
        assert_eq!(r.by_kind.len(), 4);
        let text = render(&r);
        assert!(text.contains("tune:") && text.contains("test:"), "{text}");
        assert!(text.contains("all splits"), "{text}");
    }

    #[test]
    fn the_plugin_keeps_its_defaults_unless_overridden() {
        let args = |threshold, plugin_config: Option<&str>| SemanticEvalArgs {
            pairs: PathBuf::new(),
            embedder: "mock".to_owned(),
            model_dir: PathBuf::new(),
            threshold,
            plugin_config: plugin_config.map(str::to_owned),
            split: None,
            verbose: false,
        };
        assert_eq!(plugin_config(&args(None, None)).unwrap(), "");
        let both = plugin_config(&args(Some(0.9), Some(r#"{"guards": false}"#))).unwrap();
        assert!(both.starts_with("[plugins.semantic.config]\n"), "{both}");
        assert!(
            both.contains("guards = false") && both.contains("threshold = 0.9"),
            "{both}"
        );
        assert!(plugin_config(&args(None, Some("[1]"))).is_err());
    }

    #[test]
    fn pairs_files_parse_with_and_without_a_split() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pairs.jsonl");
        std::fs::write(
            &path,
            concat!(
                r#"{"kind": "number", "split": "test", "same": false, "a": "1", "b": "2"}"#,
                "\n\n",
                r#"{"kind": "paraphrase", "same": true, "a": "x", "b": "y"}"#,
                "\n"
            ),
        )
        .unwrap();
        let pairs = load_pairs(&path).unwrap();
        assert_eq!(pairs[0].split, "test");
        assert_eq!(pairs[1].split, "unsplit");

        std::fs::write(
            &path,
            r#"{"kind": "x", "same": true, "a": "", "b": "", "sme": 1}"#,
        )
        .unwrap();
        assert!(load_pairs(&path).is_err(), "unknown fields are refused");
    }

    #[test]
    fn the_committed_set_is_split_and_large_enough() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/semantic/pairs.jsonl");
        let pairs = load_pairs(std::path::Path::new(path)).unwrap();
        assert!(pairs.len() >= 600, "{}", pairs.len());
        assert!(pairs.iter().all(|p| p.split == "tune" || p.split == "test"));
        let mut kinds: Vec<&str> = pairs.iter().map(|p| p.kind.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert!(kinds.len() >= 12, "{kinds:?}");
        let mut seen = std::collections::HashSet::new();
        for p in &pairs {
            assert!(
                seen.insert((&p.a, &p.b)),
                "duplicate pair {:?} / {:?}",
                p.a,
                p.b
            );
        }
    }
}
