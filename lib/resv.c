/* Reservations: room claimed before a change, so that the change cannot
 * fail for want of space.
 *
 * A reservation holds data blocks (LEFT) and, if guarded, a metadata
 * allowance (META); both are counted in the pool's RESERVED, which no
 * unreserved writer and no other reservation may take.  The writes made
 * with a guarded reservation take their data out of LEFT and hold the
 * metadata room of each step (space_write_meta, computed for the real
 * trees) out of META; what a step does not use goes back to META.
 *
 * What the writes take for metadata is of two kinds:
 *  - shadow copies of committed nodes, which free the old copy at the
 *    next commit: at most one transaction's worth is out at a time;
 *  - growth that stays: nodes the new records split off
 *    (space_resv_growth: at the rate records fill half nodes, and once
 *    per level for a node that was full already), and copies of nodes a
 *    snapshot shares (COW, counted by vbas_reserve_range over the range).
 * The allowance's target is one step plus the growth the remaining data
 * blocks may still cause (resv_target).  Every commit tops each guarded
 * reservation up to its target (resv_refill), out of what the commit
 * freed: the shadows it took came back, and unreserved writers could not
 * take those blocks before (they were in use until the commit).  A write
 * that finds the allowance below one step's worth commits first when
 * blocks freed in the transaction would top it up, and takes the rest of
 * its step from the free room.  Past that, its metadata comes out of the
 * metadata reserve, which also covers the refcount tree's churn in the
 * commit (space_cascade) that the writes' steps do not count.  A block
 * taken beyond even that, out of room other reservations hold, is
 * counted, not hidden (META_SHORT, and the pool's OVERDRAWN).
 */
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static uint64_t resv_target(struct vbas_pool *p, const struct vbas_resv *rv)
{
	if (!rv->guard || !rv->left)
		return 0;
	return space_resv_step(p, rv->hm) + space_resv_growth(p, rv->hm, rv->left) + rv->cow;
}

/* Take N more blocks into RV's allowance (the caller has checked room). */
static void allow(struct vbas_pool *p, struct vbas_resv *rv, uint64_t n)
{
	rv->meta += n;
	rv->meta_granted += n;
	p->sp.resv_meta_granted += n;
	p->sp.resv_meta += n;
	p->sp.reserved += n;
}

/* Give back what RV holds beyond its target. */
static void resv_trim(struct vbas_pool *p, struct vbas_resv *rv)
{
	uint64_t t = resv_target(p, rv);
	if (rv->meta > t) {
		uint64_t x = rv->meta - t;
		rv->meta = t;
		p->sp.resv_meta -= x;
		p->sp.reserved -= x;
	}
}

void resv_refill(struct vbas_pool *p)
{
	for (struct vbas_resv *rv = p->sp.resvs; rv; rv = rv->next) {
		uint64_t t = resv_target(p, rv);
		if (rv->meta >= t) {
			resv_trim(p, rv);
			continue;
		}
		uint64_t room = space_room_free(p, SPACE_GROW), want = t - rv->meta;
		allow(p, rv, want < room ? want : room);
	}
}

uint64_t resv_hold(struct vbas_pool *p, struct vbas_resv *rv, uint64_t need)
{
	if (!rv->guard) {
		/* The caller's bound covers all its steps: each holds it all. */
		uint64_t take = rv->meta;
		rv->meta = 0;
		return take;
	}
	if (!need)
		return 0;
	if (rv->meta < need && space_freed_total(p) && !p->broken) {
		/* The blocks earlier steps freed come back at a commit, which
		 * tops the allowance up.  (A failed commit leaves the pool
		 * read-only, which the write finds next.) */
		(void)txn_commit(p);
		vbas_err_clear();
	}
	uint64_t take = need < rv->meta ? need : rv->meta;
	rv->meta -= take;
	p->sp.resv_meta -= take;
	if (take < need) {
		/* Short: the free room, as an unreserved write would have. */
		uint64_t room = space_room_free(p, SPACE_GROW), more = need - take;
		if (more > room)
			more = room;   /* the metadata reserve covers the rest */
		p->sp.reserved += more;
		take += more;
	}
	return take;
}

