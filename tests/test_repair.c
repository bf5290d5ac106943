/*
 * The library's inspection and repair of a data directory
 * (tg_store_inspect, tg_store_repair, tg_record_decode) and the reader's
 * account of a gap: the store and the tools must give one answer on one
 * directory, and repair must never destroy a byte or grow a file past the
 * configured segment size.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/io.h"
#include "tokengraph/tokengraph.h"
#include "util.h"

/* How many records a segment holds is the log's own business: 818 token
   records fill a TGT_SEG_BYTES segment, but one fewer fit when a 32-byte
   DURABLE marker lands in it, and where markers land depends on timing
   (the sync thread seals a segment switch, and its fdatasync of the new
   segment covers whatever the writer already put there, which the writer
   then records in a DURABLE marker; a tg_sync() or a checkpoint does the
   same). So every segment boundary and frame offset below is read from
   the directory (log_segments, frame_of), never computed. */

/* ---- fixtures -------------------------------------------------------------- */

/* The first LSNs (= names) of the log's segments, oldest first, as the
   reader finds them in the directory; returns how many (at most max). */
static size_t log_segments(uint64_t *segs, size_t max) {
  tg_wal_reader *r = NULL;
  assert_int_equal(tg_wal_reader_open(&r, tgt_wal, 0), 0);
  size_t n = tg_wal_reader_segments(r);
  assert_true(n <= max);
  for (size_t i = 0; i < n; i++) segs[i] = tg_wal_reader_segment(r, i);
  tg_wal_reader_close(r);
  return n;
}

/* The segment and the offset of the frame of record lsn, as the reader
   reports them; checked against the bytes of the file: the frame there is
   an 80-byte token record carrying lsn. */
static void frame_of(uint64_t lsn, uint64_t *segment, uint64_t *offset) {
  tg_wal_reader *r = NULL;
  tg_wal_record rec;
  assert_int_equal(tg_wal_reader_open(&r, tgt_wal, lsn), 0);
  assert_int_equal(tg_wal_reader_next(r, &rec), 1);
  assert_int_equal(rec.lsn, lsn);
  *segment = rec.segment;
  *offset = rec.offset;
  tg_wal_reader_close(r);

  char path[320];
  unsigned char h[16];
  tgt_seg_path(path, sizeof path, *segment, "");
  int fd = open(path, O_RDONLY);
  assert_true(fd >= 0);
  assert_int_equal(pread(fd, h, sizeof h, (off_t)*offset), (ssize_t)sizeof h);
  close(fd);
  uint32_t len;
  uint64_t lsn_type;
  memcpy(&len, h, 4);       /* little-endian, as is this machine */
  memcpy(&lsn_type, h + 8, 8);
  assert_int_equal(len, TGT_FRAME);
  assert_int_equal(lsn_type & ((1ull << 56) - 1), lsn);
}

/* Tokens `from`..`to` (the store numbers them in order). */
static void add_tokens(tg_store *s, uint32_t from, uint32_t to) {
  for (uint32_t i = from; i <= to; i++) {
    tg_token t;
    memset(&t, 0, sizeof t);
    t.timestamp = 1000000u + i;
    uint32_t id = 0;
    assert_int_equal(tg_token_create(s, &t, &id), 0);
    assert_int_equal(id, i);
  }
}

static int exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

/* The number of live tokens the store opens with, or the open's error. */
static int open_count(uint64_t *tokens, char *msg, size_t len) {
  tg_store_config cfg = tgt_small_log_config();
  tg_store *s = NULL;
  int rc = tg_store_open_msg(&s, tgt_data, &cfg, msg, len);
  if (rc) return rc;
  tg_store_stats st;
  assert_int_equal(tg_store_stats_get(s, &st), 0);
  *tokens = st.live_tokens;
  assert_int_equal(tg_store_close(s), 0);
  return 0;
}

static int inspect(tg_inspect_report *r) {
  char msg[512] = "";
  int rc = tg_store_inspect(tgt_data, r, NULL, NULL, msg, sizeof msg);
  if (rc) fail_msg("inspect: %s: %s", tg_err_name(rc), msg);
  return rc;
}

