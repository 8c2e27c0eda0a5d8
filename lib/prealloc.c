/* Reserved ranges: fallocate that truly reserves.
 *
 * vbas_vol_reserve backs every hole of a range with blocks of its own,
 * zeroed on the device before the commit that maps them, and marks every
 * extent of the range VBAS_MAPF_RESERVED.  A write inside the range is
 * then an overwrite in place: no block, no record, no metadata, so it
 * cannot fail for want of space.  The volume record counts its reserved
 * blocks (resv_blocks).
 *
 * Sharing makes reserved blocks need copies on write again: a snapshot,
 * a clone, a reflink or a dedupe that shares them sets as many blocks
 * aside (the volume's owed blocks, vbas_vol_rec.owed, held by the pool in
 * sp.owed with the metadata their copies need), or fails with ENOSPC
 * before it changes anything.  A copy of a reserved block takes one owed
 * block and is reserved in turn.  Owed blocks are a bound, never below
 * the reserved blocks the volume shares: deleting a volume counts them
 * again (owed_recount) and gives back the rest.
 *
 * Discarding a reserved block zeroes it and keeps it (io.c); unreserving
 * clears the marks, and the blocks stay mapped.  See docs/design.md,
 * "Reserved ranges". */
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void vol_resv_add(struct vbas_pool *p, struct vbas_vol_rec *rec, uint64_t n)
{
	rec->resv_blocks = le64_mk(le64_get(rec->resv_blocks) + n);
	p->sp.resv_blocks += n;
}

/* N reserved blocks left the volume's tree: the owed ones stay within
 * what is left (with CLAMP; without, the caller puts as many back). */
void vol_resv_sub(struct vbas_pool *p, struct vbas_vol_rec *rec, uint64_t n, int clamp)
{
	uint64_t rb = le64_get(rec->resv_blocks), o = le64_get(rec->owed);
	rb = rb > n ? rb - n : 0;
	p->sp.resv_blocks = p->sp.resv_blocks > n ? p->sp.resv_blocks - n : 0;
	rec->resv_blocks = le64_mk(rb);
	if (clamp && o > rb) {
		owed_release(p, o - rb);
		rec->owed = le64_mk(rb);
	}
}

/* The bytes of a reservation request as blocks: outward for reserve (every
 * block the range touches), exact for unreserve. */
static int resv_args(struct vbas_pool *p, const struct vbas_vol_rec *rec, uint64_t off,
		     uint64_t len, int aligned, const char *what, uint64_t *lblk, uint64_t *n)
{
	uint64_t size = le64_get(rec->size);
	if (le32_get(rec->flags) & VBAS_VOLF_READONLY)
		return vbas_err(-EROFS, "%s: the volume is read-only (a snapshot, or set read-only)", what);
	if (!len)
		return vbas_err(-EINVAL, "%s: length 0", what);
	if (off + len < off || off >= size || len > size - off)
		return vbas_err(-ERANGE, "%s: range %" PRIu64 "+%" PRIu64 " is past the end of the "
				"volume (%" PRIu64 " bytes)", what, off, len, size);
	if (aligned && ((off | len) & (p->bs - 1)))
		return vbas_err(-EINVAL, "%s: range %" PRIu64 "+%" PRIu64 " is not aligned to the "
				"block size (%u)", what, off, len, p->bs);
	*lblk = off >> p->bshift;
	*n = ((off + len + p->bs - 1) >> p->bshift) - *lblk;
	return 0;
}

/* Checks, then the range lock, then the volume's record as it is under
 * it: the start of reserve and unreserve.  Pool lock held. */
static int resv_lock(struct vbas_vol *vol, uint64_t off, uint64_t len, int un,
		     struct vbas_vol_rec *rec, uint64_t *lblk, uint64_t *n, int *locked)
{
	struct vbas_pool *p = vol->pool;
	const char *what = un ? "unreserve" : "reserve";
	int r = txn_writable(p, what);
	if (!r)
		r = vol_get(p, vol->id, rec);
	if (!r)
		r = resv_args(p, rec, off, len, un, what, lblk, n);
	if (!r)
		r = rl_lock(p, vol->vs, *lblk, *n, 1);
	if (r)
		return r;
	*locked = 1;
	r = vol_get(p, vol->id, rec);
	if (!r)
		r = resv_args(p, rec, off, len, un, what, lblk, n);
	return r;
}

struct hole {
	uint64_t lblk, n;
};

