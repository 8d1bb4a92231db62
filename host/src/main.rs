#[cfg(feature = "wip-plugin")]
fn main() -> std::process::ExitCode {
    sluice::cli::main()
}

#[cfg(not(feature = "wip-plugin"))]
fn main() {}
