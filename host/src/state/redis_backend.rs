//! The Redis backend: standalone (one URL) or Redis Cluster, over async
//! multiplexed connections that reconnect by themselves. Every atomic step is
//! one command, one transaction or one script: one round trip per operation.
//!
//! This layer knows nothing about timeouts policy or fallbacks; `State` wraps
//! each call in `op_timeout` and decides what a failure means.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use parking_lot::RwLock;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Script, ServerErrorKind, Value};

use super::backend::{Answer, Backend};
use super::budget::{self, BudgetCall, BudgetReply};
use super::keys::hash_tag;
use super::limiter::{self, LIMITER_LUA, LimitCall, Limited};
use super::settings::{StateSettings, redact_url};
use super::{OnError, StateError, StateHealth};

/// Bound on establishing a connection (TLS and cluster slot discovery
/// included); longer than `op_timeout`, which bounds each operation.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The limiter as a Redis script: read every bucket, run the shared
/// algorithm with the server clock, write the changed states back.
/// KEYS = bucket keys (one hash tag); ARGV = mode, lease duration in ms,
/// then capacity, refill per ms, cost, lease and max_leased per bucket.
static LIMITER_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LIMITER_LUA}
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local n = #KEYS
local states = {{}}
for i = 1, n do
  states[i] = redis.call('GET', KEYS[i])
end
local args = {{}}
for i = 3, #ARGV do
  args[i - 2] = tonumber(ARGV[i])
end
local new_states, ttls, out = limiter(n, states, args, now_ms, ARGV[1], tonumber(ARGV[2]))
for i = 1, n do
  if new_states[i] then
    redis.call('SET', KEYS[i], new_states[i], 'PX', string.format('%d', ttls[i]))
  end
end
return out
"
    ))
});

/// Compare-and-swap. ARGV = expected present ("1"/"0"), expected, new
/// value, TTL in ms ("0": none).
static CAS_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
if ARGV[4] == '0' then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return 1",
    )
});

/// Compare-and-delete: deletes KEYS[1] if it holds ARGV[1].
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0",
    )
});

/// Set, then compare-and-delete: stores ARGV[1] at KEYS[1] (TTL ARGV[2] ms,
/// "0": none), then deletes KEYS[2] if it holds ARGV[3].
static SET_AND_RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if ARGV[2] == '0' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
if redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
  return 1
end
return 0",
    )
});

/// The value of KEYS[1], or else KEYS[2] set to ARGV[1] for ARGV[2] ms if
/// absent. Answers {1, value}, {2} (lock taken) or {3} (held by another).
static GET_OR_LOCK_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local v = redis.call('GET', KEYS[1])
if v then return {1, v} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {3}",
    )
});

/// A connection to either flavour; both multiplex and are cheap to clone.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

enum Link {
    /// Connects lazily and reconnects on its own after I/O errors.
    Single(ConnectionManager),
    /// Routes by slot and reconnects to nodes on its own; the whole
    /// connection is (re)built by `heal` when it cannot be created or stops
    /// answering (e.g. every node restarted).
    Cluster {
        // Boxed: a cluster client is large and the enum lives once per state.
        client: Box<ClusterClient>,
        conn: RwLock<Option<ClusterConnection>>,
    },
}

/// Redis, standalone or cluster.
pub(crate) struct RedisBackend {
    link: Link,
}

