#!/usr/bin/env bash
# The documentation against the binary: tests/cli/test-docs.sh BUILD_DIR
#
# - docs/man/vbas.8 and docs/man/libvbas.3 render with man -l (MANWIDTH=80)
#   and groff -man -ww without a warning, no line is wider than 80, and
#   their .TH says the version vbas.h does;
# - vbas.8 has a section (.SS NAME) for every command 'vbas help' lists
#   and for no other, whose synopsis is the usage line of 'vbas NAME
#   --help' and whose option list is the options that help lists;
# - libvbas.3's synopsis has every function include/vbas.h declares, with
#   the header's prototype, and no other, and describes each one;
# - scripts/vbas-completion.bash, sourced in bash, completes a command
#   prefix, an option prefix, the volume names of a pool made here, and
#   nothing (quietly) for a pool that does not exist;
# - bench/results.sh turns "bench:" lines into the results file that
#   bench/plot.sh draws.
# A few seconds; TAP, as tests/tap.sh.
set -euo pipefail

BUILD=${1:?usage: $0 BUILD_DIR}
TESTS=$(cd "$(dirname "$0")/.." && pwd)
ROOT=$(cd "$TESTS/.." && pwd)
VBAS=$(cd "$BUILD" && pwd)/vbas
if [ ! -x "$VBAS" ]; then
	echo "Bail out! $VBAS is not built"
	exit 1
fi
command -v python3 >/dev/null || { echo "Bail out! python3 is needed"; exit 1; }
T=$(mktemp -d "${TMPDIR:-/tmp}/vbas-docs.XXXXXX")
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM HUP
cd "$T"
. "$TESTS/tap.sh"

MAN8=$ROOT/docs/man/vbas.8
MAN3=$ROOT/docs/man/libvbas.3
COMPLETION=$ROOT/scripts/vbas-completion.bash

# ---- The pages render -------------------------------------------------------

