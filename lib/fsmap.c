/* vbas_fsmap: who uses each block of a physical range.
 *
 * This first implementation walks the trees: the volume table and the
 * refcount tree once, and every volume's mapping tree, keeping the nodes
 * and extents that lie in the range.  A node shared by several mapping
 * trees (snapshots, clones) is walked once: what its subtree gave is
 * remembered (as a span of the result) and given again, under the other
 * volume, each time another tree reaches it.  So the walk reads each node
 * once, and the result holds one record per owner.  Free runs come from
 * the refcount tree (a block without a record is free).  The results are
 * sorted by physical address, merged into runs, and handed to the caller
 * after the pool's lock is let go.  The reverse map (docs/rmap.md) will
 * answer the same query from an interval tree without the walk. */
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
	/* volume ids and names, for the results */
	uint64_t *ids;
	char (*names)[VBAS_NAME_MAX + 1];
	size_t nv, capv;
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
		f->capv = nc;
	}
	unsigned nl = le16_get(v->v.name_len);
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

/* Y continues X: the same owner, next physically (and logically). */
static int continues(const struct frec *x, const struct frec *y)
{
	return x->kind == y->kind && x->volume == y->volume && x->level == y->level &&
	       x->physical + x->length == y->physical &&
	       (x->kind != VBAS_FSMAP_DATA || x->logical + x->length == y->logical);
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
	f->kind = VBAS_FSMAP_REFCOUNT;
	cbs.rec_cb = NULL;
	r = bt_check(&p->sp.refc, &cbs, NULL, NULL);
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
	pthread_mutex_lock(&p->lock);
	uint64_t size = p->nblocks << p->bshift;
	pthread_mutex_unlock(&p->lock);
	if ((off | len) & (p->bs - 1)) {
		return vbas_err(-EINVAL, "fsmap: offset %" PRIu64 " and length %" PRIu64 " must be "
				"multiples of the block size (%u)", off, len, p->bs);
	}
	if (off >= size || (len && len > size - off))
		return vbas_err(-ERANGE, "fsmap: %" PRIu64 "+%" PRIu64 " is past the end of the "
				"pool (%" PRIu64 " bytes)", off, len, size);
	f.lo = off >> p->bshift;
	f.hi = len ? (off + len) >> p->bshift : size >> p->bshift;
	pthread_mutex_lock(&p->lock);
	r = space_drain(p);
	if (r)
		txn_fail(p, r);
	else
		r = walk(&f);
	pthread_mutex_unlock(&p->lock);
	seen_free(&f.seen);
	if (!r && f.oom)
		r = -ENOMEM;
	if (r == -EUCLEAN || r == -EBADMSG) {
		if (!f.damage[0])
			snprintf(f.damage, sizeof(f.damage), "%s", vbas_errmsg());
		vbas_err(r, "fsmap: the pool's metadata is damaged (run vbas check): %s", f.damage);
	}
	if (!r && f.n) {
		qsort(f.r, f.n, sizeof(*f.r), cmp_rec);
		size_t m = 0;
		for (size_t i = 1; i < f.n; i++) {
			if (continues(&f.r[m], &f.r[i]))
				f.r[m].length += f.r[i].length;
			else
				f.r[++m] = f.r[i];
		}
		f.n = m + 1;
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
			size_t lo = 0, hi = f.nv;
			while (lo < hi) {
				size_t mid = (lo + hi) / 2;
				if (f.ids[mid] < y->volume)
					lo = mid + 1;
				else
					hi = mid;
			}
			if (lo < f.nv && f.ids[lo] == y->volume)
				memcpy(x.name, f.names[lo], sizeof(x.name));
		}
		r = cb(&x, arg);
	}
	free(f.r);
	free(f.ids);
	free(f.names);
	return r;
}
