#include "cache.h"
#include "device.h"
#include "errmsg.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Entries and their buffers come in slabs: one mmap holds the buffers of
 * SLAB_BLOCKS entries, so a cache of N blocks costs N blocks of memory and
 * not the two pages per block that an aligned malloc of each would. */
#define SLAB_BLOCKS 64

struct slab {
	struct slab *next;
	void *mem;
	struct cblock ents[SLAB_BLOCKS];
};

struct vbas_cache {
	/* Readers look up beside each other under the pool's tree lock held
	 * for reading (map.c): they meet here, for pins, the LRU and loads. */
	pthread_mutex_t mu;
	struct vbas_dev *dev;
	uint32_t bs;
	size_t max, count;
	struct vbas_validator v;
	struct cblock **hash;
	size_t hmask;
	struct cblock lru;            /* sentinel */
	struct cblock *freelist;      /* unused entries with buffers */
	struct slab *slabs;
	uint64_t hits, misses, writebacks, writeback_ios;
	/* cache_writeback: the dirty blocks in block order, and a buffer a
	 * run of adjacent ones is gathered into for one device write. */
	struct cblock **wb;
	size_t wb_cap;
	void *run;
	size_t run_blocks;
};

/* The longest run cache_writeback writes with one call: 1 MiB (at least
 * one block). */
#define WB_RUN_BYTES (1u << 20)

static size_t hslot(const struct vbas_cache *c, uint64_t blkno)
{
	return (size_t)((blkno * 0x9e3779b97f4a7c15ull) >> 20) & c->hmask;
}

static void lru_unlink(struct cblock *b)
{
	b->prev->next = b->next;
	b->next->prev = b->prev;
}

static void lru_push(struct vbas_cache *c, struct cblock *b)
{
	b->next = c->lru.next;
	b->prev = &c->lru;
	c->lru.next->prev = b;
	c->lru.next = b;
}

static void hash_remove(struct vbas_cache *c, struct cblock *b)
{
	struct cblock **pp = &c->hash[hslot(c, b->blkno)];
	while (*pp != b)
		pp = &(*pp)->hnext;
	*pp = b->hnext;
}

static struct cblock *lookup(struct vbas_cache *c, uint64_t blkno)
{
	for (struct cblock *b = c->hash[hslot(c, blkno)]; b; b = b->hnext)
		if (b->blkno == blkno)
			return b;
	return NULL;
}

int cache_create(struct vbas_dev *dev, uint32_t block_size, size_t max_blocks,
		 const struct vbas_validator *v, struct vbas_cache **cachep)
{
	struct vbas_cache *c = calloc(1, sizeof(*c));
	size_t h = 64;
	if (!c)
		return -ENOMEM;
	if (max_blocks < 16)
		max_blocks = 16;
	while (h < max_blocks * 2)
		h <<= 1;
	c->hash = calloc(h, sizeof(*c->hash));
	if (!c->hash) {
		free(c);
		return -ENOMEM;
	}
	c->hmask = h - 1;
	c->dev = dev;
	c->bs = block_size;
	c->max = max_blocks;
	c->v = *v;
	c->lru.next = c->lru.prev = &c->lru;
	pthread_mutex_init(&c->mu, NULL);
	*cachep = c;
	return 0;
}

