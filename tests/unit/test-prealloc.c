/* Reserved ranges (vbas_vol_reserve): fallocate that truly reserves.
 *
 * Every test ends the same way: another volume fills the pool until a
 * write fails with ENOSPC, and then every block of every reserved range
 * is written, through vbas_pwrite and through vbas_map_begin without a
 * cookie, and must succeed; what was written reads back byte for byte,
 * snapshots keep what they had, and vbas_check is clean, also after the
 * pool is closed and opened again. */
#include "common.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#define BS 4096u

/* The contents of logical block LBLK at version V (0: zeros). */
static void pattern(void *buf, uint64_t lblk, uint32_t v)
{
	if (!v) {
		memset(buf, 0, BS);
		return;
	}
	struct rng r = { .s = lblk * 1000003u + v };
	rng_fill(&r, buf, BS);
}

static void verify(struct vbas_vol *vol, const uint32_t *model, uint64_t n, const char *what)
{
	char got[BS], want[BS];
	for (uint64_t b = 0; b < n; b++) {
		int r = vbas_pread(vol, got, BS, b * BS);
		if (r)
			fail_msg("%s: read of block %" PRIu64 ": %d: %s", what, b, r, vbas_errmsg());
		pattern(want, b, model[b]);
		if (memcmp(got, want, BS))
			fail_msg("%s: block %" PRIu64 " (version %u) reads other bytes", what, b,
				 model[b]);
	}
}

static void wr(struct vbas_vol *vol, uint32_t *model, uint64_t b, uint32_t v)
{
	char buf[BS];
	pattern(buf, b, v);
	int r = vbas_pwrite(vol, buf, BS, b * BS, 0);
	if (r)
		fail_msg("write of block %" PRIu64 ": %d: %s", b, r, vbas_errmsg());
	model[b] = v;
}

/* The same through the mapping interface, without a cookie. */
static void wr_map(struct vbas_pool *p, struct vbas_vol *vol, uint32_t *model, uint64_t b,
		   uint32_t v)
{
	char buf[BS];
	struct vbas_iomap m;
	pattern(buf, b, v);
	int r = vbas_map_begin(vol, b * BS, BS, VBAS_MAP_WRITE, NULL, &m);
	if (r)
		fail_msg("map_begin of block %" PRIu64 ": %d: %s", b, r, vbas_errmsg());
	assert_true(m.type == VBAS_IOMAP_MAPPED || m.type == VBAS_IOMAP_NEW);
	assert_ok(dev_pwrite(p->dev, buf, BS, m.physical));
	assert_ok(vbas_map_end(vol, &m, BS, 0));
	model[b] = v;
}

static uint64_t vol_reserved(struct vbas_vol *vol)
{
	struct vbas_vol_info vi;
	assert_ok(vbas_vol_info(vol, &vi));
	return vi.reserved / BS;
}

static uint64_t vol_owed(struct vbas_vol *vol)
{
	struct vbas_vol_info vi;
	assert_ok(vbas_vol_info(vol, &vi));
	return vi.owed / BS;
}

static uint64_t vol_mapped(struct vbas_vol *vol)
{
	struct vbas_vol_info vi;
	assert_ok(vbas_vol_info(vol, &vi));
	return vi.mapped / BS;
}

/* Fill the pool through a volume "fill" until a write fails with ENOSPC
 * (a clean one: the pool stays writable). */
static void fill_pool(struct vbas_pool *p, const char *name)
{
	struct vbas_vol *f;
	char buf[BS];
	assert_ok(vbas_vol_create(p, name, 1ull << 30));
	assert_ok(vbas_vol_open(p, name, &f));
	uint64_t b = 0;
	for (;; b++) {
		pattern(buf, b, 9);
		int r = vbas_pwrite(f, buf, BS, b * BS, 0);
		if (r == -ENOSPC)
			break;
		if (r)
			fail_msg("filling: %d: %s", r, vbas_errmsg());
	}
	assert_false(p->broken);
	assert_ok(vbas_flush(p));
	/* Blocks the commit freed can come back: fill again. */
	for (;; b++) {
		pattern(buf, b, 9);
		if (vbas_pwrite(f, buf, BS, b * BS, 0))
			break;
	}
	assert_ok(vbas_vol_close(f));
	struct vbas_pool_info pi;
	assert_ok(vbas_pool_info(p, &pi));
	print_message("# pool filled: %" PRIu64 " blocks available\n", pi.available / BS);
}

