/* Pool shrink: every block past the new end moved below it, every sharing
 * kept, every byte read back; refusals that change nothing; power lost at
 * every write of a shrink; a shrink beside a writer; a cancel. */
#include "common.h"
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BS   IMG_BS
#define NB   IMG_NB
#define MiB  (1ull << 20)

/* LEN random bytes to volume NAME, in writes of 64 KiB. */
static void write_random(struct vbas_pool *p, const char *name, uint64_t len, struct rng *r)
{
	struct vbas_vol *v;
	static uint8_t buf[64 << 10];
	assert_ok(vbas_vol_open(p, name, &v));
	for (uint64_t off = 0; off < len; off += sizeof(buf)) {
		rng_fill(r, buf, sizeof(buf));
		assert_ok(vbas_pwrite(v, buf, sizeof(buf), off, 0));
	}
	vbas_vol_close(v);
}

/* A pool of SIZE whose sharing workload lies high: a filler written
 * first, the workload after it, the filler deleted. */
static struct vbas_dev *high_pool(uint64_t size, uint64_t fill, struct img *m, uint64_t seed)
{
	struct vbas_dev *d = mem_pool(size, BS, 8);
	struct vbas_pool *p = open_mem(d, 1 << 20);
	struct rng r = { seed };
	assert_ok(vbas_vol_create(p, "fill", fill));
	write_random(p, "fill", fill, &r);
	img_populate(p, m, seed);
	assert_ok(vbas_vol_delete(p, "fill"));
	assert_ok(vbas_close(p));
	return d;
}

/* Blocks in use at or past block FROM, by fsmap. */
static uint64_t used_past(struct vbas_pool *p, uint64_t from)
{
	struct fsmap_recs x = { 0 };
	struct vbas_pool_info pi;
	assert_ok(vbas_pool_info(p, &pi));
	if (from * BS >= pi.size)
		return 0;
	assert_ok(vbas_fsmap(p, from * BS, pi.size - from * BS, fsmap_collect, &x));
	uint64_t n = 0;
	for (size_t i = 0; i < x.n; i++)
		if (x.r[i].kind != VBAS_FSMAP_FREE)
			n += x.r[i].length / BS;
	free(x.r);
	return n;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Distinct mapping-tree nodes: what unsharing would multiply. */
static uint64_t mapping_nodes(struct vbas_pool *p)
{
	struct fsmap_recs x = { 0 };
	assert_ok(vbas_fsmap(p, 0, 0, fsmap_collect, &x));
	uint64_t *b = malloc((x.n + 1) * sizeof(*b)), n = 0, k = 0;
	for (size_t i = 0; i < x.n; i++)
		if (x.r[i].kind == VBAS_FSMAP_MAPPING)
			for (uint64_t o = 0; o < x.r[i].length; o += BS)
				b[k++] = x.r[i].physical + o;
	qsort(b, k, sizeof(*b), cmp_u64);
	for (uint64_t i = 0; i < k; i++)
		n += !i || b[i] != b[i - 1];
	free(b);
	free(x.r);
	return n;
}

static void verify(struct vbas_pool *p, const struct img *m)
{
	assert_check_clean(p);
	img_compare(p, "a", m->a);
	img_compare(p, "c", m->c);
}

/* Shrinks to several sizes: each leaves nothing past its end, the same
 * data in every volume, the same blocks in use (nothing unshared), and a
 * pool that goes on working. */
static void t_sizes(void **state)
{
	(void)state;
	static struct img m;
	struct vbas_dev *d = high_pool(32 * MiB, 14 * MiB, &m, test_seed(61));
	struct vbas_pool *p = open_mem(d, 1 << 20);
	struct vbas_pool_info before, pi;
	assert_ok(vbas_pool_info(p, &before));
	uint64_t mnodes = mapping_nodes(p);
	assert_true(used_past(p, 16 * MiB / BS) > 200);
	static const uint64_t sizes[] = { 28 * MiB, 16 * MiB, 12 * MiB, 9 * MiB };
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct vbas_shrink_stats st;
		assert_ok(vbas_pool_shrink(p, sizes[i], &st));
		assert_ok(vbas_pool_info(p, &pi));
		assert_int_equal(pi.size, sizes[i]);
		assert_int_equal(pi.shrink_to, 0);
		assert_int_equal(pi.data_used, before.data_used);
		fprintf(stderr, "# to %llu MiB: %llu data blocks, %llu nodes, %llu steps; metadata "
			"%llu -> %llu blocks\n", (unsigned long long)(sizes[i] / MiB),
			(unsigned long long)st.data_blocks, (unsigned long long)st.nodes,
			(unsigned long long)st.steps,
			(unsigned long long)(before.metadata_used / BS),
			(unsigned long long)(pi.metadata_used / BS));
		/* Shared nodes moved once, not once per volume: as many
		 * mapping nodes as before. */
		assert_int_equal(mapping_nodes(p), mnodes);
		verify(p, &m);
	}
	/* Reopened: the size and the data are the committed ones. */
	assert_ok(vbas_close(p));
	p = open_mem(d, 1 << 20);
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.size, 9 * MiB);
	verify(p, &m);
	/* Still works: a new volume written, snapshots of moved trees. */
	struct rng r = { 5 };
	img_write(p, "a", m.a, 10, 20, &r);
	assert_ok(vbas_vol_snapshot(p, "a", "s3", 0));
	img_write(p, "a", m.a, 100, 8, &r);
	verify(p, &m);
	assert_ok(vbas_close(p));
	dev_destroy(d);
}

