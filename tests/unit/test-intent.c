/* Intents: a reflink, dedupe or unshare that spans commits is finished
 * after a crash at any write, at the next open: the survivor shows the
 * whole operation or none of it, never a part. */
#include "common.h"
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BS   4096u
#define MiB  (1ull << 20)
#define NBLK 1100u                 /* blocks of the range shared: 550
                                      extents, two batches of a reflink */

static void vread(struct vbas_pool *p, const char *name, uint8_t *buf, uint64_t len)
{
	struct vbas_vol *v;
	assert_ok(vbas_vol_open(p, name, &v));
	assert_ok(vbas_pread(v, buf, len, 0));
	vbas_vol_close(v);
}

/* Volume "s": every other block written (NBLK/2 extents that cannot
 * merge); volume "d": other data everywhere.  IMG_S, IMG_D: what they read. */
static struct vbas_dev *two_volumes(uint8_t *img_s, uint8_t *img_d, uint64_t seed)
{
	struct vbas_dev *d = mem_pool(16 * MiB, BS, 0);
	struct vbas_pool *p = open_mem(d, 1 << 20);
	struct rng r = { seed };
	struct vbas_vol *s, *t;
	assert_ok(vbas_vol_create(p, "s", NBLK * BS));
	assert_ok(vbas_vol_create(p, "d", NBLK * BS));
	assert_ok(vbas_vol_open(p, "s", &s));
	assert_ok(vbas_vol_open(p, "d", &t));
	memset(img_s, 0, NBLK * BS);
	for (unsigned b = 0; b < NBLK; b += 2) {
		rng_fill(&r, img_s + b * BS, BS);
		assert_ok(vbas_pwrite(s, img_s + b * BS, BS, (uint64_t)b * BS, 0));
	}
	rng_fill(&r, img_d, NBLK * BS);
	assert_ok(vbas_pwrite(t, img_d, NBLK * BS, 0, 0));
	vbas_vol_close(s);
	vbas_vol_close(t);
	assert_ok(vbas_close(p));
	return d;
}

/* Whether the survivor S needs its intents finished (read-only look). */
static unsigned pending(struct vbas_dev *s)
{
	struct vbas_open_opts ro = { .cache_bytes = 1 << 20, .flags = VBAS_OPEN_RDONLY };
	struct vbas_pool *p;
	struct vbas_pool_info pi;
	assert_ok(vbas_open_dev(s, &ro, &p));
	assert_ok(vbas_pool_info(p, &pi));
	assert_ok(vbas_close(p));
	return pi.intents;
}

enum op { OP_REFLINK, OP_DEDUPE };

static int run_op(struct vbas_pool *p, enum op op)
{
	struct vbas_vol *s, *t;
	int same = 0;
	assert_ok(vbas_vol_open(p, "s", &s));
	assert_ok(vbas_vol_open(p, "d", &t));
	int r = op == OP_REFLINK ? vbas_reflink(s, 0, t, 0, NBLK * BS) :
				   vbas_dedupe(s, 0, t, 0, NBLK * BS, &same);
	vbas_vol_close(s);
	vbas_vol_close(t);
	return r;
}

static void run_op_any(struct vbas_pool *p, void *arg)
{
	(void)run_op(p, *(enum op *)arg);
}

