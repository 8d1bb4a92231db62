#!/usr/bin/env bash
# Assembles a sluice image FROM scratch out of a sluice binary built on this
# machine and the shared libraries `ldd` lists for it, with buildah. For
# machines that cannot pull deploy/Containerfile's base images (no
# container registry reachable); the result is laid out like that image:
# /usr/local/bin/sluice, uid/gid 65532, SLUICE_CACHE_DIR=/var/cache/sluice,
# port 8080, `serve --listen 0.0.0.0:8080` (the offline demo) by default.
#
#   deploy/image-from-binary.sh target/release/sluice [localhost/sluice:dev] [--smoke]
#
# --smoke then runs the image's binary in a container (buildah run, chroot
# isolation, which shares the host's network) serving the demo on a free
# port, and checks /healthz, /readyz, /metrics and that a repeated chat
# request is answered from the cache.
#
# The image has no CA bundle: sluice's HTTP and Redis clients use rustls
# with the Mozilla roots compiled in (webpki-roots).
set -euo pipefail

usage() { sed -n '2,16p' "$0" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
binary=$1
tag=localhost/sluice:dev
smoke=0
shift
for arg in "$@"; do
    case $arg in
        --smoke) smoke=1 ;;
        -*) usage ;;
        *) tag=$arg ;;
    esac
done
[[ -x "$binary" ]] || { echo "not an executable: $binary" >&2; exit 1; }
command -v buildah >/dev/null || { echo "buildah is not installed (apt-get install buildah)" >&2; exit 1; }

ctr=$(buildah from scratch)
cleanup() { buildah rm "$ctr" >/dev/null 2>&1 || true; }
trap cleanup EXIT

# The binary, stripped of debug info (line tables are most of its size).
work=$(mktemp -d)
cp "$binary" "$work/sluice"
strip --strip-debug "$work/sluice" 2>/dev/null || true
buildah copy --quiet --chmod 0755 "$ctr" "$work/sluice" /usr/local/bin/sluice >/dev/null

# Its libraries and the dynamic loader, each at the path the binary asks
# for (symlinks resolved to the files they point at).
libs=$(ldd "$binary" | awk '/=> \//{print $3} /^\s*\/[^ ]+ \(/{print $1}')
for lib in $libs; do
    mkdir -p "$work/root$(dirname "$lib")"
    cp -L "$lib" "$work/root$lib"
done
# The compiled-plugin cache, writable by the runtime user.
mkdir -p "$work/root/var/cache/sluice" "$work/root/tmp"
chmod 1777 "$work/root/tmp"
buildah copy --quiet "$ctr" "$work/root/" / >/dev/null
buildah copy --quiet --chown 65532:65532 --chmod 0700 "$ctr" "$work/root/var/cache/sluice" /var/cache/sluice >/dev/null
rm -rf "$work"

buildah config \
    --user 65532:65532 \
    --env SLUICE_CACHE_DIR=/var/cache/sluice \
    --port 8080 --port 9090 \
    --stop-signal SIGTERM \
    --entrypoint '["/usr/local/bin/sluice"]' \
    --cmd 'serve --listen 0.0.0.0:8080' \
    --label org.opencontainers.image.title=sluice \
    --label org.opencontainers.image.licenses=Apache-2.0 \
    "$ctr"
buildah commit --quiet --rm "$ctr" "$tag" >/dev/null
trap - EXIT
echo "built $tag: $(buildah images --format '{{.Size}}' "$tag")"
echo "libraries: $(echo $libs)"

((smoke)) || exit 0

# --- smoke test: serve the demo from the image's file system ---
run=$(buildah from "$tag")
log=$(mktemp)
stop() {
    [[ -n "${pid:-}" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    buildah rm "$run" >/dev/null 2>&1 || true
    rm -f "$log"
}
trap stop EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
env -i PATH=/usr/bin:/bin buildah run --isolation chroot --user 65532:65532 \
    --env SLUICE_CACHE_DIR=/var/cache/sluice "$run" -- \
    /usr/local/bin/sluice serve --listen "127.0.0.1:$port" >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { echo "sluice exited:"; cat "$log"; exit 1; }
    sleep 0.1
done
base="http://127.0.0.1:$port"
echo "healthz: $(curl -fsS "$base/healthz")"
echo "readyz:  $(curl -fsS "$base/readyz")"
curl -fsS "$base/metrics" | grep -q '^sluice_build_info' || { echo "no sluice_build_info in /metrics"; exit 1; }
body='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello from the image"}]}'
for i in 1 2; do
    cache=$(curl -fsS -o /dev/null -D - "$base/v1/chat/completions" -H 'content-type: application/json' -d "$body" \
        | tr -d '\r' | sed -n 's/^x-sluice-cache: //Ip')
    echo "request $i: x-sluice-cache: $cache"
done
[[ "$cache" == hit ]] || { echo "the second request was not a cache hit"; cat "$log"; exit 1; }
echo "smoke test passed: the image serves the demo"
