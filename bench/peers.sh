#!/usr/bin/env bash
# sluice side by side with its peers, in one run of one load generator
# (`sluice bench`) against one mock provider (`sluice mock`):
#
#   direct      the mock itself (the baseline of every ratio)
#   floor       `sluice bench-floor`: a bare pass-through proxy on sluice's
#               HTTP server and upstream client (no parsing, no plugins)
#   sluice-miss sluice (bench/sluice-bench.toml: 4 plugins, exact cache,
#               memory state), a unique prompt per request: cache misses
#   sluice-hit  the same sluice, the same prompt every time: cache hits
#   portkey     the Portkey gateway (npm @portkey-ai/gateway), Node
#   litellm     the LiteLLM proxy (PyPI litellm[proxy]), one worker
#
# The peers are installed into a temporary directory that is removed at the
# end (nothing of theirs is committed or left behind); set PEERS_DIR to keep
# and reuse an install between runs. Needs node + npm, python3 (venv), curl.
#
#   bench/peers.sh                       # everything (installs the peers: ~2 min)
#   PEERS= bench/peers.sh                # sluice, the floor and direct only
#   PEERS_DIR=/tmp/peers bench/peers.sh  # keep the peers' install for next time
#
# Three parts, each printed as a table of ratios to direct (and to the floor):
#   1. capacity: closed loop, CONCURRENCY requests in flight, every target
#      in alternating ROUNDs of one run: requests/s and latency;
#   2. latency: open loop at RATE requests/s (direct, floor, sluice only;
#      the peers cannot hold 1,000/s on 2 cores): p50/p99 overhead;
#   3. cpu: each target alone for CPU_REQUESTS requests (fewer for the
#      peers), the target process's CPU time (utime+stime from /proc, its
#      children included) per request. Unlike throughput this hardly moves
#      when other work shares the machine.
#
# Settings (environment): SLUICE (default target/release/sluice),
# SLUICE_BEFORE (another sluice build, run beside it as before-miss and
# before-hit: a change measured in one run), PEERS
# ("portkey litellm"), PEERS_DIR, PORTKEY_VERSION (1.15.2), LITELLM_VERSION
# (latest), CONCURRENCY (32), DURATION (30s), WARMUP (3s), ROUND (1s),
# RATE (1000), CPU_REQUESTS (20000), CPU_PEER_REQUESTS (2000), OUT
# (bench/results; JSON reports, git-ignored).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SLUICE=${SLUICE:-$ROOT/target/release/sluice}
PEERS=${PEERS-portkey litellm}
PORTKEY_VERSION=${PORTKEY_VERSION:-1.15.2}
LITELLM_VERSION=${LITELLM_VERSION:-}
CONCURRENCY=${CONCURRENCY:-32}
DURATION=${DURATION:-30s}
WARMUP=${WARMUP:-3s}
ROUND=${ROUND:-1s}
RATE=${RATE:-1000}
CPU_REQUESTS=${CPU_REQUESTS:-20000}
CPU_PEER_REQUESTS=${CPU_PEER_REQUESTS:-2000}
OUT=${OUT:-$ROOT/bench/results}

for p in $PEERS; do
  [[ $p == portkey || $p == litellm ]] || { echo "unknown peer: $p (portkey, litellm)" >&2; exit 2; }
done
if [[ ! -x $SLUICE ]]; then
  echo "no sluice binary at $SLUICE: build it with 'cargo build --release -p sluice' or set SLUICE" >&2
  exit 1
fi
mkdir -p "$OUT"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

if [[ -n ${PEERS_DIR:-} ]]; then
  mkdir -p "$PEERS_DIR"
  WORK=$(cd "$PEERS_DIR" && pwd)
else
  WORK=$(mktemp -d -t sluice-peers.XXXXXX)
  # lib.sh's trap stops the processes; this one also removes the install.
  trap 'cleanup; rm -rf "$WORK"' EXIT
fi
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
echo "== bench/peers.sh $(date -u '+%F %H:%M') UTC, commit $COMMIT, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "   peers: ${PEERS:-none}; install dir: $WORK"

