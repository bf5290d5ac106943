/* Internals shared by the WAL writer (wal.c) and reader (reader.c). The
   byte layout is documented in docs/wal-format.md and at the top of wal.c. */
#ifndef TG_WAL_INTERNAL_H
#define TG_WAL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/endian.h"
#include "tokengraph/wal.h"

#define TG__WAL_MAGIC "TGWALSEG"     /* 8 bytes, no NUL on disk */
#define TG__WAL_VERSION 2u           /* written; version 1 is still read */
#define TG__WAL_VERSION_1 1u         /* no marker frames (its own rules) */
#define TG__WAL_HDR 64u              /* segment header bytes */
#define TG__WAL_FRAME_HDR 16u        /* frame header bytes */
#define TG__WAL_ALIGN 8u
#define TG__WAL_MIN_SEGMENT 4096u
#define TG__WAL_NAME_LEN 24          /* 20 digits + ".wal" */

/* Field offsets in the segment header. */
enum {
  TG__SH_MAGIC = 0,
  TG__SH_VERSION = 8,
  TG__SH_HDRSIZE = 12,
  TG__SH_FIRST_LSN = 16,
  TG__SH_PREALLOC = 24,
  TG__SH_ALIGN = 32,
  TG__SH_CRC = 60
};

static inline size_t tg__align8(size_t x) { return (x + 7u) & ~(size_t)7u; }

/* Marker frames (version 2): a frame whose LSN bits are 0 (no record has
   LSN 0) and whose type byte is the kind; 16 payload bytes. Readers skip
   them in the LSN sequence. */
#define TG__WAL_MARKER_LEN 32u       /* frame header + payload */
enum {
  TG__WAL_MARK_DURABLE = 1, /* payload: u64 offset, u64 LSN: bytes [0, offset)
                               of this segment, holding every record up to
                               LSN, were fdatasynced before this was written */
  TG__WAL_MARK_SWITCH = 2   /* payload: u64 offset (its own: all before it is
                               durable), u64 the next segment's first LSN,
                               whose name was durable before this was written */
};

/* Encode a marker frame (CRC included) into m. */
void tg__wal_marker_encode(unsigned char m[TG__WAL_MARKER_LEN], int kind, uint64_t offset,
                           uint64_t lsn);


/* CRC of a frame: bytes [0,4) then [8,len). */
uint32_t tg__wal_frame_crc(const unsigned char *frame, uint32_t len);

/* Fill a 64-byte segment header. */
void tg__wal_header_encode(unsigned char hdr[TG__WAL_HDR], uint64_t first_lsn,
                           uint64_t prealloc);

/* "%020llu.wal" into name (at least TG__WAL_NAME_LEN + 1 bytes). */
void tg__wal_seg_name(char *name, uint64_t first_lsn);

/* The segments of dir, sorted by first LSN, in a malloc'd array (*lsns may be
   NULL when *n is 0). Returns 0 or -errno / TG_ENOMEM. */
int tg__wal_list(const char *dir, uint64_t **lsns, size_t *n);

/* Tests of ACK ORDER (wal.c) only: claim the next LSN without filling its
   slot, so that it stays unpublished; then fill and publish it (a payload
   of at most 96 bytes, else TG_EINVAL). */
struct tg_wal;
int tg__wal_test_claim(struct tg_wal *w, uint64_t *lsn);
int tg__wal_test_publish(struct tg_wal *w, uint64_t lsn, uint8_t type, const void *payload,
                          size_t len);
/* 1 if the ring slot of lsn holds it, published. */
int tg__wal_test_published(struct tg_wal *w, uint64_t lsn);

#endif
