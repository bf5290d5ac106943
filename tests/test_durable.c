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

static char dir[128];

static int setup(void **state) {
  (void)state;
  tgt_mkdtemp(dir, sizeof dir, "tg_durable");
  return 0;
}

static int teardown(void **state) {
  (void)state;
  tgt_rmtree(dir);
  tg__io_reset();
  return 0;
}

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
  tg_connection c;
  memset(&c, 0, sizeof c);
  c.from = a;
  c.to = b;
  c.type = type;
  c.confidence = 0.25f;
  uint32_t id = 0;
  assert_int_equal(tg_connect(s, &c, &id), 0);
  return id;
}

typedef struct list {
  uint32_t ids[256];
  int n;
} list;

static int collect(void *arg, const tg_connection *c) {
  list *l = arg;
  assert_true(l->n < (int)(sizeof l->ids / sizeof l->ids[0]));
  l->ids[l->n++] = c->id;
  return 0;
}

static list edges(tg_store *s, uint32_t id) {
  list l;
  memset(&l, 0, sizeof l);
  assert_int_equal(tg_token_edges(s, id, TG_BOTH, collect, &l), 0);
  return l;
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
  list e = edges(s, ids[10]);
  assert_int_equal(tg_disconnect(s, e.ids[0]), 0);
}

/* Compare two stores token by token and edge list by edge list. */
static void assert_same(tg_store *a, tg_store *b, const uint32_t *ids, int n) {
  tg_store_stats sa, sb;
  tg_store_stats_get(a, &sa);
  tg_store_stats_get(b, &sb);
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
    list la = edges(a, ids[i]), lb = edges(b, ids[i]);
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
  tg_store *mem = NULL;
  assert_int_equal(tg_store_open(&mem, NULL, NULL), 0);
  build_graph(mem, ids, N);

  tg_store *s = open_at(dir, TG_BALANCED);
  uint32_t ids2[N];
  build_graph(s, ids2, N);
  assert_memory_equal(ids, ids2, sizeof ids);
  assert_int_equal(tg_store_close(s), 0);

  s = open_at(dir, TG_BALANCED);
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
  tg_store *mem = NULL;
  assert_int_equal(tg_store_open(&mem, NULL, NULL), 0);
  tg_store *s = open_at(dir, TG_RELAXED);
  build_graph(mem, ids, N / 2);
  build_graph(s, ids, N / 2);
  assert_int_equal(tg_checkpoint(s), 0);
  tg_store_stats st;
  tg_store_stats_get(s, &st);
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

  s = open_at(dir, TG_RELAXED);
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
  s = open_at(dir, TG_RELAXED);
  tg_store_recovery_info(s, &ri);
  assert_int_equal(ri.replayed_records, 0);
  assert_same(mem, s, ids, N / 2);
  tg_store_close(s);
  tg_store_close(mem);
}

static void test_checkpoint_removes_covered_segments(void **state) {
  (void)state;
  tg_store *s = open_at(dir, TG_RELAXED);
  for (int i = 0; i < 40000; i++) mk(s, 1, (uint32_t)i); /* ~3 MiB of log */
  assert_int_equal(tg_sync(s), 0);
  char waldir[256];
  snprintf(waldir, sizeof waldir, "%s/wal", dir);
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
  s = open_at(dir, TG_RELAXED);
  tg_store_stats st;
  tg_store_stats_get(s, &st);
  assert_int_equal(st.live_tokens, 40000);
  tg_store_close(s);
}

static void test_quota_rejection_logs_nothing(void **state) {
  (void)state;
  tg_store_config cfg = config(TG_BALANCED);
  cfg.guardian.max_tokens = 3;
  tg_store *s = NULL;
  assert_int_equal(tg_store_open(&s, dir, &cfg), 0);
  for (int i = 0; i < 3; i++) mk(s, 1, 1);
  tg_store_stats a, b;
  tg_store_stats_get(s, &a);
  uint32_t id;
  assert_int_equal(tg_token_create(s, NULL, &id), TG_EQUOTA);
  tg_store_stats_get(s, &b);
  assert_int_equal(a.last_lsn, 3);
  assert_int_equal(b.last_lsn, 3);
  tg_store_close(s);
}

