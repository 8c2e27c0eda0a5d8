/* The generic copy-on-write B+tree.
 *
 * One engine serves every tree in the pool (volume table, refcount tree,
 * per-volume mapping trees, and later the reverse map); each tree brings an
 * ops vector with its key and value sizes, its key order, and for trees of
 * overlapping intervals the high key of a record.
 *
 * Nodes are shadowed: the first change to a node in a transaction writes a
 * copy at a newly allocated block, and the parent is pointed at the copy
 * (itself shadowed first, up to the root).  A node written in the current
 * transaction (header txid == the transaction's id) is changed in place.
 * Such a node always has reference count 1: nodes are shared only right
 * after a commit (see docs/design.md, "Sharing").  Copying a node whose
 * reference count is above one raises the count of everything it points
 * to: child nodes through the environment, values through ops->val_inc.
 *
 * Interior entries carry the exact smallest key of the child's subtree and,
 * for overlapping trees, the exact largest high key.  Every change keeps
 * them exact, so the interval query can prune by them and check can verify
 * them.  Structure changes run top-down (split a full child before entering
 * it, refill a thin child before entering it), every block a change needs is
 * allocated before the change is made, and keys along the path are fixed up
 * last: the tree is a valid search tree whenever the allocator reads it.
 */
#ifndef VBAS_BTREE_H
#define VBAS_BTREE_H

#include <stddef.h>
#include <stdint.h>

#include "format.h"

#define BT_MAX_KEY    32
#define BT_MAX_REC    512
#define BT_MAX_DEPTH  16

struct vbas_cache;
struct vbas_btree_ops;

/* What a tree needs from the transaction and space layers. */
struct bt_env {
	struct vbas_cache *cache;
	uint64_t txid;             /* the running transaction */
	uint8_t uuid[16];
	uint32_t block_size;
	uint32_t max_fanout;       /* 0 = as many as fit */
	uint64_t nblocks;          /* blocks in the pool: pointers stay below */
	/* The kind of tree of each tree type, for checking nodes as they
	 * are read from the device (a type without one is refused). */
	const struct vbas_btree_ops *types[VBAS_TREE_TYPE_MAX];
	/* A new metadata block, near HINT; counted as one reference. */
	int (*alloc_meta)(void *ctx, uint64_t hint, uint64_t *blkno);
	/* Drop one reference to a metadata block (never recursive). */
	int (*dec_meta)(void *ctx, uint64_t blkno);
	/* Add one reference to a metadata block. */
	int (*inc_meta)(void *ctx, uint64_t blkno);
	/* Current reference count of a metadata block. */
	int (*refcount)(void *ctx, uint64_t blkno, uint32_t *rc);
	/* Did the count of a block change in this transaction (so the last
	 * commit may share it)?  May be NULL. */
	int (*touched)(void *ctx, uint64_t blkno);
	/* Count [blkno, blkno+len) as touched in this transaction (a node
	 * shared in the last commit was copied: what it points to must not
	 * be written in place until the commit).  May be NULL. */
	int (*mark_touched)(void *ctx, uint64_t blkno, uint64_t len);
	void *ctx;
};

