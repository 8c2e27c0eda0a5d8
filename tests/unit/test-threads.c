/* Thread safety under stress: many threads calling the library at once,
 * as the NBD front end will.
 *
 *  t_disjoint_regions_mem     6 threads, one volume, a region each; random
 *                             pwrite/pread/discard/write_zeroes/flush/extents
 *                             of every size and alignment, each thread with
 *                             its own handle and a byte model of its region.
 *  t_disjoint_volumes_file    the same on a pool in a file, a volume each
 *                             (created concurrently), plus a thread creating,
 *                             resizing, listing and deleting other volumes.
 *  t_overlap                  threads write overlapping ranges of shared
 *                             volumes; every 512-byte sector names its write
 *                             (volume, thread, sequence number, offset).
 *                             Checked: no garbage, no data of another volume
 *                             or offset, no mix of two writes inside one
 *                             block (the range lock makes each block's
 *                             reads and writes atomic), no stale or lost
 *                             data, and at the end every sector holds the
 *                             last write to it (per sector linearizable).
 *  t_flush_and_map_file       a thread committing in a loop, a thread
 *                             running vbas_check, and threads using
 *                             vbas_map_begin/end with their own I/O on the
 *                             device fd beside pread/pwrite threads.
 *  t_enospc_regions           a small over-provisioned pool filled by threads
 *                             until ENOSPC: failed writes change nothing,
 *                             overwrites never fail, after discards writes
 *                             succeed again.
 *  t_enospc_overlap           t_overlap on a pool that keeps running full,
 *                             with discards racing the writes: no sector may
 *                             ever show the data of a write that failed.
 *  t_enospc_discard_race      the same race made deterministic with a device
 *                             that holds one write at a gate.
 *  t_fair_range_locks         a snapshot waiting for a held range goes before
 *                             a newer writer of another range; the holder's
 *                             own second mapping does not wait behind it.
 *  t_file_reuse_after_discard single-threaded: blocks freed by a discard and
 *                             reused after a commit keep their new data on a
 *                             file pool (the smallest form of a data loss the
 *                             file stress test runs into).
 *
 * Worker threads never call cmocka (not thread-safe): they record failures,
 * the main thread fails the test after joining them.
 *
 *   VBAS_SEED=n          seed (each thread derives its own)
 *   VBAS_THREAD_SECS=s   seconds per stress phase (default 2)
 */
#define _GNU_SOURCE
#include "common.h"

#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SECT 512u
#define BS 4096u

/* ---- Failures recorded by worker threads ------------------------------ */

#define MAXFAIL 8

static struct {
	pthread_mutex_t mu;
	unsigned n;
	char msg[MAXFAIL][1024];
} F = { .mu = PTHREAD_MUTEX_INITIALIZER };
static atomic_int stop_all;
static uint64_t cur_seed;

static int failf(const char *who, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int failf(const char *who, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int k = snprintf(buf, sizeof(buf), "%s: ", who);
	va_start(ap, fmt);
	vsnprintf(buf + k, sizeof(buf) - (size_t)k, fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&F.mu);
	if (F.n < MAXFAIL)
		memcpy(F.msg[F.n], buf, sizeof(buf));
	F.n++;
	pthread_mutex_unlock(&F.mu);
	atomic_store(&stop_all, 1);
	return -1;
}

static void reset_failures(uint64_t seed)
{
	pthread_mutex_lock(&F.mu);
	F.n = 0;
	pthread_mutex_unlock(&F.mu);
	atomic_store(&stop_all, 0);
	cur_seed = seed;
}

static int stopped(void)
{
	return atomic_load_explicit(&stop_all, memory_order_relaxed);
}

static void assert_no_failures(const char *what)
{
	pthread_mutex_lock(&F.mu);
	unsigned n = F.n;
	pthread_mutex_unlock(&F.mu);
	if (!n)
		return;
	for (unsigned i = 0; i < n && i < MAXFAIL; i++)
		fprintf(stderr, "# failure %u: %s\n", i + 1, F.msg[i]);
	fail_msg("%s: %u failure(s) in worker threads (seed %llu); first: %s", what, n,
		 (unsigned long long)cur_seed, F.msg[0]);
}

/* ---- Time, temporary directory ---------------------------------------- */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double budget(void)
{
	const char *s = getenv("VBAS_THREAD_SECS");
	double v = s ? strtod(s, NULL) : 2.0;
	return v > 0 ? v : 2.0;
}

static char tmpdir[256];

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	remove(path);
	return 0;
}

static void cleanup_tmpdir(void)
{
	if (tmpdir[0])
		nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	tmpdir[0] = 0;
}

static int group_setup(void **state)
{
	const char *t = getenv("TMPDIR");
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "%s/vbas-threads-XXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(tmpdir)) {
		tmpdir[0] = 0;
		return -1;
	}
	atexit(cleanup_tmpdir);     /* also when a test bails out */
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	cleanup_tmpdir();
	return 0;
}

static const char *tpath(const char *name)
{
	static char buf[512];
	snprintf(buf, sizeof(buf), "%s/%s", tmpdir, name);
	return buf;
}

static void *xalloc(size_t n)
{
	void *p;
	if (posix_memalign(&p, 4096, n ? n : 1))
		abort();
	memset(p, 0, n);
	return p;
}

/* What a test holds, released by test_teardown() also when the test fails
 * half-way, so that a failure reads as the failure and not as a page of
 * LeakSanitizer reports. */
#define MAXMEM 256
static struct {
	struct vbas_pool *pool;
	struct vbas_dev *dev;
	struct vbas_vol *vol[4];
	struct vbas_resv *resv;          /* shared by the map threads of test 3 */
	uint64_t resv_blocks;
	void *mem[MAXMEM];
} R;

static void *track(void *p)
{
	for (int i = 0; i < MAXMEM; i++)
		if (!R.mem[i]) {
			R.mem[i] = p;
			return p;
		}
	abort();
}

static void *talloc(size_t n)            /* zeroed, lazily */
{
	void *p = calloc(1, n ? n : 1);
	if (!p)
		abort();
	return track(p);
}

static void *talloc_io(size_t n)         /* zeroed, aligned for O_DIRECT */
{
	return track(xalloc(n));
}

static void tfree(void *p)
{
	for (int i = 0; i < MAXMEM; i++)
		if (R.mem[i] == p)
			R.mem[i] = NULL;
	free(p);
}

static struct vbas_pool *hold(struct vbas_pool *p)
{
	R.pool = p;
	return p;
}

static void close_pool(struct vbas_pool *p)
{
	R.pool = NULL;
	assert_ok(vbas_close(p));
}

static struct vbas_pool *open_file_pool(const char *path)
{
	struct vbas_pool *p = NULL;
	assert_ok(vbas_open(path, NULL, &p));
	return hold(p);
}

/* ---- Workers ----------------------------------------------------------- */

enum { D_IDLE, D_WRITE, D_READ, D_DISCARD, D_ZERO, D_FLUSH, D_EXTENTS, D_MAP_WRITE,
       D_MAP_READ, D_REOPEN, D_CHECK, D_ADMIN, D_WAIT, D_DONE };
static const char *const doing_name[] = { "idle", "pwrite", "pread", "discard", "write_zeroes",
	"flush", "extents", "map write", "map read", "reopen handle", "check", "volume admin",
	"barrier", "done" };

struct worker {
	char name[128];
	pthread_t tid;
	atomic_int doing;          /* for the watchdog */
	_Atomic uint64_t d_off, d_len, nops;
};

static void set_doing(struct worker *w, int what, uint64_t off, uint64_t len)
{
	atomic_store_explicit(&w->d_off, off, memory_order_relaxed);
	atomic_store_explicit(&w->d_len, len, memory_order_relaxed);
	atomic_store_explicit(&w->doing, what, memory_order_relaxed);
}

static void start_worker(struct worker *w, void *(*fn)(void *), void *arg)
{
	int e = pthread_create(&w->tid, NULL, fn, arg);
	if (e)
		fail_msg("pthread_create: %s", strerror(e));
}

/* Join with a watchdog: a worker still running long after the deadline is
 * stuck (deadlock or livelock); say what every worker was doing, bail out. */
static void join_workers(struct worker **ws, int n, const char *what)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)(budget() * 20) + 120;
	for (int i = 0; i < n; i++) {
		int e = pthread_timedjoin_np(ws[i]->tid, NULL, &ts);
		if (!e)
			continue;
		printf("Bail out! %s: %s has not finished %d s after its deadline "
		       "(%s): deadlock or livelock? seed %llu\n", what, ws[i]->name,
		       (int)(budget() * 20) + 120, e == ETIMEDOUT ? "timed out" : strerror(e),
		       (unsigned long long)cur_seed);
		for (int j = 0; j < n; j++)
			printf("#   %s: %s at %llu+%llu after %llu operations\n", ws[j]->name,
			       doing_name[atomic_load(&ws[j]->doing)],
			       (unsigned long long)atomic_load(&ws[j]->d_off),
			       (unsigned long long)atomic_load(&ws[j]->d_len),
			       (unsigned long long)atomic_load(&ws[j]->nops));
		fflush(stdout);
		cleanup_tmpdir();
		_exit(2);
	}
}

/* A random range of SIZE bytes: UNIT-aligned (1, 512 or the block size),
 * at most MAXLEN long. */
static void pick_range(struct rng *r, uint64_t size, uint64_t unit, uint64_t maxlen,
		       uint64_t *off, uint64_t *len)
{
	uint64_t nu = size / unit, mu = maxlen / unit ? maxlen / unit : 1;
	uint64_t o = rng_below(r, nu), room = nu - o;
	*off = o * unit;
	*len = (1 + rng_below(r, room < mu ? room : mu)) * unit;
}

/* Sizes from a few bytes to a few hundred KiB, any alignment. */
static void pick_io(struct rng *r, uint64_t size, uint32_t bs, uint64_t maxbuf,
		    uint64_t *off, uint64_t *len)
{
	uint64_t maxlen, unit;
	switch (rng_below(r, 8)) {
	case 0: maxlen = 16; break;
	case 1: case 2: maxlen = bs; break;
	case 3: case 4: maxlen = 3 * (uint64_t)bs; break;
	case 5: case 6: maxlen = 64 << 10; break;
	default: maxlen = maxbuf; break;
	}
	switch (rng_below(r, 4)) {
	case 0: unit = bs; break;
	case 1: unit = SECT; break;
	default: unit = 1; break;
	}
	if (maxlen > maxbuf)
		maxlen = maxbuf;
	if (unit > maxlen)
		unit = 1;
	pick_range(r, size, unit, maxlen, off, len);
}

/* ---- Model-checked regions (tests 1, 3 and 4a) -------------------------- */

#define RW_MAP      0x1u   /* also vbas_map_begin/end with I/O on the device fd */
#define RW_NO_PUNCH 0x2u   /* no discards; write_zeroes never unmaps */
#define RW_ENOSPC   0x4u   /* writes may fail with ENOSPC and must change nothing */
#define RW_REOPEN   0x8u   /* close and reopen the handle now and then */
#define RW_CREATE   0x10u  /* create the volume first */
#define RW_BUF      (256u << 10)
#define HIST        16

struct hist_ent {
	int what, res;
	uint64_t off, len;   /* volume offsets */
	unsigned flags;
};

struct rworker {
	struct worker w;
	struct vbas_pool *p;
	char vname[32];
	struct vbas_vol *v;
	uint64_t base, size;        /* the region, block-aligned */
	uint64_t vsize;             /* RW_CREATE: the volume's size */
	uint32_t bs;
	uint64_t pool_bytes;
	unsigned flags;
	uint8_t *data, *mapped;     /* the model: bytes, and mapped per block */
	uint8_t *rsv;               /* per block: reserved (a NO_PUNCH zero) */
	uint8_t *buf, *rbuf;
	struct rng r;
	double deadline;
	struct hist_ent hist[HIST];
	unsigned nhist;
	uint64_t n[D_DONE], enospc, freed;
	pthread_barrier_t *bar;
};

static void hist_add(struct rworker *rw, int what, uint64_t off, uint64_t len, unsigned fl, int res)
{
	rw->hist[rw->nhist++ % HIST] = (struct hist_ent){ what, res, off, len, fl };
	rw->n[what]++;
	atomic_fetch_add_explicit(&rw->w.nops, 1, memory_order_relaxed);
}

static void hist_print(struct rworker *rw)
{
	pthread_mutex_lock(&F.mu);
	fprintf(stderr, "# %s: last operations (volume offsets), oldest first:\n", rw->w.name);
	for (unsigned i = rw->nhist > HIST ? rw->nhist - HIST : 0; i < rw->nhist; i++) {
		struct hist_ent *h = &rw->hist[i % HIST];
		fprintf(stderr, "#   %-12s %llu+%llu flags %#x = %d\n", doing_name[h->what],
			(unsigned long long)h->off, (unsigned long long)h->len, h->flags, h->res);
	}
	pthread_mutex_unlock(&F.mu);
}

#define RFAIL(rw, ...) (hist_print(rw), failf((rw)->w.name, __VA_ARGS__))

/* Compare GOT with the model of [off, off+len) (region offsets); a message
 * into WHY if they differ. */
static int model_diff(const uint8_t *model, const uint8_t *mapped, uint64_t base, uint32_t bs,
		      uint64_t off, uint64_t len, const uint8_t *got, char *why, size_t wl)
{
	if (!memcmp(got, model + off, len))
		return 0;
	uint64_t first = UINT64_MAX, last = 0, nd = 0;
	for (uint64_t k = 0; k < len; k++)
		if (got[k] != model[off + k]) {
			if (first == UINT64_MAX)
				first = k;
			last = k;
			nd++;
		}
	uint64_t at = off + first;
	int allz = 1;
	for (uint64_t k = first; k <= last; k++)
		allz &= got[k] == 0;
	snprintf(why, wl, "volume byte %llu (block %llu, model: %s) reads %#x, expected %#x; "
		 "%llu bytes differ in volume bytes [%llu, %llu]%s",
		 (unsigned long long)(base + at), (unsigned long long)((base + at) / bs),
		 mapped[at / bs] ? "mapped" : "hole", got[first], model[at],
		 (unsigned long long)nd, (unsigned long long)(base + off + first),
		 (unsigned long long)(base + off + last), allz ? " (all zeros there)" : "");
	return -1;
}

