/* Durable stores: reopen, checkpoints, directory rules, failures, kill -9. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>
#include <lmdb.h>

#include <pthread.h>

#include "tokengraph/tokengraph.h"
#include "tokengraph/trace.h"
#include "common/io.h"
#include "util.h"

static tg_store_config config(int level) {
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.wal.level = level;
  cfg.wal.segment_bytes = 1 << 20; /* small: exercise segment switches */
  cfg.checkpoint_bytes = 0;    /* only explicit checkpoints */
  return cfg;
}

static tg_store *open_at(const char *path, int level) {
  tg_store_config cfg = config(level);
  tg_store *s = NULL;
  char msg[512];
  int rc = tg_store_open_msg(&s, path, &cfg, msg, sizeof msg);
  if (rc) fail_msg("open %s: %s: %s", path, tg_err_name(rc), msg);
  return s;
}

static tg_token tok(float weight, uint32_t ts) {
  tg_token t;
  memset(&t, 0, sizeof t);
  for (int i = 0; i < TG_SPACES; i++) t.coord[i][0] = (int16_t)(ts + (uint32_t)i);
  t.weight = weight;
  t.timestamp = ts;
  return t;
}

static uint32_t mk(tg_store *s, float weight, uint32_t ts) {
  tg_token t = tok(weight, ts);
  uint32_t id = 0;
  assert_int_equal(tg_token_create(s, &t, &id), 0);
  return id;
}

static uint32_t link_(tg_store *s, uint32_t a, uint32_t b, uint8_t type) {
  tg_connection c = {.from = a, .to = b, .type = type, .confidence = 0.25f};
  return tgt_connect(s, &c);
}

static tgt_edges edges(tg_store *s, uint32_t id) {
  return tgt_edges_of(s, id, TG_BOTH);
}

/* Build a graph with every kind of mutation; return its expected shape. */
static void build_graph(tg_store *s, uint32_t *ids, int n) {
  for (int i = 0; i < n; i++) ids[i] = mk(s, (float)i, 1000u + (uint32_t)i);
  for (int i = 0; i + 1 < n; i++) link_(s, ids[i], ids[i + 1], (uint8_t)(i % TG_CONN_TYPES));
  for (int i = 0; i + 2 < n; i += 3) link_(s, ids[i + 2], ids[i], 7);
  tg_token t;
  assert_int_equal(tg_token_get(s, ids[5], &t), 0);
  t.weight = 99.5f;
  assert_int_equal(tg_token_update(s, &t), 0);
  assert_int_equal(tg_token_delete(s, ids[7]), 0); /* takes its connections */
  tgt_edges e = edges(s, ids[10]);
  assert_int_equal(tg_disconnect(s, e.ids[0]), 0);
}

/* Compare two stores token by token and edge list by edge list. */
static void assert_same(tg_store *a, tg_store *b, const uint32_t *ids, int n) {
  tg_store_stats sa = tgt_stats(a), sb = tgt_stats(b);
  assert_int_equal(sa.live_tokens, sb.live_tokens);
  assert_int_equal(sa.live_connections, sb.live_connections);
  for (int i = 0; i < n; i++) {
    tg_token ta, tb;
    int ra = tg_token_get(a, ids[i], &ta), rb = tg_token_get(b, ids[i], &tb);
    assert_int_equal(ra, rb);
    if (ra) continue;
    ta.flags &= (uint16_t)~TG_TOKEN_DIRTY;
    tb.flags &= (uint16_t)~TG_TOKEN_DIRTY;
    assert_memory_equal(&ta, &tb, sizeof ta);
    tgt_edges la = edges(a, ids[i]), lb = edges(b, ids[i]);
    assert_int_equal(la.n, lb.n);
    assert_memory_equal(la.ids, lb.ids, sizeof la.ids[0] * (size_t)la.n);
    for (int k = 0; k < la.n; k++) {
      tg_connection ca, cb;
      assert_int_equal(tg_connection_get(a, la.ids[k], &ca), 0);
      assert_int_equal(tg_connection_get(b, lb.ids[k], &cb), 0);
      assert_memory_equal(&ca, &cb, sizeof ca);
    }
  }
}

static void test_reopen_replays_every_mutation_exactly(void **state) {
  (void)state;
  enum { N = 40 };
  uint32_t ids[N];
  tg_store *mem = tgt_open(NULL, NULL); /* the expected state */
  build_graph(mem, ids, N);

  tg_store *s = open_at(tgt_root, TG_BALANCED);
  uint32_t ids2[N];
  build_graph(s, ids2, N);
  assert_memory_equal(ids, ids2, sizeof ids);
  assert_int_equal(tg_store_close(s), 0);

  s = open_at(tgt_root, TG_BALANCED);
  tg_recovery_info ri;
  tg_store_recovery_info(s, &ri);
  assert_int_equal(ri.checkpoint_lsn, 0);
  assert_true(ri.replayed_records > 2 * N);
  assert_same(mem, s, ids, N);
  assert_int_equal(tg_store_close(s), 0);
  tg_store_close(mem);
}