/* ---- the reader: a gap is told by LSNs --------------------------------------- */

static void test_the_reader_gives_the_expected_and_found_lsn_of_a_gap(void **state) {
  (void)state;
  tg_store *s = tgt_open_small_log();
  add_tokens(s, 1, 2000); /* three segments: 1, about 819, about 1637 */
  assert_int_equal(tg_store_close(s), 0);
  uint64_t segs[8];
  assert_int_equal(log_segments(segs, 8), 3);
  char path[320];
  tgt_seg_path(path, sizeof path, segs[1], "");
  assert_int_equal(unlink(path), 0);

  tg_wal_reader *r = NULL;
  tg_wal_record rec;
  assert_int_equal(tg_wal_reader_open(&r, tgt_wal, 0), 0);
  uint64_t n = 0;
  while (tg_wal_reader_next(r, &rec) == 1) n++;
  const tg_wal_end *e = tg_wal_reader_end(r);
  assert_int_equal(n, segs[1] - 1);
  assert_int_equal(e->reason, TG_WAL_END_CORRUPT);
  assert_true(tg_wal_end_is_gap(e));
  assert_int_equal(e->expected_lsn, segs[1]);
  assert_int_equal(e->found_lsn, segs[2]);
  assert_int_equal(e->first_lsn, 1);
  assert_int_equal(e->last_lsn, segs[1] - 1);
  tg_wal_reader_close(r);

  /* A bad frame is not a gap. */
  s = NULL;
  uint64_t seg = 0, off = 0;
  frame_of(11, &seg, &off);
  tgt_seg_path(path, sizeof path, seg, "");
  int fd = open(path, O_WRONLY);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, "\xff\xff\xff\xff", 4, (off_t)(off + 20)), 4);
  close(fd);
  assert_int_equal(tg_wal_reader_open(&r, tgt_wal, 0), 0);
  while (tg_wal_reader_next(r, &rec) == 1) continue;
  e = tg_wal_reader_end(r);
  assert_int_equal(e->reason, TG_WAL_END_CORRUPT);
  assert_false(tg_wal_end_is_gap(e));
  assert_int_equal(e->expected_lsn, 0);
  assert_int_equal(e->found_lsn, 0);
  tg_wal_reader_close(r);
}

static void test_records_carry_the_position_of_their_frame(void **state) {
  (void)state;
  tg_store *s = tgt_open_small_log();
  add_tokens(s, 1, 900);
  assert_int_equal(tg_store_close(s), 0);
  uint64_t segs[8];
  assert_int_equal(log_segments(segs, 8), 2);
  assert_int_equal(segs[0], 1);
  assert_true(segs[1] > 1 && segs[1] <= 850);
  /* The frame at the position the record names holds that record. */
  uint64_t seg = 0, off = 0;
  frame_of(850, &seg, &off);
  assert_int_equal(seg, segs[1]);
  assert_true(off >= 64 + (850 - segs[1]) * TGT_FRAME);
  tg_wal_reader *r = NULL;
  assert_int_equal(tg_wal_reader_open(&r, tgt_wal, 850), 0);
  assert_int_equal(tg_wal_reader_segment(r, 2), 0);
  tg_wal_reader_close(r);
}

/* ---- records ------------------------------------------------------------------ */

