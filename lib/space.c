/* Space management: reference counts of every block, the allocator, and
 * the rules that make free space safe to reuse.
 *
 * The refcount tree holds one record per maximal run of blocks with the
 * same count and type (data or metadata); a block with no record is free.
 * Invariants (numbered; check.c and the asserts below refer to them):
 *
 *  S1. Every block from VBAS_FIRST_BLOCK on is in exactly one of: a
 *      refcount record, PENDING (allocated, not yet recorded), FREED
 *      (dropped to zero in the running transaction), or free.
 *  S2. A block in FREED is referenced by the last commit and is not handed
 *      out before the next commit is durable; space_committed() empties
 *      FREED after the superblock is on disk.  A commit in flight (txn.c)
 *      has its own FREED, FREED_PREV, sealed with it: the running
 *      transaction hands out neither, and counts changed in either
 *      TOUCHED or TOUCHED_PREV are not overwritten in place.
 *  S3. The allocator hands out only blocks that are free in the tree and
 *      in neither PENDING nor FREED, so a block written before the commit
 *      that maps it is never one the last commit still uses.
 *  S4. Records are maximal: two adjacent records differ in count or type.
 *  S5. data_used and meta_used equal the lengths of the records of each
 *      type; after a drain the queue is empty.
 *  S6. While a pin is held (space_pin: another process reads the pool file
 *      as of a commit, vbas check of a served pool), every block a commit
 *      frees goes to KEPT instead of back to the allocator, and comes back
 *      when the last pin goes.  So no block used by any commit made since
 *      the first pin is written until then: a reader that opened the newest
 *      commit at or after the pin reads it whole.  KEPT lives in memory
 *      only (a restart ends every pin); room for it is taken before the
 *      superblock is written (space_precommit), so the commit cannot fail
 *      after it.
 *
 * The space map needs space: changing the refcount tree shadows its nodes,
 * which allocates blocks and frees others, which changes reference counts.
 * We take dm persistent-data's way through: every count change is queued,
 * and space_drain() applies the queue to the tree until it is empty.
 * Applying one change may queue a few more (the nodes the tree change
 * shadowed); they land on nodes already shadowed in this transaction, so
 * the loop ends in a few rounds.  Allocations are visible at once through
 * PENDING, so nothing is handed out twice while its record is queued.
 */
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REC_LEN 0xffffffffu

/* ---- The refcount tree ------------------------------------------------ */

struct refc_irec {
	uint64_t start;
	uint32_t len, rc, type;
};

static void refc_to_irec(const void *rec, struct refc_irec *ir)
{
	const struct vbas_refc_rec *r = rec;
	ir->start = le64_get(r->k.pblk);
	ir->len = le32_get(r->v.len);
	ir->rc = le32_get(r->v.refcount);
	ir->type = le32_get(r->v.type);
}

static void refc_from_irec(const struct refc_irec *ir, struct vbas_refc_rec *r)
{
	memset(r, 0, sizeof(*r));
	r->k.pblk = le64_mk(ir->start);
	r->v.len = le32_mk(ir->len);
	r->v.refcount = le32_mk(ir->rc);
	r->v.type = le32_mk(ir->type);
}

static int refc_check_rec(const struct bt_env *env, const void *rec, char *why, size_t len)
{
	struct refc_irec r;
	refc_to_irec(rec, &r);
	if (r.len == 0)
		return snprintf(why, len, "zero length"), -EUCLEAN;
	if (r.start < VBAS_FIRST_BLOCK || r.start >= env->nblocks || r.len > env->nblocks - r.start)
		return snprintf(why, len, "blocks %" PRIu64 "+%u outside the pool (%" PRIu64
				" blocks)", r.start, r.len, env->nblocks), -EUCLEAN;
	if (r.rc == 0)
		return snprintf(why, len, "reference count 0"), -EUCLEAN;
	if (r.type != VBAS_BT_DATA && r.type != VBAS_BT_META)
		return snprintf(why, len, "unknown block type %u", r.type), -EUCLEAN;
	return 0;
}

static void refc_end_key(const void *rec, void *key)
{
	const struct vbas_refc_rec *r = rec;
	st_le64(key, le64_get(r->k.pblk) + le32_get(r->v.len));
}

const struct vbas_btree_ops refc_ops = {
	.name = "refcount",
	.tree_type = VBAS_TREE_REFC,
	.key_size = sizeof(struct vbas_refc_key),
	.val_size = sizeof(struct vbas_refc_val),
	.cmp = bt_cmp_u64,
	.check_rec = refc_check_rec,
	.end_key = refc_end_key,
	.fmt_key = bt_fmt_u64,
};

static int refc_get(struct vbas_pool *p, uint64_t key, enum bt_lookup_mode mode,
		    struct refc_irec *ir)
{
	struct vbas_refc_rec r;
	uint8_t k[8];
	st_le64(k, key);
	int e = bt_lookup(&p->sp.refc, k, mode, &r);
	if (!e)
		refc_to_irec(&r, ir);
	return e;
}

static int refc_put(struct vbas_pool *p, const struct refc_irec *ir)
{
	struct vbas_refc_rec r;
	refc_from_irec(ir, &r);
	return bt_insert(&p->sp.refc, &r);
}

static int refc_del(struct vbas_pool *p, uint64_t start)
{
	uint8_t k[8];
	st_le64(k, start);
	return bt_delete(&p->sp.refc, k, NULL);
}

static const char *type_name(int type)
{
	return type == VBAS_BT_DATA ? "data" : type == VBAS_BT_META ? "metadata" : "unknown";
}

/* ---- Environment callbacks for the trees ------------------------------- */

static int env_alloc_meta(void *ctx, uint64_t hint, uint64_t *blkno)
{
	struct vbas_pool *p = ctx;
	uint64_t got;
	(void)hint;
	int r = space_alloc(p, p->sp.meta_rover, 1, VBAS_BT_META, 1, blkno, &got);
	if (r)
		return r;
	p->sp.meta_rover = *blkno + 1;
	p->sp.meta_allocs_txn++;
	/* Charge the running change's reservation, which holds room for its
	 * metadata: what it holds then stays what is really free for it. */
	struct vbas_resv *rv = p->sp.op_resv;
	if (rv && rv->left) {
		rv->left--;
		p->sp.reserved--;
	} else if (space_avail(p) < p->sp.reserved) {
		/* Beyond what the change held, and beyond the metadata reserve:
		 * out of room promised to reservations.  Counted (a bound was
		 * wrong), for the tests and vbas_resv_stats. */
		p->sp.overdrawn++;
	}
	return space_queue(p, *blkno, 1, +1, VBAS_BT_META, 1);
}

