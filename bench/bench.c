/* vbas benchmark: vbas volumes against a raw file on the same file system.
 *
 *   bench [--dir DIR] [--size BYTES] [--time SEC | --ops N] [--extents N]
 *         [--cache BYTES] [--seed N] [--no-extents]
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
 *
 * Internal mode: bench --rss-only POOL RESULT_FD CACHE_BYTES (see rss_only()).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* Files and the directory to remove if we die half way. */
static const char *cleanup_files[8];
static const char *cleanup_dir;

static void cleanup(void)
{
	for (int i = 0; i < 8; i++)
		if (cleanup_files[i])
			unlink(cleanup_files[i]);
	if (cleanup_dir)
		rmdir(cleanup_dir);
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

/* A vbas call failed: say which, with the library's message. */
#define V(call) do {                                                          \
		int r_ = (call);                                              \
		if (r_)                                                       \
			die("%s:%d: %s: %s (%s)", __FILE__, __LINE__, #call,  \
			    strerror(-r_), vbas_errmsg());                    \
	} while (0)

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* splitmix64: fixed seed, same sequence for raw and vbas. */
static uint64_t rng_s;
static uint64_t rng_next(void)
{
	uint64_t z = (rng_s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
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
} opt = {
	.size = 1 * GiB,
	.seconds = 8,
	.extents = 1000000,
	.rss_cache = 16 * MiB,
	.seed = 0x5eed,
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
	if (j->seq || opt.ops)
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

static void usage(int status)
{
	fprintf(status ? stderr : stdout,
		"usage: %s [--dir DIR] [--size BYTES] [--time SEC | --ops N] [--extents N]\n"
		"          [--cache BYTES] [--seed N] [--no-extents]\n"
		"  --dir      directory for the pool and raw files (default $VBAS_BENCH_DIR,\n"
		"             else a fresh mktemp -d under /var/tmp, removed at the end)\n"
		"  --size     working set of the I/O tests (default 1G)\n"
		"  --time     seconds per random 4K test and target (default 8)\n"
		"  --ops      operations per random 4K test instead of a time limit\n"
		"  --extents  extents of the open-time / RSS volume (default 1000000)\n"
		"  --cache    metadata cache of the RSS reader (default 16M)\n"
		"  --no-extents  skip the open-time and RSS tests\n", prog);
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
		if (!strcmp(a, "--no-extents")) {
			opt.no_extents = 1;
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
		/* Map 4 KiB at every second block without writing the data:
		 * the mapping interface leaves the I/O to its client. */
		for (uint64_t i = 0; i < N; i++) {
			V(vbas_map_begin(vol, 2 * i * BS, BS, VBAS_MAP_WRITE, NULL, &m));
			if (m.type != VBAS_IOMAP_NEW || m.length != BS)
				die("map_begin at %" PRIu64 ": type %d length %" PRIu64
				    " (want a new 4 KiB mapping)", 2 * i * BS, m.type, m.length);
			V(vbas_map_end(vol, &m, BS, 0));
		}
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
	return 0;
}
