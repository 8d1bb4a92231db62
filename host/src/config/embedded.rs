//! The config `sluice serve` runs without a file.

use super::{Config, EnvLookup, ProviderConfig, ProviderKind, Secret};

/// See [`Config::embedded_default`].
pub(super) fn embedded_default(env: EnvLookup<'_>) -> Config {
    // An empty variable counts as unset: `FOO=` in a compose file usually
    // means "not configured".
    let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let mut config = Config::default();

    let anthropic_url = var("ANTHROPIC_BASE_URL");
    let anthropic_key = var("ANTHROPIC_API_KEY");
    if anthropic_url.is_some() || anthropic_key.is_some() {
        config.providers.push(provider(
            ProviderKind::Anthropic,
            anthropic_url,
            anthropic_key,
            "claude-*",
        ));
    }
    config.providers.push(provider(
        ProviderKind::Openai,
        var("OPENAI_BASE_URL"),
        var("OPENAI_API_KEY"),
        "*",
    ));
    config.server.admin_token = var("SLUICE_ADMIN_TOKEN").map(Secret::new);
    // The embedded default listens on 127.0.0.1 for a local try-out, so
    // `/admin` (behind the token) shares that listener.
    config.server.admin_on_listen = config.server.admin_token.is_some();

    // Rules hold by construction, except a malformed base URL from the
    // environment; the provider client reports that on the first request,
    // so the gateway still starts and answers health checks. Indexing never
    // fails here: the globs are constants.
    if let Err(e) = config.prepare() {
        tracing::warn!(error = %e, "embedded default config has a problem");
        for (i, p) in config.providers.iter_mut().enumerate() {
            if let Ok(set) = super::compile_models(i, &p.models) {
                p.matcher = set;
            }
        }
    }
    config
}

fn provider(
    kind: ProviderKind,
    base_url: Option<String>,
    key: Option<String>,
    models: &str,
) -> ProviderConfig {
    let mut p = ProviderConfig::new(kind.as_str(), kind);
    if let Some(url) = base_url {
        p.base_url = url.trim().trim_end_matches('/').to_owned();
    }
    p.keys = key.map(Secret::new).into_iter().collect();
    p.models = vec![models.to_owned()];
    p
}