# render_ok PAGE: man -l and groff -ww say nothing on stderr; the text is in
# $T/PAGE.txt.
for page in "$MAN8" "$MAN3"; do
	name=$(basename "$page")
	if ! command -v man >/dev/null || ! command -v groff >/dev/null; then
		skip "$name renders without warnings" "no man or groff (install-deps: man-db)"
		continue
	fi
	MANWIDTH=80 MAN_KEEP_FORMATTING= man --warnings -l "$page" 2>"$T/$name.err" |
		col -b >"$T/$name.txt" || :
	groff -man -ww -z "$page" 2>>"$T/$name.err" || echo "groff: exit $?" >>"$T/$name.err"
	if [ ! -s "$T/$name.err" ] && [ "$(wc -l <"$T/$name.txt")" -gt 100 ]; then
		pass "$name renders with man -l and groff -ww, no warnings"
	else
		fail "$name renders with man -l and groff -ww, no warnings" \
			"$(head -20 "$T/$name.err")" "lines: $(wc -l <"$T/$name.txt")"
	fi
	wide=$(python3 -c 'import sys
print("\n".join([l for l in open(sys.argv[1], encoding="utf-8").read().splitlines()
                 if len(l) > 80][:3]))' "$T/$name.txt")
	if [ -z "$wide" ]; then
		pass "$name: no rendered line wider than 80 columns"
	else
		fail "$name: no rendered line wider than 80 columns" "$wide"
	fi
done

VERSION=$(sed -n 's/.*VBAS_VERSION_STRING "\(.*\)"/\1/p' "$ROOT/include/vbas.h")
th=$(grep -h '^\.TH ' "$MAN8" "$MAN3" | grep -c "\"vbas $VERSION\"" || :)
if [ "$th" = 2 ]; then
	pass "both pages say vbas $VERSION (.TH), as vbas.h does"
else
	fail "both pages say vbas $VERSION (.TH), as vbas.h does" "$(grep -h '^\.TH ' "$MAN8" "$MAN3")"
fi

# ---- vbas.8 against vbas help --------------------------------------------------

"$VBAS" help | awk '/^Commands:/ { f = 1; next } f && /^$/ { exit } f { print $1 }' >cmds
if [ "$(wc -l <cmds)" -ge 20 ]; then
	pass "vbas help lists the commands ($(wc -l <cmds))"
else
	fail "vbas help lists the commands" "$(cat cmds)"
fi
for c in $(cat cmds); do
	"$VBAS" "$c" --help >"help-$c" 2>&1 || echo "exit $?" >>"help-$c"
done
# One line per command: "CMD<TAB>OK" or "CMD<TAB>what differs", from a
# reading of the page's source: .SS CMD, the .nf synopsis after it, the
# options of its .TP items.
python3 - "$MAN8" cmds >man8.check <<'EOF'
import re, sys
src = open(sys.argv[1]).read()
cmds = open(sys.argv[2]).read().split()
def plain(s):
    s = re.sub(r'\\f[BIRP]', '', s).replace('\\-', '-').replace('\\&', '')
    return s.replace('\\(aq', "'").replace('\\e', '\\')
def words(s):
    return ' '.join(s.split())
body = src.split('\n.SH COMMANDS\n', 1)[1].split('\n.SH ', 1)[0]
secs = {}
for part in re.split(r'^\.SS ', body, flags=re.M)[1:]:
    title, _, text = part.partition('\n')
    secs[plain(title).strip('"')] = text
for extra in sorted(set(secs) - set(cmds) - {'help', 'version'}):
    print('%s\ta section for a command vbas help does not list' % extra)
for c in cmds:
    if c not in secs:
        print('%s\tno section' % c)
        continue
    text = secs[c]
    m = re.match(r'\.nf\n(.*?)\n\.fi\n', text, re.S)
    syn = words(plain(m.group(1))) if m else ''
    help_ = open('help-' + c).read()
    u = re.search(r'^Usage: (.*?)\n\n', help_, re.S | re.M)
    usage = words(u.group(1)) if u else '?'
    opts_help = set(re.findall(r'^ +(?:-\w, )?(--[a-z][a-z-]*)', help_, re.M))
    items = re.findall(r'^\.TP\n(.*)$', text, re.M)
    opts_man = set()
    for it in items:
        opts_man |= set(re.findall(r'(--[a-z][a-z-]*)', plain(it)))
    skip = {'--help'} if c == 'serve' else {'--help', '--cache'}
    why = []
    if syn != usage:
        why.append('synopsis "%s" but vbas says "%s"' % (syn, usage))
    if opts_help - skip - opts_man:
        why.append('options missing: %s' % ' '.join(sorted(opts_help - skip - opts_man)))
    if opts_man - opts_help:
        why.append('options vbas does not take: %s' % ' '.join(sorted(opts_man - opts_help)))
    print('%s\t%s' % (c, '; '.join(why) or 'OK'))
EOF
bad=$(grep -v $'\tOK$' man8.check || :)
if [ -z "$bad" ] && [ "$(grep -c $'\tOK$' man8.check)" = "$(wc -l <cmds)" ]; then
	pass "vbas.8 has a section for each command, with its synopsis and options"
else
	fail "vbas.8 has a section for each command, with its synopsis and options" "$bad"
fi

# ---- libvbas.3 against vbas.h ---------------------------------------------------

cc -E -P "$ROOT/include/vbas.h" >vbas.i
python3 - vbas.i "$MAN3" >man3.check <<'EOF'
import re, sys
def norm(s):
    s = re.sub(r'\s+', ' ', s).strip()
    return re.sub(r'\s*([(),*])\s*', r'\1', s)
hdr = {}
# (Without VBAS_API's attribute: the page shows plain prototypes.)
text = re.sub(r'__attribute__\s*\(\((?:[^()]|\([^()]*\))*\)\)\s*', '',
              open(sys.argv[1]).read())
for d in text.replace('\n', ' ').split(';'):
    d = d.split('}')[-1].strip()
    m = re.match(r'^(?:const\s+)?[\w ]+?\**\s*(vbas_\w+)\s*\(', d)
    if m:
        hdr[m.group(1)] = norm(d)
src = open(sys.argv[2]).read()
syn = src.split('\n.SH SYNOPSIS\n', 1)[1].split('\n.SH ', 1)[0]
lines = []
for blk in re.findall(r'^\.nf\n(.*?)^\.fi', syn, re.S | re.M):
    lines += [l for l in blk.splitlines() if not l.startswith('.')]
text = re.sub(r'\\f[BIRP]', '', ' '.join(lines)).replace('\\-', '-').replace('\\&', '')
man = {}
for d in text.split(';'):
    m = re.search(r'\b(vbas_\w+)\s*\(', d)
    if m:
        man[m.group(1)] = norm(d)
rest = src.split('\n.SH DESCRIPTION\n', 1)[1]
described = set()
for item in re.findall(r'^\.TP\n\.BR (.*)$', rest, re.M):
    described |= set(re.findall(r'vbas_\w+', item))
print('declared\t%d' % len(hdr))
for f in sorted(set(hdr) | set(man)):
    if f not in man:
        print('%s\tnot in the synopsis' % f)
    elif f not in hdr:
        print('%s\tnot declared in vbas.h' % f)
    elif man[f] != hdr[f]:
        print('%s\tsynopsis "%s" but vbas.h "%s"' % (f, man[f], hdr[f]))
    elif f not in described:
        print('%s\tnot described (no .TP item naming it)' % f)
EOF
ndecl=$(awk -F'\t' '$1 == "declared" { print $2 }' man3.check)
bad=$(grep -v '^declared' man3.check || :)
if [ -z "$bad" ] && [ "${ndecl:-0}" -ge 40 ]; then
	pass "libvbas.3 has the prototype of each of the $ndecl functions of vbas.h, and describes it"
else
	fail "libvbas.3 has the prototype of each function of vbas.h, and describes it" \
		"declared: ${ndecl:-?}" "$bad"
fi

# ---- Bash completion -------------------------------------------------------------

# complete WORD...: COMPREPLY of _vbas for the words (the last is the one
# completed), one per line, in $T/out; stderr in $T/err; RC.
complete_words() {
	run bash -c '. "$1" || exit 3; shift
		COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
		_vbas || exit 4
		printf "%s\n" ${COMPREPLY[@]+"${COMPREPLY[@]}"}' bash "$COMPLETION" "$VBAS" "$@"
}
# expect_completion DESC WANT WORD...: the completions, sorted, are WANT
# (space-separated), with nothing on stderr.
expect_completion() {
	local d=$1 want=$2 got
	shift 2
	complete_words "$@"
	got=$(sort "$T/out" | tr '\n' ' ' | sed 's/ $//')
	if [ "$RC" = 0 ] && [ "$got" = "$want" ] && [ ! -s "$T/err" ]; then
		pass "$d"
	else
		fail "$d" "words: $*" "want: $want" "got:  $got (exit $RC)" "stderr: $(cat "$T/err")"
	fi
}

run bash -c '. "$1" && complete -p vbas' bash "$COMPLETION"
if [ "$RC" = 0 ] && grep -q -- '-F _vbas vbas' "$T/out"; then
	pass "the completion loads in bash and registers _vbas for vbas"
else
	fail "the completion loads in bash and registers _vbas for vbas" \
		"exit $RC" "$(cat "$T/out" "$T/err")"
fi
expect_completion "every command of vbas help, and help and version" \
	"$( (cat cmds; echo help; echo version) | sort | tr '\n' ' ' | sed 's/ $//')" ""
expect_completion "a command prefix: re" \
	"$(grep '^re' cmds | sort | tr '\n' ' ' | sed 's/ $//')" re
expect_completion "a command after global options: --cache 8M sn" snapshot --cache 8M sn
expect_completion "help COMMAND: help cl" clone help cl
expect_completion "an option prefix: format POOL --b" --block-size format p.pool --b
expect_completion "the options of serve, from its --help" \
	"$(grep -oE '^ +(-[a-z], )?--[a-z-]+' help-serve | grep -oE -- '--[a-z-]+' |
		sort | tr '\n' ' ' | sed 's/ $//')" serve p.pool --