# --- installing the peers -------------------------------------------------

install_portkey() {
  local dir=$WORK/portkey
  if [[ ! -f $dir/node_modules/@portkey-ai/gateway/build/start-server.js ]]; then
    echo "   installing @portkey-ai/gateway@$PORTKEY_VERSION (npm)..."
    mkdir -p "$dir"
    # @hono/node-server pinned to 2.x through npm overrides, as in the
    # figures of issue 18 (the gateway itself asks for 1.x).
    cat >"$dir/package.json" <<EOF
{ "name": "sluice-bench-portkey", "private": true,
  "dependencies": { "@portkey-ai/gateway": "$PORTKEY_VERSION" },
  "overrides": { "@hono/node-server": "^2.0.0" } }
EOF
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
  fi
  PORTKEY_JS=$dir/node_modules/@portkey-ai/gateway/build/start-server.js
  echo "   portkey $(node -p "require('$dir/node_modules/@portkey-ai/gateway/package.json').version")" \
    "(@hono/node-server $(node -p "require('$dir/node_modules/@hono/node-server/package.json').version"), node $(node --version))"
}

install_litellm() {
  local dir=$WORK/litellm
  if [[ ! -x $dir/bin/litellm ]]; then
    echo "   installing litellm[proxy]${LITELLM_VERSION:+==$LITELLM_VERSION} (pip, into a venv)..."
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet "litellm[proxy]${LITELLM_VERSION:+==$LITELLM_VERSION}" >/dev/null
  fi
  LITELLM=$dir/bin/litellm
  echo "   litellm $("$dir/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')" \
    "($("$dir/bin/python" --version))"
}

for p in $PEERS; do "install_$p"; done

# --- starting everything ----------------------------------------------------

start_mock
MOCK_V1=http://127.0.0.1:$MOCK_PORT/v1

port=$(free_port)
"$SLUICE" bench-floor --listen "127.0.0.1:$port" --upstream "http://127.0.0.1:$MOCK_PORT" >/dev/null &
FLOOR_PID=$!
PIDS+=($FLOOR_PID)
wait_ready $FLOOR_PID "http://127.0.0.1:$port/v1/models"
FLOOR_URL=http://127.0.0.1:$port/v1/chat/completions

# start_sluice BINARY LOG: `serve` on the bench config in front of the mock;
# sets STARTED_PID and STARTED_URL.
start_sluice() {
  local port
  port=$(free_port)
  SLUICE_BENCH_UPSTREAM=$MOCK_V1 \
    "$1" serve --config "$ROOT/bench/sluice-bench.toml" --listen "127.0.0.1:$port" >"$2" 2>&1 &
  STARTED_PID=$!
  PIDS+=($STARTED_PID)
  wait_ready $STARTED_PID "http://127.0.0.1:$port/healthz"
  STARTED_URL=http://127.0.0.1:$port/v1/chat/completions
}

start_sluice "$SLUICE" "$WORK/sluice.log"
SLUICE_PID=$STARTED_PID
SLUICE_URL=$STARTED_URL

# NAME=URL targets with their processes and headers, in report order.
TARGETS=(--target "direct=$MOCK_V1/chat/completions" --target "floor=$FLOOR_URL"
  --target "sluice-miss=$SLUICE_URL" --target "sluice-hit=$SLUICE_URL" --repeat sluice-hit)
declare -A PID_OF=([direct]=$MOCK_PID [floor]=$FLOOR_PID [sluice-miss]=$SLUICE_PID [sluice-hit]=$SLUICE_PID)
declare -A URL_OF=([direct]=$MOCK_V1/chat/completions [floor]=$FLOOR_URL [sluice-miss]=$SLUICE_URL [sluice-hit]=$SLUICE_URL)
declare -A EXTRA_OF=([sluice-hit]="--repeat sluice-hit")
# The open-loop latency run's targets (the peers cannot hold its rate).
LATENCY_TARGETS=("${TARGETS[@]}")

