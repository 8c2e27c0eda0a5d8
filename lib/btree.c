/* The generic copy-on-write B+tree engine.  See btree.h for the rules.
 *
 * Node layout (B = block size):
 *
 *   +----------------+---------------------------------------------+
 *   | header (64 B)  | leaf:     rec[0] rec[1] ... rec[nrecs-1]     |
 *   |                | interior: ent[0] ent[1] ... ent[nrecs-1]     |
 *   +----------------+---------------------------------------------+
 *   rec = key | value                       (key_size + val_size)
 *   ent = low key | [high key] | le64 child | le64 child txid
 *                                          (key_size * (1+ovl) + 16)
 *
 * Split of a full child C at index i of parent P (top-down, before the
 * descent enters C; P is never full because it was split on the way):
 *
 *      P: .. [lo_i -> C] ..            P: .. [lo_i -> C] [lo_s -> S] ..
 *      C: a b c d e f          ==>     C: a b c        S: d e f
 */
#include "btree.h"
#include "cache.h"
#include "crc32c.h"
#include "errmsg.h"
#include "format.h"
#include "vbas.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HDR sizeof(struct vbas_node_hdr)

/* ---- Node accessors --------------------------------------------------- */

static inline struct vbas_node_hdr *nh(void *d) { return d; }
static inline unsigned n_recs(const void *d) { return le16_get(((const struct vbas_node_hdr *)d)->nrecs); }
static inline unsigned n_level(const void *d) { return le16_get(((const struct vbas_node_hdr *)d)->level); }
static inline void set_nrecs(void *d, unsigned n) { nh(d)->nrecs = le16_mk((uint16_t)n); }
static inline uint64_t n_owner(const void *d) { return le64_get(((const struct vbas_node_hdr *)d)->owner); }

static inline size_t rec_size(const struct vbas_btree *t) { return t->ops->key_size + t->ops->val_size; }
static inline size_t ent_size(const struct vbas_btree *t)
{
	return t->ops->key_size * (1u + (t->ops->overlapping ? 1u : 0u)) + VBAS_PTR_BYTES;
}
static inline uint8_t *leaf_rec(const struct vbas_btree *t, void *d, unsigned i)
{
	return (uint8_t *)d + HDR + i * rec_size(t);
}
static inline uint8_t *ent(const struct vbas_btree *t, void *d, unsigned i)
{
	return (uint8_t *)d + HDR + i * ent_size(t);
}
static inline uint8_t *ent_high(const struct vbas_btree *t, void *d, unsigned i)
{
	return ent(t, d, i) + t->ops->key_size;
}
static inline uint64_t ent_child(const struct vbas_btree *t, void *d, unsigned i)
{
	return ld_le64(ent(t, d, i) + ent_size(t) - VBAS_PTR_BYTES);
}
static inline uint64_t ent_ctxid(const struct vbas_btree *t, void *d, unsigned i)
{
	return ld_le64(ent(t, d, i) + ent_size(t) - 8);
}
/* Point entry I at C, a node written in the running transaction (every
 * node a change points at is: new, or shadowed). */
static inline void set_child(const struct vbas_btree *t, void *d, unsigned i, uint64_t c)
{
	st_le64(ent(t, d, i) + ent_size(t) - VBAS_PTR_BYTES, c);
	st_le64(ent(t, d, i) + ent_size(t) - 8, t->env->txid);
}
/* The key that orders entry/record I of node D. */
static inline uint8_t *nkey(const struct vbas_btree *t, void *d, unsigned i)
{
	return n_level(d) ? ent(t, d, i) : leaf_rec(t, d, i);
}
static inline size_t item_size(const struct vbas_btree *t, const void *d)
{
	return n_level(d) ? ent_size(t) : rec_size(t);
}

static size_t ops_ent_size(const struct vbas_btree_ops *ops)
{
	return ops->key_size * (1u + (ops->overlapping ? 1u : 0u)) + VBAS_PTR_BYTES;
}

/* Items a node of a tree of OPS at LEVEL may hold. */
static unsigned cap_of(const struct bt_env *env, const struct vbas_btree_ops *ops, unsigned level)
{
	size_t item = level ? ops_ent_size(ops) : (size_t)ops->key_size + ops->val_size;
	unsigned c = (unsigned)((env->block_size - HDR) / item);
	if (env->max_fanout && c > env->max_fanout)
		c = env->max_fanout;
	return c;
}

unsigned bt_leaf_cap(const struct vbas_btree *t)
{
	return cap_of(t->env, t->ops, 0);
}

unsigned bt_int_cap(const struct vbas_btree *t)
{
	return cap_of(t->env, t->ops, 1);
}

static unsigned cap(const struct vbas_btree *t, const void *d)
{
	return n_level(d) ? bt_int_cap(t) : bt_leaf_cap(t);
}

/* A non-root node with this many items or fewer is refilled before a
 * delete enters it; afterwards it still has at least MIN_FILL. */
static unsigned min_fill(const struct vbas_btree *t, const void *d)
{
	unsigned m = cap(t, d) / 4;
	return m ? m : 1;
}

static inline int kcmp(const struct vbas_btree *t, const void *a, const void *b)
{
	return t->ops->cmp(a, b);
}

static void fmt_key(const struct vbas_btree *t, const void *k, char *buf, size_t len)
{
	if (t->ops->fmt_key)
		t->ops->fmt_key(k, buf, len);
	else
		snprintf(buf, len, "?");
}

/* ---- Validation of nodes read from the device -------------------------- */

/* Everything a node says about itself, checked once as it comes from the
 * device, before any code walks it: header, record count for its level,
 * key order, every record on its own (ops->check_rec: bounds against the
 * pool), records that must not overlap, and child pointers (inside the
 * pool, not below the superblocks, written no later than the node).  What
 * only the parent knows (the child's transaction, level and key range) is
 * checked on the way down: node_get and node_get_in. */
static int node_verify_content(struct bt_env *env, uint64_t blkno, const void *buf)
{
	const struct vbas_node_hdr *h = buf;
	unsigned type = le16_get(h->tree_type), level = le16_get(h->level);
	unsigned n = le16_get(h->nrecs);
	uint64_t txid = le64_get(h->txid);
	const struct vbas_btree_ops *ops = type < VBAS_TREE_TYPE_MAX ? env->types[type] : NULL;
	char why[160], kb1[64], kb2[64];
	uint8_t k[BT_MAX_KEY];

	if (!ops)
		return vbas_err(-EUCLEAN, "metadata block %" PRIu64 ": unknown tree type %u",
				blkno, type);
	struct vbas_btree tt = { .ops = ops, .env = env };
	const struct vbas_btree *t = &tt;
	void *d = (void *)buf;
	if (n > cap_of(env, ops, level) || (level && n == 0))
		return vbas_err(-EUCLEAN, "metadata block %" PRIu64 " (%s tree, level %u): holds %u "
				"entries, room for %u", blkno, ops->name, level, n,
				cap_of(env, ops, level));
	if (txid == 0)
		return vbas_err(-EUCLEAN, "metadata block %" PRIu64 ": written by transaction 0",
				blkno);
	for (unsigned i = 0; i < n; i++) {
		if (i > 0 && kcmp(t, nkey(t, d, i - 1), nkey(t, d, i)) >= 0) {
			fmt_key(t, nkey(t, d, i - 1), kb1, sizeof(kb1));
			fmt_key(t, nkey(t, d, i), kb2, sizeof(kb2));
			return vbas_err(-EUCLEAN, "metadata block %" PRIu64 " (%s tree): entries %u and "
					"%u out of order (%s, %s)", blkno, ops->name, i - 1, i, kb1, kb2);
		}
		if (level) {
			uint64_t c = ent_child(t, d, i), ct = ent_ctxid(t, d, i);
			if (c < VBAS_FIRST_BLOCK || c >= env->nblocks || c == blkno)
				return vbas_err(-EUCLEAN, "metadata block %" PRIu64 " (%s tree): entry %u "
						"points to block %" PRIu64 ", outside the pool's "
						"metadata (blocks %u..%" PRIu64 ")", blkno, ops->name,
						i, c, VBAS_FIRST_BLOCK, env->nblocks - 1);
			if (ct == 0 || ct > txid)
				return vbas_err(-EUCLEAN, "metadata block %" PRIu64 " (%s tree): entry %u "
						"names transaction %" PRIu64 " for its child, but the "
						"node itself was written by %" PRIu64, blkno, ops->name,
						i, ct, txid);
			if (ops->overlapping && kcmp(t, ent_high(t, d, i), ent(t, d, i)) < 0)
				return vbas_err(-EUCLEAN, "metadata block %" PRIu64 " (%s tree): entry %u "
						"high key below its low key", blkno, ops->name, i);
			continue;
		}
		const uint8_t *rec = leaf_rec(t, d, i);
		if (ops->check_rec && ops->check_rec(env, rec, why, sizeof(why))) {
			fmt_key(t, rec, kb1, sizeof(kb1));
			return vbas_err(-EUCLEAN, "metadata block %" PRIu64 " (%s tree): record %u "
					"(%s): %s", blkno, ops->name, i, kb1, why);
		}
		/* A node of the running transaction read back after the cache
		 * wrote it out may hold the overlap a refcount split leaves for
		 * a moment (space.c apply(): the new part goes in before the old
		 * record shrinks).  Only this process writes such a node: a
		 * committed one (its parent or the superblock names an older
		 * transaction) never overlaps. */
		if (ops->end_key && i > 0 && txid != env->txid) {
			ops->end_key(leaf_rec(t, d, i - 1), k);
			if (kcmp(t, k, rec) > 0) {
				fmt_key(t, rec, kb1, sizeof(kb1));
				return vbas_err(-EUCLEAN, "metadata block %" PRIu64 " (%s tree): record %u "
						"overlaps record %u (%s)", blkno, ops->name, i - 1, i,
						kb1);
			}
		}
	}
	return 0;
}

