/* Spools: an external sort, runs merged through a heap (spool.h). */
#define _GNU_SOURCE
#include "spool.h"
#include "errmsg.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A source of sorted records: a run in the file, or the memory (BUF NULL). */
struct spool_src {
	char *buf;
	uint64_t off, end;         /* a run: next byte to read, its end */
	size_t bi, bn;             /* the record at hand, records in BUF (or MEM) */
};

void spool_init(struct spool *s, size_t rsize, int (*cmp)(const void *, const void *),
		size_t limit)
{
	memset(s, 0, sizeof(*s));
	s->rsize = rsize;
	s->cmp = cmp;
	s->limit = limit < 16 * rsize ? 16 * rsize : limit;
	s->fd = -1;
	/* A read buffer per run being merged: up to SPOOL_RUN_BUF, an eighth
	 * of the limit at least, whole records; as many runs at once as
	 * buffers fit in the limit. */
	size_t b = s->limit / 8 < SPOOL_RUN_BUF ? s->limit / 8 : SPOOL_RUN_BUF;
	b -= b % rsize;
	s->bufb = b < rsize ? rsize : b;
	s->fanin = s->limit / s->bufb < 2 ? 2 : s->limit / s->bufb;
}

static int tmp_file(void)
{
	const char *dir = getenv("TMPDIR");
	if (!dir || !*dir)
		dir = "/var/tmp";
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/vbas-spool.XXXXXX", dir);
		fd = mkostemp(path, O_CLOEXEC);
		if (fd >= 0)
			unlink(path);
	}
	if (fd < 0)
		return vbas_err(-errno, "cannot make a temporary file in %s (set TMPDIR): %s", dir,
				strerror(errno));
	return fd;
}

