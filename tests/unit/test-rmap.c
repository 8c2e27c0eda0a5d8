/* The reverse map: kept in the same transactions as the forward maps,
 * built for a pool that has none, checked three ways, and what it must
 * not cost (a snapshot changes nothing in it). */
#include "common.h"
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BS   IMG_BS
#define NB   IMG_NB                /* blocks per volume */

static void same_fsmap(const struct fsmap_recs *x, const struct fsmap_recs *y)
{
	assert_int_equal(x->n, y->n);
	for (size_t i = 0; i < x->n; i++) {
		const struct vbas_fsmap_rec *u = &x->r[i], *v = &y->r[i];
		if (u->physical != v->physical || u->length != v->length || u->kind != v->kind ||
		    u->volume != v->volume || u->logical != v->logical || u->level != v->level)
			fail_msg("fsmap record %zu: %llu+%llu kind %d vol %llu at %llu, then %llu+%llu "
				 "kind %d vol %llu at %llu", i, (unsigned long long)u->physical,
				 (unsigned long long)u->length, (int)u->kind,
				 (unsigned long long)u->volume, (unsigned long long)u->logical,
				 (unsigned long long)v->physical, (unsigned long long)v->length,
				 (int)v->kind, (unsigned long long)v->volume,
				 (unsigned long long)v->logical);
	}
}

static struct vbas_dev *mem_pool_flags(uint64_t size, uint32_t flags)
{
	struct vbas_dev *d = vbas_memdev_create(size);
	struct vbas_format_opts fo = { .size = size, .block_size = BS, .flags = flags };
	assert_non_null(d);
	assert_ok(vbas_format_dev(d, &fo, 0));
	return d;
}

/* A pool formatted without a reverse map gains one: the same fsmap, a
 * clean three-way check, the same data, kept across a reopen. */
static void t_build(void **state)
{
	(void)state;
	static struct img m;
	struct vbas_dev *d = mem_pool_flags(16 << 20, VBAS_FORMAT_NO_RMAP);
	struct vbas_pool *p = open_mem(d, 1 << 20);
	struct vbas_pool_info pi;
	struct vbas_check_stats st;
	img_populate(p, &m, test_seed(31));
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.rmap, 0);
	assert_ok(vbas_check(p, NULL, NULL, &st));
	assert_int_equal(st.rmap_records, 0);
	struct fsmap_recs before = { 0 }, after = { 0 };
	assert_ok(vbas_fsmap(p, 0, 0, fsmap_collect, &before));
	assert_ok(vbas_pool_rmap_build(p));
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.rmap, 1);
	assert_int_equal(le32_get(p->sb.version), VBAS_FORMAT_VERSION);
	assert_ok(vbas_check(p, NULL, NULL, &st));
	assert_true(st.rmap_records > 0);
	assert_int_equal(vbas_pool_rmap_build(p), -EEXIST);
	/* The data blocks are the same; the map's own nodes are new. */
	assert_ok(vbas_fsmap(p, 0, 0, fsmap_collect, &after));
	struct fsmap_recs bd = { 0 }, ad = { 0 };
	for (size_t i = 0; i < before.n; i++)
		if (before.r[i].kind == VBAS_FSMAP_DATA)
			fsmap_collect(&before.r[i], &bd);
	for (size_t i = 0; i < after.n; i++)
		if (after.r[i].kind == VBAS_FSMAP_DATA)
			fsmap_collect(&after.r[i], &ad);
	same_fsmap(&bd, &ad);
	vbas_tun.fsmap_walk = 1;
	struct fsmap_recs walked = { 0 };
	int r = vbas_fsmap(p, 0, 0, fsmap_collect, &walked);
	vbas_tun.fsmap_walk = 0;
	assert_ok(r);
	same_fsmap(&after, &walked);
	assert_ok(vbas_close(p));
	p = open_mem(d, 1 << 20);
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.rmap, 1);
	assert_check_clean(p);
	/* And keeps it up from then on. */
	struct rng rr = { 99 };
	img_write(p, "c", m.c, 10, 30, &rr);
	assert_ok(vbas_flush(p));
	assert_check_clean(p);
	img_compare(p, "a", m.a);
	img_compare(p, "c", m.c);
	assert_ok(vbas_close(p));
	dev_destroy(d);
	free(before.r);
	free(after.r);
	free(bd.r);
	free(ad.r);
	free(walked.r);
}

static void build_op(struct vbas_pool *p, void *arg)
{
	(void)arg;
	(void)vbas_pool_rmap_build(p);
}

/* Power lost at every write of the build: the pool opens either without
 * a reverse map or with a whole one, checked clean, its data intact. */
