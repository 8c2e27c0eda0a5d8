/* Reads, writes, discards and zeroing built on the mapping interface. */
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

int vbas_pread(struct vbas_vol *vol, void *buf, size_t len, uint64_t off)
{
	struct vbas_iomap m;
	char *b = buf;
	int r;
	vbas_err_clear();
	if (!buf && len)
		return vbas_err(-EINVAL, "read: no buffer");
	while (len) {
		r = map_begin(vol, off, len, VBAS_MAP_READ, NULL, &m);
		if (r)
			return r;
		if (m.type == VBAS_IOMAP_HOLE) {
			memset(b, 0, m.length);
		} else {
			r = dev_pread(vol->pool->dev, b, m.length, m.physical);
			if (r)
				vbas_err(r, "read of %" PRIu64 " bytes at volume offset %" PRIu64
					 " (device offset %" PRIu64 ") failed", m.length, off, m.physical);
		}
		vbas_map_end(vol, &m, r ? 0 : m.length, r);
		if (r)
			return r;
		b += m.length;
		off += m.length;
		len -= m.length;
	}
	return 0;
}

/* Blocks of [lblk, lblk+n) a write needs new blocks for: holes, and
 * shared blocks (copy on write). */
static int count_needed(struct vbas_vol *vol, uint64_t lblk, uint64_t n, uint64_t *needed,
			uint64_t *meta)
{
	struct vbas_pool *p = vol->pool;
	struct vbas_vol_rec rec;
	struct vbas_btree t;
	struct map_census c = { 0 };
	int r;
	pool_lock(p);
	r = vol_get(p, vol->id, &rec);
	if (!r && (le32_get(rec.flags) & VBAS_VOLF_READONLY))
		r = vbas_err(-EROFS, "write: the volume is read-only (a snapshot, or set read-only)");
	/* Blocks freed earlier come back first if room is short: the write
	 * itself does not commit between its steps. */
	if (!r)
		r = txn_maybe_commit(p);
	if (!r) {
		vol_map_tree(p, vol->id, &rec, &t);
		r = map_census(p, &t, le64_get(rec.share_gen), lblk, n, &c);
	}
	/* Each run that needs blocks is one change of the trees.  The
	 * reservation holds room for that metadata too: it is not drawn from
	 * the reservation, but keeps other writers from taking it. */
	/* (Copies of reserved blocks take the volume's owed blocks, and the
	 * metadata those hold, not the write's.) */
	uint64_t runs;
	map_census_needs(&c, le64_get(rec.owed), needed, &runs);
	*meta = !r && runs && *needed ?
		space_write_meta(p, &t, runs, *needed, c.cow.recs) : 0;
	pool_unlock(p);
	return r;
}

/* Write the new blocks of M: the client's bytes, and around them zeros
 * (a hole) or the old contents (copy on write of shared blocks). */
static int write_new(struct vbas_vol *vol, struct vbas_iomap *m, const char *src)
{
	struct vbas_pool *p = vol->pool;
	const struct map_priv *mp = map_priv(m);
	uint64_t inblk = m->offset - (mp->blk << p->bshift);
	uint64_t total = mp->nblk << p->bshift;
	uint64_t base = mp->pblk << p->bshift;
	int r = 0;
	if (inblk == 0 && m->length == total)
		return dev_pwrite(p->dev, src, m->length, base);
	void *b;
	if (posix_memalign(&b, 4096, total))
		return -ENOMEM;
	uint64_t tail = inblk + m->length;
	if (m->flags & VBAS_IOMAP_F_SHARED) {
		uint64_t old = m->cow_physical - inblk;
		if (inblk)
			r = dev_pread(p->dev, b, p->bs, old);
		if (!r && tail < total) {
			uint64_t ls = (tail >> p->bshift) << p->bshift;
			r = dev_pread(p->dev, (char *)b + ls, p->bs, old + ls);
		}
	} else {
		memset(b, 0, inblk);
		memset((char *)b + tail, 0, total - tail);
	}
	memcpy((char *)b + inblk, src, m->length);
	if (!r)
		r = dev_pwrite(p->dev, b, total, base);
	free(b);
	return r;
}

