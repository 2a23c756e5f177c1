#!/usr/bin/env bash
# Runs the whole test suite: unit tests beside the code and the end-to-end tests that drive the
# real rbuild binary against a busybox image and a loopback registry. Tests that need root say
# so and skip when not root; CI runs as root, so there they run.
set -euo pipefail
cd "$(dirname "$0")/.."
export RBUILD_NO_PROGRESS=1
cargo test --workspace --locked "$@"
