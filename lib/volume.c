/* Volumes: the volume table and per-volume mapping trees; create, delete,
 * resize, list, open. */
#include "internal.h"
#include "utf8.h"

#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- Volume table ------------------------------------------------------ */

static int voltab_check_rec(const struct bt_env *env, const void *rec, char *why, size_t len)
{
	const struct vbas_voltab_rec *r = rec;
	unsigned nl = le16_get(r->v.name_len);
	uint64_t id = le64_get(r->k.id);
	if (id == 0 || id >= VBAS_VOL_ID_LIMIT)
		return snprintf(why, len, "bad volume id"), -EUCLEAN;
	if (nl == 0 || nl > VBAS_NAME_MAX)
		return snprintf(why, len, "name length %u", nl), -EUCLEAN;
	if (memchr(r->v.name, '/', nl) || memchr(r->v.name, 0, nl))
		return snprintf(why, len, "name holds '/' or NUL"), -EUCLEAN;
	for (unsigned i = nl; i < sizeof(r->v.name); i++)
		if (r->v.name[i])
			return snprintf(why, len, "name padding is not zero"), -EUCLEAN;
	if (le32_get(r->v.flags) & ~VBAS_VOLF_KNOWN)
		return snprintf(why, len, "unknown flags %#x", le32_get(r->v.flags)), -EUCLEAN;
	if ((le32_get(r->v.flags) & (VBAS_VOLF_EXPENDABLE | VBAS_VOLF_READONLY)) ==
	    VBAS_VOLF_EXPENDABLE)
		return snprintf(why, len, "expendable but not a snapshot"), -EUCLEAN;
	uint64_t size = le64_get(r->v.size);
	if (size == 0 || size > VBAS_VOLUME_SIZE_MAX || size % env->block_size)
		return snprintf(why, len, "size %" PRIu64, size), -EUCLEAN;
	uint64_t root = le64_get(r->v.root), root_txid = le64_get(r->v.root_txid);
	if (root && (root < VBAS_FIRST_BLOCK || root >= env->nblocks))
		return snprintf(why, len, "mapping tree root %" PRIu64 " outside the pool", root),
		       -EUCLEAN;
	if (!root != !root_txid || root_txid > env->txid)
		return snprintf(why, len, "mapping tree root %" PRIu64 " of transaction %" PRIu64,
				root, root_txid), -EUCLEAN;
	if (le64_get(r->v.origin) >= id)
		return snprintf(why, len, "origin %" PRIu64 " is not an older volume",
				le64_get(r->v.origin)), -EUCLEAN;
	if (!(le32_get(r->v.flags) & VBAS_VOLF_DELETING) &&
	    le64_get(r->v.mapped) > size / env->block_size)
		return snprintf(why, len, "%" PRIu64 " blocks mapped, more than its size",
				le64_get(r->v.mapped)), -EUCLEAN;
	if (!(le32_get(r->v.flags) & VBAS_VOLF_DELETING) &&
	    le64_get(r->v.resv_blocks) > le64_get(r->v.mapped))
		return snprintf(why, len, "%" PRIu64 " reserved blocks, more than the %" PRIu64
				" it maps", le64_get(r->v.resv_blocks), le64_get(r->v.mapped)),
		       -EUCLEAN;
	if (!(le32_get(r->v.flags) & VBAS_VOLF_DELETING) &&
	    (le64_get(r->v.owed) > le64_get(r->v.resv_blocks) || le64_get(r->v.owed) > env->nblocks))
		return snprintf(why, len, "%" PRIu64 " blocks owed, more than the %" PRIu64
				" reserved", le64_get(r->v.owed), le64_get(r->v.resv_blocks)),
		       -EUCLEAN;
	return 0;
}

const struct vbas_btree_ops voltab_ops = {
	.name = "volume table",
	.tree_type = VBAS_TREE_VOLTAB,
	.key_size = sizeof(struct vbas_vol_key),
	.val_size = sizeof(struct vbas_vol_rec),
	.cmp = bt_cmp_u64,
	.check_rec = voltab_check_rec,
	.fmt_key = bt_fmt_u64,
};

/* ---- Mapping trees ----------------------------------------------------- */

static int map_check_rec(const struct bt_env *env, const void *rec, char *why, size_t len)
{
	const struct vbas_map_rec *r = rec;
	uint64_t l = le64_get(r->k.lblk), pb = le64_get(r->v.pblk), n = le32_get(r->v.len);
	if (n == 0)
		return snprintf(why, len, "zero length"), -EUCLEAN;
	if (pb < VBAS_FIRST_BLOCK)
		return snprintf(why, len, "maps onto the superblocks"), -EUCLEAN;
	if (pb >= env->nblocks || n > env->nblocks - pb)
		return snprintf(why, len, "maps past the pool's end (physical %" PRIu64 ", %" PRIu64
				" blocks; the pool has %" PRIu64 ")", pb, n, env->nblocks), -EUCLEAN;
	uint64_t lmax = VBAS_VOLUME_SIZE_MAX / env->block_size;
	if (l >= lmax || n > lmax - l)
		return snprintf(why, len, "past the largest volume size"), -EUCLEAN;
	if (le32_get(r->v.flags) & ~VBAS_MAPF_KNOWN)
		return snprintf(why, len, "unknown flags %#x", le32_get(r->v.flags)), -EUCLEAN;
	return 0;
}

static void map_end_key(const void *rec, void *key)
{
	const struct vbas_map_rec *r = rec;
	st_le64(key, le64_get(r->k.lblk) + le32_get(r->v.len));
}

/* A leaf copied from a shared leaf: its extents gain a reference. */
static int map_val_inc(void *ctx, const void *rec)
{
	const struct vbas_map_rec *r = rec;
	return space_queue(ctx, le64_get(r->v.pblk), le32_get(r->v.len), +1, VBAS_BT_DATA, 0);
}

/* A leaf copied from one the last commit may share: its extents are not
 * to be written in place until the next commit. */
static int map_val_touch(void *ctx, const void *rec)
{
	const struct vbas_map_rec *r = rec;
	return space_mark_touched(ctx, le64_get(r->v.pblk), le32_get(r->v.len));
}

