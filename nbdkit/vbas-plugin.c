/* nbdkit-vbas-plugin: every volume of a vbas pool is an NBD export.
 *
 *   nbdkit vbas pool=FILE [cache=SIZE] [readonly=BOOL]
 *
 * One vbas_pool per nbdkit process, opened in .get_ready (so that a
 * missing, locked or corrupt pool is reported on the terminal and nbdkit
 * exits) and closed, committing, in .cleanup (or .unload).  Each
 * connection opens the volume its export name names (.open) and closes it
 * (.close).  A control thread, started in .after_fork, takes snapshots
 * and clones for the CLI while the pool is served (tools/ctl.h), and
 * announces each change to the volumes as an event (events.h).
 * Snapshots are exported read-only.  Data goes through the
 * library's vbas_pread/vbas_pwrite/vbas_discard/vbas_write_zeroes: see
 * docs/nbd.md for why, and for how errors map to NBD errors.
 *
 * Thread model PARALLEL: the library's handles are thread-safe (one
 * metadata lock per pool, range locks per volume), and the plugin keeps no
 * mutable state per connection after .open.
 */
#define _GNU_SOURCE
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "vbas.h"

#include "../tools/copy.h"
#include "../tools/ctl.h"
#include "events.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

/* nbdkit refuses requests larger than this; tell clients so. */
#define MAX_REQUEST   (64u << 20)
/* Extents reported per .extents call at most: the client asks again. */
#define MAX_EXTENTS   4096u
/* Names listed in an error message at most. */
#define MAX_NAMES     20

static const char *pool_path;        /* pool=, absolute */
static uint64_t cache_bytes;         /* cache=, 0: the library's default */
static int pool_rdonly;              /* readonly=: open the pool read-only */
/* pinned=GEN: the pool is served by another process, which a client holds
 * a pin of at generation GEN (docs/nbd.md, "Reading a served pool"): open
 * it beside that server, read-only, at its newest commit (GEN or later). */
static uint64_t pool_pinned;
static int pool_direct = 1;          /* direct=: O_DIRECT (else the page cache) */
static struct vbas_pool *pool;
static int final_commit_failed;       /* close_pool could not commit */
static uint32_t pool_bs;             /* the pool's block size */
/* default_export=: the volume a client asking for "" gets; "" for none
 * (then the only volume).  It follows a rename through the control
 * channel, so it is read and written under its lock. */
static pthread_mutex_t default_lock = PTHREAD_MUTEX_INITIALIZER;
static char default_name[VBAS_NAME_MAX + 1];

/* Open handles, so that the pool can be closed at exit: nbdkit does not
 * call .close on connections that are still open when it shuts down (it
 * sets its quit flag, and the connections end without .close). */
static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;
static struct handle *handles;

struct handle {
	struct handle *prev, *next;  /* the list of open handles */
	struct vbas_vol *vol;
	uint64_t size;
	int readonly;                /* a snapshot, or the pool is read-only */
	char name[VBAS_NAME_MAX + 1];
};

/* ---- Errors ------------------------------------------------------------- */

/* The NBD error a library errno R (negative) reaches the client as.  NBD
 * has EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN;
 * nbdkit turns anything else into EINVAL, which would be wrong for
 * corrupt metadata: EBADMSG and EUCLEAN (checksum or structure) are EIO. */
static int nbd_errno(int r)
{
	switch (-r) {
	case ENOSPC:
	case EDQUOT:
		return ENOSPC;
	case EROFS:              /* a snapshot, or the pool latched read-only */
	case EPERM:
	case EACCES:
		return EPERM;
	case ENOMEM:
		return ENOMEM;
	case EINVAL:
	case ERANGE:
		return EINVAL;
	case EOVERFLOW:
		return EOVERFLOW;
	case ENOTSUP:
		return ENOTSUP;
	default:                 /* EIO, EBADMSG, EUCLEAN, ... */
		return EIO;
	}
}

/* Report the failure R of OP on H to the server log (with the library's
 * message, which says where) and to the client (as an NBD error).  Call
 * right after the failing library call.  Returns -1. */
static int io_fail(const struct handle *h, const char *op, uint64_t len, uint64_t off, int r)
{
	const char *m = vbas_errmsg();
	if (m && strstr(m, " offset "))    /* it says where already */
		nbdkit_error("%s: %s", h->name, m);
	else
		nbdkit_error("%s: %s of %" PRIu64 " bytes at offset %" PRIu64 ": %s", h->name, op,
			     len, off, m && *m ? m : strerror(-r));
	nbdkit_set_error(nbd_errno(r));
	return -1;
}

/* ---- Configuration and the pool ------------------------------------------ */

static int vbas_nbd_config(const char *key, const char *value)
{
	if (!strcmp(key, "pool")) {
		if (!*value) {
			nbdkit_error("pool=: empty file name");
			return -1;
		}
		pool_path = nbdkit_absolute_path(value);
		return pool_path ? 0 : -1;
	}
	if (!strcmp(key, "cache")) {
		int64_t v = nbdkit_parse_size(value);
		if (v < 0)
			return -1;
		cache_bytes = (uint64_t)v;
		return 0;
	}
	if (!strcmp(key, "events")) {
		if (!*value) {
			nbdkit_error("events=: empty file name");
			return -1;
		}
		ev_conf.log = value;
		return 0;
	}
	if (!strcmp(key, "pinned")) {
		char *end;
		errno = 0;
		unsigned long long g = strtoull(value, &end, 10);
		if (errno || end == value || *end || !g) {
			nbdkit_error("pinned=%s: a generation, a decimal number above 0", value);
			return -1;
		}
		pool_pinned = g;
		return 0;
	}
	if (!strcmp(key, "on_event")) {
		if (!*value) {
			nbdkit_error("on_event=: empty command");
			return -1;
		}
		ev_conf.on_event = value;
		return 0;
	}
	if (!strcmp(key, "default_export")) {
		if (!*value || strlen(value) > VBAS_NAME_MAX) {
			nbdkit_error("default_export=%s: %s", value, *value ? "longer than a volume "
				     "name can be" : "empty name");
			return -1;
		}
		snprintf(default_name, sizeof(default_name), "%s", value);
		return 0;
	}
	if (!strcmp(key, "autoextend")) {
		int64_t v = nbdkit_parse_size(value);
		if (v < 0)
			return -1;
		if (v == 0) {
			nbdkit_error("autoextend=%s: the step must be more than 0", value);
			return -1;
		}
		ev_conf.autoextend = (uint64_t)v;
		return 0;
	}
	int *flag = !strcmp(key, "readonly") ? &pool_rdonly :
		    !strcmp(key, "direct") ? &pool_direct : NULL;
	if (flag) {
		int v = nbdkit_parse_bool(value);
		if (v < 0)
			return -1;
		*flag = v;
		return 0;
	}
	nbdkit_error("unknown parameter '%s' (the vbas plugin takes pool=FILE, cache=SIZE, "
		     "readonly=BOOL, direct=BOOL, events=FILE, on_event=CMD, autoextend=SIZE, "
		     "default_export=NAME, pinned=GEN)",
		     key);
	return -1;
}

