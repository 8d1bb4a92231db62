//! Cross-field rules, checked after parsing and `env:` resolution. Each
//! failure names the field it is about; the first failure is reported.

use std::collections::HashMap;

use super::{BreakerConfig, Config, ConfigError, EmbedderKind, ProviderKind, compile_models};
use crate::policy::ANONYMOUS_TENANT;
use crate::policy::Slot;
use crate::state::StateError;
use crate::telemetry::parse_log_filter;

type Check = Result<(), ConfigError>;

pub(super) fn validate(c: &Config) -> Check {
    server(c)?;
    state(c)?;
    providers(c)?;
    tenants(c)?;
    cache(c)?;
    retry(c)?;
    breakers(c)?;
    semantic(c)?;
    plugins(c)?;
    telemetry(c)?;
    super::spend::validate(c)?;
    c.jobs.validate()
}

fn fail(path: impl Into<String>, message: impl Into<String>) -> Check {
    Err(ConfigError::invalid(path, message))
}

fn positive(path: &str, value: u64) -> Check {
    if value == 0 {
        return fail(path, "must be greater than 0");
    }
    Ok(())
}

/// Provider and tenant names become metric labels, cache scopes and state
/// keys, so they are kept short and plain. Starting with an alphanumeric
/// leaves `_`-prefixed names free for internal labels.
fn name(path: &str, value: &str) -> Check {
    let ok = value.len() <= 64
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !ok {
        return fail(
            path,
            format!(
                "`{value}` is not a valid name (1-64 characters: letters, digits, `_`, `-`, `.`; starting with a letter or digit)"
            ),
        );
    }
    Ok(())
}

fn not_blank(path: &str, value: &str) -> Check {
    if value.trim().is_empty() {
        return fail(path, "must not be empty");
    }
    Ok(())
}

fn server(c: &Config) -> Check {
    let s = &c.server;
    positive("server.max_body_bytes", s.max_body_bytes as u64)?;
    positive("server.max_messages", s.max_messages as u64)?;
    positive("server.max_content_parts", s.max_content_parts as u64)?;
    positive("server.request_timeout_ms", s.request_timeout_ms)?;
    positive("server.header_read_timeout_ms", s.header_read_timeout_ms)?;
    positive("server.body_read_timeout_ms", s.body_read_timeout_ms)?;
    positive("server.idle_timeout_ms", s.idle_timeout_ms)?;
    positive("server.write_stall_timeout_ms", s.write_stall_timeout_ms)?;
    positive("server.max_connections", s.max_connections as u64)?;
    positive("server.max_headers", s.max_headers as u64)?;
    if s.max_header_bytes < super::MIN_HEADER_BYTES {
        return fail(
            "server.max_header_bytes",
            format!("must be at least {}", super::MIN_HEADER_BYTES),
        );
    }
    if let Some(token) = &s.admin_token {
        not_blank("server.admin_token", token.expose())?;
    }
    if let Some(token) = &s.metrics_token {
        not_blank("server.metrics_token", token.expose())?;
    }
    if s.metrics_on_admin_listen && s.admin_listen.is_none() {
        return fail(
            "server.metrics_on_admin_listen",
            "needs server.admin_listen (the listener /metrics would move to)",
        );
    }
    if s.admin_on_listen && s.admin_listen.is_some() {
        return fail(
            "server.admin_on_listen",
            "cannot be combined with server.admin_listen: /admin is served on one listener",
        );
    }
    if s.admin_token.is_some() && s.admin_listen.is_none() && !s.admin_on_listen {
        return fail(
            "server.admin_listen",
            "is needed with server.admin_token: set it to a private address for /admin, or set server.admin_on_listen = true to serve /admin on the public listener behind the token",
        );
    }
    if let Some(admin) = s.admin_listen {
        if s.admin_token.is_none() {
            return fail(
                "server.admin_token",
                "is required when server.admin_listen is set (the admin API needs a bearer token)",
            );
        }
        if admin == s.listen {
            return fail("server.admin_listen", "must differ from server.listen");
        }
    }
    Ok(())
}

fn state(c: &Config) -> Check {
    c.state.validate().map_err(|e| {
        let message = match e {
            StateError::Invalid(m) => m,
            other => other.to_string(),
        };
        // The state module prefixes its own messages with the section name.
        let message = message.strip_prefix("state: ").unwrap_or(&message);
        ConfigError::invalid("state", message)
    })
}

