/* Crash tests: power loss at many points on the in-memory device, with the
 * writes not yet flushed dropped, reordered and torn.  After reopening,
 * the pool must pass vbas_check and hold one of the committed states:
 * the volumes of the last commit (or of a commit in flight when power
 * went), and in each volume every 512-byte sector as committed or as one
 * of the writes made since that commit (in-place overwrites of mapped
 * blocks are not journaled, with the guarantees of a disk sector).
 *
 * The random simulator also snapshots, clones, reflinks, dedupes and
 * unshares, and deletes origins while their snapshots and clones live on.
 * Commits the library makes by itself inside an operation (a snapshot
 * commits first; txn_maybe_commit in writes, deletes, reflinks) are
 * noticed by the generation moving on, and the model then knows which
 * states that commit may have captured (see struct sim).
 *
 * A dedicated test deletes a large volume that shares subtrees and
 * extents with a snapshot and a clone, with the delete made to commit
 * many times, power lost at many points of it and again during the open
 * that resumes it.
 * Also: corruption of superblocks and tree nodes is detected and named.
 *
 *   VBAS_SEED=n   base seed      VBAS_OPS=n  crash points per seed
 *   VBAS_TEST=pattern             run only the tests named so
 *   VBAS_CRASH_AT=n VBAS_CRASH_MODE=m   one crash point of a failure message
 *   VBAS_RESUME_AT=n VBAS_RESUME_MODE=m  (t_crash_delete_shared) and in the open
 *   VBAS_TRACE=1                  print the operations up to the crash
 *   VBAS_BREAK_MODEL=reflink|delete   break the model: the tests must fail
 *   VBAS_BREAK_MODEL=punch        break the library: freed blocks punched
 *                                 before the commit is durable (must fail)
 */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXV 8
#define SECT 512
#define BS 4096ull

/* Tunables as the library ships them, restored after every test. */
static struct vbas_tunables tun_default;

static int restore_tunables(void **state)
{
	(void)state;
	vbas_tun = tun_default;
	return 0;
}

/* $VBAS_BREAK_MODEL=WHAT breaks the test's own model, to show the checks
 * fail: "reflink" (reflinks leave the model's destination as it was),
 * "delete" (the large shared volume misses one block's write). */
static int break_model(const char *what)
{
	const char *b = getenv("VBAS_BREAK_MODEL");
	return b && !strcmp(b, what);
}

/* Ranges of blocks: pairs (first, count). */
struct blist {
	uint64_t *v;
	size_t n, cap;
};

static void blist_add(struct blist *l, uint64_t start, uint64_t n)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 1024;
		l->v = realloc(l->v, 2 * l->cap * sizeof(*l->v));
		assert_non_null(l->v);
	}
	l->v[2 * l->n] = start;
	l->v[2 * l->n + 1] = n;
	l->n++;
}

static int cmp_pair(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Blocks covered at least MIN times by the ranges of L (sorted in
 * place), as sorted disjoint ranges into OUT; returns blocks covered at
 * least once. */
static uint64_t blist_cover(struct blist *l, unsigned min, struct blist *out)
{
	struct blist ev = { 0 };
	uint64_t once = 0;
	if (out)
		out->n = 0;
	for (size_t i = 0; i < l->n; i++) {
		blist_add(&ev, l->v[2 * i], 1);
		blist_add(&ev, l->v[2 * i] + l->v[2 * i + 1], (uint64_t)-1);
	}
	if (ev.n)
		qsort(ev.v, ev.n, 2 * sizeof(*ev.v), cmp_pair);
	uint64_t depth = 0, from = 0;
	for (size_t i = 0; i < ev.n; i++) {
		uint64_t at = ev.v[2 * i];
		if (depth >= 1 && at > from)
			once += at - from;
		if (out && depth >= min && at > from) {
			if (out->n && out->v[2 * out->n - 2] + out->v[2 * out->n - 1] == from)
				out->v[2 * out->n - 1] += at - from;
			else
				blist_add(out, from, at - from);
		}
		depth += ev.v[2 * i + 1];
		from = at;
	}
	free(ev.v);
	return once;
}

static int blist_cb(const struct vbas_extent *x, void *arg)
{
	blist_add(arg, x->physical / BS, x->length / BS);
	return 0;
}

/* ---- The model ----------------------------------------------------------- */

/* A volume's bytes, shared between model states until one changes them. */
struct vdata {
	int refs;
	uint8_t b[];
};

static struct vdata *vd_new(uint64_t size)
{
	struct vdata *d = calloc(1, sizeof(*d) + size);
	assert_non_null(d);
	d->refs = 1;
	return d;
}

static void vd_put(struct vdata *d)
{
	if (d && --d->refs == 0)
		free(d);
}

struct cvol {
	int live;
	int ro;                 /* a snapshot */
	char name[24];
	uint64_t size;
	struct vdata *d;
};

struct state {
	struct cvol v[MAXV];
};

/* C's bytes, to be changed: its own copy first if shared. */
static uint8_t *bytes_mut(struct cvol *c)
{
	if (c->d->refs > 1) {
		struct vdata *n = vd_new(c->size);
		memcpy(n->b, c->d->b, c->size);
		vd_put(c->d);
		c->d = n;
	}
	return c->d->b;
}

static void state_copy(struct state *dst, const struct state *src)
{
	for (int i = 0; i < MAXV; i++) {
		vd_put(dst->v[i].d);
		dst->v[i] = src->v[i];
		if (dst->v[i].d)
			dst->v[i].d->refs++;
	}
}

static void state_free(struct state *s)
{
	for (int i = 0; i < MAXV; i++)
		vd_put(s->v[i].d);
	memset(s, 0, sizeof(*s));
}

struct logent {
	char name[24];
	uint64_t off, len;
	uint8_t *data;
};

enum {
	OP_CREATE, OP_DELETE, OP_RESIZE, OP_SNAP, OP_CLONE, OP_FLUSH, OP_REFLINK,
	OP_DEDUPE, OP_UNSHARE, OP_DIFF, OP_WRITE, OP_DISCARD, OP_ZEROES, OP_N
};
static const char *const op_name[OP_N] = {
	"create", "delete", "resize", "snapshot", "clone", "flush", "reflink",
	"dedupe", "unshare", "diff", "write", "discard", "zeroes",
};
/* Weights out of 100: the plain mix (as before sharing) and the sharing one. */
static const uint8_t mix_plain[OP_N] = { 4, 3, 3, 0, 0, 12, 0, 0, 0, 0, 58, 10, 10 };
static const uint8_t mix_share[OP_N] = { 4, 4, 3, 5, 5, 10, 9, 6, 4, 2, 32, 8, 8 };

/* Which states a commit the library makes inside an operation may capture:
 * the state before the operation, after it, or (both set) any mix of the
 * two block by block (a prefix of a reflink, some chunks of a write). */
enum { MAY_PRE = 1, MAY_POST = 2 };
#define NALT 2

struct stats {
	uint64_t ops[OP_N];
	uint64_t rofs;          /* writes, resizes, reflinks... to snapshots refused */
	uint64_t lib_commits;   /* operations inside which the library committed */
	uint64_t dedupe_same;
	uint64_t discards;      /* device discards (freed blocks punched) */
};

/* The simulator.  The durable state is one of ALT (the last commit as far
 * as the model knows: one state after vbas_flush; after a commit made
 * inside an operation, what that operation allows) with any of the writes
 * in LOG (made since) over it.  While an operation runs, a commit it
 * makes may also capture PRE (the state before it) or CUR (after it), as
 * MAY says; the in-flight vbas_flush is such an operation. */
struct sim {
	struct state cur, pre;
	struct state alt[NALT];
	int nalt;
	unsigned may;
	uint64_t gen0;          /* generation when the operation began */
	size_t log0;            /* its first log entry */
	struct logent *log;
	size_t nlog, caplog;
	struct rng r;
	int serial;
	int sharing;
	struct vbas_dev *dev;
	uint64_t seed, at;
	unsigned mode;
	struct stats st;
	int skip_reflink_copy;  /* break the model (proves the check can fail) */
	int trace;              /* $VBAS_TRACE: print each operation */
};

static void log_add(struct sim *S, const char *name, uint64_t off, uint64_t len, const uint8_t *d)
{
	if (S->nlog == S->caplog) {
		S->caplog = S->caplog ? S->caplog * 2 : 64;
		S->log = realloc(S->log, S->caplog * sizeof(*S->log));
		assert_non_null(S->log);
	}
	struct logent *l = &S->log[S->nlog++];
	snprintf(l->name, sizeof(l->name), "%s", name);
	l->off = off;
	l->len = len;
	l->data = malloc(len);
	assert_non_null(l->data);
	if (d)
		memcpy(l->data, d, len);
	else
		memset(l->data, 0, len);
}

/* Forget the first N log entries. */
static void log_drop(struct sim *S, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(S->log[i].data);
	if (n)
		memmove(S->log, S->log + n, (S->nlog - n) * sizeof(*S->log));
	S->nlog -= n;
}

static void log_clear(struct sim *S)
{
	log_drop(S, S->nlog);
}

static void set_alt(struct sim *S, const struct state *a, const struct state *b)
{
	for (int i = 0; i < NALT; i++)
		state_free(&S->alt[i]);
	S->nalt = 0;
	if (a)
		state_copy(&S->alt[S->nalt++], a);
	if (b)
		state_copy(&S->alt[S->nalt++], b);
}

static void op_begin(struct sim *S, struct vbas_pool *p, unsigned may)
{
	state_copy(&S->pre, &S->cur);
	S->may = may;
	S->gen0 = p->gen;
	S->log0 = S->nlog;
}

/* After an operation: if the library committed inside it, the durable
 * state is now one the operation allows, and the writes logged before it
 * are durable (a commit flushes every write made before it). */
static void op_end(struct sim *S, struct vbas_pool *p, int op)
{
	if (vbas_memdev_crashed(S->dev))
		return;         /* the operation stays in flight for verify */
	if (p->gen != S->gen0) {
		if (!S->may)
			fail_msg("seed %llu: %s committed, which it never does",
				 (unsigned long long)S->seed, op_name[op]);
		set_alt(S, S->may & MAY_PRE ? &S->pre : NULL, S->may & MAY_POST ? &S->cur : NULL);
		log_drop(S, S->log0);
		S->st.lib_commits++;
	}
	S->may = 0;
}

static int do_flush(struct sim *S, struct vbas_pool *p)
{
	op_begin(S, p, MAY_POST);
	int e = vbas_flush(p);
	if (e)
		return e;
	set_alt(S, &S->cur, NULL);
	log_clear(S);
	S->may = 0;
	return 0;
}

/* A call on a snapshot that must be refused. */
static int want_rofs(struct sim *S, int e, const char *what, const char *name)
{
	if (e == -EROFS) {
		S->st.rofs++;
		return 0;
	}
	if (vbas_memdev_crashed(S->dev))
		return e;
	fail_msg("seed %llu: %s on snapshot %s returned %d, not -EROFS", (unsigned long long)S->seed,
		 what, name, e);
	return e;
}

static int pick_any(struct sim *S)
{
	int live[MAXV], n = 0;
	for (int i = 0; i < MAXV; i++)
		if (S->cur.v[i].live)
			live[n++] = i;
	return n ? live[rng_below(&S->r, n)] : -1;
}

static int free_slot(const struct sim *S)
{
	for (int i = 0; i < MAXV; i++)
		if (!S->cur.v[i].live)
			return i;
	return -1;
}

static uint64_t min64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* Write, discard or zero [off, off+len) of volume I (a snapshot refuses). */
static int do_write(struct sim *S, struct vbas_pool *p, int op, int i, uint64_t off, uint64_t len,
		    const uint8_t *buf)
{
	struct cvol *c = &S->cur.v[i];
	struct vbas_vol *v;
	int e = vbas_vol_open(p, c->name, &v);
	if (e)
		return e;
	unsigned zflags = rng_below(&S->r, 2) ? VBAS_IO_NO_PUNCH : 0;
	if (c->ro) {
		e = op == OP_WRITE ? vbas_pwrite(v, buf, len, off, 0) :
		    op == OP_DISCARD ? vbas_discard(v, off, len, 0) : vbas_write_zeroes(v, off, len, zflags);
		vbas_vol_close(v);
		return want_rofs(S, e, op_name[op], c->name);
	}
	if (S->trace)
		fprintf(stderr, "#   %s %s %llu+%llu\n", op_name[op], c->name, (unsigned long long)off,
			(unsigned long long)len);
	op_begin(S, p, MAY_PRE | MAY_POST);
	/* Log first: a write that fails half-way may have landed. */
	log_add(S, c->name, off, len, op == OP_WRITE ? buf : NULL);
	if (op == OP_WRITE)
		memcpy(bytes_mut(c) + off, buf, len);
	else
		memset(bytes_mut(c) + off, 0, len);
	e = op == OP_WRITE ? vbas_pwrite(v, buf, len, off, 0) :
	    op == OP_DISCARD ? vbas_discard(v, off, len, 0) : vbas_write_zeroes(v, off, len, zflags);
	vbas_vol_close(v);
	op_end(S, p, op);
	return e;
}

/* Block-aligned ranges for reflink and dedupe: NB blocks at SB of volume
 * SI and DB of DI (not overlapping if one volume); 1: none found. */
static int pick_ranges(struct sim *S, int si, int di, uint64_t *sb, uint64_t *db, uint64_t *nb)
{
	uint64_t nbs = S->cur.v[si].size / BS, nbd = S->cur.v[di].size / BS;
	for (int tries = 0; tries < 4; tries++) {
		*sb = rng_below(&S->r, nbs);
		*nb = 1 + rng_below(&S->r, min64(min64(nbs - *sb, nbd), 48));
		*db = rng_below(&S->r, nbd - *nb + 1);
		if (si != di || *sb >= *db + *nb || *db >= *sb + *nb)
			return 0;
	}
	return 1;
}

/* Reflink NB blocks from SI at SB to DI at DB; LEN0: pass length 0 ("to
 * the end of the source"), the range running to it. */
static int do_reflink(struct sim *S, struct vbas_pool *p, int si, uint64_t sb, int di, uint64_t db,
		      uint64_t nb, int len0)
{
	struct cvol *sc = &S->cur.v[si], *dc = &S->cur.v[di];
	struct vbas_vol *vs, *vd;
	uint64_t len = nb * BS;
	int e = vbas_vol_open(p, sc->name, &vs);
	if (e)
		return e;
	e = vbas_vol_open(p, dc->name, &vd);
	if (e) {
		vbas_vol_close(vs);
		return e;
	}
	if (dc->ro) {
		e = vbas_reflink(vs, sb * BS, vd, db * BS, len0 ? 0 : len);
		vbas_vol_close(vs);
		vbas_vol_close(vd);
		return want_rofs(S, e, "reflink", dc->name);
	}
	if (S->trace)
		fprintf(stderr, "#   reflink %s blk %llu -> %s blk %llu, %llu blocks\n", sc->name,
			(unsigned long long)sb, dc->name, (unsigned long long)db, (unsigned long long)nb);
	op_begin(S, p, MAY_PRE | MAY_POST);
	/* The destination reads as the source did: until committed, a write
	 * of the source's bytes there. */
	uint8_t *tmp = malloc(len);
	assert_non_null(tmp);
	memcpy(tmp, sc->d->b + sb * BS, len);
	log_add(S, dc->name, db * BS, len, tmp);
	if (!S->skip_reflink_copy)
		memcpy(bytes_mut(dc) + db * BS, tmp, len);
	free(tmp);
	e = vbas_reflink(vs, sb * BS, vd, db * BS, len0 ? 0 : len);
	vbas_vol_close(vs);
	vbas_vol_close(vd);
	op_end(S, p, OP_REFLINK);
	return e;
}

struct range_list {
	uint64_t *v;            /* pairs: offset, length (bytes) */
	size_t n, cap;
};

static int range_cb(uint64_t off, uint64_t len, void *arg)
{
	struct range_list *l = arg;
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 32;
		l->v = realloc(l->v, 2 * l->cap * sizeof(*l->v));
		assert_non_null(l->v);
	}
	l->v[2 * l->n] = off;
	l->v[2 * l->n + 1] = len;
	l->n++;
	return 0;
}

