/* Transactions: shadowing (btree.c) plus the commit that makes a new tree
 * generation durable at once.
 *
 * State and invariants:
 *  T1. The pool has two superblock slots; the commit of generation G is
 *      written to slot G % 2, so the previous commit stays intact while the
 *      next is written.  Open takes the valid slot with the highest
 *      generation; a torn or corrupt newest slot falls back to the other.
 *  T2. Commit order: write every dirty node; flush; write the superblock;
 *      flush.  Nothing the new superblock points to can be missing from
 *      the device once the superblock is there.  Data written before the
 *      commit started is covered by the first flush.
 *  T3. Every block the running transaction writes is one the last commit
 *      does not use (space.c S3), so a crash before the superblock write
 *      leaves the last commit as it was.
 *  T4. Everything that can fail (tree changes, allocation) happens before
 *      the superblock is written; a failure after a change has begun and
 *      before the commit abandons the transaction and latches the pool
 *      read-only (txn_fail), like a crash followed by a read-only mount.
 *
 *      running txn G+1 ----commit----> writeback -> flush -> sb[G+1 % 2] -> flush
 *      crash anywhere before the last flush completes: open finds G or G+1.
 */
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint32_t sb_csum(const struct vbas_sb *sb)
{
	uint8_t buf[VBAS_SB_BYTES];
	memset(buf, 0, sizeof(buf));
	memcpy(buf, sb, sizeof(*sb));
	return vbas_crc32c(VBAS_SALT_SB, buf + 4, VBAS_SB_BYTES - 4);
}

/* Why a superblock copy is not valid, or NULL if it is. */
static const char *sb_invalid(const struct vbas_sb *sb, uint64_t slot, uint64_t dev_size)
{
	uint32_t bs = le32_get(sb->block_size);
	if (le32_get(sb->magic) != VBAS_SB_MAGIC)
		return "bad magic";
	if (le32_get(sb->csum) != sb_csum(sb))
		return "checksum mismatch";
	if (le64_get(sb->blkno) != slot)
		return "written to the wrong slot";
	if (le32_get(sb->version) < VBAS_FORMAT_VERSION_MIN ||
	    le32_get(sb->version) > VBAS_FORMAT_VERSION)
		return "unsupported format version";
	if (bs < VBAS_BLOCK_SIZE_MIN || bs > VBAS_BLOCK_SIZE_MAX || (bs & (bs - 1)))
		return "bad block size";
	if (le64_get(sb->generation) % VBAS_SB_SLOTS != slot)
		return "generation does not match the slot";
	if (le64_get(sb->nblocks) < VBAS_FIRST_BLOCK + 16 ||
	    le64_get(sb->nblocks) > dev_size / bs)
		return "pool is larger than its device";
	if (le32_get(sb->flags) & ~VBAS_SBF_KNOWN)
		return "unknown feature flags";
	int rmap = !!(le32_get(sb->flags) & VBAS_SBF_RMAP);
	if (rmap && le32_get(sb->version) < VBAS_FORMAT_VERSION)
		return "a reverse map in a format older than 5";
	if (!rmap && (le64_get(sb->rmap_root) || le64_get(sb->rmap_root_txid)))
		return "a reverse map root without the reverse map";
	if (!(le32_get(sb->flags) & VBAS_SBF_NAMES) &&
	    (le64_get(sb->names_root) || le64_get(sb->names_root_txid)))
		return "a name index root without the name index";
	if (le16_get(sb->low_water) > 1000 || le16_get(sb->exp_floor) > 1000)
		return "bad space settings";
	int shrink = !!(le32_get(sb->flags) & VBAS_SBF_SHRINK);
	if (shrink && (le64_get(sb->shrink_to) < VBAS_FIRST_BLOCK + 64 ||
		       le64_get(sb->shrink_to) >= le64_get(sb->nblocks)))
		return "a shrink's target outside the pool";
	if (!shrink && le64_get(sb->shrink_to))
		return "a shrink's target without a shrink";
	uint32_t fan = le32_get(sb->max_fanout);
	if (fan && (fan < 4 || fan > 65535))
		return "bad max_fanout";
	uint64_t nb = le64_get(sb->nblocks), gen = le64_get(sb->generation);
	uint64_t roots[4] = { le64_get(sb->voltab_root), le64_get(sb->refc_root),
			      le64_get(sb->rmap_root), le64_get(sb->names_root) };
	uint64_t txids[4] = { le64_get(sb->voltab_root_txid), le64_get(sb->refc_root_txid),
			      le64_get(sb->rmap_root_txid), le64_get(sb->names_root_txid) };
	for (int i = 0; i < 4; i++) {
		if (roots[i] && (roots[i] < VBAS_FIRST_BLOCK || roots[i] >= nb))
			return "tree root outside the pool";
		if (!roots[i] != !txids[i] || txids[i] > gen)
			return "tree root of a bad transaction";
	}
	if (le64_get(sb->data_used) > nb || le64_get(sb->meta_used) > nb - le64_get(sb->data_used))
		return "more blocks used than the pool holds";
	if (le64_get(sb->next_vol_id) == 0 || le64_get(sb->next_vol_id) >= VBAS_VOL_ID_LIMIT ||
	    le64_get(sb->nvolumes) >= le64_get(sb->next_vol_id))
		return "bad volume counters";
	return intents_invalid(sb);
}