fn providers(c: &Config) -> Check {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, p) in c.providers.iter().enumerate() {
        let at = |field: &str| format!("providers[{i}].{field}");
        name(&at("name"), &p.name)?;
        if let Some(first) = seen.insert(&p.name, i) {
            return fail(
                at("name"),
                format!(
                    "duplicate provider name `{}` (also providers[{first}])",
                    p.name
                ),
            );
        }
        if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
            return fail(
                at("base_url"),
                format!("`{}` must start with http:// or https://", p.base_url),
            );
        }
        for (j, key) in p.keys.iter().enumerate() {
            not_blank(&at(&format!("keys[{j}]")), key.expose())?;
        }
        for (j, pattern) in p.models.iter().enumerate() {
            not_blank(&at(&format!("models[{j}]")), pattern)?;
        }
        compile_models(i, &p.models)?;
        positive(&at("timeout_ms"), p.timeout_ms)?;
        positive(&at("connect_timeout_ms"), p.connect_timeout_ms)?;
        positive(&at("weight"), u64::from(p.weight))?;
        if let Some(ms) = p.first_token_timeout_ms {
            positive(&at("first_token_timeout_ms"), ms)?;
        }
        positive(&at("key_cooldown_ms"), p.key_cooldown_ms)?;
        key_quotas(p, &at)?;
        if p.kind == ProviderKind::Anthropic {
            not_blank(&at("anthropic_version"), &p.anthropic_version)?;
        }
    }
    Ok(())
}

/// Quota limits are positive; per-key quotas name existing keys.
fn key_quotas(p: &crate::config::ProviderConfig, at: &dyn Fn(&str) -> String) -> Check {
    if p.key_quotas.len() > p.keys.len() {
        return fail(
            at("key_quotas"),
            format!(
                "{} entries for {} keys: entries are by position in `keys`",
                p.key_quotas.len(),
                p.keys.len()
            ),
        );
    }
    let quotas = p
        .key_quota
        .iter()
        .map(|q| ("key_quota".to_owned(), q))
        .chain(
            p.key_quotas
                .iter()
                .enumerate()
                .map(|(j, q)| (format!("key_quotas[{j}]"), q)),
        );
    for (path, q) in quotas {
        for (name, v) in [
            ("rpm", q.rpm),
            ("rph", q.rph),
            ("rpd", q.rpd),
            ("tpm", q.tpm),
        ] {
            if let Some(v) = v {
                positive(&at(&format!("{path}.{name}")), v)?;
            }
        }
    }
    Ok(())
}

fn tenants(c: &Config) -> Check {
    not_blank("anonymous.tier", &c.anonymous.tier)?;
    let mut names: HashMap<&str, usize> = HashMap::new();
    // Keyed by the key itself but never printed: errors point at the field
    // holding the earlier copy instead.
    let mut keys: HashMap<&str, String> = HashMap::new();
    for (i, t) in c.tenants.iter().enumerate() {
        let at = |field: &str| format!("tenants[{i}].{field}");
        name(&at("name"), &t.name)?;
        if t.name == ANONYMOUS_TENANT {
            return fail(
                at("name"),
                "`anonymous` is reserved for requests without a virtual key",
            );
        }
        if let Some(first) = names.insert(&t.name, i) {
            return fail(
                at("name"),
                format!("duplicate tenant name `{}` (also tenants[{first}])", t.name),
            );
        }
        not_blank(&at("tier"), &t.tier)?;
        for (j, key) in t.keys.iter().enumerate() {
            let path = at(&format!("keys[{j}]"));
            not_blank(&path, key.expose())?;
            if let Some(first) = keys.get(key.expose()) {
                return fail(
                    path,
                    format!(
                        "this virtual key is already used by {first}; a key belongs to one tenant"
                    ),
                );
            }
            keys.insert(key.expose(), path);
        }
    }
    Ok(())
}

fn cache(c: &Config) -> Check {
    let k = &c.cache;
    positive("cache.max_bytes", k.max_bytes)?;
    positive("cache.max_entry_bytes", k.max_entry_bytes)?;
    positive("cache.default_ttl_seconds", k.default_ttl_seconds.into())?;
    if k.max_entry_bytes > k.max_bytes {
        return fail(
            "cache.max_entry_bytes",
            format!(
                "{} is larger than cache.max_bytes ({})",
                k.max_entry_bytes, k.max_bytes
            ),
        );
    }
    Ok(())
}

fn retry(c: &Config) -> Check {
    let r = &c.retry;
    if !(0.0..=1.0).contains(&r.budget_ratio) {
        return fail(
            "retry.budget_ratio",
            format!("{} must be between 0 and 1", r.budget_ratio),
        );
    }
    positive("retry.max_attempts_cap", r.max_attempts_cap.into())
}

/// `[breaker]`, then each provider's breaker as its override makes it.
fn breakers(c: &Config) -> Check {
    breaker("breaker", &c.breaker)?;
    for (i, p) in c.providers.iter().enumerate() {
        breaker(
            &format!("providers[{i}].breaker"),
            &p.breaker.apply(&c.breaker),
        )?;
    }
    Ok(())
}

