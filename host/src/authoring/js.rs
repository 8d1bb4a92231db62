//! JavaScript: not built here.
//!
//! componentize-js embeds a whole SpiderMonkey engine (StarlingMonkey) in
//! every component and makes it import WASI interfaces of a newer 0.2
//! release than the gateway links, so its components are ~10 MB and need a
//! node toolchain at build time; see docs/tutorial.md.

use std::path::Path;

use super::{AuthoringError, Manifest};

/// Always refuses, with the reason and the alternatives.
pub(super) fn build(_dir: &Path, _manifest: &Manifest, _out: &Path) -> Result<(), AuthoringError> {
    Err(AuthoringError::Unsupported(
        "building JavaScript policies is not supported by this sluice: componentize-js \
         (npm @bytecodealliance/componentize-js) is not part of the supported toolchain here; \
         write the policy in Rust, Python or C"
            .to_owned(),
    ))
}
