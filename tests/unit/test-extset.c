/* The extent set (lib/extset.h) against a bitmap model: tens of thousands
 * of random adds, removes and overlap queries over a small range, so that
 * extents touch, overlap, split and merge all the time.  After every step
 * the set must hold exactly the runs of the bitmap: sorted, disjoint,
 * merged (no two extents touch), no empty extent, and the right total.
 * The same run is repeated just below UINT64_MAX.  Edge cases: the empty
 * set, zero lengths, block 0, the last representable block, clear and
 * free. */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RANGE 512u

struct model {
	uint64_t base;          /* block number of bit 0 */
	uint8_t bit[RANGE];
	uint64_t count;
};

static int all_set(const struct model *m, uint64_t s, uint64_t len)
{
	for (uint64_t i = s; i < s + len; i++)
		if (!m->bit[i])
			return 0;
	return 1;
}

static int any_set(const struct model *m, uint64_t s, uint64_t len)
{
	for (uint64_t i = s; i < s + len; i++)
		if (m->bit[i])
			return 1;
	return 0;
}

/* The set is exactly the runs of the model, in order, and well formed. */
static void compare(const struct extset *s, const struct model *m)
{
	size_t j = 0;
	uint64_t sum = 0;
	for (size_t i = 0; i < s->n; i++) {
		const struct ext *e = &s->v[i];
		if (e->len == 0)
			fail_msg("extent %zu has length 0", i);
		if (i > 0) {
			const struct ext *p = &s->v[i - 1];
			/* Sorted, disjoint and merged: a gap of at least one. */
			if (p->start + p->len >= e->start)
				fail_msg("extents %zu (%llu+%llu) and %zu (%llu+%llu) are not "
					 "separated", i - 1, (unsigned long long)p->start,
					 (unsigned long long)p->len, i, (unsigned long long)e->start,
					 (unsigned long long)e->len);
		}
		sum += e->len;
	}
	assert_int_equal(sum, s->total);
	assert_int_equal(s->total, m->count);
	assert_true(s->n <= s->cap || (s->n == 0 && s->cap == 0));
	for (uint64_t b = 0; b < RANGE;) {
		if (!m->bit[b]) {
			b++;
			continue;
		}
		uint64_t e = b;
		while (e < RANGE && m->bit[e])
			e++;
		if (j >= s->n)
			fail_msg("run %llu+%llu of the model is missing", (unsigned long long)b,
				 (unsigned long long)(e - b));
		assert_int_equal(s->v[j].start, m->base + b);
		assert_int_equal(s->v[j].len, e - b);
		j++;
		b = e;
	}
	assert_int_equal(j, s->n);
}

/* first_overlap(start, end) against the model: the extent holding the
 * first set bit of [start, end), or NULL. */
static void check_overlap(const struct extset *s, const struct model *m, uint64_t a, uint64_t b)
{
	const struct ext *e = extset_first_overlap(s, m->base + a, m->base + b);
	uint64_t f = a;
	while (f < b && !m->bit[f])
		f++;
	if (f >= b) {
		if (e)
			fail_msg("first_overlap(%llu, %llu) = %llu+%llu, the model has nothing there",
				 (unsigned long long)a, (unsigned long long)b,
				 (unsigned long long)(e->start - m->base), (unsigned long long)e->len);
		return;
	}
	uint64_t rs = f, re = f;
	while (rs > 0 && m->bit[rs - 1])
		rs--;
	while (re < RANGE && m->bit[re])
		re++;
	if (!e)
		fail_msg("first_overlap(%llu, %llu) = NULL, the model has block %llu",
			 (unsigned long long)a, (unsigned long long)b, (unsigned long long)f);
	assert_int_equal(e->start, m->base + rs);
	assert_int_equal(e->len, re - rs);
	/* It points into the set itself. */
	assert_true(e >= s->v && e < s->v + s->n);
}

/* A length: mostly short, sometimes long, now and then zero. */
static uint64_t rand_len(struct rng *r)
{
	uint64_t k = rng_below(r, 100);
	if (k < 3)
		return 0;
	if (k < 80)
		return 1 + rng_below(r, 8);
	return 1 + rng_below(r, 96);
}

