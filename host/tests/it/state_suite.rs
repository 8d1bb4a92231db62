//! One behaviour suite for `State`, run against every backend:
//! - `memory::*`: the in-process backend;
//! - `standalone::*`: a real `redis-server` per test;
//! - `cluster_runs_every_case`: one real 3-primary Redis Cluster, every case
//!   in turn (a cluster takes a second or two to form).
//!
//! Each case uses its own namespaces, so cases never see each other's keys.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::support::redis::{RedisCluster, RedisServer};
use sluice::policy::{Bucket, ChargeResult, Shape, Unit};
use sluice::state::{Fill, Lock, OnError, State, StateError, StateSettings};

/// Which backend a case runs against.
enum Target<'a> {
    Memory,
    Redis(&'a RedisServer),
    Cluster(&'a RedisCluster),
}

impl Target<'_> {
    /// A new handle, as a gateway node would open it. For Redis targets two
    /// handles share every key (two nodes); for memory each is its own store.
    async fn state(&self) -> State {
        let settings = match self {
            Target::Memory => StateSettings::default(),
            Target::Redis(server) => StateSettings::redis(server.url()),
            Target::Cluster(cluster) => StateSettings::redis_cluster(cluster.urls()),
        };
        let settings = StateSettings {
            // Generous: several servers share two cores while the suite runs.
            op_timeout: Duration::from_secs(2),
            // Never answer from a local fallback here: a Redis failure must
            // fail the case, not pass it on the memory backend.
            on_error: OnError::FailClosed,
            ..settings
        };
        let state = State::connect(&settings).await.expect("connect");
        assert!(!state.is_degraded(), "{:?}", state.health());
        state
    }

    fn shared(&self) -> bool {
        !matches!(self, Target::Memory)
    }
}

fn window(key: &str, limit: u64, window_ms: u64, cost: i64) -> Bucket {
    Bucket {
        key: key.into(),
        shape: Shape::Window { limit, window_ms },
        cost,
        unit: Unit::Requests,
    }
}

fn remaining(r: &ChargeResult, key: &str) -> u64 {
    r.buckets
        .iter()
        .find(|b| b.key == key)
        .map(|b| b.remaining)
        .unwrap_or_else(|| panic!("no bucket {key} in {r:?}"))
}