static int env_dec_meta(void *ctx, uint64_t blkno)
{
	return space_queue(ctx, blkno, 1, -1, VBAS_BT_META, 0);
}

static int env_inc_meta(void *ctx, uint64_t blkno)
{
	return space_queue(ctx, blkno, 1, +1, VBAS_BT_META, 0);
}

static int env_touched(void *ctx, uint64_t blkno)
{
	uint64_t run;
	return space_touched(ctx, blkno, 1, &run);
}

int space_touched(struct vbas_pool *p, uint64_t blk, uint64_t max, uint64_t *run)
{
	const struct ext *e = extset_first_overlap(&p->sp.touched, blk, blk + max);
	const struct ext *e2 = p->sp.touched_prev.n ?
		extset_first_overlap(&p->sp.touched_prev, blk, blk + max) : NULL;
	if (!e || (e2 && e2->start < e->start))
		e = e2;
	if (e && e->start <= blk) {
		uint64_t end = e->start + e->len;
		*run = end - blk < max ? end - blk : max;
		return 1;
	}
	*run = e ? e->start - blk : max;
	return 0;
}

int extset_add_new(struct extset *s, uint64_t start, uint64_t len)
{
	uint64_t cur = start, end = start + len;
	while (cur < end) {
		const struct ext *e = extset_first_overlap(s, cur, end);
		uint64_t gap_end = e ? (e->start > cur ? e->start : cur) : end;
		uint64_t next = e ? e->start + e->len : end;
		if (gap_end > cur) {
			int r = extset_add(s, cur, gap_end - cur);
			if (r)
				return r;
		}
		cur = next > gap_end ? next : gap_end;
	}
	return 0;
}

/* Add [start, start+len) to TOUCHED, where it is not already. */
static int touch(struct vbas_space *sp, uint64_t start, uint64_t len)
{
	return extset_add_new(&sp->touched, start, len);
}

int space_mark_touched(struct vbas_pool *p, uint64_t start, uint64_t len)
{
	return touch(&p->sp, start, len);
}

static int env_mark_touched(void *ctx, uint64_t blkno, uint64_t len)
{
	return space_mark_touched(ctx, blkno, len);
}

static int env_refcount(void *ctx, uint64_t blkno, uint32_t *rc)
{
	int type;
	return space_refcount(ctx, blkno, rc, &type);
}

int space_load(struct vbas_pool *p)
{
	struct vbas_space *sp = &p->sp;
	p->env.alloc_meta = env_alloc_meta;
	p->env.dec_meta = env_dec_meta;
	p->env.inc_meta = env_inc_meta;
	p->env.refcount = env_refcount;
	p->env.touched = env_touched;
	p->env.mark_touched = env_mark_touched;
	p->env.ctx = p;
	sp->refc.ops = &refc_ops;
	sp->refc.env = &p->env;
	sp->refc.owner = VBAS_OWNER_REFC;
	sp->refc.root = le64_get(p->sb.refc_root);
	sp->refc.root_txid = le64_get(p->sb.refc_root_txid);
	sp->rmap.ops = &rmap_ops;
	sp->rmap.env = &p->env;
	sp->rmap.owner = VBAS_OWNER_RMAP;
	sp->rmap.val_ctx = p;
	sp->rmap_on = !!(le32_get(p->sb.flags) & VBAS_SBF_RMAP);
	sp->rmap.root = le64_get(p->sb.rmap_root);
	sp->rmap.root_txid = le64_get(p->sb.rmap_root_txid);
	sp->data_used = le64_get(p->sb.data_used);
	sp->meta_used = le64_get(p->sb.meta_used);
	uint64_t usable = p->nblocks - VBAS_FIRST_BLOCK;
	sp->meta_rover = VBAS_FIRST_BLOCK;
	sp->data_rover = VBAS_FIRST_BLOCK + usable / 32;
	int r = bt_count_nodes(&sp->refc, &sp->refc_nodes);
	if (!r)
		r = bt_count_nodes(&sp->rmap, &sp->rmap_nodes);
	if (r && p->repair_mode) {
		/* Damage vbas_repair is there to mend: counted again then. */
		sp->refc_nodes = sp->rmap_nodes = 0;
		vbas_err_clear();
		r = 0;
	}
	if (r)
		return r;
	space_size_reserve(p);
	return 0;
}

/* Blocks one transaction's refcount churn may take over a refcount tree of
 * NODES committed nodes.  Every node a commit shadows gives its old block
 * a -1 and its new one a +1 in the refcount tree, whose leaves are shadowed
 * in turn and whose records split: at most every committed node of the
 * refcount tree once, and the splits the new records make.  With leaves at
 * least a quarter full (Q records), k changes make at most 2k records and
 * so 2k/Q splits: the whole is at most Q/(Q-2) times the nodes shadowed
 * (Q is taken as at least 3). */
static uint64_t churn_of(struct vbas_pool *p, uint64_t nodes)
{
	uint64_t q = bt_leaf_cap(&p->sp.refc) / 4;
	if (q < 3)
		q = 3;
	return nodes * q / (q - 2) + 8;
}

uint64_t space_cascade(struct vbas_pool *p)
{
	return churn_of(p, p->sp.refc_nodes);
}

/* Reverse-map records one change of the mapping tree makes or drops: an
 * extent's old record out, the pieces left of it and the new one in. */
#define RMAP_RECS_PER_RUN 4u

static unsigned rmap_levels(struct vbas_pool *p);
static uint64_t recs_meta(struct vbas_btree *t, uint64_t nodes, unsigned levels, uint64_t k);

void space_size_reserve(struct vbas_pool *p)
{
	uint64_t usable = p->nblocks - VBAS_FIRST_BLOCK;
	uint64_t r = usable / 128;
	if (r < 64)
		r = 64;
	if (r > 65536)
		r = 65536;
	/* Half of it (what deletes may use beyond what growing changes may)
	 * covers a delete step and the refcount tree's churn in one commit:
	 * this one's (the tree as last committed) or the next one's (the tree
	 * as it is now, grown by this transaction's splits). */
	uint64_t nodes = p->sp.refc_nodes;
	if (p->sp.refc.grown > 0)
		nodes += (uint64_t)p->sp.refc.grown;
	uint64_t churn = 2 * (churn_of(p, nodes) + 32);
	/* And the reverse map's part of the smallest discard or delete step
	 * (a delete step takes fewer records when room is short). */
	unsigned hq = rmap_levels(p);
	if (hq)
		churn += 2 * recs_meta(&p->sp.rmap, p->sp.rmap_nodes, hq, 2 * RMAP_RECS_PER_RUN);
	if (r < churn)
		r = churn;
	if (r > usable / 4)
		r = usable / 4;
	p->sp.meta_reserve = r;
}

