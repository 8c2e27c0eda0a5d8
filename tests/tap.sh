# TAP helpers shared by the shell test suites (tests/cli, tests/nbd).
# Source after setting T (the suite's temporary directory).  Each check
# prints "ok N - DESC", "not ok N - DESC" with "#   " diagnostics, or
# "ok N - DESC # SKIP REASON";
# tap_end prints the plan and exits 1 if any check failed.

N=0
FAILED=0
pass() { N=$((N + 1)); echo "ok $N - $1"; }

# skip DESC REASON: a check that could not run here ("ok N - DESC # SKIP
# REASON"); tests/run-tests.sh counts it apart, and as a failure under CI.
skip() { N=$((N + 1)); echo "ok $N - $1 # SKIP $2"; }

# fail DESC [DIAGNOSTIC...]
fail() {
	local d=$1 l
	shift
	N=$((N + 1))
	FAILED=$((FAILED + 1))
	echo "not ok $N - $d"
	for l in "$@"; do
		printf '%s\n' "$l" | head -30 | sed 's/^/#   /'
	done
}

# run CMD...: stdout in $T/out, stderr in $T/err, the status in RC (also
# under set -e, which stays as it was).
run() {
	local e=$-
	set +e
	"$@" >"$T/out" 2>"$T/err"
	RC=$?
	[[ $e == *e* ]] && set -e
	return 0
}

# A sanitizer report on stderr (of the last run) fails any check.
sanitizer_clean() { ! grep -Eq 'Sanitizer|runtime error:' "$T/err"; }

# expect_ok DESC CMD...: exit 0, nothing from a sanitizer (the NBD tests
# have their own).
expect_ok() {
	local d=$1
	shift
	run "$@"
	if [ "$RC" -eq 0 ] && sanitizer_clean; then
		pass "$d"
	else
		fail "$d" "exit $RC: $*" "stderr: $(cat "$T/err")"
	fi
}

# expect_true DESC CMD...: the command (a test, cmp, grep ...) succeeds.
expect_true() {
	local d=$1
	shift
	if "$@" >"$T/tout" 2>&1; then
		pass "$d"
	else
		fail "$d" "failed: $*" "$(head -c 1500 "$T/tout")"
	fi
}

# A table's JSON ({"vbas_format": N, ROWS: [...]}, tools/table.h) is
# its rows for jget and expect_json (d); the wrapper has tests of its own.
JSON_ROWS='d = next(v for k, v in d.items() if k != "vbas_format") if isinstance(d, dict) and "vbas_format" in d and len(d) == 2 else d'

# jget EXPR CMD...: a value from the command's JSON output, the parsed
# value being d ("" on error).
jget() {
	local expr=$1
	shift
	"$@" 2>/dev/null | python3 -c 'import json, sys
d = json.load(sys.stdin)
exec(sys.argv[2])
print(eval(sys.argv[1]))' "$expr" "$JSON_ROWS" 2>/dev/null || true
}

# expect_json DESC PY_EXPR CMD...: exit 0, stdout is JSON, and the Python
# expression is true with the parsed value in d (and nothing from a
# sanitizer, where the script defines sanitizer_clean).
# json_holds PY_EXPR: $T/out is JSON and the expression is true of it (d).
json_holds() {
	python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
exec(sys.argv[3])
sys.exit(0 if eval(sys.argv[2]) else 1)' "$T/out" "$1" "$JSON_ROWS" 2>"$T/pyerr"
}

expect_json() {
	local d=$1 expr=$2
	shift 2
	run "$@"
	if [ "$RC" -eq 0 ] && { ! declare -F sanitizer_clean >/dev/null || sanitizer_clean; } &&
		json_holds "$expr"; then
		pass "$d"
	else
		fail "$d" "want: $expr; exit $RC: $*" "stdout: $(head -c 800 "$T/out")" \
			"stderr: $(cat "$T/err")" "python: $(cat "$T/pyerr" 2>/dev/null)"
	fi
}

tap_end() {
	echo "1..$N"
	if [ "$FAILED" -ne 0 ]; then
		echo "# $FAILED of $N checks failed"
		exit 1
	fi
}
