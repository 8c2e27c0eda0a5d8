#!/usr/bin/env bash
# NBD tests: tests/nbd/test-nbd.sh BUILD_DIR [--args-only]
#
# Serves pools with `vbas serve` (nbdkit and BUILD_DIR/nbdkit-vbas-plugin.so)
# on unix sockets and drives them with real clients: nbdinfo, nbdsh (libnbd's
# Python binding), qemu-img, nbdcopy, fio, and XFS and ext4 on a loop device
# over an nbdfuse file.  --args-only runs just the checks of bad arguments
# to `vbas serve` (for the sanitizer build, which has no plugin: nbdkit is
# not built with ASan and cannot load an ASan-built plugin).
#
# Prints TAP ("ok N - ...", "not ok N - ...", "1..N"); exits non-zero if any
# check failed.  Works in a temporary directory, removed on exit together
# with every server, FUSE mount, loop device and mount it made, also when a
# check fails or the script is interrupted.
set -uo pipefail

BUILD=${1:?usage: $0 BUILD_DIR [--args-only]}
ARGS_ONLY=0
[ "${2:-}" = "--args-only" ] && ARGS_ONLY=1
VBAS=$(cd "$BUILD" && pwd)/vbas
HERE=$(cd "$(dirname "$0")" && pwd)
HELP="$HERE/nbdhelp.py"
if [ ! -x "$VBAS" ]; then
	echo "Bail out! $VBAS is not built"
	exit 1
fi
# nbdsh and the nbd Python module belong to the system's python3.
export PATH=/usr/bin:/usr/sbin:/bin:/sbin:$PATH
PY=/usr/bin/python3
if [ "$ARGS_ONLY" -eq 0 ]; then
	for t in nbdkit nbdinfo nbdcopy nbdfuse fusermount3 qemu-img fio mkfs.xfs mkfs.ext4 \
		xfs_repair e2fsck losetup fstrim mount umount; do
		command -v "$t" >/dev/null || { echo "Bail out! $t is needed (scripts/install-deps.sh)"; exit 1; }
	done
	$PY -c 'import nbd' 2>/dev/null || { echo "Bail out! python3-libnbd is needed (scripts/install-deps.sh)"; exit 1; }
	[ -e "$BUILD/nbdkit-vbas-plugin.so" ] || { echo "Bail out! $BUILD/nbdkit-vbas-plugin.so is not built"; exit 1; }
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/vbas-nbd.XXXXXX")
PIDS=()      # servers and nbdfuse processes
MOUNTS=()    # mount points
LOOPS=()     # loop devices
FUSES=()     # nbdfuse mount points
cleanup() {
	local x
	for x in ${MOUNTS[@]+"${MOUNTS[@]}"}; do
		mountpoint -q "$x" 2>/dev/null && { umount "$x" 2>/dev/null || umount -l "$x" 2>/dev/null; }
	done
	for x in ${LOOPS[@]+"${LOOPS[@]}"}; do
		losetup -d "$x" 2>/dev/null
	done
	for x in ${FUSES[@]+"${FUSES[@]}"}; do
		mountpoint -q "$x" 2>/dev/null && { fusermount3 -u "$x" 2>/dev/null || umount -l "$x" 2>/dev/null; }
	done
	for x in ${PIDS[@]+"${PIDS[@]}"}; do
		kill -TERM "$x" 2>/dev/null
	done
	for x in ${PIDS[@]+"${PIDS[@]}"}; do
		for _ in $(seq 50); do kill -0 "$x" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$x" 2>/dev/null
		wait "$x" 2>/dev/null
	done
	[ -n "${KEEP_T:-}" ] && echo "# kept $T" || rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
cd "$T" || exit 1

MiB=$((1024 * 1024))

# ---- TAP helpers ------------------------------------------------------------

. "$HERE/../tap.sh"

# expect_ok DESC CMD...: exit status 0.
expect_ok() {
	local d=$1
	shift
	run "$@"
	if [ "$RC" -eq 0 ]; then
		pass "$d"
	else
		fail "$d" "exit $RC: $*" "stdout: $(head -c 1500 "$T/out")" "stderr: $(head -c 1500 "$T/err")"
	fi
}

# expect_fail DESC EXIT STDERR_REGEX CMD...: that exit status, and stderr
# matching the extended regex.
expect_fail() {
	local d=$1 want=$2 re=$3
	shift 3
	run "$@"
	if [ "$RC" -eq "$want" ] && grep -Eq -- "$re" "$T/err"; then
		pass "$d"
	else
		fail "$d" "want exit $want and stderr ~ /$re/; got exit $RC: $*" \
			"stderr: $(head -c 1500 "$T/err")"
	fi
}

# expect_out DESC REGEX CMD...: exit 0, and stdout matching the extended regex.
expect_out() {
	local d=$1 re=$2
	shift 2
	run "$@"
	if [ "$RC" -eq 0 ] && grep -Eq -- "$re" "$T/out"; then
		pass "$d"
	else
		fail "$d" "want exit 0 and stdout ~ /$re/; got exit $RC: $*" \
			"stdout: $(head -c 1500 "$T/out")" "stderr: $(head -c 1500 "$T/err")"
	fi
}
# py_checks DESC CMD...: runs a helper that prints PASS/FAIL lines; each
# becomes a check.  A helper that dies is one more failure.
py_checks() {
	local d=$1 line n=0
	shift
	"$@" >"$T/py.out" 2>"$T/py.err"
	local rc=$?
	while IFS= read -r line; do
		case $line in
		"PASS "*) pass "${line#PASS }"; n=$((n + 1));;
		"FAIL "*) fail "${line#FAIL }"; n=$((n + 1));;
		"#"*) echo "$line";;
		esac
	done <"$T/py.out"
	if [ "$rc" -ne 0 ] || [ "$n" -eq 0 ]; then
		fail "$d: the client ran to its end" "exit $rc" "$(tail -n 20 "$T/py.err")"
	fi
}

# ---- Servers ------------------------------------------------------------------

SRV_PID=
SOCK=
SRV_TAG=
# start_server POOL TAG [ARGS...]: vbas serve POOL on $T/TAG.sock; waits
# until it prints its URIs.  Sets SRV_PID, NBDKIT_PID, SOCK, SRV_TAG.
start_server() {
	local pool=$1 tag=$2
	shift 2
	SOCK=$T/$tag.sock
	SRV_TAG=$tag
	# Emptied here, not by the background job's redirection, which may
	# come after the first look below (a tag used before).
	: >"$T/$tag.out"
	"$VBAS" serve "$pool" --socket "$SOCK" "$@" >"$T/$tag.out" 2>"$T/$tag.err" &
	SRV_PID=$!
	PIDS+=("$SRV_PID")
	local i
	for i in $(seq 200); do
		grep -q '^stop with' "$T/$tag.out" 2>/dev/null && break
		kill -0 "$SRV_PID" 2>/dev/null || break
		sleep 0.05
	done
	NBDKIT_PID=$(sed -n 's/.*nbdkit (pid \([0-9]*\)).*/\1/p' "$T/$tag.out")
	if grep -q '^stop with' "$T/$tag.out"; then
		return 0
	fi
	echo "# server $tag did not start: $(cat "$T/$tag.err")"
	return 1
}

# stop_server [SIGNAL]: stops the server; SRV_RC is its exit status.
stop_server() {
	kill "-${1:-TERM}" "$SRV_PID" 2>/dev/null
	wait "$SRV_PID"
	SRV_RC=$?
}

uri() { echo "nbd+unix:///$1?socket=$SOCK"; }

# Bytes of data (not holes) an export maps, from nbdinfo --map.
mapped() { nbdinfo --map --json "$(uri "$1")" >"$T/map.json" && $PY "$HELP" map-data "$T/map.json"; }
# is_hole NAME OFF LEN: the range is all hole in nbdinfo --map.
is_hole() { nbdinfo --map --json "$(uri "$1")" >"$T/map.json" && $PY "$HELP" map-holes "$T/map.json" "$2" "$3"; }

# o_direct PID FILE: 1 if process PID has FILE open with O_DIRECT, 0 if
# without, nothing if not open.
o_direct() {
	local fd want flags
	want=$(readlink -f "$2")
	for fd in /proc/"$1"/fd/*; do
		[ "$(readlink "$fd")" = "$want" ] || continue
		flags=$(awk '/^flags:/ { print $2 }' "/proc/$1/fdinfo/${fd##*/}")
		echo $(((flags & 040000) != 0))
		return
	done
}

# ---- Bad input to vbas serve --------------------------------------------------------

head -c $MiB /dev/urandom >src1m.raw
"$VBAS" format p0.img --size 64M >/dev/null && "$VBAS" create p0.img v --size 1M ||
	{ echo "Bail out! cannot make a pool"; exit 1; }
expect_true "vbas --help lists serve" sh -c "'$VBAS' --help | grep -q '^  serve '"
expect_ok "vbas serve --help" "$VBAS" serve --help
expect_true "serve --help names --socket, --port, --readonly, --buffered, --cache" \
	sh -c "'$VBAS' serve --help | grep -q -- '--socket PATH' && '$VBAS' serve --help | grep -q -- '--port N' &&
	       '$VBAS' serve --help | grep -q -- '--readonly' && '$VBAS' serve --help | grep -q -- '--buffered' &&
	       '$VBAS' serve --help | grep -q -- '--cache SIZE'"
expect_fail "serve: missing POOL" 2 '^vbas: serve: POOL: missing argument' "$VBAS" serve
expect_fail "serve: a missing pool file" 1 '^vbas: serve: nosuch.img: No such file or directory' \
	"$VBAS" serve nosuch.img --socket s.sock
head -c $MiB /dev/urandom >junk.img
expect_fail "serve: not a pool" 1 '^vbas: serve: junk.img: not a vbas pool' \
	"$VBAS" serve junk.img --socket s.sock
expect_fail "serve: both --socket and --port" 2 '^vbas: serve: --socket and --port: give one of them, not both' \
	"$VBAS" serve p0.img --socket s.sock --port 10809
for bad in 0 65536 99999999 abc 12x -1 ""; do
	expect_fail "serve: bad port '$bad'" 2 "^vbas: serve: --port: invalid port '$bad': must be a number from 1 to 65535" \
		"$VBAS" serve p0.img --port "$bad"
done
expect_fail "serve: --bind with --socket" 2 '^vbas: serve: --bind: only with --port' \
	"$VBAS" serve p0.img --socket s.sock --bind 127.0.0.1
expect_fail "serve: empty --socket" 2 '^vbas: serve: --socket: empty path' "$VBAS" serve p0.img --socket ""
expect_fail "serve: a socket path too long" 2 '^vbas: serve: --socket: .*too long for a unix socket' \
	"$VBAS" serve p0.img --socket "$(printf 'x%.0s' $(seq 120))"
: >notasock
expect_fail "serve: --socket names a file that is not a socket" 1 'notasock: exists and is not a socket' \
	"$VBAS" serve p0.img --socket notasock
expect_true "... and the file is left alone" test -f notasock
expect_fail "serve: --cache with a bad size" 2 '^vbas: serve: --cache: invalid size' \
	"$VBAS" serve p0.img --socket s.sock --cache 12Q
expect_fail "serve: an unknown option" 2 '^vbas: serve: --frob: unknown option' \
	"$VBAS" serve p0.img --frob
expect_fail "serve: an extra argument" 2 '^vbas: serve: extra: unexpected argument' \
	"$VBAS" serve p0.img extra
"$VBAS" format p00.img --size 64M >/dev/null
expect_fail "serve: a pool without volumes" 1 '^vbas: serve: p00.img: the pool has no volumes to serve' \
	"$VBAS" serve p00.img --socket s.sock
expect_fail "serve: no plugin where VBAS_NBDKIT_PLUGIN says" 1 '^vbas: serve: nbdkit-vbas-plugin.so: VBAS_NBDKIT_PLUGIN=' \
	env VBAS_NBDKIT_PLUGIN="$T/none.so" "$VBAS" serve p0.img --socket s.sock
expect_fail "serve: no nbdkit" 1 '^vbas: serve: nbdkit: not found' \
	env VBAS_NBDKIT="$T/none" "$VBAS" serve p0.img --socket s.sock
expect_fail "serve: --autoextend 0" 2 '^vbas: serve: --autoextend: the step must be more than 0' \
	"$VBAS" serve p0.img --socket s.sock --autoextend 0
expect_fail "serve: --autoextend with a bad size" 2 '^vbas: serve: --autoextend: invalid size' \
	"$VBAS" serve p0.img --socket s.sock --autoextend 12Q
expect_fail "serve: an empty --on-event" 2 '^vbas: serve: --on-event: empty command' \
	"$VBAS" serve p0.img --socket s.sock --on-event ''
expect_fail "serve: --on-event with --readonly" 2 '^vbas: serve: --on-event: not with --readonly' \
	"$VBAS" serve p0.img --socket s.sock --readonly --on-event true
expect_fail "serve: --autoextend with --readonly" 2 '^vbas: serve: --autoextend: not with --readonly' \
	"$VBAS" serve p0.img --socket s.sock --readonly --autoextend 1G
# TLS, the default export and socket activation: what is wrong is said
# before the pool is opened or nbdkit runs.
printf 'alice:%s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >keys.psk
chmod 600 keys.psk
mkdir -p emptydir
printf 'alice\n' >nokey.psk
printf 'alice:%s\n\nbob:abc\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >oddkey.psk
: >empty.psk
expect_fail "serve: --tls-psk names no file" 1 '^vbas: serve: --tls-psk: nosuch.psk: No such file or directory' \
	"$VBAS" serve p0.img --socket s.sock --tls-psk nosuch.psk
expect_fail "serve: --tls-psk names a directory" 1 '^vbas: serve: --tls-psk: emptydir: not a regular file' \
	"$VBAS" serve p0.img --socket s.sock --tls-psk emptydir
expect_fail "serve: --tls-psk: a line without a key" 1 \
	'^vbas: serve: --tls-psk: nokey.psk: line 1 is not USER:HEXKEY .*psktool' \
	"$VBAS" serve p0.img --socket s.sock --tls-psk nokey.psk
expect_fail "serve: --tls-psk: an odd number of hex digits" 1 \
	'^vbas: serve: --tls-psk: oddkey.psk: line 3 is not USER:HEXKEY' \
	"$VBAS" serve p0.img --socket s.sock --tls-psk oddkey.psk