static void crash_share(enum op op, uint64_t seed)
{
	static uint8_t img_s[NBLK * BS], img_d[NBLK * BS], buf[NBLK * BS];
	struct vbas_dev *base = two_volumes(img_s, img_d, seed);
	if (op == OP_DEDUPE) {
		/* d holds what s does, in blocks of its own. */
		struct vbas_pool *p = open_mem(base, 1 << 20);
		struct vbas_vol *t;
		assert_ok(vbas_vol_open(p, "d", &t));
		assert_ok(vbas_pwrite(t, img_s, NBLK * BS, 0, 0));
		vbas_vol_close(t);
		assert_ok(vbas_close(p));
		memcpy(img_d, img_s, sizeof(img_d));
	}
	uint64_t big0 = vbas_tun.txn_big_meta;
	vbas_tun.txn_big_meta = 2;             /* commits inside the operation */
	struct vbas_dev *d = vbas_memdev_clone(base);
	struct vbas_pool *p = open_mem(d, 1 << 20);
	struct vbas_pool_info a, b;
	assert_ok(vbas_pool_info(p, &a));
	uint64_t w0 = vbas_memdev_writes(d);
	assert_ok(run_op(p, op));
	uint64_t total = vbas_memdev_writes(d) - w0;
	assert_ok(vbas_pool_info(p, &b));
	assert_true(b.generation >= a.generation + 2);  /* it spanned commits */
	assert_int_equal(b.intents, 0);
	assert_ok(vbas_close(p));
	dev_destroy(d);
	uint64_t every = total / test_ops(20) + 1;
	unsigned whole = 0, none = 0, replayed = 0, runs = 0;
	for (uint64_t at = 0; at <= total; at += every) {
		struct vbas_dev *s = crash_run(base, 0, at, crash_modes[runs++ % 4], 3 + at,
					       run_op_any, &op);
		replayed += pending(s) > 0;
		p = open_mem(s, 1 << 20);              /* finishes what was under way */
		assert_ok(vbas_pool_info(p, &b));
		assert_int_equal(b.intents, 0);
		assert_check_clean(p);
		vread(p, "s", buf, sizeof(buf));
		assert_memory_equal(buf, img_s, sizeof(buf));
		vread(p, "d", buf, sizeof(buf));
		if (!memcmp(buf, img_s, sizeof(buf)))
			whole++;
		else if (!memcmp(buf, img_d, sizeof(buf)))
			none++;
		else
			fail_msg("power cut at write %llu: d holds part of the operation",
				 (unsigned long long)at);
		if (op == OP_REFLINK || whole) {
			/* Shared, as the operation leaves it, or not at all. */
			struct vbas_vol_usage u;
			assert_ok(vbas_vol_usage(p, "d", &u));
			assert_true(u.shared == 0 || u.shared == NBLK / 2 * BS);
		}
		assert_ok(vbas_close(p));
		dev_destroy(s);
	}
	fprintf(stderr, "# %s: %llu writes, %u power cuts: %u survivors with all of it (%u "
		"finished at open), %u with none\n", op == OP_REFLINK ? "reflink" : "dedupe",
		(unsigned long long)total, runs, whole, replayed, none);
	if (op == OP_REFLINK)
		assert_true(whole > 0 && none > 0);
	assert_true(replayed > 0);
	vbas_tun.txn_big_meta = big0;
	dev_destroy(base);
}

static void t_reflink_crash(void **state)
{
	(void)state;
	crash_share(OP_REFLINK, test_seed(81));
}

static void t_dedupe_crash(void **state)
{
	(void)state;
	crash_share(OP_DEDUPE, test_seed(82));
}

static int unshare_v(struct vbas_pool *p)
{
	struct vbas_vol *v;
	assert_ok(vbas_vol_open(p, "v", &v));
	int r = vbas_unshare(v, 0, 0);
	vbas_vol_close(v);
	return r;
}

static void unshare_any(struct vbas_pool *p, void *arg)
{
	(void)arg;
	(void)unshare_v(p);
}

/* Unshare of a volume a snapshot shares whole, with a commit after each
 * chunk (as another thread's flush may make: one thread's unshare is one
 * transaction, its chunks holding their metadata room): after a power cut
 * at any write, the survivor (finished at open) shares nothing or all of
 * it, and both read what was written. */
static void t_unshare_crash(void **state)
{
	(void)state;
	static uint8_t img[MiB], buf[MiB];
	struct vbas_dev *base = mem_pool(16 * MiB, BS, 0);
	struct vbas_pool *p = open_mem(base, 1 << 20);
	struct rng r = { test_seed(83) };
	struct vbas_vol *v;
	assert_ok(vbas_vol_create(p, "v", sizeof(img)));
	rng_fill(&r, img, sizeof(img));
	assert_ok(vbas_vol_open(p, "v", &v));
	/* Even blocks, then odd: extents of one block, many leaves. */
	for (int odd = 0; odd < 2; odd++)
		for (uint64_t b = (uint64_t)odd; b < sizeof(img) / BS; b += 2)
			assert_ok(vbas_pwrite(v, img + b * BS, BS, b * BS, 0));
	vbas_vol_close(v);
	assert_ok(vbas_vol_snapshot(p, "v", "snap", 0));
	assert_ok(vbas_close(p));
	vbas_tun.unshare_commit = 1;
	struct vbas_dev *d = vbas_memdev_clone(base);
	p = open_mem(d, 1 << 20);
	struct vbas_pool_info a, b;
	assert_ok(vbas_pool_info(p, &a));
	uint64_t w0 = vbas_memdev_writes(d);
	assert_ok(unshare_v(p));
	uint64_t total = vbas_memdev_writes(d) - w0;
	assert_ok(vbas_pool_info(p, &b));
	assert_true(b.generation > a.generation + 1);
	assert_ok(vbas_close(p));
	dev_destroy(d);
	uint64_t every = total / test_ops(20) + 1;
	unsigned all = 0, untouched = 0, replayed = 0, runs = 0;
	for (uint64_t at = 0; at <= total; at += every) {
		struct vbas_dev *s = crash_run(base, 0, at, crash_modes[runs++ % 4], 9 + at,
					       unshare_any, NULL);
		replayed += pending(s) > 0;
		p = open_mem(s, 1 << 20);
		assert_check_clean(p);
		vread(p, "v", buf, sizeof(buf));
		assert_memory_equal(buf, img, sizeof(buf));
		vread(p, "snap", buf, sizeof(buf));
		assert_memory_equal(buf, img, sizeof(buf));
		struct vbas_vol_usage u;
		assert_ok(vbas_vol_usage(p, "v", &u));
		if (u.shared == 0)
			all++;
		else if (u.shared == sizeof(img))
			untouched++;
		else
			fail_msg("power cut at write %llu: %llu bytes still shared", (unsigned long long)at,
				 (unsigned long long)u.shared);
		assert_ok(vbas_close(p));
		dev_destroy(s);
	}
	fprintf(stderr, "# unshare: %llu writes, %u power cuts: %u survivors unshared (%u "
		"finished at open), %u untouched\n", (unsigned long long)total, runs, all, replayed,
		untouched);
	assert_true(all > 0 && untouched > 0 && replayed > 0);
	vbas_tun.unshare_commit = 0;
	dev_destroy(base);
}

