//! The shipped example configs load, and load into what they say.

use std::path::{Path, PathBuf};

use serde_json::json;
use sluice::config::{Config, ConfigError, PluginSource, ProviderKind, Secret};
use sluice::policy::FailurePolicy;
use sluice::state::StateKind;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn read(name: &str) -> String {
    let path = examples_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every variable is set, to a value that names it.
fn any_env(name: &str) -> Option<String> {
    Some(format!("value-of-{name}"))
}

#[test]
fn every_example_config_loads() {
    let mut seen = 0;
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Err(e) = Config::from_toml_str(&text, &any_env) {
                panic!("{} does not load: {e}", path.display());
            }
            seen += 1;
        }
    }
    assert!(seen >= 2, "expected sluice.toml and minimal.toml");
}

#[test]
fn the_full_example_loads_into_what_it_documents() {
    let c = Config::from_toml_str(&read("sluice.toml"), &any_env).unwrap();

    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(
        c.server.admin_token,
        Some(Secret::new("value-of-SLUICE_ADMIN_TOKEN"))
    );
    assert_eq!(c.server.admin_listen.map(|a| a.port()), Some(9090));
    assert_eq!(c.state.kind, StateKind::Memory);

    let route = |m: &str| c.route(m).map(|p| p.name.as_str());
    assert_eq!(route("claude-3-5-haiku-latest"), Some("anthropic"));
    assert_eq!(route("gpt-4o-mini"), Some("openai"));
    assert_eq!(route("o3-mini"), Some("openai"));
    assert_eq!(route("text-embedding-3-small"), Some("openai"));
    assert_eq!(route("meta-llama/Llama-3.1-8B-Instruct"), Some("local"));
    assert_eq!(route("mistral-large"), None);
    let anthropic = c.provider("anthropic").unwrap();
    assert_eq!(anthropic.kind, ProviderKind::Anthropic);
    assert_eq!(
        anthropic.keys,
        vec![Secret::new("value-of-ANTHROPIC_API_KEY")]
    );
    assert!(c.provider("local").unwrap().keys.is_empty());

    assert_eq!(
        c.tenant_for_key("sk-acme-2").map(|t| t.name.as_str()),
        Some("acme")
    );
    assert_eq!(
        c.tenant_for_key("sk-globex-1").map(|t| t.tier.as_str()),
        Some("free")
    );
    assert_eq!(c.tenant_for_key("sk-unknown"), None);

    assert_eq!(c.plugins.throttle.source, PluginSource::Builtin);
    assert_eq!(c.plugins.throttle.failure, FailurePolicy::FailOpen);
    assert_eq!(
        c.plugins.throttle.config["tiers"]["pro"],
        json!({"requests_per_minute": 1000, "tokens_per_minute": 400000,
               "requests_per_second": 50, "requests_per_day": 500000, "tokens_per_day": 50000000})
    );
    let openai = c.provider("openai").unwrap();
    assert_eq!(openai.quota_of(0).and_then(|q| q.rph), Some(20000));
    assert_eq!(c.plugins.retry.config["retry_on"][6], json!(529));
    assert_eq!(c.plugins.semantic.config["threshold"], json!(0.92));
}

#[test]
fn the_full_example_names_each_missing_secret() {
    let text = read("sluice.toml");
    let err = Config::from_toml_str(&text, &|name| {
        (name != "ANTHROPIC_API_KEY").then(|| "x".to_owned())
    })
    .unwrap_err();
    assert!(matches!(err, ConfigError::MissingEnv { .. }));
    assert_eq!(
        err.to_string(),
        "providers[0].keys[0]: environment variable ANTHROPIC_API_KEY is not set"
    );
}

#[test]
fn the_minimal_example_routes_everything_to_one_provider() {
    let c = Config::from_toml_str(&read("minimal.toml"), &|name| {
        (name == "OPENAI_API_KEY").then(|| "sk-test".to_owned())
    })
    .unwrap();
    assert_eq!(c.providers.len(), 1);
    assert_eq!(
        c.route("anything-at-all").map(|p| p.name.as_str()),
        Some("openai")
    );
    assert_eq!(c.providers[0].keys, vec![Secret::new("sk-test")]);
    assert!(c.anonymous_allowed());
}

#[test]
fn a_config_file_error_names_the_field_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[providers]]\nname = \"openai\"\nkind = \"openia\"\nmodels = [\"*\"]\n",
    )
    .unwrap();
    let err = Config::load(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        "providers[0].kind: unknown variant `openia`, expected one of `openai`, `anthropic`, `azure`, `gemini` (line 3)"
    );
}

#[test]
fn metrics_built_from_the_example_label_its_providers_and_tenants() {
    let c = Config::from_toml_str(&read("sluice.toml"), &any_env).unwrap();
    let text = c.metrics().encode();
    for series in [
        "sluice_upstream_attempts_total{provider=\"local\",outcome=\"ok\"} 0",
        "sluice_throttle_rejects_total{tenant=\"globex\"} 0",
        "sluice_throttle_rejects_total{tenant=\"anonymous\"} 0",
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }
}