static int rw_verify(struct rworker *rw, uint64_t off, uint64_t len, const char *ctx)
{
	char why[400];
	while (len) {
		uint64_t l = len < RW_BUF ? len : RW_BUF;
		set_doing(&rw->w, D_READ, rw->base + off, l);
		int e = vbas_pread(rw->v, rw->rbuf, l, rw->base + off);
		hist_add(rw, D_READ, rw->base + off, l, 0, e);
		if (e)
			return RFAIL(rw, "pread(%llu, %llu) = %d: %s", (unsigned long long)(rw->base + off),
				     (unsigned long long)l, e, vbas_errmsg());
		if (model_diff(rw->data, rw->mapped, rw->base, rw->bs, off, l, rw->rbuf, why, sizeof(why)))
			return RFAIL(rw, "%s: read %llu+%llu: %s", ctx, (unsigned long long)(rw->base + off),
				     (unsigned long long)l, why);
		off += l;
		len -= l;
	}
	return 0;
}

static int blocks_all_mapped(const struct rworker *rw, uint64_t off, uint64_t len)
{
	for (uint64_t b = off / rw->bs; b <= (off + len - 1) / rw->bs; b++)
		if (!rw->mapped[b])
			return 0;
	return 1;
}

static void model_write(struct rworker *rw, uint64_t off, uint64_t len, const uint8_t *src)
{
	memcpy(rw->data + off, src, len);
	for (uint64_t b = off / rw->bs; b <= (off + len - 1) / rw->bs; b++)
		rw->mapped[b] = 1;
}

static void fill(struct rng *r, uint8_t *buf, uint64_t len)
{
	if (rng_below(r, 4) == 0)
		memset(buf, (int)(1 + rng_below(r, 255)), len);
	else
		rng_fill(r, buf, len);
}

static int rw_write(struct rworker *rw, uint64_t off, uint64_t len)
{
	unsigned fl = rng_below(&rw->r, 25) == 0 ? VBAS_IO_FUA : 0;
	int allmapped = blocks_all_mapped(rw, off, len);
	fill(&rw->r, rw->buf, len);
	set_doing(&rw->w, D_WRITE, rw->base + off, len);
	int e = vbas_pwrite(rw->v, rw->buf, len, rw->base + off, fl);
	hist_add(rw, D_WRITE, rw->base + off, len, fl, e);
	if (e == -ENOSPC && (rw->flags & RW_ENOSPC)) {
		rw->enospc++;
		if (allmapped)
			return RFAIL(rw, "pwrite(%llu, %llu) over mapped blocks only failed with ENOSPC: %s",
				     (unsigned long long)(rw->base + off), (unsigned long long)len,
				     vbas_errmsg());
		if (!strstr(vbas_errmsg(), "full"))
			return RFAIL(rw, "pwrite ENOSPC: this thread's message is '%s'", vbas_errmsg());
		/* Nothing changed: the range and a block either side. */
		uint64_t s = off / rw->bs * rw->bs, end = (off + len + rw->bs - 1) / rw->bs * rw->bs;
		s = s >= rw->bs ? s - rw->bs : 0;
		end = end + rw->bs <= rw->size ? end + rw->bs : rw->size;
		return rw_verify(rw, s, end - s, "after a pwrite that failed with ENOSPC");
	}
	if (e)
		return RFAIL(rw, "pwrite(%llu, %llu, flags %#x) = %d: %s",
			     (unsigned long long)(rw->base + off), (unsigned long long)len, fl, e,
			     vbas_errmsg());
	model_write(rw, off, len, rw->buf);
	if (rng_below(&rw->r, 4) == 0)
		return rw_verify(rw, off, len, "right after this thread's pwrite");
	return 0;
}

static int rw_discard(struct rworker *rw)
{
	uint64_t off, len;
	pick_range(&rw->r, rw->size, rw->bs, 32 * (uint64_t)rw->bs, &off, &len);
	if (rng_below(&rw->r, 8) == 0) {
		/* Unaligned: refused, changes nothing. */
		int e = vbas_discard(rw->v, rw->base + off + 512, rw->bs, 0);
		if (e != -EINVAL)
			return RFAIL(rw, "unaligned discard(%llu, %u) = %d, want -EINVAL",
				     (unsigned long long)(rw->base + off + 512), rw->bs, e);
	}
	unsigned fl = rng_below(&rw->r, 25) == 0 ? VBAS_IO_FUA : 0;
	set_doing(&rw->w, D_DISCARD, rw->base + off, len);
	int e = vbas_discard(rw->v, rw->base + off, len, fl);
	hist_add(rw, D_DISCARD, rw->base + off, len, fl, e);
	if (e)
		return RFAIL(rw, "discard(%llu, %llu) = %d: %s", (unsigned long long)(rw->base + off),
			     (unsigned long long)len, e, vbas_errmsg());
	memset(rw->data + off, 0, len);
	/* Reserved blocks are zeroed and kept. */
	memcpy(rw->mapped + off / rw->bs, rw->rsv + off / rw->bs, len / rw->bs);
	if (rng_below(&rw->r, 3) == 0)
		return rw_verify(rw, off, len, "right after this thread's discard");
	return 0;
}

/* write_zeroes: partial blocks at either end are zeroed in place (holes
 * stay holes), whole blocks in between are unmapped (reserved ones zeroed
 * and kept); under VBAS_IO_NO_PUNCH the range is reserved (io.c). */
static int rw_zero(struct rworker *rw)
{
	uint64_t off, len;
	int nopunch = (rw->flags & RW_NO_PUNCH) ? 1 : (rw->flags & RW_ENOSPC) ? 0 :
		      rng_below(&rw->r, 3) == 0;
	unsigned fl = (nopunch ? VBAS_IO_NO_PUNCH : 0) | (rng_below(&rw->r, 25) == 0 ? VBAS_IO_FUA : 0);
	pick_io(&rw->r, rw->size, rw->bs, RW_BUF, &off, &len);
	set_doing(&rw->w, D_ZERO, rw->base + off, len);
	int e = vbas_write_zeroes(rw->v, rw->base + off, len, fl);
	hist_add(rw, D_ZERO, rw->base + off, len, fl, e);
	if (e)
		return RFAIL(rw, "write_zeroes(%llu, %llu, flags %#x) = %d: %s",
			     (unsigned long long)(rw->base + off), (unsigned long long)len, fl, e,
			     vbas_errmsg());
	uint64_t as = (off + rw->bs - 1) / rw->bs * rw->bs, ae = (off + len) / rw->bs * rw->bs;
	uint64_t fb = off / rw->bs, lb = (off + len - 1) / rw->bs;
	memset(rw->data + off, 0, len);
	if (nopunch) {
		/* The range (whole blocks) is reserved: allocated, and kept. */
		memset(rw->mapped + fb, 1, lb - fb + 1);
		memset(rw->rsv + fb, 1, lb - fb + 1);
	} else if (as < ae) {
		memcpy(rw->mapped + as / rw->bs, rw->rsv + as / rw->bs, (ae - as) / rw->bs);
	}
	if (rng_below(&rw->r, 3) == 0)
		return rw_verify(rw, off, len, "right after this thread's write_zeroes");
	return 0;
}

struct ext_ctx {
	uint64_t start, end;     /* volume bytes asked for */
	uint64_t next;           /* extents must come in order */
	uint32_t bs;
	uint64_t pool_bytes;
	uint8_t *seen;           /* per block of [start, end), or NULL */
	char why[300];
};

static int ext_cb(const struct vbas_extent *e, void *arg)
{
	struct ext_ctx *c = arg;
	if (e->offset < c->next || e->length == 0 || e->offset + e->length > c->end)
		snprintf(c->why, sizeof(c->why), "extent %llu+%llu out of order or outside "
			 "[%llu, %llu)", (unsigned long long)e->offset, (unsigned long long)e->length,
			 (unsigned long long)c->next, (unsigned long long)c->end);
	else if ((e->offset | e->length | e->physical) % c->bs)
		snprintf(c->why, sizeof(c->why), "extent %llu+%llu -> %llu not block-aligned",
			 (unsigned long long)e->offset, (unsigned long long)e->length,
			 (unsigned long long)e->physical);
	else if (e->physical < VBAS_FIRST_BLOCK * (uint64_t)c->bs ||
		 e->physical + e->length > c->pool_bytes)
		snprintf(c->why, sizeof(c->why), "extent %llu+%llu maps to %llu, outside the pool",
			 (unsigned long long)e->offset, (unsigned long long)e->length,
			 (unsigned long long)e->physical);
	else {
		if (c->seen)
			memset(c->seen + (e->offset - c->start) / c->bs, 1, e->length / c->bs);
		c->next = e->offset + e->length;
		return 0;
	}
	return 1;
}

/* Extents of [base, base+size) against the model's mapped blocks. */
static int extents_diff(struct vbas_vol *v, uint64_t base, uint64_t size, uint32_t bs,
			uint64_t pool_bytes, const uint8_t *mapped, char *why, size_t wl)
{
	struct ext_ctx c = { .start = base, .end = base + size, .next = base, .bs = bs,
			     .pool_bytes = pool_bytes };
	c.seen = calloc(1, size / bs);
	int e = vbas_extents(v, base, size, ext_cb, &c);
	if (e == 1)
		snprintf(why, wl, "extents: %s", c.why);
	else if (e)
		snprintf(why, wl, "extents(%llu, %llu) = %d: %s", (unsigned long long)base,
			 (unsigned long long)size, e, vbas_errmsg());
	else
		for (uint64_t b = 0; b < size / bs; b++)
			if (!c.seen[b] != !mapped[b]) {
				snprintf(why, wl, "extents: block %llu is %s, the model says %s",
					 (unsigned long long)(base / bs + b), c.seen[b] ? "mapped" : "a hole",
					 mapped[b] ? "mapped" : "a hole");
				e = -1;
				break;
			}
	free(c.seen);
	return e;
}

static int rw_extents(struct rworker *rw)
{
	char why[400];
	set_doing(&rw->w, D_EXTENTS, rw->base, rw->size);
	int e = extents_diff(rw->v, rw->base, rw->size, rw->bs, rw->pool_bytes, rw->mapped, why,
			     sizeof(why));
	hist_add(rw, D_EXTENTS, rw->base, rw->size, 0, e);
	return e ? RFAIL(rw, "%s", why) : 0;
}

/* The mapping interface with the client's own I/O on the device fd.  Ranges
 * are whole blocks, buffers aligned, so O_DIRECT is satisfied. */
static int rw_map_write(struct rworker *rw)
{
	uint64_t off, len, bs = rw->bs;
	struct vbas_resv *resv = NULL;
	pick_range(&rw->r, rw->size, bs, 16 * bs, &off, &len);
	unsigned how = (unsigned)rng_below(&rw->r, 4);
	if (how == 3 && R.resv) {
		/* One reservation drawn on by several threads at once. */
		resv = R.resv;
		vbas_resv_get(resv);
	} else if (how >= 2) {
		int e = vbas_reserve(rw->p, len / bs, &resv);
		if (e)
			return RFAIL(rw, "reserve(%llu) = %d: %s", (unsigned long long)(len / bs), e,
				     vbas_errmsg());
	}
	rng_fill(&rw->r, rw->buf, len);
	uint64_t done = 0;
	int r = 0;
	set_doing(&rw->w, D_MAP_WRITE, rw->base + off, len);
	while (done < len && !r) {
		struct vbas_iomap m;
		uint64_t o = off + done;
		int e = vbas_map_begin(rw->v, rw->base + o, len - done, VBAS_MAP_WRITE, resv, &m);
		if (e) {
			r = RFAIL(rw, "map_begin(write %llu, %llu) = %d: %s",
				  (unsigned long long)(rw->base + o), (unsigned long long)(len - done), e,
				  vbas_errmsg());
			break;
		}
		if (m.offset != rw->base + o || !m.length || m.length > len - done || m.length % bs ||
		    m.physical % bs || m.physical + m.length > rw->pool_bytes || m.fd < 0 ||
		    (m.type != VBAS_IOMAP_NEW && m.type != VBAS_IOMAP_MAPPED)) {
			r = RFAIL(rw, "map_begin(write %llu, %llu): type %d offset %llu length %llu "
				  "physical %llu fd %d", (unsigned long long)(rw->base + o),
				  (unsigned long long)(len - done), m.type, (unsigned long long)m.offset,
				  (unsigned long long)m.length, (unsigned long long)m.physical, m.fd);
			vbas_map_end(rw->v, &m, 0, -EIO);
			break;
		}
		/* This thread owns the region: NEW exactly where the model has holes. */
		for (uint64_t b = o / bs; b < (o + m.length) / bs; b++)
			if (rw->mapped[b] != (m.type == VBAS_IOMAP_MAPPED)) {
				r = RFAIL(rw, "map_begin(write %llu): type %s, but block %llu is %s",
					  (unsigned long long)(rw->base + o),
					  m.type == VBAS_IOMAP_NEW ? "NEW" : "MAPPED",
					  (unsigned long long)((rw->base + o) / bs + b - o / bs),
					  rw->mapped[b] ? "mapped" : "a hole");
				break;
			}
		if (r) {
			vbas_map_end(rw->v, &m, 0, -EIO);
			break;
		}
		uint64_t nb = m.length / bs, keep = m.length;
		int act = (int)rng_below(&rw->r, 8), err = 0;
		if (act == 2 && m.type == VBAS_IOMAP_MAPPED) {
			keep = 0;                /* abandoned before writing anything */
			err = -EIO;
		} else {
			ssize_t w = pwrite(m.fd, rw->buf + done, m.length, (off_t)m.physical);
			if (w != (ssize_t)m.length) {
				r = RFAIL(rw, "pwrite on the device fd (%llu bytes at %llu) = %zd: %s",
					  (unsigned long long)m.length, (unsigned long long)m.physical, w,
					  strerror(errno));
				vbas_map_end(rw->v, &m, 0, -EIO);
				break;
			}
			if (act == 0 && m.type == VBAS_IOMAP_NEW) {
				keep = 0;            /* written, then abandoned: stays a hole */
				err = -EIO;
			} else if (act == 1 && m.type == VBAS_IOMAP_NEW && nb > 1) {
				keep = (1 + rng_below(&rw->r, nb - 1)) * bs;   /* only a prefix done */
			}
		}
		e = vbas_map_end(rw->v, &m, err ? 0 : keep, err);
		hist_add(rw, D_MAP_WRITE, m.offset, m.length, (unsigned)m.type, e);
		if (e) {
			r = RFAIL(rw, "map_end(%llu+%llu, done %llu, error %d) = %d: %s",
				  (unsigned long long)m.offset, (unsigned long long)m.length,
				  (unsigned long long)keep, err, e, vbas_errmsg());
			break;
		}
		if (keep)
			model_write(rw, o, keep, rw->buf + done);
		done += err ? m.length : keep;
	}
	if (resv == R.resv && resv) {
		uint64_t left = vbas_resv_remaining(resv);
		if (left > R.resv_blocks && !r)
			r = RFAIL(rw, "shared reservation: %llu blocks remaining of %llu",
				  (unsigned long long)left, (unsigned long long)R.resv_blocks);
	}
	if (resv)
		vbas_resv_put(resv);
	if (!r && rng_below(&rw->r, 2))
		r = rw_verify(rw, off, len, "after this thread's map_begin/map_end writes");
	return r;
}

