/*
 * tg-replay, run as a program: fixtures are built with the public API,
 * damaged with plain file I/O, and the tool's exit codes, output and the
 * files it leaves are checked.
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
#include <lmdb.h>

#include "tokengraph/tokengraph.h"
#include "util.h"

#ifndef TG_REPLAY_BIN
#error "TG_REPLAY_BIN must be the path of the tg-replay binary"
#endif


/* ---- running the tool ------------------------------------------------------ */

/* Run tg-replay with the given arguments (NULL-terminated), stdout and
   stderr captured in files (not terminals: no progress bar); a tool that
   does not end within the tests' patience fails the test. */
static tgt_run_out tool_v(const char *arg0, va_list ap) {
  const char *args[16];
  int n = 0;
  for (const char *a = arg0; a; a = va_arg(ap, const char *)) {
    assert_true(n < 15);
    args[n++] = a;
  }
  args[n] = NULL;
  tgt_run_out r = tgt_run(TG_REPLAY_BIN, args, NULL, tgt_root);
  if (r.status >= 128) fail_msg("tg-replay %s died with signal %d", arg0, r.status - 128);
  return r;
}

static tgt_run_out tool(const char *arg0, ...) {
  va_list ap;
  va_start(ap, arg0);
  tgt_run_out r = tool_v(arg0, ap);
  va_end(ap);
  return r;
}

/* tool(), for a run that must succeed: any other exit fails the test with
   what the tool printed. */
static tgt_run_out tool_ok(const char *arg0, ...) {
  va_list ap;
  va_start(ap, arg0);
  tgt_run_out r = tool_v(arg0, ap);
  va_end(ap);
  if (r.status != 0) fail_msg("tg-replay %s: exit %d: %s%s", arg0, r.status, r.out, r.err);
  return r;
}

/* Run the tool where only its exit status matters. */
static void assert_exit(int status, const char *arg0, ...) {
  va_list ap;
  va_start(ap, arg0);
  tgt_run_out r = tool_v(arg0, ap);
  va_end(ap);
  if (r.status != status)
    fail_msg("tg-replay %s: exit %d, not %d: %s%s", arg0, r.status, status, r.out, r.err);
  tgt_run_free(&r);
}

/* The number after "key": in a one-object JSON line. */
static uint64_t json_u64(const char *js, const char *key) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":", key);
  const char *p = strstr(js, pat);
  if (!p) fail_msg("no key %s in %s", key, js);
  return strtoull(p + strlen(pat), NULL, 10);
}

/* Does "key":"value" appear? */
static int json_is(const char *js, const char *key, const char *value) {
  char pat[160];
  snprintf(pat, sizeof pat, "\"%s\":\"%s\"", key, value);
  return strstr(js, pat) != NULL;
}

static int count_lines(const char *s) {
  int n = 0;
  for (; *s; s++) n += *s == '\n';
  return n;
}

/* One line on stderr, nothing else there. */
static void assert_one_error_line(const tgt_run_out *r) {
  if (count_lines(r->err) != 1 || strlen(r->err) < 10)
    fail_msg("expected one error line on stderr, got: '%s'", r->err);
}

/* ---- fixtures -------------------------------------------------------------- */

static tg_token token_n(uint32_t n) {
  tg_token t;
  memset(&t, 0, sizeof t);
  for (int i = 0; i < TG_SPACES; i++) t.coord[i][1] = (int16_t)(n + (uint32_t)i);
  t.weight = (float)n * 0.5f;
  t.timestamp = 1000000u + n;
  t.field_radius = (uint8_t)n;
  return t;
}

/* Tokens 1..n (LSN i creates token i), then `conns` connections i -> i+1. */
static void add_tokens(tg_store *s, uint32_t n, uint32_t conns) {
  for (uint32_t i = 1; i <= n; i++) {
    tg_token t = token_n(i);
    uint32_t id = 0;
    assert_int_equal(tg_token_create(s, &t, &id), 0);
  }
  for (uint32_t i = 1; i <= conns; i++) {
    tg_connection c;
    memset(&c, 0, sizeof c);
    c.from = i;
    c.to = i + 1;
    c.type = TG_CONN_TYPE(TG_CAT_CAUSAL, 3);
    c.confidence = 0.75f;
    uint32_t id = 0;
    assert_int_equal(tg_connect(s, &c, &id), 0);
  }
}

static void make_store(uint32_t n, uint32_t conns) {
  tg_store *s = tgt_open_small_log();
  add_tokens(s, n, conns);
  assert_int_equal(tg_store_close(s), 0);
}

/* The segment first LSNs, sorted; returns how many. */
static int segments(uint64_t *out, int max) {
  DIR *d = opendir(tgt_wal);
  assert_non_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t l = strlen(e->d_name);
    if (l != 24 || strcmp(e->d_name + 20, ".wal")) continue;
    assert_true(n < max);
    out[n++] = strtoull(e->d_name, NULL, 10);
  }
  closedir(d);
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && out[j - 1] > out[j]; j--) {
      uint64_t t = out[j];
      out[j] = out[j - 1];
      out[j - 1] = t;
    }
  return n;
}

/* Where the frame of record `lsn` sits, as the reader finds it. Not
   computed from 80-byte frames: a segment after a switch may hold a
   32-byte DURABLE marker before it (the sync thread's seal of the switch
   leaves one when its fdatasync covered records already in the new
   segment), at a place that depends on timing. */
static void locate(uint64_t lsn, uint64_t *seg, uint64_t *off) {
  tg_wal_reader *r = NULL;
  tg_wal_record rec;
  assert_int_equal(tg_wal_reader_open(&r, tgt_wal, lsn), 0);
  assert_int_equal(tg_wal_reader_next(r, &rec), 1);
  assert_int_equal(rec.lsn, lsn);
  assert_int_equal(rec.len, TGT_FRAME - 16);
  *seg = rec.segment;
  *off = rec.offset;
  tg_wal_reader_close(r);
}

static void pwrite_at(const char *path, uint64_t off, const void *buf, size_t len) {
  int fd = open(path, O_WRONLY);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, buf, len, (off_t)off), (ssize_t)len);
  close(fd);
}

static void pread_at(const char *path, uint64_t off, void *buf, size_t len) {
  int fd = open(path, O_RDONLY);
  assert_true(fd >= 0);
  assert_int_equal(pread(fd, buf, len, (off_t)off), (ssize_t)len);
  close(fd);
}

/* Flip bytes inside the payload of record `lsn`: its CRC no longer matches. */
static void corrupt_record(uint64_t lsn) {
  uint64_t seg, off;
  locate(lsn, &seg, &off);
  char path[320];
  tgt_seg_path(path, sizeof path, seg, "");
  unsigned char b[8];
  pread_at(path, off + 24, b, sizeof b);
  for (size_t i = 0; i < sizeof b; i++) b[i] ^= 0x5A;
  pwrite_at(path, off + 24, b, sizeof b);
}

