/* vbas_repair: rebuild what the surviving structures determine.
 *
 * The mapping trees and the volume table are the truth: every block a
 * pool uses is reached from them (its nodes through parent pointers, its
 * data through mapping records), so the refcount tree, which only counts
 * those references, can be rebuilt from a walk of them (check_picture),
 * and the reverse map, which only mirrors the mapping leaves' records,
 * from the same walk.  Repair walks the forward trees first: damage there
 * (a checksum that fails, a record out of bounds or order) is not
 * repaired here and stops it before it changes anything, naming every
 * problem.  Otherwise it compares the reverse map with the leaves and the
 * refcount tree with the picture, and rebuilds what differs, in one new
 * transaction:
 *
 *  - the refcount tree: an empty tree, then every run of the picture
 *    queued as a count; the blocks the picture uses and the old trees'
 *    nodes (the last commit's) stay out of the allocator (sp.exclude)
 *    until the commit, so the new tree never lands on them;
 *  - the reverse map: with the refcount tree (its old nodes are counted
 *    in the old refcount tree, which cannot be trusted to free them), an
 *    empty tree, then every record of the leaves.
 *
 * The commit is the usual one: until its superblock is down, a crash
 * comes back to the last commit (still damaged, and repairable again).
 * Nodes of the old trees that could not be read are not known, so the new
 * trees may be written over them; they belong only to the damaged commit.
 */
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rep {
	void (*cb)(const char *, void *);
	void *arg;
};

