/* Events, growth, settings and expendable snapshots (admin.c).
 *
 * Events are counted exactly: a threshold crossed up and then down gives
 * one event each way however many writes, commits and discards happen on
 * either side; a pool that grows takes the write that failed; expendable
 * snapshots go oldest first, never an open one, and only when room is
 * short; a power cut anywhere in a grow leaves the old pool or the new one,
 * checked clean, with every byte written before it. */
#include "common.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#define BS 4096u

struct evlog {
	struct vbas_event ev[256];
	unsigned n;
};

static void ev_cb(const struct vbas_event *ev, void *arg)
{
	struct evlog *l = arg;
	/* The spare room comes zeroed (the ABI). */
	for (size_t i = 0; i < sizeof(ev->spare) / sizeof(ev->spare[0]); i++)
		assert_int_equal(ev->spare[i], 0);
	if (l->n < 256)
		l->ev[l->n] = *ev;
	l->n++;
}

static unsigned count(const struct evlog *l, enum vbas_event_type t)
{
	unsigned c = 0;
	for (unsigned i = 0; i < l->n && i < 256; i++)
		c += l->ev[i].type == t;
	return c;
}

static void pattern(void *buf, uint64_t lblk, uint32_t v)
{
	struct rng r = { .s = lblk * 1000003u + v };
	rng_fill(&r, buf, BS);
}

static int wr(struct vbas_vol *v, uint64_t b, uint32_t ver)
{
	char buf[BS];
	pattern(buf, b, ver);
	return vbas_pwrite(v, buf, BS, b * BS, 0);
}

static void check_blocks(struct vbas_vol *v, uint64_t from, uint64_t n, uint32_t ver)
{
	char got[BS], want[BS];
	for (uint64_t b = from; b < from + n; b++) {
		assert_ok(vbas_pread(v, got, BS, b * BS));
		pattern(want, b, ver);
		if (memcmp(got, want, BS))
			fail_msg("block %" PRIu64 " (version %u) reads other bytes", b, ver);
	}
}

/* Use as events count it (no reservations are held between writes). */
static uint32_t use_of(struct vbas_pool *p)
{
	struct vbas_pool_info pi;
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.reserved, pi.reserved_owed + pi.reserved_metadata);
	uint64_t total = pi.total_blocks, avail = pi.available / BS + pi.reserved_metadata / BS;
	return (uint32_t)((total - avail) * 1000 / total);
}

/* Write blocks FROM.. of V until use reaches PERMILLE: the next block. */
static uint64_t write_to_use(struct vbas_pool *p, struct vbas_vol *v, uint64_t from,
			     uint32_t permille, uint32_t ver)
{
	while (use_of(p) < permille)
		assert_ok(wr(v, from++, ver));
	return from;
}

static void t_low_water(void **state)
{
	(void)state;
	struct vbas_dev *d = mem_pool(32u << 20, BS, 0);
	struct vbas_pool *p = open_mem(d, 4u << 20);
	struct evlog l = { .n = 0 };
	struct vbas_pool_settings s = { .low_water = 500 };
	assert_ok(vbas_pool_set(p, &s));
	vbas_pool_on_event(p, ev_cb, &l);
	assert_int_equal(l.n, 0);             /* an empty pool: below the mark */
	struct vbas_vol *v;
	assert_ok(vbas_vol_create(p, "v", 64u << 20));
	assert_ok(vbas_vol_open(p, "v", &v));
	uint64_t b = write_to_use(p, v, 0, 499, 1);
	assert_int_equal(count(&l, VBAS_EVENT_LOW_WATER), 0);
	b = write_to_use(p, v, b, 700, 1);
	assert_int_equal(count(&l, VBAS_EVENT_LOW_WATER), 1);
	assert_int_equal(l.ev[0].type, VBAS_EVENT_LOW_WATER);
	assert_true(l.ev[0].use >= 500 && l.ev[0].use < 510);
	assert_int_equal(l.ev[0].low_water, 500);
	assert_int_equal(l.ev[0].size, 32u << 20);
	assert_ok(vbas_flush(p));
	assert_int_equal(l.n, 1);
	/* Down just under the mark: within the 1% that keeps it from
	 * flapping; then well below: one CLEAR. */
	uint64_t top = b;
	while (use_of(p) >= 497) {
		assert_ok(vbas_discard(v, (--top) * BS, BS, 0));
		assert_ok(vbas_flush(p));
	}
	assert_int_equal(count(&l, VBAS_EVENT_LOW_WATER_CLEAR), 0);
	while (use_of(p) >= 300) {
		assert_ok(vbas_discard(v, (top - 16) * BS, 16 * BS, 0));
		top -= 16;
		assert_ok(vbas_flush(p));
	}
	assert_int_equal(count(&l, VBAS_EVENT_LOW_WATER_CLEAR), 1);
	assert_int_equal(l.n, 2);
	/* Up again: one more LOW_WATER. */
	write_to_use(p, v, top, 600, 2);
	assert_int_equal(count(&l, VBAS_EVENT_LOW_WATER), 2);
	assert_int_equal(l.n, 3);
	check_blocks(v, 0, 16, 1);
	/* Registering while above fires at once. */
	struct evlog l2 = { .n = 0 };
	vbas_pool_on_event(p, ev_cb, &l2);
	assert_int_equal(l2.n, 1);
	assert_int_equal(l2.ev[0].type, VBAS_EVENT_LOW_WATER);
	vbas_pool_on_event(p, NULL, NULL);
	assert_ok(vbas_vol_close(v));
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	dev_destroy(d);
}

