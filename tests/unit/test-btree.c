/* The generic B+tree against simple models: random inserts and deletes,
 * splits and merges at every level, range iteration, lookups, interval
 * queries, shadowing across commits, and node reference counts. */
#include "common.h"

#include <inttypes.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Test tree: u64 key -> u64 value. */
static int test_check_rec(const struct bt_env *env, const void *rec, char *why, size_t len)
{
	(void)env; (void)rec; (void)why; (void)len;
	return 0;
}

static const struct vbas_btree_ops test_ops_kv = {
	.name = "test",
	.tree_type = VBAS_TREE_TEST,
	.key_size = 8,
	.val_size = 8,
	.cmp = bt_cmp_u64,
	.check_rec = test_check_rec,
	.fmt_key = bt_fmt_u64,
};

/* Record ownership (rec_owner): what a reverse map would hold, per key
 * and owner: the number of leaves of that owner holding the key. */
#define OWN_KEYS 4000
#define OWN_TREES 5
static int own_count[OWN_TREES + 1][OWN_KEYS];

static int own_hook(void *ctx, const void *rec, uint64_t owner, int delta)
{
	(void)ctx;
	uint64_t k = ld_le64(rec);
	if (owner < 1 || owner > OWN_TREES || k >= OWN_KEYS)
		fail_msg("rec_owner: key %" PRIu64 " owner %" PRIu64, k, owner);
	own_count[owner][k] += delta;
	if (own_count[owner][k] < 0)
		fail_msg("rec_owner: key %" PRIu64 " of owner %" PRIu64 " left more leaves than it "
			 "entered", k, owner);
	return 0;
}

static const struct vbas_btree_ops test_ops_own = {
	.name = "owned test",
	.tree_type = VBAS_TREE_TEST,
	.key_size = 8,
	.val_size = 8,
	.cmp = bt_cmp_u64,
	.check_rec = test_check_rec,
	.rec_owner = own_hook,
	.fmt_key = bt_fmt_u64,
};

/* Interval tree: key = start, value = last (inclusive); high key = last. */
static void ival_high(const void *rec, void *key)
{
	memcpy(key, (const uint8_t *)rec + 8, 8);
}

static const struct vbas_btree_ops test_ops_ival = {
	.name = "interval test",
	.tree_type = VBAS_TREE_TEST_OVERLAP,
	.key_size = 8,
	.val_size = 8,
	.overlapping = 1,
	.cmp = bt_cmp_u64,
	.high_key = ival_high,
	.fmt_key = bt_fmt_u64,
};

struct fixture {
	struct vbas_dev *dev;
	struct vbas_pool *p;
	struct vbas_btree t;
};

static void setup(struct fixture *f, const struct vbas_btree_ops *ops, uint32_t fanout)
{
	f->dev = mem_pool(256ull << 20, 4096, fanout);
	f->p = open_mem(f->dev, 4ull << 20);     /* small cache: eviction too */
	memset(&f->t, 0, sizeof(f->t));
	f->t.ops = ops;
	f->t.env = &f->p->env;
	f->p->env.types[ops->tree_type] = ops;
	f->t.owner = 77;
}

static void teardown(struct fixture *f)
{
	/* The test tree is not known to the pool: its nodes would be leaks,
	 * so no commit on close. */
	f->p->rdonly = 1;
	assert_ok(vbas_close(f->p));
	dev_destroy(f->dev);
}

static void mkrec(uint8_t *rec, uint64_t k, uint64_t v)
{
	st_le64(rec, k);
	st_le64(rec + 8, v);
}

static void report_fail(void *arg, const char *fmt, ...)
{
	va_list ap;
	(void)arg;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
}

static int count_node(void *arg, uint64_t blk, unsigned level)
{
	(void)blk; (void)level;
	(*(uint64_t *)arg)++;
	return 0;
}

/* Structure is valid, and the pool's metadata count equals the nodes of
 * its own trees plus the test tree's (every node counted exactly once). */
