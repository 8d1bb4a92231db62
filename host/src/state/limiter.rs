//! The rate-limit charge: checks on the buckets and the algorithm, twice:
//! `limiter.lua`, which the Redis backend runs inside a script, and [`run`],
//! the same steps in Rust for in-process state (an embedded Lua VM cost a
//! charge tens of microseconds and serialised every charge of a node on
//! one mutex). The tests run every case through both and require the same
//! answer to the bit.

use std::collections::HashSet;

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

/// One run of the algorithm: which buckets (full keys, one hash tag), how
/// costs apply, and lease terms (empty: none).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LimitCall<'a> {
    pub keys: &'a [String],
    pub buckets: &'a [Bucket],
    pub mode: Mode,
    pub terms: &'a [LeaseTerms],
    /// How long a lease granted by this run may be spent, in ms.
    pub lease_ms: u64,
}

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

/// The lease numbers of one bucket in one limiter run (see limiter.lua):
/// in a charge, `lease` is how many more tokens the node would like to hold
/// and `max_leased` the most that may be out in leases at once; in either
/// mode, `retire` leased tokens are counted back in first (spent since the
/// node last said, or a returned lease). Zero: no lease.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LeaseTerms {
    pub lease: u64,
    pub max_leased: u64,
    pub retire: u64,
}

/// What one limiter run answered.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Limited {
    pub result: ChargeResult,
    /// Tokens granted as a lease, per bucket (all zero without lease terms).
    pub granted: Vec<u64>,
}

/// The numbers the algorithm takes per bucket: capacity, refill per ms,
/// cost, lease, max_leased, retire.
pub(crate) fn spec(b: &Bucket, terms: LeaseTerms) -> [f64; 6] {
    [
        b.shape.capacity() as f64,
        b.shape.per_ms(),
        b.cost as f64,
        terms.lease as f64,
        terms.max_leased as f64,
        terms.retire as f64,
    ]
}

/// The lease terms of bucket `i` (none when `terms` is empty).
pub(crate) fn terms_at(terms: &[LeaseTerms], i: usize) -> LeaseTerms {
    terms.get(i).copied().unwrap_or_default()
}

/// Builds the answer from the algorithm's `out` list (see limiter.lua).
pub(crate) fn limited_from(buckets: &[Bucket], out: &[u64]) -> Result<Limited, StateError> {
    let n = buckets.len();
    if out.len() != 2 + 3 * n {
        return Err(StateError::Unavailable(format!(
            "limiter answered {} numbers for {n} buckets",
            out.len(),
        )));
    }
    let result = ChargeResult {
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
    };
    Ok(Limited {
        result,
        granted: out[2 + 2 * n..].to_vec(),
    })
}

/// What one run decided: states to write (with their TTL) and the answer.
pub(crate) struct Outcome {
    /// Per bucket: `Some((state, ttl_ms))` to write, `None` to leave as is.
    pub writes: Vec<Option<(String, u64)>>,
    pub limited: Limited,
}

/// Slack for float rounding when comparing token levels (limiter.lua's
/// `EPSILON`).
const EPSILON: f64 = 1e-6;
/// Keep a state this long after the bucket would be full again.
const TTL_MARGIN_MS: f64 = 1000.0;
/// Upper bound of every returned duration (2^53 - 1).
const MAX_MS: f64 = 9_007_199_254_740_991.0;

/// limiter.lua's `clamp_ms`.
fn clamp_ms(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        0.0
    } else if x > MAX_MS {
        MAX_MS
    } else {
        x.ceil()
    }
}

/// Lua 5.1's `math.min`/`math.max` over two numbers: the first unless the
/// second compares strictly smaller/larger (so NaN behaves as in Lua).
fn lua_min(a: f64, b: f64) -> f64 {
    if b < a { b } else { a }
}
fn lua_max(a: f64, b: f64) -> f64 {
    if b > a { b } else { a }
}

