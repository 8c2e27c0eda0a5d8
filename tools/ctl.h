/* The control channel of a served pool, shared by the nbdkit plugin (the
 * server side) and the CLI (the client).
 *
 * While nbdkit serves a pool it holds the pool's lock, so another process
 * cannot open it; the plugin listens on a unix socket named after the
 * pool file's identity (device and inode), and the CLI sends the commands
 * that must work on a served pool there: snapshot and clone, which the
 * server runs in its own process, beside the writes in flight (the library
 * waits for those on the source volume, then commits), and create, resize
 * and delete of volumes.
 *
 * Socket: $VBAS_CTL_DIR (default /run/vbas for root, else /tmp), file
 * vbas-DEV-INO.ctl, created under umask 077 (only the server's user may
 * connect).
 * Request: the command and its arguments, each ended by a NUL byte, at most
 * CTL_MAX bytes; the client then shuts its side down.  Commands:
 *   snapshot SRC NEW     read-only snapshot
 *   clone    SRC NEW     writable clone
 *   create   NAME SIZE   a new volume (SIZE in bytes, decimal)
 *   resize   NAME SIZE   refused (EBUSY) for a shrink while clients are
 *                        connected to the export
 *   delete   NAME        refused (EBUSY) while clients are connected to it
 *   ping                 answers with the server's pid
 * Every change is committed before the reply.
 * Reply: "ERRNO\tMESSAGE" (ERRNO 0: done), and the server closes.
 */
#ifndef VBAS_CTL_H
#define VBAS_CTL_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define CTL_MAX 1024

/* The socket's path for the pool at POOL into BUF; -1 if POOL cannot be
 * stat'ed or the path does not fit. */
static inline int vbas_ctl_path(const char *pool, char *buf, size_t len)
{
	struct stat st;
	const char *dir = getenv("VBAS_CTL_DIR");
	if (stat(pool, &st))
		return -1;
	if (!dir || !*dir)
		dir = geteuid() == 0 ? "/run/vbas" : "/tmp";
	/* A block device by its number, whichever node names it. */
	unsigned long long a = st.st_dev, b = st.st_ino;
	if (S_ISBLK(st.st_mode))
		a = 0, b = st.st_rdev;
	int n = snprintf(buf, len, "%s/vbas-%llx-%llx.ctl", dir, a, b);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

#endif