/* A 16 MiB pool reporting to L, whose volume "v" (open in *V) was
 * written block after block until ENOSPC: *B blocks. */
static struct vbas_pool *full_pool(struct vbas_dev **d, struct evlog *l, struct vbas_vol **v,
				   uint64_t *b)
{
	*d = mem_pool(16u << 20, BS, 0);
	struct vbas_pool *p = open_mem(*d, 4u << 20);
	vbas_pool_on_event(p, ev_cb, l);
	assert_ok(vbas_vol_create(p, "v", 64u << 20));
	assert_ok(vbas_vol_open(p, "v", v));
	int r;
	for (*b = 0; !(r = wr(*v, *b, 1)); ++*b)
		;
	assert_int_equal(r, -ENOSPC);
	assert_false(p->broken);
	return p;
}

static void t_enospc_and_meta(void **state)
{
	(void)state;
	struct vbas_dev *d;
	struct evlog l = { .n = 0 };
	struct vbas_vol *v;
	uint64_t b;
	struct vbas_pool *p = full_pool(&d, &l, &v, &b);
	assert_false(p->broken);
	assert_int_equal(count(&l, VBAS_EVENT_META_LOW), 1);
	assert_int_equal(count(&l, VBAS_EVENT_ENOSPC), 1);
	/* The pool was near its reserve before the first refusal. */
	unsigned meta_at = l.n, enospc_at = l.n;
	for (unsigned i = 0; i < l.n; i++) {
		if (l.ev[i].type == VBAS_EVENT_META_LOW)
			meta_at = i;
		if (l.ev[i].type == VBAS_EVENT_ENOSPC)
			enospc_at = i;
	}
	assert_true(meta_at < enospc_at);
	assert_int_equal(l.ev[enospc_at].count, 1);
	assert_int_equal(l.ev[enospc_at].needed % BS, 0);
	assert_true(l.ev[enospc_at].needed >= BS);
	/* More refusals: no more events until room comes back. */
	for (int i = 0; i < 5; i++)
		assert_int_equal(wr(v, b, 1), -ENOSPC);
	struct vbas_resv *rv;
	assert_int_equal(vbas_reserve(p, 1000, &rv), -ENOSPC);
	assert_int_equal(count(&l, VBAS_EVENT_ENOSPC), 1);
	/* Free a quarter: META_LOW clears; the next refusal reports, with
	 * the six before it. */
	assert_ok(vbas_discard(v, 0, (b / 4) * BS, 0));
	assert_ok(vbas_flush(p));
	assert_int_equal(count(&l, VBAS_EVENT_META_LOW_CLEAR), 1);
	assert_int_equal(vbas_reserve(p, 1u << 20, &rv), -ENOSPC);
	assert_int_equal(count(&l, VBAS_EVENT_ENOSPC), 2);
	assert_int_equal(l.ev[l.n - 1].type, VBAS_EVENT_ENOSPC);
	assert_int_equal(l.ev[l.n - 1].count, 7);
	check_blocks(v, b / 4, b - b / 4, 1);
	assert_ok(vbas_vol_close(v));
	vbas_pool_on_event(p, NULL, NULL);
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	dev_destroy(d);
}

