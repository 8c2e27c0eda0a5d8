#!/bin/sh
# Run the vbas benchmark: bench/run.sh BUILD_DIR [bench options...]
#
# Files go to a fresh directory under $VBAS_BENCH_DIR (default /var/tmp),
# so that the pool and the raw file it is compared with sit on the same
# file system; the directory is removed at the end, also on failure.
# Options after BUILD_DIR are passed to the benchmark and override the
# defaults below (see BUILD_DIR/bench/bench --help); e.g. --size 4G,
# --time 10, --ops 50000, --extents 100000, --no-extents, --sharing-only,
# --no-sharing, --space-only, --no-space, --rmap-only, --no-rmap.  Except these,
# which are this script's:
#   --nbd-only        run only the NBD benchmark (bench/nbd.sh)
#   --no-nbd          skip it
#   --nbd-time SEC    seconds per NBD test (default 3)
#   --nbd-size SIZE   the NBD working set (default 1G)
#   --scale-only      run only the scale benchmark (bench/scale.c: 100,000
#                     volumes, 10,000 snapshots of a 1,000,000-extent
#                     volume, commit cost; about 2 minutes)
#   --no-scale        skip it
#   --scale-big       add its 10^7-extent check (a few minutes more)
# --sharing-only, --space-only and --rmap-only run no NBD or scale
# benchmark either.
#
# The NBD benchmark (bench/nbd.sh, after the others) serves a vbas volume,
# a raw file and a qcow2 image over NBD and runs fio against each; it
# takes about 2.75 minutes, removing its files included.  Then
# bench/concur.sh (about 2 minutes): warm-cache reads against nbdkit's
# file plugin, and QD32 latency beside a client that flushes another
# export every 10 ms, vbas against qemu-nbd qcow2.
#
# Everything the benchmarks print on standard output is also written to
# BUILD_DIR/bench.log.  At the end, bench/results.sh turns its "bench:"
# lines into BUILD_DIR/bench.tsv (a row per test and peer: the two figures
# and vbas's speed over the peer's), and bench/plot.sh draws that as
# BUILD_DIR/bench.png with gnuplot (scripts/install-deps.sh --bench
# installs gnuplot-nox; without it, no plot).  docs/bench.md says how a
# run's figures and plot become the documentation's.
#
# For the sharing benchmark's XFS column this script makes an XFS file
# system (reflink=1) in a sparse file in that directory, attaches it to a
# loop device and mounts it there; all of which is undone at the end, also
# on failure or signal.  Without root, mkfs.xfs or loop devices the column
# says "skipped: ..." instead.
set -eu

build=${1:-build}
[ $# -gt 0 ] && shift
bin=$build/bench/bench
nbd_sh=$(dirname "$0")/nbd.sh

base=${VBAS_BENCH_DIR:-/var/tmp}
if [ ! -d "$base" ]; then
	echo "run.sh: VBAS_BENCH_DIR=$base is not a directory" >&2
	exit 1
fi

# Take out this script's options; the rest go to the benchmark.
sharing=1
nbd=1
nbd_only=0
scale=1
scale_only=0
scale_big=
nbd_time=3
nbd_size=1G
n=$#
while [ $n -gt 0 ]; do
	a=$1
	shift
	n=$((n - 1))
	case $a in
	--nbd-only) nbd_only=1 ;;
	--no-nbd) nbd=0 ;;
	--scale-only) scale_only=1 ;;
	--no-scale) scale=0 ;;
	--scale-big) scale_big=--big ;;
	--nbd-time|--nbd-size)
		if [ $n = 0 ]; then
			echo "run.sh: $a needs a value" >&2
			exit 2
		fi
		if [ $a = --nbd-time ]; then nbd_time=$1; else nbd_size=$1; fi
		shift
		n=$((n - 1)) ;;
	*)
		case $a in
		--no-sharing) sharing=0 ;;
		--sharing-only|--space-only|--rmap-only) nbd=0; scale=0 ;;
		esac
		set -- "$@" "$a" ;;
	esac
