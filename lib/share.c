/* Sharing ranges between volumes: reflink, dedupe, unshare, diff.
 *
 * Snapshots and clones share whole mapping trees (volume.c); these share
 * data extents.  A shared extent is mapped by more than one leaf record
 * and counted once per record in the refcount tree, so it is freed when
 * the last record goes; a write to it is copied (map.c).
 *
 * Locking: an operation on two ranges takes their range locks in one
 * global order (volume id, then offset), so two operations in opposite
 * directions cannot wait on each other.
 */
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* ---- Two ranges ------------------------------------------------------- */

struct two_ranges {
	struct vbas_vol *v[2];
	uint64_t start[2], n[2];
	int excl[2];
	int held[2];
};

static int rank(const struct two_ranges *tr, int i)
{
	int j = !i;
	if (tr->v[i]->id != tr->v[j]->id)
		return tr->v[i]->id > tr->v[j]->id;
	return tr->start[i] > tr->start[j];
}

/* Called with the pool lock held; waits, dropping it. */
static int lock_two(struct vbas_pool *p, struct two_ranges *tr)
{
	int first = rank(tr, 0) ? 1 : 0;
	for (int k = 0; k < 2; k++) {
		int i = k ? !first : first;
		int r = rl_lock(p, tr->v[i]->vs, tr->start[i], tr->n[i], tr->excl[i]);
		if (r)
			return r;
		tr->held[i] = 1;
	}
	return 0;
}

static void unlock_two(struct vbas_pool *p, struct two_ranges *tr)
{
	for (int i = 0; i < 2; i++)
		if (tr->held[i]) {
			rl_unlock(p, tr->v[i]->vs, tr->start[i], tr->n[i], tr->excl[i]);
			tr->held[i] = 0;
		}
}

/* ---- Reflink ---------------------------------------------------------- */

/* Checks the arguments of reflink and dedupe against both volumes;
 * *LEN 0 becomes "to the end of SRC".  Pool lock held. */
static int check_share_args(struct vbas_vol *src, uint64_t soff, struct vbas_vol *dst,
			    uint64_t doff, uint64_t *len, const char *what)
{
	struct vbas_pool *p = src->pool;
	struct vbas_vol_rec sr, dr;
	int r = vol_get(p, src->id, &sr);
	if (!r)
		r = vol_get(p, dst->id, &dr);
	if (r)
		return r;
	uint64_t ss = le64_get(sr.size), ds = le64_get(dr.size);
	if ((soff | doff | *len) & (p->bs - 1))
		return vbas_err(-EINVAL, "%s: offsets %" PRIu64 ", %" PRIu64 " and length %" PRIu64
				" must be multiples of the block size (%u)", what, soff, doff, *len,
				p->bs);
	if (soff >= ss)
		return vbas_err(-ERANGE, "%s: source offset %" PRIu64 " is past the end of the "
				"source (%" PRIu64 " bytes)", what, soff, ss);
	if (*len == 0)
		*len = ss - soff;
	if (*len > ss - soff)
		return vbas_err(-ERANGE, "%s: source range %" PRIu64 "+%" PRIu64 " is past the end "
				"of the source (%" PRIu64 " bytes)", what, soff, *len, ss);
	if (doff >= ds || *len > ds - doff)
		return vbas_err(-ERANGE, "%s: destination range %" PRIu64 "+%" PRIu64 " is past "
				"the end of the destination (%" PRIu64 " bytes)", what, doff, *len, ds);
	if (src->id == dst->id && soff < doff + *len && doff < soff + *len)
		return vbas_err(-EINVAL, "%s: ranges %" PRIu64 "+%" PRIu64 " and %" PRIu64 "+%" PRIu64
				" of one volume overlap", what, soff, *len, doff, *len);
	if (le32_get(dr.flags) & VBAS_VOLF_READONLY)
		return vbas_err(-EROFS, "%s: the destination is read-only (a snapshot, or set read-only)", what);
	return 0;
}

/* Common start of reflink and dedupe: checks, then both range locks
 * (source shared, destination exclusive), then the checks again, since
 * sizes or flags may have changed while we waited.  Returns with the pool
 * lock held, whatever the result; TR's locks are held if it was reached. */