static void t_settings(void **state)
{
	(void)state;
	struct vbas_dev *d = mem_pool(16u << 20, BS, 0);
	struct vbas_pool *p = open_mem(d, 4u << 20);
	struct vbas_pool_settings s = { 0 };
	assert_ok(vbas_pool_get(p, &s));
	assert_int_equal(s.low_water, 0);
	assert_int_equal(s.expendable_floor, 0);
	s.low_water = 1001;
	assert_int_equal(vbas_pool_set(p, &s), -EINVAL);
	assert_non_null(strstr(vbas_errmsg(), "at most 1000"));
	s.low_water = 0;
	s.expendable_floor = 5000;
	assert_int_equal(vbas_pool_set(p, &s), -EINVAL);
	assert_non_null(strstr(vbas_errmsg(), "expendable floor"));
	assert_int_equal(vbas_pool_set(p, NULL), -EINVAL);
	assert_int_equal(vbas_pool_get(p, NULL), -EINVAL);
	s = (struct vbas_pool_settings){ .low_water = 800, .expendable_floor = 50 };
	assert_ok(vbas_pool_set(p, &s));
	/* Committed: a crash now keeps them. */
	struct vbas_dev *c = vbas_memdev_clone(d);
	struct vbas_pool *q = open_mem(c, 4u << 20);
	struct vbas_pool_settings t = { 0 };
	assert_ok(vbas_pool_get(q, &t));
	assert_int_equal(t.low_water, 800);
	assert_int_equal(t.expendable_floor, 50);
	assert_ok(vbas_close(q));
	dev_destroy(c);
	assert_ok(vbas_close(p));
	/* A superblock with a figure past 1000 is refused as corrupt. */
	uint8_t *img = vbas_memdev_image(d);
	struct vbas_sb sb;
	for (int slot = 0; slot < 2; slot++) {
		memcpy(&sb, img + (size_t)slot * BS, sizeof(sb));
		sb.low_water = le16_mk(1001);
		sb.csum = le32_mk(sb_csum(&sb));
		memcpy(img + (size_t)slot * BS, &sb, sizeof(sb));
	}
	assert_int_equal(vbas_open_dev(d, NULL, &q), -EUCLEAN);
	dev_destroy(d);
}

static void t_grow(void **state)
{
	(void)state;
	struct vbas_dev *d;
	struct evlog l = { .n = 0 };
	struct vbas_vol *v;
	uint64_t b;
	struct vbas_pool *p = full_pool(&d, &l, &v, &b);
	/* Bad sizes: nothing changes. */
	assert_int_equal(vbas_pool_grow(p, 8u << 20), -EINVAL);
	assert_non_null(strstr(vbas_errmsg(), "a pool only grows"));
	assert_int_equal(vbas_pool_grow(p, 32u << 20), -ENOSPC);
	assert_non_null(strstr(vbas_errmsg(), "grow the device first"));
	assert_ok(vbas_pool_grow(p, 16u << 20));   /* the same size: nothing to do */
	assert_int_equal(count(&l, VBAS_EVENT_GROWN), 0);
	/* The device grows under the pool, then the pool. */
	assert_ok(vbas_memdev_grow(d, 32u << 20));
	assert_ok(vbas_pool_grow(p, (32u << 20) + 100));   /* whole blocks */
	assert_int_equal(count(&l, VBAS_EVENT_GROWN), 1);
	assert_int_equal(l.ev[l.n - 1].size, 32u << 20);
	assert_int_equal(count(&l, VBAS_EVENT_META_LOW_CLEAR), 1);
	struct vbas_pool_info pi;
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.size, 32u << 20);
	assert_true(pi.available > (12u << 20));
	/* The write that failed now succeeds, and more after it. */
	uint64_t more = b + 1024;
	for (; b < more; b++)
		assert_ok(wr(v, b, 1));
	assert_ok(vbas_vol_close(v));
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	p = open_mem(d, 4u << 20);
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.size, 32u << 20);
	assert_ok(vbas_vol_open(p, "v", &v));
	check_blocks(v, 0, b, 1);
	assert_ok(vbas_vol_close(v));
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	dev_destroy(d);
}

/* Power cut at every write of a grow and the writes after it. */
/* N blocks from B at version VER in one write. */
static int wr_run(struct vbas_vol *v, uint64_t b, uint64_t n, uint32_t ver)
{
	char *buf = malloc(n * BS);
	for (uint64_t i = 0; i < n; i++)
		pattern(buf + i * BS, b + i, ver);
	int r = vbas_pwrite(v, buf, n * BS, b * BS, 0);
	free(buf);
	return r;
}