expect_ok "a small pool to complete names from" "$VBAS" format p.pool --size 16M
for v in vm1 vm2 'vm 3' other; do
	"$VBAS" create p.pool "$v" --size 1M >/dev/null
done
"$VBAS" snapshot p.pool vm1 vm1-snap >/dev/null
: >vmfile
expect_completion "volume names by prefix: delete POOL vm" \
	'vm1 vm1-snap vm2 vm\ 3' delete p.pool vm
expect_completion "volume names after options: read POOL --offset 4k v" \
	'vm1 vm1-snap vm2 vm\ 3' read p.pool --offset 4k v
expect_completion "the second volume of reflink (DST): reflink POOL vm1 0 o" \
	other reflink p.pool vm1 0 o
expect_completion "NEW is not completed: snapshot POOL vm1 ''" "" snapshot p.pool vm1 ""
expect_completion "a file for write's FILE: write POOL vm1 vmf" vmfile write p.pool vm1 vmf
expect_completion "a file for the pool: list p.p" p.pool list p.p
expect_completion "a pool that does not exist: nothing, quietly" "" delete nonexistent.pool v
expect_completion "a file that is not a pool: nothing, quietly" "" delete vmfile v
expect_completion "an unknown command: nothing, quietly" "" frobnicate p.pool v