void resv_unhold(struct vbas_pool *p, struct vbas_resv *rv, uint64_t unused, uint64_t allocated,
		 uint64_t overdrawn)
{
	rv->meta_used += allocated;
	if (rv->guard)
		p->sp.resv_meta_used += allocated;
	rv->meta_short += overdrawn;
	rv->meta += unused;
	if (!rv->guard)
		return;
	p->sp.resv_meta += unused;
	resv_trim(p, rv);
}

/* Claim DATA data blocks and META metadata blocks; the caller holds the
 * pool lock. */
static int resv_new_locked(struct vbas_pool *p, uint64_t data, uint64_t meta, int guard,
			   unsigned hm, uint64_t cow, struct vbas_resv **rvp)
{
	int r = txn_writable(p, "reserve");
	if (r)
		return r;
	uint64_t need = data + meta;
	if (need < data)
		return vbas_err(-ENOSPC, "reserve: %" PRIu64 " blocks is more than any pool holds", data);
	/* (Deleting expendable snapshots only lowers what the caller counted.) */
	r = space_make_room(p, need, NULL);
	if (r && r != -ENOSPC)
		return r;
	uint64_t room = space_room_free(p, SPACE_DATA);
	if (room < need) {
		if (meta)
			return vbas_err(-ENOSPC, "the pool is full: %" PRIu64 " blocks needed (%" PRIu64
					" for data, %" PRIu64 " for the metadata their writes may "
					"take), %" PRIu64 " free for data", need, data, meta, room);
		return vbas_err(-ENOSPC, "the pool is full: %" PRIu64 " blocks needed, %" PRIu64
				" free for data", data, room);
	}
	struct vbas_resv *rv = calloc(1, sizeof(*rv));
	if (!rv)
		return -ENOMEM;
	rv->pool = p;
	rv->refs = 1;
	rv->guard = guard;
	rv->hm = hm;
	rv->cow = cow;
	rv->left = rv->data_granted = data;
	p->sp.reserved += data;
	if (guard) {
		rv->next = p->sp.resvs;
		if (rv->next)
			rv->next->prev = rv;
		p->sp.resvs = rv;
		allow(p, rv, meta);
	} else {
		rv->meta = meta;
		p->sp.reserved += meta;
	}
	*rvp = rv;
	ev_space(p);
	return 0;
}

int resv_new(struct vbas_pool *p, uint64_t data, uint64_t meta, struct vbas_resv **rvp)
{
	pool_lock(p);
	int r = resv_new_locked(p, data, meta, 0, 0, 0, rvp);
	pool_unlock(p);
	return r;
}

int vbas_reserve(struct vbas_pool *p, uint64_t nblocks, struct vbas_resv **resvp)
{
	vbas_err_clear();
	if (!resvp)
		return vbas_err(-EINVAL, "reserve: no place for the reservation");
	pool_lock(p);
	/* Without a volume, the allowance assumes the tallest mapping tree a
	 * pool of this size can have. */
	unsigned hm = space_map_levels(p);
	uint64_t meta = nblocks ? space_resv_step(p, hm) + space_resv_growth(p, hm, nblocks) : 0;
	int r = resv_new_locked(p, nblocks, meta, 1, hm, 0, resvp);
	pool_unlock(p);
	return r;
}

