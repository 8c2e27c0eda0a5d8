#!/bin/sh
# NBD benchmark: bench/nbd.sh BUILD_DIR [--time SEC] [--size SIZE] [--no-qemu]
#
# The same client, fio's nbd engine (libnbd, one connection per test, no
# multi-conn), against NBD servers on unix sockets, side by side in one
# run, their files in one fresh directory under $VBAS_BENCH_DIR (default
# /var/tmp), so on one file system:
#
#   vbas   nbdkit BUILD_DIR/nbdkit-vbas-plugin.so pool=POOL (what `vbas serve`
#          runs); the library opens the pool with O_DIRECT
#   vpc    the same on another pool with direct=false (`vbas serve
#          --buffered`): through the page cache, like the file plugin's
#          writes
#   file   nbdkit file RAW cache=none fadvise=random on a sparse raw file:
#          the limit of the NBD path, and the reference of the ratios.
#          nbdkit 1.32's file plugin has no O_DIRECT: cache=none drops what
#          a request read or wrote from the page cache after it (writes:
#          sync_file_range, then POSIX_FADV_DONTNEED), fadvise=random turns
#          read-ahead off, so every read goes to the disk at its own size.
#          Writes are still queued in the page cache and written back in the
#          background while the next request arrives, which O_DIRECT cannot
#          do; hence the next column.
#   qraw   qemu-nbd --cache=none --aio=native -f raw on another sparse raw
#          file: an O_DIRECT raw reference, to tell the cost of O_DIRECT
#          from the cost of vbas
#   qcow2  qemu-nbd --cache=none --aio=native (O_DIRECT) on a qcow2 image
#          (qemu-img create defaults: 64 KiB clusters, no preallocation)
#
# The page cache of every file is dropped before each test (dd
# iflag=nocache; a no-op for the O_DIRECT files).
#
# Options: --time SEC per test (default 3), --size SIZE of the working set
# (default 1G; the directory needs 10 x SIZE free), --no-qemu to leave out
# qraw and qcow2.  About 2.75 minutes with the defaults on a 2-core VM, of
# which ~25 s is removing the files at the end (the file system frees the
# raw files' scattered blocks).
#
# Tests: 4 KiB random reads and writes at queue depth 1 and 32, 1 MiB
# sequential reads and writes at queue depth 1.  Writes three ways: fresh
# (allocating: an empty volume, a sparse file, an empty qcow2), rewrite
# (overwrite of written data), and after a snapshot (copy on write: the
# server stopped, `vbas snapshot` or `qemu-img snapshot -c`, served again,
# before each such test; the raw files have no snapshots).  Every write
# test ends with a flush (fio end_fsync=1: NBD_CMD_FLUSH) inside its timed
# run.  The servers take turns test by test (the order reversed every other
# test), so that device noise and the machine's other load hit them alike.
#
# Layout of the 3 x SIZE export: [0, SIZE) is the working set, written once
# by the fresh 1 MiB sequential write, then read, rewritten and snapshotted;
# [SIZE, 2 SIZE) and [2 SIZE, 3 SIZE) take the fresh 4 KiB writes at QD1 and
# QD32.  Fresh and copy-on-write tests make one pass at most (fio's random
# map writes no block twice), so every write allocates or copies; they stop
# after SEC seconds or at the end of the pass.  The 1 MiB copy-on-write test
# runs twice: first on the working set as written (one extent in vbas), then
# after the 4 KiB copy-on-write tests have cut it into small extents.
#
# Everything it starts (fio, nbdkit, qemu-nbd) is stopped and the directory
# removed at the end, also on failure or signal.  nbdkit runs with
# --exit-with-parent and qemu-nbd under setpriv --pdeathsig, so even a
# SIGKILL of this script stops the servers.  Exit status 0 when it ran,
# whether the targets were met or not; 1 on failure; 2 on a bad option.
set -eu

build=${1:-build}
[ $# -gt 0 ] && shift
secs=3
size=1G
qcow=1
qcow_why=
while [ $# -gt 0 ]; do
	case $1 in
	--time) secs=${2:?--time needs SEC}; shift 2 ;;
	--size) size=${2:?--size needs SIZE}; shift 2 ;;
	--no-qemu) qcow=0; qcow_why="--no-qemu"; shift ;;
	-h|--help)
		sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'
		exit 0 ;;
	*) echo "nbd.sh: unknown option '$1' (--time SEC, --size SIZE, --no-qemu)" >&2; exit 2 ;;
	esac
