#!/usr/bin/env bash
# CLI tests: tests/cli/test-cli.sh BUILD_DIR   (runs BUILD_DIR/vbas)
#
# Prints TAP ("ok N - ...", "not ok N - ...", "1..N"); exits non-zero if
# any check failed.  Works in its own temporary directory, removed on exit
# together with any background process it started.
set -euo pipefail

BUILD=${1:?usage: $0 BUILD_DIR}
TESTS=$(cd "$(dirname "$0")/.." && pwd)
VBAS=$(cd "$BUILD" && pwd)/vbas
if [ ! -x "$VBAS" ]; then
	echo "Bail out! $VBAS is not built"
	exit 1
fi
command -v python3 >/dev/null || { echo "Bail out! python3 is needed"; exit 1; }

T=$(mktemp -d "${TMPDIR:-/tmp}/vbas-cli.XXXXXX")
BG_PIDS=()
LOOPS=()     # loop devices attached
RO_MOUNTS=()   # read-only bind mounts
RO_LOOPS=()    # read-only loop devices
RO_IMMUTABLE=()  # files made immutable
cleanup() {
	local p
	for p in ${RO_MOUNTS[@]+"${RO_MOUNTS[@]}"}; do
		umount "$p" 2>/dev/null || umount -l "$p" 2>/dev/null || true
	done
	for p in ${RO_LOOPS[@]+"${RO_LOOPS[@]}"}; do
		losetup -d "$p" 2>/dev/null || true
	done
	for p in ${RO_IMMUTABLE[@]+"${RO_IMMUTABLE[@]}"}; do
		chattr -i "$p" 2>/dev/null || true
	done
	for p in ${BG_PIDS[@]+"${BG_PIDS[@]}"}; do
		kill -9 "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	mountpoint -q "$T/mnt" 2>/dev/null && umount "$T/mnt"
	for p in ${LOOPS[@]+"${LOOPS[@]}"}; do
		losetup -d "$p" 2>/dev/null || true
	done
	exec 3>&- 2>/dev/null || true
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
cd "$T"

KiB=1024
MiB=$((1024 * 1024))

# ---- TAP helpers --------------------------------------------------------

. "$TESTS/tap.sh"

# expect_fail DESC EXIT STDERR_REGEX CMD...: exit status EXIT, stderr's
# first line "vbas: ..." matching the (extended) regex, nothing on stdout.
expect_fail() {
	local d=$1 want=$2 re=$3
	shift 3
	run "$@"
	local first
	first=$(head -n 1 "$T/err")
	if [ "$RC" -eq "$want" ] && [[ $first == "vbas: "* ]] &&
		grep -Eq -- "$re" "$T/err" && [ ! -s "$T/out" ] && sanitizer_clean; then
		pass "$d"
	else
		fail "$d" "want exit $want and stderr ~ /$re/; got exit $RC: $*" \
			"stderr: $(cat "$T/err")" "stdout: $(head -c 300 "$T/out")"
	fi
}

# expect_stderr DESC EXACT_LINE CMD...: fails, stderr's first line is EXACT_LINE.
expect_stderr() {
	local d=$1 want=$2
	shift 2
	run "$@"
	if [ "$RC" -ne 0 ] && [ "$(head -n 1 "$T/err")" = "$want" ] && sanitizer_clean; then
		pass "$d"
	else
		fail "$d" "want: $want" "got exit $RC: $(cat "$T/err")"
	fi
}

# expect_out DESC REGEX CMD...: exit 0 and stdout matches REGEX.
expect_out() {
	local d=$1 re=$2
	shift 2
	run "$@"
	if [ "$RC" -eq 0 ] && grep -Eq -- "$re" "$T/out" && sanitizer_clean; then
		pass "$d"
	else
		fail "$d" "want exit 0 and stdout ~ /$re/; got exit $RC: $*" \
			"stdout: $(head -c 500 "$T/out")" "stderr: $(cat "$T/err")"
	fi
}

# expect_json_fail DESC PY_EXPR CMD...: exit 1, "vbas: ..." on stderr, and
# stdout is JSON for which the Python expression is true (parsed in d).
expect_json_fail() {
	local d=$1 expr=$2
	shift 2
	run "$@"
	if [ "$RC" -eq 1 ] && [[ $(head -n 1 "$T/err") == "vbas: "* ]] && sanitizer_clean &&
		json_holds "$expr"; then
		pass "$d"
	else
		fail "$d" "want exit 1 and: $expr; exit $RC: $*" "stdout: $(head -c 800 "$T/out")" \
			"stderr: $(cat "$T/err")" "python: $(cat "$T/pyerr" 2>/dev/null)"
	fi
}

# Byte-exact comparison of a volume range with a file.
# same_as FILE POOL VOL OFF LEN
same_as() {
	"$VBAS" read "$2" "$3" --offset "$4" --length "$5" >"$T/rb" && cmp "$1" "$T/rb"
}

zeros() { head -c "$1" /dev/zero; }
# write_stdin POOL VOL OFF FILE: vbas write with FILE on standard input.
write_stdin() { "$VBAS" write "$1" "$2" --offset "$3" <"$4"; }
# write_pipe POOL VOL OFF FILE: the same through a pipe, FILE given as "-".
# shellcheck disable=SC2002 # the pipe is the point: input of unknown length
write_pipe() { cat "$4" | "$VBAS" write "$1" "$2" --offset "$3" -; }
# map_merged POOL VOL: map --json with logically adjacent extents merged
# (the mapping tree may split a run into several records).
map_merged() {
	"$VBAS" map "$1" "$2" --json | python3 -c 'import json, sys
out = []
for e in json.load(sys.stdin)["extents"]:
    if out and out[-1]["offset"] + out[-1]["length"] == e["offset"]:
        out[-1]["length"] += e["length"]
    else:
        out.append(dict(e))
print(json.dumps(out))'
}
# info_and_list POOL: info --json, after saving list --json in $T/list.json.
info_and_list() { "$VBAS" list "$1" --json >"$T/list.json" && "$VBAS" info "$1" --json; }
random_file() { head -c "$2" /dev/urandom >"$1"; }
fsize() { stat -c %s "$1"; }

# ---- Help and usage -------------------------------------------------------

CMDS="format info create list delete resize write read discard reserve unreserve map check snapshot clone reflink dedupe unshare diff"

expect_out "vbas --help prints the usage" '^Usage: vbas' "$VBAS" --help
expect_out "vbas --help lists every command" 'discard' "$VBAS" --help
expect_out "vbas help prints the usage" '^Usage: vbas' "$VBAS" help
expect_out "vbas --version" "^vbas [0-9]+\.[0-9]+\.[0-9]+$" "$VBAS" --version
expect_out "vbas -V" "^vbas [0-9]+\.[0-9]+\.[0-9]+$" "$VBAS" -V
expect_out "vbas version" "^vbas [0-9]+\.[0-9]+\.[0-9]+$" "$VBAS" version
expect_fail "vbas version takes no arguments" 2 "^vbas: version: takes no arguments" \
	"$VBAS" version x
for c in $CMDS; do
	expect_out "vbas $c --help" "^Usage: vbas $c " "$VBAS" "$c" --help
	expect_out "vbas help $c" "^Usage: vbas $c " "$VBAS" help "$c"
done
expect_out "--help wins over a bad option value" '^Usage: vbas format' \
	"$VBAS" format --size 12Q --help
expect_fail "no command: usage error" 2 'no command' "$VBAS"
expect_fail "unknown command: usage error with a hint" 2 "frob: unknown command" "$VBAS" frob
expect_true "unknown command: hint names --help" grep -q -- '--help' "$T/err"
expect_fail "help for an unknown command" 2 "frob: unknown command" "$VBAS" help frob
expect_fail "unknown global option" 2 "--bogus: unknown option" "$VBAS" --bogus info x
expect_fail "unknown command option" 2 "^vbas: info: --bogus: unknown option" \
	"$VBAS" info x.img --bogus
expect_fail "unknown short option" 2 "^vbas: info: -x: unknown option" "$VBAS" info -x x.img
expect_fail "option of another command" 2 "^vbas: create: --json: not an option" \
	"$VBAS" create x.img a --size 4K --json
expect_fail "missing option value" 2 "^vbas: read: --offset: missing value" \
	"$VBAS" read x.img a --offset
expect_fail "value for a flag" 2 "^vbas: info: --json: takes no value" \
	"$VBAS" info x.img --json=1
expect_fail "missing POOL" 2 "^vbas: info: POOL: missing argument" "$VBAS" info
expect_fail "missing NAME" 2 "^vbas: create: NAME: missing argument" \
	"$VBAS" create x.img --size 4K
expect_fail "extra argument" 2 "^vbas: info: extra: unexpected argument" \
	"$VBAS" info x.img extra
expect_fail "--cache on a command that opens no pool" 2 "^vbas: format: --cache" \
	"$VBAS" --cache 1M format x.img --size 1M
expect_true "usage errors create no file" test ! -e x.img

# ---- format ---------------------------------------------------------------

P=pool.img
expect_ok "format a new file" "$VBAS" format $P --size 64M
expect_true "format created a 64 MiB file" test "$(fsize $P)" -eq $((64 * MiB))
expect_out "check: a freshly formatted pool is clean" '^clean' "$VBAS" check $P
expect_json "info --json: size, block size, no volumes" \
	'd["size"] == 64*2**20 and d["block_size"] == 4096 and d["volumes"] == 0 and d["data_used"] == 0' \
	"$VBAS" info $P --json
expect_json "info --json: the keys, in order" \
	'list(d)[:6] == ["size", "block_size", "data_used", "metadata_used", "free", "volumes"]' \
	"$VBAS" info $P --json
expect_json "info --json: free + used = size" \
	'd["free"] + d["data_used"] + d["metadata_used"] == d["size"] and 0 < d["free"] < d["size"]' \
	"$VBAS" info $P --json
expect_fail "format refuses an existing pool" 1 "^vbas: format: $P: .*already holds a vbas pool" \
	"$VBAS" format $P --size 32M
expect_json "the refused pool is untouched" 'd["size"] == 64*2**20' "$VBAS" info $P --json
expect_ok "create a volume before --force" "$VBAS" create $P old --size 1M
expect_ok "format --force overwrites" "$VBAS" format $P --size 32M --force
expect_json "the forced pool is new: 32M, no volumes" \
	'd["size"] == 32*2**20 and d["volumes"] == 0' "$VBAS" info $P --json
expect_json "the forced pool lists nothing" 'd == []' "$VBAS" list $P --json
expect_ok "format -s/-b/-f short options" "$VBAS" format $P -s 64M -b 8K -f
expect_json "block size 8K" 'd["block_size"] == 8192' "$VBAS" info $P --json
expect_ok "format with --block-size 64K" "$VBAS" format p64.img --size 64M --block-size 64K
expect_json "block size 64K" 'd["block_size"] == 65536 and d["size"] == 64*2**20' \
	"$VBAS" info p64.img --json
expect_ok "format with --block-size 1M" "$VBAS" format p1m.img --size 256M --block-size 1M
expect_ok "format with a KiB suffix" "$VBAS" format pk.img --size 65536KiB
expect_json "65536KiB is 64 MiB" 'd["size"] == 64*2**20' "$VBAS" info pk.img --json
expect_ok "format with a fractional size" "$VBAS" format pf.img --size 1.5M
expect_json "1.5M is 1,572,864 bytes" 'd["size"] == 1572864' "$VBAS" info pf.img --json
expect_fail "a fraction that is not whole bytes" 2 \
	"^vbas: format: --size: invalid size '0.1K': not a whole number of bytes" \
	"$VBAS" format pf2.img --size 0.1K
expect_fail "a fraction without a unit" 2 \
	"^vbas: format: --size: invalid size '1.5': a fraction needs a unit" \
	"$VBAS" format pf2.img --size 1.5
expect_ok "format with a lower-case suffix" "$VBAS" format pk.img --size 1g --force
expect_json "1g is 1 GiB" 'd["size"] == 2**30' "$VBAS" info pk.img --json
for bad in 12Q "" -5 1.5 1. 0.1K 1.99999999999999999999G 99999999999999999999 16777216T 10KQ " 5" 0x10; do
	expect_fail "format: bad size '$bad'" 2 "^vbas: format: --size: invalid size" \
		"$VBAS" format bad.img --size "$bad"
done
expect_fail "format: size 0" 2 "^vbas: format: --size: .*must not be 0" \
	"$VBAS" format bad.img --size 0
expect_fail "format: missing --size (a file)" 2 \
	"^vbas: format: --size: missing \(required for a file; a block device's own size is taken when it is not given\)" \
	"$VBAS" format bad.img
expect_true "bad sizes create no file" test ! -e bad.img
expect_fail "format: pool too small" 1 "^vbas: format: small.img: .*needs at least.*No space left" \
	"$VBAS" format small.img --size 64K
expect_fail "format: block size 3000" 1 "^vbas: format: bs.img: block size 3000: must be a power of two" \
	"$VBAS" format bs.img --size 64M --block-size 3000
expect_fail "format: block size 2M" 1 "block size 2097152: must be a power of two" \
	"$VBAS" format bs.img --size 64M --block-size 2M
expect_fail "format: block size 2K" 1 "block size 2048: must be a power of two" \
	"$VBAS" format bs.img --size 64M --block-size 2K
expect_fail "format: block size 0" 2 "^vbas: format: --block-size" \
	"$VBAS" format bs.img --size 64M --block-size 0
expect_fail "format: a directory" 1 "^vbas: format: $T: .*neither a regular file" \
	"$VBAS" format "$T" --size 64M
expect_fail "format: in a missing directory" 1 "No such file or directory" \
	"$VBAS" format nodir/p.img --size 64M
expect_true "failed formats create no file" test ! -e small.img -a ! -e bs.img -a ! -e nodir

# ---- format refuses what it would destroy; a failed format changes nothing --

sum() { sha256sum "$1" | cut -d' ' -f1; }
# The sizes this file system cannot hold: "8E" is past any file's size;
# "1E" also fails (EFBIG) where the file system's limit is lower (ext4).
BIG_SIZES=8E
if ! truncate -s 1E big-probe 2>/dev/null; then BIG_SIZES="1E 8E"; fi
rm -f big-probe

truncate -s 64M ext4.img
mkfs.ext4 -q -F -L vbasext4 ext4.img >/dev/null 2>&1
SUM=$(sum ext4.img)
expect_fail "format refuses an ext4 image file, naming it" 1 \
	"^vbas: format: ext4.img: holds ext4 file system, label \"vbasext4\", UUID [0-9a-f-]{36}: use --force" \
	"$VBAS" format ext4.img --size 64M
expect_true "... which is byte for byte as it was" test "$(sum ext4.img)" = "$SUM"
expect_true "... and a clean file system" e2fsck -fn ext4.img
expect_ok "format --force overwrites the ext4 image" "$VBAS" format ext4.img --size 64M --force
expect_out "... with a clean pool" '^clean' "$VBAS" check ext4.img

truncate -s 16M swap.img
mkswap -L vbasswap swap.img >/dev/null 2>&1
expect_fail "format refuses a swap signature" 1 \
	"^vbas: format: swap.img: holds swap signature, label \"vbasswap\", UUID [0-9a-f-]{36}: use --force" \
	"$VBAS" format swap.img --size 16M

random_file rnd.img $((4 * MiB))
SUM=$(sum rnd.img)
expect_fail "format refuses a file of data" 1 \
	"^vbas: format: rnd.img: holds data \(a non-zero byte at offset 0\) that is neither a known signature nor a vbas pool: use --force" \
	"$VBAS" format rnd.img --size 4M
expect_true "... which is byte for byte as it was" test "$(sum rnd.img)" = "$SUM"
for bad in $BIG_SIZES "64M --block-size 3000" "64M --block-size 2M" 64K; do
	# shellcheck disable=SC2086 # the options split
	expect_fail "a failed format --force --size $bad of a file of data" 1 "^vbas: format: rnd.img: " \
		"$VBAS" format rnd.img --force --size $bad
	expect_true "... leaves it byte for byte as it was" test "$(sum rnd.img)" = "$SUM"
done
expect_ok "format --force overwrites the file of data" "$VBAS" format rnd.img --size 4M --force
expect_out "... with a clean pool" '^clean' "$VBAS" check rnd.img

# One byte in the middle of a sparse 1 GiB file: found through its data
# extents, not by reading the whole file.
truncate -s 1G sparse.img
printf x | dd of=sparse.img bs=1 seek=$((333 * MiB + 7)) conv=notrunc status=none
expect_fail "format refuses a sparse file with one byte of data in its middle" 1 \
	"^vbas: format: sparse.img: holds data \(a non-zero byte at offset $((333 * MiB + 7))\)" \
	"$VBAS" format sparse.img --size 1G
rm -f sparse.img

truncate -s 128M long.img
expect_fail "format does not cut a longer file" 1 \
	"^vbas: format: long.img: is 134217728 bytes, more than --size 67108864: formatting would cut it short \(use --force\)" \
	"$VBAS" format long.img --size 64M
expect_true "... which keeps its size" test "$(fsize long.img)" -eq $((128 * MiB))
expect_ok "format --force cuts it" "$VBAS" format long.img --size 64M --force
expect_true "... to the pool's size" test "$(fsize long.img)" -eq $((64 * MiB))
truncate -s 64M zero.img
expect_ok "format takes an empty (all zero) file of its size without --force" \
	"$VBAS" format zero.img --size 64M
truncate -s 32M short.img
expect_ok "... and grows a shorter empty one" "$VBAS" format short.img --size 64M
expect_true "... to the pool's size" test "$(fsize short.img)" -eq $((64 * MiB))

random_file keep1m $MiB
expect_ok "a pool with a volume to keep" sh -c "'$VBAS' format keep.img --size 64M &&
	'$VBAS' create keep.img v --size 1M && '$VBAS' write keep.img v keep1m"
SUM=$(sum keep.img)
expect_fail "format refuses the pool" 1 "^vbas: format: keep.img: already holds a vbas pool \(use --force" \
	"$VBAS" format keep.img --size 64M
for bad in $BIG_SIZES "64M --block-size 3000" "64M --block-size 2M" 64K; do
	# shellcheck disable=SC2086 # the options split
	expect_fail "a failed format --force --size $bad of the pool" 1 "^vbas: format: keep.img: " \
		"$VBAS" format keep.img --force --size $bad
	expect_true "... leaves it byte for byte as it was" test "$(sum keep.img)" = "$SUM"
done
expect_true "... a pool that still reads the volume's data" same_as keep1m keep.img v 0 $MiB
expect_out "... and is clean" '^clean' "$VBAS" check keep.img
# Both superblocks' checksums broken, their magic kept.
printf '\0\0\0\0' | dd of=keep.img bs=1 seek=0 conv=notrunc status=none
printf '\0\0\0\0' | dd of=keep.img bs=1 seek=4096 conv=notrunc status=none
expect_fail "format refuses a pool whose superblocks are damaged" 1 \
	"^vbas: format: keep.img: holds a vbas pool that does not open \(.*\): use --force" \
	"$VBAS" format keep.img --size 64M
expect_ok "format --force overwrites the pool" "$VBAS" format keep.img --size 64M --force
expect_json "... which is new" 'd == []' "$VBAS" list keep.img --json

# A file system on a block device (a loop device over a file).
if [ "$(id -u)" -eq 0 ] && command -v losetup >/dev/null && LOOP=$(losetup --find --show ext4.img 2>/dev/null); then
	LOOPS+=("$LOOP")
	mkfs.ext4 -q -F -L vbasloop "$LOOP" >/dev/null 2>&1
	SUM=$(sum "$LOOP")
	expect_fail "format refuses an ext4 file system on a loop device, naming it" 1 \
		"^vbas: format: $LOOP: holds ext4 file system, label \"vbasloop\", UUID [0-9a-f-]{36}: use --force" \
		"$VBAS" format "$LOOP" --size 64M
	expect_fail "format --force refuses a --size larger than the device" 1 \
		"^vbas: format: $LOOP: the device holds 67108864 bytes, less than --size 134217728$" \
		"$VBAS" format "$LOOP" --size 128M --force
	expect_true "... the device is byte for byte as it was" test "$(sum "$LOOP")" = "$SUM"
	expect_true "... its file system checks clean" e2fsck -fn "$LOOP"
	mkdir -p "$T/mnt"
	expect_true "... and mounts" sh -c "mount '$LOOP' '$T/mnt' && umount '$T/mnt'"
	expect_ok "format --force overwrites the loop device" "$VBAS" format "$LOOP" --size 64M --force
	expect_out "... with a clean pool" '^clean' "$VBAS" check "$LOOP"
	expect_out "format --force of the device without --size: its own size" \
		"^formatted $LOOP: 64.0 MiB, block size 4096$" "$VBAS" format "$LOOP" --force
	expect_json "... the pool covers the device" 'd["size"] == 64 * 2**20' "$VBAS" info "$LOOP" --json
	expect_true "detach the loop device" losetup -d "$LOOP"
else
	pass "format of a loop device # SKIP needs root and losetup"
fi

# ---- info -----------------------------------------------------------------

expect_ok "reformat the pool" "$VBAS" format $P --size 64M --force
expect_out "info: text output names the block size" '^block size +4096 ' "$VBAS" info $P
expect_out "info: text output shows human units" '^size +67108864 +64\.0 MiB' "$VBAS" info $P
expect_stderr "info: a missing file" "vbas: info: nosuch.img: No such file or directory" \
	"$VBAS" info nosuch.img
expect_true "info: a missing file exits 1" test "$RC" -eq 1
random_file junk.img $((1 * MiB))
expect_fail "info: random bytes are not a pool" 1 "^vbas: info: junk.img: not a vbas pool" \
	"$VBAS" info junk.img
: >empty.img
expect_fail "info: an empty file is not a pool" 1 "^vbas: info: empty.img: not a vbas pool" \
	"$VBAS" info empty.img
expect_fail "info: a directory" 1 "^vbas: info: $T: " "$VBAS" info "$T"
expect_json "--cache before the command sets the cache" 'd["cache_blocks"] == 256' \
	"$VBAS" --cache 1M info $P --json
expect_json "--cache after the command sets the cache" 'd["cache_blocks"] == 512' \
	"$VBAS" info $P --cache 2M --json
expect_json "no --cache: the default cache" 'd["cache_blocks"] == 64*2**20 // 4096' \
	"$VBAS" info $P --json
expect_fail "--cache with a bad size" 2 "^vbas: info: --cache: invalid size" \
	"$VBAS" info $P --cache 12Q
expect_fail "check: a missing pool" 1 "^vbas: check: nosuch.img: No such file" "$VBAS" check nosuch.img
expect_fail "check: not a pool" 1 "^vbas: check: junk.img: not a vbas pool" "$VBAS" check junk.img
# --json: a JSON object with the error on stdout too.
expect_json_fail "check --json: a missing pool gives a JSON error" \
	'd == {"clean": False, "error": {"errno": "ENOENT", "message": "nosuch.img: No such file or directory"}}' \
	"$VBAS" check nosuch.img --json
expect_json_fail "check --json: not a pool" \
	'd["clean"] is False and d["error"]["errno"] == "EINVAL" and d["error"]["message"].startswith("junk.img: not a vbas pool")' \
	"$VBAS" check junk.img --json
for c in info list; do
	expect_json_fail "$c --json: a missing pool gives a JSON error" \
		'd == {"error": {"errno": "ENOENT", "message": "nosuch.img: No such file or directory"}}' \
		"$VBAS" $c nosuch.img --json
done
expect_json_fail "map --json: an unknown volume gives a JSON error" \
	'd == {"error": {"errno": "ENOENT", "message": "'$P': volume '"'nope'"' not found"}}' \
	"$VBAS" map $P nope --json
expect_json_fail "diff --json: a missing pool gives a JSON error" \
	'd["error"]["errno"] == "ENOENT"' "$VBAS" diff nosuch.img a b --json
expect_fail "list: not a pool" 1 "^vbas: list: junk.img: not a vbas pool" "$VBAS" list junk.img
expect_fail "create: not a pool" 1 "^vbas: create: junk.img: not a vbas pool" \
	"$VBAS" create junk.img a --size 4K
expect_fail "read: a missing pool" 1 "^vbas: read: nosuch.img: No such file" \
	"$VBAS" read nosuch.img a
expect_true "not-a-pool file is untouched" test "$(fsize junk.img)" -eq $((1 * MiB))

# ---- create and list --------------------------------------------------------

G=thin.img
expect_ok "format a 1G pool" "$VBAS" format $G --size 1G
expect_ok "create a 10G volume on a 1G pool" "$VBAS" create $G a --size 10G
expect_true "... notes that the pool is over-committed" grep -q \
	-E "^vbas: create: $G: note: the writable volumes add up to 10.0 GiB, more than the [0-9.]+ [MG]iB the pool holds \(10737418240 > [0-9]+ bytes\): it is over-committed" "$T/err"
expect_ok "create a second 10G volume" "$VBAS" create $G b --size 10G
expect_true "... 20 GiB now" grep -q "note: the writable volumes add up to 20.0 GiB" "$T/err"
O=over.img
expect_ok "no note while the volumes fit" sh -c "'$VBAS' format $O --size 64M >/dev/null && '$VBAS' create $O a --size 32M 2>over.err && test ! -s over.err"
expect_ok "... nor for a snapshot (read-only: it writes nothing)" sh -c "'$VBAS' snapshot $O a s 2>over.err && test ! -s over.err"
expect_ok "a clone that over-commits the pool" "$VBAS" clone $O a c
expect_true "... notes it" grep -q "^vbas: clone: $O: note: the writable volumes add up to 64.0 MiB, more than the" "$T/err"
expect_json "list --json: two volumes" \
	'[v["name"] for v in d] == ["a", "b"] and [v["size"] for v in d] == [10*2**30]*2 and [v["mapped"] for v in d] == [0, 0]' \
	"$VBAS" list $G --json
expect_json "list --json: distinct increasing ids" \
	'len(d) == 2 and 0 < d[0]["id"] < d[1]["id"]' "$VBAS" list $G --json
expect_json "info counts the volumes" 'd["volumes"] == 2 and d["data_used"] == 0' \
	"$VBAS" info $G --json
expect_out "list: text table, sizes human" '^a +[0-9]+ +10\.0 GiB +0 B +0\.0% +0 B +0 B +0 B +rw +-$' "$VBAS" list $G
expect_out "list --bytes: sizes in bytes" '^a +[0-9]+ +10737418240 +0 +0\.0% ' "$VBAS" list $G --bytes
expect_out "list -o name,size --raw --noheadings --bytes" '^a 10737418240$' \
	"$VBAS" list $G -o name,size --raw --noheadings --bytes
expect_out "list -o +owed: the defaults and OWED" '^NAME +ID +SIZE +MAPPED +DATA% +EXCLUSIVE +SHARED +RESERVED +RO +ORIGIN +OWED$' \
	"$VBAS" list $G -o +owed
expect_out "list --output takes JSON keys too" '^NAME +DATA%$' "$VBAS" list $G --output name,data_percent
# (expect_json and jget see a table's rows: the object itself is read here.)
json_raw() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2]) else 1)' "$@"; }
"$VBAS" list $G --json >list-raw.json
expect_true "list --json: vbas_format 1 and the rows under volumes" json_raw list-raw.json \
	'd["vbas_format"] == 1 and list(d) == ["vbas_format", "volumes"] and [v["name"] for v in d["volumes"]] == ["a", "b"]'
