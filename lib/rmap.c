/* The reverse map: physical extents -> the mapping records that use them.
 *
 * One record per distinct mapping record (pblk, lblk, len) per lineage
 * (the owner in the header of the mapping leaves holding it), with the
 * number of such leaves as its count; see format.h and docs/rmap.md.
 * btree.c reports every record that enters or leaves a mapping leaf
 * (map_ops.rec_owner); those changes are queued here and applied by
 * space_drain in the same transaction as the forward change, sorted and
 * with changes that cancel (an extent that grows: its old record out, the
 * longer one in) summed away first.  So after any commit, and after a
 * crash, the rmap says exactly what the mapping leaves say.
 *
 * Invariants (check.c verifies them):
 *  R1. For every (pblk, owner, lblk, len), the count of the rmap record
 *      equals the number of distinct mapping leaves whose header names
 *      OWNER and that hold the mapping record lblk -> pblk, len; no record
 *      has count 0.
 *  R2. For every data block, the counts of the records covering it sum to
 *      its reference count.
 *  R3. The rmap holds no record for a metadata block (nodes describe
 *      themselves).
 */
#include "internal.h"
#include "seen.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Records ----------------------------------------------------------- */

void rmap_to_irec(const void *rec, struct rmap_irec *ir)
{
	const struct vbas_rmap_rec *r = rec;
	ir->pblk = le64_get(r->k.pblk);
	ir->owner = le64_get(r->k.owner);
	ir->lblk = le64_get(r->k.lblk);
	ir->len = le32_get(r->k.len);
	ir->count = (int64_t)le32_get(r->v.count);
}

static void rmap_from_irec(const struct rmap_irec *ir, struct vbas_rmap_rec *r)
{
	memset(r, 0, sizeof(*r));
	r->k.pblk = le64_mk(ir->pblk);
	r->k.owner = le64_mk(ir->owner);
	r->k.lblk = le64_mk(ir->lblk);
	r->k.len = le32_mk(ir->len);
	r->v.count = le32_mk((uint32_t)ir->count);
}

static int rmap_cmp(const void *a, const void *b)
{
	const struct vbas_rmap_key *x = a, *y = b;
	uint64_t u, v;
	if ((u = le64_get(x->pblk)) != (v = le64_get(y->pblk)))
		return u < v ? -1 : 1;
	if ((u = le64_get(x->owner)) != (v = le64_get(y->owner)))
		return u < v ? -1 : 1;
	if ((u = le64_get(x->lblk)) != (v = le64_get(y->lblk)))
		return u < v ? -1 : 1;
	if ((u = le32_get(x->len)) != (v = le32_get(y->len)))
		return u < v ? -1 : 1;
	return 0;
}

int rmap_irec_cmp(const void *a, const void *b)
{
	const struct rmap_irec *x = a, *y = b;
	if (x->pblk != y->pblk)
		return x->pblk < y->pblk ? -1 : 1;
	if (x->owner != y->owner)
		return x->owner < y->owner ? -1 : 1;
	if (x->lblk != y->lblk)
		return x->lblk < y->lblk ? -1 : 1;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return 0;
}

void rmap_key(void *key, uint64_t pblk, uint64_t owner, uint64_t lblk, uint32_t len)
{
	struct vbas_rmap_key *k = key;
	k->pblk = le64_mk(pblk);
	k->owner = le64_mk(owner);
	k->lblk = le64_mk(lblk);
	k->len = le32_mk(len);
}

/* The last key a record covers: its last block, above every other key
 * field. */
static void rmap_high_key(const void *rec, void *key)
{
	const struct vbas_rmap_rec *r = rec;
	rmap_key(key, le64_get(r->k.pblk) + le32_get(r->k.len) - 1, ~0ull, ~0ull, ~0u);
}

static int rmap_check_rec(const struct bt_env *env, const void *rec, char *why, size_t len)
{
	struct rmap_irec r;
	rmap_to_irec(rec, &r);
	if (r.len == 0)
		return snprintf(why, len, "zero length"), -EUCLEAN;
	if (r.pblk < VBAS_FIRST_BLOCK || r.pblk >= env->nblocks || r.len > env->nblocks - r.pblk)
		return snprintf(why, len, "blocks %" PRIu64 "+%u outside the pool (%" PRIu64
				" blocks)", r.pblk, r.len, env->nblocks), -EUCLEAN;
	if (r.owner == 0 || r.owner >= VBAS_VOL_ID_LIMIT)
		return snprintf(why, len, "owner %" PRIu64 " is not a volume id", r.owner), -EUCLEAN;
	if (r.lblk + r.len < r.lblk)
		return snprintf(why, len, "logical blocks %" PRIu64 "+%u wrap around", r.lblk,
				r.len), -EUCLEAN;
	if (r.count == 0)
		return snprintf(why, len, "count 0"), -EUCLEAN;
	return 0;
}

static void rmap_fmt_key(const void *key, char *buf, size_t len)
{
	const struct vbas_rmap_key *k = key;
	snprintf(buf, len, "%" PRIu64 "+%u owner %" PRIu64 " at %" PRIu64, le64_get(k->pblk),
		 le32_get(k->len), le64_get(k->owner), le64_get(k->lblk));
}

