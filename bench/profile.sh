#!/usr/bin/env bash
# Where a sluice request spends its CPU: the per-request account of issue 18.
# Starts the mock and sluice (bench/sluice-bench.toml) on free ports, and for
# misses (a unique prompt per request) and hits (the same prompt):
#   1. measures sluice's CPU time per request (utime+stime from /proc over
#      REQUESTS requests, closed loop), and
#   2. samples sluice with `perf record --call-graph dwarf` under the same
#      load, and splits the samples among the phases of a request by the
#      functions on their stacks (inclusive: a sample counts for every phase
#      whose function is on its stack, so shares of nested phases overlap).
# Each phase is printed as a share of sluice's samples and as microseconds
# of CPU per request (share x CPU per request).
#
#   bench/profile.sh              # misses and hits
#   bench/profile.sh hit          # one of them
#   SLUICE=target/release/sluice REQUESTS=20000 SECONDS_PROFILED=15 bench/profile.sh
#   STACK_BYTES=16384 bench/profile.sh   # smaller perf data, fewer full stacks
#
# Needs perf (and permission to profile: perf_event_paranoid <= 1, or root)
# and a release build with line tables (the release profile keeps them).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SLUICE=${SLUICE:-$ROOT/target/release/sluice}
REQUESTS=${REQUESTS:-20000}
CONCURRENCY=${CONCURRENCY:-32}
SECONDS_PROFILED=${SECONDS_PROFILED:-10}
FREQ=${FREQ:-1999}
# The stack copied per sample: with 16 KiB two thirds of the samples end in
# [unknown] (deep futures); 65528, the most perf takes, unwinds 83%.
STACK_BYTES=${STACK_BYTES:-65528}
KINDS=("${@:-miss hit}")
# shellcheck disable=SC2206 # split "miss hit"
KINDS=(${KINDS[*]})
[[ -x $SLUICE ]] || { echo "no sluice binary at $SLUICE: cargo build --release -p sluice, or set SLUICE" >&2; exit 1; }
command -v perf >/dev/null || { echo "perf is not installed" >&2; exit 1; }

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
WORK=$(mktemp -d -t sluice-profile.XXXXXX)
trap 'cleanup; rm -rf "$WORK"' EXIT

start_mock
port=$(free_port)
SLUICE_BENCH_UPSTREAM=http://127.0.0.1:$MOCK_PORT/v1 \
  "$SLUICE" serve --config "$ROOT/bench/sluice-bench.toml" --listen "127.0.0.1:$port" >"$WORK/sluice.log" 2>&1 &
SLUICE_PID=$!
PIDS+=($SLUICE_PID)
wait_ready $SLUICE_PID "http://127.0.0.1:$port/healthz"
URL=http://127.0.0.1:$port/v1/chat/completions

cpu_ns() { # utime+stime of a process, ns
  python3 -c 'import os,sys; f=open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")",1)[1].split(); print((int(f[11])+int(f[12]))*10**9//os.sysconf("SC_CLK_TCK"))' "$1"
}

echo "== bench/profile.sh $(date -u '+%F %H:%M') UTC, commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')," \
  "$(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for kind in "${KINDS[@]}"; do
  case $kind in
    miss) flags=(--unique) ;;
    hit) flags=() ;;
    *) echo "unknown kind: $kind (miss, hit)" >&2; exit 2 ;;
  esac
  load() { "$SLUICE" bench --target "sluice=$URL" --bearer sk-bench "${flags[@]}" --concurrency "$CONCURRENCY" --warmup 0s "$@" >/dev/null; }
  load --requests $((REQUESTS / 10))
  before=$(cpu_ns $SLUICE_PID)
  load --requests "$REQUESTS"
  after=$(cpu_ns $SLUICE_PID)
  per_request_us=$(python3 -c "print(($after - $before) / 1000 / $REQUESTS)")

  load --duration $((SECONDS_PROFILED + 4))s &
  loader=$!
  sleep 2
  perf record -q -F "$FREQ" --call-graph "dwarf,$STACK_BYTES" -p $SLUICE_PID -o "$WORK/$kind.data" \
    -- sleep "$SECONDS_PROFILED" 2>"$WORK/perf.err" ||
    { echo "perf record failed:" >&2; tail -5 "$WORK/perf.err" >&2; exit 1; }
  wait $loader
  # --no-inline: resolving inlined frames runs addr2line on every object,
  # and it hangs on the cached compiled plugins (.cwasm); phases are matched
  # on the functions that were not inlined.
  perf script --no-inline -i "$WORK/$kind.data" -F comm,ip,sym >"$WORK/$kind.txt" 2>"$WORK/perf.err" ||
    { echo "perf script failed:" >&2; tail -5 "$WORK/perf.err" >&2; exit 1; }

  echo
  echo "== $kind: $(printf '%.1f' "$per_request_us") us of sluice CPU per request" \
    "(sluice bench --target sluice=... ${flags[*]} --concurrency $CONCURRENCY --requests $REQUESTS)"
  python3 - "$WORK/$kind.txt" "$per_request_us" <<'EOF'
