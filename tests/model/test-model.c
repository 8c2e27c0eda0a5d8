/* Model-based random test of volumes.
 *
 * An in-memory model holds every volume's bytes and, per block, which
 * physical block it maps (an abstract id: 0 for a hole, equal ids for
 * shared blocks); the engine runs beside it through thousands of random
 * operations (write, discard, write-zeroes, resize, delete, create,
 * snapshot, clone, reflink, dedupe, unshare, diff, flush, close and
 * reopen).  Every read is compared with the model byte for byte; mapped,
 * exclusive and shared bytes per volume, the shared flag of every extent,
 * data blocks in use, and diffs are compared with what the model computes;
 * vbas_check runs along the way.  A write to one volume must never show in
 * another.  The pool is smaller than the volumes, so ENOSPC happens and
 * must change nothing.
 *
 *   VBAS_SEED=n  run one seed      VBAS_OPS=n  operations per run
 */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXVOL 10

struct mvol {
	int live;
	int zombie;            /* deleted, but its delete stopped part way
	                          (ENOSPC): the engine still holds its blocks */
	uint64_t id;           /* the engine's id (for a zombie, and an
	                          expendable snapshot) */
	int readonly;
	int expendable;        /* the pool may delete it to make room */
	char name[32];
	uint64_t size;
	uint8_t *data;
	uint32_t *pid;         /* per block: physical block id, 0 = hole */
	uint8_t *rsv;          /* per block: in a reserved range */
};

struct model {
	struct mvol v[MAXVOL];
	uint32_t bs;
	int serial;
	uint32_t next_pid;
	uint32_t *refs;        /* scratch: references per pid */
	size_t refs_cap;
};

struct run {
	struct model m;
	struct vbas_dev *dev;
	struct vbas_pool *p;
	struct rng r;
	uint64_t cache;
	uint64_t enospc, ops, shrinks;
	struct vbas_resv *resv;   /* a reservation held across operations */
	uint64_t resv_writes, resv_refused;
	uint64_t reserves, reserves_refused, resv_range_writes;
	int reserving;            /* op_reserve in the mix */
	uint64_t expended;        /* expendable snapshots the pool deleted */
};

static void mvol_resize(struct mvol *mv, uint64_t size, uint32_t bs)
{
	mv->data = realloc(mv->data, size);
	mv->pid = realloc(mv->pid, size / bs * sizeof(*mv->pid));
	mv->rsv = realloc(mv->rsv, size / bs);
	if (size > mv->size) {
		memset(mv->data + mv->size, 0, size - mv->size);
		memset(mv->pid + mv->size / bs, 0, (size - mv->size) / bs * sizeof(*mv->pid));
		memset(mv->rsv + mv->size / bs, 0, (size - mv->size) / bs);
	}
	mv->size = size;
}

static uint64_t mapped_blocks(const struct mvol *mv, uint32_t bs)
{
	uint64_t n = 0;
	for (uint64_t b = 0; b < mv->size / bs; b++)
		n += mv->pid[b] != 0;
	return n;
}

/* References per physical block id over every live volume. */
static const uint32_t *model_refs(struct model *m)
{
	if (m->refs_cap < m->next_pid + 1) {
		m->refs_cap = 2 * (m->next_pid + 1);
		m->refs = realloc(m->refs, m->refs_cap * sizeof(*m->refs));
	}
	memset(m->refs, 0, (m->next_pid + 1) * sizeof(*m->refs));
	for (int i = 0; i < MAXVOL; i++)
		if (m->v[i].live || m->v[i].zombie)
			for (uint64_t b = 0; b < m->v[i].size / m->bs; b++)
				m->refs[m->v[i].pid[b]]++;
	return m->refs;
}

/* Block B of volume I was written: a hole or a shared block gets a new
 * block (copy on write), an unshared one is overwritten in place. */
static void model_written(struct model *m, int i, uint64_t b, const uint32_t *refs)
{
	uint32_t *pp = &m->v[i].pid[b];
	if (*pp == 0 || refs[*pp] > 1)
		*pp = ++m->next_pid;
}

static struct vbas_vol *vopen(struct run *R, int i)
{
	struct vbas_vol *v = NULL;
	assert_ok(vbas_vol_open(R->p, R->m.v[i].name, &v));
	return v;
}

static void compare_range(struct run *R, int i, uint64_t off, uint64_t len)
{
	struct vbas_vol *v = vopen(R, i);
	uint8_t *buf = malloc(len);
	assert_ok(vbas_pread(v, buf, len, off));
	if (memcmp(buf, R->m.v[i].data + off, len)) {
		for (uint64_t k = 0; k < len; k++)
			if (buf[k] != R->m.v[i].data[off + k])
				fail_msg("volume %s: byte %llu reads %#x, model has %#x",
					 R->m.v[i].name, (unsigned long long)(off + k), buf[k],
					 R->m.v[i].data[off + k]);
	}
	free(buf);
	vbas_vol_close(v);
}

struct ext_cmp {
	struct run *R;
	int i;
	uint64_t next;         /* first byte not yet covered */
	const uint32_t *refs;
};

/* Extents agree with the model: mapped exactly where it maps, flagged
 * shared exactly where its block has more than one reference. */
static int ext_cb(const struct vbas_extent *e, void *arg)
{
	struct ext_cmp *c = arg;
	struct mvol *mv = &c->R->m.v[c->i];
	uint32_t bs = c->R->m.bs;
	assert_true(e->offset % bs == 0 && e->length % bs == 0);
	for (uint64_t b = c->next / bs; b < e->offset / bs; b++)
		if (mv->pid[b])
			fail_msg("volume %s: block %llu is mapped in the model, a hole in the engine",
				 mv->name, (unsigned long long)b);
	for (uint64_t b = e->offset / bs; b < (e->offset + e->length) / bs; b++) {
		if (!mv->pid[b])
			fail_msg("volume %s: block %llu is a hole in the model, mapped in the engine",
				 mv->name, (unsigned long long)b);
		int sh = c->refs[mv->pid[b]] > 1;
		if (sh != !!(e->flags & VBAS_EXTENT_SHARED))
			fail_msg("volume %s: block %llu is %sshared in the model, the engine says %s",
				 mv->name, (unsigned long long)b, sh ? "" : "not ",
				 sh ? "not" : "shared");
		if (mv->rsv[b] != !!(e->flags & VBAS_EXTENT_RESERVED))
			fail_msg("volume %s: block %llu is %sreserved in the model, not in the engine's "
				 "extents", mv->name, (unsigned long long)b, mv->rsv[b] ? "" : "not ");
	}
	c->next = e->offset + e->length;
	return 0;
}