static int rw_map_read(struct rworker *rw)
{
	uint64_t off, len, bs = rw->bs, done = 0;
	char why[400];
	pick_range(&rw->r, rw->size, bs, 32 * bs, &off, &len);
	set_doing(&rw->w, D_MAP_READ, rw->base + off, len);
	while (done < len) {
		struct vbas_iomap m;
		uint64_t o = off + done;
		int e = vbas_map_begin(rw->v, rw->base + o, len - done, VBAS_MAP_READ, NULL, &m);
		if (e)
			return RFAIL(rw, "map_begin(read %llu, %llu) = %d: %s",
				     (unsigned long long)(rw->base + o), (unsigned long long)(len - done),
				     e, vbas_errmsg());
		int bad = m.offset != rw->base + o || !m.length || m.length > len - done ||
			  m.length % bs || (m.type != VBAS_IOMAP_HOLE && m.type != VBAS_IOMAP_MAPPED);
		for (uint64_t b = o / bs; !bad && b < (o + m.length) / bs; b++)
			bad = rw->mapped[b] != (m.type == VBAS_IOMAP_MAPPED);
		if (!bad && m.type == VBAS_IOMAP_MAPPED) {
			ssize_t got = pread(m.fd, rw->rbuf, m.length, (off_t)m.physical);
			if (got != (ssize_t)m.length) {
				vbas_map_end(rw->v, &m, 0, -EIO);
				return RFAIL(rw, "pread on the device fd (%llu at %llu) = %zd: %s",
					     (unsigned long long)m.length, (unsigned long long)m.physical,
					     got, strerror(errno));
			}
		} else if (!bad) {
			memset(rw->rbuf, 0, m.length);
		}
		int e2 = vbas_map_end(rw->v, &m, m.length, 0);
		hist_add(rw, D_MAP_READ, m.offset, m.length, (unsigned)m.type, e2);
		if (bad)
			return RFAIL(rw, "map_begin(read %llu, %llu): type %d offset %llu length %llu; "
				     "the model disagrees", (unsigned long long)(rw->base + o),
				     (unsigned long long)(len - done), m.type,
				     (unsigned long long)m.offset, (unsigned long long)m.length);
		if (e2)
			return RFAIL(rw, "map_end(read) = %d: %s", e2, vbas_errmsg());
		if (model_diff(rw->data, rw->mapped, rw->base, rw->bs, o, m.length, rw->rbuf, why,
			       sizeof(why)))
			return RFAIL(rw, "read through map_begin and the device fd: %s", why);
		done += m.length;
	}
	return 0;
}

static int rw_open(struct rworker *rw)
{
	int e = vbas_vol_open(rw->p, rw->vname, &rw->v);
	return e ? RFAIL(rw, "vol_open(%s) = %d: %s", rw->vname, e, vbas_errmsg()) : 0;
}

static int rw_op(struct rworker *rw)
{
	uint64_t off, len;
	unsigned c = (unsigned)rng_below(&rw->r, 100);
	if (c < 30) {
		pick_io(&rw->r, rw->size, rw->bs, RW_BUF, &off, &len);
		return rw_write(rw, off, len);
	}
	if (c < 48) {
		pick_io(&rw->r, rw->size, rw->bs, RW_BUF, &off, &len);
		return rw_verify(rw, off, len, "random read");
	}
	if (c < 56)
		return (rw->flags & RW_NO_PUNCH) ? 0 : rw_discard(rw);
	if (c < 64)
		return rw_zero(rw);
	if (c < 66) {
		set_doing(&rw->w, D_FLUSH, 0, 0);
		int e = vbas_flush(rw->p);
		hist_add(rw, D_FLUSH, 0, 0, 0, e);
		return e ? RFAIL(rw, "flush = %d: %s", e, vbas_errmsg()) : 0;
	}
	if (c < 70)
		return rw_extents(rw);
	if (c < 72) {
		if (!(rw->flags & RW_REOPEN))
			return 0;
		set_doing(&rw->w, D_REOPEN, 0, 0);
		vbas_vol_close(rw->v);
		rw->v = NULL;
		hist_add(rw, D_REOPEN, 0, 0, 0, 0);
		return rw_open(rw);
	}
	if (!(rw->flags & RW_MAP))
		return 0;
	return c < 88 ? rw_map_write(rw) : rw_map_read(rw);
}

static void *rw_main(void *arg)
{
	struct rworker *rw = arg;
	if (rw->flags & RW_CREATE) {
		int e = vbas_vol_create(rw->p, rw->vname, rw->vsize);
		if (e) {
			failf(rw->w.name, "vol_create(%s) = %d: %s", rw->vname, e, vbas_errmsg());
			return NULL;
		}
	}
	if (rw_open(rw))
		return NULL;
	while (!stopped() && now() < rw->deadline)
		if (rw_op(rw))
			break;
	vbas_vol_close(rw->v);
	rw->v = NULL;
	set_doing(&rw->w, D_DONE, 0, 0);
	return NULL;
}

static void rw_init(struct rworker *rw, int i, struct vbas_pool *p, const char *vname,
		    uint64_t base, uint64_t size, unsigned flags, uint64_t seed, double deadline)
{
	struct vbas_pool_info pi;
	memset(rw, 0, sizeof(*rw));
	assert_ok(vbas_pool_info(p, &pi));
	snprintf(rw->w.name, sizeof(rw->w.name), "thread %d (%s %llu+%llu)", i, vname,
		 (unsigned long long)base, (unsigned long long)size);
	rw->p = p;
	snprintf(rw->vname, sizeof(rw->vname), "%s", vname);
	rw->base = base;
	rw->size = size;
	rw->vsize = size;
	rw->bs = pi.block_size;
	rw->pool_bytes = pi.size;
	rw->flags = flags;
	rw->data = talloc(size);
	rw->mapped = talloc(size / rw->bs);
	rw->rsv = talloc(size / rw->bs);
	rw->buf = talloc_io(RW_BUF);
	rw->rbuf = talloc_io(RW_BUF);
	rw->r.s = seed * 0x9e3779b97f4a7c15ull + (uint64_t)i * 1000003u + 1;
	rw->deadline = deadline;
}

/* Main thread, all workers joined: every region reads back as modelled,
 * extents agree, mapped totals agree. */
static void verify_regions(struct vbas_pool *p, struct rworker *rws, int n, const char *when)
{
	char why[400];
	uint8_t *buf = talloc_io(1 << 20);
	uint64_t total = 0;
	struct vbas_pool_info pi;
	for (int i = 0; i < n; i++) {
		struct rworker *rw = &rws[i];
		struct vbas_vol *v;
		assert_ok(vbas_vol_open(p, rw->vname, &v));
		R.vol[0] = v;
		for (uint64_t o = 0; o < rw->size; o += 1 << 20) {
			uint64_t l = rw->size - o < (1 << 20) ? rw->size - o : (1 << 20);
			assert_ok(vbas_pread(v, buf, l, rw->base + o));
			if (model_diff(rw->data, rw->mapped, rw->base, rw->bs, o, l, buf, why, sizeof(why))) {
				hist_print(rw);
				fail_msg("%s: %s: %s (seed %llu)", when, rw->w.name, why,
					 (unsigned long long)cur_seed);
			}
		}
		if (extents_diff(v, rw->base, rw->size, rw->bs, rw->pool_bytes, rw->mapped, why,
				 sizeof(why)))
			fail_msg("%s: %s: %s (seed %llu)", when, rw->w.name, why,
				 (unsigned long long)cur_seed);
		R.vol[0] = NULL;
		vbas_vol_close(v);
		uint64_t mb = 0;
		for (uint64_t b = 0; b < rw->size / rw->bs; b++)
			mb += rw->mapped[b];
		total += mb * rw->bs;
	}
	/* Mapped bytes per volume: the sum of its regions. */
	for (int i = 0; i < n; i++) {
		int firstof = 1;
		for (int j = 0; j < i; j++)
			firstof &= strcmp(rws[j].vname, rws[i].vname) != 0;
		if (!firstof)
			continue;
		uint64_t want = 0;
		struct vbas_vol_info info;
		for (int j = i; j < n; j++)
			if (!strcmp(rws[j].vname, rws[i].vname))
				for (uint64_t b = 0; b < rws[j].size / rws[j].bs; b++)
					want += rws[j].mapped[b] * (uint64_t)rws[j].bs;
		assert_ok(vbas_vol_stat(p, rws[i].vname, &info));
		if (info.mapped != want)
			fail_msg("%s: volume %s maps %llu bytes, the models %llu", when, rws[i].vname,
				 (unsigned long long)info.mapped, (unsigned long long)want);
	}
	assert_ok(vbas_pool_info(p, &pi));
	if (pi.data_used != total)
		fail_msg("%s: pool data_used %llu, the models map %llu", when,
			 (unsigned long long)pi.data_used, (unsigned long long)total);
	tfree(buf);
}

static void print_stats(const char *what, struct rworker *rws, int n)
{
	uint64_t s[D_DONE] = { 0 }, enospc = 0;
	for (int i = 0; i < n; i++) {
		for (int k = 0; k < D_DONE; k++)
			s[k] += rws[i].n[k];
		enospc += rws[i].enospc;
	}
	fprintf(stderr, "# %s: %llu writes, %llu reads, %llu discards, %llu zeroes, %llu flushes, "
		"%llu extents, %llu map writes, %llu map reads, %llu reopens, %llu ENOSPC\n", what,
		(unsigned long long)s[D_WRITE], (unsigned long long)s[D_READ],
		(unsigned long long)s[D_DISCARD], (unsigned long long)s[D_ZERO],
		(unsigned long long)s[D_FLUSH], (unsigned long long)s[D_EXTENTS],
		(unsigned long long)s[D_MAP_WRITE], (unsigned long long)s[D_MAP_READ],
		(unsigned long long)s[D_REOPEN], (unsigned long long)enospc);
}

static void delete_all_and_check(struct vbas_pool *p, struct rworker *rws, int n)
{
	struct vbas_pool_info pi;
	for (int i = 0; i < n; i++) {
		int e = vbas_vol_delete(p, rws[i].vname);
		if (e && e != -ENOENT)
			assert_ok(e);
	}
	assert_check_clean(p);
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.data_used, 0);
	assert_int_equal(pi.reserved, 0);
	assert_int_equal(pi.volumes, 0);
}

/* ---- Test 1: disjoint regions ------------------------------------------ */

#define NREG 6
static struct rworker RWS[8];

static void t_disjoint_regions_mem(void **state)
{
	uint64_t seed = test_seed(1001);
	const uint64_t rsize = 2 << 20;
	struct rworker *rws = RWS;
	struct worker *ws[NREG];
	(void)state;
	reset_failures(seed);
	struct vbas_dev *d = R.dev = mem_pool(64 << 20, BS, 0);
	struct vbas_pool *p = hold(open_mem(d, 0));
	assert_ok(vbas_vol_create(p, "shared", NREG * rsize));
	double deadline = now() + budget();
	for (int i = 0; i < NREG; i++) {
		rw_init(&rws[i], i, p, "shared", i * rsize, rsize, RW_REOPEN, seed, deadline);
		ws[i] = &rws[i].w;
	}
	for (int i = 0; i < NREG; i++)
		start_worker(&rws[i].w, rw_main, &rws[i]);
	join_workers(ws, NREG, "disjoint regions");
	print_stats("disjoint regions", rws, NREG);
	assert_no_failures("disjoint regions");
	verify_regions(p, rws, NREG, "after the threads");
	assert_check_clean(p);
	close_pool(p);
	p = hold(open_mem(d, 0));
	assert_check_clean(p);
	verify_regions(p, rws, NREG, "after close and reopen");
	delete_all_and_check(p, rws, NREG);
	close_pool(p);
}

/* Creates, resizes, lists and deletes other volumes while the I/O runs. */
struct admin {
	struct worker w;
	struct vbas_pool *p;
	struct rng r;
	double deadline;
	uint64_t rounds;
};

static int list_cb(const struct vbas_vol_info *info, void *arg)
{
	const char *want = arg;
	return !strcmp(info->name, want) ? 7 : 0;
}

static void *admin_main(void *arg)
{
	struct admin *a = arg;
	const char *who = a->w.name;
	uint8_t *buf = xalloc(BS), *rd = xalloc(BS);
	while (!stopped() && now() < a->deadline) {
		char name[32];
		struct vbas_vol *v;
		struct vbas_vol_info info;
		uint64_t size = (1 + rng_below(&a->r, 64)) * BS;
		int e;
		if (rng_below(&a->r, 4) == 0)
			size = 1ull << 30;
		snprintf(name, sizeof(name), "scratch-%llu", (unsigned long long)a->rounds++);
		set_doing(&a->w, D_ADMIN, a->rounds, size);
		if ((e = vbas_vol_create(a->p, name, size))) {
			failf(who, "vol_create(%s) = %d: %s", name, e, vbas_errmsg());
			break;
		}
		if ((e = vbas_vol_open(a->p, name, &v))) {
			failf(who, "vol_open(%s) = %d: %s", name, e, vbas_errmsg());
			break;
		}
		for (int k = 0; k < 3 && !e; k++) {
			uint64_t off = rng_below(&a->r, size / BS) * BS;
			rng_fill(&a->r, buf, BS);
			e = vbas_pwrite(v, buf, BS, off, 0);
			if (!e)
				e = vbas_pread(v, rd, BS, off);
			if (e)
				failf(who, "%s: I/O at %llu = %d: %s", name, (unsigned long long)off, e,
				      vbas_errmsg());
			else if (memcmp(buf, rd, BS))
				e = failf(who, "%s: block at %llu does not read back", name,
					  (unsigned long long)off);
		}
		if (!e) {
			uint64_t ns = rng_below(&a->r, 2) ? size * 2 : (size / 2 / BS + 1) * BS;
			if ((e = vbas_vol_resize(a->p, name, ns)))
				failf(who, "vol_resize(%s, %llu) = %d: %s", name, (unsigned long long)ns, e,
				      vbas_errmsg());
			else if ((e = vbas_vol_info(v, &info)) || info.size != ns || info.mapped > ns)
				e = failf(who, "%s: after resize to %llu: info = %d, size %llu mapped %llu",
					  name, (unsigned long long)ns, e, (unsigned long long)info.size,
					  (unsigned long long)info.mapped);
		}
		if (!e) {
			int l = vbas_vol_list(a->p, list_cb, name);
			if (l != 7)
				e = failf(who, "vol_list did not show %s (%d)", name, l);
		}
		vbas_vol_close(v);
		if (e)
			break;
		if ((e = vbas_vol_delete(a->p, name))) {
			failf(who, "vol_delete(%s) = %d: %s", name, e, vbas_errmsg());
			break;
		}
		if ((e = vbas_vol_stat(a->p, name, &info)) != -ENOENT) {
			failf(who, "vol_stat of deleted %s = %d", name, e);
			break;
		}
		usleep(2000);
	}
	free(buf);
	free(rd);
	set_doing(&a->w, D_DONE, 0, 0);
	return NULL;
}