static int shared_ext_cb(const struct vbas_extent *x, void *arg)
{
	if (x->flags & VBAS_EXTENT_SHARED) {
		*(uint64_t *)arg = x->offset;
		return 1;
	}
	return 0;
}

/* Diff of A and B against the model: every block whose bytes differ lies
 * in a reported range (the same mapping means the same bytes).  And A's
 * usage adds up. */
static int do_diff(struct sim *S, struct vbas_pool *p, int ai, int bi)
{
	const struct cvol *a = &S->cur.v[ai], *b = &S->cur.v[bi];
	struct vbas_vol *va, *vb;
	struct range_list rl = { 0 };
	int e = vbas_vol_open(p, a->name, &va);
	if (e)
		return e;
	e = vbas_vol_open(p, b->name, &vb);
	if (e) {
		vbas_vol_close(va);
		return e;
	}
	op_begin(S, p, 0);
	e = vbas_diff(va, vb, range_cb, &rl);
	struct vbas_vol_usage u;
	struct vbas_vol_info info;
	if (!e)
		e = vbas_vol_usage(p, a->name, &u);
	if (!e)
		e = vbas_vol_info(va, &info);
	vbas_vol_close(va);
	vbas_vol_close(vb);
	op_end(S, p, OP_DIFF);
	if (!e) {
		uint64_t end = a->size > b->size ? a->size : b->size, prev = 0;
		for (size_t k = 0; k < rl.n; k++) {
			uint64_t o = rl.v[2 * k], l = rl.v[2 * k + 1];
			if (l == 0 || o < prev || o + l > end || (o | l) % BS)
				fail_msg("seed %llu: diff %s %s: bad range %llu+%llu",
					 (unsigned long long)S->seed, a->name, b->name,
					 (unsigned long long)o, (unsigned long long)l);
			prev = o + l;
		}
		static const uint8_t zero[BS];
		size_t k = 0;
		for (uint64_t o = 0; o < end; o += BS) {
			const uint8_t *x = o < a->size ? a->d->b + o : zero;
			const uint8_t *y = o < b->size ? b->d->b + o : zero;
			if (!memcmp(x, y, BS))
				continue;
			while (k < rl.n && rl.v[2 * k] + rl.v[2 * k + 1] <= o)
				k++;
			if (k == rl.n || rl.v[2 * k] > o)
				fail_msg("seed %llu: diff %s %s misses block %llu, whose bytes differ",
					 (unsigned long long)S->seed, a->name, b->name,
					 (unsigned long long)(o / BS));
		}
		if (u.mapped != u.exclusive + u.shared || u.mapped != info.mapped)
			fail_msg("seed %llu: usage of %s: mapped %llu, exclusive %llu, shared %llu, "
				 "info says %llu", (unsigned long long)S->seed, a->name,
				 (unsigned long long)u.mapped, (unsigned long long)u.exclusive,
				 (unsigned long long)u.shared, (unsigned long long)info.mapped);
	}
	free(rl.v);
	return e;
}