/* All regular files under a directory, as "name\0size\0bytes" records. */
typedef struct snap {
  char *buf;
  size_t len, cap;
} snap;

static void snap_add(snap *s, const void *p, size_t n) {
  while (s->len + n > s->cap) {
    s->cap = s->cap ? s->cap * 2 : 1 << 20;
    s->buf = realloc(s->buf, s->cap);
    assert_non_null(s->buf);
  }
  memcpy(s->buf + s->len, p, n);
  s->len += n;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void snapshot_dir(const char *path, snap *s) {
  DIR *d = opendir(path);
  assert_non_null(d);
  char *names[256];
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    assert_true(n < 256);
    names[n++] = strdup(e->d_name);
  }
  closedir(d);
  qsort(names, (size_t)n, sizeof *names, cmp_str);
  for (int i = 0; i < n; i++) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", path, names[i]);
    struct stat st;
    assert_int_equal(lstat(p, &st), 0);
    snap_add(s, p, strlen(p) + 1);
    if (S_ISDIR(st.st_mode)) {
      snapshot_dir(p, s);
    } else {
      size_t len = 0;
      char *bytes = tgt_read_file(p, &len);
      snap_add(s, &len, sizeof len);
      snap_add(s, bytes, len);
      free(bytes);
    }
    free(names[i]);
  }
}

static snap snapshot(const char *path) {
  snap s = {NULL, 0, 0};
  snapshot_dir(path, &s);
  return s;
}

/* The directory is byte for byte as it was when *before was taken (which
   is freed). */
static void assert_unchanged_since(const char *path, snap *before) {
  snap after = snapshot(path);
  assert_int_equal(after.len, before->len);
  assert_memory_equal(after.buf, before->buf, before->len);
  free(after.buf);
  free(before->buf);
}

/* The store opens with exactly tokens 1..n (as created) and `conns`
   connections. */
static void assert_store_holds(uint32_t n, uint32_t conns) {
  tg_store *s = tgt_open_small_log();
  tg_store_stats st;
  assert_int_equal(tg_store_stats_get(s, &st), 0);
  assert_int_equal(st.live_tokens, n);
  assert_int_equal(st.live_connections, conns);
  for (uint32_t i = 1; i <= n; i++) {
    tg_token t, want = token_n(i);
    assert_int_equal(tg_token_get(s, i, &t), 0);
    assert_int_equal(t.timestamp, want.timestamp);
    assert_int_equal(t.coord[3][1], want.coord[3][1]);
  }
  tg_token t;
  assert_int_equal(tg_token_get(s, n + 1, &t), TG_ENOTFOUND);
  assert_int_equal(tg_store_close(s), 0);
}

/* ---- usage ----------------------------------------------------------------- */

static void test_usage_errors_exit_64(void **state) {
  (void)state;
  tgt_run_out r = tool(NULL);
  assert_int_equal(r.status, 64);
  tgt_run_free(&r);
  r = tool("frobnicate", tgt_data, NULL);
  assert_int_equal(r.status, 64);
  assert_non_null(strstr(r.err, "unknown command"));
  tgt_run_free(&r);
  assert_exit(64, "verify", NULL);
  assert_exit(64, "verify", tgt_data, "--bogus", NULL);
  assert_exit(64, "verify", tgt_data, tgt_data, NULL);
  assert_exit(64, "dump", tgt_data, "--from", "x", NULL);
  /* recover takes --json since it prints a result object; --from is
     dump's alone. */
  assert_exit(64, "recover", tgt_data, "--from", "5", NULL);
}

static void test_help_is_given_for_the_tool_and_every_command(void **state) {
  (void)state;
  const char *cmds[] = {"verify", "stats", "dump", "recover"};
  tgt_run_out r = tool("--help", NULL);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "usage: tg-replay"));
  assert_non_null(strstr(r.out, "64  usage error"));
  tgt_run_free(&r);
  for (int i = 0; i < 4; i++) {
    char want[64];
    snprintf(want, sizeof want, "usage: tg-replay %s DIR", cmds[i]);
    r = tool(cmds[i], "--help", NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, want));
    assert_non_null(strstr(r.out, "exit codes"));
    assert_non_null(strstr(r.out, "1   torn tail only"));
    tgt_run_free(&r);
  }
  r = tool("recover", "--help", NULL);
  assert_non_null(strstr(r.out, "--force-truncate-at-corruption"));
  tgt_run_free(&r);
}

static void test_version_prints_the_linked_library_version(void **state) {
  (void)state;
  char want[64];
  snprintf(want, sizeof want, "tg-replay %s\n", tg_version());
  tgt_run_out r = tool("--version", NULL);
  assert_int_equal(r.status, 0);
  assert_string_equal(r.out, want);
  assert_string_equal(r.err, "");
  tgt_run_free(&r);
  r = tool("verify", "--version", NULL);
  assert_int_equal(r.status, 0);
  assert_string_equal(r.out, want);
  tgt_run_free(&r);
}

static void test_json_prints_a_result_object_for_errors_too(void **state) {
  (void)state;
  const char *cmds[] = {"verify", "stats", "dump", "recover"};
  for (int i = 0; i < 4; i++) {
    tgt_run_out r = tool(cmds[i], tgt_data, "--json", NULL); /* data does not exist */
    assert_int_equal(r.status, 2);
    assert_int_equal(count_lines(r.out), 1);
    assert_true(r.out[0] == '{');
    assert_int_equal(json_u64(r.out, "exit"), 2);
    assert_true(json_is(r.out, "error", "ENOENT"));
    assert_non_null(strstr(r.out, "No such file"));
    assert_one_error_line(&r);
    tgt_run_free(&r);
  }
  tgt_run_out r = tool("verify", tgt_data, "--json", "--bogus", NULL);
  assert_int_equal(r.status, 64);
  assert_true(json_is(r.out, "status", "usage"));
  assert_int_equal(json_u64(r.out, "exit"), 64);
  tgt_run_free(&r);
}

/* ---- clean logs ------------------------------------------------------------ */

static void test_verify_reports_a_clean_log_and_exits_0(void **state) {
  (void)state;
  make_store(2000, 10); /* 2010 records over three 64 KiB segments */
  uint64_t segs[64];
  assert_true(segments(segs, 64) >= 3);

  tgt_run_out r = tool("verify", tgt_data, "--json", NULL);
  assert_int_equal(r.status, 0);
  assert_int_equal(count_lines(r.out), 1);
  assert_int_equal(json_u64(r.out, "records"), 2010);
  assert_int_equal(json_u64(r.out, "first_lsn"), 1);
  assert_int_equal(json_u64(r.out, "last_lsn"), 2010);
  assert_true(json_is(r.out, "end", "clean"));
  assert_int_equal(json_u64(r.out, "tokens"), 2000);
  assert_int_equal(json_u64(r.out, "connections"), 10);
  assert_non_null(strstr(r.out, "\"segment\":\""));
  assert_non_null(strstr(r.out, "\"offset\":"));
  /* Not a terminal: no progress bar, nothing at all on stderr. */
  assert_string_equal(r.err, "");
  tgt_run_free(&r);

  r = tool("verify", tgt_data, NULL);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "2010 records, LSN 1..2010"));
  assert_non_null(strstr(r.out, "end:         clean"));
  assert_string_equal(r.err, "");
  tgt_run_free(&r);
}

