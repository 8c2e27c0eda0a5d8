/* Hostile and stale pools: nodes whose checksum is right but whose content
 * is not (every field the read paths trust, changed and the checksum
 * recomputed, as an attacker or a buggy tool would), and older versions of
 * live nodes put back where they were (what a disk that lost a write
 * shows).  Every public operation on such a pool must end within a bound
 * and either give the right data or fail with EUCLEAN/EIO (or EBADMSG)
 * naming the block; check must see each one. */
#include "common.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "crc32c.h"

#define BS      4096u
#define POOL    (16ull << 20)
#define VOLSZ   (4ull << 20)
#define NVOL    3
#define HDRB    64u

static const char *const names[NVOL] = { "a", "b-snap", "c" };
static uint8_t *expect[NVOL];        /* what each volume reads */
static uint8_t *pristine;            /* the pool's image after set-up */
static uint8_t *history[64];         /* images after each commit of set-up */
static unsigned nhistory;

/* Live nodes of one tree, with their levels. */
struct nodes {
	uint64_t blk[4096];
	unsigned level[4096];
	unsigned n;
};
static struct nodes map_a, refc, voltab, nameidx;

static void on_alarm(int sig)
{
	(void)sig;
	static const char m[] = "not ok - an operation on a hostile pool did not end in time\n";
	if (write(2, m, sizeof(m) - 1) < 0) {
		/* nothing more to say */
	}
	_exit(3);
}

static void write_model(struct vbas_vol *v, unsigned vi, uint64_t off, size_t len,
			struct rng *r)
{
	uint8_t *buf = malloc(len);
	rng_fill(r, buf, len);
	assert_ok(vbas_pwrite(v, buf, len, off, 0));
	memcpy(expect[vi] + off, buf, len);
	free(buf);
}

static void snap_image(struct vbas_dev *dev)
{
	assert_true(nhistory < 64);
	history[nhistory] = malloc(POOL);
	memcpy(history[nhistory], vbas_memdev_image(dev), POOL);
	nhistory++;
}

static int collect(void *arg, uint64_t blk, unsigned level)
{
	struct nodes *n = arg;
	if (n->n < 4096) {
		n->blk[n->n] = blk;
		n->level[n->n] = level;
		n->n++;
	}
	return 0;
}

static void ignore(void *arg, const char *fmt, ...)
{
	(void)arg; (void)fmt;
}

static void walk(struct vbas_btree *t, struct nodes *out)
{
	struct bt_check_cbs cbs = { .report = ignore, .node_cb = collect, .arg = out };
	memset(out, 0, sizeof(*out));
	assert_ok(bt_check(t, &cbs, NULL, NULL));
}

/* A pool with three volumes (one a snapshot), trees of several levels
 * (fanout 5), and many commits that free and reuse blocks. */