static void t_build_crash(void **state)
{
	(void)state;
	static struct img m;
	struct vbas_dev *base = mem_pool_flags(16 << 20, VBAS_FORMAT_NO_RMAP);
	struct vbas_pool *p = open_mem(base, 1 << 20);
	img_populate(p, &m, test_seed(32));
	assert_ok(vbas_close(p));
	uint64_t total = crash_writes(base, 0, build_op, NULL);
	unsigned with = 0, without = 0;
	for (uint64_t at = 0; at <= total; at++) {
		struct vbas_dev *s = crash_run(base, 0, at, crash_modes[at % 4], 5 + at, build_op, NULL);
		p = open_mem(s, 1 << 20);
		struct vbas_pool_info pi;
		assert_ok(vbas_pool_info(p, &pi));
		*(pi.rmap ? &with : &without) += 1;
		assert_check_clean(p);
		img_compare(p, "a", m.a);
		img_compare(p, "c", m.c);
		assert_ok(vbas_close(p));
		dev_destroy(s);
	}
	fprintf(stderr, "# %llu writes: %u survivors with the reverse map, %u without\n",
		(unsigned long long)total, with, without);
	assert_true(with > 0 && without > 0);
	dev_destroy(base);
}

/* A snapshot of a volume with many extents changes nothing in the
 * reverse map: same root, same records. */
static void t_snapshot_o1(void **state)
{
	(void)state;
	struct vbas_dev *d = mem_pool(64 << 20, BS, 0);
	struct vbas_pool *p = open_mem(d, 4 << 20);
	struct vbas_vol *v;
	uint8_t buf[BS];
	assert_ok(vbas_vol_create(p, "big", 16384ull * BS));
	assert_ok(vbas_vol_open(p, "big", &v));
	memset(buf, 7, sizeof(buf));
	for (uint64_t b = 0; b < 16384; b += 2)       /* 8192 extents */
		assert_ok(vbas_pwrite(v, buf, BS, b * BS, 0));
	vbas_vol_close(v);
	assert_ok(vbas_flush(p));
	struct vbas_check_stats s0, s1;
	assert_ok(vbas_check(p, NULL, NULL, &s0));
	assert_int_equal(s0.rmap_records, 8192);
	uint64_t root = p->sp.rmap.root, txid = p->sp.rmap.root_txid;
	uint64_t meta0 = p->sp.meta_allocs_txn;
	assert_ok(vbas_vol_snapshot(p, "big", "snap", 0));
	/* Nothing of the reverse map written: its root is the committed one. */
	assert_int_equal(p->sp.rmap.root, root);
	assert_int_equal(p->sp.rmap.root_txid, txid);
	assert_true(p->sp.meta_allocs_txn - meta0 < 16);
	assert_ok(vbas_flush(p));
	assert_ok(vbas_check(p, NULL, NULL, &s1));
	assert_int_equal(s1.rmap_records, s0.rmap_records);
	/* The first write after it copies a shared leaf: its records gain a
	 * count each, under the same owner (no new records). */
	assert_ok(vbas_vol_open(p, "big", &v));
	memset(buf, 9, sizeof(buf));
	assert_ok(vbas_pwrite(v, buf, BS, 0, 0));
	vbas_vol_close(v);
	assert_ok(vbas_flush(p));
	assert_ok(vbas_check(p, NULL, NULL, &s1));
	assert_int_equal(s1.rmap_records, s0.rmap_records + 1);
	assert_ok(vbas_close(p));
	dev_destroy(d);
}

struct problems {
	char text[4096];
	int n;
};

static void note(const char *msg, void *arg)
{
	struct problems *pr = arg;
	size_t l = strlen(pr->text);
	snprintf(pr->text + l, sizeof(pr->text) - l, "%s\n", msg);
	pr->n++;
}

static void expect_problem(struct vbas_pool *p, const char *what)
{
	struct problems pr = { "", 0 };
	assert_int_equal(vbas_check(p, note, &pr, NULL), -EUCLEAN);
	if (!strstr(pr.text, what))
		fail_msg("check did not say '%s'; it said:\n%s", what, pr.text);
}

/* The three-way check catches a reverse map that disagrees with the
 * mapping leaves (a record too many, one missing, a wrong count), names
 * the blocks and the volume, and a refcount that disagrees with the
 * reverse map's owners. */
