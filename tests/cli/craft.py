#!/usr/bin/env python3
"""Damage a vbas pool file the way an attacker or a lost write would, for
the CLI tests: change one field of a live tree node and recompute its
checksum, so that only the engine's own validation can tell.

    craft.py POOL CASE [VOLUME]

Prints the number of the block it changed.  The layouts are those of
lib/format.h (format version 5).
"""
import struct
import sys

SB_MAGIC = 0x42534256
NODE_MAGIC = 0x444E4256
SALT_SB = 0x5B5B0001
SALT_NODE = 0x4E4E0002
HDR = 64
ENT = 24          # u64 key, le64 child, le64 child txid
MAPREC = 24       # lblk, pblk, len, flags
VOLREC = 352      # id, then struct vbas_vol_rec
RMAPREC = 32      # pblk, owner, lblk, len, count

_TABLE = []
for n in range(256):
    c = n
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    _TABLE.append(c)


def crc32c(salt, data):
    c = ~salt & 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return ~c & 0xFFFFFFFF


class Pool:
    def __init__(self, path):
        self.path = path
        self.f = open(path, "r+b")
        best = None
        for bs in (4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288, 1048576):
            for slot in (0, 1):
                self.f.seek(slot * bs)
                b = self.f.read(512)
                if len(b) < 512 or struct.unpack_from("<I", b, 4)[0] != SB_MAGIC:
                    continue
                if struct.unpack_from("<I", b, 44)[0] != bs:
                    continue
                if crc32c(SALT_SB, b[4:512]) != struct.unpack_from("<I", b, 0)[0]:
                    continue
                gen = struct.unpack_from("<Q", b, 16)[0]
                if best is None or gen > best[0]:
                    best = (gen, bs, b)
        if best is None:
            sys.exit("craft.py: no valid superblock")
        self.gen, self.bs, sb = best
        self.voltab_root, self.refc_root = struct.unpack_from("<QQ", sb, 64)
        self.rmap_root = struct.unpack_from("<Q", sb, 152)[0]

    def read(self, blk):
        self.f.seek(blk * self.bs)
        return bytearray(self.f.read(self.bs))

    def write(self, blk, node):
        struct.pack_into("<I", node, 0, crc32c(SALT_NODE, bytes(node[4:])))
        self.f.seek(blk * self.bs)
        self.f.write(node)

    @staticmethod
    def level(node):
        return struct.unpack_from("<H", node, 48)[0]

    @staticmethod
    def nrecs(node):
        return struct.unpack_from("<H", node, 50)[0]

    def leftmost_leaf(self, root):
        blk = root
        node = self.read(blk)
        while self.level(node):
            blk = struct.unpack_from("<Q", node, HDR + 8)[0]
            node = self.read(blk)
        return blk, node

    def volume(self, name):
        """(block of the volume-table leaf, offset of the record in it)."""
        blk = self.voltab_root
        stack = [blk]
        while stack:
            blk = stack.pop()
            node = self.read(blk)
            n = self.nrecs(node)
            if self.level(node):
                stack.extend(struct.unpack_from("<Q", node, HDR + i * ENT + 8)[0]
                             for i in range(n))
                continue
            for i in range(n):
                off = HDR + i * VOLREC
                nl = struct.unpack_from("<H", node, off + 8 + 68)[0]
                if bytes(node[off + 8 + 88:off + 8 + 88 + nl]) == name.encode():
                    return blk, off
        sys.exit("craft.py: no volume " + name)

    def map_root(self, name):
        blk, off = self.volume(name)
        node = self.read(blk)
        return struct.unpack_from("<Q", node, off + 16)[0]


def main():
    pool = Pool(sys.argv[1])
    case = sys.argv[2]
    vol = sys.argv[3] if len(sys.argv) > 3 else None
    if case.startswith("map-"):
        blk, node = pool.leftmost_leaf(pool.map_root(vol))
        if case == "map-len0":
            struct.pack_into("<I", node, HDR + 16, 0)
        elif case == "map-len-huge":
            struct.pack_into("<I", node, HDR + 16, 0xFFFFFFFF)
        elif case == "map-order":
            if pool.nrecs(node) < 2:
                sys.exit("craft.py: the leaf has one record")
            struct.pack_into("<Q", node, HDR + MAPREC, struct.unpack_from("<Q", node, HDR)[0])
        elif case == "map-older":
            # The same leaf as a transaction before wrote it: a lost write.
            txid = struct.unpack_from("<Q", node, 16)[0]
            struct.pack_into("<Q", node, 16, txid - 1)
        else:
            sys.exit("craft.py: unknown case " + case)
    elif case.startswith("refc-"):
        blk, node = pool.leftmost_leaf(pool.refc_root)
        if case == "refc-len0":
            struct.pack_into("<I", node, HDR + 8, 0)
        elif case == "refc-len-huge":
            struct.pack_into("<I", node, HDR + 8, 0xFFFFFFFF)
        else:
            sys.exit("craft.py: unknown case " + case)
    elif case.startswith("rmap-"):
        if not pool.rmap_root:
            sys.exit("craft.py: the pool has no reverse map")
        # Interior entries: low key, high key (28 bytes each), child, txid.
        blk = pool.rmap_root
        node = pool.read(blk)
        while pool.level(node):
            blk = struct.unpack_from("<Q", node, HDR + 56)[0]
            node = pool.read(blk)
        pblk = struct.unpack_from("<Q", node, HDR)[0]
        if case == "rmap-len0":
            struct.pack_into("<I", node, HDR + 24, 0)
        elif case == "rmap-count":
            # A count one too high: a valid record the leaves disagree with.
            c = struct.unpack_from("<I", node, HDR + 28)[0]
            struct.pack_into("<I", node, HDR + 28, c + 1)
            pool.write(blk, node)
            print(pblk)
            return
        elif case == "rmap-owner":
            # Another lineage's record: the true one is lost.
            o = struct.unpack_from("<Q", node, HDR + 8)[0]
            struct.pack_into("<Q", node, HDR + 8, o + 1000)
            pool.write(blk, node)
            print(pblk)
            return
        else:
            sys.exit("craft.py: unknown case " + case)
    elif case == "vol-namelen":
        blk, off = pool.volume(vol)
        node = pool.read(blk)
        struct.pack_into("<H", node, off + 8 + 68, 0xFFFF)
    else:
        sys.exit("craft.py: unknown case " + case)
    pool.write(blk, node)
    print(blk)


if __name__ == "__main__":
    main()