static int setup(void **state)
{
	(void)state;
	struct rng r = { test_seed(1101) };
	struct vbas_dev *dev = mem_pool(POOL, BS, 5);
	struct vbas_pool *p = open_mem(dev, 256 << 10);
	struct vbas_vol *v[NVOL] = { NULL };
	for (unsigned i = 0; i < NVOL; i++)
		expect[i] = calloc(1, VOLSZ);
	assert_ok(vbas_vol_create(p, "a", VOLSZ));
	assert_ok(vbas_vol_create(p, "c", VOLSZ));
	assert_ok(vbas_vol_open(p, "a", &v[0]));
	assert_ok(vbas_vol_open(p, "c", &v[2]));
	for (unsigned i = 0; i < 300; i++) {
		/* Every other block, so extents do not merge: many records. */
		uint64_t blk = rng_below(&r, VOLSZ / BS / 2) * 2;
		write_model(v[0], 0, blk * BS, BS, &r);
		if (i % 40 == 39) {
			assert_ok(vbas_flush(p));
			snap_image(dev);
		}
	}
	write_model(v[2], 2, 0, 3 * BS, &r);
	assert_ok(vbas_flush(p));
	assert_ok(vbas_vol_snapshot(p, "a", "b-snap", 0));
	memcpy(expect[1], expect[0], VOLSZ);
	for (unsigned i = 0; i < 200; i++) {
		uint64_t blk = rng_below(&r, VOLSZ / BS / 2) * 2;
		write_model(v[0], 0, blk * BS, BS, &r);
		if (i % 20 == 19) {
			struct vbas_vol *t;
			assert_ok(vbas_flush(p));
			snap_image(dev);
			/* Churn: a volume written and deleted frees nodes
			 * that later commits reuse. */
			assert_ok(vbas_vol_create(p, "tmp", VOLSZ));
			assert_ok(vbas_vol_open(p, "tmp", &t));
			for (unsigned k = 0; k < 30; k++) {
				uint8_t b[BS];
				rng_fill(&r, b, sizeof(b));
				assert_ok(vbas_pwrite(t, b, BS, rng_below(&r, VOLSZ / BS / 2) * 2 * BS, 0));
			}
			assert_ok(vbas_vol_close(t));
			assert_ok(vbas_flush(p));
			assert_ok(vbas_vol_delete(p, "tmp"));
			assert_ok(vbas_flush(p));
		}
	}
	assert_ok(vbas_vol_close(v[0]));
	assert_ok(vbas_vol_close(v[2]));
	assert_ok(vbas_flush(p));

	struct vbas_vol_rec rec;
	struct vbas_btree t;
	uint64_t id;
	assert_ok(vol_lookup_name(p, "a", &id, &rec));
	vol_map_tree(p, id, &rec, &t);
	walk(&t, &map_a);
	walk(&p->sp.refc, &refc);
	walk(&p->voltab, &voltab);
	walk(&p->names, &nameidx);
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	pristine = malloc(POOL);
	memcpy(pristine, vbas_memdev_image(dev), POOL);
	dev_destroy(dev);
	/* The trees must have the shape the cases below need. */
	unsigned leaves = 0, interior = 0;
	for (unsigned i = 0; i < map_a.n; i++)
		map_a.level[i] ? interior++ : leaves++;
	print_message("# volume a: %u leaves, %u interior nodes; refcount tree %u nodes; "
		      "volume table %u nodes; %u images kept\n", leaves, interior, refc.n,
		      voltab.n, nhistory);
	assert_true(leaves >= 8 && interior >= 2 && refc.n >= 3);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	for (unsigned i = 0; i < NVOL; i++)
		free(expect[i]);
	for (unsigned i = 0; i < nhistory; i++)
		free(history[i]);
	free(pristine);
	return 0;
}

/* ---- Node surgery ------------------------------------------------------ */

static uint8_t *node(uint8_t *img, uint64_t blk)
{
	return img + blk * BS;
}

static void reseal(uint8_t *n)
{
	st_le32(n, vbas_crc32c(VBAS_SALT_NODE, n + 4, BS - 4));
}

static unsigned nrecs(const uint8_t *n)
{
	return ld_le16(n + offsetof(struct vbas_node_hdr, nrecs));
}

/* Records and entries of u64-keyed trees. */
#define MAPREC(n, i)   ((n) + HDRB + (i) * 24u)          /* lblk, pblk, len, flags */
#define REFREC(n, i)   ((n) + HDRB + (i) * 24u)          /* pblk, len, rc, type, pad */
#define ENT(n, i)      ((n) + HDRB + (i) * (8u + VBAS_PTR_BYTES))  /* key, child, txid */
#define VOLREC(n, i)   ((n) + HDRB + (i) * (uint32_t)sizeof(struct vbas_voltab_rec))

/* ---- Running every operation on a pool ---------------------------------- */

struct outcome {
	int errors;            /* operations that failed as they should */
	int named;             /* ... with a message naming BLK */
	uint64_t problems;     /* check */
};

static int ok_errno(int r)
{
	return r == -EUCLEAN || r == -EIO || r == -EBADMSG;
}

static void note(struct outcome *o, int r, uint64_t blk, const char *op)
{
	char want[40];
	if (!r)
		return;
	if (!ok_errno(r))
		fail_msg("%s: %d (%s): %s", op, r, strerror(-r), vbas_errmsg());
	o->errors++;
	snprintf(want, sizeof(want), "block %" PRIu64, blk);
	if (strstr(vbas_errmsg(), want))
		o->named++;
}

static int count_ext(const struct vbas_extent *e, void *arg)
{
	(void)e;
	(*(uint64_t *)arg)++;
	return 0;
}

static int count_diff(uint64_t off, uint64_t len, void *arg)
{
	(void)off; (void)len;
	(*(uint64_t *)arg)++;
	return 0;
}

static int count_vol(const struct vbas_vol_info *i, void *arg)
{
	assert_true(strlen(i->name) >= 1 && strlen(i->name) <= VBAS_NAME_MAX);
	(*(uint64_t *)arg)++;
	return 0;
}

/* Every read-only operation, then changes, on a pool made from IMG.  Data
 * that is read successfully must be what was written. */
static int data_moved;

