/* vbas benchmark: vbas volumes against a raw file on the same file system.
 *
 *   bench [--dir DIR] [--size BYTES] [--time SEC | --ops N] [--extents N]
 *         [--cache BYTES] [--seed N] [--no-extents] [--sharing-only | --no-sharing]
 *         [--share-ops N] [--share-size BYTES] [--vbas-cli PATH]
 *         [--xfs-dir DIR [--xfs-scratch] | --xfs-skip REASON] [--no-qcow2]
 *
 * Measures, in one run and in one directory:
 *  1. QD1, one thread: 1 MiB sequential write and read, 4 KiB random
 *     overwrite, 4 KiB random allocating write (fresh volume / sparse file)
 *     and 4 KiB random read, through vbas_pwrite/vbas_pread on a volume
 *     against pwrite/pread on a raw file opened the same way (O_DIRECT when
 *     the pool got O_DIRECT).  Write phases end with vbas_flush / fdatasync,
 *     and their time is included.
 *  2. Metadata bytes per GiB of sequentially written data.
 *  3. Open time of a pool holding a volume of N (default 1,000,000) extents,
 *     and vbas_check time on it.
 *  4. Peak RSS of a fresh process reading that volume with a 16 MiB cache.
 *  5. Sharing (see "Sharing" below): snapshot and clone creation of volumes
 *     of 1, 10,000 and N extents, as library call + commit and as the CLI
 *     process; reflink of those extents; diff of two snapshots 1% apart;
 *     4 KiB first writes after a snapshot (CoW) against overwrites; and the
 *     same on XFS (cp --reflink=always, FICLONERANGE) and qcow2 (qemu-img
 *     snapshot -c) where the machine has them.  --sharing-only runs just it.
 *  6. Space guarantees (--space-only runs just it).
 *  7. The reverse map: the same writes, reflink, snapshots and fsmap on a
 *     pool without one and with one (--rmap-only runs just it).
 *
 * Internal mode: bench --rss-only POOL RESULT_FD CACHE_BYTES (see rss_only()).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vbas.h"

#define KiB (1024ull)
#define MiB (1024ull * 1024)
#define GiB (1024ull * 1024 * 1024)
#define BS 4096u                 /* pool block size and random I/O size */
#define SEQ_IO (1u << 20)        /* sequential I/O size */

/* ---- Helpers ------------------------------------------------------------ */

static const char *prog = "bench";

/* Files and the directory to remove if we die half way (also from the
 * signal handler: unlink and rmdir only), and the child process running. */
#define NCLEAN 32
static const char *cleanup_files[NCLEAN];
static const char *cleanup_dir;
static volatile pid_t cur_child;

static void cleanup(void)
{
	pid_t c = cur_child;
	if (c > 0) {
		kill(c, SIGTERM);
		waitpid(c, NULL, 0);
	}
	for (int i = 0; i < NCLEAN; i++)
		if (cleanup_files[i])
			unlink(cleanup_files[i]);
	if (cleanup_dir)
		rmdir(cleanup_dir);
}

static void on_signal(int sig)
{
	cleanup();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Remember PATH (which must stay valid) for cleanup(); forget it again. */
static void cleanup_add(const char *path)
{
	for (int i = 0; i < NCLEAN; i++)
		if (!cleanup_files[i]) {
			cleanup_files[i] = path;
			return;
		}
	fprintf(stderr, "%s: too many files to clean up; %s is not on the list\n", prog, path);
}

static void cleanup_del(const char *path)
{
	for (int i = 0; i < NCLEAN; i++)
		if (cleanup_files[i] == path)
			cleanup_files[i] = NULL;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	cleanup();
	exit(1);
}

#include "bench.h"

/* splitmix64: fixed seed, same sequence for raw and vbas. */
static uint64_t rng_s;
static uint64_t rng_next(void)
{
	return splitmix(&rng_s);
}

static void *xalloc_aligned(size_t len)
{
	void *p;
	int e = posix_memalign(&p, 4096, len);
	if (e)
		die("posix_memalign(%zu): %s", len, strerror(e));
	return p;
}

static uint64_t parse_size(const char *s)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || v < 0)
		die("bad size '%s'", s);
	switch (*end) {
	case 'k': case 'K': v *= KiB; end++; break;
	case 'm': case 'M': v *= MiB; end++; break;
	case 'g': case 'G': v *= GiB; end++; break;
	case 't': case 'T': v *= GiB * 1024.0; end++; break;
	}
	if (*end == 'i' || *end == 'I')
		end++;
	if (*end == 'b' || *end == 'B')
		end++;
	if (*end)
		die("bad size '%s'", s);
	return (uint64_t)v;
}

static void full_pwrite(int fd, const void *buf, size_t len, off_t off, const char *what)
{
	const char *p = buf;
	while (len) {
		ssize_t r = pwrite(fd, p, len, off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			die("%s: pwrite %zu at %lld: %s", what, len, (long long)off,
			    r < 0 ? strerror(errno) : "wrote nothing");
		p += r;
		len -= (size_t)r;
		off += r;
	}
}

static void full_pread(int fd, void *buf, size_t len, off_t off, const char *what)
{
	char *p = buf;
	while (len) {
		ssize_t r = pread(fd, p, len, off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			die("%s: pread %zu at %lld: %s", what, len, (long long)off,
			    r < 0 ? strerror(errno) : "unexpected end of file");
		p += r;
		len -= (size_t)r;
		off += r;
	}
}

static void xfdatasync(int fd, const char *what)
{
	if (fdatasync(fd) < 0)
		die("%s: fdatasync: %s", what, strerror(errno));
}

/* Peak RSS of this process in KiB (getrusage) and VmHWM from /proc. */
static long maxrss_kib(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) < 0)
		die("getrusage: %s", strerror(errno));
	return ru.ru_maxrss;
}

