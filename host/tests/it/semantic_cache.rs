//! The semantic cache end to end: a real sluice on 127.0.0.1:0 with the
//! mock provider upstream, whose embeddings are deterministic hashed-word
//! unit vectors (texts sharing most words score close), through the
//! `openai` embedder and the reference semantic plugin.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::gateway::{TestGateway, mock, providers};
use crate::support::redis::RedisServer;
use serde_json::{Value, json};
use sluice::cache::Answer;
use sluice::policy::{Route, TokenCount};
use sluice::semantic::{Embedder, IndexKey, IndexSettings, SemanticIndex};
use sluice::state::State;

const DIM: usize = 256;
const THRESHOLD: f32 = 0.85;

fn semantic_toml() -> String {
    format!(
        r#"
[semantic]
enabled = true
embedder = "openai"
model = "text-embedding-3-small"
dimensions = {DIM}

[plugins.semantic.config]
threshold = {THRESHOLD}

[[tenants]]
name = "acme"
tier = "pro"
keys = ["sk-acme"]

[[tenants]]
name = "globex"
tier = "pro"
keys = ["sk-globex"]
"#
    )
}

fn chat(prompt: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]})
}

async fn ask(gw: &TestGateway, key: &str, body: &Value, no_store: bool) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(body);
    if no_store {
        req = req.header("cache-control", "no-store");
    }
    req.send().await.expect("request")
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Entries the node's semantic index reports, summed over namespaces.
fn indexed(gw: &TestGateway) -> i64 {
    gw.gw
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("sluice_semantic_index_entries "))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .sum()
}

