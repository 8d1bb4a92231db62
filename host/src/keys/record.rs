//! A virtual key as the state stores it ([`KeyRecord`]), the admin API's
//! input ([`KeyInput`]) and its checks, each error naming its field.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::time::{format_rfc3339, parse_rfc3339};
use crate::config::Config;

/// The prefix of every secret this gateway issues.
pub const SECRET_PREFIX: &str = "sk-sluice-";
/// Longest `name`, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Largest `metadata`, serialized, in bytes.
pub const MAX_METADATA_BYTES: usize = 16 << 10;
/// Most `models` globs on one key.
pub const MAX_MODELS: usize = 64;

/// USD budgets of a key: the shape of a tenant's `budget_usd`, enforced
/// by the budget phase (`pipeline/budget.rs`) like a tenant's.
pub use crate::config::BudgetUsd;

/// One secret that opens a key: its blake3 digest (hex), a hint for humans
/// (`sk-sluice-…abcd`) and, after a rotation, when it stops working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretHash {
    pub hash: String,
    pub hint: String,
    pub created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
}

/// A virtual key as stored in the state. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub tenant: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Overrides the tenant's tier for requests with this key.
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub budget_usd: Option<BudgetUsd>,
    /// Requests per minute, enforced by the host beside the throttle plugin.
    #[serde(default)]
    pub rpm: Option<u64>,
    /// Tokens per minute (prompt estimate plus `max_tokens` at admission,
    /// corrected to actual usage after the answer).
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Model globs the key may use; empty = every model.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub expires_ms: Option<u64>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    pub created_ms: u64,
    pub updated_ms: u64,
    #[serde(default)]
    pub revoked_ms: Option<u64>,
    /// The current secret last.
    pub secrets: Vec<SecretHash>,
}

impl KeyRecord {
    /// `active`, `revoked` or `expired` at `now_ms`.
    pub fn status(&self, now_ms: u64) -> &'static str {
        if self.revoked_ms.is_some() {
            "revoked"
        } else if self.expires_ms.is_some_and(|e| e <= now_ms) {
            "expired"
        } else {
            "active"
        }
    }

    /// The admin API's view: everything but the digests.
    pub fn view(&self, now_ms: u64) -> Value {
        let secrets: Vec<Value> = self
            .secrets
            .iter()
            .map(|s| {
                json!({
                    "hint": s.hint,
                    "created_at": format_rfc3339(s.created_ms),
                    "expires_at": s.expires_ms.map(format_rfc3339),
                })
            })
            .collect();
        json!({
            "id": self.id,
            "tenant": self.tenant,
            "name": self.name,
            "tier": self.tier,
            "budget_usd": self.budget_usd,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "models": self.models,
            "expires_at": self.expires_ms.map(format_rfc3339),
            "metadata": self.metadata,
            "created_at": format_rfc3339(self.created_ms),
            "updated_at": format_rfc3339(self.updated_ms),
            "revoked_at": self.revoked_ms.map(format_rfc3339),
            "status": self.status(now_ms),
            "hint": self.secrets.last().map(|s| s.hint.as_str()),
            "secrets": secrets,
        })
    }
}

/// A bad field in an admin request: 400 naming `field`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub field: String,
    pub message: String,
}

impl InputError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A JSON field that may be absent (leave as is), `null` (clear) or set.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Field<T> {
    #[default]
    Absent,
    Null,
    Set(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            None => Field::Null,
            Some(v) => Field::Set(v),
        })
    }
}

impl<T> Field<T> {
    /// Applies this field to `slot`: absent keeps it, null clears it.
    fn apply(self, slot: &mut Option<T>) {
        match self {
            Field::Absent => {}
            Field::Null => *slot = None,
            Field::Set(v) => *slot = Some(v),
        }
    }
}

/// A point in time: RFC 3339 or integer unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub u64);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => parse_rfc3339(&s).map(Timestamp).ok_or_else(|| {
                de::Error::custom(format!(
                    "`{s}` is not an RFC 3339 time (e.g. 2030-01-31T23:59:59Z) or unix seconds"
                ))
            }),
            Value::Number(n) => n
                .as_u64()
                .and_then(|s| s.checked_mul(1000))
                .map(Timestamp)
                .ok_or_else(|| de::Error::custom(format!("{n} is not a unix time in seconds"))),
            other => Err(de::Error::custom(format!(
                "expected an RFC 3339 time or unix seconds, got {other}"
            ))),
        }
    }
}

