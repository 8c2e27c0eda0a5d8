/* The spool (lib/spool.h): records added in random order come back sorted,
 * every one of them, whether they stayed in memory or went through many
 * runs of a temporary file; reading twice gives the same; ties keep every
 * copy; a spool with nothing reads nothing; a temporary directory that
 * cannot be written is an error with a message, not a wrong answer. */
#include "common.h"
#include "spool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct rec {
	uint64_t key;
	uint64_t seq;              /* to tell copies apart */
	uint32_t pad;
};

static int cmp_key(const void *a, const void *b)
{
	const struct rec *x = a, *y = b;
	return x->key < y->key ? -1 : x->key > y->key;
}

static int cmp_full(const void *a, const void *b)
{
	const struct rec *x = a, *y = b;
	int d = cmp_key(a, b);
	return d ? d : x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* N records, keys below RANGE, through a spool of LIMIT bytes; read twice. */
static void round_trip(size_t n, uint64_t range, size_t limit, size_t want_runs_min)
{
	struct rng g = { n * 31 + limit };
	struct rec *all = malloc((n ? n : 1) * sizeof(*all)), *got = malloc((n ? n : 1) * sizeof(*got));
	struct spool s;
	assert_non_null(all);
	assert_non_null(got);
	spool_init(&s, sizeof(struct rec), cmp_key, limit);
	for (size_t i = 0; i < n; i++) {
		memset(&all[i], 0, sizeof(all[i]));
		all[i].key = rng_below(&g, range);
		all[i].seq = i;
		assert_int_equal(spool_add(&s, &all[i]), 0);
	}
	assert_true(s.nruns >= want_runs_min);
	size_t runs0 = s.nruns;
	qsort(all, n, sizeof(*all), cmp_full);
	for (int pass = 0; pass < 2; pass++) {
		size_t k = 0;
		struct rec r, prev = { 0 };
		assert_int_equal(spool_rewind(&s), 0);
		int e;
		while ((e = spool_next(&s, &r)) == 1) {
			assert_true(k < n);
			if (k)
				assert_true(prev.key <= r.key);
			prev = r;
			got[k++] = r;
		}
		assert_int_equal(e, 0);
		assert_int_equal(k, n);
		/* The same multiset: sorted by key, then by copy. */
		qsort(got, n, sizeof(*got), cmp_full);
		assert_memory_equal(got, all, n * sizeof(*all));
	}
	fprintf(stderr, "# %zu runs written; ", runs0);
	fprintf(stderr, "%zu records, limit %zu bytes: %zu runs after merging (%zu at once), "
		"%llu bytes spilled\n", n, limit, s.nruns, s.fanin, (unsigned long long)s.spilled);
	assert_true(s.nruns <= s.fanin);
	spool_free(&s);
	free(all);
	free(got);
}

static void t_in_memory(void **state)
{
	(void)state;
	round_trip(1000, 1u << 20, 1 << 20, 0);
}

static void t_many_runs(void **state)
{
	(void)state;
	/* 200,000 records of 24 bytes through 16 KiB: about 290 runs. */
	round_trip(200000, 1u << 30, 16 << 10, 200);
}

static void t_ties(void **state)
{
	(void)state;
	round_trip(50000, 7, 4 << 10, 100);
}

static void t_empty(void **state)
{
	(void)state;
	struct spool s;
	struct rec r;
	spool_init(&s, sizeof(r), cmp_key, 0);
	assert_int_equal(spool_rewind(&s), 0);
	assert_int_equal(spool_next(&s, &r), 0);
	spool_free(&s);
	round_trip(0, 1, 1, 0);
	round_trip(1, 1, 1, 0);
}

static void t_no_tmpdir(void **state)
{
	(void)state;
	const char *old = getenv("TMPDIR");
	char *saved = old ? strdup(old) : NULL;
	setenv("TMPDIR", "/nonexistent/vbas-spool-test", 1);
	struct spool s;
	struct rec r = { 0 };
	int e = 0;
	spool_init(&s, sizeof(r), cmp_key, 16 * sizeof(r));
	for (int i = 0; i < 100 && !e; i++)
		e = spool_add(&s, &r);
	assert_int_equal(e, -ENOENT);
	assert_non_null(strstr(vbas_errmsg(), "temporary file"));
	spool_free(&s);
	if (saved) {
		setenv("TMPDIR", saved, 1);
		free(saved);
	} else {
		unsetenv("TMPDIR");
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_in_memory),
		cmocka_unit_test(t_many_runs),
		cmocka_unit_test(t_ties),
		cmocka_unit_test(t_empty),
		cmocka_unit_test(t_no_tmpdir),
	};
	return RUN("spool", tests);
}
