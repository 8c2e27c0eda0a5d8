/* The served pool's events: see events.h.  Besides the library's, the
 * control channel's changes to the volumes (ev_volume: volume_created,
 * volume_deleted, ...) go through the same queue, in order with them.
 *
 * The library calls ev_cb with the pool's lock held, in the thread of the
 * change that caused the event: it only queues a copy.  One thread takes
 * the queue in order, appends each event as a JSON line to the events=
 * file (vbas serve passes a pipe, /dev/fd/N, and prints what comes out of
 * it on its stdout: nbdkit may close its own), runs the
 * on_event command for it and waits for that (so commands see events in
 * order, one at a time), and at a LOW_WATER event grows a file pool by
 * the autoextend step while use stays at or above the mark.  A write that
 * finds the pool full grows it itself (ev_grow_for_write) and tries again,
 * so that a burst faster than the thread does not fail.  Growth is for
 * pools in regular files, and only while the file system holding the file
 * has the step free: the file is sparse, so growing it costs nothing until
 * it is written, and a pool must not promise room the host lacks. */
#define _GNU_SOURCE
#include <nbdkit-plugin.h>

#include "events.h"
#include "../tools/json.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

struct ev_config ev_conf = { .log_fd = -1 };

struct ev_item {
	struct ev_item *next;
	struct vbas_event ev;            /* the volume's name in ev.name */
	time_t when;
	/* A change to the volumes through the control channel (ev_volume):
	 * its event name, else NULL (the library's event). */
	const char *vol_event;
	const char *other_key;           /* "origin", "old_name" or NULL */
	char other[VBAS_NAME_MAX + 1];
	int has_size;
	uint64_t vol_size;
};

static struct vbas_pool *ev_pool;
static const char *ev_path;
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cond = PTHREAD_COND_INITIALIZER;
static struct ev_item *q_head, **q_tail = &q_head;
static unsigned long q_lost;          /* events dropped for want of memory */
static _Atomic int q_stop;
static int running;
static pthread_t thread;
/* The on_event command running (0: none): stopping the server ends it. */
static _Atomic pid_t cmd_pid;
/* One grow at a time, from the thread or from writes. */
static pthread_mutex_t grow_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *ev_name(enum vbas_event_type t)
{
	switch (t) {
	case VBAS_EVENT_LOW_WATER: return "low_water";
	case VBAS_EVENT_LOW_WATER_CLEAR: return "low_water_clear";
	case VBAS_EVENT_META_LOW: return "metadata_reserve";
	case VBAS_EVENT_META_LOW_CLEAR: return "metadata_reserve_clear";
	case VBAS_EVENT_ENOSPC: return "enospc";
	case VBAS_EVENT_EXPENDED: return "expended";
	case VBAS_EVENT_GROWN: return "grown";
	}
	return "unknown";
}

static const char *item_name(const struct ev_item *it)
{
	return it->vol_event ? it->vol_event : ev_name(it->ev.type);
}

/* Queue IT (NULL: count a loss). */
static void enqueue(struct ev_item *it)
{
	pthread_mutex_lock(&q_lock);
	if (!it) {
		q_lost++;
	} else {
		it->next = NULL;
		it->when = time(NULL);
		*q_tail = it;
		q_tail = &it->next;
		pthread_cond_signal(&q_cond);
	}
	pthread_mutex_unlock(&q_lock);
}

/* Pool lock held: copy, queue, return. */
static void ev_cb(const struct vbas_event *ev, void *arg)
{
	(void)arg;
	struct ev_item *it = calloc(1, sizeof(*it));
	if (it)
		it->ev = *ev;
	enqueue(it);
}

/* The control thread, after the change was committed (the pool's lock
 * not held): the pool's figures now, and the volume. */
void ev_volume(const char *event, const char *name, const char *other_key, const char *other,
	       const uint64_t *vol_size)
{
	struct vbas_pool_info pi;
	if (!running)
		return;
	struct ev_item *it = calloc(1, sizeof(*it));
	if (it) {
		it->vol_event = event;
		snprintf(it->ev.name, sizeof(it->ev.name), "%s", name);
		if (other_key) {
			it->other_key = other_key;
			snprintf(it->other, sizeof(it->other), "%s", other);
		}
		if (vol_size) {
			it->has_size = 1;
			it->vol_size = *vol_size;
		}
		if (!vbas_pool_info(ev_pool, &pi)) {
			uint64_t total = pi.total_blocks, avail = pi.available / pi.block_size;
			if (total)
				it->ev.use = (uint32_t)((total - (avail < total ? avail : total)) * 1000 /
							total);
			it->ev.low_water = pi.low_water;
			it->ev.size = pi.size;
			it->ev.available = pi.available;
		}
	}
	enqueue(it);
}

