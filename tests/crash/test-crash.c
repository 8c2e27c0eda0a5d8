/* Crash tests: power loss at many points on the in-memory device, with the
 * writes not yet flushed dropped, reordered and torn.  After reopening,
 * the pool must pass vbas_check and hold one of the committed states:
 * the volumes of the last commit (or of the commit in flight when power
 * went), and in each volume every 512-byte sector as committed or as one
 * of the writes made since that commit (in-place overwrites of mapped
 * blocks are not journaled, with the guarantees of a disk sector).
 * Also: corruption of superblocks and tree nodes is detected and named.
 *
 *   VBAS_SEED=n   base seed      VBAS_OPS=n  crash points per seed
 */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXV 4
#define SECT 512

struct cvol {
	int live;
	char name[24];
	uint64_t size;
	uint8_t *data;
};

struct state {
	struct cvol v[MAXV];
};

struct logent {
	char name[24];
	uint64_t off, len;
	uint8_t *data;
};

struct sim {
	struct state cur, committed, inflight;
	int in_flush;
	struct logent *log;
	size_t nlog, caplog;
	struct rng r;
	int serial;
};

static void state_copy(struct state *dst, const struct state *src)
{
	for (int i = 0; i < MAXV; i++) {
		free(dst->v[i].data);
		dst->v[i] = src->v[i];
		dst->v[i].data = NULL;
		if (src->v[i].live) {
			dst->v[i].data = malloc(src->v[i].size);
			memcpy(dst->v[i].data, src->v[i].data, src->v[i].size);
		}
	}
}

static void state_free(struct state *s)
{
	for (int i = 0; i < MAXV; i++)
		free(s->v[i].data);
	memset(s, 0, sizeof(*s));
}

static void log_add(struct sim *S, const char *name, uint64_t off, uint64_t len, const uint8_t *d)
{
	if (S->nlog == S->caplog) {
		S->caplog = S->caplog ? S->caplog * 2 : 64;
		S->log = realloc(S->log, S->caplog * sizeof(*S->log));
	}
	struct logent *l = &S->log[S->nlog++];
	snprintf(l->name, sizeof(l->name), "%s", name);
	l->off = off;
	l->len = len;
	l->data = malloc(len);
	if (d)
		memcpy(l->data, d, len);
	else
		memset(l->data, 0, len);
}

static void log_clear(struct sim *S)
{
	for (size_t i = 0; i < S->nlog; i++)
		free(S->log[i].data);
	S->nlog = 0;
}

/* One random operation; returns the error, 0, or 1 for "not done". */
static int step(struct sim *S, struct vbas_pool *p)
{
	uint64_t what = rng_below(&S->r, 100);
	int live[MAXV], n = 0;
	for (int i = 0; i < MAXV; i++)
		if (S->cur.v[i].live)
			live[n++] = i;
	if (n == 0 || what < 4) {
		for (int i = 0; i < MAXV; i++)
			if (!S->cur.v[i].live) {
				struct cvol *c = &S->cur.v[i];
				snprintf(c->name, sizeof(c->name), "v%d", S->serial++);
				uint64_t size = (16 + rng_below(&S->r, 256)) * 4096;
				int e = vbas_vol_create(p, c->name, size);
				if (e)
					return e;
				c->live = 1;
				c->size = size;
				c->data = calloc(1, size);
				return 0;
			}
		return 1;
	}
	struct cvol *c = &S->cur.v[live[rng_below(&S->r, n)]];
	if (what < 7) {
		int e = vbas_vol_delete(p, c->name);
		if (e)
			return e;
		c->live = 0;
		free(c->data);
		c->data = NULL;
		return 0;
	}
	if (what < 10) {
		uint64_t size = (16 + rng_below(&S->r, 256)) * 4096;
		int e = vbas_vol_resize(p, c->name, size);
		if (e)
			return e;
		c->data = realloc(c->data, size);
		if (size > c->size)
			memset(c->data + c->size, 0, size - c->size);
		c->size = size;
		return 0;
	}
	if (what < 22) {
		S->in_flush = 1;
		state_copy(&S->inflight, &S->cur);
		int e = vbas_flush(p);
		if (e)
			return e;
		S->in_flush = 0;
		state_copy(&S->committed, &S->cur);
		log_clear(S);
		return 0;
	}
	struct vbas_vol *v;
	int e = vbas_vol_open(p, c->name, &v);
	if (e)
		return e;
	uint64_t off = rng_below(&S->r, c->size), len = 1 + rng_below(&S->r, 40000);
	if (len > c->size - off)
		len = c->size - off;
	if (what < 80) {
		uint8_t *buf = malloc(len);
		rng_fill(&S->r, buf, len);
		/* Log first: a write that fails half-way may have landed. */
		log_add(S, c->name, off, len, buf);
		e = vbas_pwrite(v, buf, len, off, 0);
		if (!e)
			memcpy(c->data + off, buf, len);
		free(buf);
	} else if (what < 90) {
		off &= ~4095ull;
		len = (len + 4095) & ~4095ull;
		if (len > c->size - off)
			len = c->size - off;
		log_add(S, c->name, off, len, NULL);
		e = vbas_discard(v, off, len, 0);
		if (!e)
			memset(c->data + off, 0, len);
	} else {
		log_add(S, c->name, off, len, NULL);
		e = vbas_write_zeroes(v, off, len, rng_below(&S->r, 2) ? VBAS_IO_NO_PUNCH : 0);
		if (!e)
			memset(c->data + off, 0, len);
	}
	vbas_vol_close(v);
	return e;
}