static void test_a_second_open_of_the_directory_is_refused(void **state) {
  (void)state;
  tg_store *s = open_at(dir, TG_BALANCED);
  tg_store *t = (tg_store *)&t;
  char msg[256];
  tg_store_config cfg = config(TG_BALANCED);
  assert_int_equal(tg_store_open_msg(&t, dir, &cfg, msg, sizeof msg), TG_ELOCKED);
  assert_null(t);
  assert_non_null(strstr(msg, "in use"));
  tg_store_close(s);
  /* Released on close. */
  s = open_at(dir, TG_BALANCED);
  tg_store_close(s);
}

static void test_files_and_directories_are_private(void **state) {
  (void)state;
  char sub[256];
  snprintf(sub, sizeof sub, "%s/data", dir);
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

static void test_foreign_directory_is_refused_and_left_alone(void **state) {
  (void)state;
  char p[300];
  snprintf(p, sizeof p, "%s/notes.txt", dir);
  tgt_write_file(p, "mine\n");
  tg_store *s = NULL;
  char msg[512];
  assert_int_equal(tg_store_open_msg(&s, dir, NULL, msg, sizeof msg), TG_ENOTTG);
  assert_non_null(strstr(msg, "not a tokengraph data directory"));
  snprintf(p, sizeof p, "ls -A %s | wc -l", dir);
  FILE *l = popen(p, "r");
  int n = 0;
  assert_int_equal(fscanf(l, "%d", &n), 1);
  pclose(l);
  assert_int_equal(n, 1); /* nothing created */
}

static void test_newer_format_is_refused(void **state) {
  (void)state;
  tg_store *s = open_at(dir, TG_BALANCED);
  tg_store_close(s);
  char p[300];
  snprintf(p, sizeof p, "%s/TOKENGRAPH", dir);
  tgt_write_file(p, "tokengraph data directory\nformat 2\n");
  char msg[512];
  assert_int_equal(tg_store_open_msg(&s, dir, NULL, msg, sizeof msg), TG_EVERSION);
  assert_non_null(strstr(msg, "format 2"));
}

static void test_a_file_instead_of_a_directory_is_refused(void **state) {
  (void)state;
  char p[300];
  snprintf(p, sizeof p, "%s/file", dir);
  tgt_write_file(p, "");
  tg_store *s = NULL;
  char msg[512];
  assert_int_equal(tg_store_open_msg(&s, p, NULL, msg, sizeof msg), -ENOTDIR);
  assert_non_null(strstr(msg, "not a directory"));
  snprintf(p, sizeof p, "%s/no/such/parent", dir);
  assert_int_equal(tg_store_open_msg(&s, p, NULL, msg, sizeof msg), -ENOENT);
}

static void test_a_checkpoint_that_is_not_ours_is_refused(void **state) {
  (void)state;
  tg_store *s = open_at(dir, TG_BALANCED);
  tg_store_close(s);
  char p[300];
  /* Random bytes in place of the LMDB file. */
  snprintf(p, sizeof p, "%s/checkpoint/data.mdb", dir);
  FILE *f = fopen(p, "w");
  for (int i = 0; i < 8192; i++) fputc((i * 7919) & 0xFF, f);
  fclose(f);
  char msg[512];
  int rc = tg_store_open_msg(&s, dir, NULL, msg, sizeof msg);
  assert_true(rc == TG_ENOTTG || rc == TG_ECORRUPT);
  assert_non_null(strstr(msg, "checkpoint"));
  /* A valid LMDB environment that is someone else's. */
  snprintf(p, sizeof p, "%s/checkpoint/data.mdb", dir);
  unlink(p);
  snprintf(p, sizeof p, "%s/checkpoint/lock.mdb", dir);
  unlink(p);
  snprintf(p, sizeof p, "%s/checkpoint", dir);
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  assert_int_equal(mdb_env_create(&env), 0);
  assert_int_equal(mdb_env_open(env, p, 0, 0600), 0);
  assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
  MDB_val k = {3, "key"}, v = {5, "value"};
  assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
  assert_int_equal(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
  rc = tg_store_open_msg(&s, dir, NULL, msg, sizeof msg);
  assert_int_equal(rc, TG_ENOTTG);
  assert_non_null(strstr(msg, "not a tokengraph checkpoint"));
}

/* ---- injected failures -------------------------------------------------- */

static ssize_t enospc_pwrite(int fd, const void *b, size_t n, off_t off) {
  (void)fd, (void)b, (void)n, (void)off;
  errno = ENOSPC;
  return -1;
}

static void test_full_disk_fails_the_store_and_loses_nothing_durable(void **state) {
  (void)state;
  tg_store *s = open_at(dir, TG_STRICT);
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
  snprintf(p, sizeof p, "%s/bb-failure.json", dir);
  tg__io_reset();
  assert_int_equal(tg_blackbox_dump(p), 0);
  FILE *f = fopen(p, "r");
  assert_non_null(f);
  static char buf[1 << 20];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = 0;
  fclose(f);
  assert_non_null(strstr(buf, "write_failure"));
  unlink(p);
  tg__io.pwrite = enospc_pwrite;
  assert_int_equal(tg_store_close(s), TG_ENOSPC);
  tg__io_reset();
  s = open_at(dir, TG_STRICT);
  tg_store_stats st;
  tg_store_stats_get(s, &st);
  assert_int_equal(st.live_tokens, 2);
  assert_int_equal(tg_token_get(s, a, &got), 0);
  assert_true(got.weight == 1.0f);
  tg_store_close(s);
}

/* ---- kill -9 ------------------------------------------------------------ */

static void test_strict_acknowledged_tokens_survive_sigkill(void **state) {
  (void)state;
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    tg_store *s = open_at(dir, TG_STRICT);
    for (uint32_t i = 1;; i++) {
      tg_token t = tok((float)i, i);
      uint32_t id;
      if (tg_token_create(s, &t, &id)) _exit(3);
      if (write(fds[1], &id, sizeof id) != sizeof id) _exit(4);
    }
  }
  close(fds[1]);
  uint32_t acked[200], n = 0;
  /* The ids are 4-byte writes to a pipe, each atomic (< PIPE_BUF). */
  while (n < 200 && tgt_read_full(fds[0], &acked[n], sizeof acked[n], NULL)) n++;
  kill(pid, SIGKILL);
  int status = tgt_wait_child(pid);
  close(fds[0]);
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGKILL);
  assert_int_equal(n, 200);
  tg_store *s = open_at(dir, TG_STRICT);
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
  int n;
  int errors;
} strict_worker;

