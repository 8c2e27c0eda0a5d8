"""Clients for tests/nbd/test-nbd.sh, on libnbd's Python binding.

    nbdhelp.py COMMAND ARGS...

Each command prints "PASS description" or "FAIL description: why" lines,
which the shell script turns into TAP checks, and whatever else it has to
say on lines of its own.  Run with the system python3 (python3-libnbd).
"""
import errno
import json
import os
import random
import struct
import sys

import nbd

MiB = 1024 * 1024


def say(ok, desc, why=""):
    print(("PASS " if ok else "FAIL ") + desc + ("" if ok or not why else ": " + why),
          flush=True)


def connect(uri):
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(uri)
    return h


def err_name(e):
    """The errno of a libnbd error as a name ("ENOSPC")."""
    n = getattr(e, "errno", None)
    if isinstance(n, int):
        return errno.errorcode.get(n, str(n))
    return str(n)


def expect_errno(desc, want, fn):
    try:
        fn()
    except nbd.Error as e:
        say(err_name(e) == want, desc, "got %s (%s)" % (err_name(e), e))
        return
    say(False, desc, "succeeded, want %s" % want)


def pattern(i, n):
    return random.Random(i).randbytes(n)


def ops(uri, snap_uri):
    """FUA writes, zeroing with and without punching, fast zero, trim, and
    what a snapshot export refuses."""
    h = connect(uri)
    size = h.get_size()
    data = pattern(1, 4 * MiB)
    h.pwrite(data, 0, nbd.CMD_FLAG_FUA)
    say(h.pread(4 * MiB, 0) == data, "a FUA write reads back")

    def kinds(off, n):
        out = []
        def cb(meta, offset, entries, err):
            if meta == nbd.CONTEXT_BASE_ALLOCATION:
                out.extend(zip(entries[0::2], entries[1::2]))
            return 0
        h.block_status(n, off, cb)
        return out

    # Zero without permission to punch: zeros, but still allocated.
    h.zero(MiB, 0, nbd.CMD_FLAG_NO_HOLE)
    st = kinds(0, MiB)
    say(h.pread(MiB, 0) == bytes(MiB), "zero with NO_HOLE reads as zeros")
    say(all(f & nbd.STATE_HOLE == 0 for _, f in st), "zero with NO_HOLE stays allocated",
        repr(st))
    # Zero that may punch: a hole.
    h.zero(MiB, MiB)
    st = kinds(MiB, MiB)
    say(h.pread(MiB, MiB) == bytes(MiB), "zero (may trim) reads as zeros")
    say(st and st[0][0] >= MiB and st[0][1] & nbd.STATE_HOLE, "zero (may trim) leaves a hole",
        repr(st))
    # Unaligned zero: the bytes around stay.
    h.zero(1000, 2 * MiB + 100)
    got = h.pread(4096, 2 * MiB)
    want = data[2 * MiB:2 * MiB + 100] + bytes(1000) + data[2 * MiB + 1100:2 * MiB + 4096]
    say(got == want, "an unaligned zero changes just its bytes")
    # Fast zero: punching is fast; allocating zeros is not.
    h.zero(MiB, 3 * MiB, nbd.CMD_FLAG_FAST_ZERO)
    say(h.pread(MiB, 3 * MiB) == bytes(MiB), "fast zero (may trim) works")
    h.pwrite(data[:MiB], 3 * MiB)
    expect_errno("fast zero with NO_HOLE is refused (ENOTSUP)", "ENOTSUP",
                 lambda: h.zero(MiB, 3 * MiB, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE))
    say(h.pread(MiB, 3 * MiB) == data[:MiB], "a refused fast zero changed nothing")
    # Trim: whole blocks go, unaligned edges stay readable.
    h.pwrite(data, 4 * MiB)
    h.trim(MiB + 1000, 4 * MiB + 500, nbd.CMD_FLAG_FUA)
    got = h.pread(2 * MiB, 4 * MiB)
    say(got[:500] == data[:500], "trim leaves the bytes before an unaligned start")
    say(got[MiB + 1500:] == data[MiB + 1500:2 * MiB], "trim leaves the bytes after its end")
    st = kinds(4 * MiB + 4096, MiB - 4096)
    say(st and st[0][1] & nbd.STATE_HOLE and st[0][0] >= MiB - 4096,
        "trim unmaps the whole blocks inside", repr(st))
    h.flush()
    expect_errno("a read past the end fails (EINVAL)", "EINVAL", lambda: h.pread(4096, size))
    h.shutdown()

    s = connect(snap_uri)
    say(s.is_read_only(), "the snapshot export is read-only")
    expect_errno("libnbd refuses a write to the snapshot (EPERM)", "EPERM",
                 lambda: s.pwrite(b"x" * 512, 0))
    s.set_strict_mode(0)     # send it anyway: the server must refuse
    expect_errno("the server refuses a write to the snapshot (EPERM)", "EPERM",
                 lambda: s.pwrite(b"x" * 512, 0))
    expect_errno("the server refuses a trim of the snapshot (EPERM)", "EPERM",
                 lambda: s.trim(4096, 0))
    expect_errno("the server refuses a zero of the snapshot (EPERM)", "EPERM",
                 lambda: s.zero(4096, 0))
    say(s.pread(512, 0) == bytes(512), "the snapshot still reads as before")
    s.shutdown()


