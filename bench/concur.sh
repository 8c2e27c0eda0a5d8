#!/bin/sh
# A served pool under concurrency: bench/concur.sh BUILD_DIR [SECONDS]
#
# 1. Warm reads: 4 KiB random reads at QD1 and QD32 of a 256 MiB export
# whose every block was written at random (65,536 extents), all of it in
# the page cache: vbas served through the page cache (direct=false, what
# vbas serve --buffered runs) against nbdkit's file plugin on a raw file
# holding the same bytes.  Target (issue 14): >= 0.9x at both depths.
#
# 2. The VM-with-fsync pattern.  One fio client reads and writes 4 KiB at random at QD32 (half reads) over
# a 256 MiB export written in full beforehand; its completion latency
# (p50, p99) is measured alone, then while a second client writes 4 KiB
# into fresh space of ANOTHER export and flushes after each write, 100
# times a second (a VM whose guest runs fsync every 10 ms).  With vbas both
# exports are volumes of one pool served by one nbdkit: each flush of the
# second client commits the pool (new mappings: a superblock, two device
# flushes).  The peer is qemu-nbd with qcow2 (--cache=none --aio=native),
# one server per image, both images on the same file system.  Each runs
# twice: O_DIRECT (vbas serve; qemu-nbd --cache=none --aio=native) and
# through the page cache (vbas serve --buffered; qemu-nbd
# --cache=writeback), where the device's latency no longer hides a commit
# that stops the other client's I/O.
#
# Target (issue 14): the p99 with the flushing client within 2x of the
# p99 without.  At the end, "bench: KEY VALUE UNIT" lines carry the
# figures (bench/results.sh): concur_warm_qdN_{vpc,file} (IOPS) and
# concur_MODE_{alone,flush}_{rp99,wp99,iops}_SERVER (MODE direct or
# buffered, SERVER vbas or qcow2; latency in us).  The files live in a fresh
# directory under $VBAS_BENCH_DIR (default /var/tmp), removed at the end,
# also on failure; every server is stopped.
set -eu

build=${1:-build}
secs=${2:-5}
vbas=$build/vbas
plugin=$(cd "$build" 2>/dev/null && pwd)/nbdkit-vbas-plugin.so
base=${VBAS_BENCH_DIR:-/var/tmp}

skip() {
	echo
	echo "Concurrency benchmark skipped: $*"
	exit 0
}
fail() {
	echo "concur.sh: $*" >&2
	exit 1
}
[ -x "$vbas" ] || fail "$vbas not found (make first)"
[ -f "$plugin" ] || skip "no $plugin (make builds it; a sanitizer build has none)"
for t in nbdkit fio nbdinfo; do
	command -v $t >/dev/null 2>&1 || skip "no $t in \$PATH"
done
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio has no nbd engine"
qcow=1
for t in qemu-nbd qemu-img setpriv; do
	command -v $t >/dev/null 2>&1 || qcow=0
done

dir=$(mktemp -d "$base/vbas-concur.XXXXXX")
pids=
cleanup() {
	for p in $pids; do
		kill -TERM "$p" 2>/dev/null || :
	done
	for p in $pids; do
		wait "$p" 2>/dev/null || :
	done
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

W=256M
# wait_srv URI PID LOG
wait_srv() {
	i=0
	until nbdinfo --size "$1" >/dev/null 2>&1; do
		if ! kill -0 "$2" 2>/dev/null || [ $i -ge 100 ]; then
			cat "$3" >&2
			fail "a server did not start"
		fi
		sleep 0.1
		i=$((i + 1))
	done
}

# p50 and p99 completion latency (us) of reads and writes in terse v3
# output: "rp50 rp99 wp50 wp99 iops".
lat() {
	grep '^3;' "$1" | awk -F';' '{
		for (i = 18; i <= 37; i++) {
			split($i, a, "=")
			if (a[1] == "50.000000%") rp50 = a[2]
			if (a[1] == "99.000000%") rp99 = a[2]
		}
		for (i = 59; i <= 78; i++) {
			split($i, a, "=")
			if (a[1] == "50.000000%") wp50 = a[2]
			if (a[1] == "99.000000%") wp99 = a[2]
		}
		printf "%s %s %s %s %.0f\n", rp50, rp99, wp50, wp99, $8 + $49
	}'
}

