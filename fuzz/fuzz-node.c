/* Fuzz harness: tree nodes.  The input is a sparse image (fuzz.h) of one
 * or more nodes; the first record's block is the root of a tree of the
 * type its header names.  The library's node validator (lib/btree.c
 * bt_node_validator, run by lib/cache.c) checks each node as it is read,
 * then the tree engine reads records and entries: lookups, iteration,
 * the structural check, the height and node counts, the sharing walks,
 * a diff against the tree rooted at the second record, and changes
 * (insert, update, delete, release) that copy the hostile nodes. */
#include "fuzz.h"

#include <stdlib.h>

struct env_ctx {
	uint8_t used[FZ_NBLOCKS];
	uint64_t next;
};

static int alloc_meta(void *ctx, uint64_t hint, uint64_t *blkno)
{
	struct env_ctx *e = ctx;
	(void)hint;
	for (; e->next < FZ_NBLOCKS; e->next++)
		if (!e->used[e->next]) {
			*blkno = e->next++;
			return 0;
		}
	return -ENOSPC;
}
static int ref_noop(void *ctx, uint64_t blkno) { (void)ctx, (void)blkno; return 0; }
/* Odd blocks count as shared: the copy-on-write paths run too. */
static int refcount(void *ctx, uint64_t blkno, uint32_t *rc)
{
	(void)ctx;
	*rc = 1 + (blkno & 1);
	return 0;
}

