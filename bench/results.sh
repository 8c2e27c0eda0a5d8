#!/bin/sh
# The benchmark's results file: bench/results.sh [LOG...] > RESULTS.tsv
#
# Reads the "bench: KEY VALUE UNIT" lines that bench/bench, bench/nbd.sh
# and bench/concur.sh print (from the LOG files, or standard input; other
# lines are ignored) and writes one tab-separated row per test and peer
# that both have a figure for:
#
#   group  test  peer  vbas  peer_value  unit  ratio
#
# group: library (bench/bench: vbas's library against pread/pwrite on a raw
# file), sharing (snapshot, clone and reflink times against XFS and
# qcow2), nbd (bench/nbd.sh: fio over NBD against nbdkit's file plugin and
# qemu-nbd), concur (bench/concur.sh: warm reads, and p99 latency beside a
# flushing client).  ratio is vbas's speed over the peer's: vbas/peer for
# rates (IOPS, MiB/s), peer/vbas for times (ms, us), so above 1 vbas is
# faster whatever the unit.  Lines starting with '#' are comments.
# bench/plot.sh draws the file; bench/run.sh writes it after a run.
set -eu

awk '
$1 == "bench:" && NF >= 4 { val[$2] = $3; unit[$2] = $4; seen[++nseen] = $2 }
function u(k) {
	return unit[k] == "iops" ? "IOPS" : unit[k]
}
function row(group, test, peer, kv, kp,   v, p, r) {
	if (!(kv in val) || !(kp in val))
		return
	v = val[kv] + 0; p = val[kp] + 0
	if (v <= 0 || p <= 0)
		return
	r = u(kv) ~ /^(s|ms|us)$/ ? p / v : v / p
	printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", group, test, peer, val[kv], val[kp], u(kv),
	       sprintf(r >= 1000 ? "%.0f" : "%.4g", r)
}
function extents(n) {
	if (n >= 1000000 && n % 1000000 == 0)
		return n / 1000000 "M extents"
	if (n >= 1000 && n % 1000 == 0)
		return n / 1000 "k extents"
	return n == 1 ? "1 extent" : n " extents"
}
END {
	print "# vbas benchmark results (bench/results.sh); ratio: vbas speed / peer speed " \
	      "(vbas/peer for rates, peer/vbas for times: above 1, vbas is faster)"
	print "group\ttest\tpeer\tvbas\tpeer_value\tunit\tratio"

	n = split("seq_write_1m|1M seq write|seq_read_1m|1M seq read|" \
		  "rand_write_4k_overwrite|4K rand write, overwrite|rand_read_4k|4K rand read|" \
		  "rand_write_4k_alloc|4K rand write, allocating", L, "|")
	for (i = 1; i < n; i += 2)
		row("library", L[i + 1], "raw file", L[i] "_vbas", L[i] "_raw")

	# Extent counts, in the order the benchmark printed them.
	ns = 0
	for (i = 1; i <= nseen; i++)
		if (seen[i] ~ /^share_snapshot_cli_vbas_[0-9]+$/) {
			e = seen[i]; sub(/.*_/, "", e)
			if (!(e in have)) { have[e] = 1; sz[++ns] = e }
		}
	n = split("snapshot (CLI)|snapshot_cli_vbas|cp_reflink_xfs|XFS cp --reflink|" \
		  "snapshot (CLI)|snapshot_cli_vbas|qemu_img_snapshot_qcow2|qemu-img snapshot|" \
		  "clone (CLI)|clone_cli_vbas|cp_reflink_xfs|XFS cp --reflink|" \
		  "snapshot (lib)|snapshot_lib_vbas|ficlonerange_fsync_xfs|XFS FICLONERANGE|" \
		  "clone (lib)|clone_lib_vbas|ficlonerange_fsync_xfs|XFS FICLONERANGE|" \
		  "reflink (lib)|reflink_lib_vbas|ficlonerange_fsync_xfs|XFS FICLONERANGE", S, "|")
	for (i = 1; i < n; i += 4)
		for (j = 1; j <= ns; j++)
			row("sharing", S[i] ", " extents(sz[j]), S[i + 3], "share_" S[i + 1] "_" sz[j],
			    "share_" S[i + 2] "_" sz[j])

	n = split("rr4k_qd1|4K rand read QD1|rr4k_qd32|4K rand read QD32|sr1m|1M seq read|" \
		  "rw4k_qd1_rewrite|4K rand write QD1 rewrite|" \
		  "rw4k_qd32_rewrite|4K rand write QD32 rewrite|sw1m_rewrite|1M seq write rewrite|" \
		  "rw4k_qd1_fresh|4K rand write QD1 fresh|rw4k_qd32_fresh|4K rand write QD32 fresh|" \
		  "sw1m_fresh|1M seq write fresh|rw4k_qd1_snap|4K rand write QD1 snap|" \
		  "rw4k_qd32_snap|4K rand write QD32 snap|sw1m_snap|1M seq write snap|" \
		  "sw1m_snapfrag|1M seq write snap, frag", K, "|")
	for (i = 1; i < n; i += 2) {
		k = "nbd_" K[i]
		row("nbd", K[i + 1], "nbdkit file", k "_vbas", k "_file")
		row("nbd", K[i + 1], "nbdkit file, vbas --buffered", k "_vpc", k "_file")
		row("nbd", K[i + 1], "qemu-nbd qcow2", k "_vbas", k "_qcow2")
		row("nbd", K[i + 1], "qemu-nbd raw", k "_vbas", k "_qraw")
	}

	for (q = 1; q <= 32; q += 31)
		row("concur", "warm 4K read QD" q, "nbdkit file, vbas --buffered",
		    "concur_warm_qd" q "_vpc", "concur_warm_qd" q "_file")
	n = split("direct|buffered", M, "|")
	for (i = 1; i <= n; i++)
		for (j = 1; j <= 2; j++) {
			rw = j == 1 ? "read" : "write"
			k = "concur_" M[i] "_flush_" substr(rw, 1, 1) "p99"
			row("concur", rw " p99 beside a flusher, " M[i], "qemu-nbd qcow2",
			    k "_vbas", k "_qcow2")
		}
}' "$@"