expect_json "list -o name --json: that column only" 'd == [{"name": "a"}, {"name": "b"}]' "$VBAS" list $G -o name --json
expect_fail "list -o with an unknown column" 2 \
	"^vbas: list: --output: unknown column 'nope' \(columns: NAME ID SIZE MAPPED DATA% EXCLUSIVE SHARED RESERVED OWED RO EXPENDABLE ORIGIN\)$" \
	"$VBAS" list $G -o name,nope
expect_fail "list -o ''" 2 "^vbas: list: --output: no columns$" "$VBAS" list $G -o ''
expect_fail "--raw is not an option of create" 2 "^vbas: create: --raw: not an option of 'create'" \
	"$VBAS" create $G c --size 1M --raw
expect_out "list: text header" '^NAME +ID +SIZE +MAPPED' "$VBAS" list $G
expect_stderr "create: a duplicate name" "vbas: create: $G: volume 'a' already exists" \
	"$VBAS" create $G a --size 4K
expect_fail "create: a name with '/'" 1 "^vbas: create: $G: .*'/'" "$VBAS" create $G x/y --size 4K
expect_fail "create: an empty name" 1 "^vbas: create: $G: .*empty" "$VBAS" create $G "" --size 4K
N255=$(printf 'n%.0s' $(seq 255))
N256=${N255}x
expect_fail "create: a 256-byte name" 1 "^vbas: create: $G: .*256 bytes.*255" \
	"$VBAS" create $G "$N256" --size 4K
expect_ok "create: a 255-byte name" "$VBAS" create $G "$N255" --size 4K
expect_json "list: the 255-byte name" "d[-1]['name'] == 'n' * 255 and d[-1]['size'] == 4096" \
	"$VBAS" list $G --json
# Names every front end can carry: UTF-8 without control characters.
expect_fail "create: a name that is not UTF-8" 1 \
	"^vbas: create: $G: volume name 'x\\\\xff\\\\xfe' is not valid UTF-8 \\(byte 1\\)" \
	"$VBAS" create $G $'x\xff\xfe' --size 4K
expect_fail "create: an overlong UTF-8 form" 1 "^vbas: create: $G: .*is not valid UTF-8 \\(byte 0\\)" \
	"$VBAS" create $G $'\xc0\xaf' --size 4K
expect_fail "create: a UTF-16 surrogate" 1 "^vbas: create: $G: .*is not valid UTF-8" \
	"$VBAS" create $G $'\xed\xa0\x80' --size 4K
expect_fail "create: a tab" 1 "^vbas: create: $G: .*holds a control character \\(byte 1\\)" \
	"$VBAS" create $G $'a\tb' --size 4K
expect_fail "create: a newline" 1 "^vbas: create: $G: .*holds a control character" \
	"$VBAS" create $G $'a\nb' --size 4K
expect_fail "create: DEL" 1 "^vbas: create: $G: .*holds a control character" \
	"$VBAS" create $G $'a\x7f' --size 4K
expect_fail "create: a C1 control (U+0085)" 1 "^vbas: create: $G: .*holds a control character" \
	"$VBAS" create $G $'a\xc2\x85' --size 4K
expect_fail "snapshot: a name that is not UTF-8" 1 "^vbas: snapshot: $G: .*is not valid UTF-8" \
	"$VBAS" snapshot $G a $'s\xff'
expect_fail "clone: a control character" 1 "^vbas: clone: $G: .*holds a control character" \
	"$VBAS" clone $G a $'c\x01'
expect_json "the refused names made nothing" "len(d) == 3" "$VBAS" list $G --json
expect_ok "create: a UTF-8 name" "$VBAS" create $G 'disque-été-日本' --size 4K
expect_json "list --json: the UTF-8 name as it is, not escaped byte by byte" \
	"d[-1]['name'] == 'disque-été-日本'" "$VBAS" list $G --json
expect_ok "delete the UTF-8 name" "$VBAS" delete $G 'disque-été-日本' --yes
# rename: the same volume (id, data) under a new name.
expect_ok "rename: create volume 'old' and write it" \
	bash -c "'$VBAS' create $G old --size 64K && head -c 8192 /dev/urandom >ren.bin && '$VBAS' write $G old ren.bin"
OLDID=$(jget "[v['id'] for v in d if v['name'] == 'old'][0]" "$VBAS" list $G --json)
expect_ok "rename: old to nouveau-é" "$VBAS" rename $G old 'nouveau-é'
expect_json "rename: the same id under the new name, the old name gone" \
	"[v['id'] for v in d if v['name'] == 'nouveau-é'] == [$OLDID] and not [v for v in d if v['name'] == 'old']" \
	"$VBAS" list $G --json
expect_true "rename: the data is the volume's still" \
	bash -c "'$VBAS' read $G 'nouveau-é' --length 8192 | cmp - ren.bin"
expect_fail "rename: an unknown volume" 1 "^vbas: rename: $G: volume 'old' not found" \
	"$VBAS" rename $G old x
