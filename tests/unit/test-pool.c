/* Pools on real files: format and open errors, the lock against a second
 * opener, filling a thin pool until ENOSPC and going on, SIGKILL during
 * writes, the extent map, writes over ranges cut into pieces, the
 * preallocation of sparse pool files, pools without O_DIRECT, and the
 * spare room of the public structs (the ABI). */
#include "common.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[256];

static const char *path(const char *name)
{
	static char buf[512];
	snprintf(buf, sizeof(buf), "%s/%s", dir, name);
	return buf;
}

static int setup(void **state)
{
	(void)state;
	const char *t = getenv("TMPDIR");
	snprintf(dir, sizeof(dir), "%s/vbas-test-XXXXXX", t ? t : "/var/tmp");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[600];
	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd);
}

static void t_format_errors(void **state)
{
	struct vbas_format_opts fo = { .size = 64 << 20 };
	struct vbas_pool *p;
	(void)state;
	assert_ok(vbas_format(path("a.pool"), &fo));
	assert_int_equal(vbas_format(path("a.pool"), &fo), -EEXIST);
	assert_non_null(strstr(vbas_errmsg(), "--force"));
	fo.flags = VBAS_FORMAT_FORCE;
	assert_ok(vbas_format(path("a.pool"), &fo));
	fo.block_size = 3000;
	assert_int_equal(vbas_format(path("b.pool"), &fo), -EINVAL);
	fo.block_size = 2 << 20;
	assert_int_equal(vbas_format(path("b.pool"), &fo), -EINVAL);
	fo.block_size = 0;
	fo.size = 100 * 1024;
	assert_int_equal(vbas_format(path("b.pool"), &fo), -ENOSPC);
	fo.size = 0;
	assert_int_equal(vbas_format(path("nosuch/dir.pool"), &fo), -EINVAL);
	assert_int_equal(vbas_open(path("nosuch.pool"), NULL, &p), -ENOENT);
	/* A file that is not a pool. */
	int fd = open(path("junk"), O_CREAT | O_WRONLY, 0644);
	char junk[65536];
	memset(junk, 0x77, sizeof(junk));
	assert_int_equal(write(fd, junk, sizeof(junk)), sizeof(junk));
	close(fd);
	assert_int_equal(vbas_open(path("junk"), NULL, &p), -EINVAL);
	assert_non_null(strstr(vbas_errmsg(), "not a vbas pool"));
	/* Names and sizes. */
	assert_ok(vbas_open(path("a.pool"), NULL, &p));
	assert_int_equal(vbas_vol_create(p, "", 4096), -EINVAL);
	assert_int_equal(vbas_vol_create(p, "a/b", 4096), -EINVAL);
	char longname[300];
	memset(longname, 'n', 256);
	longname[256] = 0;
	assert_int_equal(vbas_vol_create(p, longname, 4096), -ENAMETOOLONG);
	longname[255] = 0;
	assert_ok(vbas_vol_create(p, longname, 4096));
	assert_int_equal(vbas_vol_create(p, "x", 4095), -EINVAL);
	assert_int_equal(vbas_vol_create(p, "x", 0), -EINVAL);
	assert_int_equal(vbas_vol_create(p, "x", 1ull << 62), -EFBIG);
	assert_int_equal(vbas_vol_delete(p, "nosuch"), -ENOENT);
	assert_int_equal(vbas_vol_resize(p, "nosuch", 4096), -ENOENT);
	assert_ok(vbas_close(p));
}

static void t_second_opener(void **state)
{
	struct vbas_format_opts fo = { .size = 64 << 20 };
	struct vbas_pool *p, *q;
	(void)state;
	assert_ok(vbas_format(path("lock.pool"), &fo));
	assert_ok(vbas_open(path("lock.pool"), NULL, &p));
	assert_int_equal(vbas_open(path("lock.pool"), NULL, &q), -EBUSY);
	assert_non_null(strstr(vbas_errmsg(), "in use"));
	/* Formatting it under the opener is refused too. */
	fo.flags = VBAS_FORMAT_FORCE;
	assert_int_equal(vbas_format(path("lock.pool"), &fo), -EBUSY);
	assert_ok(vbas_close(p));
	assert_ok(vbas_open(path("lock.pool"), NULL, &q));
	assert_ok(vbas_close(q));
}

/* A 1 GiB pool with two 10 GiB volumes, filled until ENOSPC: the failing
 * write changes nothing, and reads, overwrites, discard, delete, commit
 * and reopen all keep working. */
static void t_fill_thin_pool(void **state)
{
	struct vbas_format_opts fo = { .size = 1ull << 30 };
	struct vbas_pool *p;
	struct vbas_vol *a, *b;
	struct rng r = { test_seed(41) };
	const size_t chunk = 1 << 20;
	uint8_t *buf = malloc(chunk), *rd = malloc(chunk);
	uint64_t off = 0;
	int e = 0;
	(void)state;
	assert_ok(vbas_format(path("thin.pool"), &fo));
	assert_ok(vbas_open(path("thin.pool"), NULL, &p));
	assert_ok(vbas_vol_create(p, "a", 10ull << 30));
	assert_ok(vbas_vol_create(p, "b", 10ull << 30));
	assert_ok(vbas_vol_open(p, "a", &a));
	assert_ok(vbas_vol_open(p, "b", &b));
	/* Each chunk starts with its index: enough to verify every one. */
	memset(buf, 0xa5, chunk);
	for (uint64_t i = 0;; i++) {
		memcpy(buf, &i, 8);
		e = vbas_pwrite(i % 2 ? b : a, buf, chunk, (i / 2) * chunk, 0);
		if (e)
			break;
		off = i + 1;
	}
	assert_int_equal(e, -ENOSPC);
	assert_non_null(strstr(vbas_errmsg(), "full"));
	assert_true(off > 900);         /* most of the pool holds data */
	/* The failed chunk left nothing behind. */
	assert_ok(vbas_pread(off % 2 ? b : a, rd, chunk, (off / 2) * chunk));
	for (size_t k = 0; k < chunk; k++)
		assert_int_equal(rd[k], 0);
	/* Everything written reads back. */
	for (uint64_t i = 0; i < off; i++) {
		uint64_t got;
		assert_ok(vbas_pread(i % 2 ? b : a, rd, chunk, (i / 2) * chunk));
		memcpy(&got, rd, 8);
		assert_int_equal(got, i);
		assert_int_equal(rd[chunk - 1], 0xa5);
	}
	/* Overwrites of mapped blocks need no space. */
	rng_fill(&r, buf, chunk);
	assert_ok(vbas_pwrite(a, buf, chunk, 0, 0));
	assert_ok(vbas_pread(a, rd, chunk, 0));
	assert_memory_equal(buf, rd, chunk);
	assert_ok(vbas_flush(p));
	vbas_vol_close(b);
	/* Delete gives the space back; the next write succeeds. */
	assert_ok(vbas_vol_delete(p, "b"));
	assert_ok(vbas_pwrite(a, buf, chunk, 5ull << 30, 0));
	assert_check_clean(p);
	vbas_vol_close(a);
	assert_ok(vbas_close(p));
	assert_ok(vbas_open(path("thin.pool"), NULL, &p));
	assert_check_clean(p);
	assert_ok(vbas_vol_open(p, "a", &a));
	assert_ok(vbas_pread(a, rd, chunk, 5ull << 30));
	assert_memory_equal(buf, rd, chunk);
	vbas_vol_close(a);
	assert_ok(vbas_close(p));
	free(buf);
	free(rd);
}

