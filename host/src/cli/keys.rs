//! `sluice keys create|list|show|update|revoke|rotate`: a client of a
//! node's `/admin/keys` API (see [`crate::keys`]).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};

/// How to reach a node's admin API.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The node's admin base URL (its `server.admin_listen`, or `server.listen`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub admin: String,
    /// The admin bearer token.
    #[arg(long, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// A key's fields, as flags.
#[derive(Debug, Default, clap::Args)]
pub struct Fields {
    /// Tenant (from the config file) the key belongs to.
    #[arg(long)]
    pub tenant: Option<String>,
    /// A label for humans.
    #[arg(long)]
    pub name: Option<String>,
    /// Tier for this key's requests (default: its tenant's).
    #[arg(long)]
    pub tier: Option<String>,
    /// USD budget per day.
    #[arg(long, allow_negative_numbers = true)]
    pub budget_day: Option<f64>,
    /// USD budget per month.
    #[arg(long, allow_negative_numbers = true)]
    pub budget_month: Option<f64>,
    /// USD budget in total.
    #[arg(long, allow_negative_numbers = true)]
    pub budget_total: Option<f64>,
    /// Requests per minute.
    #[arg(long)]
    pub rpm: Option<u64>,
    /// Tokens per minute.
    #[arg(long)]
    pub tpm: Option<u64>,
    /// A model glob the key may use (repeat; default: every model).
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Expiry: RFC 3339 (2030-01-31T00:00:00Z) or unix seconds.
    #[arg(long)]
    pub expires_at: Option<String>,
    /// Metadata, a JSON object.
    #[arg(long)]
    pub metadata: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key; prints it with its secret, shown this once.
    Create {
        #[command(flatten)]
        fields: Fields,
        #[command(flatten)]
        target: Target,
    },
    /// List keys (never their secrets).
    List {
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<String>,
        /// Print the JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Show one key.
    Show {
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Change a key's fields; `--clear FIELD` removes one (name, tier,
    /// budget_usd, rpm, tpm, models, expires_at, metadata).
    Update {
        id: String,
        #[command(flatten)]
        fields: Fields,
        #[arg(long)]
        clear: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Revoke a key: every node refuses it within a second.
    Revoke {
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Give a key a new secret; the previous one works for the grace period.
    Rotate {
        id: String,
        /// How long the previous secret keeps working (default 3600).
        #[arg(long)]
        grace_seconds: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
}

impl Fields {
    fn body(&self) -> anyhow::Result<Map<String, Value>> {
        let mut body = Map::new();
        let mut put = |k: &str, v: Value| {
            body.insert(k.to_owned(), v);
        };
        if let Some(v) = &self.tenant {
            put("tenant", json!(v));
        }
        if let Some(v) = &self.name {
            put("name", json!(v));
        }
        if let Some(v) = &self.tier {
            put("tier", json!(v));
        }
        let mut budget = Map::new();
        for (k, v) in [
            ("day", self.budget_day),
            ("month", self.budget_month),
            ("total", self.budget_total),
        ] {
            if let Some(v) = v {
                budget.insert(k.to_owned(), json!(v));
            }
        }
        if !budget.is_empty() {
            put("budget_usd", Value::Object(budget));
        }
        if let Some(v) = self.rpm {
            put("rpm", json!(v));
        }
        if let Some(v) = self.tpm {
            put("tpm", json!(v));
        }
        if !self.models.is_empty() {
            put("models", json!(self.models));
        }
        if let Some(v) = &self.expires_at {
            match v.parse::<u64>() {
                Ok(secs) => put("expires_at", json!(secs)),
                Err(_) => put("expires_at", json!(v)),
            }
        }
        if let Some(v) = &self.metadata {
            let meta: Value = serde_json::from_str(v).context("--metadata must be JSON")?;
            put("metadata", meta);
        }
        Ok(body)
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(target: &Target) -> anyhow::Result<Self> {
        let token = target
            .token
            .clone()
            .context("--token (or SLUICE_ADMIN_TOKEN) is required")?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("HTTP client")?;
        Ok(Self {
            http,
            base: target.admin.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(&body)?);
        }
        let resp = req.send().await.context("reaching the admin API")?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let reason = body
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| body.to_string());
            bail!("{status}: {reason}");
        }
        Ok(body)
    }
}

fn print(v: &Value) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(ExitCode::SUCCESS)
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The keys as a table, one line each.
fn table(keys: &[Value]) -> String {
    let cols = [
        "id",
        "tenant",
        "name",
        "status",
        "hint",
        "rpm",
        "tpm",
        "expires_at",
    ];
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| cols.iter().map(|c| cell(&k[*c])).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(cols.iter().map(|c| c.to_uppercase()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

/// Runs one `sluice keys` verb.
pub(super) async fn run(command: KeysCommand) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    match command {
        KeysCommand::Create { fields, target } => {
            let body = fields.body()?;
            let created = Client::new(&target)?
                .call(Method::POST, "/admin/keys", Some(Value::Object(body)))
                .await?;
            eprintln!("the key is shown this once: store it now");
            print(&created)
        }
        KeysCommand::List {
            tenant,
            json,
            target,
        } => {
            let path = match &tenant {
                Some(t) => format!("/admin/keys?tenant={}", urlencode(t)),
                None => "/admin/keys".to_owned(),
            };
            let listed = Client::new(&target)?.call(Method::GET, &path, None).await?;
            if json {
                return print(&listed);
            }
            let keys = listed["keys"].as_array().cloned().unwrap_or_default();
            println!("{}", table(&keys));
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Show { id, target } => {
            let key = Client::new(&target)?
                .call(
                    Method::GET,
                    &format!("/admin/keys/{}", urlencode(&id)),
                    None,
                )
                .await?;
            print(&key)
        }
        KeysCommand::Update {
            id,
            fields,
            clear,
            target,
        } => {
            let mut body = fields.body()?;
            for field in clear {
                body.insert(field, Value::Null);
            }
            if body.is_empty() {
                bail!("nothing to update: give a field flag or --clear FIELD");
            }
            let key = Client::new(&target)?
                .call(
                    Method::PATCH,
                    &format!("/admin/keys/{}", urlencode(&id)),
                    Some(Value::Object(body)),
                )
                .await?;
            print(&key)
        }
        KeysCommand::Revoke { id, target } => {
            let key = Client::new(&target)?
                .call(
                    Method::DELETE,
                    &format!("/admin/keys/{}", urlencode(&id)),
                    None,
                )
                .await?;
            print(&key)
        }
        KeysCommand::Rotate {
            id,
            grace_seconds,
            target,
        } => {
            let body = match grace_seconds {
                Some(s) => json!({"grace_seconds": s}),
                None => json!({}),
            };
            let key = Client::new(&target)?
                .call(
                    Method::POST,
                    &format!("/admin/keys/{}/rotate", urlencode(&id)),
                    Some(body),
                )
                .await?;
            eprintln!("the new key is shown this once: store it now");
            print(&key)
        }
    }
}

/// Percent-encodes a path or query component.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_the_api_body() {
        let fields = Fields {
            tenant: Some("acme".into()),
            budget_day: Some(1.5),
            models: vec!["gpt-*".into()],
            expires_at: Some("1900000000".into()),
            metadata: Some(r#"{"team":"x"}"#.into()),
            ..Fields::default()
        };
        let body = Value::Object(fields.body().unwrap());
        assert_eq!(
            body,
            json!({"tenant":"acme","budget_usd":{"day":1.5},"models":["gpt-*"],
                   "expires_at":1900000000u64,"metadata":{"team":"x"}})
        );
        assert_eq!(urlencode("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn the_table_never_has_a_secret_column() {
        let t = table(&[
            json!({"id":"key_1","tenant":"acme","status":"active","hint":"sk-sluice-…abcd"}),
        ]);
        assert!(t.starts_with("ID"), "{t}");
        assert!(t.contains("key_1"));
    }
}
