/* Little-endian on-disk integer types.  Each is a one-member struct so that
 * a raw assignment between host and disk order fails to compile. */
#ifndef VBAS_LE_H
#define VBAS_LE_H

#include <stdint.h>
#include <string.h>

typedef struct { uint16_t v; } __attribute__((packed)) vbas_le16;
typedef struct { uint32_t v; } __attribute__((packed)) vbas_le32;
typedef struct { uint64_t v; } __attribute__((packed)) vbas_le64;

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define VBAS_SWAP16(x) (x)
#define VBAS_SWAP32(x) (x)
#define VBAS_SWAP64(x) (x)
#else
#define VBAS_SWAP16(x) __builtin_bswap16(x)
#define VBAS_SWAP32(x) __builtin_bswap32(x)
#define VBAS_SWAP64(x) __builtin_bswap64(x)
#endif

static inline uint16_t le16_get(vbas_le16 x) { return VBAS_SWAP16(x.v); }
static inline uint32_t le32_get(vbas_le32 x) { return VBAS_SWAP32(x.v); }
static inline uint64_t le64_get(vbas_le64 x) { return VBAS_SWAP64(x.v); }
static inline vbas_le16 le16_mk(uint16_t v) { vbas_le16 x = { VBAS_SWAP16(v) }; return x; }
static inline vbas_le32 le32_mk(uint32_t v) { vbas_le32 x = { VBAS_SWAP32(v) }; return x; }
static inline vbas_le64 le64_mk(uint64_t v) { vbas_le64 x = { VBAS_SWAP64(v) }; return x; }

/* Unaligned loads/stores of little-endian words inside node buffers. */
static inline uint64_t ld_le64(const void *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return VBAS_SWAP64(v);
}
static inline void st_le64(void *p, uint64_t v)
{
	v = VBAS_SWAP64(v);
	memcpy(p, &v, 8);
}
static inline uint32_t ld_le32(const void *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return VBAS_SWAP32(v);
}
static inline void st_le32(void *p, uint32_t v)
{
	v = VBAS_SWAP32(v);
	memcpy(p, &v, 4);
}
static inline uint16_t ld_le16(const void *p)
{
	uint16_t v;
	memcpy(&v, p, 2);
	return VBAS_SWAP16(v);
}
static inline void st_le16(void *p, uint16_t v)
{
	v = VBAS_SWAP16(v);
	memcpy(p, &v, 2);
}

#endif
