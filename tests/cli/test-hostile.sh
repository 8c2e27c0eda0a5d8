#!/usr/bin/env bash
# The CLI on damaged pools: tests/cli/test-hostile.sh BUILD_DIR
#
# Each case changes one field of a live tree node of a pool file and
# recomputes its checksum (tests/cli/craft.py), then runs every reading
# command on it.  Each must end within a bound (no hang), fail where it
# passes through the damage with a message naming the block, give the right
# bytes where it does not, and print nothing from a sanitizer.  Prints TAP.
set -euo pipefail

BUILD=${1:?usage: $0 BUILD_DIR}
TESTS=$(cd "$(dirname "$0")/.." && pwd)
VBAS=$(cd "$BUILD" && pwd)/vbas
CRAFT="$TESTS/cli/craft.py"
[ -x "$VBAS" ] || { echo "Bail out! $VBAS is not built"; exit 1; }
command -v python3 >/dev/null || { echo "Bail out! python3 is needed"; exit 1; }

T=$(mktemp -d "${TMPDIR:-/tmp}/vbas-hostile.XXXXXX")
trap 'rm -rf "$T"' EXIT
cd "$T"
. "$TESTS/tap.sh"

LIMIT=60          # seconds any one command may take (a hang fails)
MiB=$((1024 * 1024))


# A pool with two volumes of three extents each and a snapshot.
make_pool() {
	rm -f pool.img
	"$VBAS" format pool.img --size 64M >/dev/null
	"$VBAS" create pool.img v1 --size 16M
	"$VBAS" create pool.img v2 --size 16M
	for off in 0 1 2; do
		"$VBAS" write pool.img v1 --offset $((off * 2 * MiB)) "$T/d1.$off"
		"$VBAS" write pool.img v2 --offset $((off * 2 * MiB)) "$T/d2.$off"
	done
	"$VBAS" snapshot pool.img v1 s1
}

for off in 0 1 2; do
	head -c $((64 * 1024)) /dev/urandom >"$T/d1.$off"
	head -c $((64 * 1024)) /dev/urandom >"$T/d2.$off"
done

# expect_caught CASE VOL DESC CMD...: with the damage, CMD fails (not by a
# time-out), says "vbas: ..." and names the block (on stderr, or among the
# problems check prints), no sanitizer report.
expect_caught() {
	local desc=$1
	shift
	run timeout "$LIMIT" "$@"
	if [ "$RC" -ne 0 ] && [ "$RC" -ne 124 ] && grep -qs "block $BLK" "$T/err" "$T/out" &&
		[[ $(head -n 1 "$T/err") == "vbas: "* ]] && sanitizer_clean; then
		pass "$desc"
	else
		fail "$desc" "want a failure naming block $BLK; exit $RC: $*" "stderr: $(cat "$T/err")"
	fi
}

# expect_ends DESC CMD...: CMD ends in time (either way), no sanitizer report.
expect_ends() {
	local desc=$1
	shift
	run timeout "$LIMIT" "$@"
	if [ "$RC" -ne 124 ] && sanitizer_clean; then
		pass "$desc"
	else
		fail "$desc" "exit $RC: $*" "stderr: $(cat "$T/err")"
	fi
}

# The volume v2, untouched by map-* cases, still reads back right.
v2_intact() {
	local off
	for off in 0 1 2; do
		"$VBAS" read pool.img v2 --offset $((off * 2 * MiB)) --length $((64 * 1024)) |
			cmp -s - "$T/d2.$off" || return 1
	done
}

# case_map CASE: damage v1's mapping leaf.
for c in map-len0 map-len-huge map-order map-older; do
	make_pool
	BLK=$(python3 "$CRAFT" pool.img "$c" v1)
	expect_caught "$c: read of the damaged volume" "$VBAS" read pool.img v1 --length 4M -
	if [ "$c" = map-older ]; then
		expect_true "map-older: read says the write was lost, returns no data" \
			grep -q "lost or misdirected write" "$T/err"
		expect_true "map-older: nothing read goes to stdout" test ! -s "$T/out"
	fi
	expect_caught "$c: map of the damaged volume" "$VBAS" map pool.img v1
	expect_caught "$c: check" "$VBAS" check pool.img
	expect_ends "$c: list" "$VBAS" list pool.img
	expect_ends "$c: list --json" "$VBAS" list pool.img --json
	expect_ends "$c: info" "$VBAS" info pool.img
	expect_ends "$c: diff" "$VBAS" diff pool.img s1 v1
	expect_ends "$c: write into the damaged volume" \
		"$VBAS" write pool.img v1 --offset 0 "$T/d2.0"
	expect_true "$c: the other volume reads back byte for byte" v2_intact
done

for c in refc-len0 refc-len-huge; do
	make_pool
	BLK=$(python3 "$CRAFT" pool.img "$c")
	expect_caught "$c: check" "$VBAS" check pool.img
	expect_caught "$c: list (usage reads the refcount tree)" "$VBAS" list pool.img
	expect_ends "$c: read" "$VBAS" read pool.img v1 --length 4M -
	expect_ends "$c: map" "$VBAS" map pool.img v1
	expect_ends "$c: write" "$VBAS" write pool.img v2 --offset 8M "$T/d1.0"
	expect_ends "$c: delete" "$VBAS" delete pool.img s1 --yes