/* The pool lock (held on return), an intent slot (*SLOT; -1 if none was
 * taken) and the two ranges' locks, in that order: nobody waits for a
 * slot with range locks held. */
static int share_begin(struct vbas_vol *src, uint64_t soff, struct vbas_vol *dst, uint64_t doff,
		       uint64_t *len, const char *what, struct two_ranges *tr, int *slot)
{
	struct vbas_pool *p = src->pool;
	pool_lock(p);
	*slot = -1;
	int r = txn_writable(p, what);
	if (!r)
		r = check_share_args(src, soff, dst, doff, len, what);
	if (!r)
		r = intent_reserve(p, slot);
	if (r)
		return r;
	tr->start[0] = soff >> p->bshift;
	tr->start[1] = doff >> p->bshift;
	tr->n[0] = tr->n[1] = *len >> p->bshift;
	tr->excl[1] = 1;
	r = lock_two(p, tr);
	if (!r)
		r = check_share_args(src, soff, dst, doff, len, what);
	return r;
}

/* Is there room for the metadata of one step of a reflink, remapping
 * [lblk, lblk+n) of volume DID (record DR), EXTENTS extents out and in?
 * Changing the destination's tree copies its shared nodes; the refcount
 * tree changes for the old and the new blocks.  Returns 0 if there is, 1 after a commit that gave back
 * blocks freed so far (try again), or -ENOSPC: the change stops cleanly
 * at a block boundary, with DONE of N blocks shared. */
static int step_room(struct vbas_pool *p, uint64_t did, struct vbas_vol_rec *dr, uint64_t lblk,
		     uint64_t n, uint64_t extents, uint64_t done, uint64_t total)
{
	struct vbas_btree dt;
	struct bt_cow cow = { 0 };
	uint8_t k[8];
	int sh, r;
	vol_map_tree(p, did, dr, &dt);
	st_le64(k, lblk);
	r = bt_path_cow(&dt, k, le64_get(dr->share_gen), &sh, &cow, 1);
	st_le64(k, lblk + n);
	if (!r)
		r = bt_path_cow(&dt, k, le64_get(dr->share_gen), &sh, &cow, 1);
	if (r)
		return r;
	/* Each extent inserted or unmapped changes a refcount record (and a
	 * leaf): count them like the children of copied nodes, on top of the
	 * paths and the copying itself. */
	uint64_t need = 2 * space_op_meta(p, &dt) + space_cow_meta(p, cow.recs + 2 * extents + 4);
	uint64_t avail = space_avail(p), keep = p->sp.meta_reserve + p->sp.reserved;
	if (avail >= keep + need)
		return 0;
	if (space_freed_total(p)) {
		r = txn_commit(p);
		return r ? r : 1;
	}
	return vbas_err(-ENOSPC, "pool is full: %" PRIu64 " blocks free, %" PRIu64 " held back; "
			"%" PRIu64 " of %" PRIu64 " blocks were shared before it ran out", avail,
			keep + need, done, total);
}

/* Make [dl, dl+n) of DST map what [sl, sl+n) of SRC maps (holes too).
 * Pool lock and both range locks held.  Commits may happen along the way:
 * each shows a prefix of the range shared and every count exact. */
