/*
 * WAL reader: iterates the segments of a WAL directory and classifies how
 * the log ends (clean / torn tail / corruption), following the rules in
 * docs/wal-format.md (also summarised at the top of wal.c).
 *
 * The files are untrusted: every length is bounded by TG_WAL_MAX_PAYLOAD and
 * by the file size before it is used, and nothing outside [0, size) of a
 * mapping is read. Segments are mapped read-only (MAP_PRIVATE); the WAL never
 * shrinks a file another reader may have mapped, except tg_wal_open()'s
 * torn-tail cut, which happens before its own writer starts.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/crc32.h"
#include "common/io.h"
#include "wal/wal_internal.h"

struct tg_wal_reader {
  char *dir;                   /* directory path (owned) */
  uint64_t *segs;              /* first LSNs, sorted (owned) */
  size_t nseg;                 /* entries in segs */
  size_t cur;                  /* index of the segment being read */
  int mapped;                  /* 1 while segs[cur] is open */
  const unsigned char *map;    /* its bytes (NULL when size is 0) */
  size_t size;                 /* its file size */
  size_t data_end;             /* bytes from here to size are a hole (read
                                  as zeros): the scans for valid frames
                                  after the end of the data stop here */
  size_t off;                  /* next frame position */
  uint64_t expect;             /* LSN the next record must carry; 0 = not set */
  uint64_t from;               /* yield records with lsn >= from */
  uint64_t seg_bytes;          /* prealloc field of segs[cur]'s header, once
                                  that header was found valid; else 0 */
  uint64_t seg_first;          /* segs[cur] once its header is checked */
  uint32_t ver;                /* format version of segs[cur] */
  uint64_t dur;                /* segs[cur]'s durable point so far: the
                                  largest offset its markers vouch for */
  uint64_t start;              /* first LSN of the segment reading began in:
                                  the first valid record, if any, has this
                                  LSN (records follow from the header's) */
  int ended;                   /* end is final */
  tg_wal_end end;
};

uint32_t tg__wal_frame_crc(const unsigned char *frame, uint32_t len) {
  return tg__crc32(tg__crc32(0, frame, 4), frame + 8, (size_t)len - 8);
}

void tg__wal_marker_encode(unsigned char m[TG__WAL_MARKER_LEN], int kind, uint64_t offset,
                           uint64_t lsn) {
  tg__st32(m, TG__WAL_MARKER_LEN);
  tg__st64(m + 8, (uint64_t)(uint8_t)kind << 56); /* LSN bits 0: a marker */
  tg__st64(m + 16, offset);
  tg__st64(m + 24, lsn);
  tg__st32(m + 4, tg__wal_frame_crc(m, TG__WAL_MARKER_LEN));
}

void tg__wal_header_encode(unsigned char hdr[TG__WAL_HDR], uint64_t first_lsn,
                           uint64_t prealloc) {
  memset(hdr, 0, TG__WAL_HDR);
  memcpy(hdr + TG__SH_MAGIC, TG__WAL_MAGIC, 8);
  tg__st32(hdr + TG__SH_VERSION, TG__WAL_VERSION);
  tg__st32(hdr + TG__SH_HDRSIZE, TG__WAL_HDR);
  tg__st64(hdr + TG__SH_FIRST_LSN, first_lsn);
  tg__st64(hdr + TG__SH_PREALLOC, prealloc);
  tg__st32(hdr + TG__SH_ALIGN, TG__WAL_ALIGN);
  tg__st32(hdr + TG__SH_CRC, tg__crc32(0, hdr, TG__SH_CRC));
}

void tg__wal_seg_name(char *name, uint64_t first_lsn) {
  snprintf(name, TG__WAL_NAME_LEN + 1, "%020llu.wal", (unsigned long long)first_lsn);
}

