/* Pool shrink: every block in use past the new end is moved below it.
 *
 * The target is recorded in the superblock first (VBAS_SBF_SHRINK,
 * shrink_to) and the allocator hands out nothing at or past it from then
 * on, so the work only shrinks: what lies past the target is what is left
 * to move, and that is the whole of the intent's progress.  A crash leaves
 * the target; the next read-write open goes on with the moves (or
 * vbas_pool_shrink_cancel gives the room back).
 *
 * Each step is one transaction, made while holding the pool lock, that
 * starts from a commit and ends with one.  It takes the lowest block in
 * use past the target and moves it:
 *
 * - A data block: the reverse map names every record that covers it, and
 *   the records that overlap those, until the range [FROM, FROM+N) holds
 *   whole records only.  The range is copied to a run of N free blocks
 *   below the target, the copy written before the commit's flush.  Each
 *   mapping leaf that holds one of the records (the records' owners say in
 *   which trees to look) is moved with bt_relocate: one copy of the leaf,
 *   its records pointing at the new run, and every tree that shares it
 *   pointed at that same copy, so sharing stays as it was.
 * - A metadata block: its header names its tree (and for a mapping node
 *   the lineage), level and first key; the node is moved the same way.
 *
 * The holders found must account for every reference: the reverse map's
 * counts for a data range, the reference count of each node moved.  If
 * they do not, the step is abandoned (the pool is inconsistent: check
 * says where) and nothing is lost.  A data range whose blocks some volume
 * has open for I/O waits for it: the step takes the volume's range lock,
 * without waiting while it holds changes; if the range is busy it commits
 * what it has, waits for the range outside the lock, and goes on.
 *
 * When nothing is left past the target, one commit names the new size and
 * drops the target, and a pool file is truncated after it.
 */
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Nodes written before a step commits (and blocks moved: shrink_step). */
#define STEP_NODES    4096u
/* The largest range of data one move copies: records that overlap each
 * other past this are more than a shrink should hold in one step. */
#define MOVE_MAX      (1u << 20)

struct svol {
	uint64_t id;
	struct vbas_vol_rec rec;
	struct vbas_btree t;
	int changed, shared;
};

struct held {
	struct vol_state *vs;
	uint64_t start, n;
};

struct mleaf {
	uint64_t blk, lblk, owner;
};

struct shrink {
	struct vbas_pool *p;
	uint64_t limit;
	struct svol *v;
	size_t nv, vcap;
	struct bt_moves mv;
	struct held *h;
	size_t nh, hcap;
	/* The data move being made: [from, from+n) to [to, to+n). */
	uint64_t from, to, n;
	uint64_t edits;             /* records repointed */
	/* A range some I/O holds: waited for after the step commits. */
	uint64_t busy_id, busy_start, busy_n;
	struct rmap_set recs;
	struct mleaf *leaves;       /* the data move's leaves */
	size_t nl, lcap;
	void *leafbuf;              /* a leaf's records */
	struct vbas_shrink_stats *st;
};

static int vols_cb(void *arg, const void *rec)
{
	struct shrink *S = arg;
	const struct vbas_voltab_rec *r = rec;
	if (le32_get(r->v.flags) & VBAS_VOLF_DELETING)
		return vbas_err(-EBUSY, "shrink: the delete of volume id %" PRIu64 " stopped for lack "
				"of room and is not finished (free some room, then try again)",
				le64_get(r->k.id));
	if (S->nv == S->vcap) {
		size_t nc = S->vcap ? 2 * S->vcap : 16;
		struct svol *v = realloc(S->v, nc * sizeof(*v));
		if (!v)
			return -ENOMEM;
		S->v = v;
		S->vcap = nc;
	}
	struct svol *sv = &S->v[S->nv++];
	memset(sv, 0, sizeof(*sv));
	sv->id = le64_get(r->k.id);
	sv->rec = r->v;
	vol_map_tree(S->p, sv->id, &sv->rec, &sv->t);
	return 0;
}

static void release_ranges(struct shrink *S)
{
	for (size_t i = 0; i < S->nh; i++) {
		rl_unlock(S->p, S->h[i].vs, S->h[i].start, S->h[i].n, 1);
		vol_state_put(S->p, S->h[i].vs);
	}
	S->nh = 0;
}

/* Volume SV's blocks [LBLK, LBLK+N) are about to move: hold them, or say
 * which range is busy (-EAGAIN). */