static int reflink_locked(struct vbas_pool *p, uint64_t sid, uint64_t sl, uint64_t did,
			  uint64_t dl, uint64_t n, int *nospace, int slot, uint64_t base)
{
	/* A batch at a time: the source's extents looked up, the
	 * destination's range unmapped in one go, the extents inserted and
	 * their counts raised (runs of neighbouring blocks merge in the
	 * queue), one volume record update and one drain. */
	enum { BATCH = 512 };
	struct { uint64_t off, pblk, len; } x[BATCH];
	/* The destination's reserved runs in the batch: what lands there is
	 * reserved too (and shared, so owed). */
	struct { uint64_t off, len; } df[BATCH + 1];
	uint64_t done = 0;
	int r = 0;
	while (!r && done < n) {
		struct vbas_vol_rec sr, dr;
		struct vbas_btree st, dt;
		unsigned k = 0, nd = 0;
		uint64_t span = 0, src_resv = 0;
		r = vol_get(p, sid, &sr);
		if (r)
			break;
		vol_map_tree(p, sid, &sr, &st);
		while (!r && k < BATCH && done + span < n) {
			uint64_t pb, run;
			int mapped;
			uint32_t f;
			r = map_lookup_f(&st, sl + done + span, &pb, &run, &mapped, &f);
			if (r)
				break;
			uint64_t take = run < n - done - span ? run : n - done - span;
			if (mapped)
				x[k++] = (typeof(x[0])){ span, pb, take };
			if (mapped && (f & VBAS_MAPF_RESERVED))
				src_resv += take;
			span += take;
		}
		if (!r)
			r = vol_get(p, did, &dr);
		if (r)
			break;
		/* As many of the destination's extents go as come in, or
		 * fewer: the batch ends where its BATCH-th extent ends. */
		uint64_t old, stop;
		vol_map_tree(p, did, &dr, &dt);
		r = map_count(&dt, dl + done, span, BATCH, &old, &stop);
		if (r)
			break;
		if (stop < dl + done + span) {
			span = stop - (dl + done);
			while (k && x[k - 1].off >= span)
				k--;
			if (k && x[k - 1].off + x[k - 1].len > span)
				x[k - 1].len = span - x[k - 1].off;
		}
		/* The destination's reserved runs, and the blocks that land in
		 * them. */
		uint64_t dres = 0;
		for (uint64_t c = 0; !r && c < span;) {
			uint64_t pb, run;
			int mapped;
			uint32_t f;
			r = map_lookup_f(&dt, dl + done + c, &pb, &run, &mapped, &f);
			uint64_t take = run < span - c ? run : span - c;
			if (!r && mapped && (f & VBAS_MAPF_RESERVED)) {
				if (nd && df[nd - 1].off + df[nd - 1].len == c)
					df[nd - 1].len += take;
				else if (nd < BATCH + 1)
					df[nd++] = (typeof(df[0])){ c, take };
			}
			c += take;
		}
		for (unsigned i = 0, j = 0; !r && i < k; i++) {
			uint64_t a = x[i].off, b = a + x[i].len;
			while (j < nd && df[j].off + df[j].len <= a)
				j++;
			for (unsigned q = j; q < nd && df[q].off < b; q++) {
				uint64_t lo = df[q].off > a ? df[q].off : a;
				uint64_t hi = df[q].off + df[q].len < b ? df[q].off + df[q].len : b;
				dres += hi - lo;
			}
		}
		if (r)
			break;
		/* The source's reserved blocks become shared (a bound: some may
		 * be shared already), and so are the destination's new ones:
		 * their copies are held first, or the step stops cleanly. */
		uint64_t src_more = 0;
		if (src_resv && !(le32_get(sr.flags) & VBAS_VOLF_READONLY)) {
			uint64_t room = le64_get(sr.resv_blocks) - le64_get(sr.owed);
			src_more = src_resv < room ? src_resv : room;
		}
		r = step_room(p, did, &dr, dl + done, span, k + old, done, n);
		if (r == 1) {
			r = 0;              /* committed: freed blocks came back */
			continue;
		}
		int g = r ? 0 : owed_grow(p, dres + src_more, "reflink");
		if (g && g != -ENOSPC)
			r = g;
		if (g == -ENOSPC) {
			uint64_t avail = space_avail(p);
			r = vbas_err(-ENOSPC, "pool is full: %" PRIu64 " blocks free, %" PRIu64 " held "
				     "back; %" PRIu64 " of %" PRIu64 " blocks were shared before it ran "
				     "out (the copies on write of the reserved blocks it shares need "
				     "%" PRIu64 " more)", avail, p->sp.meta_reserve + p->sp.reserved,
				     done, n, dres + src_more);
		}
		if (r == -ENOSPC)
			*nospace = 1;
		if (!r)
			r = map_unmap(p, did, &dr, dl + done, span, NULL, NULL, 0);
		if (!r && k) {
			uint64_t added = 0;
			vol_map_tree(p, did, &dr, &dt);
			for (unsigned i = 0, j = 0; !r && i < k; i++) {
				/* In pieces: inside the reserved runs, and out. */
				uint64_t a = x[i].off, b = a + x[i].len;
				while (j < nd && df[j].off + df[j].len <= a)
					j++;
				for (uint64_t c = a; !r && c < b;) {
					uint64_t e = b;
					uint32_t f = 0;
					unsigned q = j;
					while (q < nd && df[q].off + df[q].len <= c)
						q++;
					if (q < nd && df[q].off <= c) {
						f = VBAS_MAPF_RESERVED;
						if (df[q].off + df[q].len < e)
							e = df[q].off + df[q].len;
					} else if (q < nd && df[q].off < e) {
						e = df[q].off;
					}
					r = map_insert(&dt, dl + done + c, x[i].pblk + (c - a), e - c, f);
					c = e;
				}
				if (!r)
					r = space_queue(p, x[i].pblk, x[i].len, +1, VBAS_BT_DATA, 0);
				added += x[i].len;
			}
			if (!r) {
				vol_set_root(&dr, &dt);
				dr.mapped = le64_mk(le64_get(dr.mapped) + added);
				vol_resv_add(p, &dr, dres);
				dr.owed = le64_mk(le64_get(dr.owed) + dres);
				if (sid == did && src_more) {
					/* Within one volume: its own blocks shared. */
					uint64_t o = le64_get(dr.owed) + src_more;
					uint64_t rb = le64_get(dr.resv_blocks);
					if (o > rb) {
						owed_release(p, o - rb);
						o = rb;
					}
					dr.owed = le64_mk(o);
					src_more = 0;
				}
				r = vol_put(p, did, &dr);
			}
		}
		if (!r && src_more && sid == did) {
			owed_release(p, src_more);    /* nothing landed */
		} else if (!r && src_more) {
			r = vol_get(p, sid, &sr);
			if (!r) {
				sr.owed = le64_mk(le64_get(sr.owed) + src_more);
				r = vol_put(p, sid, &sr);
			}
		}
		if (!r)
			r = space_drain(p);
		if (r)
			break;
		done += span;
		/* The intent's progress, in the batch's transaction. */
		if (slot >= 0)
			intent_set(p, slot, 5, base + done);
		r = txn_maybe_commit(p);
		/* Told, not asked: a reflink is finished whole (its intent). */
		if (!r && p->progress && done < n)
			p->progress(p->progress_arg, (base + done) << p->bshift,
				    (base + n) << p->bshift);
	}
	return r;
}

