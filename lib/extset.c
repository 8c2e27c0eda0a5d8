#include "extset.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Index of the first range whose end is > START. */
static size_t first_after(const struct extset *s, uint64_t start)
{
	size_t lo = 0, hi = s->n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (s->v[mid].start + s->v[mid].len <= start)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int grow(struct extset *s, size_t need)
{
	if (need <= s->cap)
		return 0;
	size_t c = s->cap ? s->cap * 2 : 16;
	while (c < need)
		c *= 2;
	struct ext *v = realloc(s->v, c * sizeof(*v));
	if (!v)
		return -ENOMEM;
	s->v = v;
	s->cap = c;
	return 0;
}

int extset_add(struct extset *s, uint64_t start, uint64_t len)
{
	if (!len)
		return 0;
	uint64_t end = start + len;
	if (end < start)
		return -EINVAL;             /* runs past 2^64 */
	size_t i = first_after(s, start);
	if (i < s->n && s->v[i].start < end)
		return -EEXIST;
	int merge_l = i > 0 && s->v[i - 1].start + s->v[i - 1].len == start;
	int merge_r = i < s->n && s->v[i].start == end;
	if (merge_l && merge_r) {
		s->v[i - 1].len += len + s->v[i].len;
		memmove(&s->v[i], &s->v[i + 1], (s->n - i - 1) * sizeof(*s->v));
		s->n--;
	} else if (merge_l) {
		s->v[i - 1].len += len;
	} else if (merge_r) {
		s->v[i].start = start;
		s->v[i].len += len;
	} else {
		if (grow(s, s->n + 1))
			return -ENOMEM;
		memmove(&s->v[i + 1], &s->v[i], (s->n - i) * sizeof(*s->v));
		s->v[i].start = start;
		s->v[i].len = len;
		s->n++;
	}
	s->total += len;
	return 0;
}

int extset_remove(struct extset *s, uint64_t start, uint64_t len)
{
	if (!len)
		return 0;
	uint64_t end = start + len;
	size_t i = first_after(s, start);
	if (i >= s->n || s->v[i].start > start || s->v[i].start + s->v[i].len < end)
		return -ENOENT;
	struct ext *e = &s->v[i];
	uint64_t eend = e->start + e->len;
	if (e->start == start && eend == end) {
		memmove(&s->v[i], &s->v[i + 1], (s->n - i - 1) * sizeof(*s->v));
		s->n--;
	} else if (e->start == start) {
		e->start = end;
		e->len = eend - end;
	} else if (eend == end) {
		e->len = start - e->start;
	} else {
		if (grow(s, s->n + 1))
			return -ENOMEM;
		e = &s->v[i];
		memmove(&s->v[i + 1], &s->v[i], (s->n - i) * sizeof(*s->v));
		s->v[i].len = start - e->start;
		s->v[i + 1].start = end;
		s->v[i + 1].len = eend - end;
		s->n++;
	}
	s->total -= len;
	return 0;
}

const struct ext *extset_first_overlap(const struct extset *s, uint64_t start, uint64_t end)
{
	if (start >= end)
		return NULL;
	size_t i = first_after(s, start);
	if (i < s->n && s->v[i].start < end)
		return &s->v[i];
	return NULL;
}

int extset_reserve(struct extset *s, size_t n)
{
	return grow(s, s->n + n);
}

void extset_clear(struct extset *s)
{
	s->n = 0;
	s->total = 0;
}

void extset_free(struct extset *s)
{
	free(s->v);
	memset(s, 0, sizeof(*s));
}