static int hold_range(struct shrink *S, struct svol *sv, uint64_t lblk, uint64_t n)
{
	struct vol_state *vs = vol_state_get(S->p, sv->id);
	if (!vs)
		return 0;                 /* no handle: no I/O */
	for (size_t i = 0; i < S->nh; i++) {
		if (S->h[i].vs == vs && S->h[i].start <= lblk && lblk + n <= S->h[i].start + S->h[i].n) {
			vol_state_put(S->p, vs);
			return 0;
		}
	}
	if (S->nh == S->hcap) {
		size_t nc = S->hcap ? 2 * S->hcap : 16;
		struct held *h = realloc(S->h, nc * sizeof(*h));
		if (!h) {
			vol_state_put(S->p, vs);
			return -ENOMEM;
		}
		S->h = h;
		S->hcap = nc;
	}
	int r = rl_trylock(vs, lblk, n);
	if (r) {
		vol_state_put(S->p, vs);
		if (r == -EBUSY) {
			S->busy_id = sv->id;
			S->busy_start = lblk;
			S->busy_n = n;
			return -EAGAIN;
		}
		return r;
	}
	S->h[S->nh++] = (struct held){ vs, lblk, n };
	return 0;
}

/* The nodes copied since entry M0 must each have had every holder
 * repointed. */
static int check_moves(struct shrink *S, size_t m0, const char *what)
{
	for (size_t i = m0; i < S->mv.n; i++) {
		const struct bt_moved *m = &S->mv.v[i];
		if (m->hits != m->refs)
			return vbas_err(-EUCLEAN, "shrink: moving %s: metadata block %" PRIu64 " has %u "
					"reference(s), but %u tree(s) were found to hold it (run vbas check)",
					what, m->old, m->refs, m->hits);
	}
	return 0;
}

/* Point every volume tree from owner OWNER on at the moved node BLK. */
static int relocate_map(struct shrink *S, const void *key, unsigned level, uint64_t blk,
			uint64_t owner, int *found_any)
{
	for (size_t i = 0; i < S->nv; i++) {
		struct svol *sv = &S->v[i];
		int found = 0, shared = 0;
		if (sv->id < owner)
			continue;          /* a lineage starts at its owner */
		int r = bt_relocate(&sv->t, key, level, blk, &S->mv, &found, &shared);
		if (r)
			return r;
		if (found) {
			sv->changed = 1;
			sv->shared |= shared;
			*found_any = 1;
		}
	}
	return 0;
}

/* ---- Metadata ------------------------------------------------------------ */

static int move_node(struct shrink *S, uint64_t blk, int *changed)
{
	struct vbas_pool *p = S->p;
	uint8_t key[BT_MAX_KEY];
	uint16_t type;
	uint64_t owner, txid;
	unsigned level;
	int found = 0, shared = 0, r;
	size_t m0 = S->mv.n;
	r = bt_node_info(&p->env, blk, &type, &owner, &level, key, &txid);
	if (r)
		return vbas_err_ctx(r, "shrink: reading metadata block %" PRIu64, blk);
	*changed = 1;
	switch (type) {
	case VBAS_TREE_MAP:
		r = relocate_map(S, key, level, blk, owner, &found);
		break;
	case VBAS_TREE_VOLTAB:
		r = bt_relocate(&p->voltab, key, level, blk, &S->mv, &found, &shared);
		break;
	case VBAS_TREE_NAMES:
		r = bt_relocate(&p->names, key, level, blk, &S->mv, &found, &shared);
		break;
	case VBAS_TREE_REFC:
		r = bt_relocate(&p->sp.refc, key, level, blk, &S->mv, &found, &shared);
		break;
	case VBAS_TREE_RMAP:
		r = bt_relocate(&p->sp.rmap, key, level, blk, &S->mv, &found, &shared);
		break;
	default:
		return vbas_err(-EUCLEAN, "shrink: block %" PRIu64 " is counted as metadata but is a "
				"node of tree type %u", blk, type);
	}
	if (r)
		return r;
	if (!found)
		return vbas_err(-EUCLEAN, "shrink: metadata block %" PRIu64 " is in use, but no tree "
				"reaches it (a leaked block: vbas repair rebuilds the counts)", blk);
	S->st->nodes += S->mv.n - m0;
	return check_moves(S, m0, "a node");
}

/* ---- Data ---------------------------------------------------------------- */

/* A leaf's copy (or the leaf itself, already a copy): its records in the
 * range being moved point at the new run. */
