/* vbas — the command-line tool: pools and volumes in a file or device.
 *
 *   vbas [--cache SIZE] COMMAND [ARGS...]       (see usage() and cmds[])
 *
 * Each command parses its own options (getopt_long, options may come
 * before or after the positional arguments), opens the pool, does one
 * thing, and closes (commits) it.  Output goes to stdout; errors go to
 * stderr as "vbas: COMMAND: WHAT: REASON".  Exit status: 0 success,
 * 1 runtime error (or problems found by check), 2 usage error.
 */
#define _GNU_SOURCE
#include "vbas.h"
#include "copy.h"
#include "ctl.h"
#include "json.h"
#include "table.h"

#include <blkid.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <locale.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* nbdkit's plugin directory (the Makefile passes pkg-config's answer). */
#ifndef VBAS_NBDKIT_PLUGINDIR
#define VBAS_NBDKIT_PLUGINDIR ""
#endif
#define PLUGIN_FILE   "nbdkit-vbas-plugin.so"

#define EXIT_RUNTIME 1
#define EXIT_USAGE   2
#define MAX_POS      6                /* positional arguments, at most */

/* ---- Options ----------------------------------------------------------- */

enum {
	O_SIZE = 1 << 0,
	O_BLOCK_SIZE = 1 << 1,
	O_FORCE = 1 << 2,
	O_OFFSET = 1 << 3,
	O_LENGTH = 1 << 4,
	O_JSON = 1 << 5,
	O_CACHE = 1 << 6,
	O_HELP = 1 << 7,
	O_SOCKET = 1 << 8,
	O_PORT = 1 << 9,
	O_READONLY = 1 << 10,
	O_BIND = 1 << 11,
	O_BUFFERED = 1 << 12,
	O_YES = 1 << 13,
	O_DRY_RUN = 1 << 14,
	O_NOMODIFY = 1 << 15,
	O_RESERVE = 1 << 16,
	O_NO_RESERVE = 1 << 17,
	O_LOW_WATER = 1 << 18,
	O_FLOOR = 1 << 19,
	O_EXPENDABLE = 1 << 20,
	O_ON_EVENT = 1 << 21,
	O_AUTOEXTEND = 1 << 22,
	O_START = 1 << 23,
	O_PHYSICAL = 1 << 24,
	O_SUMMARY = 1 << 25,
	O_NO_RMAP = 1 << 26,
	O_RMAP = 1 << 27,
	O_CANCEL = 1 << 28,
	/* serve's TLS and default export (past bit 31: seen is 64 bits) */
	O_TLS = 1ull << 29,
	O_TLS_PSK = 1ull << 30,
	O_TLS_CERTS = 1ull << 31,
	O_TLS_VERIFY = 1ull << 32,
	O_DEFAULT_EXPORT = 1ull << 33,
};
/* (Past 32 bits: seen and opts are 64-bit.) */
#define O_FORMAT      (1ull << 40)
#define O_PROGRESS    (1ull << 41)
#define O_NO_PROGRESS (1ull << 42)
#define O_OUTPUT      (1ull << 43)
#define O_NOHEADINGS  (1ull << 44)
#define O_RAW         (1ull << 45)
#define O_BYTES       (1ull << 46)
#define O_WRITABLE    (1ull << 47)
/* The options of a command that prints a table (table.h). */
#define O_TABLE       (O_JSON | O_OUTPUT | O_NOHEADINGS | O_RAW | O_BYTES)

/* Long-only options get codes above the char range. */
enum { OPT_JSON = 256, OPT_CACHE, OPT_VERSION, OPT_SOCKET, OPT_PORT, OPT_READONLY, OPT_BIND,
       OPT_BUFFERED, OPT_DRY_RUN, OPT_RESERVE, OPT_NO_RESERVE, OPT_LOW_WATER, OPT_FLOOR,
       OPT_EXPENDABLE, OPT_ON_EVENT, OPT_AUTOEXTEND, OPT_START, OPT_PHYSICAL, OPT_SUMMARY,
       OPT_NO_RMAP, OPT_RMAP, OPT_CANCEL,
       OPT_TLS, OPT_TLS_PSK, OPT_TLS_CERTS, OPT_TLS_VERIFY, OPT_DEFAULT_EXPORT,
       OPT_FORMAT, OPT_NO_PROGRESS, OPT_OUTPUT, OPT_NOHEADINGS, OPT_RAW, OPT_BYTES,
       OPT_WRITABLE };

static const struct option long_opts[] = {
	{ "size", required_argument, NULL, 's' },
	{ "block-size", required_argument, NULL, 'b' },
	{ "force", no_argument, NULL, 'f' },
	{ "offset", required_argument, NULL, 'o' },
	{ "length", required_argument, NULL, 'l' },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "cache", required_argument, NULL, OPT_CACHE },
	{ "socket", required_argument, NULL, OPT_SOCKET },
	{ "port", required_argument, NULL, OPT_PORT },
	{ "readonly", no_argument, NULL, OPT_READONLY },
	{ "bind", required_argument, NULL, OPT_BIND },
	{ "buffered", no_argument, NULL, OPT_BUFFERED },
	{ "yes", no_argument, NULL, 'y' },
	{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
	{ "reserve", no_argument, NULL, OPT_RESERVE },
	{ "no-reserve", no_argument, NULL, OPT_NO_RESERVE },
	{ "low-water", required_argument, NULL, OPT_LOW_WATER },
	{ "expendable-floor", required_argument, NULL, OPT_FLOOR },
	{ "expendable", no_argument, NULL, OPT_EXPENDABLE },
	{ "on-event", required_argument, NULL, OPT_ON_EVENT },
	{ "autoextend", required_argument, NULL, OPT_AUTOEXTEND },
	{ "start", required_argument, NULL, OPT_START },
	{ "physical", required_argument, NULL, OPT_PHYSICAL },
	{ "summary", no_argument, NULL, OPT_SUMMARY },
	{ "no-rmap", no_argument, NULL, OPT_NO_RMAP },
	{ "rmap", no_argument, NULL, OPT_RMAP },
	{ "cancel", no_argument, NULL, OPT_CANCEL },
	{ "format", required_argument, NULL, OPT_FORMAT },
	{ "progress", no_argument, NULL, 'p' },
	{ "no-progress", no_argument, NULL, OPT_NO_PROGRESS },
	{ "output", required_argument, NULL, OPT_OUTPUT },
	{ "noheadings", no_argument, NULL, OPT_NOHEADINGS },
	{ "raw", no_argument, NULL, OPT_RAW },
	{ "bytes", no_argument, NULL, OPT_BYTES },
	{ "writable", no_argument, NULL, OPT_WRITABLE },
	{ "tls", required_argument, NULL, OPT_TLS },
	{ "tls-psk", required_argument, NULL, OPT_TLS_PSK },
	{ "tls-certificates", required_argument, NULL, OPT_TLS_CERTS },
	{ "tls-verify-peer", no_argument, NULL, OPT_TLS_VERIFY },
	{ "default-export", required_argument, NULL, OPT_DEFAULT_EXPORT },
	{ "no-modify", no_argument, NULL, 'n' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* What a command was given, after parsing. */
struct args {
	const char *cmd;              /* the command's name, for messages */
	uint64_t seen;                /* O_* given */
	uint64_t size, block_size, offset, length, cache, autoextend, start, physical;
	int size_plus;                /* --size +SIZE: relative (grow) */
	int size_minus;               /* --size -SIZE: relative (shrink) */
	const char *socket, *port, *bind;   /* serve's string options */
	const char *low_water, *floor, *on_event, *format, *output;
	const char *tls, *tls_psk, *tls_certs, *default_export;   /* serve's */
	int npos;
	char *pos[MAX_POS];
};

struct cmd {
	const char *name;
	int (*fn)(const struct args *a);
	uint64_t opts;                /* O_* accepted (O_HELP always) */
	int min_pos, max_pos;
	const char *synopsis;         /* after "vbas NAME " */
	const char *summary;          /* one line, for vbas --help */
	const char *details;          /* the rest of vbas help NAME */
	const char *argnames;         /* positional names for messages, or NULL
	                                 for "POOL NAME FILE" */
};

/* ---- Messages ----------------------------------------------------------- */

/* The last runtime error, for the JSON error object of a --json command
 * that fails before it prints its answer (json_error). */
static int last_errno;                /* 0: not known */
static char last_error[1024];         /* "WHAT: REASON" */
static int json_started;              /* the command printed its JSON */

static void usage_hint(const char *cmd)
{
	if (cmd)
		fprintf(stderr, "Try 'vbas %s --help' for more information.\n", cmd);
	else
		fprintf(stderr, "Try 'vbas --help' for more information.\n");
}

/* A usage error: "vbas: CMD: WHAT: REASON" and a hint.  Returns 2. */
static int usage_err(const char *cmd, const char *what, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int usage_err(const char *cmd, const char *what, const char *fmt, ...)
{
	va_list ap;
	if (cmd)
		fprintf(stderr, "vbas: %s: %s: ", cmd, what);
	else
		fprintf(stderr, "vbas: %s: ", what);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	usage_hint(cmd);
	return EXIT_USAGE;
}

/* A runtime error of the tool's own: "vbas: CMD: WHAT: REASON".  Returns 1. */
static int fail(const char *cmd, const char *what, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(const char *cmd, const char *what, const char *fmt, ...)
{
	va_list ap;
	int l = snprintf(last_error, sizeof(last_error), "%s: ", what);
	va_start(ap, fmt);
	if (l >= 0 && (size_t)l < sizeof(last_error))
		vsnprintf(last_error + l, sizeof(last_error) - (size_t)l, fmt, ap);
	va_end(ap);
	fprintf(stderr, "vbas: %s: %s\n", cmd, last_error);
	return EXIT_RUNTIME;
}

/* A library failure R (negative errno): the library's message for this
 * thread, less a leading "WHAT: " or "open WHAT: " that would repeat
 * WHAT, else strerror.  Call right after the failing call: the next one
 * clears the message.  Returns 1. */
static int lib_fail(const char *cmd, const char *what, int r)
{
	const char *m = vbas_errmsg();
	size_t wl = strlen(what);

	last_errno = -r;
	if (!m || !*m)
		return fail(cmd, what, "%s", strerror(-r));
	if (!strncmp(m, "open ", 5) && !strncmp(m + 5, what, wl) && !strncmp(m + 5 + wl, ": ", 2))
		m += 5 + wl + 2;
	else if (!strncmp(m, what, wl) && !strncmp(m + wl, ": ", 2))
		m += wl + 2;
	/* Nor the command's name ("vbas: write: POOL: write: ..."). */
	if (!strncmp(m, cmd, strlen(cmd)) && !strncmp(m + strlen(cmd), ": ", 2))
		m += strlen(cmd) + 2;
	/* The space messages name counts of blocks, not the condition. */
	if (r == -ENOSPC && !strstr(m, "full") && !strstr(m, strerror(ENOSPC)))
		return fail(cmd, what, "%s (%s)", m, strerror(ENOSPC));
	return fail(cmd, what, "%s", m);
}

/* ---- Sizes -------------------------------------------------------------- */

/* Parse a byte count: digits, then optionally K, M, G, T, P or E (any
 * case, powers of 1024), optionally followed by "iB" or "B".  On failure
 * writes why into WHY. */
static int parse_size(const char *s, uint64_t *out, char *why, size_t whylen)
{
	static const char units[] = "KMGTPE";
	uint64_t v = 0;
	const char *p = s;

	if (!*s) {
		snprintf(why, whylen, "invalid size '': empty");
		return -1;
	}
	if (*p < '0' || *p > '9') {
		snprintf(why, whylen, "invalid size '%s': not a number%s", s,
			 *p == '-' ? " (negative)" : "");
		return -1;
	}
	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10) {
			snprintf(why, whylen, "invalid size '%s': too large (the limit is 2^64-1)", s);
			return -1;
		}
		v = v * 10 + d;
	}
	/* A decimal fraction of a unit (1.5G), if it comes to whole bytes. */
	uint64_t frac = 0, den = 1;
	if (*p == '.' && p[1] >= '0' && p[1] <= '9') {
		for (p++; *p >= '0' && *p <= '9'; p++) {
			if (den >= 1000000000000000000ull) {
				snprintf(why, whylen, "invalid size '%s': too many decimals", s);
				return -1;
			}
			frac = frac * 10 + (uint64_t)(*p - '0');
			den *= 10;
		}
		if (!*p) {
			snprintf(why, whylen, "invalid size '%s': a fraction needs a unit (K, M, G, "
				 "T, P or E)", s);
			return -1;
		}
	}
	if (*p) {
		const char *u = memchr(units, *p >= 'a' && *p <= 'z' ? *p - 32 : *p, sizeof(units) - 1);
		const char *rest = p + 1;
		if (!u || (*rest && strcmp(rest, "iB") && strcmp(rest, "ib") &&
			   strcmp(rest, "B") && strcmp(rest, "b"))) {
			if (*p == '.' || *p == ',')
				snprintf(why, whylen, "invalid size '%s': write a fraction as 1.5G (digits "
					 "after a point, then a unit)", s);
			else
				snprintf(why, whylen, "invalid size '%s': unknown suffix '%s' "
					 "(use K, M, G, T, P or E)", s, p);
			return -1;
		}
		unsigned shift = 10 * (unsigned)(u - units + 1);
		if (v > (UINT64_MAX >> shift)) {
			snprintf(why, whylen, "invalid size '%s': too large (the limit is 2^64-1)", s);
			return -1;
		}
		v <<= shift;
		unsigned __int128 fb = ((unsigned __int128)frac << shift);
		if (fb % den) {
			snprintf(why, whylen, "invalid size '%s': not a whole number of bytes", s);
			return -1;
		}
		uint64_t add = (uint64_t)(fb / den);
		if (add > UINT64_MAX - v) {
			snprintf(why, whylen, "invalid size '%s': too large (the limit is 2^64-1)", s);
			return -1;
		}
		v += add;
	}
	*out = v;
	return 0;
}

/* "1.5 GiB": bytes in binary units, for people. */
/* ---- JSON and text output ------------------------------------------------ */

/* NAME for a terminal: control bytes and backslashes as \xNN / \\. */
static char *text_name(const char *name)
{
	size_t n = strlen(name);
	char *out = malloc(4 * n + 1), *o = out;
	if (!out)
		return NULL;
	for (const unsigned char *s = (const unsigned char *)name; *s; s++) {
		if (*s == '\\') {
			*o++ = '\\';
			*o++ = '\\';
		} else if (*s < 0x20 || *s == 0x7f) {
			o += sprintf(o, "\\x%02x", *s);
		} else {
			*o++ = (char)*s;
		}
	}
	*o = 0;
	return out;
}

/* ---- Pools and volumes ---------------------------------------------------- */

/* ---- Who holds a pool ------------------------------------------------------ */

/* Up to LEN-1 bytes of file PATH into BUF, NUL-terminated; bytes read or -1. */
static ssize_t slurp(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t got = 0;
	if (fd < 0)
		return -1;
	while (got < len - 1) {
		ssize_t n = read(fd, buf + got, len - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	buf[got] = 0;
	return (ssize_t)got;
}

/* PID's command line, arguments joined by spaces, control bytes as '?'. */
static void proc_cmdline(pid_t pid, char *buf, size_t len)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	ssize_t n = slurp(path, buf, len);
	if (n <= 0) {
		buf[0] = 0;
		return;
	}
	while (n > 0 && buf[n - 1] == 0)
		n--;
	for (ssize_t i = 0; i < n; i++)
		if (buf[i] == 0)
			buf[i] = ' ';
		else if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
			buf[i] = '?';
	buf[n] = 0;
}

/* The last path component of the first word of CMDLINE is NAME. */
static int cmd_is(const char *cmdline, const char *name)
{
	size_t w = strcspn(cmdline, " ");
	const char *b = cmdline;
	for (const char *p = cmdline; p < cmdline + w; p++)
		if (*p == '/')
			b = p + 1;
	return (size_t)(cmdline + w - b) == strlen(name) && !strncmp(b, name, strlen(name));
}

static pid_t proc_ppid(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (slurp(path, buf, sizeof(buf)) <= 0)
		return 0;
	const char *p = strrchr(buf, ')');     /* after "pid (comm)" */
	int ppid = 0;
	if (!p || sscanf(p + 1, " %*c %d", &ppid) != 1)
		return 0;
	return (pid_t)ppid;
}

/* The process holding the lock on the pool PATH, or 0 if it cannot be
 * told.  A classic POSIX lock names its holder (F_GETLK); the library's
 * open-file-description lock does not (l_pid is -1), so look for it in
 * /proc/PID/fdinfo: the kernel lists a lock under the descriptor that
 * owns it. */
static pid_t lock_holder(const char *path)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	struct stat st;
	pid_t found = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	if (fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK && fl.l_pid > 0)
		found = fl.l_pid;
	int ok = fstat(fd, &st) == 0;
	close(fd);
	if (found || !ok)
		return found;
	DIR *proc = opendir("/proc");
	struct dirent *de;
	while (proc && !found && (de = readdir(proc))) {
		char *end, dpath[300];
		long pid = strtol(de->d_name, &end, 10);
		if (*end || pid <= 0 || pid == (long)getpid())
			continue;
		snprintf(dpath, sizeof(dpath), "/proc/%ld/fd", pid);
		DIR *fds = opendir(dpath);
		struct dirent *fe;
		while (fds && !found && (fe = readdir(fds))) {
			char fpath[600], info[4096];
			struct stat fst;
			if (fe->d_name[0] == '.')
				continue;
			snprintf(fpath, sizeof(fpath), "%s/%s", dpath, fe->d_name);
			if (stat(fpath, &fst) || fst.st_dev != st.st_dev || fst.st_ino != st.st_ino)
				continue;
			snprintf(fpath, sizeof(fpath), "/proc/%ld/fdinfo/%s", pid, fe->d_name);
			if (slurp(fpath, info, sizeof(info)) > 0 && strstr(info, "\nlock:"))
				found = (pid_t)pid;
		}
		if (fds)
			closedir(fds);
	}
	if (proc)
		closedir(proc);
	return found;
}

/* "in use by ..." for the pool PATH, into BUF; 0 if the holder is known. */
static int holder_text(const char *path, char *buf, size_t len)
{
	char cmd[256], pcmd[256];
	pid_t pid = lock_holder(path);
	if (!pid)
		return -1;
	proc_cmdline(pid, cmd, sizeof(cmd));
	if (cmd_is(cmd, "nbdkit")) {
		pid_t ppid = proc_ppid(pid);
		if (ppid > 1)
			proc_cmdline(ppid, pcmd, sizeof(pcmd));
		if (ppid > 1 && cmd_is(pcmd, "vbas") && strstr(pcmd, " serve"))
			snprintf(buf, len, "pool is in use by 'vbas serve' (pid %d), which serves it "
				 "over NBD through nbdkit (pid %d): stop the server to use it",
				 (int)ppid, (int)pid);
		else
			snprintf(buf, len, "pool is in use by nbdkit (pid %d), which serves it over "
				 "NBD: stop the server to use it", (int)pid);
	} else if (cmd[0]) {
		snprintf(buf, len, "pool is in use by another process: pid %d (%.120s%s)", (int)pid,
			 cmd, strlen(cmd) > 120 ? "..." : "");
	} else {
		snprintf(buf, len, "pool is in use by another process: pid %d", (int)pid);
	}
	return 0;
}

static int open_pool(const struct args *a, unsigned flags, struct vbas_pool **pool)
{
	struct vbas_open_opts o = { .cache_bytes = a->cache, .flags = flags };
	char who[512];
	int r = vbas_open(a->pos[0], &o, pool);
	if (r == -EBUSY && !holder_text(a->pos[0], who, sizeof(who))) {
		last_errno = EBUSY;
		return fail(a->cmd, a->pos[0], "%s", who);
	}
	if (r)
		return lib_fail(a->cmd, a->pos[0], r);
	return 0;
}

/* A served pool read beside its server: the connection that holds the
 * server's pin (docs/nbd.md, "Reading a served pool"), from
 * open_pool_reading to close_pool; -1 if none. */
static int served_pin = -1;

static int ctl_pin(const char *pool, uint64_t *gen, char *msg, size_t mlen, int *err);
static int open_pinned(const struct args *a, uint64_t gen, struct vbas_pool **pool,
		       uint64_t *opened);

/* Open the pool read-only: beside a read-only server (which shares the
 * lock), or, if a server holds it, its last commit under a pin of that
 * server (held in served_pin until close_pool).  *GEN (if GEN is not
 * NULL) is the pinned generation, 0 when not pinned. */
static int open_pool_reading(const struct args *a, struct vbas_pool **pool, uint64_t *gen)
{
	struct vbas_open_opts o = { .cache_bytes = a->cache, .flags = VBAS_OPEN_RDONLY };
	char why[CTL_MAX + 64];
	uint64_t g = 0;
	int err, pin, rc, r = vbas_open(a->pos[0], &o, pool);
	if (gen)
		*gen = 0;
	if (r != -EBUSY)
		return r ? lib_fail(a->cmd, a->pos[0], r) : 0;
	pin = ctl_pin(a->pos[0], &g, why, sizeof(why), &err);
	if (pin == -2) {
		last_errno = err;
		return fail(a->cmd, a->pos[0], "%s (through the server)", why);
	}
	/* No server: says who holds it (or opens it, if the holder has just
	 * let go). */
	if (pin == -1)
		return open_pool(a, VBAS_OPEN_RDONLY, pool);
	rc = open_pinned(a, g, pool, &g);
	if (rc) {
		close(pin);
		return rc;
	}
	served_pin = pin;
	if (gen)
		*gen = g;
	return 0;
}

/* The pin of a served pool read beside its server is still held: the
 * server has not closed the connection (it sends nothing more). */
static int pin_held(int pin)
{
	struct pollfd pf = { .fd = pin, .events = POLLIN };
	return poll(&pf, 1, 0) == 0;
}

/* Close (commit) POOL; the exit status is RC unless closing fails.  A
 * served pool's pin is let go; if it was lost on the way (the server
 * stopped), what was read may be wrong, and that is the exit status. */
static int close_pool(const struct args *a, struct vbas_pool *pool, int rc)
{
	int r = vbas_close(pool);
	if (r) {
		lib_fail(a->cmd, a->pos[0], r);
		rc = rc ? rc : EXIT_RUNTIME;
	}
	if (served_pin >= 0) {
		if (!pin_held(served_pin) && !rc) {
			last_errno = ESTALE;
			rc = fail(a->cmd, a->pos[0], "the server went away while this ran, and "
				  "with it the pin on its last commit: what was read may be wrong; "
				  "run it again");
		}
		close(served_pin);
		served_pin = -1;
	}
	return rc;
}

static int open_or_ask_server(const struct args *a, unsigned flags, const char *const *req,
			      int n, struct vbas_pool **pool, int *rc, char **body);

/* Open the pool for a command on volumes: FLAGS VBAS_OPEN_RDONLY, a
 * served pool is read beside its server (open_pool_reading); else, if REQ
 * is not NULL, a served pool's server is asked to do the command (REQ, N
 * fields): then *POOL is NULL, and *BODY its answer.  Returns the exit
 * status. */
static int open_for(const struct args *a, unsigned flags, const char *const *req, int n,
		    struct vbas_pool **pool, char **body)
{
	int rc;
	*pool = NULL;
	if (flags == VBAS_OPEN_RDONLY)
		return open_pool_reading(a, pool, NULL);
	if (!req)
		return open_pool(a, flags, pool);
	if (open_or_ask_server(a, flags, req, n, pool, &rc, body))
		*pool = NULL;
	return rc;
}

/* Open POOL and volume NAME (pos[0], pos[1]) with its info (open_for: the
 * server may do the command instead, and *POOL is NULL then). */
static int open_vol(const struct args *a, unsigned flags, const char *const *req, int n,
		    char **body, struct vbas_pool **pool, struct vbas_vol **vol,
		    struct vbas_vol_info *info)
{
	int r, rc = open_for(a, flags, req, n, pool, body);
	if (rc || !*pool)
		return rc;
	r = vbas_vol_open(*pool, a->pos[1], vol);
	if (!r) {
		r = vbas_vol_info(*vol, info);
		if (r)
			vbas_vol_close(*vol);
	}
	if (r)
		return close_pool(a, *pool, lib_fail(a->cmd, a->pos[0], r));
	return 0;
}

static int close_vol(const struct args *a, struct vbas_pool *pool, struct vbas_vol *vol, int rc)
{
	vbas_vol_close(vol);
	return close_pool(a, pool, rc);
}

/* ---- Commands ------------------------------------------------------------- */

/* ---- format: what the target holds ------------------------------------- */

#define SAMPLE_EDGE   (1u << 20)      /* bytes read at the start and the end */
#define SAMPLE_PIECE  (64u << 10)     /* bytes read at each spread offset */
#define SAMPLE_SPREAD 64              /* spread offsets */
#define SAMPLE_EXTENTS 256            /* a file's data extents looked at */

/* The signatures libblkid recognises in PATH (file systems, partition
 * tables, LVM, RAID, swap, ...), described in BUF, "; "-separated.
 * Returns how many, or a negative errno. */
static int probe_signatures(const char *path, char *buf, size_t len)
{
	blkid_probe pr = blkid_new_probe_from_filename(path);
	int n = 0, r;
	size_t used = 0;
	buf[0] = 0;
	if (!pr)
		return errno ? -errno : -EIO;
	blkid_probe_enable_superblocks(pr, 1);
	blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_USAGE |
					  BLKID_SUBLKS_LABEL | BLKID_SUBLKS_UUID);
	blkid_probe_enable_partitions(pr, 1);
	blkid_probe_set_partitions_flags(pr, BLKID_PARTS_MAGIC);
	/* Each call goes on from the last match: every signature, as wipefs. */
	while (n < 16 && (r = blkid_do_probe(pr)) == 0) {
		const char *type = NULL, *usage = NULL, *label = NULL, *uuid = NULL;
		char d[400];
		if (!blkid_probe_lookup_value(pr, "TYPE", &type, NULL)) {
			blkid_probe_lookup_value(pr, "USAGE", &usage, NULL);
			blkid_probe_lookup_value(pr, "LABEL", &label, NULL);
			blkid_probe_lookup_value(pr, "UUID", &uuid, NULL);
			snprintf(d, sizeof(d), "%s %s", type,
				 usage && !strcmp(usage, "filesystem") ? "file system" : "signature");
		} else if (!blkid_probe_lookup_value(pr, "PTTYPE", &type, NULL)) {
			blkid_probe_lookup_value(pr, "PTUUID", &uuid, NULL);
			snprintf(d, sizeof(d), "%s partition table", type);
		} else {
			continue;
		}
		size_t dl = strlen(d);
		if (label && *label)
			dl += (size_t)snprintf(d + dl, sizeof(d) - dl, ", label \"%.64s\"", label);
		if (uuid && *uuid && dl < sizeof(d))
			snprintf(d + dl, sizeof(d) - dl, ", UUID %.64s", uuid);
		if (used < len)
			used += (size_t)snprintf(buf + used, len - used, "%s%s", n ? "; " : "", d);
		n++;
	}
	blkid_free_probe(pr);
	return r < 0 && n == 0 ? -EIO : n;
}

/* Whether LEN bytes at OFF in FD hold a non-zero byte (*WHERE: the first).
 * Returns 1, 0, or a negative errno. */
static int nonzero_at(int fd, char *buf, uint64_t off, size_t len, uint64_t *where)
{
	ssize_t n;
	while ((n = pread(fd, buf, len, (off_t)off)) < 0 && errno == EINTR)
		;
	if (n < 0)
		return -errno;
	for (ssize_t i = 0; i < n; i++) {
		if (buf[i]) {
			*where = off + (uint64_t)i;
			return 1;
		}
	}
	return 0;
}

/* Whether FD (SIZE bytes; REG: a regular file) holds data: a non-zero byte
 * in the parts looked at (*WHERE: its offset).  Reading a whole device
 * would take hours, so this samples: the first and last MiB, 64 pieces of
 * 64 KiB spread evenly between, and for a regular file the start of each
 * of its first 256 data extents (SEEK_DATA), so that a sparse file's data
 * anywhere is seen.  Returns 1, 0, or a negative errno. */
static int holds_data(int fd, uint64_t size, int reg, uint64_t *where)
{
	char *buf = malloc(SAMPLE_EDGE);
	int r = 0;
	if (!buf)
		return -ENOMEM;
	uint64_t edge = size < SAMPLE_EDGE ? size : SAMPLE_EDGE;
	r = nonzero_at(fd, buf, 0, (size_t)edge, where);
	if (!r && size > edge)
		r = nonzero_at(fd, buf, size - edge, (size_t)edge, where);
	for (int i = 1; !r && i <= SAMPLE_SPREAD && size > 2 * SAMPLE_EDGE; i++) {
		uint64_t off = size / (SAMPLE_SPREAD + 1) * (uint64_t)i / 4096 * 4096;
		r = nonzero_at(fd, buf, off, SAMPLE_PIECE, where);
	}
	off_t pos = 0;
	for (int i = 0; !r && reg && i < SAMPLE_EXTENTS; i++) {
		off_t d = lseek(fd, pos, SEEK_DATA);
		if (d < 0)
			break;                /* ENXIO: no data past POS */
		r = nonzero_at(fd, buf, (uint64_t)d, SAMPLE_PIECE, where);
		off_t h = lseek(fd, d, SEEK_HOLE);
		if (h <= d)
			break;
		pos = h;
	}
	free(buf);
	return r;
}

/* Whether FD starts like a vbas pool: a superblock's magic (bytes 4-7) in slot 0, or
 * in slot 1 for any block size. */
static int has_pool_magic(int fd)
{
	for (uint64_t off = 0; off <= VBAS_BLOCK_SIZE_MAX; off = off ? 2 * off : VBAS_BLOCK_SIZE_MIN) {
		char m[4];
		if (pread(fd, m, 4, (off_t)off + 4) == 4 && !memcmp(m, "VBSB", 4))
			return 1;
	}
	return 0;
}

/* What format must not overwrite without --force: an existing pool, a
 * signature libblkid knows, any other data, or a file longer than the
 * new pool.  Returns 0 if the target may be formatted, else the exit
 * status (said). */
static int format_refuses(const struct args *a, uint64_t want, uint32_t bs)
{
	const char *path = a->pos[0];
	char sigs[1024];
	uint64_t where;
	struct stat st;
	int fd, r;

	if (stat(path, &st) || (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)))
		return 0;                     /* the library says what is wrong */
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(a->cmd, path, "%s", strerror(errno));
	off_t end = S_ISREG(st.st_mode) ? st.st_size : lseek(fd, 0, SEEK_END);
	if (end < 0) {
		r = errno;
		close(fd);
		return fail(a->cmd, path, "its size: %s", strerror(r));
	}
	uint64_t size = (uint64_t)end;
	if (has_pool_magic(fd)) {
		struct vbas_open_opts o = { .flags = VBAS_OPEN_RDONLY };
		struct vbas_pool *pool;
		char who[512];
		close(fd);
		r = vbas_open(path, &o, &pool);
		if (!r) {
			vbas_close(pool);
			return fail(a->cmd, path, "already holds a vbas pool (use --force to "
				    "overwrite it)");
		}
		if (r == -EBUSY && !holder_text(path, who, sizeof(who)))
			return fail(a->cmd, path, "%s", who);
		const char *m = vbas_errmsg();
		return fail(a->cmd, path, "holds a vbas pool that does not open (%s): use --force "
			    "to overwrite it", m && *m ? m : strerror(-r));
	}
	r = size ? probe_signatures(path, sigs, sizeof(sigs)) : 0;
	if (r > 0) {
		close(fd);
		return fail(a->cmd, path, "holds %s: use --force to overwrite it", sigs);
	}
	if (r < 0) {
		close(fd);
		return fail(a->cmd, path, "probing for signatures: %s", strerror(-r));
	}
	r = holds_data(fd, size, S_ISREG(st.st_mode), &where);
	close(fd);
	if (r < 0)
		return fail(a->cmd, path, "reading: %s", strerror(-r));
	if (r)
		return fail(a->cmd, path, "holds data (a non-zero byte at offset %" PRIu64 ") that "
			    "is neither a known signature nor a vbas pool: use --force to "
			    "overwrite it", where);
	if (S_ISREG(st.st_mode) && want / bs * bs < size)
		return fail(a->cmd, path, "is %" PRIu64 " bytes, more than --size %" PRIu64
			    ": formatting would cut it short (use --force)", size,
			    want / bs * bs);
	return 0;
}