static void test_checkpoint_then_more_changes_survive_reopen(void **state) {
  (void)state;
  enum { N = 60 };
  uint32_t ids[N];
  tg_store *mem = tgt_open(NULL, NULL); /* the expected state */
  tg_store *s = open_at(tgt_root, TG_RELAXED);
  build_graph(mem, ids, N / 2);
  build_graph(s, ids, N / 2);
  assert_int_equal(tg_checkpoint(s), 0);
  tg_store_stats st = tgt_stats(s);
  assert_int_equal(st.checkpoint_lsn, st.last_lsn);
  assert_int_equal(st.checkpoints, 1);
  /* More changes after the checkpoint, touching checkpointed objects. */
  for (int round = 0; round < 2; round++) {
    tg_store *x = round ? s : mem;
    tg_token t;
    assert_int_equal(tg_token_get(x, ids[3], &t), 0);
    t.timestamp = 4242;
    assert_int_equal(tg_token_update(x, &t), 0);
    assert_int_equal(tg_token_delete(x, ids[4]), 0);
    uint32_t extra = mk(x, 3.0f, 77);
    link_(x, extra, ids[0], 1);
    link_(x, ids[1], extra, 2);
  }
  assert_int_equal(tg_store_close(s), 0);

  s = open_at(tgt_root, TG_RELAXED);
  tg_recovery_info ri;
  tg_store_recovery_info(s, &ri);
  assert_int_equal(ri.checkpoint_lsn, st.checkpoint_lsn);
  assert_true(ri.checkpoint_tokens > 0);
  assert_true(ri.checkpoint_connections > 0);
  /* update, delete (one record; its connections go with it), create, 2 links */
  assert_int_equal(ri.replayed_records, 5);
  assert_same(mem, s, ids, N / 2);
  /* A second checkpoint (deletes included) and reopen: the same again. */
  assert_int_equal(tg_checkpoint(s), 0);
  assert_int_equal(tg_store_close(s), 0);
  s = open_at(tgt_root, TG_RELAXED);
  tg_store_recovery_info(s, &ri);
  assert_int_equal(ri.replayed_records, 0);
  assert_same(mem, s, ids, N / 2);
  tg_store_close(s);
  tg_store_close(mem);
}

static void test_checkpoint_removes_covered_segments(void **state) {
  (void)state;
  tg_store *s = open_at(tgt_root, TG_RELAXED);
  for (int i = 0; i < 40000; i++) mk(s, 1, (uint32_t)i); /* ~3 MiB of log */
  assert_int_equal(tg_sync(s), 0);
  char waldir[256];
  snprintf(waldir, sizeof waldir, "%s/wal", tgt_root);
  int before = 0, after = 0;
  char cmd[300];
  snprintf(cmd, sizeof cmd, "ls %s | grep -c '\\.wal$'", waldir);
  FILE *p = popen(cmd, "r");
  assert_int_equal(fscanf(p, "%d", &before), 1);
  pclose(p);
  assert_true(before >= 3);
  assert_int_equal(tg_checkpoint(s), 0);
  p = popen(cmd, "r");
  assert_int_equal(fscanf(p, "%d", &after), 1);
  pclose(p);
  assert_true(after < before);
  assert_int_equal(tg_store_close(s), 0);
  s = open_at(tgt_root, TG_RELAXED);
  assert_int_equal(tgt_stats(s).live_tokens, 40000);
  tg_store_close(s);
}

static void test_quota_rejection_logs_nothing(void **state) {
  (void)state;
  tg_store_config cfg = config(TG_BALANCED);
  cfg.guardian.max_tokens = 3;
  tg_store *s = tgt_open(tgt_root, &cfg);
  for (int i = 0; i < 3; i++) mk(s, 1, 1);
  assert_int_equal(tgt_stats(s).last_lsn, 3);
  uint32_t id;
  assert_int_equal(tg_token_create(s, NULL, &id), TG_EQUOTA);
  assert_int_equal(tgt_stats(s).last_lsn, 3); /* the rejection logged nothing */
  tg_store_close(s);
}

static void test_a_second_open_of_the_directory_is_refused(void **state) {
  (void)state;
  tg_store *s = open_at(tgt_root, TG_BALANCED);
  tg_store *t = (tg_store *)&t;
  char msg[256];
  tg_store_config cfg = config(TG_BALANCED);
  assert_int_equal(tg_store_open_msg(&t, tgt_root, &cfg, msg, sizeof msg), TG_ELOCKED);
  assert_null(t);
  assert_non_null(strstr(msg, "in use"));
  tg_store_close(s);
  /* Released on close. */
  s = open_at(tgt_root, TG_BALANCED);
  tg_store_close(s);
}

static void test_files_and_directories_are_private(void **state) {
  (void)state;
  char sub[256];
  snprintf(sub, sizeof sub, "%s/data", tgt_root);
  tg_store *s = open_at(sub, TG_BALANCED);
  mk(s, 1, 1);
  tg_store_close(s);
  const char *paths[] = {"", "/wal", "/checkpoint", "/LOCK", "/TOKENGRAPH",
                         "/checkpoint/data.mdb", "/wal/00000000000000000001.wal"};
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    char p[300];
    struct stat st;
    snprintf(p, sizeof p, "%s%s", sub, paths[i]);
    assert_int_equal(stat(p, &st), 0);
    mode_t want = S_ISDIR(st.st_mode) ? 0700 : 0600;
    if ((st.st_mode & 0777) != want) fail_msg("%s has mode %o", p, st.st_mode & 0777);
  }
}

/* A data directory with every file a store creates, and no token. */
static void make_empty_store(void) {
  assert_int_equal(tg_store_close(open_at(tgt_root, TG_BALANCED)), 0);
}

/* Opening path fails with err (or, when err2 is not 0, with either), and
   the message names what is wrong: it contains needle. */
