/* File and block-device back end. */
#define _GNU_SOURCE
#include "device.h"
#include "errmsg.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define DIRECT_ALIGN 4096u

/* Unaligned I/O under O_DIRECT goes through an aligned bounce buffer.
 * Allocating one per request costs more than the I/O at large sizes (an
 * mmap, page faults and an munmap for each), and callers such as nbdkit
 * hand us unaligned buffers for every request: so each device keeps a few
 * buffers for reuse, one per concurrent caller, each taken with a trylock
 * (a caller that finds all taken allocates its own). */
#define BOUNCE_SLOTS 8
#define BOUNCE_MAX   (4u << 20)  /* larger ones are not kept */

struct bounce {
	pthread_mutex_t lock;
	void *buf;
	size_t len;
};

/* A write into a hole of a sparse pool file makes the file system
 * allocate under the file's exclusive lock (ext4 and XFS serialize direct
 * I/O that allocates; writes into allocated space run in parallel), and
 * the blocks come one write at a time.  So the first write into each
 * PREALLOC-sized piece of a regular file allocates the whole piece
 * (fallocate, which leaves it reading as zeros): allocation once per 8 MiB
 * instead of once per write, in extents of that size.  The pool file grows
 * on its file system in those steps, as far as the pool has written.
 * Pieces are remembered for as long as the pool is open; blocks the pool
 * frees are punched out again (file_discard) and not preallocated anew.
 * The bitmap of pieces covers the first PREALLOC_MAX_PIECES (1 PiB, a
 * 16 MiB bitmap); a larger pool file writes past that as it would
 * without the aid (a bitmap for a 1 EiB file would take 16 GiB). */
#define PREALLOC_SHIFT 23
#define PREALLOC_MAX_PIECES (1ull << 27)

/* Without O_DIRECT, writes land in the page cache; left there, they pile
 * up until the kernel's dirty limits throttle the writer and the next
 * flush has gigabytes to write.  Two kinds of writes are told apart:
 *
 *   small ones (below STREAM_MIN) stay cached, and every WRITE_BEHIND
 *   bytes of them start the write-out of the file's dirty pages without
 *   waiting for it: the device works while the writer goes on, and pages
 *   rewritten within the window are still written once;
 *
 *   large ones are a stream (an image copy, a restore, a sequential
 *   writer): each starts its own write-out at once, and once more than
 *   WRITE_BEHIND bytes of them are in flight the oldest is waited for and
 *   its pages are dropped from the cache.  So a stream keeps a bounded
 *   window in flight, flows at the device's pace, and recycles its own
 *   pages instead of evicting the small writes' cache and taking fresh
 *   memory for every megabyte (which, on a virtual machine whose freed
 *   memory goes back to the host, costs a host fault per page).
 *
 * A wait can return a write-back error, and it consumes it: the kernel
 * reports each error once per open file description.  So the waits go
 * through a second open of the file (wait_fd), and the fdatasync of every
 * flush, on the first, still sees every error itself, however the two
 * race.  (Without a second open, streams are written out but not waited
 * for.)  And the device keeps the first error a flush or a wait sees
 * (wb_err) and fails every later flush with it: pages whose write-out
 * failed are marked clean by the kernel, so after one failure no flush
 * can promise durability again. */
#define WRITE_BEHIND (8u << 20)
#define STREAM_MIN   (256u << 10)
#define STREAM_SLOTS (WRITE_BEHIND / STREAM_MIN + 1)

struct stream_range {
	uint64_t off, len;
};

struct file_dev {
	struct vbas_dev d;
	struct bounce slot[BOUNCE_SLOTS];
	_Atomic uint64_t *prealloc;      /* a bit per piece: allocated (NULL: off) */
	uint64_t pieces;                 /* pieces the bitmap covers (the size at
	                                    open: a grown part is not preallocated) */
	_Atomic uint64_t behind;         /* small bytes written since the last write-out */
	_Atomic int wb_err;              /* first write-back error (negative errno) */
	int wait_fd;                     /* a second open of the file, or -1 */
	pthread_mutex_t stream_lock;     /* guards the stream window below */
	struct stream_range stream[STREAM_SLOTS];   /* ring, oldest at stream_head */
	unsigned stream_head, stream_n;
	uint64_t stream_bytes;           /* sum of the window's lengths */
};

