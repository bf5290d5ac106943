/*
 * Read-only access to a live data directory (cfg.read_only,
 * tg_store_refresh(), tg_store_inspect() of a held directory), hot backup
 * (tg_store_backup(), tg-replay backup) and the kill -9 cases: a backup
 * taken under load, and a read-only verify of a store under load.
 *
 * The writer's operations are one deterministic sequence (op()), one WAL
 * record each, so LSN k is the k-th operation: a state "is a prefix" when
 * it equals, token by token and connection by connection, an in-memory
 * store that ran the first k operations.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tokengraph/trace.h"
#include "util.h"

/* ---- the writer's operations --------------------------------------------- */

typedef struct ops {
  uint32_t ids[1 << 16]; /* tokens created, in order */
  uint32_t n;            /* of ids */
  uint32_t del;          /* next ids[] index to delete */
} ops;

/* Operation j (from 1) on s: a create, an update, a connect or a delete,
   each one WAL record. Returns the call's result. */
static int op(tg_store *s, ops *st, uint64_t j) {
  /* Connects only while the id list still grows: once it is full they
     would all join its last two tokens, up to max_degree. */
  if (st->n >= 3 && j % 4 == 0 && st->n < sizeof st->ids / sizeof st->ids[0]) {
    tg_connection c;
    memset(&c, 0, sizeof c);
    c.from = st->ids[st->n - 2];
    c.to = st->ids[st->n - 1];
    c.type = (uint8_t)(j % TG_CONN_TYPES);
    c.weight = (float)j;
    uint32_t id;
    return tg_connect(s, &c, &id);
  }
  if (st->n >= 3 && j % 10 == 5) {
    tg_token t;
    int rc = tg_token_get(s, st->ids[st->n - 1], &t);
    if (rc) return rc;
    t.weight = -(float)j;
    return tg_token_update(s, &t);
  }
  if (st->n >= 8 && j % 10 == 9 && st->del + 4 < st->n)
    return tg_token_delete(s, st->ids[st->del++]);
  tg_token t;
  memset(&t, 0, sizeof t);
  t.weight = (float)j;
  t.timestamp = (uint32_t)j;
  t.coord[0][0] = (int16_t)(j & 0x7fff);
  uint32_t id = 0;
  int rc = tg_token_create(s, &t, &id);
  if (!rc && st->n < sizeof st->ids / sizeof st->ids[0]) st->ids[st->n++] = id;
  return rc;
}

/* Assert that s holds exactly the state of the first k operations. */
static void assert_prefix(tg_store *s, uint64_t k) {
  tg_store *m = tgt_open(NULL, NULL);
  ops *st = calloc(1, sizeof *st);
  assert_non_null(st);
  for (uint64_t j = 1; j <= k; j++) assert_int_equal(op(m, st, j), 0);
  tg_store_stats a = tgt_stats(s), b = tgt_stats(m);
  assert_int_equal(a.live_tokens, b.live_tokens);
  assert_int_equal(a.live_connections, b.live_connections);
  uint64_t max = b.tokens_created + 1;
  for (uint32_t id = 1; id <= max; id++) {
    tg_token x, y;
    int rx = tg_token_get(s, id, &x), ry = tg_token_get(m, id, &y);
    assert_int_equal(rx, ry);
    if (!rx) {
      x.flags &= (uint16_t)~TG_TOKEN_DIRTY;
      y.flags &= (uint16_t)~TG_TOKEN_DIRTY;
      assert_memory_equal(&x, &y, sizeof x);
    }
  }
  for (uint32_t id = 1; id <= b.connections_created + 1; id++) {
    tg_connection x, y;
    int rx = tg_connection_get(s, id, &x), ry = tg_connection_get(m, id, &y);
    assert_int_equal(rx, ry);
    if (!rx) assert_memory_equal(&x, &y, sizeof x);
  }
  free(st);
  tg_store_close(m);
}

static tg_store_config ro_config(void) {
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.read_only = 1;
  cfg.crash_dump = 0;
  return cfg;
}

static tg_store *open_ro(const char *dir) {
  tg_store_config cfg = ro_config();
  return tgt_open(dir, &cfg);
}

/* Run operations from *j on: n of them. */
static void run_ops(tg_store *s, ops *st, uint64_t *j, uint64_t n) {
  for (uint64_t e = *j + n; *j < e; (*j)++) assert_int_equal(op(s, st, *j), 0);
}

/* ---- read-only handles --------------------------------------------------- */

static int count_token(void *arg, const tg_token *t) {
  (void)t;
  ++*(uint64_t *)arg;
  return 0;
}

static void test_read_only_open_shows_a_prefix_of_a_live_store_and_refresh_moves_it(void **state) {
  (void)state;
  tg_store_config cfg = tgt_small_log_config();
  cfg.wal.level = TG_STRICT; /* every call's record is synced before the next */
  tg_store *w = tgt_open(tgt_data, &cfg);
  ops *st = calloc(1, sizeof *st);
  uint64_t j = 1;
  run_ops(w, st, &j, 300);
  tg_store *r = open_ro(tgt_data);
  tg_store_stats rs = tgt_stats(r);
  /* At STRICT the batch of call k + 1 carries the DURABLE marker for k. */
  assert_true(rs.last_lsn >= 299 && rs.last_lsn <= 300);
  assert_prefix(r, rs.last_lsn);
  run_ops(w, st, &j, 300);
  assert_int_equal(tg_store_refresh(r), 0);
  rs = tgt_stats(r);
  assert_true(rs.last_lsn >= 599 && rs.last_lsn <= 600);
  assert_prefix(r, rs.last_lsn);
  /* Close writes a last DURABLE marker: the whole log is durable. */
  assert_int_equal(tg_store_close(w), 0);
  assert_int_equal(tg_store_refresh(r), 0);
  assert_int_equal(tgt_stats(r).last_lsn, 600);
  assert_prefix(r, 600);
  uint64_t scanned = 0; /* scans read a read-only handle as any other */
  assert_int_equal(tg_token_scan(r, 0, count_token, &scanned), 0);
  assert_int_equal(scanned, tgt_stats(r).live_tokens);
  assert_int_equal(tg_store_close(r), 0);
  free(st);
}