/* A leaf of a dropped mapping tree is freed: its extents lose a reference. */
static int map_val_dec(void *ctx, const void *rec)
{
	const struct vbas_map_rec *r = rec;
	return space_queue(ctx, le64_get(r->v.pblk), le32_get(r->v.len), -1, VBAS_BT_DATA, 0);
}

static int map_rec_owner(void *ctx, const void *rec, uint64_t owner, int delta)
{
	const struct vbas_map_rec *r = rec;
	return rmap_queue(ctx, le64_get(r->v.pblk), owner, le64_get(r->k.lblk),
			  le32_get(r->v.len), delta);
}

const struct vbas_btree_ops map_ops = {
	.name = "mapping",
	.tree_type = VBAS_TREE_MAP,
	.key_size = sizeof(struct vbas_map_key),
	.val_size = sizeof(struct vbas_map_val),
	.cmp = bt_cmp_u64,
	.val_inc = map_val_inc,
	.val_touch = map_val_touch,
	.val_dec = map_val_dec,
	.rec_owner = map_rec_owner,
	.check_rec = map_check_rec,
	.end_key = map_end_key,
	.fmt_key = bt_fmt_u64,
};

void vol_map_tree(struct vbas_pool *p, uint64_t id, const struct vbas_vol_rec *rec,
		  struct vbas_btree *t)
{
	t->ops = &map_ops;
	t->env = &p->env;
	t->root = le64_get(rec->root);
	t->root_txid = le64_get(rec->root_txid);
	t->owner = id;
	t->val_ctx = p;
}

void vol_set_root(struct vbas_vol_rec *rec, const struct vbas_btree *t)
{
	rec->root = le64_mk(t->root);
	rec->root_txid = le64_mk(t->root_txid);
}

/* ---- Records ----------------------------------------------------------- */

int vol_get(struct vbas_pool *p, uint64_t id, struct vbas_vol_rec *rec)
{
	struct vbas_voltab_rec r;
	uint8_t k[8];
	st_le64(k, id);
	int e = bt_lookup(&p->voltab, k, BT_EQ, &r);
	if (e == -ENOENT)
		return vbas_err(-ENOENT, "volume id %" PRIu64 " not found", id);
	if (!e)
		*rec = r.v;
	return e;
}

int vol_put(struct vbas_pool *p, uint64_t id, const struct vbas_vol_rec *rec)
{
	struct vbas_voltab_rec r;
	r.k.id = le64_mk(id);
	r.v = *rec;
	p->dirty = 1;
	p->voltab_gen++;
	return bt_update(&p->voltab, &r);
}

int vol_get_open(struct vbas_pool *p, struct vol_state *vs, struct vbas_vol_rec *rec)
{
	if (vs->rec_gen == p->voltab_gen) {
		*rec = vs->rec;
		return 0;
	}
	int e = vol_get(p, vs->id, rec);
	if (!e) {
		vs->rec = *rec;
		vs->rec_gen = p->voltab_gen;
	}
	return e;
}

struct name_find {
	const char *name;
	size_t len;
	uint64_t id;
	struct vbas_vol_rec rec;
	int found;
};

static int name_cb(void *arg, const void *rec)
{
	struct name_find *f = arg;
	const struct vbas_voltab_rec *r = rec;
	if (le32_get(r->v.flags) & VBAS_VOLF_DELETING)
		return 0;
	if (le16_get(r->v.name_len) == f->len && !memcmp(r->v.name, f->name, f->len)) {
		f->id = le64_get(r->k.id);
		f->rec = r->v;
		f->found = 1;
		return 1;
	}
	return 0;
}

/* Why the N bytes of NAME cannot name a new volume: they are not UTF-8, or
 * hold a control character (C0, DEL, C1), which no front end carries
 * (an NBD export name is UTF-8, a JSON string escapes controls, a
 * terminal acts on them).  NULL if they can.  *AT: the offending byte. */
const char *name_problem(const char *name, size_t n, size_t *at)
{
	const unsigned char *s = (const unsigned char *)name;
	for (size_t i = 0; i < n;) {
		size_t l = utf8_len(s + i, n - i);
		*at = i;
		if (!l)
			return "is not valid UTF-8";
		uint32_t c = utf8_cp(s + i, l);
		if (c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0x9f))
			return "holds a control character";
		i += l;
	}
	return NULL;
}

/* NAME with its bytes past ASCII and its controls as \xNN, into BUF. */
const char *name_shown(const char *name, size_t n, char *buf, size_t len)
{
	size_t o = 0;
	for (size_t i = 0; i < n && o + 5 < len; i++) {
		unsigned char ch = (unsigned char)name[i];
		if (ch < 0x20 || ch >= 0x7f)
			o += (size_t)snprintf(buf + o, len - o, "\\x%02x", ch);
		else
			buf[o++] = (char)ch;
	}
	buf[o] = 0;
	return buf;
}

static int check_name(const char *name)
{
	size_t n = name ? strlen(name) : 0;
	if (n == 0)
		return vbas_err(-EINVAL, "volume name is empty");
	if (n > VBAS_NAME_MAX)
		return vbas_err(-ENAMETOOLONG, "volume name is %zu bytes; at most %d", n, VBAS_NAME_MAX);
	if (strchr(name, '/'))
		return vbas_err(-EINVAL, "volume name '%s' holds '/'", name);
	if (!strcmp(name, ".") || !strcmp(name, ".."))
		return vbas_err(-EINVAL, "volume name '%s' is reserved", name);
	return 0;
}

/* A name for a new volume: a name, and one every front end can carry. */
static int check_new_name(const char *name)
{
	int r = check_name(name);
	if (r)
		return r;
	size_t at, n = strlen(name);
	const char *why = name_problem(name, n, &at);
	if (why) {
		char shown[4 * VBAS_NAME_MAX + 8];
		return vbas_err(-EINVAL, "volume name '%s' %s (byte %zu): a name must be UTF-8 "
				"without control characters, which NBD export names and JSON "
				"can carry", name_shown(name, n, shown, sizeof(shown)), why, at);
	}
	return 0;
}

