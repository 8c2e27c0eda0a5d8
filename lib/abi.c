/* The library's ABI: the layout of the public structs, fixed by asserts,
 * and the check of their spare room on input.
 *
 * Every struct of vbas.h ends in SPARE (docs/design.md, "The library's
 * ABI"): a later field takes spare words (a line for it here, and SPARE's
 * offset moves by as much), and the size and every other offset stay.  A
 * change that moves one fails the build here, as a change of the on-disk
 * format fails it in format.h: a struct that must change in another way
 * breaks the ABI (design.md says what must change with it), and is not an
 * edit of these numbers alone.
 *
 * The numbers are those of LP64 targets (x86-64, aarch64, ...); elsewhere
 * only what holds on every target is asserted: SPARE ends each struct,
 * and the structs the caller passes in have no padding before it (every
 * byte the library reads is a field the caller set, or zeroed).
 */
#include "internal.h"

#include <errno.h>
#include <stddef.h>

#define ABI_SIZE(s, n) \
	_Static_assert(sizeof(struct s) == (n), "sizeof(struct " #s ") is not " #n)
#define ABI_OFF(s, f, n) \
	_Static_assert(offsetof(struct s, f) == (n), \
		       "offsetof(struct " #s ", " #f ") is not " #n)
/* SPARE is the struct's last member, with no padding after it. */
#define ABI_SPARE_LAST(s) \
	_Static_assert(offsetof(struct s, spare) + sizeof(((struct s *)0)->spare) == \
		       sizeof(struct s), "struct " #s " does not end in spare")

ABI_SPARE_LAST(vbas_format_opts);
ABI_SPARE_LAST(vbas_open_opts);
ABI_SPARE_LAST(vbas_pool_info);
ABI_SPARE_LAST(vbas_pool_settings);
ABI_SPARE_LAST(vbas_shrink_stats);
ABI_SPARE_LAST(vbas_event);
ABI_SPARE_LAST(vbas_vol_info);
ABI_SPARE_LAST(vbas_vol_usage);
ABI_SPARE_LAST(vbas_resv_stats);
ABI_SPARE_LAST(vbas_iomap);
ABI_SPARE_LAST(vbas_extent);
ABI_SPARE_LAST(vbas_fsmap_rec);
ABI_SPARE_LAST(vbas_check_stats);
ABI_SPARE_LAST(vbas_repair_stats);

/* The structs given to the library: no hole before SPARE. */
_Static_assert(offsetof(struct vbas_format_opts, spare) ==
	       sizeof(uint64_t) + 2 * sizeof(uint32_t), "vbas_format_opts has a hole");
_Static_assert(offsetof(struct vbas_open_opts, spare) ==
	       sizeof(uint64_t) + sizeof(uint32_t), "vbas_open_opts has a hole");
_Static_assert(offsetof(struct vbas_pool_settings, spare) ==
	       2 * sizeof(uint32_t), "vbas_pool_settings has a hole");

/* The enums in structs are ints. */
_Static_assert(sizeof(enum vbas_event_type) == 4 && sizeof(enum vbas_iomap_type) == 4 &&
	       sizeof(enum vbas_fsmap_kind) == 4, "an enum of vbas.h is not 4 bytes");

#if defined(__LP64__)
ABI_SIZE(vbas_format_opts, 64);
ABI_OFF(vbas_format_opts, size, 0);
ABI_OFF(vbas_format_opts, block_size, 8);
ABI_OFF(vbas_format_opts, flags, 12);
ABI_OFF(vbas_format_opts, spare, 16);

ABI_SIZE(vbas_open_opts, 64);
ABI_OFF(vbas_open_opts, cache_bytes, 0);
ABI_OFF(vbas_open_opts, flags, 8);
ABI_OFF(vbas_open_opts, spare, 12);

ABI_SIZE(vbas_pool_info, 256);
ABI_OFF(vbas_pool_info, size, 0);
ABI_OFF(vbas_pool_info, block_size, 8);
ABI_OFF(vbas_pool_info, total_blocks, 16);
ABI_OFF(vbas_pool_info, data_used, 24);
ABI_OFF(vbas_pool_info, metadata_used, 32);
ABI_OFF(vbas_pool_info, free, 40);
ABI_OFF(vbas_pool_info, reserved, 48);
ABI_OFF(vbas_pool_info, metadata_reserve, 56);
ABI_OFF(vbas_pool_info, volumes, 64);
ABI_OFF(vbas_pool_info, mapped, 72);
ABI_OFF(vbas_pool_info, sharing_saves, 80);
ABI_OFF(vbas_pool_info, generation, 88);
ABI_OFF(vbas_pool_info, cache_blocks, 96);
ABI_OFF(vbas_pool_info, reserved_metadata, 104);
ABI_OFF(vbas_pool_info, reserved_metadata_granted, 112);
ABI_OFF(vbas_pool_info, reserved_metadata_used, 120);
ABI_OFF(vbas_pool_info, reserved_ranges, 128);
ABI_OFF(vbas_pool_info, reserved_owed, 136);
ABI_OFF(vbas_pool_info, available, 144);
ABI_OFF(vbas_pool_info, low_water, 152);
ABI_OFF(vbas_pool_info, expendable_floor, 156);
ABI_OFF(vbas_pool_info, rmap, 160);
ABI_OFF(vbas_pool_info, shrink_to, 168);
ABI_OFF(vbas_pool_info, intents, 176);
ABI_OFF(vbas_pool_info, dirty_blocks, 184);
ABI_OFF(vbas_pool_info, spare, 192);

ABI_SIZE(vbas_pool_settings, 64);
ABI_OFF(vbas_pool_settings, low_water, 0);
ABI_OFF(vbas_pool_settings, expendable_floor, 4);
ABI_OFF(vbas_pool_settings, spare, 8);

ABI_SIZE(vbas_shrink_stats, 64);
ABI_OFF(vbas_shrink_stats, data_blocks, 0);
ABI_OFF(vbas_shrink_stats, nodes, 8);
ABI_OFF(vbas_shrink_stats, steps, 16);
ABI_OFF(vbas_shrink_stats, spare, 24);

ABI_SIZE(vbas_event, 384);
ABI_OFF(vbas_event, type, 0);
ABI_OFF(vbas_event, use, 4);
ABI_OFF(vbas_event, low_water, 8);
ABI_OFF(vbas_event, size, 16);
ABI_OFF(vbas_event, available, 24);
ABI_OFF(vbas_event, needed, 32);
ABI_OFF(vbas_event, count, 40);
ABI_OFF(vbas_event, name, 48);
ABI_OFF(vbas_event, spare, 304);

ABI_SIZE(vbas_vol_info, 384);
ABI_OFF(vbas_vol_info, name, 0);
ABI_OFF(vbas_vol_info, id, 256);
ABI_OFF(vbas_vol_info, size, 264);
ABI_OFF(vbas_vol_info, mapped, 272);
ABI_OFF(vbas_vol_info, origin, 280);
ABI_OFF(vbas_vol_info, flags, 288);
ABI_OFF(vbas_vol_info, reserved, 296);
ABI_OFF(vbas_vol_info, owed, 304);
ABI_OFF(vbas_vol_info, spare, 312);

ABI_SIZE(vbas_vol_usage, 64);
ABI_OFF(vbas_vol_usage, mapped, 0);
ABI_OFF(vbas_vol_usage, exclusive, 8);
ABI_OFF(vbas_vol_usage, shared, 16);
ABI_OFF(vbas_vol_usage, spare, 24);

ABI_SIZE(vbas_resv_stats, 128);
ABI_OFF(vbas_resv_stats, data_left, 0);
ABI_OFF(vbas_resv_stats, data_used, 8);
ABI_OFF(vbas_resv_stats, meta_held, 16);
ABI_OFF(vbas_resv_stats, meta_granted, 24);
ABI_OFF(vbas_resv_stats, meta_used, 32);
ABI_OFF(vbas_resv_stats, meta_short, 40);
ABI_OFF(vbas_resv_stats, spare, 48);

ABI_SIZE(vbas_iomap, 160);
ABI_OFF(vbas_iomap, type, 0);
ABI_OFF(vbas_iomap, flags, 4);
ABI_OFF(vbas_iomap, offset, 8);
ABI_OFF(vbas_iomap, length, 16);
ABI_OFF(vbas_iomap, physical, 24);
ABI_OFF(vbas_iomap, fd, 32);
ABI_OFF(vbas_iomap, cow_physical, 40);
ABI_OFF(vbas_iomap, priv, 48);
ABI_OFF(vbas_iomap, spare, 112);

ABI_SIZE(vbas_extent, 64);
ABI_OFF(vbas_extent, offset, 0);
ABI_OFF(vbas_extent, length, 8);
ABI_OFF(vbas_extent, physical, 16);
ABI_OFF(vbas_extent, flags, 24);
ABI_OFF(vbas_extent, spare, 28);

ABI_SIZE(vbas_fsmap_rec, 384);
ABI_OFF(vbas_fsmap_rec, physical, 0);
ABI_OFF(vbas_fsmap_rec, length, 8);
ABI_OFF(vbas_fsmap_rec, kind, 16);
ABI_OFF(vbas_fsmap_rec, level, 20);
ABI_OFF(vbas_fsmap_rec, volume, 24);
ABI_OFF(vbas_fsmap_rec, logical, 32);
ABI_OFF(vbas_fsmap_rec, name, 40);
ABI_OFF(vbas_fsmap_rec, spare, 296);

ABI_SIZE(vbas_check_stats, 128);
ABI_OFF(vbas_check_stats, problems, 0);
ABI_OFF(vbas_check_stats, nodes, 8);
ABI_OFF(vbas_check_stats, extents, 16);
ABI_OFF(vbas_check_stats, refcount_records, 24);
ABI_OFF(vbas_check_stats, volumes, 32);
ABI_OFF(vbas_check_stats, rmap_records, 40);
ABI_OFF(vbas_check_stats, spare, 48);

ABI_SIZE(vbas_repair_stats, 128);
ABI_OFF(vbas_repair_stats, refcount_rebuilt, 0);
ABI_OFF(vbas_repair_stats, rmap_rebuilt, 4);
ABI_OFF(vbas_repair_stats, refcount_records, 8);
ABI_OFF(vbas_repair_stats, rmap_records, 16);
ABI_OFF(vbas_repair_stats, unrepairable, 24);
ABI_OFF(vbas_repair_stats, leaves_rebuilt, 32);
ABI_OFF(vbas_repair_stats, interior_rebuilt, 36);
ABI_OFF(vbas_repair_stats, names_rebuilt, 40);
ABI_OFF(vbas_repair_stats, spare, 44);

#endif

int abi_spare_check(const uint32_t *spare, size_t n, const char *what)
{
	for (size_t i = 0; i < n; i++)
		if (spare[i])
			return vbas_err(-EINVAL, "struct %s: spare[%zu] is %#x, not 0: a field this "
					"library (vbas %s) does not know, or a struct not zeroed "
					"before its fields were set", what, i, spare[i],
					VBAS_VERSION_STRING);
	return 0;
}
