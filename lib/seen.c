/* The set of tree nodes met in a walk: open addressing, linear probing,
 * at most half full. */
#include "seen.h"

#include <stdlib.h>

static struct seen *slot(struct seen_set *s, uint64_t blk)
{
	size_t m = s->cap - 1, i = (size_t)(blk * 0x9e3779b97f4a7c15ull >> 17) & m;
	while (s->e[i].blk && s->e[i].blk != blk)
		i = (i + 1) & m;
	return &s->e[i];
}

struct seen *seen_get(struct seen_set *s, uint64_t blk, int *fresh)
{
	if (2 * (s->n + 1) > s->cap) {
		size_t ncap = s->cap ? 2 * s->cap : 4096, ocap = s->cap;
		struct seen *old = s->e, *nv = calloc(ncap, sizeof(*nv));
		if (!nv)
			return NULL;
		s->e = nv;
		s->cap = ncap;
		for (size_t i = 0; i < ocap; i++)
			if (old[i].blk)
				*slot(s, old[i].blk) = old[i];
		free(old);
	}
	struct seen *e = slot(s, blk);
	*fresh = !e->blk;
	if (*fresh) {
		e->blk = blk;
		s->n++;
	}
	return e;
}

void seen_free(struct seen_set *s)
{
	free(s->e);
	s->e = NULL;
	s->n = s->cap = 0;
}