/* One random operation; returns the error, 0, or 1 for "not done". */
static int step(struct sim *S, struct vbas_pool *p)
{
	const uint8_t *mix = S->sharing ? mix_share : mix_plain;
	uint64_t what = rng_below(&S->r, 100);
	int op = 0;
	for (unsigned acc = mix[0]; what >= acc && op < OP_N - 1; acc += mix[++op])
		;
	int ci = pick_any(S);
	if (ci < 0)
		op = OP_CREATE;
	S->st.ops[op]++;
	struct cvol *c = ci >= 0 ? &S->cur.v[ci] : NULL;
	if (S->trace)
		fprintf(stderr, "# op %s on %s (gen %llu, write %llu)\n", op_name[op], c ? c->name : "-",
			(unsigned long long)p->gen, (unsigned long long)vbas_memdev_writes(S->dev));
	int e;
	switch (op) {
	case OP_CREATE: {
		int i = free_slot(S);
		if (i < 0)
			return 1;
		struct cvol *n = &S->cur.v[i];
		uint64_t size = (16 + rng_below(&S->r, 256)) * BS;
		op_begin(S, p, 0);
		snprintf(n->name, sizeof(n->name), "v%d", S->serial++);
		n->live = 1;
		n->ro = 0;
		n->size = size;
		n->d = vd_new(size);
		e = vbas_vol_create(p, n->name, size);
		op_end(S, p, op);
		return e;
	}
	case OP_DELETE:
		/* Origins go too: their snapshots and clones live on. */
		op_begin(S, p, MAY_POST);
		c->live = 0;
		vd_put(c->d);
		c->d = NULL;
		e = vbas_vol_delete(p, c->name);
		op_end(S, p, op);
		return e;
	case OP_RESIZE: {
		uint64_t size = (16 + rng_below(&S->r, 256)) * BS;
		if (c->ro)
			return want_rofs(S, vbas_vol_resize(p, c->name, size), "resize", c->name);
		/* A shrink unmaps the tail in steps that may commit: the
		 * old size with part of the tail zero. */
		op_begin(S, p, size < c->size ? MAY_PRE | MAY_POST : MAY_POST);
		if (size < c->size)
			log_add(S, c->name, size, c->size - size, NULL);
		struct vdata *d = vd_new(size);
		memcpy(d->b, c->d->b, min64(size, c->size));
		vd_put(c->d);
		c->d = d;
		c->size = size;
		e = vbas_vol_resize(p, c->name, size);
		op_end(S, p, op);
		return e;
	}
	case OP_SNAP:
	case OP_CLONE: {
		int i = free_slot(S);
		if (i < 0)
			return 1;
		struct cvol *n = &S->cur.v[i];
		int w = op == OP_CLONE;
		/* Commits first if the source changed: the state before. */
		op_begin(S, p, MAY_PRE);
		snprintf(n->name, sizeof(n->name), "%c%d", w ? 'c' : 's', S->serial++);
		n->live = 1;
		n->ro = !w;
		n->size = c->size;
		n->d = c->d;
		n->d->refs++;
		if (S->trace)
			fprintf(stderr, "#   %s %s -> %s\n", op_name[op], c->name, n->name);
		e = vbas_vol_snapshot(p, c->name, n->name, w ? VBAS_SNAP_WRITABLE : 0);
		op_end(S, p, op);
		return e;
	}
	case OP_FLUSH:
		return do_flush(S, p);
	case OP_REFLINK:
	case OP_DEDUPE: {
		int di = pick_any(S);
		uint64_t sb, db, nb;
		if (pick_ranges(S, ci, di, &sb, &db, &nb))
			return 1;
		int len0 = sb + nb == c->size / BS && rng_below(&S->r, 2);
		if (op == OP_REFLINK)
			return do_reflink(S, p, ci, sb, di, db, nb, len0);
		struct cvol *dc = &S->cur.v[di];
		/* Make the ranges equal first (or nearly: one byte off), or
		 * share them already, or leave them as they are. */
		unsigned prep = (unsigned)rng_below(&S->r, 5);
		if (!dc->ro && prep <= 1) {
			uint8_t *buf = malloc(nb * BS);
			assert_non_null(buf);
			memcpy(buf, c->d->b + sb * BS, nb * BS);
			if (prep == 1)
				buf[rng_below(&S->r, nb * BS)] ^= 1 + (uint8_t)rng_below(&S->r, 255);
			e = do_write(S, p, OP_WRITE, di, db * BS, nb * BS, buf);
			free(buf);
		} else if (!dc->ro && prep == 2) {
			e = do_reflink(S, p, ci, sb, di, db, nb, 0);
		} else {
			e = 0;
		}
		if (e || vbas_memdev_crashed(S->dev))
			return e;
		int equal = !memcmp(c->d->b + sb * BS, dc->d->b + db * BS, nb * BS), same = -1;
		struct vbas_vol *vs, *vd;
		e = vbas_vol_open(p, c->name, &vs);
		if (e)
			return e;
		e = vbas_vol_open(p, dc->name, &vd);
		if (e) {
			vbas_vol_close(vs);
			return e;
		}
		if (dc->ro) {
			e = vbas_dedupe(vs, sb * BS, vd, db * BS, len0 ? 0 : nb * BS, &same);
			vbas_vol_close(vs);
			vbas_vol_close(vd);
			return want_rofs(S, e, "dedupe", dc->name);
		}
		if (S->trace)
			fprintf(stderr, "#   dedupe %s blk %llu -> %s blk %llu, %llu blocks\n", c->name,
				(unsigned long long)sb, dc->name, (unsigned long long)db,
				(unsigned long long)nb);
		/* The bytes do not change: none to log. */
		op_begin(S, p, MAY_PRE | MAY_POST);
		e = vbas_dedupe(vs, sb * BS, vd, db * BS, len0 ? 0 : nb * BS, &same);
		vbas_vol_close(vs);
		vbas_vol_close(vd);
		op_end(S, p, op);
		if (!e && same != equal)
			fail_msg("seed %llu: dedupe %s %llu -> %s %llu (%llu blocks): same %d, but the "
				 "ranges are %s", (unsigned long long)S->seed, c->name,
				 (unsigned long long)sb, dc->name, (unsigned long long)db,
				 (unsigned long long)nb, same, equal ? "equal" : "not equal");
		S->st.dedupe_same += !e && same;
		return e;
	}
	case OP_UNSHARE: {
		uint64_t nbk = c->size / BS, off = 0, len = 0;
		if (rng_below(&S->r, 3)) {
			off = rng_below(&S->r, nbk);
			len = 1 + rng_below(&S->r, nbk - off);
			off *= BS;
			len *= BS;
		}
		struct vbas_vol *v;
		e = vbas_vol_open(p, c->name, &v);
		if (e)
			return e;
		if (c->ro) {
			e = vbas_unshare(v, off, len);
			vbas_vol_close(v);
			return want_rofs(S, e, "unshare", c->name);
		}
		if (S->trace)
			fprintf(stderr, "#   unshare %s %llu+%llu\n", c->name, (unsigned long long)off,
				(unsigned long long)len);
		op_begin(S, p, MAY_PRE | MAY_POST);
		e = vbas_unshare(v, off, len);
		op_end(S, p, op);
		/* Nothing in the range is shared any more. */
		uint64_t at = UINT64_MAX;
		if (!e && !vbas_memdev_crashed(S->dev)) {
			e = vbas_extents(v, off, len ? len : c->size, shared_ext_cb, &at);
			if (e == 1)
				fail_msg("seed %llu: unshare %s %llu+%llu left offset %llu shared",
					 (unsigned long long)S->seed, c->name, (unsigned long long)off,
					 (unsigned long long)len, (unsigned long long)at);
		}
		vbas_vol_close(v);
		return e;
	}
	case OP_DIFF:
		return do_diff(S, p, ci, pick_any(S));
	default: {
		uint64_t off = rng_below(&S->r, c->size), len = 1 + rng_below(&S->r, 40000);
		if (len > c->size - off)
			len = c->size - off;
		if (op == OP_DISCARD) {
			off &= ~(BS - 1);
			len = (len + BS - 1) & ~(BS - 1);
			if (len > c->size - off)
				len = c->size - off;
		}
		uint8_t *buf = NULL;
		if (op == OP_WRITE) {
			buf = malloc(len);
			assert_non_null(buf);
			rng_fill(&S->r, buf, len);
		}
		e = do_write(S, p, op, ci, off, len, buf);
		free(buf);
		return e;
	}
	}
}

static const struct cvol *find(const struct state *s, const char *name)
{
	for (int i = 0; i < MAXV; i++)
		if (s->v[i].live && !strcmp(s->v[i].name, name))
			return &s->v[i];
	return NULL;
}

struct names {
	char n[16][VBAS_NAME_MAX + 1];
	uint64_t size[16];
	int ro[16];
	int count;
};

static int name_cb(const struct vbas_vol_info *info, void *arg)
{
	struct names *nm = arg;
	if (nm->count < 16) {
		strcpy(nm->n[nm->count], info->name);
		nm->size[nm->count] = info->size;
		nm->ro[nm->count] = !!(info->flags & VBAS_VOL_READONLY);
	}
	nm->count++;
	return 0;
}

/* Does the reopened pool match state S (volumes, sizes, snapshot or not)? */
static int same_volumes(const struct names *nm, const struct state *s)
{
	int live = 0;
	for (int i = 0; i < MAXV; i++)
		live += s->v[i].live;
	if (live != nm->count)
		return 0;
	for (int k = 0; k < nm->count; k++) {
		const struct cvol *c = find(s, nm->n[k]);
		if (!c || c->size != nm->size[k] || c->ro != nm->ro[k])
			return 0;
	}
	return 1;
}

/* The states a crash now may show: the last commit, and what a commit
 * inside the operation in flight may have captured. */
static int candidates(const struct sim *S, const struct state **c)
{
	int n = 0;
	for (int i = 0; i < S->nalt; i++)
		c[n++] = &S->alt[i];
	if (S->may & MAY_PRE)
		c[n++] = &S->pre;
	if (S->may & MAY_POST)
		c[n++] = &S->cur;
	return n;
}

static void print_state(const char *what, const struct state *s)
{
	fprintf(stderr, "#   %s:", what);
	for (int i = 0; i < MAXV; i++)
		if (s->v[i].live)
			fprintf(stderr, " %s(%llu%s)", s->v[i].name, (unsigned long long)s->v[i].size,
				s->v[i].ro ? ",ro" : "");
	fprintf(stderr, "\n");
}

/* Where else byte G at offset S would have been right: other volumes'
 * states and writes (a write or a block showing through in another). */
static void explain(const struct sim *S, const struct state **cand, int nc, const char *name,
		    uint64_t s, uint8_t g)
{
	for (int i = 0; i < nc; i++)
		for (int k = 0; k < MAXV; k++) {
			const struct cvol *c = &cand[i]->v[k];
			if (c->live && c->size > s)
				fprintf(stderr, "#   state %d: %s holds %#x there%s\n", i, c->name,
					c->d->b[s], strcmp(c->name, name) ? "" : " (this volume)");
		}
	for (size_t l = 0; l < S->nlog; l++) {
		const struct logent *e = &S->log[l];
		if (s >= e->off && s < e->off + e->len && e->data[s - e->off] == g)
			fprintf(stderr, "#   log entry %zu: %s %llu+%llu wrote %#x there\n", l, e->name,
				(unsigned long long)e->off, (unsigned long long)e->len, g);
	}
}