static struct vbas_pool *reopen(struct vbas_pool *p, struct vbas_dev *d)
{
	assert_ok(vbas_close(p));
	return open_mem(d, 4u << 20);
}

static void t_reserve_basics(void **state)
{
	(void)state;
	struct vbas_dev *d = mem_pool(16u << 20, BS, 0);
	struct vbas_pool *p = open_mem(d, 4u << 20);
	struct vbas_vol *v, *s;
	struct vbas_pool_info pi0, pi;
	const uint64_t nb = 256;
	uint32_t model[256] = { 0 };
	assert_ok(vbas_vol_create(p, "v", nb * BS));
	assert_ok(vbas_vol_open(p, "v", &v));
	/* Blocks 0..31 written, then holes and single blocks. */
	for (uint64_t b = 0; b < 32; b++)
		wr(v, model, b, 1);
	for (uint64_t b = 40; b < nb; b += 16)
		wr(v, model, b, 1);
	assert_ok(vbas_flush(p));
	uint64_t mapped0 = vol_mapped(v);
	assert_ok(vbas_pool_info(p, &pi0));

	/* Bad inputs: each refused with its error, nothing changed. */
	assert_int_equal(vbas_vol_reserve(v, 0, 0), -EINVAL);
	assert_non_null(strstr(vbas_errmsg(), "length 0"));
	assert_int_equal(vbas_vol_reserve(v, nb * BS, BS), -ERANGE);
	assert_non_null(strstr(vbas_errmsg(), "past the end"));
	assert_int_equal(vbas_vol_reserve(v, BS, nb * BS), -ERANGE);
	assert_int_equal(vbas_vol_reserve(v, UINT64_MAX - 10, 20), -ERANGE);
	assert_int_equal(vbas_vol_unreserve(v, 100, BS), -EINVAL);
	assert_non_null(strstr(vbas_errmsg(), "aligned"));
	assert_int_equal(vbas_vol_unreserve(v, 0, 0), -EINVAL);
	assert_ok(vbas_vol_snapshot(p, "v", "s0", 0));
	assert_ok(vbas_vol_open(p, "s0", &s));
	assert_int_equal(vbas_vol_reserve(s, 0, BS), -EROFS);
	assert_non_null(strstr(vbas_errmsg(), "snapshot"));
	assert_int_equal(vbas_vol_unreserve(s, 0, BS), -EROFS);
	assert_ok(vbas_vol_close(s));
	assert_ok(vbas_vol_delete(p, "s0"));
	assert_int_equal(vol_reserved(v), 0);
	assert_int_equal(vol_mapped(v), mapped0);

	/* More than the pool has: ENOSPC, nothing changed. */
	struct vbas_vol *big;
	assert_ok(vbas_vol_create(p, "big", 64u << 20));
	assert_ok(vbas_vol_open(p, "big", &big));
	assert_int_equal(vbas_vol_reserve(big, 0, 64u << 20), -ENOSPC);
	assert_non_null(strstr(vbas_errmsg(), "the pool is full"));
	assert_int_equal(vol_reserved(big), 0);
	assert_int_equal(vol_mapped(big), 0);
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.reserved, 0);
	assert_int_equal(pi.data_used, pi0.data_used);
	assert_ok(vbas_vol_close(big));
	assert_ok(vbas_vol_delete(p, "big"));

	/* Blocks 16..127 (a partial block at each end rounds out): holes
	 * are backed, written blocks keep their data. */
	assert_ok(vbas_vol_reserve(v, 16 * BS + 100, 112 * BS - 200));
	assert_int_equal(vol_reserved(v), 112);
	uint64_t holes = 0;
	for (uint64_t b = 16; b < 128; b++)
		holes += !model[b];
	assert_int_equal(vol_mapped(v), mapped0 + holes);
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.reserved_ranges, 112 * BS);
	assert_int_equal(pi.reserved_owed, 0);
	assert_true(pi.available < pi0.available);
	verify(v, model, nb, "after reserve");
	/* Again: nothing to do. */
	assert_ok(vbas_vol_reserve(v, 16 * BS, 112 * BS));
	assert_int_equal(vol_reserved(v), 112);
	assert_int_equal(vol_mapped(v), mapped0 + holes);
	assert_check_clean(p);

	/* Survives close and open. */
	assert_ok(vbas_vol_close(v));
	p = reopen(p, d);
	assert_ok(vbas_vol_open(p, "v", &v));
	assert_int_equal(vol_reserved(v), 112);
	assert_check_clean(p);

	/* A discard inside the range zeroes the blocks and keeps them; one
	 * across its end frees what lies outside. */
	uint64_t m1 = vol_mapped(v);
	assert_ok(vbas_discard(v, 20 * BS, 8 * BS, 0));
	for (uint64_t b = 20; b < 28; b++)
		model[b] = 0;
	assert_int_equal(vol_mapped(v), m1);
	assert_ok(vbas_discard(v, 120 * BS, 16 * BS, 0));
	uint64_t freed = 0;
	for (uint64_t b = 128; b < 136; b++)
		freed += !!model[b];
	for (uint64_t b = 120; b < 136; b++)
		model[b] = 0;
	assert_int_equal(vol_mapped(v), m1 - freed);
	assert_ok(vbas_write_zeroes(v, 30 * BS + 10, 3 * BS, 0));
	for (uint64_t b = 31; b < 33; b++)
		model[b] = 0;
	char buf[BS];
	assert_ok(vbas_pread(v, buf, BS, 30 * BS));
	char want[BS];
	pattern(want, 30, model[30]);
	memset(want + 10, 0, BS - 10);
	assert_memory_equal(buf, want, BS);
	model[30] = 0;
	wr(v, model, 30, 3);
	assert_ok(vbas_pread(v, buf, BS, 33 * BS));
	pattern(want, 33, model[33]);
	memset(want, 0, 10);
	assert_memory_equal(buf, want, BS);
	wr(v, model, 33, 3);
	assert_int_equal(vol_reserved(v), 112);
	verify(v, model, nb, "after discards");
	assert_check_clean(p);

	/* The pool fills up; every reserved block can still be written. */
	fill_pool(p, "fill");
	for (uint64_t i = 0; i < 112; i++) {
		uint64_t b = 16 + (i * 37) % 112;
		if (i % 2)
			wr(v, model, b, 4);
		else
			wr_map(p, v, model, b, 4);
	}
	/* Outside the range a hole cannot be. */
	assert_int_equal(vbas_pwrite(v, buf, BS, 200 * BS + BS, 0), -ENOSPC);
	assert_false(p->broken);
	verify(v, model, nb, "full pool, reserved writes");
	assert_check_clean(p);
	assert_ok(vbas_vol_close(v));
	p = reopen(p, d);
	assert_ok(vbas_vol_open(p, "v", &v));
	verify(v, model, nb, "reopened");
	for (uint64_t b = 16; b < 128; b++)
		wr(v, model, b, 5);

	/* Unreserve: the blocks stay with their data; a discard frees them. */
	assert_ok(vbas_vol_unreserve(v, 64 * BS, 64 * BS));
	assert_int_equal(vol_reserved(v), 48);
	uint64_t m2 = vol_mapped(v);
	assert_ok(vbas_discard(v, 64 * BS, 64 * BS, 0));
	assert_int_equal(vol_mapped(v), m2 - 64);
	for (uint64_t b = 64; b < 128; b++)
		model[b] = 0;
	verify(v, model, nb, "after unreserve and discard");
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.reserved_ranges, 48 * BS);
	assert_check_clean(p);

	/* Shrinking the volume through the range drops the blocks past the
	 * end from the count. */
	assert_ok(vbas_vol_close(v));
	assert_ok(vbas_vol_resize(p, "v", 40 * BS));
	assert_ok(vbas_vol_open(p, "v", &v));
	assert_int_equal(vol_reserved(v), 24);
	assert_check_clean(p);
	assert_ok(vbas_vol_close(v));
	assert_ok(vbas_vol_delete(p, "v"));
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.reserved_ranges, 0);
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	dev_destroy(d);
}