static void t_check_catches(void **state)
{
	(void)state;
	static struct img m;
	struct vbas_dev *base = mem_pool(16 << 20, BS, 0);
	struct vbas_pool *p = open_mem(base, 1 << 20);
	img_populate(p, &m, test_seed(33));
	struct vbas_vol *a;
	uint64_t pb, len;
	int mapped;
	assert_ok(vbas_vol_open(p, "a", &a));
	struct vbas_vol_rec rec;
	struct vbas_btree t;
	assert_ok(vol_get(p, a->id, &rec));
	vol_map_tree(p, a->id, &rec, &t);
	uint64_t lb = 0;
	do {
		assert_ok(map_lookup_f(&t, lb, &pb, &len, &mapped, NULL));
		if (!mapped)
			lb += len;
	} while (!mapped);
	uint64_t aid = a->id;
	vbas_vol_close(a);
	assert_ok(vbas_close(p));
	for (int kind = 0; kind < 3; kind++) {
		struct vbas_dev *d = vbas_memdev_clone(base);
		p = open_mem(d, 1 << 20);
		assert_check_clean(p);
		pool_lock(p);
		struct rmap_irec hit = { 0 };
		struct vbas_rmap_rec rr;
		uint8_t key[sizeof(struct vbas_rmap_key)];
		/* The record of a's block at LB, whoever's lineage holds it. */
		struct vbas_rmap_rec probe;
		rmap_key(key, pb, 0, 0, 0);
		assert_ok(bt_lookup(&p->sp.rmap, key, BT_GE, &probe));
		rmap_to_irec(&probe, &hit);
		assert_int_equal(hit.pblk, pb);
		memcpy(&rr, &probe, sizeof(rr));
		if (kind == 0) {           /* a record no leaf holds */
			rmap_key(&rr.k, pb, aid, lb + 100000, 1);
			rr.v.count = le32_mk(1);
			assert_ok(bt_insert(&p->sp.rmap, &rr));
		} else if (kind == 1) {    /* a record lost */
			assert_ok(bt_delete(&p->sp.rmap, &probe.k, NULL));
		} else {                   /* a count one too high */
			rr.v.count = le32_mk(le32_get(rr.v.count) + 1);
			assert_ok(bt_update(&p->sp.rmap, &rr));
		}
		p->dirty = 1;
		pool_unlock(p);
		assert_ok(vbas_flush(p));
		assert_ok(vbas_close(p));
		p = open_mem(d, 1 << 20);
		char want[128];
		snprintf(want, sizeof(want), "blocks %llu+", (unsigned long long)pb);
		expect_problem(p, want);
		expect_problem(p, kind == 1 ? "the reverse map says 0" : "the reverse map says");
		expect_problem(p, "the reverse map's owners");
		assert_ok(vbas_close(p));
		dev_destroy(d);
	}
	dev_destroy(base);
}

/* The bad-sector question: every volume that reads one physical block,
 * at which offset, answered for a block shared by a snapshot, a clone
 * and a reflink. */
static void t_bad_sector(void **state)
{
	(void)state;
	struct vbas_dev *d = mem_pool(16 << 20, BS, 0);
	struct vbas_pool *p = open_mem(d, 1 << 20);
	struct vbas_vol *v, *w;
	uint8_t buf[BS];
	memset(buf, 1, sizeof(buf));
	assert_ok(vbas_vol_create(p, "v", 64 * BS));
	assert_ok(vbas_vol_create(p, "w", 64 * BS));
	assert_ok(vbas_vol_open(p, "v", &v));
	assert_ok(vbas_vol_open(p, "w", &w));
	assert_ok(vbas_pwrite(v, buf, BS, 5 * BS, 0));
	assert_ok(vbas_vol_snapshot(p, "v", "v-snap", 0));
	assert_ok(vbas_vol_snapshot(p, "v-snap", "v-clone", VBAS_SNAP_WRITABLE));
	assert_ok(vbas_reflink(v, 5 * BS, w, 9 * BS, BS));
	assert_ok(vbas_reflink(v, 5 * BS, v, 7 * BS, BS));
	assert_ok(vbas_flush(p));
	struct fsmap_recs all = { 0 };
	assert_ok(vbas_fsmap(p, 0, 0, fsmap_collect, &all));
	uint64_t phys = UINT64_MAX;
	for (size_t i = 0; i < all.n; i++)
		if (all.r[i].kind == VBAS_FSMAP_DATA && !strcmp(all.r[i].name, "w"))
			phys = all.r[i].physical;
	assert_true(phys != UINT64_MAX);
	struct fsmap_recs one = { 0 };
	assert_ok(vbas_fsmap(p, phys, BS, fsmap_collect, &one));
	const char *want[] = { "v", "v", "w", "v-snap", "v-clone" };
	const uint64_t at[] = { 5, 7, 9, 5, 5 };
	assert_int_equal(one.n, 5);
	for (int k = 0; k < 5; k++) {
		int found = 0;
		for (size_t i = 0; i < one.n; i++)
			found |= one.r[i].kind == VBAS_FSMAP_DATA && one.r[i].physical == phys &&
				 one.r[i].length == BS && !strcmp(one.r[i].name, want[k]) &&
				 one.r[i].logical == at[k] * BS;
		if (!found)
			fail_msg("fsmap of block %llu does not name %s at block %llu",
				 (unsigned long long)(phys / BS), want[k], (unsigned long long)at[k]);
	}
	vbas_vol_close(v);
	vbas_vol_close(w);
	assert_ok(vbas_close(p));
	dev_destroy(d);
	free(all.r);
	free(one.r);
}