void space_free(struct vbas_pool *p)
{
	extset_free(&p->sp.pending);
	extset_free(&p->sp.freed);
	extset_free(&p->sp.freed_data);
	extset_free(&p->sp.touched);
	extset_free(&p->sp.freed_prev);
	extset_free(&p->sp.freed_data_prev);
	extset_free(&p->sp.touched_prev);
	extset_free(&p->sp.kept);
	extset_free(&p->sp.exclude);
	free(p->sp.q);
	p->sp.q = NULL;
	rmap_set_free(&p->sp.rq);
}

/* The end of what may be handed out: the pool's, or a shrink's target. */
static uint64_t alloc_end(const struct vbas_pool *p)
{
	return p->sp.limit ? p->sp.limit : p->nblocks;
}

/* Blocks of [S, S+N) at or past the shrink's target. */
static uint64_t past_limit(const struct vbas_pool *p, uint64_t s, uint64_t n)
{
	uint64_t l = p->sp.limit;
	if (!l || s + n <= l)
		return 0;
	return s >= l ? n : s + n - l;
}

/* Blocks that can be handed out now.  While a shrink runs, blocks past
 * its target are neither usable nor busy (those allocated before it began
 * and not yet counted are taken as busy below it: the figure errs low). */
uint64_t space_avail(struct vbas_pool *p)
{
	struct vbas_space *sp = &p->sp;
	uint64_t busy = sp->data_used + sp->meta_used + sp->pending.total + space_freed_total(p) +
			sp->kept.total;
	uint64_t usable = alloc_end(p) - VBAS_FIRST_BLOCK;
	if (sp->limit) {
		uint64_t above = (uint64_t)sp->used_above + sp->freed_above + sp->freed_above_prev +
				 sp->kept_above;
		busy = busy > above ? busy - above : 0;
	}
	return busy >= usable ? 0 : usable - busy;
}

static uint64_t set_above(const struct vbas_pool *p, const struct extset *s)
{
	uint64_t n = 0;
	for (size_t i = 0; i < s->n; i++)
		n += past_limit(p, s->v[i].start, s->v[i].len);
	return n;
}

struct above_scan {
	struct vbas_pool *p;
	uint64_t n;
};

static int above_cb(void *arg, const void *rec)
{
	struct above_scan *a = arg;
	struct refc_irec ir;
	refc_to_irec(rec, &ir);
	a->n += past_limit(a->p, ir.start, ir.len);
	return 0;
}

int space_set_limit(struct vbas_pool *p, uint64_t limit)
{
	struct vbas_space *sp = &p->sp;
	sp->limit = limit;
	sp->used_above = 0;
	sp->freed_above = sp->freed_above_prev = sp->kept_above = 0;
	if (!limit)
		return 0;
	struct above_scan a = { p, 0 };
	struct refc_irec ir;
	uint8_t k[8];
	int r = refc_get(p, limit, BT_LE, &ir);
	if (r && r != -ENOENT)
		goto fail;
	st_le64(k, !r ? ir.start : limit);
	r = bt_iter(&sp->refc, k, above_cb, &a);
	if (r < 0)
		goto fail;
	sp->used_above = (int64_t)a.n;
	sp->freed_above = set_above(p, &sp->freed);
	sp->freed_above_prev = set_above(p, &sp->freed_prev);
	sp->kept_above = set_above(p, &sp->kept);
	return 0;
fail:
	sp->limit = 0;
	return r;
}

struct runs_walk {
	int (*cb)(void *, uint64_t, uint64_t, uint32_t, int);
	void *arg;
};

static int runs_cb(void *arg, const void *rec)
{
	struct runs_walk *w = arg;
	struct refc_irec ir;
	refc_to_irec(rec, &ir);
	return w->cb(w->arg, ir.start, ir.len, ir.rc, ir.type);
}

int space_runs(struct vbas_pool *p, int (*cb)(void *, uint64_t, uint64_t, uint32_t, int),
	       void *arg)
{
	struct runs_walk w = { cb, arg };
	return bt_iter(&p->sp.refc, NULL, runs_cb, &w);
}

int space_next_used(struct vbas_pool *p, uint64_t from, uint64_t *start, uint64_t *len,
		    int *type)
{
	struct refc_irec ir;
	int r = refc_get(p, from, BT_LE, &ir);
	if (r && r != -ENOENT)
		return r;
	if (r || ir.start + ir.len <= from) {
		r = refc_get(p, from, BT_GE, &ir);
		if (r)
			return r;
	}
	*start = ir.start;
	*len = ir.len;
	*type = ir.type;
	return 0;
}

/* Levels of the reverse map a change may touch: its height and one more
 * for a root split; 0 if the pool keeps none (9 if its root cannot be
 * read). */
static unsigned rmap_levels(struct vbas_pool *p)
{
	unsigned hq = 0;
	if (!p->sp.rmap_on)
		return 0;
	if (bt_height(&p->sp.rmap, &hq))
		hq = 8;
	return hq + 1;
}

/* The room one change takes on paths, but for the reverse map; HM is
 * the mapping tree's height. */
static uint64_t op_meta_fwd(struct vbas_pool *p, unsigned hm)
{
	unsigned hr = 0;
	if (bt_height(&p->sp.refc, &hr))
		return 64;
	/* Each tree's path shadowed, a split at every level, and the
	 * refcount tree changed for a few records: generous. */
	return 2 * (2 * hm + 3 * hr + names_voltab_levels(p) + 3);
}


/* space_op_meta for a mapping tree of HM levels. */
static uint64_t op_meta_h(struct vbas_pool *p, unsigned hm)
{
	unsigned hq = rmap_levels(p);
	return op_meta_fwd(p, hm) +
	       (hq ? recs_meta(&p->sp.rmap, p->sp.rmap_nodes, hq, RMAP_RECS_PER_RUN) : 0);
}

uint64_t space_op_meta(struct vbas_pool *p, struct vbas_btree *map)
{
	unsigned hm = 0;
	if (map && bt_height(map, &hm))
		return 64;
	return op_meta_h(p, hm);
}