int vol_lookup_name(struct vbas_pool *p, const char *name, uint64_t *id,
		    struct vbas_vol_rec *rec)
{
	struct name_find f = { .name = name, .len = strlen(name) };
	int r = check_name(name);
	if (r)
		return r;
	if (p->names_on) {
		r = names_find(p, name, id, rec);
		if (r == -ENOENT)
			return vbas_err(-ENOENT, "volume '%s' not found", name);
		return r;
	}
	r = bt_iter(&p->voltab, NULL, name_cb, &f);
	if (r < 0)
		return r;
	if (!f.found)
		return vbas_err(-ENOENT, "volume '%s' not found", name);
	*id = f.id;
	if (rec)
		*rec = f.rec;
	return 0;
}

static int check_size(const struct vbas_pool *p, uint64_t size)
{
	if (size == 0)
		return vbas_err(-EINVAL, "volume size must not be 0");
	if (size % p->bs)
		return vbas_err(-EINVAL, "volume size %" PRIu64 " is not a multiple of the block "
				"size (%u)", size, p->bs);
	if (size > VBAS_VOLUME_SIZE_MAX)
		return vbas_err(-EFBIG, "volume size %" PRIu64 " is above the limit (%llu)", size,
				(unsigned long long)VBAS_VOLUME_SIZE_MAX);
	return 0;
}

static void fill_info(const struct vbas_pool *p, uint64_t id, const struct vbas_vol_rec *v,
		      struct vbas_vol_info *info)
{
	unsigned nl = le16_get(v->name_len);
	memset(info, 0, sizeof(*info));
	/* Records are checked as they are read (voltab_check_rec); never
	 * copy past the name all the same. */
	if (nl > VBAS_NAME_MAX)
		nl = VBAS_NAME_MAX;
	memcpy(info->name, v->name, nl);
	info->id = id;
	info->size = le64_get(v->size);
	info->mapped = le64_get(v->mapped) * p->bs;
	info->origin = le64_get(v->origin);
	info->flags = ((le32_get(v->flags) & VBAS_VOLF_READONLY) ? VBAS_VOL_READONLY : 0) |
		      ((le32_get(v->flags) & VBAS_VOLF_EXPENDABLE) ? VBAS_VOL_EXPENDABLE : 0);
	info->reserved = le64_get(v->resv_blocks) * p->bs;
	info->owed = le64_get(v->owed) * p->bs;
}

static struct vol_state *find_open(struct vbas_pool *p, uint64_t id)
{
	for (struct vol_state *vs = p->open_vols; vs; vs = vs->next)
		if (vs->id == id)
			return vs;
	return NULL;
}

struct vol_state *vol_state_get(struct vbas_pool *p, uint64_t id)
{
	struct vol_state *vs = find_open(p, id);
	if (vs)
		vs->refs++;
	return vs;
}

/* Drop a reference to VS (an open handle, or a holder of its range lock
 * that waited); the last one frees it. */
void vol_state_put(struct vbas_pool *p, struct vol_state *vs)
{
	if (--vs->refs)
		return;
	struct vol_state **pp = &p->open_vols;
	while (*pp != vs)
		pp = &(*pp)->next;
	*pp = vs->next;
	pthread_cond_destroy(&vs->rl_cond);
	pthread_mutex_destroy(&vs->rl_mu);
	free(vs);
}

/* ---- Operations -------------------------------------------------------- */

/* A new volume NAME (for WHAT): the name must be free, and the pool must
 * have room for the record (and a snapshot's count change of the source's
 * root) beyond half its metadata reserve: a change that grows metadata.
 * Pool lock held; may commit. */
static int new_volume_room(struct vbas_pool *p, const char *name, const char *what)
{
	uint64_t id;
	int e = vol_lookup_name(p, name, &id, NULL);
	if (e == 0)
		return vbas_err(-EEXIST, "volume '%s' already exists", name);
	if (e != -ENOENT)
		return e;
	char w[VBAS_NAME_MAX + 32];
	snprintf(w, sizeof(w), "%s '%s'", what, name);
	return space_room(p, space_op_meta(p, NULL), SPACE_GROW, w);
}

int vbas_vol_create(struct vbas_pool *p, const char *name, uint64_t size)
{
	struct vbas_voltab_rec r;
	uint64_t id;
	int e;

	vbas_err_clear();
	e = check_new_name(name);
	if (e)
		return e;
	e = check_size(p, size);
	if (e)
		return e;
	pool_lock(p);
	e = txn_writable(p, "create");
	if (e)
		goto out;
	e = new_volume_room(p, name, "create");
	if (e)
		goto out;
	memset(&r, 0, sizeof(r));
	id = p->next_vol_id;
	r.k.id = le64_mk(id);
	r.v.size = le64_mk(size);
	r.v.ctime = le64_mk((uint64_t)time(NULL));
	r.v.cgen = le64_mk(p->env.txid);
	r.v.name_len = le16_mk((uint16_t)strlen(name));
	memcpy(r.v.name, name, strlen(name));
	p->voltab_gen++;
	e = bt_insert(&p->voltab, &r);
	if (!e)
		e = names_add(p, id, name);
	if (!e)
		e = space_drain(p);
	if (e) {
		txn_fail(p, e);
		goto out;
	}
	p->next_vol_id++;
	p->nvolumes++;
	p->dirty = 1;
out:
	pool_unlock(p);
	return e;
}

/* Metadata blocks a step of a delete that releases BUDGET records and
 * nodes may take: their count changes, and the volume table's path for
 * the cursor. */
static uint64_t delete_step_meta(struct vbas_pool *p, uint64_t budget)
{
	/* The record saved each step (its path shadowed, maybe split), and
	 * at the end its removal from the name index (a path shadowed). */
	unsigned hv = 0, hn = 0;
	if (bt_height(&p->voltab, &hv) || bt_height(&p->names, &hn))
		hv = hn = 8;
	return space_cow_meta(p, budget) + 2 * (hv + 2) + hn;
}