/* ---- Repair ------------------------------------------------------------- */

struct nodes {
	uint64_t v[4096];
	size_t n;
};

static int node_cb(void *arg, uint64_t blkno, unsigned level)
{
	struct nodes *n = arg;
	(void)level;
	if (n->n < 4096)
		n->v[n->n++] = blkno;
	return 0;
}

static void ignore(void *arg, const char *fmt, ...)
{
	(void)arg;
	(void)fmt;
}

/* The nodes of the refcount tree (WHICH 0) or the reverse map (1) of the
 * pool on D. */
static void tree_nodes(struct vbas_dev *d, int which, struct nodes *out)
{
	struct vbas_pool *p = open_mem(d, 1 << 20);
	struct bt_check_cbs cbs = { .report = ignore, .node_cb = node_cb, .arg = out };
	out->n = 0;
	assert_ok(bt_check(which ? &p->sp.rmap : &p->sp.refc, &cbs, NULL, NULL));
	assert_true(out->n > 0);
	assert_ok(vbas_close(p));
}

static struct vbas_pool *open_repair(struct vbas_dev *d)
{
	struct vbas_open_opts oo = { .cache_bytes = 1 << 20, .flags = VBAS_OPEN_REPAIR };
	struct vbas_pool *p = NULL;
	assert_ok(vbas_open_dev(d, &oo, &p));
	return p;
}

/* Repair D (damaged in WHICH tree), then everything is as written: a dry
 * run first changes nothing; the repair rebuilds what it says, check is
 * clean before and after a reopen, every volume reads back byte for byte,
 * and fsmap from the new reverse map equals the walk's. */
static void repair_and_verify(struct vbas_dev *d, const struct img *m, int rmap_damaged,
			      size_t image_bytes)
{
	struct vbas_repair_stats st;
	struct problems pr = { "", 0 };
	uint8_t *before = malloc(image_bytes);
	memcpy(before, vbas_memdev_image(d), image_bytes);
	struct vbas_pool *p = open_repair(d);
	assert_int_equal(vbas_vol_create(p, "x", BS), -EROFS);
	assert_ok(vbas_repair(p, VBAS_REPAIR_DRY_RUN, note, &pr, &st));
	assert_int_equal(st.refcount_rebuilt, 1);
	assert_int_equal(st.rmap_rebuilt, rmap_damaged);
	assert_ok(vbas_close(p));
	if (memcmp(before, vbas_memdev_image(d), image_bytes))
		fail_msg("a dry run changed the pool");
	free(before);
	p = open_repair(d);
	assert_ok(vbas_repair(p, 0, note, &pr, &st));
	assert_int_equal(st.refcount_rebuilt, 1);
	assert_int_equal(st.rmap_rebuilt, rmap_damaged);
	assert_true(st.refcount_records > 0);
	assert_non_null(strstr(pr.text, "repaired: committed"));
	assert_check_clean(p);
	img_compare(p, "a", m->a);
	img_compare(p, "c", m->c);
	assert_ok(vbas_vol_create(p, "after", 8 * BS));   /* usable again */
	assert_ok(vbas_close(p));
	p = open_mem(d, 1 << 20);
	assert_check_clean(p);
	img_compare(p, "a", m->a);
	img_compare(p, "c", m->c);
	struct fsmap_recs x = { 0 }, y = { 0 };
	assert_ok(vbas_fsmap(p, 0, 0, fsmap_collect, &x));
	vbas_tun.fsmap_walk = 1;
	int r = vbas_fsmap(p, 0, 0, fsmap_collect, &y);
	vbas_tun.fsmap_walk = 0;
	assert_ok(r);
	same_fsmap(&x, &y);
	free(x.r);
	free(y.r);
	/* A second repair finds nothing to do. */
	assert_ok(vbas_close(p));
	p = open_repair(d);
	pr.text[0] = 0;
	assert_ok(vbas_repair(p, 0, note, &pr, &st));
	assert_int_equal(st.refcount_rebuilt, 0);
	assert_non_null(strstr(pr.text, "nothing to repair"));
	assert_ok(vbas_vol_create(p, "after2", 8 * BS));
	assert_ok(vbas_close(p));
}

