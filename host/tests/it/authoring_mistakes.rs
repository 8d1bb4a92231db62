//! A policy author's mistakes, seen before traffic sees them: what a guest
//! prints or raises reaches `sluice plugin test` and refusals; a version
//! that fails sample requests the serving version answers is refused on
//! every load path (file reload, admin push, fleet release) while the
//! serving version keeps serving; `plugin test` refuses unknown input
//! fields and runs scenarios against real in-memory buckets; builds replace
//! their output atomically; C warnings fail the build; `plugin check` says
//! what the sandbox grants.
//!
//! Each faulty guest is built once per test binary (Python and JavaScript
//! builds take seconds to minutes) and shared by the tests below.

use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice::policy::Slot;

use crate::support::gateway::{TestGateway, mock, providers, request_limit};
use crate::support::polyglot::{repo_root, rust_throttle};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");
const TOKEN: &str = "admin-token-for-authoring-mistakes";
/// Python and JavaScript start an interpreter per call; a busy CI machine
/// needs room.
const DEADLINE_MS: u64 = 5000;

/// A throttle that prints a line, then fails with a type error in its
/// `admit` (Python: `int + str`; JavaScript: `BigInt * number`; Rust: a
/// panic; C: a message on stderr and `abort()`).
const PYTHON_APP: &str = r#"from wit_world import exports
from wit_world.exports.throttle import Admission, Admission_Charge, Usage
from wit_world.imports.types import Bucket, Request, Shape_Window, Unit, WindowSpec


class Lifecycle(exports.Lifecycle):
    def init(self, config: str) -> None:
        pass


class Throttle(exports.Throttle):
    def admit(self, req: Request) -> Admission:
        print(f"admitting tenant {req.tenant}")
        return Admission_Charge([
            Bucket(
                key=f"t:{req.tenant}:rpm",
                shape=Shape_Window(WindowSpec(limit=60, window_ms=60_000)),
                cost=req.estimated_prompt_tokens + "1",
                unit=Unit.REQUESTS,
            )
        ])

    def settle(self, req: Request, usage: Usage):
        return []
"#;

const JS_APP: &str = r#"export const lifecycle = {
  init(config) {},
};

export const throttle = {
  admit(req) {
    console.log(`admitting tenant ${req.tenant}`);
    return {
      tag: 'charge',
      val: [{
        key: `t:${req.tenant}:rpm`,
        shape: { tag: 'window', val: { limit: 60n, windowMs: 60000n } },
        cost: 1n * req.estimatedPromptTokens,
        unit: 'requests',
      }],
    };
  },
  settle(req, usage) {
    return [];
  },
};
"#;

const RUST_LIB: &str = r#"wit_bindgen::generate!({ world: "throttle-plugin", path: "wit" });

use exports::sluice::policy::lifecycle::Guest as Lifecycle;
use exports::sluice::policy::throttle::{Admission, Guest as Throttle, Usage};
use sluice::policy::types::{Bucket, Request};

struct Policy;

impl Lifecycle for Policy {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }
}

impl Throttle for Policy {
    fn admit(req: Request) -> Admission {
        println!("admitting tenant {}", req.tenant);
        let cost: u64 = "one".parse().expect("cost must be a number");
        let _ = cost;
        Admission::Charge(Vec::new())
    }

    fn settle(_req: Request, _usage: Usage) -> Vec<Bucket> {
        Vec::new()
    }
}

export!(Policy);
"#;

const C_APP: &str = r#"#include <stdio.h>
#include <stdlib.h>

#include "throttle_plugin.h"

bool exports_sluice_policy_lifecycle_init(throttle_plugin_string_t *config, throttle_plugin_string_t *err) {
    (void)err;
    throttle_plugin_string_free(config);
    return true;
}

