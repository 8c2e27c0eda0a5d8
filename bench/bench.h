/* What the benchmark programs share.  Each defines die() (printf-like,
 * does not return) with its own clean-up before including this. */
#ifndef VBAS_BENCH_H
#define VBAS_BENCH_H

#include <stdint.h>
#include <string.h>
#include <time.h>

#include "vbas.h"

/* A vbas call failed: say which, with the library's message. */
#define V(call) do {                                                          \
		int r_ = (call);                                              \
		if (r_)                                                       \
			die("%s:%d: %s: %s (%s)", __FILE__, __LINE__, #call,  \
			    strerror(-r_), vbas_errmsg());                    \
	} while (0)

static inline double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* splitmix64 from *S. */
static inline uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

#endif