static void report(void *arg, const char *fmt, ...) { (void)arg, (void)fmt; }
static int rec_cb(void *arg, const void *rec)
{
	const struct vbas_btree *t = arg;
	char why[128];
	if (t->ops->check_rec)
		t->ops->check_rec(t->env, rec, why, sizeof(why));
	return 0;
}
static int iter_cb(void *arg, const void *rec)
{
	(void)rec;
	return ++*(unsigned *)arg > 100000;
}
static int range_cb(void *arg, const void *lo, const void *hi)
{
	(void)lo, (void)hi;
	return ++*(unsigned *)arg > 100000;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct vbas_btree_ops *const all[] = { &voltab_ops, &refc_ops, &map_ops,
							    &rmap_ops, &names_ops };
	if (fz_nrecs(size) == 0 || fz_blkno(data, 0) >= FZ_NBLOCKS)
		return 0;
	const struct vbas_node_hdr *h0 = (const void *)(data + 4);
	struct vbas_btree_ops ops;
	int found = 0;
	for (size_t i = 0; i < FZ_N(all); i++)
		if (all[i]->tree_type == le16_get(h0->tree_type)) {
			ops = *all[i];
			found = 1;
		}
	if (!found)
		ops = map_ops;
	/* The values point at nothing here: no pool's refcounts to change,
	 * and no reverse map to keep. */
	ops.val_inc = ops.val_dec = NULL;
	ops.rec_owner = NULL;

	struct env_ctx ec = { .next = VBAS_FIRST_BLOCK };
	struct bt_env env = { .block_size = FZ_BS, .alloc_meta = alloc_meta,
			      .dec_meta = ref_noop, .inc_meta = ref_noop,
			      .refcount = refcount, .ctx = &ec, .nblocks = FZ_NBLOCKS };
	struct vbas_validator v;
	struct vbas_dev *d = fz_load(data, size);
	if (!d)
		abort();
	memcpy(env.uuid, h0->uuid, 16);
	for (size_t i = 0; i < fz_nrecs(size); i++) {
		const struct vbas_node_hdr *h = (const void *)(data + i * FZ_REC + 4);
		if (fz_blkno(data, i) < FZ_NBLOCKS)
			ec.used[fz_blkno(data, i)] = 1;
		if (le64_get(h->txid) > env.txid && le64_get(h->txid) < ~0ull)
			env.txid = le64_get(h->txid);
	}
	env.txid++;
	env.types[ops.tree_type] = &ops;
	bt_node_validator(&v, &env);
	if (cache_create(d, FZ_BS, 32, &v, &env.cache))
		abort();

	/* The roots are pinned to the versions the input holds. */
	struct vbas_btree t = { .ops = &ops, .env = &env, .root = fz_blkno(data, 0),
				.root_txid = le64_get(h0->txid), .owner = le64_get(h0->owner) };
	struct vbas_btree t2 = t;
	if (fz_nrecs(size) > 1) {
		const struct vbas_node_hdr *h1 = (const void *)(data + FZ_REC + 4);
		t2.root = fz_blkno(data, 1) < FZ_NBLOCKS ? fz_blkno(data, 1) : 0;
		t2.root_txid = t2.root ? le64_get(h1->txid) : 0;
	}
	uint8_t rec[BT_MAX_REC], key[BT_MAX_KEY] = { 0 };
	uint64_t nodes = 0, recs = 0;
	unsigned height, count = 0;
	int shared;
	struct bt_cow cow = { 0 };
	struct bt_check_cbs cbs = { .report = report, .rec_cb = rec_cb, .arg = &t };

	bt_check(&t, &cbs, &nodes, &recs);
	if (ops.overlapping) {
		/* The interval query, from the first record's key to the
		 * highest, and every way it can be cut short. */
		uint8_t lo[BT_MAX_KEY] = { 0 }, hi[BT_MAX_KEY];
		memset(hi, 0xff, sizeof(hi));
		count = 0;
		bt_query_overlap(&t, lo, hi, iter_cb, &count);
		const uint8_t *first = data + 4 + sizeof(struct vbas_node_hdr);
		memcpy(lo, first, ops.key_size);
		memcpy(hi, first, ops.key_size);
		count = 0;
		bt_query_overlap(&t, lo, hi, iter_cb, &count);
	}
	/* Which tree reaches each node of the input, as fsmap asks. */
	for (size_t i = 0; i < fz_nrecs(size) && i < 8; i++) {
		const uint8_t *nd = data + i * FZ_REC + 4;
		const struct vbas_node_hdr *h = (const void *)nd;
		int reached;
		bt_reaches(&t, nd + sizeof(*h), le16_get(h->level), fz_blkno(data, i), &reached);
	}
	bt_height(&t, &height);
	bt_count_nodes(&t, &nodes);
	bt_iter(&t, NULL, iter_cb, &count);
	count = 0;
	bt_diff(&t, &t2, range_cb, &count);
	/* Keys from the records themselves, and around them. */
	for (size_t i = 0; i < fz_nrecs(size) && i < 4; i++) {
		const uint8_t *first = data + i * FZ_REC + 4 + sizeof(struct vbas_node_hdr);
		for (int dk = -1; dk <= 1; dk++) {
			st_le64(key, ld_le64(first) + (uint64_t)dk);
			bt_lookup(&t, key, BT_EQ, rec);
			bt_lookup(&t, key, BT_LE, rec);
			bt_lookup(&t, key, BT_GE, rec);
			bt_path_shared(&t, key, 0, &shared);
			bt_path_cow(&t, key, 0, &shared, &cow, 1);
		}
	}
	/* Changes, copying the nodes read (the running transaction is newer
	 * than all of them). */
	memset(rec, 0, sizeof(rec));
	st_le64(rec, ld_le64(key) + 7);
	st_le32(rec + 8, 1);
	st_le32(rec + 12, 1);
	bt_insert(&t, rec);
	bt_update(&t, rec);
	bt_delete(&t, key, rec);
	bt_check(&t, &cbs, NULL, NULL);
	uint8_t cursor[BT_MAX_KEY] = { 0 };
	int done = 0;
	for (int i = 0; i < 64 && !done; i++)
		if (bt_drop(&t2, cursor, 16, &done))
			break;

	cache_drop_all(env.cache);
	cache_destroy(env.cache);
	return 0;
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned seed)
{
	return fz_mutate(data, size, max_size, seed);
}
