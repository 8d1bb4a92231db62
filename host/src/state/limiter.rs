//! The rate-limit charge: checks on the buckets, the Lua algorithm
//! (`limiter.lua`, written once) and the in-process runner the memory backend
//! uses. The Redis backend runs the same source inside a script.

use std::collections::HashSet;

use mlua::{Function, Lua, LuaOptions, StdLib, Table, Value};

use super::StateError;
use crate::policy::{Bucket, BucketState, ChargeResult};

/// The algorithm: defines the local function `limiter` and nothing else.
pub(crate) const LIMITER_LUA: &str = include_str!("limiter.lua");

/// Most buckets one charge may touch: what a throttle plugin's admission
/// and its `limits.charge` import may name, checked here for every caller.
pub const MAX_BUCKETS: usize = 16;
/// Longest bucket key, in bytes.
pub const MAX_BUCKET_KEY_BYTES: usize = 512;
/// Largest capacity: token math in Lua is exact up to 2^53.
const MAX_CAPACITY: u64 = 1 << 53;

/// How costs apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// All or nothing over the positive costs; refunds always apply.
    Charge,
    /// Every cost applies; levels may go negative (debt).
    Adjust,
}

impl Mode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Charge => "charge",
            Mode::Adjust => "adjust",
        }
    }
}

/// Refuses bucket lists the algorithm cannot answer for.
pub(crate) fn validate(buckets: &[Bucket]) -> Result<(), StateError> {
    let invalid = |m: String| Err(StateError::Invalid(m));
    if buckets.len() > MAX_BUCKETS {
        return invalid(format!(
            "{} buckets in one charge; at most {MAX_BUCKETS}",
            buckets.len()
        ));
    }
    let mut seen = HashSet::with_capacity(buckets.len());
    for b in buckets {
        if b.key.is_empty() || b.key.len() > MAX_BUCKET_KEY_BYTES {
            return invalid(format!(
                "bucket key must be 1 to {MAX_BUCKET_KEY_BYTES} bytes"
            ));
        }
        if !seen.insert(b.key.as_str()) {
            return invalid(format!("bucket `{}` appears twice in one charge", b.key));
        }
        if b.shape.capacity() > MAX_CAPACITY {
            return invalid(format!("bucket `{}`: capacity above 2^53", b.key));
        }
        let rate = b.shape.per_ms();
        if !(rate.is_finite() && rate > 0.0) {
            return invalid(format!("bucket `{}`: refill rate must be positive", b.key));
        }
    }
    Ok(())
}

/// The numbers the algorithm takes per bucket: capacity, refill per ms, cost.
pub(crate) fn spec(b: &Bucket) -> [f64; 3] {
    [b.shape.capacity() as f64, b.shape.per_ms(), b.cost as f64]
}

/// Builds the result from the algorithm's `out` list (see limiter.lua).
pub(crate) fn result_from(buckets: &[Bucket], out: &[u64]) -> Result<ChargeResult, StateError> {
    if out.len() != 2 + 2 * buckets.len() {
        return Err(StateError::Unavailable(format!(
            "limiter answered {} numbers for {} buckets",
            out.len(),
            buckets.len()
        )));
    }
    Ok(ChargeResult {
        admitted: out[0] == 1,
        retry_after_ms: out[1],
        buckets: buckets
            .iter()
            .zip(out[2..].chunks_exact(2))
            .map(|(b, pair)| BucketState {
                key: b.key.clone(),
                unit: b.unit,
                limit: b.shape.capacity(),
                remaining: pair[0],
                reset_ms: pair[1],
            })
            .collect(),
    })
}

/// What one run decided: states to write (with their TTL) and the answer.
pub(crate) struct Outcome {
    /// Per bucket: `Some((state, ttl_ms))` to write, `None` to leave as is.
    pub writes: Vec<Option<(String, u64)>>,
    pub result: ChargeResult,
}

