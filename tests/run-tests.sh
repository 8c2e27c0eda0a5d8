#!/usr/bin/env bash
# Runs every test of vbas for each build directory given (e.g. build
# build-san) and prints one TAP-style line per test case, then the total as
# its last line: "N passed, N failed".  --fuzz DIR (the fuzz build, make
# fuzz-bin): also each fuzz harness for $FUZZ_CHECK_TIME seconds (default
# 20) and the replay of every kept finding in fuzz/regress/ (fuzz/run.sh),
# each a test.
set -u
cd "$(dirname "$0")/.."
pass=0
fail=0
failed=()
logdir=$(mktemp -d)
trap 'rm -rf "$logdir"' EXIT

run_one() {   # label command...
	local label=$1; shift
	local log="$logdir/$(echo "$label" | tr '/ ' '__').log"
	local t0=$SECONDS
	"$@" >"$log" 2>&1
	local rc=$?
	local p f
	p=$(grep -cE '^ok [0-9]+' "$log")
	f=$(grep -cE '^not ok [0-9]+' "$log")
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1   # crashed or failed outside a test case
		echo "not ok - $label: exit status $rc"
	fi
	grep -E '^(not )?ok [0-9]+' "$log" | sed "s|^|$label: |"
	echo "# $label: $p passed, $f failed ($((SECONDS - t0)) s)"
	if [ "$f" -ne 0 ]; then
		failed+=("$label")
		echo "# ---- output of $label ----"
		grep -vE '^ok [0-9]+' "$log" | tail -n 60 | sed 's/^/#   /'
	fi
	pass=$((pass + p))
	fail=$((fail + f))
}

export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
builds=()
fuzz=
while [ $# -gt 0 ]; do
	case $1 in
	--fuzz) fuzz=$2; shift 2;;
	*) builds+=("$1"); shift;;
	esac
done
for build in "${builds[@]}"; do
	for t in "$build"/tests/unit/test-* "$build"/tests/model/test-* "$build"/tests/crash/test-*; do
		[ -x "$t" ] || continue
		case "$t" in *.d|*.o) continue;; esac
		run_one "$t" "$t"
	done
	run_one "$build/cli" tests/cli/test-cli.sh "$build"
	if grep -qa __asan_init "$build/vbas"; then
		# The sanitizer build has no plugin: nbdkit, which is not built
		# with ASan, cannot dlopen an ASan-built one.  Only the checks of
		# vbas serve's arguments run there; the NBD tests run against the
		# plain build.
		run_one "$build/nbd" tests/nbd/test-nbd.sh "$build" --args-only
	else
		run_one "$build/nbd" tests/nbd/test-nbd.sh "$build"
	fi
done
if [ -n "$fuzz" ]; then
	for h in node sb pool ctl; do
		run_one "$fuzz/fuzz-$h" fuzz/run.sh "$fuzz" --time "${FUZZ_CHECK_TIME:-20}" "$h"
	done
fi
if [ ${#failed[@]} -ne 0 ]; then
	echo "# failed: ${failed[*]}"
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
