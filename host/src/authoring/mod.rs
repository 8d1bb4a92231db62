//! Policy authoring: `sluice plugin new` scaffolds a policy project in Rust,
//! Python, C or JavaScript, and `sluice plugin build` turns one into a
//! component the gateway loads.
//!
//! A project is a directory with a `sluice-plugin.toml` ([`Manifest`]) naming
//! the plugin, its kind and its language, and the WIT contract vendored in
//! `wit/policy.wit` (a project without one builds against the WIT compiled
//! into this binary, [`POLICY_WIT`]). Every language builds to
//! `build/<name>.wasm`:
//! - Rust: `cargo build --target wasm32-wasip2 --release`;
//! - C: C bindings generated in-process (wit-bindgen-c), clang + wasi-libc to
//!   a core module, then componentized in-process with the WASI preview1
//!   reactor adapter (wit-component);
//! - Python: `componentize-py`;
//! - JavaScript: componentize-js.

mod bindings;
mod builder;
mod c;
mod js;
mod project;
mod python;
mod rust;
mod scaffold;
mod templates;

pub use bindings::bindings;
pub use builder::{BuildOutput, build};
pub use project::{Lang, MANIFEST_FILE, Manifest};
pub use scaffold::{sample_request, scaffold};

use std::path::PathBuf;

/// The policy contract (`wit/policy.wit`), vendored into new projects.
pub const POLICY_WIT: &str = include_str!("../../../wit/policy.wit");

/// Why scaffolding or building a policy project failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthoringError {
    /// The project or its manifest is not usable (bad name, unknown kind...).
    #[error("{0}")]
    Invalid(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A build tool is not installed; the message says how to get it.
    #[error("{tool} not found: {hint}")]
    MissingTool { tool: String, hint: String },
    /// A build tool ran and failed; its output was shown (or is attached).
    #[error("{tool} failed ({status}){output}")]
    ToolFailed {
        tool: String,
        status: String,
        output: String,
    },
    /// Turning a core module into a component failed (bindings, adapter,
    /// missing exports).
    #[error("componentizing: {0:#}")]
    Componentize(anyhow::Error),
}

/// `std::fs` errors with the path attached.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> AuthoringError {
    let path = path.into();
    move |source| AuthoringError::Io { path, source }
}