static void *strict_work(void *arg) {
  strict_worker *w = arg;
  for (int i = 0; i < 100; i++) {
    tg_token t = tok((float)w->n, (uint32_t)i);
    uint32_t id;
    if (tg_token_create(w->s, &t, &id)) w->errors++;
  }
  return NULL;
}

static void test_strict_threads_share_fdatasyncs(void **state) {
  (void)state;
  tg_store *s = open_at(dir, TG_STRICT);
  tg_metric_values before, after;
  tg_metrics_snapshot(&before);
  enum { T = 8 };
  pthread_t th[T];
  strict_worker w[T];
  for (int i = 0; i < T; i++) {
    w[i] = (strict_worker){s, i, 0};
    assert_int_equal(pthread_create(&th[i], NULL, strict_work, &w[i]), 0);
  }
  for (int i = 0; i < T; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(w[i].errors, 0);
  }
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
  assert_int_equal(tg_store_open(&s, dir, &cfg), 0);
  for (int i = 0; i < 10000; i++) mk(s, 1, (uint32_t)i); /* 800 KB of log */
  tg_store_stats st;
  /* The checkpointer wakes every 100 ms; its work shows in the stats. */
  TGT_WAIT_UNTIL((tg_store_stats_get(s, &st), st.checkpoints > 0), "the automatic checkpoint");
  assert_true(st.checkpoint_lsn > 0);
  assert_int_equal(tg_store_close(s), 0);
  s = open_at(dir, TG_RELAXED);
  tg_recovery_info ri;
  tg_store_recovery_info(s, &ri);
  assert_int_equal(ri.checkpoint_lsn, st.checkpoint_lsn);
  assert_int_equal(ri.checkpoint_tokens + ri.replayed_records, 10000);
  tg_store_close(s);
}