static int read_slot(struct vbas_dev *dev, uint64_t off, struct vbas_sb *sb)
{
	void *buf;
	int r;
	if (off + 4096 > dev->size)
		return -ERANGE;
	if (posix_memalign(&buf, 4096, 4096))
		return -ENOMEM;
	r = dev_pread(dev, buf, 4096, off);
	if (!r)
		memcpy(sb, buf, sizeof(*sb));
	free(buf);
	return r;
}

int txn_read_sb(struct vbas_dev *dev, struct vbas_sb *out, uint32_t *slot_out)
{
	struct vbas_sb s0, s1;
	const char *why0 = "unreadable", *why1 = "unreadable";
	int r;

	if (dev->size < 2 * VBAS_BLOCK_SIZE_MIN)
		return vbas_err(-EINVAL, "not a vbas pool: too small (%" PRIu64 " bytes)", dev->size);
	r = read_slot(dev, 0, &s0);
	if (r)
		return vbas_err(r, "cannot read superblock 0: %s", strerror(-r));
	why0 = sb_invalid(&s0, 0, dev->size);
	/* Slot 1 sits one block in; without slot 0 try every block size. */
	uint32_t bs = why0 ? VBAS_BLOCK_SIZE_MIN : le32_get(s0.block_size);
	for (; bs <= VBAS_BLOCK_SIZE_MAX; bs *= 2) {
		struct vbas_sb t;
		const char *w;
		if (read_slot(dev, bs, &t))
			break;
		w = sb_invalid(&t, 1, dev->size);
		if (!w && le32_get(t.block_size) != bs)
			w = "bad block size";
		/* Keep the most telling reason: one from a copy with our magic. */
		if (le32_get(t.magic) == VBAS_SB_MAGIC || bs == VBAS_BLOCK_SIZE_MIN) {
			why1 = w;
			s1 = t;
		}
		if (!w || !why0)
			break;
	}
	if (!why0 && !why1 && le32_get(s0.block_size) == le32_get(s1.block_size) &&
	    !memcmp(s0.uuid, s1.uuid, 16)) {
		int one = le64_get(s1.generation) > le64_get(s0.generation);
		*out = one ? s1 : s0;
		*slot_out = one;
		return 0;
	}
	if (!why0) {
		*out = s0;
		*slot_out = 0;
		return 0;
	}
	if (!why1) {
		*out = s1;
		*slot_out = 1;
		return 0;
	}
	if (le32_get(s0.magic) != VBAS_SB_MAGIC && le32_get(s1.magic) != VBAS_SB_MAGIC)
		return vbas_err(-EINVAL, "not a vbas pool (no superblock magic)");
	return vbas_err(-EUCLEAN, "no valid superblock: slot 0: %s; slot 1: %s", why0, why1);
}

static int write_sb(struct vbas_pool *p, struct vbas_sb *sb)
{
	void *buf;
	int r;
	if (posix_memalign(&buf, 4096, p->bs))
		return -ENOMEM;
	memset(buf, 0, p->bs);
	sb->csum = le32_mk(sb_csum(sb));
	memcpy(buf, sb, sizeof(*sb));
	r = dev_pwrite(p->dev, buf, p->bs, le64_get(sb->blkno) * p->bs);
	free(buf);
	return r;
}

