/* The mapping interface: vbas_map_begin / vbas_map_end, range locks, and
 * the mapping-tree edits every write path shares.
 *
 * A write into a hole takes new blocks at map_begin (counted in PENDING,
 * invisible to readers and to the last commit); the client writes them;
 * map_end inserts the mapping and counts the blocks, all in the running
 * transaction.  A crash before the commit that carries the mapping leaves
 * the blocks free and the old contents (zeros) visible.  An overwrite of a
 * mapped, unshared block goes in place.
 *
 * Range locks: map_begin locks the logical blocks it returns (readers
 * shared, writers exclusive) until map_end, and discard and shrink lock
 * what they unmap, so a block is never freed (and later reused) under a
 * reader or writer that still has its address.
 */
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EXT_LEN 0xffffffffull

struct mext {
	uint64_t lblk, pblk, len;
	uint32_t flags;            /* VBAS_MAPF_* */
};

static void to_mext(const struct vbas_map_rec *r, struct mext *e)
{
	e->lblk = le64_get(r->k.lblk);
	e->pblk = le64_get(r->v.pblk);
	e->len = le32_get(r->v.len);
	e->flags = le32_get(r->v.flags);
}

static int mget(struct vbas_btree *t, uint64_t key, enum bt_lookup_mode mode, struct mext *e)
{
	struct vbas_map_rec r;
	uint8_t k[8];
	st_le64(k, key);
	int x = bt_lookup(t, k, mode, &r);
	if (!x)
		to_mext(&r, e);
	return x;
}

static int mput(struct vbas_btree *t, uint64_t lblk, uint64_t pblk, uint64_t len, uint32_t flags)
{
	struct vbas_map_rec r;
	memset(&r, 0, sizeof(r));
	r.k.lblk = le64_mk(lblk);
	r.v.pblk = le64_mk(pblk);
	r.v.len = le32_mk((uint32_t)len);
	r.v.flags = le32_mk(flags);
	return bt_insert(t, &r);
}

static int mdel(struct vbas_btree *t, uint64_t lblk)
{
	uint8_t k[8];
	st_le64(k, lblk);
	return bt_delete(t, k, NULL);
}

/* What is at LBLK: mapped (*PBLK, *LEN blocks to the extent's end, its
 * VBAS_MAPF_* in *FLAGS if asked) or a hole (*LEN blocks to the next
 * extent, UINT64_MAX if none; *FLAGS 0). */
int map_lookup_f(struct vbas_btree *t, uint64_t lblk, uint64_t *pblk, uint64_t *len,
		 int *mapped, uint32_t *flags)
{
	struct mext e;
	int r = mget(t, lblk, BT_LE, &e);
	if (flags)
		*flags = 0;
	if (r && r != -ENOENT)
		return r;
	if (!r && e.lblk + e.len > lblk) {
		if (flags)
			*flags = e.flags;
		*mapped = 1;
		*pblk = e.pblk + (lblk - e.lblk);
		*len = e.lblk + e.len - lblk;
		return 0;
	}
	*mapped = 0;
	r = mget(t, lblk, BT_GE, &e);
	if (r == -ENOENT) {
		*len = UINT64_MAX;
		return 0;
	}
	if (r)
		return r;
	*len = e.lblk - lblk;
	return 0;
}

int map_lookup(struct vbas_pool *p, struct vbas_btree *t, uint64_t lblk,
	       uint64_t *pblk, uint64_t *len, int *mapped)
{
	(void)p;
	return map_lookup_f(t, lblk, pblk, len, mapped, NULL);
}

int map_lookup_shared(struct vbas_pool *p, struct vbas_btree *t, uint64_t share_gen,
		      uint64_t lblk, uint64_t *pblk, uint64_t *len, int *mapped, int *shared,
		      struct bt_cow *cow, int for_write)
{
	return map_lookup_shared_f(p, t, share_gen, lblk, pblk, len, mapped, shared, cow,
				   for_write, NULL);
}

int map_lookup_shared_f(struct vbas_pool *p, struct vbas_btree *t, uint64_t share_gen,
			uint64_t lblk, uint64_t *pblk, uint64_t *len, int *mapped, int *shared,
			struct bt_cow *cow, int for_write, uint32_t *flags)
{
	int r = map_lookup_f(t, lblk, pblk, len, mapped, flags);
	*shared = 0;
	if (r || (!*mapped && !cow))
		return r;
	uint8_t k[8];
	st_le64(k, lblk);
	int path_shared;
	r = bt_path_cow(t, k, share_gen, &path_shared, cow, for_write);
	if (r || !*mapped)
		return r;
	if (path_shared) {
		*shared = 1;
		return 0;
	}
	uint32_t rc;
	uint64_t run;
	r = space_refcount_run(p, *pblk, *len, &rc, &run);
	if (r)
		return r;
	if (rc == 0)
		return vbas_err(-EUCLEAN, "volume %" PRIu64 ": block %" PRIu64 " maps to physical %"
				PRIu64 ", which has no reference count", t->owner, lblk, *pblk);
	*shared = rc > 1;
	*len = run;
	/* A count changed in this transaction may be above one in the last
	 * commit: such blocks are copied on write too, until the commit. */
	uint64_t trun;
	if (for_write) {
		if (space_touched(p, *pblk, *len, &trun))
			*shared = 1;
		*len = trun;
	}
	return 0;
}