/* SIGKILL in the middle of writes: the pool opens, passes check and holds
 * everything written before the last flush. */
static void t_sigkill(void **state)
{
	struct vbas_format_opts fo = { .size = 256 << 20 };
	int pfd[2];
	(void)state;
	assert_ok(vbas_format(path("kill.pool"), &fo));
	assert_int_equal(pipe(pfd), 0);
	pid_t pid = fork();
	if (pid == 0) {
		struct vbas_pool *p;
		struct vbas_vol *v;
		uint8_t buf[65536];
		close(pfd[0]);
		if (vbas_open(path("kill.pool"), NULL, &p) || vbas_vol_create(p, "v", 1 << 30) ||
		    vbas_vol_open(p, "v", &v))
			_exit(2);
		for (uint64_t i = 0;; i++) {
			memset(buf, (int)(i & 0xff), sizeof(buf));
			memcpy(buf, &i, 8);
			if (vbas_pwrite(v, buf, sizeof(buf), (i * 7919 % 16000) * sizeof(buf), 0))
				_exit(3);
			if (i % 50 == 49) {
				if (vbas_flush(p))
					_exit(4);
				/* Tell the parent what is durable now. */
				if (write(pfd[1], &i, 8) != 8)
					_exit(5);
			}
		}
	}
	close(pfd[1]);
	uint64_t durable = 0, n;
	for (int k = 0; k < 12 && read(pfd[0], &n, 8) == 8; k++)
		durable = n;
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	while (read(pfd[0], &n, 8) == 8)
		durable = n;
	close(pfd[0]);
	assert_true(durable >= 49);
	struct vbas_pool *p;
	struct vbas_vol *v;
	assert_ok(vbas_open(path("kill.pool"), NULL, &p));
	assert_check_clean(p);
	assert_ok(vbas_vol_open(p, "v", &v));
	/* The last write to each slot at or before DURABLE is there (or a
	 * later one, written after the flush). */
	uint8_t buf[65536];
	for (uint64_t i = 0; i <= durable; i++) {
		uint64_t slot = i * 7919 % 16000, got;
		assert_ok(vbas_pread(v, buf, sizeof(buf), slot * sizeof(buf)));
		memcpy(&got, buf, 8);
		assert_true(got >= i);
		assert_int_equal(got * 7919 % 16000, slot);
		assert_int_equal(buf[sizeof(buf) - 1], got & 0xff);
	}
	vbas_vol_close(v);
	assert_ok(vbas_close(p));
}

static int ext_cb(const struct vbas_extent *e, void *arg)
{
	struct vbas_extent *out = arg;
	int i = 0;
	while (out[i].length)
		i++;
	out[i] = *e;
	return 0;
}

static void t_extents_and_zeroes(void **state)
{
	struct vbas_dev *d = mem_pool(32 << 20, 4096, 0);
	struct vbas_pool *p = open_mem(d, 0);
	struct vbas_vol *v;
	struct vbas_extent ex[16];
	uint8_t buf[3 * 4096], rd[3 * 4096];
	(void)state;
	assert_ok(vbas_vol_create(p, "v", 1 << 20));
	assert_ok(vbas_vol_open(p, "v", &v));
	memset(buf, 0x11, sizeof(buf));
	assert_ok(vbas_pwrite(v, buf, sizeof(buf), 8192, 0));     /* blocks 2..4 */
	assert_ok(vbas_pwrite(v, buf, 100, 65536 + 10, 0));       /* block 16 */
	memset(ex, 0, sizeof(ex));
	assert_ok(vbas_extents(v, 0, 1 << 20, ext_cb, ex));
	assert_int_equal(ex[0].offset, 8192);
	assert_int_equal(ex[0].length, 3 * 4096);
	assert_int_equal(ex[1].offset, 65536);
	assert_int_equal(ex[1].length, 4096);
	assert_int_equal(ex[2].length, 0);
	/* Clipped to the range asked for. */
	memset(ex, 0, sizeof(ex));
	assert_ok(vbas_extents(v, 10000, 100, ext_cb, ex));
	assert_int_equal(ex[0].offset, 10000);
	assert_int_equal(ex[0].length, 100);
	/* Zeroing across blocks: partial edges in place, middle unmapped. */
	assert_ok(vbas_write_zeroes(v, 8192 + 100, 2 * 4096, 0));
	assert_ok(vbas_pread(v, rd, sizeof(rd), 8192));
	for (size_t k = 0; k < sizeof(rd); k++)
		assert_int_equal(rd[k], k >= 100 && k < 100 + 2 * 4096 ? 0 : 0x11);
	struct vbas_vol_info info;
	assert_ok(vbas_vol_info(v, &info));
	assert_int_equal(info.mapped, 3 * 4096);   /* 2, 4 and 16; 3 punched */
	/* Past the end, and bad flags. */
	assert_int_equal(vbas_pwrite(v, buf, 10, (1 << 20) - 5, 0), -ERANGE);
	assert_int_equal(vbas_pread(v, rd, 10, 1 << 20), -ERANGE);
	assert_int_equal(vbas_discard(v, 1 << 20, 4096, 0), -ERANGE);
	assert_int_equal(vbas_pwrite(v, buf, 10, 0, 0x80), -EINVAL);
	/* A mapping held by one writer keeps the blocks locked; map_end with
	 * an error abandons the new blocks. */
	struct vbas_iomap m;
	assert_ok(vbas_map_begin(v, 1 << 19, 8192, VBAS_MAP_WRITE, NULL, &m));
	assert_int_equal(m.type, VBAS_IOMAP_NEW);
	assert_ok(vbas_map_end(v, &m, 0, -EIO));
	assert_ok(vbas_vol_info(v, &info));
	assert_int_equal(info.mapped, 3 * 4096);
	vbas_vol_close(v);
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	dev_destroy(d);
}

/* Every bad argument to the sharing calls: a specific error, and nothing
 * changes (the data read back, check clean). */
