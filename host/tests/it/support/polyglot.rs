//! The reference policies written in other languages (plugins/python,
//! plugins/c, plugins/js), built from source by the test through the
//! authoring API, and the Rust reference they are compared with.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ sits in the repository root")
        .to_path_buf()
}

/// The Rust reference throttle, as host/build.rs built it.
pub fn rust_throttle() -> PathBuf {
    PathBuf::from(env!("SLUICE_TEST_PLUGINS_DIR")).join("sluice_plugin_throttle.wasm")
}

/// `(language, plugin name)`.
type Project = (String, String);

/// Builds `plugins/<lang>/<name>` once per test binary: the sources are
/// copied under the test target dir (so parallel test binaries never share a
/// build directory) and built with `sluice::authoring::build`.
pub fn built(lang: &str, name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<(Project, PathBuf)>>> = OnceLock::new();
    let cache = BUILT.get_or_init(Default::default);
    // Held across the build: one build at a time, each exactly once.
    let mut done = cache.lock().unwrap_or_else(|e| e.into_inner());
    let key = (lang.to_owned(), name.to_owned());
    if let Some((_, path)) = done.iter().find(|(k, _)| *k == key) {
        return path.clone();
    }
    let src = repo_root().join("plugins").join(lang).join(name);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(module_path!().replace("::", "-"))
        .join(lang)
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    copy_sources(&src, &dir);
    let out = sluice::authoring::build(&dir).unwrap_or_else(|e| {
        panic!(
            "building plugins/{lang}/{name} failed: {e}\n(the toolchains come from scripts/setup)"
        )
    });
    done.push((key, out.wasm.clone()));
    out.wasm
}

/// Copies a project, without its `build/` output.
fn copy_sources(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create build dir");
    for entry in std::fs::read_dir(from).expect("read plugin sources") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name();
        let path = entry.path();
        if path.is_dir() {
            if name != "build" && name != "target" {
                copy_sources(&path, &to.join(&name));
            }
        } else {
            std::fs::copy(&path, to.join(&name)).expect("copy plugin source");
        }
    }
}