int vbas_pwrite(struct vbas_vol *vol, const void *buf, size_t len, uint64_t off, unsigned flags)
{
	struct vbas_pool *p = vol->pool;
	struct vbas_resv *resv = NULL;
	struct vbas_iomap m;
	const char *b = buf;
	uint64_t needed = 0;
	int r;

	vbas_err_clear();
	if (flags & ~VBAS_IO_FUA)
		return vbas_err(-EINVAL, "write: unknown flags %#x", flags);
	if (!buf && len)
		return vbas_err(-EINVAL, "write: no buffer");
	if (!len)
		return 0;
	if (off + len < off)
		return vbas_err(-ERANGE, "write: range overflows");
	/* All or nothing in space: claim every block the write needs. */
	uint64_t lblk = off >> p->bshift;
	uint64_t nblk = ((off + len + p->bs - 1) >> p->bshift) - lblk;
	uint64_t meta = 0;
	/* Count, reserve and write under one range lock, so that nothing
	 * (a racing discard) opens a hole the reservation does not cover. */
	pool_lock(p);
	r = rl_lock(p, vol->vs, lblk, nblk, 1);
	pool_unlock(p);
	if (r)
		return r;
	r = count_needed(vol, lblk, nblk, &needed, &meta);
	if (!r && needed) {
		r = resv_new(p, needed, meta, &resv);
		if (r)
			vbas_err_ctx(r, "write of %zu bytes at offset %" PRIu64, len, off);
	}
	while (!r && len) {
		r = map_begin(vol, off, len, VBAS_MAP_WRITE | VBAS_MAP_LOCKED | VBAS_MAP_METAHELD |
				   VBAS_MAP_SPAN, resv, &m);
		if (r)
			break;
		if (m.type == VBAS_IOMAP_NEW)
			r = write_new(vol, &m, b);
		else
			r = dev_pwrite(p->dev, b, m.length, m.physical);
		if (r)
			vbas_err(r, "write of %" PRIu64 " bytes at volume offset %" PRIu64
				 " (device offset %" PRIu64 ") failed", m.length, off, m.physical);
		int e = vbas_map_end(vol, &m, r ? 0 : m.length, r);
		if (!r)
			r = e;
		if (r)
			break;
		b += m.length;
		off += m.length;
		len -= m.length;
	}
	vbas_resv_put(resv);
	pool_lock(p);
	rl_unlock(p, vol->vs, lblk, nblk, 1);
	if (!r)
		r = txn_maybe_commit(p);
	pool_unlock(p);
	if (!r && (flags & VBAS_IO_FUA))
		r = vbas_flush(p);
	return r;
}

/* Zero the reserved blocks of [lblk, lblk+n) of VOL, whose range lock
 * the caller holds, as the pool lock: a discard keeps them.  One the
 * volume alone maps is zeroed in place; a shared one is copied (with the
 * volume's owed blocks) into a block zeroed instead. */
static int zero_reserved(struct vbas_vol *vol, uint64_t lblk, uint64_t n)
{
	struct vbas_pool *p = vol->pool;
	uint64_t cur = lblk, end = lblk + n;
	int r = 0;
	while (!r && cur < end) {
		struct vbas_vol_rec rec;
		struct vbas_btree t;
		uint64_t pb, run;
		int m, sh;
		uint32_t f;
		r = vol_get(p, vol->id, &rec);
		if (r)
			break;
		vol_map_tree(p, vol->id, &rec, &t);
		r = map_lookup_shared_f(p, &t, le64_get(rec.share_gen), cur, &pb, &run, &m, &sh,
					NULL, 1, &f);
		if (r || (!m && run == UINT64_MAX))
			break;
		uint64_t take = run < end - cur ? run : end - cur;
		if (m && (f & VBAS_MAPF_RESERVED)) {
			pool_unlock(p);
			if (!sh) {
				r = dev_zero(p->dev, pb << p->bshift, take << p->bshift);
			} else {
				struct vbas_iomap im;
				r = map_begin(vol, cur << p->bshift, take << p->bshift,
					      VBAS_MAP_WRITE | VBAS_MAP_LOCKED, NULL, &im);
				if (!r) {
					int z = dev_zero(p->dev, im.physical, im.length);
					r = vbas_map_end(vol, &im, z ? 0 : im.length, z);
					if (!r)
						r = z;
					take = im.length >> p->bshift;
				}
			}
			pool_lock(p);
			if (r) {
				vbas_err_ctx(r, "zeroing the reserved blocks at offset %" PRIu64,
					     cur << p->bshift);
				break;
			}
		}
		cur += take;
	}
	return r;
}