struct pext {
	uint64_t lblk, pblk, n;
};

/* What [lblk, lblk+n) of a volume holds for a reservation: its holes, and
 * the blocks not yet reserved that are shared or not. */
struct survey {
	struct hole *holes;
	size_t nh, cap;
	uint64_t shared, excl;
};

static int survey_cb(void *arg, const struct map_run *x)
{
	struct survey *s = arg;
	if (!x->mapped) {
		if (s->nh == s->cap) {
			size_t nc = s->cap ? 2 * s->cap : 16;
			struct hole *h = realloc(s->holes, nc * sizeof(*h));
			if (!h)
				return -ENOMEM;
			s->holes = h;
			s->cap = nc;
		}
		s->holes[s->nh++] = (struct hole){ x->lblk, x->n };
	} else if (!(x->flags & VBAS_MAPF_RESERVED)) {
		*(x->shared ? &s->shared : &s->excl) += x->n;
	}
	return 0;
}

int vbas_vol_reserve(struct vbas_vol *vol, uint64_t off, uint64_t len)
{
	struct vbas_pool *p = vol->pool;
	struct vbas_vol_rec rec;
	struct vbas_btree t;
	struct survey sv = { NULL, 0, 0, 0, 0 };
	struct pext *ex = NULL;
	size_t ne = 0, ecap = 0;
	uint64_t lblk = 0, n = 0, data = 0, meta = 0, held = 0;
	struct bt_cow cow = { 0 };
	int r, locked = 0, owed = 0;

	vbas_err_clear();
	pool_lock(p);
	r = resv_lock(vol, off, len, 0, &rec, &lblk, &n, &locked);
	if (r)
		goto out;
	for (int expended = 1; expended;) {
		vol_map_tree(p, vol->id, &rec, &t);
		free(sv.holes);
		sv = (struct survey){ NULL, 0, 0, 0, 0 };
		cow = (struct bt_cow){ 0 };
		r = map_walk(p, &t, le64_get(rec.share_gen), lblk, n, &cow, survey_cb, &sv);
		if (r)
			goto out;
		uint64_t want = sv.shared;
		for (size_t i = 0; i < sv.nh; i++)
			want += sv.holes[i].n;
		expended = 0;
		if (!want)
			break;
		/* Room, if need be by deleting expendable snapshots: they
		 * may have shared blocks of the range (count again). */
		r = space_make_room(p, want, &expended);
		if (r && r != -ENOSPC)
			goto out;
		if (expended && (r = vol_get(p, vol->id, &rec)))
			goto out;
	}
	struct hole *holes = sv.holes;
	size_t nh = sv.nh;
	uint64_t shared = sv.shared;
	for (size_t i = 0; i < nh; i++)
		data += holes[i].n;
	r = 0;
	if (!data && !shared && !sv.excl)
		goto out;                   /* reserved already */
	if (space_room_free(p, SPACE_DATA) < data + shared) {
		char aside[96] = "";
		if (shared)
			snprintf(aside, sizeof(aside), " and %" PRIu64 " set aside for copies of "
				 "blocks a snapshot shares", shared);
		r = vbas_err(-ENOSPC, "reserve: the pool is full: the range needs %" PRIu64 " new "
			     "blocks%s; %" PRIu64 " are free for data", data, aside,
			     space_room_free(p, SPACE_DATA));
		goto out;
	}
	/* The blocks first, as free space has them: their extents say how
	 * many records the reservation adds. */
	uint64_t hint = p->sp.data_rover;
	for (size_t i = 0; !r && i < nh; i++) {
		uint64_t l = holes[i].lblk, left = holes[i].n;
		while (left) {
			uint64_t pb, got;
			r = space_alloc(p, hint, left, VBAS_BT_DATA, 0, &pb, &got);
			if (r)
				break;
			if (ne == ecap) {
				size_t nc = ecap ? 2 * ecap : 16;
				struct pext *e = realloc(ex, nc * sizeof(*e));
				if (!e) {
					space_unalloc(p, pb, got);
					r = -ENOMEM;
					break;
				}
				ex = e;
				ecap = nc;
			}
			ex[ne++] = (struct pext){ l, pb, got };
			hint = pb + got;
			l += got;
			left -= got;
		}
	}
	if (!r) {
		/* Each new extent is a record and a refcount record; marking
		 * splits at most the two extents at the ends, and rewrites the
		 * others in place. */
		meta = space_write_meta(p, &t, 2, ne + 2, cow.recs) + cow.nodes;
		if (space_room_free(p, SPACE_DATA) < meta + shared)
			r = vbas_err(-ENOSPC, "reserve: the pool is full: the range needs %" PRIu64
				     " blocks for data, %" PRIu64 " set aside for copies of blocks a "
				     "snapshot shares, and %" PRIu64 " for metadata; %" PRIu64 " are "
				     "free for data", data, shared, meta,
				     space_room_free(p, SPACE_DATA) + data);
	}
	if (!r && shared) {
		r = owed_grow(p, shared, "reserve");
		owed = !r;
	}
	if (r) {
		for (size_t i = 0; i < ne; i++)
			space_unalloc(p, ex[i].pblk, ex[i].n);
		goto out;
	}
	p->sp.reserved += meta;
	held = meta;
	if (!r && ne) {
		/* Zeros on the device before any commit maps the blocks (the
		 * commit's flush covers them); the pool lock is not needed:
		 * the blocks are this call's alone, the range locked. */
		pool_unlock(p);
		for (size_t i = 0; !r && i < ne; i++)
			r = dev_zero(p->dev, ex[i].pblk << p->bshift, ex[i].n << p->bshift);
		pool_lock(p);
		if (r) {
			vbas_err(r, "reserve: zeroing the new blocks on the device failed");
			for (size_t i = 0; i < ne; i++)
				space_unalloc(p, ex[i].pblk, ex[i].n);
			if (owed)
				owed_release(p, shared);
			goto unhold;
		}
		p->sp.data_rover = hint;
	}
	struct vbas_resv hr = { .pool = p, .refs = 1, .left = held };
	p->sp.op_resv = &hr;
	r = vol_get(p, vol->id, &rec);
	vol_map_tree(p, vol->id, &rec, &t);
	for (size_t i = 0; !r && i < ne; i++) {
		r = map_insert(&t, ex[i].lblk, ex[i].pblk, ex[i].n, VBAS_MAPF_RESERVED);
		if (!r)
			r = space_queue(p, ex[i].pblk, ex[i].n, +1, VBAS_BT_DATA, 1);
	}
	uint64_t changed = 0;
	if (!r)
		r = map_set_flags(&t, lblk, n, VBAS_MAPF_RESERVED, &changed);
	if (!r) {
		vol_set_root(&rec, &t);
		rec.mapped = le64_mk(le64_get(rec.mapped) + data);
		vol_resv_add(p, &rec, data + changed);
		rec.owed = le64_mk(le64_get(rec.owed) + shared);
		txn_need_v4(p);
		r = vol_put(p, vol->id, &rec);
	}
	if (!r)
		r = space_drain(p);
	p->sp.op_resv = NULL;
	held = hr.left;
	if (r)
		txn_fail(p, r);
unhold:
	p->sp.reserved -= held;
	if (!r)
		r = txn_maybe_commit(p);
out:
	if (locked)
		rl_unlock(p, vol->vs, lblk, n, 1);
	pool_unlock(p);
	free(sv.holes);
	free(ex);
	return r;
}

