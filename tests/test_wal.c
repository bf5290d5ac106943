/*
 * The write-ahead log: format round trips, torn tails, corruption, crash
 * durability, group commit, injected I/O failures and backpressure.
 * Every test works in its own temporary directory under /tmp.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include <cmocka.h>

#include "tokengraph/tokengraph.h"
#include "tokengraph/wal.h"
#include "common/crc32.h"
#include "common/io.h"
#include "wal/wal_internal.h"
#include "wal/wal_store.h"

/* ---- helpers ----------------------------------------------------------------- */

typedef struct fixture {
  char dir[64];  /* the WAL directory */
} fixture;

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(p);
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (!f) return -1;
  strcpy(f->dir, "/tmp/tg-test-wal-XXXXXX");
  if (!mkdtemp(f->dir)) return -1;
  tg__io_reset();
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  tg__io_reset();
  nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  free(f);
  return 0;
}

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* How long any wait on another thread may take before the test fails
   (generous: sanitizer builds on a loaded 2-core machine). */
#define DEADLINE_NS (30ull * 1000000000ull)

/* Poll until cond holds; fail the test at the deadline rather than hang.
   The 100 us pause only spaces the polls, it orders nothing. */
#define WAIT_FOR(cond)                                                     \
  do {                                                                     \
    uint64_t wait_t0_ = mono_ns();                                         \
    while (!(cond)) {                                                      \
      if (mono_ns() - wait_t0_ > DEADLINE_NS) fail_msg("timed out waiting for %s", #cond); \
      usleep(100);                                                         \
    }                                                                      \
  } while (0)

static uint64_t stat_of(tg_wal *w, size_t field) {
  tg_wal_stats st;
  tg_wal_stats_get(w, &st);
  uint64_t v;
  memcpy(&v, (const char *)&st + field, sizeof v);
  return v;
}
#define STAT(w, f) stat_of((w), offsetof(tg_wal_stats, f))

/* The payload of the record with this LSN: a size that varies (never making
   len a multiple of 256, so a frame's first byte is never 0) and bytes
   derived from the LSN. */
static size_t size_for(uint64_t lsn) {
  static const size_t sizes[] = {64, 0, 1, 7, 8, 9, 95, 96, 97, 130, 300, 1000, 15, 64, 33};
  size_t s = sizes[lsn % (sizeof sizes / sizeof sizes[0])];
  if ((s + 16) % 256 == 0) s++;
  return s;
}

static void fill(unsigned char *p, size_t n, uint64_t lsn) {
  for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(lsn * 31u + i * 7u + 1u);
}

static uint8_t type_for(uint64_t lsn) { return (uint8_t)(lsn * 13u); }

static tg_wal *open_wal(const char *dir, int level, uint64_t seg, tg_wal_open_info *info) {
  tg_wal_config c;
  tg_wal_config_init(&c);
  c.level = level;
  c.segment_bytes = seg;
  c.ring_slots = 1024;
  tg_wal *w = NULL;
  assert_int_equal(tg_wal_open(&w, dir, &c, info), 0);
  assert_non_null(w);
  return w;
}

/* Append records with LSNs `from`..`from+n-1` (checked), payloads as above. */
static void append_n(tg_wal *w, uint64_t from, uint64_t n) {
  unsigned char buf[1024];
  for (uint64_t lsn = from; lsn < from + n; lsn++) {
    size_t sz = size_for(lsn);
    fill(buf, sz, lsn);
    uint64_t got = 0;
    assert_int_equal(tg_wal_append(w, type_for(lsn), buf, sz, &got), 0);
    assert_int_equal(got, lsn);
  }
}

/* Read dir from `from`; check every record is the expected one; return the
   count and copy the end. */
static uint64_t read_check(const char *dir, uint64_t from, uint64_t first_expected,
                           tg_wal_end *end) {
  tg_wal_reader *r = NULL;
  tg_wal_record rec;
  unsigned char buf[1024];
  uint64_t n = 0;
  assert_int_equal(tg_wal_reader_open(&r, dir, from), 0);
  while (tg_wal_reader_next(r, &rec) == 1) {
    uint64_t lsn = first_expected + n;
    assert_int_equal(rec.lsn, lsn);
    assert_int_equal(rec.type, type_for(lsn));
    assert_int_equal(rec.len, size_for(lsn));
    fill(buf, rec.len, lsn);
    assert_memory_equal(rec.payload, buf, rec.len);
    n++;
  }
  if (end) *end = *tg_wal_reader_end(r);
  tg_wal_reader_close(r);
  return n;
}

static char *seg_path(const char *dir, uint64_t first, char *out, size_t n) {
  char name[TG__WAL_NAME_LEN + 1];
  tg__wal_seg_name(name, first);
  snprintf(out, n, "%s/%s", dir, name);
  return out;
}

static size_t count_segments(const char *dir) {
  uint64_t *v = NULL;
  size_t n = 0;
  assert_int_equal(tg__wal_list(dir, &v, &n), 0);
  free(v);
  return n;
}

static unsigned char *slurp(const char *path, size_t *n) {
  int fd = open(path, O_RDONLY);
  assert_true(fd >= 0);
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  unsigned char *b = malloc((size_t)st.st_size + 1);
  assert_non_null(b);
  assert_int_equal(pread(fd, b, (size_t)st.st_size, 0), st.st_size);
  close(fd);
  *n = (size_t)st.st_size;
  return b;
}

static void spit(const char *path, const unsigned char *b, size_t n) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, b, n), (ssize_t)n);
  close(fd);
}

/* Frame offsets of a segment image (valid frames from 64 on, marker frames
   included unless records_only). */
static size_t frame_offsets_of(const unsigned char *b, size_t n, size_t *offs, size_t max,
                               int records_only) {
  size_t k = 0, o = TG__WAL_HDR;
  while (o + 16 <= n && k < max) {
    uint32_t len = tg__ld32(b + o);
    if (len == 0) break;
    if (!records_only || (tg__ld64(b + o + 8) & TG_WAL_MAX_LSN)) offs[k++] = o;
    o += tg__align8(len);
  }
  return k;
}
#define frame_offsets(b, n, offs, max) frame_offsets_of((b), (n), (offs), (max), 0)
#define record_offsets(b, n, offs, max) frame_offsets_of((b), (n), (offs), (max), 1)

/* ---- the CRC ----------------------------------------------------------------- */

static void test_wal_crc_matches_zlib(void **state) {
  (void)state;
  unsigned char buf[1200];
  for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)(i * 131u + 17u);
  for (size_t start = 0; start < 8; start++)
    for (size_t n = 0; n + start <= 1100; n++) {
      uint32_t seed = (uint32_t)(n * 2654435761u);
      assert_int_equal(tg__crc32(seed, buf + start, n), (uint32_t)crc32(seed, buf + start, (uInt)n));
    }
}

/* ---- round trips --------------------------------------------------------------- */

static void test_wal_round_trip_of_many_sizes_across_segments(void **state) {
  fixture *f = *state;
  tg_wal_open_info info;
  tg_wal *w = open_wal(f->dir, TG_WAL_RELAXED, 8192, &info);
  assert_int_equal(info.next_lsn, 1);
  assert_int_equal(info.last_lsn, 0);
  append_n(w, 1, 3000);
  assert_int_equal(tg_wal_sync(w, 0), 0);
  tg_wal_stats st;
  assert_int_equal(tg_wal_stats_get(w, &st), 0);
  assert_int_equal(st.records, 3000);
  assert_int_equal(st.durable_lsn, 3000);
  assert_true(st.segments > 10);
  assert_int_equal(tg_wal_close(w), 0);
  assert_true(count_segments(f->dir) > 10);

  tg_wal_end end;
  assert_int_equal(read_check(f->dir, 0, 1, &end), 3000);
  assert_int_equal(end.reason, TG_WAL_END_CLEAN);
  assert_int_equal(end.last_lsn, 3000);

  /* Reopen: appends continue with the next LSN, in the same last segment. */
  w = open_wal(f->dir, TG_WAL_BALANCED, 8192, &info);
  assert_int_equal(info.last_lsn, 3000);
  assert_int_equal(info.next_lsn, 3001);
  assert_int_equal(info.torn_tail, 0);
  append_n(w, 3001, 500);
  assert_int_equal(tg_wal_close(w), 0);
  assert_int_equal(read_check(f->dir, 0, 1, &end), 3500);
  assert_int_equal(end.reason, TG_WAL_END_CLEAN);

  /* Reading from an LSN yields exactly the records from there. */
  assert_int_equal(read_check(f->dir, 2500, 2500, &end), 1001);
  assert_int_equal(end.reason, TG_WAL_END_CLEAN);
}

static void test_wal_records_larger_than_a_segment_and_the_buffer_round_trip(void **state) {
  fixture *f = *state;
  tg_wal *w = open_wal(f->dir, TG_WAL_BALANCED, 8192, NULL);
  size_t sizes[] = {20000, 5, 3u << 20, 8000, 8200, 97, TG_WAL_MAX_PAYLOAD};
  size_t n = sizeof sizes / sizeof sizes[0];
  unsigned char *buf = malloc(TG_WAL_MAX_PAYLOAD);
  assert_non_null(buf);
  for (size_t i = 0; i < n; i++) {
    fill(buf, sizes[i], i + 1);
    uint64_t lsn;
    assert_int_equal(tg_wal_append(w, 7, buf, sizes[i], &lsn), 0);
    assert_int_equal(lsn, i + 1);
  }
  assert_int_equal(tg_wal_append(w, 7, buf, (size_t)TG_WAL_MAX_PAYLOAD + 1, NULL), TG_EINVAL);
  assert_int_equal(tg_wal_close(w), 0);
  tg_wal_reader *r;
  tg_wal_record rec;
  assert_int_equal(tg_wal_reader_open(&r, f->dir, 0), 0);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(tg_wal_reader_next(r, &rec), 1);
    assert_int_equal(rec.lsn, i + 1);
    assert_int_equal(rec.len, sizes[i]);
    fill(buf, sizes[i], i + 1);
    assert_memory_equal(rec.payload, buf, sizes[i]);
  }
  assert_int_equal(tg_wal_reader_next(r, &rec), 0);
  assert_int_equal(tg_wal_reader_end(r)->reason, TG_WAL_END_CLEAN);
  tg_wal_reader_close(r);
  free(buf);
}

/* ---- torn tails ------------------------------------------------------------------- */

static void test_wal_torn_tail_is_truncated(void **state) {
  fixture *f = *state;
  enum { N = 40 };
  tg_wal *w = open_wal(f->dir, TG_WAL_RELAXED, 65536, NULL);
  append_n(w, 1, N);
  assert_int_equal(tg_wal_close(w), 0);
  char path[256];
  seg_path(f->dir, 1, path, sizeof path);
  size_t size;
  unsigned char *img = slurp(path, &size);
  size_t offs[N + 1];
  assert_int_equal(record_offsets(img, size, offs, N + 1), N);
  size_t end_of_log = offs[N - 1] + tg__align8(16 + size_for(N));
  offs[N] = end_of_log;

  /* Every byte offset within the last 5 records, two ways: the file cut
     there, and the bytes from there on zeroed (a write that only partly
     reached the disk, in preallocated space). Nothing was fdatasynced
     before close (RELAXED), so all of it is after the durable point; the
     marker frame close wrote after the records goes with the tail. */
  unsigned char *copy = malloc(size);
  assert_non_null(copy);
  for (size_t t = offs[N - 5]; t <= end_of_log; t++) {
    uint64_t complete = 0;
    while (complete < N && offs[complete] + 16 + size_for(complete + 1) <= t) complete++;
    int boundary = t <= offs[complete];
    for (int mode = 0; mode < 2; mode++) {
      memcpy(copy, img, size);
      size_t n = size;
      if (mode == 0) n = t;
      else memset(copy + t, 0, size - t);
      spit(path, copy, n);
      tg_wal_end end;
      assert_int_equal(read_check(f->dir, 0, 1, &end), complete);
      /* A file cut at a frame boundary is shorter than its preallocation:
         frames may have gone with it, so that is a torn tail too, with
         nothing to cut; zeros from a boundary on are a clean end. */
      int cut_short = boundary && mode == 0;
      if (boundary && !cut_short) {
        assert_int_equal(end.reason, TG_WAL_END_CLEAN);
      } else {
        assert_int_equal(end.reason, TG_WAL_END_TORN);
        assert_int_equal(end.offset, offs[complete]);
        assert_int_equal(end.segment, 1);
      }
      assert_int_equal(end.last_lsn, complete);

      if ((t + (size_t)mode) % 5 == 0) {
        /* Opening cuts the tail and continues with the next LSN. */
        tg_wal_open_info info;
        w = open_wal(f->dir, TG_WAL_RELAXED, 65536, &info);
        assert_int_equal(info.torn_tail, !boundary || cut_short);
        assert_int_equal(info.next_lsn, complete + 1);
        /* The cut bytes were kept beside the segment, exactly. */
        assert_int_equal(info.kept_name[0] != 0, !boundary);
        if (!boundary) {
          char kp[300];
          snprintf(kp, sizeof kp, "%s/%s", f->dir, info.kept_name);
          size_t kn;
          unsigned char *kb = slurp(kp, &kn);
          assert_int_equal(kn, info.kept_bytes);
          assert_true(kn >= n - offs[complete]);
          assert_memory_equal(kb, copy + offs[complete], n - offs[complete]);
          free(kb);
          assert_int_equal(unlink(kp), 0);
        }
        append_n(w, complete + 1, 2);
        assert_int_equal(tg_wal_close(w), 0);
        assert_int_equal(read_check(f->dir, 0, 1, &end), complete + 2);
        assert_int_equal(end.reason, TG_WAL_END_CLEAN);
      }
    }
  }
  free(copy);
  free(img);
}

