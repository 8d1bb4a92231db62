//! Virtual keys managed at run time (`/admin/keys`, `sluice keys`).
//!
//! A key is a [`KeyRecord`] in the state (namespace [`NAMESPACE`]): the
//! record by id, a copy of it under each secret's blake3 digest, the list of
//! ids, and a change log (a version counter and one entry per change, see
//! [`store`]). Secrets are shown once, when created or rotated, and never
//! stored: only their digests are.
//!
//! Edge first: every node keeps a table of the keys in memory (digest →
//! key), so a known key is authenticated without a state call. With Redis a
//! background task reads the version every [`SYNC_EVERY`] and applies the
//! changed records, so a change made through any node holds on every node
//! within a second. A secret the table does not know costs one state read
//! (its digest entry; a key created a moment ago on another node), and is
//! then remembered as unknown for [`NEGATIVE_TTL`] (at most
//! [`NEGATIVE_MAX`] of them). Keys in the config file are checked first and
//! never touch the state.

pub mod limits;
mod record;
mod store;
mod time;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use parking_lot::{Mutex, RwLock};

pub use record::{BudgetUsd, InputError, KeyInput, KeyRecord, SECRET_PREFIX, parse_input};
pub use store::KeyError;
pub use time::{format_rfc3339, now_ms, parse_rfc3339};

use crate::config::Config;
use crate::error::GatewayError;
use crate::state::State;

/// The state namespace holding virtual keys.
pub const NAMESPACE: &str = "sluice:vkeys";
/// How often a node reads the change log's version (Redis only).
pub const SYNC_EVERY: Duration = Duration::from_millis(200);
/// How long a secret found nowhere is answered 401 without asking again.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// Most unknown secrets remembered at once.
pub const NEGATIVE_MAX: usize = 4096;
/// Default grace period of a rotated key's previous secret.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);
/// Longest grace period a rotation accepts.
pub const MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);

/// A blake3 digest of a secret.
pub type Digest = [u8; 32];

/// The digest of `secret`.
pub fn digest(secret: &str) -> Digest {
    *blake3::hash(secret.as_bytes()).as_bytes()
}

fn hex(d: &Digest) -> String {
    blake3::Hash::from_bytes(*d).to_hex().to_string()
}

fn unhex(s: &str) -> Option<Digest> {
    blake3::Hash::from_hex(s).ok().map(|h| *h.as_bytes())
}

/// Compiles a key's model globs (`*` also matches `/`).
pub(crate) fn compile_models(models: &[String]) -> Result<GlobSet, InputError> {
    let mut set = GlobSetBuilder::new();
    for (i, pattern) in models.iter().enumerate() {
        let glob = GlobBuilder::new(pattern)
            .literal_separator(false)
            .build()
            .map_err(|e| {
                InputError::new(
                    format!("models[{i}]"),
                    format!("invalid glob `{pattern}`: {}", e.kind()),
                )
            })?;
        set.add(glob);
    }
    set.build()
        .map_err(|e| InputError::new("models", e.to_string()))
}

/// A key as the request path uses it.
#[derive(Debug)]
pub struct ActiveKey {
    pub record: KeyRecord,
    models: GlobSet,
}

impl PartialEq for ActiveKey {
    fn eq(&self, other: &Self) -> bool {
        self.record == other.record
    }
}

impl ActiveKey {
    fn new(record: KeyRecord) -> Self {
        let models = compile_models(&record.models).unwrap_or_else(|e| {
            // Checked when written; a record that fails now allows nothing.
            tracing::warn!(key = %record.id, error = %e, "virtual key models do not compile");
            GlobSet::empty()
        });
        Self { record, models }
    }

    /// Whether the key may use `model`.
    pub fn allows_model(&self, model: &str) -> bool {
        self.record.models.is_empty() || self.models.is_match(model)
    }

    /// Refuses a revoked or expired key (401).
    fn check(&self, now: u64) -> Result<(), GatewayError> {
        if self.record.revoked_ms.is_some() {
            return Err(GatewayError::unauthorized("This API key has been revoked."));
        }
        if let Some(at) = self.record.expires_ms
            && at <= now
        {
            return Err(GatewayError::unauthorized(format!(
                "This API key expired at {}.",
                format_rfc3339(at)
            )));
        }
        Ok(())
    }
}

/// One secret in the table: its key, and when it stops (a rotated secret).
#[derive(Debug, Clone)]
struct Opening {
    key: Arc<ActiveKey>,
    expires_ms: Option<u64>,
}

#[derive(Debug, Default)]
struct Table {
    by_digest: HashMap<Digest, Opening>,
    by_id: HashMap<String, Arc<ActiveKey>>,
}

impl Table {
    fn remove(&mut self, id: &str) {
        if let Some(old) = self.by_id.remove(id) {
            for s in &old.record.secrets {
                if let Some(d) = unhex(&s.hash) {
                    self.by_digest.remove(&d);
                }
            }
        }
    }