static void test_stats_reports_checkpoint_and_state_after_replay(void **state) {
  (void)state;
  tg_store *s = tgt_open_small_log();
  add_tokens(s, 1500, 0);
  assert_int_equal(tg_checkpoint(s), 0);
  for (uint32_t i = 1; i <= 100; i++) assert_int_equal(tg_token_delete(s, i), 0);
  assert_int_equal(tg_store_close(s), 0);

  tgt_run_out r = tool("stats", tgt_data, "--json", NULL);
  assert_int_equal(r.status, 0);
  assert_int_equal(json_u64(r.out, "checkpoint_lsn"), 1500);
  assert_int_equal(json_u64(r.out, "checkpoint_tokens"), 1500);
  assert_int_equal(json_u64(r.out, "checkpoint_connections"), 0);
  assert_int_equal(json_u64(r.out, "replayed"), 100);
  assert_int_equal(json_u64(r.out, "last_lsn"), 1600);
  assert_int_equal(json_u64(r.out, "tokens"), 1400);
  assert_int_equal(json_u64(r.out, "connections"), 0);
  uint64_t first = json_u64(r.out, "first_lsn");
  assert_true(first > 1 && first <= 1501); /* covered segments were removed */
  assert_int_equal(json_u64(r.out, "records"), 1600 - first + 1);
  uint64_t segs[64];
  assert_int_equal(json_u64(r.out, "segments"), (uint64_t)segments(segs, 64));
  tgt_run_free(&r);

  r = tool("stats", tgt_data, NULL);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "checkpoint:  LSN 1500, 1500 tokens"));
  assert_non_null(strstr(r.out, "state:       1400 tokens, 0 connections"));
  assert_non_null(strstr(r.out, "replayed:    100 records"));
  tgt_run_free(&r);
}

static void test_dump_prints_every_record_decoded(void **state) {
  (void)state;
  tg_store *s = tgt_open_small_log();
  add_tokens(s, 3, 2);                                     /* LSN 1..5 */
  assert_int_equal(tg_disconnect(s, 1), 0);                /* LSN 6 */
  assert_int_equal(tg_token_delete(s, 3), 0);              /* LSN 7, 8 (its connection) */
  assert_int_equal(tg_store_close(s), 0);

  tgt_run_out r = tool("dump", tgt_data, "--json", NULL);
  assert_int_equal(r.status, 0);
  int lines = count_lines(r.out);
  assert_true(lines >= 7);
  const char *l1 = r.out;
  assert_int_equal(json_u64(l1, "lsn"), 1);
  assert_true(json_is(l1, "type", "TOKEN_PUT"));
  assert_int_equal(json_u64(l1, "id"), 1);
  assert_int_equal(json_u64(l1, "timestamp"), 1000001);
  assert_int_equal(json_u64(l1, "field_radius"), 1);
  assert_non_null(strstr(l1, "\"coord\":[[0,1,0],[0,2,0]"));
  const char *l4 = strstr(r.out, "{\"lsn\":4,");
  assert_non_null(l4);
  assert_true(json_is(l4, "type", "CONN_PUT"));
  assert_int_equal(json_u64(l4, "from"), 1);
  assert_int_equal(json_u64(l4, "to"), 2);
  assert_non_null(strstr(l4, "\"connection\":{\"id\":1,"));
  assert_true(json_is(l4, "category", "causal"));
  assert_non_null(strstr(l4, "\"confidence\":0.75"));
  const char *l6 = strstr(r.out, "{\"lsn\":6,");
  assert_non_null(l6);
  assert_true(json_is(l6, "type", "CONN_DEL"));
  assert_int_equal(json_u64(l6, "id"), 1);
  assert_non_null(strstr(r.out, "\"type\":\"TOKEN_DEL\",\"len\":4,\"id\":3}"));
  tgt_run_free(&r);

  r = tool("dump", tgt_data, NULL);
  assert_int_equal(r.status, 0);
  assert_true(strncmp(r.out, "LSN 1 TOKEN_PUT id=1 ", 21) == 0);
  assert_non_null(strstr(r.out, "LSN 4 CONN_PUT id=1 from=1 to=2 type=19 (causal/3)"));
  assert_non_null(strstr(r.out, "LSN 6 CONN_DEL id=1\n"));
  assert_non_null(strstr(r.out, "TOKEN_DEL id=3\n"));
  tgt_run_free(&r);

  r = tool("dump", tgt_data, "--from", "6", "--json", NULL);
  assert_int_equal(r.status, 0);
  assert_int_equal(json_u64(r.out, "lsn"), 6);
  assert_int_equal(count_lines(r.out), lines - 5);
  tgt_run_free(&r);
}

/* ---- torn tails ------------------------------------------------------------ */

/* Where the last record of a 1000-record store sits. */
typedef struct last_record {
  uint64_t seg;     /* the first LSN of its segment */
  uint64_t off;     /* its offset in the segment */
  char path[320];   /* the segment */
  char broken[340]; /* where recover keeps what it cuts from the segment */
} last_record;

static last_record make_1000(void) {
  last_record l;
  make_store(1000, 0);
  locate(1000, &l.seg, &l.off);
  tgt_seg_path(l.path, sizeof l.path, l.seg, "");
  tgt_seg_path(l.broken, sizeof l.broken, l.seg, ".broken");
  return l;
}

/* The same, where the last record's write stopped half way: the file ends
   mid-frame. */
static last_record make_torn_tail(void) {
  last_record l = make_1000();
  assert_int_equal(truncate(l.path, (off_t)(l.off + TGT_FRAME / 2)), 0);
  return l;
}

