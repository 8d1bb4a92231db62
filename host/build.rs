//! Builds the reference plugins (the separate cargo workspace in `plugins/`)
//! and embeds them in the `sluice` binary.
//!
//! The reference plugins are built for wasm32-unknown-unknown and turned into
//! components here with `wit-component`: they import nothing but the
//! sluice:policy interfaces, so an instance needs no WASI at all, which makes
//! the fresh instance every call gets several times cheaper. The hostile test
//! fixture is built for wasm32-wasip2, because it exists to probe what a
//! WASI-using guest can reach.
//!
//! Outputs:
//! - `$OUT_DIR/builtin_plugins.rs`: `BUILTIN_PLUGINS`, a list of
//!   `(slot, component bytes)`, included by `src/plugin/builtin.rs`;
//! - `SLUICE_TEST_PLUGINS_DIR`: the directory holding every built component,
//!   including test-only fixtures (`sluice_plugin_hostile.wasm`, and
//!   `sluice_plugin_hostile_fiberless.wasm`, the same fixture without WASI
//!   or state imports) that are not embedded.
//!
//! The plugins build into `<workspace>/target/plugins`, a target dir of
//! their own, so the nested cargo never waits on the lock of the build that
//! runs this script.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// Target of the reference plugins (componentized here).
const CORE_TARGET: &str = "wasm32-unknown-unknown";
/// Target of the test fixtures (components straight from rustc).
const WASI_TARGET: &str = "wasm32-wasip2";
/// Test fixtures: built, not embedded.
const FIXTURES: &[&str] = &["sluice_plugin_hostile"];
/// Test fixtures also built for [`CORE_TARGET`] with a feature and
/// componentized under another name: `(artifact, feature, component name)`.
const CORE_FIXTURES: &[(&str, &str, &str)] = &[(
    "sluice_plugin_hostile",
    "sluice-plugin-hostile/fiberless",
    "sluice_plugin_hostile_fiberless",
)];

/// Plugin slot → the crate's artifact name in the plugins workspace.
const BUILTIN: &[(&str, &str)] = &[
    ("cache_key", "sluice_plugin_cache_key"),
    ("semantic", "sluice_plugin_semantic"),
    ("throttle", "sluice_plugin_throttle"),
    ("retry", "sluice_plugin_retry"),
    ("route", "sluice_plugin_route"),
];

/// Settings of the outer build that must not leak into the nested one: flags
/// and wrappers meant for native host code (coverage, sanitizers, clippy's
/// workspace wrapper) break or slow a wasm build, and target / target-dir
/// overrides would send it to the wrong place or onto the outer build's lock.
/// The variable naming the rustup toolchain that builds the plugins.
const PLUGINS_TOOLCHAIN: &str = "SLUICE_PLUGINS_TOOLCHAIN";

const CLEARED_ENV: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_BUILD_RUSTDOCFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_BUILD_DIR",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
];

