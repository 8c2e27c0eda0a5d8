/* For the administrator: the pool's space settings, growing the pool, and
 * the events a server reports (docs/design.md, "Events and growth").
 *
 * Events are edge-triggered: each threshold keeps a state (above or below)
 * and fires when the state changes, so a crossing reports once however
 * many changes happen on its far side.  A threshold clears only 1% of the
 * pool past the point where it fired, so use that hovers at the mark does
 * not report at every write and commit.  Refusals (ENOSPC) report once
 * until room comes back, with the number they stand for. */
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

uint64_t space_available(struct vbas_pool *p)
{
	uint64_t fb = space_free_blocks(p), keep = p->sp.meta_reserve + p->sp.reserved;
	return fb > keep ? fb - keep : 0;
}

/* What the events count as available: free blocks less the metadata
 * reserve and the copies set aside for shared reserved ranges (the owed
 * blocks), which are held for good.  Not the reservations of writes in
 * flight, which come and go with each write (a write holds the bound of
 * its metadata, hundreds of blocks, for a moment), nor cookies: counted,
 * they would make use jump past a mark and back at every write. */
static uint64_t ev_available(struct vbas_pool *p)
{
	struct vbas_resv *ow = p->sp.owed;
	uint64_t fb = space_free_blocks(p);
	uint64_t keep = p->sp.meta_reserve + (ow ? ow->left + ow->meta : 0);
	return fb > keep ? fb - keep : 0;
}

static uint64_t pool_total(const struct vbas_pool *p)
{
	return p->nblocks - VBAS_FIRST_BLOCK;
}

static void ev_fill(struct vbas_pool *p, struct vbas_event *ev, enum vbas_event_type type)
{
	uint64_t total = pool_total(p), avail = ev_available(p);
	memset(ev, 0, sizeof(*ev));
	ev->type = type;
	ev->use = (uint32_t)((total - (avail < total ? avail : total)) * 1000 / total);
	ev->low_water = p->low_water;
	ev->size = p->nblocks * p->bs;
	ev->available = avail * p->bs;
}

static void ev_fire(struct vbas_pool *p, enum vbas_event_type type)
{
	struct vbas_event ev;
	ev_fill(p, &ev, type);
	p->ev_fn(&ev, p->ev_arg);
}

void ev_check(struct vbas_pool *p)
{
	if (!p->ev_fn)
		return;
	uint64_t total = pool_total(p), avail = ev_available(p);
	uint64_t used = total - (avail < total ? avail : total);
	uint64_t hyst = total / 100 ? total / 100 : 1;
	/* In blocks, not permille, so that a mark is met exactly: use at
	 * or above low_water / 1000 of the pool. */
	if (!p->low_water) {
		p->ev_low = 0;
	} else {
		uint64_t mark = (total * p->low_water + 999) / 1000;
		if (!p->ev_low && used >= mark) {
			p->ev_low = 1;
			ev_fire(p, VBAS_EVENT_LOW_WATER);
		} else if (p->ev_low && used + hyst < mark) {
			p->ev_low = 0;
			ev_fire(p, VBAS_EVENT_LOW_WATER_CLEAR);
		}
	}
	uint64_t mr = p->sp.meta_reserve;
	if (!p->ev_meta && avail <= mr) {
		p->ev_meta = 1;
		ev_fire(p, VBAS_EVENT_META_LOW);
	} else if (p->ev_meta && avail > mr + hyst) {
		p->ev_meta = 0;
		ev_fire(p, VBAS_EVENT_META_LOW_CLEAR);
	}
	if (p->ev_enospc_sent && avail > p->ev_enospc_avail)
		p->ev_enospc_sent = 0;
}

void ev_enospc(struct vbas_pool *p, uint64_t need)
{
	if (!p->ev_fn)
		return;
	p->ev_enospc_count++;
	if (p->ev_enospc_sent)
		return;
	struct vbas_event ev;
	ev_fill(p, &ev, VBAS_EVENT_ENOSPC);
	ev.needed = need * p->bs;
	ev.count = p->ev_enospc_count;
	p->ev_enospc_sent = 1;
	p->ev_enospc_avail = ev_available(p);
	p->ev_enospc_count = 0;
	p->ev_fn(&ev, p->ev_arg);
}

void ev_expended(struct vbas_pool *p, const char *name)
{
	if (!p->ev_fn)
		return;
	struct vbas_event ev;
	ev_fill(p, &ev, VBAS_EVENT_EXPENDED);
	snprintf(ev.name, sizeof(ev.name), "%s", name);
	p->ev_fn(&ev, p->ev_arg);
}

void vbas_pool_on_event(struct vbas_pool *p, void (*fn)(const struct vbas_event *, void *),
			void *arg)
{
	pool_lock(p);
	p->ev_fn = fn;
	p->ev_arg = arg;
	p->ev_low = p->ev_meta = p->ev_enospc_sent = 0;
	p->ev_enospc_count = 0;
	ev_space(p);
	pool_unlock(p);
}