static void verify(struct sim *S, struct vbas_pool *p, uint64_t seed, uint64_t at)
{
	struct names nm = { .count = 0 };
	const struct state *cand[NALT + 2];
	int nc = candidates(S, cand);
	assert_ok(vbas_vol_list(p, name_cb, &nm));
	const struct state *st = NULL;
	int sti = -1;
	for (int i = 0; i < nc && !st; i++)
		if (same_volumes(&nm, cand[i]))
			st = cand[sti = i];
	if (!st) {
		fprintf(stderr, "#   found:");
		for (int k = 0; k < nm.count && k < 16; k++)
			fprintf(stderr, " %s(%llu%s)", nm.n[k], (unsigned long long)nm.size[k],
				nm.ro[k] ? ",ro" : "");
		fprintf(stderr, "\n");
		for (int i = 0; i < nc; i++)
			print_state("possible", cand[i]);
		fail_msg("seed %llu crash at write %llu mode %u: the volumes after reopen match "
			 "no committed state", (unsigned long long)seed, (unsigned long long)at, S->mode);
	}
	for (int k = 0; k < nm.count; k++) {
		const struct cvol *c = find(st, nm.n[k]), *cv[NALT + 2];
		int ncv = 0;
		for (int i = 0; i < nc; i++)
			if ((cv[ncv] = find(cand[i], c->name)))
				ncv++;
		struct vbas_vol *v;
		uint8_t *buf = malloc(c->size);
		assert_non_null(buf);
		assert_ok(vbas_vol_open(p, c->name, &v));
		assert_ok(vbas_pread(v, buf, c->size, 0));
		vbas_vol_close(v);
		/* Each byte as in a state the crash may show, or as one of the
		 * writes since the commit left it (sectors of in-place
		 * overwrites may land, or not, in any combination).  Only this
		 * volume's own states and writes count. */
		for (uint64_t s = 0; s < c->size; s++) {
			uint8_t g = buf[s];
			int ok = 0;
			for (int i = 0; i < ncv && !ok; i++)
				ok = cv[i]->size > s && cv[i]->d->b[s] == g;
			for (size_t l = 0; l < S->nlog && !ok; l++) {
				const struct logent *e = &S->log[l];
				ok = s >= e->off && s < e->off + e->len && e->data[s - e->off] == g &&
				     !strcmp(e->name, c->name);
			}
			if (!ok) {
				fprintf(stderr, "#   reopened at generation %llu, matching state %d; the "
					"operation in flight may have committed %s%s (generation %llu "
					"before it)\n", (unsigned long long)p->gen, sti, S->may & MAY_PRE ? "the state before it " : "",
					S->may & MAY_POST ? "the state after it" : "",
					(unsigned long long)S->gen0);
				explain(S, cand, nc, c->name, s, g);
				fail_msg("seed %llu crash at write %llu mode %u: volume %s byte %llu "
					 "holds %#x, which was never committed or written there",
					 (unsigned long long)seed, (unsigned long long)at, S->mode, c->name,
					 (unsigned long long)s, g);
			}
		}
		free(buf);
	}
}

struct simcfg {
	uint32_t fanout;
	int sharing;
};

/* Run scenario SEED; lose power at write AT (UINT64_MAX: never).  Returns
 * the number of device writes the scenario made. */
static uint64_t scenario(uint64_t seed, uint64_t at, unsigned mode, const struct simcfg *cfg,
			 int nops, struct stats *st)
{
	struct sim S;
	memset(&S, 0, sizeof(S));
	S.r.s = seed;
	S.seed = seed;
	S.at = at;
	S.mode = mode;
	S.sharing = cfg->sharing;
	S.skip_reflink_copy = break_model("reflink");
	S.trace = at != UINT64_MAX && getenv("VBAS_TRACE") != NULL;
	S.nalt = 1;             /* the empty pool, as formatted */
	struct vbas_dev *dev = mem_pool(24ull << 20, 4096, cfg->fanout);
	struct vbas_pool *p = open_mem(dev, cfg->fanout ? 128 << 10 : 0);
	S.dev = dev;
	uint64_t w0 = vbas_memdev_writes(dev);
	if (at != UINT64_MAX)
		vbas_memdev_arm_crash(dev, at, mode, seed ^ at);
	for (int i = 0; i < nops && !vbas_memdev_crashed(dev); i++) {
		int e = step(&S, p);
		if (e < 0 && !vbas_memdev_crashed(dev))
			fail_msg("seed %llu: operation failed without a crash: %d %s",
				 (unsigned long long)seed, e, vbas_errmsg());
	}
	uint64_t writes = vbas_memdev_writes(dev) - w0;
	if (at == UINT64_MAX) {
		assert_check_clean(p);
		assert_ok(vbas_close(p));
		S.st.discards = vbas_memdev_discards(dev);
		dev_destroy(dev);
	} else {
		if (!vbas_memdev_crashed(dev)) {
			vbas_memdev_crash_now(dev, mode, seed);
			S.may = 0;
		}
		vbas_close(p);               /* fails: the device is gone */
		struct vbas_dev *surv = vbas_memdev_survivor(dev);
		dev_destroy(dev);
		struct vbas_pool *q = NULL;
		int e = vbas_open_dev(surv, NULL, &q);
		if (e)
			fail_msg("seed %llu crash at write %llu: reopen failed: %s",
				 (unsigned long long)seed, (unsigned long long)at, vbas_errmsg());
		assert_check_clean(q);
		verify(&S, q, seed, at);
		/* The pool goes on working after the crash. */
		assert_ok(vbas_vol_create(q, "after-crash", 1 << 20));
		struct vbas_vol *v;
		assert_ok(vbas_vol_open(q, "after-crash", &v));
		char buf[8192];
		memset(buf, 0x5a, sizeof(buf));
		assert_ok(vbas_pwrite(v, buf, sizeof(buf), 4096, 0));
		vbas_vol_close(v);
		assert_check_clean(q);
		assert_ok(vbas_close(q));
		dev_destroy(surv);
	}
	if (st)
		*st = S.st;
	state_free(&S.cur);
	state_free(&S.pre);
	for (int i = 0; i < NALT; i++)
		state_free(&S.alt[i]);
	log_clear(&S);
	free(S.log);
	return writes;
}

static struct stats crash_sweep(uint64_t seed, const struct simcfg *cfg, uint64_t points)
{
	const int nops = 150;
	struct stats st;
	uint64_t w = scenario(seed, UINT64_MAX, 0, cfg, nops, &st);
	struct rng r = { seed * 31 + 7 };
	const char *one = getenv("VBAS_CRASH_AT"), *m = getenv("VBAS_CRASH_MODE");
	if (one) {
		/* Reproduce one crash point of a failure message. */
		scenario(seed, strtoull(one, NULL, 0), m ? (unsigned)strtoul(m, NULL, 0) : VBAS_CRASH_DROP,
			 cfg, nops, NULL);
		return st;
	}
	fprintf(stderr, "# seed %llu: %llu device writes (%llu discards), %llu crash points",
		(unsigned long long)seed, (unsigned long long)w, (unsigned long long)st.discards,
		(unsigned long long)points);
	if (cfg->sharing)
		fprintf(stderr, "; %llu snapshots, %llu clones, %llu reflinks, %llu dedupes (%llu same), "
			"%llu unshares, %llu deletes, %llu refused on snapshots, %llu operations "
			"committed inside",
			(unsigned long long)st.ops[OP_SNAP],
			(unsigned long long)st.ops[OP_CLONE], (unsigned long long)st.ops[OP_REFLINK],
			(unsigned long long)st.ops[OP_DEDUPE], (unsigned long long)st.dedupe_same,
			(unsigned long long)st.ops[OP_UNSHARE], (unsigned long long)st.ops[OP_DELETE],
			(unsigned long long)st.rofs, (unsigned long long)st.lib_commits);
	fprintf(stderr, "\n");
	for (uint64_t k = 0; k < points; k++) {
		/* Evenly spread points, and random ones between them. */
		uint64_t at = k % 2 ? rng_below(&r, w + 1) : (w * k) / points;
		scenario(seed, at, crash_modes[k % 4], cfg, nops, NULL);
	}
	return st;
}

static void t_crash_small_fanout(void **state)
{
	(void)state;
	struct simcfg cfg = { .fanout = 5 };
	uint64_t s = test_seed(21);
	crash_sweep(s, &cfg, test_ops(60));
	crash_sweep(s + 1, &cfg, test_ops(60));
}

static void t_crash_default(void **state)
{
	(void)state;
	struct simcfg cfg = { .fanout = 0 };
	uint64_t s = test_seed(31);
	struct stats a = crash_sweep(s, &cfg, test_ops(60));
	struct stats b = crash_sweep(s + 1, &cfg, test_ops(60));
	/* Discards and zeroing freed blocks, punched after their commits
	 * (crash points among the punches too). */
	assert_true(a.discards > 0 && b.discards > 0);
}

/* Snapshots, clones, reflink, dedupe, unshare and deletes of origins in
 * the mix; small nodes, so trees are deep and shared in part. */
static void t_crash_sharing_small_fanout(void **state)
{
	(void)state;
	struct simcfg cfg = { .fanout = 5, .sharing = 1 };
	uint64_t s = test_seed(41);
	struct stats a = crash_sweep(s, &cfg, test_ops(60));
	struct stats b = crash_sweep(s + 1, &cfg, test_ops(60));
	/* The mix did what it says. */
	assert_true(a.ops[OP_SNAP] + b.ops[OP_SNAP] > 0 && a.ops[OP_CLONE] + b.ops[OP_CLONE] > 0);
	assert_true(a.dedupe_same + b.dedupe_same > 0 && a.rofs + b.rofs > 0);
	assert_true(a.discards > 0 && b.discards > 0);
}

static void t_crash_sharing_default(void **state)
{
	(void)state;
	struct simcfg cfg = { .fanout = 0, .sharing = 1 };
	uint64_t s = test_seed(51);
	crash_sweep(s, &cfg, test_ops(60));
	crash_sweep(s + 1, &cfg, test_ops(60));
}