/* Keep the first write-back error: see above. */
static void wb_fail(struct file_dev *f, int err)
{
	int none = 0;
	atomic_compare_exchange_strong(&f->wb_err, &none, err);
}

/* A large write of [OFF, OFF+LEN) has reached the page cache: start its
 * write-out, and retire the oldest ranges of the window while it holds
 * more than WRITE_BEHIND bytes (wait for their write-out, drop them). */
static void stream_behind(struct file_dev *f, uint64_t off, uint64_t len)
{
	struct stream_range old[STREAM_SLOTS];
	unsigned n = 0;
	int fd = f->d.fd;

	if (sync_file_range(fd, (off_t)off, (off_t)len, SYNC_FILE_RANGE_WRITE) < 0 &&
	    errno == EIO)
		wb_fail(f, -EIO);
	if (f->wait_fd < 0)
		return;
	pthread_mutex_lock(&f->stream_lock);
	while (f->stream_n && (f->stream_n == STREAM_SLOTS ||
			       f->stream_bytes + len > WRITE_BEHIND)) {
		old[n++] = f->stream[f->stream_head];
		f->stream_bytes -= f->stream[f->stream_head].len;
		f->stream_head = (f->stream_head + 1) % STREAM_SLOTS;
		f->stream_n--;
	}
	f->stream[(f->stream_head + f->stream_n) % STREAM_SLOTS] =
		(struct stream_range){ off, len };
	f->stream_n++;
	f->stream_bytes += len;
	pthread_mutex_unlock(&f->stream_lock);
	for (unsigned i = 0; i < n; i++) {
		if (sync_file_range(f->wait_fd, (off_t)old[i].off, (off_t)old[i].len,
				    SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
				    SYNC_FILE_RANGE_WAIT_AFTER) < 0) {
			wb_fail(f, -errno);
			continue;   /* keep what the cache holds of a failed range */
		}
		/* Clean pages only: a page written again since stays. */
		(void)posix_fadvise(fd, (off_t)old[i].off, (off_t)old[i].len,
				    POSIX_FADV_DONTNEED);
	}
}

/* An aligned buffer of LEN bytes: a slot's (held until bounce_put) or a
 * fresh one (*SLOT NULL). */
static void *bounce_get(struct vbas_dev *d, size_t len, struct bounce **slot)
{
	struct file_dev *f = (struct file_dev *)d;
	void *b;
	*slot = NULL;
	for (int i = 0; len <= BOUNCE_MAX && i < BOUNCE_SLOTS; i++) {
		struct bounce *s = &f->slot[i];
		if (pthread_mutex_trylock(&s->lock))
			continue;
		if (s->len < len) {
			free(s->buf);
			s->len = 0;
			size_t want = len < (64u << 10) ? (64u << 10) : len;
			if (posix_memalign(&s->buf, d->align, want)) {
				s->buf = NULL;
				pthread_mutex_unlock(&s->lock);
				return NULL;
			}
			s->len = want;
		}
		*slot = s;
		return s->buf;
	}
	return posix_memalign(&b, d->align, len) ? NULL : b;
}

static void bounce_put(void *b, struct bounce *slot)
{
	if (slot)
		pthread_mutex_unlock(&slot->lock);
	else
		free(b);
}