expect_fail "serve: --tls-psk: an empty file" 1 '^vbas: serve: --tls-psk: empty.psk: no keys in it' \
	"$VBAS" serve p0.img --socket s.sock --tls-psk empty.psk
expect_fail "serve: an empty --tls-psk" 2 '^vbas: serve: --tls-psk: empty file name' \
	"$VBAS" serve p0.img --socket s.sock --tls-psk ''
cp keys.psk open.psk
chmod 644 open.psk
expect_fail "serve: a PSK file others may read: a warning" 1 \
	'^vbas: serve: warning: --tls-psk: open.psk is readable by other users \(mode 0644\)' \
	"$VBAS" serve p00.img --socket s.sock --tls-psk open.psk
expect_true "... and none for a file of mode 0600" \
	sh -c "! '$VBAS' serve p00.img --socket s.sock --tls-psk keys.psk 2>&1 | grep -q warning"
expect_fail "serve: --tls-psk and --tls-certificates" 2 \
	'^vbas: serve: --tls-psk and --tls-certificates: give one of them, not both' \
	"$VBAS" serve p0.img --socket s.sock --tls-psk keys.psk --tls-certificates emptydir
expect_fail "serve: --tls-certificates names nothing" 1 \
	'^vbas: serve: --tls-certificates: nosuch: No such file or directory' \
	"$VBAS" serve p0.img --socket s.sock --tls-certificates nosuch
expect_fail "serve: --tls-certificates names a file" 1 '^vbas: serve: --tls-certificates: keys.psk: not a directory' \
	"$VBAS" serve p0.img --socket s.sock --tls-certificates keys.psk
expect_fail "serve: --tls-certificates: no server certificate in it" 1 \
	'^vbas: serve: --tls-certificates: emptydir: server-cert.pem: No such file or directory \(nbdkit needs' \
	"$VBAS" serve p0.img --socket s.sock --tls-certificates emptydir
mkdir -p nocadir
: >nocadir/server-cert.pem
: >nocadir/server-key.pem
expect_fail "serve: --tls-verify-peer: no ca-cert.pem to check clients with" 1 \
	'^vbas: serve: --tls-certificates: nocadir: ca-cert.pem: No such file or directory' \
	"$VBAS" serve p0.img --socket s.sock --tls-certificates nocadir --tls-verify-peer
expect_fail "serve: an empty --tls-certificates" 2 '^vbas: serve: --tls-certificates: empty directory name' \
	"$VBAS" serve p0.img --socket s.sock --tls-certificates ''
expect_fail "serve: --tls-verify-peer without certificates" 2 \
	'^vbas: serve: --tls-verify-peer: only with --tls-certificates' \
	"$VBAS" serve p0.img --socket s.sock --tls-psk keys.psk --tls-verify-peer
expect_fail "serve: --tls with a bad mode" 2 "^vbas: serve: --tls: invalid mode 'off': 'require'" \
	"$VBAS" serve p0.img --socket s.sock --tls off --tls-psk keys.psk
expect_fail "serve: --tls without keys" 2 '^vbas: serve: --tls: needs --tls-psk FILE or --tls-certificates DIR' \
	"$VBAS" serve p0.img --socket s.sock --tls require
expect_fail "serve: an empty --default-export" 2 '^vbas: serve: --default-export: empty name' \
	"$VBAS" serve p0.img --socket s.sock --default-export ''
expect_fail "serve: --default-export names no volume" 1 \
	"^vbas: serve: --default-export: p0.img has no volume 'nosuch' \(volumes: 'v'\)" \
	"$VBAS" serve p0.img --socket s.sock --default-export nosuch
# Socket activation: LISTEN_PID is the process that exec's vbas.  (Under
# timeout: a vbas that took these for good would serve on port 10809.)
expect_fail "serve: socket activation with LISTEN_FDS not a number" 1 \
	'^vbas: serve: socket activation: LISTEN_FDS=abc: not a number of sockets' \
	timeout 10 sh -c 'export LISTEN_PID=$$ LISTEN_FDS=abc; exec "$0" serve p0.img' "$VBAS"
expect_fail "serve: socket activation with LISTEN_PID not a number" 1 \
	'^vbas: serve: socket activation: LISTEN_PID=x1: not a process id' \
	timeout 10 sh -c 'export LISTEN_PID=x1 LISTEN_FDS=1; exec "$0" serve p0.img' "$VBAS"
expect_fail "serve: socket activation with descriptor 3 not a socket" 1 \
	'^vbas: serve: socket activation: LISTEN_FDS=1: descriptor 3 is not a listening socket' \
	timeout 10 sh -c 'exec 3<keys.psk; export LISTEN_PID=$$ LISTEN_FDS=1; exec "$0" serve p0.img' "$VBAS"
expect_fail "serve: socket activation and --socket" 2 \
	'^vbas: serve: --socket: not with socket activation' \
	timeout 10 $PY -c 'import os, socket, sys
s = socket.socket(socket.AF_UNIX); s.bind("act.sock"); s.listen(1)
s.fileno() == 3 or os.dup2(s.fileno(), 3); os.set_inheritable(3, True)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
os.execv(sys.argv[1], [sys.argv[1], "serve", "p0.img", "--socket", "s.sock"])' "$VBAS"
expect_true "bad arguments leave no socket behind" test ! -e s.sock

if [ "$ARGS_ONLY" -eq 1 ]; then
	echo "1..$N"
	[ "$FAILED" -eq 0 ] || { echo "# $FAILED of $N checks failed"; exit 1; }
	exit 0
fi

# ---- The plugin's own parameters ---------------------------------------------------------

PLUGIN=$(dirname "$VBAS")/nbdkit-vbas-plugin.so
expect_fail "plugin: direct= takes a boolean" 1 'could not decipher boolean \(maybe\)' \
	nbdkit "$PLUGIN" pool=p0.img direct=maybe --run true
expect_fail "plugin: readonly= takes a boolean" 1 'could not decipher boolean \(perhaps\)' \
	nbdkit "$PLUGIN" pool=p0.img readonly=perhaps --run true
expect_fail "plugin: an unknown parameter is named, with the ones it takes" 1 \
	"unknown parameter 'frob' \(the vbas plugin takes pool=FILE, cache=SIZE, readonly=BOOL, direct=BOOL, events=FILE, on_event=CMD, autoextend=SIZE, default_export=NAME, pinned=GEN\)" \
	nbdkit "$PLUGIN" pool=p0.img frob=1 --run true
expect_fail "plugin: default_export= names no volume" 1 \
	"default_export=nosuch: the pool has no such volume \(volumes: v\)" \
	nbdkit "$PLUGIN" pool=p0.img default_export=nosuch --run true
expect_fail "plugin: an empty default_export=" 1 "default_export=: empty name" \
	nbdkit "$PLUGIN" pool=p0.img default_export= --run true
expect_out "plugin: default_export=v serves v to a client asking for no name" '^1048576$' \
	nbdkit -U - "$PLUGIN" pool=p0.img default_export=v --run 'nbdinfo --size "$uri"'
expect_fail "plugin: pool= is required" 1 'pool=FILE is required' nbdkit "$PLUGIN" direct=false --run true
expect_fail "plugin: pinned= without readonly=true" 1 'pinned= reads a served pool: only with readonly=true' \
	nbdkit "$PLUGIN" pool=p0.img pinned=5 --run true
expect_fail "plugin: pinned= not a generation" 1 'pinned=x: a generation, a decimal number above 0' \
	nbdkit -r "$PLUGIN" pool=p0.img readonly=true pinned=x --run true
expect_fail "plugin: pinned= past the pool's newest commit" 1 'the newest commit on the device is [0-9]+, older than the pinned 999999' \
	nbdkit -r "$PLUGIN" pool=p0.img readonly=true pinned=999999 --run true
expect_ok "plugin: direct=false serves" nbdkit "$PLUGIN" pool=p0.img direct=false --run 'nbdinfo --size "$uri"'

# ---- One volume: the default export; --readonly; TCP ----------------------------------

"$VBAS" write p0.img v src1m.raw || echo "# writing to p0.img failed"
expect_true "serve a pool with one volume" start_server p0.img one
expect_ok "the default export is the only volume" nbdinfo --json "nbd+unix://?socket=$SOCK"
expect_true "... named after it" grep -q '"export-name": "v"' "$T/out"
stop_server TERM
expect_true "serve --readonly" start_server p0.img ro --readonly
expect_true "--readonly: the URI says read-only" grep -q "^nbd+unix:///v?socket=$SOCK  (read-only)" "$T/ro.out"
expect_ok "--readonly: the export reads" nbdcopy "$(uri v)" ro.raw
expect_true "... what the pool holds" cmp src1m.raw ro.raw
expect_true "--readonly: the export is read-only" sh -c "nbdinfo --json '$(uri v)' | grep -q '\"is_read_only\": true'"
expect_ok "--readonly: vbas info runs beside the server (shared lock)" "$VBAS" info p0.img
expect_fail "--readonly: vbas write still fails: in use by vbas serve" 1 \
	"^vbas: write: p0.img: pool is in use by 'vbas serve' \\(pid $SRV_PID\\)" \
	"$VBAS" write p0.img v /dev/null
stop_server TERM
expect_true "--readonly: stops with status 0" test "$SRV_RC" -eq 0
PORT=$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$VBAS" serve p0.img --port "$PORT" >tcp.out 2>tcp.err &
SRV_PID=$!
PIDS+=("$SRV_PID")
for _ in $(seq 200); do grep -q '^stop with' tcp.out && break; sleep 0.05; done
expect_true "serve --port prints nbd://localhost:PORT/NAME" grep -qx "nbd://localhost:$PORT/v" tcp.out
expect_ok "the TCP export reads" nbdcopy "nbd://localhost:$PORT/v" tcp.raw
expect_true "... what the pool holds" cmp src1m.raw tcp.raw
stop_server TERM
expect_true "the TCP server stops with status 0" test "$SRV_RC" -eq 0

# ---- As a service: the default export, announcements, TLS, socket activation ---------

"$VBAS" format svc.img --size 64M >/dev/null && "$VBAS" create svc.img a --size 1M &&
	"$VBAS" create svc.img b --size 2M && "$VBAS" write svc.img a src1m.raw ||
	echo "# making svc.img failed"
# line_wait FILE REGEX: until a line of FILE matches (5 s at most).
line_wait() {
	for _ in $(seq 100); do grep -Eq -- "$2" "$1" && return; sleep 0.05; done
}
# sock_q PATH: PATH percent-encoded for a URI's socket= (a backslash is %5C).
sock_q() { $PY -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe="/"))' "$1"; }
# export_of SOCKET NAME: the export a client asking for NAME gets, and its size.
export_of() {
	nbdinfo --json "nbd+unix:///$2?socket=$(sock_q "$1")" | $PY -c 'import json, sys
e = json.load(sys.stdin)["exports"][0]
print(e["export-name"], e["export-size"])'
}
# list_of SOCKET: "NAME DESCRIPTION" per export, from nbdinfo --list.
list_of() {
	nbdinfo --list --json "nbd+unix:///?socket=$1" | $PY -c 'import json, sys
for e in sorted(json.load(sys.stdin)["exports"], key=lambda e: e["export-name"]):
    print(e["export-name"], e.get("description", "")[:25])'
}
expect_true "serve --default-export b" start_server svc.img dflt --default-export b \
	--on-event "echo \"\$VBAS_EVENT\" >>'$T/svc-events.log'"
expect_true "... its URI says it is the default export" \
	grep -qx "nbd+unix:///b?socket=$SOCK  (default export)" "$T/dflt.out"
expect_true "a client asking for no export name gets b" test "$(export_of "$SOCK" '')" = "b 2097152"
expect_true "... and one asking for a gets a" test "$(export_of "$SOCK" a)" = "a 1048576"
list_of "$SOCK" >list0
expect_true "nbdinfo --list before: a and b" test "$(cut -d' ' -f1 list0 | tr '\n' ' ')" = "a b "
# Each change through the control channel: one event line, and the next
# nbdinfo --list shows it.
expect_ok "create through the server, while served" "$VBAS" create svc.img new --size 4M
line_wait "$T/dflt.out" '^\{"event":"volume_created",'
expect_true "... one volume_created event, with the volume and its size" \
	grep -q '^{"event":"volume_created",.*"pool":"'"$T"'/svc.img".*"volume":"new","volume_size":4194304}$' "$T/dflt.out"
expect_true "... nbdinfo --list shows it, described" sh -c "nbdinfo --list 'nbd+unix:///?socket=$SOCK' |
	grep -A1 -x 'export=\"new\":' | grep -q 'description: vbas volume'"
expect_ok "snapshot through the server" "$VBAS" snapshot svc.img new new-snap
expect_ok "clone through the server" "$VBAS" clone svc.img new-snap new-clone
expect_ok "resize through the server" "$VBAS" resize svc.img new --size 8M
expect_ok "rename the default export through the server" "$VBAS" rename svc.img b b2
expect_ok "delete through the server" "$VBAS" delete --yes svc.img new-clone
line_wait "$T/svc-events.log" '^volume_deleted$'
line_wait "$T/dflt.out" '^\{"event":"volume_deleted",'
expect_true "... one event each, in order, with origin, old_name and sizes" $PY -c 'import json, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
got = [(e["event"], e["volume"], e.get("origin"), e.get("old_name"), e.get("volume_size")) for e in ev]
want = [("volume_created", "new", None, None, 4 << 20),
        ("snapshot_created", "new-snap", "new", None, 4 << 20),
        ("clone_created", "new-clone", "new-snap", None, 4 << 20),
        ("volume_resized", "new", None, None, 8 << 20),
        ("volume_renamed", "b2", None, "b", None),
        ("volume_deleted", "new-clone", None, None, None)]
ok = got == want and all(e["pool"] == sys.argv[2] and e["size"] == 64 << 20 and "use" in e and
                         "available" in e for e in ev)
sys.exit(0 if ok else "%s" % got)' "$T/dflt.out" "$T/svc.img"
expect_true "... and --on-event ran for each, in order" test "$(tr '\n' ' ' <"$T/svc-events.log")" = \
	"volume_created snapshot_created clone_created volume_resized volume_renamed volume_deleted "
