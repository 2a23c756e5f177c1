#!/usr/bin/env bash
# Seeds corpus/frontend with BuildKit's parser test Dockerfiles (each prefixed with a selector
# byte, see fuzz_targets/frontend.rs) and a few that use every instruction; and the corpora of
# the shell, dockerignore, tar_unpack and manifest targets with small valid inputs.
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

# shell: a selector byte (lexer mode) and a word.
mkdir -p corpus/shell
i=0
for w in '$A' '${A}' '${A:-def}' '${EMPTY:+alt}' '${A:?msg}' "'\$A'" '"$A x"' '\$A' '${A#x}' '${LONG%%f*}' '${A/x/y}' '$$' 'a\ b' '`$A`' '${GLOB}*' '${#LONG}'; do
  for sel in '\0' '\1' '\2' '\10'; do
    printf "$sel%s" "$w" > "corpus/shell/seed-$i"; i=$((i + 1))
  done
done
# dockerignore: a file, a NUL, paths.
mkdir -p corpus/dockerignore
printf '*.md\n!README.md\n**/node_modules\n/build\ntmp?\n[a-c]*.log\n#comment\n\0README.md\ndocs/a.md\nsrc/node_modules/x\nbuild/out\ntmp1\nb.log\n' > corpus/dockerignore/seed-0
printf '*\n!src\nsrc/**/*.o\n\0src/a.c\nsrc/x/y.o\nother\n' > corpus/dockerignore/seed-1
# tar_unpack: small layers made with tar: files, links, a whiteout, gzip and zstd.
mkdir -p corpus/tar_unpack
work=$(mktemp -d)
mkdir -p "$work/l/dir/sub" && echo hi > "$work/l/dir/f" && ln -s ../dir/f "$work/l/dir/sub/link" && ln "$work/l/dir/f" "$work/l/hard" && touch "$work/l/dir/.wh.gone" "$work/l/.wh..wh..opq"
tar -C "$work/l" -cf corpus/tar_unpack/seed-plain .
gzip -c corpus/tar_unpack/seed-plain > corpus/tar_unpack/seed-gzip
if command -v zstd >/dev/null; then zstd -q -c corpus/tar_unpack/seed-plain > corpus/tar_unpack/seed-zstd; fi
rm -rf "$work"
# manifest: a selector byte (media type) and a document.
mkdir -p corpus/manifest
layer=$(printf layer | sha256sum | cut -d' ' -f1)
config=$(printf '%s' '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' | sha256sum | cut -d' ' -f1)
printf '\0{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":78},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":5}]}' "$config" "$layer" > corpus/manifest/seed-manifest
printf '\2{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":5,"platform":{"os":"linux","architecture":"amd64"}}]}' "$layer" > corpus/manifest/seed-index
echo "seeded corpus/shell, corpus/dockerignore, corpus/tar_unpack, corpus/manifest"
