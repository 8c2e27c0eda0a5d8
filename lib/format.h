/* The on-disk format of a vbas pool, and nothing else.
 *
 * Layout (B = block size, 4 KiB .. 1 MiB, a power of two):
 *
 *   block 0        superblock slot 0 (commits with an even generation)
 *   block 1        superblock slot 1 (commits with an odd generation)
 *   block 2 ..     data blocks and metadata (tree node) blocks, mixed,
 *                  each in use exactly while the refcount tree says so
 *
 * Every integer is little-endian.  Every metadata block starts with a
 * crc32c of the rest of the block, salted per block type, and names its
 * own address, so a block read from the wrong place or of the wrong type
 * fails verification.  See docs/format.md for the full description.
 */
#ifndef VBAS_FORMAT_H
#define VBAS_FORMAT_H

#include <stdint.h>
#include <stddef.h>
#include "le.h"

#define VBAS_SB_MAGIC        0x42534256u  /* "VBSB" */
#define VBAS_NODE_MAGIC      0x444e4256u  /* "VBND" */
#define VBAS_FORMAT_VERSION  5u      /* 5: the reverse map (VBAS_SBF_RMAP) */
#define VBAS_FORMAT_VERSION_4 4u     /* 4: reserved ranges (VBAS_MAPF_RESERVED),
                                        expendable snapshots, space settings */
#define VBAS_FORMAT_VERSION_MIN 3u   /* 3: the same, without those; written as
                                        4 by the first change that uses one;
                                        a pool without the reverse map (any
                                        format) works without it */

#define VBAS_SB_SLOTS        2u            /* blocks 0 and 1 */
#define VBAS_SB_BYTES        512u          /* bytes covered by the sb checksum */
#define VBAS_FIRST_BLOCK     2u            /* first allocatable block */

/* Checksum salts: one per block type, so one type never verifies as another. */
#define VBAS_SALT_SB         0x5b5b0001u
#define VBAS_SALT_NODE       0x4e4e0002u

/* ---- Superblock ------------------------------------------------------- */
struct vbas_sb {
	vbas_le32 csum;          /* crc32c(salt, bytes [4, VBAS_SB_BYTES)) */
	vbas_le32 magic;         /* VBAS_SB_MAGIC */
	vbas_le64 blkno;         /* the slot this copy was written to: 0 or 1 */
	vbas_le64 generation;    /* transaction id of this commit; the newest
	                            valid slot wins at open */
	uint8_t   uuid[16];      /* pool identity, also stamped in every node */
	vbas_le32 version;       /* VBAS_FORMAT_VERSION */
	vbas_le32 block_size;
	vbas_le64 nblocks;       /* blocks in the pool, superblocks included */
	vbas_le32 max_fanout;    /* records per node cap (testing), 0 = none */
	vbas_le32 flags;         /* VBAS_SBF_*; others must be 0 */
	vbas_le64 voltab_root;   /* volume table tree, 0 = empty */
	vbas_le64 refc_root;     /* refcount tree, 0 = empty */
	vbas_le64 data_used;     /* blocks of type DATA in the refcount tree */
	vbas_le64 meta_used;     /* blocks of type META in the refcount tree */
	vbas_le64 next_vol_id;   /* next volume id to hand out (ids never reused) */
	vbas_le64 nvolumes;
	vbas_le64 ctime;         /* format time, seconds since the epoch */
	vbas_le64 pad0;          /* zero */
	vbas_le64 voltab_root_txid; /* transaction that wrote voltab_root */
	vbas_le64 refc_root_txid;   /* transaction that wrote refc_root */
	/* Space settings (format 4; zero in format 3), in permille of the
	 * blocks usable for data and metadata: */
	vbas_le16 low_water;     /* use at which a server reports, and grows
	                            the pool if told to; 0 = none; <= 1000 */
	vbas_le16 exp_floor;     /* free room below which expendable snapshots
	                            are deleted, oldest first; 0 = only when a
	                            write would fail for lack of room; <= 1000 */
	vbas_le32 pad1;          /* zero */
	/* Format 5, with VBAS_SBF_RMAP (zero without): */
	vbas_le64 rmap_root;     /* reverse map, 0 = empty */
	vbas_le64 rmap_root_txid;   /* transaction that wrote rmap_root */
	/* With VBAS_SBF_SHRINK (zero without): */
	vbas_le64 shrink_to;     /* a shrink's target, in blocks: nothing is
	                            allocated at or past it, and what lies there
	                            is being moved below it */
	/* With VBAS_SBF_NAMES (zero without): */
	vbas_le64 names_root;    /* name index, 0 = empty */
	vbas_le64 names_root_txid;  /* transaction that wrote names_root */
	vbas_le64 reserved[10];  /* zero */
	/* With VBAS_SBF_INTENTS (all zero without): operations that span
	 * commits, with their progress as of this commit (lib/intent.c). */
	struct vbas_intent {
		vbas_le32 type;      /* VBAS_INTENT_*; 0: a free slot (all zero) */
		vbas_le32 pad;       /* zero */
		vbas_le64 gen;       /* the generation it began in */
		vbas_le64 arg[6];    /* per type, below */
	} intents[3];
};
/* The slots of vbas_sb.intents. */
#define VBAS_INTENT_SLOTS    3u
/* Intents and their arguments (blocks; DONE: how far it got).
 * REFLINK: make [dl, dl+n) of volume did map what [sl, sl+n) of volume
 *   sid maps (vbas_reflink, and a dedupe once its ranges compared equal):
 *   arg = sid, sl, did, dl, n, done.
 * UNSHARE: private copies of the shared blocks of [lblk, lblk+n) of
 *   volume vid: arg = vid, lblk, n, done, 0, 0. */
