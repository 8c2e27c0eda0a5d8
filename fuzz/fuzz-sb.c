/* Fuzz harness: superblock selection at pool open (lib/txn.c
 * txn_read_sb, called by vbas_open_dev in lib/pool.c) and what open does
 * with the winner.  The input is the first bytes of a device (the two
 * slots of a pool of small blocks), the rest zero; the device is 2 MiB,
 * so that slot 1 of any block size up to 1 MiB lies on it.
 * The custom mutator reseals the slots' checksums after libFuzzer's
 * mutation half of the time, so that changed fields get past them. */
#include "fuzz.h"

#include <stdlib.h>

#define DEV_SIZE (2u << 20)

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vbas_open_opts ro = { .cache_bytes = 16 * FZ_BS, .flags = VBAS_OPEN_RDONLY };
	struct vbas_dev *d = vbas_memdev_create(DEV_SIZE);
	struct vbas_sb sb;
	struct vbas_pool *p;
	struct vbas_pool_info pi;
	uint32_t slot;
	if (!d)
		abort();
	if (size > DEV_SIZE)
		size = DEV_SIZE;
	if (size)
		dev_pwrite(d, data, size, 0);
	dev_flush(d);
	if (!txn_read_sb(d, &sb, &slot) && !vbas_open_dev(d, &ro, &p)) {
		vbas_pool_info(p, &pi);
		vbas_close(p);
	}
	dev_destroy(d);
	return 0;
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned seed)
{
	size = LLVMFuzzerMutate(data, size, max_size);
	if (seed & 1) {
		/* Reseal each slot of a 4 KiB or of a larger block size. */
		for (size_t off = 0; off + VBAS_SB_BYTES <= size; off = off ? off * 2 : FZ_BS)
			if (ld_le32(data + off + 4) == VBAS_SB_MAGIC)
				fz_seal(data + off);
	}
	return size;
}