/* A refcount-tree or reverse-map node damaged at random (a byte flipped,
 * or the block zeroed, as a lost write leaves it), many times over:
 * repair brings back every byte. */
static void t_repair_random(void **state)
{
	(void)state;
	static struct img m;
	const size_t size = 16 << 20;
	struct vbas_dev *base = mem_pool(size, BS, 8);
	struct vbas_pool *p = open_mem(base, 1 << 20);
	img_populate(p, &m, test_seed(41));
	uint8_t *s1 = malloc(NB * BS);
	struct vbas_vol *v;
	assert_ok(vbas_vol_open(p, "s1", &v));
	assert_ok(vbas_pread(v, s1, NB * BS, 0));
	vbas_vol_close(v);
	assert_ok(vbas_close(p));
	struct rng r = { test_seed(42) };
	for (int trial = 0; trial < 16; trial++) {
		int which = trial & 1;
		static struct nodes ns;
		tree_nodes(base, which, &ns);
		uint64_t blk = ns.v[rng_below(&r, ns.n)];
		struct vbas_dev *d = vbas_memdev_clone(base);
		uint8_t *img = vbas_memdev_image(d) + blk * BS;
		if (trial & 2)
			memset(img, 0, BS);
		else
			img[rng_below(&r, BS)] ^= (uint8_t)(1 + rng_below(&r, 255));
		repair_and_verify(d, &m, which, size);
		p = open_mem(d, 1 << 20);
		assert_ok(vbas_vol_open(p, "s1", &v));
		uint8_t *buf = malloc(NB * BS);
		assert_ok(vbas_pread(v, buf, NB * BS, 0));
		if (memcmp(buf, s1, NB * BS))
			fail_msg("trial %d: the snapshot differs after the repair", trial);
		free(buf);
		vbas_vol_close(v);
		assert_ok(vbas_close(p));
		dev_destroy(d);
	}
	free(s1);
	dev_destroy(base);
}

/* Records that read fine but say the wrong thing (a count off by one, a
 * run cut short): the refcount tree is rebuilt; a reverse-map record
 * moved to another lineage: both are. */
static void t_repair_wrong_records(void **state)
{
	(void)state;
	static struct img m;
	const size_t size = 16 << 20;
	struct vbas_dev *base = mem_pool(size, BS, 0);
	struct vbas_pool *p = open_mem(base, 1 << 20);
	img_populate(p, &m, test_seed(43));
	assert_ok(vbas_close(p));
	for (int kind = 0; kind < 3; kind++) {
		struct vbas_dev *d = vbas_memdev_clone(base);
		p = open_mem(d, 1 << 20);
		pool_lock(p);
		if (kind < 2) {
			struct vbas_refc_rec rec;
			uint8_t key[8];
			st_le64(key, VBAS_FIRST_BLOCK);
			assert_ok(bt_lookup(&p->sp.refc, key, BT_GE, &rec));
			if (kind == 0)
				rec.v.refcount = le32_mk(le32_get(rec.v.refcount) + 1);
			else if (le32_get(rec.v.len) > 1)
				rec.v.len = le32_mk(le32_get(rec.v.len) - 1);
			else
				rec.v.refcount = le32_mk(le32_get(rec.v.refcount) + 2);
			assert_ok(bt_update(&p->sp.refc, &rec));
		} else {
			struct vbas_rmap_rec rec;
			uint8_t key[sizeof(struct vbas_rmap_key)];
			rmap_key(key, 0, 0, 0, 0);
			assert_ok(bt_lookup(&p->sp.rmap, key, BT_GE, &rec));
			assert_ok(bt_delete(&p->sp.rmap, &rec.k, NULL));
			rec.k.owner = le64_mk(le64_get(rec.k.owner) + 1);
			assert_ok(bt_insert(&p->sp.rmap, &rec));
		}
		p->dirty = 1;
		pool_unlock(p);
		assert_ok(vbas_flush(p));
		assert_ok(vbas_close(p));
		p = open_mem(d, 1 << 20);
		assert_int_equal(vbas_check(p, NULL, NULL, NULL), -EUCLEAN);
		assert_ok(vbas_close(p));
		repair_and_verify(d, &m, kind == 2, size);
		dev_destroy(d);
	}
	dev_destroy(base);
}

/* Damage to a mapping leaf is not repaired here: named, and nothing is
 * changed. */