/* ---- corruption --------------------------------------------------------------------- */

static void test_wal_flipped_bit_anywhere_is_detected(void **state) {
  fixture *f = *state;
  enum { N = 60 };
  tg_wal *w = open_wal(f->dir, TG_WAL_RELAXED, 4096, NULL);
  append_n(w, 1, N);
  assert_int_equal(tg_wal_close(w), 0);
  uint64_t *segs;
  size_t nseg;
  assert_int_equal(tg__wal_list(f->dir, &segs, &nseg), 0);
  assert_true(nseg >= 2);
  uint64_t flips = 0;
  for (size_t s = 0; s < nseg; s++) {
    char path[256];
    seg_path(f->dir, segs[s], path, sizeof path);
    size_t size;
    unsigned char *img = slurp(path, &size);
    size_t offs[N + 1];
    size_t k = frame_offsets(img, size, offs, N + 1);
    size_t used = offs[k - 1] + tg__align8(tg__ld32(img + offs[k - 1]));
    size_t roffs[N + 1];
    size_t rk = record_offsets(img, size, roffs, N + 1);
    size_t rec_end = roffs[rk - 1] + tg__align8(tg__ld32(img + roffs[rk - 1]));
    /* ... and the 16 zero bytes that mark the end of the data. Flips past
       them are in unused space, after the end marker: they cannot be
       detected, and cannot yield a record either. */
    size_t limit = used + 16 <= size ? used + 16 : size;
    /* In an earlier segment the data ends with its switch marker: nothing
       after it is ever written or read. */
    if (s + 1 < nseg) limit = used;
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    for (size_t byte = 0; byte < limit; byte++) {
      for (int bit = 0; bit < 8; bit++) {
        img[byte] ^= (unsigned char)(1u << bit);
        assert_int_equal(pwrite(fd, img + byte, 1, (off_t)byte), 1);
        tg_wal_end end;
        uint64_t got = read_check(f->dir, 0, 1, &end); /* never a wrong record */
        assert_int_not_equal(end.reason, TG_WAL_END_CLEAN);
        /* (the last frame may be the marker close wrote: losing it loses
           no record) */
        assert_true(got < N || byte >= rec_end);
        /* A bad frame with valid data after it is corruption, not a tail. */
        if (s + 1 < nseg || byte < offs[k - 1]) assert_int_equal(end.reason, TG_WAL_END_CORRUPT);
        img[byte] ^= (unsigned char)(1u << bit);
        assert_int_equal(pwrite(fd, img + byte, 1, (off_t)byte), 1);
        flips++;
      }
    }
    close(fd);
    free(img);
  }
  assert_true(flips > 8 * 4096);
  free(segs);
}

static void test_wal_mid_log_corruption_is_reported_not_skipped(void **state) {
  fixture *f = *state;
  enum { N = 50 };
  tg_wal *w = open_wal(f->dir, TG_WAL_RELAXED, 65536, NULL);
  append_n(w, 1, N);
  assert_int_equal(tg_wal_close(w), 0);
  char path[256];
  seg_path(f->dir, 1, path, sizeof path);
  size_t size;
  unsigned char *img = slurp(path, &size);
  size_t offs[N];
  assert_int_equal(frame_offsets(img, size, offs, N), N);
  img[offs[20] + 16] ^= 0x40; /* a payload byte of LSN 21 */
  spit(path, img, size);

  tg_wal_end end;
  assert_int_equal(read_check(f->dir, 0, 1, &end), 20);
  assert_int_equal(end.reason, TG_WAL_END_CORRUPT);
  assert_int_equal(end.err, TG_ECORRUPT);
  assert_int_equal(end.segment, 1);
  assert_int_equal(end.offset, offs[20]);
  assert_int_equal(end.valid_offset, offs[21]);
  assert_string_equal(end.path, "00000000000000000001.wal");
  assert_non_null(end.what);

  /* Open refuses and changes nothing. */
  tg_wal *w2 = NULL;
  assert_int_equal(tg_wal_open(&w2, f->dir, NULL, NULL), TG_ECORRUPT);
  assert_null(w2);
  size_t size2;
  unsigned char *img2 = slurp(path, &size2);
  assert_int_equal(size2, size);
  assert_memory_equal(img, img2, size);
  free(img2);
  free(img);
}

static void test_wal_lsn_gap_between_segments_is_corruption(void **state) {
  fixture *f = *state;
  tg_wal *w = open_wal(f->dir, TG_WAL_RELAXED, 4096, NULL);
  append_n(w, 1, 200);
  assert_int_equal(tg_wal_close(w), 0);
  uint64_t *segs;
  size_t nseg;
  assert_int_equal(tg__wal_list(f->dir, &segs, &nseg), 0);
  assert_true(nseg >= 4);
  char path[256];
  assert_int_equal(unlink(seg_path(f->dir, segs[2], path, sizeof path)), 0);
  tg_wal_end end;
  assert_int_equal(read_check(f->dir, 0, 1, &end), segs[2] - 1);
  assert_int_equal(end.reason, TG_WAL_END_CORRUPT);
  assert_int_equal(end.segment, segs[3]);
  assert_string_equal(end.what, "LSN gap between segments");

  /* Asking for LSNs older than the oldest segment is reported too. */
  assert_int_equal(unlink(seg_path(f->dir, segs[0], path, sizeof path)), 0);
  assert_int_equal(read_check(f->dir, 1, 1, &end), 0);
  assert_int_equal(end.reason, TG_WAL_END_CORRUPT);
  free(segs);
}

static void test_wal_bad_magic_and_newer_version_are_reported(void **state) {
  fixture *f = *state;
  tg_wal *w = open_wal(f->dir, TG_WAL_RELAXED, 4096, NULL);
  append_n(w, 1, 10);
  assert_int_equal(tg_wal_close(w), 0);
  char path[256];
  seg_path(f->dir, 1, path, sizeof path);
  size_t size;
  unsigned char *img = slurp(path, &size);
  tg_wal_end end;

  img[0] = 'X';
  spit(path, img, size);
  assert_int_equal(read_check(f->dir, 0, 1, &end), 0);
  assert_int_equal(end.reason, TG_WAL_END_CORRUPT);
  assert_string_equal(end.what, "bad segment magic");
  img[0] = 'T';

  tg__st32(img + TG__SH_VERSION, TG__WAL_VERSION + 1);
  tg__st32(img + TG__SH_CRC, tg__crc32(0, img, TG__SH_CRC));
  spit(path, img, size);
  assert_int_equal(read_check(f->dir, 0, 1, &end), 0);
  assert_int_equal(end.err, TG_EVERSION);
  tg_wal *w2 = NULL;
  assert_int_equal(tg_wal_open(&w2, f->dir, NULL, NULL), TG_EVERSION);
  free(img);
}

/* ---- the durable point (format 2): recovery tests ------------------------------ */

/* The files of dir whose name contains `part`. */
static int count_named(const char *dir, const char *part) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "ls -1 '%s' | grep -c -- '%s'", dir, part);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  int n = -1;
  assert_int_equal(fscanf(p, "%d", &n), 1);
  pclose(p);
  return n;
}

static void test_wal_zeroed_sector_at_a_frame_boundary_of_a_strict_log_is_refused(void **state) {
  fixture *f = *state;
  enum { N = 200 };
  tg_wal *w = open_wal(f->dir, TG_WAL_STRICT, 1u << 20, NULL);
  append_n(w, 1, N);
  assert_int_equal(tg_wal_close(w), 0);
  char path[256];
  seg_path(f->dir, 1, path, sizeof path);
  size_t size;
  unsigned char *img = slurp(path, &size);
  size_t offs[N + 1];
  assert_int_equal(record_offsets(img, size, offs, N + 1), N);
  /* A record frame in the first half that starts a 512-byte sector, else
     the first record of the second quarter: the sector is zeroed whole. */
  size_t k = N / 4;
  for (size_t i = 1; i < N / 2; i++)
    if (offs[i] % 512 == 0) {
      k = i;
      break;
    }
  memset(img + offs[k], 0, 512);
  spit(path, img, size);

  /* Zeros there are not the end: valid frames follow, and the markers say
     everything up to the close was fdatasynced. */
  tg_wal_end end;
  assert_int_equal(read_check(f->dir, 0, 1, &end), k);
  assert_int_equal(end.reason, TG_WAL_END_CORRUPT);
  assert_int_equal(end.err, TG_ECORRUPT);
  assert_int_equal(end.segment, 1);
  assert_string_equal(end.path, "00000000000000000001.wal");
  assert_int_equal(end.offset, offs[k]);
  assert_true(end.valid_offset > offs[k]);
  assert_true(end.durable_offset > offs[k]);

  /* The open refuses, names the file and the offset, and cuts nothing. */
  tg_wal *w2 = NULL;
  tg_wal_open_info info;
  assert_int_equal(tg_wal_open(&w2, f->dir, NULL, &info), TG_ECORRUPT);
  assert_null(w2);
  assert_int_equal(info.corrupt_segment, 1);
  assert_int_equal(info.corrupt_offset, offs[k]);
  assert_non_null(info.corrupt_what);
  size_t size2;
  unsigned char *img2 = slurp(path, &size2);
  assert_int_equal(size2, size);
  assert_memory_equal(img, img2, size);
  assert_int_equal(count_named(f->dir, "broken"), 0);
  free(img2);
  free(img);
}

static void test_wal_deleted_last_segment_is_detected(void **state) {
  fixture *f = *state;
  tg_wal *w = open_wal(f->dir, TG_WAL_STRICT, 4096, NULL);
  append_n(w, 1, 120);
  assert_int_equal(tg_wal_close(w), 0);
  uint64_t *segs;
  size_t nseg;
  assert_int_equal(tg__wal_list(f->dir, &segs, &nseg), 0);
  assert_true(nseg >= 3);
  char path[256];
  assert_int_equal(unlink(seg_path(f->dir, segs[nseg - 1], path, sizeof path)), 0);

  /* The segment before it names it in its switch marker. */
  tg_wal_end end;
  assert_int_equal(read_check(f->dir, 0, 1, &end), segs[nseg - 1] - 1);
  assert_int_equal(end.reason, TG_WAL_END_CORRUPT);
  assert_int_equal(end.segment, segs[nseg - 2]);
  assert_int_equal(end.expected_lsn, segs[nseg - 1]);
  assert_string_equal(end.what, "the next segment, named by a switch marker, is missing");

  tg_wal *w2 = NULL;
  tg_wal_open_info info;
  assert_int_equal(tg_wal_open(&w2, f->dir, NULL, &info), TG_ECORRUPT);
  assert_int_equal(info.corrupt_segment, segs[nseg - 2]);
  assert_int_equal(count_segments(f->dir), nseg - 1); /* nothing was created */
  free(segs);
}

/* A RELAXED log of 2n records with an fdatasync after the first n, as a
   killed process leaves it: the marker close wrote is zeroed, so the
   durable point is where that fdatasync left it. *offs gets the records'
   frame offsets, *dur the durable point. */
static unsigned char *unclosed_log(fixture *f, size_t n, size_t *offs, size_t *size,
                                   size_t *dur) {
  tg_wal *w = open_wal(f->dir, TG_WAL_RELAXED, 65536, NULL);
  append_n(w, 1, n);
  assert_int_equal(tg_wal_sync(w, 0), 0);
  append_n(w, n + 1, n);
  assert_int_equal(tg_wal_close(w), 0);
  char path[256];
  seg_path(f->dir, 1, path, sizeof path);
  unsigned char *img = slurp(path, size);
  assert_int_equal(record_offsets(img, *size, offs, 2 * n + 1), 2 * n);
  size_t all[4 * 64 + 8];
  size_t k = frame_offsets(img, *size, all, sizeof all / sizeof all[0]);
  assert_int_equal(k, 2 * n + 2); /* the records and two markers */
  size_t last = all[k - 1];
  assert_int_equal(tg__ld64(img + last + 8) & TG_WAL_MAX_LSN, 0);
  memset(img + last, 0, TG__WAL_MARKER_LEN);
  /* The marker that opened the batch after the fdatasync. */
  size_t m = offs[n] - TG__WAL_MARKER_LEN;
  assert_int_equal(tg__ld64(img + m + 8), (uint64_t)TG__WAL_MARK_DURABLE << 56);
  *dur = (size_t)tg__ld64(img + m + 16);
  assert_int_equal(*dur, m);
  spit(path, img, *size);
  return img;
}

