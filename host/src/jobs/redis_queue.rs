//! The Redis backend of [`Queue`]: one stream per priority read through one
//! consumer group (`workers`), one consumer per node.
//!
//! Keys (Redis Cluster: the queue keys share the hash tag `{q}`, so the
//! delayed set moves jobs into streams in one script; a job's record is
//! its own tag, so records spread over the slots):
//! - `sluice:jobs:{q}:<priority>`: streams of `id=<job id>` entries;
//! - `sluice:jobs:{q}:delayed`: sorted set of `<priority index>|<job id>`
//!   by the time (ms) a retry or a rate-limit wait is due;
//! - `sluice:jobs:{q}:dead`: the dead-letter stream;
//! - `sluice:job:{<id>}`: the job's hash (`spec` JSON, `body`, `status`,
//!   `attempts`, `started`, `first` (the first run's start), `finished`,
//!   `result` JSON, `error`, `webhook`).
//!
//! At-least-once: an entry stays pending in the group until acknowledged
//! (`XACK` + `XDEL`) after its job's final transition or rescheduling. A
//! node renews its entries (`XCLAIM … JUSTID`) every third of the
//! visibility timeout; entries idle longer (their node died) are taken
//! over with `XAUTOCLAIM`. Final transitions are Lua compare-and-set on the
//! record, so a job run twice keeps the first result.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use redis::{Script, Value};

use super::queue::{Answer, Cancel, DeadEntry, Delivery, Finish, Queue, Start};
use super::{JobRecord, JobResult, JobSpec, JobStatus, Priority};
use crate::state::{RedisLink, StateError};

const GROUP: &str = "workers";
const DELAYED: &str = "sluice:jobs:{q}:delayed";
const DEAD: &str = "sluice:jobs:{q}:dead";

fn stream(p: Priority) -> String {
    format!("sluice:jobs:{{q}}:{}", p.as_str())
}

fn record_key(id: &str) -> String {
    format!("sluice:job:{{{id}}}")
}

/// Running, unless final: `{0}` gone, `{1, fields}` started, `{2, fields}`
/// already final.
static START: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {0} end
if st == 'queued' or st == 'running' then
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('HSET', KEYS[1], 'status', 'running', 'started', ARGV[1])
  redis.call('HSETNX', KEYS[1], 'first', ARGV[1])
  return {1, redis.call('HGETALL', KEYS[1])}
end
return {2, redis.call('HGETALL', KEYS[1])}",
    )
});

/// The final transition, first writer wins. ARGV: status, result, error,
/// webhook, finished, ttl ms, keep body ("1").
static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'queued' and st ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'result', ARGV[2], 'error', ARGV[3], 'webhook', ARGV[4], 'finished', ARGV[5])
if ARGV[7] ~= '1' then redis.call('HDEL', KEYS[1], 'body') end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1",
    )
});

/// Cancels a queued job: 1, 0 (missing) or the current status.
static CANCEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 0 end
if st ~= 'queued' then return st end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished', ARGV[1])
redis.call('HDEL', KEYS[1], 'body')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1",
    )
});

/// Running back to queued. ARGV: give the attempt back ("1"), error.
static LATER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued')
if ARGV[1] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', -1) end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[2]) end
return 1",
    )
});

/// Sets a field of an existing record (never recreates an expired one).
static SET_IF_EXISTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1",
    )
});

/// Dead back to queued with attempts reset. ARGV: ttl ms.
static REQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('HGET', KEYS[1], 'status') ~= 'dead' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempts', 0)
redis.call('HDEL', KEYS[1], 'result', 'finished', 'webhook', 'first')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1",
    )
});

/// Due delayed jobs into their streams, then aging. KEYS: delayed, then
/// the five streams by priority index; ARGV: now ms, the aging cutoff ms
/// (0: no aging), the group. Aging moves the entries of `high`..`bulk`
/// that the group has not delivered yet and were added at or before the
/// cutoff (entry ids are times) to the next level up, highest level
/// first, so an entry moves one level per call.
static PROMOTE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, m in ipairs(due) do
  local sep = string.find(m, '|', 1, true)
  local p = tonumber(string.sub(m, 1, sep - 1))
  redis.call('XADD', KEYS[p + 2], '*', 'id', string.sub(m, sep + 1))
  redis.call('ZREM', KEYS[1], m)