/* Refusals leave the pool as it was. */
static void t_refusals(void **state)
{
	(void)state;
	static struct img m;
	struct vbas_dev *d = high_pool(16 * MiB, 4 * MiB, &m, test_seed(62));
	struct vbas_pool *p = open_mem(d, 1 << 20);
	struct vbas_pool_info pi;
	assert_int_equal(vbas_pool_shrink(p, 16 * MiB, NULL), -EINVAL);
	assert_non_null(strstr(vbas_errmsg(), "not smaller"));
	assert_int_equal(vbas_pool_shrink(p, 32 * MiB, NULL), -EINVAL);
	assert_int_equal(vbas_pool_shrink(p, 4 * BS, NULL), -EINVAL);
	assert_non_null(strstr(vbas_errmsg(), "smallest pool"));
	assert_int_equal(vbas_pool_shrink(p, 2 * MiB, NULL), -ENOSPC);
	assert_non_null(strstr(vbas_errmsg(), "in use"));
	assert_int_equal(vbas_pool_shrink_cancel(p), -ENOENT);
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.size, 16 * MiB);
	assert_int_equal(pi.shrink_to, 0);
	verify(p, &m);
	assert_ok(vbas_close(p));
	/* Read-only, and no reverse map. */
	struct vbas_open_opts ro = { .cache_bytes = 1 << 20, .flags = VBAS_OPEN_RDONLY };
	assert_ok(vbas_open_dev(d, &ro, &p));
	assert_int_equal(vbas_pool_shrink(p, 12 * MiB, NULL), -EROFS);
	assert_ok(vbas_close(p));
	dev_destroy(d);
	setenv("VBAS_NO_RMAP", "1", 1);
	d = mem_pool(16 * MiB, BS, 8);
	unsetenv("VBAS_NO_RMAP");
	p = open_mem(d, 1 << 20);
	assert_int_equal(vbas_pool_shrink(p, 12 * MiB, NULL), -EOPNOTSUPP);
	assert_non_null(strstr(vbas_errmsg(), "--rmap"));
	assert_ok(vbas_close(p));
	dev_destroy(d);
}

/* Power lost at every write of a shrink made of many steps: the
 * survivor opens (going on with the shrink, or back at the old size if
 * the target never landed), checks clean and reads back every byte. */
static void shrink_op(struct vbas_pool *p, void *arg)
{
	struct vbas_shrink_stats *st = arg;
	int r = vbas_pool_shrink(p, 8 * MiB, st);
	if (st)
		assert_ok(r);
}