static int vbas_nbd_config_complete(void)
{
	if (!pool_path) {
		nbdkit_error("pool=FILE is required: the vbas pool to serve");
		return -1;
	}
	if (pool_pinned && !pool_rdonly) {
		nbdkit_error("pinned= reads a served pool: only with readonly=true");
		return -1;
	}
	if (pool_rdonly && (ev_conf.autoextend || ev_conf.on_event || ev_conf.log)) {
		nbdkit_error("events=, on_event= and autoextend= are for a pool served for "
			     "writing, not with readonly=true");
		return -1;
	}
	return ev_open_log();
}

static int default_missing(void);

/* Before nbdkit forks into the background, so that the user sees why a
 * pool cannot be served (no such file, in use, corrupt).  The library
 * starts no threads, and the pool's lock is an open-file-description lock,
 * which the forked server inherits with the descriptor. */
static int vbas_nbd_get_ready(void)
{
	struct vbas_open_opts o = { .cache_bytes = cache_bytes,
				    .flags = (pool_rdonly ? VBAS_OPEN_RDONLY : 0) |
					     (pool_pinned ? VBAS_OPEN_PINNED : 0) |
					     (pool_direct ? 0 : VBAS_OPEN_NO_DIRECT) };
	struct vbas_pool_info info;
	int r = vbas_open(pool_path, &o, &pool);
	/* Pinned: only a superblock being written as it was read gives an
	 * older commit than the pin's; open again then. */
	for (int tries = 0; !r && pool_pinned && tries < 50; tries++) {
		r = vbas_pool_info(pool, &info);
		if (r || info.generation >= pool_pinned)
			break;
		vbas_close(pool);
		pool = NULL;
		usleep(10000);
		r = vbas_open(pool_path, &o, &pool);
	}
	if (!r && pool_pinned && (r = vbas_pool_info(pool, &info)) == 0 &&
	    info.generation < pool_pinned) {
		nbdkit_error("%s: the newest commit on the device is %" PRIu64 ", older than the "
			     "pinned %" PRIu64 " (is the file the one served?)", pool_path,
			     info.generation, pool_pinned);
		vbas_close(pool);
		pool = NULL;
		return -1;
	}
	if (r) {
		const char *m = vbas_errmsg();
		nbdkit_error("%s: %s", pool_path, m && *m ? m : strerror(-r));
		pool = NULL;
		return -1;
	}
	r = vbas_pool_info(pool, &info);
	if (r) {
		nbdkit_error("%s: %s", pool_path, vbas_errmsg());
		vbas_close(pool);
		pool = NULL;
		return -1;
	}
	pool_bs = info.block_size;
	if (*default_name && default_missing()) {
		vbas_close(pool);
		pool = NULL;
		return -1;
	}
	nbdkit_debug("vbas: opened %s: %" PRIu64 " volumes, block size %u%s%s", pool_path,
		     info.volumes, pool_bs, pool_rdonly ? ", read-only" : "",
		     pool_direct ? "" : ", through the page cache");
	return 0;
}

/* ---- The control channel (tools/ctl.h) ---------------------------------- */

static int ctl_fd = -1;              /* listening socket */
static int ctl_stop[2] = { -1, -1 }; /* a pipe: written to stop the thread */
static pthread_t ctl_thread;
static int ctl_running;
static char ctl_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
/* Connections holding a pin (vbas_pool_pin): each is released when its
 * client closes the connection (or dies). */
#define CTL_MAX_PINS 16
static int pin_fd[CTL_MAX_PINS];
static int npins;

/* Requests that take as long as the data they touch (shrink, write,
 * reflink, dedupe, unshare, discard) run in a thread of their own, a job,
 * which answers its connection when done; the control thread goes on
 * serving.  At most CTL_MAX_JOBS at once, one shrink among them. */
#define CTL_MAX_JOBS 8
struct job {
	int c, fd;             /* the connection; a descriptor passed with it */
	size_t n;
	char req[CTL_MAX + 1];
	int done;              /* its thread has ended: to be joined */
	pthread_t thread;
	struct job *next;
};
static pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct job *jobs;
static int njobs, shrinking;
static volatile int jobs_stopping;    /* the server stops: jobs end early */

/* Connections open on volume NAME. */
static int connections(const char *name)
{
	int n = 0;
	pthread_mutex_lock(&handles_lock);
	for (struct handle *h = handles; h; h = h->next)
		n += !strcmp(h->name, name);
	pthread_mutex_unlock(&handles_lock);
	return n;
}

/* The reply to a request that ran: R from the library (and then a commit,
 * so that the change is durable when the client hears of it).  Returns 0
 * if it was done and committed. */
static int ctl_done(int r, const char *what, FILE *out, const char *fmt, ...)
{
	if (!r)
		r = vbas_flush(pool);
	if (r) {
		const char *m = vbas_errmsg();
		nbdkit_error("control: %s: %s", what, m && *m ? m : strerror(-r));
		fprintf(out, "%d\t%s", -r, m && *m ? m : strerror(-r));
		return r;
	}
	va_list ap;
	fputs("0\t", out);
	va_start(ap, fmt);
	vfprintf(out, fmt, ap);
	va_end(ap);
	nbdkit_debug("vbas: control: %s", what);
	return 0;
}

/* A change to the volumes, committed: the event that announces it (with
 * the volume's size unless it is gone), and the default export follows
 * a rename.  nbdkit's list_exports and .open ask the pool each time, so
 * clients see the change at once. */
static void announce(const char *event, const char *name, const char *other_key,
		     const char *other)
{
	struct vbas_vol_info info;
	int sized = strcmp(event, "volume_deleted") && strcmp(event, "volume_renamed") &&
		    !vbas_vol_stat(pool, name, &info);
	if (!strcmp(event, "volume_renamed")) {
		pthread_mutex_lock(&default_lock);
		if (!strcmp(default_name, other))
			snprintf(default_name, sizeof(default_name), "%s", name);
		pthread_mutex_unlock(&default_lock);
	}
	ev_volume(event, name, other_key, other, sized ? &info.size : NULL);
}

/* Every volume and its usage, for vbas list (ctl_put_vol). */
static void ctl_list(const char *what, FILE *out)
{
	struct vol_list l = { 0 };
	int r = vol_list_read(pool, &l);
	if (r)
		ctl_done(r, what, out, "");
	else {
		fputs("0\t", out);
		ctl_put_list(out, &l);
	}
	vol_list_free(&l);
}

/* Before each read of a write's source (copy.h): the client's hang-up
 * (a CLI stopped by a signal) or the server stopping ends the write.  C
 * is the connection. */
static int write_before_read(int fd, void *arg)
{
	int c = *(int *)arg;
	struct pollfd pf[3] = { { .fd = fd, .events = POLLIN }, { .fd = c, .events = 0 },
				{ .fd = ctl_stop[0], .events = POLLIN } };
	for (;;) {
		if (jobs_stopping)
			return ESHUTDOWN;
		int k = poll(pf, 3, -1);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return errno;
		if (pf[1].revents)
			return ECONNRESET;
		if (pf[2].revents)
			return ESHUTDOWN;
		return 0;       /* the source has data, or its end */
	}
}

/* write NAME OFFSET, with the source's descriptor FD: vbas write of a
 * served pool.  The server copies FD to its end into the volume (copy.c:
 * the same loop as the CLI's), and commits what it wrote, all or part.
 * The answer: the bytes written. */
