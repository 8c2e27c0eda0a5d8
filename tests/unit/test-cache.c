/* The metadata cache (lib/cache.h) on an in-memory device, with a
 * validator of its own: each block carries a crc32c, its own block number
 * and a version, and the rest of it is a pattern of (block, version), so
 * every byte read can be checked.  Covered: reads return the device's
 * bytes; the bound on cached blocks; LRU order against an exact model
 * (hit, miss and writeback counters); dirty blocks written back when
 * evicted and clean ones never rewritten; pinned blocks never evicted, the
 * cache growing past its bound when all are pinned and shrinking back;
 * cache_forget, cache_drop_all, cache_new; validator failures and device
 * errors returned as errors with no entry left behind. */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BS      4096u
#define NBLK    2048u
#define SALT    0x7e57cac4u
#define HDR     20u             /* crc 4, blkno 8, version 8 */

struct vctx {
	uint64_t verifies[NBLK + 64];
	uint64_t prepares[NBLK + 64];
	uint64_t nverify, nprepare;
	int64_t fail_blk;       /* verify_read fails for this block (-1: none) */
	int fail_err;
};

static uint32_t ld32(const void *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

static void st32(void *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static uint8_t pat(uint64_t blk, uint64_t ver, size_t i)
{
	return (uint8_t)(blk * 31 + ver * 7 + i * 13 + (i >> 8));
}

static uint32_t csum(const uint8_t *b)
{
	return vbas_crc32c(SALT, b + 4, BS - 4);
}

/* Contents of version VER of block BLK, without the checksum (which
 * prepare_write adds). */
static void fill(uint8_t *b, uint64_t blk, uint64_t ver)
{
	st_le64(b + 4, blk);
	st_le64(b + 12, ver);
	for (size_t i = HDR; i < BS; i++)
		b[i] = pat(blk, ver, i);
}

/* The version in B, after checking that the rest of it is the pattern of
 * that version of block BLK. */
static uint64_t version_of(const uint8_t *b, uint64_t blk)
{
	uint64_t ver = ld_le64(b + 12);
	assert_int_equal(ld_le64(b + 4), blk);
	for (size_t i = HDR; i < BS; i++)
		if (b[i] != pat(blk, ver, i))
			fail_msg("block %llu version %llu: byte %zu is %u, expected %u",
				 (unsigned long long)blk, (unsigned long long)ver, i, b[i],
				 pat(blk, ver, i));
	return ver;
}

static int v_verify(void *ctx, uint64_t blkno, const void *buf)
{
	struct vctx *v = ctx;
	const uint8_t *b = buf;
	v->nverify++;
	if (blkno < NBLK + 64)
		v->verifies[blkno]++;
	if (v->fail_blk >= 0 && (uint64_t)v->fail_blk == blkno)
		return vbas_err(v->fail_err, "test block %llu: rejected on purpose",
				(unsigned long long)blkno);
	if (ld32(b) != csum(b))
		return vbas_err(-EBADMSG, "test block %llu: checksum mismatch",
				(unsigned long long)blkno);
	if (ld_le64(b + 4) != blkno)
		return vbas_err(-EUCLEAN, "test block %llu: claims to be block %llu",
				(unsigned long long)blkno, (unsigned long long)ld_le64(b + 4));
	return 0;
}

static void v_prepare(void *ctx, uint64_t blkno, void *buf)
{
	struct vctx *v = ctx;
	uint8_t *b = buf;
	v->nprepare++;
	if (blkno < NBLK + 64)
		v->prepares[blkno]++;
	st_le64(b + 4, blkno);
	st32(b, csum(b));
}

struct fx {
	struct vbas_dev *dev;
	struct vbas_cache *c;
	struct vctx *v;
};

/* Version VER of block BLK straight into the device image (not counted as
 * a device write). */
static void dev_put_ver(struct fx *f, uint64_t blk, uint64_t ver)
{
	uint8_t *b = vbas_memdev_image(f->dev) + blk * BS;
	fill(b, blk, ver);
	st32(b, csum(b));
}

/* The version of BLK on the device; its checksum must be valid. */
static uint64_t dev_ver(struct fx *f, uint64_t blk)
{
	const uint8_t *b = vbas_memdev_image(f->dev) + blk * BS;
	if (ld32(b) != csum(b))
		fail_msg("block %llu on the device has a bad checksum", (unsigned long long)blk);
	return version_of(b, blk);
}

static void setup(struct fx *f, size_t max_blocks)
{
	struct vbas_validator val = { .name = "test", .verify_read = v_verify,
				      .prepare_write = v_prepare };
	f->dev = vbas_memdev_create((uint64_t)NBLK * BS);
	assert_non_null(f->dev);
	f->v = calloc(1, sizeof(*f->v));
	assert_non_null(f->v);
	f->v->fail_blk = -1;
	val.ctx = f->v;
	for (uint64_t b = 0; b < NBLK; b++)
		dev_put_ver(f, b, 1);
	assert_ok(cache_create(f->dev, BS, max_blocks, &val, &f->c));
}

static void teardown(struct fx *f)
{
	cache_destroy(f->c);
	dev_destroy(f->dev);
	free(f->v);
}

static struct cache_stats stats(struct fx *f)
{
	struct cache_stats st;
	cache_stats(f->c, &st);
	return st;
}

/* Read BLK, check it is version VER, unpin it. */
static void read_put(struct fx *f, uint64_t blk, uint64_t ver)
{
	struct cblock *b;
	assert_ok(cache_read(f->c, blk, &b));
	assert_int_equal(b->blkno, blk);
	assert_int_equal(version_of(b->data, blk), ver);
	cache_put(f->c, b);
}

/* ---- Tests ------------------------------------------------------------ */

static void t_read_bytes(void **state)
{
	struct fx f;
	struct cblock *a, *a2;
	(void)state;
	setup(&f, 16);
	uint64_t w0 = vbas_memdev_writes(f.dev);
	assert_ok(cache_read(f.c, 77, &a));
	assert_memory_equal(a->data, vbas_memdev_image(f.dev) + 77 * BS, BS);
	assert_int_equal(version_of(a->data, 77), 1);
	assert_int_equal(a->pins, 1);
	assert_int_equal(a->dirty, 0);
	struct cache_stats st = stats(&f);
	assert_int_equal(st.blocks, 1);
	assert_int_equal(st.max_blocks, 16);
	assert_int_equal(st.misses, 1);
	assert_int_equal(st.hits, 0);
	assert_int_equal(st.pinned, 1);
	assert_int_equal(f.v->verifies[77], 1);
	/* A second read is a hit on the same buffer, pinned twice, and does
	 * not go to the device or the validator. */
	assert_ok(cache_read(f.c, 77, &a2));
	assert_ptr_equal(a, a2);
	assert_int_equal(a->pins, 2);
	st = stats(&f);
	assert_int_equal(st.hits, 1);
	assert_int_equal(st.misses, 1);
	assert_int_equal(st.pinned, 1);
	assert_int_equal(f.v->verifies[77], 1);
	cache_put(f.c, a2);
	cache_put(f.c, a);
	assert_int_equal(a->pins, 0);
	assert_int_equal(stats(&f).pinned, 0);
	/* Different blocks hold different bytes. */
	for (uint64_t b = 0; b < 10; b++)
		read_put(&f, b * 200 + 3, 1);
	/* Reads never write. */
	assert_int_equal(vbas_memdev_writes(f.dev), w0);
	assert_int_equal(f.v->nprepare, 0);
	assert_int_equal(stats(&f).writebacks, 0);
	/* cache_create rounds a tiny bound up to its minimum (16). */
	struct vbas_cache *c2;
	struct vbas_validator val = { .name = "t", .verify_read = v_verify,
				      .prepare_write = v_prepare, .ctx = f.v };
	assert_ok(cache_create(f.dev, BS, 1, &val, &c2));
	struct cache_stats st2;
	cache_stats(c2, &st2);
	assert_int_equal(st2.max_blocks, 16);
	assert_int_equal(st2.blocks, 0);
	cache_destroy(c2);
	teardown(&f);
}

/* The LRU order, step by step. */
static void t_lru_order(void **state)
{
	struct fx f;
	(void)state;
	setup(&f, 16);
	for (uint64_t b = 0; b < 16; b++)
		read_put(&f, b, 1);
	struct cache_stats st = stats(&f);
	assert_int_equal(st.blocks, 16);
	assert_int_equal(st.misses, 16);
	read_put(&f, 0, 1);                   /* 0 is now the most recent */
	assert_int_equal(stats(&f).hits, 1);
	read_put(&f, 16, 1);                  /* evicts 1, the least recent */
	st = stats(&f);
	assert_int_equal(st.blocks, 16);
	assert_int_equal(st.misses, 17);
	read_put(&f, 0, 1);                   /* survived */
	read_put(&f, 2, 1);                   /* still there too */
	st = stats(&f);
	assert_int_equal(st.hits, 3);
	assert_int_equal(st.misses, 17);
	assert_int_equal(f.v->verifies[1], 1);
	read_put(&f, 1, 1);                   /* gone: read from the device again */
	st = stats(&f);
	assert_int_equal(st.misses, 18);
	assert_int_equal(f.v->verifies[1], 2);
	/* That evicted 3 (order now: 1 2 0 16 15 .. 4; 3 was the tail). */
	read_put(&f, 4, 1);
	assert_int_equal(stats(&f).hits, 4);
	read_put(&f, 3, 1);
	assert_int_equal(stats(&f).misses, 19);
	assert_int_equal(f.v->verifies[3], 2);
	assert_int_equal(stats(&f).blocks, 16);
	teardown(&f);
}

/* An exact model of a bounded LRU with write-back, against thousands of
 * random reads and changes of many more blocks than fit. */
struct lru_model {
	uint64_t *order;        /* cached blocks, most recent first */
	size_t n, max;
	uint8_t *dirty;         /* per block */
	uint64_t *cur;          /* newest version of each block */
	uint64_t *ondev;        /* version on the device */
	uint64_t hits, misses, writebacks, ndirty;
	uint64_t *prepares;     /* expected prepare_write calls per block */
};

static ssize_t model_find(const struct lru_model *m, uint64_t blk)
{
	for (size_t i = 0; i < m->n; i++)
		if (m->order[i] == blk)
			return (ssize_t)i;
	return -1;
}

static void model_evict_tail(struct lru_model *m)
{
	uint64_t t = m->order[--m->n];
	if (m->dirty[t]) {
		m->dirty[t] = 0;
		m->ndirty--;
		m->ondev[t] = m->cur[t];
		m->writebacks++;
		m->prepares[t]++;
	}
}

static void model_access(struct lru_model *m, uint64_t blk)
{
	ssize_t i = model_find(m, blk);
	if (i >= 0) {
		m->hits++;
		memmove(m->order + 1, m->order, (size_t)i * sizeof(*m->order));
	} else {
		m->misses++;
		while (m->n >= m->max)
			model_evict_tail(m);
		memmove(m->order + 1, m->order, m->n * sizeof(*m->order));
		m->n++;
	}
	m->order[0] = blk;
}

static void model_compare(struct fx *f, const struct lru_model *m)
{
	struct cache_stats st = stats(f);
	assert_true(st.blocks <= st.max_blocks);
	assert_int_equal(st.blocks, m->n);
	assert_int_equal(st.hits, m->hits);
	assert_int_equal(st.misses, m->misses);
	assert_int_equal(st.writebacks, m->writebacks);
	assert_int_equal(st.dirty, m->ndirty);
	assert_int_equal(st.pinned, 0);
	/* Every device write is one write-back, or one run of adjacent
	 * blocks written back together; every block is prepared once. */
	assert_int_equal(vbas_memdev_writes(f->dev), st.writeback_ios);
	assert_true(st.writeback_ios <= m->writebacks);
	assert_int_equal(f->v->nprepare, m->writebacks);
}

static void t_bound_lru_model(void **state)
{
	struct fx f;
	struct lru_model m = { 0 };
	struct rng r = { test_seed(21) };
	const size_t max = 64;
	const uint64_t nops = test_ops(30000), hot = 56, range = 1500;
	(void)state;
	setup(&f, max);
	m.max = max;
	m.order = calloc(max + 1, sizeof(*m.order));
	m.dirty = calloc(NBLK, 1);
	m.cur = calloc(NBLK, sizeof(*m.cur));
	m.ondev = calloc(NBLK, sizeof(*m.ondev));
	m.prepares = calloc(NBLK, sizeof(*m.prepares));
	for (uint64_t b = 0; b < NBLK; b++)
		m.cur[b] = m.ondev[b] = 1;
	for (uint64_t i = 0; i < nops; i++) {
		/* Mostly a hot set a little smaller than the cache, so that
		 * hits, misses and evictions all happen. */
		uint64_t blk = rng_below(&r, 10) < 8 ? 100 + rng_below(&r, hot) : rng_below(&r, range);
		struct cblock *b;
		assert_ok(cache_read(f.c, blk, &b));
		model_access(&m, blk);
		assert_int_equal(b->blkno, blk);
		assert_int_equal(version_of(b->data, blk), m.cur[blk]);
		if (rng_below(&r, 10) < 3) {
			/* Change it: a new version, written back later. */
			fill(b->data, blk, ++m.cur[blk]);
			cache_dirty(b);
			if (!m.dirty[blk]) {
				m.dirty[blk] = 1;
				m.ndirty++;
			}
		}
		cache_put(f.c, b);
		if (rng_below(&r, 500) == 0) {
			/* Write back everything dirty; the cache may then drop
			 * blocks from the cold end to get under its bound. */
			assert_ok(cache_writeback(f.c));
			for (size_t k = 0; k < m.n; k++) {
				uint64_t x = m.order[k];
				if (m.dirty[x]) {
					m.dirty[x] = 0;
					m.ondev[x] = m.cur[x];
					m.writebacks++;
					m.prepares[x]++;
				}
			}
			m.ndirty = 0;
			size_t now = stats(&f).blocks;
			assert_true(now <= m.n && now + 1 >= m.n);
			m.n = now;
		}
		model_compare(&f, &m);
		/* Now and then the whole device agrees with the model. */
		if (i % 3000 == 0 || i == nops - 1)
			for (uint64_t x = 0; x < range; x++) {
				assert_int_equal(dev_ver(&f, x), m.ondev[x]);
				assert_int_equal(f.v->prepares[x], m.prepares[x]);
			}
	}
	struct cache_stats st = stats(&f);
	print_message("# %llu hits, %llu misses, %llu write-backs\n",
		      (unsigned long long)st.hits, (unsigned long long)st.misses,
		      (unsigned long long)st.writebacks);
	assert_true(st.hits > nops / 3 && st.misses > nops / 10 && st.writebacks > nops / 50);
	/* A final write-back puts every newest version on the device. */
	assert_ok(cache_writeback(f.c));
	for (uint64_t x = 0; x < range; x++)
		assert_int_equal(dev_ver(&f, x), m.cur[x]);
	assert_int_equal(stats(&f).dirty, 0);
	free(m.order);
	free(m.dirty);
	free(m.cur);
	free(m.ondev);
	free(m.prepares);
	teardown(&f);
}

/* Dirty blocks evicted to make room are sealed and written; clean ones
 * are dropped without a write. */
static void t_dirty_eviction(void **state)
{
	struct fx f;
	(void)state;
	setup(&f, 16);
	for (uint64_t k = 0; k < 16; k++) {
		struct cblock *b;
		uint64_t blk = 100 + k;
		assert_ok(cache_new(f.c, blk, &b));
		fill(b->data, blk, 50 + k);
		cache_put(f.c, b);
	}
	struct cache_stats st = stats(&f);
	assert_int_equal(st.blocks, 16);
	assert_int_equal(st.dirty, 16);
	assert_int_equal(st.writebacks, 0);
	assert_int_equal(vbas_memdev_writes(f.dev), 0);
	/* Each read of another block evicts the oldest dirty block. */
	for (uint64_t k = 0; k < 16; k++) {
		read_put(&f, 500 + k, 1);
		st = stats(&f);
		assert_int_equal(st.blocks, 16);
		assert_int_equal(st.writebacks, k + 1);
		assert_int_equal(st.dirty, 15 - k);
		assert_int_equal(f.v->prepares[100 + k], 1);
		assert_int_equal(dev_ver(&f, 100 + k), 50 + k);
		if (k < 15)
			assert_int_equal(dev_ver(&f, 101 + k), 1);   /* not yet */
	}
	assert_int_equal(vbas_memdev_writes(f.dev), 16);
	/* Now everything cached is clean: evicting it writes nothing. */
	for (uint64_t k = 0; k < 40; k++)
		read_put(&f, 700 + k, 1);
	st = stats(&f);
	assert_int_equal(st.writebacks, 16);
	assert_int_equal(vbas_memdev_writes(f.dev), 16);
	assert_int_equal(f.v->nprepare, 16);
	/* The written blocks read back through the validator. */
	for (uint64_t k = 0; k < 16; k++)
		read_put(&f, 100 + k, 50 + k);
	/* cache_writeback writes only what is dirty, once. */
	struct cblock *b;
	assert_ok(cache_read(f.c, 105, &b));
	fill(b->data, 105, 99);
	cache_dirty(b);
	cache_put(f.c, b);
	assert_ok(cache_writeback(f.c));
	assert_ok(cache_writeback(f.c));
	st = stats(&f);
	assert_int_equal(st.writebacks, 17);
	assert_int_equal(st.dirty, 0);
	assert_int_equal(dev_ver(&f, 105), 99);
	assert_int_equal(f.v->prepares[105], 2);
	teardown(&f);
}

/* Pinned blocks are never evicted; with everything pinned the cache grows
 * past its bound instead of failing, and shrinks back once unpinned. */
static void t_pinned(void **state)
{
	struct fx f;
	struct rng r = { test_seed(22) };
	struct cblock *pin[8], *all[40];
	const size_t max = 16;
	(void)state;
	setup(&f, max);
	for (int i = 0; i < 8; i++) {
		assert_ok(cache_read(f.c, 1000 + (uint64_t)i, &pin[i]));
		if (i % 2) {
			fill(pin[i]->data, 1000 + (uint64_t)i, 9);
			cache_dirty(pin[i]);
		}
	}
	for (int k = 0; k < 3000; k++) {
		read_put(&f, rng_below(&r, 900), 1);
		struct cache_stats st = stats(&f);
		assert_true(st.blocks <= max);
		assert_int_equal(st.pinned, 8);
	}
	/* Not one write: the only dirty blocks are pinned. */
	assert_int_equal(stats(&f).writebacks, 0);
	assert_int_equal(vbas_memdev_writes(f.dev), 0);
	/* The pinned ones are still the same cached buffers. */
	uint64_t h0 = stats(&f).hits;
	for (int i = 0; i < 8; i++) {
		struct cblock *b;
		assert_ok(cache_read(f.c, 1000 + (uint64_t)i, &b));
		assert_ptr_equal(b, pin[i]);
		assert_int_equal(version_of(b->data, 1000 + (uint64_t)i), i % 2 ? 9 : 1);
		assert_int_equal(f.v->verifies[1000 + i], 1);
		cache_put(f.c, b);
	}
	assert_int_equal(stats(&f).hits, h0 + 8);
	/* Pin 40 more blocks: more than the bound, all at once. */
	for (int i = 0; i < 40; i++) {
		uint64_t blk = 1200 + (uint64_t)i;
		assert_ok(cache_read(f.c, blk, &all[i]));
		if (i % 3 == 0) {
			fill(all[i]->data, blk, 5);
			cache_dirty(all[i]);
		}
	}
	struct cache_stats st = stats(&f);
	assert_int_equal(st.blocks, 48);
	assert_int_equal(st.pinned, 48);
	assert_true(st.blocks > st.max_blocks);
	assert_int_equal(st.writebacks, 0);
	/* Every pinned buffer is intact and distinct. */
	for (int i = 0; i < 40; i++) {
		assert_int_equal(version_of(all[i]->data, 1200 + (uint64_t)i), i % 3 == 0 ? 5 : 1);
		for (int j = 0; j < 8; j++)
			assert_ptr_not_equal(all[i]->data, pin[j]->data);
	}
	for (int i = 0; i < 40; i++)
		cache_put(f.c, all[i]);
	for (int i = 0; i < 8; i++)
		cache_put(f.c, pin[i]);
	/* Write-back writes the dirty ones (4 + 14) and gets under the bound. */
	assert_ok(cache_writeback(f.c));
	st = stats(&f);
	assert_int_equal(st.writebacks, 4 + 14);
	assert_int_equal(st.dirty, 0);
	assert_int_equal(st.pinned, 0);
	assert_true(st.blocks <= max);
	for (int i = 0; i < 40; i++)
		assert_int_equal(dev_ver(&f, 1200 + (uint64_t)i), i % 3 == 0 ? 5 : 1);
	for (int i = 0; i < 8; i++)
		assert_int_equal(dev_ver(&f, 1000 + (uint64_t)i), i % 2 ? 9 : 1);
	/* And it stays bounded. */
	for (int k = 0; k < 200; k++) {
		uint64_t i = rng_below(&r, 40);
		read_put(&f, 1200 + i, i % 3 == 0 ? 5 : 1);
		assert_true(stats(&f).blocks <= max);
	}
	assert_int_equal(stats(&f).writebacks, 18);
	teardown(&f);
}

static void t_forget(void **state)
{
	struct fx f;
	struct cblock *b;
	(void)state;
	setup(&f, 16);
	/* Unpinned and dirty: gone, not written. */
	assert_ok(cache_read(f.c, 42, &b));
	fill(b->data, 42, 7);
	cache_dirty(b);
	cache_put(f.c, b);
	read_put(&f, 43, 1);
	assert_int_equal(stats(&f).blocks, 2);
	cache_forget(f.c, 42);
	struct cache_stats st = stats(&f);
	assert_int_equal(st.blocks, 1);
	assert_int_equal(st.dirty, 0);
	assert_ok(cache_writeback(f.c));
	assert_int_equal(stats(&f).writebacks, 0);
	assert_int_equal(vbas_memdev_writes(f.dev), 0);
	assert_int_equal(f.v->prepares[42], 0);
	assert_int_equal(dev_ver(&f, 42), 1);
	/* The next read goes to the device and finds the old version. */
	uint64_t m0 = stats(&f).misses;
	read_put(&f, 42, 1);
	assert_int_equal(stats(&f).misses, m0 + 1);
	assert_int_equal(f.v->verifies[42], 2);
	/* A block not cached: nothing happens. */
	cache_forget(f.c, 999);
	assert_int_equal(stats(&f).blocks, 2);
	/* Pinned and dirty: it stays (someone holds it) but is never
	 * written. */
	assert_ok(cache_read(f.c, 44, &b));
	fill(b->data, 44, 8);
	cache_dirty(b);
	cache_forget(f.c, 44);
	assert_int_equal(stats(&f).dirty, 0);
	cache_put(f.c, b);
	assert_ok(cache_writeback(f.c));
	for (uint64_t k = 0; k < 40; k++)       /* evict everything */
		read_put(&f, 600 + k, 1);
	assert_int_equal(stats(&f).writebacks, 0);
	assert_int_equal(f.v->prepares[44], 0);
	assert_int_equal(dev_ver(&f, 44), 1);
	teardown(&f);
}

static void t_drop_all(void **state)
{
	struct fx f;
	struct cblock *pinned[3], *b;
	(void)state;
	setup(&f, 32);
	for (uint64_t k = 0; k < 10; k++) {          /* dirty, unpinned */
		assert_ok(cache_read(f.c, 10 + k, &b));
		fill(b->data, 10 + k, 3);
		cache_dirty(b);
		cache_put(f.c, b);
	}
	for (uint64_t k = 0; k < 3; k++) {           /* dirty, pinned */
		assert_ok(cache_new(f.c, 30 + k, &pinned[k]));
		fill(pinned[k]->data, 30 + k, 4);
	}
	for (uint64_t k = 0; k < 5; k++)             /* clean */
		read_put(&f, 40 + k, 1);
	struct cache_stats st = stats(&f);
	assert_int_equal(st.blocks, 18);
	assert_int_equal(st.dirty, 13);
	cache_drop_all(f.c);
	st = stats(&f);
	assert_int_equal(st.blocks, 3);
	assert_int_equal(st.dirty, 3);
	assert_int_equal(st.pinned, 3);
	assert_int_equal(st.writebacks, 0);
	assert_int_equal(vbas_memdev_writes(f.dev), 0);
	for (uint64_t k = 0; k < 10; k++) {
		assert_int_equal(f.v->prepares[10 + k], 0);
		assert_int_equal(dev_ver(&f, 10 + k), 1);
	}
	/* Dropped blocks come back from the device, old version. */
	uint64_t m0 = st.misses;
	read_put(&f, 12, 1);
	assert_int_equal(stats(&f).misses, m0 + 1);
	/* The pinned ones kept their contents and are written later. */
	for (uint64_t k = 0; k < 3; k++) {
		assert_int_equal(version_of(pinned[k]->data, 30 + k), 4);
		cache_put(f.c, pinned[k]);
	}
	assert_ok(cache_writeback(f.c));
	assert_int_equal(stats(&f).writebacks, 3);
	for (uint64_t k = 0; k < 3; k++)
		assert_int_equal(dev_ver(&f, 30 + k), 4);
	teardown(&f);
}

/* cache_new: a zeroed, pinned, dirty block without a read; over a cached
 * (stale) copy of the same block it reuses the entry. */
static void t_new(void **state)
{
	struct fx f;
	struct cblock *b, *b2;
	(void)state;
	setup(&f, 16);
	assert_ok(cache_new(f.c, 300, &b));
	assert_int_equal(b->blkno, 300);
	assert_int_equal(b->pins, 1);
	assert_int_equal(b->dirty, 1);
	for (size_t i = 0; i < BS; i++)
		assert_int_equal(((uint8_t *)b->data)[i], 0);
	assert_int_equal(f.v->verifies[300], 0);
	struct cache_stats st = stats(&f);
	assert_int_equal(st.misses, 0);
	assert_int_equal(st.blocks, 1);
	assert_int_equal(st.dirty, 1);
	fill(b->data, 300, 2);
	cache_put(f.c, b);
	/* A read finds the new contents without the device. */
	read_put(&f, 300, 2);
	assert_int_equal(f.v->verifies[300], 0);
	assert_ok(cache_writeback(f.c));
	assert_int_equal(dev_ver(&f, 300), 2);
	/* A stale, clean copy of block 301, then a new block at 301. */
	read_put(&f, 301, 1);
	b = NULL;
	assert_ok(cache_read(f.c, 301, &b));
	void *old = b->data;
	cache_put(f.c, b);
	st = stats(&f);
	assert_ok(cache_new(f.c, 301, &b2));
	assert_ptr_equal(b2->data, old);
	assert_int_equal(b2->dirty, 1);
	assert_int_equal(b2->pins, 1);
	for (size_t i = 0; i < BS; i++)
		assert_int_equal(((uint8_t *)b2->data)[i], 0);
	struct cache_stats st2 = stats(&f);
	assert_int_equal(st2.blocks, st.blocks);       /* no second entry */
	assert_int_equal(st2.misses, st.misses);
	assert_int_equal(f.v->verifies[301], 1);
	fill(b2->data, 301, 6);
	cache_put(f.c, b2);
	read_put(&f, 301, 6);
	/* A stale, dirty copy: replaced, and written once with the new
	 * contents only. */
	assert_ok(cache_read(f.c, 302, &b));
	fill(b->data, 302, 8);
	cache_dirty(b);
	cache_put(f.c, b);
	assert_ok(cache_new(f.c, 302, &b2));
	for (size_t i = 0; i < BS; i++)
		assert_int_equal(((uint8_t *)b2->data)[i], 0);
	fill(b2->data, 302, 9);
	cache_put(f.c, b2);
	uint64_t wb = stats(&f).writebacks;
	assert_ok(cache_writeback(f.c));
	assert_int_equal(stats(&f).writebacks, wb + 2);     /* 301 and 302 */
	assert_int_equal(f.v->prepares[302], 1);
	assert_int_equal(dev_ver(&f, 301), 6);
	assert_int_equal(dev_ver(&f, 302), 9);
	/* Dropped from the cache, the device copy reads back. */
	cache_drop_all(f.c);
	assert_int_equal(stats(&f).blocks, 0);
	read_put(&f, 302, 9);
	read_put(&f, 301, 6);
	/* cache_new when the cache is full evicts like a read. */
	for (uint64_t k = 0; k < 16; k++)
		read_put(&f, 400 + k, 1);
	assert_int_equal(stats(&f).blocks, 16);
	assert_ok(cache_new(f.c, 450, &b));
	assert_int_equal(stats(&f).blocks, 16);
	cache_put(f.c, b);
	teardown(&f);
}

/* A validator failure is returned as is and leaves no entry: the next
 * read tries the device again. */
static void t_verify_fail(void **state)
{
	struct fx f;
	struct cblock *b;
	(void)state;
	setup(&f, 16);
	uint8_t *img = vbas_memdev_image(f.dev) + 55 * BS;
	img[1000] ^= 0x10;
	struct cache_stats st0 = stats(&f);
	assert_int_equal(cache_read(f.c, 55, &b), -EBADMSG);
	assert_non_null(strstr(vbas_errmsg(), "55"));
	struct cache_stats st = stats(&f);
	assert_int_equal(st.blocks, st0.blocks);
	assert_int_equal(st.misses, st0.misses + 1);
	assert_int_equal(st.pinned, 0);
	assert_int_equal(cache_read(f.c, 55, &b), -EBADMSG);
	assert_int_equal(f.v->verifies[55], 2);
	img[1000] ^= 0x10;                      /* repaired on the device */
	read_put(&f, 55, 1);
	assert_int_equal(f.v->verifies[55], 3);
	assert_int_equal(stats(&f).blocks, 1);
	/* A block with another block's contents. */
	memcpy(vbas_memdev_image(f.dev) + 56 * BS, vbas_memdev_image(f.dev) + 57 * BS, BS);
	assert_int_equal(cache_read(f.c, 56, &b), -EUCLEAN);
	/* Whatever error the validator gives comes back, also with a full
	 * cache (one block was evicted for room, none added). */
	for (uint64_t k = 0; k < 16; k++)
		read_put(&f, 100 + k, 1);
	assert_int_equal(stats(&f).blocks, 16);
	f.v->fail_blk = 200;
	f.v->fail_err = -ENOTRECOVERABLE;
	assert_int_equal(cache_read(f.c, 200, &b), -ENOTRECOVERABLE);
	st = stats(&f);
	assert_true(st.blocks <= 16);
	assert_int_equal(st.pinned, 0);
	f.v->fail_blk = -1;
	uint64_t m0 = st.misses;
	read_put(&f, 200, 1);
	assert_int_equal(stats(&f).misses, m0 + 1);
	assert_int_equal(f.v->verifies[200], 2);
	read_put(&f, 200, 1);
	assert_int_equal(stats(&f).misses, m0 + 1);
	teardown(&f);
}

/* Device errors come back as errors; nothing crashes, nothing is lost. */
static void t_device_errors(void **state)
{
	struct fx f;
	struct cblock *b;
	(void)state;
	setup(&f, 16);
	/* A read past the end of the device. */
	assert_int_equal(cache_read(f.c, NBLK + 5, &b), -ERANGE);
	assert_non_null(strstr(vbas_errmsg(), "read of metadata block"));
	assert_int_equal(stats(&f).blocks, 0);
	assert_int_equal(f.v->verifies[NBLK + 5], 0);
	/* A write-back that fails while making room: the read fails, the
	 * dirty block stays cached and dirty, nothing is lost. */
	for (uint64_t k = 0; k < 16; k++) {       /* apart: a write each */
		assert_ok(cache_new(f.c, 100 + 2 * k, &b));
		fill(b->data, 100 + 2 * k, 20);
		cache_put(f.c, b);
	}
	vbas_memdev_fail_write(f.dev, 0);
	assert_int_equal(cache_read(f.c, 500, &b), -EIO);
	assert_non_null(strstr(vbas_errmsg(), "100"));
	struct cache_stats st = stats(&f);
	assert_int_equal(st.blocks, 16);
	assert_int_equal(st.dirty, 16);
	assert_int_equal(st.writebacks, 0);
	assert_int_equal(st.pinned, 0);
	/* The same again succeeds and writes block 100. */
	read_put(&f, 500, 1);
	st = stats(&f);
	assert_int_equal(st.writebacks, 1);
	assert_int_equal(st.dirty, 15);
	assert_int_equal(dev_ver(&f, 100), 20);
	/* cache_writeback stops at a failed write and can be retried. */
	vbas_memdev_fail_write(f.dev, 3);
	assert_int_equal(cache_writeback(f.c), -EIO);
	st = stats(&f);
	assert_int_equal(st.writebacks, 1 + 3);
	assert_int_equal(st.dirty, 15 - 3);
	assert_ok(cache_writeback(f.c));
	st = stats(&f);
	assert_int_equal(st.writebacks, 16);
	assert_int_equal(st.dirty, 0);
	for (uint64_t k = 0; k < 16; k++)
		assert_int_equal(dev_ver(&f, 100 + 2 * k), 20);
	/* Adjacent dirty blocks go in one write, in block order; a run whose
	 * write fails stays dirty, all of it, and the next write-back writes
	 * it. */
	for (uint64_t k = 0; k < 12; k++) {
		uint64_t blk = k < 10 ? 209 - k : 300 + 2 * k;   /* 200..209 backwards */
		assert_ok(cache_new(f.c, blk, &b));
		fill(b->data, blk, 30);
		cache_put(f.c, b);
	}
	vbas_memdev_fail_write(f.dev, 0);
	assert_int_equal(cache_writeback(f.c), -EIO);
	assert_non_null(strstr(vbas_errmsg(), "200-209"));
	assert_int_equal(stats(&f).dirty, 12);
	uint64_t w0 = vbas_memdev_writes(f.dev), io0 = stats(&f).writeback_ios;
	assert_ok(cache_writeback(f.c));
	st = stats(&f);
	assert_int_equal(st.dirty, 0);
	assert_int_equal(vbas_memdev_writes(f.dev) - w0, 3);   /* 200-209, 320, 322 */
	assert_int_equal(st.writeback_ios - io0, 3);
	for (uint64_t k = 0; k < 12; k++)
		assert_int_equal(dev_ver(&f, k < 10 ? 209 - k : 300 + 2 * k), 30);
	/* Power lost: every device read and write fails; cached blocks are
	 * still served. */
	read_put(&f, 700, 1);
	assert_ok(cache_new(f.c, 701, &b));
	fill(b->data, 701, 3);
	cache_put(f.c, b);
	vbas_memdev_crash_now(f.dev, 0, 1);
	uint64_t h0 = stats(&f).hits;
	read_put(&f, 700, 1);
	read_put(&f, 701, 3);
	assert_int_equal(stats(&f).hits, h0 + 2);
	size_t n0 = stats(&f).blocks;
	uint64_t m0 = stats(&f).misses;
	assert_int_equal(cache_read(f.c, 702, &b), -EIO);
	assert_true(stats(&f).blocks <= n0);
	assert_int_equal(stats(&f).pinned, 0);
	assert_int_equal(cache_read(f.c, 702, &b), -EIO);   /* tried again: no entry */
	assert_int_equal(stats(&f).misses, m0 + 2);
	assert_int_equal(cache_writeback(f.c), -EIO);
	assert_int_equal(stats(&f).dirty, 1);
	read_put(&f, 701, 3);                                 /* still there */
	teardown(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_read_bytes),
		cmocka_unit_test(t_lru_order),
		cmocka_unit_test(t_bound_lru_model),
		cmocka_unit_test(t_dirty_eviction),
		cmocka_unit_test(t_pinned),
		cmocka_unit_test(t_forget),
		cmocka_unit_test(t_drop_all),
		cmocka_unit_test(t_new),
		cmocka_unit_test(t_verify_fail),
		cmocka_unit_test(t_device_errors),
	};
	return RUN("cache", tests);
}
