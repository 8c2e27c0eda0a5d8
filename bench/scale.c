/* vbas scale benchmark: many volumes, many snapshots, big commits.
 *
 *   scale --dir DIR [--vbas-cli PATH] [--extents N] [--snaps N] [--big]
 *
 * Measures, in one run:
 *  0. The pool of issue 14's table: one volume of 100,000 extents over a
 *     1 PiB address space, 20,000 empty volumes, 20,000 snapshots of the
 *     big one: `vbas list`, `vbas check` (time, peak RSS), and creates and
 *     snapshots beside those 40,001 volumes.
 *  1. `vbas list` (the CLI, a fresh process: open, list, usage of every
 *     volume) on a pool of 1,000, 10,000 and 100,000 volumes, and the
 *     create and snapshot rates (library calls) beside 10 volumes and
 *     beside 100,000.
 *  2. A volume of N (default 1,000,000) extents with S (default 10,000)
 *     snapshots, one block written between each two: `vbas list` and
 *     `vbas check` (time and peak RSS of the process) after 1,000
 *     snapshots and after all of them.  --big adds a volume of 10^7
 *     extents with 1,000 snapshots (a few minutes more): its check, and
 *     the commit after writes into 50,000 of its leaves (about 100,000
 *     dirty nodes, the cache made large enough to hold them).
 *  3. Commit cost: vbas_flush after writes into 1, 100, 1,000 and 5,000
 *     different leaves of that volume (each write copies a shared leaf),
 *     with the metadata blocks it wrote, against one fdatasync of the pool
 *     file after a 4 KiB write.
 * Lines "bench: NAME VALUE UNIT" carry every figure; a table follows.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vbas.h"

#define BS  4096u
#define MiB (1024ull * 1024)
#define GiB (1024ull * MiB)

extern char **environ;

static const char *pool_path;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "scale: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	if (pool_path)
		unlink(pool_path);
	exit(1);
}

#include "bench.h"

static void on_signal(int sig)
{
	if (pool_path)
		unlink(pool_path);
	signal(sig, SIG_DFL);
	raise(sig);
}

static uint64_t rng_s = 0x5ca1e;
static uint64_t rng_next(void)
{
	return splitmix(&rng_s);
}

static void line(const char *name, double v, const char *unit)
{
	printf("bench: %s %.6g %s\n", name, v, unit);
	fflush(stdout);
}

static const char *cli = "vbas";

/* Run the CLI with ARGS (NULL-terminated, after the program), output to
 * /dev/null: its wall time, and its peak RSS in KiB. */
static double run_cli(const char *const *args, long *rss_kib)
{
	char *argv[16];
	int n = 0;
	argv[n++] = (char *)cli;
	for (; *args && n < 15; args++)
		argv[n++] = (char *)*args;
	argv[n] = NULL;
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	pid_t pid;
	double t0 = now();
	int e = posix_spawnp(&pid, cli, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (e)
		die("spawn %s: %s", cli, strerror(e));
	int st;
	struct rusage ru;
	if (wait4(pid, &st, 0, &ru) < 0)
		die("wait4: %s", strerror(errno));
	double t = now() - t0;
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		die("%s %s %s failed (status %#x)", cli, argv[1], argv[2] ? argv[2] : "", st);
	if (rss_kib)
		*rss_kib = ru.ru_maxrss;
	return t;
}

static struct vbas_pool *pool_make(uint64_t size)
{
	struct vbas_format_opts fo = { .size = size, .block_size = BS };
	struct vbas_pool *p;
	unlink(pool_path);
	V(vbas_format(pool_path, &fo));
	V(vbas_open(pool_path, NULL, &p));
	return p;
}

static struct vbas_pool *pool_open(void)
{
	struct vbas_pool *p;
	V(vbas_open(pool_path, NULL, &p));
	return p;
}

/* ---- 1. Many volumes ----------------------------------------------------- */

/* Mean microseconds per call of N creates (names PREFIX-i) or, with SRC,
 * snapshots of SRC. */
static double rate(struct vbas_pool *p, const char *prefix, unsigned n, const char *src)
{
	char name[64];
	double t0 = now();
	for (unsigned i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "%s-%u", prefix, i);
		if (src)
			V(vbas_vol_snapshot(p, src, name, 0));
		else
			V(vbas_vol_create(p, name, 64 * MiB));
	}
	V(vbas_flush(p));
	return (now() - t0) * 1e6 / n;
}