/* space_write_meta for a mapping tree of HM levels and leaves of MCAP. */
static uint64_t write_meta_h(struct vbas_pool *p, unsigned hm, unsigned mcap, uint64_t runs,
			     uint64_t blocks, uint64_t cow_recs)
{
	unsigned hr = 0;
	if (!runs && !blocks)
		return 0;
	if (bt_height(&p->sp.refc, &hr))
		hm = hr = 8;
	/* Free space may be in pieces: up to one extent, and one refcount
	 * record, per block, and every half leaf of new records splits a
	 * leaf and maybe every level above it. */
	uint64_t hmap = mcap / 2, href = bt_leaf_cap(&p->sp.refc) / 2;
	uint64_t splits = (2 * blocks / (hmap ? hmap : 1) + 1) * (hm + 1) +
			  (2 * blocks / (href ? href : 1) + 1) * (hr + 1);
	/* The reverse map: the records of each run, and one per new extent
	 * (a block each, at worst); their paths are shadowed once a
	 * transaction, so no more than the tree's nodes. */
	unsigned hq = rmap_levels(p);
	uint64_t rm = hq ? recs_meta(&p->sp.rmap, p->sp.rmap_nodes, hq,
				     RMAP_RECS_PER_RUN * runs + blocks) : 0;
	return runs * op_meta_fwd(p, hm) + rm + splits + space_cow_meta(p, cow_recs);
}

uint64_t space_write_meta(struct vbas_pool *p, struct vbas_btree *map, uint64_t runs,
			  uint64_t blocks, uint64_t cow_recs)
{
	unsigned hm = 0;
	if (bt_height(map, &hm))
		hm = 8;
	return write_meta_h(p, hm, bt_leaf_cap(map), runs, blocks, cow_recs);
}

/* Levels of the refcount tree a change may touch: its height, and one
 * more for a root split (9 if the root cannot be read). */
static unsigned refc_levels(struct vbas_pool *p)
{
	unsigned hr = 0;
	if (bt_height(&p->sp.refc, &hr))
		hr = 8;
	return hr + 1;
}

/* Nodes that inserting RECS records can add to a tree of LEVELS levels
 * (leaves of LCAP records, interior nodes of ICAP): a split leaves two
 * nodes at least half full, so a level splits once per half node of
 * records it receives, and once more for a node that was full already;
 * each split is one record for the level above; and a new root. */
static uint64_t insert_growth(uint64_t recs, unsigned lcap, unsigned icap, unsigned levels)
{
	uint64_t total = 1, r = recs;
	for (unsigned l = 0; l < levels && r; l++) {
		uint64_t half = (l ? icap : lcap) / 2;
		r = r / (half ? half : 1) + 1;
		total += r;
	}
	return total;
}

/* Levels of a tree with leaves of LCAP and interior nodes of ICAP that
 * holds RECS records with every node a quarter full (btree.c's least
 * fill, but for the root). */
static unsigned levels_for(uint64_t recs, unsigned lcap, unsigned icap)
{
	uint64_t q = lcap / 4 ? lcap / 4 : 1, qi = icap / 4 > 1 ? icap / 4 : 2;
	unsigned l = 1;
	for (uint64_t nodes = recs / q + 1; nodes > 1 && l < 64; nodes = nodes / qi + 1)
		l++;
	return l;
}

unsigned space_map_levels(struct vbas_pool *p)
{
	struct vbas_btree m = { .ops = &map_ops, .env = &p->env };
	return levels_for(p->nblocks, bt_leaf_cap(&m), bt_int_cap(&m));
}

uint64_t space_resv_step(struct vbas_pool *p, unsigned hm)
{
	struct vbas_btree m = { .ops = &map_ops, .env = &p->env };
	return write_meta_h(p, hm, bt_leaf_cap(&m), 1, 1, 0);
}

uint64_t space_resv_growth(struct vbas_pool *p, unsigned hm, uint64_t n)
{
	if (!n)
		return 0;
	struct vbas_btree m = { .ops = &map_ops, .env = &p->env };
	/* A block written is at most one new extent, and two refcount
	 * records: its own, and one a copy on write splits off; and two
	 * reverse-map records (the new extent, and the second piece of the
	 * extent it cuts). */
	uint64_t g = insert_growth(n, bt_leaf_cap(&m), bt_int_cap(&m), hm + 1) +
		     insert_growth(2 * n, bt_leaf_cap(&p->sp.refc), bt_int_cap(&p->sp.refc),
				   refc_levels(p));
	unsigned hq = rmap_levels(p);
	if (hq)
		g += insert_growth(2 * n, bt_leaf_cap(&p->sp.rmap), bt_int_cap(&p->sp.rmap), hq);
	return g;
}

/* Blocks that changing K records of tree T (NODES nodes at the last
 * commit, LEVELS levels with a root split) may take: each change shadows
 * at most a path, but no more nodes than the tree had at the last commit
 * (each is shadowed once a transaction; those added since are this
 * transaction's already); each adds at most two records, and every half
 * leaf's worth of records splits a leaf, maybe every level above.  The
 * blocks those take are counted too (queued +1s, mostly merged into
 * runs): an eighth more. */
static uint64_t recs_meta(struct vbas_btree *t, uint64_t nodes, unsigned levels, uint64_t k)
{
	uint64_t shadow = k * levels;
	uint64_t tree = nodes + 2 * levels;
	if (shadow > tree)
		shadow = tree;
	uint64_t half = bt_leaf_cap(t) / 2;
	uint64_t splits = (2 * k / (half ? half : 1) + 1) * levels;
	uint64_t n = shadow + splits;
	return n + n / 8 + 1;
}

uint64_t space_cow_meta(struct vbas_pool *p, uint64_t cow_recs)
{
	if (!cow_recs)
		return 0;
	/* Each record copied (or released) changes a refcount record and,
	 * with a reverse map, one of its records. */
	uint64_t n = recs_meta(&p->sp.refc, p->sp.refc_nodes, refc_levels(p), cow_recs);
	unsigned hq = rmap_levels(p);
	if (hq)
		n += recs_meta(&p->sp.rmap, p->sp.rmap_nodes, hq, cow_recs);
	return n;
}

uint64_t space_range_meta(struct vbas_pool *p, uint64_t n)
{
	if (!n)
		return 0;
	unsigned hr = refc_levels(p);
	/* N blocks lie in at most N records; a leaf other than the root
	 * holds at least a quarter of its capacity after a delete (btree.c
	 * min_fill), so they span at most N / that + 2 leaves.  Each leaf
	 * shadowed with its path and a sibling (a delete refills thin
	 * nodes), and the two records cut at the ends split a leaf each. */
	uint64_t minf = bt_leaf_cap(&p->sp.refc) / 4;
	uint64_t leaves = n / (minf ? minf : 1) + 2;
	uint64_t m = (leaves + 2) * 2 * (hr + 1);
	/* The reverse map loses the records of the extents unmapped (at
	 * most one per block) and gains the pieces cut at the ends. */
	unsigned hq = rmap_levels(p);
	if (hq)
		m += recs_meta(&p->sp.rmap, p->sp.rmap_nodes, hq, n + 2);
	return m;
}

static uint64_t room_keep(struct vbas_pool *p, enum space_class cls)
{
	return p->sp.reserved + (cls == SPACE_DATA ? p->sp.meta_reserve :
				 cls == SPACE_GROW ? p->sp.meta_reserve / 2 : 0);
}