/* Records the log files hold now, as a reader finds them. */
static uint64_t records_written(void) {
  tg_wal_reader *rd = NULL;
  tg_wal_record rec;
  uint64_t n = 0;
  if (tg_wal_reader_open(&rd, tgt_wal, 0)) return 0;
  while (tg_wal_reader_next(rd, &rec) == 1) n++;
  tg_wal_reader_close(rd);
  return n;
}

static void test_a_live_store_is_shown_up_to_its_durable_point_a_closed_one_whole(
    void **state) {
  (void)state;
  tg_store_config cfg = tgt_small_log_config(); /* RELAXED: no fdatasync */
  tg_store *w = tgt_open(tgt_data, &cfg);
  ops *st = calloc(1, sizeof *st);
  uint64_t j = 1;
  run_ops(w, st, &j, 100);
  TGT_WAIT_UNTIL(records_written() == 100, "the writer to write 100 records");
  /* Written, never fdatasynced: a power loss could take them back. */
  tg_store *r = open_ro(tgt_data);
  assert_int_equal(tgt_stats(r).last_lsn, 0);
  assert_int_equal(tgt_stats(r).live_tokens, 0);
  assert_int_equal(tg_sync(w), 0);
  run_ops(w, st, &j, 1); /* its batch carries the DURABLE marker for 100 */
  TGT_WAIT_UNTIL(records_written() == 101, "the writer to write record 101");
  assert_int_equal(tg_store_refresh(r), 0);
  assert_int_equal(tgt_stats(r).last_lsn, 100);
  assert_prefix(r, 100);
  /* Nobody holds it any more: every valid record, as an open replays them
     (whatever markers the close wrote). */
  assert_int_equal(tg_store_close(w), 0);
  assert_int_equal(tg_store_refresh(r), 0);
  assert_int_equal(tgt_stats(r).last_lsn, 101);
  assert_prefix(r, 101);
  assert_int_equal(tg_store_close(r), 0);
  free(st);
}

/* (name, size) of every file under the data directory but LMDB's lock
   file, whose reader table is the one thing a read-only open writes. */
static void listing(char *out, size_t len) {
  static const char *const subs[] = {"", "/checkpoint", "/wal"};
  out[0] = 0;
  for (size_t i = 0; i < 3; i++) {
    char path[512], file[1024];
    snprintf(path, sizeof path, "%s%s", tgt_data, subs[i]);
    char **names = NULL;
    size_t n = 0;
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d))) {
      names = realloc(names, (n + 1) * sizeof *names);
      names[n++] = strdup(e->d_name);
    }
    if (d) closedir(d);
    for (size_t a = 0; a < n; a++) /* sorted: readdir's order is not stable */
      for (size_t b = a + 1; b < n; b++)
        if (strcmp(names[a], names[b]) > 0) {
          char *x = names[a];
          names[a] = names[b];
          names[b] = x;
        }
    for (size_t a = 0; a < n; a++) {
      struct stat sb;
      snprintf(file, sizeof file, "%s/%s", path, names[a]);
      if (strcmp(names[a], "lock.mdb") && lstat(file, &sb) == 0 && S_ISREG(sb.st_mode)) {
        size_t l = strlen(out);
        snprintf(out + l, len - l, "%s:%lld:%lld.%09ld\n", file, (long long)sb.st_size,
                 (long long)sb.st_mtim.tv_sec, sb.st_mtim.tv_nsec);
      }
      free(names[a]);
    }
    free(names);
  }
}

static void test_read_only_handle_refuses_every_change_and_writes_nothing(void **state) {
  (void)state;
  tg_store_config cfg = tgt_small_log_config();
  tg_store *w = tgt_open(tgt_data, &cfg);
  ops *st = calloc(1, sizeof *st);
  uint64_t j = 1;
  run_ops(w, st, &j, 100);
  assert_int_equal(tg_checkpoint(w), 0);
  run_ops(w, st, &j, 100);
  assert_int_equal(tg_store_close(w), 0);
  char before[8192], after[8192];
  listing(before, sizeof before);

  tg_store *r = open_ro(tgt_data);
  /* A view of another store: not counted in this process's metrics. */
  tg_metric_values mv;
  tg_metrics_snapshot(&mv);
  assert_int_equal(mv.v[TG_METRIC_TOKENS_LIVE], 0);
  assert_true(tgt_stats(r).live_tokens > 0);
  tg_token t;
  memset(&t, 0, sizeof t);
  tg_connection c;
  memset(&c, 0, sizeof c);
  c.from = c.to = st->ids[st->n - 1];
  t.id = st->ids[st->n - 1];
  uint32_t id = 7;
  assert_int_equal(tg_token_create(r, &t, &id), TG_EREADONLY);
  assert_int_equal(tg_token_update(r, &t), TG_EREADONLY);
  assert_int_equal(tg_token_delete(r, t.id), TG_EREADONLY);
  assert_int_equal(tg_connect(r, &c, &id), TG_EREADONLY);
  assert_int_equal(tg_disconnect(r, 1), TG_EREADONLY);
  assert_int_equal(tg_checkpoint(r), TG_EREADONLY);
  tg_batch *bt = (tg_batch *)&t; /* must stay untouched */
  assert_int_equal(tg_batch_begin(r, &bt), TG_EREADONLY);
  assert_null(bt);
  assert_int_equal(tg_connection_update(r, &c), TG_EREADONLY);
  assert_int_equal(tg_sync(r), 0);
  assert_string_equal(tg_err_name(TG_EREADONLY), "TG_EREADONLY");
  assert_prefix(r, 200); /* nothing changed */
  assert_int_equal(tg_store_refresh(r), 0);
  assert_int_equal(tgt_stats(r).checkpoint_lsn, 100);
  assert_int_equal(tg_store_close(r), 0);
  listing(after, sizeof after);
  assert_string_equal(before, after);
  free(st);
}

