//! Rust: a cdylib crate built by cargo for wasm32-wasip2, which emits a
//! component directly.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::builder::{program, run};
use super::{AuthoringError, Manifest, io_err};

const TARGET: &str = "wasm32-wasip2";

const HINT: &str = "install Rust with rustup, then `rustup target add wasm32-wasip2`";

/// Settings of an enclosing cargo run meant for native code, which would
/// break or misdirect a wasm build.
const CLEARED_ENV: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
];

/// Builds a Rust project to `out`. Honours `CARGO_TARGET_DIR`, so several
/// projects can share one build of their dependencies.
pub(super) fn build(dir: &Path, manifest: &Manifest, out: &Path) -> Result<(), AuthoringError> {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("target"));
    let mut cmd = Command::new(program("CARGO", "cargo"));
    cmd.current_dir(dir)
        .args(["build", "--release", "--target", TARGET])
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    for var in CLEARED_ENV {
        cmd.env_remove(var);
    }
    run(cmd, "cargo", HINT)?;
    let artifact = target_dir
        .join(TARGET)
        .join("release")
        .join(format!("{}.wasm", manifest.name.replace('-', "_")));
    std::fs::copy(&artifact, out).map_err(io_err(&artifact))?;
    Ok(())
}
