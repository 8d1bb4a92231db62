use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::json;

use super::*;
use crate::policy::FailurePolicy;
use crate::state::{OnError, StateKind};
use crate::telemetry::LogFormat;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, &no_env)
}

fn parse_with(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::from_toml_str(text, &move |name| vars.get(name).cloned())
}

/// The error message for `text`, which must fail.
fn error(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[track_caller]
fn assert_error_at(text: &str, path: &str, needle: &str) {
    let err = parse(text).expect_err("config should be rejected");
    assert_eq!(err.field_path(), Some(path), "{err}");
    let shown = err.to_string();
    assert!(shown.starts_with(&format!("{path}: ")), "{shown}");
    assert!(
        shown.contains(needle),
        "{shown:?} should contain {needle:?}"
    );
}

// === defaults ===

#[test]
fn an_empty_file_is_the_documented_defaults() {
    let c = parse("").unwrap();
    assert_eq!(
        c.server.listen,
        "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.server.max_body_bytes, 4 * 1024 * 1024);
    assert_eq!(c.server.admin_token, None);
    assert!(!c.server.admin_enabled());
    assert_eq!(c.server.admin_listen, None);
    assert_eq!(c.server.request_timeout_ms, 120_000);
    assert_eq!(c.server.shutdown_grace_ms, 30_000);
    assert_eq!(c.state.kind, StateKind::Memory);
    assert_eq!(c.state.on_error, OnError::FailOpen);
    assert!(c.providers.is_empty());
    assert!(c.anonymous_allowed());
    assert_eq!(c.anonymous.tier, "anonymous");
    assert!(c.tenants.is_empty());
    assert!(c.cache.enabled);
    assert_eq!(c.cache.max_bytes, 64 * 1024 * 1024);
    assert_eq!(c.cache.max_entry_bytes, 1024 * 1024);
    assert!(c.cache.coalesce_across_nodes);
    assert_eq!(c.retry.budget_ratio, 0.2);
    assert_eq!(c.retry.budget_min_per_sec, 10);
    assert_eq!(c.retry.max_attempts_cap, 10);
    assert!(!c.semantic.enabled);
    assert_eq!(c.semantic.embedder, EmbedderKind::Openai);
    assert_eq!(c.semantic.max_bytes, 64 * 1024 * 1024);
    assert_eq!(c.semantic.max_namespaces, 4096);
    assert_eq!(c.semantic.reask_window_seconds, 120);
    assert_eq!(c.semantic.learn_margin, 0.01);
    for (_, slot) in c.plugins.iter() {
        assert_eq!(slot.source, PluginSource::Builtin);
        assert_eq!(slot.failure, FailurePolicy::FailOpen);
        assert_eq!(slot.config, json!({}));
        assert_eq!(slot.limits.memory_mib, 16);
        assert_eq!(slot.limits.deadline_ms, 50);
    }
    assert_eq!(c.telemetry.log_format, LogFormat::Text);
    assert_eq!(c.telemetry.log_level, "info");
    assert_eq!(c.route("gpt-4o"), None);
}

#[test]
fn provider_fields_default_from_kind() {
    let c = parse("[[providers]]\nkind = \"anthropic\"\nmodels = [\"claude-*\"]").unwrap();
    let p = &c.providers[0];
    assert_eq!(p.name, "anthropic");
    assert_eq!(p.base_url, "https://api.anthropic.com");
    assert_eq!(p.anthropic_version, "2023-06-01");
    assert_eq!(p.timeout_ms, 60_000);
    assert_eq!(p.connect_timeout_ms, 5_000);
    assert_eq!(p.key_cooldown_ms, 30_000);

    let c = parse("[[providers]]\nbase_url = \"http://127.0.0.1:11434/v1/\"").unwrap();
    assert_eq!(c.providers[0].name, "openai");
    assert_eq!(c.providers[0].kind, ProviderKind::Openai);
    assert_eq!(c.providers[0].base_url, "http://127.0.0.1:11434/v1");
}

// === the DESIGN.md example ===

const DESIGN_EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:8080"        # `sluice serve --listen` overrides
max_body_bytes = 4194304
admin_token = "env:SLUICE_ADMIN_TOKEN"
admin_on_listen = true           # /admin on `listen`, behind the token

[state]
kind = "memory"                  # or "redis"
on_error = "fail-open"           # or "fail-closed"

[[providers]]
name = "openai"
kind = "openai"                  # any OpenAI-compatible server; or "anthropic"
base_url = "https://api.openai.com/v1"
keys = ["env:OPENAI_API_KEY"]    # several keys form a pool
models = ["gpt-*", "text-embedding-*"]

[semantic]
embedder = "openai"              # or "local" (model files on disk)
model = "text-embedding-3-small"

[[tenants]]
name = "acme"
tier = "pro"
keys = ["sk-acme-1"]             # virtual keys clients send as Bearer tokens

[plugins.throttle]               # slots: cache_key, semantic, throttle, retry
source = "builtin"               # or a path to a .wasm component
failure = "fail-open"            # or "fail-closed"
[plugins.throttle.config]        # handed to the plugin as its own config
tiers.free = { requests_per_minute = 100, tokens_per_minute = 20000 }
tiers.pro  = { requests_per_minute = 1000, tokens_per_minute = 400000 }
anonymous  = { requests_per_minute = 20 }
"#;

#[test]
fn the_design_example_loads() {
    let c = parse_with(
        DESIGN_EXAMPLE,
        &[
            ("SLUICE_ADMIN_TOKEN", "admin-secret"),
            ("OPENAI_API_KEY", "sk-upstream"),
        ],
    )
    .unwrap();
    assert_eq!(
        c.server.admin_token.as_ref().map(Secret::expose),
        Some("admin-secret")
    );
    assert!(c.server.admin_enabled());
    assert_eq!(c.providers[0].keys, vec![Secret::new("sk-upstream")]);
    assert_eq!(c.route("gpt-4o").map(|p| p.name.as_str()), Some("openai"));
    assert_eq!(
        c.route("text-embedding-3-small").map(|p| p.name.as_str()),
        Some("openai")
    );
    assert_eq!(c.route("claude-3-haiku"), None);
    assert_eq!(
        c.tenant_for_key("sk-acme-1").map(|t| t.tier.as_str()),
        Some("pro")
    );
    assert_eq!(
        c.plugins.throttle.config,
        json!({
            "tiers": {
                "free": {"requests_per_minute": 100, "tokens_per_minute": 20000},
                "pro": {"requests_per_minute": 1000, "tokens_per_minute": 400000}
            },
            "anonymous": {"requests_per_minute": 20}
        })
    );
}

#[test]
fn the_design_example_names_its_missing_variable() {
    let err = parse_with(DESIGN_EXAMPLE, &[("OPENAI_API_KEY", "sk-upstream")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "server.admin_token: environment variable SLUICE_ADMIN_TOKEN is not set"
    );
    let err = parse_with(DESIGN_EXAMPLE, &[("SLUICE_ADMIN_TOKEN", "t")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "providers[0].keys[0]: environment variable OPENAI_API_KEY is not set"
    );
}

// === parse errors name the field ===

#[test]
fn a_bad_enum_value_names_the_field_and_the_choices() {
    let err = parse("[[providers]]\nname = \"x\"\n\n[[providers]]\nkind = \"openia\"").unwrap_err();
    let shown = err.to_string();
    assert_eq!(err.field_path(), Some("providers[1].kind"), "{shown}");
    assert!(
        shown.starts_with(
            "providers[1].kind: unknown variant `openia`, expected one of `openai`, `anthropic`, `azure`, `gemini`"
        ),
        "{shown}"
    );
    assert!(shown.ends_with("(line 5)"), "{shown}");
    assert_error_at(
        "[state]\non_error = \"fail_open\"",
        "state.on_error",
        "fail-open",
    );
    assert_error_at(
        "[telemetry]\nlog_format = \"xml\"",
        "telemetry.log_format",
        "json",
    );
    assert_error_at(
        "[plugins.retry]\nfailure = \"open\"",
        "plugins.retry.failure",
        "fail-closed",
    );
    assert_error_at(
        "[semantic]\nembedder = \"bert\"",
        "semantic.embedder",
        "local",
    );
}

#[test]
fn unknown_fields_are_rejected_with_their_path() {
    assert_error_at(
        "[server]\nlisen = \"0.0.0.0:1\"",
        "server.lisen",
        "unknown field `lisen`",
    );
    assert_error_at(
        "[[tenants]]\nname = \"a\"\nkey = [\"k\"]",
        "tenants[0].key",
        "unknown field",
    );
    assert_error_at(
        "[plugins.throttle.limits]\nfuel = 1",
        "plugins.throttle.limits.fuel",
        "unknown field",
    );
    assert_error_at(
        "[plugins.ratelimit]\nsource = \"builtin\"",
        "plugins.ratelimit",
        "unknown field",
    );
    assert_error_at("[servers]\nlisten = \"x\"", "servers", "unknown field");
    assert_error_at(
        "[state]\nurls = [\"redis://h\"]",
        "state.urls",
        "unknown field",
    );
}

#[test]
fn a_wrong_type_names_the_field() {
    assert_error_at(
        "[server]\nmax_body_bytes = \"4MB\"",
        "server.max_body_bytes",
        "invalid type",
    );
    assert_error_at(
        "[server]\nlisten = \"localhost\"",
        "server.listen",
        "address",
    );
    assert_error_at(
        "[[providers]]\nkeys = \"sk-1\"",
        "providers[0].keys",
        "invalid type",
    );
    assert_error_at(
        "[retry]\nmax_attempts_cap = -1",
        "retry.max_attempts_cap",
        "",
    );
    assert_error_at(
        "[plugins.cache_key]\nconfig = 3",
        "plugins.cache_key.config",
        "expected a table",
    );
}

#[test]
fn invalid_toml_reports_line_and_column() {
    let err = parse("[server]\nlisten = \n").unwrap_err();
    match err {
        ConfigError::Syntax { line, .. } => assert_eq!(line, 2),
        other => panic!("expected a syntax error, got {other}"),
    }
}

// === validation names the field ===

#[test]
fn provider_rules() {
    assert_error_at(
        "[[providers]]\nname = \"a\"\n[[providers]]\nname = \"a\"",
        "providers[1].name",
        "duplicate provider name `a` (also providers[0])",
    );
    // Two unnamed providers of the same kind collide on the defaulted name.
    assert_error_at(
        "[[providers]]\n[[providers]]",
        "providers[1].name",
        "duplicate",
    );
    assert_error_at(
        "[[providers]]\nname = \"has space\"",
        "providers[0].name",
        "not a valid name",
    );
    assert_error_at(
        "[[providers]]\nbase_url = \"api.openai.com\"",
        "providers[0].base_url",
        "http:// or https://",
    );
    assert_error_at(
        "[[providers]]\nmodels = [\"gpt-*\", \"gpt-[4\"]",
        "providers[0].models[1]",
        "invalid glob",
    );
    assert_error_at(
        "[[providers]]\nmodels = [\"\"]",
        "providers[0].models[0]",
        "empty",
    );
    assert_error_at(
        "[[providers]]\ntimeout_ms = 0",
        "providers[0].timeout_ms",
        "greater than 0",
    );
    assert_error_at(
        "[[providers]]\nfirst_token_timeout_ms = 0",
        "providers[0].first_token_timeout_ms",
        "greater than 0",
    );
    assert_error_at(
        "[[providers]]\nmodels = [\"gpt-*\"]\n[fallbacks]\n\"gpt-4o\" = [\"gpt-4o-mini\", \"claude-x\"]",
        "fallbacks.gpt-4o[1]",
        "no provider serves the model `claude-x`",
    );
    assert_error_at(
        "[[providers]]\nkeys = [\" \"]",
        "providers[0].keys[0]",
        "empty",
    );
}

#[test]
fn a_virtual_key_belongs_to_one_tenant() {
    let text = r#"
        [[tenants]]
        name = "acme"
        keys = ["sk-shared"]
        [[tenants]]
        name = "globex"
        keys = ["sk-globex", "sk-shared"]
    "#;
    let err = parse(text).unwrap_err();
    let shown = err.to_string();
    assert_eq!(err.field_path(), Some("tenants[1].keys[1]"));
    assert!(
        shown.contains("already used by tenants[0].keys[0]"),
        "{shown}"
    );
    assert!(
        !shown.contains("sk-shared"),
        "the error must not print the key: {shown}"
    );
}

#[test]
fn tenant_rules() {
    assert_error_at(
        "[[tenants]]\nname = \"a\"\n[[tenants]]\nname = \"a\"",
        "tenants[1].name",
        "duplicate tenant name",
    );
    assert_error_at(
        "[[tenants]]\nname = \"anonymous\"",
        "tenants[0].name",
        "reserved",
    );
    assert_error_at("[[tenants]]", "tenants[0].name", "not a valid name");
    assert_error_at(
        "[[tenants]]\nname = \"_x\"",
        "tenants[0].name",
        "not a valid name",
    );
    assert_error_at(
        "[[tenants]]\nname = \"a\"\ntier = \"\"",
        "tenants[0].tier",
        "empty",
    );
    assert_error_at("[anonymous]\ntier = \"\"", "anonymous.tier", "empty");
}

#[test]
fn anonymous_access_is_off_by_default_once_tenants_exist() {
    let tenants = "[[tenants]]\nname = \"acme\"\nkeys = [\"sk-a\"]\n";
    let c = Config::from_toml_str("", &no_env).unwrap();
    assert!(c.anonymous_allowed(), "no tenants: anonymous serves");
    let c = Config::from_toml_str(tenants, &no_env).unwrap();
    assert!(!c.anonymous_allowed(), "tenants: strangers are refused");
    let c =
        Config::from_toml_str(&format!("{tenants}[anonymous]\nallowed = true\n"), &no_env).unwrap();
    assert!(c.anonymous_allowed(), "written allowed = true wins");
    let c = Config::from_toml_str("[anonymous]\nallowed = false\n", &no_env).unwrap();
    assert!(!c.anonymous_allowed());
}

#[test]
fn server_rules() {
    assert_error_at(
        "[server]\nadmin_listen = \"127.0.0.1:9090\"",
        "server.admin_token",
        "required when server.admin_listen is set",
    );
    assert_error_at(
        "[server]\nadmin_token = \"t\"\nadmin_listen = \"127.0.0.1:8080\"",
        "server.admin_listen",
        "must differ",
    );
    assert_error_at(
        "[server]\nadmin_token = \"\"\nadmin_on_listen = true",
        "server.admin_token",
        "empty",
    );
    // /admin is never on the public listener by accident.
    assert_error_at(
        "[server]\nadmin_token = \"t\"",
        "server.admin_listen",
        "admin_on_listen = true",
    );
    assert_error_at(
        "[server]\nadmin_token = \"t\"\nadmin_listen = \"127.0.0.1:9090\"\nadmin_on_listen = true",
        "server.admin_on_listen",
        "one listener",
    );
    assert_error_at(
        "[server]\nmetrics_on_admin_listen = true",
        "server.metrics_on_admin_listen",
        "needs server.admin_listen",
    );
    assert_error_at(
        "[server]\nmetrics_token = \" \"",
        "server.metrics_token",
        "empty",
    );
    assert_error_at(
        "[server]\nmax_body_bytes = 0",
        "server.max_body_bytes",
        "greater than 0",
    );
    assert_error_at(
        "[server]\nmax_messages = 0",
        "server.max_messages",
        "greater than 0",
    );
    assert_error_at(
        "[server]\nrequest_timeout_ms = 0",
        "server.request_timeout_ms",
        "greater than 0",
    );
    for field in [
        "header_read_timeout_ms",
        "body_read_timeout_ms",
        "idle_timeout_ms",
        "write_stall_timeout_ms",
        "max_connections",
        "max_headers",
    ] {
        assert_error_at(
            &format!("[server]\n{field} = 0"),
            &format!("server.{field}"),
            "greater than 0",
        );
    }
    assert_error_at(
        "[server]\nmax_header_bytes = 4096",
        "server.max_header_bytes",
        "at least 8192",
    );
}

#[test]
fn cross_node_coalescing_can_be_switched_off() {
    let c = parse("[cache]\ncoalesce_across_nodes = false").unwrap();
    assert!(!c.cache.coalesce_across_nodes);
    assert_error_at(
        "[cache]\ncoalesce_across_nodes = \"no\"",
        "cache.coalesce_across_nodes",
        "bool",
    );
}

#[test]
fn breakers_default_and_a_provider_overrides_single_fields() {
    let c = parse(
        r#"
[breaker]
min_calls = 50

[[providers]]
kind = "openai"
breaker = { failure_ratio = 0.95, open_for_ms = 1000 }

[[providers]]
kind = "anthropic"
"#,
    )
    .unwrap();
    assert_eq!(c.breaker.failure_ratio, 0.8);
    assert_eq!(c.breaker.min_calls, 50);
    assert_eq!(c.breaker.window_ms, 10_000);
    assert_eq!(c.breaker.half_open_probes, 3);
    assert_eq!(c.breaker.open_for_ms, 5_000);
    assert_eq!(c.breaker.max_open_for_ms, 60_000);
    let openai = c.providers[0].breaker.apply(&c.breaker);
    assert_eq!(
        (openai.failure_ratio, openai.min_calls, openai.open_for_ms),
        (0.95, 50, 1000)
    );
    assert_eq!(c.providers[1].breaker.apply(&c.breaker), c.breaker);
}

#[test]
fn breaker_rules_name_the_field() {
    assert_error_at(
        "[breaker]\nfailure_ratio = 0",
        "breaker.failure_ratio",
        "greater than 0 and at most 1",
    );
    assert_error_at(
        "[breaker]\nfailure_ratio = nan",
        "breaker.failure_ratio",
        "greater than 0 and at most 1",
    );
    assert_error_at(
        "[breaker]\nmin_calls = 0",
        "breaker.min_calls",
        "greater than 0",
    );
    assert_error_at(
        "[breaker]\nwindow_ms = 50",
        "breaker.window_ms",
        "at least 100",
    );
    assert_error_at(
        "[breaker]\nhalf_open_probes = 0",
        "breaker.half_open_probes",
        "greater than 0",
    );
    assert_error_at(
        "[breaker]\nopen_for_ms = 10000\nmax_open_for_ms = 5000",
        "breaker.max_open_for_ms",
        "smaller than open_for_ms (10000)",
    );
    assert_error_at(
        "[[providers]]\nkind = \"openai\"\nbreaker = { open_for_ms = 120000 }",
        "providers[0].breaker.max_open_for_ms",
        "60000 is smaller than open_for_ms (120000)",
    );
    assert_error_at(
        "[[providers]]\nkind = \"openai\"\nbreaker = { threshold = 5 }",
        "providers[0].breaker.threshold",
        "unknown field `threshold`",
    );
}

#[test]
fn limits_must_be_positive_and_consistent() {
    assert_error_at(
        "[cache]\nmax_bytes = 0",
        "cache.max_bytes",
        "greater than 0",
    );
    assert_error_at(
        "[cache]\nmax_bytes = 100\nmax_entry_bytes = 200",
        "cache.max_entry_bytes",
        "larger than cache.max_bytes",
    );
    assert_error_at(
        "[retry]\nbudget_ratio = 1.5",
        "retry.budget_ratio",
        "between 0 and 1",
    );
    assert_error_at(
        "[retry]\nbudget_ratio = nan",
        "retry.budget_ratio",
        "between 0 and 1",
    );
    assert_error_at(
        "[retry]\nmax_attempts_cap = 0",
        "retry.max_attempts_cap",
        "greater than 0",
    );
    assert_error_at(
        "[plugins.semantic.limits]\nmemory_mib = 0",
        "plugins.semantic.limits.memory_mib",
        "between 1 and 4096",
    );
    assert_error_at(
        "[plugins.retry.limits]\ndeadline_ms = 0",
        "plugins.retry.limits.deadline_ms",
        "between 1 and 60000",
    );
    assert_error_at(
        "[plugins.cache_key.limits]\nmax_return_bytes = 0",
        "plugins.cache_key.limits.max_return_bytes",
        "greater than 0",
    );
}

#[test]
fn state_semantic_and_telemetry_rules() {
    assert_error_at(
        "[state]\nkind = \"redis\"",
        "state",
        "needs `url` or `cluster`",
    );
    assert_error_at("[state]\nop_timeout_ms = 0", "state", "op_timeout_ms");
    assert_error_at(
        "[semantic]\nenabled = true\nembedder = \"local\"",
        "semantic.path",
        "required",
    );
    assert_error_at(
        "[semantic]\nenabled = true",
        "semantic.model",
        "no provider serves",
    );
    assert_error_at(
        "[[providers]]\nkind = \"anthropic\"\nmodels = [\"*\"]\n[semantic]\nenabled = true",
        "semantic.model",
        "OpenAI-compatible",
    );
    assert_error_at(
        "[semantic]\nprovider = \"nope\"",
        "semantic.provider",
        "no provider",
    );
    assert_error_at(
        "[semantic]\nmax_bytes = 1000",
        "semantic.max_bytes",
        "1 MiB",
    );
    assert_error_at(
        "[semantic]\nmax_namespaces = 0",
        "semantic.max_namespaces",
        "greater than 0",
    );
    assert_error_at(
        "[semantic]\nmax_bytes = 1048576\nmax_namespaces = 2000",
        "semantic.max_namespaces",
        "one per KiB: 1024",
    );
    assert_error_at(
        "[semantic]\nlearn_margin = 1.5",
        "semantic.learn_margin",
        "between 0 and 1",
    );
    assert_error_at(
        "[telemetry]\nlog_level = \"sluice=loud\"",
        "telemetry.log_level",
        "sluice=loud",
    );
    assert_error_at(
        "[telemetry.otlp]\nendpoint = \"collector:4318\"",
        "telemetry.otlp.endpoint",
        "not an http(s) URL",
    );
    assert_error_at(
        "[telemetry.otlp]\nendpoint = \"http://c:4318/v1/traces\"\nbatch_delay_ms = 0",
        "telemetry.otlp.batch_delay_ms",
        "greater than 0",
    );
    parse("[telemetry.otlp]\nendpoint = \"http://c:4318/v1/traces\"").unwrap();
    // A semantic config that routes is fine.
    parse("[[providers]]\nmodels = [\"text-embedding-*\"]\n[semantic]\nenabled = true").unwrap();
}

#[test]
fn errors_show_the_field_first() {
    // A single readable line an operator can act on.
    let shown = error("[cache]\nmax_bytes = 0");
    assert_eq!(shown, "cache.max_bytes: must be greater than 0");
}

// === env: resolution ===

#[test]
fn env_values_resolve_in_host_fields_only() {
    let text = r#"
        [server]
        admin_token = "env:ADMIN"
        admin_on_listen = true
        [state]
        kind = "redis"
        url = "env:REDIS_URL"
        [[providers]]
        base_url = "env:UPSTREAM"
        keys = ["env:K1", "plain-key"]
        [[tenants]]
        name = "acme"
        keys = ["env:ACME_KEY"]
        [plugins.retry.config]
        note = "env:K1"
    "#;
    let c = parse_with(
        text,
        &[
            ("ADMIN", "adm"),
            ("REDIS_URL", "redis://:pw@127.0.0.1:1"),
            ("UPSTREAM", "http://127.0.0.1:9/v1"),
            ("K1", "sk-1"),
            ("ACME_KEY", "sk-acme"),
        ],
    )
    .unwrap();
    assert_eq!(c.server.admin_token, Some(Secret::new("adm")));
    assert_eq!(c.state.url.as_deref(), Some("redis://:pw@127.0.0.1:1"));
    assert_eq!(c.providers[0].base_url, "http://127.0.0.1:9/v1");
    assert_eq!(
        c.providers[0].keys,
        vec![Secret::new("sk-1"), Secret::new("plain-key")]
    );
    assert_eq!(
        c.tenant_for_key("sk-acme").map(|t| t.name.as_str()),
        Some("acme")
    );
    assert_eq!(c.tenant_for_key("env:ACME_KEY"), None);
    // Plugins never see host secrets through their config.
    assert_eq!(c.plugins.retry.config, json!({"note": "env:K1"}));
    // Nor does a logged config.
    let logged = format!("{c:?}");
    for secret in ["adm\"", "sk-1", "sk-acme", ":pw@"] {
        assert!(!logged.contains(secret), "{secret} leaked into {logged}");
    }
}

#[test]
fn missing_env_names_field_and_variable() {
    let err =
        parse("[state]\nkind = \"redis\"\ncluster = [\"redis://a:1\", \"env:SEED\"]").unwrap_err();
    assert!(matches!(
        &err,
        ConfigError::MissingEnv { path, var } if path == "state.cluster[1]" && var == "SEED"
    ));
    let err = parse("[[tenants]]\nname = \"a\"\nkeys = [\"env:A_KEY\"]").unwrap_err();
    assert_eq!(
        err.to_string(),
        "tenants[0].keys[0]: environment variable A_KEY is not set"
    );
}

// === routing and keys ===

#[test]
fn the_first_matching_provider_serves_a_model() {
    let c = parse(
        r#"
        [[providers]]
        name = "anthropic"
        kind = "anthropic"
        models = ["claude-*"]
        [[providers]]
        name = "local"
        base_url = "http://127.0.0.1:8000/v1"
        models = ["meta-llama/*", "qwen?-*"]
        [[providers]]
        name = "fallback-only"
        [[providers]]
        name = "openai"
        models = ["*"]
        "#,
    )
    .unwrap();
    let route = |m: &str| c.route(m).map(|p| p.name.as_str());
    assert_eq!(route("claude-3-5-sonnet-latest"), Some("anthropic"));
    assert_eq!(route("meta-llama/Llama-3.1-8B-Instruct"), Some("local"));
    assert_eq!(route("qwen2-7b"), Some("local"));
    assert_eq!(route("gpt-4o-mini"), Some("openai"));
    assert_eq!(route(""), Some("openai"));
    assert_eq!(c.provider("fallback-only").map(|p| p.models.len()), Some(0));
    assert!(c.provider("nope").is_none());
}

#[test]
fn virtual_keys_map_to_their_tenant() {
    let c = parse(
        r#"
        [[tenants]]
        name = "acme"
        tier = "pro"
        keys = ["sk-acme-1", "sk-acme-2"]
        [[tenants]]
        name = "globex"
        keys = ["sk-globex"]
        "#,
    )
    .unwrap();
    let tenant = |k: &str| c.tenant_for_key(k).map(|t| t.name.as_str());
    assert_eq!(tenant("sk-acme-2"), Some("acme"));
    assert_eq!(tenant("sk-globex"), Some("globex"));
    assert_eq!(
        c.tenant_for_key("sk-globex").map(|t| t.tier.as_str()),
        Some("default")
    );
    assert_eq!(tenant("sk-acme"), None);
    assert_eq!(tenant(""), None);
    assert_eq!(c.tenant("acme").map(|t| t.keys.len()), Some(2));
}

#[test]
fn prepare_reindexes_after_manual_edits() {
    let mut c = parse("").unwrap();
    let mut p = ProviderConfig::new("local", ProviderKind::Openai);
    p.models = vec!["*".into()];
    c.providers.push(p);
    c.tenants.push(TenantConfig {
        name: "t".into(),
        keys: vec![Secret::new("vk")],
        ..TenantConfig::default()
    });
    assert!(c.route("m").is_none(), "not indexed yet");
    c.prepare().unwrap();
    assert_eq!(c.route("m").map(|p| p.name.as_str()), Some("local"));
    assert_eq!(c.tenant_for_key("vk").map(|t| t.name.as_str()), Some("t"));
}

// === embedded default ===

fn embedded(vars: &[(&str, &str)]) -> Config {
    let vars: HashMap<&str, &str> = vars.iter().copied().collect();
    Config::embedded_default(&move |name| vars.get(name).map(|v| (*v).to_owned()))
}

#[test]
fn embedded_default_without_env_is_one_keyless_openai_provider() {
    let c = embedded(&[]);
    assert_eq!(c.providers.len(), 1);
    let p = &c.providers[0];
    assert_eq!((p.name.as_str(), p.kind), ("openai", ProviderKind::Openai));
    assert_eq!(p.base_url, "https://api.openai.com/v1");
    assert!(p.keys.is_empty());
    assert_eq!(p.models, vec!["*".to_owned()]);
    assert_eq!(
        c.route("claude-3-opus").map(|p| p.name.as_str()),
        Some("openai")
    );
    assert_eq!(c.state.kind, StateKind::Memory);
    assert!(c.anonymous_allowed());
    assert!(!c.server.admin_enabled());
    for (_, slot) in c.plugins.iter() {
        assert_eq!(slot.source, PluginSource::Builtin);
    }
    c.validate().unwrap();
}

#[test]
fn embedded_default_reads_openai_and_anthropic_from_env() {
    let c = embedded(&[
        ("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1/"),
        ("OPENAI_API_KEY", "sk-o"),
        ("ANTHROPIC_API_KEY", "sk-a"),
        ("SLUICE_ADMIN_TOKEN", "adm"),
    ]);
    let names: Vec<&str> = c.providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["anthropic", "openai"]);
    let anthropic = c.provider("anthropic").unwrap();
    assert_eq!(anthropic.base_url, "https://api.anthropic.com");
    assert_eq!(anthropic.keys, vec![Secret::new("sk-a")]);
    let openai = c.provider("openai").unwrap();
    assert_eq!(openai.base_url, "http://127.0.0.1:11434/v1");
    assert_eq!(openai.keys, vec![Secret::new("sk-o")]);
    assert_eq!(
        c.route("claude-3-opus").map(|p| p.name.as_str()),
        Some("anthropic")
    );
    assert_eq!(c.route("llama3").map(|p| p.name.as_str()), Some("openai"));
    assert!(c.server.admin_enabled());

    let c = embedded(&[
        ("ANTHROPIC_BASE_URL", "http://127.0.0.1:1"),
        ("ANTHROPIC_API_KEY", ""),
    ]);
    let anthropic = c.provider("anthropic").unwrap();
    assert_eq!(anthropic.base_url, "http://127.0.0.1:1");
    assert!(anthropic.keys.is_empty(), "an empty variable is unset");

    // Empty variables count as unset.
    let c = embedded(&[("ANTHROPIC_API_KEY", ""), ("OPENAI_BASE_URL", " ")]);
    assert_eq!(c.providers.len(), 1);
    assert_eq!(c.providers[0].base_url, "https://api.openai.com/v1");
}

#[test]
fn load_anchors_relative_paths_at_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(
        &path,
        "[plugins.throttle]\nsource = \"plugins/throttle.wasm\"\n[plugins.retry]\nsource = \"/abs/retry.wasm\"\n[semantic]\nembedder = \"local\"\npath = \"models/minilm\"\n",
    )
    .unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(
        c.plugins.throttle.source,
        PluginSource::Path(dir.path().join("plugins/throttle.wasm"))
    );
    assert_eq!(
        c.plugins.retry.source,
        PluginSource::Path(PathBuf::from("/abs/retry.wasm"))
    );
    assert_eq!(c.semantic.path, Some(dir.path().join("models/minilm")));

    let err = Config::load(dir.path().join("missing.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert!(err.to_string().contains("missing.toml"), "{err}");
}

#[test]
fn metrics_label_the_configured_names() {
    let config = Config::from_toml_str(
        "[[providers]]\nname = \"vllm\"\nmodels = [\"*\"]\n[[tenants]]\nname = \"globex\"",
        &|_| None,
    )
    .unwrap();
    let text = config.metrics().encode();
    assert!(
        text.contains("sluice_retries_total{provider=\"vllm\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("sluice_throttle_rejects_total{tenant=\"globex\"} 0"),
        "{text}"
    );
}

#[test]
fn fallback_chains_and_first_token_timeouts_are_read() {
    let c = parse(
        "[[providers]]\nmodels = [\"gpt-*\"]\ntimeout_ms = 9000\n[[providers]]\nkind = \"anthropic\"\nmodels = [\"claude-*\"]\nfirst_token_timeout_ms = 700\n[fallbacks]\n\"gpt-4o\" = [\"claude-x\", \"gpt-4o-mini\"]",
    )
    .unwrap();
    assert_eq!(c.fallbacks("gpt-4o"), ["claude-x", "gpt-4o-mini"]);
    assert!(c.fallbacks("gpt-4o-mini").is_empty());
    assert_eq!(
        c.providers[0].first_token_timeout(),
        std::time::Duration::from_millis(9000)
    );
    assert_eq!(
        c.providers[1].first_token_timeout(),
        std::time::Duration::from_millis(700)
    );
}
