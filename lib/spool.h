/* A spool: fixed-size records added in any order and read back sorted, in
 * bounded memory.  Up to LIMIT bytes of records stay in memory; past that
 * they are sorted and written as a run to an unlinked temporary file
 * ($TMPDIR, else /var/tmp), and reading merges the runs (a buffer of up to
 * SPOOL_RUN_BUF bytes each, as many at once as fit in LIMIT, in more
 * passes if need be) with what is still in memory: at most about twice
 * LIMIT in all.  vbas check
 * counts every reference to every block this way, so its memory does not
 * grow with the pool (docs/design.md, "Check in bounded memory"). */
#ifndef VBAS_SPOOL_H
#define VBAS_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#define SPOOL_RUN_BUF (64u << 10)

struct spool_src;

struct spool {
	size_t rsize;
	int (*cmp)(const void *, const void *);
	size_t limit;              /* bytes of records kept in memory */
	char *mem;                 /* records in memory */
	size_t n, cap;
	int sorted;                /* MEM is sorted (reading began) */
	int fd;                    /* the runs' file, -1: none yet */
	uint64_t *run_off, *run_end;   /* run i: bytes [run_off[i], run_end[i]) */
	size_t nruns, caprun;
	size_t bufb;               /* read buffer per run (bytes) */
	size_t fanin;              /* runs merged at once */
	uint64_t count;            /* records added */
	uint64_t spilled;          /* bytes written to the file */
	/* reading */
	struct spool_src *src;
	size_t nsrc, *heap, hn;
};

void spool_init(struct spool *s, size_t rsize, int (*cmp)(const void *, const void *),
		size_t limit);
/* 0, or a negative errno with vbas_err() set (no memory, the file). */
int spool_add(struct spool *s, const void *rec);
/* Start reading from the first record, in order (again, if called twice). */
int spool_rewind(struct spool *s);
/* The next record into REC: 1, 0 at the end, or a negative errno. */
int spool_next(struct spool *s, void *rec);
void spool_free(struct spool *s);

#endif