    /// Installs `record` unless the table holds a newer version of it.
    fn install(&mut self, record: KeyRecord) -> bool {
        if let Some(old) = self.by_id.get(&record.id)
            && old.record.updated_ms > record.updated_ms
        {
            return false;
        }
        self.remove(&record.id);
        let key = Arc::new(ActiveKey::new(record));
        for s in &key.record.secrets {
            if let Some(d) = unhex(&s.hash) {
                self.by_digest.insert(
                    d,
                    Opening {
                        key: key.clone(),
                        expires_ms: s.expires_ms,
                    },
                );
            }
        }
        self.by_id.insert(key.record.id.clone(), key);
        true
    }
}

/// The virtual keys: this node's table and the writes of the admin API.
pub struct VirtualKeys {
    state: State,
    config: Arc<Config>,
    table: RwLock<Table>,
    /// Unknown digests and until when (unix ms) they stay unknown.
    negative: Mutex<HashMap<Digest, u64>>,
    /// The change-log version the table reflects (none: never loaded).
    seen: tokio::sync::Mutex<Option<u64>>,
}

impl std::fmt::Debug for VirtualKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualKeys")
            .field("keys", &self.table.read().by_id.len())
            .finish()
    }
}

impl VirtualKeys {
    /// Keys in `state`, for tenants of `config`. Call [`Self::load`] and
    /// [`Self::spawn_sync`] to fill and follow the table.
    pub fn new(state: State, config: Arc<Config>) -> Arc<Self> {
        Arc::new(Self {
            state,
            config,
            table: RwLock::default(),
            negative: Mutex::default(),
            seen: tokio::sync::Mutex::new(None),
        })
    }

    /// Number of keys in this node's table.
    pub fn len(&self) -> usize {
        self.table.read().by_id.len()
    }

    /// Unknown secrets remembered as unknown (expired ones included until
    /// the next clean-up).
    pub fn unknown_cached(&self) -> usize {
        self.negative.lock().len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key `id` as this node knows it.
    pub fn local(&self, id: &str) -> Option<Arc<ActiveKey>> {
        self.table.read().by_id.get(id).cloned()
    }

    /// The tier requests with `key` run on: its own, else its tenant's.
    pub fn tier_of(&self, key: &ActiveKey) -> Option<String> {
        let tenant = self.config.tenant(&key.record.tenant)?;
        Some(
            key.record
                .tier
                .clone()
                .unwrap_or_else(|| tenant.tier.clone()),
        )
    }

    /// The key `secret` opens: `Ok(None)` when it opens none, 401 when the
    /// key is revoked or expired or the secret was rotated out, 503 when the
    /// state could not be asked.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Arc<ActiveKey>>, GatewayError> {
        let d = digest(secret);
        let now = now_ms();
        let found = self.table.read().by_digest.get(&d).cloned();
        let opening = match found {
            Some(o) => o,
            None => match self.fetch(&d, now).await? {
                Some(o) => o,
                None => return Ok(None),
            },
        };
        if let Some(until) = opening.expires_ms
            && until <= now
        {
            return Err(GatewayError::unauthorized(
                "This API key was rotated and its previous secret has expired.",
            ));
        }
        opening.key.check(now)?;
        if self.config.tenant(&opening.key.record.tenant).is_none() {
            // The tenant left the config file after the key was made.
            return Ok(None);
        }
        Ok(Some(opening.key))
    }

    /// A digest the table does not know: one state read, unless it was
    /// found unknown within [`NEGATIVE_TTL`]. Memory state: the table is
    /// the whole truth.
    async fn fetch(&self, d: &Digest, now: u64) -> Result<Option<Opening>, GatewayError> {
        if !self.state.is_shared() {
            return Ok(None);
        }
        if self
            .negative
            .lock()
            .get(d)
            .is_some_and(|&until| until > now)
        {
            return Ok(None);
        }
        let got = self
            .state
            .get(NAMESPACE, &store::digest_key(&hex(d)))
            .await
            .map_err(|e| {
                GatewayError::unavailable(format!("the API key could not be checked: {e}"))
            })?;
        let record = got.and_then(|bytes| serde_json::from_slice::<KeyRecord>(&bytes).ok());
        let Some(record) = record else {
            self.remember_unknown(*d, now);
            return Ok(None);
        };
        self.table.write().install(record);
        Ok(self.table.read().by_digest.get(d).cloned())
    }

    fn remember_unknown(&self, d: Digest, now: u64) {
        let mut negative = self.negative.lock();
        if negative.len() >= NEGATIVE_MAX {
            negative.retain(|_, until| *until > now);
            if negative.len() >= NEGATIVE_MAX {
                negative.clear();
            }
        }
        negative.insert(d, now + NEGATIVE_TTL.as_millis() as u64);
    }

    /// Puts `record` in this node's table (newer versions win).
    fn install(&self, record: KeyRecord) {
        let digests: Vec<Digest> = record
            .secrets
            .iter()
            .filter_map(|s| unhex(&s.hash))
            .collect();
        self.table.write().install(record);
        let mut negative = self.negative.lock();
        for d in digests {
            negative.remove(&d);
        }
    }
}

#[cfg(test)]
mod tests;