static void t_repair_refuses_mapping_damage(void **state)
{
	(void)state;
	static struct img m;
	const size_t size = 16 << 20;
	struct vbas_dev *d = mem_pool(size, BS, 0);
	struct vbas_pool *p = open_mem(d, 1 << 20);
	img_populate(p, &m, test_seed(44));
	struct vbas_vol *v;
	assert_ok(vbas_vol_open(p, "a", &v));
	uint64_t root = 0;
	{
		struct vbas_vol_rec rec;
		pool_lock(p);
		assert_ok(vol_get(p, v->id, &rec));
		pool_unlock(p);
		root = le64_get(rec.root);
	}
	vbas_vol_close(v);
	assert_ok(vbas_close(p));
	vbas_memdev_image(d)[root * BS + 200] ^= 0x10;
	uint8_t *before = malloc(size);
	memcpy(before, vbas_memdev_image(d), size);
	p = open_repair(d);
	struct problems pr = { "", 0 };
	struct vbas_repair_stats st;
	assert_int_equal(vbas_repair(p, 0, note, &pr, &st), -EUCLEAN);
	assert_true(st.unrepairable > 0);
	char want[64];
	snprintf(want, sizeof(want), "block %llu", (unsigned long long)root);
	if (!strstr(pr.text, want) || !strstr(pr.text, "not repairable"))
		fail_msg("repair did not name block %llu: %s", (unsigned long long)root, pr.text);
	assert_ok(vbas_close(p));
	if (memcmp(before, vbas_memdev_image(d), size))
		fail_msg("a refused repair changed the pool");
	free(before);
	dev_destroy(d);
}

static void repair_op(struct vbas_pool *p, void *arg)
{
	(void)arg;
	(void)vbas_repair(p, 0, NULL, NULL, NULL);
}

/* Power lost at every write of a repair: the survivor is the damaged pool
 * (and a repair then mends it) or the repaired one. */
static void t_repair_crash(void **state)
{
	(void)state;
	static struct img m;
	struct vbas_dev *base = mem_pool(16 << 20, BS, 8);
	struct vbas_pool *p = open_mem(base, 1 << 20);
	img_populate(p, &m, test_seed(45));
	assert_ok(vbas_close(p));
	static struct nodes ns;
	tree_nodes(base, 0, &ns);
	vbas_memdev_image(base)[ns.v[0] * BS + 100] ^= 0x01;     /* the root */
	uint64_t total = crash_writes(base, VBAS_OPEN_REPAIR, repair_op, NULL);
	unsigned repaired = 0, again = 0;
	for (uint64_t at = 0; at <= total; at++) {
		struct vbas_dev *s = crash_run(base, VBAS_OPEN_REPAIR, at, crash_modes[at % 4], 11 + at,
					       repair_op, NULL);
		p = open_repair(s);
		struct vbas_repair_stats st;
		assert_ok(vbas_repair(p, 0, NULL, NULL, &st));
		*(st.refcount_rebuilt ? &again : &repaired) += 1;
		assert_check_clean(p);
		img_compare(p, "a", m.a);
		img_compare(p, "c", m.c);
		assert_ok(vbas_close(p));
		dev_destroy(s);
	}
	fprintf(stderr, "# %llu writes: %u survivors repaired, %u repaired again\n",
		(unsigned long long)total, repaired, again);
	assert_true(repaired > 0 && again > 0);
	dev_destroy(base);
}

/* An unreadable mapping-tree leaf (a byte flipped, or zeroed) of a volume
 * that shares most of its tree with a snapshot and a clone: repair
 * rebuilds it from the reverse map, and every byte of every volume is
 * back.  An unreadable interior node is rebuilt from the nodes below it
 * that lost their parent, with the same result. */