/* Reflink [sl, sl+n) of SID to [dl, dl+n) of DID under an intent (pool
 * lock and range locks held): a crash between its commits is finished
 * at the next open.  A failure other than ENOSPC leaves the pool
 * read-only (txn_fail), the intent as last committed. */
static int reflink_intent(struct vbas_pool *p, int slot, uint64_t sid, uint64_t sl,
			  uint64_t did, uint64_t dl, uint64_t n)
{
	const uint64_t arg[6] = { sid, sl, did, dl, n, 0 };
	int nospace = 0;
	intent_begin(p, slot, VBAS_INTENT_REFLINK, arg);
	int r = reflink_locked(p, sid, sl, did, dl, n, &nospace, slot, 0);
	if (r && !nospace) {
		txn_fail(p, r);
		p->intent_busy[slot] = 0;
		pthread_cond_broadcast(&p->intent_cond);
		return r;
	}
	intent_drop(p, slot);
	return r;
}

int share_resume_reflink(struct vbas_pool *p, int slot, const uint64_t a[6])
{
	int nospace = 0;
	pool_lock(p);
	int r = reflink_locked(p, a[0], a[1] + a[5], a[2], a[3] + a[5], a[4] - a[5], &nospace,
			       slot, a[5]);
	if (r && !nospace)
		txn_fail(p, r);
	pool_unlock(p);
	return r;
}

int vbas_reflink(struct vbas_vol *src, uint64_t soff, struct vbas_vol *dst, uint64_t doff,
		 uint64_t len)
{
	struct vbas_pool *p = src->pool;
	struct two_ranges tr = { .v = { src, dst } };
	int r;
	vbas_err_clear();
	if (dst->pool != p)
		return vbas_err(-EXDEV, "reflink: the volumes are in different pools");
	int slot;
	r = share_begin(src, soff, dst, doff, &len, "reflink", &tr, &slot);
	if (!r)
		r = reflink_intent(p, slot, src->id, tr.start[0], dst->id, tr.start[1], tr.n[0]);
	else if (slot >= 0)
		intent_drop(p, slot);
	unlock_two(p, &tr);
	pool_unlock(p);
	return r;
}