static void assert_open_refused(const char *path, int err, int err2, const char *needle) {
  tg_store *s = NULL;
  char msg[512] = "";
  int rc = tg_store_open_msg(&s, path, NULL, msg, sizeof msg);
  if (rc != err && (!err2 || rc != err2))
    fail_msg("open %s: %s (%s), expected %s", path, tg_err_name(rc), msg, tg_err_name(err));
  if (!strstr(msg, needle)) fail_msg("open %s: '%s' not in '%s'", path, needle, msg);
}

static void test_foreign_directory_is_refused_and_left_alone(void **state) {
  (void)state;
  char p[300];
  snprintf(p, sizeof p, "%s/notes.txt", tgt_root);
  tgt_write_file(p, "mine\n");
  assert_open_refused(tgt_root, TG_ENOTTG, 0, "not a tokengraph data directory");
  snprintf(p, sizeof p, "ls -A %s | wc -l", tgt_root);
  FILE *l = popen(p, "r");
  int n = 0;
  assert_int_equal(fscanf(l, "%d", &n), 1);
  pclose(l);
  assert_int_equal(n, 1); /* nothing created */
}

static void test_newer_format_is_refused(void **state) {
  (void)state;
  make_empty_store();
  char p[300];
  snprintf(p, sizeof p, "%s/TOKENGRAPH", tgt_root);
  tgt_write_file(p, "tokengraph data directory\nformat 2\n");
  assert_open_refused(tgt_root, TG_EVERSION, 0, "format 2");
}

static void test_a_file_instead_of_a_directory_is_refused(void **state) {
  (void)state;
  char p[300];
  snprintf(p, sizeof p, "%s/file", tgt_root);
  tgt_write_file(p, "");
  assert_open_refused(p, -ENOTDIR, 0, "not a directory");
  snprintf(p, sizeof p, "%s/no/such/parent", tgt_root);
  assert_open_refused(p, -ENOENT, 0, "");
}

static void test_a_checkpoint_that_is_not_ours_is_refused(void **state) {
  (void)state;
  make_empty_store();
  char p[300];
  /* Random bytes in place of the LMDB file. */
  snprintf(p, sizeof p, "%s/checkpoint/data.mdb", tgt_root);
  FILE *f = fopen(p, "w");
  for (int i = 0; i < 8192; i++) fputc((i * 7919) & 0xFF, f);
  fclose(f);
  assert_open_refused(tgt_root, TG_ENOTTG, TG_ECORRUPT, "checkpoint");
  /* A valid LMDB environment that is someone else's. */
  tgt_foreign_checkpoint(tgt_root);
  assert_open_refused(tgt_root, TG_ENOTTG, 0, "not a tokengraph checkpoint");
}

/* ---- a crashed process ----------------------------------------------------- */

/* A child opens the store at `level`, creates 100 tokens and calls abort():
   the WAL writer may not have written a single one of them. */
static void creates_then_abort(const char *path, int level) {
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    signal(SIGABRT, SIG_DFL); /* not cmocka's handler: die */
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    tg_store_config cfg = config(level);
    cfg.crash_dump = 0;
    tg_store *s = NULL;
    if (tg_store_open(&s, path, &cfg)) _exit(2);
    for (uint32_t i = 0; i < 100; i++) {
      tg_token t = tok((float)i, i);
      uint32_t id = 0;
      if (tg_token_create(s, &t, &id)) _exit(3);
    }
    abort();
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
    fail_msg("the child did not die of abort() (status %d)", status);
}

static void abort_case(int level) {
  creates_then_abort(tgt_root, level);
  tg_store *s = open_at(tgt_root, level);
  tg_store_stats st;
  tg_store_stats_get(s, &st);
  assert_int_equal(st.live_tokens, 100);
  for (uint32_t id = 1; id <= 100; id++) {
    tg_token got;
    assert_int_equal(tg_token_get(s, id, &got), 0);
    assert_int_equal(got.timestamp, id - 1);
  }
  assert_int_equal(tg_store_close(s), 0);
}

static void test_balanced_creates_survive_abort(void **state) {
  (void)state;
  abort_case(TG_BALANCED);
}

static void test_relaxed_creates_survive_abort(void **state) {
  (void)state;
  abort_case(TG_RELAXED);
}

/* ---- injected failures -------------------------------------------------- */

static ssize_t enospc_pwrite(int fd, const void *b, size_t n, off_t off) {
  (void)fd, (void)b, (void)n, (void)off;
  errno = ENOSPC;
  return -1;
}

static void test_full_disk_fails_the_store_and_loses_nothing_durable(void **state) {
  (void)state;
  tg_store *s = open_at(tgt_root, TG_STRICT);
  uint32_t a = mk(s, 1, 1), b = mk(s, 2, 2);
  tg__io.pwrite = enospc_pwrite;
  tg_token t = tok(3, 3);
  uint32_t id;
  assert_int_equal(tg_token_create(s, &t, &id), TG_ENOSPC);
  /* Failed: later mutations get the error, reads still work. */
  assert_int_equal(tg_token_delete(s, a), TG_ENOSPC);
  tg_token got;
  assert_int_equal(tg_token_get(s, b, &got), 0);
  assert_int_equal(tg_sync(s), TG_ENOSPC);
  /* The failure is in the black box (once), with the errno. */
  char p[300];
  snprintf(p, sizeof p, "%s/bb-failure.json", tgt_root);
  tg__io_reset();
  assert_int_equal(tg_blackbox_dump(p), 0);
  char *buf = tgt_read_file(p, NULL);
  assert_non_null(strstr(buf, "write_failure"));
  free(buf);
  unlink(p);
  tg__io.pwrite = enospc_pwrite;
  assert_int_equal(tg_store_close(s), TG_ENOSPC);
  tg__io_reset();
  s = open_at(tgt_root, TG_STRICT);
  tg_store_stats st = tgt_stats(s);
  /* The failed create was queued, never acknowledged: the ring file may
     still hand it to this open (a STRICT error means "not known durable",
     not "not logged"), but nothing after it was ever queued. */
  assert_true(st.live_tokens == 2 || st.live_tokens == 3);
  assert_int_equal(tg_token_get(s, a, &got), 0);
  assert_true(got.weight == 1.0f);
  assert_int_equal(tg_token_get(s, b, &got), 0);
  assert_true(got.weight == 2.0f);
  tg_store_close(s);
}