struct vbas_btree_ops {
	const char *name;
	uint16_t tree_type;        /* enum vbas_tree_type */
	uint16_t key_size;         /* record = key, then value */
	uint16_t val_size;
	uint16_t overlapping;      /* interior entries carry a high key */
	int (*cmp)(const void *a, const void *b);
	/* Overlapping trees: the last key a record covers. */
	void (*high_key)(const void *rec, void *key);
	/* A node holding REC was copied from a shared node: REC's targets
	 * gain a reference (NULL: the values point at nothing). */
	int (*val_inc)(void *ctx, const void *rec);
	/* A node holding REC, not shared now but maybe in the last commit,
	 * was copied: REC's targets count as touched (env->mark_touched;
	 * NULL: the values point at nothing). */
	int (*val_touch)(void *ctx, const void *rec);
	/* A node holding REC is freed by bt_drop: REC's targets lose the
	 * reference it held (NULL: the values point at nothing). */
	int (*val_dec)(void *ctx, const void *rec);
	/* Leaf records and their owners (a reverse map keeps them): REC
	 * entered (DELTA +1) or left (-1) a leaf whose header names OWNER,
	 * which is the tree that wrote the node first.  A snapshot or clone
	 * shares nodes without a call; a node copied because it was shared
	 * belongs to the copying tree (+1 for each record); a node shadowed
	 * while not shared, and the sibling a split makes, keep their owner
	 * (no call); records moved between leaves of two owners (merges,
	 * rebalancing) leave one and enter the other; a leaf freed
	 * (bt_drop) lets each record go.  NULL: not kept. */
	int (*rec_owner)(void *ctx, const void *rec, uint64_t owner, int delta);
	/* Checks one record on its own (bounds against ENV's pool); 0 or
	 * -EUCLEAN with a message.  Run on every record of every node read
	 * from the device, before anything uses it. */
	int (*check_rec)(const struct bt_env *env, const void *rec, char *why, size_t whylen);
	/* Trees whose records cover [key, end key) and never overlap (the
	 * mapping and refcount trees): the first key past REC.  Checked
	 * against the next record, and against the parent's next low key.
	 * May be NULL. */
	void (*end_key)(const void *rec, void *key);
	/* Prints a key for messages. */
	void (*fmt_key)(const void *key, char *buf, size_t len);
};

struct vbas_btree {
	const struct vbas_btree_ops *ops;
	struct bt_env *env;
	uint64_t root;             /* 0 = empty tree */
	uint64_t root_txid;        /* transaction that wrote the root (0: empty) */
	uint64_t owner;            /* stamped in nodes this tree creates */
	void *val_ctx;             /* passed to ops->val_inc and val_dec */
	int64_t grown;             /* nodes added (splits, new roots) less nodes
	                              merged away, since the owner last zeroed it */
};

enum bt_lookup_mode { BT_EQ, BT_LE, BT_GE };

/* 0 and the record in REC_OUT, or -ENOENT. */
int bt_lookup(struct vbas_btree *t, const void *key, enum bt_lookup_mode mode,
	      void *rec_out);
int bt_insert(struct vbas_btree *t, const void *rec);          /* -EEXIST */
int bt_update(struct vbas_btree *t, const void *rec);          /* -ENOENT */
int bt_delete(struct vbas_btree *t, const void *key, void *rec_out); /* -ENOENT */

/* The leaf the path to KEY ends in: its block, a copy of its N records
 * in RECS (room for bt_leaf_cap records: the caller's), and the keys its
 * parents give it: [LO, HI), each only if HAS_.  N = 0: an empty tree. */
struct bt_leaf {
	uint64_t blk;
	uint64_t owner;            /* the owner its header names */
	unsigned n;
	int has_lo, has_hi;
	uint8_t lo[BT_MAX_KEY], hi[BT_MAX_KEY];
	void *recs;
};
int bt_leaf_get(struct vbas_btree *t, const void *key, struct bt_leaf *out);

/* Repair only: write a leaf of N records (RECS, sorted) at BLKNO in place,
 * as transaction TXID and OWNER wrote it (what its parents expect), over
 * whatever the block holds; written back with the next commit. */
int bt_write_leaf(struct vbas_btree *t, uint64_t blkno, uint64_t txid, uint64_t owner,
		  const void *recs, unsigned n);

/* Repair only: write an interior node at LEVEL of N entries (KEYS, each
 * the child's exact low key; CHILD and CTXID its block and transaction)
 * at BLKNO in place, as TXID and OWNER wrote it.  Trees of overlapping
 * intervals are not written this way (-EINVAL). */
int bt_write_interior(struct vbas_btree *t, uint64_t blkno, uint64_t txid, uint64_t owner,
		      unsigned level, const void *keys, const uint64_t *child,
		      const uint64_t *ctxid, unsigned n);