/* Transactions kept tiny, so the library commits inside writes, deletes,
 * shrinks and reflinks (txn_maybe_commit), and deletes release trees in
 * small steps. */
static void t_crash_sharing_small_txn(void **state)
{
	(void)state;
	struct simcfg cfg = { .fanout = 5, .sharing = 1 };
	uint64_t s = test_seed(61);
	vbas_tun.drop_budget = 8;
	vbas_tun.txn_big_freed = 4;
	vbas_tun.txn_big_meta = 24;
	struct stats a = crash_sweep(s, &cfg, test_ops(60));
	struct stats b = crash_sweep(s + 1, &cfg, test_ops(60));
	vbas_tun = tun_default;
	assert_true(a.lib_commits > 0 && b.lib_commits > 0);
}
/* ---- Corruption ---------------------------------------------------------- */

static struct vbas_dev *pool_with_data(void)
{
	struct vbas_dev *d = mem_pool(16ull << 20, 4096, 5);
	struct vbas_pool *p = open_mem(d, 0);
	struct vbas_vol *v;
	char buf[4096];
	assert_ok(vbas_vol_create(p, "a", 4 << 20));
	assert_ok(vbas_vol_open(p, "a", &v));
	for (int i = 0; i < 200; i++) {
		memset(buf, i, sizeof(buf));
		assert_ok(vbas_pwrite(v, buf, sizeof(buf), (uint64_t)i * 8192, 0));
	}
	vbas_vol_close(v);
	assert_ok(vbas_close(p));
	return d;
}

static struct vbas_dev *flipped(struct vbas_dev *d, uint64_t off)
{
	struct vbas_dev *c = vbas_memdev_clone(d);
	vbas_memdev_image(c)[off] ^= 0x10;
	struct vbas_dev *c2 = vbas_memdev_clone(c);
	dev_destroy(c);
	return c2;
}

static void t_corrupt_superblock(void **state)
{
	(void)state;
	struct vbas_dev *d = pool_with_data();
	struct vbas_pool *p = open_mem(d, 0);
	struct vbas_pool_info pi;
	assert_ok(vbas_pool_info(p, &pi));
	uint64_t gen = pi.generation;
	assert_ok(vbas_close(p));
	/* The newest superblock is in slot gen % 2; damage it. */
	struct vbas_dev *c = flipped(d, (gen % 2) * 4096 + 70);
	assert_ok(vbas_open_dev(c, &(struct vbas_open_opts){ .flags = VBAS_OPEN_RDONLY }, &p));
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.generation, gen - 1);
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	dev_destroy(c);
	/* Both damaged: a clear error, no crash. */
	struct vbas_dev *c1 = flipped(d, 70);
	c = flipped(c1, 4096 + 70);
	dev_destroy(c1);
	assert_int_equal(vbas_open_dev(c, NULL, &p), -EUCLEAN);
	assert_non_null(strstr(vbas_errmsg(), "slot 0: checksum mismatch"));
	assert_non_null(strstr(vbas_errmsg(), "slot 1: checksum mismatch"));
	dev_destroy(c);
	/* Not a pool at all. */
	c = vbas_memdev_create(1 << 20);
	memset(vbas_memdev_image(c), 0xab, 1 << 20);
	c1 = vbas_memdev_clone(c);
	assert_int_equal(vbas_open_dev(c1, NULL, &p), -EINVAL);
	assert_non_null(strstr(vbas_errmsg(), "not a vbas pool"));
	dev_destroy(c);
	dev_destroy(c1);
	dev_destroy(d);
}

struct ext_list {
	uint64_t phys[512];
	int n;
};

static void t_corrupt_node(void **state)
{
	(void)state;
	struct vbas_dev *d = pool_with_data();
	struct vbas_pool *p = open_mem(d, 0);
	/* Find a mapping-tree node: the volume's root. */
	struct vbas_vol_rec rec;
	uint64_t id;
	assert_ok(vol_lookup_name(p, "a", &id, &rec));
	uint64_t root = le64_get(rec.root);
	assert_true(root >= VBAS_FIRST_BLOCK);
	assert_ok(vbas_close(p));
	for (int where = 0; where < 3; where++) {
		/* Header, records, and the tail of the node. */
		uint64_t off = root * 4096 + (where == 0 ? 9 : where == 1 ? 200 : 4000);
		struct vbas_dev *c = flipped(d, off);
		p = open_mem(c, 0);
		struct vbas_vol *v;
		char buf[4096];
		assert_ok(vbas_vol_open(p, "a", &v));
		int e = vbas_pread(v, buf, sizeof(buf), 0);
		assert_true(e == -EBADMSG || e == -EUCLEAN);
		char want[64];
		snprintf(want, sizeof(want), "block %llu", (unsigned long long)root);
		assert_non_null(strstr(vbas_errmsg(), want));
		/* Writes fail cleanly too, and nothing is damaged further. */
		e = vbas_pwrite(v, buf, sizeof(buf), 0, 0);
		assert_true(e == -EBADMSG || e == -EUCLEAN || e == -EROFS);
		vbas_vol_close(v);
		struct vbas_check_stats st;
		assert_int_equal(vbas_check(p, NULL, NULL, &st), -EUCLEAN);
		assert_true(st.problems >= 1);
		p->rdonly = 1;
		vbas_close(p);
		dev_destroy(c);
	}
	dev_destroy(d);
}


/* ---- Deleting a large shared volume --------------------------------------- */

/* An origin O of DS_N one-block extents (every other block mapped), in a
 * tree of small nodes; S a snapshot of it and C a clone, taken between
 * overwrites of parts of O, so that subtrees are shared by all three, by
 * two, or private; C written too; extents shared by reflink between C and
 * O, from S, and within O.  Then one of them is deleted with a step budget
 * and transaction limits so small that the delete commits many times,
 * and power is lost at points across it (and across the open that resumes
 * it).  Nothing else changes, so every volume left must read exactly as
 * before; the deleted one is there, whole, only if no commit of the
 * delete survived. */
#define DS_N 2000
/* The volumes take ~3,000 data and ~4,400 metadata blocks.  With nodes of
 * 5 records each transaction of the delete shadows nearly the whole
 * refcount tree (~2,300 nodes, freed only at its commit), so the delete
 * needs that much free besides: at 40 MiB it failed with ENOSPC.  Every
 * step now holds room for that churn (space_cascade: three times the
 * nodes with five records a node), so the set-up's discard under the
 * clone needs some 5,500 blocks free beyond half the reserve: 96 MiB. */
#define DS_POOL (96ull << 20)
#define DS_CACHE (4 << 20)
enum { DS_O, DS_S, DS_C, DS_NV };
static const char *const ds_name[DS_NV] = { "o", "s", "c" };

struct ds {
	struct vbas_dev *base;  /* the pool before the delete, committed */
	uint64_t size;          /* bytes of each volume */
	uint8_t *m[DS_NV];      /* their bytes */
	uint64_t gen;           /* generation of BASE */
	uint64_t seed;
	struct rng r;
	int skip_model_write;   /* break the model (proves the check can fail) */
	/* What the sweep met. */
	uint64_t present, gone, resume_crashed, ro_checked;
	char where[160];        /* the trial, for messages */
};

static void ds_write(struct ds *D, struct vbas_vol *v, int which, uint64_t lblk)
{
	uint8_t buf[BS];
	rng_fill(&D->r, buf, sizeof(buf));
	assert_ok(vbas_pwrite(v, buf, sizeof(buf), lblk * BS, 0));
	if (!D->skip_model_write || lblk != DS_N)
		memcpy(D->m[which] + lblk * BS, buf, sizeof(buf));
}

static void ds_reflink(struct ds *D, struct vbas_pool *p, int si, uint64_t sb, int di, uint64_t db,
		       uint64_t nb)
{
	struct vbas_vol *vs, *vd;
	assert_ok(vbas_vol_open(p, ds_name[si], &vs));
	assert_ok(vbas_vol_open(p, ds_name[di], &vd));
	assert_ok(vbas_reflink(vs, sb * BS, vd, db * BS, nb * BS));
	memmove(D->m[di] + db * BS, D->m[si] + sb * BS, nb * BS);
	vbas_vol_close(vs);
	vbas_vol_close(vd);
}

static void ds_build(struct ds *D, uint64_t seed)
{
	const uint64_t n = DS_N, nblk = 2 * DS_N;
	memset(D, 0, sizeof(*D));
	D->seed = seed;
	D->r.s = seed;
	D->skip_model_write = break_model("delete");
	D->size = nblk * BS;
	for (int i = 0; i < DS_NV; i++) {
		D->m[i] = calloc(1, D->size);
		assert_non_null(D->m[i]);
	}
	struct vbas_dev *d = mem_pool(DS_POOL, 4096, 5);
	struct vbas_pool *p = open_mem(d, DS_CACHE);
	struct vbas_vol *vo, *vc;
	assert_ok(vbas_vol_create(p, "o", D->size));
	assert_ok(vbas_vol_open(p, "o", &vo));
	for (uint64_t i = 0; i < n; i++)
		ds_write(D, vo, DS_O, 2 * i);
	vbas_vol_close(vo);
	/* S shares all of O; then O's second quarter and some odd blocks
	 * (new extents) become O's own. */
	assert_ok(vbas_vol_snapshot(p, "o", "s", 0));
	memcpy(D->m[DS_S], D->m[DS_O], D->size);
	assert_ok(vbas_vol_open(p, "o", &vo));
	for (uint64_t b = n / 2; b < n; b += 2)
		ds_write(D, vo, DS_O, b);
	for (uint64_t b = 1; b < nblk; b += 74)
		ds_write(D, vo, DS_O, b);
	vbas_vol_close(vo);
	/* C shares O as it is now; then O's seventh eighth is rewritten, and
	 * C's second eighth, and C loses 64 blocks. */
	assert_ok(vbas_vol_snapshot(p, "o", "c", VBAS_SNAP_WRITABLE));
	memcpy(D->m[DS_C], D->m[DS_O], D->size);
	assert_ok(vbas_vol_open(p, "o", &vo));
	for (uint64_t b = 3 * n / 2; b < 7 * n / 4; b += 2)
		ds_write(D, vo, DS_O, b);
	vbas_vol_close(vo);
	assert_ok(vbas_vol_open(p, "c", &vc));
	for (uint64_t b = n / 4; b < n / 2; b += 2)
		ds_write(D, vc, DS_C, b);
	assert_ok(vbas_discard(vc, n * BS, 64 * BS, 0));
	memset(D->m[DS_C] + n * BS, 0, 64 * BS);
	vbas_vol_close(vc);
	/* Extents shared across records: S into C, C into O, O into O. */
	ds_reflink(D, p, DS_S, 0, DS_C, 3 * n / 2, 64);
	ds_reflink(D, p, DS_C, 3 * n / 10, DS_O, 13 * n / 10, 32);
	ds_reflink(D, p, DS_O, 50, DS_O, 7 * n / 4 + 10, 40);
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	D->base = vbas_memdev_clone(d);
	dev_destroy(d);
	struct vbas_sb sb;
	uint32_t slot;
	assert_ok(txn_read_sb(D->base, &sb, &slot));
	D->gen = le64_get(sb.generation);
}

