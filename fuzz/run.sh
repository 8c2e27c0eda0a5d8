#!/usr/bin/env bash
# Runs vbas's libFuzzer harnesses (docs/fuzzing.md) and replays the kept
# findings, printing a TAP line per run and per replayed file.
#   fuzz/run.sh BUILD [--time SEC] [--replay-only] [HARNESS...]
# BUILD is the fuzz build directory (make fuzz-bin: build-fuzz).  Each
# harness runs for SEC seconds (default 300) over the seeds made by
# BUILD/fuzz/mkseeds (made again for each run, in a directory of its own
# under BUILD/fuzz, removed after) and the
# kept corpus ($FUZZ_CORPUS/HARNESS, default BUILD/fuzz/corpus/HARNESS,
# which libFuzzer grows).  libFuzzer runs in fork mode and goes on after a
# crash, hang, leak or sanitizer report, so that one run collects every
# finding; any finding fails the run, and each input is left in
# BUILD/fuzz/artifacts/HARNESS/TIME/.  Every file in fuzz/regress/HARNESS/
# is replayed first, each one a test.
set -u
cd "$(dirname "$0")/.."
build=${1:?usage: fuzz/run.sh BUILD [--time SEC] [--replay-only] [HARNESS...]}
shift
time=300
replay_only=0
names=()
while [ $# -gt 0 ]; do
	case $1 in
	--time) time=$2; shift 2;;
	--replay-only) replay_only=1; shift;;
	*) names+=("$1"); shift;;
	esac
done
[ ${#names[@]} -gt 0 ] || names=(node sb pool ctl)

# -max_len per harness: pool and node inputs are sparse images of up to
# FZ_MAX_RECS blocks (fuzz/fuzz.h), sb the first blocks of a device.
max_len() {
	case $1 in
	pool|node) echo $((320 * 4100));;
	sb) echo 65536;;
	ctl) echo 1100;;
	esac
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
opts=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048)

n=0
if [ "$replay_only" -eq 0 ]; then
	mkdir -p "$build/fuzz"
	seeds=$(mktemp -d "$build/fuzz/seeds.XXXXXX")
	trap 'rm -rf "$seeds"' EXIT
	if ! ASAN_OPTIONS=detect_leaks=0 "$build/fuzz/mkseeds" "$seeds" >/dev/null; then
		echo "not ok 1 - fuzz: the seed corpora could not be made"
		exit 1
	fi
fi
rc=0
for h in "${names[@]}"; do
	bin=$build/fuzz/fuzz-$h
	if [ ! -x "$bin" ]; then
		echo "not ok $((++n)) - fuzz $h: no $bin (make fuzz-bin)"
		rc=1
		continue
	fi
	for f in fuzz/regress/"$h"/*; do
		[ -f "$f" ] || continue
		if out=$(timeout 60 "$bin" "${opts[@]}" "$f" 2>&1); then
			echo "ok $((++n)) - fuzz $h: replay of $f"
		else
			echo "not ok $((++n)) - fuzz $h: replay of $f fails"
			echo "$out" | grep -E 'ERROR|SUMMARY|runtime error|#[0-9]+ ' | head -n 20 | sed 's/^/#   /'
			rc=1
		fi
	done
	[ "$replay_only" -eq 0 ] || continue
	corpus=${FUZZ_CORPUS:-$build/fuzz/corpus}/$h
	stamp=$(date +%Y%m%d-%H%M%S)
	art=$build/fuzz/artifacts/$h/$stamp
	log=$build/fuzz/logs/$h-$stamp-$$.log
	mkdir -p "$corpus" "$art" "$build/fuzz/logs"
	"$bin" "${opts[@]}" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
		-max_len="$(max_len "$h")" -max_total_time="$time" \
		-artifact_prefix="$art/" "$corpus" "$seeds/$h" >"$log" 2>&1
	st=$?
	# The last status line: "#RUNS: cov: C ft: F corp: N exec/s S ..."
	last=$(grep -aE '^#[0-9]+: cov: ' "$log" | tail -n 1)
	runs=$(echo "$last" | sed -nE 's/^#([0-9]+):.*/\1/p')
	speed=$(echo "$last" | sed -nE 's/.*exec\/s:? ([0-9]+).*/\1/p')
	cov=$(echo "$last" | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+')
	found=$(find "$art" -type f | wc -l)
	if [ "$st" -eq 0 ] && [ "$found" -eq 0 ]; then
		echo "ok $((++n)) - fuzz $h: ${time} s, ${runs:-?} runs, ${speed:-?}/s, ${cov:-?}"
		rmdir "$art" 2>/dev/null
	else
		echo "not ok $((++n)) - fuzz $h: $found finding(s), exit $st, after ${runs:-?} runs; log $log"
		grep -aE 'ERROR|SUMMARY|runtime error|^ +#[0-9]+ 0x' "$log" | head -n 30 | sed 's/^/#   /'
		find "$art" -type f | head -n 10 | while read -r a; do
			echo "#   reproducer: $a (replay: $bin $a)"
		done
		rc=1
	fi
done
exit $rc
