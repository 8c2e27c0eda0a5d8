/* Shared helpers for vbas's C tests (cmocka, TAP output). */
#ifndef VBAS_TEST_COMMON_H
#define VBAS_TEST_COMMON_H

#undef NDEBUG
#include <errno.h>
#include <setjmp.h>
#include <string.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "internal.h"

/* A small, fast, reproducible generator (splitmix64). */
struct rng {
	uint64_t s;
};
static inline uint64_t rng_next(struct rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}
static inline uint64_t rng_below(struct rng *r, uint64_t n)
{
	return n ? rng_next(r) % n : 0;
}
void rng_fill(struct rng *r, void *buf, size_t len);

/* Seed from $VBAS_SEED if set, else DEF; printed so failures reproduce. */
uint64_t test_seed(uint64_t def);
/* Number of operations: $VBAS_OPS if set, else DEF. */
uint64_t test_ops(uint64_t def);

/* Format a memory device and open a pool on it (fails the test on error). */
struct vbas_dev *mem_pool(uint64_t size, uint32_t bs, uint32_t fanout);
struct vbas_pool *open_mem(struct vbas_dev *dev, uint64_t cache_bytes);
/* A device that passes every call to INNER: tests put it first in their
 * own device struct and override the calls they watch or hold back. */
struct wrapdev {
	struct vbas_dev d;
	struct vbas_dev *inner;
};
int wrap_pread(struct vbas_dev *d, void *buf, size_t len, uint64_t off);
int wrap_pwrite(struct vbas_dev *d, const void *buf, size_t len, uint64_t off);
int wrap_flush(struct vbas_dev *d);
int wrap_discard(struct vbas_dev *d, uint64_t off, uint64_t len);
void wrap_destroy(struct vbas_dev *d);       /* destroys INNER, frees W */
/* W over INNER (its size and alignment), with OPS. */
void wrap_init(struct wrapdev *w, struct vbas_dev *inner, const struct vbas_dev_ops *ops);
/* Power lost at a write: the modes the crash loops take in turn, and one
 * run.  OP runs on a pool opened (OPTS, with a 1 MiB cache) on a copy of
 * BASE, the power going at its write AT (mode MODE, tearing and
 * reordering from SEED; at the end if it wrote less); the pool is closed
 * and the survivor returned (the caller destroys it). */
extern const unsigned crash_modes[4];
struct vbas_dev *crash_run(struct vbas_dev *base, unsigned flags, uint64_t at, unsigned mode,
			   uint64_t seed, void (*op)(struct vbas_pool *, void *), void *arg);
/* Writes OP makes on a pool opened (FLAGS) on a copy of BASE. */
uint64_t crash_writes(struct vbas_dev *base, unsigned flags,
		      void (*op)(struct vbas_pool *, void *), void *arg);
/* Node blocks and levels a walk meets (bt_check's node_cb: lvl_cb),
 * the first 4096. */
struct lvl_nodes {
	uint64_t v[4096];
	unsigned level[4096];
	size_t n;
};
int lvl_cb(void *arg, uint64_t blkno, unsigned level);
/* vbas_check must be clean; problems are printed. */
void assert_check_clean(struct vbas_pool *p);
/* cmocka group runner with TAP output. */
int run_group(const char *name, const struct CMUnitTest *tests, size_t n);
/* vbas_fsmap's records, gathered: fsmap_collect is the callback. */
struct fsmap_recs {
	struct vbas_fsmap_rec *r;
	size_t n, cap;
};
int fsmap_collect(const struct vbas_fsmap_rec *x, void *arg);

/* A workload of every kind of sharing (img_populate): volume "a", its
 * snapshot "s1", a clone "c" of it written over, reflinks within and
 * across volumes, a discard, a snapshot "s2" of c, and a volume written
 * and deleted; M holds what a and c must read (img_compare). */
#define IMG_BS 4096u
#define IMG_NB 512u                /* blocks per volume */
struct img {
	uint8_t a[IMG_NB * IMG_BS], c[IMG_NB * IMG_BS];
};
void img_write(struct vbas_pool *p, const char *name, uint8_t *img, uint64_t b, uint64_t n,
	       struct rng *r);
void img_compare(struct vbas_pool *p, const char *name, const uint8_t *img);
void img_populate(struct vbas_pool *p, struct img *m, uint64_t seed);

#define RUN(name, tests) run_group(name, tests, sizeof(tests) / sizeof((tests)[0]))

#define assert_ok(expr) do { int _r = (expr); \
	if (_r) fail_msg("%s = %d (%s): %s", #expr, _r, strerror(_r < 0 ? -_r : _r), vbas_errmsg()); } while (0)

#endif