expect_fail "rename: to a name that is taken" 1 "^vbas: rename: $G: volume 'a' already exists" \
	"$VBAS" rename $G 'nouveau-é' a
expect_fail "rename: to a name with a control character" 1 \
	"^vbas: rename: $G: volume name 'x\\\\x01' holds a control character" \
	"$VBAS" rename $G 'nouveau-é' $'x\x01'
expect_fail "rename: to '/'" 1 "^vbas: rename: $G: .*'/'" "$VBAS" rename $G 'nouveau-é' a/b
expect_fail "rename: a missing argument" 2 "^vbas: rename: NEW: missing" "$VBAS" rename $G 'nouveau-é'
expect_ok "rename: to its own name changes nothing" "$VBAS" rename $G 'nouveau-é' 'nouveau-é'
expect_ok "rename: check is clean (the name index follows)" "$VBAS" check $G
expect_ok "rename: delete it by its new name" "$VBAS" delete $G 'nouveau-é' --yes
rm -f ren.bin
expect_fail "create: size not a multiple of the block size" 1 \
	"^vbas: create: $G: .*5000 is not a multiple of the block size" "$VBAS" create $G c --size 5000
expect_fail "create: size 0" 1 "^vbas: create: $G: .*must not be 0" "$VBAS" create $G c --size 0
expect_fail "create: size over the limit" 1 "^vbas: create: $G: .*above the limit" \
	"$VBAS" create $G c --size 2E
expect_fail "create: bad size" 2 "^vbas: create: --size: invalid size '12Q'" \
	"$VBAS" create $G c --size 12Q
expect_fail "create: missing --size" 2 "^vbas: create: --size: missing" "$VBAS" create $G c
expect_json "failed creates added nothing" 'len(d) == 3' "$VBAS" list $G --json
# Quotes, backslashes and UTF-8 in a name (controls and bytes that are not
# UTF-8 are refused above; JSON escapes what it must).
WEIRD=$'q"b\\s\xc3\xa9'
expect_ok "create: a name with quotes, a backslash and UTF-8" "$VBAS" create $G "$WEIRD" --size 4K
expect_json "list --json escapes the name" \
	"d[-1]['name'] == 'q\"b\\\\s\\u00e9'" "$VBAS" list $G --json
expect_true "list --json is plain ASCII or UTF-8" \
	python3 -c 'import sys; open(sys.argv[1], "rb").read().decode("utf-8")' "$T/out"
expect_ok "write to the weirdly named volume" "$VBAS" write $G "$WEIRD" /dev/null
expect_ok "delete the weirdly named volume" "$VBAS" delete --yes $G "$WEIRD"
expect_ok "delete the 255-byte name" "$VBAS" delete --yes $G "$N255"

# ---- write and read ---------------------------------------------------------

W=io.img
expect_ok "format the I/O pool" "$VBAS" format $W --size 64M
expect_ok "create volume v (16M)" "$VBAS" create $W v --size 16M
expect_ok "create volume m (1M)" "$VBAS" create $W m --size 1M
FREE0=$(jget 'd["free"]' "$VBAS" info $W --json)
random_file d1m $MiB
expect_ok "write 1M from a file" "$VBAS" write $W v d1m
expect_true "read 1M back byte-identical" same_as d1m $W v 0 $MiB
expect_json "mapped is exactly 1M" '[v["mapped"] for v in d if v["name"] == "v"] == [2**20]' \
	"$VBAS" list $W --json
random_file d5000 5000
expect_ok "write 5000 bytes" "$VBAS" write $W m d5000
expect_json "5000 bytes map two 4K blocks" '[v["mapped"] for v in d if v["name"] == "m"] == [8192]' \
	"$VBAS" list $W --json
expect_true "5000 bytes read back" same_as d5000 $W m 0 5000
zeros 3192 >z3192
expect_true "the rest of the second block reads as zeros" same_as z3192 $W m 5000 3192
random_file d12345 12345
expect_ok "write 12345 bytes at offset 2M+4097 from stdin" \
	write_stdin $W v $((2 * MiB + 4097)) d12345
expect_true "unaligned write reads back" same_as d12345 $W v $((2 * MiB + 4097)) 12345
zeros 4097 >z4097
expect_true "bytes before the unaligned write are zeros" same_as z4097 $W v $((2 * MiB)) 4097
zeros 3942 >z3942
expect_true "bytes after the unaligned write are zeros" same_as z3942 $W v $((2 * MiB + 16442)) 3942
expect_json "unaligned 12345 bytes map 4 blocks" \
	'[v["mapped"] for v in d if v["name"] == "v"] == [2**20 + 4*4096]' "$VBAS" list $W --json
expect_true "the first 1M is still intact" same_as d1m $W v 0 $MiB
random_file d3m5 $((3 * MiB + 5))
expect_ok "write 3M+5 bytes from a pipe" write_pipe $W v 4M d3m5
expect_true "piped write reads back" same_as d3m5 $W v $((4 * MiB)) $((3 * MiB + 5))
expect_ok "read to a FILE" "$VBAS" read $W v --offset 4M --length $((3 * MiB + 5)) out.bin
expect_true "FILE holds the data" cmp d3m5 out.bin
expect_true "read to a FILE prints nothing" test ! -s "$T/out"
expect_ok "read the whole volume" "$VBAS" read $W v whole.bin
expect_true "default length is the whole volume" test "$(fsize whole.bin)" -eq $((16 * MiB))
expect_ok "read from 15M to the end" "$VBAS" read $W v --offset 15M tail.bin
expect_true "default length is size - offset" test "$(fsize tail.bin)" -eq $((1 * MiB))
zeros $MiB >z1m
expect_true "the unwritten tail reads as zeros" cmp z1m tail.bin
zeros $((64 * KiB)) >z64k
expect_true "a hole reads as zeros" same_as z64k $W v $((8 * MiB)) $((64 * KiB))
expect_ok "read at offset == size is empty" "$VBAS" read $W v --offset 16M
expect_true "... and prints nothing" test ! -s "$T/out"
expect_ok "read -o/-l short options" "$VBAS" read $W v -o 1K -l 1K
expect_true "... gives 1K" test "$(fsize "$T/out")" -eq 1024
expect_fail "read: offset past the end" 1 "^vbas: read: v: offset 16781312 is past the end" \
	"$VBAS" read $W v --offset $((16 * MiB + 4096))
expect_fail "read: length past the end" 1 "^vbas: read: v: range .* is past the end" \
	"$VBAS" read $W v --offset 15M --length $((MiB + 1))
expect_fail "read: length past the end from 0" 1 "past the end" \
	"$VBAS" read $W v --length 17M
expect_fail "read: bad --length" 2 "^vbas: read: --length: invalid size '-1'" \
	"$VBAS" read $W v --length -1
expect_fail "read: bad --offset" 2 "^vbas: read: --offset: invalid size '1,5K'" \
	"$VBAS" read $W v --offset 1,5K
expect_fail "read: unknown volume" 1 "^vbas: read: $W: volume 'nope' not found" \
	"$VBAS" read $W nope
expect_fail "read: output into a missing directory" 1 "^vbas: read: nodir/out: No such file" \
	"$VBAS" read $W v nodir/out
USED1=$(jget 'd["data_used"]' "$VBAS" info $W --json)
MAPV=$(jget '[v["mapped"] for v in d if v["name"] == "v"][0]' "$VBAS" list $W --json)
random_file d200 200
expect_fail "write: past the end" 1 "^vbas: write: v: write of 200 bytes at offset 16777116 .*past the end" \
	"$VBAS" write $W v --offset $((16 * MiB - 100)) d200
zeros 4096 >z4096
expect_true "a write past the end changed nothing" same_as z4096 $W v $((16 * MiB - 4096)) 4096
expect_fail "write: offset past the end" 1 "^vbas: write: v: offset .* is past the end" \
	"$VBAS" write $W v --offset 17M d200
expect_fail "write: a missing input file" 1 "^vbas: write: nosuch.bin: No such file" \
	"$VBAS" write $W v nosuch.bin
expect_fail "write: unknown volume" 1 "^vbas: write: $W: volume 'nope' not found" \
	"$VBAS" write $W nope d200
expect_ok "write: empty input" "$VBAS" write $W v /dev/null
expect_json "failed and empty writes mapped nothing" \
	"d['data_used'] == $USED1" "$VBAS" info $W --json
expect_json "mapped is unchanged" "[v['mapped'] for v in d if v['name'] == 'v'] == [$MAPV]" \
	"$VBAS" list $W --json
expect_json "free went down by what was written" \
	"d['free'] < $FREE0 and $FREE0 - d['free'] >= d['data_used']" "$VBAS" info $W --json
expect_json "data_used is the sum of mapped" \
	"d['data_used'] == sum(v['mapped'] for v in json.loads(open('$T/list.json').read())['volumes'])" \
	info_and_list $W

# ---- sparse write and read ------------------------------------------------------
# The source's holes and blocks of zeros become holes; read writes a file as
# sparse as the volume, and every byte into a pipe.
SP=sparse.img
expect_ok "format the sparse pool" "$VBAS" format $SP --size 512M
expect_ok "create volume s (256M)" "$VBAS" create $SP s --size 256M
truncate -s 200M src.img
head -c $MiB /dev/urandom | dd of=src.img bs=1M seek=1 conv=notrunc status=none
head -c $MiB /dev/urandom | dd of=src.img bs=1M seek=150 conv=notrunc status=none
dd if=/dev/zero of=src.img bs=1M seek=100 count=3 conv=notrunc status=none
expect_true "the source: 200M, 5M of it allocated (3M of them zeros)" \
	test "$(stat -c %s src.img)" = $((200 * MiB)) -a $(($(stat -c %b src.img) * 512)) -ge $((5 * MiB))
expect_ok "write: a sparse 200M file" "$VBAS" write $SP s src.img
expect_json "write: only its 2M of data is mapped, not its hole nor its zeros" \
	"d[0]['mapped'] == 2 * 2**20" "$VBAS" list $SP --json
expect_ok "read: into a file" "$VBAS" read $SP s out.img --length $((200 * MiB))
expect_true "read: the file is the source, byte for byte" cmp out.img src.img
expect_true "read: the file is sparse (2M allocated, give or take a block)" \
	test $(($(stat -c %b out.img) * 512)) -le $((2 * MiB + 65536))
expect_true "read: into a pipe, every byte" \
	bash -c "'$VBAS' read $SP s --length $((200 * MiB)) | cmp - src.img"
expect_ok "write: 100M of zeros from a pipe over the first MiB of data" \
	bash -c "head -c 100M /dev/zero | '$VBAS' write $SP s --offset $MiB"
expect_json "write: zeros map nothing, and unmap what was there" \
	"d[0]['mapped'] == 2**20" "$VBAS" list $SP --json
cp src.img want.img
dd if=/dev/zero of=want.img bs=1M seek=1 count=100 conv=notrunc status=none
expect_true "read: zeros where the zeros went, the rest as it was" \
	bash -c "'$VBAS' read $SP s --length $((200 * MiB)) | cmp - want.img"
# A disk image given to write: a warning, and its bytes as they are.
{ printf 'QFI\373\0\0\0\3'; head -c 65528 /dev/urandom; } >fake.qcow2
expect_ok "write of a qcow2 image: done" sh -c "'$VBAS' create $SP img --size 1M && '$VBAS' write $SP img fake.qcow2"
expect_true "... with a warning that names the format and import" grep -q \
	"^vbas: write: fake.qcow2: warning: this looks like a qcow2 image: its bytes are written as they are, a raw copy of the file ('vbas import' converts an image into a volume)$" "$T/err"
expect_true "... its bytes as they are" same_as fake.qcow2 $SP img 0 65536
expect_ok "... from a pipe: no warning (nothing is read ahead)" sh -c "cat fake.qcow2 | '$VBAS' write $SP img"
expect_ok "... (the volume goes)" "$VBAS" delete -y $SP img
expect_true "... none" test ! -s "$T/err"
# Blocks written in part are written as they are, zeros included.
{ head -c 10000 /dev/zero; head -c 5000 /dev/urandom; } >part.bin
expect_ok "write: zeros and data at an unaligned offset" "$VBAS" write $SP s part.bin --offset 1000
dd if=part.bin of=want.img bs=1 seek=1000 conv=notrunc status=none
expect_true "read: the unaligned write, byte for byte" \
	bash -c "'$VBAS' read $SP s --length $((200 * MiB)) | cmp - want.img"
# (Bytes 1000-15999: blocks 0 and 3 in part, block 2 zeros then data,
# block 1 all zeros.)
expect_json "write: its one whole block of zeros is not mapped, the other three are" \
	"d[0]['mapped'] == 2**20 + 3 * 4096" "$VBAS" list $SP --json
expect_ok "read: into a file that is appended to (not sparse, every byte)" \
	bash -c "'$VBAS' read $SP s --length $MiB >>app.img"
expect_true "read: the appended copy is the first MiB" \
	bash -c "head -c $MiB want.img | cmp - app.img"
expect_ok "check: the sparse pool is clean" "$VBAS" check $SP
rm -f src.img out.img want.img part.bin app.img $SP

# ---- discard ----------------------------------------------------------------

cp d1m exp1m
dd if=/dev/zero of=exp1m bs=256K seek=1 count=1 conv=notrunc status=none
expect_ok "discard an aligned range" "$VBAS" discard $W v --offset 256K --length 256K
expect_true "discarded range reads as zeros, the rest intact" same_as exp1m $W v 0 $MiB
expect_json "discard lowered mapped by 256K" \
	"[v['mapped'] for v in d if v['name'] == 'v'] == [$MAPV - 262144]" "$VBAS" list $W --json
expect_json "map --json: extents after writes and discard" \
	'sorted((e["offset"], e["length"]) for e in d) == [(0, 262144), (524288, 524288), (2101248, 16384), (4194304, 3145728 + 4096)]' \
	map_merged $W v
expect_json "map --json: sorted, block-aligned, inside the pool, no flags" \
	'all(e["offset"] % 4096 == 0 and e["length"] % 4096 == 0 and e["length"] > 0 and e["physical"] % 4096 == 0 and 0 < e["physical"] < 64*2**20 and not e["shared"] and not e["reserved"] for e in d) and [e["offset"] for e in d] == sorted(e["offset"] for e in d)' \
	"$VBAS" map $W v --json
expect_json "map --json: total length is mapped" \
	"sum(e['length'] for e in d) == $MAPV - 262144" "$VBAS" map $W v --json
expect_out "map: text output" '^ +0 +256\.0 KiB +[0-9]+ +- +-$' "$VBAS" map $W v
expect_out "map --bytes --raw --noheadings" '^0 262144 [0-9]+ - -$' "$VBAS" map $W v --bytes --raw --noheadings
"$VBAS" map $W v --json >map-raw.json
expect_true "map --json: vbas_format and extents" json_raw map-raw.json \
	'd["vbas_format"] == 1 and list(d) == ["vbas_format", "extents"] and list(d["extents"][0]) == ["offset", "length", "physical", "shared", "reserved"]'
expect_ok "create an empty volume e" "$VBAS" create $W e --size 1M
expect_json "map of an empty volume" 'd == []' "$VBAS" map $W e --json
expect_fail "discard: unaligned offset" 1 "^vbas: discard: $W: .*not aligned" \
	"$VBAS" discard $W v --offset 1000 --length 4096
expect_fail "discard: unaligned length" 1 "not aligned" "$VBAS" discard $W v --offset 0 --length 5000
expect_fail "discard: past the end" 1 "^vbas: discard: $W: .*past the end" \
	"$VBAS" discard $W v --offset 16M --length 4K
expect_fail "discard: missing --length" 2 "^vbas: discard: --length: missing" \
	"$VBAS" discard $W v --offset 0
expect_fail "discard: unknown volume" 1 "volume 'nope' not found" \
	"$VBAS" discard $W nope --offset 0 --length 4K
expect_true "failed discards changed nothing" same_as exp1m $W v 0 $MiB
expect_ok "discard a hole" "$VBAS" discard $W v --offset 12M --length 1M

# ---- resize -----------------------------------------------------------------

