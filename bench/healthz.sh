#!/usr/bin/env bash
# /healthz latency while a plugin runs to its deadline (issue 12): a release
# gateway whose throttle is the hostile test fixture looping until its 50 ms
# deadline (fail-closed), on 2 runtime worker threads. `sluice bench --get`
# probes /healthz open loop at 200/s twice in the same run: first with the
# gateway idle (the baseline), then while 8 clients keep the looping plugin
# busy back to back. Prints both reports; the figure is the loaded p99 and
# its ratio to the idle one.
#
#   bench/healthz.sh
#   SLUICE=target/debug/sluice DURATION=3s bench/healthz.sh   # a quick check
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SLUICE=${SLUICE:-$ROOT/target/release/sluice}
DURATION=${DURATION:-10s}
CLIENTS=${CLIENTS:-8}
FIXTURE=${FIXTURE:-$ROOT/target/plugins/components/sluice_plugin_hostile_fiberless.wasm}
[[ -x $SLUICE ]] || { echo "no sluice binary at $SLUICE: cargo build --release -p sluice, or set SLUICE" >&2; exit 1; }
[[ -f $FIXTURE ]] || { echo "no looping fixture at $FIXTURE: any cargo build of the host builds it, or set FIXTURE" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
WORK=$(mktemp -d)
trap 'cleanup; rm -rf "$WORK"' EXIT

start_mock
cat >"$WORK/sluice.toml" <<TOML
[[providers]]
name = "mock"
kind = "openai"
base_url = "http://127.0.0.1:$MOCK_PORT/v1"
models = ["gpt-*"]

[plugins.throttle]
source = "$FIXTURE"
failure = "fail-closed"
[plugins.throttle.limits]
deadline_ms = 50
[plugins.throttle.config]
mode = "loop"
TOML
PORT=$(free_port)
TOKIO_WORKER_THREADS=2 "$SLUICE" serve --config "$WORK/sluice.toml" --listen "127.0.0.1:$PORT" >"$WORK/sluice.log" 2>&1 &
GW=$!
PIDS+=("$GW")
wait_ready "$GW" "http://127.0.0.1:$PORT/healthz"

probe() {
  "$SLUICE" bench -t "$1=http://127.0.0.1:$PORT/healthz" --get --rate 200 -d "$DURATION" --warmup 1s
}
echo "## /healthz, gateway idle"
probe idle
echo "## /healthz while $CLIENTS clients keep a plugin looping to its 50 ms deadline"
# Every looping request fails closed (503): the clients' own report is not
# the figure, only that they kept the plugin busy throughout.
"$SLUICE" bench -t "looping=http://127.0.0.1:$PORT/v1/chat/completions" -c "$CLIENTS" \
  -d "$DURATION" --warmup 2s --unique >"$WORK/looping.txt" 2>&1 &
LOAD=$!
PIDS+=("$LOAD")
probe looping
wait "$LOAD" || true
echo "## the looping clients (503 = the throttle failing closed at its deadline, as configured)"
cat "$WORK/looping.txt"