static void t_sharing_bad_input(void **state)
{
	struct vbas_dev *d1 = mem_pool(32 << 20, 4096, 0), *d2 = mem_pool(32 << 20, 4096, 0);
	struct vbas_pool *p = open_mem(d1, 0), *q = open_mem(d2, 0);
	struct vbas_vol *a, *s, *o;
	char buf[8192], back[8192];
	int same = -1;
	(void)state;
	memset(buf, 0x5a, sizeof(buf));
	assert_ok(vbas_vol_create(p, "a", 1 << 20));
	assert_ok(vbas_vol_create(q, "o", 1 << 20));
	assert_ok(vbas_vol_open(p, "a", &a));
	assert_ok(vbas_pwrite(a, buf, sizeof(buf), 0, 0));
	assert_int_equal(vbas_vol_snapshot(p, "a", "s", 0x8), -EINVAL);
	assert_int_equal(vbas_vol_snapshot(p, "a", "x/y", 0), -EINVAL);
	assert_int_equal(vbas_vol_snapshot(p, "a", "", 0), -EINVAL);
	assert_int_equal(vbas_vol_snapshot(p, "nope", "s", 0), -ENOENT);
	assert_int_equal(vbas_vol_snapshot(p, "a", "a", 0), -EEXIST);
	assert_ok(vbas_vol_snapshot(p, "a", "s", 0));
	assert_ok(vbas_vol_open(p, "s", &s));
	assert_ok(vbas_vol_open(q, "o", &o));
	assert_int_equal(vbas_reflink(a, 0, o, 0, 4096), -EXDEV);
	assert_int_equal(vbas_dedupe(a, 0, o, 0, 4096, &same), -EXDEV);
	assert_int_equal(vbas_diff(a, o, NULL, NULL), -EXDEV);
	assert_int_equal(vbas_reflink(a, 0, s, 0, 4096), -EROFS);
	assert_int_equal(vbas_dedupe(a, 0, s, 0, 4096, &same), -EROFS);
	assert_int_equal(same, 0);
	assert_int_equal(vbas_reflink(a, 0, a, 4096, 8192), -EINVAL);    /* overlap */
	assert_int_equal(vbas_reflink(a, 0, a, 1 << 20, 4096), -ERANGE);
	assert_int_equal(vbas_unshare(s, 0, 0), -EROFS);
	assert_int_equal(vbas_unshare(a, 100, 4096), -EINVAL);
	assert_int_equal(vbas_unshare(a, 1 << 20, 4096), -ERANGE);
	assert_int_equal(vbas_unshare(a, 0, 2 << 20), -ERANGE);
	assert_int_equal(vbas_pwrite(s, buf, 10, 0, 0), -EROFS);
	assert_int_equal(vbas_discard(s, 0, 4096, 0), -EROFS);
	assert_int_equal(vbas_vol_resize(p, "s", 2 << 20), -EROFS);
	assert_ok(vbas_pread(a, back, sizeof(back), 0));
	assert_memory_equal(back, buf, sizeof(buf));
	assert_ok(vbas_pread(s, back, sizeof(back), 0));
	assert_memory_equal(back, buf, sizeof(buf));
	assert_check_clean(p);
	vbas_vol_close(a);
	vbas_vol_close(s);
	vbas_vol_close(o);
	assert_ok(vbas_close(p));
	assert_ok(vbas_close(q));
	dev_destroy(d1);
	dev_destroy(d2);
}

/* A sparse pool file: the first write into each 8 MiB piece allocates the
 * whole piece on the file system; the file keeps its size (the last piece
 * is cut at the end); a read-only open allocates nothing. */
static void t_prealloc(void **state)
{
	const char *f = path("sparse.img");
	struct vbas_format_opts fo = { .size = (20 << 20) + 3 * 4096 };
	struct vbas_open_opts ro = { .flags = VBAS_OPEN_RDONLY };
	struct vbas_pool *p;
	struct vbas_vol *v;
	struct stat st;
	char buf[4096], back[4096];
	(void)state;
	assert_ok(vbas_format(f, &fo));
	assert_int_equal(stat(f, &st), 0);
	assert_true(st.st_blocks * 512 < (1 << 20));    /* format leaves it sparse */
	assert_ok(vbas_open(f, NULL, &p));
	assert_ok(vbas_vol_create(p, "v", 1 << 20));
	assert_ok(vbas_vol_open(p, "v", &v));
	memset(buf, 0x3c, sizeof(buf));
	assert_ok(vbas_pwrite(v, buf, sizeof(buf), 0, 0));
	vbas_vol_close(v);
	assert_ok(vbas_close(p));
	assert_int_equal(stat(f, &st), 0);
	assert_int_equal(st.st_size, fo.size);
	if (st.st_blocks * 512 < (8 << 20))
		fail_msg("%lld KiB of the pool file allocated, want a whole 8 MiB piece "
			 "(does $TMPDIR's file system support fallocate?)",
			 (long long)st.st_blocks / 2);
	blkcnt_t written = st.st_blocks;
	assert_ok(vbas_open(f, &ro, &p));
	assert_ok(vbas_vol_open(p, "v", &v));
	assert_ok(vbas_pread(v, back, sizeof(back), 0));
	assert_memory_equal(back, buf, sizeof(buf));
	assert_ok(vbas_pread(v, back, sizeof(back), 8192));
	for (size_t i = 0; i < sizeof(back); i++)
		assert_int_equal(back[i], 0);
	assert_check_clean(p);
	vbas_vol_close(v);
	assert_ok(vbas_close(p));
	assert_int_equal(stat(f, &st), 0);
	assert_int_equal(st.st_blocks, written);
	assert_int_equal(st.st_size, fo.size);
}

/* Bytes of FILE in the page cache (mincore), or -1 where the file system
 * keeps every page (tmpfs, ramfs) and the question means nothing. */
