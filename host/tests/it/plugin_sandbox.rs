//! Hostile plugins against the sandbox: each misbehaviour fails its own call
//! within the deadline, the host lives on, and the next call works.
//!
//! The hostile fixture (plugins/testing/hostile) is built from source by
//! host/build.rs; its behaviour is chosen by its config. It comes in two
//! builds: a WASI one that imports state (its calls may wait on host
//! imports, under a timer) and a `fiberless` one that imports nothing that
//! may wait (as the reference plugins do); the misbehaviours run against both.

use std::time::{Duration, Instant};

use serde_json::json;
use sluice::plugin::{
    CallError, EngineSettings, Init, Limits, LoadOptions, PluginError, PluginRuntime,
};
use sluice::policy::{Attempt, AttemptOutcome, CacheDecision, PolicyRequest, Slot};
use sluice::state::State;

const HOSTILE: &str = "sluice_plugin_hostile";
const HOSTILE_FIBERLESS: &str = "sluice_plugin_hostile_fiberless";

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("SLUICE_TEST_PLUGINS_DIR")).join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn hostile_wasm() -> Vec<u8> {
    fixture(HOSTILE)
}

fn runtime(state: State) -> (PluginRuntime, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = EngineSettings {
        cache_dir: Some(dir.path().to_path_buf()),
        ..EngineSettings::default()
    };
    (
        PluginRuntime::new(settings, state, None).expect("runtime"),
        dir,
    )
}

fn options(mode: &str) -> LoadOptions {
    LoadOptions {
        slot: Slot::CacheKey,
        require: vec![Slot::CacheKey],
        config: json!({ "mode": mode }),
        limits: Limits {
            memory_bytes: 16 << 20,
            deadline: Duration::from_millis(50),
            ..Limits::default()
        },
        preinit: true,
    }
}

fn request() -> PolicyRequest {
    PolicyRequest {
        id: "r1".into(),
        model: "gpt-4o-mini".into(),
        tenant: "acme".into(),
        ..PolicyRequest::default()
    }
}

/// Loads `mode` in both builds of the fixture, runs one call, checks the
/// error, then shows the host still serves: a benign plugin answers and so
/// does a second fresh instance.
async fn misbehaves(mode: &str, check: impl Fn(&CallError) -> bool) {
    for build in [HOSTILE, HOSTILE_FIBERLESS] {
        misbehaves_in(build, mode, &check).await;
    }
}

async fn misbehaves_in(build: &str, mode: &str, check: &impl Fn(&CallError) -> bool) {
    let (rt, _dir) = runtime(State::memory());
    let wasm = fixture(build);
    let mut opts = options(mode);
    if mode == "memory" {
        // The cap must stop it, not the clock: on a starved machine
        // touching 16 MiB can take longer than 50 ms of CPU.
        opts.limits.deadline = Duration::from_millis(1500);
    }
    let plugin = rt.load(&wasm, opts).await.expect("loads");
    let imports_wasi = plugin.info().imports.iter().any(|i| i.starts_with("wasi:"));
    assert_eq!(
        imports_wasi,
        build == HOSTILE,
        "{build}: {:?}",
        plugin.info().imports
    );
    let mode = format!("{build}: {mode}");
    let mode = mode.as_str();
    let started = Instant::now();
    let err = plugin
        .derive_cache_key(&request())
        .await
        .expect_err("the call must fail");
    let took = started.elapsed();
    assert!(check(&err), "{mode}: unexpected error {err:?}");
    assert!(
        took < Duration::from_secs(2),
        "{mode}: the call took {took:?}; the deadline is 50 ms"
    );
    // The same plugin fails the same way again: fresh instance, no poisoning.
    let again = plugin
        .derive_cache_key(&request())
        .await
        .expect_err("fails again");
    assert!(check(&again), "{mode}: second call: {again:?}");
    // A well-behaved plugin on the same runtime is unaffected.
    let benign = rt.load(&wasm, options("ok")).await.expect("loads");
    let d = benign
        .derive_cache_key(&request())
        .await
        .expect("benign call works");
    assert_eq!(
        d,
        CacheDecision::Bypass {
            reason: "hostile: ok".into()
        }
    );
    assert_eq!(plugin.stats().snapshot().failures, 2);
}

#[tokio::test]
async fn an_infinite_loop_hits_the_deadline() {
    misbehaves("loop", |e| matches!(e, CallError::Deadline(_))).await;
}

#[tokio::test]
async fn unbounded_memory_growth_is_out_of_memory() {
    misbehaves("memory", |e| *e == CallError::OutOfMemory).await;
}

