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
#include "common/crc32.h"

#ifndef TG_REPLAY_BIN
#error "TG_REPLAY_BIN must be the path of the tg-replay binary"
#endif

#define SEG_BYTES 65536u /* small segments: several per fixture */
#define FRAME 80u        /* a 64-byte payload makes an 80-byte frame */

static char root[128];  /* per-test scratch directory */
static char data[192];  /* the fixture data directory, root/data */
static char waldir[256];

static int setup(void **state) {
  (void)state;
  tgt_mkdtemp(root, sizeof root, "tg_replay");
  snprintf(data, sizeof data, "%s/data", root);
  snprintf(waldir, sizeof waldir, "%s/wal", data);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  tgt_rmtree(root);
  return 0;
}

/* ---- running the tool ------------------------------------------------------ */

typedef struct run {
  int status;   /* exit code */
  char *out;    /* stdout, NUL-terminated */
  char *err;    /* stderr */
} run;

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  assert_non_null(buf);
  size_t k;
  while ((k = fread(buf + n, 1, cap - n - 1, f)) > 0) {
    n += k;
    if (cap - n - 1 == 0) {
      cap *= 2;
      buf = realloc(buf, cap);
      assert_non_null(buf);
    }
  }
  fclose(f);
  buf[n] = 0;
  if (len) *len = n;
  return buf;
}

static void run_free(run *r) {
  free(r->out);
  free(r->err);
  memset(r, 0, sizeof *r);
}

/* Run tg-replay with the given arguments (NULL-terminated), stdout and
   stderr captured in files (not terminals: no progress bar); a tool that
   does not end within the tests' patience fails the test. */
static run tool(const char *arg0, ...) {
  const char *args[16];
  int n = 0;
  va_list ap;
  va_start(ap, arg0);
  for (const char *a = arg0; a; a = va_arg(ap, const char *)) {
    assert_true(n < 15);
    args[n++] = a;
  }
  va_end(ap);
  args[n] = NULL;
  tgt_run_out o = tgt_run(TG_REPLAY_BIN, args, NULL, root);
  if (o.status >= 128) fail_msg("tg-replay %s died with signal %d", arg0, o.status - 128);
  run r = {o.status, o.out, o.err};
  return r;
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
static void assert_one_error_line(const run *r) {
  if (count_lines(r->err) != 1 || strlen(r->err) < 10)
    fail_msg("expected one error line on stderr, got: '%s'", r->err);
}

/* ---- fixtures -------------------------------------------------------------- */

static tg_store_config fixture_config(void) {
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.wal.level = TG_RELAXED;
  cfg.wal.segment_bytes = SEG_BYTES;
  cfg.checkpoint_bytes = 0;
  cfg.wal.ring_slots = 1024;
  return cfg;
}

static tg_store *open_data(void) {
  tg_store_config cfg = fixture_config();
  tg_store *s = NULL;
  char msg[512] = "";
  int rc = tg_store_open_msg(&s, data, &cfg, msg, sizeof msg);
  if (rc) fail_msg("open %s: %s: %s", data, tg_err_name(rc), msg);
  return s;
}

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
  tg_store *s = open_data();
  add_tokens(s, n, conns);
  assert_int_equal(tg_store_close(s), 0);
}

/* The segment first LSNs, sorted; returns how many. */
static int segments(uint64_t *out, int max) {
  DIR *d = opendir(waldir);
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

static void seg_path(char *buf, size_t len, uint64_t first, const char *suffix) {
  snprintf(buf, len, "%s/%020llu.wal%s", waldir, (unsigned long long)first, suffix);
}

/* Where record `lsn` sits when every record is an 80-byte frame. */
static void locate(uint64_t lsn, uint64_t *seg, uint64_t *off) {
  uint64_t segs[64];
  int n = segments(segs, 64);
  int i = n - 1;
  while (i > 0 && segs[i] > lsn) i--;
  *seg = segs[i];
  *off = 64 + FRAME * (lsn - segs[i]);
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

static uint64_t file_size(const char *path) {
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  return (uint64_t)st.st_size;
}

/* Flip bytes inside the payload of record `lsn`: its CRC no longer matches. */
static void corrupt_record(uint64_t lsn) {
  uint64_t seg, off;
  locate(lsn, &seg, &off);
  char path[320];
  seg_path(path, sizeof path, seg, "");
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
      char *bytes = slurp(p, &len);
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

static void assert_same_snapshot(const snap *a, const snap *b) {
  assert_int_equal(a->len, b->len);
  assert_memory_equal(a->buf, b->buf, a->len);
}

/* The store opens with exactly tokens 1..n (as created) and `conns`
   connections. */
static void assert_store_holds(uint32_t n, uint32_t conns) {
  tg_store *s = open_data();
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
  run r = tool(NULL);
  assert_int_equal(r.status, 64);
  run_free(&r);
  r = tool("frobnicate", data, NULL);
  assert_int_equal(r.status, 64);
  assert_non_null(strstr(r.err, "unknown command"));
  run_free(&r);
  r = tool("verify", NULL);
  assert_int_equal(r.status, 64);
  run_free(&r);
  r = tool("verify", data, "--bogus", NULL);
  assert_int_equal(r.status, 64);
  run_free(&r);
  r = tool("verify", data, data, NULL);
  assert_int_equal(r.status, 64);
  run_free(&r);
  r = tool("dump", data, "--from", "x", NULL);
  assert_int_equal(r.status, 64);
  run_free(&r);
  /* recover takes --json since it prints a result object; --from is
     dump's alone. */
  r = tool("recover", data, "--from", "5", NULL);
  assert_int_equal(r.status, 64);
  run_free(&r);
}

static void test_help_is_given_for_the_tool_and_every_command(void **state) {
  (void)state;
  const char *cmds[] = {"verify", "stats", "dump", "recover"};
  run r = tool("--help", NULL);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "usage: tg-replay"));
  assert_non_null(strstr(r.out, "64  usage error"));
  run_free(&r);
  for (int i = 0; i < 4; i++) {
    char want[64];
    snprintf(want, sizeof want, "usage: tg-replay %s DIR", cmds[i]);
    r = tool(cmds[i], "--help", NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, want));
    assert_non_null(strstr(r.out, "exit codes"));
    assert_non_null(strstr(r.out, "1   torn tail only"));
    run_free(&r);
  }
  r = tool("recover", "--help", NULL);
  assert_non_null(strstr(r.out, "--force-truncate-at-corruption"));
  run_free(&r);
}