/// limiter.lua's `parse_state`: `(tokens, last, leased, lease_until)`, or
/// `None` for a missing or unreadable state. Fields that are not numbers
/// are skipped, as the Lua loop skips them.
fn parse_state(state: &[u8]) -> Option<(f64, f64, f64, f64)> {
    let text = std::str::from_utf8(state).ok()?;
    let mut fields = text
        .split(':')
        .filter(|f| !f.is_empty())
        .filter_map(|f| f.trim().parse::<f64>().ok());
    let tokens = fields.next()?;
    let last = fields.next()?;
    if tokens.is_nan() || last.is_nan() {
        return None;
    }
    let leased = fields.next().unwrap_or(0.0);
    let lease_until = fields.next().unwrap_or(0.0);
    if leased.is_nan() || lease_until.is_nan() {
        return Some((tokens, last, 0.0, 0.0));
    }
    Some((tokens, last, leased, lease_until))
}

/// Runs the algorithm over `states` (one per bucket, `None` when missing)
/// at `now_ms` on the caller's clock: what the in-process state does for a
/// charge. The same algorithm as `limiter.lua` (which Redis runs), step for
/// step in the same floating-point operations, so both answer alike; the
/// tests below run every case through both and compare.
pub(crate) fn run(states: &[Option<&[u8]>], call: &LimitCall<'_>, now_ms: f64) -> Outcome {
    let buckets = call.buckets;
    let n = buckets.len();
    let specs: Vec<[f64; 6]> = buckets
        .iter()
        .enumerate()
        .map(|(i, b)| spec(b, terms_at(call.terms, i)))
        .collect();
    let mut levels = Vec::with_capacity(n);
    let mut lasts = Vec::with_capacity(n);
    let mut leaseds = Vec::with_capacity(n);
    let mut untils = Vec::with_capacity(n);
    for (i, [capacity, rate, ..]) in specs.iter().copied().enumerate() {
        let (mut tokens, last, mut leased, mut lease_until) = states
            .get(i)
            .copied()
            .flatten()
            .and_then(parse_state)
            .unwrap_or((capacity, now_ms, 0.0, 0.0));
        // Leases of nodes that never returned them have run out by now.
        if lease_until <= now_ms {
            leased = 0.0;
            lease_until = 0.0;
        }
        leaseds.push(leased);
        untils.push(lease_until);
        let mut at = now_ms;
        if at > last {
            tokens += (at - last) * rate;
        } else {
            // A clock that went backwards refills nothing.
            at = last;
        }
        if tokens > capacity {
            tokens = capacity;
        }
        levels.push(tokens);
        lasts.push(at);
    }

    let mut admitted = true;
    let mut retry_after = 0.0;
    if call.mode == Mode::Charge {
        for (i, [capacity, rate, cost, ..]) in specs.iter().copied().enumerate() {
            if cost > 0.0 {
                let wait = if cost > capacity + EPSILON {
                    // Can never be paid: one full refill period.
                    Some(capacity / rate)
                } else if levels[i] + EPSILON < cost {
                    Some((cost - levels[i]) / rate)
                } else {
                    None
                };
                if let Some(wait) = wait {
                    admitted = false;
                    if wait > retry_after {
                        retry_after = wait;
                    }
                }
            }
        }
    }

    let mut writes = Vec::with_capacity(n);
    let mut out = Vec::with_capacity(2 + 3 * n);
    out.push(u64::from(admitted));
    // A refused charge always says "later", never "now".
    out.push(if admitted {
        0
    } else {
        lua_max(1.0, clamp_ms(retry_after)) as u64
    });
    let mut granted = Vec::with_capacity(n);
    for (i, [capacity, rate, cost, lease, max_leased, retire]) in specs.iter().copied().enumerate()
    {
        let mut level = levels[i];
        let mut changed = false;
        let mut grant_i = 0.0;
        if retire > 0.0 && leaseds[i] > 0.0 {
            leaseds[i] = lua_max(0.0, leaseds[i] - retire);
            changed = true;
        }
        if cost < 0.0 {
            level = lua_min(capacity, level - cost);
            changed = true;
        } else if cost > 0.0 && (admitted || call.mode == Mode::Adjust) {
            level -= cost;
            if call.mode == Mode::Charge && level < 0.0 {
                // Admitted within EPSILON: never leave rounding debt behind.
                level = 0.0;
            }
            changed = true;
        }
        if call.mode == Mode::Charge && admitted && lease > 0.0 {
            let grant =
                (lua_min(lua_min(lease, level / 2.0), max_leased - leaseds[i]) + EPSILON).floor();
            if grant >= 1.0 {
                level -= grant;
                leaseds[i] += grant;
                untils[i] = lua_max(untils[i], now_ms + call.lease_ms as f64);
                grant_i = grant;
                changed = true;
            }
        }
        let reset = if level < capacity {
            clamp_ms((capacity - level) / rate)
        } else {
            0.0
        };
        writes.push(changed.then(|| {
            let mut ttl = reset;
            let state = if leaseds[i] > 0.0 {
                ttl = lua_max(ttl, clamp_ms(untils[i] - now_ms));
                format!("{level}:{}:{}:{}", lasts[i], leaseds[i], untils[i])
            } else {
                format!("{level}:{}", lasts[i])
            };
            (state, lua_min(MAX_MS, ttl + TTL_MARGIN_MS) as u64)
        }));
        let remaining = if level > 0.0 {
            (level + EPSILON).floor()
        } else {
            0.0
        };
        out.push(remaining as u64);
        out.push(reset as u64);
        granted.push(grant_i as u64);
    }
    out.extend(granted);
    let limited = limited_from(buckets, &out).expect("2 + 3n numbers for n buckets");
    Outcome { writes, limited }
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

    use mlua::{Function, Lua, LuaOptions, StdLib, Table, Value};

    /// `limiter.lua` loaded into an in-process Lua VM: what Redis runs, to
    /// compare [`run`] against.
    struct LuaLimiter {
        lua: Lua,
        func: Function,
    }

    impl LuaLimiter {
        fn new() -> Result<Self, StateError> {
            let broken = |e: mlua::Error| StateError::Unavailable(format!("limiter VM: {e}"));
            // Only what the algorithm uses: no io, os or package.
            let lua = Lua::new_with(StdLib::MATH | StdLib::STRING, LuaOptions::default())
                .map_err(broken)?;
            let func: Function = lua
                .load(format!("{LIMITER_LUA}\nreturn limiter"))
                .set_name("limiter.lua")
                .eval()
                .map_err(broken)?;
            Ok(Self { lua, func })
        }

        /// Runs the algorithm over `states` (one per bucket, `None` when missing)
        /// at `now_ms` on the caller's clock.
        fn run(
            &self,
            states: &[Option<&[u8]>],
            call: &LimitCall<'_>,
            now_ms: f64,
        ) -> Result<Outcome, StateError> {
            self.run_inner(states, call, now_ms)
                .map_err(|e| StateError::Unavailable(format!("limiter VM: {e}")))
        }

        fn run_inner(
            &self,
            states: &[Option<&[u8]>],
            call: &LimitCall<'_>,
            now_ms: f64,
        ) -> mlua::Result<Outcome> {
            let buckets = call.buckets;
            let n = buckets.len();
            let lua_states = self.lua.create_table_with_capacity(n, 0)?;
            for (i, s) in states.iter().enumerate() {
                let v = match s {
                    Some(bytes) => Value::String(self.lua.create_string(bytes)?),
                    None => Value::Boolean(false),
                };
                lua_states.raw_set(i + 1, v)?;
            }
            let args = self.lua.create_table_with_capacity(6 * n, 0)?;
            for (i, b) in buckets.iter().enumerate() {
                for (j, x) in spec(b, terms_at(call.terms, i)).into_iter().enumerate() {
                    args.raw_set(6 * i + j + 1, x)?;
                }
            }
            let (new_states, ttls, out): (Table, Table, Table) = self.func.call((
                n,
                lua_states,
                args,
                now_ms,
                call.mode.as_str(),
                call.lease_ms as f64,
            ))?;

            let mut writes = Vec::with_capacity(n);
            for i in 1..=n {
                let write = match new_states.raw_get::<Value>(i)? {
                    Value::String(s) => {
                        Some((s.to_str()?.to_owned(), ttls.raw_get::<f64>(i)? as u64))
                    }
                    _ => None,
                };
                writes.push(write);
            }
            let numbers = (1..=out.raw_len())
                .map(|i| out.raw_get::<f64>(i).map(|x| x as u64))
                .collect::<mlua::Result<Vec<u64>>>()?;
            let limited = limited_from(buckets, &numbers).map_err(mlua::Error::external)?;
            Ok(Outcome { writes, limited })
        }
    }

    /// A key space driven through both runners, like memory.rs (native)
    /// and a Redis script (Lua): each keeps its own states, and every call
    /// must answer alike.
    struct Sim {
        vm: LuaLimiter,
        lua_states: std::collections::HashMap<String, String>,
        states: std::collections::HashMap<String, String>,
    }

    fn current_states<'a>(
        states: &'a std::collections::HashMap<String, String>,
        buckets: &[Bucket],
    ) -> Vec<Option<&'a [u8]>> {
        buckets
            .iter()
            .map(|b| states.get(&b.key).map(|s| s.as_bytes()))
            .collect()
    }

    /// The numbers of a state string (formats differ: `%.17g` in Lua, the
    /// shortest round-trip form in Rust; both parse back to the same bits).
    fn state_bits(state: &str) -> Vec<u64> {
        state
            .split(':')
            .map(|f| f.parse::<f64>().unwrap().to_bits())
            .collect()
    }

    impl Sim {
        fn new() -> Self {
            Self {
                vm: LuaLimiter::new().unwrap(),
                lua_states: Default::default(),
                states: Default::default(),
            }
        }

        fn run(&mut self, buckets: &[Bucket], now: f64, mode: Mode) -> ChargeResult {
            validate(buckets).unwrap();
            self.run_leased(buckets, &[], now, mode).result
        }

        fn run_leased(
            &mut self,
            buckets: &[Bucket],
            terms: &[LeaseTerms],
            now: f64,
            mode: Mode,
        ) -> Limited {
            let keys: Vec<String> = buckets.iter().map(|b| b.key.clone()).collect();
            let call = LimitCall {
                keys: &keys,
                buckets,
                mode,
                terms,
                lease_ms: 1000,
            };
            let lua = self
                .vm
                .run(&current_states(&self.lua_states, buckets), &call, now)
                .unwrap();
            let native = run(&current_states(&self.states, buckets), &call, now);
            let context = || format!("{mode:?} at {now} of {buckets:?} with {terms:?}");
            assert_eq!(native.limited, lua.limited, "{}", context());
            for ((b, w), lw) in buckets.iter().zip(native.writes).zip(lua.writes) {
                match (w, lw) {
                    (Some((state, ttl)), Some((lua_state, lua_ttl))) => {
                        assert_eq!(ttl, lua_ttl, "ttl of {}: {}", b.key, context());
                        assert_eq!(
                            state_bits(&state),
                            state_bits(&lua_state),
                            "state of {}: {state} against Lua's {lua_state}: {}",
                            b.key,
                            context()
                        );
                        assert!(ttl >= 1000, "ttl {ttl} keeps a margin");
                        self.states.insert(b.key.clone(), state);
                        self.lua_states.insert(b.key.clone(), lua_state);
                    }
                    (None, None) => {}
                    (w, lw) => panic!("writes differ: {w:?} against Lua's {lw:?}: {}", context()),
                }
            }
            native.limited
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

    fn terms(lease: u64, max_leased: u64) -> [LeaseTerms; 1] {
        [LeaseTerms {
            lease,
            max_leased,
            retire: 0,
        }]
    }

    #[test]
    fn a_lease_comes_out_of_the_bucket_and_never_exceeds_max_leased() {
        let mut sim = Sim::new();
        let b = [bucket("a", 1000, 60_000, 1)];
        let l = sim.run_leased(&b, &terms(50, 10), 0.0, Mode::Charge);
        assert!(l.result.admitted);
        assert_eq!(l.granted, vec![10], "capped by max_leased");
        assert_eq!(l.result.buckets[0].remaining, 1000 - 1 - 10);
        // Another node asks while the first lease is out: nothing is left
        // under the bound.
        let l = sim.run_leased(&b, &terms(50, 10), 1.0, Mode::Charge);
        assert_eq!(l.granted, vec![0]);
        // Returning it (2 unused, 10 retired) frees the bound.
        let back = [bucket("a", 1000, 60_000, -2)];
        let retire = [LeaseTerms {
            retire: 10,
            ..LeaseTerms::default()
        }];
        sim.run_leased(&back, &retire, 2.0, Mode::Adjust);
        let l = sim.run_leased(&b, &terms(5, 10), 3.0, Mode::Charge);
        assert_eq!(l.granted, vec![5]);
    }

    #[test]
    fn leases_shrink_as_the_bucket_empties_and_stop_near_empty() {
        let mut sim = Sim::new();
        let b = [bucket("a", 10, 3_600_000, 1)];
        let grants: Vec<u64> = (0..6)
            .map(|_| sim.run_leased(&b, &terms(4, 10), 0.0, Mode::Charge).granted[0])
            .collect();
        // Level after each charge: 9 -> grant 4 (of 4.5), 4 -> 2, 1 -> 0, ...
        assert_eq!(&grants[..3], &[4, 2, 0]);
        assert!(grants[3..].iter().all(|g| *g == 0));
    }

    #[test]
    fn an_unreturned_lease_is_forgotten_after_its_period() {
        let mut sim = Sim::new();
        let b = [bucket("a", 1000, 60_000, 1)];
        assert_eq!(
            sim.run_leased(&b, &terms(10, 10), 0.0, Mode::Charge)
                .granted,
            vec![10]
        );
        assert_eq!(
            sim.run_leased(&b, &terms(10, 10), 999.0, Mode::Charge)
                .granted,
            vec![0]
        );
        assert_eq!(
            sim.run_leased(&b, &terms(10, 10), 1000.5, Mode::Charge)
                .granted,
            vec![10]
        );
    }

    #[test]
    fn a_refused_charge_grants_nothing() {
        let mut sim = Sim::new();
        sim.charge(&[bucket("a", 100, 60_000, 100)], 0.0);
        let l = sim.run_leased(
            &[bucket("a", 100, 60_000, 1)],
            &terms(5, 50),
            0.0,
            Mode::Charge,
        );
        assert!(!l.result.admitted);
        assert_eq!(l.granted, vec![0]);
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

    /// Random call sequences, both runners side by side (through [`Sim`]):
    /// shapes from one token to 2^53, refunds, debt, leases, fractional and
    /// backwards clocks. A seed that fails is printed with the case.
    #[test]
    fn the_rust_runner_answers_as_limiter_lua_does() {
        use rand::{Rng, SeedableRng};
        let keys = ["a", "b", "c"];
        for seed in 0..64u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut sim = Sim::new();
            let mut now = rng.random_range(0.0..1e6);
            for _ in 0..200 {
                let n = rng.random_range(1..=keys.len());
                let buckets: Vec<Bucket> = keys[..n]
                    .iter()
                    .map(|k| {
                        let shape = match rng.random_range(0..4) {
                            0 => Shape::Rate {
                                per_second: rng.random_range(0.001..10_000.0),
                                burst: rng.random_range(1..5_000),
                            },
                            1 => Shape::Window {
                                limit: MAX_CAPACITY,
                                window_ms: rng.random_range(1..1_000_000),
                            },
                            _ => Shape::Window {
                                limit: rng.random_range(1..2_000),
                                window_ms: rng.random_range(1..120_000),
                            },
                        };
                        let cost = match rng.random_range(0..6) {
                            0 => -rng.random_range(0..500),
                            1 => rng.random_range(0..10_000),
                            _ => rng.random_range(0..20),
                        };
                        Bucket {
                            key: (*k).into(),
                            shape,
                            cost,
                            unit: Unit::Tokens,
                        }
                    })
                    .collect();
                let terms: Vec<LeaseTerms> = if rng.random_bool(0.5) {
                    buckets
                        .iter()
                        .map(|_| LeaseTerms {
                            lease: rng.random_range(0..100),
                            max_leased: rng.random_range(0..400),
                            retire: rng.random_range(0..50),
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                let mode = if rng.random_bool(0.8) {
                    Mode::Charge
                } else {
                    Mode::Adjust
                };
                now += match rng.random_range(0..10) {
                    0 => -rng.random_range(0.0..500.0),
                    1 => 0.0,
                    _ => rng.random_range(0.0..3_000.0),
                };
                validate(&buckets).unwrap();
                sim.run_leased(&buckets, &terms, now, mode);
            }
        }
    }

    #[test]
    fn unreadable_states_count_as_a_full_bucket_in_both() {
        let b = [bucket("k", 10, 1000, 1)];
        for garbage in ["", ":", "x:y", "nan:5", "5:nan", "1:2:nan:4", "::3:4", "7"] {
            let mut sim = Sim::new();
            sim.states.insert("k".into(), garbage.into());
            sim.lua_states.insert("k".into(), garbage.into());
            sim.charge(&b, 10.0);
        }
    }
}