static void ctl_write(const char *const *f, int nf, int c, int fd, const char *what,
		      FILE *out)
{
	struct vbas_pool_info pi;
	uint64_t off;
	if (nf != 3 || fd < 0 || ctl_size(f[2], &off)) {
		fprintf(out, "%d\twrite: wants a volume, an offset (bytes, decimal) and the "
			 "source's descriptor", EINVAL);
		return;
	}
	struct copy_in ci = { .fd = fd, .off = off, .before_read = write_before_read, .arg = &c };
	int r = vbas_vol_open(pool, f[1], &ci.vol);
	if (!r)
		r = vbas_pool_info(pool, &pi);
	if (r) {
		ctl_done(r, what, out, "");
	} else {
		ci.block_size = pi.block_size;
		if (!copy_in(&ci)) {
			ctl_done(0, what, out, "%" PRIu64, ci.total);
		} else {
			char m[512];
			const char *lm = vbas_errmsg();
			if (ci.fault == COPY_LIBRARY)
				snprintf(m, sizeof(m), "%s", lm && *lm ? lm : strerror(ci.err));
			else if (ci.fault == COPY_SOURCE)
				snprintf(m, sizeof(m), "the source: %s", ci.msg);
			else if (ci.fault == COPY_STOPPED)
				snprintf(m, sizeof(m), "%s", ci.err == ECONNRESET ?
					 "the client went away" : ci.err == ESHUTDOWN ?
					 "the server is stopping" : strerror(ci.err));
			else
				snprintf(m, sizeof(m), "%s", ci.msg);
			/* What was written is committed: the message says how much. */
			int e = vbas_flush(pool);
			nbdkit_error("control: %s: %s; %" PRIu64 " bytes written before it%s", what, m,
				     ci.total, e ? ", not committed" : " and committed");
			fprintf(out, "%d\t%s", ci.err, m);
			if (ci.total)
				fprintf(out, "; %" PRIu64 " bytes at offset %" PRIu64 " were written "
					 "before the failure%s", ci.total, off,
					 e ? ", and could not be committed" : "");
		}
	}
	if (ci.vol)
		vbas_vol_close(ci.vol);
}

/* reflink and dedupe SRC SRC_OFF DST DST_OFF LEN, unshare and discard NAME
 * OFF LEN (unshare's LEN 0: to the end).  dedupe answers "SAME BYTES". */
static void ctl_range(const char *const *f, int nf, const char *what, FILE *out)
{
	int two = !strcmp(f[0], "reflink") || !strcmp(f[0], "dedupe");
	static const int at2[3] = { 2, 4, 5 }, at1[2] = { 2, 3 };
	uint64_t n[3] = { 0 };
	int bad = nf != (two ? 6 : 4);
	for (int i = 0; !bad && i < (two ? 3 : 2); i++)
		bad = ctl_size(f[two ? at2[i] : at1[i]], &n[i]);
	if (bad) {
		fprintf(out, "%d\t%s: wants %s", EINVAL, f[0], two ?
			 "SRC SRC_OFFSET DST DST_OFFSET LENGTH" : "NAME OFFSET LENGTH");
		return;
	}
	struct vbas_vol *sv = NULL, *dv = NULL;
	int same = 0, r = vbas_vol_open(pool, f[1], &sv);
	uint64_t done = n[two ? 2 : 1];
	if (!r && two)
		r = strcmp(f[1], f[3]) ? vbas_vol_open(pool, f[3], &dv) : (dv = sv, 0);
	if (!r && !strcmp(f[0], "reflink"))
		r = vbas_reflink(sv, n[0], dv, n[1], n[2]);
	else if (!r && !strcmp(f[0], "dedupe"))
		r = vbas_dedupe(sv, n[0], dv, n[1], n[2], &same);
	else if (!r && !strcmp(f[0], "unshare"))
		r = vbas_unshare(sv, n[0], n[1]);
	else if (!r)
		r = vbas_discard(sv, n[0], n[1], 0);
	if (!r && !done && two) {
		struct vbas_vol_info info;
		r = vbas_vol_info(sv, &info);
		done = !r && n[0] < info.size ? info.size - n[0] : 0;
	}
	ctl_done(r, what, out, "%d %" PRIu64, same, same ? done : 0);
	if (dv && dv != sv)
		vbas_vol_close(dv);
	if (sv)
		vbas_vol_close(sv);
}

/* Run one request (NUL-separated fields in REQ, N bytes) of connection CONN,
 * with descriptor FD if one came with it (else -1); the reply to OUT.
 * Returns 1 if the request took a pin, which the connection now holds. */