static void test_a_torn_tail_exits_1_with_segment_and_offset(void **state) {
  (void)state;
  last_record l = make_torn_tail();

  tgt_run_out r = tool("verify", tgt_data, "--json", NULL);
  assert_int_equal(r.status, 1);
  assert_true(json_is(r.out, "end", "torn_tail"));
  assert_int_equal(json_u64(r.out, "records"), 999);
  assert_int_equal(json_u64(r.out, "last_lsn"), 999);
  assert_int_equal(json_u64(r.out, "offset"), l.off);
  char name[32];
  snprintf(name, sizeof name, "%020llu.wal", (unsigned long long)l.seg);
  assert_true(json_is(r.out, "segment", name));
  assert_int_equal(json_u64(r.out, "tokens"), 999);
  assert_one_error_line(&r);
  assert_non_null(strstr(r.err, "torn tail"));
  tgt_run_free(&r);

  r = tool("stats", tgt_data, NULL);
  assert_int_equal(r.status, 1);
  assert_non_null(strstr(r.out, "torn tail in wal/"));
  tgt_run_free(&r);
  /* 999 records, then the result object (since --json always ends with
     one: a deliberate change from records alone). */
  r = tool("dump", tgt_data, "--json", NULL);
  assert_int_equal(r.status, 1);
  assert_int_equal(count_lines(r.out), 1000);
  const char *result = strstr(r.out, "{\"dir\":");
  assert_non_null(result);
  assert_int_equal(json_u64(result, "printed"), 999);
  assert_int_equal(json_u64(result, "exit"), 1);
  assert_true(json_is(result, "status", "torn_tail"));
  assert_one_error_line(&r);
  tgt_run_free(&r);
}

static void test_recover_cuts_a_torn_tail_keeping_the_cut_bytes(void **state) {
  (void)state;
  last_record l = make_torn_tail();
  unsigned char cut[TGT_FRAME / 2];
  pread_at(l.path, l.off, cut, sizeof cut);

  tgt_run_out r = tool_ok("recover", tgt_data, NULL);
  assert_non_null(strstr(r.out, "result:      recovered"));
  assert_string_equal(r.err, "");
  tgt_run_free(&r);
  /* The cut bytes are kept beside the segment, exactly. */
  assert_int_equal(tgt_file_size(l.broken), sizeof cut);
  size_t len = 0;
  char *kept = tgt_read_file(l.broken, &len);
  assert_memory_equal(kept, cut, sizeof cut);
  free(kept);

  r = tool("verify", tgt_data, "--json", NULL);
  assert_int_equal(r.status, 0);
  assert_true(json_is(r.out, "end", "clean"));
  assert_int_equal(json_u64(r.out, "tokens"), 999);
  assert_int_equal(json_u64(r.out, "checkpoint_lsn"), 999);
  tgt_run_free(&r);
  assert_store_holds(999, 0);
}

static void test_recover_cuts_garbage_in_preallocated_space(void **state) {
  (void)state;
  last_record l = make_1000();
  uint64_t end = l.off + TGT_FRAME, size = tgt_file_size(l.path);
  assert_true(size > end + 100); /* preallocated: zeros follow the data */
  /* Half a frame of a record that was being written, in the zeros. */
  unsigned char part[40];
  pread_at(l.path, l.off, part, sizeof part);
  part[8] = 0xE9; /* LSN 1001 */
  part[9] = 0x03;
  pwrite_at(l.path, end, part, sizeof part);

  tgt_run_out r = tool("verify", tgt_data, "--json", NULL);
  assert_int_equal(r.status, 1);
  assert_int_equal(json_u64(r.out, "records"), 1000);
  assert_int_equal(json_u64(r.out, "offset"), end);
  tgt_run_free(&r);

  r = tool_ok("recover", tgt_data, NULL);
  tgt_run_free(&r);
  /* Everything from the cut to the old end of the file, zeros included. */
  assert_int_equal(tgt_file_size(l.broken), size - end);
  size_t len = 0;
  char *kept = tgt_read_file(l.broken, &len);
  assert_memory_equal(kept, part, sizeof part);
  for (size_t i = sizeof part; i < len; i++) assert_int_equal(kept[i], 0);
  free(kept);
  assert_exit(0, "verify", tgt_data, NULL);
  assert_store_holds(1000, 0);
}

static void test_recover_of_a_clean_log_writes_a_checkpoint_and_exits_0(void **state) {
  (void)state;
  make_store(300, 5);
  tgt_run_out r = tool("recover", tgt_data, NULL);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "nothing to cut"));
  assert_non_null(strstr(r.out, "checkpoint:  written at LSN 305"));
  tgt_run_free(&r);
  r = tool("stats", tgt_data, "--json", NULL);
  assert_int_equal(r.status, 0);
  assert_int_equal(json_u64(r.out, "checkpoint_lsn"), 305);
  assert_int_equal(json_u64(r.out, "checkpoint_tokens"), 300);
  assert_int_equal(json_u64(r.out, "checkpoint_connections"), 5);
  tgt_run_free(&r);
  DIR *d = opendir(tgt_wal);
  struct dirent *e;
  while ((e = readdir(d))) assert_null(strstr(e->d_name, ".broken"));
  closedir(d);
}

/* ---- corruption ------------------------------------------------------------ */

static void test_corruption_exits_2_and_recover_refuses_changing_nothing(void **state) {
  (void)state;
  make_store(2400, 0); /* three segments */
  uint64_t segs[64];
  assert_int_equal(segments(segs, 64), 3);
  uint64_t bad = 400, seg, off;
  locate(bad, &seg, &off);
  assert_int_equal(seg, segs[0]);
  corrupt_record(bad);

  tgt_run_out r = tool("verify", tgt_data, "--json", NULL);
  assert_int_equal(r.status, 2);
  assert_true(json_is(r.out, "end", "corrupt"));
  assert_int_equal(json_u64(r.out, "records"), bad - 1);
  assert_int_equal(json_u64(r.out, "last_lsn"), bad - 1);
  assert_int_equal(json_u64(r.out, "offset"), off);
  assert_true(json_is(r.out, "segment", "00000000000000000001.wal"));
  assert_one_error_line(&r);
  tgt_run_free(&r);

  snap before = snapshot(tgt_data);
  r = tool("recover", tgt_data, NULL);
  assert_int_equal(r.status, 2);
  assert_one_error_line(&r);
  assert_non_null(strstr(r.err, "--force-truncate-at-corruption"));
  assert_non_null(strstr(r.out, "2000 valid records"));
  tgt_run_free(&r);
  assert_unchanged_since(tgt_data, &before);
}