static long long cached_bytes(const char *file)
{
	struct statfs sf;
	struct stat st;
	long long n = 0;
	long pg = sysconf(_SC_PAGESIZE);
	assert_int_equal(statfs(file, &sf), 0);
	if (sf.f_type == TMPFS_MAGIC || sf.f_type == RAMFS_MAGIC)
		return -1;
	int fd = open(file, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	assert_true(m != MAP_FAILED);
	size_t npg = ((size_t)st.st_size + (size_t)pg - 1) / (size_t)pg;
	unsigned char *vec = malloc(npg);
	assert_non_null(vec);
	assert_int_equal(mincore(m, (size_t)st.st_size, vec), 0);
	for (size_t i = 0; i < npg; i++)
		n += (vec[i] & 1) ? pg : 0;
	free(vec);
	munmap(m, (size_t)st.st_size);
	close(fd);
	return n;
}

/* A pool opened without O_DIRECT (the page cache): a stream of large
 * writes keeps only its last few MiB in the cache (it is written out as it
 * goes and its older pages dropped), and what it wrote reads back byte for
 * byte after a reopen with O_DIRECT, and check is clean. */
static void t_buffered(void **state)
{
	const char *f = path("buffered.img");
	struct vbas_format_opts fo = { .size = 64 << 20 };
	struct vbas_open_opts nd = { .flags = VBAS_OPEN_NO_DIRECT };
	enum { LEN = 20 << 20 };
	struct rng r = { 7 };
	struct vbas_pool *p;
	struct vbas_vol *v;
	char *buf = malloc(LEN), *back = malloc(LEN);
	(void)state;
	assert_true(buf && back);
	rng_fill(&r, buf, LEN);
	assert_ok(vbas_format(f, &fo));
	assert_ok(vbas_open(f, &nd, &p));
	assert_ok(vbas_vol_create(p, "v", 32 << 20));
	assert_ok(vbas_vol_open(p, "v", &v));
	/* In 1 MiB writes and one unaligned one, past the write-behind step. */
	for (size_t o = 0; o < LEN; o += 1 << 20)
		assert_ok(vbas_pwrite(v, buf + o, 1 << 20, o, 0));
	long long cached = cached_bytes(f);
	if (cached > (12 << 20))
		fail_msg("%lld KiB of the pool file in the page cache after a 20 MiB stream; "
			 "the write-behind window is 8 MiB", cached >> 10);
	rng_fill(&r, buf + 5000, 70000);
	assert_ok(vbas_pwrite(v, buf + 5000, 70000, 5000, 0));
	vbas_vol_close(v);
	assert_ok(vbas_close(p));
	assert_ok(vbas_open(f, NULL, &p));
	assert_ok(vbas_vol_open(p, "v", &v));
	assert_ok(vbas_pread(v, back, LEN, 0));
	assert_memory_equal(back, buf, LEN);
	assert_check_clean(p);
	vbas_vol_close(v);
	assert_ok(vbas_close(p));
	free(buf);
	free(back);
	/* The data read back; the cache was not measured: say so. */
	if (cached < 0) {
		print_message("# TMPDIR is a tmpfs or ramfs: its pages cannot be dropped, so the "
			      "write-behind window was not measured\n");
		skip();
	}
}

/* A device that counts the writes of at least 1 MiB made through it. */
struct countdev {
	struct wrapdev w;
	int big_writes;
	int flushes;
};

static int c_flush(struct vbas_dev *d)
{
	((struct countdev *)d)->flushes++;
	return wrap_flush(d);
}

static int c_pwrite(struct vbas_dev *d, const void *b, size_t l, uint64_t o)
{
	if (l >= (1u << 20))
		((struct countdev *)d)->big_writes++;
	return wrap_pwrite(d, b, l, o);
}

static const struct vbas_dev_ops count_ops = {
	.name = "count", .pread = wrap_pread, .pwrite = c_pwrite, .flush = c_flush,
	.discard = wrap_discard, .destroy = wrap_destroy,
};

static void expect_reads(struct vbas_vol *v, const uint8_t *want, size_t len)
{
	uint8_t *got = malloc(len);
	assert_non_null(got);
	assert_ok(vbas_pread(v, got, len, 0));
	for (size_t i = 0; i < len; i++)
		if (got[i] != want[i])
			fail_msg("byte %zu: read %#x, wrote %#x", i, got[i], want[i]);
	free(got);
}

static void write_vol(struct vbas_pool *p, const char *name, const void *buf, size_t len,
		      uint64_t off)
{
	struct vbas_vol *v;
	assert_ok(vbas_vol_open(p, name, &v));
	assert_ok(vbas_pwrite(v, buf, len, off, 0));
	assert_ok(vbas_vol_close(v));
}

static void read_equals(struct vbas_pool *p, const char *name, const void *want, size_t len,
			uint64_t off)
{
	static uint8_t got[4 << 20];
	struct vbas_vol *v;
	assert_true(len <= sizeof(got));
	assert_ok(vbas_vol_open(p, name, &v));
	assert_ok(vbas_pread(v, got, len, off));
	assert_ok(vbas_vol_close(v));
	assert_memory_equal(got, want, len);
}

/* vbas_vol_rollback: the volume reads as its snapshot again, at the
 * snapshot's size; it keeps its id, its name and its snapshot; what it
 * had written since is freed; its writes after do not touch the
 * snapshot; and the bad requests change nothing. */
static void t_rollback(void **state)
{
	(void)state;
	static uint8_t a[2 << 20], b[2 << 20], c[1 << 20], zero[2 << 20];
	struct vbas_dev *dev = mem_pool(64 << 20, 4096, 8);
	struct vbas_pool *p = open_mem(dev, 1 << 20);
	struct vbas_vol_info vi, si, vi0;
	struct vbas_pool_info pi0, pi;
	struct rng r = { test_seed(11) };
	struct vbas_vol *v;
	rng_fill(&r, a, sizeof(a));
	rng_fill(&r, b, sizeof(b));
	rng_fill(&r, c, sizeof(c));
	assert_ok(vbas_vol_create(p, "v", 4 << 20));
	write_vol(p, "v", a, sizeof(a), 0);
	assert_ok(vbas_vol_snapshot(p, "v", "s", 0));
	assert_ok(vbas_flush(p));
	assert_ok(vbas_vol_stat(p, "v", &vi0));
	assert_ok(vbas_pool_info(p, &pi0));
	/* Written since: half over a, half new; and grown. */
	write_vol(p, "v", b, sizeof(b), 1 << 20);
	assert_ok(vbas_vol_resize(p, "v", 8 << 20));
	/* Bad requests: nothing changes. */
	assert_ok(vbas_vol_create(p, "w", 1 << 20));
	assert_ok(vbas_vol_snapshot(p, "w", "ws", 0));
	assert_int_equal(vbas_vol_rollback(p, "s", "v"), -EROFS);
	assert_int_equal(vbas_vol_rollback(p, "v", "ws"), -EINVAL);
	assert_int_equal(vbas_vol_rollback(p, "v", "w"), -EINVAL);
	assert_int_equal(vbas_vol_rollback(p, "nope", "s"), -ENOENT);
	assert_int_equal(vbas_vol_rollback(p, "v", "nope"), -ENOENT);
	assert_ok(vbas_vol_open(p, "v", &v));
	assert_int_equal(vbas_vol_rollback(p, "v", "s"), -EBUSY);
	assert_ok(vbas_vol_close(v));
	assert_ok(vbas_vol_open(p, "w", &v));
	assert_ok(vbas_vol_reserve(v, 0, 1 << 20));
	assert_ok(vbas_vol_close(v));
	assert_ok(vbas_vol_snapshot(p, "w", "ws2", VBAS_SNAP_NORESERVE));
	assert_int_equal(vbas_vol_rollback(p, "w", "ws2"), -ENOTSUP);
	read_equals(p, "v", b, sizeof(b), 1 << 20);
	/* The rollback. */
	assert_ok(vbas_vol_rollback(p, "v", "s"));
	assert_ok(vbas_vol_stat(p, "v", &vi));
	assert_ok(vbas_vol_stat(p, "s", &si));
	assert_int_equal(vi.id, vi0.id);
	assert_int_equal(vi.size, 4 << 20);
	assert_int_equal(vi.mapped, 2 << 20);
	assert_false(vi.flags & VBAS_VOL_READONLY);
	assert_int_equal(si.origin, vi.id);
	read_equals(p, "v", a, sizeof(a), 0);
	read_equals(p, "v", zero, sizeof(zero), 2 << 20);
	read_equals(p, "s", a, sizeof(a), 0);
	/* What v wrote since the snapshot is freed (ws2's reservation aside,
	 * the pool holds what it held then, and w's 1 MiB). */
	assert_ok(vbas_flush(p));
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.data_used, pi0.data_used + (1 << 20));
	assert_check_clean(p);
	/* v's writes after go to blocks of its own. */
	write_vol(p, "v", c, sizeof(c), 0);
	read_equals(p, "s", a, sizeof(a), 0);
	read_equals(p, "v", c, sizeof(c), 0);
	read_equals(p, "v", a + sizeof(c), sizeof(a) - sizeof(c), sizeof(c));
	/* A second rollback to the same snapshot, and after a reopen. */
	assert_ok(vbas_vol_rollback(p, "v", "s"));
	assert_ok(vbas_close(p));
	p = open_mem(dev, 1 << 20);
	read_equals(p, "v", a, sizeof(a), 0);
	read_equals(p, "s", a, sizeof(a), 0);
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	dev_destroy(dev);
}

