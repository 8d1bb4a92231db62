//! Budget slices at the edge (docs/budgets.md, "At the edge"): nodes whose
//! state layer sits behind a delay proxy (10 ms each way) to one real
//! `redis-server`, reserving and settling budgets through `spend::Budgets`
//! as the pipeline does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluice::alerts::Alerts;
use sluice::spend::{BudgetLimits, BudgetSubject, Budgets, Period, SubjectBudget};
use sluice::state::{BudgetSliceStats, OnError, State, StateSettings, round_trips};
use sluice::telemetry::Metrics;
use sluice_loadgen::delay::DelayProxy;

use crate::support::redis::RedisServer;

const ONE_WAY: Duration = Duration::from_millis(10);

/// One node's state and budgets, far from Redis.
struct FarNode {
    _proxy: DelayProxy,
    state: State,
    budgets: Budgets,
}

async fn far_node(redis: &RedisServer) -> FarNode {
    let upstream: SocketAddr = format!("127.0.0.1:{}", redis.port()).parse().unwrap();
    let proxy = DelayProxy::start("127.0.0.1:0".parse().unwrap(), upstream, ONE_WAY)
        .await
        .expect("proxy");
    let mut settings = StateSettings::redis(format!("redis://{}", proxy.addr()));
    settings.on_error = OnError::FailClosed;
    settings.op_timeout = Duration::from_millis(1000);
    let state = State::connect(&settings).await.expect("connects");
    let metrics = Arc::new(Metrics::default());
    let alerts = Alerts::new(Vec::new(), metrics.clone(), state.clone());
    let budgets = Budgets::new(state.clone(), alerts, metrics);
    FarNode {
        _proxy: proxy,
        state,
        budgets,
    }
}

fn acme(total: i64) -> Vec<SubjectBudget> {
    vec![SubjectBudget {
        subject: BudgetSubject::Tenant("acme".into()),
        limits: BudgetLimits {
            total: Some(total),
            ..BudgetLimits::default()
        },
    }]
}

/// Settled spend and spend plus reservations (slices included) of acme's
/// total, as Redis holds them.
async fn total_usage(node: &FarNode, limit: i64) -> (i64, i64) {
    let usage = node
        .budgets
        .usage(
            &BudgetSubject::Tenant("acme".into()),
            &acme(limit)[0].limits,
        )
        .await
        .unwrap();
    let total = usage.iter().find(|u| u.period == Period::Total).unwrap();
    (total.spent, total.committed)
}