static void test_read_only_open_takes_no_lock_that_blocks_the_owner(void **state) {
  (void)state;
  tg_store_config cfg = tgt_small_log_config();
  tg_store *w = tgt_open(tgt_data, &cfg);
  assert_int_equal(tg_store_close(w), 0);
  tg_store *r = open_ro(tgt_data);
  /* The owner opens, writes and checkpoints while the reader is open. */
  w = tgt_open(tgt_data, &cfg);
  ops *st = calloc(1, sizeof *st);
  uint64_t j = 1;
  run_ops(w, st, &j, 50);
  assert_int_equal(tg_checkpoint(w), 0);
  tg_store *r2 = open_ro(tgt_data); /* and another reader while it holds it */
  assert_int_equal(tgt_stats(r2).checkpoint_lsn, 50);
  assert_prefix(r2, 50);
  assert_int_equal(tg_store_close(w), 0);
  assert_int_equal(tg_store_close(r2), 0);
  assert_int_equal(tg_store_close(r), 0);
  free(st);
}

static void test_refresh_follows_checkpoints_that_delete_the_segments_it_read(void **state) {
  (void)state;
  tg_store_config cfg = tgt_small_log_config();
  tg_store *w = tgt_open(tgt_data, &cfg);
  ops *st = calloc(1, sizeof *st);
  uint64_t j = 1;
  run_ops(w, st, &j, 3000);
  assert_int_equal(tg_sync(w), 0);
  run_ops(w, st, &j, 1); /* its batch vouches for the ones before ... */
  assert_int_equal(tg_sync(w), 0); /* ... once it is written */
  tg_store *r = open_ro(tgt_data);
  uint64_t seen = tgt_stats(r).last_lsn;
  assert_true(seen >= 3000);
  run_ops(w, st, &j, 3000);
  assert_int_equal(tg_checkpoint(w), 0); /* deletes the segments after `seen` */
  char seg[512];
  tgt_seg_path(seg, sizeof seg, 1, "");
  assert_true(access(seg, F_OK) != 0);
  run_ops(w, st, &j, 100);
  assert_int_equal(tg_store_close(w), 0);
  assert_int_equal(tg_store_refresh(r), 0);
  tg_store_stats rs = tgt_stats(r);
  assert_int_equal(rs.checkpoint_lsn, 6001);
  assert_int_equal(rs.last_lsn, 6101);
  assert_prefix(r, 6101);
  assert_int_equal(tg_store_close(r), 0);
  free(st);
}

typedef struct sampler {
  tg_store *r;
  atomic_int stop;
  size_t n;
  uint64_t lsn[20000], tokens[20000], conns[20000];
} sampler;

static void *sample(void *p) {
  sampler *a = p;
  while (!atomic_load_explicit(&a->stop, memory_order_acquire) && a->n < 20000) {
    tg_store_stats st = tgt_stats(a->r);
    a->lsn[a->n] = st.last_lsn;
    a->tokens[a->n] = st.live_tokens;
    a->conns[a->n] = st.live_connections;
    a->n++;
  }
  return NULL;
}

static void test_readers_of_a_read_only_handle_see_each_refresh_whole(void **state) {
  (void)state;
  tg_store_config cfg = tgt_small_log_config();
  tg_store *w = tgt_open(tgt_data, &cfg);
  ops *st = calloc(1, sizeof *st);
  uint64_t j = 1;
  run_ops(w, st, &j, 1000);
  tg_store *r = open_ro(tgt_data);
  sampler *a = calloc(1, sizeof *a);
  a->r = r;
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, sample, a), 0);
  for (int round = 0; round < 12; round++) {
    run_ops(w, st, &j, 500);
    if (round == 6) assert_int_equal(tg_checkpoint(w), 0); /* a reload, then */
    assert_int_equal(tg_sync(w), 0);
    run_ops(w, st, &j, 1);
    assert_int_equal(tg_sync(w), 0);
    assert_int_equal(tg_store_refresh(r), 0);
    assert_true(tgt_stats(r).last_lsn >= j - 2);
  }
  atomic_store_explicit(&a->stop, 1, memory_order_release);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_int_equal(tg_store_close(w), 0);
  /* Every sample is the state of the LSN it was read with. */
  uint64_t max = j;
  uint64_t *tok = calloc(max + 1, sizeof *tok), *con = calloc(max + 1, sizeof *con);
  tg_store *m = tgt_open(NULL, NULL);
  ops *ms = calloc(1, sizeof *ms);
  for (uint64_t k = 1; k < max; k++) {
    assert_int_equal(op(m, ms, k), 0);
    tok[k] = tgt_stats(m).live_tokens;
    con[k] = tgt_stats(m).live_connections;
  }
  assert_true(a->n > 0);
  for (size_t i = 0; i < a->n; i++) {
    assert_true(a->lsn[i] < max);
    assert_int_equal(a->tokens[i], tok[a->lsn[i]]);
    assert_int_equal(a->conns[i], con[a->lsn[i]]);
  }
  tg_store_close(m);
  assert_int_equal(tg_store_close(r), 0);
  free(tok);
  free(con);
  free(ms);
  free(a);
  free(st);
}