/// `budget_usd` in a request: each period may be set, cleared or left.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetInput {
    pub day: Field<f64>,
    pub month: Field<f64>,
    pub total: Field<f64>,
}

/// The body of `POST /admin/keys` and `PATCH /admin/keys/{id}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyInput {
    pub tenant: Field<String>,
    pub name: Field<String>,
    pub tier: Field<String>,
    pub budget_usd: Field<BudgetInput>,
    pub rpm: Field<u64>,
    pub tpm: Field<u64>,
    pub models: Field<Vec<String>>,
    pub expires_at: Field<Timestamp>,
    pub metadata: Field<Map<String, Value>>,
}

/// Parses a request body, naming the failing field (`budget_usd.day`).
pub fn parse_input(body: &[u8]) -> Result<KeyInput, InputError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(KeyInput::default());
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let input: KeyInput = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path == "?" {
            "body".to_owned()
        } else {
            path
        };
        InputError::new(field, e.into_inner().to_string())
    })?;
    de.end()
        .map_err(|e| InputError::new("body", e.to_string()))?;
    Ok(input)
}

impl KeyInput {
    /// Applies this input to `record` (a new one for a create) and checks
    /// the result against `config` at `now_ms`.
    pub fn apply(
        self,
        record: &mut KeyRecord,
        config: &Config,
        now_ms: u64,
    ) -> Result<(), InputError> {
        match self.tenant {
            Field::Absent => {}
            Field::Null => return Err(InputError::new("tenant", "must name a tenant")),
            Field::Set(t) => record.tenant = t,
        }
        if config.tenant(&record.tenant).is_none() {
            let known: Vec<&str> = config.tenants.iter().map(|t| t.name.as_str()).collect();
            let msg = if record.tenant.is_empty() {
                "is required".to_owned()
            } else {
                format!(
                    "unknown tenant `{}` (configured: {})",
                    record.tenant,
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                )
            };
            return Err(InputError::new("tenant", msg));
        }
        self.name.apply(&mut record.name);
        if let Some(name) = &record.name
            && name.len() > MAX_NAME_BYTES
        {
            return Err(InputError::new(
                "name",
                format!("at most {MAX_NAME_BYTES} bytes"),
            ));
        }
        self.tier.apply(&mut record.tier);
        if record.tier.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(InputError::new(
                "tier",
                "must not be empty (null: the tenant's)",
            ));
        }
        match self.budget_usd {
            Field::Absent => {}
            Field::Null => record.budget_usd = None,
            Field::Set(b) => {
                let mut budget = record.budget_usd.unwrap_or_default();
                for (name, field, slot) in [
                    ("day", b.day, &mut budget.day),
                    ("month", b.month, &mut budget.month),
                    ("total", b.total, &mut budget.total),
                ] {
                    if let Field::Set(v) = field
                        && !(v.is_finite() && v >= 0.0)
                    {
                        return Err(InputError::new(
                            format!("budget_usd.{name}"),
                            format!("must be a number of USD, zero or more (got {v})"),
                        ));
                    }
                    field.apply(slot);
                }
                record.budget_usd = (!budget.is_empty()).then_some(budget);
            }
        }
        self.rpm.apply(&mut record.rpm);
        self.tpm.apply(&mut record.tpm);
        for (name, v) in [("rpm", record.rpm), ("tpm", record.tpm)] {
            if v == Some(0) {
                return Err(InputError::new(
                    name,
                    "must be at least 1 (null: no limit; revoke a key to stop it)",
                ));
            }
        }
        match self.models {
            Field::Absent => {}
            Field::Null => record.models.clear(),
            Field::Set(models) => {
                if models.len() > MAX_MODELS {
                    return Err(InputError::new(
                        "models",
                        format!("at most {MAX_MODELS} globs"),
                    ));
                }
                record.models = models;
            }
        }
        super::compile_models(&record.models)?;
        match self.expires_at {
            Field::Absent => {}
            Field::Null => record.expires_ms = None,
            Field::Set(Timestamp(ms)) => {
                if ms <= now_ms {
                    return Err(InputError::new(
                        "expires_at",
                        format!(
                            "{} is in the past (now: {})",
                            format_rfc3339(ms),
                            format_rfc3339(now_ms)
                        ),
                    ));
                }
                record.expires_ms = Some(ms);
            }
        }
        match self.metadata {
            Field::Absent => {}
            Field::Null => record.metadata.clear(),
            Field::Set(m) => record.metadata = m,
        }
        let meta_bytes = serde_json::to_vec(&record.metadata).map_or(0, |v| v.len());
        if meta_bytes > MAX_METADATA_BYTES {
            return Err(InputError::new(
                "metadata",
                format!("at most {MAX_METADATA_BYTES} bytes of JSON"),
            ));
        }
        record.updated_ms = now_ms;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_toml_str(
            "[[tenants]]\nname = \"acme\"\nkeys = [\"sk-config\"]\n",
            &|_| None,
        )
        .unwrap()
    }

    fn record() -> KeyRecord {
        KeyRecord {
            id: "key_1".into(),
            tenant: String::new(),
            name: None,
            tier: None,
            budget_usd: None,
            rpm: None,
            tpm: None,
            models: Vec::new(),
            expires_ms: None,
            metadata: Map::new(),
            created_ms: 0,
            updated_ms: 0,
            revoked_ms: None,
            secrets: Vec::new(),
        }
    }

    fn apply(body: &str) -> Result<KeyRecord, InputError> {
        let mut r = record();
        parse_input(body.as_bytes())?.apply(&mut r, &config(), 2_000_000_000_000)?;
        Ok(r)
    }

    #[test]
    fn a_full_key_applies() {
        let r = apply(
            r#"{"tenant":"acme","name":"ci","tier":"pro","budget_usd":{"day":1.5,"total":10},
                "rpm":60,"tpm":1000,"models":["gpt-4o*"],"expires_at":"2100-01-01T00:00:00Z",
                "metadata":{"team":"x"}}"#,
        )
        .unwrap();
        assert_eq!(r.budget_usd.unwrap().day, Some(1.5));
        assert_eq!(r.budget_usd.unwrap().month, None);
        assert_eq!(r.rpm, Some(60));
        assert_eq!(r.models, ["gpt-4o*"]);
        assert_eq!(r.status(0), "active");
    }

    #[test]
    fn each_bad_input_names_its_field() {
        let cases = [
            (r#"{}"#, "tenant"),
            (r#"{"tenant":"nope"}"#, "tenant"),
            (
                r#"{"tenant":"acme","budget_usd":{"day":-1}}"#,
                "budget_usd.day",
            ),
            (
                r#"{"tenant":"acme","budget_usd":{"month":"ten"}}"#,
                "budget_usd.month",
            ),
            (
                r#"{"tenant":"acme","budget_usd":{"weekly":1}}"#,
                "budget_usd.weekly",
            ),
            (
                r#"{"tenant":"acme","expires_at":"2000-01-01T00:00:00Z"}"#,
                "expires_at",
            ),
            (r#"{"tenant":"acme","expires_at":"soon"}"#, "expires_at"),
            (r#"{"tenant":"acme","rpm":-5}"#, "rpm"),
            (r#"{"tenant":"acme","tpm":0}"#, "tpm"),
            (r#"{"tenant":"acme","models":["gpt-[4"]}"#, "models[0]"),
            (r#"{"tenant":"acme","metadata":[1]}"#, "metadata"),
            (r#"{"tenant":"acme","colour":"red"}"#, "colour"),
            (r#"{"tenant":"acme""#, "body"),
        ];
        for (body, field) in cases {
            let e = apply(body).expect_err(body);
            assert_eq!(e.field, field, "{body}: {e}");
        }
    }

    #[test]
    fn null_clears_and_absent_keeps() {
        let mut r = apply(r#"{"tenant":"acme","rpm":5,"budget_usd":{"day":1,"total":2}}"#).unwrap();
        parse_input(br#"{"rpm":null,"budget_usd":{"day":null}}"#)
            .unwrap()
            .apply(&mut r, &config(), 1)
            .unwrap();
        assert_eq!(r.rpm, None);
        assert_eq!(r.budget_usd.unwrap().total, Some(2.0));
        assert_eq!(r.budget_usd.unwrap().day, None);
    }
}
