//! docs/tutorial.md's policy ("free tier: 20 requests a minute, 200 on
//! Sundays"), taken from the tutorial text, built with the authoring API and
//! run through the gateway: the tutorial's code is what the tests run.

use crate::support::gateway::{TestGateway, mock, providers};
use crate::support::polyglot::repo_root;
use serde_json::{Value, json};

/// The first ```python block of the tutorial's "Write the policy" step.
fn tutorial_policy() -> String {
    let text = std::fs::read_to_string(repo_root().join("docs/tutorial.md")).expect("tutorial");
    let step = text
        .split("## 2. Write the policy")
        .nth(1)
        .expect("the tutorial has a 'Write the policy' step");
    let code = step
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("a python block in step 2");
    code.to_owned()
}

fn is_sunday_utc() -> bool {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        / 86_400;
    (days + 4).is_multiple_of(7)
}

async fn post(gw: &TestGateway, key: &str, prompt: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
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
async fn the_tutorial_policy_limits_the_free_tier_by_day() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("polyglot-tutorial");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("sluice-plugin.toml"),
        "name = \"free-tier\"\nkind = \"throttle\"\nlang = \"python\"\n",
    )
    .expect("manifest");
    std::fs::write(dir.join("app.py"), tutorial_policy()).expect("app.py");
    let built = sluice::authoring::build(&dir).expect("the tutorial policy builds");

    let up = mock();
    let config = format!(
        r#"{providers}
[[tenants]]
name = "acme"
tier = "free"
keys = ["sk-acme"]

[[tenants]]
name = "globex"
tier = "pro"
keys = ["sk-globex"]

[plugins.throttle]
source = "{source}"

[plugins.throttle.limits]
deadline_ms = 2000
"#,
        providers = providers(&up),
        source = built.wasm.display()
    );
    let gw = TestGateway::start(&config).await;

    let sunday = is_sunday_utc();
    let limit: u64 = if sunday { 200 } else { 20 };
    // The bucket refills continuously (limit per minute), so count the
    // requests admitted until the first 429 and allow for the refill.
    let started = std::time::Instant::now();
    let mut admitted = 0u64;
    let refused = loop {
        let r = post(&gw, "sk-acme", &format!("q{admitted}")).await;
        if r.status() != 200 {
            break r;
        }
        assert_eq!(header(&r, "x-ratelimit-limit-requests"), limit.to_string());
        admitted += 1;
        assert!(admitted <= 2 * limit, "never refused");
    };
    let refilled = started.elapsed().as_millis() as u64 * limit / 60_000 + 1;
    if is_sunday_utc() == sunday {
        assert_eq!(refused.status(), 429);
        assert!(!header(&refused, "retry-after").is_empty());
        assert!(
            (limit..=limit + refilled).contains(&admitted),
            "admitted {admitted} with a limit of {limit} a minute"
        );
        let v: Value = refused.json().await.expect("json");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    } // else midnight passed mid-test: a new day's bucket, either answer is right.

    // Other tiers are not throttled by this policy.
    for i in 0..3 {
        let r = post(&gw, "sk-globex", &format!("p{i}")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-ratelimit-limit-requests"), "");
    }
}