static const struct cvol *find(const struct state *s, const char *name)
{
	for (int i = 0; i < MAXV; i++)
		if (s->v[i].live && !strcmp(s->v[i].name, name))
			return &s->v[i];
	return NULL;
}

struct names {
	char n[16][VBAS_NAME_MAX + 1];
	uint64_t size[16];
	int count;
};

static int name_cb(const struct vbas_vol_info *info, void *arg)
{
	struct names *nm = arg;
	if (nm->count < 16) {
		strcpy(nm->n[nm->count], info->name);
		nm->size[nm->count] = info->size;
	}
	nm->count++;
	return 0;
}

/* Does the reopened pool match state S (volumes and sizes)? */
static int same_volumes(const struct names *nm, const struct state *s)
{
	int live = 0;
	for (int i = 0; i < MAXV; i++)
		live += s->v[i].live;
	if (live != nm->count)
		return 0;
	for (int k = 0; k < nm->count; k++) {
		const struct cvol *c = find(s, nm->n[k]);
		if (!c || c->size != nm->size[k])
			return 0;
	}
	return 1;
}

static void verify(struct sim *S, struct vbas_pool *p, uint64_t seed, uint64_t at)
{
	struct names nm = { .count = 0 };
	assert_ok(vbas_vol_list(p, name_cb, &nm));
	const struct state *st = NULL;
	if (same_volumes(&nm, &S->committed))
		st = &S->committed;
	else if (S->in_flush && same_volumes(&nm, &S->inflight))
		st = &S->inflight;
	if (!st)
		fail_msg("seed %llu crash at write %llu: the volumes after reopen match no "
			 "committed state", (unsigned long long)seed, (unsigned long long)at);
	for (int k = 0; k < nm.count; k++) {
		const struct cvol *c = find(st, nm.n[k]);
		const struct cvol *c2 = S->in_flush ? find(&S->inflight, nm.n[k]) : NULL;
		const struct cvol *c1 = find(&S->committed, nm.n[k]);
		struct vbas_vol *v;
		uint8_t *buf = malloc(c->size);
		assert_ok(vbas_vol_open(p, c->name, &v));
		assert_ok(vbas_pread(v, buf, c->size, 0));
		vbas_vol_close(v);
		/* Each byte as in the state found, as committed, or as one
		 * of the writes since the commit left it (sectors of in-place
		 * overwrites may land, or not, in any combination). */
		for (uint64_t s = 0; s < c->size; s++) {
			uint8_t g = buf[s];
			if (g == c->data[s] || (c1 && c1->size > s && g == c1->data[s]) ||
			    (c2 && c2->size > s && g == c2->data[s]))
				continue;
			int ok = 0;
			for (size_t l = 0; l < S->nlog && !ok; l++) {
				const struct logent *e = &S->log[l];
				ok = !strcmp(e->name, c->name) && s >= e->off && s < e->off + e->len &&
				     e->data[s - e->off] == g;
			}
			if (!ok)
				fail_msg("seed %llu crash at write %llu: volume %s byte %llu holds "
					 "%#x, which was never committed or written there",
					 (unsigned long long)seed, (unsigned long long)at, c->name,
					 (unsigned long long)s, g);
		}
		free(buf);
	}
}