typedef struct batcher {
  tg_store *s;
  atomic_int stop;
  atomic_int rc; /* the first failure (cmocka's asserts belong to the main thread) */
  atomic_uint_fast64_t commits;
} batcher;

/* Commits batches of 50 tokens until told to stop or a call fails. */
static void *batch_writer(void *p) {
  batcher *a = p;
  while (!atomic_load_explicit(&a->stop, memory_order_acquire)) {
    tg_batch *b = NULL;
    int rc = tg_batch_begin(a->s, &b);
    for (int i = 0; i < 50 && !rc; i++) {
      uint32_t id;
      rc = tg_batch_token_create(b, NULL, &id);
    }
    if (b) {
      int crc = rc ? (tg_batch_abort(b), 0) : tg_batch_commit(b);
      if (!rc) rc = crc;
    }
    if (rc) {
      atomic_store_explicit(&a->rc, rc, memory_order_release);
      break;
    }
    atomic_fetch_add_explicit(&a->commits, 1, memory_order_release);
  }
  return NULL;
}

static void test_a_read_only_handle_never_shows_part_of_a_batch(void **state) {
  (void)state;
  tg_store_config cfg = tgt_small_log_config();
  cfg.wal.level = TG_BALANCED;
  /* Checkpoints (and segment deletions) while views are built, but not so
     often that a view built slowly (TSan) always finds the log after its
     checkpoint deleted: docs/operations.md, "Known limits". */
  cfg.checkpoint_bytes = 4u << 20;
  tg_store *w = tgt_open(tgt_data, &cfg);
  batcher a;
  memset(&a, 0, sizeof a);
  a.s = w;
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, batch_writer, &a), 0);
  TGT_WAIT_UNTIL(atomic_load_explicit(&a.commits, memory_order_acquire) >= 20, "20 batches");
  tg_store *r = open_ro(tgt_data);
  uint64_t seen = 0, moved = 0, deadline = tgp_now_ns() + TGT_PATIENCE_NS;
  while (moved < 5) { /* refreshes until the view moved five times */
    int wrc = atomic_load_explicit(&a.rc, memory_order_acquire);
    if (wrc || tgp_now_ns() > deadline) {
      atomic_store_explicit(&a.stop, 1, memory_order_release);
      pthread_join(th, NULL);
      if (wrc) fail_msg("the writer's batch failed: %s", tg_strerror(wrc));
      fail_msg("the view moved only %llu times", (unsigned long long)moved);
    }
    assert_int_equal(tg_store_refresh(r), 0);
    tg_store_stats st = tgt_stats(r);
    assert_int_equal(st.live_tokens % 50, 0);
    assert_int_equal(st.live_tokens, st.last_lsn * 50); /* one record a batch */
    assert_true(st.live_tokens >= seen);
    moved += st.live_tokens > seen;
    seen = st.live_tokens;
  }
  atomic_store_explicit(&a.stop, 1, memory_order_release);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_int_equal(atomic_load_explicit(&a.rc, memory_order_acquire), 0);
  assert_int_equal(tg_store_close(w), 0);
  assert_int_equal(tg_store_refresh(r), 0);
  assert_int_equal(tgt_stats(r).live_tokens,
                   atomic_load_explicit(&a.commits, memory_order_acquire) * 50);
  assert_int_equal(tg_store_close(r), 0);
}

static void test_read_only_open_of_a_missing_or_empty_directory_creates_nothing(void **state) {
  (void)state;
  tg_store_config cfg = ro_config();
  tg_store *r = NULL;
  char msg[512] = "";
  assert_int_equal(tg_store_open_msg(&r, tgt_data, &cfg, msg, sizeof msg), -ENOENT);
  assert_null(r);
  assert_true(msg[0] != 0);
  assert_true(access(tgt_data, F_OK) != 0);
  assert_int_equal(mkdir(tgt_data, 0700), 0);
  assert_int_equal(tg_store_open_msg(&r, tgt_data, &cfg, msg, sizeof msg), TG_ENOTTG);
  DIR *d = opendir(tgt_data);
  int entries = 0;
  struct dirent *e;
  while ((e = readdir(d))) entries += e->d_name[0] != '.';
  closedir(d);
  assert_int_equal(entries, 0);
  assert_int_equal(tg_store_refresh(NULL), TG_EINVAL);
  tg_store *m = tgt_open(NULL, NULL);
  assert_int_equal(tg_store_refresh(m), TG_EINVAL); /* not a read-only handle */
  assert_int_equal(tg_store_backup(m, tgt_root, NULL, NULL), TG_EINVAL); /* in memory */
  tg_store_close(m);
}

/* A checkpoint whose meta pages claim a page size past the file is
   refused with TG_ECORRUPT before LMDB maps it. With lock.mdb present (a
   directory an owner has had open) the read-only open pins LMDB's reader
   table first, and mdb_env_open() on such a file died of SIGBUS (found by
   tests/fuzz/fuzz_replay.c through tg-replay backup). */