/* ---- Dedupe ----------------------------------------------------------- */

/* Read [off, off+len) of VOL whose range lock the caller holds (so the
 * mapping cannot change under us); pool lock not held. */
static int read_locked(struct vbas_vol *vol, char *buf, uint64_t len, uint64_t off)
{
	struct vbas_pool *p = vol->pool;
	while (len) {
		struct vbas_vol_rec rec;
		struct vbas_btree t;
		uint64_t pb, run, lblk = off >> p->bshift, inblk = off & (p->bs - 1);
		int mapped;
		pool_lock(p);
		int r = vol_get(p, vol->id, &rec);
		if (!r) {
			vol_map_tree(p, vol->id, &rec, &t);
			r = map_lookup(p, &t, lblk, &pb, &run, &mapped);
		}
		pool_unlock(p);
		if (r)
			return r;
		uint64_t n = len;
		if (run < (len + inblk + p->bs - 1) >> p->bshift)
			n = (run << p->bshift) - inblk;   /* the run ends first */
		if (mapped)
			r = dev_pread(p->dev, buf, n, (pb << p->bshift) + inblk);
		else
			memset(buf, 0, n);
		if (r)
			return vbas_err(r, "read at volume offset %" PRIu64 " failed", off);
		buf += n;
		off += n;
		len -= n;
	}
	return 0;
}

int vbas_dedupe(struct vbas_vol *src, uint64_t soff, struct vbas_vol *dst, uint64_t doff,
		uint64_t len, int *same)
{
	struct vbas_pool *p = src->pool;
	struct two_ranges tr = { .v = { src, dst } };
	const size_t chunk = 1 << 20;
	char *a = NULL, *b = NULL;
	int r;
	vbas_err_clear();
	*same = 0;
	if (dst->pool != p)
		return vbas_err(-EXDEV, "dedupe: the volumes are in different pools");
	int slot;
	r = share_begin(src, soff, dst, doff, &len, "dedupe", &tr, &slot);
	pool_unlock(p);
	/* Compare with both ranges locked, a bounded buffer at a time. */
	if (!r && (posix_memalign((void **)&a, 4096, chunk) || posix_memalign((void **)&b, 4096, chunk)))
		r = -ENOMEM;
	int equal = 1;
	for (uint64_t o = 0; !r && equal && o < len; o += chunk) {
		uint64_t n = len - o < chunk ? len - o : chunk;
		r = read_locked(src, a, n, soff + o);
		if (!r)
			r = read_locked(dst, b, n, doff + o);
		if (!r && memcmp(a, b, n))
			equal = 0;
	}
	free(a);
	free(b);
	pool_lock(p);
	if (!r && equal) {
		r = txn_writable(p, "dedupe");
		if (!r) {
			r = reflink_intent(p, slot, src->id, tr.start[0], dst->id, tr.start[1], tr.n[0]);
			slot = -1;
		}
		if (!r)
			*same = 1;
	}
	if (slot >= 0)
		intent_drop(p, slot);      /* not equal, or no reflink */
	unlock_two(p, &tr);
	pool_unlock(p);
	return r;
}

/* ---- Unshare ---------------------------------------------------------- */

/* Shared blocks of [lblk, lblk+n), and the most metadata copying them
 * can take: every node of the mapping tree copied, the refcount tree
 * growing by two records a run, and one change's worth besides. */
static int count_shared(struct vbas_vol *vol, uint64_t lblk, uint64_t n, uint64_t *shared,
			uint64_t *meta)
{
	struct vbas_pool *p = vol->pool;
	struct vbas_vol_rec rec;
	struct vbas_btree t;
	struct map_census c = { 0 };
	uint64_t nodes = 0;
	int r;
	pool_lock(p);
	r = vol_get(p, vol->id, &rec);
	if (!r) {
		vol_map_tree(p, vol->id, &rec, &t);
		r = map_census(p, &t, le64_get(rec.share_gen), lblk, n, &c);
	}
	if (!r && c.shared_runs)
		r = bt_count_nodes(&t, &nodes);
	*shared = c.shared;
	*meta = !r && c.shared_runs ? nodes + space_write_meta(p, &t, 1, c.shared, c.cow.recs) : 0;
	pool_unlock(p);
	return r;
}