static int cmd_format(const struct args *a)
{
	struct vbas_format_opts o = { 0 };
	char h[32];

	/* Without --size, a block device's own size. */
	uint64_t size = a->size;
	struct stat st;
	int blk = !stat(a->pos[0], &st) && S_ISBLK(st.st_mode);
	if (!(a->seen & O_SIZE) && !blk)
		return usage_err(a->cmd, "--size", "missing (required for a file; a block device's "
				 "own size is taken when it is not given)");
	if (!(a->seen & O_SIZE)) {
		int fd = open(a->pos[0], O_RDONLY | O_CLOEXEC);
		off_t end = fd < 0 ? -1 : lseek(fd, 0, SEEK_END);
		if (fd < 0 || end < 0) {
			int e = errno;
			if (fd >= 0)
				close(fd);
			return fail(a->cmd, a->pos[0], "its size: %s", strerror(e));
		}
		close(fd);
		size = (uint64_t)end;
	}
	if (size == 0)
		return usage_err(a->cmd, "--size", "the pool's size must not be 0");
	if (a->seen & O_BLOCK_SIZE) {
		if (a->block_size == 0 || a->block_size > UINT32_MAX)
			return usage_err(a->cmd, "--block-size", "%" PRIu64 ": must be a power of "
					 "two from 4K to 1M", a->block_size);
		o.block_size = (uint32_t)a->block_size;
	}
	o.size = size;
	o.flags = (a->seen & O_FORCE) ? VBAS_FORMAT_FORCE : 0;
	if (a->seen & O_NO_RMAP)
		o.flags |= VBAS_FORMAT_NO_RMAP;
	uint32_t bs = o.block_size ? o.block_size : VBAS_BLOCK_SIZE_DEFAULT;
	if (blk && (a->seen & O_SIZE)) {
		int fd = open(a->pos[0], O_RDONLY | O_CLOEXEC);
		off_t end = fd < 0 ? -1 : lseek(fd, 0, SEEK_END);
		if (fd >= 0)
			close(fd);
		if (end >= 0 && size > (uint64_t)end) {
			last_errno = ENOSPC;
			return fail(a->cmd, a->pos[0], "the device holds %" PRIu64 " bytes, less "
				    "than --size %" PRIu64, (uint64_t)end, size);
		}
	}
	if (!(a->seen & O_FORCE) && !(bs & (bs - 1))) {
		int rc = format_refuses(a, size, bs);
		if (rc)
			return rc;
	}
	int r = vbas_format(a->pos[0], &o);
	if (r)
		return lib_fail(a->cmd, a->pos[0], r);
	printf("formatted %s: %s, block size %u\n", a->pos[0], human(size, h, sizeof(h)),
	       bs);
	return 0;
}

static const char ctl_unreadable[] =
	"the server's answer is cut short or not one this vbas reads (another version of vbas?)";

/* A connection to the control socket of POOL's server, or -1 if none
 * listens. */
static int ctl_connect(const char *pool)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (vbas_ctl_path(pool, sa.sun_path, sizeof(sa.sun_path)))
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Send request FIELDS (N of them) to the server of pool POOL through its
 * control channel (ctl.h), and with it descriptor FD if FD >= 0.  Returns
 * -1 if there is no server listening; else its errno (0: done), with *MSG
 * its message (malloc'ed; NULL if out of memory). */
static int ctl_request(const char *pool, const char *const *fields, int n, int pass,
		       char **msg)
{
	char req[CTL_MAX];
	size_t rl = 0, got = 0, cap = 0;
	char *reply = NULL;
	*msg = NULL;
	for (int i = 0; i < n; i++) {
		size_t l = strlen(fields[i]) + 1;
		if (rl + l > sizeof(req))
			return -1;
		memcpy(req + rl, fields[i], l);
		rl += l;
	}
	int fd = ctl_connect(pool);
	if (fd < 0)
		return -1;
	/* The descriptor goes with the request's bytes (SCM_RIGHTS). */
	union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int))]; } cm;
	struct iovec iov = { .iov_base = req, .iov_len = rl };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (pass >= 0) {
		memset(&cm, 0, sizeof(cm));
		mh.msg_control = cm.b;
		mh.msg_controllen = sizeof(cm.b);
		struct cmsghdr *h = CMSG_FIRSTHDR(&mh);
		h->cmsg_level = SOL_SOCKET;
		h->cmsg_type = SCM_RIGHTS;
		h->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(h), &pass, sizeof(int));
	}
	/* The reply runs to the server's EOF (a list is a line per volume). */
	int ok = sendmsg(fd, &mh, MSG_NOSIGNAL) == (ssize_t)rl && !shutdown(fd, SHUT_WR);
	while (ok) {
		if (cap - got < 4096) {
			char *nr = cap < (256u << 20) ? realloc(reply, cap ? 2 * cap : 8192) : NULL;
			if (!nr) {
				ok = 0;
				break;
			}
			reply = nr;
			cap = cap ? 2 * cap : 8192;
		}
		ssize_t k = read(fd, reply + got, cap - 1 - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		got += (size_t)k;
	}
	close(fd);
	int e;
	if (!ok || !reply || (reply[got] = 0, ctl_split_reply(reply, &e))) {
		free(reply);
		*msg = strdup("the server's control channel gave no answer");
		return EPROTO;
	}
	*msg = reply;
	return e;
}

/* Open the pool (FLAGS: vbas_open's); if a server holds it, send REQ (N
 * fields, and descriptor PASS if >= 0) through its control channel
 * instead.  Returns 0 with *POOL open to do the work here, else 1 with *RC
 * the command's exit status: the server did it (*BODY, if BODY is not
 * NULL, its answer, malloc'ed), or it failed (said). */
static int open_or_ask_server_fd(const struct args *a, unsigned flags, const char *const *req,
				 int n, int pass, struct vbas_pool **pool, int *rc, char **body)
{
	struct vbas_open_opts o = { .cache_bytes = a->cache, .flags = flags };
	int r = vbas_open(a->pos[0], &o, pool);
	*rc = 0;
	if (body)
		*body = NULL;
	if (!r)
		return 0;
	if (r == -EBUSY) {
		char *msg;
		int e = ctl_request(a->pos[0], req, n, pass, &msg);
		if (e >= 0) {
			if (e) {
				*rc = fail(a->cmd, a->pos[0], "%s (through the server)",
					   msg ? msg : strerror(e));
				last_errno = e;
			}
			else if (!msg)
				*rc = fail(a->cmd, a->pos[0], "%s", strerror(ENOMEM));
			if (!e && body) {
				*body = msg;
				msg = NULL;
			}
			free(msg);
			return 1;
		}
		/* No server listening: says who holds it (or opens it, if
		 * the holder has just let go). */
		*rc = open_pool(a, flags, pool);
		return *rc != 0;
	}
	*rc = lib_fail(a->cmd, a->pos[0], r);
	return 1;
}

static int open_or_ask_server(const struct args *a, unsigned flags, const char *const *req,
			      int n, struct vbas_pool **pool, int *rc, char **body)
{
	return open_or_ask_server_fd(a, flags, req, n, -1, pool, rc, body);
}

/* A permille figure as a percentage: "80%", "12.5%", or "none" for 0;
 * for JSON (JSON set) a number of percent, or null. */
static const char *permille_fmt(uint32_t pm, int json, char *buf, size_t len)
{
	if (!pm)
		snprintf(buf, len, "%s", json ? "null" : "none");
	else if (pm % 10)
		snprintf(buf, len, "%u.%u%s", pm / 10, pm % 10, json ? "" : "%");
	else
		snprintf(buf, len, "%u%s", pm / 10, json ? "" : "%");
	return buf;
}
#define permille_text(pm, buf, len) permille_fmt(pm, 0, buf, len)
#define permille_json(pm, buf, len) permille_fmt(pm, 1, buf, len)

/* A percentage ("80%", "80", "12.5%"; "0", "off" or "none": 0) into
 * permille; -1 if it is not one from 0 to 100 with at most one decimal. */
static int parse_percent(const char *s, uint32_t *pm)
{
	if (!strcmp(s, "off") || !strcmp(s, "none")) {
		*pm = 0;
		return 0;
	}
	unsigned whole = 0, tenth = 0;
	size_t n = strspn(s, "0123456789");
	if (n == 0 || n > 3)
		return -1;
	whole = (unsigned)strtoul(s, NULL, 10);
	s += n;
	if (*s == '.') {
		s++;
		if (*s < '0' || *s > '9')
			return -1;
		tenth = (unsigned)(*s++ - '0');
	}
	if (*s == '%')
		s++;
	if (*s || whole * 10 + tenth > 1000)
		return -1;
	*pm = whole * 10 + tenth;
	return 0;
}

static int cmd_info(const struct args *a)
{
	char pm1[16], pm2[16];
	struct vbas_pool_info i;
	struct vbas_pool *pool = NULL;
	const char *req[1] = { "info" };
	char *body;
	int r, rc;
	if (open_or_ask_server(a, VBAS_OPEN_RDONLY, req, 1, &pool, &rc, &body)) {
		if (rc)
			return rc;
		r = ctl_get_info(body, &i);
		free(body);
		if (r)
			return fail(a->cmd, a->pos[0], "%s", ctl_unreadable);
	} else {
		r = vbas_pool_info(pool, &i);
		if (r)
			return close_pool(a, pool, lib_fail(a->cmd, a->pos[0], r));
	}
	if (a->seen & O_JSON) {
		json_started = 1;
		printf("{\"size\":%" PRIu64 ",\"block_size\":%u,\"data_used\":%" PRIu64
		       ",\"metadata_used\":%" PRIu64 ",\"free\":%" PRIu64 ",\"volumes\":%" PRIu64
		       ",\"total_blocks\":%" PRIu64 ",\"reserved\":%" PRIu64
		       ",\"reserved_metadata\":%" PRIu64 ",\"reserved_metadata_granted\":%" PRIu64
		       ",\"reserved_metadata_used\":%" PRIu64 ",\"metadata_reserve\":%" PRIu64
		       ",\"generation\":%" PRIu64
		       ",\"cache_blocks\":%u,\"mapped\":%" PRIu64 ",\"sharing_saves\":%" PRIu64
		       ",\"available\":%" PRIu64 ",\"reserved_ranges\":%" PRIu64
		       ",\"reserved_owed\":%" PRIu64 ",\"low_water\":%s,\"expendable_floor\":%s"
		       ",\"rmap\":%s,\"shrink_to\":%" PRIu64 ",\"intents\":%u}\n",
		       i.size, i.block_size, i.data_used, i.metadata_used, i.free, i.volumes,
		       i.total_blocks, i.reserved, i.reserved_metadata, i.reserved_metadata_granted,
		       i.reserved_metadata_used, i.metadata_reserve,
		       i.generation,
		       i.cache_blocks, i.mapped, i.sharing_saves, i.available, i.reserved_ranges,
		       i.reserved_owed, permille_json(i.low_water, pm1, sizeof(pm1)),
		       permille_json(i.expendable_floor, pm2, sizeof(pm2)),
		       i.rmap ? "true" : "false", i.shrink_to, i.intents);
	} else {
		const struct { const char *k; uint64_t v; int bytes; } rows[] = {
			{ "size", i.size, 1 },
			{ "block size", i.block_size, 1 },
			{ "data used", i.data_used, 1 },
			{ "metadata used", i.metadata_used, 1 },
			/* What writes can have first: the rest of the free
			 * blocks is held back (available = free - metadata
			 * reserve - reserved). */
			{ "free for data", i.available, 1 },
			{ "free blocks", i.free, 1 },
			{ "  metadata reserve", i.metadata_reserve, 1 },
			{ "  reserved", i.reserved, 1 },
			{ "    for metadata", i.reserved_metadata, 1 },
			{ "    owed copies", i.reserved_owed, 1 },
			{ "reserved ranges", i.reserved_ranges, 1 },
			{ "mapped", i.mapped, 1 },
			{ "sharing saves", i.sharing_saves, 1 },
			{ "volumes", i.volumes, 0 },
			{ "total blocks", i.total_blocks, 0 },
			{ "generation", i.generation, 0 },
			{ "cache blocks", i.cache_blocks, 0 },
		};
		char h[32];
		printf("%-18s %s\n", "pool", a->pos[0]);
		for (size_t k = 0; k < sizeof(rows) / sizeof(rows[0]); k++) {
			if (rows[k].bytes)
				printf("%-18s %20" PRIu64 "  %s\n", rows[k].k, rows[k].v,
				       human(rows[k].v, h, sizeof(h)));
			else
				printf("%-18s %20" PRIu64 "\n", rows[k].k, rows[k].v);
		}
		printf("%-18s %20s\n", "low water", permille_text(i.low_water, pm1, sizeof(pm1)));
		printf("%-18s %20s\n", "expendable floor",
		       permille_text(i.expendable_floor, pm2, sizeof(pm2)));
		printf("%-18s %20s\n", "reverse map", i.rmap ? "yes" : "no");
		if (i.shrink_to)
			printf("%-18s %20" PRIu64 "  %s (unfinished: 'resize-pool' goes on, or "
			       "--cancel)\n", "shrinking to", i.shrink_to,
			       human(i.shrink_to, h, sizeof(h)));
		if (i.intents)
			printf("%-18s %20u  (reflinks, dedupes or unshares under way; finished at "
			       "the next read-write open)\n", "intents", i.intents);
	}
	return pool ? close_pool(a, pool, 0) : 0;
}

/* ---- Progress and stopping --------------------------------------------------- */

/* A progress line on stderr for a long copy: on a terminal, or with
 * --progress; never with --no-progress.  Redrawn at most 5 times a second
 * ("\r"), ended by a newline. */
struct progress {
	int on;
	const char *what;       /* "write", "read" */
	uint64_t total;         /* bytes, 0 if not known (a pipe) */
	uint64_t last_done;     /* as last drawn */
	const char *count;      /* the units if not bytes (check's) */
	struct timespec start, last;
	int drawn;
};

static double secs_since(const struct timespec *t)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

static void progress_start(struct progress *p, const struct args *a, const char *what,
			   uint64_t total)
{
	memset(p, 0, sizeof(*p));
	p->on = (a->seen & O_PROGRESS) || (!(a->seen & O_NO_PROGRESS) && isatty(2));
	p->what = what;
	p->total = total;
	clock_gettime(CLOCK_MONOTONIC, &p->start);
	p->last = p->start;
}

static void progress_draw(struct progress *p, uint64_t done, int last)
{
	char h1[32], h2[32], h3[32];
	if (!p->on || (!last && p->drawn && secs_since(&p->last) < 0.2))
		return;
	clock_gettime(CLOCK_MONOTONIC, &p->last);
	p->last_done = done;
	double s = secs_since(&p->start);
	uint64_t rate = s > 0 ? (uint64_t)((double)done / s) : 0;
	if (p->count)
		fprintf(stderr, "\r%s: %5.1f%%  %" PRIu64 " of %" PRIu64 " %s ", p->what,
			p->total ? 100.0 * (double)done / (double)p->total : 0.0, done, p->total,
			p->count);
	else if (p->total)
		fprintf(stderr, "\r%s: %5.1f%%  %s of %s  %s/s ", p->what,
			100.0 * (double)done / (double)p->total, human(done, h1, sizeof(h1)),
			human(p->total, h2, sizeof(h2)), human(rate, h3, sizeof(h3)));
	else
		fprintf(stderr, "\r%s: %s  %s/s ", p->what, human(done, h1, sizeof(h1)),
			human(rate, h3, sizeof(h3)));
	fprintf(stderr, "\033[K%s", last ? "\n" : "");
	fflush(stderr);
	p->drawn = 1;
}

/* SIGINT, SIGTERM or SIGHUP during a copy: it stops at its next chunk,
 * keeps (commits) what is done and says so. */
static volatile sig_atomic_t stop_sig;

static void on_stop_signal(int sig)
{
	stop_sig = sig;
}