int map_walk(struct vbas_pool *p, struct vbas_btree *t, uint64_t share_gen, uint64_t lblk,
	     uint64_t n, struct bt_cow *cow, int (*cb)(void *, const struct map_run *), void *arg)
{
	uint64_t cur = lblk, end = lblk + n;
	while (cur < end) {
		struct map_run x;
		uint64_t run;
		int r = map_lookup_shared_f(p, t, share_gen, cur, &x.pblk, &run, &x.mapped, &x.shared,
					    cow, 1, &x.flags);
		if (r)
			return r;
		x.lblk = cur;
		x.n = run < end - cur ? run : end - cur;
		if ((r = cb(arg, &x)))
			return r;
		cur += x.n;
	}
	/* A change may merge with the extent after the range: its path. */
	if (n && cow) {
		uint8_t k[8];
		int sh;
		st_le64(k, end);
		return bt_path_cow(t, k, share_gen, &sh, cow, 1);
	}
	return 0;
}

static int census_cb(void *arg, const struct map_run *x)
{
	struct map_census *c = arg;
	if (!x->mapped) {
		c->holes += x->n;
		c->hole_runs++;
	} else if (x->shared) {
		c->shared += x->n;
		c->shared_runs++;
		if (x->flags & VBAS_MAPF_RESERVED) {
			c->shared_resv += x->n;
			c->shared_resv_runs++;
		}
	}
	return 0;
}

void map_census_needs(const struct map_census *c, uint64_t owed, uint64_t *blocks,
		      uint64_t *runs)
{
	uint64_t covered = c->shared_resv < owed ? c->shared_resv : owed;
	*blocks = c->holes + c->shared - covered;
	if (runs)
		*runs = c->hole_runs + c->shared_runs -
			(covered == c->shared_resv ? c->shared_resv_runs : 0);
}

int map_census(struct vbas_pool *p, struct vbas_btree *t, uint64_t share_gen, uint64_t lblk,
	       uint64_t n, struct map_census *c)
{
	memset(c, 0, sizeof(*c));
	return map_walk(p, t, share_gen, lblk, n, &c->cow, census_cb, c);
}

struct count_ctx {
	uint64_t end, max, n, stop;
};

static int count_cb(void *arg, const void *rec)
{
	struct count_ctx *c = arg;
	uint64_t l = le64_get(((const struct vbas_map_rec *)rec)->k.lblk);
	if (l >= c->end)
		return 1;
	if (c->n == c->max) {
		c->stop = l;
		return 1;
	}
	c->n++;
	return 0;
}

int map_count(struct vbas_btree *t, uint64_t lblk, uint64_t n, uint64_t max, uint64_t *count,
	      uint64_t *stop)
{
	struct count_ctx c = { .end = lblk + n, .max = max, .n = 0, .stop = lblk + n };
	uint8_t k[8];
	st_le64(k, lblk);
	int r = bt_iter(t, k, count_cb, &c);
	if (r < 0)
		return r;
	*count = c.n + 1;          /* and the one that may start before LBLK */
	*stop = c.stop;
	return 0;
}

/* Map [lblk, lblk+n) -> [pblk, ...) into a hole, with FLAGS, merged with
 * neighbours that continue it both logically and physically and have the
 * same flags. */
int map_insert(struct vbas_btree *t, uint64_t lblk, uint64_t pblk, uint64_t n, uint32_t flags)
{
	struct mext e;
	int r;
	r = mget(t, lblk + n, BT_EQ, &e);
	if (r && r != -ENOENT)
		return r;
	if (!r && e.pblk == pblk + n && e.flags == flags && e.len + n <= MAX_EXT_LEN) {
		r = mdel(t, e.lblk);
		if (r)
			return r;
		n += e.len;
	}
	if (lblk > 0) {
		r = mget(t, lblk - 1, BT_LE, &e);
		if (r && r != -ENOENT)
			return r;
		if (!r && e.lblk + e.len == lblk && e.pblk + e.len == pblk && e.flags == flags &&
		    e.len + n <= MAX_EXT_LEN) {
			r = mdel(t, e.lblk);
			if (r)
				return r;
			lblk = e.lblk;
			pblk = e.pblk;
			n += e.len;
		}
	}
	while (n) {
		uint64_t l = n > MAX_EXT_LEN ? MAX_EXT_LEN : n;
		r = mput(t, lblk, pblk, l, flags);
		if (r)
			return r;
		lblk += l;
		pblk += l;
		n -= l;
	}
	return 0;
}

/* Give the extents in [lblk, lblk+n) FLAGS, splitting those that cross an
 * end of the range; *CHANGED counts the blocks whose flags changed.  The
 * caller holds the room: the paths, and two more records. */