/* ---- kill -9 ------------------------------------------------------------ */

static void test_strict_acknowledged_tokens_survive_sigkill(void **state) {
  (void)state;
  tgt_child child = tgt_fork_piped();
  if (child.pid == 0) {
    tg_store *s = open_at(tgt_root, TG_STRICT);
    for (uint32_t i = 1;; i++) {
      tg_token t = tok((float)i, i);
      uint32_t id;
      if (tg_token_create(s, &t, &id)) _exit(3);
      if (write(child.fd, &id, sizeof id) != sizeof id) _exit(4);
    }
  }
  uint32_t acked[200], n = 0;
  /* The ids are 4-byte writes to a pipe, each atomic (< PIPE_BUF). */
  while (n < 200 && tgt_read_full(child.fd, &acked[n], sizeof acked[n], NULL)) n++;
  kill(child.pid, SIGKILL);
  int status = tgt_wait_child(child.pid);
  close(child.fd);
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGKILL);
  assert_int_equal(n, 200);
  tg_store *s = open_at(tgt_root, TG_STRICT);
  for (uint32_t i = 0; i < n; i++) {
    tg_token t;
    assert_int_equal(tg_token_get(s, acked[i], &t), 0);
    assert_int_equal(t.timestamp, i + 1);
  }
  tg_store_close(s);
}

/* ---- group commit and background work --------------------------------- */

typedef struct strict_worker {
  tg_store *s;
  float weight; /* of the tokens this thread creates */
  int errors;
} strict_worker;

static void *strict_work(void *arg) {
  strict_worker *w = arg;
  for (int i = 0; i < 100; i++) {
    tg_token t = tok(w->weight, (uint32_t)i);
    uint32_t id;
    if (tg_token_create(w->s, &t, &id)) w->errors++;
  }
  return NULL;
}

static void test_strict_threads_share_fdatasyncs(void **state) {
  (void)state;
  tg_store *s = open_at(tgt_root, TG_STRICT);
  tg_metric_values before, after;
  tg_metrics_snapshot(&before);
  enum { T = 8 };
  strict_worker w[T];
  for (int i = 0; i < T; i++) w[i] = (strict_worker){s, (float)i, 0};
  tgt_run_threads(T, strict_work, w, sizeof w[0]);
  for (int i = 0; i < T; i++) assert_int_equal(w[i].errors, 0);
  tg_metrics_snapshot(&after);
  uint64_t syncs = after.v[TG_METRIC_WAL_FDATASYNCS] - before.v[TG_METRIC_WAL_FDATASYNCS];
  uint64_t records = after.v[TG_METRIC_WAL_RECORDS] - before.v[TG_METRIC_WAL_RECORDS];
  assert_int_equal(records, T * 100);
  /* Every call waited for durability, yet far fewer fdatasyncs than calls. */
  assert_true(syncs > 0);
  if (syncs * 2 > records) fail_msg("%llu fdatasyncs for %llu records",
                                    (unsigned long long)syncs, (unsigned long long)records);
  assert_int_equal(tg_store_close(s), 0);
}

static void test_automatic_checkpoint_runs_in_the_background(void **state) {
  (void)state;
  tg_store_config cfg = config(TG_RELAXED);
  cfg.checkpoint_bytes = 256 << 10;
  tg_store *s = NULL;
  assert_int_equal(tg_store_open(&s, tgt_root, &cfg), 0);
  for (int i = 0; i < 10000; i++) mk(s, 1, (uint32_t)i); /* 800 KB of log */
  tg_store_stats st;
  /* The checkpointer wakes every 100 ms; its work shows in the stats. */
  TGT_WAIT_UNTIL((tg_store_stats_get(s, &st), st.checkpoints > 0), "the automatic checkpoint");
  assert_true(st.checkpoint_lsn > 0);
  assert_int_equal(tg_store_close(s), 0);
  s = open_at(tgt_root, TG_RELAXED);
  tg_recovery_info ri;
  tg_store_recovery_info(s, &ri);
  /* At or after the one seen: 800 KB of log is three checkpoints' worth,
     and a later one may run between the look and the close (a TSan CI
     rehearsal on a loaded machine saw LSN 9,728 after 3,851). */
  assert_true(ri.checkpoint_lsn >= st.checkpoint_lsn);
  assert_int_equal(ri.checkpoint_tokens + ri.replayed_records, 10000);
  tg_store_close(s);
}