static void t_repair_leaf(void **state)
{
	(void)state;
	static struct img m;
	const size_t size = 16 << 20;
	struct vbas_dev *base = mem_pool(size, BS, 8);
	struct vbas_pool *p = open_mem(base, 1 << 20);
	img_populate(p, &m, test_seed(47));
	uint8_t *s1 = malloc(NB * BS), *s2 = malloc(NB * BS);
	struct vbas_vol *v;
	assert_ok(vbas_vol_open(p, "s1", &v));
	assert_ok(vbas_pread(v, s1, NB * BS, 0));
	vbas_vol_close(v);
	assert_ok(vbas_vol_open(p, "s2", &v));
	assert_ok(vbas_pread(v, s2, NB * BS, 0));
	static struct lvl_nodes ln[2];
	const char *vols[2] = { "a", "c" };
	for (int k = 0; k < 2; k++) {
		struct vbas_vol_rec rec;
		struct vbas_btree t;
		struct vbas_vol *x;
		assert_ok(vbas_vol_open(p, vols[k], &x));
		pool_lock(p);
		assert_ok(vol_get(p, x->id, &rec));
		vol_map_tree(p, x->id, &rec, &t);
		struct bt_check_cbs cbs = { .report = ignore, .node_cb = lvl_cb, .arg = &ln[k] };
		assert_ok(bt_check(&t, &cbs, NULL, NULL));
		pool_unlock(p);
		vbas_vol_close(x);
	}
	vbas_vol_close(v);
	assert_ok(vbas_close(p));
	struct rng r = { test_seed(48) };
	unsigned leaves = 0, interior = 0;
	for (int trial = 0; trial < 18; trial++) {
		const struct lvl_nodes *L = &ln[trial & 1];
		size_t i = rng_below(&r, L->n);
		if (trial < 10)
			while (L->level[i] != 0)
				i = rng_below(&r, L->n);
		else
			while (L->level[i] == 0 || i == 0)
				i = rng_below(&r, L->n);
		uint64_t blk = L->v[i];
		struct vbas_dev *d = vbas_memdev_clone(base);
		uint8_t *img = vbas_memdev_image(d) + blk * BS;
		if (trial & 2)
			memset(img, 0, BS);
		else
			img[64 + rng_below(&r, 200)] ^= 0x20;
		p = open_repair(d);
		struct problems pr = { "", 0 };
		struct vbas_repair_stats st;
		int e = vbas_repair(p, 0, note, &pr, &st);
		{
			if (e)
				fail_msg("trial %d, level %u node %llu: %d: %s\n%s", trial, L->level[i],
					 (unsigned long long)blk, e, vbas_errmsg(), pr.text);
			if (L->level[i] == 0) {
				assert_int_equal(st.leaves_rebuilt, 1);
				leaves++;
			} else {
				assert_int_equal(st.interior_rebuilt, 1);
				assert_int_equal(st.leaves_rebuilt, 0);
				interior++;
			}
			assert_non_null(strstr(pr.text, "rebuilt from"));
			assert_check_clean(p);
			img_compare(p, "a", m.a);
			img_compare(p, "c", m.c);
			assert_ok(vbas_vol_open(p, "s1", &v));
			uint8_t *buf = malloc(NB * BS);
			assert_ok(vbas_pread(v, buf, NB * BS, 0));
			assert_memory_equal(buf, s1, NB * BS);
			vbas_vol_close(v);
			assert_ok(vbas_vol_open(p, "s2", &v));
			assert_ok(vbas_pread(v, buf, NB * BS, 0));
			assert_memory_equal(buf, s2, NB * BS);
			vbas_vol_close(v);
			free(buf);
			assert_ok(vbas_close(p));
			p = open_mem(d, 1 << 20);
			assert_check_clean(p);
		}
		assert_ok(vbas_close(p));
		dev_destroy(d);
	}
	fprintf(stderr, "# %u leaves rebuilt, %u interior nodes rebuilt\n", leaves, interior);
	assert_true(leaves == 10 && interior == 8);

	free(s1);
	free(s2);
	dev_destroy(base);
}

/* An interior node and its last leaf, both unreadable, in a volume that
 * shares nothing: the node rebuilt from the children it can find would
 * read the lost leaf's keys as a hole.  The volume's count of mapped
 * blocks says so (the reverse map would, too), and the repair is refused
 * with nothing changed. */
static void t_repair_interior_and_leaf(void **state)
{
	(void)state;
	const size_t size = 16 << 20;
	struct vbas_dev *d = mem_pool(size, BS, 8);
	struct vbas_pool *p = open_mem(d, 1 << 20);
	static uint8_t blk[BS];
	struct vbas_vol *v;
	assert_ok(vbas_vol_create(p, "x", 512 * BS));
	assert_ok(vbas_vol_open(p, "x", &v));
	for (uint64_t i = 0; i < 200; i++) {
		memset(blk, (int)(i + 1), BS);
		assert_ok(vbas_pwrite(v, blk, BS, 2 * i * BS, 0));
	}
	assert_ok(vbas_flush(p));
	static struct lvl_nodes ln;
	struct vbas_vol_rec rec;
	struct vbas_btree t;
	pool_lock(p);
	assert_ok(vol_get(p, v->id, &rec));
	vol_map_tree(p, v->id, &rec, &t);
	struct bt_check_cbs cbs = { .report = ignore, .node_cb = lvl_cb, .arg = &ln };
	assert_ok(bt_check(&t, &cbs, NULL, NULL));
	pool_unlock(p);
	vbas_vol_close(v);
	assert_ok(vbas_close(p));
	size_t i = 0;
	while (i < ln.n && (ln.level[i] != 1 || ln.v[i] == le64_get(rec.root)))
		i++;
	assert_true(i < ln.n);
	uint8_t *img = vbas_memdev_image(d);
	uint64_t parent = ln.v[i];
	unsigned n = le16_get(((struct vbas_node_hdr *)(img + parent * BS))->nrecs);
	uint64_t child = ld_le64(img + parent * BS + 64 + (n - 1) * 24 + 8);
	memset(img + parent * BS, 0, BS);
	memset(img + child * BS, 0, BS);
	uint8_t *before = malloc(size);
	memcpy(before, img, size);
	p = open_repair(d);
	struct problems pr = { "", 0 };
	struct vbas_repair_stats st;
	assert_int_equal(vbas_repair(p, 0, note, &pr, &st), -EUCLEAN);
	/* Caught by the volume's count of mapped blocks, or else by the
	 * reverse map. */
	assert_true(st.unrepairable > 0);
	if (!strstr(vbas_errmsg(), "still missing") && !strstr(pr.text, "its tree maps"))
		fail_msg("repair of node %llu and its leaf %llu: %s\n%s", (unsigned long long)parent,
			 (unsigned long long)child, vbas_errmsg(), pr.text);
	vbas_close(p);
	if (memcmp(before, vbas_memdev_image(d), size))
		fail_msg("a refused repair changed the pool");
	free(before);
	dev_destroy(d);
}