static void verify_tree(struct fixture *f)
{
	struct bt_check_cbs cbs = { .report = report_fail };
	uint64_t nodes = 0, refc_nodes = 0, vt_nodes = 0;
	assert_ok(space_drain(f->p));
	cbs.node_cb = count_node;
	cbs.arg = &nodes;
	assert_ok(bt_check(&f->t, &cbs, NULL, NULL));
	cbs.arg = &refc_nodes;
	assert_ok(bt_check(&f->p->sp.refc, &cbs, NULL, NULL));
	cbs.arg = &vt_nodes;
	assert_ok(bt_check(&f->p->voltab, &cbs, NULL, NULL));
	assert_int_equal(f->p->sp.meta_used, nodes + refc_nodes + vt_nodes);
}

struct collect {
	uint64_t *keys, *vals;
	size_t n, cap;
};

static int collect_cb(void *arg, const void *rec)
{
	struct collect *c = arg;
	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 1024;
		c->keys = realloc(c->keys, c->cap * 8);
		c->vals = realloc(c->vals, c->cap * 8);
	}
	c->keys[c->n] = ld_le64(rec);
	c->vals[c->n] = ld_le64((const uint8_t *)rec + 8);
	c->n++;
	return 0;
}

/* The model: present[k] says whether key k is in the tree, value k*3+1. */
static void compare_model(struct fixture *f, const uint8_t *present, uint64_t range, struct rng *r)
{
	struct collect c = { 0 };
	size_t j = 0;
	assert_ok(bt_iter(&f->t, NULL, collect_cb, &c) < 0);
	for (uint64_t k = 0; k < range; k++) {
		if (!present[k])
			continue;
		assert_true(j < c.n);
		assert_int_equal(c.keys[j], k);
		assert_int_equal(c.vals[j], k * 3 + 1);
		j++;
	}
	assert_int_equal(j, c.n);
	/* Random point lookups in every mode. */
	for (int i = 0; i < 200; i++) {
		uint64_t k = rng_below(r, range + 2);
		uint8_t key[8], rec[16];
		st_le64(key, k);
		int e = bt_lookup(&f->t, key, BT_EQ, rec);
		assert_int_equal(e == 0, k < range && present[k]);
		int64_t le = -1, ge = -1;
		for (int64_t x = (int64_t)(k < range ? k : range - 1); x >= 0; x--)
			if (present[x]) { le = x; break; }
		for (uint64_t x = k; x < range; x++)
			if (present[x]) { ge = (int64_t)x; break; }
		e = bt_lookup(&f->t, key, BT_LE, rec);
		assert_int_equal(e == 0, le >= 0);
		if (!e)
			assert_int_equal(ld_le64(rec), (uint64_t)le);
		e = bt_lookup(&f->t, key, BT_GE, rec);
		assert_int_equal(e == 0, ge >= 0);
		if (!e)
			assert_int_equal(ld_le64(rec), (uint64_t)ge);
	}
	/* Iteration from a random start. */
	uint64_t s = rng_below(r, range);
	uint8_t sk[8];
	st_le64(sk, s);
	c.n = 0;
	assert_ok(bt_iter(&f->t, sk, collect_cb, &c) < 0);
	j = 0;
	for (uint64_t k = s; k < range; k++)
		if (present[k]) {
			assert_true(j < c.n);
			assert_int_equal(c.keys[j++], k);
		}
	assert_int_equal(j, c.n);
	free(c.keys);
	free(c.vals);
}

static void random_ops(uint32_t fanout, uint64_t nops, uint64_t range, uint64_t seed)
{
	struct fixture f;
	struct rng r = { test_seed(seed) };
	uint8_t *present = calloc(range, 1);
	uint64_t count = 0;
	setup(&f, &test_ops_kv, fanout);
	for (uint64_t i = 0; i < nops; i++) {
		uint64_t k = rng_below(&r, range);
		uint8_t rec[16];
		/* Grow to about 60% full, then churn. */
		int ins = count < range * 6 / 10 ? rng_below(&r, 10) < 7 : rng_below(&r, 2);
		mkrec(rec, k, k * 3 + 1);
		if (ins) {
			int e = bt_insert(&f.t, rec);
			assert_int_equal(e, present[k] ? -EEXIST : 0);
			if (!present[k])
				count++;
			present[k] = 1;
		} else {
			int e = bt_delete(&f.t, rec, NULL);
			assert_int_equal(e, present[k] ? 0 : -ENOENT);
			if (present[k])
				count--;
			present[k] = 0;
		}
		if (i % 997 == 0)
			assert_ok(space_drain(f.p));
		if (i % (nops / 8 + 1) == 0) {
			verify_tree(&f);
			compare_model(&f, present, range, &r);
			/* A commit: from now on every node is shadowed anew. */
			assert_ok(vbas_flush(f.p));
		}
	}
	/* Empty it completely. */
	for (uint64_t k = 0; k < range; k++)
		if (present[k]) {
			uint8_t key[8];
			st_le64(key, k);
			assert_ok(bt_delete(&f.t, key, NULL));
			present[k] = 0;
		}
	assert_int_equal(f.t.root, 0);
	verify_tree(&f);
	free(present);
	teardown(&f);
}

