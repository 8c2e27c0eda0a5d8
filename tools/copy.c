/* Copying a byte stream into a volume, sparse (copy.h). */

#define _GNU_SOURCE
#include "copy.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int write_full(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* All of B[0, N) is zero. */
static int all_zero(const char *b, size_t n)
{
	return !n || (!b[0] && !memcmp(b, b + 1, n - 1));
}

int split_zero_blocks(const char *buf, size_t n, uint64_t voff, uint32_t bs,
		      int (*cb)(void *, size_t, size_t, int), void *arg)
{
	size_t i = 0, start = 0;
	int cur = -1;
	while (i < n) {
		size_t into = (size_t)((voff + i) % bs), seg = bs - into;
		if (seg > n - i)
			seg = n - i;
		int z = !into && seg == bs && all_zero(buf + i, bs);
		if (cur >= 0 && z != cur) {
			int r = cb(arg, start, i - start, cur);
			if (r)
				return r;
			start = i;
		}
		cur = z;
		i += seg;
	}
	return cur >= 0 ? cb(arg, start, i - start, cur) : 0;
}

struct wr {
	struct vbas_vol *vol;
	const char *buf;
	uint64_t off;          /* volume offset of BUF[0] */
	int err;               /* the library's error */
};

static int wr_piece(void *arg, size_t at, size_t len, int zero)
{
	struct wr *w = arg;
	int r = zero ? vbas_write_zeroes(w->vol, w->off + at, len, 0)
		     : vbas_pwrite(w->vol, w->buf + at, len, w->off + at, 0);
	if (r)
		w->err = r;
	return r;
}

__attribute__((format(printf, 4, 5)))
static int copy_fail(struct copy_in *c, enum copy_fault f, int err, const char *fmt, ...)
{
	c->fault = f;
	c->err = err;
	c->msg[0] = 0;
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(c->msg, sizeof(c->msg), fmt, ap);
		va_end(ap);
	}
	return -1;
}

static int copy_run(struct copy_in *c, char *buf, uint64_t size)
{
	uint64_t src = 0, src_size = 0;
	int holes = 0, r;
	struct stat st;
	if (c->off > size)
		return copy_fail(c, COPY_VOLUME, EINVAL, "offset %" PRIu64 " is past the end of "
				 "the volume (%" PRIu64 " bytes)", c->off, size);
	if (fstat(c->fd, &st) == 0 && S_ISREG(st.st_mode) && lseek(c->fd, 0, SEEK_CUR) == 0) {
		holes = 1;             /* SEEK_DATA finds its data */
		src_size = (uint64_t)st.st_size;
	}
	if (holes && src_size > size - c->off)
		/* (Nothing is written: the whole file is known not to fit.) */
		return copy_fail(c, COPY_VOLUME, ENOSPC, "write of %" PRIu64 " bytes at offset %"
				 PRIu64 " goes past the end of the volume (%" PRIu64 " bytes)",
				 src_size, c->off, size);
	for (;;) {
		ssize_t n;
		int stop = 0;
		if (c->before_read && (r = c->before_read(c->fd, c->arg)))
			return copy_fail(c, COPY_STOPPED, r, NULL);
		if (holes) {
			/* A hole of the source up to its next data: zeros. */
			off_t d = lseek(c->fd, (off_t)src, SEEK_DATA);
			if (d < 0 && errno == EINVAL)
				d = (off_t)src;        /* no SEEK_DATA here: all data */
			uint64_t data = d < 0 ? src_size : (uint64_t)d;
			if (d < 0 && errno != ENXIO)
				return copy_fail(c, COPY_SOURCE, errno, "seek: %s", strerror(errno));
			if (data > src) {
				r = vbas_write_zeroes(c->vol, c->off, data - src, 0);
				if (r)
					return copy_fail(c, COPY_LIBRARY, -r, NULL);
				c->off += data - src;
				c->total += data - src;
				src = data;
			}
			if (src >= src_size)
				return 0;
			off_t h = lseek(c->fd, (off_t)src, SEEK_HOLE);
			uint64_t want = h < 0 ? src_size - src : (uint64_t)h - src;
			if (want > COPY_CHUNK)
				want = COPY_CHUNK;
			n = pread(c->fd, buf, (size_t)want, (off_t)src);
			if (n == 0)
				return copy_fail(c, COPY_SOURCE, EIO, "read: it ended at %" PRIu64
						 " bytes, not %" PRIu64 " (changed while read?)", src,
						 src_size);
		} else {
			/* A pipe's chunk comes by read() calls, BEFORE_READ before
			 * each: a stop is seen while the source is idle, and what
			 * came in before it is written. */
			size_t got = 0;
			int first = 1;
			n = 0;
			while (got < COPY_CHUNK) {
				if (!first && c->before_read && (stop = c->before_read(c->fd, c->arg)))
					break;
				first = 0;
				ssize_t k = read(c->fd, buf + got, COPY_CHUNK - got);
				if (k < 0 && errno == EINTR)
					continue;
				if (k < 0) {
					n = -1;
					break;
				}
				if (k == 0)
					break;
				got += (size_t)k;
			}
			if (n == 0)
				n = (ssize_t)got;
		}
		if (n < 0)
			return copy_fail(c, COPY_SOURCE, errno, "read: %s", strerror(errno));
		if (n == 0)
			return stop ? copy_fail(c, COPY_STOPPED, stop, NULL) : 0;
		if ((uint64_t)n > size - c->off)
			/* Nothing of a chunk that does not fit is written. */
			return copy_fail(c, COPY_VOLUME, ENOSPC, "write of %zd bytes at offset %"
					 PRIu64 " goes past the end of the volume (%" PRIu64
					 " bytes)", n, c->off, size);
		struct wr w = { c->vol, buf, c->off, 0 };
		if (split_zero_blocks(buf, (size_t)n, c->off, c->block_size, wr_piece, &w))
			return copy_fail(c, COPY_LIBRARY, -w.err, NULL);
		c->off += (uint64_t)n;
		src += (uint64_t)n;
		c->total += (uint64_t)n;
		if (stop)
			return copy_fail(c, COPY_STOPPED, stop, NULL);
	}
}

int copy_in(struct copy_in *c)
{
	struct vbas_vol_info info;
	void *buf;
	c->total = 0;
	int r = vbas_vol_info(c->vol, &info);
	if (r)
		return copy_fail(c, COPY_LIBRARY, -r, NULL);
	if (posix_memalign(&buf, 4096, COPY_CHUNK))
		return copy_fail(c, COPY_SOURCE, ENOMEM, "%s", strerror(ENOMEM));
	r = copy_run(c, buf, info.size);
	free(buf);
	return r;
}
