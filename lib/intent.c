/* Intents: operations that span commits, kept in the superblock.
 *
 * A reflink (or dedupe) of many extents, and an unshare of a large range,
 * commit along the way: each batch leaves every count exact, and a commit
 * between batches shows a prefix done.  Without more, a crash there would
 * leave the operation half done for good.  So the operation takes a slot
 * of the superblock's intent log before its first change, and sets its
 * progress there after each batch, in the same transaction as the batch;
 * every commit writes the slots with the rest of the superblock.  After a
 * crash, the last commit's slots say what was under way and how far it
 * got, and the next read-write open finishes it (intents_replay): the
 * operation is finished, or resumed from its last durable step.  A
 * finished operation frees its slot in the transaction of its last batch.
 *
 * Deletes keep their progress in the volume record instead (a cursor:
 * any number may be under way), and a shrink its target in the superblock
 * (it only has one); both are resumed at open too (volume.c, shrink.c).
 *
 * Three slots: an operation that finds them all held waits for one before
 * it takes its range locks (the holders may be waiting for those).
 */
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

const char *intents_invalid(const struct vbas_sb *sb)
{
	int any = 0;
	uint64_t next = le64_get(sb->next_vol_id), gen = le64_get(sb->generation);
	for (unsigned i = 0; i < VBAS_INTENT_SLOTS; i++) {
		const struct vbas_intent *x = &sb->intents[i];
		uint32_t t = le32_get(x->type);
		uint64_t a[6];
		for (int k = 0; k < 6; k++)
			a[k] = le64_get(x->arg[k]);
		if (!t) {
			static const struct vbas_intent zero;
			if (memcmp(x, &zero, sizeof(zero)))
				return "a free intent slot that is not zero";
			continue;
		}
		any = 1;
		if (t > VBAS_INTENT_TYPE_MAX || le32_get(x->pad) || le64_get(x->gen) > gen)
			return "an intent of an unknown type or time";
		if (t == VBAS_INTENT_REFLINK &&
		    (!a[0] || a[0] >= next || !a[2] || a[2] >= next || !a[4] || a[5] > a[4] ||
		     a[1] > UINT64_MAX - a[4] || a[3] > UINT64_MAX - a[4]))
			return "a reflink intent with bad volumes or ranges";
		if (t == VBAS_INTENT_UNSHARE &&
		    (!a[0] || a[0] >= next || !a[2] || a[3] > a[2] || a[1] > UINT64_MAX - a[2] ||
		     a[4] || a[5]))
			return "an unshare intent with a bad volume or range";
	}
	if (any != !!(le32_get(sb->flags) & VBAS_SBF_INTENTS))
		return "intent slots and the intents flag disagree";
	return NULL;
}

int intent_reserve(struct vbas_pool *p, int *slot)
{
	for (;;) {
		for (unsigned i = 0; i < VBAS_INTENT_SLOTS; i++) {
			if (p->intent_busy[i] || le32_get(p->intents[i].type))
				continue;
			p->intent_busy[i] = 1;
			*slot = (int)i;
			return 0;
		}
		if (p->broken)
			return vbas_err(-EROFS, "%s", p->broken_msg);
		pool_cond_wait(&p->intent_cond, p);
	}
}

void intent_begin(struct vbas_pool *p, int slot, unsigned type, const uint64_t arg[6])
{
	struct vbas_intent *x = &p->intents[slot];
	memset(x, 0, sizeof(*x));
	x->type = le32_mk(type);
	x->gen = le64_mk(p->env.txid);
	for (int k = 0; k < 6; k++)
		x->arg[k] = le64_mk(arg[k]);
}

int intent_take(struct vbas_pool *p, unsigned type, const uint64_t arg[6], int *slot)
{
	int r = intent_reserve(p, slot);
	if (!r)
		intent_begin(p, *slot, type, arg);
	return r;
}

void intent_set(struct vbas_pool *p, int slot, unsigned idx, uint64_t val)
{
	p->intents[slot].arg[idx] = le64_mk(val);
	p->dirty = 1;
}

void intent_drop(struct vbas_pool *p, int slot)
{
	/* Written by the next commit, with the last batch. */
	if (le32_get(p->intents[slot].type))
		p->dirty = 1;
	memset(&p->intents[slot], 0, sizeof(p->intents[slot]));
	p->intent_busy[slot] = 0;
	pthread_cond_broadcast(&p->intent_cond);
}

/* The name of volume ID, or NULL if it is gone (or being deleted). */
static int vol_name(struct vbas_pool *p, uint64_t id, char *name)
{
	struct vbas_vol_rec rec;
	int r = vol_get(p, id, &rec);
	if (r == -ENOENT) {
		vbas_err_clear();
		return 1;
	}
	if (r)
		return r;
	if (le32_get(rec.flags) & VBAS_VOLF_DELETING)
		return 1;
	unsigned n = le16_get(rec.name_len);
	memcpy(name, rec.name, n);
	name[n] = 0;
	return 0;
}

int intents_replay(struct vbas_pool *p)
{
	int r = 0;
	for (unsigned i = 0; !r && i < VBAS_INTENT_SLOTS; i++) {
		pool_lock(p);
		uint32_t t = le32_get(p->intents[i].type);
		uint64_t a[6];
		for (int k = 0; k < 6; k++)
			a[k] = le64_get(p->intents[i].arg[k]);
		char n1[256], n2[256];
		int gone = 0;
		if (t == VBAS_INTENT_REFLINK) {
			gone = vol_name(p, a[0], n1);
			if (!gone)
				gone = vol_name(p, a[2], n2);
		} else if (t == VBAS_INTENT_UNSHARE) {
			gone = vol_name(p, a[0], n1);
		}
		if (t)
			p->intent_busy[i] = 1;
		pool_unlock(p);
		if (gone < 0)
			return gone;
		if (!t)
			continue;
		if (!gone && t == VBAS_INTENT_REFLINK)
			r = share_resume_reflink(p, (int)i, a);
		else if (!gone)
			r = share_resume_unshare(p, (int)i, n1, a);
		pool_lock(p);
		/* Finished, given up for lack of room (a prefix is done, as an
		 * ENOSPC says to a caller), or its volume is gone. */
		if (r == -ENOSPC) {
			vbas_err_clear();
			r = 0;
		}
		if (!r && le32_get(p->intents[i].type))
			intent_drop(p, (int)i);
		if (!r)
			r = txn_commit(p);
		pool_unlock(p);
		if (r)
			return vbas_err_ctx(r, "finishing the %s the last commit began",
					    t == VBAS_INTENT_REFLINK ? "reflink" : "unshare");
	}
	return r;
}
