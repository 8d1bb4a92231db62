#!/usr/bin/env bash
# Runs sluice's overhead benchmarks on this machine. Starts the mock upstream
# and sluice on free loopback ports, loads sluice and the mock (directly, the
# baseline) in the same `sluice bench` run, writes each report as JSON to
# bench/results/ (git-ignored), and stops everything it started.
#
#   bench/run.sh                              # every benchmark
#   bench/run.sh overhead-miss stream         # some of them
#   SLUICE=target/debug/sluice DURATION=2s WARMUP=1s bench/run.sh overhead-miss
#                                             # a quick check of the script (debug figures mean nothing)
#
# Benchmarks: overhead-miss overhead-hit stream capacity capacity-hit redis budgets translated
# (see bench/README.md).
# Settings (environment): SLUICE (binary, default target/release/sluice),
# DURATION (20s), WARMUP (3s), RATE (500), CONCURRENCY (32),
# MOCK_LATENCY_MS (0), MOCK_CHUNK_DELAY_MS (0), OUT (bench/results).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SLUICE=${SLUICE:-$ROOT/target/release/sluice}
DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-3s}
RATE=${RATE:-500}
CONCURRENCY=${CONCURRENCY:-32}
MOCK_LATENCY_MS=${MOCK_LATENCY_MS:-0}
MOCK_CHUNK_DELAY_MS=${MOCK_CHUNK_DELAY_MS:-0}
OUT=${OUT:-$ROOT/bench/results}
ALL=(overhead-miss overhead-hit stream capacity capacity-hit redis budgets translated)
SELECTED=("${@:-${ALL[@]}}")

for b in "${SELECTED[@]}"; do
  [[ " ${ALL[*]} " == *" $b "* ]] || { echo "unknown benchmark: $b (one of: ${ALL[*]})" >&2; exit 2; }
done
if [[ ! -x $SLUICE ]]; then
  echo "no sluice binary at $SLUICE: build it with 'cargo build --release -p sluice' or set SLUICE" >&2
  exit 1
fi
mkdir -p "$OUT"

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# start_gateway CONFIG: sets GW to its chat completions URL.
start_gateway() {
  local port
  port=$(free_port)
  SLUICE_BENCH_UPSTREAM="http://127.0.0.1:$MOCK_PORT/v1" \
    "$SLUICE" serve --config "$1" --listen "127.0.0.1:$port" >/dev/null &
  PIDS+=($!)
  wait_ready $! "http://127.0.0.1:$port/healthz"
  GW="http://127.0.0.1:$port/v1/chat/completions"
}

start_redis() {
  local port
  port=$(free_port)
  redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no >/dev/null &
  PIDS+=($!)
  local deadline=$((SECONDS + 10))
  until redis-cli -p "$port" ping >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { echo "redis-server did not start" >&2; exit 1; }
    sleep 0.1
  done
  export SLUICE_BENCH_REDIS="redis://127.0.0.1:$port"
}

# run NAME ARGS...: one `sluice bench` run, direct mock first (the baseline).
run() {
  local name=$1
  shift
  local json
  json="$OUT/$name-$(date -u +%Y%m%dT%H%M%SZ).json"
  echo
  echo "== $name ($(date -u +%F), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
  echo "   sluice bench --target direct=... $* --warmup $WARMUP --duration $DURATION"
  "$SLUICE" bench --target "direct=$DIRECT" "$@" --bearer sk-bench \
    --warmup "$WARMUP" --duration "$DURATION" --json "$json"
  echo "   (JSON: $json)"
}

start_mock --latency-ms "$MOCK_LATENCY_MS" --chunk-delay-ms "$MOCK_CHUNK_DELAY_MS"
DIRECT="http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
start_gateway "$ROOT/bench/sluice-bench.toml"
SLUICE_GW=$GW

for b in "${SELECTED[@]}"; do
  case $b in
    overhead-miss) run "$b" --target "sluice=$SLUICE_GW" --rate "$RATE" --unique ;;
    overhead-hit) run "$b" --target "sluice=$SLUICE_GW" --rate "$RATE" ;;
    stream) run "$b" --target "sluice=$SLUICE_GW" --rate "$RATE" --unique --stream ;;
    capacity) run "$b" --target "sluice=$SLUICE_GW" --concurrency "$CONCURRENCY" --unique ;;
    capacity-hit) run "$b" --target "sluice=$SLUICE_GW" --concurrency "$CONCURRENCY" ;;
    redis)
      start_redis
      start_gateway "$ROOT/bench/sluice-bench-redis.toml"
      run "$b" --target "sluice=$SLUICE_GW" --target "sluice-redis=$GW" --rate "$RATE" --unique
      ;;
    budgets)
      # Misses with and without a tenant budget, on memory and on Redis.
      [[ -n ${SLUICE_BENCH_REDIS:-} ]] || start_redis
      start_gateway "$ROOT/bench/sluice-bench-budget.toml"
      BUDGET_GW=$GW
      start_gateway "$ROOT/bench/sluice-bench-redis.toml"
      REDIS_GW=$GW
      start_gateway "$ROOT/bench/sluice-bench-redis-budget.toml"
      run "$b" --target "sluice=$SLUICE_GW" --target "sluice-budget=$BUDGET_GW" \
        --target "sluice-redis=$REDIS_GW" --target "sluice-redis-budget=$GW" --rate "$RATE" --unique
      ;;
    translated)
      # The same gateway config serves gpt-* on the OpenAI API and claude-*
      # through translation to the mock's Anthropic API; the two sluice
      # targets differ only in the model (and so in translation).
      start_gateway "$ROOT/bench/sluice-bench-translated.toml"
      run "$b" --target "sluice=$GW" --target "sluice-translated=$GW" \
        --model-for "sluice-translated=claude-3-5-haiku" --rate "$RATE" --unique
      ;;
  esac
done