enum vbas_intent_type {
	VBAS_INTENT_REFLINK = 1,
	VBAS_INTENT_UNSHARE = 2,
	VBAS_INTENT_TYPE_MAX = 2
};
/* The pool keeps a reverse map (format 5). */
#define VBAS_SBF_RMAP        0x1u
/* A shrink is in progress (shrink_to); a vbas that does not know the flag
 * refuses the pool rather than allocate where the shrink is emptying. */
#define VBAS_SBF_SHRINK      0x2u
/* An intent slot is in use: a vbas that does not know them would not
 * finish what they describe. */
#define VBAS_SBF_INTENTS     0x4u
/* The pool keeps a name index (names_root): a vbas that does not know it
 * would add and delete volumes without it. */
#define VBAS_SBF_NAMES       0x8u
#define VBAS_SBF_KNOWN       (VBAS_SBF_RMAP | VBAS_SBF_SHRINK | VBAS_SBF_INTENTS | VBAS_SBF_NAMES)
_Static_assert(sizeof(struct vbas_intent) == 64, "vbas_intent size");
_Static_assert(sizeof(struct vbas_sb) == 464, "vbas_sb size");
_Static_assert(offsetof(struct vbas_sb, voltab_root) == 64, "vbas_sb.voltab_root");
_Static_assert(sizeof(struct vbas_sb) <= VBAS_SB_BYTES, "vbas_sb fits");

/* ---- Tree nodes ------------------------------------------------------- */
enum vbas_tree_type {
	VBAS_TREE_VOLTAB = 1,    /* volume id -> struct vbas_vol_rec */
	VBAS_TREE_REFC   = 2,    /* physical start -> struct vbas_refc_val */
	VBAS_TREE_MAP    = 3,    /* logical block -> struct vbas_map_val */
	VBAS_TREE_RMAP   = 4,    /* struct vbas_rmap_key -> struct vbas_rmap_val */
	VBAS_TREE_NAMES  = 5,    /* struct vbas_name_key, no value */
	VBAS_TREE_TEST   = 15,   /* unit tests only */
	VBAS_TREE_TEST_OVERLAP = 16,
	VBAS_TREE_TYPE_MAX
};

/* Owners of the pool-wide trees; a mapping tree's owner is its volume id
 * (ids start at 1 and stay below VBAS_OWNER_VOLTAB). */
