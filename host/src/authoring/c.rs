//! C: bindings generated in-process (wit-bindgen-c), clang + wasi-libc to a
//! core module, then a component with the WASI preview1 reactor adapter
//! (wit-component), all without any wasm tool besides clang installed.
//!
//! Layout: the author's sources are `src/*.c` (and headers in `src/`); the
//! bindings are regenerated into `build/bindings/` on every build, so a
//! changed WIT never leaves stale headers behind.

use std::path::Path;
use std::process::Command;

use anyhow::Context as _;
use wit_parser::{Resolve, WorldId};

use super::builder::{files_with_ext, program, run, wit_text};
use super::{AuthoringError, Manifest, io_err};

const CLANG_HINT: &str = "install clang 14+ with wasi-libc: `apt-get install clang lld wasi-libc \
     libclang-rt-14-dev-wasm32` (or set SLUICE_CLANG to a clang that targets wasm32-wasi)";

/// Builds a C project to `out`.
pub(super) fn build(dir: &Path, manifest: &Manifest, out: &Path) -> Result<(), AuthoringError> {
    let world_name = manifest.world()?;
    let (resolve, world) = resolve(&wit_text(dir)?, &world_name)?;

    let bindings = dir.join("build").join("bindings");
    write_bindings(&resolve, world, &bindings)?;

    let src = dir.join("src");
    let mut sources = files_with_ext(&src, "c")?;
    if sources.is_empty() {
        return Err(AuthoringError::Invalid(format!(
            "no C sources in {}",
            src.display()
        )));
    }
    sources.extend(files_with_ext(&bindings, "c")?);

    let core = dir
        .join("build")
        .join(format!("{}.core.wasm", manifest.name));
    let mut cmd = Command::new(program("SLUICE_CLANG", "clang"));
    cmd.args([
        "--target=wasm32-wasi",
        "-mexec-model=reactor",
        "-O2",
        "-std=c11",
        "-Wall",
        // A warning in a policy (a string assigned to an integer, a
        // missing return) is a bug on the request path: refuse it.
        "-Werror",
        "-Wno-unused-function",
        // wasi-libc exports `cabi_realloc`-free reactors; the bindings
        // define it, and nothing else needs exporting.
        "-Wl,--strip-debug",
    ])
    .arg("-I")
    .arg(&src)
    .arg("-I")
    .arg(&bindings)
    .args(&sources)
    .arg("-o")
    .arg(&core);
    run(cmd, "clang", CLANG_HINT)?;

    let module = std::fs::read(&core).map_err(io_err(&core))?;
    let component = componentize(module, &resolve, world)?;
    std::fs::write(out, component).map_err(io_err(out))
}

/// Writes the C bindings of `world` into `out` (for `sluice plugin bindings`).
pub(super) fn bindings(wit: &str, world: &str, out: &Path) -> Result<(), AuthoringError> {
    let (resolve, world) = resolve(wit, world)?;
    write_bindings(&resolve, world, out)
}

/// Parses the WIT and picks `world`.
fn resolve(wit: &str, world: &str) -> Result<(Resolve, WorldId), AuthoringError> {
    let mut resolve = Resolve::new();
    let pkg = resolve
        .push_str("policy.wit", wit)
        .map_err(|e| AuthoringError::Invalid(format!("policy.wit: {e:#}")))?;
    let id = resolve
        .select_world(&[pkg], Some(world))
        .map_err(|e| AuthoringError::Invalid(format!("policy.wit: {e:#}")))?;
    Ok((resolve, id))
}

/// Generates `<world>.h` and `<world>.c` into `out` (replacing old ones).
fn write_bindings(resolve: &Resolve, world: WorldId, out: &Path) -> Result<(), AuthoringError> {
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(io_err(out))?;
    }
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let mut files = wit_bindgen_core::Files::default();
    let opts = wit_bindgen_c::Opts {
        // The component type is embedded by `componentize` instead.
        no_object_file: true,
        ..Default::default()
    };
    opts.build()
        .generate(resolve, world, &mut files)
        .context("generating C bindings")
        .map_err(AuthoringError::Componentize)?;
    let symbol = resolve.worlds[world].name.replace('-', "_");
    for (name, contents) in files.iter() {
        let path = out.join(name);
        std::fs::write(&path, contents).map_err(io_err(&path))?;
        if name.strip_suffix(".c") == Some(symbol.as_str()) {
            let native = out.join("native");
            std::fs::create_dir_all(&native).map_err(io_err(&native))?;
            let path = native.join(format!("{symbol}_helpers.c"));
            let text = native_helpers(&String::from_utf8_lossy(contents), &symbol)?;
            std::fs::write(&path, text).map_err(io_err(&path))?;
        }
    }
    // The bindings force-link a symbol of the component-type object file we
    // do not generate (`componentize` embeds the type); satisfy it.
    let stub = out.join("component_type_stub.c");
    std::fs::write(
        &stub,
        format!("void __component_type_object_force_link_{symbol}(void) {{}}\n"),
    )
    .map_err(io_err(&stub))
}