void txn_fail(struct vbas_pool *p, int err)
{
	/* A commit in flight first: if it lands, that is where we go back to. */
	txn_wait_io(p);
	if (p->broken)
		return;
	snprintf(p->broken_msg, sizeof(p->broken_msg), "a change failed (%s: %s); "
		 "the pool went back to its last commit (generation %" PRIu64 ") and is "
		 "read-only until reopened", strerror(err < 0 ? -err : err), vbas_errmsg(), p->gen);
	p->broken = 1;
	cache_drop_all(p->cache);
	space_abort(p);
	p->voltab.root = le64_get(p->sb.voltab_root);
	p->voltab.root_txid = le64_get(p->sb.voltab_root_txid);
	p->voltab_gen++;
	names_init(p);
	p->next_vol_id = le64_get(p->sb.next_vol_id);
	p->nvolumes = le64_get(p->sb.nvolumes);
	p->nblocks = p->env.nblocks = le64_get(p->sb.nblocks);
	p->low_water = le16_get(p->sb.low_water);
	p->exp_floor = le16_get(p->sb.exp_floor);
	memcpy(p->intents, p->sb.intents, sizeof(p->intents));
	p->env.txid = p->gen + 1;
	p->dirty = 0;
}

int txn_writable(struct vbas_pool *p, const char *what)
{
	if (p->rdonly)
		return vbas_err(-EROFS, "%s: the pool is open read-only", what);
	if (p->broken)
		return vbas_err(-EROFS, "%s: %s", what, p->broken_msg);
	if (p->repair_mode)
		return vbas_err(-EROFS, "%s: the pool is open for repair: nothing but the repair "
				"may change it", what);
	return 0;
}

/* ---- Commits in flight -------------------------------------------------
 *
 * A commit is three steps.  SEAL (pool lock): drain the space map, build
 * the superblock, write every dirty node, hand the transaction's freed and
 * touched sets to the commit (space_seal) and start the next transaction
 * (env.txid = G+2).  I/O (no lock): flush, superblock, flush.  FINISH
 * (pool lock): the superblock is durable: P->SB and P->GEN move on and the
 * blocks the commit freed come back (space_committed).
 *
 * While the I/O waits for the device, readers and writers go on in
 * transaction G+2, and T3 holds for it against G and G+1 alike: it hands
 * out no block in FREED or FREED_PREV (S2), shadows every node G+1 wrote
 * (their txid is below its own), and overwrites in place no data block
 * whose count changed in G+1 or G+2.  A crash during the I/O finds G or
 * G+1, and neither lost a block.
 *
 * One commit at a time: a seal waits until the commit in flight finished,
 * so the superblock slot of G+2 (G's) is written only once G+1 is
 * durable.  The I/O never takes the pool lock, so a holder of the pool
 * lock can wait for it (txn_wait_io) without giving the lock up: the code
 * that commits in the middle of a change (txn_commit) does that, and sees
 * nobody else's change meanwhile.
 *
 * Group commit (txn_flush): a flush needs the commit sealed after its call
 * if it finds changes or data written since the last seal, else the one in
 * flight, if any.  Flushes that arrive while a commit is in flight wait for
 * it; then one of them commits for all of them.
 */

/* 1: a commit is sealed (P->CM), 0: nothing to commit, or an error (the
 * pool went back to its last commit, read-only). */
