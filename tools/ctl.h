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
 *   info                 the pool's figures (vbas_pool_info), for vbas info
 *   list                 every volume with its usage, for vbas list
 *   ping                 answers with the server's pid
 *   grow     SIZE        grow the pool to SIZE bytes, or by N with "+N"
 *   shrink   SIZE        shrink the pool to SIZE bytes (vbas_pool_shrink),
 *                        run in a thread of its own, answered when done
 *                        with "SIZE DATA NODES STEPS" (the new size, data
 *                        blocks and nodes moved, commits); EBUSY while
 *                        another runs
 *   shrink-cancel        vbas_pool_shrink_cancel
 *   set      KEY PERMILLE  a space setting: low_water or expendable_floor
 *   reserve  NAME OFF LEN / unreserve NAME OFF LEN   (LEN 0: to the end)
 *   reflink  SRC SRC_OFF DST DST_OFF LEN / dedupe (the same; answered
 *            "SAME BYTES": 1 and the bytes deduped, or "0 0")
 *   unshare  NAME OFF LEN (LEN 0: to the end) / discard NAME OFF LEN
 *   write    NAME OFF    with the source's descriptor (SCM_RIGHTS, sent
 *                        with the request's bytes): the server copies it
 *                        to its end into the volume; answered with the
 *                        bytes written
 *   pin                  see docs/nbd.md; the connection holds the pin
 * shrink, write, reflink, dedupe, unshare and discard run in a thread of
 * their own (the plugin's jobs); a descriptor with any other request is
 * refused.
 * snapshot and clone take a fourth field: "noreserve", "expendable" (a
 * snapshot), or both joined by a comma.
 * Every change is committed before the reply.
 * Reply: "ERRNO\tMESSAGE" (ERRNO 0: done), and the server closes.  The
 * MESSAGE of info is the figures in CTL_INFO_FIELDS order, decimal, each
 * after a space, and a newline; that of list is the number of volumes and
 * a newline, then a line per volume (ctl_put_vol).  Both are read by this
 * header's functions on either side, so they change together, and an
 * answer cut short (a server that died, a send that timed out) is refused,
 * not taken for a shorter one.
 */
#ifndef VBAS_CTL_H
#define VBAS_CTL_H

#include "vbas.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* The volumes of a pool with their usage, what vbas list shows: gathered
 * by the CLI from an open pool, by the server for a list request, and by
 * the CLI again from the server's answer. */
struct vol_list {
	struct vbas_vol_info *v;
	struct vbas_vol_usage *u;     /* zero until vol_list_read fills it */
	size_t n, cap;
};

static inline int vol_list_add(struct vol_list *l, const struct vbas_vol_info *v,
			       const struct vbas_vol_usage *u)
{
	if (l->n == l->cap) {
		size_t nc = l->cap ? 2 * l->cap : 16;
		struct vbas_vol_info *nv = realloc(l->v, nc * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		l->v = nv;
		struct vbas_vol_usage *nu = realloc(l->u, nc * sizeof(*nu));
		if (!nu)
			return -ENOMEM;
		l->u = nu;
		l->cap = nc;
	}
	l->v[l->n] = *v;
	if (u)
		l->u[l->n] = *u;
	else
		memset(&l->u[l->n], 0, sizeof(l->u[0]));
	l->n++;
	return 0;
}

/* For vbas_vol_list: collect the volumes, their usage left zero. */
static inline int vol_list_cb(const struct vbas_vol_info *info, void *arg)
{
	return vol_list_add(arg, info, NULL);
}

/* Every volume of POOL and its usage into L. */
static inline int vol_list_read(struct vbas_pool *pool, struct vol_list *l)
{
	int r = vbas_vol_list(pool, vol_list_cb, l);
	for (size_t i = 0; !r && i < l->n; i++)
		r = vbas_vol_usage(pool, l->v[i].name, &l->u[i]);
	return r;
}

static inline void vol_list_free(struct vol_list *l)
{
	free(l->v);
	free(l->u);
}

/* The next decimal number of *S (after spaces) into *V; -1 if none. */
static inline int ctl_num(const char **s, uint64_t *v)
{
	char *e;
	while (**s == ' ')
		(*s)++;
	if (**s < '0' || **s > '9')
		return -1;
	errno = 0;
	unsigned long long x = strtoull(*s, &e, 10);
	if (errno)
		return -1;
	*v = x;
	*s = e;
	return 0;
}

/* The most fields a request has (reflink: the command and five). */
#define CTL_FIELDS 6

/* A request (N bytes at REQ) split into its NUL-ended fields: F[0] the
 * command, then its arguments; *NF fields.  -1 if it is not a request
 * (empty, its last field not ended by a NUL, or more than CTL_FIELDS
 * fields). */
static inline int ctl_split_req(const char *req, size_t n, const char *f[CTL_FIELDS], int *nf)
{
	size_t i = 0;
	*nf = 0;
	memset(f, 0, CTL_FIELDS * sizeof(f[0]));
	while (i < n && *nf < CTL_FIELDS) {
		f[(*nf)++] = req + i;
		i += strnlen(req + i, n - i) + 1;
	}
	return n == 0 || i < n || req[n - 1] != '\0' || *nf == 0 ? -1 : 0;
}

/* A size in bytes as the CLI sends it: decimal digits only. */
static inline int ctl_size(const char *s, uint64_t *v)
{
	char *e;
	if (!*s || strspn(s, "0123456789") != strlen(s))
		return -1;
	errno = 0;
	*v = strtoull(s, &e, 10);
	return errno ? -1 : 0;
}

/* A reply "ERRNO\tMESSAGE" (NUL-ended): *ERR the errno (EPROTO if it is
 * not decimal digits for 0..4095), and the message moved to the start of
 * REPLY.  -1 if it is not a reply (no tab). */
static inline int ctl_split_reply(char *reply, int *err)
{
	char *tab = strchr(reply, '\t'), *e;
	if (!tab)
		return -1;
	errno = 0;
	long v = strtol(reply, &e, 10);
	int digit = reply[0] >= '0' && reply[0] <= '9';
	*err = !digit || errno || v > 4095 || e != tab ? EPROTO : (int)v;
	memmove(reply, tab + 1, strlen(tab + 1) + 1);
	return 0;
}

#define CTL_INFO_FIELDS(X) X(size) X(block_size) X(total_blocks) X(data_used) \
	X(metadata_used) X(free) X(reserved) X(metadata_reserve) X(volumes) X(mapped) \
	X(sharing_saves) X(generation) X(cache_blocks) X(reserved_metadata) \
	X(reserved_metadata_granted) X(reserved_metadata_used) X(reserved_ranges) \
	X(reserved_owed) X(available) X(low_water) X(expendable_floor) X(rmap) X(shrink_to) \
	X(intents)

static inline void ctl_put_info(FILE *f, const struct vbas_pool_info *i)
{
#define CTL_PUT(n) fprintf(f, " %llu", (unsigned long long)i->n);
	CTL_INFO_FIELDS(CTL_PUT)
#undef CTL_PUT
	fputc('\n', f);
}

/* -1 if S is not an info reply of this version. */
static inline int ctl_get_info(const char *s, struct vbas_pool_info *i)
{
	uint64_t v;
	memset(i, 0, sizeof(*i));
#define CTL_GET(n) if (ctl_num(&s, &v)) return -1; i->n = v; if (i->n != v) return -1;
	CTL_INFO_FIELDS(CTL_GET)
#undef CTL_GET
	return strcmp(s, "\n") ? -1 : 0;
}

/* A volume of the list reply: "ID SIZE MAPPED ORIGIN FLAGS EXCLUSIVE SHARED
 * RESERVED OWED NAME\n", the name in hex (a name may hold any byte but '/'
 * and NUL). */
static inline void ctl_put_vol(FILE *f, const struct vbas_vol_info *v,
			       const struct vbas_vol_usage *u)
{
	fprintf(f, "%llu %llu %llu %llu %u %llu %llu %llu %llu ", (unsigned long long)v->id,
		(unsigned long long)v->size, (unsigned long long)v->mapped,
		(unsigned long long)v->origin, (unsigned)v->flags,
		(unsigned long long)u->exclusive, (unsigned long long)u->shared,
		(unsigned long long)v->reserved, (unsigned long long)v->owed);
	for (const unsigned char *c = (const unsigned char *)v->name; *c; c++)
		fprintf(f, "%02x", *c);
	fputc('\n', f);
}

static inline int ctl_hex(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* One volume from *S (advanced past its line); -1 if it is not one. */
static inline int ctl_get_vol(const char **s, struct vbas_vol_info *v, struct vbas_vol_usage *u)
{
	uint64_t f;
	size_t n = 0;
	memset(v, 0, sizeof(*v));
	memset(u, 0, sizeof(*u));
	if (ctl_num(s, &v->id) || ctl_num(s, &v->size) || ctl_num(s, &v->mapped) ||
	    ctl_num(s, &v->origin) || ctl_num(s, &f) || f > UINT32_MAX ||
	    ctl_num(s, &u->exclusive) || ctl_num(s, &u->shared) || ctl_num(s, &v->reserved) ||
	    ctl_num(s, &v->owed) || *(*s)++ != ' ')
		return -1;
	v->flags = (uint32_t)f;
	u->mapped = v->mapped;
	while (**s != '\n') {
		int hi = ctl_hex((*s)[0]), lo = hi < 0 ? -1 : ctl_hex((*s)[1]);
		if (lo < 0 || !(hi | lo) || n == VBAS_NAME_MAX)
			return -1;
		v->name[n++] = (char)(hi << 4 | lo);
		*s += 2;
	}
	(*s)++;
	return n ? 0 : -1;
}

/* The list answer: the count, then a line per volume. */
static inline void ctl_put_list(FILE *f, const struct vol_list *l)
{
	fprintf(f, "%zu\n", l->n);
	for (size_t i = 0; i < l->n; i++)
		ctl_put_vol(f, &l->v[i], &l->u[i]);
}

/* -EPROTO if S is not a whole list answer, -ENOMEM. */
static inline int ctl_get_list(const char *s, struct vol_list *l)
{
	struct vbas_vol_info v;
	struct vbas_vol_usage u;
	uint64_t n;
	if (ctl_num(&s, &n) || *s++ != '\n')
		return -EPROTO;
	for (uint64_t i = 0; i < n; i++) {
		if (ctl_get_vol(&s, &v, &u))
			return -EPROTO;
		if (l->n && v.id <= l->v[l->n - 1].id)
			return -EPROTO;          /* in id order, each once */
		if (vol_list_add(l, &v, &u))
			return -ENOMEM;
	}
	return *s ? -EPROTO : 0;
}

#endif