/// Polls `check` until it holds or `within` passes; returns the time taken.
async fn eventually(
    within: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// === cases ===

async fn kv_roundtrip(t: &Target<'_>) {
    let s = t.state().await;
    let ns = "suite:kv";
    assert_eq!(s.get(ns, "k").await.unwrap(), None);
    let binary: Vec<u8> = (0..=255).collect();
    s.set(ns, "k", &binary, None).await.unwrap();
    assert_eq!(s.get(ns, "k").await.unwrap(), Some(binary));
    s.set(ns, "k", b"", None).await.unwrap();
    assert_eq!(
        s.get(ns, "k").await.unwrap(),
        Some(Vec::new()),
        "empty value is a value"
    );
    assert!(s.delete(ns, "k").await.unwrap());
    assert!(!s.delete(ns, "k").await.unwrap());
    assert_eq!(s.get(ns, "k").await.unwrap(), None);

    if t.shared() {
        // A second node sees the first one's writes.
        let other = t.state().await;
        s.set(ns, "shared", b"from node 1", None).await.unwrap();
        assert_eq!(
            other.get(ns, "shared").await.unwrap().as_deref(),
            Some(&b"from node 1"[..])
        );
    }
}

async fn namespaces_are_isolated(t: &Target<'_>) {
    let s = t.state().await;
    s.set("plugin:a", "k", b"a", None).await.unwrap();
    s.set("plugin:b", "k", b"b", None).await.unwrap();
    assert_eq!(
        s.get("plugin:a", "k").await.unwrap().as_deref(),
        Some(&b"a"[..])
    );
    assert_eq!(
        s.get("plugin:b", "k").await.unwrap().as_deref(),
        Some(&b"b"[..])
    );
    assert!(s.delete("plugin:a", "k").await.unwrap());
    assert_eq!(
        s.get("plugin:b", "k").await.unwrap().as_deref(),
        Some(&b"b"[..])
    );

    // Separators and braces in names cannot reach across namespaces.
    s.set("iso:x", "y/z", b"1", None).await.unwrap();
    assert_eq!(s.get("iso:x/y", "z").await.unwrap(), None);
    s.set("iso:{t}", "k", b"2", None).await.unwrap();
    assert_eq!(s.get("iso:", "{t}k").await.unwrap(), None);
    assert_eq!(
        s.get("iso:{t}", "k").await.unwrap().as_deref(),
        Some(&b"2"[..])
    );

    // Buckets are per namespace too, and apart from KV keys of the same name.
    let b = [window("same", 1, 60_000, 1)];
    assert!(s.charge("plugin:a", &b).await.unwrap().admitted);
    assert!(!s.charge("plugin:a", &b).await.unwrap().admitted);
    assert!(s.charge("plugin:b", &b).await.unwrap().admitted);
    assert_eq!(s.get("plugin:a", "same").await.unwrap(), None);
}

async fn ttl_expires_entries(t: &Target<'_>) {
    let s = t.state().await;
    let ns = "suite:ttl";
    s.set(ns, "short", b"v", Some(Duration::from_millis(150)))
        .await
        .unwrap();
    s.set(ns, "long", b"v", Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(s.get(ns, "short").await.unwrap().is_some());
    let took = eventually(Duration::from_secs(5), "short ttl expires", async || {
        s.get(ns, "short").await.unwrap().is_none()
    })
    .await;
    assert!(
        took >= Duration::from_millis(100),
        "expired early: {took:?}"
    );
    assert!(s.get(ns, "long").await.unwrap().is_some());
    assert!(
        !s.delete(ns, "short").await.unwrap(),
        "an expired key is gone"
    );

    // A write without TTL makes the key permanent again.
    s.set(ns, "k", b"v", Some(Duration::from_millis(100)))
        .await
        .unwrap();
    s.set(ns, "k", b"w", None).await.unwrap();
    s.set(ns, "marker", b"v", Some(Duration::from_millis(150)))
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "marker expires", async || {
        s.get(ns, "marker").await.unwrap().is_none()
    })
    .await;
    assert_eq!(s.get(ns, "k").await.unwrap().as_deref(), Some(&b"w"[..]));

    let zero = s.set(ns, "z", b"v", Some(Duration::ZERO)).await;
    assert!(matches!(zero, Err(StateError::Invalid(_))), "{zero:?}");
}

async fn incr_counts_and_sets_ttl_on_create(t: &Target<'_>) {
    let s = t.state().await;
    let ns = "suite:incr";
    assert_eq!(s.incr(ns, "n", 5, None).await.unwrap(), 5);
    assert_eq!(s.incr(ns, "n", -7, None).await.unwrap(), -2);
    assert_eq!(s.get(ns, "n").await.unwrap().as_deref(), Some(&b"-2"[..]));

    // The TTL is set when the key is created, and only then.
    assert_eq!(
        s.incr(ns, "t", 1, Some(Duration::from_millis(200)))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.incr(ns, "t", 1, Some(Duration::from_secs(600)))
            .await
            .unwrap(),
        2
    );
    eventually(
        Duration::from_secs(5),
        "counter expires with its first TTL",
        async || s.get(ns, "t").await.unwrap().is_none(),
    )
    .await;
    // An existing counter without TTL does not get one later.
    s.incr(ns, "p", 1, None).await.unwrap();
    s.incr(ns, "p", 1, Some(Duration::from_millis(50)))
        .await
        .unwrap();
    s.set(ns, "marker", b"v", Some(Duration::from_millis(150)))
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "marker expires", async || {
        s.get(ns, "marker").await.unwrap().is_none()
    })
    .await;
    assert_eq!(s.get(ns, "p").await.unwrap().as_deref(), Some(&b"2"[..]));

    // Exact beyond 2^53.
    s.set(ns, "big", b"9007199254740993", None).await.unwrap();
    assert_eq!(
        s.incr(ns, "big", 2, None).await.unwrap(),
        9_007_199_254_740_995
    );

    s.set(ns, "text", b"hello", None).await.unwrap();
    let not_int = s.incr(ns, "text", 1, None).await;
    assert!(
        matches!(not_int, Err(StateError::Invalid(_))),
        "{not_int:?}"
    );
    s.set(ns, "max", i64::MAX.to_string().as_bytes(), None)
        .await
        .unwrap();
    let overflow = s.incr(ns, "max", 1, None).await;
    assert!(
        matches!(overflow, Err(StateError::Invalid(_))),
        "{overflow:?}"
    );
    assert!(!s.is_degraded(), "bad data is not a backend failure");
}

