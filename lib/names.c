/* The name index: a B+tree of (hash of a volume's name, volume id), one
 * record per record of the volume table (which is keyed by id).  A lookup
 * by name reads the records of one hash, O(log n), and the volume record
 * of each (one, but for a collision; a volume being deleted is passed
 * over, its name free for a new one); create, snapshot and clone insert,
 * the end of a delete removes, with the volume's record.  A pool made before the index (no VBAS_SBF_NAMES) gets it at
 * its first read-write open, in one transaction; until then, or opened
 * read-only, a lookup walks the volume table as it always did. */
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* FNV-1a over the name's bytes, then splitmix64's finaliser to spread
 * the bits: fixed, so every vbas agrees on where a name lies.  Names
 * that collide cost a volume-record read each, nothing else. */
uint64_t names_hash(const char *name, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < len; i++) {
		h ^= (uint8_t)name[i];
		h *= 0x100000001b3ull;
	}
	h ^= h >> 30;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 27;
	h *= 0x94d049bb133111ebull;
	h ^= h >> 31;
	return h & vbas_tun.names_hash_mask;
}

static int names_cmp(const void *a, const void *b)
{
	const struct vbas_name_key *x = a, *y = b;
	uint64_t p = le64_get(x->hash), q = le64_get(y->hash);
	if (p != q)
		return p < q ? -1 : 1;
	p = le64_get(x->id);
	q = le64_get(y->id);
	return p < q ? -1 : p > q;
}

static int names_check_rec(const struct bt_env *env, const void *rec, char *why, size_t len)
{
	(void)env;
	const struct vbas_name_key *k = rec;
	uint64_t id = le64_get(k->id);
	if (id == 0 || id >= VBAS_VOL_ID_LIMIT)
		return snprintf(why, len, "bad volume id %" PRIu64, id), -EUCLEAN;
	return 0;
}

static void names_fmt_key(const void *key, char *buf, size_t len)
{
	const struct vbas_name_key *k = key;
	snprintf(buf, len, "%016" PRIx64 "/%" PRIu64, le64_get(k->hash), le64_get(k->id));
}

const struct vbas_btree_ops names_ops = {
	.name = "name index",
	.tree_type = VBAS_TREE_NAMES,
	.key_size = sizeof(struct vbas_name_key),
	.val_size = 0,
	.cmp = names_cmp,
	.check_rec = names_check_rec,
	.fmt_key = names_fmt_key,
};

void names_init(struct vbas_pool *p)
{
	p->names.ops = &names_ops;
	p->names.env = &p->env;
	p->names.owner = VBAS_OWNER_NAMES;
	p->names.root = le64_get(p->sb.names_root);
	p->names.root_txid = le64_get(p->sb.names_root_txid);
	p->names_on = !!(le32_get(p->sb.flags) & VBAS_SBF_NAMES);
}

static struct vbas_name_key name_key(const char *name, uint64_t id)
{
	struct vbas_name_key k = { le64_mk(names_hash(name, strlen(name))), le64_mk(id) };
	return k;
}

int names_add(struct vbas_pool *p, uint64_t id, const char *name)
{
	if (!p->names_on)
		return 0;
	struct vbas_name_key k = name_key(name, id);
	p->dirty = 1;
	int e = bt_insert(&p->names, &k);
	if (e == -EEXIST)
		return vbas_err(-EUCLEAN, "name index: volume id %" PRIu64 " is in it already", id);
	return e;
}

int names_del(struct vbas_pool *p, uint64_t id, const struct vbas_vol_rec *rec)
{
	if (!p->names_on)
		return 0;
	unsigned nl = le16_get(rec->name_len);
	struct vbas_name_key k = { le64_mk(names_hash((const char *)rec->name, nl)), le64_mk(id) };
	p->dirty = 1;
	int e = bt_delete(&p->names, &k, NULL);
	if (e == -ENOENT)
		return vbas_err(-EUCLEAN, "name index: volume '%.*s' (id %" PRIu64 ") is not in it",
				(int)nl, (const char *)rec->name, id);
	return e;
}