static struct outcome run_all(const uint8_t *img, uint64_t blk)
{
	struct outcome o = { 0 };
	struct vbas_dev *dev = vbas_memdev_create(POOL);
	struct vbas_pool *p = NULL;
	struct vbas_open_opts oo = { .cache_bytes = 256 << 10 };
	uint8_t *buf = malloc(VOLSZ);
	uint64_t n = 0;
	int r;

	memcpy(vbas_memdev_image(dev), img, POOL);
	alarm(60);
	r = vbas_open_dev(dev, &oo, &p);
	if (r) {
		note(&o, r, blk, "open");
		o.problems = 1;
		goto out;
	}
	note(&o, vbas_vol_list(p, count_vol, &n), blk, "list");
	struct vbas_pool_info pi;
	note(&o, vbas_pool_info(p, &pi), blk, "info");
	struct vbas_vol *v[NVOL] = { NULL };
	for (unsigned i = 0; i < NVOL; i++) {
		struct vbas_vol_usage u;
		r = vbas_vol_usage(p, names[i], &u);
		note(&o, r == -ENOENT ? -EUCLEAN : r, blk, "usage");
		r = vbas_vol_open(p, names[i], &v[i]);
		if (r) {
			note(&o, r == -ENOENT ? -EUCLEAN : r, blk, "open volume");
			v[i] = NULL;
			continue;
		}
		r = vbas_pread(v[i], buf, VOLSZ, 0);
		if (!r && !data_moved && memcmp(buf, expect[i], VOLSZ))
			fail_msg("volume %s read back wrong data with success", names[i]);
		note(&o, r, blk, "read");
		note(&o, vbas_extents(v[i], 0, VOLSZ, count_ext, &n), blk, "extents");
	}
	if (v[0] && v[1])
		note(&o, vbas_diff(v[1], v[0], count_diff, &n), blk, "diff");
	struct vbas_check_stats st;
	r = vbas_check(p, NULL, NULL, &st);
	if (r && r != -EUCLEAN)
		note(&o, r, blk, "check");
	o.problems = r ? (st.problems ? st.problems : 1) : 0;
	/* Changes: they may fail, but must not crash or hang. */
	for (unsigned i = 0; i < NVOL; i++) {
		if (!v[i])
			continue;
		memset(buf, 0x5a, 3 * BS);
		(void)vbas_pwrite(v[i], buf, 3 * BS, 7 * BS, 0);
		(void)vbas_discard(v[i], 0, 64 * BS, 0);
		(void)vbas_write_zeroes(v[i], 100 * BS, 4 * BS, 0);
		(void)vbas_flush(p);
		vbas_vol_close(v[i]);
	}
	(void)vbas_vol_snapshot(p, "a", "s2", 0);
	(void)vbas_vol_delete(p, "c");
	(void)vbas_vol_resize(p, "a", VOLSZ / 2);
	(void)vbas_flush(p);
	vbas_close(p);
out:
	alarm(0);
	dev_destroy(dev);
	free(buf);
	return o;
}

/* A change that breaks an invariant of node BLK (checksum recomputed) must
 * be seen: reads that pass through it fail naming the block, and check
 * reports it.  MUST_FAIL: the change is on volume a's read path. */
static void expect_caught(uint8_t *img, uint64_t blk, int must_fail, const char *what)
{
	data_moved = must_fail == 3;
	struct outcome o = run_all(img, blk);
	data_moved = 0;
	print_message("# %s (block %" PRIu64 "): %d errors, %d naming the block, "
		      "%" PRIu64 " problems\n", what, blk, o.errors, o.named, o.problems);
	if (!o.problems)
		fail_msg("%s: check found nothing", what);
	if (must_fail && !o.errors)
		fail_msg("%s: every operation succeeded", what);
	if (must_fail == 1 && !o.named)
		fail_msg("%s: no message names block %" PRIu64, what, blk);
}

static uint8_t *fresh(void)
{
	uint8_t *img = malloc(POOL);
	memcpy(img, pristine, POOL);
	return img;
}

/* ---- The cases --------------------------------------------------------- */

enum tree { T_MAP, T_REFC, T_VOLTAB, T_NAMES };

struct mcase {
	const char *what;
	enum tree tree;
	unsigned level;         /* of the node changed */
	int must_fail;          /* on volume a's read path: 1, and the message
	                           names the block changed; 2: names another;
	                           3: data moved, only usage and check fail */
	int kind;
};

