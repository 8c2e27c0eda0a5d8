/* Copying a byte stream into a volume, sparse: shared by the CLI (vbas
 * write on a pool it opens) and the nbdkit plugin (vbas write on a served
 * pool: the CLI passes the server its source descriptor over the control
 * channel, and the server runs the same loop).
 */
#ifndef VBAS_TOOLS_COPY_H
#define VBAS_TOOLS_COPY_H

#include "vbas.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Not exported from the plugin's shared object. */
#define COPY_API __attribute__((visibility("hidden")))

#define COPY_CHUNK (1u << 20)    /* bytes per read and write call */

COPY_API int write_full(int fd, const char *buf, size_t len);

/* Sparse copies: the pieces of BUF[0, N) that hold data, and the whole
 * blocks (of BS bytes, counted from volume offset VOFF) that are all zero.
 * CB gets each maximal run: (offset in BUF, length, zero or not). */
COPY_API int split_zero_blocks(const char *buf, size_t n, uint64_t voff, uint32_t bs,
			       int (*cb)(void *, size_t, size_t, int), void *arg);

/* Where a copy failed, for the message's subject. */
enum copy_fault {
	COPY_SOURCE = 1,   /* reading the source (MSG says how) */
	COPY_VOLUME,       /* the volume: the data does not fit (MSG) */
	COPY_LIBRARY,      /* the library refused a write: ERR, and vbas_errmsg() */
	COPY_STOPPED,      /* BEFORE_READ stopped it: ERR */
};

struct copy_in {
	/* In: */
	struct vbas_vol *vol;
	int fd;                 /* the source, from its current position */
	uint64_t off;           /* where it goes in the volume */
	uint32_t block_size;    /* the pool's: blocks of zeros become holes */
	/* Called before each read of the source (NULL: none); nonzero stops
	 * the copy with that errno. */
	int (*before_read)(int fd, void *arg);
	void *arg;
	/* Out: */
	uint64_t total;         /* bytes of the volume written, zeros too */
	enum copy_fault fault;  /* on failure */
	int err;                /* on failure: an errno, positive */
	char msg[256];          /* on failure, but for COPY_LIBRARY */
};

/* Copy C->fd to its end into C->vol from C->off.  A regular file read from
 * its start is read by its data (SEEK_DATA/SEEK_HOLE), and is refused
 * before anything is written if it does not fit; its holes and every
 * whole block of zeros become holes of the volume (vbas_write_zeroes: what
 * was mapped there is let go).  Nothing is committed here.  0, or -1 with
 * the fault in C. */
COPY_API int copy_in(struct copy_in *c);

#endif