/* Release the mapping tree of volume ID (marked DELETING) and remove its
 * record.  bt_drop releases the tree in key order without changing it:
 * subtrees shared with snapshots or clones just lose a reference, so
 * deleting a volume that shares everything is O(1), and deleting one with
 * millions of extents of its own costs a step per few thousand of them.
 * Each step (vbas_tun.drop_budget records and nodes) leaves a state a
 * commit may show: the volume marked DELETING, its cursor moved on.
 * The cursor is saved with each step, so commits along the way are
 * consistent and open resumes from the last one (the intent). */
static int finish_delete(struct vbas_pool *p, uint64_t id, int *stopped)
{
	struct vbas_vol_rec rec;
	struct vbas_btree t;
	uint8_t k[8];
	int done = 0, e;
	while (!done) {
		e = vol_get(p, id, &rec);
		if (e)
			return e;
		vol_map_tree(p, id, &rec, &t);
		uint8_t cursor[8];
		st_le64(cursor, le64_get(rec.del_cursor));
		/* Each record or node released may change a refcount record,
		 * and the step saves its cursor in the volume's record: take a
		 * step whose metadata fits in what is free, down to a single
		 * record; if even that does not fit, commit first (blocks
		 * freed so far come back), or stop with ENOSPC.  A delete may
		 * use all of the metadata reserve (SPACE_FREE). */
		uint64_t budget = vbas_tun.drop_budget;
		while (budget > 1 && delete_step_meta(p, budget) + space_cascade(p) >
				     space_room_free(p, SPACE_FREE))
			budget /= 2;
		e = space_room(p, delete_step_meta(p, budget), SPACE_FREE, "delete");
		if (e == -ENOSPC) {
			/* Nothing of this step was done: the volume stays marked,
			 * its cursor where the last step left it. */
			*stopped = 1;
			p->deletes_stopped = 1;
		}
		if (e)
			return e;
		/* Told how far; asked to stop, the volume stays marked (its
		 * cursor as saved) for the next delete or open. */
		if (pool_progress(p, "delete", ld_le64(cursor) << p->bshift, le64_get(rec.size))) {
			*stopped = 1;
			p->deletes_stopped = 1;
			return -EINTR;
		}
		e = bt_drop(&t, cursor, budget, &done);
		if (e)
			return e;
		if (done)
			break;
		rec.del_cursor = le64_mk(ld_le64(cursor));
		e = vol_put(p, id, &rec);
		if (!e)
			e = space_drain(p);
		if (!e)
			e = txn_maybe_commit(p);
		if (e)
			return e;
	}
	st_le64(k, id);
	p->voltab_gen++;
	e = bt_delete(&p->voltab, k, NULL);
	if (!e)
		e = names_del(p, id, &rec);
	if (!e)
		e = space_drain(p);
	if (!e) {
		p->nvolumes--;
		p->dirty = 1;
	}
	return e;
}

/* Delete volume ID (record REC, named NAME), which is not open; pool lock
 * held.  An ENOSPC part way leaves it marked for later, the pool writable. */
static int vol_delete_locked(struct vbas_pool *p, uint64_t id, struct vbas_vol_rec rec,
			     const char *name)
{
	int e;
	/* Deletes an earlier ENOSPC stopped go on first: they free space. */
	if (p->deletes_stopped) {
		e = vol_resume_deletes(p);
		if (e)
			return e;
	}
	int stopped = 0;
	e = space_room(p, delete_step_meta(p, 1), SPACE_FREE, "delete");
	if (e)
		return e;
	/* What it owed goes back (the field becomes the delete cursor). */
	int owing = p->sp.owed->left > le64_get(rec.owed);
	uint64_t had_resv = le64_get(rec.resv_blocks);
	owed_release(p, le64_get(rec.owed));
	if (!(le32_get(rec.flags) & VBAS_VOLF_READONLY))
		p->sp.resv_blocks = p->sp.resv_blocks > had_resv ? p->sp.resv_blocks - had_resv : 0;
	rec.flags = le32_mk(le32_get(rec.flags) | VBAS_VOLF_DELETING);
	rec.del_cursor = le64_mk(0);
	e = vol_put(p, id, &rec);
	if (!e)
		e = finish_delete(p, id, &stopped);
	if (!e)
		e = space_drain(p);
	if (e && stopped)
		vbas_err_ctx(e, "the delete of '%s' stopped part way: the volume is gone from the "
			     "list, and what it still holds is freed by the next delete or open",
			     name);
	else if (e)
		txn_fail(p, e);
	else if (owing && had_resv) {
		/* Others owe blocks for reserved ones it may have shared with
		 * them: counted again once the delete is committed. */
		e = txn_commit(p);
		if (!e)
			e = owed_recount(p);
		if (e)
			txn_fail(p, e);
	} else {
		e = txn_maybe_commit(p);
	}
	return e;
}

int vbas_vol_delete(struct vbas_pool *p, const char *name)
{
	struct vbas_vol_rec rec;
	uint64_t id;
	int e;

	vbas_err_clear();
	pool_lock(p);
	e = txn_writable(p, "delete");
	if (!e)
		e = vol_lookup_name(p, name, &id, &rec);
	if (!e && find_open(p, id))
		e = vbas_err(-EBUSY, "volume '%s' is open", name);
	if (!e)
		e = vol_delete_locked(p, id, rec, name);
	pool_unlock(p);
	return e;
}

/* The oldest expendable snapshot that is not open (ids grow with age). */
struct expend_find {
	struct vbas_pool *p;
	uint64_t id;
	struct vbas_vol_rec rec;
	int seen;                  /* expendable ones, open or not */
};

static int expend_cb(void *arg, const void *rec)
{
	struct expend_find *f = arg;
	const struct vbas_voltab_rec *r = rec;
	uint32_t fl = le32_get(r->v.flags);
	if (!(fl & VBAS_VOLF_EXPENDABLE) || (fl & VBAS_VOLF_DELETING))
		return 0;
	f->seen = 1;
	if (find_open(f->p, le64_get(r->k.id)))
		return 0;
	f->id = le64_get(r->k.id);
	f->rec = r->v;
	return 1;
}