async fn compare_and_swap_semantics(t: &Target<'_>) {
    let s = t.state().await;
    let ns = "suite:cas";
    assert!(
        s.compare_and_swap(ns, "k", None, b"v1", None)
            .await
            .unwrap()
    );
    assert!(
        !s.compare_and_swap(ns, "k", None, b"v2", None)
            .await
            .unwrap(),
        "must be absent"
    );
    assert!(
        !s.compare_and_swap(ns, "k", Some(b"nope"), b"v2", None)
            .await
            .unwrap()
    );
    assert_eq!(s.get(ns, "k").await.unwrap().as_deref(), Some(&b"v1"[..]));
    assert!(
        s.compare_and_swap(ns, "k", Some(b"v1"), b"v2", None)
            .await
            .unwrap()
    );
    assert_eq!(s.get(ns, "k").await.unwrap().as_deref(), Some(&b"v2"[..]));
    // An empty value is not the same as an absent key.
    assert!(
        !s.compare_and_swap(ns, "missing", Some(b""), b"x", None)
            .await
            .unwrap()
    );
    assert!(s.compare_and_swap(ns, "e", None, b"", None).await.unwrap());
    assert!(!s.compare_and_swap(ns, "e", None, b"x", None).await.unwrap());
    assert!(
        s.compare_and_swap(ns, "e", Some(b""), b"x", None)
            .await
            .unwrap()
    );
    // With a TTL the written value expires.
    assert!(
        s.compare_and_swap(ns, "lease", None, b"me", Some(Duration::from_millis(150)))
            .await
            .unwrap()
    );
    eventually(Duration::from_secs(5), "lease expires", async || {
        s.get(ns, "lease").await.unwrap().is_none()
    })
    .await;
    assert!(
        s.compare_and_swap(ns, "lease", None, b"you", None)
            .await
            .unwrap()
    );
}

/// A cache miss across nodes in one round trip: the entry, or the lock to
/// fill it; the filler stores and unlocks in one step. Entry and lock share
/// a hash tag, so this holds on a cluster too.
async fn get_or_lock_leads_one_filler_and_set_and_unlock_hands_over(t: &Target<'_>) {
    let s = t.state().await;
    let ns = "suite:gol";
    let ttl = Duration::from_secs(60);
    assert_eq!(
        s.get_or_lock(ns, "k", b"a", ttl).await.unwrap(),
        Fill::Locked
    );
    assert_eq!(s.get_or_lock(ns, "k", b"b", ttl).await.unwrap(), Fill::Held);
    assert!(s.renew_lock(ns, "k", b"a", ttl).await.unwrap());
    assert!(!s.renew_lock(ns, "k", b"b", ttl).await.unwrap(), "not b's");
    assert!(
        s.set_and_unlock(ns, "k", b"answer", Some(ttl), b"a")
            .await
            .unwrap()
    );
    assert_eq!(
        s.get_or_lock(ns, "k", b"b", ttl).await.unwrap(),
        Fill::Value(b"answer".to_vec())
    );
    // A failed filler releases; the next caller leads.
    assert_eq!(
        s.get_or_lock(ns, "j", b"a", ttl).await.unwrap(),
        Fill::Locked
    );
    assert!(!s.release_lock(ns, "j", b"b").await.unwrap());
    assert!(s.release_lock(ns, "j", b"a").await.unwrap());
    assert_eq!(
        s.get_or_lock(ns, "j", b"b", ttl).await.unwrap(),
        Fill::Locked
    );
    // The lock is not the entry: a plain read of the key sees nothing.
    assert_eq!(s.get(ns, "j").await.unwrap(), None);
}