random_file r1m $MiB
expect_ok "create volume r" "$VBAS" create $W r --size 1M
expect_ok "fill r" "$VBAS" write $W r r1m
USED_R=$(jget 'd["data_used"]' "$VBAS" info $W --json)
expect_ok "shrink r to 512K" "$VBAS" resize --yes $W r --size 512K
expect_json "shrinking freed the blocks past the end" \
	'[(v["size"], v["mapped"]) for v in d if v["name"] == "r"] == [(524288, 524288)]' \
	"$VBAS" list $W --json
expect_json "data_used dropped by 512K" "d['data_used'] == $USED_R - 524288" "$VBAS" info $W --json
expect_fail "read past the new end" 1 "past the end" "$VBAS" read $W r --offset 512K --length 1
head -c $((512 * KiB)) r1m >r512k
expect_true "the kept half is intact" same_as r512k $W r 0 $((512 * KiB))
expect_ok "grow r back to 1M" "$VBAS" resize --yes $W r --size 1M
zeros $((512 * KiB)) >z512k
expect_true "the regrown half reads as zeros" same_as z512k $W r $((512 * KiB)) $((512 * KiB))
expect_ok "grow r past the pool (thin)" "$VBAS" resize --yes $W r --size 100G
expect_json "r is 100G" '[v["size"] for v in d if v["name"] == "r"] == [100*2**30]' \
	"$VBAS" list $W --json
expect_fail "resize: not a multiple of the block size" 1 "not a multiple of the block size" \
	"$VBAS" resize --yes $W r --size 5000
expect_fail "resize: size 0" 1 "must not be 0" "$VBAS" resize --yes $W r --size 0
expect_fail "resize: unknown volume" 1 "^vbas: resize: $W: volume 'nope' not found" \
	"$VBAS" resize --yes $W nope --size 1M
expect_fail "resize: missing --size" 2 "^vbas: resize: --size: missing" "$VBAS" resize --yes $W r
expect_ok "resize --size -99G: shrinks by 99 GiB" "$VBAS" resize --yes $W r --size -99G
expect_json "r is 1G" '[v["size"] for v in d if v["name"] == "r"] == [2**30]' "$VBAS" list $W --json
expect_ok "resize --size +1.5M: grows by 1.5 MiB" "$VBAS" resize $W r --size +1.5M
expect_json "r is 1G + 1.5M" '[v["size"] for v in d if v["name"] == "r"] == [2**30 + 3 * 2**19]' \
	"$VBAS" list $W --json
expect_out "resize -s -512K --dry-run: from the size it has" \
	"^would shrink volume 'r' from 1075314688 to 1074790400 bytes, dropping the 0 bytes" \
	"$VBAS" resize $W r -s -512K --dry-run
expect_fail "resize --size -SIZE as large as the volume" 2 \
	"^vbas: resize: --size: -1075314688 leaves nothing of volume 'r' \(1075314688 bytes\)" \
	"$VBAS" resize --yes $W r --size -1075314688
expect_fail "resize --size +0" 2 "^vbas: resize: --size: \+0 changes nothing" "$VBAS" resize $W r --size +0
expect_fail "resize --size -0" 2 "^vbas: resize: --size: -0 changes nothing" "$VBAS" resize $W r --size -0
expect_fail "resize --size +SIZE past 2^64" 2 "^vbas: resize: --size: \+.* is past 2\^64" \
	"$VBAS" resize $W r --size +17179869183G
expect_fail "resize --size -SIZE of an unknown volume" 1 "^vbas: resize: $W: volume 'nope' not found" \
	"$VBAS" resize --yes $W nope --size -1M
expect_fail "resize --size --1M" 2 "^vbas: resize: --size: " "$VBAS" resize --yes $W r --size --1M
expect_ok "resize r back to 100G" "$VBAS" resize --yes $W r --size 100G

# ---- delete -----------------------------------------------------------------

USED_BEFORE_D=$(jget 'd["data_used"]' "$VBAS" info $W --json)
NVOL=$(jget 'd["volumes"]' "$VBAS" info $W --json)
expect_ok "create volume d" "$VBAS" create $W d --size 4M
OLD_ID=$(jget '[v["id"] for v in d if v["name"] == "d"][0]' "$VBAS" list $W --json)
head -c $((2 * MiB)) d3m5 >d2m
expect_ok "write 2M into d" write_pipe $W d 0 d2m
expect_json "d's data is counted" "d['data_used'] == $USED_BEFORE_D + 2*2**20" "$VBAS" info $W --json
expect_ok "delete d" "$VBAS" delete --yes $W d
expect_json "d is gone from the list" '"d" not in [v["name"] for v in d]' "$VBAS" list $W --json
expect_json "delete gave the space back" "d['data_used'] == $USED_BEFORE_D and d['volumes'] == $NVOL" \
	"$VBAS" info $W --json
expect_fail "delete: again" 1 "^vbas: delete: $W: volume 'd' not found" "$VBAS" delete --yes $W d
expect_fail "delete: unknown volume" 1 "volume 'nope' not found" "$VBAS" delete --yes $W nope
expect_fail "delete: missing NAME" 2 "^vbas: delete: NAME: missing argument" "$VBAS" delete --yes $W
expect_ok "create d again" "$VBAS" create $W d --size 4M

# ---- delete and shrink ask first ----------------------------------------------

# tty CMD...: CMD with a terminal for its standard input, the answer
# (from tty's own standard input) typed in; its output in $T/out, status RC.
tty() {
	local e=$-
	set +e
	script -qec "$(printf '%q ' "$@")" /dev/null >"$T/out" 2>&1
	RC=$?
	[[ $e == *e* ]] && set -e
	return 0
}
random_file c1m $MiB
expect_ok "a volume to ask about" sh -c "'$VBAS' create $W c --size 4M && '$VBAS' write $W c c1m"
LOST="volume 'c' \(4194304 bytes\) and the 1048576 bytes mapped in it \(1\.0 MiB\)"
CUT="shrink volume 'c' from 4194304 to 524288 bytes, dropping the 524288 bytes mapped past 524288 \(512\.0 KiB\)"
c_whole() { same_as c1m $W c 0 $MiB && test "$(jget '[v["size"] for v in d if v["name"] == "c"]' "$VBAS" list $W --json)" = "[4194304]"; }
expect_fail "delete without a terminal nor --yes is refused" 1 \
	"^vbas: delete: $W: would delete $LOST: not done without confirmation \(standard input is not a terminal\): give --yes" \
	"$VBAS" delete $W c </dev/null
expect_fail "shrink without a terminal nor --yes is refused" 1 \
	"^vbas: resize: $W: would $CUT: not done without confirmation" \
	"$VBAS" resize $W c --size 512K </dev/null
expect_true "... the volume is whole" c_whole
expect_out "delete --dry-run names the loss" "^would delete $LOST; nothing changed \(--dry-run\)$" \
	"$VBAS" delete $W c --dry-run
expect_out "resize --dry-run names the loss" "^would $CUT; nothing changed \(--dry-run\)$" \
	"$VBAS" resize $W c --size 512K --dry-run
expect_out "resize --dry-run of a growth: nothing is lost" \
	"^would grow volume 'c' from 4194304 to 8388608 bytes: nothing is lost" \
	"$VBAS" resize $W c --size 8M --dry-run --yes
expect_true "... the volume is whole" c_whole
if command -v script >/dev/null; then
	tty "$VBAS" delete $W c <<<"n"
	expect_true "delete on a terminal asks, naming the loss; 'n' keeps the volume" \
		sh -c "[ $RC -eq 1 ] && grep -Eq \"delete $LOST\\? \\[y/N\\]\" '$T/out' && grep -q 'not confirmed: nothing changed' '$T/out'"
	tty "$VBAS" resize $W c --size 512K <<<""
	expect_true "shrink on a terminal asks; an empty answer keeps the volume" \
		sh -c "[ $RC -eq 1 ] && grep -Eq \"$CUT\\? \\[y/N\\]\" '$T/out'"
	expect_true "... the volume is whole" c_whole
	tty "$VBAS" resize $W c --size 512K <<<"y"
	expect_true "shrink on a terminal, 'y': done" sh -c "[ $RC -eq 0 ]"
	expect_json "... the volume is cut" \
		'[(v["size"], v["mapped"]) for v in d if v["name"] == "c"] == [(524288, 524288)]' \
		"$VBAS" list $W --json
	head -c $((512 * KiB)) c1m >c512k
	expect_true "... and keeps its first 512K" same_as c512k $W c 0 $((512 * KiB))
	tty "$VBAS" delete $W c <<<"yes"
	expect_true "delete on a terminal, 'yes': done" sh -c "[ $RC -eq 0 ]"
	expect_json "... the volume is gone" '"c" not in [v["name"] for v in d]' "$VBAS" list $W --json
else
	pass "delete and resize on a terminal # SKIP needs script (util-linux)"
	"$VBAS" delete --yes $W c
fi

# ---- rollback, and a volume made read-only -----------------------------------------------

RB=rollback.img
random_file rb4m $((4 * MiB))
random_file rb1m $MiB
"$VBAS" format $RB --size 256M >/dev/null && "$VBAS" create $RB v --size 16M && "$VBAS" write $RB v rb4m &&
	"$VBAS" snapshot $RB v s && "$VBAS" write $RB v --offset 8M rb1m || echo "# rollback pool failed"
expect_out "rollback --dry-run names what is lost" \
	"^would roll volume 'v' back to 's', dropping the 1048576 bytes written since \(1\.0 MiB\); nothing changed \(--dry-run\)$" \
	"$VBAS" rollback $RB v s --dry-run
expect_fail "rollback without --yes off a terminal: refused" 1 "not done without confirmation" \
	"$VBAS" rollback $RB v s
expect_true "... nothing changed" same_as rb1m $RB v $((8 * MiB)) $MiB
expect_fail "rollback of a snapshot" 1 "^vbas: rollback: $RB: volume 's' is read-only \(a snapshot\): roll back a writable volume$" \
	"$VBAS" rollback --yes $RB s v
expect_fail "rollback to a writable volume" 1 "'w' is not a snapshot of 'v'" \
	sh -c "'$VBAS' create $RB w --size 1M && '$VBAS' rollback --yes $RB v w"
expect_fail "rollback to an unknown snapshot" 1 "^vbas: rollback: $RB: volume 'nope' not found" \
	"$VBAS" rollback --yes $RB v nope
expect_out "rollback --yes" "^volume 'v' rolled back to 's'$" "$VBAS" rollback --yes $RB v s
expect_true "... v reads as s" same_as rb4m $RB v 0 $((4 * MiB))
zeros $MiB >rbz1m
expect_true "... what it wrote since is gone" same_as rbz1m $RB v $((8 * MiB)) $MiB
expect_json "... it maps what s maps, all shared, and keeps its id" \
	'[(v["name"], v["id"], v["mapped"], v["shared"]) for v in d] == [("v", 1, 4 * 2**20, 4 * 2**20), ("s", 2, 4 * 2**20, 4 * 2**20), ("w", 3, 0, 0)]' \
	"$VBAS" list $RB --json
expect_out "... and the pool checks clean" "^clean" "$VBAS" check $RB
expect_ok "set v --readonly" "$VBAS" set $RB v --readonly
expect_fail "... a write is refused" 1 "read-only \(a snapshot, or set read-only\)" "$VBAS" write $RB v rb1m
expect_out "... list shows it ro" "^v .* ro +-$" "$VBAS" list $RB
expect_fail "... and it cannot be rolled back" 1 "volume 'v' is read-only" "$VBAS" rollback --yes $RB v s
expect_ok "set v --writable" "$VBAS" set $RB v --writable
expect_ok "... writes again" "$VBAS" write $RB v --offset 8M rb1m
expect_ok "set s --writable: a snapshot becomes a volume of its own" "$VBAS" set $RB s --writable
expect_ok "... which writes" "$VBAS" write $RB s --offset 12M rb1m
expect_true "... v is untouched by it" same_as rb4m $RB v 0 $((4 * MiB))
expect_fail "set NAME with both" 2 "^vbas: set: --readonly: not with --writable" "$VBAS" set $RB v --readonly --writable
expect_fail "set NAME with neither" 2 "^vbas: set: v: a volume takes --readonly or --writable" "$VBAS" set $RB v
expect_fail "set --readonly without NAME" 2 "^vbas: set: --readonly: a volume's setting: give its NAME" \
	"$VBAS" set $RB --readonly
expect_fail "set of an unknown volume" 1 "^vbas: set: $RB: volume 'nope' not found" "$VBAS" set $RB nope --readonly
expect_out "the rollback pool checks clean" "^clean" "$VBAS" check $RB

# ---- progress, and a copy stopped by a signal -------------------------------------------

PG=progress.img
random_file p24m $((24 * MiB))
"$VBAS" format $PG --size 256M >/dev/null && "$VBAS" create $PG v --size 64M || echo "# progress pool failed"
if command -v script >/dev/null; then
	tty "$VBAS" write $PG v p24m
	expect_true "write on a terminal: a progress line, to 100%" \
		sh -c "[ $RC -eq 0 ] && tr '\\r' '\\n' <'$T/out' | grep -q '^write: 100.0%  24.0 MiB of 24.0 MiB'"
	tty "$VBAS" read $PG v --length 24M p.out
	expect_true "read on a terminal: a progress line, to 100%" \
		sh -c "[ $RC -eq 0 ] && tr '\\r' '\\n' <'$T/out' | grep -q '^read: 100.0%  24.0 MiB of 24.0 MiB'"
	expect_true "... and the data" cmp p.out p24m
	tty "$VBAS" write $PG v p24m --no-progress
	expect_true "--no-progress: none on a terminal" sh -c "[ $RC -eq 0 ] && ! grep -q 'write:' '$T/out'"
	tty "$VBAS" check $PG
	expect_true "check on a terminal: a progress line, to 100%" \
		sh -c "[ $RC -eq 0 ] && tr '\\r' '\\n' <'$T/out' | grep -Eq '^check: 100.0%  ([0-9]+) of \\1 metadata blocks'"
	"$VBAS" snapshot $PG v v-snap && "$VBAS" clone $PG v v-clone
	tty "$VBAS" unshare $PG v-clone
	expect_true "unshare on a terminal: a progress line, to 100%" \
		sh -c "[ $RC -eq 0 ] && tr '\\r' '\\n' <'$T/out' | grep -q '^unshare: 100.0%  64.0 MiB of 64.0 MiB'"
	tty "$VBAS" delete -y $PG v-clone
	expect_true "delete on a terminal: a progress line, to 100%" \
		sh -c "[ $RC -eq 0 ] && tr '\\r' '\\n' <'$T/out' | grep -q '^delete: 100.0%  64.0 MiB of 64.0 MiB'"
	# 5,000 extents: a reflink of them goes in batches, each told.
	python3 -c "