const struct vbas_btree_ops rmap_ops = {
	.name = "reverse map",
	.tree_type = VBAS_TREE_RMAP,
	.key_size = sizeof(struct vbas_rmap_key),
	.val_size = sizeof(struct vbas_rmap_val),
	.overlapping = 1,
	.cmp = rmap_cmp,
	.high_key = rmap_high_key,
	.check_rec = rmap_check_rec,
	.fmt_key = rmap_fmt_key,
};

/* ---- Sets of records --------------------------------------------------- */

int rmap_set_add(struct rmap_set *s, uint64_t pblk, uint64_t owner, uint64_t lblk,
		 uint32_t len, int64_t count)
{
	if (s->n == s->cap) {
		size_t nc = s->cap ? 2 * s->cap : 256;
		struct rmap_irec *v = realloc(s->v, nc * sizeof(*v));
		if (!v)
			return -ENOMEM;
		s->v = v;
		s->cap = nc;
	}
	s->v[s->n++] = (struct rmap_irec){ pblk, owner, lblk, len, count };
	return 0;
}

void rmap_set_sum(struct rmap_set *s)
{
	if (!s->n)
		return;
	qsort(s->v, s->n, sizeof(*s->v), rmap_irec_cmp);
	size_t m = 0;
	for (size_t i = 0; i < s->n; i++) {
		if (m && !rmap_irec_cmp(&s->v[m - 1], &s->v[i]))
			s->v[m - 1].count += s->v[i].count;
		else
			s->v[m++] = s->v[i];
	}
	s->n = m;
}

void rmap_set_free(struct rmap_set *s)
{
	free(s->v);
	memset(s, 0, sizeof(*s));
}

/* ---- Queued changes ---------------------------------------------------- */

int rmap_queue(struct vbas_pool *p, uint64_t pblk, uint64_t owner, uint64_t lblk,
	       uint32_t len, int delta)
{
	if (!p->sp.rmap_on)
		return 0;
	int r = rmap_set_add(&p->sp.rq, pblk, owner, lblk, len, delta);
	if (!r)
		p->dirty = 1;
	return r;
}

/* Apply the queued changes to the tree.  Each lands on a record (count
 * up or down, the record going at zero) or makes one. */
int rmap_apply(struct vbas_pool *p)
{
	struct rmap_set *q = &p->sp.rq;
	int r = 0;
	if (!q->n)
		return 0;
	rmap_set_sum(q);
	size_t n = q->n;
	q->n = 0;                /* what lands here may queue nothing more */
	for (size_t i = 0; i < n && !r; i++) {
		struct rmap_irec d = q->v[i], cur;
		struct vbas_rmap_rec rec;
		uint8_t key[sizeof(struct vbas_rmap_key)];
		if (!d.count)
			continue;
		rmap_key(key, d.pblk, d.owner, d.lblk, d.len);
		r = bt_lookup(&p->sp.rmap, key, BT_EQ, &rec);
		if (r && r != -ENOENT)
			break;
		int64_t have = 0;
		if (!r) {
			rmap_to_irec(&rec, &cur);
			have = cur.count;
		}
		int64_t nc = have + d.count;
		if (nc < 0) {
			r = vbas_err(-EUCLEAN, "reverse map: physical %" PRIu64 "+%u of volume %" PRIu64
				     " at block %" PRIu64 " has %" PRId64 " record(s), %" PRId64
				     " would go", d.pblk, d.len, d.owner, d.lblk, have, -d.count);
			break;
		}
		if (nc > 0xffffffffll) {
			r = vbas_err(-EOVERFLOW, "reverse map: physical %" PRIu64 ": too many "
				     "references", d.pblk);
			break;
		}
		d.count = nc;
		rmap_from_irec(&d, &rec);
		if (nc == 0)
			r = bt_delete(&p->sp.rmap, key, NULL);
		else if (have)
			r = bt_update(&p->sp.rmap, &rec);
		else
			r = bt_insert(&p->sp.rmap, &rec);
	}
	return r;
}

/* ---- Queries ------------------------------------------------------------ */

struct ov {
	int (*cb)(void *, const struct rmap_irec *);
	void *arg;
};

static int ov_cb(void *arg, const void *rec)
{
	struct ov *o = arg;
	struct rmap_irec ir;
	rmap_to_irec(rec, &ir);
	return o->cb(o->arg, &ir);
}

int rmap_query(struct vbas_pool *p, uint64_t lo, uint64_t hi,
	       int (*cb)(void *, const struct rmap_irec *), void *arg)
{
	uint8_t klo[sizeof(struct vbas_rmap_key)], khi[sizeof(struct vbas_rmap_key)];
	struct ov o = { cb, arg };
	if (hi <= lo)
		return 0;
	rmap_key(klo, lo, 0, 0, 0);
	rmap_key(khi, hi - 1, ~0ull, ~0ull, ~0u);
	return bt_query_overlap(&p->sp.rmap, klo, khi, ov_cb, &o);
}