/* Run scenario SEED; lose power at write AT (UINT64_MAX: never).  Returns
 * the number of device writes the scenario made. */
static uint64_t scenario(uint64_t seed, uint64_t at, unsigned mode, uint32_t fanout, int nops)
{
	struct sim S;
	memset(&S, 0, sizeof(S));
	S.r.s = seed;
	struct vbas_dev *dev = mem_pool(24ull << 20, 4096, fanout);
	struct vbas_pool *p = open_mem(dev, fanout ? 128 << 10 : 0);
	uint64_t w0 = vbas_memdev_writes(dev);
	if (at != UINT64_MAX)
		vbas_memdev_arm_crash(dev, at, mode, seed ^ at);
	for (int i = 0; i < nops && !vbas_memdev_crashed(dev); i++) {
		int e = step(&S, p);
		if (e < 0 && !vbas_memdev_crashed(dev))
			fail_msg("seed %llu: operation failed without a crash: %d %s",
				 (unsigned long long)seed, e, vbas_errmsg());
	}
	uint64_t writes = vbas_memdev_writes(dev) - w0;
	if (at == UINT64_MAX) {
		assert_check_clean(p);
		assert_ok(vbas_close(p));
		dev_destroy(dev);
	} else {
		if (!vbas_memdev_crashed(dev)) {
			vbas_memdev_crash_now(dev, mode, seed);
			S.in_flush = 0;
		}
		vbas_close(p);               /* fails: the device is gone */
		struct vbas_dev *surv = vbas_memdev_survivor(dev);
		dev_destroy(dev);
		struct vbas_pool *q = NULL;
		int e = vbas_open_dev(surv, NULL, &q);
		if (e)
			fail_msg("seed %llu crash at write %llu: reopen failed: %s",
				 (unsigned long long)seed, (unsigned long long)at, vbas_errmsg());
		assert_check_clean(q);
		verify(&S, q, seed, at);
		/* The pool goes on working after the crash. */
		assert_ok(vbas_vol_create(q, "after-crash", 1 << 20));
		struct vbas_vol *v;
		assert_ok(vbas_vol_open(q, "after-crash", &v));
		char buf[8192];
		memset(buf, 0x5a, sizeof(buf));
		assert_ok(vbas_pwrite(v, buf, sizeof(buf), 4096, 0));
		vbas_vol_close(v);
		assert_check_clean(q);
		assert_ok(vbas_close(q));
		dev_destroy(surv);
	}
	state_free(&S.cur);
	state_free(&S.committed);
	state_free(&S.inflight);
	log_clear(&S);
	free(S.log);
	return writes;
}

static void crash_sweep(uint64_t seed, uint32_t fanout, uint64_t points)
{
	const int nops = 150;
	uint64_t w = scenario(seed, UINT64_MAX, 0, fanout, nops);
	unsigned modes[] = {
		VBAS_CRASH_DROP, VBAS_CRASH_REORDER | VBAS_CRASH_DROP,
		VBAS_CRASH_TEAR | VBAS_CRASH_DROP | VBAS_CRASH_REORDER, 0,
	};
	struct rng r = { seed * 31 + 7 };
	fprintf(stderr, "# seed %llu: %llu device writes, %llu crash points\n",
		(unsigned long long)seed, (unsigned long long)w, (unsigned long long)points);
	for (uint64_t k = 0; k < points; k++) {
		/* Evenly spread points, and random ones between them. */
		uint64_t at = k % 2 ? rng_below(&r, w + 1) : (w * k) / points;
		scenario(seed, at, modes[k % 4], fanout, nops);
	}
}

static void t_crash_small_fanout(void **state)
{
	(void)state;
	uint64_t s = test_seed(21);
	crash_sweep(s, 5, test_ops(60));
	crash_sweep(s + 1, 5, test_ops(60));
}

static void t_crash_default(void **state)
{
	(void)state;
	uint64_t s = test_seed(31);
	crash_sweep(s, 0, test_ops(60));
	crash_sweep(s + 1, 0, test_ops(60));
}

/* ---- Corruption ---------------------------------------------------------- */

static struct vbas_dev *pool_with_data(void)
{
	struct vbas_dev *d = mem_pool(16ull << 20, 4096, 5);
	struct vbas_pool *p = open_mem(d, 0);
	struct vbas_vol *v;
	char buf[4096];
	assert_ok(vbas_vol_create(p, "a", 4 << 20));
	assert_ok(vbas_vol_open(p, "a", &v));
	for (int i = 0; i < 200; i++) {
		memset(buf, i, sizeof(buf));
		assert_ok(vbas_pwrite(v, buf, sizeof(buf), (uint64_t)i * 8192, 0));
	}
	vbas_vol_close(v);
	assert_ok(vbas_close(p));
	return d;
}

