#!/usr/bin/env bash
# Installs the Debian packages rbuild's tests and demo use (idempotent; needs root):
#   busybox-static   the base image fixture is made from it
#   docker-registry  a real OCI distribution registry, started on a loopback port by tests
#   skopeo, umoci    independent tools that check the images we write
#   jq               used by the fixture scripts
#   openssl          registry.sh --tls makes a test CA and server certificate with it
#   uidmap           newuidmap/newgidmap: rootless builds with /etc/subuid ranges (and their test)
set -euo pipefail
pkgs=(busybox-static docker-registry skopeo umoci jq openssl uidmap)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