static void say(struct rep *R, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(struct rep *R, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	if (!R->cb)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	R->cb(buf, R->arg);
}

/* Comparing a tree's records with what they should be, in order. */
struct cmp {
	struct vbas_pool *p;
	const struct pic *pc;
	size_t i;                /* next expected record */
	uint64_t bad, nodes;
	int exclude;             /* add every node met to sp.exclude */
	int err;
};

static void cmp_report(void *arg, const char *fmt, ...)
{
	struct cmp *c = arg;
	(void)fmt;
	c->bad++;
}

static int cmp_node(void *arg, uint64_t blkno, unsigned level)
{
	struct cmp *c = arg;
	(void)level;
	c->nodes++;
	if (c->exclude && blkno >= VBAS_FIRST_BLOCK && blkno < c->p->nblocks) {
		int r = extset_add_new(&c->p->sp.exclude, blkno, 1);
		if (r)
			return c->err = r;
	}
	return 0;
}

static int cmp_refc(void *arg, const void *rec)
{
	struct cmp *c = arg;
	const struct vbas_refc_rec *x = rec;
	const struct pic_run *w = c->i < c->pc->n ? &c->pc->v[c->i] : NULL;
	if (!w || w->start != le64_get(x->k.pblk) || w->len != le32_get(x->v.len) ||
	    w->count != le32_get(x->v.refcount) || w->type != le32_get(x->v.type))
		c->bad++;
	c->i++;
	return 0;
}

static int cmp_rmap(void *arg, const void *rec)
{
	struct cmp *c = arg;
	struct rmap_irec x;
	rmap_to_irec(rec, &x);
	const struct rmap_irec *w = c->i < c->pc->fw.n ? &c->pc->fw.v[c->i] : NULL;
	if (!w || rmap_irec_cmp(w, &x) || w->count != x.count)
		c->bad++;
	c->i++;
	return 0;
}

/* Whether tree T holds exactly what PC says (its records in order, read
 * without a problem); with EXCLUDE, its nodes go to sp.exclude. */
/* Walk T with C (records to REC_CB, which may be NULL); *DAMAGED: a
 * node could not be read or a record was refused. */
static int cmp_walk(struct vbas_btree *t, struct cmp *c, bt_rec_cb rec_cb, int *damaged)
{
	struct bt_check_cbs cbs = { .report = cmp_report, .node_cb = cmp_node, .rec_cb = rec_cb,
				    .arg = c };
	int r = bt_check(t, &cbs, NULL, NULL);
	if (c->err)
		return c->err;
	if (r && r != -EUCLEAN && r != -EBADMSG && r != -EIO)
		return r;
	vbas_err_clear();
	*damaged = r != 0;
	return 0;
}

static int tree_matches(struct vbas_pool *p, struct vbas_btree *t, const struct pic *pc,
			int rmap, int exclude, int *ok)
{
	struct cmp c = { .p = p, .pc = pc, .exclude = exclude };
	int damaged, r = cmp_walk(t, &c, rmap ? cmp_rmap : cmp_refc, &damaged);
	if (r)
		return r;
	*ok = !damaged && !c.bad && c.i == (rmap ? pc->fw.n : pc->n);
	return 0;
}

/* The nodes of T that can be read go to sp.exclude (what the last commit
 * holds, kept from the allocator until the commit). */
static int exclude_nodes(struct vbas_pool *p, struct vbas_btree *t)
{
	struct cmp c = { .p = p, .exclude = 1 };
	int damaged;
	return cmp_walk(t, &c, NULL, &damaged);
}

static uint64_t nodes_for(struct vbas_pool *p, const struct vbas_btree_ops *ops, uint64_t recs)
{
	struct vbas_btree t = { .ops = ops, .env = &p->env };
	return bt_nodes_for(&t, recs);
}

/* ---- Mapping leaves from the reverse map --------------------------------- */

static int all_rmap_cb(void *arg, const void *rec)
{
	struct rmap_irec x;
	rmap_to_irec(rec, &x);
	return rmap_set_add(arg, x.pblk, x.owner, x.lblk, x.len, x.count) ? -ENOMEM : 0;
}

static void note_problem(void *arg, const char *fmt, ...)
{
	(void)fmt;
	++*(uint64_t *)arg;
}

/* Mapping nodes some parent holds that no readable one does: the
 * children of unreadable interior nodes (with their children, which are
 * told apart by level). */
struct orphan {
	uint64_t blk, owner, key, txid;
	unsigned level;
	uint32_t missing;          /* references no readable node holds */
};
struct orphans {
	struct vbas_pool *p;
	const struct pic *a;
	struct orphan *v;
	size_t n, cap;
};

/* References the readable trees hold to BLK (the picture's count). */
static uint32_t pic_count(const struct pic *a, uint64_t blk)
{
	size_t lo = 0, hi = a->n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (a->v[mid].start + a->v[mid].len <= blk)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < a->n && a->v[lo].start <= blk ? a->v[lo].count : 0;
}

static int orphan_cb(void *arg, uint64_t start, uint64_t len, uint32_t rc, int type)
{
	struct orphans *o = arg;
	if (type != VBAS_BT_META)
		return 0;
	for (uint64_t b = start; b < start + len; b++) {
		uint32_t have = pic_count(o->a, b);
		if (have >= rc)
			continue;
		uint8_t key[BT_MAX_KEY];
		uint16_t tt;
		struct orphan x = { .blk = b, .missing = rc - have };
		if (bt_node_info(&o->p->env, b, &tt, &x.owner, &x.level, key, &x.txid)) {
			vbas_err_clear();      /* unreadable itself: not a candidate */
			continue;
		}
		if (tt != VBAS_TREE_MAP)
			continue;
		x.key = ld_le64(key);
		if (o->n == o->cap) {
			size_t nc = o->cap ? 2 * o->cap : 64;
			struct orphan *v = realloc(o->v, nc * sizeof(*v));
			if (!v)
				return -ENOMEM;
			o->v = v;
			o->cap = nc;
		}
		o->v[o->n++] = x;
	}
	return 0;
}

static int cmp_orphan(const void *a, const void *b)
{
	const struct orphan *x = a, *y = b;
	if (x->level != y->level)
		return x->level < y->level ? -1 : 1;
	return x->key < y->key ? -1 : x->key > y->key;
}

/* Interior node B rebuilt from the nodes one level down, in its keys,
 * that a parent holds and no readable node does: each must be missing
 * exactly one reference (B's), and they must tile B's keys from its low
 * key.  NULL, or why not. */
static const char *rebuild_interior(struct vbas_pool *p, const struct pic_bad *b,
				    const struct orphans *o, int dry, unsigned *nent)
{
	struct vbas_btree mt = { .ops = &map_ops, .env = &p->env };
	unsigned cap = bt_int_cap(&mt), n = 0;
	uint64_t keys[BT_MAX_REC], child[BT_MAX_REC], ctx[BT_MAX_REC], owner = 0;
	for (size_t i = 0; i < o->n; i++) {
		const struct orphan *x = &o->v[i];
		if ((int)x->level != b->level - 1 || x->key < b->lo || x->key >= b->hi ||
		    x->owner > b->vol)
			continue;
		if (x->missing != 1)
			return "a node under its keys lacks more than one parent";
		if (n && x->key == keys[n - 1])
			return "two nodes under its keys start at the same key";
		if (n == cap || n == BT_MAX_REC)
			return "more nodes under its keys than it holds";
		keys[n] = x->key;
		child[n] = x->blk;
		ctx[n] = x->txid;
		if (x->owner > owner)
			owner = x->owner;
		n++;
	}
	if (!n)
		return "no node under its keys lacks a parent";
	if (keys[0] != b->lo)
		return "its first child does not start at the key its parent gives it";
	*nent = n;
	if (dry)
		return NULL;
	uint8_t kb[BT_MAX_REC * 8];
	for (unsigned i = 0; i < n; i++)
		st_le64(kb + 8 * i, keys[i]);
	if (bt_write_interior(&mt, b->blk, b->txid, owner, (unsigned)b->level, kb, child, ctx, n))
		return vbas_errmsg();
	return NULL;
}

static int cmp_lblk(const void *a, const void *b)
{
	const struct rmap_irec *x = a, *y = b;
	return x->lblk < y->lblk ? -1 : x->lblk > y->lblk;
}

/* The leaves of A->bad rebuilt, where the reverse map says what they held:
 * its records less those the readable leaves account for are the records
 * of the unreadable ones.  A leaf is rebuilt when that difference, in its
 * keys, is records of one lineage, each once, that begin at the leaf's low
 * key and do not overlap; written in place, as its parents expect it.
 * *FIXED: leaves rebuilt (or, DRY, that would be) of *DISTINCT unreadable
 * nodes; the others are named. */
static int rebuild_leaves(struct vbas_pool *p, const struct pic *a, int dry, struct rep *R,
			  unsigned *fixed, unsigned *distinct, unsigned *interior)
{
	struct rmap_set rm = { 0 }, diff = { 0 };
	uint64_t problems = 0;
	int r = 0;
	*fixed = *distinct = *interior = 0;
	if (!p->sp.rmap_on) {
		say(R, "the pool keeps no reverse map: unreadable mapping nodes cannot be rebuilt");
		return 0;
	}
	struct bt_check_cbs cbs = { .report = note_problem, .arg = &problems };
	r = bt_iter(&p->sp.rmap, NULL, all_rmap_cb, &rm);
	if (!r) {
		r = bt_check(&p->sp.rmap, &cbs, NULL, NULL);
		if (r == -EUCLEAN || r == -EBADMSG || r == -EIO) {
			problems++;
			r = 0;
		}
	}
	if (r || problems) {
		rmap_set_free(&rm);
		vbas_err_clear();
		say(R, "the reverse map cannot be read whole: unreadable mapping nodes cannot be "
		    "rebuilt from it");
		return r == -ENOMEM ? r : 0;
	}
	/* What no readable leaf holds (both sets sorted, counts summed). */
	size_t i = 0, j = 0;
	while (!r && i < rm.n) {
		int d = j < a->fw.n ? rmap_irec_cmp(&rm.v[i], &a->fw.v[j]) : -1;
		if (d > 0) {
			j++;
			continue;
		}
		int64_t have = d == 0 ? a->fw.v[j].count : 0;
		if (rm.v[i].count > have)
			r = rmap_set_add(&diff, rm.v[i].pblk, rm.v[i].owner, rm.v[i].lblk,
					 rm.v[i].len, rm.v[i].count - have);
		if (d == 0)
			j++;
		i++;
	}
	if (!r && diff.n)
		qsort(diff.v, diff.n, sizeof(*diff.v), cmp_lblk);
	struct vbas_btree mt = { .ops = &map_ops, .env = &p->env };
	unsigned cap = bt_leaf_cap(&mt);
	struct vbas_map_rec *recs = malloc((size_t)cap * sizeof(*recs));
	if (!r && !recs)
		r = -ENOMEM;
	/* Interior nodes come back from the orphans the refcount tree shows. */
	struct orphans orph = { .p = p, .a = a };
	int have_orphans = 0;
	for (size_t k = 0; !r && k < a->nbad && !have_orphans; k++)
		have_orphans = a->bad[k].level > 0;
	if (!r && have_orphans) {
		int e = space_runs(p, orphan_cb, &orph);
		if (e == -ENOMEM)
			r = e;
		else if (e) {
			vbas_err_clear();
			have_orphans = 0;
			say(R, "the refcount tree cannot be read: unreadable interior nodes cannot be "
			    "rebuilt");
		} else if (orph.n) {
			qsort(orph.v, orph.n, sizeof(*orph.v), cmp_orphan);
		}
	}
	for (size_t k = 0; !r && k < a->nbad; k++) {
		const struct pic_bad *b = &a->bad[k];
		const char *why = NULL;
		int overlap = 0, again = 0;
		for (size_t o = 0; o < k; o++)
			again |= a->bad[o].blk == b->blk;
		if (again)                 /* met through another tree that shares it */
			continue;
		++*distinct;
		for (size_t o = 0; o < a->nbad; o++)
			overlap |= o != k && a->bad[o].lo < b->hi && b->lo < a->bad[o].hi &&
				   a->bad[o].blk != b->blk;
		unsigned n = 0;
		uint64_t owner = 0, end = 0;
		if (b->level < 0)
			why = "a root (its level is not known)";
		else if (overlap)
			why = "another unreadable node covers the same keys";
		else if (b->level > 0 && !have_orphans)
			why = "an interior node (the refcount tree is needed to find its children)";
		else if (b->level > 0) {
			unsigned ne = 0;
			why = rebuild_interior(p, b, &orph, dry, &ne);
			if (!why) {
				say(R, "mapping-tree interior node %" PRIu64 " of volume %" PRIu64 " (level "
				    "%d, logical blocks from %" PRIu64 "): %s from %u nodes below it that "
				    "had lost their parent", b->blk, b->vol, b->level, b->lo,
				    dry ? "would be rebuilt" : "rebuilt", ne);
				++*fixed;
				++*interior;
				continue;
			}
		}
		for (size_t d = 0; !why && d < diff.n; d++) {
			const struct rmap_irec *x = &diff.v[d];
			if (x->lblk < b->lo || x->lblk >= b->hi)
				continue;
			if (x->count != 1)
				why = "the reverse map holds a record it lacks more than once";
			else if (n && x->owner != owner)
				why = "its keys hold records of two lineages";
			else if (n && x->lblk < end)
				why = "the records it would hold overlap";
			else if (n == cap)
				why = "more records than a leaf holds";
			if (why)
				break;
			owner = x->owner;
			end = x->lblk + x->len;
			memset(&recs[n], 0, sizeof(recs[n]));
			recs[n].k.lblk = le64_mk(x->lblk);
			recs[n].v.pblk = le64_mk(x->pblk);
			recs[n].v.len = le32_mk(x->len);
			n++;
		}
		if (!why && !n)
			why = "the reverse map holds nothing for its keys";
		else if (!why && le64_get(recs[0].k.lblk) != b->lo)
			why = "its first record is not at the key its parent gives it";
		if (why) {
			char hi[32] = "the end";
			if (b->hi != UINT64_MAX)
				snprintf(hi, sizeof(hi), "%" PRIu64, b->hi);
			say(R, "not repairable here: mapping-tree block %" PRIu64 " of volume %" PRIu64
			    " (logical blocks %" PRIu64 " to %s): %s", b->blk, b->vol, b->lo, hi, why);
			continue;
		}
		say(R, "mapping-tree leaf %" PRIu64 " of volume %" PRIu64 " (lineage %" PRIu64 "): "
		    "%s from %u reverse-map records (logical blocks %" PRIu64 "..%" PRIu64 ")",
		    b->blk, b->vol, owner, dry ? "would be rebuilt" : "rebuilt", n, b->lo, end);
		if (!dry)
			r = bt_write_leaf(&mt, b->blk, b->txid, owner, recs, n);
		++*fixed;
	}
	free(recs);
	free(orph.v);
	rmap_set_free(&rm);
	rmap_set_free(&diff);
	return r;
}

static int count_rec(void *arg, const void *rec)
{
	(void)rec;
	++*(uint64_t *)arg;
	return 0;
}

static void forward_problem(const char *msg, void *arg)
{
	struct rep *R = arg;
	say(R, "not repairable here: %s", msg);
}

int vbas_repair(struct vbas_pool *p, unsigned flags, void (*cb)(const char *, void *),
		void *arg, struct vbas_repair_stats *stats)
{
	struct rep R = { cb, arg };
	struct vbas_repair_stats st = { 0 };
	struct pic a = { 0 }, b = { 0 };
	int dry = !!(flags & VBAS_REPAIR_DRY_RUN), r;
	vbas_err_clear();
	if (flags & ~VBAS_REPAIR_DRY_RUN)
		return vbas_err(-EINVAL, "repair: unknown flags %#x", flags);
	pool_lock(p);
	if (!dry && p->rdonly) {
		r = vbas_err(-EROFS, "repair: the pool is open read-only");
		goto out;
	}
	if (p->broken) {
		r = vbas_err(-EROFS, "repair: %s", p->broken_msg);
		goto out;
	}
	if (p->dirty || p->sp.qn || p->sp.rq.n || p->sp.pins) {
		r = vbas_err(-EBUSY, "repair: the pool has changes or pins in flight (open it "
			     "with VBAS_OPEN_REPAIR and repair first)");
		goto out;
	}
	/* The name index is derived from the volume table as the reverse
	 * map is from the leaves: one that cannot be read or does not match
	 * is rebuilt, and counts in the pictures only if it stays. */
	int names_ok;
	if ((r = check_names_ok(p, &names_ok)))
		goto out;
	unsigned nf = names_ok ? PIC_NAMES : 0;
	/* The forward trees: the truth, which must be whole.  Leaves that
	 * cannot be read come back from the reverse map first. */
	r = check_picture(p, nf, &a, NULL, NULL);
	if (r)
		goto out;
	/* Rounds: an interior node rebuilt may uncover unreadable nodes
	 * below it (a dry run sees only the first). */
	for (int round = 0; a.problems && a.nbad && round < BT_MAX_DEPTH; round++) {
		unsigned fixed, distinct, interior;
		r = rebuild_leaves(p, &a, dry, &R, &fixed, &distinct, &interior);
		if (r) {
			txn_fail(p, r);
			goto out;
		}
		st.leaves_rebuilt += fixed - interior;
		st.interior_rebuilt += interior;
		if (dry && fixed == distinct) {
			say(&R, "(the nodes below those, the refcount tree and the reverse map are "
			    "looked at once these are back: run repair without --dry-run)");
			goto out;
		}
		if (!fixed || dry || !interior)
			break;
		pic_free(&a);
		r = check_picture(p, nf, &a, NULL, NULL);
		if (r)
			goto out;
	}
	if (a.problems) {
		/* Again, to name what is left. */
		pic_free(&a);
		r = check_picture(p, nf, &a, forward_problem, &R);
		if (r)
			goto out;
	}
	if (a.problems) {
		st.unrepairable = a.problems;
		r = vbas_err(-EUCLEAN, "repair: the volume table or a mapping tree is damaged "
			     "(%" PRIu64 " problem(s)); that is not repaired: nothing was changed",
			     a.problems);
		goto out;
	}
	const struct pic *use = &a;
	int rmap_ok = 1, refc_ok;
	if (p->sp.rmap_on) {
		if ((r = tree_matches(p, &p->sp.rmap, &a, 1, 0, &rmap_ok)))
			goto out;
		/* Interior nodes rebuilt from the nodes that had lost their
		 * parent: if a child was missing (unreadable too), its keys read
		 * as a hole now, and only the reverse map knows better. */
		if (!rmap_ok && st.interior_rebuilt) {
			st.unrepairable = 1;
			r = vbas_err(-EUCLEAN, "repair: after rebuilding %u interior node(s), the "
				     "reverse map holds records no mapping leaf does: a node below them "
				     "is still missing; nothing was changed", st.interior_rebuilt);
			txn_fail(p, r);
			goto out;
		}
		if (rmap_ok) {
			/* The reverse map stays: its nodes are references too. */
			if ((r = check_picture(p, PIC_RMAP | nf, &b, NULL, NULL)))
				goto out;
			use = &b;
		}
	}
	/* The refcount tree against everything, its own nodes included: a
	 * problem reading it is one more than the forward trees had. */
	struct pic all = { 0 };
	r = check_picture(p, PIC_REFC | (rmap_ok && p->sp.rmap_on ? PIC_RMAP : 0) | nf, &all, NULL,
			  NULL);
	if (!r)
		r = tree_matches(p, &p->sp.refc, &all, 0, 0, &refc_ok);
	uint64_t data = 0, meta = 0;
	for (size_t i = 0; i < all.n; i++)
		*(all.v[i].type == VBAS_BT_DATA ? &data : &meta) += all.v[i].len;
	if (all.problems || data != p->sp.data_used || meta != p->sp.meta_used)
		refc_ok = 0;
	pic_free(&all);
	if (r)
		goto out;
	data = meta = 0;
	for (size_t i = 0; i < use->n; i++)
		*(use->v[i].type == VBAS_BT_DATA ? &data : &meta) += use->v[i].len;
	/* A new reverse map or name index is counted in a new refcount
	 * tree. */
	st.rmap_rebuilt = !rmap_ok;
	st.names_rebuilt = !names_ok;
	st.refcount_rebuilt = !refc_ok || !rmap_ok || !names_ok;
	if (!st.refcount_rebuilt && (st.leaves_rebuilt || st.interior_rebuilt)) {
		p->repair_mode = 0;
		p->dirty = 1;
		r = txn_commit(p);
		if (r)
			goto out;
		say(&R, "repaired: committed as generation %" PRIu64, p->gen);
		goto out;
	}
	if (!st.refcount_rebuilt) {
		say(&R, "nothing to repair: the refcount tree%s agree%s with the mapping trees",
		    p->sp.rmap_on ? " and the reverse map" : "", p->sp.rmap_on ? "" : "s");
		goto out;
	}
	if (!rmap_ok)
		say(&R, "the reverse map does not match the mapping leaves (or cannot be read): "
		    "%s from them (%zu records)", dry ? "it would be rebuilt" : "rebuilt",
		    a.fw.n);
	if (!refc_ok)
		say(&R, "the refcount tree does not match the blocks the trees use (or cannot be "
		    "read): %s from them", dry ? "it would be rebuilt" : "rebuilt");
	else if (!rmap_ok)
		say(&R, "the refcount tree %s to count the new reverse map's nodes",
		    dry ? "would be rebuilt" : "is rebuilt");
	if (!names_ok)
		say(&R, "the name index does not match the volume table (or cannot be read): "
		    "%s from it (%" PRIu64 " volumes), and counted in a new refcount tree",
		    dry ? "it would be rebuilt" : "rebuilt", p->nvolumes);
	if (dry)
		goto out;
	/* Room: the new trees, beside everything the last commit holds. */
	uint64_t used = data + meta + p->sp.refc_nodes + (rmap_ok ? 0 : p->sp.rmap_nodes);
	uint64_t need = 2 * (nodes_for(p, &refc_ops, use->n + 2 * a.fw.n / 8 + 64) +
			     (rmap_ok ? 0 : nodes_for(p, &rmap_ops, a.fw.n)) +
			     (names_ok ? 0 : nodes_for(p, &names_ops, p->nvolumes))) + 64;
	uint64_t usable = p->nblocks - VBAS_FIRST_BLOCK;
	if (used + need > usable) {
		r = vbas_err(-ENOSPC, "repair: the new trees may need %" PRIu64 " blocks and %" PRIu64
			     " are free beside the damaged ones: grow the pool (vbas grow) and "
			     "repair again", need, usable > used ? usable - used : 0);
		goto out;
	}
	/* What the last commit holds stays out of the allocator until the
	 * commit: the old trees' nodes as far as they can be read. */
	int ok;
	if ((r = tree_matches(p, &p->sp.refc, use, 0, 1, &ok)))
		goto out;
	if (!rmap_ok && (r = tree_matches(p, &p->sp.rmap, &a, 1, 1, &ok)))
		goto out;
	if (!names_ok && (r = exclude_nodes(p, &p->names)))
		goto out;
	vbas_err_clear();
	r = space_rebuild_refc(p, use->v, use->n);
	if (!r && !rmap_ok)
		r = rmap_load(p, &a.fw);
	if (!r && !names_ok)
		r = names_rebuild(p);
	if (r) {
		txn_fail(p, r);
		goto out;
	}
	p->repair_mode = 0;
	p->dirty = 1;
	r = txn_commit(p);
	if (r) {
		p->repair_mode = 1;
		goto out;
	}
	st.rmap_records = st.rmap_rebuilt ? a.fw.n : 0;
	bt_iter(&p->sp.refc, NULL, count_rec, &st.refcount_records);
	say(&R, "repaired: committed as generation %" PRIu64, p->gen);
out:
	if (!r && !dry && !st.refcount_rebuilt)
		p->repair_mode = 0;                  /* sound: usable as it is */
	pool_unlock(p);
	pic_free(&a);
	pic_free(&b);
	if (stats)
		*stats = st;
	return r;
}
