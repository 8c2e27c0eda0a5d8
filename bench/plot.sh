#!/bin/sh
# Draw the benchmark's results: bench/plot.sh RESULTS.tsv OUT.png [TITLE]
#
# RESULTS.tsv is bench/results.sh's file (group, test, peer, vbas,
# peer_value, unit, ratio).  One bar chart per group present (library,
# sharing, nbd, concur), one group of bars per test, one bar per peer: the
# ratio of vbas's speed to the peer's on a log scale, so that a bar above
# the 1x line is a test vbas wins and one below a test it loses, by as
# many times as the axis says.  gnuplot (Debian: gnuplot-nox,
# scripts/install-deps.sh --bench) draws it as a PNG with its pngcairo
# terminal, or png (libgd) where cairo is missing.  Exit status 0 when the
# PNG was written, 1 on failure, 2 on a bad argument.
set -eu

in=${1:-}
out=${2:-}
title=${3:-"vbas against its peers, per test: vbas speed / peer speed (times: peer time / vbas time); above 1x, vbas is faster"}
if [ -z "$in" ] || [ -z "$out" ] || [ $# -gt 3 ]; then
	echo "usage: bench/plot.sh RESULTS.tsv OUT.png [TITLE]" >&2
	exit 2
fi
[ -r "$in" ] || { echo "plot.sh: $in: cannot read it" >&2; exit 1; }
command -v gnuplot >/dev/null 2>&1 ||
	{ echo "plot.sh: no gnuplot (scripts/install-deps.sh --bench installs gnuplot-nox)" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vbas-plot.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM HUP

# One wide table per group: a row per test, a column per peer (the ratio,
# or ? where that peer has none), tests and peers in the file's order.
awk -F'\t' -v dir="$tmp" '
/^#/ || $1 == "group" || NF < 7 { next }
{
	g = $1
	if (!(g in ng)) { ng[g] = 0; np[g] = 0; groups[++ngroups] = g }
	if (!((g, $2) in ti)) { ti[g, $2] = ++ng[g]; tname[g, ng[g]] = $2 }
	if (!((g, $3) in pi)) { pi[g, $3] = ++np[g]; pname[g, np[g]] = $3 }
	r[g, ti[g, $2], pi[g, $3]] = $7
}
END {
	for (i = 1; i <= ngroups; i++) {
		g = groups[i]
		f = dir "/" g ".dat"
		printf "test" > f
		for (p = 1; p <= np[g]; p++)
			printf "\t%s", pname[g, p] > f
		printf "\n" > f
		for (t = 1; t <= ng[g]; t++) {
			printf "%s", tname[g, t] > f
			for (p = 1; p <= np[g]; p++) {
				v = "?"
				if ((g, t, p) in r)
					v = r[g, t, p]
				printf "\t%s", v > f
			}
			printf "\n" > f
		}
		close(f)
		# name, tests, peers, lowest and highest ratio
		lo = 1; hi = 1
		for (k in r) {
			split(k, kk, SUBSEP)
			if (kk[1] != g) continue
			if (r[k] + 0 < lo) lo = r[k] + 0
			if (r[k] + 0 > hi) hi = r[k] + 0
		}
		print g, ng[g], np[g], lo, hi > (dir "/groups")
	}
}' "$in"
[ -s "$tmp/groups" ] || { echo "plot.sh: $in: no results to draw" >&2; exit 1; }

if echo 'set terminal' | gnuplot 2>&1 | grep -q pngcairo; then
	term="pngcairo enhanced font 'sans,9' noenhanced"
else
	term="png font 'sans,9' noenhanced"
fi
ngroups=$(wc -l <"$tmp/groups")
height=$((ngroups * 380 + 40))

# The plot script: a panel per group, its height shared out evenly.
{
	echo "set terminal $term size 1100,$height"
	echo "set output '$tmp/out.png'"
	echo "set datafile separator '\\t'"
	echo "set datafile missing '?'"
	echo "set style data histograms"
	echo "set style histogram clustered gap 1"
	echo "set style fill solid 0.85 border -1"
	echo "set boxwidth 0.9"
	echo "set grid ytics lc rgb '#d0d0d0'"
	echo "set key outside right top vertical Left reverse noenhanced"
	# The same plot area in every panel, whatever the width of its key.
	echo "set lmargin at screen 0.07"
	echo "set rmargin at screen 0.74"
	echo "set xtics rotate by 30 right nomirror noenhanced"
	echo "set ylabel 'vbas / peer speed'"
	echo "set multiplot layout $ngroups,1 title \"$title\" noenhanced"
	while read -r g nt np lo hi; do
		case $g in
		library) t="Library, O_DIRECT, QD1 (bench/bench): vbas against a raw file" ;;
		sharing) t="Snapshot, clone, reflink time by extents (bench/bench --sharing-only)" ;;
		nbd) t="Over NBD, fio (bench/nbd.sh)" ;;
		concur) t="Served (bench/concur.sh): warm reads; p99 latency beside a flushing client" ;;
		*) t=$g ;;
		esac
		# Decades from below the lowest ratio to above the highest,
		# labelled 0.01x ... 1x ... 1000x.
		awk -v lo="$lo" -v hi="$hi" -v t="$t" -v np="$np" -v f="$tmp/$g.dat" 'BEGIN {
			a = int(log(lo) / log(10) + 100) - 100; if (10 ^ a > lo * 0.999) a--
			b = int(log(hi) / log(10) + 100) - 99
			if (a > -1) a = -1
			if (b < 1) b = 1
			printf "set title \"%s\" noenhanced\n", t
			printf "set yrange [%d:%d]\n", a, b
			printf "set ytics ("
			for (d = a; d <= b; d++)
				printf "%s\"%gx\" %d", (d > a) ? ", " : "", 10 ^ d, d
			printf ")\n"
			printf "set arrow 1 from graph 0, first 0 to graph 1, first 0 nohead lw 2 lc rgb \"black\" front\n"
			printf "plot for [i=2:%d] \"%s\" using (log10(column(i))):xtic(1) title columnhead(i)\n",
			       np + 1, f
		}'
	done <"$tmp/groups"
	echo "unset multiplot"
} >"$tmp/plot.gp"
if ! gnuplot "$tmp/plot.gp" 2>"$tmp/err" || [ ! -s "$tmp/out.png" ]; then
	cat "$tmp/err" >&2
	echo "plot.sh: gnuplot failed" >&2
	exit 1
fi
[ -s "$tmp/err" ] && cat "$tmp/err" >&2
mv "$tmp/out.png" "$out"
echo "plot.sh: $out ($ngroups panel$( [ "$ngroups" = 1 ] || echo s ): $(cut -d' ' -f1 "$tmp/groups" | tr '\n' ' ' | sed 's/ $//'))"
