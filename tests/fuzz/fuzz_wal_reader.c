/*
 * libFuzzer target: the WAL reader over arbitrary bytes written as segment
 * files. The reader must never read out of range, never crash, and only
 * ever yield consecutive LSNs; it must end with a valid reason.
 *
 * Input layout:
 *   byte 0      flags: bit 0 - fix up the header and frame CRCs (so the
 *               fuzzer reaches the LSN, padding and multi-segment rules
 *               rather than stopping at a CRC); bits 1-2 - segments - 1;
 *               bit 3 - read from the first segment's LSN + 1 instead of 0
 *   then, for every segment but the last, a 2-byte little-endian length and
 *   that many bytes; the last segment takes the rest.
 * A segment is named after the first LSN in its header when that is a valid
 * LSN, else after its index + 1. The seed corpus holds segments of both
 * format versions (v2-markers: DURABLE and SWITCH marker frames).
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tokengraph/wal.h"
#include "common/crc32.h"
#include "wal/wal_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];

static void clear_dir(void) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  char p[128];
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    unlink(p);
  }
  closedir(d);
}

static void fix_crcs(unsigned char *b, size_t n) {
  if (n < TG__WAL_HDR) return;
  tg__st32(b + TG__SH_CRC, tg__crc32(0, b, TG__SH_CRC));
  size_t o = TG__WAL_HDR;
  while (o + TG__WAL_FRAME_HDR <= n) {
    uint32_t len = tg__ld32(b + o);
    if (len < TG__WAL_FRAME_HDR || len > n - o) break;
    tg__st32(b + o + 4, tg__wal_frame_crc(b + o, len));
    o += tg__align8(len);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!dir[0]) {
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof dir, "%s/tg-fuzz-wal-XXXXXX", base);
    if (!mkdtemp(dir)) abort();
  }
  clear_dir();
  if (size < 1) return 0;
  uint8_t flags = data[0];
  int nseg = 1 + ((flags >> 1) & 3);
  const uint8_t *p = data + 1;
  size_t left = size - 1;
  uint64_t first_name = 0;
  for (int i = 0; i < nseg; i++) {
    size_t n = left;
    if (i + 1 < nseg) {
      if (left < 2) break;
      n = (size_t)p[0] | (size_t)p[1] << 8;
      p += 2;
      left -= 2;
      if (n > left) n = left;
    }
    unsigned char *b = malloc(n ? n : 1);
    if (!b) abort();
    memcpy(b, p, n);
    if (flags & 1) fix_crcs(b, n);
    uint64_t lsn = (uint64_t)i + 1;
    if (n >= 24) {
      uint64_t h = tg__ld64(b + TG__SH_FIRST_LSN);
      if (h >= 1 && h <= TG_WAL_MAX_LSN) lsn = h;
    }
    if (i == 0) first_name = lsn;
    char name[TG__WAL_NAME_LEN + 1], path[128];
    tg__wal_seg_name(name, lsn);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) abort();
    if (n && write(fd, b, n) != (ssize_t)n) abort();
    close(fd);
    free(b);
    p += n;
    left -= n;
  }

  tg_wal_reader *r = NULL;
  uint64_t from = (flags & 8) ? first_name + 1 : 0;
  if (tg_wal_reader_open(&r, dir, from) != 0) abort();
  tg_wal_record rec;
  uint64_t prev = 0, sum = 0;
  while (tg_wal_reader_next(r, &rec) == 1) {
    if (prev && rec.lsn != prev + 1) abort();
    if (rec.lsn < from || rec.lsn > TG_WAL_MAX_LSN || rec.len > TG_WAL_MAX_PAYLOAD) abort();
    const unsigned char *pl = rec.payload;
    for (uint32_t i = 0; i < rec.len; i++) sum += pl[i]; /* touch every byte */
    prev = rec.lsn;
  }
  const tg_wal_end *end = tg_wal_reader_end(r);
  if (end->reason < TG_WAL_END_CLEAN || end->reason > TG_WAL_END_IO || !end->what) abort();
  if (prev && end->last_lsn != prev) abort();
  if (prev && (!end->first_lsn || end->first_lsn > end->last_lsn)) abort();
  if (tg_wal_reader_next(r, &rec) != 0) abort();
  /* Format 2: a log ends clean or torn only at or after its durable point
     (damage before it is corruption), and an empty segment left by an
     interrupted switch is reported only for a log that did not fail. */
  if ((end->reason == TG_WAL_END_CLEAN || end->reason == TG_WAL_END_TORN) &&
      end->offset < end->durable_offset)
    abort();
  if (end->empty_segment && (end->reason == TG_WAL_END_CORRUPT || end->reason == TG_WAL_END_IO ||
                             end->empty_segment <= end->segment))
    abort();
  /* What a repair would report as lying beyond a cut at the end. */
  if (end->segment) {
    tg_wal_salvage sv;
    if (tg_wal_salvage_scan(dir, end->segment, end->offset, 0, &sv) == 0 &&
        (sv.above > sv.frames || (sv.frames && sv.min_lsn > sv.max_lsn)))
      abort();
  }
  tg_wal_reader_close(r);
  return (int)(sum & 0); /* libFuzzer wants 0 */
}
