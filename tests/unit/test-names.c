/* The name index: every lookup by name finds the volume the volume table
 * names so, through creates, snapshots, deletes and names reused, with
 * hashes that collide; a pool made without the index gets it at its
 * first read-write open, and a power cut during that build leaves the
 * pool with the whole index or none. */
#include "common.h"
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BS  4096u
#define MiB (1ull << 20)

/* Volume I's name, and its size (which tells the volumes apart). */
static void vname(char *buf, size_t len, unsigned i, unsigned gen)
{
	snprintf(buf, len, "vol-%u%s", i, gen ? "-again" : "");
}
static uint64_t vsize(unsigned i, unsigned gen)
{
	return (uint64_t)(1 + i % 97 + gen * 100) * BS;
}

/* N volumes (every fifth a snapshot of the one before), every third
 * deleted, then the names of every sixth made again (a new volume under
 * a freed name).  Every name then finds what it should. */
static void churn(struct vbas_pool *p, unsigned n)
{
	char a[64], b[64];
	for (unsigned i = 0; i < n; i++) {
		vname(a, sizeof(a), i, 0);
		if (i % 5 == 4) {
			vname(b, sizeof(b), i - 1, 0);
			assert_ok(vbas_vol_snapshot(p, b, a, VBAS_SNAP_WRITABLE));
			assert_ok(vbas_vol_resize(p, a, vsize(i, 0)));
		} else {
			assert_ok(vbas_vol_create(p, a, vsize(i, 0)));
		}
	}
	vname(a, sizeof(a), 0, 0);
	assert_int_equal(vbas_vol_create(p, a, BS), -EEXIST);
	for (unsigned i = 0; i < n; i += 3) {
		vname(a, sizeof(a), i, 0);
		assert_ok(vbas_vol_delete(p, a));
	}
	for (unsigned i = 0; i < n; i += 6) {
		vname(a, sizeof(a), i, 0);
		assert_ok(vbas_vol_create(p, a, vsize(i, 1)));
	}
}

static void verify(struct vbas_pool *p, unsigned n)
{
	char a[64];
	struct vbas_vol_info vi;
	for (unsigned i = 0; i < n; i++) {
		vname(a, sizeof(a), i, 0);
		int r = vbas_vol_stat(p, a, &vi);
		if (i % 6 == 0) {
			assert_ok(r);
			assert_int_equal(vi.size, vsize(i, 1));
		} else if (i % 3 == 0) {
			assert_int_equal(r, -ENOENT);
			assert_non_null(strstr(vbas_errmsg(), "not found"));
		} else {
			assert_ok(r);
			assert_int_equal(vi.size, vsize(i, 0));
			assert_string_equal(vi.name, a);
		}
		vname(a, sizeof(a), i, 1);
		assert_int_equal(vbas_vol_stat(p, a, &vi), -ENOENT);
	}
}

static void lookups(uint64_t mask, unsigned n)
{
	uint64_t m0 = vbas_tun.names_hash_mask;
	vbas_tun.names_hash_mask = mask;
	struct vbas_dev *d = mem_pool(64 * MiB, BS, 0);
	struct vbas_pool *p = open_mem(d, 1 << 20);
	churn(p, n);
	verify(p, n);
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	p = open_mem(d, 1 << 20);
	verify(p, n);
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	dev_destroy(d);
	vbas_tun.names_hash_mask = m0;
}

static void t_lookups(void **state)
{
	(void)state;
	lookups(~0ull, 3000);
}

/* Every hash one of eight: each lookup passes over the volumes that
 * share its hash, and still finds only its own. */
static void t_collisions(void **state)
{
	(void)state;
	lookups(7, 600);
}

/* Take the index out of a pool, as a pool made before it was. */
static void strip_index(struct vbas_dev *d)
{
	struct vbas_pool *p = open_mem(d, 1 << 20);
	uint8_t cursor[16] = { 0 };
	int done = 0;
	while (!done)
		assert_ok(bt_drop(&p->names, cursor, 1 << 20, &done));
	p->names.root = p->names.root_txid = 0;
	p->names_on = 0;
	p->dirty = 1;
	assert_ok(space_drain(p));
	assert_ok(vbas_close(p));
}

static unsigned has_index(struct vbas_dev *d)
{
	struct vbas_sb sb;
	uint32_t slot;
	assert_ok(txn_read_sb(d, &sb, &slot));
	return !!(le32_get(sb.flags) & VBAS_SBF_NAMES);
}