/// The leader's last step when coalescing across nodes: store the answer
/// and free the lock, which only its holder may do. (The two keys are in
/// different namespaces, so on a cluster they live in different slots.)
async fn set_and_release_stores_and_frees_only_its_own_lock(t: &Target<'_>) {
    let s = t.state().await;
    let (cache, locks) = ("suite:sr-cache", "suite:sr-lock");
    let ttl = Some(Duration::from_secs(60));
    let mine = Lock {
        ns: locks,
        key: "k",
        token: b"mine",
    };
    assert!(
        s.compare_and_swap(locks, "k", None, b"mine", ttl)
            .await
            .unwrap()
    );
    assert!(
        s.set_and_release(cache, "k", b"answer", ttl, mine)
            .await
            .unwrap()
    );
    assert_eq!(
        s.get(cache, "k").await.unwrap().as_deref(),
        Some(&b"answer"[..])
    );
    assert_eq!(s.get(locks, "k").await.unwrap(), None, "lock released");
    // A lock another holder took since (ours expired) stays theirs, but the
    // answer is stored all the same.
    assert!(
        s.compare_and_swap(locks, "k", None, b"theirs", ttl)
            .await
            .unwrap()
    );
    assert!(
        !s.set_and_release(cache, "k", b"newer", ttl, mine)
            .await
            .unwrap()
    );
    assert_eq!(
        s.get(cache, "k").await.unwrap().as_deref(),
        Some(&b"newer"[..])
    );
    assert_eq!(
        s.get(locks, "k").await.unwrap().as_deref(),
        Some(&b"theirs"[..])
    );
    // Plain release: the holder's token only.
    assert!(!s.release(locks, "k", b"mine").await.unwrap());
    assert!(s.release(locks, "k", b"theirs").await.unwrap());
    assert!(
        !s.release(locks, "k", b"theirs").await.unwrap(),
        "already free"
    );
    // No lock at all: still stored; and the value keeps its TTL.
    let short = Some(Duration::from_millis(150));
    assert!(
        !s.set_and_release(cache, "t", b"v", short, mine)
            .await
            .unwrap()
    );
    assert_eq!(s.get(cache, "t").await.unwrap().as_deref(), Some(&b"v"[..]));
    eventually(Duration::from_secs(5), "stored value expires", async || {
        s.get(cache, "t").await.unwrap().is_none()
    })
    .await;
}