static void test_read_only_open_refuses_a_damaged_checkpoint_meta_without_crashing(
    void **state) {
  (void)state;
  tg_store *s = tgt_open(tgt_data, NULL);
  uint32_t id;
  for (int i = 0; i < 3; i++) assert_int_equal(tg_token_create(s, NULL, &id), 0);
  assert_int_equal(tg_checkpoint(s), 0);
  assert_int_equal(tg_store_close(s), 0);
  char p[320];
  snprintf(p, sizeof p, "%s/checkpoint/lock.mdb", tgt_data);
  assert_int_equal(access(p, F_OK), 0); /* the pinning path is taken */
  snprintf(p, sizeof p, "%s/checkpoint/data.mdb", tgt_data);
  int fd = open(p, O_RDWR);
  assert_true(fd >= 0);
  /* Both metas (pages 0 and 1 of 4 KiB): the page size, LMDB's
     mm_dbs[FREE_DBI].md_pad, 16 + 24 bytes into the page. */
  uint32_t psize = 0x4001000;
  for (int page = 0; page < 2; page++)
    assert_int_equal(pwrite(fd, &psize, sizeof psize, page * 4096 + 40), (ssize_t)sizeof psize);
  close(fd);
  tg_store_config cfg = ro_config();
  tg_store *r = NULL;
  char msg[512] = "";
  assert_int_equal(tg_store_open_msg(&r, tgt_data, &cfg, msg, sizeof msg), TG_ECORRUPT);
  assert_null(r);
  if (!strstr(msg, "data.mdb")) fail_msg("'%s' does not name data.mdb", msg);
}

static void test_inspect_of_a_held_directory_reports_its_durable_prefix(void **state) {
  (void)state;
  tg_store_config cfg = tgt_small_log_config();
  cfg.wal.level = TG_STRICT;
  tg_store *w = tgt_open(tgt_data, &cfg);
  ops *st = calloc(1, sizeof *st);
  uint64_t j = 1;
  run_ops(w, st, &j, 500);
  tg_inspect_report rep;
  char msg[512] = "";
  assert_int_equal(tg_store_inspect(tgt_data, &rep, NULL, NULL, msg, sizeof msg), 0);
  assert_int_equal(rep.live, 1);
  assert_int_equal(rep.end.reason, TG_WAL_END_CLEAN);
  assert_true(rep.last_lsn >= 499 && rep.last_lsn <= 500);
  tg_store *m = tgt_open(NULL, NULL);
  ops *ms = calloc(1, sizeof *ms);
  for (uint64_t k = 1; k <= rep.last_lsn; k++) assert_int_equal(op(m, ms, k), 0);
  assert_int_equal(rep.tokens, tgt_stats(m).live_tokens);
  assert_int_equal(rep.connections, tgt_stats(m).live_connections);
  tg_store_close(m);
  assert_int_equal(tg_store_close(w), 0);
  /* Closed: inspected as before, not live. */
  assert_int_equal(tg_store_inspect(tgt_data, &rep, NULL, NULL, msg, sizeof msg), 0);
  assert_int_equal(rep.live, 0);
  assert_int_equal(rep.last_lsn, 500);
  free(st);
  free(ms);
}

/* ---- hot backup ----------------------------------------------------------- */

typedef struct writer_arg {
  tg_store *s;
  ops *st;
  uint64_t j;
  atomic_int stop;
  atomic_uint_fast64_t done; /* operations acknowledged */
} writer_arg;

static void *writer(void *p) {
  writer_arg *a = p;
  while (!atomic_load_explicit(&a->stop, memory_order_acquire)) {
    assert_int_equal(op(a->s, a->st, a->j), 0);
    atomic_store_explicit(&a->done, a->j, memory_order_release);
    a->j++;
  }
  return NULL;
}

typedef struct prog_seen {
  uint64_t calls, records, lsn;
} prog_seen;

static void on_progress(void *arg, uint64_t records, uint64_t lsn) {
  prog_seen *p = arg;
  p->calls++;
  p->records = records;
  p->lsn = lsn;
}

static void test_backup_while_a_thread_writes_opens_as_the_state_of_one_lsn(void **state) {
  (void)state;
  tg_store_config cfg = tgt_small_log_config();
  cfg.wal.level = TG_BALANCED;
  cfg.checkpoint_bytes = 256 * 1024; /* checkpoints (and deletions) meanwhile */
  tg_store *w = tgt_open(tgt_data, &cfg);
  writer_arg a;
  memset(&a, 0, sizeof a);
  a.s = w;
  a.st = calloc(1, sizeof *a.st);
  a.j = 1;
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, writer, &a), 0);
  TGT_WAIT_UNTIL(atomic_load_explicit(&a.done, memory_order_acquire) >= 20000,
                 "20,000 operations");
  uint64_t started = atomic_load_explicit(&a.done, memory_order_acquire);
  char dest[256];
  snprintf(dest, sizeof dest, "%s/backup", tgt_root);
  prog_seen p = {0, 0, 0};
  char msg[512] = "";
  int rc = tg_store_backup_msg(w, dest, on_progress, &p, msg, sizeof msg);
  if (rc) fail_msg("backup: %s: %s", tg_err_name(rc), msg);
  uint64_t ended = atomic_load_explicit(&a.done, memory_order_acquire);
  atomic_store_explicit(&a.stop, 1, memory_order_release);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_int_equal(tg_store_close(w), 0);
  /* The backup is the state of its LSN, which lies between the operations
     acknowledged before it started and those acknowledged after it. */
  tg_store *b = tgt_open(dest, &cfg);
  uint64_t lsn = tgt_stats(b).last_lsn;
  assert_true(lsn >= started && lsn <= ended);
  assert_true(p.calls >= 1);
  assert_int_equal(p.lsn, lsn); /* the last call names the backup's LSN */
  assert_prefix(b, lsn);
  assert_int_equal(tg_store_close(b), 0);
  free(a.st);
}

