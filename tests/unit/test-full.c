/* A full pool stays usable (issue: space guarantees).
 *
 * The scenario of the report: fill a pool with random one-block writes
 * until ENOSPC, take a snapshot, then discard every other block of the
 * origin (fstrim after the snapshot).  Every discard under the snapshot
 * copies mapping leaves and splits refcount records without freeing a
 * block, so sooner or later there is no room for more; what must happen
 * then is a clean ENOSPC: the pool stays writable, nothing committed or
 * uncommitted is rolled back, and deleting the snapshot (which frees
 * what the discards could not) works and lets the discards finish. */
#include "common.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

/* The contents of logical block LBLK at version V (0: never written). */
static void pattern(void *buf, uint32_t bs, uint64_t lblk, uint32_t v)
{
	if (!v) {
		memset(buf, 0, bs);
		return;
	}
	struct rng r = { .s = lblk * 1000003u + v };
	rng_fill(&r, buf, bs);
}

/* Every block of VOL reads as MODEL says. */
static void verify_vol(struct vbas_vol *vol, uint32_t bs, const uint32_t *model, uint64_t n,
		       const char *what)
{
	char *got = malloc(bs), *want = malloc(bs);
	assert_non_null(got);
	assert_non_null(want);
	for (uint64_t b = 0; b < n; b++) {
		int r = vbas_pread(vol, got, bs, b * bs);
		if (r)
			fail_msg("%s: read of block %" PRIu64 ": %d: %s", what, b, r, vbas_errmsg());
		pattern(want, bs, b, model[b]);
		if (memcmp(got, want, bs))
			fail_msg("%s: block %" PRIu64 " (version %u) reads other bytes", what, b,
				 model[b]);
	}
	free(got);
	free(want);
}

/* The metadata reserve is at its cap, a quarter of the pool, and so may be
 * smaller than the bound on the refcount tree's churn (five or eight
 * records a node make a refcount tree a third of a small pool). */
static int reserve_capped(struct vbas_pool *p)
{
	return p->sp.meta_reserve == (p->nblocks - VBAS_FIRST_BLOCK) / 4;
}

/* A discard of a block only VOL holds (it frees it): 0, or -ENOSPC only
 * where the metadata reserve is at its cap; never a read-only pool. */
static int freeing_discard(struct vbas_pool *p, struct vbas_vol *vol, uint64_t b, uint32_t bs,
			   uint64_t *refused)
{
	int r = vbas_discard(vol, b * bs, bs, 0);
	if (r == -ENOSPC && reserve_capped(p) && !p->broken) {
		(*refused)++;
		return r;
	}
	if (r)
		fail_msg("discard of block %" PRIu64 " (it frees it): %d: %s", b, r, vbas_errmsg());
	return 0;
}

struct fullcase {
	uint64_t pool;
	uint32_t bs, fanout;
	uint64_t slack;    /* blocks discarded before the snapshot */
};

