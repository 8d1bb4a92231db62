//! `/dashboard`: the data routes need the admin token, the page is driven
//! in headless Chromium (sign in through the form, every panel shows, the
//! numbers move while traffic flows, no console errors) and a screenshot is
//! kept under target/tmp.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::chromium::Browser;
use crate::support::gateway::{TestGateway, mock, providers};

const TOKEN: &str = "dash-admin-secret";

/// The panels the page always shows.
const PANELS: [&str; 7] = [
    "traffic",
    "latency",
    "cache",
    "errors",
    "providers",
    "plugins",
    "redis",
];

async fn gateway() -> (sluice::mock::MockHandle, TestGateway) {
    let up = mock();
    let config = format!(
        "{}\n[server]\nadmin_token = \"{TOKEN}\"\nadmin_listen = \"127.0.0.1:0\"\n[plugins.throttle.config]\nanonymous = {{ requests_per_minute = 100000, tokens_per_minute = 100000000 }}\n[plugins.throttle.limits]\ndeadline_ms = 2000\n",
        providers(&up)
    );
    let gw = TestGateway::start(&config).await;
    (up, gw)
}

/// Sends chats (half of them repeats, so the exact cache hits) until
/// `stop` is set.
fn traffic(base: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let prompt = if sent.is_multiple_of(2) {
                "same question".to_string()
            } else {
                format!("question {sent}")
            };
            let r = client
                .post(format!("{base}/chat/completions"))
                .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}))
                .send()
                .await;
            if let Ok(r) = r {
                assert_eq!(r.status(), 200);
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sent
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_routes_need_the_token_and_the_page_holds_no_data() {
    let (_up, gw) = gateway().await;
    let admin = gw.spawn_admin_listener().await;
    let base = format!("http://{admin}");
    let client = reqwest::Client::new();
    for path in ["/admin/dashboard/snapshot", "/admin/dashboard/events"] {
        let r = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = client
            .get(format!("{base}{path}"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    // The page and its assets are public, carry a strict CSP and no data.
    for (path, kind) in [
        ("/dashboard", "text/html"),
        ("/dashboard/dashboard.js", "text/javascript"),
        ("/dashboard/dashboard.css", "text/css"),
    ] {
        let r = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with(kind), "{path}: {ct}");
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        let body = r.text().await.unwrap();
        assert!(!body.contains("sk-upstream"), "{path}");
    }
    // One snapshot: typed families from the registry plus node state.
    // Families appear with their first series: answer one request first.
    let r = client
        .post(format!("{}/chat/completions", gw.base_url()))
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let snap: Value = client
        .get(format!("{base}/admin/dashboard/snapshot"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&String> = snap["metrics"]
        .as_object()
        .expect("metrics")
        .keys()
        .collect();
    assert_eq!(
        snap["metrics"]["sluice_requests"]["type"], "counter",
        "{names:?}"
    );
    assert_eq!(
        snap["metrics"]["sluice_request_duration_seconds"]["type"],
        "histogram"
    );
    assert_eq!(snap["providers"][0]["name"], "mock");
    assert_eq!(snap["providers"][0]["key_rest_ms"], json!([0]));
    assert_eq!(snap["plugins"].as_array().unwrap().len(), 4);
    assert_eq!(snap["state"]["backend"], "memory");
    let text = snap.to_string();
    assert!(!text.contains("sk-upstream-secret"), "keys leak: {text}");

    // The event stream sends a snapshot a second.
    let mut r = client
        .get(format!("{base}/admin/dashboard/events"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let started = Instant::now();
    let mut seen = String::new();
    while seen.matches("event: snapshot\ndata: {").count() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), r.chunk())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .expect("stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_signs_in_shows_every_panel_and_moves_with_traffic() {
    let test_started = Instant::now();
    let (_up, gw) = gateway().await;
    let admin = gw.spawn_admin_listener().await;
    let page = format!("http://{admin}/dashboard");
    let api = gw.base_url();

    // A release and its rollback, for the version history panel.
    let wasm = std::fs::read(
        std::path::Path::new(env!("SLUICE_TEST_PLUGINS_DIR")).join("sluice_plugin_throttle.wasm"),
    )
    .expect("the reference throttle plugin");
    let client = reqwest::Client::new();
    let r = client
        .post(format!("http://{admin}/admin/plugins/throttle"))
        .bearer_auth(TOKEN)
        .header(
            "x-sluice-plugin-config",
            r#"{"anonymous": {"requests_per_minute": 100000, "tokens_per_minute": 100000000}}"#,
        )
        .body(wasm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = client
        .post(format!("http://{admin}/admin/plugins/throttle/rollback"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // The browser is driven with blocking calls: keep them off the
    // runtime's workers.
    let (tx, rx) = std::sync::mpsc::channel::<&'static str>();
    let (report_tx, report_rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    let driver = std::thread::spawn(move || {
        let mut b = Browser::launch();
        b.call("Page.navigate", json!({"url": page}));
        b.wait_for(
            "document.readyState === 'complete' && !document.querySelector('#login').hidden",
            Duration::from_secs(20),
        );
        // Not signed in: the board stays hidden.
        assert_eq!(
            b.eval("document.querySelector('#board').hidden"),
            json!(true)
        );
        b.eval(&format!(
            "document.querySelector('#token').value = '{TOKEN}'; \
             document.querySelector('#login').requestSubmit(); true"
        ));
        b.wait_for(
            "!document.querySelector('#board').hidden && \
             document.querySelector('#live').textContent === 'live'",
            Duration::from_secs(20),
        );
        // Only the board shows now.
        assert_eq!(
            b.eval("document.querySelector('#login').getBoundingClientRect().height"),
            json!(0)
        );
        // The token is in session storage, not in the URL or the form.
        assert_eq!(
            b.eval("sessionStorage.getItem('sluice.admin_token')"),
            json!(TOKEN)
        );
        assert_eq!(
            b.eval(&format!("location.href.includes('{TOKEN}')")),
            json!(false)
        );
        assert_eq!(b.eval("document.querySelector('#token').value"), json!(""));

        // Every panel is visible and has a size.
        let panels = b.eval(
            "JSON.stringify(Object.fromEntries([...document.querySelectorAll('[data-panel]')]\
             .map(p => [p.dataset.panel, !p.hidden && p.getBoundingClientRect().height > 40])))",
        );
        let panels: Value = serde_json::from_str(panels.as_str().unwrap()).unwrap();
        for name in PANELS {
            assert_eq!(panels[name], json!(true), "panel {name}: {panels}");
        }
        // Jobs are off here: no job panel.
        assert_eq!(panels["jobs"], json!(false), "{panels}");
        // The providers and plugins tables are filled from the snapshot.
        b.wait_for(
            "document.querySelectorAll('[data-table=providers] tr').length === 2 && \
             document.querySelectorAll('[data-table=plugins] tr').length === 4",
            Duration::from_secs(10),
        );

        // The upload and the rollback are in the history, under the
        // release book's summary.
        b.wait_for(
            "(() => { const t = document.querySelector('[data-list=history]').textContent; \
             return t.includes('release book v') && \
             (t.match(/throttle installed/g) || []).length >= 2; })()",
            Duration::from_secs(10),
        );

        let read = "JSON.stringify({total: document.querySelector('[data-metric=\"requests-total\"]').textContent, \
                    rps: document.querySelector('[data-metric=\"rps\"]').textContent, \
                    p50: document.querySelector('[data-metric=\"p50\"]').textContent, \
                    exact: document.querySelector('[data-metric=\"exact-ratio\"]').textContent})";
        let before = b.eval(read);
        tx.send("start traffic").unwrap();
        // The answered count moves, and so do rate, latency and hit ratio.
        b.wait_for(
            &format!(
                "(() => {{ const v = JSON.parse({read}); const b = JSON.parse({before}); \
                 return v.total !== b.total && v.rps !== '0' && v.rps !== '–' && \
                 v.p50 !== '–' && v.exact !== '–' && v.exact !== '0%'; }})()",
                before = serde_json::to_string(&before).unwrap()
            ),
            Duration::from_secs(20),
        );
        let first = b.eval(read);
        // Still moving a couple of snapshots later.
        b.wait_for(
            &format!(
                "JSON.parse({read}).total !== JSON.parse({first}).total",
                first = serde_json::to_string(&first).unwrap()
            ),
            Duration::from_secs(10),
        );
        // The charts have lines.
        b.wait_for(
            "document.querySelector('[data-chart=rps] polyline').getAttribute('points').split(' ').length > 2",
            Duration::from_secs(10),
        );
        let errors = b.errors();
        assert!(errors.is_empty(), "console errors: {errors:#?}");
        let png = b.screenshot();
        let _ = report_tx.send(png);
        tx.send("stop traffic").unwrap();
    });

    // Traffic starts when the page is signed in and stops when it is done.
    let stop = Arc::new(AtomicBool::new(false));
    let rx = Arc::new(std::sync::Mutex::new(rx));
    let wait = |rx: Arc<std::sync::Mutex<std::sync::mpsc::Receiver<&'static str>>>| {
        tokio::task::spawn_blocking(move || {
            rx.lock().unwrap().recv_timeout(Duration::from_secs(90))
        })
    };
    let started = wait(rx.clone()).await.unwrap();
    let traffic = match started {
        Ok(_) => Some(traffic(api, stop.clone())),
        Err(_) => None,
    };
    let _ = wait(rx).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = traffic {
        let sent = t.await.unwrap();
        assert!(sent > 0);
    }
    driver.join().expect("the browser checks passed");
    let png = report_rx.await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&out, &png).expect("write the screenshot");
    eprintln!("dashboard screenshot: {}", out.display());
    assert!(test_started.elapsed() < Duration::from_secs(90));
}

/// Reads `expression` (JavaScript giving a JSON string) as JSON.
fn read_json(b: &mut Browser, expression: &str) -> Value {
    let v = b.eval(expression);
    serde_json::from_str(v.as_str().unwrap_or("null")).unwrap_or(Value::Null)
}

/// The dollar amount in a cell such as `$0.00123 of $10.00 · 0.0%`.
fn dollars(text: &str) -> f64 {
    let digits: String = text
        .trim_start_matches('$')
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no amount in {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_budget_and_job_panels_show_what_the_node_did() {
    let test_started = Instant::now();
    let up = mock();
    // Output dominates the price, so one answer costs a visible amount.
    let config = format!(
        r#"{providers}
[server]
admin_token = "{TOKEN}"
admin_listen = "127.0.0.1:0"

[[prices]]
model = "gpt-*"
input_per_mtok = 1.0
output_per_mtok = 80.0
max_output_tokens = 64

[[tenants]]
name = "acme"
keys = ["sk-acme"]
budget_usd = {{ day = 10.0, total = 100.0 }}

[plugins.throttle.config]
anonymous = {{ requests_per_minute = 100000, tokens_per_minute = 100000000 }}

[jobs]
enabled = true
concurrency = 2
poll_ms = 50
"#,
        providers = providers(&up)
    );
    let gw = TestGateway::start(&config).await;
    let _workers = sluice::job_runner::spawn_workers(&gw.gw).unwrap();
    let admin = gw.spawn_admin_listener().await;
    let client = reqwest::Client::new();

    // One answer now, priced: its cost header.
    let r = client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-acme")
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a priced question"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sync_cost: f64 = r.headers()["x-sluice-cost-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(sync_cost > 0.0);
    // One job, at high priority, run by this node's workers.
    let r = client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-acme")
        .header("prefer", "respond-async")
        .header("x-sluice-priority", "high")
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a question for later"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v: Value = client
            .get(gw.url(&format!("/v1/jobs/{id}")))
            .bearer_auth("sk-acme")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["status"] == "succeeded" {
            break;
        }
        assert!(
            v["status"] == "queued" || v["status"] == "running",
            "job {v}"
        );
        assert!(Instant::now() < deadline, "job not done: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What the spend records say the tenant spent today (both answers).
    let report: Value = client
        .get(format!("http://{admin}/admin/spend"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tenant"] == "acme")
        .unwrap_or_else(|| panic!("acme in {report}"))
        .clone();
    let spent = row["cost_usd"].as_f64().unwrap();
    assert!(
        spent > sync_cost * 1.2,
        "the job is charged too: {spent} vs {sync_cost}"
    );

    let page = format!("http://{admin}/dashboard");
    let driver = std::thread::spawn(move || {
        let mut b = Browser::launch();
        b.call("Page.navigate", json!({"url": page}));
        b.wait_for(
            "document.readyState === 'complete' && !document.querySelector('#login').hidden",
            Duration::from_secs(20),
        );
        b.eval(&format!(
            "document.querySelector('#token').value = '{TOKEN}'; \
             document.querySelector('#login').requestSubmit(); true"
        ));
        b.wait_for(
            "!document.querySelector('#board').hidden && \
             !document.querySelector('[data-panel=budgets]').hidden && \
             !document.querySelector('[data-panel=jobs]').hidden && \
             document.querySelector('[data-table=budgets] tr[data-tenant=acme]') !== null && \
             document.querySelector('[data-metric=\"jobs-succeeded\"]').textContent === '1'",
            Duration::from_secs(20),
        );
        let sized = read_json(
            &mut b,
            "JSON.stringify(['budgets', 'jobs'].map(p => \
             document.querySelector('[data-panel=' + p + ']').getBoundingClientRect().height > 40))",
        );
        assert_eq!(sized, json!([true, true]));

        // Spend and budgets: the tenant's row and the totals.
        let budgets = read_json(
            &mut b,
            "JSON.stringify({cells: [...document.querySelectorAll('[data-table=budgets] tr[data-tenant=acme] td')]\
             .map(td => td.textContent), total: document.querySelector('[data-metric=\"spend-total\"]').textContent, \
             refusals: document.querySelector('[data-metric=\"budget-refusals\"]').textContent})",
        );
        let cells: Vec<String> = serde_json::from_value(budgets["cells"].clone()).unwrap();
        assert_eq!(cells.len(), 7, "{budgets}");
        assert_eq!(cells[0], "acme");
        // toPrecision(3): within 0.5 % of the records.
        let close = |shown: f64| (shown - spent).abs() <= spent * 0.005;
        assert!(close(dollars(&cells[1])), "spent {} vs {spent}", cells[1]);
        assert!(
            close(dollars(budgets["total"].as_str().unwrap())),
            "{budgets}"
        );
        assert_eq!(cells[3], "0", "no refusals: {budgets}");
        // day: spent of $10.00 with its share; no monthly cap; total of $100.00.
        assert!(cells[4].contains(" of $10.00 · "), "{}", cells[4]);
        assert!(close(dollars(&cells[4])), "{} vs {spent}", cells[4]);
        let share = format!("{:.1}%", spent / 10.0 * 100.0);
        assert!(cells[4].ends_with(&share), "{} vs {share}", cells[4]);
        assert_eq!(cells[5], "no cap");
        assert!(cells[6].contains(" of $100.00 · "), "{}", cells[6]);
        assert!(close(dollars(&cells[6])), "{}", cells[6]);
        assert_eq!(budgets["refusals"], "0");

        // Jobs: one accepted at high priority, succeeded, none queued.
        let jobs = read_json(
            &mut b,
            "JSON.stringify({figures: Object.fromEntries(['queued', 'accepted', 'succeeded', 'failed', 'dead']\
             .map(k => [k, document.querySelector('[data-metric=\"jobs-' + k + '\"]').textContent])), \
             high: [...document.querySelectorAll('[data-table=jobs] tr[data-priority=high] td')].map(td => td.textContent), \
             normal: [...document.querySelectorAll('[data-table=jobs] tr[data-priority=normal] td')].map(td => td.textContent)})",
        );
        assert_eq!(
            jobs["figures"],
            json!({"queued": "0", "accepted": "1", "succeeded": "1", "failed": "0", "dead": "0"}),
            "{jobs}"
        );
        let high: Vec<String> = serde_json::from_value(jobs["high"].clone()).unwrap();
        assert_eq!(high[..3], ["high", "0", "1"], "{jobs}");
        assert!(high[3] != "–" && high[4] != "–", "wait and run p99: {jobs}");
        let normal: Vec<String> = serde_json::from_value(jobs["normal"].clone()).unwrap();
        assert_eq!(normal, ["normal", "0", "0", "–", "–"], "{jobs}");

        let errors = b.errors();
        assert!(errors.is_empty(), "console errors: {errors:#?}");
        b.screenshot()
    });
    let png = tokio::task::spawn_blocking(move || driver.join())
        .await
        .unwrap()
        .expect("the browser checks passed");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-spend-jobs.png");
    std::fs::write(&out, &png).expect("write the screenshot");
    eprintln!("dashboard screenshot: {}", out.display());
    assert!(test_started.elapsed() < Duration::from_secs(60));
}