/* A thick volume, a snapshot of it, a full pool: every block can still be
 * overwritten (each copy takes one owed block), and the snapshot keeps
 * its data. */
static void t_reserve_snapshot(void **state)
{
	(void)state;
	struct vbas_dev *d = mem_pool(16u << 20, BS, 0);
	struct vbas_pool *p = open_mem(d, 4u << 20);
	struct vbas_vol *v, *s, *c;
	struct vbas_pool_info pi;
	const uint64_t nb = 512;
	static uint32_t model[512], old[512], cm[512];
	memset(model, 0, sizeof(model));
	assert_ok(vbas_vol_create(p, "v", nb * BS));
	assert_ok(vbas_vol_open(p, "v", &v));
	assert_ok(vbas_vol_reserve(v, 0, nb * BS));
	assert_int_equal(vol_reserved(v), nb);
	for (uint64_t b = 0; b < nb; b += 3)
		wr(v, model, b, 1);
	assert_ok(vbas_flush(p));

	/* The snapshot sets aside a copy of every reserved block. */
	assert_ok(vbas_vol_snapshot(p, "v", "s", 0));
	assert_int_equal(vol_owed(v), nb);
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.reserved_owed, nb * BS);
	memcpy(old, model, sizeof(old));
	assert_ok(vbas_vol_open(p, "s", &s));
	assert_int_equal(vol_reserved(s), nb);
	assert_int_equal(vol_owed(s), 0);
	assert_check_clean(p);

	/* A clone would need as many again; with the pool full, it is
	 * refused, nothing changed, unless it gives up the guarantee. */
	fill_pool(p, "fill");
	uint64_t nvol = 0;
	assert_ok(vbas_pool_info(p, &pi));
	nvol = pi.volumes;
	assert_int_equal(vbas_vol_snapshot(p, "v", "c", VBAS_SNAP_WRITABLE), -ENOSPC);
	assert_non_null(strstr(vbas_errmsg(), "--no-reserve"));
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.volumes, nvol);
	assert_int_equal(vol_owed(v), nb);
	assert_ok(vbas_vol_snapshot(p, "v", "c", VBAS_SNAP_WRITABLE | VBAS_SNAP_NORESERVE));
	assert_ok(vbas_vol_open(p, "c", &c));
	assert_int_equal(vol_owed(c), 0);
	assert_int_equal(vol_reserved(c), nb);
	memcpy(cm, model, sizeof(cm));

	/* Every block of v overwritten, in an order that splits extents. */
	for (uint64_t i = 0; i < nb; i++) {
		uint64_t b = (i * 37) % nb;
		if (i % 2)
			wr(v, model, b, 2);
		else
			wr_map(p, v, model, b, 2);
	}
	assert_int_equal(vol_owed(v), 0);
	assert_false(p->broken);
	verify(v, model, nb, "the thick volume");
	verify(s, old, nb, "its snapshot");
	verify(c, cm, nb, "its clone");
	/* The clone holds no copies: its writes run out, with a clean
	 * ENOSPC (the room left is far below its size). */
	char buf[BS];
	uint64_t cw = 0;
	for (; cw < nb; cw++) {
		pattern(buf, cw, 3);
		int r = vbas_pwrite(c, buf, BS, cw * BS, 0);
		if (r == -ENOSPC)
			break;
		assert_ok(r);
		cm[cw] = 3;
	}
	assert_true(cw < nb);
	assert_false(p->broken);
	verify(c, cm, nb, "the clone, written until ENOSPC");
	assert_check_clean(p);
	assert_ok(vbas_vol_close(c));
	assert_ok(vbas_vol_delete(p, "c"));

	/* A second snapshot; deleting it gives the owed blocks back. */
	assert_ok(vbas_vol_close(s));
	assert_ok(vbas_vol_delete(p, "s"));
	assert_ok(vbas_vol_delete(p, "fill"));
	assert_ok(vbas_flush(p));
	assert_ok(vbas_vol_snapshot(p, "v", "s2", 0));
	assert_int_equal(vol_owed(v), nb);
	for (uint64_t b = 0; b < 10; b++)
		wr(v, model, b, 3);
	assert_int_equal(vol_owed(v), nb - 10);
	assert_ok(vbas_vol_delete(p, "s2"));
	assert_int_equal(vol_owed(v), 0);
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.reserved_owed, 0);
	assert_check_clean(p);

	/* Owed blocks survive a reopen. */
	assert_ok(vbas_vol_snapshot(p, "v", "s3", 0));
	assert_ok(vbas_vol_close(v));
	p = reopen(p, d);
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.reserved_owed, nb * BS);
	assert_int_equal(pi.reserved_ranges, nb * BS);
	assert_ok(vbas_vol_open(p, "v", &v));
	memcpy(old, model, sizeof(old));
	fill_pool(p, "fill2");
	for (uint64_t b = 0; b < nb; b++)
		wr(v, model, b, 4);
	verify(v, model, nb, "after reopen");
	assert_ok(vbas_vol_open(p, "s3", &s));
	verify(s, old, nb, "s3");
	assert_ok(vbas_vol_close(s));
	assert_check_clean(p);
	assert_ok(vbas_vol_close(v));
	assert_ok(vbas_close(p));
	dev_destroy(d);
}

