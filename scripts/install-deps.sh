#!/usr/bin/env bash
# Installs the Debian 12 packages vbas needs to build and test (make,
# make check, make demo), only those that are missing.
#   --check-only  exit 1 if any is missing, install nothing
#   --bench       also what make bench needs beyond the tests (gnuplot-nox,
#                 for the plot); make check does not install it
# What each is for:
#   gcc make libc6-dev pkg-config   the build
#   libblkid-dev                    vbas format's signature probe
#   libsmartcols-dev                the CLI's tables (list, map, diff, fsmap)
#   nbdkit nbdkit-plugin-dev        the plugin, vbas serve, the NBD tests
#   libcmocka-dev                   unit, model and crash tests
#   python3 python3-libnbd          the shell tests' JSON checks, nbdsh
#   libnbd-bin qemu-utils fio       NBD tests (nbdinfo, nbdcopy, nbdfuse,
#                                   qemu-img, qemu-nbd) and make bench
#   fuse3                           fusermount3, for nbdfuse
#   xfsprogs e2fsprogs util-linux   file systems on volumes, losetup, chattr
#   man-db                          man -l (and groff) for the man pages' test
#   clang libclang-rt-14-dev        the libFuzzer harnesses
set -eu
pkgs="gcc make libc6-dev pkg-config libcmocka-dev python3 python3-libnbd
      nbdkit nbdkit-plugin-dev libnbd-bin qemu-utils fio
      fuse3 libblkid-dev libsmartcols-dev xfsprogs e2fsprogs util-linux man-db
      clang libclang-rt-14-dev"
# vbas serve as a service, in the NBD tests: certtool (TLS certificates),
# systemd-socket-activate, systemd-escape and systemd-analyze.
pkgs="$pkgs gnutls-bin systemd"
bench_pkgs="gnuplot-nox"
check=0
for a in "$@"; do
	case $a in
	--check-only) check=1 ;;
	--bench) pkgs="$pkgs $bench_pkgs" ;;
	*) echo "install-deps.sh: unknown option '$a' (--check-only, --bench)" >&2; exit 2 ;;
	esac
done
missing=()
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "$check" = 1 ]; then
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