static int node_verify_read(void *ctx, uint64_t blkno, const void *buf)
{
	struct bt_env *env = ctx;
	const struct vbas_node_hdr *h = buf;
	uint32_t want = le32_get(h->csum);
	uint32_t got = vbas_crc32c(VBAS_SALT_NODE, (const uint8_t *)buf + 4,
				   env->block_size - 4);
	if (le32_get(h->magic) != VBAS_NODE_MAGIC)
		return vbas_err(-EUCLEAN, "metadata block %" PRIu64 ": not a tree node (magic %#x)",
				blkno, le32_get(h->magic));
	if (want != got)
		return vbas_err(-EBADMSG, "metadata block %" PRIu64 ": checksum mismatch "
				"(stored %#x, computed %#x)", blkno, want, got);
	if (le64_get(h->blkno) != blkno)
		return vbas_err(-EUCLEAN, "metadata block %" PRIu64 ": claims to be block %" PRIu64
				" (misdirected write?)", blkno, le64_get(h->blkno));
	if (memcmp(h->uuid, env->uuid, 16))
		return vbas_err(-EUCLEAN, "metadata block %" PRIu64 ": belongs to another pool",
				blkno);
	if (le16_get(h->level) >= BT_MAX_DEPTH)
		return vbas_err(-EUCLEAN, "metadata block %" PRIu64 ": level %u too deep",
				blkno, le16_get(h->level));
	if (le64_get(h->txid) > env->txid)
		return vbas_err(-EUCLEAN, "metadata block %" PRIu64 ": written by transaction %"
				PRIu64 ", newer than the pool's %" PRIu64, blkno,
				le64_get(h->txid), env->txid);
	return node_verify_content(env, blkno, buf);
}

static void node_prepare_write(void *ctx, uint64_t blkno, void *buf)
{
	struct bt_env *env = ctx;
	struct vbas_node_hdr *h = buf;
	(void)blkno;
	h->csum = le32_mk(vbas_crc32c(VBAS_SALT_NODE, (uint8_t *)buf + 4, env->block_size - 4));
}

void bt_node_validator(struct vbas_validator *v, struct bt_env *env)
{
	v->name = "tree node";
	v->verify_read = node_verify_read;
	v->prepare_write = node_prepare_write;
	v->ctx = env;
}

/* Read node BLK of tree T, pinned; checks that it is the version the
 * pointer to it names (TXID: written by that transaction), belongs to
 * this kind of tree and sits at the level the parent says (LEVEL < 0:
 * any).  A node at the right address with the wrong transaction is an
 * older or another version of it: the device lost or misplaced a write. */
static int node_get(struct vbas_btree *t, uint64_t blk, uint64_t txid, int level,
		    uint64_t parent, struct cblock **out)
{
	struct cblock *b;
	int r;
	if (blk < VBAS_FIRST_BLOCK)
		return vbas_err(-EUCLEAN, "%s tree: pointer to block %" PRIu64
				", which holds a superblock", t->ops->name, blk);
	r = cache_read(t->env->cache, blk, &b);
	if (r)
		return vbas_err_ctx(r, "%s tree", t->ops->name);
	const struct vbas_node_hdr *h = b->data;
	if (le64_get(h->txid) != txid) {
		uint64_t got = le64_get(h->txid);
		cache_put(t->env->cache, b);
		char from[64] = "the superblock";
		if (parent)
			snprintf(from, sizeof(from), "metadata block %" PRIu64, parent);
		else if (t->owner < VBAS_VOL_ID_LIMIT)
			snprintf(from, sizeof(from), "the record of volume id %" PRIu64, t->owner);
		return vbas_err(-EIO, "%s tree: metadata block %" PRIu64 " was written by transaction %"
				PRIu64 ", but %s expects transaction %" PRIu64 " there (a lost "
				"or misdirected write)", t->ops->name, blk, got, from, txid);
	}
	if (le16_get(h->tree_type) != t->ops->tree_type) {
		cache_put(t->env->cache, b);
		return vbas_err(-EUCLEAN, "%s tree: block %" PRIu64 " is a node of tree type %u",
				t->ops->name, blk, le16_get(h->tree_type));
	}
	if (level >= 0 && n_level(b->data) != (unsigned)level) {
		cache_put(t->env->cache, b);
		return vbas_err(-EUCLEAN, "%s tree: block %" PRIu64 " is at level %u, expected %d",
				t->ops->name, blk, n_level(b->data), level);
	}
	if (n_recs(b->data) > cap(t, b->data) ||
	    (n_recs(b->data) == 0 && (level > 0 || n_level(b->data) > 0))) {
		unsigned n = n_recs(b->data);
		cache_put(t->env->cache, b);
		return vbas_err(-EUCLEAN, "%s tree: block %" PRIu64 " holds %u entries",
				t->ops->name, blk, n);
	}
	*out = b;
	return 0;
}

/* Node D (block BLK) was reached through an entry with low key LO, and
 * the next entry on the way down starts at HI (NULL: none): its keys must
 * start exactly at LO and stay below HI, and so must a leaf's last record
 * end.  Nodes written in the running transaction are skipped: a change
 * fixes the keys of its path last (btree.h), and they were built in memory,
 * not read. */
static int node_bounds(struct vbas_btree *t, uint64_t blk, void *d, const uint8_t *lo,
		       const uint8_t *hi, uint64_t parent)
{
	char kb1[64], kb2[64];
	uint8_t k[BT_MAX_KEY];
	unsigned n = n_recs(d);
	if (le64_get(nh(d)->txid) == t->env->txid)
		return 0;
	if (n == 0)
		return vbas_err(-EUCLEAN, "%s tree: metadata block %" PRIu64 " is empty", t->ops->name, blk);
	if (lo && kcmp(t, nkey(t, d, 0), lo) != 0) {
		fmt_key(t, lo, kb1, sizeof(kb1));
		fmt_key(t, nkey(t, d, 0), kb2, sizeof(kb2));
		return vbas_err(-EUCLEAN, "%s tree: metadata block %" PRIu64 " starts at key %s, but its parent "
				"(metadata block %" PRIu64 ") says %s", t->ops->name, blk, kb2,
				parent, kb1);
	}
	if (!hi)
		return 0;
	if (kcmp(t, nkey(t, d, n - 1), hi) >= 0) {
		fmt_key(t, nkey(t, d, n - 1), kb1, sizeof(kb1));
		fmt_key(t, hi, kb2, sizeof(kb2));
		return vbas_err(-EUCLEAN, "%s tree: metadata block %" PRIu64 " holds key %s, not below %s where "
				"the next subtree starts (parent: metadata block %" PRIu64 ")",
				t->ops->name, blk, kb1, kb2, parent);
	}
	if (!n_level(d) && t->ops->end_key) {
		t->ops->end_key(leaf_rec(t, d, n - 1), k);
		if (kcmp(t, k, hi) > 0) {
			fmt_key(t, nkey(t, d, n - 1), kb1, sizeof(kb1));
			fmt_key(t, hi, kb2, sizeof(kb2));
			return vbas_err(-EUCLEAN, "%s tree: metadata block %" PRIu64 " record %s reaches past %s, "
					"where the next subtree starts (parent: metadata block %"
					PRIu64 ")", t->ops->name, blk, kb1, kb2, parent);
		}
	}
	return 0;
}

/* node_get, then node_bounds against LO and HI. */
static int node_get_in(struct vbas_btree *t, uint64_t blk, uint64_t txid, int level,
		       const uint8_t *lo, const uint8_t *hi, uint64_t parent, struct cblock **out)
{
	int r = node_get(t, blk, txid, level, parent, out);
	if (r)
		return r;
	r = node_bounds(t, blk, (*out)->data, lo, hi, parent);
	if (r) {
		cache_put(t->env->cache, *out);
		*out = NULL;
	}
	return r;
}

/* Child I of interior node D, pinned, checked against the entry that
 * points to it; HI bounds D's own subtree (NULL: none). */
static int child_get(struct vbas_btree *t, void *d, unsigned i, const uint8_t *hi,
		     struct cblock **out)
{
	return node_get_in(t, ent_child(t, d, i), ent_ctxid(t, d, i), (int)n_level(d) - 1,
			   ent(t, d, i), i + 1 < n_recs(d) ? ent(t, d, i + 1) : hi,
			   le64_get(nh(d)->blkno), out);
}

/* The upper bound of child I's subtree in D, copied to BUF (pointers into
 * a node do not outlive its pin); NULL for none. */
static const uint8_t *child_hi(const struct vbas_btree *t, void *d, unsigned i, const uint8_t *hi,
			       uint8_t *buf)
{
	const uint8_t *h = i + 1 < n_recs(d) ? ent(t, d, i + 1) : hi;
	if (!h)
		return NULL;
	memcpy(buf, h, t->ops->key_size);
	return buf;
}

static int root_get(struct vbas_btree *t, struct cblock **out)
{
	return node_get(t, t->root, t->root_txid, -1, 0, out);
}

static inline void put(struct vbas_btree *t, struct cblock *b)
{
	if (b)
		cache_put(t->env->cache, b);
}

static void init_node(struct vbas_btree *t, void *d, uint64_t blk, unsigned level)
{
	struct vbas_node_hdr *h = d;
	h->magic = le32_mk(VBAS_NODE_MAGIC);
	h->blkno = le64_mk(blk);
	h->txid = le64_mk(t->env->txid);
	h->owner = le64_mk(t->owner);
	memcpy(h->uuid, t->env->uuid, 16);
	h->level = le16_mk((uint16_t)level);
	h->nrecs = le16_mk(0);
	h->tree_type = le16_mk(t->ops->tree_type);
}

/* A new empty node at LEVEL, pinned and dirty. */
static int new_node(struct vbas_btree *t, uint64_t hint, unsigned level, struct cblock **out)
{
	uint64_t blk;
	int r = t->env->alloc_meta(t->env->ctx, hint, &blk);
	if (r)
		return r;
	r = cache_new(t->env->cache, blk, out);
	if (r)
		return r;
	init_node(t, (*out)->data, blk, level);
	return 0;
}

/* Make node B (pinned; the pin is taken over) writable in this
 * transaction: itself if it was written in this transaction, else a copy
 * at a new block (the old block loses a reference; if it was shared,
 * everything it points to gains one). */