static void test_metrics_and_black_box_see_the_store(void **state) {
  (void)state;
  tg_store *s = open_at(tgt_root, TG_BALANCED);
  for (int i = 0; i < 10; i++) mk(s, 1, 1);
  assert_int_equal(tg_checkpoint(s), 0);
  tg_metric_values v;
  tg_metrics_snapshot(&v);
  assert_int_equal(v.v[TG_METRIC_TOKENS_LIVE], 10);
  assert_int_equal(v.v[TG_METRIC_TOKENS_CREATED], 10);
  assert_int_equal(v.v[TG_METRIC_CHECKPOINTS], 1);
  char p[300];
  snprintf(p, sizeof p, "%s/bb.json", tgt_root);
  assert_int_equal(tg_blackbox_dump(p), 0);
  FILE *f = fopen(p, "r");
  assert_non_null(f);
  char buf[1 << 16];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = 0;
  fclose(f);
  assert_non_null(strstr(buf, "recovery_end"));
  assert_non_null(strstr(buf, "checkpoint"));
  tg_store_close(s);
  tg_metrics_snapshot(&v);
  assert_int_equal(v.v[TG_METRIC_TOKENS_LIVE], 0); /* collector removed */
}

static void test_store_operations_are_traced(void **state) {
  (void)state;
  tg_trace_reset();
  assert_int_equal(tg_trace_set_rate(1.0), 0);
  tg_store *s = open_at(tgt_root, TG_STRICT);
  uint32_t a = mk(s, 1, 1), b = mk(s, 2, 2);
  link_(s, a, b, 0);
  assert_int_equal(tg_checkpoint(s), 0);
  assert_int_equal(tg_store_close(s), 0);
  s = open_at(tgt_root, TG_STRICT); /* a replay span */
  assert_int_equal(tg_store_close(s), 0);
  assert_int_equal(tg_trace_set_rate(0.01), 0);
  char p[300];
  snprintf(p, sizeof p, "%s/trace.json", tgt_root);
  assert_int_equal(tg_trace_write(p), 0);
  char *buf = tgt_read_file(p, NULL);
  const char *names[] = {"token.create", "connect", "wal.batch_write", "wal.fdatasync",
                         "checkpoint", "recovery.replay", "wal-writer"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (!strstr(buf, names[i])) fail_msg("trace has no '%s'", names[i]);
  free(buf);
  tg_trace_reset();
}

/* The I/O seam's openat, renaming swap_from over swap_to right after the
   store has opened and checked checkpoint/lock.mdb, the last file it opens
   before LMDB opens its own: a data.mdb replaced between the check and
   LMDB's open. */
static char swap_from[512], swap_to[512];
static int swapping_openat(int dirfd, const char *path, int flags, mode_t mode) {
  int fd = openat(dirfd, path, flags, mode);
  if (fd >= 0 && swap_from[0] && !strcmp(path, "lock.mdb")) {
    if (rename(swap_from, swap_to)) fail_msg("rename: %s", strerror(errno));
    swap_from[0] = '\0';
  }
  return fd;
}

/* LMDB opens data.mdb by name after the store has checked it: a file put
   in its place in between is found by comparing LMDB's descriptor with
   the checked inode, and the open is refused. */
static void test_a_checkpoint_replaced_while_it_is_opened_is_refused(void **state) {
  (void)state;
  tg_store *s = open_at(tgt_root, TG_BALANCED);
  for (uint32_t i = 0; i < 20; i++) mk(s, (float)i, i);
  assert_int_equal(tg_checkpoint(s), 0);
  assert_int_equal(tg_store_close(s), 0);
  char cmd[1100];
  snprintf(swap_from, sizeof swap_from, "%s/checkpoint/other.mdb", tgt_root);
  snprintf(swap_to, sizeof swap_to, "%s/checkpoint/data.mdb", tgt_root);
  snprintf(cmd, sizeof cmd, "cp '%s' '%s'", swap_to, swap_from);
  assert_int_equal(system(cmd), 0);
  tg__io.openat = swapping_openat;
  assert_open_refused(tgt_root, TG_ENOTTG, 0, "replaced while it was being opened");
  assert_int_equal(swap_from[0], '\0'); /* the swap happened */
  tg__io_reset();
  /* The file now in place is a valid checkpoint: only the swap was wrong. */
  s = open_at(tgt_root, TG_BALANCED);
  assert_int_equal(tgt_stats(s).live_tokens, 20);
  assert_int_equal(tg_store_close(s), 0);
}

/* ---- hostile directories -------------------------------------------------- */

/* What is outside the data directory, to be proved untouched: every entry
   under root (links not followed) with its type, size and an FNV-1a hash of
   its bytes, one line each, into a malloc'd string. */
static char *outside_snapshot(const char *root) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "cd '%s' && find . -printf '%%p %%y %%s %%m\\n' | sort", root);
  FILE *f = popen(cmd, "r");
  assert_non_null(f);
  size_t cap = 1 << 16, n = 0;
  char *out = malloc(cap), line[1024];
  assert_non_null(out);
  out[0] = '\0';
  while (fgets(line, sizeof line, f)) {
    char path[900], type = 0;
    uint64_t h = 1469598103934665603ull;
    if (sscanf(line, "%899s %c", path, &type) == 2 && type == 'f') {
      char full[1200];
      snprintf(full, sizeof full, "%s/%s", root, path);
      size_t len = 0;
      unsigned char *b = (unsigned char *)tgt_read_file(full, &len);
      for (size_t i = 0; i < len; i++) h = (h ^ b[i]) * 1099511628211ull;
      free(b);
    }
    int w = snprintf(out + n, cap - n, "%.*s %016llx\n", (int)strcspn(line, "\n"), line,
                     (unsigned long long)h);
    assert_true(w > 0 && (size_t)w < cap - n);
    n += (size_t)w;
  }
  pclose(f);
  return out;
}

