//! `sluice plugin new` and `sluice plugin build`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::authoring::{Lang, scaffold};
use crate::policy::Slot;

/// `sluice plugin new` options.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The plugin's name (lowercase letters, digits, '-', '_').
    pub name: String,
    /// Plugin kind: throttle, cache-key, semantic or retry.
    #[arg(long)]
    pub kind: String,
    /// Language: rust, python, c or js.
    #[arg(long, default_value = "rust")]
    pub lang: String,
    /// Directory to create; default `./NAME`.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// `sluice plugin build` options.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The project directory (holding sluice-plugin.toml); default `.`.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

/// Scaffolds a project and says how to build it.
pub fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    let kind = Slot::parse(&args.kind).with_context(|| {
        format!(
            "unknown kind {:?}: expected cache-key, semantic, throttle or retry",
            args.kind
        )
    })?;
    let lang = Lang::parse(&args.lang).with_context(|| {
        format!(
            "unknown language {:?}: expected rust, python, c or js",
            args.lang
        )
    })?;
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    let files = scaffold(&dir, &args.name, kind, lang)?;
    println!(
        "created {} ({lang} {kind} plugin, {} files)",
        dir.display(),
        files.len()
    );
    println!("next: sluice plugin build {}", dir.display());
    match lang {
        Lang::Python => println!(
            "tests: sluice plugin bindings {0} && (cd {0} && python3 -m unittest)",
            dir.display()
        ),
        Lang::Js => println!("tests: (cd {} && node --test)", dir.display()),
        Lang::C => println!("tests: make -C {} test", dir.display()),
        Lang::Rust => println!("tests: (cd {} && cargo test)", dir.display()),
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds a project, then prints what `sluice plugin check` would.
pub async fn build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir.clone();
    let output = tokio::task::spawn_blocking(move || crate::authoring::build(&dir))
        .await
        .context("the build task failed")?
        .with_context(|| format!("building {}", args.dir.display()))?;
    println!("built {}", output.wasm.display());
    super::inspect::check(&output.wasm, false).await
}

/// Writes a project's bindings, or says why its language needs none.
pub fn bindings(args: BuildArgs) -> anyhow::Result<ExitCode> {
    match crate::authoring::bindings(&args.dir)
        .with_context(|| format!("writing the bindings of {}", args.dir.display()))?
    {
        Ok(out) => println!("wrote {}", out.display()),
        Err(why) => println!("{why}"),
    }
    Ok(ExitCode::SUCCESS)
}