fn main() -> ExitCode {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("host/ sits in the workspace root")
        .to_path_buf();
    let plugins = root.join("plugins");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));

    watch_sources(&plugins, &root.join("wit"));

    // `SLUICE_PLUGINS_TOOLCHAIN` builds the plugins with another rustup
    // toolchain than the host's: cargo-fuzz builds the host with nightly,
    // which may lack the wasm32 targets the stable toolchain has.
    println!("cargo::rerun-if-env-changed={PLUGINS_TOOLCHAIN}");
    let toolchain = env::var_os(PLUGINS_TOOLCHAIN);
    let rustc = match &toolchain {
        Some(_) => "rustc".into(),
        None => env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()),
    };
    for target in [CORE_TARGET, WASI_TARGET] {
        if !target_installed(&rustc, toolchain.as_ref(), target) {
            println!(
                "cargo::error=the Rust target {target} is not installed; run `rustup target add {target}` (scripts/setup does)"
            );
            return ExitCode::SUCCESS;
        }
    }

    let target_dir = root.join("target").join("plugins");
    let packages: Vec<String> = BUILTIN
        .iter()
        .map(|(_, artifact)| artifact)
        .chain(CORE_FIXTURES.iter().map(|(artifact, _, _)| artifact))
        .map(|a| a.replace('_', "-"))
        .collect();
    let core_features: Vec<&str> = CORE_FIXTURES.iter().map(|(_, f, _)| *f).collect();
    let fixtures: Vec<String> = FIXTURES.iter().map(|a| a.replace('_', "-")).collect();
    for (target, packages, features) in [
        (CORE_TARGET, &packages, &core_features[..]),
        (WASI_TARGET, &fixtures, &[][..]),
    ] {
        if let Err(message) = build_plugins(&plugins, &target_dir, target, packages, features) {
            // Cargo prints this script's stderr, which already holds the
            // nested cargo's own output, when the script fails.
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    }

    // Every component, reference and fixture, ends up in one folder.
    let artifacts = target_dir.join("components");
    if let Err(e) = fs::create_dir_all(&artifacts) {
        eprintln!("error: creating {}: {e}", artifacts.display());
        return ExitCode::FAILURE;
    }
    let componentized = BUILTIN
        .iter()
        .map(|(_, artifact)| (*artifact, *artifact))
        .chain(
            CORE_FIXTURES
                .iter()
                .map(|(artifact, _, name)| (*artifact, *name)),
        );
    for (artifact, name) in componentized {
        let core = target_dir
            .join(CORE_TARGET)
            .join("release")
            .join(format!("{artifact}.wasm"));
        if let Err(e) = componentize(&core, &artifacts.join(format!("{name}.wasm"))) {
            eprintln!("error: turning {} into a component: {e}", core.display());
            return ExitCode::FAILURE;
        }
    }
    for artifact in FIXTURES {
        let built = target_dir
            .join(WASI_TARGET)
            .join("release")
            .join(format!("{artifact}.wasm"));
        if let Err(e) = fs::copy(&built, artifacts.join(format!("{artifact}.wasm"))) {
            eprintln!("error: copying {}: {e}", built.display());
            return ExitCode::FAILURE;
        }
    }
    let mut generated = String::from(
        "// @generated by host/build.rs from plugins/: the reference plugins.\n\n\
         /// The embedded reference plugins: `(slot, component bytes)`.\n\
         pub const BUILTIN_PLUGINS: &[(&str, &[u8])] = &[\n",
    );
    for (slot, artifact) in BUILTIN {
        let path = artifacts.join(format!("{artifact}.wasm"));
        if !path.is_file() {
            eprintln!(
                "error: the plugins build succeeded but did not produce {}",
                path.display()
            );
            return ExitCode::FAILURE;
        }
        let Some(path) = path.to_str() else {
            eprintln!("error: non-UTF-8 path {}", path.display());
            return ExitCode::FAILURE;
        };
        generated.push_str(&format!("    ({slot:?}, include_bytes!({path:?})),\n"));
    }
    generated.push_str("];\n");
    if let Err(e) = write_if_changed(&out_dir.join("builtin_plugins.rs"), &generated) {
        eprintln!("error: writing builtin_plugins.rs: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "cargo::rustc-env=SLUICE_TEST_PLUGINS_DIR={}",
        artifacts.display()
    );
    ExitCode::SUCCESS
}

/// Wraps a core module built with wit-bindgen (which embeds its WIT world)
/// into a component, writing only when the bytes change.
fn componentize(core: &Path, out: &Path) -> Result<(), String> {
    let module = fs::read(core).map_err(|e| e.to_string())?;
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .map_err(|e| format!("{e:#}"))?
        .validate(true)
        .encode()
        .map_err(|e| format!("{e:#}"))?;
    if fs::read(out).ok().as_deref() == Some(component.as_slice()) {
        return Ok(());
    }
    fs::write(out, component).map_err(|e| e.to_string())
}

/// Whether the standard library for `target` is installed for `rustc`
/// (of rustup's `toolchain`, when given).
fn target_installed(rustc: &OsString, toolchain: Option<&OsString>, target: &str) -> bool {
    let mut cmd = Command::new(rustc);
    if let Some(toolchain) = toolchain {
        cmd.env("RUSTUP_TOOLCHAIN", toolchain);
    }
    let output = cmd
        .args(["--print", "target-libdir", "--target", target])
        .output();
    match output {
        Ok(out) if out.status.success() => {
            let libdir = String::from_utf8_lossy(&out.stdout);
            Path::new(libdir.trim())
                .read_dir()
                .is_ok_and(|mut entries| entries.next().is_some())
        }
        _ => false,
    }
}

/// Runs `cargo build --release --target TARGET -p …` in `plugins/`.
fn build_plugins(
    plugins: &Path,
    target_dir: &Path,
    target: &str,
    packages: &[String],
    features: &[&str],
) -> Result<(), String> {
    let toolchain = env::var_os(PLUGINS_TOOLCHAIN);
    let cargo = match &toolchain {
        Some(_) => "cargo".into(),
        None => env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
    };
    let mut cmd = Command::new(cargo);
    if let Some(toolchain) = toolchain {
        cmd.env("RUSTUP_TOOLCHAIN", toolchain).env_remove("RUSTC");
    }
    cmd.current_dir(plugins)
        .args(["build", "--release", "--target", target])
        .arg("--target-dir")
        .arg(target_dir);
    for package in packages {
        cmd.args(["-p", package]);
    }
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    if plugins.join("Cargo.lock").is_file() {
        cmd.arg("--locked");
    }
    for var in CLEARED_ENV {
        cmd.env_remove(var);
    }
    // Profile overrides are meant for the host build; plugins/Cargo.toml has
    // its own tuned release profile.
    for (var, _) in env::vars_os() {
        if var.to_string_lossy().starts_with("CARGO_PROFILE_") {
            cmd.env_remove(var);
        }
    }
    // Cargo reads this script's stdout for instructions; the nested cargo's
    // output belongs on stderr, where a failure shows it.
    cmd.stdout(Stdio::from(io::stderr()))
        .stderr(Stdio::inherit());
    let status = cmd
        .status()
        .map_err(|e| format!("could not run cargo to build the plugins: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "building the reference plugins failed ({status}): \
             `cargo build --release --target {target}` in {}; its output is above",
            plugins.display()
        ))
    }
}

