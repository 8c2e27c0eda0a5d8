/* vbas_check: recount everything and compare.
 *
 * Walks every tree (volume table, refcount tree, each volume's mapping
 * tree) through btree.c's structural check (checksums on read, key order,
 * exact low/high keys, levels), gathers every reference to a block (each
 * node reference counts one, each mapped block one), sweeps them into runs
 * of equal count, and compares those with the refcount tree record by
 * record (space.c S1, S4, S5).  Then the totals: data/metadata blocks used,
 * mapped blocks per volume, number of volumes, volume ids and names.
 *
 * With a reverse map the check is three-way: the records of every mapping
 * leaf (each leaf once, under the owner in its header) are summed into
 * what the rmap must hold and compared with it record by record (rmap.c
 * R1), and the rmap's counts, summed per block, with the refcount tree
 * (R2, R3).  Every difference names the blocks, the lineage and the
 * volume.
 */
#include "internal.h"
#include "seen.h"
#include "spool.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REPORTS 200

/* A change of the reference count at POS: +1 where a reference begins,
 * -1 past its end (the rmap's counts: +N, -N). */
struct ev {
	uint64_t pos;
	int32_t d;
	uint8_t type;
};

/* A refcount record. */
struct rrec {
	uint64_t start, len;
	uint32_t rc, type;
};

/* Records that spool through a temporary file: every reference (EVS),
 * the refcount tree's records (RR), the mapping leaves' records as the
 * reverse map must hold them (FWS) and its own records (RMS), and the
 * reverse map's counts (RMEV).  Each keeps at most a quarter of the budget
 * in memory (ck_budget). */
struct ck {
	struct vbas_pool *p;
	void (*cb)(const char *, void *);
	void *arg;
	struct vbas_check_stats st;
	struct spool evs, rr, fws, rms, rmev;
	struct rrec last_rr;     /* the refcount record before, for S4 */
	int have_last_rr;
	int oom;
	int err;                 /* a spool failed (its temporary file) */
	/* per volume being walked */
	uint64_t vol_id, vol_blocks, vol_mapped, vol_resv;
	uint64_t owed;           /* summed over live volumes */
	uint64_t prev_end;
	/* reverse map: what the leaves say (FW), what it holds (RM) */
	struct rmap_set fw;      /* repair's picture: the leaves' records */
	uint64_t leaf_owner;
	/* repair: mapping-tree nodes that could not be read */
	struct pic *pic;
	int in_map;
	uint64_t rdata, rmeta;     /* refcount records' blocks of each type */
	/* nodes walked: a node reached again through another reference
	 * (shared by snapshots and clones) counts the reference but is not
	 * walked twice; what its subtree maps is remembered instead */
	struct seen_set seen;    /* v[0] blocks its subtree maps, v[1] of those
	                            in reserved extents, v[2] the end of its
	                            last extent */
	struct walk { uint64_t blk, mapped0, resv0; int memo; } stack[BT_MAX_DEPTH + 1];
	unsigned depth;
	/* volumes */
	uint64_t *vids;
	uint64_t *vhash;         /* names_hash of each one's name */
	char (*vnames)[VBAS_NAME_MAX + 1];
	size_t nv, capv;
	/* the name index's records: hash, id */
	uint64_t (*nkeys)[2];
	size_t nn, capn;
	uint64_t max_id;
};


