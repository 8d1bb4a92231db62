//! The keys in the state, in namespace [`super::NAMESPACE`]:
//!
//! - `rec:<id>`: the [`KeyRecord`] (JSON), written with compare-and-swap so
//!   concurrent admin calls on one key never lose an update;
//! - `digest:<hex>`: a copy of the record under each of its secrets' blake3
//!   digests, what a node reads for a secret it does not know yet;
//! - `ids`: the ids of every key (a JSON array), for listing;
//! - `version` and `log:<n>`: a counter bumped by each change and the id
//!   changed at version `n` (kept [`LOG_TTL`]). A node at version `v` reads
//!   the entries after `v` and re-reads those records; a gap (an entry
//!   gone, Redis restarted) makes it read every record again.
//!
//! A change writes the record and its digest copies first, then bumps the
//! version, so a node that sees the version also sees the change. Every
//! [`FULL_RELOAD_EVERY`] a node reads every key again anyway, in case a
//! change's version bump was lost to a Redis failure (the admin call then
//! answered 503; retrying it also publishes the change).

use std::sync::{Arc, Weak};
use std::time::Duration;

use rand::RngCore;

use super::record::{KeyInput, KeyRecord, SecretHash};
use super::{
    DEFAULT_GRACE, InputError, MAX_GRACE, NAMESPACE, SECRET_PREFIX, SYNC_EVERY, VirtualKeys,
    digest, hex, now_ms,
};
use crate::state::StateError;

/// How long a change-log entry stays.
const LOG_TTL: Duration = Duration::from_secs(3600);
/// Past this many changes behind, a node re-reads everything.
const MAX_LOG_GAP: u64 = 512;
/// How often a node reads every key again whatever the log says: a safety
/// net for a change whose version bump failed (Redis failing mid-write).
const FULL_RELOAD_EVERY: Duration = Duration::from_secs(300);
/// How often a contended compare-and-swap is retried.
const CAS_TRIES: usize = 8;

/// Why an admin call on keys failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A bad field: 400.
    #[error("{0}")]
    Input(InputError),
    /// No key with this id: 404.
    #[error("id: no virtual key `{0}`")]
    NotFound(String),
    /// The key cannot take this change (e.g. rotating a revoked key): 409.
    #[error("{0}")]
    Conflict(String),
    /// The state failed: 503.
    #[error("{0}")]
    State(#[from] StateError),
}

impl From<InputError> for KeyError {
    fn from(e: InputError) -> Self {
        KeyError::Input(e)
    }
}

fn rec_key(id: &str) -> String {
    format!("rec:{id}")
}

/// The state key of a digest's record copy.
pub(super) fn digest_key(hex: &str) -> String {
    format!("digest:{hex}")
}

const IDS: &str = "ids";
const VERSION: &str = "version";

fn log_key(n: u64) -> String {
    format!("log:{n}")
}

