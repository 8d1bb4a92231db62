//! `sluice plugin bindings`: the generated bindings written where editors
//! (and the project's own tests) find them, without building a component.
//!
//! - Python: componentize-py writes the `wit_world` package into
//!   `bindings/` (the scaffold's `test_app.py` puts it on `sys.path`).
//! - C: the wit-bindgen-c header and source into `build/bindings/`, as a
//!   build does, and their helper functions as plain C into
//!   `build/bindings/native/` (the scaffold's `make test` links them).
//! - Rust: nothing to write: `wit_bindgen::generate!` expands in the crate,
//!   which rust-analyzer resolves.
//! - JavaScript: nothing to write: the exports are plain objects and the
//!   WIT types are described in the scaffold's header comment.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::builder::{program, run, wit_dir, wit_text};
use super::{AuthoringError, Lang, Manifest, io_err};

/// Writes the project's bindings; returns where, or None (with the reason)
/// for languages that need none.
pub fn bindings(dir: &Path) -> Result<Result<PathBuf, &'static str>, AuthoringError> {
    let dir = &std::path::absolute(dir).map_err(io_err(dir))?;
    let manifest = Manifest::load(dir)?;
    match manifest.lang {
        Lang::Python => {
            let out = dir.join("bindings");
            if out.exists() {
                std::fs::remove_dir_all(&out).map_err(io_err(&out))?;
            }
            let wit = wit_dir(dir)?;
            let mut cmd = Command::new(program("SLUICE_COMPONENTIZE_PY", "componentize-py"));
            cmd.current_dir(dir)
                .arg("--wit-path")
                .arg(&wit)
                .arg("--world")
                .arg(manifest.world()?)
                .arg("bindings")
                .arg(&out);
            run(
                cmd,
                "componentize-py",
                "install it with `pip install componentize-py` (0.25 or newer)",
            )?;
            Ok(Ok(out))
        }
        Lang::C => {
            let out = dir.join("build").join("bindings");
            super::c::bindings(&wit_text(dir)?, &manifest.world()?, &out)?;
            Ok(Ok(out))
        }
        Lang::Rust => Ok(Err(
            "a Rust policy needs no bindings on disk: wit_bindgen::generate! expands them in the crate, and rust-analyzer resolves them",
        )),
        Lang::Js => Ok(Err(
            "a JavaScript policy needs no bindings: its exports are plain objects (see the WIT type notes at the top of app.js)",
        )),
    }
}