/* vbas_vol_set_readonly: a volume protected from writes, and a snapshot
 * made writable (no longer expendable), its origin untouched. */
static void t_set_readonly(void **state)
{
	(void)state;
	static uint8_t a[1 << 20], b[1 << 20];
	struct vbas_dev *dev = mem_pool(64 << 20, 4096, 0);
	struct vbas_pool *p = open_mem(dev, 1 << 20);
	struct vbas_vol_info vi;
	struct vbas_vol *v;
	struct rng r = { test_seed(12) };
	rng_fill(&r, a, sizeof(a));
	rng_fill(&r, b, sizeof(b));
	assert_ok(vbas_vol_create(p, "v", 4 << 20));
	write_vol(p, "v", a, sizeof(a), 0);
	assert_ok(vbas_vol_open(p, "v", &v));
	assert_int_equal(vbas_vol_set_readonly(p, "v", 1), -EBUSY);
	assert_ok(vbas_vol_close(v));
	assert_ok(vbas_vol_set_readonly(p, "v", 1));
	assert_ok(vbas_vol_set_readonly(p, "v", 1));
	assert_ok(vbas_vol_stat(p, "v", &vi));
	assert_true(vi.flags & VBAS_VOL_READONLY);
	assert_ok(vbas_vol_open(p, "v", &v));
	assert_int_equal(vbas_pwrite(v, b, sizeof(b), 0, 0), -EROFS);
	assert_ok(vbas_vol_close(v));
	assert_int_equal(vbas_vol_resize(p, "v", 8 << 20), -EROFS);
	read_equals(p, "v", a, sizeof(a), 0);
	assert_ok(vbas_vol_set_readonly(p, "v", 0));
	write_vol(p, "v", b, sizeof(b), 1 << 20);
	/* An expendable snapshot made writable: a volume of its own. */
	assert_ok(vbas_vol_snapshot(p, "v", "s", VBAS_SNAP_EXPENDABLE));
	assert_ok(vbas_vol_set_readonly(p, "s", 0));
	assert_ok(vbas_vol_stat(p, "s", &vi));
	assert_false(vi.flags & (VBAS_VOL_READONLY | VBAS_VOL_EXPENDABLE));
	write_vol(p, "s", b, sizeof(b), 0);
	read_equals(p, "s", b, sizeof(b), 0);
	read_equals(p, "v", a, sizeof(a), 0);
	assert_int_equal(vbas_vol_set_readonly(p, "nope", 1), -ENOENT);
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	p = open_mem(dev, 1 << 20);
	assert_ok(vbas_vol_stat(p, "s", &vi));
	assert_false(vi.flags & VBAS_VOL_READONLY);
	read_equals(p, "s", b, sizeof(b), 0);
	assert_check_clean(p);
	assert_ok(vbas_close(p));
	dev_destroy(dev);
}

struct prog {
	uint64_t calls, last_done, last_total;
	int ok;          /* done never goes back, never past total */
	uint64_t stop_at; /* return 1 at this call (0: never) */
};

static int prog_cb(void *arg, uint64_t done, uint64_t total)
{
	struct prog *g = arg;
	if (g->calls && done < g->last_done)
		g->ok = 0;
	if (done > total)
		g->ok = 0;
	g->last_done = done;
	g->last_total = total;
	return ++g->calls == g->stop_at;
}

/* vbas_pool_progress: a delete, an unshare and a check say how far they
 * have come, in order; asked to stop, each returns -EINTR having kept what
 * it did (a delete resumed at the next open, an unshare committed up to
 * where it came) and the pool checks clean. */
static void t_progress(void **state)
{
	(void)state;
	static uint8_t blk[4096];
	struct vbas_dev *dev = mem_pool(256 << 20, 4096, 8);
	struct vbas_pool *p = open_mem(dev, 1 << 20);
	struct vbas_vol *v;
	struct vbas_vol_info vi;
	struct rng r = { test_seed(13) };
	uint64_t budget = vbas_tun.drop_budget;
	vbas_tun.drop_budget = 32;
	/* 2,000 extents each: every other block of 16 MiB. */
	for (int i = 0; i < 2; i++) {
		assert_ok(vbas_vol_create(p, i ? "d" : "v", 16 << 20));
		assert_ok(vbas_vol_open(p, i ? "d" : "v", &v));
		for (uint64_t b = 0; b < 4096; b += 2) {
			rng_fill(&r, blk, sizeof(blk));
			assert_ok(vbas_pwrite(v, blk, sizeof(blk), b * 4096, 0));
		}
		assert_ok(vbas_vol_close(v));
	}
	assert_ok(vbas_vol_snapshot(p, "v", "s", 0));
	assert_ok(vbas_vol_snapshot(p, "v", "s2", VBAS_SNAP_WRITABLE));
	/* A check, to its end, then stopped at its second call. */
	struct prog g = { .ok = 1 };
	vbas_pool_progress(p, prog_cb, &g);
	assert_ok(vbas_check(p, NULL, NULL, NULL));
	assert_true(g.calls > 1 && g.ok && g.last_total > 0);
	g = (struct prog){ .ok = 1, .stop_at = 2 };
	assert_int_equal(vbas_check(p, NULL, NULL, NULL), -EINTR);
	/* An unshare stopped part way: what it came to is private, what came
	 * after is still shared. */
	g = (struct prog){ .ok = 1, .stop_at = 3 };
	assert_ok(vbas_vol_open(p, "s2", &v));
	assert_int_equal(vbas_unshare(v, 0, 0), -EINTR);
	assert_ok(vbas_vol_close(v));
	assert_true(g.ok && g.last_total == 16 << 20 && g.last_done > 0 &&
		    g.last_done < 16 << 20);
	struct vbas_vol_usage u;
	assert_ok(vbas_vol_usage(p, "s2", &u));
	assert_true(u.exclusive > 0 && u.shared > 0);
	/* A delete stopped part way: gone from the list, finished at open. */
	assert_ok(vbas_flush(p));
	g = (struct prog){ .ok = 1, .stop_at = 3 };
	assert_int_equal(vbas_vol_delete(p, "d"), -EINTR);
	assert_true(g.ok && g.calls == 3 && g.last_total == 16 << 20 && g.last_done > 0);
	assert_int_equal(vbas_vol_stat(p, "d", &vi), -ENOENT);
	vbas_pool_progress(p, NULL, NULL);
	assert_ok(vbas_close(p));
	p = open_mem(dev, 1 << 20);
	assert_check_clean(p);
	/* A delete to its end: told of each step, in order. */
	g = (struct prog){ .ok = 1 };
	vbas_pool_progress(p, prog_cb, &g);
	assert_ok(vbas_vol_delete(p, "s"));
	assert_ok(vbas_vol_delete(p, "v"));
	assert_ok(vbas_vol_delete(p, "s2"));
	assert_true(g.calls > 2 && g.ok);
	struct vbas_pool_info pi;
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(pi.data_used, 0);
	assert_check_clean(p);
	vbas_tun.drop_budget = budget;
	assert_ok(vbas_close(p));
	dev_destroy(dev);
}

