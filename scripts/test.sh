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
cargo test --workspace --locked "$@"
