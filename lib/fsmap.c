/* vbas_fsmap: who uses each block of a physical range.
 *
 * With a reverse map (docs/rmap.md) the answer costs O(log n + results):
 * the refcount tree's records over the range give the free runs and the
 * metadata blocks (each read for its header: tree, owner, level, first
 * key), the rmap's interval query gives the data records over the range.
 * A data record (pblk, lineage O, lblk, len) is given to every volume of
 * O's lineage (O and the volumes made from it, by their origins) that maps
 * lblk to pblk, found by a lookup in each; a mapping-tree node likewise to
 * every tree whose path to the node's first key reaches it.
 *
 * Without one (a pool formatted without, or made before format 5) it walks
 * the trees: the volume table and the refcount tree once, and every
 * volume's mapping tree, keeping the nodes and extents that lie in the
 * range.  A node shared by several mapping trees (snapshots, clones) is
 * walked once: what its subtree gave is remembered (as a span of the
 * result) and given again, under the other volume, each time another tree
 * reaches it.  Free runs come from the refcount tree (a block without a
 * record is free).
 *
 * Either way the results are put in one canonical form (runs of one owner
 * merged where they touch or overlap, then sorted by physical address), so
 * the two answers can be compared record for record, and handed to the
 * caller after the pool's lock is let go. */
#include "internal.h"
#include "seen.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A result as the walk keeps it: no name (a record of vbas_fsmap_rec is
 * 300 bytes, most of it the name; a query of a million extents keeps a
 * million of these). */
struct frec {
	uint64_t physical, length, volume, logical;
	uint32_t kind, level;
};

struct fm {
	struct vbas_pool *p;
	uint64_t lo, hi;             /* blocks [lo, hi) */
	struct frec *r;
	size_t n, cap;
	int oom;
	char damage[400];            /* the first problem the walk met */
	int kind;                    /* of the nodes of the tree being walked */
	uint64_t vol;                /* the volume whose tree is walked */
	struct seen_set seen;        /* mapping nodes: v[0], v[1] the span of
	                                results their subtree gave */
	uint64_t stack[BT_MAX_DEPTH + 1], start[BT_MAX_DEPTH + 1];
	unsigned depth;
	/* volume ids, names and records, in id order */
	uint64_t *ids;
	char (*names)[VBAS_NAME_MAX + 1];
	struct vbas_vol_rec *recs;
	size_t nv, capv;
	/* the volumes of each lineage met (rmap): sorted by owner */
	struct lineage { uint64_t owner; uint32_t *v; size_t n; } *lin;
	size_t nlin, caplin;
	/* per volume, the leaf its last lookup ended in (rmap): records in
	 * pblk order mostly continue in the same leaves, and snapshots share
	 * them, so one leaf read serves every volume that reaches it */
	struct vleaf { uint64_t blk, lo, hi; } *vl;
	struct bt_leaf leaf;         /* the leaf read last */
	struct seg { uint64_t pblk, n, lblk; } *segs;
	size_t nseg, capseg;
	uint64_t seg_blk, seg_l0, seg_l1, seg_a;   /* what SEGS answer */
};

static struct frec *fm_add(struct fm *f)
{
	if (f->n == f->cap) {
		size_t nc = f->cap ? 2 * f->cap : 256;
		struct frec *nr = realloc(f->r, nc * sizeof(*nr));
		if (!nr) {
			f->oom = 1;
			return NULL;
		}
		f->r = nr;
		f->cap = nc;
	}
	struct frec *x = &f->r[f->n++];
	memset(x, 0, sizeof(*x));
	return x;
}

/* A record of [pblk, pblk+n), clipped to the range (LOGICAL moves with
 * its start), unless nothing of it lies inside: 0 or -ENOMEM. */
static int fm_put(struct fm *f, uint64_t pblk, uint64_t n, int kind, unsigned level,
		  uint64_t vol, uint64_t logical)
{
	uint64_t e = pblk + n;
	if (e <= f->lo || pblk >= f->hi)
		return 0;
	uint64_t skip = pblk < f->lo ? f->lo - pblk : 0;
	struct frec *x = fm_add(f);
	if (!x)
		return -ENOMEM;
	x->physical = pblk + skip;
	x->length = (e > f->hi ? f->hi : e) - x->physical;
	x->kind = kind;
	x->level = level;
	x->volume = vol;
	x->logical = kind == VBAS_FSMAP_DATA ? logical + skip : 0;
	return 0;
}