static void t_disjoint_volumes_file(void **state)
{
	uint64_t seed = test_seed(1002);
	const uint64_t vsize = 4 << 20;
	struct vbas_format_opts fo = { .size = 96 << 20 };
	struct rworker *rws = RWS;
	struct admin adm;
	struct worker *ws[NREG + 1];
	(void)state;
	reset_failures(seed);
	assert_ok(vbas_format(tpath("vols.pool"), &fo));
	struct vbas_pool *p = open_file_pool(tpath("vols.pool"));
	double deadline = now() + budget();
	for (int i = 0; i < NREG; i++) {
		char name[16];
		snprintf(name, sizeof(name), "vol%d", i);
		rw_init(&rws[i], i, p, name, 0, vsize, RW_CREATE | RW_REOPEN, seed, deadline);
		ws[i] = &rws[i].w;
	}
	memset(&adm, 0, sizeof(adm));
	snprintf(adm.w.name, sizeof(adm.w.name), "admin thread");
	adm.p = p;
	adm.r.s = seed ^ 0xadadadull;
	adm.deadline = deadline;
	ws[NREG] = &adm.w;
	for (int i = 0; i < NREG; i++)
		start_worker(&rws[i].w, rw_main, &rws[i]);
	start_worker(&adm.w, admin_main, &adm);
	join_workers(ws, NREG + 1, "disjoint volumes");
	print_stats("disjoint volumes", rws, NREG);
	fprintf(stderr, "# admin: %llu create/resize/delete rounds\n", (unsigned long long)adm.rounds);
	assert_no_failures("disjoint volumes");
	verify_regions(p, rws, NREG, "after the threads");
	assert_check_clean(p);
	close_pool(p);
	p = open_file_pool(tpath("vols.pool"));
	assert_check_clean(p);
	verify_regions(p, rws, NREG, "after close and reopen");
	delete_all_and_check(p, rws, NREG);
	close_pool(p);
}

/* ---- Test 2: overlapping writes, tagged sectors ------------------------- *
 *
 * What the library promises (vbas.h: handles are thread-safe; map.c: range
 * locks, readers shared, writers exclusive, over the logical blocks from
 * map_begin to map_end, and discard locks what it unmaps):
 *  - a read returns, for every block, the block as it was between whole
 *    writes/discards of that block: never a mix of two writes inside one
 *    block, never bytes no one wrote there;
 *  - nothing is promised across blocks: a read racing a multi-block write
 *    may see some blocks old and some new.
 * Checked per 512-byte sector (writes here are sector-aligned, not
 * block-aligned): the content is zeros or names a write of this volume that
 * covers this sector and had begun; inside one block no two sectors show
 * different writes that each cover both, and no sector shows zeros where a
 * write shown beside it covers it (zeroing ops here cover whole blocks).
 * Ordering is checked with tickets from one atomic counter taken before and
 * after each call: a thread's read never shows a sector older than its own
 * completed write there, and at the end every sector holds the write
 * (or zeroing) that completed last among those covering it. */

#define OL_MAXT 8
#define TAG_MAGIC 0x56425453u
enum { LOP_WRITE = 1, LOP_ZERO };

struct lop {
	uint64_t off, len;
	int kind;
	_Atomic uint64_t begin, end;   /* tickets; end 0 while running */
	atomic_int status;             /* 1 running, 0 done, <0 failed */
};

struct othread;

struct olap {
	struct vbas_pool *p;
	uint32_t bs;
	uint64_t pool_bytes;
	int nvol;
	char vname[2][16];
	uint64_t vsize[2];
	int nth;
	struct othread *th[OL_MAXT + 1];   /* by tag id, from 1 */
	_Atomic uint64_t clock;
	int allow_enospc;
	pthread_mutex_t zmu;               /* zeroing ops, for lost-write checks */
	struct zref { int tid; uint64_t seq; } *zops;
	size_t nz, capz;
	unsigned wdiscard, wzero;          /* per cent */
};

struct othread {
	struct worker w;
	struct olap *o;
	int id, vol, reader;
	struct vbas_vol *v;
	struct lop *log;
	uint64_t cap;
	_Atomic uint64_t started;          /* last published sequence number */
	atomic_uchar *seen;                /* its writes some reader saw */
	uint32_t *last_own;                /* per sector: own last completed op */
	uint8_t *buf, *rbuf;
	int *stid;
	uint64_t *sseq;
	struct rng r;
	double deadline;
	uint64_t nw, nr, nd, nzero, nf, enospc, nstale;
};

static uint64_t tick(struct olap *o)
{
	return atomic_fetch_add(&o->clock, 1) + 1;
}

static uint64_t sect_seed(int vol, int tid, uint64_t seq, uint64_t off)
{
	struct rng g = { 0x243f6a8885a308d3ull ^ ((uint64_t)vol << 58) ^ ((uint64_t)tid << 52) ^
			 (seq << 24) ^ off };
	return rng_next(&g) | 1;
}

static void make_sector(uint8_t *s, int vol, int tid, uint64_t seq, uint64_t off)
{
	uint32_t magic = TAG_MAGIC;
	uint16_t t = (uint16_t)tid, v = (uint16_t)vol;
	uint64_t h = sect_seed(vol, tid, seq, off);
	struct rng g = { h };
	memcpy(s, &magic, 4);
	memcpy(s + 4, &t, 2);
	memcpy(s + 6, &v, 2);
	memcpy(s + 8, &seq, 8);
	memcpy(s + 16, &off, 8);
	memcpy(s + 24, &h, 8);
	rng_fill(&g, s + 32, SECT - 32);
}

enum { S_ZERO, S_TAG, S_BAD };

static int parse_sector(const uint8_t *s, int *vol, int *tid, uint64_t *seq, uint64_t *off)
{
	static const uint8_t zero[SECT];
	uint8_t body[SECT - 32];
	uint32_t magic;
	uint16_t t, v;
	uint64_t h;
	if (!memcmp(s, zero, SECT))
		return S_ZERO;
	memcpy(&magic, s, 4);
	if (magic != TAG_MAGIC)
		return S_BAD;
	memcpy(&t, s + 4, 2);
	memcpy(&v, s + 6, 2);
	memcpy(seq, s + 8, 8);
	memcpy(off, s + 16, 8);
	memcpy(&h, s + 24, 8);
	*tid = t;
	*vol = v;
	if (h != sect_seed(v, t, *seq, *off))
		return S_BAD;
	struct rng g = { h };
	rng_fill(&g, body, sizeof(body));
	return memcmp(body, s + 32, sizeof(body)) ? S_BAD : S_TAG;
}

static int covers(const struct lop *l, uint64_t x)
{
	return x >= l->off && x < l->off + l->len;
}

static void hexdump16(const uint8_t *s, char *out, size_t ol)
{
	size_t k = 0;
	for (int i = 0; i < 16 && k + 3 < ol; i++)
		k += (size_t)snprintf(out + k, ol - k, "%02x", s[i]);
}

/* Classify the sectors of BUF (volume VOL, bytes [off, off+len)): STID and
 * SSEQ get the write each shows (tid 0: zeros).  0, or -1 with WHY. */
static int classify_range(struct olap *o, int vol, uint64_t off, uint64_t len, const uint8_t *buf,
			  int *stid, uint64_t *sseq, char *why, size_t wl)
{
	for (uint64_t i = 0; i < len / SECT; i++) {
		uint64_t x = off + i * SECT, seq = 0, soff = 0;
		int v = 0, tid = 0;
		int c = parse_sector(buf + i * SECT, &v, &tid, &seq, &soff);
		char hex[40];
		if (c == S_ZERO) {
			stid[i] = 0;
			sseq[i] = 0;
			continue;
		}
		if (c == S_BAD) {
			hexdump16(buf + i * SECT, hex, sizeof(hex));
			snprintf(why, wl, "%s sector at %llu is neither zeros nor a whole sector of one "
				 "write (torn or garbage; begins %s)", o->vname[vol], (unsigned long long)x,
				 hex);
			return -1;
		}
		if (v != vol || soff != x) {
			snprintf(why, wl, "%s sector at %llu holds the data of %s offset %llu (thread %d "
				 "write %llu)", o->vname[vol], (unsigned long long)x,
				 v < o->nvol ? o->vname[v] : "an unknown volume", (unsigned long long)soff, tid,
				 (unsigned long long)seq);
			return -1;
		}
		if (tid < 1 || tid > o->nth || o->th[tid]->vol != vol || seq == 0 ||
		    seq > atomic_load_explicit(&o->th[tid]->started, memory_order_acquire)) {
			snprintf(why, wl, "%s sector at %llu shows write %llu of thread %d, which was "
				 "never issued", o->vname[vol], (unsigned long long)x,
				 (unsigned long long)seq, tid);
			return -1;
		}
		struct othread *t = o->th[tid];
		struct lop *l = &t->log[seq];
		if (l->kind != LOP_WRITE || !covers(l, x)) {
			snprintf(why, wl, "%s sector at %llu shows op %llu of thread %d, which did not "
				 "write it (%llu+%llu)", o->vname[vol], (unsigned long long)x,
				 (unsigned long long)seq, tid, (unsigned long long)l->off,
				 (unsigned long long)l->len);
			return -1;
		}
		atomic_store_explicit(&t->seen[seq], 1, memory_order_relaxed);
		if (atomic_load_explicit(&l->end, memory_order_acquire) &&
		    atomic_load_explicit(&l->status, memory_order_relaxed) < 0) {
			snprintf(why, wl, "%s sector at %llu shows write %llu of thread %d (%llu+%llu), "
				 "which failed with %d: a failed write changed data",
				 o->vname[vol], (unsigned long long)x, (unsigned long long)seq, tid,
				 (unsigned long long)l->off, (unsigned long long)l->len,
				 atomic_load(&l->status));
			return -1;
		}
		stid[i] = tid;
		sseq[i] = seq;
	}
	return 0;
}

/* No mix of writes inside one block (see above). */
static int mix_check(struct olap *o, int vol, uint64_t off, uint64_t len, const int *stid,
		     const uint64_t *sseq, char *why, size_t wl)
{
	uint64_t n = len / SECT;
	for (uint64_t i = 0; i < n; i++) {
		if (!stid[i])
			continue;
		uint64_t xi = off + i * SECT, blk = xi / o->bs;
		struct lop *li = &o->th[stid[i]]->log[sseq[i]];
		for (uint64_t j = 0; j < n; j++) {
			uint64_t xj = off + j * SECT;
			if (xj / o->bs != blk || (stid[j] == stid[i] && sseq[j] == sseq[i]) || !covers(li, xj))
				continue;
			struct lop *lj = stid[j] ? &o->th[stid[j]]->log[sseq[j]] : NULL;
			if (!lj || covers(lj, xi)) {
				snprintf(why, wl, "%s block %llu mixes two states: sector at %llu shows "
					 "thread %d write %llu (%llu+%llu), sector at %llu shows %s "
					 "thread %d write %llu (%llu+%llu); each write covers both",
					 o->vname[vol], (unsigned long long)blk, (unsigned long long)xi,
					 stid[i], (unsigned long long)sseq[i], (unsigned long long)li->off,
					 (unsigned long long)li->len, (unsigned long long)xj,
					 lj ? "" : "zeros, not", stid[j], (unsigned long long)sseq[j],
					 lj ? (unsigned long long)lj->off : 0ull,
					 lj ? (unsigned long long)lj->len : 0ull);
				return -1;
			}
		}
	}
	return 0;
}

/* A zeroing op covering X that had not completed before ticket AFTER and
 * began before ticket BEFORE. */
static int zero_justified(struct olap *o, int vol, uint64_t x, uint64_t after, uint64_t before)
{
	int ok = 0;
	pthread_mutex_lock(&o->zmu);
	for (size_t k = 0; k < o->nz && !ok; k++) {
		struct othread *t = o->th[o->zops[k].tid];
		struct lop *l = &t->log[o->zops[k].seq];
		if (t->vol != vol || !covers(l, x))
			continue;
		uint64_t e = atomic_load_explicit(&l->end, memory_order_acquire);
		int st = atomic_load_explicit(&l->status, memory_order_relaxed);
		uint64_t b = atomic_load_explicit(&l->begin, memory_order_relaxed);
		ok = b < before && (e == 0 || (st >= 0 && e > after));
	}
	pthread_mutex_unlock(&o->zmu);
	return ok;
}