static int edit_leaf(void *arg, struct vbas_btree *t, uint64_t owner, void *recs, unsigned n)
{
	struct shrink *S = arg;
	struct vbas_map_rec *m = recs;
	(void)t;
	for (unsigned i = 0; i < n; i++) {
		uint64_t pb = le64_get(m[i].v.pblk), lb = le64_get(m[i].k.lblk);
		uint32_t len = le32_get(m[i].v.len);
		if (pb + len <= S->from || pb >= S->from + S->n)
			continue;
		if (pb < S->from || pb + len > S->from + S->n)
			return vbas_err(-EUCLEAN, "shrink: the mapping record of block %" PRIu64 " (%" PRIu64
					"+%u) crosses the range being moved, %" PRIu64 "+%" PRIu64
					", which the reverse map says it lies in", lb, pb, len, S->from, S->n);
		uint64_t nb = pb - S->from + S->to;
		m[i].v.pblk = le64_mk(nb);
		int r = space_queue(S->p, pb, len, -1, VBAS_BT_DATA, 0);
		if (!r)
			r = space_queue(S->p, nb, len, +1, VBAS_BT_DATA, 0);
		if (!r)
			r = rmap_queue(S->p, pb, owner, lb, len, -1);
		if (!r)
			r = rmap_queue(S->p, nb, owner, lb, len, +1);
		if (r)
			return r;
		S->edits++;
	}
	return 0;
}

static int rec_cb(void *arg, const struct rmap_irec *x)
{
	struct shrink *S = arg;
	return rmap_set_add(&S->recs, x->pblk, x->owner, x->lblk, x->len, x->count);
}

/* The records over [*LO, *HI), and those over them, until the range holds
 * whole records. */
static int closure(struct shrink *S, uint64_t *lo, uint64_t *hi)
{
	for (;;) {
		S->recs.n = 0;
		int r = rmap_query(S->p, *lo, *hi, rec_cb, S);
		if (r)
			return r;
		uint64_t l = *lo, h = *hi;
		for (size_t i = 0; i < S->recs.n; i++) {
			if (S->recs.v[i].pblk < l)
				l = S->recs.v[i].pblk;
			if (S->recs.v[i].pblk + S->recs.v[i].len > h)
				h = S->recs.v[i].pblk + S->recs.v[i].len;
		}
		if (l == *lo && h == *hi)
			return 0;
		if (h - l > MOVE_MAX)
			return vbas_err(-EFBIG, "shrink: the extents over block %" PRIu64 " overlap each "
					"other over more than %u blocks", *lo, MOVE_MAX);
		*lo = l;
		*hi = h;
	}
}

static int copy_data(struct shrink *S)
{
	struct vbas_pool *p = S->p;
	size_t chunk = 8u << 20;
	void *buf;
	if (posix_memalign(&buf, 4096, chunk))
		return -ENOMEM;
	uint64_t off = 0, bytes = S->n * p->bs;
	int r = 0;
	while (off < bytes && !r) {
		size_t l = bytes - off < chunk ? (size_t)(bytes - off) : chunk;
		r = dev_pread(p->dev, buf, l, S->from * p->bs + off);
		if (r)
			vbas_err(r, "shrink: reading blocks %" PRIu64 "+%" PRIu64 ": %s", S->from, S->n,
				 strerror(-r));
		else if ((r = dev_pwrite(p->dev, buf, l, S->to * p->bs + off)))
			vbas_err(r, "shrink: writing blocks %" PRIu64 "+%" PRIu64 ": %s", S->to, S->n,
				 strerror(-r));
		off += l;
	}
	free(buf);
	return r;
}

static int add_leaf(struct shrink *S, uint64_t blk, uint64_t lblk, uint64_t owner)
{
	for (size_t i = 0; i < S->nl; i++)
		if (S->leaves[i].blk == blk)
			return 0;
	if (S->nl == S->lcap) {
		size_t nc = S->lcap ? 2 * S->lcap : 16;
		struct mleaf *v = realloc(S->leaves, nc * sizeof(*v));
		if (!v)
			return -ENOMEM;
		S->leaves = v;
		S->lcap = nc;
	}
	S->leaves[S->nl++] = (struct mleaf){ blk, lblk, owner };
	return 0;
}

/* Move the data at BLK.  *CHANGED once the trees changed: an error after
 * that leaves the transaction to be abandoned. */