#[tokio::test]
async fn deep_recursion_traps() {
    // Rust's shadow stack lives in linear memory: it runs off its end (an
    // out-of-bounds trap) before or after the native stack limit; either way
    // the call traps.
    misbehaves("recursion", |e| matches!(e, CallError::Trap(_))).await;
}

#[tokio::test]
async fn a_panic_traps() {
    misbehaves("panic", |e| matches!(e, CallError::Trap(_))).await;
}

#[tokio::test]
async fn a_huge_return_value_is_refused() {
    // 64 MiB cannot even be built under a 16 MiB cap.
    misbehaves("huge-return", |e| *e == CallError::OutOfMemory).await;
}

#[tokio::test]
async fn a_large_but_fitting_return_value_is_refused_as_an_invalid_answer() {
    let (rt, _dir) = runtime(State::memory());
    let mut opts = options("huge-return");
    // 1 MiB fits the 16 MiB cap, so the guest returns it; the host refuses it.
    opts.config = json!({"mode": "huge-return", "bytes": 1 << 20});
    let plugin = rt.load(&hostile_wasm(), opts).await.expect("loads");
    let err = plugin
        .derive_cache_key(&request())
        .await
        .expect_err("refused");
    assert!(matches!(err, CallError::BadAnswer(_)), "{err:?}");
}

/// Every verdict is size-checked: a retry plugin's fallback model travels
/// upstream, into logs and metric labels, so an oversized name (the tester
/// sent 8 MB upstream) is refused as an invalid answer, and so is a
/// throttle's oversized rejection message.
#[tokio::test]
async fn oversized_fallback_models_and_reject_messages_are_refused() {
    let (rt, _dir) = runtime(State::memory());
    let mut opts = options("long-report");
    opts.config = json!({"mode": "long-report", "bytes": 4096});
    opts.slot = Slot::Retry;
    let plugin = rt.load(&hostile_wasm(), opts).await.expect("loads");
    let attempt = Attempt {
        number: 1,
        elapsed_ms: 5,
        provider: "openai".into(),
        model: "gpt-4o".into(),
        outcome: AttemptOutcome::Status {
            code: 503,
            retry_after_ms: None,
        },
    };
    let err = plugin
        .retry_decide(&request(), &attempt)
        .await
        .expect_err("a 4 KiB model name is refused");
    assert!(
        matches!(&err, CallError::BadAnswer(m) if m.contains("fallback model")),
        "{err:?}"
    );

    let mut opts = options("long-report");
    opts.config = json!({"mode": "long-report", "bytes": 100 << 10});
    opts.slot = Slot::Throttle;
    let plugin = rt.load(&hostile_wasm(), opts).await.expect("loads");
    let err = plugin
        .throttle_admit(&request())
        .await
        .expect_err("a 100 KiB rejection message is refused");
    assert!(
        matches!(&err, CallError::BadAnswer(m) if m.contains("reject message")),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_filesystem_and_environment_are_not_reachable() {
    let (rt, _dir) = runtime(State::memory());
    let plugin = rt
        .load(&hostile_wasm(), options("open-file"))
        .await
        .expect("loads");
    let CacheDecision::Bypass { reason } =
        plugin.derive_cache_key(&request()).await.expect("answers")
    else {
        panic!("expected a report")
    };
    assert!(reason.contains("/etc/passwd: error"), "{reason}");
    assert!(reason.contains("read_dir /: error"), "{reason}");
    assert!(reason.contains("env vars: 0"), "{reason}");
}

#[tokio::test]
async fn another_plugins_state_namespace_is_not_reachable() {
    let state = State::memory();
    // The throttle plugin's secret, written where the throttle would.
    for key in ["x", "../plugin:throttle/x", "plugin:throttle/x"] {
        state
            .set("plugin:throttle", key, b"secret", None)
            .await
            .expect("set");
    }
    let (rt, _dir) = runtime(state.clone());
    let plugin = rt
        .load(&hostile_wasm(), options("read-other-namespace"))
        .await
        .expect("loads");
    let CacheDecision::Bypass { reason } =
        plugin.derive_cache_key(&request()).await.expect("answers")
    else {
        panic!("expected a report")
    };
    assert!(!reason.contains("secret"), "{reason}");
    // And nothing it wrote landed in the throttle's namespace.
    for key in ["x", "../plugin:throttle/x", "plugin:throttle/x"] {
        assert_eq!(
            state
                .get("plugin:throttle", key)
                .await
                .expect("get")
                .as_deref(),
            Some(&b"secret"[..])
        );
    }
}

#[tokio::test]
async fn flooding_stdout_does_not_hurt_the_host() {
    let (rt, _dir) = runtime(State::memory());
    let mut opts = options("stdout-flood");
    // 256 KiB to each of stdout and stderr: 16 times the capture cap. The
    // deadline is generous: this is about the cap, not speed, and a debug
    // build on a busy machine writes slowly.
    opts.config = json!({"mode": "stdout-flood", "bytes": 256 << 10});
    opts.limits.deadline = Duration::from_secs(2);
    let plugin = rt.load(&hostile_wasm(), opts).await.expect("loads");
    plugin
        .derive_cache_key(&request())
        .await
        .expect("output beyond the capture cap is dropped, not fatal");
}

#[tokio::test]
async fn a_trap_in_init_refuses_the_plugin() {
    let (rt, _dir) = runtime(State::memory());
    let err = rt
        .load(&hostile_wasm(), options("trap-in-init"))
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, PluginError::InitFailed(_)), "{err}");
}