static void test_record_decode_refuses_malformed_payloads(void **state) {
  (void)state;
  tg_token t;
  memset(&t, 0, sizeof t);
  t.id = 7;
  t.timestamp = 42;
  tg_wal_record w = {1, TG_REC_TOKEN_PUT, sizeof t, &t, 0, 0};
  tg_record rec;
  assert_int_equal(tg_record_decode(&w, &rec), 0);
  assert_int_equal(rec.type, TG_REC_TOKEN_PUT);
  assert_int_equal(rec.id, 7);
  assert_int_equal(rec.token.timestamp, 42);
  w.len = 63;
  assert_int_equal(tg_record_decode(&w, &rec), TG_ECORRUPT);
  t.id = 0;
  w.len = sizeof t;
  assert_int_equal(tg_record_decode(&w, &rec), TG_ECORRUPT); /* ids are never 0 */
  uint32_t id = 9;
  tg_wal_record d = {2, TG_REC_CONN_DEL, sizeof id, &id, 0, 0};
  assert_int_equal(tg_record_decode(&d, &rec), 0);
  assert_int_equal(rec.id, 9);
  d.len = 8;
  assert_int_equal(tg_record_decode(&d, &rec), TG_ECORRUPT);
  d.type = 77;
  d.len = 4;
  assert_int_equal(tg_record_decode(&d, &rec), TG_EINVAL);
}

/* ---- the store and inspection agree ------------------------------------------- */

static void test_a_zero_length_checkpoint_is_no_checkpoint_to_open_and_inspect(void **state) {
  (void)state;
  tg_store *s = tgt_open_small_log();
  add_tokens(s, 1, 300);
  assert_int_equal(tg_store_close(s), 0);
  char p[320];
  snprintf(p, sizeof p, "%s/checkpoint/data.mdb", tgt_data);
  assert_int_equal(truncate(p, 0), 0);

  tg_inspect_report r;
  inspect(&r);
  assert_int_equal(r.end.reason, TG_WAL_END_CLEAN);
  assert_int_equal(r.checkpoint_lsn, 0);
  assert_int_equal(r.tokens, 300);
  assert_int_equal(tgt_file_size(p), 0); /* inspection wrote nothing */
  uint64_t tokens = 0;
  char msg[512] = "";
  assert_int_equal(open_count(&tokens, msg, sizeof msg), 0);
  assert_int_equal(tokens, 300);
}

/* A copy taken while a checkpoint deleted segments: the copy has the oldest
   segment from before and the checkpoint from after, so records in between
   are missing, but all of them are in the checkpoint. Returns the first LSN
   after the oldest segment: the first one missing. */
static uint64_t make_live_copy(void) {
  tg_store *s = tgt_open_small_log();
  add_tokens(s, 1, 2000); /* segments 1, about 819, about 1637 */
  /* The oldest segment is complete and sealed by now: 2000 appends through
     a ring of 1024 slots mean the writer gave back the slots of at least
     976 records, and it gives back those of a segment only once its
     switch is sealed, so the second segment exists and the first ends
     with its SWITCH marker. */
  uint64_t segs[8];
  assert_true(log_segments(segs, 8) >= 2);
  tgt_saved first = tgt_save_segment(1);
  assert_int_equal(tg_checkpoint(s), 0); /* covers 2000: all but the last go */
  assert_false(exists(first.path));
  add_tokens(s, 2001, 2100);
  assert_int_equal(tg_store_close(s), 0);
  tgt_restore(&first);
  return segs[1];
}

/* The copy's second segment: the log's third, holding 2000..2100 (where it
   starts depends on the DURABLE markers in the one before). */
static uint64_t live_copy_last_segment(uint64_t second) {
  uint64_t segs[8];
  assert_int_equal(log_segments(segs, 8), 2);
  assert_int_equal(segs[0], 1);
  uint64_t last = segs[1];
  /* The log's second segment held no more records than fit in one: its
     header, 80-byte frames and room for its SWITCH marker. */
  assert_true(last > second && last - second <= (TGT_SEG_BYTES - 64 - 32) / TGT_FRAME);
  return last;
}