static int move_data(struct shrink *S, uint64_t blk, int *changed)
{
	struct vbas_pool *p = S->p;
	uint64_t lo = blk, hi = blk + 1;
	S->n = 0;
	int r = closure(S, &lo, &hi);
	if (r)
		return r;
	if (!S->recs.n)
		return vbas_err(-EUCLEAN, "shrink: data block %" PRIu64 " is in use, but the reverse map "
				"names no owner (run vbas check)", blk);
	/* The leaves that hold the records (each once), and the I/O on the
	 * ranges they map. */
	struct vbas_map_rec *leaf = S->leafbuf;
	struct bt_leaf lf = { .recs = leaf };
	uint64_t expect = 0;
	S->nl = 0;
	for (size_t i = 0; i < S->recs.n; i++) {
		const struct rmap_irec *x = &S->recs.v[i];
		uint8_t key[8];
		st_le64(key, x->lblk);
		expect += (uint64_t)x->count;
		for (size_t k = 0; k < S->nv; k++) {
			struct svol *sv = &S->v[k];
			if (sv->id < x->owner)
				continue;      /* a lineage starts at its owner */
			r = bt_leaf_get(&sv->t, key, &lf);
			if (r)
				return r;
			if (lf.owner != x->owner)
				continue;
			for (unsigned j = 0; j < lf.n; j++) {
				if (le64_get(leaf[j].k.lblk) == x->lblk && le64_get(leaf[j].v.pblk) == x->pblk &&
				    le32_get(leaf[j].v.len) == x->len) {
					r = hold_range(S, sv, x->lblk, x->len);
					if (!r)
						r = add_leaf(S, lf.blk, x->lblk, x->owner);
					if (r)
						return r;
					break;
				}
			}
		}
	}
	S->from = lo;
	S->n = hi - lo;
	r = space_alloc_run(p, S->n, VBAS_BT_DATA, &S->to);
	if (r)
		return vbas_err_ctx(r, "shrink: moving blocks %" PRIu64 "+%" PRIu64, S->from, S->n);
	r = copy_data(S);
	if (r) {
		space_unalloc(p, S->to, S->n);
		return r;
	}
	/* From here on the trees change: every leaf copied once, its records
	 * in the range pointing at the new run, and every tree that holds it
	 * pointed at the copy. */
	*changed = 1;
	r = space_queue(p, S->to, S->n, +1, VBAS_BT_DATA, 1);
	S->edits = 0;
	S->mv.edit = edit_leaf;
	S->mv.arg = S;
	size_t m0 = S->mv.n;
	for (size_t i = 0; i < S->nl && !r; i++) {
		uint8_t key[8];
		int found = 0;
		st_le64(key, S->leaves[i].lblk);
		r = relocate_map(S, key, 0, S->leaves[i].blk, S->leaves[i].owner, &found);
		if (!r && !found)
			r = vbas_err(-EUCLEAN, "shrink: mapping leaf %" PRIu64 " was found, then lost",
				     S->leaves[i].blk);
	}
	S->mv.edit = NULL;
	if (!r)
		r = space_queue(p, S->to, S->n, -1, VBAS_BT_DATA, 0);
	if (!r && S->edits != expect)
		r = vbas_err(-EUCLEAN, "shrink: the reverse map counts %" PRIu64 " mapping record(s) "
			     "over blocks %" PRIu64 "+%" PRIu64 ", but %" PRIu64 " were found in the "
			     "trees (run vbas check)", expect, S->from, S->n, S->edits);
	if (!r)
		r = check_moves(S, m0, "data");
	if (!r) {
		S->st->data_blocks += S->n;
		S->st->nodes += S->mv.n - m0;
	}
	return r;
}

/* ---- Steps ------------------------------------------------------------- */

static void shrink_done(struct shrink *S)
{
	release_ranges(S);
	free(S->v);
	free(S->h);
	free(S->mv.v);
	free(S->leaves);
	free(S->leafbuf);
	rmap_set_free(&S->recs);
}

/* Volume records of the trees that moved, then the commit. */
static int step_commit(struct shrink *S)
{
	struct vbas_pool *p = S->p;
	int r = 0;
	for (size_t i = 0; i < S->nv && !r; i++) {
		struct svol *sv = &S->v[i];
		if (!sv->changed)
			continue;
		vol_set_root(&sv->rec, &sv->t);
		if (sv->shared)
			sv->rec.share_gen = le64_mk(p->env.txid);
		r = vol_put(p, sv->id, &sv->rec);
	}
	if (!r && p->dirty) {
		r = txn_commit(p);
		if (!r)
			S->st->steps++;
	}
	return r;
}

