/*
 * Little-endian loads and stores of on-disk integers at any alignment.
 * Every on-disk format of the project (WAL frames and segment headers,
 * checkpoint values) is little-endian; memcpy keeps unaligned access
 * defined and compiles to a single move on x86-64 and arm64.
 */
#ifndef TG_COMMON_ENDIAN_H
#define TG_COMMON_ENDIAN_H

#include <stdint.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tokengraph's on-disk formats are read in place: a little-endian CPU is required"
#endif

static inline uint32_t tg__ld32(const unsigned char *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
static inline uint64_t tg__ld64(const unsigned char *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}
static inline void tg__st32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void tg__st64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }

#endif /* TG_COMMON_ENDIAN_H */