# ---- Benchmark results ---------------------------------------------------------------

cat >bench.log <<'EOF'
bench: seq_write_1m_raw 458.9 MiB/s
bench: seq_write_1m_vbas 1278.2 MiB/s
bench: seq_write_1m_ratio 2.785 x
bench: share_snapshot_cli_vbas_1000000 1.223 ms
bench: share_cp_reflink_xfs_1000000 17036.6 ms
bench: share_qemu_img_snapshot_qcow2_1000000 216.781 ms
bench: nbd_rr4k_qd1_vbas 8726.1 iops
bench: nbd_rr4k_qd1_vpc 8032.0 iops
bench: nbd_rr4k_qd1_file 6969.7 iops
bench: nbd_rr4k_qd1_cpu_vbas 20.5 us/op
bench: nbd_rr4k_qd1_vbas_file 1.252 x
bench: nbd_sw1m_snap_vbas 674.6 MiB/s
bench: nbd_sw1m_snap_qcow2 183.4 MiB/s
EOF
run sh "$ROOT/bench/results.sh" bench.log
if [ "$RC" = 0 ] && python3 - "$T/out" <<'EOF'
import sys
rows = [l.rstrip('\n').split('\t') for l in open(sys.argv[1]) if not l.startswith('#')]
head, rows = rows[0], rows[1:]
assert head == ['group', 'test', 'peer', 'vbas', 'peer_value', 'unit', 'ratio'], head
got = {(r[0], r[1], r[2]): (float(r[3]), float(r[4]), r[5], float(r[6])) for r in rows}
def near(a, b): return abs(a - b) <= 0.0015 * max(abs(a), abs(b))
want = {
    ('library', '1M seq write', 'raw file'): (1278.2, 458.9, 'MiB/s', 1278.2 / 458.9),
    ('sharing', 'snapshot (CLI), 1M extents', 'XFS cp --reflink'): (1.223, 17036.6, 'ms', 17036.6 / 1.223),
    ('sharing', 'snapshot (CLI), 1M extents', 'qemu-img snapshot'): (1.223, 216.781, 'ms', 216.781 / 1.223),
    ('nbd', '4K rand read QD1', 'nbdkit file'): (8726.1, 6969.7, 'IOPS', 8726.1 / 6969.7),
    ('nbd', '4K rand read QD1', 'nbdkit file, vbas --buffered'): (8032.0, 6969.7, 'IOPS', 8032.0 / 6969.7),
    ('nbd', '1M seq write snap', 'qemu-nbd qcow2'): (674.6, 183.4, 'MiB/s', 674.6 / 183.4),
}
assert set(got) == set(want), sorted(set(got) ^ set(want))
for k, w in want.items():
    g = got[k]
    assert near(g[0], w[0]) and near(g[1], w[1]) and g[2] == w[2] and near(g[3], w[3]), (k, g, w)
EOF
then
	pass "bench/results.sh: a row per test and peer, the ratio vbas's speed over the peer's"
else
	fail "bench/results.sh: a row per test and peer, the ratio vbas's speed over the peer's" \
		"exit $RC" "$(head -20 "$T/out")" "$(cat "$T/err")"
fi
tap_end