done
case $secs in ''|*[!0-9]*|0) echo "nbd.sh: --time $secs: want whole seconds > 0" >&2; exit 2 ;; esac
case ${size%?} in ''|*[!0-9]*) echo "nbd.sh: --size $size: want e.g. 512M or 1G" >&2; exit 2 ;; esac
case $size in
*[Gg]) W=$((${size%?} * 1024 * 1024 * 1024)) ;;
*[Mm]) W=$((${size%?} * 1024 * 1024)) ;;
*) echo "nbd.sh: --size $size: want e.g. 512M or 1G" >&2; exit 2 ;;
esac
if [ $W -lt $((64 * 1024 * 1024)) ] || [ $((W % (1024 * 1024))) != 0 ]; then
	echo "nbd.sh: --size $size: want a whole number of MiB, at least 64M" >&2
	exit 2
fi

vbas=$build/vbas
plugin=$(cd "$build" 2>/dev/null && pwd)/nbdkit-vbas-plugin.so
base=${VBAS_BENCH_DIR:-/var/tmp}

fail() {
	echo "nbd.sh: $*" >&2
	exit 1
}
# Missing tools skip the benchmark (or the qcow2 column) with a reason.
skip() {
	echo
	echo "NBD benchmark skipped: $*"
	exit 0
}
[ -x "$vbas" ] || { echo "nbd.sh: $vbas not found (make first)" >&2; exit 1; }
[ -f "$plugin" ] || skip "no $plugin (make builds it; a sanitizer build has none)"
[ -d "$base" ] || { echo "nbd.sh: VBAS_BENCH_DIR=$base is not a directory" >&2; exit 1; }
for t in nbdkit fio nbdinfo; do
	command -v $t >/dev/null 2>&1 || skip "no $t in \$PATH"
done
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio has no nbd engine (fio built without libnbd)"
nbdkit file --version >/dev/null 2>&1 || skip "nbdkit has no file plugin"
for t in qemu-nbd qemu-img setpriv; do
	if [ $qcow = 1 ] && ! command -v $t >/dev/null 2>&1; then
		qcow=0
		qcow_why="no $t in \$PATH"
	fi
done