/// `limiter.lua` loaded into an in-process Lua VM.
///
/// The memory backend keeps one behind a mutex, taken while it holds the
/// lock of the shard the buckets live in (so read, compute and write are one
/// atomic step, as inside a Redis script).
pub(crate) struct LuaLimiter {
    lua: Lua,
    func: Function,
}

impl LuaLimiter {
    pub(crate) fn new() -> Result<Self, StateError> {
        let broken = |e: mlua::Error| StateError::Unavailable(format!("limiter VM: {e}"));
        // Only what the algorithm uses: no io, os or package.
        let lua =
            Lua::new_with(StdLib::MATH | StdLib::STRING, LuaOptions::default()).map_err(broken)?;
        let func: Function = lua
            .load(format!("{LIMITER_LUA}\nreturn limiter"))
            .set_name("limiter.lua")
            .eval()
            .map_err(broken)?;
        Ok(Self { lua, func })
    }

    /// Runs the algorithm over `states` (one per bucket, `None` when missing)
    /// at `now_ms` on the caller's clock.
    pub(crate) fn run(
        &self,
        states: &[Option<&[u8]>],
        buckets: &[Bucket],
        now_ms: f64,
        mode: Mode,
    ) -> Result<Outcome, StateError> {
        self.run_inner(states, buckets, now_ms, mode)
            .map_err(|e| StateError::Unavailable(format!("limiter VM: {e}")))
    }

    fn run_inner(
        &self,
        states: &[Option<&[u8]>],
        buckets: &[Bucket],
        now_ms: f64,
        mode: Mode,
    ) -> mlua::Result<Outcome> {
        let n = buckets.len();
        let lua_states = self.lua.create_table_with_capacity(n, 0)?;
        for (i, s) in states.iter().enumerate() {
            let v = match s {
                Some(bytes) => Value::String(self.lua.create_string(bytes)?),
                None => Value::Boolean(false),
            };
            lua_states.raw_set(i + 1, v)?;
        }
        let args = self.lua.create_table_with_capacity(3 * n, 0)?;
        for (i, b) in buckets.iter().enumerate() {
            for (j, x) in spec(b).into_iter().enumerate() {
                args.raw_set(3 * i + j + 1, x)?;
            }
        }
        let (new_states, ttls, out): (Table, Table, Table) =
            self.func
                .call((n, lua_states, args, now_ms, mode.as_str()))?;

        let mut writes = Vec::with_capacity(n);
        for i in 1..=n {
            let write = match new_states.raw_get::<Value>(i)? {
                Value::String(s) => Some((s.to_str()?.to_owned(), ttls.raw_get::<f64>(i)? as u64)),
                _ => None,
            };
            writes.push(write);
        }
        let numbers = (1..=out.raw_len())
            .map(|i| out.raw_get::<f64>(i).map(|x| x as u64))
            .collect::<mlua::Result<Vec<u64>>>()?;
        let result = result_from(buckets, &numbers).map_err(mlua::Error::external)?;
        Ok(Outcome { writes, result })
    }
}

#[cfg(test)]
mod tests {
    //! The algorithm on its own, with a clock the test controls. The same
    //! behaviour is checked against every backend in tests/state_suite.rs.

    use super::*;
    use crate::policy::{Shape, Unit};

    fn bucket(key: &str, limit: u64, window_ms: u64, cost: i64) -> Bucket {
        Bucket {
            key: key.into(),
            shape: Shape::Window { limit, window_ms },
            cost,
            unit: Unit::Requests,
        }
    }

    /// An in-memory key space driven through the Lua function, like memory.rs.
    struct Sim {
        vm: LuaLimiter,
        states: std::collections::HashMap<String, String>,
    }

    impl Sim {
        fn new() -> Self {
            Self {
                vm: LuaLimiter::new().unwrap(),
                states: Default::default(),
            }
        }