static int txn_seal(struct vbas_pool *p)
{
	struct vbas_sb sb;
	int r;

	if (!p->dirty) {
		/* Nothing new in metadata; data written in place still needs
		 * to reach stable storage.  With no data written either since
		 * the last seal, there is nothing to wait for: no device flush
		 * at all (a client that flushes often, idle or not, costs
		 * nothing). */
		if (!p->data_dirty)
			return 0;
		p->data_dirty = 0;
		p->cm.meta = 0;
		goto sealed;
	}
	p->data_dirty = 0;            /* the commit's flushes carry it */
	r = space_drain(p);
	if (r)
		goto fail;
	sb = p->sb;
	sb.generation = le64_mk(p->gen + 1);
	sb.blkno = le64_mk((p->gen + 1) % VBAS_SB_SLOTS);
	sb.voltab_root = le64_mk(p->voltab.root);
	sb.refc_root = le64_mk(p->sp.refc.root);
	sb.voltab_root_txid = le64_mk(p->voltab.root_txid);
	sb.refc_root_txid = le64_mk(p->sp.refc.root_txid);
	sb.flags = le32_mk((le32_get(sb.flags) & ~VBAS_SBF_NAMES) |
			   (p->names_on ? VBAS_SBF_NAMES : 0));
	sb.names_root = le64_mk(p->names_on ? p->names.root : 0);
	sb.names_root_txid = le64_mk(p->names_on ? p->names.root_txid : 0);
	if (p->sp.rmap_on) {
		sb.flags = le32_mk(le32_get(sb.flags) | VBAS_SBF_RMAP);
		sb.version = le32_mk(VBAS_FORMAT_VERSION);
		sb.rmap_root = le64_mk(p->sp.rmap.root);
		sb.rmap_root_txid = le64_mk(p->sp.rmap.root_txid);
	}
	sb.data_used = le64_mk(p->sp.data_used);
	sb.meta_used = le64_mk(p->sp.meta_used);
	sb.next_vol_id = le64_mk(p->next_vol_id);
	sb.nvolumes = le64_mk(p->nvolumes);
	sb.nblocks = le64_mk(p->nblocks);
	int intents = 0;
	for (unsigned i = 0; i < VBAS_INTENT_SLOTS; i++) {
		sb.intents[i] = p->intents[i];
		intents |= !!le32_get(p->intents[i].type);
	}
	sb.flags = le32_mk((le32_get(sb.flags) & ~(VBAS_SBF_SHRINK | VBAS_SBF_INTENTS)) |
			   (p->sp.limit ? VBAS_SBF_SHRINK : 0) | (intents ? VBAS_SBF_INTENTS : 0));
	sb.shrink_to = le64_mk(p->sp.limit);
	sb.low_water = le16_mk((uint16_t)p->low_water);
	sb.exp_floor = le16_mk((uint16_t)p->exp_floor);
	r = space_precommit(p);
	if (r) {
		vbas_err(r, "commit: no memory to keep the blocks a pin holds");
		goto fail;
	}
	r = cache_writeback(p->cache);
	if (r)
		goto fail;
	space_seal(p);
	p->cm.sb = sb;
	p->cm.meta = 1;
	p->env.txid = p->gen + 2;
	p->dirty = 0;
sealed:
	p->cm.active = 1;
	p->cm.io_done = 0;
	p->cm.err = 0;
	p->cm.msg[0] = 0;
	p->cm.seq = ++p->seq_sealed;
	return 1;
fail:
	txn_fail(p, r);
	return r;
}

/* The device work of the sealed commit.  Takes no pool lock: nothing it
 * reads changes before txn_finish. */
static void txn_io(struct vbas_pool *p)
{
	const char *what = p->cm.meta ? "flush before the superblock" : "flush";
	int r = dev_flush(p->dev);
	if (!r && p->cm.meta) {
		if (vbas_tun.early_punch)
			space_punch_freed(p);   /* wrong on purpose, for the tests */
		what = "superblock write";
		r = write_sb(p, &p->cm.sb);
		if (!r) {
			what = "flush after the superblock";
			r = dev_flush(p->dev);
		}
	}
	if (r)
		snprintf(p->cm.msg, sizeof(p->cm.msg), "%s: %s", what, strerror(-r));
	pthread_mutex_lock(&p->cm_lock);
	p->cm.err = r;
	p->cm.io_done = 1;
	pthread_cond_broadcast(&p->cm_io_cv);
	pthread_mutex_unlock(&p->cm_lock);
}

/* Pool lock held, the I/O done: the commit takes effect, or its failure
 * does (a failed superblock commit makes the pool read-only; a failed
 * data flush leaves the data to the next flush). */