uint64_t space_room_free(struct vbas_pool *p, enum space_class cls)
{
	uint64_t avail = space_avail(p), keep = room_keep(p, cls);
	return avail > keep ? avail - keep : 0;
}

int space_room(struct vbas_pool *p, uint64_t need, enum space_class cls, const char *what)
{
	need += space_cascade(p);
	for (int tries = 0;; tries++) {
		if (space_room_free(p, cls) >= need)
			return 0;
		/* Blocks freed in this transaction come back at its commit. */
		if (tries || !space_freed_total(p))
			return vbas_err(-ENOSPC, "%s: the pool is full: its next step may need %" PRIu64
					" metadata blocks; %" PRIu64 " are free, %" PRIu64 " of them held "
					"back (%s)", what, need, space_avail(p), room_keep(p, cls),
					cls == SPACE_DATA ? "reservations, and the metadata reserve" :
					cls == SPACE_GROW ? "reservations, and half the metadata reserve, "
					"kept for deletes" : "reservations");
		int r = txn_commit(p);
		if (r)
			return r;
	}
}

/* Free blocks as a user counts them: what is not in use. */
uint64_t space_free_blocks(struct vbas_pool *p)
{
	struct vbas_space *sp = &p->sp;
	uint64_t busy = sp->data_used + sp->meta_used + sp->pending.total;
	uint64_t usable = p->nblocks - VBAS_FIRST_BLOCK;
	return busy >= usable ? 0 : usable - busy;
}

/* ---- The allocator ----------------------------------------------------- */

struct gap_probe {
	struct refc_irec rec;
	int found;
};

static int first_rec_cb(void *arg, const void *rec)
{
	struct gap_probe *g = arg;
	refc_to_irec(rec, &g->rec);
	g->found = 1;
	return 1;
}

/* The first part of the gap [*POS, GEND) that is neither pending, freed
 * nor kept: *START, *LEN, and 1; or 0 if all of it is (*POS moves on). */
static int gap_take(struct vbas_space *sp, uint64_t *pos, uint64_t gend, uint64_t *start,
		    uint64_t *len)
{
	while (*pos < gend) {
		const struct ext *e1 = extset_first_overlap(&sp->pending, *pos, gend);
		const struct ext *e2 = extset_first_overlap(&sp->freed, *pos, gend);
		const struct ext *e3 = extset_first_overlap(&sp->kept, *pos, gend);
		const struct ext *e4 = sp->exclude.n ?
			extset_first_overlap(&sp->exclude, *pos, gend) : NULL;
		const struct ext *e5 = sp->freed_prev.n ?
			extset_first_overlap(&sp->freed_prev, *pos, gend) : NULL;
		const struct ext *e = e1;
		if (!e || (e5 && e5->start < e->start))
			e = e5;
		if (!e || (e2 && e2->start < e->start))
			e = e2;
		if (!e || (e3 && e3->start < e->start))
			e = e3;
		if (!e || (e4 && e4->start < e->start))
			e = e4;
		if (e && e->start <= *pos) {
			*pos = e->start + e->len;
			continue;
		}
		*start = *pos;
		*len = (e ? e->start : gend) - *pos;
		return 1;
	}
	return 0;
}

struct free_scan {
	struct vbas_space *sp;
	uint64_t pos, limit, start, len;
	int found;
};

static int free_scan_cb(void *arg, const void *rec)
{
	struct free_scan *f = arg;
	struct refc_irec ir;
	refc_to_irec(rec, &ir);
	if (ir.start > f->pos) {
		uint64_t gend = ir.start < f->limit ? ir.start : f->limit;
		if (gap_take(f->sp, &f->pos, gend, &f->start, &f->len)) {
			f->found = 1;
			return 1;
		}
	}
	if (ir.start + ir.len > f->pos)
		f->pos = ir.start + ir.len;
	return f->pos >= f->limit;
}

/* The first free run at or after POS and before LIMIT: *START, *LEN (0 if
 * none).  Free means no record and in none of PENDING, FREED (S3) and
 * KEPT (S6).
 * One walk along the refcount tree's leaves from POS. */
static int find_free(struct vbas_pool *p, uint64_t pos, uint64_t limit,
		     uint64_t *start, uint64_t *len)
{
	struct vbas_space *sp = &p->sp;
	struct refc_irec ir;
	*len = 0;
	/* In a record?  Skip it. */
	int r = refc_get(p, pos, BT_LE, &ir);
	if (r && r != -ENOENT)
		return r;
	if (!r && ir.start + ir.len > pos)
		pos = ir.start + ir.len;
	if (pos >= limit)
		return 0;
	struct free_scan f = { .sp = sp, .pos = pos, .limit = limit };
	uint8_t k[8];
	st_le64(k, pos);
	r = bt_iter(&sp->refc, k, free_scan_cb, &f);
	if (r < 0)
		return r;
	if (f.found || (f.pos < limit && gap_take(sp, &f.pos, limit, &f.start, &f.len))) {
		*start = f.start;
		*len = f.len;
	}
	return 0;
}

int space_is_free(struct vbas_pool *p, uint64_t blk)
{
	uint64_t s, l;
	if (blk < VBAS_FIRST_BLOCK || blk >= alloc_end(p))
		return 0;
	return !find_free(p, blk, blk + 1, &s, &l) && l == 1;
}

/*
 * Allocate up to MAX contiguous blocks of TYPE, preferring those at HINT
 * and after it (contiguity first), then wrapping round.  The blocks go to
 * PENDING: the caller either queues their +1 (is_alloc) or gives them back
 * with space_unalloc().  USE_RESERVE: metadata and writes drawing on a
 * reservation may use the metadata reserve and reserved blocks; plain data
 * writes may not.
 */
int space_alloc(struct vbas_pool *p, uint64_t hint, uint64_t max, int type,
		int use_reserve, uint64_t *start, uint64_t *got)
{
	struct vbas_space *sp = &p->sp;
	uint64_t avail = space_avail(p);
	uint64_t s, l;
	int r;

	if (!use_reserve) {
		uint64_t keep = sp->meta_reserve + sp->reserved;
		if (avail <= keep)
			return vbas_err(-ENOSPC, "pool is full: %" PRIu64 " blocks free, %" PRIu64
					" held back for metadata and reservations", avail, keep);
		if (max > avail - keep)
			max = avail - keep;
	}
	if (avail == 0)
		return vbas_err(-ENOSPC, "pool is full: no free block for %s", type_name(type));
	if (hint < VBAS_FIRST_BLOCK || hint >= alloc_end(p))
		hint = VBAS_FIRST_BLOCK;
	r = find_free(p, hint, alloc_end(p), &s, &l);
	if (!r && l == 0 && hint > VBAS_FIRST_BLOCK)
		r = find_free(p, VBAS_FIRST_BLOCK, hint, &s, &l);
	if (r)
		return r;
	if (l == 0)
		return vbas_err(-EUCLEAN, "space accounting says %" PRIu64 " blocks are free, "
				"but the refcount tree has none", avail);
	if (l > max)
		l = max;
	r = extset_add(&sp->pending, s, l);
	if (r)
		return r;
	*start = s;
	*got = l;
	ev_space(p);
	return 0;
}