static void trim_under_snapshot(const struct fullcase *c)
{
	struct vbas_dev *d = mem_pool(c->pool, c->bs, c->fanout);
	struct vbas_pool *p = open_mem(d, 4u << 20);
	struct vbas_vol *vol;
	struct rng rng = { .s = test_seed(12) ^ c->pool ^ c->bs };
	uint32_t bs = c->bs;
	uint64_t n = c->pool / bs;     /* the volume: as large as the pool */
	uint32_t *model = calloc(n, sizeof(*model)), *snap = calloc(n, sizeof(*snap));
	char *buf = malloc(bs);
	assert_non_null(model);
	assert_non_null(snap);
	assert_non_null(buf);
	assert_ok(vbas_vol_create(p, "origin", n * bs));
	assert_ok(vbas_vol_open(p, "origin", &vol));

	/* Random one-block writes until the pool is full. */
	uint64_t writes = 0;
	for (;;) {
		uint64_t b = rng_below(&rng, n);
		pattern(buf, bs, b, model[b] + 1);
		int r = vbas_pwrite(vol, buf, bs, b * bs, 0);
		if (r == -ENOSPC)
			break;
		if (r)
			fail_msg("write %" PRIu64 ": %d: %s", writes, r, vbas_errmsg());
		model[b]++;
		writes++;
	}
	/* Some room, so that the discards under the snapshot run for a
	 * while before they find none: the bounds they hold are tried
	 * against what the steps really take. */
	uint64_t freed = 0, refused = 0;
	for (uint64_t b = 0; b < n && freed < c->slack; b++) {
		if (!model[b] || b % 3)
			continue;
		if (freeing_discard(p, vol, b, bs, &refused))
			continue;
		model[b] = 0;
		freed++;
	}
	assert_ok(vbas_flush(p));
	memcpy(snap, model, n * sizeof(*model));
	int r = vbas_vol_snapshot(p, "origin", "snap", 0);
	int have_snap = r == 0;
	if (r == -ENOSPC && reserve_capped(p) && !p->broken)
		print_message("# the snapshot is refused: the reserve is at its cap (%s)\n",
			      vbas_errmsg());
	else if (r)
		fail_msg("snapshot: %d: %s", r, vbas_errmsg());

	/* fstrim: every other written block of the origin, in order. */
	uint64_t ok = 0, nospc = 0, b, first_fail = n;
	for (b = 0; b < n && have_snap; b++) {
		if (!model[b] || b % 2)
			continue;
		r = vbas_discard(vol, b * bs, bs, 0);
		if (r == -ENOSPC) {
			print_message("# %s\n", vbas_errmsg());
			nospc++;
			first_fail = b;
			break;
		}
		if (r)
			fail_msg("discard of block %" PRIu64 " after %" PRIu64 " discards: %d: %s",
				 b, ok, r, vbas_errmsg());
		model[b] = 0;
		ok++;
	}
	print_message("# %" PRIu64 " MiB pool, %u-byte blocks: %" PRIu64 " writes filled it, "
		      "%" PRIu64 " blocks discarded; %" PRIu64 " discards under the snapshot, then %s\n",
		      c->pool >> 20, bs, writes, freed, ok, nospc ? "ENOSPC" : "none refused");
	/* Whatever happened, the pool is writable and nothing was rolled
	 * back: a flush commits, the data is as the model says. */
	assert_ok(vbas_flush(p));
	verify_vol(vol, bs, model, n, "origin after the discards");
	struct vbas_vol *sv;
	if (have_snap) {
		assert_ok(vbas_vol_open(p, "snap", &sv));
		verify_vol(sv, bs, snap, n, "snapshot after the discards");
		assert_ok(vbas_vol_close(sv));
		/* Deleting the snapshot frees what the discards could not ... */
		r = vbas_vol_delete(p, "snap");
		if (r)
			fail_msg("delete of the snapshot (%" PRIu64 " discards done, %" PRIu64
				 " refused): %d: %s", ok, nospc, r, vbas_errmsg());
	}
	assert_ok(vbas_flush(p));
	/* ... and the rest of the discards go through. */
	for (b = first_fail; b < n; b++) {
		if (!model[b] || b % 2)
			continue;
		if (!freeing_discard(p, vol, b, bs, &refused))
			model[b] = 0;
	}
	if (refused)
		print_message("# %" PRIu64 " discards that free refused: the reserve is at its cap\n",
			      refused);
	assert_ok(vbas_flush(p));
	verify_vol(vol, bs, model, n, "origin at the end");
	assert_check_clean(p);
	assert_ok(vbas_vol_close(vol));
	assert_ok(vbas_close(p));

	/* The same after a reopen. */
	p = open_mem(d, 4u << 20);
	assert_ok(vbas_vol_open(p, "origin", &vol));
	verify_vol(vol, bs, model, n, "origin after a reopen");
	assert_check_clean(p);
	assert_ok(vbas_vol_close(vol));
	assert_ok(vbas_close(p));
	dev_destroy(d);
	free(model);
	free(snap);
	free(buf);
}

static void t_trim_32m_4k(void **state)
{
	(void)state;
	trim_under_snapshot(&(struct fullcase){ 32u << 20, 4096, 0, 0 });
}

static void t_trim_32m_4k_slack(void **state)
{
	(void)state;
	trim_under_snapshot(&(struct fullcase){ 32u << 20, 4096, 0, 400 });
}

static void t_trim_16m_4k_fanout8(void **state)
{
	(void)state;
	trim_under_snapshot(&(struct fullcase){ 16u << 20, 4096, 8, 0 });
}

static void t_trim_16m_4k_fanout8_slack(void **state)
{
	(void)state;
	trim_under_snapshot(&(struct fullcase){ 16u << 20, 4096, 8, 150 });
}

