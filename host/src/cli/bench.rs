//! `sluice bench`: command-line flags mapped onto [`BenchOptions`], the run,
//! and the report on stdout (and optionally as JSON).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use sluice_loadgen::{BenchOptions, Interleave, Load, Report, Target};

/// Flags of `sluice bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// A target as NAME=URL (or a bare URL); repeat for each. Loopback only,
    /// e.g. sluice=http://127.0.0.1:8080/v1/chat/completions
    #[arg(long = "target", short = 't', required = true, value_parser = parse_target)]
    pub targets: Vec<Target>,
    /// Target the others are compared with (default: the first).
    #[arg(long)]
    pub baseline: Option<String>,
    /// An extra request header for one target, as TARGET=NAME:VALUE
    /// (repeat for more), e.g. portkey=x-portkey-provider:openai.
    #[arg(long = "header", short = 'H', value_parser = parse_target_header)]
    pub headers: Vec<(String, String, String)>,
    /// Send this target the same prompt every time even with --unique
    /// (cache hits), so hits and misses are measured in one run; repeat
    /// for more targets.
    #[arg(long)]
    pub repeat: Vec<String>,
    /// Another `model` for one target's requests, as TARGET=MODEL (e.g. a
    /// model the gateway translates to another provider's API).
    #[arg(long, value_parser = parse_target_model)]
    pub model_for: Vec<(String, String)>,
    /// Open loop: requests per second, on a fixed schedule (the default, 500).
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<f64>,
    /// Closed loop: requests in flight, each sent when the last completes.
    #[arg(long, short = 'c')]
    pub concurrency: Option<usize>,
    /// Open loop: most requests in flight (connections) at once.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Measured time of the whole run, after warm-up (e.g. 20s, 500ms, 2m).
    /// Default 10s unless --requests is given.
    #[arg(long, short = 'd', value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Measured requests of the whole run, over all targets.
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,
    /// Unreported warm-up at the start.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Length of each target's turn when alternating in rounds.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub round: Duration,
    /// Alternate targets request by request instead of in rounds.
    #[arg(long)]
    pub per_request: bool,
    /// The `model` of each chat completion.
    #[arg(long, default_value = "gpt-4o-mini")]
    pub model: String,
    /// The user message.
    #[arg(long)]
    pub prompt: Option<String>,
    /// `max_tokens` of each request (0: leave it out).
    #[arg(long, default_value_t = 16)]
    pub max_tokens: u32,
    /// Ask for streamed responses and report time to first byte too.
    #[arg(long)]
    pub stream: bool,
    /// A different prompt on every request (cache misses).
    #[arg(long)]
    pub unique: bool,
    /// A different system prompt on every request (each its own
    /// semantic-cache namespace, and a cache miss).
    #[arg(long)]
    pub unique_system: bool,
    /// Send a bodyless GET instead of a chat completion (to probe e.g.
    /// `/healthz` while other load runs).
    #[arg(long)]
    pub get: bool,
    /// Bearer token sent with every request.
    #[arg(long, env = "SLUICE_BENCH_TOKEN", hide_env_values = true)]
    pub bearer: Option<String>,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Also write the report as JSON to this file ("-": stdout, instead of the table).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl BenchArgs {
    /// The options these flags describe; fails when a `--header` or
    /// `--repeat` names no target.
    pub fn options(&self) -> Result<BenchOptions, String> {
        let defaults = BenchOptions::default();
        let mut targets = self.targets.clone();
        let position = |targets: &[Target], name: &str| {
            targets
                .iter()
                .position(|t| t.name == name)
                .ok_or_else(|| format!("{name:?} is not the name of a --target"))
        };
        for (target, name, value) in &self.headers {
            let at = position(&targets, target)?;
            targets[at].headers.push((name.clone(), value.clone()));
        }
        for target in &self.repeat {
            let at = position(&targets, target)?;
            targets[at].repeat = true;
        }
        for (target, model) in &self.model_for {
            let at = position(&targets, target)?;
            targets[at].model = Some(model.clone());
        }
        let load = match (self.rate, self.concurrency) {
            (_, Some(c)) => Load::Concurrency(c),
            (Some(r), None) => Load::Rate(r),
            (None, None) => defaults.load,
        };
        let duration = match (self.duration, self.requests) {
            (None, Some(_)) => None,
            (None, None) => defaults.duration,
            (d, _) => d,
        };
        Ok(BenchOptions {
            targets,
            baseline: self.baseline.clone(),
            load,
            connections: self.connections,
            duration,
            requests: self.requests,
            warmup: self.warmup,
            interleave: if self.per_request {
                Interleave::Requests
            } else {
                Interleave::Rounds(self.round)
            },
            model: self.model.clone(),
            prompt: self.prompt.clone().unwrap_or(defaults.prompt),
            max_tokens: (self.max_tokens > 0).then_some(self.max_tokens),
            stream: self.stream,
            unique: self.unique,
            unique_system: self.unique_system,
            get: self.get,
            bearer: self.bearer.clone(),
            timeout: self.timeout,
        })
    }
}