/* One step, the pool lock held: 1 when nothing is left past the target,
 * 0 after a commit, -EAGAIN (committed) when a range is busy. */
static int step(struct shrink *S)
{
	struct vbas_pool *p = S->p;
	int r = txn_writable(p, "shrink");
	if (r)
		return r;
	if (p->dirty && (r = txn_commit(p)))
		return r;
	S->nv = 0;
	S->mv.n = 0;
	r = bt_iter(&p->voltab, NULL, vols_cb, S);
	if (r)
		return r < 0 ? r : -EIO;
	uint64_t moved = 0;
	int changed = 0, done = 0;
	while (moved < vbas_tun.shrink_step && S->mv.n < STEP_NODES) {
		uint64_t s, n;
		int type;
		r = space_next_used(p, S->limit, &s, &n, &type);
		if (r == -ENOENT) {
			r = 0;
			done = 1;
			break;
		}
		if (r)
			break;
		uint64_t b = s > S->limit ? s : S->limit;
		/* Room for the copies of the nodes a move writes. */
		if (space_avail(p) < p->sp.meta_reserve + p->sp.reserved + 64 + 4 * S->nv) {
			r = vbas_err(-ENOSPC, "shrink: the room below the target ran out (%" PRIu64
				     " blocks free there)", space_avail(p));
			break;
		}
		if (type == VBAS_BT_META) {
			r = move_node(S, b, &changed);
			moved++;
		} else {
			r = move_data(S, b, &changed);
			moved += S->n;
		}
		if (!r)
			r = space_drain(p);
		if (r)
			break;
		changed = 0;           /* a whole move: committed below */
	}
	if (r && changed && r != -EAGAIN) {
		/* Part of a move is in the trees: back to the last commit. */
		release_ranges(S);
		txn_fail(p, r);
		return r;
	}
	int e = step_commit(S);
	release_ranges(S);
	if (e)
		return e;
	if (r)
		return r;
	return done;
}

/* The last step: the pool ends at the target. */
static int finish(struct shrink *S)
{
	struct vbas_pool *p = S->p;
	struct vbas_space *sp = &p->sp;
	if (sp->pins)
		return vbas_err(-EBUSY, "shrink: a reader of the pool file holds a pin; the blocks "
				"past the target are all moved, try again once it is gone");
	if (extset_first_overlap(&sp->pending, S->limit, p->nblocks)) {
		S->busy_id = 0;        /* a write allocated there before the target */
		return -EAGAIN;
	}
	p->nblocks = p->env.nblocks = S->limit;
	int r = space_set_limit(p, 0);
	if (r)
		return r;
	space_size_reserve(p);
	p->dirty = 1;
	r = txn_commit(p);
	if (r)
		return r;
	S->st->steps++;
	/* The superblock names the new size: the tail is nobody's now. */
	if (p->dev->ops->truncate) {
		int e = p->dev->ops->truncate(p->dev, p->nblocks * p->bs);
		if (e)
			return vbas_err(e, "shrink: the pool is %" PRIu64 " bytes now, but truncating its "
					"file failed: %s", p->nblocks * p->bs, strerror(-e));
	}
	return 0;
}

/* Wait outside the pool lock (held on entry and on return) for the range
 * a step found busy. */
static void wait_range(struct shrink *S)
{
	struct vbas_pool *p = S->p;
	struct vol_state *vs = vol_state_get(p, S->busy_id);
	if (vs) {
		if (!rl_lock(p, vs, S->busy_start, S->busy_n, 1))
			rl_unlock(p, vs, S->busy_start, S->busy_n, 1);
		vol_state_put(p, vs);
	} else {
		pool_unlock(p);
		nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
		pool_lock(p);
	}
}