static int cmp_u64_sort(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* fsmap against the model: every block of every volume (a delete
 * stopped part way included) is named as that volume's data at its
 * offset, nothing else is, and physical blocks and the model's block ids
 * correspond one to one (shared exactly where the model shares). */
struct fm_ent {
	uint64_t pblk;
	int slot;
	uint64_t lblk;
};

struct fm_col {
	struct run *R;
	struct fm_ent *e;
	size_t n, cap;
};

static int fm_cb(const struct vbas_fsmap_rec *x, void *arg)
{
	struct fm_col *c = arg;
	uint32_t bs = c->R->m.bs;
	if (x->kind != VBAS_FSMAP_DATA)
		return 0;
	int slot = -1;
	for (int i = 0; i < MAXVOL; i++)
		if ((c->R->m.v[i].live || c->R->m.v[i].zombie) && !strcmp(c->R->m.v[i].name, x->name))
			slot = i;
	if (slot < 0)
		fail_msg("fsmap names volume '%s', which the model does not have", x->name);
	for (uint64_t o = 0; o < x->length; o += bs) {
		if (c->n == c->cap) {
			c->cap = c->cap ? 2 * c->cap : 1024;
			c->e = realloc(c->e, c->cap * sizeof(*c->e));
			assert_non_null(c->e);
		}
		c->e[c->n++] = (struct fm_ent){ (x->physical + o) / bs, slot, (x->logical + o) / bs };
	}
	return 0;
}

static int cmp_fm_ent(const void *a, const void *b)
{
	const struct fm_ent *x = a, *y = b;
	if (x->slot != y->slot)
		return x->slot < y->slot ? -1 : 1;
	return x->lblk < y->lblk ? -1 : x->lblk > y->lblk;
}


static void fsmap_both(struct run *R, uint64_t off, uint64_t len)
{
	struct fsmap_recs a = { 0 }, w = { 0 };
	assert_ok(vbas_fsmap(R->p, off, len, fsmap_collect, &a));
	vbas_tun.fsmap_walk = 1;
	int r = vbas_fsmap(R->p, off, len, fsmap_collect, &w);
	vbas_tun.fsmap_walk = 0;
	assert_ok(r);
	for (size_t i = 0; i < a.n || i < w.n; i++) {
		const struct vbas_fsmap_rec *x = i < a.n ? &a.r[i] : NULL, *y = i < w.n ? &w.r[i] : NULL;
		if (!x || !y || x->physical != y->physical || x->length != y->length ||
		    x->kind != y->kind || x->level != y->level || x->volume != y->volume ||
		    x->logical != y->logical || strcmp(x->name, y->name))
			fail_msg("fsmap %llu+%llu, record %zu: the reverse map gives %llu+%llu kind %d "
				 "volume %llu at %llu, the walk %llu+%llu kind %d volume %llu at %llu",
				 (unsigned long long)off, (unsigned long long)len, i,
				 (unsigned long long)(x ? x->physical : 0),
				 (unsigned long long)(x ? x->length : 0), x ? (int)x->kind : 0,
				 (unsigned long long)(x ? x->volume : 0),
				 (unsigned long long)(x ? x->logical : 0),
				 (unsigned long long)(y ? y->physical : 0),
				 (unsigned long long)(y ? y->length : 0), y ? (int)y->kind : 0,
				 (unsigned long long)(y ? y->volume : 0),
				 (unsigned long long)(y ? y->logical : 0));
	}
	free(a.r);
	free(w.r);
}

/* The reverse map's answer against the walk's, record for record (every
 * owner of every block, metadata included), over the pool and over a
 * random range. */
static void compare_fsmap_paths(struct run *R)
{
	struct vbas_pool_info pi;
	assert_ok(vbas_pool_info(R->p, &pi));
	if (!pi.rmap)
		return;
	fsmap_both(R, 0, 0);
	/* A generator of its own: the model's runs stay what they were. */
	static struct rng fr = { 12345 };
	uint64_t nb = pi.total_blocks, s = rng_below(&fr, nb), n = 1 + rng_below(&fr, nb - s);
	fsmap_both(R, s * R->m.bs, n * R->m.bs);
}

static void compare_fsmap(struct run *R)
{
	struct fm_col c = { R, NULL, 0, 0 };
	assert_ok(vbas_fsmap(R->p, 0, 0, fm_cb, &c));
	if (c.n)
		qsort(c.e, c.n, sizeof(*c.e), cmp_fm_ent);
	uint32_t np = R->m.next_pid + 1;
	uint64_t *phys = calloc(np, sizeof(*phys));
	assert_non_null(phys);
	size_t k = 0;
	for (int i = 0; i < MAXVOL; i++) {
		struct mvol *mv = &R->m.v[i];
		if (!mv->live && !mv->zombie)
			continue;
		for (uint64_t b = 0; b < mv->size / R->m.bs; b++) {
			if (!mv->pid[b])
				continue;
			if (k >= c.n || c.e[k].slot != i || c.e[k].lblk != b)
				fail_msg("fsmap: volume %s block %llu is mapped in the model, fsmap does "
					 "not name it (next it names: slot %d block %llu)", mv->name,
					 (unsigned long long)b, k < c.n ? c.e[k].slot : -1,
					 (unsigned long long)(k < c.n ? c.e[k].lblk : 0));
			uint32_t id = mv->pid[b];
			if (!phys[id])
				phys[id] = c.e[k].pblk;
			else if (phys[id] != c.e[k].pblk)
				fail_msg("fsmap: volume %s block %llu is at %llu, the model shares it with a "
					 "block at %llu", mv->name, (unsigned long long)b,
					 (unsigned long long)c.e[k].pblk, (unsigned long long)phys[id]);
			k++;
		}
	}
	if (k != c.n)
		fail_msg("fsmap names %zu data blocks, the model maps %zu", c.n, k);
	/* One model block per physical block. */
	qsort(phys + 1, np - 1, sizeof(*phys), cmp_u64_sort);
	for (uint32_t i = 2; i < np; i++)
		if (phys[i] && phys[i] == phys[i - 1])
			fail_msg("fsmap: physical block %llu holds two blocks the model keeps apart",
				 (unsigned long long)phys[i]);
	free(phys);
	free(c.e);
}

static void compare_all(struct run *R)
{
	struct vbas_pool_info pi;
	uint64_t total = 0, distinct = 0;
	int live = 0;
	const uint32_t *refs = model_refs(&R->m);
	for (uint32_t k = 1; k <= R->m.next_pid; k++)
		distinct += refs[k] != 0;
	for (int i = 0; i < MAXVOL; i++) {
		struct mvol *mv = &R->m.v[i];
		struct vbas_vol_info info;
		struct vbas_vol_usage u;
		if (!mv->live) {
			assert_int_equal(vbas_vol_stat(R->p, mv->name[0] ? mv->name : "x", &info), -ENOENT);
			continue;
		}
		live++;
		assert_ok(vbas_vol_stat(R->p, mv->name, &info));
		assert_int_equal(info.size, mv->size);
		uint64_t rb = 0;
		for (uint64_t b = 0; b < mv->size / R->m.bs; b++)
			rb += mv->rsv[b];
		if (info.reserved != rb * R->m.bs)
			fail_msg("volume %s: %llu bytes reserved, model %llu", mv->name,
				 (unsigned long long)info.reserved, (unsigned long long)(rb * R->m.bs));
		assert_int_equal(!!(info.flags & VBAS_VOL_READONLY), mv->readonly);
		uint64_t mb = mapped_blocks(mv, R->m.bs), excl = 0;
		if (info.mapped != mb * R->m.bs)
			fail_msg("volume %s: mapped %llu bytes, model %llu", mv->name,
				 (unsigned long long)info.mapped, (unsigned long long)(mb * R->m.bs));
		for (uint64_t b = 0; b < mv->size / R->m.bs; b++)
			excl += mv->pid[b] && refs[mv->pid[b]] == 1;
		assert_ok(vbas_vol_usage(R->p, mv->name, &u));
		if (u.mapped != mb * R->m.bs || u.exclusive != excl * R->m.bs ||
		    u.shared != (mb - excl) * R->m.bs)
			fail_msg("volume %s: usage mapped/exclusive/shared %llu/%llu/%llu blocks, "
				 "model %llu/%llu/%llu", mv->name,
				 (unsigned long long)(u.mapped / R->m.bs),
				 (unsigned long long)(u.exclusive / R->m.bs),
				 (unsigned long long)(u.shared / R->m.bs), (unsigned long long)mb,
				 (unsigned long long)excl, (unsigned long long)(mb - excl));
		total += mb;
		compare_range(R, i, 0, mv->size);
		struct ext_cmp c = { R, i, 0, refs };
		struct vbas_vol *v = vopen(R, i);
		assert_ok(vbas_extents(v, 0, mv->size, ext_cb, &c));
		vbas_vol_close(v);
		for (uint64_t b = c.next / R->m.bs; b < mv->size / R->m.bs; b++)
			if (mv->pid[b])
				fail_msg("volume %s: block %llu is mapped in the model, not in the engine",
					 mv->name, (unsigned long long)b);
	}
	assert_ok(vbas_pool_info(R->p, &pi));
	/* (The pool counts a delete stopped part way until it is done.) */
	for (int i = 0; i < MAXVOL; i++)
		live += R->m.v[i].zombie;
	assert_int_equal(pi.volumes, live);
	assert_int_equal(pi.data_used, distinct * R->m.bs);
	assert_int_equal(pi.mapped, total * R->m.bs);
	/* (A delete stopped part way holds blocks no live volume maps.) */
	assert_int_equal(pi.sharing_saves, total > distinct ? (total - distinct) * R->m.bs : 0);
	compare_fsmap(R);
	compare_fsmap_paths(R);
}

static void drop_resv(struct run *R);
static void reap_zombies(struct run *R);

static void reopen(struct run *R)
{
	drop_resv(R);
	assert_ok(vbas_close(R->p));
	R->p = open_mem(R->dev, R->cache);
	reap_zombies(R);
}

static int trace(void)
{
	static int t = -1;
	if (t < 0)
		t = getenv("VBAS_TRACE") != NULL;
	return t;
}

/* Shrink the pool to a random size it may or may not hold, then grow it
 * back: every block past the target moves (the data compared later, the
 * reverse map with fsmap's walk after every step).  A refusal changes
 * nothing; a shrink that stops part way (room ran out) is cancelled. */
static void op_shrink(struct run *R)
{
	struct vbas_pool_info pi;
	assert_ok(vbas_pool_info(R->p, &pi));
	if (!pi.rmap)
		return;
	uint64_t need = pi.data_used + pi.metadata_used + pi.reserved + 2 * pi.metadata_reserve;
	uint64_t lo = need < pi.size / 4 ? pi.size / 4 : need;
	if (lo >= pi.size)
		return;
	uint64_t target = lo + rng_below(&R->r, pi.size - lo);
	struct vbas_shrink_stats st;
	int e = vbas_pool_shrink(R->p, target, &st);
	if (trace())
		fprintf(stderr, "# shrink %llu -> %llu: %d (%s), %llu data blocks, %llu nodes\n",
			(unsigned long long)pi.size, (unsigned long long)target, e, vbas_errmsg(),
			(unsigned long long)st.data_blocks, (unsigned long long)st.nodes);
	struct vbas_pool_info after;
	assert_ok(vbas_pool_info(R->p, &after));
	if (e == -ENOSPC || e == -EINVAL) {
		R->enospc++;
		if (after.shrink_to)
			assert_ok(vbas_pool_shrink_cancel(R->p));
		assert_ok(vbas_pool_info(R->p, &after));
		assert_int_equal(after.size, pi.size);
		return;
	}
	assert_ok(e);
	R->shrinks++;
	assert_int_equal(after.size, target / R->m.bs * R->m.bs);
	assert_ok(vbas_pool_grow(R->p, pi.size));
}

static int pick_live(struct run *R)
{
	int c[MAXVOL], n = 0;
	for (int i = 0; i < MAXVOL; i++)
		if (R->m.v[i].live)
			c[n++] = i;
	return n ? c[rng_below(&R->r, n)] : -1;
}

/* A random range in a volume: mostly small, sometimes large or aligned. */
static void pick_range(struct run *R, uint64_t size, int aligned, uint64_t *off, uint64_t *len)
{
	uint32_t bs = R->m.bs;
	uint64_t maxlen = rng_below(&R->r, 8) == 0 ? size : 64 * 1024;
	if (aligned) {
		uint64_t nb = size / bs;
		uint64_t s = rng_below(&R->r, nb);
		uint64_t l = 1 + rng_below(&R->r, (maxlen / bs < nb - s ? maxlen / bs : nb - s));
		*off = s * bs;
		*len = l * bs;
	} else {
		*off = rng_below(&R->r, size);
		uint64_t room = size - *off;
		*len = 1 + rng_below(&R->r, room < maxlen ? room : maxlen);
	}
}


/* Engine's physical block of every block of [off, off+len) of volume I
 * (0 for a hole), to see which blocks an interrupted operation touched. */
struct phys_ctx {
	uint64_t off;
	uint32_t bs;
	uint64_t *out;
};

static int phys_cb(const struct vbas_extent *e, void *arg)
{
	struct phys_ctx *c = arg;
	for (uint64_t o = e->offset; o < e->offset + e->length; o += c->bs)
		c->out[(o - c->off) / c->bs] = (e->physical + (o - e->offset)) / c->bs;
	return 0;
}

static uint64_t *physmap(struct run *R, struct vbas_vol *v, uint64_t off, uint64_t len)
{
	uint32_t bs = R->m.bs;
	uint64_t s = off / bs * bs, e = (off + len + bs - 1) / bs * bs;
	uint64_t *out = calloc((e - s) / bs, sizeof(*out));
	struct phys_ctx c = { s, bs, out };
	assert_ok(vbas_extents(v, s, e - s, phys_cb, &c));
	return out;
}

/* Would a write to block B of V now copy it (the library's own view: its
 * count, or a node's on its path, is above one, or changed in the running
 * transaction, so that the last commit may share it)? */
static int write_copies(struct run *R, struct vbas_vol *v, uint64_t b)
{
	struct vbas_pool *p = R->p;
	struct vbas_vol_rec rec;
	struct vbas_btree t;
	uint64_t pb, run;
	int mapped = 0, sh = 0;
	pthread_mutex_lock(&p->lock);
	assert_ok(vol_get(p, v->id, &rec));
	vol_map_tree(p, v->id, &rec, &t);
	assert_ok(map_lookup_shared(p, &t, le64_get(rec.share_gen), b, &pb, &run, &mapped, &sh,
				    NULL, 1));
	pthread_mutex_unlock(&p->lock);
	return mapped && sh;
}

/* A write the engine refused with EROFS changes nothing. */
static void expect_rofs(struct run *R, int i, int e)
{
	assert_int_equal(e, -EROFS);
	(void)R;
	(void)i;
}

static void op_write(struct run *R, int i)
{
	struct mvol *mv = &R->m.v[i];
	uint64_t off, len;
	uint32_t bs = R->m.bs;
	pick_range(R, mv->size, rng_below(&R->r, 3) == 0, &off, &len);
	if (rng_below(&R->r, 3) == 0) {
		/* Aim inside a reserved run, if the volume has one. */
		uint64_t nb = mv->size / bs, b0 = rng_below(&R->r, nb), b = b0;
		while (b < nb && !mv->rsv[b])
			b++;
		if (b < nb) {
			uint64_t e = b;
			while (e < nb && mv->rsv[e])
				e++;
			uint64_t s = b * bs + rng_below(&R->r, (e - b) * bs);
			off = s;
			len = 1 + rng_below(&R->r, e * bs - s);
		}
	}
	uint8_t *buf = malloc(len);
	if (rng_below(&R->r, 4) == 0)
		memset(buf, (int)rng_below(&R->r, 256), len);
	else
		rng_fill(&R->r, buf, len);
	struct vbas_vol *v = vopen(R, i);
	if (trace())
		fprintf(stderr, "#  write %s %llu+%llu\n", mv->name, (unsigned long long)off,
			(unsigned long long)len);
	int e = vbas_pwrite(v, buf, len, off, rng_below(&R->r, 10) == 0 ? VBAS_IO_FUA : 0);
	vbas_vol_close(v);
	if (mv->readonly) {
		expect_rofs(R, i, e);
	} else if (e == -ENOSPC) {
		if (trace())
			fprintf(stderr, "#   ENOSPC: %s\n", vbas_errmsg());
		/* Never inside reserved ranges. */
		int all = 1;
		for (uint64_t b = off / bs; b <= (off + len - 1) / bs; b++)
			all &= mv->rsv[b];
		if (all)
			fail_msg("a write of %llu+%llu, all of it in reserved ranges, failed: %s",
				 (unsigned long long)off, (unsigned long long)len, vbas_errmsg());
		R->enospc++;
		compare_range(R, i, off, len);   /* nothing changed */
	} else {
		assert_ok(e);
		if (trace() && mv->rsv[off / bs])
			fprintf(stderr, "#   (into a reserved range)\n");
		R->resv_range_writes += mv->rsv[off / bs];
		memcpy(mv->data + off, buf, len);
		const uint32_t *refs = model_refs(&R->m);
		for (uint64_t b = off / bs; b <= (off + len - 1) / bs; b++)
			model_written(&R->m, i, b, refs);
	}
	free(buf);
}

/* A write through the mapping interface with a reservation: either one
 * of vbas_reserve_range for the range, taken just before (ENOSPC then is
 * clean: nothing changed), or the reservation R holds across operations,
 * if it has blocks for the whole range left.  Once reserved, no step of
 * the write may fail, whatever else the pool holds, and no metadata block
 * may come from beyond the reservation's allowance (meta_short). */
static void op_resv_write(struct run *R, int i)
{
	struct mvol *mv = &R->m.v[i];
	uint64_t off, len;
	uint32_t bs = R->m.bs;
	pick_range(R, mv->size, 1, &off, &len);
	struct vbas_vol *v = vopen(R, i);
	struct vbas_resv *rv = NULL;
	int own = !R->resv || vbas_resv_remaining(R->resv) < len / bs || rng_below(&R->r, 2);
	struct vbas_pool_info pi0;
	assert_ok(vbas_pool_info(R->p, &pi0));
	uint64_t gen0 = pi0.generation;
	int e = own ? vbas_reserve_range(v, off, len, &rv) : 0;
	if (trace())
		fprintf(stderr, "#  reserved write %s %llu+%llu own %d: %d\n", mv->name,
			(unsigned long long)off, (unsigned long long)len, own, e);
	if (mv->readonly) {
		struct vbas_iomap m;
		if (!own)
			e = vbas_map_begin(v, off, len, VBAS_MAP_WRITE, R->resv, &m);
		expect_rofs(R, i, e);
		vbas_vol_close(v);
		return;
	}
	if (e == -ENOSPC) {
		R->enospc++;
		R->resv_refused++;
		vbas_vol_close(v);
		compare_range(R, i, off, len);
		return;
	}
	assert_ok(e);
	if (!own)
		rv = R->resv;
	uint8_t *buf = malloc(len);
	rng_fill(&R->r, buf, len);
	const uint32_t *refs = model_refs(&R->m);
	for (uint64_t done = 0; done < len;) {
		struct vbas_iomap m;
		e = vbas_map_begin(v, off + done, len - done, VBAS_MAP_WRITE, rv, &m);
		if (e)
			fail_msg("a write inside a reservation failed: %s %llu+%llu at %llu: %d: %s",
				 mv->name, (unsigned long long)off, (unsigned long long)len,
				 (unsigned long long)done, e, vbas_errmsg());
		assert_true(m.type == VBAS_IOMAP_NEW || m.type == VBAS_IOMAP_MAPPED);
		if (trace())
			fprintf(stderr, "#   step %llu+%llu: %s%s\n", (unsigned long long)(off + done),
				(unsigned long long)m.length, m.type == VBAS_IOMAP_NEW ? "new" : "in place",
				m.flags & VBAS_IOMAP_F_SHARED ? " (copy)" : "");
		assert_ok(dev_pwrite(R->p->dev, buf + done, m.length, m.physical));
		assert_ok(vbas_map_end(v, &m, m.length, 0));
		done += m.length;
	}
	struct vbas_resv_stats st;
	assert_ok(vbas_resv_stats(rv, &st));
	if (st.meta_short)
		fail_msg("a reservation's writes took %llu metadata blocks beyond its allowance "
			 "(%llu held in all, %llu used)", (unsigned long long)st.meta_short,
			 (unsigned long long)st.meta_granted, (unsigned long long)st.meta_used);
	if (own) {
		/* Exactly what the range needed, unless a commit came between:
		 * blocks whose count changed in the transaction are copied on
		 * write until it commits, and then they need no copy. */
		struct vbas_pool_info pi;
		assert_ok(vbas_pool_info(R->p, &pi));
		if (pi.generation == gen0)
			assert_int_equal(st.data_left, 0);
		vbas_resv_put(rv);
	}
	memcpy(mv->data + off, buf, len);
	for (uint64_t b = off / bs; b < (off + len) / bs; b++)
		model_written(&R->m, i, b, refs);
	R->resv_writes++;
	free(buf);
	vbas_vol_close(v);
}

/* Take or drop the reservation held across operations. */
static void op_resv_hold(struct run *R)
{
	if (R->resv) {
		vbas_resv_put(R->resv);
		R->resv = NULL;
		return;
	}
	uint64_t n = 1 + rng_below(&R->r, 64);
	int e = vbas_reserve(R->p, n, &R->resv);
	if (e == -ENOSPC) {
		R->enospc++;
		R->resv = NULL;
		return;
	}
	assert_ok(e);
	assert_int_equal(vbas_resv_remaining(R->resv), n);
}

static void drop_resv(struct run *R)
{
	vbas_resv_put(R->resv);
	R->resv = NULL;
}

/* An unmap of [OFF, OFF+LEN) of volume I (open as V) stopped with ENOSPC
 * (no room for the metadata of its next step, under a snapshot): a prefix
 * of the range is unmapped, the rest is as it was, mapped where it was
 * (BEFORE: physmap before the change).  The model adopts the prefix. */
static void adopt_stopped_unmap(struct run *R, int i, struct vbas_vol *v, uint64_t off,
				uint64_t len, const uint64_t *before, int keep_rsv)
{
	struct mvol *mv = &R->m.v[i];
	uint32_t bs = R->m.bs;
	uint64_t *after = physmap(R, v, off, len), n = len / bs, stop = n;
	for (uint64_t k = 0; k < n; k++) {
		if (after[k] && after[k] != before[k])
			fail_msg("unmap hit ENOSPC and moved block %llu",
				 (unsigned long long)(off / bs + k));
		/* (A discard keeps reserved blocks: they are no stop.) */
		if (after[k] && stop == n && !(keep_rsv && mv->rsv[off / bs + k]))
			stop = k;
		if (!after[k] && before[k] && k > stop)
			fail_msg("unmap hit ENOSPC at block %llu, but block %llu after it is unmapped",
				 (unsigned long long)(off / bs + stop), (unsigned long long)(off / bs + k));
	}
	for (uint64_t k = 0; k < stop; k++) {
		if (keep_rsv && mv->rsv[off / bs + k])
			continue;
		memset(mv->data + off + k * bs, 0, bs);
		mv->pid[off / bs + k] = 0;
		mv->rsv[off / bs + k] = 0;
	}
	free(after);
	compare_range(R, i, off, len);
}

static void op_discard(struct run *R, int i)
{
	struct mvol *mv = &R->m.v[i];
	uint64_t off, len;
	uint32_t bs = R->m.bs;
	pick_range(R, mv->size, 1, &off, &len);
	struct vbas_vol *v = vopen(R, i);
	uint64_t *before = mv->readonly ? NULL : physmap(R, v, off, len);
	int e = vbas_discard(v, off, len, 0);
	char msg[512];
	snprintf(msg, sizeof(msg), "%s", vbas_errmsg());
	/* Unaligned discards are refused and change nothing. */
	assert_int_equal(vbas_discard(v, off + 1, bs, 0), -EINVAL);
	if (mv->readonly) {
		vbas_vol_close(v);
		expect_rofs(R, i, e);
		return;
	}
	if (e == -ENOSPC) {
		if (strstr(msg, "reserved blocks"))
			fail_msg("discard of %llu+%llu: zeroing its reserved blocks failed: %s",
				 (unsigned long long)off, (unsigned long long)len, msg);
		R->enospc++;
		adopt_stopped_unmap(R, i, v, off, len, before, 1);
	} else {
		assert_ok(e);
		/* Reserved blocks are zeroed and kept (copied if shared). */
		memset(mv->data + off, 0, len);
		const uint32_t *refs = model_refs(&R->m);
		for (uint64_t b = off / bs; b < (off + len) / bs; b++) {
			if (mv->rsv[b])
				model_written(&R->m, i, b, refs);
			else
				mv->pid[b] = 0;
		}
	}
	free(before);
	vbas_vol_close(v);
}

static void op_zero(struct run *R, int i)
{
	struct mvol *mv = &R->m.v[i];
	uint64_t off, len;
	uint32_t bs = R->m.bs;
	int nopunch = rng_below(&R->r, 3) == 0;
	pick_range(R, mv->size, 0, &off, &len);
	struct vbas_vol *v = vopen(R, i);
	if (trace())
		fprintf(stderr, "#  zero %s %llu+%llu nopunch %d\n", mv->name, (unsigned long long)off,
			(unsigned long long)len, nopunch);
	uint64_t *before = physmap(R, v, off, len);
	uint64_t fb0 = off / bs, lb0 = (off + len - 1) / bs;
	uint8_t *copies = calloc(lb0 - fb0 + 1, 1);
	for (uint64_t b = fb0; b <= lb0 && !mv->readonly; b++)
		copies[b - fb0] = (uint8_t)write_copies(R, v, b);
	int e = vbas_write_zeroes(v, off, len, nopunch ? VBAS_IO_NO_PUNCH : 0);
	char msg[512];
	snprintf(msg, sizeof(msg), "%s", vbas_errmsg());
	uint64_t *after = physmap(R, v, off, len);
	const uint32_t *refs = model_refs(&R->m);
	uint64_t fb = off / bs, lb = (off + len - 1) / bs;
	if (mv->readonly) {
		expect_rofs(R, i, e);
	} else if (e == -ENOSPC && nopunch) {
		/* The reservation comes first, and changes nothing if it
		 * fails; once it holds, nothing after it may fail. */
		if (!strstr(msg, "reserve: "))
			fail_msg("zeroing (no punch) of %llu+%llu failed after its reservation: %s",
				 (unsigned long long)off, (unsigned long long)len, msg);
		R->enospc++;
		for (uint64_t b = fb; b <= lb; b++)
			if (before[b - fb] != after[b - fb])
				fail_msg("a refused zeroing changed block %llu", (unsigned long long)b);
		compare_range(R, i, off, len);
	} else if (e == -ENOSPC) {
		/* Zeroing is done in all-or-nothing pieces: each byte is old
		 * or zero; adopt what the engine shows.  A block now at another
		 * physical address was (re)allocated; one now a hole was
		 * punched. */
		uint8_t *buf = malloc(len);
		R->enospc++;
		assert_ok(vbas_pread(v, buf, len, off));
		for (uint64_t k = 0; k < len; k++)
			if (buf[k] && buf[k] != mv->data[off + k])
				fail_msg("zeroing hit ENOSPC and left byte %llu neither old nor zero",
					 (unsigned long long)(off + k));
		memcpy(mv->data + off, buf, len);
		free(buf);
		for (uint64_t b = fb; b <= lb; b++) {
			uint64_t x = before[b - fb], y = after[b - fb];
			if (!y)
				mv->pid[b] = 0;
			else if (x != y)
				mv->pid[b] = ++R->m.next_pid;
			else if (!mv->pid[b])
				fail_msg("zeroing: block %llu mapped in place from a hole",
					 (unsigned long long)b);
		}
	} else {
		assert_ok(e);
		memset(mv->data + off, 0, len);
		uint64_t as = (off + bs - 1) / bs, ae = (off + len) / bs;
		/* Where the model says in place, the engine must agree, unless
		 * the block's count (or a node's above it) changed since the
		 * last commit, which may still share it. */
		for (uint64_t b = fb; b <= lb; b++) {
			if (mv->pid[b] && refs[mv->pid[b]] > 1 && !copies[b - fb])
				fail_msg("zeroing: block %llu is shared, but a write would not "
					 "copy it", (unsigned long long)b);
			if (mv->pid[b] && refs[mv->pid[b]] == 1 && (b < as || b >= ae || nopunch) &&
			    before[b - fb] != after[b - fb] && !copies[b - fb])
				fail_msg("zeroing moved unshared block %llu", (unsigned long long)b);
		}
		for (uint64_t b = fb; b <= lb; b++) {
			int whole = b >= as && b < ae;
			if (whole && !nopunch && !mv->rsv[b])
				mv->pid[b] = 0;
			else if (mv->pid[b] || whole || nopunch)
				model_written(&R->m, i, b, refs);   /* written with zeros */
			if (nopunch)
				mv->rsv[b] = 1;
		}
	}
	free(before);
	free(after);
	free(copies);
	vbas_vol_close(v);
}

static void op_resize(struct run *R, int i)
{
	struct mvol *mv = &R->m.v[i];
	uint32_t bs = R->m.bs;
	uint64_t size = (1 + rng_below(&R->r, 1024)) * bs;
	struct vbas_vol *v = NULL;
	uint64_t *before = NULL;
	if (!mv->readonly && size < mv->size) {
		v = vopen(R, i);
		before = physmap(R, v, size, mv->size - size);
		vbas_vol_close(v);
	}
	int e = vbas_vol_resize(R->p, mv->name, size);
	if (mv->readonly) {
		expect_rofs(R, i, e);
	} else if (e == -ENOSPC && before) {
		/* A shrink under a snapshot stopped: the size stays, a prefix
		 * of what lay past the new end is gone. */
		R->enospc++;
		v = vopen(R, i);
		adopt_stopped_unmap(R, i, v, size, mv->size - size, before, 0);
		vbas_vol_close(v);
	} else {
		assert_ok(e);
		mvol_resize(mv, size, bs);
	}
	free(before);
}

/* A persistent reservation (vbas_vol_reserve) of a range, rounded out to
 * blocks: its holes get blocks of their own and still read as zeros; or a
 * clean ENOSPC that changed nothing.  Or (a third of the time) the end of
 * one, block-aligned: the blocks stay, with their data. */
static void op_reserve(struct run *R, int i)
{
	struct mvol *mv = &R->m.v[i];
	uint32_t bs = R->m.bs;
	uint64_t off, len;
	int un = rng_below(&R->r, 3) == 0;
	pick_range(R, mv->size, un, &off, &len);
	struct vbas_vol *v = vopen(R, i);
	uint64_t *before = physmap(R, v, off / bs * bs, ((off + len + bs - 1) / bs - off / bs) * bs);
	if (trace())
		fprintf(stderr, "#  %s %s %llu+%llu\n", un ? "unreserve" : "reserve", mv->name,
			(unsigned long long)off, (unsigned long long)len);
	int e = un ? vbas_vol_unreserve(v, off, len) : vbas_vol_reserve(v, off, len);
	/* Bad input: refused, nothing changes. */
	assert_int_equal(vbas_vol_reserve(v, off, 0), mv->readonly ? -EROFS : -EINVAL);
	assert_int_equal(vbas_vol_reserve(v, mv->size, bs), mv->readonly ? -EROFS : -ERANGE);
	uint64_t *after = physmap(R, v, off / bs * bs, ((off + len + bs - 1) / bs - off / bs) * bs);
	vbas_vol_close(v);
	uint64_t fb = off / bs, lb = (off + len - 1) / bs;
	if (mv->readonly) {
		expect_rofs(R, i, e);
	} else if (e == -ENOSPC) {
		R->reserves_refused++;
		for (uint64_t b = fb; b <= lb; b++)
			if (before[b - fb] != after[b - fb])
				fail_msg("a refused %s changed block %llu", un ? "unreserve" : "reserve",
					 (unsigned long long)b);
	} else {
		assert_ok(e);
		R->reserves++;
		for (uint64_t b = fb; b <= lb; b++) {
			if (before[b - fb] && before[b - fb] != after[b - fb])
				fail_msg("%s moved block %llu", un ? "unreserve" : "reserve",
					 (unsigned long long)b);
			if (!before[b - fb] && !un) {
				if (!after[b - fb])
					fail_msg("reserve left block %llu a hole", (unsigned long long)b);
				mv->pid[b] = ++R->m.next_pid;
			}
			mv->rsv[b] = !un;
		}
	}
	compare_range(R, i, fb * bs, (lb - fb + 1) * bs);
	free(before);
	free(after);
}

static int free_slot(struct run *R)
{
	for (int i = 0; i < MAXVOL; i++)
		if (!R->m.v[i].live && !R->m.v[i].zombie)
			return i;
	return -1;
}

static void op_create(struct run *R)
{
	int i = free_slot(R);
	if (i < 0)
		return;
	struct mvol *mv = &R->m.v[i];
	snprintf(mv->name, sizeof(mv->name), "vol-%d", R->m.serial++);
	uint64_t size = (1 + rng_below(&R->r, 1024)) * R->m.bs;
	int e = vbas_vol_create(R->p, mv->name, size);
	if (e == -ENOSPC)
		return;
	assert_ok(e);
	assert_int_equal(vbas_vol_create(R->p, mv->name, size), -EEXIST);
	mv->live = 1;
	mv->readonly = 0;
	mv->size = 0;
	mvol_resize(mv, size, R->m.bs);
}

static void mvol_free(struct mvol *mv)
{
	free(mv->data);
	free(mv->pid);
	free(mv->rsv);
	mv->data = NULL;
	mv->pid = NULL;
	mv->rsv = NULL;
	mv->size = 0;
	mv->live = mv->zombie = mv->expendable = 0;
}

/* A delete that stopped part way has released its tree below its cursor
 * (whole leaves, in key order) and holds the rest; one finished since (by
 * an open, or the next delete) holds nothing. */
static void reap_zombies(struct run *R)
{
	for (int i = 0; i < MAXVOL; i++) {
		struct mvol *mv = &R->m.v[i];
		struct vbas_vol_rec rec;
		if (!mv->zombie)
			continue;
		if (vol_get(R->p, mv->id, &rec) == -ENOENT) {
			mvol_free(mv);
			continue;
		}
		assert_true(le32_get(rec.flags) & VBAS_VOLF_DELETING);
		uint64_t cur = le64_get(rec.del_cursor), nb = mv->size / R->m.bs;
		for (uint64_t b = 0; b < cur && b < nb; b++)
			mv->pid[b] = 0;
	}
	vbas_err_clear();
}

/* Expendable snapshots the pool deleted to make room: gone from the
 * engine, they go from the model (one whose delete stopped part way, the
 * pool too full for its next step, holds what lies past its cursor: a
 * zombie, as after a plain delete that stopped).  Always the oldest
 * first: none that remains is older than one that went.  Every other
 * volume is still there. */
static void reap_expended(struct run *R, uint64_t n)
{
	uint64_t gone_max = 0, kept_min = UINT64_MAX;
	for (int i = 0; i < MAXVOL; i++) {
		struct mvol *mv = &R->m.v[i];
		struct vbas_vol_info vi;
		if (!mv->live)
			continue;
		int e = vbas_vol_stat(R->p, mv->name, &vi);
		if (e == -ENOENT && mv->expendable) {
			struct vbas_vol_rec rec;
			if (trace())
				fprintf(stderr, "#   expended %s\n", mv->name);
			gone_max = mv->id > gone_max ? mv->id : gone_max;
			R->expended++;
			if (vol_get(R->p, mv->id, &rec) == 0) {
				assert_true(le32_get(rec.flags) & VBAS_VOLF_DELETING);
				mv->live = 0;
				mv->zombie = 1;
				continue;
			}
			vbas_err_clear();
			mvol_free(mv);
			continue;
		}
		if (e)
			fail_msg("op %llu: volume %s: %d: %s", (unsigned long long)n, mv->name, e,
				 vbas_errmsg());
		if (mv->expendable && mv->id < kept_min)
			kept_min = mv->id;
	}
	if (gone_max && kept_min < gone_max)
		fail_msg("op %llu: expendable snapshot %llu was deleted before the older %llu",
			 (unsigned long long)n, (unsigned long long)gone_max,
			 (unsigned long long)kept_min);
	vbas_err_clear();
}

/* A delete fails with ENOSPC only when room is short for its steps: the
 * metadata reserve at its cap (a quarter of the pool, below the refcount
 * tree's churn bound with five records a node: docs/design.md, "Known
 * limits"), or the room held by a reservation or by owed copies of
 * reserved blocks.  Then it either changed nothing, or stopped part way:
 * the volume is gone from the list, and the engine holds its blocks until
 * an open or the next delete finishes it (a zombie in the model). */
static void op_delete(struct run *R, int i)
{
	struct mvol *mv = &R->m.v[i];
	struct vbas_vol_info info;
	if (trace())
		fprintf(stderr, "#  delete %s\n", mv->name);
	assert_ok(vbas_vol_stat(R->p, mv->name, &info));
	int e = vbas_vol_delete(R->p, mv->name);
	if (trace() && e)
		fprintf(stderr, "#   delete: %d %s\n", e, vbas_errmsg());
	if (e == -ENOSPC && R->resv) {
		/* The room promised to the reservation held: let it go. */
		drop_resv(R);
		if (vbas_vol_stat(R->p, mv->name, &info) == 0)
			e = vbas_vol_delete(R->p, mv->name);
	}
	if (e == -ENOSPC) {
		int capped = R->p->sp.meta_reserve == (R->p->nblocks - VBAS_FIRST_BLOCK) / 4;
		if (!capped && !R->p->sp.owed->left)
			fail_msg("delete of %s: ENOSPC with the metadata reserve below its cap and "
				 "nothing held: %s", mv->name, vbas_errmsg());
		assert_false(R->p->broken);
		R->enospc++;
		if (vbas_vol_stat(R->p, mv->name, &info) == 0) {
			compare_range(R, i, 0, mv->size);     /* nothing changed */
			return;
		}
		assert_true(R->p->deletes_stopped);
		mv->live = 0;
		mv->zombie = 1;
		mv->id = info.id;
		reap_zombies(R);
		return;
	}
	assert_ok(e);
	assert_int_equal(vbas_vol_delete(R->p, mv->name), -ENOENT);
	mvol_free(mv);
}

/* Snapshot (read-only) or clone of volume I. */
static void op_snapshot(struct run *R, int i, int writable)
{
	int j = free_slot(R);
	if (j < 0)
		return;
	struct mvol *src = &R->m.v[i], *mv = &R->m.v[j];
	snprintf(mv->name, sizeof(mv->name), "%s-%d", writable ? "clone" : "snap", R->m.serial++);
	if (trace())
		fprintf(stderr, "#  %s %s -> %s\n", writable ? "clone" : "snapshot", src->name, mv->name);
	int exp = !writable && rng_below(&R->r, 2);
	int e = vbas_vol_snapshot(R->p, src->name, mv->name,
				  writable ? VBAS_SNAP_WRITABLE : exp ? VBAS_SNAP_EXPENDABLE : 0);
	if (e == -ENOSPC)
		return;
	assert_ok(e);
	assert_int_equal(vbas_vol_snapshot(R->p, src->name, mv->name, 0), -EEXIST);
	assert_int_equal(vbas_vol_snapshot(R->p, "no-such-volume", "x", 0), -ENOENT);
	struct vbas_vol_info info;
	assert_ok(vbas_vol_stat(R->p, mv->name, &info));
	struct vbas_vol_info sinfo;
	assert_ok(vbas_vol_stat(R->p, src->name, &sinfo));
	assert_int_equal(info.origin, sinfo.id);
	assert_int_equal(info.flags, writable ? 0 : VBAS_VOL_READONLY | (exp ? VBAS_VOL_EXPENDABLE : 0));
	mv->live = 1;
	mv->readonly = !writable;
	mv->expendable = exp;
	mv->id = info.id;
	mv->size = 0;
	mvol_resize(mv, src->size, R->m.bs);
	memcpy(mv->data, src->data, src->size);
	memcpy(mv->pid, src->pid, src->size / R->m.bs * sizeof(*mv->pid));
	memcpy(mv->rsv, src->rsv, src->size / R->m.bs);
}

/* Two aligned ranges of LEN bytes in volumes I and J (not overlapping if
 * I == J); 0 if none fit. */
static int pick_pair(struct run *R, int i, int j, uint64_t *so, uint64_t *do_, uint64_t *len)
{
	uint32_t bs = R->m.bs;
	uint64_t si = R->m.v[i].size / bs, sj = R->m.v[j].size / bs;
	uint64_t maxn = si < sj ? si : sj;
	if (i == j)
		maxn /= 2;
	if (!maxn)
		return 0;
	uint64_t n = 1 + rng_below(&R->r, rng_below(&R->r, 4) ? (maxn < 64 ? maxn : 64) : maxn);
	for (int tries = 0; tries < 20; tries++) {
		uint64_t a = rng_below(&R->r, si - n + 1), b = rng_below(&R->r, sj - n + 1);
		if (i == j && a < b + n && b < a + n)
			continue;
		*so = a * bs;
		*do_ = b * bs;
		*len = n * bs;
		return 1;
	}
	return 0;
}

static void model_share(struct run *R, int i, uint64_t so, int j, uint64_t doff, uint64_t len)
{
	uint32_t bs = R->m.bs;
	memmove(R->m.v[j].data + doff, R->m.v[i].data + so, len);
	memmove(R->m.v[j].pid + doff / bs, R->m.v[i].pid + so / bs, len / bs * sizeof(uint32_t));
	for (uint64_t b = doff / bs; b < (doff + len) / bs; b++)
		R->m.v[j].rsv[b] &= R->m.v[j].pid[b] != 0;
}

/* A reflink or dedupe that ran out of space stops at a block boundary,
 * with a prefix of the range shared; the message says how much. */
static uint64_t shared_before_enospc(void)
{
	const char *m = strstr(vbas_errmsg(), "held back; ");
	unsigned long long done, total;
	if (!m || sscanf(m, "held back; %llu of %llu blocks", &done, &total) != 2)
		fail_msg("ENOSPC without the blocks shared before it: %s", vbas_errmsg());
	return done;
}

static void op_reflink(struct run *R, int i, int j)
{
	struct mvol *a = &R->m.v[i], *b = &R->m.v[j];
	uint64_t so, doff, len;
	uint32_t bs = R->m.bs;
	if (!pick_pair(R, i, j, &so, &doff, &len))
		return;
	if (trace())
		fprintf(stderr, "#  reflink %s %llu -> %s %llu, %llu\n", a->name,
			(unsigned long long)so, b->name, (unsigned long long)doff,
			(unsigned long long)len);
	struct vbas_vol *va = vopen(R, i), *vb = vopen(R, j);
	/* Bad input first: refused, nothing changes. */
	int e0 = vbas_reflink(va, so + 1, vb, doff, len);
	if (e0 != -EINVAL)
		fail_msg("reflink misaligned: %d %s", e0, vbas_errmsg());
	assert_int_equal(vbas_reflink(va, so, vb, doff, len + 1), -EINVAL);
	assert_int_equal(vbas_reflink(va, a->size, vb, doff, bs), -ERANGE);
	assert_int_equal(vbas_reflink(va, so, vb, b->size, len), -ERANGE);
	if (len > bs && so + len < a->size)
		assert_int_equal(vbas_reflink(va, so, va, so + bs, len), -EINVAL);
	int e = vbas_reflink(va, so, vb, doff, len);
	vbas_vol_close(va);
	vbas_vol_close(vb);
	if (b->readonly) {
		expect_rofs(R, j, e);
		return;
	}
	if (e == -ENOSPC) {
		R->enospc++;
		len = shared_before_enospc() * bs;
	} else {
		assert_ok(e);
	}
	model_share(R, i, so, j, doff, len);
}

static void op_dedupe(struct run *R, int i, int j)
{
	struct mvol *a = &R->m.v[i], *b = &R->m.v[j];
	uint64_t so, doff, len;
	if (!pick_pair(R, i, j, &so, &doff, &len))
		return;
	struct vbas_vol *va = vopen(R, i), *vb = vopen(R, j);
	/* Half the time make the ranges equal first (two writes of the same
	 * bytes: different blocks, the same data). */
	if (rng_below(&R->r, 2) && !a->readonly && !b->readonly) {
		uint8_t *buf = malloc(len);
		rng_fill(&R->r, buf, len);
		int e = vbas_pwrite(va, buf, len, so, 0);
		if (!e)
			e = vbas_pwrite(vb, buf, len, doff, 0);
		if (e == -ENOSPC) {
			/* The model takes whichever writes landed. */
			R->enospc++;
			uint8_t *x = malloc(len);
			assert_ok(vbas_pread(va, x, len, so));
			if (!memcmp(x, buf, len)) {
				memcpy(a->data + so, buf, len);
				const uint32_t *refs = model_refs(&R->m);
				for (uint64_t k = so / R->m.bs; k < (so + len) / R->m.bs; k++)
					model_written(&R->m, i, k, refs);
			}
			free(x);
			free(buf);
			vbas_vol_close(va);
			vbas_vol_close(vb);
			return;
		}
		assert_ok(e);
		memcpy(a->data + so, buf, len);
		const uint32_t *refs = model_refs(&R->m);
		for (uint64_t k = so / R->m.bs; k < (so + len) / R->m.bs; k++)
			model_written(&R->m, i, k, refs);
		memcpy(b->data + doff, buf, len);
		refs = model_refs(&R->m);
		for (uint64_t k = doff / R->m.bs; k < (doff + len) / R->m.bs; k++)
			model_written(&R->m, j, k, refs);
		free(buf);
	}
	int expect = !memcmp(a->data + so, b->data + doff, len), same = -1;
	if (trace())
		fprintf(stderr, "#  dedupe %s %llu -> %s %llu, %llu: %s\n", a->name,
			(unsigned long long)so, b->name, (unsigned long long)doff,
			(unsigned long long)len, expect ? "same" : "differs");
	int e = vbas_dedupe(va, so, vb, doff, len, &same);
	vbas_vol_close(va);
	vbas_vol_close(vb);
	if (b->readonly) {
		expect_rofs(R, j, e);
		return;
	}
	if (e == -ENOSPC && expect) {
		R->enospc++;
		model_share(R, i, so, j, doff, shared_before_enospc() * R->m.bs);
		return;
	}
	assert_ok(e);
	assert_int_equal(same, expect);
	if (same)
		model_share(R, i, so, j, doff, len);
}

static void op_unshare(struct run *R, int i)
{
	struct mvol *mv = &R->m.v[i];
	uint64_t off = 0, len = 0;
	uint32_t bs = R->m.bs;
	if (rng_below(&R->r, 3))
		pick_range(R, mv->size, 1, &off, &len);
	struct vbas_vol *v = vopen(R, i);
	if (trace())
		fprintf(stderr, "#  unshare %s %llu+%llu\n", mv->name, (unsigned long long)off,
			(unsigned long long)len);
	int e = vbas_unshare(v, off, len);
	vbas_vol_close(v);
	if (mv->readonly) {
		expect_rofs(R, i, e);
		return;
	}
	if (e == -ENOSPC) {
		R->enospc++;
		return;                   /* all or nothing: compared later */
	}
	assert_ok(e);
	if (!len)
		len = mv->size - off;
	const uint32_t *refs = model_refs(&R->m);
	for (uint64_t b = off / bs; b < (off + len) / bs; b++)
		if (mv->pid[b] && refs[mv->pid[b]] > 1)
			mv->pid[b] = ++R->m.next_pid;
}

struct diff_got {
	uint64_t *v;
	size_t n;
};

static int diff_cb(uint64_t off, uint64_t len, void *arg)
{
	struct diff_got *g = arg;
	g->v = realloc(g->v, (g->n + 1) * 2 * sizeof(*g->v));
	g->v[2 * g->n] = off;
	g->v[2 * g->n + 1] = len;
	g->n++;
	return 0;
}

static void op_diff(struct run *R, int i, int j)
{
	struct mvol *a = &R->m.v[i], *b = &R->m.v[j];
	uint32_t bs = R->m.bs;
	struct diff_got g = { 0 };
	struct vbas_vol *va = vopen(R, i), *vb = vopen(R, j);
	assert_ok(vbas_diff(va, vb, diff_cb, &g));
	vbas_vol_close(va);
	vbas_vol_close(vb);
	uint64_t na = a->size / bs, nb = b->size / bs, n = na > nb ? na : nb, k = 0;
	uint64_t b0 = 0;
	while (b0 < n) {
		uint32_t x = b0 < na ? a->pid[b0] : 0, y = b0 < nb ? b->pid[b0] : 0;
		if (x == y) {
			b0++;
			continue;
		}
		uint64_t e = b0;
		while (e < n && (e < na ? a->pid[e] : 0) != (e < nb ? b->pid[e] : 0))
			e++;
		if (k >= g.n || g.v[2 * k] != b0 * bs || g.v[2 * k + 1] != (e - b0) * bs)
			fail_msg("diff %s -> %s: range %zu should be blocks %llu+%llu, engine says "
				 "%llu+%llu", a->name, b->name, (size_t)k, (unsigned long long)b0,
				 (unsigned long long)(e - b0),
				 k < g.n ? (unsigned long long)(g.v[2 * k] / bs) : 0ull,
				 k < g.n ? (unsigned long long)(g.v[2 * k + 1] / bs) : 0ull);
		k++;
		b0 = e;
	}
	if (k != g.n)
		fail_msg("diff %s -> %s: %zu ranges, the model has %llu", a->name, b->name, g.n,
			 (unsigned long long)k);
	free(g.v);
}

static void run_model(uint64_t seed, uint64_t nops, uint64_t pool_size, uint32_t bs,
		      uint32_t fanout, uint64_t cache)
{
	struct run R;
	memset(&R, 0, sizeof(R));
	R.r.s = seed;
	R.reserving = !getenv("VBAS_NO_RESERVE_OPS");
	R.m.bs = bs;
	R.cache = cache;
	R.dev = mem_pool(pool_size, bs, fanout);
	R.p = open_mem(R.dev, cache);
	/* Half the runs keep a tenth of the pool free by deleting expendable
	 * snapshots; the others delete them only when a change would fail. */
	if (seed & 1) {
		struct vbas_pool_settings st = { .expendable_floor = 100 };
		assert_ok(vbas_pool_set(R.p, &st));
	}
	for (int k = 0; k < 3; k++)
		op_create(&R);
	for (uint64_t n = 0; n < nops; n++) {
		int i = pick_live(&R);
		uint64_t what = rng_below(&R.r, 100);
		R.ops++;
		if (trace())
			fprintf(stderr, "# op %llu: %llu on %d\n", (unsigned long long)n,
				(unsigned long long)what, i);
		int j = pick_live(&R);
		if (i < 0 || what < 3)
			op_create(&R);
		else if (what < 24)
			op_write(&R, i);
		else if (what < 28)
			op_resv_write(&R, i);
		else if (what < 30)
			op_resv_hold(&R);
		else if (what < 34 && R.reserving)
			op_reserve(&R, i);
		else if (what < 38)
			op_discard(&R, i);
		else if (what < 43)
			op_zero(&R, i);
		else if (what < 46)
			op_resize(&R, i);
		else if (what < 50)
			op_delete(&R, i);
		else if (what < 54)
			op_snapshot(&R, i, 0);
		else if (what < 57)
			op_snapshot(&R, i, 1);
		else if (what < 63)
			op_reflink(&R, i, rng_below(&R.r, 4) ? j : i);
		else if (what < 67)
			op_dedupe(&R, i, rng_below(&R.r, 4) ? j : i);
		else if (what < 70)
			op_unshare(&R, i);
		else if (what < 74)
			op_diff(&R, i, j);
		else if (what < 84) {
			uint64_t off, len;
			pick_range(&R, R.m.v[i].size, 0, &off, &len);
			compare_range(&R, i, off, len);
		} else if (what < 92)
			assert_ok(vbas_flush(R.p));
		else if (what < 94)
			reopen(&R);
		else if (what < 96)
			op_shrink(&R);
		else
			assert_check_clean(R.p);
		reap_expended(&R, n);
		reap_zombies(&R);
		/* Reserved bytes per volume, after every operation (cheap). */
		for (int k = 0; k < MAXVOL; k++) {
			struct vbas_vol_info vi;
			if (!R.m.v[k].live)
				continue;
			uint64_t rb = 0;
			for (uint64_t b = 0; b < R.m.v[k].size / bs; b++)
				rb += R.m.v[k].rsv[b];
			assert_ok(vbas_vol_stat(R.p, R.m.v[k].name, &vi));
			if (vi.reserved != rb * bs)
				fail_msg("op %llu: volume %s: %llu bytes reserved, model %llu",
					 (unsigned long long)n, R.m.v[k].name,
					 (unsigned long long)vi.reserved, (unsigned long long)(rb * bs));
		}
		/* ENOSPC is for the one operation: the pool stays writable. */
		if (R.p->broken)
			fail_msg("op %llu left the pool read-only: %s", (unsigned long long)n,
				 R.p->broken_msg);
		/* What reservations hold is free, and nothing took from it. */
		if (space_avail(R.p) < R.p->sp.reserved || R.p->sp.overdrawn)
			fail_msg("op %llu: %llu blocks free, %llu reserved; %llu metadata blocks "
				 "were taken out of reserved room", (unsigned long long)n,
				 (unsigned long long)space_avail(R.p),
				 (unsigned long long)R.p->sp.reserved,
				 (unsigned long long)R.p->sp.overdrawn);
		if (n % 97 == 0 || getenv("VBAS_CHECK_ALL") ||
		    (getenv("VBAS_CHECK_FROM") && n >= strtoull(getenv("VBAS_CHECK_FROM"), NULL, 0))) {
			compare_all(&R);
			if (getenv("VBAS_CHECK_ALL"))
				assert_check_clean(R.p);
		}
	}
	drop_resv(&R);
	compare_all(&R);
	assert_check_clean(R.p);
	reopen(&R);
	compare_all(&R);
	assert_check_clean(R.p);
	fprintf(stderr, "# %llu operations, %llu ENOSPC; %llu writes inside reservations, %llu "
		"reservations refused; %llu reserved ranges taken or ended (%llu refused), %llu "
		"writes into them; %llu expendable snapshots deleted; %llu shrinks\n",
		(unsigned long long)R.ops,
		(unsigned long long)R.enospc,
		(unsigned long long)R.resv_writes, (unsigned long long)R.resv_refused,
		(unsigned long long)R.reserves, (unsigned long long)R.reserves_refused,
		(unsigned long long)R.resv_range_writes, (unsigned long long)R.expended,
		(unsigned long long)R.shrinks);
	assert_ok(vbas_close(R.p));
	dev_destroy(R.dev);
	for (int i = 0; i < MAXVOL; i++)
		mvol_free(&R.m.v[i]);
	free(R.m.refs);
}

static void t_model_small_fanout(void **state)
{
	(void)state;
	/* Deep trees (5 records a node), tiny cache: splits, merges and
	 * eviction everywhere.  A 12 MiB pool, volumes up to 4 MiB each: it
	 * is nearly full most of the time, and copying a shared path touches
	 * many refcount records (docs/design.md, "Metadata headroom").
	 * vbas_vol_usage lets go of the pool lock every 3 records: its
	 * figures must still match the model exactly. */
	uint64_t batch = vbas_tun.usage_batch;
	vbas_tun.usage_batch = 3;
	run_model(test_seed(11), test_ops(3000), 12ull << 20, 4096, 5, 256 << 10);
	vbas_tun.usage_batch = batch;
}

static void t_model_default(void **state)
{
	(void)state;
	run_model(test_seed(12), test_ops(3000), 16ull << 20, 4096, 0, 0);
}

static void t_model_big_blocks(void **state)
{
	(void)state;
	/* 64 KiB blocks: partial-block writes fill the rest with zeros.  Usage
	 * in batches of one record. */
	uint64_t batch = vbas_tun.usage_batch;
	vbas_tun.usage_batch = 1;
	run_model(test_seed(13), test_ops(1500), 128ull << 20, 65536, 6, 1 << 20);
	vbas_tun.usage_batch = batch;
}

static void t_model_full_pool(void **state)
{
	(void)state;
	/* A pool far smaller than its volumes: ENOSPC all the time. */
	run_model(test_seed(14), test_ops(2000), 2ull << 20, 4096, 8, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_model_small_fanout),
		cmocka_unit_test(t_model_default),
		cmocka_unit_test(t_model_big_blocks),
		cmocka_unit_test(t_model_full_pool),
	};
	return RUN("model", tests);
}