int space_alloc_run(struct vbas_pool *p, uint64_t n, int type, uint64_t *start)
{
	struct vbas_space *sp = &p->sp;
	uint64_t avail = space_avail(p), keep = sp->meta_reserve + sp->reserved;
	uint64_t pos = VBAS_FIRST_BLOCK, end = alloc_end(p), s, l;
	if (avail < keep + n)
		return vbas_err(-ENOSPC, "no room for %" PRIu64 " blocks: %" PRIu64 " free, %" PRIu64
				" held back for metadata and reservations", n, avail, keep);
	while (pos < end) {
		int r = find_free(p, pos, end, &s, &l);
		if (r)
			return r;
		if (!l)
			break;
		if (l >= n) {
			r = extset_add(&sp->pending, s, n);
			if (r)
				return r;
			*start = s;
			ev_space(p);
			return 0;
		}
		pos = s + l;
	}
	(void)type;
	return vbas_err(-ENOSPC, "no run of %" PRIu64 " free blocks below block %" PRIu64
			" (%" PRIu64 " blocks free, in shorter runs)", n, end, avail);
}

void space_unalloc(struct vbas_pool *p, uint64_t start, uint64_t len)
{
	extset_remove(&p->sp.pending, start, len);
}

/* ---- Queued reference count changes ----------------------------------- */

int space_queue(struct vbas_pool *p, uint64_t start, uint64_t len, int delta,
		int type, int is_alloc)
{
	struct vbas_space *sp = &p->sp;
	if (!len)
		return 0;
	if (!is_alloc) {
		int r = touch(sp, start, len);
		if (r)
			return r;
	}
	if (sp->qhead + sp->qn == sp->qcap) {
		if (sp->qhead) {
			memmove(sp->q, sp->q + sp->qhead, sp->qn * sizeof(*sp->q));
			sp->qhead = 0;
		}
		if (sp->qn == sp->qcap) {
			size_t c = sp->qcap ? sp->qcap * 2 : 64;
			struct refc_delta *q = realloc(sp->q, c * sizeof(*q));
			if (!q)
				return -ENOMEM;
			sp->q = q;
			sp->qcap = c;
		}
	}
	/* A change that continues the last queued one joins it (the
	 * children of a copied node, blocks allocated one after another). */
	if (sp->qn) {
		struct refc_delta *l = &sp->q[sp->qhead + sp->qn - 1];
		if (l->start + l->len == start && l->delta == delta && l->type == type &&
		    l->is_alloc == is_alloc && l->len + len <= MAX_REC_LEN) {
			l->len += len;
			p->dirty = 1;
			return 0;
		}
	}
	struct refc_delta *d = &sp->q[sp->qhead + sp->qn++];
	d->start = start;
	d->len = len;
	d->delta = delta;
	d->type = (uint8_t)type;
	d->is_alloc = (uint8_t)is_alloc;
	p->dirty = 1;
	return 0;
}

static int refc_upd(struct vbas_pool *p, const struct refc_irec *ir)
{
	struct vbas_refc_rec r;
	refc_from_irec(ir, &r);
	return bt_update(&p->sp.refc, &r);
}

/* Merge the records that meet at block AT if they can be one (S4).  The
 * left record grows over the right one before the right one goes, so no
 * lookup in between finds the blocks without a count. */
static int merge_at(struct vbas_pool *p, uint64_t at)
{
	struct refc_irec a, b;
	int r;
	if (at <= VBAS_FIRST_BLOCK)
		return 0;
	r = refc_get(p, at - 1, BT_LE, &a);
	if (r == -ENOENT)
		return 0;
	if (r)
		return r;
	if (a.start + a.len != at)
		return 0;
	r = refc_get(p, at, BT_EQ, &b);
	if (r == -ENOENT)
		return 0;
	if (r)
		return r;
	if (a.rc != b.rc || a.type != b.type || (uint64_t)a.len + b.len > MAX_REC_LEN)
		return 0;
	a.len += b.len;
	r = refc_upd(p, &a);
	if (!r)
		r = refc_del(p, b.start);
	return r;
}

static void count_used(struct vbas_pool *p, int type, uint64_t start, int64_t n)
{
	uint64_t a = past_limit(p, start, (uint64_t)(n < 0 ? -n : n));
	p->sp.used_above += n < 0 ? -(int64_t)a : (int64_t)a;
	if (type == VBAS_BT_DATA)
		p->sp.data_used += (uint64_t)n;
	else
		p->sp.meta_used += (uint64_t)n;
}

/* Blocks [s, s+n) of TYPE reached zero. */
static int became_free(struct vbas_pool *p, uint64_t s, uint64_t n, int type)
{
	int r = extset_add(&p->sp.freed, s, n);
	if (!r)
		p->sp.freed_above += past_limit(p, s, n);
	if (r)
		return r == -EEXIST ? vbas_err(-EUCLEAN, "blocks %" PRIu64 "+%" PRIu64
					       " freed twice in one transaction", s, n) : r;
	if (type == VBAS_BT_META) {
		for (uint64_t b = s; b < s + n; b++)
			cache_forget(p->cache, b);
	} else {
		r = extset_add(&p->sp.freed_data, s, n);
	}
	return r;
}