static int ctl_run(char *req, size_t n, int conn, int fd, FILE *out)
{
	const char *f[CTL_FIELDS];
	char what[600];
	uint64_t size;
	int nf, r;
	if (ctl_split_req(req, n, f, &nf)) {
		fprintf(out, "%d\tmalformed request", EPROTO);
		return 0;
	}
	snprintf(what, sizeof(what), "%s%s%s%s%s", f[0], f[1] ? " " : "", f[1] ? f[1] : "",
		 f[2] ? " " : "", f[2] ? f[2] : "");
	if (fd >= 0 && strcmp(f[0], "write")) {
		fprintf(out, "%d\t%.40s takes no descriptor", EINVAL, f[0]);
		return 0;
	}
	if (!strcmp(f[0], "write")) {
		ctl_write(f, nf, conn, fd, what, out);
		return 0;
	}
	if (!strcmp(f[0], "reflink") || !strcmp(f[0], "dedupe") || !strcmp(f[0], "unshare") ||
	    !strcmp(f[0], "discard")) {
		ctl_range(f, nf, what, out);
		return 0;
	}
	if (!strcmp(f[0], "ping") && nf == 1) {
		fprintf(out, "0\tvbas %s, pid %d", VBAS_VERSION_STRING, (int)getpid());
		return 0;
	}
	if (!strcmp(f[0], "info") && nf == 1) {
		struct vbas_pool_info info;
		r = vbas_pool_info(pool, &info);
		if (r)
			ctl_done(r, what, out, "");
		else {
			fputs("0\t", out);
			ctl_put_info(out, &info);
		}
		return 0;
	}
	if (!strcmp(f[0], "list") && nf == 1) {
		ctl_list(what, out);
		return 0;
	}
	if ((!strcmp(f[0], "snapshot") || !strcmp(f[0], "clone")) && (nf == 3 || nf == 4)) {
		unsigned flags = !strcmp(f[0], "clone") ? VBAS_SNAP_WRITABLE : 0;
		if (nf == 4 && (!strcmp(f[3], "noreserve") || !strcmp(f[3], "noreserve,expendable")))
			flags |= VBAS_SNAP_NORESERVE;
		if (nf == 4 && (!strcmp(f[3], "expendable") || !strcmp(f[3], "noreserve,expendable")))
			flags |= VBAS_SNAP_EXPENDABLE;
		if (nf == 4 && !(flags & (VBAS_SNAP_NORESERVE | VBAS_SNAP_EXPENDABLE))) {
			fprintf(out, "%d\t%s: unknown flags '%.40s'", EINVAL, f[0], f[3]);
			return 0;
		}
		r = vbas_vol_snapshot(pool, f[1], f[2], flags);
		if (!ctl_done(r, what, out, "%s '%s' of '%s' taken by the server", f[0], f[2], f[1]))
			announce(flags & VBAS_SNAP_WRITABLE ? "clone_created" : "snapshot_created",
				 f[2], "origin", f[1]);
		return 0;
	}
	if (!strcmp(f[0], "rename") && nf == 3) {
		r = vbas_vol_rename(pool, f[1], f[2]);
		if (!ctl_done(r, what, out, "volume '%s' renamed '%s' by the server; its export is "
			      "'%s' now", f[1], f[2], f[2]))
			announce("volume_renamed", f[2], "old_name", f[1]);
		return 0;
	}
	if ((!strcmp(f[0], "create") || !strcmp(f[0], "resize")) && nf == 3) {
		struct vbas_vol_info info;
		if (ctl_size(f[2], &size)) {
			fprintf(out, "%d\t%s: bad size '%.40s'", EINVAL, f[0], f[2]);
			return 0;
		}
		if (!strcmp(f[0], "create")) {
			r = vbas_vol_create(pool, f[1], size);
			if (!ctl_done(r, what, out, "volume '%s' created by the server; it is an "
				      "export now", f[1]))
				announce("volume_created", f[1], NULL, NULL);
			return 0;
		}
		/* NBD tells a connected client its export's size once: a
		 * shrink would cut the ground from under it.  A client sees
		 * a volume grown when it connects again. */
		int c = connections(f[1]);
		r = vbas_vol_stat(pool, f[1], &info);
		if (!r && c && size < info.size) {
			fprintf(out, "%d\tvolume '%s' has %d client connection(s) to its export: "
				 "disconnect them before shrinking it", EBUSY, f[1], c);
			return 0;
		}
		if (!r)
			r = vbas_vol_resize(pool, f[1], size);
		if (!ctl_done(r, what, out, "volume '%s' resized by the server%s", f[1],
			      c ? " (connected clients see the new size when they connect again)" : ""))
			announce("volume_resized", f[1], NULL, NULL);
		return 0;
	}
	if ((!strcmp(f[0], "reserve") || !strcmp(f[0], "unreserve")) && nf == 4) {
		/* OFF LEN; LEN 0: to the end of the volume. */
		uint64_t off, len;
		struct vbas_vol *v;
		struct vbas_vol_info info;
		if (ctl_size(f[2], &off) || ctl_size(f[3], &len)) {
			fprintf(out, "%d\t%s: bad range '%.40s' '%.40s'", EINVAL, f[0], f[2], f[3]);
			return 0;
		}
		r = vbas_vol_open(pool, f[1], &v);
		if (!r) {
			r = vbas_vol_info(v, &info);
			if (!r && !len)
				len = off < info.size ? info.size - off : 1;
			if (!r)
				r = !strcmp(f[0], "reserve") ? vbas_vol_reserve(v, off, len) :
							       vbas_vol_unreserve(v, off, len);
			int e = vbas_vol_close(v);
			if (!r)
				r = e;
		}
		ctl_done(r, what, out, "%s of '%s' done by the server", f[0], f[1]);
		return 0;
	}
	if (!strcmp(f[0], "grow") && nf == 2) {
		/* SIZE, or +N: by N. */
		struct vbas_pool_info info;
		int plus = f[1][0] == '+';
		if (ctl_size(f[1] + plus, &size) || (plus && !size)) {
			fprintf(out, "%d\tgrow: bad size '%.40s'", EINVAL, f[1]);
			return 0;
		}
		r = vbas_pool_info(pool, &info);
		if (!r && plus && info.size + size < size)
			r = -EFBIG;
		if (!r)
			r = vbas_pool_grow(pool, plus ? info.size + size : size);
		if (!r)
			r = vbas_pool_info(pool, &info);
		ctl_done(r, what, out, "the pool grown to %" PRIu64 " bytes by the server", info.size);
		return 0;
	}
	if (!strcmp(f[0], "shrink") && nf == 2) {
		/* Run by shrink_main: answered with the size and the figures. */
		struct vbas_shrink_stats st;
		struct vbas_pool_info info;
		if (ctl_size(f[1], &size)) {
			fprintf(out, "%d\tshrink: bad size '%.40s'", EINVAL, f[1]);
			return 0;
		}
		r = vbas_pool_shrink(pool, size, &st);
		if (!r)
			r = vbas_pool_info(pool, &info);
		ctl_done(r, what, out, "%" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64, info.size,
			 st.data_blocks, st.nodes, st.steps);
		return 0;
	}
	if (!strcmp(f[0], "shrink-cancel") && nf == 1) {
		r = vbas_pool_shrink_cancel(pool);
		ctl_done(r, what, out, "the shrink cancelled by the server");
		return 0;
	}
	if (!strcmp(f[0], "set") && nf == 3) {
		struct vbas_pool_settings s;
		uint64_t v;
		int lw = !strcmp(f[1], "low_water"), fl = !strcmp(f[1], "expendable_floor");
		if ((!lw && !fl) || ctl_size(f[2], &v) || v > 1000) {
			fprintf(out, "%d\tset: bad setting '%.40s' '%.40s' (low_water or "
				 "expendable_floor, 0 to 1000 permille)", EINVAL, f[1], f[2]);
			return 0;
		}
		r = vbas_pool_get(pool, &s);
		if (lw)
			s.low_water = (uint32_t)v;
		else
			s.expendable_floor = (uint32_t)v;
		if (!r)
			r = vbas_pool_set(pool, &s);
		ctl_done(r, what, out, "%s set by the server", f[1]);
		return 0;
	}
	if ((!strcmp(f[0], "rollback") && nf == 3) || (!strcmp(f[0], "readonly") && nf == 3)) {
		/* rollback NAME SNAP; readonly NAME 1|0.  Clients of the
		 * export would see its data change under them (or their
		 * writes refused): not while they are connected. */
		int ro = !strcmp(f[0], "readonly"), c = connections(f[1]);
		if (ro && strcmp(f[2], "0") && strcmp(f[2], "1")) {
			fprintf(out, "%d	readonly: '%.40s' is not 0 or 1", EINVAL, f[2]);
			return 0;
		}
		if (c && (!ro || !strcmp(f[2], "1"))) {
			fprintf(out, "%d	volume '%s' has %d client connection(s) to its export: "
				 "disconnect them before %s", EBUSY, f[1], c,
				 ro ? "making it read-only" : "rolling it back");
			return 0;
		}
		if (ro) {
			r = vbas_vol_set_readonly(pool, f[1], f[2][0] == '1');
			if (!ctl_done(r, what, out, "volume '%s' made %s by the server", f[1],
				      f[2][0] == '1' ? "read-only" : "writable"))
				announce(f[2][0] == '1' ? "volume_protected" : "volume_unprotected",
					 f[1], NULL, NULL);
		} else {
			r = vbas_vol_rollback(pool, f[1], f[2]);
			if (!ctl_done(r, what, out, "volume '%s' rolled back to '%s' by the server",
				      f[1], f[2]))
				announce("volume_rolled_back", f[1], "snapshot", f[2]);
		}
		return 0;
	}
	if (!strcmp(f[0], "delete") && nf == 2) {
		int c = connections(f[1]);
		if (c) {
			fprintf(out, "%d\tvolume '%s' has %d client connection(s) to its export: "
				 "disconnect them before deleting it", EBUSY, f[1], c);
			return 0;
		}
		r = vbas_vol_delete(pool, f[1]);
		if (!ctl_done(r, what, out, "volume '%s' deleted by the server", f[1]))
			announce("volume_deleted", f[1], NULL, NULL);
		return 0;
	}
	if (!strcmp(f[0], "pin")) {
		/* vbas check of the served pool: see docs/nbd.md. */
		uint64_t gen;
		if (nf != 1) {
			fprintf(out, "%d\tpin takes no arguments, got %d", EINVAL, nf - 1);
			return 0;
		}
		if (npins == CTL_MAX_PINS) {
			fprintf(out, "%d\tpin: %d pins are held already (one per running check): "
				 "try again when one is done", EAGAIN, CTL_MAX_PINS);
			return 0;
		}
		r = vbas_pool_pin(pool, &gen);
		if (r) {
			fprintf(out, "%d\tpin: %s", -r, vbas_errmsg());
			return 0;
		}
		fprintf(out, "0\t%" PRIu64 "\n", gen);
		nbdkit_debug("vbas: control: pin at generation %" PRIu64 " (%d held)", gen, npins + 1);
		return 1;
	}
	fprintf(out, "%d\tunknown control request '%.40s' with %d argument(s)", EINVAL,
		 f[0], nf - 1);
	return 0;
}

