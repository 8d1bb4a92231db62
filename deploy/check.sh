#!/usr/bin/env bash
# Static checks of the deployment and observability artifacts:
#
#   - examples/prometheus-alerts.yml: `promtool check rules`, and the unit
#     tests in deploy/prometheus-alerts.test.yml (`promtool test rules`);
#   - examples/grafana-dashboard.json parses, and every query in it and in
#     the alert rules names only metrics sluice exposes, with labels those
#     metrics carry and label values sluice can emit. The exposed names are
#     extracted from the registration calls in host/src (deploy/checks.py
#     explains how; `python3 deploy/checks.py metrics` prints them);
#   - deploy/k8s: every manifest parses as YAML, has the required fields and
#     fits the Kubernetes API schema (the `kubernetes` Python client's
#     models), and the pieces fit together (probes on /healthz and /readyz,
#     preStop, non-root read-only pod with an emptyDir plugin cache, config
#     mounted as a directory without subPath, Services select pods and
#     ports that exist, REDIS_URL names the Redis Service, listen ports and
#     grace periods agree with deploy/k8s/sluice.toml); `kubectl kustomize`
#     renders it when kubectl is installed;
#   - deploy/k8s/sluice.toml and examples/*.toml use only config fields the
#     config structs in host/src declare;
#   - deploy/sluice.service: `systemd-analyze verify`, and the hardening the
#     unit must keep (and MemoryDenyWriteExecute, which it must not set);
#   - deploy/Containerfile: two stages pinned to versioned images on one
#     Debian release, the wasm targets host/build.rs needs, the build
#     command, a non-root runtime user, no secrets in ARG/ENV, health
#     probes (a HEALTHCHECK or the Kubernetes probes), and build inputs that
#     exist and that the ignore file (deny-all first) lets through.
#
# With SLUICE_METRICS_URL set (e.g. http://127.0.0.1:8080/metrics of a
# running sluice), it also checks that every extracted name is in the real
# scrape, which guards the extractor itself.
#
# Needs python3 with PyYAML, and promtool (Debian: prometheus); scripts/setup
# installs them and the `kubernetes` Python client. Exit status 0 when every
# check passed; each failure is printed.
set -uo pipefail
cd "$(dirname "$0")/.."

failed=0
pass() { printf 'ok    %s\n' "$1"; }
fail() { printf 'FAIL  %s\n' "$1"; failed=1; }
skip() { printf 'skip  %s\n' "$1"; }
run() { # run NAME CMD...: pass if CMD succeeds; its output only on failure
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then pass "$name"; else fail "$name"; printf '%s\n' "$out" | sed 's/^/      /'; fi
}

if ! python3 -c 'import yaml' 2>/dev/null; then
    fail "python3 with PyYAML is required (scripts/setup installs it)"
    exit 1
fi

# --- alert rules ---
if command -v promtool >/dev/null; then
    run "promtool check rules examples/prometheus-alerts.yml" promtool check rules examples/prometheus-alerts.yml
    run "promtool test rules deploy/prometheus-alerts.test.yml" promtool test rules deploy/prometheus-alerts.test.yml
else
    fail "promtool not found (Debian package prometheus; scripts/setup installs it)"
fi

# --- metric names in the dashboard and the rules ---
run "exposed metrics extracted from host/src" python3 deploy/checks.py metrics
run "grafana-dashboard.json parses" python3 -c 'import json,sys; json.load(open(sys.argv[1]))' examples/grafana-dashboard.json
run "dashboard and alert queries use only exposed metrics, labels and values" \
    python3 deploy/checks.py queries examples/grafana-dashboard.json examples/prometheus-alerts.yml
if [[ -n "${SLUICE_METRICS_URL:-}" ]]; then
    run "extracted names are all in the scrape of $SLUICE_METRICS_URL" python3 deploy/checks.py live "$SLUICE_METRICS_URL"
fi

