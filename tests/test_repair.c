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

#define PER_SEG 818u /* records in one TGT_SEG_BYTES segment */

/* ---- fixtures -------------------------------------------------------------- */

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
  add_tokens(s, 1, 2000); /* segments 1, 819, 1637 */
  assert_int_equal(tg_store_close(s), 0);
  char path[320];
  tgt_seg_path(path, sizeof path, 1 + PER_SEG, "");
  assert_int_equal(unlink(path), 0);

  tg_wal_reader *r = NULL;
  tg_wal_record rec;
  assert_int_equal(tg_wal_reader_open(&r, tgt_wal, 0), 0);
  uint64_t n = 0;
  while (tg_wal_reader_next(r, &rec) == 1) n++;
  const tg_wal_end *e = tg_wal_reader_end(r);
  assert_int_equal(n, PER_SEG);
  assert_int_equal(e->reason, TG_WAL_END_CORRUPT);
  assert_true(tg_wal_end_is_gap(e));
  assert_int_equal(e->expected_lsn, 1 + PER_SEG);
  assert_int_equal(e->found_lsn, 1 + 2 * PER_SEG);
  assert_int_equal(e->first_lsn, 1);
  assert_int_equal(e->last_lsn, PER_SEG);
  tg_wal_reader_close(r);

  /* A bad frame is not a gap. */
  s = NULL;
  tgt_seg_path(path, sizeof path, 1, "");
  int fd = open(path, O_WRONLY);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, "\xff\xff\xff\xff", 4, 64 + 10 * TGT_FRAME + 20), 4);
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
  tg_wal_reader *r = NULL;
  tg_wal_record rec;
  assert_int_equal(tg_wal_reader_open(&r, tgt_wal, 850), 0);
  assert_int_equal(tg_wal_reader_next(r, &rec), 1);
  assert_int_equal(rec.lsn, 850);
  assert_int_equal(rec.segment, 1 + PER_SEG);
  assert_int_equal(rec.offset, 64 + (850 - 1 - PER_SEG) * TGT_FRAME);
  assert_int_equal(tg_wal_reader_segments(r), 2);
  assert_int_equal(tg_wal_reader_segment(r, 1), 1 + PER_SEG);
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
   are missing, but all of them are in the checkpoint. */
static void make_live_copy(void) {
  tg_store *s = tgt_open_small_log();
  add_tokens(s, 1, 2000); /* segments 1, 819, 1637 */
  tgt_saved first = tgt_save_segment(1);
  assert_int_equal(tg_checkpoint(s), 0); /* covers 2000: 1 and 819 go */
  assert_false(exists(first.path));
  add_tokens(s, 2001, 2100);
  assert_int_equal(tg_store_close(s), 0);
  tgt_restore(&first);
}

/* The copy's second segment: the one that held 1637..2100 - or started a
   record sooner, when the checkpoint's fdatasync met the writer still in
   the segment before (its DURABLE marker then takes one record's room). */
static uint64_t live_copy_last_segment(void) {
  tg_wal_reader *r = NULL;
  assert_int_equal(tg_wal_reader_open(&r, tgt_wal, 0), 0);
  assert_int_equal(tg_wal_reader_segments(r), 2);
  uint64_t last = tg_wal_reader_segment(r, 1);
  tg_wal_reader_close(r);
  assert_true(last >= 1 + 2 * PER_SEG - 8 && last <= 1 + 2 * PER_SEG);
  return last;
}

static void test_a_gap_below_the_checkpoint_is_reported_apart_and_opens(void **state) {
  (void)state;
  make_live_copy();
  uint64_t last = live_copy_last_segment();
  tg_inspect_report r;
  inspect(&r);
  assert_int_equal(r.checkpoint_lsn, 2000);
  assert_int_equal(r.end.reason, TG_WAL_END_CLEAN);
  assert_int_equal(r.apply_failed_lsn, 0);
  assert_int_equal(r.last_lsn, 2100);
  assert_int_equal(r.replayed, 100);
  assert_int_equal(r.tokens, 2100);
  assert_int_equal(r.records, PER_SEG + (2100 - last + 1));
  assert_int_equal(r.covered_end.reason, TG_WAL_END_CORRUPT);
  assert_true(tg_wal_end_is_gap(&r.covered_end));
  assert_int_equal(r.covered_end.expected_lsn, 1 + PER_SEG);
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
  make_live_copy();
  char p[320];
  tgt_seg_path(p, sizeof p, live_copy_last_segment(), ""); /* holding ~1637..2100 */
  assert_int_equal(unlink(p), 0);

  uint64_t tokens = 0;
  char msg[512] = "";
  assert_int_equal(open_count(&tokens, msg, sizeof msg), TG_ECORRUPT);
  tg_inspect_report r;
  inspect(&r);
  assert_int_equal(r.end.reason, TG_WAL_END_CORRUPT);
  assert_int_equal(r.end.last_lsn, PER_SEG);

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
   segment starting at 819, which is then 64 + 181.5 frames long. */
static uint64_t make_torn_store(char *path, size_t len) {
  tg_store *s = tgt_open_small_log();
  add_tokens(s, 1, 1000);
  assert_int_equal(tg_store_close(s), 0);
  tgt_seg_path(path, len, 1 + PER_SEG, "");
  uint64_t cut = 64 + (1000 - 1 - PER_SEG) * TGT_FRAME;
  assert_int_equal(truncate(path, (off_t)(cut + TGT_FRAME / 2)), 0);
  return cut;
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
  tgt_seg_path(broken, sizeof broken, 1 + PER_SEG, ".broken");
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
  add_tokens(s, 1, 2400); /* segments 1, 819, 1637 */
  assert_int_equal(tg_store_close(s), 0);
  uint64_t segs[3] = {1, 1 + PER_SEG, 1 + 2 * PER_SEG};
  char path[3][320];
  char *orig[3];
  size_t len[3];
  for (int i = 0; i < 3; i++) tgt_seg_path(path[i], sizeof path[i], segs[i], "");
  /* Flip payload bytes of record 400: its CRC no longer matches. */
  uint64_t off = 64 + (400 - 1) * TGT_FRAME;
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
  /* 401..1636: 1637.. went aside in the first run. */
  assert_int_equal(rep->beyond.above, 2 * PER_SEG - 400);

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