static void test_wal_torn_unsynced_frame_then_a_valid_one_is_cut_and_kept(void **state) {
  fixture *f = *state;
  enum { N = 20 };
  size_t offs[2 * N + 1], size, dur;
  unsigned char *img = unclosed_log(f, N, offs, &size, &dur);
  /* Record N + 5 torn (a byte of its payload lost), N + 6.. intact. */
  size_t t = offs[N + 4];
  img[t + 16] ^= 0x5a;
  char path[256];
  spit(seg_path(f->dir, 1, path, sizeof path), img, size);

  tg_wal_end end;
  assert_int_equal(read_check(f->dir, 0, 1, &end), N + 4);
  assert_int_equal(end.reason, TG_WAL_END_TORN);
  assert_int_equal(end.offset, t);
  assert_int_equal(end.valid_offset, offs[N + 5]);
  assert_int_equal(end.durable_offset, dur);

  tg_wal *w = NULL;
  tg_wal_open_info info;
  assert_int_equal(tg_wal_open(&w, f->dir, NULL, &info), 0);
  assert_int_equal(info.torn_tail, 1);
  assert_int_equal(info.torn_segment, 1);
  assert_int_equal(info.torn_offset, t);
  assert_int_equal(info.next_lsn, N + 5);
  /* What was cut is kept, byte for byte. */
  assert_string_equal(info.kept_name, "00000000000000000001.wal.broken");
  assert_int_equal(info.kept_bytes, size - t);
  char kp[300];
  snprintf(kp, sizeof kp, "%s/%s", f->dir, info.kept_name);
  size_t kn;
  unsigned char *kb = slurp(kp, &kn);
  assert_int_equal(kn, size - t);
  assert_memory_equal(kb, img + t, size - t);
  free(kb);
  append_n(w, N + 5, 3);
  assert_int_equal(tg_wal_close(w), 0);
  assert_int_equal(read_check(f->dir, 0, 1, &end), N + 7);
  assert_int_equal(end.reason, TG_WAL_END_CLEAN);
  free(img);
}

static void test_wal_damage_before_the_durable_point_of_an_unclosed_log_is_refused(void **state) {
  fixture *f = *state;
  enum { N = 20 };
  size_t offs[2 * N + 1], size, dur;
  unsigned char *img = unclosed_log(f, N, offs, &size, &dur);
  size_t t = offs[N - 3]; /* fdatasynced: the marker after it says so */
  memset(img + t, 0, 16);  /* a zeroed frame header */
  char path[256];
  spit(seg_path(f->dir, 1, path, sizeof path), img, size);
  tg_wal_end end;
  assert_int_equal(read_check(f->dir, 0, 1, &end), N - 3);
  assert_int_equal(end.reason, TG_WAL_END_CORRUPT);
  assert_int_equal(end.offset, t);
  assert_string_equal(end.what, "zeroed frame header before the durable point");
  tg_wal *w = NULL;
  tg_wal_open_info info;
  assert_int_equal(tg_wal_open(&w, f->dir, NULL, &info), TG_ECORRUPT);
  assert_int_equal(info.corrupt_offset, t);
  free(img);
}

/* An empty segment after one with no switch marker: a switch interrupted
   after the new name was durable and before the marker was. */
static void test_wal_empty_segment_of_an_interrupted_switch_is_removed(void **state) {
  fixture *f = *state;
  tg_wal *w = open_wal(f->dir, TG_WAL_STRICT, 65536, NULL);
  append_n(w, 1, 30);
  assert_int_equal(tg_wal_close(w), 0);
  unsigned char seg[4096];
  memset(seg, 0, sizeof seg);
  tg__wal_header_encode(seg, 31, sizeof seg);
  char path[256];
  spit(seg_path(f->dir, 31, path, sizeof path), seg, sizeof seg);

  tg_wal_end end;
  assert_int_equal(read_check(f->dir, 0, 1, &end), 30);
  assert_int_equal(end.reason, TG_WAL_END_CLEAN);
  assert_int_equal(end.segment, 1);
  assert_int_equal(end.empty_segment, 31);

  tg_wal_open_info info;
  w = open_wal(f->dir, TG_WAL_STRICT, 65536, &info);
  assert_int_equal(info.removed_segment, 31);
  assert_int_equal(info.next_lsn, 31);
  assert_int_equal(info.segments, 1);
  append_n(w, 31, 5);
  assert_int_equal(tg_wal_close(w), 0);
  assert_int_equal(read_check(f->dir, 0, 1, &end), 35);
  assert_int_equal(end.reason, TG_WAL_END_CLEAN);

}

/* The writer goes on writing into a new segment while the sync thread seals
   the switch; a power loss before the old segment's SWITCH marker is
   durable leaves a new segment holding records but no marker (none of them
   was published durable): not part of the log, its bytes kept in .broken.
   The same segment holding a marker was sealed: the missing SWITCH marker
   is then damage. */
static void test_wal_unsealed_segment_of_an_interrupted_switch_is_kept_aside(void **state) {
  fixture *f = *state;
  unsigned char seg[4096];
  char path[256];
  tg_wal_end end;
  tg_wal *w = open_wal(f->dir, TG_WAL_STRICT, 65536, NULL);
  append_n(w, 1, 30);
  assert_int_equal(tg_wal_close(w), 0);
  memset(seg, 0, sizeof seg);
  tg__wal_header_encode(seg, 31, sizeof seg);
  unsigned char *fr = seg + TG__WAL_HDR;
  size_t len = 16 + size_for(31);
  tg__st32(fr, (uint32_t)len);
  tg__st64(fr + 8, 31 | (uint64_t)type_for(31) << 56);
  fill(fr + 16, size_for(31), 31);
  tg__st32(fr + 4, tg__wal_frame_crc(fr, (uint32_t)len));
  spit(seg_path(f->dir, 31, path, sizeof path), seg, sizeof seg);
  assert_int_equal(read_check(f->dir, 0, 1, &end), 30);
  assert_int_equal(end.reason, TG_WAL_END_CLEAN);
  assert_int_equal(end.segment, 1);
  assert_int_equal(end.empty_segment, 31);

  tg_wal_open_info info;
  w = open_wal(f->dir, TG_WAL_STRICT, 65536, &info);
  assert_int_equal(info.removed_segment, 31);
  assert_int_equal(info.next_lsn, 31);
  assert_int_equal(info.segments, 1);
  assert_string_equal(info.removed_kept_name, "00000000000000000031.wal.broken");
  assert_int_equal(info.removed_kept_bytes, sizeof seg - TG__WAL_HDR);
  char kept[512];
  snprintf(kept, sizeof kept, "%s/%s", f->dir, info.removed_kept_name);
  FILE *kf = fopen(kept, "rb");
  assert_non_null(kf);
  unsigned char back[sizeof seg];
  assert_int_equal(fread(back, 1, sizeof back, kf), sizeof seg - TG__WAL_HDR);
  fclose(kf);
  assert_memory_equal(back, seg + TG__WAL_HDR, sizeof seg - TG__WAL_HDR);
  append_n(w, 31, 5);
  assert_int_equal(tg_wal_close(w), 0);
  assert_int_equal(read_check(f->dir, 0, 1, &end), 35);
  assert_int_equal(end.reason, TG_WAL_END_CLEAN);

  /* A record and a DURABLE marker after it: that segment was sealed. */
  memset(seg, 0, sizeof seg);
  tg__wal_header_encode(seg, 36, sizeof seg);
  len = 16 + size_for(36);
  tg__st32(fr, (uint32_t)len);
  tg__st64(fr + 8, 36 | (uint64_t)type_for(36) << 56);
  fill(fr + 16, size_for(36), 36);
  tg__st32(fr + 4, tg__wal_frame_crc(fr, (uint32_t)len));
  unsigned char *mk = fr + tg__align8(len);
  tg__wal_marker_encode(mk, TG__WAL_MARK_DURABLE, (uint64_t)(mk - seg), 36);
  spit(seg_path(f->dir, 36, path, sizeof path), seg, sizeof seg);
  assert_int_equal(read_check(f->dir, 0, 1, &end), 35);
  assert_int_equal(end.reason, TG_WAL_END_CORRUPT);
  assert_string_equal(end.what, "segment ends without a switch marker");
}

/* A clean close ends the log with a DURABLE marker that vouches for every
   record, also when the sync thread had already made them all durable
   (tg_wal_sync just before close) and the writer had nothing left to sync:
   a read-only view replays only what a marker vouches for. With small
   segments the last records sit in a segment whose switch the sync thread
   sealed, the case of a close during a segment switch. */
static void close_vouches_for_every_record(fixture *f, uint64_t seg_bytes, uint64_t n) {
  tg_wal *w = open_wal(f->dir, TG_WAL_BALANCED, seg_bytes, NULL);
  append_n(w, 1, n);
  assert_int_equal(tg_wal_sync(w, 0), 0); /* the sync thread's fdatasync covers all */
  tg_wal_stats st;
  assert_int_equal(tg_wal_stats_get(w, &st), 0);
  assert_int_equal(st.durable_lsn, n);
  assert_int_equal(tg_wal_close(w), 0);
  uint64_t *segs = NULL;
  size_t nseg = 0;
  assert_int_equal(tg__wal_list(f->dir, &segs, &nseg), 0);
  assert_true(nseg >= 1);
  char path[256];
  size_t size;
  unsigned char *img = slurp(seg_path(f->dir, segs[nseg - 1], path, sizeof path), &size);
  size_t all[4096];
  size_t k = frame_offsets(img, size, all, sizeof all / sizeof all[0]);
  assert_true(k >= 1);
  size_t last = all[k - 1];
  assert_int_equal(tg__ld64(img + last + 8), (uint64_t)TG__WAL_MARK_DURABLE << 56);
  assert_int_equal(tg__ld64(img + last + 16), last); /* everything before it */
  tg_wal_end end;
  assert_int_equal(read_check(f->dir, 0, 1, &end), n);
  assert_int_equal(end.reason, TG_WAL_END_CLEAN);
  assert_int_equal(end.durable_offset, last);
  free(img);
  free(segs);
}

static void test_wal_clean_close_after_the_sync_thread_synced_everything_writes_the_final_marker(
    void **state) {
  close_vouches_for_every_record(*state, 1 << 20, 50);
}

static void test_wal_clean_close_right_after_a_sealed_switch_writes_the_final_marker(void **state) {
  /* 8 KiB segments: 600 records fill many; the last ones are in a segment
     the sync thread sealed. */
  close_vouches_for_every_record(*state, 8192, 600);
}

/* A log written by format 1 (no markers) is read by format 1's rules, and
   appends go on in a new format-2 segment. */
static void test_wal_version_1_segment_is_read_and_continued_in_a_new_segment(void **state) {
  fixture *f = *state;
  enum { N = 12 };
  unsigned char seg[8192];
  memset(seg, 0, sizeof seg);
  tg__wal_header_encode(seg, 1, sizeof seg);
  tg__st32(seg + TG__SH_VERSION, TG__WAL_VERSION_1);
  tg__st32(seg + TG__SH_CRC, tg__crc32(0, seg, TG__SH_CRC));
  size_t o = TG__WAL_HDR;
  for (uint64_t lsn = 1; lsn <= N; lsn++) {
    size_t len = 16 + size_for(lsn);
    tg__st32(seg + o, (uint32_t)len);
    tg__st64(seg + o + 8, lsn | (uint64_t)type_for(lsn) << 56);
    fill(seg + o + 16, size_for(lsn), lsn);
    tg__st32(seg + o + 4, tg__wal_frame_crc(seg + o, (uint32_t)len));
    o += tg__align8(len);
  }
  seg[o + 3] = 0x11; /* garbage after a torn write, nothing valid after it */
  char path[256];
  spit(seg_path(f->dir, 1, path, sizeof path), seg, sizeof seg);
  tg_wal_end end;
  assert_int_equal(read_check(f->dir, 0, 1, &end), N);
  assert_int_equal(end.reason, TG_WAL_END_TORN);
  assert_int_equal(end.offset, o);

  tg_wal_open_info info;
  tg_wal *w = open_wal(f->dir, TG_WAL_STRICT, 65536, &info);
  assert_int_equal(info.torn_tail, 1);
  assert_int_equal(info.next_lsn, N + 1);
  assert_int_equal(info.segments, 2);
  append_n(w, N + 1, 4);
  assert_int_equal(tg_wal_close(w), 0);
  assert_int_equal(count_segments(f->dir), 2);
  assert_int_equal(read_check(f->dir, 0, 1, &end), N + 4);
  assert_int_equal(end.reason, TG_WAL_END_CLEAN);
  size_t size;
  unsigned char *img = slurp(path, &size);
  assert_int_equal(tg__ld32(img + TG__SH_VERSION), TG__WAL_VERSION_1);
  free(img);
}

