#!/usr/bin/env bash
# The caches' memory bounds at full size, on a release build (issue 12): the
# resident memory a `sluice serve` process keeps after
#   exact:    100,000 distinct answers with [cache] max_bytes = 8 MiB;
#   semantic: 10,000 distinct system prompts (10,000 namespaces) with
#             [semantic] max_bytes = 8 MiB (the mock's embeddings);
# each against the same traffic through a node with that cache off, started
# and loaded the same way in the same run (the fixed overhead: code, plugin
# instances, connections, the allocator's working set). Also the size of
# /metrics after the semantic run.
#
#   bench/memory.sh                 # both
#   bench/memory.sh exact           # one
#   SLUICE=target/debug/sluice N_EXACT=2000 N_SEMANTIC=500 bench/memory.sh
#                                   # a quick check of the script
#
# The load generator is `sluice bench` (closed loop, 32 in flight).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SLUICE=${SLUICE:-$ROOT/target/release/sluice}
N_EXACT=${N_EXACT:-100000}
N_SEMANTIC=${N_SEMANTIC:-10000}
ALL=(exact semantic)
SELECTED=("${@:-${ALL[@]}}")
[[ -x $SLUICE ]] || { echo "no sluice binary at $SLUICE: cargo build --release -p sluice, or set SLUICE" >&2; exit 1; }

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
WORK=$(mktemp -d)
trap 'cleanup; rm -rf "$WORK"' EXIT

start_mock

# config NAME EXTRA: writes $WORK/NAME.toml, one tenant the throttle never
# stops, the mock upstream, and EXTRA.
config() {
  cat >"$WORK/$1.toml" <<EOF
[[providers]]
name = "mock"
kind = "openai"
base_url = "http://127.0.0.1:$MOCK_PORT/v1"
models = ["gpt-*", "text-embedding-*"]

[[tenants]]
name = "bench"
tier = "bulk"
keys = ["sk-bench"]

[plugins.throttle.config]
tiers.bulk = { requests_per_minute = 1000000000, tokens_per_minute = 1000000000000 }

$2
EOF
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# Waits until the RSS of $1 stops falling (jemalloc returns freed pages
# within about a second), at most 10 s; prints it in KiB.
settled_kib() {
  local pid=$1 last now i
  last=$(rss_kib "$pid")
  for i in $(seq 20); do
    sleep 0.5
    now=$(rss_kib "$pid")
    ((now >= last)) && break
    last=$now
  done
  echo "$last"
}

# run NAME N FLAGS...: serves $WORK/NAME.toml, sends N requests with the
# given `sluice bench` flags after a 2,000-request warm-up of the same kind,
# and records the settled RSS in $WORK/NAME.rss (and /metrics' size).
run() {
  local name=$1 n=$2
  shift 2
  local port pid url
  port=$(free_port)
  "$SLUICE" serve --config "$WORK/$name.toml" --listen "127.0.0.1:$port" >"$WORK/$name.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_ready "$pid" "http://127.0.0.1:$port/healthz"
  url="http://127.0.0.1:$port/v1/chat/completions"
  "$SLUICE" bench -t "$name=$url" -c 32 -n 2000 --warmup 0s --bearer sk-bench "$@" >/dev/null
  "$SLUICE" bench -t "$name=$url" -c 32 -n "$n" --warmup 0s --bearer sk-bench "$@" >"$WORK/$name.bench"
  settled_kib "$pid" >"$WORK/$name.rss"
  curl -fs "http://127.0.0.1:$port/metrics" >"$WORK/$name.prom"
  wc -c <"$WORK/$name.prom" >"$WORK/$name.metrics"
  grep -E "^\s*$name" "$WORK/$name.bench" | head -1 >&2 || true
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

report() {
  local what=$1 off on bound=$((8 * 1024))
  off=$(cat "$WORK/$what-off.rss")
  on=$(cat "$WORK/$what-on.rss")
  printf '| %s | %s | %.1f | %.1f | %.1f | 8.0 | %s |\n' \
    "$what" "$3" "$(echo "$off / 1024" | bc -l)" "$(echo "$on / 1024" | bc -l)" \
    "$(echo "($on - $off) / 1024" | bc -l)" "$(cat "$WORK/$what-on.metrics")"
  # The semantic feature has a fixed overhead of its own (checked below).
  [[ $what != exact ]] || ((on - off <= bound)) || echo "  over the bound: $((on - off)) KiB > $bound KiB" >&2
}

echo "| cache | traffic | RSS cache off (MiB) | RSS cache on (MiB) | difference (MiB) | bound (MiB) | /metrics bytes |"
echo "|---|---|---|---|---|---|---|"
for what in "${SELECTED[@]}"; do
  case $what in
    exact)
      config exact-off $'[cache]\nenabled = false'
      config exact-on $'[cache]\nmax_bytes = 8388608'
      run exact-off "$N_EXACT" --unique
      run exact-on "$N_EXACT" --unique
      report exact "$N_EXACT" "$N_EXACT distinct prompts"
      ;;
    semantic)
      semantic=$'[semantic]\nenabled = true\nembedder = "openai"\nmodel = "text-embedding-3-small"\ndimensions = 384'
      config semantic-off $'[cache]\nmax_bytes = 1048576'
      config semantic-on $'[cache]\nmax_bytes = 1048576\n'"$semantic"$'\nmax_bytes = 8388608\nmax_namespaces = 4096'
      # The semantic feature's fixed overhead: the same traffic with the
      # semantic cache at its smallest bound (1 MiB, 64 namespaces), so the
      # semantic plugin's instances, the embeddings client and the index's
      # structures are there but it can keep little.
      config semantic-floor $'[cache]\nmax_bytes = 1048576\n'"$semantic"$'\nmax_bytes = 1048576\nmax_namespaces = 64'
      run semantic-off "$N_SEMANTIC" --unique-system
      run semantic-floor "$N_SEMANTIC" --unique-system
      run semantic-on "$N_SEMANTIC" --unique-system
      report semantic "$N_SEMANTIC" "$N_SEMANTIC distinct system prompts"
      floor=$(cat "$WORK/semantic-floor.rss")
      on=$(cat "$WORK/semantic-on.rss")
      off=$(cat "$WORK/semantic-off.rss")
      # What the 1 MiB node's index holds by its own count: the rest of its
      # RSS over the cache-off node is the feature's fixed overhead. The
      # 8 MiB node may then hold at most 8 MiB more than that overhead,
      # i.e. 8 MiB minus what the 1 MiB node's index holds, over it. (Its
      # recent-embeddings cache, at most 128 KiB, is left out: stricter.)
      held=$(awk '/^sluice_semantic_index_bytes / {printf "%d", $2 / 1024}' "$WORK/semantic-floor.prom")
      allowed=$((8 * 1024 - held))
      printf '\nsemantic: the 1 MiB node'"'"'s index holds %d KiB; fixed overhead (its RSS over cache off, less that): %.1f MiB; 8 MiB bound over the 1 MiB one: %.2f MiB (at most %.2f allowed)\n' \
        "$held" "$(echo "($floor - $off - $held) / 1024" | bc -l)" \
        "$(echo "($on - $floor) / 1024" | bc -l)" "$(echo "$allowed / 1024" | bc -l)"
      ((on - floor <= allowed)) || echo "  over the bound: the 8 MiB cache keeps $((on - floor)) KiB more than the 1 MiB one (at most $allowed)" >&2
      ;;
    *) echo "unknown: $what (exact or semantic)" >&2; exit 2 ;;
  esac
done
