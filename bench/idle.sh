#!/usr/bin/env bash
# What an idle node costs: the CPU a `sluice serve` process takes while no
# request arrives, after it has served some (plugins loaded, instances made
# and gone), as a share of one core, with the busiest thread named. The
# baseline in the same run is `sluice bench-floor`, the bare proxy on the
# same HTTP stack (no plugins, so no epoch ticker).
#
#   bench/idle.sh                              # 10 s windows
#   WINDOW=30 bench/idle.sh
#   SLUICE_BEFORE=/tmp/before/sluice bench/idle.sh   # an earlier build beside it
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SLUICE=${SLUICE:-$ROOT/target/release/sluice}
WINDOW=${WINDOW:-10}
[[ -x $SLUICE ]] || { echo "no sluice binary at $SLUICE: cargo build --release -p sluice, or set SLUICE" >&2; exit 1; }

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
WORK=$(mktemp -d -t sluice-idle.XXXXXX)
trap 'cleanup; rm -rf "$WORK"' EXIT
start_mock

declare -A PID_OF URL_OF
NAMES=()

port=$(free_port)
"$SLUICE" bench-floor --listen "127.0.0.1:$port" --upstream "http://127.0.0.1:$MOCK_PORT" >/dev/null &
PIDS+=($!)
wait_ready $! "http://127.0.0.1:$port/v1/models"
PID_OF[floor]=$!
URL_OF[floor]=http://127.0.0.1:$port/v1/chat/completions
NAMES+=(floor)

# serve NAME BINARY: `serve` on the bench config in front of the mock.
serve() {
  local port
  port=$(free_port)
  SLUICE_BENCH_UPSTREAM=http://127.0.0.1:$MOCK_PORT/v1 \
    "$2" serve --config "$ROOT/bench/sluice-bench.toml" --listen "127.0.0.1:$port" >"$WORK/$1.log" 2>&1 &
  PIDS+=($!)
  wait_ready $! "http://127.0.0.1:$port/healthz"
  PID_OF[$1]=$!
  URL_OF[$1]=http://127.0.0.1:$port/v1/chat/completions
  NAMES+=("$1")
}
serve sluice "$SLUICE"
[[ -n ${SLUICE_BEFORE:-} ]] && serve before "$SLUICE_BEFORE"

# Some traffic first (misses and hits), so every plugin has run.
for name in "${NAMES[@]}"; do
  "$SLUICE" bench --target "$name=${URL_OF[$name]}" --bearer sk-bench --concurrency 4 \
    --warmup 0s --requests 2000 --json /dev/null >/dev/null
done
sleep 1

# Per thread utime+stime in clock ticks: "tid:name ticks" lines.
threads() {
  for t in /proc/"$1"/task/*; do
    local comm stat
    comm=$(<"$t/comm")
    stat=$(<"$t/stat")
    stat=${stat##*) }
    read -r -a f <<<"$stat"
    echo "${t##*/}:${comm// /_} $((f[11] + f[12]))"
  done
}

echo "== idle CPU over ${WINDOW} s (commit $(git -C "$ROOT" rev-parse --short HEAD), $(date -u +%FT%TZ))"
declare -A BEFORE_OF
for name in "${NAMES[@]}"; do BEFORE_OF[$name]=$(threads "${PID_OF[$name]}"); done
sleep "$WINDOW"
HZ=$(getconf CLK_TCK)
printf '   %-8s %12s   %s\n' target "% of a core" "busiest thread (% of a core)"
for name in "${NAMES[@]}"; do
  after=$(threads "${PID_OF[$name]}")
  python3 - "$name" "$HZ" "$WINDOW" "${BEFORE_OF[$name]}" "$after" <<'EOF'
import sys
name, hz, window, before, after = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
def parse(text):
    out = {}
    for line in text.splitlines():
        thread, ticks = line.rsplit(" ", 1)
        out[thread] = int(ticks)
    return out
b, a = parse(before), parse(after)
used = {k: a[k] - b.get(k, 0) for k in a}
pct = lambda t: 100.0 * t / hz / window
total = sum(used.values())
top = max(used.items(), key=lambda kv: kv[1])
print(f"   {name:<8} {pct(total):12.2f}   {top[0].split(':', 1)[1]} ({pct(top[1]):.2f})")
EOF
done
