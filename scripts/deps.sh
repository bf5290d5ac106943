#!/bin/sh
# Install what tokengraph needs to build and test on Debian 12, if missing.
# Uses sudo when not run as root. Safe to run again: it installs nothing
# when everything is present.
set -eu
PKGS="cmake make gcc pkg-config zlib1g-dev liblmdb-dev libcmocka-dev libinih-dev"
# Replication (optional in the build, TG_WITH_NATS): the C client, and the
# server the replication tests start on loopback.
PKGS="$PKGS libnats-dev nats-server"
# Sanitizer builds (TG_SANITIZE=address|thread scripts/test.sh) use clang
# and its runtimes.
[ -n "${TG_SANITIZE:-}" ] && PKGS="$PKGS clang libclang-rt-14-dev"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "tokengraph: installing:$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