/* A flush with nothing written since the last one costs no device flush;
 * an overwrite in place (no metadata change) costs one, a commit two. */
static void t_idle_flush(void **state)
{
	struct countdev *c = calloc(1, sizeof(*c));
	struct vbas_pool *p;
	struct vbas_vol *v;
	uint8_t a[4096], b[4096];
	(void)state;
	assert_non_null(c);
	memset(a, 0xa5, sizeof(a));
	wrap_init(&c->w, mem_pool(32 << 20, 4096, 0), &count_ops);
	p = open_mem(&c->w.d, 0);
	assert_ok(vbas_vol_create(p, "v", 1 << 20));
	assert_ok(vbas_vol_open(p, "v", &v));
	assert_ok(vbas_pwrite(v, a, sizeof(a), 0, 0));
	c->flushes = 0;
	assert_ok(vbas_flush(p));                 /* a commit */
	assert_int_equal(c->flushes, 2);
	for (int i = 0; i < 10; i++)
		assert_ok(vbas_flush(p));         /* nothing new */
	assert_int_equal(c->flushes, 2);
	assert_ok(vbas_pread(v, b, sizeof(b), 0));
	assert_ok(vbas_flush(p));                 /* a read changes nothing */
	assert_int_equal(c->flushes, 2);
	memset(a, 0x5a, sizeof(a));
	assert_ok(vbas_pwrite(v, a, sizeof(a), 0, 0));   /* in place */
	assert_ok(vbas_flush(p));
	assert_int_equal(c->flushes, 3);
	assert_ok(vbas_flush(p));
	assert_int_equal(c->flushes, 3);
	memset(a, 0x3c, sizeof(a));
	assert_ok(vbas_pwrite(v, a, sizeof(a), 0, VBAS_IO_FUA));   /* FUA: its own flush */
	assert_int_equal(c->flushes, 4);
	assert_ok(vbas_flush(p));
	assert_int_equal(c->flushes, 4);
	assert_ok(vbas_pread(v, b, sizeof(b), 0));
	assert_memory_equal(a, b, sizeof(a));
	vbas_vol_close(v);
	assert_ok(vbas_close(p));
	p = open_mem(&c->w.d, 0);
	assert_ok(vbas_vol_open(p, "v", &v));
	assert_ok(vbas_pread(v, b, sizeof(b), 0));
	assert_memory_equal(a, b, sizeof(a));
	vbas_vol_close(v);
	assert_ok(vbas_close(p));
	dev_destroy(&c->w.d);
}

/* Flushes that arrive together after one write share one commit: the
 * first commits (two device flushes), the others find nothing new. */
struct flusher {
	struct vbas_pool *p;
	pthread_barrier_t *bar;
	int r;
};

static void *flush_main(void *arg)
{
	struct flusher *f = arg;
	pthread_barrier_wait(f->bar);
	f->r = vbas_flush(f->p);
	return NULL;
}

static void t_flushes_together(void **state)
{
	enum { N = 8 };
	struct countdev *c = calloc(1, sizeof(*c));
	struct flusher fl[N];
	pthread_t th[N];
	pthread_barrier_t bar;
	struct vbas_vol *v;
	uint8_t a[4096];
	(void)state;
	assert_non_null(c);
	memset(a, 0x77, sizeof(a));
	wrap_init(&c->w, mem_pool(32 << 20, 4096, 0), &count_ops);
	struct vbas_pool *p = open_mem(&c->w.d, 0);
	assert_ok(vbas_vol_create(p, "v", 1 << 20));
	assert_ok(vbas_flush(p));
	assert_ok(vbas_vol_open(p, "v", &v));
	assert_ok(vbas_pwrite(v, a, sizeof(a), 8192, 0));
	c->flushes = 0;
	pthread_barrier_init(&bar, NULL, N);
	for (int i = 0; i < N; i++) {
		fl[i] = (struct flusher){ p, &bar, -1 };
		assert_int_equal(pthread_create(&th[i], NULL, flush_main, &fl[i]), 0);
	}
	for (int i = 0; i < N; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(fl[i].r, 0);
	}
	pthread_barrier_destroy(&bar);
	assert_int_equal(c->flushes, 2);
	vbas_vol_close(v);
	assert_ok(vbas_close(p));
	dev_destroy(&c->w.d);
}

/* One write over a range that snapshots and small writes have cut into
 * pieces (shared extents, holes, the edges of the range in shared blocks):
 * the new blocks are written in one device write, every byte reads back
 * in the volume, and both snapshots keep theirs. */