#[tokio::test]
async fn a_rejected_config_names_the_reason() {
    let (rt, _dir) = runtime(State::memory());
    let err = rt
        .load(&hostile_wasm(), options("reject-init"))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&err, PluginError::InitRejected(m) if m.contains("rejects its config")),
        "{err}"
    );
}

#[tokio::test]
async fn not_a_plugin_is_refused_with_a_reason() {
    let (rt, _dir) = runtime(State::memory());
    let garbage = rt.inspect(b"definitely not wasm").expect_err("refused");
    assert!(matches!(garbage, PluginError::NotWasm), "{garbage}");
    let core = rt.inspect(b"\0asm\x01\0\0\0").expect_err("refused");
    assert!(matches!(core, PluginError::CoreModule), "{core}");
}

/// A component for `world` of an inline WIT package, with a dummy core module.
fn component_for(wit: &str, world: &str) -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    let pkg = resolve.push_str("test.wit", wit).expect("wit parses");
    let world = resolve.select_world(&[pkg], Some(world)).expect("world");
    let module =
        wit_component::dummy_module(&resolve, world, wit_parser::ManglingAndAbi::Standard32);
    componentize(module, &resolve, world)
}

/// `module`, a core module for `world`, made a component.
fn componentize(
    mut module: Vec<u8>,
    resolve: &wit_parser::Resolve,
    world: wit_parser::WorldId,
) -> Vec<u8> {
    use wit_component::{ComponentEncoder, StringEncoding, embed_component_metadata};
    embed_component_metadata(&mut module, resolve, world, StringEncoding::UTF8).expect("embed");
    ComponentEncoder::default()
        .module(&module)
        .expect("module")
        .validate(true)
        .encode()
        .expect("encode")
}

/// An export whose signature is not the host's is refused at its call, on
/// every call: the host checks an export's types on an image's first call
/// and trusts them afterwards only for the types that passed.
#[tokio::test]
async fn an_export_with_other_types_is_refused_on_every_call() {
    let (rt, _dir) = runtime(State::memory());
    let mistyped = component_for(
        "package sluice:policy@0.1.0;
         interface cache-key { derive: func(n: u32) -> u32; }
         world w { export cache-key; }",
        "w",
    );
    let plugin = rt
        .load(&mistyped, LoadOptions::new(Slot::CacheKey))
        .await
        .expect("its exports are found by name; their types are checked at the call");
    for call in 1..=2 {
        let err = plugin
            .derive_cache_key(&PolicyRequest::default())
            .await
            .expect_err("a mistyped export is never called");
        assert!(
            matches!(&err, CallError::Trap(msg) if msg.contains("type mismatch")),
            "call {call}: {err}"
        );
    }
}

#[tokio::test]
async fn a_component_for_another_world_is_refused() {
    let (rt, _dir) = runtime(State::memory());
    let other = component_for(
        "package acme:other; world w { export run: func() -> u32; }",
        "w",
    );
    let err = rt.inspect(&other).expect_err("refused");
    assert!(
        matches!(&err, PluginError::NoPolicyExports { found } if found.contains("run")),
        "{err}"
    );
}

#[tokio::test]
async fn a_component_built_against_another_contract_version_is_refused() {
    let (rt, _dir) = runtime(State::memory());
    let other = component_for(
        "package sluice:policy@0.2.0;
         interface retry { decide: func(n: u32) -> u32; }
         world w { export retry; }",
        "w",
    );
    let err = rt.inspect(&other).expect_err("refused");
    assert!(
        matches!(&err, PluginError::WrongVersion { found } if found.contains("0.2.0")),
        "{err}"
    );
}

