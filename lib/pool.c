/* Pools: format, open, close, commit, info, reservations. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void make_uuid(uint8_t *u)
{
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, u, 16) : -1;
	if (fd >= 0)
		close(fd);
	if (n != 16) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		uint64_t a = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid();
		for (int i = 0; i < 16; i++) {
			a = a * 6364136223846793005ull + 1442695040888963407ull;
			u[i] = (uint8_t)(a >> 56);
		}
	}
	u[6] = (u[6] & 0x0f) | 0x40;
	u[8] = (u[8] & 0x3f) | 0x80;
}

static int check_format_opts(const struct vbas_format_opts *o, uint32_t *bs)
{
	*bs = o->block_size ? o->block_size : VBAS_BLOCK_SIZE_DEFAULT;
	if (*bs < VBAS_BLOCK_SIZE_MIN || *bs > VBAS_BLOCK_SIZE_MAX || (*bs & (*bs - 1)))
		return vbas_err(-EINVAL, "block size %u: must be a power of two from 4K to 1M", *bs);
	if (o->flags & ~(VBAS_FORMAT_FORCE | VBAS_FORMAT_NO_RMAP))
		return vbas_err(-EINVAL, "unknown format flags %#x", o->flags);
	return SPARE_CHECK(o, "vbas_format_opts");
}

/* A pool of NBLOCKS blocks of BS bytes is big enough to hold one. */
static int check_nblocks(uint32_t bs, uint64_t nblocks)
{
	if (nblocks < VBAS_FIRST_BLOCK + 64)
		return vbas_err(-ENOSPC, "a pool needs at least %u blocks of %u bytes (%" PRIu64
				" KiB); this one would have %" PRIu64, VBAS_FIRST_BLOCK + 64, bs,
				(uint64_t)(VBAS_FIRST_BLOCK + 64) * bs / 1024, nblocks);
	return 0;
}

/* Write an empty pool of NBLOCKS blocks to DEV. */
static int format_dev(struct vbas_dev *dev, uint32_t bs, uint64_t nblocks, uint32_t fanout,
		      uint32_t flags)
{
	struct vbas_sb sb;
	void *buf;

	int r = check_nblocks(bs, nblocks);
	if (r)
		return r;
	memset(&sb, 0, sizeof(sb));
	sb.magic = le32_mk(VBAS_SB_MAGIC);
	sb.blkno = le64_mk(0);
	sb.generation = le64_mk(0);
	make_uuid(sb.uuid);
	sb.version = le32_mk(VBAS_FORMAT_VERSION);
	sb.block_size = le32_mk(bs);
	sb.nblocks = le64_mk(nblocks);
	sb.max_fanout = le32_mk(fanout);
	sb.flags = le32_mk((flags & VBAS_FORMAT_NO_RMAP ? 0 : VBAS_SBF_RMAP) | VBAS_SBF_NAMES);
	sb.next_vol_id = le64_mk(1);
	sb.ctime = le64_mk((uint64_t)time(NULL));
	sb.csum = le32_mk(sb_csum(&sb));
	if (posix_memalign(&buf, 4096, 2 * (size_t)bs))
		return -ENOMEM;
	memset(buf, 0, 2 * (size_t)bs);
	memcpy(buf, &sb, sizeof(sb));
	/* Both slots at once: slot 1 must not keep an old pool's superblock. */
	r = dev_pwrite(dev, buf, 2 * (size_t)bs, 0);
	if (!r)
		r = dev_flush(dev);
	free(buf);
	if (r)
		return vbas_err(r, "writing the superblocks: %s", strerror(-r));
	return 0;
}

int vbas_format_dev(struct vbas_dev *dev, const struct vbas_format_opts *o, uint32_t max_fanout)
{
	uint32_t bs, slot;
	struct vbas_sb old;
	int r;
	vbas_err_clear();
	r = check_format_opts(o, &bs);
	if (r)
		return r;
	if (max_fanout && (max_fanout < 4 || max_fanout > 65535))
		return vbas_err(-EINVAL, "max fanout %u: must be 0 or 4..65535", max_fanout);
	if (!(o->flags & VBAS_FORMAT_FORCE) && txn_read_sb(dev, &old, &slot) == 0)
		return vbas_err(-EEXIST, "the device already holds a vbas pool");
	uint64_t size = o->size ? o->size : dev->size;
	if (size > dev->size)
		return vbas_err(-ENOSPC, "size %" PRIu64 " is larger than the device (%" PRIu64 ")",
				size, dev->size);
	return format_dev(dev, bs, size / bs, max_fanout, o->flags);
}