static void test_forced_recover_drops_exactly_the_records_after_the_corruption(void **state) {
  (void)state;
  make_store(2400, 0);
  uint64_t segs[64];
  assert_int_equal(segments(segs, 64), 3);
  uint64_t bad = 400, seg, off;
  locate(bad, &seg, &off);
  char path[320], p2[320], p3[320];
  tgt_seg_path(path, sizeof path, segs[0], "");
  tgt_seg_path(p2, sizeof p2, segs[1], "");
  tgt_seg_path(p3, sizeof p3, segs[2], "");
  corrupt_record(bad);
  size_t l1 = 0, l2 = 0, l3 = 0;
  char *orig1 = tgt_read_file(path, &l1), *orig2 = tgt_read_file(p2, &l2), *orig3 = tgt_read_file(p3, &l3);

  tgt_run_out r = tool_ok("recover", tgt_data, "--force-truncate-at-corruption", NULL);
  /* Valid records after the corruption: 401..2400 (400 itself is unreadable). */
  assert_non_null(strstr(r.out, "dropping:    2000 records"));
  assert_non_null(strstr(r.out, "LSN 401..2400"));
  tgt_run_free(&r);

  /* The cut bytes and the later segments are kept, byte for byte. */
  char b1[340], b2[340], b3[340];
  tgt_seg_path(b1, sizeof b1, segs[0], ".broken");
  tgt_seg_path(b2, sizeof b2, segs[1], ".broken");
  tgt_seg_path(b3, sizeof b3, segs[2], ".broken");
  size_t k1 = 0, k2 = 0, k3 = 0;
  char *kept1 = tgt_read_file(b1, &k1), *kept2 = tgt_read_file(b2, &k2), *kept3 = tgt_read_file(b3, &k3);
  assert_int_equal(k1, l1 - off);
  assert_memory_equal(kept1, orig1 + off, k1);
  assert_int_equal(k2, l2);
  assert_memory_equal(kept2, orig2, l2);
  assert_int_equal(k3, l3);
  assert_memory_equal(kept3, orig3, l3);
  free(kept1), free(kept2), free(kept3), free(orig1), free(orig2), free(orig3);
  struct stat st;
  assert_int_equal(stat(p3, &st), -1);

  r = tool("verify", tgt_data, "--json", NULL);
  assert_int_equal(r.status, 0);
  assert_true(json_is(r.out, "end", "clean"));
  assert_int_equal(json_u64(r.out, "tokens"), bad - 1);
  tgt_run_free(&r);
  assert_store_holds((uint32_t)bad - 1, 0);
}

static void test_corruption_in_the_last_segment_before_valid_records(void **state) {
  (void)state;
  make_store(1500, 0); /* two segments */
  uint64_t segs[64];
  assert_int_equal(segments(segs, 64), 2);
  uint64_t bad = 1200;
  corrupt_record(bad);
  tgt_run_out r = tool("verify", tgt_data, "--json", NULL);
  assert_int_equal(r.status, 2); /* valid frames follow: not a torn tail */
  assert_true(json_is(r.out, "end", "corrupt"));
  assert_int_equal(json_u64(r.out, "records"), bad - 1);
  tgt_run_free(&r);
  assert_exit(2, "recover", tgt_data, NULL);
  r = tool("recover", tgt_data, "--force-truncate-at-corruption", NULL);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "dropping:    300 records"));
  tgt_run_free(&r);
  assert_store_holds((uint32_t)bad - 1, 0);
}

/* ---- the durable point: the tool and the store give one answer ---------- */

/* Open the store on `data` as an application would: rc, and msg. */
static int store_open_rc(char *msg, size_t len, tg_recovery_info *ri) {
  tg_store_config cfg = tgt_small_log_config();
  tg_store *s = NULL;
  int rc = tg_store_open_msg(&s, tgt_data, &cfg, msg, len);
  if (!rc) {
    if (ri) tg_store_recovery_info(s, ri);
    assert_int_equal(tg_store_close(s), 0);
  }
  return rc;
}


/* tg-replay verify --json on the data directory exits with `status` and
   reports the log's end as `end` at `offset`, after `last_lsn`. */
static void verify_says(int status, const char *end, uint64_t offset, uint64_t last_lsn) {
  tgt_run_out r = tool("verify", tgt_data, "--json", NULL);
  assert_int_equal(r.status, status);
  assert_true(json_is(r.out, "end", end));
  assert_int_equal(json_u64(r.out, "offset"), offset);
  assert_int_equal(json_u64(r.out, "last_lsn"), last_lsn);
  tgt_run_free(&r);
}

static void test_a_zeroed_sector_before_the_durable_point_is_refused_by_both(void **state) {
  (void)state;
  make_store(1000, 0);
  uint64_t seg, off;
  locate(900, &seg, &off);
  char path[320];
  tgt_seg_path(path, sizeof path, seg, "");
  unsigned char zeros[512] = {0};
  pwrite_at(path, off, zeros, sizeof zeros); /* valid frames follow it */

  verify_says(2, "corrupt", off, 899);
  snap before = snapshot(tgt_data);
  char msg[512] = "", want[64];
  assert_int_equal(store_open_rc(msg, sizeof msg, NULL), TG_ECORRUPT);
  snprintf(want, sizeof want, "%020llu.wal", (unsigned long long)seg);
  assert_non_null(strstr(msg, want));
  snprintf(want, sizeof want, "offset %llu", (unsigned long long)off);
  assert_non_null(strstr(msg, want));
  assert_unchanged_since(tgt_data, &before); /* nothing cut */
}

static void test_a_deleted_last_segment_is_refused_by_both(void **state) {
  (void)state;
  make_store(1500, 0);
  uint64_t segs[64];
  assert_int_equal(segments(segs, 64), 2);
  char path[320];
  tgt_seg_path(path, sizeof path, segs[1], "");
  assert_int_equal(unlink(path), 0);
  tgt_run_out r = tool("verify", tgt_data, "--json", NULL);
  assert_int_equal(r.status, 2);
  assert_true(json_is(r.out, "end", "corrupt"));
  assert_int_equal(json_u64(r.out, "last_lsn"), segs[1] - 1);
  tgt_run_free(&r);
  char msg[512] = "";
  assert_int_equal(store_open_rc(msg, sizeof msg, NULL), TG_ECORRUPT);
  assert_non_null(strstr(msg, "is missing"));
}

static void test_a_torn_unsynced_frame_then_a_valid_one_is_a_torn_tail_for_both(void **state) {
  (void)state;
  /* One segment: at RELAXED only a switch's seal and the close fdatasync,
     so no DURABLE marker but the close's lies among the records (with a
     switch, the seal's marker lands after a number of records that
     depends on timing, and may make record 690 durable). */
  make_store(700, 0);
  uint64_t segs[4];
  assert_int_equal(segments(segs, 4), 1);
  uint64_t seg, off, last;
  locate(700, &seg, &last);
  char path[320], broken[340];
  tgt_seg_path(path, sizeof path, seg, "");
  tgt_seg_path(broken, sizeof broken, seg, ".broken");
  /* As a killed process leaves it: no marker from close (RELAXED: nothing
     in this segment was fdatasynced), then record 690 torn with 691..700
     intact after it. */
  unsigned char zeros[32] = {0};
  pwrite_at(path, last + TGT_FRAME, zeros, sizeof zeros);
  locate(690, &seg, &off);
  corrupt_record(690);

  verify_says(1, "torn_tail", off, 689);
  size_t len = 0;
  char *orig = tgt_read_file(path, &len);

  char msg[512] = "";
  tg_recovery_info ri;
  assert_int_equal(store_open_rc(msg, sizeof msg, &ri), 0);
  assert_int_equal(ri.torn_tail, 1);
  assert_int_equal(ri.torn_offset, off);
  assert_int_equal(ri.last_lsn, 689);
  size_t kl = 0;
  char *kept = tgt_read_file(broken, &kl); /* the cut bytes, kept */
  assert_int_equal(kl, len - off);
  assert_memory_equal(kept, orig + off, kl);
  free(kept);
  free(orig);
  tgt_run_out r = tool("verify", tgt_data, "--json", NULL);
  assert_int_equal(r.status, 0);
  assert_true(json_is(r.out, "end", "clean"));
  tgt_run_free(&r);
  assert_store_holds(689, 0);
}