static void t_random_default_fanout(void **state)
{
	(void)state;
	random_ops(0, test_ops(200000), 60000, 1);
}

static void t_random_small_fanout(void **state)
{
	(void)state;
	random_ops(5, test_ops(200000), 20000, 2);
}

/* Splits and merges at every level: fanout 4 gives a tree of many levels;
 * every step is checked against the model. */
static int count_leaf(void *arg, uint64_t blk, unsigned level)
{
	(void)blk;
	if (level == 0)
		(*(uint64_t *)arg)++;
	return 0;
}

/* Keys inserted in ascending order (a volume written front to back,
 * blocks allocated in order) leave full leaves behind them; keys in
 * random order still give leaves at least half full on average. */
static void t_append_fill(void **state)
{
	struct bt_check_cbs cbs = { .report = report_fail, .node_cb = count_leaf };
	const uint64_t n = 50000;
	uint64_t leaves = 0, nodes = 0, recs = 0;
	(void)state;
	for (int pass = 0; pass < 2; pass++) {
		struct fixture f;
		struct rng r = { test_seed(9) };
		uint64_t *perm = malloc(n * sizeof(*perm));
		for (uint64_t i = 0; i < n; i++)
			perm[i] = i;
		if (pass == 1)
			for (uint64_t i = n - 1; i > 0; i--) {
				uint64_t j = rng_below(&r, i + 1), x = perm[i];
				perm[i] = perm[j];
				perm[j] = x;
			}
		setup(&f, &test_ops_kv, 0);
		for (uint64_t i = 0; i < n; i++) {
			uint8_t rec[16];
			mkrec(rec, perm[i], perm[i] * 3 + 1);
			assert_ok(bt_insert(&f.t, rec));
		}
		leaves = nodes = recs = 0;
		cbs.arg = &leaves;
		assert_ok(bt_check(&f.t, &cbs, &nodes, &recs));
		assert_int_equal(recs, n);
		unsigned cap = bt_leaf_cap(&f.t);
		uint64_t full = (n + cap - 2) / (cap - 1);
		print_message("# %s inserts: %llu leaves of %u records (%llu if full)\n",
			      pass ? "random" : "ascending", (unsigned long long)leaves,
			      cap, (unsigned long long)full);
		if (pass == 0)
			assert_true(leaves <= full + 1);
		else
			assert_true(leaves <= 2 * full + 1);
		free(perm);
		teardown(&f);
	}
}

static void t_every_level(void **state)
{
	struct fixture f;
	const uint64_t n = 700;
	uint8_t *present = calloc(n, 1);
	struct rng r = { test_seed(3) };
	unsigned h, maxh = 0;
	(void)state;
	setup(&f, &test_ops_kv, 4);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t k = (i * 7919) % n;     /* a permutation of 0..n-1 */
		uint8_t rec[16];
		mkrec(rec, k, k * 3 + 1);
		assert_ok(bt_insert(&f.t, rec));
		present[k] = 1;
		assert_ok(bt_height(&f.t, &h));
		if (h > maxh)
			maxh = h;
		if (i % 50 == 0 || i < 40) {
			verify_tree(&f);
			compare_model(&f, present, n, &r);
		}
	}
	assert_true(maxh >= 5);
	verify_tree(&f);
	assert_ok(vbas_flush(f.p));
	for (uint64_t i = 0; i < n; i++) {
		uint64_t k = (i * 104729) % n;
		uint8_t key[8];
		st_le64(key, k);
		assert_ok(bt_delete(&f.t, key, NULL));
		present[k] = 0;
		if (i % 50 == 0 || i > n - 40) {
			verify_tree(&f);
			compare_model(&f, present, n, &r);
		}
		if (i % 100 == 0)
			assert_ok(vbas_flush(f.p));
	}
	assert_int_equal(f.t.root, 0);
	free(present);
	teardown(&f);
}