int map_set_flags(struct vbas_btree *t, uint64_t lblk, uint64_t n, uint32_t flags,
		  uint64_t *changed)
{
	uint64_t cur = lblk, end = lblk + n;
	struct mext e;
	*changed = 0;
	while (cur < end) {
		int r = mget(t, cur, BT_LE, &e);
		if (r && r != -ENOENT)
			return r;
		if (r || e.lblk + e.len <= cur) {
			r = mget(t, cur, BT_GE, &e);
			if (r == -ENOENT)
				return 0;
			if (r)
				return r;
		}
		if (e.lblk >= end)
			return 0;
		uint64_t s = e.lblk > cur ? e.lblk : cur;
		uint64_t x = e.lblk + e.len < end ? e.lblk + e.len : end;
		cur = x;
		if (e.flags == flags)
			continue;
		r = mdel(t, e.lblk);
		if (!r && e.lblk < s)
			r = mput(t, e.lblk, e.pblk, s - e.lblk, e.flags);
		if (!r)
			r = mput(t, s, e.pblk + (s - e.lblk), x - s, flags);
		if (!r && e.lblk + e.len > x)
			r = mput(t, x, e.pblk + (x - e.lblk), e.lblk + e.len - x, e.flags);
		if (r)
			return r;
		*changed += x - s;
	}
	return 0;
}

/* Room for unmapping [S, *X) of the extent at LBLK (physical PBLK) of
 * tree T (volume record REC), a step of a change WHAT: the paths it
 * shadows, the copies of shared nodes on them, and the count changes of
 * the blocks.  A step that frees what it unmaps (no shared node on the
 * path, blocks with one reference; *X is cut to such a run) may use the
 * metadata reserve, since what it frees comes back at the next commit;
 * one that frees nothing (under a snapshot) may not.  When there is no
 * room for the whole piece, a piece as short as a refcount leaf can
 * surely take is tried (*X moves back).  Pool lock held; may commit. */
static int unmap_room(struct vbas_pool *p, struct vbas_btree *t, const struct vbas_vol_rec *rec,
		      uint64_t lblk, uint64_t pblk, uint64_t s, uint64_t *x, const char *what)
{
	struct bt_cow cow = { 0 };
	uint8_t k[8];
	int sh;
	st_le64(k, lblk);
	int r = bt_path_cow(t, k, le64_get(rec->share_gen), &sh, &cow, 1);
	if (r)
		return r;
	enum space_class cls = SPACE_GROW;
	if (!sh) {
		uint32_t rc;
		uint64_t run;
		r = space_refcount_run(p, pblk + (s - lblk), *x - s, &rc, &run);
		if (r)
			return r;
		if (rc == 1) {
			cls = SPACE_FREE;
			*x = s + run;
		}
	}
	uint64_t base = space_op_meta(p, t) + space_cow_meta(p, cow.recs);
	r = space_room(p, base + space_range_meta(p, *x - s), cls, what);
	uint64_t piece = bt_leaf_cap(&p->sp.refc) / 4;
	if (r == -ENOSPC && *x - s > piece &&
	    !space_room(p, base + space_range_meta(p, piece), cls, what)) {
		*x = s + piece;
		r = 0;
	}
	return r;
}

/* Unmap [lblk, lblk+n) of volume ID; the blocks lose a reference.  With
 * MAP_KEEP_RESERVED in HOW, extents of reserved ranges stay mapped (the
 * caller zeroes them); with MAP_COW, the caller maps the range again at
 * once and saves REC itself.  With
 * STEPS (a change that works in steps, named for messages) the work may
 * be split over several commits, each one a consistent state with a
 * prefix of the range unmapped, and every step first makes sure of room
 * for its metadata: when there is none, it stops before changing
 * anything, with -ENOSPC and *STOPPED set to the first block still
 * mapped.  Without STEPS the caller holds the room. */