void exports_sluice_policy_throttle_admit(exports_sluice_policy_throttle_request_t *req,
                                          exports_sluice_policy_throttle_admission_t *ret) {
    (void)ret;
    printf("admitting tenant %.*s\n", (int)req->tenant.len, (const char *)req->tenant.ptr);
    fflush(stdout);
    fprintf(stderr, "bad cost for tenant %.*s\n", (int)req->tenant.len, (const char *)req->tenant.ptr);
    abort();
}

void exports_sluice_policy_throttle_settle(exports_sluice_policy_throttle_request_t *req,
                                           exports_sluice_policy_throttle_usage_t *usage,
                                           exports_sluice_policy_throttle_list_bucket_t *ret) {
    (void)usage;
    ret->ptr = NULL;
    ret->len = 0;
    exports_sluice_policy_throttle_request_free(req);
}
"#;

/// Where this module's projects live.
fn work_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("authoring-mistakes")
}

/// Scaffolds a throttle project `name` in `lang` and writes `source`:
/// `edit` of `text` (None: of the scaffolded file); returns its directory.
fn project(
    name: &str,
    lang: &str,
    source: &str,
    text: Option<&str>,
    edit: impl FnOnce(String) -> String,
) -> PathBuf {
    let dir = work_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    sluice::authoring::scaffold(
        &dir,
        name,
        Slot::Throttle,
        sluice::authoring::Lang::parse(lang).expect("language"),
    )
    .expect("scaffold");
    let path = dir.join(source);
    let text = match text {
        Some(t) => t.to_owned(),
        None => std::fs::read_to_string(&path).expect("scaffolded source"),
    };
    std::fs::write(path, edit(text)).expect("write source");
    dir
}

/// The faulty throttle in `lang`, built once per test binary.
fn faulty(lang: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<(String, PathBuf)>>> = OnceLock::new();
    let mut done = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some((_, wasm)) = done.iter().find(|(l, _)| l == lang) {
        return wasm.clone();
    }
    let name = format!("faulty-{lang}");
    let wasm = work_dir()
        .join(&name)
        .join("build")
        .join(format!("{name}.wasm"));
    // Kept across runs of the test binary when the sources are the same:
    // a Python or JavaScript build takes minutes on a busy machine.
    let stamp = work_dir().join(format!("{name}.stamp"));
    let source = [
        PYTHON_APP,
        JS_APP,
        RUST_LIB,
        C_APP,
        sluice::authoring::POLICY_WIT,
        &scaffolded_python(),
    ]
    .concat();
    let key = blake3::hash(format!("{lang}\0{source}").as_bytes())
        .to_hex()
        .to_string();
    if wasm.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == key) {
        done.push((lang.to_owned(), wasm.clone()));
        return wasm;
    }
    let dir = match lang {
        "python" => project(&name, lang, "app.py", Some(PYTHON_APP), |t| t),
        "python-checked" => project(&name, "python", "app.py", None, |t| {
            let wrong = t.replace("cost=1,", "cost=\"1\",");
            assert_ne!(wrong, t, "the scaffold's throttle sets the cost");
            wrong
        }),
        "js" => project(&name, lang, "app.js", Some(JS_APP), |t| t),
        "rust" => project(&name, lang, "src/lib.rs", Some(RUST_LIB), |t| t),
        _ => project(&name, lang, "src/policy.c", Some(C_APP), |t| t),
    };
    if lang == "rust" {
        // One target dir with authoring_new, so wit-bindgen builds once.
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("target dir")
            .join("authoring-rust");
        // Through the CLI: the build reads CARGO_TARGET_DIR from its
        // environment, which a multi-threaded test must not change.
        let out = Command::new(SLUICE)
            .args(["plugin", "build"])
            .arg(&dir)
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .expect("run sluice plugin build");
        assert!(out.status.success(), "rust build: {}", text(&out));
    } else {
        sluice::authoring::build(&dir)
            .unwrap_or_else(|e| panic!("building the faulty {lang} throttle: {e}"));
    }
    std::fs::write(&stamp, key).expect("stamp");
    done.push((lang.to_owned(), wasm.clone()));
    wasm
}