static void stop_signals(int on)
{
	struct sigaction sa = { .sa_handler = on ? on_stop_signal : SIG_DFL };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

struct write_watch {
	struct progress *p;
	uint64_t start;         /* the volume offset the copy began at */
	const uint64_t *off;    /* where it is now */
};

/* copy_in's hook before each read of the source: the progress line, and
 * a stop signal ends the copy. */
static int write_before_read(int fd, void *arg)
{
	struct write_watch *w = arg;
	(void)fd;
	progress_draw(w->p, *w->off - w->start, 0);
	return stop_sig ? EINTR : 0;
}

/* The library's long calls (vbas_pool_progress): the progress line, and
 * a stop signal asks the call to stop at its next step. */
static int lib_progress(void *arg, uint64_t done, uint64_t total)
{
	struct progress *p = arg;
	p->total = total;
	progress_draw(p, done, 0);
	return stop_sig != 0;
}

static void lib_progress_start(struct progress *p, const struct args *a,
			       struct vbas_pool *pool, const char *what, uint64_t total)
{
	progress_start(p, a, what, total);
	stop_signals(1);
	vbas_pool_progress(pool, lib_progress, p);
}

static void lib_progress_end(struct progress *p, struct vbas_pool *pool, int r)
{
	vbas_pool_progress(pool, NULL, NULL);
	stop_signals(0);
	if (p->drawn) {
		if (!r)
			p->last_done = p->total;
		progress_draw(p, p->last_done, 1);
	}
}

static int ask_server(const struct args *a, const char *const *req, int n);
/* The same; *BODY (malloc'ed) the answer, when the request succeeds. */
static int ask_server_body(const struct args *a, const char *const *req, int n, char **body);

struct overcommit {
	uint64_t writable;      /* bytes: the sizes of the writable volumes */
};

static int overcommit_cb(const struct vbas_vol_info *v, void *arg)
{
	struct overcommit *o = arg;
	if (!(v->flags & VBAS_VOL_READONLY))
		o->writable += v->size;
	return 0;
}

/* After a new writable volume: a note on stderr when the writable volumes
 * add up to more than the pool holds for data (thin provisioning over
 * commits: their writes may meet ENOSPC), as LVM warns.  POOL is the open
 * pool, or NULL (served: read beside the server).  Says nothing if it
 * cannot tell. */
static void overcommit_note(const struct args *a, struct vbas_pool *pool)
{
	struct overcommit o = { 0 };
	struct vbas_pool_info i;
	struct vbas_pool *p = pool;
	char h1[32], h2[32];
	if (!p) {
		/* Quietly: a note is not worth an error. */
		int e = dup(2), nul = open("/dev/null", O_WRONLY | O_CLOEXEC);
		if (e >= 0 && nul >= 0)
			dup2(nul, 2);
		int rc = open_pool_reading(a, &p, NULL);
		if (e >= 0 && nul >= 0)
			dup2(e, 2);
		if (e >= 0)
			close(e);
		if (nul >= 0)
			close(nul);
		if (rc)
			return;
	}
	int r = vbas_pool_info(p, &i);
	if (!r)
		r = vbas_vol_list(p, overcommit_cb, &o);
	if (!pool) {
		vbas_close(p);
		if (served_pin >= 0)
			close(served_pin);
		served_pin = -1;
	}
	uint64_t room = i.total_blocks * i.block_size;
	if (r || o.writable <= room)
		return;
	fprintf(stderr, "vbas: %s: %s: note: the writable volumes add up to %s, more than the "
		"%s the pool holds (%" PRIu64 " > %" PRIu64 " bytes): it is over-committed, "
		"and writes fail with ENOSPC once it is full (see 'vbas info', 'vbas set "
		"--low-water', 'vbas grow')\n", a->cmd, a->pos[0], human(o.writable, h1, sizeof(h1)),
		human(room, h2, sizeof(h2)), o.writable, room);
}

static int cmd_create(const struct args *a)
{
	struct vbas_pool *pool;
	char size[24];
	if (!(a->seen & O_SIZE))
		return usage_err(a->cmd, "--size", "missing (the volume's size is required)");
	snprintf(size, sizeof(size), "%" PRIu64, a->size);
	const char *req[3] = { "create", a->pos[1], size };
	const char *rreq[4] = { "reserve", a->pos[1], "0", "0" };
	const char *dreq[2] = { "delete", a->pos[1] };
	int r, rc;
	if (open_or_ask_server(a, 0, req, 3, &pool, &rc, NULL)) {
		if (!rc && !(a->seen & O_RESERVE))
			overcommit_note(a, NULL);
		if (rc || !(a->seen & O_RESERVE))
			return rc;
		/* A thick volume, or none. */
		rc = ask_server(a, rreq, 4);
		if (rc && ask_server(a, dreq, 2) == 0)
			fprintf(stderr, "vbas: %s: %s: volume '%s' not created\n", a->cmd, a->pos[0],
				a->pos[1]);
		return rc;
	}
	r = vbas_vol_create(pool, a->pos[1], a->size);
	if (r)
		rc = lib_fail(a->cmd, a->pos[0], r);
	if (!rc && (a->seen & O_RESERVE)) {
		struct vbas_vol *vol;
		r = vbas_vol_open(pool, a->pos[1], &vol);
		if (!r) {
			r = vbas_vol_reserve(vol, 0, a->size);
			vbas_vol_close(vol);
		}
		if (r) {
			rc = lib_fail(a->cmd, a->pos[0], r);
			if (!vbas_vol_delete(pool, a->pos[1]))
				fprintf(stderr, "vbas: %s: %s: volume '%s' not created\n", a->cmd,
					a->pos[0], a->pos[1]);
		}
	}
	/* (A thick volume has its space: it over-commits nothing.) */
	if (!rc && !(a->seen & O_RESERVE))
		overcommit_note(a, pool);
	return close_pool(a, pool, rc);
}

/* The name of volume ID in L, or NULL (none, or deleted).  L comes in id
 * order (the volume table's), so a binary search: listing 100,000
 * volumes with their origins stays O(n log n). */
static const char *list_name(const struct vol_list *l, uint64_t id)
{
	size_t lo = 0, hi = l->n;
	while (id && lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (l->v[mid].id == id)
			return l->v[mid].name;
		if (l->v[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* The columns of vbas list. */
enum { L_NAME, L_ID, L_SIZE, L_MAPPED, L_DATA, L_EXCL, L_SHARED, L_RESERVED, L_OWED, L_RO,
       L_EXPENDABLE, L_ORIGIN, L_NCOLS };
static const struct col_def list_cols[L_NCOLS] = {
	[L_NAME] = { "NAME", "name", COL_STR, 1, NULL, NULL, "the volume's name" },
	[L_ID] = { "ID", "id", COL_NUM, 1, NULL, NULL, "its id (fsmap and check name it)" },
	[L_SIZE] = { "SIZE", "size", COL_SIZE, 1, NULL, NULL, "its size" },
	[L_MAPPED] = { "MAPPED", "mapped", COL_SIZE, 1, NULL, NULL, "bytes mapped (written)" },
	[L_DATA] = { "DATA%", "data_percent", COL_PCT, 1, NULL, NULL, "mapped / size" },
	[L_EXCL] = { "EXCLUSIVE", "exclusive", COL_SIZE, 1, NULL, NULL,
		     "bytes mapped to blocks of its own" },
	[L_SHARED] = { "SHARED", "shared", COL_SIZE, 1, NULL, NULL,
		       "bytes mapped to blocks shared with others" },
	[L_RESERVED] = { "RESERVED", "reserved", COL_SIZE, 1, NULL, NULL,
			 "bytes of reserved ranges" },
	[L_OWED] = { "OWED", "owed", COL_SIZE, 0, NULL, NULL,
		     "held for copies on write of its reserved ranges" },
	[L_RO] = { "RO", "readonly", COL_BOOL, 1, "ro", "rw",
		   "ro: a snapshot (ex: an expendable one)" },
	[L_EXPENDABLE] = { "EXPENDABLE", "expendable", COL_BOOL, 0, "yes", "no",
			   "a snapshot the pool may delete for room" },
	[L_ORIGIN] = { "ORIGIN", "origin", COL_STR, 1, NULL, NULL,
		       "its snapshot's or clone's source, if it exists" },
};

/* The flags table_open takes from -o's companions. */
static unsigned table_flags(const struct args *a)
{
	return ((a->seen & O_JSON) ? TABLE_JSON : 0) | ((a->seen & O_BYTES) ? TABLE_BYTES : 0) |
	       ((a->seen & O_RAW) ? TABLE_RAW : 0) |
	       ((a->seen & O_NOHEADINGS) ? TABLE_NOHEADINGS : 0);
}

/* table_open with the command's options: the exit status if -o is bad. */
static int table_for(const struct args *a, struct table *tb, const char *rows,
		     const struct col_def *defs, int n, unsigned more)
{
	char why[512];
	if (table_open(tb, rows, defs, n, (a->seen & O_OUTPUT) ? a->output : NULL,
		       table_flags(a) | more, why, sizeof(why)))
		return usage_err(a->cmd, "--output", "%s", why);
	return 0;
}

/* Print TB and free it; the exit status. */
static int table_done(const struct args *a, struct table *tb, int rc)
{
	if (!rc && table_print(tb, stdout))
		rc = fail(a->cmd, a->pos[0], "printing the table: %s", strerror(errno ? errno : EIO));
	else if (!rc && (a->seen & O_JSON))
		json_started = 1;
	table_free(tb);
	return rc;
}

static int cmd_list(const struct args *a)
{
	struct vol_list l = { 0 };
	struct vbas_pool *pool = NULL;
	const char *req[1] = { "list" };
	char *body;
	int r, rc;
	if (open_or_ask_server(a, VBAS_OPEN_RDONLY, req, 1, &pool, &rc, &body)) {
		if (rc)
			return rc;
		r = ctl_get_list(body, &l);
		free(body);
		if (r) {
			rc = fail(a->cmd, a->pos[0], "%s", r == -EPROTO ? ctl_unreadable
								: strerror(-r));
			goto out;
		}
	} else if ((r = vol_list_read(pool, &l))) {
		rc = lib_fail(a->cmd, a->pos[0], r);
		goto out;
	}
	struct table tb;
	if ((rc = table_for(a, &tb, "volumes", list_cols, L_NCOLS, 0)))
		goto out;
	for (size_t i = 0; i < l.n && !rc; i++) {
		const struct vbas_vol_info *v = &l.v[i];
		struct libscols_line *ln = table_line(&tb);
		if (table_str(&tb, ln, L_NAME, v->name) || table_u64(&tb, ln, L_ID, v->id) ||
		    table_u64(&tb, ln, L_SIZE, v->size) || table_u64(&tb, ln, L_MAPPED, v->mapped) ||
		    table_pct(&tb, ln, L_DATA, v->mapped, v->size) ||
		    table_u64(&tb, ln, L_EXCL, l.u[i].exclusive) ||
		    table_u64(&tb, ln, L_SHARED, l.u[i].shared) ||
		    table_u64(&tb, ln, L_RESERVED, v->reserved) ||
		    table_u64(&tb, ln, L_OWED, v->owed) ||
		    /* (In text, RO says "ex" for an expendable snapshot.) */
		    ((a->seen & O_JSON) ? table_bool(&tb, ln, L_RO, !!(v->flags & VBAS_VOL_READONLY))
		     : table_str(&tb, ln, L_RO, (v->flags & VBAS_VOL_EXPENDABLE) ? "ex" :
						 (v->flags & VBAS_VOL_READONLY) ? "ro" : "rw")) ||
		    table_bool(&tb, ln, L_EXPENDABLE, !!(v->flags & VBAS_VOL_EXPENDABLE)) ||
		    table_str(&tb, ln, L_ORIGIN, list_name(&l, v->origin)))
			rc = fail(a->cmd, a->pos[0], "%s", strerror(ENOMEM));
	}
	rc = table_done(a, &tb, rc);
out:
	vol_list_free(&l);
	return pool ? close_pool(a, pool, rc) : rc;
}

/* ---- delete and resize: what they drop, and the user's word -------------- */

/* What delete or resize would lose, found out before it runs. */
struct loss {
	uint64_t size;      /* the volume's size */
	uint64_t mapped;    /* bytes mapped in it */
	uint64_t cut;       /* bytes mapped at or past the new size (resize) */
	uint64_t from;      /* the new size, for cut_cb */
	uint32_t bs;        /* the pool's block size */
	int readonly;       /* the volume is a snapshot */
	int served;         /* through a server: cut is not known, only mapped */
};

static int cut_cb(const struct vbas_extent *e, void *arg)
{
	struct loss *l = arg;
	uint64_t s = e->offset > l->from ? e->offset : l->from;
	if (e->offset + e->length > s)
		l->cut += e->offset + e->length - s;
	return 0;
}

/* --size SIZE, +SIZE or -SIZE for a volume of CUR bytes into *TO; the
 * exit status if that is past 0 or 2^64 (said), else 0. */
static int rel_size(const struct args *a, uint64_t cur, uint64_t *to)
{
	*to = a->size_plus ? cur + a->size : a->size_minus ? cur - a->size : a->size;
	if (a->size_plus && *to < cur)
		return usage_err(a->cmd, "--size", "+%" PRIu64 " on %" PRIu64 " bytes is past "
				 "2^64", a->size, cur);
	if (a->size_minus && a->size >= cur)
		return usage_err(a->cmd, "--size", "-%" PRIu64 " leaves nothing of volume '%s' (%"
				 PRIu64 " bytes)", a->size, a->pos[1], cur);
	return 0;
}

/* Open the pool (*POOL; NULL if a server holds it) and find out what
 * volume pos[1] holds, and for a new size *NEWSIZE below its size what is
 * mapped past it (*NEWSIZE relative, --size +N or -N: made absolute).
 * Returns 0, or the exit status (said). */
static int loss_find(const struct args *a, uint64_t *newsize, struct vbas_pool **pool,
		     struct loss *l)
{
	const char *req[1] = { "list" };
	struct vbas_vol_info info;
	struct vbas_vol *vol;
	char *body;
	int r, rc;
	memset(l, 0, sizeof(*l));
	*pool = NULL;
	if (open_or_ask_server(a, 0, req, 1, pool, &rc, &body)) {
		struct vol_list vl = { 0 };
		if (rc)
			return rc;
		r = ctl_get_list(body, &vl);
		free(body);
		if (r)
			return fail(a->cmd, a->pos[0], "%s", r == -EPROTO ? ctl_unreadable
									: strerror(-r));
		rc = -1;
		for (size_t i = 0; i < vl.n; i++) {
			if (!strcmp(vl.v[i].name, a->pos[1])) {
				l->size = vl.v[i].size;
				rc = rel_size(a, l->size, newsize);
				l->mapped = l->cut = vl.v[i].mapped;
				l->readonly = !!(vl.v[i].flags & VBAS_VOL_READONLY);
				l->served = 1;
			}
		}
		vol_list_free(&vl);
		if (rc > 0)
			return rc;
		if (rc) {
			last_errno = ENOENT;
			return fail(a->cmd, a->pos[0], "volume '%s' not found (through the server)",
				    a->pos[1]);
		}
		struct vbas_pool_info pi;
		const char *ireq[1] = { "info" };
		char *msg;
		int e = ctl_request(a->pos[0], ireq, 1, -1, &msg);
		if (e >= 0 && !e && msg && !ctl_get_info(msg, &pi))
			l->bs = pi.block_size;
		free(msg);
		if (!l->bs)
			return fail(a->cmd, a->pos[0], "%s", ctl_unreadable);
		return 0;
	}
	struct vbas_pool_info pi;
	r = vbas_pool_info(*pool, &pi);
	l->bs = pi.block_size;
	if (!r)
		r = vbas_vol_open(*pool, a->pos[1], &vol);
	if (!r) {
		r = vbas_vol_info(vol, &info);
		if (!r && (rc = rel_size(a, info.size, newsize))) {
			vbas_vol_close(vol);
			return close_pool(a, *pool, rc);
		}
		l->from = *newsize;
		if (!r && *newsize < info.size)
			r = vbas_extents(vol, *newsize, info.size - *newsize, cut_cb, l);
		vbas_vol_close(vol);
	}
	if (r) {
		rc = lib_fail(a->cmd, a->pos[0], r);
		vbas_close(*pool);
		*pool = NULL;
		return rc;
	}
	l->size = info.size;
	l->mapped = info.mapped;
	l->readonly = !!(info.flags & VBAS_VOL_READONLY);
	return 0;
}

/* Go on with a command that drops data, WHAT saying which: --dry-run says
 * what would happen and stops; --yes or --force go on; on a terminal the
 * user is asked; else it is refused.  Returns -1 to go on, else the exit
 * status (said). */
static int confirm(const struct args *a, const char *what)
{
	char line[64];
	if (a->seen & O_DRY_RUN) {
		printf("would %s; nothing changed (--dry-run)\n", what);
		return 0;
	}
	if (a->seen & (O_YES | O_FORCE))
		return -1;
	if (!isatty(STDIN_FILENO)) {
		last_errno = ECANCELED;
		return fail(a->cmd, a->pos[0], "would %s: not done without confirmation "
			    "(standard input is not a terminal): give --yes to go on", what);
	}
	fprintf(stderr, "vbas: %s: %s: %s? [y/N] ", a->cmd, a->pos[0], what);
	fflush(stderr);
	if (fgets(line, sizeof(line), stdin) &&
	    (!strcasecmp(line, "y\n") || !strcasecmp(line, "yes\n") ||
	     !strcasecmp(line, "y") || !strcasecmp(line, "yes")))
		return -1;
	last_errno = ECANCELED;
	return fail(a->cmd, a->pos[0], "not confirmed: nothing changed");
}

/* Send REQ (N fields) to the pool's server.  Returns the exit status. */
static int ask_server(const struct args *a, const char *const *req, int n)
{
	return ask_server_body(a, req, n, NULL);
}

static int ask_server_body(const struct args *a, const char *const *req, int n, char **body)
{
	char *msg;
	int e = ctl_request(a->pos[0], req, n, -1, &msg), rc = 0;
	if (body) {
		*body = e ? NULL : msg;
		if (!e)
			return 0;
	}
	if (e < 0)
		rc = fail(a->cmd, a->pos[0], "the server stopped before the request: nothing "
			  "changed (try again)");
	else if (e)
		rc = fail(a->cmd, a->pos[0], "%s (through the server)", msg ? msg : strerror(e));
	free(msg);
	return rc;
}

struct lost {
	uint64_t bytes;
};

static int lost_cb(uint64_t off, uint64_t len, void *arg)
{
	(void)off;
	((struct lost *)arg)->bytes += len;
	return 0;
}

/* vbas rollback POOL NAME SNAPSHOT: what differs from the snapshot is
 * named (a diff, beside a server under its pin), asked about as delete
 * asks, then the library (or the server) rolls back. */
static int cmd_rollback(const struct args *a)
{
	const char *req[3] = { "rollback", a->pos[1], a->pos[2] };
	struct vbas_vol *v = NULL, *s = NULL;
	struct vbas_pool *pool;
	struct lost l = { 0 };
	char what[700], h[32];
	int r, rc = open_pool_reading(a, &pool, NULL);
	if (rc)
		return rc;
	r = vbas_vol_open(pool, a->pos[1], &v);
	if (!r)
		r = vbas_vol_open(pool, a->pos[2], &s);
	if (!r)
		r = vbas_diff(s, v, lost_cb, &l);
	if (s)
		vbas_vol_close(s);
	if (v)
		vbas_vol_close(v);
	rc = close_pool(a, pool, r ? lib_fail(a->cmd, a->pos[0], r) : 0);
	if (rc)
		return rc;
	snprintf(what, sizeof(what), "roll volume '%s' back to '%s', dropping the %" PRIu64
		 " bytes written since (%s)", a->pos[1], a->pos[2], l.bytes,
		 human(l.bytes, h, sizeof(h)));
	rc = confirm(a, what);
	if (rc >= 0)
		return rc;
	if (open_or_ask_server(a, 0, req, 3, &pool, &rc, NULL)) {
		if (!rc)
			printf("volume '%s' rolled back to '%s' (through the server)\n", a->pos[1],
			       a->pos[2]);
		return rc;
	}
	struct progress pr;
	lib_progress_start(&pr, a, pool, "rollback", 0);
	r = vbas_vol_rollback(pool, a->pos[1], a->pos[2]);
	lib_progress_end(&pr, pool, r);
	if (r)
		return close_pool(a, pool, lib_fail(a->cmd, a->pos[0], r));
	printf("volume '%s' rolled back to '%s'\n", a->pos[1], a->pos[2]);
	return close_pool(a, pool, 0);
}

static int cmd_delete(const struct args *a)
{
	const char *req[2] = { "delete", a->pos[1] };
	struct vbas_pool *pool;
	struct loss l;
	char what[600], h[32];
	uint64_t all = UINT64_MAX;
	int r, rc = loss_find(a, &all, &pool, &l);
	if (rc)
		return rc;
	snprintf(what, sizeof(what), "delete volume '%s' (%" PRIu64 " bytes) and the %" PRIu64
		 " bytes mapped in it (%s)", a->pos[1], l.size, l.mapped,
		 human(l.mapped, h, sizeof(h)));
	rc = confirm(a, what);
	if (rc >= 0)
		return pool ? close_pool(a, pool, rc) : rc;
	if (!pool)
		return ask_server(a, req, 2);
	struct progress pr;
	lib_progress_start(&pr, a, pool, "delete", l.size);
	r = vbas_vol_delete(pool, a->pos[1]);
	lib_progress_end(&pr, pool, r);
	if (r == -EINTR && stop_sig)
		return close_pool(a, pool, (last_errno = EINTR,
			fail(a->cmd, a->pos[1], "stopped by %s: the volume is gone from the list, "
			     "and what it still holds is freed by the next delete or open",
			     strsignal(stop_sig))));
	return close_pool(a, pool, r ? lib_fail(a->cmd, a->pos[0], r) : 0);
}

static int cmd_resize(const struct args *a)
{
	struct vbas_pool *pool;
	struct loss l;
	char size[24], what[600], h[32];
	if (!(a->seen & O_SIZE))
		return usage_err(a->cmd, "--size", "missing (the new size is required)");
	if ((a->size_plus || a->size_minus) && !a->size)
		return usage_err(a->cmd, "--size", "%s0 changes nothing", a->size_plus ? "+" : "-");
	uint64_t want = a->size;
	int r, rc = loss_find(a, &want, &pool, &l);
	if (rc)
		return rc;
	snprintf(size, sizeof(size), "%" PRIu64, want);
	const char *req[3] = { "resize", a->pos[1], size };
	/* A shrink the library would refuse is not asked about. */
	if (want < l.size && (!want || want % l.bs || l.readonly)) {
		last_errno = l.readonly ? EROFS : EINVAL;
		if (l.readonly)
			rc = fail(a->cmd, a->pos[0], "volume '%s' is read-only (a snapshot, or set read-only)",
				  a->pos[1]);
		else if (!want)
			rc = fail(a->cmd, a->pos[0], "volume size must not be 0");
		else
			rc = fail(a->cmd, a->pos[0], "volume size %" PRIu64 " is not a multiple of "
				  "the block size (%u)", want, l.bs);
		return pool ? close_pool(a, pool, rc) : rc;
	}
	if (want >= l.size && (a->seen & O_DRY_RUN)) {
		printf("would %s volume '%s' from %" PRIu64 " to %" PRIu64 " bytes: nothing is "
		       "lost; nothing changed (--dry-run)\n", want > l.size ? "grow" : "keep",
		       a->pos[1], l.size, want);
		rc = 0;
	} else if (want < l.size && l.served) {
		snprintf(what, sizeof(what), "shrink volume '%s' from %" PRIu64 " to %" PRIu64
			 " bytes, dropping what is mapped past %" PRIu64 " (the server does "
			 "not say how much: up to the %" PRIu64 " bytes mapped in it, %s)",
			 a->pos[1], l.size, want, want, l.mapped,
			 human(l.mapped, h, sizeof(h)));
		rc = confirm(a, what);
	} else if (want < l.size) {
		snprintf(what, sizeof(what), "shrink volume '%s' from %" PRIu64 " to %" PRIu64
			 " bytes, dropping the %" PRIu64 " bytes mapped past %" PRIu64 " (%s)",
			 a->pos[1], l.size, want, l.cut, want, human(l.cut, h, sizeof(h)));
		rc = confirm(a, what);
	} else {
		rc = -1;                      /* growing drops nothing */
	}
	if (rc >= 0)
		return pool ? close_pool(a, pool, rc) : rc;
	if (!pool)
		return ask_server(a, req, 3);
	r = vbas_vol_resize(pool, a->pos[1], want);
	return close_pool(a, pool, r ? lib_fail(a->cmd, a->pos[0], r) : 0);
}

/* The FILE argument (pos[2]): absent or "-" means stdin/stdout. */
static const char *file_arg(const struct args *a)
{
	return a->npos > 2 && strcmp(a->pos[2], "-") ? a->pos[2] : NULL;
}

/* A disk image written with vbas write is copied byte for byte, its
 * format's headers and all: most likely a mistake, so a warning (not a
 * refusal: a volume may hold an image on purpose).  A regular file is
 * looked at (its first bytes, by pread: nothing is consumed); a pipe is
 * not. */
static void image_warning(const struct args *a, int fd, const char *fname)
{
	static const struct { const char *magic; size_t len; const char *fmt; } m[] = {
		{ "QFI\xfb", 4, "qcow2" }, { "KDMV", 4, "vmdk" }, { "vhdxfile", 8, "vhdx" },
		{ "QED\0", 4, "qed" }, { "conectix", 8, "vpc (vhd)" },
		{ "<<< Oracle VM VirtualBox Disk Image >>>", 39, "vdi" },
		{ "# Disk DescriptorFile", 21, "vmdk (descriptor)" },
	};
	char head[64];
	struct stat st;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode))
		return;
	ssize_t n = pread(fd, head, sizeof(head), 0);
	for (size_t i = 0; n > 0 && i < sizeof(m) / sizeof(m[0]); i++)
		if ((size_t)n >= m[i].len && !memcmp(head, m[i].magic, m[i].len)) {
			fprintf(stderr, "vbas: %s: %s: warning: this looks like a %s image: its bytes "
				"are written as they are, a raw copy of the file ('vbas import' "
				"converts an image into a volume)\n", a->cmd, fname, m[i].fmt);
			return;
		}
}

/* vbas write: the source's holes (SEEK_HOLE) and its blocks of zeros
 * become holes of the volume (vbas_write_zeroes: nothing mapped, what
 * was mapped there let go), the rest is written. */
static int cmd_write(const struct args *a)
{
	const char *file = file_arg(a), *fname = file ? file : "stdin";
	struct vbas_pool_info pi;
	struct vbas_pool *pool;
	char offs[24], *body;
	int fd = 0, r, rc;

	if (file && (fd = open(file, O_RDONLY | O_CLOEXEC)) < 0)
		return fail(a->cmd, file, "%s", strerror(errno));
	image_warning(a, fd, fname);
	/* A served pool: the server reads the source itself, from the
	 * descriptor passed to it, with the loop below (copy.c). */
	snprintf(offs, sizeof(offs), "%" PRIu64, a->offset);
	const char *req[3] = { "write", a->pos[1], offs };
	if (open_or_ask_server_fd(a, 0, req, 3, fd, &pool, &rc, &body)) {
		free(body);
		if (file)
			close(fd);
		return rc;
	}
	struct copy_in c = { .fd = fd, .off = a->offset };
	struct progress pr;
	struct stat st;
	struct write_watch ww = { &pr, a->offset, &c.off };
	progress_start(&pr, a, "write", fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ?
		       (uint64_t)st.st_size : 0);
	c.before_read = write_before_read;
	c.arg = &ww;
	rc = 0;
	r = vbas_vol_open(pool, a->pos[1], &c.vol);
	if (r) {
		rc = lib_fail(a->cmd, a->pos[0], r);
		goto close;
	}
	r = vbas_pool_info(pool, &pi);
	if (r) {
		rc = lib_fail(a->cmd, a->pos[0], r);
		goto close;
	}
	c.block_size = pi.block_size;
	stop_signals(1);
	r = copy_in(&c);
	if (pr.drawn)
		progress_draw(&pr, c.total, 1);
	/* (A signal from the terminal may have stopped the source as well:
	 * its end is no proof of a whole copy.) */
	if ((r && c.fault == COPY_STOPPED) || (!r && stop_sig))
		rc = (last_errno = EINTR, fail(a->cmd, a->pos[1], "stopped by %s",
					       strsignal(stop_sig)));
	else if (r)
		rc = c.fault == COPY_LIBRARY ? lib_fail(a->cmd, a->pos[0], -c.err) :
		     (last_errno = c.err, fail(a->cmd, c.fault == COPY_SOURCE ? fname : a->pos[1],
					       "%s", c.msg));
	/* Commit what was written, even after a failure. */
	r = vbas_flush(pool);
	if (r && !rc)
		rc = lib_fail(a->cmd, a->pos[0], r);
	stop_signals(0);
	if (rc && c.total)
		fprintf(stderr, "vbas: %s: %s: %" PRIu64 " bytes at offset %" PRIu64
			" were written before the %s%s\n", a->cmd, a->pos[1], c.total, a->offset,
			stop_sig ? "stop" : "failure", r ? ", and could not be committed" :
			stop_sig ? ", and are committed; the rest of the volume is as it was" : "");
	else if (rc && stop_sig)
		fprintf(stderr, "vbas: %s: %s: nothing was written\n", a->cmd, a->pos[1]);
close:
	if (c.vol)
		vbas_vol_close(c.vol);
	rc = close_pool(a, pool, rc);
	if (file)
		close(fd);
	return rc;
}

struct rd {
	int fd;
	const char *buf;
	int last_zero;
};

static int rd_piece(void *arg, size_t at, size_t len, int zero)
{
	struct rd *o = arg;
	o->last_zero = zero;
	if (zero)
		return lseek(o->fd, (off_t)len, SEEK_CUR) < 0 ? -1 : 0;
	return write_full(o->fd, o->buf + at, len) < 0 ? -1 : 0;
}

/* vbas read: into a regular file, the volume's holes and blocks of zeros
 * are seeked over (the file as sparse as the volume); into a pipe or a
 * terminal, every byte. */
static int cmd_read(const struct args *a)
{
	const char *file = file_arg(a), *fname = file ? file : "stdout";
	struct vbas_vol_info info;
	struct vbas_pool *pool;
	struct vbas_vol *vol;
	uint64_t off = a->offset, left;
	void *buf = NULL;
	int fd = 1, r, rc;

	rc = open_vol(a, VBAS_OPEN_RDONLY, NULL, 0, NULL, &pool, &vol, &info);
	if (rc)
		return rc;
	if (off > info.size) {
		rc = fail(a->cmd, a->pos[1], "offset %" PRIu64 " is past the end of the volume (%"
			  PRIu64 " bytes)", off, info.size);
		goto close;
	}
	left = (a->seen & O_LENGTH) ? a->length : info.size - off;
	if (left > info.size - off) {
		rc = fail(a->cmd, a->pos[1], "range %" PRIu64 "+%" PRIu64 " is past the end of the "
			  "volume (%" PRIu64 " bytes)", off, left, info.size);
		goto close;
	}
	if (posix_memalign(&buf, 4096, COPY_CHUNK)) {
		buf = NULL;
		rc = fail(a->cmd, fname, "%s", strerror(ENOMEM));
		goto close;
	}
	/* Open the output only once the range is known to be good. */
	if (file && (fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666)) < 0) {
		rc = fail(a->cmd, file, "%s", strerror(errno));
		goto close;
	}
	/* Into a regular file (not one appended to), blocks of zeros are
	 * seeked over: the copy is as sparse as the volume. */
	struct stat st;
	int fl = fcntl(fd, F_GETFL);
	int sparse = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && fl >= 0 && !(fl & O_APPEND) &&
		     lseek(fd, 0, SEEK_CUR) >= 0;
	int skipped = 0;
	struct vbas_pool_info pi;
	if (sparse && (r = vbas_pool_info(pool, &pi))) {
		rc = lib_fail(a->cmd, a->pos[0], r);
		goto close;
	}
	struct progress pr;
	uint64_t want = left;
	progress_start(&pr, a, "read", want);
	stop_signals(1);
	while (left) {
		size_t n = left < COPY_CHUNK ? (size_t)left : COPY_CHUNK;
		progress_draw(&pr, want - left, 0);
		if (stop_sig) {
			rc = (last_errno = EINTR, fail(a->cmd, a->pos[1], "stopped by %s after %"
						       PRIu64 " of %" PRIu64 " bytes", strsignal(stop_sig),
						       want - left, want));
			break;
		}
		r = vbas_pread(vol, buf, n, off);
		if (r) {
			rc = lib_fail(a->cmd, a->pos[0], r);
			break;
		}
		struct rd o = { fd, buf, 0 };
		if (sparse ? split_zero_blocks(buf, n, off, pi.block_size, rd_piece, &o)
			   : write_full(fd, buf, n) < 0) {
			rc = fail(a->cmd, fname, "write: %s", strerror(errno));
			break;
		}
		skipped = sparse && o.last_zero;
		off += n;
		left -= n;
	}
	stop_signals(0);
	if (pr.drawn)
		progress_draw(&pr, want - left, 1);
	/* A hole at the end: the file's size says where it ends. */
	if (!rc && skipped) {
		off_t end = lseek(fd, 0, SEEK_CUR);
		if (end < 0 || ftruncate(fd, end) < 0)
			rc = fail(a->cmd, fname, "truncate: %s", strerror(errno));
	}
	if (file && fd >= 0 && close(fd) < 0 && !rc)
		rc = fail(a->cmd, file, "close: %s", strerror(errno));
close:
	free(buf);
	return close_vol(a, pool, vol, rc);
}

static int cmd_discard(const struct args *a)
{
	struct vbas_vol_info info;
	struct vbas_pool *pool;
	struct vbas_vol *vol;
	int r, rc;

	if (!(a->seen & O_OFFSET))
		return usage_err(a->cmd, "--offset", "missing (required)");
	if (!(a->seen & O_LENGTH))
		return usage_err(a->cmd, "--length", "missing (required)");
	char off[24], len[24], *body = NULL;
	snprintf(off, sizeof(off), "%" PRIu64, a->offset);
	snprintf(len, sizeof(len), "%" PRIu64, a->length);
	const char *req[4] = { "discard", a->pos[1], off, len };
	rc = open_vol(a, 0, req, 4, &body, &pool, &vol, &info);
	free(body);
	if (rc || !pool)
		return rc;
	r = vbas_discard(vol, a->offset, a->length, 0);
	if (r)
		rc = lib_fail(a->cmd, a->pos[0], r);
	return close_vol(a, pool, vol, rc);
}

/* The columns of vbas map. */
enum { M_OFFSET, M_LENGTH, M_PHYSICAL, M_SHARED, M_RESERVED, M_NCOLS };
static const struct col_def map_cols[M_NCOLS] = {
	[M_OFFSET] = { "OFFSET", "offset", COL_OFFSET, 1, NULL, NULL, "where the extent starts" },
	[M_LENGTH] = { "LENGTH", "length", COL_SIZE, 1, NULL, NULL, "its length" },
	[M_PHYSICAL] = { "PHYSICAL", "physical", COL_OFFSET, 1, NULL, NULL,
			 "where its data is in the pool" },
	[M_SHARED] = { "SHARED", "shared", COL_BOOL, 1, "shared", "-",
		       "its blocks are shared with another volume" },
	[M_RESERVED] = { "RESERVED", "reserved", COL_BOOL, 1, "reserved", "-",
			 "in a reserved range" },
};

static int map_cb(const struct vbas_extent *e, void *arg)
{
	struct table *tb = arg;
	struct libscols_line *ln = table_line(tb);
	if (table_u64(tb, ln, M_OFFSET, e->offset) || table_u64(tb, ln, M_LENGTH, e->length) ||
	    table_u64(tb, ln, M_PHYSICAL, e->physical) ||
	    table_bool(tb, ln, M_SHARED, !!(e->flags & VBAS_EXTENT_SHARED)) ||
	    table_bool(tb, ln, M_RESERVED, !!(e->flags & VBAS_EXTENT_RESERVED)) ||
	    table_row_done(tb))
		return -ENOMEM;
	return 0;
}

static int cmd_map(const struct args *a)
{
	struct vbas_vol_info info;
	struct vbas_pool *pool;
	struct vbas_vol *vol;
	struct table tb;
	int r, rc = table_for(a, &tb, "extents", map_cols, M_NCOLS, TABLE_STREAM);
	if (rc)
		return rc;
	rc = open_vol(a, VBAS_OPEN_RDONLY, NULL, 0, NULL, &pool, &vol, &info);
	if (rc) {
		table_free(&tb);
		return rc;
	}
	r = vbas_extents(vol, 0, info.size, map_cb, &tb);
	if (r)
		rc = lib_fail(a->cmd, a->pos[0], r);
	rc = table_done(a, &tb, rc);
	return close_vol(a, pool, vol, rc);
}

struct check_out {
	FILE *f;          /* problems: lines, or JSON strings for --json */
	int json;
	uint64_t n;
};

static void check_cb(const char *problem, void *arg)
{
	struct check_out *c = arg;
	if (c->json) {
		if (c->n)
			fputc(',', c->f);
		json_str(c->f, problem);
	} else {
		fprintf(c->f, "%s\n", problem);
	}
	c->n++;
}

/* Ask the server of POOL for a pin (docs/nbd.md): *GEN is the generation
 * of its last commit, and the returned descriptor holds the pin until it
 * is closed.  -1 if no server listens; -2 if it refused (*MSG says why,
 * *ERR its errno). */
static int ctl_pin(const char *pool, uint64_t *gen, char *msg, size_t mlen, int *err)
{
	struct timeval tv = { .tv_sec = 30 };
	char reply[CTL_MAX + 1];
	size_t got = 0;
	int fd = ctl_connect(pool);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	/* The answer to a pin is one line; the connection stays open. */
	int ok = write(fd, "pin", 4) == 4 && !shutdown(fd, SHUT_WR);
	while (ok && got < sizeof(reply) - 1 && !memchr(reply, '\n', got)) {
		ssize_t k = read(fd, reply + got, sizeof(reply) - 1 - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		got += (size_t)k;
	}
	reply[got] = 0;
	char *tab = strchr(reply, '\t'), *end;
	*err = EPROTO;
	snprintf(msg, mlen, "the server's control channel gave no answer to a pin");
	if (ok && tab) {
		*err = atoi(reply);
		if (*err) {
			snprintf(msg, mlen, "%s", tab + 1);
		} else {
			errno = 0;
			*gen = strtoull(tab + 1, &end, 10);
			if (!errno && end != tab + 1 && !strcmp(end, "\n"))
				return fd;
			*err = EPROTO;
			snprintf(msg, mlen, "%s", ctl_unreadable);
		}
	}
	close(fd);
	return -2;
}

/* Open the served pool PATH read-only under the pin taken at generation
 * GEN: its newest commit, which must be GEN or later.  Only a superblock
 * being written while it is read (torn: the older slot is taken) gives an
 * older one; try again then. */
static int open_pinned(const struct args *a, uint64_t gen, struct vbas_pool **pool,
		       uint64_t *opened)
{
	struct vbas_open_opts o = { .cache_bytes = a->cache,
				    .flags = VBAS_OPEN_RDONLY | VBAS_OPEN_PINNED };
	struct vbas_pool_info info;
	for (int tries = 0;; tries++) {
		int r = vbas_open(a->pos[0], &o, pool);
		if (!r)
			r = vbas_pool_info(*pool, &info);
		if (r) {
			int rc = lib_fail(a->cmd, a->pos[0], r);
			if (*pool)
				vbas_close(*pool);
			*pool = NULL;
			return rc;
		}
		if (info.generation >= gen) {
			*opened = info.generation;
			return 0;
		}
		vbas_close(*pool);
		*pool = NULL;
		if (tries == 50)
			return fail(a->cmd, a->pos[0], "the newest commit on the device is %" PRIu64
				    ", older than the server's %" PRIu64 " (is the file the one served?)",
				    info.generation, gen);
		usleep(10000);
	}
}

/* ---- fsmap ----------------------------------------------------------------- */

static const char *const fsmap_kinds[] = {
	[VBAS_FSMAP_FREE] = "free", [VBAS_FSMAP_SUPERBLOCK] = "superblock",
	[VBAS_FSMAP_VOLTAB] = "volume-table", [VBAS_FSMAP_REFCOUNT] = "refcount-tree",
	[VBAS_FSMAP_MAPPING] = "mapping-tree", [VBAS_FSMAP_DATA] = "data",
	[VBAS_FSMAP_RMAP] = "reverse-map",
};

/* Bytes per owner, for --summary: the pool-wide kinds, and per volume its
 * data and its mapping tree's nodes. */
struct fsmap_sum {
	uint64_t kind[VBAS_FSMAP_RMAP + 1];
	struct fsmap_vol { uint64_t id, data, nodes; char name[VBAS_NAME_MAX + 1]; } *v;
	size_t nv, cap;
};

/* The columns of vbas fsmap. */
enum { F_PHYSICAL, F_LENGTH, F_OWNER, F_LEVEL, F_VOLUME_ID, F_LOGICAL, F_VOLUME, F_NCOLS };
static const struct col_def fsmap_cols[F_NCOLS] = {
	[F_PHYSICAL] = { "PHYSICAL", "physical", COL_OFFSET, 1, NULL, NULL,
			 "where the range starts in the pool" },
	[F_LENGTH] = { "LENGTH", "length", COL_SIZE, 1, NULL, NULL, "its length" },
	[F_OWNER] = { "OWNER", "owner", COL_STR, 1, NULL, NULL,
		      "data, mapping-tree, free, superblock, ...", 13 },
	[F_LEVEL] = { "LEVEL", "level", COL_NUM, 1, NULL, NULL,
		      "a tree node's level (0: a leaf)", 5 },
	[F_VOLUME_ID] = { "VOLUME_ID", "volume_id", COL_NUM, 0, NULL, NULL,
			  "the id of VOLUME" },
	[F_LOGICAL] = { "LOGICAL", "logical", COL_OFFSET, 1, NULL, NULL,
			"data: where it is in the volume" },
	[F_VOLUME] = { "VOLUME", "volume", COL_STR, 1, NULL, NULL,
		       "the volume whose data or mapping tree it is" },
};

struct fsmap_out {
	const struct args *a;
	int json, summary;
	size_t n;
	struct fsmap_sum sum;
	struct table tb;
	int oom;
};

static int fsmap_cb(const struct vbas_fsmap_rec *x, void *arg)
{
	struct fsmap_out *o = arg;
	if (o->summary) {
		o->sum.kind[x->kind] += x->length;
		if (x->kind != VBAS_FSMAP_DATA && x->kind != VBAS_FSMAP_MAPPING)
			return 0;
		size_t i;
		for (i = 0; i < o->sum.nv && o->sum.v[i].id != x->volume; i++)
			;
		if (i == o->sum.nv) {
			if (o->sum.nv == o->sum.cap) {
				size_t nc = o->sum.cap ? 2 * o->sum.cap : 16;
				struct fsmap_vol *nv = realloc(o->sum.v, nc * sizeof(*nv));
				if (!nv)
					return o->oom = 1, -ENOMEM;
				o->sum.v = nv;
				o->sum.cap = nc;
			}
			o->sum.v[i] = (struct fsmap_vol){ .id = x->volume };
			snprintf(o->sum.v[i].name, sizeof(o->sum.v[i].name), "%s", x->name);
			o->sum.nv++;
		}
		*(x->kind == VBAS_FSMAP_DATA ? &o->sum.v[i].data : &o->sum.v[i].nodes) += x->length;
		return 0;
	}
	struct table *tb = &o->tb;
	struct libscols_line *ln = table_line(tb);
	int lv = (x->kind >= VBAS_FSMAP_VOLTAB && x->kind <= VBAS_FSMAP_MAPPING) ||
		 x->kind == VBAS_FSMAP_RMAP;
	int vol = x->kind == VBAS_FSMAP_MAPPING || x->kind == VBAS_FSMAP_DATA;
	if (table_u64(tb, ln, F_PHYSICAL, x->physical) || table_u64(tb, ln, F_LENGTH, x->length) ||
	    table_str(tb, ln, F_OWNER, fsmap_kinds[x->kind]) ||
	    (lv ? table_u64(tb, ln, F_LEVEL, x->level) : table_none(tb, ln, F_LEVEL)) ||
	    (vol ? table_u64(tb, ln, F_VOLUME_ID, x->volume) : table_none(tb, ln, F_VOLUME_ID)) ||
	    (x->kind == VBAS_FSMAP_DATA ? table_u64(tb, ln, F_LOGICAL, x->logical)
					: table_none(tb, ln, F_LOGICAL)) ||
	    table_str(tb, ln, F_VOLUME, vol ? x->name : NULL) || table_row_done(tb))
		return o->oom = 1, -ENOMEM;
	o->n++;
	return 0;
}

static int cmp_fsmap_vol(const void *a, const void *b)
{
	const struct fsmap_vol *x = a, *y = b;
	return x->id < y->id ? -1 : x->id > y->id;
}

static void fsmap_summary(struct fsmap_out *o)
{
	struct fsmap_sum *s = &o->sum;
	char h[32];
	if (s->nv)
		qsort(s->v, s->nv, sizeof(*s->v), cmp_fsmap_vol);
	if (o->json) {
		printf("{\"free\":%" PRIu64 ",\"superblock\":%" PRIu64 ",\"volume_table\":%" PRIu64
		       ",\"refcount_tree\":%" PRIu64 ",\"reverse_map\":%" PRIu64 ",\"volumes\":[",
		       s->kind[VBAS_FSMAP_FREE], s->kind[VBAS_FSMAP_SUPERBLOCK],
		       s->kind[VBAS_FSMAP_VOLTAB], s->kind[VBAS_FSMAP_REFCOUNT],
		       s->kind[VBAS_FSMAP_RMAP]);
		for (size_t i = 0; i < s->nv; i++) {
			printf("%s{\"name\":", i ? "," : "");
			json_str(stdout, s->v[i].name);
			printf(",\"id\":%" PRIu64 ",\"data\":%" PRIu64 ",\"mapping_tree\":%" PRIu64 "}",
			       s->v[i].id, s->v[i].data, s->v[i].nodes);
		}
		printf("]}\n");
		return;
	}
	const struct { const char *k; int kind; } rows[] = {
		{ "free", VBAS_FSMAP_FREE }, { "superblocks", VBAS_FSMAP_SUPERBLOCK },
		{ "volume table", VBAS_FSMAP_VOLTAB }, { "refcount tree", VBAS_FSMAP_REFCOUNT },
		{ "reverse map", VBAS_FSMAP_RMAP },
	};
	for (size_t k = 0; k < sizeof(rows) / sizeof(rows[0]); k++)
		printf("%-32s %20" PRIu64 "  %s\n", rows[k].k, s->kind[rows[k].kind],
		       human(s->kind[rows[k].kind], h, sizeof(h)));
	for (size_t i = 0; i < s->nv; i++) {
		char *nm = text_name(s->v[i].name), line[VBAS_NAME_MAX * 4 + 64];
		snprintf(line, sizeof(line), "data of '%s'", nm ? nm : s->v[i].name);
		printf("%-32s %20" PRIu64 "  %s\n", line, s->v[i].data, human(s->v[i].data, h, sizeof(h)));
		snprintf(line, sizeof(line), "mapping tree of '%s'", nm ? nm : s->v[i].name);
		printf("%-32s %20" PRIu64 "  %s\n", line, s->v[i].nodes,
		       human(s->v[i].nodes, h, sizeof(h)));
		free(nm);
	}
}

/* fsmap: read-only; a served pool as of the server's last commit, under a
 * pin (as check). */
static int cmd_fsmap(const struct args *a)
{
	struct fsmap_out o = { .a = a, .json = !!(a->seen & O_JSON),
			       .summary = !!(a->seen & O_SUMMARY) };
	struct vbas_pool_info info;
	struct vbas_pool *pool = NULL;
	int r, rc;

	if ((a->seen & O_PHYSICAL) && (a->seen & (O_START | O_LENGTH)))
		return usage_err(a->cmd, "--physical", "one block: not with --start or --length");
	if ((a->seen & O_LENGTH) && !a->length)
		return usage_err(a->cmd, "--length", "must not be 0");
	if (o.summary && (a->seen & (O_OUTPUT | O_NOHEADINGS | O_RAW | O_BYTES)))
		return usage_err(a->cmd, "--summary", "a summary, not a table: no -o, --noheadings, "
				 "--raw or --bytes");
	if (!o.summary && (rc = table_for(a, &o.tb, "ranges", fsmap_cols, F_NCOLS, TABLE_STREAM)))
		return rc;
	if ((rc = open_pool_reading(a, &pool, NULL))) {
		table_free(&o.tb);
		return rc;
	}
	r = vbas_pool_info(pool, &info);
	uint64_t start = 0, len = 0;
	if (!r && (a->seen & O_PHYSICAL)) {
		start = a->physical / info.block_size * info.block_size;
		len = info.block_size;
	} else if (!r) {
		start = (a->seen & O_START) ? a->start : 0;
		len = (a->seen & O_LENGTH) ? a->length : 0;
	}
	rc = 0;
	if (r)
		rc = lib_fail(a->cmd, a->pos[0], r);
	else if ((a->seen & O_PHYSICAL) && a->physical >= info.size)
		rc = fail(a->cmd, a->pos[0], "--physical %" PRIu64 " is past the end of the pool (%"
			  PRIu64 " bytes)", a->physical, info.size);
	if (!rc) {
		r = vbas_fsmap(pool, start, len, fsmap_cb, &o);
		if (r)
			rc = lib_fail(a->cmd, a->pos[0], o.oom ? -ENOMEM : r);
		else if (o.summary)
			fsmap_summary(&o);
		if (!rc && o.json)
			json_started = 1;
	}
	if (!o.summary)
		rc = table_done(a, &o.tb, rc);
	free(o.sum.v);
	return close_pool(a, pool, rc);
}

/* check: read-write when it can (an interrupted delete is finished first),
 * read-only with --no-modify, when it may not write, when the pool is open
 * read-only elsewhere, and when a server holds it (under a pin). */
/* ---- repair --------------------------------------------------------------- */

struct repair_out {
	int json;
	size_t n;
};

static void repair_msg(const char *msg, void *arg)
{
	struct repair_out *o = arg;
	if (o->json) {
		printf("%s", o->n ? "," : "");
		json_str(stdout, msg);
	} else {
		printf("%s\n", msg);
	}
	o->n++;
}

static int cmd_repair(const struct args *a)
{
	struct vbas_pool *pool;
	struct vbas_repair_stats st;
	struct repair_out o = { .json = !!(a->seen & O_JSON) };
	int dry = !!(a->seen & O_DRY_RUN), rc;
	if ((rc = open_pool(a, VBAS_OPEN_REPAIR | (dry ? VBAS_OPEN_RDONLY : 0), &pool)))
		return rc;
	if (o.json) {
		json_started = 1;
		printf("{\"messages\":[");
	}
	int r = vbas_repair(pool, dry ? VBAS_REPAIR_DRY_RUN : 0, repair_msg, &o, &st);
	int clean = 0;
	struct vbas_check_stats cs = { 0 };
	if (!r && !dry)
		clean = vbas_check(pool, NULL, NULL, &cs) == 0;
	if (o.json) {
		printf("],\"dry_run\":%s,\"refcount_rebuilt\":%s,\"rmap_rebuilt\":%s,"
		       "\"refcount_records\":%" PRIu64 ",\"rmap_records\":%" PRIu64
		       ",\"leaves_rebuilt\":%u,\"interior_rebuilt\":%u,\"names_rebuilt\":%s"
		       ",\"unrepairable\":%" PRIu64 ",\"clean\":%s", dry ? "true" : "false",
		       st.refcount_rebuilt ? "true" : "false", st.rmap_rebuilt ? "true" : "false",
		       st.refcount_records, st.rmap_records, st.leaves_rebuilt, st.interior_rebuilt,
		       st.names_rebuilt ? "true" : "false", st.unrepairable,
		       !r && !dry ? (clean ? "true" : "false") : "null");
		if (r) {
			printf(",\"error\":");
			json_str(stdout, vbas_errmsg());
		}
		printf("}\n");
	} else if (!r && !dry) {
		printf("%s: %s\n", a->pos[0], clean ? "clean (vbas check)" :
		       "NOT CLEAN after the repair: run vbas check");
	}
	if (r) {
		rc = lib_fail(a->cmd, a->pos[0], r);
		return close_pool(a, pool, rc);
	}
	return close_pool(a, pool, !dry && !clean ? EXIT_RUNTIME : 0);
}

static int cmd_check(const struct args *a)
{
	struct check_out c = { .json = !!(a->seen & O_JSON) };
	struct vbas_check_stats st = { 0 };
	struct vbas_open_opts o = { .cache_bytes = a->cache };
	struct vbas_pool_info info;
	struct vbas_pool *pool = NULL;
	char *text = NULL;
	size_t tlen = 0;
	int ro = !!(a->seen & O_NOMODIFY), pin = -1, r, rc = 0;
	uint64_t gen = 0;

	o.flags = ro ? VBAS_OPEN_RDONLY : 0;
	r = vbas_open(a->pos[0], &o, &pool);
	if (r == -EACCES || r == -EROFS || r == -EPERM) {
		/* No write permission: a read-only file or device, a read-only
		 * mount, an immutable file. */
		fprintf(stderr, "vbas: %s: %s: cannot open for writing (%s): checking read-only; "
			"interrupted work (a delete in progress) is not finished\n", a->cmd,
			a->pos[0], strerror(-r));
		ro = 1;
		o.flags = VBAS_OPEN_RDONLY;
		r = vbas_open(a->pos[0], &o, &pool);
	}
	if (r == -EBUSY && !ro) {
		/* Open read-only elsewhere (serve --readonly): the lock is shared. */
		o.flags = VBAS_OPEN_RDONLY;
		r = vbas_open(a->pos[0], &o, &pool);
		if (!r) {
			ro = 1;
			fprintf(stderr, "vbas: %s: %s: the pool is open read-only elsewhere: checking "
				"read-only; interrupted work (a delete in progress) is not finished\n",
				a->cmd, a->pos[0]);
		}
	}
	if (r == -EBUSY) {
		/* A server holds it: check its last commit under a pin. */
		if ((rc = open_pool_reading(a, &pool, &gen)))
			return rc;
		ro = 1;
		pin = served_pin;
	} else if (r) {
		return lib_fail(a->cmd, a->pos[0], r);
	}
	if (pin < 0) {
		r = vbas_pool_info(pool, &info);
		if (r)
			return close_pool(a, pool, lib_fail(a->cmd, a->pos[0], r));
		gen = info.generation;
	}
	/* A test hook: hold the pool open (and a served pool's pin) this long
	 * before checking. */
	const char *pause = getenv("VBAS_TEST_CHECK_PAUSE_MS");
	if (pause)
		usleep((useconds_t)strtoul(pause, NULL, 10) * 1000);
	c.f = c.json ? open_memstream(&text, &tlen) : stdout;
	if (!c.f) {
		rc = fail(a->cmd, a->pos[0], "%s", strerror(errno));
		goto out;
	}
	struct progress pr;
	lib_progress_start(&pr, a, pool, "check", 0);
	pr.count = "metadata blocks";
	r = vbas_check(pool, check_cb, &c, &st);
	lib_progress_end(&pr, pool, r && r != -EUCLEAN ? r : 0);
	if (r == -EINTR && stop_sig) {
		last_errno = EINTR;
		rc = fail(a->cmd, a->pos[0], "stopped by %s: the check did not finish, and says "
			  "nothing of the pool", strsignal(stop_sig));
		if (c.json)
			fclose(c.f);
		goto out;
	}
	if (pin >= 0) {
		/* The server sends nothing more: readable means it closed the
		 * connection, so the pin may have gone during the check. */
		if (!pin_held(pin)) {
			rc = fail(a->cmd, a->pos[0], "the server went away during the check, and "
				  "with it the pin: the result is not valid; check again");
			if (c.json)
				fclose(c.f);
			goto out;
		}
	}
	if (r && r != -EUCLEAN) {
		rc = lib_fail(a->cmd, a->pos[0], r);
	} else {
		if (r)
			rc = lib_fail(a->cmd, a->pos[0], r);
		if (c.json) {
			fflush(c.f);
			json_started = 1;
			printf("{\"clean\":%s,\"problems\":[%s],\"nodes\":%" PRIu64
			       ",\"extents\":%" PRIu64 ",\"refcount_records\":%" PRIu64
			       ",\"rmap_records\":%" PRIu64
			       ",\"volumes\":%" PRIu64 ",\"problem_count\":%" PRIu64
			       ",\"read_only\":%s,\"served\":%s,\"generation\":%" PRIu64 "}\n",
			       r ? "false" : "true", text ? text : "", st.nodes, st.extents,
			       st.refcount_records, st.rmap_records, st.volumes, st.problems,
			       ro ? "true" : "false",
			       pin >= 0 ? "true" : "false", gen);
		} else {
			printf("%s: %" PRIu64 " problem(s); %" PRIu64 " tree nodes, %" PRIu64
			       " extents, %" PRIu64 " refcount records, %" PRIu64 " reverse-map "
			       "records, %" PRIu64 " volumes%s%s\n",
			       r ? "NOT CLEAN" : "clean", st.problems, st.nodes, st.extents,
			       st.refcount_records, st.rmap_records, st.volumes,
			       pin >= 0 ? "; the server's commit" : ro ? "; read-only" : "",
			       pin >= 0 ? ", read-only" : "");
		}
	}
	if (c.json)
		fclose(c.f);
out:
	free(text);
	return close_pool(a, pool, rc);
}

/* ---- Sharing ---------------------------------------------------------------- */

static int snapshot_common(const struct args *a, unsigned flags)
{
	struct vbas_pool *pool;
	/* A served pool: the server takes the snapshot, beside its writes. */
	if (a->seen & O_NO_RESERVE)
		flags |= VBAS_SNAP_NORESERVE;
	if (a->seen & O_EXPENDABLE)
		flags |= VBAS_SNAP_EXPENDABLE;
	/* The flags as a fourth field: "noreserve", "expendable", or both
	 * joined by a comma. */
	const char *how = (a->seen & O_NO_RESERVE) && (a->seen & O_EXPENDABLE) ?
			  "noreserve,expendable" : (a->seen & O_NO_RESERVE) ? "noreserve" :
			  "expendable";
	const char *req[4] = { flags & VBAS_SNAP_WRITABLE ? "clone" : "snapshot", a->pos[1],
			       a->pos[2], how };
	int r, rc;
	if (open_or_ask_server(a, 0, req, (a->seen & (O_NO_RESERVE | O_EXPENDABLE)) ? 4 : 3,
			       &pool, &rc, NULL)) {
		if (!rc && (flags & VBAS_SNAP_WRITABLE))
			overcommit_note(a, NULL);
		return rc;
	}
	r = vbas_vol_snapshot(pool, a->pos[1], a->pos[2], flags);
	if (r)
		rc = lib_fail(a->cmd, a->pos[0], r);
	else if (flags & VBAS_SNAP_WRITABLE)
		overcommit_note(a, pool);
	return close_pool(a, pool, rc);
}

/* reserve and unreserve: [OFF, OFF+LEN), by default from 0 (or OFF) to the
 * end of the volume. */
static int reserve_common(const struct args *a, int un)
{
	char off[24], len[24];
	struct vbas_vol_info info;
	struct vbas_pool *pool;
	struct vbas_vol *vol;
	uint64_t o = (a->seen & O_OFFSET) ? a->offset : 0;
	uint64_t l = (a->seen & O_LENGTH) ? a->length : 0;
	const char *what = un ? "unreserve" : "reserve";
	int r, rc;

	if ((a->seen & O_LENGTH) && !l)
		return usage_err(a->cmd, "--length", "must not be 0");
	snprintf(off, sizeof(off), "%" PRIu64, o);
	snprintf(len, sizeof(len), "%" PRIu64, l);
	const char *req[4] = { what, a->pos[1], off, len };
	if (open_or_ask_server(a, 0, req, 4, &pool, &rc, NULL))
		return rc;
	r = vbas_vol_open(pool, a->pos[1], &vol);
	if (r)
		return close_pool(a, pool, lib_fail(a->cmd, a->pos[0], r));
	r = vbas_vol_info(vol, &info);
	if (!r && !l)
		l = o < info.size ? info.size - o : 1;   /* (past the end: refused) */
	if (!r)
		r = un ? vbas_vol_unreserve(vol, o, l) : vbas_vol_reserve(vol, o, l);
	if (!r)
		r = vbas_vol_info(vol, &info);
	if (r) {
		rc = lib_fail(a->cmd, a->pos[0], r);
	} else {
		char h[32];
		printf("'%s': %" PRIu64 " bytes (%s) reserved\n", a->pos[1], info.reserved,
		       human(info.reserved, h, sizeof(h)));
	}
	return close_vol(a, pool, vol, rc);
}

static int cmd_reserve(const struct args *a)
{
	return reserve_common(a, 0);
}

static int cmd_unreserve(const struct args *a)
{
	return reserve_common(a, 1);
}

/* rename: through the server when it serves the pool (the export's
 * name changes; connected clients keep their connection). */
static int cmd_rename(const struct args *a)
{
	struct vbas_pool *pool;
	const char *req[3] = { "rename", a->pos[1], a->pos[2] };
	int r, rc;
	if (open_or_ask_server(a, 0, req, 3, &pool, &rc, NULL))
		return rc;
	r = vbas_vol_rename(pool, a->pos[1], a->pos[2]);
	if (r)
		rc = lib_fail(a->cmd, a->pos[0], r);
	return close_pool(a, pool, rc);
}

static int cmd_snapshot(const struct args *a)
{
	return snapshot_common(a, 0);
}

static int cmd_clone(const struct args *a)
{
	return snapshot_common(a, VBAS_SNAP_WRITABLE);
}

/* The pool's figures after a change made through the server; 0 or an
 * exit status. */
static int server_info(const struct args *a, struct vbas_pool_info *i)
{
	const char *req[1] = { "info" };
	char *msg;
	int e = ctl_request(a->pos[0], req, 1, -1, &msg);
	int bad = e != 0 || !msg || ctl_get_info(msg, i);
	free(msg);
	return bad ? fail(a->cmd, a->pos[0], "%s", ctl_unreadable) : 0;
}

/* What grow and set print: the pool's size and settings. */
static void print_settings(const struct args *a, const struct vbas_pool_info *i)
{
	char h[32], h2[32], v1[16], v2[16];
	if (a->seen & O_JSON) {
		json_started = 1;
		printf("{\"size\":%" PRIu64 ",\"available\":%" PRIu64 ",\"low_water\":%s,"
		       "\"expendable_floor\":%s}\n", i->size, i->available,
		       permille_json(i->low_water, v1, sizeof(v1)),
		       permille_json(i->expendable_floor, v2, sizeof(v2)));
		return;
	}
	printf("%s: %" PRIu64 " bytes (%s), %s available; low water %s, expendable floor %s\n",
	       a->pos[0], i->size, human(i->size, h, sizeof(h)),
	       human(i->available, h2, sizeof(h2)),
	       permille_text(i->low_water, v1, sizeof(v1)),
	       permille_text(i->expendable_floor, v2, sizeof(v2)));
}

static int cmd_grow(const struct args *a)
{
	struct vbas_pool_info i;
	struct vbas_pool *pool;
	char size[32];
	int r, rc;
	if (!(a->seen & O_SIZE))
		return usage_err(a->cmd, "--size", "missing (the new size, or +SIZE to add)");
	if (a->size_plus && !a->size)
		return usage_err(a->cmd, "--size", "+0 adds nothing");
	snprintf(size, sizeof(size), "%s%" PRIu64, a->size_plus ? "+" : "", a->size);
	const char *req[2] = { "grow", size };
	if (open_or_ask_server(a, 0, req, 2, &pool, &rc, NULL)) {
		if (!rc && !(rc = server_info(a, &i)))
			print_settings(a, &i);
		return rc;
	}
	r = vbas_pool_info(pool, &i);
	uint64_t want = a->size_plus ? i.size + a->size : a->size;
	if (!r && a->size_plus && want < i.size)
		return close_pool(a, pool, fail(a->cmd, a->pos[0], "%" PRIu64 " bytes more is "
						"past what a pool can hold", a->size));
	if (!r)
		r = vbas_pool_grow(pool, want);
	if (!r)
		r = vbas_pool_info(pool, &i);
	if (r)
		rc = lib_fail(a->cmd, a->pos[0], r);
	else
		print_settings(a, &i);
	return close_pool(a, pool, rc);
}

/* What resize-pool prints after a shrink: the settings, and what moved. */
static void print_shrunk(const struct args *a, const struct vbas_pool_info *i,
			 const struct vbas_shrink_stats *st)
{
	char h[32], h2[32], h3[32];
	if (a->seen & O_JSON) {
		json_started = 1;
		printf("{\"size\":%" PRIu64 ",\"available\":%" PRIu64 ",\"moved_data\":%" PRIu64
		       ",\"moved_nodes\":%" PRIu64 ",\"steps\":%" PRIu64 "}\n", i->size, i->available,
		       st->data_blocks * i->block_size, st->nodes, st->steps);
		return;
	}
	printf("%s: %" PRIu64 " bytes (%s), %s available; moved %s of data and %" PRIu64
	       " metadata blocks in %" PRIu64 " commit(s)\n", a->pos[0], i->size,
	       human(i->size, h, sizeof(h)), human(i->available, h2, sizeof(h2)),
	       human(st->data_blocks * i->block_size, h3, sizeof(h3)), st->nodes, st->steps);
}

static int cmd_resize_pool(const struct args *a)
{
	struct vbas_pool_info i;
	struct vbas_shrink_stats st = { 0 };
	struct vbas_pool *pool;
	char size[32];
	int r, rc;
	int cancel = !!(a->seen & O_CANCEL);
	if (cancel && (a->seen & O_SIZE))
		return usage_err(a->cmd, "--cancel", "cancels a shrink: no --size with it");
	if (!cancel && !(a->seen & O_SIZE))
		return usage_err(a->cmd, "--size", "missing (the new size, or +SIZE to add)");
	if (a->size_plus && !a->size)
		return usage_err(a->cmd, "--size", "+0 adds nothing");
	if (cancel) {
		const char *req[1] = { "shrink-cancel" };
		if (open_or_ask_server(a, VBAS_OPEN_NO_RESUME, req, 1, &pool, &rc, NULL)) {
			if (!rc && !(rc = server_info(a, &i)))
				print_settings(a, &i);
			return rc;
		}
		r = vbas_pool_shrink_cancel(pool);
		if (!r)
			r = vbas_pool_info(pool, &i);
		if (r)
			return close_pool(a, pool, lib_fail(a->cmd, a->pos[0], r));
		print_settings(a, &i);
		return close_pool(a, pool, 0);
	}
	/* Whether it grows or shrinks is known once the pool's size is. */
	const char *ireq[1] = { "info" };
	char *body;
	if (open_or_ask_server(a, VBAS_OPEN_NO_RESUME, ireq, 1, &pool, &rc, &body)) {
		if (rc)
			return rc;
		int bad = !body || ctl_get_info(body, &i);
		free(body);
		if (bad)
			return fail(a->cmd, a->pos[0], "the server's answer to info is not one this "
				    "vbas reads");
		uint64_t want = a->size_plus ? i.size + a->size : a->size;
		if (a->size_plus && want < i.size)
			return fail(a->cmd, a->pos[0], "%" PRIu64 " bytes more is past what a pool "
				    "can hold", a->size);
		if (want / i.block_size * i.block_size >= i.size) {
			if (i.shrink_to)
				return fail(a->cmd, a->pos[0], "a shrink to %" PRIu64 " bytes did not "
					    "finish: go on with it (a size below %" PRIu64 "), or --cancel "
					    "it first", i.shrink_to, i.size);
			snprintf(size, sizeof(size), "%" PRIu64, want);
			const char *req[2] = { "grow", size };
			if ((rc = ask_server(a, req, 2)))
				return rc;
			if (!(rc = server_info(a, &i)))
				print_settings(a, &i);
			return rc;
		}
		snprintf(size, sizeof(size), "%" PRIu64, want);
		const char *req[2] = { "shrink", size };
		if ((rc = ask_server_body(a, req, 2, &body)))
			return rc;
		unsigned long long f[4];
		bad = !body || sscanf(body, "%llu %llu %llu %llu", &f[0], &f[1], &f[2], &f[3]) != 4;
		free(body);
		if (bad)
			return fail(a->cmd, a->pos[0], "the server's answer to shrink is not one this "
				    "vbas reads");
		st.data_blocks = f[1];
		st.nodes = f[2];
		st.steps = f[3];
		if ((rc = server_info(a, &i)))
			return rc;
		print_shrunk(a, &i, &st);
		return 0;
	}
	r = vbas_pool_info(pool, &i);
	uint64_t want = a->size_plus ? i.size + a->size : a->size;
	if (!r && a->size_plus && want < i.size)
		return close_pool(a, pool, fail(a->cmd, a->pos[0], "%" PRIu64 " bytes more is "
						"past what a pool can hold", a->size));
	int grow = !r && want / i.block_size * i.block_size >= i.size;
	if (grow && i.shrink_to)
		return close_pool(a, pool, fail(a->cmd, a->pos[0], "a shrink to %" PRIu64 " bytes "
						"did not finish: go on with it (a size below %" PRIu64
						"), or --cancel it first", i.shrink_to, i.size));
	if (!r && grow)
		r = vbas_pool_grow(pool, want);
	else if (!r)
		r = vbas_pool_shrink(pool, want, &st);
	if (!r)
		r = vbas_pool_info(pool, &i);
	if (r)
		return close_pool(a, pool, lib_fail(a->cmd, a->pos[0], r));
	if (grow)
		print_settings(a, &i);
	else
		print_shrunk(a, &i, &st);
	return close_pool(a, pool, 0);
}

/* vbas set POOL NAME --readonly|--writable. */
static int set_volume(const struct args *a)
{
	struct vbas_pool *pool;
	int ro = !!(a->seen & O_READONLY), r, rc;
	if ((a->seen & (O_LOW_WATER | O_FLOOR | O_RMAP)) || !(a->seen & (O_READONLY | O_WRITABLE)))
		return usage_err(a->cmd, a->pos[1], "a volume takes --readonly or --writable (the "
				 "pool's settings go without a NAME)");
	if ((a->seen & O_READONLY) && (a->seen & O_WRITABLE))
		return usage_err(a->cmd, "--readonly", "not with --writable");
	const char *req[3] = { "readonly", a->pos[1], ro ? "1" : "0" };
	if (open_or_ask_server(a, 0, req, 3, &pool, &rc, NULL))
		return rc ? rc : (printf("volume '%s' is %s\n", a->pos[1],
					 ro ? "read-only" : "writable"), 0);
	r = vbas_vol_set_readonly(pool, a->pos[1], ro);
	if (r)
		return close_pool(a, pool, lib_fail(a->cmd, a->pos[0], r));
	printf("volume '%s' is %s\n", a->pos[1], ro ? "read-only" : "writable");
	return close_pool(a, pool, 0);
}

static int cmd_set(const struct args *a)
{
	struct vbas_pool_settings s;
	struct vbas_pool *pool;
	uint32_t lw = 0, fl = 0;
	char v1[16], v2[16];
	int r, rc;
	if (a->npos == 2)
		return set_volume(a);
	if (a->seen & (O_READONLY | O_WRITABLE))
		return usage_err(a->cmd, (a->seen & O_READONLY) ? "--readonly" : "--writable",
				 "a volume's setting: give its NAME");
	if (!(a->seen & (O_LOW_WATER | O_FLOOR | O_RMAP)))
		return usage_err(a->cmd, "--low-water", "give --low-water, --expendable-floor "
				 "or --rmap");
	if ((a->seen & O_LOW_WATER) && parse_percent(a->low_water, &lw))
		return usage_err(a->cmd, "--low-water", "'%s' is not a percentage from 0 to 100 "
				 "(80%%, 12.5%%, or off)", a->low_water);
	if ((a->seen & O_FLOOR) && parse_percent(a->floor, &fl))
		return usage_err(a->cmd, "--expendable-floor", "'%s' is not a percentage from 0 "
				 "to 100 (5%%, 2.5%%, or off)", a->floor);
	snprintf(v1, sizeof(v1), "%u", lw);
	snprintf(v2, sizeof(v2), "%u", fl);
	const char *req1[3] = { "set", "low_water", v1 };
	const char *req2[3] = { "set", "expendable_floor", v2 };
	const char *const *first = (a->seen & O_LOW_WATER) ? req1 : req2;
	struct vbas_pool_info i;
	if (a->seen & O_RMAP) {
		/* Not through a server: the build holds the pool for its walk. */
		if ((rc = open_pool(a, 0, &pool)))
			return rc;
		r = vbas_pool_info(pool, &i);
		if (!r && !i.rmap)
			r = vbas_pool_rmap_build(pool);
		if (r)
			return close_pool(a, pool, lib_fail(a->cmd, a->pos[0], r));
		if (!(a->seen & (O_LOW_WATER | O_FLOOR))) {
			if (!(r = vbas_pool_info(pool, &i)))
				print_settings(a, &i);
			return close_pool(a, pool, r ? lib_fail(a->cmd, a->pos[0], r) : 0);
		}
		if ((rc = close_pool(a, pool, 0)))
			return rc;
	}
	if (open_or_ask_server(a, 0, first, 3, &pool, &rc, NULL)) {
		if (!rc && first == req1 && (a->seen & O_FLOOR))
			rc = ask_server(a, req2, 3);
		if (!rc && !(rc = server_info(a, &i)))
			print_settings(a, &i);
		return rc;
	}
	r = vbas_pool_get(pool, &s);
	if (a->seen & O_LOW_WATER)
		s.low_water = lw;
	if (a->seen & O_FLOOR)
		s.expendable_floor = fl;
	if (!r)
		r = vbas_pool_set(pool, &s);
	if (!r)
		r = vbas_pool_info(pool, &i);
	if (r)
		rc = lib_fail(a->cmd, a->pos[0], r);
	else
		print_settings(a, &i);
	return close_pool(a, pool, rc);
}

/* Parse positional argument I (named WHAT) as a size into OUT. */
static int pos_size(const struct args *a, int i, const char *what, uint64_t *out)
{
	char why[160];
	if (parse_size(a->pos[i], out, why, sizeof(why)))
		return usage_err(a->cmd, what, "%s", why);
	return 0;
}

/* Open POOL (pos[0]) and the volumes named pos[S] and pos[D]; one handle
 * serves both when they are the same volume. */
static int open_two(const struct args *a, unsigned flags, const char *const *req, int n,
		    char **body, int s, int d, struct vbas_pool **pool, struct vbas_vol **sv,
		    struct vbas_vol **dv, struct vbas_vol_info *sinfo)
{
	int r, rc = open_for(a, flags, req, n, pool, body);
	if (rc || !*pool)
		return rc;
	*sv = *dv = NULL;
	r = vbas_vol_open(*pool, a->pos[s], sv);
	if (!r)
		r = vbas_vol_info(*sv, sinfo);
	if (!r) {
		if (!strcmp(a->pos[s], a->pos[d]))
			*dv = *sv;
		else
			r = vbas_vol_open(*pool, a->pos[d], dv);
	}
	if (r) {
		rc = lib_fail(a->cmd, a->pos[0], r);
		if (*sv)
			vbas_vol_close(*sv);
		return close_pool(a, *pool, rc);
	}
	return 0;
}

static int close_two(const struct args *a, struct vbas_pool *pool, struct vbas_vol *sv,
		     struct vbas_vol *dv, int rc)
{
	if (dv != sv)
		vbas_vol_close(dv);
	return close_vol(a, pool, sv, rc);
}

/* What a dedupe did: SAME, N bytes shared now. */
static int dedupe_said(const struct args *a, int same, uint64_t n)
{
	if (a->seen & O_JSON)
		json_started = 1, printf("{\"same\":%s,\"deduped\":%" PRIu64 "}\n",
					 same ? "true" : "false", n);
	else if (same)
		printf("deduped %" PRIu64 " bytes\n", n);
	else
		printf("ranges differ; nothing changed\n");
	return 0;
}

/* reflink and dedupe: POOL SRC SRC_OFFSET DST DST_OFFSET LENGTH; on a
 * served pool, the server does it. */
static int cmd_reflink_dedupe(const struct args *a, int dedupe)
{
	struct vbas_vol_info sinfo;
	struct vbas_pool *pool;
	struct vbas_vol *sv, *dv;
	uint64_t soff, doff, len;
	int r, rc, same = 0;

	if ((rc = pos_size(a, 2, "SRC_OFFSET", &soff)) || (rc = pos_size(a, 4, "DST_OFFSET", &doff)) ||
	    (rc = pos_size(a, 5, "LENGTH", &len)))
		return rc;
	char *body = NULL;
	const char *req[6] = { dedupe ? "dedupe" : "reflink", a->pos[1], a->pos[2], a->pos[3],
			       a->pos[4], a->pos[5] };
	char nums[3][24];
	snprintf(nums[0], sizeof(nums[0]), "%" PRIu64, soff);
	snprintf(nums[1], sizeof(nums[1]), "%" PRIu64, doff);
	snprintf(nums[2], sizeof(nums[2]), "%" PRIu64, len);
	req[2] = nums[0];
	req[4] = nums[1];
	req[5] = nums[2];
	rc = open_two(a, 0, req, 6, &body, 1, 3, &pool, &sv, &dv, &sinfo);
	if (rc || !pool) {
		/* The server's answer to a dedupe: "SAME BYTES". */
		uint64_t n = 0;
		const char *p = body;
		if (!rc && dedupe && (!p || ctl_num(&p, &n) || (same = (int)n, ctl_num(&p, &n))))
			rc = fail(a->cmd, a->pos[0], "%s", ctl_unreadable);
		else if (!rc && dedupe)
			rc = dedupe_said(a, same, n);
		free(body);
		return rc;
	}
	if (!dedupe) {
		struct progress pr;
		lib_progress_start(&pr, a, pool, "reflink", len ? len : sinfo.size - soff);
		r = vbas_reflink(sv, soff, dv, doff, len);
		lib_progress_end(&pr, pool, r);
		if (r)
			rc = lib_fail(a->cmd, a->pos[0], r);
		return close_two(a, pool, sv, dv, rc);
	}
	r = vbas_dedupe(sv, soff, dv, doff, len, &same);
	if (r)
		rc = lib_fail(a->cmd, a->pos[0], r);
	else
		rc = dedupe_said(a, same, same ? (len ? len : sinfo.size - soff) : 0);
	return close_two(a, pool, sv, dv, rc);
}

static int cmd_reflink(const struct args *a)
{
	return cmd_reflink_dedupe(a, 0);
}

static int cmd_dedupe(const struct args *a)
{
	return cmd_reflink_dedupe(a, 1);
}

static int cmd_unshare(const struct args *a)
{
	struct vbas_vol_info info;
	struct vbas_pool *pool;
	struct vbas_vol *vol;
	struct progress pr;
	char off[24], len[24], *body = NULL;
	snprintf(off, sizeof(off), "%" PRIu64, a->offset);
	snprintf(len, sizeof(len), "%" PRIu64, (a->seen & O_LENGTH) ? a->length : 0);
	const char *req[4] = { "unshare", a->pos[1], off, len };
	int r, rc = open_vol(a, 0, req, 4, &body, &pool, &vol, &info);
	free(body);
	if (rc || !pool)
		return rc;
	/* Without --length: to the end (the library's LEN 0). */
	uint64_t l = (a->seen & O_LENGTH) ? a->length : info.size > a->offset ? info.size - a->offset : 0;
	lib_progress_start(&pr, a, pool, "unshare", l);
	r = vbas_unshare(vol, a->offset, (a->seen & O_LENGTH) ? a->length : 0);
	lib_progress_end(&pr, pool, r);
	if (r == -EINTR && stop_sig)
		rc = (last_errno = EINTR, fail(a->cmd, a->pos[1], "stopped by %s: the range is "
					       "unshared up to where it came (committed), the rest "
					       "is still shared", strsignal(stop_sig)));
	else if (r)
		rc = lib_fail(a->cmd, a->pos[0], r);
	return close_vol(a, pool, vol, rc);
}

/* The columns of vbas diff. */
enum { D_OFFSET, D_LENGTH, D_NCOLS };
static const struct col_def diff_cols[D_NCOLS] = {
	[D_OFFSET] = { "OFFSET", "offset", COL_OFFSET, 1, NULL, NULL, "where the range starts" },
	[D_LENGTH] = { "LENGTH", "length", COL_SIZE, 1, NULL, NULL, "its length" },
};

static int diff_cb(uint64_t off, uint64_t len, void *arg)
{
	struct table *tb = arg;
	struct libscols_line *ln = table_line(tb);
	if (table_u64(tb, ln, D_OFFSET, off) || table_u64(tb, ln, D_LENGTH, len) ||
	    table_row_done(tb))
		return -ENOMEM;
	return 0;
}

static int cmd_diff(const struct args *a)
{
	struct vbas_vol_info finfo;
	struct vbas_pool *pool;
	struct vbas_vol *from, *to;
	struct table tb;
	int r, rc = table_for(a, &tb, "ranges", diff_cols, D_NCOLS, TABLE_STREAM);
	if (rc)
		return rc;
	rc = open_two(a, VBAS_OPEN_RDONLY, NULL, 0, NULL, 1, 2, &pool, &from, &to, &finfo);
	if (rc) {
		table_free(&tb);
		return rc;
	}
	r = vbas_diff(from, to, diff_cb, &tb);
	if (r)
		rc = lib_fail(a->cmd, a->pos[0], r);
	rc = table_done(a, &tb, rc);
	return close_two(a, pool, from, to, rc);
}

/* ---- serve: the pool over NBD through nbdkit --------------------------------- */

/* S percent-encoded for a URI: unreserved bytes and those in KEEP stay. */
static void uri_put(FILE *f, const char *s, const char *keep)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (isalnum(*p) || strchr("-._~", *p) || (keep && strchr(keep, *p)))
			fputc(*p, f);
		else
			fprintf(f, "%%%02X", *p);
	}
}

static int is_exec(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* NAME on $PATH, into BUF. */
static int find_in_path(const char *name, char *buf, size_t len)
{
	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (const char *p = path; *p;) {
		size_t n = strcspn(p, ":");
		if (n && (size_t)snprintf(buf, len, "%.*s/%s", (int)n, p, name) < len && is_exec(buf))
			return 0;
		p += n;
		if (*p)
			p++;
	}
	return -1;
}

/* The plugin: $VBAS_NBDKIT_PLUGIN, else beside this vbas binary (the build
 * tree), else nbdkit's plugin directory.  Into BUF; -1 (with the places
 * looked at in WHY) if none is there. */
static int find_plugin(char *buf, size_t len, char *why, size_t wlen)
{
	const char *env = getenv("VBAS_NBDKIT_PLUGIN");
	char exe[PATH_MAX];
	ssize_t n;
	if (env && *env) {
		snprintf(buf, len, "%s", env);
		if (access(buf, R_OK) == 0)
			return 0;
		snprintf(why, wlen, "VBAS_NBDKIT_PLUGIN=%s: %s", env, strerror(errno));
		return -1;
	}
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = 0;
		char *slash = strrchr(exe, '/');
		if (slash)
			*slash = 0;
		if ((size_t)snprintf(buf, len, "%s/%s", exe, PLUGIN_FILE) < len && access(buf, R_OK) == 0)
			return 0;
	} else {
		snprintf(exe, sizeof(exe), "(the vbas binary's directory)");
	}
	if (VBAS_NBDKIT_PLUGINDIR[0] &&
	    (size_t)snprintf(buf, len, "%s/%s", VBAS_NBDKIT_PLUGINDIR, PLUGIN_FILE) < len &&
	    access(buf, R_OK) == 0)
		return 0;
	snprintf(why, wlen, "not found beside the vbas binary (%s)%s%s: run 'make' (build tree) or "
		 "'make install'", exe, VBAS_NBDKIT_PLUGINDIR[0] ? " nor in " : "",
		 VBAS_NBDKIT_PLUGINDIR);
	return -1;
}

/* nbdkit: $VBAS_NBDKIT, else on $PATH; into BUF.  The exit status if it
 * is not there (said), else 0. */
static int find_nbdkit(const struct args *a, char *buf, size_t len)
{
	const char *nenv = getenv("VBAS_NBDKIT");
	if (nenv && *nenv)
		snprintf(buf, len, "%s", nenv);
	else if (find_in_path("nbdkit", buf, len))
		snprintf(buf, len, "nbdkit");
	if (!is_exec(buf))
		return fail(a->cmd, "nbdkit", "not found%s (install nbdkit: scripts/install-deps.sh)",
			    nenv && *nenv ? " at $VBAS_NBDKIT" : " in $PATH");
	return 0;
}

/* Run ARGV (argv[0] looked up on $PATH) and wait for it; its standard
 * output into *OUT (malloc'ed, NUL-ended) if OUT is not NULL.  Its exit
 * status (128 + N for signal N), or -1 with errno if it could not run. */
static int run_wait(const char *const *argv, char **out)
{
	int p[2] = { -1, -1 }, status;
	size_t got = 0, cap = 0;
	char *buf = NULL;
	if (out && pipe2(p, O_CLOEXEC))
		return -1;
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		if (out)
			close(p[0]), close(p[1]);
		errno = e;
		return -1;
	}
	if (pid == 0) {
		if (out)
			dup2(p[1], 1);
		execvp(argv[0], (char *const *)argv);
		fprintf(stderr, "vbas: %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	if (out) {
		close(p[1]);
		for (;;) {
			if (cap - got < 4096) {
				char *nb = cap < (64u << 20) ? realloc(buf, cap ? 2 * cap : 8192) : NULL;
				if (!nb)
					break;
				buf = nb;
				cap = cap ? 2 * cap : 8192;
			}
			ssize_t k = read(p[0], buf + got, cap - 1 - got);
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				break;
			got += (size_t)k;
		}
		close(p[0]);
		if (buf)
			buf[got] = 0;
		*out = buf;
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* A number after "KEY": in qemu-img's JSON S; -1 if there is none. */
static int json_u64(const char *s, const char *key, uint64_t *v)
{
	const char *k = s ? strstr(s, key) : NULL;
	if (!k)
		return -1;
	k += strlen(key);
	while (*k == ' ' || *k == ':')
		k++;
	return ctl_num(&k, v);
}

/* The image formats import and export take: what qemu-img reads and
 * writes for virtual disks (the names are qemu-img's). */
static const char *const image_formats[] = { "raw", "qcow2", "vmdk", "vhdx", "vpc", "vdi",
					     "qed", NULL };

static int image_format_ok(const char *f)
{
	for (int i = 0; image_formats[i]; i++)
		if (!strcmp(f, image_formats[i]))
			return 1;
	return 0;
}

/* Show progress: --progress, or on a terminal unless --no-progress. */
static int want_progress(const struct args *a, int fd)
{
	return (a->seen & O_PROGRESS) || (!(a->seen & O_NO_PROGRESS) && isatty(fd));
}

/* import and export: qemu-img convert against a private NBD export of the
 * volume, which nbdkit serves on a socket of its own for as long as the
 * command runs (its captive mode, --run): qemu-img does the image format,
 * and its reads of holes and writes of zeros keep the copy sparse. */
static int convert_through_nbdkit(const struct args *a, int rdonly, const char *script,
				  const char *format, const char *file, uint64_t pinned)
{
	char nbdkit[PATH_MAX], plugin[PATH_MAX], pool[PATH_MAX], why[PATH_MAX + 200];
	char poolarg[PATH_MAX + 8], cachearg[48], name[3 * VBAS_NAME_MAX + 1], genarg[48];
	int rc = find_nbdkit(a, nbdkit, sizeof(nbdkit));
	if (rc)
		return rc;
	if (find_plugin(plugin, sizeof(plugin), why, sizeof(why)))
		return fail(a->cmd, PLUGIN_FILE, "%s", why);
	if (!realpath(a->pos[0], pool))
		return fail(a->cmd, a->pos[0], "%s", strerror(errno));
	FILE *f = fmemopen(name, sizeof(name), "w");
	if (!f)
		return fail(a->cmd, a->pos[0], "%s", strerror(errno));
	uri_put(f, a->pos[1], NULL);
	fputc(0, f);
	fclose(f);
	snprintf(poolarg, sizeof(poolarg), "pool=%s", pool);
	snprintf(cachearg, sizeof(cachearg), "cache=%" PRIu64, a->cache);
	/* The names go through the environment: no quoting in SCRIPT. */
	setenv("VBAS_EXPORT", name, 1);
	setenv("VBAS_FILE", file, 1);
	setenv("VBAS_FORMAT", format, 1);
	setenv("VBAS_PROGRESS", want_progress(a, 1) ? "-p" : "", 1);
	const char *argv[16];
	int n = 0;
	argv[n++] = nbdkit;
	argv[n++] = "--exit-with-parent";
	argv[n++] = "-U";
	argv[n++] = "-";
	if (rdonly)
		argv[n++] = "-r";
	argv[n++] = plugin;
	argv[n++] = poolarg;
	if (a->seen & O_CACHE)
		argv[n++] = cachearg;
	if (rdonly)
		argv[n++] = "readonly=true";
	if (pinned) {
		/* A served pool: its last commit, under the pin this process
		 * holds (docs/nbd.md, "Reading a served pool"). */
		snprintf(genarg, sizeof(genarg), "pinned=%" PRIu64, pinned);
		argv[n++] = genarg;
	}
	argv[n++] = "--run";
	argv[n++] = script;
	argv[n] = NULL;
	int st = run_wait(argv, NULL);
	if (st < 0)
		return fail(a->cmd, nbdkit, "%s", strerror(errno));
	if (st)
		return fail(a->cmd, file, "qemu-img convert failed (exit status %d; its message "
			    "is above)", st);
	return 0;
}

/* What import learns of the image from qemu-img info: FMT (its format,
 * or the one --format names) and *VSIZE.  The exit status, said. */
static int image_info(const struct args *a, const char *file, char fmt[16], uint64_t *vsize)
{
	char *js = NULL;
	const char *info[8] = { "qemu-img", "info", "--output=json" };
	int n = 3;
	if (a->seen & O_FORMAT)
		info[n++] = "-f", info[n++] = a->format;
	info[n++] = file;
	info[n] = NULL;
	int st = run_wait(info, &js);
	if (st) {
		free(js);
		return st < 0 ? fail(a->cmd, "qemu-img", "%s (install qemu-utils: "
				     "scripts/install-deps.sh)", strerror(errno))
			      : fail(a->cmd, file, "qemu-img info failed (its message is above)");
	}
	const char *fk = js ? strstr(js, "\"format\": \"") : NULL;
	*fmt = 0;
	if (fk)
		sscanf(fk + 11, "%15[a-z0-9]", fmt);
	if (json_u64(js, "\"virtual-size\"", vsize) || !*fmt) {
		free(js);
		return fail(a->cmd, file, "qemu-img info gave no format or size");
	}
	free(js);
	if (!image_format_ok(fmt))
		return fail(a->cmd, file, "a %s image: import takes raw, qcow2, vmdk, vhdx, vpc, "
			    "vdi or qed", fmt);
	if (!*vsize)
		return fail(a->cmd, file, "the image is empty (0 bytes)");
	return 0;
}

/* Can volume INFO (RC: vbas_vol_stat's) take an image of VSIZE bytes?  0
 * (or -ENOENT: it is to be made), else the exit status, said. */
static int import_target(const struct args *a, int r, const struct vbas_vol_info *vi,
			 uint64_t vsize)
{
	if (r == -ENOENT)
		return -ENOENT;
	if (r)
		return lib_fail(a->cmd, a->pos[0], r);
	if (vi->flags & VBAS_VOL_READONLY) {
		last_errno = EROFS;
		return fail(a->cmd, a->pos[0], "volume '%s' is read-only (a snapshot, or set read-only)", a->pos[1]);
	}
	if (vi->size < vsize) {
		last_errno = EFBIG;
		return fail(a->cmd, a->pos[0], "volume '%s' holds %" PRIu64 " bytes, less than the "
			    "image's %" PRIu64 " (resize it, or import into a new volume)", a->pos[1],
			    vi->size, vsize);
	}
	return 0;
}

/* import into a served pool: qemu-img writes the image as a sparse raw
 * file in $TMPDIR (or /var/tmp), which goes to the server as vbas write's
 * source does (its data only).  *CREATED: a volume was made for it. */
static int import_served(const struct args *a, const char *fmt, uint64_t vsize, int *created)
{
	struct vbas_vol_info vi;
	struct vbas_pool *pool;
	char tmp[PATH_MAX], size[24], *body = NULL;
	int rc = open_pool_reading(a, &pool, NULL), r;
	if (rc)
		return rc;
	r = vbas_vol_stat(pool, a->pos[1], &vi);
	uint32_t bs = 4096;
	struct vbas_pool_info pi;
	if (!vbas_pool_info(pool, &pi))
		bs = pi.block_size;
	rc = close_pool(a, pool, 0);
	if (rc)
		return rc;
	rc = import_target(a, r, &vi, vsize);
	if (rc > 0)
		return rc;
	if (rc == -ENOENT) {
		snprintf(size, sizeof(size), "%" PRIu64, (vsize + bs - 1) / bs * bs);
		const char *req[3] = { "create", a->pos[1], size };
		if ((rc = ask_server(a, req, 3)))
			return rc;
		*created = 1;
	}
	const char *td = getenv("TMPDIR");
	snprintf(tmp, sizeof(tmp), "%s/vbas-import.XXXXXX", td && *td ? td : "/var/tmp");
	int fd = mkstemp(tmp);
	if (fd < 0)
		return fail(a->cmd, tmp, "%s", strerror(errno));
	const char *conv[10] = { "qemu-img", "convert" };
	int n = 2;
	if (want_progress(a, 1))
		conv[n++] = "-p";
	conv[n++] = "-f", conv[n++] = fmt, conv[n++] = "-O", conv[n++] = "raw";
	conv[n++] = a->pos[2];
	conv[n++] = tmp;
	conv[n] = NULL;
	int st = run_wait(conv, NULL);
	if (st) {
		rc = st < 0 ? fail(a->cmd, "qemu-img", "%s", strerror(errno))
			    : fail(a->cmd, a->pos[2], "qemu-img convert failed (exit status %d; "
				   "its message is above)", st);
	} else {
		/* qemu-img wrote the file anew: read it from the start. */
		close(fd);
		fd = open(tmp, O_RDONLY | O_CLOEXEC);
		const char *req[3] = { "write", a->pos[1], "0" };
		if (fd < 0)
			rc = fail(a->cmd, tmp, "%s", strerror(errno));
		else if (open_or_ask_server_fd(a, 0, req, 3, fd, &pool, &rc, &body))
			free(body);
		else
			rc = close_pool(a, pool, fail(a->cmd, a->pos[0], "the server went away "
						      "(nothing written)"));
	}
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return rc;
}

/* vbas import POOL NAME FILE: a disk image into a volume, created at the
 * image's size if it does not exist. */
static int cmd_import(const struct args *a)
{
	const char *file = a->pos[2];
	struct vbas_pool_info pi;
	struct vbas_vol_info vi;
	struct vbas_pool *pool;
	uint64_t vsize = 0;
	char fmt[16] = "", h[32];
	int r, rc, created = 0, served = 0;

	if ((a->seen & O_FORMAT) && !image_format_ok(a->format))
		return usage_err(a->cmd, "--format", "unknown format '%s' (raw, qcow2, vmdk, vhdx, "
				 "vpc, vdi or qed)", a->format);
	if (access(file, R_OK))
		return fail(a->cmd, file, "%s", strerror(errno));
	if ((rc = image_info(a, file, fmt, &vsize)))
		return rc;

	/* The volume: made at the image's size, or one that holds it. */
	struct vbas_open_opts oo = { .cache_bytes = a->cache };
	r = vbas_open(a->pos[0], &oo, &pool);
	if (r == -EBUSY) {
		/* A server: through it.  Another holder: who (open_pool says),
		 * or the pool, if it has just let go. */
		const char *ping[1] = { "ping" };
		char *msg = NULL;
		served = ctl_request(a->pos[0], ping, 1, -1, &msg) == 0;
		free(msg);
		if (!served && (rc = open_pool(a, 0, &pool)))
			return rc;
		r = 0;
	}
	if (r)
		return lib_fail(a->cmd, a->pos[0], r);
	if (served) {
		rc = import_served(a, fmt, vsize, &created);
	} else {
		r = vbas_pool_info(pool, &pi);
		if (!r) {
			rc = import_target(a, vbas_vol_stat(pool, a->pos[1], &vi), &vi, vsize);
			if (rc > 0)
				return close_pool(a, pool, rc);
			if (rc == -ENOENT) {
				uint64_t size = (vsize + pi.block_size - 1) / pi.block_size *
						pi.block_size;
				r = vbas_vol_create(pool, a->pos[1], size);
				created = !r;
			}
		}
		if (r)
			return close_pool(a, pool, lib_fail(a->cmd, a->pos[0], r));
		rc = close_pool(a, pool, 0);
		if (rc)
			return rc;
		/* A new volume reads as zeros: qemu-img need not write any. */
		rc = convert_through_nbdkit(a, 0, created ?
			"exec qemu-img convert $VBAS_PROGRESS -n --target-is-zero -f \"$VBAS_FORMAT\" "
			"-O raw \"$VBAS_FILE\" \"nbd+unix:///$VBAS_EXPORT?socket=$unixsocket\"" :
			"exec qemu-img convert $VBAS_PROGRESS -n -f \"$VBAS_FORMAT\" -O raw "
			"\"$VBAS_FILE\" \"nbd+unix:///$VBAS_EXPORT?socket=$unixsocket\"", fmt, file, 0);
	}
	if (rc && created) {
		/* Nothing half-imported is left behind under the name. */
		const char *dreq[2] = { "delete", a->pos[1] };
		char *msg = NULL;
		if (served) {
			r = ctl_request(a->pos[0], dreq, 2, -1, &msg) ? -EIO : 0;
			free(msg);
		} else if (!(r = open_pool(a, 0, &pool) ? -EIO : 0)) {
			r = vbas_vol_delete(pool, a->pos[1]);
			close_pool(a, pool, 0);
		}
		fprintf(stderr, "vbas: %s: %s: volume '%s' %s\n", a->cmd, a->pos[0], a->pos[1],
			r ? "was created for the import and could not be deleted" :
			    "created for the import is deleted again");
		return rc;
	}
	if (rc)
		return rc;
	rc = open_pool_reading(a, &pool, NULL);
	if (rc)
		return rc;
	r = vbas_vol_stat(pool, a->pos[1], &vi);
	if (r)
		return close_pool(a, pool, lib_fail(a->cmd, a->pos[0], r));
	printf("imported %s (%s, %" PRIu64 " bytes) into %svolume '%s': %" PRIu64 " bytes "
	       "mapped (%s)%s\n", file, fmt, vsize, created ? "new " : "", a->pos[1], vi.mapped,
	       human(vi.mapped, h, sizeof(h)), served ? ", through the server" : "");
	return close_pool(a, pool, 0);
}

/* vbas export POOL NAME FILE: a volume into a disk image.  A served pool
 * is read as of the server's last commit, under its pin, which this
 * process holds while nbdkit reads. */
static int cmd_export(const struct args *a)
{
	const char *file = a->pos[2];
	const char *fmt = (a->seen & O_FORMAT) ? a->format : "raw";
	struct vbas_vol_info vi;
	struct vbas_pool *pool;
	struct stat st;
	uint64_t gen = 0;
	int r, rc;

	if (!image_format_ok(fmt))
		return usage_err(a->cmd, "--format", "unknown format '%s' (raw, qcow2, vmdk, vhdx, "
				 "vpc, vdi or qed)", fmt);
	if (!(a->seen & O_FORCE) && lstat(file, &st) == 0)
		return fail(a->cmd, file, "exists (--force replaces it)");
	rc = open_pool_reading(a, &pool, &gen);
	if (rc)
		return rc;
	r = vbas_vol_stat(pool, a->pos[1], &vi);
	/* (The pin, if any, stays held: nbdkit reads under it.) */
	int pin = served_pin;
	served_pin = -1;
	rc = close_pool(a, pool, r ? lib_fail(a->cmd, a->pos[0], r) : 0);
	if (!rc)
		rc = convert_through_nbdkit(a, 1,
			"exec qemu-img convert $VBAS_PROGRESS -f raw -O \"$VBAS_FORMAT\" "
			"\"nbd+unix:///$VBAS_EXPORT?socket=$unixsocket\" \"$VBAS_FILE\"", fmt, file,
			pin >= 0 ? gen : 0);
	if (!rc && pin >= 0 && !pin_held(pin))
		rc = fail(a->cmd, a->pos[0], "the server went away while this ran, and with it the "
			  "pin on its last commit: %s may be wrong; export again", file);
	if (pin >= 0)
		close(pin);
	if (!rc)
		printf("exported volume '%s' (%" PRIu64 " bytes) to %s (%s)%s\n", a->pos[1], vi.size,
		       file, fmt, pin >= 0 ? ", the server's last commit" : "");
	return rc;
}

/* Check the unix socket path: a stale socket (nobody listening) is
 * removed; a live one or another kind of file is an error (into WHY). */
static int socket_free(const char *path, char *why, size_t wlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(why, wlen, "%s", strerror(errno));
		return -1;
	}
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(why, wlen, "exists and is not a socket (will not replace it)");
		return -1;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(why, wlen, "socket: %s", strerror(errno));
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	int e = errno;
	close(fd);
	if (r == 0) {
		snprintf(why, wlen, "a server is already listening on this socket");
		return -1;
	}
	if (e != ECONNREFUSED) {
		snprintf(why, wlen, "%s", strerror(e));
		return -1;
	}
	if (unlink(path) < 0) {
		snprintf(why, wlen, "removing the stale socket: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* A port number 1..65535, digits only. */
static int parse_port(const char *s, unsigned *port)
{
	unsigned v = 0;
	if (!*s || strlen(s) > 5)
		return -1;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		v = v * 10 + (unsigned)(*p - '0');
	}
	if (v < 1 || v > 65535)
		return -1;
	*port = v;
	return 0;
}

/* Where the server listens and what a client needs, for the URIs. */
struct endpoint {
	const char *sock;          /* a unix socket, else TCP at HOST:PORT */
	const char *host;
	unsigned port;
	int tls;                   /* --tls-psk or --tls-certificates */
	const char *psk_user;      /* the first user of the PSK file */
	const char *psk_file;      /* absolute */
	const char *certs;         /* absolute */
};

/* One NBD URI per volume, as libnbd reads them: nbd+unix:///NAME?socket=
 * or nbd://HOST:PORT/NAME; with TLS nbds, the PSK user and file or the
 * certificates' directory (which holds the CA's certificate). */
static void print_uris(const struct args *a, const struct vol_list *l, const struct endpoint *e)
{
	const char *host = e->host;
	if (host && (!strcmp(host, "0.0.0.0") || !strcmp(host, "::")))
		host = "localhost";
	for (size_t i = 0; i < l->n; i++) {
		const char *sep = "?";
		printf("nbd%s%s://", e->tls ? "s" : "", e->sock ? "+unix" : "");
		if (e->psk_user) {
			uri_put(stdout, e->psk_user, NULL);
			putchar('@');
		}
		if (!e->sock)
			printf("%s%s%s:%u", strchr(host, ':') ? "[" : "", host,
			       strchr(host, ':') ? "]" : "", e->port);
		putchar('/');
		uri_put(stdout, l->v[i].name, NULL);
		if (e->sock) {
			fputs("?socket=", stdout);
			uri_put(stdout, e->sock, "/");
			sep = "&";
		}
		if (e->psk_file || e->certs) {
			printf("%s%s=", sep, e->psk_file ? "tls-psk-file" : "tls-certificates");
			uri_put(stdout, e->psk_file ? e->psk_file : e->certs, "/");
		}
		int def = (a->seen & O_DEFAULT_EXPORT) && !strcmp(l->v[i].name, a->default_export);
		int snap = l->v[i].flags & VBAS_VOL_READONLY;
		const char *ro = snap ? "snapshot, read-only" : (a->seen & O_READONLY) ? "read-only" : "";
		if (def || *ro)
			printf("  (%s%s%s)", def ? "default export" : "", def && *ro ? ", " : "", ro);
		putchar('\n');
	}
}

/* Copy the event lines the server has written to FD (non-blocking) to
 * stdout, whole lines as they come. */
static void pump_events(int fd)
{
	char buf[8192];
	ssize_t k;
	if (fd < 0)
		return;
	while ((k = read(fd, buf, sizeof(buf))) > 0)
		fwrite(buf, 1, (size_t)k, stdout);
	fflush(stdout);
}

/* The PSK file of --tls-psk: lines USER:HEXKEY (psktool's format, which
 * GnuTLS reads only when a client connects, so a bad file would show as
 * clients refused).  0, with the first user in USER; -1 with the reason
 * in WHY. */
static int psk_check(const char *path, char *user, size_t ulen, char *why, size_t wlen)
{
	struct stat st;
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int lineno = 0, keys = 0, rc = 0;
	FILE *f = fopen(path, "re");
	if (!f || fstat(fileno(f), &st)) {
		snprintf(why, wlen, "%s", strerror(errno));
		if (f)
			fclose(f);
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(why, wlen, "not a regular file");
		fclose(f);
		return -1;
	}
	while ((len = getline(&line, &cap, f)) >= 0) {
		lineno++;
		while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = 0;
		if (!len)
			continue;
		char *colon = strchr(line, ':');
		size_t hex = colon ? strspn(colon + 1, "0123456789abcdefABCDEF") : 0;
		if (!colon || colon == line || !hex || hex % 2 || colon[1 + hex]) {
			snprintf(why, wlen, "line %d is not USER:HEXKEY (a name, a colon and the key "
				 "in an even number of hex digits; 'psktool -u USER -p FILE' makes "
				 "one)", lineno);
			rc = -1;
			break;
		}
		if (!keys++)
			snprintf(user, ulen, "%.*s", (int)(colon - line), line);
	}
	if (!rc && !keys) {
		snprintf(why, wlen, "no keys in it (lines USER:HEXKEY; 'psktool -u USER -p FILE' "
			 "makes one)");
		rc = -1;
	}
	free(line);
	fclose(f);
	return rc;
}

/* The directory of --tls-certificates: nbdkit's server-cert.pem and
 * server-key.pem, and ca-cert.pem to check clients' certificates with
 * (--tls-verify-peer).  0, or -1 with the reason in WHY. */
static int certs_check(const char *dir, int verify, char *why, size_t wlen)
{
	static const char *const need[] = { "server-cert.pem", "server-key.pem", "ca-cert.pem" };
	struct stat st;
	if (stat(dir, &st)) {
		snprintf(why, wlen, "%s", strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(why, wlen, "not a directory");
		return -1;
	}
	for (int i = 0; i < (verify ? 3 : 2); i++) {
		char f[PATH_MAX + 32];
		snprintf(f, sizeof(f), "%s/%s", dir, need[i]);
		if (access(f, R_OK)) {
			snprintf(why, wlen, "%s: %s (nbdkit needs server-cert.pem and "
				 "server-key.pem there%s: see nbdkit-tls(1))", need[i], strerror(errno),
				 verify ? ", and ca-cert.pem to check clients with" : "");
			return -1;
		}
	}
	return 0;
}

/* Socket activation (systemd's .socket units, systemd-socket-activate):
 * LISTEN_PID is this process and LISTEN_FDS listening sockets are open
 * from descriptor 3 on.  Returns their number; 0 if not activated (the
 * variables of another process are removed, so that nbdkit does not see
 * them); -1 with the reason in WHY. */
#define LISTEN_FDS_START 3
static int listen_fds(char *why, size_t wlen)
{
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
	char *end;
	if (!pid || !fds)
		return 0;
	errno = 0;
	long p = strtol(pid, &end, 10);
	if (errno || end == pid || *end || p <= 0) {
		snprintf(why, wlen, "LISTEN_PID=%s: not a process id", pid);
		return -1;
	}
	if (p != getpid()) {
		unsetenv("LISTEN_PID");
		unsetenv("LISTEN_FDS");
		unsetenv("LISTEN_FDNAMES");
		return 0;
	}
	errno = 0;
	long n = strtol(fds, &end, 10);
	if (errno || end == fds || *end || n < 1 || n > 64) {
		snprintf(why, wlen, "LISTEN_FDS=%s: not a number of sockets (1 to 64)", fds);
		return -1;
	}
	for (int fd = LISTEN_FDS_START; fd < LISTEN_FDS_START + n; fd++) {
		struct stat st;
		int listening = 0;
		socklen_t sl = sizeof(listening);
		if (fstat(fd, &st) || !S_ISSOCK(st.st_mode) ||
		    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &sl) || !listening) {
			snprintf(why, wlen, "LISTEN_FDS=%s: descriptor %d is not a listening socket",
				 fds, fd);
			return -1;
		}
	}
	return (int)n;
}

/* Where the activated socket FD listens, into E (the strings in SOCK and
 * HOST); -1 if it is nothing a URI can name (an abstract unix socket). */
static int endpoint_of(int fd, struct endpoint *e, char *sock, size_t slen, char *host,
		       size_t hlen)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char port[16];
	if (getsockname(fd, (struct sockaddr *)&ss, &sl))
		return -1;
	if (ss.ss_family == AF_UNIX) {
		struct sockaddr_un *su = (struct sockaddr_un *)&ss;
		size_t n = sl - offsetof(struct sockaddr_un, sun_path);
		if (!n || !su->sun_path[0] || n >= slen)
			return -1;
		memcpy(sock, su->sun_path, n);
		sock[n] = 0;
		e->sock = sock;
		return 0;
	}
	if ((ss.ss_family != AF_INET && ss.ss_family != AF_INET6) ||
	    getnameinfo((struct sockaddr *)&ss, sl, host, (socklen_t)hlen, port, sizeof(port),
			NI_NUMERICHOST | NI_NUMERICSERV))
		return -1;
	e->sock = NULL;
	e->host = host;
	e->port = (unsigned)atoi(port);
	return 0;
}

/* "a, b, c" (at most 20 names) for messages; malloc'ed, NULL: no memory. */
static char *name_list(const struct vol_list *l)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return NULL;
	for (size_t i = 0; i < l->n && i < 20; i++)
		fprintf(f, "%s'%s'", i ? ", " : "", l->v[i].name);
	if (l->n > 20)
		fputs(", ...", f);
	if (fclose(f)) {
		free(buf);
		return NULL;
	}
	return buf;
}

static int cmd_serve(const struct args *a)
{
	struct vol_list l = { 0 };
	struct endpoint ep = { 0 };
	char nbdkit[PATH_MAX], plugin[PATH_MAX], pool[PATH_MAX], sock[PATH_MAX];
	char tmpdir[PATH_MAX], pidfile[PATH_MAX + 16], why[PATH_MAX + 200];
	char poolarg[PATH_MAX + 8], cachearg[48], portarg[16], autoarg[48], evlog[48];
	char psk[PATH_MAX], psk_user[256] = "", certs[PATH_MAX], tlsarg[PATH_MAX + 32];
	char *evarg = NULL, *defarg = NULL;
	int evp[2] = { -1, -1 };
	const char *host = "localhost", *tls = NULL;
	unsigned port = 10809;
	struct vbas_pool *vp;
	sigset_t set, old;
	pid_t child;
	int r, rc, status = 0, have_sock = 0, nfds;

	/* The arguments first: nothing happens on bad ones. */
	if ((a->seen & O_SOCKET) && (a->seen & O_PORT))
		return usage_err(a->cmd, "--socket and --port", "give one of them, not both "
				 "(serve on a unix socket or on a TCP port)");
	if ((a->seen & O_BIND) && (a->seen & O_SOCKET))
		return usage_err(a->cmd, "--bind", "only with --port (a TCP address to listen on)");
	if ((a->seen & O_PORT) && parse_port(a->port, &port))
		return usage_err(a->cmd, "--port", "invalid port '%s': must be a number from 1 to "
				 "65535", a->port);
	if ((a->seen & O_BIND) && !*a->bind)
		return usage_err(a->cmd, "--bind", "empty address");
	if (a->seen & O_SOCKET) {
		struct sockaddr_un sa;
		if (!*a->socket)
			return usage_err(a->cmd, "--socket", "empty path");
		if (a->socket[0] == '/') {
			snprintf(sock, sizeof(sock), "%s", a->socket);
		} else {
			char cwd[PATH_MAX];
			if (!getcwd(cwd, sizeof(cwd)) ||
			    (size_t)snprintf(sock, sizeof(sock), "%s/%s", cwd, a->socket) >= sizeof(sock))
				return fail(a->cmd, a->socket, "cannot make the path absolute");
		}
		if (strlen(sock) >= sizeof(sa.sun_path))
			return usage_err(a->cmd, "--socket", "'%s': too long for a unix socket (at most "
					 "%zu bytes as an absolute path)", sock, sizeof(sa.sun_path) - 1);
		have_sock = 1;
	}
	if (a->seen & O_BIND)
		host = a->bind;
	if ((a->seen & O_READONLY) && (a->seen & (O_ON_EVENT | O_AUTOEXTEND)))
		return usage_err(a->cmd, (a->seen & O_ON_EVENT) ? "--on-event" : "--autoextend",
				 "not with --readonly (a read-only pool does not fill up)");
	if ((a->seen & O_ON_EVENT) && !*a->on_event)
		return usage_err(a->cmd, "--on-event", "empty command");
	if ((a->seen & O_AUTOEXTEND) && !a->autoextend)
		return usage_err(a->cmd, "--autoextend", "the step must be more than 0");
	if ((a->seen & O_TLS_PSK) && (a->seen & O_TLS_CERTS))
		return usage_err(a->cmd, "--tls-psk and --tls-certificates", "give one of them, not "
				 "both (pre-shared keys or X.509 certificates)");
	if ((a->seen & O_TLS_PSK) && !*a->tls_psk)
		return usage_err(a->cmd, "--tls-psk", "empty file name");
	if ((a->seen & O_TLS_CERTS) && !*a->tls_certs)
		return usage_err(a->cmd, "--tls-certificates", "empty directory name");
	if ((a->seen & O_TLS_VERIFY) && !(a->seen & O_TLS_CERTS))
		return usage_err(a->cmd, "--tls-verify-peer", "only with --tls-certificates (clients "
				 "then need a certificate signed by its ca-cert.pem)");
	if (a->seen & O_TLS) {
		if (strcmp(a->tls, "on") && strcmp(a->tls, "require"))
			return usage_err(a->cmd, "--tls", "invalid mode '%s': 'require' (clients must "
					 "use TLS, the default) or 'on' (they may)", a->tls);
		if (!(a->seen & (O_TLS_PSK | O_TLS_CERTS)))
			return usage_err(a->cmd, "--tls", "needs --tls-psk FILE or --tls-certificates "
					 "DIR (the keys to use)");
	}
	if ((a->seen & O_DEFAULT_EXPORT) && !*a->default_export)
		return usage_err(a->cmd, "--default-export", "empty name (the default export is "
				 "the volume a client that asks for no name gets)");
	nfds = listen_fds(why, sizeof(why));
	if (nfds < 0)
		return fail(a->cmd, "socket activation", "%s", why);
	if (nfds && (a->seen & (O_SOCKET | O_PORT | O_BIND)))
		return usage_err(a->cmd, (a->seen & O_SOCKET) ? "--socket" :
				 (a->seen & O_PORT) ? "--port" : "--bind",
				 "not with socket activation (LISTEN_FDS: the listening sockets "
				 "come from systemd)");

	/* TLS: the files exist and are what nbdkit needs, before anything. */
	if (a->seen & O_TLS_PSK) {
		struct stat st;
		if (!realpath(a->tls_psk, psk))
			return fail(a->cmd, "--tls-psk", "%s: %s", a->tls_psk, strerror(errno));
		if (psk_check(psk, psk_user, sizeof(psk_user), why, sizeof(why)))
			return fail(a->cmd, "--tls-psk", "%s: %s", a->tls_psk, why);
		if (!stat(psk, &st) && (st.st_mode & 044))
			fprintf(stderr, "vbas: serve: warning: --tls-psk: %s is readable by other users "
				"(mode %04o): whoever reads it can connect (chmod 600 it)\n", a->tls_psk,
				(unsigned)(st.st_mode & 07777));
		ep.psk_user = psk_user;
		ep.psk_file = psk;
	}
	if (a->seen & O_TLS_CERTS) {
		if (!realpath(a->tls_certs, certs))
			return fail(a->cmd, "--tls-certificates", "%s: %s", a->tls_certs,
				    strerror(errno));
		if (certs_check(certs, !!(a->seen & O_TLS_VERIFY), why, sizeof(why)))
			return fail(a->cmd, "--tls-certificates", "%s: %s", a->tls_certs, why);
		/* With --tls-verify-peer, a client names its own directory
		 * (with its certificate): the URIs leave it out. */
		if (!(a->seen & O_TLS_VERIFY))
			ep.certs = certs;
	}
	if (a->seen & (O_TLS_PSK | O_TLS_CERTS)) {
		ep.tls = 1;
		tls = (a->seen & O_TLS) && !strcmp(a->tls, "on") ? "--tls=on" : "--tls=require";
	}

	/* The pool: it exists, is a pool, is not in use; its volumes. */
	rc = open_pool(a, VBAS_OPEN_RDONLY, &vp);
	if (rc)
		return rc;
	r = vbas_vol_list(vp, vol_list_cb, &l);
	if (r)
		rc = lib_fail(a->cmd, a->pos[0], r);
	rc = close_pool(a, vp, rc);
	if (rc)
		goto out;
	if (l.n == 0) {
		rc = fail(a->cmd, a->pos[0], "the pool has no volumes to serve (create one with "
			  "'vbas create')");
		goto out;
	}
	if (a->seen & O_DEFAULT_EXPORT) {
		size_t i = 0;
		while (i < l.n && strcmp(l.v[i].name, a->default_export))
			i++;
		if (i == l.n) {
			char *names = name_list(&l);
			rc = fail(a->cmd, "--default-export", "%s has no volume '%s' (volumes: %s)",
				  a->pos[0], a->default_export, names ? names : "?");
			free(names);
			goto out;
		}
	}
	if (!realpath(a->pos[0], pool)) {
		rc = fail(a->cmd, a->pos[0], "%s", strerror(errno));
		goto out;
	}

	if (have_sock && socket_free(sock, why, sizeof(why))) {
		rc = fail(a->cmd, sock, "%s", why);
		goto out;
	}

	/* nbdkit and the plugin. */
	if ((rc = find_nbdkit(a, nbdkit, sizeof(nbdkit))))
		goto out;
	if (find_plugin(plugin, sizeof(plugin), why, sizeof(why))) {
		rc = fail(a->cmd, PLUGIN_FILE, "%s", why);
		goto out;
	}
	/* nbdkit writes its pid file once it listens: that is when the
	 * URIs are printed. */
	const char *td = getenv("TMPDIR");
	snprintf(tmpdir, sizeof(tmpdir), "%s/vbas-serve.XXXXXX", td && *td ? td : "/tmp");
	if (!mkdtemp(tmpdir)) {
		rc = fail(a->cmd, tmpdir, "mkdtemp: %s", strerror(errno));
		goto out;
	}
	snprintf(pidfile, sizeof(pidfile), "%s/nbdkit.pid", tmpdir);
	snprintf(poolarg, sizeof(poolarg), "pool=%s", pool);
	snprintf(cachearg, sizeof(cachearg), "cache=%" PRIu64, a->cache);
	snprintf(portarg, sizeof(portarg), "%u", port);
	const char *argv[32];
	int n = 0;
	argv[n++] = nbdkit;
	argv[n++] = "-f";                      /* foreground: we wait for it */
	argv[n++] = "--exit-with-parent";      /* and it goes if we are killed */
	argv[n++] = "-P";
	argv[n++] = pidfile;
	if (a->seen & O_READONLY)
		argv[n++] = "-r";
	if (nfds) {
		/* Socket activation: nbdkit takes the sockets (LISTEN_PID is
		 * set to its pid in the child) and must not be told where to
		 * listen. */
	} else if (have_sock) {
		argv[n++] = "-U";
		argv[n++] = sock;
	} else {
		argv[n++] = "-p";
		argv[n++] = portarg;
		argv[n++] = "-i";
		argv[n++] = host;
	}
	if (tls) {
		argv[n++] = tls;
		snprintf(tlsarg, sizeof(tlsarg), "%s=%s", ep.psk_file ? "--tls-psk" : "--tls-certificates",
			 ep.psk_file ? ep.psk_file : certs);
		argv[n++] = tlsarg;
		if (a->seen & O_TLS_VERIFY)
			argv[n++] = "--tls-verify-peer";
	}
	argv[n++] = plugin;
	argv[n++] = poolarg;
	if (a->seen & O_CACHE)
		argv[n++] = cachearg;
	if (a->seen & O_READONLY)
		argv[n++] = "readonly=true";
	if (a->seen & O_BUFFERED)
		argv[n++] = "direct=false";
	if (a->seen & O_DEFAULT_EXPORT) {
		if (asprintf(&defarg, "default_export=%s", a->default_export) < 0) {
			defarg = NULL;
			rc = fail(a->cmd, "--default-export", "%s", strerror(ENOMEM));
			goto rmtmp;
		}
		argv[n++] = defarg;
	}
	/* Events come back through a pipe, printed on our stdout (nbdkit may
	 * close its own). */
	if (!(a->seen & O_READONLY)) {
		if (pipe2(evp, O_CLOEXEC)) {
			rc = fail(a->cmd, "pipe", "%s", strerror(errno));
			goto rmtmp;
		}
		snprintf(evlog, sizeof(evlog), "events=/dev/fd/%d", evp[1]);
		argv[n++] = evlog;
	}
	if (a->seen & O_ON_EVENT) {
		if (asprintf(&evarg, "on_event=%s", a->on_event) < 0) {
			evarg = NULL;
			rc = fail(a->cmd, "--on-event", "%s", strerror(ENOMEM));
			goto rmtmp;
		}
		argv[n++] = evarg;
	}
	if (a->seen & O_AUTOEXTEND) {
		snprintf(autoarg, sizeof(autoarg), "autoextend=%" PRIu64, a->autoextend);
		argv[n++] = autoarg;
	}
	argv[n] = NULL;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, &old);
	fflush(stdout);
	fflush(stderr);
	child = fork();
	if (child < 0) {
		rc = fail(a->cmd, "fork", "%s", strerror(errno));
		sigprocmask(SIG_SETMASK, &old, NULL);
		goto rmtmp;
	}
	if (child == 0) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		if (evp[1] >= 0)
			fcntl(evp[1], F_SETFD, 0);
		if (nfds) {
			/* The sockets are nbdkit's now: LISTEN_PID names it. */
			char pid[24];
			snprintf(pid, sizeof(pid), "%d", (int)getpid());
			setenv("LISTEN_PID", pid, 1);
			for (int fd = LISTEN_FDS_START; fd < LISTEN_FDS_START + nfds; fd++)
				fcntl(fd, F_SETFD, 0);
		}
		execv(nbdkit, (char *const *)argv);
		fprintf(stderr, "vbas: serve: %s: %s\n", nbdkit, strerror(errno));
		_exit(127);
	}
	if (evp[1] >= 0) {
		close(evp[1]);
		evp[1] = -1;
		fcntl(evp[0], F_SETFL, O_NONBLOCK);
	}

	/* Wait for nbdkit to listen (or to fail), then for it to end; a
	 * signal to us stops it cleanly: it closes the connections, and
	 * unloading the plugin commits and closes the pool. */
	int ready = 0, stopping = 0, exited = 0;
	struct timespec tick = { 0, 50 * 1000 * 1000 };
	while (!exited) {
		siginfo_t si;
		int sig = sigtimedwait(&set, &si, &tick);
		if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) {
			kill(child, SIGTERM);
			stopping = 1;
		}
		pump_events(evp[0]);
		pid_t w = waitpid(child, &status, WNOHANG);
		if (w == child) {
			exited = 1;
			break;
		}
		if (!ready && !stopping) {
			struct stat st;
			if (stat(pidfile, &st) == 0 && st.st_size > 0) {
				ready = 1;
				printf("serving %s over NBD with nbdkit (pid %d)%s; %zu export%s:\n",
				       a->pos[0], (int)child, !tls ? "" : !strcmp(tls, "--tls=on") ?
				       ", TLS on (clients may use it)" : ", TLS required", l.n,
				       l.n == 1 ? "" : "s");
				if (!nfds) {
					ep.sock = have_sock ? sock : NULL;
					ep.host = host;
					ep.port = port;
					print_uris(a, &l, &ep);
				}
				for (int fd = LISTEN_FDS_START; fd < LISTEN_FDS_START + nfds; fd++) {
					char asock[PATH_MAX], ahost[NI_MAXHOST];
					if (endpoint_of(fd, &ep, asock, sizeof(asock), ahost, sizeof(ahost)))
						printf("(socket activation: descriptor %d, an address no URI "
						       "names)\n", fd);
					else
						print_uris(a, &l, &ep);
				}
				printf("stop with Ctrl-C or SIGTERM: the pool is committed and closed\n");
				fflush(stdout);
			}
		}
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	pump_events(evp[0]);
	if (have_sock)
		unlink(sock);   /* nbdkit leaves its socket behind */
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		if (ready)
			printf("stopped: %s committed and closed\n", a->pos[0]);
		rc = 0;
	} else if (WIFEXITED(status)) {
		rc = fail(a->cmd, "nbdkit", "exited with status %d %s", WEXITSTATUS(status),
			  ready ? "after serving: the pool holds its last successful commit "
				  "(see nbdkit's messages above)"
				: "before serving (see its messages above)");
	} else {
		int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
		rc = fail(a->cmd, "nbdkit", "killed by signal %d (%s); the pool holds its last commit "
			  "(run 'vbas check')", sig, strsignal(sig));
	}