static void test_version_prints_the_linked_library_version(void **state) {
  (void)state;
  char want[64];
  snprintf(want, sizeof want, "tg-replay %s\n", tg_version());
  run r = tool("--version", NULL);
  assert_int_equal(r.status, 0);
  assert_string_equal(r.out, want);
  assert_string_equal(r.err, "");
  run_free(&r);
  r = tool("verify", "--version", NULL);
  assert_int_equal(r.status, 0);
  assert_string_equal(r.out, want);
  run_free(&r);
}

static void test_json_prints_a_result_object_for_errors_too(void **state) {
  (void)state;
  const char *cmds[] = {"verify", "stats", "dump", "recover"};
  for (int i = 0; i < 4; i++) {
    run r = tool(cmds[i], data, "--json", NULL); /* data does not exist */
    assert_int_equal(r.status, 2);
    assert_int_equal(count_lines(r.out), 1);
    assert_true(r.out[0] == '{');
    assert_int_equal(json_u64(r.out, "exit"), 2);
    assert_true(json_is(r.out, "error", "ENOENT"));
    assert_non_null(strstr(r.out, "No such file"));
    assert_one_error_line(&r);
    run_free(&r);
  }
  run r = tool("verify", data, "--json", "--bogus", NULL);
  assert_int_equal(r.status, 64);
  assert_true(json_is(r.out, "status", "usage"));
  assert_int_equal(json_u64(r.out, "exit"), 64);
  run_free(&r);
}

/* ---- clean logs ------------------------------------------------------------ */

static void test_verify_reports_a_clean_log_and_exits_0(void **state) {
  (void)state;
  make_store(2000, 10); /* 2010 records over three 64 KiB segments */
  uint64_t segs[64];
  assert_true(segments(segs, 64) >= 3);

  run r = tool("verify", data, "--json", NULL);
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
  run_free(&r);

  r = tool("verify", data, NULL);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "2010 records, LSN 1..2010"));
  assert_non_null(strstr(r.out, "end:         clean"));
  assert_string_equal(r.err, "");
  run_free(&r);
}

static void test_stats_reports_checkpoint_and_state_after_replay(void **state) {
  (void)state;
  tg_store *s = open_data();
  add_tokens(s, 1500, 0);
  assert_int_equal(tg_checkpoint(s), 0);
  for (uint32_t i = 1; i <= 100; i++) assert_int_equal(tg_token_delete(s, i), 0);
  assert_int_equal(tg_store_close(s), 0);

  run r = tool("stats", data, "--json", NULL);
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
  run_free(&r);

  r = tool("stats", data, NULL);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "checkpoint:  LSN 1500, 1500 tokens"));
  assert_non_null(strstr(r.out, "state:       1400 tokens, 0 connections"));
  assert_non_null(strstr(r.out, "replayed:    100 records"));
  run_free(&r);
}

static void test_dump_prints_every_record_decoded(void **state) {
  (void)state;
  tg_store *s = open_data();
  add_tokens(s, 3, 2);                                     /* LSN 1..5 */
  assert_int_equal(tg_disconnect(s, 1), 0);                /* LSN 6 */
  assert_int_equal(tg_token_delete(s, 3), 0);              /* LSN 7, 8 (its connection) */
  assert_int_equal(tg_store_close(s), 0);

  run r = tool("dump", data, "--json", NULL);
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
  run_free(&r);

  r = tool("dump", data, NULL);
  assert_int_equal(r.status, 0);
  assert_true(strncmp(r.out, "LSN 1 TOKEN_PUT id=1 ", 21) == 0);
  assert_non_null(strstr(r.out, "LSN 4 CONN_PUT id=1 from=1 to=2 type=19 (causal/3)"));
  assert_non_null(strstr(r.out, "LSN 6 CONN_DEL id=1\n"));
  assert_non_null(strstr(r.out, "TOKEN_DEL id=3\n"));
  run_free(&r);

  r = tool("dump", data, "--from", "6", "--json", NULL);
  assert_int_equal(r.status, 0);
  assert_int_equal(json_u64(r.out, "lsn"), 6);
  assert_int_equal(count_lines(r.out), lines - 5);
  run_free(&r);
}