static void test_backup_refuses_a_destination_that_is_not_empty(void **state) {
  (void)state;
  tg_store_config cfg = tgt_small_log_config();
  tg_store *w = tgt_open(tgt_data, &cfg);
  ops *st = calloc(1, sizeof *st);
  uint64_t j = 1;
  run_ops(w, st, &j, 10);
  char dest[256], keep[300];
  snprintf(dest, sizeof dest, "%s/backup", tgt_root);
  assert_int_equal(mkdir(dest, 0700), 0);
  snprintf(keep, sizeof keep, "%s/keep", dest);
  tgt_write_file(keep, "mine");
  char msg[512] = "";
  assert_int_equal(tg_store_backup_msg(w, dest, NULL, NULL, msg, sizeof msg), TG_EEXIST);
  assert_non_null(strstr(msg, "not empty"));
  assert_true(access(keep, F_OK) == 0);
  char cdir[300];
  snprintf(cdir, sizeof cdir, "%s/checkpoint", dest);
  assert_true(access(cdir, F_OK) != 0);
  /* Into the store's own directory: not empty either. */
  assert_int_equal(tg_store_backup(w, tgt_data, NULL, NULL), TG_EEXIST);
  assert_int_equal(tg_store_close(w), 0);
  free(st);
}

static void test_backup_of_a_read_only_handle_is_its_view(void **state) {
  (void)state;
  tg_store_config cfg = tgt_small_log_config();
  tg_store *w = tgt_open(tgt_data, &cfg);
  ops *st = calloc(1, sizeof *st);
  uint64_t j = 1;
  run_ops(w, st, &j, 2000);
  assert_int_equal(tg_checkpoint(w), 0);
  run_ops(w, st, &j, 2000);
  assert_int_equal(tg_store_close(w), 0);
  tg_store *r = open_ro(tgt_data);
  char dest[256];
  snprintf(dest, sizeof dest, "%s/backup", tgt_root);
  assert_int_equal(tg_store_backup(r, dest, NULL, NULL), 0);
  assert_int_equal(tg_store_close(r), 0);
  tg_store *b = tgt_open(dest, &cfg);
  tg_recovery_info ri;
  assert_int_equal(tg_store_recovery_info(b, &ri), 0);
  assert_int_equal(ri.checkpoint_lsn, 2000);
  assert_int_equal(ri.replayed_records, 2000);
  assert_int_equal(tgt_stats(b).last_lsn, 4000);
  assert_prefix(b, 4000);
  /* A store like any other: it takes writes and reopens with them. */
  run_ops(b, st, &j, 10);
  assert_int_equal(tg_store_close(b), 0);
  b = tgt_open(dest, &cfg);
  assert_int_equal(tgt_stats(b).last_lsn, 4010);
  assert_prefix(b, 4010);
  assert_int_equal(tg_store_close(b), 0);
  free(st);
}

static int (*real_renameat)(int, const char *, int, const char *);

/* The identity file's rename fails, as if the process died right before. */
static int renameat_fails_for_identity(int od, const char *op, int nd, const char *np) {
  const char *base = strrchr(np, '/');
  if (!strcmp(base ? base + 1 : np, "TOKENGRAPH")) {
    errno = EIO; /* the table holds system calls: -1 and errno */
    return -1;
  }
  return real_renameat(od, op, nd, np);
}

