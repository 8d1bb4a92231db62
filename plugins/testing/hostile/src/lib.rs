//! A test fixture, never embedded in `sluice`: one component exporting every
//! plugin kind (the WIT's `gateway` world) that misbehaves as its init config
//! says, so the host's sandbox tests have something real to contain.
//!
//! Config: `{"mode": "<mode>"}` plus, for some modes, extra fields:
//! - `ok`: benign answers (bypass, no probe, reject candidates, charge no
//!   buckets, no corrections, stop).
//! - `loop`: every call spins forever (epoch deadline).
//! - `memory`: every call allocates without bound (memory cap).
//! - `recursion`: every call recurses without bound (the engine's wasm
//!   stack limit: a `call stack exhausted` trap).
//! - `panic`: every call panics (a trap).
//! - `huge-return`: every call returns about 64 MiB (a string, or a list of
//!   a million buckets); `bytes` overrides the size.
//! - `long-report`: every call reports a string of `bytes` bytes (default
//!   16 MiB) in its normal answer (see below), e.g. a rejection message or
//!   a fallback model name too long for the host to take.
//! - `open-file`: tries to read `/etc/passwd`, list `/` and read the
//!   environment, and reports what happened in a normal answer (see below).
//! - `read-other-namespace`: for each key in `keys` (default: a set of
//!   escape attempts such as `../plugin:throttle/x`), calls `state.get`, then
//!   `state.set(key, "hostile")`, then charges a one-request bucket with that
//!   key, and reports every result.
//! - `trap-in-init`: `lifecycle.init` traps.
//! - `reject-init`: `lifecycle.init` returns an error.
//! - `stdout-flood`: every call writes `bytes` (default 16 MiB) to stdout
//!   and to stderr, then answers like `ok`.
//! - `slow`: every call computes for `ms` milliseconds (default
//!   100) by the host's monotonic clock, then answers like `ok`: within a
//!   deadline longer than that, a slow but well-behaved plugin.
//! - `allocate`: every call allocates and touches `bytes` (default 16 MiB)
//!   once, then answers like `ok`: within a large enough memory cap, a
//!   hungry but well-behaved plugin.
//!
//! Reports travel in the string each kind can return: the cache-key bypass
//! reason, the semantic probe text, the throttle rejection message (status
//! 429), the key of the single settle bucket, and the retry fallback model.
//!
//! The mode is read from the host's `config.get` on every call, so it holds
//! whether or not the host calls `init` on each instance.
//!
//! With the `fiberless` feature (host/build.rs builds it so for
//! wasm32-unknown-unknown) the component imports neither WASI nor the
//! state-backed interfaces, so the host runs it without a fiber: the same
//! misbehaviours against that path. `read-other-namespace` then only reports
//! that it was left out.

use std::fmt::Write as _;
use std::hint::black_box;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use sluice_plugin_common::bindings::sluice::policy::{clock, config};
#[cfg(not(feature = "fiberless"))]
use sluice_plugin_common::bindings::sluice::policy::{limits, state};
use sluice_plugin_common::types::{Bucket, Request, Shape, Unit, WindowSpec};

use crate::exports::sluice::policy::cache_key::{Decision, Guest as CacheKey};
use crate::exports::sluice::policy::lifecycle::Guest as Lifecycle;
use crate::exports::sluice::policy::retry::{Attempt, Fallback, Guest as Retry, Verdict};
use crate::exports::sluice::policy::route::{Candidate as RouteCandidate, Choice, Guest as Route};
use crate::exports::sluice::policy::semantic::{Candidate, Guest as Semantic, Probe};
use crate::exports::sluice::policy::throttle::{Admission, Guest as Throttle, Rejection, Usage};

wit_bindgen::generate!({
    world: "gateway",
    path: "../../../wit",
    with: {
        "sluice:policy/types@0.1.0": sluice_plugin_common::bindings::sluice::policy::types,
        "sluice:policy/state@0.1.0": sluice_plugin_common::bindings::sluice::policy::state,
        "sluice:policy/limits@0.1.0": sluice_plugin_common::bindings::sluice::policy::limits,
        "sluice:policy/config@0.1.0": sluice_plugin_common::bindings::sluice::policy::config,
        "sluice:policy/log@0.1.0": sluice_plugin_common::bindings::sluice::policy::log,
        "sluice:policy/metrics@0.1.0": sluice_plugin_common::bindings::sluice::policy::metrics,
        "sluice:policy/clock@0.1.0": sluice_plugin_common::bindings::sluice::policy::clock,
    },
});

const MODES: &[&str] = &[
    "ok",
    "loop",
    "memory",
    "recursion",
    "panic",
    "huge-return",
    "long-report",
    "open-file",
    "read-other-namespace",
    "trap-in-init",
    "reject-init",
    "stdout-flood",
    "slow",
    "allocate",
];

