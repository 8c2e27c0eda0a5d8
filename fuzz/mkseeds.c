/* Writes the seed corpora of the fuzz harnesses (docs/fuzzing.md) from
 * real pools made with the library: 4 KiB blocks and FZ_FANOUT records
 * per node, so that small pools have trees several levels deep; several
 * volumes, snapshots, clones, reflinks, a resize, a delete, and a delete
 * cut short by a power loss.
 *   mkseeds DIR    writes DIR/pool, DIR/node, DIR/sb, DIR/ctl
 * Pool seeds are sparse images (fuzz.h) of the pool after each step,
 * carrying the older versions of changed nodes as spares; node seeds are
 * each node with its subtree; sb seeds the first blocks of the device. */
#include "fuzz.h"
#include "../tools/ctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#define DEV_SIZE ((uint64_t)FZ_NBLOCKS * FZ_BS)

static const char *dir;
static unsigned nseed[4];
static const char *const kinds[4] = { "pool", "node", "sb", "ctl" };

static void die(const char *what, int r)
{
	fprintf(stderr, "mkseeds: %s: %s: %s\n", what, strerror(r < 0 ? -r : r), vbas_errmsg());
	exit(1);
}

static void put(int kind, const void *buf, size_t len)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s/seed-%03u", dir, kinds[kind], nseed[kind]++);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(buf, 1, len, f) != len || fclose(f))
		die(path, errno);
}

static int is_node(const uint8_t *b)
{
	return ld_le32(b + offsetof(struct vbas_node_hdr, magic)) == VBAS_NODE_MAGIC;
}

struct sparse {
	uint8_t buf[FZ_MAX_RECS * FZ_REC];
	size_t n;
};
static void add(struct sparse *s, uint32_t blkno, const uint8_t *blk, int must)
{
	if (s->n == FZ_MAX_RECS) {
		if (!must)
			return;
		fprintf(stderr, "mkseeds: more than %u blocks of metadata\n", FZ_MAX_RECS);
		exit(1);
	}
	st_le32(s->buf + s->n * FZ_REC, blkno);
	memcpy(s->buf + s->n * FZ_REC + 4, blk, FZ_BS);
	s->n++;
}

/* The subtree of node B of IMG into S (B first). */
static void subtree(struct sparse *s, const uint8_t *img, uint64_t b, int depth)
{
	if (b >= FZ_NBLOCKS || !is_node(img + b * FZ_BS) || depth > BT_MAX_DEPTH)
		return;
	const uint8_t *blk = img + b * FZ_BS;
	const struct vbas_node_hdr *h = (const void *)blk;
	add(s, (uint32_t)b, blk, 0);
	if (!le16_get(h->level))
		return;
	for (unsigned i = 0; i < le16_get(h->nrecs); i++)
		subtree(s, img, ld_le64(blk + sizeof(*h) + i * FZ_ENT_SIZE + FZ_ENT_CHILD),
			depth + 1);
}

/* Node seeds: each node once (by its checksum), interior nodes and every
 * fourth leaf, with their subtrees. */
static uint32_t seen_csum[8192];
static size_t nseen, nleaves;
static int seen(const uint8_t *blk)
{
	uint32_t c = ld_le32(blk);
	for (size_t i = 0; i < nseen; i++)
		if (seen_csum[i] == c)
			return 1;
	if (nseen < 8192)
		seen_csum[nseen++] = c;
	return 0;
}

/* Seeds from the pool image IMG; OLD: an earlier image of it, or NULL. */
static void seeds(const uint8_t *img, const uint8_t *old)
{
	struct sparse *s = calloc(1, sizeof(*s));
	if (!s)
		die("calloc", ENOMEM);
	for (uint32_t b = 0; b < FZ_NBLOCKS; b++)
		if (b < VBAS_FIRST_BLOCK || is_node(img + (size_t)b * FZ_BS))
			add(s, b, img + (size_t)b * FZ_BS, 1);
	for (uint32_t b = VBAS_FIRST_BLOCK; old && b < FZ_NBLOCKS && s->n < FZ_MAX_RECS; b++)
		if (is_node(old + (size_t)b * FZ_BS) &&
		    memcmp(old + (size_t)b * FZ_BS, img + (size_t)b * FZ_BS, FZ_BS))
			add(s, FZ_SPARE, old + (size_t)b * FZ_BS, 0);
	put(0, s->buf, s->n * FZ_REC);
	for (uint32_t b = VBAS_FIRST_BLOCK; b < FZ_NBLOCKS; b++) {
		const uint8_t *blk = img + (size_t)b * FZ_BS;
		if (!is_node(blk) || seen(blk) ||
		    (!le16_get(((const struct vbas_node_hdr *)blk)->level) && nleaves++ % 4))
			continue;
		s->n = 0;
		subtree(s, img, b, 0);
		put(1, s->buf, s->n * FZ_REC);
	}
	free(s);
}