/* Reserved blocks of [lblk, lblk+n) of T, and of those the ones a write
 * would copy. */
struct resv_count {
	uint64_t resv, shared;
};

static int resv_count_cb(void *arg, const struct map_run *x)
{
	struct resv_count *c = arg;
	if (x->mapped && (x->flags & VBAS_MAPF_RESERVED)) {
		c->resv += x->n;
		c->shared += x->shared ? x->n : 0;
	}
	return 0;
}

static int count_resv_shared(struct vbas_pool *p, struct vbas_btree *t, uint64_t share_gen,
			     uint64_t lblk, uint64_t n, uint64_t *resv, uint64_t *shared,
			     struct bt_cow *cow)
{
	struct resv_count c = { 0, 0 };
	int r = map_walk(p, t, share_gen, lblk, n, cow, resv_count_cb, &c);
	*resv = c.resv;
	*shared = c.shared;
	return r;
}

int vbas_vol_unreserve(struct vbas_vol *vol, uint64_t off, uint64_t len)
{
	struct vbas_pool *p = vol->pool;
	struct vbas_vol_rec rec;
	struct vbas_btree t;
	struct bt_cow cow = { 0 };
	uint64_t lblk = 0, n = 0, resv, shared;
	int r, locked = 0;

	vbas_err_clear();
	pool_lock(p);
	r = resv_lock(vol, off, len, 1, &rec, &lblk, &n, &locked);
	if (r)
		goto out;
	vol_map_tree(p, vol->id, &rec, &t);
	r = count_resv_shared(p, &t, le64_get(rec.share_gen), lblk, n, &resv, &shared, &cow);
	if (r || !resv)
		goto out;
	/* Clearing the marks rewrites records: the paths, two splits, and
	 * the copies of shared nodes.  It frees nothing. */
	uint64_t meta = space_write_meta(p, &t, 2, 2, cow.recs) + cow.nodes;
	r = space_room(p, meta, SPACE_GROW, "unreserve");
	if (r)
		goto out;
	p->sp.reserved += meta;
	struct vbas_resv hr = { .pool = p, .refs = 1, .left = meta };
	p->sp.op_resv = &hr;
	r = vol_get(p, vol->id, &rec);
	vol_map_tree(p, vol->id, &rec, &t);
	uint64_t changed = 0;
	if (!r)
		r = map_set_flags(&t, lblk, n, 0, &changed);
	if (!r) {
		vol_set_root(&rec, &t);
		/* The shared ones need no owed block any more. */
		uint64_t o = le64_get(rec.owed), x = shared < o ? shared : o;
		owed_release(p, x);
		rec.owed = le64_mk(o - x);
		vol_resv_sub(p, &rec, changed, 1);
		r = vol_put(p, vol->id, &rec);
	}
	if (!r)
		r = space_drain(p);
	p->sp.op_resv = NULL;
	p->sp.reserved -= hr.left;
	if (r)
		txn_fail(p, r);
	else
		r = txn_maybe_commit(p);
out:
	if (locked)
		rl_unlock(p, vol->vs, lblk, n, 1);
	pool_unlock(p);
	return r;
}