impl RedisBackend {
    /// Builds the clients; no network traffic yet. Needs a Tokio runtime.
    pub(crate) fn new(settings: &StateSettings) -> Result<Self, StateError> {
        let bad_url = |url: &str, e: RedisError| {
            StateError::Invalid(format!("state: redis url `{}`: {e}", redact_url(url)))
        };
        // Nagle's algorithm would hold a pipelined command until the previous
        // one is acknowledged: a whole round trip more at an edge site.
        let tcp = redis::io::tcp::TcpSettings::default().set_nodelay(true);
        let link = if let Some(url) = &settings.url {
            let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())
                .map_err(|e| bad_url(url, e))?
                .set_tcp_settings(tcp);
            let client = redis::Client::open(info).map_err(|e| bad_url(url, e))?;
            // Few, short reconnect retries: a failed attempt is retried by the
            // next operation or health probe anyway, and long backoffs would
            // delay recovery well after Redis is back.
            let config = ConnectionManagerConfig::new()
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_millis(200))
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(settings.op_timeout));
            let manager = ConnectionManager::new_lazy_with_config(client, config)
                .map_err(|e| bad_url(url, e))?;
            Link::Single(manager)
        } else {
            let seeds = settings.cluster.iter().map(String::as_str);
            let client = ClusterClient::builder(seeds)
                .tcp_settings(tcp)
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(settings.op_timeout)
                .retries(2)
                .min_retry_wait(5)
                .max_retry_wait(50)
                .build()
                .map_err(|e| StateError::Invalid(format!("state: redis cluster urls: {e}")))?;
            Link::Cluster {
                client: Box::new(client),
                conn: RwLock::new(None),
            }
        };
        Ok(Self { link })
    }

    /// `"redis"` or `"redis-cluster"`.
    pub(crate) fn name(&self) -> &'static str {
        match self.link {
            Link::Single(_) => "redis",
            Link::Cluster { .. } => "redis-cluster",
        }
    }

    fn conn(&self) -> Result<Conn, StateError> {
        match &self.link {
            Link::Single(m) => Ok(Conn::Single(m.clone())),
            Link::Cluster { conn, .. } => conn.read().clone().map(Conn::Cluster).ok_or_else(|| {
                StateError::Unavailable("not connected to the Redis cluster".into())
            }),
        }
    }

    /// Runs `op` on a connection; if the connection turns out to be closed
    /// (the server restarted, or dropped an idle client), runs it once more
    /// on the fresh connection the client has started meanwhile. The caller
    /// bounds both attempts with `op_timeout`.
    ///
    /// A command in flight when a connection breaks may have been applied,
    /// so in that rare case it applies twice (for a charge: counted twice,
    /// which errs on the strict side). The common case, a connection found
    /// closed before sending, is safe.
    async fn with_conn<T, F, Fut>(&self, op: F) -> Result<T, StateError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        super::round_trips::count();
        match op(self.conn()?).await {
            Err(e) if e.is_connection_dropped() || e.is_unrecoverable_error() => {
                super::round_trips::count();
                op(self.conn()?).await.map_err(classify)
            }
            other => other.map_err(classify),
        }
    }

    /// Runs one command (one round trip), with the retry-once rule of
    /// [`Self::with_conn`].
    pub(crate) async fn query_cmd<T: redis::FromRedisValue>(
        &self,
        cmd: &Cmd,
    ) -> Result<T, StateError> {
        self.with_conn(|mut c| async move { cmd.query_async(&mut c).await })
            .await
    }

    /// Runs a pipeline (one round trip; on a cluster every key of it must
    /// share one hash tag), with the retry-once rule of [`Self::with_conn`].
    pub(crate) async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &Pipeline,
    ) -> Result<T, StateError> {
        self.with_conn(|mut c| async move { pipe.query_async(&mut c).await })
            .await
    }

    /// Runs a prepared script invocation (EVALSHA, loading the script on
    /// NOSCRIPT) with the same retry-once rule as [`Self::with_conn`].
    pub(crate) async fn run_script<T: redis::FromRedisValue>(
        &self,
        call: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StateError> {
        self.with_conn(|mut c| async move { call.invoke_async(&mut c).await })
            .await
    }

    /// Establishes the connection (if not yet) and checks that every node
    /// (every primary, on a cluster) answers PING within `timeout`.
    pub(crate) async fn heal(&self, timeout: Duration) -> Result<(), StateError> {
        let first = self.ping(timeout).await;
        let Link::Cluster { client, conn } = &self.link else {
            return first;
        };
        if first.is_ok() {
            return first;
        }
        let fresh = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_connection())
            .await
            .map_err(|_| {
                StateError::Unavailable("connecting to the Redis cluster timed out".into())
            })?
            .map_err(classify)?;
        *conn.write() = Some(fresh);
        self.ping(timeout).await
    }

    async fn ping(&self, timeout: Duration) -> Result<(), StateError> {
        let cmd = redis::cmd("PING");
        let ping = self.with_conn(|mut c| {
            let cmd = &cmd;
            async move { cmd.query_async::<Value>(&mut c).await }
        });
        match tokio::time::timeout(timeout, ping).await {
            Ok(answer) => answer.map(drop),
            Err(_) => Err(StateError::Unavailable("PING timed out".into())),
        }
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        self.with_conn(|mut c| {
            let cmd = &cmd;
            async move { cmd.query_async(&mut c).await }
        })
        .await
    }

    pub(crate) async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<(), StateError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if let Some(ms) = ttl_ms {
            cmd.arg("PX").arg(ms);
        }
        self.with_conn(|mut c| {
            let cmd = &cmd;
            async move { cmd.query_async(&mut c).await }
        })
        .await
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<bool, StateError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(key);
        let removed: i64 = self
            .with_conn(|mut c| {
                let cmd = &cmd;
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        Ok(removed > 0)
    }

    pub(crate) async fn incr(
        &self,
        key: &str,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> Result<i64, StateError> {
        let Some(ms) = ttl_ms else {
            let mut cmd = redis::cmd("INCRBY");
            cmd.arg(key).arg(delta);
            return self
                .with_conn(|mut c| {
                    let cmd = &cmd;
                    async move { cmd.query_async(&mut c).await }
                })
                .await;
        };
        // Creating the key with its TTL first, in one transaction, gives the
        // TTL only to a key this call creates. (Not a Lua script: Lua numbers
        // are doubles and would round counters above 2^53.)
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(key)
            .arg(0)
            .arg("NX")
            .arg("PX")
            .arg(ms)
            .ignore()
            .cmd("INCRBY")
            .arg(key)
            .arg(delta);
        let (value,): (i64,) = self
            .with_conn(|mut c| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut c).await }
            })
            .await?;
        Ok(value)
    }

    pub(crate) async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<bool, StateError> {
        let mut call = CAS_SCRIPT.prepare_invoke();
        call.key(key)
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or_default())
            .arg(value)
            .arg(ttl_ms.unwrap_or(0));
        let swapped: i64 = self.run_script(&call).await?;
        Ok(swapped == 1)
    }

    pub(crate) async fn release(&self, key: &str, token: &[u8]) -> Result<bool, StateError> {
        let mut call = RELEASE_SCRIPT.prepare_invoke();
        call.key(key).arg(token);
        let released: i64 = self.run_script(&call).await?;
        Ok(released == 1)
    }

    /// `set` then `release`, in one script when both keys are on one server
    /// or share a hash tag; otherwise (Redis Cluster, two slots) in two round
    /// trips, the value always stored before the lock goes.
    pub(crate) async fn set_and_release(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
        lock: &str,
        token: &[u8],
    ) -> Result<bool, StateError> {
        let one_slot = match &self.link {
            Link::Single(_) => true,
            Link::Cluster { .. } => hash_tag(key) == hash_tag(lock),
        };
        if !one_slot {
            self.set(key, value, ttl_ms).await?;
            return self.release(lock, token).await;
        }
        let mut call = SET_AND_RELEASE_SCRIPT.prepare_invoke();
        call.key(key)
            .key(lock)
            .arg(value)
            .arg(ttl_ms.unwrap_or(0))
            .arg(token);
        let released: i64 = self.run_script(&call).await?;
        Ok(released == 1)
    }

    /// See [`Backend::get_or_lock`]: one script, one round trip.
    pub(crate) async fn get_or_lock(
        &self,
        key: &str,
        lock: &str,
        token: &[u8],
        ttl_ms: u64,
    ) -> Result<(Option<Vec<u8>>, bool), StateError> {
        let mut call = GET_OR_LOCK_SCRIPT.prepare_invoke();
        call.key(key).key(lock).arg(token).arg(ttl_ms.max(1));
        let answer: Vec<Value> = self.run_script(&call).await?;
        match answer.as_slice() {
            [Value::Int(1), Value::BulkString(bytes)] => Ok((Some(bytes.clone()), false)),
            [Value::Int(2)] => Ok((None, true)),
            [Value::Int(3)] => Ok((None, false)),
            other => Err(StateError::Unavailable(format!(
                "unexpected answer to get-or-lock: {other:?}"
            ))),
        }
    }

    /// Runs the limiter script over `call.keys` (one hash tag, so one slot).
    pub(crate) async fn limit(&self, limit: &LimitCall<'_>) -> Result<Limited, StateError> {
        let mut call = LIMITER_SCRIPT.prepare_invoke();
        call.arg(limit.mode.as_str()).arg(limit.lease_ms);
        for (i, (key, bucket)) in limit.keys.iter().zip(limit.buckets).enumerate() {
            call.key(key);
            for x in limiter::spec(bucket, limiter::terms_at(limit.terms, i)) {
                // `Display` of f64 round-trips exactly through Lua's tonumber.
                call.arg(x.to_string());
            }
        }
        let out: Vec<i64> = self.run_script(&call).await?;
        let out: Vec<u64> = out.into_iter().map(|x| x.max(0) as u64).collect();
        limiter::limited_from(limit.buckets, &out)
    }
}