/// Waits (bounded) until the node indexed `n` entries: storing runs after
/// the answer went out.
async fn wait_indexed(gw: &TestGateway, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while indexed(gw) < n {
        assert!(Instant::now() < deadline, "the answer was never indexed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn content(v: &Value) -> &str {
    v["choices"][0]["message"]["content"].as_str().unwrap_or("")
}

fn cosine(a: &str, b: &str) -> f32 {
    let (x, y) = (
        sluice::mock::embedding(a, DIM),
        sluice::mock::embedding(b, DIM),
    );
    x.iter().zip(&y).map(|(p, q)| p * q).sum()
}

const ASKED: &str = "what is the capital city of france and why is it famous";
const REPHRASED: &str = "what is the capital city of france and why is it so famous";

#[tokio::test]
async fn a_rephrased_prompt_is_answered_from_the_semantic_cache() {
    let up = mock();
    let gw = TestGateway::start(&format!("{}{}", providers(&up), semantic_toml())).await;
    let first = ask(&gw, "sk-acme", &chat(ASKED), false).await;
    assert_eq!(header(&first, "x-sluice-cache"), "miss");
    wait_indexed(&gw, 1).await;

    let second = ask(&gw, "sk-acme", &chat(REPHRASED), false).await;
    assert_eq!(second.status(), 200);
    assert_eq!(header(&second, "x-sluice-cache"), "semantic-hit");
    let score: f32 = header(&second, "x-sluice-semantic-score")
        .parse()
        .expect("a numeric score");
    assert!((THRESHOLD..=1.0).contains(&score), "score {score}");
    assert!((score - cosine(ASKED, REPHRASED)).abs() < 1e-3);
    let body: Value = second.json().await.expect("json");
    assert_eq!(content(&body), format!("mock answer to: {ASKED}"));
    assert_eq!(
        up.calls(Route::Chat),
        1,
        "the rephrasing never went upstream"
    );

    // An unrelated prompt is not answered from it.
    let other = ask(&gw, "sk-acme", &chat("bake a chocolate cake"), false).await;
    assert_eq!(header(&other, "x-sluice-cache"), "miss");
    let metrics = gw.gw.metrics.encode();
    assert!(
        metrics.contains("sluice_cache_outcomes_total{outcome=\"semantic-hit\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_semantic_embed_duration_seconds_count{embedder=\"openai\"}"));
}

#[tokio::test]
async fn negations_and_changed_numbers_are_never_semantic_hits() {
    let up = mock();
    let gw = TestGateway::start(&format!("{}{}", providers(&up), semantic_toml())).await;
    let pairs = [
        (
            "please convert 5 kilometres into miles for my weekly running training plan",
            "please convert 50 kilometres into miles for my weekly running training plan",
        ),
        (
            "is python a programming language that is statically typed at compile time",
            "is python a programming language that is not statically typed at compile time",
        ),
    ];
    for (i, (stored, asked)) in pairs.iter().enumerate() {
        // Close enough for the threshold: only the plugin's guard refuses.
        assert!(cosine(stored, asked) >= THRESHOLD, "{stored} / {asked}");
        let r = ask(&gw, "sk-acme", &chat(stored), false).await;
        assert_eq!(header(&r, "x-sluice-cache"), "miss");
        wait_indexed(&gw, 2 * i as i64 + 1).await;
        let r = ask(&gw, "sk-acme", &chat(asked), false).await;
        assert_eq!(header(&r, "x-sluice-cache"), "miss", "{asked}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(content(&body), format!("mock answer to: {asked}"));
        wait_indexed(&gw, 2 * i as i64 + 2).await;
    }
}

#[tokio::test]
async fn tenants_never_share_semantic_answers() {
    let up = mock();
    let gw = TestGateway::start(&format!("{}{}", providers(&up), semantic_toml())).await;
    let r = ask(&gw, "sk-acme", &chat(ASKED), false).await;
    assert_eq!(header(&r, "x-sluice-cache"), "miss");
    wait_indexed(&gw, 1).await;
    // Another tenant asking the same thing gets its own answer.
    let r = ask(&gw, "sk-globex", &chat(REPHRASED), false).await;
    assert_eq!(header(&r, "x-sluice-cache"), "miss");
    let r = ask(&gw, "sk-acme", &chat(REPHRASED), false).await;
    assert_eq!(header(&r, "x-sluice-cache"), "semantic-hit");
    assert_eq!(up.calls(Route::Chat), 2);
}

#[tokio::test]
async fn a_streaming_request_gets_the_semantic_hit_as_a_stream() {
    let up = mock();
    let gw = TestGateway::start(&format!("{}{}", providers(&up), semantic_toml())).await;
    // Stored from a stream, replayed as a stream and as JSON.
    let mut streamed = chat(ASKED);
    streamed["stream"] = json!(true);
    let r = ask(&gw, "sk-acme", &streamed, false).await;
    assert_eq!(header(&r, "x-sluice-cache"), "miss");
    let original = r.text().await.expect("stream");
    wait_indexed(&gw, 1).await;

    let mut rephrased = chat(REPHRASED);
    rephrased["stream"] = json!(true);
    let r = ask(&gw, "sk-acme", &rephrased, false).await;
    assert_eq!(header(&r, "x-sluice-cache"), "semantic-hit");
    assert!(header(&r, "content-type").starts_with("text/event-stream"));
    assert!(!header(&r, "x-sluice-semantic-score").is_empty());
    let replayed = r.text().await.expect("stream");
    assert_eq!(replayed, original, "the recorded stream replays as it was");
    assert!(replayed.trim_end().ends_with("data: [DONE]"), "{replayed}");

    let r = ask(&gw, "sk-acme", &chat(REPHRASED), false).await;
    assert_eq!(header(&r, "x-sluice-cache"), "semantic-hit");
    let body: Value = r.json().await.expect("json");
    assert_eq!(content(&body), format!("mock answer to: {ASKED}"));
    assert_eq!(up.calls(Route::Chat), 1);
}

#[tokio::test]
async fn a_prompt_stored_on_one_node_is_a_semantic_hit_on_another_through_redis() {
    let redis = RedisServer::start();
    let up = mock();
    let config = format!(
        "{}{}\n[state]\nkind = \"redis\"\nurl = \"{}\"\non_error = \"fail-closed\"\nop_timeout_ms = 2000\n",
        providers(&up),
        semantic_toml(),
        redis.url()
    );
    let a = TestGateway::start(&config).await;
    let b = TestGateway::start(&config).await;
    let r = ask(&a, "sk-acme", &chat(ASKED), false).await;
    assert_eq!(header(&r, "x-sluice-cache"), "miss");
    wait_indexed(&a, 1).await;
    let r = ask(&b, "sk-acme", &chat(REPHRASED), false).await;
    assert_eq!(header(&r, "x-sluice-cache"), "semantic-hit");
    let body: Value = r.json().await.expect("json");
    assert_eq!(content(&body), format!("mock answer to: {ASKED}"));
    // Never across tenants, on any node.
    let r = ask(&b, "sk-globex", &chat(ASKED), false).await;
    assert_eq!(header(&r, "x-sluice-cache"), "miss");
    assert_eq!(up.calls(Route::Chat), 2);
}

#[tokio::test]
async fn a_node_that_already_mirrors_a_namespace_sees_new_entries_within_a_second() {
    let redis = RedisServer::start();
    let connect = || async {
        State::connect(&sluice::state::StateSettings::redis(redis.url()))
            .await
            .expect("redis")
    };
    let writer = SemanticIndex::new(connect().await, IndexSettings::default());
    let reader = SemanticIndex::new(connect().await, IndexSettings::default());
    let key = IndexKey::new("acme", "ns");
    let ttl = Duration::from_secs(60);
    writer
        .insert(&key, unit(1), "first", &answer("a1"), ttl)
        .await
        .expect("insert");
    let first = reader.search(&key, &unit(2)).await.expect("search");
    assert_eq!(first.map(|h| h.seq), Some(1));
    // The reader's mirror is now fresh; a new entry must reach it by sync.
    writer
        .insert(&key, unit(2), "second", &answer("a2"), ttl)
        .await
        .expect("insert");
    let written = Instant::now();
    loop {
        let hit = reader.search(&key, &unit(2)).await.expect("search");
        if hit.as_ref().is_some_and(|h| h.seq == 2) {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_secs(1),
            "not synced within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let answer = reader.answer(&key, 2).await.expect("get").expect("answer");
    assert_eq!(answer.body_bytes().as_ref(), b"a2");
}

fn answer(text: &str) -> Answer {
    Answer::json(
        Route::Chat,
        bytes::Bytes::from(text.to_owned()),
        TokenCount::new(1, 1),
    )
}

fn unit(i: usize) -> Vec<f32> {
    sluice::mock::embedding(&format!("entry number {i} about topic {i}"), 64)
}

#[tokio::test]
async fn a_namespace_keeps_at_most_its_bound_and_evicts_the_oldest() {
    let state = State::memory();
    let settings = IndexSettings {
        max_entries: 3,
        ..IndexSettings::default()
    };
    let writer = SemanticIndex::new(state.clone(), settings);
    let reader = SemanticIndex::new(state.clone(), settings);
    let key = IndexKey::new("acme", "ns");
    let ttl = Duration::from_secs(60);
    for i in 1..=5 {
        let seq = writer
            .insert(
                &key,
                unit(i),
                &format!("prompt {i}"),
                &answer(&format!("a{i}")),
                ttl,
            )
            .await
            .expect("insert");
        assert_eq!(seq, i as u64);
    }
    assert_eq!(writer.len(&key).await, 3);
    // Another node catching up sees the same bound.
    let hit = reader.search(&key, &unit(1)).await.expect("search");
    assert_eq!(reader.len(&key).await, 3);
    assert!(hit.is_some_and(|h| h.seq >= 3), "entry 1 was evicted");
    let best = reader
        .search(&key, &unit(5))
        .await
        .expect("search")
        .expect("hit");
    assert_eq!((best.seq, best.prompt.as_str()), (5, "prompt 5"));
    assert!(best.score > 0.999);
    // The evicted entries' answers are gone from the shared state too.
    assert!(writer.answer(&key, 1).await.expect("get").is_none());
    assert!(writer.answer(&key, 2).await.expect("get").is_none());
    let kept = writer.answer(&key, 5).await.expect("get").expect("kept");
    assert_eq!(kept.body_bytes().as_ref(), b"a5");
    // Other namespaces and tenants are untouched by the bound.
    assert!(
        reader
            .search(&IndexKey::new("globex", "ns"), &unit(5))
            .await
            .expect("search")
            .is_none()
    );
}

#[tokio::test]
async fn expired_entries_are_never_candidates() {
    let index = SemanticIndex::new(State::memory(), IndexSettings::default());
    let key = IndexKey::new("acme", "ns");
    index
        .insert(&key, unit(1), "p", &answer("a"), Duration::from_millis(50))
        .await
        .expect("insert");
    let deadline = Instant::now() + Duration::from_secs(5);
    while index
        .search(&key, &unit(1))
        .await
        .expect("search")
        .is_some()
    {
        assert!(Instant::now() < deadline, "the entry never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The local all-MiniLM-L6-v2 model, when scripts/setup fetched it.
fn local_model_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("SLUICE_MINILM_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/models/all-minilm-l6-v2")
        });
    dir.join("model.safetensors").exists().then_some(dir)
}

#[tokio::test]
async fn the_local_model_scores_paraphrases_above_unrelated_prompts() {
    let Some(dir) = local_model_dir() else {
        eprintln!("skipped: all-MiniLM-L6-v2 not found (run scripts/setup)");
        return;
    };
    let model = Arc::new(
        tokio::task::spawn_blocking(move || sluice::semantic::LocalEmbedder::load(&dir))
            .await
            .expect("join")
            .expect("the model loads"),
    );
    let a = model
        .embed("How do I reset my password?")
        .await
        .expect("embed");
    let b = model
        .embed("What are the steps to reset my password?")
        .await
        .expect("embed");
    let c = model
        .embed("Recommend a good recipe for banana bread.")
        .await
        .expect("embed");
    assert_eq!(a.len(), 384);
    let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4);
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
    let close = dot(&a, &b);
    let far = dot(&a, &c);
    assert!(close > 0.8, "paraphrase scored {close}");
    assert!(far < 0.3, "unrelated scored {far}");
}

/// A near miss of [`ASKED`] scoring about as close as [`REPHRASED`].
const NEAR_TOO: &str = "what is the capital city of france and why is it really famous";
/// [`ASKED`] as another client writes it: the same words, the same order.
const SAME_WORDS: &str = "What is the capital city of France, and why is it famous?";

/// Asks `prompt` as acme on `gw` with extra headers; the cache outcome and
/// the answer's content.
async fn outcome(gw: &TestGateway, prompt: &str, headers: &[(&str, &str)]) -> (String, String) {
    let mut req = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-acme")
        .json(&chat(prompt));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let r = req.send().await.expect("request");
    assert_eq!(r.status(), 200);
    let cache = header(&r, "x-sluice-cache").to_owned();
    let body: Value = r.json().await.expect("json");
    (cache, content(&body).to_owned())
}

fn metric(gw: &TestGateway, name: &str) -> f64 {
    crate::support::scrape::sample(&gw.gw.metrics.encode(), name).unwrap_or(0.0)
}

#[tokio::test]
async fn a_reasked_semantic_hit_teaches_its_entry_to_refuse_as_close_a_prompt() {
    let (s1, s2, s3) = (
        cosine(ASKED, REPHRASED),
        cosine(ASKED, NEAR_TOO),
        cosine(ASKED, SAME_WORDS),
    );
    // NEAR_TOO is no closer to ASKED than REPHRASED was (within the 0.01
    // margin), and closer to ASKED than to REPHRASED; SAME_WORDS is closer.
    assert!(s2 >= THRESHOLD && s2 <= s1 + 0.01, "{s1} {s2}");
    assert!(s2 > cosine(REPHRASED, NEAR_TOO), "{s2}");
    assert!(s3 > s1 + 0.01, "{s3}");
    let up = mock();
    let gw = TestGateway::start(&format!("{}{}", providers(&up), semantic_toml())).await;
    assert_eq!(outcome(&gw, ASKED, &[]).await.0, "miss");
    wait_indexed(&gw, 1).await;
    let answer_to_asked = format!("mock answer to: {ASKED}");
    assert_eq!(
        outcome(&gw, REPHRASED, &[]).await,
        ("semantic-hit".to_owned(), answer_to_asked.clone())
    );
    // The client asks the very same thing again: that answer was not what
    // it wanted. This one goes upstream, and the entry learns.
    assert_eq!(
        outcome(&gw, REPHRASED, &[]).await,
        ("miss".to_owned(), format!("mock answer to: {REPHRASED}"))
    );
    assert_eq!(metric(&gw, "sluice_semantic_contradictions_total"), 1.0);
    wait_indexed(&gw, 2).await;
    // Before, NEAR_TOO was a semantic hit on ASKED's entry (its score is
    // over the threshold); now the entry wants more.
    assert_eq!(outcome(&gw, NEAR_TOO, &[]).await.0, "miss");
    assert_eq!(metric(&gw, "sluice_semantic_distrusted_total"), 1.0);
    // A closer prompt is still answered by it.
    assert_eq!(
        outcome(&gw, SAME_WORDS, &[]).await,
        ("semantic-hit".to_owned(), answer_to_asked)
    );
}

#[tokio::test]
async fn explicit_feedback_on_one_node_is_learned_by_every_node() {
    let redis = RedisServer::start();
    let up = mock();
    let config = format!(
        "{}{}\n[state]\nkind = \"redis\"\nurl = \"{}\"\non_error = \"fail-closed\"\nop_timeout_ms = 2000\n",
        providers(&up),
        semantic_toml().replace(
            "dimensions = 256",
            "dimensions = 256\nreask_window_seconds = 0"
        ),
        redis.url()
    );
    let a = TestGateway::start(&config).await;
    let b = TestGateway::start(&config).await;
    assert_eq!(outcome(&a, ASKED, &[]).await.0, "miss");
    wait_indexed(&a, 1).await;
    assert_eq!(outcome(&b, NEAR_TOO, &[]).await.0, "semantic-hit");
    // Re-asking is no signal with the window off …
    assert_eq!(outcome(&b, NEAR_TOO, &[]).await.0, "semantic-hit");
    // … the feedback header is, on any node.
    let wrong = [("x-sluice-semantic-feedback", "wrong")];
    assert_eq!(
        outcome(&a, NEAR_TOO, &wrong).await,
        ("miss".to_owned(), format!("mock answer to: {NEAR_TOO}"))
    );
    assert_eq!(metric(&a, "sluice_semantic_contradictions_total"), 1.0);
    // Node b now refuses REPHRASED, as close to ASKED as NEAR_TOO was, but
    // not the closer SAME_WORDS.
    assert_eq!(outcome(&b, REPHRASED, &[]).await.0, "miss");
    assert_eq!(
        outcome(&b, SAME_WORDS, &[]).await,
        (
            "semantic-hit".to_owned(),
            format!("mock answer to: {ASKED}")
        )
    );
}