static void t_trim_16m_8k_slack(void **state)
{
	(void)state;
	trim_under_snapshot(&(struct fullcase){ 16u << 20, 8192, 0, 200 });
}

static void t_trim_64m_64k(void **state)
{
	(void)state;
	trim_under_snapshot(&(struct fullcase){ 64u << 20, 65536, 0, 0 });
}

static void t_trim_64m_64k_slack(void **state)
{
	(void)state;
	trim_under_snapshot(&(struct fullcase){ 64u << 20, 65536, 0, 60 });
}

/* A delete that runs out of room part way (a pin keeps what it frees
 * from coming back, as while vbas check reads a served pool) stops with
 * ENOSPC: the pool stays writable, the volume is gone from the list, and
 * the next delete finishes it once room is back. */
static int count_vols(const struct vbas_vol_info *vi, void *arg)
{
	(void)vi;
	(*(int *)arg)++;
	return 0;
}

static void t_delete_stops_and_resumes(void **state)
{
	(void)state;
	const uint32_t bs = 4096;
	struct vbas_dev *d = mem_pool(8u << 20, bs, 8);
	struct vbas_pool *p = open_mem(d, 1u << 20);
	struct vbas_vol *vol;
	struct rng rng = { .s = test_seed(5) };
	uint64_t n = 4096, writes = 0, gen;
	char *buf = malloc(bs);
	assert_non_null(buf);
	assert_ok(vbas_vol_create(p, "big", n * bs));
	assert_ok(vbas_vol_create(p, "small", bs));
	assert_ok(vbas_vol_open(p, "big", &vol));
	for (;;) {
		uint64_t b = rng_below(&rng, n);
		rng_fill(&rng, buf, bs);
		int r = vbas_pwrite(vol, buf, bs, b * bs, 0);
		if (r == -ENOSPC)
			break;
		assert_ok(r);
		writes++;
	}
	assert_ok(vbas_vol_close(vol));
	assert_ok(vbas_flush(p));
	assert_ok(vbas_pool_pin(p, &gen));
	uint64_t budget = vbas_tun.drop_budget;
	vbas_tun.drop_budget = 4;
	int r = vbas_vol_delete(p, "big");
	vbas_tun.drop_budget = budget;
	print_message("# %" PRIu64 " writes filled the pool; the pinned delete: %s\n", writes,
		      r ? vbas_errmsg() : "done");
	assert_int_equal(r, -ENOSPC);
	assert_non_null(strstr(vbas_errmsg(), "stopped part way"));
	assert_false(p->broken);
	assert_ok(vbas_flush(p));
	int nv = 0;
	assert_ok(vbas_vol_list(p, count_vols, &nv));
	assert_int_equal(nv, 1);
	assert_int_equal(vbas_vol_open(p, "big", &vol), -ENOENT);
	assert_check_clean(p);
	vbas_pool_unpin(p);
	/* The next delete finishes the stopped one first. */
	assert_ok(vbas_vol_delete(p, "small"));
	assert_ok(vbas_flush(p));
	struct vbas_pool_info pi;
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.data_used, 0);
	assert_int_equal(pi.volumes, 0);
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	dev_destroy(d);
	free(buf);
}

/* Writes with a reservation on a tight pool (the report: fill the pool,
 * free 1,001 scattered blocks, reserve 1,002, then 1,001 one-block writes
 * through vbas_map_begin with the reservation: 15 failed with ENOSPC,
 * because the metadata of the writes was taken out of the reservation's
 * data blocks).  A reservation now holds a metadata allowance besides its
 * data, so one of 1,002 does not fit any more: the pool says so at
 * reservation time.  The largest reservation it grants must cover every
 * one of its writes, without drawing on the metadata reserve
 * (meta_short), and must not be far below the free blocks (what the
 * allowance over-reserves, printed). */