/* A FIFO where a segment should be is refused at once, not waited on. */
static void test_wal_fifo_as_segment_is_refused_without_blocking(void **state) {
  fixture *f = *state;
  char path[256];
  assert_int_equal(mkfifo(seg_path(f->dir, 1, path, sizeof path), 0600), 0);
  alarm(60); /* a blocked open fails the test instead of hanging it */
  tg_wal_end end;
  assert_int_equal(read_check(f->dir, 0, 1, &end), 0);
  assert_int_equal(end.reason, TG_WAL_END_CORRUPT);
  assert_string_equal(end.what, "segment is not a regular file");
  tg_wal *w = NULL;
  assert_int_equal(tg_wal_open(&w, f->dir, NULL, NULL), TG_ECORRUPT);
  alarm(0);
}

/* ---- crash durability --------------------------------------------------------------- */

static void test_wal_strict_ack_survives_sigkill(void **state) {
  fixture *f = *state;
  int p[2];
  assert_int_equal(pipe(p), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(p[0]);
    tg_wal_config c;
    tg_wal_config_init(&c);
    c.level = TG_WAL_STRICT;
    c.segment_bytes = 16384;
    tg_wal *w;
    if (tg_wal_open(&w, f->dir, &c, NULL)) _exit(2);
    unsigned char buf[1024];
    for (uint64_t lsn = 1;; lsn++) {
      fill(buf, size_for(lsn), lsn);
      uint64_t got;
      if (tg_wal_append(w, type_for(lsn), buf, size_for(lsn), &got) || got != lsn) _exit(3);
      if (write(p[1], &got, sizeof got) != sizeof got) _exit(4);
    }
  }
  close(p[1]);
  uint64_t acked = 0, v;
  uint64_t t0 = mono_ns();
  while (acked < 300) {
    /* A child that stops acknowledging fails the test at the deadline. */
    struct pollfd pf = {.fd = p[0], .events = POLLIN};
    if (mono_ns() - t0 > DEADLINE_NS || poll(&pf, 1, 100) < 0) {
      kill(pid, SIGKILL);
      fail_msg("the child acknowledged %llu appends before the deadline",
               (unsigned long long)acked);
    }
    if (!(pf.revents & (POLLIN | POLLHUP))) continue;
    if (read(p[0], &v, sizeof v) != sizeof v) break; /* the child exited */
    acked = v;
  }
  assert_int_equal(kill(pid, SIGKILL), 0);
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status));
  while (read(p[0], &v, sizeof v) == sizeof v) acked = v; /* acks sent before the kill */
  close(p[0]);
  assert_true(acked >= 300);
  tg_wal_end end;
  uint64_t got = read_check(f->dir, 0, 1, &end);
  assert_true(got >= acked);
  assert_true(end.reason == TG_WAL_END_CLEAN || end.reason == TG_WAL_END_TORN);
}

/* ---- a crashed process: the ring file ---------------------------------------------- */

/* A boot id that is not this boot's: the open must take the ring file as
   left over from before a reboot. */
static int other_boot(char *out, size_t n) {
  snprintf(out, n, "%s", "00000000-0000-0000-0000-000000reboot");
  return 0;
}

/* pwrite that never returns once `block_writes` is set: the writer holds
   its first batch forever, so everything appended stays in the ring only. */
static atomic_int block_writes;
static ssize_t blocked_pwrite(int fd, const void *buf, size_t n, off_t off) {
  if (atomic_load(&block_writes))
    for (;;) pause();
  return pwrite(fd, buf, n, off);
}

/* In a child: open the WAL at `level`, append records 1..n (payload of
   `size` bytes, or size_for(lsn) when size is 0), then abort(). With
   `hold`, the writer never writes a record. The parent sees SIGABRT. */
static void appends_then_abort(const char *dir, int level, uint64_t n, size_t size, int hold) {
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    /* cmocka's handler would carry on with the tests in this child. */
    signal(SIGABRT, SIG_DFL);
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    tg_wal_config c;
    tg_wal_config_init(&c);
    c.level = level;
    c.segment_bytes = 1u << 20;
    c.ring_slots = 1024;
    tg__io.pwrite = blocked_pwrite;
    tg_wal *w;
    if (tg_wal_open(&w, dir, &c, NULL)) _exit(2);
    atomic_store(&block_writes, hold);
    size_t cap = size ? size : 1024;
    unsigned char *buf = malloc(cap);
    if (!buf) _exit(3);
    for (uint64_t lsn = 1; lsn <= n; lsn++) {
      size_t sz = size ? size : size_for(lsn);
      fill(buf, sz, lsn);
      uint64_t got = 0;
      if (tg_wal_append(w, type_for(lsn), buf, sz, &got) || got != lsn) _exit(4);
    }
    abort();
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
    fail_msg("the child did not die of abort() (status %d)", status);
}

/* Read back records 1..n of `size` bytes (0: size_for). */
static void check_sized(const char *dir, uint64_t n, size_t size) {
  if (!size) {
    tg_wal_end end;
    assert_int_equal(read_check(dir, 0, 1, &end), n);
    assert_int_equal(end.reason, TG_WAL_END_CLEAN);
    return;
  }
  tg_wal_reader *r = NULL;
  tg_wal_record rec;
  unsigned char *buf = malloc(size);
  assert_non_null(buf);
  uint64_t got = 0;
  assert_int_equal(tg_wal_reader_open(&r, dir, 0), 0);
  while (tg_wal_reader_next(r, &rec) == 1) {
    got++;
    assert_int_equal(rec.lsn, got);
    assert_int_equal(rec.len, size);
    fill(buf, size, got);
    assert_memory_equal(rec.payload, buf, size);
  }
  assert_int_equal(tg_wal_reader_end(r)->reason, TG_WAL_END_CLEAN);
  tg_wal_reader_close(r);
  free(buf);
  assert_int_equal(got, n);
}

static void abort_case(const char *dir, int level, size_t size) {
  appends_then_abort(dir, level, 100, size, 0);
  tg_wal_open_info info;
  tg_wal *w = open_wal(dir, level, 1u << 20, &info);
  assert_int_equal(info.next_lsn, 101);
  assert_int_equal(tg_wal_close(w), 0);
  check_sized(dir, 100, size);
}

static void test_wal_balanced_appends_survive_abort(void **state) {
  fixture *f = *state;
  abort_case(f->dir, TG_WAL_BALANCED, 0);
}

static void test_wal_relaxed_appends_survive_abort(void **state) {
  fixture *f = *state;
  abort_case(f->dir, TG_WAL_RELAXED, 0);
}

static void test_wal_payloads_larger_than_a_slot_survive_abort(void **state) {
  fixture *f = *state;
  /* 100 x 1 MiB: three times round the 32 MiB spill region. */
  abort_case(f->dir, TG_WAL_BALANCED, 1u << 20);
}

/* The seal of a segment switch frozen at its rename of next.tmp: the new
   segment never gets its name, so a crash now makes the next open remove
   it and take its records from the ring file again. The frozen seal
   (on the sync thread) watches the appender: once the append it was told
   to watch (`watching`) waits for spill space (the WAL's `blocked` count
   passes blocked_before), or returns (append_done), the process aborts,
   with the seal still frozen. */
static tg_wal *frozen_wal;
static atomic_int frozen_armed, frozen_entered, watching, append_done;
static _Atomic uint64_t blocked_before;

static int frozen_renameat(int od, const char *op, int nd, const char *np) {
  if (!atomic_load(&frozen_armed) || !strstr(op, "next.tmp")) return renameat(od, op, nd, np);
  atomic_store(&frozen_entered, 1);
  uint64_t t0 = mono_ns();
  for (;;) {
    if (atomic_load(&append_done) ||
        (atomic_load(&watching) && STAT(frozen_wal, blocked) > atomic_load(&blocked_before)))
      abort();
    if (mono_ns() - t0 > DEADLINE_NS) _exit(6);
    usleep(100); /* spaces the polls of observable state */
  }
}

static void test_wal_spilled_payload_in_a_segment_not_yet_sealed_is_never_overwritten(void **state) {
  fixture *f = *state;
  /* 1 MiB payloads and 1 MiB segments: each record gets its own segment,
     and the 32 MiB spill region holds 32 of them, so record k + 32 reuses
     the spill bytes of record k. Record 2 goes to a segment whose seal is
     frozen; records 3..33 wait in the ring (the writer waits for that seal
     before its next switch); record 34 needs record 2's spill bytes. Those
     must stay taken until the seal: after the crash the ring is what
     brings record 2 back. */
  const size_t size = 1u << 20;
  int p[2];
  assert_int_equal(pipe(p), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(p[0]);
    signal(SIGABRT, SIG_DFL); /* cmocka's handler would go on in the child */
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    tg_wal_config c;
    tg_wal_config_init(&c);
    c.level = TG_WAL_BALANCED;
    c.segment_bytes = 1u << 20;
    c.ring_slots = 1024;
    tg__io.renameat = frozen_renameat;
    if (tg_wal_open(&frozen_wal, f->dir, &c, NULL)) _exit(2);
    atomic_store(&frozen_armed, 1); /* the open's own rename is done */
    unsigned char *buf = malloc(size);
    if (!buf) _exit(3);
    for (uint64_t lsn = 1; lsn <= 34; lsn++) {
      if (lsn == 3) {
        /* Record 2 is in next.tmp and the writer is done with it (it
           counts a record after writing it, then gives its slot back),
           and the seal is frozen: nothing will name that segment. */
        uint64_t t0 = mono_ns();
        while (!atomic_load(&frozen_entered) || STAT(frozen_wal, records) < 2) {
          if (mono_ns() - t0 > DEADLINE_NS) _exit(7);
          usleep(100);
        }
      }
      if (lsn == 34) {
        atomic_store(&blocked_before, STAT(frozen_wal, blocked));
        atomic_store(&watching, 1);
      }
      fill(buf, size, lsn);
      uint64_t got = 0;
      if (tg_wal_append(frozen_wal, type_for(lsn), buf, size, &got) || got != lsn) _exit(4);
      if (write(p[1], &got, sizeof got) != sizeof got) _exit(5);
    }
    atomic_store(&append_done, 1); /* the frozen seal aborts */
    for (;;) pause();
  }
  close(p[1]);
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
    fail_msg("the child did not die of abort() (status %d)", status);
  uint64_t acked = 0, v;
  while (read(p[0], &v, sizeof v) == sizeof v) acked = v;
  close(p[0]);
  assert_true(acked >= 33);

  /* Next.tmp is removed, record 1 is the log; the ring brings back every
     acknowledged record after it, each with its own bytes. */
  tg_wal_open_info info;
  tg_wal *w = open_wal(f->dir, TG_WAL_BALANCED, 1u << 20, &info);
  assert_int_equal(info.next_lsn, acked + 1);
  assert_int_equal(info.ring_records, acked - 1);
  assert_int_equal(tg_wal_close(w), 0);
  check_sized(f->dir, acked, size);
}

static void test_wal_records_only_in_the_ring_are_appended_at_open(void **state) {
  fixture *f = *state;
  /* Nothing was written: all 100 (inline and spilled) come from the ring. */
  appends_then_abort(f->dir, TG_WAL_BALANCED, 100, 0, 1);
  tg_wal_end end;
  assert_int_equal(read_check(f->dir, 0, 1, &end), 0);
  tg_wal_open_info info;
  tg_wal *w = open_wal(f->dir, TG_WAL_BALANCED, 1u << 20, &info);
  assert_int_equal(info.ring_records, 100);
  assert_int_equal(info.next_lsn, 101);
  assert_int_equal(info.last_lsn, 100);
  assert_int_equal(STAT(w, durable_lsn), 100); /* fdatasynced before the open returns */
  append_n(w, 101, 5);
  assert_int_equal(tg_wal_close(w), 0);
  assert_int_equal(read_check(f->dir, 0, 1, &end), 105);
  assert_int_equal(end.reason, TG_WAL_END_CLEAN);
  /* A clean close leaves nothing to recover: the next open takes none. */
  w = open_wal(f->dir, TG_WAL_BALANCED, 1u << 20, &info);
  assert_int_equal(info.ring_records, 0);
  assert_int_equal(info.next_lsn, 106);
  assert_int_equal(tg_wal_close(w), 0);
}

