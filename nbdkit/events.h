/* The served pool's events (vbas_pool_on_event), for the administrator:
 * a JSON line each, an optional command run for each, and the pool grown
 * by itself at the low-water mark or when a write finds it full
 * (autoextend).  See docs/nbd.md, "Events". */
#ifndef VBAS_NBD_EVENTS_H
#define VBAS_NBD_EVENTS_H

#include "vbas.h"

#include <stdint.h>

struct ev_config {
	const char *log;          /* events=FILE: a JSON line per event, appended */
	int log_fd;               /* FILE, opened by ev_open_log (-1: none) */
	const char *on_event;     /* on_event=: run with /bin/sh -c per event */
	uint64_t autoextend;      /* autoextend=: bytes to grow a file pool by */
};
extern struct ev_config ev_conf;

/* Open the events= file (before nbdkit may close stdio); 0 or -1 (logged). */
int ev_open_log(void);
/* Start the thread that logs, runs commands and grows (after nbdkit's
 * fork) and register with POOL (at PATH); 0, or -1 (logged). */
int ev_start(struct vbas_pool *pool, const char *path);
/* Stop it, after the events queued so far are handled. */
void ev_stop(void);
/* A change to the volumes made through the control channel, committed:
 * EVENT (volume_created, ...) of volume NAME, with "OTHER_KEY":OTHER
 * (origin, old_name) unless OTHER_KEY is NULL, and volume_size unless
 * VOL_SIZE is NULL.  Queued behind the pool's events; nothing if the
 * thread is not running (no events=, on_event= or autoextend=). */
void ev_volume(const char *event, const char *name, const char *other_key, const char *other,
	       const uint64_t *vol_size);
/* A write failed with ENOSPC: grow the pool by the step if autoextend is
 * on and the file system has room (or another thread just did).  1: try
 * the write again; 0: do not. */
int ev_grow_for_write(void);

#endif