def unflushed(uri, off, seed):
    """Write 1 MiB at OFF and leave without flushing."""
    h = connect(uri)
    h.pwrite(pattern(int(seed), MiB), int(off))
    h.shutdown()


def make_pattern(path, seed, n):
    with open(path, "wb") as f:
        f.write(pattern(int(seed), int(n)))


def pool_full(fill_uri, other_uri, spare_uri, other_file):
    """A client fills an over-provisioned pool: ENOSPC for its write; another
    export still reads and writes; trimming a third export frees space, and
    the same client's next write succeeds."""
    # First, another client's fallocate: a zero without permission to
    # punch (NO_HOLE) reserves its range.
    o = connect(other_uri)
    resv_off = o.get_size() - 4 * MiB
    o.zero(2 * MiB, resv_off, nbd.CMD_FLAG_NO_HOLE)
    o.flush()
    say(o.pread(2 * MiB, resv_off) == bytes(2 * MiB), "a zero with NO_HOLE reads as zeros")
    o.shutdown()

    h = connect(fill_uri)
    chunk = MiB
    off = 0
    failed = None
    size = h.get_size()
    while off + chunk <= size:
        try:
            h.pwrite(pattern(off, chunk), off)
        except nbd.Error as e:
            failed = e
            break
        off += chunk
    print("# filled %d MiB before the write failed" % (off // MiB), flush=True)
    say(failed is not None and err_name(failed) == "ENOSPC",
        "writing into a full pool fails with ENOSPC",
        "got %s" % (err_name(failed) if failed else "no error"))
    say(off >= 4 * MiB, "the pool took writes before it was full", "%d bytes" % off)
    h.flush()
    ok = all(h.pread(chunk, o) == pattern(o, chunk) for o in range(0, off, chunk))
    say(ok, "what was written before ENOSPC reads back")
    say(h.pread(chunk, off) == bytes(chunk), "the failed write changed nothing")

    o = connect(other_uri)
    with open(other_file, "rb") as f:
        want = f.read()
    say(o.pread(len(want), 0) == want, "another export still reads")
    new = pattern(99, MiB)
    o.pwrite(new, 0)
    o.flush()
    say(o.pread(MiB, 0) == new, "another export still overwrites (no new space needed)")
    expect_errno("a write into a hole of another export: ENOSPC", "ENOSPC",
                 lambda: o.pwrite(new, o.get_size() - MiB))
    fal = pattern(77, 2 * MiB)
    try:
        for k in range(0, 2 * MiB, 64 * 1024):
            o.pwrite(fal[k:k + 64 * 1024], resv_off + k)
        o.flush()
        say(o.pread(2 * MiB, resv_off) == fal,
            "the range zeroed with NO_HOLE before the pool filled takes every write")
    except nbd.Error as e:
        say(False, "the range zeroed with NO_HOLE before the pool filled takes every write",
            str(e))
    o.shutdown()

    s = connect(spare_uri)
    s.trim(s.get_size(), 0)
    s.flush()
    s.shutdown()
    try:
        h.pwrite(pattern(off, chunk), off)
        h.flush()
        say(h.pread(chunk, off) == pattern(off, chunk),
            "after a trim elsewhere, the same client's write succeeds")
    except nbd.Error as e:
        say(False, "after a trim elsewhere, the same client's write succeeds", str(e))
    h.shutdown()


CHUNK = 256 * 1024


def writer(uri, progress):
    """Write chunks at distinct offsets, flushing every 4; after each flush
    append the number of chunks written so far to PROGRESS.  Runs until
    the server dies (the test kills it), or idles once the export is full."""
    import time
    h = connect(uri)
    size = h.get_size()
    fd = os.open(progress, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    i = 0
    while (i + 4) * CHUNK <= size:
        for _ in range(4):
            h.pwrite(pattern(i, CHUNK), i * CHUNK)
            i += 1
        h.flush()
        os.write(fd, b"%d\n" % i)
    while True:
        time.sleep(1)


def cycle_writer(uri, progress):
    """Write chunk after chunk round the export for ever, chunk I holding
    pattern(I) at slot I % slots, flushing every 4; after each flush append
    the number written so far to PROGRESS.  Killed by the test."""
    h = connect(uri)
    slots = h.get_size() // CHUNK
    fd = os.open(progress, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    i = 0
    while True:
        for _ in range(4):
            h.pwrite(pattern(i, CHUNK), (i % slots) * CHUNK)
            i += 1
        h.flush()
        os.write(fd, b"%d\n" % i)


def cycle_check(uri, n):
    """After cycle_writer was killed having logged N: each slot holds the
    last chunk flushed there, or one written after the last flush."""
    n = int(n)
    h = connect(uri)
    slots = h.get_size() // CHUNK
    bad = []
    for s in range(slots):
        got = h.pread(CHUNK, s * CHUNK)
        last = [i for i in range(s, n, slots)][-1:]
        later = list(range(n + (s - n) % slots, n + 8, slots))
        if not any(got == pattern(i, CHUNK) for i in last + later) and \
           not (not last and got == bytes(CHUNK)):
            bad.append(s)
    say(n > slots and not bad, "every slot holds its last chunk (%d written)" % n,
        "bad slots %s" % bad[:10])


def churn(uri, seconds):
    """Write a MiB, flush, trim it, flush, over and over for SECONDS: every
    flush a commit that frees tree nodes and data blocks, which a nearly
    full pool hands out again at once."""
    import time
    h = connect(uri)
    end = time.time() + float(seconds)
    i = full = 0
    while time.time() < end:
        off = (i % 4) * MiB
        try:
            h.pwrite(pattern(i, MiB), off)
            h.flush()
        except nbd.Error as e:
            # A pin keeps what the trims free: the pool may be full
            # while a check runs (docs/nbd.md).
            if err_name(e) != "ENOSPC":
                raise
            full += 1
            time.sleep(0.02)
        h.trim(MiB, off)
        h.flush()
        i += 1
    print("# %d write/trim cycles, %d writes refused (ENOSPC)" % (i, full))


def verify_flushed(dump, progress):
    with open(progress) as f:
        lines = [l for l in f.read().split("\n") if l.strip()]
    n = int(lines[-1]) if lines else 0
    with open(dump, "rb") as f:
        data = f.read()
    bad = [i for i in range(n) if data[i * CHUNK:(i + 1) * CHUNK] != pattern(i, CHUNK)]
    print("# %d chunks of 256 KiB were flushed before the kill" % n)
    say(n > 0, "the client flushed data before the kill")
    say(not bad, "every flushed chunk survived the kill", "bad chunks %s" % bad[:10])


def snap_live(snap, live, n_pre, n_post):
    """SNAP was taken while a writer wrote chunk after chunk into LIVE:
    it had flushed N_PRE chunks before, and N_POST when the snapshot
    returned (its log lags a flush: four chunks, and four more in flight)."""
    n_pre, n_post = int(n_pre), int(n_post)
    with open(snap, "rb") as f:
        s = f.read()
    with open(live, "rb") as f:
        v = f.read()
    zero = bytes(CHUNK)
    print("# %d chunks flushed before the snapshot, %d when it returned" % (n_pre, n_post))
    bad = [i for i in range(n_pre) if s[i * CHUNK:(i + 1) * CHUNK] != pattern(i, CHUNK)]
    say(n_pre > 0 and not bad, "the snapshot holds every chunk flushed before it",
        "bad chunks %s" % bad[:10])
    after = range(n_post + 8, len(v) // CHUNK)
    later = [i for i in after if v[i * CHUNK:(i + 1) * CHUNK] == pattern(i, CHUNK)]
    leaked = [i for i in later if s[i * CHUNK:(i + 1) * CHUNK] != zero]
    say(len(later) >= 8, "the volume holds the chunks written after the snapshot",
        "%d of them" % len(later))
    say(not leaked, "none of them shows in the snapshot", "chunks %s" % leaked[:10])


def ctl_requests(pool):
    """Bad requests to the server's control channel (tools/ctl.h) get an
    errno and a message, and the server goes on answering."""
    import socket, stat
    st = os.stat(pool)
    a, b = (0, st.st_rdev) if stat.S_ISBLK(st.st_mode) else (st.st_dev, st.st_ino)
    d = os.environ.get("VBAS_CTL_DIR") or ("/run/vbas" if os.geteuid() == 0 else "/tmp")
    path = "%s/vbas-%x-%x.ctl" % (d, a, b)
    say(stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0,
        "the control socket is its owner's alone", oct(os.stat(path).st_mode))

    def ask(req, fds=None):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        if fds:
            socket.send_fds(s, [req], fds)
        else:
            s.sendall(req)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            k = s.recv(4096)
            if not k:
                break
            out += k
        s.close()
        return out.decode(errors="replace")

    for desc, req, want in [
        ("an unknown request", b"frob\0", "22\tunknown control request 'frob'"),
        ("a snapshot without its new name", b"snapshot\0a\0", "22\tunknown control request"),
        ("a request without its final NUL", b"snapshot\0a\0b", "71\tmalformed request"),
        ("an empty request", b"", "71\tmalformed request"),
        ("a request longer than 1 KiB", b"x" * 2000 + b"\0", "71\trequest longer than"),
        ("a create with a size that is not a number", b"create\0nv\0" b"12M\0",
         "22\tcreate: bad size '12M'"),
        ("a resize with an empty size", b"resize\0nv\0\0", "22\tresize: bad size ''"),
        ("a create with a size past 2^64", b"create\0nv\0" + b"9" * 21 + b"\0",
         "22\tcreate: bad size"),
        ("a delete without its name", b"delete\0", "22\tunknown control request 'delete'"),
        ("a reserve with an offset that is not a number", b"reserve\0nv\0abc\0" b"0\0",
         "22\treserve: bad range 'abc' '0'"),
        ("an unreserve with a length past 2^64", b"unreserve\0nv\0" b"0\0" + b"9" * 21 + b"\0",
         "22\tunreserve: bad range"),
        ("a reserve without its length", b"reserve\0nv\0" b"0\0",
         "22\tunknown control request 'reserve'"),
        ("a snapshot whose fourth field is not a flag", b"snapshot\0a\0b\0x\0",
         "22\tsnapshot: unknown flags 'x'"),
        ("a clone that would be expendable", b"clone\0a\0b\0expendable\0",
         "22\tclone: only a snapshot can be expendable"),
        ("a grow with a size that is not a number", b"grow\0" b"12M\0", "22\tgrow: bad size '12M'"),
        ("a grow by +0", b"grow\0+0\0", "22\tgrow: bad size '+0'"),
        ("a grow without its size", b"grow\0", "22\tunknown control request 'grow'"),
        ("a set of an unknown setting", b"set\0frob\0" b"5\0",
         "22\tset: bad setting 'frob' '5'"),
        ("a set past 1000 permille", b"set\0low_water\0" b"1001\0",
         "22\tset: bad setting 'low_water' '1001'"),
        ("ping", b"ping\0", "0\tvbas "),
        ("seven fields", b"reflink\0a\0" b"0\0b\0" b"0\0" b"1\0x\0", "71\tmalformed request"),
        ("a reflink without its length", b"reflink\0a\0" b"0\0b\0" b"0\0",
         "22\treflink: wants SRC SRC_OFFSET DST DST_OFFSET LENGTH"),
        ("a dedupe with an offset that is not a number", b"dedupe\0a\0x\0b\0" b"0\0" b"1\0",
         "22\tdedupe: wants SRC"),
        ("a discard with a length that is not a number", b"discard\0a\0" b"0\0-1\0",
         "22\tdiscard: wants NAME OFFSET LENGTH"),
        ("an unshare without its length", b"unshare\0a\0" b"0\0",
         "22\tunshare: wants NAME OFFSET LENGTH"),
        ("a write without the source's descriptor", b"write\0a\0" b"0\0",
         "22\twrite: wants a volume, an offset"),
        ("a readonly that is not 0 or 1", b"readonly\0a\0" b"2\0",
         "22\treadonly: '2' is not 0 or 1"),
        ("a readonly without its value", b"readonly\0a\0",
         "22\tunknown control request 'readonly'"),
        ("a rollback without its snapshot", b"rollback\0a\0",
         "22\tunknown control request 'rollback'"),
        ("a rollback to an unknown volume", b"rollback\0nosuch\0snap\0",
         "2\tvolume 'nosuch' not found"),
    ]:
        got = ask(req)
        say(got.startswith(want), "control channel: %s" % desc, repr(got[:120]))
    with open(os.devnull, "rb") as f:
        for desc, req, want in [
            ("a write with an offset that is not a number", b"write\0a\0x\0",
             "22\twrite: wants a volume, an offset"),
            ("a descriptor with a request that takes none", b"ping\0",
             "22\tping takes no descriptor"),
            ("a write to an unknown volume", b"write\0nosuch\0" b"0\0",
             "2\tvolume 'nosuch' not found"),
        ]:
            got = ask(req, [f.fileno()])
            say(got.startswith(want), "control channel: %s" % desc, repr(got[:120]))


def ctl_socket(pool):
    import stat
    st = os.stat(pool)
    a, b = (0, st.st_rdev) if stat.S_ISBLK(st.st_mode) else (st.st_dev, st.st_ino)
    d = os.environ.get("VBAS_CTL_DIR") or ("/run/vbas" if os.geteuid() == 0 else "/tmp")
    return "%s/vbas-%x-%x.ctl" % (d, a, b)


def pin_requests(pool):
    """The pin request (docs/nbd.md): its bad forms get errors; a pin is
    answered with the generation and held while the connection is open;
    at most 16 are held at once."""
    import socket
    path = ctl_socket(pool)

    def pin(req=b"pin\0"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.sendall(req)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        out = b""
        while not out.endswith(b"\n"):
            k = s.recv(4096)
            if not k:
                break
            out += k
        return s, out.decode(errors="replace")

    for desc, req, want in [
        ("a pin with an argument", b"pin\0x\0", "22\tpin takes no arguments, got 1"),
        ("a pin with two arguments", b"pin\0x\0y\0", "22\tpin takes no arguments, got 2"),
        ("a pin without its final NUL", b"pin", "71\tmalformed request"),
    ]:
        s, got = pin(req)
        s.close()
        say(got.startswith(want), "pin request: %s" % desc, repr(got[:120]))
    held = []
    for i in range(16):
        s, got = pin()
        ok = got.startswith("0\t") and got.endswith("\n") and got[2:-1].isdigit()
        held.append(s)
        if not ok:
            break
    say(ok, "pin request: 16 pins, each answered with a generation", repr(got[:120]))
    # The connection stays open, and nothing more comes on it.
    held[0].settimeout(0.3)
    try:
        more = held[0].recv(10)
        say(False, "pin request: the server keeps a pin's connection open", repr(more))
    except socket.timeout:
        say(True, "pin request: the server keeps a pin's connection open")
    s, got = pin()
    s.close()
    say(got.startswith("11\tpin: 16 pins are held already"), "pin request: a 17th is refused (EAGAIN)",
        repr(got[:120]))
    held.pop().close()
    import time
    for _ in range(100):
        s, got = pin()
        s.close()
        if got.startswith("0\t"):
            break
        time.sleep(0.05)
    say(got.startswith("0\t"), "pin request: a pin closed makes room for another", repr(got[:120]))
    for s in held:
        s.close()


def map_data(path):
    """Bytes of data (not hole) in nbdinfo --map --json output."""
    with open(path) as f:
        ext = json.load(f)
    print(sum(e["length"] for e in ext if not e["type"] & 1))


def map_holes(path, off, length):
    """Exit 0 if [off, off+length) is all hole in nbdinfo --map --json."""
    with open(path) as f:
        ext = json.load(f)
    off, end = int(off), int(off) + int(length)
    for e in ext:
        s, t = e["offset"], e["offset"] + e["length"]
        if s < end and t > off and not e["type"] & 1:
            sys.exit(1)
    sys.exit(0)


def corrupt_leaf(pool, vol_id, bs="4096"):
    """Damage the newest mapping-tree leaf of volume VOL_ID (lib/format.h:
    node magic at 4, txid at 16, owner at 24, level at 48, tree type at 52)
    so that its checksum fails."""
    bs = int(bs)
    best = None
    with open(pool, "r+b") as f:
        blk = 2
        while True:
            f.seek(blk * bs)
            hdr = f.read(64)
            if len(hdr) < 64:
                break
            magic, = struct.unpack_from("<I", hdr, 4)
            txid, owner = struct.unpack_from("<QQ", hdr, 16)
            level, nrecs, ttype = struct.unpack_from("<HHH", hdr, 48)
            if magic == 0x444E4256 and ttype == 3 and owner == int(vol_id) and level == 0:
                if best is None or txid > best[0]:
                    best = (txid, blk)
            blk += 1
        if best is None:
            print("no leaf found")
            sys.exit(1)
        f.seek(best[1] * bs + bs - 8)
        b = bytearray(f.read(8))
        b[0] ^= 0xFF
        f.seek(best[1] * bs + bs - 8)
        f.write(b)
    print("# damaged block %d" % best[1])


def read_eio(bad_uri, good_uri):
    h = connect(bad_uri)
    expect_errno("reading a volume with a damaged mapping leaf fails with EIO", "EIO",
                 lambda: h.pread(4096, 0))
    h.shutdown()
    g = connect(good_uri)
    try:
        g.pread(MiB, 0)
        g.pwrite(pattern(5, 4096), 0)
        g.flush()
        say(g.pread(4096, 0) == pattern(5, 4096), "another volume still reads and writes")
    except nbd.Error as e:
        say(False, "another volume still reads and writes", str(e))
    g.shutdown()


if __name__ == "__main__":
    globals()[sys.argv[1].replace("-", "_")](*sys.argv[2:])