list_of "$SOCK" >list1
expect_true "nbdinfo --list after: the new volume, its snapshot, the rename, not the deleted clone" \
	test "$(tr '\n' '|' <list1)" = "a vbas volume|b2 vbas volume|new vbas volume|new-snap vbas snapshot (read-only)|"
expect_true "the default export followed the rename: b2" test "$(export_of "$SOCK" '')" = "b2 2097152"
expect_ok "delete the default export through the server" "$VBAS" delete --yes svc.img b2
expect_fail "... then a client asking for no name is refused" 1 'server replied with error' \
	nbdinfo "nbd+unix:///?socket=$SOCK"
expect_true "... and the server log says the default export is gone" \
	grep -q "unknown export 'b2': the pool has no such volume (volumes: a, new, new-snap) (the default export)" "$T/dflt.err"
stop_server TERM
expect_true "the server stopped cleanly" test "$SRV_RC" -eq 0

# TLS with pre-shared keys (the key file made by hand: psktool's format).
expect_true "serve --tls-psk" start_server svc.img psk --tls-psk keys.psk
expect_true "... it says TLS is required" grep -q '^serving svc.img .*, TLS required; 3 exports:$' "$T/psk.out"
expect_true "... its URIs name the user and the key file" \
	grep -qx "nbds+unix://alice@/a?socket=$SOCK&tls-psk-file=$T/keys.psk" "$T/psk.out"
expect_out "a client with the key (the printed URI) reads the export" '^1048576$' \
	nbdinfo --size "nbds+unix://alice@/a?socket=$SOCK&tls-psk-file=$T/keys.psk"
expect_ok "... and its data" nbdcopy "nbds+unix://alice@/a?socket=$SOCK&tls-psk-file=$T/keys.psk" psk.raw
expect_true "... what the pool holds" cmp src1m.raw psk.raw
expect_fail "a client without TLS is refused" 1 'server requires TLS encryption first' nbdinfo --size "$(uri a)"
printf 'alice:%s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >wrong.psk
expect_fail "a client with another key is refused" 1 'gnutls_handshake' \
	nbdinfo --size "nbds+unix://alice@/a?socket=$SOCK&tls-psk-file=$T/wrong.psk"
stop_server TERM
expect_true "serve --tls on --tls-psk" start_server svc.img pskon --tls on --tls-psk keys.psk
expect_true "... it says TLS is on" grep -q '^serving svc.img .*, TLS on (clients may use it); 3 exports:$' "$T/pskon.out"
expect_out "--tls on: a client without TLS is served" '^1048576$' nbdinfo --size "$(uri a)"
expect_out "--tls on: a client with TLS too" '^1048576$' \
	nbdinfo --size "nbds+unix://alice@/a?socket=$SOCK&tls-psk-file=$T/keys.psk"
stop_server TERM

# TLS with X.509 certificates (certtool, gnutls-bin: ECDSA keys, quick).
mk_certs() {
	mkdir -p pki client &&
	certtool --generate-privkey --key-type=ecdsa --outfile pki/ca-key.pem &&
	printf 'cn = vbas test CA\nca\ncert_signing_key\nexpiration_days = 2\n' >pki/ca.info &&
	certtool --generate-self-signed --load-privkey pki/ca-key.pem --template pki/ca.info \
		--outfile pki/ca-cert.pem &&
	certtool --generate-privkey --key-type=ecdsa --outfile pki/server-key.pem &&
	printf 'cn = localhost\ndns_name = localhost\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 2\n' \
		>pki/server.info &&
	certtool --generate-certificate --load-ca-certificate pki/ca-cert.pem \
		--load-ca-privkey pki/ca-key.pem --load-privkey pki/server-key.pem \
		--template pki/server.info --outfile pki/server-cert.pem &&
	certtool --generate-privkey --key-type=ecdsa --outfile client/client-key.pem &&
	printf 'cn = client\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 2\n' >pki/client.info &&
	certtool --generate-certificate --load-ca-certificate pki/ca-cert.pem \
		--load-ca-privkey pki/ca-key.pem --load-privkey client/client-key.pem \
		--template pki/client.info --outfile client/client-cert.pem &&
	cp pki/ca-cert.pem client/
}
if ! command -v certtool >/dev/null; then
	skip "TLS with certificates" "no certtool (gnutls-bin: scripts/install-deps.sh)"
elif ! mk_certs >certs.log 2>&1; then
	fail "TLS with certificates: certtool made the certificates" "$(tail -5 certs.log)"
else
	expect_true "serve --tls-certificates" start_server svc.img x509 --tls-certificates pki
	expect_true "... its URIs name the directory (it holds the CA's certificate)" \
		grep -qx "nbds+unix:///a?socket=$SOCK&tls-certificates=$T/pki" "$T/x509.out"
	expect_out "a client checking the server's certificate reads the export" '^1048576$' \
		nbdinfo --size "nbds+unix:///a?socket=$SOCK&tls-certificates=$T/pki"
	expect_fail "a client without TLS is refused" 1 'server requires TLS encryption first' \
		nbdinfo --size "$(uri a)"
	stop_server TERM
	expect_true "serve --tls-certificates --tls-verify-peer" start_server svc.img peer \
		--tls-certificates pki --tls-verify-peer
	expect_true "... its URIs leave the server's directory out" \
		grep -qx "nbds+unix:///a?socket=$SOCK" "$T/peer.out"
	expect_out "a client with a certificate signed by the CA is served" '^1048576$' \
		nbdinfo --size "nbds+unix:///a?socket=$SOCK&tls-certificates=$T/client"
	expect_fail "a client without a certificate is refused" 1 '.' \
		nbdinfo --size "nbds+unix:///a?socket=$SOCK&tls-certificates=$T/pki"
	stop_server TERM
	mkdir -p badpki
	cp pki/server-key.pem pki/ca-cert.pem badpki/
	echo garbage >badpki/server-cert.pem
	expect_fail "a certificate nbdkit cannot load: nbdkit says so and vbas serve fails" 1 \
		'loading server certificate and key.*server-cert.pem' \
		"$VBAS" serve svc.img --socket bad.sock --tls-certificates badpki
fi

# Socket activation, as vbas-serve@.socket does it: the instance is the
# pool's path escaped, %f unescapes it; systemd-socket-activate listens
# and starts vbas serve at the first connection.
if ! command -v systemd-socket-activate >/dev/null || ! command -v systemd-escape >/dev/null; then
	skip "socket activation" "no systemd-socket-activate (systemd: scripts/install-deps.sh)"
else
	inst=$(systemd-escape --path "$T/svc.img")
	expect_true "the instance name unescapes to the pool's path (%f)" \
		test "$(systemd-escape --path --unescape "$inst")" = "$T/svc.img"
	ASOCK=$T/$inst.sock                # with \x2d for each '-' of the path
	AQ=$(sock_q "$ASOCK")
	systemd-socket-activate -l "$ASOCK" "$VBAS" serve --default-export a \
		"$(systemd-escape --path --unescape "$inst")" >act.out 2>act.err &
	ACT=$!
	PIDS+=("$ACT")
	for _ in $(seq 100); do [ -S "$ASOCK" ] && break; sleep 0.05; done
	expect_ok "nothing runs before the first connection: the pool is free" "$VBAS" info svc.img
	expect_true "the first connection starts vbas serve, which serves it (nbdkit took the socket)" \
		test "$(export_of "$ASOCK" '')" = "a 1048576"
	line_wait act.out '^stop with'     # printed once it sees nbdkit's pid file
	expect_true "vbas serve prints the URIs of the socket it was given (percent-encoded)" \
		grep -Fqx "nbd+unix:///a?socket=$AQ  (default export)" act.out
	expect_ok "a write through the activated socket" nbdcopy src1m.raw "nbd+unix:///new?socket=$AQ"
	expect_ok "... reads back" sh -c "nbdcopy 'nbd+unix:///new?socket=$AQ' - | head -c $MiB | cmp - src1m.raw"
	kill -TERM "$ACT"
	wait "$ACT"
	expect_true "SIGTERM stops it cleanly" test "$?" -eq 0 -a "$(tail -n 1 act.out)" = "stopped: $T/svc.img committed and closed"
	expect_out "the pool is clean" '^clean' "$VBAS" check svc.img
fi

# ---- A pool with volumes for every client -----------------------------------------

P=$T/pool.img
"$VBAS" format "$P" --size 2G >/dev/null || { echo "Bail out! format"; exit 1; }
for v in img:64M cp1:64M cp2:64M f1:128M f2:64M ops:16M xfs:512M ext4:256M live:512M; do
	"$VBAS" create "$P" "${v%%:*}" --size "${v#*:}" || { echo "Bail out! create $v"; exit 1; }
done
"$VBAS" snapshot "$P" ops ops-snap || { echo "Bail out! snapshot"; exit 1; }
NVOLS=10

expect_true "serve: starts and prints its URIs" start_server "$P" s1
expect_true "serve: one URI per volume" test "$(grep -c '^nbd+unix:///' "$T/s1.out")" -eq $NVOLS
expect_true "serve: the URI names the export and the socket" \
	grep -qx "nbd+unix:///xfs?socket=$SOCK" "$T/s1.out"
expect_true "serve: the snapshot's URI says read-only" \
	grep -q "^nbd+unix:///ops-snap?socket=$SOCK .*read-only" "$T/s1.out"

# ---- The pool is locked while it is served ---------------------------------------------

expect_json "map on a served pool reads the server's last commit (nothing written yet)" 'd == []' \
	"$VBAS" map "$P" img --json
expect_fail "repair of a served pool: in use by vbas serve" 1 \
	"^vbas: repair: $P: pool is in use by 'vbas serve' \\(pid $SRV_PID\\), which serves it over NBD through nbdkit \\(pid $NBDKIT_PID\\)" \
	"$VBAS" repair "$P"
expect_fail "a second server on the pool fails" 1 "^vbas: serve: $P: pool is in use by 'vbas serve'" \
	"$VBAS" serve "$P" --socket "$T/second.sock"
expect_fail "a second server on the same socket fails" 1 "a server is already listening on this socket" \
	"$VBAS" serve p0.img --socket "$SOCK"

# ---- Exports -----------------------------------------------------------------

nbdinfo --list --json "nbd+unix://?socket=$SOCK" >"$T/list.json" 2>"$T/err"
expect_true "nbdinfo --list shows every volume" $PY -c 'import json, sys
d = json.load(open(sys.argv[1]))
names = sorted(e["export-name"] for e in d["exports"])
want = sorted("img cp1 cp2 f1 f2 ops ops-snap xfs ext4 live".split())
sys.exit(0 if names == want else "%s != %s" % (names, want))' "$T/list.json"
expect_true "nbdinfo --list: sizes, read-only snapshot, multi-conn, trim, zero, fua" $PY -c 'import json, sys
d = {e["export-name"]: e for e in json.load(open(sys.argv[1]))["exports"]}
ok = (d["xfs"]["export-size"] == 512 << 20 and d["ops-snap"]["is_read_only"] and
      not d["ops"]["is_read_only"] and all(d["ops"][k] for k in
      ("can_multi_conn", "can_trim", "can_zero", "can_fua", "can_flush", "can_fast_zero")))
sys.exit(0 if ok else json.dumps(d["ops"]))' "$T/list.json"
expect_fail "an unknown export is refused" 1 'server replied with error.*nosuch' \
	nbdinfo "$(uri nosuch)"
expect_true "... and the server log says so, naming the volumes" \
	grep -q "unknown export 'nosuch': the pool has no such volume (volumes: img, cp1," "$T/s1.err"
expect_fail "the default export with several volumes is refused" 1 'server replied with error' \
	nbdinfo "nbd+unix://?socket=$SOCK"
expect_true "... and the server log lists the names to ask for" \
	grep -q "no export name given, and the pool has $NVOLS volumes: ask for one by name (img, cp1" "$T/s1.err"

# ---- qemu-img -------------------------------------------------------------------

# 64 MiB of random bytes with runs of zeros.
head -c $((64 * MiB)) /dev/urandom >src.raw
for z in 3:2 10:5 40:8 63:1; do
	dd if=/dev/zero of=src.raw bs=1M seek="${z%%:*}" count="${z#*:}" conv=notrunc status=none
done
expect_ok "qemu-img convert a raw image into an export" \
	qemu-img convert -n -f raw -O raw src.raw "$(uri img)"
expect_ok "qemu-img convert the export back out" \
	qemu-img convert -f raw -O raw "$(uri img)" back.raw
expect_true "the round trip is byte-exact (cmp)" cmp src.raw back.raw
expect_ok "qemu-img compare: the export equals the image" \
	qemu-img compare -f raw -F raw src.raw "$(uri img)"
expect_true "nbdinfo --map: the zero runs are holes" is_hole img $((10 * MiB)) $((5 * MiB))
expect_true "qemu-img map: the zero runs are not data" sh -c "qemu-img map --output=json -f raw '$(uri img)' |
	$PY -c 'import json, sys
