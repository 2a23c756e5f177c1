#!/usr/bin/env bash
# Installs the Debian packages rbuild's tests and demo use (idempotent; needs root):
#   busybox-static   the base image fixture is made from it
#   docker-registry  a real OCI distribution registry, started on a loopback port by tests
#   skopeo, umoci    independent tools that check the images we write
#   jq               used by the fixture scripts
#   openssl          registry.sh --tls makes a test CA and server certificate with it
#   gcc, libc6-dev   static probe programs for syscalls busybox has no applet for
#   git              `ADD <git url>` runs it; the ADD test serves a repository with `git daemon`
#   openssh-client   ssh-agent and ssh-add for the `RUN --mount=type=ssh` test
#   qemu-user-static QEMU user emulation, for RUN steps of foreign platforms (linux/arm64 on
#                    amd64); rbuild registers its binfmt_misc handlers when running as root
#   uidmap           newuidmap/newgidmap: rootless builds with /etc/subuid ranges (and their test)
#   debootstrap      a Debian root filesystem with real dpkg data, for the SBOM tests
#   rpm, db5.3-util  rpmbuild, rpm and db5.3_load make real rpm databases (sqlite, BerkeleyDB)
#                    for the SBOM scanner's tests
# the SPDX validator `pyspdxtools` (PyPI's spdx-tools, linked into /usr/local/bin), which checks
# the SBOMs independently,
# and, for multi-platform tests, Debian's busybox-static for the other of amd64/arm64, unpacked
# (not installed: it would replace the host's) to /usr/local/lib/rbuild-fixtures/ARCH/busybox,
# where testdata/fixtures/busybox-image.sh finds it.
set -euo pipefail
pkgs=(busybox-static docker-registry skopeo umoci jq openssl gcc libc6-dev git openssh-client qemu-user-static uidmap
  debootstrap rpm db5.3-util)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" && continue
  # A git built from source (not from a package) does as well.
  [ "$p" = git ] && command -v git >/dev/null && continue
  missing+=("$p")
done
host=$(dpkg --print-architecture)
case $host in
  amd64) foreign=arm64 ;;
  arm64) foreign=amd64 ;;
  *) foreign= ;;
esac
fixtures_lib=/usr/local/lib/rbuild-fixtures
need_foreign=
if [ -n "$foreign" ] && [ ! -x "$fixtures_lib/$foreign/busybox" ]; then
  need_foreign=1
fi
need_spdx=
command -v pyspdxtools >/dev/null || need_spdx=1
if [ ${#missing[@]} -eq 0 ] && [ -z "$need_foreign" ] && [ -z "$need_spdx" ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: need root to install: ${missing[*]} ${need_foreign:+busybox-static:$foreign}" >&2
  exit 1
fi
updated=
if [ -n "$need_foreign" ] && ! dpkg --print-foreign-architectures | grep -qx "$foreign"; then
  dpkg --add-architecture "$foreign"
fi
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  updated=1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if [ -n "$need_foreign" ]; then
  [ -n "$updated" ] || apt-get update -qq
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # The same version as the host's busybox-static, so both images have the same applets.
  version=$(dpkg-query -W -f='${Version}' busybox-static)
  (cd "$work" && apt-get download -qq "busybox-static:$foreign=$version" 2>/dev/null ||
    apt-get download -qq "busybox-static:$foreign")
  dpkg-deb -x "$work"/busybox-static_*.deb "$work/root"
  bin=$work/root/bin/busybox
  [ -x "$bin" ] || bin=$work/root/usr/bin/busybox
  install -D -m 0755 "$bin" "$fixtures_lib/$foreign/busybox"
fi
if [ -n "$need_spdx" ]; then
  python3 -m pip install -q --disable-pip-version-check spdx-tools==0.8.5
  scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
  ln -sf "$scripts/pyspdxtools" /usr/local/bin/pyspdxtools
fi