enum {
	LEAF_LEN0, LEAF_LEN_HUGE, LEAF_ORDER, LEAF_OVERLAP, LEAF_PAST_PARENT, LEAF_PBLK_PAST,
	LEAF_ON_SB, LEAF_NRECS, LEAF_LEVEL, NODE_TYPE, NODE_TXID_NEWER, NODE_STALE, NODE_OLD_TXID,
	INT_KEY_UP, INT_KEY_ORDER, INT_CHILD_SIBLING, INT_CHILD_SB, INT_CHILD_PAST,
	INT_CHILD_TXID, INT_NRECS0, LEAF_PAST_SIZE, REFC_LEN0, REFC_PAST, REFC_OVERLAP, VOL_NAMELEN_FFFF,
	VOL_NAMELEN_300, VOL_NAMELEN_0, VOL_ROOT_PAST, VOL_ROOT_TXID, LEAF_FLAGS, VOL_RESV_PAST,
	VOL_OWED_PAST, VOL_EXPENDABLE_RW, NAMES_HASH, NAMES_ID,
};

static const struct mcase cases[] = {
	{ "mapping leaf: record of zero length", T_MAP, 0, 1, LEAF_LEN0 },
	{ "mapping leaf: length 2^32-1", T_MAP, 0, 1, LEAF_LEN_HUGE },
	{ "mapping leaf: records out of order", T_MAP, 0, 1, LEAF_ORDER },
	{ "mapping leaf: record overlaps the next", T_MAP, 0, 1, LEAF_OVERLAP },
	{ "mapping leaf: last record runs into the next leaf", T_MAP, 0, 1, LEAF_PAST_PARENT },
	{ "mapping leaf: physical range past the pool", T_MAP, 0, 1, LEAF_PBLK_PAST },
	{ "mapping leaf: maps onto a superblock", T_MAP, 0, 1, LEAF_ON_SB },
	{ "mapping leaf: record count past the capacity", T_MAP, 0, 1, LEAF_NRECS },
	{ "mapping leaf: level changed", T_MAP, 0, 1, LEAF_LEVEL },
	{ "mapping leaf: unknown tree type", T_MAP, 0, 1, NODE_TYPE },
	{ "mapping leaf: transaction newer than the pool", T_MAP, 0, 1, NODE_TXID_NEWER },
	{ "mapping leaf: older version (lost write)", T_MAP, 0, 1, NODE_STALE },
	{ "mapping leaf: written one transaction earlier", T_MAP, 0, 1, NODE_OLD_TXID },
	{ "mapping interior: low key changed", T_MAP, 1, 1, INT_KEY_UP },
	{ "mapping interior: keys out of order", T_MAP, 1, 1, INT_KEY_ORDER },
	{ "mapping interior: child is its sibling", T_MAP, 1, 1, INT_CHILD_SIBLING },
	/* A consistent tree whose last extent lies past the volume's end:
	 * reads never get there (the block it held reads as zeros, as for any
	 * mapping an attacker moved), but usage and check must see it. */
	{ "mapping leaf: extent past the volume's end", T_MAP, 0, 3, LEAF_PAST_SIZE },
	{ "mapping interior: child is a superblock", T_MAP, 1, 1, INT_CHILD_SB },
	{ "mapping interior: child past the pool", T_MAP, 1, 1, INT_CHILD_PAST },
	{ "mapping interior: child's transaction changed", T_MAP, 1, 1, INT_CHILD_TXID },
	{ "mapping interior: no entries", T_MAP, 1, 1, INT_NRECS0 },
	{ "mapping interior: older version (lost write)", T_MAP, 1, 1, NODE_STALE },
	{ "mapping interior: written one transaction earlier", T_MAP, 1, 1, NODE_OLD_TXID },
	{ "refcount leaf: zero length", T_REFC, 0, 0, REFC_LEN0 },
	{ "refcount leaf: range past the pool", T_REFC, 0, 0, REFC_PAST },
	{ "refcount leaf: record overlaps the next", T_REFC, 0, 0, REFC_OVERLAP },
	{ "refcount leaf: older version (lost write)", T_REFC, 0, 0, NODE_STALE },
	{ "volume table: written one transaction earlier", T_VOLTAB, 0, 1, NODE_OLD_TXID },
	{ "refcount interior: low key changed", T_REFC, 1, 0, INT_KEY_UP },
	{ "volume table: name length 0xffff", T_VOLTAB, 0, 1, VOL_NAMELEN_FFFF },
	{ "volume table: name length 300", T_VOLTAB, 0, 1, VOL_NAMELEN_300 },
	{ "volume table: name length 0", T_VOLTAB, 0, 1, VOL_NAMELEN_0 },
	{ "volume table: mapping root past the pool", T_VOLTAB, 0, 1, VOL_ROOT_PAST },
	/* Reads name the mapping tree's root, whose version the record
	 * no longer matches. */
	{ "volume table: mapping root of another transaction", T_VOLTAB, 0, 2, VOL_ROOT_TXID },
	{ "mapping leaf: unknown extent flags", T_MAP, 0, 1, LEAF_FLAGS },
	{ "volume table: more reserved blocks than mapped", T_VOLTAB, 0, 1, VOL_RESV_PAST },
	{ "volume table: more blocks owed than reserved", T_VOLTAB, 0, 1, VOL_OWED_PAST },
	/* A writable volume marked expendable: the pool would delete data
	 * nobody agreed to lose. */
	{ "volume table: an expendable volume that is not a snapshot", T_VOLTAB, 0, 1,
	  VOL_EXPENDABLE_RW },
	{ "name index: older version (lost write)", T_NAMES, 0, 1, NODE_STALE },
	{ "name index: written one transaction earlier", T_NAMES, 0, 1, NODE_OLD_TXID },
	{ "name index: unknown tree type", T_NAMES, 0, 1, NODE_TYPE },
	{ "name index: record count past the capacity", T_NAMES, 0, 1, LEAF_NRECS },
	/* The index no longer finds the names (opens fail, "not found"),
	 * or finds ids the volume table lacks: check names both. */
	{ "name index: hashes changed", T_NAMES, 0, 2, NAMES_HASH },
	{ "name index: ids past the volumes", T_NAMES, 0, 2, NAMES_ID },
};

