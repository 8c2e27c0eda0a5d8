#!/usr/bin/env bash
# Runs every test of vbas for each build directory given (e.g. build
# build-san) and prints one TAP-style line per test case, then the total as
# its last line: "N passed, N failed, N skipped".
#
# A test case that could not run reports "ok N ... # SKIP reason" (the
# shell suites, tests/tap.sh) or "not ok N # SKIP name" (cmocka's skip());
# either counts as skipped, not as passed or failed.  Under CI (CI=true) a
# skip is a failure: the CI machine (Debian 12, root, the packages of
# scripts/install-deps.sh) can run every test.  A test that legitimately
# cannot run there is named in CI_SKIP_OK below (none is).
#
#   tests/run-tests.sh BUILD... [--fuzz DIR]
#                                   run the tests; --fuzz DIR (the fuzz
#                                   build, make fuzz-bin): also each fuzz
#                                   harness for $FUZZ_CHECK_TIME seconds
#                                   (default 20) and the replay of every
#                                   kept finding in fuzz/regress/
#                                   (fuzz/run.sh), each a test
#   tests/run-tests.sh --self-test  check this script's counting (TAP)
#
# Suites run side by side, $TEST_JOBS at a time (default: the number of
# processors; TEST_JOBS=1 runs them one after another), each counted as it
# ends; the time each took follows its summary line.
set -u
cd "$(dirname "$0")/.."

# Skips allowed under CI: extended regular expressions matched against
# "LABEL: LINE" (LABEL is the suite, e.g. build/nbd).
CI_SKIP_OK=()

pass=0
fail=0
skipped=0
failed=()
ci_skips=()
notok=()
fail_logs=()

is_ci() { [ "${CI:-}" = true ] || [ "${CI:-}" = 1 ]; }