static void test_a_record_that_does_not_apply_is_treated_as_corruption(void **state) {
  (void)state;
  make_store(500, 0);
  /* Append to the log behind the store's back: a delete of a token that
     never existed (LSN 501), then a valid create (LSN 502). */
  tg_wal_config wc;
  tg_wal_config_init(&wc);
  wc.segment_bytes = TGT_SEG_BYTES;
  wc.ring_slots = 64;
  tg_wal *w = NULL;
  assert_int_equal(tg_wal_open(&w, tgt_wal, &wc, NULL), 0);
  uint32_t ghost = 77777;
  uint64_t lsn = 0;
  assert_int_equal(tg_wal_append(w, TG_REC_TOKEN_DEL, &ghost, sizeof ghost, &lsn), 0);
  assert_int_equal(lsn, 501);
  tg_token t = token_n(501);
  t.id = 501;
  t.flags = TG_TOKEN_ACTIVE;
  assert_int_equal(tg_wal_append(w, TG_REC_TOKEN_PUT, &t, sizeof t, &lsn), 0);
  assert_int_equal(tg_wal_close(w), 0);

  tgt_run_out r = tool("verify", tgt_data, "--json", NULL);
  assert_int_equal(r.status, 2);
  assert_int_equal(json_u64(r.out, "apply_failed_lsn"), 501);
  assert_true(json_is(r.out, "status", "apply_failed"));
  assert_int_equal(json_u64(r.out, "records"), 502);
  assert_one_error_line(&r);
  tgt_run_free(&r);

  snap before = snapshot(tgt_data);
  r = tool("recover", tgt_data, NULL);
  assert_int_equal(r.status, 2);
  assert_non_null(strstr(r.out, "2 valid records"));
  tgt_run_free(&r);
  assert_unchanged_since(tgt_data, &before);

  r = tool_ok("recover", tgt_data, "--force-truncate-at-corruption", NULL);
  assert_non_null(strstr(r.out, "dropping:    2 records"));
  tgt_run_free(&r);
  assert_exit(0, "verify", tgt_data, NULL);
  assert_store_holds(500, 0);
}

static void test_corruption_before_the_checkpoint_restarts_the_log_after_it(void **state) {
  (void)state;
  tg_store *s = tgt_open_small_log();
  add_tokens(s, 2400, 0);
  assert_int_equal(tg_checkpoint(s), 0); /* covers LSN 2400 */
  for (uint32_t i = 2401; i <= 2500; i++) {
    tg_token t = token_n(i);
    uint32_t id = 0;
    assert_int_equal(tg_token_create(s, &t, &id), 0);
  }
  assert_int_equal(tg_store_close(s), 0);
  uint64_t segs[64];
  assert_int_equal(segments(segs, 64), 2); /* the covered ones were removed */
  assert_true(segs[0] > 1 && segs[0] < 1700 && segs[1] > 2400);
  corrupt_record(1700);

  tgt_run_out r = tool("verify", tgt_data, "--json", NULL);
  assert_int_equal(r.status, 2);
  assert_int_equal(json_u64(r.out, "checkpoint_lsn"), 2400);
  tgt_run_free(&r);
  r = tool_ok("recover", tgt_data, "--force-truncate-at-corruption", NULL);
  /* 1701..2400 are in the checkpoint; 2401..2500 followed the corruption. */
  assert_non_null(strstr(r.out, "dropping:    100 records"));
  assert_non_null(strstr(r.out, "700 more are covered by the checkpoint"));
  assert_non_null(strstr(r.out, "restart:"));
  tgt_run_free(&r);
  char broken[340];
  tgt_seg_path(broken, sizeof broken, segs[0], ".broken");
  assert_int_equal(tgt_file_size(broken), TGT_SEG_BYTES); /* moved aside whole */
  tgt_seg_path(broken, sizeof broken, segs[1], ".broken");
  assert_int_equal(tgt_file_size(broken), TGT_SEG_BYTES);
  assert_exit(0, "verify", tgt_data, NULL);
  assert_store_holds(2400, 0);
}

static void test_a_missing_segment_between_checkpoint_and_log_is_corruption(void **state) {
  (void)state;
  make_store(2000, 0); /* segments 1, 819, 1637; no checkpoint */
  uint64_t segs[64];
  assert_int_equal(segments(segs, 64), 3);
  char path[320];
  tgt_seg_path(path, sizeof path, segs[0], "");
  assert_int_equal(unlink(path), 0); /* records 1..818 are gone */

  tgt_run_out r = tool("verify", tgt_data, "--json", NULL);
  assert_int_equal(r.status, 2);
  assert_true(json_is(r.out, "end", "corrupt"));
  assert_true(json_is(r.out, "status", "corrupt"));
  assert_int_equal(json_u64(r.out, "first_lsn"), segs[1]);
  assert_int_equal(json_u64(r.out, "offset"), 0);
  assert_one_error_line(&r);
  assert_non_null(strstr(r.err, "missing"));
  tgt_run_free(&r);
  assert_exit(2, "recover", tgt_data, NULL);
  /* Nothing of the log can be replayed: all of it goes aside. */
  r = tool_ok("recover", tgt_data, "--force-truncate-at-corruption", NULL);
  assert_non_null(strstr(r.out, "dropping:    1182 records"));
  tgt_run_free(&r);
  assert_store_holds(0, 0);
}

/* ---- the tool and the store agree -------------------------------------------- */

static void test_a_zero_length_checkpoint_verifies_as_the_store_opens_it(void **state) {
  (void)state;
  make_store(300, 5);
  char p[320];
  snprintf(p, sizeof p, "%s/checkpoint/data.mdb", tgt_data);
  assert_int_equal(truncate(p, 0), 0);
  tgt_run_out r = tool_ok("verify", tgt_data, "--json", NULL);
  assert_true(json_is(r.out, "end", "clean"));
  assert_int_equal(json_u64(r.out, "checkpoint_lsn"), 0);
  assert_int_equal(json_u64(r.out, "tokens"), 300);
  assert_int_equal(json_u64(r.out, "connections"), 5);
  tgt_run_free(&r);
  assert_store_holds(300, 5);
}

/* A copy taken while a checkpoint deleted segments: the oldest segment from
   before the checkpoint, the rest from after. The records missing between
   them are all in the checkpoint: the store replays the copy, and so must
   the tool, without dropping anything. */