static void test_wal_ring_of_another_boot_is_ignored(void **state) {
  fixture *f = *state;
  appends_then_abort(f->dir, TG_WAL_BALANCED, 100, 0, 1);
  /* After a reboot only what was fdatasynced counts: here, nothing. */
  tg__io.boot_id = other_boot;
  tg_wal_open_info info;
  tg_wal *w = open_wal(f->dir, TG_WAL_BALANCED, 1u << 20, &info);
  assert_int_equal(info.ring_records, 0);
  assert_int_equal(info.next_lsn, 1);
  assert_int_equal(tg_wal_close(w), 0);
  tg_wal_end end;
  assert_int_equal(read_check(f->dir, 0, 1, &end), 0);
}

/* An open that ignores a ring (another boot's) still zeroes its slots
   before use: a later crash of that process must recover its own records,
   never the stale ones past them whose LSNs the log reuses. */
static void stale_slots_are_never_recovered(const char *dir) {
  tg__io_reset();
  appends_then_abort(dir, TG_WAL_BALANCED, 100, 0, 1); /* slots 1..100, this boot */
  tg__io.boot_id = other_boot;                         /* a reboot: all ignored */
  appends_then_abort(dir, TG_WAL_BALANCED, 5, 0, 1);   /* LSNs 1..5 again, then a crash */
  tg_wal_open_info info;
  tg_wal *w = open_wal(dir, TG_WAL_BALANCED, 1u << 20, &info);
  assert_int_equal(info.ring_records, 5);
  assert_int_equal(info.next_lsn, 6);
  assert_int_equal(tg_wal_close(w), 0);
  tg_wal_end end;
  assert_int_equal(read_check(dir, 0, 1, &end), 5);
  assert_int_equal(end.reason, TG_WAL_END_CLEAN);
  tg__io_reset();
}

/* Both ways of zeroing: the file system's (FALLOC_FL_ZERO_RANGE, here on
   the test directory's file system) and stores through the mapping (tmpfs,
   which has no ZERO_RANGE, when /dev/shm is one). */
static void test_wal_stale_slots_of_an_ignored_ring_are_never_recovered(void **state) {
  fixture *f = *state;
  stale_slots_are_never_recovered(f->dir);
  char shm[] = "/dev/shm/tg-test-wal-XXXXXX";
  if (!mkdtemp(shm)) {
    print_message("no /dev/shm: the store-through-the-mapping path is not covered here\n");
    return;
  }
  stale_slots_are_never_recovered(shm);
  nftw(shm, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void test_wal_ring_file_that_is_not_a_regular_file_is_refused(void **state) {
  fixture *f = *state;
  char p[128];
  snprintf(p, sizeof p, "%s/ring", f->dir);
  assert_int_equal(symlink("/tmp/tg-test-wal-elsewhere", p), 0);
  tg_wal *w = NULL;
  assert_int_not_equal(tg_wal_open(&w, f->dir, NULL, NULL), 0); /* never followed */
  assert_null(w);
  assert_int_equal(access("/tmp/tg-test-wal-elsewhere", F_OK), -1);
  unlink(p);
  assert_int_equal(mkfifo(p, 0600), 0);
  assert_int_equal(tg_wal_open(&w, f->dir, NULL, NULL), TG_ECORRUPT); /* no hang */
  assert_null(w);
}

/* ---- group commit ------------------------------------------------------------------- */

typedef struct gc_arg {
  tg_wal *w;
  int n;
  uint64_t bad;
} gc_arg;

static void *gc_thread(void *p) {
  gc_arg *a = p;
  unsigned char buf[64];
  for (int i = 0; i < a->n; i++) {
    uint64_t lsn;
    memset(buf, i, sizeof buf);
    if (tg_wal_append(a->w, 1, buf, sizeof buf, &lsn) != 0) a->bad++;
    tg_wal_stats st;
    tg_wal_stats_get(a->w, &st);
    if (st.durable_lsn < lsn) a->bad++; /* STRICT: durable on return */
  }
  return NULL;
}

static atomic_uint_fast64_t sync_hook_calls;
static void count_sync_hook(void *arg, uint64_t latency_ns, uint64_t durable) {
  (void)arg;
  (void)latency_ns;
  (void)durable;
  atomic_fetch_add(&sync_hook_calls, 1);
}

/* The writeback hint (wal.c, WRITEBACK HINT) is started by the sync
   thread, never by the writer: sync_file_range can sleep for as long as
   the disk is busy (in the block layer's writeback throttling, and on the
   segment's inode behind an fdatasync), and appenders wait for the
   writer. The writer's thread id comes from the write hook, which runs on
   it; the seam's sync_file_range records who called it. */
static _Atomic long hint_writer_tid;
static _Atomic int hints_by_writer, hints_by_others;

static void note_writer_tid(void *arg, int what, int phase, uint64_t n) {
  (void)arg;
  (void)n;
  if (what == TG__WAL_IO_WRITE && phase == 0)
    atomic_store(&hint_writer_tid, (long)syscall(SYS_gettid));
}

static int recording_sync_file_range(int fd, off_t off, off_t len, unsigned flags) {
  if ((long)syscall(SYS_gettid) == atomic_load(&hint_writer_tid))
    atomic_fetch_add(&hints_by_writer, 1);
  else
    atomic_fetch_add(&hints_by_others, 1);
  return sync_file_range(fd, off, len, flags);
}

static void test_wal_the_writer_never_starts_writeback_itself(void **state) {
  fixture *f = *state;
  static const int levels[] = {TG_WAL_RELAXED, TG_WAL_BALANCED};
  for (size_t l = 0; l < sizeof levels / sizeof levels[0]; l++) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/%zu", f->dir, l);
    assert_int_equal(mkdir(dir, 0700), 0);
    tg_wal_config c;
    tg_wal_config_init(&c);
    c.level = levels[l];
    c.segment_bytes = 4u << 20; /* a switch or two on the way */
    tg__wal_store_opts o = {.on_io = note_writer_tid};
    atomic_store(&hint_writer_tid, -1);
    atomic_store(&hints_by_writer, 0);
    atomic_store(&hints_by_others, 0);
    tg__io.sync_file_range = recording_sync_file_range;
    tg_wal *w;
    assert_int_equal(tg__wal_open_ex(&w, dir, &c, &o, NULL), 0);
    unsigned char payload[64] = {1};
    for (int i = 0; i < 120000; i++) /* 9.6 MB of frames */
      assert_int_equal(tg_wal_append(w, 1, payload, sizeof payload, NULL), 0);
    assert_int_equal(tg_wal_close(w), 0);
    tg__io_reset();
    print_message("level %d: %d writeback hints by the sync thread, %d by the writer\n",
                  (int)levels[l], atomic_load(&hints_by_others), atomic_load(&hints_by_writer));
    assert_int_not_equal(atomic_load(&hint_writer_tid), -1);
    assert_int_equal(atomic_load(&hints_by_writer), 0);
    /* RELAXED syncs only when asked: the hints are its disk's work. */
    if (levels[l] == TG_WAL_RELAXED) assert_true(atomic_load(&hints_by_others) > 0);
  }
}

static void test_wal_strict_group_commit_shares_fdatasyncs(void **state) {
  fixture *f = *state;
  enum { T = 8, PER = 150 };
  tg_wal_config c;
  tg_wal_config_init(&c);
  c.level = TG_WAL_STRICT;
  c.ring_slots = 256;
  tg__wal_store_opts o = {.on_sync = count_sync_hook};
  atomic_store(&sync_hook_calls, 0);
  tg_wal *w;
  assert_int_equal(tg__wal_open_ex(&w, f->dir, &c, &o, NULL), 0);
  pthread_t th[T];
  gc_arg a[T];
  for (int i = 0; i < T; i++) {
    a[i] = (gc_arg){w, PER, 0};
    assert_int_equal(pthread_create(&th[i], NULL, gc_thread, &a[i]), 0);
  }
  for (int i = 0; i < T; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(a[i].bad, 0);
  }
  tg_wal_stats st;
  tg_wal_stats_get(w, &st);
  assert_int_equal(st.records, T * PER);
  print_message("group commit: %llu records, %llu fdatasyncs (%.2f records per fdatasync)\n",
                (unsigned long long)st.records, (unsigned long long)st.fdatasyncs,
                (double)st.records / (double)st.fdatasyncs);
  assert_true(st.fdatasyncs * 2 < st.records);
  assert_int_equal(atomic_load(&sync_hook_calls), st.fdatasyncs);
  assert_int_equal(tg_wal_close(w), 0);
  tg_wal_reader *r;
  tg_wal_record rec;
  uint64_t n = 0;
  assert_int_equal(tg_wal_reader_open(&r, f->dir, 0), 0);
  while (tg_wal_reader_next(r, &rec) == 1) assert_int_equal(rec.lsn, ++n);
  assert_int_equal(n, T * PER);
  assert_int_equal(tg_wal_reader_end(r)->reason, TG_WAL_END_CLEAN);
  tg_wal_reader_close(r);
}

/* ---- the store's protocol: append without waiting ----------------------------------- */

/* fdatasync through the seam that waits while `hold` is set (at most until
   the deadline, noted in `timed_out`, so a broken WAL fails the test
   instead of hanging it). */
static struct {
  atomic_int hold;
  atomic_int entered;   /* an fdatasync is (or was) held */
  atomic_int timed_out;
} blk;

static int held_fdatasync(int fd) {
  if (atomic_load(&blk.hold)) {
    atomic_store(&blk.entered, 1);
    uint64_t t0 = mono_ns();
    while (atomic_load(&blk.hold)) {
      if (mono_ns() - t0 > DEADLINE_NS) {
        atomic_store(&blk.timed_out, 1);
        break;
      }
      usleep(100);
    }
  }
  return fdatasync(fd);
}

static void test_wal_append_nowait_returns_before_the_fdatasync_at_strict(void **state) {
  fixture *f = *state;
  memset(&blk, 0, sizeof blk);
  tg__io.fdatasync = held_fdatasync;
  tg_wal *w = open_wal(f->dir, TG_WAL_STRICT, 1u << 20, NULL);
  /* Inline (64), just past the slot (97), and the malloc'd copy of a large
     record (200, 100000): none may wait for its fdatasync. */
  static const size_t sizes[] = {64, 97, 200, 100000};
  static unsigned char payload[100000];
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    atomic_store(&blk.entered, 0);
    atomic_store(&blk.hold, 1);
    tg__wal_strict_begin(w);
    uint64_t lsn = 0;
    assert_int_equal(tg__wal_append_nowait(w, 7, payload, sizes[i], &lsn), 0);
    assert_int_equal(lsn, i + 1);
    /* The writer is now inside the fdatasync that would make lsn durable,
       and held there: lsn cannot be durable yet. */
    WAIT_FOR(atomic_load(&blk.entered));
    assert_true(STAT(w, durable_lsn) < lsn);
    assert_int_equal(atomic_load(&blk.timed_out), 0);
    atomic_store(&blk.hold, 0);
    assert_int_equal(tg__wal_strict_end(w, lsn), 0);
    assert_true(STAT(w, durable_lsn) >= lsn);
  }
  assert_int_equal(atomic_load(&blk.timed_out), 0);
  assert_int_equal(tg_wal_close(w), 0);
}

/* A replica logs a message's records in one claim: 5,000 records through a
   ring of 1,024 slots (so the claim waits for space, and for the pacing at
   BALANCED), then a batch holding payloads past a slot (one at a time).
   Every record reads back at its LSN, in order. */
static size_t many_size(uint64_t lsn) { return lsn > 5000 ? 90 + (lsn % 3) * 455 : lsn % 97; }

static void test_wal_append_many_logs_consecutive_lsns_that_read_back(void **state) {
  fixture *f = *state;
  enum { N = 5000, M = 10 };
  tg_wal *w = open_wal(f->dir, TG_WAL_BALANCED, 1u << 20, NULL);
  static unsigned char bufs[N + M][1000];
  static tg_wal_record recs[N + M];
  for (uint64_t lsn = 1; lsn <= N + M; lsn++) {
    tg_wal_record *r = &recs[lsn - 1];
    r->type = type_for(lsn);
    r->len = (uint32_t)many_size(lsn);
    fill(bufs[lsn - 1], r->len, lsn);
    r->payload = bufs[lsn - 1];
  }
  uint64_t first = 0;
  assert_int_equal(tg__wal_append_many_nowait(w, recs, N, &first), 0);
  assert_int_equal(first, 1);
  assert_int_equal(tg__wal_append_many_nowait(w, recs + N, M, &first), 0);
  assert_int_equal(first, N + 1);
  assert_int_equal(tg__wal_append_many_nowait(w, recs, 0, &first), 0);
  assert_int_equal(first, 0);
  assert_int_equal(tg_wal_close(w), 0);
  tg_wal_reader *r = NULL;
  tg_wal_record rec;
  assert_int_equal(tg_wal_reader_open(&r, f->dir, 0), 0);
  for (uint64_t lsn = 1; lsn <= N + M; lsn++) {
    assert_int_equal(tg_wal_reader_next(r, &rec), 1);
    assert_int_equal(rec.lsn, lsn);
    assert_int_equal(rec.type, type_for(lsn));
    assert_int_equal(rec.len, many_size(lsn));
    assert_memory_equal(rec.payload, bufs[lsn - 1], rec.len);
  }
  assert_int_equal(tg_wal_reader_next(r, &rec), 0);
  tg_wal_reader_close(r);
}