rmtmp:
	unlink(pidfile);
	rmdir(tmpdir);
out:
	if (evp[0] >= 0)
		close(evp[0]);
	if (evp[1] >= 0)
		close(evp[1]);
	free(evarg);
	free(defarg);
	vol_list_free(&l);
	return rc;
}

/* ---- Help and dispatch ------------------------------------------------------ */

/* The tables' options and what they print (table.h). */
#define TABLE_ABOUT \
	"Sizes are human (2.0 GiB) unless --bytes; offsets are bytes.  --json\n" \
	"prints the same rows as an object {\"vbas_format\": 1, ROWS: [...]} with a\n" \
	"key per column (sizes in bytes, null for none).\n\n"
#define TABLE_HELP \
	"  -o, --output COLS       the columns, by name or JSON key: \"A,B\", or\n" \
	"                          \"+A,B\" to add to the default ones\n" \
	"      --noheadings        no header line\n" \
	"      --raw               columns separated by one blank, not aligned\n" \
	"      --bytes             sizes in bytes\n" \
	"      --json              print JSON\n"
#define PROGRESS_HELP \
	"  -p, --progress          a progress line on stderr (default: when stderr is\n" \
	"                          a terminal)\n" \
	"      --no-progress       none, even on a terminal\n"
#define CACHE_HELP "      --cache SIZE        metadata cache size (default 64M)\n"
#define HELP_HELP  "  -h, --help              show this help\n"