static void reserved_writes(uint64_t pool, uint32_t bs, uint32_t fanout, uint64_t nfree)
{
	struct vbas_dev *d = mem_pool(pool, bs, fanout);
	struct vbas_pool *p = open_mem(d, 4u << 20);
	struct vbas_vol *vol;
	uint64_t n = 2 * pool / bs;    /* every other block written fills it */
	uint32_t *model = calloc(n, sizeof(*model));
	char *buf = NULL;
	assert_non_null(model);
	assert_int_equal(posix_memalign((void **)&buf, 4096, bs), 0);
	assert_ok(vbas_vol_create(p, "v", n * bs));
	assert_ok(vbas_vol_open(p, "v", &vol));
	/* Fill it, every other block (one extent each: no merging). */
	uint64_t b;
	for (b = 0; b < n; b += 2) {
		pattern(buf, bs, b, 1);
		int r = vbas_pwrite(vol, buf, bs, b * bs, 0);
		if (r == -ENOSPC)
			break;
		assert_ok(r);
		model[b] = 1;
	}
	uint64_t filled = b;
	assert_true(filled < n);
	/* Free NFREE scattered blocks. */
	uint64_t freed = 0;
	for (b = 0; b < filled && freed < nfree; b += 6) {
		assert_ok(vbas_discard(vol, b * bs, bs, 0));
		model[b] = 0;
		freed++;
	}
	assert_int_equal(freed, nfree);
	assert_ok(vbas_flush(p));
	struct vbas_resv *rv;
	/* More than is free: refused at reservation time, saying why. */
	int r = vbas_reserve(p, nfree + 1, &rv);
	if (r != -ENOSPC)
		fail_msg("reserve of %" PRIu64 " blocks with %" PRIu64 " free: %d, not ENOSPC",
			 nfree + 1, nfree, r);
	assert_non_null(strstr(vbas_errmsg(), "for the metadata their writes may take"));
	/* The largest reservation the pool grants. */
	uint64_t lo = 0, hi = nfree + 1;
	while (hi - lo > 1) {
		uint64_t mid = lo + (hi - lo) / 2;
		r = vbas_reserve(p, mid, &rv);
		if (r == -ENOSPC) {
			hi = mid;
			continue;
		}
		assert_ok(r);
		vbas_resv_put(rv);
		lo = mid;
	}
	uint64_t k = lo;
	struct vbas_pool_info pi;
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.reserved, 0);
	assert_int_equal(pi.reserved_metadata, 0);
	assert_ok(vbas_reserve(p, k, &rv));
	assert_ok(vbas_pool_info(p, &pi));
	struct vbas_resv_stats st0;
	assert_ok(vbas_resv_stats(rv, &st0));
	assert_int_equal(st0.data_left, k);
	assert_int_equal(pi.reserved_metadata, st0.meta_held * bs);
	assert_int_equal(pi.reserved, (k + st0.meta_held) * bs);
	/* What the writes of K blocks may take besides: not more than a
	 * third of them, on these trees (every block its own extent: a
	 * mapping record, up to two refcount records and two reverse-map
	 * records each, at worst). */
	if (k < nfree * 3 / 4)
		fail_msg("a reservation of %" PRIu64 " blocks of %" PRIu64 " free: it holds %" PRIu64
			 " for metadata", k, nfree, st0.meta_held);
	/* Nothing else fits beside it. */
	struct vbas_resv *rv2;
	assert_int_equal(vbas_reserve(p, 1, &rv2), -ENOSPC);
	/* Write K single blocks into the holes, through the mapping
	 * interface, every one with the reservation. */
	uint64_t done = 0;
	for (b = 0; b < filled && done < k; b += 6) {
		struct vbas_iomap m;
		pattern(buf, bs, b, 2);
		r = vbas_map_begin(vol, b * bs, bs, VBAS_MAP_WRITE, rv, &m);
		if (r)
			fail_msg("reserved write %" PRIu64 " of %" PRIu64 " (block %" PRIu64 "): %d: %s",
				 done + 1, k, b, r, vbas_errmsg());
		assert_int_equal(m.type, VBAS_IOMAP_NEW);
		assert_int_equal(m.length, bs);
		assert_ok(dev_pwrite(p->dev, buf, bs, m.physical));   /* memory device */
		r = vbas_map_end(vol, &m, bs, 0);
		if (r)
			fail_msg("map_end of reserved write %" PRIu64 ": %d: %s", done + 1, r,
				 vbas_errmsg());
		model[b] = 2;
		done++;
	}
	struct vbas_resv_stats st;
	assert_ok(vbas_resv_stats(rv, &st));
	assert_int_equal(st.data_left, 0);
	assert_int_equal(st.data_used, k);
	assert_int_equal(st.meta_held, 0);   /* nothing left to write: all back */
	assert_int_equal(st.meta_short, 0);
	print_message("# %" PRIu64 " MiB pool, %u-byte blocks: %" PRIu64 " free, reservation of %"
		      PRIu64 " granted with %" PRIu64 " metadata blocks; its writes took %" PRIu64
		      " (%" PRIu64 " held in all, with top-ups)\n", pool >> 20, bs, nfree, k,
		      st0.meta_held, st.meta_used, st.meta_granted);
	vbas_resv_put(rv);
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.reserved, 0);
	/* The pool's figures since open: this reservation's, and the
	 * binary search's (granted, never used). */
	assert_true(pi.reserved_metadata_granted >= st.meta_granted * bs);
	assert_int_equal(pi.reserved_metadata_used, st.meta_used * bs);
	assert_ok(vbas_flush(p));
	verify_vol(vol, bs, model, n, "after the reserved writes");
	assert_check_clean(p);
	assert_ok(vbas_vol_close(vol));
	assert_ok(vbas_close(p));
	dev_destroy(d);
	free(model);
	free(buf);
}