static int full_pwrite(int fd, const char *b, size_t len, uint64_t off)
{
	while (len) {
		ssize_t w = pwrite(fd, b, len, (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			int e = w < 0 ? errno : ENOSPC;
			return vbas_err(-e, "cannot write a temporary file (TMPDIR, else /var/tmp): %s",
					strerror(e));
		}
		b += w;
		len -= (size_t)w;
		off += (uint64_t)w;
	}
	return 0;
}

/* Memory full: sort it and write it out as one run. */
static int spill(struct spool *s)
{
	int r;
	if (s->fd < 0) {
		r = tmp_file();
		if (r < 0)
			return r;
		s->fd = r;
	}
	if (s->nruns == s->caprun) {
		size_t nc = s->caprun ? 2 * s->caprun : 16;
		uint64_t *v = realloc(s->run_end, nc * sizeof(*v));
		if (v)
			s->run_end = v;
		uint64_t *w = v ? realloc(s->run_off, nc * sizeof(*w)) : NULL;
		if (!w)
			return vbas_err(-ENOMEM, "no memory for a spool's runs");
		s->run_off = w;
		s->caprun = nc;
	}
	qsort(s->mem, s->n, s->rsize, s->cmp);
	r = full_pwrite(s->fd, s->mem, s->n * s->rsize, s->spilled);
	if (r)
		return r;
	s->run_off[s->nruns] = s->spilled;
	s->spilled += s->n * s->rsize;
	s->run_end[s->nruns++] = s->spilled;
	s->n = 0;
	return 0;
}

int spool_add(struct spool *s, const void *rec)
{
	if (s->n == s->cap) {
		size_t most = s->limit / s->rsize;
		if (s->cap < most) {
			size_t nc = s->cap ? 2 * s->cap : 256;
			if (nc > most)
				nc = most;
			char *m = realloc(s->mem, nc * s->rsize);
			if (!m)
				return vbas_err(-ENOMEM, "no memory for a spool");
			s->mem = m;
			s->cap = nc;
		} else {
			int r = spill(s);
			if (r)
				return r;
		}
	}
	memcpy(s->mem + s->n * s->rsize, rec, s->rsize);
	s->n++;
	s->count++;
	s->sorted = 0;
	return 0;
}

static const void *cur(const struct spool *s, size_t i)
{
	const struct spool_src *x = &s->src[i];
	return (x->buf ? x->buf : s->mem) + x->bi * s->rsize;
}

/* Source I's next record at hand: 1, 0 when it has no more, or an error. */
static int fill(struct spool *s, size_t i)
{
	struct spool_src *x = &s->src[i];
	if (x->bi < x->bn)
		return 1;
	if (!x->buf || x->off >= x->end)
		return 0;
	size_t per = s->bufb / s->rsize;
	uint64_t left = (x->end - x->off) / s->rsize;
	size_t want = left < per ? (size_t)left : per;
	size_t got = 0;
	while (got < want * s->rsize) {
		ssize_t n = pread(s->fd, x->buf + got, want * s->rsize - got, (off_t)(x->off + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return vbas_err(n < 0 ? -errno : -EIO, "cannot read back a temporary file: %s",
					n < 0 ? strerror(errno) : "it ended early");
		got += (size_t)n;
	}
	x->off += got;
	x->bi = 0;
	x->bn = want;
	return 1;
}

static int heap_less(const struct spool *s, size_t a, size_t b)
{
	int d = s->cmp(cur(s, a), cur(s, b));
	return d < 0 || (d == 0 && a < b);
}

static void sift_down(struct spool *s, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, m = i;
		if (l < s->hn && heap_less(s, s->heap[l], s->heap[m]))
			m = l;
		if (l + 1 < s->hn && heap_less(s, s->heap[l + 1], s->heap[m]))
			m = l + 1;
		if (m == i)
			return;
		size_t t = s->heap[i];
		s->heap[i] = s->heap[m];
		s->heap[m] = t;
		i = m;
	}
}

static void free_srcs(struct spool *s)
{
	for (size_t i = 0; i < s->nsrc; i++)
		free(s->src[i].buf);
	free(s->src);
	free(s->heap);
	s->src = NULL;
	s->heap = NULL;
	s->nsrc = s->hn = 0;
}

/* Read runs [FIRST, FIRST+K) and, if MEMTOO, the memory, merged. */
static int merge_setup(struct spool *s, size_t first, size_t k, int memtoo)
{
	free_srcs(s);
	size_t nsrc = k + !!memtoo;
	s->src = calloc(nsrc ? nsrc : 1, sizeof(*s->src));
	s->heap = malloc((nsrc ? nsrc : 1) * sizeof(*s->heap));
	if (!s->src || !s->heap)
		return vbas_err(-ENOMEM, "no memory to read a spool");
	s->nsrc = nsrc;
	for (size_t i = 0; i < nsrc; i++) {
		struct spool_src *x = &s->src[i];
		if (i < k) {
			if (!(x->buf = malloc(s->bufb)))
				return vbas_err(-ENOMEM, "no memory to read a spool");
			x->off = s->run_off[first + i];
			x->end = s->run_end[first + i];
		} else {
			x->bn = s->n;          /* the memory */
		}
		int r = fill(s, i);
		if (r < 0)
			return r;
		if (r)
			s->heap[s->hn++] = i;
	}
	for (size_t i = s->hn / 2; i-- > 0;)
		sift_down(s, i);
	return 0;
}

/* More runs than one merge reads at once (FANIN, so that their buffers
 * stay within the limit): merge them FANIN at a time into longer runs,
 * written after them in the file, until few enough remain. */
static int merge_pass(struct spool *s)
{
	size_t nn = (s->nruns + s->fanin - 1) / s->fanin, m = 0;
	uint64_t *off = malloc(nn * sizeof(*off)), *end = malloc(nn * sizeof(*end));
	char *out = malloc(s->bufb), *rec = malloc(s->rsize);
	int r = 0;
	if (!off || !end || !out || !rec)
		r = vbas_err(-ENOMEM, "no memory to merge a spool");
	for (size_t i = 0; !r && i < s->nruns; i += s->fanin) {
		size_t k = s->nruns - i < s->fanin ? s->nruns - i : s->fanin;
		off[m] = s->spilled;
		r = merge_setup(s, i, k, 0);
		size_t ob = 0;
		while (!r && (r = spool_next(s, rec)) == 1) {
			memcpy(out + ob, rec, s->rsize);
			ob += s->rsize;
			r = 0;
			if (ob + s->rsize > s->bufb) {
				r = full_pwrite(s->fd, out, ob, s->spilled);
				s->spilled += ob;
				ob = 0;
			}
		}
		if (!r && ob) {
			r = full_pwrite(s->fd, out, ob, s->spilled);
			s->spilled += ob;
		}
		if (r > 0)
			r = 0;
		end[m++] = s->spilled;
	}
	free(out);
	free(rec);
	free_srcs(s);
	if (r) {
		free(off);
		free(end);
		return r;
	}
	free(s->run_off);
	free(s->run_end);
	s->run_off = off;
	s->run_end = end;
	s->nruns = s->caprun = m;
	return 0;
}

int spool_rewind(struct spool *s)
{
	if (!s->sorted) {
		if (s->n)
			qsort(s->mem, s->n, s->rsize, s->cmp);
		s->sorted = 1;
	}
	while (s->nruns > s->fanin) {
		int r = merge_pass(s);
		if (r)
			return r;
	}
	return merge_setup(s, 0, s->nruns, 1);
}

int spool_next(struct spool *s, void *rec)
{
	if (!s->hn)
		return 0;
	size_t i = s->heap[0];
	memcpy(rec, cur(s, i), s->rsize);
	s->src[i].bi++;
	int r = fill(s, i);
	if (r < 0)
		return r;
	if (!r)
		s->heap[0] = s->heap[--s->hn];
	sift_down(s, 0);
	return 1;
}

void spool_free(struct spool *s)
{
	free_srcs(s);
	free(s->mem);
	free(s->run_off);
	free(s->run_end);
	if (s->fd >= 0)
		close(s->fd);
	memset(s, 0, sizeof(*s));
	s->fd = -1;
}
