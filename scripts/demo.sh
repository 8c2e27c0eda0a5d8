#!/usr/bin/env bash
# The end-to-end demo: a pool in a file, thin volumes larger than the pool,
# data written and read back byte for byte, the pool filled until ENOSPC
# while everything else keeps working, and a clean check at every step.
#   scripts/demo.sh [BUILD_DIR]      (make demo runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
if [ ! -x "$build/vbas" ]; then
	scripts/install-deps.sh
	make -j2 O="$build" all
fi
vbas="$build/vbas"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/vbas-demo-XXXXXX")
trap 'rm -rf "$work"' EXIT
pool="$work/demo.pool"
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

say "$vbas" format "$pool" --size 1G
say "$vbas" create "$pool" vm1 --size 10G
say "$vbas" create "$pool" vm2 --size 10G
head -c 64M /dev/urandom > "$work/disk.img"
say "$vbas" write "$pool" vm1 --offset 1M "$work/disk.img"
say "$vbas" read "$pool" vm1 --offset 1M --length 64M "$work/back.img"
cmp "$work/disk.img" "$work/back.img" && echo "read back: identical (64 MiB)"
say "$vbas" list "$pool"
say "$vbas" map "$pool" vm1

echo
echo "Snapshots and clones are O(1); diff names what changed since:"
say "$vbas" snapshot "$pool" vm1 vm1-monday
head -c 1M /dev/urandom > "$work/patch.img"
say "$vbas" write "$pool" vm1 --offset 8M "$work/patch.img"
say "$vbas" diff "$pool" vm1-monday vm1
say "$vbas" clone "$pool" vm1-monday vm1-test
say "$vbas" list "$pool" -o name,size,mapped,data%,shared,ro,origin

echo
echo "Served over NBD: every volume an export; vbas commands go on beside it:"
sock="$work/nbd.sock"
"$vbas" serve "$pool" --socket "$sock" > "$work/serve.out" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q '^stop with' "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
cat "$work/serve.out"
if command -v nbdinfo >/dev/null; then
	say nbdinfo --list "nbd+unix:///?socket=$sock"
fi
say "$vbas" snapshot "$pool" vm1 vm1-tuesday
say "$vbas" diff "$pool" vm1-monday vm1-tuesday --raw --bytes --noheadings
say "$vbas" check "$pool"
kill -TERM $server
wait $server
trap 'rm -rf "$work"' EXIT
echo "server stopped: the pool is committed and closed"
say "$vbas" delete --yes "$pool" vm1-test
say "$vbas" discard "$pool" vm1 --offset 1M --length 32M
say "$vbas" info "$pool"

echo
echo "Filling the 1 GiB pool through vm2 (10 GiB) until it is full:"
set +e
head -c 2G /dev/zero | tr '\0' 'x' | "$vbas" write "$pool" vm2
rc=$?
set -e
echo "write exited with status $rc (expected: non-zero, the pool is full)"
[ "$rc" -ne 0 ]
say "$vbas" info "$pool"
echo "vm1 is untouched:"
"$vbas" read "$pool" vm1 --offset 33M --length 32M "$work/back2.img"
cmp "$work/back2.img" <(tail -c 32M "$work/disk.img") && echo "vm1 second half: identical"
say "$vbas" delete --yes "$pool" vm2
say "$vbas" check "$pool"
say "$vbas" info "$pool" --json
echo
echo "demo: all steps passed"