/* ---- torn tails ------------------------------------------------------------ */

static void test_a_torn_tail_exits_1_with_segment_and_offset(void **state) {
  (void)state;
  make_store(1000, 0);
  uint64_t seg, off;
  locate(1000, &seg, &off);
  char path[320];
  seg_path(path, sizeof path, seg, "");
  /* The last record's write stopped half way: the file ends mid-frame. */
  assert_int_equal(truncate(path, (off_t)(off + FRAME / 2)), 0);

  run r = tool("verify", data, "--json", NULL);
  assert_int_equal(r.status, 1);
  assert_true(json_is(r.out, "end", "torn_tail"));
  assert_int_equal(json_u64(r.out, "records"), 999);
  assert_int_equal(json_u64(r.out, "last_lsn"), 999);
  assert_int_equal(json_u64(r.out, "offset"), off);
  char name[32];
  snprintf(name, sizeof name, "%020llu.wal", (unsigned long long)seg);
  assert_true(json_is(r.out, "segment", name));
  assert_int_equal(json_u64(r.out, "tokens"), 999);
  assert_one_error_line(&r);
  assert_non_null(strstr(r.err, "torn tail"));
  run_free(&r);

  r = tool("stats", data, NULL);
  assert_int_equal(r.status, 1);
  assert_non_null(strstr(r.out, "torn tail in wal/"));
  run_free(&r);
  /* 999 records, then the result object (since --json always ends with
     one: a deliberate change from records alone). */
  r = tool("dump", data, "--json", NULL);
  assert_int_equal(r.status, 1);
  assert_int_equal(count_lines(r.out), 1000);
  const char *result = strstr(r.out, "{\"dir\":");
  assert_non_null(result);
  assert_int_equal(json_u64(result, "printed"), 999);
  assert_int_equal(json_u64(result, "exit"), 1);
  assert_true(json_is(result, "status", "torn_tail"));
  assert_one_error_line(&r);
  run_free(&r);
}

static void test_recover_cuts_a_torn_tail_keeping_the_cut_bytes(void **state) {
  (void)state;
  make_store(1000, 0);
  uint64_t seg, off;
  locate(1000, &seg, &off);
  char path[320], broken[340];
  seg_path(path, sizeof path, seg, "");
  seg_path(broken, sizeof broken, seg, ".broken");
  assert_int_equal(truncate(path, (off_t)(off + FRAME / 2)), 0);
  unsigned char cut[FRAME / 2];
  pread_at(path, off, cut, sizeof cut);

  run r = tool("recover", data, NULL);
  if (r.status != 0) fail_msg("recover: %s%s", r.out, r.err);
  assert_non_null(strstr(r.out, "result:      recovered"));
  assert_string_equal(r.err, "");
  run_free(&r);
  /* The cut bytes are kept beside the segment, exactly. */
  assert_int_equal(file_size(broken), sizeof cut);
  size_t len = 0;
  char *kept = slurp(broken, &len);
  assert_memory_equal(kept, cut, sizeof cut);
  free(kept);

  r = tool("verify", data, "--json", NULL);
  assert_int_equal(r.status, 0);
  assert_true(json_is(r.out, "end", "clean"));
  assert_int_equal(json_u64(r.out, "tokens"), 999);
  assert_int_equal(json_u64(r.out, "checkpoint_lsn"), 999);
  run_free(&r);
  assert_store_holds(999, 0);
}

static void test_recover_cuts_garbage_in_preallocated_space(void **state) {
  (void)state;
  make_store(1000, 0);
  uint64_t seg, off;
  locate(1000, &seg, &off);
  char path[320], broken[340];
  seg_path(path, sizeof path, seg, "");
  seg_path(broken, sizeof broken, seg, ".broken");
  uint64_t end = off + FRAME, size = file_size(path);
  assert_true(size > end + 100); /* preallocated: zeros follow the data */
  /* Half a frame of a record that was being written, in the zeros. */
  unsigned char part[40];
  pread_at(path, off, part, sizeof part);
  part[8] = 0xE9; /* LSN 1001 */
  part[9] = 0x03;
  pwrite_at(path, end, part, sizeof part);

  run r = tool("verify", data, "--json", NULL);
  assert_int_equal(r.status, 1);
  assert_int_equal(json_u64(r.out, "records"), 1000);
  assert_int_equal(json_u64(r.out, "offset"), end);
  run_free(&r);

  r = tool("recover", data, NULL);
  if (r.status != 0) fail_msg("recover: %s%s", r.out, r.err);
  run_free(&r);
  /* Everything from the cut to the old end of the file, zeros included. */
  assert_int_equal(file_size(broken), size - end);
  size_t len = 0;
  char *kept = slurp(broken, &len);
  assert_memory_equal(kept, part, sizeof part);
  for (size_t i = sizeof part; i < len; i++) assert_int_equal(kept[i], 0);
  free(kept);
  r = tool("verify", data, NULL);
  assert_int_equal(r.status, 0);
  run_free(&r);
  assert_store_holds(1000, 0);
}