static void t_write_over_pieces(void **state)
{
	enum { BS = 4096, NB = 512, SIZE = NB * BS };
	struct countdev *c = calloc(1, sizeof(*c));
	struct rng r = { 42 };
	struct vbas_pool *p;
	struct vbas_vol *a, *s1, *s2;
	uint8_t *m = calloc(1, SIZE), *m1 = malloc(SIZE), *m2 = malloc(SIZE), *buf = malloc(SIZE);
	(void)state;
	assert_non_null(c);
	assert_true(m && m1 && m2 && buf);
	wrap_init(&c->w, mem_pool(32 << 20, BS, 0), &count_ops);
	p = open_mem(&c->w.d, 0);
	assert_ok(vbas_vol_create(p, "a", SIZE));
	assert_ok(vbas_vol_open(p, "a", &a));
	/* Blocks 0..255 written, snapshot; every third block rewritten and
	 * every seventh discarded; snapshot again: pieces of one to two
	 * blocks, all shared, holes among them and after block 255. */
	rng_fill(&r, m, NB / 2 * BS);
	assert_ok(vbas_pwrite(a, m, NB / 2 * BS, 0, 0));
	assert_ok(vbas_vol_snapshot(p, "a", "s1", 0));
	memcpy(m1, m, SIZE);
	for (int b = 0; b < NB / 2; b++) {
		if (b % 7 == 1) {
			assert_ok(vbas_discard(a, (uint64_t)b * BS, BS, 0));
			memset(m + b * BS, 0, BS);
		} else if (b % 3 == 0) {
			rng_fill(&r, m + b * BS, BS);
			assert_ok(vbas_pwrite(a, m + b * BS, BS, (uint64_t)b * BS, 0));
		}
	}
	assert_ok(vbas_vol_snapshot(p, "a", "s2", 0));
	memcpy(m2, m, SIZE);
	/* Unaligned at both ends, from a shared block into the holes. */
	uint64_t off = 3000, len = (NB / 2 + 64) * BS - 5000;
	rng_fill(&r, buf, len);
	memcpy(m + off, buf, len);
	c->big_writes = 0;
	assert_ok(vbas_pwrite(a, buf, len, off, 0));
	assert_true(c->big_writes >= 1);
	assert_ok(vbas_vol_open(p, "s1", &s1));
	assert_ok(vbas_vol_open(p, "s2", &s2));
	expect_reads(a, m, SIZE);
	expect_reads(s1, m1, SIZE);
	expect_reads(s2, m2, SIZE);
	assert_check_clean(p);
	/* Through a commit and a reopen, and with the snapshots gone every
	 * block in use is one of a's. */
	vbas_vol_close(s1);
	vbas_vol_close(s2);
	vbas_vol_close(a);
	assert_ok(vbas_close(p));
	p = open_mem(&c->w.d, 0);
	assert_ok(vbas_vol_open(p, "a", &a));
	expect_reads(a, m, SIZE);
	assert_ok(vbas_vol_delete(p, "s1"));
	assert_ok(vbas_vol_delete(p, "s2"));
	struct vbas_pool_info pi;
	struct vbas_vol_info vi;
	assert_ok(vbas_vol_info(a, &vi));
	assert_ok(vbas_pool_info(p, &pi));
	assert_int_equal(vi.mapped, (uint64_t)(NB / 2 + 64) * BS);
	assert_int_equal(pi.data_used, vi.mapped);
	expect_reads(a, m, SIZE);
	assert_check_clean(p);
	vbas_vol_close(a);
	assert_ok(vbas_close(p));
	wrap_destroy(&c->w.d);
	free(m);
	free(m1);
	free(m2);
	free(buf);
}

/* A device whose flushes fail with EINTR, without reaching the device,
 * while EINTRS is above 0 (each failure takes one). */
struct eintrdev {
	struct wrapdev w;
	int eintrs;
	int flushes;            /* flushes that reached the device */
};

static int e_flush(struct vbas_dev *d)
{
	struct eintrdev *e = (struct eintrdev *)d;
	if (e->eintrs > 0) {
		e->eintrs--;
		return -EINTR;
	}
	e->flushes++;
	return wrap_flush(d);
}

static const struct vbas_dev_ops eintr_ops = {
	.name = "eintr", .pread = wrap_pread, .pwrite = wrap_pwrite, .flush = e_flush,
	.discard = wrap_discard, .destroy = wrap_destroy,
};

/* A flush interrupted by a signal lost nothing: the commit tries it again
 * and succeeds, the pool stays writable, and everything reads back after
 * a reopen.  A device that keeps failing with EINTR is given up on after
 * a bounded number of tries. */
static void t_flush_eintr(void **state)
{
	enum { LEN = 256 << 10 };
	struct eintrdev *e = calloc(1, sizeof(*e));
	struct rng r = { 7 };
	struct vbas_pool *p;
	struct vbas_vol *v;
	uint8_t *a = malloc(LEN), *b = malloc(LEN);
	(void)state;
	assert_true(e && a && b);
	wrap_init(&e->w, mem_pool(32 << 20, 4096, 0), &eintr_ops);
	p = open_mem(&e->w.d, 0);
	assert_ok(vbas_vol_create(p, "v", 1 << 20));
	assert_ok(vbas_vol_open(p, "v", &v));
	rng_fill(&r, a, LEN);
	assert_ok(vbas_pwrite(v, a, LEN, 0, 0));
	/* The flush before the superblock is interrupted once. */
	e->eintrs = 1;
	e->flushes = 0;
	assert_ok(vbas_flush(p));
	assert_int_equal(e->eintrs, 0);
	assert_int_equal(e->flushes, 2);
	/* Still writable; then the flush after the superblock, interrupted
	 * three times (a commit of a write flushes twice: the second is the
	 * second flush that reaches the device). */
	rng_fill(&r, b, LEN);
	assert_ok(vbas_pwrite(v, b, LEN, LEN, 0));
	e->eintrs = 3;
	assert_ok(vbas_flush(p));
	assert_int_equal(e->eintrs, 0);
	vbas_vol_close(v);
	assert_ok(vbas_close(p));
	p = open_mem(&e->w.d, 0);
	assert_ok(vbas_vol_open(p, "v", &v));
	expect_reads(v, a, LEN);
	uint8_t *got = malloc(LEN);
	assert_non_null(got);
	assert_ok(vbas_pread(v, got, LEN, LEN));
	assert_memory_equal(got, b, LEN);
	assert_check_clean(p);
	/* EINTR without end: the commit of a new mapping gives up with EINTR
	 * after a bounded number of tries (and the pool goes read-only, as
	 * after any failed commit); the last commit stays as it was. */
	rng_fill(&r, b, LEN);
	assert_ok(vbas_pwrite(v, b, LEN, 2 * LEN, 0));
	e->eintrs = 1000;
	assert_int_equal(vbas_flush(p), -EINTR);
	assert_int_equal(e->eintrs, 1000 - DEV_FLUSH_TRIES);
	e->eintrs = 0;
	assert_int_equal(vbas_pwrite(v, b, LEN, 3 * LEN, 0), -EROFS);
	vbas_vol_close(v);
	vbas_close(p);
	p = open_mem(&e->w.d, 0);
	assert_ok(vbas_vol_open(p, "v", &v));
	expect_reads(v, a, LEN);
	assert_check_clean(p);
	vbas_vol_close(v);
	assert_ok(vbas_close(p));
	wrap_destroy(&e->w.d);
	free(a);
	free(b);
	free(got);
}