/* bt_update changes values in place (after shadowing) and not keys. */
static void t_update(void **state)
{
	struct fixture f;
	uint8_t rec[16], out[16];
	(void)state;
	setup(&f, &test_ops_kv, 6);
	for (uint64_t k = 0; k < 500; k++) {
		mkrec(rec, k * 2, k);
		assert_ok(bt_insert(&f.t, rec));
	}
	assert_ok(vbas_flush(f.p));
	for (uint64_t k = 0; k < 500; k++) {
		mkrec(rec, k * 2, k + 1000);
		assert_ok(bt_update(&f.t, rec));
	}
	mkrec(rec, 3, 0);
	assert_int_equal(bt_update(&f.t, rec), -ENOENT);
	for (uint64_t k = 0; k < 500; k++) {
		mkrec(rec, k * 2, 0);
		assert_ok(bt_lookup(&f.t, rec, BT_EQ, out));
		assert_int_equal(ld_le64(out + 8), k + 1000);
	}
	verify_tree(&f);
	teardown(&f);
}

struct ival_hits {
	uint64_t *starts;
	size_t n;
};

static int ival_cb(void *arg, const void *rec)
{
	struct ival_hits *h = arg;
	h->starts[h->n++] = ld_le64(rec);
	return 0;
}

/* What the leaves say: every distinct leaf reachable from the live trees
 * counts each of its records once, under the owner in its header. */
struct own_walk {
	struct vbas_pool *p;
	int (*seen)[OWN_KEYS];
	uint64_t *blks;
	size_t n, cap;
};

static int own_node(void *arg, uint64_t blk, unsigned level)
{
	struct own_walk *w = arg;
	for (size_t i = 0; i < w->n; i++)
		if (w->blks[i] == blk)
			return BT_CHECK_SEEN;
	if (w->n == w->cap) {
		w->cap = w->cap ? 2 * w->cap : 256;
		w->blks = realloc(w->blks, w->cap * sizeof(*w->blks));
	}
	w->blks[w->n++] = blk;
	if (level)
		return 0;
	struct cblock *b;
	assert_ok(cache_read(w->p->cache, blk, &b));
	const struct vbas_node_hdr *h = b->data;
	uint64_t owner = le64_get(h->owner);
	assert_true(owner >= 1 && owner <= OWN_TREES);
	for (unsigned i = 0; i < le16_get(h->nrecs); i++)
		w->seen[owner][ld_le64((const uint8_t *)b->data + sizeof(*h) + i * 16)]++;
	cache_put(w->p->cache, b);
	return 0;
}

static void own_verify(struct vbas_pool *p, struct vbas_btree *t, const int *live)
{
	static int seen[OWN_TREES + 1][OWN_KEYS];
	struct own_walk w = { p, seen, NULL, 0, 0 };
	struct bt_check_cbs cbs = { .report = report_fail, .node_cb = own_node, .arg = &w };
	memset(seen, 0, sizeof(seen));
	for (int i = 1; i <= OWN_TREES; i++)
		if (live[i])
			assert_ok(bt_check(&t[i], &cbs, NULL, NULL));
	for (int o = 1; o <= OWN_TREES; o++)
		for (int k = 0; k < OWN_KEYS; k++)
			if (seen[o][k] != own_count[o][k])
				fail_msg("key %d of owner %d: %d leaves hold it, the hook counted %d", k, o,
					 seen[o][k], own_count[o][k]);
	free(w.blks);
}

/* N random inserts, deletes (DEL_PCT of them) and updates on tree T. */
static void own_churn(struct vbas_btree *t, struct rng *r, int n, unsigned del_pct)
{
	for (int step = 0; step < n; step++) {
		uint64_t k = rng_below(r, 600), what = rng_below(r, 100);
		uint8_t rec[16];
		mkrec(rec, k, k * 3 + 1);
		int e;
		if (what < del_pct) {
			e = bt_delete(t, rec, NULL);
		} else if (what < del_pct + 10) {
			mkrec(rec, k, k * 3 + 2);
			e = bt_update(t, rec);
		} else {
			e = bt_insert(t, rec);
			e = e == -EEXIST ? 0 : e;
		}
		assert_true(e == 0 || e == -ENOENT);
	}
}