/* Records appended with the CRCs their appender checked (a replica's):
   the writer writes each given CRC as it is, for the LSN it was given
   for, and computes the CRC of a record that got another LSN. Shown with
   wrong CRCs: at the LSNs they name, the log holds exactly them (the
   reader then stops at the first, a bad frame); with LSNs the appends do
   not get, they are ignored and the log reads back whole. */
static void test_wal_checked_append_writes_the_given_crc_for_its_lsn_only(void **state) {
  fixture *f = *state;
  enum { N = 100 };
  static unsigned char bufs[N][64];
  static tg_wal_record recs[N];
  static uint32_t crcs[N];
  unsigned char frame[TG__WAL_FRAME_HDR + 64];
  for (uint64_t lsn = 1; lsn <= N; lsn++) {
    tg_wal_record *r = &recs[lsn - 1];
    r->lsn = lsn;
    r->type = type_for(lsn);
    r->len = 64;
    fill(bufs[lsn - 1], r->len, lsn);
    r->payload = bufs[lsn - 1];
    memset(frame, 0, sizeof frame);
    tg__st32(frame, TG__WAL_FRAME_HDR + 64);
    tg__st64(frame + 8, lsn | (uint64_t)r->type << 56);
    memcpy(frame + TG__WAL_FRAME_HDR, r->payload, 64);
    crcs[lsn - 1] = tg__wal_frame_crc(frame, sizeof frame);
  }
  /* Right CRCs: the log reads back whole. */
  tg_wal *w = open_wal(f->dir, TG_WAL_RELAXED, 1u << 20, NULL);
  uint64_t first = 0;
  assert_int_equal(tg__wal_append_checked_nowait(w, recs, crcs, N, &first), 0);
  assert_int_equal(first, 1);
  /* Wrong CRCs for LSNs these appends do not get (they get N+1..2N):
     not used. */
  static uint32_t wrong[N];
  for (int i = 0; i < N; i++) wrong[i] = crcs[i] ^ 0x5a5a5a5au;
  assert_int_equal(tg__wal_append_checked_nowait(w, recs, wrong, N, &first), 0);
  assert_int_equal(first, N + 1);
  assert_int_equal(tg_wal_close(w), 0);
  tg_wal_reader *r = NULL;
  tg_wal_record rec;
  assert_int_equal(tg_wal_reader_open(&r, f->dir, 0), 0);
  for (uint64_t lsn = 1; lsn <= 2 * N; lsn++) {
    assert_int_equal(tg_wal_reader_next(r, &rec), 1);
    assert_int_equal(rec.lsn, lsn);
    assert_memory_equal(rec.payload, bufs[(lsn - 1) % N], 64);
  }
  assert_int_equal(tg_wal_reader_next(r, &rec), 0);
  tg_wal_reader_close(r);
  /* A wrong CRC given for the very LSN the record gets is written as it
     is: the frame of LSN 2N+1 then fails its CRC, the frame before it
     reads back. */
  w = open_wal(f->dir, TG_WAL_RELAXED, 1u << 20, NULL);
  tg_wal_record one = recs[0];
  one.lsn = 2 * N + 1;
  uint32_t bad = 0x12345678u;
  assert_int_equal(tg__wal_append_checked_nowait(w, &one, &bad, 1, &first), 0);
  assert_int_equal(first, 2 * N + 1);
  assert_int_equal(tg_wal_sync(w, 0), 0);
  tg_wal_stats ws;
  assert_int_equal(tg_wal_stats_get(w, &ws), 0);
  assert_int_equal(ws.written_lsn, 2 * N + 1);
  assert_int_equal(tg_wal_reader_open(&r, f->dir, 2 * N), 0);
  assert_int_equal(tg_wal_reader_next(r, &rec), 1);
  assert_int_equal(rec.lsn, 2 * N);
  assert_int_not_equal(tg_wal_reader_next(r, &rec), 1);
  tg_wal_reader_close(r);
  /* Close still succeeds: the bad frame is the appender's doing, not an
     I/O error. */
  assert_int_equal(tg_wal_close(w), 0);
}

/* ---- injected failures -------------------------------------------------------------- */

/* Set by the test thread, read by the writer thread: all atomic, and
   pwrite_errno is stored before fail_pwrite_at, so a writer that sees the
   failure point also sees the errno to fail with. */
static struct {
  atomic_int pwrites;      /* pwrite calls so far */
  atomic_int fail_pwrite_at; /* this pwrite call (1-based) fails ... */
  atomic_int pwrite_errno; /* ... with this errno, after writing half */
  atomic_int short_writes; /* write at most 5 bytes per call, EINTR every 3rd */
  atomic_int fdatasyncs;
  atomic_int fail_fdatasync_at; /* this fdatasync call (1-based) fails with EIO */
  atomic_int fallocates;
  atomic_int fail_fallocate_at; /* this fallocate call (1-based) fails with ENOSPC */
  atomic_int stall;        /* pwrite waits while this is 1 ... */
  atomic_int stalled;      /* ... and sets this while waiting */
  atomic_int slow_us;      /* every pwrite takes this much longer: a slow disk */
} inj;

static ssize_t inj_pwrite(int fd, const void *buf, size_t n, off_t off) {
  int k = atomic_fetch_add(&inj.pwrites, 1) + 1;
  uint64_t t0 = mono_ns();
  /* A test that fails while the writer is held must not hang: the hold
     ends at the deadline. */
  while (atomic_load(&inj.stall) && mono_ns() - t0 < DEADLINE_NS) {
    atomic_store(&inj.stalled, 1);
    usleep(100);
  }
  if (atomic_load(&inj.slow_us)) usleep((useconds_t)atomic_load(&inj.slow_us));
  int at = atomic_load(&inj.fail_pwrite_at);
  if (at && k >= at) {
    if (k == at && n > 1) {
      ssize_t r = pwrite(fd, buf, n / 2, off); /* a partial write, then the error */
      (void)r;
    }
    errno = atomic_load(&inj.pwrite_errno);
    return -1;
  }
  if (inj.short_writes) {
    if (k % 3 == 0) {
      errno = EINTR;
      return -1;
    }
    if (n > 5) n = 5;
  }
  return pwrite(fd, buf, n, off);
}

static int inj_fdatasync(int fd) {
  int k = atomic_fetch_add(&inj.fdatasyncs, 1) + 1;
  if (inj.fail_fdatasync_at && k >= inj.fail_fdatasync_at) {
    errno = EIO;
    return -1;
  }
  return fdatasync(fd);
}

static int inj_fallocate(int fd, int mode, off_t off, off_t len) {
  int k = atomic_fetch_add(&inj.fallocates, 1) + 1;
  if (inj.fail_fallocate_at && k >= inj.fail_fallocate_at) {
    errno = ENOSPC;
    return -1;
  }
  return fallocate(fd, mode, off, len);
}

static void inj_install(void) {
  memset(&inj, 0, sizeof inj);
  tg__io.pwrite = inj_pwrite;
  tg__io.fdatasync = inj_fdatasync;
  tg__io.fallocate = inj_fallocate;
}

/* After a failure: the files hold a prefix of what was appended, with every
   durable record, ending clean or torn (never corrupt), and reopening works. */
static void check_consistent_after_failure(const char *dir, uint64_t durable, uint64_t appended) {
  tg__io_reset();
  tg_wal_end end;
  uint64_t n = read_check(dir, 0, 1, &end);
  assert_true(n >= durable);
  assert_true(n <= appended);
  assert_true(end.reason == TG_WAL_END_CLEAN || end.reason == TG_WAL_END_TORN);
  tg_wal_open_info info;
  tg_wal *w = open_wal(dir, TG_WAL_BALANCED, 8192, &info);
  /* The failed log left its ring file in use: the open appends what was
     queued but never written, still a prefix of what was appended. */
  assert_int_equal(info.next_lsn, n + info.ring_records + 1);
  assert_true(info.next_lsn <= appended + 1);
  n += info.ring_records;
  append_n(w, n + 1, 3);
  assert_int_equal(tg_wal_close(w), 0);
  assert_int_equal(read_check(dir, 0, 1, &end), n + 3);
  assert_int_equal(end.reason, TG_WAL_END_CLEAN);
}

static void test_wal_short_writes_and_eintr_are_completed(void **state) {
  fixture *f = *state;
  inj_install();
  inj.short_writes = 1;
  tg_wal *w = open_wal(f->dir, TG_WAL_BALANCED, 8192, NULL);
  append_n(w, 1, 300);
  assert_int_equal(tg_wal_sync(w, 0), 0);
  assert_int_equal(tg_wal_close(w), 0);
  assert_true(atomic_load(&inj.pwrites) > 1000);
  tg__io_reset();
  tg_wal_end end;
  assert_int_equal(read_check(f->dir, 0, 1, &end), 300);
  assert_int_equal(end.reason, TG_WAL_END_CLEAN);
}

static void write_failure_case(const char *dir, int err, int expect) {
  inj_install();
  tg_wal *w = open_wal(dir, TG_WAL_BALANCED, 8192, NULL);
  append_n(w, 1, 100);
  assert_int_equal(tg_wal_sync(w, 0), 0);
  tg_wal_stats st;
  tg_wal_stats_get(w, &st);
  uint64_t durable = st.durable_lsn;
  assert_int_equal(durable, 100);
  inj.pwrite_errno = err;
  inj.fail_pwrite_at = atomic_load(&inj.pwrites) + 1;
  unsigned char buf[1024];
  uint64_t appended = 100;
  int rc = 0, sync_rc = 1;
  for (uint64_t lsn = 101; lsn < 1000000 && rc == 0; lsn++) {
    fill(buf, size_for(lsn), lsn);
    rc = tg_wal_append(w, type_for(lsn), buf, size_for(lsn), NULL);
    if (rc == 0) appended = lsn;
    if (lsn == 150) sync_rc = tg_wal_sync(w, 0);
  }
  /* A slow writer (sanitizers) may fail the log before LSN 150 is reached:
     then the appends stop first, and the sync is asked afterwards. */
  if (sync_rc == 1) sync_rc = tg_wal_sync(w, 0);
  assert_int_equal(sync_rc, expect); /* the first write after 100 failed */
  assert_int_equal(rc, expect);
  int oserr = 0;
  assert_int_equal(tg_wal_failed(w, &oserr), expect);
  assert_int_equal(oserr, err);
  assert_int_equal(tg_wal_sync(w, 0), expect);
  int pw = atomic_load(&inj.pwrites);
  assert_int_equal(tg_wal_append(w, 1, buf, 8, NULL), expect);
  tg_wal_stats_get(w, &st);
  assert_int_equal(st.durable_lsn, durable); /* nothing became durable after the failure */
  assert_int_equal(tg_wal_close(w), expect);
  assert_int_equal(atomic_load(&inj.pwrites), pw); /* never retried */
  check_consistent_after_failure(dir, durable, appended);
}

static void test_wal_enospc_on_write_fails_the_log_with_tg_enospc(void **state) {
  fixture *f = *state;
  write_failure_case(f->dir, ENOSPC, TG_ENOSPC);
}

static void test_wal_eio_on_write_fails_the_log_with_tg_eio(void **state) {
  fixture *f = *state;
  write_failure_case(f->dir, EIO, TG_EIO);
}