static void random_run(uint64_t base, uint64_t seed, uint64_t nops)
{
	struct extset s = { 0 };
	struct model *m = calloc(1, sizeof(*m));
	struct rng r = { test_seed(seed) };
	uint64_t adds = 0, removes = 0, merges = 0, splits = 0, eexist = 0, enoent = 0;
	size_t maxn = 0;
	assert_non_null(m);
	m->base = base;
	for (uint64_t i = 0; i < nops; i++) {
		uint64_t op = rng_below(&r, 100), a, len;
		int e;
		/* Keep the set between about 30% and 70% full. */
		int fill = m->count < RANGE * 3 / 10 ? 15 : m->count > RANGE * 7 / 10 ? -15 : 0;
		len = rand_len(&r);
		if (len > RANGE)
			len = RANGE;
		a = rng_below(&r, RANGE - len + 1);
		if ((int)op < 25 + fill) {
			/* Add anywhere: often overlaps. */
			size_t n0 = s.n;
			e = extset_add(&s, base + a, len);
			if (len && any_set(m, a, len)) {
				assert_int_equal(e, -EEXIST);
				eexist++;
			} else {
				assert_int_equal(e, 0);
				int l = a > 0 && m->bit[a - 1], rr = a + len < RANGE && m->bit[a + len];
				memset(m->bit + a, 1, len);
				m->count += len;
				if (len && (l || rr))
					merges++;
				if (len)
					assert_int_equal(s.n, n0 + 1 - l - rr);
				adds++;
			}
		} else if ((int)op < 50 + fill) {
			/* Add part of a gap, often all of it so both sides merge. */
			uint64_t g = rng_below(&r, RANGE);
			while (g < RANGE && m->bit[g])
				g++;
			if (g == RANGE)
				continue;
			uint64_t ge = g;
			while (ge < RANGE && !m->bit[ge])
				ge++;
			uint64_t gs = g, gl = ge - g;
			if (rng_below(&r, 2)) {
				gs = g + rng_below(&r, gl);
				gl = 1 + rng_below(&r, ge - gs);
			}
			assert_int_equal(extset_add(&s, base + gs, gl), 0);
			memset(m->bit + gs, 1, gl);
			m->count += gl;
			adds++;
		} else if (op < 70) {
			/* Remove anywhere: often not all in. */
			size_t n0 = s.n;
			e = extset_remove(&s, base + a, len);
			if (len && !all_set(m, a, len)) {
				assert_int_equal(e, -ENOENT);
				enoent++;
			} else {
				assert_int_equal(e, 0);
				int l = a > 0 && m->bit[a - 1], rr = a + len < RANGE && m->bit[a + len];
				memset(m->bit + a, 0, len);
				m->count -= len;
				if (len && l && rr)
					splits++;
				if (len)
					assert_int_equal(s.n, n0 - 1 + l + rr);
				removes++;
			}
		} else if (op < 88) {
			/* Remove part of an extent: its start, its end, its
			 * middle (a split) or all of it. */
			if (!s.n)
				continue;
			const struct ext *x = &s.v[rng_below(&r, s.n)];
			uint64_t xs = x->start - base, xl = x->len, rs = xs, rl = xl;
			switch (rng_below(&r, 4)) {
			case 0: rl = 1 + rng_below(&r, xl); break;
			case 1: rl = 1 + rng_below(&r, xl); rs = xs + xl - rl; break;
			case 2: rs = xs + rng_below(&r, xl); rl = 1 + rng_below(&r, xs + xl - rs); break;
			default: break;
			}
			assert_int_equal(extset_remove(&s, base + rs, rl), 0);
			memset(m->bit + rs, 0, rl);
			m->count -= rl;
			removes++;
		} else {
			/* Queries, the set unchanged. */
			for (int q = 0; q < 4; q++) {
				uint64_t qa = rng_below(&r, RANGE), qb = qa + 1 + rng_below(&r, RANGE - qa);
				check_overlap(&s, m, qa, qb);
			}
		}
		compare(&s, m);
		if (s.n > maxn)
			maxn = s.n;
		/* Now and then, start over from empty. */
		if (rng_below(&r, 20000) == 0) {
			extset_clear(&s);
			memset(m->bit, 0, RANGE);
			m->count = 0;
			compare(&s, m);
		}
	}
	print_message("# base %llu: %llu adds (%llu merged), %llu removes (%llu split), "
		      "%llu -EEXIST, %llu -ENOENT, up to %zu extents\n",
		      (unsigned long long)base, (unsigned long long)adds, (unsigned long long)merges,
		      (unsigned long long)removes, (unsigned long long)splits,
		      (unsigned long long)eexist, (unsigned long long)enoent, maxn);
	/* The run must have exercised every path. */
	assert_true(merges > 100 && splits > 100 && eexist > 100 && enoent > 100);
	assert_true(maxn > 20);
	extset_free(&s);
	free(m);
}