static int fm_node(void *arg, uint64_t blkno, unsigned level)
{
	struct fm *f = arg;
	if (f->kind == VBAS_FSMAP_MAPPING) {
		int fresh;
		struct seen *e = seen_get(&f->seen, blkno, &fresh);
		if (!e) {
			f->oom = 1;
			return -ENOMEM;
		}
		if (!fresh) {
			/* Shared with a tree walked before: its records again,
			 * under this volume. */
			for (uint64_t i = e->v[0]; i < e->v[1]; i++) {
				struct frec *x = fm_add(f);
				if (!x)
					return -ENOMEM;
				*x = f->r[i];
				x->volume = f->vol;
			}
			return BT_CHECK_SEEN;
		}
		if (f->depth <= BT_MAX_DEPTH) {
			f->stack[f->depth] = blkno;
			f->start[f->depth] = f->n;
		}
		f->depth++;
	}
	return fm_put(f, blkno, 1, f->kind, level, f->kind == VBAS_FSMAP_MAPPING ? f->vol : 0, 0);
}

static int fm_node_done(void *arg, uint64_t blkno)
{
	struct fm *f = arg;
	int fresh;
	if (f->kind != VBAS_FSMAP_MAPPING || !f->depth)
		return 0;
	f->depth--;
	if (f->depth > BT_MAX_DEPTH || f->stack[f->depth] != blkno)
		return 0;
	struct seen *e = seen_get(&f->seen, blkno, &fresh);
	if (!e) {
		f->oom = 1;
		return -ENOMEM;
	}
	e->v[0] = f->start[f->depth];
	e->v[1] = f->n;
	e->done = 1;
	return 0;
}

static int fm_map_rec(void *arg, const void *rec)
{
	struct fm *f = arg;
	const struct vbas_map_rec *m = rec;
	return fm_put(f, le64_get(m->v.pblk), le32_get(m->v.len), VBAS_FSMAP_DATA, 0, f->vol,
		      le64_get(m->k.lblk));
}

static int fm_vol_rec(void *arg, const void *rec)
{
	struct fm *f = arg;
	const struct vbas_voltab_rec *v = rec;
	if (f->nv == f->capv) {
		size_t nc = f->capv ? 2 * f->capv : 64;
		uint64_t *ni = realloc(f->ids, nc * sizeof(*ni));
		if (!ni)
			return f->oom = 1, -ENOMEM;
		f->ids = ni;
		char (*nn)[VBAS_NAME_MAX + 1] = realloc(f->names, nc * sizeof(*nn));
		if (!nn)
			return f->oom = 1, -ENOMEM;
		f->names = nn;
		struct vbas_vol_rec *nrec = realloc(f->recs, nc * sizeof(*nrec));
		if (!nrec)
			return f->oom = 1, -ENOMEM;
		f->recs = nrec;
		f->capv = nc;
	}
	unsigned nl = le16_get(v->v.name_len);
	if (nl > VBAS_NAME_MAX)
		nl = VBAS_NAME_MAX;
	f->recs[f->nv] = v->v;
	f->ids[f->nv] = le64_get(v->k.id);
	memcpy(f->names[f->nv], v->v.name, nl);
	f->names[f->nv][nl] = 0;
	f->nv++;
	return 0;
}

/* Free runs of [lo, hi): the gaps between refcount records. */
struct gap {
	struct fm *f;
	uint64_t pos;
};

static int fm_free(struct fm *f, uint64_t s, uint64_t e)
{
	return s < e ? fm_put(f, s, e - s, VBAS_FSMAP_FREE, 0, 0, 0) : 0;
}

