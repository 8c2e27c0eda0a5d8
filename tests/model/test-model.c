/* Model-based random test of volumes.
 *
 * An in-memory model holds every volume's bytes and which of its blocks
 * are mapped; the engine runs beside it through thousands of random
 * operations (write, discard, write-zeroes, resize, delete, create, flush,
 * close and reopen).  Every read is compared with the model byte for byte,
 * mapped bytes and pool usage are compared after each step, and
 * vbas_check runs along the way.  The pool is smaller than the volumes,
 * so ENOSPC happens and must change nothing.
 *
 *   VBAS_SEED=n  run one seed      VBAS_OPS=n  operations per run
 */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXVOL 6

struct mvol {
	int live;
	char name[32];
	uint64_t size;
	uint8_t *data;
	uint8_t *mapped;       /* per block */
};

struct model {
	struct mvol v[MAXVOL];
	uint32_t bs;
	int serial;
};

struct run {
	struct model m;
	struct vbas_dev *dev;
	struct vbas_pool *p;
	struct rng r;
	uint64_t cache;
	uint64_t enospc, ops;
};

static void mvol_resize(struct mvol *mv, uint64_t size, uint32_t bs)
{
	mv->data = realloc(mv->data, size);
	mv->mapped = realloc(mv->mapped, size / bs);
	if (size > mv->size) {
		memset(mv->data + mv->size, 0, size - mv->size);
		memset(mv->mapped + mv->size / bs, 0, (size - mv->size) / bs);
	}
	mv->size = size;
}