/* The event as one JSON line (malloc'ed; NULL: no memory). */
static char *ev_json(const struct ev_item *it, const char *extra)
{
	const struct vbas_event *ev = &it->ev;
	char *buf = NULL, ts[32];
	size_t len = 0;
	struct tm tm;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return NULL;
	gmtime_r(&it->when, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	fprintf(f, "{\"event\":\"%s\",\"time\":\"%s\",\"pool\":", item_name(it), ts);
	json_str(f, ev_path);
	fprintf(f, ",\"use\":%u.%u,\"low_water\":", ev->use / 10, ev->use % 10);
	if (ev->low_water)
		fprintf(f, "%u.%u", ev->low_water / 10, ev->low_water % 10);
	else
		fputs("null", f);
	fprintf(f, ",\"size\":%" PRIu64 ",\"available\":%" PRIu64, ev->size, ev->available);
	if (!it->vol_event && ev->type == VBAS_EVENT_ENOSPC)
		fprintf(f, ",\"needed\":%" PRIu64 ",\"count\":%" PRIu64, ev->needed, ev->count);
	if (it->vol_event || ev->type == VBAS_EVENT_EXPENDED) {
		fputs(",\"volume\":", f);
		json_str(f, ev->name);
	}
	if (it->other_key) {
		fprintf(f, ",\"%s\":", it->other_key);
		json_str(f, it->other);
	}
	if (it->has_size)
		fprintf(f, ",\"volume_size\":%" PRIu64, it->vol_size);
	if (extra)
		fputs(extra, f);
	fputs("}\n", f);
	if (fclose(f)) {
		free(buf);
		return NULL;
	}
	return buf;
}

int ev_open_log(void)
{
	if (!ev_conf.log || ev_conf.log_fd >= 0)
		return 0;
	ev_conf.log_fd = open(ev_conf.log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (ev_conf.log_fd < 0) {
		nbdkit_error("events=%s: %m", ev_conf.log);
		return -1;
	}
	return 0;
}

/* One write(2) per line, so that lines do not mix with other writers'. */
static void put_line(const char *line)
{
	size_t n = strlen(line), off = 0;
	while (off < n) {
		ssize_t k = write(ev_conf.log_fd, line + off, n - off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return;
		off += (size_t)k;
	}
}

/* An event of the plugin's own (autoextend refused), as a line. */
static void own_event(const char *type, const char *why)
{
	struct vbas_pool_info pi;
	char *buf = NULL;
	size_t len = 0;
	if (ev_conf.log_fd < 0 || vbas_pool_info(ev_pool, &pi))
		return;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return;
	char ts[32];
	struct tm tm;
	time_t now = time(NULL);
	gmtime_r(&now, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	fprintf(f, "{\"event\":\"%s\",\"time\":\"%s\",\"pool\":", type, ts);
	json_str(f, ev_path);
	fprintf(f, ",\"size\":%" PRIu64 ",\"available\":%" PRIu64 ",\"reason\":", pi.size,
		pi.available);
	json_str(f, why);
	fputs("}\n", f);
	if (!fclose(f))
		put_line(buf);
	free(buf);
}

/* Run on_event for IT (its JSON line LINE), and wait for it. */
static void run_command(const struct ev_item *it, const char *line)
{
	char e_type[64], e_json[4096], e_pool[4200];
	char *envp[512];
	size_t n = 0;
	snprintf(e_type, sizeof(e_type), "VBAS_EVENT=%s", item_name(it));
	snprintf(e_json, sizeof(e_json), "VBAS_EVENT_JSON=%.*s", (int)strcspn(line, "\n"), line);
	snprintf(e_pool, sizeof(e_pool), "VBAS_POOL=%s", ev_path);
	envp[n++] = e_type;
	envp[n++] = e_json;
	envp[n++] = e_pool;
	for (char **e = environ; *e && n < 511; e++)
		if (strncmp(*e, "VBAS_EVENT=", 11) && strncmp(*e, "VBAS_EVENT_JSON=", 16) &&
		    strncmp(*e, "VBAS_POOL=", 10))
			envp[n++] = *e;
	envp[n] = NULL;
	char *argv[] = { "sh", "-c", (char *)ev_conf.on_event, NULL };
	pid_t pid;
	int r = posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, envp);
	if (r) {
		nbdkit_error("on_event: /bin/sh: %s", strerror(r));
		return;
	}
	cmd_pid = pid;
	if (q_stop)                  /* ev_stop looked before it was there */
		kill(pid, SIGTERM);
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	cmd_pid = 0;
	if (WIFEXITED(st) && WEXITSTATUS(st))
		nbdkit_error("on_event: '%s' exited with status %d for event %s", ev_conf.on_event,
			     WEXITSTATUS(st), item_name(it));
	else if (WIFSIGNALED(st))
		nbdkit_error("on_event: '%s' killed by signal %d for event %s", ev_conf.on_event,
			     WTERMSIG(st), item_name(it));
}

/* Grow by one step if the pool is a file whose file system has the step
 * free.  0: grown; -1: not (said as an autoextend_refused event, once per
 * reason in a row). */
static int grow_step(void)
{
	static char last_why[256];
	char why[256] = "";
	struct vbas_pool_info pi;
	struct stat st;
	struct statvfs vfs;
	int r = vbas_pool_info(ev_pool, &pi);
	if (r)
		snprintf(why, sizeof(why), "info: %s", vbas_errmsg());
	else if (stat(ev_path, &st))
		snprintf(why, sizeof(why), "%s: %s", ev_path, strerror(errno));
	else if (!S_ISREG(st.st_mode))
		snprintf(why, sizeof(why), "the pool is not a regular file: grow its device, "
			 "then run vbas grow");
	else if (statvfs(ev_path, &vfs))
		snprintf(why, sizeof(why), "statvfs: %s", strerror(errno));
	else if ((uint64_t)vfs.f_bavail * vfs.f_frsize < ev_conf.autoextend)
		snprintf(why, sizeof(why), "the file system holding the pool has %" PRIu64
			 " bytes free, less than the step of %" PRIu64,
			 (uint64_t)vfs.f_bavail * vfs.f_frsize, ev_conf.autoextend);
	else if ((r = vbas_pool_grow(ev_pool, pi.size + ev_conf.autoextend)))
		snprintf(why, sizeof(why), "%s", vbas_errmsg());
	if (!*why) {
		last_why[0] = 0;
		return 0;
	}
	if (strcmp(why, last_why)) {
		nbdkit_error("autoextend: %s", why);
		own_event("autoextend_refused", why);
		snprintf(last_why, sizeof(last_why), "%s", why);
	}
	return -1;
}

/* At a LOW_WATER event: grow while use is at or above the mark (a few
 * steps at most: a step smaller than what writes add keeps its pace
 * through ev_grow_for_write). */
static void grow_to_mark(void)
{
	pthread_mutex_lock(&grow_lock);
	for (int i = 0; i < 16; i++) {
		struct vbas_pool_info pi;
		if (vbas_pool_info(ev_pool, &pi) || !pi.low_water)
			break;
		uint64_t total = pi.total_blocks, avail = pi.available / pi.block_size;
		uint64_t used = total - (avail < total ? avail : total);
		if (used * 1000 < total * pi.low_water || grow_step())
			break;
	}
	pthread_mutex_unlock(&grow_lock);
}

int ev_grow_for_write(void)
{
	static uint64_t last_size;
	if (!ev_conf.autoextend || !ev_pool)
		return 0;
	pthread_mutex_lock(&grow_lock);
	struct vbas_pool_info pi;
	int again = 0;
	/* Another writer may have grown it while this one waited. */
	if (!vbas_pool_info(ev_pool, &pi) && pi.size != last_size && last_size)
		again = 1;
	else
		again = grow_step() == 0;
	if (!vbas_pool_info(ev_pool, &pi))
		last_size = pi.size;
	pthread_mutex_unlock(&grow_lock);
	return again;
}

static void *ev_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&q_lock);
	for (;;) {
		while (!q_head && !q_stop)
			pthread_cond_wait(&q_cond, &q_lock);
		if (!q_head)
			break;
		struct ev_item *it = q_head;
		q_head = it->next;
		if (!q_head)
			q_tail = &q_head;
		unsigned long lost = q_lost;
		q_lost = 0;
		pthread_mutex_unlock(&q_lock);
		char extra[64] = "";
		if (lost)
			snprintf(extra, sizeof(extra), ",\"lost_before\":%lu", lost);
		char *line = ev_json(it, lost ? extra : NULL);
		if (line && ev_conf.log_fd >= 0)
			put_line(line);
		if (line && ev_conf.on_event && !q_stop)
			run_command(it, line);
		nbdkit_debug("vbas: event %s", item_name(it));
		if (!it->vol_event && it->ev.type == VBAS_EVENT_LOW_WATER && ev_conf.autoextend &&
		    !q_stop)
			grow_to_mark();
		free(line);
		free(it);
		pthread_mutex_lock(&q_lock);
	}
	pthread_mutex_unlock(&q_lock);
	return NULL;
}

int ev_start(struct vbas_pool *pool, const char *path)
{
	if (!ev_conf.log && !ev_conf.on_event && !ev_conf.autoextend)
		return 0;
	ev_pool = pool;
	ev_path = path;
	q_stop = 0;
	int r = pthread_create(&thread, NULL, ev_main, NULL);
	if (r) {
		nbdkit_error("events: cannot start a thread: %s", strerror(r));
		return -1;
	}
	running = 1;
	vbas_pool_on_event(pool, ev_cb, NULL);
	return 0;
}

void ev_stop(void)
{
	if (!running)
		return;
	vbas_pool_on_event(ev_pool, NULL, NULL);
	pthread_mutex_lock(&q_lock);
	q_stop = 1;
	pthread_cond_signal(&q_cond);
	pthread_mutex_unlock(&q_lock);
	/* A command that does not end must not keep the server from
	 * stopping: it gets SIGTERM; the events still queued are logged,
	 * without their commands. */
	pid_t c = cmd_pid;
	if (c > 0)
		kill(c, SIGTERM);
	pthread_join(thread, NULL);
	running = 0;
	ev_pool = NULL;
}