# --- configs ---
for toml in deploy/k8s/sluice.toml examples/*.toml; do
    run "$toml uses only declared config fields" python3 deploy/checks.py config "$toml"
done

# --- Kubernetes ---
if ! python3 -c 'import kubernetes' 2>/dev/null; then
    skip "Kubernetes API schema check (pip install kubernetes; scripts/setup does)"
fi
run "deploy/k8s manifests: YAML, required fields, schema, cross-references" python3 deploy/checks.py k8s deploy/k8s
if command -v kubectl >/dev/null; then
    run "kubectl kustomize deploy/k8s renders" kubectl kustomize deploy/k8s
else
    skip "kubectl kustomize (kubectl not installed)"
fi

# --- systemd unit ---
unit=deploy/sluice.service
check_unit() {
    local missing=() line
    for line in 'NoNewPrivileges=yes' 'ProtectSystem=strict' 'CapabilityBoundingSet=' 'DynamicUser=yes' \
        'PrivateDevices=yes' 'ProtectHome=yes' 'RestrictNamespaces=yes' 'SystemCallFilter=@system-service' \
        'CacheDirectory=sluice' 'Environment=SLUICE_CACHE_DIR=%C/sluice' 'KillSignal=SIGTERM'; do
        grep -qx -- "$line" "$unit" || missing+=("$line")
    done
    ((${#missing[@]} == 0)) || { echo "missing: ${missing[*]}"; return 1; }
    if grep -Eq '^MemoryDenyWriteExecute=(yes|true|on|1)' "$unit"; then
        echo "MemoryDenyWriteExecute=yes breaks wasmtime's JIT"
        return 1
    fi
    if grep -q '^ExecReload=' "$unit"; then
        echo "ExecReload: sluice handles no reload signal (SIGHUP would kill it)"
        return 1
    fi
    # TimeoutStopSec must outlast the default shutdown grace (30 s).
    local stop
    stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\?$/\1/p' "$unit")
    [[ -n "$stop" && "$stop" -gt 30 ]] || { echo "TimeoutStopSec must exceed shutdown_grace_ms (30 s)"; return 1; }
}
run "sluice.service keeps its hardening" check_unit
if command -v systemd-analyze >/dev/null; then
    verify_unit() {
        # The binary is not installed here: point ExecStart at one that is,
        # so verify checks the directives, not the install.
        local dir out
        dir=$(mktemp -d)
        sed 's|^ExecStart=/usr/local/bin/sluice |ExecStart=/bin/true |' "$unit" >"$dir/sluice.service"
        out=$(systemd-analyze verify "$dir/sluice.service" 2>&1)
        rm -rf "$dir"
        [[ -z "$out" ]] || { echo "$out"; return 1; }
    }
    run "systemd-analyze verify deploy/sluice.service" verify_unit
else
    skip "systemd-analyze verify (systemd not installed)"
fi

# --- Containerfile ---
check_containerfile() {
    local cf=deploy/Containerfile ignore=deploy/Containerfile.dockerignore errors=() target src
    [[ $(grep -c '^FROM ' "$cf") -eq 2 ]] || errors+=("expected two stages (build, runtime)")
    grep -q '^FROM .* AS build$' "$cf" || errors+=("no build stage named build")
    # The wasm targets host/build.rs checks for.
    for target in $(sed -n 's/^const [A-Z_]*TARGET: &str = "\(.*\)";/\1/p' host/build.rs); do
        grep -q "rustup target add.*$target" "$cf" || errors+=("build stage lacks rustup target $target (host/build.rs needs it)")
    done
    grep -q 'cargo build --release --locked -p sluice' "$cf" || errors+=("not built with cargo build --release --locked -p sluice")
    local user
    user=$(sed -n 's/^USER \(.*\)$/\1/p' "$cf" | tail -n1)
    [[ -n "$user" && "$user" != root && "${user%%:*}" != 0 ]] || errors+=("runtime stage must set a non-root USER")
    grep -q '^ENV SLUICE_CACHE_DIR=' "$cf" || errors+=("SLUICE_CACHE_DIR not set (compiled-plugin cache)")
    grep -q '^ENTRYPOINT \["/usr/local/bin/sluice"\]' "$cf" || errors+=("ENTRYPOINT is not the sluice binary")
    # Build inputs: exist, and the ignore file lets them through.
    for src in $(sed -n 's/^COPY \([^-][^ ]*\( [^ ]*\)*\) [^ ]*$/\1/p' "$cf"); do
        [[ -e "$src" ]] || errors+=("COPY source $src does not exist")
        grep -qx "!${src%/}/\?" "$ignore" || errors+=("$ignore excludes build input $src")
    done
    # Pinned stages: each FROM names an image (directly or through an ARG's
    # default) with a version tag or a digest, never `latest` or no tag;
    # both on the same Debian release (a binary linked against a newer
    # glibc than the runtime's does not start).
    local from image images=()
    while read -r from; do
        image=$from
        if [[ $from =~ ^\$\{?([A-Za-z_]+)\}?$ ]]; then
            image=$(sed -n "s/^ARG ${BASH_REMATCH[1]}=\(.*\)$/\1/p" "$cf")
            [[ -n "$image" ]] || { errors+=("FROM $from: no ARG default"); continue; }
        fi
        images+=("$image")
        if [[ $image != *@sha256:* ]]; then
            local tag=${image##*/}
            [[ $tag == *:* && ${tag##*:} != latest ]] || errors+=("FROM $image: not pinned (a version tag or @sha256 digest)")
        fi
    done < <(sed -n 's/^FROM \([^ ]*\).*$/\1/p' "$cf")
    if ((${#images[@]} == 2)); then
        local release=""
        for r in bookworm:debian12 trixie:debian13 bullseye:debian11; do
            if [[ ${images[0]} == *"${r%%:*}"* ]]; then release=${r##*:}; fi
        done
        [[ -n "$release" && ${images[1]} == *"$release"* ]] \
            || errors+=("build (${images[0]}) and runtime (${images[1]}) stages are not on one Debian release")
    fi
    # No secrets baked in: no ARG/ENV carrying a key, token or password, and
    # the ignore file lets nothing through but the build inputs.
    if grep -Eiq '^(ARG|ENV) [A-Z_]*(KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)[A-Z_]*[= ]' "$cf"; then
        errors+=("an ARG or ENV carries a secret: pass secrets at run time")
    fi
    [[ $(grep -v '^#' "$ignore" | sed '/^$/d' | head -n1) == '*' ]] \
        || errors+=("$ignore must exclude everything first (*), then let the build inputs through")
    # Health: a HEALTHCHECK, or (distroless: no shell to run one) the
    # orchestrator probes /healthz and /readyz (checked with deploy/k8s).
    if ! grep -q '^HEALTHCHECK ' "$cf"; then
        grep -q 'GET /healthz' "$cf" && grep -q 'GET /readyz' "$cf" \
            || errors+=("no HEALTHCHECK and no word on probing /healthz and /readyz")
        grep -q 'livenessProbe' deploy/k8s/deployment.yaml && grep -q 'readinessProbe' deploy/k8s/deployment.yaml \
            || errors+=("no HEALTHCHECK and deploy/k8s/deployment.yaml has no liveness/readiness probes")
    fi
    ((${#errors[@]} == 0)) || { printf '%s\n' "${errors[@]}"; return 1; }
}
run "deploy/Containerfile: pinned stages on one Debian release, wasm targets, build command, non-root, no secrets, health probes, inputs" check_containerfile

if ((failed)); then
    echo "deploy/check.sh: some checks failed"
    exit 1
fi
echo "deploy/check.sh: all checks passed"