static uint64_t ld(const uint8_t *x) { return ld_le64(x); }

/* Apply case C to node N (block BLK) of IMG; 0 if this node does not
 * suit it (too few records). */
static int mutate(uint8_t *img, uint64_t blk, const struct mcase *c)
{
	uint8_t *n = node(img, blk);
	unsigned nr = nrecs(n);
	uint64_t nblocks = POOL / BS;
	switch (c->kind) {
	case LEAF_LEN0:
		st_le32(MAPREC(n, 0) + 16, 0);
		break;
	case LEAF_LEN_HUGE:
		st_le32(MAPREC(n, 0) + 16, 0xffffffffu);
		break;
	case LEAF_ORDER:
		if (nr < 3)
			return 0;
		st_le64(MAPREC(n, 1), ld(MAPREC(n, 2)) + 1);
		break;
	case LEAF_OVERLAP:
		if (nr < 2)
			return 0;
		st_le32(MAPREC(n, 0) + 16, (uint32_t)(ld(MAPREC(n, 1)) - ld(MAPREC(n, 0)) + 1));
		break;
	case LEAF_PAST_PARENT: {
		/* The leaf's last record reaches one block into the next
		 * leaf's range; it stays inside the pool. */
		uint64_t l = ld(MAPREC(n, nr - 1)), pb = ld(MAPREC(n, nr - 1) + 8);
		uint64_t next = UINT64_MAX;
		for (unsigned i = 0; i < map_a.n; i++) {
			if (map_a.level[i] != 0 || map_a.blk[i] == blk)
				continue;
			uint64_t k = ld(MAPREC(node(img, map_a.blk[i]), 0));
			if (k > l && k < next)
				next = k;
		}
		if (next == UINT64_MAX || pb + (next - l) + 1 > nblocks)
			return 0;
		st_le32(MAPREC(n, nr - 1) + 16, (uint32_t)(next - l + 1));
		break;
	}
	case LEAF_PBLK_PAST:
		st_le64(MAPREC(n, 0) + 8, nblocks - 1);
		st_le32(MAPREC(n, 0) + 16, 2);
		break;
	case LEAF_ON_SB:
		st_le64(MAPREC(n, 0) + 8, 1);
		break;
	case LEAF_NRECS:
		st_le16(n + offsetof(struct vbas_node_hdr, nrecs), 0xffff);
		break;
	case LEAF_LEVEL:
		st_le16(n + offsetof(struct vbas_node_hdr, level), 1);
		break;
	case NODE_TYPE:
		st_le16(n + offsetof(struct vbas_node_hdr, tree_type), 7);
		break;
	case NODE_TXID_NEWER:
		st_le64(n + offsetof(struct vbas_node_hdr, txid), 1ull << 40);
		break;
	case NODE_STALE: {
		/* What the block held in an earlier commit, if it was then a
		 * tree node: exactly what a disk that lost this write would
		 * return. */
		for (unsigned h = nhistory; h-- > 0;) {
			const uint8_t *o = history[h] + blk * BS;
			if (ld_le32(o + 4) == VBAS_NODE_MAGIC && ld(o + 16) < ld(n + 16) &&
			    ld_le32(o) == vbas_crc32c(VBAS_SALT_NODE, o + 4, BS - 4)) {
				memcpy(n, o, BS);
				return 1;      /* the old checksum is its own */
			}
		}
		return 0;
	}
	case NODE_OLD_TXID:
		/* The same node as written one transaction earlier. */
		st_le64(n + offsetof(struct vbas_node_hdr, txid), ld(n + 16) - 1);
		break;
	case LEAF_PAST_SIZE: {
		/* The rightmost leaf's last record, moved past the end. */
		uint64_t last = 0, best = 0;
		for (unsigned i = 0; i < map_a.n; i++) {
			const uint8_t *m = node(img, map_a.blk[i]);
			if (map_a.level[i] == 0 && ld(MAPREC(m, 0)) >= best) {
				best = ld(MAPREC(m, 0));
				last = map_a.blk[i];
			}
		}
		if (last != blk)
			return 0;
		st_le64(MAPREC(n, nr - 1), VOLSZ / BS + 10);
		break;
	}
	case INT_KEY_UP:
		if (nr < 2)
			return 0;
		st_le64(ENT(n, 1), ld(ENT(n, 1)) + 1);
		break;
	case INT_KEY_ORDER:
		if (nr < 3)
			return 0;
		st_le64(ENT(n, 1), ld(ENT(n, 2)) + 1);
		break;
	case INT_CHILD_SIBLING:
		if (nr < 2)
			return 0;
		memcpy(ENT(n, 1) + 8, ENT(n, 0) + 8, VBAS_PTR_BYTES);
		break;
	case INT_CHILD_SB:
		st_le64(ENT(n, 0) + 8, 1);
		break;
	case INT_CHILD_PAST:
		st_le64(ENT(n, 0) + 8, nblocks + 100);
		break;
	case INT_CHILD_TXID:
		if (ld(ENT(n, 0) + 16) < 2)
			return 0;
		st_le64(ENT(n, 0) + 16, ld(ENT(n, 0) + 16) - 1);
		break;
	case INT_NRECS0:
		st_le16(n + offsetof(struct vbas_node_hdr, nrecs), 0);
		break;
	case REFC_LEN0:
		st_le32(REFREC(n, 0) + 8, 0);
		break;
	case REFC_PAST:
		st_le32(REFREC(n, 0) + 8, (uint32_t)nblocks);
		break;
	case REFC_OVERLAP:
		if (nr < 2)
			return 0;
		st_le32(REFREC(n, 0) + 8, (uint32_t)(ld(REFREC(n, 1)) - ld(REFREC(n, 0)) + 1));
		break;
	case VOL_NAMELEN_FFFF:
	case VOL_NAMELEN_300:
	case VOL_NAMELEN_0: {
		uint16_t v = c->kind == VOL_NAMELEN_FFFF ? 0xffff : c->kind == VOL_NAMELEN_300 ? 300 : 0;
		for (unsigned i = 0; i < nr; i++)
			st_le16(VOLREC(n, i) + 8 + offsetof(struct vbas_vol_rec, name_len), v);
		break;
	}
	case VOL_ROOT_PAST:
		for (unsigned i = 0; i < nr; i++)
			st_le64(VOLREC(n, i) + 8 + offsetof(struct vbas_vol_rec, root), nblocks + 7);
		break;
	case VOL_ROOT_TXID:
		for (unsigned i = 0; i < nr; i++) {
			uint8_t *t = VOLREC(n, i) + 8 + offsetof(struct vbas_vol_rec, root_txid);
			if (ld(t) > 1)
				st_le64(t, ld(t) - 1);
		}
		break;
	case LEAF_FLAGS:
		st_le32(MAPREC(n, 0) + 20, 0x6);
		break;
	case VOL_RESV_PAST:
		for (unsigned i = 0; i < nr; i++) {
			uint8_t *v = VOLREC(n, i) + 8;
			st_le64(v + offsetof(struct vbas_vol_rec, resv_blocks),
				ld(v + offsetof(struct vbas_vol_rec, mapped)) + 1);
		}
		break;
	case VOL_OWED_PAST:
		for (unsigned i = 0; i < nr; i++) {
			uint8_t *v = VOLREC(n, i) + 8;
			st_le64(v + offsetof(struct vbas_vol_rec, owed), ~0ull);
		}
		break;
	case NAMES_HASH:
		for (unsigned i = 0; i < nr; i++)
			st_le64(n + HDRB + 16 * i, ld(n + HDRB + 16 * i) ^ 1);
		break;
	case NAMES_ID:
		for (unsigned i = 0; i < nr; i++)
			st_le64(n + HDRB + 16 * i + 8, 1000 + i);
		break;
	case VOL_EXPENDABLE_RW:
		for (unsigned i = 0; i < nr; i++) {
			uint8_t *f = VOLREC(n, i) + 8 + offsetof(struct vbas_vol_rec, flags);
			if (!(ld_le32(f) & VBAS_VOLF_READONLY))
				st_le32(f, ld_le32(f) | VBAS_VOLF_EXPENDABLE);
		}
		break;
	default:
		fail_msg("unknown case %d", c->kind);
	}
	reseal(n);
	return 1;
}

