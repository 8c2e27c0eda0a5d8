#ifndef VBAS_CRC32C_H
#define VBAS_CRC32C_H
#include <stddef.h>
#include <stdint.h>
/* CRC-32C (Castagnoli), continuing from CRC (start with 0 or a salt). */
uint32_t vbas_crc32c(uint32_t crc, const void *buf, size_t len);
#endif