/* Private copies of the shared blocks of [off, off+len) of VOL, under
 * intent SLOT (its progress: BASE blocks before OFF). */
static int unshare_range(struct vbas_vol *vol, uint64_t off, uint64_t len, int slot,
			 uint64_t base)
{
	struct vbas_pool *p = vol->pool;
	struct vbas_resv *resv = NULL;
	void *buf = NULL;
	uint64_t need, start = off;
	/* All or nothing in space: claim a copy of every shared block first. */
	uint64_t meta;
	int r = count_shared(vol, off >> p->bshift, len >> p->bshift, &need, &meta);
	if (r || !need)
		return r;
	r = resv_new(p, need, meta, &resv);
	if (r)
		return vbas_err_ctx(r, "unshare: %" PRIu64 " shared blocks need copies", need);
	const size_t chunk = 1 << 20;
	if (posix_memalign(&buf, 4096, chunk)) {
		vbas_resv_put(resv);
		return -ENOMEM;
	}
	uint64_t end = off + len;
	while (!r && off < end) {
		struct vbas_iomap m;
		uint64_t want = end - off < chunk ? end - off : chunk;
		r = map_begin(vol, off, want, VBAS_MAP_WRITE | VBAS_MAP_NOALLOC | VBAS_MAP_METAHELD,
				   resv, &m);
		if (r)
			break;
		if (m.type == VBAS_IOMAP_NEW) {
			/* A copy of the shared blocks into the new ones. */
			r = dev_pread(p->dev, buf, m.length, m.cow_physical);
			if (!r)
				r = dev_pwrite(p->dev, buf, m.length, m.physical);
			if (r)
				vbas_err(r, "unshare: copying %" PRIu64 " bytes at volume offset %"
					 PRIu64 " failed", m.length, off);
		}
		int e = vbas_map_end(vol, &m, r ? 0 : m.length, r);
		if (!r)
			r = e;
		off += m.length;
		/* Progress: a commit that came with map_end may lag it by this
		 * chunk, which a replay unshares again (a no-op). */
		if (!r) {
			pool_lock(p);
			intent_set(p, slot, 3, base + ((off - start) >> p->bshift));
			if (vbas_tun.unshare_commit)
				r = txn_commit(p);
			if (!r && off < end)
				r = pool_progress(p, "unshare", off - start, len);
			pool_unlock(p);
		}
	}
	free(buf);
	vbas_resv_put(resv);
	return r;
}

int share_resume_unshare(struct vbas_pool *p, int slot, const char *name, const uint64_t a[6])
{
	struct vbas_vol *vol;
	int r = vbas_vol_open(p, name, &vol);
	if (r)
		return r;
	r = unshare_range(vol, (a[1] + a[3]) << p->bshift, (a[2] - a[3]) << p->bshift, slot, a[3]);
	int e = vbas_vol_close(vol);
	return r ? r : e;
}

int vbas_unshare(struct vbas_vol *vol, uint64_t off, uint64_t len)
{
	struct vbas_pool *p = vol->pool;
	struct vbas_vol_info info;
	int r;
	vbas_err_clear();
	r = vbas_vol_info(vol, &info);
	if (r)
		return r;
	if (info.flags & VBAS_VOL_READONLY)
		return vbas_err(-EROFS, "unshare: the volume is read-only (a snapshot, or set read-only)");
	if ((off | len) & (p->bs - 1))
		return vbas_err(-EINVAL, "unshare: range %" PRIu64 "+%" PRIu64 " is not aligned to the "
				"block size (%u)", off, len, p->bs);
	if (off >= info.size)
		return vbas_err(-ERANGE, "unshare: offset %" PRIu64 " is past the end of the volume "
				"(%" PRIu64 " bytes)", off, info.size);
	if (len == 0)
		len = info.size - off;
	if (len > info.size - off)
		return vbas_err(-ERANGE, "unshare: range %" PRIu64 "+%" PRIu64 " is past the end of "
				"the volume (%" PRIu64 " bytes)", off, len, info.size);
	/* An intent for the whole range: a crash between the commits of its
	 * chunks is finished at the next open. */
	const uint64_t arg[6] = { vol->id, off >> p->bshift, len >> p->bshift, 0, 0, 0 };
	int slot;
	pool_lock(p);
	r = txn_writable(p, "unshare");
	if (!r)
		r = intent_take(p, VBAS_INTENT_UNSHARE, arg, &slot);
	pool_unlock(p);
	if (r)
		return r;
	r = unshare_range(vol, off, len, slot, 0);
	pool_lock(p);
	if (p->broken) {
		/* Back to the last commit, its intent with it: finished at the
		 * next open. */
		p->intent_busy[slot] = 0;
		pthread_cond_broadcast(&p->intent_cond);
	} else {
		intent_drop(p, slot);
		int e = txn_maybe_commit(p);
		if (!r)
			r = e;
	}
	pool_unlock(p);
	return r;
}