/// The Python throttle scaffold's sources (its `app.py` and the
/// `sluice_checks.py` it uses), for the build cache's key.
fn scaffolded_python() -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = sluice::authoring::scaffold(
        dir.path(),
        "scaffolded",
        Slot::Throttle,
        sluice::authoring::Lang::Python,
    )
    .expect("scaffold");
    files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "py"))
        .map(|f| std::fs::read_to_string(f).expect("read"))
        .collect()
}

fn sluice(args: &[&str]) -> Output {
    Command::new(SLUICE)
        .args(args)
        .output()
        .expect("run sluice")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// What each language's guest prints when its `admit` fails, and the
/// exception (or panic, or stderr) text that must reach the author.
fn expected(lang: &str) -> &'static [&'static str] {
    match lang {
        "python" => &[
            "TypeError: unsupported operand type(s) for +: 'int' and 'str'",
            "app.py\", line 18, in admit",
        ],
        "js" => &["can't convert BigInt to number", "admit@app.js:"],
        "rust" => &["cost must be a number"],
        _ => &["bad cost for tenant acme"],
    }
}

#[test]
fn plugin_test_shows_what_the_guest_printed_and_raised() {
    for lang in ["c", "rust", "python", "js"] {
        let wasm = faulty(lang);
        let deadline = DEADLINE_MS.to_string();
        let out = sluice(&[
            "plugin",
            "test",
            path_str(&wasm),
            "--kind",
            "throttle",
            "--deadline-ms",
            &deadline,
        ]);
        assert!(!out.status.success(), "{lang}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("guest: admitting tenant acme"),
            "{lang}: the printed line is missing: {}",
            text(&out)
        );
        for want in expected(lang) {
            assert!(
                stderr.contains(want),
                "{lang}: {want:?} is missing: {}",
                text(&out)
            );
        }
        assert!(
            stderr.contains("the call failed: trapped"),
            "{lang}: {stderr}"
        );
    }
}