static int gap_cb(void *arg, const void *rec)
{
	struct gap *g = arg;
	const struct vbas_refc_rec *r = rec;
	uint64_t s = le64_get(r->k.pblk), e = s + le32_get(r->v.len);
	if (s >= g->f->hi)
		return 1;
	if (s > g->pos) {
		int x = fm_free(g->f, g->pos, s);
		if (x)
			return x;
	}
	if (e > g->pos)
		g->pos = e;
	return 0;
}

/* A structural problem met on the way: fsmap stops, naming it. */
static void fm_report(void *arg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fm_report(void *arg, const char *fmt, ...)
{
	struct fm *f = arg;
	va_list ap;
	if (f->damage[0])
		return;
	va_start(ap, fmt);
	vsnprintf(f->damage, sizeof(f->damage), fmt, ap);
	va_end(ap);
}

/* ---- Answered by the reverse map ------------------------------------------ */

static ssize_t vol_index(struct fm *f, uint64_t id)
{
	size_t lo = 0, hi = f->nv;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (f->ids[mid] < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < f->nv && f->ids[lo] == id ? (ssize_t)lo : -1;
}

/* Whether volume I may hold leaves of lineage O: O itself, or made from
 * it (a chain of origins that passes O).  A chain that reaches a deleted
 * volume made after O cannot be followed: the volume counts (the lookups
 * decide); one that reaches a volume older than O cannot come from O. */
static int of_lineage(struct fm *f, size_t i, uint64_t o)
{
	uint64_t id = f->ids[i];
	for (size_t steps = 0; steps <= f->nv; steps++) {
		if (id == o)
			return 1;
		if (id < o)
			return 0;
		ssize_t k = vol_index(f, id);
		if (k < 0)
			return 1;
		id = le64_get(f->recs[k].origin);
		if (!id)
			return 0;
	}
	return 1;                   /* a cycle of origins: let the lookups decide */
}

static struct lineage *lineage_of(struct fm *f, uint64_t o)
{
	size_t lo = 0, hi = f->nlin;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (f->lin[mid].owner < o)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < f->nlin && f->lin[lo].owner == o)
		return &f->lin[lo];
	if (f->nlin == f->caplin) {
		size_t nc = f->caplin ? 2 * f->caplin : 16;
		struct lineage *nl = realloc(f->lin, nc * sizeof(*nl));
		if (!nl)
			return f->oom = 1, NULL;
		f->lin = nl;
		f->caplin = nc;
	}
	struct lineage l = { .owner = o };
	l.v = malloc((f->nv ? f->nv : 1) * sizeof(*l.v));
	if (!l.v)
		return f->oom = 1, NULL;
	for (size_t i = 0; i < f->nv; i++)
		if (of_lineage(f, i, o))
			l.v[l.n++] = (uint32_t)i;
	memmove(&f->lin[lo + 1], &f->lin[lo], (f->nlin - lo) * sizeof(*f->lin));
	f->lin[lo] = l;
	f->nlin++;
	return &f->lin[lo];
}

static int deleting(struct fm *f, size_t i)
{
	return !!(le32_get(f->recs[i].flags) & VBAS_VOLF_DELETING);
}

static int seg_add(struct fm *f, uint64_t pblk, uint64_t n, uint64_t lblk)
{
	if (f->nseg == f->capseg) {
		size_t nc = f->capseg ? 2 * f->capseg : 64;
		struct seg *s = realloc(f->segs, nc * sizeof(*s));
		if (!s)
			return f->oom = 1, -ENOMEM;
		f->segs = s;
		f->capseg = nc;
	}
	f->segs[f->nseg++] = (struct seg){ pblk, n, lblk };
	return 0;
}

/* Where the leaf F->leaf maps [L0, L1) to physical A onwards: F->segs,
 * and *DONE the first logical block past what the leaf's keys cover. */
static int leaf_segs(struct fm *f, const struct vleaf *v, uint64_t a, uint64_t l0, uint64_t l1,
		     uint64_t *done)
{
	const struct vbas_map_rec *rec = f->leaf.recs;
	unsigned n = f->leaf.n;
	f->nseg = 0;
	uint64_t cur = l0, end = l1 < v->hi ? l1 : v->hi;
	/* The last record at or before CUR. */
	unsigned lo = 0, hi = n;
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		if (le64_get(rec[mid].k.lblk) <= cur)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (unsigned i = lo ? lo - 1 : 0; i < n && cur < end; i++) {
		uint64_t rl = le64_get(rec[i].k.lblk), rn = le32_get(rec[i].v.len);
		uint64_t rp = le64_get(rec[i].v.pblk);
		if (rl + rn <= cur)
			continue;
		if (rl >= end)
			break;
		uint64_t s = rl > cur ? rl : cur, e = rl + rn < end ? rl + rn : end;
		if (rp + (s - rl) == a + (s - l0)) {
			int r = seg_add(f, rp + (s - rl), e - s, s);
			if (r)
				return r;
		}
		cur = e;
	}
	f->seg_blk = v->blk;
	f->seg_l0 = l0;
	f->seg_l1 = l1;
	f->seg_a = a;
	*done = end;
	return 0;
}

static int rm_data(void *arg, const struct rmap_irec *x)
{
	struct fm *f = arg;
	uint64_t a = x->pblk > f->lo ? x->pblk : f->lo;
	uint64_t b = x->pblk + x->len < f->hi ? x->pblk + x->len : f->hi;
	if (a >= b)
		return 0;
	struct lineage *l = lineage_of(f, x->owner);
	if (!l)
		return -ENOMEM;
	uint64_t l0 = x->lblk + (a - x->pblk), l1 = l0 + (b - a);
	for (size_t k = 0; k < l->n; k++) {
		struct vbas_btree t;
		uint64_t cur = l0;
		size_t vi = l->v[k];
		if (deleting(f, vi))
			continue;              /* walked (via_rmap) */
		struct vleaf *vl = &f->vl[vi];
		if (!vl->blk || l0 < vl->lo || l0 >= vl->hi || vl->blk != f->leaf.blk) {
			uint8_t key[8];
			vol_map_tree(f->p, f->ids[vi], &f->recs[vi], &t);
			st_le64(key, l0);
			int r = bt_leaf_get(&t, key, &f->leaf);
			if (r)
				return r;
			vl->blk = f->leaf.blk;
			vl->lo = f->leaf.has_lo ? ld_le64(f->leaf.lo) : 0;
			vl->hi = f->leaf.has_hi ? ld_le64(f->leaf.hi) : UINT64_MAX;
			if (!vl->blk)
				continue;          /* an empty tree */
		}
		if (f->seg_blk != vl->blk || f->seg_l0 != l0 || f->seg_l1 != l1 || f->seg_a != a) {
			uint64_t done;
			int r = leaf_segs(f, vl, a, l0, l1, &done);
			if (r)
				return r;
			if (done < l1)
				f->seg_blk = 0;    /* past this leaf: not for reuse */
		}
		for (size_t s = 0; s < f->nseg; s++) {
			int r = fm_put(f, f->segs[s].pblk, f->segs[s].n, VBAS_FSMAP_DATA, 0, f->ids[vi],
				       f->segs[s].lblk);
			if (r)
				return r;
		}
		/* What lies past the leaf's keys: looked up. */
		cur = vl->hi < l1 ? vl->hi : l1;
		if (cur < l1)
			vol_map_tree(f->p, f->ids[vi], &f->recs[vi], &t);
		while (cur < l1) {
			uint64_t pb, len;
			int mapped, r = map_lookup_f(&t, cur, &pb, &len, &mapped, NULL);
			if (r)
				return r;
			uint64_t seg = len < l1 - cur ? len : l1 - cur;
			if (mapped && pb == a + (cur - l0)) {
				r = fm_put(f, pb, seg, VBAS_FSMAP_DATA, 0, f->ids[l->v[k]], cur);
				if (r)
					return r;
			}
			cur += seg;
		}
	}
	return 0;
}

/* Metadata block BLK: read its header, and give it to its tree(s). */
static int rm_node(struct fm *f, uint64_t blk)
{
	uint8_t key[BT_MAX_KEY];
	uint16_t type;
	uint64_t owner, txid;
	unsigned level;
	int r = bt_node_info(&f->p->env, blk, &type, &owner, &level, key, &txid);
	if (r)
		return r;
	switch (type) {
	case VBAS_TREE_VOLTAB:
	case VBAS_TREE_NAMES:              /* the volume table's name index */
		return fm_put(f, blk, 1, VBAS_FSMAP_VOLTAB, level, 0, 0);
	case VBAS_TREE_REFC:
		return fm_put(f, blk, 1, VBAS_FSMAP_REFCOUNT, level, 0, 0);
	case VBAS_TREE_RMAP:
		return fm_put(f, blk, 1, VBAS_FSMAP_RMAP, level, 0, 0);
	case VBAS_TREE_MAP:
		break;
	default:
		return vbas_err(-EUCLEAN, "block %" PRIu64 " is counted as metadata but is a "
				"node of tree type %u", blk, type);
	}
	struct lineage *l = lineage_of(f, owner);
	if (!l)
		return -ENOMEM;
	for (size_t k = 0; k < l->n; k++) {
		struct vbas_btree t;
		int found;
		if (deleting(f, l->v[k]))
			continue;              /* walked (via_rmap) */
		vol_map_tree(f->p, f->ids[l->v[k]], &f->recs[l->v[k]], &t);
		r = bt_reaches(&t, key, level, blk, &found);
		if (r)
			return r;
		if (found && (r = fm_put(f, blk, 1, VBAS_FSMAP_MAPPING, level, f->ids[l->v[k]], 0)))
			return r;
	}
	return 0;
}

struct rm_refc {
	struct fm *f;
	uint64_t pos;
};

static int rm_refc_cb(void *arg, const void *rec)
{
	struct rm_refc *g = arg;
	struct fm *f = g->f;
	const struct vbas_refc_rec *x = rec;
	uint64_t s = le64_get(x->k.pblk), e = s + le32_get(x->v.len);
	int r;
	if (s >= f->hi)
		return 1;
	if (s > g->pos && (r = fm_free(f, g->pos, s)))
		return r;
	if (e > g->pos)
		g->pos = e;
	if (le32_get(x->v.type) != VBAS_BT_META)
		return 0;
	for (uint64_t b = s > f->lo ? s : f->lo; b < e && b < f->hi; b++)
		if ((r = rm_node(f, b)))
			return r;
	return 0;
}

static int via_rmap(struct fm *f)
{
	struct vbas_pool *p = f->p;
	int r = fm_put(f, 0, VBAS_FIRST_BLOCK, VBAS_FSMAP_SUPERBLOCK, 0, 0, 0);
	if (!r)
		r = bt_iter(&p->voltab, NULL, fm_vol_rec, f);
	if (r)
		return r;
	struct vbas_btree mt = { .ops = &map_ops, .env = &p->env };
	f->vl = calloc(f->nv ? f->nv : 1, sizeof(*f->vl));
	f->leaf.recs = malloc((size_t)bt_leaf_cap(&mt) * sizeof(struct vbas_map_rec));
	if (!f->vl || !f->leaf.recs)
		return f->oom = 1, -ENOMEM;
	struct rm_refc g = { f, f->lo > VBAS_FIRST_BLOCK ? f->lo : VBAS_FIRST_BLOCK };
	uint8_t key[8];
	struct vbas_refc_rec before;
	uint64_t start = g.pos;
	st_le64(key, g.pos);
	if (bt_lookup(&p->sp.refc, key, BT_LE, &before) == 0)
		start = le64_get(before.k.pblk);
	st_le64(key, start);
	r = bt_iter(&p->sp.refc, key, rm_refc_cb, &g);
	if (r < 0)
		return r;
	r = fm_free(f, g.pos, f->hi > g.pos ? f->hi : g.pos);
	if (!r)
		r = rmap_query(p, f->lo, f->hi, rm_data, f);
	/* A delete in progress (stopped part way by a full pool, until the
	 * next delete or open finishes it) has released part of its tree,
	 * which lookups cannot tell from the rest: its tree is walked, as
	 * without a reverse map, from its cursor. */
	struct bt_check_cbs cbs = { .report = fm_report, .node_cb = fm_node,
				    .node_done = fm_node_done, .rec_cb = fm_map_rec, .arg = f };
	f->kind = VBAS_FSMAP_MAPPING;
	for (size_t i = 0; !r && i < f->nv; i++) {
		struct vbas_btree t;
		uint8_t from[8];
		if (!deleting(f, i))
			continue;
		vol_map_tree(p, f->ids[i], &f->recs[i], &t);
		st_le64(from, le64_get(f->recs[i].del_cursor));
		cbs.from = from;
		f->vol = f->ids[i];
		f->depth = 0;
		r = bt_check(&t, &cbs, NULL, NULL);
	}
	return r;
}

/* ---- The canonical form ---------------------------------------------------- */

/* Records of one owner that continue each other (physically, and for data
 * at the same logical - physical distance) sort next to each other. */
static int cmp_owner(const void *a, const void *b)
{
	const struct frec *x = a, *y = b;
	if (x->kind != y->kind)
		return x->kind < y->kind ? -1 : 1;
	if (x->volume != y->volume)
		return x->volume < y->volume ? -1 : 1;
	if (x->level != y->level)
		return x->level < y->level ? -1 : 1;
	uint64_t dx = x->logical - x->physical, dy = y->logical - y->physical;
	if (x->kind == VBAS_FSMAP_DATA && dx != dy)
		return dx < dy ? -1 : 1;
	if (x->physical != y->physical)
		return x->physical < y->physical ? -1 : 1;
	return 0;
}

static int cmp_rec(const void *a, const void *b)
{
	const struct frec *x = a, *y = b;
	if (x->physical != y->physical)
		return x->physical < y->physical ? -1 : 1;
	if (x->kind != y->kind)
		return x->kind < y->kind ? -1 : 1;
	if (x->volume != y->volume)
		return x->volume < y->volume ? -1 : 1;
	if (x->logical != y->logical)
		return x->logical < y->logical ? -1 : 1;
	return 0;
}

/* Y (sorted by cmp_owner after X) continues or overlaps X: the same
 * owner, at the same logical - physical distance for data. */
static int continues(const struct frec *x, const struct frec *y)
{
	return x->kind == y->kind && x->volume == y->volume && x->level == y->level &&
	       y->physical <= x->physical + x->length &&
	       (x->kind != VBAS_FSMAP_DATA || x->logical - x->physical == y->logical - y->physical);
}

static int walk(struct fm *f)
{
	struct vbas_pool *p = f->p;
	struct bt_check_cbs cbs = { .report = fm_report, .node_cb = fm_node,
				    .node_done = fm_node_done, .arg = f };
	int r;
	r = fm_put(f, 0, VBAS_FIRST_BLOCK, VBAS_FSMAP_SUPERBLOCK, 0, 0, 0);
	if (r)
		return r;
	f->kind = VBAS_FSMAP_VOLTAB;
	cbs.rec_cb = fm_vol_rec;
	r = bt_check(&p->voltab, &cbs, NULL, NULL);
	if (r)
		return r;
	cbs.rec_cb = NULL;
	if (p->names_on && (r = bt_check(&p->names, &cbs, NULL, NULL)))
		return r;
	f->kind = VBAS_FSMAP_REFCOUNT;
	cbs.rec_cb = NULL;
	r = bt_check(&p->sp.refc, &cbs, NULL, NULL);
	if (r)
		return r;
	f->kind = VBAS_FSMAP_RMAP;
	r = bt_check(&p->sp.rmap, &cbs, NULL, NULL);
	if (r)
		return r;
	f->kind = VBAS_FSMAP_MAPPING;
	cbs.rec_cb = fm_map_rec;
	for (size_t i = 0; i < f->nv; i++) {
		struct vbas_vol_rec rec;
		struct vbas_btree t;
		r = vol_get(p, f->ids[i], &rec);
		if (r)
			return r;
		vol_map_tree(p, f->ids[i], &rec, &t);
		/* A delete in progress has released what lies below its cursor. */
		uint8_t from[8];
		st_le64(from, le64_get(rec.del_cursor));
		cbs.from = (le32_get(rec.flags) & VBAS_VOLF_DELETING) ? from : NULL;
		f->vol = f->ids[i];
		f->depth = 0;
		r = bt_check(&t, &cbs, NULL, NULL);
		if (r)
			return r;
	}
	struct gap g = { f, f->lo > VBAS_FIRST_BLOCK ? f->lo : VBAS_FIRST_BLOCK };
	uint8_t key[8];
	/* From the record that may cover LO. */
	struct vbas_refc_rec before;
	st_le64(key, g.pos);
	uint64_t start = g.pos;
	if (bt_lookup(&p->sp.refc, key, BT_LE, &before) == 0)
		start = le64_get(before.k.pblk);
	st_le64(key, start);
	r = bt_iter(&p->sp.refc, key, gap_cb, &g);
	if (r < 0)
		return r;
	return fm_free(f, g.pos, f->hi > g.pos ? f->hi : g.pos);
}

int vbas_fsmap(struct vbas_pool *p, uint64_t off, uint64_t len,
	       int (*cb)(const struct vbas_fsmap_rec *, void *), void *arg)
{
	struct fm f;
	int r;
	vbas_err_clear();
	if (!cb)
		return vbas_err(-EINVAL, "fsmap: no callback");
	memset(&f, 0, sizeof(f));
	f.p = p;
	pool_lock(p);
	uint64_t size = p->nblocks << p->bshift;
	pool_unlock(p);
	if ((off | len) & (p->bs - 1)) {
		return vbas_err(-EINVAL, "fsmap: offset %" PRIu64 " and length %" PRIu64 " must be "
				"multiples of the block size (%u)", off, len, p->bs);
	}
	if (off >= size || (len && len > size - off))
		return vbas_err(-ERANGE, "fsmap: %" PRIu64 "+%" PRIu64 " is past the end of the "
				"pool (%" PRIu64 " bytes)", off, len, size);
	f.lo = off >> p->bshift;
	f.hi = len ? (off + len) >> p->bshift : size >> p->bshift;
	pool_lock(p);
	r = space_drain(p);
	if (r)
		txn_fail(p, r);
	else if (p->sp.rmap_on && !vbas_tun.fsmap_walk)
		r = via_rmap(&f);
	else
		r = walk(&f);
	pool_unlock(p);
	seen_free(&f.seen);
	if (!r && f.oom)
		r = -ENOMEM;
	if (r == -EUCLEAN || r == -EBADMSG) {
		if (!f.damage[0])
			snprintf(f.damage, sizeof(f.damage), "%s", vbas_errmsg());
		vbas_err(r, "fsmap: the pool's metadata is damaged (run vbas check): %s", f.damage);
	}
	if (!r && f.n) {
		qsort(f.r, f.n, sizeof(*f.r), cmp_owner);
		size_t m = 0;
		for (size_t i = 1; i < f.n; i++) {
			struct frec *x = &f.r[m];
			if (continues(x, &f.r[i])) {
				uint64_t e = f.r[i].physical + f.r[i].length;
				if (e > x->physical + x->length)
					x->length = e - x->physical;
			} else {
				f.r[++m] = f.r[i];
			}
		}
		f.n = m + 1;
		qsort(f.r, f.n, sizeof(*f.r), cmp_rec);
	}
	for (size_t i = 0; !r && i < f.n; i++) {
		const struct frec *y = &f.r[i];
		struct vbas_fsmap_rec x = {
			.physical = y->physical << p->bshift, .length = y->length << p->bshift,
			.kind = (enum vbas_fsmap_kind)y->kind, .level = y->level, .volume = y->volume,
			.logical = y->logical << p->bshift,
		};
		if (y->kind == VBAS_FSMAP_MAPPING || y->kind == VBAS_FSMAP_DATA) {
			/* The ids came in volume table order: ascending. */
			ssize_t k = vol_index(&f, y->volume);
			if (k >= 0)
				memcpy(x.name, f.names[k], sizeof(x.name));
		}
		r = cb(&x, arg);
	}
	free(f.r);
	free(f.ids);
	free(f.names);
	free(f.recs);
	free(f.vl);
	free(f.leaf.recs);
	free(f.segs);
	for (size_t i = 0; i < f.nlin; i++)
		free(f.lin[i].v);
	free(f.lin);
	return r;
}