end
local moved = #due
if ARGV[2] == '0' then return moved end
for p = 1, 4 do
  local key = KEYS[p + 2]
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', key)
  local last = nil
  if ok then
    for _, g in ipairs(groups) do
      local name, delivered = nil, nil
      for i = 1, #g, 2 do
        if g[i] == 'name' then name = g[i + 1] end
        if g[i] == 'last-delivered-id' then delivered = g[i + 1] end
      end
      if name == ARGV[3] then last = delivered end
    end
  end
  if last then
    local aged = redis.call('XRANGE', key, '(' .. last, ARGV[2], 'COUNT', 100)
    for _, e in ipairs(aged) do
      redis.call('XADD', KEYS[p + 1], '*', unpack(e[2]))
      redis.call('XDEL', key, e[1])
      moved = moved + 1
    end
  end
end
return moved",
    )
});

/// Redis Streams (see the module docs).
pub(crate) struct RedisQueue {
    link: RedisLink,
}

impl RedisQueue {
    pub(crate) fn new(link: RedisLink) -> Self {
        Self { link }
    }

    /// Creates the consumer group on every stream (and the streams), if
    /// missing.
    pub(crate) async fn ensure_groups(&self) -> Result<(), StateError> {
        for p in Priority::ALL {
            let mut cmd = redis::cmd("XGROUP");
            cmd.arg("CREATE")
                .arg(stream(p))
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM");
            match self.link.cmd::<Value>(&cmd).await {
                Ok(_) => {}
                Err(StateError::Unavailable(e)) if e.contains("BUSYGROUP") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn claim_once(
        &self,
        consumer: &str,
        priority: Priority,
        n: usize,
    ) -> Result<Vec<Delivery>, StateError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(n)
            .arg("STREAMS")
            .arg(stream(priority))
            .arg(">");
        let reply: Value = self.link.cmd(&cmd).await?;
        let mut out = Vec::new();
        for (_, entries) in pairs(reply) {
            for (entry, id) in entries_of(entries) {
                out.push(Delivery {
                    id,
                    priority,
                    entry,
                });
            }
        }
        Ok(out)
    }

    async fn ack_pipe(
        &self,
        d: &Delivery,
        extra: impl FnOnce(&mut redis::Pipeline),
    ) -> Result<(), StateError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        extra(&mut pipe);
        pipe.cmd("XACK")
            .arg(stream(d.priority))
            .arg(GROUP)
            .arg(&d.entry)
            .ignore()
            .cmd("XDEL")
            .arg(stream(d.priority))
            .arg(&d.entry)
            .ignore();
        self.link.pipe::<Value>(&pipe).await.map(drop)
    }

    async fn dead_entries(&self, limit: usize) -> Result<Vec<DeadEntry>, StateError> {
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(DEAD).arg("-").arg("+").arg("COUNT").arg(limit);
        let reply: Value = self.link.cmd(&cmd).await?;
        Ok(entry_list(reply)
            .into_iter()
            .map(|(entry, fields)| DeadEntry {
                entry,
                id: fields.get("id").cloned().unwrap_or_default(),
                priority: fields
                    .get("priority")
                    .and_then(|p| Priority::parse(p))
                    .unwrap_or(Priority::Normal),
                error: fields.get("error").cloned().unwrap_or_default(),
                at_ms: fields
                    .get("at")
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_default(),
            })
            .collect())
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

fn nogroup(e: &StateError) -> bool {
    matches!(e, StateError::Unavailable(m) if m.contains("NOGROUP"))
}

impl Queue for RedisQueue {
    fn submit<'a>(&'a self, spec: &'a JobSpec, body: &'a [u8], ttl: Duration) -> Answer<'a, ()> {
        Box::pin(async move {
            let key = record_key(&spec.id);
            let json = serde_json::to_string(spec)
                .map_err(|e| StateError::Invalid(format!("job spec: {e}")))?;
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("HSET")
                .arg(&key)
                .arg("spec")
                .arg(json)
                .arg("body")
                .arg(body)
                .arg("status")
                .arg("queued")
                .arg("attempts")
                .arg(0)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(ms(ttl))
                .ignore();
            self.link.pipe::<Value>(&pipe).await?;
            // The record exists before any worker can see the entry.
            let mut add = redis::cmd("XADD");
            add.arg(stream(spec.priority))
                .arg("*")
                .arg("id")
                .arg(&spec.id);
            self.link.cmd::<Value>(&add).await.map(drop)
        })
    }

    fn load<'a>(&'a self, id: &'a str) -> Answer<'a, Option<JobRecord>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("HGETALL");
            cmd.arg(record_key(id));
            let reply: Value = self.link.cmd(&cmd).await?;
            Ok(record_from(reply).map(|(r, _)| r))
        })
    }

    fn cancel<'a>(&'a self, id: &'a str, now_ms: u64, ttl: Duration) -> Answer<'a, Cancel> {
        Box::pin(async move {
            let mut call = CANCEL.prepare_invoke();
            call.key(record_key(id)).arg(now_ms).arg(ms(ttl));
            let reply: Value = self.link.script(&call).await?;
            Ok(match reply {
                Value::Int(1) => Cancel::Cancelled,
                Value::Int(_) => Cancel::NotFound,
                other => {
                    let s = text(&other).unwrap_or_default();
                    Cancel::NotQueued(JobStatus::parse(&s).unwrap_or(JobStatus::Running))
                }
            })
        })
    }

    fn claim<'a>(
        &'a self,
        consumer: &'a str,
        priority: Priority,
        n: usize,
    ) -> Answer<'a, Vec<Delivery>> {
        Box::pin(async move {
            match self.claim_once(consumer, priority, n).await {
                Err(e) if nogroup(&e) => {
                    // Redis lost the streams (restart without persistence).
                    self.ensure_groups().await?;
                    self.claim_once(consumer, priority, n).await
                }
                other => other,
            }
        })
    }

    fn reclaim<'a>(
        &'a self,
        consumer: &'a str,
        idle: Duration,
        n: usize,
    ) -> Answer<'a, Vec<Delivery>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for p in Priority::ALL {
                if out.len() >= n {
                    break;
                }
                let mut cmd = redis::cmd("XAUTOCLAIM");
                cmd.arg(stream(p))
                    .arg(GROUP)
                    .arg(consumer)
                    .arg(ms(idle))
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(n - out.len());
                let reply: Value = match self.link.cmd(&cmd).await {
                    Err(e) if nogroup(&e) => continue,
                    other => other?,
                };
                // [next cursor, [[entry, fields]…], [deleted entries]]
                if let Value::Array(parts) = reply
                    && let Some(claimed) = parts.into_iter().nth(1)
                {
                    for (entry, id) in entries_of(claimed) {
                        out.push(Delivery {
                            id,
                            priority: p,
                            entry,
                        });
                    }
                }
            }
            Ok(out)
        })
    }

    fn renew<'a>(
        &'a self,
        consumer: &'a str,
        held: &'a [Delivery],
        _min_idle: Duration,
    ) -> Answer<'a, ()> {
        Box::pin(async move {
            for p in Priority::ALL {
                let mine: Vec<&Delivery> = held.iter().filter(|d| d.priority == p).collect();
                if mine.is_empty() {
                    continue;
                }
                // Only entries this consumer still holds: one another node
                // took over is not taken back.
                let mut pending = redis::cmd("XPENDING");
                pending
                    .arg(stream(p))
                    .arg(GROUP)
                    .arg("-")
                    .arg("+")
                    .arg(10_000)
                    .arg(consumer);
                let reply: Value = self.link.cmd(&pending).await?;
                let owned: std::collections::HashSet<String> = match reply {
                    Value::Array(rows) => rows
                        .into_iter()
                        .filter_map(|row| match row {
                            Value::Array(cols) => cols.first().and_then(text),
                            _ => None,
                        })
                        .collect(),
                    _ => Default::default(),
                };
                let entries: Vec<&str> = mine
                    .iter()
                    .map(|d| d.entry.as_str())
                    .filter(|e| owned.contains(*e))
                    .collect();
                if entries.is_empty() {
                    continue;
                }
                let mut claim = redis::cmd("XCLAIM");
                claim.arg(stream(p)).arg(GROUP).arg(consumer).arg(0);
                for e in entries {
                    claim.arg(e);
                }
                claim.arg("JUSTID");
                self.link.cmd::<Value>(&claim).await?;
            }
            Ok(())
        })
    }

    fn start<'a>(&'a self, id: &'a str, now_ms: u64) -> Answer<'a, Start> {
        Box::pin(async move {
            let mut call = START.prepare_invoke();
            call.key(record_key(id)).arg(now_ms);
            let reply: Value = self.link.script(&call).await?;
            let Value::Array(mut parts) = reply else {
                return Ok(Start::Gone);
            };
            let fields = if parts.len() > 1 { parts.pop() } else { None };
            let code = matches!(parts.first(), Some(Value::Int(1)));
            let Some((record, body)) = fields.and_then(record_from) else {
                return Ok(Start::Gone);
            };
            Ok(if code {
                Start::Run(record, body)
            } else {
                Start::Done(record)
            })
        })
    }

    fn finish<'a>(&'a self, id: &'a str, f: Finish<'a>) -> Answer<'a, bool> {
        Box::pin(async move {
            let result = match f.result {
                Some(r) => serde_json::to_string(r)
                    .map_err(|e| StateError::Invalid(format!("job result: {e}")))?,
                None => String::new(),
            };
            let mut call = FINISH.prepare_invoke();
            call.key(record_key(id))
                .arg(f.status.as_str())
                .arg(result)
                .arg(f.error.unwrap_or(""))
                .arg(f.webhook.unwrap_or(""))
                .arg(f.now_ms)
                .arg(ms(f.ttl))
                .arg(if f.keep_body { "1" } else { "0" });
            let won: i64 = self.link.script(&call).await?;
            Ok(won == 1)
        })
    }

    fn set_webhook<'a>(&'a self, id: &'a str, state: &'a str) -> Answer<'a, ()> {
        Box::pin(async move {
            let mut call = SET_IF_EXISTS.prepare_invoke();
            call.key(record_key(id)).arg("webhook").arg(state);
            self.link.script::<i64>(&call).await.map(drop)
        })
    }

    fn later<'a>(
        &'a self,
        d: &'a Delivery,
        ready_ms: u64,
        count: bool,
        error: Option<&'a str>,
    ) -> Answer<'a, ()> {
        Box::pin(async move {
            let mut call = LATER.prepare_invoke();
            call.key(record_key(&d.id))
                .arg(if count { "0" } else { "1" })
                .arg(error.unwrap_or(""));
            self.link.script::<i64>(&call).await?;
            let member = format!("{}|{}", d.priority.index(), d.id);
            self.ack_pipe(d, |pipe| {
                pipe.cmd("ZADD")
                    .arg(DELAYED)
                    .arg(ready_ms)
                    .arg(member)
                    .ignore();
            })
            .await
        })
    }

    fn bury<'a>(
        &'a self,
        d: &'a Delivery,
        priority: Priority,
        error: &'a str,
        now_ms: u64,
    ) -> Answer<'a, ()> {
        Box::pin(async move {
            self.ack_pipe(d, |pipe| {
                pipe.cmd("XADD")
                    .arg(DEAD)
                    .arg("*")
                    .arg("id")
                    .arg(&d.id)
                    .arg("priority")
                    .arg(priority.as_str())
                    .arg("error")
                    .arg(error)
                    .arg("at")
                    .arg(now_ms)
                    .ignore();
            })
            .await
        })
    }

    fn ack<'a>(&'a self, d: &'a Delivery) -> Answer<'a, ()> {
        Box::pin(self.ack_pipe(d, |_| {}))
    }

    fn promote<'a>(&'a self, now_ms: u64, aged_before_ms: Option<u64>) -> Answer<'a, usize> {
        Box::pin(async move {
            let mut call = PROMOTE.prepare_invoke();
            call.key(DELAYED);
            for p in Priority::ALL {
                call.key(stream(p));
            }
            call.arg(now_ms).arg(aged_before_ms.unwrap_or(0)).arg(GROUP);
            let n: i64 = self.link.script(&call).await?;
            Ok(n.max(0) as usize)
        })
    }

    fn depths(&self) -> Answer<'_, [u64; 5]> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            for p in Priority::ALL {
                pipe.cmd("XLEN").arg(stream(p));
            }
            let lens: Vec<u64> = self.link.pipe(&pipe).await?;
            let mut out = [0u64; 5];
            for (slot, n) in out.iter_mut().zip(lens) {
                *slot = n;
            }
            Ok(out)
        })
    }

    fn dead_list(&self, limit: usize) -> Answer<'_, Vec<DeadEntry>> {
        Box::pin(self.dead_entries(limit))
    }

    fn dead_requeue<'a>(&'a self, id: &'a str, ttl: Duration) -> Answer<'a, bool> {
        Box::pin(async move {
            let entries: Vec<DeadEntry> = self
                .dead_entries(100_000)
                .await?
                .into_iter()
                .filter(|e| e.id == id)
                .collect();
            if entries.is_empty() {
                return Ok(false);
            }
            let mut call = REQUEUE.prepare_invoke();
            call.key(record_key(id)).arg(ms(ttl));
            let requeued: i64 = self.link.script(&call).await?;
            let mut pipe = redis::pipe();
            pipe.atomic();
            for e in &entries {
                pipe.cmd("XDEL").arg(DEAD).arg(&e.entry).ignore();
            }
            if requeued == 1 {
                pipe.cmd("XADD")
                    .arg(stream(entries[0].priority))
                    .arg("*")
                    .arg("id")
                    .arg(id)
                    .ignore();
            }
            self.link.pipe::<Value>(&pipe).await?;
            Ok(requeued == 1)
        })
    }

    fn dead_purge(&self) -> Answer<'_, u64> {
        Box::pin(async move {
            let entries = self.dead_entries(100_000).await?;
            for e in &entries {
                let mut del = redis::cmd("DEL");
                del.arg(record_key(&e.id));
                self.link.cmd::<Value>(&del).await?;
                let mut xdel = redis::cmd("XDEL");
                xdel.arg(DEAD).arg(&e.entry);
                self.link.cmd::<Value>(&xdel).await?;
            }
            Ok(entries.len() as u64)
        })
    }
}