void txn_need_v4(struct vbas_pool *p)
{
	if (le32_get(p->sb.version) < VBAS_FORMAT_VERSION_4) {
		txn_wait_io(p);        /* P->SB as its commit leaves it */
		p->sb.version = le32_mk(VBAS_FORMAT_VERSION_4);
		p->dirty = 1;
	}
}

int space_make_room(struct vbas_pool *p, uint64_t need, int *expended)
{
	if (space_room_free(p, SPACE_DATA) < need && space_freed_total(p)) {
		/* Blocks freed in this transaction come back at the commit. */
		int r = txn_commit(p);
		if (r)
			return r;
	}
	uint64_t floor = (pool_total(p) * p->exp_floor + 999) / 1000;
	if (p->may_expend && space_room_free(p, SPACE_DATA) < need + floor) {
		int r = vol_expend(p, need);
		if (r < 0)
			return r;
		if (r > 0 && expended)
			*expended = 1;
	}
	if (space_room_free(p, SPACE_DATA) >= need)
		return 0;
	ev_enospc(p, need);
	return -ENOSPC;
}

int vbas_pool_get(struct vbas_pool *p, struct vbas_pool_settings *s)
{
	vbas_err_clear();
	if (!s)
		return vbas_err(-EINVAL, "settings: no place for them");
	memset(s, 0, sizeof(*s));
	pool_lock(p);
	s->low_water = p->low_water;
	s->expendable_floor = p->exp_floor;
	pool_unlock(p);
	return 0;
}

int vbas_pool_set(struct vbas_pool *p, const struct vbas_pool_settings *s)
{
	vbas_err_clear();
	if (!s)
		return vbas_err(-EINVAL, "settings: none given");
	int r = SPARE_CHECK(s, "vbas_pool_settings");
	if (r)
		return r;
	if (s->low_water > 1000)
		return vbas_err(-EINVAL, "low-water mark of %u permille: at most 1000 (100%%)",
				s->low_water);
	if (s->expendable_floor > 1000)
		return vbas_err(-EINVAL, "expendable floor of %u permille: at most 1000 (100%%)",
				s->expendable_floor);
	pool_lock(p);
	r = txn_writable(p, "settings");
	if (!r && (p->low_water != s->low_water || p->exp_floor != s->expendable_floor)) {
		p->low_water = s->low_water;
		p->exp_floor = s->expendable_floor;
		if (s->low_water || s->expendable_floor)
			txn_need_v4(p);
		p->dirty = 1;
		/* (A commit that fails puts the settings back: txn_fail.) */
		r = txn_commit(p);
		ev_space(p);
	}
	pool_unlock(p);
	return r;
}

int vbas_pool_grow(struct vbas_pool *p, uint64_t size)
{
	vbas_err_clear();
	pool_lock(p);
	int r = txn_writable(p, "grow");
	if (r)
		goto out;
	uint64_t nb = size / p->bs, old = p->nblocks;
	if (nb < old) {
		r = vbas_err(-EINVAL, "grow: %" PRIu64 " bytes is smaller than the pool (%" PRIu64
			     " bytes): a pool only grows", size, old * p->bs);
		goto out;
	}
	if (nb == old)
		goto out;
	/* Addresses are 64-bit block numbers, and the refcount records'
	 * lengths 32-bit: no limit that matters below 2^63 bytes. */
	if (nb > (UINT64_MAX >> 1) / p->bs) {
		r = vbas_err(-EFBIG, "grow: %" PRIu64 " bytes is more than a pool can hold", size);
		goto out;
	}
	if (!p->dev->ops->grow) {
		r = vbas_err(-EOPNOTSUPP, "grow: the %s device cannot grow", p->dev->ops->name);
		goto out;
	}
	/* The device first, made durable with the commit's flushes before
	 * the superblock that names the new size: a crash before it leaves
	 * a larger device under the old pool, which is valid. */
	r = p->dev->ops->grow(p->dev, nb * p->bs);
	if (r == -ENOSPC) {
		r = vbas_err(r, "grow: the device holds %" PRIu64 " bytes, less than %" PRIu64
			     " (grow the device first)", p->dev->size, nb * p->bs);
		goto out;
	}
	if (r) {
		r = vbas_err(r, "grow: extending the device to %" PRIu64 " bytes: %s", nb * p->bs,
			     strerror(-r));
		goto out;
	}
	p->nblocks = nb;
	p->env.nblocks = nb;
	space_size_reserve(p);
	p->dirty = 1;
	/* GROWN first, then what the growth cleared. */
	void (*fn)(const struct vbas_event *, void *) = p->ev_fn;
	p->ev_fn = NULL;
	r = txn_commit(p);
	p->ev_fn = fn;
	if (!r && p->ev_fn) {
		ev_fire(p, VBAS_EVENT_GROWN);
		ev_check(p);
	}
out:
	pool_unlock(p);
	return r;
}