static void t_crash(void **state)
{
	(void)state;
	static struct img m;
	struct vbas_dev *base = high_pool(16 * MiB, 7 * MiB, &m, test_seed(63));
	uint64_t target = 8 * MiB;
	uint64_t step0 = vbas_tun.shrink_step;
	vbas_tun.shrink_step = 64;
	struct vbas_shrink_stats st;
	uint64_t total = crash_writes(base, 0, shrink_op, &st);
	fprintf(stderr, "# %llu data blocks, %llu nodes moved in %llu steps\n",
		(unsigned long long)st.data_blocks, (unsigned long long)st.nodes,
		(unsigned long long)st.steps);
	assert_true(st.steps > 3);
	uint64_t every = total / test_ops(80) + 1;
	unsigned shrunk = 0, old = 0, runs = 0;
	for (uint64_t at = 0; at <= total; at += every) {
		struct vbas_dev *s = crash_run(base, 0, at, crash_modes[runs++ % 4], 7 + at,
					       shrink_op, NULL);
		struct vbas_pool *p = open_mem(s, 1 << 20);
		struct vbas_pool_info pi;
		assert_ok(vbas_pool_info(p, &pi));
		assert_int_equal(pi.shrink_to, 0);
		if (pi.size == target)
			shrunk++;
		else if (pi.size == 16 * MiB)
			old++;
		else
			fail_msg("a survivor of %llu bytes", (unsigned long long)pi.size);
		verify(p, &m);
		assert_ok(vbas_close(p));
		dev_destroy(s);
	}
	fprintf(stderr, "# %llu writes, %u power cuts: %u survivors shrunk (at open if not "
		"before), %u at the old size\n", (unsigned long long)total, runs, shrunk, old);
	assert_true(shrunk > 0 && old > 0);
	vbas_tun.shrink_step = step0;
	dev_destroy(base);
}

/* A survivor whose shrink was cut short, opened without going on with
 * it, keeps its target: nothing is allocated past it; a cancel gives
 * the room back. */
static void t_cancel(void **state)
{
	(void)state;
	static struct img m;
	struct vbas_dev *base = high_pool(16 * MiB, 7 * MiB, &m, test_seed(64));
	uint64_t step0 = vbas_tun.shrink_step;
	vbas_tun.shrink_step = 64;
	struct vbas_dev *d = vbas_memdev_clone(base);
	struct vbas_pool *p = open_mem(d, 1 << 20);
	uint64_t w0 = vbas_memdev_writes(d);
	assert_ok(vbas_pool_shrink(p, 8 * MiB, NULL));
	uint64_t total = vbas_memdev_writes(d) - w0;
	assert_ok(vbas_close(p));
	dev_destroy(d);
	d = vbas_memdev_clone(base);
	p = open_mem(d, 1 << 20);
	vbas_memdev_arm_crash(d, total / 2, VBAS_CRASH_DROP, 3);
	(void)vbas_pool_shrink(p, 8 * MiB, NULL);
	assert_true(vbas_memdev_crashed(d));
	vbas_close(p);
	struct vbas_dev *s = vbas_memdev_survivor(d);
	dev_destroy(d);
	vbas_tun.shrink_step = step0;
	struct vbas_open_opts o = { .cache_bytes = 1 << 20, .flags = VBAS_OPEN_NO_RESUME };
	assert_ok(vbas_open_dev(s, &o, &p));
	struct vbas_pool_info pi;
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.shrink_to, 8 * MiB);
	assert_int_equal(pi.size, 16 * MiB);
	verify(p, &m);
	/* New data goes below the target. */
	uint64_t past = used_past(p, 8 * MiB / BS);
	struct rng r = { 9 };
	assert_ok(vbas_vol_create(p, "new", 2 * MiB));
	write_random(p, "new", 2 * MiB, &r);
	assert_ok(vbas_flush(p));
	assert_true(used_past(p, 8 * MiB / BS) <= past);
	assert_ok(vbas_pool_shrink_cancel(p));
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.shrink_to, 0);
	assert_int_equal(pi.size, 16 * MiB);
	verify(p, &m);
	assert_ok(vbas_close(p));
	/* Cancelled for good: a plain open changes nothing. */
	p = open_mem(s, 1 << 20);
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.size, 16 * MiB);
	assert_int_equal(pi.shrink_to, 0);
	assert_ok(vbas_close(p));
	dev_destroy(s);
	dev_destroy(base);
}

/* A writer goes on while the pool shrinks under it. */
struct writer {
	struct vbas_pool *p;
	uint8_t *img;
	volatile int stop;
	volatile uint64_t writes;
	volatile int err;
	char msg[256];
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct vbas_vol *v;
	struct rng r = { 77 };
	uint8_t buf[8 * BS];
	if ((w->err = vbas_vol_open(w->p, "w", &v)))
		return NULL;
	while (!w->stop) {
		uint64_t b = rng_below(&r, NB - 8), n = 1 + rng_below(&r, 8);
		rng_fill(&r, buf, n * BS);
		int e = vbas_pwrite(v, buf, n * BS, b * BS, 0);
		if (e) {
			w->err = e;
			snprintf(w->msg, sizeof(w->msg), "%s", vbas_errmsg());
			break;
		}
		memcpy(w->img + b * BS, buf, n * BS);
		w->writes++;
		if (w->writes % 16 == 0)
			vbas_flush(w->p);
	}
	vbas_vol_close(v);
	return NULL;
}

