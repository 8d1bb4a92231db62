#!/usr/bin/env bash
# What shared state in Redis costs per request: p99 overhead of sluice with
# Redis state against the mock called directly, in the same run (and sluice
# with memory state alongside), then the Redis round trips per request,
# counted with INFO commandstats over a fixed number of requests.
#
#   cargo build --release -p sluice
#   bench/redis.sh                          # RATE=1000 DURATION=20s
#   RATE=500 DURATION=10s bench/redis.sh
#
# Everything runs on 127.0.0.1 on free ports: the mock, a private
# redis-server (never the one on 6379), sluice with memory state
# (bench/sluice-bench.toml) and sluice with Redis state
# (bench/sluice-bench-redis.toml). Only what this script started is stopped.
# Settings (environment): SLUICE (binary, default target/release/sluice),
# RATE (1000), DURATION (20s), WARMUP (3s), COUNT (2000: requests for the
# round-trip count), OUT (bench/results).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SLUICE=${SLUICE:-$ROOT/target/release/sluice}
RATE=${RATE:-1000}
DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-3s}
COUNT=${COUNT:-2000}
OUT=${OUT:-$ROOT/bench/results}
[[ -x $SLUICE ]] || { echo "no sluice binary at $SLUICE (cargo build --release -p sluice)" >&2; exit 1; }
mkdir -p "$OUT"

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

start_mock
DIRECT="http://127.0.0.1:$MOCK_PORT/v1/chat/completions"

start_redis
export SLUICE_BENCH_REDIS="redis://127.0.0.1:$REDIS_PORT"
export SLUICE_BENCH_UPSTREAM="http://127.0.0.1:$MOCK_PORT/v1"

start_gateway() {
  local port
  port=$(free_port)
  "$SLUICE" serve --config "$1" --listen "127.0.0.1:$port" >/dev/null &
  PIDS+=($!)
  wait_ready $! "http://127.0.0.1:$port/healthz"
  GW="http://127.0.0.1:$port/v1/chat/completions"
}
start_gateway "$ROOT/bench/sluice-bench.toml"
MEMORY=$GW
start_gateway "$ROOT/bench/sluice-bench-redis.toml"
REDIS=$GW

stamp=$(date -u +%Y%m%dT%H%M%SZ)
echo "== redis latency ($(date -u +%F), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')), $RATE req/s, cache misses"
"$SLUICE" bench --target "direct=$DIRECT" --target "sluice=$MEMORY" --target "sluice-redis=$REDIS" \
  --bearer sk-bench --rate "$RATE" --unique --warmup "$WARMUP" --duration "$DURATION" \
  --json "$OUT/redis-latency-$stamp.json"
echo "   (JSON: $OUT/redis-latency-$stamp.json)"

# Round trips: commands the Redis-backed sluice sent, over COUNT requests to
# it alone (cache misses, then hits of one prompt), captured with MONITOR.
# MONITOR also lists the commands scripts run inside Redis ("[0 lua]");
# those are not round trips and are counted apart. (INFO commandstats
# mixes the two, which is why it is not used here.)
count() {
  local label=$1 log
  shift
  log=$(mktemp)
  redis-cli -p "$REDIS_PORT" monitor >"$log" &
  local mon=$!
  PIDS+=($mon)
  "$SLUICE" bench --target "sluice-redis=$REDIS" --bearer sk-bench --rate 500 \
    --warmup 0s --requests "$COUNT" "$@" --json - >/dev/null
  # Settling runs just after each answer: let the last ones land.
  sleep 0.5
  kill "$mon" 2>/dev/null || true
  python3 - "$label" "$COUNT" "$log" <<'EOF2'
import collections, re, sys
label, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
trips, inner = collections.Counter(), collections.Counter()
for line in open(path, errors="replace"):
    m = re.match(r'^[0-9.]+ \[\d+ ([^\]]+)\] "([^"]+)"', line)
    if not m:
        continue
    who, cmd = m.group(1), m.group(2).upper()
    (inner if who == "lua" else trips)[cmd] += 1
total = sum(trips.values())
detail = ", ".join(f"{k} {v / n:.2f}" for k, v in trips.most_common())
inside = ", ".join(f"{k} {v / n:.2f}" for k, v in inner.most_common())
print(f"== redis round trips per request ({label}): {total / n:.2f} [{detail}]")
print(f"   commands run inside scripts per request: {sum(inner.values()) / n:.2f} [{inside}]")
EOF2
  rm -f "$log"
}
count "cache misses" --unique
count "cache hits (one prompt)"