/* Tree TO shares tree FROM's root, as a snapshot does (committed first:
 * shared nodes are never written in place). */
static void own_share(struct fixture *f, struct vbas_btree *from, struct vbas_btree *to)
{
	assert_ok(vbas_flush(f->p));
	to->root = from->root;
	to->root_txid = from->root_txid;
	assert_ok(f->p->env.inc_meta(f->p->env.ctx, from->root));
}

static void own_drop(struct vbas_btree *t)
{
	uint8_t cursor[8] = { 0 };
	int done = 0;
	while (t->root && !done)
		assert_ok(bt_drop(t, cursor, 1000, &done));
	t->root = 0;
}

/* Trees that share nodes, as snapshots do: the hook's counts always equal
 * what the leaves hold, through inserts, updates, deletes, copies of
 * shared leaves, splits, trees released with bt_drop, and merges and
 * rebalancing between leaves of different owners (a tree whose origin is
 * gone holds leaves the origin wrote beside leaves of its own). */
static void t_owners(void **state)
{
	struct fixture f;
	struct rng r = { test_seed(6) };
	struct vbas_btree t[OWN_TREES + 1];
	int live[OWN_TREES + 1] = { 0 };
	(void)state;
	memset(own_count, 0, sizeof(own_count));
	setup(&f, &test_ops_own, 5);
	for (int i = 1; i <= OWN_TREES; i++) {
		t[i] = f.t;
		t[i].owner = (uint64_t)i;
	}
	live[1] = 1;
	own_churn(&t[1], &r, 800, 10);
	own_verify(f.p, t, live);
	/* Snapshots of snapshots, each written, then the older ones go. */
	for (int i = 2; i <= OWN_TREES; i++) {
		own_share(&f, &t[i - 1], &t[i]);
		live[i] = 1;
		for (int round = 0; round < 4; round++) {
			own_churn(&t[i], &r, 150, 40);
			own_churn(&t[i - 1], &r, 50, 40);
			if (round % 2)
				assert_ok(vbas_flush(f.p));
			own_verify(f.p, t, live);
		}
		if (i >= 3) {
			own_drop(&t[i - 2]);
			live[i - 2] = 0;
			own_verify(f.p, t, live);
			/* Mostly deletes: leaves of three owners merge. */
			for (int round = 0; round < 4; round++) {
				own_churn(&t[i], &r, 200, 70);
				own_churn(&t[i - 1], &r, 100, 60);
				own_verify(f.p, t, live);
			}
		}
	}
	for (int i = 1; i <= OWN_TREES; i++)
		if (live[i]) {
			own_drop(&t[i]);
			live[i] = 0;
		}
	own_verify(f.p, t, live);
	for (int o = 1; o <= OWN_TREES; o++)
		for (int k = 0; k < OWN_KEYS; k++)
			assert_int_equal(own_count[o][k], 0);
	teardown(&f);
}

