/* Shared by vbas's libFuzzer harnesses (docs/fuzzing.md).
 *
 * Pool and node inputs are sparse images: a sequence of records, each
 *     le32 block number | FZ_BS bytes of the block
 * laid over a zeroed in-memory device of FZ_NBLOCKS blocks.  A record
 * whose block number is FZ_SPARE (or any number past the device) is not
 * loaded: it carries an older version of some block, which the
 * structure-aware mutator may put back in place of the live one (a lost
 * write).  A trailing partial record is ignored.  Only metadata blocks
 * (superblocks and tree nodes) are worth carrying: data blocks read as
 * zeros, which is as good as any content for the library.
 */
#ifndef VBAS_FUZZ_H
#define VBAS_FUZZ_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

#define FZ_BS        4096u            /* block size of every fuzzed pool */
#define FZ_NBLOCKS   1024u            /* device: 4 MiB */
#define FZ_SPARE     0xffffffffu      /* a record kept out of the image */
#define FZ_REC       (4u + FZ_BS)
#define FZ_MAX_RECS  320u             /* -max_len = FZ_MAX_RECS * FZ_REC */
#define FZ_FANOUT    4u               /* max_fanout of the seed pools */

/* Little-endian integers of 1..8 bytes at P. */
static inline uint64_t fz_ld(const void *p, size_t n)
{
	uint64_t v = 0;
	for (size_t i = n > 8 ? 8 : n; i-- > 0;)
		v = v << 8 | ((const uint8_t *)p)[i];
	return v;
}
static inline void fz_st(void *p, size_t n, uint64_t v)
{
	for (size_t i = 0; i < n && i < 8; i++, v >>= 8)
		((uint8_t *)p)[i] = (uint8_t)v;
}
#define ld_le32(p) ((uint32_t)fz_ld((p), 4))
#define st_le32(p, v) fz_st((p), 4, (v))

static inline size_t fz_nrecs(size_t size) { return size / FZ_REC; }
static inline uint32_t fz_blkno(const uint8_t *data, size_t i)
{
	return ld_le32(data + i * FZ_REC);
}
static inline uint8_t *fz_block(uint8_t *data, size_t i)
{
	return data + i * FZ_REC + 4;
}

/* The memory device, holding the image of DATA.  One device serves every
 * run of the process, its image zeroed and loaded again each time:
 * mapping a new one costs more page faults than the rest of a run.  Its
 * durable image is left as it was (the harnesses never lose power). */
static inline struct vbas_dev *fz_load(const uint8_t *data, size_t size)
{
	static struct vbas_dev *d;
	if (!d && !(d = vbas_memdev_create((uint64_t)FZ_NBLOCKS * FZ_BS)))
		return NULL;
	dev_flush(d);                 /* drops what a run left pending */
	uint8_t *img = vbas_memdev_image(d);
	memset(img, 0, (size_t)FZ_NBLOCKS * FZ_BS);
	for (size_t i = 0; i < fz_nrecs(size); i++) {
		uint32_t b = fz_blkno(data, i);
		if (b < FZ_NBLOCKS)
			memcpy(img + (size_t)b * FZ_BS, data + i * FZ_REC + 4, FZ_BS);
	}
	return d;
}

/* Recompute the checksum of a tree node or a superblock (by its magic),
 * as a writer would: the mutator changes fields, then seals the block,
 * so that mutations get past the checksum. */
static inline void fz_seal(uint8_t *blk)
{
	if (ld_le32(blk + offsetof(struct vbas_node_hdr, magic)) == VBAS_NODE_MAGIC) {
		st_le32(blk, vbas_crc32c(VBAS_SALT_NODE, blk + 4, FZ_BS - 4));
	} else if (ld_le32(blk + offsetof(struct vbas_sb, magic)) == VBAS_SB_MAGIC) {
		struct vbas_sb sb;
		memcpy(&sb, blk, sizeof(sb));
		st_le32(blk, sb_csum(&sb));
	}
}

/* ---- The layout of tree nodes, as the mutator sees it ------------------
 *
 * All the mutator's knowledge of where fields lie, derived from
 * lib/format.h.  The one layout format.h does not spell out is the
 * interior entry of lib/btree.c (ent_size, ent_child): keep FZ_ENT_* in
 * step with it when the entry changes. */