#[tokio::test]
async fn an_import_the_host_lacks_is_refused_at_load() {
    let (rt, _dir) = runtime(State::memory());
    let needy = component_for(
        "package sluice:policy@0.1.0;
         interface types { type x = u32; }
         interface retry { decide: func(n: u32) -> u32; }
         world w { import acme:secrets/vault@1.0.0; export retry; }
         package acme:secrets@1.0.0 { interface vault { read: func() -> string; } }",
        "w",
    );
    let err = rt
        .load(&needy, LoadOptions::new(Slot::Retry))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&err, PluginError::Imports(m) if m.contains("acme:secrets/vault")),
        "{err}"
    );
}

#[tokio::test]
async fn compiled_code_is_cached_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = || EngineSettings {
        cache_dir: Some(dir.path().to_path_buf()),
        ..EngineSettings::default()
    };
    let wasm = hostile_wasm();
    let first = PluginRuntime::new(settings(), State::memory(), None)
        .expect("runtime")
        .inspect(&wasm)
        .expect("inspects");
    assert!(!first.from_cache);
    // A new runtime (a restart) finds the artifact.
    let second = PluginRuntime::new(settings(), State::memory(), None)
        .expect("runtime")
        .inspect(&wasm)
        .expect("inspects");
    assert!(second.from_cache);
    assert_eq!(first.hash, second.hash);
    assert_eq!(second.kinds, Slot::ALL.to_vec());
}

/// A cache-key plugin written by hand: one core module whose `init` stores
/// "ok" and, when `reads_clock`, first calls the `clock` import; `derive`
/// is never called. Built against the real contract (`wit/`).
fn hand_written_plugin(reads_clock: bool) -> Vec<u8> {
    let clock_call = if reads_clock { "call $now drop" } else { "" };
    let wat = format!(
        r#"(module
          (import "sluice:policy/clock@0.1.0" "monotonic-ns" (func $now (result i64)))
          (memory (export "memory") 1)
          (global $heap (mut i32) (i32.const 1024))
          (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
            (local $at i32)
            (local.set $at (i32.and
              (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
              (i32.sub (i32.const 0) (local.get 2))))
            (global.set $heap (i32.add (local.get $at) (local.get 3)))
            (local.get $at))
          (func (export "sluice:policy/lifecycle@0.1.0#init") (param i32 i32) (result i32)
            {clock_call}
            (i32.store8 (i32.const 16) (i32.const 0))
            (i32.const 16))
          (func (export "sluice:policy/cache-key@0.1.0#derive") (param i32) (result i32)
            unreachable))"#
    );
    let module = wat::parse_str(&wat).expect("wat");
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _) = resolve
        .push_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../wit"))
        .expect("wit parses");
    let world = resolve
        .select_world(&[pkg], Some("cache-key-plugin"))
        .expect("world");
    componentize(module, &resolve, world)
}

/// `init` runs once after the load and instances start from its snapshot
/// only when that is the same as running it on each: it called no import,
/// and the component is one core module. Otherwise it still runs on every
/// fresh instance (the hostile fixtures: several core modules).
#[tokio::test]
async fn init_runs_once_only_when_it_is_a_pure_function_of_the_config() {
    let (rt, dir) = runtime(State::memory());
    let load = |wasm: Vec<u8>| {
        let rt = rt.clone();
        async move {
            let mut opts = LoadOptions::new(Slot::CacheKey);
            opts.limits.deadline = Duration::from_secs(5);
            rt.load(&wasm, opts).await.expect("loads")
        }
    };
    let pure = load(hand_written_plugin(false)).await;
    assert_eq!(pure.preinitialised().await, Init::Done);
    let snapshots = || {
        std::fs::read_dir(dir.path())
            .expect("cache dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".preinit.wasm"))
            })
            .count()
    };
    assert_eq!(snapshots(), 1, "the snapshot is cached for the next start");

    // Asked not to, it keeps `init` on every instance.
    let mut opts = LoadOptions::new(Slot::CacheKey);
    opts.preinit = false;
    let kept = rt
        .load(&hand_written_plugin(false), opts)
        .await
        .expect("loads");
    assert_eq!(kept.init(), Init::EachInstance);

    let impure = load(hand_written_plugin(true)).await;
    assert_eq!(impure.preinitialised().await, Init::EachInstance);
    assert_eq!(snapshots(), 1);

    for build in [HOSTILE, HOSTILE_FIBERLESS] {
        let p = rt
            .load(&fixture(build), options("ok"))
            .await
            .expect("loads");
        assert_eq!(p.preinitialised().await, Init::EachInstance, "{build}");
    }
}
