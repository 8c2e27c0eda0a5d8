#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rng_fill(struct rng *r, void *buf, size_t len)
{
	uint8_t *p = buf;
	while (len >= 8) {
		uint64_t v = rng_next(r);
		memcpy(p, &v, 8);
		p += 8;
		len -= 8;
	}
	if (len) {
		uint64_t v = rng_next(r);
		memcpy(p, &v, len);
	}
}

/* VBAS_CHECK_SPOOL=BYTES: every check in this test keeps that little in
 * memory and spills the rest (lib/spool.c), so that its runs, merges and
 * temporary file carry every check a suite makes (make check runs the
 * check-heavy suites so once more: tests/run-tests.sh). */
__attribute__((constructor)) static void check_spool_env(void)
{
	const char *s = getenv("VBAS_CHECK_SPOOL");
	if (s && *s)
		vbas_tun.check_spool = (size_t)strtoull(s, NULL, 0);
}

uint64_t test_seed(uint64_t def)
{
	const char *s = getenv("VBAS_SEED");
	uint64_t v = s ? strtoull(s, NULL, 0) : def;
	fprintf(stderr, "# seed %llu (set VBAS_SEED to reproduce)\n", (unsigned long long)v);
	return v;
}

uint64_t test_ops(uint64_t def)
{
	const char *s = getenv("VBAS_OPS"), *pct = getenv("VBAS_OPS_PCT");
	if (s)
		return strtoull(s, NULL, 0);
	if (pct) {
		uint64_t n = def * strtoull(pct, NULL, 0) / 100;
		return n ? n : 1;
	}
	return def;
}

struct vbas_dev *mem_pool(uint64_t size, uint32_t bs, uint32_t fanout)
{
	struct vbas_dev *d = vbas_memdev_create(size);
	struct vbas_format_opts fo = { .size = size, .block_size = bs };
	/* VBAS_NO_RMAP=1: pools without a reverse map (to tell what it
	 * changes apart from the rest). */
	if (getenv("VBAS_NO_RMAP") && atoi(getenv("VBAS_NO_RMAP")))
		fo.flags |= VBAS_FORMAT_NO_RMAP;
	assert_non_null(d);
	assert_ok(vbas_format_dev(d, &fo, fanout));
	return d;
}

struct vbas_pool *open_mem(struct vbas_dev *dev, uint64_t cache_bytes)
{
	struct vbas_open_opts oo = { .cache_bytes = cache_bytes };
	struct vbas_pool *p = NULL;
	assert_ok(vbas_open_dev(dev, &oo, &p));
	return p;
}

int lvl_cb(void *arg, uint64_t blkno, unsigned level)
{
	struct lvl_nodes *n = arg;
	if (n->n < 4096) {
		n->v[n->n] = blkno;
		n->level[n->n++] = level;
	}
	return 0;
}

const unsigned crash_modes[4] = { VBAS_CRASH_DROP, VBAS_CRASH_DROP | VBAS_CRASH_REORDER,
				  VBAS_CRASH_DROP | VBAS_CRASH_REORDER | VBAS_CRASH_TEAR, 0 };

static struct vbas_pool *open_flags(struct vbas_dev *d, unsigned flags)
{
	struct vbas_open_opts oo = { .cache_bytes = 1 << 20, .flags = flags };
	struct vbas_pool *p = NULL;
	assert_ok(vbas_open_dev(d, &oo, &p));
	return p;
}

uint64_t crash_writes(struct vbas_dev *base, unsigned flags,
		      void (*op)(struct vbas_pool *, void *), void *arg)
{
	struct vbas_dev *d = vbas_memdev_clone(base);
	struct vbas_pool *p = open_flags(d, flags);
	uint64_t w0 = vbas_memdev_writes(d);
	op(p, arg);
	uint64_t n = vbas_memdev_writes(d) - w0;
	vbas_close(p);
	dev_destroy(d);
	return n;
}

struct vbas_dev *crash_run(struct vbas_dev *base, unsigned flags, uint64_t at, unsigned mode,
			   uint64_t seed, void (*op)(struct vbas_pool *, void *), void *arg)
{
	struct vbas_dev *d = vbas_memdev_clone(base);
	struct vbas_pool *p = open_flags(d, flags);
	vbas_memdev_arm_crash(d, at, mode, seed);
	op(p, arg);
	if (!vbas_memdev_crashed(d))
		vbas_memdev_crash_now(d, mode, seed);
	vbas_close(p);
	struct vbas_dev *s = vbas_memdev_survivor(d);
	dev_destroy(d);
	return s;
}

int wrap_pread(struct vbas_dev *d, void *buf, size_t len, uint64_t off)
{
	return dev_pread(((struct wrapdev *)d)->inner, buf, len, off);
}

int wrap_pwrite(struct vbas_dev *d, const void *buf, size_t len, uint64_t off)
{
	return dev_pwrite(((struct wrapdev *)d)->inner, buf, len, off);
}

int wrap_flush(struct vbas_dev *d)
{
	return dev_flush(((struct wrapdev *)d)->inner);
}