static void test_wal_failed_fdatasync_is_never_reported_durable(void **state) {
  fixture *f = *state;
  inj_install();
  tg_wal *w = open_wal(f->dir, TG_WAL_STRICT, 8192, NULL);
  append_n(w, 1, 20);
  inj.fail_fdatasync_at = atomic_load(&inj.fdatasyncs) + 1;
  unsigned char buf[1024];
  fill(buf, size_for(21), 21);
  uint64_t lsn = 0;
  assert_int_equal(tg_wal_append(w, type_for(21), buf, size_for(21), &lsn), TG_EIO);
  assert_int_equal(lsn, 21); /* queued, written, but not durable: the caller is told */
  int syncs = atomic_load(&inj.fdatasyncs);
  assert_int_equal(tg_wal_append(w, 1, buf, 8, NULL), TG_EIO);
  assert_int_equal(tg_wal_sync(w, 0), TG_EIO);
  assert_int_equal(tg_wal_sync(w, 20), 0); /* what was durable stays durable */
  tg_wal_stats st;
  tg_wal_stats_get(w, &st);
  assert_int_equal(st.durable_lsn, 20);
  assert_int_equal(tg_wal_close(w), TG_EIO);
  assert_int_equal(atomic_load(&inj.fdatasyncs), syncs); /* not retried, not at close */
  check_consistent_after_failure(f->dir, 20, 21);
}

static void test_wal_enospc_preparing_a_segment_fails_the_log(void **state) {
  fixture *f = *state;
  inj_install();
  inj.fail_fallocate_at = 3; /* the first segment and the ring file get their
                                space, the next segment does not */
  tg_wal *w = open_wal(f->dir, TG_WAL_RELAXED, 8192, NULL);
  unsigned char buf[1024];
  int rc = 0;
  uint64_t lsn = 1;
  for (; lsn < 10000 && rc == 0; lsn++) {
    fill(buf, size_for(lsn), lsn);
    rc = tg_wal_append(w, type_for(lsn), buf, size_for(lsn), NULL);
    if (rc == 0 && lsn % 50 == 0) rc = tg_wal_sync(w, 0);
  }
  assert_int_equal(rc, TG_ENOSPC);
  assert_int_equal(tg_wal_failed(w, NULL), TG_ENOSPC);
  tg_wal_stats st;
  tg_wal_stats_get(w, &st);
  assert_int_equal(tg_wal_close(w), TG_ENOSPC);
  check_consistent_after_failure(f->dir, st.durable_lsn, lsn);

  /* And at open: no space for the first segment. */
  fixture g;
  strcpy(g.dir, "/tmp/tg-test-wal-XXXXXX");
  assert_non_null(mkdtemp(g.dir));
  inj_install();
  inj.fail_fallocate_at = 1;
  tg_wal *w2 = NULL;
  assert_int_equal(tg_wal_open(&w2, g.dir, NULL, NULL), TG_ENOSPC);
  assert_null(w2);
  tg__io_reset();
  nftw(g.dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- backpressure ------------------------------------------------------------------- */

static void stall_writer_with_one_record(tg_wal *w) {
  inj_install();
  atomic_store(&inj.stall, 1);
  append_n(w, 1, 1);
  WAIT_FOR(atomic_load(&inj.stalled)); /* the writer holds record 1 */
}

static void test_wal_full_queue_returns_eagain_when_nonblocking(void **state) {
  fixture *f = *state;
  tg_wal_config c;
  tg_wal_config_init(&c);
  c.level = TG_WAL_RELAXED;
  c.ring_slots = 8;
  c.nonblocking = 1;
  tg_wal *w;
  assert_int_equal(tg_wal_open(&w, f->dir, &c, NULL), 0);
  stall_writer_with_one_record(w);
  /* Fills the ring: record 1 keeps its slot until it is written (the ring
     file is what a crash would recover it from). */
  append_n(w, 2, 7);
  unsigned char buf[256] = {0};
  assert_int_equal(tg_wal_append(w, 1, buf, 10, NULL), TG_EAGAIN);
  assert_int_equal(tg_wal_append(w, 1, buf, 200, NULL), TG_EAGAIN); /* large path too */
  tg_wal_stats st;
  tg_wal_stats_get(w, &st);
  assert_int_equal(st.rejected, 2);
  assert_int_equal(st.queue_depth, 8);
  atomic_store(&inj.stall, 0);
  assert_int_equal(tg_wal_sync(w, 0), 0); /* the writer catches up */
  append_n(w, 9, 5); /* rejected appends took no LSN */
  assert_int_equal(tg_wal_close(w), 0);
  tg_wal_end end;
  assert_int_equal(read_check(f->dir, 0, 1, &end), 13);
  assert_int_equal(end.reason, TG_WAL_END_CLEAN);
}

typedef struct bp_arg {
  tg_wal *w;
  atomic_int done;
  int rc;
} bp_arg;

static void *bp_thread(void *p) {
  bp_arg *a = p;
  unsigned char buf[1024];
  fill(buf, size_for(9), 9);
  uint64_t lsn;
  a->rc = tg_wal_append(a->w, type_for(9), buf, size_for(9), &lsn);
  if (lsn != 9) a->rc = -1;
  atomic_store(&a->done, 1);
  return NULL;
}

static void test_wal_full_queue_blocks_the_caller_by_default(void **state) {
  fixture *f = *state;
  tg_wal_config c;
  tg_wal_config_init(&c);
  c.level = TG_WAL_RELAXED;
  c.ring_slots = 8;
  tg_wal *w;
  assert_int_equal(tg_wal_open(&w, f->dir, &c, NULL), 0);
  stall_writer_with_one_record(w);
  append_n(w, 2, 7); /* fills the ring: record 1 keeps its slot until written */
  assert_int_equal(STAT(w, blocked), 0);
  bp_arg a = {w, 0, 0};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, bp_thread, &a), 0);
  /* The ninth append is shown blocked: counted as blocked while it has not
     returned. An append that did not wait would return uncounted. */
  WAIT_FOR(STAT(w, blocked) >= 1 || atomic_load(&a.done));
  assert_int_equal(atomic_load(&a.done), 0);
  assert_int_equal(STAT(w, next_lsn), 10); /* it holds LSN 9 */
  atomic_store(&inj.stall, 0);
  pthread_join(th, NULL);
  assert_int_equal(a.rc, 0);
  tg_wal_stats st;
  tg_wal_stats_get(w, &st);
  assert_true(st.blocked >= 1);
  assert_true(st.blocked_ns > 0);
  assert_int_equal(st.rejected, 0);
  assert_int_equal(tg_wal_close(w), 0);
  tg_wal_end end;
  assert_int_equal(read_check(f->dir, 0, 1, &end), 9);
  assert_int_equal(end.reason, TG_WAL_END_CLEAN);
}

/* PACING (BALANCED): an appender that finds more records queued before its
   own than the writer drains in a quarter of sync_interval_ms waits for the
   writer, long before the ring is full, so that what it acknowledges is
   written (and then fdatasynced) within the interval. Until the writer has
   measured its rate the limit is 2048 records. */
typedef struct pace_arg {
  tg_wal *w;
  uint64_t lsn;
  atomic_int done;
  int rc;
} pace_arg;

static void *pace_thread(void *p) {
  pace_arg *a = p;
  unsigned char buf[1024];
  fill(buf, size_for(a->lsn), a->lsn);
  uint64_t lsn = 0;
  a->rc = tg_wal_append(a->w, type_for(a->lsn), buf, size_for(a->lsn), &lsn);
  if (!a->rc && lsn != a->lsn) a->rc = -1;
  atomic_store(&a->done, 1);
  return NULL;
}

static tg_wal *open_paced(fixture *f, int level, int nonblocking) {
  tg_wal_config c;
  tg_wal_config_init(&c);
  c.level = level;
  c.ring_slots = 16384;
  c.nonblocking = nonblocking;
  tg_wal *w;
  assert_int_equal(tg_wal_open(&w, f->dir, &c, NULL), 0);
  return w;
}

static void test_wal_balanced_appender_waits_for_a_writer_behind_long_before_the_ring_is_full(
    void **state) {
  fixture *f = *state;
  tg_wal *w = open_paced(f, TG_WAL_BALANCED, 0);
  stall_writer_with_one_record(w); /* nothing written: the writer has no rate yet */
  assert_int_equal(STAT(w, queue_limit), 2048);
  append_n(w, 2, 2047); /* 2048 queued, none written */
  assert_int_equal(STAT(w, throttled), 0);
  pace_arg a = {w, 2049, 0, 0};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, pace_thread, &a), 0);
  /* Counted when its wait begins; an append that did not wait would return
     uncounted. */
  WAIT_FOR(STAT(w, throttled) >= 1 || atomic_load(&a.done));
  assert_int_equal(atomic_load(&a.done), 0);
  assert_int_equal(STAT(w, blocked), 0); /* the ring has room: 2049 of 16384 */
  atomic_store(&inj.stall, 0);
  pthread_join(th, NULL);
  assert_int_equal(a.rc, 0);
  tg_wal_stats st;
  tg_wal_stats_get(w, &st);
  assert_int_equal(st.throttled, 1);
  assert_true(st.throttled_ns > 0);
  assert_int_equal(st.blocked, 0);
  assert_int_equal(tg_wal_close(w), 0);
  tg_wal_end end;
  assert_int_equal(read_check(f->dir, 0, 1, &end), 2049);
  assert_int_equal(end.reason, TG_WAL_END_CLEAN);
}

static void test_wal_balanced_nonblocking_appender_gets_eagain_at_the_pacing_limit(void **state) {
  fixture *f = *state;
  tg_wal *w = open_paced(f, TG_WAL_BALANCED, 1);
  stall_writer_with_one_record(w);
  append_n(w, 2, 2047);
  unsigned char buf[256] = {0};
  assert_int_equal(tg_wal_append(w, 1, buf, 10, NULL), TG_EAGAIN);
  assert_int_equal(tg_wal_append(w, 1, buf, 200, NULL), TG_EAGAIN); /* large path too */
  tg_wal_stats st;
  tg_wal_stats_get(w, &st);
  assert_int_equal(st.rejected, 2);
  assert_int_equal(st.queue_depth, 2048); /* of 16384 slots */
  atomic_store(&inj.stall, 0);
  assert_int_equal(tg_wal_sync(w, 0), 0);
  append_n(w, 2049, 5); /* rejected appends took no LSN */
  assert_int_equal(tg_wal_close(w), 0);
  assert_int_equal(read_check(f->dir, 0, 1, NULL), 2053);
}

/* The limit follows the writer's measured rate: a writer whose every write
   takes 5 ms (twice the 2.5 ms budget of a 10 ms interval) drains half a
   budget's worth per write, so the limit halves with each measurement down
   to its floor of 32 records, and the queue never comes near the ring's
   size. */
static void test_wal_balanced_pacing_limit_follows_a_slow_writer_down_to_its_floor(void **state) {
  fixture *f = *state;
  inj_install();
  atomic_store(&inj.slow_us, 5000);
  tg_wal *w = open_paced(f, TG_WAL_BALANCED, 0);
  assert_int_equal(STAT(w, queue_limit), 2048);
  append_n(w, 1, 10000); /* about 6,500 bring it to the floor, then 110 writes at it */
  tg_wal_stats st;
  tg_wal_stats_get(w, &st);
  assert_int_equal(st.queue_limit, 32);
  assert_true(st.throttled > 0);
  assert_int_equal(st.blocked, 0); /* 16384 slots, never full */
  atomic_store(&inj.slow_us, 0);
  assert_int_equal(tg_wal_close(w), 0);
  assert_int_equal(read_check(f->dir, 0, 1, NULL), 10000);
}

/* ACK ORDER (wal.c): a record published after a slot still being filled
   would not be recovered after a process crash (recovery appends the
   ring's published slots in LSN order and stops at the first that is
   not), so its append must not return before the slot below is
   published. */
typedef struct order_arg {
  tg_wal *w;
  uint64_t lsn;
  _Atomic int returned;
  _Atomic int below_published; /* set by the test just before it publishes */
  int saw_below_published;
  int rc;
} order_arg;

static void *order_appender(void *p) {
  order_arg *a = p;
  unsigned char buf[16];
  fill(buf, sizeof buf, a->lsn);
  uint64_t got = 0;
  a->rc = tg_wal_append(a->w, 1, buf, sizeof buf, &got);
  a->saw_below_published = atomic_load(&a->below_published);
  a->lsn = got;
  atomic_store(&a->returned, 1);
  return NULL;
}