/* Whether the path to KEY reaches node BLKNO at LEVEL (the tree's root
 * counts at any level): how the trees that hold a node are found from the
 * node (its first key, its level), O(height). */
int bt_reaches(struct vbas_btree *t, const void *key, unsigned level, uint64_t blkno,
	       int *found);

/* Moving nodes to other blocks (pool shrink), keeping every sharing.
 *
 * Shadowing gives a tree its own copy of a shared node; a move must give
 * every tree that holds the node the same copy.  bt_relocate points tree T
 * at a copy of node BLK (at LEVEL, reached by KEY) and of every node above
 * it on T's path, each copy placed by the allocator; called for each tree
 * that may hold BLK, it makes each copy once (MOVED remembers them) and
 * repoints each parent once.  A copy keeps the header's owner and takes
 * the old node's reference count; the old node loses all of it.  Until the
 * commit, copies of shared nodes are written in place by later calls
 * (every holder must see the change), so the caller commits before any
 * other change.  A node written in this transaction that is not a copy
 * is never met: the caller starts from a commit.
 *
 * EDIT (may be NULL) changes the records of the leaf BLK's copy, or of
 * the leaf itself if it is already one. *FOUND: T's path reaches BLK (or
 * its copy); *SHARED: a node copied on T's path was shared (the volume's
 * share_gen must then cover this transaction). */
struct bt_moved {
	uint64_t old, copy;
	uint32_t refs;             /* the old node's count: holders to repoint */
	uint32_t hits;             /* holders repointed */
};
struct bt_moves {
	struct bt_moved *v;
	size_t n, cap;
	int (*edit)(void *arg, struct vbas_btree *t, uint64_t owner, void *recs, unsigned n);
	void *arg;
};
int bt_relocate(struct vbas_btree *t, const void *key, unsigned level, uint64_t blk,
		struct bt_moves *mv, int *found, int *shared);
/* The header of node BLK as read (no tree needed): tree type, owner,
 * level, its first key (KEY: BT_MAX_KEY bytes) and transaction.  Checked
 * like every read; -EUCLEAN for a node of an unknown tree type. */
int bt_node_info(struct bt_env *env, uint64_t blk, uint16_t *type, uint64_t *owner,
		 unsigned *level, void *key, uint64_t *txid);

/* Records with key >= START (all if NULL) in order; CB returns 0 to go on,
 * anything else stops the walk and is returned.  CB must not change the
 * tree. */
typedef int (*bt_rec_cb)(void *arg, const void *rec);
int bt_iter(struct vbas_btree *t, const void *start, bt_rec_cb cb, void *arg);
/* As bt_iter, but only the records of leaves no other tree holds: every
 * node on their path has reference count one (nodes written after
 * SHARE_GEN, the last transaction the tree was shared in, or in the
 * running one, are known to).  A shared subtree is skipped unread. */
int bt_iter_private(struct vbas_btree *t, const void *start, uint64_t share_gen, bt_rec_cb cb,
		    void *arg);
/* Records whose [key, high key] overlaps [LO, HI] (overlapping trees). */
int bt_query_overlap(struct vbas_btree *t, const void *lo, const void *hi,
		     bt_rec_cb cb, void *arg);

/* Sharing.  *SHARED says whether any node on the path to KEY is shared
 * with another tree (reference count above one).  Nodes written in the
 * running transaction or after SHARE_GEN (the last transaction in which
 * the tree was shared) are known to be this tree's alone and are not
 * looked up. */
int bt_path_shared(struct vbas_btree *t, const void *key, uint64_t share_gen, int *shared);

/* What copying the shared part of paths costs: copying a shared node
 * raises the count of each of its children (or record targets), so a
 * change under a shared node makes as many refcount changes as the copied
 * nodes hold records.  bt_path_cow adds to COW->recs the records of every
 * node on the path to KEY from the first shared one down, counting each
 * node once across calls in key order (SEEN, per level); *SHARED as for
 * bt_path_shared; FOR_WRITE: also nodes whose count changed in this
 * transaction (env->touched), which the last commit may share.  Zero COW
 * before the first call. */