static const struct cmd cmds[] = {
	{ "format", cmd_format, O_SIZE | O_BLOCK_SIZE | O_FORCE | O_NO_RMAP, 1, 1,
	  "POOL [--size SIZE] [--block-size SIZE] [--no-rmap] [--force]",
	  "create a pool in a file (created if missing) or a block device",
	  "Without --force, refuses a target that holds anything: a vbas pool, a\n"
	  "signature libblkid recognises (file system, partition table, LVM, RAID,\n"
	  "swap, ...; named with its label and UUID), or other data (a non-zero\n"
	  "byte in the first and last MiB, 64 pieces of 64 KiB spread between, or\n"
	  "the start of a file's first 256 data extents: a sample, not a full read),\n"
	  "and refuses to cut a regular file longer than SIZE.  Everything is\n"
	  "checked before anything is written: a format that fails leaves the\n"
	  "target as it was.  The pool keeps a reverse map (who uses each block:\n"
	  "fsmap, the three-way check) unless --no-rmap says otherwise.\n\n"
	  "Options:\n"
	  "  -s, --size SIZE         the pool's size (required for a file; a block\n"
	  "                          device's own size by default)\n"
	  "  -b, --block-size SIZE   a power of two from 4K to 1M (default 4K)\n"
	  "      --no-rmap           keep no reverse map: writes do a little less\n"
	  "                          work, fsmap reads every tree ('set --rmap'\n"
	  "                          adds one later)\n"
	  "  -f, --force             overwrite whatever the target holds, and cut a\n"
	  "                          longer file to SIZE\n" HELP_HELP },
	{ "info", cmd_info, O_JSON | O_CACHE, 1, 1, "POOL [--json]",
	  "show the pool's size and space use",
	  "Sizes are in bytes.  The JSON object has the keys size, block_size,\n"
	  "data_used, metadata_used, free, volumes, total_blocks, reserved (held\n"
	  "by reservations), reserved_metadata (of those, the metadata allowances),\n"
	  "reserved_metadata_granted and reserved_metadata_used (allowances granted\n"
	  "and what the reserved writes took, since the pool was opened),\n"
	  "metadata_reserve, generation, cache_blocks, mapped (summed over every\n"
	  "volume), sharing_saves (mapped - data_used: what sharing saves),\n"
	  "available (free for new data: free less the metadata reserve and what\n"
	  "reservations hold), reserved_ranges (bytes of reserved ranges, in use),\n"
	  "reserved_owed (of reserved: held for copies on write of reserved\n"
	  "blocks that are shared), the settings low_water and\n"
	  "expendable_floor (percent, or null for none; see 'set'), rmap\n"
	  "(true: the pool keeps a reverse map), shrink_to (a shrink under way:\n"
	  "its target in bytes; 0: none) and intents (reflinks, dedupes or\n"
	  "unshares a crash cut short, finished at the next read-write open).  The text form shows available as\n"
	  "'free for data', what writes can have, above the free blocks it comes\n"
	  "from and what is held back of them.\n\n"
	  "Options:\n"
	  "      --json              print a JSON object\n" CACHE_HELP HELP_HELP },
	{ "grow", cmd_grow, O_SIZE | O_JSON | O_CACHE, 1, 1, "POOL --size [+]SIZE [--json]",
	  "grow the pool (a file, or a block device grown first)",
	  "A pool in a regular file is extended to SIZE (sparse: the file system\n"
	  "gives blocks as they are written); a pool on a block device takes SIZE\n"
	  "once the device holds it (after lvextend, say).  +SIZE adds to the\n"
	  "pool's size.  Committed before it returns: a crash leaves the old pool\n"
	  "or the grown one.  Works on a served pool, through the server: its\n"
	  "volumes stay exported and writes go on.  'resize-pool' also shrinks.  Prints\n"
	  "the new size and what is available; the JSON object has the keys size,\n"
	  "available, low_water and expendable_floor (as info's).\n\n"
	  "Options:\n"
	  "  -s, --size [+]SIZE      the new size, or +SIZE to add\n"
	  "      --json              print a JSON object\n" CACHE_HELP HELP_HELP,
	  "POOL" },
	{ "resize-pool", cmd_resize_pool, O_SIZE | O_CANCEL | O_JSON | O_CACHE, 1, 1,
	  "POOL --size [+]SIZE [--json] | POOL --cancel",
	  "grow or shrink the pool",
	  "A larger SIZE (or +SIZE) grows the pool as 'grow' does.  A smaller one\n"
	  "moves every block in use past SIZE, data and metadata, below it, and\n"
	  "then a pool file is truncated (a block device just stops being used\n"
	  "past SIZE; shrink the device after).  The reverse map names each\n"
	  "block's owners; blocks that snapshots and clones share stay shared.\n"
	  "The target is recorded in the pool first, and nothing is allocated past\n"
	  "it from then on; the moves run in steps that commit.  A crash or an\n"
	  "error leaves the target, and the next read-write open goes on with the\n"
	  "moves (run resize-pool again to see it through, or --cancel to give the\n"
	  "room back; 'info' shows an unfinished shrink).  Refused, with nothing\n"
	  "changed, when what is in use, promised to reservations and held for\n"
	  "metadata would not fit, or when the pool keeps no reverse map ('set\n"
	  "--rmap').  Works on a served pool, through the server: volumes stay\n"
	  "exported and writes go on between steps.  Prints the new size, what is\n"
	  "available and what moved; the JSON object has the keys size, available,\n"
	  "moved_data (bytes), moved_nodes and steps (a grow prints what 'grow'\n"
	  "does).\n\n"
	  "Options:\n"
	  "  -s, --size [+]SIZE      the new size, or +SIZE to add\n"
	  "      --cancel            stop an unfinished shrink; the pool keeps its size\n"
	  "      --json              print a JSON object\n" CACHE_HELP HELP_HELP,
	  "POOL" },
	{ "set", cmd_set, O_LOW_WATER | O_FLOOR | O_RMAP | O_JSON | O_READONLY | O_WRITABLE |
	  O_CACHE, 1, 2,
	  "POOL [--low-water PCT] [--expendable-floor PCT] [--rmap] [--json]\n"
	  "       | POOL NAME --readonly|--writable",
	  "change the pool's space settings, or protect a volume from writes",
	  "PCT is a percentage of the pool: 80%, 12.5% (one decimal at most), or\n"
	  "off.  The low-water mark is the use at which vbas serve reports an\n"
	  "event, and grows the pool if it runs with --autoextend.  Use is what is\n"
	  "not available for new data (see 'info'); an event fires once per\n"
	  "crossing, and clears when use falls 1% of the pool below the mark.\n"
	  "The expendable floor is the free room kept by deleting snapshots made\n"
	  "with 'snapshot --expendable', oldest first; with none set, they are\n"
	  "deleted only when a write or a reservation would fail for want of room.\n"
	  "Works on a served pool, through the server.  Prints the settings as\n"
	  "grow does (--json: the same object).  --rmap builds the reverse map\n"
	  "of a pool that has none (made with 'format --no-rmap', or by a version\n"
	  "before format 5): one walk of every tree and one commit; not while the\n"
	  "pool is served.\n"
	  "With a volume's NAME: --readonly protects it from writes (as a snapshot\n"
	  "is; not while it is open, or a client is connected to its export),\n"
	  "--writable lets it be written again (a snapshot becomes a volume of its\n"
	  "own, no longer expendable).  A volume with reserved ranges cannot\n"
	  "change (unreserve them first).\n\n"
	  "Options:\n"
	  "      --low-water PCT     the low-water mark (off: none)\n"
	  "      --readonly          (with NAME) make the volume read-only\n"
	  "      --writable          (with NAME) make it writable\n"
	  "      --rmap              build the reverse map\n"
	  "      --json              print a JSON object\n"
	  "      --expendable-floor PCT\n"
	  "                          free room to keep by deleting expendable snapshots\n"
	  CACHE_HELP HELP_HELP, "POOL" },
	{ "rollback", cmd_rollback, O_YES | O_FORCE | O_DRY_RUN | O_PROGRESS | O_NO_PROGRESS | O_CACHE,
	  3, 3, "POOL NAME SNAPSHOT [--yes] [--dry-run] [--progress]",
	  "make a volume equal to one of its snapshots again",
	  "O(1): NAME shares SNAPSHOT's blocks (and takes its size) from now on, as\n"
	  "qemu-img snapshot -a or rbd snap rollback; what it wrote since is freed\n"
	  "in the background of later commits, as a delete frees.  NAME keeps its\n"
	  "id and its snapshots.  What is lost is named (the bytes that differ\n"
	  "from the snapshot) and asked about as 'delete' asks.  Not for a volume\n"
	  "that is open, or whose export has clients (disconnect them), nor with\n"
	  "reserved ranges (unreserve first).  Works on a served pool.\n\n"
	  "Options:\n"
	  "  -y, --yes               do not ask (needed when standard input is not\n"
	  "                          a terminal)\n"
	  "  -f, --force             the same as --yes\n"
	  "      --dry-run           say what would be lost and change nothing\n"
	  PROGRESS_HELP CACHE_HELP HELP_HELP, "POOL NAME SNAPSHOT" },
	{ "create", cmd_create, O_SIZE | O_RESERVE | O_CACHE, 2, 2,
	  "POOL NAME --size SIZE [--reserve]",
	  "create a thin (or, with --reserve, thick) volume",
	  "NAME is 1 to 255 bytes of UTF-8 without '/' or control characters, and\n"
	  "not '.' or '..' (every front end carries it as it is: an NBD export\n"
	  "name, a JSON string).  SIZE is a multiple of the block\n"
	  "size and may exceed the pool: blocks are allocated as they are written.\n"
	  "With --reserve the whole volume is reserved at once (see 'reserve'): no\n"
	  "write to it can ever fail for want of space; if the pool cannot hold it,\n"
	  "the volume is not created.\n\n"
	  "Options:\n"
	  "  -s, --size SIZE         the volume's size (required)\n"
	  "      --reserve           reserve all of it (a thick volume)\n" CACHE_HELP HELP_HELP },
	{ "list", cmd_list, O_TABLE | O_CACHE, 1, 1,
	  "POOL [-o COLS] [--noheadings] [--raw] [--bytes] [--json]",
	  "list the volumes",
	  "A table like lvs's, one row per volume (the columns are below).  mapped\n"
	  "= exclusive + shared: exclusive blocks are the volume's alone (deleting\n"
	  "it frees them), shared ones are also used by another volume or at\n"
	  "another offset.  origin is the volume this one is a snapshot or clone\n"
	  "of ('-', JSON null: none, or deleted).  reserved is the bytes of its\n"
	  "reserved ranges, owed what the pool holds for their copies on write\n"
	  "where they are shared; expendable: a snapshot the pool may delete to\n"
	  "make room.\n\n" TABLE_ABOUT
	  "Options:\n"
	  TABLE_HELP CACHE_HELP HELP_HELP },
	{ "delete", cmd_delete, O_YES | O_FORCE | O_DRY_RUN | O_PROGRESS | O_NO_PROGRESS | O_CACHE, 2, 2,
	  "POOL NAME [--yes] [--dry-run] [--progress]",
	  "delete a volume and free its blocks",
	  "Its data is lost (snapshots and clones of it are volumes of their own\n"
	  "and stay).  On a terminal, asks first, naming the volume and the bytes\n"
	  "mapped in it; otherwise refuses unless --yes (or --force) is given.\n\n"
	  "Options:\n" 	  "  -y, --yes               do not ask (needed when standard input is not\n"
	  "                          a terminal)\n"
	  "  -f, --force             the same as --yes\n"
	  "      --dry-run           say what would be lost and change nothing\n"
	  PROGRESS_HELP CACHE_HELP HELP_HELP },
	{ "resize", cmd_resize, O_SIZE | O_YES | O_FORCE | O_DRY_RUN | O_CACHE, 2, 2,
	  "POOL NAME --size [+|-]SIZE [--yes] [--dry-run]",
	  "grow or shrink a volume",
	  "Shrinking frees the blocks past the new end; growing adds a hole.\n"
	  "Shrinking drops the data past the new end: on a terminal, asks first,\n"
	  "naming the bytes mapped past it (through a server, which does not say\n"
	  "where the data lies, the bytes mapped in the volume); otherwise refuses\n"
	  "unless --yes (or --force) is given.  Growing asks nothing.\n\n"
	  "Options:\n"
	  "  -s, --size SIZE         the new size (required); +SIZE grows by SIZE,\n"
	  "                          -SIZE shrinks by SIZE\n"
	  "  -y, --yes               do not ask (needed when standard input is not\n"
	  "                          a terminal)\n"
	  "  -f, --force             the same as --yes\n"
	  "      --dry-run           say what would be lost and change nothing\n" CACHE_HELP HELP_HELP },
	{ "write", cmd_write, O_OFFSET | O_PROGRESS | O_NO_PROGRESS | O_CACHE, 2, 3,
	  "POOL NAME [--offset OFF] [--progress] [FILE]",
	  "copy FILE (or standard input) into a volume",
	  "Reads FILE, or standard input when FILE is absent or '-', to its end and\n"
	  "writes it at OFF (default 0) in chunks of 1 MiB, then commits.  A chunk\n"
	  "that would go past the end of the volume or does not fit in the pool is\n"
	  "not written; what was written before it is committed (a regular FILE too\n"
	  "large for the volume is refused whole, before anything is written).\n"
	  "Sparse: the holes of a regular FILE (SEEK_HOLE) are not read, and they\n"
	  "and every whole block of zeros become holes of the volume (unmapped,\n"
	  "whatever was mapped there before), so the volume maps the data only.\n"
	  "On a served pool the server does the copy: FILE (or standard input) is\n"
	  "passed to it, and if vbas write is stopped, so is the copy, with what\n"
	  "was written committed.  SIGINT, SIGTERM or SIGHUP stop the copy at its\n"
	  "next chunk: what was written is committed and said, the rest of the\n"
	  "volume is as it was, and the exit status is 1.\n\n"
	  "Options:\n"
	  "  -o, --offset OFF        where to start writing (default 0)\n"
	  PROGRESS_HELP CACHE_HELP HELP_HELP },
	{ "read", cmd_read, O_OFFSET | O_LENGTH | O_PROGRESS | O_NO_PROGRESS | O_CACHE, 2, 3,
	  "POOL NAME [--offset OFF] [--length LEN] [--progress] [FILE]",
	  "copy part of a volume to FILE (or standard output)",
	  "Writes LEN bytes from OFF (default: from 0 to the end of the volume) to\n"
	  "FILE, or standard output when FILE is absent or '-'.  Holes read as zeros.\n"
	  "Into a regular file (not one opened to append), holes and whole blocks of\n"
	  "zeros are seeked over: the file is as sparse as the volume.  Into a pipe\n"
	  "or a terminal, every byte.  On a served pool, reads the server's last\n"
	  "commit under a pin, as check: a snapshot reads as it was taken, a volume\n"
	  "that clients are writing as it is being written (snapshot it first for\n"
	  "a consistent copy).  SIGINT, SIGTERM or SIGHUP stop it at its next chunk\n"
	  "(exit status 1, saying how far it came).\n\n"
	  "Options:\n"
	  "  -o, --offset OFF        where to start reading (default 0)\n"
	  "  -l, --length LEN        how much to read (default: to the end)\n"
	  PROGRESS_HELP CACHE_HELP HELP_HELP },
	{ "import", cmd_import, O_FORMAT | O_PROGRESS | O_NO_PROGRESS | O_CACHE, 3, 3,
	  "POOL NAME FILE [--format FMT] [--progress]",
	  "copy a disk image (qcow2, vmdk, vhdx, raw, ...) into a volume",
	  "Creates volume NAME at the image's virtual size (rounded up to the block\n"
	  "size) unless it exists; an existing one must hold the image, and what\n"
	  "it held there is overwritten.  qemu-img convert does the copy, against\n"
	  "a private NBD export of the volume (nbdkit with this pool, on a socket\n"
	  "of its own, for as long as the copy runs): only the image's data is\n"
	  "written, so the volume maps what the image allocates, and a new volume\n"
	  "gets no zeros written at all.  If the copy fails, a volume made for it\n"
	  "is deleted again.  On a served pool, qemu-img writes the image as a\n"
	  "sparse raw file in $TMPDIR (default /var/tmp), which the server copies\n"
	  "into the volume as vbas write's source (its data only): that needs room\n"
	  "for the image's data there.\n\n"
	  "Options:\n"
	  "      --format FMT        the image's format: raw, qcow2, vmdk, vhdx, vpc,\n"
	  "                          vdi or qed (default: what qemu-img finds)\n"
	  "  -p, --progress          show qemu-img's progress (default on a terminal)\n"
	  "      --no-progress       do not\n" CACHE_HELP HELP_HELP, "POOL NAME FILE" },
	{ "export", cmd_export, O_FORMAT | O_FORCE | O_PROGRESS | O_NO_PROGRESS | O_CACHE, 3, 3,
	  "POOL NAME FILE [--format FMT] [--force] [--progress]",
	  "copy a volume into a disk image (raw by default, qcow2, vmdk, vhdx, ...)",
	  "qemu-img convert writes FILE in FMT from a private read-only NBD export\n"
	  "of the volume; the volume's holes stay holes (sparse raw, unallocated\n"
	  "clusters).  FILE must not exist unless --force.  On a served pool it\n"
	  "reads the server's last commit under a pin, as read does: export a\n"
	  "snapshot for a consistent image of a volume in use.\n\n"
	  "Options:\n"
	  "      --format FMT        raw (default), qcow2, vmdk, vhdx, vpc, vdi or qed\n"
	  "  -f, --force             replace FILE if it exists\n"
	  "  -p, --progress          show qemu-img's progress (default on a terminal)\n"
	  "      --no-progress       do not\n" CACHE_HELP HELP_HELP, "POOL NAME FILE" },
	{ "discard", cmd_discard, O_OFFSET | O_LENGTH | O_CACHE, 2, 2,
	  "POOL NAME --offset OFF --length LEN",
	  "unmap a block-aligned range: it reads as zeros and its blocks are freed",
	  "Options:\n"
	  "  -o, --offset OFF        start of the range, a multiple of the block size\n"
	  "  -l, --length LEN        length of the range, a multiple of the block size\n"
	  CACHE_HELP HELP_HELP },
	{ "reserve", cmd_reserve, O_OFFSET | O_LENGTH | O_CACHE, 2, 2,
	  "POOL NAME [--offset OFF] [--length LEN]",
	  "reserve a range of a volume: every later write inside it succeeds",
	  "Like fallocate: the holes of the range get blocks of their own (zeroed,\n"
	  "so they still read as zeros), and the range is marked reserved in the\n"
	  "volume, which survives close, crash and reopen.  Writes inside it never\n"
	  "fail for want of space, whatever else fills the pool.  A snapshot, clone\n"
	  "or reflink that shares reserved blocks sets their copies on write aside\n"
	  "too, or fails (see 'snapshot --no-reserve').  A discard inside the range\n"
	  "zeroes its blocks and keeps them.  The range is rounded out to whole\n"
	  "blocks; by default it is the whole volume (from OFF to the end).  Fails\n"
	  "with nothing changed if the pool cannot hold it.  Prints the volume's\n"
	  "reserved bytes.\n\n"
	  "Options:\n"
	  "  -o, --offset OFF        start of the range (default 0)\n"
	  "  -l, --length LEN        length of the range (default: to the end)\n"
	  CACHE_HELP HELP_HELP },
	{ "unreserve", cmd_unreserve, O_OFFSET | O_LENGTH | O_CACHE, 2, 2,
	  "POOL NAME [--offset OFF] [--length LEN]",
	  "end the reservation of a block-aligned range",
	  "The blocks stay mapped, with their data; a discard frees them.  By\n"
	  "default the whole volume.\n\n"
	  "Options:\n"
	  "  -o, --offset OFF        start of the range, a multiple of the block size\n"
	  "  -l, --length LEN        length of the range, a multiple of the block size\n"
	  CACHE_HELP HELP_HELP },
	{ "map", cmd_map, O_TABLE | O_CACHE, 2, 2,
	  "POOL NAME [-o COLS] [--noheadings] [--raw] [--bytes] [--json]",
	  "list a volume's mapped extents",
	  "One row per extent, in offset order: where it is in the volume and in\n"
	  "the pool, whether its blocks are shared with another volume, whether it\n"
	  "is in a reserved range.  Printed as found, 4,096 rows at a time: memory\n"
	  "does not grow with the extents.\n\n" TABLE_ABOUT
	  "Options:\n" TABLE_HELP CACHE_HELP HELP_HELP },
	{ "snapshot", cmd_snapshot, O_NO_RESERVE | O_EXPENDABLE | O_CACHE, 3, 3,
	  "POOL SOURCE NEW [--no-reserve] [--expendable]",
	  "make NEW a read-only snapshot of volume SOURCE",
	  "O(1): NEW shares SOURCE's blocks until SOURCE is written (copy on\n"
	  "write).  SOURCE may itself be a snapshot or a clone.  Writes, discards\n"
	  "and resizes of a snapshot fail.  If SOURCE has reserved ranges, the\n"
	  "copies their writes will need are set aside (still O(1)), or the\n"
	  "snapshot fails with nothing changed.\n\n"
	  "Options:\n"
	  "      --no-reserve        share reserved ranges without setting their\n"
	  "                          copies aside: writes there may then fail for\n"
	  "                          want of space\n"
	  "      --expendable        the pool may delete the snapshot, oldest such\n"
	  "                          first, rather than refuse a write or a\n"
	  "                          reservation for want of room (see 'set'); never\n"
	  "                          while it is open or exported with clients\n"
	  CACHE_HELP HELP_HELP, "POOL SOURCE NEW" },
	{ "rename", cmd_rename, O_CACHE, 3, 3, "POOL NAME NEW",
	  "give volume NAME the name NEW",
	  "NEW must be free, UTF-8 and without control characters.  Nothing else\n"
	  "changes: not the volume's id, data, snapshots or reservations.  While\n"
	  "vbas serve serves the pool, the server renames it: its export is NEW\n"
	  "from then on, and clients connected to NAME keep their connection.\n\n"
	  "Options:\n" CACHE_HELP HELP_HELP, "POOL NAME NEW" },
	{ "clone", cmd_clone, O_NO_RESERVE | O_CACHE, 3, 3, "POOL SOURCE NEW [--no-reserve]",
	  "make NEW a writable clone of volume SOURCE",
	  "O(1): NEW shares SOURCE's blocks; either can be written afterwards\n"
	  "without the other seeing it.  SOURCE may be a snapshot or a clone.\n"
	  "Reserved ranges stay reserved in both: their copies are set aside for\n"
	  "each, or the clone fails with nothing changed.\n\n"
	  "Options:\n"
	  "      --no-reserve        do not set copies aside (see 'snapshot')\n"
	  CACHE_HELP HELP_HELP, "POOL SOURCE NEW" },
	{ "reflink", cmd_reflink, O_PROGRESS | O_NO_PROGRESS | O_CACHE, 6, 6,
	  "POOL SRC SRC_OFFSET DST DST_OFFSET LENGTH [--progress]",
	  "share a range of SRC into DST (like FICLONERANGE)",
	  "Afterwards DST's range reads as SRC's does, and the two share blocks\n"
	  "until either is written.  Offsets and LENGTH are multiples of the block\n"
	  "size, except that the range may run to the end of SRC; LENGTH 0 means\n"
	  "to the end of SRC.  SRC and DST may be the same volume if the ranges do\n"
	  "not overlap.  DST must not be a snapshot.\n\n"
	  "Options:\n" PROGRESS_HELP CACHE_HELP HELP_HELP, "POOL SRC SRC_OFFSET DST DST_OFFSET LENGTH" },
	{ "dedupe", cmd_dedupe, O_JSON | O_CACHE, 6, 6,
	  "POOL SRC SRC_OFFSET DST DST_OFFSET LENGTH [--json]",
	  "share a range of SRC into DST if the bytes are the same (FIDEDUPERANGE)",
	  "Compares the ranges (aligned as for reflink; LENGTH 0: to the end of\n"
	  "SRC) and shares them if they are equal.  Prints \"deduped N bytes\", or\n"
	  "\"ranges differ; nothing changed\"; the exit status is 0 either way.\n"
	  "The JSON object has the keys same (true/false) and deduped (bytes).\n\n"
	  "Options:\n"
	  "      --json              print a JSON object\n" CACHE_HELP HELP_HELP,
	  "POOL SRC SRC_OFFSET DST DST_OFFSET LENGTH" },
	{ "unshare", cmd_unshare, O_OFFSET | O_LENGTH | O_PROGRESS | O_NO_PROGRESS | O_CACHE, 2, 2,
	  "POOL NAME [--offset OFF] [--length LEN] [--progress]",
	  "give the shared blocks of a volume's range private copies",
	  "The range (block-aligned) is the whole volume by default.  All or\n"
	  "nothing in space: fails before changing anything if the copies do not\n"
	  "fit in the pool.\n\n"
	  "Options:\n"
	  "  -o, --offset OFF        start of the range (default 0)\n"
	  "  -l, --length LEN        length of the range (default: to the end)\n"
	  PROGRESS_HELP CACHE_HELP HELP_HELP },
	{ "fsmap", cmd_fsmap, O_START | O_LENGTH | O_PHYSICAL | O_SUMMARY | O_TABLE | O_CACHE, 1, 1,
	  "POOL [--start OFF] [--length LEN] [--physical OFF] [--summary] [-o COLS]\n"
	  "       [--noheadings] [--raw] [--bytes] [--json]",
	  "show who uses each block of a physical range (like xfs_io fsmap)",
	  "Prints, in physical order, every owner of every block of the range (the\n"
	  "whole pool by default; block-aligned): data, with each volume that reads\n"
	  "it and the offset it reads it at (a block shared by snapshots, clones or\n"
	  "reflinks once per volume and offset), nodes of the volume table, the\n"
	  "refcount tree, the reverse map and each volume's mapping tree, the\n"
	  "superblocks, and free runs.  --physical OFF answers for the one block that holds byte OFF (a\n"
	  "bad sector: which volumes and offsets it breaks).  --summary adds up the\n"
	  "bytes per owner instead: with --json an object {\"free\",\n"
	  "\"superblock\", \"volume_table\", \"refcount_tree\", \"reverse_map\",\n"
	  "\"volumes\": [{\"name\", \"id\", \"data\", \"mapping_tree\"}]}.  Read-only;\n"
	  "a served pool as of the server's last commit (under a pin, as check).\n"
	  "With the pool's reverse map it reads only what the range holds (an\n"
	  "interval query, and a lookup per volume that may see each record);\n"
	  "without one (format --no-rmap) it reads every tree (docs/rmap.md).\n"
	  "Printed as found, 4,096 rows at a time.\n\n" TABLE_ABOUT
	  "Options:\n"
	  "      --start OFF         the first byte of the range (default 0)\n"
	  "  -l, --length LEN        its length (default: to the end of the pool)\n"
	  "      --physical OFF      the block holding byte OFF\n"
	  "      --summary           bytes per owner\n"
	  TABLE_HELP CACHE_HELP HELP_HELP, "POOL" },
	{ "diff", cmd_diff, O_TABLE | O_CACHE, 3, 3,
	  "POOL FROM TO [-o COLS] [--noheadings] [--raw] [--bytes]\n"
	  "       [--json]",
	  "list the ranges where volume TO differs from FROM",
	  "Compares the mappings of two volumes of one lineage (a snapshot and its\n"
	  "origin, say): each maximal block-aligned range where TO maps another\n"
	  "block than FROM, or a hole against a block.  Shared parts are skipped,\n"
	  "so the work grows with the changes, not the size.  One row per range;\n"
	  "for a script, --raw --bytes --noheadings prints \"OFFSET LENGTH\" lines\n"
	  "in bytes.\n\n" TABLE_ABOUT
	  "Options:\n" TABLE_HELP CACHE_HELP HELP_HELP,
	  "POOL FROM TO" },
	{ "check", cmd_check, O_JSON | O_CACHE | O_NOMODIFY | O_PROGRESS | O_NO_PROGRESS, 1, 1,
	  "POOL [--no-modify] [--json] [--progress]",
	  "verify every invariant of the pool",
	  "Prints each problem found.  Exit status 0 if the pool is clean, 1 if not.\n"
	  "Every block's reference count is recounted from the trees; with a\n"
	  "reverse map the check is three-way: the mapping trees, the reverse map\n"
	  "and the refcounts must agree record for record, and each difference\n"
	  "names the blocks, the volume and the counts.\n"
	  "Opens the pool read-write when it can: an interrupted delete is finished\n"
	  "first.  With --no-modify, or when it cannot write (a read-only file, mount\n"
	  "or device; no permission: said on stderr), or when the pool is open\n"
	  "read-only elsewhere, it opens the pool read-only, writes nothing, and\n"
	  "checks the last commit as it is (a delete in progress as half done).\n"
	  "While vbas serve serves the pool, it checks the server's last commit\n"
	  "read-only, under a pin the server holds for it (docs/nbd.md), beside\n"
	  "the server's I/O.\n"
	  "Memory: the metadata cache (--cache, default 64M), at most half its size\n"
	  "again for sorting what it counts (the rest goes to an unlinked temporary\n"
	  "file in $TMPDIR, else /var/tmp: up to about 150 bytes per extent), and\n"
	  "about 300 bytes per volume and 50 per metadata node that snapshots or\n"
	  "clones share; nothing grows with the extents.\n"
	  "The JSON object has the keys clean, problems (the messages), nodes,\n"
	  "extents, refcount_records, rmap_records, volumes and problem_count (also\n"
	  "those past\n"
	  "the first 200, which are not reported one by one), read_only, served\n"
	  "and generation (the commit checked).  If the pool cannot be opened or\n"
	  "checked, the JSON object is {\"clean\": false, \"error\": {\"errno\":\n"
	  "NAME or null, \"message\": TEXT}} (info, list, map, diff and dedupe\n"
	  "print {\"error\": {...}} when they fail before their answer).\n\n"
	  "Options:\n"
	  "  -n, --no-modify         open read-only: finish nothing, write nothing\n"
	  "      --json              print a JSON object\n" PROGRESS_HELP CACHE_HELP HELP_HELP },
	{ "repair", cmd_repair, O_DRY_RUN | O_JSON | O_CACHE, 1, 1, "POOL [--dry-run] [--json]",
	  "rebuild the refcount tree, the reverse map and the name index",
	  "The volume table and the mapping trees say which blocks the pool uses;\n"
	  "the refcount tree only counts them, the reverse map only mirrors the\n"
	  "mapping records and the name index the volume table, so when one is\n"
	  "damaged or disagrees with them (vbas check says so), repair rebuilds it\n"
	  "from a walk of the rest, as one new\n"
	  "commit: a crash before it lands leaves the pool as it was, and repair\n"
	  "can run again.  Prints what it finds and does, then checks the result.\n"
	  "A mapping-tree leaf that cannot be read is rebuilt in place from the\n"
	  "reverse map (its records, less what the readable leaves hold); an\n"
	  "interior node from the nodes one level down that lost their parent\n"
	  "(the refcount tree counts a reference no readable node holds).  Other\n"
	  "damage to the volume table or a mapping tree (a root, two lost nodes\n"
	  "over the same keys) is named and not repaired (nothing is changed;\n"
	  "exit 1).  The pool must not be served or open elsewhere.  The JSON\n"
	  "object has the keys messages, dry_run, refcount_rebuilt, rmap_rebuilt,\n"
	  "refcount_records, rmap_records, leaves_rebuilt, interior_rebuilt,\n"
	  "names_rebuilt (the name index, rebuilt from the volume table),\n"
	  "unrepairable (problems not repaired), clean (check after it; null for a\n"
	  "dry run) and, if it failed, error.\n\n"
	  "Options:\n"
	  "      --dry-run           say what would be rebuilt; change nothing\n"
	  "      --json              print a JSON object\n" CACHE_HELP HELP_HELP },
	{ "serve", cmd_serve, O_SOCKET | O_PORT | O_READONLY | O_BIND | O_CACHE | O_BUFFERED |
	  O_ON_EVENT | O_AUTOEXTEND | O_TLS | O_TLS_PSK | O_TLS_CERTS | O_TLS_VERIFY |
	  O_DEFAULT_EXPORT, 1, 1,
	  "POOL [--socket PATH | --port N [--bind ADDR]] [--readonly] [--buffered]\n"
	  "                  [--tls-psk FILE | --tls-certificates DIR [--tls-verify-peer]]\n"
	  "                  [--tls on|require] [--default-export NAME]\n"
	  "                  [--on-event CMD] [--autoextend STEP] [--cache SIZE]",
	  "serve every volume as an NBD export (nbdkit, in the foreground)",
	  "Runs nbdkit with the vbas plugin (nbdkit-vbas-plugin.so, looked for beside\n"
	  "this vbas binary, then in nbdkit's plugin directory; $VBAS_NBDKIT_PLUGIN\n"
	  "overrides) until it is stopped.  Each volume is an export named after\n"
	  "it; snapshots are read-only.  Once nbdkit listens, prints one NBD URI per\n"
	  "volume (nbd+unix:///NAME?socket=PATH or nbd://HOST:PORT/NAME; nbds with\n"
	  "TLS, with what a client on this host needs to connect).  SIGINT\n"
	  "(Ctrl-C), SIGTERM or SIGHUP stops nbdkit, which commits and closes the\n"
	  "pool.  While the pool is served, the commands that change it go through\n"
	  "the server, check, fsmap, map, diff and read read its last commit, and\n"
	  "format, repair and a second serve fail (it is locked).\n"
	  "Started by systemd socket activation (LISTEN_FDS, LISTEN_PID: the units\n"
	  "vbas-serve@.socket and .service), nbdkit serves on the sockets it was\n"
	  "given, and --socket, --port and --bind are refused.\n"
	  "Events are printed on stdout as one JSON object per line, each with the\n"
	  "keys event, time, pool, use and low_water (percent), size and available\n"
	  "(bytes): low_water and low_water_clear (use crossed the pool's low-water\n"
	  "mark up, or fell 1% below it; see 'set'), metadata_reserve and\n"
	  "metadata_reserve_clear (the room for new data fell to the metadata\n"
	  "reserve, or rose again), enospc (a write or reservation was refused;\n"
	  "with needed and count, once until room comes back), expended (an\n"
	  "expendable snapshot was deleted; with volume), grown,\n"
	  "autoextend_refused (with reason), and the changes to the volumes made\n"
	  "through the server, with volume: volume_created, snapshot_created and\n"
	  "clone_created (with volume_size; the latter two with origin),\n"
	  "volume_resized (with volume_size), volume_renamed (with old_name) and\n"
	  "volume_deleted.\n\n"
	  "Options:\n"
	  "      --socket PATH       listen on a unix socket (a stale one is replaced)\n"
	  "      --port N            listen on TCP port N (default: 10809)\n"
	  "      --bind ADDR         the address to listen on with TCP (default: localhost)\n"
	  "      --tls-psk FILE      TLS with the pre-shared keys of FILE (lines\n"
	  "                          USER:HEXKEY, as psktool makes them); clients give\n"
	  "                          a user and its key\n"
	  "      --tls-certificates DIR  TLS with X.509 certificates: DIR holds\n"
	  "                          server-cert.pem, server-key.pem and ca-cert.pem\n"
	  "      --tls-verify-peer   clients must show a certificate signed by\n"
	  "                          DIR/ca-cert.pem\n"
	  "      --tls MODE          require (the default with a key: clients without\n"
	  "                          TLS are refused) or on (they may choose)\n"
	  "      --default-export NAME  the volume a client gets when it asks for no\n"
	  "                          export name (default: the only volume, if there\n"
	  "                          is one)\n"
	  "      --readonly          serve every volume read-only (the pool is opened\n"
	  "                          read-only: read-only commands may run beside it)\n"
	  "      --buffered          data through the page cache, written back in the\n"
	  "                          background, instead of O_DIRECT (faster large\n"
	  "                          writes at queue depth 1; NBD flush still commits\n"
	  "                          and syncs; the host caches what the guest caches)\n"
	  "      --on-event CMD      run CMD with /bin/sh -c for each event, one at a\n"
	  "                          time, with $VBAS_EVENT (its name), $VBAS_EVENT_JSON\n"
	  "                          (its line) and $VBAS_POOL\n"
	  "      --autoextend STEP   grow a pool file by STEP when use reaches the\n"
	  "                          low-water mark, and when a write finds the pool\n"
	  "                          full (the write then goes on), while the file\n"
	  "                          system holding it has STEP free\n"
	  CACHE_HELP HELP_HELP },
};