static struct vbas_dev *old_pool(unsigned n)
{
	struct vbas_dev *d = mem_pool(64 * MiB, BS, 0);
	struct vbas_pool *p = open_mem(d, 1 << 20);
	churn(p, n);
	assert_ok(vbas_close(p));
	strip_index(d);
	assert_false(has_index(d));
	return d;
}

/* Read-only, a pool without the index is searched as before; the first
 * read-write open builds the index. */
static void t_upgrade(void **state)
{
	(void)state;
	struct vbas_dev *d = old_pool(400);
	struct vbas_open_opts ro = { .cache_bytes = 1 << 20, .flags = VBAS_OPEN_RDONLY };
	struct vbas_pool *p;
	assert_ok(vbas_open_dev(d, &ro, &p));
	assert_false(p->names_on);
	verify(p, 400);
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	assert_false(has_index(d));
	p = open_mem(d, 1 << 20);
	assert_true(p->names_on);
	verify(p, 400);
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	assert_true(has_index(d));
	dev_destroy(d);
}

/* A pool without the index whose data filled it still gets the index at
 * its next open: the metadata reserve holds room for it.  (Were even that
 * gone, the open would go on without one, lookups walking the volume
 * table, until an open finds the room.) */
static void t_upgrade_full(void **state)
{
	(void)state;
	struct vbas_dev *d = mem_pool(16 * MiB, BS, 0);
	struct vbas_pool *p = open_mem(d, 1 << 20);
	churn(p, 60);
	assert_ok(vbas_vol_create(p, "filler", 64 * MiB));
	struct vbas_vol *v;
	static uint8_t buf[64 << 10];
	memset(buf, 0x5c, sizeof(buf));
	assert_ok(vbas_vol_open(p, "filler", &v));
	int r = 0;
	for (uint64_t off = 0; !r && off < 64 * MiB; off += sizeof(buf))
		r = vbas_pwrite(v, buf, sizeof(buf), off, 0);
	assert_int_equal(r, -ENOSPC);
	vbas_vol_close(v);
	assert_ok(vbas_close(p));
	strip_index(d);
	assert_false(has_index(d));
	p = open_mem(d, 1 << 20);
	assert_true(p->names_on);
	verify(p, 60);
	assert_check_clean(p);
	assert_ok(vbas_vol_delete(p, "filler"));
	assert_ok(vbas_vol_create(p, "filler", BS));
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	assert_true(has_index(d));
	dev_destroy(d);
}

/* A power cut at every write of the open that builds the index: the
 * survivor has all of it or none, checks clean, and finds every name. */
static void t_build_crash(void **state)
{
	(void)state;
	struct vbas_dev *base = old_pool(300);
	struct vbas_dev *d = vbas_memdev_clone(base);
	uint64_t w0 = vbas_memdev_writes(d);
	struct vbas_pool *p = open_mem(d, 1 << 20);
	uint64_t total = vbas_memdev_writes(d) - w0;
	assert_ok(vbas_close(p));
	dev_destroy(d);
	uint64_t every = total / test_ops(40) + 1;
	unsigned with = 0, without = 0, runs = 0;
	for (uint64_t at = 0; at <= total; at += every) {
		unsigned mode = crash_modes[runs++ % 4];
		d = vbas_memdev_clone(base);
		vbas_memdev_arm_crash(d, at, mode, 5 + at);
		struct vbas_open_opts oo = { .cache_bytes = 1 << 20 };
		if (!vbas_open_dev(d, &oo, &p))
			vbas_close(p);
		if (!vbas_memdev_crashed(d))
			vbas_memdev_crash_now(d, mode, 5 + at);
		struct vbas_dev *s = vbas_memdev_survivor(d);
		dev_destroy(d);
		*(has_index(s) ? &with : &without) += 1;
		struct vbas_open_opts ro = { .cache_bytes = 1 << 20, .flags = VBAS_OPEN_RDONLY };
		assert_ok(vbas_open_dev(s, &ro, &p));
		assert_check_clean(p);
		verify(p, 300);
		assert_ok(vbas_close(p));
		p = open_mem(s, 1 << 20);
		assert_true(p->names_on);
		assert_check_clean(p);
		verify(p, 300);
		assert_ok(vbas_close(p));
		dev_destroy(s);
	}
	fprintf(stderr, "# %llu writes, %u power cuts: %u survivors with the index, %u without\n",
		(unsigned long long)total, runs, with, without);
	assert_true(with > 0 && without > 0);
	dev_destroy(base);
}