static int ext_spare_cb(const struct vbas_extent *e, void *arg)
{
	int *bad = arg;
	for (size_t i = 0; i < sizeof(e->spare) / sizeof(e->spare[0]); i++)
		*bad |= e->spare[i] != 0;
	return 0;
}

static int vol_spare_cb(const struct vbas_vol_info *vi, void *arg)
{
	int *bad = arg;
	for (size_t i = 0; i < sizeof(vi->spare) / sizeof(vi->spare[0]); i++)
		*bad |= vi->spare[i] != 0;
	return 0;
}

static int fsmap_spare_cb(const struct vbas_fsmap_rec *f, void *arg)
{
	int *bad = arg;
	for (size_t i = 0; i < sizeof(f->spare) / sizeof(f->spare[0]); i++)
		*bad |= f->spare[i] != 0;
	return 0;
}

#define ALL_ZERO(a) all_zero((a), sizeof(a))
static int all_zero(const void *p, size_t n)
{
	const unsigned char *c = p;
	for (size_t i = 0; i < n; i++)
		if (c[i])
			return 0;
	return 1;
}

/* The structs' spare room (docs/design.md, "The library's ABI"): a
 * nonzero word of a struct given to the library is refused with -EINVAL
 * and a message naming the struct and the word, before anything changes
 * (a format creates no file, an open does not open one); a struct the
 * library fills comes back with it zeroed, whatever it held. */
static void t_abi_spare(void **state)
{
	struct vbas_format_opts fo = { .size = 64 << 20 };
	struct vbas_open_opts oo = { 0 };
	struct vbas_pool_settings s;
	struct vbas_pool_info pi;
	struct vbas_vol_info vi;
	struct vbas_vol_usage vu;
	struct vbas_resv_stats rs;
	struct vbas_check_stats cs;
	struct vbas_iomap m;
	struct vbas_resv *resv;
	struct vbas_pool *p;
	struct vbas_vol *v;
	struct stat st;
	int bad = 0;
	(void)state;

	fo.spare[11] = 1;
	assert_int_equal(vbas_format(path("spare.pool"), &fo), -EINVAL);
	assert_non_null(strstr(vbas_errmsg(), "struct vbas_format_opts: spare[11] is 0x1, not 0"));
	assert_int_equal(stat(path("spare.pool"), &st), -1);
	fo.spare[11] = 0;
	fo.spare[0] = 0x80000000u;
	assert_int_equal(vbas_format(path("spare.pool"), &fo), -EINVAL);
	assert_non_null(strstr(vbas_errmsg(), "spare[0] is 0x80000000"));
	fo.spare[0] = 0;
	assert_ok(vbas_format(path("spare.pool"), &fo));

	oo.spare[5] = 7;
	assert_int_equal(vbas_open(path("no-such.pool"), &oo, &p), -EINVAL);
	assert_non_null(strstr(vbas_errmsg(), "struct vbas_open_opts: spare[5] is 0x7"));
	assert_int_equal(vbas_open(path("spare.pool"), &oo, &p), -EINVAL);
	oo.spare[5] = 0;
	assert_ok(vbas_open(path("spare.pool"), &oo, &p));

	memset(&s, 0xff, sizeof(s));
	assert_ok(vbas_pool_get(p, &s));
	assert_true(ALL_ZERO(s.spare));
	s.low_water = 900;
	s.spare[13] = 2;
	assert_int_equal(vbas_pool_set(p, &s), -EINVAL);
	assert_non_null(strstr(vbas_errmsg(), "struct vbas_pool_settings: spare[13] is 0x2"));
	assert_ok(vbas_pool_get(p, &s));
	assert_int_equal(s.low_water, 0);           /* nothing changed */
	s.low_water = 900;
	assert_ok(vbas_pool_set(p, &s));            /* get, change, set */

	memset(&pi, 0xff, sizeof(pi));
	assert_ok(vbas_pool_info(p, &pi));
	assert_true(ALL_ZERO(pi.spare));
	assert_int_equal(pi.low_water, 900);
	assert_ok(vbas_vol_create(p, "v", 1 << 20));
	memset(&vi, 0xff, sizeof(vi));
	assert_ok(vbas_vol_stat(p, "v", &vi));
	assert_true(ALL_ZERO(vi.spare));
	assert_ok(vbas_vol_list(p, vol_spare_cb, &bad));
	assert_ok(vbas_vol_open(p, "v", &v));
	memset(&vi, 0xff, sizeof(vi));
	assert_ok(vbas_vol_info(v, &vi));
	assert_true(ALL_ZERO(vi.spare));
	assert_ok(vbas_reserve_range(v, 0, 8192, &resv));
	memset(&m, 0xff, sizeof(m));
	assert_ok(vbas_map_begin(v, 0, 8192, VBAS_MAP_WRITE, resv, &m));
	assert_true(ALL_ZERO(m.spare));
	assert_ok(vbas_map_end(v, &m, 0, -EIO));
	memset(&rs, 0xff, sizeof(rs));
	assert_ok(vbas_resv_stats(resv, &rs));
	assert_true(ALL_ZERO(rs.spare));
	vbas_resv_put(resv);
	char buf[4096] = { 1 };
	assert_ok(vbas_pwrite(v, buf, sizeof(buf), 0, 0));
	assert_ok(vbas_extents(v, 0, 1 << 20, ext_spare_cb, &bad));
	assert_ok(vbas_fsmap(p, 0, 0, fsmap_spare_cb, &bad));
	assert_int_equal(bad, 0);
	memset(&vu, 0xff, sizeof(vu));
	assert_ok(vbas_vol_usage(p, "v", &vu));
	assert_true(ALL_ZERO(vu.spare));
	assert_int_equal(vu.mapped, 4096);
	memset(&cs, 0xff, sizeof(cs));
	assert_ok(vbas_check(p, NULL, NULL, &cs));
	assert_true(ALL_ZERO(cs.spare));
	vbas_vol_close(v);
	assert_ok(vbas_close(p));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_format_errors),
		cmocka_unit_test(t_second_opener),
		cmocka_unit_test(t_fill_thin_pool),
		cmocka_unit_test(t_sigkill),
		cmocka_unit_test(t_extents_and_zeroes),
		cmocka_unit_test(t_sharing_bad_input),
		cmocka_unit_test(t_write_over_pieces),
		cmocka_unit_test(t_rollback),
		cmocka_unit_test(t_set_readonly),
		cmocka_unit_test(t_progress),
		cmocka_unit_test(t_idle_flush),
		cmocka_unit_test(t_flushes_together),
		cmocka_unit_test(t_prealloc),
		cmocka_unit_test(t_buffered),
		cmocka_unit_test(t_flush_eintr),
		cmocka_unit_test(t_abi_spare),
	};
	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests_name("pool", tests, setup, teardown);
}