#define VBAS_OWNER_VOLTAB    (~0ull - 1)
#define VBAS_OWNER_REFC      (~0ull - 2)
#define VBAS_OWNER_RMAP      (~0ull - 3)
#define VBAS_OWNER_NAMES     (~0ull - 4)
/* Volume ids lie in [1, VBAS_VOL_ID_LIMIT). */
#define VBAS_VOL_ID_LIMIT    VBAS_OWNER_NAMES

struct vbas_node_hdr {
	vbas_le32 csum;          /* crc32c(salt, bytes [4, block size)) */
	vbas_le32 magic;         /* VBAS_NODE_MAGIC */
	vbas_le64 blkno;         /* this block's own address */
	vbas_le64 txid;          /* transaction that wrote the block */
	vbas_le64 owner;         /* tree that created it */
	uint8_t   uuid[16];      /* pool uuid */
	vbas_le16 level;         /* 0 = leaf */
	vbas_le16 nrecs;         /* records (leaf) or children (interior) */
	vbas_le16 tree_type;     /* enum vbas_tree_type */
	vbas_le16 pad0;
	vbas_le64 pad1;          /* zero */
};
_Static_assert(sizeof(struct vbas_node_hdr) == 64, "vbas_node_hdr size");

/*
 * After the header, a leaf holds nrecs records of (key, value), sorted by
 * key, no duplicates.  An interior node holds nrecs entries of
 *     (low key, [high key,] le64 child block, le64 child txid)
 * where low key is exactly the smallest key in the child's subtree and,
 * for trees of overlapping intervals, high key is exactly the largest
 * record high key in it.  The child txid is the transaction that wrote the
 * child (its header's txid): a pointer names the exact version of the
 * block it points to, so a lost or misdirected write of the child (an
 * older version, or another block, found at that address) is caught on
 * read.  Roots are pinned the same way by the superblock and the volume
 * records.  Sizes per tree type:
 */
#define VBAS_PTR_BYTES 16u       /* le64 child, le64 child txid */

/* Mapping tree: one per volume. */
struct vbas_map_key {
	vbas_le64 lblk;          /* first logical block */
};
struct vbas_map_val {
	vbas_le64 pblk;          /* first physical block */
	vbas_le32 len;           /* blocks, >= 1 */
	vbas_le32 flags;         /* VBAS_MAPF_* */
};
/* The extent lies in a reserved range (vbas_vol_reserve): its blocks are
 * the volume's until unreserved, and discarding them zeroes them in place.
 * Records with different flags never merge. */
#define VBAS_MAPF_RESERVED   0x1u
#define VBAS_MAPF_KNOWN      VBAS_MAPF_RESERVED
_Static_assert(sizeof(struct vbas_map_key) == 8, "vbas_map_key");
_Static_assert(sizeof(struct vbas_map_val) == 16, "vbas_map_val");

/* Refcount tree: one record per maximal run of blocks with the same
 * reference count and type.  Blocks with no record are free. */
enum vbas_block_type {
	VBAS_BT_DATA = 1,
	VBAS_BT_META = 2,
};
struct vbas_refc_key {
	vbas_le64 pblk;
};
struct vbas_refc_val {
	vbas_le32 len;           /* blocks, >= 1 */
	vbas_le32 refcount;      /* >= 1 */
	vbas_le32 type;          /* enum vbas_block_type */
	vbas_le32 pad;           /* zero */
};
_Static_assert(sizeof(struct vbas_refc_val) == 16, "vbas_refc_val");

/* Reverse map (format 5, VBAS_SBF_RMAP): one record per distinct mapping
 * record per lineage, in a tree of overlapping intervals (an interior
 * entry's high key is (pblk + len - 1, ~0, ~0, ~0) of its subtree's
 * furthest-reaching record).  OWNER is the volume id in the header of the
 * mapping leaves that hold the record (the tree that wrote them first:
 * snapshots and clones share leaves without writing them, so a snapshot
 * changes nothing here), COUNT how many such leaves hold it.  The counts
 * of a data block's records sum to its reference count.  Metadata blocks
 * have no records: every node names its tree, owner and level in its
 * header.  See docs/rmap.md. */
