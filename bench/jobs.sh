#!/usr/bin/env bash
# Asynchronous jobs through three nodes sharing one Redis: throughput
# against the same requests made synchronously through the same nodes (the
# baseline, same run), p50/p99 queue wait per priority, and Redis commands
# per job (INFO commandstats over the submit-and-drain phase, idle worker
# polling of the three nodes included).
#
#   bench/jobs.sh                     # COUNT=10000 THREADS=32
#   COUNT=2000 bench/jobs.sh
#
# Settings (environment): SLUICE (binary, default target/release/sluice),
# COUNT, THREADS, OUT (bench/results). Only what it started is stopped.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SLUICE=${SLUICE:-$ROOT/target/release/sluice}
COUNT=${COUNT:-10000}
THREADS=${THREADS:-32}
OUT=${OUT:-$ROOT/bench/results}
[[ -x $SLUICE ]] || { echo "no sluice binary at $SLUICE (cargo build --release -p sluice)" >&2; exit 1; }
mkdir -p "$OUT"

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

start_mock
start_redis
export SLUICE_BENCH_REDIS="redis://127.0.0.1:$REDIS_PORT"
export SLUICE_BENCH_UPSTREAM="http://127.0.0.1:$MOCK_PORT/v1"

NODES=()
for _ in 1 2 3; do
  port=$(free_port)
  "$SLUICE" serve --config "$ROOT/bench/sluice-bench-jobs.toml" --listen "127.0.0.1:$port" >/dev/null &
  PIDS+=($!)
  wait_ready $! "http://127.0.0.1:$port/healthz"
  NODES+=("http://127.0.0.1:$port")
done

stamp=$(date -u +%Y%m%dT%H%M%SZ)
echo "== jobs ($(date -u +%F), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')), $COUNT jobs, 3 nodes"
python3 "$ROOT/bench/jobs.py" "$REDIS_PORT" "$COUNT" "$THREADS" "${NODES[@]}" | tee "$OUT/jobs-$stamp.json"