static void run_case(const struct mcase *c)
{
	const struct nodes *ns = c->tree == T_MAP ? &map_a : c->tree == T_REFC ? &refc :
				 c->tree == T_VOLTAB ? &voltab : &nameidx;
	for (unsigned skip = 0; skip < ns->n; skip++) {
		unsigned seen = 0;
		uint64_t blk = 0;
		for (unsigned i = 0; i < ns->n && !blk; i++)
			if (ns->level[i] == c->level && seen++ == skip)
				blk = ns->blk[i];
		if (!blk)
			break;
		uint8_t *img = fresh();
		if (!mutate(img, blk, c)) {
			free(img);
			continue;
		}
		expect_caught(img, blk, c->must_fail, c->what);
		free(img);
		return;
	}
	fail_msg("%s: no node of the set-up pool suits this case", c->what);
}

static void t_cases(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		run_case(&cases[i]);
}

/* The set-up pool itself, through the same paths: clean, right data. */
static void t_pristine(void **state)
{
	(void)state;
	struct outcome o = run_all(pristine, 0);
	assert_int_equal(o.errors, 0);
	assert_int_equal(o.problems, 0);
}

/* A superblock whose max_fanout would let nodes claim more records than
 * the code expects, or whose roots lie outside the pool, is refused. */