static void t_random_low(void **state)
{
	(void)state;
	random_run(0, 11, test_ops(60000));
}

static void t_random_high(void **state)
{
	(void)state;
	/* The last extent can end exactly at UINT64_MAX. */
	random_run(UINT64_MAX - RANGE, 12, test_ops(60000));
}

static void t_empty_and_zero(void **state)
{
	struct extset s = { 0 };
	(void)state;
	/* The empty set: nothing overlaps, nothing to remove. */
	assert_null(extset_first_overlap(&s, 0, UINT64_MAX));
	assert_null(extset_first_overlap(&s, 5, 6));
	assert_int_equal(extset_remove(&s, 0, 1), -ENOENT);
	assert_int_equal(extset_remove(&s, 100, 10), -ENOENT);
	/* Zero lengths change nothing, even where the set has blocks. */
	assert_int_equal(extset_add(&s, 7, 0), 0);
	assert_int_equal(s.n, 0);
	assert_int_equal(s.total, 0);
	assert_int_equal(extset_add(&s, 10, 10), 0);
	assert_int_equal(extset_add(&s, 15, 0), 0);
	assert_int_equal(extset_add(&s, 20, 0), 0);
	assert_int_equal(extset_remove(&s, 15, 0), 0);
	assert_int_equal(extset_remove(&s, 50, 0), 0);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.v[0].start, 10);
	assert_int_equal(s.v[0].len, 10);
	assert_int_equal(s.total, 10);
	/* Overlap at both edges of [10, 20), half-open. */
	assert_null(extset_first_overlap(&s, 0, 10));
	assert_null(extset_first_overlap(&s, 20, 30));
	assert_non_null(extset_first_overlap(&s, 0, 11));
	assert_non_null(extset_first_overlap(&s, 19, 30));
	/* Overlapping adds are refused whole, without change. */
	assert_int_equal(extset_add(&s, 5, 6), -EEXIST);
	assert_int_equal(extset_add(&s, 19, 5), -EEXIST);
	assert_int_equal(extset_add(&s, 0, 100), -EEXIST);
	assert_int_equal(extset_add(&s, 12, 2), -EEXIST);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.total, 10);
	/* Removes that stick out are refused whole. */
	assert_int_equal(extset_remove(&s, 9, 2), -ENOENT);
	assert_int_equal(extset_remove(&s, 19, 2), -ENOENT);
	assert_int_equal(extset_remove(&s, 0, 100), -ENOENT);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.total, 10);
	/* A remove spanning two extents and the gap between them. */
	assert_int_equal(extset_add(&s, 30, 5), 0);
	assert_int_equal(extset_remove(&s, 18, 14), -ENOENT);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.total, 15);
	extset_free(&s);
	assert_null(s.v);
	assert_int_equal(s.n, 0);
	assert_int_equal(s.cap, 0);
	assert_int_equal(s.total, 0);
	/* Usable again after free. */
	assert_int_equal(extset_add(&s, 1, 1), 0);
	assert_int_equal(s.total, 1);
	extset_free(&s);
}

/* An empty query range [x, x) overlaps nothing, even inside an extent.
 * (The set lives in cmocka's state so that it is freed if this fails.) */
static int set_new(void **state)
{
	*state = calloc(1, sizeof(struct extset));
	return *state ? 0 : -1;
}

static int set_free(void **state)
{
	extset_free(*state);
	free(*state);
	return 0;
}

static void t_empty_query(void **state)
{
	struct extset *s = *state;
	assert_int_equal(extset_add(s, 10, 10), 0);
	assert_null(extset_first_overlap(s, 10, 10));
	assert_null(extset_first_overlap(s, 20, 20));
	assert_null(extset_first_overlap(s, 15, 15));
	/* And a reversed range overlaps nothing either. */
	assert_null(extset_first_overlap(s, 15, 12));
}