static double list_time(unsigned nvol, long *rss)
{
	const char *args[] = { "list", "--json", pool_path, NULL };
	double best = 1e9;
	for (int k = 0; k < 3; k++) {
		double t = run_cli(args, rss);
		if (t < best)
			best = t;
	}
	char nm[64];
	snprintf(nm, sizeof(nm), "list_%u_volumes", nvol);
	line(nm, best, "s");
	return best;
}

struct res {
	double t_list, t_check, t_create, t_snap;
	long t_check_rss;
	double list[3];
	long list_rss[3];
	double create10, create100k, snap10, snap100k;
	double slist1k, slist, scheck1k, scheck;
	long scheck1k_rss, scheck_rss, slist_rss;
	uint64_t extents, snaps;
	double big_check;
	double big_flush;
	uint64_t big_flush_blocks;
	long big_rss;
	int big;
	double flush[4], fsync_s;
	uint64_t flush_blocks[4];
	unsigned flush_leaves[4];
};

/* ---- 0. The table's pool -------------------------------------------------- */

static void table_pool(struct res *R)
{
	const uint64_t pib = 1ull << 50, n = 100000, gap = pib / BS / n;
	struct vbas_pool *p = pool_make(8 * GiB);
	struct vbas_vol *v;
	struct vbas_iomap m;
	char name[64];
	V(vbas_vol_create(p, "big", pib));
	V(vbas_vol_open(p, "big", &v));
	for (uint64_t i = 0; i < n; i++) {
		V(vbas_map_begin(v, i * gap * BS, BS, VBAS_MAP_WRITE, NULL, &m));
		V(vbas_map_end(v, &m, BS, 0));
	}
	vbas_vol_close(v);
	for (unsigned i = 0; i < 20000; i++) {
		snprintf(name, sizeof(name), "empty-%u", i);
		V(vbas_vol_create(p, name, 64 * MiB));
	}
	for (unsigned i = 0; i < 20000; i++) {
		snprintf(name, sizeof(name), "snap-%u", i);
		V(vbas_vol_snapshot(p, "big", name, 0));
	}
	R->t_create = rate(p, "c", 1000, NULL);
	R->t_snap = rate(p, "s", 1000, "big");
	V(vbas_close(p));
	const char *args[] = { "list", "--json", pool_path, NULL };
	R->t_list = run_cli(args, NULL);
	const char *cargs[] = { "check", pool_path, NULL };
	R->t_check = run_cli(cargs, &R->t_check_rss);
	line("table_list", R->t_list, "s");
	line("table_check", R->t_check, "s");
	line("table_check_rss", R->t_check_rss / 1024.0, "MiB");
	line("table_create_us", R->t_create, "us");
	line("table_snapshot_us", R->t_snap, "us");
	unlink(pool_path);
}

static void many_volumes(struct res *R)
{
	/* Creates and snapshots beside 10 volumes. */
	struct vbas_pool *p = pool_make(4 * GiB);
	char name[64];
	for (unsigned i = 0; i < 10; i++) {
		snprintf(name, sizeof(name), "few-%u", i);
		V(vbas_vol_create(p, name, 64 * MiB));
	}
	struct vbas_vol *v;
	static char blk[BS];
	V(vbas_vol_open(p, "few-0", &v));
	V(vbas_pwrite(v, blk, BS, 0, 0));
	vbas_vol_close(v);
	V(vbas_flush(p));
	R->create10 = rate(p, "c", 1000, NULL);
	V(vbas_close(p));
	p = pool_make(4 * GiB);
	for (unsigned i = 0; i < 10; i++) {
		snprintf(name, sizeof(name), "few-%u", i);
		V(vbas_vol_create(p, name, 64 * MiB));
	}
	V(vbas_flush(p));
	R->snap10 = rate(p, "s", 1000, "few-0");
	V(vbas_close(p));
	line("create_us_at_10", R->create10, "us");
	line("snapshot_us_at_10", R->snap10, "us");

	/* 1,000, 10,000, 100,000 volumes: list each. */
	p = pool_make(16 * GiB);
	V(vbas_vol_create(p, "base", 64 * MiB));
	V(vbas_vol_open(p, "base", &v));
	V(vbas_pwrite(v, blk, BS, 0, 0));
	vbas_vol_close(v);
	unsigned have = 1;
	static const unsigned counts[3] = { 1000, 10000, 100000 };
	for (int k = 0; k < 3; k++) {
		for (; have < counts[k]; have++) {
			snprintf(name, sizeof(name), "vol-%u", have);
			V(vbas_vol_create(p, name, 64 * MiB));
		}
		V(vbas_close(p));
		R->list[k] = list_time(counts[k], &R->list_rss[k]);
		p = pool_open();
	}
	R->create100k = rate(p, "c", 1000, NULL);
	R->snap100k = rate(p, "s", 1000, "base");
	V(vbas_close(p));
	line("create_us_at_100000", R->create100k, "us");
	line("snapshot_us_at_100000", R->snap100k, "us");
	unlink(pool_path);
}