/* What a tree of N records built in order takes: every level counted,
 * and an answer for any fanout (with interior nodes of four entries, a
 * level of two nodes once made the estimate loop for ever: fuzz-pool). */
static void t_nodes_for(void **state)
{
	(void)state;
	for (uint32_t fan = 4; fan <= 9; fan++) {
		struct bt_env env = { .block_size = BS, .max_fanout = fan };
		struct vbas_btree t = { .ops = &rmap_ops, .env = &env };
		uint64_t half = bt_leaf_cap(&t) / 2;
		for (uint64_t n = 0; n < 5000; n += 1 + n / 3) {
			uint64_t k = bt_nodes_for(&t, n);
			assert_true(k >= n / half + 1);
			assert_true(k <= 4 * (n / half + 1) + 16);
		}
	}
	struct bt_env env = { .block_size = BS };
	struct vbas_btree t = { .ops = &map_ops, .env = &env };
	assert_true(bt_nodes_for(&t, UINT64_MAX / 4) > 0);
}

/* A sound pool: nothing to repair, nothing written. */
static void t_repair_sound(void **state)
{
	(void)state;
	static struct img m;
	struct vbas_dev *d = mem_pool(16 << 20, BS, 0);
	struct vbas_pool *p = open_mem(d, 1 << 20);
	img_populate(p, &m, test_seed(46));
	assert_ok(vbas_close(p));
	uint64_t w0 = vbas_memdev_writes(d);
	p = open_repair(d);
	struct problems pr = { "", 0 };
	struct vbas_repair_stats st;
	assert_ok(vbas_repair(p, 0, note, &pr, &st));
	assert_int_equal(st.refcount_rebuilt + st.rmap_rebuilt, 0);
	assert_non_null(strstr(pr.text, "nothing to repair"));
	assert_int_equal(vbas_memdev_writes(d), w0);
	assert_int_equal(vbas_repair(p, 0x80, NULL, NULL, NULL), -EINVAL);
	assert_ok(vbas_close(p));
	/* Read-only: a dry run only.  Changes in flight: refused. */
	struct vbas_open_opts ro = { .cache_bytes = 1 << 20,
				     .flags = VBAS_OPEN_REPAIR | VBAS_OPEN_RDONLY };
	assert_ok(vbas_open_dev(d, &ro, &p));
	assert_ok(vbas_repair(p, VBAS_REPAIR_DRY_RUN, NULL, NULL, &st));
	assert_int_equal(vbas_repair(p, 0, NULL, NULL, NULL), -EROFS);
	assert_non_null(strstr(vbas_errmsg(), "read-only"));
	assert_ok(vbas_close(p));
	p = open_mem(d, 1 << 20);
	assert_ok(vbas_vol_create(p, "pending", 8 * BS));
	assert_int_equal(vbas_repair(p, 0, NULL, NULL, NULL), -EBUSY);
	assert_non_null(strstr(vbas_errmsg(), "in flight"));
	assert_ok(vbas_close(p));
	dev_destroy(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_build),
		cmocka_unit_test(t_build_crash),
		cmocka_unit_test(t_snapshot_o1),
		cmocka_unit_test(t_check_catches),
		cmocka_unit_test(t_bad_sector),
		cmocka_unit_test(t_repair_random),
		cmocka_unit_test(t_repair_wrong_records),
		cmocka_unit_test(t_repair_refuses_mapping_damage),
		cmocka_unit_test(t_repair_leaf),
		cmocka_unit_test(t_repair_crash),
		cmocka_unit_test(t_repair_interior_and_leaf),
		cmocka_unit_test(t_repair_sound),
		cmocka_unit_test(t_nodes_for),
	};
	return RUN("rmap", tests);
}