int vbas_discard(struct vbas_vol *vol, uint64_t off, uint64_t len, unsigned flags)
{
	struct vbas_pool *p = vol->pool;
	struct vbas_vol_rec rec;
	int r;

	vbas_err_clear();
	if (flags & ~VBAS_IO_FUA)
		return vbas_err(-EINVAL, "discard: unknown flags %#x", flags);
	if ((off | len) & (p->bs - 1))
		return vbas_err(-EINVAL, "discard: range %" PRIu64 "+%" PRIu64 " is not aligned to "
				"the block size (%u)", off, len, p->bs);
	if (!len)
		return 0;
	pool_lock(p);
	r = txn_writable(p, "discard");
	if (!r)
		r = vol_get(p, vol->id, &rec);
	if (!r && (le32_get(rec.flags) & VBAS_VOLF_READONLY))
		r = vbas_err(-EROFS, "discard: the volume is read-only (a snapshot, or set read-only)");
	if (!r && (off >= le64_get(rec.size) || len > le64_get(rec.size) - off))
		r = vbas_err(-ERANGE, "discard: range %" PRIu64 "+%" PRIu64 " is past the end of "
			     "the volume (%" PRIu64 " bytes)", off, len, le64_get(rec.size));
	if (r)
		goto out;
	uint64_t lblk = off >> p->bshift, n = len >> p->bshift;
	r = rl_lock(p, vol->vs, lblk, n, 1);
	if (r)
		goto out;
	uint64_t stopped = UINT64_MAX;
	r = vol_get(p, vol->id, &rec);
	if (!r)
		r = map_unmap(p, vol->id, &rec, lblk, n, "discard", &stopped, MAP_KEEP_RESERVED);
	if (r == -ENOSPC && stopped != UINT64_MAX) {
		/* No room for the next step's metadata (a discard under a
		 * snapshot copies mapping leaves and frees nothing): stopped
		 * before it, every step before it done, the pool writable. */
		if (stopped > lblk)
			vbas_err_ctx(r, "discard of %" PRIu64 "+%" PRIu64 " stopped at offset %" PRIu64
				     " (what lies before it is discarded)", off, len,
				     stopped << p->bshift);
		else
			vbas_err_ctx(r, "discard of %" PRIu64 "+%" PRIu64, off, len);
	} else if (r) {
		txn_fail(p, r);
	} else {
		/* (A failure here changed no metadata, or failed the
		 * transaction itself, in vbas_map_end.)  A volume without
		 * reserved blocks needs no second walk. */
		if (le64_get(rec.resv_blocks))
			r = zero_reserved(vol, lblk, n);
	}
	rl_unlock(p, vol->vs, lblk, n, 1);
out:
	pool_unlock(p);
	if (!r && (flags & VBAS_IO_FUA))
		r = vbas_flush(p);
	return r;
}

/* Zero part of one block, in place if it is mapped; a hole reads as zeros
 * already. */
static int zero_partial(struct vbas_vol *vol, uint64_t off, uint64_t len)
{
	static const char zeros[VBAS_BLOCK_SIZE_MAX / 256];
	struct vbas_iomap m;
	int r = map_begin(vol, off, len, VBAS_MAP_READ, NULL, &m);
	if (r)
		return r;
	int mapped = m.type == VBAS_IOMAP_MAPPED;
	vbas_map_end(vol, &m, 0, 0);
	while (mapped && len) {
		size_t n = len < sizeof(zeros) ? len : sizeof(zeros);
		r = vbas_pwrite(vol, zeros, n, off, 0);
		if (r)
			return r;
		off += n;
		len -= n;
	}
	return 0;
}

