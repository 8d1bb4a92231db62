//! `sluice plugin new`: a project that builds as generated.

use std::path::{Path, PathBuf};

use super::project::validate_name;
use super::{AuthoringError, Lang, MANIFEST_FILE, Manifest, POLICY_WIT, io_err, templates};
use crate::policy::Slot;

/// Writes a new `lang` project for a `kind` plugin called `name` into `dir`,
/// which must not exist or be empty. Returns the files written.
pub fn scaffold(
    dir: &Path,
    name: &str,
    kind: Slot,
    lang: Lang,
) -> Result<Vec<PathBuf>, AuthoringError> {
    validate_name(name)?;
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(io_err(dir))?;
        if entries.next().is_some() {
            return Err(AuthoringError::Invalid(format!(
                "{} already exists and is not empty",
                dir.display()
            )));
        }
    }
    let manifest = Manifest {
        name: name.to_owned(),
        kind: kind.interface().to_owned(),
        lang,
    };
    let manifest_text = toml::to_string(&manifest)
        .map_err(|e| AuthoringError::Invalid(format!("manifest: {e}")))?;
    let mut files: Vec<(String, String)> = vec![
        (
            MANIFEST_FILE.to_owned(),
            format!("# Built by `sluice plugin build` to build/{name}.wasm.\n{manifest_text}"),
        ),
        ("wit/policy.wit".to_owned(), POLICY_WIT.to_owned()),
        (
            ".gitignore".to_owned(),
            "/build/\n/target/\n/node_modules/\n".to_owned(),
        ),
    ];
    files.extend(templates::files(name, kind, lang));
    let mut written = Vec::with_capacity(files.len());
    for (rel, contents) in files {
        let path = dir.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        std::fs::write(&path, contents).map_err(io_err(&path))?;
        written.push(path);
    }
    Ok(written)
}
