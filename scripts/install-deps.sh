#!/usr/bin/env bash
# Installs the Debian 12 packages vbas needs to build and test, only those
# that are missing.  --check-only: exit 1 if any is missing, install nothing.
set -eu
pkgs="gcc make libc6-dev pkg-config libcmocka-dev python3 python3-libnbd
      nbdkit nbdkit-plugin-dev libnbd-bin qemu-utils fio
      libfuse3-dev fuse3 liburing-dev libblkid-dev xfsprogs e2fsprogs util-linux
      clang libclang-rt-14-dev"
# vbas serve as a service, in the NBD tests: certtool (TLS certificates),
# systemd-socket-activate, systemd-escape and systemd-analyze.
pkgs="$pkgs gnutls-bin systemd"
missing=()
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${1:-}" = "--check-only" ]; then
	[ ${#missing[@]} -eq 0 ]
	exit
fi
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