static void test_backup_cut_short_never_opens_as_a_store(void **state) {
  (void)state;
  tg_store_config cfg = tgt_small_log_config();
  tg_store *w = tgt_open(tgt_data, &cfg);
  ops *st = calloc(1, sizeof *st);
  uint64_t j = 1;
  run_ops(w, st, &j, 1000);
  assert_int_equal(tg_checkpoint(w), 0);
  run_ops(w, st, &j, 1000);
  assert_int_equal(tg_store_close(w), 0);
  /* No lock.mdb: nobody has the environment open, and the read-only open
     creates none. */
  char lk[512], dest[256], data[320];
  snprintf(lk, sizeof lk, "%s/checkpoint/lock.mdb", tgt_data);
  assert_int_equal(unlink(lk), 0);
  tg_store *r = open_ro(tgt_data);
  assert_true(access(lk, F_OK) != 0);
  snprintf(dest, sizeof dest, "%s/backup", tgt_root);
  real_renameat = tg__io.renameat;
  tg__io.renameat = renameat_fails_for_identity;
  char msg[512] = "";
  assert_int_equal(tg_store_backup_msg(r, dest, NULL, NULL, msg, sizeof msg), -EIO);
  tg__io_reset();
  assert_true(msg[0] != 0);
  /* Everything but the identity file is there, and no open takes it. */
  snprintf(data, sizeof data, "%s/checkpoint/data.mdb", dest);
  struct stat sb;
  assert_int_equal(stat(data, &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0600);
  tg_store *b = NULL;
  assert_int_equal(tg_store_open(&b, dest, &cfg), TG_ENOTTG);
  tg_store_config rc = ro_config();
  assert_int_equal(tg_store_open(&b, dest, &rc), TG_ENOTTG);
  assert_null(b);
  assert_int_equal(tg_store_close(r), 0);
  free(st);
}

/* ---- kill -9: a writer process under load ---------------------------------- */

/* The writer of the running test, killed by the teardown if the test
   failed before it did. */
static pid_t writer_pid;

static int kill_teardown(void **state) {
  if (writer_pid > 0) {
    kill(writer_pid, SIGKILL);
    waitpid(writer_pid, NULL, 0);
    writer_pid = 0;
  }
  return tgt_teardown(state);
}

/* A child process that opens dir and runs operations until it is killed,
   writing the count acknowledged to the pipe every 500 of them. */
static tgt_child start_writer(const char *dir) {
  tgt_child c = tgt_fork_piped();
  if (c.pid) {
    writer_pid = c.pid;
    return c;
  }
  tg_store_config cfg = tgt_small_log_config();
  cfg.wal.level = TG_BALANCED;
  /* Checkpoints, and the deletion of the segments they cover, go on while
     the tool reads. Every 512 KiB, under ASan beside other suites, the
     writer checkpointed five times during one of the tool's attempts and
     starved all of them (TG_EAGAIN, docs/operations.md "Known limits"):
     2 MiB gives the reader four times as long. */
  cfg.checkpoint_bytes = 2u << 20;
  tg_store *s = NULL;
  if (tg_store_open(&s, dir, &cfg)) _exit(3);
  ops *st = calloc(1, sizeof *st);
  for (uint64_t j = 1;; j++) {
    int rc = op(s, st, j);
    if (rc == TG_EQUOTA) {
      /* The store is full (eviction is off): what was acknowledged stays
         as it is; wait to be killed. */
      uint64_t done = j - 1;
      if (tgp_write_all(c.fd, &done, sizeof done)) _exit(5);
      for (;;) pause();
    }
    if (rc) {
      fprintf(stderr, "writer: operation %llu: %s\n", (unsigned long long)j, tg_strerror(rc));
      _exit(4);
    }
    if (j % 500 == 0 && tgp_write_all(c.fd, &j, sizeof j)) _exit(5);
  }
}

/* Everything the writer reported so far (at least one report): its last
   count. Every operation it started by now is at most 500 past it. */
static uint64_t drain_acked(tgt_child *c) {
  uint64_t j = 0, last = 0;
  do {
    if (!tgt_read_full(c->fd, &j, sizeof j, NULL)) fail_msg("the writer ended early");
    last = j;
  } while (poll(&(struct pollfd){c->fd, POLLIN, 0}, 1, 0) == 1);
  return last;
}

/* Wait until the writer has acknowledged at least n operations. */
static uint64_t wait_acked(tgt_child *c, uint64_t n) {
  uint64_t j = 0;
  while (j < n)
    if (!tgt_read_full(c->fd, &j, sizeof j, NULL)) fail_msg("the writer ended early");
  return j;
}

static void kill_writer(tgt_child *c) {
  kill(c->pid, SIGKILL);
  int st = tgt_wait_child(c->pid);
  writer_pid = 0;
  assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
  close(c->fd);
}

/* Run tg-replay with args; its stdout into out. Returns the exit status. */
static int replay_tool(char *out, size_t len, const char *a1, const char *a2, const char *a3,
                       const char *a4) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "'%s' %s '%s' %s %s 2>/dev/null", TG_REPLAY_BIN, a1, a2,
           a3 ? a3 : "", a4 ? a4 : "");
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  size_t n = fread(out, 1, len - 1, p);
  out[n] = 0;
  int st = pclose(p);
  assert_true(WIFEXITED(st));
  return WEXITSTATUS(st);
}

static uint64_t json_u64(const char *json, const char *key) {
  char k[64];
  snprintf(k, sizeof k, "\"%s\":", key);
  const char *p = strstr(json, k);
  if (!p) fail_msg("no key %s in %s", key, json);
  return strtoull(p + strlen(k), NULL, 10);
}

/* The kill -9 tests below race a writer process against tg-replay; under
   TSan both run an order of magnitude slower and the writer's progress
   misses the tests' deadlines (seen in CI: 674 s, then a deadline). They
   test processes, not threads: the Release and ASan builds run them. */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TG__SKIP_UNDER_TSAN() skip()
#endif
#endif
#ifndef TG__SKIP_UNDER_TSAN
#define TG__SKIP_UNDER_TSAN() ((void)0)
#endif

static void test_kill9_backup_taken_under_load_opens_as_a_prefix(void **state) {
  (void)state;
  TG__SKIP_UNDER_TSAN();
  tgt_child c = start_writer(tgt_data);
  uint64_t before = wait_acked(&c, 20000);
  char dest[256], out[4096];
  snprintf(dest, sizeof dest, "%s/backup", tgt_root);
  int ex = replay_tool(out, sizeof out, "backup", tgt_data, dest, "--json");
  if (ex) fail_msg("tg-replay backup exited %d: %s", ex, out);
  uint64_t lsn = json_u64(out, "lsn");
  uint64_t after = drain_acked(&c) + 500;
  wait_acked(&c, before + 5000); /* the writer kept going */
  kill_writer(&c);
  /* The backup opens as a normal store and is the first `lsn` operations;
     they were durable, so the writer's own recovery has them too. */
  tg_store_config cfg = tgt_small_log_config();
  tg_store *b = tgt_open(dest, &cfg);
  assert_int_equal(tgt_stats(b).last_lsn, lsn);
  /* Durable records only: some acknowledged ones (BALANCED) may be newer. */
  assert_true(lsn > 0 && lsn <= after);
  assert_prefix(b, lsn);
  assert_int_equal(json_u64(out, "tokens"), tgt_stats(b).live_tokens);
  assert_int_equal(tg_store_close(b), 0);
  tg_store *o = tgt_open(tgt_data, &cfg);
  assert_true(tgt_stats(o).last_lsn >= lsn);
  assert_int_equal(tg_store_close(o), 0);
}

