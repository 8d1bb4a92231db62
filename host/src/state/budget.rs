//! Budget counters: capped integer counters (spend in nano-USD) reserved
//! all-or-nothing, adjusted unconditionally, and spend-record hashes — on
//! both backends, exact across nodes on Redis.
//!
//! One call is one atomic step over a set of counters (a subject's day,
//! month and total periods; several subjects at once), each with its own
//! delta: with `check`, the deltas apply only when no counter with a
//! positive delta would pass its limit; without, every delta (of either
//! sign) applies. A call may also add to the fields of one hash (the day's spend
//! records) in the same step. Every budget key shares one hash tag
//! (`{sluice-budget}`), so on Redis Cluster any set of them is one slot
//! and one script run; the cost is that all budget traffic goes to one
//! Redis node (one small script per request).

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::Script;

use super::{State, StateError};

/// Longest budget key (after the prefix), in bytes.
pub const MAX_BUDGET_KEY_BYTES: usize = 512;
/// Most counters one call may touch.
pub const MAX_BUDGET_COUNTERS: usize = 16;

/// One counter of a budget call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BudgetCounter {
    /// The counter's key (without the state's prefix).
    pub key: String,
    /// What to add.
    pub delta: i64,
    /// The cap `check` enforces; `None`: never refuses.
    pub limit: Option<i64>,
    /// Expiry set when the call creates the counter (`None`: never).
    pub ttl: Option<Duration>,
}

/// Fields to add to in one hash, with the counters' step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashAdd {
    pub key: String,
    pub fields: Vec<(String, i64)>,
    /// Expiry set when the call creates the hash.
    pub ttl: Option<Duration>,
}

/// What a budget call did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BudgetReply {
    /// Whether the deltas were added (always, without `check`).
    pub admitted: bool,
    /// Index of the first counter that would have passed its limit.
    pub refused: Option<usize>,
    /// Each counter's value after the call.
    pub values: Vec<i64>,
    /// With slice terms: each counter's slice granted to this node.
    pub granted: Vec<i64>,
    /// With slice terms: whether each counter's give-back flag is up (a
    /// node was refused while slices were out: nodes return theirs).
    pub give_back: Vec<bool>,
    /// Served from this node's slices, without a Redis call.
    pub local: bool,
}

/// What a call asks of one counter's slices (see `budget_leases`): return
/// `ret` unused units of this node's slice first; after the deltas, grant
/// a slice of up to `want` (at most a quarter of what is left under the
/// limit, none below `min`, none while the give-back flag is up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SliceTerms {
    pub ret: i64,
    pub want: i64,
    pub min: i64,
}

/// One budget call over full keys (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BudgetCall<'a> {
    pub keys: &'a [String],
    pub counters: &'a [BudgetCounter],
    pub check: bool,
    pub hash: Option<(&'a str, &'a HashAdd)>,
    /// Slice terms, one per counter, or none (no slices). With terms, a
    /// refusal raises the give-back flag of each counter that refused.
    pub slices: Option<Slices<'a>>,
}

/// The slice part of a budget call: terms and flag keys, one per counter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slices<'a> {
    pub terms: &'a [SliceTerms],
    pub flags: &'a [String],
    /// How long a raised give-back flag stays up.
    pub flag_ttl: Duration,
}

/// The full key of budget key `key`.
pub(crate) fn full_key(key: &str) -> String {
    format!("sluice:budget:{{sluice-budget}}{key}")
}

/// The give-back flag of the counter with full key `full`.
pub(crate) fn flag_key(full: &str) -> String {
    format!("{full}|give-back")
}

