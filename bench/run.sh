#!/usr/bin/env bash
# The benchmark of issue 7: rbuild on the scenarios of ../shared/bench (40 trivial RUN steps,
# 4 parallel stages, a cached 10-stage graph, a 624 MB / 19.8k-file context cold, no-op and
# one-file-touched, and the same written to an OCI archive), alone or beside BuildKit.
#
#   bench/run.sh                 rbuild alone, every scenario; its own loopback registry holds the
#                                busybox base (made from Debian's busybox-static)
#   bench/run.sh buildkit        beside BuildKit 0.13 in Docker 26.1 (run
#                                ../shared/bench/setup-anchors.sh once, as root, first)
#   SCENARIOS="steps noop" QUICK=1 bench/run.sh buildkit     a quick subset
#
# Needs root (sandboxed RUN steps; BuildKit's daemon memory is read from /proc). Prints the
# table of ../shared/bench/compare.sh: median seconds, ratio to BuildKit, peak RSS of rbuild's
# process tree and CPU seconds per row; raw results stay under /tmp/bench-results/.
# Timings are only comparable within one run on one machine (see ../shared/bench/README.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
shared=${RBUILD_BENCH_DIR:-$repo/../shared/bench}
[ -x "$shared/compare.sh" ] || { echo "bench: $shared/compare.sh not found (set RBUILD_BENCH_DIR)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "bench: run as root (sandboxed RUN steps)" >&2; exit 1; }
"$repo/scripts/install-deps.sh"
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null

target=${CARGO_TARGET_DIR:-$repo/target}
(cd "$repo" && cargo build --release --locked --bin rbuild)
export RBUILD=$target/release/rbuild

# rbuild pulls its base from a registry: the anchors' one on 127.0.0.1:5000 when it is up,
# else one of ours on a free loopback port, seeded with the busybox fixture.
if [ -z "${RBUILD_ARGS:-}" ] && ! curl -fs http://127.0.0.1:5000/v2/busybox/tags/list >/dev/null 2>&1; then
  state=$(mktemp -d)
  trap '"$repo/testdata/fixtures/registry.sh" stop "$state" >/dev/null 2>&1 || true; rm -rf "$state"' EXIT
  port=$("$repo/testdata/fixtures/registry.sh" start "$state")
  "$repo/testdata/fixtures/busybox-image.sh" "$state/busybox" >/dev/null
  "$repo/testdata/fixtures/registry.sh" seed "$port" "$state/busybox" busybox:latest
  export RBUILD_ARGS="--build-arg BASE=127.0.0.1:$port/busybox:latest"
fi

[ -d /tmp/bench-ctx/bigctx ] || "$shared/gen.sh"
builders=("$@")
[ ${#builders[@]} -gt 0 ] || builders=(rbuild)
[[ " ${builders[*]} " == *" rbuild "* ]] || builders+=(rbuild)
cd "$shared"
exec ./compare.sh "${builders[@]}"