#define FZ_KEY_SIZE      8u                        /* every tree: one le64 */
#define FZ_ENT_CHILD     FZ_KEY_SIZE               /* child pointer offset */
#define FZ_ENT_CTXID     (FZ_KEY_SIZE + 8u)        /* child's transaction */
#define FZ_ENT_SIZE      (FZ_KEY_SIZE + VBAS_PTR_BYTES)  /* low key | child | txid */

struct fz_field {
	uint16_t off, size;
};
#define FZ_F(type, m) { offsetof(type, m), sizeof(((type *)0)->m) }

static const struct fz_field fz_hdr_fields[] = {
	FZ_F(struct vbas_node_hdr, blkno), FZ_F(struct vbas_node_hdr, txid),
	FZ_F(struct vbas_node_hdr, owner), FZ_F(struct vbas_node_hdr, level),
	FZ_F(struct vbas_node_hdr, nrecs), FZ_F(struct vbas_node_hdr, tree_type),
	FZ_F(struct vbas_node_hdr, pad0), FZ_F(struct vbas_node_hdr, uuid),
};
static const struct fz_field fz_sb_fields[] = {
	FZ_F(struct vbas_sb, blkno), FZ_F(struct vbas_sb, generation),
	FZ_F(struct vbas_sb, version), FZ_F(struct vbas_sb, block_size),
	FZ_F(struct vbas_sb, nblocks), FZ_F(struct vbas_sb, max_fanout),
	FZ_F(struct vbas_sb, flags), FZ_F(struct vbas_sb, voltab_root),
	FZ_F(struct vbas_sb, refc_root), FZ_F(struct vbas_sb, voltab_root_txid),
	FZ_F(struct vbas_sb, refc_root_txid), FZ_F(struct vbas_sb, data_used),
	FZ_F(struct vbas_sb, meta_used), FZ_F(struct vbas_sb, next_vol_id),
	FZ_F(struct vbas_sb, nvolumes), FZ_F(struct vbas_sb, uuid),
};
static const struct fz_field fz_map_fields[] = {
	FZ_F(struct vbas_map_rec, k.lblk), FZ_F(struct vbas_map_rec, v.pblk),
	FZ_F(struct vbas_map_rec, v.len), FZ_F(struct vbas_map_rec, v.flags),
};
static const struct fz_field fz_refc_fields[] = {
	FZ_F(struct vbas_refc_rec, k.pblk), FZ_F(struct vbas_refc_rec, v.len),
	FZ_F(struct vbas_refc_rec, v.refcount), FZ_F(struct vbas_refc_rec, v.type),
	FZ_F(struct vbas_refc_rec, v.pad),
};
static const struct fz_field fz_vol_fields[] = {
	FZ_F(struct vbas_voltab_rec, k.id), FZ_F(struct vbas_voltab_rec, v.size),
	FZ_F(struct vbas_voltab_rec, v.root), FZ_F(struct vbas_voltab_rec, v.mapped),
	FZ_F(struct vbas_voltab_rec, v.origin), FZ_F(struct vbas_voltab_rec, v.cgen),
	FZ_F(struct vbas_voltab_rec, v.share_gen), FZ_F(struct vbas_voltab_rec, v.del_cursor),
	FZ_F(struct vbas_voltab_rec, v.flags), FZ_F(struct vbas_voltab_rec, v.name_len),
	FZ_F(struct vbas_voltab_rec, v.pad), FZ_F(struct vbas_voltab_rec, v.root_txid),
	FZ_F(struct vbas_voltab_rec, v.name),
};
static const struct fz_field fz_ent_fields[] = {
	{ 0, FZ_KEY_SIZE }, { FZ_ENT_CHILD, 8 }, { FZ_ENT_CTXID, 8 },
};
#define FZ_N(a) (sizeof(a) / sizeof((a)[0]))

/* Size of a leaf record of TREE_TYPE and its fields (0 if unknown). */
static inline size_t fz_leaf_layout(unsigned tree_type, const struct fz_field **f, size_t *nf)
{
	switch (tree_type) {
	case VBAS_TREE_MAP:
		*f = fz_map_fields, *nf = FZ_N(fz_map_fields);
		return sizeof(struct vbas_map_rec);
	case VBAS_TREE_REFC:
		*f = fz_refc_fields, *nf = FZ_N(fz_refc_fields);
		return sizeof(struct vbas_refc_rec);
	case VBAS_TREE_VOLTAB:
		*f = fz_vol_fields, *nf = FZ_N(fz_vol_fields);
		return sizeof(struct vbas_voltab_rec);
	}
	return 0;
}

size_t fz_mutate(uint8_t *data, size_t size, size_t max_size, unsigned seed);

#endif