static int shadow_node(struct vbas_btree *t, struct cblock *b, struct cblock **out)
{
	struct cblock *n;
	uint64_t blk = b->blkno;
	uint32_t rc;
	int r;
	if (le64_get(nh(b->data)->txid) == t->env->txid) {
		cache_dirty(b);
		*out = b;
		return 0;
	}
	r = t->env->refcount(t->env->ctx, blk, &rc);
	if (!r && rc == 0)
		r = vbas_err(-EUCLEAN, "%s tree: node %" PRIu64 " is in use but its reference count is 0",
			     t->ops->name, blk);
	if (r)
		goto out;
	r = new_node(t, blk, n_level(b->data), &n);
	if (r)
		goto out;
	uint64_t nblk = n->blkno;
	memcpy(n->data, b->data, t->env->block_size);
	init_node(t, n->data, nblk, n_level(b->data));
	set_nrecs(n->data, n_recs(b->data));
	if (rc > 1) {
		/* A copy of a shared node is the copying tree's. */
		unsigned cnt = n_recs(n->data);
		for (unsigned i = 0; i < cnt && !r; i++) {
			if (n_level(n->data))
				r = t->env->inc_meta(t->env->ctx, ent_child(t, n->data, i));
			else if (t->ops->val_inc)
				r = t->ops->val_inc(t->val_ctx, leaf_rec(t, n->data, i));
			if (!r && !n_level(n->data) && t->ops->rec_owner)
				r = t->ops->rec_owner(t->val_ctx, leaf_rec(t, n->data, i), t->owner, +1);
		}
	} else {
		/* Not shared: the same node at a new address keeps its owner. */
		nh(n->data)->owner = nh(b->data)->owner;
		if (t->env->touched && t->env->mark_touched && t->env->touched(t->env->ctx, blk)) {
			/* Shared in the last commit maybe (its count changed
			 * since): that commit still reaches the children
			 * through the old block, so they are not to be written
			 * in place before the next one, though nothing else
			 * shares them now. */
			unsigned cnt = n_recs(n->data);
			for (unsigned i = 0; i < cnt && !r; i++) {
				if (n_level(n->data))
					r = t->env->mark_touched(t->env->ctx, ent_child(t, n->data, i), 1);
				else if (t->ops->val_touch)
					r = t->ops->val_touch(t->val_ctx, leaf_rec(t, n->data, i));
			}
		}
	}
	if (!r)
		r = t->env->dec_meta(t->env->ctx, blk);
	if (r) {
		put(t, n);
		goto out;
	}
	*out = n;
out:
	put(t, b);
	return r;
}

/* The root, writable. */
static int shadow_root(struct vbas_btree *t, struct cblock **out)
{
	struct cblock *b;
	int r = root_get(t, &b);
	if (!r)
		r = shadow_node(t, b, out);
	if (r)
		return r;
	t->root = (*out)->blkno;
	t->root_txid = t->env->txid;
	return 0;
}

/* Child I of the writable node D, writable, and D pointed at it; HI
 * bounds D's subtree (NULL: none). */
static int shadow_child(struct vbas_btree *t, void *d, unsigned i, const uint8_t *hi,
			struct cblock **out)
{
	struct cblock *b;
	int r = child_get(t, d, i, hi, &b);
	if (!r)
		r = shadow_node(t, b, out);
	if (r)
		return r;
	set_child(t, d, i, (*out)->blkno);
	return 0;
}

/* Index of the child to descend into for KEY: the last entry whose low key
 * is <= KEY, or 0 when KEY is below them all. */