/* Apply one delta to the refcount tree. */
static int apply(struct vbas_pool *p, const struct refc_delta *d)
{
	uint64_t cur = d->start, end = d->start + d->len;
	struct refc_irec ir;
	int r;

	while (cur < end) {
		r = refc_get(p, cur, BT_LE, &ir);
		if (r && r != -ENOENT)
			return r;
		if (!r && ir.start + ir.len > cur) {
			/* Inside record IR: split it around [cur, pe). */
			uint64_t pe = ir.start + ir.len < end ? ir.start + ir.len : end;
			if (ir.type != d->type)
				return vbas_err(-EUCLEAN, "block %" PRIu64 " is %s but is counted as %s",
						cur, type_name((int)ir.type), type_name(d->type));
			if (d->is_alloc)
				return vbas_err(-EUCLEAN, "block %" PRIu64 " was allocated while in use "
						"(reference count %u)", cur, ir.rc);
			int64_t nrc = (int64_t)ir.rc + d->delta;
			if (nrc < 0)
				return vbas_err(-EUCLEAN, "block %" PRIu64 ": reference count %u "
						"would drop below zero", cur, ir.rc);
			if (nrc > 0xffffffffll)
				return vbas_err(-EOVERFLOW, "block %" PRIu64 ": too many references", cur);
			/*
			 * Split IR around [cur, pe) without a moment in which a
			 * lookup (the allocator's, or shadowing's refcount query,
			 * both of which run while this tree changes) could find
			 * its blocks uncounted: the right part first, then the
			 * middle part, then IR shrinks or takes the new count.
			 * For a moment the new records lie inside IR; a lookup
			 * (the largest start at or below a block) finds the
			 * newest, and the allocator skips to the end of each.
			 * Blocks that reach zero join FREED before their record
			 * goes.
			 */
			uint64_t iend = ir.start + ir.len;
			r = 0;
			if (pe < iend) {
				struct refc_irec rt = ir;
				rt.start = pe;
				rt.len = (uint32_t)(iend - pe);
				r = refc_put(p, &rt);
			}
			if (!r && nrc == 0) {
				count_used(p, d->type, cur, -(int64_t)(pe - cur));
				r = became_free(p, cur, pe - cur, d->type);
			}
			if (!r && ir.start < cur) {
				if (nrc > 0) {
					struct refc_irec m = ir;
					m.start = cur;
					m.len = (uint32_t)(pe - cur);
					m.rc = (uint32_t)nrc;
					r = refc_put(p, &m);
				}
				struct refc_irec l = ir;
				l.len = (uint32_t)(cur - ir.start);
				if (!r)
					r = refc_upd(p, &l);
			} else if (!r && nrc > 0) {
				struct refc_irec m = ir;
				m.len = (uint32_t)(pe - cur);
				m.rc = (uint32_t)nrc;
				r = refc_upd(p, &m);
			} else if (!r) {
				r = refc_del(p, ir.start);
			}
			if (r)
				return r;
			cur = pe;
			continue;
		}
		/* In a gap, up to the next record. */
		struct gap_probe g = { .found = 0 };
		uint8_t k[8];
		st_le64(k, cur);
		r = bt_iter(&p->sp.refc, k, first_rec_cb, &g);
		if (r < 0)
			return r;
		uint64_t ge = g.found && g.rec.start < end ? g.rec.start : end;
		if (ge - cur > MAX_REC_LEN)
			ge = cur + MAX_REC_LEN;
		if (d->delta < 0)
			return vbas_err(-EUCLEAN, "block %" PRIu64 " is free but lost a reference", cur);
		struct refc_irec n = { .start = cur, .len = (uint32_t)(ge - cur),
				       .rc = (uint32_t)d->delta, .type = d->type };
		r = refc_put(p, &n);
		if (r)
			return r;
		count_used(p, d->type, cur, (int64_t)(ge - cur));
		if (d->is_alloc) {
			r = extset_remove(&p->sp.pending, cur, ge - cur);
			if (r)
				return vbas_err(-EUCLEAN, "block %" PRIu64 " recorded as allocated, "
						"but it was never handed out", cur);
		} else if (extset_first_overlap(&p->sp.pending, cur, ge) ||
			   extset_first_overlap(&p->sp.freed, cur, ge) ||
			   extset_first_overlap(&p->sp.freed_prev, cur, ge) ||
			   extset_first_overlap(&p->sp.kept, cur, ge)) {
			return vbas_err(-EUCLEAN, "block %" PRIu64 " gained a reference while free", cur);
		}
		cur = ge;
	}
	r = merge_at(p, d->start);
	if (!r)
		r = merge_at(p, end);
	return r;
}

int space_drain(struct vbas_pool *p)
{
	struct vbas_space *sp = &p->sp;
	uint64_t rounds = 0;
	int r = 0;
	if (sp->draining)
		return 0;
	sp->draining = 1;
	/* The reverse map first: its changes queue reference counts (the
	 * nodes they shadow), never the other way round. */
	r = rmap_apply(p);
	while (!r && sp->qn) {
		struct refc_delta d = sp->q[sp->qhead];
		sp->qhead++;
		sp->qn--;
		if (!sp->qn)
			sp->qhead = 0;
		r = apply(p, &d);
		if (r)
			break;
		if (++rounds > 100000000ull) {
			r = vbas_err(-EUCLEAN, "refcount updates do not settle");
			break;
		}
	}
	sp->draining = 0;
	if (sp->refc.grown)
		space_size_reserve(p);
	return r;
}

int space_rebuild_refc(struct vbas_pool *p, const struct pic_run *runs, size_t n)
{
	struct vbas_space *sp = &p->sp;
	int r = 0;
	/* Until its record is in, a block the picture uses must not be handed
	 * out for the new tree's nodes: all of them stay out until the
	 * commit. */
	for (size_t i = 0; !r && i < n; i++)
		r = extset_add_new(&sp->exclude, runs[i].start, runs[i].len);
	if (r)
		return r;
	sp->refc.root = 0;
	sp->refc.root_txid = 0;
	sp->refc.grown = 0;
	sp->refc_nodes = 0;
	sp->data_used = sp->meta_used = 0;
	sp->meta_rover = VBAS_FIRST_BLOCK;
	p->dirty = 1;
	for (size_t i = 0; !r && i < n; i++) {
		r = space_queue(p, runs[i].start, runs[i].len, (int)runs[i].count, runs[i].type, 0);
		if (!r && (i & 1023) == 1023)
			r = space_drain(p);
	}
	if (!r)
		r = space_drain(p);
	space_size_reserve(p);
	return r;
}

int space_refcount(struct vbas_pool *p, uint64_t blk, uint32_t *rc, int *type)
{
	struct vbas_space *sp = &p->sp;
	struct refc_irec ir;
	int64_t n = 0;
	int r = refc_get(p, blk, BT_LE, &ir);
	*type = 0;
	if (r && r != -ENOENT)
		return r;
	if (!r && ir.start + ir.len > blk) {
		n = ir.rc;
		*type = (int)ir.type;
	}
	for (size_t i = 0; i < sp->qn; i++) {
		const struct refc_delta *d = &sp->q[sp->qhead + i];
		if (blk >= d->start && blk < d->start + d->len) {
			n += d->delta;
			*type = d->type;
		}
	}
	if (n < 0)
		return vbas_err(-EUCLEAN, "block %" PRIu64 ": negative reference count", blk);
	*rc = (uint32_t)n;
	return 0;
}