#define NCMDS (sizeof(cmds) / sizeof(cmds[0]))

static const struct cmd *find_cmd(const char *name)
{
	for (size_t i = 0; i < NCMDS; i++)
		if (!strcmp(cmds[i].name, name))
			return &cmds[i];
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: vbas [--cache SIZE] COMMAND [ARGS...]\n"
		   "       vbas help COMMAND | vbas COMMAND --help | vbas version | vbas -V\n\n"
		   "Thin-provisioned volumes in a pool (a file or a block device).\n\n"
		   "Commands:\n");
	for (size_t i = 0; i < NCMDS; i++)
		fprintf(f, "  %-11s %s\n", cmds[i].name, cmds[i].summary);
	fprintf(f, "\nSIZE, OFF and LEN are bytes, or a number followed by K, M, G, T, P or E\n"
		   "(powers of 1024; also k, KiB, KB), with a decimal fraction if it comes to\n"
		   "whole bytes (1.5G).\n\n"
		   "While vbas serve serves a pool, the commands that change it go through\n"
		   "the server (write hands it the source), and check, fsmap, map, diff and\n"
		   "read read the server's last commit beside it (a snapshot as it was\n"
		   "taken, a volume being written as it is written); format, repair and\n"
		   "serve say who holds the pool.\n\n"
		   "Exit status: 0 success, 1 failure (check: problems found), 2 usage error.\n");
}