fn check_key(key: &str) -> Result<(), StateError> {
    if key.is_empty() || key.len() > MAX_BUDGET_KEY_BYTES {
        return Err(StateError::Invalid(format!(
            "budget keys are 1 to {MAX_BUDGET_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}

fn ttl_ms(ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |t| (t.as_millis() as u64).max(1))
}

impl State {
    /// Adds each counter's delta if none with a positive delta passes its
    /// limit (`check`), or unconditionally; and adds `hash`'s fields; one
    /// atomic step. Always on the backend, exact (slices are only for
    /// [`State::budget_reserve`]).
    pub async fn budget(
        &self,
        counters: &[BudgetCounter],
        check: bool,
        hash: Option<&HashAdd>,
    ) -> Result<BudgetReply, StateError> {
        if counters.len() > MAX_BUDGET_COUNTERS {
            return Err(StateError::Invalid(format!(
                "at most {MAX_BUDGET_COUNTERS} budget counters per call"
            )));
        }
        for c in counters {
            check_key(&c.key)?;
        }
        if let Some(h) = hash {
            check_key(&h.key)?;
        }
        let keys: Vec<String> = counters.iter().map(|c| full_key(&c.key)).collect();
        let hash_key = hash.map(|h| full_key(&h.key));
        let call = BudgetCall {
            keys: &keys,
            counters,
            check,
            hash: hash_key.as_deref().zip(hash),
            slices: None,
        };
        self.backend.budget(call).await
    }

    /// [`State::budget`] with `check` and no hash, for a request's
    /// reservation: on Redis with `[state] limits = "leased"` it is served
    /// from this node's budget slices when they cover every counter
    /// (`BudgetReply::local`, no Redis call; give the unspent part back
    /// with [`State::budget_put_back`]), else it goes to Redis, returns
    /// this node's slice of those counters, asks for a new one, and when
    /// refused waits for the other nodes to return theirs and tries once
    /// more (see `budget_leases`). Elsewhere it is the exact call.
    pub async fn budget_reserve(
        &self,
        counters: &[BudgetCounter],
    ) -> Result<BudgetReply, StateError> {
        let Some(edge) = &self.budget_edge else {
            return self.budget(counters, true, None).await;
        };
        if counters.len() > MAX_BUDGET_COUNTERS {
            return Err(StateError::Invalid(format!(
                "at most {MAX_BUDGET_COUNTERS} budget counters per call"
            )));
        }
        for c in counters {
            check_key(&c.key)?;
        }
        let keys: Vec<String> = counters.iter().map(|c| full_key(&c.key)).collect();
        edge.reserve(&keys, counters).await
    }

    /// Gives `amount` of a reservation made from this node's slices back to
    /// them; answers the counters (by index) that hold no slice any more,
    /// whose share the caller must refund with an unconditional call.
    pub fn budget_put_back(&self, counters: &[BudgetCounter], amount: i64) -> Vec<usize> {
        match &self.budget_edge {
            Some(edge) => {
                let keys: Vec<String> = counters.iter().map(|c| full_key(&c.key)).collect();
                edge.put_back(&keys, amount)
            }
            None => (0..counters.len()).collect(),
        }
    }

    /// Every field of the budget hash `key` (empty when it does not exist).
    pub async fn budget_hash(&self, key: &str) -> Result<Vec<(String, i64)>, StateError> {
        check_key(key)?;
        self.backend.budget_hash(&full_key(key)).await
    }
}

// === Redis ===

/// KEYS = counters, then (with slices) one give-back flag per counter, then
/// the hash if any. ARGV = n, check (0/1), flag TTL in ms (0: no slices),
/// then per counter delta, limit (-1: none), TTL in ms (0: none), ret,
/// want and min, then the hash TTL and field and delta pairs. Deltas go to
/// INCRBY as the caller wrote them, so they stay exact integers;
/// comparisons are exact below 2^53 nano-USD ($9M).
///
/// Order: returned slices come off first (never below zero, never onto a
/// counter that expired), then the check (a refusal raises the flag of
/// each counter that refused), then the deltas, then the grants. Answer:
/// admitted, refused (1-based, 0: none), the values, then (with slices)
/// the grants and the flags.
pub(crate) static BUDGET_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = tonumber(ARGV[1])
local flag_ttl = tonumber(ARGV[3])
local sliced = flag_ttl > 0
local function arg(i, j) return tonumber(ARGV[3 + 6 * (i - 1) + j]) end
local values, grants, flags = {}, {}, {}
for i = 1, n do
  values[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  grants[i], flags[i] = 0, 0
  local ret = arg(i, 4)
  if ret > 0 and values[i] > 0 then
    values[i] = redis.call('DECRBY', KEYS[i], math.min(ret, values[i]))
  end
end
local function answer(admitted, refused)
  local out = {admitted, refused}
  for i = 1, n do out[#out + 1] = values[i] end
  if sliced then
    for i = 1, n do out[#out + 1] = grants[i] end
    for i = 1, n do out[#out + 1] = flags[i] end
  end
  return out
end
if ARGV[2] == '1' then
  local refused = 0
  for i = 1, n do
    local delta, limit = arg(i, 1), arg(i, 2)
    if delta > 0 and limit >= 0 and values[i] + delta > limit then
      if refused == 0 then refused = i end
      if sliced then
        redis.call('SET', KEYS[n + i], '1', 'PX', flag_ttl)
        flags[i] = 1
      end
    end
  end
  if refused > 0 then return answer(0, refused) end
end
for i = 1, n do
  local delta = arg(i, 1)
  local ttl = arg(i, 3)
  if delta ~= 0 then
    values[i] = redis.call('INCRBY', KEYS[i], delta)
    if ttl > 0 and redis.call('PTTL', KEYS[i]) < 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
  end
  if sliced then
    flags[i] = redis.call('EXISTS', KEYS[n + i])
    local want, limit, min = arg(i, 5), arg(i, 2), arg(i, 6)
    if want > 0 and limit >= 0 and flags[i] == 0 then
      local grant = math.min(want, math.floor((limit - values[i]) / 4))
      if grant > 0 and grant >= min then
        grants[i] = grant
        values[i] = redis.call('INCRBY', KEYS[i], grant)
        if ttl > 0 and redis.call('PTTL', KEYS[i]) < 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
      end
    end
  end
end
local first = sliced and 2 * n or n
if #KEYS > first then
  local h = KEYS[first + 1]
  local base = 3 + 6 * n
  for j = base + 2, #ARGV, 2 do redis.call('HINCRBY', h, ARGV[j], ARGV[j + 1]) end
  local ttl = tonumber(ARGV[base + 1])
  if ttl > 0 and redis.call('PTTL', h) < 0 then redis.call('PEXPIRE', h, ttl) end
end
return answer(1, 0)
",
    )
});

/// The script invocation for `call`.
pub(crate) fn invocation(call: &BudgetCall<'_>) -> redis::ScriptInvocation<'static> {
    let mut inv = BUDGET_SCRIPT.prepare_invoke();
    for k in call.keys {
        inv.key(k.as_str());
    }
    inv.arg(call.keys.len()).arg(if call.check { 1 } else { 0 });
    match &call.slices {
        Some(s) => {
            for f in s.flags {
                inv.key(f.as_str());
            }
            inv.arg(ttl_ms(Some(s.flag_ttl)));
        }
        None => {
            inv.arg(0);
        }
    }
    for (i, c) in call.counters.iter().enumerate() {
        let t = call
            .slices
            .and_then(|s| s.terms.get(i).copied())
            .unwrap_or_default();
        inv.arg(c.delta)
            .arg(c.limit.unwrap_or(-1))
            .arg(ttl_ms(c.ttl))
            .arg(t.ret)
            .arg(t.want)
            .arg(t.min);
    }
    match call.hash {
        Some((key, add)) => {
            inv.key(key);
            inv.arg(ttl_ms(add.ttl));
            for (field, delta) in &add.fields {
                inv.arg(field.as_str()).arg(*delta);
            }
        }
        None => {
            inv.arg(0);
        }
    }
    inv
}

/// The reply of the script to `call`.
pub(crate) fn reply(call: &BudgetCall<'_>, out: &[i64]) -> Result<BudgetReply, StateError> {
    let n = call.keys.len();
    let want = if call.slices.is_some() {
        3 * n + 2
    } else {
        n + 2
    };
    if out.len() != want {
        return Err(StateError::Unavailable(format!(
            "budget script answered {} numbers for {n} counters",
            out.len()
        )));
    }
    let (granted, give_back) = if call.slices.is_some() {
        (
            out[n + 2..2 * n + 2].to_vec(),
            out[2 * n + 2..].iter().map(|f| *f != 0).collect(),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(BudgetReply {
        admitted: out[0] == 1,
        refused: (out[1] > 0).then(|| (out[1] - 1) as usize),
        values: out[2..n + 2].to_vec(),
        granted,
        give_back,
        local: false,
    })
}

// === memory ===

/// The memory backend's counters and hashes, behind one lock (the calls
/// span several keys and are small).
#[derive(Default)]
pub(crate) struct BudgetMemory {
    inner: Mutex<MemInner>,
}

#[derive(Default)]
struct MemInner {
    counters: HashMap<String, (i64, Option<Instant>)>,
    hashes: HashMap<String, (HashMap<String, i64>, Option<Instant>)>,
    calls: u64,
}

fn live(expires: Option<Instant>, now: Instant) -> bool {
    expires.is_none_or(|at| at > now)
}

impl BudgetMemory {
    pub(crate) fn call(&self, call: &BudgetCall<'_>) -> BudgetReply {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        inner.calls += 1;
        if inner.calls.is_multiple_of(1024) {
            inner.counters.retain(|_, (_, at)| live(*at, now));
            inner.hashes.retain(|_, (_, at)| live(*at, now));
        }
        // Returned slices come off first (the memory backend grants none,
        // but a fail-open fallback may be handed one back).
        if let Some(slices) = call.slices {
            for (key, t) in call.keys.iter().zip(slices.terms) {
                if t.ret > 0
                    && let Some((v, at)) = inner.counters.get_mut(key)
                    && live(*at, now)
                {
                    *v -= t.ret.min((*v).max(0));
                }
            }
        }
        let values: Vec<i64> = call
            .keys
            .iter()
            .map(|k| match inner.counters.get(k) {
                Some((v, at)) if live(*at, now) => *v,
                _ => 0,
            })
            .collect();
        let n = call.keys.len();
        let sliced = |v: i64| {
            if call.slices.is_some() {
                vec![v; n]
            } else {
                Vec::new()
            }
        };
        if call.check {
            let over = call.counters.iter().zip(&values).position(|(c, v)| {
                c.delta > 0
                    && c.limit
                        .is_some_and(|limit| v.saturating_add(c.delta) > limit)
            });
            if let Some(i) = over {
                return BudgetReply {
                    admitted: false,
                    refused: Some(i),
                    values,
                    granted: sliced(0),
                    give_back: sliced(0).into_iter().map(|_| false).collect(),
                    local: false,
                };
            }
        }
        let mut out = Vec::with_capacity(values.len());
        for ((key, c), v) in call.keys.iter().zip(call.counters).zip(values) {
            if c.delta == 0 {
                out.push(v);
                continue;
            }
            let entry = inner.counters.entry(key.clone()).or_insert((0, None));
            if !live(entry.1, now) {
                *entry = (0, None);
            }
            if entry.1.is_none() && entry.0 == 0 {
                entry.1 = c.ttl.map(|t| now + t);
            }
            entry.0 = entry.0.saturating_add(c.delta);
            out.push(entry.0);
        }
        if let Some((key, add)) = call.hash {
            let entry = inner
                .hashes
                .entry(key.to_owned())
                .or_insert_with(|| (HashMap::new(), add.ttl.map(|t| now + t)));
            if !live(entry.1, now) {
                *entry = (HashMap::new(), add.ttl.map(|t| now + t));
            }
            for (field, delta) in &add.fields {
                let v = entry.0.entry(field.clone()).or_insert(0);
                *v = v.saturating_add(*delta);
            }
        }
        BudgetReply {
            admitted: true,
            refused: None,
            values: out,
            granted: sliced(0),
            give_back: sliced(0).into_iter().map(|_| false).collect(),
            local: false,
        }
    }

    pub(crate) fn hash(&self, key: &str) -> Vec<(String, i64)> {
        let now = Instant::now();
        let inner = self.inner.lock();
        match inner.hashes.get(key) {
            Some((fields, at)) if live(*at, now) => {
                fields.iter().map(|(k, v)| (k.clone(), *v)).collect()
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(delta: i64) -> [BudgetCounter; 2] {
        [("a", 100), ("b", 50)].map(|(key, limit)| BudgetCounter {
            key: key.into(),
            delta,
            limit: Some(limit),
            ttl: None,
        })
    }

    #[tokio::test]
    async fn reserve_is_all_or_nothing_and_adjust_always_applies() {
        let state = State::memory();
        let r = state.budget(&counters(40), true, None).await.unwrap();
        assert!(r.admitted);
        assert_eq!(r.values, vec![40, 40]);
        let r = state.budget(&counters(20), true, None).await.unwrap();
        assert!(!r.admitted);
        assert_eq!(r.refused, Some(1));
        assert_eq!(r.values, vec![40, 40], "nothing taken from `a`");
        let r = state.budget(&counters(10), true, None).await.unwrap();
        assert!(r.admitted, "exactly at the limit is allowed");
        let r = state.budget(&counters(-30), false, None).await.unwrap();
        assert_eq!(r.values, vec![20, 20]);
        let r = state.budget(&counters(100), false, None).await.unwrap();
        assert_eq!(r.values, vec![120, 120], "adjust passes limits");
    }

    #[tokio::test]
    async fn hashes_add_up_fields() {
        let state = State::memory();
        let add = HashAdd {
            key: "h".into(),
            fields: vec![("x".into(), 3), ("y".into(), 1)],
            ttl: Some(Duration::from_secs(60)),
        };
        state.budget(&[], false, Some(&add)).await.unwrap();
        state.budget(&[], false, Some(&add)).await.unwrap();
        let mut fields = state.budget_hash("h").await.unwrap();
        fields.sort();
        assert_eq!(fields, vec![("x".into(), 6), ("y".into(), 2)]);
        assert!(state.budget_hash("none").await.unwrap().is_empty());
    }
}
