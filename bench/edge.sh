#!/usr/bin/env bash
# Edge latency: what distance to Redis adds to a request, per distance, in
# one run each against the same gateway with Redis on the host.
#
#   cargo build --release -p sluice -p sluice-loadgen
#   bench/edge.sh                       # one-way delays 0, 10 and 40 ms
#   DELAYS="10" RATE=200 DURATION=10s bench/edge.sh
#
# For each one-way delay D (round trip 2D) it starts, on 127.0.0.1 and free
# ports: the mock provider, one redis-server, a delay proxy in front of it
# (sluice-delay-proxy, D each way), a "near" sluice on Redis directly and a
# "far" sluice through the proxy (both bench/sluice-bench-edge.toml, leased
# limits), then loads both in the same run: cache misses (unique prompts),
# then L1 hits (one prompt per worker, cached after the first). It prints the
# latency of each, and the Redis round trips per request by outcome that
# each node counted on its own request path
# (sluice_state_round_trips_per_request). The targets are interleaved
# request by request (--per-request), so each sees steady traffic at half the
# rate: alternating one-second rounds would leave each node idle for a whole
# lease period between rounds, and every round would start without leases.
# Only what it started is stopped.
# Settings: SLUICE, PROXY (binaries), DELAYS ("0 10 40"), RATE (400, both together),
# DURATION (10s), WARMUP (2s), OUT (bench/results).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SLUICE=${SLUICE:-$ROOT/target/release/sluice}
PROXY=${PROXY:-$ROOT/target/release/sluice-delay-proxy}
DELAYS=${DELAYS:-0 10 40}
RATE=${RATE:-400}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
OUT=${OUT:-$ROOT/bench/results}
for bin in "$SLUICE" "$PROXY"; do
  [[ -x $bin ]] || { echo "no binary at $bin (cargo build --release -p sluice -p sluice-loadgen)" >&2; exit 1; }
done
mkdir -p "$OUT"

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

start_mock
export SLUICE_BENCH_UPSTREAM="http://127.0.0.1:$MOCK_PORT/v1"

start_redis

# Starts sluice on Redis at $1; sets GW (chat URL) and METRICS.
start_gateway() {
  local port
  port=$(free_port)
  SLUICE_BENCH_REDIS=$1 "$SLUICE" serve --config "$ROOT/bench/sluice-bench-edge.toml" \
    --listen "127.0.0.1:$port" >/dev/null &
  PIDS+=($!)
  wait_ready $! "http://127.0.0.1:$port/healthz"
  GW="http://127.0.0.1:$port/v1/chat/completions"
  METRICS="http://127.0.0.1:$port/metrics"
}

# Mean round trips per request by outcome, from a node's /metrics.
round_trips() {
  curl -fs "$1" | python3 -c '
import re, sys
sums, counts = {}, {}
for line in sys.stdin:
    m = re.match(r"sluice_state_round_trips_per_request_(sum|count)\{outcome=\"([a-z-]+)\"\} ([0-9.e+]+)", line)
    if m:
        (sums if m.group(1) == "sum" else counts)[m.group(2)] = float(m.group(3))
print(", ".join(f"{o} {sums[o] / counts[o]:.2f} ({int(counts[o])} requests)" for o in sorted(counts) if counts[o]))
'
  curl -fs "$1" | grep -E '^sluice_state_limit_charges_total' | tr '\n' ' '
  echo
}

stamp=$(date -u +%Y%m%dT%H%M%SZ)
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
for d in $DELAYS; do
  proxy_port=$(free_port)
  "$PROXY" "127.0.0.1:$proxy_port" "127.0.0.1:$REDIS_PORT" "$d" >/dev/null &
  proxy_pid=$!
  PIDS+=($proxy_pid)
  start_gateway "redis://127.0.0.1:$REDIS_PORT"
  NEAR=$GW NEAR_METRICS=$METRICS
  start_gateway "redis://127.0.0.1:$proxy_port"
  FAR=$GW FAR_METRICS=$METRICS
  echo "== edge: Redis $((2 * d)) ms round trip away ($(date -u +%F), $commit), $RATE req/s over both targets"
  echo "-- cache misses"
  "$SLUICE" bench --target "near=$NEAR" --target "far=$FAR" --baseline near \
    --bearer sk-bench --rate "$RATE" --per-request --unique --warmup "$WARMUP" --duration "$DURATION" \
    --json "$OUT/edge-$((2 * d))ms-miss-$stamp.json"
  echo "-- L1 hits"
  "$SLUICE" bench --target "near=$NEAR" --target "far=$FAR" --baseline near \
    --bearer sk-bench --rate "$RATE" --per-request --warmup "$WARMUP" --duration "$DURATION" \
    --json "$OUT/edge-$((2 * d))ms-hit-$stamp.json"
  echo "-- Redis round trips per request on the request path"
  echo "   near: $(round_trips "$NEAR_METRICS")"
  echo "   far:  $(round_trips "$FAR_METRICS")"
done
