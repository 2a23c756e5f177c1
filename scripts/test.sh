#!/usr/bin/env bash
# Runs the whole test suite: unit tests beside the code and the end-to-end tests that drive the
# real rbuild binary against a busybox image and a loopback registry.
# As root it first installs the Debian packages the tests use; tests that need root or those
# packages say why they skip when they are missing. CI runs as root, so there everything runs.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
  scripts/install-deps.sh
else
  echo "test.sh: not root: sandbox, overlay and registry tests will skip (run with sudo to include them)" >&2
fi
export RBUILD_NO_PROGRESS=1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
# One closing line for the whole workspace (cargo prints one per test binary, the last of
# which is often a doc-test binary with nothing in it).
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "workspace: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
