#!/usr/bin/env bash
# Huge pools: tests/cli/test-huge.sh BUILD_DIR   (runs BUILD_DIR/vbas)
#
# A 16 TiB pool and a 2^48-block (1 EiB) pool in sparse files on an XFS
# (ext4 stops files below 16 TiB) made in a loop device; volumes of 1 PiB
# and of the largest size (1 EiB); data at both ends of each, data placed
# at the far end of the pool, a snapshot, copies on write there, check,
# and everything read back after a reopen.  Offsets near 2^63 and past
# the end are refused with a message.  Needs root, losetup and mkfs.xfs;
# without them its checks are skipped (counted apart; a failure under CI).
set -euo pipefail

BUILD=${1:?usage: $0 BUILD_DIR}
TESTS=$(cd "$(dirname "$0")/.." && pwd)
VBAS=$(cd "$BUILD" && pwd)/vbas
if [ ! -x "$VBAS" ]; then
	echo "Bail out! $VBAS is not built"
	exit 1
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/vbas-huge.XXXXXX")
LOOP=
cleanup() {
	set +e
	mountpoint -q "$T/mnt" 2>/dev/null && { umount "$T/mnt" || umount -l "$T/mnt"; }
	[ -n "$LOOP" ] && losetup -d "$LOOP"
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
cd "$T"
. "$TESTS/tap.sh"


CHECKS=(
	"16 TiB pool: format" "16 TiB pool: info" "16 TiB pool: writes at both ends of 1 PiB"
	"16 TiB pool: data at the pool's far end" "16 TiB pool: snapshot and copies on write"
	"16 TiB pool: check" "16 TiB pool: everything reads back after a reopen"
	"1 EiB pool: format, 2^48 blocks" "1 EiB pool: the largest volume, its last block"
	"1 EiB pool: check" "offsets past the end are refused"
)
if [ "$(id -u)" != 0 ] || ! command -v losetup >/dev/null || ! command -v mkfs.xfs >/dev/null; then
	for c in "${CHECKS[@]}"; do
		skip "$c" "needs root, losetup and mkfs.xfs"
	done
	tap_end
fi

truncate -s 2G xfs.img
mkfs.xfs -q xfs.img
LOOP=$(losetup --find --show xfs.img)
mkdir mnt
mount -t xfs "$LOOP" mnt

# 1 MiB of known data, and a reader that compares what vbas reads.
head -c $((1024 * 1024)) /dev/urandom > a.bin
head -c $((1024 * 1024)) /dev/urandom > b.bin
head -c 4096 /dev/urandom > c.bin
same() {   # same FILE POOL VOL OFFSET
	"$VBAS" read "$2" "$3" --offset "$4" --length "$(stat -c %s "$1")" got.bin 2>"$T/err" &&
		cmp -s "$1" got.bin
}

P=mnt/huge.pool
TiB=$((1 << 40))
PiB=$((1 << 50))
expect_ok "16 TiB pool: format" "$VBAS" format "$P" --size 16T
size=$("$VBAS" info "$P" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])' || true)
if [ "$size" = $((16 * TiB)) ]; then pass "16 TiB pool: info"; else fail "16 TiB pool: info" "size $size"; fi

# A 1 PiB volume: the first, a middle and the last MiB.
ok=1
"$VBAS" create "$P" big --size 1P 2>"$T/err" || ok=0
for off in 0 $((PiB / 2)) $((PiB - 1024 * 1024)); do
	"$VBAS" write "$P" big --offset $off a.bin 2>"$T/err" || ok=0
	same a.bin "$P" big $off || ok=0
done
if [ $ok = 1 ]; then pass "16 TiB pool: writes at both ends of 1 PiB"; else
	fail "16 TiB pool: writes at both ends of 1 PiB" "$(cat "$T/err")"; fi