/// Reruns this script when a plugin source, manifest, lock file or the WIT
/// changes. Only source locations are watched (not whole directories), so a
/// stray `plugins/target` cannot trigger rebuilds.
fn watch_sources(plugins: &Path, wit: &Path) {
    let mut watched = vec![
        wit.to_path_buf(),
        plugins.join("Cargo.toml"),
        plugins.join("Cargo.lock"),
        plugins.join(".cargo"),
    ];
    let mut crates = Vec::new();
    find_crates(plugins, &mut crates);
    for dir in crates {
        for entry in ["Cargo.toml", "src", "wit", "build.rs"] {
            let path = dir.join(entry);
            if path.exists() {
                watched.push(path);
            }
        }
    }
    for path in watched {
        println!("cargo::rerun-if-changed={}", path.display());
    }
}

/// Directories below `dir` holding a crate (a Cargo.toml), skipping build
/// output and hidden directories.
fn find_crates(dir: &Path, crates: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !path.is_dir() || name == "target" || name.starts_with('.') {
            continue;
        }
        if path.join("Cargo.toml").is_file() {
            crates.push(path.clone());
        }
        find_crates(&path, crates);
    }
}

/// Writes `contents` unless the file already holds them, so an unchanged
/// plugin set does not recompile the host crate.
fn write_if_changed(path: &Path, contents: &str) -> io::Result<()> {
    if fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    fs::write(path, contents)
}