static void t_grow_crash(void **state)
{
	(void)state;
	/* The old pool nearly full, so that what is written after the grow
	 * lies past its old end. */
	struct vbas_dev *base = mem_pool(8u << 20, BS, 0);
	struct vbas_pool *p = open_mem(base, 1u << 20);
	struct vbas_vol *v;
	assert_ok(vbas_vol_create(p, "v", 32u << 20));
	assert_ok(vbas_vol_open(p, "v", &v));
	assert_ok(wr_run(v, 0, 1700, 1));
	assert_ok(vbas_vol_close(v));
	assert_ok(vbas_close(p));
	unsigned olds = 0, news = 0;
	for (uint64_t at = 0;; at++) {
		struct vbas_dev *d = vbas_memdev_clone(base);
		assert_ok(vbas_memdev_grow(d, 16u << 20));
		p = open_mem(d, 1u << 20);
		vbas_memdev_arm_crash(d, at, VBAS_CRASH_DROP | VBAS_CRASH_REORDER | VBAS_CRASH_TEAR,
				      at * 7 + 1);
		int r = vbas_pool_grow(p, 16u << 20);
		if (!r) {
			assert_ok(vbas_vol_open(p, "v", &v));
			r = wr_run(v, 1700, 64, 2);
			if (!r)
				r = vbas_flush(p);
			vbas_vol_close(v);
		}
		int crashed = vbas_memdev_crashed(d);
		vbas_close(p);
		if (!crashed) {
			dev_destroy(d);
			assert_true(at > 3);
			break;
		}
		struct vbas_dev *s = vbas_memdev_survivor(d);
		dev_destroy(d);
		struct vbas_pool *q = open_mem(s, 1u << 20);
		struct vbas_pool_info pi;
		assert_ok(vbas_pool_info(q, &pi));
		assert_true(pi.size == (8u << 20) || pi.size == (16u << 20));
		olds += pi.size == (8u << 20);
		news += pi.size == (16u << 20);
		assert_ok(vbas_vol_open(q, "v", &v));
		check_blocks(v, 0, 1700, 1);
		/* The grown pool takes writes past the old end. */
		if (pi.size == (16u << 20)) {
			assert_ok(wr_run(v, 1764, 512, 3));
			check_blocks(v, 1764, 512, 3);
		}
		assert_ok(vbas_vol_close(v));
		assert_check_clean(q);
		assert_ok(vbas_close(q));
		dev_destroy(s);
	}
	print_message("# grow: %u power cuts found the old pool, %u the grown one\n", olds, news);
	assert_true(olds > 0 && news > 0);
	dev_destroy(base);
}

static uint64_t vol_id_of(struct vbas_pool *p, const char *name, int *exists)
{
	struct vbas_vol_info vi;
	int r = vbas_vol_stat(p, name, &vi);
	*exists = r == 0;
	if (r && r != -ENOENT)
		fail_msg("stat %s: %d", name, r);
	return r ? 0 : vi.flags;
}