static int ot_fail(struct othread *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int ot_fail(struct othread *t, const char *fmt, ...)
{
	char buf[900];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return failf(t->w.name, "%s", buf);
}

static int ot_read(struct othread *t, uint64_t off, uint64_t len, int own)
{
	struct olap *o = t->o;
	char why[700];
	set_doing(&t->w, D_READ, off, len);
	int e = vbas_pread(t->v, t->rbuf, len, off);
	uint64_t re = tick(o);
	t->nr++;
	if (e)
		return ot_fail(t, "pread(%llu, %llu) = %d: %s", (unsigned long long)off,
			       (unsigned long long)len, e, vbas_errmsg());
	if (classify_range(o, t->vol, off, len, t->rbuf, t->stid, t->sseq, why, sizeof(why)) ||
	    mix_check(o, t->vol, off, len, t->stid, t->sseq, why, sizeof(why)))
		return ot_fail(t, "read %llu+%llu: %s", (unsigned long long)off,
			       (unsigned long long)len, why);
	if (!own)
		return 0;
	/* Not older than this thread's own completed op on each sector. */
	for (uint64_t i = 0; i < len / SECT; i++) {
		uint64_t x = off + i * SECT, ls = t->last_own[x / SECT];
		if (!ls)
			continue;
		struct lop *L = &t->log[ls];
		uint64_t lb = atomic_load_explicit(&L->begin, memory_order_relaxed);
		t->nstale++;
		if (t->stid[i] == t->id && t->sseq[i] == ls)
			continue;
		if (t->stid[i]) {
			struct lop *S = &o->th[t->stid[i]]->log[t->sseq[i]];
			uint64_t se = atomic_load_explicit(&S->end, memory_order_acquire);
			if (se == 0 || se > lb)
				continue;
			return ot_fail(t, "stale read at %s %llu: shows thread %d write %llu (%llu+%llu, "
				       "done at ticket %llu), which completed before this thread's own "
				       "%s %llu (%llu+%llu) began at ticket %llu and completed before "
				       "the read", o->vname[t->vol], (unsigned long long)x, t->stid[i],
				       (unsigned long long)t->sseq[i], (unsigned long long)S->off,
				       (unsigned long long)S->len, (unsigned long long)se,
				       L->kind == LOP_WRITE ? "write" : "zeroing", (unsigned long long)ls,
				       (unsigned long long)L->off, (unsigned long long)L->len,
				       (unsigned long long)lb);
		}
		if (L->kind == LOP_ZERO || zero_justified(o, t->vol, x, lb, re))
			continue;
		return ot_fail(t, "lost write at %s %llu: reads zeros after this thread's write %llu "
			       "(%llu+%llu, tickets %llu..%llu) completed, and no discard or zeroing "
			       "of it ran since", o->vname[t->vol], (unsigned long long)x,
			       (unsigned long long)ls, (unsigned long long)L->off,
			       (unsigned long long)L->len, (unsigned long long)lb,
			       (unsigned long long)atomic_load(&L->end));
	}
	return 0;
}

static struct lop *op_begin(struct othread *t, int kind, uint64_t off, uint64_t len, uint64_t *seqp)
{
	struct olap *o = t->o;
	uint64_t s = atomic_load_explicit(&t->started, memory_order_relaxed) + 1;
	if (s >= t->cap)
		return NULL;
	struct lop *l = &t->log[s];
	l->off = off;
	l->len = len;
	l->kind = kind;
	atomic_store_explicit(&l->status, 1, memory_order_relaxed);
	atomic_store_explicit(&l->end, 0, memory_order_relaxed);
	atomic_store_explicit(&l->begin, tick(o), memory_order_relaxed);
	atomic_store_explicit(&t->started, s, memory_order_release);
	if (kind == LOP_ZERO) {
		pthread_mutex_lock(&o->zmu);
		if (o->nz == o->capz) {
			o->capz = o->capz ? 2 * o->capz : 1024;
			o->zops = realloc(o->zops, o->capz * sizeof(*o->zops));
			if (!o->zops)
				abort();
		}
		o->zops[o->nz++] = (struct zref){ t->id, s };
		pthread_mutex_unlock(&o->zmu);
	}
	*seqp = s;
	return l;
}

static void op_end(struct othread *t, struct lop *l, uint64_t seq, int status)
{
	atomic_store_explicit(&l->status, status, memory_order_relaxed);
	atomic_store_explicit(&l->end, tick(t->o), memory_order_release);
	atomic_fetch_add_explicit(&t->w.nops, 1, memory_order_relaxed);
	if (!status)
		for (uint64_t x = l->off; x < l->off + l->len; x += SECT)
			t->last_own[x / SECT] = (uint32_t)seq;
}

static int ot_write(struct othread *t)
{
	static const uint64_t maxs[] = { 8, 24, 64, 256 };
	struct olap *o = t->o;
	uint64_t off, len, seq, vs = o->vsize[t->vol];
	pick_range(&t->r, vs, SECT, maxs[rng_below(&t->r, 4)] * SECT, &off, &len);
	struct lop *l = op_begin(t, LOP_WRITE, off, len, &seq);
	if (!l)
		return 1;
	for (uint64_t i = 0; i < len / SECT; i++)
		make_sector(t->buf + i * SECT, t->vol, t->id, seq, off + i * SECT);
	unsigned fl = rng_below(&t->r, 30) == 0 ? VBAS_IO_FUA : 0;
	set_doing(&t->w, D_WRITE, off, len);
	int e = vbas_pwrite(t->v, t->buf, len, off, fl);
	op_end(t, l, seq, e);
	t->nw++;
	if (e == -ENOSPC && o->allow_enospc) {
		t->enospc++;
		if (!strstr(vbas_errmsg(), "full"))
			return ot_fail(t, "pwrite ENOSPC: this thread's message is '%s'", vbas_errmsg());
		return 0;
	}
	if (e)
		return ot_fail(t, "pwrite(%llu, %llu) = %d: %s", (unsigned long long)off,
			       (unsigned long long)len, e, vbas_errmsg());
	if (rng_below(&t->r, 2))
		return ot_read(t, off, len, 1);
	return 0;
}

static int ot_zero(struct othread *t, int discard)
{
	struct olap *o = t->o;
	uint64_t off, len, seq;
	pick_range(&t->r, o->vsize[t->vol], o->bs, 8 * (uint64_t)o->bs, &off, &len);
	struct lop *l = op_begin(t, LOP_ZERO, off, len, &seq);
	if (!l)
		return 1;
	unsigned fl = discard ? 0 : rng_below(&t->r, 2) ? VBAS_IO_NO_PUNCH : 0;
	set_doing(&t->w, discard ? D_DISCARD : D_ZERO, off, len);
	int e = discard ? vbas_discard(t->v, off, len, 0) : vbas_write_zeroes(t->v, off, len, fl);
	op_end(t, l, seq, e);
	if (discard)
		t->nd++;
	else
		t->nzero++;
	if (e == -ENOSPC && o->allow_enospc && (fl & VBAS_IO_NO_PUNCH)) {
		t->enospc++;
		return 0;
	}
	if (e)
		return ot_fail(t, "%s(%llu, %llu, flags %#x) = %d: %s",
			       discard ? "discard" : "write_zeroes", (unsigned long long)off,
			       (unsigned long long)len, fl, e, vbas_errmsg());
	if (rng_below(&t->r, 2))
		return ot_read(t, off, len, 1);
	return 0;
}

static int ot_extents(struct othread *t)
{
	struct olap *o = t->o;
	struct ext_ctx c = { .start = 0, .end = o->vsize[t->vol], .next = 0, .bs = o->bs,
			     .pool_bytes = o->pool_bytes };
	set_doing(&t->w, D_EXTENTS, 0, o->vsize[t->vol]);
	int e = vbas_extents(t->v, 0, o->vsize[t->vol], ext_cb, &c);
	if (e == 1)
		return ot_fail(t, "extents: %s", c.why);
	if (e)
		return ot_fail(t, "extents = %d: %s", e, vbas_errmsg());
	return 0;
}

static void *ot_main(void *arg)
{
	struct othread *t = arg;
	struct olap *o = t->o;
	int e = vbas_vol_open(o->p, o->vname[t->vol], &t->v);
	if (e) {
		failf(t->w.name, "vol_open = %d: %s", e, vbas_errmsg());
		return NULL;
	}
	while (!stopped() && now() < t->deadline) {
		unsigned c = (unsigned)rng_below(&t->r, 100);
		uint64_t off, len;
		if (t->reader || c < 25) {
			pick_range(&t->r, o->vsize[t->vol], SECT, (t->reader ? 128 : 64) * SECT, &off, &len);
			e = ot_read(t, off, len, !t->reader);
		} else if (c < 25 + o->wdiscard) {
			e = ot_zero(t, 1);
		} else if (c < 25 + o->wdiscard + o->wzero) {
			e = ot_zero(t, 0);
		} else if (c < 28 + o->wdiscard + o->wzero) {
			set_doing(&t->w, D_FLUSH, 0, 0);
			t->nf++;
			e = vbas_flush(o->p);
			if (e)
				ot_fail(t, "flush = %d: %s", e, vbas_errmsg());
		} else if (c < 31 + o->wdiscard + o->wzero) {
			e = ot_extents(t);
		} else {
			e = ot_write(t);
		}
		if (e)
			break;
	}
	vbas_vol_close(t->v);
	set_doing(&t->w, D_DONE, 0, 0);
	return NULL;
}

/* Quiescent: every sector holds the last completed write or zeroing that
 * covers it; failed writes were never seen. */
static void olap_final(struct olap *o, const char *when)
{
	char why[700];
	for (int vol = 0; vol < o->nvol; vol++) {
		uint64_t vs = o->vsize[vol], ns = vs / SECT;
		uint64_t *maxb = talloc(ns * 8), *maxzend = talloc(ns * 8);
		int *btid = talloc(ns * sizeof(int)), *stid = talloc(ns * sizeof(int));
		uint64_t *bseq = talloc(ns * 8), *sseq = talloc(ns * 8);
		uint8_t *buf = talloc_io(vs);
		struct vbas_vol *v;
		for (int tid = 1; tid <= o->nth; tid++) {
			struct othread *t = o->th[tid];
			if (t->vol != vol)
				continue;
			for (uint64_t s = 1; s <= atomic_load(&t->started); s++) {
				struct lop *l = &t->log[s];
				if (atomic_load(&l->status) != 0)
					continue;
				for (uint64_t x = l->off / SECT; x < (l->off + l->len) / SECT; x++) {
					if (atomic_load(&l->begin) > maxb[x]) {
						maxb[x] = atomic_load(&l->begin);
						btid[x] = tid;
						bseq[x] = s;
					}
					if (l->kind == LOP_ZERO && atomic_load(&l->end) > maxzend[x])
						maxzend[x] = atomic_load(&l->end);
				}
			}
		}
		assert_ok(vbas_vol_open(o->p, o->vname[vol], &v));
		assert_ok(vbas_pread(v, buf, vs, 0));
		vbas_vol_close(v);
		if (classify_range(o, vol, 0, vs, buf, stid, sseq, why, sizeof(why)) ||
		    mix_check(o, vol, 0, vs, stid, sseq, why, sizeof(why)))
			fail_msg("%s: %s (seed %llu)", when, why, (unsigned long long)cur_seed);
		for (uint64_t x = 0; x < ns; x++) {
			const char *bad = NULL;
			uint64_t shown_end = 0;
			if (stid[x]) {
				struct lop *l = &o->th[stid[x]]->log[sseq[x]];
				shown_end = atomic_load(&l->end);
				if (atomic_load(&l->status) != 0)
					bad = "shows a write that failed";
				else if (shown_end <= maxb[x])
					bad = "shows a write that completed before the last op on it began";
			} else if (maxb[x] && maxzend[x] <= maxb[x]) {
				bad = "reads zeros, but its last completed op was a write";
			}
			if (bad)
				fail_msg("%s: %s sector at %llu %s: shows thread %d write %llu (done at "
					 "ticket %llu); last op on it: thread %d op %llu (%s %llu+%llu, "
					 "tickets %llu..%llu) (seed %llu)", when, o->vname[vol],
					 (unsigned long long)(x * SECT), bad, stid[x],
					 (unsigned long long)sseq[x], (unsigned long long)shown_end,
					 btid[x], (unsigned long long)bseq[x],
					 btid[x] && o->th[btid[x]]->log[bseq[x]].kind == LOP_WRITE ? "write" : "zeroing",
					 btid[x] ? (unsigned long long)o->th[btid[x]]->log[bseq[x]].off : 0ull,
					 btid[x] ? (unsigned long long)o->th[btid[x]]->log[bseq[x]].len : 0ull,
					 (unsigned long long)maxb[x],
					 btid[x] ? (unsigned long long)atomic_load(&o->th[btid[x]]->log[bseq[x]].end) : 0ull,
					 (unsigned long long)cur_seed);
		}
		tfree(maxb);
		tfree(maxzend);
		tfree(btid);
		tfree(bseq);
		tfree(stid);
		tfree(sseq);
		tfree(buf);
	}
	/* A write that failed was never seen by anyone. */
	for (int tid = 1; tid <= o->nth; tid++) {
		struct othread *t = o->th[tid];
		for (uint64_t s = 1; s <= atomic_load(&t->started); s++) {
			struct lop *l = &t->log[s];
			if (l->kind == LOP_WRITE && atomic_load(&l->status) < 0 && atomic_load(&t->seen[s]))
				fail_msg("%s: thread %d write %llu (%s %llu+%llu) failed with %d, but a "
					 "read saw its data (seed %llu)", when, tid, (unsigned long long)s,
					 o->vname[t->vol], (unsigned long long)l->off,
					 (unsigned long long)l->len, atomic_load(&l->status),
					 (unsigned long long)cur_seed);
		}
	}
}

struct olap_cfg {
	const char *what;
	uint64_t pool, vsize0, vsize1;
	uint32_t bs;
	int writers0, writers1, readers0;
	int allow_enospc;
	unsigned wdiscard, wzero;
	double secs;
};

static struct olap OL;              /* static: reachable, freed by the teardown */
static struct othread OTH[OL_MAXT];

static void run_olap(const struct olap_cfg *cfg, uint64_t seed)
{
	struct olap *o = &OL;
	struct othread *th = OTH;
	struct worker *ws[OL_MAXT];
	struct vbas_pool_info pi;
	free(OL.zops);
	memset(&OL, 0, sizeof(OL));
	memset(OTH, 0, sizeof(OTH));
	if (R.dev) {                     /* the previous run's */
		close_pool(R.pool);
		dev_destroy(R.dev);
		R.dev = NULL;
	}
	struct vbas_dev *d = R.dev = mem_pool(cfg->pool, cfg->bs, 0);
	o->p = hold(open_mem(d, 0));
	o->bs = cfg->bs;
	o->nvol = 2;
	o->vsize[0] = cfg->vsize0;
	o->vsize[1] = cfg->vsize1;
	snprintf(o->vname[0], sizeof(o->vname[0]), "ov-a");
	snprintf(o->vname[1], sizeof(o->vname[1]), "ov-b");
	o->allow_enospc = cfg->allow_enospc;
	o->wdiscard = cfg->wdiscard;
	o->wzero = cfg->wzero;
	pthread_mutex_init(&o->zmu, NULL);
	assert_ok(vbas_pool_info(o->p, &pi));
	o->pool_bytes = pi.size;
	for (int vol = 0; vol < 2; vol++)
		assert_ok(vbas_vol_create(o->p, o->vname[vol], o->vsize[vol]));
	int n = cfg->writers0 + cfg->writers1 + cfg->readers0;
	assert_true(n <= OL_MAXT);
	o->nth = n;
	double deadline = now() + cfg->secs;
	for (int i = 0; i < n; i++) {
		struct othread *t = &th[i];
		t->o = o;
		t->id = i + 1;
		t->vol = i >= cfg->writers0 && i < cfg->writers0 + cfg->writers1;
		t->reader = i >= cfg->writers0 + cfg->writers1;
		snprintf(t->w.name, sizeof(t->w.name), "%s thread %d (%s on %s)", cfg->what, t->id,
			 t->reader ? "reader" : "writer", o->vname[t->vol]);
		t->cap = 200000;
		t->log = talloc(t->cap * sizeof(*t->log));
		t->seen = talloc(t->cap);
		t->last_own = talloc(o->vsize[t->vol] / SECT * sizeof(uint32_t));
		t->buf = talloc_io(256 * SECT);
		t->rbuf = talloc_io(256 * SECT);
		t->stid = talloc(256 * sizeof(int));
		t->sseq = talloc(256 * 8);
		t->r.s = seed * 0x9e3779b97f4a7c15ull + (uint64_t)t->id * 7919u;
		t->deadline = deadline;
		o->th[t->id] = t;
		ws[i] = &t->w;
	}
	for (int i = 0; i < n; i++)
		start_worker(&th[i].w, ot_main, &th[i]);
	join_workers(ws, n, cfg->what);
	uint64_t nw = 0, nr = 0, nd = 0, nz = 0, nf = 0, en = 0, nst = 0;
	for (int i = 0; i < n; i++) {
		nw += th[i].nw;
		nr += th[i].nr;
		nd += th[i].nd;
		nz += th[i].nzero;
		nf += th[i].nf;
		en += th[i].enospc;
		nst += th[i].nstale;
	}
	fprintf(stderr, "# %s (block size %u): %llu writes, %llu reads (%llu sector ordering "
		"checks), %llu discards, %llu zeroes, %llu flushes, %llu ENOSPC\n", cfg->what, cfg->bs,
		(unsigned long long)nw, (unsigned long long)nr, (unsigned long long)nst,
		(unsigned long long)nd, (unsigned long long)nz, (unsigned long long)nf,
		(unsigned long long)en);
	assert_no_failures(cfg->what);
	olap_final(o, "after the threads");
	if (cfg->allow_enospc && en == 0)
		fail_msg("%s: the pool never ran full (no ENOSPC): the test proves nothing", cfg->what);
	assert_check_clean(o->p);
	assert_ok(vbas_pool_info(o->p, &pi));
	assert_int_equal(pi.reserved, 0);
	close_pool(o->p);
	o->p = hold(open_mem(d, 0));
	assert_check_clean(o->p);
	olap_final(o, "after close and reopen");
	/* Discard everything: the space comes back, writes succeed. */
	for (int vol = 0; vol < 2; vol++) {
		struct vbas_vol *v;
		size_t l = o->vsize[vol] < 64 * (size_t)cfg->bs ? o->vsize[vol] : 64 * (size_t)cfg->bs;
		uint8_t *b = talloc_io(l);
		memset(b, 0x5c, l);
		assert_ok(vbas_vol_open(o->p, o->vname[vol], &v));
		R.vol[0] = v;
		assert_ok(vbas_discard(v, 0, o->vsize[vol], 0));
		assert_ok(vbas_pwrite(v, b, l, 0, 0));
		R.vol[0] = NULL;
		vbas_vol_close(v);
		tfree(b);
	}
	assert_check_clean(o->p);
	for (int i = 0; i < n; i++) {
		tfree(th[i].log);
		tfree(th[i].seen);
		tfree(th[i].last_own);
		tfree(th[i].buf);
		tfree(th[i].rbuf);
		tfree(th[i].stid);
		tfree(th[i].sseq);
	}
}

static void t_overlap(void **state)
{
	uint64_t seed = test_seed(1003);
	(void)state;
	reset_failures(seed);
	struct olap_cfg c = { .what = "overlap", .pool = 64 << 20, .vsize0 = 512 << 10,
			      .vsize1 = 256 << 10, .bs = 4096, .writers0 = 4, .writers1 = 1,
			      .readers0 = 1, .wdiscard = 6, .wzero = 4, .secs = budget() / 2 };
	run_olap(&c, seed);
	/* Larger blocks: more sectors per block to mix. */
	c.what = "overlap-16k";
	c.bs = 16384;
	c.vsize0 = 1 << 20;
	run_olap(&c, seed + 1);
}

/* ---- Test 3: flush and map_begin/map_end racing writers ----------------- */

struct helper {
	struct worker w;
	struct vbas_pool *p;
	double deadline;
	int mode;                 /* 0 flusher, 1 checker */
	uint64_t count;
	struct rng r;
};

static void check_problem(const char *msg, void *arg)
{
	failf(((struct helper *)arg)->w.name, "check while the threads run: %s", msg);
}

static void *helper_main(void *arg)
{
	struct helper *h = arg;
	uint64_t lastgen = 0;
	while (!stopped() && now() < h->deadline) {
		struct vbas_pool_info pi;
		int e;
		if (h->mode == 0) {
			set_doing(&h->w, D_FLUSH, 0, 0);
			e = vbas_flush(h->p);
			if (e) {
				failf(h->w.name, "flush = %d: %s", e, vbas_errmsg());
				break;
			}
			e = vbas_pool_info(h->p, &pi);
			if (e || pi.generation < lastgen || pi.data_used > pi.size) {
				failf(h->w.name, "pool_info = %d: generation %llu after %llu, data_used %llu",
				      e, (unsigned long long)pi.generation, (unsigned long long)lastgen,
				      (unsigned long long)pi.data_used);
				break;
			}
			lastgen = pi.generation;
			/* Let writers in between commits now and then (the pool
			 * lock is not fair). */
			if (rng_below(&h->r, 2))
				usleep((useconds_t)rng_below(&h->r, 500));
		} else {
			struct vbas_check_stats st;
			set_doing(&h->w, D_CHECK, 0, 0);
			e = vbas_check(h->p, check_problem, h, &st);
			if (e) {
				failf(h->w.name, "check while the threads run = %d: %s", e, vbas_errmsg());
				break;
			}
			usleep(20000 + (useconds_t)rng_below(&h->r, 20000));
		}
		h->count++;
		atomic_fetch_add_explicit(&h->w.nops, 1, memory_order_relaxed);
	}
	set_doing(&h->w, D_DONE, 0, 0);
	return NULL;
}

#define NMAP 4

static void t_flush_and_map_file(void **state)
{
	uint64_t seed = test_seed(1004);
	const uint64_t rsize = 4 << 20;
	struct vbas_format_opts fo = { .size = 64 << 20 };
	struct rworker *rws = RWS;
	struct helper hs[2];
	struct worker *ws[NMAP + 2];
	(void)state;
	reset_failures(seed);
	assert_ok(vbas_format(tpath("map.pool"), &fo));
	struct vbas_pool *p = open_file_pool(tpath("map.pool"));
	struct vbas_pool_info pi;
	assert_ok(vbas_vol_create(p, "m", NMAP * rsize));
	R.resv_blocks = 256;
	assert_ok(vbas_reserve(p, R.resv_blocks, &R.resv));
	double deadline = now() + budget();
	/* No discards or punching zeroes here: on a file pool, blocks freed
	 * and reused are punched one commit later (t_file_reuse_after_discard),
	 * which t_disjoint_volumes_file runs into already.  This test is about
	 * commits and the mapping interface racing writers. */
	for (int i = 0; i < NMAP; i++) {
		rw_init(&rws[i], i, p, "m", i * rsize, rsize, RW_NO_PUNCH | (i ? RW_MAP : 0), seed,
			deadline);
		ws[i] = &rws[i].w;
	}
	for (int k = 0; k < 2; k++) {
		memset(&hs[k], 0, sizeof(hs[k]));
		snprintf(hs[k].w.name, sizeof(hs[k].w.name), k ? "checker" : "flusher");
		hs[k].p = p;
		hs[k].mode = k;
		hs[k].deadline = deadline;
		hs[k].r.s = seed + 77 + (uint64_t)k;
		ws[NMAP + k] = &hs[k].w;
	}
	for (int i = 0; i < NMAP; i++)
		start_worker(&rws[i].w, rw_main, &rws[i]);
	for (int k = 0; k < 2; k++)
		start_worker(&hs[k].w, helper_main, &hs[k]);
	join_workers(ws, NMAP + 2, "flush and map");
	fprintf(stderr, "# flush and map: %llu of the shared reservation's %llu blocks left\n",
		(unsigned long long)vbas_resv_remaining(R.resv), (unsigned long long)R.resv_blocks);
	vbas_resv_put(R.resv);
	R.resv = NULL;
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.reserved, 0);
	print_stats("flush and map", rws, NMAP);
	fprintf(stderr, "# flush and map: %llu flushes, %llu checks alongside\n",
		(unsigned long long)hs[0].count, (unsigned long long)hs[1].count);
	assert_no_failures("flush and map");
	verify_regions(p, rws, NMAP, "after the threads");
	assert_check_clean(p);
	close_pool(p);
	p = open_file_pool(tpath("map.pool"));
	assert_check_clean(p);
	verify_regions(p, rws, NMAP, "after close and reopen");
	close_pool(p);
}