int vbas_reserve_range(struct vbas_vol *vol, uint64_t off, uint64_t len,
		       struct vbas_resv **resvp)
{
	struct vbas_pool *p = vol->pool;
	struct vbas_vol_rec rec;
	struct vbas_btree t;
	struct map_census c = { 0 };
	vbas_err_clear();
	if (!resvp)
		return vbas_err(-EINVAL, "reserve: no place for the reservation");
	if (off + len < off)
		return vbas_err(-ERANGE, "reserve: range overflows");
	pool_lock(p);
	int r = vol_get(p, vol->id, &rec);
	if (!r && (le32_get(rec.flags) & VBAS_VOLF_READONLY))
		r = vbas_err(-EROFS, "reserve: the volume is read-only (a snapshot, or set read-only)");
	if (!r && !len)
		r = vbas_err(-EINVAL, "reserve: length 0");
	if (!r && (off >= le64_get(rec.size) || len > le64_get(rec.size) - off))
		r = vbas_err(-ERANGE, "reserve: range %" PRIu64 "+%" PRIu64 " is past the end of the "
			     "volume (%" PRIu64 " bytes)", off, len, le64_get(rec.size));
	uint64_t lblk = off >> p->bshift;
	uint64_t nblk = ((off + len + p->bs - 1) >> p->bshift) - lblk;
	if (!r) {
		vol_map_tree(p, vol->id, &rec, &t);
		r = map_census(p, &t, le64_get(rec.share_gen), lblk, nblk, &c);
	}
	if (!r) {
		/* What a write of the whole range needs: a block for every
		 * hole and every shared block, the nodes its records may add,
		 * and the copies of the shared nodes on its paths. */
		unsigned hm = 0;
		r = bt_height(&t, &hm);
		uint64_t data;
		map_census_needs(&c, le64_get(rec.owed), &data, NULL);
		uint64_t cow = c.cow.recs ? space_cow_meta(p, c.cow.recs) + c.cow.nodes : 0;
		uint64_t meta = data ? space_resv_step(p, hm + 1) + space_resv_growth(p, hm + 1, data) +
				cow : 0;
		if (!r)
			r = resv_new_locked(p, data, meta, 1, hm + 1, data ? cow : 0, resvp);
	}
	pool_unlock(p);
	return r;
}

void vbas_resv_get(struct vbas_resv *rv)
{
	pool_lock(rv->pool);
	rv->refs++;
	pool_unlock(rv->pool);
}

/* Drop a reference; the caller holds the pool lock. */
void resv_put_locked(struct vbas_resv *rv)
{
	struct vbas_pool *p = rv->pool;
	if (--rv->refs)
		return;
	p->sp.reserved -= rv->left + rv->meta;
	ev_space(p);
	if (rv->guard) {
		p->sp.resv_meta -= rv->meta;
		if (rv->prev)
			rv->prev->next = rv->next;
		else
			p->sp.resvs = rv->next;
		if (rv->next)
			rv->next->prev = rv->prev;
	}
	free(rv);
}

void vbas_resv_put(struct vbas_resv *rv)
{
	if (!rv)
		return;
	struct vbas_pool *p = rv->pool;
	pool_lock(p);
	resv_put_locked(rv);
	pool_unlock(p);
}

uint64_t vbas_resv_remaining(const struct vbas_resv *rv)
{
	uint64_t n;
	pool_lock(rv->pool);
	n = rv->left;
	pool_unlock(rv->pool);
	return n;
}

int vbas_resv_stats(const struct vbas_resv *rv, struct vbas_resv_stats *st)
{
	if (!rv || !st)
		return vbas_err(-EINVAL, "resv_stats: no reservation or no place for the figures");
	memset(st, 0, sizeof(*st));
	pool_lock(rv->pool);
	st->data_left = rv->left;
	st->data_used = rv->data_granted - rv->left;
	st->meta_held = rv->meta;
	st->meta_granted = rv->meta_granted;
	st->meta_used = rv->meta_used;
	st->meta_short = rv->meta_short;
	pool_unlock(rv->pool);
	return 0;
}

/* ---- Owed blocks -------------------------------------------------------
 *
 * A volume's owed blocks (vbas_vol_rec.owed) are the copies on write its
 * reserved blocks may need because a snapshot, clone or reflink shares
 * them.  The pool holds them all in one guarded reservation (sp.owed),
 * whose allowance covers the metadata of the copies; it is rebuilt at
 * open from the volume records. */