static long proc_status_kib(const char *field)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;
	size_t n = strlen(field);
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, n) && line[n] == ':') {
			v = strtol(line + n + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

/* ---- The peak-RSS child ------------------------------------------------- */

struct rss_result {
	long maxrss_kib;        /* getrusage(RUSAGE_SELF) at the end */
	long vmhwm_kib;         /* /proc/self/status VmHWM at the end */
	long start_rss_kib;     /* VmRSS before vbas_open */
	uint64_t extents;
	uint64_t bytes;
	double seconds;
	uint32_t cache_blocks;
	int ok;
	char err[256];
};

struct rss_walk {
	struct vbas_vol *vol;
	char *buf;
	uint64_t extents, bytes;
};

static int rss_extent_cb(const struct vbas_extent *e, void *arg)
{
	struct rss_walk *w = arg;
	uint64_t off = e->offset, left = e->length;
	w->extents++;
	while (left) {
		size_t n = left < SEQ_IO ? (size_t)left : SEQ_IO;
		int r = vbas_pread(w->vol, w->buf, n, off);
		if (r)
			return r;
		off += n;
		left -= n;
		w->bytes += n;
	}
	return 0;
}

static void rss_fail(struct rss_result *res, int fd, const char *what, int r)
{
	snprintf(res->err, sizeof(res->err), "%s: %s (%s)", what, strerror(-r), vbas_errmsg());
	if (write(fd, res, sizeof(*res)) != (ssize_t)sizeof(*res))
		_exit(3);
	_exit(1);
}

/* Open POOL with a small cache, read every mapped extent of volume "ext",
 * and report the peak RSS through FD. */
static int rss_only(const char *pool_path, int fd, uint64_t cache_bytes)
{
	struct rss_result res;
	struct vbas_open_opts oo = { .cache_bytes = cache_bytes, .flags = VBAS_OPEN_RDONLY };
	struct vbas_pool *pool;
	struct vbas_vol *vol;
	struct vbas_vol_info vi;
	struct vbas_pool_info pi;
	int r;

	memset(&res, 0, sizeof(res));
	res.start_rss_kib = proc_status_kib("VmRSS");
	double t0 = now();
	if ((r = vbas_open(pool_path, &oo, &pool)))
		rss_fail(&res, fd, "vbas_open", r);
	if ((r = vbas_pool_info(pool, &pi)))
		rss_fail(&res, fd, "vbas_pool_info", r);
	res.cache_blocks = pi.cache_blocks;
	if ((r = vbas_vol_open(pool, "ext", &vol)))
		rss_fail(&res, fd, "vbas_vol_open", r);
	if ((r = vbas_vol_info(vol, &vi)))
		rss_fail(&res, fd, "vbas_vol_info", r);
	struct rss_walk w = { .vol = vol, .buf = xalloc_aligned(SEQ_IO) };
	if ((r = vbas_extents(vol, 0, vi.size, rss_extent_cb, &w)))
		rss_fail(&res, fd, "vbas_extents/vbas_pread", r);
	if ((r = vbas_vol_close(vol)))
		rss_fail(&res, fd, "vbas_vol_close", r);
	if ((r = vbas_close(pool)))
		rss_fail(&res, fd, "vbas_close", r);
	res.seconds = now() - t0;
	free(w.buf);
	res.extents = w.extents;
	res.bytes = w.bytes;
	res.maxrss_kib = maxrss_kib();
	res.vmhwm_kib = proc_status_kib("VmHWM");
	res.ok = 1;
	if (w.bytes != vi.mapped)
		snprintf(res.err, sizeof(res.err), "read %" PRIu64 " bytes, the volume maps %"
			 PRIu64, w.bytes, vi.mapped);
	if (write(fd, &res, sizeof(res)) != (ssize_t)sizeof(res))
		return 3;
	return 0;
}

/* The RSS child is forked at start-up, while this process is still small:
 * a child forked later would inherit (and exec would record in its
 * ru_maxrss) the high-water mark of everything the parent touched. */
struct helper {
	pid_t pid;
	int go_fd;              /* write the go byte here */
	int res_fd;             /* read struct rss_result here */
};

static void helper_start(struct helper *h, const char *pool_path, uint64_t cache_bytes)
{
	int go[2], res[2];
	if (pipe2(go, O_CLOEXEC) < 0 || pipe(res) < 0)
		die("pipe: %s", strerror(errno));
	fcntl(res[0], F_SETFD, FD_CLOEXEC);
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		char c, fdbuf[16], cbuf[32];
		close(go[1]);
		close(res[0]);
		if (read(go[0], &c, 1) != 1)
			_exit(0);        /* the parent gave up */
		snprintf(fdbuf, sizeof(fdbuf), "%d", res[1]);
		snprintf(cbuf, sizeof(cbuf), "%" PRIu64, cache_bytes);
		execl("/proc/self/exe", prog, "--rss-only", pool_path, fdbuf, cbuf, (char *)NULL);
		fprintf(stderr, "%s: exec /proc/self/exe: %s\n", prog, strerror(errno));
		_exit(127);
	}
	close(go[0]);
	close(res[1]);
	h->pid = pid;
	h->go_fd = go[1];
	h->res_fd = res[0];
}

static void helper_run(struct helper *h, struct rss_result *out, long *wait4_maxrss)
{
	struct rusage ru;
	int status;
	if (write(h->go_fd, "g", 1) != 1)
		die("start the RSS child: %s", strerror(errno));
	close(h->go_fd);
	ssize_t n = read(h->res_fd, out, sizeof(*out));
	close(h->res_fd);
	if (wait4(h->pid, &status, 0, &ru) < 0)
		die("wait4: %s", strerror(errno));
	h->pid = 0;
	if (n != (ssize_t)sizeof(*out))
		die("RSS child gave no result (status %#x)", status);
	if (!out->ok)
		die("RSS child failed: %s", out->err);
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		die("RSS child exited with status %#x", status);
	if (out->err[0])
		die("RSS child: %s", out->err);
	*wait4_maxrss = ru.ru_maxrss;
}

static void helper_abandon(struct helper *h)
{
	if (h->pid > 0) {
		close(h->go_fd);          /* EOF: the child exits */
		waitpid(h->pid, NULL, 0);
		h->pid = 0;
	}
}

/* ---- Options and results ------------------------------------------------ */

static struct {
	const char *dir;
	uint64_t size;
	double seconds;
	uint64_t ops;           /* random ops per test; 0 = time based */
	uint64_t extents;
	uint64_t rss_cache;
	uint64_t seed;
	int no_extents;
	/* Sharing benchmark. */
	int sharing_only, no_sharing, no_qcow2, xfs_scratch;
	int space_only, no_space;   /* the space-guarantee benchmark */
	int rmap_only, no_rmap;     /* the reverse-map benchmark */
	uint64_t share_ops;     /* writes per target, CoW-against-overwrite test */
	uint64_t share_size;    /* volumes of the CoW-against-overwrite test */
	const char *vbas_cli;   /* the vbas command; default next to this program */
	const char *xfs_dir;    /* a directory on XFS with reflink, or NULL */
	const char *xfs_skip;   /* why there is none (from run.sh) */
} opt = {
	.size = 1 * GiB,
	.seconds = 8,
	.extents = 1000000,
	.rss_cache = 16 * MiB,
	.seed = 0x5eed,
	.share_ops = 8000,
	.share_size = 256 * MiB,
};

struct io_result {
	uint64_t ops;
	uint64_t bytes;
	double seconds;         /* including the final flush */
	double flush_seconds;
	double cpu_seconds;     /* user + system time of this thread */
};

static void bench_line(const char *name, double v, const char *unit)
{
	printf("bench: %s %.6g %s\n", name, v, unit);
}

/* ---- I/O targets: a raw fd or a vbas volume ----------------------------- */

struct target {
	const char *name;       /* "raw" or "vbas" */
	int fd;                 /* raw */
	struct vbas_pool *pool; /* vbas */
	struct vbas_vol *vol;
};

static void t_write(struct target *t, const void *buf, size_t len, uint64_t off)
{
	if (t->vol)
		V(vbas_pwrite(t->vol, buf, len, off, 0));
	else
		full_pwrite(t->fd, buf, len, (off_t)off, t->name);
}

static void t_read(struct target *t, void *buf, size_t len, uint64_t off)
{
	if (t->vol)
		V(vbas_pread(t->vol, buf, len, off));
	else
		full_pread(t->fd, buf, len, (off_t)off, t->name);
}

static double t_flush(struct target *t)
{
	double t0 = now();
	if (t->vol)
		V(vbas_flush(t->pool));
	else
		xfdatasync(t->fd, t->name);
	return now() - t0;
}

static double thread_cpu(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/*
 * One test on one target, run in slices so that raw and vbas alternate
 * (ABBA order) and drift in the shared host storage hits both alike.
 * Sequential: SIZE bytes in 1 MiB requests.  Random: 4 KiB requests at
 * uniformly random blocks (PERM NULL) or at PERM's blocks in order, each
 * once (allocating writes); time or op count from the options.
 */
struct job {
	struct target *t;
	int write, seq;
	uint64_t size;
	const uint32_t *perm;
	uint64_t rng;           /* the job's own generator state */
	uint64_t max_ops;
	double budget;          /* seconds, time-based random tests */
	char *buf;
	struct io_result res;
};

static void job_init(struct job *j, struct target *t, int write, int seq, uint64_t size,
		     const uint32_t *perm, char *buf)
{
	memset(j, 0, sizeof(*j));
	j->t = t;
	j->write = write;
	j->seq = seq;
	j->size = size;
	j->perm = perm;
	j->buf = buf;
	j->rng = opt.seed;
	if (seq) {
		j->max_ops = (size + SEQ_IO - 1) / SEQ_IO;
	} else {
		j->max_ops = opt.ops ? opt.ops : UINT64_MAX;
		if (perm && j->max_ops > size / BS)
			j->max_ops = size / BS;
		j->budget = opt.ops ? 0 : opt.seconds;
	}
}

/* Run slice K of NSLICES. */
static void job_slice(struct job *j, unsigned k, unsigned nslices)
{
	uint64_t stop_ops = UINT64_MAX;
	double slice_time = 0;
	if (j->seq || opt.ops || j->budget <= 0)
		stop_ops = k + 1 == nslices ? j->max_ops : j->max_ops / nslices * (k + 1);
	else
		slice_time = j->budget / nslices;
	if (stop_ops > j->max_ops)
		stop_ops = j->max_ops;
	double c0 = thread_cpu(), t0 = now(), deadline = t0 + slice_time;
	uint64_t i = j->res.ops;
	for (; i < stop_ops; i++) {
		if (j->seq) {
			uint64_t off = i * SEQ_IO;
			size_t n = j->size - off < SEQ_IO ? (size_t)(j->size - off) : SEQ_IO;
			if (j->write)
				t_write(j->t, j->buf, n, off);
			else
				t_read(j->t, j->buf, n, off);
			j->res.bytes += n;
			continue;
		}
		uint64_t blk;
		if (j->perm) {
			blk = j->perm[i];
		} else {
			rng_s = j->rng;
			blk = rng_next() % (j->size / BS);
			j->rng = rng_s;
		}
		if (j->write) {
			((uint64_t *)j->buf)[0] = i;      /* not all the same block */
			t_write(j->t, j->buf, BS, blk * BS);
		} else {
			t_read(j->t, j->buf, BS, blk * BS);
		}
		j->res.bytes += BS;
		if (slice_time > 0 && (i & 15) == 15 && now() >= deadline) {
			i++;
			break;
		}
	}
	j->res.ops = i;
	j->res.seconds += now() - t0;
	j->res.cpu_seconds += thread_cpu() - c0;
}

static void job_flush(struct job *j)
{
	if (!j->write)
		return;
	double c0 = thread_cpu();
	j->res.flush_seconds = t_flush(j->t);
	j->res.seconds += j->res.flush_seconds;
	j->res.cpu_seconds += thread_cpu() - c0;
}

/* Run A and B in ABBA order; each write job ends with its flush. */
static void run_pair(struct job *a, struct job *b)
{
	unsigned n = a->seq ? 16 : 8;
	for (unsigned k = 0; k < n; k++) {
		struct job *first = k % 2 ? b : a, *second = k % 2 ? a : b;
		job_slice(first, k, n);
		job_slice(second, k, n);
	}
	job_flush(a);
	job_flush(b);
}

static uint32_t *make_perm(uint64_t nblk)
{
	if (nblk > UINT32_MAX)
		die("--size too large for the permutation");
	uint32_t *p = malloc(nblk * sizeof(*p));
	if (!p)
		die("out of memory");
	for (uint64_t i = 0; i < nblk; i++)
		p[i] = (uint32_t)i;
	rng_s = opt.seed ^ 0xa110cull;
	for (uint64_t i = nblk - 1; i > 0; i--) {
		uint64_t j = rng_next() % (i + 1);
		uint32_t x = p[i];
		p[i] = p[j];
		p[j] = x;
	}
	return p;
}

static int open_raw(const char *path, int direct, int trunc_size_sparse, uint64_t size)
{
	int fl = O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | (direct ? O_DIRECT : 0);
	int fd = open(path, fl, 0644);
	if (fd < 0)
		die("open %s%s: %s", path, direct ? " (O_DIRECT)" : "", strerror(errno));
	if (trunc_size_sparse && ftruncate(fd, (off_t)size) < 0)
		die("ftruncate %s: %s", path, strerror(errno));
	return fd;
}

/* Map 4 KiB at every second block of VOL, N extents, without writing the
 * data: the mapping interface leaves the I/O to its client.  A cheap way to
 * a volume of N extents (about 3 s for 1,000,000). */
static void map_every_other(struct vbas_vol *vol, uint64_t n)
{
	struct vbas_iomap m;
	for (uint64_t i = 0; i < n; i++) {
		V(vbas_map_begin(vol, 2 * i * BS, BS, VBAS_MAP_WRITE, NULL, &m));
		if (m.type != VBAS_IOMAP_NEW || m.length != BS)
			die("map_begin at %" PRIu64 ": type %d length %" PRIu64
			    " (want a new 4 KiB mapping)", 2 * i * BS, m.type, m.length);
		V(vbas_map_end(vol, &m, BS, 0));
	}
}

/* ---- Main benchmark ----------------------------------------------------- */

struct row {
	const char *name, *unit;
	double raw, vbas;
	double raw_cpu_us, vbas_cpu_us;   /* CPU time per request */
	uint64_t raw_ops, vbas_ops;
};

static double iops(const struct io_result *r) { return r->ops / r->seconds; }
static double mibs(const struct io_result *r) { return r->bytes / (double)MiB / r->seconds; }
static double cpu_us(const struct io_result *r) { return r->cpu_seconds * 1e6 / r->ops; }

static struct row mkrow(const char *name, const struct job *raw, const struct job *vb)
{
	int seq = raw->seq;
	struct row r = { name, seq ? "MiB/s" : "IOPS",
			 seq ? mibs(&raw->res) : iops(&raw->res),
			 seq ? mibs(&vb->res) : iops(&vb->res),
			 cpu_us(&raw->res), cpu_us(&vb->res), raw->res.ops, vb->res.ops };
	return r;
}

/* ---- Sharing: snapshots, clones, reflink, diff, copy-on-write ----------- */

/*
 * Volumes of 1, 10,000 and N (--extents, default 1,000,000) extents, built
 * as for the open-time test (4 KiB mapped at every second block, no data
 * I/O).  On them: snapshot and clone creation as a library call followed by
 * its commit, and as the CLI command (a process); reflink of the whole
 * range into an empty volume, + commit; diff of two snapshots with 1% of
 * the blocks changed between them.  Then 4 KiB random first writes after a
 * snapshot (copy on write) against overwrites of unshared blocks.
 *
 * Side by side, where the machine has them: XFS (a directory on a
 * reflink=1 XFS that run.sh loop-mounts, --xfs-dir), with files of the same
 * extent counts, cp --reflink=always and FICLONERANGE; and qcow2 images with
 * as many allocated 4 KiB clusters, qemu-img snapshot -c.
 */

extern char **environ;

#define SH_SIZES 3
#define SH_REPS 5               /* runs per timing, at most ... */
#define SH_BUDGET 1.5           /* ... and no new run after this many seconds */
#define XFS_WRITE_MAX 10000     /* XFS files up to this many extents: written */
#define XFS_SEED 1000           /* larger ones: reflinked copies of a seed file */

/* Median, min and max of RUNS runs, seconds; RUNS 0: not measured. */
struct timing {
	double med, min, max;
	int runs;
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static struct timing timing_of(double *v, int n)
{
	struct timing t = { 0 };
	if (!n)
		return t;
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	t.runs = n;
	t.min = v[0];
	t.max = v[n - 1];
	t.med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
	return t;
}

static int more_runs(int done, double spent)
{
	return done < SH_REPS && (done == 0 || spent < SH_BUDGET);
}

/* Run ARGV (PATH lookup if argv[0] has no '/'), stdout to /dev/null unless
 * OUT_FD >= 0 (then there); wall time from spawn to reaped, in *SECS.
 * posix_spawn (vfork-like), so the size of this process costs nothing.
 * Dies unless the command exits 0. */
static void run_cmd(char *const argv[], int out_fd, double *secs)
{
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int status, e;
	posix_spawn_file_actions_init(&fa);
	if (out_fd >= 0)
		posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
	else
		posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	fflush(NULL);
	double t0 = now();
	e = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	if (e)
		die("spawn %s: %s", argv[0], strerror(e));
	cur_child = pid;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			die("waitpid %s: %s", argv[0], strerror(errno));
	double t1 = now();
	cur_child = 0;
	posix_spawn_file_actions_destroy(&fa);
	if (secs)
		*secs = t1 - t0;
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		die("%s %s ... failed (status %#x)", argv[0], argv[1] ? argv[1] : "", status);
}

/* Is PROG an executable in $PATH? */
static int in_path(const char *name)
{
	const char *path = getenv("PATH");
	char buf[4200];
	if (!path)
		path = "/usr/bin:/bin";
	while (*path) {
		size_t n = strcspn(path, ":");
		snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, path, name);
		if (access(buf, X_OK) == 0)
			return 1;
		path += n;
		if (*path)
			path++;
	}
	return 0;
}

struct share_res {
	int nsz;
	uint64_t sz[SH_SIZES];
	double build_s[SH_SIZES];
	struct timing snap_lib[SH_SIZES], clone_lib[SH_SIZES];
	struct timing snap_cli[SH_SIZES], clone_cli[SH_SIZES];
	struct timing del_lib[SH_SIZES];       /* delete of a snapshot, + commit */
	struct timing rl_lib[SH_SIZES];        /* reflink of the range, + commit */
	struct timing rl_cpu[SH_SIZES];        /* ... its CPU time */
	double rl_del_s[SH_SIZES];             /* delete of the reflinked volume */
	uint64_t snap_commits, rl_commits[SH_SIZES];   /* generations per run */
	double flush_ms[2];                    /* device flush probe, start and end */
	/* Copy on write against overwrite. */
	uint64_t cow_size;
	struct io_result ow, cow;
	double ow_first_us, ow_last_us, cow_first_us, cow_last_us;   /* 1st and last slice */
	uint64_t slice_ops;
	/* Diff. */
	uint64_t diff_blocks, diff_written, diff_ranges, diff_bytes, walk_extents;
	struct timing diff_t;
	uint64_t cdiff_ranges, cdiff_bytes;    /* the same, one contiguous run */
	struct timing cdiff_t;
	double walk_s;
	/* XFS. */
	int xfs_ok;
	char xfs_why[320];
	char xfs_how[SH_SIZES][96];
	double xfs_build_s[SH_SIZES];
	struct timing xfs_cp[SH_SIZES], xfs_clone[SH_SIZES];
	/* qcow2. */
	int q_ok;
	char q_why[320];
	double q_build_s[SH_SIZES];
	struct timing q_snap[SH_SIZES];
	double total_s;
};

static double sh_t0;

/* Progress: "sharing: [seconds since the start] what". */
static void sh_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh_say(const char *fmt, ...)
{
	va_list ap;
	printf("sharing: [%6.1f s] ", now() - sh_t0);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

/* ---- vbas ---- */

struct diff_count {
	uint64_t ranges, bytes, last_end;
	int order_ok;
};

static int diff_cb(uint64_t off, uint64_t len, void *arg)
{
	struct diff_count *d = arg;
	if (d->ranges && off < d->last_end)
		d->order_ok = 0;
	d->ranges++;
	d->bytes += len;
	d->last_end = off + len;
	return 0;
}

static int walk_cb(const struct vbas_extent *e, void *arg)
{
	(void)e;
	(*(uint64_t *)arg)++;
	return 0;
}

/* Snapshot (FLAGS 0) or clone SRC as NAME, check it, as the CLI would see
 * it: NAME maps what SRC maps, has SRC as its origin. */
static void check_copy(struct vbas_pool *pool, const char *src, const char *name,
		       unsigned flags)
{
	struct vbas_vol_info si, ni;
	V(vbas_vol_stat(pool, src, &si));
	V(vbas_vol_stat(pool, name, &ni));
	if (ni.mapped != si.mapped || ni.origin != si.id ||
	    !!(ni.flags & VBAS_VOL_READONLY) != !(flags & VBAS_SNAP_WRITABLE))
		die("%s of %s: maps %" PRIu64 " (want %" PRIu64 "), origin %" PRIu64 " (want %"
		    PRIu64 "), flags %#x", name, src, ni.mapped, si.mapped, ni.origin, si.id,
		    ni.flags);
}

static void share_vbas(struct share_res *R, const char *pool_path, char *buf)
{
	struct vbas_pool *pool;
	struct vbas_vol *vol, *dst;
	struct vbas_vol_info vi;
	char src[32], name[128];
	double v[SH_REPS], dv[SH_REPS], t0, spent;
	int n;
	uint64_t N = R->sz[R->nsz - 1];
	uint64_t CS = opt.share_size;

	/* Room for the extent volumes' blocks (never written: the pool file
	 * stays sparse there), the CoW test and metadata. */
	uint64_t esum = 0;
	for (int k = 0; k < R->nsz; k++)
		esum += R->sz[k];
	struct vbas_format_opts fo = { .size = esum * BS * 5 / 4 + 3 * CS + 1 * GiB,
				       .block_size = BS, .flags = VBAS_FORMAT_FORCE };
	V(vbas_format(pool_path, &fo));
	V(vbas_open(pool_path, NULL, &pool));

	/* 1. The extent volumes. */
	sh_say("vbas: building volumes of 1 .. %" PRIu64 " extents", N);
	for (int k = 0; k < R->nsz; k++) {
		uint64_t ne = R->sz[k];
		snprintf(src, sizeof(src), "x%" PRIu64, ne);
		V(vbas_vol_create(pool, src, 2 * ne * BS));
		V(vbas_vol_open(pool, src, &vol));
		t0 = now();
		map_every_other(vol, ne);
		V(vbas_flush(pool));
		R->build_s[k] = now() - t0;
		V(vbas_vol_info(vol, &vi));
		if (vi.mapped != ne * BS)
			die("%s maps %" PRIu64 " bytes, want %" PRIu64, src, vi.mapped, ne * BS);
		V(vbas_vol_close(vol));
	}

	/* 2. Snapshot and clone, library call + commit; each deleted again
	 * (delete + commit timed apart) so that every run starts alike. */
	sh_say("vbas: snapshot and clone, library call + vbas_flush");
	for (int k = 0; k < R->nsz; k++) {
		snprintf(src, sizeof(src), "x%" PRIu64, R->sz[k]);
		for (int kind = 0; kind < 2; kind++) {
			unsigned fl = kind ? VBAS_SNAP_WRITABLE : 0;
			int nd = 0;
			for (n = 0, spent = 0; more_runs(n, spent); n++) {
				snprintf(name, sizeof(name), "%s-%s%d", src, kind ? "c" : "s", n);
				struct vbas_pool_info g0, g1;
				V(vbas_pool_info(pool, &g0));
				t0 = now();
				V(vbas_vol_snapshot(pool, src, name, fl));
				V(vbas_flush(pool));
				v[n] = now() - t0;
				spent += v[n];
				V(vbas_pool_info(pool, &g1));
				R->snap_commits = g1.generation - g0.generation;
				check_copy(pool, src, name, fl);
				t0 = now();
				V(vbas_vol_delete(pool, name));
				V(vbas_flush(pool));
				if (!kind)
					dv[nd++] = now() - t0;
			}
			if (kind)
				R->clone_lib[k] = timing_of(v, n);
			else {
				R->snap_lib[k] = timing_of(v, n);
				R->del_lib[k] = timing_of(dv, nd);
			}
		}
	}
	V(vbas_close(pool));

	/* 3. The CLI: vbas snapshot|clone POOL SRC NEW, a process each, wall
	 * time; vbas delete after each run (not timed). */
	sh_say("vbas: snapshot and clone, CLI process (%s)", opt.vbas_cli);
	for (int k = 0; k < R->nsz; k++) {
		snprintf(src, sizeof(src), "x%" PRIu64, R->sz[k]);
		for (int kind = 0; kind < 2; kind++) {
			for (n = 0, spent = 0; more_runs(n, spent); n++) {
				snprintf(name, sizeof(name), "%s-cli%s%d", src, kind ? "c" : "s", n);
				char *argv[] = { (char *)opt.vbas_cli, kind ? "clone" : "snapshot",
						 (char *)pool_path, src, name, NULL };
				run_cmd(argv, -1, &v[n]);
				spent += v[n];
				char *dargv[] = { (char *)opt.vbas_cli, "delete", "--yes",
						  (char *)pool_path, name, NULL };
				run_cmd(dargv, -1, NULL);
			}
			if (kind)
				R->clone_cli[k] = timing_of(v, n);
			else
				R->snap_cli[k] = timing_of(v, n);
		}
	}
	V(vbas_open(pool_path, NULL, &pool));

	/* 4. Reflink of the whole extent range into an empty volume of the
	 * same size, + commit.  The destination is created (and committed)
	 * before, and deleted after each run. */
	sh_say("vbas: reflink, library call + vbas_flush");
	for (int k = 0; k < R->nsz; k++) {
		uint64_t ne = R->sz[k];
		double cpu[SH_REPS];
		snprintf(src, sizeof(src), "x%" PRIu64, ne);
		V(vbas_vol_open(pool, src, &vol));
		for (n = 0, spent = 0; more_runs(n, spent); n++) {
			snprintf(name, sizeof(name), "%s-rl%d", src, n);
			V(vbas_vol_create(pool, name, 2 * ne * BS));
			V(vbas_flush(pool));
			V(vbas_vol_open(pool, name, &dst));
			struct vbas_pool_info g0, g1;
			V(vbas_pool_info(pool, &g0));
			double c0 = thread_cpu();
			t0 = now();
			V(vbas_reflink(vol, 0, dst, 0, 0));
			V(vbas_flush(pool));
			v[n] = now() - t0;
			cpu[n] = thread_cpu() - c0;
			spent += v[n];
			V(vbas_pool_info(pool, &g1));
			R->rl_commits[k] = g1.generation - g0.generation;
			V(vbas_vol_info(dst, &vi));
			if (vi.mapped != ne * BS)
				die("reflink of %s: %s maps %" PRIu64 " bytes, want %" PRIu64, src,
				    name, vi.mapped, ne * BS);
			V(vbas_vol_close(dst));
			t0 = now();
			V(vbas_vol_delete(pool, name));
			V(vbas_flush(pool));
			R->rl_del_s[k] = now() - t0;
		}
		R->rl_lib[k] = timing_of(v, n);
		R->rl_cpu[k] = timing_of(cpu, n);
		V(vbas_vol_close(vol));
	}

	/* 5. Diff: snapshot the N-extent volume, write 1% of its blocks (4 KiB
	 * each, distinct, random), snapshot again, diff the two snapshots.
	 * Then, for scale, a walk of every extent of the second. */
	sh_say("vbas: diff of two snapshots of the %" PRIu64 "-extent volume, 1%% changed", N);
	snprintf(src, sizeof(src), "x%" PRIu64, N);
	V(vbas_vol_snapshot(pool, src, "diff-a", 0));
	V(vbas_flush(pool));
	R->diff_blocks = 2 * N;
	R->diff_written = (R->diff_blocks + 99) / 100;
	uint32_t *perm = make_perm(R->diff_blocks);
	V(vbas_vol_open(pool, src, &vol));
	for (uint64_t i = 0; i < R->diff_written; i++) {
		((uint64_t *)buf)[0] = i + 1;
		V(vbas_pwrite(vol, buf, BS, (uint64_t)perm[i] * BS, 0));
	}
	free(perm);
	V(vbas_vol_close(vol));
	sh_say("vbas: %" PRIu64 " blocks written", R->diff_written);
	V(vbas_vol_snapshot(pool, src, "diff-b", 0));
	V(vbas_flush(pool));
	struct vbas_vol *da, *db;
	V(vbas_vol_open(pool, "diff-a", &da));
	V(vbas_vol_open(pool, "diff-b", &db));
	for (n = 0, spent = 0; more_runs(n, spent); n++) {
		struct diff_count dc = { .order_ok = 1 };
		t0 = now();
		V(vbas_diff(da, db, diff_cb, &dc));
		v[n] = now() - t0;
		spent += v[n];
		if (dc.bytes != R->diff_written * BS || !dc.order_ok)
			die("vbas_diff reported %" PRIu64 " bytes in %" PRIu64 " ranges%s; %" PRIu64
			    " blocks were written", dc.bytes, dc.ranges,
			    dc.order_ok ? "" : " out of order", R->diff_written);
		R->diff_ranges = dc.ranges;
		R->diff_bytes = dc.bytes;
	}
	R->diff_t = timing_of(v, n);
	t0 = now();
	V(vbas_extents(db, 0, 2 * N * BS, walk_cb, &R->walk_extents));
	R->walk_s = now() - t0;
	V(vbas_vol_close(da));
	/* The same number of blocks as one run in the middle: the diff can
	 * skip the subtrees outside it. */
	V(vbas_vol_open(pool, src, &vol));
	uint64_t coff = (N - R->diff_written / 2) * BS, clen = R->diff_written * BS;
	for (uint64_t off = coff; off < coff + clen; off += SEQ_IO)
		V(vbas_pwrite(vol, buf, coff + clen - off < SEQ_IO ? coff + clen - off : SEQ_IO,
			      off, 0));
	V(vbas_vol_close(vol));
	V(vbas_vol_snapshot(pool, src, "diff-c", 0));
	V(vbas_flush(pool));
	struct vbas_vol *dc_;
	V(vbas_vol_open(pool, "diff-c", &dc_));
	for (n = 0, spent = 0; more_runs(n, spent); n++) {
		struct diff_count dc = { .order_ok = 1 };
		t0 = now();
		V(vbas_diff(db, dc_, diff_cb, &dc));
		v[n] = now() - t0;
		spent += v[n];
		if (dc.bytes != clen || !dc.order_ok)
			die("vbas_diff reported %" PRIu64 " bytes in %" PRIu64 " ranges%s; %" PRIu64
			    " contiguous bytes were written", dc.bytes, dc.ranges,
			    dc.order_ok ? "" : " out of order", clen);
		R->cdiff_ranges = dc.ranges;
		R->cdiff_bytes = dc.bytes;
	}
	R->cdiff_t = timing_of(v, n);
	V(vbas_vol_close(dc_));
	V(vbas_vol_close(db));

	/* 6. 4 KiB random writes, each block once, in the same order: to a
	 * written volume just snapshotted (every first write is a copy on
	 * write) and to a written, unshared volume (overwrite in place).  Time
	 * based, ABBA slices as in the I/O tests, each ending with vbas_flush. */
	sh_say("vbas: 4K random writes, first write after a snapshot against overwrite, "
	       "%" PRIu64 " each", opt.share_ops < CS / BS ? opt.share_ops : CS / BS);
	R->cow_size = CS;
	struct vbas_vol *vo, *vc;
	V(vbas_vol_create(pool, "ow", CS));
	V(vbas_vol_create(pool, "cow", CS));
	V(vbas_vol_open(pool, "ow", &vo));
	V(vbas_vol_open(pool, "cow", &vc));
	for (uint64_t off = 0; off < CS; off += SEQ_IO) {
		V(vbas_pwrite(vo, buf, SEQ_IO, off, 0));
		V(vbas_pwrite(vc, buf, SEQ_IO, off, 0));
	}
	V(vbas_flush(pool));
	V(vbas_vol_snapshot(pool, "cow", "cow-snap", 0));
	V(vbas_flush(pool));
	perm = make_perm(CS / BS);
	struct target to = { .name = "vbas-overwrite", .pool = pool, .vol = vo };
	struct target tc = { .name = "vbas-cow", .pool = pool, .vol = vc };
	struct job jo, jc;
	job_init(&jo, &to, 1, 0, CS, perm, buf);
	job_init(&jc, &tc, 1, 0, CS, perm, buf);
	/* A count, not a time: the cost of a CoW write grows with the CoW
	 * writes before it, so a time limit would make the average depend
	 * on the machine's speed.  ABBA slices as run_pair(), each timed. */
	jo.max_ops = jc.max_ops = opt.share_ops < CS / BS ? opt.share_ops : CS / BS;
	jo.budget = jc.budget = 0;
	enum { NSL = 8 };
	double sl_s[2][NSL];
	uint64_t sl_ops[2][NSL];
	for (unsigned k = 0; k < NSL; k++) {
		for (int w = 0; w < 2; w++) {
			struct job *j = (k % 2) ^ w ? &jc : &jo;
			int ji = j == &jc;
			double s0 = j->res.seconds;
			uint64_t o0 = j->res.ops;
			job_slice(j, k, NSL);
			sl_s[ji][k] = j->res.seconds - s0;
			sl_ops[ji][k] = j->res.ops - o0;
		}
	}
	job_flush(&jo);
	job_flush(&jc);
	free(perm);
	R->slice_ops = sl_ops[1][0];
	R->ow_first_us = sl_s[0][0] * 1e6 / (double)sl_ops[0][0];
	R->ow_last_us = sl_s[0][NSL - 1] * 1e6 / (double)sl_ops[0][NSL - 1];
	R->cow_first_us = sl_s[1][0] * 1e6 / (double)sl_ops[1][0];
	R->cow_last_us = sl_s[1][NSL - 1] * 1e6 / (double)sl_ops[1][NSL - 1];
	R->ow = jo.res;
	R->cow = jc.res;
	struct vbas_vol_usage u;
	V(vbas_vol_usage(pool, "cow", &u));
	if (u.exclusive != jc.res.ops * BS)
		die("after %" PRIu64 " first writes the volume has %" PRIu64 " exclusive bytes",
		    jc.res.ops, u.exclusive);
	V(vbas_vol_close(vo));
	V(vbas_vol_close(vc));

	struct vbas_check_stats cst;
	int cr = vbas_check(pool, NULL, NULL, &cst);
	if (cr)
		die("vbas_check on the sharing pool: %s (%s), %" PRIu64 " problems", strerror(-cr),
		    vbas_errmsg(), cst.problems);
	V(vbas_close(pool));
}

/* ---- XFS ---- */

/* Extents of FD by FIEMAP (what filefrag and xfs_io fiemap use; each record
 * counted, no merging of physically adjacent ones). */
static uint64_t fiemap_count(int fd, uint64_t *shared, uint64_t *unwritten)
{
	enum { NX = 1024 };
	size_t sz = sizeof(struct fiemap) + NX * sizeof(struct fiemap_extent);
	struct fiemap *fm = malloc(sz);
	uint64_t start = 0, n = 0;
	int last = 0;
	if (!fm)
		die("out of memory");
	*shared = *unwritten = 0;
	for (int first = 1; !last; first = 0) {
		memset(fm, 0, sz);
		fm->fm_start = start;
		fm->fm_length = FIEMAP_MAX_OFFSET - start;
		fm->fm_flags = first ? FIEMAP_FLAG_SYNC : 0;
		fm->fm_extent_count = NX;
		if (ioctl(fd, FS_IOC_FIEMAP, fm) < 0)
			die("FS_IOC_FIEMAP: %s", strerror(errno));
		if (!fm->fm_mapped_extents)
			break;
		for (unsigned i = 0; i < fm->fm_mapped_extents; i++) {
			struct fiemap_extent *e = &fm->fm_extents[i];
			n++;
			if (e->fe_flags & FIEMAP_EXTENT_SHARED)
				(*shared)++;
			if (e->fe_flags & FIEMAP_EXTENT_UNWRITTEN)
				(*unwritten)++;
			if (e->fe_flags & FIEMAP_EXTENT_LAST)
				last = 1;
			start = e->fe_logical + e->fe_length;
		}
	}
	free(fm);
	return n;
}

static void xfs_clone_range(int sfd, uint64_t soff, uint64_t len, int dfd, uint64_t doff)
{
	struct file_clone_range cr = { .src_fd = sfd, .src_offset = soff, .src_length = len,
				       .dest_offset = doff };
	if (ioctl(dfd, FICLONERANGE, &cr) < 0)
		die("FICLONERANGE %" PRIu64 "+%" PRIu64 " -> %" PRIu64 ": %s", soff, len, doff,
		    strerror(errno));
}

static int xcreat(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		die("create %s: %s", path, strerror(errno));
	return fd;
}

static void xfs_sync(int fd, const char *what)
{
	if (fsync(fd) < 0)
		die("%s: fsync: %s", what, strerror(errno));
}

/* Check that FD has NE extents, all written, and if WANT_SHARED all shared. */
static void xfs_check(int fd, uint64_t ne, int want_shared, const char *what)
{
	uint64_t sh, uw, got = fiemap_count(fd, &sh, &uw);
	if (got != ne || uw || (want_shared && sh != ne))
		die("%s: FIEMAP shows %" PRIu64 " extents (%" PRIu64 " shared, %" PRIu64
		    " unwritten), want %" PRIu64 "%s", what, got, sh, uw, ne,
		    want_shared ? ", all shared" : "");
}

static char xfs_src[4200], xfs_seed[4200], xfs_dst[4200], xfs_dst2[4200];

/* A file of NE written 4 KiB extents at every second block, as the vbas
 * volume.  Fallocated (unwritten) extents will not do: XFS reflink skips
 * them (a clone of such a file has no extents).  Up to XFS_WRITE_MAX
 * extents the blocks are written; beyond, a seed file of XFS_SEED written
 * extents is reflinked over and over into place (written data: 4 MiB, not
 * 4 GiB; the extents are then shared with each other). */
static int xfs_make(struct share_res *R, int k, char *buf)
{
	uint64_t ne = R->sz[k];
	double t0 = now();
	int fd = xcreat(xfs_src);
	if (ftruncate(fd, (off_t)(2 * ne * BS)) < 0)
		die("ftruncate %s: %s", xfs_src, strerror(errno));
	if (ne <= XFS_WRITE_MAX) {
		for (uint64_t i = 0; i < ne; i++) {
			((uint64_t *)buf)[0] = i + 1;
			full_pwrite(fd, buf, BS, (off_t)(2 * i * BS), xfs_src);
		}
		snprintf(R->xfs_how[k], sizeof(R->xfs_how[k]), "pwrite 4K at every 2nd block");
	} else {
		int sfd = xcreat(xfs_seed);
		for (uint64_t i = 0; i < XFS_SEED; i++) {
			((uint64_t *)buf)[0] = i + 1;
			full_pwrite(sfd, buf, BS, (off_t)(2 * i * BS), xfs_seed);
		}
		xfs_sync(sfd, xfs_seed);
		for (uint64_t j = 0; j * XFS_SEED < ne; j++) {
			uint64_t cnt = ne - j * XFS_SEED < XFS_SEED ? ne - j * XFS_SEED : XFS_SEED;
			xfs_clone_range(sfd, 0, (2 * cnt - 1) * BS, fd, 2 * j * XFS_SEED * BS);
		}
		close(sfd);
		unlink(xfs_seed);
		snprintf(R->xfs_how[k], sizeof(R->xfs_how[k]),
			 "%d written extents reflinked %" PRIu64 "x", XFS_SEED,
			 (ne + XFS_SEED - 1) / XFS_SEED);
	}
	xfs_sync(fd, xfs_src);
	R->xfs_build_s[k] = now() - t0;
	xfs_check(fd, ne, ne > XFS_WRITE_MAX, xfs_src);
	return fd;
}

static void share_xfs(struct share_res *R, char *buf)
{
	double v[SH_REPS], t0, spent;
	int n;
	if (!opt.xfs_dir) {
		snprintf(R->xfs_why, sizeof(R->xfs_why), "%s",
			 opt.xfs_skip ? opt.xfs_skip : "no --xfs-dir (bench/run.sh mounts one)");
		return;
	}
	if (!in_path("cp")) {
		snprintf(R->xfs_why, sizeof(R->xfs_why), "no cp in $PATH");
		return;
	}
	snprintf(xfs_src, sizeof(xfs_src), "%s/src", opt.xfs_dir);
	snprintf(xfs_seed, sizeof(xfs_seed), "%s/seed", opt.xfs_dir);
	snprintf(xfs_dst, sizeof(xfs_dst), "%s/dst", opt.xfs_dir);
	snprintf(xfs_dst2, sizeof(xfs_dst2), "%s/dst2", opt.xfs_dir);
	cleanup_add(xfs_src);
	cleanup_add(xfs_seed);
	cleanup_add(xfs_dst);
	cleanup_add(xfs_dst2);

	/* Does it reflink at all? */
	int a = xcreat(xfs_src), b = xcreat(xfs_dst);
	full_pwrite(a, buf, BS, 0, xfs_src);
	struct file_clone_range cr = { .src_fd = a };
	int ok = ioctl(b, FICLONERANGE, &cr) == 0;
	int e = errno;
	close(a);
	close(b);
	unlink(xfs_src);
	unlink(xfs_dst);
	if (!ok) {
		snprintf(R->xfs_why, sizeof(R->xfs_why), "FICLONERANGE in %s: %s", opt.xfs_dir,
			 strerror(e));
		return;
	}

	for (int k = 0; k < R->nsz; k++) {
		uint64_t ne = R->sz[k];
		sh_say("xfs: %" PRIu64 " extents", ne);
		int sfd = xfs_make(R, k, buf);
		/* The library-level counterpart: FICLONERANGE of the whole file
		 * into an empty file (made before), + fsync of it.  The big one
		 * is kept to the end: XFS frees a file in the background, and
		 * freeing 1,000,000 extents would run into the next timing. */
		for (n = 0, spent = 0; more_runs(n, spent); n++) {
			int dfd = xcreat(xfs_dst);
			xfs_sync(dfd, xfs_dst);
			t0 = now();
			xfs_clone_range(sfd, 0, 0, dfd, 0);
			xfs_sync(dfd, xfs_dst);
			v[n] = now() - t0;
			spent += v[n];
			if (n == 0)
				xfs_check(dfd, ne, 1, xfs_dst);
			close(dfd);
			if (more_runs(n + 1, spent))
				unlink(xfs_dst);
		}
		R->xfs_clone[k] = timing_of(v, n);
		/* The CLI counterpart: cp --reflink=always SRC NEW, a process. */
		for (n = 0, spent = 0; more_runs(n, spent); n++) {
			char *argv[] = { "cp", "--reflink=always", xfs_src, xfs_dst2, NULL };
			run_cmd(argv, -1, &v[n]);
			spent += v[n];
			if (n == 0) {
				int dfd = open(xfs_dst2, O_RDONLY | O_CLOEXEC);
				if (dfd < 0)
					die("open %s: %s", xfs_dst2, strerror(errno));
				xfs_check(dfd, ne, 1, xfs_dst2);
				close(dfd);
			}
			if (more_runs(n + 1, spent))
				unlink(xfs_dst2);
		}
		R->xfs_cp[k] = timing_of(v, n);
		close(sfd);
		if (k + 1 < R->nsz || !opt.xfs_scratch) {
			unlink(xfs_dst);
			unlink(xfs_dst2);
			unlink(xfs_src);
		}
	}
	R->xfs_ok = 1;
	cleanup_del(xfs_src);
	cleanup_del(xfs_seed);
	cleanup_del(xfs_dst);
	cleanup_del(xfs_dst2);
}

/* ---- qcow2 ---- */

static char q_img[4200];

/* Allocated clusters of IMG, from qemu-img check --output=json. */
static uint64_t qcow2_allocated(const char *img)
{
	char tmpl[4200], out[4096];
	snprintf(tmpl, sizeof(tmpl), "%s/qcheck.XXXXXX", opt.dir);
	int fd = mkostemp(tmpl, O_CLOEXEC);
	if (fd < 0)
		die("mkostemp: %s", strerror(errno));
	unlink(tmpl);
	char *argv[] = { "qemu-img", "check", "--output=json", (char *)img, NULL };
	run_cmd(argv, fd, NULL);
	ssize_t r = pread(fd, out, sizeof(out) - 1, 0);
	close(fd);
	out[r > 0 ? r : 0] = 0;
	const char *p = strstr(out, "\"allocated-clusters\":");
	if (!p)
		die("qemu-img check %s: no allocated-clusters in '%s'", img, out);
	return strtoull(p + strlen("\"allocated-clusters\":"), NULL, 10);
}

/* Images of N allocated 4 KiB clusters: qemu-img create with
 * preallocation=metadata (host file sparse).  qcow2 maps each cluster
 * by its own L2 entry and refcount, so N clusters are N mappings whether
 * adjacent or not; these are adjacent (virtual size N x 4 KiB). */
static void share_qcow2(struct share_res *R)
{
	double v[SH_REPS], t0, spent;
	int n;
	if (opt.no_qcow2) {
		snprintf(R->q_why, sizeof(R->q_why), "--no-qcow2");
		return;
	}
	if (!in_path("qemu-img")) {
		snprintf(R->q_why, sizeof(R->q_why), "no qemu-img in $PATH");
		return;
	}
	snprintf(q_img, sizeof(q_img), "%s/share.qcow2", opt.dir);
	cleanup_add(q_img);
	for (int k = 0; k < R->nsz; k++) {
		uint64_t ne = R->sz[k];
		char size[32];
		sh_say("qcow2: %" PRIu64 " clusters", ne);
		snprintf(size, sizeof(size), "%" PRIu64, ne * BS);
		char *cargv[] = { "qemu-img", "create", "-q", "-f", "qcow2", "-o",
				  "cluster_size=4096,preallocation=metadata", q_img, size, NULL };
		t0 = now();
		run_cmd(cargv, -1, NULL);
		R->q_build_s[k] = now() - t0;
		uint64_t got = qcow2_allocated(q_img);
		if (got != ne)
			die("%s: %" PRIu64 " allocated clusters, want %" PRIu64, q_img, got, ne);
		for (n = 0, spent = 0; more_runs(n, spent); n++) {
			char *argv[] = { "qemu-img", "snapshot", "-c", "s", q_img, NULL };
			char *dargv[] = { "qemu-img", "snapshot", "-d", "s", q_img, NULL };
			run_cmd(argv, -1, &v[n]);
			spent += v[n];
			run_cmd(dargv, -1, NULL);
		}
		R->q_snap[k] = timing_of(v, n);
		unlink(q_img);
	}
	cleanup_del(q_img);
	R->q_ok = 1;
}

/* What a device flush costs here: median of 9 x (4 KiB pwrite, O_DIRECT
 * where it works, + fdatasync) to a file in DIR, ms.  Every vbas commit
 * waits for a few of these; another load on the same device shows here. */
static double flush_probe(const char *dir, char *buf)
{
	static char path[4200];
	double v[9];
	snprintf(path, sizeof(path), "%s/flush-probe", dir);
	cleanup_add(path);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_DIRECT, 0644);
	if (fd < 0)
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		die("create %s: %s", path, strerror(errno));
	for (int i = 0; i < 9; i++) {
		double t0 = now();
		full_pwrite(fd, buf, BS, (off_t)i * BS, path);
		xfdatasync(fd, path);
		v[i] = now() - t0;
	}
	close(fd);
	unlink(path);
	cleanup_del(path);
	return timing_of(v, 9).med * 1e3;
}

static void share_run(struct share_res *R, char *buf)
{
	static char pool_path[4200];
	double t0 = now();
	sh_t0 = t0;
	memset(R, 0, sizeof(*R));
	R->sz[R->nsz++] = 1;
	if (opt.extents > 1)
		R->sz[R->nsz++] = opt.extents < 10000 ? opt.extents : 10000;
	if (opt.extents > 10000)
		R->sz[R->nsz++] = opt.extents;
	snprintf(pool_path, sizeof(pool_path), "%s/share.pool", opt.dir);
	cleanup_add(pool_path);
	printf("\n");
	R->flush_ms[0] = flush_probe(opt.dir, buf);
	share_vbas(R, pool_path, buf);
	unlink(pool_path);
	cleanup_del(pool_path);
	share_qcow2(R);
	share_xfs(R, buf);      /* last: XFS frees the big files in the background */
	R->flush_ms[1] = flush_probe(opt.dir, buf);
	R->total_s = now() - t0;
}

/* ---- Report ---- */

static void sh_cell(int ok, struct timing t)
{
	if (ok && t.runs)
		printf(" %11.3f", t.med * 1e3);
	else
		printf(" %11s", "-");
}

static void sh_ratio(int ok, struct timing a, struct timing b)
{
	if (ok && a.runs && b.runs && b.med > 0)
		printf(" %9.3g", a.med / b.med);
	else
		printf(" %9s", "-");
}

/* One table row: vbas, xfs, vbas/xfs, qcow2, vbas/qcow2, runs. */
static void sh_row(const char *name, uint64_t ne, struct timing vb, int xok, struct timing x,
		   int qok, struct timing q)
{
	printf("%-32s %8" PRIu64, name, ne);
	sh_cell(1, vb);
	sh_cell(xok, x);
	sh_ratio(xok, vb, x);
	sh_cell(qok, q);
	sh_ratio(qok, vb, q);
	printf("  %d/%d/%d\n", vb.runs, xok ? x.runs : 0, qok ? q.runs : 0);
}

static void sh_key(const char *what, uint64_t ne, struct timing t)
{
	char k[128];
	if (!t.runs)
		return;
	snprintf(k, sizeof(k), "share_%s_%" PRIu64, what, ne);
	bench_line(k, t.med * 1e3, "ms");
}

static void share_report(const struct share_res *R)
{
	static const struct timing none;
	const char *rule = "------------------------------------------------------------------------"
			   "------------------------";
	int xok = R->xfs_ok, qok = R->q_ok;
	uint64_t N = R->sz[R->nsz - 1];

	printf("\n");
	for (int k = 0; k < R->nsz; k++) {
		uint64_t ne = R->sz[k];
		sh_key("snapshot_lib_vbas", ne, R->snap_lib[k]);
		sh_key("clone_lib_vbas", ne, R->clone_lib[k]);
		sh_key("snapshot_cli_vbas", ne, R->snap_cli[k]);
		sh_key("clone_cli_vbas", ne, R->clone_cli[k]);
		sh_key("snapshot_delete_lib_vbas", ne, R->del_lib[k]);
		sh_key("reflink_lib_vbas", ne, R->rl_lib[k]);
		if (xok) {
			sh_key("cp_reflink_xfs", ne, R->xfs_cp[k]);
			sh_key("ficlonerange_fsync_xfs", ne, R->xfs_clone[k]);
		}
		if (qok)
			sh_key("qemu_img_snapshot_qcow2", ne, R->q_snap[k]);
	}
	bench_line("share_reflink_vbas_per_extent",
		   R->rl_lib[R->nsz - 1].med * 1e6 / (double)N, "us");
	bench_line("share_reflink_vbas_cpu_per_extent",
		   R->rl_cpu[R->nsz - 1].med * 1e6 / (double)N, "us");
	bench_line("share_write_4k_overwrite", iops(&R->ow), "iops");
	bench_line("share_write_4k_cow", iops(&R->cow), "iops");
	bench_line("share_write_4k_cow_ratio", iops(&R->ow) / iops(&R->cow), "x");
	bench_line("share_write_4k_cow_first_slice", R->cow_first_us, "us/op");
	bench_line("share_write_4k_cow_last_slice", R->cow_last_us, "us/op");
	bench_line("share_diff_1pct", R->diff_t.med * 1e3, "ms");
	bench_line("share_diff_1pct_ranges", (double)R->diff_ranges, "count");
	bench_line("share_diff_1pct_contiguous", R->cdiff_t.med * 1e3, "ms");
	bench_line("share_extent_walk", R->walk_s * 1e3, "ms");
	bench_line("share_reflink_commits", (double)R->rl_commits[R->nsz - 1], "count");
	bench_line("share_flush_probe_start", R->flush_ms[0], "ms");
	bench_line("share_flush_probe_end", R->flush_ms[1], "ms");
	bench_line("share_total", R->total_s, "s");

	printf("\nvbas %s sharing benchmark: volumes of", VBAS_VERSION_STRING);
	for (int k = 0; k < R->nsz; k++)
		printf(" %s%" PRIu64, k ? "/ " : "", R->sz[k]);
	printf(" extents (4 KiB mapped at every 2nd block), block %u B\n", BS);
	printf("times in ms, median of the runs (runs: vbas/xfs/qcow2; up to %d, fewer once %.1f s "
	       "are spent); ratio = vbas time / other time\n", SH_REPS, SH_BUDGET);
	printf("%.96s\n", rule);
	printf("%-32s %8s %11s %11s %9s %11s %9s  %s\n", "test", "extents", "vbas", "xfs",
	       "vbas/xfs", "qcow2", "vbas/qcow", "runs");
	printf("%.96s\n", rule);
	for (int k = 0; k < R->nsz; k++)
		sh_row("snapshot, CLI process", R->sz[k], R->snap_cli[k], xok, R->xfs_cp[k], qok,
		       R->q_snap[k]);
	for (int k = 0; k < R->nsz; k++)
		sh_row("clone, CLI process", R->sz[k], R->clone_cli[k], xok, R->xfs_cp[k], 0, none);
	for (int k = 0; k < R->nsz; k++)
		sh_row("snapshot, library + commit", R->sz[k], R->snap_lib[k], xok,
		       R->xfs_clone[k], 0, none);
	for (int k = 0; k < R->nsz; k++)
		sh_row("clone, library + commit", R->sz[k], R->clone_lib[k], xok, R->xfs_clone[k],
		       0, none);
	for (int k = 0; k < R->nsz; k++)
		sh_row("reflink range, library + commit", R->sz[k], R->rl_lib[k], xok,
		       R->xfs_clone[k], 0, none);
	printf("%.96s\n", rule);
	printf("  vbas CLI: %s snapshot|clone POOL SRC NEW, wall time of the process (open, "
	       "snapshot, commit, close)\n", opt.vbas_cli);
	printf("  vbas library: vbas_vol_snapshot (clone: VBAS_SNAP_WRITABLE) or vbas_reflink of "
	       "the whole range into\n  an empty volume, then vbas_flush; snapshots deleted "
	       "between runs\n");
	if (xok) {
		printf("  xfs CLI rows: cp --reflink=always SRC NEW, wall time of the process (cp "
		       "does not fsync)\n");
		printf("  xfs library rows: FICLONERANGE of the whole file into an empty file, then "
		       "fsync of it\n");
		printf("  xfs files: loop-mounted XFS (reflink=1) at %s; extents counted with "
		       "FIEMAP, all written,\n  and all shared in every copy:", opt.xfs_dir);
		for (int k = 0; k < R->nsz; k++)
			printf("%s %" PRIu64 ": %s (%.2f s)", k ? ";" : "", R->sz[k], R->xfs_how[k],
			       R->xfs_build_s[k]);
		printf("\n");
	} else {
		printf("  xfs: skipped: %s\n", R->xfs_why);
	}
	if (qok) {
		printf("  qcow2: qemu-img snapshot -c, wall time of the process; images of N "
		       "allocated 4 KiB clusters\n  (qemu-img create -o cluster_size=4096,"
		       "preallocation=metadata; qcow2 maps every cluster apart)\n");
	} else {
		printf("  qcow2: skipped: %s\n", R->q_why);
	}
	printf("%.96s\n", rule);
	printf("%-44s %12s %12s %9s  %s\n", "4K rand write, each block once", "IOPS", "us/op",
	       "cpu us/op", "ops");
	printf("%.96s\n", rule);
	printf("%-44s %12.1f %12.2f %9.1f  %" PRIu64 "\n", "overwrite, unshared mapped block",
	       iops(&R->ow), 1e6 / iops(&R->ow), cpu_us(&R->ow), R->ow.ops);
	printf("%-44s %12.1f %12.2f %9.1f  %" PRIu64 "\n", "first write after snapshot (CoW)",
	       iops(&R->cow), 1e6 / iops(&R->cow), cpu_us(&R->cow), R->cow.ops);
	printf("%-44s %12s %12.3f  x time per op\n", "CoW / overwrite", "",
	       iops(&R->ow) / iops(&R->cow));
	printf("%-44s %12s %12.2f  us/op in the first %" PRIu64 " writes, %.2f in the last\n",
	       "  overwrite, first and last 1/8", "", R->ow_first_us, R->slice_ops, R->ow_last_us);
	printf("%-44s %12s %12.2f  us/op in the first %" PRIu64 " writes, %.2f in the last%s\n",
	       "  CoW, first and last 1/8", "", R->cow_first_us, R->slice_ops, R->cow_last_us,
	       R->cow_last_us > 2 * R->cow_first_us ? "  ** GROWS **" : "");
	printf("  %.0f MiB volumes, fully written; each block once, same random order; alternate "
	       "in 8 slices (ABBA);\n  incl. the final vbas_flush\n", R->cow_size / (double)MiB);
	printf("%.96s\n", rule);
	printf("%-44s %16s  %s\n", "vbas metric", "value", "target / note");
	printf("%.96s\n", rule);
	printf("%-44s %13.3f ms  %" PRIu64 " blocks of %" PRIu64 " written between the "
	       "snapshots\n", "diff of two snapshots, 1% changed", R->diff_t.med * 1e3,
	       R->diff_written, R->diff_blocks);
	printf("%-44s %16" PRIu64 "  %.1f MiB in all, as written\n", "  ranges reported",
	       R->diff_ranges, R->diff_bytes / (double)MiB);
	printf("%-44s %13.3f ms  vbas_extents over the %" PRIu64 " extents of the second "
	       "snapshot\n", "  for scale: walk of every extent", R->walk_s * 1e3, R->walk_extents);
	printf("%-44s %13.3f ms  %" PRIu64 " range(s), %.1f MiB: the same count of blocks as one "
	       "run\n", "diff, 1% changed in one contiguous run", R->cdiff_t.med * 1e3,
	       R->cdiff_ranges, R->cdiff_bytes / (double)MiB);
	const struct timing *sc = &R->snap_cli[R->nsz - 1];
	printf("%-44s %13.3f ms  target < 8 ms%s (max of %d runs %.3f ms)\n",
	       "vbas snapshot CLI, largest volume", sc->med * 1e3,
	       sc->med < 8e-3 ? "" : "  ** OVER **", sc->runs, sc->max * 1e3);
	printf("%-44s %13.3f us  reflink of %" PRIu64 " extents, + commit; %" PRIu64
	       " commit(s) in it;\n%-44s %13.3f us  of it CPU time (this thread)\n",
	       "reflink per extent", R->rl_lib[R->nsz - 1].med * 1e6 / (double)N,
	       N, R->rl_commits[R->nsz - 1], "", R->rl_cpu[R->nsz - 1].med * 1e6 / (double)N);
	printf("%-44s %13.3f ms  vbas_vol_delete + vbas_flush, %" PRIu64 " extents\n",
	       "delete a snapshot", R->del_lib[R->nsz - 1].med * 1e3, N);
	printf("%-44s %14.3f s  vbas_vol_delete + vbas_flush, %" PRIu64 " extents\n",
	       "delete a reflinked volume", R->rl_del_s[R->nsz - 1], N);
	printf("%-44s %14.3f s  map_begin/map_end, no data I/O, + flush\n",
	       "build the N-extent volume", R->build_s[R->nsz - 1]);
	printf("%-44s %13.3f ms  4K write + fdatasync in the bench dir, median of 9, at the start;"
	       "\n%-44s %13.3f ms  at the end (a vbas snapshot + commit made %" PRIu64 " commit(s))\n",
	       "device flush", R->flush_ms[0], "", R->flush_ms[1], R->snap_commits);
	printf("%-44s %14.1f s  all of the sharing benchmark, building included\n",
	       "sharing benchmark total", R->total_s);
	printf("%.96s\n", rule);
}

/* ---- Space guarantees ----------------------------------------------------- */

/* What the guarantees cost (issue 12), side by side in one run:
 *  - 4 KiB allocating writes and copy-on-write writes, without and with a
 *    reservation cookie (vbas_reserve before the writes, its put after,
 *    both timed); and writes into a reserved range (a thick volume);
 *  - a snapshot (+ commit) of a volume whose reserved range has N extents
 *    against one whose range is one extent: it must stay flat;
 *  - vbas_vol_reserve of 1 TiB (+ commit) on a pool with 1 GiB in use. */
struct space_res {
	double alloc[2], cow[2], thick;      /* IOPS; [0] without, [1] with a cookie */
	uint64_t nw;                         /* writes per measurement */
	struct timing snap1, snapn;
	uint64_t snapn_extents;
	double build_s, reserve_n_s;
	double tib_s;
	uint64_t tib_extents;
};

/* N 4 KiB writes through the mapping interface at the blocks of PERM (data
 * I/O included), with a cookie for all of them if COOKIE, + commit. */
static double space_writes(struct vbas_pool *pool, struct vbas_vol *vol, const uint32_t *perm,
			   uint64_t n, int cookie, const char *buf)
{
	struct vbas_resv *rv = NULL;
	struct vbas_iomap m;
	double t0 = now();
	if (cookie)
		V(vbas_reserve(pool, n, &rv));
	for (uint64_t i = 0; i < n; i++) {
		uint64_t off = (uint64_t)perm[i] * BS;
		V(vbas_map_begin(vol, off, BS, VBAS_MAP_WRITE, rv, &m));
		full_pwrite(m.fd, buf + (i % 64) * BS, BS, (off_t)m.physical, "space bench write");
		V(vbas_map_end(vol, &m, BS, 0));
	}
	vbas_resv_put(rv);
	V(vbas_flush(pool));
	return n / (now() - t0);
}

static void space_run(struct space_res *R, char *buf)
{
	static char path[4200], tib_path[4200];
	snprintf(path, sizeof(path), "%s/space.pool", opt.dir);
	snprintf(tib_path, sizeof(tib_path), "%s/space-tib.pool", opt.dir);
	cleanup_add(path);
	cleanup_add(tib_path);
	memset(R, 0, sizeof(*R));
	uint64_t ne = opt.extents, vsize = 2 * ne * BS;
	/* Room for the two thick volumes, the copies a snapshot of either
	 * owes, and their metadata; the write tests' volumes besides. */
	struct vbas_format_opts fo = { .size = 3 * vsize + 2 * GiB + vsize / 8, .block_size = BS,
				       .flags = VBAS_FORMAT_FORCE };
	V(vbas_format(path, &fo));
	struct vbas_pool *pool;
	struct vbas_open_opts oo = { .cache_bytes = 256 * MiB };
	V(vbas_open(path, &oo, &pool));

	/* Writes: 4 volumes of 256 MiB; each measurement writes NW blocks. */
	uint64_t nb = 256 * MiB / BS;
	R->nw = nb / 2;
	uint32_t *perm = make_perm(nb);
	const char *names[4] = { "a0", "a1", "t", "c" };
	struct vbas_vol *v[4];
	for (int k = 0; k < 4; k++) {
		V(vbas_vol_create(pool, names[k], 256 * MiB));
		V(vbas_vol_open(pool, names[k], &v[k]));
	}
	/* Allocating: one volume without, one with a cookie, in ABBA order. */
	double a0 = space_writes(pool, v[0], perm, R->nw / 2, 0, buf);
	double a1 = space_writes(pool, v[1], perm, R->nw / 2, 1, buf);
	double b1 = space_writes(pool, v[1], perm + R->nw / 2, R->nw / 2, 1, buf);
	double b0 = space_writes(pool, v[0], perm + R->nw / 2, R->nw / 2, 0, buf);
	R->alloc[0] = (a0 + b0) / 2;
	R->alloc[1] = (a1 + b1) / 2;
	/* Copy on write: both volumes snapshotted, their blocks written again. */
	V(vbas_vol_snapshot(pool, "a0", "a0s", 0));
	V(vbas_vol_snapshot(pool, "a1", "a1s", 0));
	a0 = space_writes(pool, v[0], perm, R->nw / 2, 0, buf);
	a1 = space_writes(pool, v[1], perm, R->nw / 2, 1, buf);
	b1 = space_writes(pool, v[1], perm + R->nw / 2, R->nw / 2, 1, buf);
	b0 = space_writes(pool, v[0], perm + R->nw / 2, R->nw / 2, 0, buf);
	R->cow[0] = (a0 + b0) / 2;
	R->cow[1] = (a1 + b1) / 2;
	/* A thick volume: reserved whole, then written (in place). */
	V(vbas_vol_reserve(v[2], 0, 256 * MiB));
	V(vbas_flush(pool));
	R->thick = space_writes(pool, v[2], perm, R->nw, 0, buf);
	free(perm);
	for (int k = 0; k < 4; k++)
		V(vbas_vol_close(v[k]));
	const char *drop[] = { "a0s", "a1s", "a0", "a1", "t", "c" };
	for (size_t k = 0; k < sizeof(drop) / sizeof(drop[0]); k++)
		V(vbas_vol_delete(pool, drop[k]));
	V(vbas_flush(pool));

	/* Snapshots: a thick volume of one extent, and one of 2N extents (N
	 * mapped every other block, the N holes between reserved). */
	struct vbas_vol *one, *many;
	V(vbas_vol_create(pool, "one", vsize));
	V(vbas_vol_open(pool, "one", &one));
	V(vbas_vol_reserve(one, 0, vsize));
	V(vbas_vol_close(one));
	V(vbas_vol_create(pool, "many", vsize));
	V(vbas_vol_open(pool, "many", &many));
	double t0 = now();
	map_every_other(many, ne);
	V(vbas_flush(pool));
	R->build_s = now() - t0;
	t0 = now();
	V(vbas_vol_reserve(many, 0, vsize));
	V(vbas_flush(pool));
	R->reserve_n_s = now() - t0;
	struct vbas_vol_info vi;
	V(vbas_vol_info(many, &vi));
	V(vbas_vol_close(many));
	R->snapn_extents = 2 * ne;
	double ts1[9], tsn[9];
	int runs = 0;
	for (; runs < 9 && (runs < 5 || now() - t0 < 30); runs++) {
		const char *src[2] = { "one", "many" };
		double *dst[2] = { ts1, tsn };
		for (int k = 0; k < 2; k++) {
			double s = now();
			V(vbas_vol_snapshot(pool, src[k], "snap", 0));
			V(vbas_flush(pool));
			dst[k][runs] = now() - s;
			V(vbas_vol_delete(pool, "snap"));
			V(vbas_flush(pool));
		}
	}
	R->snap1 = timing_of(ts1, runs);
	R->snapn = timing_of(tsn, runs);
	V(vbas_close(pool));
	unlink(path);
	cleanup_del(path);

	/* 1 TiB reserved on a pool with 1 GiB in use. */
	struct vbas_format_opts ft = { .size = 1024 * GiB + 4 * GiB, .block_size = BS,
				       .flags = VBAS_FORMAT_FORCE };
	V(vbas_format(tib_path, &ft));
	V(vbas_open(tib_path, &oo, &pool));
	struct vbas_vol *u, *tv;
	V(vbas_vol_create(pool, "used", 1 * GiB));
	V(vbas_vol_open(pool, "used", &u));
	struct vbas_iomap m;
	for (uint64_t off = 0; off < 1 * GiB; off += m.length) {
		V(vbas_map_begin(u, off, 1 * GiB - off, VBAS_MAP_WRITE, NULL, &m));
		V(vbas_map_end(u, &m, m.length, 0));
	}
	V(vbas_vol_close(u));
	V(vbas_vol_create(pool, "tib", 1024 * GiB));
	V(vbas_vol_open(pool, "tib", &tv));
	V(vbas_flush(pool));
	t0 = now();
	V(vbas_vol_reserve(tv, 0, 1024 * GiB));
	V(vbas_flush(pool));
	R->tib_s = now() - t0;
	V(vbas_vol_info(tv, &vi));
	if (vi.reserved != 1024 * GiB)
		die("1 TiB reserve: %" PRIu64 " bytes reserved", vi.reserved);
	V(vbas_vol_close(tv));
	V(vbas_close(pool));
	unlink(tib_path);
	cleanup_del(tib_path);
}

static void space_report(const struct space_res *R)
{
	static const char rule[] = "------------------------------------------------------------"
				   "------------------------------------";
	printf("\nSpace guarantees (4 KiB blocks; writes through vbas_map_begin/map_end with the "
	       "data written, + commit)\n");
	printf("%.96s\n", rule);
	printf("%-44s %12s %12s %12s\n", "4K random writes, each block once", "no cookie",
	       "cookie", "cookie/none");
	printf("%.96s\n", rule);
	printf("%-44s %12.0f %12.0f %12.3f\n", "allocating (into holes), IOPS", R->alloc[0],
	       R->alloc[1], R->alloc[1] / R->alloc[0]);
	printf("%-44s %12.0f %12.0f %12.3f\n", "copy on write (after a snapshot), IOPS",
	       R->cow[0], R->cow[1], R->cow[1] / R->cow[0]);
	printf("%-44s %12.0f %12s %12.3f  x allocating, no cookie\n",
	       "into a reserved range (thick), IOPS", R->thick, "", R->thick / R->alloc[0]);
	printf("  %" PRIu64 " writes per cell, ABBA order; a cookie's reserve and put are "
	       "timed with its writes\n", R->nw / 2);
	printf("%.96s\n", rule);
	printf("%-44s %13.3f ms  median of %d (max %.3f ms)\n",
	       "snapshot + commit, reserved range, 1 extent", R->snap1.med * 1e3, R->snap1.runs,
	       R->snap1.max * 1e3);
	char what[64];
	snprintf(what, sizeof(what), "  ... of %" PRIu64 " extents", R->snapn_extents);
	printf("%-44s %13.3f ms  median of %d (max %.3f ms); %.2fx the 1-extent one%s\n",
	       what, R->snapn.med * 1e3, R->snapn.runs,
	       R->snapn.max * 1e3, R->snapn.med / R->snap1.med,
	       R->snapn.med < 2 * R->snap1.med + 1e-3 ? "" : "  ** NOT FLAT **");
	printf("%-44s %14.3f s  vbas_vol_reserve of the 2N-extent volume (N holes), + commit\n",
	       "  reserve of that range", R->reserve_n_s);
	printf("%-44s %14.3f s  vbas_vol_reserve + commit, a pool with 1 GiB in use\n",
	       "reserve 1 TiB", R->tib_s);
	printf("%.96s\n", rule);
}

/* ---- The reverse map: its cost, and what it answers ------------------------ */

/* Everything twice, on a pool without a reverse map (format --no-rmap:
 * [0]) and with one ([1]), in one run. */
struct rmap_res {
	uint64_t nw, nref, nsnap, ext;
	double alloc_iops[2], cow_iops[2], reflink_s[2];
	struct timing snap1[2], snapn[2];
	double fsmap_s[2], bad_ms[2];
	uint64_t fsmap_recs[2], fsmap_bytes[2], fsmap_len, bad_recs[2];
	double build_s;               /* set --rmap of the pool without one */
	uint64_t meta[2];             /* metadata_used at the end */
	/* Pool shrink, and cp of as many bytes as it moved. */
	double shrink_s, cp_s;
	uint64_t shrink_from, shrink_to, shrink_data, shrink_nodes, shrink_steps;
};

/* LEN bytes of BUF (SEQ_IO of them, repeated) to volume NAME, 1 MiB a write. */
static void fill_vol(struct vbas_pool *pool, const char *name, uint64_t len, const char *buf)
{
	struct vbas_vol *v;
	V(vbas_vol_open(pool, name, &v));
	for (uint64_t off = 0; off < len; off += SEQ_IO)
		V(vbas_pwrite(v, buf, SEQ_IO, off, 0));
	vbas_vol_close(v);
}

/* A 1 GiB volume with 4 snapshots, a tenth of it rewritten between
 * them, placed high in a pool (a 2 GiB filler written first and deleted
 * last), then the pool shrunk to what it holds and a little room: every
 * block past the new end moves.  Beside it, cp of a file as large as the
 * data moved, with fsync, from a cold page cache. */
static void shrink_bench(struct rmap_res *R, char *buf)
{
	static char path[4200], src[4200], dst[4200];
	snprintf(path, sizeof(path), "%s/shrink.pool", opt.dir);
	snprintf(src, sizeof(src), "%s/shrink-cp.src", opt.dir);
	snprintf(dst, sizeof(dst), "%s/shrink-cp.dst", opt.dir);
	cleanup_add(path);
	struct vbas_format_opts fo = { .size = 4 * GiB, .block_size = BS,
				       .flags = VBAS_FORMAT_FORCE };
	V(vbas_format(path, &fo));
	struct vbas_pool *pool;
	struct vbas_open_opts oo = { .cache_bytes = 256 * MiB };
	V(vbas_open(path, &oo, &pool));
	V(vbas_vol_create(pool, "fill", 2 * GiB));
	fill_vol(pool, "fill", 2 * GiB, buf);
	V(vbas_vol_create(pool, "d", GiB));
	fill_vol(pool, "d", GiB, buf);
	struct vbas_vol *d;
	V(vbas_vol_open(pool, "d", &d));
	uint32_t *perm = make_perm(GiB / (64 * 1024));
	char nm[16];
	for (int k = 0; k < 4; k++) {
		snprintf(nm, sizeof(nm), "d-%d", k);
		V(vbas_vol_snapshot(pool, "d", nm, 0));
		for (uint64_t i = 0; i < GiB / (64 * 1024) / 10; i++)
			V(vbas_pwrite(d, buf + (i % 16) * 64 * 1024, 64 * 1024,
				      (uint64_t)perm[(k * 1637 + i) % (GiB / (64 * 1024))] * 64 * 1024, 0));
	}
	free(perm);
	vbas_vol_close(d);
	V(vbas_vol_delete(pool, "fill"));
	V(vbas_flush(pool));
	struct vbas_pool_info pi;
	V(vbas_pool_info(pool, &pi));
	R->shrink_from = pi.size;
	R->shrink_to = (pi.data_used + pi.metadata_used + 256 * MiB) / MiB * MiB;
	struct vbas_shrink_stats st;
	double t0 = now();
	V(vbas_pool_shrink(pool, R->shrink_to, &st));
	R->shrink_s = now() - t0;
	R->shrink_data = st.data_blocks * BS;
	R->shrink_nodes = st.nodes;
	R->shrink_steps = st.steps;
	V(vbas_close(pool));
	unlink(path);
	cleanup_del(path);
	/* cp of as many bytes. */
	cleanup_add(src);
	cleanup_add(dst);
	int fd = open(src, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		die("%s: %s", src, strerror(errno));
	for (uint64_t off = 0; off < R->shrink_data; off += SEQ_IO) {
		size_t l = R->shrink_data - off < SEQ_IO ? (size_t)(R->shrink_data - off) : SEQ_IO;
		if (write(fd, buf, l) != (ssize_t)l)
			die("%s: %s", src, strerror(errno));
	}
	if (fsync(fd))
		die("%s: %s", src, strerror(errno));
	posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	close(fd);
	char cmd[3 * sizeof(src) + 64];
	snprintf(cmd, sizeof(cmd), "cp --reflink=never '%s' '%s' && sync '%s'", src, dst, dst);
	t0 = now();
	if (system(cmd))
		die("%s failed", cmd);
	R->cp_s = now() - t0;
	unlink(src);
	unlink(dst);
	cleanup_del(src);
	cleanup_del(dst);
}

static int fsmap_count(const struct vbas_fsmap_rec *x, void *arg)
{
	uint64_t *c = arg;
	c[0]++;
	c[1] += x->length;
	return 0;
}

static int first_ext(const struct vbas_extent *e, void *arg)
{
	*(uint64_t *)arg = e->physical;
	return 1;
}

static double snap_time(struct vbas_pool *pool, const char *src, const char *name)
{
	double t0 = now();
	V(vbas_vol_snapshot(pool, src, name, 0));
	V(vbas_flush(pool));
	return now() - t0;
}

static void rmap_run(struct rmap_res *R, char *buf)
{
	static char path[4200];
	snprintf(path, sizeof(path), "%s/rmap.pool", opt.dir);
	cleanup_add(path);
	memset(R, 0, sizeof(*R));
	R->ext = opt.extents;
	R->nw = 50000;
	R->nref = 87000;
	R->nsnap = 100;
	R->fsmap_len = GiB;
	uint64_t vbig = 2 * R->ext * BS;
	for (int m = 0; m < 2; m++) {
		struct vbas_format_opts fo = { .size = vbig + 4 * GiB, .block_size = BS,
					       .flags = VBAS_FORMAT_FORCE |
							(m ? 0 : VBAS_FORMAT_NO_RMAP) };
		V(vbas_format(path, &fo));
		struct vbas_pool *pool;
		struct vbas_open_opts oo = { .cache_bytes = 256 * MiB };
		V(vbas_open(path, &oo, &pool));
		struct vbas_vol *w, *r1, *r2, *big;

		/* 4 KiB allocating writes at random into a 1 GiB volume. */
		uint64_t nb = GiB / BS;
		uint32_t *perm = make_perm(nb);
		V(vbas_vol_create(pool, "w", GiB));
		V(vbas_vol_open(pool, "w", &w));
		double t0 = now();
		for (uint64_t i = 0; i < R->nw; i++)
			V(vbas_pwrite(w, buf + (i % 256) * BS, BS, (uint64_t)perm[i] * BS, 0));
		V(vbas_flush(pool));
		R->alloc_iops[m] = R->nw / (now() - t0);
		/* The same blocks again after a snapshot: each a copy on write. */
		V(vbas_vol_snapshot(pool, "w", "w-snap", 0));
		V(vbas_flush(pool));
		t0 = now();
		for (uint64_t i = 0; i < R->nw; i++)
			V(vbas_pwrite(w, buf + ((i + 7) % 256) * BS, BS,
				      (uint64_t)perm[R->nw - 1 - i] * BS, 0));
		V(vbas_flush(pool));
		R->cow_iops[m] = R->nw / (now() - t0);
		free(perm);
		vbas_vol_close(w);

		/* Reflink of a volume of 87,000 extents. */
		V(vbas_vol_create(pool, "r1", 2 * R->nref * BS));
		V(vbas_vol_create(pool, "r2", 2 * R->nref * BS));
		V(vbas_vol_open(pool, "r1", &r1));
		V(vbas_vol_open(pool, "r2", &r2));
		map_every_other(r1, R->nref);
		V(vbas_flush(pool));
		t0 = now();
		V(vbas_reflink(r1, 0, r2, 0, 2 * R->nref * BS));
		V(vbas_flush(pool));
		R->reflink_s[m] = now() - t0;
		vbas_vol_close(r1);
		vbas_vol_close(r2);

		/* Snapshots of a 1-extent and an N-extent volume. */
		V(vbas_vol_create(pool, "one", 1 * MiB));
		V(vbas_vol_open(pool, "one", &r1));
		map_every_other(r1, 1);
		vbas_vol_close(r1);
		V(vbas_vol_create(pool, "big", vbig));
		V(vbas_vol_open(pool, "big", &big));
		map_every_other(big, R->ext);
		V(vbas_flush(pool));
		double s1[5], sn[5];
		char nm[32];
		for (int k = 0; k < 5; k++) {
			snprintf(nm, sizeof(nm), "one-%d", k);
			s1[k] = snap_time(pool, "one", nm);
			snprintf(nm, sizeof(nm), "big-%d", k);
			sn[k] = snap_time(pool, "big", nm);
		}
		R->snap1[m] = timing_of(s1, 5);
		R->snapn[m] = timing_of(sn, 5);
		/* fsmap of 1 GiB of the pool where big's data begins, with 100
		 * snapshots of it. */
		for (uint64_t k = 5; k < R->nsnap; k++) {
			snprintf(nm, sizeof(nm), "big-%" PRIu64, k);
			V(vbas_vol_snapshot(pool, "big", nm, 0));
		}
		V(vbas_flush(pool));
		uint64_t phys = 0;
		int e = vbas_extents(big, 0, vbig, first_ext, &phys);   /* 1: stopped at the first */
		if (e < 0)
			die("vbas_extents: %s (%s)", strerror(-e), vbas_errmsg());
		vbas_vol_close(big);
		uint64_t c[2] = { 0, 0 };
		t0 = now();
		V(vbas_fsmap(pool, phys, R->fsmap_len, fsmap_count, c));
		R->fsmap_s[m] = now() - t0;
		R->fsmap_recs[m] = c[0];
		R->fsmap_bytes[m] = c[1];
		/* The bad-sector question: one block in the middle of it. */
		uint64_t cb[2] = { 0, 0 };
		t0 = now();
		V(vbas_fsmap(pool, phys + R->fsmap_len / 2, BS, fsmap_count, cb));
		R->bad_ms[m] = (now() - t0) * 1e3;
		R->bad_recs[m] = cb[0];
		struct vbas_pool_info pi;
		V(vbas_pool_info(pool, &pi));
		R->meta[m] = pi.metadata_used;
		if (!m) {
			t0 = now();
			V(vbas_pool_rmap_build(pool));
			R->build_s = now() - t0;
		}
		V(vbas_close(pool));
	}
	unlink(path);
	cleanup_del(path);
	shrink_bench(R, buf);
}

static void rmap_report(const struct rmap_res *R)
{
	static const char rule[] = "------------------------------------------------------------"
				   "------------------------------------";
	printf("\nreverse map: the same operations on a pool without one (format --no-rmap) and "
	       "with one\n");
	printf("%-40s %12s %12s %8s\n", "", "without", "with", "ratio");
	double a = R->alloc_iops[1] / R->alloc_iops[0], c = R->cow_iops[1] / R->cow_iops[0];
	printf("%-40s %12.0f %12.0f %7.2fx  IOPS, %" PRIu64 " writes + flush; target >= 0.85x%s\n",
	       "4 KiB allocating writes", R->alloc_iops[0], R->alloc_iops[1], a, R->nw,
	       a >= 0.85 ? "" : "  ** BELOW TARGET **");
	printf("%-40s %12.0f %12.0f %7.2fx  IOPS, the same blocks after a snapshot; target >= "
	       "0.85x%s\n", "4 KiB copy-on-write writes", R->cow_iops[0], R->cow_iops[1], c,
	       c >= 0.85 ? "" : "  ** BELOW TARGET **");
	printf("%-40s %12.3f %12.3f %7.2fx  s, + commit\n", "reflink of 87,000 extents",
	       R->reflink_s[0], R->reflink_s[1], R->reflink_s[0] / R->reflink_s[1]);
	printf("%-40s %12.3f %12.3f %7.2fx  ms, + commit, median of 5\n", "snapshot of 1 extent",
	       R->snap1[0].med * 1e3, R->snap1[1].med * 1e3, R->snap1[0].med / R->snap1[1].med);
	char what[64];
	snprintf(what, sizeof(what), "snapshot of %" PRIu64 " extents", R->ext);
	/* Flat: no dearer than twice the 1-extent one; unchanged: within a
	 * quarter of the same snapshot without a reverse map. */
	int flat = R->snapn[1].med <= 2 * R->snap1[1].med;
	int same = R->snapn[1].med <= 1.25 * R->snapn[0].med;
	printf("%-40s %12.3f %12.3f %7.2fx  ms, + commit, median of 5; %.2fx the 1-extent one%s%s\n",
	       what, R->snapn[0].med * 1e3, R->snapn[1].med * 1e3,
	       R->snapn[0].med / R->snapn[1].med, R->snapn[1].med / R->snap1[1].med,
	       flat ? "" : "  ** NOT FLAT **", same ? "" : "  ** NOT UNCHANGED **");
	snprintf(what, sizeof(what), "fsmap of 1 GiB, %" PRIu64 " snapshots", R->nsnap);
	printf("%-40s %12.3f %12.3f %7.2fx  s (the walk, the interval query); %" PRIu64
	       " records%s\n", what, R->fsmap_s[0], R->fsmap_s[1], R->fsmap_s[0] / R->fsmap_s[1],
	       R->fsmap_recs[1], R->fsmap_recs[0] == R->fsmap_recs[1] &&
	       R->fsmap_bytes[0] == R->fsmap_bytes[1] ? "" : "  ** ANSWERS DIFFER **");
	printf("%-40s %12.3f %12.3f %7.0fx  ms: who uses one block (%" PRIu64 " records)%s\n",
	       "fsmap of 1 block, 100 snapshots", R->bad_ms[0], R->bad_ms[1],
	       R->bad_ms[0] / R->bad_ms[1], R->bad_recs[1],
	       R->bad_recs[0] == R->bad_recs[1] ? "" : "  ** ANSWERS DIFFER **");
	printf("%-40s %12.1f %12.1f %8s  MiB at the end\n", "metadata used",
	       R->meta[0] / (double)MiB, R->meta[1] / (double)MiB, "");
	printf("%-40s %25.3f s  set --rmap of the pool without one, at its end\n",
	       "build the reverse map", R->build_s);
	double smb = R->shrink_data / (double)MiB;
	printf("%-40s %12.1f %12.1f %7.2fx  MiB/s: cp (+ fsync) of %.0f MiB, then shrink %.2f -> "
	       "%.2f GiB moving %.0f MiB of data and %" PRIu64 " nodes in %" PRIu64 " commits\n",
	       "pool shrink, against cp", smb / R->cp_s, smb / R->shrink_s,
	       R->cp_s / R->shrink_s, smb, R->shrink_from / (double)GiB,
	       R->shrink_to / (double)GiB, smb, R->shrink_nodes, R->shrink_steps);
	printf("%.96s\n", rule);
}

static void usage(int status)
{
	fprintf(status ? stderr : stdout,
		"usage: %s [--dir DIR] [--size BYTES] [--time SEC | --ops N] [--extents N]\n"
		"          [--cache BYTES] [--seed N] [--no-extents] [--sharing-only | --no-sharing]\n"
		"          [--share-ops N] [--share-size BYTES] [--vbas-cli PATH]\n"
		"          [--space-only | --no-space] [--rmap-only | --no-rmap]\n"
		"          [--xfs-dir DIR [--xfs-scratch] | --xfs-skip REASON] [--no-qcow2]\n"
		"  --dir      directory for the pool and raw files (default $VBAS_BENCH_DIR,\n"
		"             else a fresh mktemp -d under /var/tmp, removed at the end)\n"
		"  --size     working set of the I/O tests (default 1G)\n"
		"  --time     seconds per random 4K test and target (default 8)\n"
		"  --ops      operations per random 4K test instead of a time limit\n"
		"  --extents  extents of the open-time / RSS volume (default 1000000)\n"
		"  --cache    metadata cache of the RSS reader (default 16M)\n"
		"  --no-extents  skip the open-time and RSS tests\n"
		"  --sharing-only  only the sharing benchmark (snapshot, clone, reflink, diff,\n"
		"             copy-on-write); --no-sharing: all but it\n"
		"  --share-ops   writes per target of the CoW-against-overwrite test (default\n"
		"             8000; a count, not a time: the CoW cost grows with the count)\n"
		"  --share-size  volume size of that test (default 256M)\n"
		"  --vbas-cli the vbas command to time (default: ../vbas from this program)\n"
		"  --xfs-dir  a directory on an XFS with reflink=1 for the XFS column (run.sh\n"
		"             loop-mounts one); --xfs-skip: why there is none (printed);\n"
		"             --xfs-scratch: leave the largest files there (the file system is\n"
		"             thrown away after; deleting them would take XFS half a minute)\n"
		"  --no-qcow2 skip the qcow2 column (default: used if qemu-img is in $PATH)\n"
		"  --space-only  only the space-guarantee benchmark (writes with and without a\n"
		"             cookie and into a reserved range, snapshots of a reserved range of\n"
		"             1 and 2*--extents extents, a reserve of 1 TiB); --no-space: all\n"
		"             but it\n"
		"  --rmap-only   only the reverse-map benchmark (allocating and copy-on-write\n"
		"             writes, a reflink of 87,000 extents, snapshots of 1 and --extents\n"
		"             extents, fsmap of 1 GiB with 100 snapshots: each without and with\n"
		"             a reverse map); --no-rmap: all but it\n"
		"  The sharing volumes have 1, 10000 and --extents extents.\n", prog);
	exit(status);
}

int main(int argc, char **argv)
{
	char tmpdir[4096] = "";
	char raw_path[4200], raw2_path[4200], pool_path[4200], ext_path[4200];
	struct helper helper = { 0 };
	int made_dir = 0;

	if (argc == 5 && !strcmp(argv[1], "--rss-only"))
		return rss_only(argv[2], atoi(argv[3]), parse_size(argv[4]));

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--help") || !strcmp(a, "-h"))
			usage(0);
		static const struct { const char *name; int *flag; } flags[] = {
			{ "--no-extents", &opt.no_extents },
			{ "--sharing-only", &opt.sharing_only },
			{ "--no-sharing", &opt.no_sharing },
			{ "--space-only", &opt.space_only },
			{ "--no-space", &opt.no_space },
			{ "--rmap-only", &opt.rmap_only },
			{ "--no-rmap", &opt.no_rmap },
			{ "--no-qcow2", &opt.no_qcow2 },
			{ "--xfs-scratch", &opt.xfs_scratch },
		};
		size_t f = 0;
		while (f < sizeof(flags) / sizeof(flags[0]) && strcmp(a, flags[f].name))
			f++;
		if (f < sizeof(flags) / sizeof(flags[0])) {
			*flags[f].flag = 1;
			continue;
		}
		if (!v)
			usage(2);
		i++;
		if (!strcmp(a, "--dir"))
			opt.dir = v;
		else if (!strcmp(a, "--size"))
			opt.size = parse_size(v);
		else if (!strcmp(a, "--time"))
			opt.seconds = atof(v);
		else if (!strcmp(a, "--ops"))
			opt.ops = parse_size(v);
		else if (!strcmp(a, "--extents"))
			opt.extents = parse_size(v);
		else if (!strcmp(a, "--cache"))
			opt.rss_cache = parse_size(v);
		else if (!strcmp(a, "--seed"))
			opt.seed = strtoull(v, NULL, 0);
		else if (!strcmp(a, "--share-ops"))
			opt.share_ops = parse_size(v);
		else if (!strcmp(a, "--share-size"))
			opt.share_size = parse_size(v);
		else if (!strcmp(a, "--vbas-cli"))
			opt.vbas_cli = v;
		else if (!strcmp(a, "--xfs-dir"))
			opt.xfs_dir = v;
		else if (!strcmp(a, "--xfs-skip"))
			opt.xfs_skip = v;
		else
			usage(2);
	}
	opt.size = opt.size / SEQ_IO * SEQ_IO;
	if (opt.size < 16 * MiB)
		die("--size must be at least 16 MiB");
	if (opt.seconds <= 0 && !opt.ops)
		die("--time must be positive");
	if (opt.extents < 1)
		die("--extents must be at least 1");
	if (opt.sharing_only && opt.no_sharing)
		die("--sharing-only and --no-sharing exclude each other");
	if (opt.space_only && (opt.no_space || opt.sharing_only))
		die("--space-only excludes --no-space and --sharing-only");
	if (opt.rmap_only && (opt.no_rmap || opt.sharing_only || opt.space_only))
		die("--rmap-only excludes --no-rmap, --sharing-only and --space-only");
	opt.share_size = opt.share_size / SEQ_IO * SEQ_IO;
	if (!opt.no_sharing && opt.share_size < 16 * MiB)
		die("--share-size must be at least 16 MiB");
	if (!opt.no_sharing && opt.share_ops < 8)
		die("--share-ops must be at least 8");
	static char cli_path[4200];
	if (!opt.vbas_cli) {
		/* build/bench/bench -> build/vbas */
		char self[4096];
		ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
		if (n <= 0)
			die("readlink /proc/self/exe: %s (give --vbas-cli)", strerror(errno));
		self[n] = 0;
		char *slash = strrchr(self, '/');
		if (slash)
			*slash = 0;
		snprintf(cli_path, sizeof(cli_path), "%s/../vbas", self);
		opt.vbas_cli = cli_path;
	}
	if (!opt.no_sharing && access(opt.vbas_cli, X_OK) < 0)
		die("%s: %s (make it, or give --vbas-cli)", opt.vbas_cli, strerror(errno));
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	if (!opt.dir)
		opt.dir = getenv("VBAS_BENCH_DIR");
	if (!opt.dir || !*opt.dir) {
		snprintf(tmpdir, sizeof(tmpdir), "/var/tmp/vbas-bench.XXXXXX");
		if (!mkdtemp(tmpdir))
			die("mkdtemp %s: %s", tmpdir, strerror(errno));
		opt.dir = tmpdir;
		made_dir = 1;
	}
	snprintf(raw_path, sizeof(raw_path), "%s/raw.img", opt.dir);
	snprintf(raw2_path, sizeof(raw2_path), "%s/raw-sparse.img", opt.dir);
	snprintf(pool_path, sizeof(pool_path), "%s/io.pool", opt.dir);
	snprintf(ext_path, sizeof(ext_path), "%s/extents.pool", opt.dir);
	cleanup_files[0] = raw_path;
	cleanup_files[1] = raw2_path;
	cleanup_files[2] = pool_path;
	cleanup_files[3] = ext_path;
	if (made_dir)
		cleanup_dir = tmpdir;
	if (opt.space_only || opt.sharing_only || opt.rmap_only) {
		/* One part alone. */
		struct share_res sr;
		struct space_res spr;
		struct rmap_res rmr;
		char *sbuf = xalloc_aligned(SEQ_IO);
		rng_s = opt.seed;
		for (size_t i = 0; i < SEQ_IO / 8; i++)
			((uint64_t *)sbuf)[i] = rng_next();
		printf("vbas bench: dir %s, %s only, seed %#" PRIx64 "\n", opt.dir,
		       opt.space_only ? "space guarantees" : opt.rmap_only ? "reverse map" : "sharing",
		       opt.seed);
		if (opt.space_only)
			space_run(&spr, sbuf);
		else if (opt.rmap_only)
			rmap_run(&rmr, sbuf);
		else
			share_run(&sr, sbuf);
		free(sbuf);
		cleanup_dir = NULL;
		if (made_dir && rmdir(tmpdir) < 0)
			fprintf(stderr, "%s: rmdir %s: %s\n", prog, tmpdir, strerror(errno));
		if (opt.space_only)
			space_report(&spr);
		else if (opt.rmap_only)
			rmap_report(&rmr);
		else
			share_report(&sr);
		return 0;
	}
	if (!opt.no_extents)
		helper_start(&helper, ext_path, opt.rss_cache);

	uint64_t S = opt.size, nblk = S / BS;
	char *buf = xalloc_aligned(SEQ_IO);
	rng_s = opt.seed;
	for (size_t i = 0; i < SEQ_IO / 8; i++)
		((uint64_t *)buf)[i] = rng_next();

	printf("vbas bench: dir %s, working set %.2f GiB, seed %#" PRIx64 "\n",
	       opt.dir, S / (double)GiB, opt.seed);
	fflush(stdout);

	/* The pool for the I/O tests: room for two volumes of S and metadata. */
	struct vbas_format_opts fo = { .size = 2 * S + S / 8 + 64 * MiB, .block_size = BS,
				       .flags = VBAS_FORMAT_FORCE };
	struct vbas_pool *pool;
	struct vbas_vol *vol, *vol2;
	struct vbas_iomap m;
	V(vbas_format(pool_path, &fo));
	V(vbas_open(pool_path, NULL, &pool));
	V(vbas_vol_create(pool, "seq", S));
	V(vbas_vol_create(pool, "fresh", S));
	V(vbas_flush(pool));
	V(vbas_vol_open(pool, "seq", &vol));
	V(vbas_map_begin(vol, 0, BS, VBAS_MAP_READ, NULL, &m));
	int direct = !!(m.flags & VBAS_IOMAP_F_DIRECT);
	V(vbas_map_end(vol, &m, 0, 0));
	struct vbas_pool_info pi0;
	V(vbas_pool_info(pool, &pi0));

	/* The raw file gets the pool's mode; it is a file on the same file
	 * system, so O_DIRECT works for it exactly when it did for the pool. */
	int rawfd = open_raw(raw_path, direct, 0, 0);
	struct target raw = { .name = "raw", .fd = rawfd };
	struct target vb = { .name = "vbas", .pool = pool, .vol = vol };
	struct job jr, jv;
	struct row rows[8];
	int nrows = 0;
	printf("I/O mode: %s (pool and raw file)\n", direct ? "O_DIRECT" : "buffered (no O_DIRECT)");
	fflush(stdout);

	/* 1 MiB sequential write: raw into an empty file (this also
	 * preallocates it for the overwrite test), vbas into a fresh volume. */
	job_init(&jr, &raw, 1, 1, S, NULL, buf);
	job_init(&jv, &vb, 1, 1, S, NULL, buf);
	run_pair(&jr, &jv);
	rows[nrows++] = mkrow("1M seq write", &jr, &jv);

	/* Metadata cost of the sequential write (only volume "seq" has data). */
	struct vbas_pool_info pi;
	struct vbas_vol_info vi;
	V(vbas_pool_info(pool, &pi));
	V(vbas_vol_info(vol, &vi));
	if (pi.data_used != S || vi.mapped != S)
		die("after writing %" PRIu64 " bytes: pool data_used %" PRIu64 ", volume mapped %"
		    PRIu64, S, pi.data_used, vi.mapped);
	uint64_t sb_bytes = 2ull * pi.block_size;
	double meta_excl = (double)(pi.metadata_used - sb_bytes);
	double meta_per_gib = meta_excl * GiB / (double)pi.data_used;
	double meta_pct = meta_excl * 100.0 / (double)pi.data_used;
	uint64_t meta_incl = pi.metadata_used;

	job_init(&jr, &raw, 0, 1, S, NULL, buf);
	job_init(&jv, &vb, 0, 1, S, NULL, buf);
	run_pair(&jr, &jv);
	rows[nrows++] = mkrow("1M seq read", &jr, &jv);

	/* 4 KiB random overwrites of allocated blocks. */
	job_init(&jr, &raw, 1, 0, S, NULL, buf);
	job_init(&jv, &vb, 1, 0, S, NULL, buf);
	run_pair(&jr, &jv);
	rows[nrows++] = mkrow("4K rand write, overwrite", &jr, &jv);

	job_init(&jr, &raw, 0, 0, S, NULL, buf);
	job_init(&jv, &vb, 0, 0, S, NULL, buf);
	run_pair(&jr, &jv);
	rows[nrows++] = mkrow("4K rand read", &jr, &jv);

	/* 4 KiB random allocating writes, each block once: a fresh volume,
	 * against a fresh sparse raw file (the file system allocates too). */
	uint32_t *perm = make_perm(nblk);
	int raw2fd = open_raw(raw2_path, direct, 1, S);
	struct target raw2 = { .name = "raw-sparse", .fd = raw2fd };
	V(vbas_vol_open(pool, "fresh", &vol2));
	struct target vb2 = { .name = "vbas", .pool = pool, .vol = vol2 };
	job_init(&jr, &raw2, 1, 0, S, perm, buf);
	job_init(&jv, &vb2, 1, 0, S, perm, buf);
	run_pair(&jr, &jv);
	rows[nrows++] = mkrow("4K rand write, allocating", &jr, &jv);
	double al_flush_vb = jv.res.flush_seconds, al_flush_raw = jr.res.flush_seconds;
	free(perm);
	V(vbas_vol_info(vol2, &vi));
	if (vi.mapped != jv.res.ops * BS)
		die("allocating writes: volume maps %" PRIu64 " bytes after %" PRIu64 " writes",
		    vi.mapped, jv.res.ops);
	/* Sanity (not timed): the pool is consistent after all that. */
	struct vbas_check_stats ist;
	int icr = vbas_check(pool, NULL, NULL, &ist);
	if (icr)
		die("vbas_check on the I/O pool: %s (%s), %" PRIu64 " problems", strerror(-icr),
		    vbas_errmsg(), ist.problems);

	V(vbas_vol_close(vol2));
	V(vbas_vol_close(vol));
	V(vbas_close(pool));
	close(rawfd);
	close(raw2fd);
	unlink(raw_path);
	unlink(raw2_path);
	unlink(pool_path);

	/* ---- A volume of N extents ---------------------------------------- */
	double build_s = 0, open_s = 0, volopen_s = 0, read1_s = 0, check_s = 0, close_s = 0;
	struct vbas_check_stats cst = { 0 };
	uint64_t ext_meta = 0, ext_pool_size = 0;
	struct rss_result rss = { 0 };
	long rss_wait4 = 0;
	uint64_t N = opt.extents;
	if (!opt.no_extents) {
		uint64_t vsize = 2 * N * BS;
		ext_pool_size = N * BS + N * BS / 8 + 512 * MiB;
		struct vbas_format_opts efo = { .size = ext_pool_size, .block_size = BS,
						.flags = VBAS_FORMAT_FORCE };
		V(vbas_format(ext_path, &efo));
		V(vbas_open(ext_path, NULL, &pool));
		V(vbas_vol_create(pool, "ext", vsize));
		V(vbas_vol_open(pool, "ext", &vol));
		double t0 = now();
		map_every_other(vol, N);
		V(vbas_flush(pool));
		build_s = now() - t0;
		V(vbas_vol_info(vol, &vi));
		if (vi.mapped != N * BS)
			die("extent volume maps %" PRIu64 " bytes, want %" PRIu64, vi.mapped, N * BS);
		V(vbas_pool_info(pool, &pi));
		ext_meta = pi.metadata_used;
		V(vbas_vol_close(vol));
		V(vbas_close(pool));

		/* Open it again: pool, volume, one read in the middle. */
		int fd = open(ext_path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {                 /* matters only without O_DIRECT */
			posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
			close(fd);
		}
		t0 = now();
		V(vbas_open(ext_path, NULL, &pool));
		double t1 = now();
		V(vbas_vol_open(pool, "ext", &vol));
		double t2 = now();
		V(vbas_pread(vol, buf, BS, 2 * (N / 2) * BS));
		double t3 = now();
		open_s = t1 - t0;
		volopen_s = t2 - t1;
		read1_s = t3 - t2;
		V(vbas_vol_close(vol));
		t0 = now();
		int cr = vbas_check(pool, NULL, NULL, &cst);
		check_s = now() - t0;
		if (cr)
			die("vbas_check on the extent pool: %s (%s), %" PRIu64 " problems",
			    strerror(-cr), vbas_errmsg(), cst.problems);
		if (cst.extents != N)
			die("vbas_check saw %" PRIu64 " extents, want %" PRIu64, cst.extents, N);
		t0 = now();
		V(vbas_close(pool));
		close_s = now() - t0;

		/* Peak RSS of a fresh process reading every extent. */
		helper_run(&helper, &rss, &rss_wait4);
		if (rss.extents != N)
			die("RSS child read %" PRIu64 " extents, want %" PRIu64, rss.extents, N);
		unlink(ext_path);
	}
	helper_abandon(&helper);
	struct share_res sr;
	if (!opt.no_sharing)
		share_run(&sr, buf);
	struct space_res spr;
	if (!opt.no_space)
		space_run(&spr, buf);
	struct rmap_res rmr;
	if (!opt.no_rmap)
		rmap_run(&rmr, buf);
	free(buf);
	cleanup_dir = NULL;
	if (made_dir && rmdir(tmpdir) < 0)
		fprintf(stderr, "%s: rmdir %s: %s\n", prog, tmpdir, strerror(errno));

	/* ---- Report: machine-readable lines, then the table ----------------- */
	static const char *keys[] = { "seq_write_1m", "seq_read_1m", "rand_write_4k_overwrite",
				      "rand_read_4k", "rand_write_4k_alloc" };
	printf("\n");
	for (int i = 0; i < nrows; i++) {
		char k[96];
		const char *u = !strcmp(rows[i].unit, "IOPS") ? "iops" : "MiB/s";
		snprintf(k, sizeof(k), "%s_raw", keys[i]);
		bench_line(k, rows[i].raw, u);
		snprintf(k, sizeof(k), "%s_vbas", keys[i]);
		bench_line(k, rows[i].vbas, u);
		snprintf(k, sizeof(k), "%s_ratio", keys[i]);
		bench_line(k, rows[i].vbas / rows[i].raw, "x");
		snprintf(k, sizeof(k), "%s_cpu_raw", keys[i]);
		bench_line(k, rows[i].raw_cpu_us, "us/op");
		snprintf(k, sizeof(k), "%s_cpu_vbas", keys[i]);
		bench_line(k, rows[i].vbas_cpu_us, "us/op");
	}
	bench_line("metadata_per_gib", meta_per_gib, "bytes");
	bench_line("metadata_pct_of_data", meta_pct, "%");
	if (!opt.no_extents) {
		bench_line("extents", (double)N, "count");
		bench_line("extents_build", build_s, "s");
		bench_line("extents_open", open_s * 1e3, "ms");
		bench_line("extents_vol_open", volopen_s * 1e3, "ms");
		bench_line("extents_first_read", read1_s * 1e3, "ms");
		bench_line("extents_open_total", (open_s + volopen_s + read1_s) * 1e3, "ms");
		bench_line("extents_check", check_s, "s");
		bench_line("extents_close", close_s * 1e3, "ms");
		bench_line("extents_metadata", (double)ext_meta, "bytes");
		bench_line("extents_read_peak_rss", rss.maxrss_kib / 1024.0, "MiB");
		bench_line("extents_read_peak_rss_wait4", rss_wait4 / 1024.0, "MiB");
		bench_line("extents_read_rss_target", (opt.rss_cache + 16 * MiB) / (double)MiB, "MiB");
		bench_line("extents_read_all", rss.seconds, "s");
	}

	char rnd[96];
	if (opt.ops)
		snprintf(rnd, sizeof(rnd), "%" PRIu64 " ops each", opt.ops);
	else
		snprintf(rnd, sizeof(rnd), "%.3g s each", opt.seconds);
	const char *rule = "------------------------------------------------------------------------"
			   "------------------------";
	printf("\nvbas %s benchmark: working set %.2f GiB, QD1, 1 thread, %s, block %u B\n",
	       VBAS_VERSION_STRING, S / (double)GiB, direct ? "O_DIRECT" : "buffered", BS);
	printf("random 4K tests %s; raw and vbas alternate in slices (ABBA); write tests include "
	       "the final vbas_flush / fdatasync\n", rnd);
	printf("%.96s\n", rule);
	printf("%-28s %12s %12s %9s  %-6s %9s %9s\n", "test", "raw", "vbas", "vbas/raw", "unit",
	       "cpu raw", "cpu vbas");
	printf("%.96s\n", rule);
	for (int i = 0; i < nrows; i++)
		printf("%-28s %12.1f %12.1f %9.3f  %-6s %6.1f us %6.1f us\n", rows[i].name,
		       rows[i].raw, rows[i].vbas, rows[i].vbas / rows[i].raw, rows[i].unit,
		       rows[i].raw_cpu_us, rows[i].vbas_cpu_us);
	printf("  ops: overwrite raw %" PRIu64 " / vbas %" PRIu64 ", read raw %" PRIu64 " / vbas %"
	       PRIu64 ", allocating raw %" PRIu64 " / vbas %" PRIu64 "\n", rows[2].raw_ops,
	       rows[2].vbas_ops, rows[3].raw_ops, rows[3].vbas_ops, rows[4].raw_ops, rows[4].vbas_ops);
	printf("  allocating: raw = fresh sparse file (fdatasync %.3f s), vbas = fresh volume "
	       "(vbas_flush %.3f s); cpu = CPU time per request\n", al_flush_raw, al_flush_vb);
	printf("%.96s\n", rule);
	printf("%-40s %16s  %s\n", "vbas metric", "value", "target / note");
	printf("%.96s\n", rule);
	printf("%-40s %12.1f KiB  metadata_used - 2 superblocks, after %.2f GiB seq + flush\n",
	       "metadata per GiB of sequential data", meta_per_gib / KiB, S / (double)GiB);
	printf("%-40s %14.4f %%  target < 0.5%% (incl. superblocks: %.4f %%)\n",
	       "metadata as % of data", meta_pct, meta_incl * 100.0 / (double)S);
	if (!opt.no_extents) {
		printf("%-40s %16.0f  4 KiB at every 2nd block of a %.2f GiB volume\n",
		       "extents (N)", (double)N, 2.0 * N * BS / GiB);
		printf("%-40s %14.3f s  map_begin/map_end without data I/O, + flush\n",
		       "build N-extent volume", build_s);
		printf("%-40s %13.3f ms\n", "open: vbas_open", open_s * 1e3);
		printf("%-40s %13.3f ms\n", "open: vbas_vol_open", volopen_s * 1e3);
		printf("%-40s %13.3f ms  cold metadata cache, middle of the volume\n",
		       "open: first vbas_pread 4K", read1_s * 1e3);
		printf("%-40s %13.3f ms\n", "open: total", (open_s + volopen_s + read1_s) * 1e3);
		printf("%-40s %14.3f s  %" PRIu64 " nodes, %" PRIu64 " extents, %" PRIu64
		       " refcount records\n", "vbas_check", check_s, cst.nodes, cst.extents,
		       cst.refcount_records);
		printf("%-40s %12.1f MiB  %.1f B per extent\n", "metadata of the N-extent pool",
		       ext_meta / (double)MiB, ext_meta / (double)N);
		printf("%-40s %12.1f MiB  target < %.0f MiB (cache %.0f MiB + 16 MiB)%s\n",
		       "peak RSS reading all N extents", rss.maxrss_kib / 1024.0,
		       (opt.rss_cache + 16 * MiB) / (double)MiB, opt.rss_cache / (double)MiB,
		       rss.maxrss_kib * KiB < opt.rss_cache + 16 * MiB ? "" : "  ** OVER **");
		printf("%-40s %14.3f s  fresh process, RDONLY, %.0f extents/s; RSS at start "
		       "%.1f MiB\n", "read all N extents", rss.seconds, rss.extents / rss.seconds,
		       rss.start_rss_kib / 1024.0);
	}
	printf("%.96s\n", rule);
	if (!opt.no_sharing)
		share_report(&sr);
	if (!opt.no_space)
		space_report(&spr);
	if (!opt.no_rmap)
		rmap_report(&rmr);
	return 0;
}