int space_refcount_run(struct vbas_pool *p, uint64_t blk, uint64_t max, uint32_t *rc,
		       uint64_t *run)
{
	struct vbas_space *sp = &p->sp;
	struct refc_irec ir;
	int64_t n = 0;
	uint64_t len = max;
	int r = refc_get(p, blk, BT_LE, &ir);
	if (r && r != -ENOENT)
		return r;
	if (!r && ir.start + ir.len > blk && ir.type != VBAS_BT_DATA)
		return vbas_err(-EUCLEAN, "block %" PRIu64 " is mapped as data, but the refcount tree "
				"holds it as metadata (a damaged mapping; it is not written)", blk);
	if (!r && ir.start + ir.len > blk) {
		n = ir.rc;
		if (ir.start + ir.len - blk < len)
			len = ir.start + ir.len - blk;
	} else {
		r = refc_get(p, blk, BT_GE, &ir);
		if (r && r != -ENOENT)
			return r;
		if (!r && ir.start - blk < len)
			len = ir.start - blk;
	}
	for (size_t i = 0; i < sp->qn; i++) {
		const struct refc_delta *d = &sp->q[sp->qhead + i];
		if (blk >= d->start && blk < d->start + d->len) {
			n += d->delta;
			if (d->start + d->len - blk < len)
				len = d->start + d->len - blk;
		} else if (d->start > blk && d->start - blk < len) {
			len = d->start - blk;
		}
	}
	if (n < 0)
		return vbas_err(-EUCLEAN, "block %" PRIu64 ": negative reference count", blk);
	*rc = (uint32_t)n;
	*run = len;
	return 0;
}

/* Discard the data blocks freed in the transaction sealed for commit.
 * Only once its commit is durable: until then the last commit still maps
 * them, and a crash would bring that commit back with their contents
 * gone. */
void space_punch_freed(struct vbas_pool *p)
{
	struct vbas_space *sp = &p->sp;
	for (size_t i = 0; i < sp->freed_data_prev.n; i++)
		dev_discard(p->dev, sp->freed_data_prev.v[i].start * p->bs,
			    sp->freed_data_prev.v[i].len * p->bs);
}

int space_precommit(struct vbas_pool *p)
{
	return p->sp.pins ? extset_reserve(&p->sp.kept, p->sp.freed.n) : 0;
}

uint64_t space_freed_total(const struct vbas_pool *p)
{
	return p->sp.freed.total + p->sp.freed_prev.total;
}

static void extset_swap(struct extset *a, struct extset *b)
{
	struct extset t = *a;
	*a = *b;
	*b = t;
}

/* The running transaction's sets move to the commit in flight (which has
 * none: one commit at a time), and the next transaction starts empty. */
void space_seal(struct vbas_pool *p)
{
	struct vbas_space *sp = &p->sp;
	extset_swap(&sp->freed, &sp->freed_prev);
	extset_swap(&sp->freed_data, &sp->freed_data_prev);
	extset_swap(&sp->touched, &sp->touched_prev);
	extset_clear(&sp->freed);
	extset_clear(&sp->freed_data);
	extset_clear(&sp->touched);
	sp->freed_above_prev = sp->freed_above;
	sp->freed_above = 0;
	/* The refcount tree as committed: counted at open, then kept by its
	 * splits and merges (shadowing replaces a node, it adds none). */
	sp->refc_nodes = (uint64_t)((int64_t)sp->refc_nodes + sp->refc.grown);
	sp->refc.grown = 0;
	sp->rmap_nodes = (uint64_t)((int64_t)sp->rmap_nodes + sp->rmap.grown);
	sp->rmap.grown = 0;
	sp->meta_allocs_txn = 0;
}

/* The commit is durable: blocks freed in it may be used again (S2) unless
 * a pin keeps them (S6), and the data blocks freed in it are discarded
 * (nothing that reads metadata reads data blocks). */
void space_committed(struct vbas_pool *p)
{
	struct vbas_space *sp = &p->sp;
	/* Room was made by space_precommit, and a block in FREED is in no
	 * other set: these cannot fail. */
	for (size_t i = 0; sp->pins && i < sp->freed_prev.n; i++)
		(void)extset_add(&sp->kept, sp->freed_prev.v[i].start, sp->freed_prev.v[i].len);
	if (sp->pins)
		sp->kept_above += sp->freed_above_prev;
	sp->freed_above_prev = 0;
	/* Punch the data blocks freed in the transaction just committed,
	 * before they can be handed out again (S2: that is now). */
	space_punch_freed(p);
	extset_clear(&sp->freed_data_prev);
	extset_clear(&sp->freed_prev);
	extset_clear(&sp->touched_prev);
	extset_clear(&sp->exclude);
	space_size_reserve(p);
	/* The shadows reservations' writes took came back: top them up. */
	resv_refill(p);
	ev_space(p);
}

/* The running transaction is abandoned: back to the last commit. */
void space_abort(struct vbas_pool *p)
{
	struct vbas_space *sp = &p->sp;
	sp->refc.root = le64_get(p->sb.refc_root);
	sp->refc.root_txid = le64_get(p->sb.refc_root_txid);
	sp->data_used = le64_get(p->sb.data_used);
	sp->meta_used = le64_get(p->sb.meta_used);
	extset_clear(&sp->pending);
	extset_clear(&sp->freed);
	extset_clear(&sp->freed_data);
	extset_clear(&sp->touched);
	extset_clear(&sp->freed_prev);
	extset_clear(&sp->freed_data_prev);
	extset_clear(&sp->touched_prev);
	sp->freed_above_prev = 0;
	extset_clear(&sp->exclude);
	sp->qn = sp->qhead = 0;
	sp->rmap_on = !!(le32_get(p->sb.flags) & VBAS_SBF_RMAP);
	sp->rmap.root = le64_get(p->sb.rmap_root);
	sp->rmap.root_txid = le64_get(p->sb.rmap_root_txid);
	sp->rmap.grown = 0;
	sp->rq.n = 0;
	sp->meta_allocs_txn = 0;
	sp->refc.grown = 0;
	space_size_reserve(p);
	/* The shrink's target as committed, and the counts past it. */
	uint64_t limit = (le32_get(p->sb.flags) & VBAS_SBF_SHRINK) ? le64_get(p->sb.shrink_to) : 0;
	if (space_set_limit(p, limit))
		vbas_err_clear();      /* the tree cannot be read: no limit */
}

/* ---- Pins (S6) ----------------------------------------------------------- */

int space_pin(struct vbas_pool *p)
{
	if (p->sp.pins == UINT_MAX)
		return vbas_err(-EAGAIN, "pin: too many pins");
	p->sp.pins++;
	return 0;
}

void space_unpin(struct vbas_pool *p)
{
	if (!p->sp.pins)
		return;
	if (--p->sp.pins == 0) {
		extset_clear(&p->sp.kept);
		p->sp.kept_above = 0;
	}
}