# Nearly all of the pool reserved for a filler: the next data lands at its
# far end, near block 2^32.
ok=1
"$VBAS" create "$P" filler --size 15T 2>"$T/err" || ok=0
"$VBAS" reserve "$P" filler >/dev/null 2>"$T/err" || ok=0
"$VBAS" write "$P" big --offset $((PiB - 4 * 1024 * 1024)) b.bin 2>"$T/err" || ok=0
phys=$("$VBAS" map "$P" big --json 2>/dev/null | python3 -c '
import json, sys
print(max(e["physical"] for e in json.load(sys.stdin)["extents"]))' || echo 0)
[ "$phys" -ge $((15 * TiB)) ] || ok=0
same b.bin "$P" big $((PiB - 4 * 1024 * 1024)) || ok=0
echo "# the highest physical offset of 'big': $phys"
if [ $ok = 1 ]; then pass "16 TiB pool: data at the pool's far end"; else
	fail "16 TiB pool: data at the pool's far end" "highest physical offset $phys" "$(cat "$T/err")"; fi

# A snapshot, then copies on write at both ends: each side keeps its own.
ok=1
"$VBAS" snapshot "$P" big snap 2>"$T/err" || ok=0
"$VBAS" write "$P" big --offset $((PiB - 4096)) c.bin 2>"$T/err" || ok=0
"$VBAS" write "$P" big --offset 0 b.bin 2>"$T/err" || ok=0
same c.bin "$P" big $((PiB - 4096)) || ok=0
same b.bin "$P" big 0 || ok=0
same a.bin "$P" snap 0 || ok=0
same a.bin "$P" snap $((PiB - 1024 * 1024)) || ok=0
if [ $ok = 1 ]; then pass "16 TiB pool: snapshot and copies on write"; else
	fail "16 TiB pool: snapshot and copies on write" "$(cat "$T/err")"; fi

expect_ok "16 TiB pool: check" "$VBAS" check "$P"

# Each command opens the pool anew: one more round, all of it.
ok=1
same b.bin "$P" big 0 || ok=0
same a.bin "$P" big $((PiB / 2)) || ok=0
same c.bin "$P" big $((PiB - 4096)) || ok=0
same b.bin "$P" big $((PiB - 4 * 1024 * 1024)) || ok=0
same a.bin "$P" snap 0 || ok=0
same a.bin "$P" snap $((PiB / 2)) || ok=0
if [ $ok = 1 ]; then pass "16 TiB pool: everything reads back after a reopen"; else
	fail "16 TiB pool: everything reads back after a reopen" "$(cat "$T/err")"; fi
rm -f "$P"

# 2^48 blocks of 4 KiB: 1 EiB, in a sparse file (XFS holds up to 8 EiB).
Q=mnt/eib.pool
EiB=$((1 << 60))
expect_ok "1 EiB pool: format, 2^48 blocks" "$VBAS" format "$Q" --size 1E
ok=1
"$VBAS" create "$Q" edge --size 1E 2>"$T/err" || ok=0
"$VBAS" write "$Q" edge --offset $((EiB - 4096)) c.bin 2>"$T/err" || ok=0
"$VBAS" write "$Q" edge --offset 0 a.bin 2>"$T/err" || ok=0
same c.bin "$Q" edge $((EiB - 4096)) || ok=0
same a.bin "$Q" edge 0 || ok=0
# The allocator starts data 1/32 into the pool: block numbers past 2^32.
phys=$("$VBAS" map "$Q" edge --json 2>/dev/null | python3 -c '
import json, sys
print(max(e["physical"] for e in json.load(sys.stdin)["extents"]))' || echo 0)
echo "# the highest physical offset of 'edge': $phys"
[ "$phys" -ge $(((1 << 32) * 4096)) ] || ok=0
if [ $ok = 1 ]; then pass "1 EiB pool: the largest volume, its last block"; else
	fail "1 EiB pool: the largest volume, its last block" "$(cat "$T/err")"; fi
expect_ok "1 EiB pool: check" "$VBAS" check "$Q"

# Past the end, and near 2^63 where offset + length would wrap.
ok=1
for off in $EiB $((1 << 62)) 9223372036854771712; do
	if "$VBAS" write "$Q" edge --offset $off c.bin 2>"$T/err"; then ok=0; fi
	grep -Eq "past the end|beyond|too large|out of range" "$T/err" || ok=0
	sanitizer_clean || ok=0
	echo "# offset $off: $(head -n 1 "$T/err")"
done
if [ $ok = 1 ]; then pass "offsets past the end are refused"; else
	fail "offsets past the end are refused" "$(cat "$T/err")"; fi
rm -f "$Q"
tap_end