struct vbas_rmap_key {
	vbas_le64 pblk;          /* first physical block */
	vbas_le64 owner;         /* lineage: a volume id */
	vbas_le64 lblk;          /* first logical block */
	vbas_le32 len;           /* blocks, >= 1 */
};
struct vbas_rmap_val {
	vbas_le32 count;         /* >= 1 */
};
_Static_assert(sizeof(struct vbas_rmap_key) == 28, "vbas_rmap_key");
_Static_assert(sizeof(struct vbas_rmap_val) == 4, "vbas_rmap_val");

/* Name index (VBAS_SBF_NAMES): one record per volume not being deleted,
 * sorted by (hash, id); HASH is lib/names.c's names_hash of the name's
 * bytes (FNV-1a 64, then splitmix64's finaliser). */
struct vbas_name_key {
	vbas_le64 hash;
	vbas_le64 id;
};
_Static_assert(sizeof(struct vbas_name_key) == 16, "vbas_name_key");

/* Volume table. */
#define VBAS_VOLF_READONLY   0x1u
#define VBAS_VOLF_DELETING   0x2u    /* delete in progress: resumed at open */
#define VBAS_VOLF_EXPENDABLE 0x4u    /* a snapshot the pool deletes, oldest
                                        first, to make room (format 4) */
#define VBAS_VOLF_KNOWN      (VBAS_VOLF_READONLY | VBAS_VOLF_DELETING | VBAS_VOLF_EXPENDABLE)

struct vbas_vol_key {
	vbas_le64 id;
};
struct vbas_vol_rec {
	vbas_le64 size;          /* bytes, a multiple of the block size */
	vbas_le64 root;          /* mapping tree root, 0 = empty */
	vbas_le64 mapped;        /* blocks mapped (not kept up while DELETING) */
	vbas_le64 origin;        /* volume id this was made from, 0 = none */
	vbas_le64 ctime;         /* seconds since the epoch */
	vbas_le64 cgen;          /* generation that created it */
	vbas_le64 share_gen;     /* last transaction in which this volume's tree
	                            was shared (snapshot or clone of it, or its
	                            own creation as one); tree nodes written in
	                            a later transaction are this volume's alone */
	union {
	vbas_le64 del_cursor;    /* DELETING: every mapping-tree subtree whose
	                            keys all lie below this has been released */
	vbas_le64 owed;          /* otherwise: blocks the pool holds free for
	                            copies on write of the volume's reserved
	                            blocks that snapshots, clones or reflinks
	                            share (at most resv_blocks; see
	                            docs/design.md, "Reserved ranges") */
	};
	vbas_le32 flags;         /* VBAS_VOLF_* */
	vbas_le16 name_len;      /* 1..255 */
	vbas_le16 pad;           /* zero */
	vbas_le64 root_txid;     /* transaction that wrote the root, 0 = empty */
	vbas_le64 resv_blocks;   /* blocks of its extents marked
	                            VBAS_MAPF_RESERVED (format 3: zero) */
	uint8_t   name[256];     /* name_len bytes, zero padded */
};
_Static_assert(sizeof(struct vbas_vol_rec) == 344, "vbas_vol_rec");

/* Whole leaf records (key, then value) of each tree. */
struct vbas_map_rec {
	struct vbas_map_key k;
	struct vbas_map_val v;
};
struct vbas_refc_rec {
	struct vbas_refc_key k;
	struct vbas_refc_val v;
};
struct vbas_voltab_rec {
	struct vbas_vol_key k;
	struct vbas_vol_rec v;
};
struct vbas_rmap_rec {
	struct vbas_rmap_key k;
	struct vbas_rmap_val v;
};
_Static_assert(sizeof(struct vbas_map_rec) == 24, "vbas_map_rec");
_Static_assert(sizeof(struct vbas_rmap_rec) == 32, "vbas_rmap_rec");
_Static_assert(sizeof(struct vbas_refc_rec) == 24, "vbas_refc_rec");
_Static_assert(sizeof(struct vbas_voltab_rec) == 352, "vbas_voltab_rec");

#endif /* VBAS_FORMAT_H */