dir=
fio_pid=
vbas_pid=
vpc_pid=
file_pid=
qcow2_pid=
qraw_pid=
t0=$(date +%s)
# Stop server $1 (vbas, file, qraw or qcow2) if it runs and wait for it: nbdkit
# with the vbas plugin commits and closes the pool on SIGTERM.
stop_srv() {
	eval "p=\${${1}_pid}"
	[ -n "$p" ] || return 0
	kill -TERM "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
	eval "${1}_pid="
}
cleanup() {
	set +e
	trap - INT TERM HUP
	if [ -n "$fio_pid" ]; then
		kill -TERM "$fio_pid" 2>/dev/null
		wait "$fio_pid" 2>/dev/null
	fi
	for s in vbas vpc file qraw qcow2; do
		stop_srv $s
	done
	[ -n "$dir" ] && rm -rf "$dir"
	echo "nbd: [$(($(date +%s) - t0)) s] cleaned up"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
dir=$(mktemp -d "$base/vbas-nbd.XXXXXX")

# Room for what the tests write: about 5 x SIZE in each pool (the working
# set, the fresh writes, the copies of four copy-on-write tests), under
# 1.5 x SIZE in each raw file, 2 x SIZE in the qcow2 image.
avail=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
if [ $((avail / 1024)) -lt $((16 * W / 1024 / 1024)) ]; then
	fail "$dir: $((avail / 1024)) MiB free, want $((16 * W / 1024 / 1024)) MiB for --size $size"
fi
pool=$dir/bench.pool
pcpool=$dir/bench-pc.pool
raw=$dir/raw.img
qraw=$dir/qraw.img
img=$dir/bench.qcow2
export_size=$((3 * W))

# ---- Servers ---------------------------------------------------------------

uri() {
	case $1 in
	file|qraw) echo "nbd+unix:///?socket=$dir/$1.sock" ;;
	*) echo "nbd+unix:///bench?socket=$dir/$1.sock" ;;
	esac
}
start_srv() {
	rm -f "$dir/$1.sock"
	case $1 in
	vbas)
		nbdkit -f --exit-with-parent -U "$dir/vbas.sock" "$plugin" pool="$pool" \
			>>"$dir/vbas.log" 2>&1 &
		vbas_pid=$! ;;
	vpc)
		nbdkit -f --exit-with-parent -U "$dir/vpc.sock" "$plugin" pool="$pcpool" \
			direct=false >>"$dir/vpc.log" 2>&1 &
		vpc_pid=$! ;;
	file)
		nbdkit -f --exit-with-parent -U "$dir/file.sock" file file="$raw" cache=none \
			fadvise=random >>"$dir/file.log" 2>&1 &
		file_pid=$! ;;
	qcow2)
		setpriv --pdeathsig TERM qemu-nbd -t -k "$dir/qcow2.sock" -x bench -f qcow2 \
			--cache=none --aio=native "$img" >>"$dir/qcow2.log" 2>&1 &
		qcow2_pid=$! ;;
	qraw)
		setpriv --pdeathsig TERM qemu-nbd -t -k "$dir/qraw.sock" -f raw \
			--cache=none --aio=native "$qraw" >>"$dir/qraw.log" 2>&1 &
		qraw_pid=$! ;;
	esac
	eval "p=\${${1}_pid}"
	i=0
	until nbdinfo --size "$(uri $1)" >/dev/null 2>&1; do
		if ! kill -0 "$p" 2>/dev/null || [ $i -ge 100 ]; then
			cat "$dir/$1.log" >&2
			fail "the $1 server did not start"
		fi
		sleep 0.1
		i=$((i + 1))
	done
}
# A snapshot of the export with its server stopped, then serve it again.
nsnap=0
snapshot_srv() {
	stop_srv $1
	nsnap=$((nsnap + 1))
	case $1 in
	vbas|vpc)
		[ $1 = vbas ] && p=$pool || p=$pcpool
		"$vbas" snapshot "$p" bench "snap$nsnap" >/dev/null ||
			fail "vbas snapshot $p bench snap$nsnap failed" ;;
	qcow2) qemu-img snapshot -c "snap$nsnap" "$img" || fail "qemu-img snapshot -c failed" ;;
	esac
	start_srv $1
}
# CPU time (clock ticks) of process $1 so far: utime + stime of all threads.
cpu_ticks() {
	sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}
hz=$(getconf CLK_TCK)

# ---- Files -----------------------------------------------------------------

for p in "$pool" "$pcpool"; do
	"$vbas" format "$p" --size $((8 * W)) >/dev/null || fail "vbas format $p failed"
	"$vbas" create "$p" bench --size $export_size >/dev/null || fail "vbas create failed"
done
truncate -s $export_size "$raw"
servers="vbas vpc file"
if [ $qcow = 1 ]; then
	if qemu-img create -q -f qcow2 "$img" $export_size 2>"$dir/qcow2.log"; then
		truncate -s $export_size "$qraw"
		servers="$servers qraw qcow2"
	else
		qcow=0
		qcow_why="qemu-img create failed: $(head -c 200 "$dir/qcow2.log" | tr '\n' ' ')"
	fi
fi
for s in $servers; do
	start_srv $s
done

# ---- Tests -----------------------------------------------------------------