int vol_expend(struct vbas_pool *p, uint64_t need)
{
	uint64_t floor = ((p->nblocks - VBAS_FIRST_BLOCK) * p->exp_floor + 999) / 1000;
	int any = 0;
	while (p->may_expend && space_room_free(p, SPACE_DATA) < need + floor) {
		struct expend_find f;
		memset(&f, 0, sizeof(f));
		f.p = p;
		int e = bt_iter(&p->voltab, NULL, expend_cb, &f);
		if (e < 0)
			return e;
		if (!f.seen)
			p->may_expend = 0;
		if (!f.id)
			break;
		char name[VBAS_NAME_MAX + 1];
		unsigned nl = le16_get(f.rec.name_len);
		memcpy(name, f.rec.name, nl);
		name[nl] = 0;
		/* Then commit, so that what it freed can be used. */
		e = vol_delete_locked(p, f.id, f.rec, name);
		if (!e)
			e = txn_commit(p);
		if (e == -ENOSPC)
			break;   /* stopped part way: the rest goes at the next delete */
		if (e)
			return e;
		ev_expended(p, name);
		any = 1;
	}
	return any;
}

struct del_collect {
	uint64_t ids[64];
	unsigned n;
};

static int del_cb(void *arg, const void *rec)
{
	struct del_collect *c = arg;
	const struct vbas_voltab_rec *r = rec;
	if (le32_get(r->v.flags) & VBAS_VOLF_DELETING) {
		c->ids[c->n++] = le64_get(r->k.id);
		if (c->n == 64)
			return 1;
	}
	return 0;
}

/* Finish the deletes a crash interrupted (at open) or an ENOSPC stopped.
 * One that stops again with ENOSPC is left for later, the pool writable. */
int vol_resume_deletes(struct vbas_pool *p)
{
	p->deletes_stopped = 0;
	for (;;) {
		struct del_collect c = { .n = 0 };
		int e = bt_iter(&p->voltab, NULL, del_cb, &c);
		if (e < 0)
			return e;
		if (!c.n)
			return 0;
		for (unsigned i = 0; i < c.n; i++) {
			int stopped = 0;
			e = finish_delete(p, c.ids[i], &stopped);
			if (e && stopped)
				return 0;
			if (e) {
				txn_fail(p, e);
				return vbas_err_ctx(e, "resuming the delete of volume %" PRIu64, c.ids[i]);
			}
		}
	}
}

/* The end of a change made under the pool lock: its queued counts
 * applied and, if it failed, the transaction abandoned; else a commit if
 * the transaction grew large. */
static int change_end(struct vbas_pool *p, int e)
{
	if (!e)
		e = space_drain(p);
	if (e)
		txn_fail(p, e);
	else
		e = txn_maybe_commit(p);
	return e;
}

int vbas_vol_resize(struct vbas_pool *p, const char *name, uint64_t size)
{
	struct vbas_vol_rec rec;
	uint64_t id;
	int e;

	vbas_err_clear();
	e = check_size(p, size);
	if (e)
		return e;
	pool_lock(p);
	e = txn_writable(p, "resize");
	if (e)
		goto out;
	e = vol_lookup_name(p, name, &id, &rec);
	if (e)
		goto out;
	if (le32_get(rec.flags) & VBAS_VOLF_READONLY) {
		e = vbas_err(-EROFS, "volume '%s' is read-only (a snapshot, or set read-only)", name);
		goto out;
	}
	uint64_t old = le64_get(rec.size);
	if (size < old) {
		struct vol_state *vs = find_open(p, id);
		uint64_t s = size >> p->bshift, n = (old - size) >> p->bshift;
		if (vs)
			rl_lock(p, vs, s, n, 1);
		uint64_t stopped = UINT64_MAX;
		e = vol_get(p, id, &rec);
		if (!e)
			e = map_unmap(p, id, &rec, s, n, "shrink", &stopped, 0);
		if (!e) {
			rec.size = le64_mk(size);
			e = vol_put(p, id, &rec);
		}
		if (vs)
			rl_unlock(p, vs, s, n, 1);
		if (e == -ENOSPC && stopped != UINT64_MAX) {
			/* Stopped cleanly (map_unmap): the size stays. */
			e = vbas_err_ctx(e, "resize of '%s' to %" PRIu64 " bytes stopped at offset %"
					 PRIu64 ": the volume keeps its size of %" PRIu64 " bytes, and "
					 "what lay between the new end and that offset is gone", name,
					 size, stopped << p->bshift, old);
			goto out;
		}
	} else if (size > old) {
		rec.size = le64_mk(size);
		e = vol_put(p, id, &rec);
	}
	e = change_end(p, e);
out:
	pool_unlock(p);
	return e;
}

int vbas_vol_rename(struct vbas_pool *p, const char *name, const char *newname)
{
	struct vbas_vol_rec rec;
	uint64_t id;
	int e;

	vbas_err_clear();
	e = check_new_name(newname);
	if (e)
		return e;
	pool_lock(p);
	e = txn_writable(p, "rename");
	if (!e)
		e = vol_lookup_name(p, name, &id, &rec);
	if (e || !strcmp(name, newname))
		goto out;
	e = new_volume_room(p, newname, "rename to");
	if (e)
		goto out;
	/* The record and its entry in the name index, in one transaction. */
	size_t nl = strlen(newname);
	e = names_del(p, id, &rec);
	if (!e) {
		memset(rec.name, 0, sizeof(rec.name));
		memcpy(rec.name, newname, nl);
		rec.name_len = le16_mk((uint16_t)nl);
		e = vol_put(p, id, &rec);
	}
	if (!e)
		e = names_add(p, id, newname);
	e = change_end(p, e);
out:
	pool_unlock(p);
	return e;
}

/* Volume SID (record *REC, named NAME) is about to have its tree's root
 * shared by one more volume.  Nodes are shared only once committed: a node
 * written in the running transaction is changed in place, which must never
 * show through in another volume; so if the tree changed in this
 * transaction (its root is then new), commit first (*REC reread).  And the
 * root's count is 32 bits: one that is full refuses here, before anything
 * has changed (apply would fail the transaction instead). */
