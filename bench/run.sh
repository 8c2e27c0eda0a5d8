#!/bin/sh
# Run the vbas benchmark: bench/run.sh BUILD_DIR [bench options...]
#
# Files go to a fresh directory under $VBAS_BENCH_DIR (default /var/tmp),
# so that the pool and the raw file it is compared with sit on the same
# file system; the directory is removed at the end, also on failure.
# Options after BUILD_DIR are passed to the benchmark and override the
# defaults below (see BUILD_DIR/bench/bench --help); e.g. --size 4G,
# --time 10, --ops 50000, --extents 100000, --no-extents.
set -eu

build=${1:-build}
[ $# -gt 0 ] && shift
bin=$build/bench/bench
if [ ! -x "$bin" ]; then
	echo "run.sh: $bin not found (make $bin first)" >&2
	exit 1
fi

base=${VBAS_BENCH_DIR:-/var/tmp}
if [ ! -d "$base" ]; then
	echo "run.sh: VBAS_BENCH_DIR=$base is not a directory" >&2
	exit 1
fi
dir=$(mktemp -d "$base/vbas-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
trap 'exit 130' INT TERM

# 1 GiB working set, 8 s per random 4K test (raw and vbas each), a
# 1,000,000-extent volume, 16 MiB cache for the RSS test: about 1.5-2
# minutes on a 2-core VM.
"$bin" --dir "$dir" --size 1G --time 8 --extents 1000000 --cache 16M "$@"