fn breaker(at: &str, b: &BreakerConfig) -> Check {
    if !(b.failure_ratio > 0.0 && b.failure_ratio <= 1.0) {
        return fail(
            format!("{at}.failure_ratio"),
            format!("{} must be greater than 0 and at most 1", b.failure_ratio),
        );
    }
    positive(&format!("{at}.min_calls"), b.min_calls.into())?;
    if b.window_ms < 100 {
        return fail(
            format!("{at}.window_ms"),
            format!("{} must be at least 100 (ten slots of 10 ms)", b.window_ms),
        );
    }
    positive(&format!("{at}.half_open_probes"), b.half_open_probes.into())?;
    positive(&format!("{at}.open_for_ms"), b.open_for_ms)?;
    if b.max_open_for_ms < b.open_for_ms {
        return fail(
            format!("{at}.max_open_for_ms"),
            format!(
                "{} is smaller than open_for_ms ({})",
                b.max_open_for_ms, b.open_for_ms
            ),
        );
    }
    Ok(())
}

fn semantic(c: &Config) -> Check {
    let s = &c.semantic;
    not_blank("semantic.model", &s.model)?;
    if s.max_bytes < 1 << 20 {
        return fail(
            "semantic.max_bytes",
            format!("{} must be at least 1 MiB (1048576)", s.max_bytes),
        );
    }
    positive("semantic.max_namespaces", s.max_namespaces.into())?;
    if !(0.0..=1.0).contains(&s.learn_margin) {
        return fail(
            "semantic.learn_margin",
            format!("{} must be between 0 and 1", s.learn_margin),
        );
    }
    // Each namespace needs room for its table slot and its mirror.
    if u64::from(s.max_namespaces) > s.max_bytes / 1024 {
        return fail(
            "semantic.max_namespaces",
            format!(
                "{} is more than semantic.max_bytes leaves room for (one per KiB: {})",
                s.max_namespaces,
                s.max_bytes / 1024
            ),
        );
    }
    if let Some(d) = s.dimensions {
        positive("semantic.dimensions", d.into())?;
    }
    if let Some(name) = &s.provider
        && !c.providers.iter().any(|p| &p.name == name)
    {
        return fail(
            "semantic.provider",
            format!("no provider is named `{name}`"),
        );
    }
    if !s.enabled {
        return Ok(());
    }
    match s.embedder {
        EmbedderKind::Local if cfg!(not(feature = "local-embedder")) => fail(
            "semantic.embedder",
            "\"local\" needs a sluice built with the `local-embedder` feature (this one is an edge build without it); use \"openai\"",
        ),
        EmbedderKind::Local if s.path.is_none() => fail(
            "semantic.path",
            "is required when semantic.embedder = \"local\"",
        ),
        EmbedderKind::Local => Ok(()),
        EmbedderKind::Openai => {
            let provider = match &s.provider {
                Some(name) => c.providers.iter().find(|p| &p.name == name),
                None => {
                    let mut found = None;
                    for (i, p) in c.providers.iter().enumerate() {
                        if compile_models(i, &p.models)?.is_match(&s.model) {
                            found = Some(p);
                            break;
                        }
                    }
                    found
                }
            };
            match provider {
                None => fail(
                    "semantic.model",
                    format!(
                        "no provider serves `{}`; add it to a provider's models or set semantic.provider",
                        s.model
                    ),
                ),
                Some(p) if p.kind != ProviderKind::Openai => fail(
                    if s.provider.is_some() {
                        "semantic.provider"
                    } else {
                        "semantic.model"
                    },
                    format!(
                        "provider `{}` is kind \"{}\"; embeddings need an OpenAI-compatible provider",
                        p.name, p.kind
                    ),
                ),
                Some(_) => Ok(()),
            }
        }
    }
}

fn plugins(c: &Config) -> Check {
    for slot in Slot::ALL {
        let limits = &c.plugins.slot(slot).limits;
        let at = |field: &str| format!("plugins.{slot}.limits.{field}");
        if !(1..=4096).contains(&limits.memory_mib) {
            return fail(
                at("memory_mib"),
                format!("{} must be between 1 and 4096", limits.memory_mib),
            );
        }
        if !(1..=60_000).contains(&limits.deadline_ms) {
            return fail(
                at("deadline_ms"),
                format!("{} must be between 1 and 60000", limits.deadline_ms),
            );
        }
        positive(&at("max_return_bytes"), limits.max_return_bytes.into())?;
    }
    Ok(())
}

fn telemetry(c: &Config) -> Check {
    not_blank("telemetry.log_level", &c.telemetry.log_level)?;
    parse_log_filter(&c.telemetry.log_level)
        .map(|_| ())
        .map_err(|e| ConfigError::invalid("telemetry.log_level", e.to_string()))?;
    let otlp = &c.telemetry.otlp;
    if let Some(endpoint) = &otlp.endpoint {
        let ok = reqwest::Url::parse(endpoint)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
        if !ok {
            return Err(ConfigError::invalid(
                "telemetry.otlp.endpoint",
                format!(
                    "{endpoint:?} is not an http(s) URL (e.g. \"http://collector:4318/v1/traces\")"
                ),
            ));
        }
    }
    not_blank("telemetry.otlp.service_name", &otlp.service_name)?;
    positive("telemetry.otlp.timeout_ms", otlp.timeout_ms)?;
    positive("telemetry.otlp.batch_delay_ms", otlp.batch_delay_ms)
}