static void t_superblock_fields(void **state)
{
	(void)state;
	static const struct { size_t off; unsigned width; uint64_t val; const char *why; } sbc[] = {
		{ offsetof(struct vbas_sb, max_fanout), 4, 2, "bad max_fanout" },
		{ offsetof(struct vbas_sb, max_fanout), 4, 70000, "bad max_fanout" },
		{ offsetof(struct vbas_sb, voltab_root), 8, 1, "tree root outside the pool" },
		{ offsetof(struct vbas_sb, refc_root), 8, POOL / BS, "tree root outside the pool" },
		{ offsetof(struct vbas_sb, refc_root_txid), 8, 0, "tree root of a bad transaction" },
		{ offsetof(struct vbas_sb, data_used), 8, POOL, "more blocks used" },
		{ offsetof(struct vbas_sb, next_vol_id), 8, 0, "bad volume counters" },
		{ offsetof(struct vbas_sb, low_water), 2, 1001, "bad space settings" },
		{ offsetof(struct vbas_sb, exp_floor), 2, 65535, "bad space settings" },
		{ offsetof(struct vbas_sb, flags), 4, VBAS_SBF_RMAP | VBAS_SBF_NAMES | VBAS_SBF_SHRINK,
		  "a shrink's target outside the pool" },
		{ offsetof(struct vbas_sb, flags), 4, VBAS_SBF_RMAP | VBAS_SBF_NAMES | 0x10,
		  "unknown feature flags" },
		{ offsetof(struct vbas_sb, flags), 4, VBAS_SBF_RMAP,
		  "a name index root without the name index" },
		{ offsetof(struct vbas_sb, names_root), 8, POOL / BS, "tree root outside the pool" },
		{ offsetof(struct vbas_sb, names_root_txid), 8, 0, "tree root of a bad transaction" },
		{ offsetof(struct vbas_sb, shrink_to), 8, 100, "a shrink's target without a shrink" },
		{ offsetof(struct vbas_sb, intents), 4, 9, "an intent of an unknown type" },
		{ offsetof(struct vbas_sb, intents), 4, VBAS_INTENT_REFLINK,
		  "a reflink intent with bad volumes" },
		{ offsetof(struct vbas_sb, intents) + 64, 4, VBAS_INTENT_UNSHARE,
		  "an unshare intent with a bad volume" },
		{ offsetof(struct vbas_sb, intents) + 16, 8, 1, "a free intent slot that is not zero" },
		{ offsetof(struct vbas_sb, flags), 4, VBAS_SBF_RMAP | VBAS_SBF_NAMES | VBAS_SBF_INTENTS,
		  "intent slots and the intents flag disagree" },
	};
	for (size_t i = 0; i < sizeof(sbc) / sizeof(sbc[0]); i++) {
		uint8_t *img = fresh();
		for (unsigned slot = 0; slot < 2; slot++) {
			uint8_t *sb = img + slot * BS;
			if (sbc[i].width == 2)
				st_le16(sb + sbc[i].off, (uint16_t)sbc[i].val);
			else if (sbc[i].width == 4)
				st_le32(sb + sbc[i].off, (uint32_t)sbc[i].val);
			else
				st_le64(sb + sbc[i].off, sbc[i].val);
			st_le32(sb, sb_csum((struct vbas_sb *)sb));
		}
		struct vbas_dev *dev = vbas_memdev_create(POOL);
		struct vbas_pool *p = NULL;
		memcpy(vbas_memdev_image(dev), img, POOL);
		int r = vbas_open_dev(dev, NULL, &p);
		if (r != -EUCLEAN || !strstr(vbas_errmsg(), sbc[i].why))
			fail_msg("superblock field at %zu = %" PRIu64 ": open gave %d: %s", sbc[i].off,
				 sbc[i].val, r, vbas_errmsg());
		dev_destroy(dev);
		free(img);
	}
}

