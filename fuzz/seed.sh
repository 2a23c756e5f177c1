#!/usr/bin/env bash
# Seeds corpus/frontend with BuildKit's parser test Dockerfiles (each prefixed with a selector
# byte, see fuzz_targets/frontend.rs) and a few that use every instruction.
set -euo pipefail
cd "$(dirname "$0")"
out=corpus/frontend
mkdir -p "$out"
i=0
for f in ../../shared/conformance/buildkit/testfiles/*/Dockerfile ../testdata/*/Dockerfile; do
  [ -f "$f" ] || continue
  { printf '\0'; cat "$f"; } > "$out/seed-$i"; i=$((i + 1))
done
printf '\1ARG B=busybox\nFROM $B AS build\nRUN --mount=type=cache,target=/c --mount=type=secret,id=s echo\nCOPY --link --chown=1:2 a /a\nADD https://example.com/f.tar.gz /d/\nFROM onbuild-image\nCOPY --from=build --parents --exclude=*.md a/./b /x\nHEALTHCHECK --interval=5s CMD true\nONBUILD RUN echo\nRUN <<EOF\n#!/bin/sh\necho hi\nEOF\n' > "$out/seed-all"
echo "seeded $((i + 1)) inputs into $out"