fn parse_record(bytes: &[u8]) -> Option<KeyRecord> {
    serde_json::from_slice(bytes).ok()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new secret: `sk-sluice-` and 192 random bits.
fn new_secret() -> String {
    format!("{SECRET_PREFIX}{}", random_hex(24))
}

fn secret_hash(secret: &str, now: u64) -> SecretHash {
    let tail = &secret[secret.len() - 4..];
    SecretHash {
        hash: hex(&digest(secret)),
        hint: format!("{SECRET_PREFIX}…{tail}"),
        created_ms: now,
        expires_ms: None,
    }
}

impl VirtualKeys {
    /// Refuses admin calls while Redis is failing: a fail-open state would
    /// answer them from this node's local fallback, which no other node
    /// sees and which is dropped when Redis returns.
    fn writable(&self) -> Result<(), KeyError> {
        if self.state.is_degraded() {
            return Err(KeyError::State(StateError::Unavailable(
                "Redis is failing: virtual keys cannot be read or changed until it answers again"
                    .into(),
            )));
        }
        Ok(())
    }

    /// Creates a key from `input`; the record and its secret (shown once).
    pub async fn create(&self, input: KeyInput) -> Result<(KeyRecord, String), KeyError> {
        self.writable()?;
        let now = now_ms();
        let secret = new_secret();
        let mut record = KeyRecord {
            id: format!("key_{}", random_hex(8)),
            tenant: String::new(),
            name: None,
            tier: None,
            budget_usd: None,
            rpm: None,
            tpm: None,
            models: Vec::new(),
            expires_ms: None,
            metadata: Default::default(),
            created_ms: now,
            updated_ms: now,
            revoked_ms: None,
            secrets: vec![secret_hash(&secret, now)],
        };
        input.apply(&mut record, &self.config, now)?;
        let bytes = serde_json::to_vec(&record).map_err(|e| KeyError::Conflict(e.to_string()))?;
        let written = self
            .state
            .compare_and_swap(NAMESPACE, &rec_key(&record.id), None, &bytes, None)
            .await?;
        if !written {
            return Err(KeyError::Conflict("key id collision; retry".into()));
        }
        self.add_id(&record.id).await?;
        self.publish(&record, &[]).await?;
        Ok((record, secret))
    }

    /// The key `id` as the state holds it.
    pub async fn get(&self, id: &str) -> Result<KeyRecord, KeyError> {
        self.writable()?;
        let bytes = self
            .state
            .get(NAMESPACE, &rec_key(id))
            .await?
            .ok_or_else(|| KeyError::NotFound(id.to_owned()))?;
        parse_record(&bytes).ok_or_else(|| KeyError::NotFound(id.to_owned()))
    }

    /// Every key the state holds, oldest first.
    pub async fn list(&self) -> Result<Vec<KeyRecord>, KeyError> {
        self.writable()?;
        let ids = self.ids().await?;
        let names: Vec<String> = ids.iter().map(|id| rec_key(id)).collect();
        let reads = names.iter().map(|k| self.state.get(NAMESPACE, k));
        let mut records: Vec<KeyRecord> = futures::future::try_join_all(reads)
            .await?
            .into_iter()
            .flatten()
            .filter_map(|b| parse_record(&b))
            .collect();
        records.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(records)
    }

    /// Applies `input` to key `id`.
    pub async fn update(&self, id: &str, input: KeyInput) -> Result<KeyRecord, KeyError> {
        let config = self.config.clone();
        self.mutate(id, |record, now| {
            input.clone().apply(record, &config, now)?;
            Ok(())
        })
        .await
    }

    /// Revokes key `id`: every node refuses it from then on (within
    /// [`SYNC_EVERY`] and a read). Revoking twice is not an error.
    pub async fn revoke(&self, id: &str) -> Result<KeyRecord, KeyError> {
        self.mutate(id, |record, now| {
            if record.revoked_ms.is_none() {
                record.revoked_ms = Some(now);
                record.updated_ms = now;
            }
            Ok(())
        })
        .await
    }

    /// Gives key `id` a new secret; the previous one keeps working for
    /// `grace` (default [`DEFAULT_GRACE`]). The record and the new secret.
    pub async fn rotate(
        &self,
        id: &str,
        grace: Option<Duration>,
    ) -> Result<(KeyRecord, String), KeyError> {
        let grace = grace.unwrap_or(DEFAULT_GRACE);
        if grace > MAX_GRACE {
            return Err(InputError::new(
                "grace_seconds",
                format!("at most {} (30 days)", MAX_GRACE.as_secs()),
            )
            .into());
        }
        let secret = new_secret();
        let record = self
            .mutate(id, |record, now| {
                if record.revoked_ms.is_some() {
                    return Err(KeyError::Conflict(format!(
                        "id: virtual key `{}` is revoked; create a new one",
                        record.id
                    )));
                }
                let until = now + grace.as_millis() as u64;
                for s in &mut record.secrets {
                    s.expires_ms = Some(s.expires_ms.map_or(until, |e| e.min(until)));
                }
                record
                    .secrets
                    .retain(|s| s.expires_ms.is_none_or(|e| e > now));
                record.secrets.push(secret_hash(&secret, now));
                record.updated_ms = now;
                Ok(())
            })
            .await?;
        Ok((record, secret))
    }

    /// Reads key `id`, changes it with `change` and writes it back if
    /// nobody wrote it meanwhile (else again), then publishes it.
    async fn mutate(
        &self,
        id: &str,
        change: impl Fn(&mut KeyRecord, u64) -> Result<(), KeyError>,
    ) -> Result<KeyRecord, KeyError> {
        self.writable()?;
        for _ in 0..CAS_TRIES {
            let old = self
                .state
                .get(NAMESPACE, &rec_key(id))
                .await?
                .ok_or_else(|| KeyError::NotFound(id.to_owned()))?;
            let mut record = parse_record(&old).ok_or_else(|| KeyError::NotFound(id.to_owned()))?;
            let before: Vec<String> = record.secrets.iter().map(|s| s.hash.clone()).collect();
            // Never let the clock make an update older than the record.
            let now = now_ms().max(record.updated_ms + 1);
            change(&mut record, now)?;
            let bytes =
                serde_json::to_vec(&record).map_err(|e| KeyError::Conflict(e.to_string()))?;
            if self
                .state
                .compare_and_swap(NAMESPACE, &rec_key(id), Some(&old), &bytes, None)
                .await?
            {
                let gone: Vec<String> = before
                    .into_iter()
                    .filter(|h| !record.secrets.iter().any(|s| &s.hash == h))
                    .collect();
                self.publish(&record, &gone).await?;
                return Ok(record);
            }
        }
        Err(KeyError::Conflict(format!(
            "virtual key `{id}` is being changed by another call; retry"
        )))
    }

    async fn ids(&self) -> Result<Vec<String>, KeyError> {
        Ok(self
            .state
            .get(NAMESPACE, IDS)
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default())
    }

    async fn add_id(&self, id: &str) -> Result<(), KeyError> {
        for _ in 0..CAS_TRIES * 4 {
            let old = self.state.get(NAMESPACE, IDS).await?;
            let mut ids: Vec<String> = old
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or_default();
            ids.push(id.to_owned());
            let bytes = serde_json::to_vec(&ids).unwrap_or_default();
            if self
                .state
                .compare_and_swap(NAMESPACE, IDS, old.as_deref(), &bytes, None)
                .await?
            {
                return Ok(());
            }
        }
        Err(KeyError::Conflict(
            "too many keys created at once; retry".into(),
        ))
    }

    /// Writes the digest copies of `record`, drops those of secrets `gone`,
    /// bumps the version and logs the change; installs it here.
    async fn publish(&self, record: &KeyRecord, gone: &[String]) -> Result<(), KeyError> {
        let bytes = serde_json::to_vec(record).map_err(|e| KeyError::Conflict(e.to_string()))?;
        let now = now_ms();
        for s in &record.secrets {
            // A rotated-out secret's copy outlives its grace by a minute, so
            // it is refused as rotated, then as unknown.
            let ttl = s
                .expires_ms
                .map(|e| Duration::from_millis(e.saturating_sub(now) + 60_000));
            self.state
                .set(NAMESPACE, &digest_key(&s.hash), &bytes, ttl)
                .await?;
        }
        for h in gone {
            self.state.delete(NAMESPACE, &digest_key(h)).await?;
        }
        self.install(record.clone());
        if self.state.is_shared() {
            let n = self.state.incr(NAMESPACE, VERSION, 1, None).await?;
            self.state
                .set(
                    NAMESPACE,
                    &log_key(n as u64),
                    record.id.as_bytes(),
                    Some(LOG_TTL),
                )
                .await?;
        }
        Ok(())
    }

    /// Brings this node's table up to the state's version: the logged
    /// changes, or everything after a gap.
    /// While Redis is failing nothing is read: the state's local fallback
    /// knows no keys, and the table keeps serving the ones this node knows.
    pub async fn sync(&self) -> Result<(), StateError> {
        if self.state.is_degraded() {
            return Ok(());
        }
        let mut seen = self.seen.lock().await;
        let version = self
            .state
            .get(NAMESPACE, VERSION)
            .await?
            .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        let logged = match *seen {
            Some(v) if v == version => return Ok(()),
            Some(v) if version > v && version - v <= MAX_LOG_GAP => {
                let names: Vec<String> = (v + 1..=version).map(log_key).collect();
                let reads = names.iter().map(|k| self.state.get(NAMESPACE, k));
                let entries = futures::future::try_join_all(reads).await?;
                entries
                    .into_iter()
                    .map(|e| e.and_then(|b| String::from_utf8(b).ok()))
                    .collect::<Option<Vec<String>>>()
            }
            _ => None,
        };
        match logged {
            Some(mut ids) => {
                ids.sort();
                ids.dedup();
                for id in ids {
                    match self.state.get(NAMESPACE, &rec_key(&id)).await? {
                        Some(b) => {
                            if let Some(r) = parse_record(&b) {
                                self.install(r);
                            }
                        }
                        None => self.table.write().remove(&id),
                    }
                }
            }
            None => self.reload().await?,
        }
        *seen = Some(version);
        Ok(())
    }

    /// Reads every key again and replaces the table.
    async fn reload(&self) -> Result<(), StateError> {
        let records = match self.list().await {
            Ok(r) => r,
            Err(KeyError::State(e)) => return Err(e),
            Err(e) => return Err(StateError::Unavailable(e.to_string())),
        };
        let mut table = super::Table::default();
        for r in records {
            table.install(r);
        }
        *self.table.write() = table;
        self.negative.lock().clear();
        Ok(())
    }

    /// Follows the change log every [`SYNC_EVERY`] while `keys` lives
    /// (Redis only: in memory every change is made here).
    pub fn spawn_sync(keys: &Arc<VirtualKeys>) {
        if !keys.state.is_shared() {
            return;
        }
        let weak: Weak<VirtualKeys> = Arc::downgrade(keys);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SYNC_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_full = tokio::time::Instant::now();
            loop {
                tick.tick().await;
                let Some(keys) = weak.upgrade() else { return };
                if last_full.elapsed() >= FULL_RELOAD_EVERY {
                    last_full = tokio::time::Instant::now();
                    *keys.seen.lock().await = None;
                }
                if let Err(e) = keys.sync().await {
                    tracing::debug!(error = %e, "virtual key sync failed");
                }
            }
        });
    }
}