static void t_interval_query(void **state)
{
	struct fixture f;
	struct rng r = { test_seed(4) };
	const uint64_t n = 3000, space = 100000;
	uint64_t *s = malloc(n * 8), *e = malloc(n * 8);
	uint8_t *used = calloc(space, 1);
	struct ival_hits h = { malloc(n * 8), 0 };
	(void)state;
	for (int fan = 0; fan < 2; fan++) {
		setup(&f, &test_ops_ival, fan ? 5 : 0);
		memset(used, 0, space);
		for (uint64_t i = 0; i < n; i++) {
			do
				s[i] = rng_below(&r, space);
			while (used[s[i]]);
			used[s[i]] = 1;
			/* Mostly short intervals, a few long ones that overlap
			 * many others. */
			e[i] = s[i] + (rng_below(&r, 20) ? rng_below(&r, 50) : rng_below(&r, 20000));
			uint8_t rec[16];
			mkrec(rec, s[i], e[i]);
			assert_ok(bt_insert(&f.t, rec));
			if (i % 500 == 0)
				verify_tree(&f);
		}
		/* Delete a third, so high keys must shrink correctly. */
		for (uint64_t i = 0; i < n; i += 3) {
			uint8_t key[8];
			st_le64(key, s[i]);
			assert_ok(bt_delete(&f.t, key, NULL));
			used[s[i]] = 2;
		}
		verify_tree(&f);
		for (int q = 0; q < 300; q++) {
			uint64_t lo = rng_below(&r, space + 100), hi = lo + rng_below(&r, 3000);
			uint8_t lk[8], hk[8];
			st_le64(lk, lo);
			st_le64(hk, hi);
			h.n = 0;
			assert_ok(bt_query_overlap(&f.t, lk, hk, ival_cb, &h));
			size_t want = 0;
			for (uint64_t i = 0; i < n; i++) {
				if (i % 3 == 0)
					continue;
				if (s[i] <= hi && e[i] >= lo) {
					int found = 0;
					for (size_t j = 0; j < h.n; j++)
						found |= h.starts[j] == s[i];
					assert_true(found);
					want++;
				}
			}
			assert_int_equal(h.n, want);
			for (size_t j = 1; j < h.n; j++)
				assert_true(h.starts[j - 1] < h.starts[j]);
		}
		/* Point queries at every boundary of every record (either
		 * side of its start and of its end), against brute force;
		 * on the deep tree (fanout 5). */
		uint32_t *at = malloc(space * sizeof(*at));
		for (uint64_t i = 0; i < n; i++)
			at[s[i]] = (uint32_t)i;
		for (uint64_t i = 0; fan && i < n; i++) {
			uint64_t pts[4] = { s[i] ? s[i] - 1 : 0, s[i], e[i], e[i] + 1 };
			for (int k = 0; k < 4; k++) {
				uint8_t pk[8];
				st_le64(pk, pts[k]);
				h.n = 0;
				assert_ok(bt_query_overlap(&f.t, pk, pk, ival_cb, &h));
				size_t want = 0;
				for (uint64_t j = 0; j < n; j++)
					if (j % 3 && s[j] <= pts[k] && e[j] >= pts[k])
						want++;
				assert_int_equal(h.n, want);
				for (size_t j = 0; j < h.n; j++) {
					assert_true(h.starts[j] < space && used[h.starts[j]] == 1);
					uint64_t x = at[h.starts[j]];
					assert_true(s[x] <= pts[k] && e[x] >= pts[k]);
				}
			}
		}
		free(at);
		teardown(&f);
	}
	free(s);
	free(e);
	free(used);
	free(h.starts);
}

/* A node corrupted on the device is detected on read by its checksum and
 * reported with its block number; nothing crashes. */
static void t_corrupt_node(void **state)
{
	struct fixture f;
	uint8_t rec[16];
	(void)state;
	setup(&f, &test_ops_kv, 0);
	for (uint64_t k = 0; k < 2000; k++) {
		mkrec(rec, k, k * 3 + 1);
		assert_ok(bt_insert(&f.t, rec));
	}
	assert_ok(vbas_flush(f.p));
	uint64_t root = f.t.root;
	/* Reopen on a copy with a flipped byte in the root node. */
	struct vbas_dev *d2 = vbas_memdev_clone(f.dev);
	vbas_memdev_image(d2)[root * 4096 + 100] ^= 0x40;
	struct vbas_dev *d3 = vbas_memdev_clone(d2);
	dev_destroy(d2);
	struct vbas_pool *p2 = open_mem(d3, 0);
	struct vbas_btree t2 = f.t;
	t2.env = &p2->env;
	mkrec(rec, 5, 0);
	int e = bt_lookup(&t2, rec, BT_EQ, rec);
	assert_int_equal(e, -EBADMSG);
	char want[64];
	snprintf(want, sizeof(want), "block %llu", (unsigned long long)root);
	assert_non_null(strstr(vbas_errmsg(), want));
	assert_non_null(strstr(vbas_errmsg(), "checksum"));
	p2->rdonly = 1;
	vbas_close(p2);
	dev_destroy(d3);
	teardown(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_random_default_fanout),
		cmocka_unit_test(t_random_small_fanout),
		cmocka_unit_test(t_every_level),
		cmocka_unit_test(t_append_fill),
		cmocka_unit_test(t_update),
		cmocka_unit_test(t_interval_query),
		cmocka_unit_test(t_owners),
		cmocka_unit_test(t_corrupt_node),
	};
	return RUN("btree", tests);
}
