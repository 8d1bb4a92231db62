//! `sluice plugin build`: one entry point over the per-language builders.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{AuthoringError, Lang, Manifest, POLICY_WIT, io_err};
use crate::policy::Slot;

/// A built project.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// The component: `<dir>/build/<name>.wasm`.
    pub wasm: PathBuf,
    pub kind: Slot,
    pub lang: Lang,
}

/// Builds the project in `dir` to a component, replacing the output
/// atomically (temp file and rename). Tool output goes to this process's
/// stderr so an author sees compiler errors as they are.
pub fn build(dir: &Path) -> Result<BuildOutput, AuthoringError> {
    // Tools run inside the project; absolute paths keep every argument valid there.
    let dir = &std::path::absolute(dir).map_err(io_err(dir))?;
    let manifest = Manifest::load(dir)?;
    let kind = manifest.kind()?;
    let out = manifest.output(dir);
    let build_dir = dir.join("build");
    std::fs::create_dir_all(&build_dir).map_err(io_err(&build_dir))?;
    // Tools write a temp file beside the output, renamed over it once
    // complete: a gateway watching the output never reads half a component.
    let tmp = build_dir.join(format!(
        ".{}.{}.tmp.wasm",
        manifest.name,
        std::process::id()
    ));
    let built = match manifest.lang {
        Lang::Rust => super::rust::build(dir, &manifest, &tmp),
        Lang::C => super::c::build(dir, &manifest, &tmp),
        Lang::Python => super::python::build(dir, &manifest, &tmp),
        Lang::Js => super::js::build(dir, &manifest, &tmp),
    }
    .and_then(|()| std::fs::rename(&tmp, &out).map_err(io_err(&out)));
    if let Err(e) = built {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(BuildOutput {
        wasm: out,
        kind,
        lang: manifest.lang,
    })
}

/// The WIT the project builds against: its vendored `wit/policy.wit`, else
/// the contract compiled into this binary.
pub(super) fn wit_text(dir: &Path) -> Result<String, AuthoringError> {
    let vendored = dir.join("wit").join("policy.wit");
    if vendored.is_file() {
        std::fs::read_to_string(&vendored).map_err(io_err(&vendored))
    } else {
        Ok(POLICY_WIT.to_owned())
    }
}

/// A directory holding the WIT, for tools that read it from disk: the
/// project's `wit/`, else `build/wit/` written from [`POLICY_WIT`].
pub(super) fn wit_dir(dir: &Path) -> Result<PathBuf, AuthoringError> {
    let vendored = dir.join("wit");
    if vendored.join("policy.wit").is_file() {
        return Ok(vendored);
    }
    let generated = dir.join("build").join("wit");
    std::fs::create_dir_all(&generated).map_err(io_err(&generated))?;
    let file = generated.join("policy.wit");
    std::fs::write(&file, POLICY_WIT).map_err(io_err(&file))?;
    Ok(generated)
}

/// The program to run for `tool`: `$<env>` when set, else `default`.
pub(super) fn program(env: &str, default: &str) -> std::ffi::OsString {
    std::env::var_os(env).unwrap_or_else(|| default.into())
}

/// Runs `cmd` with its output on stderr; `hint` says how to install the
/// tool when it is missing.
pub(super) fn run(mut cmd: Command, tool: &str, hint: &str) -> Result<(), AuthoringError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .stderr(Stdio::inherit());
    let status = cmd.status().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            AuthoringError::MissingTool {
                tool: tool.to_owned(),
                hint: hint.to_owned(),
            }
        } else {
            AuthoringError::ToolFailed {
                tool: tool.to_owned(),
                status: e.to_string(),
                output: String::new(),
            }
        }
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(AuthoringError::ToolFailed {
            tool: tool.to_owned(),
            status: status.to_string(),
            output: "; its output is above".to_owned(),
        })
    }
}

/// Files in `dir` (not recursive) whose extension is `ext`, sorted.
pub(super) fn files_with_ext(dir: &Path, ext: &str) -> Result<Vec<PathBuf>, AuthoringError> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(io_err(dir))?;
    for entry in entries {
        let path = entry.map_err(io_err(dir))?.path();
        if path.is_file() && path.extension() == Some(OsStr::new(ext)) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