static int root_to_share(struct vbas_pool *p, uint64_t sid, struct vbas_vol_rec *rec,
			 const char *name)
{
	uint64_t root = le64_get(rec->root);
	int e = 0;
	if (!root)
		return 0;
	if (le64_get(rec->root_txid) == p->env.txid) {
		e = txn_commit(p);
		if (!e)
			e = vol_get(p, sid, rec);
		if (e)
			return e;
		root = le64_get(rec->root);
	}
	uint32_t rc;
	int type;
	e = space_refcount(p, root, &rc, &type);
	if (!e && rc == UINT32_MAX)
		e = vbas_err(-EMLINK, "volume '%s': its tree's root (block %" PRIu64 ") has %u "
			     "references, the most a block can have", name, root, rc);
	return e;
}

/* Add volume record NR, named NAME, which shares ROOT, the root of volume
 * SID (whose record SREC is written too): the record, its entry in the
 * name index and one more reference to ROOT, drained.  A failure fails
 * the transaction. */
static int add_sharing_record(struct vbas_pool *p, const struct vbas_voltab_rec *nr,
			      const char *name, uint64_t sid, const struct vbas_vol_rec *srec,
			      uint64_t root)
{
	p->voltab_gen++;
	int e = bt_insert(&p->voltab, nr);
	if (!e)
		e = names_add(p, le64_get(nr->k.id), name);
	if (!e)
		e = vol_put(p, sid, srec);
	if (!e && root)
		e = p->env.inc_meta(p->env.ctx, root);
	if (!e)
		e = space_drain(p);
	if (e) {
		txn_fail(p, e);
		return e;
	}
	p->next_vol_id++;
	p->nvolumes++;
	p->dirty = 1;
	return 0;
}

int vbas_vol_snapshot(struct vbas_pool *p, const char *src, const char *name, unsigned flags)
{
	struct vbas_voltab_rec r;
	struct vbas_vol_rec srec;
	struct vol_state *vs = NULL;
	uint64_t sid, id;
	int e;

	vbas_err_clear();
	if (flags & ~(VBAS_SNAP_WRITABLE | VBAS_SNAP_NORESERVE | VBAS_SNAP_EXPENDABLE))
		return vbas_err(-EINVAL, "snapshot: unknown flags %#x", flags);
	int writable = !!(flags & VBAS_SNAP_WRITABLE);
	if (writable && (flags & VBAS_SNAP_EXPENDABLE))
		return vbas_err(-EINVAL, "clone: only a snapshot can be expendable");
	e = check_new_name(name);
	if (e)
		return e;
	pool_lock(p);
	e = txn_writable(p, writable ? "clone" : "snapshot");
	if (e)
		goto out;
	e = vol_lookup_name(p, src, &sid, &srec);
	if (e)
		goto out;
	/* Wait for writes in flight to the source: one that mapped a block
	 * for an overwrite in place must land before the block is shared. */
	vs = find_open(p, sid);
	if (vs) {
		vs->refs++;
		e = rl_lock(p, vs, 0, UINT64_MAX, 1);
		if (e) {
			vol_state_put(p, vs);
			vs = NULL;
			goto out;
		}
		e = vol_lookup_name(p, src, &sid, &srec);
		if (e)
			goto out;
	}
	e = new_volume_room(p, name, "snapshot");
	if (e)
		goto out;
	e = root_to_share(p, sid, &srec, src);
	if (e)
		goto out;
	uint64_t root = le64_get(srec.root);
	/* Reserved blocks shared are copies on write to come: the source (if
	 * writable) and a clone each owe all of theirs, held now or refused
	 * before anything changed (unless VBAS_SNAP_NORESERVE).  O(1): the
	 * counts are in the record. */
	uint64_t rb = le64_get(srec.resv_blocks), src_owed = le64_get(srec.owed);
	uint64_t clone_owed = 0, more = 0;
	if (rb && !(flags & VBAS_SNAP_NORESERVE)) {
		if (!(le32_get(srec.flags) & VBAS_VOLF_READONLY)) {
			more = rb - src_owed;
			src_owed = rb;
		}
		if (writable) {
			clone_owed = rb;
			more += rb;
		}
		e = owed_grow(p, more, writable ? "clone" : "snapshot");
		if (e) {
			vbas_err_ctx(e, "'%s' has %" PRIu64 " bytes of reserved ranges (use "
				     "--no-reserve to share them without holding their copies)", src,
				     rb << p->bshift);
			goto out;
		}
		/* (owed_grow may have committed: the record as it is now.) */
		e = vol_get(p, sid, &srec);
		if (e) {
			owed_release(p, more);
			goto out;
		}
	}
	uint64_t gen = p->env.txid;
	memset(&r, 0, sizeof(r));
	id = p->next_vol_id;
	r.k.id = le64_mk(id);
	r.v.size = srec.size;
	r.v.root = srec.root;
	r.v.root_txid = srec.root_txid;
	r.v.mapped = srec.mapped;
	r.v.origin = le64_mk(sid);
	r.v.ctime = le64_mk((uint64_t)time(NULL));
	r.v.cgen = le64_mk(gen);
	r.v.share_gen = le64_mk(gen);
	r.v.flags = le32_mk(writable ? 0 : VBAS_VOLF_READONLY |
			    ((flags & VBAS_SNAP_EXPENDABLE) ? VBAS_VOLF_EXPENDABLE : 0));
	if (flags & VBAS_SNAP_EXPENDABLE) {
		txn_need_v4(p);
		p->may_expend = 1;
	}
	r.v.resv_blocks = le64_mk(rb);
	r.v.owed = le64_mk(clone_owed);
	srec.owed = le64_mk(src_owed);
	r.v.name_len = le16_mk((uint16_t)strlen(name));
	memcpy(r.v.name, name, strlen(name));
	srec.share_gen = le64_mk(gen);
	e = add_sharing_record(p, &r, name, sid, &srec, root);
	if (e)
		goto out;
	if (writable)
		p->sp.resv_blocks += rb;
out:
	if (vs) {
		rl_unlock(p, vs, 0, UINT64_MAX, 1);
		vol_state_put(p, vs);
	}
	pool_unlock(p);
	return e;
}

