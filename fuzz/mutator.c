/* The structure-aware mutator of the pool and node harnesses.
 *
 * Random bytes in a metadata block only test its checksum.  This mutator
 * picks one block of the sparse image (fuzz.h), changes one thing the way
 * a bug or an attacker would (a header field, a record's field, an
 * interior child pointer, two records swapped, a record duplicated, the
 * block replaced by an older version of it or by another block), then
 * seals the block again (node or superblock checksum), so that the
 * library's structural checks see the change.  Part of the time it lets
 * libFuzzer mutate the bytes of one block, sealed or not, or the whole
 * input. */
#include "fuzz.h"

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);

static uint64_t rnd(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}
#define BELOW(s, n) ((n) ? rnd(s) % (n) : 0)

/* A new value for an integer field of N bytes now holding OLD: the kinds
 * of value that break code (bounds, off-by-ones, the pool's own block
 * numbers). */
static uint64_t new_value(uint64_t *s, size_t n, uint64_t old, const uint8_t *data, size_t size)
{
	uint64_t max = n >= 8 ? ~0ull : (1ull << (8 * n)) - 1;
	switch (BELOW(s, 10)) {
	case 0: return 0;
	case 1: return max;
	case 2: return max >> 1;
	case 3: return old + 1 + BELOW(s, 4);
	case 4: return old - 1 - BELOW(s, 4);
	case 5: return old ^ (1ull << BELOW(s, 8 * n));
	case 6: return FZ_NBLOCKS - BELOW(s, 3);
	case 7: {                     /* another block of the image */
		size_t k = fz_nrecs(size);
		return k ? fz_blkno(data, BELOW(s, k)) : 2;
	}
	case 8: return BELOW(s, 64);
	default: return rnd(s);
	}
}

static void mutate_field(uint64_t *s, uint8_t *p, const struct fz_field *f,
			 const uint8_t *data, size_t size)
{
	if (f->size > 8) {            /* uuid, name: bytes */
		p[f->off + BELOW(s, f->size)] = (uint8_t)rnd(s);
		return;
	}
	uint64_t v = fz_ld(p + f->off, f->size);
	fz_st(p + f->off, f->size, new_value(s, f->size, v, data, size));
}

/* One structural change to tree node BLK. */
static void mutate_node(uint64_t *s, uint8_t *blk, uint8_t *data, size_t size)
{
	const struct vbas_node_hdr *h = (const void *)blk;
	unsigned level = le16_get(h->level), n = le16_get(h->nrecs);
	const struct fz_field *f = NULL;
	size_t nf = 0, rs = level ? FZ_ENT_SIZE : fz_leaf_layout(le16_get(h->tree_type), &f, &nf);
	size_t room = rs ? (FZ_BS - sizeof(*h)) / rs : 0;
	if (level)
		f = fz_ent_fields, nf = FZ_N(fz_ent_fields);
	if (n > room)
		n = (unsigned)room;
	uint8_t *rec0 = blk + sizeof(*h);
	switch (rs && n ? BELOW(s, 8) : 0) {
	case 0:                       /* a header field */
		mutate_field(s, blk, &fz_hdr_fields[BELOW(s, FZ_N(fz_hdr_fields))], data, size);
		break;
	case 1: case 2: case 3: {     /* a record's or entry's field */
		uint8_t *r = rec0 + BELOW(s, n) * rs;
		mutate_field(s, r, &f[BELOW(s, nf)], data, size);
		break;
	}
	case 4: {                     /* two records swapped */
		uint8_t tmp[sizeof(struct vbas_voltab_rec)];
		uint8_t *a = rec0 + BELOW(s, n) * rs, *b = rec0 + BELOW(s, n) * rs;
		memcpy(tmp, a, rs);
		memmove(a, b, rs);
		memcpy(b, tmp, rs);
		break;
	}
	case 5: {                     /* a record copied over another */
		memmove(rec0 + BELOW(s, n) * rs, rec0 + BELOW(s, n) * rs, rs);
		break;
	}
	case 6: {                     /* one record more or fewer */
		unsigned m = n + (BELOW(s, 2) ? 1 : -1);
		if (m <= room) {
			if (m > n)
				memcpy(rec0 + n * rs, rec0 + BELOW(s, n) * rs, rs);
			struct vbas_node_hdr *w = (void *)blk;
			w->nrecs = le16_mk((uint16_t)m);
		}
		break;
	}
	default:                      /* a key shifted by a little */
		if (level || f[0].size <= 8) {
			uint8_t *r = rec0 + BELOW(s, n) * rs;
			fz_st(r, FZ_KEY_SIZE, fz_ld(r, FZ_KEY_SIZE) + BELOW(s, 5) - 2);
		}
		break;
	}
}

size_t fz_mutate(uint8_t *data, size_t size, size_t max_size, unsigned seed)
{
	uint64_t s = seed;
	size_t k = fz_nrecs(size);
	if (!k || BELOW(&s, 8) == 0)
		return LLVMFuzzerMutate(data, size, max_size);
	size_t i = BELOW(&s, k);
	uint8_t *blk = fz_block(data, i);
	switch (BELOW(&s, 10)) {
	case 0: {                     /* libFuzzer on one block's bytes */
		size_t n = LLVMFuzzerMutate(blk, FZ_BS, FZ_BS);
		if (n < FZ_BS)
			memset(blk + n, 0, FZ_BS - n);
		if (BELOW(&s, 2))
			fz_seal(blk);
		return size;
	}
	case 1: {                     /* another record's block put here: an
	                                 older version (a lost write) or a
	                                 misdirected one, kept sealed */
		size_t j = BELOW(&s, k);
		uint8_t *src = fz_block(data, j);
		if (j != i) {
			uint64_t self = fz_blkno(data, i);
			memmove(blk, src, FZ_BS);
			if (BELOW(&s, 4) && self < FZ_NBLOCKS &&
			    ld_le32(blk + offsetof(struct vbas_node_hdr, magic)) == VBAS_NODE_MAGIC)
				st_le64(blk + offsetof(struct vbas_node_hdr, blkno), self);
			fz_seal(blk);
		}
		return size;
	}
	case 2:                       /* a block moved elsewhere */
		fz_st(data + i * FZ_REC, 4, new_value(&s, 2, fz_blkno(data, i), data, size));
		return size;
	default:
		break;
	}
	if (ld_le32(blk + offsetof(struct vbas_node_hdr, magic)) == VBAS_NODE_MAGIC)
		mutate_node(&s, blk, data, size);
	else if (ld_le32(blk + offsetof(struct vbas_sb, magic)) == VBAS_SB_MAGIC)
		mutate_field(&s, blk, &fz_sb_fields[BELOW(&s, FZ_N(fz_sb_fields))], data, size);
	else
		return LLVMFuzzerMutate(data, size, max_size);
	fz_seal(blk);
	return size;
}