# SLUICE_BEFORE: another sluice build (an earlier commit's, say) on the same
# config, as before-miss and before-hit: a change measured in one run.
if [[ -n ${SLUICE_BEFORE:-} ]]; then
  start_sluice "$SLUICE_BEFORE" "$WORK/before.log"
  BEFORE_PID=$STARTED_PID
  BEFORE_URL=$STARTED_URL
  BEFORE_TARGETS=(--target "before-miss=$BEFORE_URL" --target "before-hit=$BEFORE_URL" --repeat before-hit)
  TARGETS+=("${BEFORE_TARGETS[@]}")
  LATENCY_TARGETS+=("${BEFORE_TARGETS[@]}")
  PID_OF[before-miss]=$BEFORE_PID
  PID_OF[before-hit]=$BEFORE_PID
  URL_OF[before-miss]=$BEFORE_URL
  URL_OF[before-hit]=$BEFORE_URL
  EXTRA_OF[before-hit]="--repeat before-hit"
fi

for p in $PEERS; do
  port=$(free_port)
  case $p in
    portkey)
      NODE_ENV=production node "$PORTKEY_JS" --headless --port="$port" >"$WORK/portkey.log" 2>&1 &
      PID_OF[portkey]=$!
      URL_OF[portkey]=http://127.0.0.1:$port/v1/chat/completions
      PIDS+=($!)
      wait_ready $! "http://127.0.0.1:$port/"
      TARGETS+=(--target "portkey=http://127.0.0.1:$port/v1/chat/completions"
        --header "portkey=x-portkey-provider:openai" --header "portkey=x-portkey-custom-host:$MOCK_V1")
      EXTRA_OF[portkey]="--header portkey=x-portkey-provider:openai --header portkey=x-portkey-custom-host:$MOCK_V1"
      ;;
    litellm)
      cat >"$WORK/litellm.yaml" <<EOF
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: $MOCK_V1
      api_key: sk-mock
general_settings:
  master_key: sk-bench
EOF
      # The cost map from the package, not fetched from GitHub at start.
      LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR \
        "$LITELLM" --config "$WORK/litellm.yaml" --host 127.0.0.1 --port "$port" \
        --num_workers 1 >"$WORK/litellm.log" 2>&1 &
      PID_OF[litellm]=$!
      URL_OF[litellm]=http://127.0.0.1:$port/v1/chat/completions
      PIDS+=($!)
      # LiteLLM takes a while to import (minutes on a busy machine).
      local_deadline=$((SECONDS + 300))
      until curl -fs -o /dev/null "http://127.0.0.1:$port/health/liveliness"; do
        kill -0 "${PID_OF[litellm]}" 2>/dev/null || { echo "litellm exited; see below" >&2; tail -20 "$WORK/litellm.log" >&2; exit 1; }
        ((SECONDS < local_deadline)) || { echo "litellm did not start in 300 s" >&2; exit 1; }
        sleep 0.5
      done
      TARGETS+=(--target "litellm=http://127.0.0.1:$port/v1/chat/completions")
      ;;
  esac
done