# run_test KEY SERVER RW BS QD REGION MODE: one fio run; appends
# "KEY SERVER VALUE CPU_US_PER_OP" to $dir/res.  MODE: time (loop for $secs
# seconds), pass (one pass of the region at most, $secs seconds at most),
# full (one whole pass, untimed).
run_test() {
	key=$1 srv=$2 rw=$3 bs=$4 qd=$5 region=$6 mode=$7
	eval "spid=\${${srv}_pid}"
	# Nothing of any file in the page cache (a no-op for the O_DIRECT ones).
	for f in "$pool" "$pcpool" "$raw" "$qraw" "$img"; do
		if [ -f "$f" ]; then
			dd if="$f" iflag=nocache count=0 status=none
		fi
	done
	set -- --name="$key" --ioengine=nbd --uri="$(uri $srv)" --rw="$rw" --bs="$bs" \
		--iodepth="$qd" --offset=$((region * W)) --size=$W --randrepeat=1 \
		--output-format=terse --terse-version=3
	case $mode in
	time) set -- "$@" --runtime="$secs" --time_based ;;
	pass) set -- "$@" --runtime="$secs" ;;
	esac
	case $rw in *write*) set -- "$@" --end_fsync=1 ;; esac
	c0=$(cpu_ticks "$spid")
	fio "$@" >"$dir/fio.out" 2>"$dir/fio.err" &
	fio_pid=$!
	rc=0
	wait $fio_pid || rc=$?
	fio_pid=
	c1=$(cpu_ticks "$spid")
	if [ $rc != 0 ] || ! grep -q '^3;' "$dir/fio.out"; then
		cat "$dir/fio.out" "$dir/fio.err" >&2
		echo "--- $srv server log:" >&2
		tail -20 "$dir/$srv.log" >&2
		fail "fio $key on $srv failed (exit $rc)"
	fi
	# Terse v3: read KiB, runtime ms in fields 6, 9; write in 47, 50.
	grep '^3;' "$dir/fio.out" | awk -F';' -v key="$key" -v srv="$srv" -v bs="$bs" \
		-v cpu=$((c1 - c0)) -v hz="$hz" '{
		kib = $6 + $47; ms = $9 > $50 ? $9 : $50
		if (ms <= 0 || kib <= 0) { print "no I/O" > "/dev/stderr"; exit 1 }
		ops = kib / (bs == "4k" ? 4 : 1024)
		v = bs == "4k" ? ops * 1000 / ms : kib / 1024 * 1000 / ms
		printf "%s %s %.1f %.2f %d\n", key, srv, v, cpu / hz * 1e6 / ops, ops
	}' >>"$dir/res" || fail "fio $key on $srv: no result"
}

t_tests=$(date +%s)
echo
echo "nbd: [$(($(date +%s) - t0)) s] servers up: $servers; $secs s per test"
# KEY RW BS QD REGION MODE
set -- \
	"sw1m_fresh write 1m 1 0 full" \
	"rw4k_qd1_fresh randwrite 4k 1 1 pass" \
	"rw4k_qd32_fresh randwrite 4k 32 2 pass" \
	"rr4k_qd1 randread 4k 1 0 time" \
	"rr4k_qd32 randread 4k 32 0 time" \
	"sr1m read 1m 1 0 time" \
	"rw4k_qd1_rewrite randwrite 4k 1 0 time" \
	"rw4k_qd32_rewrite randwrite 4k 32 0 time" \
	"sw1m_rewrite write 1m 1 0 time" \
	"sw1m_snap write 1m 1 0 pass" \
	"rw4k_qd1_snap randwrite 4k 1 0 pass" \
	"rw4k_qd32_snap randwrite 4k 32 0 pass" \
	"sw1m_snapfrag write 1m 1 0 pass"
ntest=0
for t in "$@"; do     # the list is expanded once: the set -- below is safe
	# shellcheck disable=SC2086
	set -- $t
	k=$1 rw=$2 bs=$3 qd=$4 rg=$5 md=$6
	ntest=$((ntest + 1))
	if [ $((ntest % 2)) = 1 ]; then
		order=$servers
	else
		order=
		for s in $servers; do order="$s $order"; done
	fi
	for s in $order; do
		case $k in *_snap*)
			[ $s = file ] || [ $s = qraw ] && continue
			snapshot_srv $s ;;
		esac
		run_test "$k" $s "$rw" "$bs" "$qd" "$rg" "$md"
	done
	echo "nbd: [$(($(date +%s) - t0)) s] $k done"
done
for s in $servers; do
	stop_srv $s
done
t_end=$(date +%s)
echo "nbd: [$((t_end - t0)) s] servers stopped"

# ---- Report ----------------------------------------------------------------

echo
nbdkit_v=$(nbdkit --version 2>/dev/null | head -1)
qemu_v=$(qemu-nbd --version 2>/dev/null | head -1 | awk '{ print $2 }')
awk -v W=$W -v secs=$secs -v qcow=$qcow -v qcow_why="$qcow_why" -v nbdkit_v="$nbdkit_v" \
    -v qemu_v="$qemu_v" -v fio_v="$(fio --version)" -v total=$((t_end - t0)) \
    -v version="$("$vbas" --version | awk '{ print $2 }')" '
