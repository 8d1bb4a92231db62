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
    for (name, contents) in files.iter() {
        let path = out.join(name);
        std::fs::write(&path, contents).map_err(io_err(&path))?;
    }
    // The bindings force-link a symbol of the component-type object file we
    // do not generate (`componentize` embeds the type); satisfy it.
    let symbol = resolve.worlds[world].name.replace('-', "_");
    let stub = out.join("component_type_stub.c");
    std::fs::write(
        &stub,
        format!("void __component_type_object_force_link_{symbol}(void) {{}}\n"),
    )
    .map_err(io_err(&stub))
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