int vbas_vol_rollback(struct vbas_pool *p, const char *name, const char *snap)
{
	struct vbas_vol_rec rec, srec;
	struct vbas_voltab_rec d;
	uint64_t id, sid, did;
	int e, stopped = 0;

	vbas_err_clear();
	pool_lock(p);
	e = txn_writable(p, "rollback");
	if (!e)
		e = vol_lookup_name(p, name, &id, &rec);
	if (!e)
		e = vol_lookup_name(p, snap, &sid, &srec);
	if (e)
		goto out;
	if (le32_get(rec.flags) & VBAS_VOLF_READONLY) {
		e = vbas_err(-EROFS, "volume '%s' is read-only (a snapshot): roll back a writable "
			     "volume", name);
		goto out;
	}
	if (!(le32_get(srec.flags) & VBAS_VOLF_READONLY) || le64_get(srec.origin) != id) {
		e = vbas_err(-EINVAL, "'%s' is not a snapshot of '%s'", snap, name);
		goto out;
	}
	if (find_open(p, id)) {
		e = vbas_err(-EBUSY, "volume '%s' is open", name);
		goto out;
	}
	if (le64_get(rec.resv_blocks) || le64_get(srec.resv_blocks) || le64_get(rec.owed)) {
		e = vbas_err(-ENOTSUP, "rollback of '%s' to '%s': reserved ranges are not rolled "
			     "back; unreserve them first", name, snap);
		goto out;
	}
	/* Deletes an earlier ENOSPC stopped go on first: they free space. */
	if (p->deletes_stopped && (e = vol_resume_deletes(p)))
		goto out;
	/* (As for a snapshot: one more reference to SNAP's root.) */
	e = root_to_share(p, sid, &srec, snap);
	if (e)
		goto out;
	uint64_t root = le64_get(srec.root);
	/* A record, the index entry and the first delete step. */
	e = space_room(p, 2 * delete_step_meta(p, 1), SPACE_FREE, "rollback");
	if (e)
		goto out;
	/* The tree NAME had goes to a record of its own, marked DELETING
	 * (under NAME, which lookups of a deleting record do not see), and
	 * is released as a delete releases a volume's. */
	uint64_t gen = p->env.txid;
	memset(&d, 0, sizeof(d));
	did = p->next_vol_id;
	d.k.id = le64_mk(did);
	d.v = rec;
	d.v.flags = le32_mk(le32_get(rec.flags) | VBAS_VOLF_DELETING);
	d.v.del_cursor = le64_mk(0);
	rec.root = srec.root;
	rec.root_txid = srec.root_txid;
	rec.mapped = srec.mapped;
	rec.size = srec.size;
	rec.share_gen = le64_mk(gen);
	srec.share_gen = le64_mk(gen);
	e = vol_put(p, id, &rec);
	if (e) {
		txn_fail(p, e);
		goto out;
	}
	e = add_sharing_record(p, &d, name, sid, &srec, root);
	if (e)
		goto out;
	e = finish_delete(p, did, &stopped);
	if (!e)
		e = space_drain(p);
	if (e && stopped)
		/* NAME is rolled back; what it had is freed by the next
		 * delete or open. */
		e = txn_maybe_commit(p);
	else if (e)
		txn_fail(p, e);
	else
		e = txn_maybe_commit(p);
out:
	pool_unlock(p);
	return e;
}

int vbas_vol_set_readonly(struct vbas_pool *p, const char *name, int readonly)
{
	struct vbas_vol_rec rec;
	uint64_t id;
	int e;

	vbas_err_clear();
	pool_lock(p);
	e = txn_writable(p, readonly ? "set read-only" : "set writable");
	if (!e)
		e = vol_lookup_name(p, name, &id, &rec);
	if (e)
		goto out;
	uint32_t fl = le32_get(rec.flags);
	if (!!(fl & VBAS_VOLF_READONLY) == !!readonly)
		goto out;
	if (readonly && find_open(p, id)) {
		e = vbas_err(-EBUSY, "volume '%s' is open: close it before making it read-only",
			     name);
		goto out;
	}
	if (le64_get(rec.resv_blocks) || le64_get(rec.owed)) {
		e = vbas_err(-ENOTSUP, "volume '%s' has reserved ranges: unreserve them first", name);
		goto out;
	}
	fl = readonly ? fl | VBAS_VOLF_READONLY : fl & ~(VBAS_VOLF_READONLY | VBAS_VOLF_EXPENDABLE);
	rec.flags = le32_mk(fl);
	e = change_end(p, vol_put(p, id, &rec));
out:
	pool_unlock(p);
	return e;
}

/* Usage: a block the volume maps is its alone (exclusive) when it has
 * one reference and the leaf that holds it is held by this tree alone,
 * through nodes of count one up to the root; every other mapped block is
 * shared.  So the walk reads only the private part of the tree (a shared
 * subtree is skipped unread, as bt_iter_private does) and splits its
 * records by the counts of their blocks; shared is what the volume's
 * record says it maps less that.  A snapshot nobody has written since
 * costs one refcount lookup, however much it maps.  The
 * walk reads vbas_tun.usage_batch records per hold of the pool lock and
 * lets go between batches, so that the I/O of a served pool does not wait
 * for a walk of a whole large volume (about 50 ms per GiB of 4 KiB
 * pieces); a volume written meanwhile gets figures as of the batches. */
#define USAGE_PAUSE 1

struct usage_ctx {
	struct vbas_pool *p;
	struct vbas_btree *t;
	uint64_t excl;
	uint64_t end;            /* the volume's size in blocks */
	uint64_t left;           /* records this batch may still read */
	uint64_t next;           /* the logical block to go on from after a pause */
};