static void txn_finish(struct vbas_pool *p)
{
	int r = p->cm.err;
	p->cm.active = 0;
	if (r) {
		p->seq_failed = p->cm.seq;
		p->err_failed = r;
		vbas_err(r, "%s", p->cm.msg);
		if (p->cm.meta)
			txn_fail(p, r);
		else
			p->data_dirty = 1;
	} else if (p->cm.meta) {
		p->sb = p->cm.sb;
		p->gen++;
		p->commits++;
		space_committed(p);
	}
	p->seq_done = p->cm.seq;
	pthread_cond_broadcast(&p->cm_done_cv);
}

void txn_wait_io(struct vbas_pool *p)
{
	if (!p->cm.active)
		return;
	/* Readers go on meanwhile: nothing changes the trees (LOCK is kept). */
	pthread_rwlock_unlock(&p->tree_lock);
	pthread_mutex_lock(&p->cm_lock);
	while (!p->cm.io_done)
		pthread_cond_wait(&p->cm_io_cv, &p->cm_lock);
	pthread_mutex_unlock(&p->cm_lock);
	pthread_rwlock_wrlock(&p->tree_lock);
	txn_finish(p);
}

/* The error of commit SEQ, or 0. */
static int seq_err(struct vbas_pool *p, uint64_t seq)
{
	if (!p->seq_failed || p->seq_failed < seq)
		return 0;
	if (p->broken)
		return vbas_err(p->err_failed, "commit: %s", p->broken_msg);
	return vbas_err(p->err_failed, "flush: the device flush failed (%s); the data "
			"written since the last flush is not known to be durable",
			strerror(-p->err_failed));
}

int txn_commit(struct vbas_pool *p)
{
	txn_wait_io(p);
	if (p->rdonly)
		return 0;
	if (p->broken)
		return vbas_err(-EROFS, "commit: %s", p->broken_msg);
	int r = txn_seal(p);
	if (r <= 0)
		return r;
	uint64_t seq = p->cm.seq;
	txn_io(p);
	txn_finish(p);
	return p->seq_failed == seq ? p->err_failed : 0;
}

int txn_flush(struct vbas_pool *p)
{
	int r = 0;
	pool_lock(p);
	if (p->rdonly)
		goto out;
	if (p->broken) {
		r = vbas_err(-EROFS, "commit: %s", p->broken_msg);
		goto out;
	}
	uint64_t target = p->seq_sealed + !!(p->dirty || p->data_dirty);
	while (p->seq_done < target) {
		if (p->cm.active) {
			pool_cond_wait(&p->cm_done_cv, p);
			continue;
		}
		if (p->broken)
			break;
		r = txn_seal(p);
		if (r <= 0)
			goto out;
		uint64_t seq = p->cm.seq;
		pool_unlock(p);
		txn_io(p);
		pool_lock(p);
		if (p->cm.active && p->cm.seq == seq)
			txn_finish(p);
	}
	r = target ? seq_err(p, target) : 0;
	if (!r && p->broken)
		r = vbas_err(-EROFS, "commit: %s", p->broken_msg);
out:
	pool_unlock(p);
	return r;
}

/* Keep a transaction from growing without bound: commit when the blocks
 * it freed (not reusable before a commit), the blocks whose counts it
 * changed (copied on write until the commit) or the metadata it wrote grow
 * large, or when free space runs low and a commit would give some back. */
struct vbas_tunables vbas_tun = {
	.drop_budget = 4096,
	.txn_big_freed = 65536,
	.txn_big_meta = 262144,
	.usage_batch = 4096,
	.shrink_step = 8192,
	.names_hash_mask = ~0ull,
};

int txn_maybe_commit(struct vbas_pool *p)
{
	struct vbas_space *sp = &p->sp;
	ev_space(p);
	if (!p->dirty || p->broken || p->rdonly)
		return 0;
	int big = sp->freed.n > vbas_tun.txn_big_freed ||
		  sp->touched.n > vbas_tun.txn_big_freed ||
		  sp->meta_allocs_txn > vbas_tun.txn_big_meta;
	/* Blocks freed in this transaction come back at its commit: commit
	 * before the next change could find no room for its metadata. */
	int tight = space_freed_total(p) &&
		    space_avail(p) < sp->meta_reserve + sp->reserved + 2 * space_op_meta(p, NULL);
	if (big || tight)
		return txn_commit(p);
	return 0;
}
