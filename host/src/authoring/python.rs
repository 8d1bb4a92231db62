//! Python: `componentize-py` bundles CPython, the author's module and the
//! generated bindings into one component.

use std::path::Path;
use std::process::Command;

use super::builder::{program, run, wit_dir};
use super::{AuthoringError, Manifest};

const HINT: &str = "install it with `pip install componentize-py` (0.25 or newer), \
     or set SLUICE_COMPONENTIZE_PY";

/// The module holding the `Lifecycle` and kind classes: `app.py`.
const MODULE: &str = "app";

/// Builds a Python project to `out`.
pub(super) fn build(dir: &Path, manifest: &Manifest, out: &Path) -> Result<(), AuthoringError> {
    let app = dir.join(format!("{MODULE}.py"));
    if !app.is_file() {
        return Err(AuthoringError::Invalid(format!(
            "{} not found: a Python policy's entry module is {MODULE}.py",
            app.display()
        )));
    }
    let wit = wit_dir(dir)?;
    let mut cmd = Command::new(program("SLUICE_COMPONENTIZE_PY", "componentize-py"));
    cmd.current_dir(dir)
        .arg("--wit-path")
        .arg(&wit)
        .arg("--world")
        .arg(manifest.world()?)
        .arg("componentize")
        .arg("--python-path")
        .arg(dir)
        .arg("--output")
        .arg(out)
        .arg(MODULE);
    run(cmd, "componentize-py", HINT)
}