/* ---- Diff ------------------------------------------------------------- */

struct diff_ranges {
	struct vbas_pool *p;
	struct vbas_btree *a, *b;
	uint64_t end;                  /* blocks: the larger volume size */
	uint64_t *v;                   /* pairs (start, len) in blocks */
	size_t n, cap;
};

static int add_range(struct diff_ranges *d, uint64_t s, uint64_t n)
{
	if (d->n && d->v[2 * d->n - 2] + d->v[2 * d->n - 1] == s) {
		d->v[2 * d->n - 1] += n;
		return 0;
	}
	if (d->n == d->cap) {
		size_t c = d->cap ? 2 * d->cap : 256;
		uint64_t *v = realloc(d->v, 2 * c * sizeof(*v));
		if (!v)
			return -ENOMEM;
		d->v = v;
		d->cap = c;
	}
	d->v[2 * d->n] = s;
	d->v[2 * d->n + 1] = n;
	d->n++;
	return 0;
}

/* Compare the two mappings block range by block range over [lo, hi). */
static int diff_range_cb(void *arg, const void *lo, const void *hi)
{
	struct diff_ranges *d = arg;
	uint64_t cur = lo ? ld_le64(lo) : 0, end = hi ? ld_le64(hi) : d->end;
	if (end > d->end)
		end = d->end;
	/* Ranges come in order; skip what an earlier one covered. */
	if (d->n && d->v[2 * d->n - 2] + d->v[2 * d->n - 1] > cur)
		cur = d->v[2 * d->n - 2] + d->v[2 * d->n - 1];
	while (cur < end) {
		uint64_t pa, la, pb, lb;
		int ma, mb;
		int r = map_lookup(d->p, d->a, cur, &pa, &la, &ma);
		if (!r)
			r = map_lookup(d->p, d->b, cur, &pb, &lb, &mb);
		if (r)
			return r;
		uint64_t take = la < lb ? la : lb;
		if (take > end - cur)
			take = end - cur;
		if (ma != mb || (ma && pa != pb)) {
			r = add_range(d, cur, take);
			if (r)
				return r;
		}
		cur += take;
	}
	return 0;
}

int vbas_diff(struct vbas_vol *from, struct vbas_vol *to,
	      int (*cb)(uint64_t off, uint64_t len, void *arg), void *arg)
{
	struct vbas_pool *p = from->pool;
	struct vbas_vol_rec fr, tr;
	struct vbas_btree ft, tt;
	struct diff_ranges d = { .p = p, .a = &ft, .b = &tt };
	int r;
	vbas_err_clear();
	if (to->pool != p)
		return vbas_err(-EXDEV, "diff: the volumes are in different pools");
	pool_lock(p);
	r = vol_get(p, from->id, &fr);
	if (!r)
		r = vol_get(p, to->id, &tr);
	if (!r) {
		vol_map_tree(p, from->id, &fr, &ft);
		vol_map_tree(p, to->id, &tr, &tt);
		uint64_t fs = le64_get(fr.size), ts = le64_get(tr.size);
		d.end = (fs > ts ? fs : ts) >> p->bshift;
		r = bt_diff(&ft, &tt, diff_range_cb, &d);
	}
	pool_unlock(p);
	for (size_t i = 0; !r && i < d.n; i++)
		r = cb(d.v[2 * i] << p->bshift, d.v[2 * i + 1] << p->bshift, arg);
	free(d.v);
	return r;
}