# count_log LABEL LOG RC [NOTE]: counts LOG's test cases into pass, fail
# and skipped (and failed, ci_skips), prints them and the suite's summary
# (with NOTE after it).
count_log() {
	local label=$1 log=$2 rc=$3 note=${4:-} line p=0 f=0 s=0 c=0 ok
	local -a bad=()
	while IFS= read -r line; do
		if [[ $line =~ ^(not\ )?ok\ [0-9]+ ]]; then
			echo "$label: $line"
			if [[ $line =~ \#\ *[Ss][Kk][Ii][Pp]([^A-Za-z]|$) ]]; then
				ok=0
				if is_ci; then
					local pat
					for pat in "${CI_SKIP_OK[@]+"${CI_SKIP_OK[@]}"}"; do
						[[ "$label: $line" =~ $pat ]] && ok=1
					done
				else
					ok=1
				fi
				if [ "$ok" -eq 1 ]; then
					s=$((s + 1))
				else
					c=$((c + 1))
					bad+=("$label: $line")
				fi
			elif [[ $line == not* ]]; then
				f=$((f + 1))
				notok+=("$label: $line")
			else
				p=$((p + 1))
			fi
		fi
	done <"$log"
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1   # crashed or failed outside a test case
		echo "not ok - $label: exit status $rc"
	fi
	local l
	for l in "${bad[@]+"${bad[@]}"}"; do
		echo "not ok - $l: skipped under CI (CI=true), which can run every test"
		ci_skips+=("$l")
	done
	f=$((f + c))
	echo "# $label: $p passed, $f failed, $s skipped$note"
	if [ "$f" -ne 0 ]; then
		failed+=("$label")
		echo "# ---- output of $label ----"
		grep -vE '^ok [0-9]+' "$log" | tail -n 60 | sed 's/^/#   /'
		fail_logs+=("$label" "$log")
	fi
	pass=$((pass + p))
	fail=$((fail + f))
	skipped=$((skipped + s))
}

# Suites run as jobs, at most $TEST_JOBS at once (default: the number of
# processors).  A suite of class "sys" (loop devices, mounts, nbdkit, real
# clients: the shell suites) never runs beside another "sys" suite, so that
# two never race for the same devices or wait on each other's servers; the
# "cpu" suites (unit, model, crash, fuzz) run beside anything.  Suites start
# in the order queued (the longest first) and are counted as they finish.
q_label=()
q_class=()
q_cmd=()
queue() {   # class label command...
	q_class+=("$1")
	q_label+=("$2")
	shift 2
	q_cmd+=("$(printf '%q ' "$@")")
}

run_queue() {
	local jobs=${TEST_JOBS:-$(nproc 2>/dev/null || echo 1)}
	local n=${#q_label[@]} i running=0 sys_busy=0 left pid
	left=$n
	local -a state=() pids=()
	local -A index_of=()
	[ "$jobs" -ge 1 ] 2>/dev/null || jobs=1
	while [ "$left" -gt 0 ]; do
		for ((i = 0; i < n && running < jobs; i++)); do
			[ -z "${state[i]:-}" ] || continue
			if [ "${q_class[i]}" = sys ]; then
				[ "$sys_busy" -eq 0 ] || continue
				sys_busy=1
			fi
			local log="$logdir/$i.log"
			(
				t0=$SECONDS
				eval "${q_cmd[i]}" >"$log" 2>&1
				rc=$?
				echo "$rc $((SECONDS - t0))" >"$log.rc"
			) &
			pids[i]=$!
			index_of[$!]=$i
			state[i]=running
			running=$((running + 1))
		done
		wait -n -p pid
		i=${index_of[$pid]}
		state[i]=done
		running=$((running - 1))
		left=$((left - 1))
		[ "${q_class[i]}" != sys ] || sys_busy=0
		local rc=1 secs=0
		[ -f "$logdir/$i.log.rc" ] && read -r rc secs <"$logdir/$i.log.rc"
		count_log "${q_label[i]}" "$logdir/$i.log" "$rc" " ($secs s)"
	done
}

summary() {
	if [ ${#ci_skips[@]} -ne 0 ]; then
		echo "# skipped under CI, counted as failed:"
		printf '#   %s\n' "${ci_skips[@]}"
	fi
	# Again at the end, where a reader of the last lines looks: the
	# failed cases, and the last lines of each failed suite's output.
	local i
	for ((i = 0; i < ${#fail_logs[@]}; i += 2)); do
		echo "# ---- the end of ${fail_logs[i]}'s output ----"
		grep -vE '^ok [0-9]+' "${fail_logs[i + 1]}" | tail -n 15 | sed 's/^/#   /'
	done
	if [ ${#notok[@]} -ne 0 ]; then
		echo "# failed cases:"
		printf '#   %s\n' "${notok[@]}"
	fi
	if [ ${#failed[@]} -ne 0 ]; then
		echo "# failed: ${failed[*]}"
	fi
	echo "$pass passed, $fail failed, $skipped skipped"
}

# ---- Self-test: the counting, on made-up logs ------------------------------

self_test() {
	local t n=0 bad=0 got want
	t=$(mktemp -d)
	cat >"$t/mixed.log" <<'EOF'
1..7
ok 1 - plain
ok 2 - file systems on loop devices # SKIP losetup and mount need root
not ok 3 # SKIP t_buffered
ok 4 - a description that mentions skipping # not a directive
not ok 5 - broken
#   ok 6 - a diagnostic that looks like a result
ok 7 - skip in the name, no directive
ok 8 - lower case # skip no tool
EOF
	printf 'ok 1 - a\n' >"$t/crash.log"
	printf 'ok 1 - a\nok 2 - b # SKIP needs root\n' >"$t/allowed.log"

	# check DESC WANT CI RC LOG [ALLOWED-PATTERN]: the last line of a run
	# over LOG is WANT.
	check() {
		local desc=$1 w=$2 ci=$3 rc=$4 log=$5 allow=${6:-}
		got=$(
			pass=0 fail=0 skipped=0 failed=() ci_skips=() notok=() fail_logs=()
			CI_SKIP_OK=()
			[ -n "$allow" ] && CI_SKIP_OK=("$allow")
			CI=$ci count_log test "$log" "$rc" >"$t/out"
			CI=$ci summary | tail -n 1
		)
		n=$((n + 1))
		if [ "$got" = "$w" ]; then
			echo "ok $n - $desc"
		else
			echo "not ok $n - $desc"
			echo "#   want: $w"
			echo "#   got:  $got"
			bad=$((bad + 1))
		fi
	}
	check "skips counted apart, not as passed (both TAP forms, any case)" \
		"3 passed, 1 failed, 3 skipped" "" 0 "$t/mixed.log"
	check "under CI=true a skip is a failure" \
		"3 passed, 4 failed, 0 skipped" true 0 "$t/mixed.log"
	n=$((n + 1))
	if (CI=true count_log test "$t/mixed.log" 0; CI=true summary) 2>&1 |
		grep -q '^#   test: ok 2 - file systems on loop devices # SKIP losetup'; then
		echo "ok $n - under CI=true the skips are named in the summary"
	else
		echo "not ok $n - under CI=true the skips are named in the summary"
		bad=$((bad + 1))
	fi
	check "a skip CI_SKIP_OK names stays a skip under CI" \
		"1 passed, 0 failed, 1 skipped" true 0 "$t/allowed.log" 'needs root'
	check "a non-zero exit without a failed case is a failure" \
		"1 passed, 1 failed, 0 skipped" "" 134 "$t/crash.log"
	check "CI=false is not CI" \
		"1 passed, 0 failed, 1 skipped" false 0 "$t/allowed.log"
	n=$((n + 1))
	if (count_log test "$t/mixed.log" 0 >/dev/null; summary) 2>&1 | tail -n 4 |
		grep -q '^#   test: not ok 5 - broken$'; then
		echo "ok $n - the failed cases are named again just before the last line"
	else
		echo "not ok $n - the failed cases are named again just before the last line"
		bad=$((bad + 1))
	fi
	echo "1..$n"
	rm -rf "$t"
	[ "$bad" -eq 0 ]
}

if [ "${1:-}" = --self-test ]; then
	self_test
	exit
fi

logdir=$(mktemp -d)
trap 'rm -rf "$logdir"' EXIT

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
queue cpu runner tests/run-tests.sh --self-test
# The crash tests take longest (the sanitizer build's most): queue them first.
# Under the sanitizers they take a third of the points the plain build does,
# and the unit and model tests that loop over power cuts or random
# operations half (VBAS_OPS_PCT; the same scenarios and modes): the
# sanitizers look for memory errors, which the points taken find as well,
# and the whole check stays within its time on two cores.
for build in "${builds[@]}"; do
	for t in "$build"/tests/crash/test-*; do
		[ -x "$t" ] || continue
		case "$t" in *.d|*.o) continue;; esac
		if grep -qa __asan_init "$t"; then
			queue cpu "$t" env VBAS_OPS_PCT=35 "$t"
		else
			queue cpu "$t" "$t"
		fi
	done
done
for build in "${builds[@]}"; do
	for t in "$build"/tests/unit/test-* "$build"/tests/model/test-*; do
		[ -x "$t" ] || continue
		case "$t" in *.d|*.o) continue;; esac
		if grep -qa __asan_init "$t"; then
			queue cpu "$t" env VBAS_OPS_PCT=50 "$t"
		else
			queue cpu "$t" "$t"
		fi
	done
	# The check-heavy suites once more, every check keeping 4 KiB in
	# memory for its spools: all of it through runs of a temporary file.
	if ! grep -qa __asan_init "$build/vbas"; then
		for s in hostile rmap; do
			[ -x "$build/tests/unit/test-$s" ] &&
				queue cpu "$build/tests/unit/test-$s+spool" \
					env VBAS_CHECK_SPOOL=4096 "$build/tests/unit/test-$s"
		done
	fi
	queue sys "$build/cli" tests/cli/test-cli.sh "$build"
	queue sys "$build/cli-hostile" tests/cli/test-hostile.sh "$build"
	queue sys "$build/cli-huge" tests/cli/test-huge.sh "$build"
	# The installed library (a program linked against libvbas.so): the
	# plain build's only, a sanitizer build's needs its runtime.
	if ! grep -qa __asan_init "$build/vbas"; then
		queue sys "$build/install" tests/cli/test-install.sh "$build"
		# The man pages and the bash completion against the binary
		# (a few seconds; the plain build's, as the pages are one).
		queue cpu "$build/docs" tests/cli/test-docs.sh "$build"
	fi
	if grep -qa __asan_init "$build/vbas"; then
		# The sanitizer build has no plugin: nbdkit, which is not built
		# with ASan, cannot dlopen an ASan-built one.  Only the checks of
		# vbas serve's arguments run there; the NBD tests run against the
		# plain build.
		queue sys "$build/nbd" tests/nbd/test-nbd.sh "$build" --args-only
	else
		queue sys "$build/nbd" tests/nbd/test-nbd.sh "$build"
	fi
done
if [ -n "$fuzz" ]; then
	for h in node sb pool ctl; do
		queue cpu "$fuzz/fuzz-$h" fuzz/run.sh "$fuzz" --time "${FUZZ_CHECK_TIME:-20}" "$h"
	done
fi
run_queue
summary
[ "$fail" -eq 0 ]
