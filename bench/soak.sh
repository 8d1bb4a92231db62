#!/usr/bin/env bash
# Soak: a long run of mixed traffic with faults injected on a schedule, to
# show that memory, descriptors, errors and latency stay flat.
#
#   cargo build --release -p sluice -p sluice-loadgen
#   bench/soak.sh                         # 30 minutes at 500 req/s
#   MINUTES=3 RATE=200 bench/soak.sh      # a short try
#
# On 127.0.0.1 and free ports it starts the mock provider, one
# redis-server (no persistence) and one sluice (bench/sluice-soak.toml:
# Redis state, leased limits, exact and semantic cache), then runs
# sluice-soak for MINUTES at RATE: 40% cache hits, 20% misses, 15% streams,
# 10% requests from a tenant over its limit (429 expected), 10% embeddings,
# 5% semantic paraphrases. Meanwhile:
#   - every minute the throttle plugin is reloaded (its config in the
#     gateway's config file changes);
#   - every 5 minutes Redis is restarted (killed, and started empty on the
#     same port 2 s later), losing every bucket, lease and cached answer.
# Every minute it records the gateway's RSS and open descriptors, and the
# driver's requests, errors (anything but 200, or 429 for the limited
# tenant) and p99. The table goes to OUT/soak-<time>.md and stdout.
# Settings: SLUICE, SOAK (binaries), MINUTES (30), RATE (500), OUT (bench/results).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SLUICE=${SLUICE:-$ROOT/target/release/sluice}
SOAK=${SOAK:-$ROOT/target/release/sluice-soak}
MINUTES=${MINUTES:-30}
RATE=${RATE:-500}
OUT=${OUT:-$ROOT/bench/results}
for bin in "$SLUICE" "$SOAK"; do
  [[ -x $bin ]] || { echo "no binary at $bin (cargo build --release -p sluice -p sluice-loadgen)" >&2; exit 1; }
done
mkdir -p "$OUT"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$(mktemp -d)

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

start_mock

# Redis on a port of its own that survives restarts; its PID changes.
REDIS_PORT=$(free_port)
REDIS_PID=
redis_up() {
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no >/dev/null &
  REDIS_PID=$!
  local deadline=$((SECONDS + 10))
  until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { echo "redis-server did not start" >&2; exit 1; }
    sleep 0.1
  done
}
redis_up
trap 'kill "$REDIS_PID" 2>/dev/null || true; cleanup; rm -rf "$WORK"' EXIT

CONFIG=$WORK/sluice-soak.toml
cp "$ROOT/bench/sluice-soak.toml" "$CONFIG"
GW_PORT=$(free_port)
SLUICE_BENCH_UPSTREAM="http://127.0.0.1:$MOCK_PORT/v1" \
  SLUICE_BENCH_REDIS="redis://127.0.0.1:$REDIS_PORT" \
  "$SLUICE" serve --config "$CONFIG" --listen "127.0.0.1:$GW_PORT" 2>"$WORK/sluice.log" >/dev/null &
GW_PID=$!
PIDS+=($GW_PID)
wait_ready $GW_PID "http://127.0.0.1:$GW_PORT/healthz"

"$SOAK" "http://127.0.0.1:$GW_PORT" "$RATE" $((MINUTES * 60)) 60 >"$WORK/minutes.jsonl" &
SOAK_PID=$!

# One sample a minute, taken just before the driver's report; faults on
# their schedule. All timing is by the clock, bounded by MINUTES.
: >"$WORK/samples.tsv"
start=$SECONDS
for ((minute = 1; minute <= MINUTES; minute++)); do
  # Mid-minute: reload the throttle (a config edit), and every fifth
  # minute restart Redis empty.
  while ((SECONDS - start < minute * 60 - 30)); do sleep 1; done
  sed -i "s/^tiers.spare = { requests_per_minute = [0-9]* }/tiers.spare = { requests_per_minute = $((1000 + minute)) }/" "$CONFIG"
  if ((minute % 5 == 0)); then
    kill -9 "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    sleep 2
    redis_up
  fi
  while ((SECONDS - start < minute * 60 - 1)); do sleep 1; done
  kill -0 "$GW_PID" 2>/dev/null || { echo "sluice exited" >&2; tail -20 "$WORK/sluice.log" >&2; exit 1; }
  rss_kib=$(awk '/^VmRSS/ {print $2}' "/proc/$GW_PID/status")
  fds=$(find "/proc/$GW_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
  printf '%s\t%s\t%s\n' "$minute" "$rss_kib" "$fds" >>"$WORK/samples.tsv"
done
wait "$SOAK_PID"

python3 - "$WORK/samples.tsv" "$WORK/minutes.jsonl" "$RATE" "$MINUTES" >"$OUT/soak-$STAMP.md" <<'PY'
import json, sys
samples = {int(m): (int(r), int(f)) for m, r, f in (l.split("\t") for l in open(sys.argv[1]) if l.strip())}
minutes = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
rate, total = sys.argv[3], sys.argv[4]
print(f"Soak: {total} min at {rate} req/s (bench/soak.sh). Faults: throttle reload every minute, Redis restarted empty at minutes 5, 10, ...\n")
print("| min | RSS MiB | fds | sent | 429 (expected) | errors | shed | p99 ms | hit p99 | miss p99 | stream p99 | embed p99 | fault |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
errors = 0
for m in minutes:
    n = m["period"]
    rss, fds = samples.get(n, (0, 0))
    kinds = {k["kind"]: k for k in m["kinds"]}
    limited = kinds["limited"]["limited"]
    errors += m["errors"]
    fault = "reload" + (", Redis restart" if n % 5 == 0 else "")
    print(f"| {n} | {rss/1024:.1f} | {fds} | {m['sent']} | {limited} | {m['errors']} | {m['shed']} | {m['p99_ms']:.1f} | "
          f"{kinds['hit']['p99_ms']:.1f} | {kinds['miss']['p99_ms']:.1f} | {kinds['stream']['p99_ms']:.1f} | {kinds['embedding']['p99_ms']:.1f} | {fault} |")
samples_all = [m for m in minutes if m["error_samples"]]
print(f"\nErrors in all: {errors}.")
for m in samples_all[:10]:
    print(f"- minute {m['period']}: " + "; ".join(m["error_samples"]))
PY
cat "$OUT/soak-$STAMP.md"