// === impl Backend ===

/// A TTL in whole milliseconds, rounded up.
fn ms(ttl: Option<Duration>) -> Option<u64> {
    ttl.map(|t| u64::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX))
}

impl Backend for RedisBackend {
    fn get<'a>(&'a self, key: &'a str) -> Answer<'a, Option<Vec<u8>>> {
        Box::pin(RedisBackend::get(self, key))
    }

    fn set<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Option<Duration>) -> Answer<'a, ()> {
        Box::pin(RedisBackend::set(self, key, value, ms(ttl)))
    }

    fn delete<'a>(&'a self, key: &'a str) -> Answer<'a, bool> {
        Box::pin(RedisBackend::delete(self, key))
    }

    fn incr<'a>(&'a self, key: &'a str, delta: i64, ttl: Option<Duration>) -> Answer<'a, i64> {
        Box::pin(RedisBackend::incr(self, key, delta, ms(ttl)))
    }

    fn compare_and_swap<'a>(
        &'a self,
        key: &'a str,
        expected: Option<&'a [u8]>,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> Answer<'a, bool> {
        Box::pin(RedisBackend::compare_and_swap(
            self,
            key,
            expected,
            value,
            ms(ttl),
        ))
    }

    fn release<'a>(&'a self, key: &'a str, token: &'a [u8]) -> Answer<'a, bool> {
        Box::pin(RedisBackend::release(self, key, token))
    }

    fn set_and_release<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
        lock: &'a str,
        token: &'a [u8],
    ) -> Answer<'a, bool> {
        Box::pin(RedisBackend::set_and_release(
            self,
            key,
            value,
            ms(ttl),
            lock,
            token,
        ))
    }

    fn get_or_lock<'a>(
        &'a self,
        key: &'a str,
        lock: &'a str,
        token: &'a [u8],
        ttl: Duration,
    ) -> Answer<'a, (Option<Vec<u8>>, bool)> {
        let ttl_ms = ms(Some(ttl)).unwrap_or(1);
        Box::pin(RedisBackend::get_or_lock(self, key, lock, token, ttl_ms))
    }

    fn limit<'a>(&'a self, call: LimitCall<'a>) -> Answer<'a, Limited> {
        Box::pin(async move { RedisBackend::limit(self, &call).await })
    }

    fn budget<'a>(&'a self, call: BudgetCall<'a>) -> Answer<'a, BudgetReply> {
        Box::pin(async move {
            let out: Vec<i64> = self.run_script(&budget::invocation(&call)).await?;
            budget::reply(&call, &out)
        })
    }

    fn budget_hash<'a>(&'a self, key: &'a str) -> Answer<'a, Vec<(String, i64)>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("HGETALL");
            cmd.arg(key);
            let fields: Vec<(String, i64)> = self
                .with_conn(|mut c| {
                    let cmd = &cmd;
                    async move { cmd.query_async(&mut c).await }
                })
                .await?;
            Ok(fields)
        })
    }

    /// Redis alone never degrades: [`super::fallback::Fallback`] tracks that.
    fn health(&self) -> StateHealth {
        StateHealth {
            backend: self.name(),
            on_error: OnError::FailClosed,
            degraded: false,
            fallbacks: 0,
            errors: 0,
            last_error: None,
        }
    }
}

/// Splits Redis errors into "your data is wrong" (`Invalid`: the caller's
/// problem, never a reason to fall back) and everything else (`Unavailable`).
fn classify(e: RedisError) -> StateError {
    let text = e.to_string();
    let about_data = matches!(
        e.kind(),
        ErrorKind::Server(ServerErrorKind::ResponseError) | ErrorKind::Extension
    ) && (text.contains("not an integer")
        || text.contains("overflow")
        || text.contains("WRONGTYPE"));
    if about_data {
        StateError::Invalid(text)
    } else {
        StateError::Unavailable(text)
    }
}
