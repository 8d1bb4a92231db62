//! `sluice plugin new` then `sluice plugin build`, as an author runs them:
//! every scaffold builds as generated, passes `plugin check`, and a scaffold
//! answers `plugin test` with the decision its template promises.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn sluice(args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(SLUICE);
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run sluice")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Scaffolds `name` in a fresh temp dir, builds it, checks it; returns the
/// temp dir (kept alive by the caller) and the component.
fn new_and_build(
    name: &str,
    kind: &str,
    lang: &str,
    envs: &[(&str, &Path)],
) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join(name);
    let dir_arg = dir.to_str().expect("utf-8 path");
    let out = sluice(
        &[
            "plugin", "new", name, "--kind", kind, "--lang", lang, "--dir", dir_arg,
        ],
        envs,
    );
    assert!(out.status.success(), "plugin new: {}", text(&out));
    assert!(dir.join("sluice-plugin.toml").is_file());
    assert_eq!(
        std::fs::read_to_string(dir.join("wit/policy.wit")).expect("vendored WIT"),
        sluice::authoring::POLICY_WIT
    );

    let out = sluice(&["plugin", "build", dir_arg], envs);
    assert!(
        out.status.success(),
        "plugin build ({lang} {kind}): {}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let wasm = dir.join("build").join(format!("{name}.wasm"));
    assert!(
        stdout.contains(&format!("built {}", wasm.display())),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("kinds:    {kind}\n")), "{stdout}");

    let out = sluice(&["plugin", "check", wasm.to_str().expect("utf-8")], envs);
    assert!(out.status.success(), "plugin check: {}", text(&out));
    (tmp, wasm)
}

/// `sluice plugin test` on a chat body; returns the printed decision.
fn decide(wasm: &Path, kind: &str) -> serde_json::Value {
    let input = wasm.with_file_name("req.json");
    std::fs::write(
        &input,
        r#"{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}"#,
    )
    .expect("write input");
    let out = sluice(
        &[
            "plugin",
            "test",
            wasm.to_str().expect("utf-8"),
            "--kind",
            kind,
            "--input",
            input.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert!(out.status.success(), "plugin test: {}", text(&out));
    serde_json::from_slice(&out.stdout).expect("plugin test prints JSON")
}

#[test]
fn c_scaffolds_of_every_kind_build_and_decide() {
    for kind in ["throttle", "cache-key", "semantic", "retry", "route"] {
        let (_tmp, wasm) = new_and_build("my-policy", kind, "c", &[]);
        let decision = decide(&wasm, kind);
        match kind {
            "throttle" => {
                let bucket = &decision["admit"]["buckets"][0];
                assert_eq!(bucket["key"], "t:anonymous:rpm", "{decision}");
                assert_eq!(bucket["shape"]["window"]["limit"], 60, "{decision}");
            }
            "cache-key" => assert_eq!(decision["key"], "gpt-4o-mini\nuser:hi", "{decision}"),
            "semantic" => assert_eq!(decision["prepare"]["text"], "hi", "{decision}"),
            // The sample candidates: `budget` has an open circuit.
            "route" => {
                let order: Vec<&str> = decision["order"]
                    .as_array()
                    .expect("an order")
                    .iter()
                    .map(|c| c["provider"].as_str().expect("a provider"))
                    .collect();
                assert_eq!(
                    order,
                    ["primary", "replica", "local", "budget"],
                    "{decision}"
                );
            }
            _ => assert_eq!(decision["verdict"]["verdict"], "retry", "{decision}"),
        }
    }
}

#[test]
fn a_rust_scaffold_builds_as_generated() {
    // One target dir for every run, so wit-bindgen compiles once.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("authoring-rust");
    for kind in ["throttle", "retry", "route"] {
        let (_tmp, wasm) =
            new_and_build("my-policy", kind, "rust", &[("CARGO_TARGET_DIR", &target)]);
        if kind == "throttle" {
            let decision = decide(&wasm, kind);
            assert_eq!(decision["admit"]["buckets"][0]["key"], "t:anonymous:rpm");
        }
        // The scaffold's own tests, natively, with cargo's runner.
        let manifest = wasm
            .parent()
            .and_then(Path::parent)
            .expect("project dir")
            .join("Cargo.toml");
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.arg("test")
            .arg("--manifest-path")
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", &target);
        for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET"] {
            cmd.env_remove(var);
        }
        let out = cmd.output().expect("cargo test");
        assert!(out.status.success(), "cargo test ({kind}): {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("test result: ok. 3 passed"),
            "{}",
            text(&out)
        );
    }
}

#[test]
fn a_python_scaffold_builds_as_generated() {
    new_and_build("my-policy", "cache-key", "python", &[]);
}

/// The other Python kinds: about 40 s each on a debug host, so on demand
/// (`cargo test --test authoring_new -- --ignored`).
#[test]
#[ignore = "slow: builds four Python components"]
fn python_scaffolds_of_every_kind_build() {
    for kind in ["throttle", "semantic", "retry", "route"] {
        new_and_build("my-policy", kind, "python", &[]);
    }
}

#[test]
fn a_js_scaffold_builds_and_decides() {
    let (_tmp, wasm) = new_and_build("my-policy", "throttle", "js", &[]);
    let decision = decide(&wasm, "throttle");
    let bucket = &decision["admit"]["buckets"][0];
    assert_eq!(bucket["key"], "t:anonymous:rpm", "{decision}");
    assert_eq!(bucket["shape"]["window"]["limit"], 60, "{decision}");
}

#[test]
fn new_refuses_bad_names_kinds_and_occupied_dirs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let dir_arg = dir.to_str().expect("utf-8");
    for (args, expected) in [
        (
            vec!["Bad Name", "--kind", "throttle"],
            "invalid plugin name",
        ),
        (vec!["ok", "--kind", "firewall"], "unknown kind"),
        (
            vec!["ok", "--kind", "throttle", "--lang", "cobol"],
            "unknown language",
        ),
    ] {
        let mut full = vec!["plugin", "new"];
        full.extend(args);
        full.extend(["--dir", dir_arg]);
        let out = sluice(&full, &[]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(expected),
            "{}",
            text(&out)
        );
    }
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("keep.txt"), "mine").expect("write");
    let out = sluice(
        &[
            "plugin", "new", "ok", "--kind", "throttle", "--dir", dir_arg,
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("keep.txt")).expect("kept"),
        "mine"
    );

    let out = sluice(
        &["plugin", "build", tmp.path().to_str().expect("utf-8")],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sluice-plugin.toml"),
        "{}",
        text(&out)
    );
}