static void test_wal_an_append_returns_only_once_every_lsn_below_is_published(void **state) {
  fixture *f = *state;
  int levels[] = {TG_WAL_BALANCED, TG_WAL_RELAXED};
  uint64_t base = 1; /* the next LSN: the second level reopens the log */
  for (int l = 0; l < 2; l++) {
    tg_wal *w = open_wal(f->dir, levels[l], 1u << 20, NULL);
    append_n(w, base, 2);
    uint64_t k = 0;
    assert_int_equal(tg__wal_test_claim(w, &k), 0); /* claimed, not filled */
    assert_int_equal(k, base + 2);
    order_arg a = {.w = w, .lsn = k + 1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, order_appender, &a), 0);
    /* Its record is published... */
    uint64_t deadline = mono_ns() + 30ull * 1000000000u;
    while (!tg__wal_test_published(w, k + 1)) {
      assert_true(mono_ns() < deadline);
      sched_yield();
    }
    /* ...and still it has not returned, however long it is given (20 ms:
       not a synchronization, a chance for a wrong return to show). */
    uint64_t until = mono_ns() + 20ull * 1000000u;
    while (mono_ns() < until) sched_yield();
    assert_int_equal(atomic_load(&a.returned), 0);
    unsigned char buf[8];
    fill(buf, sizeof buf, k);
    atomic_store(&a.below_published, 1);
    assert_int_equal(tg__wal_test_publish(w, k, 1, buf, sizeof buf), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(a.rc, 0);
    assert_int_equal(a.lsn, k + 1);
    assert_int_equal(a.saw_below_published, 1);
    append_n(w, k + 2, 3); /* the thread-local fast path and the bound go on */
    assert_int_equal(tg_wal_close(w), 0);
    /* Every LSN is in the log once, in order, the two made here too. */
    tg_wal_reader *r = NULL;
    tg_wal_record rec;
    uint64_t n = 0;
    assert_int_equal(tg_wal_reader_open(&r, f->dir, 0), 0);
    while (tg_wal_reader_next(r, &rec) == 1) {
      assert_int_equal(rec.lsn, ++n);
      if (rec.lsn == k) assert_int_equal(rec.len, 8);
      if (rec.lsn == k + 1) assert_int_equal(rec.len, 16);
    }
    tg_wal_reader_close(r);
    assert_int_equal(n, k + 4);
    base = k + 5;
  }
}

static void test_wal_strict_and_relaxed_appenders_are_never_paced(void **state) {
  fixture *f = *state;
  int levels[] = {TG_WAL_STRICT, TG_WAL_RELAXED};
  for (int i = 0; i < 2; i++) {
    tg_wal *w = open_paced(f, levels[i], 1);
    assert_int_equal(STAT(w, queue_limit), 16384);
    if (levels[i] == TG_WAL_RELAXED) {
      stall_writer_with_one_record(w);
      append_n(w, 2, 4000); /* past BALANCED's 2048, no wait, no refusal */
      assert_int_equal(STAT(w, rejected), 0);
      atomic_store(&inj.stall, 0);
    }
    assert_int_equal(STAT(w, throttled), 0);
    assert_int_equal(tg_wal_close(w), 0);
  }
}

/* ---- segment management ------------------------------------------------------------- */

static void test_wal_remove_upto_deletes_only_covered_segments(void **state) {
  fixture *f = *state;
  tg_wal *w = open_wal(f->dir, TG_WAL_RELAXED, 4096, NULL);
  append_n(w, 1, 300);
  assert_int_equal(tg_wal_sync(w, 0), 0);
  uint64_t *segs;
  size_t nseg;
  assert_int_equal(tg__wal_list(f->dir, &segs, &nseg), 0);
  assert_true(nseg >= 5);
  uint32_t removed = 0;
  /* A checkpoint at segs[2]: segments 0 and 1 are covered, 2 is not (it
     holds segs[2]+1...). */
  assert_int_equal(tg_wal_remove_upto(w, segs[2], &removed), 0);
  assert_int_equal(removed, 2);
  assert_int_equal(count_segments(f->dir), nseg - 2);
  assert_int_equal(tg_wal_remove_upto(w, UINT64_MAX >> 8, &removed), 0);
  assert_int_equal(count_segments(f->dir), 1); /* the one being written stays */
  append_n(w, 301, 10);
  assert_int_equal(tg_wal_close(w), 0);
  tg_wal_end end;
  assert_int_equal(read_check(f->dir, 0, segs[nseg - 1], &end), 311 - segs[nseg - 1]);
  assert_int_equal(end.reason, TG_WAL_END_CLEAN);
  free(segs);
}

static void test_wal_reopen_of_an_empty_log_keeps_start_lsn(void **state) {
  fixture *f = *state;
  tg__wal_store_opts o = {.start_lsn = 5001};
  tg_wal *w;
  tg_wal_open_info info;
  assert_int_equal(tg__wal_open_ex(&w, f->dir, NULL, &o, &info), 0);
  assert_int_equal(info.next_lsn, 5001);
  assert_int_equal(tg_wal_close(w), 0);
  o.start_lsn = 1; /* ignored: the directory has a segment */
  assert_int_equal(tg__wal_open_ex(&w, f->dir, NULL, &o, &info), 0);
  assert_int_equal(info.next_lsn, 5001);
  append_n(w, 5001, 3);
  assert_int_equal(tg_wal_close(w), 0);
  assert_int_equal(read_check(f->dir, 0, 5001, NULL), 3);
}

/* ---- configuration ----------------------------------------------------------------- */

typedef struct limit_case {
  const char *key;   /* [wal] key */
  const char *value; /* as written in the file */
} limit_case;

/* Set the tg_wal_config field of key from value, as the API would. */
static void set_field(tg_wal_config *c, const char *key, const char *value) {
  unsigned long long v = strtoull(value, NULL, 10);
  if (!strcmp(key, "sync_interval_ms")) c->sync_interval_ms = (uint32_t)v;
  else if (!strcmp(key, "segment_bytes")) c->segment_bytes = v;
  else if (!strcmp(key, "ring_slots")) c->ring_slots = (uint32_t)v;
  else if (!strcmp(key, "linger_us")) c->linger_us = (uint32_t)v;
  else fail_msg("no field for %s", key);
}

static void test_wal_config_limits_are_the_same_from_the_api_and_the_ini_file(void **state) {
  fixture *f = *state;
  static const limit_case cases[] = {
    {"sync_interval_ms", "0"}, {"sync_interval_ms", "1"}, {"sync_interval_ms", "60000"},
    {"sync_interval_ms", "60001"},
    {"segment_bytes", "0"}, {"segment_bytes", "4095"}, {"segment_bytes", "4096"},
    {"segment_bytes", "8192"}, {"segment_bytes", "65536"}, {"segment_bytes", "100000"},
    {"segment_bytes", "68719476736"}, {"segment_bytes", "68719480832"},
    {"ring_slots", "0"}, {"ring_slots", "1"}, {"ring_slots", "2"}, {"ring_slots", "1000"},
    {"ring_slots", "16777216"}, {"ring_slots", "33554432"}, {"ring_slots", "67108864"},
    {"linger_us", "0"}, {"linger_us", "1000000"}, {"linger_us", "1000001"},
  };
  char path[128];
  snprintf(path, sizeof path, "%s/limits.ini", f->dir);
  int accepted = 0, refused = 0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const limit_case *k = &cases[i];
    tg_wal_config c;
    tg_wal_config_init(&c);
    set_field(&c, k->key, k->value);
    int api_ok = tg__wal_config_check(&c) == 0;

    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fprintf(fp, "[wal]\n%s = %s\n", k->key, k->value);
    assert_int_equal(fclose(fp), 0);
    tg_store_config sc;
    tg_store_config_init(&sc);
    char err[256] = "";
    int rc = tg_config_load(&sc, path, err, sizeof err);
    assert_true(rc == 0 || rc == TG_ECONFIG);
    if (api_ok != (rc == 0))
      fail_msg("%s = %s: the API %s it, the INI file %s it (%s)", k->key, k->value,
               api_ok ? "accepts" : "refuses", rc == 0 ? "accepts" : "refuses", err);
    if (rc == 0) assert_memory_equal(&sc.wal, &c, sizeof c); /* the same field, the same value */
    api_ok ? accepted++ : refused++;
  }
  assert_true(accepted >= 8 && refused >= 8);

  /* tg_wal_open refuses what the check refuses, and opens at the smallest
     values the check accepts. */
  tg_wal_config c;
  tg_wal_config_init(&c);
  c.sync_interval_ms = 0;
  tg_wal *w = NULL;
  assert_int_equal(tg_wal_open(&w, f->dir, &c, NULL), TG_EINVAL);
  assert_null(w);
  tg_wal_config_init(&c);
  c.sync_interval_ms = TG_WAL_SYNC_INTERVAL_MIN_MS;
  c.segment_bytes = TG_WAL_SEGMENT_MIN;
  c.ring_slots = TG_WAL_RING_MIN;
  c.linger_us = TG_WAL_LINGER_MAX_US;
  assert_int_equal(tg_wal_open(&w, f->dir, &c, NULL), 0);
  append_n(w, 1, 20);
  assert_int_equal(tg_wal_sync(w, 0), 0);
  assert_int_equal(tg_wal_close(w), 0);
  assert_int_equal(read_check(f->dir, 0, 1, NULL), 20);

  /* A store refuses the same values, before it touches its directory. */
  char sdir[128], msg[256] = "";
  snprintf(sdir, sizeof sdir, "%s/store", f->dir);
  tg_store_config sc;
  tg_store_config_init(&sc);
  sc.wal.ring_slots = 1000;
  tg_store *st = NULL;
  assert_int_equal(tg_store_open_msg(&st, sdir, &sc, msg, sizeof msg), TG_EINVAL);
  assert_null(st);
  assert_non_null(strstr(msg, "ring_slots 1000"));
  struct stat sb;
  assert_int_equal(stat(sdir, &sb), -1);
}

/* A store takes its WAL's defaults: one set of them. */
static void test_wal_store_config_defaults_are_the_wal_defaults(void **state) {
  (void)state;
  tg_wal_config c;
  tg_wal_config_init(&c);
  tg_store_config sc;
  tg_store_config_init(&sc);
  assert_memory_equal(&sc.wal, &c, sizeof c);
  assert_int_equal(tg__wal_config_check(&c), 0);
  assert_int_equal(TG_STRICT, TG_WAL_STRICT);
  assert_int_equal(TG_BALANCED, TG_WAL_BALANCED);
  assert_int_equal(TG_RELAXED, TG_WAL_RELAXED);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_wal_crc_matches_zlib, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_round_trip_of_many_sizes_across_segments, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_records_larger_than_a_segment_and_the_buffer_round_trip, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_torn_tail_is_truncated, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_flipped_bit_anywhere_is_detected, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_mid_log_corruption_is_reported_not_skipped, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_lsn_gap_between_segments_is_corruption, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_bad_magic_and_newer_version_are_reported, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_zeroed_sector_at_a_frame_boundary_of_a_strict_log_is_refused, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_deleted_last_segment_is_detected, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_torn_unsynced_frame_then_a_valid_one_is_cut_and_kept, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_damage_before_the_durable_point_of_an_unclosed_log_is_refused, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_empty_segment_of_an_interrupted_switch_is_removed, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_unsealed_segment_of_an_interrupted_switch_is_kept_aside, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_version_1_segment_is_read_and_continued_in_a_new_segment, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_clean_close_after_the_sync_thread_synced_everything_writes_the_final_marker, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_clean_close_right_after_a_sealed_switch_writes_the_final_marker, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_balanced_appender_waits_for_a_writer_behind_long_before_the_ring_is_full, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_balanced_nonblocking_appender_gets_eagain_at_the_pacing_limit, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_strict_and_relaxed_appenders_are_never_paced, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_balanced_pacing_limit_follows_a_slow_writer_down_to_its_floor, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_fifo_as_segment_is_refused_without_blocking, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_strict_ack_survives_sigkill, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_balanced_appends_survive_abort, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_relaxed_appends_survive_abort, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_payloads_larger_than_a_slot_survive_abort, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_spilled_payload_in_a_segment_not_yet_sealed_is_never_overwritten, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_records_only_in_the_ring_are_appended_at_open, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_ring_of_another_boot_is_ignored, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_stale_slots_of_an_ignored_ring_are_never_recovered, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_ring_file_that_is_not_a_regular_file_is_refused, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_strict_group_commit_shares_fdatasyncs, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_append_nowait_returns_before_the_fdatasync_at_strict, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_append_many_logs_consecutive_lsns_that_read_back, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_checked_append_writes_the_given_crc_for_its_lsn_only, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_short_writes_and_eintr_are_completed, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_enospc_on_write_fails_the_log_with_tg_enospc, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_eio_on_write_fails_the_log_with_tg_eio, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_failed_fdatasync_is_never_reported_durable, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_enospc_preparing_a_segment_fails_the_log, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_full_queue_returns_eagain_when_nonblocking, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_full_queue_blocks_the_caller_by_default, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_remove_upto_deletes_only_covered_segments, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_reopen_of_an_empty_log_keeps_start_lsn, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_an_append_returns_only_once_every_lsn_below_is_published, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_config_limits_are_the_same_from_the_api_and_the_ini_file, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_store_config_defaults_are_the_wal_defaults, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_the_writer_never_starts_writeback_itself, setup, teardown),
  };
  if (getenv("TG_TEST_FILTER")) cmocka_set_test_filter(getenv("TG_TEST_FILTER"));
  return cmocka_run_group_tests(tests, NULL, NULL);
}