/* ---- Owed blocks counted again ----------------------------------------- */

static int owing_cb(void *arg, const void *rec)
{
	struct { uint64_t *ids; size_t n, cap; int err; } *c = arg;
	const struct vbas_voltab_rec *r = rec;
	if ((le32_get(r->v.flags) & (VBAS_VOLF_DELETING | VBAS_VOLF_READONLY)) ||
	    !le64_get(r->v.owed))
		return 0;
	if (c->n == c->cap) {
		size_t nc = c->cap ? 2 * c->cap : 16;
		uint64_t *x = realloc(c->ids, nc * sizeof(*x));
		if (!x) {
			c->err = -ENOMEM;
			return 1;
		}
		c->ids = x;
		c->cap = nc;
	}
	c->ids[c->n++] = le64_get(r->k.id);
	return 0;
}

/* After a volume is gone, the reserved blocks it shared may be another's
 * alone: every volume that owes blocks counts the reserved blocks it
 * still shares, and gives back the owed blocks beyond them.  A walk of
 * the reserved extents of the volumes that owe.  Pool lock held; call it
 * after a commit (blocks whose counts the transaction changed count as
 * shared until then). */
int owed_recount(struct vbas_pool *p)
{
	struct { uint64_t *ids; size_t n, cap; int err; } c = { NULL, 0, 0, 0 };
	int r = bt_iter(&p->voltab, NULL, owing_cb, &c);
	if (r >= 0)
		r = c.err;
	for (size_t i = 0; !r && i < c.n; i++) {
		struct vbas_vol_rec rec;
		struct vbas_btree t;
		uint64_t resv, shared;
		r = vol_get(p, c.ids[i], &rec);
		if (r)
			break;
		vol_map_tree(p, c.ids[i], &rec, &t);
		r = count_resv_shared(p, &t, le64_get(rec.share_gen), 0,
				      le64_get(rec.size) >> p->bshift, &resv, &shared, NULL);
		if (r)
			break;
		uint64_t o = le64_get(rec.owed);
		if (shared >= o)
			continue;
		/* Saving the record shadows its path in the volume table: with
		 * no room for that (a full pool), the bound stays as it is. */
		unsigned hv = 0;
		if (bt_height(&p->voltab, &hv) ||
		    space_room(p, 2 * (hv + 2), SPACE_GROW, "recount") == -ENOSPC) {
			vbas_err_clear();
			break;
		}
		owed_release(p, o - shared);
		rec.owed = le64_mk(shared);
		r = vol_put(p, c.ids[i], &rec);
		if (!r)
			r = space_drain(p);
	}
	free(c.ids);
	return r < 0 ? r : 0;
}