        fn run(&mut self, buckets: &[Bucket], now: f64, mode: Mode) -> ChargeResult {
            validate(buckets).unwrap();
            let current: Vec<Option<&[u8]>> = buckets
                .iter()
                .map(|b| self.states.get(&b.key).map(|s| s.as_bytes()))
                .collect();
            let outcome = self.vm.run(&current, buckets, now, mode).unwrap();
            for (b, w) in buckets.iter().zip(outcome.writes) {
                if let Some((state, ttl)) = w {
                    assert!(ttl >= 1000, "ttl {ttl} keeps a margin");
                    self.states.insert(b.key.clone(), state);
                }
            }
            outcome.result
        }

        fn charge(&mut self, buckets: &[Bucket], now: f64) -> ChargeResult {
            self.run(buckets, now, Mode::Charge)
        }
    }

    #[test]
    fn a_fresh_bucket_is_full_and_charges_down() {
        let mut sim = Sim::new();
        let r = sim.charge(&[bucket("a", 10, 1000, 3)], 0.0);
        assert!(r.admitted);
        assert_eq!(r.retry_after_ms, 0);
        assert_eq!(r.buckets[0].limit, 10);
        assert_eq!(r.buckets[0].remaining, 7);
        // 3 tokens at 10 per second refill in 300 ms.
        assert_eq!(r.buckets[0].reset_ms, 300);
    }

    #[test]
    fn refusal_takes_nothing_from_any_bucket() {
        let mut sim = Sim::new();
        sim.charge(&[bucket("short", 5, 1000, 5)], 0.0);
        let r = sim.charge(
            &[bucket("plenty", 100, 1000, 1), bucket("short", 5, 1000, 1)],
            0.0,
        );
        assert!(!r.admitted);
        // One token at 5 per second: 200 ms.
        assert_eq!(r.retry_after_ms, 200);
        assert_eq!(r.buckets[0].remaining, 100, "nothing taken from `plenty`");
        let r = sim.charge(&[bucket("plenty", 100, 1000, 0)], 0.0);
        assert_eq!(r.buckets[0].remaining, 100);
    }

    #[test]
    fn refill_is_continuous_and_retry_after_is_exact() {
        let mut sim = Sim::new();
        // 60 per minute: one token per second.
        for _ in 0..60 {
            assert!(sim.charge(&[bucket("m", 60, 60_000, 1)], 5.0).admitted);
        }
        let r = sim.charge(&[bucket("m", 60, 60_000, 1)], 5.0);
        assert!(!r.admitted);
        assert_eq!(r.retry_after_ms, 1000);
        assert!(!sim.charge(&[bucket("m", 60, 60_000, 1)], 1004.0).admitted);
        let r = sim.charge(&[bucket("m", 60, 60_000, 1)], 1005.0);
        assert!(r.admitted, "admitted exactly at retry_after");
        assert_eq!(r.buckets[0].remaining, 0);
        // Refill never passes capacity.
        let r = sim.charge(&[bucket("m", 60, 60_000, 0)], 10_000_000.0);
        assert_eq!(r.buckets[0].remaining, 60);
        assert_eq!(r.buckets[0].reset_ms, 0);
    }

    #[test]
    fn retry_after_is_the_longest_wait_over_refused_buckets() {
        let mut sim = Sim::new();
        sim.charge(
            &[bucket("fast", 10, 1000, 10), bucket("slow", 10, 10_000, 10)],
            0.0,
        );
        let r = sim.charge(
            &[bucket("fast", 10, 1000, 2), bucket("slow", 10, 10_000, 2)],
            0.0,
        );
        assert!(!r.admitted);
        assert_eq!(r.retry_after_ms, 2000);
    }

    #[test]
    fn a_cost_above_capacity_is_never_admitted() {
        let mut sim = Sim::new();
        let r = sim.charge(&[bucket("big", 10, 1000, 11)], 0.0);
        assert!(!r.admitted);
        assert_eq!(r.retry_after_ms, 1000, "one full refill period");
        assert_eq!(r.buckets[0].remaining, 10);
        assert!(!sim.charge(&[bucket("big", 10, 1000, 11)], 1e9).admitted);
    }