static uint64_t mapped_blocks(const struct mvol *mv, uint32_t bs)
{
	uint64_t n = 0;
	for (uint64_t b = 0; b < mv->size / bs; b++)
		n += mv->mapped[b];
	return n;
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

static void compare_all(struct run *R)
{
	struct vbas_pool_info pi;
	uint64_t total = 0;
	int live = 0;
	for (int i = 0; i < MAXVOL; i++) {
		struct mvol *mv = &R->m.v[i];
		struct vbas_vol_info info;
		if (!mv->live) {
			assert_int_equal(vbas_vol_stat(R->p, mv->name[0] ? mv->name : "x", &info), -ENOENT);
			continue;
		}
		live++;
		assert_ok(vbas_vol_stat(R->p, mv->name, &info));
		assert_int_equal(info.size, mv->size);
		uint64_t mb = mapped_blocks(mv, R->m.bs);
		if (info.mapped != mb * R->m.bs)
			fail_msg("volume %s: mapped %llu bytes, model %llu", mv->name,
				 (unsigned long long)info.mapped, (unsigned long long)(mb * R->m.bs));
		total += mb;
		compare_range(R, i, 0, mv->size);
	}
	assert_ok(vbas_pool_info(R->p, &pi));
	assert_int_equal(pi.volumes, live);
	assert_int_equal(pi.data_used, total * R->m.bs);
}

static void reopen(struct run *R)
{
	assert_ok(vbas_close(R->p));
	R->p = open_mem(R->dev, R->cache);
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

static void op_write(struct run *R, int i)
{
	struct mvol *mv = &R->m.v[i];
	uint64_t off, len;
	uint32_t bs = R->m.bs;
	pick_range(R, mv->size, rng_below(&R->r, 3) == 0, &off, &len);
	uint8_t *buf = malloc(len);
	if (rng_below(&R->r, 4) == 0)
		memset(buf, (int)rng_below(&R->r, 256), len);
	else
		rng_fill(&R->r, buf, len);
	struct vbas_vol *v = vopen(R, i);
	if (getenv("VBAS_TRACE"))
		fprintf(stderr, "#  write %llu+%llu\n", (unsigned long long)off, (unsigned long long)len);
	int e = vbas_pwrite(v, buf, len, off, rng_below(&R->r, 10) == 0 ? VBAS_IO_FUA : 0);
	vbas_vol_close(v);
	if (e == -ENOSPC) {
		R->enospc++;
		compare_range(R, i, off, len);   /* nothing changed */
	} else {
		assert_ok(e);
		memcpy(mv->data + off, buf, len);
		for (uint64_t b = off / bs; b <= (off + len - 1) / bs; b++)
			mv->mapped[b] = 1;
	}
	free(buf);
}

static void op_discard(struct run *R, int i)
{
	struct mvol *mv = &R->m.v[i];
	uint64_t off, len;
	uint32_t bs = R->m.bs;
	pick_range(R, mv->size, 1, &off, &len);
	struct vbas_vol *v = vopen(R, i);
	assert_ok(vbas_discard(v, off, len, 0));
	/* Unaligned discards are refused and change nothing. */
	assert_int_equal(vbas_discard(v, off + 1, bs, 0), -EINVAL);
	vbas_vol_close(v);
	memset(mv->data + off, 0, len);
	memset(mv->mapped + off / bs, 0, len / bs);
}

static void op_zero(struct run *R, int i)
{
	struct mvol *mv = &R->m.v[i];
	uint64_t off, len;
	uint32_t bs = R->m.bs;
	int nopunch = rng_below(&R->r, 3) == 0;
	pick_range(R, mv->size, 0, &off, &len);
	struct vbas_vol *v = vopen(R, i);
	if (getenv("VBAS_TRACE"))
		fprintf(stderr, "#  zero %llu+%llu nopunch %d\n", (unsigned long long)off,
			(unsigned long long)len, nopunch);
	int e = vbas_write_zeroes(v, off, len, nopunch ? VBAS_IO_NO_PUNCH : 0);
	if (e == -ENOSPC) {
		/* Zeroing is done in all-or-nothing pieces: each byte is old
		 * or zero; adopt what the engine shows, and its mapping. */
		uint8_t *buf = malloc(len);
		R->enospc++;
		assert_ok(vbas_pread(v, buf, len, off));
		for (uint64_t k = 0; k < len; k++)
			if (buf[k] && buf[k] != mv->data[off + k])
				fail_msg("zeroing hit ENOSPC and left byte %llu neither old nor zero",
					 (unsigned long long)(off + k));
		memcpy(mv->data + off, buf, len);
		free(buf);
		struct vbas_vol_info info;
		assert_ok(vbas_vol_info(v, &info));
		/* Which blocks got mapped is the engine's choice here; take
		 * the count by asking block by block. */
		for (uint64_t b = off / bs; b <= (off + len - 1) / bs; b++) {
			struct vbas_iomap m;
			assert_ok(vbas_map_begin(v, b * bs, bs, VBAS_MAP_READ, NULL, &m));
			mv->mapped[b] = m.type == VBAS_IOMAP_MAPPED;
			vbas_map_end(v, &m, 0, 0);
		}
	} else {
		assert_ok(e);
		memset(mv->data + off, 0, len);
		uint64_t as = (off + bs - 1) / bs, ae = (off + len) / bs;
		for (uint64_t b = as; b < ae; b++)
			mv->mapped[b] = nopunch;
	}
	vbas_vol_close(v);
}

static void op_resize(struct run *R, int i)
{
	struct mvol *mv = &R->m.v[i];
	uint32_t bs = R->m.bs;
	uint64_t size = (1 + rng_below(&R->r, 1024)) * bs;
	assert_ok(vbas_vol_resize(R->p, mv->name, size));
	mvol_resize(mv, size, bs);
}

static void op_create(struct run *R)
{
	int i;
	for (i = 0; i < MAXVOL && R->m.v[i].live; i++)
		;
	if (i == MAXVOL)
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
	mv->size = 0;
	mvol_resize(mv, size, R->m.bs);
}

static void op_delete(struct run *R, int i)
{
	struct mvol *mv = &R->m.v[i];
	assert_ok(vbas_vol_delete(R->p, mv->name));
	assert_int_equal(vbas_vol_delete(R->p, mv->name), -ENOENT);
	mv->live = 0;
	free(mv->data);
	free(mv->mapped);
	mv->data = mv->mapped = NULL;
	mv->size = 0;
}

static void run_model(uint64_t seed, uint64_t nops, uint64_t pool_size, uint32_t bs,
		      uint32_t fanout, uint64_t cache)
{
	struct run R;
	memset(&R, 0, sizeof(R));
	R.r.s = seed;
	R.m.bs = bs;
	R.cache = cache;
	R.dev = mem_pool(pool_size, bs, fanout);
	R.p = open_mem(R.dev, cache);
	for (int k = 0; k < 3; k++)
		op_create(&R);
	for (uint64_t n = 0; n < nops; n++) {
		int i = pick_live(&R);
		uint64_t what = rng_below(&R.r, 100);
		R.ops++;
		if (getenv("VBAS_TRACE"))
			fprintf(stderr, "# op %llu: %llu on %d\n", (unsigned long long)n,
				(unsigned long long)what, i);
		if (i < 0 || what < 3)
			op_create(&R);
		else if (what < 45)
			op_write(&R, i);
		else if (what < 58)
			op_discard(&R, i);
		else if (what < 66)
			op_zero(&R, i);
		else if (what < 71)
			op_resize(&R, i);
		else if (what < 74)
			op_delete(&R, i);
		else if (what < 84) {
			uint64_t off, len;
			pick_range(&R, R.m.v[i].size, 0, &off, &len);
			compare_range(&R, i, off, len);
		} else if (what < 92)
			assert_ok(vbas_flush(R.p));
		else if (what < 96)
			reopen(&R);
		else
			assert_check_clean(R.p);
		if (n % 97 == 0)
			compare_all(&R);
	}
	compare_all(&R);
	assert_check_clean(R.p);
	reopen(&R);
	compare_all(&R);
	assert_check_clean(R.p);
	fprintf(stderr, "# %llu operations, %llu ENOSPC\n", (unsigned long long)R.ops,
		(unsigned long long)R.enospc);
	assert_ok(vbas_close(R.p));
	dev_destroy(R.dev);
	for (int i = 0; i < MAXVOL; i++) {
		free(R.m.v[i].data);
		free(R.m.v[i].mapped);
	}
}

static void t_model_small_fanout(void **state)
{
	(void)state;
	/* Deep trees (5 records a node), tiny cache: splits, merges and
	 * eviction everywhere.  12 MiB pool, volumes up to 4 MiB each. */
	run_model(test_seed(11), test_ops(3000), 12ull << 20, 4096, 5, 256 << 10);
}

static void t_model_default(void **state)
{
	(void)state;
	run_model(test_seed(12), test_ops(3000), 16ull << 20, 4096, 0, 0);
}

static void t_model_big_blocks(void **state)
{
	(void)state;
	/* 64 KiB blocks: partial-block writes fill the rest with zeros. */
	run_model(test_seed(13), test_ops(1500), 128ull << 20, 65536, 6, 1 << 20);
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