static void test_recover_of_a_clean_log_writes_a_checkpoint_and_exits_0(void **state) {
  (void)state;
  make_store(300, 5);
  run r = tool("recover", data, NULL);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "nothing to cut"));
  assert_non_null(strstr(r.out, "checkpoint:  written at LSN 305"));
  run_free(&r);
  r = tool("stats", data, "--json", NULL);
  assert_int_equal(r.status, 0);
  assert_int_equal(json_u64(r.out, "checkpoint_lsn"), 305);
  assert_int_equal(json_u64(r.out, "checkpoint_tokens"), 300);
  assert_int_equal(json_u64(r.out, "checkpoint_connections"), 5);
  run_free(&r);
  DIR *d = opendir(waldir);
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

  run r = tool("verify", data, "--json", NULL);
  assert_int_equal(r.status, 2);
  assert_true(json_is(r.out, "end", "corrupt"));
  assert_int_equal(json_u64(r.out, "records"), bad - 1);
  assert_int_equal(json_u64(r.out, "last_lsn"), bad - 1);
  assert_int_equal(json_u64(r.out, "offset"), off);
  assert_true(json_is(r.out, "segment", "00000000000000000001.wal"));
  assert_one_error_line(&r);
  run_free(&r);

  snap before = snapshot(data);
  r = tool("recover", data, NULL);
  assert_int_equal(r.status, 2);
  assert_one_error_line(&r);
  assert_non_null(strstr(r.err, "--force-truncate-at-corruption"));
  assert_non_null(strstr(r.out, "2000 valid records"));
  run_free(&r);
  snap after = snapshot(data);
  assert_same_snapshot(&before, &after);
  free(before.buf);
  free(after.buf);
}

static void test_forced_recover_drops_exactly_the_records_after_the_corruption(void **state) {
  (void)state;
  make_store(2400, 0);
  uint64_t segs[64];
  assert_int_equal(segments(segs, 64), 3);
  uint64_t bad = 400, seg, off;
  locate(bad, &seg, &off);
  char path[320], p2[320], p3[320];
  seg_path(path, sizeof path, segs[0], "");
  seg_path(p2, sizeof p2, segs[1], "");
  seg_path(p3, sizeof p3, segs[2], "");
  corrupt_record(bad);
  size_t l1 = 0, l2 = 0, l3 = 0;
  char *orig1 = slurp(path, &l1), *orig2 = slurp(p2, &l2), *orig3 = slurp(p3, &l3);

  run r = tool("recover", data, "--force-truncate-at-corruption", NULL);
  if (r.status != 0) fail_msg("recover: %s%s", r.out, r.err);
  /* Valid records after the corruption: 401..2400 (400 itself is unreadable). */
  assert_non_null(strstr(r.out, "dropping:    2000 records"));
  assert_non_null(strstr(r.out, "LSN 401..2400"));
  run_free(&r);

  /* The cut bytes and the later segments are kept, byte for byte. */
  char b1[340], b2[340], b3[340];
  seg_path(b1, sizeof b1, segs[0], ".broken");
  seg_path(b2, sizeof b2, segs[1], ".broken");
  seg_path(b3, sizeof b3, segs[2], ".broken");
  size_t k1 = 0, k2 = 0, k3 = 0;
  char *kept1 = slurp(b1, &k1), *kept2 = slurp(b2, &k2), *kept3 = slurp(b3, &k3);
  assert_int_equal(k1, l1 - off);
  assert_memory_equal(kept1, orig1 + off, k1);
  assert_int_equal(k2, l2);
  assert_memory_equal(kept2, orig2, l2);
  assert_int_equal(k3, l3);
  assert_memory_equal(kept3, orig3, l3);
  free(kept1), free(kept2), free(kept3), free(orig1), free(orig2), free(orig3);
  struct stat st;
  assert_int_equal(stat(p3, &st), -1);

  r = tool("verify", data, "--json", NULL);
  assert_int_equal(r.status, 0);
  assert_true(json_is(r.out, "end", "clean"));
  assert_int_equal(json_u64(r.out, "tokens"), bad - 1);
  run_free(&r);
  assert_store_holds((uint32_t)bad - 1, 0);
}

static void test_corruption_in_the_last_segment_before_valid_records(void **state) {
  (void)state;
  make_store(1500, 0); /* two segments */
  uint64_t segs[64];
  assert_int_equal(segments(segs, 64), 2);
  uint64_t bad = 1200;
  corrupt_record(bad);
  run r = tool("verify", data, "--json", NULL);
  assert_int_equal(r.status, 2); /* valid frames follow: not a torn tail */
  assert_true(json_is(r.out, "end", "corrupt"));
  assert_int_equal(json_u64(r.out, "records"), bad - 1);
  run_free(&r);
  r = tool("recover", data, NULL);
  assert_int_equal(r.status, 2);
  run_free(&r);
  r = tool("recover", data, "--force-truncate-at-corruption", NULL);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "dropping:    300 records"));
  run_free(&r);
  assert_store_holds((uint32_t)bad - 1, 0);
}