static void test_kill9_read_only_verify_under_load_exits_0_with_a_prefix(void **state) {
  (void)state;
  TG__SKIP_UNDER_TSAN();
  tgt_child c = start_writer(tgt_data);
  wait_acked(&c, 10000);
  char out[16384];
  for (int round = 0; round < 3; round++) {
    int ex = replay_tool(out, sizeof out, "verify", tgt_data, "--json", NULL);
    if (ex) fail_msg("tg-replay verify of a live store exited %d: %s", ex, out);
    assert_non_null(strstr(out, "\"live\":true"));
    assert_non_null(strstr(out, "\"end\":\"clean\""));
    uint64_t last = json_u64(out, "last_lsn"), ck = json_u64(out, "checkpoint_lsn");
    uint64_t at = last ? last : ck;
    uint64_t after = drain_acked(&c) + 500;
    if (!(at > 0 && at <= after)) fail_msg("at %llu after %llu: %s", (unsigned long long)at, (unsigned long long)after, out);
    /* Its counts are those of the first `at` operations. */
    tg_store *m = tgt_open(NULL, NULL);
    ops *ms = calloc(1, sizeof *ms);
    for (uint64_t k = 1; k <= at; k++) assert_int_equal(op(m, ms, k), 0);
    assert_int_equal(json_u64(out, "tokens"), tgt_stats(m).live_tokens);
    assert_int_equal(json_u64(out, "connections"), tgt_stats(m).live_connections);
    tg_store_close(m);
    free(ms);
    wait_acked(&c, after + 3000);
  }
  /* dump of the live store: records up to the durable point, then the
     result object. */
  int ex = replay_tool(out, sizeof out, "stats", tgt_data, "--json", NULL);
  assert_int_equal(ex, 0);
  kill_writer(&c);
  /* After the kill, not live: verify reads it as a crashed directory. */
  ex = replay_tool(out, sizeof out, "verify", tgt_data, "--json", NULL);
  assert_true(ex == 0 || ex == 1);
  assert_non_null(strstr(out, "\"live\":false"));
}

static void test_replay_tool_dumps_a_live_store_to_its_durable_point_and_reports_backup_errors(
    void **state) {
  (void)state;
  tg_store_config cfg = tgt_small_log_config();
  cfg.wal.level = TG_STRICT;
  tg_store *w = tgt_open(tgt_data, &cfg);
  ops *st = calloc(1, sizeof *st);
  uint64_t j = 1;
  run_ops(w, st, &j, 300);
  static char out[1 << 17];
  int ex = replay_tool(out, sizeof out, "dump", tgt_data, "--json", NULL);
  assert_int_equal(ex, 0);
  const char *res = strstr(out, "{\"dir\"");
  assert_non_null(res);
  assert_non_null(strstr(res, "\"live\":true"));
  uint64_t printed = json_u64(res, "printed"), last = json_u64(res, "last_lsn");
  assert_true(last >= 299 && last <= 300);
  assert_int_equal(printed, last); /* every record up to the durable point */
  uint64_t lines = 0;
  for (const char *p = out; p < res; p++) lines += *p == '\n';
  assert_int_equal(lines, printed);

  /* backup: usage, a destination that is not empty, a missing source. */
  ex = replay_tool(out, sizeof out, "backup", tgt_data, "--json", NULL);
  assert_int_equal(ex, 64);
  assert_non_null(strstr(out, "\"status\":\"usage\""));
  ex = replay_tool(out, sizeof out, "backup", tgt_data, tgt_data, "--json");
  assert_int_equal(ex, 2);
  assert_non_null(strstr(out, "\"error\":\"TG_EEXIST\""));
  char missing[256], dest[256];
  snprintf(missing, sizeof missing, "%s/missing", tgt_root);
  snprintf(dest, sizeof dest, "%s/backup", tgt_root);
  ex = replay_tool(out, sizeof out, "backup", missing, dest, "--json");
  assert_int_equal(ex, 2);
  assert_non_null(strstr(out, "\"error\":\"ENOENT\""));
  assert_true(access(missing, F_OK) != 0);
  /* And a good one, in text. */
  ex = replay_tool(out, sizeof out, "backup", tgt_data, dest, NULL);
  assert_int_equal(ex, 0);
  assert_non_null(strstr(out, "records/s"));
  assert_int_equal(tg_store_close(w), 0);
  free(st);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      TGT_TEST(test_read_only_open_shows_a_prefix_of_a_live_store_and_refresh_moves_it),
      TGT_TEST(test_a_live_store_is_shown_up_to_its_durable_point_a_closed_one_whole),
      TGT_TEST(test_read_only_handle_refuses_every_change_and_writes_nothing),
      TGT_TEST(test_read_only_open_takes_no_lock_that_blocks_the_owner),
      TGT_TEST(test_refresh_follows_checkpoints_that_delete_the_segments_it_read),
      TGT_TEST(test_readers_of_a_read_only_handle_see_each_refresh_whole),
      TGT_TEST(test_a_read_only_handle_never_shows_part_of_a_batch),
      TGT_TEST(test_read_only_open_of_a_missing_or_empty_directory_creates_nothing),
      TGT_TEST(test_read_only_open_refuses_a_damaged_checkpoint_meta_without_crashing),
      TGT_TEST(test_inspect_of_a_held_directory_reports_its_durable_prefix),
      TGT_TEST(test_backup_while_a_thread_writes_opens_as_the_state_of_one_lsn),
      TGT_TEST(test_backup_refuses_a_destination_that_is_not_empty),
      TGT_TEST(test_backup_of_a_read_only_handle_is_its_view),
      TGT_TEST(test_backup_cut_short_never_opens_as_a_store),
      TGT_TEST(
          test_replay_tool_dumps_a_live_store_to_its_durable_point_and_reports_backup_errors),
      cmocka_unit_test_setup_teardown(test_kill9_backup_taken_under_load_opens_as_a_prefix,
                                      tgt_setup, kill_teardown),
      cmocka_unit_test_setup_teardown(
          test_kill9_read_only_verify_under_load_exits_0_with_a_prefix, tgt_setup,
          kill_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