/* ---- Test 4: ENOSPC ----------------------------------------------------- */

/* Overwrite inside blocks the model has mapped: needs no space, never fails. */
static int rw_overwrite_mapped(struct rworker *rw)
{
	uint64_t b = rng_below(&rw->r, rw->size / rw->bs), e = b;
	if (!rw->mapped[b])
		return 0;
	while (e + 1 < rw->size / rw->bs && e < b + 3 && rw->mapped[e + 1])
		e++;
	uint64_t span = (e + 1 - b) * rw->bs, off, len;
	pick_range(&rw->r, span, 1, span, &off, &len);
	return rw_write(rw, b * rw->bs + off, len);
}

#define NENO 4

static void *enospc_main(void *arg)
{
	struct rworker *rw = arg;
	uint64_t half = rw->size / 2, off, len;
	int ok = !rw_open(rw);
	/* Phase 1: write until the pool is full. */
	while (ok && !stopped() && now() < rw->deadline && rw->enospc < 6) {
		unsigned c = (unsigned)rng_below(&rw->r, 10);
		if (c < 7) {
			pick_io(&rw->r, rw->size, rw->bs, RW_BUF, &off, &len);
			ok = !rw_write(rw, off, len);
		} else if (c < 9) {
			ok = !rw_overwrite_mapped(rw);
		} else {
			pick_io(&rw->r, rw->size, rw->bs, RW_BUF, &off, &len);
			ok = !rw_verify(rw, off, len, "random read");
		}
	}
	set_doing(&rw->w, D_WAIT, 0, 0);
	pthread_barrier_wait(rw->bar);
	/* Phase 2: every thread frees the first half of its region. */
	if (ok && !stopped()) {
		for (uint64_t b = 0; b < half / rw->bs; b++)
			rw->freed += rw->mapped[b];
		set_doing(&rw->w, D_DISCARD, rw->base, half);
		int e = vbas_discard(rw->v, rw->base, half, 0);
		hist_add(rw, D_DISCARD, rw->base, half, 0, e);
		if (e)
			ok = !RFAIL(rw, "discard(%llu, %llu) = %d: %s", (unsigned long long)rw->base,
				    (unsigned long long)half, e, vbas_errmsg());
		memset(rw->data, 0, half);
		memset(rw->mapped, 0, half / rw->bs);
	}
	set_doing(&rw->w, D_WAIT, 0, 0);
	pthread_barrier_wait(rw->bar);
	/* Phase 3: writes into half of what was freed succeed, and overwrites. */
	if (ok && !stopped()) {
		unsigned saved = rw->flags;
		rw->flags &= ~RW_ENOSPC;      /* any failure now is one */
		for (uint64_t b = 0; ok && b < rw->freed / 2; b += 4) {
			uint64_t n = rw->freed / 2 - b < 4 ? rw->freed / 2 - b : 4;
			ok = !rw_write(rw, b * rw->bs, n * rw->bs);
		}
		for (int k = 0; ok && k < 50; k++)
			ok = !rw_overwrite_mapped(rw);
		if (ok)
			ok = !rw_verify(rw, 0, rw->size, "after refilling");
		rw->flags = saved;
	}
	vbas_vol_close(rw->v);
	rw->v = NULL;
	set_doing(&rw->w, D_DONE, 0, 0);
	return NULL;
}

static void t_enospc_regions(void **state)
{
	uint64_t seed = test_seed(1005);
	const uint64_t rsize = 4 << 20;      /* 16 MiB of volume on an 8 MiB pool */
	struct rworker *rws = RWS;
	struct worker *ws[NENO];
	pthread_barrier_t bar;
	uint64_t en = 0, freed = 0;
	(void)state;
	reset_failures(seed);
	struct vbas_dev *d = R.dev = mem_pool(8 << 20, BS, 0);
	struct vbas_pool *p = hold(open_mem(d, 0));
	pthread_barrier_init(&bar, NULL, NENO);
	assert_ok(vbas_vol_create(p, "big", NENO * rsize));
	double deadline = now() + budget();
	for (int i = 0; i < NENO; i++) {
		rw_init(&rws[i], i, p, "big", i * rsize, rsize, RW_ENOSPC, seed, deadline);
		rws[i].bar = &bar;
		ws[i] = &rws[i].w;
	}
	for (int i = 0; i < NENO; i++)
		start_worker(&rws[i].w, enospc_main, &rws[i]);
	join_workers(ws, NENO, "enospc regions");
	pthread_barrier_destroy(&bar);
	print_stats("enospc regions", rws, NENO);
	for (int i = 0; i < NENO; i++) {
		en += rws[i].enospc;
		freed += rws[i].freed;
	}
	fprintf(stderr, "# enospc regions: %llu blocks freed by the discards\n",
		(unsigned long long)freed);
	assert_no_failures("enospc regions");
	if (!en)
		fail_msg("the pool never ran full (no ENOSPC): the test proves nothing");
	assert_true(freed > 0);
	verify_regions(p, rws, NENO, "after the threads");
	assert_check_clean(p);
	close_pool(p);
	p = hold(open_mem(d, 0));
	assert_check_clean(p);
	verify_regions(p, rws, NENO, "after close and reopen");
	delete_all_and_check(p, rws, NENO);
	close_pool(p);
}