/* More operations at once than there are slots: five unshares of clones
 * of one snapshot (each holds its slot across its chunks, the pool lock
 * let go between them): the others wait for a slot, and all finish. */
struct sharer {
	struct vbas_pool *p;
	char name[16];
	int r;
	char msg[200];
};

static void *sharer_main(void *arg)
{
	struct sharer *s = arg;
	struct vbas_vol *v;
	if (!(s->r = vbas_vol_open(s->p, s->name, &v))) {
		s->r = vbas_unshare(v, 0, 0);
		vbas_vol_close(v);
	}
	if (s->r)
		snprintf(s->msg, sizeof(s->msg), "%s", vbas_errmsg());
	return NULL;
}

static void t_slots(void **state)
{
	(void)state;
	static uint8_t img[256 * BS], buf[256 * BS];
	struct vbas_dev *d = mem_pool(16 * MiB, BS, 0);
	struct vbas_pool *p = open_mem(d, 1 << 20);
	struct rng r = { test_seed(84) };
	struct vbas_vol *v;
	assert_ok(vbas_vol_create(p, "u", sizeof(img)));
	rng_fill(&r, img, sizeof(img));
	assert_ok(vbas_vol_open(p, "u", &v));
	for (int odd = 0; odd < 2; odd++)
		for (uint64_t b = (uint64_t)odd; b < sizeof(img) / BS; b += 2)
			assert_ok(vbas_pwrite(v, img + b * BS, BS, b * BS, 0));
	vbas_vol_close(v);
	assert_ok(vbas_vol_snapshot(p, "u", "u-snap", 0));
	enum { N = 5 };
	struct sharer sh[N];
	pthread_t th[N];
	for (int i = 0; i < N; i++) {
		sh[i] = (struct sharer){ .p = p };
		snprintf(sh[i].name, sizeof(sh[i].name), "c%d", i);
		assert_ok(vbas_vol_snapshot(p, "u-snap", sh[i].name, VBAS_SNAP_WRITABLE));
	}
	for (int i = 0; i < N; i++)
		assert_int_equal(pthread_create(&th[i], NULL, sharer_main, &sh[i]), 0);
	for (int i = 0; i < N; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < N; i++)
		if (sh[i].r)
			fail_msg("unshare of %s: %d %s", sh[i].name, sh[i].r, sh[i].msg);
	struct vbas_pool_info pi;
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.intents, 0);
	assert_check_clean(p);
	for (int i = 0; i < N; i++) {
		struct vbas_vol_usage u;
		vread(p, sh[i].name, buf, sizeof(buf));
		assert_memory_equal(buf, img, sizeof(buf));
		assert_ok(vbas_vol_usage(p, sh[i].name, &u));
		assert_int_equal(u.shared, 0);
	}
	assert_ok(vbas_close(p));
	dev_destroy(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_reflink_crash),
		cmocka_unit_test(t_dedupe_crash),
		cmocka_unit_test(t_unshare_crash),
		cmocka_unit_test(t_slots),
	};
	return RUN("intent", tests);
}
