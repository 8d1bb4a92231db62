//! What `State` does when Redis misbehaves: killed, restarted, paused,
//! absent at startup, password wrong. Real `redis-server` processes; each
//! test owns its servers.

use std::time::{Duration, Instant};

use crate::support::redis::{RedisCluster, RedisServer, free_port};
use sluice::policy::{Bucket, Shape, Unit};
use sluice::state::{OnError, State, StateError, StateSettings};

const OP_TIMEOUT: Duration = Duration::from_millis(50);
/// Slack on top of `op_timeout` for scheduling on a busy 2-core machine.
const SLACK: Duration = Duration::from_millis(150);
/// How soon a restarted Redis must be in use again.
const RECOVERY: Duration = Duration::from_secs(2);

fn settings(url: String, on_error: OnError) -> StateSettings {
    StateSettings {
        on_error,
        op_timeout: OP_TIMEOUT,
        ..StateSettings::redis(url)
    }
}

fn rpm(limit: u64) -> Bucket {
    Bucket {
        key: "rpm".into(),
        shape: Shape::Window {
            limit,
            window_ms: 60_000,
        },
        cost: 1,
        unit: Unit::Requests,
    }
}

/// Polls until `state` is no longer degraded; returns how long that took.
async fn until_recovered(state: &State, within: Duration) -> Duration {
    let start = Instant::now();
    while state.is_degraded() {
        assert!(
            start.elapsed() < within,
            "still degraded after {within:?}: {:?}",
            state.health()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_falls_back_when_redis_dies_and_recovers_after_restart() {
    let mut server = RedisServer::start();
    let state = State::connect(&settings(server.url(), OnError::FailOpen))
        .await
        .unwrap();
    let other_node = State::connect(&settings(server.url(), OnError::FailOpen))
        .await
        .unwrap();
    state.set("ns", "k", b"in redis", None).await.unwrap();
    assert_eq!(state.health().backend, "redis");
    assert_eq!(state.health().fallbacks, 0);

    server.kill();
    // Answers come from the local fallback: it has no "k", but it serves.
    let started = Instant::now();
    assert_eq!(state.get("ns", "k").await.unwrap(), None);
    assert!(started.elapsed() < OP_TIMEOUT + SLACK);
    assert!(state.charge("ns", &[rpm(2)]).await.unwrap().admitted);
    assert!(state.charge("ns", &[rpm(2)]).await.unwrap().admitted);
    assert!(
        !state.charge("ns", &[rpm(2)]).await.unwrap().admitted,
        "the fallback still limits"
    );
    let health = state.health();
    assert!(health.degraded, "{health:?}");
    assert!(health.fallbacks >= 4, "{health:?}");
    assert!(health.errors >= 1, "{health:?}");
    assert!(health.last_error.is_some());

    server.restart();
    let took = until_recovered(&state, RECOVERY).await;
    eprintln!("recovered {took:?} after restart");
    // Back on Redis, shared with the other node (which also recovers).
    state.set("ns", "k", b"after restart", None).await.unwrap();
    until_recovered(&other_node, RECOVERY).await;
    assert_eq!(
        other_node.get("ns", "k").await.unwrap().as_deref(),
        Some(&b"after restart"[..])
    );
    let fallbacks = state.health().fallbacks;
    state.get("ns", "k").await.unwrap();
    assert_eq!(
        state.health().fallbacks,
        fallbacks,
        "no fallback once healthy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_while_redis_is_down_and_recovers_after_restart() {
    let mut server = RedisServer::start();
    let state = State::connect(&settings(server.url(), OnError::FailClosed))
        .await
        .unwrap();
    assert!(state.charge("ns", &[rpm(10)]).await.unwrap().admitted);

    server.kill();
    let started = Instant::now();
    let err = state.get("ns", "k").await.unwrap_err();
    assert!(matches!(err, StateError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < OP_TIMEOUT + SLACK);
    let err = state.charge("ns", &[rpm(10)]).await.unwrap_err();
    assert!(matches!(err, StateError::Unavailable(_)), "{err:?}");
    let health = state.health();
    assert!(health.degraded && health.fallbacks == 0, "{health:?}");

    server.restart();
    until_recovered(&state, RECOVERY).await;
    // A fresh server: the bucket starts full again.
    let r = state.charge("ns", &[rpm(10)]).await.unwrap();
    assert!(r.admitted);
    assert_eq!(r.buckets[0].remaining, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_costs_at_most_op_timeout() {
    let server = RedisServer::start();
    let open = State::connect(&settings(server.url(), OnError::FailOpen))
        .await
        .unwrap();
    let closed = State::connect(&settings(server.url(), OnError::FailClosed))
        .await
        .unwrap();
    server.cmd(&["CLIENT", "PAUSE", "1500", "ALL"]).unwrap();

    let started = Instant::now();
    assert!(open.charge("ns", &[rpm(10)]).await.unwrap().admitted);
    let took = started.elapsed();
    assert!(took >= OP_TIMEOUT && took < OP_TIMEOUT + SLACK, "{took:?}");

    let started = Instant::now();
    let err = closed.get("ns", "k").await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, StateError::Unavailable(_)), "{err:?}");
    assert!(took >= OP_TIMEOUT && took < OP_TIMEOUT + SLACK, "{took:?}");

    // While degraded, calls skip Redis and pay nothing.
    let started = Instant::now();
    for _ in 0..20 {
        open.get("ns", "k").await.unwrap();
    }
    assert!(started.elapsed() < OP_TIMEOUT, "{:?}", started.elapsed());

    // The pause ends by itself; both recover.
    until_recovered(&open, Duration::from_millis(1500) + RECOVERY).await;
    until_recovered(&closed, RECOVERY).await;
    closed.set("ns", "k", b"v", None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_starts_without_redis_and_switches_over_when_it_appears() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let started = Instant::now();
    let state = State::connect(&settings(url, OnError::FailOpen))
        .await
        .expect("fail-open starts without Redis");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(state.is_degraded());
    state.set("ns", "k", b"local", None).await.unwrap();
    assert!(state.health().fallbacks >= 1);

    let _server = RedisServer::start_on(port);
    until_recovered(&state, RECOVERY).await;
    assert_eq!(
        state.get("ns", "k").await.unwrap(),
        None,
        "now reading Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_to_start_without_redis() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let err = State::connect(&settings(url, OnError::FailClosed))
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("fail-closed"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_work_and_never_show_in_errors() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret-pw"]);
    let state = State::connect(&settings(server.url(), OnError::FailClosed))
        .await
        .unwrap();
    state.set("ns", "k", b"v", None).await.unwrap();

    let wrong = format!("redis://:wrong-pw@127.0.0.1:{}", server.port());
    let err = State::connect(&settings(wrong, OnError::FailClosed))
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::Unavailable(_)), "{err:?}");
    assert!(!err.to_string().contains("wrong-pw"), "{err}");

    let bad = State::connect(&settings("redis://:pw@/nohost:x".into(), OnError::FailOpen)).await;
    match bad {
        Err(StateError::Invalid(m)) => assert!(!m.contains(":pw@"), "{m}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_node_loss_falls_back_and_recovers() {
    let mut cluster = RedisCluster::start(3);
    let state = State::connect(&StateSettings {
        on_error: OnError::FailOpen,
        op_timeout: Duration::from_millis(200),
        ..StateSettings::redis_cluster(cluster.urls())
    })
    .await
    .unwrap();
    assert_eq!(state.health().backend, "redis-cluster");
    // Keys spread over every node.
    for i in 0..30 {
        state.set("ns", &format!("k{i}"), b"v", None).await.unwrap();
    }
    assert_eq!(state.health().fallbacks, 0);

    cluster.node(1).kill();
    let mut fell_back = false;
    for i in 0..30 {
        // Every call answers: from Redis, or from the fallback.
        state.get("ns", &format!("k{i}")).await.unwrap();
        fell_back |= state.health().fallbacks > 0;
    }
    assert!(fell_back, "{:?}", state.health());
    assert!(state.is_degraded());

    cluster.node(1).restart();
    cluster.wait_ok();
    let took = until_recovered(&state, Duration::from_secs(5)).await;
    eprintln!("cluster recovered {took:?} after restart");
    for i in 0..30 {
        state.set("ns", &format!("k{i}"), b"w", None).await.unwrap();
    }
    assert!(!state.is_degraded(), "{:?}", state.health());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_by_the_server_is_replaced_without_fallback() {
    let server = RedisServer::start();
    let state = State::connect(&settings(server.url(), OnError::FailClosed))
        .await
        .unwrap();
    state.set("ns", "k", b"v", None).await.unwrap();
    // What a server `timeout` or a proxy does to idle clients.
    server.cmd(&["CLIENT", "KILL", "TYPE", "normal"]).unwrap();
    // Let the client see the close before its next call.
    let deadline = Instant::now() + Duration::from_secs(2);
    while server
        .cmd_text(&["INFO", "clients"])
        .contains("connected_clients:2")
    {
        assert!(Instant::now() < deadline, "clients never disconnected");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        state.get("ns", "k").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    let health = state.health();
    assert!(!health.degraded && health.errors == 0, "{health:?}");
}