static void test_a_record_that_does_not_apply_is_treated_as_corruption(void **state) {
  (void)state;
  make_store(500, 0);
  /* Append to the log behind the store's back: a delete of a token that
     never existed (LSN 501), then a valid create (LSN 502). */
  tg_wal_config wc;
  tg_wal_config_init(&wc);
  wc.segment_bytes = SEG_BYTES;
  wc.ring_slots = 64;
  tg_wal *w = NULL;
  assert_int_equal(tg_wal_open(&w, waldir, &wc, NULL), 0);
  uint32_t ghost = 77777;
  uint64_t lsn = 0;
  assert_int_equal(tg_wal_append(w, TG_REC_TOKEN_DEL, &ghost, sizeof ghost, &lsn), 0);
  assert_int_equal(lsn, 501);
  tg_token t = token_n(501);
  t.id = 501;
  t.flags = TG_TOKEN_ACTIVE;
  assert_int_equal(tg_wal_append(w, TG_REC_TOKEN_PUT, &t, sizeof t, &lsn), 0);
  assert_int_equal(tg_wal_close(w), 0);

  run r = tool("verify", data, "--json", NULL);
  assert_int_equal(r.status, 2);
  assert_int_equal(json_u64(r.out, "apply_failed_lsn"), 501);
  assert_true(json_is(r.out, "status", "apply_failed"));
  assert_int_equal(json_u64(r.out, "records"), 502);
  assert_one_error_line(&r);
  run_free(&r);

  snap before = snapshot(data);
  r = tool("recover", data, NULL);
  assert_int_equal(r.status, 2);
  assert_non_null(strstr(r.out, "2 valid records"));
  run_free(&r);
  snap after = snapshot(data);
  assert_same_snapshot(&before, &after);
  free(before.buf);
  free(after.buf);

  r = tool("recover", data, "--force-truncate-at-corruption", NULL);
  if (r.status != 0) fail_msg("recover: %s%s", r.out, r.err);
  assert_non_null(strstr(r.out, "dropping:    2 records"));
  run_free(&r);
  r = tool("verify", data, NULL);
  assert_int_equal(r.status, 0);
  run_free(&r);
  assert_store_holds(500, 0);
}

static void test_corruption_before_the_checkpoint_restarts_the_log_after_it(void **state) {
  (void)state;
  tg_store *s = open_data();
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

  run r = tool("verify", data, "--json", NULL);
  assert_int_equal(r.status, 2);
  assert_int_equal(json_u64(r.out, "checkpoint_lsn"), 2400);
  run_free(&r);
  r = tool("recover", data, "--force-truncate-at-corruption", NULL);
  if (r.status != 0) fail_msg("recover: %s%s", r.out, r.err);
  /* 1701..2400 are in the checkpoint; 2401..2500 followed the corruption. */
  assert_non_null(strstr(r.out, "dropping:    100 records"));
  assert_non_null(strstr(r.out, "700 more are covered by the checkpoint"));
  assert_non_null(strstr(r.out, "restart:"));
  run_free(&r);
  char broken[340];
  seg_path(broken, sizeof broken, segs[0], ".broken");
  assert_int_equal(file_size(broken), SEG_BYTES); /* moved aside whole */
  seg_path(broken, sizeof broken, segs[1], ".broken");
  assert_int_equal(file_size(broken), SEG_BYTES);
  r = tool("verify", data, NULL);
  assert_int_equal(r.status, 0);
  run_free(&r);
  assert_store_holds(2400, 0);
}

static void test_a_missing_segment_between_checkpoint_and_log_is_corruption(void **state) {
  (void)state;
  make_store(2000, 0); /* segments 1, 819, 1637; no checkpoint */
  uint64_t segs[64];
  assert_int_equal(segments(segs, 64), 3);
  char path[320];
  seg_path(path, sizeof path, segs[0], "");
  assert_int_equal(unlink(path), 0); /* records 1..818 are gone */

  run r = tool("verify", data, "--json", NULL);
  assert_int_equal(r.status, 2);
  assert_true(json_is(r.out, "end", "corrupt"));
  assert_true(json_is(r.out, "status", "corrupt"));
  assert_int_equal(json_u64(r.out, "first_lsn"), segs[1]);
  assert_int_equal(json_u64(r.out, "offset"), 0);
  assert_one_error_line(&r);
  assert_non_null(strstr(r.err, "missing"));
  run_free(&r);
  r = tool("recover", data, NULL);
  assert_int_equal(r.status, 2);
  run_free(&r);
  /* Nothing of the log can be replayed: all of it goes aside. */
  r = tool("recover", data, "--force-truncate-at-corruption", NULL);
  if (r.status != 0) fail_msg("recover: %s%s", r.out, r.err);
  assert_non_null(strstr(r.out, "dropping:    1182 records"));
  run_free(&r);
  assert_store_holds(0, 0);
}