# Every target must answer one request before anything is measured.
"$SLUICE" bench "${TARGETS[@]}" --bearer sk-bench --unique --concurrency 1 \
  --warmup 0s --requests $((${#PID_OF[@]})) --per-request >/dev/null ||
  {
    echo "a target did not answer; the last lines of each log:" >&2
    for log in "$WORK"/*.log; do echo "--- $log" >&2; tail -5 "$log" >&2; done
    exit 1
  }

# summarize JSON: each target as a ratio to direct and to the floor.
summarize() {
  python3 - "$1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
t = {x["name"]: x for x in r["targets"]}
d, f = t["direct"], t.get("floor")
print(f"   {'target':<12} {'req/s':>9} {'/direct':>8} {'/floor':>8} {'p50 ms':>8} {'p99 ms':>8} {'p50 +us':>9} {'p99 +us':>9}  errors")
for x in r["targets"]:
    l, dl = x["latency"] or {}, d["latency"] or {}
    p50, p99 = l.get("p50_us"), l.get("p99_us")
    fmt = lambda v, s=1000: f"{v / s:.2f}" if v is not None else "-"
    diff = lambda a, b: f"{a - b:+.0f}" if a is not None and b is not None else "-"
    rf = f"{x['throughput_rps'] / f['throughput_rps']:.3f}" if f and f["throughput_rps"] else "-"
    print(f"   {x['name']:<12} {x['throughput_rps']:>9.0f} {x['throughput_rps'] / d['throughput_rps']:>8.3f} {rf:>8}"
          f" {fmt(p50):>8} {fmt(p99):>8} {diff(p50, dl.get('p50_us')):>9} {diff(p99, dl.get('p99_us')):>9}  {x['errors'] or ''}")
EOF
}

# run NAME ARGS...: one `sluice bench` run, saved as JSON and summarised.
run() {
  local name=$1 json
  shift
  json="$OUT/peers-$name-$STAMP.json"
  echo
  echo "== $name: sluice bench ${*//$ROOT\//} --bearer sk-bench --warmup $WARMUP --duration $DURATION"
  "$SLUICE" bench "$@" --bearer sk-bench --warmup "$WARMUP" --duration "$DURATION" --json "$json" >/dev/null
  summarize "$json"
  echo "   (full report: $json)"
}

run capacity "${TARGETS[@]}" --concurrency "$CONCURRENCY" --round "$ROUND" --unique
run latency "${LATENCY_TARGETS[@]}" --rate "$RATE" --round "$ROUND" --unique

# --- CPU per request --------------------------------------------------------

# CPU time (utime+stime, ns) of a process and its live descendants.
cpu_ns() {
  python3 - "$1" <<'EOF'
import os, sys
hz = os.sysconf("SC_CLK_TCK")
procs = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        procs[int(p)] = (int(f[1]), int(f[11]) + int(f[12]))
root, total, todo = int(sys.argv[1]), 0, [int(sys.argv[1])]
while todo:
    pid = todo.pop()
    total += procs.get(pid, (0, 0))[1]
    todo += [c for c, (ppid, _) in procs.items() if ppid == pid]
print(total * 1_000_000_000 // hz)
EOF
}

echo
echo "== cpu: each target alone, closed loop at $CONCURRENCY, CPU time of its process per request"
echo "   (direct: the mock's; the others: the proxy's own, the mock's excluded)"
printf '   %-12s %9s %12s %9s\n' target requests "CPU us/req" "/floor"
floor_us=
for name in direct floor sluice-miss sluice-hit before-miss before-hit portkey litellm; do
  [[ -n ${PID_OF[$name]:-} ]] || continue
  url=${URL_OF[$name]}
  n=$CPU_REQUESTS
  [[ $name == portkey || $name == litellm ]] && n=$CPU_PEER_REQUESTS
  # shellcheck disable=SC2086 # EXTRA_OF holds flags
  "$SLUICE" bench --target "$name=$url" ${EXTRA_OF[$name]:-} --bearer sk-bench --unique \
    --concurrency "$CONCURRENCY" --warmup 0s --requests $((n / 10)) --json /dev/null >/dev/null
  before=$(cpu_ns "${PID_OF[$name]}")
  # shellcheck disable=SC2086
  "$SLUICE" bench --target "$name=$url" ${EXTRA_OF[$name]:-} --bearer sk-bench --unique \
    --concurrency "$CONCURRENCY" --warmup 0s --requests "$n" --json "$OUT/peers-cpu-$name-$STAMP.json" >/dev/null
  after=$(cpu_ns "${PID_OF[$name]}")
  ok=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["targets"][0]["ok"])' "$OUT/peers-cpu-$name-$STAMP.json")
  us=$(python3 -c "print(f'{($after - $before) / 1000 / $n:.1f}')")
  [[ $name == floor ]] && floor_us=$us
  rel=-
  [[ -n $floor_us ]] && rel=$(python3 -c "print(f'{$us / $floor_us:.2f}')")
  printf '   %-12s %9s %12s %9s\n' "$name" "$ok/$n" "$us" "$rel"
done
