#!/usr/bin/env bash
# Builds rbuild and runs the demo end to end, as a new user would:
#   1. installs the Debian packages it needs (busybox-static, docker-registry, skopeo, umoci, jq),
#   2. makes a busybox base image from Debian's busybox-static and serves it from a real registry
#      on a free loopback port,
#   3. builds testdata/demo (two stages, RUN steps in the sandbox, COPY --from) into the local
#      store and an OCI archive,
#   4. checks the result with independent tools: skopeo reads the config, umoci unpacks the
#      filesystem, and the file the RUN steps wrote must say what the demo expects.
# Needs root (namespaces, overlayfs). Everything it makes lives in a temp dir, removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: rbuild's sandbox needs root here (rootless mode is not built yet); run: sudo $0" >&2
  exit 1
fi
scripts/install-deps.sh
cargo build --release --locked
rbuild="${CARGO_TARGET_DIR:-$top/target}/release/rbuild"

work=$(mktemp -d /tmp/rbuild-demo.XXXXXX)
cleanup() { testdata/fixtures/registry.sh stop "$work/registry" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

echo "== base image: busybox from Debian's busybox-static, served on a loopback registry"
testdata/fixtures/busybox-image.sh "$work/busybox" >/dev/null
port=$(testdata/fixtures/registry.sh start "$work/registry")
testdata/fixtures/registry.sh seed "$port" "$work/busybox" busybox:latest >/dev/null
base="127.0.0.1:$port/busybox:latest"

echo "== rbuild -t demo:1.0 --build-arg BASE=$base testdata/demo"
"$rbuild" --root "$work/store" -t demo:1.0 --build-arg "BASE=$base" \
  -o type=image -o "type=oci,dest=$work/demo.tar" testdata/demo

echo "== rbuild images"
"$rbuild" --root "$work/store" images

echo "== what skopeo reads from the OCI archive"
skopeo inspect --config "oci-archive:$work/demo.tar" \
  | jq -c '{Entrypoint: .config.Entrypoint, Cmd: .config.Cmd, WorkingDir: .config.WorkingDir, layers: (.rootfs.diff_ids | length)}'

echo "== the image's /app/summary.txt, unpacked by umoci"
mkdir "$work/layout"
tar -xf "$work/demo.tar" -C "$work/layout"
umoci unpack --image "$work/layout:1.0" "$work/bundle" >/dev/null
got=$(cat "$work/bundle/rootfs/app/summary.txt")
echo "$got"
want=$'HELLO FROM THE RBUILD DEMO\npid=1 host=buildkitsandbox\n27'
if [ "$got" != "$want" ]; then
  echo "demo: FAILED: summary.txt is not what the RUN steps should have written" >&2
  exit 1
fi
echo "== demo OK: the RUN steps ran in the sandbox (PID 1, hostname buildkitsandbox) and the image checks out"