/* How a hostile entry is planted. */
enum plant {
  PLANT_LINK_FILE,    /* a symbolic link to an outside file with bytes */
  PLANT_LINK_EMPTY,   /* to an empty outside file (LMDB would grow it) */
  PLANT_LINK_NOWHERE, /* to an outside name that does not exist (O_CREAT
                         through it would create it) */
  PLANT_LINK_DIR,     /* to an outside directory */
  PLANT_FIFO,         /* a FIFO (an open for reading would block) */
  PLANT_WRONG_TYPE,   /* a directory where a file belongs, a file where a
                         directory belongs */
  PLANTS
};
static const char *const plant_name[] = {"link to a file", "link to an empty file",
                                         "dangling link", "link to a directory", "FIFO",
                                         "wrong type"};

/* Replace entry `name` of dir with a hostile one pointing into out. */
static void plant(const char *dir, const char *name, int is_dir, enum plant how,
                  const char *out) {
  char p[512], t[512];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  tgt_rmtree(p); /* a missing entry is fine: TOKENGRAPH.tmp is one */
  switch (how) {
  case PLANT_LINK_FILE: snprintf(t, sizeof t, "%s/victim", out); break;
  case PLANT_LINK_EMPTY: snprintf(t, sizeof t, "%s/empty", out); break;
  case PLANT_LINK_NOWHERE: snprintf(t, sizeof t, "%s/created", out); break;
  case PLANT_LINK_DIR: snprintf(t, sizeof t, "%s/vdir", out); break;
  case PLANT_FIFO: assert_int_equal(mkfifo(p, 0600), 0); return;
  default:
    if (is_dir) tgt_write_file(p, "not a directory\n");
    else assert_int_equal(mkdir(p, 0700), 0);
    return;
  }
  assert_int_equal(symlink(t, p), 0);
}

enum hostile_op { OP_OPEN, OP_READ_ONLY, OP_INSPECT, OP_REPAIR, OP_REPAIR_FORCE, OPS };
static const char *const op_name[] = {"open", "read-only open", "inspect", "repair",
                                      "repair --force"};

/* What one operation said, sent from the child. */
typedef struct hostile_result {
  int rc;
  int clean;     /* inspect: the log ends clean and every record applies */
  char msg[512];
} hostile_result;

/* Run op on dir in a forked child, so that a hang is a failed test (the
   child is killed at the patience deadline), not a hung one. */
static hostile_result run_hostile_op(const char *dir, enum hostile_op op) {
  tgt_child c = tgt_fork_piped();
  hostile_result r;
  memset(&r, 0, sizeof r);
  if (c.pid == 0) {
    tg_store_config cfg = config(TG_BALANCED);
    cfg.crash_dump = 0;
    if (op == OP_OPEN || op == OP_READ_ONLY) {
      tg_store *s = NULL;
      cfg.read_only = op == OP_READ_ONLY;
      r.rc = tg_store_open_msg(&s, dir, &cfg, r.msg, sizeof r.msg);
      if (!r.rc) r.rc = tg_store_close(s);
    } else if (op == OP_INSPECT) {
      tg_inspect_report rep;
      r.rc = tg_store_inspect(dir, &rep, NULL, NULL, r.msg, sizeof r.msg);
      r.clean = !r.rc && rep.end.reason == TG_WAL_END_CLEAN && !rep.apply_failed_lsn;
      if (!r.rc && !r.clean)
        snprintf(r.msg, sizeof r.msg, "%s at %s", rep.end.what ? rep.end.what : "not clean",
                 rep.end.path);
    } else {
      tg_repair_report rep;
      r.rc = tg_store_repair(dir, &cfg, op == OP_REPAIR_FORCE ? TG_REPAIR_FORCE : 0, &rep,
                             NULL, NULL, r.msg, sizeof r.msg);
    }
    ssize_t w = write(c.fd, &r, sizeof r);
    _exit(w == (ssize_t)sizeof r ? 0 : 3);
  }
  size_t got = 0;
  int ok = tgt_read_full(c.fd, &r, sizeof r, &got);
  close(c.fd);
  int st = tgt_wait_child(c.pid);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || !ok)
    fail_msg("%s of %s: the child died (status %#x)", op_name[op], dir, st);
  r.msg[sizeof r.msg - 1] = '\0';
  return r;
}

/*
 * Every entry of a data directory, replaced by a link out of it (to a file,
 * an empty file, a name that does not exist, a directory), a FIFO, or an
 * entry of the wrong type: the open, the read-only open, tg_store_inspect()
 * and tg_store_repair() each end (none blocks), refuse it with a message that
 * names it (or, inspect, report the log unclean; the ring, which only the
 * open drains, and a segment are reported that way), and nothing outside
 * the directory changes or appears. TOKENGRAPH.tmp is a leftover temporary
 * that only a first open writes (and then removes whatever is there): an
 * existing store ignores it.
 */