/* ---- 2. Snapshots of a big volume ---------------------------------------- */

/* Map 4 KiB at every second block: N extents, no data written (the
 * mapping interface leaves the I/O to its client). */
static void map_every_other(struct vbas_vol *vol, uint64_t n)
{
	struct vbas_iomap m;
	for (uint64_t i = 0; i < n; i++) {
		V(vbas_map_begin(vol, 2 * i * BS, BS, VBAS_MAP_WRITE, NULL, &m));
		V(vbas_map_end(vol, &m, BS, 0));
	}
}

static double check_time(long *rss)
{
	const char *args[] = { "check", pool_path, NULL };
	return run_cli(args, rss);
}

/* Volume "big" of EXTENTS extents, SNAPS snapshots with one block written
 * before each; AT_1K: list and check after the first 1,000. */
static struct vbas_pool *big_volume(struct res *R, uint64_t extents, uint64_t snaps, int report)
{
	struct vbas_pool *p = pool_make((extents * 2 + 4 * snaps) * BS + 8 * GiB);
	struct vbas_vol *v;
	static char blk[BS];
	char name[64];
	V(vbas_vol_create(p, "big", 2 * extents * BS));
	V(vbas_vol_open(p, "big", &v));
	map_every_other(v, extents);
	V(vbas_flush(p));
	for (uint64_t i = 0; i < snaps; i++) {
		uint64_t b = 2 * (rng_next() % extents);
		memcpy(blk, &i, sizeof(i));
		V(vbas_pwrite(v, blk, BS, b * BS, 0));
		snprintf(name, sizeof(name), "snap-%" PRIu64, i);
		V(vbas_vol_snapshot(p, "big", name, 0));
		if (report && i + 1 == 1000 && snaps > 1000) {
			vbas_vol_close(v);
			V(vbas_close(p));
			const char *args[] = { "list", "--json", pool_path, NULL };
			R->slist1k = run_cli(args, NULL);
			R->scheck1k = check_time(&R->scheck1k_rss);
			line("list_1000_snapshots_of_big", R->slist1k, "s");
			line("check_1000_snapshots_of_big", R->scheck1k, "s");
			line("check_1000_snapshots_of_big_rss", R->scheck1k_rss / 1024.0, "MiB");
			p = pool_open();
			V(vbas_vol_open(p, "big", &v));
		}
	}
	vbas_vol_close(v);
	return p;
}

static void big_snapshots(struct res *R)
{
	struct vbas_pool *p = big_volume(R, R->extents, R->snaps, 1);
	V(vbas_close(p));
	const char *args[] = { "list", "--json", pool_path, NULL };
	R->slist = run_cli(args, &R->slist_rss);
	R->scheck = check_time(&R->scheck_rss);
	line("list_snapshots_of_big", R->slist, "s");
	line("check_snapshots_of_big", R->scheck, "s");
	line("check_snapshots_of_big_rss", R->scheck_rss / 1024.0, "MiB");
}

/* ---- 3. Commit cost ------------------------------------------------------- */

