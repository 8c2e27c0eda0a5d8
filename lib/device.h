/* The device layer: byte I/O on the pool's backing store.
 *
 * Two back ends share one ops vector: a regular file or block device
 * (O_DIRECT where the file system allows it, flush = fdatasync), and an
 * in-memory device for tests that can lose power at a chosen write and
 * drop, reorder or tear what was not flushed, discards included
 * (device-mem.c). */
#ifndef VBAS_DEVICE_H
#define VBAS_DEVICE_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

struct vbas_dev;

struct vbas_dev_ops {
	const char *name;
	/* Full transfers or a negative errno; never short. */
	int (*pread)(struct vbas_dev *dev, void *buf, size_t len, uint64_t off);
	int (*pwrite)(struct vbas_dev *dev, const void *buf, size_t len, uint64_t off);
	int (*flush)(struct vbas_dev *dev);
	int (*discard)(struct vbas_dev *dev, uint64_t off, uint64_t len);
	/* Optional: make the range read as zeros; -EOPNOTSUPP lets dev_zero
	 * write zeros instead. */
	int (*zero)(struct vbas_dev *dev, uint64_t off, uint64_t len);
	/* Make the device hold at least SIZE bytes (vbas_pool_grow): a
	 * regular file is extended, sparse; a block device must have grown
	 * already.  -ENOSPC: it holds less; -EFBIG: the file system cannot
	 * hold a file that large.  Durable with the next flush. */
	int (*grow)(struct vbas_dev *dev, uint64_t size);
	/* Optional: the pool shrank to SIZE bytes (vbas_pool_shrink, after
	 * the commit): a regular file is truncated, a block device kept. */
	int (*truncate)(struct vbas_dev *dev, uint64_t size);
	void (*destroy)(struct vbas_dev *dev);
};

struct vbas_dev {
	const struct vbas_dev_ops *ops;
	uint64_t size;          /* bytes */
	int fd;                 /* -1 when not backed by a file */
	int direct;             /* fd is O_DIRECT */
	uint32_t align;         /* alignment O_DIRECT needs (1 if none) */
	int readonly;
	int owned_by_pool;      /* destroyed by vbas_close() */
};

#define VBAS_DEV_RDONLY    0x1u
#define VBAS_DEV_NO_DIRECT 0x2u
#define VBAS_DEV_CREATE    0x4u   /* create a regular file if missing */
#define VBAS_DEV_NOLOCK    0x8u

/* Open PATH; takes an exclusive lock on it (-EBUSY if held elsewhere). */
int vbas_dev_open_file(const char *path, unsigned flags, struct vbas_dev **devp);

static inline int dev_pread(struct vbas_dev *d, void *b, size_t l, uint64_t o)
{ return d->ops->pread(d, b, l, o); }
static inline int dev_pwrite(struct vbas_dev *d, const void *b, size_t l, uint64_t o)
{ return d->ops->pwrite(d, b, l, o); }
/* A flush interrupted by a signal (EINTR, which network file systems can
 * return from fdatasync) lost nothing: it is tried again, up to
 * DEV_FLUSH_TRIES times in all, before the error reaches the caller (for
 * whom a failed flush makes the pool read-only). */
#define DEV_FLUSH_TRIES 16
static inline int dev_flush(struct vbas_dev *d)
{
	int r, n = 0;
	do
		r = d->ops->flush(d);
	while (r == -EINTR && ++n < DEV_FLUSH_TRIES);
	return r;
}
static inline int dev_discard(struct vbas_dev *d, uint64_t o, uint64_t l)
{ return d->ops->discard ? d->ops->discard(d, o, l) : 0; }
/* Make [off, off+len) read as zeros (block aligned), durable with the
 * next flush. */
int dev_zero(struct vbas_dev *d, uint64_t off, uint64_t len);
static inline void dev_destroy(struct vbas_dev *d) { if (d) d->ops->destroy(d); }

/* ---- In-memory device (tests) ----------------------------------------- */

struct vbas_dev *vbas_memdev_create(uint64_t size);
/* A new device whose contents are MEM's image as it is now, all writes
 * made durable. */
struct vbas_dev *vbas_memdev_clone(struct vbas_dev *mem);

/* Crash modes: what happens to writes not yet flushed at power loss. */
#define VBAS_CRASH_DROP     0x1u  /* some are lost */
#define VBAS_CRASH_REORDER  0x2u  /* the survivors land in any order */
#define VBAS_CRASH_TEAR     0x4u  /* some land only in part (512 B sectors) */

/* Lose power after AFTER more writes, discards or flushes (0 = at the next
 * one): from then on every I/O fails with -EIO, and the image that
 * "survived" is fixed with MODE and SEED.  vbas_memdev_survivor() returns
 * it as a new device. */
void vbas_memdev_arm_crash(struct vbas_dev *mem, uint64_t after,
			   unsigned mode, uint64_t seed);
/* Lose power now (same as arming with AFTER 0 and crashing at once). */
void vbas_memdev_crash_now(struct vbas_dev *mem, unsigned mode, uint64_t seed);
int vbas_memdev_crashed(struct vbas_dev *mem);
struct vbas_dev *vbas_memdev_survivor(struct vbas_dev *mem);
/* Fail the write number N (counted from now, 0 = next; discards and
 * flushes count as writes, only a pwrite fails) with -EIO but keep the
 * device alive. */
void vbas_memdev_fail_write(struct vbas_dev *mem, uint64_t n);
uint64_t vbas_memdev_writes(struct vbas_dev *mem);
uint64_t vbas_memdev_discards(struct vbas_dev *mem);   /* discards so far */
/* The device grows to SIZE bytes, reading as zeros past its old end (a
 * logical volume extended under the pool): durable at once. */
int vbas_memdev_grow(struct vbas_dev *mem, uint64_t size);
/* Direct access to the current image, for corruption tests. */
uint8_t *vbas_memdev_image(struct vbas_dev *mem);

#endif