const DEFAULT_KEYS: &[&str] = &[
    "../plugin:throttle/x",
    "../../x",
    "/x",
    "plugin:throttle/x",
    "{plugin:throttle}/x",
    "x\u{0}../y",
    "*",
    "",
];

struct Settings {
    mode: String,
    bytes: usize,
    ms: u64,
    keys: Vec<String>,
}

fn settings(json: &str) -> Result<Settings, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("config: {e}"))?;
    let mode = value
        .get("mode")
        .and_then(|m| m.as_str())
        .unwrap_or("ok")
        .to_owned();
    if !MODES.contains(&mode.as_str()) {
        return Err(format!("config field `mode`: unknown mode `{mode}`"));
    }
    let default_bytes = if mode == "huge-return" {
        64 << 20
    } else {
        16 << 20
    };
    let bytes = value
        .get("bytes")
        .and_then(|b| b.as_u64())
        .map_or(default_bytes, |b| b as usize);
    let keys = match value.get("keys").and_then(|k| k.as_array()) {
        Some(keys) => keys
            .iter()
            .filter_map(|k| k.as_str().map(String::from))
            .collect(),
        None => DEFAULT_KEYS.iter().map(|k| k.to_string()).collect(),
    };
    let ms = value.get("ms").and_then(|m| m.as_u64()).unwrap_or(100);
    Ok(Settings {
        mode,
        bytes,
        ms,
        keys,
    })
}

/// What a call should answer after misbehaving (if it returns at all).
enum Answer {
    Benign,
    Report(String),
    Huge(usize),
}

fn misbehave() -> Answer {
    let Ok(s) = settings(&config::get()) else {
        return Answer::Benign;
    };
    match s.mode.as_str() {
        "loop" => spin(),
        "memory" => hoard(),
        "recursion" => Answer::Report(recurse().to_string()),
        "panic" => panic!("hostile plugin panicked on purpose"),
        "huge-return" => Answer::Huge(s.bytes),
        "long-report" => Answer::Report("r".repeat(s.bytes)),
        "open-file" => Answer::Report(open_file()),
        "read-other-namespace" => Answer::Report(read_other_namespace(&s.keys)),
        "stdout-flood" => {
            flood(s.bytes);
            Answer::Benign
        }
        "slow" => {
            compute_for(s.ms);
            Answer::Benign
        }
        "allocate" => {
            let mut block = vec![0u8; s.bytes];
            for page in block.chunks_mut(4096) {
                page[0] = 1;
            }
            black_box(block);
            Answer::Benign
        }
        _ => Answer::Benign,
    }
}

fn spin() -> ! {
    let mut i: u64 = 0;
    loop {
        i = black_box(i.wrapping_add(1));
    }
}

fn compute_for(ms: u64) {
    let until = clock::monotonic_ns().saturating_add(ms.saturating_mul(1_000_000));
    let mut i: u64 = 0;
    while clock::monotonic_ns() < until {
        i = black_box(i.wrapping_add(1));
    }
}

fn hoard() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        chunk[0] = 1;
        hoard.push(black_box(chunk));
    }
}

static DEPTH: AtomicU64 = AtomicU64::new(0);

/// Recurses until the wasm call stack is exhausted (the engine's stack
/// limit), not the shadow stack in linear memory: nothing here lives in
/// memory, so the frames are the engine's alone. The global counter and the
/// work after the call keep the optimiser from turning this into a loop.
#[inline(never)]
fn recurse() -> u64 {
    let depth = DEPTH.fetch_add(1, Ordering::Relaxed);
    if depth == u64::MAX {
        return 0;
    }
    recurse()
        .wrapping_add(DEPTH.load(Ordering::Relaxed))
        .wrapping_mul(depth | 1)
}

fn open_file() -> String {
    let file = match std::fs::read("/etc/passwd") {
        Ok(bytes) => format!("read {} bytes", bytes.len()),
        Err(e) => format!("error: {e}"),
    };
    let dir = match std::fs::read_dir("/") {
        Ok(entries) => format!("{} entries", entries.count()),
        Err(e) => format!("error: {e}"),
    };
    let env = std::env::vars().count();
    format!("open-file: /etc/passwd: {file}; read_dir /: {dir}; env vars: {env}")
}

#[cfg(feature = "fiberless")]
fn read_other_namespace(_keys: &[String]) -> String {
    "read-other-namespace: not in the fiberless build".into()
}