m = json.load(sys.stdin)
sys.exit(0 if any(e[\"start\"] <= 40 << 20 and e[\"start\"] + e[\"length\"] >= 48 << 20 and not e[\"data\"] and e[\"zero\"] for e in m) else 1)'"
expect_ok "trim 8 MiB of the export (nbdsh)" nbdsh -u "$(uri img)" -c "h.trim(8 << 20, 16 << 20)" -c "h.flush()"
expect_true "nbdinfo --map shows the trimmed range as a hole" is_hole img $((16 * MiB)) $((8 * MiB))
cp src.raw trimmed.raw
dd if=/dev/zero of=trimmed.raw bs=1M seek=16 count=8 conv=notrunc status=none
expect_ok "the trimmed range reads as zeros, the rest as before" \
	qemu-img compare -f raw -F raw trimmed.raw "$(uri img)"
expect_ok "qemu-io discard through an NBD URI" \
	qemu-io -f raw -c "discard 32M 4M" "$(uri img)"
expect_true "nbdinfo --map shows the discarded range as a hole" is_hole img $((32 * MiB)) $((4 * MiB))
dd if=/dev/zero of=trimmed.raw bs=1M seek=32 count=4 conv=notrunc status=none

# ---- Writes, zeroing, trim, snapshots (nbdsh) ----------------------------------------

py_checks "nbd operations" $PY "$HELP" ops "$(uri ops)" "$(uri ops-snap)"
expect_true "the server log names the export and the refused write" \
	grep -q "write request on readonly connection" "$T/s1.err"

# ---- nbdcopy --------------------------------------------------------------------

expect_ok "nbdcopy export to export (multi-conn)" nbdcopy "$(uri img)" "$(uri cp1)"
expect_ok "nbdcopy export to file" nbdcopy "$(uri cp1)" cp1.raw
expect_true "the copies equal the source" cmp trimmed.raw cp1.raw
expect_ok "nbdcopy file to export" nbdcopy src.raw "$(uri cp2)"
expect_ok "... and it reads back" qemu-img compare -f raw -F raw src.raw "$(uri cp2)"
expect_true "nbdcopy kept the holes (sparse copy)" is_hole cp2 $((40 * MiB)) $((8 * MiB))

# ---- fio with verification, many connections at once -----------------------------

cat >fio.job <<EOF
[global]
ioengine=nbd
rw=randwrite
bs=4k
iodepth=16
verify=crc32c
verify_fatal=1
do_verify=1
size=8m
[one-export]
uri=$(uri f1)
numjobs=4
offset_increment=16m
[other-export]
uri=$(uri f2)
numjobs=2
offset_increment=16m
bs=64k
rw=write
[third-export-mixed]
uri=$(uri f2)
offset=48m
size=8m
rw=randrw
verify=crc32c
EOF
expect_ok "fio: 7 jobs on two exports, writes verified with crc32c" \
	fio --output-format=json --output=fio.json fio.job
expect_true "fio: no job saw an error" $PY -c 'import json, sys
d = json.load(open(sys.argv[1]))
errs = [(j["jobname"], j["error"]) for j in d["jobs"] if j["error"]]
sys.exit(0 if not errs and len(d["jobs"]) == 7 else repr(errs or d["jobs"]))' fio.json

# Writers, trimmers and readers racing over one range of one export, each
# on its own connection: nothing to verify byte for byte, but no errors,
# and vbas check must be clean once the server stops (below).
cat >race.job <<EOF
[global]
ioengine=nbd
uri=$(uri f1)
size=16m
offset=64m
time_based=1
runtime=3
iodepth=8
[writer]
rw=randwrite
bs=4k
numjobs=3
[big-writer]
rw=randwrite
bs=192k
[trimmer]
rw=randtrim
bs=64k
numjobs=2
[reader]
rw=randread
bs=16k
numjobs=2
EOF
expect_ok "fio: 8 jobs race writes, trims and reads over one range" \
	fio --output-format=json --output=race.json race.job
expect_true "fio: the race saw no error" $PY -c 'import json, sys
d = json.load(open(sys.argv[1]))
errs = [(j["jobname"], j["error"]) for j in d["jobs"] if j["error"]]
sys.exit(0 if not errs and len(d["jobs"]) == 8 else repr(errs or d["jobs"]))' race.json

# ---- File systems: XFS and ext4 on a loop device over nbdfuse ---------------------------

# attach NAME [-r]: nbdfuse the export as $T/fuse-NAME/disk, a loop device
# on it; sets LOOP.
attach() {
	local name=$1 ro=${2:-} i
	mkdir -p "$T/fuse-$name"
	nbdfuse ${ro:+-r} "$T/fuse-$name/disk" "$(uri "$name")" 2>"$T/fuse-$name.err" &
	PIDS+=($!)
	FUSES+=("$T/fuse-$name")
	for i in $(seq 100); do [ -e "$T/fuse-$name/disk" ] && break; sleep 0.05; done
	LOOP=$(losetup ${ro:+-r} --show -f "$T/fuse-$name/disk") || return 1
	LOOPS+=("$LOOP")
}
detach() {
	local name=$1
	losetup -d "$LOOP" && fusermount3 -u "$T/fuse-$name"
}

# fs_test NAME MKFS...: make the file system, write files, check them after
# a remount, free space with rm + fstrim and see it return to the pool.
fs_test() {
	local name=$1
	shift
	local mnt=$T/mnt-$name
	mkdir -p "$mnt"
	MOUNTS+=("$mnt")
	expect_true "$name: attach the export (nbdfuse + losetup)" attach "$name"
	expect_ok "$name: $1" "$@" "$LOOP"
	expect_ok "$name: mount" mount "$LOOP" "$mnt"
	head -c $((40 * MiB)) /dev/urandom >"$T/big-$name"
	mkdir -p "$mnt/d"
	cp "$T/big-$name" "$mnt/big" && cp src.raw "$mnt/d/src.raw" &&
		for i in $(seq 20); do echo "file $i" >"$mnt/d/f$i"; done
	expect_ok "$name: sync the written files" sync
	(cd "$mnt" && sha256sum big d/*) >"$T/sums-$name"
	expect_ok "$name: unmount and mount again" sh -c "umount '$mnt' && blockdev --flushbufs '$LOOP' && mount '$LOOP' '$mnt'"
	expect_true "$name: the files read back (sha256sum -c)" sh -c "cd '$mnt' && sha256sum -c --quiet '$T/sums-$name'"
	local before after
	before=$(mapped "$name")
	rm "$mnt/big"
	# XFS keeps freed extents busy (fstrim skips them) until its log
	# checkpoint is done: sync and try again for a while.
	local i
	for i in $(seq 20); do
		sync
		fstrim "$mnt" || break
		after=$(mapped "$name")
		[ "$after" -le $((before - 35 * MiB)) ] && break
		sleep 0.2
	done
	expect_ok "$name: fstrim" fstrim "$mnt"
	after=$(mapped "$name")
	echo "# $name: mapped before rm + fstrim $before, after $after (fstrim runs: $i)"
	expect_true "$name: fstrim returned the space to the pool (nbdinfo --map)" \
		test "$after" -le $((before - 35 * MiB))
	expect_true "$name: the other files are intact" sh -c "cd '$mnt' && grep -v ' big\$' '$T/sums-$name' | sha256sum -c --quiet"
	expect_ok "$name: sync and unmount" sh -c "sync && umount '$mnt'"
	expect_ok "$name: detach" detach "$name"
}
ROOT=0
[ "$(id -u)" -eq 0 ] && ROOT=1
if [ "$ROOT" -eq 1 ]; then
	fs_test xfs mkfs.xfs -q -f
	fs_test ext4 mkfs.ext4 -q -F
else
	skip "file systems on loop devices" "losetup and mount need root"
fi
# ---- A snapshot of a volume while a client writes it (the control channel) ----------

# The CLI cannot open the served pool; it asks the server, which takes
# the snapshot beside the writes in flight.  The writer flushes every 4
# chunks and logs how many it had flushed: what was flushed before the
# snapshot must be in it, and what is written well after it must not.
rm -f "$T/live.progress"
$PY "$HELP" writer "$(uri live)" "$T/live.progress" >/dev/null 2>"$T/writer.err" &
WPID=$!
PIDS+=("$WPID")
progress() { tail -n 1 "$T/live.progress" 2>/dev/null || echo 0; }
wait_progress() {
	local i
	for i in $(seq 600); do
		[ "$(progress)" -ge "$1" ] && return 0
		sleep 0.02
	done
	return 1
}
expect_true "live: a client is writing the volume" wait_progress 8
N_PRE=$(progress)
expect_ok "snapshot of the volume being written, through the server" \
	"$VBAS" snapshot "$P" live live-snap
N_POST=$(progress)
expect_true "live: the client writes on after the snapshot" wait_progress $((N_POST + 16))
kill "$WPID" 2>/dev/null
wait "$WPID" 2>/dev/null
expect_true "live: the snapshot is a new export, read-only" $PY -c 'import json, subprocess, sys
d = {e["export-name"]: e for e in json.loads(subprocess.run(["nbdinfo", "--list", "--json", sys.argv[1]],
     capture_output=True, check=True).stdout)["exports"]}
sys.exit(0 if d["live-snap"]["is_read_only"] and not d["live"]["is_read_only"] else str(d.keys()))' \
	"nbd+unix://?socket=$SOCK"
expect_ok "copy the snapshot out" nbdcopy "$(uri live-snap)" "$T/live-snap.raw"
expect_ok "copy the volume out" nbdcopy "$(uri live)" "$T/live.raw"
py_checks "snapshot while written" $PY "$HELP" snap-live "$T/live-snap.raw" "$T/live.raw" \
	"$N_PRE" "$N_POST"
rm -f "$T/live-snap.raw" "$T/live.raw"
expect_fail "clone through the server: an existing name is refused" 1 \
	"^vbas: clone: $P: volume 'live-snap' already exists \(through the server\)" \
	"$VBAS" clone "$P" live live-snap
expect_fail "snapshot through the server: an unknown source is refused" 1 \
	"^vbas: snapshot: $P: volume 'nosuch' not found \(through the server\)" \
	"$VBAS" snapshot "$P" nosuch x
py_checks "control channel: bad requests" $PY "$HELP" ctl-requests "$P"
expect_ok "clone through the server" "$VBAS" clone "$P" live-snap live-clone
expect_true "the clone reads as the snapshot" bash -c \
	"nbdcopy '$(uri live-snap)' - | cmp - <(nbdcopy '$(uri live-clone)' -)"

# ---- Create, resize and delete of a served pool's volumes (the control channel) ----------

# export_size NAME: its size as a new connection sees it.
export_size() { nbdinfo --size "$(uri "$1")"; }
expect_ok "create through the server" "$VBAS" create "$P" made --size 8M
expect_true "... the new volume is an export at once, of its size" test "$(export_size made)" = $((8 * MiB))
expect_ok "... and takes writes" nbdcopy src1m.raw "$(uri made)"
expect_true "... which read back" sh -c "nbdcopy '$(uri made)' - | head -c $MiB | cmp - src1m.raw"
expect_fail "create through the server: an existing name is refused" 1 \
	"^vbas: create: $P: volume 'made' already exists \(through the server\)" \
	"$VBAS" create "$P" made --size 8M
expect_fail "create through the server: a bad name is refused" 1 \
	"^vbas: create: $P: .*'a/b'.*\(through the server\)" \
	"$VBAS" create "$P" a/b --size 8M
expect_fail "create through the server: a size that is not whole blocks is refused" 1 \
	"^vbas: create: $P: .*\(through the server\)" \
	"$VBAS" create "$P" odd --size 1000
expect_ok "resize through the server" "$VBAS" resize "$P" made --size 16M
expect_true "... a new connection sees the new size" test "$(export_size made)" = $((16 * MiB))
expect_fail "resize through the server: an unknown volume" 1 \
	"^vbas: resize: $P: volume 'nosuch' not found \(through the server\)" \
	"$VBAS" resize "$P" nosuch --size 16M
# A client connected to the export: no shrink, no delete; growing works.
rm -f "$T/held"
$PY -c 'import nbd, sys, time
h = nbd.NBD(); h.connect_uri(sys.argv[1]); open(sys.argv[2], "w").close(); time.sleep(60)' \
	"$(uri made)" "$T/held" 2>/dev/null &
HOLDER=$!
PIDS+=("$HOLDER")
for _ in $(seq 200); do [ -e "$T/held" ] && break; sleep 0.05; done
expect_fail "shrinking a volume a client is connected to is refused" 1 \
	"^vbas: resize: $P: volume 'made' has 1 client connection\(s\) to its export: disconnect them before shrinking it \(through the server\)" \
	"$VBAS" resize --yes "$P" made --size 4M
expect_fail "deleting a volume a client is connected to is refused" 1 \
	"^vbas: delete: $P: volume 'made' has 1 client connection\(s\) to its export: disconnect them before deleting it \(through the server\)" \
	"$VBAS" delete --yes "$P" made
expect_ok "growing it is allowed" "$VBAS" resize "$P" made --size 32M
expect_true "... and a new connection sees the new size" test "$(export_size made)" = $((32 * MiB))
expect_true "... the data is still there" sh -c "nbdcopy '$(uri made)' - | head -c $MiB | cmp - src1m.raw"
kill "$HOLDER" 2>/dev/null
wait "$HOLDER" 2>/dev/null
# Without a terminal and without --yes, nothing is deleted or cut, even
# through the server; --dry-run names the loss and changes nothing.
expect_fail "delete through the server without --yes is refused" 1 \
	"^vbas: delete: $P: would delete volume 'made' \(33554432 bytes\) and the 1048576 bytes mapped in it \(1.0 MiB\): not done without confirmation" \
	"$VBAS" delete "$P" made
expect_fail "shrink through the server without --yes is refused" 1 \
	"^vbas: resize: $P: would shrink volume 'made' from 33554432 to 4194304 bytes.*up to the 1048576 bytes mapped.*not done without confirmation" \
	"$VBAS" resize "$P" made --size 4M
expect_ok "delete --dry-run through the server" "$VBAS" delete "$P" made --dry-run
expect_true "... names the loss" grep -Eq \
	"^would delete volume 'made' \(33554432 bytes\) and the 1048576 bytes mapped in it .*nothing changed" "$T/out"
expect_true "... the volume is still there, whole, with its data" sh -c \
	"test \"\$(nbdinfo --size '$(uri made)')\" = $((32 * MiB)) && nbdcopy '$(uri made)' - | head -c $MiB | cmp - src1m.raw"
for _ in $(seq 100); do
	"$VBAS" delete --yes "$P" made 2>"$T/del.err" && break
	sleep 0.05
done
expect_true "once the client is gone, delete through the server" sh -c "! nbdinfo --list --json 'nbd+unix://?socket=$SOCK' | grep -q '\"export-name\": \"made\"'"
expect_fail "delete through the server: an unknown volume" 1 \
	"^vbas: delete: $P: volume 'made' not found \(through the server\)" \
	"$VBAS" delete --yes "$P" made
expect_ok "create one more to keep" "$VBAS" create "$P" kept --size 4M

# ---- Reserved ranges of a served pool (the control channel) ----------------------------

expect_ok "reserve through the server" "$VBAS" reserve "$P" kept --offset 1M --length 2M
expect_json "... list shows 2 MiB reserved" \
	"[(v['reserved'], v['owed']) for v in d if v['name'] == 'kept'] == [(2*2**20, 0)]" \
	"$VBAS" list "$P" --json
expect_fail "reserve through the server: past the end" 1 \
	"^vbas: reserve: $P: .*past the end of the volume.*\(through the server\)" \
	"$VBAS" reserve "$P" kept --offset 4M --length 4K
expect_fail "reserve through the server: an unknown volume" 1 \
	"^vbas: reserve: $P: .*'nosuch' not found.*\(through the server\)" \
	"$VBAS" reserve "$P" nosuch
expect_ok "snapshot --no-reserve through the server" "$VBAS" snapshot "$P" kept kept-s1 --no-reserve
expect_json "... the volume owes nothing" \
	"[v['owed'] for v in d if v['name'] == 'kept'] == [0]" "$VBAS" list "$P" --json
expect_ok "snapshot through the server" "$VBAS" snapshot "$P" kept kept-s2
expect_json "... the volume owes its reserved blocks" \
	"[v['owed'] for v in d if v['name'] == 'kept'] == [2*2**20]" "$VBAS" list "$P" --json
expect_ok "unreserve through the server" "$VBAS" unreserve "$P" kept
expect_json "... nothing reserved or owed" \
	"[(v['reserved'], v['owed']) for v in d if v['name'] == 'kept'] == [(0, 0)]" \
	"$VBAS" list "$P" --json
expect_ok "delete the snapshots" sh -c "'$VBAS' delete --yes '$P' kept-s1 && '$VBAS' delete --yes '$P' kept-s2"

MAPPED_XFS=$(mapped xfs)

# ---- Stop: SIGTERM commits what the client did not flush ------------------------------------

expect_ok "write 1 MiB to an export and leave without a flush" \
	$PY "$HELP" unflushed "$(uri cp2)" $((60 * MiB)) 7
stop_server TERM
expect_true "SIGTERM stops the server with status 0" test "$SRV_RC" -eq 0
expect_true "... and it says the pool was committed" grep -q '^stopped: .* committed and closed' "$T/s1.out"
expect_true "... and removes its socket" test ! -e "$SOCK"
$PY "$HELP" make-pattern want7 7 $MiB
expect_true "the unflushed write is in the pool" \
	sh -c "'$VBAS' read '$P' cp2 --offset 60M --length 1M | cmp - want7"
expect_true "vbas check: the pool is clean after serving" sh -c "'$VBAS' check '$P' | grep -q '^clean'"
expect_true "vbas list: xfs maps what nbdinfo said (space returned)" \
	test "$(jget '[v["mapped"] for v in d if v["name"] == "xfs"][0]' "$VBAS" list "$P" --json)" = "$MAPPED_XFS"
expect_true "the pool can be used again once the server is gone" "$VBAS" info "$P"
expect_true "the volumes made and deleted through the server are as they were left" \
	test "$(jget '",".join(sorted(v["name"] + ":" + str(v["size"]) for v in d if v["name"] in ("kept", "made")))' \
	       "$VBAS" list "$P" --json)" = "kept:$((4 * MiB))"

# ---- Snapshots of the file systems, checked through second exports -------------------------

expect_ok "snapshot the XFS volume (server stopped)" "$VBAS" snapshot "$P" xfs xfs-snap
expect_ok "snapshot the ext4 volume" "$VBAS" snapshot "$P" ext4 ext4-snap
expect_true "serve the pool again" start_server "$P" s2
if [ "$ROOT" -eq 1 ]; then
	expect_true "attach the XFS snapshot read-only" attach xfs-snap -r
	expect_ok "xfs_repair -n of the snapshot: clean" xfs_repair -n "$LOOP"
	mkdir -p "$T/mnt-snap"
	MOUNTS+=("$T/mnt-snap")
	expect_ok "mount the XFS snapshot read-only" mount -o ro,norecovery "$LOOP" "$T/mnt-snap"
	expect_true "the snapshot holds the files" sh -c "cd '$T/mnt-snap' && grep -v ' big\$' '$T/sums-xfs' | sha256sum -c --quiet"
	expect_ok "unmount and detach the XFS snapshot" sh -c "umount '$T/mnt-snap' && losetup -d '$LOOP' && fusermount3 -u '$T/fuse-xfs-snap'"
	expect_true "attach the ext4 snapshot read-only" attach ext4-snap -r
	expect_ok "e2fsck -fn of the snapshot: clean" e2fsck -fn "$LOOP"
	expect_ok "detach the ext4 snapshot" detach ext4-snap
else
	skip "fsck of the snapshots" "losetup needs root"
fi
stop_server INT
expect_true "SIGINT stops the server with status 0" test "$SRV_RC" -eq 0

# ---- A full pool ------------------------------------------------------------------

PF=$T/full.img
"$VBAS" format "$PF" --size 64M >/dev/null && "$VBAS" create "$PF" fill --size 256M &&
	"$VBAS" create "$PF" other --size 16M && "$VBAS" create "$PF" spare --size 32M &&
	head -c $((8 * MiB)) /dev/urandom >other.raw && "$VBAS" write "$PF" other other.raw &&
	head -c $((24 * MiB)) /dev/urandom >spare.raw && "$VBAS" write "$PF" spare spare.raw ||
	echo "# setting up the full pool failed"
expect_true "serve an over-provisioned pool" start_server "$PF" full
py_checks "pool full" $PY "$HELP" pool-full "$(uri fill)" "$(uri other)" "$(uri spare)" other.raw
expect_json "list through the server: the NO_HOLE zero reserved 2 MiB of 'other'" \
	"[v['reserved'] for v in d if v['name'] == 'other'] == [2*2**20]" "$VBAS" list "$PF" --json
expect_true "the server log says the pool is full, naming the export" \
	grep -Eq "error: fill: write of [0-9]+ bytes at offset [0-9]+: .*(full|No space)" "$T/full.err"
expect_true "the server is still up" kill -0 "$NBDKIT_PID"
stop_server TERM
expect_true "the full pool's server stops cleanly" test "$SRV_RC" -eq 0
expect_true "vbas check: the full pool is clean" sh -c "'$VBAS' check '$PF' | grep -q '^clean'"

# ---- SIGKILL during writes ------------------------------------------------------------

# kill_during_writes VOLUME: a client writes VOLUME of the running server,
# flushing as it goes and logging to ./progress what it flushed; nbdkit
# gets SIGKILL once 12 chunks are flushed.  SRV_RC: vbas serve's status.
kill_during_writes() {
	rm -f progress
	$PY "$HELP" writer "$(uri "$1")" progress 2>writer.err &
	WRITER=$!
	PIDS+=("$WRITER")
	for _ in $(seq 200); do
		[ -f progress ] && [ "$(wc -l <progress)" -ge 12 ] && break
		sleep 0.05
	done
	kill -KILL "$NBDKIT_PID"
	wait "$SRV_PID"
	SRV_RC=$?
	kill "$WRITER" 2>/dev/null
	wait "$WRITER" 2>/dev/null
}

PK=$T/kill.img
"$VBAS" format "$PK" --size 512M >/dev/null && "$VBAS" create "$PK" k --size 256M ||
	echo "# setting up the kill pool failed"
expect_true "serve a pool for the kill" start_server "$PK" kill
expect_true "the server has the pool open with O_DIRECT" test "$(o_direct "$NBDKIT_PID" "$PK")" = 1
kill_during_writes k
expect_true "serve reports that nbdkit was killed" \
	grep -q "vbas: serve: nbdkit: killed by signal 9" "$T/kill.err"
expect_true "... and fails" test "$SRV_RC" -ne 0
expect_true "the pool opens and vbas check is clean after SIGKILL" sh -c "'$VBAS' check '$PK' | grep -q '^clean'"
expect_ok "read the volume back" "$VBAS" read "$PK" k kill.raw
py_checks "after the kill" $PY "$HELP" verify-flushed kill.raw progress

# ---- --buffered: the page cache instead of O_DIRECT; SIGKILL during writes ---------------

PB=$T/buffered.img
"$VBAS" format "$PB" --size 512M >/dev/null && "$VBAS" create "$PB" k --size 256M ||
	echo "# setting up the buffered pool failed"
expect_true "serve --buffered" start_server "$PB" buffered --buffered
expect_true "--buffered: nbdkit has the pool open without O_DIRECT" \
	test "$(o_direct "$NBDKIT_PID" "$PB")" = 0
kill_during_writes k
expect_true "--buffered: vbas check is clean after SIGKILL" sh -c "'$VBAS' check '$PB' | grep -q '^clean'"
expect_ok "--buffered: read the volume back" "$VBAS" read "$PB" k buffered.raw
py_checks "--buffered, after the kill" $PY "$HELP" verify-flushed buffered.raw progress

# ---- SIGKILL to vbas serve: nbdkit goes too (--exit-with-parent), cleanly -------------------

expect_true "serve the pool again" start_server "$PK" kill2
KILLED_NBDKIT=$NBDKIT_PID
expect_ok "write through it without a flush" $PY "$HELP" unflushed "$(uri k)" $((200 * MiB)) 8
{ kill -KILL "$SRV_PID"; wait "$SRV_PID"; } 2>/dev/null
for _ in $(seq 100); do kill -0 "$KILLED_NBDKIT" 2>/dev/null || break; sleep 0.05; done
expect_true "nbdkit exits when vbas serve is killed" sh -c "! kill -0 $KILLED_NBDKIT 2>/dev/null"
$PY "$HELP" make-pattern want8 8 $MiB
expect_true "... after committing the pool" \
	sh -c "'$VBAS' read '$PK' k --offset 200M --length 1M | cmp - want8"
expect_true "... and leaves its socket behind" test -S "$SOCK"
expect_true "serve again on the stale socket" start_server "$PK" kill2
expect_ok "the export serves" nbdinfo "$(uri k)"
stop_server TERM
expect_true "vbas check: clean" sh -c "'$VBAS' check '$PK' | grep -q '^clean'"

# ---- vbas list and info of a served pool (the control channel) ---------------------------
# The same output as with the server stopped, byte for byte (but for the
# server's cache size and the generation its final commit may add), for
# names with a space, UTF-8 and a snapshot's origin; an empty pool.  (A
# newline, which no front end carries, is refused: tests/cli.)

PL=$T/listed.img
"$VBAS" format "$PL" --size 64M >/dev/null && "$VBAS" create "$PL" 'a b' --size 8M &&
	"$VBAS" create "$PL" 'été' --size 4M &&
	"$VBAS" write "$PL" 'a b' src1m.raw && "$VBAS" snapshot "$PL" 'a b' snap >/dev/null ||
	echo "# setting up the listed pool failed"
info_of() { "$VBAS" info "$1" --json | $PY -c 'import json, sys
d = json.load(sys.stdin); del d["cache_blocks"], d["generation"]; print(json.dumps(d, sort_keys=True))'; }
"$VBAS" list "$PL" >list-off.txt
"$VBAS" list "$PL" --json >list-off.json
info_of "$PL" >info-off.json
expect_true "list and info: serve the pool" start_server "$PL" listed
expect_ok "vbas list of a served pool (through the server)" "$VBAS" list "$PL"
expect_true "... the same table as with the server stopped" cmp "$T/out" list-off.txt
expect_true "... and the same JSON" sh -c "'$VBAS' list '$PL' --json | cmp - list-off.json"
expect_true "... which names the snapshot's origin and keeps the UTF-8 name as it is" \
	test "$(jget '[(v["name"], v["origin"], v["readonly"], v["mapped"]) for v in d] == [("a b", None, False, 1048576), ("\u00e9t\u00e9", None, False, 0), ("snap", "a b", True, 1048576)]' cat list-off.json)" = True
expect_ok "vbas info of a served pool (through the server)" "$VBAS" info "$PL"
info_of "$PL" >info-on.json
expect_true "... the same figures as with the server stopped" cmp info-on.json info-off.json
# rename through the server: the export takes the new name, with its data.
expect_ok "rename through the server" "$VBAS" rename "$PL" 'a b' 'a-b'
expect_true "... the export list names it, and not the old name" sh -c \
	"nbdinfo --list --json 'nbd+unix://?socket=$SOCK' >ren.json && grep -q '\"export-name\": \"a-b\"' ren.json && ! grep -q '\"export-name\": \"a b\"' ren.json"
expect_true "... and its export reads the volume's data" sh -c \
	"nbdcopy 'nbd+unix:///a-b?socket=$SOCK' - | head -c $MiB | cmp - src1m.raw"
expect_ok "delete every volume through the server" sh -c \
	"'$VBAS' delete -y '$PL' snap && '$VBAS' delete --yes '$PL' 'a-b' && '$VBAS' delete --force '$PL' 'été'"
expect_json "list of a served pool with no volumes: no rows" 'd == []' "$VBAS" list "$PL" --json
expect_true "... and info counts none" test "$(jget 'd["volumes"]' "$VBAS" info "$PL" --json)" = 0
stop_server TERM
expect_true "... as it does with the server stopped" test "$(jget 'd["volumes"]' "$VBAS" info "$PL" --json)" = 0

# ---- --buffered: a failed write-out fails every later flush ------------------------------
# The page cache reports a failed write-out once per open file, and marks
# the pages clean.  The pool sits on a loop device over a file on a small
# tmpfs; the volume's blocks are punched out of that file and the tmpfs is
# filled, so an in-place rewrite (no metadata changes) fails when it is
# written out (the loop driver gets ENOSPC: EIO).  Its flush must fail,
# and so must every flush after the device takes writes again: the lost
# rewrite is never reported durable.

wb_error_test() {
	local tiny=$T/tiny loop len
	mkdir -p "$tiny"
	mount -t tmpfs -o size=64M tmpfs "$tiny" || return 1
	MOUNTS+=("$tiny")
	truncate -s 48M "$tiny/backing"
	loop=$(losetup --show -f "$tiny/backing") || return 1
	LOOPS+=("$loop")
	$PY "$HELP" make-pattern wb.raw 21 $((2 * MiB))
	"$VBAS" format "$loop" --size 48M >/dev/null && "$VBAS" create "$loop" w --size 8M >/dev/null &&
		"$VBAS" write "$loop" w wb.raw >/dev/null || return 1
	expect_true "write-back error: the volume maps one extent" \
		test "$(jget 'len(d)' "$VBAS" map "$loop" w --json)" = 1
	len=$(jget 'd[0]["length"]' "$VBAS" map "$loop" w --json)
	expect_ok "write-back error: punch the volume's blocks out of the backing file" \
		fallocate --punch-hole --offset "$(jget 'd[0]["physical"]' "$VBAS" map "$loop" w --json)" \
		--length "$len" "$tiny/backing"
	expect_true "write-back error: serve --buffered from the loop device" \
		start_server "$loop" wberr --buffered
	dd if=/dev/zero of="$tiny/fill" bs=1M status=none 2>/dev/null
	expect_true "write-back error: the tmpfs is full" \
		sh -c "test \$(df --output=avail '$tiny' | tail -n 1) -lt 1024"
	expect_fail "an in-place rewrite whose write-out fails: its flush fails (EIO)" 1 \
		"flush.*(EIO|Input/output)" \
		nbdsh -u "$(uri w)" -c "h.pwrite(b'\\xbb' * $MiB, 0)" -c "h.flush()"
	rm -f "$tiny/fill"
	expect_ok "the device takes writes again" \
		dd if=/dev/zero of="$tiny/fill" bs=1M count=8 status=none
	expect_fail "... a flush after it still fails" 1 "flush.*(EIO|Input/output)" \
		nbdsh -u "$(uri w)" -c "h.flush()"
	expect_fail "... as does a later write's flush, on a new connection" 1 \
		"flush.*(EIO|Input/output)" \
		nbdsh -u "$(uri w)" -c "h.pwrite(b'\\xcc' * 4096, 4 * $MiB)" -c "h.flush()"
	stop_server TERM
	expect_true "... and the server's final commit does not succeed either" test "$SRV_RC" -ne 0
	expect_true "... which vbas serve says" \
		grep -q "final commit: .*Input/output error" "$T/wberr.err"
	expect_true "write-back error: vbas check is clean" \
		sh -c "'$VBAS' check '$loop' | grep -q '^clean'"
	# A new open starts clean: the device works again, so writes are durable.
	$PY -c "import sys; sys.stdout.buffer.write(b'\\xdd' * $MiB)" >wb-dd.raw
	expect_true "write-back error: serve the pool again" start_server "$loop" wberr2 --buffered
	expect_ok "... a rewrite and its flush succeed, and read back" \
		nbdsh -u "$(uri w)" -c "h.pwrite(b'\\xdd' * $MiB, 0)" -c "h.flush()" \
		-c "assert h.pread($MiB, 0) == b'\\xdd' * $MiB"
	stop_server TERM
	expect_true "... and the server stops cleanly" test "$SRV_RC" -eq 0
	expect_true "... and the rewrite is on the device (read with O_DIRECT)" \
		sh -c "'$VBAS' read '$loop' w --length 1M | cmp - wb-dd.raw"
	losetup -d "$loop" && umount "$tiny"
}
if [ "$ROOT" -eq 1 ]; then
	wb_error_test || fail "write-back error: setting up the loop device on a tmpfs failed"
else
	skip "write-back error on a loop device" "losetup and mount need root"
fi

# ---- vbas check of a served pool (a pin on the server) -------------------------------------
# The CLI asks the server for a pin and reads the pool file read-only at
# the server's newest commit while the server goes on.  During every
# check one client writes and flushes (verified afterwards), and another
# writes, trims and flushes in a loop in a nearly full pool (a commit each
# time, freeing tree nodes and data blocks that are handed out again at
# once).  The test hook VBAS_TEST_CHECK_PAUSE_MS holds the pool open
# before checking, so that many commits happen in between: without the
# pin, blocks of the checked commit are reused by then.

PV=$T/checked.img
head -c $((40 * MiB)) /dev/urandom >static.raw
"$VBAS" format "$PV" --size 64M >/dev/null && "$VBAS" create "$PV" static --size 40M >/dev/null &&
	"$VBAS" write "$PV" static static.raw >/dev/null && "$VBAS" create "$PV" w --size 12M >/dev/null &&
	"$VBAS" create "$PV" c --size 4M >/dev/null || echo "# setting up the checked pool failed"
expect_true "check while served: serve the pool" start_server "$PV" checked
rm -f progress
$PY "$HELP" writer "$(uri w)" progress 2>writer.err &
WRITER=$!
PIDS+=("$WRITER")
$PY "$HELP" churn "$(uri c)" 15 >churn.out 2>churn.err &
CHURN=$!
PIDS+=("$CHURN")
for _ in $(seq 200); do [ -f progress ] && [ "$(wc -l <progress)" -ge 2 ] && break; sleep 0.05; done
# This writer's progress file ($T/progress), not the earlier one's.
checked_progress() { tail -n 1 "$T/progress" 2>/dev/null || echo 0; }
W0=$(checked_progress)
for i in 1 2 3; do
	expect_out "check of a served pool while a client writes ($i)" \
		"^clean: .*; the server's commit, read-only$" "$VBAS" check "$PV"
done
expect_out "... also when it holds the pool open for 2 s before checking" \
	"^clean: .*; the server's commit, read-only$" env VBAS_TEST_CHECK_PAUSE_MS=2000 "$VBAS" check "$PV"
expect_true "... while the client went on flushing" test "$(checked_progress)" -gt "$W0"
expect_true "... and the check said nothing on stderr" test ! -s "$T/err"
expect_true "check --json of a served pool: served, read-only, a generation" \
	test "$(jget 'd["clean"] and d["served"] and d["read_only"] and d["generation"] > 0' "$VBAS" check "$PV" --json)" = True
kill "$WRITER" 2>/dev/null
wait "$WRITER" 2>/dev/null
wait "$CHURN"
CHURN_RC=$?
expect_true "the writing, trimming and flushing client ran to its end" \
	sh -c "test $CHURN_RC -eq 0 && grep -q 'write/trim cycles' churn.out"
expect_ok "the server still serves" nbdinfo "$(uri w)"
expect_true "the static volume reads back" sh -c "nbdcopy '$(uri static)' - | cmp - static.raw"
py_checks "pin requests" $PY "$HELP" pin-requests "$PV"
expect_ok "copy the written volume out" nbdcopy "$(uri w)" "$T/checked.raw"
stop_server TERM
py_checks "written during the checks" $PY "$HELP" verify-flushed "$T/checked.raw" progress
expect_out "vbas check with the server stopped: clean" '^clean' "$VBAS" check "$PV"

# A killed check lets go of its pin: while it is held, blocks freed are not
# reused (a 64 MiB pool with 32 MiB written and trimmed has no room for 32
# MiB more); once the check is killed, they are.
PP=$T/pinned.img
"$VBAS" format "$PP" --size 64M >/dev/null && "$VBAS" create "$PP" v --size 256M >/dev/null ||
	echo "# setting up the pinned pool failed"
expect_true "pins: serve the pool" start_server "$PP" pinned
expect_ok "pins: write 32 MiB" nbdsh -u "$(uri v)" -c "h.pwrite(b'\x5a' * (32 << 20), 0)" -c "h.flush()"
VBAS_TEST_CHECK_PAUSE_MS=60000 "$VBAS" check "$PP" >/dev/null 2>&1 &
CHK=$!
PIDS+=("$CHK")
opened=0
for _ in $(seq 200); do
	for fd in /proc/"$CHK"/fd/*; do
		[ "$(readlink "$fd" 2>/dev/null)" = "$PP" ] && opened=1
	done
	[ $opened -eq 1 ] && break
	sleep 0.05
done
expect_true "pins: the check has the pool open (under its pin)" test $opened -eq 1
expect_ok "pins: trim the 32 MiB" nbdsh -u "$(uri v)" -c "h.trim(32 << 20, 0)" -c "h.flush()"
expect_fail "pins: while the check holds its pin, 32 MiB more do not fit" 1 "ENOSPC|No space" \
	nbdsh -u "$(uri v)" -c "h.pwrite(b'\xa5' * (32 << 20), 64 << 20)" -c "h.flush()"
{ kill -KILL "$CHK"; wait "$CHK"; } 2>/dev/null
ok_after=0
for _ in $(seq 100); do
	nbdsh -u "$(uri v)" -c "h.pwrite(b'\xa5' * (32 << 20), 64 << 20)" -c "h.flush()" 2>/dev/null && { ok_after=1; break; }
	sleep 0.05
done
expect_true "pins: once the check is killed, they do" test $ok_after -eq 1
expect_ok "... and read back" nbdsh -u "$(uri v)" -c "assert h.pread(32 << 20, 64 << 20) == b'\xa5' * (32 << 20)"
expect_out "... and check of the served pool is clean" "^clean: " "$VBAS" check "$PP"
stop_server TERM
expect_out "... as it is with the server stopped" '^clean' "$VBAS" check "$PP"

# A --readonly server shares the pool's lock: check opens it read-only.
expect_true "check of a --readonly server: serve" start_server "$PP" pinro --readonly
expect_out "check of a --readonly server: clean, read-only" '^clean: .*; read-only$' "$VBAS" check "$PP"
expect_true "... which it says on stderr" grep -q \
	"^vbas: check: $PP: the pool is open read-only elsewhere: checking read-only" "$T/err"
expect_out "check -n of a --readonly server" '^clean: .*; read-only$' "$VBAS" check -n "$PP"
expect_ok "... and the server still serves" nbdinfo "$(uri v)"
stop_server TERM

# ---- Every command on a served pool ----------------------------------------------------------
# Reading commands (map, diff, read) read the server's last commit under a
# pin, as check does; changing ones (write, reflink, dedupe, unshare,
# discard) are done by the server.  A client writes to another export all
# along; the diff of two snapshots taken while served is the diff with the
# server stopped.

PS=$T/served.img
head -c $((8 * MiB)) /dev/urandom >sv-base.raw
head -c $((2 * MiB)) /dev/urandom >sv-b.raw
head -c $((4 * MiB)) sv-base.raw >sv-base4.raw
head -c $MiB sv-b.raw >sv-b1.raw
"$VBAS" format "$PS" --size 512M >/dev/null && "$VBAS" create "$PS" v --size 64M >/dev/null &&
	"$VBAS" write "$PS" v sv-base.raw && "$VBAS" create "$PS" busy --size 16M >/dev/null ||
	echo "# setting up the served pool failed"
expect_true "served commands: serve the pool" start_server "$PS" served
rm -f busy.progress
$PY "$HELP" cycle-writer "$(uri busy)" busy.progress 2>busy.err &
BUSY=$!
PIDS+=("$BUSY")
for _ in $(seq 200); do [ -s busy.progress ] && break; sleep 0.05; done
expect_ok "served: snapshot s1" "$VBAS" snapshot "$PS" v s1
expect_ok "served: a client writes 64 KiB at 1 MiB and 128 KiB at 6 MiB" nbdsh -u "$(uri v)" \
	-c "h.pwrite(b'\x11' * 65536, 1 << 20)" -c "h.pwrite(b'\x22' * 131072, 6 << 20)" -c "h.flush()"
expect_ok "served: snapshot s2" "$VBAS" snapshot "$PS" v s2
expect_ok "served: diff s1 s2" "$VBAS" diff "$PS" s1 s2 --raw --bytes --noheadings
cp "$T/out" sv-diff.served
expect_true "... names the two written ranges" sh -c \
	"grep -q '^1048576 ' sv-diff.served && grep -q '^6291456 ' sv-diff.served && test \$(wc -l <sv-diff.served) -eq 2"
expect_ok "served: diff --json" "$VBAS" diff "$PS" s1 s2 --json
expect_ok "served: map s2 (where its data is: sharing changes with the rollback below)" "$VBAS" map "$PS" s2 -o offset,length,physical
cp "$T/out" sv-map.served
expect_ok "served: read s2 into a file" "$VBAS" read "$PS" s2 sv-s2.raw
expect_ok "... which the export reads the same" sh -c "nbdcopy '$(uri s2)' - | cmp - sv-s2.raw"
expect_ok "served: read s1 through a pipe: the data from before" \
	sh -c "'$VBAS' read '$PS' s1 --length 8M | cmp - sv-base.raw"
# A sparse file: 2 MiB of data at 1 MiB, the rest a hole, over what is there.
$PY -c "import os; f = os.open('sv-sparse.raw', os.O_WRONLY | os.O_CREAT | os.O_TRUNC); os.ftruncate(f, 8 << 20); os.pwrite(f, open('sv-b.raw', 'rb').read(), 1 << 20)"
expect_ok "served: write a sparse file at 16 MiB (the server reads it)" \
	"$VBAS" write "$PS" v --offset 16M sv-sparse.raw
expect_ok "... the export reads it back" sh -c \
	"nbdcopy '$(uri v)' - | tail -c +$((16 * MiB + 1)) | head -c $((8 * MiB)) | cmp - sv-sparse.raw"
expect_json "... and only its data is mapped" \
	"[(e['offset'], e['length']) for e in d if 16 << 20 <= e['offset'] < 24 << 20] == [(17 << 20, 2 << 20)]" \
	"$VBAS" map "$PS" v --json
expect_ok "served: write from a pipe at 40 MiB" sh -c "cat sv-b.raw | '$VBAS' write '$PS' v --offset 40M"
expect_ok "... reads back through the pin" sh -c "'$VBAS' read '$PS' v --offset 40M --length 2M | cmp - sv-b.raw"
expect_out "served: dedupe of the same bytes" "^deduped 2097152 bytes$" "$VBAS" dedupe "$PS" v 17M v 40M 2M
expect_json "... which are shared now" \
	"all(e['shared'] for e in d if 40 << 20 <= e['offset'] < 42 << 20)" "$VBAS" map "$PS" v --json
expect_ok "served: zeros from a pipe over it" sh -c "head -c 2M /dev/zero | '$VBAS' write '$PS' v --offset 40M"
expect_true "... leave a hole" is_hole v $((40 * MiB)) $((2 * MiB))
expect_ok "served: reflink s1 0 v 32M 4M" "$VBAS" reflink "$PS" s1 0 v 32M 4M
expect_ok "... the export reads s1's bytes there" sh -c \
	"nbdcopy '$(uri v)' - | tail -c +$((32 * MiB + 1)) | head -c $((4 * MiB)) | cmp - sv-base4.raw"
expect_json "served: dedupe of different bytes changes nothing" 'd == {"same": False, "deduped": 0}' \
	"$VBAS" dedupe "$PS" s1 0 v 4M 4M --json
expect_json "... the reflinked range is shared" \
	"all(e['shared'] for e in d if 32 << 20 <= e['offset'] < 36 << 20)" "$VBAS" map "$PS" v --json
expect_ok "served: unshare it" "$VBAS" unshare "$PS" v --offset 32M --length 4M
expect_json "... and it is not shared" \
	"not any(e['shared'] for e in d if 32 << 20 <= e['offset'] < 36 << 20)" "$VBAS" map "$PS" v --json
expect_ok "served: discard it" "$VBAS" discard "$PS" v --offset 32M --length 4M
expect_true "... a hole" is_hole v $((32 * MiB)) $((4 * MiB))
expect_fail "served: write to a snapshot: refused by the server" 1 \
	"^vbas: write: $PS: .*snapshot.*\(through the server\)$" "$VBAS" write "$PS" s1 sv-b.raw
expect_fail "served: reflink from an unknown volume" 1 \
	"^vbas: reflink: $PS: volume 'nosuch' not found \(through the server\)$" \
	"$VBAS" reflink "$PS" nosuch 0 v 0 4K
expect_fail "served: a write past the end says how much was written" 1 \
	"past the end of the volume.*; 1048576 bytes at offset 66060288 were written before the failure \(through the server\)" \
	sh -c "cat sv-b.raw | '$VBAS' write '$PS' v --offset 63M"
expect_fail "served: a sparse file too large is refused before anything is written" 1 \
	"write of 8388608 bytes at offset 62914560 goes past the end.*\(through the server\)$" \
	"$VBAS" write "$PS" v --offset 60M sv-sparse.raw
expect_fail "served: unshare of an unknown volume" 1 "'nosuch' not found \(through the server\)" \
	"$VBAS" unshare "$PS" nosuch
# A vbas write killed while the server copies: the server stops at its next
# read, commits what it wrote and says so.
rm -f sv.fifo && mkfifo sv.fifo
"$VBAS" write "$PS" v --offset 48M sv.fifo 2>/dev/null &
WPID=$!
PIDS+=("$WPID")
exec 7>sv.fifo
head -c $MiB sv-b.raw >&7
sleep 0.3
{ kill -KILL "$WPID"; wait "$WPID"; } 2>/dev/null
head -c $MiB sv-b.raw >&7 2>/dev/null
said=0
for _ in $(seq 100); do grep -q "control: write v .*the client went away; 1048576 bytes written" "$T/served.err" && { said=1; break; }; sleep 0.05; done
exec 7>&-
expect_true "served: a killed vbas write stops the server's copy, which logs what it wrote" test $said -eq 1
expect_ok "... and the 1 MiB it read is there" sh -c "'$VBAS' read '$PS' v --offset 48M --length 1M | cmp - sv-b1.raw"
expect_fail "served: rollback of a volume a client is connected to" 1 \
	"volume 'busy' has 1 client connection\\(s\\) to its export: disconnect them before rolling it back \\(through the server\\)" \
	sh -c "'$VBAS' snapshot '$PS' busy busy-1 && '$VBAS' rollback -y '$PS' busy busy-1"
expect_fail "served: set --readonly of a volume a client is connected to" 1 \
	"disconnect them before making it read-only \\(through the server\\)" "$VBAS" set "$PS" busy --readonly
expect_out "served: rollback of v to s1" "^volume 'v' rolled back to 's1' \\(through the server\\)$" \
	"$VBAS" rollback -y "$PS" v s1
expect_ok "... its export reads s1's bytes" sh -c "'$VBAS' read '$PS' s1 >sv-s1.raw && nbdcopy '$(uri v)' - | cmp - sv-s1.raw"
expect_ok "served: set v --readonly" "$VBAS" set "$PS" v --readonly
expect_true "... its export is read-only now" sh -c "nbdinfo --json '$(uri v)' | grep -q '\"is_read_only\": true'"
expect_ok "served: set v --writable" "$VBAS" set "$PS" v --writable
expect_ok "served: the server still serves" nbdinfo "$(uri v)"
expect_out "served: check, clean" "^clean: " "$VBAS" check "$PS"
BUSY_N=$(tail -n 1 busy.progress)
{ kill "$BUSY"; wait "$BUSY"; } 2>/dev/null
py_checks "served: the busy client's writes" $PY "$HELP" cycle-check "$(uri busy)" "$BUSY_N"
stop_server TERM
expect_true "served: the server stops with status 0" test "$SRV_RC" -eq 0
expect_ok "stopped: diff s1 s2" "$VBAS" diff "$PS" s1 s2 --raw --bytes --noheadings
expect_true "... the same as while served" cmp "$T/out" sv-diff.served
expect_ok "stopped: map s2" "$VBAS" map "$PS" s2 -o offset,length,physical
expect_true "... the same as while served" cmp "$T/out" sv-map.served
expect_out "stopped: check, clean" "^clean" "$VBAS" check "$PS"

# ---- import and export: qemu-img convert against a private export ------------------------
# A 64 MiB image with 3 MiB of data (three random MiB) and 1 MiB written
# as zeros, in raw, qcow2 and vmdk: each comes in mapping its data only,
# reads back byte for byte, and goes out as sparse as it came.

PI=$T/import.img
"$VBAS" format "$PI" --size 256M >/dev/null || echo "# format of the import pool failed"
$PY - <<'EOF'
import os
f = os.open("im-src.raw", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
os.ftruncate(f, 64 << 20)
for off in (0, 10 << 20, 40 << 20):
    os.pwrite(f, os.urandom(1 << 20), off)
os.pwrite(f, bytes(1 << 20), 20 << 20)
EOF
qemu-img convert -f raw -O qcow2 im-src.raw im-src.qcow2 && qemu-img convert -f raw -O vmdk im-src.raw im-src.vmdk ||
	echo "# qemu-img convert of the sources failed"
mapped_of() { jget "[v['mapped'] for v in d if v['name'] == '$2'][0]" "$VBAS" list "$1" --json; }
expect_out "import a raw image into a new volume" \
	"^imported im-src.raw \(raw, 67108864 bytes\) into new volume 'r1': 3145728 bytes mapped \(3.0 MiB\)$" \
	"$VBAS" import "$PI" r1 im-src.raw
expect_true "... it maps the data only (3 MiB)" test "$(mapped_of "$PI" r1)" -eq $((3 * MiB))
expect_ok "... and reads back byte for byte" sh -c "'$VBAS' read '$PI' r1 | cmp - im-src.raw"
expect_out "import a qcow2 image (its format found by qemu-img)" "^imported im-src.qcow2 \(qcow2, 67108864 bytes\)" \
	"$VBAS" import "$PI" q1 im-src.qcow2
expect_true "... it maps the data only" test "$(mapped_of "$PI" q1)" -eq $((3 * MiB))
expect_ok "... and reads back byte for byte" sh -c "'$VBAS' read '$PI' q1 | cmp - im-src.raw"
expect_ok "import a vmdk image with --format vmdk" "$VBAS" import "$PI" k1 im-src.vmdk --format vmdk
expect_ok "... reads back byte for byte" sh -c "'$VBAS' read '$PI' k1 | cmp - im-src.raw"
expect_true "... it maps the data only" test "$(mapped_of "$PI" k1)" -eq $((3 * MiB))
expect_ok "export to qcow2" "$VBAS" export "$PI" q1 im-out.qcow2 --format qcow2
expect_ok "... qemu-img compares it equal to the source" qemu-img compare -f raw -F qcow2 im-src.raw im-out.qcow2
expect_true "... its clusters hold the data only (under 4 MiB allocated)" \
	test "$($PY -c 'import json, sys; print(json.load(sys.stdin)["actual-size"])' < <(qemu-img info --output=json im-out.qcow2))" -lt $((4 * MiB))
expect_ok "export to raw (the default)" "$VBAS" export "$PI" r1 im-out.raw
expect_ok "... byte for byte" cmp im-src.raw im-out.raw
expect_true "... sparse: 3 MiB allocated" test "$(du -k im-out.raw | cut -f1)" -le 3200
expect_ok "... imported again into a volume with other data over the image's holes" sh -c \
	"'$VBAS' create '$PI' old --size 80M && head -c 80M /dev/urandom | '$VBAS' write '$PI' old && '$VBAS' import '$PI' old im-out.raw"
expect_ok "... its first 64 MiB read as the image" sh -c "'$VBAS' read '$PI' old --length 64M | cmp - im-src.raw"
expect_fail "export to a file that exists: refused" 1 "^vbas: export: im-out.raw: exists \(--force replaces it\)$" \
	"$VBAS" export "$PI" r1 im-out.raw
expect_ok "... replaced with --force" "$VBAS" export "$PI" k1 im-out.raw --force
expect_ok "... byte for byte" cmp im-src.raw im-out.raw
expect_fail "import: an unknown --format" 2 "^vbas: import: --format: unknown format 'qcow3'" \
	"$VBAS" import "$PI" x im-src.raw --format qcow3
expect_fail "export: an unknown --format" 2 "^vbas: export: --format: unknown format 'iso'" \
	"$VBAS" export "$PI" r1 im-x --format iso
expect_fail "import: no such file" 1 "^vbas: import: nosuch.qcow2: No such file or directory$" \
	"$VBAS" import "$PI" x nosuch.qcow2
expect_fail "import: a raw file said to be qcow2" 1 "^vbas: import: im-src.raw: qemu-img info failed" \
	"$VBAS" import "$PI" x im-src.raw --format qcow2
expect_fail "import: into a volume smaller than the image" 1 \
	"^vbas: import: $PI: volume 'small' holds 1048576 bytes, less than the image's 67108864" \
	sh -c "'$VBAS' create '$PI' small --size 1M && '$VBAS' import '$PI' small im-src.qcow2"
expect_fail "import: into a snapshot" 1 "^vbas: import: $PI: volume 'r1s' is read-only" \
	sh -c "'$VBAS' snapshot '$PI' r1 r1s && '$VBAS' import '$PI' r1s im-src.raw"
expect_fail "export: an unknown volume" 1 "^vbas: export: $PI: volume 'nosuch' not found" \
	"$VBAS" export "$PI" nosuch im-x.raw
expect_true "... and wrote no file" test ! -e im-x.raw
# Too much data for the pool: qemu-img fails, and the volume made for it goes.
"$VBAS" format "$T/import-small.img" --size 32M >/dev/null
expect_fail "import: an image with more data than the pool holds fails" 1 \
	"^vbas: import: im-big.raw: qemu-img convert failed" \
	sh -c "head -c 48M /dev/urandom >im-big.raw && '$VBAS' import '$T/import-small.img' big im-big.raw"
expect_true "... and says the volume made for it is deleted" \
	grep -q "volume 'big' created for the import is deleted again" "$T/err"
expect_json "... which it is" 'd == []' "$VBAS" list "$T/import-small.img" --json
expect_out "... and the pool checks clean" "^clean" "$VBAS" check "$T/import-small.img"
# Progress: qemu-img's, on a terminal or with --progress; none in a pipe.
if command -v script >/dev/null; then
	script -qec "'$VBAS' import '$PI' p1 im-src.qcow2" /dev/null >im-tty.out 2>&1
	expect_true "import on a terminal shows progress" grep -q '(100.00/100%)' im-tty.out
	script -qec "'$VBAS' import '$PI' p2 im-src.qcow2 --no-progress" /dev/null >im-tty2.out 2>&1
	expect_true "... not with --no-progress" sh -c "grep -q '^imported' im-tty2.out && ! grep -q '/100%)' im-tty2.out"
else
	fail "import progress on a terminal" "script (util-linux) is missing"
fi
expect_ok "import into a pipe" sh -c "'$VBAS' import '$PI' p3 im-src.qcow2 | cat >im-pipe.out"
expect_true "... shows no progress" sh -c "grep -q '^imported' im-pipe.out && ! grep -q '%)' im-pipe.out"
expect_ok "export --progress into a pipe shows it" sh -c "'$VBAS' export '$PI' p3 im-p.raw -p | cat >im-pipe.out"
expect_true "... (qemu-img's)" grep -q '(100.00/100%)' im-pipe.out
expect_out "the import pool checks clean" "^clean" "$VBAS" check "$PI"
# On a served pool: import goes through a sparse raw file the server
# copies in; export reads the server's last commit under a pin.
expect_true "import and export: serve the import pool" start_server "$PI" imp
expect_out "import into a served pool: through the server" \
	"^imported im-src.qcow2 \(qcow2, 67108864 bytes\) into new volume 'sq': 3145728 bytes mapped \(3.0 MiB\), through the server$" \
	env TMPDIR="$T" "$VBAS" import "$PI" sq im-src.qcow2
expect_ok "... its export reads the image" sh -c "nbdcopy '$(uri sq)' - | cmp - im-src.raw"
expect_true "... and the temporary file is gone" sh -c "! ls '$T'/vbas-import.* 2>/dev/null | grep -q ."
expect_ok "... snapshot it through the server" "$VBAS" snapshot "$PI" sq sq-1
expect_out "export of the served snapshot: the server's last commit" \
	"^exported volume 'sq-1' \(67108864 bytes\) to im-served.qcow2 \(qcow2\), the server's last commit$" \
	"$VBAS" export "$PI" sq-1 im-served.qcow2 --format qcow2
expect_ok "... equal to the source" qemu-img compare -f raw -F qcow2 im-src.raw im-served.qcow2
expect_ok "import into the served volume again, over a client's writes" sh -c \
	"nbdsh -u '$(uri sq)' -c 'h.pwrite(b\"\\x77\" * 65536, 5 << 20)' -c 'h.flush()' && '$VBAS' import '$PI' sq im-src.raw"
expect_ok "... the export reads the image again (the hole written over)" sh -c "nbdcopy '$(uri sq)' - | cmp - im-src.raw"
expect_fail "import into a served pool: a snapshot refused" 1 "^vbas: import: $PI: volume 'sq-1' is read-only" \
	"$VBAS" import "$PI" sq-1 im-src.raw
stop_server TERM
expect_true "... the server stops with status 0" test "$SRV_RC" -eq 0
expect_true "import into a served pool too small: serve it (with a volume to serve)" sh -c \
	"'$VBAS' create '$T/import-small.img' keep --size 1M" && start_server "$T/import-small.img" imps
expect_fail "... the server's write fails for room" 1 "No space|ENOSPC|full" \
	env TMPDIR="$T" "$VBAS" import "$T/import-small.img" big im-big.raw
expect_true "... and the volume made for it is deleted again" \
	grep -q "volume 'big' created for the import is deleted again" "$T/err"
expect_json "... which the served pool's list shows" '[v["name"] for v in d] == ["keep"]' \
	"$VBAS" list "$T/import-small.img" --json
stop_server TERM
expect_out "... and the pool checks clean" "^clean" "$VBAS" check "$T/import-small.img"

# ---- Events, growth and autoextend ----------------------------------------------------------

# ev_count TAG EVENT: event lines of that name in server TAG's output.
ev_count() { grep -c "^{\"event\":\"$2\"," "$T/$1.out"; }
# ev_wait TAG EVENT N: until there are at least N (5 s at most), then a
# little longer, so that a count taken after it would see one too many.
ev_wait() {
	local i
	for i in $(seq 100); do
		[ "$(ev_count "$1" "$2")" -ge "$3" ] && break
		sleep 0.05
	done
	sleep 0.3
}
# w_mib NAME OFF_MIB LEN_MIB BYTE: write and flush through NBD.
w_mib() { nbdsh -u "$(uri "$1")" -c "h.pwrite(bytes([$4]) * ($3 << 20), $2 << 20)" -c "h.flush()"; }

PE=$T/events.img
"$VBAS" format "$PE" --size 64M >/dev/null && "$VBAS" create "$PE" v --size 256M >/dev/null &&
	"$VBAS" set "$PE" --low-water 50% >/dev/null || echo "# setting up the events pool failed"
expect_true "events: serve with --on-event" \
	start_server "$PE" events --on-event "echo \"\$VBAS_EVENT \$VBAS_POOL\" >>'$T/on-event.log'"
expect_ok "events: 24 MiB written, below the mark" w_mib v 0 24 1
ev_wait events low_water 1
expect_true "... no event" test "$(grep -c '^{' "$T/events.out")" -eq 0
expect_ok "events: 16 MiB more cross 50%" w_mib v 24 16 2
ev_wait events low_water 1
expect_true "... one low_water event" test "$(ev_count events low_water)" -eq 1
expect_ok "events: 4 MiB more, above the mark" w_mib v 40 4 3
ev_wait events low_water 2
expect_true "... no second one" test "$(ev_count events low_water)" -eq 1
expect_ok "events: trim 36 MiB" nbdsh -u "$(uri v)" -c "h.trim(36 << 20, 0)" -c "h.flush()"
ev_wait events low_water_clear 1
expect_true "... one low_water_clear" test "$(ev_count events low_water_clear)" -eq 1
expect_ok "events: 40 MiB again" w_mib v 0 40 4
ev_wait events low_water 2
expect_true "... a second low_water, and still one clear" \
	test "$(ev_count events low_water)" -eq 2 -a "$(ev_count events low_water_clear)" -eq 1
expect_true "every event line is JSON with its keys" $PY -c '
import json, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("{")]
ok = len(lines) == 3
for l in lines:
    d = json.loads(l)
    ok = ok and list(d)[:7] == ["event", "time", "pool", "use", "low_water", "size", "available"]
    ok = ok and d["pool"] == sys.argv[2] and d["low_water"] == 50 and d["size"] == 64 << 20
ok = ok and [json.loads(l)["event"] for l in lines] == ["low_water", "low_water_clear", "low_water"]
ok = ok and json.loads(lines[0])["use"] >= 50 and json.loads(lines[1])["use"] < 49
sys.exit(0 if ok else 1)' "$T/events.out" "$PE"
expect_true "--on-event ran once per event, in order, with the pool" test "$(cat "$T/on-event.log")" = \
	"$(printf 'low_water %s\nlow_water_clear %s\nlow_water %s' "$PE" "$PE" "$PE")"
expect_json "grow through the server" 'd["size"] == 128 << 20 and d["low_water"] == 50' \
	"$VBAS" grow "$PE" --size +64M --json
ev_wait events grown 1
expect_true "... a grown event, and the mark clears" \
	test "$(ev_count events grown)" -eq 1 -a "$(ev_count events low_water_clear)" -eq 2
expect_json "... info through the server: 128 MiB" 'd["size"] == 128 << 20' "$VBAS" info "$PE" --json
expect_ok "the export takes 40 MiB more" w_mib v 40 40 5
expect_out "set through the server" "^$PE: 134217728 bytes .*; low water 90%, expendable floor 5%\$" \
	"$VBAS" set "$PE" --low-water 90% --expendable-floor 5%
expect_json "... info says so" 'd["low_water"] == 90 and d["expendable_floor"] == 5' "$VBAS" info "$PE" --json
expect_ok "snapshot --expendable through the server" "$VBAS" snapshot "$PE" v xs --expendable
expect_json "... list says so" '[(v["name"], v["expendable"]) for v in d] == [("v", False), ("xs", True)]' \
	"$VBAS" list "$PE" --json
expect_fail "grow through the server: smaller is refused" 1 "a pool only grows.*through the server" \
	"$VBAS" grow "$PE" --size 64M
expect_ok "... and the data is all there" nbdsh -u "$(uri v)" \
	-c "assert h.pread(40 << 20, 0) == b'\x04' * (40 << 20)" -c "assert h.pread(40 << 20, 40 << 20) == b'\x05' * (40 << 20)"
expect_json "fsmap of the served pool: its last commit, under a pin" \
	'[(v["name"], v["data"]) for v in d["volumes"]] == [("v", 80 << 20), ("xs", 80 << 20)]' \
	"$VBAS" fsmap "$PE" --summary --json
expect_json "check of the served pool: three-way, clean, the reverse map's records counted" \
	'd["clean"] and d["served"] and d["rmap_records"] > 0' "$VBAS" check "$PE" --json
expect_fail "repair of the served pool is refused: the server is its only writer" 1 \
	"^vbas: repair: .*(in use|vbas serve)" "$VBAS" repair "$PE"
stop_server TERM
expect_true "events: the server stopped cleanly" test "$SRV_RC" -eq 0
expect_out "events: check is clean" '^clean' "$VBAS" check "$PE"

# Autoextend: a 32 MiB pool takes 80 MiB, growing by 16 MiB steps at its
# low-water mark and when a write finds it full.
PA=$T/auto.img
"$VBAS" format "$PA" --size 32M >/dev/null && "$VBAS" create "$PA" v --size 256M >/dev/null &&
	"$VBAS" set "$PA" --low-water 75% >/dev/null || echo "# setting up the autoextend pool failed"
head -c $((80 * MiB)) /dev/urandom >a80.raw
expect_true "autoextend: serve --autoextend 16M" start_server "$PA" auto --autoextend 16M
expect_ok "autoextend: 80 MiB through nbdcopy into a 32 MiB pool" nbdcopy a80.raw "$(uri v)"
expect_ok "... read back byte for byte" sh -c "nbdcopy '$(uri v)' - | head -c $((80 * MiB)) | cmp - a80.raw"
ev_wait auto grown 3
expect_true "... the pool grew in 16 MiB steps" \
	sh -c "test \$(( $(stat -c %s "$PA") % (16 << 20) )) -eq 0 -a $(stat -c %s "$PA") -ge $((96 * MiB))"
expect_true "... with grown events" test "$(ev_count auto grown)" -ge 3
stop_server TERM
expect_out "autoextend: check is clean" '^clean' "$VBAS" check "$PA"

# A command that never ends does not keep the server from stopping.
PH=$T/hang.img
"$VBAS" format "$PH" --size 32M >/dev/null && "$VBAS" create "$PH" v --size 64M >/dev/null &&
	"$VBAS" set "$PH" --low-water 10% >/dev/null || echo "# setting up the hang pool failed"
expect_true "a hanging --on-event: serve" start_server "$PH" hang --on-event "echo started >'$T/hang.log'; exec sleep 600"
expect_ok "... an event" w_mib v 0 8 1
for _ in $(seq 100); do [ -s "$T/hang.log" ] && break; sleep 0.05; done
expect_true "... its command runs" test -s "$T/hang.log"
t0=$SECONDS
stop_server TERM
expect_true "... the server stops at once, cleanly, the command killed" \
	test $((SECONDS - t0)) -lt 10 -a "$SRV_RC" -eq 0
expect_true "... and no sleep is left" sh -c "! pgrep -f '^sleep 600\$' >/dev/null"
pkill -f '^sleep 600$' 2>/dev/null   # (if the check above failed)

# Autoextend refused: the file system holding the pool lacks the step.
autoextend_refused_test() {
	local small=$T/small
	mkdir -p "$small"
	mount -t tmpfs -o size=48M tmpfs "$small" || return 1
	MOUNTS+=("$small")
	"$VBAS" format "$small/p.img" --size 32M >/dev/null && "$VBAS" create "$small/p.img" v --size 256M >/dev/null ||
		return 1
	expect_true "autoextend refused: serve --autoextend 64M from a 48 MiB tmpfs" \
		start_server "$small/p.img" refused --autoextend 64M
	expect_fail "... 40 MiB do not fit: ENOSPC reaches the client" 1 "ENOSPC|No space" \
		nbdsh -u "$(uri v)" -c "h.pwrite(b'\x07' * (40 << 20), 0)"
	ev_wait refused autoextend_refused 1
	expect_true "... an autoextend_refused event says why" \
		grep -q '"event":"autoextend_refused".*"reason":"the file system holding the pool has [0-9]* bytes free, less than the step of 67108864"' \
		"$T/refused.out"
	expect_true "... and an enospc event" test "$(ev_count refused enospc)" -ge 1
	expect_true "... the pool file kept its size" test "$(stat -c %s "$small/p.img")" -eq $((32 * MiB))
	expect_ok "... and takes writes that fit" w_mib v 0 8 9
	stop_server TERM
	expect_out "autoextend refused: check is clean" '^clean' "$VBAS" check "$small/p.img"
	umount "$small"
}
autoextend_refused_test || fail "autoextend refused: set-up" "tmpfs or pool set-up failed"

# ---- Shrink of a served pool while a client writes (the control channel) -----------------

# A filler written first and deleted last leaves the volumes high in the
# pool; a client writes one of them round and round while the server moves
# every block past the new end, step by step, beside its writes.
PS=$T/shrink.img
head -c $((48 * MiB)) /dev/urandom >s48.raw
"$VBAS" format "$PS" --size 256M >/dev/null && "$VBAS" create "$PS" fill --size 120M >/dev/null &&
	head -c $((120 * MiB)) /dev/zero | tr '\0' f | "$VBAS" write "$PS" fill - &&
	"$VBAS" create "$PS" s --size 64M >/dev/null && "$VBAS" write "$PS" s s48.raw &&
	"$VBAS" snapshot "$PS" s s-snap >/dev/null && "$VBAS" create "$PS" w --size 4M >/dev/null &&
	"$VBAS" delete "$PS" fill --yes >/dev/null || echo "# setting up the shrink pool failed"
expect_true "shrink: serve" start_server "$PS" shrink
expect_ok "shrink: s is written again in part (copy on write from its snapshot)" \
	nbdsh -u "$(uri s)" -c "h.pwrite(b'\x33' * (4 << 20), 8 << 20)" -c "h.flush()"
rm -f "$T/cycle.progress"
$PY "$HELP" cycle-writer "$(uri w)" "$T/cycle.progress" >/dev/null 2>"$T/cycle.err" &
CPID=$!
PIDS+=("$CPID")
cprogress() { tail -n 1 "$T/cycle.progress" 2>/dev/null || echo 0; }
cwait() {
	local i
	for i in $(seq 600); do
		[ "$(cprogress)" -ge "$1" ] && return 0
		sleep 0.02
	done
	return 1
}
expect_true "shrink: a client is writing w" cwait 16
C_PRE=$(cprogress)
expect_json "shrink: to 96M through the server, data and metadata moved" \
	'd["size"] == 96 << 20 and d["moved_data"] >= 32 << 20 and d["moved_nodes"] > 0' \
	"$VBAS" resize-pool "$PS" --size 96M --json
C_POST=$(cprogress)
expect_true "shrink: the client wrote on while the pool shrank" test "$C_POST" -gt "$C_PRE"
expect_true "shrink: and after" cwait $((C_POST + 16))
kill "$CPID" 2>/dev/null
wait "$CPID" 2>/dev/null
py_checks "shrink: w" $PY "$HELP" cycle-check "$(uri w)" "$(cprogress)"
expect_ok "shrink: the snapshot reads what was written" \
	sh -c "nbdcopy '$(uri s-snap)' - | head -c $((48 * MiB)) | cmp - s48.raw"
expect_ok "shrink: s reads its own write over the snapshot's data" nbdsh -u "$(uri s)" \
	-c "assert h.pread(8 << 20, 0) == open('s48.raw', 'rb').read(8 << 20)" \
	-c "assert h.pread(4 << 20, 8 << 20) == b'\x33' * (4 << 20)"
expect_ok "shrink: the file is 96M" test "$(stat -c %s "$PS")" -eq $((96 * MiB))
expect_json "shrink: info through the server" 'd["size"] == 96 << 20 and d["shrink_to"] == 0' \
	"$VBAS" info "$PS" --json
expect_json "shrink: check of the served pool, clean three ways" 'd["clean"] and d["served"]' \
	"$VBAS" check "$PS" --json
expect_fail "shrink: too far, refused through the server" 1 \
	"^vbas: resize-pool: $PS: shrink to .* in use.*through the server" \
	"$VBAS" resize-pool "$PS" --size 40M
expect_json "shrink: grows back through the server" 'd["size"] == 128 << 20' \
	"$VBAS" resize-pool "$PS" --size 128M --json
stop_server TERM
expect_true "shrink: the server stopped cleanly" test "$SRV_RC" -eq 0
expect_out "shrink: check is clean" '^clean' "$VBAS" check "$PS"
rm -f s48.raw

# ---- Corrupt metadata reaches the client as EIO --------------------------------------------

PC=$T/corrupt.img
"$VBAS" format "$PC" --size 64M >/dev/null && "$VBAS" create "$PC" bad --size 8M &&
	"$VBAS" create "$PC" good --size 8M && "$VBAS" write "$PC" bad other.raw &&
	"$VBAS" write "$PC" good other.raw || echo "# setting up the corrupt pool failed"
BAD_ID=$(jget '[v["id"] for v in d if v["name"] == "bad"][0]' "$VBAS" list "$PC" --json)
expect_ok "damage the mapping leaf of one volume" $PY "$HELP" corrupt-leaf "$PC" "$BAD_ID"
expect_true "serve the damaged pool" start_server "$PC" corrupt
py_checks "corrupt metadata" $PY "$HELP" read-eio "$(uri bad)" "$(uri good)"
expect_true "the server log says which block failed its checksum" \
	grep -Eqi "error: bad: read of .*(checksum|block)" "$T/corrupt.err"
stop_server TERM

tap_end