int map_unmap(struct vbas_pool *p, uint64_t id, struct vbas_vol_rec *rec,
	      uint64_t lblk, uint64_t n, const char *steps, uint64_t *stopped, unsigned how)
{
	struct vbas_btree t;
	uint64_t cur = lblk, end = lblk + n;
	struct mext e;
	int r = 0;

	int unsaved = 0;            /* REC changed since the last vol_put */
	vol_map_tree(p, id, rec, &t);
	while (cur < end) {
		r = mget(&t, cur, BT_LE, &e);
		if (r && r != -ENOENT)
			break;
		if (r || e.lblk + e.len <= cur) {
			r = mget(&t, cur, BT_GE, &e);
			if (r == -ENOENT) {
				r = 0;
				break;
			}
			if (r)
				break;
		}
		if (e.lblk >= end)
			break;
		uint64_t s = e.lblk > cur ? e.lblk : cur;
		uint64_t x = e.lblk + e.len < end ? e.lblk + e.len : end;
		if ((how & MAP_KEEP_RESERVED) && (e.flags & VBAS_MAPF_RESERVED)) {
			cur = x;
			continue;
		}
		if (steps) {
			r = unmap_room(p, &t, rec, e.lblk, e.pblk, s, &x, steps);
			if (r == -ENOSPC) {
				*stopped = s;
				return r;
			}
			if (r)
				break;
			/* A commit may have come between: the tree as recorded. */
			vol_map_tree(p, id, rec, &t);
		}
		r = mdel(&t, e.lblk);
		if (!r && e.lblk < s)
			r = mput(&t, e.lblk, e.pblk, s - e.lblk, e.flags);
		if (!r && e.lblk + e.len > x)
			r = mput(&t, x, e.pblk + (x - e.lblk), e.lblk + e.len - x, e.flags);
		if (!r)
			r = space_queue(p, e.pblk + (s - e.lblk), x - s, -1, VBAS_BT_DATA, 0);
		if (!r)
			r = space_drain(p);
		if (r)
			break;
		rec->mapped = le64_mk(le64_get(rec->mapped) - (x - s));
		if (e.flags & VBAS_MAPF_RESERVED)
			vol_resv_sub(p, rec, x - s, !(how & MAP_COW));
		vol_set_root(rec, &t);
		cur = x;
		unsaved = 1;
		if (steps) {
			/* The step ends in a state a commit may show. */
			r = vol_put(p, id, rec);
			if (!r)
				r = space_drain(p);
			if (r)
				break;
			unsaved = 0;
			r = txn_maybe_commit(p);
			if (r)
				break;
		}
	}
	/* (Without STEPS a failure above leaves REC to the caller, who
	 * abandons the transaction; with STEPS, every step saved it.) */
	if (!r && unsaved) {
		vol_set_root(rec, &t);
		/* (MAP_COW: the caller saves REC once it has mapped the range
		 * again; saved now, it would hold counts only half changed.) */
		if (!(how & MAP_COW))
			r = vol_put(p, id, rec);
		if (!r)
			r = space_drain(p);
	}
	return r;
}

/* ---- Range locks -------------------------------------------------------
 *
 * Readers share, writers exclude, over logical blocks.  Held ranges alone
 * would let a steady stream of overlapping writers starve a request for
 * the whole volume (a snapshot waits for a moment when nothing is held),
 * so such a request, while it waits, takes a ticket, and a later request
 * waits behind it -- unless its thread already holds a range of this
 * volume (a second range of a reflink within the volume, a second
 * mapping of a client): that thread may be what the whole-volume request
 * waits for, and making it wait in turn would deadlock.  Whole-volume
 * requests are served in ticket order among themselves. */

struct rl_range {
	struct rl_range *next;
	uint64_t start, n;
	int excl;
	pthread_t owner;
};

struct rl_waiter {
	struct rl_waiter *next;
	uint64_t ticket;
};

static int rl_conflict(struct vol_state *vs, uint64_t s, uint64_t n, int excl)
{
	for (struct rl_range *r = vs->ranges; r; r = r->next)
		if (r->start < s + n && s < r->start + r->n && (excl || r->excl))
			return 1;
	return 0;
}

static int rl_holds_any(struct vol_state *vs)
{
	pthread_t self = pthread_self();
	for (struct rl_range *r = vs->ranges; r; r = r->next)
		if (pthread_equal(r->owner, self))
			return 1;
	return 0;
}

/* A whole-volume request with a ticket below TICKET waits. */
static int rl_older_whole(struct vol_state *vs, uint64_t ticket)
{
	for (struct rl_waiter *w = vs->whole_waiting; w; w = w->next)
		if (w->ticket < ticket)
			return 1;
	return 0;
}

/* Called with the pool lock held; waits (giving it up) while a
 * conflicting range is held, or a request for the whole volume waits from
 * before.  The range lock has a mutex of its own, RL_MU, taken after the
 * pool lock (never the other way): a read takes its range without the
 * pool lock (map_read_fast). */
int rl_lock(struct vbas_pool *p, struct vol_state *vs, uint64_t start, uint64_t n, int excl)
{
	struct rl_range *r = malloc(sizeof(*r));
	if (!r)
		return -ENOMEM;
	pthread_mutex_lock(&vs->rl_mu);
	int whole = excl && start == 0 && n == UINT64_MAX, mine = rl_holds_any(vs);
	struct rl_waiter me = { .ticket = ++vs->tickets };
	int queued = 0;
	while (rl_conflict(vs, start, n, excl) || (!mine && rl_older_whole(vs, me.ticket))) {
		if (whole && !queued) {
			me.next = vs->whole_waiting;
			vs->whole_waiting = &me;
			queued = 1;
		}
		pool_unlock(p);
		pthread_cond_wait(&vs->rl_cond, &vs->rl_mu);
		pthread_mutex_unlock(&vs->rl_mu);
		pool_lock(p);
		pthread_mutex_lock(&vs->rl_mu);
	}
	if (queued) {
		struct rl_waiter **pp = &vs->whole_waiting;
		while (*pp != &me)
			pp = &(*pp)->next;
		*pp = me.next;
		pthread_cond_broadcast(&vs->rl_cond);
	}
	r->start = start;
	r->n = n;
	r->excl = excl;
	r->owner = pthread_self();
	r->next = vs->ranges;
	vs->ranges = r;
	pthread_mutex_unlock(&vs->rl_mu);
	return 0;
}