/* ---- the tool and the store agree -------------------------------------------- */

static void test_a_zero_length_checkpoint_verifies_as_the_store_opens_it(void **state) {
  (void)state;
  make_store(300, 5);
  char p[320];
  snprintf(p, sizeof p, "%s/checkpoint/data.mdb", data);
  assert_int_equal(truncate(p, 0), 0);
  run r = tool("verify", data, "--json", NULL);
  if (r.status != 0) fail_msg("verify: %s%s", r.out, r.err);
  assert_true(json_is(r.out, "end", "clean"));
  assert_int_equal(json_u64(r.out, "checkpoint_lsn"), 0);
  assert_int_equal(json_u64(r.out, "tokens"), 300);
  assert_int_equal(json_u64(r.out, "connections"), 5);
  run_free(&r);
  assert_store_holds(300, 5);
}

/* A copy taken while a checkpoint deleted segments: the oldest segment from
   before the checkpoint, the rest from after. The records missing between
   them are all in the checkpoint: the store replays the copy, and so must
   the tool, without dropping anything. */
static void test_a_copy_with_a_gap_below_the_checkpoint_is_clean_and_kept(void **state) {
  (void)state;
  tg_store *s = open_data();
  add_tokens(s, 2000, 0); /* segments 1, 819, 1637 */
  char p1[320];
  seg_path(p1, sizeof p1, 1, "");
  size_t len = 0;
  char *old = slurp(p1, &len);
  assert_int_equal(tg_checkpoint(s), 0); /* covers 2000; 1 and 819 go */
  for (uint32_t i = 2001; i <= 2100; i++) {
    tg_token t = token_n(i);
    uint32_t id = 0;
    assert_int_equal(tg_token_create(s, &t, &id), 0);
  }
  assert_int_equal(tg_store_close(s), 0);
  FILE *f = fopen(p1, "wb");
  assert_int_equal(fwrite(old, 1, len, f), len);
  fclose(f);
  free(old);

  run r = tool("verify", data, "--json", NULL);
  if (r.status != 0) fail_msg("verify: %s%s", r.out, r.err);
  assert_true(json_is(r.out, "end", "clean"));
  assert_int_equal(json_u64(r.out, "last_lsn"), 2100);
  assert_int_equal(json_u64(r.out, "tokens"), 2100);
  const char *cov = strstr(r.out, "\"covered_damage\":{");
  assert_non_null(cov);
  assert_int_equal(json_u64(cov, "expected_lsn"), 819);
  assert_int_equal(json_u64(cov, "found_lsn"), 1637);
  assert_string_equal(r.err, "");
  run_free(&r);
  r = tool("verify", data, NULL);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "covered:"));
  run_free(&r);
  /* dump goes on past the gap, where replay reads. */
  r = tool("dump", data, "--json", NULL);
  assert_int_equal(r.status, 0);
  assert_int_equal(count_lines(r.out), 818 + (2100 - 1637 + 1) + 1); /* + the result */
  assert_int_equal(json_u64(strstr(r.out, "{\"dir\":"), "printed"), 818 + (2100 - 1637 + 1));
  assert_non_null(strstr(r.out, "{\"lsn\":2100,"));
  run_free(&r);

  r = tool("recover", data, "--force-truncate-at-corruption", NULL);
  if (r.status != 0) fail_msg("recover: %s%s", r.out, r.err);
  assert_non_null(strstr(r.out, "nothing to cut"));
  assert_null(strstr(r.out, "dropping:"));
  run_free(&r);
  assert_store_holds(2100, 0);
}

/* A torn tail in a segment whose header claims a 1 TiB segment (with a
   right CRC: only the value is absurd). */
static void make_torn_with_a_huge_header(char *path, size_t len) {
  make_store(1000, 0);
  uint64_t seg, off;
  locate(1000, &seg, &off);
  seg_path(path, len, seg, "");
  assert_int_equal(truncate(path, (off_t)(off + FRAME / 2)), 0);
  unsigned char h[64];
  pread_at(path, 0, h, sizeof h);
  uint64_t huge = 1ull << 40;
  memcpy(h + 24, &huge, 8);
  uint32_t crc = tg__crc32(0, h, 60);
  memcpy(h + 60, &crc, 4);
  pwrite_at(path, 0, h, sizeof h);
}

static void test_recover_bounds_segments_by_the_configured_size(void **state) {
  (void)state;
  char path[320], ini[320];
  make_torn_with_a_huge_header(path, sizeof path);
  snprintf(ini, sizeof ini, "%s/store.ini", root);
  FILE *f = fopen(ini, "w");
  fprintf(f, "[wal]\nsegment_bytes = %u\n", SEG_BYTES);
  fclose(f);
  run r = tool("recover", data, "--config", ini, "--json", NULL);
  if (r.status != 0) fail_msg("recover: %s%s", r.out, r.err);
  assert_int_equal(json_u64(r.out, "segment_bytes"), SEG_BYTES);
  run_free(&r);
  assert_true(file_size(path) <= SEG_BYTES);
  assert_store_holds(999, 0);

  /* Without a configuration the default size bounds it, never the header. */
  tgt_rmtree(data);
  make_torn_with_a_huge_header(path, sizeof path);
  r = tool("recover", data, "--json", NULL);
  if (r.status != 0) fail_msg("recover: %s%s", r.out, r.err);
  uint64_t used = json_u64(r.out, "segment_bytes");
  assert_true(used <= 64u << 20);
  run_free(&r);
  assert_true(file_size(path) <= 64u << 20);

  r = tool("recover", data, "--config", "/nonexistent/store.ini", NULL);
  assert_int_equal(r.status, 2);
  assert_one_error_line(&r);
  run_free(&r);
}