# run NAME URI_MAIN URI_FLUSHER: one run without and one with the flusher;
# prints a result line.
run() {
	name=$1 um=$2 uf=$3
	set -- --ioengine=nbd --bs=4k --output-format=terse --terse-version=3 --time_based
	sync
	# A warm-up, so that "alone" does not pay for what preparing left.
	fio --name=warm "$@" --runtime=2 --uri="$um" --rw=randrw --iodepth=32 --size=$W \
		>/dev/null 2>"$dir/fio.err" || { cat "$dir/fio.err" >&2; fail "fio"; }
	set -- "$@" --runtime="$secs"
	fio --name=main "$@" --uri="$um" --rw=randrw --rwmixread=50 --iodepth=32 \
		--size=$W >"$dir/alone.out" 2>"$dir/fio.err" || { cat "$dir/fio.err" >&2; fail "fio"; }
	fio --name=flusher "$@" --uri="$uf" --rw=randwrite --iodepth=1 --fsync=1 \
		--rate_iops=100 --size=1G >"$dir/flusher.out" 2>"$dir/flusher.err" &
	fpid=$!
	fio --name=main "$@" --uri="$um" --rw=randrw --rwmixread=50 --iodepth=32 \
		--size=$W >"$dir/with.out" 2>"$dir/fio.err" || { cat "$dir/fio.err" >&2; fail "fio"; }
	wait $fpid || { cat "$dir/flusher.err" >&2; fail "the flushing fio failed"; }
	set -- $(lat "$dir/alone.out") $(lat "$dir/with.out")
	flushes=$(grep '^3;' "$dir/flusher.out" | awk -F';' '{ print $49 * 1 }')
	printf "%-14s %7s %7s %7s %7s %7s  %7s %7s %7s %7s %7s  %5.2fx %5.2fx  %s\n" "$name" \
		"$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "$9" "${10}" \
		"$(echo "$7 $2" | awk '{ print $1 / $2 }')" \
		"$(echo "$9 $4" | awk '{ print $1 / $2 }')" "$flushes"
	# NAME is "SERVER MODE".
	printf "bench: concur_%s_%s_%s_%s %s %s\n" \
		"${name#* }" alone rp99 "${name% *}" "$2" us \
		"${name#* }" alone wp99 "${name% *}" "$4" us \
		"${name#* }" alone iops "${name% *}" "$5" iops \
		"${name#* }" flush rp99 "${name% *}" "$7" us \
		"${name#* }" flush wp99 "${name% *}" "$9" us \
		"${name#* }" flush iops "${name% *}" "${10}" iops >>"$dir/bench"
}

# ---- 1. Warm reads -----------------------------------------------------------
"$vbas" format "$dir/w.pool" --size 1G >/dev/null
"$vbas" create "$dir/w.pool" v --size $W >/dev/null
head -c $W /dev/zero >"$dir/raw.img"
rm -f "$dir/w.sock" "$dir/f.sock"
nbdkit -f --exit-with-parent -U "$dir/w.sock" "$plugin" pool="$dir/w.pool" direct=false \
	>"$dir/w.log" 2>&1 &
wpid=$!
pids="$pids $wpid"
nbdkit -f --exit-with-parent -U "$dir/f.sock" file file="$dir/raw.img" >"$dir/f.log" 2>&1 &
fpid=$!
pids="$pids $fpid"
wait_srv "nbd+unix:///v?socket=$dir/w.sock" $wpid "$dir/w.log"
wait_srv "nbd+unix:///?socket=$dir/f.sock" $fpid "$dir/f.log"
for u in "nbd+unix:///v?socket=$dir/w.sock" "nbd+unix:///?socket=$dir/f.sock"; do
	fio --name=fill --ioengine=nbd --uri="$u" --rw=randwrite --bs=4k --iodepth=8 \
		--size=$W --end_fsync=1 >/dev/null 2>"$dir/fio.err" ||
		{ cat "$dir/fio.err" >&2; fail "fio fill"; }