static void t_enospc_overlap(void **state)
{
	uint64_t seed = test_seed(1006);
	(void)state;
	reset_failures(seed);
	/* 3 MiB pool, 5 MiB of volumes: writes keep running into ENOSPC while
	 * discards free space under them. */
	struct olap_cfg c = { .what = "enospc overlap", .pool = 3 << 20, .vsize0 = 4 << 20,
			      .vsize1 = 1 << 20, .bs = 4096, .writers0 = 4, .writers1 = 1,
			      .readers0 = 1, .allow_enospc = 1, .wdiscard = 12, .wzero = 5,
			      .secs = budget() };
	run_olap(&c, seed);
}

/* A device that stops one data write (the one that covers GATE_OFF), or
 * with AT_FLUSH its next flush, at a gate until told to go on. */
struct gatedev {
	struct wrapdev w;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t gate_off;
	int armed, arrived, open, at_flush;
	uint64_t flushes;
};

/* The gate, if armed for this I/O (G->MU held). */
static void gate_pass(struct gatedev *g)
{
	g->armed = 0;
	g->arrived = 1;
	pthread_cond_broadcast(&g->cv);
	while (!g->open)
		pthread_cond_wait(&g->cv, &g->mu);
}

static int g_pwrite(struct vbas_dev *d, const void *b, size_t l, uint64_t o)
{
	struct gatedev *g = (struct gatedev *)d;
	pthread_mutex_lock(&g->mu);
	if (g->armed && !g->at_flush && o <= g->gate_off && g->gate_off < o + l)
		gate_pass(g);
	pthread_mutex_unlock(&g->mu);
	return wrap_pwrite(d, b, l, o);
}

static int g_flush(struct vbas_dev *d)
{
	struct gatedev *g = (struct gatedev *)d;
	pthread_mutex_lock(&g->mu);
	g->flushes++;
	if (g->armed && g->at_flush)
		gate_pass(g);
	pthread_mutex_unlock(&g->mu);
	return wrap_flush(d);
}

static void g_destroy(struct vbas_dev *d)
{
	struct gatedev *g = (struct gatedev *)d;
	pthread_mutex_destroy(&g->mu);
	pthread_cond_destroy(&g->cv);
	wrap_destroy(d);
}

static const struct vbas_dev_ops gate_ops = {
	.name = "gate", .pread = wrap_pread, .pwrite = g_pwrite, .flush = g_flush,
	.discard = wrap_discard, .destroy = g_destroy,
};

static int gate_wait(struct gatedev *g, int *flag, double secs)
{
	struct timespec ts;
	int ok;
	clock_gettime(CLOCK_REALTIME, &ts);
	long long ns = ts.tv_nsec + (long long)((secs - (double)(time_t)secs) * 1e9);
	ts.tv_sec += (time_t)secs + (time_t)(ns / 1000000000);
	ts.tv_nsec = (long)(ns % 1000000000);
	pthread_mutex_lock(&g->mu);
	while (!*flag && pthread_cond_timedwait(&g->cv, &g->mu, &ts) == 0)
		;
	ok = *flag;
	pthread_mutex_unlock(&g->mu);
	return ok;
}

static void gate_open(struct gatedev *g)
{
	pthread_mutex_lock(&g->mu);
	g->open = 1;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

/* A job's result R, and that it is done, under G's mutex; waiters wake. */
static void gate_note(struct gatedev *g, int *res, int *done, int r)
{
	pthread_mutex_lock(&g->mu);
	*res = r;
	*done = 1;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

struct gate_job {
	struct vbas_vol *v;
	const void *buf;
	size_t len;
	uint64_t off;
	int discard;
	int res;
	int done;
	struct gatedev *g;
};

static void *gate_job_main(void *arg)
{
	struct gate_job *j = arg;
	int r = j->discard ? vbas_discard(j->v, j->off, j->len, 0)
			   : vbas_pwrite(j->v, j->buf, j->len, j->off, 0);
	gate_note(j->g, &j->res, &j->done, r);
	return NULL;
}

static int first_ext_cb(const struct vbas_extent *e, void *arg)
{
	struct vbas_extent *out = arg;
	int i = 0;
	while (i < 3 && out[i].length)
		i++;
	if (i < 3)
		out[i] = *e;
	return 0;
}

/* vbas_pwrite counts the holes in its range and reserves that many blocks
 * before it takes any range lock; it then locks and writes extent by
 * extent.  A discard of a later block of the range in between makes a hole
 * the reservation does not cover.  Here: blocks 0 and 1 mapped as separate
 * extents, the pool full; the write of blocks 0-1 is held at its device
 * write of block 0 while block 1 is discarded and the space freed is taken
 * by a reservation.  vbas.h: "pwrite reserves every block it needs first
 * and fails with -ENOSPC having changed nothing". */
static void t_enospc_discard_race(void **state)
{
	const uint64_t psize = 1 << 20;
	struct gatedev *g = calloc(1, sizeof(*g));
	struct vbas_format_opts fo = { .size = psize };
	struct vbas_open_opts oo = { 0 };
	struct vbas_pool *p;
	struct vbas_vol *v, *fillv;
	struct vbas_resv *rs[64];
	int nrs = 0;
	uint8_t *b0 = talloc_io(BS), *b1 = talloc_io(BS), *nb = talloc_io(2 * BS);
	uint8_t *rd = talloc_io(2 * BS);
	struct vbas_extent ex[3];
	(void)state;
	assert_non_null(g);
	wrap_init(&g->w, vbas_memdev_create(psize), &gate_ops);
	R.dev = &g->w.d;
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->cv, NULL);
	assert_ok(vbas_format_dev(&g->w.d, &fo, 0));
	assert_ok(vbas_open_dev(&g->w.d, &oo, &p));
	hold(p);
	assert_ok(vbas_vol_create(p, "v", 4 << 20));
	assert_ok(vbas_vol_create(p, "fill", 16 << 20));
	assert_ok(vbas_vol_open(p, "v", &v));
	R.vol[0] = v;
	assert_ok(vbas_vol_open(p, "fill", &fillv));
	R.vol[1] = fillv;
	memset(b0, 0x22, BS);
	memset(b1, 0x11, BS);
	memset(nb, 0x33, 2 * BS);
	/* Block 1 first, then block 0: two extents, not one. */
	assert_ok(vbas_pwrite(v, b1, BS, BS, 0));
	assert_ok(vbas_pwrite(v, b0, BS, 0, 0));
	memset(ex, 0, sizeof(ex));
	assert_ok(vbas_extents(v, 0, 2 * BS, first_ext_cb, ex));
	assert_int_equal(ex[0].offset, 0);
	assert_int_equal(ex[0].length, BS);
	assert_int_equal(ex[1].offset, BS);
	/* Fill the pool, then hold every block still free for data. */
	for (uint64_t off = 0;; off += BS)
		if (vbas_pwrite(fillv, b1, BS, off, 0))
			break;
	while (nrs < 64 && vbas_reserve(p, 1, &rs[nrs]) == 0)
		nrs++;
	if (nrs == 64) {
		while (nrs)
			vbas_resv_put(rs[--nrs]);
		fail_msg("the pool does not fill up");
	}
	/* The write stops at its device write of block 0. */
	pthread_t tw, td;
	struct gate_job w = { .v = v, .buf = nb, .len = 2 * BS, .off = 0, .g = g };
	struct gate_job dj = { .v = v, .len = BS, .off = BS, .discard = 1, .g = g };
	g->gate_off = ex[0].physical;
	g->armed = 1;
	assert_int_equal(pthread_create(&tw, NULL, gate_job_main, &w), 0);
	if (!gate_wait(g, &g->arrived, 10)) {
		gate_open(g);
		pthread_join(tw, NULL);
		while (nrs)
			vbas_resv_put(rs[--nrs]);
		fail_msg("the write never reached the device write of block 0");
	}
	/* Discard block 1 meanwhile (unless the write holds it locked). */
	assert_int_equal(pthread_create(&td, NULL, gate_job_main, &dj), 0);
	int raced = gate_wait(g, &dj.done, 2);
	if (raced) {
		assert_ok(dj.res);
		/* Commit, so the freed block is free; another user takes it. */
		assert_ok(vbas_flush(p));
		while (nrs < 64 && vbas_reserve(p, 1, &rs[nrs]) == 0)
			nrs++;
	}
	gate_open(g);
	pthread_join(tw, NULL);
	pthread_join(td, NULL);
	for (int i = 0; i < nrs; i++)
		vbas_resv_put(rs[i]);
	assert_ok(dj.res);
	assert_ok(vbas_pread(v, rd, 2 * BS, 0));
	int b0new = !memcmp(rd, nb, BS), b1new = !memcmp(rd + BS, nb + BS, BS);
	int b0old = !memcmp(rd, b0, BS);
	fprintf(stderr, "# discard %s the write; pwrite = %d; block 0 %s, block 1 %s\n",
		raced ? "raced" : "waited for", w.res, b0new ? "new" : b0old ? "old" : "other",
		b1new ? "new" : "not new");
	if (w.res == -ENOSPC && b0new)
		fail_msg("vbas_pwrite of blocks 0-1 failed with ENOSPC after writing block 0 (the "
			 "discard of block 1 ran after the write counted its holes: the reservation "
			 "did not cover the new hole), but vbas.h says a pwrite that fails with ENOSPC "
			 "has changed nothing");
	/* Otherwise all or nothing; block 1 may have been discarded after the
	 * write if the discard waited for it. */
	int b1zero = 1;
	for (size_t k = 0; k < BS; k++)
		b1zero &= rd[BS + k] == 0;
	if (w.res == 0) {
		assert_true(b0new);
		assert_true(b1new || (!raced && b1zero));
	} else {
		assert_int_equal(w.res, -ENOSPC);
		assert_true(b0old);
	}
	R.vol[0] = R.vol[1] = NULL;
	vbas_vol_close(v);
	vbas_vol_close(fillv);
	assert_check_clean(p);
	close_pool(p);
}

/* ---- Single-threaded: reuse after discard on a file pool ---------------- *
 *
 * Blocks freed in transaction N become allocatable once commit N is durable
 * (space.c S2), but the file back end punches them (FALLOC_FL_PUNCH_HOLE)
 * only at commit N+1 (space_committed: discard_next).  A write that reused
 * them in between loses its data at that commit. */
static void t_file_reuse_after_discard(void **state)
{
	struct vbas_format_opts fo = { .size = 16 << 20 };
	struct vbas_vol *v;
	const size_t n = 8 << 20;
	uint8_t *buf = talloc_io(n), *rd = talloc_io(n);
	(void)state;
	assert_ok(vbas_format(tpath("reuse.pool"), &fo));
	struct vbas_pool *p = open_file_pool(tpath("reuse.pool"));
	assert_ok(vbas_vol_create(p, "v", 64 << 20));
	assert_ok(vbas_vol_open(p, "v", &v));
	R.vol[0] = v;
	memset(buf, 0x5a, n);
	assert_ok(vbas_pwrite(v, buf, n, 0, 0));
	assert_ok(vbas_flush(p));
	assert_ok(vbas_discard(v, 0, n, 0));
	assert_ok(vbas_flush(p));             /* the freed blocks are free now */
	memset(buf, 0x33, n);
	for (int i = 0; i < 4; i++)           /* some of them are reused */
		assert_ok(vbas_pwrite(v, buf, n / 4, (16 << 20) + i * (n / 4), 0));
	assert_ok(vbas_flush(p));             /* ... and punched here */
	assert_ok(vbas_pread(v, rd, n, 16 << 20));
	uint64_t bad = 0, first = UINT64_MAX;
	for (size_t k = 0; k < n; k += BS)
		if (memcmp(rd + k, buf + k, BS)) {
			bad++;
			if (first == UINT64_MAX)
				first = (16 << 20) + k;
		}
	if (bad)
		fail_msg("%llu of %zu blocks written after a discard and a commit read back wrong "
			 "after the next commit (first at volume offset %llu; first byte %#x): "
			 "blocks reused after commit N were punched at commit N+1",
			 (unsigned long long)bad, n / BS, (unsigned long long)first,
			 rd[first - (16 << 20)]);
	R.vol[0] = NULL;
	vbas_vol_close(v);
	close_pool(p);
}

/* After every test, passed or failed (the workers are joined by then). */
static int test_teardown(void **state)
{
	(void)state;
	if (R.resv)
		vbas_resv_put(R.resv);
	R.resv = NULL;
	for (int i = 0; i < 4; i++)
		if (R.vol[i]) {
			vbas_vol_close(R.vol[i]);
			R.vol[i] = NULL;
		}
	if (R.pool)
		vbas_close(R.pool);
	R.pool = NULL;
	dev_destroy(R.dev);
	R.dev = NULL;
	for (int i = 0; i < MAXMEM; i++) {
		free(R.mem[i]);
		R.mem[i] = NULL;
	}
	free(OL.zops);
	OL.zops = NULL;
	return 0;
}

/* ---- Fair range locks -------------------------------------------------- */

struct fair {
	struct vbas_pool *p;
	struct vbas_vol *v;
	pthread_mutex_t mu;
	int seq, snap_done, writer_got, snap_seen, err;
};

static void *fair_snap(void *arg)
{
	struct fair *f = arg;
	int r = vbas_vol_snapshot(f->p, "v", "snap", 0);
	pthread_mutex_lock(&f->mu);
	f->snap_done = ++f->seq;
	if (r)
		f->err = r;
	pthread_mutex_unlock(&f->mu);
	return NULL;
}

static void *fair_writer(void *arg)
{
	struct fair *f = arg;
	struct vbas_iomap m;
	int r = vbas_map_begin(f->v, 64 * BS, BS, VBAS_MAP_WRITE, NULL, &m);
	/* Let in after the snapshot: it is there already. */
	struct vbas_vol_info vi;
	int seen = vbas_vol_stat(f->p, "snap", &vi) == 0;
	pthread_mutex_lock(&f->mu);
	f->writer_got = ++f->seq;
	f->snap_seen = seen;
	if (r)
		f->err = r;
	pthread_mutex_unlock(&f->mu);
	if (!r)
		vbas_map_end(f->v, &m, 0, 0);
	return NULL;
}

static int snap_waiting(struct fair *f)
{
	pthread_mutex_lock(&f->v->vs->rl_mu);
	int w = f->v->vs->whole_waiting != NULL;
	pthread_mutex_unlock(&f->v->vs->rl_mu);
	return w;
}

static void t_fair_range_locks(void **state)
{
	(void)state;
	struct fair f = { 0 };
	struct vbas_dev *d = mem_pool(32 << 20, BS, 0);
	struct vbas_iomap a, c;
	pthread_t ts, tw;
	pthread_mutex_init(&f.mu, NULL);
	f.p = open_mem(d, 1 << 20);
	assert_ok(vbas_vol_create(f.p, "v", 1 << 20));
	assert_ok(vbas_vol_open(f.p, "v", &f.v));
	/* This thread holds a write mapping of block 0; the snapshot waits
	 * for it, a ticket taken. */
	assert_ok(vbas_map_begin(f.v, 0, BS, VBAS_MAP_WRITE, NULL, &a));
	assert_int_equal(pthread_create(&ts, NULL, fair_snap, &f), 0);
	for (int i = 0; i < 10000 && !snap_waiting(&f); i++)
		usleep(1000);
	assert_true(snap_waiting(&f));
	/* A writer of another range, newer than the snapshot, waits behind
	 * it (unfair locks would let it in: nothing held overlaps block 64). */
	assert_int_equal(pthread_create(&tw, NULL, fair_writer, &f), 0);
	usleep(50000);
	pthread_mutex_lock(&f.mu);
	int early = f.writer_got;
	pthread_mutex_unlock(&f.mu);
	assert_int_equal(early, 0);
	/* The holder's own second mapping does not wait (the snapshot waits
	 * for this thread: that would deadlock). */
	assert_ok(vbas_map_begin(f.v, 128 * BS, BS, VBAS_MAP_WRITE, NULL, &c));
	assert_ok(vbas_map_end(f.v, &c, 0, 0));
	assert_ok(vbas_map_end(f.v, &a, 0, 0));
	pthread_join(ts, NULL);
	pthread_join(tw, NULL);
	assert_int_equal(f.err, 0);
	assert_true(f.snap_done > 0 && f.writer_got > 0);
	assert_true(f.snap_seen);
	vbas_vol_close(f.v);
	assert_check_clean(f.p);
	assert_ok(vbas_close(f.p));
	dev_destroy(d);
	pthread_mutex_destroy(&f.mu);
}

/* ---- Commits in flight: reads, writes and flushes during a device flush --
 *
 * The gate device holds a flush: the commit that flushes waits there, its pool lock given up (txn.c, "Commits in flight").  While
 * it waits: a read and writes complete, later flushes wait and then share
 * one commit, and the device image as it stands holds the last commit
 * whole (the writes of the next transaction took no block the commit in
 * flight frees).  Without the change each of these waited for the flush. */
struct fg_job {
	struct gatedev *g;
	struct vbas_pool *p;
	struct vbas_vol *v;
	int kind;                  /* 0: flush; 1: the reads and writes below */
	uint8_t *buf, *want;
	int res, done;
};

#define FG_BLOCKS 64

static void *fg_job_main(void *arg)
{
	struct fg_job *j = arg;
	int r = 0;
	if (j->kind == 0) {
		r = vbas_flush(j->p);
	} else {
		/* Read what the sealed commit holds; allocate 64 new blocks;
		 * overwrite one in place; change metadata (a new volume; not a
		 * snapshot of "b", which commits first, its tree being new). */
		r = vbas_pread(j->v, j->buf, 9 * BS, 0);
		for (size_t k = 0; !r && k < BS; k++)
			if (j->buf[k])
				r = -EILSEQ;
		if (!r && memcmp(j->buf + BS, j->want + BS, 8 * BS))
			r = -EILSEQ;
		if (!r)
			r = vbas_pwrite(j->v, j->want + 16 * BS, FG_BLOCKS * BS, 16 * BS, 0);
		if (!r)
			r = vbas_pwrite(j->v, j->want, BS, 0, 0);
		if (!r)
			r = vbas_vol_create(j->p, "c", 1 << 20);
	}
	gate_note(j->g, &j->res, &j->done, r);
	return NULL;
}

static void t_commit_in_flight(void **state)
{
	(void)state;
	struct gatedev *g = calloc(1, sizeof(*g));
	struct vbas_dev *mem = mem_pool(64 << 20, BS, 0);
	struct vbas_vol *a, *b;
	struct vbas_pool_info pi;
	struct rng rg = { 42 };
	uint8_t *d0 = talloc_io(FG_BLOCKS * BS), *want = talloc_io((16 + FG_BLOCKS) * BS);
	uint8_t *rd = talloc_io((16 + FG_BLOCKS) * BS);
	pthread_t t[5];
	struct fg_job jobs[5];
	assert_non_null(g);
	wrap_init(&g->w, mem, &gate_ops);
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->cv, NULL);
	struct vbas_pool *p = open_mem(&g->w.d, 1 << 20);
	assert_ok(vbas_vol_create(p, "a", 1 << 20));
	assert_ok(vbas_vol_create(p, "b", 1 << 20));
	assert_ok(vbas_vol_open(p, "a", &a));
	assert_ok(vbas_vol_open(p, "b", &b));
	rng_fill(&rg, d0, FG_BLOCKS * BS);
	rng_fill(&rg, want, (16 + FG_BLOCKS) * BS);
	memset(want + 9 * BS, 0, 7 * BS);
	assert_ok(vbas_pwrite(a, d0, FG_BLOCKS * BS, 0, 0));
	assert_ok(vbas_pwrite(b, want + BS, 7 * BS, BS, 0));
	assert_ok(vbas_pwrite(b, rd, BS, 0, 0));     /* zeros: rewritten in place later */
	assert_ok(vbas_flush(p));
	assert_ok(vbas_pool_info(p, &pi));
	uint64_t gen0 = pi.generation;
	struct vbas_extent ex[3];
	memset(ex, 0, sizeof(ex));
	assert_ok(vbas_extents(a, 0, FG_BLOCKS * BS, first_ext_cb, ex));
	assert_int_equal(ex[0].length, FG_BLOCKS * BS);
	/* The next commit frees every block of "a" and maps block 8 of "b". */
	assert_ok(vbas_discard(a, 0, FG_BLOCKS * BS, 0));
	assert_ok(vbas_pwrite(b, want + 8 * BS, BS, 8 * BS, 0));
	pthread_mutex_lock(&g->mu);
	g->at_flush = 1;
	g->armed = 1;
	g->flushes = 0;
	pthread_mutex_unlock(&g->mu);
	memset(jobs, 0, sizeof(jobs));
	for (int i = 0; i < 5; i++) {
		jobs[i].g = g;
		jobs[i].p = p;
		jobs[i].v = b;
		jobs[i].buf = talloc_io(9 * BS);
		jobs[i].want = want;
	}
	assert_int_equal(pthread_create(&t[0], NULL, fg_job_main, &jobs[0]), 0);
	int held = gate_wait(g, &g->arrived, 10);
	if (!held) {
		gate_open(g);
		pthread_join(t[0], NULL);
		fail_msg("the flush never reached the device flush");
	}
	/* The commit waits in its device flush.  The reads and writes run,
	 * the allocator looking first where "a" was (as it does once its
	 * rover wrapped): it must take none of those blocks. */
	pool_lock(p);
	p->sp.data_rover = ex[0].physical / BS;
	pool_unlock(p);
	jobs[1].kind = 1;
	assert_int_equal(pthread_create(&t[1], NULL, fg_job_main, &jobs[1]), 0);
	int rw_done = gate_wait(g, &jobs[1].done, 10);
	/* Three more flushes: they wait for the commit in flight. */
	for (int i = 2; i < 5; i++)
		assert_int_equal(pthread_create(&t[i], NULL, fg_job_main, &jobs[i]), 0);
	usleep(100000);
	pthread_mutex_lock(&g->mu);
	int early = jobs[0].done + jobs[2].done + jobs[3].done + jobs[4].done;
	pthread_mutex_unlock(&g->mu);
	/* Power lost now: the image as it stands (every write kept) holds
	 * the last commit whole: "a" reads back although the commit in
	 * flight frees its blocks and 64 blocks were allocated since. */
	struct vbas_dev *img = vbas_memdev_clone(mem);
	gate_open(g);
	for (int i = 0; i < 5; i++)
		pthread_join(t[i], NULL);
	if (!rw_done)
		fail_msg("a read and writes waited for a commit's device flush");
	assert_int_equal(jobs[1].res, 0);
	assert_int_equal(early, 0);
	for (int i = 0; i < 5; i++)
		assert_int_equal(jobs[i].res, 0);
	/* Two commits: the one held and one for the three flushes behind it
	 * (group commit), two device flushes each. */
	fprintf(stderr, "# commit in flight: %llu device flushes for 4 vbas_flush calls\n",
		(unsigned long long)g->flushes);
	assert_int_equal(g->flushes, 4);
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.generation, gen0 + 2);
	/* Everything reads back, live and after a reopen. */
	struct vbas_vol *b1;
	assert_ok(vbas_vol_snapshot(p, "b", "b1", 0));
	assert_ok(vbas_pread(b, rd, (16 + FG_BLOCKS) * BS, 0));
	assert_memory_equal(rd, want, (16 + FG_BLOCKS) * BS);
	assert_ok(vbas_pread(a, rd, FG_BLOCKS * BS, 0));
	for (size_t k = 0; k < FG_BLOCKS * BS; k++)
		assert_int_equal(rd[k], 0);
	vbas_vol_close(a);
	vbas_vol_close(b);
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	p = open_mem(mem, 1 << 20);
	assert_ok(vbas_vol_open(p, "b1", &b1));
	assert_ok(vbas_pread(b1, rd, (16 + FG_BLOCKS) * BS, 0));
	assert_memory_equal(rd, want, (16 + FG_BLOCKS) * BS);
	vbas_vol_close(b1);
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	/* The image taken during the flush: the commit before it. */
	p = open_mem(img, 1 << 20);
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.generation, gen0);
	assert_ok(vbas_vol_open(p, "a", &a));
	assert_ok(vbas_pread(a, rd, FG_BLOCKS * BS, 0));
	assert_memory_equal(rd, d0, FG_BLOCKS * BS);
	vbas_vol_close(a);
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	dev_destroy(img);
	dev_destroy(&g->w.d);
	for (int i = 0; i < 5; i++)
		tfree(jobs[i].buf);
	tfree(d0);
	tfree(want);
	tfree(rd);
}