/* ---- bad input ------------------------------------------------------------- */

/* Every command fails with one line on stderr and exit 2, never a crash. */
static void assert_every_command_refuses(const char *path, const char *needle) {
  const char *cmds[] = {"verify", "stats", "dump", "recover"};
  for (int i = 0; i < 4; i++) {
    run r = tool(cmds[i], path, NULL);
    if (r.status != 2) fail_msg("%s %s: exit %d: %s%s", cmds[i], path, r.status, r.out, r.err);
    assert_one_error_line(&r);
    if (needle && !strstr(r.err, needle))
      fail_msg("%s %s: '%s' not in '%s'", cmds[i], path, needle, r.err);
    run_free(&r);
    r = tool(cmds[i], path, "--json", NULL);
    assert_true(r.status == 2 || r.status == 64); /* recover has no --json */
    run_free(&r);
  }
}

static void test_a_missing_directory_is_refused(void **state) {
  (void)state;
  assert_every_command_refuses(data, "No such file");
  struct stat st;
  assert_int_equal(stat(data, &st), -1); /* recover created nothing */
}

static void test_a_file_instead_of_a_directory_is_refused(void **state) {
  (void)state;
  FILE *f = fopen(data, "w");
  fputs("hello\n", f);
  fclose(f);
  assert_every_command_refuses(data, "not a directory");
}

static void test_an_empty_directory_is_refused_and_left_empty(void **state) {
  (void)state;
  assert_int_equal(mkdir(data, 0700), 0);
  assert_every_command_refuses(data, "empty");
  DIR *d = opendir(data);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) n++;
  closedir(d);
  assert_int_equal(n, 2);
}

static void test_a_directory_that_is_not_tokengraph_is_refused(void **state) {
  (void)state;
  assert_int_equal(mkdir(data, 0700), 0);
  char p[320];
  snprintf(p, sizeof p, "%s/notes.txt", data);
  FILE *f = fopen(p, "w");
  fputs("not ours\n", f);
  fclose(f);
  assert_every_command_refuses(data, "not a tokengraph");
}

static void test_a_segment_with_wrong_magic_is_corruption(void **state) {
  (void)state;
  make_store(100, 0);
  char path[320];
  seg_path(path, sizeof path, 1, "");
  pwrite_at(path, 0, "XXWALSEG", 8);
  const char *cmds[] = {"verify", "stats", "dump"};
  for (int i = 0; i < 3; i++) {
    run r = tool(cmds[i], data, NULL);
    assert_int_equal(r.status, 2);
    assert_one_error_line(&r);
    assert_non_null(strstr(r.err, "bad segment magic"));
    run_free(&r);
  }
  run r = tool("verify", data, "--json", NULL);
  assert_true(json_is(r.out, "end", "corrupt"));
  assert_int_equal(json_u64(r.out, "records"), 0);
  assert_int_equal(json_u64(r.out, "offset"), 0);
  run_free(&r);
  r = tool("recover", data, NULL);
  assert_int_equal(r.status, 2);
  run_free(&r);
  /* Forced: the whole segment goes aside and the store starts empty. */
  r = tool("recover", data, "--force-truncate-at-corruption", NULL);
  if (r.status != 0) fail_msg("recover: %s%s", r.out, r.err);
  assert_non_null(strstr(r.out, "dropping:    100 records"));
  run_free(&r);
  char broken[340];
  seg_path(broken, sizeof broken, 1, ".broken");
  assert_int_equal(file_size(broken), SEG_BYTES);
  assert_store_holds(0, 0);
}

static void test_random_bytes_as_a_segment_are_corruption(void **state) {
  (void)state;
  make_store(10, 0);
  char path[320];
  seg_path(path, sizeof path, 1, "");
  unsigned char junk[8192];
  srand(7);
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)rand();
  FILE *f = fopen(path, "wb");
  assert_int_equal(fwrite(junk, 1, sizeof junk, f), sizeof junk);
  fclose(f);
  const char *cmds[] = {"verify", "stats", "dump", "recover"};
  for (int i = 0; i < 4; i++) {
    run r = tool(cmds[i], data, NULL);
    assert_int_equal(r.status, 2);
    assert_one_error_line(&r);
    run_free(&r);
  }
}