/// The helper functions of the generated bindings (`*_free`, the string
/// helpers), for a policy's native tests: `bindings` is the generated
/// `<world>.c`, whose other parts (the export and import glue, the
/// allocator the host calls) only build for wasm32. Written to
/// `build/bindings/native/<world>_helpers.c`, which the scaffold's Makefile
/// compiles with the policy and its tests by the host's C compiler.
fn native_helpers(bindings: &str, world: &str) -> Result<String, AuthoringError> {
    const START: &str = "\n// Helper Functions\n";
    let not_found = || {
        AuthoringError::Componentize(anyhow::anyhow!(
            "the generated C bindings have no helper section (a wit-bindgen-c change?)"
        ))
    };
    let start = bindings.find(START).ok_or_else(not_found)? + START.len();
    let rest = &bindings[start..];
    let end = ["\n// Async Helper Functions", "\n// Component Adapters"]
        .iter()
        .filter_map(|marker| rest.find(marker))
        .min()
        .ok_or_else(not_found)?;
    let helpers = &rest[..end];
    if helpers.contains("__import_module__") || helpers.contains("__export_name__") {
        return Err(AuthoringError::Componentize(anyhow::anyhow!(
            "the generated C helpers use wasm imports or exports (resources?); native tests cannot link them"
        )));
    }
    Ok(format!(
        "// Generated by sluice from the bindings of {world}: their helper
// functions, built natively for a policy's tests (`make test`).
#include <stdlib.h>
#include <string.h>

#include \"../{world}.h\"

// What the generated code allocates with; in a component the host calls it.
__attribute__((unused)) static void *cabi_realloc(void *ptr, size_t old_size, size_t align,
                                                   size_t new_size) {{
    (void)old_size;
    if (new_size == 0) {{
        return (void *)align;
    }}
    void *ret = realloc(ptr, new_size);
    if (!ret) {{
        abort();
    }}
    return ret;
}}
{helpers}
"
    ))
}

/// Embeds the world's type in `module` and wraps it, with the preview1
/// reactor adapter, into a component.
fn componentize(
    mut module: Vec<u8>,
    resolve: &Resolve,
    world: WorldId,
) -> Result<Vec<u8>, AuthoringError> {
    use wasi_preview1_component_adapter_provider::{
        WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    };
    wit_component::embed_component_metadata(
        &mut module,
        resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .context("embedding the component type")
    .map_err(AuthoringError::Componentize)?;
    wit_component::ComponentEncoder::default()
        .module(&module)
        .and_then(|e| {
            e.adapter(
                WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
        })
        .and_then(|e| e.validate(true).encode())
        .map_err(AuthoringError::Componentize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authoring::POLICY_WIT;
    use crate::policy::Slot;

    #[test]
    fn every_world_has_native_helpers_without_wasm_glue() {
        for kind in Slot::ALL {
            let world = format!("{}-plugin", kind.interface());
            let dir = tempfile::tempdir().expect("tempdir");
            bindings(POLICY_WIT, &world, dir.path()).expect("bindings");
            let snake = world.replace('-', "_");
            let helpers = std::fs::read_to_string(
                dir.path().join("native").join(format!("{snake}_helpers.c")),
            )
            .expect("native helpers");
            assert!(
                helpers.contains(&format!("void {snake}_string_dup(")),
                "{helpers}"
            );
            assert!(
                helpers.contains("void sluice_policy_types_request_free("),
                "{helpers}"
            );
            for glue in ["__import_module__", "__export_name__", "__wasm_import"] {
                assert!(!helpers.contains(glue), "{kind}: {glue} in {helpers}");
            }
        }
    }

    #[test]
    fn bindings_without_a_helper_section_are_an_error() {
        let err = native_helpers("// nothing here\n", "w").expect_err("no helpers");
        assert!(err.to_string().contains("no helper section"), "{err}");
    }
}
