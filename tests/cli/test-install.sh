#!/usr/bin/env bash
# The installed library: tests/cli/test-install.sh BUILD_DIR
#
# make install into a staging root (DESTDIR) puts every file under the
# prefix, the nbdkit plugin included; libvbas.so has its SONAME and exports
# the functions vbas.h declares and nothing else (no bt_, cache_, space_ or
# test hooks), and the objects of libvbas.a were built with every other
# symbol hidden; a program built outside the tree against the installed
# vbas.pc (pkg-config) links against the installed libvbas.so, reports the
# library's version, formats a pool, writes a volume and reads it back,
# with its structs' spare room zeroed (options and settings it passes in)
# or zeroed by the library (what it fills); a spare word set in the format
# options, the open options or the settings is refused with -EINVAL and a
# message that names it.  The man pages vbas(8) and libvbas(3) are in PREFIX/share/man, where man finds
# them by name, and the bash completion in
# PREFIX/share/bash-completion/completions/vbas, where it loads.
set -euo pipefail

BUILD=${1:?usage: $0 BUILD_DIR}
TESTS=$(cd "$(dirname "$0")/.." && pwd)
ROOT=$(cd "$TESTS/.." && pwd)
BUILD=$(cd "$BUILD" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/vbas-install.XXXXXX")
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM HUP
cd "$T"
. "$TESTS/tap.sh"

P=/usr/local                    # the Makefile's default PREFIX
S=$T/root$P
VERSION=$(sed -n 's/.*VBAS_VERSION_STRING "\(.*\)"/\1/p' "$ROOT/include/vbas.h")

expect_ok "make install into a staging root" make -s -C "$ROOT" install O="$BUILD" DESTDIR="$T/root"
outside=$(find "$T/root" -mindepth 1 \( -type f -o -type l \) ! -path "$S/*" | head -5)
if [ -z "$outside" ]; then
	pass "every file is under the prefix"
else
	fail "every file is under the prefix" "outside it: $outside"
fi
missing=
for f in bin/vbas include/vbas.h lib/libvbas.a "lib/libvbas.so.$VERSION" lib/libvbas.so.0 \
	lib/libvbas.so lib/pkgconfig/vbas.pc lib/nbdkit/plugins/nbdkit-vbas-plugin.so \
	share/man/man8/vbas.8 share/man/man3/libvbas.3 share/bash-completion/completions/vbas; do
	[ -e "$S/$f" ] || missing="$missing $f"
done
if [ -z "$missing" ]; then
	pass "the binary, the libraries, the header, vbas.pc, the plugin, the man pages and the completion are installed"
else
	fail "the binary, the libraries, the header, vbas.pc, the plugin, the man pages and the completion are installed" \
		"missing:$missing"
fi
# The man pages by name from the installed tree (man -M: that tree only).
for mp in "8 vbas" "3 libvbas"; do
	set -- $mp
	if ! command -v man >/dev/null; then
		skip "man $1 $2 renders from PREFIX/share/man" "no man (install-deps: man-db)"
		continue
	fi
	MANWIDTH=80 man --warnings -M "$S/share/man" "$1" "$2" >man.out 2>man.err || echo "exit $?" >>man.err
	if [ ! -s man.err ] && head -1 man.out | grep -qi "^$2($1)"; then
		pass "man $1 $2 renders from PREFIX/share/man, no warnings"
	else
		fail "man $1 $2 renders from PREFIX/share/man, no warnings" "$(head -5 man.err)" \
			"$(head -3 man.out)"
	fi
done
run bash -c '. "$1" && complete -p vbas' bash "$S/share/bash-completion/completions/vbas"
expect_true "the installed completion loads in bash and completes vbas" \
	grep -q -- '-F _vbas vbas' "$T/out"
# The systemd units of vbas serve: under the prefix, the service running
# the installed vbas; systemd-analyze verify reads them (the binary the
# staged one, no man pages looked for).
U=$S/lib/systemd/system
expect_true "the systemd units vbas-serve@.service and .socket are installed" \
	test -f "$U/vbas-serve@.service" -a -f "$U/vbas-serve@.socket"
expect_true "vbas-serve@.service runs \$PREFIX/bin/vbas serve with the pool from the instance" \
	grep -qx "ExecStart=$P/bin/vbas serve \$VBAS_SERVE_OPTS %f" "$U/vbas-serve@.service"
if command -v systemd-analyze >/dev/null; then
	mkdir units
	sed "s|^ExecStart=$P/bin/vbas|ExecStart=$S/bin/vbas|" "$U/vbas-serve@.service" >units/vbas-serve@.service
	cp "$U/vbas-serve@.socket" units/
	run systemd-analyze verify --man=no "$T/units/vbas-serve@srv-pool.img.service" \
		"$T/units/vbas-serve@srv-pool.img.socket"
	expect_true "systemd-analyze verify finds nothing to say about them" \
		test "$RC" = 0 -a ! -s "$T/err"
else
	skip "systemd-analyze verify of the units" "no systemd-analyze (systemd)"
fi
expect_true "libvbas.so.0 links to libvbas.so.$VERSION, libvbas.so to libvbas.so.0" \
	test "$(readlink "$S/lib/libvbas.so.0")" = "libvbas.so.$VERSION" -a \
	"$(readlink "$S/lib/libvbas.so")" = libvbas.so.0
expect_true "its SONAME is libvbas.so.0" \
	bash -c "readelf -d '$S/lib/libvbas.so.$VERSION' | grep -q 'SONAME.*\\[libvbas.so.0\\]'"

# What it exports: defined dynamic symbols, less the version node (type A).
nm -D --defined-only "$S/lib/libvbas.so.$VERSION" | awk '$2 != "A" { print $3 }' |
	sed 's/@.*//' | sort -u >exported
cc -E -P "$S/include/vbas.h" | grep -o 'vbas_[a-z0-9_]* *(' | tr -d ' (' | sort -u >declared
others=$(grep -v '^vbas_' exported | head -5 || :)
if [ -z "$others" ] && [ "$(wc -l <exported)" -ge 40 ]; then
	pass "libvbas.so exports vbas_ functions only ($(wc -l <exported) of them)"
else
	fail "libvbas.so exports vbas_ functions only" "others: $others" \
		"count: $(wc -l <exported)"
fi
if cmp -s exported declared; then
	pass "it exports exactly what vbas.h declares"
else
	fail "it exports exactly what vbas.h declares" "$(diff declared exported | head -10)"
fi
# The first fence, without the version script: the archive's objects
# (built with -fvisibility=hidden) give default visibility to what vbas.h
# marks VBAS_API and to nothing else.
readelf -sW "$S/lib/libvbas.a" | awk '($5 == "GLOBAL" || $5 == "WEAK") && $7 != "UND" &&
	$6 == "DEFAULT" { print $8 }' | sort -u >visible
nhidden=$(readelf -sW "$S/lib/libvbas.a" | awk '$5 == "GLOBAL" && $7 != "UND" && $6 == "HIDDEN"' |
	wc -l)
if cmp -s visible declared && [ "$nhidden" -ge 100 ]; then
	pass "libvbas.a's objects: what vbas.h declares is visible, the rest ($nhidden) hidden"
else
	fail "libvbas.a's objects: what vbas.h declares is visible, the rest hidden" \
		"hidden: $nhidden" "$(diff declared visible | head -10)"
fi
leaked=$(grep -xE 'vbas_open_dev|vbas_format_dev|vbas_memdev_create|vbas_crc32c|vbas_err' \
	exported || :)
if [ -z "$leaked" ]; then
	pass "no test hook or internal helper is exported"
else
	fail "no test hook or internal helper is exported" "exported: $leaked"
fi

# A program of the library's users, built against the installed tree.
cat >prog.c <<'EOF'
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <vbas.h>

/* R is -EINVAL, with a message that names the spare word WORD. */
static int refused(const char *what, int r, const char *word)
{
	if (r != -EINVAL || !strstr(vbas_errmsg(), word)) {
		fprintf(stderr, "prog: %s: %d (%s), want -EINVAL naming %s\n", what, r,
			vbas_errmsg(), word);
		return 1;
	}
	printf("refused: %s\n", vbas_errmsg());
	return 0;
}

static int zero(const void *p, size_t n)
{
	const unsigned char *c = p;
	while (n--)
		if (*c++)
			return 0;
	return 1;
}

int main(int argc, char **argv)
{
	struct vbas_format_opts fo;
	struct vbas_open_opts oo = { .cache_bytes = 8 << 20, .spare = { 0 } };
	struct vbas_pool_settings ps;
	struct vbas_pool_info pi;
	struct vbas_pool *p;
	struct vbas_vol *v;
	static char w[65536], r[65536];
	(void)argc;
	printf("%s\n", vbas_version());
	memset(&fo, 0, sizeof(fo));     /* the whole struct, its spare room too */
	fo.size = 64 << 20;
	for (size_t i = 0; i < sizeof(w); i++)
		w[i] = (char)(i * 7 + 3);
	fo.spare[0] = 1;
	if (refused("format", vbas_format(argv[1], &fo), "vbas_format_opts: spare[0]"))
		return 1;
	fo.spare[0] = 0;
	oo.spare[12] = 0x10;
	if (vbas_format(argv[1], &fo) ||
	    refused("open", vbas_open(argv[1], &oo, &p), "vbas_open_opts: spare[12]"))
		return 1;
	oo.spare[12] = 0;
	if (vbas_open(argv[1], &oo, &p) || vbas_pool_get(p, &ps)) {
		fprintf(stderr, "prog: %s\n", vbas_errmsg());
		return 1;
	}
	ps.low_water = 900;
	ps.spare[3] = 5;
	if (refused("set", vbas_pool_set(p, &ps), "vbas_pool_settings: spare[3]"))
		return 1;
	ps.spare[3] = 0;
	memset(&pi, 0xff, sizeof(pi));
	if (vbas_pool_set(p, &ps) || vbas_pool_info(p, &pi) || pi.low_water != 900 ||
	    !zero(pi.spare, sizeof(pi.spare))) {
		fprintf(stderr, "prog: settings or info: %s\n", vbas_errmsg());
		return 1;
	}
	if (vbas_vol_create(p, "disk", 1 << 20) || vbas_vol_open(p, "disk", &v) ||
	    vbas_pwrite(v, w, sizeof(w), 4096, 0) || vbas_pread(v, r, sizeof(r), 4096)) {
		fprintf(stderr, "prog: %s\n", vbas_errmsg());
		return 1;
	}
	vbas_vol_close(v);
	if (vbas_close(p)) {
		fprintf(stderr, "prog: close: %s\n", vbas_errmsg());
		return 1;
	}
	return memcmp(w, r, sizeof(w)) != 0;
}
EOF
export PKG_CONFIG_SYSROOT_DIR=$T/root PKG_CONFIG_PATH=$S/lib/pkgconfig
run pkg-config --modversion vbas
expect_true "pkg-config finds the installed vbas.pc, version $VERSION" \
	test "$RC" = 0 -a "$(cat "$T/out")" = "$VERSION"
FLAGS=$(pkg-config --cflags --libs vbas)
expect_ok "a program outside the tree builds against it" \
	bash -c "cc -Wall -Werror prog.c -o prog $FLAGS"
run env LD_LIBRARY_PATH="$S/lib" ldd ./prog
expect_true "it runs against the installed libvbas.so.0" \
	grep -q "libvbas.so.0 => $S/lib/libvbas.so.0" "$T/out"
run env LD_LIBRARY_PATH="$S/lib" ./prog "$T/p.pool"
if [ "$RC" = 0 ] && [ "$(head -1 "$T/out")" = "$VERSION" ]; then
	pass "it reports the version, formats, opens, sets, writes and reads back its data"
else
	fail "it reports the version, formats, opens, sets, writes and reads back its data" \
		"exit $RC" "stdout: $(cat "$T/out")" "stderr: $(cat "$T/err")"
fi
# The refusals, each with its message.
nref=$(grep -c '^refused: struct vbas_[a-z_]*: spare\[[0-9]*\] is 0x[0-9a-f]*, not 0' "$T/out" || :)
if [ "$RC" = 0 ] && [ "$nref" = 3 ]; then
	pass "a spare word set in the format or open options or the settings: -EINVAL, named"
else
	fail "a spare word set in the format or open options or the settings: -EINVAL, named" \
		"exit $RC" "stdout: $(cat "$T/out")" "stderr: $(cat "$T/err")"
fi
run "$S/bin/vbas" check "$T/p.pool"
expect_true "the installed vbas checks the pool it made: clean" test "$RC" = 0
tap_end