/// Runs `sluice bench`: prints the report; fails when a target never
/// answered successfully (its figures would mean nothing).
pub async fn run_cli(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let opts = args.options().map_err(anyhow::Error::msg)?;
    // The run blocks its own thread for its whole length.
    let report = tokio::task::spawn_blocking(move || sluice_loadgen::run(opts))
        .await
        .context("load generator")??;
    match args.json.as_deref() {
        Some(p) if p.as_os_str() == "-" => println!("{}", report.to_json()),
        Some(p) => {
            println!("{report}");
            std::fs::write(p, report.to_json() + "\n")
                .with_context(|| format!("writing {}", p.display()))?;
        }
        None => println!("{report}"),
    }
    Ok(exit_code(&report))
}

fn exit_code(report: &Report) -> ExitCode {
    let silent: Vec<_> = report
        .targets
        .iter()
        .filter(|t| t.ok == 0)
        .map(|t| t.name.as_str())
        .collect();
    if silent.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "sluice bench: no successful responses from {}",
            silent.join(", ")
        );
        ExitCode::FAILURE
    }
}

/// Parses `TARGET=NAME:VALUE` (the value trimmed).
fn parse_target_header(s: &str) -> Result<(String, String, String), String> {
    let (target, header) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected TARGET=NAME:VALUE"))?;
    let (name, value) = header
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected TARGET=NAME:VALUE"))?;
    if target.is_empty() || name.trim().is_empty() {
        return Err(format!("{s:?}: expected TARGET=NAME:VALUE"));
    }
    Ok((target.into(), name.trim().into(), value.trim().into()))
}

fn parse_target_model(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((target, model)) if !target.is_empty() && !model.trim().is_empty() => {
            Ok((target.into(), model.trim().into()))
        }
        _ => Err(format!("{s:?}: expected TARGET=MODEL")),
    }
}

fn parse_target(s: &str) -> Result<Target, String> {
    s.parse()
        .map_err(|e: sluice_loadgen::BenchError| e.to_string())
}

/// Parses `250ms`, `2s`, `1.5s`, `2m`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => s.split_at(at),
        None => (s, "s"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (try 500ms, 2s, 1m)"))?;
    let secs = match unit {
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("not a valid duration: {s:?}"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn opts(argv: &[&str]) -> BenchOptions {
        let mut full = vec!["bench"];
        full.extend_from_slice(argv);
        Cmd::try_parse_from(full).unwrap().args.options().unwrap()
    }

    #[test]
    fn durations_parse_in_common_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn flags_map_onto_options() {
        let o = opts(&["-t", "a=http://127.0.0.1:1", "-t", "http://127.0.0.1:2"]);
        assert_eq!(o.targets[1].name, "127.0.0.1:2");
        assert_eq!(o.load, Load::Rate(500.0));
        assert_eq!(o.duration, Some(Duration::from_secs(10)));
        assert_eq!(o.interleave, Interleave::Rounds(Duration::from_secs(1)));

        let o = opts(&[
            "-t",
            "http://127.0.0.1:1",
            "-c",
            "8",
            "-n",
            "1000",
            "--per-request",
            "--max-tokens",
            "0",
        ]);
        assert_eq!(o.load, Load::Concurrency(8));
        assert_eq!(
            (o.duration, o.requests),
            (None, Some(1000)),
            "a count alone bounds the run"
        );
        assert_eq!(o.interleave, Interleave::Requests);
        assert_eq!(o.max_tokens, None);
    }

    #[test]
    fn headers_and_repeat_go_to_the_target_they_name() {
        let o = opts(&[
            "-t",
            "a=http://127.0.0.1:1",
            "-t",
            "b=http://127.0.0.1:2",
            "--unique",
            "-H",
            "b=x-portkey-custom-host: http://127.0.0.1:3/v1",
            "--repeat",
            "a",
            "--model-for",
            "b=claude-3-5-haiku",
        ]);
        assert!(o.targets[0].headers.is_empty() && o.targets[0].repeat);
        assert_eq!(o.targets[0].model, None);
        assert_eq!(o.targets[1].model.as_deref(), Some("claude-3-5-haiku"));
        assert!(parse_target_model("b=").is_err());
        assert_eq!(
            o.targets[1].headers,
            [(
                "x-portkey-custom-host".into(),
                "http://127.0.0.1:3/v1".into()
            )]
        );
        assert!(!o.targets[1].repeat);

        let argv = ["bench", "-t", "a=http://127.0.0.1:1", "--repeat", "c"];
        let err = Cmd::try_parse_from(argv)
            .unwrap()
            .args
            .options()
            .unwrap_err();
        assert!(err.contains("\"c\""), "{err}");
        assert!(parse_target_header("a=novalue").is_err());
    }
}