int wrap_discard(struct vbas_dev *d, uint64_t off, uint64_t len)
{
	return dev_discard(((struct wrapdev *)d)->inner, off, len);
}

void wrap_destroy(struct vbas_dev *d)
{
	dev_destroy(((struct wrapdev *)d)->inner);
	free(d);
}

void wrap_init(struct wrapdev *w, struct vbas_dev *inner, const struct vbas_dev_ops *ops)
{
	assert_non_null(inner);
	w->inner = inner;
	w->d = *inner;
	w->d.ops = ops;
	w->d.fd = -1;
	w->d.owned_by_pool = 0;
}

static void print_problem(const char *msg, void *arg)
{
	(void)arg;
	fprintf(stderr, "# check: %s\n", msg);
}

void assert_check_clean(struct vbas_pool *p)
{
	struct vbas_check_stats st;
	int r = vbas_check(p, print_problem, NULL, &st);
	if (r)
		fail_msg("check: %d: %s", r, vbas_errmsg());
}

int run_group(const char *name, const struct CMUnitTest *tests, size_t n)
{
	cmocka_set_message_output(CM_OUTPUT_TAP);
	return _cmocka_run_group_tests(name, tests, n, NULL, NULL);
}

int fsmap_collect(const struct vbas_fsmap_rec *x, void *arg)
{
	struct fsmap_recs *s = arg;
	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 256;
		s->r = realloc(s->r, s->cap * sizeof(*s->r));
		assert_non_null(s->r);
	}
	s->r[s->n++] = *x;
	return 0;
}

/* ---- A workload of every kind of sharing ---- */

void img_write(struct vbas_pool *p, const char *name, uint8_t *img, uint64_t b, uint64_t n,
		   struct rng *r)
{
	struct vbas_vol *v;
	assert_ok(vbas_vol_open(p, name, &v));
	rng_fill(r, img + b * IMG_BS, n * IMG_BS);
	assert_ok(vbas_pwrite(v, img + b * IMG_BS, n * IMG_BS, b * IMG_BS, 0));
	vbas_vol_close(v);
}

void img_compare(struct vbas_pool *p, const char *name, const uint8_t *img)
{
	struct vbas_vol *v;
	uint8_t *buf = malloc(IMG_NB * IMG_BS);
	assert_ok(vbas_vol_open(p, name, &v));
	assert_ok(vbas_pread(v, buf, IMG_NB * IMG_BS, 0));
	if (memcmp(buf, img, IMG_NB * IMG_BS))
		fail_msg("volume %s differs from what was written", name);
	vbas_vol_close(v);
	free(buf);
}

/* Volumes of every kind of sharing: snapshots, a clone written over,
 * reflinks within and across volumes, a dedupe, a discard, a delete. */
void img_populate(struct vbas_pool *p, struct img *m, uint64_t seed)
{
	struct rng r = { seed };
	assert_ok(vbas_vol_create(p, "a", IMG_NB * IMG_BS));
	for (int i = 0; i < 60; i++) {
		uint64_t b = rng_below(&r, IMG_NB - 8);
		img_write(p, "a", m->a, b, 1 + rng_below(&r, 8), &r);
	}
	assert_ok(vbas_vol_snapshot(p, "a", "s1", 0));
	assert_ok(vbas_vol_snapshot(p, "s1", "c", VBAS_SNAP_WRITABLE));
	memcpy(m->c, m->a, sizeof(m->a));
	for (int i = 0; i < 30; i++) {
		uint64_t b = rng_below(&r, IMG_NB - 4);
		img_write(p, i & 1 ? "a" : "c", i & 1 ? m->a : m->c, b, 1 + rng_below(&r, 4), &r);
	}
	struct vbas_vol *a, *c;
	assert_ok(vbas_vol_open(p, "a", &a));
	assert_ok(vbas_vol_open(p, "c", &c));
	assert_ok(vbas_reflink(a, 0, c, 64 * IMG_BS, 32 * IMG_BS));
	memcpy(m->c + 64 * IMG_BS, m->a, 32 * IMG_BS);
	assert_ok(vbas_reflink(c, 200 * IMG_BS, c, 300 * IMG_BS, 16 * IMG_BS));
	memmove(m->c + 300 * IMG_BS, m->c + 200 * IMG_BS, 16 * IMG_BS);
	assert_ok(vbas_discard(a, 100 * IMG_BS, 20 * IMG_BS, 0));
	memset(m->a + 100 * IMG_BS, 0, 20 * IMG_BS);
	vbas_vol_close(a);
	vbas_vol_close(c);
	assert_ok(vbas_vol_snapshot(p, "c", "s2", 0));
	assert_ok(vbas_vol_create(p, "gone", IMG_NB * IMG_BS));
	uint8_t tmp[IMG_NB * IMG_BS];
	memset(tmp, 0, sizeof(tmp));
	img_write(p, "gone", tmp, 0, 40, &r);
	assert_ok(vbas_vol_delete(p, "gone"));
	assert_ok(vbas_flush(p));
}