static void test_hostile_entries_are_refused_and_nothing_outside_changes(void **state) {
  (void)state;
  char tmpl[256], out[256], dir[256];
  snprintf(tmpl, sizeof tmpl, "%s/template", tgt_root);
  snprintf(out, sizeof out, "%s/outside", tgt_root);
  snprintf(dir, sizeof dir, "%s/case", tgt_root);
  /* Two segments, a checkpoint (data.mdb, lock.mdb) and the ring. */
  tg_store_config cfg = config(TG_BALANCED);
  cfg.wal.segment_bytes = TGT_SEG_BYTES;
  tg_store *s = tgt_open(tmpl, &cfg);
  for (uint32_t i = 0; i < 600; i++) mk(s, (float)i, i);
  assert_int_equal(tg_checkpoint(s), 0);
  for (uint32_t i = 0; i < 1200; i++) mk(s, (float)i, i);
  assert_int_equal(tg_store_close(s), 0);
  char seg[64] = "";
  {
    char cmd[400];
    snprintf(cmd, sizeof cmd, "ls '%s/wal' | grep '\\.wal$' | tail -1", tmpl);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    assert_non_null(fgets(seg, sizeof seg, f));
    pclose(f);
    seg[strcspn(seg, "\n")] = '\0';
  }
  char segname[80];
  snprintf(segname, sizeof segname, "wal/%s", seg);

  assert_int_equal(mkdir(out, 0700), 0);
  char p[400];
  snprintf(p, sizeof p, "%s/victim", out);
  tgt_write_file(p, "bytes that belong to someone else\n");
  snprintf(p, sizeof p, "%s/empty", out);
  tgt_write_file(p, "");
  snprintf(p, sizeof p, "%s/vdir", out);
  assert_int_equal(mkdir(p, 0700), 0);
  snprintf(p, sizeof p, "%s/vdir/keep", out);
  tgt_write_file(p, "kept\n");
  char *before = outside_snapshot(out);

  const struct {
    const char *name;
    int is_dir;
  } entries[] = {{"TOKENGRAPH", 0},           {"TOKENGRAPH.tmp", 0},
                 {"LOCK", 0},                 {"wal", 1},
                 {"checkpoint", 1},           {"checkpoint/data.mdb", 0},
                 {"checkpoint/lock.mdb", 0},  {segname, 0},
                 {"wal/ring", 0}};
  int cases = 0;
  for (size_t e = 0; e < sizeof entries / sizeof entries[0]; e++) {
    for (int how = 0; how < PLANTS; how++) {
      char cmd[600];
      tgt_rmtree(dir);
      snprintf(cmd, sizeof cmd, "cp -a '%s' '%s'", tmpl, dir);
      assert_int_equal(system(cmd), 0);
      plant(dir, entries[e].name, entries[e].is_dir, (enum plant)how, out);
      int leftover = !strcmp(entries[e].name, "TOKENGRAPH.tmp");
      const char *base = strrchr(entries[e].name, '/');
      base = base ? base + 1 : entries[e].name;
      static const enum hostile_op order[] = {OP_INSPECT, OP_READ_ONLY, OP_REPAIR, OP_OPEN,
                                              OP_REPAIR_FORCE};
      for (size_t o = 0; o < OPS; o++) {
        enum hostile_op op = order[o];
        hostile_result r = run_hostile_op(dir, op);
        char *now = outside_snapshot(out);
        if (strcmp(before, now))
          fail_msg("%s as %s: %s changed the outside:\n%s\nwas:\n%s", entries[e].name,
                   plant_name[how], op_name[op], now, before);
        free(now);
        if (op == OP_REPAIR_FORCE || leftover) continue; /* may succeed */
        int refused = r.rc != 0 || (op == OP_INSPECT && !r.clean);
        if (!refused)
          fail_msg("%s as %s: %s succeeded", entries[e].name, plant_name[how], op_name[op]);
        if (!strstr(r.msg, base))
          fail_msg("%s as %s: %s said '%s' (%s), which does not name it", entries[e].name,
                   plant_name[how], op_name[op], r.msg, tg_err_name(r.rc));
        /* And says what is there: a link is called one (a segment's used to
           read "Too many levels of symbolic links", O_NOFOLLOW's ELOOP). */
        if (how <= PLANT_LINK_DIR && !strstr(r.msg, "is a symbolic link"))
          fail_msg("%s as %s: %s said '%s' (%s), which does not call it a link",
                   entries[e].name, plant_name[how], op_name[op], r.msg, tg_err_name(r.rc));
        cases++;
      }
    }
  }
  assert_int_equal(cases, 8 * PLANTS * 4);
  /* The one open that writes TOKENGRAPH.tmp, the first: whatever stands
     there is removed, never written through. */
  for (int how = 0; how < PLANTS; how++) {
    tgt_rmtree(dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    plant(dir, "TOKENGRAPH.tmp", 0, (enum plant)how, out);
    hostile_result r = run_hostile_op(dir, OP_OPEN);
    if (r.rc && !strstr(r.msg, "TOKENGRAPH"))
      fail_msg("first open over a TOKENGRAPH.tmp %s: %s (%s)", plant_name[how],
               tg_err_name(r.rc), r.msg);
    char *now = outside_snapshot(out);
    if (strcmp(before, now))
      fail_msg("first open over a TOKENGRAPH.tmp %s changed the outside", plant_name[how]);
    free(now);
  }
  /* A hostile lock.mdb beside no data.mdb (no checkpoint yet): the store,
     the reader and the inspection refuse it alike, and the open creates
     no data.mdb on the way (found by fuzz_datadir: inspection used to call
     such a directory clean). */
  for (int how = 0; how < PLANTS; how++) {
    tgt_rmtree(dir);
    char cmd[1000];
    snprintf(cmd, sizeof cmd, "cp -a '%s' '%s' && rm -f '%s/checkpoint/data.mdb'", tmpl, dir,
             dir);
    assert_int_equal(system(cmd), 0);
    plant(dir, "checkpoint/lock.mdb", 0, (enum plant)how, out);
    static const enum hostile_op ops[] = {OP_INSPECT, OP_READ_ONLY, OP_OPEN};
    for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
      hostile_result r = run_hostile_op(dir, ops[o]);
      int refused = r.rc != 0 || (ops[o] == OP_INSPECT && !r.clean);
      if (!refused || !strstr(r.msg, "lock.mdb"))
        fail_msg("lock.mdb as %s without data.mdb: %s gave %s '%s'", plant_name[how],
                 op_name[ops[o]], tg_err_name(r.rc), r.msg);
    }
    char p2[400];
    struct stat st;
    snprintf(p2, sizeof p2, "%s/checkpoint/data.mdb", dir);
    if (lstat(p2, &st) == 0)
      fail_msg("lock.mdb as %s: the refused open created data.mdb", plant_name[how]);
    char *now = outside_snapshot(out);
    if (strcmp(before, now))
      fail_msg("lock.mdb as %s without data.mdb changed the outside", plant_name[how]);
    free(now);
  }
  free(before);
}