/* Reflink into and out of reserved ranges. */
static void t_reserve_reflink(void **state)
{
	(void)state;
	struct vbas_dev *d = mem_pool(16u << 20, BS, 0);
	struct vbas_pool *p = open_mem(d, 4u << 20);
	struct vbas_vol *a, *b;
	const uint64_t nb = 128;
	static uint32_t ma[128], mb[128];
	memset(ma, 0, sizeof(ma));
	memset(mb, 0, sizeof(mb));
	assert_ok(vbas_vol_create(p, "a", nb * BS));
	assert_ok(vbas_vol_create(p, "b", nb * BS));
	assert_ok(vbas_vol_open(p, "a", &a));
	assert_ok(vbas_vol_open(p, "b", &b));
	for (uint64_t x = 0; x < nb; x++)
		wr(a, ma, x, 1);
	assert_ok(vbas_vol_reserve(a, 0, 64 * BS));
	assert_ok(vbas_vol_reserve(b, 32 * BS, 64 * BS));
	/* a's 16..79 (48 reserved) onto b's 16..79 (48 reserved, from 32). */
	assert_ok(vbas_reflink(a, 16 * BS, b, 16 * BS, 64 * BS));
	for (uint64_t x = 16; x < 80; x++)
		mb[x] = ma[x];
	/* b's reserved blocks: 32..79 got a's blocks and stay reserved,
	 * 80..95 untouched. */
	assert_int_equal(vol_reserved(b), 64);
	assert_int_equal(vol_owed(b), 48);
	assert_int_equal(vol_owed(a), 48);
	verify(b, mb, nb, "b after reflink");
	assert_check_clean(p);
	fill_pool(p, "fill");
	for (uint64_t x = 0; x < 64; x++)
		wr(a, ma, x, 2);
	for (uint64_t x = 32; x < 96; x++)
		wr(b, mb, x, 2);
	assert_false(p->broken);
	verify(a, ma, nb, "a");
	verify(b, mb, nb, "b");
	assert_check_clean(p);
	assert_ok(vbas_vol_close(a));
	assert_ok(vbas_vol_close(b));
	assert_ok(vbas_close(p));
	dev_destroy(d);
}

