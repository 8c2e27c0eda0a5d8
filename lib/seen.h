/* A set of tree nodes met in a walk, with what the walker remembers of
 * each subtree: check and fsmap reach a node shared by several trees once
 * per tree, and walk it only the first time. */
#ifndef VBAS_SEEN_H
#define VBAS_SEEN_H

#include <stddef.h>
#include <stdint.h>

struct seen {
	uint64_t blk;            /* 0: empty slot */
	uint64_t v[3];           /* the walker's figures for the subtree */
	int done;                /* walked to the end */
};

struct seen_set {
	struct seen *e;
	size_t n, cap;
};

/* The entry for BLK (not 0), added if new (*FRESH); NULL: no memory. */
struct seen *seen_get(struct seen_set *s, uint64_t blk, int *fresh);
void seen_free(struct seen_set *s);

#endif
