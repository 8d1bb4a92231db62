//! `sluice plugin check` and `sluice plugin test`: an author's view of a
//! component before it goes anywhere near traffic.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::input::{self, TestInput};
use crate::config::PluginLimits;
use crate::plugin::{
    Access, CallError, EngineSettings, Init, LoadOptions, Plugin, PluginRuntime, import_access,
};
use crate::policy::{Admission, ChargeResult, Slot};
use crate::state::State;

fn runtime() -> anyhow::Result<PluginRuntime> {
    PluginRuntime::new(EngineSettings::default(), State::memory(), None)
}

/// Prints what a component is; exits non-zero with a one-line reason when it
/// is not a usable plugin.
pub async fn check(file: &Path, json_out: bool) -> anyhow::Result<ExitCode> {
    let wasm = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let rt = runtime()?;
    let info = match rt.inspect(&wasm) {
        Ok(info) => info,
        Err(e) => {
            eprintln!("{}: not a usable plugin: {e}", file.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    // Linking is part of "usable": refuse imports the host cannot satisfy.
    let slot = info.kinds.first().copied().unwrap_or(Slot::Throttle);
    // With an empty config: `init` may refuse it, which says nothing of
    // whether the component is usable.
    let init = match rt.load(&wasm, LoadOptions::new(slot)).await {
        Ok(plugin) => Some(plugin.preinitialised().await),
        Err(e @ crate::plugin::PluginError::Imports(_)) => {
            eprintln!("{}: not a usable plugin: {e}", file.display());
            return Ok(ExitCode::FAILURE);
        }
        Err(_) => None,
    };
    let sandbox: Vec<(&str, Access, &str)> = info
        .imports
        .iter()
        .map(|i| {
            let (access, what) = import_access(i);
            (i.as_str(), access, what)
        })
        .collect();
    if json_out {
        let mut v = serde_json::to_value(&info)?;
        v["init"] = serde_json::to_value(init)?;
        v["sandbox"] = sandbox
            .iter()
            .map(|(i, access, what)| json!({"import": i, "access": access, "what": what}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let kinds: Vec<_> = info.kinds.iter().map(|k| k.interface()).collect();
        println!("{}: ok", file.display());
        println!("  kinds:    {}", kinds.join(", "));
        println!("  size:     {} bytes", info.size_bytes);
        println!("  blake3:   {}", info.hash);
        println!(
            "  compile:  {:.1} ms{}",
            info.compile_time.as_secs_f64() * 1000.0,
            if info.from_cache { " (from cache)" } else { "" }
        );
        if let Some(init) = init {
            println!("  init:     {}", describe_init(init));
        }
        println!(
            "  imports declared by the component, and what the sandbox grants for each \
             (a language runtime declares more than it may use):"
        );
        for (label, wanted) in [
            ("granted", Access::Granted),
            ("captured", Access::Captured),
            ("denied", Access::Denied),
        ] {
            let group: Vec<_> = sandbox.iter().filter(|(_, a, _)| *a == wanted).collect();
            if group.is_empty() {
                continue;
            }
            println!("    {label}:");
            for (import, _, what) in group {
                println!("      {import}  ({what})");
            }
        }
        println!(
            "  the sandbox denies sockets, files, environment variables and arguments \
             whatever the component declares"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// How a loaded plugin's instances get their config, for `plugin check`.
fn describe_init(init: Init) -> &'static str {
    match init {
        Init::None => "none (exports no lifecycle interface)",
        Init::Pending => "pending (runs on every instance until the snapshot is linked)",
        Init::Done => "once at load; every instance starts from the memory it left",
        Init::EachInstance => {
            "on every instance (init calls an import, or the component holds several core modules)"
        }
    }
}

/// What `sluice plugin test` runs: one input, or a scenario of several.
pub struct TestArgs<'a> {
    pub file: &'a Path,
    pub kind: &'a str,
    /// One request (see [`super::input`]); None: the kind's sample.
    pub input: Option<&'a Path>,
    /// A list of requests run in order against the same buckets.
    pub scenario: Option<&'a Path>,
    pub config: Option<&'a Path>,
    pub limits: &'a PluginLimits,
}

fn read_json(path: &Path, what: &str) -> anyhow::Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{what} {} is not JSON", path.display()))
}

/// Runs one call of `kind` (or a scenario) under `limits` and prints the
/// decisions; what the guest printed goes to stderr, each line prefixed
/// `guest: `.
pub async fn test(args: TestArgs<'_>) -> anyhow::Result<ExitCode> {
    let file = args.file;
    let kind = Slot::parse(args.kind).with_context(|| {
        format!(
            "unknown kind {:?}: expected cache-key, semantic, throttle or retry",
            args.kind
        )
    })?;
    let wasm = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let scenario = match args.scenario {
        Some(path) => Some(input::parse_scenario(read_json(path, "scenario")?)?),
        None => None,
    };
    let single = match (args.input, &scenario) {
        (Some(path), _) => input::parse_input(read_json(path, "input")?)?,
        (None, _) => sample_input(kind)?,
    };
    let config = match args.config {
        Some(p) => read_json(p, "config")?,
        None => json!({}),
    };
    // The engine's memory ceiling must admit the requested cap.
    let limits = crate::versions::load::sandbox_limits(args.limits);
    let defaults = EngineSettings::default();
    let settings = EngineSettings {
        max_memory_bytes: defaults.max_memory_bytes.max(limits.memory_bytes),
        ..defaults
    };
    let state = State::memory();
    let rt = PluginRuntime::new(settings, state.clone(), None)?;
    let mut opts = LoadOptions::new(kind);
    opts.require = vec![kind];
    opts.config = config;
    opts.limits = limits;
    let plugin = match rt.load(&wasm, opts).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: not a usable plugin: {e}{}", file.display(), hint(&e));
            return Ok(ExitCode::FAILURE);
        }
    };
    plugin.collect_output();
    if let Some(requests) = scenario {
        return run_scenario(file, &plugin, &state, kind, &requests).await;
    }
    let decision = decide(&plugin, kind, &single).await;
    print_guest_output(&plugin);
    match decision? {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: the call failed: {e}{}", file.display(), hint(&e));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// What the guest printed since the last call, on stderr.
fn print_guest_output(plugin: &Plugin) {
    for line in plugin.take_output() {
        eprintln!("guest: {line}");
    }
}

/// The calls of one `kind` for one input, as one JSON value.
async fn decide(
    plugin: &Plugin,
    kind: Slot,
    input: &TestInput,
) -> anyhow::Result<Result<Value, CallError>> {
    let req = input.request()?;
    Ok(match kind {
        Slot::CacheKey => plugin.derive_cache_key(&req).await.map(|d| json!(d)),
        Slot::Throttle => match plugin.throttle_admit(&req).await {
            Ok(admission) => plugin
                .throttle_settle(&req, &input.usage(&req))
                .await
                .map(|settle| json!({"admit": admission, "settle": settle})),
            Err(e) => Err(e),
        },
        Slot::Semantic => match plugin.semantic_prepare(&req).await {
            Ok(probe) => match input.candidate() {
                Some(c) => plugin
                    .semantic_accept(&req, &c)
                    .await
                    .map(|accept| json!({"prepare": probe, "accept": accept})),
                None => Ok(json!({"prepare": probe})),
            },
            Err(e) => Err(e),
        },
        Slot::Retry => {
            let attempt = input.attempt(&req)?;
            plugin
                .retry_decide(&req, &attempt)
                .await
                .map(|v| json!({"attempt": attempt, "verdict": v}))
        }
        Slot::Route => {
            let candidates = input.route_candidates(&req);
            plugin
                .route_order(&req, &candidates)
                .await
                .map(|order| json!({"order": order}))
        }
    })
}

/// Runs `requests` in order. A throttle's buckets are charged against
/// in-memory buckets as the gateway would (admit, then settle), so a
/// refusal shows as `429`; other kinds print each decision.
async fn run_scenario(
    file: &Path,
    plugin: &Plugin,
    state: &State,
    kind: Slot,
    requests: &[TestInput],
) -> anyhow::Result<ExitCode> {
    // The namespace the gateway charges a throttle's buckets in.
    let ns = format!("plugin:{}", plugin.slot());
    let mut failed = false;
    for (i, input) in requests.iter().enumerate() {
        let n = i + 1;
        let req = input.request()?;
        let line = if kind == Slot::Throttle {
            match plugin.throttle_admit(&req).await {
                Err(e) => Err(e),
                Ok(Admission::Reject {
                    status, message, ..
                }) => Ok(format!("{status} rejected by the policy: {message}")),
                Ok(Admission::Charge { buckets }) => {
                    let charged = if buckets.is_empty() {
                        ChargeResult {
                            admitted: true,
                            ..ChargeResult::default()
                        }
                    } else {
                        state.charge(&ns, &buckets).await?
                    };
                    let left = charged
                        .buckets
                        .iter()
                        .map(|b| format!("{} {}/{} left", b.key, b.remaining, b.limit))
                        .collect::<Vec<_>>()
                        .join(", ");
                    if charged.admitted {
                        match plugin.throttle_settle(&req, &input.usage(&req)).await {
                            Ok(corrections) => {
                                if !corrections.is_empty() {
                                    state.settle(&ns, &corrections).await?;
                                }
                                Ok(format!("admit ({left})"))
                            }
                            Err(e) => Err(e),
                        }
                    } else {
                        Ok(format!(
                            "429 retry-after {:.1}s ({left})",
                            charged.retry_after_ms as f64 / 1000.0
                        ))
                    }
                }
            }
        } else {
            decide(plugin, kind, input).await?.map(|v| v.to_string())
        };
        print_guest_output(plugin);
        match line {
            Ok(line) => println!("#{n} tenant={} {line}", req.tenant),
            Err(e) => {
                failed = true;
                println!("#{n} tenant={} call failed: {e}", req.tenant);
                eprintln!("{}: request {n} failed: {e}{}", file.display(), hint(&e));
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// What to try when a call ran out of time.
fn hint(e: &dyn std::fmt::Display) -> &'static str {
    if e.to_string().contains("deadline") {
        " (interpreted components need more time per call: try --deadline-ms 500)"
    } else {
        ""
    }
}

/// The input `plugin test` uses without `--input`: the sample `plugin new`
/// writes.
#[cfg(feature = "authoring")]
fn sample_input(kind: Slot) -> anyhow::Result<input::TestInput> {
    input::parse_input(serde_json::from_str(&crate::authoring::sample_request(
        kind,
    ))?)
}

/// Without the authoring feature there is no built-in sample.
#[cfg(not(feature = "authoring"))]
fn sample_input(_kind: Slot) -> anyhow::Result<input::TestInput> {
    anyhow::bail!(
        "give the request with --input: this build has no sample requests (it lacks the `authoring` feature)"
    )
}