static void t_expendable(void **state)
{
	(void)state;
	struct vbas_dev *d = mem_pool(32u << 20, BS, 0);
	struct vbas_pool *p = open_mem(d, 4u << 20);
	struct evlog l = { .n = 0 };
	vbas_pool_on_event(p, ev_cb, &l);
	struct vbas_vol *v;
	assert_ok(vbas_vol_create(p, "v", 64u << 20));
	assert_ok(vbas_vol_open(p, "v", &v));
	/* Bad input: a clone cannot be expendable. */
	assert_int_equal(vbas_vol_snapshot(p, "v", "c", VBAS_SNAP_WRITABLE | VBAS_SNAP_EXPENDABLE),
			 -EINVAL);
	/* v holds 1000 blocks; four snapshots of it at versions 1..4, each
	 * taking 1000 more as v is overwritten: s1 (kept), e2, e3
	 * (expendable), e4 (expendable, open). */
	const char *names[4] = { "s1", "e2", "e3", "e4" };
	for (uint32_t ver = 1; ver <= 4; ver++) {
		for (uint64_t b = 0; b < 1000; b++)
			assert_ok(wr(v, b, ver));
		assert_ok(vbas_vol_snapshot(p, "v", names[ver - 1],
					    ver == 1 ? 0 : VBAS_SNAP_EXPENDABLE));
	}
	int ex;
	assert_int_equal(vol_id_of(p, "e2", &ex), VBAS_VOL_READONLY | VBAS_VOL_EXPENDABLE);
	assert_int_equal(vol_id_of(p, "s1", &ex), VBAS_VOL_READONLY);
	struct vbas_vol *e4;
	assert_ok(vbas_vol_open(p, "e4", &e4));
	/* Write new blocks of v: when room runs out, e2 goes, then e3;
	 * never e4 (open) or s1; then ENOSPC. */
	int r = 0;
	uint64_t b;
	for (b = 1000; !r && b < 16384; b++)
		r = wr(v, b, 5);
	assert_int_equal(r, -ENOSPC);
	b--;
	assert_false(p->broken);
	assert_int_equal(count(&l, VBAS_EVENT_EXPENDED), 2);
	unsigned k = 0;
	for (unsigned i = 0; i < l.n; i++)
		if (l.ev[i].type == VBAS_EVENT_EXPENDED)
			assert_string_equal(l.ev[i].name, k++ ? "e3" : "e2");
	vol_id_of(p, "e2", &ex);
	assert_false(ex);
	vol_id_of(p, "e3", &ex);
	assert_false(ex);
	vol_id_of(p, "s1", &ex);
	assert_true(ex);
	check_blocks(e4, 0, 1000, 4);
	assert_ok(vbas_vol_close(e4));
	/* Closed now: the next refusal takes e4 instead. */
	assert_ok(wr(v, b, 5));
	check_blocks(v, 1000, b + 1 - 1000, 5);
	assert_int_equal(count(&l, VBAS_EVENT_EXPENDED), 3);
	vol_id_of(p, "e4", &ex);
	assert_false(ex);
	struct vbas_vol *s1;
	assert_ok(vbas_vol_open(p, "s1", &s1));
	check_blocks(s1, 0, 1000, 1);
	assert_ok(vbas_vol_close(s1));
	assert_ok(vbas_vol_close(v));
	assert_check_clean(p);
	vbas_pool_on_event(p, NULL, NULL);
	assert_ok(vbas_close(p));
	dev_destroy(d);
}

/* The floor: a write that would leave less free than it deletes the
 * oldest expendable snapshot first, though the write itself would fit. */
static void t_expendable_floor(void **state)
{
	(void)state;
	struct vbas_dev *d = mem_pool(32u << 20, BS, 0);
	struct vbas_pool *p = open_mem(d, 4u << 20);
	struct vbas_vol *v;
	assert_ok(vbas_vol_create(p, "v", 64u << 20));
	assert_ok(vbas_vol_open(p, "v", &v));
	for (uint64_t b = 0; b < 2000; b++)
		assert_ok(wr(v, b, 1));
	assert_ok(vbas_vol_snapshot(p, "v", "e1", VBAS_SNAP_EXPENDABLE));
	for (uint64_t b = 0; b < 2000; b++)
		assert_ok(wr(v, b, 2));
	struct vbas_pool_settings s = { .expendable_floor = 400 };
	assert_ok(vbas_pool_set(p, &s));
	/* 4000 of ~8100 blocks in use: more than 40% free.  Write until it
	 * would fall below: e1 goes, and use drops by its 2000 blocks. */
	int ex;
	uint64_t b = 2000;
	while (vol_id_of(p, "e1", &ex), ex) {
		assert_ok(wr(v, b++, 2));
		assert_true(b < 6000);
	}
	struct vbas_pool_info pi;
	assert_ok(vbas_pool_info(p, &pi));
	assert_true(pi.available >= pi.total_blocks * BS * 2 / 5);
	check_blocks(v, 0, b, 2);
	assert_ok(vbas_vol_close(v));
	assert_check_clean(p);
	/* A reopen does not bring it back. */
	assert_ok(vbas_close(p));
	p = open_mem(d, 4u << 20);
	vol_id_of(p, "e1", &ex);
	assert_false(ex);
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	dev_destroy(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_low_water),
		cmocka_unit_test(t_enospc_and_meta),
		cmocka_unit_test(t_settings),
		cmocka_unit_test(t_grow),
		cmocka_unit_test(t_grow_crash),
		cmocka_unit_test(t_expendable),
		cmocka_unit_test(t_expendable_floor),
	};
	return RUN("events", tests);
}