/* A mapping record that points at a live tree node: a write to that
 * offset must not land on the node (it would corrupt metadata a pool
 * never exposes as data). */
static void t_map_onto_metadata(void **state)
{
	(void)state;
	uint8_t *img = fresh();
	uint64_t leaf = 0, victim = refc.blk[0];
	for (unsigned i = 0; i < map_a.n && !leaf; i++)
		if (map_a.level[i] == 0)
			leaf = map_a.blk[i];
	uint8_t *n = node(img, leaf), before[BS];
	uint64_t lblk = ld_le64(MAPREC(n, 0));
	st_le64(MAPREC(n, 0) + 8, victim);
	st_le32(MAPREC(n, 0) + 16, 1);
	reseal(n);
	memcpy(before, node(img, victim), BS);

	struct vbas_dev *dev = vbas_memdev_create(POOL);
	struct vbas_pool *p = NULL;
	struct vbas_vol *v;
	uint8_t buf[BS];
	memcpy(vbas_memdev_image(dev), img, POOL);
	assert_ok(vbas_open_dev(dev, NULL, &p));
	assert_ok(vbas_vol_open(p, "a", &v));
	memset(buf, 0xee, sizeof(buf));
	int r = vbas_pwrite(v, buf, BS, lblk * BS, VBAS_IO_FUA);
	if (r != -EUCLEAN || !strstr(vbas_errmsg(), "holds it as metadata"))
		fail_msg("write onto a metadata block gave %d: %s", r, vbas_errmsg());
	vbas_vol_close(v);
	vbas_close(p);
	if (memcmp(before, vbas_memdev_image(dev) + victim * BS, BS))
		fail_msg("the write changed metadata block %" PRIu64, victim);
	dev_destroy(dev);
	free(img);
}

/* vbas_map_begin takes only the public flags: the internal ones promise
 * a range lock or reserved metadata the caller cannot hold. */
static void t_map_flags(void **state)
{
	(void)state;
	struct vbas_dev *dev = vbas_memdev_create(POOL);
	struct vbas_pool *p = NULL;
	struct vbas_vol *v;
	struct vbas_iomap m;
	memcpy(vbas_memdev_image(dev), pristine, POOL);
	assert_ok(vbas_open_dev(dev, NULL, &p));
	assert_ok(vbas_vol_open(p, "a", &v));
	static const unsigned bad[] = { 0x100, 0x200, 0x400, 0x800 | 0x400, 0x80000000u };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(vbas_map_begin(v, 0, BS, VBAS_MAP_WRITE | bad[i], NULL, &m), -EINVAL);
		assert_non_null(strstr(vbas_errmsg(), "unknown flags"));
	}
	assert_ok(vbas_map_begin(v, 0, BS, VBAS_MAP_READ, NULL, &m));
	assert_ok(vbas_map_end(v, &m, m.length, 0));
	assert_ok(vbas_vol_close(v));
	assert_ok(vbas_close(p));
	dev_destroy(dev);
}

int main(void)
{
	signal(SIGALRM, on_alarm);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_pristine),
		cmocka_unit_test(t_cases),
		cmocka_unit_test(t_superblock_fields),
		cmocka_unit_test(t_map_flags),
		cmocka_unit_test(t_map_onto_metadata),
	};
	int r = setup(NULL);
	if (r)
		return r;
	r = RUN("hostile", tests);
	teardown(NULL);
	return r;
}