/* The range at once, or -EBUSY if held (or, for a shared one, a
 * whole-volume request waits), or -ENOMEM: a read's way in without the
 * pool lock (shared), and a shrink's that must not wait (exclusive). */
static int rl_try(struct vol_state *vs, uint64_t start, uint64_t n, int excl)
{
	struct rl_range *r = malloc(sizeof(*r));
	if (!r)
		return -ENOMEM;
	pthread_mutex_lock(&vs->rl_mu);
	if (rl_conflict(vs, start, n, excl) ||
	    (!excl && vs->whole_waiting && !rl_holds_any(vs))) {
		pthread_mutex_unlock(&vs->rl_mu);
		free(r);
		return -EBUSY;
	}
	*r = (struct rl_range){ .next = vs->ranges, .start = start, .n = n, .excl = excl,
				.owner = pthread_self() };
	vs->ranges = r;
	pthread_mutex_unlock(&vs->rl_mu);
	return 0;
}

int rl_trylock(struct vol_state *vs, uint64_t start, uint64_t n)
{
	return rl_try(vs, start, n, 1);
}

static struct rl_range **rl_find(struct vol_state *vs, uint64_t start, uint64_t n, int excl)
{
	struct rl_range **pp = &vs->ranges;
	while (*pp && !((*pp)->start == start && (*pp)->n == n && (*pp)->excl == excl))
		pp = &(*pp)->next;
	return pp;
}

/* With or without the pool lock. */
void rl_unlock(struct vbas_pool *p, struct vol_state *vs, uint64_t start, uint64_t n, int excl)
{
	(void)p;
	pthread_mutex_lock(&vs->rl_mu);
	struct rl_range **pp = rl_find(vs, start, n, excl), *r = *pp;
	if (r)
		*pp = r->next;
	pthread_cond_broadcast(&vs->rl_cond);
	pthread_mutex_unlock(&vs->rl_mu);
	free(r);
}

static void rl_shrink(struct vol_state *vs, uint64_t start, uint64_t n, int excl, uint64_t newn)
{
	pthread_mutex_lock(&vs->rl_mu);
	struct rl_range *r = *rl_find(vs, start, n, excl);
	if (r)
		r->n = newn;
	pthread_cond_broadcast(&vs->rl_cond);
	pthread_mutex_unlock(&vs->rl_mu);
}

/* ---- map_begin / map_end ----------------------------------------------- */

static int check_range(struct vbas_pool *p, const struct vbas_vol_rec *rec, uint64_t off,
		       uint64_t len, const char *what)
{
	uint64_t size = le64_get(rec->size);
	(void)p;
	if (len == 0)
		return vbas_err(-EINVAL, "%s: length 0", what);
	if (off >= size || len > size - off)
		return vbas_err(-ERANGE, "%s: range %" PRIu64 "+%" PRIu64 " is past the end of the "
				"volume (%" PRIu64 " bytes)", what, off, len, size);
	return 0;
}

int vbas_map_begin(struct vbas_vol *vol, uint64_t off, uint64_t len, unsigned flags,
		   struct vbas_resv *resv, struct vbas_iomap *map)
{
	/* The internal flags promise things (a range lock held, metadata
	 * reserved) only the library itself can keep. */
	if (flags & ~(VBAS_MAP_READ | VBAS_MAP_WRITE))
		return vbas_err(-EINVAL, "map: unknown flags %#x (VBAS_MAP_READ, VBAS_MAP_WRITE only)",
				flags & ~(VBAS_MAP_READ | VBAS_MAP_WRITE));
	return map_begin(vol, off, len, flags, resv, map);
}

/* ---- Reads without the pool lock ----------------------------------------
 *
 * A read's mapping needs three things the pool lock gave it: the volume's
 * record, a shared range lock (so that no write, discard or delete changes
 * what it reads until vbas_map_end), and a lookup in the mapping tree.  The
 * record is the one the volume's state keeps (vol_get_open), the range
 * lock has its own mutex, and the trees are read under TREE_LOCK held for
 * reading, which every holder of the pool lock holds for writing while it
 * may change them (pool_lock; it is let go while it waits: for a range, a
 * commit's device flushes, a condition).  So reads run beside each other,
 * and beside a commit waiting for the device, without the pool lock; the
 * metadata cache has a mutex of its own for the lookups' pins.  Anything
 * else (the record changed since it was kept, the range held by a writer,
 * a whole-volume request waiting) takes the way through the pool lock. */