static struct vbas_vol *vopen(struct vbas_pool *p, const char *name)
{
	struct vbas_vol *v;
	int r = vbas_vol_open(p, name, &v);
	if (r)
		die(name, r);
	return v;
}

/* Blocks of distinct content at every STRIDE-th block of [FROM, TO). */
static void scatter(struct vbas_vol *v, uint64_t from, uint64_t to, uint64_t stride, int tag)
{
	uint8_t buf[FZ_BS];
	for (uint64_t b = from; b < to; b += stride) {
		memset(buf, tag + (int)b, sizeof(buf));
		int r = vbas_pwrite(v, buf, sizeof(buf), b * FZ_BS, 0);
		if (r)
			die("write", r);
	}
}

#define OK(x) do { int r_ = (x); if (r_) die(#x, r_); } while (0)

int main(int argc, char **argv)
{
	/* The main workload's pool keeps no reverse map: with nodes of four
	 * records it would not fit the harnesses' images; a second, smaller
	 * workload below makes pools with one. */
	struct vbas_format_opts fo = { .size = DEV_SIZE, .block_size = FZ_BS,
				       .flags = VBAS_FORMAT_NO_RMAP };
	struct vbas_open_opts oo = { .cache_bytes = 64 * FZ_BS };
	struct vbas_pool *p;
	struct vbas_vol *a, *b, *c;
	uint8_t *prev = malloc(DEV_SIZE);
	if (argc != 2 || !prev) {
		fprintf(stderr, "usage: mkseeds DIR\n");
		return 2;
	}
	dir = argv[1];
	for (int k = 0; k < 4; k++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", dir, kinds[k]);
		mkdir(dir, 0755);
		if (mkdir(path, 0755) && errno != EEXIST)
			die(path, errno);
	}

	struct vbas_dev *d = vbas_memdev_create(DEV_SIZE);
	if (!d)
		die("memdev", ENOMEM);
	OK(vbas_format_dev(d, &fo, FZ_FANOUT));
	memcpy(prev, vbas_memdev_image(d), DEV_SIZE);
	seeds(vbas_memdev_image(d), NULL);
	OK(vbas_open_dev(d, &oo, &p));
#define STEP() do { OK(vbas_flush(p)); seeds(vbas_memdev_image(d), prev); \
		    memcpy(prev, vbas_memdev_image(d), DEV_SIZE); } while (0)
	OK(vbas_vol_create(p, "a", 96 * FZ_BS));
	OK(vbas_vol_create(p, "b", 64 * FZ_BS));
	a = vopen(p, "a");
	scatter(a, 0, 96, 4, 1);
	STEP();
	OK(vbas_vol_snapshot(p, "a", "a-snap", 0));
	scatter(a, 1, 96, 9, 2);
	STEP();
	OK(vbas_vol_snapshot(p, "a", "a-clone", VBAS_SNAP_WRITABLE));
	b = vopen(p, "b");
	c = vopen(p, "a-clone");
	scatter(c, 0, 40, 7, 3);
	OK(vbas_reflink(a, 8 * FZ_BS, b, 0, 32 * FZ_BS));
	OK(vbas_discard(a, 40 * FZ_BS, 8 * FZ_BS, 0));
	STEP();
	OK(vbas_vol_resize(p, "b", 32 * FZ_BS));
	OK(vbas_vol_create(p, "a name that is longer than most", 8 * FZ_BS));
	OK(vbas_vol_close(c));
	OK(vbas_vol_delete(p, "a-snap"));
	STEP();
	/* Space settings in the superblock, an expendable snapshot. */
	struct vbas_pool_settings st = { .low_water = 800, .expendable_floor = 50 };
	OK(vbas_pool_set(p, &st));
	OK(vbas_vol_snapshot(p, "b", "b-exp", VBAS_SNAP_EXPENDABLE));
	STEP();
	/* A reserved range: mapping records flagged, the volume's count. */
	OK(vbas_vol_reserve(b, 4 * FZ_BS, 12 * FZ_BS));
	STEP();
	OK(vbas_vol_close(a));
	OK(vbas_vol_close(b));
	OK(vbas_close(p));

	/* A pool with a reverse map: its tree (records of several lineages,
	 * counts above one) in the node seeds, its root in the superblock. */
	{
		struct vbas_format_opts fr = fo;
		fr.flags = 0;
		struct vbas_dev *dr = vbas_memdev_create(DEV_SIZE);
		if (!dr)
			die("memdev", ENOMEM);
		OK(vbas_format_dev(dr, &fr, FZ_FANOUT));
		memcpy(prev, vbas_memdev_image(dr), DEV_SIZE);
		OK(vbas_open_dev(dr, &oo, &p));
		OK(vbas_vol_create(p, "r", 32 * FZ_BS));
		OK(vbas_vol_create(p, "q", 32 * FZ_BS));
		a = vopen(p, "r");
		scatter(a, 0, 32, 3, 5);
		OK(vbas_flush(p));
		seeds(vbas_memdev_image(dr), prev);
		memcpy(prev, vbas_memdev_image(dr), DEV_SIZE);
		OK(vbas_vol_snapshot(p, "r", "r-snap", 0));
		scatter(a, 0, 12, 4, 6);
		b = vopen(p, "q");
		OK(vbas_reflink(a, 0, b, 8 * FZ_BS, 8 * FZ_BS));
		OK(vbas_flush(p));
		seeds(vbas_memdev_image(dr), prev);
		OK(vbas_vol_close(a));
		OK(vbas_vol_close(b));
		OK(vbas_close(p));
		dev_destroy(dr);
	}

	/* Deletes cut short by a power loss: the survivor's volume table
	 * may hold a volume marked DELETING, resumed at the next open. */
	vbas_tun.drop_budget = 4;
	for (uint64_t after = 1; after < 40; after += 6) {
		struct vbas_dev *d2 = vbas_memdev_clone(d);
		OK(vbas_open_dev(d2, &oo, &p));
		vbas_memdev_arm_crash(d2, after, VBAS_CRASH_DROP, after);
		if (!vbas_vol_delete(p, "a"))
			vbas_flush(p);
		vbas_close(p);
		struct vbas_dev *s = vbas_memdev_survivor(d2);
		if (s) {
			seeds(vbas_memdev_image(s), vbas_memdev_image(d));
			dev_destroy(s);
		}
		dev_destroy(d2);
	}
	dev_destroy(d);

	/* Superblocks of pools that fit the sb harness's device (2 MiB), of
	 * 4 and 16 KiB blocks (slot 1 further in), fresh and after a few
	 * commits (both slots valid, the newer winning). */
	for (uint32_t bs = FZ_BS; bs <= 4 * FZ_BS; bs *= 4) {
		fo.block_size = bs;
		fo.size = 2 << 20;
		d = vbas_memdev_create(fo.size);
		OK(vbas_format_dev(d, &fo, FZ_FANOUT));
		put(2, vbas_memdev_image(d), 2 * bs);
		OK(vbas_open_dev(d, &oo, &p));
		OK(vbas_vol_create(p, "v", 1 << 20));
		OK(vbas_flush(p));
		put(2, vbas_memdev_image(d), 2 * bs);
		OK(vbas_vol_snapshot(p, "v", "s", 0));
		OK(vbas_close(p));
		put(2, vbas_memdev_image(d), 2 * bs);
		dev_destroy(d);
	}

	/* Control channel: requests, and replies as the server writes them. */
	static const char *const reqs[][4] = { { "ping" }, { "info" }, { "list" },
		{ "snapshot", "a", "s" }, { "clone", "a", "c" }, { "create", "v", "1048576" },
		{ "resize", "v", "4096" }, { "delete", "v" }, { "snapshot", "a", "s", "noreserve" },
		{ "reserve", "v", "0", "4096" }, { "unreserve", "v", "4096", "0" },
		{ "snapshot", "a", "s", "noreserve,expendable" }, { "grow", "+1048576" },
		{ "grow", "4194304" }, { "set", "low_water", "800" },
		{ "set", "expendable_floor", "25" } };
	for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
		char buf[256] = { 0 };
		size_t n = 1;
		for (int k = 0; k < 4 && reqs[i][k]; k++) {
			size_t l = strlen(reqs[i][k]) + 1;
			memcpy(buf + n, reqs[i][k], l);
			n += l;
		}
		put(3, buf, n);
	}
	char *out;
	size_t on;
	FILE *f = open_memstream(&out, &on);
	struct vbas_pool_info pi = { 1 << 20, 4096, 254, 8192, 20480, 1000000, 0, 65536, 3, 4096, 0, 7, 16 };
	pi.low_water = 800;
	pi.expendable_floor = 25;
	fputc(2, f);
	ctl_put_info(f, &pi);
	fclose(f);
	put(3, out, on);
	free(out);
	struct vol_list l = { 0 };
	struct vbas_vol_info vi = { .name = "vol", .id = 1, .size = 65536, .mapped = 8192,
				    .reserved = 8192, .owed = 4096 };
	struct vbas_vol_usage u = { 8192, 4096, 4096 };
	vol_list_add(&l, &vi, &u);
	strcpy(vi.name, "snap\xff");
	vi.id = 2, vi.flags = VBAS_VOL_READONLY | VBAS_VOL_EXPENDABLE, vi.origin = 1;
	vol_list_add(&l, &vi, &u);
	f = open_memstream(&out, &on);
	fputc(3, f);
	ctl_put_list(f, &l);
	fclose(f);
	put(3, out, on);
	free(out);
	vol_list_free(&l);
	put(3, "\001" "0\tvolume 'v' created", 21);
	put(3, "\001" "16\tvolume 'v' has 1 client", 27);
	free(prev);
	printf("mkseeds: %u pool, %u node, %u sb, %u ctl seeds in %s\n", nseed[0], nseed[1],
	       nseed[2], nseed[3], dir);
	return 0;
}
