//! `sluice plugin check` and `sluice plugin test`: an author's view of a
//! component before it goes anywhere near traffic.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::config::PluginLimits;
use crate::plugin::{EngineSettings, LoadOptions, PluginRuntime};
use crate::policy::{
    Attempt, AttemptOutcome, PolicyRequest, Route, SemanticCandidate, Slot, Usage,
};
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
    if let Err(e) = rt.load(&wasm, LoadOptions::new(slot)).await
        && matches!(e, crate::plugin::PluginError::Imports(_))
    {
        eprintln!("{}: not a usable plugin: {e}", file.display());
        return Ok(ExitCode::FAILURE);
    }
    if json_out {
        println!("{}", serde_json::to_string_pretty(&info)?);
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
        println!("  imports:");
        for i in &info.imports {
            println!("    {i}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds the policy view from either a raw API body or a view as JSON.
fn policy_request(input: &Value) -> anyhow::Result<PolicyRequest> {
    let is_view = input.get("route").is_some() || input.get("tenant").is_some();
    if is_view {
        let mut req: PolicyRequest =
            serde_json::from_value(input.clone()).context("input is not a policy request view")?;
        if req.id.is_empty() {
            req.id = "test".into();
        }
        return Ok(req);
    }
    let route = if input.get("system").is_some()
        || input
            .get("model")
            .and_then(Value::as_str)
            .is_some_and(|m| m.starts_with("claude"))
    {
        Route::AnthropicMessages
    } else if input.get("input").is_some() {
        Route::Embeddings
    } else {
        Route::Chat
    };
    let bytes = serde_json::to_vec(input)?;
    let parsed = crate::api::parse(route, &bytes).context("input body")?;
    Ok(PolicyRequest {
        id: "test".into(),
        route,
        provider: "test".into(),
        model: parsed.model,
        streaming: parsed.stream,
        max_tokens: parsed.max_tokens,
        estimated_prompt_tokens: parsed.estimated_prompt_tokens,
        temperature: parsed.temperature,
        messages: parsed.messages,
        params: parsed.params,
        tenant: "anonymous".into(),
        tier: "anonymous".into(),
        key_id: None,
        client_ip: "127.0.0.1".into(),
        headers: Vec::new(),
    })
}

/// Runs one call of `kind` under `limits` and prints the decision.
pub async fn test(
    file: &Path,
    kind: &str,
    input: &Path,
    config: Option<&Path>,
    limits: &PluginLimits,
) -> anyhow::Result<ExitCode> {
    let kind = Slot::parse(kind).with_context(|| {
        format!("unknown kind {kind:?}: expected cache-key, semantic, throttle or retry")
    })?;
    let wasm = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let input: Value = serde_json::from_slice(
        &std::fs::read(input).with_context(|| format!("reading {}", input.display()))?,
    )
    .context("input is not JSON")?;
    let config = match config {
        Some(p) => serde_json::from_slice(
            &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .context("config is not JSON")?,
        None => json!({}),
    };
    // The engine's memory ceiling must admit the requested cap.
    let limits = crate::versions::load::sandbox_limits(limits);
    let defaults = EngineSettings::default();
    let settings = EngineSettings {
        max_memory_bytes: defaults.max_memory_bytes.max(limits.memory_bytes),
        ..defaults
    };
    let rt = PluginRuntime::new(settings, State::memory(), None)?;
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
    let req = policy_request(&input)?;
    let decision = match kind {
        Slot::CacheKey => plugin.derive_cache_key(&req).await.map(|d| json!(d)),
        Slot::Throttle => match plugin.throttle_admit(&req).await {
            Ok(admission) => {
                let usage = Usage {
                    prompt_tokens: req.estimated_prompt_tokens,
                    completion_tokens: req.max_tokens.unwrap_or(0),
                    estimated_prompt_tokens: req.estimated_prompt_tokens,
                    cached: false,
                };
                plugin
                    .throttle_settle(&req, &usage)
                    .await
                    .map(|settle| json!({"admit": admission, "settle": settle}))
            }
            Err(e) => Err(e),
        },
        Slot::Semantic => match plugin.semantic_prepare(&req).await {
            Ok(probe) => {
                let candidate: Option<SemanticCandidate> = input
                    .get("candidate")
                    .map(|c| serde_json::from_value(c.clone()))
                    .transpose()
                    .context("candidate")?;
                match candidate {
                    Some(c) => plugin
                        .semantic_accept(&req, &c)
                        .await
                        .map(|accept| json!({"prepare": probe, "accept": accept})),
                    None => Ok(json!({"prepare": probe})),
                }
            }
            Err(e) => Err(e),
        },
        Slot::Retry => {
            let attempt: Attempt = match input.get("attempt") {
                Some(a) => serde_json::from_value(a.clone()).context("attempt")?,
                None => Attempt {
                    number: 1,
                    elapsed_ms: 0,
                    provider: req.provider.clone(),
                    model: req.model.clone(),
                    outcome: AttemptOutcome::Status {
                        code: 503,
                        retry_after_ms: None,
                    },
                },
            };
            plugin
                .retry_decide(&req, &attempt)
                .await
                .map(|v| json!({"attempt": attempt, "verdict": v}))
        }
    };
    match decision {
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

/// What to try when a call ran out of time.
fn hint(e: &dyn std::fmt::Display) -> &'static str {
    if e.to_string().contains("deadline") {
        " (interpreted components need more time per call: try --deadline-ms 500)"
    } else {
        ""
    }
}