    #[test]
    fn refunds_apply_even_when_the_charge_is_refused() {
        let mut sim = Sim::new();
        sim.charge(&[bucket("a", 10, 1000, 10), bucket("b", 10, 1000, 6)], 0.0);
        let r = sim.charge(&[bucket("a", 10, 1000, 1), bucket("b", 10, 1000, -4)], 0.0);
        assert!(!r.admitted);
        assert_eq!(r.buckets[1].remaining, 8);
        // Refunds stop at capacity.
        let r = sim.charge(&[bucket("b", 10, 1000, -100)], 0.0);
        assert!(r.admitted);
        assert_eq!(r.buckets[0].remaining, 10);
    }

    #[test]
    fn adjust_can_push_a_bucket_into_debt() {
        let mut sim = Sim::new();
        sim.charge(&[bucket("tpm", 100, 1000, 50)], 0.0);
        let r = sim.run(&[bucket("tpm", 100, 1000, 130)], 0.0, Mode::Adjust);
        assert!(r.admitted);
        assert_eq!(r.buckets[0].remaining, 0);
        // 80 tokens of debt, then 100 to full: 1800 ms at 0.1 per ms.
        assert_eq!(r.buckets[0].reset_ms, 1800);
        let r = sim.charge(&[bucket("tpm", 100, 1000, 1)], 0.0);
        assert!(!r.admitted);
        assert_eq!(r.retry_after_ms, 810);
        assert!(sim.charge(&[bucket("tpm", 100, 1000, 1)], 810.0).admitted);
    }

    #[test]
    fn rate_shapes_and_fractional_refill() {
        let mut sim = Sim::new();
        let b = |cost| Bucket {
            key: "r".into(),
            shape: Shape::Rate {
                per_second: 3.0,
                burst: 2,
            },
            cost,
            unit: Unit::Tokens,
        };
        assert!(sim.charge(&[b(2)], 0.0).admitted);
        let r = sim.charge(&[b(1)], 0.0);
        assert_eq!(r.retry_after_ms, 334, "1/3 s rounded up");
        assert!(!sim.charge(&[b(1)], 333.0).admitted);
        assert!(sim.charge(&[b(1)], 334.0).admitted);
    }

    #[test]
    fn clock_going_backwards_refills_nothing() {
        let mut sim = Sim::new();
        sim.charge(&[bucket("c", 10, 1000, 10)], 5000.0);
        assert!(!sim.charge(&[bucket("c", 10, 1000, 1)], 4000.0).admitted);
        assert!(sim.charge(&[bucket("c", 10, 1000, 1)], 5100.0).admitted);
    }

    #[test]
    fn large_counts_stay_exact() {
        let mut sim = Sim::new();
        let cap = 1u64 << 52;
        let b = |cost| Bucket {
            key: "huge".into(),
            shape: Shape::Window {
                limit: cap,
                window_ms: 1,
            },
            cost,
            unit: Unit::Tokens,
        };
        let r = sim.charge(&[b(1)], 0.0);
        assert_eq!(r.buckets[0].remaining, cap - 1);
    }

    #[test]
    fn validation_refuses_what_cannot_be_answered() {
        assert!(validate(&[bucket("a", 1, 1, 1), bucket("a", 1, 1, 1)]).is_err());
        assert!(validate(&[bucket("", 1, 1, 1)]).is_err());
        let many: Vec<_> = (0..=MAX_BUCKETS)
            .map(|i| bucket(&i.to_string(), 1, 1, 1))
            .collect();
        assert!(validate(&many).is_err());
        let zero_rate = Bucket {
            shape: Shape::Rate {
                per_second: 0.0,
                burst: 1,
            },
            ..bucket("z", 1, 1, 1)
        };
        assert!(validate(&[zero_rate]).is_err());
        assert!(validate(&[bucket("huge", u64::MAX, 1, 1)]).is_err());
        assert!(validate(&[bucket("ok", 1, 1, 1)]).is_ok());
    }
}