void cache_destroy(struct vbas_cache *c)
{
	if (!c)
		return;
	while (c->slabs) {
		struct slab *s = c->slabs;
		c->slabs = s->next;
		munmap(s->mem, (size_t)SLAB_BLOCKS * c->bs);
		free(s);
	}
	free(c->hash);
	free(c->wb);
	free(c->run);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

/* One more slab of entries onto the free list.  Slabs live until the cache
 * is destroyed; the cache only grows past its bound while every block is
 * pinned, which a bounded tree depth keeps small. */
static int grow(struct vbas_cache *c)
{
	struct slab *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->mem = mmap(NULL, (size_t)SLAB_BLOCKS * c->bs, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (s->mem == MAP_FAILED) {
		free(s);
		return -ENOMEM;
	}
	for (size_t i = 0; i < SLAB_BLOCKS; i++) {
		struct cblock *b = &s->ents[i];
		b->data = (char *)s->mem + i * c->bs;
		b->hnext = c->freelist;
		c->freelist = b;
	}
	s->next = c->slabs;
	c->slabs = s;
	return 0;
}

static int write_block(struct vbas_cache *c, struct cblock *b)
{
	c->v.prepare_write(c->v.ctx, b->blkno, b->data);
	int r = dev_pwrite(c->dev, b->data, c->bs, b->blkno * (uint64_t)c->bs);
	if (r)
		return vbas_err(r, "write of metadata block %llu failed",
				(unsigned long long)b->blkno);
	b->dirty = 0;
	c->writebacks++;
	c->writeback_ios++;
	return 0;
}

/* Make room for one more block: evict the least recently used unpinned
 * block, writing it back first if dirty.  If everything is pinned the
 * cache grows past its bound for a moment rather than fail. */
static int make_room(struct vbas_cache *c)
{
	while (c->count >= c->max) {
		struct cblock *b = c->lru.prev;
		while (b != &c->lru && b->pins)
			b = b->prev;
		if (b == &c->lru)
			return 0;
		if (b->dirty) {
			int r = write_block(c, b);
			if (r)
				return r;
		}
		lru_unlink(b);
		hash_remove(c, b);
		b->hnext = c->freelist;
		c->freelist = b;
		c->count--;
	}
	return 0;
}

static struct cblock *new_entry(struct vbas_cache *c, uint64_t blkno)
{
	if (!c->freelist && grow(c))
		return NULL;
	struct cblock *b = c->freelist;
	c->freelist = b->hnext;
	b->blkno = blkno;
	b->pins = 1;
	b->dirty = 0;
	size_t s = hslot(c, blkno);
	b->hnext = c->hash[s];
	c->hash[s] = b;
	lru_push(c, b);
	c->count++;
	return b;
}

static void recycle(struct vbas_cache *c, struct cblock *b)
{
	lru_unlink(b);
	hash_remove(c, b);
	b->hnext = c->freelist;
	c->freelist = b;
	c->count--;
}

static int cache_read_l(struct vbas_cache *c, uint64_t blkno, struct cblock **out)
{
	struct cblock *b = lookup(c, blkno);
	int r;
	if (b) {
		c->hits++;
		b->pins++;
		lru_unlink(b);
		lru_push(c, b);
		*out = b;
		return 0;
	}
	c->misses++;
	r = make_room(c);
	if (r)
		return r;
	b = new_entry(c, blkno);
	if (!b)
		return -ENOMEM;
	r = dev_pread(c->dev, b->data, c->bs, blkno * (uint64_t)c->bs);
	if (r)
		r = vbas_err(r, "read of metadata block %llu failed", (unsigned long long)blkno);
	else
		r = c->v.verify_read(c->v.ctx, blkno, b->data);
	if (r) {
		recycle(c, b);
		return r;
	}
	*out = b;
	return 0;
}

static int cache_new_l(struct vbas_cache *c, uint64_t blkno, struct cblock **out)
{
	struct cblock *b = lookup(c, blkno);
	if (b) {
		/* A stale copy of a block that was freed and is reused now. */
		b->pins++;
		lru_unlink(b);
		lru_push(c, b);
	} else {
		int r = make_room(c);
		if (r)
			return r;
		b = new_entry(c, blkno);
		if (!b)
			return -ENOMEM;
	}
	memset(b->data, 0, c->bs);
	b->dirty = 1;
	*out = b;
	return 0;
}

static void cache_put_l(struct vbas_cache *c, struct cblock *b)
{
	(void)c;
	b->pins--;
}

static void cache_forget_l(struct vbas_cache *c, uint64_t blkno)
{
	struct cblock *b = lookup(c, blkno);
	if (b && !b->pins)
		recycle(c, b);
	else if (b)
		b->dirty = 0;
}

static int cmp_blkno(const void *a, const void *b)
{
	uint64_t x = (*(struct cblock *const *)a)->blkno, y = (*(struct cblock *const *)b)->blkno;
	return x < y ? -1 : x > y;
}

/* Every dirty block to the device, in block order, each run of adjacent
 * blocks (up to WB_RUN_BYTES) gathered into one write: a commit's nodes,
 * allocated near each other, cost a few large writes instead of one
 * synchronous write per node.  Without the memory for that, one write a
 * block, as before. */
static int cache_writeback_l(struct vbas_cache *c)
{
	size_t n = 0;
	for (struct cblock *b = c->lru.next; b != &c->lru; b = b->next)
		n += b->dirty != 0;
	if (!n)
		return make_room(c);
	if (n > c->wb_cap) {
		struct cblock **wb = realloc(c->wb, n * sizeof(*wb));
		if (wb) {
			c->wb = wb;
			c->wb_cap = n;
		}
	}
	if (!c->run) {
		size_t rb = WB_RUN_BYTES / c->bs ? WB_RUN_BYTES / c->bs : 1;
		if (!posix_memalign(&c->run, 4096, rb * c->bs))
			c->run_blocks = rb;
	}
	if (n > c->wb_cap || !c->run) {
		for (struct cblock *b = c->lru.next; b != &c->lru; b = b->next)
			if (b->dirty) {
				int r = write_block(c, b);
				if (r)
					return r;
			}
		return make_room(c);
	}
	n = 0;
	for (struct cblock *b = c->lru.next; b != &c->lru; b = b->next)
		if (b->dirty)
			c->wb[n++] = b;
	qsort(c->wb, n, sizeof(*c->wb), cmp_blkno);
	for (size_t i = 0; i < n;) {
		size_t k = 1;
		while (i + k < n && k < c->run_blocks && c->wb[i + k]->blkno == c->wb[i]->blkno + k)
			k++;
		int r;
		if (k == 1) {
			r = write_block(c, c->wb[i]);
		} else {
			for (size_t j = 0; j < k; j++) {
				struct cblock *b = c->wb[i + j];
				c->v.prepare_write(c->v.ctx, b->blkno, b->data);
				memcpy((char *)c->run + j * c->bs, b->data, c->bs);
			}
			r = dev_pwrite(c->dev, c->run, k * c->bs, c->wb[i]->blkno * (uint64_t)c->bs);
			if (r)
				r = vbas_err(r, "write of metadata blocks %llu-%llu failed",
					     (unsigned long long)c->wb[i]->blkno,
					     (unsigned long long)(c->wb[i]->blkno + k - 1));
			for (size_t j = 0; !r && j < k; j++) {
				c->wb[i + j]->dirty = 0;
				c->writebacks++;
			}
			if (!r)
				c->writeback_ios++;
		}
		if (r)
			return r;
		i += k;
	}
	return make_room(c);
}

static void cache_drop_all_l(struct vbas_cache *c)
{
	struct cblock *b = c->lru.next;
	while (b != &c->lru) {
		struct cblock *n = b->next;
		if (!b->pins)
			recycle(c, b);
		b = n;
	}
}

static void cache_stats_l(struct vbas_cache *c, struct cache_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->blocks = c->count;
	st->max_blocks = c->max;
	for (struct cblock *b = c->lru.next; b != &c->lru; b = b->next) {
		st->dirty += b->dirty != 0;
		st->pinned += b->pins != 0;
	}
	st->hits = c->hits;
	st->misses = c->misses;
	st->writebacks = c->writebacks;
	st->writeback_ios = c->writeback_ios;
}

int cache_read(struct vbas_cache *c, uint64_t blkno, struct cblock **out)
{
	pthread_mutex_lock(&c->mu);
	int r = cache_read_l(c, blkno, out);
	pthread_mutex_unlock(&c->mu);
	return r;
}

int cache_new(struct vbas_cache *c, uint64_t blkno, struct cblock **out)
{
	pthread_mutex_lock(&c->mu);
	int r = cache_new_l(c, blkno, out);
	pthread_mutex_unlock(&c->mu);
	return r;
}

void cache_put(struct vbas_cache *c, struct cblock *b)
{
	pthread_mutex_lock(&c->mu);
	cache_put_l(c, b);
	pthread_mutex_unlock(&c->mu);
}

void cache_forget(struct vbas_cache *c, uint64_t blkno)
{
	pthread_mutex_lock(&c->mu);
	cache_forget_l(c, blkno);
	pthread_mutex_unlock(&c->mu);
}

int cache_writeback(struct vbas_cache *c)
{
	pthread_mutex_lock(&c->mu);
	int r = cache_writeback_l(c);
	pthread_mutex_unlock(&c->mu);
	return r;
}

void cache_drop_all(struct vbas_cache *c)
{
	pthread_mutex_lock(&c->mu);
	cache_drop_all_l(c);
	pthread_mutex_unlock(&c->mu);
}

void cache_stats(struct vbas_cache *c, struct cache_stats *st)
{
	pthread_mutex_lock(&c->mu);
	cache_stats_l(c, st);
	pthread_mutex_unlock(&c->mu);
}