static void cmd_help(const struct cmd *c)
{
	static const struct { const char *cmd; const struct col_def *defs; int n; } tables[] = {
		{ "list", list_cols, L_NCOLS }, { "map", map_cols, M_NCOLS },
		{ "diff", diff_cols, D_NCOLS }, { "fsmap", fsmap_cols, F_NCOLS },
	};
	printf("Usage: vbas %s %s\n\n%c%s.\n\n%s", c->name, c->synopsis,
	       toupper((unsigned char)c->summary[0]), c->summary + 1, c->details);
	for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
		if (strcmp(c->name, tables[i].cmd))
			continue;
		printf("\nColumns (-o NAME, or its JSON key):\n");
		table_help(stdout, tables[i].defs, tables[i].n);
	}
}

/* The options' codes, bits and names; those with a value parse as sizes. */
static const struct opt_info {
	int code;
	uint64_t bit;
	const char *name;
	size_t field;         /* offset of the size value in struct args, or 0 */
	size_t sfield;        /* offset of the string value in struct args, or 0 */
} opt_infos[] = {
	{ 's', O_SIZE, "--size", offsetof(struct args, size) },
	{ 'b', O_BLOCK_SIZE, "--block-size", offsetof(struct args, block_size) },
	{ 'f', O_FORCE, "--force", 0 },
	{ 'o', O_OFFSET, "--offset", offsetof(struct args, offset) },
	{ 'l', O_LENGTH, "--length", offsetof(struct args, length) },
	{ OPT_JSON, O_JSON, "--json", 0 },
	{ OPT_CACHE, O_CACHE, "--cache", offsetof(struct args, cache) },
	{ OPT_SOCKET, O_SOCKET, "--socket", 0, offsetof(struct args, socket) },
	{ OPT_PORT, O_PORT, "--port", 0, offsetof(struct args, port) },
	{ OPT_READONLY, O_READONLY, "--readonly", 0 },
	{ OPT_BIND, O_BIND, "--bind", 0, offsetof(struct args, bind) },
	{ OPT_BUFFERED, O_BUFFERED, "--buffered", 0 },
	{ 'y', O_YES, "--yes", 0 },
	{ OPT_DRY_RUN, O_DRY_RUN, "--dry-run", 0 },
	{ OPT_RESERVE, O_RESERVE, "--reserve", 0 },
	{ OPT_NO_RESERVE, O_NO_RESERVE, "--no-reserve", 0 },
	{ OPT_LOW_WATER, O_LOW_WATER, "--low-water", 0, offsetof(struct args, low_water) },
	{ OPT_FLOOR, O_FLOOR, "--expendable-floor", 0, offsetof(struct args, floor) },
	{ OPT_EXPENDABLE, O_EXPENDABLE, "--expendable", 0 },
	{ OPT_ON_EVENT, O_ON_EVENT, "--on-event", 0, offsetof(struct args, on_event) },
	{ OPT_AUTOEXTEND, O_AUTOEXTEND, "--autoextend", offsetof(struct args, autoextend) },
	{ OPT_START, O_START, "--start", offsetof(struct args, start) },
	{ OPT_PHYSICAL, O_PHYSICAL, "--physical", offsetof(struct args, physical) },
	{ OPT_SUMMARY, O_SUMMARY, "--summary", 0 },
	{ OPT_NO_RMAP, O_NO_RMAP, "--no-rmap", 0 },
	{ OPT_RMAP, O_RMAP, "--rmap", 0 },
	{ OPT_CANCEL, O_CANCEL, "--cancel", 0 },
	{ OPT_FORMAT, O_FORMAT, "--format", 0, offsetof(struct args, format) },
	{ 'p', O_PROGRESS, "--progress", 0 },
	{ OPT_NO_PROGRESS, O_NO_PROGRESS, "--no-progress", 0 },
	{ OPT_OUTPUT, O_OUTPUT, "--output", 0, offsetof(struct args, output) },
	{ OPT_NOHEADINGS, O_NOHEADINGS, "--noheadings", 0 },
	{ OPT_RAW, O_RAW, "--raw", 0 },
	{ OPT_BYTES, O_BYTES, "--bytes", 0 },
	{ OPT_WRITABLE, O_WRITABLE, "--writable", 0 },
	{ OPT_TLS, O_TLS, "--tls", 0, offsetof(struct args, tls) },
	{ OPT_TLS_PSK, O_TLS_PSK, "--tls-psk", 0, offsetof(struct args, tls_psk) },
	{ OPT_TLS_CERTS, O_TLS_CERTS, "--tls-certificates", 0, offsetof(struct args, tls_certs) },
	{ OPT_TLS_VERIFY, O_TLS_VERIFY, "--tls-verify-peer", 0 },
	{ OPT_DEFAULT_EXPORT, O_DEFAULT_EXPORT, "--default-export", 0,
	  offsetof(struct args, default_export) },
	{ 'n', O_NOMODIFY, "--no-modify", 0 },
	{ 'h', O_HELP, "--help", 0 },
};
#define NOPTS (sizeof(opt_infos) / sizeof(opt_infos[0]))