static void t_online(void **state)
{
	(void)state;
	static struct img m;
	static uint8_t wimg[NB * BS];
	struct vbas_dev *d = high_pool(32 * MiB, 20 * MiB, &m, test_seed(65));
	struct vbas_pool *p = open_mem(d, 1 << 20);
	uint64_t step0 = vbas_tun.shrink_step;
	vbas_tun.shrink_step = 8;
	assert_ok(vbas_vol_create(p, "w", NB * BS));
	struct rng r = { 3 };
	img_write(p, "w", wimg, 0, NB, &r);
	struct writer w = { .p = p, .img = wimg };
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, writer_main, &w), 0);
	while (w.writes < 20 && !w.err)
		sched_yield();
	struct vbas_shrink_stats st;
	uint64_t w0 = w.writes;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int e = vbas_pool_shrink(p, 16 * MiB, &st);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	uint64_t during = w.writes - w0;
	w.stop = 1;
	pthread_join(th, NULL);
	vbas_tun.shrink_step = step0;
	assert_ok(e);
	if (w.err)
		fail_msg("writer: %d %s", w.err, w.msg);
	assert_true(during > 0);
	fprintf(stderr, "# %llu writes during a shrink of %llu steps, %.1f ms (%llu data blocks "
		"moved)\n", (unsigned long long)during, (unsigned long long)st.steps,
		(double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6,
		(unsigned long long)st.data_blocks);
	struct vbas_pool_info pi;
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.size, 16 * MiB);
	verify(p, &m);
	img_compare(p, "w", wimg);
	assert_ok(vbas_close(p));
	p = open_mem(d, 1 << 20);
	verify(p, &m);
	img_compare(p, "w", wimg);
	assert_ok(vbas_close(p));
	dev_destroy(d);
}

/* vbas_pool_shrink_stop from another thread (a server that stops): the
 * shrink returns ECANCELED after a step, its target kept; the next open
 * goes on with it. */
struct stopper {
	struct vbas_pool *p;
	int r;
	char msg[256];
};

static void *shrinker(void *arg)
{
	struct stopper *s = arg;
	s->r = vbas_pool_shrink(s->p, 16 * MiB, NULL);
	snprintf(s->msg, sizeof(s->msg), "%s", vbas_errmsg());
	return NULL;
}

static void t_stop(void **state)
{
	(void)state;
	static struct img m;
	struct vbas_dev *d = high_pool(32 * MiB, 20 * MiB, &m, test_seed(66));
	struct vbas_pool *p = open_mem(d, 1 << 20);
	uint64_t step0 = vbas_tun.shrink_step;
	vbas_tun.shrink_step = 1;
	struct stopper s = { .p = p };
	pthread_t th;
	assert_ok(vbas_pool_shrink_stop(p));      /* none running: nothing */
	uint64_t c0;
	struct vbas_pool_info pi;
	assert_ok(vbas_pool_info(p, &pi));
	c0 = pi.generation;
	assert_int_equal(pthread_create(&th, NULL, shrinker, &s), 0);
	/* Once a few steps have committed. */
	do {
		sched_yield();
		assert_ok(vbas_pool_info(p, &pi));
	} while (pi.generation < c0 + 4);
	assert_ok(vbas_pool_shrink_stop(p));
	pthread_join(th, NULL);
	vbas_tun.shrink_step = step0;
	assert_int_equal(s.r, -ECANCELED);
	assert_non_null(strstr(s.msg, "stopped"));
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.shrink_to, 16 * MiB);
	assert_int_equal(pi.size, 32 * MiB);
	verify(p, &m);
	assert_ok(vbas_close(p));
	p = open_mem(d, 1 << 20);                 /* goes on with it */
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.shrink_to, 0);
	assert_int_equal(pi.size, 16 * MiB);
	verify(p, &m);
	assert_ok(vbas_close(p));
	dev_destroy(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_sizes),
		cmocka_unit_test(t_refusals),
		cmocka_unit_test(t_cancel),
		cmocka_unit_test(t_online),
		cmocka_unit_test(t_stop),
		cmocka_unit_test(t_crash),
	};
	return RUN("shrink", tests);
}