static int ctl_answer(int c, int fd, char *req, size_t n);

static void *job_main(void *arg)
{
	struct job *j = arg;
	ctl_answer(j->c, j->fd, j->req, j->n);
	close(j->c);
	pthread_mutex_lock(&jobs_lock);
	j->done = 1;
	if (!memcmp(j->req, "shrink", 7))
		shrinking = 0;
	pthread_mutex_unlock(&jobs_lock);
	return NULL;
}

/* Join the jobs that have ended (ALL: every one, waiting).  Under
 * jobs_lock, which it lets go of while it waits. */
static void jobs_reap(int all)
{
	for (struct job **pj = &jobs; *pj;) {
		struct job *j = *pj;
		if (!j->done && !all) {
			pj = &j->next;
			continue;
		}
		pthread_mutex_unlock(&jobs_lock);
		pthread_join(j->thread, NULL);
		pthread_mutex_lock(&jobs_lock);
		*pj = j->next;
		njobs--;
		free(j);
	}
}

/* Hand request REQ (N bytes) of connection C, with descriptor FD, to a job
 * of its own; 2: the connection is the job's (and so is FD), else 0 (FD
 * closed, the refusal sent). */
static int job_start(int c, int fd, const char *req, size_t n)
{
	static const char busy[] = "16\tshrink: another shrink is running in the server";
	static const char many[] = "11\tthe server runs 8 long requests already: try again "
				   "when one is done";
	static const char oom[] = "12\tthe server is out of memory";
	int shrink = !memcmp(req, "shrink", 7);
	const char *no = NULL;
	pthread_mutex_lock(&jobs_lock);
	jobs_reap(0);
	struct job *j = NULL;
	if (shrink && shrinking)
		no = busy;
	else if (njobs == CTL_MAX_JOBS)
		no = many;
	else if (!(j = calloc(1, sizeof(*j))))
		no = oom;
	if (j) {
		j->c = c;
		j->fd = fd;
		j->n = n;
		memcpy(j->req, req, n);
		if (pthread_create(&j->thread, NULL, job_main, j)) {
			free(j);
			no = oom;
		} else {
			j->next = jobs;
			jobs = j;
			njobs++;
			shrinking |= shrink;
		}
	}
	pthread_mutex_unlock(&jobs_lock);
	if (no) {
		(void)!write(c, no, strlen(no));
		if (fd >= 0)
			close(fd);
		return 0;
	}
	return 2;
}

/* The server stops: jobs end early (a shrink after its step: its target
 * stays in the pool, and the next open goes on with it; a write after its
 * chunk, committing what it wrote), and are joined. */
static void jobs_shutdown(void)
{
	jobs_stopping = 1;
	pthread_mutex_lock(&jobs_lock);
	if (shrinking)
		vbas_pool_shrink_stop(pool);
	jobs_reap(1);
	pthread_mutex_unlock(&jobs_lock);
}

/* One client: read its request (to EOF, bounded, with a timeout), and a
 * descriptor sent with it, run it, answer.  Returns 1 if the connection
 * holds a pin now: the caller keeps it open; 2 if a job took it over. */
static int ctl_serve(int c)
{
	char req[CTL_MAX + 1];
	size_t n = 0;
	int fd = -1;
	struct timeval tv = { .tv_sec = 5 };
	setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	/* To the client's EOF: what does not fit is read and dropped (up to
	 * 64 KiB), so that the answer is not lost to a reset of a socket
	 * closed with unread data. */
	size_t dropped = 0;
	for (;;) {
		char sink[4096];
		int full = n == sizeof(req);
		union { struct cmsghdr h; char b[CMSG_SPACE(4 * sizeof(int))]; } cm;
		struct iovec iov = { .iov_base = full ? sink : req + n,
				     .iov_len = full ? sizeof(sink) : sizeof(req) - n };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
				     .msg_controllen = sizeof(cm.b) };
		ssize_t k = recvmsg(c, &mh, MSG_CMSG_CLOEXEC);
		if (k < 0 && errno == EINTR)
			continue;
		/* Descriptors: the first one kept, any other closed. */
		for (struct cmsghdr *h = k >= 0 ? CMSG_FIRSTHDR(&mh) : NULL; h;
		     h = CMSG_NXTHDR(&mh, h)) {
			if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
				continue;
			size_t nfd = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < nfd; i++) {
				int d;
				memcpy(&d, CMSG_DATA(h) + i * sizeof(int), sizeof(int));
				if (fd < 0)
					fd = d;
				else
					close(d);
			}
		}
		if (k <= 0)
			break;
		if (full && (dropped += (size_t)k) > (64u << 10))
			break;
		if (!full)
			n += (size_t)k;
	}
	static const char *const long_ones[] = { "shrink", "write", "reflink", "dedupe",
						 "unshare", "discard" };
	for (size_t i = 0; n < sizeof(req) && i < sizeof(long_ones) / sizeof(long_ones[0]); i++)
		if (n > strlen(long_ones[i]) && !memcmp(req, long_ones[i], strlen(long_ones[i]) + 1))
			return job_start(c, fd, req, n);
	return ctl_answer(c, fd, req, n);
}

/* Run request REQ (N bytes) of connection C, with descriptor FD (-1:
 * none; closed here), and answer it; 1 if C holds a pin now. */