function cell(v) { return v == "" ? "-" : sprintf("%.1f", v) }
function ratio(a, b) { return a == "" || b == "" || b <= 0 ? "-" : sprintf("%.3f", a / b) }
function gap(i) { return i == 4 || i == 7 || i == 10 }
{ val[$1, $2] = $3; cpu[$1, $2] = $4; ops[$1, $2] = $5 }
END {
	n = split("rr4k_qd1 rr4k_qd32 sr1m rw4k_qd1_rewrite rw4k_qd32_rewrite sw1m_rewrite " \
		  "rw4k_qd1_fresh rw4k_qd32_fresh sw1m_fresh rw4k_qd1_snap rw4k_qd32_snap " \
		  "sw1m_snap sw1m_snapfrag", key)
	split("4K rand read QD1|4K rand read QD32|1M seq read|4K rand write QD1 rewrite|" \
	      "4K rand write QD32 rewrite|1M seq write rewrite|4K rand write QD1 fresh|" \
	      "4K rand write QD32 fresh|1M seq write fresh|4K rand write QD1 snap|" \
	      "4K rand write QD32 snap|1M seq write snap|1M seq write snap, frag", name, "|")
	nsrv = split("vbas vpc file qraw qcow2", srv)
	# Machine-readable lines, as bench/bench prints them.
	for (i = 1; i <= n; i++) {
		k = key[i]; u = k ~ /4k/ ? "iops" : "MiB/s"
		for (j = 1; j <= nsrv; j++) {
			if (val[k, srv[j]] == "")
				continue
			printf "bench: nbd_%s_%s %s %s\n", k, srv[j], val[k, srv[j]], u
			printf "bench: nbd_%s_cpu_%s %s us/op\n", k, srv[j], cpu[k, srv[j]]
		}
		for (j = 2; j <= nsrv; j++)
			if (val[k, srv[j]] != "")
				printf "bench: nbd_%s_vbas_%s %s x\n", k, srv[j],
				       ratio(val[k, "vbas"], val[k, srv[j]])
		if (val[k, "vpc"] != "" && val[k, "file"] != "")
			printf "bench: nbd_%s_vpc_file %s x\n", k, ratio(val[k, "vpc"], val[k, "file"])
	}
	rule = "--------------------------------------------------------------------------------------------------------------"
	printf "\nvbas %s NBD benchmark: %s nbd engine, one connection per test (no multi-conn), " \
	       "working set %.2f GiB,\n%d s per test; the servers take turns test by test; " \
	       "write tests include the final NBD flush\n", version, fio_v, W / 1073741824, secs
	print rule
	printf "%-26s %9s %9s %9s %9s %9s %9s %10s  %-5s %s\n", "test", "vbas", "vbas pc", "file",
	       "qcow2", "vbas/file", "pc/file", "vbas/qcow2", "unit", "target"
	print rule
	met = 0; tot = 0; missed = ""
	for (i = 1; i <= n; i++) {
		k = key[i]
		v = val[k, "vbas"]; c = val[k, "vpc"]; f = val[k, "file"]; q = val[k, "qcow2"]
		# Like against like.  Reads: vbas within 10% of the file
		# plugin, which reads without read-ahead and evicts what it
		# read.  Rewrites: vbas through the page cache within 10% of
		# the file plugin, which writes through the page cache.
		# Allocating and copy-on-write writes: vbas ahead of qcow2,
		# both O_DIRECT.
		if (k ~ /^rr|^sr/)
			ok = f == "" || v == "" ? "" : v >= 0.9 * f
		else if (k ~ /rewrite/)
			ok = f == "" || c == "" ? "" : c >= 0.9 * f
		else
			ok = q == "" || v == "" ? "" : v > q
		if (ok != "") {
			tot++
			if (ok)
				met++
			else
				missed = missed (missed ? ", " : "") name[i]
		}
		if (gap(i))
			print ""
		printf "%-26s %9s %9s %9s %9s %9s %9s %10s  %-5s %s\n", name[i], cell(v), cell(c),
		       k ~ /snap/ ? "n/a" : cell(f), cell(q), ratio(v, f), ratio(c, f), ratio(v, q),
		       k ~ /4k/ ? "IOPS" : "MiB/s", ok == "" ? "n/a" : ok ? "met" : "MISSED"
	}
	print rule
	printf "  targets, like against like: reads vbas/file >= 0.90, rewrites pc/file >= 0.90, fresh\n" \
	       "  and snap writes vbas/qcow2 > 1: %d of %d met\n", met, tot
	if (missed != "")
		printf "  missed: %s\n", missed
	printf "  vbas:  %s, nbdkit-vbas-plugin.so (what vbas serve runs), pool opened with " \
	       "O_DIRECT\n", nbdkit_v
	printf "  vbas pc: the same with direct=false (vbas serve --buffered) on another pool: " \
	       "data through\n         the page cache, written back in the background\n"
	printf "  file:  %s, file plugin, cache=none fadvise=random, sparse raw file: no O_DIRECT " \
	       "in 1.32;\n         each request is evicted from the page cache after it, reads " \
	       "without read-ahead,\n         but writes are written back in the background " \
	       "(see qraw below)\n", nbdkit_v
	if (qcow)
		printf "  qcow2: qemu-nbd %s --cache=none --aio=native (O_DIRECT), 64 KiB clusters, " \
		       "no preallocation\n", qemu_v
	else
		printf "  qcow2: skipped: %s\n", qcow_why
	printf "  all files in one directory (one file system), page cache dropped before every " \
	       "test; nbdkit\n  runs 16 requests of a connection at once (its default " \
	       "--threads), qemu-nbd all of them\n"
	printf "  fresh: allocating writes into an empty volume / a sparse raw file (the file " \
	       "system allocates) /\n  an empty qcow2; rewrite: overwrites of the written " \
	       "working set; snap: first writes after a\n  snapshot (copy on write; server " \
	       "stopped, vbas snapshot / qemu-img snapshot -c, served again;\n  raw files " \
	       "have no snapshots); frag: after the 4K snap tests cut the working set into " \
	       "small\n  extents.  Fresh and snap tests write no block twice (one pass at most; " \
	       "1M fresh: one\n  whole pass, untimed)\n"
	print rule
	if (qcow) {
		printf "%-26s %9s %9s %9s %9s  %s\n", "O_DIRECT raw reference", "qraw", "vbas/qraw",
		       "file/qraw", "qcow2/qraw", "unit"
		print rule
		for (i = 1; i <= 9; i++) {
			k = key[i]
			if (gap(i))
				print ""
			printf "%-26s %9s %9s %9s %9s  %s\n", name[i], cell(val[k, "qraw"]),
			       ratio(val[k, "vbas"], val[k, "qraw"]),
			       ratio(val[k, "file"], val[k, "qraw"]),
			       ratio(val[k, "qcow2"], val[k, "qraw"]), k ~ /4k/ ? "IOPS" : "MiB/s"
		}
		print rule
		lo = 1e9; hi = 0
		for (i = 1; i <= 6; i++) {
			r = val[key[i], "qraw"] > 0 ? val[key[i], "vbas"] / val[key[i], "qraw"] : ""
			if (r != "" && r < lo)
				lo = r
			if (r != "" && r > hi)
				hi = r
		}
		printf "  qraw: qemu-nbd %s -f raw --cache=none --aio=native on another sparse raw " \
		       "file: the same\n  raw file layout as file, but O_DIRECT like vbas and qcow2\n",
		       qemu_v
		if (hi > 0)
			printf "  reads and rewrites, vbas/qraw: %.3f to %.3f\n", lo, hi
		print rule
	}
	printf "%-26s %9s %9s %9s %9s %9s  %s\n", "server CPU per request", "vbas", "vbas pc",
	       "file", "qraw", "qcow2", "requests vbas/pc/file/qraw/qcow2"
	print rule
	for (i = 1; i <= n; i++) {
		k = key[i]
		if (gap(i))
			print ""
		printf "%-26s %9s %9s %9s %9s %9s  %d/%d/%d/%d/%d\n", name[i], cell(cpu[k, "vbas"]),
		       cell(cpu[k, "vpc"]), cell(cpu[k, "file"]), cell(cpu[k, "qraw"]),
		       cell(cpu[k, "qcow2"]), ops[k, "vbas"], ops[k, "vpc"], ops[k, "file"],
		       ops[k, "qraw"], ops[k, "qcow2"]
	}
	print rule
	printf "  us of CPU time of the server process (all threads, user + system) per NBD " \
	       "request\n"
	printf "%-40s %9d s  servers set up, tests run, servers stopped\n", "NBD benchmark total",
	       total
	print rule
}' "$dir/res"