static void test_a_gap_below_the_checkpoint_is_reported_apart_and_opens(void **state) {
  (void)state;
  uint64_t second = make_live_copy();
  uint64_t last = live_copy_last_segment(second);
  tg_inspect_report r;
  inspect(&r);
  assert_int_equal(r.checkpoint_lsn, 2000);
  assert_int_equal(r.end.reason, TG_WAL_END_CLEAN);
  assert_int_equal(r.apply_failed_lsn, 0);
  assert_int_equal(r.last_lsn, 2100);
  assert_int_equal(r.replayed, 100);
  assert_int_equal(r.tokens, 2100);
  assert_int_equal(r.records, (second - 1) + (2100 - last + 1));
  assert_int_equal(r.covered_end.reason, TG_WAL_END_CORRUPT);
  assert_true(tg_wal_end_is_gap(&r.covered_end));
  assert_int_equal(r.covered_end.expected_lsn, second);
  assert_int_equal(r.covered_end.found_lsn, last);

  uint64_t tokens = 0;
  char msg[512] = "";
  assert_int_equal(open_count(&tokens, msg, sizeof msg), 0);
  assert_int_equal(tokens, 2100);

  /* Forced repair has nothing to cut and keeps every record. */
  tg_repair_report *rep = calloc(1, sizeof *rep);
  tg_store_config cfg = tgt_small_log_config();
  int rc = tg_store_repair(tgt_data, &cfg, TG_REPAIR_FORCE, rep, NULL, NULL, msg, sizeof msg);
  if (rc) fail_msg("repair: %s: %s", tg_err_name(rc), msg);
  assert_int_equal(rep->cut, TG_REPAIR_CUT_NONE);
  assert_int_equal(rep->beyond.above, 0);
  assert_int_equal(rep->tokens, 2100);
  assert_int_equal(rep->checkpoint_lsn, 2100);
  free(rep);
  assert_int_equal(open_count(&tokens, msg, sizeof msg), 0);
  assert_int_equal(tokens, 2100);
}

static void test_a_log_that_ends_before_the_checkpoint_is_refused_by_both(void **state) {
  (void)state;
  uint64_t second = make_live_copy();
  char p[320];
  tgt_seg_path(p, sizeof p, live_copy_last_segment(second), ""); /* ~1637..2100 */
  assert_int_equal(unlink(p), 0);

  uint64_t tokens = 0;
  char msg[512] = "";
  assert_int_equal(open_count(&tokens, msg, sizeof msg), TG_ECORRUPT);
  tg_inspect_report r;
  inspect(&r);
  assert_int_equal(r.end.reason, TG_WAL_END_CORRUPT);
  assert_int_equal(r.end.last_lsn, second - 1);

  /* Repair puts every segment aside; the checkpoint holds 1..2000. */
  tg_repair_report *rep = calloc(1, sizeof *rep);
  tg_store_config cfg = tgt_small_log_config();
  assert_int_equal(tg_store_repair(tgt_data, &cfg, 0, rep, NULL, NULL, msg, sizeof msg), TG_ECORRUPT);
  assert_true(rep->refused);
  tgt_seg_path(p, sizeof p, 1, "");
  assert_true(exists(p)); /* refused: nothing changed */
  int rc = tg_store_repair(tgt_data, &cfg, TG_REPAIR_FORCE, rep, NULL, NULL, msg, sizeof msg);
  if (rc) fail_msg("repair: %s: %s", tg_err_name(rc), msg);
  assert_true(rep->restart);
  assert_int_equal(rep->moved, 1);
  tgt_seg_path(p, sizeof p, 1, ".broken");
  assert_int_equal(tgt_file_size(p), TGT_SEG_BYTES);
  free(rep);
  assert_int_equal(open_count(&tokens, msg, sizeof msg), 0);
  assert_int_equal(tokens, 2000);
}

/* ---- repair keeps bytes and bounds sizes --------------------------------------- */

/* Cut the last record of a 1000-record store in half: a torn tail in the
   second segment (starting at about 819), which then ends half a frame
   after the frame of record 999. path is that segment. */
static void make_torn_store(char *path, size_t len) {
  tg_store *s = tgt_open_small_log();
  add_tokens(s, 1, 1000);
  assert_int_equal(tg_store_close(s), 0);
  uint64_t segs[8], seg = 0, cut = 0;
  assert_int_equal(log_segments(segs, 8), 2);
  frame_of(1000, &seg, &cut);
  assert_int_equal(seg, segs[1]);
  tgt_seg_path(path, len, seg, "");
  assert_int_equal(truncate(path, (off_t)(cut + TGT_FRAME / 2)), 0);
}

