//! JavaScript: componentize-js (StarlingMonkey, a SpiderMonkey build for
//! WASI) bundles the engine and the author's module into one component.
//!
//! The tool is `$SLUICE_COMPONENTIZE_JS`, else the project's own
//! `node_modules/.bin/componentize-js` (after `npm install`), else
//! `componentize-js` on PATH. The gateway has no HTTP capability to give, so
//! the `http` and `fetch-event` features are left out of the component.

use std::path::Path;
use std::process::Command;

use super::builder::{run, wit_dir};
use super::{AuthoringError, Manifest};

const HINT: &str = "install it with `npm install -g @bytecodealliance/componentize-js@0.23` \
     (or `npm install` in the project), or set SLUICE_COMPONENTIZE_JS";

/// The entry module exporting `lifecycle` and the kind's interface.
const MODULE: &str = "app.js";

/// Builds a JavaScript project to `out`.
pub(super) fn build(dir: &Path, manifest: &Manifest, out: &Path) -> Result<(), AuthoringError> {
    let app = dir.join(MODULE);
    if !app.is_file() {
        return Err(AuthoringError::Invalid(format!(
            "{} not found: a JavaScript policy's entry module is {MODULE}",
            app.display()
        )));
    }
    let local = dir
        .join("node_modules")
        .join(".bin")
        .join("componentize-js");
    let tool = std::env::var_os("SLUICE_COMPONENTIZE_JS").unwrap_or_else(|| {
        if local.is_file() {
            local.into_os_string()
        } else {
            "componentize-js".into()
        }
    });
    let mut cmd = Command::new(tool);
    cmd.current_dir(dir)
        .arg(&app)
        .arg("--wit")
        .arg(wit_dir(dir)?)
        .arg("--world-name")
        .arg(manifest.world()?)
        .args(["--disable", "http", "fetch-event"])
        .arg("--out")
        .arg(out);
    run(cmd, "componentize-js", HINT)
}