/// [`total_usage`] with the node's slice stats, taken while no slice grant
/// or return is on its way: the background refill (every
/// `REFILL_EVERY`) may top a slice up between a read of the stats and the
/// read of Redis, so both are read again (at most 20 times) until the
/// stats are the same on both sides of the Redis read and Redis counts
/// what they say is held. The last reading is returned either way, for the
/// caller's assertions.
async fn settled_usage(node: &FarNode, limit: i64) -> ((i64, i64), BudgetSliceStats) {
    let mut reading = None;
    for _ in 0..20 {
        let before = node.state.budget_slice_stats().expect("redis");
        let (spent, committed) = total_usage(node, limit).await;
        let after = node.state.budget_slice_stats().expect("redis");
        reading = Some(((spent, committed), after));
        if before == after && committed == spent + after.nano_held as i64 {
            break;
        }
    }
    reading.expect("read at least once")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budgeted_request_served_from_a_slice_makes_no_round_trip() {
    let redis = RedisServer::start();
    let node = far_node(&redis).await;
    let subjects = acme(1_000_000_000);
    // A miss: one round trip, which also takes a slice.
    let (first, trips) =
        round_trips::counted(node.budgets.reserve(&subjects, 10_000, "acme")).await;
    let first = first.expect("admitted");
    assert_eq!(trips, 1, "a budgeted miss waits on one round trip");
    assert!(!first.is_local());
    node.budgets.settle(Some(first), 7_000, None).await.unwrap();
    // Served from the slice: no round trip, local speed.
    for _ in 0..5 {
        let (answer, trips) = round_trips::counted(async {
            let started = Instant::now();
            let r = node.budgets.reserve(&subjects, 10_000, "acme").await;
            (r, started.elapsed())
        })
        .await;
        let (r, took) = answer;
        let r = r.expect("admitted");
        assert!(r.is_local(), "served from the slice");
        assert_eq!(trips, 0);
        assert!(
            took < 2 * ONE_WAY,
            "a slice-local reservation took {took:?}"
        );
        node.budgets.settle(Some(r), 4_000, None).await.unwrap();
    }
    // Redis counts the slice as reserved: spend plus slices never pass.
    let ((spent, committed), stats) = settled_usage(&node, 1_000_000_000).await;
    assert_eq!(stats.local_reserves, 5);
    assert!(stats.nano_held > 0);
    assert_eq!(spent, 7_000 + 5 * 4_000);
    assert_eq!(committed, spent + stats.nano_held as i64);
    // A node that stops gives its slice back.
    node.state.close(Duration::from_secs(2)).await;
    assert_eq!(
        total_usage(&node, 1_000_000_000).await,
        (spent, spent),
        "after close only spend is left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_node_gets_the_slices_of_others_back_and_is_admitted() {
    let redis = RedisServer::start();
    let a = far_node(&redis).await;
    let b = far_node(&redis).await;
    const LIMIT: i64 = 100_000;
    let subjects = acme(LIMIT);
    // A spends 10,000 and takes a slice of 20,000: 30,000 committed.
    let r = a.budgets.reserve(&subjects, 10_000, "acme").await.unwrap();
    a.budgets.settle(Some(r), 10_000, None).await.unwrap();
    let ((spent, committed), stats) = settled_usage(&a, LIMIT).await;
    let held = stats.nano_held;
    assert!(held > 0, "A holds a slice");
    assert_eq!((spent, committed), (10_000, 10_000 + held as i64));
    // B needs 80,000: more than the unleased remainder, less than what is
    // not spent. It is refused at first, raises the flag, A gives its slice
    // back, and B's second try is admitted.
    let (r, trips) = round_trips::counted(b.budgets.reserve(&subjects, 80_000, "acme")).await;
    let r = r.expect("admitted once A gave its slice back");
    assert_eq!(trips, 2, "refused, then admitted on the second try");
    let stats = b.state.budget_slice_stats().unwrap();
    assert_eq!((stats.retries, stats.retries_admitted), (1, 1));
    let a_stats = a.state.budget_slice_stats().unwrap();
    assert_eq!(a_stats.nano_held, 0);
    assert!(a_stats.nano_returned >= held, "{a_stats:?}");
    b.budgets.settle(Some(r), 80_000, None).await.unwrap();
    // 90,000 spent: a request of 10,000 fits exactly, one more does not.
    let r = a.budgets.reserve(&subjects, 10_000, "acme").await.unwrap();
    a.budgets.settle(Some(r), 10_000, None).await.unwrap();
    let refused = b.budgets.reserve(&subjects, 1, "acme").await;
    assert!(refused.is_err(), "the budget is spent");
    assert_eq!(total_usage(&a, LIMIT).await.0, LIMIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_far_nodes_under_load_never_pass_a_budget_and_leave_nothing_unused() {
    let redis = RedisServer::start();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Arc::new(far_node(&redis).await));
    }
    const LIMIT: i64 = 2_000_000;
    let spent = Arc::new(AtomicI64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..24)
        .map(|w| {
            let node = nodes[w % 3].clone();
            let (spent, next) = (spent.clone(), next.clone());
            tokio::spawn(async move {
                let subjects = acme(LIMIT);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= 600 {
                        return;
                    }
                    // Worst cases of 5,000 to 20,000; actual cost a quarter
                    // to all of it.
                    let worst = 5_000 + (i as i64 * 7_919) % 15_000;
                    let actual = worst * (1 + (i as i64 % 4)) / 4;
                    if let Ok(r) = node.budgets.reserve(&subjects, worst, "acme").await {
                        node.budgets.settle(Some(r), actual, None).await.unwrap();
                        spent.fetch_add(actual, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let spent = spent.load(Ordering::Relaxed);
    let (recorded, _) = total_usage(&nodes[0], LIMIT).await;
    assert_eq!(recorded, spent);
    assert!(spent <= LIMIT, "spent {spent} of {LIMIT}");
    let local: u64 = nodes
        .iter()
        .map(|n| n.state.budget_slice_stats().unwrap().local_reserves)
        .sum();
    assert!(local > 0, "some reservations were served from slices");
    // Whatever is left is reservable in one request from any node, though
    // the others may hold slices of it.
    let left = LIMIT - spent;
    if left > 0 {
        let r = nodes[1]
            .budgets
            .reserve(&acme(LIMIT), left, "acme")
            .await
            .expect("what is not spent can be reserved");
        nodes[1].budgets.settle(Some(r), left, None).await.unwrap();
    }
    for n in &nodes {
        n.state.close(Duration::from_secs(2)).await;
    }
    assert_eq!(total_usage(&nodes[0], LIMIT).await, (LIMIT, LIMIT));
    eprintln!("budget slices: {spent} of {LIMIT} spent under load, {local} served from slices");
}