static void ds_free(struct ds *D)
{
	for (int i = 0; i < DS_NV; i++)
		free(D->m[i]);
	dev_destroy(D->base);
}

/* Data blocks the volumes listed map, each counted once. */
static uint64_t distinct_blocks(struct vbas_pool *p, const struct names *nm)
{
	struct blist l = { 0 };
	for (int k = 0; k < nm->count; k++) {
		struct vbas_vol *v;
		assert_ok(vbas_vol_open(p, nm->n[k], &v));
		assert_ok(vbas_extents(v, 0, nm->size[k], blist_cb, &l));
		vbas_vol_close(v);
	}
	uint64_t total = blist_cover(&l, 1, NULL);
	free(l.v);
	return total;
}

/* The pool after the crash (or without one): clean, the deleted volume
 * whole if PRESENT and gone otherwise, the others exactly as built, no
 * delete left half done, and data_used what the volumes left map. */
static void ds_verify(struct ds *D, struct vbas_pool *q, int victim, int present)
{
	struct names nm = { .count = 0 };
	assert_check_clean(q);
	assert_ok(vbas_vol_list(q, name_cb, &nm));
	int want = 0;
	for (int i = 0; i < DS_NV; i++) {
		int here = 0;
		for (int k = 0; k < nm.count; k++)
			here |= !strcmp(nm.n[k], ds_name[i]);
		int expect = i != victim || present;
		want += expect;
		if (here != expect)
			fail_msg("%s: volume %s is %s after reopen", D->where, ds_name[i],
				 here ? "there" : "missing");
		if (!here)
			continue;
		struct vbas_vol *v;
		uint8_t *buf = malloc(D->size);
		assert_non_null(buf);
		assert_ok(vbas_vol_open(q, ds_name[i], &v));
		assert_ok(vbas_pread(v, buf, D->size, 0));
		vbas_vol_close(v);
		if (memcmp(buf, D->m[i], D->size)) {
			uint64_t s = 0;
			while (buf[s] == D->m[i][s])
				s++;
			fail_msg("%s: volume %s byte %llu (block %llu) holds %#x, not %#x", D->where,
				 ds_name[i], (unsigned long long)s, (unsigned long long)(s / BS), buf[s],
				 D->m[i][s]);
		}
		free(buf);
	}
	assert_int_equal(nm.count, want);
	struct vbas_pool_info pi;
	assert_ok(vbas_pool_info(q, &pi));
	/* Volumes counts records marked DELETING too: none left. */
	assert_int_equal(pi.volumes, (uint64_t)want);
	uint64_t used = distinct_blocks(q, &nm);
	if (pi.data_used != used * BS)
		fail_msg("%s: data_used %llu blocks, the volumes map %llu", D->where,
			 (unsigned long long)(pi.data_used / BS), (unsigned long long)used);
}

/* After the volumes are checked: delete the rest; no data may stay used. */
static void ds_drain(struct ds *D, struct vbas_pool *q)
{
	struct names nm = { .count = 0 };
	assert_ok(vbas_vol_list(q, name_cb, &nm));
	for (int k = 0; k < nm.count; k++)
		assert_ok(vbas_vol_delete(q, nm.n[k]));
	assert_ok(vbas_flush(q));
	assert_check_clean(q);
	struct vbas_pool_info pi;
	assert_ok(vbas_pool_info(q, &pi));
	if (pi.data_used || pi.volumes || pi.mapped)
		fail_msg("%s: all volumes deleted, %llu bytes of data still used", D->where,
			 (unsigned long long)pi.data_used);
}

/* Delete VICTIM and flush, losing power at write AT of it (UINT64_MAX:
 * never); RESUME_AT: also lose power at that write of the open that
 * resumes the delete (UINT64_MAX: not).  Returns the delete's writes, and
 * its commits in *COMMITS. */
static uint64_t ds_trial(struct ds *D, int victim, uint64_t at, unsigned mode, uint64_t resume_at,
			 unsigned mode2, int drain, uint64_t *commits)
{
	struct vbas_open_opts oo = { .cache_bytes = DS_CACHE };
	if (at == UINT64_MAX)
		snprintf(D->where, sizeof(D->where), "seed %llu, delete of %s without a crash",
			 (unsigned long long)D->seed, ds_name[victim]);
	else
		snprintf(D->where, sizeof(D->where), "seed %llu, delete of %s, crash at write %llu "
			 "mode %u, then at write %lld mode %u of the open", (unsigned long long)D->seed,
			 ds_name[victim], (unsigned long long)at, mode, (long long)resume_at, mode2);
	struct vbas_dev *d = vbas_memdev_clone(D->base);
	struct vbas_pool *p = open_mem(d, DS_CACHE), *q;
	uint64_t w0 = vbas_memdev_writes(d), c0 = p->commits;
	if (at != UINT64_MAX)
		vbas_memdev_arm_crash(d, at, mode, D->seed ^ at);
	int e = vbas_vol_delete(p, ds_name[victim]);
	if (!e)
		e = vbas_flush(p);
	uint64_t writes = vbas_memdev_writes(d) - w0;
	if (commits)
		*commits = p->commits - c0;
	if (e && !vbas_memdev_crashed(d))
		fail_msg("%s: the delete failed without a crash: %d %s", D->where, e, vbas_errmsg());
	if (at == UINT64_MAX) {
		ds_verify(D, p, victim, 0);
		if (drain)
			ds_drain(D, p);
		assert_ok(vbas_close(p));
		dev_destroy(d);
		return writes;
	}
	if (!vbas_memdev_crashed(d))
		vbas_memdev_crash_now(d, mode, D->seed);
	vbas_close(p);                  /* fails: the device is gone */
	struct vbas_dev *surv = vbas_memdev_survivor(d);
	dev_destroy(d);
	/* Which commit survived: the one before the delete, or one of its. */
	struct vbas_sb sb;
	uint32_t slot;
	assert_ok(txn_read_sb(surv, &sb, &slot));
	int present = le64_get(sb.generation) == D->gen;
	D->present += present;
	D->gone += !present;
	if (!present) {
		/* Read-only (vbas check -n): a delete cut short is checked as it
		 * is, half done, and not one byte is written. */
		struct vbas_open_opts ro = { .flags = VBAS_OPEN_RDONLY };
		struct vbas_pool *rp;
		struct vbas_check_stats st;
		uint64_t w = vbas_memdev_writes(surv);
		uint8_t *img = malloc(surv->size);
		assert_non_null(img);
		memcpy(img, vbas_memdev_image(surv), surv->size);
		assert_ok(vbas_open_dev(surv, &ro, &rp));
		e = vbas_check(rp, NULL, NULL, &st);
		if (e)
			fail_msg("%s: read-only check of the delete cut short: %d %s", D->where, e,
				 vbas_errmsg());
		assert_ok(vbas_close(rp));
		assert_int_equal(vbas_memdev_writes(surv), w);
		assert_memory_equal(img, vbas_memdev_image(surv), surv->size);
		free(img);
		D->ro_checked++;
	}
	if (!present && resume_at != UINT64_MAX) {
		/* Lose power again while open resumes the delete (if it takes
		 * that many writes; else after it). */
		vbas_memdev_arm_crash(surv, resume_at, mode2, D->seed ^ at ^ resume_at);
		e = vbas_open_dev(surv, &oo, &q);
		if (!e) {
			vbas_memdev_crash_now(surv, mode2, D->seed);
			vbas_close(q);
		} else if (!vbas_memdev_crashed(surv)) {
			fail_msg("%s: the open resuming the delete failed without a crash: %d %s",
				 D->where, e, vbas_errmsg());
		} else {
			D->resume_crashed++;
		}
		struct vbas_dev *s2 = vbas_memdev_survivor(surv);
		dev_destroy(surv);
		surv = s2;
	}
	e = vbas_open_dev(surv, &oo, &q);
	if (e)
		fail_msg("%s: reopen failed: %s", D->where, vbas_errmsg());
	ds_verify(D, q, victim, present);
	if (drain)
		ds_drain(D, q);
	assert_ok(vbas_close(q));
	dev_destroy(surv);
	return writes;
}