int vbas_write_zeroes(struct vbas_vol *vol, uint64_t off, uint64_t len, unsigned flags)
{
	struct vbas_pool *p = vol->pool;
	struct vbas_vol_info info;
	int r;

	vbas_err_clear();
	if (flags & ~(VBAS_IO_FUA | VBAS_IO_NO_PUNCH))
		return vbas_err(-EINVAL, "write zeroes: unknown flags %#x", flags);
	if (!len)
		return 0;
	r = vbas_vol_info(vol, &info);
	if (r)
		return r;
	if (info.flags & VBAS_VOL_READONLY)
		return vbas_err(-EROFS, "write zeroes: the volume is read-only (a snapshot, or set read-only)");
	if (off >= info.size || len > info.size - off)
		return vbas_err(-ERANGE, "write zeroes: range %" PRIu64 "+%" PRIu64 " is past the end "
				"of the volume (%" PRIu64 " bytes)", off, len, info.size);
	uint64_t bs = p->bs, end = off + len;
	uint64_t as = (off + bs - 1) / bs * bs, ae = end / bs * bs;
	/* Allocate: the range becomes reserved (whole blocks), so that later
	 * writes there cannot fail for want of space, as after fallocate's
	 * ZERO_RANGE; then it is zeroed like any reserved range. */
	if ((flags & VBAS_IO_NO_PUNCH) && (r = vbas_vol_reserve(vol, off, len)))
		return r;
	if (as >= ae) {                       /* within one or two blocks */
		uint64_t mid = as < end ? as : end;
		if (mid > off)
			r = zero_partial(vol, off, mid - off);
		if (!r && mid < end)
			r = zero_partial(vol, mid, end - mid);
		goto done;
	}
	if (off < as)
		r = zero_partial(vol, off, as - off);
	if (!r && ae < end)
		r = zero_partial(vol, ae, end - ae);
	if (r)
		return r;
	/* (Reserved blocks are zeroed and kept; the rest are unmapped.) */
	r = vbas_discard(vol, as, ae - as, 0);
done:
	if (!r && (flags & VBAS_IO_FUA))
		r = vbas_flush(p);
	return r;
}

int vbas_extents(struct vbas_vol *vol, uint64_t off, uint64_t len,
		 int (*cb)(const struct vbas_extent *, void *), void *arg)
{
	struct vbas_pool *p = vol->pool;
	struct vbas_extent batch[256];
	uint64_t end = off + len < off ? UINT64_MAX : off + len;
	int r = 0;

	vbas_err_clear();
	while (off < end) {
		unsigned n = 0;
		struct vbas_vol_rec rec;
		struct vbas_btree t;
		pool_lock(p);
		r = vol_get(p, vol->id, &rec);
		if (!r) {
			vol_map_tree(p, vol->id, &rec, &t);
			if (end > le64_get(rec.size))
				end = le64_get(rec.size);
		}
		uint64_t cur = off >> p->bshift;
		while (!r && n < 256 && (cur << p->bshift) < end) {
			uint64_t pb, run;
			int m, sh;
			uint32_t f;
			r = map_lookup_shared_f(p, &t, le64_get(rec.share_gen), cur, &pb, &run, &m,
						&sh, NULL, 0, &f);
			if (r)
				break;
			uint64_t s = cur << p->bshift, e;
			if (run >= (UINT64_MAX >> p->bshift) || s + (run << p->bshift) > end)
				e = end;
			else
				e = s + (run << p->bshift);
			if (m) {
				uint64_t cs = s < off ? off : s;
				memset(&batch[n], 0, sizeof(batch[n]));
				batch[n].offset = cs;
				batch[n].length = e - cs;
				batch[n].physical = (pb << p->bshift) + (cs - s);
				batch[n].flags = (sh ? VBAS_EXTENT_SHARED : 0) |
						 ((f & VBAS_MAPF_RESERVED) ? VBAS_EXTENT_RESERVED : 0);
				n++;
			}
			off = e;
			cur = (e + p->bs - 1) >> p->bshift;
		}
		pool_unlock(p);
		for (unsigned i = 0; !r && i < n; i++)
			r = cb(&batch[i], arg);
		if (r || !n)
			break;
	}
	return r;
}