static void commit_cost(struct res *R)
{
	struct vbas_pool *p = pool_open();
	struct vbas_vol *v;
	static char blk[BS];
	V(vbas_vol_open(p, "big", &v));
	static const unsigned leaves[4] = { 1, 100, 1000, 5000 };
	/* A leaf holds about 170 records (340 blocks of every-other
	 * mapping): writes spread evenly over the volume, at least 340
	 * blocks apart, land in different leaves; a snapshot first makes
	 * every leaf shared, so each write copies one. */
	uint64_t span = 2 * R->extents;
	for (int k = 0; k < 4; k++) {
		char sn[32];
		snprintf(sn, sizeof(sn), "commit-%d", k);
		V(vbas_vol_snapshot(p, "big", sn, 0));
		V(vbas_flush(p));
		uint64_t stride = span / leaves[k];
		for (unsigned i = 0; i < leaves[k]; i++)
			V(vbas_pwrite(v, blk, BS, (i * stride) * BS, 0));
		struct vbas_pool_info pi;
		V(vbas_pool_info(p, &pi));
		double t0 = now();
		V(vbas_flush(p));
		R->flush[k] = now() - t0;
		R->flush_blocks[k] = pi.dirty_blocks;
		R->flush_leaves[k] = leaves[k];
		char nm[64];
		snprintf(nm, sizeof(nm), "flush_after_%u_leaves", leaves[k]);
		line(nm, R->flush[k] * 1e3, "ms");
		snprintf(nm, sizeof(nm), "flush_after_%u_leaves_blocks", leaves[k]);
		line(nm, (double)pi.dirty_blocks, "blocks");
	}
	vbas_vol_close(v);
	V(vbas_close(p));
	/* The device's own flush: a 4 KiB write, then fdatasync. */
	int fd = open(pool_path, O_RDWR);
	if (fd < 0)
		die("open %s: %s", pool_path, strerror(errno));
	double best = 1e9;
	struct stat st;
	fstat(fd, &st);
	for (int i = 0; i < 20; i++) {
		/* Past the pool's end: the pool's blocks stay as they are. */
		if (pwrite(fd, blk, BS, st.st_size + (off_t)BS * i) != BS)
			die("pwrite: %s", strerror(errno));
		double t0 = now();
		if (fdatasync(fd) < 0)
			die("fdatasync: %s", strerror(errno));
		double t = now() - t0;
		if (t < best)
			best = t;
	}
	if (ftruncate(fd, st.st_size) < 0)
		die("ftruncate: %s", strerror(errno));
	close(fd);
	R->fsync_s = best;
	line("fdatasync_4k", best * 1e3, "ms");
}

static void big_check(struct res *R)
{
	struct vbas_pool *p = big_volume(R, 10000000, 1000, 0);
	V(vbas_close(p));
	R->big_check = check_time(&R->big_rss);
	line("check_10M_extents_1000_snapshots", R->big_check, "s");
	line("check_10M_extents_1000_snapshots_rss", R->big_rss / 1024.0, "MiB");
	/* The commit of about 100,000 dirty nodes: one write into each of
	 * 50,000 shared leaves, with a cache that holds them all (1 GiB), so
	 * that none is written back before the commit. */
	struct vbas_open_opts oo = { .cache_bytes = 1ull << 30 };
	struct vbas_vol *v;
	static char blk[BS];
	V(vbas_open(pool_path, &oo, &p));
	V(vbas_vol_open(p, "big", &v));
	V(vbas_vol_snapshot(p, "big", "commit-big", 0));
	V(vbas_flush(p));
	uint64_t stride = 2 * 10000000ull / 50000;
	for (unsigned i = 0; i < 50000; i++)
		V(vbas_pwrite(v, blk, BS, (i * stride) * BS, 0));
	struct vbas_pool_info pi;
	V(vbas_pool_info(p, &pi));
	double t0 = now();
	V(vbas_flush(p));
	R->big_flush = now() - t0;
	R->big_flush_blocks = pi.dirty_blocks;
	line("flush_after_50000_leaves", R->big_flush * 1e3, "ms");
	line("flush_after_50000_leaves_blocks", (double)pi.dirty_blocks, "blocks");
	vbas_vol_close(v);
	V(vbas_close(p));
}