static int failing_fsync(int fd) {
  (void)fd;
  errno = EIO;
  return -1;
}

static void test_repair_that_cannot_keep_the_bytes_cuts_nothing(void **state) {
  (void)state;
  char path[320], broken[340];
  make_torn_store(path, sizeof path);
  snprintf(broken, sizeof broken, "%s.broken", path);
  size_t before_len = 0;
  char *before = tgt_read_file(path, &before_len);

  tg__io.fsync = failing_fsync; /* the .broken copy cannot be made durable */
  tg_repair_report *rep = calloc(1, sizeof *rep);
  char msg[512] = "";
  int rc = tg_store_repair(tgt_data, NULL, 0, rep, NULL, NULL, msg, sizeof msg);
  tg__io_reset();
  assert_int_equal(rc, -EIO); /* the errno of the failed fsync */
  assert_non_null(strstr(msg, "nothing was cut"));
  assert_int_equal(rep->cut, TG_REPAIR_CUT_TORN);
  assert_false(rep->truncated);
  assert_false(exists(broken));
  size_t after_len = 0;
  char *after = tgt_read_file(path, &after_len);
  assert_int_equal(after_len, before_len);
  assert_memory_equal(after, before, before_len);
  free(after);
  free(before);

  /* With the disk working again, the same repair succeeds. */
  rc = tg_store_repair(tgt_data, NULL, 0, rep, NULL, NULL, msg, sizeof msg);
  if (rc) fail_msg("repair: %s: %s", tg_err_name(rc), msg);
  assert_true(rep->truncated);
  assert_int_equal(tgt_file_size(broken), TGT_FRAME / 2);
  free(rep);
}

static void test_repair_never_sizes_a_segment_past_the_configured_size(void **state) {
  (void)state;
  char path[320];
  make_torn_store(path, sizeof path);
  /* The header claims a 1 TiB segment. */
  uint64_t huge = 1ull << 40;
  tgt_claim_segment_bytes(path, huge);

  tg_store_config cfg = tgt_small_log_config();
  tg_repair_report *rep = calloc(1, sizeof *rep);
  char msg[512] = "";
  int rc = tg_store_repair(tgt_data, &cfg, 0, rep, NULL, NULL, msg, sizeof msg);
  if (rc) fail_msg("repair: %s: %s", tg_err_name(rc), msg);
  assert_int_equal(rep->before.end.segment_bytes, huge);
  assert_int_equal(rep->segment_bytes, TGT_SEG_BYTES);
  assert_true(tgt_file_size(path) <= TGT_SEG_BYTES);
  free(rep);

  /* A header smaller than the configured size is the one the store used. */
  cfg.wal.segment_bytes = 1u << 20;
  rep = calloc(1, sizeof *rep);
  rc = tg_store_repair(tgt_data, &cfg, 0, rep, NULL, NULL, msg, sizeof msg);
  if (rc) fail_msg("repair: %s: %s", tg_err_name(rc), msg);
  assert_true(rep->segment_bytes <= 1u << 20);
  free(rep);
}

/* The second rename of a repair fails (renames, then the cut, are its
   steps, newest segment first). */
static int renames_left = 0;
static int renameat_once(int od, const char *op, int nd, const char *np) {
  if (renames_left-- == 0) {
    errno = EIO;
    return -1;
  }
  return renameat(od, op, nd, np);
}