async fn compare_and_swap_races_have_one_winner(t: &Target<'_>) {
    let nodes = [t.state().await, t.state().await];
    let ns = "suite:cas-race";
    // Many contenders for one lock: exactly one wins.
    // On Redis the contenders are spread over two nodes; memory is one node.
    let node = |i: usize| nodes[if t.shared() { i % 2 } else { 0 }].clone();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let s = node(i);
            tokio::spawn(async move {
                s.compare_and_swap(ns, "lock", None, i.to_string().as_bytes(), None)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        winners += task.await.unwrap() as u32;
    }
    assert_eq!(winners, 1);

    // Optimistic read-modify-write through CAS loses no update.
    let s = nodes[0].clone();
    s.set(ns, "counter", b"0", None).await.unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    loop {
                        let cur = s.get(ns, "counter").await.unwrap().unwrap();
                        let n: u64 = String::from_utf8(cur.clone()).unwrap().parse().unwrap();
                        let next = (n + 1).to_string();
                        if s.compare_and_swap(ns, "counter", Some(&cur), next.as_bytes(), None)
                            .await
                            .unwrap()
                        {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        s.get(ns, "counter").await.unwrap().as_deref(),
        Some(&b"100"[..])
    );
}

async fn charge_is_all_or_nothing(t: &Target<'_>) {
    let s = t.state().await;
    let ns = "suite:all-or-nothing";
    let r = s
        .charge(ns, &[window("short", 5, 60_000, 4)])
        .await
        .unwrap();
    assert!(r.admitted);
    assert_eq!(r.retry_after_ms, 0);
    assert_eq!(r.buckets[0].limit, 5);
    assert_eq!(r.buckets[0].unit, Unit::Requests);
    assert_eq!(remaining(&r, "short"), 1);

    // `short` is one token short: nothing is taken from either bucket.
    let both = [
        window("plenty", 100, 60_000, 10),
        window("short", 5, 60_000, 2),
    ];
    let r = s.charge(ns, &both).await.unwrap();
    assert!(!r.admitted);
    assert!(r.retry_after_ms > 0);
    assert_eq!(remaining(&r, "plenty"), 100);
    assert_eq!(remaining(&r, "short"), 1);
    let r = s
        .charge(ns, &[window("plenty", 100, 60_000, 0)])
        .await
        .unwrap();
    assert_eq!(
        remaining(&r, "plenty"),
        100,
        "the refused charge took nothing"
    );

    let r = s
        .charge(
            ns,
            &[
                window("plenty", 100, 60_000, 10),
                window("short", 5, 60_000, 1),
            ],
        )
        .await
        .unwrap();
    assert!(r.admitted);
    assert_eq!(remaining(&r, "plenty"), 90);
    assert_eq!(remaining(&r, "short"), 0);

    let r = s.charge(ns, &[]).await.unwrap();
    assert!(r.admitted && r.buckets.is_empty());
    let dup = s
        .charge(ns, &[window("d", 1, 1000, 1), window("d", 1, 1000, 1)])
        .await;
    assert!(matches!(dup, Err(StateError::Invalid(_))), "{dup:?}");
}

async fn refill_and_retry_after(t: &Target<'_>) {
    let s = t.state().await;
    let ns = "suite:refill";
    // 5 per 500 ms: one token every 100 ms.
    let b = |cost| [window("r", 5, 500, cost)];
    assert!(s.charge(ns, &b(5)).await.unwrap().admitted);
    let r = s.charge(ns, &b(1)).await.unwrap();
    assert!(!r.admitted);
    assert!((1..=100).contains(&r.retry_after_ms), "{r:?}");
    assert!(r.buckets[0].reset_ms <= 500, "{r:?}");

    // Waiting retry_after is enough (the clocks of this process and the
    // server agree within a few ms; allow that much).
    tokio::time::sleep(Duration::from_millis(r.retry_after_ms + 5)).await;
    assert!(s.charge(ns, &b(1)).await.unwrap().admitted);

    // The longest wait wins, and a cost above capacity waits a full refill.
    let ns = "suite:retry-after";
    let r = s
        .charge(
            ns,
            &[
                window("fast", 10, 1_000, 10),
                window("slow", 10, 60_000, 10),
            ],
        )
        .await
        .unwrap();
    assert!(r.admitted);
    let r = s
        .charge(
            ns,
            &[window("fast", 10, 1_000, 1), window("slow", 10, 60_000, 1)],
        )
        .await
        .unwrap();
    assert!(!r.admitted);
    assert!((5_500..=6_000).contains(&r.retry_after_ms), "{r:?}");
    let r = s
        .charge(ns, &[window("huge", 10, 60_000, 11)])
        .await
        .unwrap();
    assert!(!r.admitted);
    assert_eq!(r.retry_after_ms, 60_000);
    assert_eq!(remaining(&r, "huge"), 10);
}

async fn refunds_and_adjust_debt(t: &Target<'_>) {
    let s = t.state().await;
    let ns = "suite:settle";
    let tpm = |cost| [window("tpm", 1_000, 60_000, cost)];
    assert!(s.charge(ns, &tpm(1_000)).await.unwrap().admitted);
    // A refund gives tokens back, never above capacity.
    let r = s.charge(ns, &tpm(-300)).await.unwrap();
    assert!(r.admitted);
    assert!((300..=301).contains(&remaining(&r, "tpm")), "{r:?}");
    let r = s.charge(ns, &tpm(-5_000)).await.unwrap();
    assert_eq!(remaining(&r, "tpm"), 1_000);

    // Actual usage above the estimate: settle pushes the bucket into debt.
    let r = s.adjust(ns, &tpm(2_500)).await.unwrap();
    assert!(r.admitted);
    assert_eq!(remaining(&r, "tpm"), 0);
    // 1500 of debt + 1000 to full, at 1/60 per ms: 150 s.
    assert!(
        (149_000..=150_000).contains(&r.buckets[0].reset_ms),
        "{r:?}"
    );
    let r = s.charge(ns, &tpm(1)).await.unwrap();
    assert!(!r.admitted);
    // 1501 tokens at 1/60 per ms: ~90 s.
    assert!((89_000..=90_060).contains(&r.retry_after_ms), "{r:?}");

    // Refunds in a refused charge still apply.
    assert!(
        s.charge(ns, &[window("rpm", 10, 60_000, 3)])
            .await
            .unwrap()
            .admitted
    );
    let r = s
        .charge(
            ns,
            &[
                window("tpm", 1_000, 60_000, 1),
                window("rpm", 10, 60_000, -1),
            ],
        )
        .await
        .unwrap();
    assert!(!r.admitted);
    assert_eq!(remaining(&r, "rpm"), 8);
}

async fn concurrent_charges_admit_exactly_the_limit(t: &Target<'_>) {
    let nodes = [t.state().await, t.state().await];
    let ns = "suite:concurrent";
    // 60 an hour: nothing refills while the test runs, however slow the machine.
    let bucket = window("rph", 60, 3_600_000, 1);
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            // On Redis two nodes share the buckets; memory is one node.
            let s = nodes[if t.shared() { i % 2 } else { 0 }].clone();
            let b = bucket.clone();
            tokio::spawn(async move { s.charge(ns, &[b]).await.unwrap() })
        })
        .collect();
    let mut admitted = 0;
    let mut remaining_seen = HashSet::new();
    for task in tasks {
        let r = task.await.unwrap();
        if r.admitted {
            admitted += 1;
            assert!(
                remaining_seen.insert(r.buckets[0].remaining),
                "two charges saw {r:?}"
            );
        } else {
            assert!(r.retry_after_ms > 0);
        }
    }
    assert_eq!(admitted, 60);
}