/// Runs `program args` in `dir`; panics with its output unless it succeeds.
fn run_in(dir: &Path, program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", text(&out));
    out
}

#[test]
fn python_and_js_scaffolds_pass_their_own_tests_in_their_own_runner() {
    for kind in ["throttle", "cache-key", "semantic", "retry", "route"] {
        let tmp = tempfile::tempdir().expect("tempdir");
        for lang in ["python", "js"] {
            let dir = tmp.path().join(lang);
            let dir_arg = dir.to_str().expect("utf-8");
            let out = sluice(
                &[
                    "plugin",
                    "new",
                    "my-policy",
                    "--kind",
                    kind,
                    "--lang",
                    lang,
                    "--dir",
                    dir_arg,
                ],
                &[],
            );
            assert!(out.status.success(), "plugin new: {}", text(&out));
            let sample = std::fs::read_to_string(dir.join("samples/request.json")).expect("sample");
            serde_json::from_str::<serde_json::Value>(&sample).expect("the sample is JSON");
            if lang == "python" {
                let out = sluice(&["plugin", "bindings", dir_arg], &[]);
                assert!(out.status.success(), "plugin bindings: {}", text(&out));
                assert!(dir.join("bindings/wit_world/__init__.py").is_file());
                let out = run_in(&dir, "python3", &["-m", "unittest", "-v"]);
                let report = String::from_utf8_lossy(&out.stderr);
                assert!(report.contains("Ran 3 tests"), "{kind}: {report}");
            } else {
                let out = run_in(&dir, "node", &["--test"]);
                let report = String::from_utf8_lossy(&out.stdout);
                assert!(report.contains("# pass 3"), "{kind}: {report}");
            }
        }
    }
}

/// `make test` in a C project: its tests built natively and run.
fn make_test(dir: &Path) -> Output {
    Command::new("make")
        .arg("test")
        .arg(format!("SLUICE={SLUICE}"))
        .current_dir(dir)
        .env_remove("CFLAGS")
        .output()
        .expect("run make")
}

#[test]
fn c_scaffolds_pass_their_own_tests_as_a_c_test_binary() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for kind in ["throttle", "cache-key", "semantic", "retry", "route"] {
        let dir = tmp.path().join(kind);
        let dir_arg = dir.to_str().expect("utf-8");
        let out = sluice(
            &[
                "plugin",
                "new",
                "my-policy",
                "--kind",
                kind,
                "--lang",
                "c",
                "--dir",
                dir_arg,
            ],
            &[],
        );
        assert!(out.status.success(), "plugin new: {}", text(&out));
        let out = make_test(&dir);
        assert!(out.status.success(), "make test ({kind}): {}", text(&out));
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            report.contains("# pass 3\n# fail 0"),
            "{kind}: {}",
            text(&out)
        );
        assert!(dir.join("build/test-policy").is_file());
    }
    // A broken policy fails its tests, naming the check.
    let dir = tmp.path().join("throttle");
    let policy = dir.join("src/policy.c");
    let source = std::fs::read_to_string(&policy).expect("policy");
    let broken = source.replace("\"t:%.*s:rpm\"", "\"u:%.*s:rpm\"");
    assert_ne!(broken, source);
    std::fs::write(&policy, broken).expect("write");
    let out = make_test(&dir);
    assert!(!out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("not ok - admit_charges_one_request_to_the_tenant"),
        "{}",
        text(&out)
    );
    assert!(
        stderr.contains("is \"u:globex:rpm\", not \"t:globex:rpm\""),
        "{}",
        text(&out)
    );
}