#[test]
fn a_python_return_of_the_wrong_type_names_the_field_and_the_line() {
    // The scaffold's throttle with `cost="1"`: without the scaffold's
    // `@checked`, the bindings' conversion fails naming neither.
    let wasm = faulty("python-checked");
    let app = std::fs::read_to_string(
        wasm.parent()
            .and_then(Path::parent)
            .expect("project")
            .join("app.py"),
    )
    .expect("app.py");
    let line = app
        .lines()
        .position(|l| l.trim_start().starts_with("return Admission_Charge("))
        .expect("the scaffold's admit returns a charge")
        + 1;
    let deadline = DEADLINE_MS.to_string();
    let out = sluice(&[
        "plugin",
        "test",
        path_str(&wasm),
        "--kind",
        "throttle",
        "--deadline-ms",
        &deadline,
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    let want = format!(
        "TypeError: Throttle.admit returned a value whose .value[0].cost is '1' (str), not int (returned at app.py, line {line})"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let failure = stderr
        .lines()
        .find(|l| l.contains("the call failed: trapped"))
        .unwrap_or_else(|| panic!("no failure line: {}", text(&out)));
    assert!(
        failure.contains(&want),
        "{want:?} is missing: {}",
        text(&out)
    );
}

fn gateway_config(up: &sluice::mock::MockHandle, plugin: &Path) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_token = "{TOKEN}"
admin_on_listen = true
{providers}
[plugins.throttle]
source = "{source}"

[plugins.throttle.limits]
deadline_ms = {DEADLINE_MS}
memory_mib = 64

[plugins.throttle.config]
anonymous = {{ requests_per_minute = 5000 }}
"#,
        providers = providers(up),
        source = plugin.display(),
    )
}

fn serving_hash(gw: &TestGateway) -> String {
    gw.gw
        .plugins
        .slot(Slot::Throttle)
        .current()
        .info()
        .hash
        .clone()
}

/// Polls `check` for up to four minutes: a debug build compiles a Python
/// or JavaScript component (an interpreter of 12-18 MB) in a minute or more
/// on a busy machine, the first time; the candidate then answers several
/// samples, each in a fresh interpreter.
async fn within(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "{what}: not within four minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("{what}: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_errors_are_refused_on_file_reload_admin_push_and_fleet_release() {
    let up = mock();
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = dir.path().join("throttle.wasm");
    std::fs::write(
        &plugin,
        std::fs::read(rust_throttle()).expect("rust throttle"),
    )
    .expect("write");
    let gw = TestGateway::start(&gateway_config(&up, &plugin)).await;
    let chat = gw.url("/v1/chat/completions");
    assert_eq!(request_limit(&chat).await, "5000");
    let good = serving_hash(&gw);
    let client = reqwest::Client::new();

    let mut refusals = 0;
    for lang in ["python", "js"] {
        let bad = std::fs::read(faulty(lang)).expect("faulty component");
        let must_name = expected(lang)[0];
        let check = |reason: &str, path: &str| {
            assert!(
                reason.contains("verification failed on sample"),
                "{lang} {path}: {reason}"
            );
            assert!(reason.contains(must_name), "{lang} {path}: {reason}");
        };

        // 1. File reload.
        let tmp = plugin.with_extension("tmp");
        std::fs::write(&tmp, &bad).expect("write");
        std::fs::rename(&tmp, &plugin).expect("rename");
        refusals += 1;
        within(&format!("{lang}: file refused"), || {
            let refused = gw.gw.plugins.refused();
            assert!(refused.len() <= refusals, "{refused:#?}");
            refused.len() == refusals
        })
        .await;
        let refusal = &gw.gw.plugins.refused()[0];
        assert_eq!(
            refusal.source.to_string(),
            format!("file:{}", plugin.display())
        );
        check(&refusal.reason, "file");
        assert_eq!(
            serving_hash(&gw),
            good,
            "{lang}: the serving version changed"
        );
        assert_eq!(request_limit(&chat).await, "5000", "{lang}");

        // 2. Admin push.
        let r = client
            .post(gw.url("/admin/plugins/throttle"))
            .bearer_auth(TOKEN)
            .body(bad.clone())
            .send()
            .await
            .expect("push");
        assert_eq!(r.status(), 422, "{lang}");
        let v: Value = r.json().await.expect("json");
        check(v["error"].as_str().unwrap_or_default(), "admin push");
        refusals += 1;
        assert_eq!(gw.gw.plugins.refused().len(), refusals, "{lang}");
        assert_eq!(serving_hash(&gw), good, "{lang}");

        // 3. Fleet release, published by another node or tool.
        sluice::versions::releases::publish(
            gw.gw.plugins.state(),
            sluice::versions::releases::Writer::default(),
            Slot::Throttle,
            &bad,
            None,
        )
        .await
        .expect("publish");
        sluice::versions::releases::sync(&gw.gw.plugins).await;
        refusals += 1;
        within(&format!("{lang}: release refused"), || {
            gw.gw.plugins.refused().len() == refusals
        })
        .await;
        let refusal = &gw.gw.plugins.refused()[0];
        assert!(
            refusal.source.to_string().starts_with("release:"),
            "{refusal:?}"
        );
        check(&refusal.reason, "fleet release");
        assert_eq!(serving_hash(&gw), good, "{lang}");
        assert_eq!(request_limit(&chat).await, "5000", "{lang}");
    }
}

#[test]
fn plugin_test_refuses_unknown_fields_by_name_and_runs_a_scenario_to_429() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = rust_throttle();
    let input = dir.path().join("req.json");
    std::fs::write(&input, r#"{"tennant": "acme", "tier": "pro"}"#).expect("write");
    let out = sluice(&[
        "plugin",
        "test",
        path_str(&wasm),
        "--kind",
        "throttle",
        "--input",
        path_str(&input),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field `tennant`"),
        "{}",
        text(&out)
    );

    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"tiers": {"pro": {"requests_per_minute": 3, "tokens_per_minute": null}}}"#,
    )
    .expect("write");
    let scenario = dir.path().join("scenario.json");
    std::fs::write(
        &scenario,
        r#"[{"tenant": "acme", "tier": "pro"}, {"tenant": "acme", "tier": "pro"},
            {"tenant": "acme", "tier": "pro"}, {"tenant": "acme", "tier": "pro"},
            {"tenant": "globex", "tier": "pro"}]"#,
    )
    .expect("write");
    let out = sluice(&[
        "plugin",
        "test",
        path_str(&wasm),
        "--kind",
        "throttle",
        "--config",
        path_str(&config),
        "--scenario",
        path_str(&scenario),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let decisions: Vec<&str> = stdout
        .lines()
        .map(|l| l.split_whitespace().nth(2).unwrap_or_default())
        .collect();
    assert_eq!(
        decisions,
        ["admit", "admit", "admit", "429", "admit"],
        "{stdout}"
    );
    assert!(
        stdout.contains("#4 tenant=acme 429 retry-after"),
        "{stdout}"
    );
}

#[test]
fn plugin_check_separates_declared_imports_from_what_the_sandbox_grants() {
    let out = sluice(&["plugin", "check", path_str(&faulty("python"))]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let denied = stdout
        .split("    denied:\n")
        .nth(1)
        .expect("a denied section");
    assert!(denied.contains("wasi:sockets/tcp"), "{stdout}");
    assert!(denied.contains("wasi:filesystem/preopens"), "{stdout}");
    assert!(denied.contains("wasi:cli/environment"), "{stdout}");
    let granted = stdout
        .split("    granted:\n")
        .nth(1)
        .and_then(|s| s.split("    captured:\n").next())
        .expect("a granted section");
    assert!(granted.contains("sluice:policy/types"), "{stdout}");
    assert!(!granted.contains("wasi:sockets"), "{stdout}");
    assert!(
        stdout.contains("denies sockets, files, environment variables and arguments"),
        "{stdout}"
    );
}

#[test]
fn c_warnings_fail_the_build() {
    // A string assigned to an integer: a warning clang accepts by default.
    let dir = project("warned", "c", "src/policy.c", None, |t| {
        let broken = t.replace("bucket->cost = 1;", "bucket->cost = \"1\";");
        assert_ne!(broken, t, "the scaffold sets the cost");
        broken
    });
    let err = sluice::authoring::build(&dir).expect_err("a warning fails the build");
    assert!(err.to_string().contains("clang failed"), "{err}");
    assert!(!dir.join("build/warned.wasm").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilding_while_a_gateway_watches_never_exposes_a_partial_file() {
    let src = repo_root().join("plugins/c/throttle");
    let dir = work_dir().join("rebuilt");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).expect("mkdir");
    std::fs::copy(
        src.join("sluice-plugin.toml"),
        dir.join("sluice-plugin.toml"),
    )
    .expect("copy");
    for f in ["json.c", "json.h", "throttle.c"] {
        std::fs::copy(src.join("src").join(f), dir.join("src").join(f)).expect("copy");
    }
    let built = sluice::authoring::build(&dir).expect("first build");
    let up = mock();
    let gw = TestGateway::start(&gateway_config(&up, &built.wasm)).await;
    let chat = gw.url("/v1/chat/completions");
    assert_eq!(request_limit(&chat).await, "5000");
    for round in 1..=3 {
        // A new version each round: a different string in the data section.
        std::fs::write(
            dir.join("src/tag.c"),
            format!("__attribute__((used)) const char sluice_test_tag[] = \"round {round}\";\n"),
        )
        .expect("write");
        // The file the gateway serves, held open through the build: a build
        // writing in place would change what this handle reads (whether or
        // not the watcher happened to read in the middle of it).
        let before = std::fs::read(&built.wasm).expect("read");
        let mut old = std::fs::File::open(&built.wasm).expect("open");
        let out = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || sluice::authoring::build(&dir)
        })
        .await
        .expect("build task")
        .expect("rebuild");
        let mut seen = Vec::new();
        old.read_to_end(&mut seen).expect("read the old file");
        assert!(
            seen == before,
            "round {round}: the build wrote into the served file in place ({} bytes before, {} read after)",
            before.len(),
            seen.len()
        );
        assert_ne!(
            std::fs::metadata(&out.wasm).expect("stat").ino(),
            old.metadata().expect("stat").ino(),
            "round {round}: the output was not replaced by a rename"
        );
        let hash = blake3::hash(&std::fs::read(&out.wasm).expect("read"))
            .to_hex()
            .to_string();
        within(&format!("round {round} serving"), || {
            serving_hash(&gw) == hash
        })
        .await;
        assert_eq!(request_limit(&chat).await, "5000");
    }
    let refused = gw.gw.plugins.refused();
    assert!(refused.is_empty(), "a partial file was read: {refused:?}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("build"))
        .expect("build dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A C throttle that charges every tenant but one, on which it aborts.
const C_FAILS_ON_ONE_TENANT: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "throttle_plugin.h"

bool exports_sluice_policy_lifecycle_init(throttle_plugin_string_t *config, throttle_plugin_string_t *err) {
    (void)err;
    throttle_plugin_string_free(config);
    return true;
}

void exports_sluice_policy_throttle_admit(exports_sluice_policy_throttle_request_t *req,
                                          exports_sluice_policy_throttle_admission_t *ret) {
    if (req->tenant.len == 6 && memcmp(req->tenant.ptr, "globex", 6) == 0) {
        fprintf(stderr, "no rule for tenant globex\n");
        abort();
    }
    ret->tag = EXPORTS_SLUICE_POLICY_THROTTLE_ADMISSION_CHARGE;
    ret->val.charge.ptr = NULL;
    ret->val.charge.len = 0;
    exports_sluice_policy_throttle_request_free(req);
}

void exports_sluice_policy_throttle_settle(exports_sluice_policy_throttle_request_t *req,
                                           exports_sluice_policy_throttle_usage_t *usage,
                                           exports_sluice_policy_throttle_list_bucket_t *ret) {
    (void)usage;
    ret->ptr = NULL;
    ret->len = 0;
    exports_sluice_policy_throttle_request_free(req);
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_failing_on_a_recent_real_request_is_refused() {
    let dir = project(
        "fails-on-globex",
        "c",
        "src/policy.c",
        Some(C_FAILS_ON_ONE_TENANT),
        |t| t,
    );
    let candidate =
        std::fs::read(sluice::authoring::build(&dir).expect("build").wasm).expect("read");
    let up = mock();
    let tmp = tempfile::tempdir().expect("tempdir");
    let plugin = tmp.path().join("throttle.wasm");
    std::fs::write(
        &plugin,
        std::fs::read(rust_throttle()).expect("rust throttle"),
    )
    .expect("write");
    let config = format!(
        "{}\n[[tenants]]\nname = \"globex\"\ntier = \"pro\"\nkeys = [\"sk-globex\"]\n",
        gateway_config(&up, &plugin)
    );
    let gw = TestGateway::start(&config).await;
    let good = serving_hash(&gw);
    // The built-in samples alone do not trip it...
    let r = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-globex")
        .json(&serde_json::json!({"model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    // ...the request globex just made does.
    let tmp_file = plugin.with_extension("tmp");
    std::fs::write(&tmp_file, &candidate).expect("write");
    std::fs::rename(&tmp_file, &plugin).expect("rename");
    within("refused", || !gw.gw.plugins.refused().is_empty()).await;
    let reason = gw.gw.plugins.refused()[0].reason.clone();
    assert!(
        reason.contains("recent request 1 (tenant \"globex\""),
        "{reason}"
    );
    assert!(reason.contains("no rule for tenant globex"), "{reason}");
    assert!(!reason.contains("sk-globex"), "{reason}");
    assert_eq!(serving_hash(&gw), good);
}

/// The scaffold's C throttle, printing `<word> <tenant>` on every admit.
fn printing_c_throttle(name: &str, word: &str) -> Vec<u8> {
    let dir = project(name, "c", "src/policy.c", None, |t| {
        let printing = t.replace(
            "    exports_sluice_policy_throttle_bucket_t *bucket",
            &format!(
                "    printf(\"{word} %.*s\\n\", (int)req->tenant.len, (const char *)req->tenant.ptr);\n    exports_sluice_policy_throttle_bucket_t *bucket"
            ),
        );
        assert_ne!(printing, t, "the scaffold's admit allocates a bucket");
        printing
    });
    std::fs::read(sluice::authoring::build(&dir).expect("build").wasm).expect("read")
}

/// The gateway log's `plugin output` WARN lines that carry `text`.
fn output_lines(logs: &str, text: &str) -> Vec<String> {
    logs.lines()
        .filter(|l| l.contains(" WARN ") && l.contains("plugin output: ") && l.contains(text))
        .map(str::to_owned)
        .collect()
}

#[test]
fn guest_output_reaches_the_gateway_log_at_warn_with_slot_and_version_rate_limited() {
    // Both built before the clock starts: the limit is 20 lines per version
    // per 10 s, and this test must stay inside one window.
    let first = printing_c_throttle("prints-first", "first-version");
    let second = printing_c_throttle("prints-second", "second-version");
    let hash = |wasm: &[u8]| blake3::hash(wasm).to_hex()[..12].to_string();
    crate::support::logs::with_logs(tracing::Level::WARN, |logs| async move {
        let started = Instant::now();
        let up = mock();
        let tmp = tempfile::tempdir().expect("tempdir");
        let plugin = tmp.path().join("throttle.wasm");
        std::fs::write(&plugin, &first).expect("write");
        let gw = TestGateway::start(&gateway_config(&up, &plugin)).await;
        let chat = gw.url("/v1/chat/completions");
        // 30 requests, each printing a line: more than the 20 allowed.
        for _ in 0..30 {
            assert_eq!(request_limit(&chat).await, "60");
        }
        let lines = output_lines(&logs.text(), "first-version");
        assert_eq!(lines.len(), 20, "{}", logs.text());
        for line in &lines {
            assert!(
                line.contains("plugin output: first-version anonymous"),
                "{line}"
            );
            assert!(line.contains("slot=throttle"), "{line}");
            assert!(
                line.contains(&format!("version=\"{}\"", hash(&first))),
                "{line}"
            );
        }

        // A new version has its own 20 lines.
        let tmp_file = plugin.with_extension("tmp");
        std::fs::write(&tmp_file, &second).expect("write");
        std::fs::rename(&tmp_file, &plugin).expect("rename");
        let new = blake3::hash(&second).to_hex().to_string();
        within("the second version serving", || serving_hash(&gw) == new).await;
        for _ in 0..5 {
            assert_eq!(request_limit(&chat).await, "60");
        }
        let text = logs.text();
        let lines = output_lines(&text, "second-version");
        assert!((5..=20).contains(&lines.len()), "{text}");
        assert!(
            lines
                .iter()
                .all(|l| l.contains(&format!("version=\"{}\"", hash(&second)))),
            "{text}"
        );
        assert_eq!(output_lines(&text, "first-version").len(), 20, "{text}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}: longer than one rate-limit window, so the counts above prove nothing",
            started.elapsed()
        );
    });
}