static int map_read_fast(struct vbas_vol *vol, uint64_t off, uint64_t len,
			 struct vbas_iomap *map)
{
	struct vbas_pool *p = vol->pool;
	struct map_priv *mp = map_priv(map);
	struct vol_state *vs = vol->vs;
	struct vbas_vol_rec rec;
	struct vbas_btree t;
	uint64_t pblk, run;
	int mapped, r;
	pthread_rwlock_rdlock(&p->tree_lock);
	if (vs->rec_gen != p->voltab_gen) {
		pthread_rwlock_unlock(&p->tree_lock);
		return -EAGAIN;
	}
	rec = vs->rec;
	r = check_range(p, &rec, off, len, "read");
	if (r) {
		pthread_rwlock_unlock(&p->tree_lock);
		return r;
	}
	uint64_t lblk = off >> p->bshift;
	uint64_t nblk = ((off + len + p->bs - 1) >> p->bshift) - lblk;
	if (rl_try(vs, lblk, nblk, 0)) {
		pthread_rwlock_unlock(&p->tree_lock);
		return -EAGAIN;
	}
	vol_map_tree(p, vol->id, &rec, &t);
	r = map_lookup(p, &t, lblk, &pblk, &run, &mapped);
	pthread_rwlock_unlock(&p->tree_lock);
	if (r) {
		rl_unlock(p, vs, lblk, nblk, 0);
		return r;
	}
	uint64_t n = run < nblk ? run : nblk;
	uint64_t inblk = off - (lblk << p->bshift);
	rl_shrink(vs, lblk, nblk, 0, n);
	map->type = mapped ? VBAS_IOMAP_MAPPED : VBAS_IOMAP_HOLE;
	map->offset = off;
	map->length = (n << p->bshift) - inblk;
	if (map->length > len)
		map->length = len;
	map->physical = mapped ? (pblk << p->bshift) + inblk : 0;
	map->fd = p->dev->fd;
	map->flags |= p->dev->direct ? VBAS_IOMAP_F_DIRECT : 0;
	mp->blk = lblk;
	mp->nblk = n;
	mp->state = MP_ST_READ;
	return 0;
}

int map_begin(struct vbas_vol *vol, uint64_t off, uint64_t len, unsigned flags,
	      struct vbas_resv *resv, struct vbas_iomap *map)
{
	struct vbas_pool *p = vol->pool;
	struct map_priv *mp = map_priv(map);
	struct vbas_vol_rec rec;
	struct vbas_btree t;
	int write = !!(flags & VBAS_MAP_WRITE), r, mapped;
	uint64_t pblk, run;

