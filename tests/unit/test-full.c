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
 * because the metadata of the writes was taken out of the reservation).
 * Their metadata now comes from the half of the metadata reserve that
 * growing changes may use first; these sizes pass, and failed before (16
 * MiB: write 592 of 600).  At 32 MiB and 1,001 writes some steps still
 * find that half short and draw on the reservation (docs/design.md,
 * "Known limits"). */
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
	int r = vbas_reserve(p, nfree + 1, &rv);
	if (r)
		fail_msg("reserve of %" PRIu64 " blocks: %d: %s", nfree + 1, r, vbas_errmsg());
	/* Write NFREE single blocks into the holes, through the mapping
	 * interface, every one with the reservation. */
	uint64_t done = 0;
	for (b = 0; b < filled && done < nfree; b += 6) {
		struct vbas_iomap m;
		pattern(buf, bs, b, 2);
		r = vbas_map_begin(vol, b * bs, bs, VBAS_MAP_WRITE, rv, &m);
		if (r)
			fail_msg("reserved write %" PRIu64 " of %" PRIu64 " (block %" PRIu64 "): %d: %s",
				 done + 1, nfree, b, r, vbas_errmsg());
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
	assert_true(vbas_resv_remaining(rv) <= 1);
	vbas_resv_put(rv);
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

static void t_reserved_writes_64m_64k(void **state)
{
	(void)state;
	reserved_writes(64u << 20, 65536, 0, 150);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_reserved_writes_16m_4k),
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
