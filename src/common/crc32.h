/* CRC-32 identical to zlib's crc32(), for the WAL's frames and the
   checkpoint's values; see crc32.c for why it exists. */
#ifndef TG_COMMON_CRC32_H
#define TG_COMMON_CRC32_H

#include <stddef.h>
#include <stdint.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the on-disk formats are written for little-endian hosts"
#endif

/* Continue crc (0 to start) over n bytes at buf, exactly as zlib
   crc32(crc, buf, n) does. */
uint32_t tg__crc32(uint32_t crc, const void *buf, size_t n);

#endif