/* Segment names are parsed within bounds: a name of 30 digits, or of 20
   digits past the largest LSN, is no segment and is left alone; a segment
   named with the largest LSN is refused as corrupt. None of them makes the
   log open, read or grow anything else. */
static void test_segment_names_with_huge_numbers_are_ignored_or_refused(void **state) {
  (void)state;
  tg_store *s = open_at(tgt_root, TG_BALANCED);
  for (uint32_t i = 0; i < 10; i++) mk(s, (float)i, i);
  assert_int_equal(tg_store_close(s), 0);
  const char *ignored[] = {"000000000000000000000000000001.wal",
                           "99999999999999999999.wal", "184467440737095516160.wal"};
  char p[400];
  for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) {
    snprintf(p, sizeof p, "%s/wal/%s", tgt_root, ignored[i]);
    tgt_write_file(p, "not a segment\n");
  }
  tg_store_config cfg = config(TG_BALANCED);
  cfg.crash_dump = 0;
  char msg[512] = "";
  assert_int_equal(tg_store_open_msg(&s, tgt_root, &cfg, msg, sizeof msg), 0);
  assert_int_equal(tgt_stats(s).live_tokens, 10);
  assert_int_equal(tg_store_close(s), 0);
  tg_inspect_report rep;
  assert_int_equal(tg_store_inspect(tgt_root, &rep, NULL, NULL, msg, sizeof msg), 0);
  assert_int_equal(rep.end.reason, TG_WAL_END_CLEAN);
  for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) {
    snprintf(p, sizeof p, "%s/wal/%s", tgt_root, ignored[i]);
    assert_int_equal(tgt_file_size(p), 14); /* untouched */
  }
  /* UINT64_MAX itself parses: a segment that claims it is no segment of
     this log, and the log after it would overflow. */
  snprintf(p, sizeof p, "%s/wal/18446744073709551615.wal", tgt_root);
  tgt_write_file(p, "not a segment\n");
  msg[0] = '\0';
  int rc = tg_store_open_msg(&s, tgt_root, &cfg, msg, sizeof msg);
  if (rc == 0) fail_msg("a segment named 18446744073709551615.wal was accepted");
  if (!strstr(msg, "18446744073709551615"))
    fail_msg("open: '%s' (%s) does not name the segment", msg, tg_err_name(rc));
  assert_int_equal(tgt_file_size(p), 14);
  assert_int_equal(tg_store_inspect(tgt_root, &rep, NULL, NULL, msg, sizeof msg), 0);
  assert_int_not_equal(rep.end.reason, TG_WAL_END_CLEAN);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    TGT_TEST(test_reopen_replays_every_mutation_exactly),
    TGT_TEST(test_checkpoint_then_more_changes_survive_reopen),
    TGT_TEST(test_checkpoint_removes_covered_segments),
    TGT_TEST(test_quota_rejection_logs_nothing),
    TGT_TEST(test_a_second_open_of_the_directory_is_refused),
    TGT_TEST(test_files_and_directories_are_private),
    TGT_TEST(test_foreign_directory_is_refused_and_left_alone),
    TGT_TEST(test_newer_format_is_refused),
    TGT_TEST(test_a_file_instead_of_a_directory_is_refused),
    TGT_TEST(test_a_checkpoint_that_is_not_ours_is_refused),
    TGT_TEST(test_hostile_entries_are_refused_and_nothing_outside_changes),
    TGT_TEST(test_a_checkpoint_replaced_while_it_is_opened_is_refused),
    TGT_TEST(test_segment_names_with_huge_numbers_are_ignored_or_refused),
    TGT_TEST(test_full_disk_fails_the_store_and_loses_nothing_durable),
    TGT_TEST(test_strict_acknowledged_tokens_survive_sigkill),
    TGT_TEST(test_strict_threads_share_fdatasyncs),
    TGT_TEST(test_automatic_checkpoint_runs_in_the_background),
    TGT_TEST(test_balanced_creates_survive_abort),
    TGT_TEST(test_relaxed_creates_survive_abort),
    TGT_TEST(test_metrics_and_black_box_see_the_store),
    TGT_TEST(test_store_operations_are_traced),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