/* Reads take no pool lock: with the pool's mutex held by this thread (as
 * a commit holds it while it waits for the device, or any change while
 * it works), a read of mapped data, of a hole and of a snapshot completes
 * in another thread.  A read whose range a writer holds waits for it. */
struct rd_job {
	struct gatedev *g;       /* (only its mutex and condition) */
	struct vbas_vol *v;
	uint8_t *buf;
	size_t len;
	uint64_t off;
	int res, done;
};

static void *rd_job_main(void *arg)
{
	struct rd_job *j = arg;
	int r = vbas_pread(j->v, j->buf, j->len, j->off);
	gate_note(j->g, &j->res, &j->done, r);
	return NULL;
}

static void t_read_without_pool_lock(void **state)
{
	(void)state;
	struct gatedev g;
	struct vbas_dev *d = mem_pool(32 << 20, BS, 0);
	struct vbas_pool *p = open_mem(d, 1 << 20);
	struct vbas_vol *v, *s;
	struct rng rg = { 7 };
	uint8_t *data = talloc_io(64 * BS), *rd = talloc_io(64 * BS);
	struct vbas_iomap m;
	pthread_t t;
	memset(&g, 0, sizeof(g));
	pthread_mutex_init(&g.mu, NULL);
	pthread_cond_init(&g.cv, NULL);
	assert_ok(vbas_vol_create(p, "v", 1 << 20));
	assert_ok(vbas_vol_open(p, "v", &v));
	rng_fill(&rg, data, 64 * BS);
	assert_ok(vbas_pwrite(v, data, 32 * BS, 0, 0));
	assert_ok(vbas_vol_snapshot(p, "v", "s", 0));
	assert_ok(vbas_vol_open(p, "s", &s));
	assert_ok(vbas_pwrite(v, data + 32 * BS, 32 * BS, 0, 0));   /* copy on write */
	/* Warm: the first read of each keeps the volume's record. */
	assert_ok(vbas_pread(v, rd, BS, 0));
	assert_ok(vbas_pread(s, rd, BS, 0));
	struct { struct vbas_vol *v; uint64_t off; const uint8_t *want; } cases[] = {
		{ v, 0, data + 32 * BS }, { s, 0, data }, { v, 40 * BS, NULL },
	};
	for (unsigned i = 0; i < 3; i++) {
		struct rd_job j = { .g = &g, .v = cases[i].v, .buf = rd, .len = 8 * BS,
				    .off = cases[i].off };
		memset(rd, 0xee, 8 * BS);
		pthread_mutex_lock(&p->lock);
		assert_int_equal(pthread_create(&t, NULL, rd_job_main, &j), 0);
		int done = gate_wait(&g, &j.done, 10);
		pthread_mutex_unlock(&p->lock);
		pthread_join(t, NULL);
		if (!done)
			fail_msg("read %u waited for the pool lock", i);
		assert_int_equal(j.res, 0);
		if (cases[i].want) {
			assert_memory_equal(rd, cases[i].want, 8 * BS);
		} else {
			for (size_t k = 0; k < 8 * BS; k++)
				assert_int_equal(rd[k], 0);
		}
	}
	/* A writer's mapping of blocks 0-3: a read of block 2 waits for it. */
	assert_ok(vbas_map_begin(v, 0, 4 * BS, VBAS_MAP_WRITE, NULL, &m));
	struct rd_job j = { .g = &g, .v = v, .buf = rd, .len = BS, .off = 2 * BS };
	assert_int_equal(pthread_create(&t, NULL, rd_job_main, &j), 0);
	int early = gate_wait(&g, &j.done, 0.2);
	assert_ok(vbas_map_end(v, &m, 0, 0));
	pthread_join(t, NULL);
	assert_int_equal(early, 0);
	assert_int_equal(j.res, 0);
	assert_memory_equal(rd, data + 34 * BS, BS);
	vbas_vol_close(v);
	vbas_vol_close(s);
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	dev_destroy(d);
	pthread_mutex_destroy(&g.mu);
	pthread_cond_destroy(&g.cv);
	tfree(data);
	tfree(rd);
}

#define T(f) cmocka_unit_test_teardown(f, test_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(t_disjoint_regions_mem),
		T(t_disjoint_volumes_file),
		T(t_overlap),
		T(t_flush_and_map_file),
		T(t_enospc_regions),
		T(t_enospc_overlap),
		T(t_enospc_discard_race),
		T(t_file_reuse_after_discard),
		T(t_fair_range_locks),
		T(t_commit_in_flight),
		T(t_read_without_pool_lock),
	};
	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests_name("threads", tests, group_setup, group_teardown);
}