static void ds_sweep(struct ds *D, int victim, uint64_t points)
{
	uint64_t commits;
	uint64_t w = ds_trial(D, victim, UINT64_MAX, 0, UINT64_MAX, 0, 1, &commits);
	/* The delete must really be cut into many commits. */
	if (commits < 10)
		fail_msg("seed %llu: the delete of %s committed %llu times; the tunables do not "
			 "take effect", (unsigned long long)D->seed, ds_name[victim],
			 (unsigned long long)commits);
	struct rng r = { D->seed * 17 + (uint64_t)victim };
	const char *one = getenv("VBAS_CRASH_AT"), *m = getenv("VBAS_CRASH_MODE");
	const char *ra = getenv("VBAS_RESUME_AT"), *rm = getenv("VBAS_RESUME_MODE");
	if (one) {
		/* Reproduce one point of a failure message. */
		ds_trial(D, victim, strtoull(one, NULL, 0), m ? (unsigned)strtoul(m, NULL, 0) : 1,
			 ra ? (uint64_t)strtoll(ra, NULL, 0) : UINT64_MAX,
			 rm ? (unsigned)strtoul(rm, NULL, 0) : 1, 0, NULL);
		return;
	}
	D->present = D->gone = D->resume_crashed = D->ro_checked = 0;
	for (uint64_t k = 0; k < points; k++) {
		uint64_t at = k % 2 ? rng_below(&r, w + 1) : (w * k) / points;
		/* Every other crash that leaves the delete half done also cuts
		 * the open that resumes it. */
		uint64_t rat = k % 4 < 2 ? rng_below(&r, w - at + 1) : UINT64_MAX;
		ds_trial(D, victim, at, crash_modes[k % 4], rat, crash_modes[(k / 4) % 4], k % 8 == 3,
			 NULL);
	}
	fprintf(stderr, "# delete of %s: %llu device writes, %llu commits; %llu crash points: "
		"%llu before its first commit, %llu after (%llu with the open that resumes "
		"it cut too)\n", ds_name[victim], (unsigned long long)w,
		(unsigned long long)commits, (unsigned long long)points,
		(unsigned long long)D->present, (unsigned long long)D->gone,
		(unsigned long long)D->resume_crashed);
	/* The points met both outcomes and open had deletes to resume. */
	assert_true(D->present > 0 && D->gone > 0 && D->resume_crashed > 0);
	/* ... and each of the latter was checked read-only first. */
	assert_int_equal(D->ro_checked, D->gone);
}

static void t_crash_delete_shared(void **state)
{
	(void)state;
	struct ds D;
	ds_build(&D, test_seed(71));
	/* The origin, while the snapshot and clone live on. */
	vbas_tun.drop_budget = 32;
	vbas_tun.txn_big_freed = 4;
	vbas_tun.txn_big_meta = 16;
	ds_sweep(&D, DS_O, test_ops(20));
	/* The snapshot, while the origin (and clone) live on. */
	vbas_tun.drop_budget = 48;
	ds_sweep(&D, DS_S, test_ops(12));
	vbas_tun = tun_default;
	ds_free(&D);
}

/* ---- Overwrites of what the last commit shares --------------------------- */

/* A block whose count changed in the running transaction may be shared in
 * the last commit even if it is not now; it must not be overwritten in
 * place before the commit (found by the random crash tests above).
 * Block P holds 'A' at a place the last commit maps (volume V or C,
 * block 0); in the running transaction that place lets go of P or P gets
 * a second place, and then P is overwritten in place with 'X' from the
 * other place, and power goes (every unflushed write lands).  The last
 * commit, which reopens, must still read 'A' where it mapped P.
 *   0  C, a clone of V, copies the block on write; V writes it
 *   1  C, a snapshot of V, is deleted; V writes it
 *   2  C has the block by reflink and discards it; V writes it
 *   3  V's block 0 is reflinked to V's block 1 and discarded; V writes block 1
 *   4  as 3, but one write covers the second half of block 0 (copied on
 *      write) and block 1 (in place, as P is no longer shared by then)
 *   5  as 1, but V first writes block 1: that copies the tree's root (no
 *      longer shared, but shared in the last commit) before V writes P */
static char committed_share_case(int how)
{
	struct vbas_dev *d = mem_pool(16 << 20, 4096, 0);
	struct vbas_pool *p = open_mem(d, 0);
	struct vbas_vol *v, *c;
	char a[4096], b[8192], got[4096];
	memset(a, 'A', sizeof(a));
	memset(b, 'X', sizeof(b));
	assert_ok(vbas_vol_create(p, "v", 1 << 20));
	assert_ok(vbas_vol_open(p, "v", &v));
	assert_ok(vbas_pwrite(v, a, sizeof(a), 0, 0));
	if (how == 2) {
		assert_ok(vbas_vol_create(p, "c", 1 << 20));
		assert_ok(vbas_vol_open(p, "c", &c));
		assert_ok(vbas_reflink(v, 0, c, 0, 4096));
		vbas_vol_close(c);
	}
	vbas_vol_close(v);
	if (how < 2 || how == 5)
		assert_ok(vbas_vol_snapshot(p, "v", "c", how == 0 ? VBAS_SNAP_WRITABLE : 0));
	assert_ok(vbas_flush(p));
	/* The running transaction. */
	if (how == 1 || how == 5)
		assert_ok(vbas_vol_delete(p, "c"));
	if (how == 0 || how == 2) {
		assert_ok(vbas_vol_open(p, "c", &c));
		if (how == 0)
			assert_ok(vbas_pwrite(c, b, 4096, 0, 0));
		else
			assert_ok(vbas_discard(c, 0, 4096, 0));
		vbas_vol_close(c);
	}
	assert_ok(vbas_vol_open(p, "v", &v));
	if (how == 3) {
		assert_ok(vbas_reflink(v, 0, v, 4096, 4096));
		assert_ok(vbas_discard(v, 0, 4096, 0));
		assert_ok(vbas_pwrite(v, b, 4096, 4096, 0));
	} else if (how == 4) {
		assert_ok(vbas_reflink(v, 0, v, 4096, 4096));
		assert_ok(vbas_pwrite(v, b, 6144, 2048, 0));
	} else if (how == 5) {
		assert_ok(vbas_pwrite(v, b, 4096, 4096, 0));
		assert_ok(vbas_pwrite(v, b, 4096, 0, 0));
	} else {
		assert_ok(vbas_pwrite(v, b, 4096, 0, 0));
	}
	vbas_vol_close(v);
	vbas_memdev_crash_now(d, 0, 1);
	vbas_close(p);
	struct vbas_dev *s = vbas_memdev_survivor(d);
	dev_destroy(d);
	p = open_mem(s, 0);
	assert_check_clean(p);
	/* Where the last commit mapped P and nothing wrote since. */
	assert_ok(vbas_vol_open(p, how >= 3 && how != 5 ? "v" : "c", &c));
	assert_ok(vbas_pread(c, got, how == 4 ? 2048 : 4096, 0));
	vbas_vol_close(c);
	assert_ok(vbas_close(p));
	dev_destroy(s);
	return got[0];
}

static void t_no_overwrite_of_committed_share(void **state)
{
	(void)state;
	static const char *const how[] = {
		"a clone copied the block on write",
		"a snapshot sharing the block was deleted",
		"a volume discarded the block it had by reflink",
		"a block reflinked within a volume was discarded at its first place",
		"one write copied a block reflinked within the volume and overwrote its "
		"second place",
		"a snapshot sharing the block was deleted, and a write elsewhere copied the "
		"tree's root first",
	};
	for (int i = 0; i < 6; i++) {
		char g = committed_share_case(i);
		if (g != 'A')
			fail_msg("%s, then the block was overwritten in place: after a crash the "
				 "last commit reads '%c' where it mapped the block, not 'A'", how[i], g);
	}
}

/* ---- Discards and power loss --------------------------------------------- */

/* The in-memory device models a discard as a write of unknown contents,
 * lost, reordered or torn at power loss like any other.  One trial:
 * volume "v" written and committed, then all of it discarded and that
 * committed, power lost at device write AT of the second part (MODE,
 * SEED; UINT64_MAX: never, and *NWRITES is how many writes it made).
 * Returns 1 if the pool after the crash fails check, or "v" reads as
 * neither the first commit (the data) nor the second (zeros). */
static int punch_trial(uint64_t at, unsigned mode, uint64_t seed, uint64_t *nwrites)
{
	enum { N = 64, LEN = N * BS };
	struct vbas_dev *dev = mem_pool(2 << 20, 4096, 0), *surv;
	struct vbas_pool *p = open_mem(dev, 256 << 10), *q;
	struct vbas_vol *v;
	struct rng r = { 99 };
	uint8_t *a = malloc(LEN), *got = malloc(LEN), *zero = calloc(1, LEN);
	int bad = 0;
	assert_true(a && got && zero);
	rng_fill(&r, a, LEN);
	assert_ok(vbas_vol_create(p, "v", LEN));
	assert_ok(vbas_vol_open(p, "v", &v));
	assert_ok(vbas_pwrite(v, a, LEN, 0, 0));
	assert_ok(vbas_flush(p));
	uint64_t w0 = vbas_memdev_writes(dev);
	if (at != UINT64_MAX)
		vbas_memdev_arm_crash(dev, at, mode, seed);
	int e = vbas_discard(v, 0, LEN, 0);
	if (!e)
		e = vbas_flush(p);
	vbas_vol_close(v);
	if (at == UINT64_MAX) {
		assert_ok(e);
		*nwrites = vbas_memdev_writes(dev) - w0;
		assert_ok(vbas_close(p));
		dev_destroy(dev);
		goto out;
	}
	if (!vbas_memdev_crashed(dev))
		vbas_memdev_crash_now(dev, mode, seed);
	vbas_close(p);               /* fails: the device is gone */
	surv = vbas_memdev_survivor(dev);
	dev_destroy(dev);
	q = open_mem(surv, 256 << 10);
	struct vbas_check_stats st;
	if (vbas_check(q, NULL, NULL, &st))
		bad = 1;
	assert_ok(vbas_vol_open(q, "v", &v));
	assert_ok(vbas_pread(v, got, LEN, 0));
	vbas_vol_close(v);
	if (memcmp(got, a, LEN) && memcmp(got, zero, LEN))
		bad = 1;
	assert_ok(vbas_close(q));
	dev_destroy(surv);
out:
	free(a);
	free(got);
	free(zero);
	return bad;
}

/* Crash trials at every write of the discard's commit, each mode, a few
 * seeds: how many end in a pool that lost committed data. */
static unsigned punch_sweep(void)
{
	uint64_t n = 0;
	unsigned bad = 0, trials = 0;
	punch_trial(UINT64_MAX, 0, 0, &n);
	for (uint64_t at = 0; at <= n; at++)
		for (int m = 0; m < 4; m++)
			for (uint64_t seed = 1; seed <= 4; seed++, trials++)
				bad += (unsigned)punch_trial(at, crash_modes[m], seed * 1000 + at, NULL);
	fprintf(stderr, "#   %s punch: %llu device writes, %u of %u crash trials lost data\n",
		vbas_tun.early_punch ? "early" : "the library's", (unsigned long long)n, bad, trials);
	return bad;
}

