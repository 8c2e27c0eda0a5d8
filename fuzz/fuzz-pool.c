/* Fuzz harness: a whole pool image (sparse, fuzz.h) on the in-memory
 * device, put through every read-only public operation, then a short
 * sequence of changes and a reopen.  Errors are fine; crashes, hangs,
 * leaks and sanitizer reports are not. */
#include "fuzz.h"

#include <stdlib.h>

#define MAX_VOLS  8
#define READ_MAX  (FZ_NBLOCKS * FZ_BS)    /* bytes read per volume */

struct vols {
	char name[MAX_VOLS][VBAS_NAME_MAX + 1];
	uint64_t size[MAX_VOLS];
	int n;
};

static int list_cb(const struct vbas_vol_info *v, void *arg)
{
	struct vols *l = arg;
	if (l->n < MAX_VOLS) {
		memcpy(l->name[l->n], v->name, sizeof(l->name[0]));
		l->size[l->n++] = v->size;
	}
	return 0;
}

struct ext_ctx {
	struct vbas_vol *vol;
	uint64_t read;
	uint8_t *buf;
};

/* Read what is mapped, up to READ_MAX bytes per volume. */
static int ext_cb(const struct vbas_extent *e, void *arg)
{
	struct ext_ctx *x = arg;
	uint64_t len = e->length;
	if (x->read >= READ_MAX)
		return 1;
	if (len > READ_MAX - x->read)
		len = READ_MAX - x->read;
	x->read += len;
	for (uint64_t o = 0; o < len; o += 65536) {
		size_t n = len - o < 65536 ? (size_t)(len - o) : 65536;
		if (vbas_pread(x->vol, x->buf, n, e->offset + o))
			return 1;
	}
	return 0;
}

static int diff_cb(uint64_t off, uint64_t len, void *arg)
{
	(void)off, (void)len;
	return ++*(int *)arg > 10000;
}

static void problem_cb(const char *msg, void *arg)
{
	(void)msg, (void)arg;
}

/* Whatever a damaged pool holds, fsmap's records stay inside the pool. */
static int fsmap_cb(const struct vbas_fsmap_rec *x, void *arg)
{
	const struct vbas_pool_info *pi = arg;
	if (x->physical >= pi->size || x->length > pi->size - x->physical || !x->length)
		abort();
	return 0;
}

static void read_all(struct vbas_pool *p, uint8_t *buf)
{
	struct vbas_pool_info pi;
	struct vbas_check_stats st;
	struct vols l = { .n = 0 };
	struct vbas_vol *v[MAX_VOLS] = { 0 };

	vbas_pool_info(p, &pi);
	vbas_vol_list(p, list_cb, &l);
	for (int i = 0; i < l.n; i++) {
		struct vbas_vol_usage u;
		struct vbas_vol_info vi;
		vbas_vol_usage(p, l.name[i], &u);
		vbas_vol_stat(p, l.name[i], &vi);
		if (vbas_vol_open(p, l.name[i], &v[i]))
			continue;
		struct ext_ctx x = { .vol = v[i], .buf = buf };
		vbas_extents(v[i], 0, l.size[i], ext_cb, &x);
		vbas_pread(v[i], buf, FZ_BS, 0);
		if (l.size[i] >= FZ_BS)
			vbas_pread(v[i], buf, FZ_BS, l.size[i] - FZ_BS);
	}
	for (int i = 0; i < l.n; i++)
		for (int j = 0; j < l.n; j++)
			if (i != j && v[i] && v[j]) {
				int k = 0;
				vbas_diff(v[i], v[j], diff_cb, &k);
			}
	for (int i = 0; i < l.n; i++)
		if (v[i])
			vbas_vol_close(v[i]);
	if (pi.size)
		vbas_fsmap(p, 0, 0, fsmap_cb, &pi);
	vbas_check(p, problem_cb, NULL, &st);
}

static void change(struct vbas_pool *p, uint8_t *buf)
{
	struct vols l = { .n = 0 };
	struct vbas_vol *v;
	vbas_vol_list(p, list_cb, &l);
	memset(buf, 0xa5, 3 * FZ_BS);
	for (int i = 0; i < l.n; i++) {
		if (vbas_vol_open(p, l.name[i], &v))
			continue;
		int r = vbas_pwrite(v, buf, 2 * FZ_BS + 100, FZ_BS / 2, 0);
		vbas_discard(v, 0, FZ_BS, 0);
		vbas_write_zeroes(v, FZ_BS, 100, 0);
		vbas_vol_close(v);
		if (!r)
			break;
	}
	if (l.n) {
		vbas_vol_snapshot(p, l.name[0], "fz-snap", 0);
		vbas_vol_snapshot(p, l.name[0], "fz-clone", VBAS_SNAP_WRITABLE);
		vbas_vol_resize(p, l.name[l.n - 1], l.size[l.n - 1] + FZ_BS);
		vbas_vol_delete(p, l.name[l.n > 1 ? 1 : 0]);
	}
	vbas_vol_create(p, "fz-new", 16 * FZ_BS);
	vbas_flush(p);
	/* A shrink moves nodes and data the pool says are past the end. */
	struct vbas_pool_info pi;
	if (!vbas_pool_info(p, &pi) && pi.size) {
		vbas_pool_shrink(p, pi.size / 4 * 3, NULL);
		if (!vbas_pool_info(p, &pi) && pi.shrink_to)
			vbas_pool_shrink_cancel(p);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vbas_open_opts ro = { .cache_bytes = 64 * FZ_BS, .flags = VBAS_OPEN_RDONLY };
	struct vbas_open_opts rw = { .cache_bytes = 64 * FZ_BS };
	struct vbas_dev *d = fz_load(data, size);
	struct vbas_pool *p;
	uint8_t *buf = malloc(65536);
	if (!d || !buf)
		abort();
	if (!vbas_open_dev(d, &ro, &p)) {
		read_all(p, buf);
		vbas_close(p);
	}
	if (!vbas_open_dev(d, &rw, &p)) {
		change(p, buf);
		vbas_close(p);
		if (!vbas_open_dev(d, &ro, &p)) {
			read_all(p, buf);
			vbas_close(p);
		}
	}
	/* Repair reads everything, trusts the mapping trees, and writes. */
	struct vbas_open_opts rp = { .cache_bytes = 64 * FZ_BS, .flags = VBAS_OPEN_REPAIR };
	if (!vbas_open_dev(d, &rp, &p)) {
		struct vbas_repair_stats rs;
		vbas_repair(p, VBAS_REPAIR_DRY_RUN, NULL, NULL, &rs);
		if (!vbas_repair(p, 0, NULL, NULL, &rs)) {
			struct vbas_check_stats st;
			vbas_check(p, NULL, NULL, &st);
		}
		vbas_close(p);
	}
	free(buf);
	return 0;
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned seed)
{
	return fz_mutate(data, size, max_size, seed);
}