/* ---- The forward maps, as the rmap should hold them --------------------- */

struct fw {
	struct vbas_pool *p;
	struct rmap_set *out;
	struct seen_set seen;
	uint64_t owner;          /* of the leaf being walked */
	void (*report)(void *, const char *, ...);
	void *rarg;
};

static int fw_node(void *arg, uint64_t blkno, unsigned level)
{
	struct fw *f = arg;
	int fresh;
	(void)level;
	struct seen *e = seen_get(&f->seen, blkno, &fresh);
	if (!e)
		return -ENOMEM;
	if (!fresh)
		return BT_CHECK_SEEN;    /* a shared node: its leaves count once */
	e->done = 1;
	return 0;
}

static int fw_leaf(void *arg, uint64_t blkno, uint64_t owner)
{
	struct fw *f = arg;
	(void)blkno;
	f->owner = owner;
	return 0;
}

static int fw_rec(void *arg, const void *rec)
{
	struct fw *f = arg;
	const struct vbas_map_rec *m = rec;
	return rmap_set_add(f->out, le64_get(m->v.pblk), f->owner, le64_get(m->k.lblk),
			    le32_get(m->v.len), 1);
}

static void fw_report(void *arg, const char *fmt, ...)
{
	(void)arg;
	(void)fmt;
}

struct vols {
	uint64_t *ids;
	size_t n, cap;
};

static int vols_cb(void *arg, const void *rec)
{
	struct vols *v = arg;
	const struct vbas_voltab_rec *r = rec;
	if (v->n == v->cap) {
		size_t nc = v->cap ? 2 * v->cap : 64;
		uint64_t *ni = realloc(v->ids, nc * sizeof(*ni));
		if (!ni)
			return -ENOMEM;
		v->ids = ni;
		v->cap = nc;
	}
	v->ids[v->n++] = le64_get(r->k.id);
	return 0;
}

int rmap_collect(struct vbas_pool *p, struct rmap_set *out)
{
	struct fw f = { .p = p, .out = out };
	struct vols v = { 0 };
	struct bt_check_cbs cbs = { .report = fw_report, .node_cb = fw_node, .leaf_cb = fw_leaf,
				    .rec_cb = fw_rec, .arg = &f };
	int r = bt_iter(&p->voltab, NULL, vols_cb, &v);
	for (size_t i = 0; !r && i < v.n; i++) {
		struct vbas_vol_rec rec;
		struct vbas_btree t;
		r = vol_get(p, v.ids[i], &rec);
		if (r)
			break;
		vol_map_tree(p, v.ids[i], &rec, &t);
		uint8_t from[8];
		st_le64(from, le64_get(rec.del_cursor));
		cbs.from = (le32_get(rec.flags) & VBAS_VOLF_DELETING) ? from : NULL;
		r = bt_check(&t, &cbs, NULL, NULL);
	}
	free(v.ids);
	seen_free(&f.seen);
	if (r == -EUCLEAN)
		r = vbas_err(r, "the mapping trees are damaged (run vbas check)");
	if (!r)
		rmap_set_sum(out);
	return r;
}

/* ---- Building the rmap of a pool that has none ------------------------- */

int rmap_load(struct vbas_pool *p, const struct rmap_set *s)
{
	int r = 0;
	p->sp.rmap.root = 0;
	p->sp.rmap.root_txid = 0;
	p->sp.rmap.grown = 0;
	p->sp.rmap_nodes = 0;
	for (size_t i = 0; i < s->n && !r; i++) {
		struct vbas_rmap_rec rec;
		rmap_from_irec(&s->v[i], &rec);
		r = bt_insert(&p->sp.rmap, &rec);
		if (!r && (i & 1023) == 1023)
			r = space_drain(p);
	}
	if (!r)
		r = space_drain(p);
	return r;
}

int vbas_pool_rmap_build(struct vbas_pool *p)
{
	struct rmap_set s = { 0 };
	int r;
	vbas_err_clear();
	pool_lock(p);
	r = txn_writable(p, "build the reverse map");
	if (r)
		goto out;
	if (p->sp.rmap_on) {
		r = vbas_err(-EEXIST, "build the reverse map: the pool has one");
		goto out;
	}
	r = space_drain(p);
	if (!r)
		r = rmap_collect(p, &s);
	if (r)
		goto out;
	/* Room for the tree: leaves at least half full once built in key
	 * order, and every level above. */
	struct vbas_btree t = { .ops = &rmap_ops, .env = &p->env };
	uint64_t need = bt_nodes_for(&t, s.n);
	need = need + need / 4 + space_op_meta(p, NULL);
	r = space_room(p, need, SPACE_GROW, "build the reverse map");
	if (r)
		goto out;
	r = rmap_load(p, &s);
	if (r) {
		txn_fail(p, r);
		goto out;
	}
	p->sp.rmap_on = 1;
	txn_wait_io(p);                /* P->SB as its commit leaves it */
	p->sb.version = le32_mk(VBAS_FORMAT_VERSION);
	p->dirty = 1;
	r = txn_commit(p);
out:
	pool_unlock(p);
	rmap_set_free(&s);
	return r;
}