static int usage_cb(void *arg, const void *rec)
{
	struct usage_ctx *u = arg;
	const struct vbas_map_rec *m = rec;
	uint64_t pb = le64_get(m->v.pblk), n = le32_get(m->v.len);
	if (!u->left) {
		u->next = le64_get(m->k.lblk);
		return USAGE_PAUSE;
	}
	u->left--;
	if (le64_get(m->k.lblk) + n > u->end)
		return vbas_err(-EUCLEAN, "volume id %" PRIu64 ": extent at block %" PRIu64 " runs "
				"past the volume's end (%" PRIu64 " blocks)", u->t->owner,
				le64_get(m->k.lblk), u->end);
	while (n) {
		uint32_t rc;
		uint64_t run;
		int e = space_refcount_run(u->p, pb, n, &rc, &run);
		if (e)
			return e;
		if (rc == 1)
			u->excl += run;
		pb += run;
		n -= run;
	}
	return 0;
}

int vbas_vol_usage(struct vbas_pool *p, const char *name, struct vbas_vol_usage *usage)
{
	struct vbas_vol_rec rec;
	struct vbas_btree t;
	struct usage_ctx u = { .p = p, .t = &t };
	uint64_t id, first_id = 0;
	int e;
	vbas_err_clear();
	memset(usage, 0, sizeof(*usage));
	for (;;) {
		pool_lock(p);
		e = vol_lookup_name(p, name, &id, &rec);
		if (!e && first_id && id != first_id)   /* deleted and made anew */
			e = vbas_err(-ENOENT, "usage of '%s': the volume was deleted", name);
		if (!e)
			e = space_drain(p);
		if (!e) {
			struct vbas_map_key k = { le64_mk(u.next) };
			first_id = id;
			u.end = le64_get(rec.size) >> p->bshift;
			u.left = vbas_tun.usage_batch ? vbas_tun.usage_batch : 1;
			vol_map_tree(p, id, &rec, &t);
			e = bt_iter_private(&t, &k, le64_get(rec.share_gen), usage_cb, &u);
		}
		pool_unlock(p);
		if (e != USAGE_PAUSE)
			break;
		sched_yield();   /* let the writers waiting for the lock in */
	}
	if (e > 0)
		e = 0;
	if (!e) {
		uint64_t mapped = le64_get(rec.mapped);
		usage->mapped = mapped * p->bs;
		if (u.excl > mapped)        /* written between batches */
			u.excl = mapped;
		usage->exclusive = u.excl * p->bs;
		usage->shared = (mapped - u.excl) * p->bs;
	}
	return e;
}

static int sum_cb(void *arg, const void *rec)
{
	const struct vbas_voltab_rec *r = rec;
	if (!(le32_get(r->v.flags) & VBAS_VOLF_DELETING))
		*(uint64_t *)arg += le64_get(r->v.mapped);
	return 0;
}

int vol_sum_mapped(struct vbas_pool *p, uint64_t *blocks)
{
	*blocks = 0;
	int e = bt_iter(&p->voltab, NULL, sum_cb, blocks);
	return e < 0 ? e : 0;
}

int vbas_vol_stat(struct vbas_pool *p, const char *name, struct vbas_vol_info *info)
{
	struct vbas_vol_rec rec;
	uint64_t id;
	int e;
	vbas_err_clear();
	pool_lock(p);
	e = vol_lookup_name(p, name, &id, &rec);
	if (!e)
		fill_info(p, id, &rec, info);
	pool_unlock(p);
	return e;
}

struct list_ctx {
	struct vbas_pool *p;
	struct vbas_vol_info *v;
	size_t n, cap;
	int err;
};

static int list_cb(void *arg, const void *rec)
{
	struct list_ctx *c = arg;
	const struct vbas_voltab_rec *r = rec;
	if (le32_get(r->v.flags) & VBAS_VOLF_DELETING)
		return 0;
	if (c->n == c->cap) {
		size_t nc = c->cap ? c->cap * 2 : 16;
		struct vbas_vol_info *v = realloc(c->v, nc * sizeof(*v));
		if (!v) {
			c->err = -ENOMEM;
			return 1;
		}
		c->v = v;
		c->cap = nc;
	}
	fill_info(c->p, le64_get(r->k.id), &r->v, &c->v[c->n++]);
	return 0;
}

int vbas_vol_list(struct vbas_pool *p, int (*cb)(const struct vbas_vol_info *, void *), void *arg)
{
	struct list_ctx c = { .p = p };
	int e;
	vbas_err_clear();
	/* Collect under the lock, call back outside it. */
	pool_lock(p);
	e = bt_iter(&p->voltab, NULL, list_cb, &c);
	pool_unlock(p);
	if (e >= 0)
		e = c.err;
	for (size_t i = 0; !e && i < c.n; i++)
		e = cb(&c.v[i], arg);
	free(c.v);
	return e;
}

int vbas_vol_open(struct vbas_pool *p, const char *name, struct vbas_vol **volp)
{
	struct vbas_vol *v;
	uint64_t id;
	int e;
	vbas_err_clear();
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	pool_lock(p);
	e = vol_lookup_name(p, name, &id, NULL);
	if (!e) {
		struct vol_state *vs = find_open(p, id);
		if (!vs) {
			vs = calloc(1, sizeof(*vs));
			if (!vs) {
				e = -ENOMEM;
				goto out;
			}
			vs->id = id;
			pthread_cond_init(&vs->rl_cond, NULL);
			pthread_mutex_init(&vs->rl_mu, NULL);
			vs->next = p->open_vols;
			p->open_vols = vs;
		}
		vs->refs++;
		v->pool = p;
		v->vs = vs;
		v->id = id;
		*volp = v;
	}
out:
	pool_unlock(p);
	if (e)
		free(v);
	return e;
}

int vbas_vol_close(struct vbas_vol *v)
{
	struct vbas_pool *p;
	if (!v)
		return 0;
	p = v->pool;
	pool_lock(p);
	vol_state_put(p, v->vs);
	pool_unlock(p);
	free(v);
	return 0;
}

int vbas_vol_info(struct vbas_vol *v, struct vbas_vol_info *info)
{
	struct vbas_vol_rec rec;
	int e;
	vbas_err_clear();
	pool_lock(v->pool);
	e = vol_get(v->pool, v->id, &rec);
	if (!e)
		fill_info(v->pool, v->id, &rec, info);
	pool_unlock(v->pool);
	return e;
}
