/* The metadata block cache: a bounded LRU of pool blocks, each verified
 * (checksum first, then structure) when read from the device and sealed
 * (structure, then checksum) when written back.
 *
 * Dirty blocks are always copy-on-write copies at addresses that the last
 * commit does not use, so the cache may write them back early to stay
 * within its bound; the commit writes whatever is still dirty.
 * Its own mutex makes each call atomic, so that readers holding the pool's
 * tree lock for reading can look up beside each other; everything else
 * holds the pool lock as well.  A pinned block is never evicted or moved. */
#ifndef VBAS_CACHE_H
#define VBAS_CACHE_H

#include <stddef.h>
#include <stdint.h>

struct vbas_dev;

struct vbas_validator {
	const char *name;
	/* 0, or a negative errno with vbas_err() set naming the block. */
	int (*verify_read)(void *ctx, uint64_t blkno, const void *buf);
	void (*prepare_write)(void *ctx, uint64_t blkno, void *buf);
	void *ctx;
};

struct cblock {
	uint64_t blkno;
	void *data;
	int pins;
	int dirty;
	struct cblock *hnext;
	struct cblock *prev, *next;   /* LRU list, most recent at head */
};

struct vbas_cache;

int cache_create(struct vbas_dev *dev, uint32_t block_size, size_t max_blocks,
		 const struct vbas_validator *v, struct vbas_cache **cachep);
void cache_destroy(struct vbas_cache *c);

/* Pinned block BLKNO, read and verified if not cached. */
int cache_read(struct vbas_cache *c, uint64_t blkno, struct cblock **out);
/* Pinned, zeroed, dirty block BLKNO for a new node (no read). */
int cache_new(struct vbas_cache *c, uint64_t blkno, struct cblock **out);
static inline void cache_dirty(struct cblock *b) { b->dirty = 1; }
void cache_put(struct vbas_cache *c, struct cblock *b);
/* BLKNO is free now: drop it without writing it. */
void cache_forget(struct vbas_cache *c, uint64_t blkno);
/* Write every dirty block. */
int cache_writeback(struct vbas_cache *c);
/* Drop every unpinned block, dirty or not (abandoning a transaction). */
void cache_drop_all(struct vbas_cache *c);

struct cache_stats {
	size_t blocks, max_blocks, dirty, pinned;
	uint64_t hits, misses, writebacks;
	uint64_t writeback_ios;       /* device writes they took (runs gathered) */
};
void cache_stats(struct vbas_cache *c, struct cache_stats *st);

#endif