import os
f = os.open('x5000', os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
os.ftruncate(f, 5000 * 8192)
for i in range(5000):
    os.pwrite(f, b'\\x5a' * 4096, i * 8192)
"
	"$VBAS" create $PG frag --size 40000K && "$VBAS" write $PG frag x5000 && "$VBAS" create $PG frag2 --size 40000K
	tty "$VBAS" reflink $PG frag 0 frag2 0 0
	expect_true "reflink on a terminal: a progress line, to 100%" \
		sh -c "[ $RC -eq 0 ] && tr '\\r' '\\n' <'$T/out' | grep -q '^reflink: 100.0%  39.1 MiB of 39.1 MiB'"
	expect_true "... and the data" sh -c "'$VBAS' read $PG frag2 | cmp - x5000"
	"$VBAS" delete -y $PG frag && "$VBAS" delete -y $PG frag2
	"$VBAS" delete -y $PG v-snap
else
	fail "progress on a terminal" "script (util-linux) is missing"
fi
expect_ok "write with stderr to a file" "$VBAS" write $PG v p24m
expect_true "... shows no progress" test ! -s "$T/err"
expect_ok "write --progress with stderr to a file" "$VBAS" write $PG v p24m --progress
expect_true "... shows it" grep -q "write: 100.0%  24.0 MiB of 24.0 MiB" "$T/err"
expect_ok "write -p from a pipe (size unknown): bytes and rate" sh -c "cat p24m | '$VBAS' write $PG v -p"
expect_true "... 24.0 MiB" grep -q "write: 24.0 MiB  " "$T/err"
# SIGINT while vbas write waits on a pipe: it stops, commits the 2 MiB it
# has and says so; the rest of the volume keeps what it held.
rm -f p.fifo && mkfifo p.fifo
"$VBAS" write $PG v --offset 32M p.fifo 2>p.err &
PW=$!
exec 7>p.fifo
head -c $((2 * MiB)) p24m >&7
sleep 0.5
kill -INT $PW
sleep 0.1
exec 7>&-
PW_RC=0
wait $PW || PW_RC=$?
expect_true "write stopped by SIGINT: exit status 1" test $PW_RC -eq 1
expect_true "... says so" grep -q "^vbas: write: v: stopped by Interrupt$" p.err
expect_true "... and what it kept" grep -q "^vbas: write: v: 2097152 bytes at offset 33554432 were written before the stop, and are committed; the rest of the volume is as it was$" p.err
head -c $((2 * MiB)) p24m >p2m
expect_true "... which is there" same_as p2m $PG v $((32 * MiB)) $((2 * MiB))
expect_true "... and the volume before it is as it was" same_as p24m $PG v 0 $((24 * MiB))
expect_out "... the pool checks clean" "^clean" "$VBAS" check $PG
# SIGTERM while vbas read waits on a slow reader of its output.
rm -f r.fifo && mkfifo r.fifo
"$VBAS" read $PG v r.fifo 2>r.err &
PR=$!
exec 8<r.fifo
head -c $MiB <&8 >/dev/null
kill -TERM $PR
cat <&8 >/dev/null
exec 8<&-
PR_RC=0
wait $PR || PR_RC=$?
expect_true "read stopped by SIGTERM: exit status 1" test $PR_RC -eq 1
expect_true "... says how far it came" grep -Eq "^vbas: read: v: stopped by Terminated after [0-9]+ of 67108864 bytes$" r.err
expect_ok "a volume to cut and delete with --force and -y" sh -c "'$VBAS' create $W c --size 4M && '$VBAS' write $W c c1m"
expect_ok "resize --force shrinks without asking" "$VBAS" resize $W c --size 512K --force </dev/null
expect_ok "resize grows without asking" "$VBAS" resize $W c --size 1M </dev/null
expect_ok "delete -y deletes without asking" "$VBAS" delete -y $W c </dev/null
expect_json "... the volume is gone" '"c" not in [v["name"] for v in d]' "$VBAS" list $W --json
expect_json "a new volume gets a new id" "[v['id'] for v in d if v['name'] == 'd'][0] > $OLD_ID" \
	"$VBAS" list $W --json
expect_true "the re-created d reads as zeros" same_as z1m $W d 0 $MiB

# ---- check ------------------------------------------------------------------

expect_out "check: the I/O pool is clean" '^clean' "$VBAS" check $W
expect_json "check --json: clean" \
	'd["clean"] is True and d["problems"] == [] and d["volumes"] >= 4 and d["nodes"] > 0 and d["extents"] > 0 and d["refcount_records"] > 0' \
	"$VBAS" check $W --json
expect_json "check --json: volumes agree with list" \
	"d['volumes'] == $(jget 'len(d)' "$VBAS" list $W --json)" "$VBAS" check $W --json
expect_out "check: the thin pool is clean" '^clean' "$VBAS" check $G

# ---- check: read-only -------------------------------------------------------
# --no-modify opens read-only and writes nothing; without it, check falls
# back to that by itself when it may not write, and says so.

RO=ro.img
head -c $MiB /dev/urandom >ro.data
"$VBAS" format $RO --size 32M >/dev/null && "$VBAS" create $RO v --size 8M >/dev/null &&
	"$VBAS" write $RO v ro.data >/dev/null && "$VBAS" snapshot $RO v vs >/dev/null ||
	echo "# setting up the read-only pool failed"
RO_SUM=$(sha256sum <$RO)
unchanged() { test "$(sha256sum <"$1")" = "$RO_SUM"; }
expect_out "check -n: clean, and says it was read-only" '^clean: .*; read-only$' "$VBAS" check -n $RO
expect_true "... not a byte of the pool changed" unchanged $RO
expect_json "check --no-modify --json: read_only, not served, the last commit's generation" \
	"d['clean'] is True and d['read_only'] is True and d['served'] is False and d['generation'] == $(jget 'd["generation"]' "$VBAS" info $RO --json) and d['volumes'] == 2" \
	"$VBAS" check --no-modify $RO --json
expect_json "check --json without -n: not read-only" "d['read_only'] is False" "$VBAS" check $RO --json
RO_SUM=$(sha256sum <$RO)
expect_fail "-n is check's option only" 2 "^vbas: info: --no-modify: not an option of 'info'" \
	"$VBAS" info $RO -n
if [ "$(id -u)" -eq 0 ] && chattr +i $RO 2>/dev/null; then
	RO_IMMUTABLE+=("$T/$RO")
	expect_out "check of an immutable pool file: read-only by itself" '^clean: .*; read-only$' \
		"$VBAS" check $RO
	expect_true "... which it says on stderr" grep -q \
		"^vbas: check: $RO: cannot open for writing (Operation not permitted): checking read-only; interrupted work (a delete in progress) is not finished$" "$T/err"
	expect_true "... and the pool is as it was" unchanged $RO
	chattr -i $RO
else
	pass "check of an immutable file # SKIP needs root and chattr"
fi
if [ "$(id -u)" -eq 0 ] && mkdir -p rodir && mount --bind "$T" rodir 2>/dev/null; then
	RO_MOUNTS+=("$T/rodir")
	if mount -o remount,bind,ro rodir 2>/dev/null; then
		expect_out "check on a read-only mount: read-only by itself" '^clean: .*; read-only$' \
			"$VBAS" check rodir/$RO
		expect_true "... which it says on stderr" grep -q \
			"^vbas: check: rodir/$RO: cannot open for writing (Read-only file system): checking read-only" "$T/err"
		expect_true "... and the pool is as it was" unchanged $RO
	else
		fail "remount the bind mount read-only"
	fi
	umount rodir
else
	pass "check on a read-only mount # SKIP needs root"
fi
if [ "$(id -u)" -eq 0 ] && command -v losetup >/dev/null && ROLOOP=$(losetup -r --show -f $RO 2>/dev/null); then
	RO_LOOPS+=("$ROLOOP")
	expect_out "check of a read-only loop device: read-only by itself" '^clean: .*; read-only$' \
		"$VBAS" check "$ROLOOP"
	expect_true "... which it says on stderr" grep -Eq \
		"^vbas: check: $ROLOOP: cannot open for writing \((Read-only file system|Permission denied)\): checking read-only" "$T/err"
	expect_out "check -n of the read-only loop device" '^clean: .*; read-only$' "$VBAS" check -n "$ROLOOP"
	losetup -d "$ROLOOP"
	expect_true "... and the pool is as it was" unchanged $RO
else
	pass "check of a read-only loop device # SKIP needs root and losetup"
fi
expect_ok "64K blocks: create a volume" "$VBAS" create p64.img v --size 1M
expect_ok "64K blocks: write 5000 bytes at 70000" write_stdin p64.img v 70000 d5000
expect_json "64K blocks: 5000 bytes at 70000 map one 64K block" \
	'[v["mapped"] for v in d] == [65536]' "$VBAS" list p64.img --json
expect_true "64K blocks: the data reads back" same_as d5000 p64.img v 70000 5000
expect_fail "64K blocks: a 4K discard is unaligned" 1 "not aligned to the block size \(65536\)" \
	"$VBAS" discard p64.img v --offset 64K --length 4K
expect_out "check: the 64K-block pool is clean" '^clean' "$VBAS" check p64.img

# ---- out of space -----------------------------------------------------------

S=small.img
expect_ok "format a 16M pool" "$VBAS" format $S --size 16M --force
expect_ok "create a (64M) on it" "$VBAS" create $S a --size 64M
expect_ok "create b (64M) on it" "$VBAS" create $S b --size 64M
random_file a8m $((8 * MiB))
random_file b32m $((32 * MiB))
expect_ok "write 8M into a" "$VBAS" write $S a a8m
expect_fail "write 32M into b: the pool is full" 1 "^vbas: write: $S: .*(full|No space)" \
	"$VBAS" write $S b b32m
expect_true "a reads back byte-identical" same_as a8m $S a 0 $((8 * MiB))
expect_out "check is clean after ENOSPC" '^clean' "$VBAS" check $S
expect_json "b holds only whole chunks of its data" \
	'[v["mapped"] % 2**20 for v in d if v["name"] == "b"] == [0]' "$VBAS" list $S --json
BMAP=$(jget '[v["mapped"] for v in d if v["name"] == "b"][0]' "$VBAS" list $S --json)
if [ -n "$BMAP" ] && [ "$BMAP" -gt 0 ]; then
	head -c "$BMAP" b32m >bpart
	expect_true "what b got before ENOSPC is committed" same_as bpart $S b 0 "$BMAP"
else
	expect_true "what b got before ENOSPC is committed" test -n "$BMAP"
fi
expect_ok "discard all of b" "$VBAS" discard $S b --offset 0 --length 64M
expect_json "b maps nothing" '[v["mapped"] for v in d if v["name"] == "b"] == [0]' \
	"$VBAS" list $S --json
expect_ok "delete b" "$VBAS" delete --yes $S b
random_file c4m $((4 * MiB))
expect_ok "create c" "$VBAS" create $S c --size 64M
expect_ok "a new write succeeds" "$VBAS" write $S c c4m
expect_true "c reads back" same_as c4m $S c 0 $((4 * MiB))
expect_true "a is still intact" same_as a8m $S a 0 $((8 * MiB))
expect_out "check is clean at the end" '^clean' "$VBAS" check $S

# ---- a second opener ----------------------------------------------------------

L=lock.img
expect_ok "format the lock pool" "$VBAS" format $L --size 16M
expect_ok "create a" "$VBAS" create $L a --size 1M
mkfifo fifo
exec 3<>fifo                 # a writer, so that the reader's open does not block
"$VBAS" write $L a fifo 3>&- >bg.out 2>bg.err &
BG=$!
BG_PIDS+=("$BG")
# Wait until it holds the pool's lock (an OFD lock on the file's inode).
INO=$(stat -c %i $L)
held=0
for _ in $(seq 200); do
	if [ -r /proc/locks ]; then
		grep -Eq "OFDLCK +ADVISORY +WRITE .*:$INO " /proc/locks && held=1
	else
		for fd in /proc/"$BG"/fd/*; do
			if [ "$(readlink "$fd" 2>/dev/null)" = "$T/$L" ]; then
				sleep 0.5   # no /proc/locks: the pool is open, give it time to lock
				held=1
			fi
		done
	fi
	[ $held -eq 1 ] && break
	sleep 0.05
done
expect_true "the background writer holds the pool" test $held -eq 1
expect_stderr "info on a pool in use names the holder" \
	"vbas: info: $L: pool is in use by another process: pid $BG ($VBAS write $L a fifo)" \
	"$VBAS" info $L
expect_true "... exits 1" test "$RC" -eq 1
expect_fail "create on a pool in use" 1 "in use by another process" "$VBAS" create $L b --size 1M
expect_fail "check on a pool in use" 1 "in use by another process" "$VBAS" check $L
expect_fail "format --force on a pool in use" 1 "in use by another process" \
	"$VBAS" format $L --size 16M --force

# A control channel that answers what a server would, or a broken version of
# it: list and info take a whole answer and refuse one cut short.
mkdir -p ctl
fake_ctl() {   # fake_ctl REPLY CMD...: one connection answered with REPLY
	local sock
	sock=$(python3 -c 'import os, sys; st = os.stat(sys.argv[1])
print("%s/vbas-%x-%x.ctl" % (sys.argv[2], st.st_dev, st.st_ino))' $L "$T/ctl")
	rm -f "$sock"
	# The last call's "ready" must not count for this one: the shell
	# truncates the file only once the background job has started.
	rm -f ctl.ready
	python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)
print("ready", flush=True)
c, _ = s.accept(); req = b""
while True:
    b = c.recv(4096)
    if not b: break
    req += b
open(sys.argv[3], "wb").write(req)
c.sendall(sys.argv[2].encode().decode("unicode_escape").encode("latin-1")); c.close()' \
		"$sock" "$1" "$T/ctl.req" >ctl.ready &
	local fk=$! i
	for i in $(seq 100); do grep -q ready ctl.ready 2>/dev/null && break; sleep 0.05; done
	shift
	VBAS_CTL_DIR=$T/ctl run "$@"
	kill $fk 2>/dev/null || true
	wait $fk 2>/dev/null || true
	rm -f "$sock"
}
check_ctl() {  # check_ctl DESC WANT_RC STDERR_RE|STDOUT_RE REPLY CMD...
	local d=$1 want=$2 re=$3 reply=$4
	shift 4
	fake_ctl "$reply" "$@"
	if [ "$RC" -eq "$want" ] && cat "$T/out" "$T/err" | grep -Eq -- "$re"; then
		pass "$d"
	else
		fail "$d" "want exit $want and output ~ /$re/; got exit $RC" \
			"stdout: $(head -c 600 "$T/out")" "stderr: $(head -c 600 "$T/err")"
	fi
}
check_ctl "list through a control channel: a whole answer is printed" 0 \
	'^x +7 +4\.0 KiB +0 B +0\.0% +0 B +0 B +0 B +rw +-$' \
	'0\t1\n7 4096 0 0 0 0 0 0 0 78\n' "$VBAS" list $L
expect_true "... and the request was 'list' and nothing more" \
	test "$(od -An -c "$T/ctl.req" | tr -s ' ')" = " l i s t \\0"
check_ctl "list: an answer cut short is refused" 1 \
	"^vbas: list: $L: the server's answer is cut short or not one this vbas reads" \
	'0\t2\n7 4096 0 0 0 0 0 0 0 78\n' "$VBAS" list $L
check_ctl "list: a name that is not hex is refused" 1 "cut short or not one this vbas reads" \
	'0\t1\n7 4096 0 0 0 0 0 0 0 7g\n' "$VBAS" list $L
check_ctl "list: an error from the server is said" 1 \
	"^vbas: list: $L: something broke \(through the server\)" \
	'5\tsomething broke' "$VBAS" list $L
check_ctl "info through a control channel: a whole answer is printed" 0 '^volumes +3$' \
	'0\t 1 2 3 4 5 6 7 8 3 10 11 12 13 14 15 16 17 18 19 800 25 1 0 0\n' "$VBAS" info $L
check_ctl "info through a control channel: the settings" 0 '^low water +80%$' \
	'0\t 1 2 3 4 5 6 7 8 3 10 11 12 13 14 15 16 17 18 19 800 25 1 0 0\n' "$VBAS" info $L
check_ctl "info through a control channel: the reverse map" 0 '^reverse map +yes$' \
	'0\t 1 2 3 4 5 6 7 8 3 10 11 12 13 14 15 16 17 18 19 800 25 1 0 0\n' "$VBAS" info $L
check_ctl "info through a control channel: an unfinished shrink" 0 '^shrinking to +8388608 ' \
	'0\t 1 2 3 4 5 6 7 8 3 10 11 12 13 14 15 16 17 18 19 800 25 1 8388608 0\n' "$VBAS" info $L
check_ctl "info: an answer cut short is refused" 1 "cut short or not one this vbas reads" \
	'0\t 1 2 3 4 5 6 7 8 3 10 11 12 13 14 15 16 17 18 19 800 25 1 0' "$VBAS" info $L
check_ctl "info: a number past 32 bits for a 32-bit figure is refused" 1 \
	"cut short or not one this vbas reads" \
	'0\t 1 4294967296 3 4 5 6 7 8 3 10 11 12 13 14 15 16 17 18 19 800 25 1\n' "$VBAS" info $L
check_ctl "a channel that closes without an answer" 1 \
	"^vbas: info: $L: the server's control channel gave no answer" '' "$VBAS" info $L
printf 'hello, pool' >&3
exec 3>&-
set +e
wait "$BG"
BGRC=$?
set -e
if [ $BGRC -eq 0 ]; then
	pass "the background write finished cleanly"
else
	fail "the background write finished cleanly" "exit $BGRC" "stderr: $(cat bg.err)"
fi
printf 'hello, pool' >hello
expect_true "its data arrived" same_as hello $L a 0 11
expect_out "the pool is clean afterwards" '^clean' "$VBAS" check $L

# ---- SIGKILL in the middle of a write -------------------------------------------

K=kill.img
expect_ok "format the kill pool" "$VBAS" format $K --size 64M
expect_ok "create a" "$VBAS" create $K a --size 16M
expect_ok "create b" "$VBAS" create $K b --size 32M
random_file k2m $((2 * MiB))
expect_ok "write 2M into a" "$VBAS" write $K a k2m
mkfifo slow
(for _ in $(seq 400); do head -c 64K /dev/urandom || exit 0; sleep 0.02; done) >slow 2>/dev/null &
GEN=$!
BG_PIDS+=("$GEN")
"$VBAS" write $K b slow >/dev/null 2>&1 &
KW=$!
BG_PIDS+=("$KW")
sleep 1.5
if kill -0 "$KW" 2>/dev/null; then running=1; else running=0; fi
exec 4>&2 2>/dev/null           # no "Killed" note from the shell
kill -9 "$KW" 2>/dev/null || true
set +e
wait "$KW"
KRC=$?
set -e
exec 2>&4 4>&-
kill -9 "$GEN" 2>/dev/null || true
wait "$GEN" 2>/dev/null || true
expect_true "the slow write was still running when killed" test $running -eq 1
expect_true "it died of SIGKILL" test $KRC -eq 137
expect_out "check is clean after SIGKILL" '^clean' "$VBAS" check $K
expect_true "a reads back byte-identical" same_as k2m $K a 0 $((2 * MiB))
expect_json "both volumes are still there" '[v["name"] for v in d] == ["a", "b"]' \
	"$VBAS" list $K --json
expect_ok "the pool takes writes again" "$VBAS" write $K b k2m
expect_true "... which read back" same_as k2m $K b 0 $((2 * MiB))
expect_out "check is clean at the end" '^clean' "$VBAS" check $K

# ---- snapshots, clones and sharing --------------------------------------------

H=share.img
# vol_field POOL NAME KEY: a field of one volume in list --json.
vol_field() { jget "[v['$3'] for v in d if v['name'] == '$2'][0]" "$VBAS" list "$1" --json; }
# patched OUT IN OFF FILE: IN with FILE's bytes written at OFF.
patched() { cp "$2" "$1" && dd if="$4" of="$1" bs=1 seek="$3" conv=notrunc status=none; }
# The usage accounting of every volume is consistent: mapped == exclusive + shared.
USAGE_OK='all(v["mapped"] == v["exclusive"] + v["shared"] for v in d)'

expect_ok "sharing: format a 64M pool with 4K blocks" "$VBAS" format $H --size 64M --block-size 4K
expect_ok "sharing: create o" "$VBAS" create $H o --size 1M
random_file o1m $MiB
expect_ok "sharing: fill o" "$VBAS" write $H o o1m
expect_json "list: mapped == exclusive + shared, all exclusive before a snapshot" \
	"$USAGE_OK and [(v['exclusive'], v['shared'], v['origin'], v['readonly']) for v in d] == [(2**20, 0, None, False)]" \
	"$VBAS" list $H --json
expect_ok "snapshot o as s1" "$VBAS" snapshot $H o s1
expect_json "list --json: the keys, in order" \
	'list(d[0]) == ["name", "id", "size", "mapped", "data_percent", "exclusive", "shared", "reserved", "owed", "readonly", "expendable", "origin"]' \
	"$VBAS" list $H --json
expect_json "after a snapshot: shared == mapped for both, nothing exclusive" \
	"$USAGE_OK and [(v['name'], v['mapped'], v['shared'], v['exclusive']) for v in d] == [('o', 2**20, 2**20, 0), ('s1', 2**20, 2**20, 0)]" \
	"$VBAS" list $H --json
expect_json "s1: origin o, read-only; o: no origin, writable" \
	"[(v['name'], v['origin'], v['readonly']) for v in d] == [('o', None, False), ('s1', 'o', True)]" \
	"$VBAS" list $H --json
expect_out "list: text shows RO and ORIGIN" '^s1 .* ro +o$' "$VBAS" list $H
expect_out "list: text header has the new columns" '^NAME +ID +SIZE +MAPPED +DATA% +EXCLUSIVE +SHARED +RESERVED +RO +ORIGIN$' \
	"$VBAS" list $H
random_file n64k $((64 * KiB))
expect_ok "write 64K at 128K into the origin" "$VBAS" write $H o --offset 128K n64k
patched o_new o1m $((128 * KiB)) n64k
expect_true "the snapshot still reads the old bytes" same_as o1m $H s1 0 $MiB
expect_true "the origin reads the new bytes" same_as o_new $H o 0 $MiB
expect_json "after writing the origin: its exclusive grew by 64K" \
	"$USAGE_OK and [(v['exclusive'], v['shared']) for v in d if v['name'] == 'o'] == [(65536, 2**20 - 65536)]" \
	"$VBAS" list $H --json
expect_json "info: sharing_saves > 0 after snapshot + write" \
	'd["sharing_saves"] > 0 and d["mapped"] == 2 * 2**20 and d["sharing_saves"] == d["mapped"] - d["data_used"]' \
	"$VBAS" info $H --json
expect_out "info: text shows sharing saves" '^sharing saves +[1-9][0-9]* ' "$VBAS" info $H
expect_out "info: text shows mapped" '^mapped +2097152 ' "$VBAS" info $H

# diff: exactly the written range, block-aligned.
expect_ok "diff s1 o" "$VBAS" diff $H s1 o
expect_true "diff text: a header and exactly the written range" \
	test "$(tr -s ' ' <"$T/out")" = "$(printf ' OFFSET LENGTH\n 131072 64.0 KiB')"
expect_ok "diff --raw --bytes --noheadings" "$VBAS" diff $H s1 o --raw --bytes --noheadings
expect_true "... OFFSET LENGTH lines in bytes" test "$(cat "$T/out")" = "131072 65536"
expect_json "diff --json: exactly the written range" 'd == [{"offset": 131072, "length": 65536}]' \
	"$VBAS" diff $H s1 o --json
"$VBAS" diff $H s1 o --json >diff-raw.json
expect_true "diff --json: vbas_format and ranges" json_raw diff-raw.json \
	'd == {"vbas_format": 1, "ranges": [{"offset": 131072, "length": 65536}]}'
# A table printed 4,096 rows at a time: 5,000 extents (4 KiB of data every
# 8 KiB) print as one table, aligned, and as one JSON array.
python3 -c "
import os
f = os.open('x5000', os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
os.ftruncate(f, 5000 * 8192)
for i in range(5000):
    os.pwrite(f, b'\x5a' * 4096, i * 8192)
"
expect_ok "5,000 extents: write them" sh -c "'$VBAS' create $H many --size 40000K && '$VBAS' write $H many x5000"
"$VBAS" map $H many --json >many.json
expect_true "map --json of 5,000 extents, in two chunks: one valid array, every extent once, in order" \
	json_raw many.json 'list(d) == ["vbas_format", "extents"] and [(e["offset"], e["length"]) for e in d["extents"]] == [(i * 8192, 4096) for i in range(5000)]'
expect_ok "map of 5,000 extents in text" "$VBAS" map $H many
expect_true "... a header and 5,000 rows, every line as wide as the header" python3 -c '
import sys
lines = open(sys.argv[1]).read().split("\n")[:-1]
sys.exit(0 if len(lines) == 5001 and lines[0].split() == ["OFFSET", "LENGTH", "PHYSICAL", "SHARED", "RESERVED"] and len(set(len(l.rstrip()) - len(l.rstrip().split()[-1]) for l in lines[1:])) == 1 else 1)' "$T/out"
expect_ok "map --raw --noheadings of 5,000 extents" "$VBAS" map $H many --raw --noheadings --bytes
expect_true "... 5,000 lines, the 4,097th as the 4,096th" sh -c \
	"test \$(wc -l <'$T/out') -eq 5000 && sed -n 4097p '$T/out' | grep -qx '33554432 4096 [0-9]* - -'"
expect_ok "delete it" "$VBAS" delete --yes $H many
random_file d100 100
expect_ok "an unaligned 100-byte write at 300K+10 into o" "$VBAS" write $H o --offset $((300 * KiB + 10)) d100
expect_json "diff --json: the unaligned write shows as its whole block" \
	'd == [{"offset": 131072, "length": 65536}, {"offset": 307200, "length": 4096}]' \
	"$VBAS" diff $H s1 o --json
patched o_new2 o_new $((300 * KiB + 10)) d100
cp o_new2 o_new
expect_json "diff of a volume against itself is empty" 'd == []' "$VBAS" diff $H o o --json

# Writing a snapshot fails.
expect_fail "write into a snapshot fails" 1 "^vbas: write: $H: .*read-only \(a snapshot, or set read-only\)" \
	"$VBAS" write $H s1 n64k
expect_fail "discard of a snapshot fails" 1 "^vbas: discard: $H: .*read-only \(a snapshot, or set read-only\)" \
	"$VBAS" discard $H s1 --offset 0 --length 4K
expect_fail "resize of a snapshot fails" 1 "^vbas: resize: $H: .*read-only \(a snapshot, or set read-only\)" \
	"$VBAS" resize --yes $H s1 --size 2M
expect_true "the snapshot is unchanged after the failures" same_as o1m $H s1 0 $MiB
expect_json "... and keeps its size" "[v['size'] for v in d if v['name'] == 's1'] == [2**20]" \
	"$VBAS" list $H --json
expect_fail "snapshot: a taken name" 1 "^vbas: snapshot: $H: volume 's1' already exists" \
	"$VBAS" snapshot $H o s1
expect_fail "snapshot: an unknown source" 1 "^vbas: snapshot: $H: volume 'nope' not found" \
	"$VBAS" snapshot $H nope s9
expect_fail "snapshot: missing NEW" 2 "^vbas: snapshot: NEW: missing argument" "$VBAS" snapshot $H o
expect_fail "clone: missing SOURCE" 2 "^vbas: clone: SOURCE: missing argument" "$VBAS" clone $H

# Clones are writable and independent both ways.
expect_ok "clone o as c1" "$VBAS" clone $H o c1
expect_json "c1: origin o, writable" "[(v['origin'], v['readonly']) for v in d if v['name'] == 'c1'] == [('o', False)]" \
	"$VBAS" list $H --json
expect_true "the clone reads as its origin" same_as o_new $H c1 0 $MiB
random_file c8k $((8 * KiB))
expect_ok "write 8K at 0 into the clone" "$VBAS" write $H c1 --offset 0 c8k
patched c1_exp o_new 0 c8k
expect_true "the clone has the new bytes" same_as c1_exp $H c1 0 $MiB
expect_true "the origin does not see the clone's write" same_as o_new $H o 0 $MiB
random_file o8k $((8 * KiB))
expect_ok "write 8K at 512K into the origin" "$VBAS" write $H o --offset 512K o8k
patched o_new3 o_new $((512 * KiB)) o8k
expect_true "the origin has its new bytes" same_as o_new3 $H o 0 $MiB
expect_true "the clone does not see the origin's write" same_as c1_exp $H c1 0 $MiB
expect_ok "the clone can be discarded and resized" \
	sh -c "'$VBAS' discard $H c1 --offset 1020K --length 4K && '$VBAS' resize $H c1 --size 2M"
head -c $((1020 * KiB)) c1_exp >c1_exp2
zeros $((1028 * KiB)) >>c1_exp2
expect_true "... and reads as expected" same_as c1_exp2 $H c1 0 $((2 * MiB))

# Snapshot of a snapshot, clone of a snapshot.
expect_ok "snapshot of a snapshot" "$VBAS" snapshot $H s1 s2
expect_ok "clone of a snapshot" "$VBAS" clone $H s1 c2
expect_json "s2 and c2: origin s1, readonly true/false" \
	"[(v['name'], v['origin'], v['readonly']) for v in d if v['name'] in ('s2', 'c2')] == [('s2', 's1', True), ('c2', 's1', False)]" \
	"$VBAS" list $H --json
expect_true "s2 reads as s1" same_as o1m $H s2 0 $MiB
expect_true "c2 reads as s1" same_as o1m $H c2 0 $MiB
expect_ok "write 64K at 64K into the clone of the snapshot" "$VBAS" write $H c2 --offset 64K n64k
patched c2_exp o1m $((64 * KiB)) n64k
expect_true "c2 has the write" same_as c2_exp $H c2 0 $MiB
expect_true "s1 does not" same_as o1m $H s1 0 $MiB
expect_true "s2 does not" same_as o1m $H s2 0 $MiB
expect_fail "write into a snapshot of a snapshot fails" 1 "^vbas: write: $H: .*read-only" \
	"$VBAS" write $H s2 n64k
expect_json "list: usage consistent for every volume" "$USAGE_OK" "$VBAS" list $H --json
expect_out "check: clean after snapshots and clones" '^clean' "$VBAS" check $H

# ---- reflink ----------------------------------------------------------------------

expect_ok "create r1 and r2" sh -c "'$VBAS' create $H r1 --size 1M && '$VBAS' create $H r2 --size 1M"
random_file r1d $MiB
random_file r2d $MiB
expect_ok "fill r1" "$VBAS" write $H r1 r1d
expect_ok "fill r2" "$VBAS" write $H r2 r2d
expect_ok "reflink 256K of r1 at 64K into r2 at 512K" "$VBAS" reflink $H r1 64K r2 512K 256K
dd if=r1d of=r1part bs=1K skip=64 count=256 status=none
patched r2_exp r2d $((512 * KiB)) r1part
expect_true "r2 reads r1's range there, the rest unchanged" same_as r2_exp $H r2 0 $MiB
expect_true "r1 is unchanged" same_as r1d $H r1 0 $MiB
expect_json "r2's reflinked range is shared" \
	'[e for e in d if e["offset"] <= 524288 < e["offset"] + e["length"]][0]["shared"]' \
	"$VBAS" map $H r2 --json
expect_out "map text marks shared extents" '^ +524288 +[0-9.]+ [KMG]iB +[0-9]+ shared +-$' "$VBAS" map $H r2
expect_ok "reflink within one volume: r1 0..64K to 896K" "$VBAS" reflink $H r1 0 r1 896K 64K
head -c $((64 * KiB)) r1d >r1head
patched r1_exp r1d $((896 * KiB)) r1head
expect_true "r1 reads its first 64K at 896K too" same_as r1_exp $H r1 0 $MiB
expect_ok "reflink LENGTH 0: from 768K to the end of r1 into r2 at 0" "$VBAS" reflink $H r1 768K r2 0 0
dd if=r1_exp of=r1tail bs=1K skip=768 status=none
patched r2_exp2 r2_exp 0 r1tail
expect_true "r2 got r1's last 256K at 0" same_as r2_exp2 $H r2 0 $MiB
USED_RF=$(jget 'd["data_used"]' "$VBAS" info $H --json)
expect_fail "reflink: misaligned source offset" 1 "^vbas: reflink: $H: .*multiples of the block size" \
	"$VBAS" reflink $H r1 1000 r2 0 4K
expect_fail "reflink: misaligned length" 1 "^vbas: reflink: $H: .*multiples of the block size" \
	"$VBAS" reflink $H r1 0 r2 0 5000
expect_fail "reflink: overlap within one volume" 1 "^vbas: reflink: $H: .*overlap" \
	"$VBAS" reflink $H r1 0 r1 4K 8K
expect_fail "reflink: past the end of the destination" 1 "^vbas: reflink: $H: .*past the end" \
	"$VBAS" reflink $H r1 0 r2 1020K 8K
expect_fail "reflink: past the end of the source" 1 "^vbas: reflink: $H: .*past the end" \
	"$VBAS" reflink $H r1 1020K r2 0 8K
expect_fail "reflink: unknown destination" 1 "^vbas: reflink: $H: volume 'nope' not found" \
	"$VBAS" reflink $H r1 0 nope 0 4K
expect_fail "reflink: unknown source" 1 "^vbas: reflink: $H: volume 'nope' not found" \
	"$VBAS" reflink $H nope 0 r2 0 4K
expect_fail "reflink: a snapshot destination" 1 "^vbas: reflink: $H: .*read-only \(a snapshot, or set read-only\)" \
	"$VBAS" reflink $H r1 0 s1 0 4K
expect_fail "reflink: a bad offset" 2 "^vbas: reflink: DST_OFFSET: invalid size '1,5K'" \
	"$VBAS" reflink $H r1 0 r2 1,5K 4K
expect_fail "reflink: missing LENGTH" 2 "^vbas: reflink: LENGTH: missing argument" \
	"$VBAS" reflink $H r1 0 r2 0
expect_true "failed reflinks changed nothing in r1" same_as r1_exp $H r1 0 $MiB
expect_true "... nor in r2" same_as r2_exp2 $H r2 0 $MiB
expect_true "... nor in the snapshot" same_as o1m $H s1 0 $MiB
expect_json "... nor the space used" "d['data_used'] == $USED_RF" "$VBAS" info $H --json
expect_out "check: clean after reflinks" '^clean' "$VBAS" check $H

# ---- dedupe and unshare --------------------------------------------------------------

random_file dd64k $((64 * KiB))
expect_ok "create e1, e2" sh -c "'$VBAS' create $H e1 --size 256K && '$VBAS' create $H e2 --size 256K"
expect_ok "the same 64K into e1 at 0 and e2 at 128K" \
	sh -c "'$VBAS' write $H e1 dd64k && '$VBAS' write $H e2 --offset 128K dd64k"
random_file e1x $((4 * KiB))
expect_ok "different bytes in e1 at 64K" "$VBAS" write $H e1 --offset 64K e1x
expect_json "e2 has no shared extent before dedupe" 'not any(e["shared"] for e in d)' \
	"$VBAS" map $H e2 --json
USED_DD=$(jget 'd["data_used"]' "$VBAS" info $H --json)
expect_out "dedupe of equal ranges prints the bytes deduped" '^deduped 65536 bytes$' \
	"$VBAS" dedupe $H e1 0 e2 128K 64K
expect_json "map --json of the destination shows shared" \
	'[e["shared"] for e in d if e["offset"] == 131072] == [True]' "$VBAS" map $H e2 --json
expect_json "dedupe freed 64K" "d['data_used'] == $USED_DD - 65536" "$VBAS" info $H --json
expect_true "e2 still reads the same bytes" same_as dd64k $H e2 $((128 * KiB)) $((64 * KiB))
cp e1x e1x_exp
expect_out "dedupe of different ranges reports they differ" '^ranges differ; nothing changed$' \
	"$VBAS" dedupe $H e1 64K e2 0 4K
zeros 4096 >z4k
expect_true "the differing destination is unchanged" same_as z4k $H e2 0 4096
expect_true "the differing source is unchanged" same_as e1x $H e1 $((64 * KiB)) 4096
expect_json "dedupe --json of different ranges" 'd == {"same": False, "deduped": 0}' \
	"$VBAS" dedupe $H e1 64K e2 0 4K --json
expect_json "nothing became shared at e2 0" '[e for e in d if e["offset"] == 0] == []' \
	"$VBAS" map $H e2 --json
expect_fail "dedupe into a snapshot fails" 1 "^vbas: dedupe: $H: .*read-only" \
	"$VBAS" dedupe $H o 0 s1 0 4K
expect_ok "unshare e2" "$VBAS" unshare $H e2
expect_json "after unshare no extent of e2 is shared" 'd != [] and not any(e["shared"] for e in d)' \
	"$VBAS" map $H e2 --json
expect_true "e2's data is intact" same_as dd64k $H e2 $((128 * KiB)) $((64 * KiB))
expect_json "e2 is all exclusive" "[(v['exclusive'], v['shared']) for v in d if v['name'] == 'e2'] == [(65536, 0)]" \
	"$VBAS" list $H --json
expect_ok "unshare a range of the clone c2" "$VBAS" unshare $H c2 --offset 256K --length 256K
expect_json "c2's 256K..512K no longer shared, the rest still is" \
	'not any(e["shared"] for e in d if 262144 <= e["offset"] < 524288) and any(e["shared"] for e in d if e["offset"] >= 524288)' \
	"$VBAS" map $H c2 --json
expect_true "c2's data is intact" same_as c2_exp $H c2 0 $MiB
expect_fail "unshare of a snapshot fails" 1 "^vbas: unshare: $H: .*read-only" "$VBAS" unshare $H s1
expect_fail "unshare: misaligned range" 1 "^vbas: unshare: $H: " \
	"$VBAS" unshare $H c2 --offset 1000 --length 4K
expect_json "list: usage consistent for every volume" "$USAGE_OK" "$VBAS" list $H --json
expect_out "check: clean after dedupe and unshare" '^clean' "$VBAS" check $H

# ---- deleting origins and snapshots ----------------------------------------------------

expect_ok "delete the origin o while s1, s2 live" "$VBAS" delete --yes $H o
expect_true "s1's data is intact" same_as o1m $H s1 0 $MiB
expect_true "s2's data is intact" same_as o1m $H s2 0 $MiB
expect_true "c1's data is intact" same_as c1_exp2 $H c1 0 $((2 * MiB))
expect_json "s1 and c1: origin null once o is gone" \
	"[(v['name'], v['origin']) for v in d if v['name'] in ('s1', 'c1')] == [('s1', None), ('c1', None)]" \
	"$VBAS" list $H --json
expect_out "check: clean after deleting the origin" '^clean' "$VBAS" check $H
expect_ok "delete s1 (the parent) before s2" "$VBAS" delete --yes $H s1
expect_true "s2's data is intact" same_as o1m $H s2 0 $MiB
expect_true "c2's data is intact" same_as c2_exp $H c2 0 $MiB
expect_out "check: clean after deleting the parent first" '^clean' "$VBAS" check $H
expect_ok "snapshot c2 as s3, then s3 as s4" sh -c "'$VBAS' snapshot $H c2 s3 && '$VBAS' snapshot $H s3 s4"
expect_ok "delete s4 (the child) before s3" "$VBAS" delete --yes $H s4
expect_true "s3's data is intact" same_as c2_exp $H s3 0 $MiB
expect_ok "delete s3" "$VBAS" delete --yes $H s3
expect_ok "delete s2" "$VBAS" delete --yes $H s2
expect_true "c2's data is intact" same_as c2_exp $H c2 0 $MiB
expect_json "list: usage consistent for every volume" "$USAGE_OK" "$VBAS" list $H --json
expect_out "check: clean after deleting snapshots in both orders" '^clean' "$VBAS" check $H
expect_ok "delete every volume" sh -c "for v in c1 c2 r1 r2 e1 e2; do '$VBAS' delete --yes $H \$v || exit 1; done"
expect_json "the pool is empty again" \
	'd["volumes"] == 0 and d["data_used"] == 0 and d["mapped"] == 0 and d["sharing_saves"] == 0 and d["reserved"] == 0 and d["reserved_metadata"] == 0 and d["reserved_metadata_granted"] == 0 and d["reserved_metadata_used"] == 0' \
	"$VBAS" info $H --json
expect_out "check: clean at the end" '^clean' "$VBAS" check $H

# ---- Reserved ranges: reserve, unreserve, create --reserve, --no-reserve ------

R=resv.img
"$VBAS" format $R --size 32M >/dev/null
expect_ok "create --reserve: a thick volume" "$VBAS" create $R thick --size 4M --reserve
expect_json "list: the thick volume is mapped and reserved whole, owes nothing" \
	"[(v['mapped'], v['reserved'], v['owed']) for v in d if v['name'] == 'thick'] == [(4*2**20, 4*2**20, 0)]" \
	"$VBAS" list $R --json
expect_true "the thick volume reads as zeros" same_as <(zeros $((4 * MiB))) $R thick 0 $((4 * MiB))
expect_json "map: the thick volume's extents are all reserved" \
	"sum(e['length'] for e in d) == 4*2**20 and all(e['reserved'] and not e['shared'] for e in d)" \
	"$VBAS" map $R thick --json
expect_out "map: the text form says reserved" ' reserved$' "$VBAS" map $R thick
expect_json "info: reserved_ranges 4 MiB; available below free" \
	'd["reserved_ranges"] == 4*2**20 and d["reserved_owed"] == 0 and 0 < d["available"] < d["free"]' \
	"$VBAS" info $R --json
expect_fail "create --reserve larger than the pool: refused" 1 \
	"^vbas: create: $R: reserve: the pool is full: the range needs [0-9]+ new blocks; [0-9]+ are free for data" \
	"$VBAS" create $R huge --size 64M --reserve
expect_json "... and the volume is not left behind" \
	"'huge' not in [v['name'] for v in d]" "$VBAS" list $R --json
expect_ok "create a thin volume" "$VBAS" create $R thin --size 40M
random_file t1m $MiB
expect_ok "write 1 MiB into it" "$VBAS" write $R thin --offset $MiB t1m
expect_out "reserve 2 MiB of it, around the data" "^'thin': 2097152 bytes \(2.0 MiB\) reserved$" \
	"$VBAS" reserve $R thin --offset $((MiB / 2)) --length $((2 * MiB))
expect_true "the data is unchanged" same_as t1m $R thin $MiB $MiB
expect_true "the backed holes read as zeros" same_as <(zeros $((MiB / 2))) $R thin $((MiB / 2)) $((MiB / 2))
expect_json "list: thin maps 2 MiB, all reserved" \
	"[(v['mapped'], v['reserved']) for v in d if v['name'] == 'thin'] == [(2*2**20, 2*2**20)]" \
	"$VBAS" list $R --json
expect_out "list: a RESERVED column" 'RESERVED' "$VBAS" list $R
expect_out "reserve of a reserved range: nothing to do" "^'thin': 2097152 bytes" \
	"$VBAS" reserve $R thin --offset $MiB --length $MiB
expect_fail "reserve: zero length" 2 "^vbas: reserve: --length: must not be 0" \
	"$VBAS" reserve $R thin --length 0
expect_fail "reserve: past the end" 1 "^vbas: reserve: $R: range .* is past the end of the volume" \
	"$VBAS" reserve $R thin --offset 40M --length 4K
expect_fail "reserve: more than the pool" 1 "^vbas: reserve: $R: the pool is full: the range needs [0-9]+ new blocks; [0-9]+ are free for data" \
	"$VBAS" reserve $R thin
expect_fail "reserve: no such volume" 1 "^vbas: reserve: $R: .*not found" \
	"$VBAS" reserve $R nosuch
expect_fail "unreserve: not block-aligned" 1 "^vbas: unreserve: $R: range 100\+4096 is not aligned to the block size" \
	"$VBAS" unreserve $R thin --offset 100 --length 4K
expect_ok "snapshot of the thick volume sets its copies aside" "$VBAS" snapshot $R thick ts
expect_json "list: thick owes 4 MiB, its snapshot nothing" \
	"[(v['name'], v['owed']) for v in d if v['name'] in ('thick', 'ts')] == [('thick', 4*2**20), ('ts', 0)]" \
	"$VBAS" list $R --json
expect_fail "reserve of a snapshot: read-only" 1 "^vbas: reserve: $R: the volume is read-only \(a snapshot, or set read-only\)" \
	"$VBAS" reserve $R ts
expect_out "check: clean with reserved ranges and owed copies" '^clean' "$VBAS" check $R
# Another volume fills the pool; the reserved ranges can still be written.
expect_ok "create a filler" "$VBAS" create $R fill --size 64M
run sh -c "head -c $((32 * MiB)) /dev/urandom | '$VBAS' write $R fill"
expect_true "the filler runs out of space" test "$RC" -ne 0
expect_json "the pool has next to nothing available" 'd["available"] < 2*2**20' "$VBAS" info $R --json
expect_fail "a clone of the thick volume cannot hold its copies: refused" 1 \
	"^vbas: clone: $R: .thick. has 4194304 bytes of reserved ranges \(use --no-reserve .*the pool is full: the copies on write" \
	"$VBAS" clone $R thick tc
expect_ok "with --no-reserve it is made" "$VBAS" clone $R thick tc --no-reserve
expect_json "list: the clone owes nothing, and is reserved like its source" \
	"[(v['reserved'], v['owed']) for v in d if v['name'] == 'tc'] == [(4*2**20, 0)]" \
	"$VBAS" list $R --json
random_file t4m $((4 * MiB))
expect_ok "the thick volume, all of it shared, is written whole" "$VBAS" write $R thick t4m
expect_true "... and reads back" same_as t4m $R thick 0 $((4 * MiB))
expect_true "its snapshot still reads zeros" same_as <(zeros $((4 * MiB))) $R ts 0 $((4 * MiB))
random_file t2m $((2 * MiB))
expect_ok "thin's reserved range is written whole" "$VBAS" write $R thin --offset $((MiB / 2)) t2m
expect_true "... and reads back" same_as t2m $R thin $((MiB / 2)) $((2 * MiB))
expect_ok "discard inside the reserved range" "$VBAS" discard $R thin --offset $MiB --length $MiB
expect_true "... reads zeros" same_as <(zeros $MiB) $R thin $MiB $MiB
expect_json "... and keeps the blocks" \
	"[(v['mapped'], v['reserved']) for v in d if v['name'] == 'thin'] == [(2*2**20, 2*2**20)]" \
	"$VBAS" list $R --json
expect_ok "and is written again" "$VBAS" write $R thin --offset $MiB t1m
expect_ok "unreserve the thin volume" "$VBAS" unreserve $R thin
expect_json "list: thin reserves nothing, keeps its blocks" \
	"[(v['mapped'], v['reserved']) for v in d if v['name'] == 'thin'] == [(2*2**20, 0)]" \
	"$VBAS" list $R --json
expect_ok "delete the snapshot" "$VBAS" delete --yes $R ts
expect_json "the thick volume owes nothing once its snapshot is gone" \
	"[v['owed'] for v in d if v['name'] == 'thick'] == [0]" "$VBAS" list $R --json
expect_out "check: clean at the end" '^clean' "$VBAS" check $R

# ---- Space settings, growth, expendable snapshots -------------------------------

E=grow.img
expect_ok "settings: format a 32M pool" "$VBAS" format $E --size 32M
expect_json "info --json: no settings at first" 'd["low_water"] is None and d["expendable_floor"] is None' \
	"$VBAS" info $E --json
expect_out "info: the settings as text" '^low water +none$' "$VBAS" info $E
expect_fail "set: nothing to set" 2 "^vbas: set: --low-water: give --low-water, --expendable-floor or --rmap" \
	"$VBAS" set $E
for bad in 101% abc 12.34% -5 '' 1000 50%%; do
	expect_fail "set: a bad percentage '$bad'" 2 "^vbas: set: --low-water: '$bad' is not a percentage" \
		"$VBAS" set $E --low-water "$bad"
done
expect_fail "set: a bad floor" 2 "^vbas: set: --expendable-floor: 'x' is not a percentage" \
	"$VBAS" set $E --expendable-floor x
expect_json "... and nothing changed" 'd["low_water"] is None' "$VBAS" info $E --json
expect_out "set --low-water 80%" '^grow.img: 33554432 bytes \(32\.0 MiB\), .* available; low water 80%, expendable floor none$' \
	"$VBAS" set $E --low-water 80%
expect_json "set --expendable-floor 12.5 --json keeps the low-water mark" \
	'd == {"size": 32*2**20, "available": d["available"], "low_water": 80, "expendable_floor": 12.5}' \
	"$VBAS" set $E --expendable-floor 12.5 --json
expect_json "info --json: the settings, in percent" 'd["low_water"] == 80 and d["expendable_floor"] == 12.5' \
	"$VBAS" info $E --json
expect_ok "set --low-water off" "$VBAS" set $E --low-water off
expect_json "... is none" 'd["low_water"] is None and d["expendable_floor"] == 12.5' "$VBAS" info $E --json
expect_ok "set both off" "$VBAS" set $E --low-water 0 --expendable-floor none

expect_ok "grow: create a volume" "$VBAS" create $E v --size 128M
random_file g24m $((24 * MiB))
expect_ok "grow: fill most of the pool" "$VBAS" write $E v g24m
random_file g16m $((16 * MiB))
expect_fail "grow: 16M more do not fit" 1 "pool is full|the pool is full" "$VBAS" write $E v --offset $((24 * MiB)) g16m
expect_fail "grow: --size is required" 2 "^vbas: grow: --size: missing" "$VBAS" grow $E
expect_fail "grow: smaller is refused" 1 "^vbas: grow: $E: .*a pool only grows" "$VBAS" grow $E --size 16M
expect_fail "grow: +0 is refused" 2 "^vbas: grow: --size: \+0 adds nothing" "$VBAS" grow $E --size +0
expect_fail "grow: a bad size" 2 "^vbas: grow: --size: invalid size" "$VBAS" grow $E --size +12Q
expect_fail "grow: past what a pool can hold" 1 "^vbas: grow: $E: .*more than a pool can hold" \
	"$VBAS" grow $E --size +8E
expect_fail "a relative size is for grow, resize and resize-pool only" 2 "^vbas: create: --size: a relative size \('\+1M'\) is for grow, resize and resize-pool only" \
	"$VBAS" create $E w --size +1M
expect_true "... and the file kept its size" test "$(fsize $E)" -eq $((32 * MiB))
expect_out "grow --size 48M" "^grow.img: 50331648 bytes \(48\.0 MiB\)" "$VBAS" grow $E --size 48M
expect_true "the file is 48M" test "$(fsize $E)" -eq $((48 * MiB))
expect_json "grow --size +16M --json" 'd["size"] == 64*2**20 and d["available"] > 30*2**20' \
	"$VBAS" grow $E --size +16M --json
expect_json "info: 64M" 'd["size"] == 64*2**20 and d["available"] > 30*2**20' "$VBAS" info $E --json
expect_ok "the write that did not fit now does" "$VBAS" write $E v --offset $((24 * MiB)) g16m
expect_true "... and both read back" sh -c "cat g24m g16m >g40m"
expect_true "... byte for byte" same_as g40m $E v 0 $((40 * MiB))
expect_out "check: the grown pool is clean" '^clean' "$VBAS" check $E

expect_fail "clone --expendable: not an option" 2 "^vbas: clone: --expendable: not an option of 'clone'" \
	"$VBAS" clone $E v c --expendable
# v holds 40M (A); x1 is a snapshot of it; v's first 16M are rewritten
# (B); x2 is a snapshot of that; then v's last 24M are rewritten, which
# does not fit: x1 (the oldest) is deleted, which frees A's first 16M, and
# that is enough: x2 stays.
expect_ok "expendable: grow to 72M" "$VBAS" grow $E --size 72M
expect_ok "snapshot --expendable" "$VBAS" snapshot $E v x1 --expendable
random_file g16b $((16 * MiB))
expect_ok "rewrite v's first 16M" "$VBAS" write $E v g16b
expect_ok "a second expendable snapshot" "$VBAS" snapshot $E v x2 --expendable
expect_ok "and a plain one of another volume" sh -c "'$VBAS' create $E w --size 1M && '$VBAS' snapshot $E w keep"
expect_json "list --json: expendable" \
	"[(v['name'], v['readonly'], v['expendable']) for v in d] == [('v', False, False), ('x1', True, True), ('x2', True, True), ('w', False, False), ('keep', True, False)]" \
	"$VBAS" list $E --json
expect_out "list: RO shows ex for an expendable snapshot" '^x1 .* ex +v$' "$VBAS" list $E
random_file g24b $((24 * MiB))
expect_ok "rewriting v's last 24M deletes the oldest expendable snapshot to make room" \
	"$VBAS" write $E v --offset $((16 * MiB)) g24b
expect_json "x1 is gone; x2 and keep are not" \
	"[v['name'] for v in d] == ['v', 'x2', 'w', 'keep']" "$VBAS" list $E --json
expect_true "v reads its new data" sh -c "cat g16b g24b >g40b"
expect_true "... byte for byte" same_as g40b $E v 0 $((40 * MiB))
expect_true "x2 reads what v held when it was taken" sh -c "cat g16b >x2exp && tail -c $((24 * MiB)) g40m >>x2exp"
expect_true "... byte for byte" same_as x2exp $E x2 0 $((40 * MiB))
expect_out "check: clean" '^clean' "$VBAS" check $E

# ---- fsmap: who uses each block -----------------------------------------------

F=fsmap.img
expect_ok "fsmap: format a 16M pool" "$VBAS" format $F --size 16M
expect_json "fsmap of an empty pool: superblocks, the volume table's and refcount tree's roots, free" \
	'[r["owner"] for r in d if r["owner"] != "free"] == ["superblock"] and sum(r["length"] for r in d) == 16*2**20' \
	"$VBAS" fsmap $F --json
expect_ok "fsmap: a volume with 1M" sh -c "'$VBAS' create $F a --size 4M && '$VBAS' write $F a d1m"
expect_ok "fsmap: a snapshot of it" "$VBAS" snapshot $F a a-snap
expect_ok "fsmap: a second volume, part of a reflinked into it" \
	sh -c "'$VBAS' create $F b --size 4M && '$VBAS' reflink $F a 0 b 1048576 262144"
expect_ok "fsmap: a's first 64K rewritten (copy on write)" "$VBAS" write $F a n64k
# Every block vbas map shows is named by fsmap as that volume's, at that
# offset; data blocks shared three ways are named three times.
"$VBAS" map $F a --json >a.map && "$VBAS" map $F a-snap --json >s.map && "$VBAS" map $F b --json >b.map
expect_json "fsmap --json names every mapped block of every volume, and no more" \
	'{(r["volume"], r["physical"] + o, r["logical"] + o) for r in d if r["owner"] == "data" for o in range(0, r["length"], 4096)} == {(v, e["physical"] + o, e["offset"] + o) for v, f in (("a", "a.map"), ("a-snap", "s.map"), ("b", "b.map")) for e in json.load(open(f))["extents"] for o in range(0, e["length"], 4096)}' \
	"$VBAS" fsmap $F --json
expect_json "fsmap: records in physical order, covering the pool" \
	'all(d[i]["physical"] <= d[i+1]["physical"] for i in range(len(d)-1)) and max(r["physical"] + r["length"] for r in d) == 16*2**20' \
	"$VBAS" fsmap $F --json
PB=$(jget '[e["physical"] + e["length"] - 4096 for e in d if e["offset"] + e["length"] == 2**20][0]' \
	"$VBAS" map $F a-snap --json)
expect_json "fsmap --physical: the last block of a's first MiB is a's and a-snap's, at its offset" \
	'sorted((r["volume"], r["logical"]) for r in d) == [("a", 2**20 - 4096), ("a-snap", 2**20 - 4096)]' \
	"$VBAS" fsmap $F --physical $((PB + 100)) --json
PR=$(jget '[e["physical"] for e in d if e["offset"] == 1048576][0]' "$VBAS" map $F b --json)
expect_json "fsmap --physical: a reflinked block names a, a-snap and b at their offsets" \
	"sorted((r['volume'], r['logical']) for r in d) == [('a-snap', 0), ('b', 1048576)]" \
	"$VBAS" fsmap $F --physical $PR --json
expect_out "fsmap: text names the owner" "^ +$PR +4\.0 KiB data +- +0 a-snap$" "$VBAS" fsmap $F --physical $PR
expect_json "fsmap --json: a data row has every key, level null" \
	'all(list(r) == ["physical", "length", "owner", "level", "volume_id", "logical", "volume"] for r in d) and d[0]["level"] is None and d[0]["logical"] == 0 and d[0]["volume"] == "a-snap"' \
	"$VBAS" fsmap $F --physical $PR --json
expect_fail "fsmap --summary -o: refused" 2 "^vbas: fsmap: --summary: a summary, not a table" \
	"$VBAS" fsmap $F --summary -o owner
expect_json "fsmap --summary --json: data per volume" \
	'[(v["name"], v["data"]) for v in d["volumes"]] == [("a", 2**20), ("a-snap", 2**20), ("b", 262144)] and d["superblock"] == 8192' \
	"$VBAS" fsmap $F --summary --json
expect_out "fsmap --summary: text" "^data of 'a-snap' +1048576  1\.0 MiB$" "$VBAS" fsmap $F --summary
expect_json "fsmap --start/--length: a sub-range, clipped" \
	'd[0]["physical"] == 4096 and sum(r["length"] for r in d if r["owner"] != "data") <= 8192 and max(r["physical"] + r["length"] for r in d) == 12288' \
	"$VBAS" fsmap $F --start 4096 --length 8192 --json
expect_fail "fsmap: --physical with --start" 2 "^vbas: fsmap: --physical: one block: not with --start or --length" \
	"$VBAS" fsmap $F --physical 0 --start 0
expect_fail "fsmap: --length 0" 2 "^vbas: fsmap: --length: must not be 0" "$VBAS" fsmap $F --length 0
expect_fail "fsmap: a misaligned start" 1 "^vbas: fsmap: $F: offset 100 and length 0 must be multiples of the block size \(4096\)" \
	"$VBAS" fsmap $F --start 100
expect_fail "fsmap: past the end" 1 "^vbas: fsmap: $F: 16777216\+4096 is past the end of the pool" \
	"$VBAS" fsmap $F --start 16M --length 4096
expect_fail "fsmap: --physical past the end" 1 "^vbas: fsmap: $F: --physical 16777216 is past the end of the pool" \
	"$VBAS" fsmap $F --physical 16M
expect_fail "fsmap: no pool" 1 "^vbas: fsmap: nosuch.img: No such file" "$VBAS" fsmap nosuch.img
expect_json_fail "fsmap --json: not a pool gives a JSON error" \
	'd["error"]["errno"] == "EINVAL"' "$VBAS" fsmap junk.img --json

# ---- the reverse map: off at format, built later, checked three ways ------------

F=rmap.img
expect_ok "rmap: format --no-rmap" "$VBAS" format $F --size 16M --no-rmap
expect_json "rmap: info says the pool keeps none" 'd["rmap"] is False' "$VBAS" info $F --json
expect_out "rmap: info text" "^reverse map +no$" "$VBAS" info $F
expect_ok "rmap: volumes, a snapshot, a reflink" sh -c "'$VBAS' create $F a --size 4M &&
	'$VBAS' write $F a d1m && '$VBAS' snapshot $F a a-snap && '$VBAS' create $F b --size 4M &&
	'$VBAS' reflink $F a 0 b 1048576 65536 && '$VBAS' write $F a n64k"
expect_json "rmap: check without one counts no records" \
	'd["clean"] and d["rmap_records"] == 0' "$VBAS" check $F --json
expect_ok "rmap: fsmap without one (the walk)" sh -c "'$VBAS' fsmap $F --json > rmap-walk.json"
expect_json "rmap: fsmap --summary shows no reverse map yet" 'd["reverse_map"] == 0' \
	"$VBAS" fsmap $F --summary --json
expect_ok "rmap: set --rmap builds it" "$VBAS" set $F --rmap
expect_json "rmap: info says it keeps one" 'd["rmap"] is True' "$VBAS" info $F --json
expect_json "rmap: check is three-way, clean, with a record per distinct extent" \
	'd["clean"] and d["rmap_records"] == d["extents"] == 4' "$VBAS" check $F --json
expect_out "rmap: check's text counts the records" "^clean: .* reverse-map records" "$VBAS" check $F
expect_json "rmap: fsmap from the reverse map names the same data as the walk did" \
	'[r for r in d if r["owner"] == "data"] == [r for r in json.load(open("rmap-walk.json"))["ranges"] if r["owner"] == "data"]' \
	"$VBAS" fsmap $F --json
expect_json "rmap: fsmap --summary counts its nodes" 'd["reverse_map"] >= 4096' \
	"$VBAS" fsmap $F --summary --json
expect_ok "rmap: set --rmap again: nothing to do" "$VBAS" set $F --rmap
expect_ok "rmap: writes keep it" "$VBAS" write $F b --offset 1M d1m
expect_json "rmap: still clean three ways" 'd["clean"] and d["rmap_records"] >= 4' \
	"$VBAS" check $F --json
expect_fail "rmap: set --rmap of no pool" 1 "^vbas: set: nosuch.img: No such file" \
	"$VBAS" set nosuch.img --rmap
expect_fail "rmap: format --no-rmap takes no value" 2 "^vbas: format: --no-rmap" \
	"$VBAS" format $F --size 16M --no-rmap=yes
expect_fail "rmap: --rmap is not a format option" 2 "^vbas: format: --rmap" \
	"$VBAS" format x.img --size 16M --rmap

# ---- resize-pool: shrink (and grow) ----------------------------------------------

F=shrink.img
expect_ok "shrink: format a 64M pool" "$VBAS" format $F --size 64M
# A filler written first and deleted last leaves the volumes high in the pool.
expect_ok "shrink: a filler, volumes, snapshots, a clone and a reflink above it" sh -c "
	'$VBAS' create $F fill --size 30M && head -c 30M /dev/zero | tr '\\0' x |
	'$VBAS' write $F fill - && '$VBAS' create $F a --size 8M &&
	'$VBAS' write $F a d1m && '$VBAS' write $F a --offset 4M d1m &&
	'$VBAS' snapshot $F a a-snap && '$VBAS' clone $F a-snap c && '$VBAS' write $F c n64k &&
	'$VBAS' create $F b --size 4M && '$VBAS' reflink $F a 0 b 1048576 65536 &&
	'$VBAS' delete $F fill --yes"
expect_ok "shrink: what each volume reads, kept" sh -c "
	for v in a a-snap c b; do '$VBAS' read $F \$v > shrink-\$v.before || exit 1; done"
expect_json "shrink: blocks in use past 24M before" \
	'any(r["owner"] != "free" for r in d)' "$VBAS" fsmap $F --start 24M --json
expect_fail "shrink: below what is in use: refused" 1 \
	"^vbas: resize-pool: $F: shrink to .* blocks are in use.*No space left" \
	"$VBAS" resize-pool $F --size 2M
expect_json "shrink: refused, nothing changed" 'd["size"] == 64 << 20 and d["shrink_to"] == 0' \
	"$VBAS" info $F --json
expect_json "shrink: to 24M, moving data and metadata" \
	'd["size"] == 24 << 20 and d["moved_data"] > 0 and d["moved_nodes"] > 0 and d["steps"] >= 1' \
	"$VBAS" resize-pool $F --size 24M --json
expect_ok "shrink: the file is truncated" test "$(fsize $F)" -eq $((24 << 20))
expect_json "shrink: check is clean (three-way)" 'd["clean"]' "$VBAS" check $F --json
expect_ok "shrink: every volume reads what it did" sh -c "
	for v in a a-snap c b; do '$VBAS' read $F \$v | cmp - shrink-\$v.before || exit 1; done"
expect_json "shrink: still shared: a snapshot's blocks are a's" \
	'len([r for r in d if r["owner"] == "data" and r.get("volume") == "a-snap"]) > 0' \
	"$VBAS" fsmap $F --json
expect_out "shrink: text output names what moved" "^$F: 20971520 bytes .* moved .* in [0-9]+ commit" \
	"$VBAS" resize-pool $F --size 20M
expect_ok "shrink: grows back with resize-pool --size +8M" "$VBAS" resize-pool $F --size +8M
expect_json "shrink: grown" 'd["size"] == 28 << 20' "$VBAS" info $F --json
expect_ok "shrink: writes after the moves" "$VBAS" write $F c --offset 2M d1m
expect_json "shrink: clean after" 'd["clean"]' "$VBAS" check $F --json
expect_fail "shrink: no shrink to cancel" 1 "^vbas: resize-pool: $F: shrink cancel: no shrink" \
	"$VBAS" resize-pool $F --cancel
expect_fail "shrink: --cancel with --size" 2 "^vbas: resize-pool: --cancel: .*no --size" \
	"$VBAS" resize-pool $F --cancel --size 8M
expect_fail "shrink: no --size" 2 "^vbas: resize-pool: --size: missing" "$VBAS" resize-pool $F
expect_fail "shrink: a bad size" 2 "^vbas: resize-pool: --size: invalid size" \
	"$VBAS" resize-pool $F --size 12Q
expect_fail "shrink: below the smallest pool" 1 "^vbas: resize-pool: $F: shrink: .*smallest pool" \
	"$VBAS" resize-pool $F --size 4K
expect_fail "shrink: no such pool" 1 "^vbas: resize-pool: nosuch.img: No such file" \
	"$VBAS" resize-pool nosuch.img --size 8M
expect_ok "shrink: a pool without a reverse map" sh -c "'$VBAS' format norm.img --size 16M --no-rmap"
expect_fail "shrink: refused without a reverse map, naming set --rmap" 1 \
	"^vbas: resize-pool: norm.img: shrink: .*reverse map.*set POOL --rmap" \
	"$VBAS" resize-pool norm.img --size 8M

tap_end