static void t_edges(void **state)
{
	struct extset s = { 0 };
	(void)state;
	/* Block 0, and merging onto it from the right. */
	assert_int_equal(extset_add(&s, 0, 1), 0);
	assert_int_equal(extset_add(&s, 2, 3), 0);
	assert_int_equal(s.n, 2);
	assert_int_equal(extset_add(&s, 1, 1), 0);       /* fills the gap: one extent */
	assert_int_equal(s.n, 1);
	assert_int_equal(s.v[0].start, 0);
	assert_int_equal(s.v[0].len, 5);
	assert_true(extset_first_overlap(&s, 0, 1) == &s.v[0]);
	assert_int_equal(extset_remove(&s, 0, 1), 0);
	assert_int_equal(s.v[0].start, 1);
	assert_int_equal(extset_add(&s, 0, 1), 0);
	assert_int_equal(s.v[0].start, 0);
	assert_int_equal(s.v[0].len, 5);
	/* Ending exactly at UINT64_MAX (the largest representable end). */
	uint64_t top = UINT64_MAX - 8;
	assert_int_equal(extset_add(&s, top, 8), 0);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.v[1].start, top);
	assert_int_equal(s.v[1].len, 8);
	assert_int_equal(s.total, 13);
	assert_int_equal(extset_add(&s, UINT64_MAX - 1, 1), -EEXIST);
	assert_int_equal(extset_add(&s, top - 1, 1), 0);  /* merges left of it */
	assert_int_equal(s.n, 2);
	assert_int_equal(s.v[1].start, top - 1);
	assert_int_equal(s.v[1].len, 9);
	assert_true(extset_first_overlap(&s, UINT64_MAX - 1, UINT64_MAX) == &s.v[1]);
	assert_true(extset_first_overlap(&s, 3, UINT64_MAX) == &s.v[0]);
	assert_true(extset_first_overlap(&s, 5, UINT64_MAX) == &s.v[1]);
	assert_null(extset_first_overlap(&s, 5, top - 1));
	/* Split the top extent in the middle, then remove its tail. */
	assert_int_equal(extset_remove(&s, top + 2, 2), 0);
	assert_int_equal(s.n, 3);
	assert_int_equal(s.v[1].start, top - 1);
	assert_int_equal(s.v[1].len, 3);
	assert_int_equal(s.v[2].start, top + 4);
	assert_int_equal(s.v[2].len, 4);
	assert_int_equal(extset_remove(&s, UINT64_MAX - 4, 4), 0);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.total, 8);
	/* One extent as long as possible. */
	extset_clear(&s);
	assert_int_equal(s.n, 0);
	assert_int_equal(s.total, 0);
	assert_null(extset_first_overlap(&s, 0, UINT64_MAX));
	assert_int_equal(extset_add(&s, 0, UINT64_MAX), 0);
	assert_int_equal(s.total, UINT64_MAX);
	assert_int_equal(extset_add(&s, 12345, 1), -EEXIST);
	assert_int_equal(extset_remove(&s, 1ull << 40, 1), 0);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.v[0].len, 1ull << 40);
	assert_int_equal(s.v[1].start, (1ull << 40) + 1);
	assert_int_equal(s.v[1].len, UINT64_MAX - (1ull << 40) - 1);
	assert_int_equal(s.total, UINT64_MAX - 1);
	extset_free(&s);
}

/* Many extents: the array grows, inserts and splits in the middle shift
 * what follows; then everything merges back into one. */
static void t_many(void **state)
{
	struct extset s = { 0 };
	const uint64_t n = 20000;
	(void)state;
	/* Every other block, inserted from the top down (each insert at the
	 * front of the array). */
	for (uint64_t i = n; i-- > 0;)
		assert_int_equal(extset_add(&s, 2 * i, 1), 0);
	assert_int_equal(s.n, n);
	assert_int_equal(s.total, n);
	for (uint64_t i = 0; i < n; i++) {
		assert_int_equal(s.v[i].start, 2 * i);
		assert_int_equal(s.v[i].len, 1);
	}
	for (uint64_t i = 0; i < n; i += 97) {
		const struct ext *e = extset_first_overlap(&s, 2 * i + 1, 2 * n);
		assert_non_null(e);
		assert_int_equal(e->start, 2 * i + 2);
		assert_int_equal(e->len, 1);
	}
	/* Fill the odd gaps in a scattered order: the count drops by one
	 * with each. */
	for (uint64_t k = 0; k < n - 1; k++) {
		uint64_t i = (k * 7919) % (n - 1);
		assert_int_equal(extset_add(&s, 2 * i + 1, 1), 0);
		assert_int_equal(s.n, n - 1 - k);
	}
	assert_int_equal(s.n, 1);
	assert_int_equal(s.v[0].start, 0);
	assert_int_equal(s.v[0].len, 2 * n - 1);
	assert_int_equal(s.total, 2 * n - 1);
	extset_free(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_random_low),
		cmocka_unit_test(t_random_high),
		cmocka_unit_test(t_empty_and_zero),
		cmocka_unit_test(t_edges),
		cmocka_unit_test(t_many),
		cmocka_unit_test_setup_teardown(t_empty_query, set_new, set_free),
	};
	return RUN("extset", tests);
}
