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
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

/* Frame offsets of a segment image (valid frames from 64 on). */
static size_t frame_offsets(const unsigned char *b, size_t n, size_t *offs, size_t max) {
  size_t k = 0, o = TG__WAL_HDR;
  while (o + 16 <= n && k < max) {
    uint32_t len = tg__ld32(b + o);
    if (len == 0) break;
    offs[k++] = o;
    o += tg__align8(len);
  }
  return k;
}

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
  assert_int_equal(frame_offsets(img, size, offs, N + 1), N);
  size_t end_of_log = offs[N - 1] + tg__align8(16 + size_for(N));
  offs[N] = end_of_log;

  /* Every byte offset within the last 5 records, two ways: the file cut
     there, and the bytes from there on zeroed (a write that only partly
     reached the disk, in preallocated space). */
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
      else memset(copy + t, 0, end_of_log - t);
      spit(path, copy, n);
      tg_wal_end end;
      assert_int_equal(read_check(f->dir, 0, 1, &end), complete);
      if (boundary) {
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
        assert_int_equal(info.torn_tail, !boundary);
        assert_int_equal(info.next_lsn, complete + 1);
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
    /* ... and the 16 zero bytes that mark the end of the data. Flips past
       them are in unused space, after the end marker: they cannot be
       detected, and cannot yield a record either. */
    size_t limit = used + 16 <= size ? used + 16 : size;
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    for (size_t byte = 0; byte < limit; byte++) {
      for (int bit = 0; bit < 8; bit++) {
        img[byte] ^= (unsigned char)(1u << bit);
        assert_int_equal(pwrite(fd, img + byte, 1, (off_t)byte), 1);
        tg_wal_end end;
        uint64_t got = read_check(f->dir, 0, 1, &end); /* never a wrong record */
        assert_int_not_equal(end.reason, TG_WAL_END_CLEAN);
        assert_true(got < N || byte >= used);
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

  tg__st32(img + TG__SH_VERSION, 2);
  tg__st32(img + TG__SH_CRC, tg__crc32(0, img, TG__SH_CRC));
  spit(path, img, size);
  assert_int_equal(read_check(f->dir, 0, 1, &end), 0);
  assert_int_equal(end.err, TG_EVERSION);
  tg_wal *w2 = NULL;
  assert_int_equal(tg_wal_open(&w2, f->dir, NULL, NULL), TG_EVERSION);
  free(img);
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
  assert_int_equal(info.next_lsn, n + 1);
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
  inj.fail_fallocate_at = 2; /* the first segment gets its space, the next does not */
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
  append_n(w, 2, 8); /* fills the ring */
  unsigned char buf[256] = {0};
  assert_int_equal(tg_wal_append(w, 1, buf, 10, NULL), TG_EAGAIN);
  assert_int_equal(tg_wal_append(w, 1, buf, 200, NULL), TG_EAGAIN); /* large path too */
  tg_wal_stats st;
  tg_wal_stats_get(w, &st);
  assert_int_equal(st.rejected, 2);
  assert_int_equal(st.queue_depth, 9);
  atomic_store(&inj.stall, 0);
  assert_int_equal(tg_wal_sync(w, 0), 0); /* the writer catches up */
  append_n(w, 10, 5); /* rejected appends took no LSN */
  assert_int_equal(tg_wal_close(w), 0);
  tg_wal_end end;
  assert_int_equal(read_check(f->dir, 0, 1, &end), 14);
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
  fill(buf, size_for(10), 10);
  uint64_t lsn;
  a->rc = tg_wal_append(a->w, type_for(10), buf, size_for(10), &lsn);
  if (lsn != 10) a->rc = -1;
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
  append_n(w, 2, 8); /* fills the ring: record 1 left it for the writer */
  assert_int_equal(STAT(w, blocked), 0);
  bp_arg a = {w, 0, 0};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, bp_thread, &a), 0);
  /* The ninth append is shown blocked: counted as blocked while it has not
     returned. An append that did not wait would return uncounted. */
  WAIT_FOR(STAT(w, blocked) >= 1 || atomic_load(&a.done));
  assert_int_equal(atomic_load(&a.done), 0);
  assert_int_equal(STAT(w, next_lsn), 11); /* it holds LSN 10 */
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
  assert_int_equal(read_check(f->dir, 0, 1, &end), 10);
  assert_int_equal(end.reason, TG_WAL_END_CLEAN);
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
    cmocka_unit_test_setup_teardown(test_wal_strict_ack_survives_sigkill, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_strict_group_commit_shares_fdatasyncs, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_append_nowait_returns_before_the_fdatasync_at_strict, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_short_writes_and_eintr_are_completed, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_enospc_on_write_fails_the_log_with_tg_enospc, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_eio_on_write_fails_the_log_with_tg_eio, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_failed_fdatasync_is_never_reported_durable, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_enospc_preparing_a_segment_fails_the_log, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_full_queue_returns_eagain_when_nonblocking, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_full_queue_blocks_the_caller_by_default, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_remove_upto_deletes_only_covered_segments, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_reopen_of_an_empty_log_keeps_start_lsn, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_config_limits_are_the_same_from_the_api_and_the_ini_file, setup, teardown),
    cmocka_unit_test_setup_teardown(test_wal_store_config_defaults_are_the_wal_defaults, setup, teardown),
  };
  if (getenv("TG_TEST_FILTER")) cmocka_set_test_filter(getenv("TG_TEST_FILTER"));
  return cmocka_run_group_tests(tests, NULL, NULL);
}