static void test_an_interrupted_repair_loses_nothing_and_can_be_run_again(void **state) {
  (void)state;
  tg_store *s = tgt_open_small_log();
  add_tokens(s, 1, 2400); /* segments 1, about 819, about 1637 */
  assert_int_equal(tg_store_close(s), 0);
  uint64_t segs[8];
  assert_int_equal(log_segments(segs, 8), 3);
  char path[3][320];
  char *orig[3];
  size_t len[3];
  for (int i = 0; i < 3; i++) tgt_seg_path(path[i], sizeof path[i], segs[i], "");
  /* Flip payload bytes of record 400: its CRC no longer matches. */
  uint64_t seg = 0, off = 0;
  frame_of(400, &seg, &off);
  assert_int_equal(seg, segs[0]);
  int fd = open(path[0], O_RDWR);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, "\x5a\x5a\x5a\x5a", 4, (off_t)(off + 24)), 4);
  close(fd);
  for (int i = 0; i < 3; i++) orig[i] = tgt_read_file(path[i], &len[i]);

  renames_left = 1;
  tg__io.renameat = renameat_once;
  tg_repair_report *rep = calloc(1, sizeof *rep);
  char msg[512] = "";
  int rc = tg_store_repair(tgt_data, NULL, TG_REPAIR_FORCE, rep, NULL, NULL, msg, sizeof msg);
  tg__io_reset();
  assert_int_equal(rc, -EIO);
  assert_int_equal(rep->moved, 1); /* the newest went aside, then it stopped */
  assert_false(rep->truncated);

  rc = tg_store_repair(tgt_data, NULL, TG_REPAIR_FORCE, rep, NULL, NULL, msg, sizeof msg);
  if (rc) fail_msg("repair: %s: %s", tg_err_name(rc), msg);
  assert_int_equal(rep->cut_offset, off);
  /* 401 up to the third segment: that one went aside in the first run. */
  assert_int_equal(rep->beyond.above, segs[2] - 1 - 400);

  /* Every byte is still there: the cut segment followed by its .broken
     file, and each later segment whole. */
  char b[340];
  size_t n = 0;
  tgt_seg_path(b, sizeof b, segs[0], ".broken");
  char *kept = tgt_read_file(b, &n);
  assert_int_equal(off + n, len[0]);
  assert_memory_equal(kept, orig[0] + off, n);
  free(kept);
  for (int i = 1; i < 3; i++) {
    tgt_seg_path(b, sizeof b, segs[i], ".broken");
    kept = tgt_read_file(b, &n);
    assert_int_equal(n, len[i]);
    assert_memory_equal(kept, orig[i], n);
    free(kept);
  }
  for (int i = 0; i < 3; i++) free(orig[i]);
  free(rep);
  uint64_t tokens = 0;
  assert_int_equal(open_count(&tokens, msg, sizeof msg), 0);
  assert_int_equal(tokens, 399);
}

static void test_repair_holds_the_lock_an_open_takes(void **state) {
  (void)state;
  tg_store *s = tgt_open_small_log();
  add_tokens(s, 1, 10);
  tg_repair_report *rep = calloc(1, sizeof *rep);
  char msg[512] = "";
  assert_int_equal(tg_store_repair(tgt_data, NULL, 0, rep, NULL, NULL, msg, sizeof msg), TG_ELOCKED);
  assert_non_null(strstr(msg, "another process"));
  assert_int_equal(tg_store_close(s), 0);
  assert_int_equal(tg_store_repair(tgt_data, NULL, 0, rep, NULL, NULL, msg, sizeof msg), 0);
  free(rep);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    TGT_TEST(test_the_reader_gives_the_expected_and_found_lsn_of_a_gap),
    TGT_TEST(test_records_carry_the_position_of_their_frame),
    TGT_TEST(test_record_decode_refuses_malformed_payloads),
    TGT_TEST(test_a_zero_length_checkpoint_is_no_checkpoint_to_open_and_inspect),
    TGT_TEST(test_a_gap_below_the_checkpoint_is_reported_apart_and_opens),
    TGT_TEST(test_a_log_that_ends_before_the_checkpoint_is_refused_by_both),
    TGT_TEST(test_repair_that_cannot_keep_the_bytes_cuts_nothing),
    TGT_TEST(test_repair_never_sizes_a_segment_past_the_configured_size),
    TGT_TEST(test_an_interrupted_repair_loses_nothing_and_can_be_run_again),
    TGT_TEST(test_repair_holds_the_lock_an_open_takes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