static void test_a_copy_with_a_gap_below_the_checkpoint_is_clean_and_kept(void **state) {
  (void)state;
  tg_store *s = tgt_open_small_log();
  add_tokens(s, 2000, 0); /* segments 1, 819, 1637 */
  tgt_saved first = tgt_save_segment(1);
  assert_int_equal(tg_checkpoint(s), 0); /* covers 2000; 1 and 819 go */
  for (uint32_t i = 2001; i <= 2100; i++) {
    tg_token t = token_n(i);
    uint32_t id = 0;
    assert_int_equal(tg_token_create(s, &t, &id), 0);
  }
  assert_int_equal(tg_store_close(s), 0);
  tgt_restore(&first);
  /* The third segment usually starts at 1637; one record sooner when the
     checkpoint's fdatasync met the writer still in the second segment (its
     DURABLE marker then takes the room of one record). */
  uint64_t segs[8];
  assert_int_equal(segments(segs, 8), 2);
  uint64_t third = segs[1];
  assert_true(third >= 1630 && third <= 1637);

  tgt_run_out r = tool_ok("verify", tgt_data, "--json", NULL);
  assert_true(json_is(r.out, "end", "clean"));
  assert_int_equal(json_u64(r.out, "last_lsn"), 2100);
  assert_int_equal(json_u64(r.out, "tokens"), 2100);
  const char *cov = strstr(r.out, "\"covered_damage\":{");
  assert_non_null(cov);
  assert_int_equal(json_u64(cov, "expected_lsn"), 819);
  assert_int_equal(json_u64(cov, "found_lsn"), third);
  assert_string_equal(r.err, "");
  tgt_run_free(&r);
  r = tool("verify", tgt_data, NULL);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "covered:"));
  tgt_run_free(&r);
  /* dump goes on past the gap, where replay reads. */
  r = tool("dump", tgt_data, "--json", NULL);
  assert_int_equal(r.status, 0);
  assert_int_equal(count_lines(r.out), 818 + (2100 - third + 1) + 1); /* + the result */
  assert_int_equal(json_u64(strstr(r.out, "{\"dir\":"), "printed"), 818 + (2100 - third + 1));
  assert_non_null(strstr(r.out, "{\"lsn\":2100,"));
  tgt_run_free(&r);

  r = tool_ok("recover", tgt_data, "--force-truncate-at-corruption", NULL);
  assert_non_null(strstr(r.out, "nothing to cut"));
  assert_null(strstr(r.out, "dropping:"));
  tgt_run_free(&r);
  assert_store_holds(2100, 0);
}

/* A torn tail in a segment whose header claims a 1 TiB segment (with a
   right CRC: only the value is absurd). */
static void make_torn_with_a_huge_header(char *path, size_t len) {
  last_record l = make_torn_tail();
  snprintf(path, len, "%s", l.path);
  tgt_claim_segment_bytes(path, 1ull << 40);
}

static void test_recover_bounds_segments_by_the_configured_size(void **state) {
  (void)state;
  char path[320], ini[320];
  make_torn_with_a_huge_header(path, sizeof path);
  snprintf(ini, sizeof ini, "%s/store.ini", tgt_root);
  FILE *f = fopen(ini, "w");
  fprintf(f, "[wal]\nsegment_bytes = %u\n", TGT_SEG_BYTES);
  fclose(f);
  tgt_run_out r = tool_ok("recover", tgt_data, "--config", ini, "--json", NULL);
  assert_int_equal(json_u64(r.out, "segment_bytes"), TGT_SEG_BYTES);
  tgt_run_free(&r);
  assert_true(tgt_file_size(path) <= TGT_SEG_BYTES);
  assert_store_holds(999, 0);

  /* Without a configuration the default size bounds it, never the header. */
  tgt_rmtree(tgt_data);
  make_torn_with_a_huge_header(path, sizeof path);
  r = tool_ok("recover", tgt_data, "--json", NULL);
  uint64_t used = json_u64(r.out, "segment_bytes");
  assert_true(used <= 64u << 20);
  tgt_run_free(&r);
  assert_true(tgt_file_size(path) <= 64u << 20);

  r = tool("recover", tgt_data, "--config", "/nonexistent/store.ini", NULL);
  assert_int_equal(r.status, 2);
  assert_one_error_line(&r);
  tgt_run_free(&r);
}

/* ---- bad input ------------------------------------------------------------- */

/* Every command fails with one line on stderr and exit 2, never a crash. */
static void assert_every_command_refuses(const char *path, const char *needle) {
  const char *cmds[] = {"verify", "stats", "dump", "recover"};
  for (int i = 0; i < 4; i++) {
    tgt_run_out r = tool(cmds[i], path, NULL);
    if (r.status != 2) fail_msg("%s %s: exit %d: %s%s", cmds[i], path, r.status, r.out, r.err);
    assert_one_error_line(&r);
    if (needle && !strstr(r.err, needle))
      fail_msg("%s %s: '%s' not in '%s'", cmds[i], path, needle, r.err);
    tgt_run_free(&r);
    r = tool(cmds[i], path, "--json", NULL);
    assert_true(r.status == 2 || r.status == 64); /* recover has no --json */
    tgt_run_free(&r);
  }
}

static void test_a_missing_directory_is_refused(void **state) {
  (void)state;
  assert_every_command_refuses(tgt_data, "No such file");
  struct stat st;
  assert_int_equal(stat(tgt_data, &st), -1); /* recover created nothing */
}

static void test_a_file_instead_of_a_directory_is_refused(void **state) {
  (void)state;
  tgt_write_file(tgt_data, "hello\n");
  assert_every_command_refuses(tgt_data, "not a directory");
}

static void test_an_empty_directory_is_refused_and_left_empty(void **state) {
  (void)state;
  assert_int_equal(mkdir(tgt_data, 0700), 0);
  assert_every_command_refuses(tgt_data, "empty");
  DIR *d = opendir(tgt_data);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) n++;
  closedir(d);
  assert_int_equal(n, 2);
}

static void test_a_directory_that_is_not_tokengraph_is_refused(void **state) {
  (void)state;
  assert_int_equal(mkdir(tgt_data, 0700), 0);
  char p[320];
  snprintf(p, sizeof p, "%s/notes.txt", tgt_data);
  tgt_write_file(p, "not ours\n");
  assert_every_command_refuses(tgt_data, "not a tokengraph");
}