/* A pool of format 3 opens, stays 3 until its first reservation, and is 4
 * from then on. */
static void t_format3_upgrade(void **state)
{
	(void)state;
	struct vbas_dev *d = mem_pool(8u << 20, BS, 0);
	struct vbas_sb sb;
	uint8_t *img = vbas_memdev_image(d);
	for (int slot = 0; slot < 2; slot++) {
		memcpy(&sb, img + slot * BS, sizeof(sb));
		if (le32_get(sb.magic) != VBAS_SB_MAGIC)
			continue;
		sb.version = le32_mk(3);
		sb.flags = le32_mk(0);      /* format 3 knew no reverse map */
		sb.csum = le32_mk(sb_csum(&sb));
		memcpy(img + slot * BS, &sb, sizeof(sb));
	}
	struct vbas_pool *p = open_mem(d, 1u << 20);
	struct vbas_vol *v;
	assert_ok(vbas_vol_create(p, "v", 64 * BS));
	assert_ok(vbas_flush(p));
	assert_int_equal(le32_get(p->sb.version), 3);
	assert_ok(vbas_vol_open(p, "v", &v));
	assert_ok(vbas_vol_reserve(v, 0, 8 * BS));
	assert_ok(vbas_flush(p));
	assert_int_equal(le32_get(p->sb.version), 4);
	assert_ok(vbas_vol_close(v));
	p = reopen(p, d);
	assert_int_equal(le32_get(p->sb.version), 4);
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	/* A version from the future is refused. */
	for (int slot = 0; slot < 2; slot++) {
		memcpy(&sb, img + slot * BS, sizeof(sb));
		sb.version = le32_mk(VBAS_FORMAT_VERSION + 1);
		sb.csum = le32_mk(sb_csum(&sb));
		memcpy(img + slot * BS, &sb, sizeof(sb));
	}
	struct vbas_open_opts oo = { 0 };
	assert_int_not_equal(vbas_open_dev(d, &oo, &p), 0);
	dev_destroy(d);
}

