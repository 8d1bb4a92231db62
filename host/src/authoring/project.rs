//! The project manifest, `sluice-plugin.toml`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{AuthoringError, io_err};
use crate::policy::Slot;

/// The manifest's file name, at the project root.
pub const MANIFEST_FILE: &str = "sluice-plugin.toml";

/// A language a policy can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Rust,
    Python,
    C,
    Js,
}

impl Lang {
    /// Every language `plugin new` knows.
    pub const ALL: [Lang; 4] = [Lang::Rust, Lang::Python, Lang::C, Lang::Js];

    /// The name used on the command line and in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::C => "c",
            Lang::Js => "js",
        }
    }

    /// The language called `name` (`javascript` is accepted for `js`).
    pub fn parse(name: &str) -> Option<Lang> {
        match name {
            "javascript" => Some(Lang::Js),
            _ => Self::ALL.into_iter().find(|l| l.as_str() == name),
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `sluice-plugin.toml`: what a project builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The plugin's name: the output is `build/<name>.wasm`.
    pub name: String,
    /// The plugin kind (`throttle`, `cache-key`, `semantic`, `retry`, `route`): picks
    /// the WIT world `<kind>-plugin`.
    pub kind: String,
    pub lang: Lang,
}

impl Manifest {
    /// Reads and checks `<dir>/sluice-plugin.toml`.
    pub fn load(dir: &Path) -> Result<Manifest, AuthoringError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                AuthoringError::Invalid(format!(
                    "{} not found: is {} a policy project? (`sluice plugin new` makes one)",
                    path.display(),
                    dir.display()
                ))
            } else {
                io_err(&path)(e)
            }
        })?;
        let manifest: Manifest = toml::from_str(&text)
            .map_err(|e| AuthoringError::Invalid(format!("{}: {e}", path.display())))?;
        validate_name(&manifest.name)?;
        manifest.kind()?;
        Ok(manifest)
    }

    /// The manifest's kind.
    pub fn kind(&self) -> Result<Slot, AuthoringError> {
        Slot::parse(&self.kind).ok_or_else(|| {
            AuthoringError::Invalid(format!(
                "unknown plugin kind {:?}: expected cache-key, semantic, throttle or retry",
                self.kind
            ))
        })
    }

    /// The WIT world the project implements.
    pub fn world(&self) -> Result<String, AuthoringError> {
        Ok(format!("{}-plugin", self.kind()?.interface()))
    }

    /// Where the built component goes.
    pub fn output(&self, dir: &Path) -> PathBuf {
        dir.join("build").join(format!("{}.wasm", self.name))
    }
}

/// Plugin names become file, crate and C identifiers: lowercase ASCII
/// letters, digits, `-` and `_`, starting with a letter.
pub fn validate_name(name: &str) -> Result<(), AuthoringError> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(AuthoringError::Invalid(format!(
            "invalid plugin name {name:?}: use lowercase letters, digits, '-' and '_', starting with a letter"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("free-tier_2").is_ok());
        for bad in ["", "2x", "Free", "a b", "../x", "é"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn languages_parse() {
        for lang in Lang::ALL {
            assert_eq!(Lang::parse(lang.as_str()), Some(lang));
        }
        assert_eq!(Lang::parse("javascript"), Some(Lang::Js));
        assert_eq!(Lang::parse("go"), None);
    }
}