done
sync
cat "$dir/w.pool" "$dir/raw.img" >/dev/null
echo
echo "Warm reads: 4 KiB random reads of a 256 MiB export written at random"
echo "(65,536 extents), all in the page cache ($secs s each; IOPS; target >= 0.9x)"
printf "%-6s %10s %10s %7s\n" depth "vbas pc" "nbdkit file" ratio
for qd in 1 32; do
	set --
	for u in "nbd+unix:///v?socket=$dir/w.sock" "nbd+unix:///?socket=$dir/f.sock"; do
		fio --name=r --ioengine=nbd --uri="$u" --rw=randread --bs=4k --iodepth=$qd \
			--size=$W --runtime="$secs" --time_based --output-format=terse \
			--terse-version=3 >"$dir/r.out" 2>"$dir/fio.err" ||
			{ cat "$dir/fio.err" >&2; fail "fio read"; }
		set -- "$@" "$(grep '^3;' "$dir/r.out" | awk -F';' '{ printf "%.0f", $8 }')"
	done
	printf "QD%-4s %10s %10s %6.2fx\n" $qd "$1" "$2" "$(echo "$1 $2" | awk '{ print $1 / $2 }')"
	printf "bench: concur_warm_qd%s_%s %s iops\n" $qd vpc "$1" $qd file "$2" >>"$dir/bench"
done
kill -TERM $wpid $fpid
wait $wpid $fpid || :
rm -f "$dir/w.pool" "$dir/raw.img"

# ---- 2. Latency beside a flushing client ---------------------------------------
echo
echo "Flush latency: 4 KiB random reads and writes at QD32 (half each) on one"
echo "export, alone and beside a client that writes and flushes 100 times a"
echo "second on another ($secs s each; latency in us; target: p99 with <= 2x alone)"
printf "%-14s %39s  %39s  %13s  %s\n" "" "alone" "with the flushing client" "p99 with/alone" ""
printf "%-14s %7s %7s %7s %7s %7s  %7s %7s %7s %7s %7s  %6s %6s  %s\n" server \
	"r p50" "r p99" "w p50" "w p99" IOPS "r p50" "r p99" "w p50" "w p99" IOPS read write \
	"flushes/s"

# vbas: two volumes of one pool, one server; O_DIRECT, then through the
# page cache (direct=false, what vbas serve --buffered runs).
"$vbas" format "$dir/p.pool" --size 2G >/dev/null
"$vbas" create "$dir/p.pool" main --size $W >/dev/null
"$vbas" create "$dir/p.pool" other --size 1G >/dev/null
head -c $W /dev/urandom >"$dir/fill"
"$vbas" write "$dir/p.pool" main "$dir/fill" >/dev/null
sync
for mode in direct buffered; do
	[ $mode = direct ] && opt= || opt=direct=false
	rm -f "$dir/v.sock"
	nbdkit -f --exit-with-parent -U "$dir/v.sock" "$plugin" pool="$dir/p.pool" $opt \
		>"$dir/v.log" 2>&1 &
	vpid=$!
	pids="$pids $vpid"
	wait_srv "nbd+unix:///main?socket=$dir/v.sock" $vpid "$dir/v.log"
	[ $mode = buffered ] && cat "$dir/p.pool" >/dev/null
	run "vbas $mode" "nbd+unix:///main?socket=$dir/v.sock" \
		"nbd+unix:///other?socket=$dir/v.sock"
	kill -TERM $vpid
	wait $vpid || :
done

if [ $qcow = 1 ]; then
	qemu-img create -q -f qcow2 "$dir/main.qcow2" $W
	qemu-img convert -n -f raw -O qcow2 "$dir/fill" "$dir/main.qcow2"
	for mode in direct buffered; do
		[ $mode = direct ] && opt="--cache=none --aio=native" || opt="--cache=writeback"
		rm -f "$dir/other.qcow2"
		qemu-img create -q -f qcow2 "$dir/other.qcow2" 1G
		qp=
		for n in main other; do
			rm -f "$dir/$n.sock"
			setpriv --pdeathsig TERM qemu-nbd -t -k "$dir/$n.sock" -x $n -f qcow2 \
				$opt "$dir/$n.qcow2" >"$dir/$n.log" 2>&1 &
			pids="$pids $!"
			qp="$qp $!"
			wait_srv "nbd+unix:///$n?socket=$dir/$n.sock" $! "$dir/$n.log"
		done
		[ $mode = buffered ] && cat "$dir/main.qcow2" >/dev/null
		run "qcow2 $mode" "nbd+unix:///main?socket=$dir/main.sock" \
			"nbd+unix:///other?socket=$dir/other.sock"
		kill -TERM $qp
		wait $qp || :
	done
else
	echo "qcow2    skipped: no qemu-nbd, qemu-img or setpriv"
fi

# The figures, machine-readable (bench/results.sh).
echo
cat "$dir/bench"