static void t_reserved_writes_16m_4k(void **state)
{
	(void)state;
	reserved_writes(16u << 20, 4096, 0, 600);
}

static void t_reserved_writes_32m_4k(void **state)
{
	(void)state;
	reserved_writes(32u << 20, 4096, 0, 1001);
}

static void t_reserved_writes_64m_64k(void **state)
{
	(void)state;
	reserved_writes(64u << 20, 65536, 0, 150);
}

/* vbas_reserve_range counts what a write of the range needs now: a block
 * for every hole and every block a snapshot shares, no more; every write
 * in it then succeeds with a pool that has nothing else free; its bad
 * inputs are refused with specific errors, holding nothing; and its
 * references keep it until the last put. */
static void t_reserve_range(void **state)
{
	(void)state;
	const uint32_t bs = 4096;
	struct vbas_dev *d = mem_pool(16u << 20, bs, 0);
	struct vbas_pool *p = open_mem(d, 4u << 20);
	struct vbas_vol *vol, *snap, *fill;
	struct vbas_resv *rv = NULL;
	struct vbas_pool_info pi;
	char *buf = malloc(bs);
	assert_non_null(buf);
	const uint64_t nb = 64;
	uint32_t model[64] = { 0 };
	assert_ok(vbas_vol_create(p, "v", nb * bs));
	assert_ok(vbas_vol_open(p, "v", &vol));
	/* Blocks 0..15 written, 16..31 holes, 32..47 written, 48..63 holes. */
	for (uint64_t b = 0; b < nb; b++) {
		if ((b / 16) % 2)
			continue;
		pattern(buf, bs, b, 1);
		assert_ok(vbas_pwrite(vol, buf, bs, b * bs, 0));
		model[b] = 1;
	}
	assert_ok(vbas_flush(p));

	/* Bad inputs: each refused, nothing held. */
	assert_int_equal(vbas_reserve_range(vol, 0, 0, &rv), -EINVAL);
	assert_non_null(strstr(vbas_errmsg(), "length 0"));
	assert_int_equal(vbas_reserve_range(vol, nb * bs, bs, &rv), -ERANGE);
	assert_non_null(strstr(vbas_errmsg(), "past the end"));
	assert_int_equal(vbas_reserve_range(vol, bs, nb * bs, &rv), -ERANGE);
	assert_int_equal(vbas_reserve_range(vol, UINT64_MAX - 10, 20, &rv), -ERANGE);
	assert_int_equal(vbas_reserve_range(vol, 0, bs, NULL), -EINVAL);
	assert_int_equal(vbas_reserve(p, 1, NULL), -EINVAL);
	assert_non_null(strstr(vbas_errmsg(), "no place for the reservation"));
	struct vbas_resv_stats st;
	assert_int_equal(vbas_resv_stats(NULL, &st), -EINVAL);
	assert_null(rv);
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.reserved, 0);

	/* Before any snapshot: the holes only; a partial block counts whole. */
	assert_ok(vbas_reserve_range(vol, 8 * bs + 100, 16 * bs, &rv));
	assert_ok(vbas_resv_stats(rv, &st));
	assert_int_equal(st.data_left, 16 - 8 + 1);   /* blocks 16..24 of 8..24 */
	assert_true(st.meta_held > 0);
	assert_int_equal(vbas_resv_stats(rv, NULL), -EINVAL);
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.reserved, (st.data_left + st.meta_held) * bs);
	assert_int_equal(pi.reserved_metadata, st.meta_held * bs);
	/* A second reference keeps it past the first put. */
	vbas_resv_get(rv);
	vbas_resv_put(rv);
	assert_int_equal(vbas_resv_remaining(rv), 9);
	vbas_resv_put(rv);
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.reserved, 0);
	assert_int_equal(pi.reserved_metadata, 0);

	/* After a snapshot every written block is shared: the whole range. */
	assert_ok(vbas_vol_snapshot(p, "v", "s", 0));
	assert_ok(vbas_flush(p));
	assert_ok(vbas_vol_open(p, "s", &snap));
	assert_int_equal(vbas_reserve_range(snap, 0, bs, &rv), -EROFS);
	assert_non_null(strstr(vbas_errmsg(), "snapshot"));
	assert_ok(vbas_reserve_range(vol, 0, nb * bs, &rv));
	assert_ok(vbas_resv_stats(rv, &st));
	assert_int_equal(st.data_left, nb);

	/* Another volume takes everything else the pool has. */
	assert_ok(vbas_vol_create(p, "fill", 64u << 20));
	assert_ok(vbas_vol_open(p, "fill", &fill));
	uint64_t fb = 0;
	for (;; fb++) {
		pattern(buf, bs, fb, 7);
		int r = vbas_pwrite(fill, buf, bs, fb * bs, 0);
		if (r == -ENOSPC)
			break;
		assert_ok(r);
	}
	assert_true(fb > 1000);
	assert_ok(vbas_flush(p));
	struct vbas_resv *rv2;
	assert_int_equal(vbas_reserve(p, 1, &rv2), -ENOSPC);
	assert_int_equal(vbas_reserve_range(vol, 16 * bs, bs, &rv2), -ENOSPC);
	assert_non_null(strstr(vbas_errmsg(), "the pool is full"));

	/* Every block of the range written, one map_begin at a time, in an
	 * order that splits extents: none fails, and the data is exact. */
	for (uint64_t i = 0; i < nb; i++) {
		uint64_t b = (i * 37) % nb;
		struct vbas_iomap m;
		pattern(buf, bs, b, 2);
		int r = vbas_map_begin(vol, b * bs, bs, VBAS_MAP_WRITE, rv, &m);
		if (r)
			fail_msg("write %" PRIu64 " (block %" PRIu64 ") inside the reservation: %d: %s",
				 i, b, r, vbas_errmsg());
		assert_int_equal(m.type, VBAS_IOMAP_NEW);
		assert_ok(dev_pwrite(p->dev, buf, bs, m.physical));
		assert_ok(vbas_map_end(vol, &m, bs, 0));
		model[b] = 2;
	}
	assert_ok(vbas_resv_stats(rv, &st));
	assert_int_equal(st.data_left, 0);
	assert_int_equal(st.data_used, nb);
	assert_int_equal(st.meta_short, 0);
	assert_int_equal(st.meta_held, 0);
	print_message("# reserve_range of %" PRIu64 " shared blocks: %" PRIu64 " metadata blocks "
		      "held in all, %" PRIu64 " used\n", nb, st.meta_granted, st.meta_used);
	vbas_resv_put(rv);
	assert_ok(vbas_flush(p));
	verify_vol(vol, bs, model, nb, "after the reserved writes");
	uint32_t old[64];
	for (uint64_t b = 0; b < nb; b++)
		old[b] = ((b / 16) % 2) ? 0 : 1;
	verify_vol(snap, bs, old, nb, "the snapshot");
	vbas_vol_close(fill);
	vbas_vol_close(snap);
	vbas_vol_close(vol);
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	dev_destroy(d);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_reserve_range),
		cmocka_unit_test(t_reserved_writes_16m_4k),
		cmocka_unit_test(t_reserved_writes_32m_4k),
		cmocka_unit_test(t_reserved_writes_64m_64k),
		cmocka_unit_test(t_delete_stops_and_resumes),
		cmocka_unit_test(t_trim_32m_4k),
		cmocka_unit_test(t_trim_32m_4k_slack),
		cmocka_unit_test(t_trim_16m_4k_fanout8),
		cmocka_unit_test(t_trim_16m_4k_fanout8_slack),
		cmocka_unit_test(t_trim_16m_8k_slack),
		cmocka_unit_test(t_trim_64m_64k),
		cmocka_unit_test(t_trim_64m_64k_slack),
	};
	return RUN("full", tests);
}