int vbas_format(const char *path, const struct vbas_format_opts *o)
{
	struct vbas_dev *dev;
	struct vbas_sb old;
	uint32_t bs, slot;
	struct stat st;
	int r;

	vbas_err_clear();
	if (!path || !o)
		return vbas_err(-EINVAL, "format: no path or options");
	r = check_format_opts(o, &bs);
	if (r)
		return r;
	int exists = stat(path, &st) == 0;
	if (exists && !S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
		return vbas_err(-EINVAL, "%s is neither a regular file nor a block device", path);
	if (!exists && !o->size)
		return vbas_err(-EINVAL, "%s does not exist: give a size to create it", path);
	if (o->size > (uint64_t)INT64_MAX)
		return vbas_err(-EFBIG, "size %" PRIu64 " is larger than a file can be", o->size);
	/* Everything is checked before a byte of PATH changes: a format that
	 * fails leaves it as it was (a file it created is removed). */
	if (o->size) {
		r = check_nblocks(bs, o->size / bs);
		if (r)
			return r;
	}
	r = vbas_dev_open_file(path, VBAS_DEV_CREATE, &dev);
	if (r)
		return r;
	if (!(o->flags & VBAS_FORMAT_FORCE) && dev->size && txn_read_sb(dev, &old, &slot) == 0) {
		r = vbas_err(-EEXIST, "%s already holds a vbas pool (use --force to overwrite it)",
			     path);
		goto fail;
	}
	uint64_t size = o->size;
	if (exists && S_ISBLK(st.st_mode)) {
		if (!size)
			size = dev->size;
		if (size > dev->size) {
			r = vbas_err(-ENOSPC, "%s holds %" PRIu64 " bytes, less than %" PRIu64,
				     path, dev->size, size);
			goto fail;
		}
	} else if (size) {
		size = size / bs * bs;
		/* The new size first: growing past what the file system
		 * allows (EFBIG) fails here with the file unchanged. */
		if (ftruncate(dev->fd, (off_t)size) < 0) {
			r = -errno;
			vbas_err(r, "resize %s to %" PRIu64 " bytes: %s", path, size, strerror(-r));
			goto fail;
		}
		/* Then a fresh, sparse file: old contents go, nothing is
		 * allocated. */
		if (ftruncate(dev->fd, 0) < 0 || ftruncate(dev->fd, (off_t)size) < 0) {
			r = -errno;
			dev_destroy(dev);
			return vbas_err(r, "resize %s to %" PRIu64 " bytes: %s", path, size, strerror(-r));
		}
		dev->size = size;
	} else {
		size = dev->size;
	}
	r = check_nblocks(bs, size / bs);
	if (r)
		goto fail;
	r = format_dev(dev, bs, size / bs, 0, o->flags);
	dev_destroy(dev);
	return r;
fail:
	dev_destroy(dev);
	if (!exists)
		unlink(path);
	return r;
}

static int check_open_opts(const struct vbas_open_opts *o)
{
	if (o->flags & ~(VBAS_OPEN_RDONLY | VBAS_OPEN_NO_DIRECT | VBAS_OPEN_PINNED |
			 VBAS_OPEN_REPAIR | VBAS_OPEN_NO_RESUME))
		return vbas_err(-EINVAL, "unknown open flags %#x", o->flags);
	if ((o->flags & VBAS_OPEN_PINNED) && !(o->flags & VBAS_OPEN_RDONLY))
		return vbas_err(-EINVAL, "open: a pinned open is read-only");
	return SPARE_CHECK(o, "vbas_open_opts");
}

int vbas_open_dev(struct vbas_dev *dev, const struct vbas_open_opts *o, struct vbas_pool **poolp)
{
	struct vbas_open_opts def = { 0 };
	struct vbas_pool *p;
	uint32_t slot;
	int r;

	vbas_err_clear();
	if (!o)
		o = &def;
	r = check_open_opts(o);
	if (r)
		return r;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	r = txn_read_sb(dev, &p->sb, &slot);
	if (r) {
		free(p);
		return r;
	}
	pthread_mutex_init(&p->lock, NULL);
	{
		/* Writers first: a pool lock holder waits for the readers in
		 * the trees, and new readers wait behind it. */
		pthread_rwlockattr_t ra;
		pthread_rwlockattr_init(&ra);
		pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
		pthread_rwlock_init(&p->tree_lock, &ra);
		pthread_rwlockattr_destroy(&ra);
	}
	pthread_cond_init(&p->intent_cond, NULL);
	pthread_mutex_init(&p->cm_lock, NULL);
	pthread_cond_init(&p->cm_io_cv, NULL);
	pthread_cond_init(&p->cm_done_cv, NULL);
	memcpy(p->intents, p->sb.intents, sizeof(p->intents));
	p->dev = dev;
	p->bs = le32_get(p->sb.block_size);
	p->bshift = (unsigned)__builtin_ctz(p->bs);
	p->nblocks = le64_get(p->sb.nblocks);
	memcpy(p->uuid, p->sb.uuid, 16);
	p->gen = le64_get(p->sb.generation);
	p->rdonly = !!(o->flags & VBAS_OPEN_RDONLY) || dev->readonly;
	p->next_vol_id = le64_get(p->sb.next_vol_id);
	p->nvolumes = le64_get(p->sb.nvolumes);
	p->low_water = le16_get(p->sb.low_water);
	p->exp_floor = le16_get(p->sb.exp_floor);
	p->may_expend = 1;   /* until a search finds none */
	p->repair_mode = !!(o->flags & VBAS_OPEN_REPAIR);

	p->env.txid = p->gen + 1;
	memcpy(p->env.uuid, p->uuid, 16);
	p->env.block_size = p->bs;
	p->env.max_fanout = le32_get(p->sb.max_fanout);
	p->env.nblocks = p->nblocks;
	p->env.types[VBAS_TREE_VOLTAB] = &voltab_ops;
	p->env.types[VBAS_TREE_REFC] = &refc_ops;
	p->env.types[VBAS_TREE_MAP] = &map_ops;
	p->env.types[VBAS_TREE_RMAP] = &rmap_ops;
	p->env.types[VBAS_TREE_NAMES] = &names_ops;
	bt_node_validator(&p->validator, &p->env);
	uint64_t cb = o->cache_bytes ? o->cache_bytes : VBAS_CACHE_DEFAULT;
	r = cache_create(dev, p->bs, (size_t)(cb / p->bs), &p->validator, &p->cache);
	if (r)
		goto fail;
	p->env.cache = p->cache;
	p->voltab.ops = &voltab_ops;
	p->voltab.env = &p->env;
	p->voltab.owner = VBAS_OWNER_VOLTAB;
	p->voltab_gen = 1;
	p->voltab.root = le64_get(p->sb.voltab_root);
	p->voltab.root_txid = le64_get(p->sb.voltab_root_txid);
	names_init(p);
	r = space_load(p);
	if (!r && (le32_get(p->sb.flags) & VBAS_SBF_SHRINK))
		r = space_set_limit(p, le64_get(p->sb.shrink_to));
	if (!r)
		r = owed_load(p);
	if (r)
		goto fail;
	if (!p->rdonly && !p->repair_mode) {
		pool_lock(p);
		r = vol_resume_deletes(p);
		if (!r)
			r = txn_commit(p);
		if (!r) {
			/* A pool made before the index gets it now; a full one
			 * keeps walking its volume table (nothing changed yet)
			 * until an open finds the room. */
			r = names_build(p);
			if (r == -ENOSPC && !p->broken) {
				vbas_err_clear();
				r = 0;
			}
		}
		pool_unlock(p);
		/* Operations a crash cut short are finished. */
		if (!r)
			r = intents_replay(p);
		if (r)
			goto fail;
		/* A shrink that did not finish goes on.  If it cannot (no room
		 * below its target, a range that cannot move), the pool opens
		 * all the same, the target kept: vbas_pool_info says so. */
		if (!(o->flags & VBAS_OPEN_NO_RESUME) && shrink_resume(p))
			vbas_err_clear();
	}
	*poolp = p;
	return 0;
fail:
	owed_free(p);
	cache_destroy(p->cache);
	space_free(p);
	pthread_cond_destroy(&p->intent_cond);
	pthread_cond_destroy(&p->cm_done_cv);
	pthread_cond_destroy(&p->cm_io_cv);
	pthread_mutex_destroy(&p->cm_lock);
	pthread_rwlock_destroy(&p->tree_lock);
	pthread_mutex_destroy(&p->lock);
	free(p);
	return r;
}

int vbas_open(const char *path, const struct vbas_open_opts *o, struct vbas_pool **poolp)
{
	struct vbas_open_opts def = { 0 };
	struct vbas_dev *dev;
	unsigned df = 0;
	int r;

	vbas_err_clear();
	if (!path || !poolp)
		return vbas_err(-EINVAL, "open: no path");
	if (!o)
		o = &def;
	r = check_open_opts(o);     /* before the device is opened */
	if (r)
		return r;
	if (o->flags & VBAS_OPEN_RDONLY)
		df |= VBAS_DEV_RDONLY;
	if (o->flags & VBAS_OPEN_NO_DIRECT)
		df |= VBAS_DEV_NO_DIRECT;
	/* The pinning process holds the lock; what keeps its writes away
	 * from what we read is the pin (space.c S6). */
	if ((o->flags & (VBAS_OPEN_PINNED | VBAS_OPEN_RDONLY)) ==
	    (VBAS_OPEN_PINNED | VBAS_OPEN_RDONLY))
		df |= VBAS_DEV_NOLOCK;
	r = vbas_dev_open_file(path, df, &dev);
	if (r)
		return r;
	r = vbas_open_dev(dev, o, poolp);
	if (r) {
		dev_destroy(dev);
		if (r == -EINVAL || r == -EUCLEAN)
			return vbas_err_ctx(r, "%s", path);
		return r;
	}
	(*poolp)->own_dev = 1;
	return 0;
}

int vbas_close(struct vbas_pool *p)
{
	int r = 0;
	if (!p)
		return 0;
	vbas_err_clear();
	pool_lock(p);
	if (p->open_vols) {
		pool_unlock(p);
		return vbas_err(-EBUSY, "close: volumes are still open");
	}
	if (!p->rdonly && !p->broken)
		r = txn_commit(p);
	owed_free(p);
	pool_unlock(p);
	cache_destroy(p->cache);
	space_free(p);
	if (p->own_dev)
		dev_destroy(p->dev);
	pthread_cond_destroy(&p->intent_cond);
	pthread_cond_destroy(&p->cm_done_cv);
	pthread_cond_destroy(&p->cm_io_cv);
	pthread_mutex_destroy(&p->cm_lock);
	pthread_rwlock_destroy(&p->tree_lock);
	pthread_mutex_destroy(&p->lock);
	free(p);
	return r;
}

const char *vbas_version(void)
{
	return VBAS_VERSION_STRING;
}

int vbas_flush(struct vbas_pool *p)
{
	vbas_err_clear();
	return txn_flush(p);
}

int vbas_pool_pin(struct vbas_pool *p, uint64_t *generation)
{
	int r;
	vbas_err_clear();
	pool_lock(p);
	txn_wait_io(p);        /* the freed blocks of a commit in flight are kept */
	r = space_pin(p);
	if (!r && generation)
		*generation = p->gen;
	pool_unlock(p);
	return r;
}

void vbas_pool_progress(struct vbas_pool *p, int (*cb)(void *, uint64_t, uint64_t), void *arg)
{
	pool_lock(p);
	p->progress = cb;
	p->progress_arg = arg;
	pool_unlock(p);
}

void vbas_pool_unpin(struct vbas_pool *p)
{
	pool_lock(p);
	space_unpin(p);
	pool_unlock(p);
}

int vbas_pool_info(struct vbas_pool *p, struct vbas_pool_info *info)
{
	struct cache_stats cs;
	vbas_err_clear();
	memset(info, 0, sizeof(*info));
	pool_lock(p);
	info->block_size = p->bs;
	info->size = p->nblocks * p->bs;
	info->total_blocks = p->nblocks - VBAS_FIRST_BLOCK;
	info->data_used = (p->sp.data_used + p->sp.pending.total) * p->bs;
	info->metadata_used = (p->sp.meta_used + VBAS_FIRST_BLOCK) * p->bs;
	info->free = space_free_blocks(p) * p->bs;
	info->reserved = p->sp.reserved * p->bs;
	info->metadata_reserve = p->sp.meta_reserve * p->bs;
	info->volumes = p->nvolumes;
	uint64_t mapped = 0;
	int e = vol_sum_mapped(p, &mapped);
	info->mapped = mapped * p->bs;
	info->sharing_saves = mapped > p->sp.data_used ? (mapped - p->sp.data_used) * p->bs : 0;
	info->generation = p->gen;
	cache_stats(p->cache, &cs);
	info->cache_blocks = (uint32_t)cs.max_blocks;
	info->dirty_blocks = cs.dirty;
	info->reserved_metadata = p->sp.resv_meta * p->bs;
	info->reserved_metadata_granted = p->sp.resv_meta_granted * p->bs;
	info->reserved_metadata_used = p->sp.resv_meta_used * p->bs;
	info->reserved_ranges = p->sp.resv_blocks * p->bs;
	info->reserved_owed = p->sp.owed ? p->sp.owed->left * p->bs : 0;
	info->available = space_available(p) * p->bs;
	info->low_water = p->low_water;
	info->expendable_floor = p->exp_floor;
	info->rmap = (uint32_t)p->sp.rmap_on;
	info->shrink_to = p->sp.limit * p->bs;
	for (unsigned i = 0; i < VBAS_INTENT_SLOTS; i++)
		info->intents += !!le32_get(p->intents[i].type);
	pool_unlock(p);
	return e;
}