static int ctl_answer(int c, int fd, char *req, size_t n)
{
	char *reply = NULL;
	size_t rl = 0;
	FILE *out = open_memstream(&reply, &rl);
	if (!out) {
		static const char oom[] = "12\tthe server is out of memory";
		(void)!write(c, oom, sizeof(oom) - 1);
		if (fd >= 0)
			close(fd);
		return 0;
	}
	int pinned = 0;
	if (n > CTL_MAX)
		fprintf(out, "%d\trequest longer than %d bytes", EPROTO, CTL_MAX);
	else
		pinned = ctl_run(req, n, c, fd, out);
	if (fd >= 0)
		close(fd);
	if (fclose(out)) {
		static const char oom[] = "12\tthe server ran out of memory for its answer "
					  "(the request may have been carried out)";
		free(reply);
		(void)!write(c, oom, sizeof(oom) - 1);
		if (pinned)
			vbas_pool_unpin(pool);
		return 0;
	}
	size_t off = 0;
	while (off < rl) {
		ssize_t k = write(c, reply + off, rl - off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		off += (size_t)k;
	}
	free(reply);
	if (pinned && off < rl) {
		vbas_pool_unpin(pool);      /* the client did not hear of it */
		pinned = 0;
	}
	return pinned;
}

static void unpin(int i)
{
	close(pin_fd[i]);
	pin_fd[i] = pin_fd[--npins];
	vbas_pool_unpin(pool);
	nbdkit_debug("vbas: control: pin released (%d held)", npins);
}

static void *ctl_main(void *arg)
{
	(void)arg;
	for (;;) {
		struct pollfd pf[2 + CTL_MAX_PINS] = {
			{ .fd = ctl_fd, .events = POLLIN },
			{ .fd = ctl_stop[0], .events = POLLIN } };
		/* A pin's client has shut its side down after the request:
		 * only its close (POLLHUP) or an error is waited for. */
		for (int i = 0; i < npins; i++)
			pf[2 + i] = (struct pollfd){ .fd = pin_fd[i], .events = 0 };
		if (poll(pf, 2 + (nfds_t)npins, -1) < 0) {
			if (errno == EINTR)
				continue;
			nbdkit_error("control: poll: %m");
			break;
		}
		if (pf[1].revents)
			break;
		for (int i = npins - 1; i >= 0; i--)
			if (pf[2 + i].revents)
				unpin(i);
		if (!(pf[0].revents & POLLIN))
			continue;
		int c = accept4(ctl_fd, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0)
			continue;
		int k = ctl_serve(c);
		if (k == 1)
			pin_fd[npins++] = c;
		else if (!k)
			close(c);
	}
	while (npins)
		unpin(npins - 1);
	return NULL;
}

/* In the process that serves (after nbdkit's fork): listen.  A failure is
 * logged and serving goes on without it; the CLI then says the pool is in
 * use. */
static int vbas_nbd_after_fork(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (!pool || pool_rdonly)
		return 0;
	if (ev_start(pool, pool_path))
		return -1;
	if (vbas_ctl_path(pool_path, ctl_path, sizeof(ctl_path))) {
		nbdkit_error("control: no socket path for %s", pool_path);
		return 0;
	}
	char dir[sizeof(ctl_path)];
	snprintf(dir, sizeof(dir), "%s", ctl_path);
	*strrchr(dir, '/') = 0;
	if (mkdir(dir, 0700) && errno != EEXIST) {
		nbdkit_error("control: %s: %m", dir);
		return 0;
	}
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", ctl_path);
	/* We hold the pool's lock: a socket left there is stale. */
	unlink(ctl_path);
	ctl_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	mode_t old = umask(077);
	int r = ctl_fd < 0 ? -1 : bind(ctl_fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r || listen(ctl_fd, 8) || pipe2(ctl_stop, O_CLOEXEC) ||
	    pthread_create(&ctl_thread, NULL, ctl_main, NULL)) {
		nbdkit_error("control: %s: %m", ctl_path);
		if (ctl_fd >= 0)
			close(ctl_fd);
		ctl_fd = -1;
		unlink(ctl_path);
		return 0;
	}
	ctl_running = 1;
	nbdkit_debug("vbas: control socket %s", ctl_path);
	return 0;
}

static void ctl_shutdown(void)
{
	if (!ctl_running)
		return;
	ctl_running = 0;
	if (write(ctl_stop[1], "x", 1) != 1)
		nbdkit_error("control: stopping: %m");
	pthread_join(ctl_thread, NULL);
	jobs_shutdown();
	close(ctl_fd);
	close(ctl_stop[0]);
	close(ctl_stop[1]);
	ctl_fd = ctl_stop[0] = ctl_stop[1] = -1;
	unlink(ctl_path);
}

/* Commit and close.  Volumes of connections that nbdkit ended without
 * .close are closed here: .unload runs with every other callback locked
 * out, and nbdkit calls none for them afterwards. */
static void close_pool(void)
{
	ctl_shutdown();
	ev_stop();
	if (!pool)
		return;
	pthread_mutex_lock(&handles_lock);
	while (handles) {
		struct handle *h = handles;
		handles = h->next;
		nbdkit_debug("vbas: closing export '%s' of a connection nbdkit did not close",
			     h->name);
		vbas_vol_close(h->vol);
		free(h);
	}
	pthread_mutex_unlock(&handles_lock);
	/* vbas_close commits, but a pool that a failed change left read-only
	 * closes without a word: ask for the commit first, so that a final
	 * commit that cannot happen is said, and nbdkit's exit status says it. */
	int r = vbas_flush(pool);
	if (r) {
		nbdkit_error("%s: final commit: %s", pool_path, vbas_errmsg());
		final_commit_failed = 1;
	}
	if (vbas_close(pool) && !r) {
		nbdkit_error("%s: closing the pool: %s", pool_path, vbas_errmsg());
		final_commit_failed = 1;
	}
	if (!final_commit_failed)
		nbdkit_debug("vbas: %s committed and closed", pool_path);
	pool = NULL;
}

/* After the last connection: commit.  Connections that nbdkit is ending
 * may still be in a callback here, so the pool is closed in .unload unless
 * no volume is open. */
static void vbas_nbd_cleanup(void)
{
	if (!pool)
		return;
	pthread_mutex_lock(&handles_lock);
	int busy = handles != NULL;
	pthread_mutex_unlock(&handles_lock);
	if (!busy) {
		close_pool();
		return;
	}
	int r = vbas_flush(pool);
	if (r)
		nbdkit_error("%s: commit: %s", pool_path, vbas_errmsg());
	else
		nbdkit_debug("vbas: %s committed", pool_path);
}

/* The last callback: nbdkit exits 0 after it whatever it returns, so a
 * failed final commit ends the process with status 1 here.  What nbdkit
 * has left to do is free its memory and, when it made them (-U -), remove
 * its temporary socket and directory; vbas serve removes its own socket. */
static void vbas_nbd_unload(void)
{
	close_pool();
	if (final_commit_failed)
		_exit(EXIT_FAILURE);
}

static void vbas_nbd_dump_plugin(void)
{
	printf("vbas_version=%s\n", VBAS_VERSION_STRING);
}

/* ---- Exports ---------------------------------------------------------------- */

struct names {
	struct nbdkit_exports *exports;   /* list_exports: add each volume */
	int n;                            /* volumes seen */
	char first[VBAS_NAME_MAX + 1];    /* the first volume's name */
	char *list;                       /* "a, b, c" for messages */
	size_t len;
};

static int names_cb(const struct vbas_vol_info *v, void *arg)
{
	struct names *nm = arg;
	if (nm->exports) {
		const char *desc = (v->flags & VBAS_VOL_READONLY) ? "vbas snapshot (read-only)"
								  : "vbas volume";
		/* A name nbdkit cannot send (not UTF-8) is left out of the
		 * list; the client may still ask for it. */
		if (nbdkit_add_export(nm->exports, v->name, desc) < 0)
			nbdkit_debug("vbas: volume '%s' left out of the export list", v->name);
	}
	if (nm->n == 0)
		snprintf(nm->first, sizeof(nm->first), "%s", v->name);
	if (nm->n < MAX_NAMES) {
		size_t l = strlen(v->name);
		char *p = realloc(nm->list, nm->len + l + 3);
		if (!p)
			return -ENOMEM;
		nm->list = p;
		if (nm->len) {
			memcpy(p + nm->len, ", ", 2);
			nm->len += 2;
		}
		memcpy(p + nm->len, v->name, l + 1);
		nm->len += l;
	} else if (nm->n == MAX_NAMES) {
		char *p = realloc(nm->list, nm->len + 6);
		if (!p)
			return -ENOMEM;
		nm->list = p;
		memcpy(p + nm->len, ", ...", 6);
		nm->len += 5;
	}
	nm->n++;
	return 0;
}

static int walk_names(struct names *nm)
{
	int r = vbas_vol_list(pool, names_cb, nm);
	if (r) {
		const char *m = vbas_errmsg();
		nbdkit_error("%s: listing the volumes: %s", pool_path, m && *m ? m : strerror(-r));
		nbdkit_set_error(nbd_errno(r));
		free(nm->list);
		nm->list = NULL;
		return -1;
	}
	return 0;
}

static int vbas_nbd_list_exports(int readonly, int is_tls, struct nbdkit_exports *exports)
{
	struct names nm = { .exports = exports };
	(void)readonly;
	(void)is_tls;
	if (walk_names(&nm))
		return -1;
	free(nm.list);
	return 0;
}

/* default_export= names no volume: said (with the names there are), 1. */
static int default_missing(void)
{
	struct vbas_vol_info info;
	struct names nm = { 0 };
	char name[VBAS_NAME_MAX + 1];
	pthread_mutex_lock(&default_lock);
	snprintf(name, sizeof(name), "%s", default_name);
	pthread_mutex_unlock(&default_lock);
	int r = vbas_vol_stat(pool, name, &info);
	if (r != -ENOENT && r != -EINVAL)
		return 0;      /* there (or another error, which .open will meet) */
	if (!walk_names(&nm)) {
		nbdkit_error("default_export=%s: the pool has no such volume (%s%s)", name,
			     nm.n ? "volumes: " : "it has no volumes", nm.n ? nm.list : "");
		free(nm.list);
	}
	return 1;
}

/* The default export (the empty name): default_export=, else the pool's
 * only volume; with none or several, "" stays, and .open says which names
 * there are. */
static const char *vbas_nbd_default_export(int readonly, int is_tls)
{
	struct names nm = { 0 };
	const char *def = NULL;
	(void)readonly;
	(void)is_tls;
	pthread_mutex_lock(&default_lock);
	if (*default_name)
		def = nbdkit_strdup_intern(default_name);
	pthread_mutex_unlock(&default_lock);
	if (def)
		return def;
	if (walk_names(&nm))
		return NULL;
	free(nm.list);
	return nm.n == 1 ? nbdkit_strdup_intern(nm.first) : "";
}

static void *vbas_nbd_open(int readonly)
{
	const char *name = nbdkit_export_name();
	struct vbas_vol_info info;
	struct handle *h;
	int r;

	if (!name)
		return NULL;
	if (!*name) {
		struct names nm = { 0 };
		if (walk_names(&nm))
			return NULL;
		if (nm.n == 0)
			nbdkit_error("no export name given, and the pool %s has no volumes to serve "
				     "(create one with 'vbas create')", pool_path);
		else
			nbdkit_error("no export name given, and the pool has %d volumes: ask for "
				     "one by name (%s)", nm.n, nm.list);
		free(nm.list);
		nbdkit_set_error(ENOENT);
		return NULL;
	}
	h = calloc(1, sizeof(*h));
	if (!h) {
		nbdkit_error("calloc: %m");
		return NULL;
	}
	r = vbas_vol_open(pool, name, &h->vol);
	if (r == -ENOENT || r == -EINVAL) {
		struct names nm = { 0 };
		if (!walk_names(&nm)) {
			pthread_mutex_lock(&default_lock);
			int def = !strcmp(name, default_name);
			pthread_mutex_unlock(&default_lock);
			nbdkit_error("unknown export '%s': the pool has no such volume (%s%s)%s", name,
				     nm.n ? "volumes: " : "it has no volumes", nm.n ? nm.list : "",
				     def ? " (the default export)" : "");
			free(nm.list);
		}
		nbdkit_set_error(ENOENT);
		free(h);
		return NULL;
	}
	if (!r) {
		r = vbas_vol_info(h->vol, &info);
		if (r)
			vbas_vol_close(h->vol);
	}
	if (r) {
		nbdkit_error("export '%s': %s", name, vbas_errmsg());
		nbdkit_set_error(nbd_errno(r));
		free(h);
		return NULL;
	}
	snprintf(h->name, sizeof(h->name), "%s", info.name);
	h->size = info.size;
	h->readonly = readonly || pool_rdonly || (info.flags & VBAS_VOL_READONLY);
	pthread_mutex_lock(&handles_lock);
	h->next = handles;
	if (handles)
		handles->prev = h;
	handles = h;
	pthread_mutex_unlock(&handles_lock);
	nbdkit_debug("vbas: opened export '%s' (%" PRIu64 " bytes%s)", h->name, h->size,
		     h->readonly ? ", read-only" : "");
	return h;
}

static void vbas_nbd_close(void *handle)
{
	struct handle *h = handle;
	pthread_mutex_lock(&handles_lock);
	if (h->prev)
		h->prev->next = h->next;
	else
		handles = h->next;
	if (h->next)
		h->next->prev = h->prev;
	pthread_mutex_unlock(&handles_lock);
	int r = vbas_vol_close(h->vol);
	if (r)
		nbdkit_error("%s: close: %s", h->name, vbas_errmsg());
	free(h);
}

static const char *vbas_nbd_export_description(void *handle)
{
	struct handle *h = handle;
	return nbdkit_printf_intern("vbas %s '%s' of %s", h->readonly ? "read-only volume" : "volume",
				    h->name, pool_path);
}

static int64_t vbas_nbd_get_size(void *handle)
{
	struct handle *h = handle;
	return (int64_t)h->size;
}

static int vbas_nbd_block_size(void *handle, uint32_t *minimum, uint32_t *preferred,
			       uint32_t *maximum)
{
	(void)handle;
	*minimum = 1;                 /* any alignment works */
	*preferred = pool_bs > 4096 ? pool_bs : 4096;   /* no read-modify-write */
	*maximum = MAX_REQUEST;
	return 0;
}

static int vbas_nbd_can_write(void *handle)
{
	struct handle *h = handle;
	return !h->readonly;
}

static int vbas_nbd_can_true(void *handle)
{
	(void)handle;
	return 1;
}

static int vbas_nbd_can_fua(void *handle)
{
	(void)handle;
	return NBDKIT_FUA_NATIVE;
}

static int vbas_nbd_can_cache(void *handle)
{
	(void)handle;
	return NBDKIT_CACHE_NONE;
}

/* ---- Data ------------------------------------------------------------------- */

static int vbas_nbd_pread(void *handle, void *buf, uint32_t count, uint64_t offset,
			  uint32_t flags)
{
	struct handle *h = handle;
	(void)flags;
	int r = vbas_pread(h->vol, buf, count, offset);
	return r ? io_fail(h, "read", count, offset, r) : 0;
}

static int vbas_nbd_pwrite(void *handle, const void *buf, uint32_t count, uint64_t offset,
			   uint32_t flags)
{
	struct handle *h = handle;
	int r, tries = 0;
	/* Full: with autoextend=, grow the pool and try again. */
	do
		r = vbas_pwrite(h->vol, buf, count, offset, (flags & NBDKIT_FLAG_FUA) ? VBAS_IO_FUA : 0);
	while (r == -ENOSPC && tries++ < 16 && ev_grow_for_write());
	return r ? io_fail(h, "write", count, offset, r) : 0;
}

/* Flush = commit: every write any connection has finished is durable,
 * which is what multi-conn needs (there is no per-connection cache). */
static int vbas_nbd_flush(void *handle, uint32_t flags)
{
	struct handle *h = handle;
	(void)flags;
	int r = vbas_flush(pool);
	return r ? io_fail(h, "flush", 0, 0, r) : 0;
}

/* Trim: unmap the whole blocks inside the range (the library discards
 * whole blocks; NBD lets a trim leave any part as it was), so that the
 * space returns to the pool. */
static int vbas_nbd_trim(void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
	struct handle *h = handle;
	uint64_t bs = pool_bs, start = (offset + bs - 1) / bs * bs, end = (offset + count) / bs * bs;
	unsigned f = (flags & NBDKIT_FLAG_FUA) ? VBAS_IO_FUA : 0;
	int r;
	if (start < end)
		r = vbas_discard(h->vol, start, end - start, f);
	else
		r = f ? vbas_flush(pool) : 0;
	return r ? io_fail(h, "trim", count, offset, r) : 0;
}

/* Zero: with NBDKIT_FLAG_MAY_TRIM, unmap whole blocks (space returns);
 * without it (NBD_CMD_FLAG_NO_HOLE: a client's fallocate), reserve the
 * range (vbas_vol_reserve) and zero it, so that later writes there cannot
 * fail for want of space. */
static int vbas_nbd_zero(void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
	struct handle *h = handle;
	unsigned f = (flags & NBDKIT_FLAG_FUA) ? VBAS_IO_FUA : 0;
	if (!(flags & NBDKIT_FLAG_MAY_TRIM)) {
		/* Writing zeros is no faster than the client's write. */
		if (flags & NBDKIT_FLAG_FAST_ZERO) {
			nbdkit_set_error(ENOTSUP);
			return -1;
		}
		f |= VBAS_IO_NO_PUNCH;
	}
	int r, tries = 0;
	do
		r = vbas_write_zeroes(h->vol, offset, count, f);
	while (r == -ENOSPC && tries++ < 16 && ev_grow_for_write());
	return r ? io_fail(h, "write zeroes", count, offset, r) : 0;
}

struct extents_walk {
	struct nbdkit_extents *ex;
	uint64_t pos;             /* everything before is reported */
	unsigned n;
	int one;                  /* NBDKIT_FLAG_REQ_ONE */
	int failed;
};

static int extents_cb(const struct vbas_extent *e, void *arg)
{
	struct extents_walk *w = arg;
	if (e->offset > w->pos &&
	    nbdkit_add_extent(w->ex, w->pos, e->offset - w->pos,
			      NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO) < 0)
		goto fail;
	if (nbdkit_add_extent(w->ex, e->offset, e->length, 0) < 0)
		goto fail;
	w->pos = e->offset + e->length;
	/* Enough for one reply: the client asks again from where we stop. */
	return (w->one || ++w->n >= MAX_EXTENTS) ? 1 : 0;
fail:
	w->failed = 1;
	return 1;
}

/* Block status: mapped extents are data, the gaps between them holes that
 * read as zeros.  (Blocks written with zeros are data: the library has no
 * record of what a block holds.) */
static int vbas_nbd_extents(void *handle, uint32_t count, uint64_t offset, uint32_t flags,
			    struct nbdkit_extents *extents)
{
	struct handle *h = handle;
	struct extents_walk w = { .ex = extents, .pos = offset, .one = !!(flags & NBDKIT_FLAG_REQ_ONE) };
	int r = vbas_extents(h->vol, offset, count, extents_cb, &w);
	if (r < 0)
		return io_fail(h, "block status", count, offset, r);
	if (w.failed)
		return -1;    /* nbdkit_add_extent has reported it */
	if (r == 0 && w.pos < offset + count &&
	    nbdkit_add_extent(extents, w.pos, offset + count - w.pos,
			      NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO) < 0)
		return -1;
	return 0;
}

static struct nbdkit_plugin plugin = {
	.name = "vbas",
	.longname = "vbas: thin volumes of a vbas pool",
	.version = VBAS_VERSION_STRING,
	.description = "Serves every volume of a vbas pool as an NBD export named after it.\n"
		       "Snapshots are read-only; flush commits the pool.",
	.config = vbas_nbd_config,
	.config_complete = vbas_nbd_config_complete,
	.config_help = "pool=FILE      (required) the vbas pool (a file or block device)\n"
		       "cache=SIZE     metadata cache size (default 64M)\n"
		       "readonly=BOOL  open the pool read-only (use with nbdkit -r)\n"
		       "pinned=GEN     with readonly=true: a pool another server serves, at\n"
		       "               its last commit, which the caller holds a pin of\n"
		       "direct=BOOL    O_DIRECT I/O to the pool (default true); false: through\n"
		       "               the page cache, written back in the background (flush\n"
		       "               still commits and syncs)\n"
		       "events=FILE    append a JSON line per space event to FILE\n"
		       "on_event=CMD   run CMD with /bin/sh -c per event ($VBAS_EVENT,\n"
		       "               $VBAS_EVENT_JSON, $VBAS_POOL)\n"
		       "autoextend=SIZE  grow a pool file by SIZE at its low-water mark and\n"
		       "               when a write finds it full (if the host has room)\n"
		       "default_export=NAME  the volume a client asking for no name gets\n"
		       "               (default: the only volume)",
	.magic_config_key = "pool",
	.get_ready = vbas_nbd_get_ready,
	.after_fork = vbas_nbd_after_fork,
	.cleanup = vbas_nbd_cleanup,
	.unload = vbas_nbd_unload,
	.dump_plugin = vbas_nbd_dump_plugin,
	.list_exports = vbas_nbd_list_exports,
	.default_export = vbas_nbd_default_export,
	.open = vbas_nbd_open,
	.close = vbas_nbd_close,
	.export_description = vbas_nbd_export_description,
	.get_size = vbas_nbd_get_size,
	.block_size = vbas_nbd_block_size,
	.can_write = vbas_nbd_can_write,
	.can_flush = vbas_nbd_can_true,
	.can_trim = vbas_nbd_can_true,
	.can_zero = vbas_nbd_can_true,
	.can_fast_zero = vbas_nbd_can_true,
	.can_extents = vbas_nbd_can_true,
	.can_fua = vbas_nbd_can_fua,
	.can_multi_conn = vbas_nbd_can_true,
	.can_cache = vbas_nbd_can_cache,
	.pread = vbas_nbd_pread,
	.pwrite = vbas_nbd_pwrite,
	.flush = vbas_nbd_flush,
	.trim = vbas_nbd_trim,
	.zero = vbas_nbd_zero,
	.extents = vbas_nbd_extents,
};

NBDKIT_REGISTER_PLUGIN(plugin)