	if (!(flags & (VBAS_MAP_READ | VBAS_MAP_WRITE)) ||
	    (flags & ~(VBAS_MAP_READ | VBAS_MAP_WRITE | VBAS_MAP_NOALLOC | VBAS_MAP_LOCKED |
		       VBAS_MAP_METAHELD | VBAS_MAP_SPAN)) ||
	    ((flags & VBAS_MAP_SPAN) && !(flags & VBAS_MAP_METAHELD)))
		return vbas_err(-EINVAL, "map: flags %#x: want VBAS_MAP_READ or VBAS_MAP_WRITE", flags);
	memset(map, 0, sizeof(*map));
	if (flags == VBAS_MAP_READ) {
		r = map_read_fast(vol, off, len, map);
		if (r != -EAGAIN)
			return r;
		memset(map, 0, sizeof(*map));
	}
	pool_lock(p);
	if (write) {
		r = txn_writable(p, "write");
		if (r)
			goto out;
	}
	r = vol_get_open(p, vol->vs, &rec);
	if (r)
		goto out;
	r = check_range(p, &rec, off, len, write ? "write" : "read");
	if (r)
		goto out;
	if (write && (le32_get(rec.flags) & VBAS_VOLF_READONLY)) {
		r = vbas_err(-EROFS, "write: the volume is read-only (a snapshot, or set read-only)");
		goto out;
	}
	uint64_t lblk = off >> p->bshift;
	uint64_t nblk = ((off + len + p->bs - 1) >> p->bshift) - lblk;
	int locked = !!(flags & VBAS_MAP_LOCKED);
	r = locked ? 0 : rl_lock(p, vol->vs, lblk, nblk, write);
	if (r)
		goto out;
	/* The volume may have changed while we waited. */
	r = vol_get_open(p, vol->vs, &rec);
	if (!r)
		r = check_range(p, &rec, off, len, write ? "write" : "read");
	if (r) {
		if (!locked)
			rl_unlock(p, vol->vs, lblk, nblk, write);
		goto out;
	}
	vol_map_tree(p, vol->id, &rec, &t);
	int shared = 0;
	uint32_t xf = 0;
	struct bt_cow cow = { 0 };
	if (write)
		r = map_lookup_shared_f(p, &t, le64_get(rec.share_gen), lblk, &pblk, &run, &mapped,
					&shared, &cow, 1, &xf);
	else
		r = map_lookup(p, &t, lblk, &pblk, &run, &mapped);
	if (r) {
		if (!locked)
			rl_unlock(p, vol->vs, lblk, nblk, write);
		goto out;
	}
	uint64_t n = run < nblk ? run : nblk;
	uint64_t inblk = off - (lblk << p->bshift);
	if (shared) {
		/* Copy on write: new blocks, the old ones stay mapped until
		 * map_end. */
		map->flags |= VBAS_IOMAP_F_SHARED;
		map->cow_physical = (pblk << p->bshift) + inblk;
		mp->cow = MP_COW_SHARED | ((xf & VBAS_MAPF_RESERVED) ? MP_COW_RESERVED : 0);
	}
	if (write && (flags & VBAS_MAP_SPAN) &&
	    (shared || (!mapped && !(flags & VBAS_MAP_NOALLOC)))) {
		/* Run on over the holes and shared extents that follow (see
		 * VBAS_MAP_SPAN), short of a last block written in part. */
		uint64_t last = nblk - (((off + len) & (p->bs - 1)) ? 1 : 0);
		while (!r && n < last) {
			uint64_t pb2, run2;
			int m2, sh2;
			uint32_t xf2;
			r = map_lookup_shared_f(p, &t, le64_get(rec.share_gen), lblk + n, &pb2,
						&run2, &m2, &sh2, &cow, 1, &xf2);
			/* (The new extent carries one set of flags.) */
			if (r || (m2 && !sh2) || xf2 != xf)
				break;
			mp->cow |= sh2 ? MP_COW_SHARED : 0;
			n += run2 < last - n ? run2 : last - n;
		}
		if (r) {
			if (!locked)
				rl_unlock(p, vol->vs, lblk, nblk, write);
			goto out;
		}
	}
	if (write && (shared || (!mapped && !(flags & VBAS_MAP_NOALLOC)))) {
		/* Continue the previous extent physically where possible. */
		uint64_t hint = p->sp.data_rover, pp, pl, got = 0;
		int pm = 0;
		/* (Only if that block is free: a search from there through
		 * blocks in use, say those of a snapshot's shared extents,
		 * would cost a step per refcount record, on every write.) */
		if (lblk > 0 && !map_lookup(p, &t, lblk - 1, &pp, &pl, &pm) && pm &&
		    space_is_free(p, pp + 1))
			hint = pp + 1;
		/* The metadata map_end may need: the trees' paths, and the
		 * refcount changes of copying shared nodes.  It is held back
		 * from here to map_end, unless RESV holds it already. */
		uint64_t meta = (flags & VBAS_MAP_METAHELD) ? 0 :
				space_write_meta(p, &t, 1, n, cow.recs);
		uint64_t avail = space_avail(p);
		uint64_t keep = p->sp.meta_reserve + p->sp.reserved;
		/* A write with a reservation does not fail for want of room:
		 * its data comes out of the reservation, and its metadata room
		 * out of the reservation's allowance (resv.c); an unguarded one
		 * (vbas_pwrite's own, with VBAS_MAP_METAHELD) hands its whole
		 * bound to each step.  A copy of a reserved block a snapshot or
		 * reflink shares takes the volume's owed blocks, set aside then
		 * (and the metadata room of their allowance). */
		struct vbas_resv *rs = resv && resv->left ? resv : NULL;
		uint64_t cap = n;
		struct vbas_resv *ow = p->sp.owed;
		if (shared && (xf & VBAS_MAPF_RESERVED) && le64_get(rec.owed) && ow && ow->left) {
			rs = ow;
			mp->cow |= MP_COW_OWED;
			if (cap > le64_get(rec.owed))
				cap = le64_get(rec.owed);
			if (flags & VBAS_MAP_METAHELD)
				meta = space_write_meta(p, &t, 1, n, cow.recs);
		}
		if (rs) {
			uint64_t held = resv_hold(p, rs, meta);
			r = space_alloc(p, hint, cap < rs->left ? cap : rs->left, VBAS_BT_DATA, 1,
					&pblk, &got);
			if (!r) {
				rs->left -= got;
				p->sp.reserved -= got;
				mp->resv = rs;
				rs->refs++;
				mp->meta = held;
			} else if (held) {
				resv_unhold(p, rs, held, 0, 0);
			}
		} else if (avail <= keep + meta) {
			ev_enospc(p, n + meta);
			r = vbas_err(-ENOSPC, "pool is full: %" PRIu64 " blocks free, %" PRIu64
				     " held back for metadata and reservations", avail, keep + meta);
		} else {
			r = space_alloc(p, hint, n < avail - keep - meta ? n : avail - keep - meta,
					VBAS_BT_DATA, 0, &pblk, &got);
			if (!r) {
				mp->meta = meta;
				p->sp.reserved += meta;
			}
		}
		if (r) {
			if (!locked)
				rl_unlock(p, vol->vs, lblk, nblk, write);
			goto out;
		}
		p->sp.data_rover = pblk + got;
		n = got;
		map->type = VBAS_IOMAP_NEW;
		mp->pblk = pblk;
	} else {
		map->type = mapped ? VBAS_IOMAP_MAPPED : VBAS_IOMAP_HOLE;
	}
	if (!locked)
		rl_shrink(vol->vs, lblk, nblk, write, n);
	map->offset = off;
	map->length = (n << p->bshift) - inblk;
	if (map->length > len)
		map->length = len;
	map->physical = map->type == VBAS_IOMAP_HOLE ? 0 : (pblk << p->bshift) + inblk;
	map->fd = p->dev->fd;
	map->flags |= p->dev->direct ? VBAS_IOMAP_F_DIRECT : 0;
	mp->blk = lblk;
	mp->nblk = n;
	mp->state = (write ? MP_ST_WRITE : MP_ST_READ) | (locked ? MP_ST_LOCKED : 0) |
		    ((flags & VBAS_MAP_METAHELD) ? MP_ST_METAHELD : 0);
out:
	pool_unlock(p);
	return r;
}