static void test_a_segment_with_wrong_magic_is_corruption(void **state) {
  (void)state;
  make_store(100, 0);
  char path[320];
  tgt_seg_path(path, sizeof path, 1, "");
  pwrite_at(path, 0, "XXWALSEG", 8);
  const char *cmds[] = {"verify", "stats", "dump"};
  for (int i = 0; i < 3; i++) {
    tgt_run_out r = tool(cmds[i], tgt_data, NULL);
    assert_int_equal(r.status, 2);
    assert_one_error_line(&r);
    assert_non_null(strstr(r.err, "bad segment magic"));
    tgt_run_free(&r);
  }
  tgt_run_out r = tool("verify", tgt_data, "--json", NULL);
  assert_true(json_is(r.out, "end", "corrupt"));
  assert_int_equal(json_u64(r.out, "records"), 0);
  assert_int_equal(json_u64(r.out, "offset"), 0);
  tgt_run_free(&r);
  assert_exit(2, "recover", tgt_data, NULL);
  /* Forced: the whole segment goes aside and the store starts empty. */
  r = tool_ok("recover", tgt_data, "--force-truncate-at-corruption", NULL);
  assert_non_null(strstr(r.out, "dropping:    100 records"));
  tgt_run_free(&r);
  char broken[340];
  tgt_seg_path(broken, sizeof broken, 1, ".broken");
  assert_int_equal(tgt_file_size(broken), TGT_SEG_BYTES);
  assert_store_holds(0, 0);
}

/* Replace path with n pseudo-random bytes from seed. */
static void write_junk(const char *path, size_t n, unsigned seed) {
  unsigned char *junk = malloc(n);
  assert_non_null(junk);
  srand(seed);
  for (size_t i = 0; i < n; i++) junk[i] = (unsigned char)rand();
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(junk, 1, n, f), n);
  assert_int_equal(fclose(f), 0);
  free(junk);
}

static void test_random_bytes_as_a_segment_are_corruption(void **state) {
  (void)state;
  make_store(10, 0);
  char path[320];
  tgt_seg_path(path, sizeof path, 1, "");
  write_junk(path, 8192, 7);
  const char *cmds[] = {"verify", "stats", "dump", "recover"};
  for (int i = 0; i < 4; i++) {
    tgt_run_out r = tool(cmds[i], tgt_data, NULL);
    assert_int_equal(r.status, 2);
    assert_one_error_line(&r);
    tgt_run_free(&r);
  }
}

static void test_random_bytes_as_the_checkpoint_are_refused(void **state) {
  (void)state;
  make_store(10, 0);
  char path[320];
  snprintf(path, sizeof path, "%s/checkpoint/data.mdb", tgt_data);
  write_junk(path, 16384, 11);
  assert_every_command_refuses(tgt_data, "checkpoint");
}

static void test_an_lmdb_checkpoint_that_is_not_ours_is_refused(void **state) {
  (void)state;
  make_store(10, 0);
  tgt_foreign_checkpoint(tgt_data);
  assert_every_command_refuses(tgt_data, "not a tokengraph checkpoint");
}

/* verify, stats and dump read a directory held open elsewhere read-only,
   up to its durable point (tests/test_readonly.c checks what they read);
   recover, which writes, is refused and changes nothing. */
static void test_a_directory_open_in_another_process_is_read_live_and_not_recovered(
    void **state) {
  (void)state;
  make_store(10, 0);
  tg_store *s = tgt_open_small_log(); /* this process holds the lock */
  const char *readers[] = {"verify", "stats", "dump"};
  for (int i = 0; i < 3; i++) {
    tgt_run_out r = tool_ok(readers[i], tgt_data, "--json", NULL);
    if (!strstr(r.out, "\"live\":true")) fail_msg("%s: not live: %s", readers[i], r.out);
    tgt_run_free(&r);
  }
  tgt_run_out r = tool("recover", tgt_data, NULL);
  if (r.status != 2) fail_msg("recover: exit %d: %s%s", r.status, r.out, r.err);
  assert_one_error_line(&r);
  assert_non_null(strstr(r.err, "another process"));
  tgt_run_free(&r);
  r = tool("recover", tgt_data, "--json", NULL);
  assert_int_equal(r.status, 2);
  assert_true(json_is(r.out, "error", "TG_ELOCKED"));
  tgt_run_free(&r);
  assert_int_equal(tg_store_close(s), 0);
  r = tool_ok("verify", tgt_data, "--json", NULL);
  assert_non_null(strstr(r.out, "\"live\":false"));
  assert_int_equal(json_u64(r.out, "last_lsn"), 10);
  tgt_run_free(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    TGT_TEST(test_usage_errors_exit_64),
    TGT_TEST(test_help_is_given_for_the_tool_and_every_command),
    TGT_TEST(test_version_prints_the_linked_library_version),
    TGT_TEST(test_json_prints_a_result_object_for_errors_too),
    TGT_TEST(test_verify_reports_a_clean_log_and_exits_0),
    TGT_TEST(test_stats_reports_checkpoint_and_state_after_replay),
    TGT_TEST(test_dump_prints_every_record_decoded),
    TGT_TEST(test_a_torn_tail_exits_1_with_segment_and_offset),
    TGT_TEST(test_recover_cuts_a_torn_tail_keeping_the_cut_bytes),
    TGT_TEST(test_recover_cuts_garbage_in_preallocated_space),
    TGT_TEST(test_recover_of_a_clean_log_writes_a_checkpoint_and_exits_0),
    TGT_TEST(test_corruption_exits_2_and_recover_refuses_changing_nothing),
    TGT_TEST(test_forced_recover_drops_exactly_the_records_after_the_corruption),
    TGT_TEST(test_corruption_in_the_last_segment_before_valid_records),
    TGT_TEST(test_a_record_that_does_not_apply_is_treated_as_corruption),
    TGT_TEST(test_corruption_before_the_checkpoint_restarts_the_log_after_it),
    TGT_TEST(test_a_missing_segment_between_checkpoint_and_log_is_corruption),
    TGT_TEST(test_a_zero_length_checkpoint_verifies_as_the_store_opens_it),
    TGT_TEST(test_a_copy_with_a_gap_below_the_checkpoint_is_clean_and_kept),
    TGT_TEST(test_recover_bounds_segments_by_the_configured_size),
    TGT_TEST(test_a_missing_directory_is_refused),
    TGT_TEST(test_a_file_instead_of_a_directory_is_refused),
    TGT_TEST(test_an_empty_directory_is_refused_and_left_empty),
    TGT_TEST(test_a_directory_that_is_not_tokengraph_is_refused),
    TGT_TEST(test_a_segment_with_wrong_magic_is_corruption),
    TGT_TEST(test_random_bytes_as_a_segment_are_corruption),
    TGT_TEST(test_random_bytes_as_the_checkpoint_are_refused),
    TGT_TEST(test_an_lmdb_checkpoint_that_is_not_ours_is_refused),
    TGT_TEST(test_a_directory_open_in_another_process_is_read_live_and_not_recovered),
    TGT_TEST(test_a_zeroed_sector_before_the_durable_point_is_refused_by_both),
    TGT_TEST(test_a_deleted_last_segment_is_refused_by_both),
    TGT_TEST(test_a_torn_unsynced_frame_then_a_valid_one_is_a_torn_tail_for_both),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