static struct vbas_resv *owed_new(struct vbas_pool *p)
{
	struct vbas_resv *rv = calloc(1, sizeof(*rv));
	if (!rv)
		return NULL;
	rv->pool = p;
	rv->refs = 1;
	rv->guard = 1;
	rv->hm = space_map_levels(p);
	rv->next = p->sp.resvs;
	if (rv->next)
		rv->next->prev = rv;
	p->sp.resvs = rv;
	return rv;
}

struct owed_sum {
	uint64_t owed, resv, limit;
};

static int owed_sum_cb(void *arg, const void *rec)
{
	struct owed_sum *s = arg;
	const struct vbas_voltab_rec *r = rec;
	uint32_t f = le32_get(r->v.flags);
	if (f & VBAS_VOLF_DELETING)
		return 0;
	/* (Each is below the pool's size, checked as read: the sums, cut
	 * at the pool's size, cannot wrap.) */
	s->owed += le64_get(r->v.owed);
	if (s->owed > s->limit)
		s->owed = s->limit;
	if (!(f & VBAS_VOLF_READONLY))
		s->resv += le64_get(r->v.resv_blocks);
	if (s->resv > s->limit)
		s->resv = s->limit;
	return 0;
}

int owed_load(struct vbas_pool *p)
{
	struct owed_sum s = { 0, 0, p->nblocks };
	int r = bt_iter(&p->voltab, NULL, owed_sum_cb, &s);
	if (r < 0)
		return r;
	/* Volumes that owe more than is free for data (a damaged pool; check
	 * says so) get what is: the metadata reserve stays for deletes, so
	 * the pool can be read and freed. */
	uint64_t data_room = space_room_free(p, SPACE_DATA);
	if (s.owed > data_room)
		s.owed = data_room;
	p->sp.owed = owed_new(p);
	if (!p->sp.owed)
		return -ENOMEM;
	p->sp.resv_blocks = s.resv;
	struct vbas_resv *rv = p->sp.owed;
	rv->left = rv->data_granted = s.owed;
	p->sp.reserved += s.owed;
	/* The allowance as the last commit left room for it (a shortfall is
	 * met from the free room, then the reserve, like any short one). */
	uint64_t t = resv_target(p, rv), room = space_room_free(p, SPACE_GROW);
	allow(p, rv, t < room ? t : room);
	return 0;
}

void owed_free(struct vbas_pool *p)
{
	if (p->sp.owed)
		resv_put_locked(p->sp.owed);
	p->sp.owed = NULL;
}

int owed_grow(struct vbas_pool *p, uint64_t n, const char *what)
{
	struct vbas_resv *rv = p->sp.owed;
	if (!n)
		return 0;
	rv->left += n;
	uint64_t t1 = resv_target(p, rv);
	rv->left -= n;
	uint64_t meta = t1 > rv->meta ? t1 - rv->meta : 0, need = n + meta;
	if (space_room_free(p, SPACE_DATA) < need && space_freed_total(p)) {
		int r = txn_commit(p);
		if (r)
			return r;
	}
	uint64_t room = space_room_free(p, SPACE_DATA);
	if (room < need) {
		ev_enospc(p, need);
		return vbas_err(-ENOSPC, "%s: the pool is full: the copies on write of the reserved "
				"blocks it shares need %" PRIu64 " blocks (%" PRIu64 " for data, %" PRIu64
				" for metadata), %" PRIu64 " free for data", what, need, n, meta, room);
	}
	rv->left += n;
	rv->data_granted += n;
	p->sp.reserved += n;
	allow(p, rv, meta);
	ev_space(p);
	return 0;
}

void owed_release(struct vbas_pool *p, uint64_t n)
{
	struct vbas_resv *rv = p->sp.owed;
	if (n > rv->left)
		n = rv->left;
	rv->left -= n;
	p->sp.reserved -= n;
	resv_trim(p, rv);
}