int vbas_map_end(struct vbas_vol *vol, struct vbas_iomap *map, uint64_t done, int error)
{
	struct vbas_pool *p = vol->pool;
	struct map_priv *mp = map_priv(map);
	unsigned kind = mp->state & MP_ST_KIND;
	int write = kind == MP_ST_WRITE, locked = !!(mp->state & MP_ST_LOCKED), r = 0;

	if (kind != MP_ST_READ && kind != MP_ST_WRITE)
		return vbas_err(-EINVAL, "map_end: not a mapping from vbas_map_begin");
	if (!write && !locked) {
		/* A read: its range lock is all it holds. */
		rl_unlock(p, vol->vs, mp->blk, mp->nblk, 0);
		mp->state = 0;
		return 0;
	}
	pool_lock(p);
	if (write && done && !error)
		p->data_dirty = 1;         /* the next flush must reach the device */
	if (map->type == VBAS_IOMAP_NEW) {
		uint64_t inblk = map->offset - (mp->blk << p->bshift), used = 0;
		if (!error && done) {
			if (done > map->length)
				done = map->length;
			used = (inblk + done + p->bs - 1) >> p->bshift;
			if (used > mp->nblk)
				used = mp->nblk;
		}
		if (used && (r = txn_writable(p, "write")))
			used = 0;
		uint64_t unused = mp->nblk - used;
		space_unalloc(p, mp->pblk + used, unused);
		if (mp->resv && !p->broken) {
			mp->resv->left += unused;
			p->sp.reserved += unused;
		}
		/* The metadata blocks come out of what was held for them,
		 * never out of a reservation's data blocks. */
		struct vbas_resv held = { .pool = p, .refs = 1, .left = mp->meta };
		p->sp.op_resv = &held;
		uint64_t allocs0 = p->sp.meta_allocs_txn, over0 = p->sp.overdrawn;
		if (used) {
			struct vbas_vol_rec rec;
			struct vbas_btree t;
			uint32_t xf = (mp->cow & MP_COW_RESERVED) ? VBAS_MAPF_RESERVED : 0;
			r = vol_get(p, vol->id, &rec);
			if (!r && (mp->cow & MP_COW_OWED)) {
				/* The copies took owed blocks. */
				uint64_t o = le64_get(rec.owed);
				rec.owed = le64_mk(o > used ? o - used : 0);
			}
			/* Copy on write: the old blocks lose this mapping's
			 * reference (and are freed if their other owners let
			 * go of them meanwhile).  (The new extent takes the
			 * place of the old one in the reserved count: the owed
			 * blocks need not shrink with it meanwhile.) */
			if (!r && mp->cow)
				r = map_unmap(p, vol->id, &rec, mp->blk, used, NULL, NULL,
					      MAP_COW);
			if (!r) {
				vol_map_tree(p, vol->id, &rec, &t);
				r = map_insert(&t, mp->blk, mp->pblk, used, xf);
			}
			if (!r && xf)
				vol_resv_add(p, &rec, used);
			if (!r)
				r = space_queue(p, mp->pblk, used, +1, VBAS_BT_DATA, 1);
			if (!r) {
				vol_set_root(&rec, &t);
				rec.mapped = le64_mk(le64_get(rec.mapped) + used);
				r = vol_put(p, vol->id, &rec);
			}
			if (!r)
				r = space_drain(p);
			/* A change whose caller holds metadata room for all
			 * its steps commits when it is done: a commit between
			 * them would make the next shadow every path again. */
			if (r)
				txn_fail(p, r);
		}
		p->sp.op_resv = NULL;
		struct vbas_resv *rv = mp->resv;
		if (rv) {
			/* What the step did not use goes back to the allowance. */
			resv_unhold(p, rv, held.left,
				    p->sp.meta_allocs_txn - allocs0, p->sp.overdrawn - over0);
		} else {
			p->sp.reserved -= held.left;
		}
		if (used && !r && !(mp->state & MP_ST_METAHELD))
			r = txn_maybe_commit(p);
	}
	if (!locked)
		rl_unlock(p, vol->vs, mp->blk, mp->nblk, write);
	if (mp->resv)
		resv_put_locked(mp->resv);
	mp->state = 0;
	pool_unlock(p);
	return r;
}