static void collect(const char *msg, void *arg)
{
	char *all = arg;
	strncat(all, msg, 4095 - strlen(all));
}

/* A damaged pool whose volumes owe more blocks than are free (written
 * behind the library's back) opens, reads and deletes; check names it. */
static void t_owed_past_free(void **state)
{
	(void)state;
	struct vbas_dev *d = mem_pool(8u << 20, BS, 0);
	struct vbas_pool *p = open_mem(d, 1u << 20);
	struct vbas_vol *v;
	static uint32_t model[512];
	memset(model, 0, sizeof(model));
	assert_ok(vbas_vol_create(p, "v", 512 * BS));
	assert_ok(vbas_vol_create(p, "w", 512 * BS));
	assert_ok(vbas_vol_open(p, "v", &v));
	assert_ok(vbas_vol_reserve(v, 0, 512 * BS));
	for (uint64_t b = 0; b < 512; b += 5)
		wr(v, model, b, 1);
	assert_ok(vbas_vol_close(v));
	assert_ok(vbas_vol_open(p, "w", &v));
	assert_ok(vbas_vol_reserve(v, 0, 512 * BS));
	assert_ok(vbas_vol_close(v));
	/* Both owe all their blocks: 1024, where about 900 are free. */
	for (uint64_t id = 1; id <= 2; id++) {
		struct vbas_vol_rec rec;
		assert_ok(vol_get(p, id, &rec));
		rec.owed = rec.resv_blocks;
		assert_ok(vol_put(p, id, &rec));
	}
	assert_ok(vbas_flush(p));
	p = reopen(p, d);
	struct vbas_pool_info pi;
	assert_ok(vbas_pool_info(p, &pi));
	assert_true(pi.reserved_owed < pi.free);
	static char all[4096];
	all[0] = 0;
	struct vbas_check_stats st;
	assert_int_not_equal(vbas_check(p, collect, all, &st), 0);
	assert_non_null(strstr(all, "volumes owe 1024 blocks"));
	assert_ok(vbas_vol_open(p, "v", &v));
	verify(v, model, 512, "a pool whose volumes owe too much");
	assert_ok(vbas_vol_close(v));
	assert_ok(vbas_vol_delete(p, "w"));
	assert_ok(vbas_vol_delete(p, "v"));
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	dev_destroy(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_reserve_basics),
		cmocka_unit_test(t_reserve_snapshot),
		cmocka_unit_test(t_reserve_reflink),
		cmocka_unit_test(t_format3_upgrade),
		cmocka_unit_test(t_owed_past_free),
	};
	return RUN("prealloc", tests);
}