/* The blocks and levels of the name index's nodes. */
static void index_nodes(struct vbas_dev *d, struct lvl_nodes *ns)
{
	struct vbas_pool *p = open_mem(d, 1 << 20);
	struct bt_check_cbs cbs = { .node_cb = lvl_cb, .arg = ns };
	ns->n = 0;
	assert_ok(bt_check(&p->names, &cbs, NULL, NULL));
	assert_ok(vbas_close(p));
}

static struct vbas_pool *open_repair(struct vbas_dev *d)
{
	struct vbas_open_opts oo = { .cache_bytes = 1 << 20, .flags = VBAS_OPEN_REPAIR };
	struct vbas_pool *p = NULL;
	assert_ok(vbas_open_dev(d, &oo, &p));
	return p;
}

enum damage { D_CHECKSUM, D_HASH, D_ID };

/* A leaf of the index damaged: unreadable (a checksum that fails), or
 * read fine but wrong (a hash that is not the name's, an id the volume
 * table lacks; checksum sealed again).  check names it, lookups fail or
 * miss; repair rebuilds the index from the volume table, and then every
 * name is found again. */
static void damaged(enum damage how)
{
	struct vbas_dev *d = mem_pool(64 * MiB, BS, 0);
	struct vbas_pool *p = open_mem(d, 1 << 20);
	churn(p, 1500);
	assert_ok(vbas_close(p));
	static struct lvl_nodes ns;
	index_nodes(d, &ns);
	uint64_t leaf = 0;
	for (size_t i = 0; i < ns.n && !leaf; i++)
		if (ns.level[i] == 0)
			leaf = ns.v[i];
	assert_true(leaf != 0);
	uint8_t *n = vbas_memdev_image(d) + leaf * BS;
	uint8_t *rec = n + sizeof(struct vbas_node_hdr);
	if (how == D_CHECKSUM) {
		rec[3] ^= 0x40;
	} else {
		if (how == D_HASH)
			st_le64(rec, ld_le64(rec) ^ 1);
		else
			st_le64(rec + 8, 999999);
		st_le32(n, vbas_crc32c(VBAS_SALT_NODE, n + 4, BS - 4));
	}
	struct vbas_open_opts ro = { .cache_bytes = 1 << 20, .flags = VBAS_OPEN_RDONLY };
	assert_ok(vbas_open_dev(d, &ro, &p));
	struct vbas_check_stats cs;
	assert_int_equal(vbas_check(p, NULL, NULL, &cs), -EUCLEAN);
	assert_true(cs.problems > 0);
	assert_ok(vbas_close(p));
	p = open_repair(d);
	struct vbas_repair_stats st;
	assert_ok(vbas_repair(p, VBAS_REPAIR_DRY_RUN, NULL, NULL, &st));
	assert_int_equal(st.names_rebuilt, 1);
	assert_ok(vbas_repair(p, 0, NULL, NULL, &st));
	assert_int_equal(st.names_rebuilt, 1);
	assert_int_equal(st.refcount_rebuilt, 1);
	assert_int_equal(st.rmap_rebuilt, 0);
	assert_check_clean(p);
	verify(p, 1500);
	assert_ok(vbas_close(p));
	p = open_mem(d, 1 << 20);
	assert_check_clean(p);
	verify(p, 1500);
	assert_ok(vbas_vol_create(p, "after", BS));        /* usable as ever */
	assert_ok(vbas_vol_delete(p, "vol-1"));
	assert_int_equal(vbas_vol_create(p, "vol-2", BS), -EEXIST);
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	dev_destroy(d);
}

static void t_repair_unreadable(void **state)
{
	(void)state;
	damaged(D_CHECKSUM);
}

static void t_repair_wrong_hash(void **state)
{
	(void)state;
	damaged(D_HASH);
}

static void t_repair_unknown_id(void **state)
{
	(void)state;
	damaged(D_ID);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_lookups),
		cmocka_unit_test(t_collisions),
		cmocka_unit_test(t_upgrade),
		cmocka_unit_test(t_upgrade_full),
		cmocka_unit_test(t_build_crash),
		cmocka_unit_test(t_repair_unreadable),
		cmocka_unit_test(t_repair_wrong_hash),
		cmocka_unit_test(t_repair_unknown_id),
	};
	return RUN("names", tests);
}