static void test_metrics_and_black_box_see_the_store(void **state) {
  (void)state;
  tg_store *s = open_at(dir, TG_BALANCED);
  for (int i = 0; i < 10; i++) mk(s, 1, 1);
  assert_int_equal(tg_checkpoint(s), 0);
  tg_metric_values v;
  tg_metrics_snapshot(&v);
  assert_int_equal(v.v[TG_METRIC_TOKENS_LIVE], 10);
  assert_int_equal(v.v[TG_METRIC_TOKENS_CREATED], 10);
  assert_int_equal(v.v[TG_METRIC_CHECKPOINTS], 1);
  char p[300];
  snprintf(p, sizeof p, "%s/bb.json", dir);
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
  tg_store *s = open_at(dir, TG_STRICT);
  uint32_t a = mk(s, 1, 1), b = mk(s, 2, 2);
  link_(s, a, b, 0);
  assert_int_equal(tg_checkpoint(s), 0);
  assert_int_equal(tg_store_close(s), 0);
  s = open_at(dir, TG_STRICT); /* a replay span */
  assert_int_equal(tg_store_close(s), 0);
  assert_int_equal(tg_trace_set_rate(0.01), 0);
  char p[300];
  snprintf(p, sizeof p, "%s/trace.json", dir);
  assert_int_equal(tg_trace_write(p), 0);
  FILE *f = fopen(p, "r");
  assert_non_null(f);
  static char buf[1 << 20];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = 0;
  fclose(f);
  const char *names[] = {"token.create", "connect", "wal.batch_write", "wal.fdatasync",
                         "checkpoint", "recovery.replay", "wal-writer"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (!strstr(buf, names[i])) fail_msg("trace has no '%s'", names[i]);
  tg_trace_reset();
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_reopen_replays_every_mutation_exactly, setup, teardown),
    cmocka_unit_test_setup_teardown(test_checkpoint_then_more_changes_survive_reopen, setup, teardown),
    cmocka_unit_test_setup_teardown(test_checkpoint_removes_covered_segments, setup, teardown),
    cmocka_unit_test_setup_teardown(test_quota_rejection_logs_nothing, setup, teardown),
    cmocka_unit_test_setup_teardown(test_a_second_open_of_the_directory_is_refused, setup, teardown),
    cmocka_unit_test_setup_teardown(test_files_and_directories_are_private, setup, teardown),
    cmocka_unit_test_setup_teardown(test_foreign_directory_is_refused_and_left_alone, setup, teardown),
    cmocka_unit_test_setup_teardown(test_newer_format_is_refused, setup, teardown),
    cmocka_unit_test_setup_teardown(test_a_file_instead_of_a_directory_is_refused, setup, teardown),
    cmocka_unit_test_setup_teardown(test_a_checkpoint_that_is_not_ours_is_refused, setup, teardown),
    cmocka_unit_test_setup_teardown(test_full_disk_fails_the_store_and_loses_nothing_durable, setup, teardown),
    cmocka_unit_test_setup_teardown(test_strict_acknowledged_tokens_survive_sigkill, setup, teardown),
    cmocka_unit_test_setup_teardown(test_strict_threads_share_fdatasyncs, setup, teardown),
    cmocka_unit_test_setup_teardown(test_automatic_checkpoint_runs_in_the_background, setup, teardown),
    cmocka_unit_test_setup_teardown(test_metrics_and_black_box_see_the_store, setup, teardown),
    cmocka_unit_test_setup_teardown(test_store_operations_are_traced, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