// === reply parsing ===

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// `[[key, value]…]` or a map, as pairs.
fn pairs(v: Value) -> Vec<(Value, Value)> {
    match v {
        Value::Map(m) => m,
        Value::Array(rows) => rows
            .into_iter()
            .filter_map(|row| match row {
                Value::Array(mut kv) if kv.len() == 2 => {
                    let v = kv.pop()?;
                    let k = kv.pop()?;
                    Some((k, v))
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A flat `[field, value, …]` array (or a map) as a map of text.
fn fields(v: Value) -> HashMap<String, Vec<u8>> {
    let flat: Vec<(Value, Value)> = match v {
        Value::Map(m) => m,
        Value::Array(items) => {
            let mut out = Vec::new();
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            out
        }
        _ => Vec::new(),
    };
    flat.into_iter()
        .filter_map(|(k, v)| {
            let k = text(&k)?;
            let v = match v {
                Value::BulkString(b) => b,
                other => text(&other)?.into_bytes(),
            };
            Some((k, v))
        })
        .collect()
}

/// Stream entries `[[entry id, [field, value…]]…]` with their text fields.
fn entry_list(v: Value) -> Vec<(String, HashMap<String, String>)> {
    pairs(v)
        .into_iter()
        .filter_map(|(entry, f)| {
            let entry = text(&entry)?;
            let f = fields(f)
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect();
            Some((entry, f))
        })
        .collect()
}

/// Stream entries as (entry id, job id); entries without a job id (deleted
/// meanwhile) are skipped.
fn entries_of(v: Value) -> Vec<(String, String)> {
    entry_list(v)
        .into_iter()
        .filter_map(|(entry, mut f)| Some((entry, f.remove("id")?)))
        .collect()
}

/// A record and its body from `HGETALL`; `None` when it does not exist.
fn record_from(v: Value) -> Option<(JobRecord, Vec<u8>)> {
    let mut f = fields(v);
    let spec: JobSpec = serde_json::from_slice(f.get("spec")?).ok()?;
    let get = |f: &HashMap<String, Vec<u8>>, k: &str| {
        f.get(k)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .filter(|s| !s.is_empty())
    };
    let num = |f: &HashMap<String, Vec<u8>>, k: &str| get(f, k).and_then(|s| s.parse::<u64>().ok());
    let result: Option<JobResult> = f
        .get("result")
        .filter(|r| !r.is_empty())
        .and_then(|r| serde_json::from_slice(r).ok());
    let record = JobRecord {
        status: get(&f, "status")
            .and_then(|s| JobStatus::parse(&s))
            .unwrap_or(JobStatus::Queued),
        attempts: num(&f, "attempts").unwrap_or(0) as u32,
        started_ms: num(&f, "started"),
        first_started_ms: num(&f, "first"),
        finished_ms: num(&f, "finished"),
        result,
        error: get(&f, "error"),
        webhook: get(&f, "webhook"),
        spec,
    };
    let body = f.remove("body").unwrap_or_default();
    Some((record, body))
}