static struct vbas_dev *flipped(struct vbas_dev *d, uint64_t off)
{
	struct vbas_dev *c = vbas_memdev_clone(d);
	vbas_memdev_image(c)[off] ^= 0x10;
	struct vbas_dev *c2 = vbas_memdev_clone(c);
	dev_destroy(c);
	return c2;
}

static void t_corrupt_superblock(void **state)
{
	(void)state;
	struct vbas_dev *d = pool_with_data();
	struct vbas_pool *p = open_mem(d, 0);
	struct vbas_pool_info pi;
	assert_ok(vbas_pool_info(p, &pi));
	uint64_t gen = pi.generation;
	assert_ok(vbas_close(p));
	/* The newest superblock is in slot gen % 2; damage it. */
	struct vbas_dev *c = flipped(d, (gen % 2) * 4096 + 70);
	assert_ok(vbas_open_dev(c, &(struct vbas_open_opts){ .flags = VBAS_OPEN_RDONLY }, &p));
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.generation, gen - 1);
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	dev_destroy(c);
	/* Both damaged: a clear error, no crash. */
	struct vbas_dev *c1 = flipped(d, 70);
	c = flipped(c1, 4096 + 70);
	dev_destroy(c1);
	assert_int_equal(vbas_open_dev(c, NULL, &p), -EUCLEAN);
	assert_non_null(strstr(vbas_errmsg(), "slot 0: checksum mismatch"));
	assert_non_null(strstr(vbas_errmsg(), "slot 1: checksum mismatch"));
	dev_destroy(c);
	/* Not a pool at all. */
	c = vbas_memdev_create(1 << 20);
	memset(vbas_memdev_image(c), 0xab, 1 << 20);
	c1 = vbas_memdev_clone(c);
	assert_int_equal(vbas_open_dev(c1, NULL, &p), -EINVAL);
	assert_non_null(strstr(vbas_errmsg(), "not a vbas pool"));
	dev_destroy(c);
	dev_destroy(c1);
	dev_destroy(d);
}

struct ext_list {
	uint64_t phys[512];
	int n;
};

static void t_corrupt_node(void **state)
{
	(void)state;
	struct vbas_dev *d = pool_with_data();
	struct vbas_pool *p = open_mem(d, 0);
	/* Find a mapping-tree node: the volume's root. */
	struct vbas_vol_rec rec;
	uint64_t id;
	assert_ok(vol_lookup_name(p, "a", &id, &rec));
	uint64_t root = le64_get(rec.root);
	assert_true(root >= VBAS_FIRST_BLOCK);
	assert_ok(vbas_close(p));
	for (int where = 0; where < 3; where++) {
		/* Header, records, and the tail of the node. */
		uint64_t off = root * 4096 + (where == 0 ? 9 : where == 1 ? 200 : 4000);
		struct vbas_dev *c = flipped(d, off);
		p = open_mem(c, 0);
		struct vbas_vol *v;
		char buf[4096];
		assert_ok(vbas_vol_open(p, "a", &v));
		int e = vbas_pread(v, buf, sizeof(buf), 0);
		assert_true(e == -EBADMSG || e == -EUCLEAN);
		char want[64];
		snprintf(want, sizeof(want), "block %llu", (unsigned long long)root);
		assert_non_null(strstr(vbas_errmsg(), want));
		/* Writes fail cleanly too, and nothing is damaged further. */
		e = vbas_pwrite(v, buf, sizeof(buf), 0, 0);
		assert_true(e == -EBADMSG || e == -EUCLEAN || e == -EROFS);
		vbas_vol_close(v);
		struct vbas_check_stats st;
		assert_int_equal(vbas_check(p, NULL, NULL, &st), -EUCLEAN);
		assert_true(st.problems >= 1);
		p->rdonly = 1;
		vbas_close(p);
		dev_destroy(c);
	}
	dev_destroy(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_crash_small_fanout),
		cmocka_unit_test(t_crash_default),
		cmocka_unit_test(t_corrupt_superblock),
		cmocka_unit_test(t_corrupt_node),
	};
	return RUN("crash", tests);
}
