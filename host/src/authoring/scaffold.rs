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
            "/build/\n/target/\n/node_modules/\n/bindings/\n__pycache__/\n".to_owned(),
        ),
    ];
    files.extend(templates::files(name, kind, lang));
    files.push(("samples/request.json".to_owned(), sample_request(kind)));
    if kind == Slot::Throttle {
        files.push(("samples/scenario.json".to_owned(), SCENARIO.to_owned()));
    }
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

/// A `sluice plugin test` input for `kind`, written by `sluice plugin new`
/// as `samples/request.json` (docs/plugin-test.md has every field).
pub fn sample_request(kind: Slot) -> String {
    let extra = match kind {
        Slot::Throttle => {
            ",\n  \"usage\": {\"prompt_tokens\": 12, \"completion_tokens\": 40, \"cached\": false}"
        }
        Slot::Retry => {
            ",\n  \"attempt\": {\"number\": 1, \"outcome\": \"status\", \"code\": 503, \"retry_after_ms\": null}"
        }
        Slot::Semantic => {
            ",\n  \"candidate\": {\"score\": 0.95, \"prompt\": \"hello there\", \"age_seconds\": 30}"
        }
        Slot::Route => {
            ",\n  \"estimated_prompt_tokens\": 12,\n  \"candidates\": [\n    {\"provider\": \"openai\", \"model\": \"gpt-4o-mini\", \"kind\": \"openai\", \"price\": {\"input_per_mtok\": 0.15, \"output_per_mtok\": 0.6}},\n    {\"provider\": \"azure\", \"model\": \"gpt-4o-mini\", \"kind\": \"azure\", \"health\": {\"circuit\": \"open\"}, \"price\": {\"input_per_mtok\": 0.1, \"output_per_mtok\": 0.4}}\n  ]"
        }
        Slot::CacheKey => "",
    };
    format!(
        "{{\n  \"route\": \"chat\",\n  \"tenant\": \"acme\",\n  \"tier\": \"free\",\n  \"model\": \"gpt-4o-mini\",\n  \"max_tokens\": 64,\n  \"messages\": [{{\"role\": \"user\", \"text\": \"hello\"}}]{extra}\n}}\n"
    )
}

/// A `sluice plugin test --scenario` input for a throttle: four requests
/// of one tenant, then one of another.
const SCENARIO: &str = r#"[
  {"tenant": "acme", "tier": "free"},
  {"tenant": "acme", "tier": "free"},
  {"tenant": "acme", "tier": "free"},
  {"tenant": "acme", "tier": "free"},
  {"tenant": "globex", "tier": "free"}
]
"#;