static void problem(struct ck *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(struct ck *c, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	c->st.problems++;
	if (c->st.problems > MAX_REPORTS || !c->cb)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	c->cb(buf, c->arg);
}

static void report_cb(void *arg, const char *fmt, ...)
{
	struct ck *c = arg;
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	problem(c, "%s", buf);
}

/* A spool failed: the walk stops (its message is set). */
static int ck_fail(struct ck *c, int r)
{
	if (!c->err)
		c->err = r;
	if (r == -ENOMEM)
		c->oom = 1;
	return r;
}

static int add_ev(struct ck *c, struct spool *s, uint64_t pos, int32_t d, int type)
{
	struct ev e;
	memset(&e, 0, sizeof(e));
	e.pos = pos;
	e.d = d;
	e.type = (uint8_t)type;
	int r = spool_add(s, &e);
	return r ? ck_fail(c, r) : 0;
}

static int add_ref(struct ck *c, uint64_t start, uint64_t len, int type)
{
	int r = add_ev(c, &c->evs, start, +1, type);
	return r ? r : add_ev(c, &c->evs, start + len, -1, type);
}

static int cmp_ev(const void *a, const void *b)
{
	const struct ev *x = a, *y = b;
	return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static int cmp_rrec(const void *a, const void *b)
{
	const struct rrec *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

static int cmp_rmap_irec(const void *a, const void *b)
{
	return rmap_irec_cmp(a, b);
}

/* Memory for the spools: a quarter of the pool's cache size (1 MiB at
 * least), shared by the five; reading one takes about as much again for
 * its runs' buffers.  So a check holds the cache and at most half its size
 * again for what it counts, whatever the pool's size.  Tests set less. */
static void ck_spools(struct ck *c)
{
	struct cache_stats cs;
	cache_stats(c->p->cache, &cs);
	size_t budget = vbas_tun.check_spool ? vbas_tun.check_spool :
			cs.max_blocks * c->p->bs / 4;
	if (budget < (1u << 20) && !vbas_tun.check_spool)
		budget = 1u << 20;
	spool_init(&c->evs, sizeof(struct ev), cmp_ev, budget / 5);
	spool_init(&c->rr, sizeof(struct rrec), cmp_rrec, budget / 5);
	spool_init(&c->fws, sizeof(struct rmap_irec), cmp_rmap_irec, budget / 5);
	spool_init(&c->rms, sizeof(struct rmap_irec), cmp_rmap_irec, budget / 5);
	spool_init(&c->rmev, sizeof(struct ev), cmp_ev, budget / 5);
}

/* Reading a spool in order, one record ahead. */
struct cur {
	struct spool *s;
	int have;
	union {
		struct ev e;
		struct rrec r;
		struct rmap_irec m;
	} u;
};

static int cur_next(struct ck *c, struct cur *k)
{
	int r = spool_next(k->s, &k->u);
	if (r < 0) {
		k->have = 0;
		return ck_fail(c, r);
	}
	k->have = r;
	return 0;
}

static int cur_start(struct ck *c, struct cur *k, struct spool *s)
{
	k->s = s;
	k->have = 0;
	int r = spool_rewind(s);
	return r ? ck_fail(c, r) : cur_next(c, k);
}

/* The next rmap record with equal keys summed into one: 1, or 0 at the
 * end (or on an error, in C->ERR). */
static int cur_sum(struct ck *c, struct cur *k, struct rmap_irec *out)
{
	if (!k->have)
		return 0;
	*out = k->u.m;
	for (;;) {
		if (cur_next(c, k) || !k->have || rmap_irec_cmp(&k->u.m, out))
			return 1;
		out->count += k->u.m.count;
	}
}

static int node_cb(void *arg, uint64_t blkno, unsigned level)
{
	struct ck *c = arg;
	int fresh;
	(void)level;
	if (!(++c->st.nodes & 255)) {
		int e = pool_progress(c->p, "check", c->st.nodes, c->p->sp.meta_used);
		if (e)
			return e;
	}
	if (blkno >= c->p->nblocks) {
		problem(c, "tree node %" PRIu64 " is past the end of the pool", blkno);
		return 0;
	}
	int r = add_ref(c, blkno, 1, VBAS_BT_META);
	if (r)
		return r;
	/* Only a node that more than one tree holds can be reached twice:
	 * the refcount tree says which (a node it counts once but that is
	 * reached twice is walked twice, and its children's counts then
	 * differ from the tree's: found all the same).  So what is kept in
	 * memory grows with the shared nodes, not with all of them. */
	int memo = 1;
	if (c->in_map) {
		uint32_t rc;
		int type;
		memo = space_refcount(c->p, blkno, &rc, &type) || rc > 1;
		vbas_err_clear();
	}
	if (!memo) {
		if (c->depth <= BT_MAX_DEPTH)
			c->stack[c->depth] = (struct walk){ blkno, c->vol_mapped, c->vol_resv, 0 };
		c->depth++;
		return 0;
	}
	struct seen *e = seen_get(&c->seen, blkno, &fresh);
	if (!e) {
		c->oom = 1;
		return -ENOMEM;
	}
	if (!fresh) {
		/* A second reference: a node shared between mapping trees. */
		if (!e->done) {
			problem(c, "tree node %" PRIu64 " is its own descendant", blkno);
			return -EUCLEAN;
		}
		c->vol_mapped += e->v[0];
		c->vol_resv += e->v[1];
		if (e->v[2] > c->vol_blocks)
			problem(c, "volume %" PRIu64 ": shared subtree at node %" PRIu64 " maps up to "
				"block %" PRIu64 ", past the end of the volume (%" PRIu64 " blocks)",
				c->vol_id, blkno, e->v[2], c->vol_blocks);
		if (e->v[2] > c->prev_end)
			c->prev_end = e->v[2];
		return BT_CHECK_SEEN;
	}
	if (c->depth <= BT_MAX_DEPTH)
		c->stack[c->depth] = (struct walk){ blkno, c->vol_mapped, c->vol_resv, 1 };
	c->depth++;
	return 0;
}

static int node_done(void *arg, uint64_t blkno)
{
	struct ck *c = arg;
	int fresh;
	if (!c->depth)
		return 0;
	c->depth--;
	if (c->depth > BT_MAX_DEPTH || c->stack[c->depth].blk != blkno || !c->stack[c->depth].memo)
		return 0;
	struct seen *e = seen_get(&c->seen, blkno, &fresh);
	if (!e) {
		c->oom = 1;
		return -ENOMEM;
	}
	e->v[0] = c->vol_mapped - c->stack[c->depth].mapped0;
	e->v[1] = c->vol_resv - c->stack[c->depth].resv0;
	e->v[2] = c->prev_end;
	e->done = 1;
	return 0;
}

static int map_rec_cb(void *arg, const void *rec)
{
	struct ck *c = arg;
	const struct vbas_map_rec *r = rec;
	uint64_t l = le64_get(r->k.lblk), pb = le64_get(r->v.pblk), n = le32_get(r->v.len);
	c->st.extents++;
	if (l < c->prev_end)
		problem(c, "volume %" PRIu64 ": extent at block %" PRIu64 " overlaps the one before",
			c->vol_id, l);
	c->prev_end = l + n;
	if (l + n > c->vol_blocks)
		problem(c, "volume %" PRIu64 ": extent %" PRIu64 "+%" PRIu64 " maps past the end "
			"of the volume (%" PRIu64 " blocks)", c->vol_id, l, n, c->vol_blocks);
	if (pb + n > c->p->nblocks || pb + n < pb) {
		problem(c, "volume %" PRIu64 ": extent at block %" PRIu64 " maps to physical %"
			PRIu64 "+%" PRIu64 ", past the end of the pool", c->vol_id, l, pb, n);
		return 0;
	}
	c->vol_mapped += n;
	if (le32_get(r->v.flags) & VBAS_MAPF_RESERVED)
		c->vol_resv += n;
	if (c->p->sp.rmap_on) {
		/* Repair keeps them in memory (its picture); check spools them. */
		if (c->pic) {
			if (rmap_set_add(&c->fw, pb, c->leaf_owner, l, (uint32_t)n, 1)) {
				c->oom = 1;
				return -ENOMEM;
			}
		} else {
			struct rmap_irec m = { pb, c->leaf_owner, l, (uint32_t)n, 1 };
			int e = spool_add(&c->fws, &m);
			if (e)
				return ck_fail(c, e);
		}
	}
	return add_ref(c, pb, n, VBAS_BT_DATA);
}

static int bad_node_cb(void *arg, uint64_t blkno, uint64_t txid, int level, const void *lo,
		       const void *hi)
{
	struct ck *c = arg;
	struct pic *pc = c->pic;
	if (!pc || !c->in_map)
		return 0;
	if (pc->nbad == pc->capbad) {
		size_t nc = pc->capbad ? 2 * pc->capbad : 16;
		struct pic_bad *v = realloc(pc->bad, nc * sizeof(*v));
		if (!v) {
			c->oom = 1;
			return -ENOMEM;
		}
		pc->bad = v;
		pc->capbad = nc;
	}
	pc->bad[pc->nbad++] = (struct pic_bad){ blkno, txid, c->vol_id, lo ? ld_le64(lo) : 0,
						hi ? ld_le64(hi) : UINT64_MAX, level };
	return 0;
}

static int leaf_cb(void *arg, uint64_t blkno, uint64_t owner)
{
	struct ck *c = arg;
	(void)blkno;
	c->leaf_owner = owner;
	return 0;
}

static int rmap_rec_cb(void *arg, const void *rec)
{
	struct ck *c = arg;
	struct rmap_irec ir;
	rmap_to_irec(rec, &ir);
	c->st.rmap_records++;
	int r = spool_add(&c->rms, &ir);
	return r ? ck_fail(c, r) : 0;
}

static int vol_rec_cb(void *arg, const void *rec)
{
	struct ck *c = arg;
	const struct vbas_voltab_rec *r = rec;
	if (c->nv == c->capv) {
		size_t n = c->capv ? c->capv * 2 : 64;
		uint64_t *ids = realloc(c->vids, n * sizeof(*ids));
		if (ids)
			c->vids = ids;
		void *nm = ids ? realloc(c->vnames, n * sizeof(*c->vnames)) : NULL;
		if (nm)
			c->vnames = nm;
		uint64_t *vh = nm ? realloc(c->vhash, n * sizeof(*vh)) : NULL;
		if (!ids || !nm || !vh) {
			c->oom = 1;
			return -ENOMEM;
		}
		c->vhash = vh;
		c->capv = n;
	}
	c->vids[c->nv] = le64_get(r->k.id);
	unsigned nl = le16_get(r->v.name_len);
	if (nl > VBAS_NAME_MAX)
		nl = VBAS_NAME_MAX;
	memcpy(c->vnames[c->nv], r->v.name, nl);
	c->vnames[c->nv][nl] = 0;
	c->vhash[c->nv] = names_hash((const char *)r->v.name, nl);
	if (le32_get(r->v.flags) & VBAS_VOLF_DELETING) {
		c->vnames[c->nv][0] = 0;      /* its name is free for reuse */
	} else {
		size_t at;
		const char *why = name_problem((const char *)r->v.name, nl, &at);
		char shown[4 * VBAS_NAME_MAX + 8];
		if (why)
			problem(c, "volume %" PRIu64 ": its name '%s' %s (byte %zu): an older vbas "
				"allowed it, but NBD export names and JSON cannot carry it; create "
				"a copy under another name (vbas snapshot or clone) and delete it",
				le64_get(r->k.id), name_shown((const char *)r->v.name, nl, shown,
							     sizeof(shown)), why, at);
	}
	c->nv++;
	return 0;
}

static const char *vol_name(struct ck *c, uint64_t id)
{
	for (size_t i = 0; i < c->nv; i++)
		if (c->vids[i] == id)
			return c->vnames[i][0] ? c->vnames[i] : "(being deleted)";
	return "(no such volume)";
}

/* R1: the rmap against the leaves, record by record (both sorted); the
 * rmap's counts go to C->RMEV on the way, for R2 and R3. */
static void compare_rmap(struct ck *c)
{
	struct cur i, j;
	struct rmap_irec x, y;
	if (cur_start(c, &i, &c->fws) || cur_start(c, &j, &c->rms))
		return;
	int hx = cur_sum(c, &i, &x), hy = cur_sum(c, &j, &y);
	while (!c->err && (hx || hy)) {
		int d = !hx ? 1 : !hy ? -1 : rmap_irec_cmp(&x, &y);
		const struct rmap_irec *m = d <= 0 ? &x : &y;
		int64_t in_leaves = d <= 0 ? x.count : 0;
		int64_t in_rmap = d >= 0 ? y.count : 0;
		if (in_leaves != in_rmap)
			problem(c, "blocks %" PRIu64 "+%u (volume %" PRIu64 " '%s' block %" PRIu64
				"): %" PRId64 " mapping leaf(s) of that volume's lineage hold them, "
				"the reverse map says %" PRId64, m->pblk, m->len, m->owner,
				vol_name(c, m->owner), m->lblk, in_leaves, in_rmap);
		if (d >= 0) {
			int32_t n = y.count > INT32_MAX ? INT32_MAX : (int32_t)y.count;
			if (add_ev(c, &c->rmev, y.pblk, n, VBAS_BT_DATA) ||
			    add_ev(c, &c->rmev, y.pblk + y.len, -n, VBAS_BT_DATA))
				return;
		}
		if (d <= 0)
			hx = cur_sum(c, &i, &x);
		if (d >= 0)
			hy = cur_sum(c, &j, &y);
	}
}

/* The refcount record at block POS (*RC 0, *TYPE 0: none), records
 * before it passed (K), and *NEXT cut to where that answer changes. */
static void refc_at(struct ck *c, struct cur *k, uint64_t pos, uint64_t *next, uint32_t *rc,
		    int *type)
{
	while (k->have && k->u.r.start + k->u.r.len <= pos)
		if (cur_next(c, k))
			break;
	*rc = 0;
	*type = 0;
	if (k->have && k->u.r.start <= pos) {
		*rc = k->u.r.rc;
		*type = (int)k->u.r.type;
		if (k->u.r.start + k->u.r.len < *next)
			*next = k->u.r.start + k->u.r.len;
	} else if (k->have && k->u.r.start < *next) {
		*next = k->u.r.start;
	}
}

/* R2, R3: the rmap's counts summed per block against the refcount tree. */
static void compare_rmap_counts(struct ck *c)
{
	struct cur e, rr;
	if (cur_start(c, &e, &c->rmev) || cur_start(c, &rr, &c->rr))
		return;
	int64_t sum = 0;
	uint64_t pos = VBAS_FIRST_BLOCK, end = c->p->nblocks;
	while (pos < end && !c->err) {
		while (e.have && e.u.e.pos <= pos) {
			sum += e.u.e.d;
			if (cur_next(c, &e))
				return;
		}
		uint64_t next = e.have && e.u.e.pos < end ? e.u.e.pos : end;
		uint32_t rc;
		int type;
		refc_at(c, &rr, pos, &next, &rc, &type);
		if (sum && type == VBAS_BT_META)
			problem(c, "blocks %" PRIu64 "+%" PRIu64 " are metadata, but the reverse map "
				"gives them %" PRId64 " data owner(s)", pos, next - pos, sum);
		else if (type != VBAS_BT_META && sum != (int64_t)rc)
			problem(c, "blocks %" PRIu64 "+%" PRIu64 ": the refcount tree says %u "
				"reference(s), the reverse map's owners %" PRId64, pos, next - pos,
				rc, sum);
		pos = next;
	}
}

static int refc_rec_cb(void *arg, const void *rec)
{
	struct ck *c = arg;
	const struct vbas_refc_rec *r = rec;
	uint64_t s = le64_get(r->k.pblk), n = le32_get(r->v.len);
	uint32_t t = le32_get(r->v.type), rc = le32_get(r->v.refcount);
	c->st.refcount_records++;
	if (s < VBAS_FIRST_BLOCK || s + n > c->p->nblocks)
		problem(c, "refcount record %" PRIu64 "+%" PRIu64 " lies outside the pool's "
			"blocks [%u, %" PRIu64 ")", s, n, VBAS_FIRST_BLOCK, c->p->nblocks);
	if (c->have_last_rr) {
		const struct rrec *pv = &c->last_rr;
		if (pv->start + pv->len > s)
			problem(c, "refcount records at %" PRIu64 " and %" PRIu64 " overlap",
				pv->start, s);
		else if (pv->start + pv->len == s && pv->type == t && pv->rc == rc)
			problem(c, "refcount records at %" PRIu64 " and %" PRIu64 " should be one "
				"(same count %u and type)", pv->start, s, rc);
	}
	if (t == VBAS_BT_DATA)
		c->rdata += n;
	else if (t == VBAS_BT_META)
		c->rmeta += n;
	c->last_rr = (struct rrec){ s, n, rc, t };
	c->have_last_rr = 1;
	int e = spool_add(&c->rr, &c->last_rr);
	return e ? ck_fail(c, e) : 0;
}

static const char *tname(int t)
{
	return t == VBAS_BT_DATA ? "data" : t == VBAS_BT_META ? "metadata" : "?";
}

struct vname {
	const char *name;
	size_t i;
};

static int cmp_vname(const void *a, const void *b)
{
	const struct vname *x = a, *y = b;
	int r = strcmp(x->name, y->name);
	return r ? r : x->i < y->i ? -1 : x->i > y->i;
}

/* Two live volumes of one name; sorted, so that tens of thousands of
 * snapshots take no longer to check than to walk. */
static void dup_names(struct ck *c)
{
	struct vname *v = malloc((c->nv ? c->nv : 1) * sizeof(*v));
	if (!v) {
		c->oom = 1;
		return;
	}
	for (size_t i = 0; i < c->nv; i++)
		v[i] = (struct vname){ c->vnames[i], i };
	qsort(v, c->nv, sizeof(*v), cmp_vname);
	for (size_t k = 1; k < c->nv; k++)
		if (v[k].name[0] && !strcmp(v[k].name, v[k - 1].name))
			problem(c, "volumes %" PRIu64 " and %" PRIu64 " are both named '%s'",
				c->vids[v[k - 1].i], c->vids[v[k].i], v[k].name);
	free(v);
}

static int name_rec_cb(void *arg, const void *rec)
{
	struct ck *c = arg;
	const struct vbas_name_key *k = rec;
	if (c->nn == c->capn) {
		size_t n = c->capn ? c->capn * 2 : 64;
		void *nk = realloc(c->nkeys, n * sizeof(*c->nkeys));
		if (!nk) {
			c->oom = 1;
			return -ENOMEM;
		}
		c->nkeys = nk;
		c->capn = n;
	}
	c->nkeys[c->nn][0] = le64_get(k->hash);
	c->nkeys[c->nn][1] = le64_get(k->id);
	c->nn++;
	return 0;
}

/* The name index against the volume table: each record names a volume
 * whose name has its hash, and there are as many records as volumes (the
 * tree's keys are unique, so that is one each). */
static void check_names(struct ck *c)
{
	for (size_t k = 0; k < c->nn; k++) {
		uint64_t h = c->nkeys[k][0], id = c->nkeys[k][1];
		size_t lo = 0, hi = c->nv;    /* the ids come in order */
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			if (c->vids[mid] < id)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo == c->nv || c->vids[lo] != id)
			problem(c, "name index: volume id %" PRIu64 " is in it, but not in the volume "
				"table", id);
		else if (c->vhash[lo] != h)
			problem(c, "name index: volume id %" PRIu64 " is filed under hash %016" PRIx64
				", not its name's (%016" PRIx64 ")", id, h, c->vhash[lo]);
	}
	if (c->nn != c->nv)
		problem(c, "name index: %zu records for %zu volumes", c->nn, c->nv);
}

/* Compare the references found with the refcount tree: both as
 * piecewise-constant functions of the block number, read in order. */
static void compare_counts(struct ck *c)
{
	struct cur e, rr;
	if (cur_start(c, &e, &c->evs) || cur_start(c, &rr, &c->rr))
		return;
	int64_t cd = 0, cm = 0;
	uint64_t pos = VBAS_FIRST_BLOCK, end = c->p->nblocks;
	while (pos < end && !c->err) {
		while (e.have && e.u.e.pos <= pos) {
			if (e.u.e.type == VBAS_BT_DATA)
				cd += e.u.e.d;
			else
				cm += e.u.e.d;
			if (cur_next(c, &e))
				return;
		}
		uint64_t next = e.have && e.u.e.pos < end ? e.u.e.pos : end;
		uint32_t trc;
		int ttype;
		refc_at(c, &rr, pos, &next, &trc, &ttype);
		int64_t found = cd + cm;
		if (cd && cm)
			problem(c, "blocks %" PRIu64 "+%" PRIu64 " are used both as data (%" PRId64
				" references) and as metadata (%" PRId64 ")", pos, next - pos, cd, cm);
		else if (found != trc)
			problem(c, "blocks %" PRIu64 "+%" PRIu64 ": the refcount tree says %u "
				"reference(s), %" PRId64 " found", pos, next - pos, trc, found);
		else if (found && ttype != (cm ? VBAS_BT_META : VBAS_BT_DATA))
			problem(c, "blocks %" PRIu64 "+%" PRIu64 " are counted as %s but used as %s",
				pos, next - pos, tname(ttype), cm ? "metadata" : "data");
		pos = next;
	}
}

static void ck_free(struct ck *c)
{
	if (c->evs.rsize) {          /* (ck_spools made them) */
		spool_free(&c->evs);
		spool_free(&c->rr);
		spool_free(&c->fws);
		spool_free(&c->rms);
		spool_free(&c->rmev);
	}
	free(c->vids);
	free(c->vnames);
	free(c->vhash);
	free(c->nkeys);
	rmap_set_free(&c->fw);
	seen_free(&c->seen);
}

enum { CK_REFC = PIC_REFC, CK_RMAP = PIC_RMAP, CK_NAMES = PIC_NAMES };

/* Walk the volume table, every mapping tree and, as WHAT says, the
 * refcount tree and the reverse map: every reference to a block into
 * C->refs, the mapping leaves' records into C->fw (with a reverse map),
 * every problem to problem().  Negative: the walk could not go on. */
static int walk_trees(struct ck *c, const struct bt_check_cbs *cbs_in, unsigned what)
{
	struct vbas_pool *p = c->p;
	struct bt_check_cbs cbs = *cbs_in;
	int r;
	/* Volume table. */
	cbs.rec_cb = vol_rec_cb;
	r = bt_check(&p->voltab, &cbs, NULL, NULL);
	if (r < 0 && r != -EUCLEAN)
		return r;
	/* Refcount tree. */
	if (what & CK_REFC) {
		cbs.rec_cb = refc_rec_cb;
		r = bt_check(&p->sp.refc, &cbs, NULL, NULL);
		if (r < 0 && r != -EUCLEAN)
			return r;
	}
	/* Reverse map. */
	if (p->sp.rmap_on && (what & CK_RMAP)) {
		cbs.rec_cb = rmap_rec_cb;
		r = bt_check(&p->sp.rmap, &cbs, NULL, NULL);
		if (r < 0 && r != -EUCLEAN)
			return r;
	} else if (!p->sp.rmap_on && p->sp.rmap.root) {
		problem(c, "the pool keeps no reverse map, but has a root for one");
	}
	/* Name index. */
	if (p->names_on && (what & CK_NAMES)) {
		cbs.rec_cb = name_rec_cb;
		r = bt_check(&p->names, &cbs, NULL, NULL);
		if (r < 0 && r != -EUCLEAN)
			return r;
		if (!c->oom)
			check_names(c);
	} else if (!p->names_on && p->names.root) {
		problem(c, "the pool keeps no name index, but has a root for one");
	}
	dup_names(c);
	/* Each volume's mapping tree. */
	for (size_t i = 0; i < c->nv && !c->oom; i++) {
		struct vbas_vol_rec rec;
		struct vbas_btree t;
		r = vol_get(p, c->vids[i], &rec);
		if (r) {
			problem(c, "volume %" PRIu64 ": %s", c->vids[i], vbas_errmsg());
			continue;
		}
		c->st.volumes++;
		if (c->vids[i] >= p->next_vol_id)
			problem(c, "volume id %" PRIu64 " is not below the next id to hand out (%" PRIu64 ")",
				c->vids[i], p->next_vol_id);
		if (le64_get(rec.size) % p->bs)
			problem(c, "volume %" PRIu64 ": size %" PRIu64 " is not a multiple of the "
				"block size", c->vids[i], le64_get(rec.size));
		vol_map_tree(p, c->vids[i], &rec, &t);
		c->vol_id = c->vids[i];
		c->vol_blocks = le64_get(rec.size) >> p->bshift;
		c->vol_mapped = 0;
		c->vol_resv = 0;
		c->prev_end = 0;
		c->depth = 0;
		cbs.rec_cb = map_rec_cb;
		c->in_map = 1;
		/* A delete in progress: the part below the cursor is gone. */
		int deleting = !!(le32_get(rec.flags) & VBAS_VOLF_DELETING);
		uint8_t from[8];
		st_le64(from, le64_get(rec.del_cursor));
		cbs.from = deleting ? from : NULL;
		if (!deleting && le64_get(rec.owed) > le64_get(rec.resv_blocks))
			problem(c, "volume %" PRIu64 ": owes %" PRIu64 " blocks, more than its %"
				PRIu64 " reserved blocks", c->vids[i], le64_get(rec.owed),
				le64_get(rec.resv_blocks));
		if (!deleting && (le32_get(rec.flags) & VBAS_VOLF_READONLY) && le64_get(rec.owed))
			problem(c, "volume %" PRIu64 ": a snapshot that owes %" PRIu64 " blocks",
				c->vids[i], le64_get(rec.owed));
		if (!deleting)
			c->owed += le64_get(rec.owed);
		if (le64_get(rec.origin) >= p->next_vol_id)
			problem(c, "volume %" PRIu64 ": origin %" PRIu64 " was never handed out",
				c->vids[i], le64_get(rec.origin));
		if (le64_get(rec.share_gen) > p->env.txid)
			problem(c, "volume %" PRIu64 ": shared in transaction %" PRIu64 ", which has "
				"not happened yet", c->vids[i], le64_get(rec.share_gen));
		r = bt_check(&t, &cbs, NULL, NULL);
		cbs.from = NULL;
		if (r < 0 && r != -EUCLEAN)
			return r;
		if (!deleting && c->vol_mapped != le64_get(rec.mapped))
			problem(c, "volume %" PRIu64 " ('%s'): records %" PRIu64 " mapped blocks, "
				"its tree maps %" PRIu64, c->vids[i], c->vnames[i], le64_get(rec.mapped),
				c->vol_mapped);
		if (!deleting && c->vol_resv != le64_get(rec.resv_blocks))
			problem(c, "volume %" PRIu64 " ('%s'): records %" PRIu64 " reserved blocks, "
				"its tree marks %" PRIu64, c->vids[i], c->vnames[i],
				le64_get(rec.resv_blocks), c->vol_resv);
	}
	if (c->nv != p->nvolumes)
		problem(c, "the superblock counts %" PRIu64 " volumes, the volume table holds %zu",
			p->nvolumes, c->nv);
	if (c->owed > space_free_blocks(p))
		problem(c, "volumes owe %" PRIu64 " blocks for copies of shared reserved blocks, "
			"but only %" PRIu64 " are free", c->owed, space_free_blocks(p));
	return 0;
}

int vbas_check(struct vbas_pool *p, void (*cb)(const char *, void *), void *arg,
	       struct vbas_check_stats *stats)
{
	struct ck c = { .p = p, .cb = cb, .arg = arg };
	struct bt_check_cbs cbs = { .report = report_cb, .node_cb = node_cb,
				    .node_done = node_done, .leaf_cb = leaf_cb, .arg = &c };
	int r;

	vbas_err_clear();
	pool_lock(p);
	ck_spools(&c);
	r = space_drain(p);
	if (r) {
		txn_fail(p, r);
		goto out;
	}
	r = pool_progress(p, "check", 0, p->sp.meta_used);
	if (!r)
		r = walk_trees(&c, &cbs, CK_REFC | CK_RMAP | CK_NAMES);
	if (r < 0)
		goto out;
	if (!c.oom && !c.err)
		compare_counts(&c);
	if (!c.oom && !c.err && p->sp.rmap_on) {
		compare_rmap(&c);
		compare_rmap_counts(&c);
	}
	if (c.err && !c.oom) {
		r = c.err;             /* its message is set */
		goto out;
	}
	if (c.rdata != p->sp.data_used)
		problem(&c, "data blocks in use: counted %" PRIu64 ", the refcount tree holds %" PRIu64,
			p->sp.data_used, c.rdata);
	if (c.rmeta != p->sp.meta_used)
		problem(&c, "metadata blocks in use: counted %" PRIu64 ", the refcount tree holds %"
			PRIu64, p->sp.meta_used, c.rmeta);
	if (c.oom)
		r = vbas_err(-ENOMEM, "check: out of memory");
	else
		r = c.st.problems ? vbas_err(-EUCLEAN, "check found %" PRIu64 " problem(s)",
					    c.st.problems) : 0;
out:
	pool_unlock(p);
	ck_free(&c);
	if (stats)
		*stats = c.st;
	return r;
}

/* ---- The reference picture, for repair ----------------------------------- */

int check_names_ok(struct vbas_pool *p, int *ok)
{
	struct ck c = { .p = p };
	struct bt_check_cbs cbs = { .report = report_cb, .rec_cb = vol_rec_cb, .arg = &c };
	*ok = 1;
	if (!p->names_on)
		return 0;
	int r = bt_check(&p->voltab, &cbs, NULL, NULL);
	if (r >= 0 || r == -EUCLEAN) {
		cbs.rec_cb = name_rec_cb;
		r = bt_check(&p->names, &cbs, NULL, NULL);
	}
	if (!c.oom && (r >= 0 || r == -EUCLEAN || r == -EBADMSG || r == -EIO))
		check_names(&c);
	*ok = !c.oom && r >= 0 && !c.st.problems;
	ck_free(&c);
	vbas_err_clear();
	return c.oom ? -ENOMEM : 0;
}

int check_picture(struct vbas_pool *p, unsigned what, struct pic *out,
		  void (*cb)(const char *, void *), void *arg)
{
	struct ck c = { .p = p, .cb = cb, .arg = arg, .pic = out };
	struct bt_check_cbs cbs = { .report = report_cb, .node_cb = node_cb,
				    .node_done = node_done, .leaf_cb = leaf_cb,
				    .bad_node = bad_node_cb, .arg = &c };
	memset(out, 0, sizeof(*out));
	ck_spools(&c);
	int r = walk_trees(&c, &cbs, what);
	if (!r && c.oom)
		r = -ENOMEM;
	if (!r && c.err)
		r = c.err;
	struct cur e;
	if (!r && cur_start(&c, &e, &c.evs))
		r = c.err;
	/* Runs of equal count and type, maximal (as refcount records). */
	int64_t cd = 0, cm = 0;
	while (!r && e.have) {
		uint64_t pos = e.u.e.pos;
		while (e.have && e.u.e.pos == pos) {
			*(e.u.e.type == VBAS_BT_DATA ? &cd : &cm) += e.u.e.d;
			if (cur_next(&c, &e)) {
				r = c.err;
				break;
			}
		}
		if (r || !e.have || (!cd && !cm))
			continue;
		uint64_t next = e.u.e.pos;
		if (cd && cm) {
			problem(&c, "blocks %" PRIu64 "+%" PRIu64 " are used both as data and as "
				"metadata", pos, next - pos);
			continue;
		}
		int type = cd ? VBAS_BT_DATA : VBAS_BT_META;
		int64_t n = cd ? cd : cm;
		if (n > 0x7fffffff) {
			problem(&c, "blocks %" PRIu64 "+%" PRIu64 ": %" PRId64 " references",
				pos, next - pos, n);
			continue;
		}
		struct pic_run *l = out->n ? &out->v[out->n - 1] : NULL;
		if (l && l->start + l->len == pos && l->count == n && l->type == type &&
		    l->len + (next - pos) <= 0xffffffffu) {
			l->len += next - pos;
			continue;
		}
		if (out->n == out->cap) {
			size_t nc = out->cap ? 2 * out->cap : 1024;
			struct pic_run *v = realloc(out->v, nc * sizeof(*v));
			if (!v) {
				r = -ENOMEM;
				break;
			}
			out->v = v;
			out->cap = nc;
		}
		out->v[out->n++] = (struct pic_run){ pos, next - pos, (uint32_t)n, (uint8_t)type };
	}
	rmap_set_sum(&c.fw);
	out->fw = c.fw;
	c.fw = (struct rmap_set){ 0 };
	out->problems = c.st.problems;
	ck_free(&c);
	if (r == -ENOMEM)
		vbas_err(r, "repair: out of memory");
	return r;
}

void pic_free(struct pic *pc)
{
	free(pc->v);
	free(pc->bad);
	rmap_set_free(&pc->fw);
	memset(pc, 0, sizeof(*pc));
}