done

# The reverse map: a record that fails its own check is caught as its
# leaf is read; valid records the leaves disagree with are caught by the
# three-way check, which names the data blocks; nothing else breaks.
make_pool
BLK=$(python3 "$CRAFT" pool.img rmap-len0)
expect_caught "rmap-len0: check" "$VBAS" check pool.img
expect_caught "rmap-len0: fsmap" "$VBAS" fsmap pool.img
expect_ends "rmap-len0: read" "$VBAS" read pool.img v1 --length 4M -
expect_ends "rmap-len0: write" "$VBAS" write pool.img v2 --offset 8M "$T/d1.0"
expect_ends "rmap-len0: delete" "$VBAS" delete pool.img s1 --yes
for c in rmap-count rmap-owner; do
	make_pool
	PB=$(python3 "$CRAFT" pool.img $c)
	run timeout "$LIMIT" "$VBAS" check pool.img
	if [ "$RC" -eq 1 ] && grep -q "^blocks $PB+[0-9]* (volume .*the reverse map says" "$T/out" &&
		sanitizer_clean; then
		pass "$c: check names the blocks and the disagreement"
	else
		fail "$c: check names the blocks and the disagreement" "exit $RC" \
			"stdout: $(head -c 800 "$T/out")" "stderr: $(cat "$T/err")"
	fi
	expect_ends "$c: fsmap" "$VBAS" fsmap pool.img
	expect_ends "$c: write over v1" "$VBAS" write pool.img v1 --offset 0 "$T/d2.0"
	expect_ends "$c: delete" "$VBAS" delete pool.img s1 --yes
	expect_true "$c: the other volume reads back byte for byte" v2_intact
done

# vbas repair: a damaged refcount tree or reverse map is rebuilt from the
# mapping trees (every volume then reads back byte for byte, check is
# clean); damage to a mapping tree is named and nothing is changed.
all_intact() {
	local off
	for off in 0 1 2; do
		for v in v1 s1; do
			"$VBAS" read pool.img $v --offset $((off * 2 * MiB)) --length $((64 * 1024)) |
				cmp -s - "$T/d1.$off" || return 1
		done
	done
	v2_intact
}
for c in refc-len0 refc-len-huge rmap-len0 rmap-count rmap-owner; do
	make_pool
	python3 "$CRAFT" pool.img "$c" >/dev/null
	cp pool.img "$T/before.img"
	what=refcount
	[[ $c == rmap-* ]] && what=reverse
	run timeout "$LIMIT" "$VBAS" repair pool.img --dry-run
	if [ "$RC" -eq 0 ] && grep -q "^the $what.*would be rebuilt" "$T/out" && cmp -s pool.img "$T/before.img" &&
		sanitizer_clean; then
		pass "$c: repair --dry-run says what it would rebuild, changes nothing"
	else
		fail "$c: repair --dry-run says what it would rebuild, changes nothing" "exit $RC" \
			"stdout: $(cat "$T/out")" "stderr: $(cat "$T/err")"
	fi
	run timeout "$LIMIT" "$VBAS" repair pool.img --json
	if [ "$RC" -eq 0 ] && python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d["clean"] and d["refcount_rebuilt"] and d["rmap_rebuilt"] == sys.argv[2].startswith("rmap") else 1)' "$T/out" "$c" &&
		sanitizer_clean; then
		pass "$c: repair rebuilds it and the pool checks clean"
	else
		fail "$c: repair rebuilds it and the pool checks clean" "exit $RC" \
			"stdout: $(cat "$T/out")" "stderr: $(cat "$T/err")"
	fi
	expect_true "$c: check is clean after the repair" "$VBAS" check pool.img
	expect_true "$c: every volume reads back byte for byte after it" all_intact
	expect_true "$c: a second repair finds nothing to do" sh -c \
		"'$VBAS' repair pool.img | grep -q '^nothing to repair'"
done
for c in map-len0 map-order; do
	make_pool
	BLK=$(python3 "$CRAFT" pool.img "$c" v1)
	cp pool.img "$T/before.img"
	expect_caught "$c: repair names the damage it does not repair" "$VBAS" repair pool.img
	expect_true "$c: a refused repair changes nothing" cmp -s pool.img "$T/before.img"
done
expect_ends "repair of a file that is no pool" "$VBAS" repair "$T/d1.0"
run "$VBAS" repair nosuch.img
if [ "$RC" -eq 1 ] && grep -q "^vbas: repair: nosuch.img: No such file" "$T/err"; then
	pass "repair of no pool: a clear error"
else
	fail "repair of no pool: a clear error" "exit $RC" "stderr: $(cat "$T/err")"
fi

# A name length of 0xffff in the volume table (a 256-byte name buffer):
# refused as the record is read, under ASan in the sanitizer build.
make_pool
BLK=$(python3 "$CRAFT" pool.img vol-namelen v2)
expect_caught "name length 0xffff: list" "$VBAS" list pool.img
expect_caught "name length 0xffff: list --json" "$VBAS" list pool.img --json
expect_caught "name length 0xffff: read" "$VBAS" read pool.img v1 --length 64K -
expect_caught "name length 0xffff: check" "$VBAS" check pool.img
expect_ends "name length 0xffff: info" "$VBAS" info pool.img

tap_end