done
if [ $nbd_only = 1 ]; then
	if [ $nbd = 0 ]; then
		echo "run.sh: --nbd-only with --no-nbd or --sharing-only: nothing to run" >&2
		exit 2
	fi
	if [ $# -gt 0 ]; then
		echo "run.sh: --nbd-only runs no other benchmark; options for it: $*" >&2
		exit 2
	fi
	sharing=0
	scale=0
fi
if [ $scale_only = 1 ]; then
	if [ $scale = 0 ] || [ $nbd_only = 1 ] || [ $# -gt 0 ]; then
		echo "run.sh: --scale-only runs the scale benchmark alone (no other options)" >&2
		exit 2
	fi
	nbd=0
	sharing=0
fi
if [ $scale = 1 ] && [ ! -x "$build/bench/scale" ]; then
	echo "run.sh: $build/bench/scale not found (make it first)" >&2
	exit 1
fi
if [ $nbd_only = 0 ] && [ $scale_only = 0 ] && [ ! -x "$bin" ]; then
	echo "run.sh: $bin not found (make $bin first)" >&2
	exit 1
fi

dir=
loop=
mnt=
pid=
tee_pid=
done_ok=0
log=$build/bench.log
t_bench=
t_unmount=
t_nbd=
t_start=$(date +%s)
# Is process $1 running (not gone, not a zombie)?
running() {
	st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "${st#Z}" = "$st" ]
}
cleanup() {
	set +e
	trap - INT TERM HUP
	if [ -n "$pid" ]; then
		# The benchmark stops its child, removes its files and exits at
		# once, except inside a long XFS reflink ioctl, which a caught
		# signal does not interrupt: after 3 s, KILL it and its child
		# (XFS stops a remap on a fatal signal; we unmount anyway).
		# nbd.sh stops fio and its servers at once, then removes its
		# files, which can take long (see below): KILLed, its servers
		# exit with it, and we remove the files.
		kill -TERM "$pid" 2>/dev/null
		i=0
		while running "$pid" && [ $i -lt 30 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		if running "$pid"; then
			for c in $(ps -o pid= --ppid "$pid" 2>/dev/null); do
				kill -KILL "$c" 2>/dev/null
			done
			kill -KILL "$pid" 2>/dev/null
		fi
		wait "$pid" 2>/dev/null
	fi
	xfs_down
	[ -n "$dir" ] && rm -rf "$dir"
	t_end=$(date +%s)
	if [ -n "$t_bench" ]; then
		printf 'run.sh:'
		[ $nbd_only = 0 ] && printf ' benchmark %d s, unmount %d s,' \
			$((t_bench - t_start)) $((${t_unmount:-$t_end} - t_bench))
		[ -n "$t_nbd" ] && printf ' NBD benchmark %d s,' $((t_nbd - t_unmount))
		printf ' clean-up %d s\n' $((t_end - ${t_nbd:-${t_unmount:-$t_end}}))
	fi
	# The log is whole once tee has copied the last line (it ends when
	# the last writer closes the fifo; one left behind is given 5 s).
	if [ -n "$tee_pid" ]; then
		exec 1>&3 3>&-
		i=0
		while running "$tee_pid" && [ $i -lt 50 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		kill "$tee_pid" 2>/dev/null
		wait "$tee_pid" 2>/dev/null
	fi
	if [ $done_ok = 1 ]; then
		sh "$here/results.sh" "$log" >"$build/bench.tsv"
		echo "run.sh: results in $build/bench.tsv ($(grep -vc '^#' "$build/bench.tsv") rows, with the header)"
		if ! command -v gnuplot >/dev/null 2>&1; then
			echo "run.sh: no gnuplot, no plot (scripts/install-deps.sh --bench installs gnuplot-nox)"
		elif ! sh "$here/plot.sh" "$build/bench.tsv" "$build/bench.png"; then
			echo "run.sh: no plot drawn" >&2
		fi
	fi
}
# Unmount the XFS and detach its loop device, if they are there.
xfs_down() {
	if [ -n "$mnt" ]; then
		# XFS frees big files in the background; unmount waits for it.
		i=0
		while ! umount "$mnt" 2>/dev/null; do
			i=$((i + 1))
			if [ $i -ge 30 ]; then
				echo "run.sh: umount $mnt failed; detaching it lazily" >&2
				umount -l "$mnt"
				break
			fi
			sleep 1
		done
		mnt=
	fi
	if [ -n "$loop" ]; then
		losetup -d "$loop" || echo "run.sh: losetup -d $loop failed" >&2
		loop=
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
dir=$(mktemp -d "$base/vbas-bench.XXXXXX")
here=$(dirname "$0")

# Standard output through tee into the log (-i: a Ctrl-C leaves tee to
# copy what the clean-up prints); the C benchmarks' a line at a time, as
# on a terminal (stdbuf -oL, which execs them: $pid stays theirs).
mkfifo "$dir/out"
tee -i "$log" <"$dir/out" &
tee_pid=$!
exec 3>&1 >"$dir/out"

# A loop-mounted XFS with reflink for the sharing comparison.  8 GiB,
# sparse: the files on it are metadata and a few MiB of data.
xfs_opt=--xfs-skip
xfs_arg=
xfs_scratch=
if [ $sharing = 0 ]; then
	xfs_opt=
elif [ "$(id -u)" != 0 ]; then
	xfs_arg="not root (loop mount needs it)"
elif ! command -v mkfs.xfs >/dev/null 2>&1; then
	xfs_arg="no mkfs.xfs (xfsprogs)"
elif ! command -v losetup >/dev/null 2>&1; then
	xfs_arg="no losetup"
elif ! truncate -s 8G "$dir/xfs.img" ||
     ! mkfs.xfs -q -m reflink=1 "$dir/xfs.img" >"$dir/xfs.log" 2>&1; then
	xfs_arg="mkfs.xfs -m reflink=1 failed: $(head -c 200 "$dir/xfs.log" 2>/dev/null | tr '\n' ' ')"
else
	# Direct I/O from the loop device to the image, as the pool does.
	loop=$(losetup --direct-io=on --find --show "$dir/xfs.img" 2>/dev/null) ||
		loop=$(losetup --find --show "$dir/xfs.img" 2>"$dir/xfs.log") || loop=
	if [ -z "$loop" ]; then
		xfs_arg="losetup failed: $(head -c 200 "$dir/xfs.log" | tr '\n' ' ')"
	else
		mkdir "$dir/xfs"
		if mount -t xfs "$loop" "$dir/xfs" 2>"$dir/xfs.log"; then
			mnt=$dir/xfs
			xfs_opt=--xfs-dir
			xfs_arg=$mnt
			xfs_scratch=--xfs-scratch
		else
			xfs_arg="mount failed: $(head -c 200 "$dir/xfs.log" | tr '\n' ' ')"
		fi
	fi
fi

# 1 GiB working set, 8 s per random 4K test (raw and vbas each), a
# 1,000,000-extent volume, 16 MiB cache for the RSS test: about 1.5-2
# minutes on a 2-core VM; then the sharing benchmark on volumes of 1,
# 10,000 and 1,000,000 extents, with XFS and qcow2 alongside: about 2 more.
# In the background and waited for, so that a signal reaches the trap at
# once (which stops the benchmark, then unmounts).
rc=0
if [ $nbd_only = 0 ] && [ $scale_only = 0 ]; then
	stdbuf -oL "$bin" --dir "$dir" --size 1G --time 8 --extents 1000000 --cache 16M \
		--vbas-cli "$build/vbas" ${xfs_opt:+"$xfs_opt"} ${xfs_opt:+"$xfs_arg"} \
		$xfs_scratch "$@" &
	pid=$!
	wait "$pid" || rc=$?
	pid=
	[ $rc = 0 ] || exit $rc
fi
if [ $scale = 1 ]; then
	stdbuf -oL "$build/bench/scale" --dir "$dir" --vbas-cli "$build/vbas" $scale_big &
	pid=$!
	wait "$pid" || rc=$?
	pid=
	[ $rc = 0 ] || exit $rc
fi
t_bench=$(date +%s)

# The NBD benchmark (see bench/nbd.sh), in a directory of its own under
# ours, once the XFS is unmounted (it frees files in the background).
xfs_down
t_unmount=$(date +%s)
if [ $nbd = 1 ]; then
	VBAS_BENCH_DIR=$dir "$nbd_sh" "$build" --time "$nbd_time" --size "$nbd_size" &
	pid=$!
	wait "$pid" || rc=$?
	pid=
	[ $rc = 0 ] || exit $rc
	# Warm reads, and latency beside a flushing client (bench/concur.sh).
	VBAS_BENCH_DIR=$dir sh "$here/concur.sh" "$build" 5 &
	pid=$!
	wait "$pid" || rc=$?
	pid=
	t_nbd=$(date +%s)
fi
[ $rc = 0 ] && done_ok=1
exit $rc