static void test_random_bytes_as_the_checkpoint_are_refused(void **state) {
  (void)state;
  make_store(10, 0);
  char path[320];
  snprintf(path, sizeof path, "%s/checkpoint/data.mdb", data);
  unsigned char junk[16384];
  srand(11);
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)rand();
  FILE *f = fopen(path, "wb");
  assert_int_equal(fwrite(junk, 1, sizeof junk, f), sizeof junk);
  fclose(f);
  assert_every_command_refuses(data, "checkpoint");
}

static void test_an_lmdb_checkpoint_that_is_not_ours_is_refused(void **state) {
  (void)state;
  make_store(10, 0);
  char cdir[320], p[400];
  snprintf(cdir, sizeof cdir, "%s/checkpoint", data);
  snprintf(p, sizeof p, "%s/data.mdb", cdir);
  unlink(p);
  snprintf(p, sizeof p, "%s/lock.mdb", cdir);
  unlink(p);
  MDB_env *env = NULL;
  MDB_txn *txn = NULL;
  MDB_dbi dbi;
  assert_int_equal(mdb_env_create(&env), 0);
  assert_int_equal(mdb_env_open(env, cdir, 0, 0600), 0);
  assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
  MDB_val k = {5, "hello"}, v = {5, "world"};
  assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
  assert_int_equal(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
  assert_every_command_refuses(data, "not a tokengraph checkpoint");
}

static void test_a_directory_open_in_another_process_is_refused(void **state) {
  (void)state;
  make_store(10, 0);
  tg_store *s = open_data(); /* this process holds the lock */
  assert_every_command_refuses(data, "another process");
  assert_int_equal(tg_store_close(s), 0);
  run r = tool("verify", data, NULL);
  assert_int_equal(r.status, 0);
  run_free(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_usage_errors_exit_64, setup, teardown),
    cmocka_unit_test_setup_teardown(test_help_is_given_for_the_tool_and_every_command, setup, teardown),
    cmocka_unit_test_setup_teardown(test_version_prints_the_linked_library_version, setup, teardown),
    cmocka_unit_test_setup_teardown(test_json_prints_a_result_object_for_errors_too, setup, teardown),
    cmocka_unit_test_setup_teardown(test_verify_reports_a_clean_log_and_exits_0, setup, teardown),
    cmocka_unit_test_setup_teardown(test_stats_reports_checkpoint_and_state_after_replay, setup, teardown),
    cmocka_unit_test_setup_teardown(test_dump_prints_every_record_decoded, setup, teardown),
    cmocka_unit_test_setup_teardown(test_a_torn_tail_exits_1_with_segment_and_offset, setup, teardown),
    cmocka_unit_test_setup_teardown(test_recover_cuts_a_torn_tail_keeping_the_cut_bytes, setup, teardown),
    cmocka_unit_test_setup_teardown(test_recover_cuts_garbage_in_preallocated_space, setup, teardown),
    cmocka_unit_test_setup_teardown(test_recover_of_a_clean_log_writes_a_checkpoint_and_exits_0, setup, teardown),
    cmocka_unit_test_setup_teardown(test_corruption_exits_2_and_recover_refuses_changing_nothing, setup, teardown),
    cmocka_unit_test_setup_teardown(test_forced_recover_drops_exactly_the_records_after_the_corruption, setup, teardown),
    cmocka_unit_test_setup_teardown(test_corruption_in_the_last_segment_before_valid_records, setup, teardown),
    cmocka_unit_test_setup_teardown(test_a_record_that_does_not_apply_is_treated_as_corruption, setup, teardown),
    cmocka_unit_test_setup_teardown(test_corruption_before_the_checkpoint_restarts_the_log_after_it, setup, teardown),
    cmocka_unit_test_setup_teardown(test_a_missing_segment_between_checkpoint_and_log_is_corruption, setup, teardown),
    cmocka_unit_test_setup_teardown(test_a_zero_length_checkpoint_verifies_as_the_store_opens_it, setup, teardown),
    cmocka_unit_test_setup_teardown(test_a_copy_with_a_gap_below_the_checkpoint_is_clean_and_kept, setup, teardown),
    cmocka_unit_test_setup_teardown(test_recover_bounds_segments_by_the_configured_size, setup, teardown),
    cmocka_unit_test_setup_teardown(test_a_missing_directory_is_refused, setup, teardown),
    cmocka_unit_test_setup_teardown(test_a_file_instead_of_a_directory_is_refused, setup, teardown),
    cmocka_unit_test_setup_teardown(test_an_empty_directory_is_refused_and_left_empty, setup, teardown),
    cmocka_unit_test_setup_teardown(test_a_directory_that_is_not_tokengraph_is_refused, setup, teardown),
    cmocka_unit_test_setup_teardown(test_a_segment_with_wrong_magic_is_corruption, setup, teardown),
    cmocka_unit_test_setup_teardown(test_random_bytes_as_a_segment_are_corruption, setup, teardown),
    cmocka_unit_test_setup_teardown(test_random_bytes_as_the_checkpoint_are_refused, setup, teardown),
    cmocka_unit_test_setup_teardown(test_an_lmdb_checkpoint_that_is_not_ours_is_refused, setup, teardown),
    cmocka_unit_test_setup_teardown(test_a_directory_open_in_another_process_is_refused, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