struct bt_cow {
	uint64_t recs;             /* records of the shared nodes counted */
	uint64_t nodes;            /* shared nodes counted (each copied once) */
	uint64_t seen[BT_MAX_DEPTH];
};
int bt_path_cow(struct vbas_btree *t, const void *key, uint64_t share_gen, int *shared,
		struct bt_cow *cow, int for_write);

/* Release the whole tree, resumably: the tree itself is never changed.
 * CURSOR (a key; start from the smallest) says how far an earlier call
 * got; every subtree whose keys all lie below it has been released, and
 * the call moves it on.  Shared nodes lose one reference; nodes held only
 * by this tree are freed after their children, or their records' targets
 * (ops->val_dec).  Stops after about BUDGET records and nodes, at a
 * boundary that leaves a consistent state; *DONE once all is released. */
int bt_drop(struct vbas_btree *t, void *cursor, uint64_t budget, int *done);

/* Key ranges [LO, HI) (NULL LO: from the start, NULL HI: to the end) where
 * trees A and B may hold different records: everything outside them is
 * in subtrees the two trees share.  Ranges come in key order. */
typedef int (*bt_range_cb)(void *arg, const void *lo, const void *hi);
int bt_diff(struct vbas_btree *a, struct vbas_btree *b, bt_range_cb cb, void *arg);

/* Structural check of a whole tree.  NODE_CB sees every node reference
 * (blkno, level) and may return BT_CHECK_SEEN for a node it has seen
 * through another reference: its subtree is then not walked again.
 * NODE_DONE follows the walk of each subtree that was walked.  REC_CB sees
 * every record; REPORT gets each problem.  With FROM set, subtrees whose
 * keys all lie below it are skipped (a tree half released by bt_drop). */
#define BT_CHECK_SEEN 1
struct bt_check_cbs {
	void (*report)(void *arg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
	int (*node_cb)(void *arg, uint64_t blkno, unsigned level);
	int (*node_done)(void *arg, uint64_t blkno);
	int (*rec_cb)(void *arg, const void *rec);
	/* Before the records of each leaf walked: its owner (header). */
	int (*leaf_cb)(void *arg, uint64_t blkno, uint64_t owner);
	/* A node that could not be read (after REPORT): where it is, the
	 * transaction and level its parent expects (-1: the root), and the
	 * keys its parent gives it, [LO, HI) (NULL: unbounded). */
	int (*bad_node)(void *arg, uint64_t blkno, uint64_t txid, int level, const void *lo,
			const void *hi);
	const void *from;
	void *arg;
};
int bt_check(struct vbas_btree *t, const struct bt_check_cbs *cbs,
	     uint64_t *nodes, uint64_t *recs);

/* Capacity of leaves and interior nodes of this tree. */
unsigned bt_leaf_cap(const struct vbas_btree *t);
unsigned bt_int_cap(const struct vbas_btree *t);
/* Nodes in the tree, counted from its interior nodes (leaves not read). */
int bt_count_nodes(struct vbas_btree *t, uint64_t *nodes);
/* Nodes a tree of RECS records built in key order (every node half full)
 * takes, every level counted. */
uint64_t bt_nodes_for(const struct vbas_btree *t, uint64_t recs);
/* Levels (0 for an empty tree). */
int bt_height(struct vbas_btree *t, unsigned *height);

/* Validator for the metadata cache: checksum, magic, address, uuid. */
struct vbas_validator;
void bt_node_validator(struct vbas_validator *v, struct bt_env *env);

/* Comparators and printers for trees keyed by one little-endian u64. */
int bt_cmp_u64(const void *a, const void *b);
void bt_fmt_u64(const void *key, char *buf, size_t len);

#endif