static int run(struct vbas_pool *p, struct vbas_shrink_stats *st)
{
	struct shrink S = { .p = p, .limit = p->sp.limit, .st = st };
	int r;
	S.leafbuf = malloc(p->bs);     /* a leaf's records fit in its block */
	if (!S.leafbuf)
		return -ENOMEM;
	pool_lock(p);
	p->shrinks++;
	pool_unlock(p);
	for (;;) {
		pool_lock(p);
		if (p->shrink_stop) {
			r = vbas_err(-ECANCELED, "shrink: stopped; the target stays, and the next "
				     "read-write open goes on with it");
		} else if (p->sp.limit != S.limit) {
			r = vbas_err(-ECANCELED, p->sp.limit ? "shrink: another shrink changed the target"
				     : "shrink: cancelled");
		} else {
			r = step(&S);
			if (r == 1)
				r = finish(&S);
			else if (!r)
				r = -EINPROGRESS;
			if (r == -EAGAIN)
				wait_range(&S);
		}
		pool_unlock(p);
		if (r != -EAGAIN && r != -EINPROGRESS) {
			pool_lock(p);
			if (!--p->shrinks)
				p->shrink_stop = 0;
			pool_unlock(p);
			break;
		}
		/* The I/O that waited for the step goes first: a mutex is not
		 * fair, and this thread would take it straight back. */
		nanosleep(&(struct timespec){ .tv_nsec = 200000 }, NULL);
	}
	shrink_done(&S);
	return r;
}

int vbas_pool_shrink(struct vbas_pool *p, uint64_t size, struct vbas_shrink_stats *stats)
{
	struct vbas_shrink_stats st0;
	if (!stats)
		stats = &st0;
	memset(stats, 0, sizeof(*stats));
	vbas_err_clear();
	pool_lock(p);
	int r = txn_writable(p, "shrink");
	if (r)
		goto out;
	uint64_t nb = size / p->bs;
	if (!p->sp.rmap_on) {
		r = vbas_err(-EOPNOTSUPP, "shrink: the pool keeps no reverse map, which says who owns "
			     "the blocks to move (vbas set POOL --rmap builds one)");
		goto out;
	}
	if (nb >= p->nblocks) {
		r = vbas_err(-EINVAL, "shrink: %" PRIu64 " bytes is not smaller than the pool (%" PRIu64
			     " bytes)", size, p->nblocks * p->bs);
		goto out;
	}
	if (nb < VBAS_FIRST_BLOCK + 64) {
		r = vbas_err(-EINVAL, "shrink: %" PRIu64 " bytes is below the smallest pool (%" PRIu64
			     " bytes)", size, (uint64_t)(VBAS_FIRST_BLOCK + 64) * p->bs);
		goto out;
	}
	r = vol_resume_deletes(p);
	if (r)
		goto out;
	/* What must fit below the target: the blocks in use, those promised
	 * to reservations, the metadata reserve of a pool that size, and room
	 * for a step's copies. */
	uint64_t old = p->nblocks;
	p->nblocks = nb;
	space_size_reserve(p);
	uint64_t keep = p->sp.meta_reserve;
	p->nblocks = old;
	space_size_reserve(p);
	uint64_t used = p->sp.data_used + p->sp.meta_used + p->sp.pending.total;
	uint64_t need = used + p->sp.reserved + keep + 2 * STEP_NODES / 8 + 64;
	if (need > nb - VBAS_FIRST_BLOCK) {
		r = vbas_err(-ENOSPC, "shrink to %" PRIu64 " bytes: %" PRIu64 " blocks are in use, %"
			     PRIu64 " promised to reservations, and a pool that size holds %" PRIu64
			     " back for metadata; it needs at least %" PRIu64 " bytes", nb * p->bs,
			     used, p->sp.reserved, keep, (need + VBAS_FIRST_BLOCK) * p->bs);
		goto out;
	}
	if (p->sp.limit != nb) {
		r = space_set_limit(p, nb);
		if (r)
			goto out;
		p->dirty = 1;
		r = txn_commit(p);
		if (r)
			goto out;
	}
	pool_unlock(p);
	return run(p, stats);
out:
	pool_unlock(p);
	return r;
}

int shrink_resume(struct vbas_pool *p)
{
	struct vbas_shrink_stats st;
	memset(&st, 0, sizeof(st));
	return p->sp.limit ? run(p, &st) : 0;
}

int vbas_pool_shrink_stop(struct vbas_pool *p)
{
	pool_lock(p);
	if (p->shrinks)
		p->shrink_stop = 1;
	pool_unlock(p);
	return 0;
}

int vbas_pool_shrink_cancel(struct vbas_pool *p)
{
	vbas_err_clear();
	pool_lock(p);
	int r = txn_writable(p, "shrink cancel");
	if (!r && !p->sp.limit)
		r = vbas_err(-ENOENT, "shrink cancel: no shrink is in progress");
	if (!r)
		r = space_set_limit(p, 0);
	if (!r) {
		p->dirty = 1;
		r = txn_commit(p);
	}
	pool_unlock(p);
	return r;
}
