//! Cache-key decisions over plain request data.
//!
//! Config (all fields optional):
//! - `ttl_seconds` (3600): how long an entry lives.
//! - `shared` (false): when true, entries are shared by every tenant. Only
//!   for deployments whose tenants trust each other: one tenant's cached
//!   answer (which may contain its private data from the prompt) is then
//!   served to any tenant sending the same request.
//! - `max_temperature` (1.0): requests asking for a higher temperature want
//!   varied answers and bypass the cache. 1.0 is the providers' default, so
//!   requests that do not set a temperature (and everything up to the
//!   default) are cached; set 0 to cache only deterministic requests.
//! - `routes` (all: `chat`, `embeddings`, `anthropic-messages`): which routes
//!   may be cached.
//! - `ignore_params` (`user`, `metadata`, `stream`, `stream_options`,
//!   `service_tier`, `store`): body fields left out of the key because they do
//!   not change the answer. Giving the list replaces the default. `n`,
//!   `seed`, `tools`, `response_format`, … are in the key: they do change it.
//!
//! A request also bypasses the cache when its `cache-control` header says
//! `no-store`. `no-cache` is the host's business: it skips the lookup and
//! stores the fresh answer, which is how a client refreshes an entry.

use serde::Deserialize;
use sluice_plugin_common::config::{ConfigError, PluginConfig};
use sluice_plugin_common::types::Request;
use sluice_plugin_common::{parse_route, push_json_str};

use crate::exports::sluice::policy::cache_key::{Decision, Entry, Scope};