import re, sys
# Phase -> functions whose presence on a sample's stack puts it in the phase.
PHASES = [
    ("accept + HTTP/1 server (hyper)", r"hyper::proto::h1::(role::Server|dispatch::Server)|hyper_util::server|sluice::listener::"),
    ("pipeline (all of sluice's request work)", r"sluice::pipeline::run|sluice::server::api|sluice::pipeline::respond::settle_later"),
    ("  auth", r"sluice::pipeline::auth::"),
    ("  read + parse body", r"sluice::pipeline::read_body|sluice::pipeline::parse|sluice::api::parse"),
    ("  throttle.admit plugin call", r"sluice::plugin::instance::Plugin::throttle_admit"),
    ("  cache-key.derive plugin call", r"sluice::plugin::instance::Plugin::derive_cache_key"),
    ("  semantic.prepare plugin call", r"sluice::plugin::instance::Plugin::semantic_prepare"),
    ("  throttle.settle plugin call", r"sluice::plugin::instance::Plugin::throttle_settle"),
    ("    of which: instantiate (+ init, where it runs per instance)", r"sluice::plugin::instance::Plugin::begin"),
    ("    of which: request view to WIT (host copy)", r"sluice::plugin::convert::request"),
    ("    of which: lowering into the guest", r"wasmtime::runtime::component::func::typed::.*(lower|store)|cabi_realloc|Lower"),
    ("    of which: guest code (leaf)", r"^wasm\[\d+\]::function"),
    # round_trips wraps the whole request's future: not state work.
    ("  state (bucket charge)", r"sluice::state::(?!round_trips)"),
    ("  url parse (upstream URL)", r"url::parser::Parser::parse_url"),
    ("  settle after the answer (plugin + state + spend)", r"sluice::pipeline::respond::settle_later"),
    ("  instance teardown (store drop, memory reset)", r"drop_in_place<wasmtime::runtime::store::StoreInner|reset_with_pagemap"),
    ("  cache (lookup + store)", r"sluice::cache::|sluice::pipeline::caching|sluice::pipeline::store"),
    ("  upstream client (reqwest + hyper client)", r"sluice::upstream::|reqwest::|hyper::client|hyper_util::client"),
    # settle_later has a row of its own.
    ("  respond / decorate", r"sluice::pipeline::respond::(?!settle_later|spawn_settle)"),
    ("  metrics", r"sluice::telemetry::metrics|prometheus_client"),
    ("  logs + traces (tracing)", r"tracing::|tracing_subscriber::|sluice::telemetry::traces"),
    ("memcpy (leaf: moves of large futures, copies)", r"^__memmove|^__memcpy"),
    ("malloc/free (leaf)", r"^(malloc|free|realloc|calloc|_int_malloc|_int_free|cfree|__libc_malloc|_rjem_|__rustc::__rust_(alloc|dealloc|realloc))"),
    ("kernel (leaf: syscalls, network, page tables)", r"^\[kernel\]"),
]
compiled = [(n, re.compile(p)) for n, p in PHASES]
samples, counts = 0, [0] * len(PHASES)
stack = []
def flush():
    global samples
    if not stack:
        return
    samples += 1
    for i, (name, rx) in enumerate(compiled):
        # "(leaf" rows count the sampled function itself; the others count
        # a sample for every phase on its stack.
        frames = stack[:1] if "(leaf" in name else stack
        if any(rx.search(f) for f in frames):
            counts[i] += 1
    stack.clear()
for line in open(sys.argv[1], errors="replace"):
    line = line.rstrip("\n")
    if not line.strip():
        flush()
    elif line.startswith((" ", "\t")):
        # "<address> <symbol>"; kernel addresses are the top half.
        addr, _, sym = line.strip().partition(" ")
        kernel = addr.startswith("ffffffff") and not addr.startswith("ffffffffffff")
        stack.append(("[kernel] " if kernel else "") + sym)
    # a header line (comm) starts a new sample
flush()
us = float(sys.argv[2])
print(f"   {samples} samples; shares are of all sluice samples (nested rows overlap)")
print(f"   {'phase':<52} {'share':>7} {'us/req':>8}")
for (name, _), c in zip(PHASES, counts):
    share = c / samples if samples else 0
    print(f"   {name:<52} {share:>6.1%} {share * us:>8.1f}")
EOF
done
