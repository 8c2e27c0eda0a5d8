/* A set of block ranges in memory: sorted, disjoint, merged.  Used for the
 * space layer's short-lived sets (blocks allocated but not yet counted,
 * blocks freed in the running transaction). */
#ifndef VBAS_EXTSET_H
#define VBAS_EXTSET_H

#include <stddef.h>
#include <stdint.h>

struct ext {
	uint64_t start, len;
};

struct extset {
	struct ext *v;
	size_t n, cap;
	uint64_t total;     /* blocks in the set */
};

int extset_add(struct extset *s, uint64_t start, uint64_t len);      /* -EEXIST on overlap */
int extset_remove(struct extset *s, uint64_t start, uint64_t len);   /* -ENOENT if not all in */
/* The first range that overlaps [start, end), or NULL. */
const struct ext *extset_first_overlap(const struct extset *s, uint64_t start, uint64_t end);
/* Room for N more ranges, so that that many adds cannot fail. */
int extset_reserve(struct extset *s, size_t n);
void extset_clear(struct extset *s);
void extset_free(struct extset *s);

#endif