/// The cache-key plugin's config; see the module docs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub ttl_seconds: u32,
    pub shared: bool,
    pub max_temperature: f64,
    pub routes: Vec<String>,
    pub ignore_params: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ttl_seconds: 3600,
            shared: false,
            max_temperature: 1.0,
            routes: ["chat", "embeddings", "anthropic-messages"]
                .map(String::from)
                .to_vec(),
            ignore_params: [
                "user",
                "metadata",
                "stream",
                "stream_options",
                "service_tier",
                "store",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

impl PluginConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.ttl_seconds == 0 {
            return Err(ConfigError::field(
                "ttl_seconds",
                "must be at least 1 (to disable caching, list no `routes`)",
            ));
        }
        if !self.max_temperature.is_finite() || self.max_temperature < 0.0 {
            return Err(ConfigError::field(
                "max_temperature",
                "must be a number >= 0",
            ));
        }
        for (i, route) in self.routes.iter().enumerate() {
            if parse_route(route).is_none() {
                return Err(ConfigError::field(
                    &format!("routes[{i}]"),
                    format!(
                        "unknown route `{route}` (expected chat, embeddings or anthropic-messages)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Decides whether `req` may use the exact cache, and under which key.
pub fn derive(config: &Config, req: &Request) -> Decision {
    if let Some(reason) = bypass_reason(config, req) {
        return Decision::Bypass(reason);
    }
    let key = blake3::hash(canonical(config, req).as_bytes())
        .to_hex()
        .to_string();
    Decision::Cache(Entry {
        key,
        ttl_seconds: config.ttl_seconds,
        scope: if config.shared {
            Scope::Shared
        } else {
            Scope::Tenant
        },
    })
}

fn bypass_reason(config: &Config, req: &Request) -> Option<String> {
    let route = req.route.name();
    if !config.routes.iter().any(|r| r == route) {
        return Some(format!("route {route} is not cacheable (config `routes`)"));
    }
    for header in &req.headers {
        if !header.name.eq_ignore_ascii_case("cache-control") {
            continue;
        }
        let refuses = header.value.split(',').any(|directive| {
            let directive = directive.trim();
            directive.eq_ignore_ascii_case("no-store")
        });
        if refuses {
            return Some(format!(
                "request header cache-control: {}",
                header.value.trim()
            ));
        }
    }
    if let Some(t) = req.temperature
        && t > config.max_temperature
    {
        return Some(format!(
            "temperature {t} is above max_temperature {}",
            config.max_temperature
        ));
    }
    None
}

/// The canonical serialisation the key hashes: a JSON object with fixed field
/// order. Message extras and parameter values are embedded as JSON strings
/// (not spliced in raw) so that no two different requests serialise alike,
/// whatever the host put in them.
fn canonical(config: &Config, req: &Request) -> String {
    let ignored = |name: &str| config.ignore_params.iter().any(|p| p == name);
    let mut out = String::with_capacity(
        256 + req
            .messages
            .iter()
            .map(|m| m.text.len() + 64)
            .sum::<usize>(),
    );
    // Bump the version when the serialisation changes, so old entries miss
    // instead of matching requests they were not stored for.
    out.push_str("{\"v\":1,\"route\":");
    push_json_str(&mut out, req.route.name());
    out.push_str(",\"model\":");
    push_json_str(&mut out, &req.model);
    // The dedicated fields are included even if the host also lists them in
    // `params`: the key must change with them either way.
    out.push_str(",\"temperature\":");
    match req.temperature {
        Some(t) if !ignored("temperature") => out.push_str(&format!("{t:?}")),
        _ => out.push_str("null"),
    }
    out.push_str(",\"max_tokens\":");
    match req.max_tokens {
        Some(n) if !ignored("max_tokens") => out.push_str(&n.to_string()),
        _ => out.push_str("null"),
    }
    out.push_str(",\"messages\":[");
    for (i, m) in req.messages.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"role\":");
        push_json_str(&mut out, &m.role);
        out.push_str(",\"text\":");
        push_json_str(&mut out, &m.text);
        out.push_str(",\"extra\":");
        match &m.extra_json {
            Some(extra) => push_json_str(&mut out, extra),
            None => out.push_str("null"),
        }
        out.push('}');
    }
    out.push_str("],\"params\":[");
    let mut params: Vec<_> = req.params.iter().filter(|p| !ignored(&p.name)).collect();
    // The host sends them sorted; sorting again keeps the key stable if it
    // ever does not.
    params.sort_by(|a, b| (&a.name, &a.json).cmp(&(&b.name, &b.json)));
    for (i, p) in params.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        push_json_str(&mut out, &p.name);
        out.push(',');
        push_json_str(&mut out, &p.json);
        out.push(']');
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_common::parse_config;
    use sluice_plugin_common::testing::{header, message, param, request};
    use sluice_plugin_common::types::Route;

    fn key(config: &Config, req: &Request) -> String {
        match derive(config, req) {
            Decision::Cache(entry) => entry.key,
            Decision::Bypass(reason) => panic!("unexpected bypass: {reason}"),
        }
    }

    fn bypass(config: &Config, req: &Request) -> String {
        match derive(config, req) {
            Decision::Bypass(reason) => reason,
            Decision::Cache(entry) => panic!("unexpected cache entry {}", entry.key),
        }
    }

    #[test]
    fn default_entry_is_tenant_scoped_for_an_hour() {
        let Decision::Cache(entry) = derive(&Config::default(), &request("hi")) else {
            panic!("expected a cache entry");
        };
        assert_eq!(entry.ttl_seconds, 3600);
        assert_eq!(entry.scope, Scope::Tenant);
        assert_eq!(entry.key.len(), 64);
    }

    #[test]
    fn shared_config_shares_entries() {
        let config: Config = parse_config(r#"{"shared": true, "ttl_seconds": 60}"#).unwrap();
        let Decision::Cache(entry) = derive(&config, &request("hi")) else {
            panic!("expected a cache entry");
        };
        assert_eq!(entry.ttl_seconds, 60);
        assert_eq!(entry.scope, Scope::Shared);
    }

    #[test]
    fn same_request_same_key_whoever_sends_it() {
        let config = Config::default();
        let a = request("What is 2+2?");
        let mut b = a.clone();
        b.id = "req-2".into();
        b.tenant = "other".into();
        b.client_ip = "198.51.100.1".into();
        b.estimated_prompt_tokens = 99;
        b.streaming = true;
        b.headers = vec![header("x-trace", "1")];
        assert_eq!(key(&config, &a), key(&config, &b));
    }

    #[test]
    fn fields_that_change_the_answer_change_the_key() {
        let config = Config::default();
        let base = request("What is 2+2?");
        let k = key(&config, &base);

        let mut r = base.clone();
        r.model = "gpt-4o".into();
        assert_ne!(key(&config, &r), k, "model");

        let mut r = base.clone();
        r.route = Route::AnthropicMessages;
        assert_ne!(key(&config, &r), k, "route");

        let mut r = base.clone();
        r.messages[0].text = "What is 2+3?".into();
        assert_ne!(key(&config, &r), k, "text");

        let mut r = base.clone();
        r.messages[0].role = "system".into();
        assert_ne!(key(&config, &r), k, "role");

        let mut r = base.clone();
        r.messages[0].extra_json = Some(r#"{"name":"bob"}"#.into());
        assert_ne!(key(&config, &r), k, "extra");

        let mut r = base.clone();
        r.messages.insert(0, message("system", "Be terse."));
        assert_ne!(key(&config, &r), k, "history");

        let mut r = base.clone();
        r.temperature = Some(0.2);
        assert_ne!(key(&config, &r), k, "temperature");

        let mut r = base.clone();
        r.max_tokens = Some(5);
        assert_ne!(key(&config, &r), k, "max_tokens");

        for (name, json) in [
            ("n", "2"),
            ("seed", "7"),
            ("tools", "[]"),
            ("response_format", r#"{"type":"json_object"}"#),
        ] {
            let mut r = base.clone();
            r.params = vec![param(name, json)];
            assert_ne!(key(&config, &r), k, "{name}");
        }
    }

    #[test]
    fn ignored_params_do_not_change_the_key() {
        let config = Config::default();
        let base = request("hello");
        let mut r = base.clone();
        r.params = vec![
            param("metadata", r#"{"a":1}"#),
            param("store", "true"),
            param("stream", "true"),
            param("stream_options", r#"{"include_usage":true}"#),
            param("user", r#""u-42""#),
        ];
        assert_eq!(key(&config, &r), key(&config, &base));

        // A configured list replaces the default one.
        let config: Config = parse_config(r#"{"ignore_params": ["seed"]}"#).unwrap();
        let mut seeded = base.clone();
        seeded.params = vec![param("seed", "1")];
        assert_eq!(key(&config, &seeded), key(&config, &base));
        let mut with_user = base.clone();
        with_user.params = vec![param("user", r#""u-42""#)];
        assert_ne!(key(&config, &with_user), key(&config, &base));
    }

    #[test]
    fn splitting_text_differently_changes_the_key() {
        // Two messages vs one message with the same characters.
        let config = Config::default();
        let mut a = request("ab");
        a.messages = vec![message("user", "a"), message("user", "b")];
        let b = request("a\",\"b");
        assert_ne!(key(&config, &a), key(&config, &b));
    }

    #[test]
    fn param_order_does_not_matter() {
        let config = Config::default();
        let mut a = request("x");
        a.params = vec![param("seed", "1"), param("top_p", "0.5")];
        let mut b = a.clone();
        b.params.reverse();
        assert_eq!(key(&config, &a), key(&config, &b));
    }

    #[test]
    fn cache_control_no_store_bypasses() {
        let config = Config::default();
        for value in ["no-store", "max-age=0, No-Store"] {
            let mut r = request("hi");
            r.headers = vec![header("cache-control", value)];
            assert!(bypass(&config, &r).contains("cache-control"), "{value}");
        }
        for value in ["max-age=60", "no-cache"] {
            let mut r = request("hi");
            r.headers = vec![header("cache-control", value)];
            key(&config, &r);
        }
    }

    #[test]
    fn hot_temperature_bypasses() {
        let config = Config::default();
        let mut r = request("write a poem");
        r.temperature = Some(1.0);
        key(&config, &r);
        r.temperature = Some(1.3);
        assert_eq!(
            bypass(&config, &r),
            "temperature 1.3 is above max_temperature 1"
        );

        let strict: Config = parse_config(r#"{"max_temperature": 0}"#).unwrap();
        r.temperature = Some(0.0);
        key(&strict, &r);
        r.temperature = Some(0.1);
        bypass(&strict, &r);
    }

    #[test]
    fn routes_limit_what_is_cached() {
        let config: Config = parse_config(r#"{"routes": ["chat"]}"#).unwrap();
        let mut r = request("hi");
        key(&config, &r);
        r.route = Route::Embeddings;
        assert_eq!(
            bypass(&config, &r),
            "route embeddings is not cacheable (config `routes`)"
        );
    }

    #[test]
    fn bad_config_names_the_field() {
        let cases = [
            (r#"{"ttl_seconds": 0}"#, "`ttl_seconds`"),
            (r#"{"ttl_seconds": -5}"#, "`ttl_seconds`"),
            (r#"{"max_temperature": -1}"#, "`max_temperature`"),
            (r#"{"routes": ["chat", "completions"]}"#, "`routes[1]`"),
            (r#"{"shared": "yes"}"#, "`shared`"),
            (r#"{"ttl": 5}"#, "unknown field `ttl`"),
        ];
        for (json, field) in cases {
            let e = parse_config::<Config>(json).unwrap_err().to_string();
            assert!(e.contains(field), "{json}: {e}");
        }
    }
}