#[cfg(not(feature = "fiberless"))]
fn read_other_namespace(keys: &[String]) -> String {
    let mut report = String::from("read-other-namespace:");
    for key in keys {
        let got = match state::get(key) {
            Ok(Some(value)) => format!("Some({:?})", String::from_utf8_lossy(&value)),
            Ok(None) => "None".to_string(),
            Err(e) => format!("Err({e:?})"),
        };
        let set = state::set(key, b"hostile", Some(60_000));
        let charge = limits::charge(&[Bucket {
            key: key.clone(),
            shape: Shape::Window(WindowSpec {
                limit: 1_000_000,
                window_ms: 60_000,
            }),
            cost: 1,
            unit: Unit::Requests,
        }])
        .map(|c| c.admitted);
        let _ = write!(
            report,
            " key {key:?}: get={got} set={set:?} charge={charge:?};"
        );
    }
    report
}

fn flood(bytes: usize) {
    let chunk = vec![b'#'; 64 << 10];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        // Errors (a closed pipe) are fine: the point is the attempt.
        let _ = std::io::stdout().write_all(&chunk[..n]);
        let _ = std::io::stderr().write_all(&chunk[..n]);
        left -= n;
    }
    let _ = std::io::stdout().flush();
}

fn huge_string(bytes: usize) -> String {
    "x".repeat(bytes)
}

fn huge_buckets(bytes: usize) -> Vec<Bucket> {
    // About 64 bytes each once lifted by the host.
    (0..bytes / 64)
        .map(|_| Bucket {
            key: String::new(),
            shape: Shape::Window(WindowSpec {
                limit: 1,
                window_ms: 1,
            }),
            cost: 0,
            unit: Unit::Requests,
        })
        .collect()
}

struct Plugin;

impl Lifecycle for Plugin {
    fn init(config: String) -> Result<(), String> {
        let s = settings(&config)?;
        match s.mode.as_str() {
            "trap-in-init" => trap(),
            "reject-init" => Err("hostile plugin rejects its config on purpose".into()),
            _ => Ok(()),
        }
    }
}

fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

impl CacheKey for Plugin {
    fn derive(_req: Request) -> Decision {
        match misbehave() {
            Answer::Benign => Decision::Bypass("hostile: ok".into()),
            Answer::Report(report) => Decision::Bypass(report),
            Answer::Huge(bytes) => Decision::Bypass(huge_string(bytes)),
        }
    }
}

impl Semantic for Plugin {
    fn prepare(_req: Request) -> Option<Probe> {
        let text = match misbehave() {
            Answer::Benign => return None,
            Answer::Report(report) => report,
            Answer::Huge(bytes) => huge_string(bytes),
        };
        Some(Probe {
            text,
            namespace: "hostile".into(),
            threshold: 1.0,
        })
    }

    fn accept(_req: Request, _candidate: Candidate) -> bool {
        misbehave();
        false
    }
}

impl Throttle for Plugin {
    fn admit(_req: Request) -> Admission {
        match misbehave() {
            Answer::Benign => Admission::Charge(Vec::new()),
            Answer::Report(message) => Admission::Reject(Rejection {
                status: 429,
                message,
                retry_after_ms: None,
            }),
            Answer::Huge(bytes) => Admission::Charge(huge_buckets(bytes)),
        }
    }

    fn settle(_req: Request, _usage: Usage) -> Vec<Bucket> {
        match misbehave() {
            Answer::Benign => Vec::new(),
            Answer::Report(key) => vec![Bucket {
                key,
                shape: Shape::Window(WindowSpec {
                    limit: 1,
                    window_ms: 60_000,
                }),
                cost: 0,
                unit: Unit::Tokens,
            }],
            Answer::Huge(bytes) => huge_buckets(bytes),
        }
    }
}

impl Retry for Plugin {
    fn decide(_req: Request, _attempt: Attempt) -> Verdict {
        let model = match misbehave() {
            Answer::Benign => return Verdict::Stop,
            Answer::Report(report) => report,
            Answer::Huge(bytes) => huge_string(bytes),
        };
        Verdict::Fallback(Fallback {
            model,
            provider: None,
            after_ms: 0,
        })
    }
}

impl Route for Plugin {
    fn order(_req: Request, candidates: Vec<RouteCandidate>) -> Vec<Choice> {
        let provider = match misbehave() {
            Answer::Benign => {
                return candidates
                    .into_iter()
                    .map(|c| Choice {
                        provider: c.provider,
                        model: c.model,
                    })
                    .collect();
            }
            // Not a candidate: the host must refuse the answer.
            Answer::Report(report) => report,
            Answer::Huge(bytes) => huge_string(bytes),
        };
        vec![Choice {
            provider,
            model: "hostile".into(),
        }]
    }
}

#[cfg(target_arch = "wasm32")]
export!(Plugin);