static void report(const struct res *R)
{
	printf("\nScale (vbas list = the CLI: open, list, usage of every volume)\n");
	printf("  the pool of issue 14's table (100,000 extents over 1 PiB, 20,000 empty\n"
	       "  volumes, 20,000 snapshots):  vbas list %.3f s, check %.3f s (RSS %ld MiB),\n"
	       "  create %.0f us, snapshot %.0f us beside its 40,001 volumes\n", R->t_list,
	       R->t_check, R->t_check_rss / 1024, R->t_create, R->t_snap);
	printf("  %-52s %10s %10s %10s\n", "", "1,000", "10,000", "100,000");
	printf("  %-52s %9.3fs %9.3fs %9.3fs\n", "vbas list, N empty volumes", R->list[0], R->list[1],
	       R->list[2]);
	printf("  %-52s %10s %10s %10s\n", "", "at 10", "at 100,000", "ratio");
	printf("  %-52s %8.0fus %8.0fus %9.2fx\n", "create (library call, commits included)",
	       R->create10, R->create100k, R->create100k / R->create10);
	printf("  %-52s %8.0fus %8.0fus %9.2fx\n", "snapshot (library call, commits included)",
	       R->snap10, R->snap100k, R->snap100k / R->snap10);
	printf("  volume of %" PRIu64 " extents, one block written before each snapshot:\n",
	       R->extents);
	if (R->snaps > 1000)
		printf("  %-52s %9.3fs   check %7.3fs, RSS %ld MiB\n", "  1,000 snapshots: vbas list",
		       R->slist1k, R->scheck1k, R->scheck1k_rss / 1024);
	printf("  %-52s %9.3fs   check %7.3fs, RSS %ld MiB\n", "  all snapshots: vbas list",
	       R->slist, R->scheck, R->scheck_rss / 1024);
	printf("  (%" PRIu64 " snapshots)\n", R->snaps);
	if (R->big)
		printf("  %-52s %9.3fs   RSS %ld MiB\n", "check, 10^7 extents and 1,000 snapshots",
		       R->big_check, R->big_rss / 1024);
	printf("  commit cost (vbas_flush) after writes into N leaves, against one fdatasync "
	       "(%.3f ms):\n", R->fsync_s * 1e3);
	for (int k = 0; k < 4; k++)
		printf("  %8u leaves: %8.3f ms, %7" PRIu64 " metadata blocks written, %7.1fx the "
		       "fdatasync\n", R->flush_leaves[k], R->flush[k] * 1e3, R->flush_blocks[k],
		       R->flush[k] / R->fsync_s);
	if (R->big)
		printf("  %8u leaves: %8.3f ms, %7" PRIu64 " metadata blocks written, %7.1fx the "
		       "fdatasync (10^7 extents, 1 GiB cache)\n", 50000u, R->big_flush * 1e3,
		       R->big_flush_blocks, R->big_flush / R->fsync_s);
}

int main(int argc, char **argv)
{
	static struct res R = { .extents = 1000000, .snaps = 10000 };
	const char *dir = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--big")) {
			R.big = 1;
			continue;
		}
		if (i + 1 >= argc)
			die("usage: scale --dir DIR [--vbas-cli PATH] [--extents N] [--snaps N] [--big]");
		const char *a = argv[i], *v = argv[++i];
		if (!strcmp(a, "--dir"))
			dir = v;
		else if (!strcmp(a, "--vbas-cli"))
			cli = v;
		else if (!strcmp(a, "--extents"))
			R.extents = strtoull(v, NULL, 0);
		else if (!strcmp(a, "--snaps"))
			R.snaps = strtoull(v, NULL, 0);
		else
			die("unknown option %s", a);
	}
	if (!dir)
		die("--dir is required");
	if (R.extents < 850000 || R.snaps < 1)
		die("--extents at least 850000 (5,000 leaves of 170), --snaps at least 1");
	static char path[4200];
	snprintf(path, sizeof(path), "%s/scale.pool", dir);
	pool_path = path;
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGHUP, on_signal);
	printf("vbas scale bench: dir %s, %" PRIu64 " extents, %" PRIu64 " snapshots\n", dir,
	       R.extents, R.snaps);
	table_pool(&R);
	many_volumes(&R);
	big_snapshots(&R);
	commit_cost(&R);
	if (R.big)
		big_check(&R);
	unlink(pool_path);
	report(&R);
	return 0;
}