static int full_pread(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;
	while (len) {
		ssize_t r = pread(fd, p, len, (off_t)off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0) {         /* past the end of a file: zeros */
			memset(p, 0, len);
			return 0;
		}
		p += r;
		len -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

static int full_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;
	while (len) {
		ssize_t r = pwrite(fd, p, len, (off_t)off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += r;
		len -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

static void prealloc(struct vbas_dev *d, uint64_t off, size_t len)
{
	struct file_dev *f = (struct file_dev *)d;
	if (!f->prealloc || !len)
		return;
	for (uint64_t c = off >> PREALLOC_SHIFT; c <= (off + len - 1) >> PREALLOC_SHIFT; c++) {
		if (c >= f->pieces)
			break;
		uint64_t bit = 1ull << (c & 63);
		_Atomic uint64_t *w = &f->prealloc[c >> 6];
		if ((atomic_load_explicit(w, memory_order_relaxed) & bit) ||
		    (atomic_fetch_or(w, bit) & bit))
			continue;
		uint64_t s = c << PREALLOC_SHIFT, l = (uint64_t)1 << PREALLOC_SHIFT;
		if (l > d->size - s)
			l = d->size - s;
		/* Only an aid: where it fails (no room left on the file
		 * system, no support), the write allocates as before. */
		(void)fallocate(d->fd, 0, (off_t)s, (off_t)l);
	}
}

static int aligned(const struct vbas_dev *d, const void *buf, size_t len, uint64_t off)
{
	uint32_t a = d->align;
	return ((uintptr_t)buf % a) == 0 && len % a == 0 && off % a == 0;
}

static int file_pread(struct vbas_dev *d, void *buf, size_t len, uint64_t off)
{
	if (off > d->size || len > d->size - off)
		return -ERANGE;
	if (!d->direct || aligned(d, buf, len, off))
		return full_pread(d->fd, buf, len, off);
	/* Unaligned under O_DIRECT: go through an aligned bounce buffer. */
	uint64_t a = d->align, s = off / a * a, e = (off + len + a - 1) / a * a;
	struct bounce *slot;
	void *b = bounce_get(d, e - s, &slot);
	if (!b)
		return -ENOMEM;
	int r = full_pread(d->fd, b, e - s, s);
	if (!r)
		memcpy(buf, (char *)b + (off - s), len);
	bounce_put(b, slot);
	return r;
}

static int file_pwrite(struct vbas_dev *d, const void *buf, size_t len, uint64_t off)
{
	if (off > d->size || len > d->size - off)
		return -ERANGE;
	prealloc(d, off, len);
	if (!d->direct) {
		struct file_dev *f = (struct file_dev *)d;
		int r = full_pwrite(d->fd, buf, len, off);
		if (r)
			return r;
		if (len >= STREAM_MIN)
			stream_behind(f, off, len);
		else if (atomic_fetch_add(&f->behind, len) + len >= WRITE_BEHIND) {
			atomic_store(&f->behind, 0);
			(void)sync_file_range(d->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
		}
		return 0;
	}
	if (aligned(d, buf, len, off))
		return full_pwrite(d->fd, buf, len, off);
	uint64_t a = d->align, s = off / a * a, e = (off + len + a - 1) / a * a;
	struct bounce *slot;
	int r = 0;
	void *b = bounce_get(d, e - s, &slot);
	if (!b)
		return -ENOMEM;
	/* Read-modify-write of the partial sectors at either end.  Callers
	 * hold the block's range lock, so no one else writes these bytes. */
	if (off != s)
		r = full_pread(d->fd, b, a, s);
	if (!r && (off + len) != e && (e - a != s || off == s))
		r = full_pread(d->fd, (char *)b + (e - s - a), a, e - a);
	if (!r) {
		memcpy((char *)b + (off - s), buf, len);
		r = full_pwrite(d->fd, b, e - s, s);
	}
	bounce_put(b, slot);
	return r;
}

static int file_flush(struct vbas_dev *d)
{
	struct file_dev *f = (struct file_dev *)d;
	/* A failed fdatasync has consumed its error, and a page cache whose
	 * write-out failed has marked those pages clean: keep it.  (EINTR, from
	 * network file systems, lost nothing: dev_flush tries again.) */
	if (fdatasync(d->fd) < 0) {
		if (errno == EINTR)
			return -EINTR;
		wb_fail(f, -errno);
	}
	return atomic_load(&f->wb_err);
}

static int file_discard(struct vbas_dev *d, uint64_t off, uint64_t len)
{
	/* Best effort: give space back to the file system or the device. */
	struct stat st;
	if (fstat(d->fd, &st) == 0 && S_ISBLK(st.st_mode)) {
		uint64_t range[2] = { off, len };
		(void)ioctl(d->fd, BLKDISCARD, range);
	} else {
		(void)fallocate(d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				(off_t)off, (off_t)len);
	}
	return 0;
}

/* Make [off, off+len) read as zeros.  A file's range that is a hole
 * already (the blocks the pool frees are punched out) needs nothing; one
 * that holds data is zeroed and stays allocated (FALLOC_FL_ZERO_RANGE),
 * or, where the file system cannot (no support, or it is full), punched
 * out.  (The host file system's own space is not reserved for a range
 * that was a hole: a pool file on an over-committed file system should be
 * preallocated.)  A block device uses its write-zeroes (BLKZEROOUT).
 * What is left falls to dev_zero's writes of zeros. */
static int file_zero(struct vbas_dev *d, uint64_t off, uint64_t len)
{
	struct stat st;
	if (fstat(d->fd, &st) == 0 && S_ISBLK(st.st_mode)) {
		uint64_t range[2] = { off, len };
		return ioctl(d->fd, BLKZEROOUT, range) == 0 ? 0 : -EOPNOTSUPP;
	}
	off_t data = lseek(d->fd, (off_t)off, SEEK_DATA);
	if ((data < 0 && errno == ENXIO) || (data >= 0 && (uint64_t)data >= off + len))
		return 0;
	if (fallocate(d->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)off,
		      (off_t)len) == 0)
		return 0;
	if (fallocate(d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
		      (off_t)len) == 0)
		return 0;
	return -EOPNOTSUPP;
}

int dev_zero(struct vbas_dev *d, uint64_t off, uint64_t len)
{
	if (!len)
		return 0;
	if (d->ops->zero) {
		int r = d->ops->zero(d, off, len);
		if (r != -EOPNOTSUPP)
			return r;
	}
	size_t chunk = 1u << 20;
	void *z = NULL;
	if (posix_memalign(&z, 4096, chunk))
		return -ENOMEM;
	memset(z, 0, chunk);
	int r = 0;
	while (!r && len) {
		size_t n = len < chunk ? (size_t)len : chunk;
		r = dev_pwrite(d, z, n, off);
		off += n;
		len -= n;
	}
	free(z);
	return r;
}

static int file_grow(struct vbas_dev *d, uint64_t size)
{
	struct stat st;
	uint64_t have;
	if (fstat(d->fd, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(d->fd, BLKGETSIZE64, &have) < 0)
			return -errno;
	} else {
		have = (uint64_t)st.st_size;
		if (have < size) {
			if (size > (uint64_t)INT64_MAX)
				return -EFBIG;
			if (ftruncate(d->fd, (off_t)size) < 0)
				return -errno;
			have = size;
		}
	}
	if (have < size)
		return -ENOSPC;
	/* Readers look at the size without a lock; it only grows, and
	 * nothing reads past the old end before the pool says it may. */
	__atomic_store_n(&d->size, have, __ATOMIC_RELEASE);
	return 0;
}

static int file_truncate(struct vbas_dev *d, uint64_t size)
{
	struct stat st;
	if (fstat(d->fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size <= size)
		return 0;
	/* Nothing reads past the pool's end: the size can drop first. */
	__atomic_store_n(&d->size, size, __ATOMIC_RELEASE);
	if (ftruncate(d->fd, (off_t)size) < 0)
		return -errno;
	return fsync(d->fd) < 0 ? -errno : 0;
}

static void file_destroy(struct vbas_dev *d)
{
	struct file_dev *f = (struct file_dev *)d;
	close(d->fd);
	if (f->wait_fd >= 0)
		close(f->wait_fd);
	free(f->prealloc);
	for (int i = 0; i < BOUNCE_SLOTS; i++) {
		free(f->slot[i].buf);
		pthread_mutex_destroy(&f->slot[i].lock);
	}
	pthread_mutex_destroy(&f->stream_lock);
	free(f);
}

static const struct vbas_dev_ops file_ops = {
	.name = "file",
	.pread = file_pread,
	.pwrite = file_pwrite,
	.flush = file_flush,
	.discard = file_discard,
	.zero = file_zero,
	.grow = file_grow,
	.truncate = file_truncate,
	.destroy = file_destroy,
};

int vbas_dev_open_file(const char *path, unsigned flags, struct vbas_dev **devp)
{
	int oflags = (flags & VBAS_DEV_RDONLY) ? O_RDONLY : O_RDWR;
	int fd = -1, direct = 0;
	struct stat st;

	oflags |= O_CLOEXEC;
	if (flags & VBAS_DEV_CREATE)
		oflags |= O_CREAT;
	if (!(flags & VBAS_DEV_NO_DIRECT)) {
		fd = open(path, oflags | O_DIRECT, 0644);
		if (fd >= 0)
			direct = 1;
		else if (errno != EINVAL)
			return vbas_err(-errno, "open %s: %s", path, strerror(errno));
	}
	if (fd < 0) {
		fd = open(path, oflags, 0644);
		if (fd < 0)
			return vbas_err(-errno, "open %s: %s", path, strerror(errno));
	}
	if (fstat(fd, &st) < 0) {
		int e = errno;
		close(fd);
		return vbas_err(-e, "stat %s: %s", path, strerror(e));
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		close(fd);
		return vbas_err(-EINVAL, "%s is neither a regular file nor a block device", path);
	}
	if (!(flags & VBAS_DEV_NOLOCK)) {
		/* An open-file-description lock: held for as long as this
		 * descriptor is open, and it conflicts within one process too. */
		struct flock fl = { .l_type = (flags & VBAS_DEV_RDONLY) ? F_RDLCK : F_WRLCK,
				    .l_whence = SEEK_SET };
		if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
			int e = errno;
			close(fd);
			if (e == EAGAIN || e == EACCES)
				return vbas_err(-EBUSY, "%s: pool is in use by another process (locked)", path);
			return vbas_err(-e, "lock %s: %s", path, strerror(e));
		}
	}
	struct file_dev *f = calloc(1, sizeof(*f));
	if (!f) {
		close(fd);
		return -ENOMEM;
	}
	for (int i = 0; i < BOUNCE_SLOTS; i++)
		pthread_mutex_init(&f->slot[i].lock, NULL);
	pthread_mutex_init(&f->stream_lock, NULL);
	f->wait_fd = -1;
	if (!direct && !(flags & VBAS_DEV_RDONLY)) {
		/* The same file, opened anew (not dup: its own error report). */
		char self[64];
		struct stat ws;
		snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
		f->wait_fd = open(self, O_RDONLY | O_CLOEXEC);
		if (f->wait_fd >= 0 && (fstat(f->wait_fd, &ws) || ws.st_dev != st.st_dev ||
					ws.st_ino != st.st_ino || ws.st_rdev != st.st_rdev)) {
			close(f->wait_fd);
			f->wait_fd = -1;
		}
	}
	struct vbas_dev *d = &f->d;
	d->ops = &file_ops;
	d->fd = fd;
	d->direct = direct;
	d->align = direct ? DIRECT_ALIGN : 1;
	d->readonly = !!(flags & VBAS_DEV_RDONLY);
	if (S_ISBLK(st.st_mode)) {
		uint64_t sz = 0;
		if (ioctl(fd, BLKGETSIZE64, &sz) < 0) {
			int e = errno;
			file_destroy(d);
			return vbas_err(-e, "size of %s: %s", path, strerror(e));
		}
		/* The kernel lets a read-only device be opened for writing and
		 * fails the writes: refuse here, as a read-only file is. */
		int ro = 0;
		if (!d->readonly && ioctl(fd, BLKROGET, &ro) == 0 && ro) {
			file_destroy(d);
			return vbas_err(-EROFS, "open %s: %s (the device is read-only)", path,
					strerror(EROFS));
		}
		d->size = sz;
	} else {
		d->size = (uint64_t)st.st_size;
		if (!d->readonly && d->size) {
			f->pieces = ((d->size - 1) >> PREALLOC_SHIFT) + 1;
			if (f->pieces > PREALLOC_MAX_PIECES)
				f->pieces = PREALLOC_MAX_PIECES;
			f->prealloc = calloc((f->pieces - 1) / 64 + 1, sizeof(*f->prealloc));
		}
	}
	*devp = d;
	return 0;
}
