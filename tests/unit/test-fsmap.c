/* vbas_fsmap against what the forward maps say.
 *
 * A pool with snapshots, a clone, reflinks (also within one volume),
 * discards and copies on write: fsmap of the whole pool must name, for
 * every block every volume maps (vbas_extents), that volume at that
 * offset, and nothing else as data; every metadata block of the refcount
 * tree as a node of some tree; every block without a refcount record as
 * free and only those; and a query of any sub-range must give exactly the
 * whole answer clipped to it. */
#include "common.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#define BS 4096u


static void wr(struct vbas_vol *v, uint64_t b, uint64_t n, int seed)
{
	uint8_t *buf = malloc(n * BS);
	struct rng r = { .s = b * 31 + (uint64_t)seed };
	rng_fill(&r, buf, n * BS);
	assert_ok(vbas_pwrite(v, buf, n * BS, b * BS, 0));
	free(buf);
}

static int cmp_rec(const void *a, const void *b)
{
	const struct vbas_fsmap_rec *x = a, *y = b;
	if (x->physical != y->physical)
		return x->physical < y->physical ? -1 : 1;
	if (x->kind != y->kind)
		return x->kind < y->kind ? -1 : 1;
	if (x->volume != y->volume)
		return x->volume < y->volume ? -1 : 1;
	return x->logical < y->logical ? -1 : x->logical > y->logical;
}

struct ext_chk {
	const struct fsmap_recs *all;
	uint64_t vol;
	const char *name;
	uint64_t blocks;
};

/* Every block of the extent is named in fsmap as this volume's data at
 * this offset. */
static int ext_cb(const struct vbas_extent *e, void *arg)
{
	struct ext_chk *c = arg;
	for (uint64_t o = 0; o < e->length; o += BS) {
		uint64_t p = e->physical + o, l = e->offset + o;
		int found = 0;
		for (size_t i = 0; i < c->all->n && !found; i++) {
			const struct vbas_fsmap_rec *x = &c->all->r[i];
			found = x->kind == VBAS_FSMAP_DATA && x->volume == c->vol &&
				p >= x->physical && p < x->physical + x->length &&
				x->logical + (p - x->physical) == l && !strcmp(x->name, c->name);
		}
		if (!found)
			fail_msg("%s: block at offset %" PRIu64 " (physical %" PRIu64 ") is not in fsmap",
				 c->name, l, p);
		c->blocks++;
	}
	return 0;
}

struct vol_chk {
	struct vbas_pool *p;
	const struct fsmap_recs *all;
	uint64_t blocks;
};

static int vol_cb(const struct vbas_vol_info *vi, void *arg)
{
	struct vol_chk *c = arg;
	struct vbas_vol *v;
	struct ext_chk e = { c->all, vi->id, vi->name, 0 };
	assert_ok(vbas_vol_open(c->p, vi->name, &v));
	assert_ok(vbas_extents(v, 0, vi->size, ext_cb, &e));
	assert_ok(vbas_vol_close(v));
	assert_int_equal(e.blocks * BS, vi->mapped);
	c->blocks += e.blocks;
	return 0;
}

static void check_all(struct vbas_pool *p)
{
	struct fsmap_recs all = { 0 };
	struct vbas_pool_info pi;
	assert_ok(vbas_pool_info(p, &pi));
	assert_ok(vbas_fsmap(p, 0, 0, fsmap_collect, &all));
	/* Sorted; every block covered; free runs alone. */
	uint64_t covered = 0, data = 0;
	for (size_t i = 0; i < all.n; i++) {
		const struct vbas_fsmap_rec *x = &all.r[i];
		assert_true(x->length > 0 && x->length % BS == 0 && x->physical % BS == 0);
		if (i)
			assert_true(all.r[i - 1].physical <= x->physical);
		if (x->physical > covered)
			fail_msg("blocks %" PRIu64 "..%" PRIu64 " have no record", covered / BS,
				 x->physical / BS);
		if (x->physical + x->length > covered)
			covered = x->physical + x->length;
		if (x->kind == VBAS_FSMAP_DATA)
			data += x->length;
		/* Free: no refcount record, and no other record over it. */
		for (uint64_t b = x->physical / BS; b < (x->physical + x->length) / BS; b++) {
			uint32_t rc = 0;
			int type = 0;
			int r = space_refcount(p, b, &rc, &type);
			if (r && r != -ENOENT)
				fail_msg("refcount of %" PRIu64 ": %d", b, r);
			if (x->kind == VBAS_FSMAP_FREE)
				assert_int_equal(rc, 0);
			else if (x->kind == VBAS_FSMAP_DATA)
				assert_int_equal(type, VBAS_BT_DATA);
			else if (x->kind != VBAS_FSMAP_SUPERBLOCK)
				assert_int_equal(type, VBAS_BT_META);
		}
		if (x->kind == VBAS_FSMAP_FREE && i + 1 < all.n)
			assert_true(all.r[i + 1].physical >= x->physical + x->length);
	}
	assert_int_equal(covered, pi.size);
	/* Every mapped block of every volume, and no more. */
	struct vol_chk vc = { p, &all, 0 };
	assert_ok(vbas_vol_list(p, vol_cb, &vc));
	assert_int_equal(data, vc.blocks * BS);
	/* Sub-ranges: the whole answer, clipped. */
	struct rng r = { .s = all.n };
	for (int q = 0; q < 40; q++) {
		uint64_t nb = pi.size / BS, s = rng_below(&r, nb), l = 1 + rng_below(&r, nb - s);
		if (q == 0)
			s = 0, l = 1;
		if (q == 1)
			s = nb - 1, l = 1;
		struct fsmap_recs part = { 0 };
		assert_ok(vbas_fsmap(p, s * BS, l * BS, fsmap_collect, &part));
		uint64_t lo = s * BS, hi = (s + l) * BS;
		struct fsmap_recs want = { 0 };
		for (size_t i = 0; i < all.n; i++) {
			struct vbas_fsmap_rec w = all.r[i];
			if (w.physical + w.length <= lo || w.physical >= hi)
				continue;
			uint64_t cut = w.physical < lo ? lo - w.physical : 0;
			w.physical += cut;
			w.logical += w.kind == VBAS_FSMAP_DATA ? cut : 0;
			w.length -= cut;
			if (w.physical + w.length > hi)
				w.length = hi - w.physical;
			fsmap_collect(&w, &want);
		}
		/* In the order fsmap gives: by where each starts now. */
		if (want.n)
			qsort(want.r, want.n, sizeof(*want.r), cmp_rec);
		size_t k;
		for (k = 0; k < want.n && k < part.n; k++) {
			const struct vbas_fsmap_rec *g = &part.r[k], *w = &want.r[k];
			if (g->physical != w->physical || g->length != w->length || g->kind != w->kind ||
			    g->volume != w->volume || g->logical != w->logical || g->level != w->level)
				fail_msg("range %" PRIu64 "+%" PRIu64 ": record %zu differs (physical %"
					 PRIu64 "+%" PRIu64 " kind %d volume %" PRIu64 " at %" PRIu64
					 " level %u, want %" PRIu64 "+%" PRIu64 " kind %d volume %" PRIu64
					 " at %" PRIu64 " level %u)", s, l, k, g->physical, g->length,
					 g->kind, g->volume, g->logical, g->level, w->physical, w->length,
					 w->kind, w->volume, w->logical, w->level);
		}
		assert_int_equal(want.n, part.n);
		free(want.r);
		free(part.r);
	}
	free(all.r);
}