async fn invalid_calls_are_refused(t: &Target<'_>) {
    let s = t.state().await;
    let long_key = "k".repeat(sluice::state::MAX_KEY_BYTES + 1);
    for result in [
        s.get("", "k").await.map(drop),
        s.get("ns", "").await.map(drop),
        s.get("ns", &long_key).await.map(drop),
        s.set("ns", "k", b"v", Some(Duration::ZERO)).await,
        s.charge("ns", &[window("", 1, 1, 1)]).await.map(drop),
        s.charge(
            "ns",
            &[Bucket {
                shape: Shape::Rate {
                    per_second: f64::NAN,
                    burst: 1,
                },
                ..window("nan", 1, 1, 1)
            }],
        )
        .await
        .map(drop),
    ] {
        assert!(matches!(result, Err(StateError::Invalid(_))), "{result:?}");
    }
    assert!(!s.is_degraded());
}

/// Budget counters (spend/budgets.rs): concurrent reservations from two
/// nodes admit exactly what fits under every limit, all counters or none,
/// and hash records add up; on a cluster the keys share one slot.
async fn budgets_reserve_exactly_and_record(t: &Target<'_>) {
    use sluice::state::{BudgetCounter, HashAdd};
    let nodes = [t.state().await, t.state().await];
    let counters = |delta: i64| {
        [("suite|day", 100), ("suite|total", 1_000)].map(|(key, limit)| BudgetCounter {
            key: key.into(),
            delta,
            limit: Some(limit),
            ttl: Some(Duration::from_secs(3600)),
        })
    };
    let record = HashAdd {
        key: "suite|record".into(),
        fields: vec![("n|x".into(), 1)],
        ttl: Some(Duration::from_secs(3600)),
    };
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let s = nodes[if t.shared() { i % 2 } else { 0 }].clone();
            let (c, r) = (counters(7), record.clone());
            tokio::spawn(async move { s.budget(&c, true, Some(&r)).await.unwrap() })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        let r = task.await.unwrap();
        if r.admitted {
            admitted += 1;
        } else {
            assert_eq!(r.refused, Some(0), "the day limit is the one that binds");
        }
    }
    assert_eq!(admitted, 100 / 7);
    let s = &nodes[0];
    let r = s.budget(&counters(-7), false, None).await.unwrap();
    assert_eq!(r.values, vec![7 * 13, 7 * 13]);
    let fields = s.budget_hash("suite|record").await.unwrap();
    assert_eq!(fields, vec![("n|x".to_owned(), admitted)]);
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&super::Target::Memory).await;
                }
            )*
        }

        mod standalone {
            use crate::support::redis::RedisServer;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let server = RedisServer::start();
                    super::$case(&super::Target::Redis(&server)).await;
                }
            )*
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn cluster_runs_every_case() {
            let cluster = RedisCluster::start(3);
            let target = Target::Cluster(&cluster);
            $(
                eprintln!("cluster: {}", stringify!($case));
                $case(&target).await;
            )*
        }
    };
}

suite!(
    kv_roundtrip,
    namespaces_are_isolated,
    ttl_expires_entries,
    incr_counts_and_sets_ttl_on_create,
    compare_and_swap_semantics,
    compare_and_swap_races_have_one_winner,
    set_and_release_stores_and_frees_only_its_own_lock,
    get_or_lock_leads_one_filler_and_set_and_unlock_hands_over,
    charge_is_all_or_nothing,
    refill_and_retry_after,
    refunds_and_adjust_debt,
    concurrent_charges_admit_exactly_the_limit,
    invalid_calls_are_refused,
    budgets_reserve_exactly_and_record,
);