/* first LSN from a segment file name, or 0 if name is not a segment. */
static uint64_t parse_seg_name(const char *name) {
  uint64_t v = 0;
  for (int i = 0; i < 20; i++) {
    if (name[i] < '0' || name[i] > '9') return 0;
    unsigned d = (unsigned)(name[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return 0;
    v = v * 10 + d;
  }
  return strcmp(name + 20, ".wal") == 0 ? v : 0;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

int tg__wal_list(const char *dir, uint64_t **lsns, size_t *n) {
  *lsns = NULL;
  *n = 0;
  uint64_t *v = NULL;
  size_t cnt = 0, cap = 0;
  int rc = 0;
  DIR *d = opendir(dir);
  if (!d) return -errno;
  struct dirent *e;
  errno = 0;
  while ((e = readdir(d)) != NULL) {
    uint64_t lsn = parse_seg_name(e->d_name);
    if (lsn == 0) continue;
    if (cnt == cap) {
      size_t ncap = cap ? cap * 2 : 16;
      uint64_t *nv = realloc(v, ncap * sizeof *nv);
      if (!nv) {
        rc = TG_ENOMEM;
        goto fail;
      }
      v = nv;
      cap = ncap;
    }
    v[cnt++] = lsn;
  }
  if (errno) {
    rc = -errno;
    goto fail;
  }
  closedir(d);
  if (cnt) qsort(v, cnt, sizeof *v, cmp_u64);
  *lsns = v;
  *n = cnt;
  return 0;
fail:
  closedir(d);
  free(v);
  return rc;
}

/* ---- frame classification ------------------------------------------------ */

enum { F_END, F_VALID, F_BAD };

static int all_zero(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

/* Classify the bytes at m[off..size) as end of data, a valid frame (its len
   in *len) or a bad frame (*what says why). off <= size. */
static int frame_at(const unsigned char *m, size_t size, size_t off, uint32_t *len,
                    const char **what) {
  if (off >= size) return F_END; /* off may pass size by a cut-off padding */
  size_t rem = size - off;
  if (rem < TG__WAL_FRAME_HDR) {
    if (all_zero(m + off, rem)) return F_END;
    *what = "frame header cut off by the end of the file";
    return F_BAD;
  }
  uint32_t l = tg__ld32(m + off);
  if (l == 0) {
    if (all_zero(m + off, TG__WAL_FRAME_HDR)) return F_END;
    *what = "zero length with a non-zero frame header";
    return F_BAD;
  }
  if (l < TG__WAL_FRAME_HDR || l > TG__WAL_FRAME_HDR + TG_WAL_MAX_PAYLOAD) {
    *what = "frame length out of range";
    return F_BAD;
  }
  if (l > rem) {
    *what = "frame cut off by the end of the file";
    return F_BAD;
  }
  if (tg__wal_frame_crc(m + off, l) != tg__ld32(m + off + 4)) {
    *what = "frame CRC mismatch";
    return F_BAD;
  }
  size_t pad_end = off + tg__align8(l);
  if (pad_end > size) pad_end = size;
  if (!all_zero(m + off + l, pad_end - (off + l))) {
    *what = "non-zero frame padding";
    return F_BAD;
  }
  *len = l;
  return F_VALID;
}

/* ---- the iterator ---------------------------------------------------------- */

static void unmap_cur(tg_wal_reader *r) {
#ifdef TG_WAL_READER_MALLOC
  if (r->mapped) free((void *)r->map);
#else
  if (r->mapped && r->map) munmap((void *)r->map, r->size);
#endif
  r->mapped = 0;
  r->map = NULL;
  r->size = 0;
}

static int finish(tg_wal_reader *r, int reason, int err, size_t off, const char *what) {
  r->ended = 1;
  r->end.segment_bytes = r->seg_bytes;
  r->end.first_lsn = r->end.last_lsn ? r->start : 0;
  r->end.reason = reason;
  r->end.err = err;
  r->end.offset = off;
  r->end.what = what;
  if (r->nseg) {
    size_t i = r->cur < r->nseg ? r->cur : r->nseg - 1;
    r->end.segment = r->segs[i];
    tg__wal_seg_name(r->end.path, r->segs[i]);
  }
  unmap_cur(r);
  return 0;
}

/* The log does not continue with `expected` but with `found`: record both,
   so callers judge a gap by LSNs rather than by the message. */
static int finish_order(tg_wal_reader *r, size_t off, uint64_t expected, uint64_t found,
                        const char *what) {
  r->end.expected_lsn = expected;
  r->end.found_lsn = found;
  return finish(r, TG_WAL_END_CORRUPT, TG_ECORRUPT, off, what);
}

/* Where the data of the file fd (size bytes) ends: after it, only holes,
   which read as zeros (SEEK_DATA/SEEK_HOLE; a preallocated segment's
   unwritten space is a hole until it is written or read). Scanning the
   zeros of a 64 MiB segment through the mapping instead cost 80-170 ms an
   open (measured: 100,000 records, default segment). size when the file
   system cannot tell. */
static size_t data_end(int fd, size_t size) {
#ifdef TG_WAL_READER_MALLOC
  (void)fd;
  return size; /* fuzzing: every byte is read */
#else
  off_t pos = 0, end = 0; /* end: the end of the last data region so far */
  for (int i = 0; i < 4096; i++) { /* a few regions; many: give up */
    if ((size_t)pos >= size) return (size_t)end < size ? (size_t)end : size;
    off_t d = lseek(fd, pos, SEEK_DATA);
    if (d < 0) return errno == ENXIO ? (size_t)end : size; /* ENXIO: no more data */
    off_t h = lseek(fd, d, SEEK_HOLE);
    if (h < 0) return size;
    end = h;
    pos = h;
  }
  return size;
#endif
}

/* Open and map segs[cur]; 1 = mapped, 0 = ended (it cannot be read). */
static int map_segment(tg_wal_reader *r) {
  char path[4096];
  r->seg_bytes = 0;
  char name[TG__WAL_NAME_LEN + 1];
  uint64_t first = r->segs[r->cur];
  tg__wal_seg_name(name, first);
  if ((size_t)snprintf(path, sizeof path, "%s/%s", r->dir, name) >= sizeof path)
    return finish(r, TG_WAL_END_IO, -ENAMETOOLONG, 0, "path too long");
  /* O_NOFOLLOW: a link planted at a segment's name is not read through;
     O_NONBLOCK: a FIFO there must not block the open (it is refused below,
     as anything that is not a regular file). */
  int fd = tg__openat(AT_FDCWD, path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0);
  /* ELOOP: O_NOFOLLOW refused a link, which "too many levels of symbolic
     links" would not tell a reader; what to do is to put the file itself
     there, so it stays an I/O end (not damage to cut). */
  if (fd == -ELOOP)
    return finish(r, TG_WAL_END_IO, fd, 0, "segment is a symbolic link, refused and not followed");
  if (fd < 0) return finish(r, TG_WAL_END_IO, fd, 0, "cannot open segment");
  struct stat st;
  if (fstat(fd, &st) < 0) {
    int e = -errno;
    close(fd);
    return finish(r, TG_WAL_END_IO, e, 0, "cannot stat segment");
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return finish(r, TG_WAL_END_CORRUPT, TG_ECORRUPT, 0, "segment is not a regular file");
  }
  r->size = (size_t)st.st_size;
  r->data_end = data_end(fd, r->size);
  r->map = NULL;
#ifdef TG_WAL_READER_MALLOC
  /* Fuzzing: an exact-size heap copy, so ASan sees any read past the end
     (a mapping's last page would hide it). */
  if (r->size > 0) {
    unsigned char *m = malloc(r->size);
    if (!m || pread(fd, m, r->size, 0) != (ssize_t)r->size) {
      free(m);
      close(fd);
      r->size = 0;
      return finish(r, TG_WAL_END_IO, -EIO, 0, "cannot read segment");
    }
    r->map = m;
  }
#else
  if (r->size > 0) {
    void *m = mmap(NULL, r->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      int e = -errno;
      close(fd);
      r->size = 0;
      return finish(r, TG_WAL_END_IO, e, 0, "cannot map segment");
    }
    madvise(m, r->size, MADV_SEQUENTIAL);
    r->map = m;
  }
#endif
  close(fd);
  r->mapped = 1;
  return 1;
}

/* Open and map segs[cur] and check its header; 1 = ready, 0 = ended. */
static int open_segment(tg_wal_reader *r) {
  if (!map_segment(r)) return 0;
  uint64_t first = r->segs[r->cur];
  const unsigned char *h = r->map;
  if (r->size < TG__WAL_HDR)
    return finish(r, TG_WAL_END_CORRUPT, TG_ECORRUPT, 0, "segment shorter than its header");
  if (memcmp(h + TG__SH_MAGIC, TG__WAL_MAGIC, 8) != 0)
    return finish(r, TG_WAL_END_CORRUPT, TG_ECORRUPT, 0, "bad segment magic");
  if (tg__crc32(0, h, TG__SH_CRC) != tg__ld32(h + TG__SH_CRC))
    return finish(r, TG_WAL_END_CORRUPT, TG_ECORRUPT, 0, "segment header CRC mismatch");
  uint32_t ver = tg__ld32(h + TG__SH_VERSION);
  if (ver != TG__WAL_VERSION && ver != TG__WAL_VERSION_1)
    return finish(r, TG_WAL_END_CORRUPT, TG_EVERSION, 0, "unsupported format version");
  if (tg__ld32(h + TG__SH_HDRSIZE) != TG__WAL_HDR || tg__ld32(h + TG__SH_ALIGN) != TG__WAL_ALIGN)
    return finish(r, TG_WAL_END_CORRUPT, TG_ECORRUPT, 0, "bad header size or alignment");
  uint64_t hl = tg__ld64(h + TG__SH_FIRST_LSN);
  if (hl != first || hl > TG_WAL_MAX_LSN)
    return finish(r, TG_WAL_END_CORRUPT, TG_ECORRUPT, 0,
                  "first LSN in the header does not match the file name");
  r->seg_bytes = tg__ld64(h + TG__SH_PREALLOC);
  if (r->expect && first != r->expect)
    return finish_order(r, 0, r->expect, first,
                        first > r->expect ? "LSN gap between segments"
                                          : "segments overlap (LSN out of order)");
  r->expect = first;
  r->seg_first = first;
  r->off = TG__WAL_HDR;
  r->ver = ver;
  /* A version-2 header is fdatasynced before the segment's name exists. */
  r->dur = ver == TG__WAL_VERSION_1 ? 0 : TG__WAL_HDR;
  return 1;
}

/* Whether the valid frame at m + q is a marker (version 2), and if it is a
   well-formed one: its kind, offset and LSN. A marker must vouch only for
   bytes before itself. Returns 0 (a record), 1 (a well-formed marker) or -1
   (a marker that is not well formed). */
static int marker_at(const unsigned char *m, size_t q, uint32_t len, int *kind,
                     uint64_t *off, uint64_t *lsn) {
  uint64_t lt = tg__ld64(m + q + 8);
  if (lt & TG_WAL_MAX_LSN) return 0;
  *kind = (int)(lt >> 56);
  if (len != TG__WAL_MARKER_LEN) return -1;
  *off = tg__ld64(m + q + 16);
  *lsn = tg__ld64(m + q + 24);
  if (*kind != TG__WAL_MARK_DURABLE && *kind != TG__WAL_MARK_SWITCH) return -1;
  if (*off < TG__WAL_HDR || *off > q || (*off & (TG__WAL_ALIGN - 1))) return -1;
  if (*lsn > TG_WAL_MAX_LSN) return -1;
  return 1;
}

/* How a version-2 segment read as the log's last ends, given that reading
   stopped at offset o (k: F_END, zeros or the end of the file; F_BAD: a bad
   frame, why in `what`). Every valid frame after o is looked for, and every
   marker among them raises the durable point (see VALIDITY in wal.c):
     o before the durable point          -> CORRUPT (damage to durable data);
     zeros, and no valid frame after     -> CLEAN;
     otherwise (garbage after the point) -> TORN.
   Sets *what and r->end's valid_offset and durable_offset. */
static int classify_tail(tg_wal_reader *r, size_t o, int k, const char **what) {
  uint64_t d = r->dur;
  size_t valid_at = 0;
  int nonzero = 0; /* a non-zero byte after o (zeros at o: k == F_END) */
  size_t q = o + TG__WAL_ALIGN;
  size_t lim = r->data_end < r->size ? tg__align8(r->data_end) : r->size;
  if (lim > r->size) lim = r->size;
  while (q < lim && r->size - q >= TG__WAL_ALIGN) {
    /* A valid frame's length word is non-zero: skip zero words cheaply (the
       preallocated rest of a segment is mostly zeros). */
    if (tg__ld64(r->map + q) == 0) {
      q += TG__WAL_ALIGN;
      continue;
    }
    nonzero = 1;
    uint32_t l2 = 0;
    const char *w2 = NULL;
    if (frame_at(r->map, r->size, q, &l2, &w2) != F_VALID) {
      q += TG__WAL_ALIGN;
      continue;
    }
    if (!valid_at) valid_at = q;
    int kind;
    uint64_t moff, mlsn;
    if (marker_at(r->map, q, l2, &kind, &moff, &mlsn) == 1 && moff > d) d = moff;
    q += tg__align8(l2);
  }
  if (q < lim && !all_zero(r->map + q, lim - q)) nonzero = 1; /* < 8 bytes */
  r->end.valid_offset = valid_at;
  r->end.durable_offset = d;
  if (o < d) {
    if (k == F_END) *what = "zeroed frame header before the durable point";
    return TG_WAL_END_CORRUPT;
  }
  if (k == F_END && !nonzero) {
    /* The writer preallocates every segment (and recovery preallocates
       the one it cut again), so a last segment whose data runs to the end
       of a file shorter than its header's size was cut short - a copy
       stopped part way, a truncation: frames after the cut may have been
       lost with the markers that made them durable. Nothing is left to
       cut, but the loss must be reported, not read as a clean end. */
    if (o >= r->size && r->seg_bytes > r->size) {
      *what = "the segment ends before its preallocated size (cut short)";
      return TG_WAL_END_TORN;
    }
    return TG_WAL_END_CLEAN;
  }
  if (k == F_END)
    *what = valid_at ? "zeroed frame header followed by a valid frame, after the durable point"
                     : "zeroed frame header followed by non-zero bytes, after the durable point";
  return TG_WAL_END_TORN;
}

/* Whether segs[cur], just opened, holds no well-formed marker frame at any
   offset after its header: what an interrupted switch leaves (its records,
   if any, were written before the switch was sealed, and none of them was
   ever published durable; see SWITCH SEALING in wal.c). */
static int segment_unsealed(tg_wal_reader *r) {
  for (size_t q = TG__WAL_HDR; q < r->data_end && r->size - q >= TG__WAL_FRAME_HDR;) {
    uint32_t l2 = 0;
    const char *w2 = NULL;
    if (tg__ld32(r->map + q) && frame_at(r->map, r->size, q, &l2, &w2) == F_VALID) {
      int kind;
      uint64_t moff, mlsn;
      if (marker_at(r->map, q, l2, &kind, &moff, &mlsn) == 1) return 0;
      q += tg__align8(l2);
      continue;
    }
    q += TG__WAL_ALIGN;
  }
  return 1;
}

/* Reading of a version-2 segment stopped at r->off without a switch marker
   (k, what as for classify_tail). Returns 0 (the log ended; r->end says
   how). Only the last segment may end so - or the one before it, when the
   last holds no marker: a switch whose marker never became durable (see
   RECOVERY and SWITCH SEALING in wal.c); that segment is then not part of
   the log. */
static int end_v2(tg_wal_reader *r, int k, const char *what) {
  size_t o = r->off;
  if (r->cur + 1 < r->nseg && r->cur + 2 != r->nseg)
    return finish(r, TG_WAL_END_CORRUPT, TG_ECORRUPT, o,
                  k == F_END ? "segment ends without a switch marker" : what);
  int reason = classify_tail(r, o, k, &what);
  if (r->cur + 1 == r->nseg || reason == TG_WAL_END_CORRUPT)
    return finish(r, reason, reason == TG_WAL_END_CORRUPT ? TG_ECORRUPT : 0, o, what);
  /* The next segment is the last: this one may end here only if that one
     holds no marker. */
  size_t prev = r->cur;
  uint64_t prev_bytes = r->seg_bytes;
  tg_wal_end keep = r->end;
  unmap_cur(r);
  r->cur++;
  if (!open_segment(r)) return 0; /* its header is bad: that is the end */
  int empty = segment_unsealed(r);
  uint64_t empty_first = r->segs[r->cur];
  unmap_cur(r);
  r->cur = prev;
  r->end = keep;
  r->seg_bytes = prev_bytes;
  if (!empty)
    return finish(r, TG_WAL_END_CORRUPT, TG_ECORRUPT, o,
                  k == F_END ? "segment ends without a switch marker" : what);
  finish(r, reason, 0, o, what);
  r->end.empty_segment = empty_first;
  return 0;
}

int tg_wal_reader_open(tg_wal_reader **out, const char *dir, uint64_t from_lsn) {
  *out = NULL;
  tg_wal_reader *r = calloc(1, sizeof *r);
  if (!r) return TG_ENOMEM;
  r->dir = strdup(dir);
  if (!r->dir) {
    free(r);
    return TG_ENOMEM;
  }
  int rc = tg__wal_list(dir, &r->segs, &r->nseg);
  if (rc) {
    tg_wal_reader_close(r);
    return rc;
  }
  r->from = from_lsn;
  if (r->nseg == 0) {
    finish(r, TG_WAL_END_CLEAN, 0, 0, "no segments");
  } else if (from_lsn) {
    if (r->segs[0] > from_lsn) {
      r->cur = 0;
      finish_order(r, 0, from_lsn, r->segs[0],
                   "records are missing before the oldest segment");
    } else {
      size_t i = r->nseg - 1;
      while (r->segs[i] > from_lsn) i--;
      r->cur = i;
    }
  }
  if (r->nseg) r->start = r->segs[r->cur];
  *out = r;
  return 0;
}

int tg_wal_reader_next(tg_wal_reader *r, tg_wal_record *rec) {
  if (r->ended) return 0;
  for (;;) {
    if (!r->mapped && !open_segment(r)) return 0;
    uint32_t len = 0;
    const char *what = NULL;
    int k = frame_at(r->map, r->size, r->off, &len, &what);
    if (r->ver != TG__WAL_VERSION_1) {
      int kind = 0;
      uint64_t moff = 0, mlsn = 0;
      int mk = k == F_VALID ? marker_at(r->map, r->off, len, &kind, &moff, &mlsn) : 0;
      if (mk < 0 || (mk == 1 && kind == TG__WAL_MARK_DURABLE && mlsn >= r->expect)) {
        k = F_BAD;
        what = "malformed marker frame";
      }
      if (k != F_VALID) {
        end_v2(r, k, what ? what : "end of data");
        return 0;
      }
      if (mk == 1 && kind == TG__WAL_MARK_DURABLE) {
        if (moff > r->dur) r->dur = moff;
        r->off += TG__WAL_MARKER_LEN;
        continue;
      }
      if (mk == 1) { /* SWITCH: this segment ends; the next starts at mlsn */
        if (mlsn != r->expect)
          return finish_order(r, r->off, r->expect, mlsn,
                              "the switch marker names another first LSN");
        if (r->cur + 1 >= r->nseg)
          return finish_order(r, r->off, mlsn, 0,
                              "the next segment, named by a switch marker, is missing");
        unmap_cur(r);
        r->cur++;
        continue;
      }
    } else if (k == F_END) {
      if (r->cur + 1 >= r->nseg) return finish(r, TG_WAL_END_CLEAN, 0, r->off, "end of data");
      unmap_cur(r);
      r->cur++;
      continue;
    }
    if (k == F_BAD) { /* version 1 */
      if (r->cur + 1 < r->nseg)
        return finish(r, TG_WAL_END_CORRUPT, TG_ECORRUPT, r->off, what);
      /* Last segment: torn only if nothing valid follows the bad frame. */
      for (size_t q = r->off + TG__WAL_ALIGN; q < r->size && q < r->data_end; q += TG__WAL_ALIGN) {
        uint32_t l2;
        const char *w2;
        if (frame_at(r->map, r->size, q, &l2, &w2) == F_VALID) {
          r->end.valid_offset = q;
          return finish(r, TG_WAL_END_CORRUPT, TG_ECORRUPT, r->off, what);
        }
      }
      return finish(r, TG_WAL_END_TORN, 0, r->off, what);
    }
    const unsigned char *f = r->map + r->off;
    uint64_t lt = tg__ld64(f + 8);
    uint64_t lsn = lt & TG_WAL_MAX_LSN;
    if (lsn != r->expect)
      return finish_order(r, r->off, r->expect, lsn,
                          lsn > r->expect ? "LSN gap" : "LSN out of order");
    r->expect++;
    r->end.last_lsn = lsn;
    size_t at = r->off;
    r->off += tg__align8(len); /* may pass the end of the file by < 8 */
    if (lsn < r->from) continue;
    rec->lsn = lsn;
    rec->type = (uint8_t)(lt >> 56);
    rec->len = len - TG__WAL_FRAME_HDR;
    rec->payload = f + TG__WAL_FRAME_HDR;
    rec->segment = r->seg_first;
    rec->offset = at;
    return 1;
  }
}

const tg_wal_end *tg_wal_reader_end(const tg_wal_reader *r) { return &r->end; }

size_t tg_wal_reader_segments(const tg_wal_reader *r) { return r->nseg; }

uint64_t tg_wal_reader_segment(const tg_wal_reader *r, size_t i) {
  return i < r->nseg ? r->segs[i] : 0;
}

int tg_wal_segment_name(uint64_t first_lsn, char *buf, size_t len) {
  if (len < TG__WAL_NAME_LEN + 1) return TG_EINVAL;
  tg__wal_seg_name(buf, first_lsn);
  return 0;
}

/* ---- salvage scan ------------------------------------------------------------ */

int tg_wal_salvage_scan(const char *dir, uint64_t segment, uint64_t offset,
                        uint64_t above_lsn, tg_wal_salvage *out) {
  tg_wal_reader *r = NULL;
  memset(out, 0, sizeof *out);
  int rc = tg_wal_reader_open(&r, dir, 0);
  if (rc) return rc;
  size_t i = 0;
  while (i < r->nseg && r->segs[i] != segment) i++;
  if (i == r->nseg) {
    rc = -ENOENT;
    goto cleanup;
  }
  /* The reader's own mapping code, one segment at a time; its header is
     not required to be valid (a bad header is one thing a cut removes). */
  for (r->cur = i; r->cur < r->nseg; r->cur++) {
    if (!map_segment(r)) {
      rc = r->end.err ? r->end.err : -EIO;
      goto cleanup;
    }
    size_t q = r->cur == i ? (size_t)(offset & ~(uint64_t)(TG__WAL_ALIGN - 1)) : 0;
    if (offset > r->size && r->cur == i) q = r->size;
    while (q < r->size && r->size - q >= TG__WAL_FRAME_HDR) {
      uint32_t len = 0;
      const char *what = NULL;
      if (frame_at(r->map, r->size, q, &len, &what) != F_VALID) {
        q += TG__WAL_ALIGN;
        continue;
      }
      uint64_t lsn = tg__ld64(r->map + q + 8) & TG_WAL_MAX_LSN;
      if (lsn == 0) { /* a marker frame, no record */
        q += tg__align8(len);
        continue;
      }
      out->frames++;
      if (lsn > above_lsn) out->above++;
      if (!out->min_lsn || lsn < out->min_lsn) out->min_lsn = lsn;
      if (lsn > out->max_lsn) out->max_lsn = lsn;
      q += tg__align8(len);
    }
    unmap_cur(r);
  }
cleanup:
  tg_wal_reader_close(r);
  return rc;
}

void tg_wal_reader_close(tg_wal_reader *r) {
  if (!r) return;
  unmap_cur(r);
  free(r->segs);
  free(r->dir);
  free(r);
}

const char *tg_wal_end_reason_name(int reason) {
  switch (reason) {
  case TG_WAL_END_NONE: return "not ended";
  case TG_WAL_END_CLEAN: return "clean";
  case TG_WAL_END_TORN: return "torn tail";
  case TG_WAL_END_CORRUPT: return "corrupt";
  case TG_WAL_END_IO: return "io";
  default: return "unknown";
  }
}