struct names_find {
	struct vbas_pool *p;
	uint64_t hash;
	const char *name;
	size_t len;
	uint64_t id;
	struct vbas_vol_rec rec;
	int found, err;
};

static int find_cb(void *arg, const void *rec)
{
	struct names_find *f = arg;
	const struct vbas_name_key *k = rec;
	if (le64_get(k->hash) != f->hash)
		return 1;
	uint64_t id = le64_get(k->id);
	struct vbas_vol_rec v;
	int e = vol_get(f->p, id, &v);
	if (e == -ENOENT)
		e = vbas_err(-EUCLEAN, "name index: volume id %" PRIu64 " is in it, but not in the "
			     "volume table", id);
	if (e) {
		f->err = e;
		return 1;
	}
	if (le16_get(v.name_len) == f->len && !memcmp(v.name, f->name, f->len) &&
	    !(le32_get(v.flags) & VBAS_VOLF_DELETING)) {
		f->id = id;
		f->rec = v;
		f->found = 1;
		return 1;
	}
	return 0;
}

int names_find(struct vbas_pool *p, const char *name, uint64_t *id, struct vbas_vol_rec *rec)
{
	struct names_find f = { .p = p, .name = name, .len = strlen(name) };
	f.hash = names_hash(name, f.len);
	struct vbas_name_key k = { le64_mk(f.hash), le64_mk(0) };
	int e = bt_iter(&p->names, &k, find_cb, &f);
	if (e < 0)
		return e;
	if (f.err)
		return f.err;
	if (!f.found)
		return -ENOENT;
	*id = f.id;
	if (rec)
		*rec = f.rec;
	return 0;
}

/* ---- Building the index for a pool made without it ----------------------- */

struct build_ctx {
	struct vbas_pool *p;
	int err;
};

static int build_cb(void *arg, const void *rec)
{
	struct build_ctx *b = arg;
	const struct vbas_voltab_rec *r = rec;
	struct vbas_name_key k = { le64_mk(names_hash((const char *)r->v.name,
						      le16_get(r->v.name_len))), r->k.id };
	b->err = bt_insert(&b->p->names, &k);
	return b->err ? 1 : 0;
}

/* A record per volume into the (empty) index. */
static int fill(struct vbas_pool *p)
{
	struct build_ctx b = { .p = p };
	p->dirty = 1;
	int e = bt_iter(&p->voltab, NULL, build_cb, &b);
	if (!e)
		e = b.err;
	if (e == -EEXIST)
		e = vbas_err(-EUCLEAN, "name index: two volume records with one id");
	return e;
}

int names_rebuild(struct vbas_pool *p)
{
	p->names.root = p->names.root_txid = 0;
	int e = fill(p);
	return e ? vbas_err_ctx(e, "rebuilding the name index") : 0;
}

/* Pool lock held, the pool writable.  Records go in as the volume table
 * is walked (the tree grows as any does, its nodes allocated as metadata),
 * then one commit sets VBAS_SBF_NAMES: a crash before it leaves the pool
 * as it was, and the next open builds again. */
int names_build(struct vbas_pool *p)
{
	if (p->names_on)
		return 0;
	unsigned hv = 0;
	if (bt_height(&p->voltab, &hv))
		hv = 8;
	uint64_t recs = p->nvolumes;
	int e = space_room(p, 2 * (bt_nodes_for(&p->names, recs) + hv + 4), SPACE_GROW,
			   "building the name index");
	if (e)
		return e;
	e = fill(p);
	if (!e)
		e = space_drain(p);
	if (e) {
		txn_fail(p, e);
		return vbas_err_ctx(e, "building the name index");
	}
	p->names_on = 1;
	e = txn_commit(p);
	if (e)
		p->names_on = 0;
	return e;
}

/* Levels the volume table and the name index may need shadowed by one
 * volume's change, a root split each included. */
unsigned names_voltab_levels(struct vbas_pool *p)
{
	unsigned hv = 0, hn = 0;
	if (bt_height(&p->voltab, &hv))
		hv = 8;
	if (p->names_on && bt_height(&p->names, &hn))
		hn = 8;
	return hv + 1 + (p->names_on ? hn + 1 : 0);
}
