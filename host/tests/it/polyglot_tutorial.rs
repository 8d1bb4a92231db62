//! docs/tutorial.md, run as written: its shell commands (scaffold, build,
//! `plugin test`, a scenario, push and rollback) run through `sh` with the
//! `sluice` under test first on `PATH`, its policy and its gateway config
//! are taken from the text, and the gateway is a `sluice serve` child. Only
//! the fixed ports are replaced (by free ones). The answers depend on the
//! day (20 a minute, 200 on Sundays); the test checks the day's answer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::gateway::mock;
use crate::support::node::Node;
use crate::support::polyglot::repo_root;
use serde_json::{Value, json};

fn tutorial() -> String {
    std::fs::read_to_string(repo_root().join("docs/tutorial.md")).expect("tutorial")
}

/// The text of the step whose heading starts with `## {heading}`.
fn step<'a>(text: &'a str, heading: &str) -> &'a str {
    let rest = text
        .split(&format!("\n## {heading}"))
        .nth(1)
        .unwrap_or_else(|| panic!("the tutorial has a step '{heading}'"));
    rest.split("\n## ").next().unwrap_or(rest)
}

/// The fenced ```lang blocks of `text`, in order.
fn blocks(text: &str, lang: &str) -> Vec<String> {
    text.split(&format!("```{lang}\n"))
        .skip(1)
        .filter_map(|rest| rest.split("\n```").next())
        .map(str::to_owned)
        .collect()
}

/// The body of the heredoc `cat > {file} <<'TAG'` in `block`.
fn heredoc(block: &str, file: &str) -> String {
    let start = format!("cat > {file} <<'");
    let after = block
        .split(&start)
        .nth(1)
        .unwrap_or_else(|| panic!("a heredoc writing {file}"));
    let (tag, body) = after.split_once("'\n").expect("heredoc tag");
    body.split(&format!("\n{tag}"))
        .next()
        .expect("heredoc end")
        .to_owned()
}

/// Runs `script` with `sh -e` in `dir`, the `sluice` under test first on PATH.
fn sh(dir: &Path, script: &str) -> Output {
    let bin = Path::new(env!("CARGO_BIN_EXE_sluice"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("PATH");
    Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .env("PATH", path)
        .env(
            "SLUICE_CACHE_DIR",
            std::env::temp_dir().join("sluice-test-cache"),
        )
        .output()
        .expect("run sh")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn is_sunday_utc() -> bool {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        / 86_400;
    (days + 4).is_multiple_of(7)
}

async fn post(node: &Node, key: &str, prompt: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(node.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}))
        .send()
        .await
        .expect("request")
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorial_runs_as_written() {
    let doc = tutorial();
    let dir: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("polyglot-tutorial");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");

    // 1. Scaffold.
    let scaffold = &blocks(step(&doc, "1. Scaffold"), "sh")[0];
    let out = sh(&dir, scaffold);
    assert!(out.status.success(), "step 1: {}", text(&out));
    assert!(dir.join("free-tier/samples/request.json").is_file());

    // 2. Write the policy.
    let policy = &blocks(step(&doc, "2. Write the policy"), "python")[0];
    std::fs::write(dir.join("free-tier/app.py"), policy).expect("app.py");

    // 3. Build and check.
    let build = &blocks(step(&doc, "3. Build and check"), "sh")[0];
    let out = sh(&dir, build);
    assert!(out.status.success(), "step 3: {}", text(&out));
    let wasm = dir.join("free-tier/build/free-tier.wasm");
    assert!(wasm.is_file());

    // 4. Try it: one call, then a scenario of 21 requests.
    let try_it = step(&doc, "4. Try it");
    let sh_blocks = blocks(try_it, "sh");
    let sunday = is_sunday_utc();
    let limit: u64 = if sunday { 200 } else { 20 };
    let out = sh(&dir, &sh_blocks[0]);
    assert!(out.status.success(), "step 4, plugin test: {}", text(&out));
    let decision: Value = serde_json::from_slice(&out.stdout).expect("plugin test prints JSON");
    let window = &decision["admit"]["buckets"][0]["shape"]["window"];
    if is_sunday_utc() == sunday {
        assert_eq!(window["limit"], limit, "{decision}");
    }
    let out = sh(&dir, &sh_blocks[1]);
    assert!(out.status.success(), "step 4, scenario: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 21, "{stdout}");
    if is_sunday_utc() == sunday {
        let last = lines[20].split_whitespace().nth(2);
        let want = if sunday { "admit" } else { "429" };
        assert_eq!(last, Some(want), "{stdout}");
        assert!(
            lines[..20].iter().all(|l| l.contains(" admit ")),
            "{stdout}"
        );
    }

    // The gateway: the tutorial's config, with free ports and this build.
    let gateway_block = &sh_blocks[2];
    let up = mock();
    let config = heredoc(gateway_block, "sluice.toml")
        .replace("http://127.0.0.1:9090/v1", &up.base_url())
        .replace(
            "\"free-tier/build/free-tier.wasm\"",
            &format!("\"{}\"", wasm.display()),
        );
    assert!(
        config.contains("admin_token"),
        "step 5 needs an admin token"
    );
    let node = Node::start(&config, &[]);
    // The bucket refills continuously (limit per minute), so count the
    // requests admitted until the first 429 and allow for the refill.
    let started = std::time::Instant::now();
    let mut admitted = 0u64;
    let refused = loop {
        let r = post(&node, "sk-acme", &format!("q{admitted}")).await;
        if r.status() != 200 {
            break r;
        }
        assert_eq!(header(&r, "x-ratelimit-limit-requests"), limit.to_string());
        admitted += 1;
        assert!(admitted <= 2 * limit, "never refused");
    };
    let refilled = started.elapsed().as_millis() as u64 * limit / 60_000 + 1;
    if is_sunday_utc() == sunday {
        assert_eq!(refused.status(), 429, "{}", node.log());
        assert!(!header(&refused, "retry-after").is_empty());
        assert!(
            (limit..=limit + refilled).contains(&admitted),
            "admitted {admitted} with a limit of {limit} a minute"
        );
        let v: Value = refused.json().await.expect("json");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    } // else midnight passed mid-test: a new day's bucket, either answer is right.

    // 5. Push, then roll back, through the node's admin API.
    let push = &blocks(step(&doc, "5. Hot-push it to the fleet"), "sh")[0];
    let push = push.replace("http://127.0.0.1:8080", &node.url(""));
    let out = sh(&dir, &push);
    assert!(
        out.status.success(),
        "step 5: {}\nnode log:\n{}",
        text(&out),
        node.log()
    );
}