static unsigned child_index(const struct vbas_btree *t, void *d, const void *key)
{
	unsigned lo = 0, hi = n_recs(d);
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		if (kcmp(t, ent(t, d, mid), key) <= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo ? lo - 1 : 0;
}

/* Position of the first record >= KEY in a leaf; *EXACT if equal. */
static unsigned leaf_pos(const struct vbas_btree *t, void *d, const void *key, int *exact)
{
	unsigned lo = 0, hi = n_recs(d);
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		if (kcmp(t, leaf_rec(t, d, mid), key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*exact = lo < n_recs(d) && kcmp(t, leaf_rec(t, d, lo), key) == 0;
	return lo;
}

/* The largest high key in node D (overlapping trees). */
static void node_high(const struct vbas_btree *t, void *d, uint8_t *out)
{
	uint8_t k[BT_MAX_KEY];
	unsigned n = n_recs(d);
	for (unsigned i = 0; i < n; i++) {
		if (n_level(d))
			memcpy(k, ent_high(t, d, i), t->ops->key_size);
		else
			t->ops->high_key(leaf_rec(t, d, i), k);
		if (i == 0 || kcmp(t, k, out) > 0)
			memcpy(out, k, t->ops->key_size);
	}
}

/* Set entry I of parent P from the node C it points to. */
static void set_entry_keys(const struct vbas_btree *t, void *p, unsigned i, void *c)
{
	memcpy(ent(t, p, i), nkey(t, c, 0), t->ops->key_size);
	if (t->ops->overlapping)
		node_high(t, c, ent_high(t, p, i));
}

static void insert_item(const struct vbas_btree *t, void *d, unsigned pos, const void *item)
{
	size_t sz = item_size(t, d);
	unsigned n = n_recs(d);
	uint8_t *at = (uint8_t *)d + HDR + pos * sz;
	memmove(at + sz, at, (n - pos) * sz);
	memcpy(at, item, sz);
	set_nrecs(d, n + 1);
}

static void remove_item(const struct vbas_btree *t, void *d, unsigned pos)
{
	size_t sz = item_size(t, d);
	unsigned n = n_recs(d);
	uint8_t *at = (uint8_t *)d + HDR + pos * sz;
	memmove(at, at + sz, (n - pos - 1) * sz);
	memset((uint8_t *)d + HDR + (n - 1) * sz, 0, sz);
	set_nrecs(d, n - 1);
}

/* Split the full child C (already writable) at index I of P, on the way
 * to inserting REC.  RIGHTMOST says that C is on the right edge of the
 * tree.  An insert into a leaf there past every key of C is an append
 * (logical addresses written in order, blocks allocated in order): C then
 * keeps all but its last record, so appends leave full leaves behind them
 * instead of half-full ones.  Every other split is in the middle, so
 * random inserts cannot leave a trail of nearly empty nodes.  Interior
 * nodes always split in the middle: a split is made before the descent
 * knows whether the child below will split too, and an interior node
 * left with one entry would be merged back by the next delete, only to be
 * split again by the next append. */
static int split_child(struct vbas_btree *t, void *p, unsigned i, struct cblock *c,
		       const void *rec, int rightmost)
{
	struct cblock *s;
	unsigned n = n_recs(c->data), keep = n / 2;
	size_t sz = item_size(t, c->data);
	if (rightmost && n_level(c->data) == 0 &&
	    kcmp(t, rec, (uint8_t *)c->data + HDR + (n - 1) * sz) > 0)
		keep = n - 1;
	uint8_t e[BT_MAX_REC];
	int r = new_node(t, c->blkno, n_level(c->data), &s);
	if (r)
		return r;
	t->grown++;
	nh(s->data)->owner = nh(c->data)->owner;    /* the records keep their owner */
	memcpy((uint8_t *)s->data + HDR, (uint8_t *)c->data + HDR + keep * sz, (n - keep) * sz);
	memset((uint8_t *)c->data + HDR + keep * sz, 0, (n - keep) * sz);
	set_nrecs(s->data, n - keep);
	set_nrecs(c->data, keep);
	memset(e, 0, sizeof(e));
	insert_item(t, p, i + 1, e);
	set_child(t, p, i + 1, s->blkno);
	set_entry_keys(t, p, i + 1, s->data);
	set_entry_keys(t, p, i, c->data);
	put(t, s);
	return 0;
}

/* Make the root writable and not full for inserting REC; returns it pinned. */
static int prepare_root(struct vbas_btree *t, const void *rec, struct cblock **out)
{
	struct cblock *root, *nr;
	int r = shadow_root(t, &root);
	if (r)
		return r;
	if (n_recs(root->data) < cap(t, root->data)) {
		*out = root;
		return 0;
	}
	if (n_level(root->data) + 1 >= BT_MAX_DEPTH) {
		put(t, root);
		return vbas_err(-EFBIG, "%s tree: too deep", t->ops->name);
	}
	r = new_node(t, root->blkno, n_level(root->data) + 1, &nr);
	if (r) {
		put(t, root);
		return r;
	}
	t->grown++;
	uint8_t e[BT_MAX_REC];
	memset(e, 0, sizeof(e));
	insert_item(t, nr->data, 0, e);
	set_child(t, nr->data, 0, root->blkno);
	set_entry_keys(t, nr->data, 0, root->data);
	r = split_child(t, nr->data, 0, root, rec, 1);
	put(t, root);
	if (r) {
		put(t, nr);
		return r;
	}
	t->root = nr->blkno;
	t->root_txid = t->env->txid;
	*out = nr;
	return 0;
}

struct path {
	struct cblock *node[BT_MAX_DEPTH];
	unsigned idx[BT_MAX_DEPTH];     /* entry taken in node[i] */
	unsigned depth;                 /* nodes held */
	const uint8_t *hi[BT_MAX_DEPTH];  /* node[i]'s keys stay below (NULL: none) */
	uint8_t hib[BT_MAX_DEPTH][BT_MAX_KEY];
};

/* Node I+1 of path P is the child at entry IDX[I] of node I: its bound. */
static void path_set_hi(const struct vbas_btree *t, struct path *p, unsigned i)
{
	p->hi[i + 1] = child_hi(t, p->node[i]->data, p->idx[i], p->hi[i], p->hib[i + 1]);
}

static void path_release(struct vbas_btree *t, struct path *p)
{
	for (unsigned i = 0; i < p->depth; i++)
		put(t, p->node[i]);
	p->depth = 0;
}

/* After a change at the leaf, make the keys of every entry on the path
 * exact again, bottom-up.  noipa: GCC 12 at -O1/-O2 dropped calls to this
 * function from bt_insert after inter-procedural analysis (found by the
 * unit tests: entry keys went stale; fine with -fno-ipa-modref
 * -fno-ipa-pure-const).  Keep it opaque to that analysis. */
__attribute__((noipa)) static void fixup_path(struct vbas_btree *t, struct path *p)
{
	for (unsigned i = p->depth - 1; i-- > 0;) {
		void *parent = p->node[i]->data, *child = p->node[i + 1]->data;
		if (n_recs(child))
			set_entry_keys(t, parent, p->idx[i], child);
	}
}

/* ---- Lookup ------------------------------------------------------------ */

struct ge_ctx {
	const struct vbas_btree *t;
	void *out;
	int found;
};

static int ge_cb(void *arg, const void *rec)
{
	struct ge_ctx *g = arg;
	memcpy(g->out, rec, rec_size(g->t));
	g->found = 1;
	return 1;
}

/* Down the path to KEY to the node at LEVEL (or the leaf, if the tree is
 * lower), pinned in *OUT.  *LEFT: KEY lies below every key of the tree
 * (the path went to the first child at some level).  BD (may be NULL):
 * the keys the node's parents give it. */
struct bounds {
	uint8_t lo[BT_MAX_KEY], hi[BT_MAX_KEY];
	int has_lo, has_hi;
};

static int descend(struct vbas_btree *t, const void *key, unsigned level, struct cblock **out,
		   int *left, struct bounds *bd)
{
	struct cblock *b, *c;
	uint8_t hib[2][BT_MAX_KEY];
	const uint8_t *hi = NULL;
	int flip = 0, r = root_get(t, &b);
	*left = 0;
	if (bd)
		bd->has_lo = bd->has_hi = 0;
	if (r)
		return r;
	while (n_level(b->data) > level) {
		void *d = b->data;
		unsigned i = 0;
		if (n_recs(d) && kcmp(t, ent(t, d, 0), key) <= 0)
			i = child_index(t, d, key);
		else
			*left = 1;
		if (bd && !*left) {
			memcpy(bd->lo, ent(t, d, i), t->ops->key_size);
			bd->has_lo = 1;
		}
		r = child_get(t, d, i, hi, &c);
		hi = child_hi(t, d, i, hi, hib[flip ^= 1]);
		put(t, b);
		if (r)
			return r;
		b = c;
	}
	if (bd && hi) {
		memcpy(bd->hi, hi, t->ops->key_size);
		bd->has_hi = 1;
	}
	*out = b;
	return 0;
}

int bt_lookup(struct vbas_btree *t, const void *key, enum bt_lookup_mode mode, void *rec_out)
{
	struct cblock *b;
	int r;

	if (mode == BT_GE) {
		/* The first record of a walk from KEY. */
		struct ge_ctx g = { t, rec_out, 0 };
		r = bt_iter(t, key, ge_cb, &g);
		if (r < 0)
			return r;
		return g.found ? 0 : -ENOENT;
	}
	if (!t->root)
		return -ENOENT;
	int left;
	r = descend(t, key, 0, &b, &left, NULL);
	if (r)
		return r;
	if (left) {
		put(t, b);
		return -ENOENT;
	}
	int exact;
	unsigned pos = leaf_pos(t, b->data, key, &exact);
	r = -ENOENT;
	if (exact) {
		memcpy(rec_out, leaf_rec(t, b->data, pos), rec_size(t));
		r = 0;
	} else if (mode == BT_LE && pos > 0) {
		memcpy(rec_out, leaf_rec(t, b->data, pos - 1), rec_size(t));
		r = 0;
	}
	put(t, b);
	return r;
}

int bt_leaf_get(struct vbas_btree *t, const void *key, struct bt_leaf *out)
{
	struct cblock *b;
	struct bounds bd;
	int left;
	out->n = 0;
	out->blk = 0;
	out->has_lo = out->has_hi = 0;
	if (!t->root)
		return 0;
	int r = descend(t, key, 0, &b, &left, &bd);
	if (r)
		return r;
	out->has_lo = bd.has_lo;
	out->has_hi = bd.has_hi;
	memcpy(out->lo, bd.lo, sizeof(out->lo));
	memcpy(out->hi, bd.hi, sizeof(out->hi));
	out->blk = b->blkno;
	out->owner = n_owner(b->data);
	out->n = n_recs(b->data);     /* <= the leaf capacity: node_get checked */
	memcpy(out->recs, leaf_rec(t, b->data, 0), (size_t)out->n * rec_size(t));
	put(t, b);
	return 0;
}

/* Repair: a fresh node at BLKNO over whatever the block holds, with the
 * header its parents expect (TXID, OWNER, LEVEL, N items), pinned and
 * dirty in *OUT. */
static int node_in_place(struct vbas_btree *t, uint64_t blkno, uint64_t txid, uint64_t owner,
			 unsigned level, unsigned n, struct cblock **out)
{
	cache_forget(t->env->cache, blkno);
	int r = cache_new(t->env->cache, blkno, out);
	if (r)
		return r;
	struct vbas_node_hdr *h = (*out)->data;
	h->magic = le32_mk(VBAS_NODE_MAGIC);
	h->blkno = le64_mk(blkno);
	h->txid = le64_mk(txid);
	h->owner = le64_mk(owner);
	memcpy(h->uuid, t->env->uuid, 16);
	h->level = le16_mk((uint16_t)level);
	h->nrecs = le16_mk((uint16_t)n);
	h->tree_type = le16_mk(t->ops->tree_type);
	cache_dirty(*out);
	return 0;
}

int bt_write_leaf(struct vbas_btree *t, uint64_t blkno, uint64_t txid, uint64_t owner,
		  const void *recs, unsigned n)
{
	struct cblock *b;
	if (n == 0 || n > bt_leaf_cap(t))
		return vbas_err(-EINVAL, "%s tree: a leaf of %u records", t->ops->name, n);
	int r = node_in_place(t, blkno, txid, owner, 0, n, &b);
	if (r)
		return r;
	memcpy(leaf_rec(t, b->data, 0), recs, (size_t)n * rec_size(t));
	put(t, b);
	return 0;
}

int bt_write_interior(struct vbas_btree *t, uint64_t blkno, uint64_t txid, uint64_t owner,
		      unsigned level, const void *keys, const uint64_t *child,
		      const uint64_t *ctxid, unsigned n)
{
	struct cblock *b;
	if (t->ops->overlapping || !level || n == 0 || n > bt_int_cap(t))
		return vbas_err(-EINVAL, "%s tree: an interior node of %u entries at level %u",
				t->ops->name, n, level);
	int r = node_in_place(t, blkno, txid, owner, level, n, &b);
	if (r)
		return r;
	for (unsigned i = 0; i < n; i++) {
		uint8_t *e = ent(t, b->data, i);
		memcpy(e, (const uint8_t *)keys + (size_t)i * t->ops->key_size, t->ops->key_size);
		st_le64(e + ent_size(t) - VBAS_PTR_BYTES, child[i]);
		st_le64(e + ent_size(t) - 8, ctxid[i]);
	}
	put(t, b);
	return 0;
}

int bt_reaches(struct vbas_btree *t, const void *key, unsigned level, uint64_t blkno,
	       int *found)
{
	struct cblock *b;
	int left;
	*found = 0;
	if (!t->root)
		return 0;
	if (t->root == blkno) {
		*found = 1;
		return 0;
	}
	int r = descend(t, key, level + 1, &b, &left, NULL);
	if (r)
		return r;
	void *d = b->data;
	if (n_level(d) == level + 1 && n_recs(d) && !left && kcmp(t, ent(t, d, 0), key) <= 0)
		*found = ent_child(t, d, child_index(t, d, key)) == blkno;
	put(t, b);
	return 0;
}

int bt_node_info(struct bt_env *env, uint64_t blk, uint16_t *type, uint64_t *owner,
		 unsigned *level, void *key, uint64_t *txid)
{
	struct cblock *b;
	int r = cache_read(env->cache, blk, &b);
	if (r)
		return r;
	const struct vbas_node_hdr *h = b->data;
	*type = le16_get(h->tree_type);
	*owner = le64_get(h->owner);
	*level = le16_get(h->level);
	*txid = le64_get(h->txid);
	memcpy(key, (const uint8_t *)b->data + HDR, BT_MAX_KEY);
	cache_put(env->cache, b);
	return 0;
}

/* ---- Moving nodes (shrink) --------------------------------------------- */

static struct bt_moved *moved_find(struct bt_moves *mv, uint64_t old)
{
	for (size_t i = mv->n; i-- > 0;)
		if (mv->v[i].old == old)
			return &mv->v[i];
	return NULL;
}

/* Node B (pinned, taken over) as the version every holder will point at,
 * writable: itself if written in this transaction, its copy if one was
 * made, else a new copy.  *SHARED if that copy is of a shared node. */
static int move_node(struct vbas_btree *t, struct bt_moves *mv, struct cblock *b,
		     struct cblock **out, int *shared)
{
	struct bt_env *env = t->env;
	if (le64_get(nh(b->data)->txid) == env->txid) {
		cache_dirty(b);
		*out = b;
		return 0;
	}
	struct bt_moved *m = moved_find(mv, b->blkno);
	int r;
	if (m) {
		put(t, b);
		if (m->refs > 1)
			*shared = 1;
		r = cache_read(env->cache, m->copy, out);
		if (!r)
			cache_dirty(*out);
		return r;
	}
	uint32_t rc;
	uint64_t blk = b->blkno;
	r = env->refcount(env->ctx, blk, &rc);
	if (!r && rc == 0)
		r = vbas_err(-EUCLEAN, "%s tree: node %" PRIu64 " is in use but its reference count is 0",
			     t->ops->name, blk);
	if (!r && mv->n == mv->cap) {
		size_t nc = mv->cap ? 2 * mv->cap : 64;
		struct bt_moved *v = realloc(mv->v, nc * sizeof(*v));
		if (!v)
			r = -ENOMEM;
		else {
			mv->v = v;
			mv->cap = nc;
		}
	}
	struct cblock *n = NULL;
	if (!r)
		r = new_node(t, 0, n_level(b->data), &n);
	if (r) {
		put(t, b);
		return r;
	}
	uint64_t nblk = n->blkno;
	memcpy(n->data, b->data, env->block_size);
	init_node(t, n->data, nblk, n_level(b->data));
	set_nrecs(n->data, n_recs(b->data));
	nh(n->data)->owner = nh(b->data)->owner;
	put(t, b);
	/* The copy takes every reference the old node had. */
	for (uint32_t i = 1; i < rc && !r; i++)
		r = env->inc_meta(env->ctx, nblk);
	for (uint32_t i = 0; i < rc && !r; i++)
		r = env->dec_meta(env->ctx, blk);
	if (r) {
		put(t, n);
		return r;
	}
	mv->v[mv->n++] = (struct bt_moved){ .old = blk, .copy = nblk, .refs = rc };
	if (rc > 1)
		*shared = 1;
	*out = n;
	return 0;
}

/* Entry I of D pointed at C (a node of this transaction); a holder of
 * the node it pointed at before is repointed. */
static void repoint(struct vbas_btree *t, struct bt_moves *mv, void *d, unsigned i, uint64_t c)
{
	uint64_t was = ent_child(t, d, i);
	if (was == c)
		return;
	struct bt_moved *m = moved_find(mv, was);
	if (m && m->copy == c)
		m->hits++;
	set_child(t, d, i, c);
}

int bt_relocate(struct vbas_btree *t, const void *key, unsigned level, uint64_t blk,
		struct bt_moves *mv, int *found, int *shared)
{
	struct path p = { .depth = 0 };
	struct cblock *b;
	int r;
	*found = 0;
	if (!t->root)
		return 0;
	r = root_get(t, &b);
	if (r)
		return r;
	p.hi[0] = NULL;
	p.node[p.depth++] = b;
	while (n_level(b->data) > level) {
		void *d = b->data;
		unsigned i = child_index(t, d, key);
		p.idx[p.depth - 1] = i;
		r = child_get(t, d, i, p.hi[p.depth - 1], &b);
		if (r)
			goto out;
		path_set_hi(t, &p, p.depth - 1);
		p.node[p.depth++] = b;
	}
	struct bt_moved *m = moved_find(mv, blk);
	if (n_level(b->data) != level || (b->blkno != blk && !(m && b->blkno == m->copy)))
		goto out;
	*found = 1;
	/* Bottom-up: each node on the path becomes its copy, and its parent
	 * (itself made a copy next) points at it. */
	uint64_t c = 0;
	for (unsigned i = p.depth; i-- > 0;) {
		struct cblock *w;
		r = move_node(t, mv, p.node[i], &w, shared);
		p.node[i] = NULL;
		if (r)
			goto out;
		if (i + 1 == p.depth) {
			if (!level && mv->edit)
				r = mv->edit(mv->arg, t, n_owner(w->data), leaf_rec(t, w->data, 0),
					     n_recs(w->data));
		} else {
			repoint(t, mv, w->data, p.idx[i], c);
		}
		c = w->blkno;
		put(t, w);
		if (r)
			goto out;
	}
	if (t->root != c) {
		struct bt_moved *rm = moved_find(mv, t->root);
		if (rm && rm->copy == c)
			rm->hits++;
		t->root = c;
	}
	t->root_txid = t->env->txid;
out:
	for (unsigned i = 0; i < p.depth; i++)
		put(t, p.node[i]);
	return r;
}

/* ---- Insert ------------------------------------------------------------ */

int bt_insert(struct vbas_btree *t, const void *rec)
{
	struct path p = { .depth = 0 };
	struct cblock *cur, *c;
	uint8_t tmp[BT_MAX_REC];
	int r;

	if (!t->root) {
		r = new_node(t, 0, 0, &cur);
		if (r)
			return r;
		t->grown++;
		insert_item(t, cur->data, 0, rec);
		t->root = cur->blkno;
		t->root_txid = t->env->txid;
		if (t->ops->rec_owner)
			r = t->ops->rec_owner(t->val_ctx, rec, n_owner(cur->data), +1);
		put(t, cur);
		return r;
	}
	r = bt_lookup(t, rec, BT_EQ, tmp);
	if (r == 0)
		return -EEXIST;
	if (r != -ENOENT)
		return r;
	r = prepare_root(t, rec, &cur);
	if (r)
		return r;
	p.hi[0] = NULL;
	p.node[p.depth++] = cur;
	int rightmost = 1;
	while (n_level(cur->data)) {
		void *d = cur->data;
		const uint8_t *hi = p.hi[p.depth - 1];
		unsigned i = child_index(t, d, rec);
		rightmost = rightmost && i + 1 == n_recs(d);
		r = shadow_child(t, d, i, hi, &c);
		if (r)
			goto out;
		if (n_recs(c->data) >= cap(t, c->data)) {
			r = split_child(t, d, i, c, rec, rightmost);
			if (r) {
				put(t, c);
				goto out;
			}
			if (kcmp(t, rec, ent(t, d, i + 1)) >= 0) {
				put(t, c);
				i++;
				r = shadow_child(t, d, i, hi, &c);
				if (r)
					goto out;
			}
		}
		p.idx[p.depth - 1] = i;
		path_set_hi(t, &p, p.depth - 1);
		p.node[p.depth++] = c;
		cur = c;
	}
	int exact;
	unsigned pos = leaf_pos(t, cur->data, rec, &exact);
	insert_item(t, cur->data, pos, rec);
	if (t->ops->rec_owner)
		r = t->ops->rec_owner(t->val_ctx, rec, n_owner(cur->data), +1);
	fixup_path(t, &p);
out:
	path_release(t, &p);
	return r;
}

/* ---- Update ------------------------------------------------------------ */

int bt_update(struct vbas_btree *t, const void *rec)
{
	struct path p = { .depth = 0 };
	struct cblock *cur, *c;
	uint8_t tmp[BT_MAX_REC];
	int r = bt_lookup(t, rec, BT_EQ, tmp);
	if (r)
		return r;
	r = shadow_root(t, &cur);
	if (r)
		return r;
	p.hi[0] = NULL;
	p.node[p.depth++] = cur;
	while (n_level(cur->data)) {
		void *d = cur->data;
		unsigned i = child_index(t, d, rec);
		r = shadow_child(t, d, i, p.hi[p.depth - 1], &c);
		if (r)
			goto out;
		p.idx[p.depth - 1] = i;
		path_set_hi(t, &p, p.depth - 1);
		p.node[p.depth++] = c;
		cur = c;
	}
	int exact;
	unsigned pos = leaf_pos(t, cur->data, rec, &exact);
	if (!exact) {
		r = vbas_err(-EUCLEAN, "%s tree: record vanished during update", t->ops->name);
		goto out;
	}
	if (t->ops->rec_owner) {
		r = t->ops->rec_owner(t->val_ctx, leaf_rec(t, cur->data, pos), n_owner(cur->data), -1);
		if (!r)
			r = t->ops->rec_owner(t->val_ctx, rec, n_owner(cur->data), +1);
	}
	memcpy(leaf_rec(t, cur->data, pos), rec, rec_size(t));
	fixup_path(t, &p);
out:
	path_release(t, &p);
	return r;
}

/* ---- Delete ------------------------------------------------------------ */

/* Child I of P (writable, pinned in *C) is thin: merge it with a sibling
 * or even the two out.  On return *C and *I name the node that now covers
 * KEY, writable and pinned. */
/* N records of leaf FROM from the I-th move to leaf TO: if the two have
 * different owners, they leave the one and enter the other. */
static int moved_owner(struct vbas_btree *t, void *from, unsigned i, unsigned n, void *to)
{
	int r = 0;
	if (!t->ops->rec_owner || n_level(from) || n_owner(from) == n_owner(to))
		return 0;
	for (unsigned k = i; k < i + n && !r; k++) {
		r = t->ops->rec_owner(t->val_ctx, leaf_rec(t, from, k), n_owner(from), -1);
		if (!r)
			r = t->ops->rec_owner(t->val_ctx, leaf_rec(t, from, k), n_owner(to), +1);
	}
	return r;
}

static int refill_child(struct vbas_btree *t, void *p, const uint8_t *hi, unsigned *i,
			struct cblock **c, const void *key)
{
	unsigned li, ri, n = n_recs(p);
	struct cblock *l, *rt, *s;
	int r;

	if (n < 2)
		return 0;
	if (*i + 1 < n) {
		li = *i;
		ri = *i + 1;
		r = shadow_child(t, p, ri, hi, &s);
		if (r)
			return r;
		l = *c;
		rt = s;
	} else {
		li = *i - 1;
		ri = *i;
		r = shadow_child(t, p, li, hi, &s);
		if (r)
			return r;
		l = s;
		rt = *c;
	}
	unsigned nl = n_recs(l->data), nr = n_recs(rt->data), cp = cap(t, l->data);
	size_t sz = item_size(t, l->data);
	if (nl + nr <= cp) {
		/* Merge the right node into the left and drop the right. */
		r = moved_owner(t, rt->data, 0, nr, l->data);
		if (r)
			return r;
		memcpy((uint8_t *)l->data + HDR + nl * sz, (uint8_t *)rt->data + HDR, nr * sz);
		set_nrecs(l->data, nl + nr);
		set_nrecs(rt->data, 0);
		uint64_t dead = rt->blkno;
		remove_item(t, p, ri);
		set_entry_keys(t, p, li, l->data);
		put(t, rt);
		t->grown--;
		r = t->env->dec_meta(t->env->ctx, dead);
		*c = l;
		*i = li;
		return r;
	}
	/* Even them out. */
	unsigned total = nl + nr, want_l = total / 2;
	if (nl > want_l) {
		unsigned mv = nl - want_l;
		r = moved_owner(t, l->data, want_l, mv, rt->data);
		if (r)
			return r;
		memmove((uint8_t *)rt->data + HDR + mv * sz, (uint8_t *)rt->data + HDR, nr * sz);
		memcpy((uint8_t *)rt->data + HDR, (uint8_t *)l->data + HDR + want_l * sz, mv * sz);
		memset((uint8_t *)l->data + HDR + want_l * sz, 0, mv * sz);
	} else {
		unsigned mv = want_l - nl;
		r = moved_owner(t, rt->data, 0, mv, l->data);
		if (r)
			return r;
		memcpy((uint8_t *)l->data + HDR + nl * sz, (uint8_t *)rt->data + HDR, mv * sz);
		memmove((uint8_t *)rt->data + HDR, (uint8_t *)rt->data + HDR + mv * sz, (nr - mv) * sz);
		memset((uint8_t *)rt->data + HDR + (nr - mv) * sz, 0, mv * sz);
	}
	set_nrecs(l->data, want_l);
	set_nrecs(rt->data, total - want_l);
	set_entry_keys(t, p, li, l->data);
	set_entry_keys(t, p, ri, rt->data);
	if (kcmp(t, key, ent(t, p, ri)) >= 0) {
		put(t, l);
		*c = rt;
		*i = ri;
	} else {
		put(t, rt);
		*c = l;
		*i = li;
	}
	return 0;
}

/* While the root is an interior node with one child, the child becomes
 * the root; an empty leaf root leaves an empty tree. */
static int collapse_root(struct vbas_btree *t)
{
	for (;;) {
		struct cblock *b;
		int r = root_get(t, &b);
		if (r)
			return r;
		unsigned n = n_recs(b->data), lvl = n_level(b->data);
		uint64_t old = t->root, child = lvl ? ent_child(t, b->data, 0) : 0;
		uint64_t ctxid = lvl ? ent_ctxid(t, b->data, 0) : 0;
		put(t, b);
		if (lvl && n == 1) {
			t->root = child;
			t->root_txid = ctxid;
		} else if (!lvl && n == 0) {
			t->root = 0;
			t->root_txid = 0;
		} else {
			return 0;
		}
		t->grown--;
		r = t->env->dec_meta(t->env->ctx, old);
		if (r || !t->root)
			return r;
	}
}

int bt_delete(struct vbas_btree *t, const void *key, void *rec_out)
{
	struct path p = { .depth = 0 };
	struct cblock *cur, *c;
	uint8_t tmp[BT_MAX_REC];
	int r = bt_lookup(t, key, BT_EQ, tmp);
	if (r)
		return r;
	r = shadow_root(t, &cur);
	if (r)
		return r;
	p.hi[0] = NULL;
	p.node[p.depth++] = cur;
	while (n_level(cur->data)) {
		void *d = cur->data;
		const uint8_t *hi = p.hi[p.depth - 1];
		unsigned i = child_index(t, d, key);
		r = shadow_child(t, d, i, hi, &c);
		if (r)
			goto out;
		if (n_recs(c->data) <= min_fill(t, c->data)) {
			r = refill_child(t, d, hi, &i, &c, key);
			if (r) {
				put(t, c);
				goto out;
			}
		}
		p.idx[p.depth - 1] = i;
		path_set_hi(t, &p, p.depth - 1);
		p.node[p.depth++] = c;
		cur = c;
	}
	int exact;
	unsigned pos = leaf_pos(t, cur->data, key, &exact);
	if (!exact) {
		r = vbas_err(-EUCLEAN, "%s tree: record vanished during delete", t->ops->name);
		goto out;
	}
	if (rec_out)
		memcpy(rec_out, leaf_rec(t, cur->data, pos), rec_size(t));
	if (t->ops->rec_owner)
		r = t->ops->rec_owner(t->val_ctx, leaf_rec(t, cur->data, pos), n_owner(cur->data), -1);
	remove_item(t, cur->data, pos);
	fixup_path(t, &p);
out:
	path_release(t, &p);
	if (!r)
		r = collapse_root(t);
	return r;
}

/* ---- Iteration and interval query --------------------------------------- */

int bt_iter(struct vbas_btree *t, const void *start, bt_rec_cb cb, void *arg)
{
	struct path p = { .depth = 0 };
	uint8_t rec[BT_MAX_REC];
	struct cblock *b;
	int r;

	if (!t->root)
		return 0;
	r = root_get(t, &b);
	if (r)
		return r;
	p.hi[0] = NULL;
	p.node[p.depth++] = b;
	/* Descend to the first leaf that may hold a record >= START. */
	while (n_level(b->data)) {
		unsigned i = start ? child_index(t, b->data, start) : 0;
		p.idx[p.depth - 1] = i;
		r = child_get(t, b->data, i, p.hi[p.depth - 1], &b);
		if (r)
			goto out;
		path_set_hi(t, &p, p.depth - 1);
		p.node[p.depth++] = b;
	}
	unsigned pos = 0;
	if (start) {
		int exact;
		pos = leaf_pos(t, b->data, start, &exact);
	}
	for (;;) {
		void *d = p.node[p.depth - 1]->data;
		for (; pos < n_recs(d); pos++) {
			memcpy(rec, leaf_rec(t, d, pos), rec_size(t));
			r = cb(arg, rec);
			if (r)
				goto out;
		}
		/* Up to the first ancestor with a next entry, then down its
		 * leftmost path. */
		put(t, p.node[--p.depth]);
		while (p.depth && p.idx[p.depth - 1] + 1 >= n_recs(p.node[p.depth - 1]->data))
			put(t, p.node[--p.depth]);
		if (!p.depth)
			break;
		struct cblock *up = p.node[p.depth - 1];
		unsigned i = ++p.idx[p.depth - 1];
		r = child_get(t, up->data, i, p.hi[p.depth - 1], &b);
		if (r)
			goto out;
		path_set_hi(t, &p, p.depth - 1);
		p.node[p.depth++] = b;
		while (n_level(b->data)) {
			p.idx[p.depth - 1] = 0;
			r = child_get(t, b->data, 0, p.hi[p.depth - 1], &b);
			if (r)
				goto out;
			path_set_hi(t, &p, p.depth - 1);
			p.node[p.depth++] = b;
		}
		pos = 0;
	}
	r = 0;
out:
	path_release(t, &p);
	return r;
}

/* The subtree at BLK (written by TXID, at LEVEL, keys from KLO and below
 * KHI as its parent says). */
static int overlap_walk(struct vbas_btree *t, uint64_t blk, uint64_t txid, int level,
			const uint8_t *klo, const uint8_t *khi, uint64_t parent, const void *lo,
			const void *hi, bt_rec_cb cb, void *arg)
{
	struct cblock *b;
	uint8_t k[BT_MAX_KEY], rec[BT_MAX_REC], chi[BT_MAX_KEY], clo[BT_MAX_KEY];
	int r = node_get_in(t, blk, txid, level, klo, khi, parent, &b);
	if (r)
		return r;
	void *d = b->data;
	unsigned n = n_recs(d);
	for (unsigned i = 0; i < n && !r; i++) {
		if (kcmp(t, nkey(t, d, i), hi) > 0)
			break;                       /* sorted by low key */
		if (n_level(d)) {
			if (kcmp(t, ent_high(t, d, i), lo) < 0)
				continue;
			memcpy(clo, ent(t, d, i), t->ops->key_size);
			r = overlap_walk(t, ent_child(t, d, i), ent_ctxid(t, d, i), (int)n_level(d) - 1,
					 clo, child_hi(t, d, i, khi, chi), blk, lo, hi, cb, arg);
		} else {
			t->ops->high_key(leaf_rec(t, d, i), k);
			if (kcmp(t, k, lo) < 0)
				continue;
			memcpy(rec, leaf_rec(t, d, i), rec_size(t));
			r = cb(arg, rec);
		}
	}
	put(t, b);
	return r;
}

/* The private part of the subtree at BLK (as overlap_walk), from START
 * (NULL: all) on. */
static int private_walk(struct vbas_btree *t, uint64_t blk, uint64_t txid, int level,
			const uint8_t *klo, const uint8_t *khi, uint64_t parent, const void *start,
			uint64_t share_gen, bt_rec_cb cb, void *arg)
{
	struct cblock *b;
	uint8_t rec[BT_MAX_REC], chi[BT_MAX_KEY], clo[BT_MAX_KEY];
	int r;
	if (txid != t->env->txid && txid <= share_gen) {
		uint32_t rc;
		r = t->env->refcount(t->env->ctx, blk, &rc);
		if (r)
			return r;
		if (rc > 1)
			return 0;                    /* shared, and all below it */
	}
	r = node_get_in(t, blk, txid, level, klo, khi, parent, &b);
	if (r)
		return r;
	void *d = b->data;
	unsigned n = n_recs(d), i = 0;
	if (start && n_level(d))
		i = child_index(t, d, start);
	else if (start) {
		int exact;
		i = leaf_pos(t, d, start, &exact);
	}
	for (; i < n && !r; i++) {
		if (n_level(d)) {
			memcpy(clo, ent(t, d, i), t->ops->key_size);
			r = private_walk(t, ent_child(t, d, i), ent_ctxid(t, d, i), (int)n_level(d) - 1,
					 clo, child_hi(t, d, i, khi, chi), blk, start, share_gen, cb, arg);
			start = NULL;                /* the next children lie past it */
		} else {
			memcpy(rec, leaf_rec(t, d, i), rec_size(t));
			r = cb(arg, rec);
		}
	}
	put(t, b);
	return r;
}

int bt_iter_private(struct vbas_btree *t, const void *start, uint64_t share_gen, bt_rec_cb cb,
		    void *arg)
{
	if (!t->root)
		return 0;
	return private_walk(t, t->root, t->root_txid, -1, NULL, NULL, 0, start, share_gen, cb, arg);
}

int bt_query_overlap(struct vbas_btree *t, const void *lo, const void *hi,
		     bt_rec_cb cb, void *arg)
{
	if (!t->ops->overlapping)
		return vbas_err(-EINVAL, "%s tree: not a tree of intervals", t->ops->name);
	if (!t->root)
		return 0;
	return overlap_walk(t, t->root, t->root_txid, -1, NULL, NULL, 0, lo, hi, cb, arg);
}

int bt_height(struct vbas_btree *t, unsigned *height)
{
	struct cblock *b;
	if (!t->root) {
		*height = 0;
		return 0;
	}
	int r = root_get(t, &b);
	if (r)
		return r;
	*height = n_level(b->data) + 1;
	put(t, b);
	return 0;
}

static int count_below(struct vbas_btree *t, uint64_t blk, uint64_t txid, int level, uint64_t *n)
{
	struct cblock *b;
	int r = node_get(t, blk, txid, level, 0, &b);
	if (r)
		return r;
	void *d = b->data;
	unsigned lv = n_level(d), cnt = n_recs(d);
	*n += lv ? cnt : 0;
	for (unsigned i = 0; lv > 1 && i < cnt && !r; i++)
		r = count_below(t, ent_child(t, d, i), ent_ctxid(t, d, i), (int)lv - 1, n);
	put(t, b);
	return r;
}

uint64_t bt_nodes_for(const struct vbas_btree *t, uint64_t recs)
{
	uint64_t half = bt_leaf_cap(t) / 2 ? bt_leaf_cap(t) / 2 : 1;
	uint64_t ihalf = bt_int_cap(t) / 2 > 1 ? bt_int_cap(t) / 2 : 2;
	uint64_t k = recs / half + 1, n = k;
	while (k > 1) {              /* a level above: a half-full node per IHALF */
		k = (k + ihalf - 1) / ihalf;
		n += k;
	}
	return n;
}

int bt_count_nodes(struct vbas_btree *t, uint64_t *nodes)
{
	*nodes = 0;
	if (!t->root)
		return 0;
	*nodes = 1;
	return count_below(t, t->root, t->root_txid, -1, nodes);
}

/* ---- Sharing ------------------------------------------------------------ */

int bt_path_cow(struct vbas_btree *t, const void *key, uint64_t share_gen, int *shared,
		struct bt_cow *cow, int for_write)
{
	struct cblock *b, *c;
	uint8_t hib[2][BT_MAX_KEY];
	const uint8_t *hi = NULL;
	int flip = 0;
	*shared = 0;
	if (!t->root)
		return 0;
	int r = root_get(t, &b);
	if (r)
		return r;
	for (;;) {
		uint64_t blk = b->blkno;
		void *d = b->data;
		uint64_t txid = le64_get(nh(d)->txid);
		if (!*shared && txid != t->env->txid && txid <= share_gen) {
			uint32_t rc;
			r = t->env->refcount(t->env->ctx, blk, &rc);
			if (r) {
				put(t, b);
				return r;
			}
			/* Shared now, or in the last commit: a count that
			 * changed in this transaction may have been above one
			 * there, and a write must not land in place over what
			 * that commit still shows elsewhere. */
			*shared = rc > 1 || (for_write && t->env->touched &&
					     t->env->touched(t->env->ctx, blk));
		}
		unsigned lv = n_level(d);
		if (*shared) {
			if (!cow) {
				put(t, b);
				return 0;
			}
			if (cow->seen[lv] != blk) {
				cow->seen[lv] = blk;
				cow->recs += n_recs(d);
				cow->nodes++;
			}
		}
		if (lv == 0) {
			put(t, b);
			break;
		}
		unsigned i = child_index(t, d, key);
		r = child_get(t, d, i, hi, &c);
		hi = child_hi(t, d, i, hi, hib[flip ^= 1]);
		put(t, b);
		if (r)
			return r;
		b = c;
	}
	return 0;
}

int bt_path_shared(struct vbas_btree *t, const void *key, uint64_t share_gen, int *shared)
{
	return bt_path_cow(t, key, share_gen, shared, NULL, 0);
}

/* Dropping a whole tree (dm-btree's del, made resumable).  The tree is
 * never changed: a subtree is released by dropping the reference its
 * parent holds, in key order, and CURSOR records how far that has got.
 * A shared node loses one reference and is left to its other owners; a
 * node only this tree holds has its children (or record targets) released
 * first and is freed afterwards.  Shared nodes and leaves are released in
 * one go, so the cursor always lies on a boundary between children of
 * nodes this tree holds alone, and a walk from the root that skips every
 * child whose keys all lie below the cursor reads only live nodes. */
struct drop_ctx {
	struct vbas_btree *t;
	uint8_t *cursor;
	int *done;
	uint64_t budget, used;
};

/* Release the subtree at BLK (written by TXID, at LEVEL; its keys start at
 * KLO, NULL for the root, and stay below HI) from LO on. */
static int drop_node(struct drop_ctx *dc, uint64_t blk, uint64_t txid, int level, uint64_t parent,
		     const uint8_t *klo, const uint8_t *lo, const uint8_t *hi, int *complete)
{
	struct vbas_btree *t = dc->t;
	size_t ks = t->ops->key_size;
	struct cblock *b;
	uint32_t rc;
	int r;
	*complete = 0;
	r = t->env->refcount(t->env->ctx, blk, &rc);
	if (r)
		return r;
	if (rc == 0)
		return vbas_err(-EUCLEAN, "%s tree: node %" PRIu64 " is in use but its reference "
				"count is 0", t->ops->name, blk);
	if (rc > 1 && kcmp(t, lo, dc->cursor) < 0)
		return vbas_err(-EUCLEAN, "%s tree: shared node %" PRIu64 " is half released",
				t->ops->name, blk);
	if (rc == 1) {
		r = node_get_in(t, blk, txid, level, klo, hi, parent, &b);
		if (r)
			return r;
		void *d = b->data;
		unsigned n = n_recs(d);
		if (n_level(d) == 0) {
			for (unsigned i = 0; i < n && !r; i++) {
				if (t->ops->val_dec)
					r = t->ops->val_dec(t->val_ctx, leaf_rec(t, d, i));
				if (!r && t->ops->rec_owner)
					r = t->ops->rec_owner(t->val_ctx, leaf_rec(t, d, i), n_owner(d), -1);
			}
			dc->used += n;
		} else {
			for (unsigned i = 0; i < n && !r; i++) {
				const uint8_t *clo = ent(t, d, i);
				const uint8_t *chi = i + 1 < n ? ent(t, d, i + 1) : hi;
				int c;
				if (chi && kcmp(t, chi, dc->cursor) <= 0)
					continue;           /* released already */
				if (kcmp(t, clo, dc->cursor) < 0)
					clo = dc->cursor;   /* the one half done */
				r = drop_node(dc, ent_child(t, d, i), ent_ctxid(t, d, i),
					      (int)n_level(d) - 1, blk, ent(t, d, i), clo, chi, &c);
				if (!r && !c) {
					put(t, b);
					return 0;
				}
				if (!r && dc->used >= dc->budget && i + 1 < n) {
					put(t, b);
					return 0;
				}
			}
		}
		put(t, b);
		if (r)
			return r;
	}
	r = t->env->dec_meta(t->env->ctx, blk);
	if (r)
		return r;
	dc->used++;
	if (hi)
		memcpy(dc->cursor, hi, ks);
	else
		*dc->done = 1;
	*complete = 1;
	return 0;
}

int bt_drop(struct vbas_btree *t, void *cursor, uint64_t budget, int *done)
{
	struct drop_ctx dc = { .t = t, .cursor = cursor, .done = done, .budget = budget };
	uint8_t lo[BT_MAX_KEY];
	int c;
	*done = 0;
	if (!t->root) {
		*done = 1;
		return 0;
	}
	memcpy(lo, cursor, t->ops->key_size);
	return drop_node(&dc, t->root, t->root_txid, -1, 0, NULL, lo, NULL, &c);
}

/* Diff: walk two trees side by side over the key ranges their nodes
 * cover, skip every pair of identical subtrees (same block), and report
 * the key ranges left, where the records may differ.  The work grows with
 * the nodes that differ, not with the size of the trees. */
struct diff_ctx {
	struct vbas_btree *a, *b;
	bt_range_cb cb;
	void *arg;
};

/* Does [lo1, hi1) meet [lo2, hi2)?  NULL lo is -inf, NULL hi is +inf. */
static int ranges_meet(const struct vbas_btree *t, const uint8_t *lo1, const uint8_t *hi1,
		       const uint8_t *lo2, const uint8_t *hi2)
{
	if (hi1 && lo2 && kcmp(t, hi1, lo2) <= 0)
		return 0;
	if (hi2 && lo1 && kcmp(t, hi2, lo1) <= 0)
		return 0;
	return 1;
}

static const uint8_t *max_lo(const struct vbas_btree *t, const uint8_t *x, const uint8_t *y)
{
	if (!x)
		return y;
	if (!y)
		return x;
	return kcmp(t, x, y) >= 0 ? x : y;
}

static const uint8_t *min_hi(const struct vbas_btree *t, const uint8_t *x, const uint8_t *y)
{
	if (!x)
		return y;
	if (!y)
		return x;
	return kcmp(t, x, y) <= 0 ? x : y;
}

/* NA and NB: blocks (0: none) and the transactions their pointers name. */
static int diff_nodes(struct diff_ctx *dc, uint64_t na, uint64_t ta, int la, uint64_t nb,
		      uint64_t tb, int lb, const uint8_t *lo, const uint8_t *hi)
{
	struct cblock *ba = NULL, *bb = NULL;
	int r = 0;
	if (na == nb)
		return 0;
	if (na && (r = node_get(dc->a, na, ta, la, 0, &ba)))
		return r;
	if (nb && (r = node_get(dc->b, nb, tb, lb, 0, &bb))) {
		if (ba)
			put(dc->a, ba);
		return r;
	}
	unsigned lva = ba ? n_level(ba->data) : 0, lvb = bb ? n_level(bb->data) : 0;
	if (!ba || !bb || (lva == 0 && lvb == 0)) {
		r = dc->cb(dc->arg, lo, hi);
	} else if (lva >= lvb) {
		/* Split A's side by its children (both sides when level with B). */
		void *d = ba->data;
		unsigned n = n_recs(d);
		for (unsigned i = 0; i < n && !r; i++) {
			const uint8_t *clo = i ? ent(dc->a, d, i) : NULL;
			const uint8_t *chi = i + 1 < n ? ent(dc->a, d, i + 1) : NULL;
			if (!ranges_meet(dc->a, clo, chi, lo, hi))
				continue;
			const uint8_t *slo = max_lo(dc->a, clo, lo), *shi = min_hi(dc->a, chi, hi);
			if (lva > lvb) {
				r = diff_nodes(dc, ent_child(dc->a, d, i), ent_ctxid(dc->a, d, i),
					       (int)lva - 1, nb, tb, (int)lvb, slo, shi);
				continue;
			}
			void *e = bb->data;
			unsigned m = n_recs(e);
			for (unsigned j = 0; j < m && !r; j++) {
				const uint8_t *dlo = j ? ent(dc->b, e, j) : NULL;
				const uint8_t *dhi = j + 1 < m ? ent(dc->b, e, j + 1) : NULL;
				if (!ranges_meet(dc->a, dlo, dhi, slo, shi))
					continue;
				r = diff_nodes(dc, ent_child(dc->a, d, i), ent_ctxid(dc->a, d, i),
					       (int)lva - 1, ent_child(dc->b, e, j),
					       ent_ctxid(dc->b, e, j), (int)lvb - 1,
					       max_lo(dc->a, dlo, slo), min_hi(dc->a, dhi, shi));
			}
		}
	} else {
		void *e = bb->data;
		unsigned m = n_recs(e);
		for (unsigned j = 0; j < m && !r; j++) {
			const uint8_t *dlo = j ? ent(dc->b, e, j) : NULL;
			const uint8_t *dhi = j + 1 < m ? ent(dc->b, e, j + 1) : NULL;
			if (!ranges_meet(dc->b, dlo, dhi, lo, hi))
				continue;
			r = diff_nodes(dc, na, ta, (int)lva, ent_child(dc->b, e, j),
				       ent_ctxid(dc->b, e, j), (int)lvb - 1,
				       max_lo(dc->b, dlo, lo), min_hi(dc->b, dhi, hi));
		}
	}
	if (ba)
		put(dc->a, ba);
	if (bb)
		put(dc->b, bb);
	return r;
}

int bt_diff(struct vbas_btree *a, struct vbas_btree *b, bt_range_cb cb, void *arg)
{
	struct diff_ctx dc = { a, b, cb, arg };
	return diff_nodes(&dc, a->root, a->root_txid, -1, b->root, b->root_txid, -1, NULL, NULL);
}

/* ---- Check ------------------------------------------------------------- */

struct check_ctx {
	struct vbas_btree *t;
	const struct bt_check_cbs *cbs;
	uint64_t nodes, recs, problems;
	uint8_t prev[BT_MAX_KEY];      /* last leaf key seen, for global order */
	int have_prev;
};

#define REPORT(cx, ...) do { (cx)->problems++; (cx)->cbs->report((cx)->cbs->arg, __VA_ARGS__); } while (0)

/* The smallest key and largest high key of the subtree at B, from its own
 * entries, and its last record key (for the order of the leaves that
 * follow), for a subtree checked through another reference. */
static int subtree_keys(struct check_ctx *cx, struct cblock *b, uint8_t *min, uint8_t *high,
			int *ok)
{
	struct vbas_btree *t = cx->t;
	void *d = b->data;
	unsigned n = n_recs(d);
	*ok = n > 0;
	if (!n)
		return 0;
	memcpy(min, nkey(t, d, 0), t->ops->key_size);
	if (t->ops->overlapping) {
		uint8_t k[BT_MAX_KEY];
		for (unsigned i = 0; i < n; i++) {
			if (n_level(d))
				memcpy(k, ent_high(t, d, i), t->ops->key_size);
			else
				t->ops->high_key(leaf_rec(t, d, i), k);
			if (i == 0 || kcmp(t, k, high) > 0)
				memcpy(high, k, t->ops->key_size);
		}
	}
	/* Down the right edge to the last record. */
	struct cblock *c = NULL;
	while (n_level(d)) {
		uint64_t child = ent_child(t, d, n_recs(d) - 1);
		uint64_t ctxid = ent_ctxid(t, d, n_recs(d) - 1);
		int level = (int)n_level(d) - 1;
		uint64_t par = c ? c->blkno : b->blkno;
		if (c)
			put(t, c);
		c = NULL;
		int r = node_get(t, child, ctxid, level, par, &c);
		if (r) {
			REPORT(cx, "%s", vbas_errmsg());
			cx->have_prev = 0;
			return 0;
		}
		d = c->data;
		if (!n_recs(d)) {
			put(t, c);
			cx->have_prev = 0;
			return 0;
		}
	}
	memcpy(cx->prev, leaf_rec(t, d, n_recs(d) - 1), t->ops->key_size);
	cx->have_prev = 1;
	if (c)
		put(t, c);
	return 0;
}

/* Walk the subtree at BLK; on return MIN and HIGH hold its smallest key and
 * largest high key, and *OK says whether they could be worked out.
 * Returns non-zero only when the walk cannot go on. */
static int check_node(struct check_ctx *cx, uint64_t blk, uint64_t txid, int level,
		      uint64_t parent, int is_root, const uint8_t *klo, const uint8_t *khi,
		      uint8_t *min, uint8_t *high, int *ok)
{
	struct vbas_btree *t = cx->t;
	struct cblock *b;
	char kb1[64], kb2[64], why[160];
	uint8_t cmin[BT_MAX_KEY], chigh[BT_MAX_KEY], k[BT_MAX_KEY], hib[BT_MAX_KEY];
	int r = node_get(t, blk, txid, level, parent, &b), cok;
	*ok = 0;
	if (r) {
		REPORT(cx, "%s", vbas_errmsg());
		if (cx->cbs->bad_node)
			return cx->cbs->bad_node(cx->cbs->arg, blk, txid, level, klo, khi);
		return 0;
	}
	*ok = n_recs(b->data) > 0;
	cx->nodes++;
	if (cx->cbs->node_cb) {
		r = cx->cbs->node_cb(cx->cbs->arg, blk, n_level(b->data));
		if (r == BT_CHECK_SEEN) {
			/* Checked through another reference: take its keys as
			 * they stand (they were verified then). */
			r = subtree_keys(cx, b, min, high, ok);
			put(t, b);
			return r;
		}
		if (r) {
			put(t, b);
			return r;
		}
	}
	void *d = b->data;
	unsigned n = n_recs(d);
	if (!is_root && n == 0)
		REPORT(cx, "%s tree: node %" PRIu64 " is empty", t->ops->name, blk);
	if (!n_level(d) && cx->cbs->leaf_cb) {
		r = cx->cbs->leaf_cb(cx->cbs->arg, blk, n_owner(d));
		if (r) {
			put(t, b);
			return r;
		}
	}
	for (unsigned i = 0; i < n; i++) {
		if (i > 0 && kcmp(t, nkey(t, d, i - 1), nkey(t, d, i)) >= 0) {
			fmt_key(t, nkey(t, d, i - 1), kb1, sizeof(kb1));
			fmt_key(t, nkey(t, d, i), kb2, sizeof(kb2));
			REPORT(cx, "%s tree: node %" PRIu64 " entries %u and %u out of order (%s, %s)",
			       t->ops->name, blk, i - 1, i, kb1, kb2);
		}
		if (n_level(d) && cx->cbs->from && i + 1 < n &&
		    kcmp(t, ent(t, d, i + 1), cx->cbs->from) <= 0) {
			/* Released by a drop in progress: not there any more. */
			memcpy(k, t->ops->overlapping ? ent_high(t, d, i) : ent(t, d, i),
			       t->ops->key_size);
			if (i == 0)
				memcpy(min, ent(t, d, 0), t->ops->key_size);
			if (t->ops->overlapping && (i == 0 || kcmp(t, k, high) > 0))
				memcpy(high, k, t->ops->key_size);
			cx->have_prev = 0;
			continue;
		}
		if (n_level(d)) {
			r = check_node(cx, ent_child(t, d, i), ent_ctxid(t, d, i), (int)n_level(d) - 1,
				       blk, 0, ent(t, d, i), child_hi(t, d, i, khi, hib), cmin, chigh,
				       &cok);
			if (r)
				break;
			if (!cok) {
				/* Reported below; go on from the entry's own keys. */
				memcpy(cmin, ent(t, d, i), t->ops->key_size);
				memcpy(chigh, t->ops->overlapping ? ent_high(t, d, i) : ent(t, d, i),
				       t->ops->key_size);
			}
			if (kcmp(t, cmin, ent(t, d, i)) != 0) {
				fmt_key(t, ent(t, d, i), kb1, sizeof(kb1));
				fmt_key(t, cmin, kb2, sizeof(kb2));
				REPORT(cx, "%s tree: node %" PRIu64 " entry %u low key %s, but child %"
				       PRIu64 " starts at %s", t->ops->name, blk, i, kb1,
				       ent_child(t, d, i), kb2);
			}
			if (t->ops->overlapping && kcmp(t, chigh, ent_high(t, d, i)) != 0) {
				fmt_key(t, ent_high(t, d, i), kb1, sizeof(kb1));
				fmt_key(t, chigh, kb2, sizeof(kb2));
				REPORT(cx, "%s tree: node %" PRIu64 " entry %u high key %s, but child %"
				       PRIu64 " reaches %s", t->ops->name, blk, i, kb1,
				       ent_child(t, d, i), kb2);
			}
			memcpy(k, t->ops->overlapping ? chigh : cmin, t->ops->key_size);
		} else {
			const uint8_t *rec = leaf_rec(t, d, i);
			cx->recs++;
			if (cx->have_prev && kcmp(t, cx->prev, rec) >= 0) {
				fmt_key(t, rec, kb1, sizeof(kb1));
				REPORT(cx, "%s tree: leaf %" PRIu64 " record %u (%s) is not above the "
				       "previous leaf's records", t->ops->name, blk, i, kb1);
			}
			memcpy(cx->prev, rec, t->ops->key_size);
			cx->have_prev = 1;
			if (t->ops->check_rec && t->ops->check_rec(t->env, rec, why, sizeof(why))) {
				fmt_key(t, rec, kb1, sizeof(kb1));
				REPORT(cx, "%s tree: leaf %" PRIu64 " record %u (%s): %s",
				       t->ops->name, blk, i, kb1, why);
			}
			if (cx->cbs->rec_cb) {
				r = cx->cbs->rec_cb(cx->cbs->arg, rec);
				if (r)
					break;
			}
			if (t->ops->overlapping)
				t->ops->high_key(rec, k);
		}
		if (i == 0)
			memcpy(min, n_level(d) ? cmin : leaf_rec(t, d, 0), t->ops->key_size);
		if (t->ops->overlapping && (i == 0 || kcmp(t, k, high) > 0))
			memcpy(high, k, t->ops->key_size);
	}
	put(t, b);
	if (!r && cx->cbs->node_done)
		r = cx->cbs->node_done(cx->cbs->arg, blk);
	return r;
}

int bt_check(struct vbas_btree *t, const struct bt_check_cbs *cbs,
	     uint64_t *nodes, uint64_t *recs)
{
	struct check_ctx cx = { .t = t, .cbs = cbs };
	uint8_t min[BT_MAX_KEY], high[BT_MAX_KEY];
	int r = 0, ok;
	if (t->root)
		r = check_node(&cx, t->root, t->root_txid, -1, 0, 1, NULL, NULL, min, high, &ok);
	if (nodes)
		*nodes += cx.nodes;
	if (recs)
		*recs += cx.recs;
	if (r < 0)
		return r;
	return cx.problems ? -EUCLEAN : 0;
}

/* ---- u64 keys ---------------------------------------------------------- */

int bt_cmp_u64(const void *a, const void *b)
{
	uint64_t x = ld_le64(a), y = ld_le64(b);
	return x < y ? -1 : x > y;
}

void bt_fmt_u64(const void *key, char *buf, size_t len)
{
	snprintf(buf, len, "%" PRIu64, ld_le64(key));
}