static void t_fsmap(void **state)
{
	(void)state;
	struct vbas_dev *d = mem_pool(64u << 20, BS, 6);
	struct vbas_pool *p = open_mem(d, 4u << 20);
	struct vbas_vol *a, *b, *c;
	assert_ok(vbas_vol_create(p, "a", 16u << 20));
	assert_ok(vbas_vol_create(p, "b", 16u << 20));
	assert_ok(vbas_vol_open(p, "a", &a));
	assert_ok(vbas_vol_open(p, "b", &b));
	check_all(p);                         /* an empty pool */
	for (uint64_t i = 0; i < 300; i++)
		wr(a, (i * 37) % 4096, 1 + i % 5, 1);
	wr(b, 0, 64, 2);
	assert_ok(vbas_flush(p));
	check_all(p);
	assert_ok(vbas_vol_snapshot(p, "a", "a-snap", 0));
	assert_ok(vbas_vol_snapshot(p, "a", "a-clone", VBAS_SNAP_WRITABLE));
	for (uint64_t i = 0; i < 80; i++)
		wr(a, (i * 53) % 4096, 2, 3);          /* copies on write */
	assert_ok(vbas_vol_open(p, "a-clone", &c));
	wr(c, 100, 20, 4);
	assert_ok(vbas_reflink(a, 0, b, 256 * BS, 128 * BS));
	assert_ok(vbas_reflink(b, 0, b, 1024 * BS, 32 * BS));   /* within one volume */
	assert_ok(vbas_discard(a, 512 * BS, 256 * BS, 0));
	check_all(p);                         /* uncommitted changes too */
	assert_ok(vbas_flush(p));
	check_all(p);
	assert_ok(vbas_vol_close(c));
	assert_ok(vbas_vol_delete(p, "a-snap"));
	check_all(p);
	/* Bad input. */
	struct fsmap_recs none = { 0 };
	assert_int_equal(vbas_fsmap(p, 100, BS, fsmap_collect, &none), -EINVAL);
	assert_non_null(strstr(vbas_errmsg(), "multiples of the block size"));
	assert_int_equal(vbas_fsmap(p, 0, 3000, fsmap_collect, &none), -EINVAL);
	assert_int_equal(vbas_fsmap(p, 64u << 20, BS, fsmap_collect, &none), -ERANGE);
	assert_non_null(strstr(vbas_errmsg(), "past the end of the pool"));
	assert_int_equal(vbas_fsmap(p, 0, (64u << 20) + BS, fsmap_collect, &none), -ERANGE);
	assert_int_equal(vbas_fsmap(p, 0, 0, NULL, NULL), -EINVAL);
	assert_int_equal(none.n, 0);
	assert_ok(vbas_vol_close(a));
	assert_ok(vbas_vol_close(b));
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	dev_destroy(d);
}

static int stop_cb(const struct vbas_fsmap_rec *x, void *arg)
{
	(void)x;
	return ++*(int *)arg == 3 ? 42 : 0;
}

/* A callback's non-zero return stops the walk and is returned. */
static void t_fsmap_stop(void **state)
{
	(void)state;
	struct vbas_dev *d = mem_pool(16u << 20, BS, 0);
	struct vbas_pool *p = open_mem(d, 4u << 20);
	struct vbas_vol *a;
	assert_ok(vbas_vol_create(p, "a", 4u << 20));
	assert_ok(vbas_vol_open(p, "a", &a));
	for (uint64_t i = 0; i < 20; i++)
		wr(a, i * 7, 1, 5);
	int n = 0;
	assert_int_equal(vbas_fsmap(p, 0, 0, stop_cb, &n), 42);
	assert_int_equal(n, 3);
	assert_ok(vbas_vol_close(a));
	assert_ok(vbas_close(p));
	dev_destroy(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_fsmap),
		cmocka_unit_test(t_fsmap_stop),
	};
	return RUN("fsmap", tests);
}