static const struct opt_info *find_opt(int code)
{
	for (size_t i = 0; i < NOPTS; i++)
		if (opt_infos[i].code == code)
			return &opt_infos[i];
	return NULL;
}

/* The option getopt_long just complained about, as the user wrote it. */
static int bad_opt(const char *cmd, int ch, char **argv)
{
	const char *arg = argv[optind - 1];
	const char *why = ch == ':' ? "missing value" : "unknown option";
	char s[3] = { '-', (char)optopt, 0 };
	int len = (int)strlen(arg);

	if (!strncmp(arg, "--", 2)) {
		len = (int)strcspn(arg, "=");
		if (ch == '?' && optopt && arg[len] == '=')
			why = "takes no value";
	}
	else if (optopt > 0 && optopt < 128)
		arg = s, len = 2;
	if (cmd)
		fprintf(stderr, "vbas: %s: %.*s: %s\n", cmd, len, arg, why);
	else
		fprintf(stderr, "vbas: %.*s: %s\n", len, arg, why);
	usage_hint(cmd);
	return EXIT_USAGE;
}

/* Parse a command's arguments ARGV[1..] into A.  Returns -1 to go on, or
 * an exit status. */
static int parse_args(const struct cmd *c, int argc, char **argv, struct args *a)
{
	const char *raw[NOPTS] = { NULL };   /* the values as given */
	int ch;

	a->cmd = c->name;
	opterr = 0;
	optind = 0;                          /* restart getopt */
	while ((ch = getopt_long(argc, argv, ":s:b:fo:l:nhyp", long_opts, NULL)) != -1) {
		if (ch == '?' || ch == ':')
			return bad_opt(c->name, ch, argv);
		/* -o is --output for a command with a table (none has --offset). */
		if (ch == 'o' && (c->opts & O_OUTPUT))
			ch = OPT_OUTPUT;
		const struct opt_info *o = find_opt(ch);
		if (!(o->bit & (c->opts | O_HELP)))
			return usage_err(c->name, o->name, "not an option of '%s'", c->name);
		a->seen |= o->bit;
		raw[o - opt_infos] = optarg;
	}
	if (a->seen & O_HELP) {
		cmd_help(c);
		return 0;
	}
	/* Values are parsed after --help so that it wins over bad ones. */
	for (size_t i = 0; i < NOPTS; i++) {
		char why[160];
		if (raw[i] && opt_infos[i].sfield)
			*(const char **)(void *)((char *)a + opt_infos[i].sfield) = raw[i];
		if (!raw[i] || !opt_infos[i].field)
			continue;
		const char *val = raw[i];
		if (opt_infos[i].code == 's' && val[0] == '+') {
			if (strcmp(c->name, "grow") && strcmp(c->name, "resize-pool") &&
			    strcmp(c->name, "resize"))
				return usage_err(c->name, "--size", "a relative size ('%s') is for "
						 "grow, resize and resize-pool only", val);
			a->size_plus = 1;
			val++;
		} else if (opt_infos[i].code == 's' && val[0] == '-' && !strcmp(c->name, "resize")) {
			a->size_minus = 1;
			val++;
		}
		if (parse_size(val, (uint64_t *)((char *)a + opt_infos[i].field), why, sizeof(why)))
			return usage_err(c->name, opt_infos[i].name, "%s", why);
	}
	a->npos = argc - optind;
	if (a->npos < c->min_pos) {
		/* The missing argument's name: word NPOS of argnames. */
		const char *names = c->argnames ? c->argnames : "POOL NAME FILE", *w = names;
		for (int i = 0; i < a->npos && w; i++)
			if ((w = strchr(w, ' ')))
				w++;
		char what[32];
		if (!w)
			w = "ARGUMENT";
		snprintf(what, sizeof(what), "%.*s", (int)strcspn(w, " "), w);
		return usage_err(c->name, what, "missing argument");
	}
	if (a->npos > c->max_pos)
		return usage_err(c->name, argv[optind + c->max_pos], "unexpected argument");
	for (int i = 0; i < a->npos; i++)
		a->pos[i] = argv[optind + i];
	return -1;
}

/* A --json command that failed before its answer: a JSON object with the
 * error on stdout (the message is on stderr too), {"error": {"errno":
 * "ENOENT" or null, "message": "WHAT: REASON"}}; check's also has
 * "clean": false. */
static void json_error(const struct cmd *c)
{
	const char *en = last_errno ? strerrorname_np(last_errno) : NULL;
	fputs(!strcmp(c->name, "check") ? "{\"clean\":false,\"error\":{\"errno\":"
					 : "{\"error\":{\"errno\":", stdout);
	if (en)
		json_str(stdout, en);
	else
		fputs("null", stdout);
	fputs(",\"message\":", stdout);
	json_str(stdout, last_error);
	puts("}}");
}

/* The CLI's version, and the library's it runs with when they differ. */
static void print_version(void)
{
	if (strcmp(vbas_version(), VBAS_VERSION_STRING))
		printf("vbas %s (libvbas %s)\n", VBAS_VERSION_STRING, vbas_version());
	else
		printf("vbas %s\n", VBAS_VERSION_STRING);
}

int main(int argc, char **argv)
{
	struct args a = { 0 };
	const char *gcache = NULL;
	int ch, rc;
	/* The character set only (the tables show UTF-8 names as they are on
	 * a UTF-8 terminal): numbers keep their C form. */
	setlocale(LC_CTYPE, "");
	static const struct option gopts[] = {
		{ "cache", required_argument, NULL, OPT_CACHE },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, OPT_VERSION },
		{ NULL, 0, NULL, 0 },
	};

	/* Global options, up to the command. */
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "+:hV", gopts, NULL)) != -1) {
		switch (ch) {
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
		case OPT_VERSION:
			print_version();
			return 0;
		case OPT_CACHE:
			gcache = optarg;
			break;
		default:
			return bad_opt(NULL, ch, argv);
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "vbas: no command given\n");
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *name = argv[optind];
	if (!strcmp(name, "version")) {
		if (optind + 1 < argc) {
			fprintf(stderr, "vbas: version: takes no arguments\n");
			return EXIT_USAGE;
		}
		print_version();
		return 0;
	}
	if (!strcmp(name, "help")) {
		if (optind + 1 >= argc) {
			usage(stdout);
			return 0;
		}
		const struct cmd *c = find_cmd(argv[optind + 1]);
		if (!c)
			return usage_err("help", argv[optind + 1], "unknown command");
		cmd_help(c);
		return 0;
	}
	const struct cmd *c = find_cmd(name);
	if (!c) {
		fprintf(stderr, "vbas: %s: unknown command\n", name);
		usage_hint(NULL);
		return EXIT_USAGE;
	}
	if (gcache) {
		char why[128];
		if (!(c->opts & O_CACHE))
			return usage_err(c->name, "--cache", "'%s' does not open a pool", c->name);
		if (parse_size(gcache, &a.cache, why, sizeof(why)))
			return usage_err(c->name, "--cache", "%s", why);
	}
	rc = parse_args(c, argc - optind, argv + optind, &a);
	if (rc < 0)
		rc = c->fn(&a);
	if (rc == EXIT_RUNTIME && (a.seen & O_JSON) && !json_started)
		json_error(c);
	if (fflush(stdout) || ferror(stdout)) {
		fprintf(stderr, "vbas: %s: stdout: %s\n", c->name, strerror(errno));
		if (!rc)
			rc = EXIT_RUNTIME;
	}
	return rc;
}