/* Data blocks freed by a commit are punched only once it is durable.
 * With the library's order no crash loses data; with the punch moved
 * before the superblock write (vbas_tun.early_punch, a bug on purpose)
 * the crash trials must see data lost: the device's discards are subject
 * to power loss, so the crash tests can catch a punch that lands early. */
static void t_early_punch_caught(void **state)
{
	(void)state;
	vbas_tun.early_punch = 0;
	assert_int_equal(punch_sweep(), 0);
	vbas_tun.early_punch = 1;
	unsigned bad = punch_sweep();
	vbas_tun = tun_default;
	if (bad == 0)
		fail_msg("discards before the commit was durable lost no data in any crash trial: "
			 "the crash device does not see early punches");
}

/* ---- Reserved ranges across power cuts ----------------------------------- */

/* A scripted life of a reserved range, a flush after every step:
 *   0  v: blocks 0..15 written (version 1)
 *   1  reserve blocks 8..39 (holes backed with zeroed blocks)
 *   2  snapshot s of v (v owes 32 copies)
 *   3  v writes 8..39 (version 2, copies paid with the owed blocks)
 *   4  v discards 20..29 (zeroed in place, kept)
 *   5  unreserve 32..39
 *   6  delete s (the owed blocks are counted again)
 *   7  v writes 8..19 (version 3, in place)
 * Power goes at a device write; the survivor must be clean (vbas_check
 * counts each volume's reserved blocks), hold the state of a commit
 * (each sector of v as of that commit or the next), and its reserved
 * range must still be writable when another volume has filled the pool. */
#define RS_STEPS 8
#define RS_NB 64
static const uint64_t rs_resv[RS_STEPS] = { 0, 32, 32, 32, 32, 24, 24, 24 };

static void rs_model(int step, uint8_t *ver)
{
	memset(ver, 0, RS_NB);
	for (int b = 0; step >= 0 && b < 16; b++)
		ver[b] = 1;
	if (step >= 3)
		for (int b = 8; b < 40; b++)
			ver[b] = 2;
	if (step >= 4)
		for (int b = 20; b < 30; b++)
			ver[b] = 0;
	if (step >= 7)
		for (int b = 8; b < 20; b++)
			ver[b] = 3;
}

static void rs_pattern(uint8_t *buf, uint64_t b, int v)
{
	if (!v) {
		memset(buf, 0, BS);
		return;
	}
	struct rng r = { .s = b * 7919 + (uint64_t)v };
	rng_fill(&r, buf, BS);
}

static int rs_write(struct vbas_vol *v, uint64_t from, uint64_t to, int ver)
{
	uint8_t buf[BS];
	for (uint64_t b = from; b < to; b++) {
		rs_pattern(buf, b, ver);
		int r = vbas_pwrite(v, buf, BS, b * BS, 0);
		if (r)
			return r;
	}
	return 0;
}

/* Run the script on D; stops at the first error (the power cut).  GENS
 * gets the generation after each step's flush. */
static void rs_script(struct vbas_dev *d, uint64_t *gens)
{
	struct vbas_open_opts oo = { .cache_bytes = 1 << 20 };
	struct vbas_pool *p;
	struct vbas_vol *v = NULL;
	if (vbas_open_dev(d, &oo, &p))
		return;                 /* the power went during the open */
	int r = vbas_vol_create(p, "v", RS_NB * BS);
	for (int step = 0; !r && step < RS_STEPS; step++) {
		if (!v && (r = vbas_vol_open(p, "v", &v)))
			break;
		switch (step) {
		case 0: r = rs_write(v, 0, 16, 1); break;
		case 1: r = vbas_vol_reserve(v, 8 * BS, 32 * BS); break;
		case 2: r = vbas_vol_snapshot(p, "v", "s", 0); break;
		case 3: r = rs_write(v, 8, 40, 2); break;
		case 4: r = vbas_discard(v, 20 * BS, 10 * BS, 0); break;
		case 5: r = vbas_vol_unreserve(v, 32 * BS, 8 * BS); break;
		case 6: r = vbas_vol_delete(p, "s"); break;
		case 7: r = rs_write(v, 8, 20, 3); break;
		}
		if (!r)
			r = vbas_flush(p);
		if (!r && gens)
			gens[step] = p->gen;
	}
	if (v)
		vbas_vol_close(v);
	vbas_close(p);
}

/* Every sector of VOL as of one of the model's steps LO..HI (-1: before
 * the first). */
static void rs_check_data(struct vbas_vol *vol, int lo, int hi, uint64_t at)
{
	uint8_t got[BS], want[BS], ver[RS_STEPS + 1][RS_NB];
	for (int j = lo; j <= hi; j++)
		rs_model(j, ver[j - lo]);
	for (uint64_t blk = 0; blk < RS_NB; blk++) {
		assert_ok(vbas_pread(vol, got, BS, blk * BS));
		for (unsigned s = 0; s < BS / SECT; s++) {
			int ok = 0;
			for (int j = lo; !ok && j <= hi; j++) {
				rs_pattern(want, blk, ver[j - lo][blk]);
				ok = !memcmp(got + s * SECT, want + s * SECT, SECT);
			}
			if (!ok)
				fail_msg("crash at write %llu: block %llu sector %u is as of none of "
					 "steps %d..%d", (unsigned long long)at, (unsigned long long)blk,
					 s, lo, hi);
		}
	}
}

static void t_crash_reserve(void **state)
{
	(void)state;
	uint64_t gens[RS_STEPS];
	struct vbas_dev *d = mem_pool(8 << 20, BS, 0);
	uint64_t w0 = vbas_memdev_writes(d);
	rs_script(d, gens);
	uint64_t total = vbas_memdev_writes(d) - w0;
	dev_destroy(d);
	uint64_t pts = test_ops(24), stride = total / pts ? total / pts : 1;
	unsigned probes = 0;
	fprintf(stderr, "#   reserve script: %llu device writes, a crash every %llu\n",
		(unsigned long long)total, (unsigned long long)stride);
	for (uint64_t at = 0; at <= total; at += stride) {
		unsigned mode = crash_modes[at % 4];
		d = mem_pool(8 << 20, BS, 0);
		vbas_memdev_arm_crash(d, at, mode, 77 + at);
		rs_script(d, NULL);
		if (!vbas_memdev_crashed(d))
			vbas_memdev_crash_now(d, mode, 77 + at);
		struct vbas_dev *s = vbas_memdev_survivor(d);
		dev_destroy(d);
		struct vbas_pool *p = open_mem(s, 1 << 20);
		assert_check_clean(p);
		/* The newest step whose commit the survivor holds (or -1), and
		 * the first with that commit (a step that changed no metadata
		 * commits nothing new): the survivor is as of one of LO..HI. */
		int k = -1;
		while (k + 1 < RS_STEPS && gens[k + 1] <= p->gen)
			k++;
		int lo = k, hi = k + 1 < RS_STEPS ? k + 1 : k;
		while (lo > 0 && gens[lo - 1] == gens[k])
			lo--;
		struct vbas_vol *v;
		if (vbas_vol_open(p, "v", &v)) {
			assert_true(k < 0);
			assert_ok(vbas_close(p));
			dev_destroy(s);
			continue;
		}
		rs_check_data(v, lo, hi, at);
		struct vbas_vol_info vi;
		assert_ok(vbas_vol_info(v, &vi));
		int rok = 0;
		for (int j = lo; j <= hi; j++)
			rok |= vi.reserved == (j >= 0 ? rs_resv[j] : 0) * BS;
		if (!rok)
			fail_msg("crash at write %llu (steps %d..%d): %llu bytes reserved",
				 (unsigned long long)at, lo, hi, (unsigned long long)vi.reserved);
		struct vbas_vol *sv;
		if (!vbas_vol_open(p, "s", &sv)) {
			rs_check_data(sv, 1, 1, at);
			vbas_vol_close(sv);
		}
		/* The guarantee itself, now and then: another volume fills the
		 * pool, and every reserved block of v is written. */
		if (at % (4 * stride) == 0 && vi.reserved) {
			struct vbas_vol *f;
			uint8_t buf[BS];
			probes++;
			assert_ok(vbas_vol_create(p, "fill", 1 << 30));
			assert_ok(vbas_vol_open(p, "fill", &f));
			memset(buf, 0x5a, sizeof(buf));
			for (uint64_t b = 0; vbas_pwrite(f, buf, BS, b * BS, 0) == 0; b++)
				;
			vbas_vol_close(f);
			assert_false(p->broken);
			uint64_t end = vi.reserved / BS == 24 ? 32 : 40;
			int r = rs_write(v, 8, end, 4);
			if (r)
				fail_msg("crash at write %llu (after step %d): a write into the reserved "
					 "range of a full pool: %d: %s", (unsigned long long)at, k, r,
					 vbas_errmsg());
			assert_check_clean(p);
		}
		vbas_vol_close(v);
		assert_ok(vbas_close(p));
		dev_destroy(s);
	}
	fprintf(stderr, "#   %u survivors filled and written\n", probes);
}

int main(void)
{
	/* $VBAS_BREAK_MODEL=punch: the library punches freed blocks before
	 * the commit is durable, in every test: the crash tests must fail. */
	if (break_model("punch"))
		vbas_tun.early_punch = 1;
	tun_default = vbas_tun;
	if (getenv("VBAS_TEST"))
		cmocka_set_test_filter(getenv("VBAS_TEST"));
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_crash_small_fanout),
		cmocka_unit_test(t_crash_default),
		cmocka_unit_test(t_crash_sharing_small_fanout),
		cmocka_unit_test(t_crash_sharing_default),
		cmocka_unit_test_teardown(t_crash_sharing_small_txn, restore_tunables),
		cmocka_unit_test_teardown(t_crash_delete_shared, restore_tunables),
		cmocka_unit_test(t_no_overwrite_of_committed_share),
		cmocka_unit_test(t_crash_reserve),
		cmocka_unit_test_teardown(t_early_punch_caught, restore_tunables),
		cmocka_unit_test(t_corrupt_superblock),
		cmocka_unit_test(t_corrupt_node),
	};
	return RUN("crash", tests);
}
