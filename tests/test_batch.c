/*
 * Atomic write batches (tg_batch_*), tg_connection_update(), and the
 * durable position (tg_durable_lsn, tg_wait_durable, tg_last_lsn): every
 * call and error path, replay, and a batch torn at every byte of its frame.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <cmocka.h>

#include "store/store_internal.h"
#include "util.h"

static tg_store_config cfg_at(int level) {
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.wal.level = level;
  cfg.checkpoint_bytes = 0;
  cfg.crash_dump = 0;
  cfg.wal.ring_slots = 1024;
  return cfg;
}

static tg_store *open_level(int level) {
  tg_store_config cfg = cfg_at(level);
  return tgt_open(tgt_data, &cfg);
}

static tg_token tok_ts(uint32_t ts) {
  tg_token t;
  memset(&t, 0, sizeof t);
  t.timestamp = ts;
  t.weight = 1.0f;
  return t;
}

static uint32_t mk(tg_store *s, uint32_t ts) {
  tg_token t = tok_ts(ts);
  uint32_t id = 0;
  assert_int_equal(tg_token_create(s, &t, &id), 0);
  return id;
}

static int exists(tg_store *s, uint32_t id) {
  tg_token t;
  return tg_token_get(s, id, &t) == 0;
}

static int conn_exists(tg_store *s, uint32_t id) {
  tg_connection c;
  return tg_connection_get(s, id, &c) == 0;
}

/* ---- batches: the calls ------------------------------------------------- */

/* Two tokens and a connection between them, made by one batch: the ids
   are known at the calls, name nothing until the commit, and are the ones
   the objects have afterwards. */
static void batch_creates_and_connects(tg_store *s) {
  tg_batch *b = NULL;
  assert_int_equal(tg_batch_begin(s, &b), 0);
  uint32_t a = 0, z = 0, c = 0;
  tg_token ta = tok_ts(11), tz = tok_ts(22);
  assert_int_equal(tg_batch_token_create(b, &ta, &a), 0);
  assert_int_equal(tg_batch_token_create(b, &tz, &z), 0);
  assert_true(a != 0 && z != 0 && a != z);
  tg_connection e;
  memset(&e, 0, sizeof e);
  e.from = a;
  e.to = z;
  e.type = TG_CONN_TYPE(TG_CAT_CAUSAL, 3);
  e.weight = 0.5f;
  assert_int_equal(tg_batch_connect(b, &e, &c), 0);
  assert_true(c != 0);
  assert_false(exists(s, a));
  assert_false(exists(s, z));
  assert_false(conn_exists(s, c));
  /* A single create meanwhile gets none of the batch's ids. */
  uint32_t other = mk(s, 99);
  assert_true(other != a && other != z);
  assert_int_equal(tg_batch_commit(b), 0);
  tg_token got;
  assert_int_equal(tg_token_get(s, a, &got), 0);
  assert_int_equal(got.timestamp, 11);
  assert_int_equal(tg_token_get(s, z, &got), 0);
  assert_int_equal(got.timestamp, 22);
  tg_connection gc;
  assert_int_equal(tg_connection_get(s, c, &gc), 0);
  assert_int_equal(gc.from, a);
  assert_int_equal(gc.to, z);
  assert_int_equal(gc.type, TG_CONN_TYPE(TG_CAT_CAUSAL, 3));
  tgt_edges out = tgt_edges_of(s, a, TG_OUT);
  assert_int_equal(out.n, 1);
  assert_int_equal(out.ids[0], c);
}

static void test_a_batch_connects_tokens_it_creates_with_final_ids(void **state) {
  (void)state;
  tg_store *s = tgt_open(NULL, NULL);
  batch_creates_and_connects(s);
  tg_store_stats st = tgt_stats(s);
  assert_int_equal(st.live_tokens, 3);
  assert_int_equal(st.live_connections, 1);
  assert_int_equal(st.tokens_created, 3);
  assert_int_equal(st.connections_created, 1);
  tg_store_close(s);
}

static void test_a_durable_batch_is_replayed_whole(void **state) {
  (void)state;
  tg_store *s = open_level(TG_BALANCED);
  batch_creates_and_connects(s);
  assert_int_equal(tg_store_close(s), 0);
  s = open_level(TG_BALANCED);
  tg_store_stats st = tgt_stats(s);
  assert_int_equal(st.live_tokens, 3);
  assert_int_equal(st.live_connections, 1);
  tg_recovery_info ri;
  tg_store_recovery_info(s, &ri);
  assert_int_equal(ri.replayed_records, 2); /* the single create, the batch */
  assert_int_equal(tg_store_close(s), 0);
}

static void test_commit_after_abort_is_refused_and_changes_nothing(void **state) {
  (void)state;
  tg_store *s = tgt_open(NULL, NULL);
  tg_batch *b;
  uint32_t a;
  assert_int_equal(tg_batch_begin(s, &b), 0);
  assert_int_equal(tg_batch_token_create(b, NULL, &a), 0);
  tg_batch_abort(b);
  assert_int_equal(tg_batch_commit(b), TG_EINVAL);
  assert_int_equal(tg_batch_token_create(b, NULL, &a), TG_EINVAL);
  tg_batch_abort(b); /* an ended batch: nothing */
  assert_false(exists(s, a));
  assert_int_equal(tgt_stats(s).live_tokens, 0);
  /* Its id was the last handed out and no record names it: it goes back,
     and the next create is handed it. */
  assert_int_equal(mk(s, 1), a);
  tg_store_close(s);
}

static void test_commit_twice_is_refused(void **state) {
  (void)state;
  tg_store *s = tgt_open(NULL, NULL);
  tg_batch *b;
  uint32_t a;
  assert_int_equal(tg_batch_begin(s, &b), 0);
  assert_int_equal(tg_batch_token_create(b, NULL, &a), 0);
  assert_int_equal(tg_batch_commit(b), 0);
  assert_int_equal(tg_batch_commit(b), TG_EINVAL);
  assert_int_equal(tgt_stats(s).live_tokens, 1);
  tg_store_close(s);
}

static void test_bad_arguments_add_nothing(void **state) {
  (void)state;
  tg_store *s = tgt_open(NULL, NULL);
  tg_batch *b;
  uint32_t id;
  assert_int_equal(tg_batch_begin(NULL, &b), TG_EINVAL);
  assert_int_equal(tg_batch_begin(s, NULL), TG_EINVAL);
  assert_int_equal(tg_batch_commit(NULL), TG_EINVAL);
  tg_batch_abort(NULL);
  assert_int_equal(tg_batch_begin(s, &b), 0);
  assert_int_equal(tg_batch_token_create(b, NULL, NULL), TG_EINVAL);
  assert_int_equal(tg_batch_token_update(b, NULL), TG_EINVAL);
  tg_token zero;
  memset(&zero, 0, sizeof zero);
  assert_int_equal(tg_batch_token_update(b, &zero), TG_EINVAL);
  assert_int_equal(tg_batch_token_delete(b, 0), TG_EINVAL);
  assert_int_equal(tg_batch_disconnect(b, 0), TG_EINVAL);
  tg_connection c;
  memset(&c, 0, sizeof c);
  c.from = 1;
  c.to = 0;
  assert_int_equal(tg_batch_connect(b, &c, &id), TG_EINVAL);
  c.to = 1;
  c.type = TG_CONN_TYPES;
  assert_int_equal(tg_batch_connect(b, &c, &id), TG_EINVAL);
  assert_int_equal(tg_batch_connect(b, NULL, &id), TG_EINVAL);
  /* Nothing was added: the commit is an empty batch's. */
  assert_int_equal(tg_batch_commit(b), 0);
  assert_int_equal(tgt_stats(s).live_tokens, 0);
  tg_store_close(s);
}

static void test_an_empty_batch_commits_and_logs_nothing(void **state) {
  (void)state;
  tg_store *s = open_level(TG_STRICT);
  mk(s, 1);
  uint64_t before = tgt_stats(s).last_lsn;
  tg_batch *b;
  assert_int_equal(tg_batch_begin(s, &b), 0);
  assert_int_equal(tg_batch_commit(b), 0);
  assert_int_equal(tgt_stats(s).last_lsn, before);
  assert_int_equal(tg_last_lsn(s), before);
  assert_int_equal(tg_store_close(s), 0);
}

/* Deleting a token in the batch and naming it later fails the whole batch
   at commit, with nothing applied: not the delete, not the creates. */
static void test_a_batch_using_an_id_it_deleted_fails_whole(void **state) {
  (void)state;
  tg_store *s = open_level(TG_RELAXED);
  uint32_t x = mk(s, 1), y = mk(s, 2);
  tg_batch *b;
  uint32_t n, c;
  assert_int_equal(tg_batch_begin(s, &b), 0);
  assert_int_equal(tg_batch_token_create(b, NULL, &n), 0);
  assert_int_equal(tg_batch_token_delete(b, x), 0);
  tg_connection e;
  memset(&e, 0, sizeof e);
  e.from = y;
  e.to = x; /* deleted above */
  assert_int_equal(tg_batch_connect(b, &e, &c), 0);
  uint64_t lsn = tgt_stats(s).last_lsn;
  assert_int_equal(tg_batch_commit(b), TG_ENOTFOUND);
  assert_true(exists(s, x));
  assert_true(exists(s, y));
  assert_false(exists(s, n));
  assert_false(conn_exists(s, c));
  assert_int_equal(tgt_stats(s).live_tokens, 2);
  assert_int_equal(tgt_stats(s).last_lsn, lsn); /* nothing logged */
  /* The failed batch gave back its id, the last token id handed out: the
     next create is handed it. */
  assert_int_equal(mk(s, 3), n);

  /* The same with an update after the delete, and a token that was never
     there. */
  assert_int_equal(tg_batch_begin(s, &b), 0);
  assert_int_equal(tg_batch_token_delete(b, y), 0);
  tg_token t = tok_ts(5);
  t.id = y;
  assert_int_equal(tg_batch_token_update(b, &t), 0);
  assert_int_equal(tg_batch_commit(b), TG_ENOTFOUND);
  assert_true(exists(s, y));
  assert_int_equal(tg_batch_begin(s, &b), 0);
  assert_int_equal(tg_batch_token_delete(b, 4000), 0);
  assert_int_equal(tg_batch_commit(b), TG_ENOTFOUND);
  assert_int_equal(tg_batch_begin(s, &b), 0);
  assert_int_equal(tg_batch_disconnect(b, 4000), 0);
  assert_int_equal(tg_batch_commit(b), TG_ENOTFOUND);
  assert_int_equal(tg_store_close(s), 0);
  /* And the log holds none of it. */
  s = open_level(TG_RELAXED);
  assert_int_equal(tgt_stats(s).live_tokens, 3);
  assert_int_equal(tg_store_close(s), 0);
}

static void test_a_token_deleted_in_a_batch_takes_its_connections(void **state) {
  (void)state;
  tg_store *s = open_level(TG_RELAXED);
  uint32_t x = mk(s, 1), y = mk(s, 2);
  tg_connection e;
  memset(&e, 0, sizeof e);
  e.from = x;
  e.to = y;
  uint32_t old = tgt_connect(s, &e);
  tg_batch *b;
  uint32_t n, c1, c2;
  assert_int_equal(tg_batch_begin(s, &b), 0);
  assert_int_equal(tg_batch_token_create(b, NULL, &n), 0);
  e.from = n;
  e.to = x;
  assert_int_equal(tg_batch_connect(b, &e, &c1), 0);
  e.from = y;
  e.to = n;
  assert_int_equal(tg_batch_connect(b, &e, &c2), 0);
  assert_int_equal(tg_batch_token_delete(b, x), 0); /* takes old and c1 */
  assert_int_equal(tg_batch_disconnect(b, c2), 0);
  assert_int_equal(tg_batch_commit(b), 0);
  assert_false(exists(s, x));
  assert_true(exists(s, n));
  assert_false(conn_exists(s, old));
  assert_false(conn_exists(s, c1));
  assert_false(conn_exists(s, c2));
  assert_int_equal(tgt_stats(s).live_connections, 0);
  /* A disconnect of a connection the delete took fails the batch. */
  uint32_t c3 = 0;
  assert_int_equal(tg_batch_begin(s, &b), 0);
  e.from = n;
  e.to = y;
  assert_int_equal(tg_batch_connect(b, &e, &c3), 0);
  assert_int_equal(tg_batch_token_delete(b, y), 0);
  assert_int_equal(tg_batch_disconnect(b, c3), 0);
  assert_int_equal(tg_batch_commit(b), TG_ENOTFOUND);
  assert_true(exists(s, y));
  assert_int_equal(tg_store_close(s), 0);
  s = open_level(TG_RELAXED);
  assert_int_equal(tgt_stats(s).live_tokens, 2);
  assert_int_equal(tgt_stats(s).live_connections, 0);
  assert_true(exists(s, n));
  assert_int_equal(tg_store_close(s), 0);
}

static void test_quota_exceeded_mid_batch_changes_nothing(void **state) {
  (void)state;
  tg_store_config cfg = cfg_at(TG_RELAXED);
  cfg.guardian.max_tokens = 5;
  tg_store *s = tgt_open(tgt_data, &cfg);
  uint32_t x = mk(s, 1);
  mk(s, 2);
  mk(s, 3);
  tg_batch *b;
  uint32_t ids[3];
  assert_int_equal(tg_batch_begin(s, &b), 0);
  tg_token t = tok_ts(7);
  t.id = x;
  assert_int_equal(tg_batch_token_update(b, &t), 0);
  for (int i = 0; i < 3; i++) assert_int_equal(tg_batch_token_create(b, NULL, &ids[i]), 0);
  uint64_t rej = tgt_stats(s).quota_rejections;
  assert_int_equal(tg_batch_commit(b), TG_EQUOTA);
  assert_int_equal(tgt_stats(s).quota_rejections, rej + 1);
  assert_int_equal(tgt_stats(s).live_tokens, 3);
  tg_token got;
  assert_int_equal(tg_token_get(s, x, &got), 0);
  assert_int_equal(got.timestamp, 1); /* the update was not applied */
  for (int i = 0; i < 3; i++) assert_false(exists(s, ids[i]));
  /* The whole batch counts, deletes included: 3 + 3 - 1 fits in 5. */
  assert_int_equal(tg_batch_begin(s, &b), 0);
  for (int i = 0; i < 3; i++) assert_int_equal(tg_batch_token_create(b, NULL, &ids[i]), 0);
  assert_int_equal(tg_batch_token_delete(b, x), 0);
  assert_int_equal(tg_batch_commit(b), 0);
  assert_int_equal(tgt_stats(s).live_tokens, 5);
  assert_int_equal(tg_store_close(s), 0);
}

static void test_degree_quota_counts_the_whole_batch(void **state) {
  (void)state;
  tg_store_config cfg = cfg_at(TG_RELAXED);
  cfg.guardian.max_degree = 2;
  tg_store *s = tgt_open(tgt_data, &cfg);
  uint32_t hub = mk(s, 1), a = mk(s, 2), z = mk(s, 3);
  tg_connection e;
  memset(&e, 0, sizeof e);
  e.from = hub;
  e.to = a;
  uint32_t c0 = tgt_connect(s, &e);
  tg_batch *b;
  uint32_t c1, c2;
  assert_int_equal(tg_batch_begin(s, &b), 0);
  e.to = z;
  assert_int_equal(tg_batch_connect(b, &e, &c1), 0);
  assert_int_equal(tg_batch_connect(b, &e, &c2), 0); /* hub: degree 3 */
  assert_int_equal(tg_batch_commit(b), TG_EQUOTA);
  assert_int_equal(tgt_stats(s).live_connections, 1);
  /* With a disconnect in the batch the end state fits. */
  assert_int_equal(tg_batch_begin(s, &b), 0);
  assert_int_equal(tg_batch_connect(b, &e, &c1), 0);
  assert_int_equal(tg_batch_connect(b, &e, &c2), 0);
  assert_int_equal(tg_batch_disconnect(b, c0), 0);
  assert_int_equal(tg_batch_commit(b), 0);
  assert_int_equal(tgt_stats(s).live_connections, 2);
  assert_int_equal(tg_store_close(s), 0);
}

static void test_a_batch_on_an_in_memory_store_is_all_or_nothing(void **state) {
  (void)state;
  tg_store *s = tgt_open(NULL, NULL);
  uint32_t x = mk(s, 1);
  tg_batch *b;
  uint32_t n;
  assert_int_equal(tg_batch_begin(s, &b), 0);
  assert_int_equal(tg_batch_token_create(b, NULL, &n), 0);
  assert_int_equal(tg_batch_token_delete(b, x), 0);
  assert_int_equal(tg_batch_token_delete(b, x), 0); /* gone already */
  assert_int_equal(tg_batch_commit(b), TG_ENOTFOUND);
  assert_true(exists(s, x));
  assert_false(exists(s, n));
  assert_int_equal(tg_last_lsn(s), 0);
  assert_int_equal(tg_durable_lsn(s), 0);
  assert_int_equal(tg_batch_begin(s, &b), 0);
  assert_int_equal(tg_batch_token_create(b, NULL, &n), 0);
  assert_int_equal(tg_batch_token_delete(b, x), 0);
  assert_int_equal(tg_batch_commit(b), 0);
  assert_false(exists(s, x));
  assert_true(exists(s, n));
  tg_store_close(s);
}

/* Updates in a batch, of a token it creates and of one that exists, and
   handles reused across many batches. */
static void test_updates_apply_in_order_and_handles_are_reused(void **state) {
  (void)state;
  tg_store *s = open_level(TG_RELAXED);
  uint32_t x = mk(s, 1);
  tg_batch *first = NULL;
  for (int round = 0; round < 50; round++) {
    tg_batch *b;
    uint32_t n;
    assert_int_equal(tg_batch_begin(s, &b), 0);
    if (!first) first = b;
    assert_true(b == first); /* an ended handle is handed out again */
    tg_token t = tok_ts(100 + (uint32_t)round);
    assert_int_equal(tg_batch_token_create(b, &t, &n), 0);
    t.id = n;
    t.timestamp = 200 + (uint32_t)round;
    assert_int_equal(tg_batch_token_update(b, &t), 0);
    t.id = x;
    t.timestamp = 300 + (uint32_t)round;
    assert_int_equal(tg_batch_token_update(b, &t), 0);
    assert_int_equal(tg_batch_commit(b), 0);
    tg_token got;
    assert_int_equal(tg_token_get(s, n, &got), 0);
    assert_int_equal(got.timestamp, 200 + (uint32_t)round);
  }
  assert_int_equal(tg_store_close(s), 0);
  s = open_level(TG_RELAXED);
  tg_token got;
  assert_int_equal(tg_token_get(s, x, &got), 0);
  assert_int_equal(got.timestamp, 349);
  assert_int_equal(tgt_stats(s).live_tokens, 51);
  assert_int_equal(tg_store_close(s), 0);
}

/* A batch still open at close is dropped, and a batch from another thread
   works beside single calls. */
static void test_close_drops_an_open_batch(void **state) {
  (void)state;
  tg_store *s = open_level(TG_RELAXED);
  tg_batch *b;
  uint32_t n;
  assert_int_equal(tg_batch_begin(s, &b), 0);
  assert_int_equal(tg_batch_token_create(b, NULL, &n), 0);
  assert_int_equal(tg_store_close(s), 0);
  s = open_level(TG_RELAXED);
  assert_int_equal(tgt_stats(s).live_tokens, 0);
  assert_int_equal(tg_store_close(s), 0);
}

/* ---- one record, one fdatasync ------------------------------------------ */

static atomic_ulong syncs;
static int (*real_fdatasync)(int);
static int counting_fdatasync(int fd) {
  atomic_fetch_add_explicit(&syncs, 1, memory_order_relaxed);
  return real_fdatasync(fd);
}

static void test_a_strict_batch_is_one_record_and_one_fdatasync(void **state) {
  (void)state;
  tg_store *s = open_level(TG_STRICT);
  mk(s, 1);
  real_fdatasync = tg__io.fdatasync;
  tg__io.fdatasync = counting_fdatasync;
  uint64_t lsn = tgt_stats(s).last_lsn;
  atomic_store(&syncs, 0);
  tg_batch *b;
  assert_int_equal(tg_batch_begin(s, &b), 0);
  uint32_t prev = 0;
  for (int i = 0; i < 100; i++) {
    uint32_t id;
    assert_int_equal(tg_batch_token_create(b, NULL, &id), 0);
    if (prev) {
      tg_connection e;
      memset(&e, 0, sizeof e);
      e.from = prev;
      e.to = id;
      assert_int_equal(tg_batch_connect(b, &e, &id), 0);
    }
    prev = id;
  }
  assert_int_equal(tg_batch_commit(b), 0);
  assert_int_equal(atomic_load(&syncs), 1);
  assert_int_equal(tgt_stats(s).last_lsn, lsn + 1);
  assert_int_equal(tg_last_lsn(s), lsn + 1);
  assert_true(tg_durable_lsn(s) >= lsn + 1);
  tg__io.fdatasync = real_fdatasync;
  assert_int_equal(tg_store_close(s), 0);
}

/* A batch larger than a segment's free space, and one whose payload is
   larger than the ring's inline slot, go whole to the next segment. */
static void test_large_batches_cross_segments_whole(void **state) {
  (void)state;
  tg_store_config cfg = tgt_small_log_config();
  tg_store *s = tgt_open(tgt_data, &cfg);
  uint32_t total = 0;
  for (int round = 0; round < 6; round++) {
    tg_batch *b;
    assert_int_equal(tg_batch_begin(s, &b), 0);
    for (int i = 0; i < 400; i++) {
      uint32_t id;
      assert_int_equal(tg_batch_token_create(b, NULL, &id), 0);
    }
    assert_int_equal(tg_batch_commit(b), 0);
    total += 400;
  }
  assert_int_equal(tg_store_close(s), 0);
  s = tgt_open(tgt_data, &cfg);
  assert_int_equal(tgt_stats(s).live_tokens, total);
  assert_int_equal(tg_store_close(s), 0);
}

/* A batch committed first (at RELAXED: queued, perhaps not yet written),
   then abort(): the next open takes the batch from the ring file whole. A
   batch of 300 entries is about 20 KB, so it lies in the ring's spill
   region, not in a slot. */
static void test_a_batch_in_the_ring_survives_abort_whole(void **state) {
  (void)state;
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    signal(SIGABRT, SIG_DFL);
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    tg_store_config cfg = cfg_at(TG_RELAXED);
    cfg.wal.linger_us = 1000000; /* an idle writer waits: the batch stays queued */
    tg_store *s = NULL;
    if (tg_store_open(&s, tgt_data, &cfg)) _exit(2);
    tg_batch *b;
    if (tg_batch_begin(s, &b)) _exit(3);
    uint32_t prev = 0;
    for (uint32_t i = 0; i < 150; i++) {
      tg_token t = tok_ts(i);
      uint32_t id, c;
      if (tg_batch_token_create(b, &t, &id)) _exit(4);
      tg_connection e;
      memset(&e, 0, sizeof e);
      e.from = prev ? prev : id;
      e.to = id;
      if (tg_batch_connect(b, &e, &c)) _exit(5);
      prev = id;
    }
    if (tg_batch_commit(b)) _exit(6);
    abort();
  }
  int st = tgt_wait_child(pid);
  if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGABRT) fail_msg("child status %d", st);
  tg_store *s = open_level(TG_RELAXED);
  tg_store_stats ss = tgt_stats(s);
  assert_int_equal(ss.live_tokens, 150);
  assert_int_equal(ss.live_connections, 150);
  assert_int_equal(ss.last_lsn, 1);
  for (uint32_t id = 1; id <= 150; id++) {
    tg_token got;
    assert_int_equal(tg_token_get(s, id, &got), 0);
    assert_int_equal(got.timestamp, id - 1);
  }
  assert_int_equal(tg_store_close(s), 0);
}

/* A create made after a batch took its ids, and logged before the batch,
   has a higher id than the batch's creates: replay accepts ids that come
   out of order this way. */
static void test_ids_a_batch_held_replay_after_later_ones(void **state) {
  (void)state;
  tg_store *s = open_level(TG_RELAXED);
  tg_batch *b;
  uint32_t first = 0, id;
  assert_int_equal(tg_batch_begin(s, &b), 0);
  for (int i = 0; i < 1000; i++) {
    assert_int_equal(tg_batch_token_create(b, NULL, &id), 0);
    if (!first) first = id;
  }
  uint32_t later = mk(s, 5);
  assert_true(later > id);
  assert_int_equal(tg_batch_commit(b), 0);
  assert_int_equal(tg_store_close(s), 0);
  s = open_level(TG_RELAXED);
  assert_int_equal(tgt_stats(s).live_tokens, 1001);
  assert_true(exists(s, first) && exists(s, id) && exists(s, later));
  assert_int_equal(tg_store_close(s), 0);
}

/* The size limits: TG_BATCH_MAX_ENTRIES entries in one batch, and
   TG_BATCH_MAX_RESERVED ids held by the store's open batches. */
static void test_batch_limits_give_equota_and_add_nothing(void **state) {
  (void)state;
  tg_store_config cfg = cfg_at(TG_RELAXED);
  cfg.guardian.max_tokens = 2u * TG_BATCH_MAX_RESERVED;
  cfg.guardian.max_memory_bytes = 1ull << 30;
  tg_store *s = tgt_open(NULL, &cfg);
  enum { NB = (TG_BATCH_MAX_RESERVED + TG_BATCH_MAX_ENTRIES - 1) / TG_BATCH_MAX_ENTRIES };
  tg_batch *b[NB];
  uint32_t id, held = 0;
  for (int k = 0; k < NB; k++) {
    assert_int_equal(tg_batch_begin(s, &b[k]), 0);
    while (held < TG_BATCH_MAX_RESERVED && (k + 1 == NB || held % TG_BATCH_MAX_ENTRIES ||
                                            held == (uint32_t)k * TG_BATCH_MAX_ENTRIES)) {
      assert_int_equal(tg_batch_token_create(b[k], NULL, &id), 0);
      held++;
      if (held % TG_BATCH_MAX_ENTRIES == 0) break;
    }
  }
  assert_int_equal(held, TG_BATCH_MAX_RESERVED);
  /* The store holds as many ids as it lets batches hold. */
  assert_int_equal(tg_batch_token_create(b[NB - 1], NULL, &id), TG_EQUOTA);
  tg_connection e;
  memset(&e, 0, sizeof e);
  e.from = e.to = 1;
  assert_int_equal(tg_batch_connect(b[NB - 1], &e, &id), TG_EQUOTA);
  /* A full batch takes no more entries, of any kind. */
  assert_int_equal(tg_batch_token_delete(b[0], 1), TG_EQUOTA);
  for (int k = 1; k < NB; k++) tg_batch_abort(b[k]);
  assert_int_equal(tg_batch_token_create(b[0], NULL, &id), TG_EQUOTA);
  assert_int_equal(tg_batch_commit(b[0]), 0);
  assert_int_equal(tgt_stats(s).live_tokens, TG_BATCH_MAX_ENTRIES);
  tg_store_close(s);
}

/* With eviction on, a batch that needs memory evicts other tokens, never
   one the batch names. */
static void test_eviction_spares_the_tokens_a_batch_names(void **state) {
  (void)state;
  tg_store_config cfg = cfg_at(TG_RELAXED);
  cfg.guardian.cleanup = 1;
  cfg.guardian.max_memory_bytes = 64 * 1000;
  cfg.guardian.memory_threshold = 0.5;
  cfg.guardian.cleanup_margin = 0.1;
  tg_store *s = tgt_open(NULL, &cfg);
  /* 400 light tokens (weight 0), the lightest of all is `named`; the
     batch's 200 creates pass the soft limit (500 slots) and eviction
     brings usage down towards 400 slots less what the batch needs. */
  uint32_t named = 0;
  for (uint32_t i = 0; i < 400; i++) {
    tg_token t = tok_ts(i);
    t.weight = i == 7 ? -1.0f : 0.0f;
    uint32_t id;
    assert_int_equal(tg_token_create(s, &t, &id), 0);
    if (i == 7) named = id;
  }
  uint64_t ev = tgt_stats(s).evictions;
  tg_batch *b;
  assert_int_equal(tg_batch_begin(s, &b), 0);
  for (int i = 0; i < 200; i++) {
    uint32_t id;
    assert_int_equal(tg_batch_token_create(b, NULL, &id), 0);
  }
  tg_token t = tok_ts(4242);
  t.id = named;
  t.weight = -1.0f;
  assert_int_equal(tg_batch_token_update(b, &t), 0);
  assert_int_equal(tg_batch_commit(b), 0);
  assert_true(tgt_stats(s).evictions > ev);
  tg_token got;
  assert_int_equal(tg_token_get(s, named, &got), 0);
  assert_int_equal(got.timestamp, 4242);
  /* Its slot is its own, not also free for a later create (what applying
     an update to an evicted token would leave). */
  const tg__arena *a = &s->g.tokens;
  for (uint32_t f = a->free_head; f;
       f = tg__slot_u32(tg__arena_slot(a, f - 1u), TG__FREE_NEXT_OFF))
    assert_true(f != named);
  tg_store_close(s);
}

/* Threads committing batches beside threads making single calls on one
   store: every batch whole, and the log replays to the same state. */
typedef struct mix_arg {
  tg_store *s;
  int batches; /* 1: this thread commits batches */
  int rc;
} mix_arg;

static void *mix_thread(void *p) {
  mix_arg *a = p;
  for (int round = 0; round < 200 && !a->rc; round++) {
    if (a->batches) {
      tg_batch *b;
      uint32_t x, y, c;
      if ((a->rc = tg_batch_begin(a->s, &b))) break;
      tg_batch_token_create(b, NULL, &x);
      tg_batch_token_create(b, NULL, &y);
      tg_connection e;
      memset(&e, 0, sizeof e);
      e.from = x;
      e.to = y;
      tg_batch_connect(b, &e, &c);
      if (round % 3 == 0) tg_batch_token_delete(b, y); /* and c with it */
      a->rc = tg_batch_commit(b);
    } else {
      uint32_t x;
      tg_token t = tok_ts((uint32_t)round);
      a->rc = tg_token_create(a->s, &t, &x);
      if (!a->rc && round % 2) a->rc = tg_token_delete(a->s, x);
    }
  }
  return NULL;
}

static void test_batches_and_single_calls_from_threads_replay_whole(void **state) {
  (void)state;
  tg_store *s = open_level(TG_BALANCED);
  mix_arg args[4] = {{s, 1, 0}, {s, 0, 0}, {s, 1, 0}, {s, 0, 0}};
  tgt_run_threads(4, mix_thread, args, sizeof args[0]);
  for (int i = 0; i < 4; i++) assert_int_equal(args[i].rc, 0);
  tg_store_stats before = tgt_stats(s);
  /* Per batch thread: 200 batches, 67 of them keep 1 token and no
     connection, 133 keep 2 and 1; per single thread: 100 tokens. */
  assert_int_equal(before.live_tokens, 2 * (67 + 133 * 2) + 2 * 100);
  assert_int_equal(before.live_connections, 2 * 133);
  assert_int_equal(tg_store_close(s), 0);
  s = open_level(TG_BALANCED);
  tg_store_stats after = tgt_stats(s);
  assert_int_equal(after.live_tokens, before.live_tokens);
  assert_int_equal(after.live_connections, before.live_connections);
  assert_int_equal(after.last_lsn, before.last_lsn);
  assert_int_equal(tg_store_close(s), 0);
}

/* ---- a batch torn at every byte ---------------------------------------- */

/* The store: 3 tokens made durable, then a batch of 5 entries; closed
   cleanly. The batch's frame is found with the reader. Then, for every
   cut o inside that frame, the bytes from o on are zeroed (a write that
   stopped at o) and the store opened: it must hold the 3 tokens and
   nothing of the batch, having cut a torn tail. */
static void test_a_batch_torn_at_any_byte_is_a_torn_tail(void **state) {
  (void)state;
  tg_store_config cfg = tgt_small_log_config(); /* a fast open */
  tg_store *s = tgt_open(tgt_data, &cfg);
  uint32_t x = mk(s, 1), y = mk(s, 2);
  mk(s, 3);
  assert_int_equal(tg_sync(s), 0);
  tg_batch *b;
  uint32_t n1, n2, c;
  assert_int_equal(tg_batch_begin(s, &b), 0);
  assert_int_equal(tg_batch_token_create(b, NULL, &n1), 0);
  assert_int_equal(tg_batch_token_create(b, NULL, &n2), 0);
  tg_connection e;
  memset(&e, 0, sizeof e);
  e.from = n1;
  e.to = x;
  assert_int_equal(tg_batch_connect(b, &e, &c), 0);
  assert_int_equal(tg_batch_token_delete(b, y), 0);
  tg_token t = tok_ts(77);
  t.id = x;
  assert_int_equal(tg_batch_token_update(b, &t), 0);
  assert_int_equal(tg_batch_commit(b), 0);
  assert_int_equal(tg_store_close(s), 0);

  tg_wal_reader *r;
  tg_wal_record rec;
  uint64_t seg = 0, off = 0, flen = 0;
  assert_int_equal(tg_wal_reader_open(&r, tgt_wal, 0), 0);
  while (tg_wal_reader_next(r, &rec) == 1) {
    if (rec.type != TG_REC_BATCH) continue;
    seg = rec.segment;
    off = rec.offset;
    flen = 16 + rec.len;
    tg_record d;
    assert_int_equal(tg_record_decode(&rec, &d), 0);
    assert_int_equal(d.id, 5);
  }
  tg_wal_reader_close(r);
  assert_true(flen > 300);
  char path[512];
  tgt_seg_path(path, sizeof path, seg, "");
  size_t size;
  char *pristine = tgt_read_file(path, &size);
  assert_true(off + flen <= size);
  for (uint64_t o = off; o < off + flen; o++) {
    char *img = malloc(size);
    memcpy(img, pristine, size);
    memset(img + o, 0, size - o);
    /* A torn write may leave any bytes, not only zeros: garbage in the
       rest of the frame on odd cuts. */
    if (o & 1)
      for (uint64_t k = o; k < off + flen; k++) img[k] = (char)(k * 131u + 7u);
    int intact = memcmp(img + off, pristine + off, flen) == 0;
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(img, 1, size, f), size);
    fclose(f);
    free(img);
    s = tgt_open(tgt_data, &cfg);
    tg_recovery_info ri;
    tg_store_recovery_info(s, &ri);
    /* A cut at the frame's first byte leaves zeros: a clean end. */
    if (!intact && !ri.torn_tail && o > off) fail_msg("cut at %llu of the frame: no torn tail",
                                (unsigned long long)(o - off));
    tg_store_stats st = tgt_stats(s);
    if (intact) { /* the cut only zeroed bytes that were zero: all of it */
      if (ri.torn_tail || st.live_tokens != 4 || st.live_connections != 1 ||
          !exists(s, n1) || exists(s, y))
        fail_msg("cut at %llu of an intact frame: %llu tokens",
                 (unsigned long long)(o - off), (unsigned long long)st.live_tokens);
      assert_int_equal(tg_store_close(s), 0);
      continue;
    }
    if (st.live_tokens != 3 || st.live_connections != 0 || exists(s, n1) ||
        !exists(s, y))
      fail_msg("cut at %llu of the frame: %llu tokens, %llu connections",
               (unsigned long long)(o - off), (unsigned long long)st.live_tokens,
               (unsigned long long)st.live_connections);
    tg_token got;
    assert_int_equal(tg_token_get(s, x, &got), 0);
    assert_int_equal(got.timestamp, 1);
    assert_int_equal(tg_store_close(s), 0);
  }
  free(pristine);
}

/* ---- records ------------------------------------------------------------ */

static void test_malformed_batch_records_are_refused(void **state) {
  (void)state;
  unsigned char p[8 + 4 + 64 + 4 + 4];
  uint32_t v;
  memset(p, 0, sizeof p);
  v = 2;
  memcpy(p, &v, 4);
  v = TG_REC_TOKEN_PUT;
  memcpy(p + 8, &v, 4);
  v = 9; /* the token's id */
  memcpy(p + 12 + offsetof(tg_token, id), &v, 4);
  v = TG_REC_CONN_DEL;
  memcpy(p + 76, &v, 4);
  v = 3;
  memcpy(p + 80, &v, 4);
  tg_wal_record w = {1, TG_REC_BATCH, sizeof p, p, 0, 0};
  tg_record rec;
  assert_int_equal(tg_record_decode(&w, &rec), 0);
  assert_int_equal(rec.type, TG_REC_BATCH);
  assert_int_equal(rec.id, 2);
  size_t pos = 0;
  assert_int_equal(tg_record_batch_next(&w, &pos, &rec), 1);
  assert_int_equal(rec.type, TG_REC_TOKEN_PUT);
  assert_int_equal(rec.id, 9);
  assert_int_equal(tg_record_batch_next(&w, &pos, &rec), 1);
  assert_int_equal(rec.type, TG_REC_CONN_DEL);
  assert_int_equal(rec.id, 3);
  assert_int_equal(tg_record_batch_next(&w, &pos, &rec), 0);
  /* A count that does not match, a cut entry, a nested batch, a zero id. */
  v = 3;
  memcpy(p, &v, 4);
  assert_int_equal(tg_record_decode(&w, &rec), TG_ECORRUPT);
  v = 2;
  memcpy(p, &v, 4);
  w.len = sizeof p - 1;
  assert_int_equal(tg_record_decode(&w, &rec), TG_ECORRUPT);
  w.len = sizeof p;
  v = TG_REC_BATCH;
  memcpy(p + 76, &v, 4);
  assert_int_equal(tg_record_decode(&w, &rec), TG_ECORRUPT);
  v = TG_REC_CONN_DEL;
  memcpy(p + 76, &v, 4);
  v = 0; /* a token put with id 0 */
  memcpy(p + 12 + offsetof(tg_token, id), &v, 4);
  assert_int_equal(tg_record_decode(&w, &rec), TG_ECORRUPT);
  tg_wal_record notbatch = {1, TG_REC_CONN_DEL, 4, p + 80, 0, 0};
  pos = 0;
  assert_int_equal(tg_record_batch_next(&notbatch, &pos, &rec), TG_EINVAL);
}

/* tg-replay dump shows a batch as one record with its entries in order,
   and verify replays it. */
static void test_replay_tool_dumps_a_batch_with_its_entries(void **state) {
  (void)state;
  tg_store *s = open_level(TG_RELAXED);
  uint32_t x = mk(s, 1);
  tg_batch *b;
  uint32_t n, c;
  assert_int_equal(tg_batch_begin(s, &b), 0);
  assert_int_equal(tg_batch_token_create(b, NULL, &n), 0);
  tg_connection e;
  memset(&e, 0, sizeof e);
  e.from = x;
  e.to = n;
  assert_int_equal(tg_batch_connect(b, &e, &c), 0);
  assert_int_equal(tg_batch_token_delete(b, x), 0);
  assert_int_equal(tg_batch_commit(b), 0);
  e.from = e.to = n;
  uint32_t c2 = tgt_connect(s, &e);
  tg_connection u;
  assert_int_equal(tg_connection_get(s, c2, &u), 0);
  u.weight = 3.0f;
  assert_int_equal(tg_connection_update(s, &u), 0);
  assert_int_equal(tg_store_close(s), 0);
  const char *text[] = {"dump", tgt_data, NULL};
  tgt_run_out r = tgt_run(TG_REPLAY_BIN, text, NULL, tgt_root);
  assert_int_equal(r.status, 0);
  char want[256];
  snprintf(want, sizeof want, "LSN 2 BATCH entries=3\n  [0] TOKEN_PUT id=%u ", n);
  if (!strstr(r.out, want)) fail_msg("no '%s' in:\n%s", want, r.out);
  snprintf(want, sizeof want, "\n  [1] CONN_PUT id=%u from=%u to=%u ", c, x, n);
  assert_non_null(strstr(r.out, want));
  snprintf(want, sizeof want, "\n  [2] TOKEN_DEL id=%u\n", x);
  assert_non_null(strstr(r.out, want));
  assert_non_null(strstr(r.out, "LSN 4 CONN_UPDATE id="));
  assert_non_null(strstr(r.out, " weight=3 "));
  tgt_run_free(&r);
  const char *json[] = {"dump", "--json", tgt_data, NULL};
  r = tgt_run(TG_REPLAY_BIN, json, NULL, tgt_root);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "{\"lsn\":2,\"type\":\"BATCH\","));
  assert_non_null(strstr(r.out, "\"entries\":[{\"type\":\"TOKEN_PUT\",\"token\":{"));
  snprintf(want, sizeof want, "},{\"type\":\"TOKEN_DEL\",\"id\":%u}]}\n", x);
  assert_non_null(strstr(r.out, want));
  tgt_run_free(&r);
  const char *verify[] = {"verify", tgt_data, NULL};
  r = tgt_run(TG_REPLAY_BIN, verify, NULL, tgt_root);
  assert_int_equal(r.status, 0);
  tgt_run_free(&r);
}

/* ---- tg_connection_update ----------------------------------------------- */

static void test_connection_update_changes_the_six_fields_and_is_replayed(void **state) {
  (void)state;
  tg_store *s = open_level(TG_BALANCED);
  uint32_t x = mk(s, 1), y = mk(s, 2);
  tg_connection e;
  memset(&e, 0, sizeof e);
  e.from = x;
  e.to = y;
  e.type = TG_CONN_TYPE(TG_CAT_LOGICAL, 2);
  e.rigidity = 9;
  e.created = 1234;
  uint32_t c1 = tgt_connect(s, &e), c2 = tgt_connect(s, &e);
  tg_connection u;
  assert_int_equal(tg_connection_get(s, c1, &u), 0);
  u.weight = 2.5f;
  u.pull_strength = 0.25f;
  u.activation_count = 17;
  u.last_activated = 777;
  u.confidence = 0.75f;
  u.flags = 0x0102;
  u.type = 0;       /* not updatable: ignored */
  u.rigidity = 1;   /* likewise */
  u.next_out = 999; /* the links are the store's */
  assert_int_equal(tg_connection_update(s, &u), 0);
  uint64_t lsn = tg_last_lsn(s);
  assert_int_equal(lsn, tgt_stats(s).last_lsn);
  assert_int_equal(tg_store_close(s), 0);
  s = open_level(TG_BALANCED);
  tg_connection got;
  assert_int_equal(tg_connection_get(s, c1, &got), 0);
  assert_true(got.weight == 2.5f && got.pull_strength == 0.25f && got.confidence == 0.75f);
  assert_int_equal(got.activation_count, 17);
  assert_int_equal(got.last_activated, 777);
  assert_int_equal(got.flags, 0x0102);
  assert_int_equal(got.type, TG_CONN_TYPE(TG_CAT_LOGICAL, 2));
  assert_int_equal(got.rigidity, 9);
  assert_int_equal(got.created, 1234);
  /* Its place in both lists is kept: newest first, c2 then c1. */
  tgt_edges out = tgt_edges_of(s, x, TG_OUT);
  assert_int_equal(out.n, 2);
  assert_int_equal(out.ids[0], c2);
  assert_int_equal(out.ids[1], c1);
  assert_int_equal(tg_store_close(s), 0);
}

static void test_connection_update_refuses_other_endpoints_and_missing_ids(void **state) {
  (void)state;
  tg_store *s = open_level(TG_RELAXED);
  uint32_t x = mk(s, 1), y = mk(s, 2), z = mk(s, 3);
  tg_connection e;
  memset(&e, 0, sizeof e);
  e.from = x;
  e.to = y;
  uint32_t c = tgt_connect(s, &e);
  uint64_t lsn = tgt_stats(s).last_lsn;
  tg_connection u;
  assert_int_equal(tg_connection_get(s, c, &u), 0);
  u.weight = 9.0f;
  u.to = z;
  assert_int_equal(tg_connection_update(s, &u), TG_EINVAL);
  u.to = y;
  u.from = z;
  assert_int_equal(tg_connection_update(s, &u), TG_EINVAL);
  u.from = x;
  u.id = 4000;
  assert_int_equal(tg_connection_update(s, &u), TG_ENOTFOUND);
  assert_int_equal(tg_connection_update(s, NULL), TG_EINVAL);
  tg_connection got;
  assert_int_equal(tg_connection_get(s, c, &got), 0);
  assert_true(got.weight == 0.0f);
  assert_int_equal(tgt_stats(s).last_lsn, lsn); /* nothing logged */
  assert_int_equal(tg_store_close(s), 0);
  /* In memory too. */
  s = tgt_open(NULL, NULL);
  x = mk(s, 1);
  e.from = e.to = x;
  c = tgt_connect(s, &e);
  assert_int_equal(tg_connection_get(s, c, &u), 0);
  u.confidence = 0.5f;
  assert_int_equal(tg_connection_update(s, &u), 0);
  assert_int_equal(tg_connection_get(s, c, &got), 0);
  assert_true(got.confidence == 0.5f);
  tg_store_close(s);
}

/* ---- the durable position ---------------------------------------------- */

typedef struct lsn_arg {
  tg_store *s;
  uint64_t mine;  /* tg_last_lsn() after this thread's create */
  uint64_t after; /* and after the other thread's */
  atomic_int *step;
  int who;
} lsn_arg;

static void *lsn_thread(void *p) {
  lsn_arg *a = p;
  /* Thread 0 creates, then thread 1; each then reads its own last LSN. */
  uint64_t deadline = tgp_now_ns() + TGT_PATIENCE_NS;
  while (atomic_load(a->step) != a->who && tgp_now_ns() < deadline) tgt_pause();
  tg_token t = tok_ts((uint32_t)a->who);
  uint32_t id;
  if (tg_token_create(a->s, &t, &id) == 0) a->mine = tg_last_lsn(a->s);
  atomic_fetch_add(a->step, 1);
  while (atomic_load(a->step) < 2 && tgp_now_ns() < deadline) tgt_pause();
  a->after = tg_last_lsn(a->s);
  return NULL;
}

static void test_last_lsn_is_the_calling_threads_own(void **state) {
  (void)state;
  tg_store *s = open_level(TG_RELAXED);
  assert_int_equal(tg_last_lsn(s), 0);
  atomic_int step = 0;
  lsn_arg args[2] = {{s, 0, 0, &step, 0}, {s, 0, 0, &step, 1}};
  tgt_run_threads(2, lsn_thread, args, sizeof args[0]);
  assert_int_equal(args[0].mine, 1);
  assert_int_equal(args[1].mine, 2);
  assert_int_equal(args[0].after, 1); /* not the other thread's 2 */
  assert_int_equal(args[1].after, 2);
  assert_int_equal(tg_last_lsn(s), 0); /* this thread made none */
  /* A failed call leaves it. */
  mk(s, 5);
  uint64_t l = tg_last_lsn(s);
  assert_int_equal(tg_token_delete(s, 4000), TG_ENOTFOUND);
  assert_int_equal(tg_last_lsn(s), l);
  /* Per store: another store's mutation does not move this one's. */
  tg_store *m = tgt_open(NULL, NULL);
  mk(m, 1);
  assert_int_equal(tg_last_lsn(s), l);
  tg_store_close(m);
  assert_int_equal(tg_store_close(s), 0);
  /* A new open starts at 0 for this thread. */
  s = open_level(TG_RELAXED);
  assert_int_equal(tg_last_lsn(s), 0);
  assert_int_equal(tg_store_close(s), 0);
}

static void test_wait_durable_makes_a_relaxed_write_durable(void **state) {
  (void)state;
  tg_store *s = open_level(TG_RELAXED);
  for (uint32_t i = 0; i < 10; i++) mk(s, i);
  uint64_t lsn = tg_last_lsn(s);
  assert_int_equal(lsn, 10);
  assert_int_equal(tg_wait_durable(s, lsn), 0);
  assert_true(tg_durable_lsn(s) >= lsn);
  assert_int_equal(tg_wait_durable(s, 0), 0);
  assert_int_equal(tg_wait_durable(s, lsn + 1000), TG_EINVAL);
  assert_int_equal(tg_store_close(s), 0);
  /* After an open, what was recovered is durable. */
  s = open_level(TG_RELAXED);
  assert_true(tg_durable_lsn(s) >= 10);
  assert_int_equal(tg_store_close(s), 0);
  tg_store *m = tgt_open(NULL, NULL);
  assert_int_equal(tg_wait_durable(m, 0), 0);
  assert_int_equal(tg_wait_durable(m, 1), TG_EINVAL);
  assert_int_equal(tg_durable_lsn(m), 0);
  tg_store_close(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      TGT_TEST(test_a_batch_connects_tokens_it_creates_with_final_ids),
      TGT_TEST(test_a_durable_batch_is_replayed_whole),
      TGT_TEST(test_commit_after_abort_is_refused_and_changes_nothing),
      TGT_TEST(test_commit_twice_is_refused),
      TGT_TEST(test_bad_arguments_add_nothing),
      TGT_TEST(test_an_empty_batch_commits_and_logs_nothing),
      TGT_TEST(test_a_batch_using_an_id_it_deleted_fails_whole),
      TGT_TEST(test_a_token_deleted_in_a_batch_takes_its_connections),
      TGT_TEST(test_quota_exceeded_mid_batch_changes_nothing),
      TGT_TEST(test_degree_quota_counts_the_whole_batch),
      TGT_TEST(test_a_batch_on_an_in_memory_store_is_all_or_nothing),
      TGT_TEST(test_updates_apply_in_order_and_handles_are_reused),
      TGT_TEST(test_close_drops_an_open_batch),
      TGT_TEST(test_a_strict_batch_is_one_record_and_one_fdatasync),
      TGT_TEST(test_large_batches_cross_segments_whole),
      TGT_TEST(test_a_batch_in_the_ring_survives_abort_whole),
      TGT_TEST(test_ids_a_batch_held_replay_after_later_ones),
      TGT_TEST(test_batch_limits_give_equota_and_add_nothing),
      TGT_TEST(test_eviction_spares_the_tokens_a_batch_names),
      TGT_TEST(test_batches_and_single_calls_from_threads_replay_whole),
      TGT_TEST(test_a_batch_torn_at_any_byte_is_a_torn_tail),
      TGT_TEST(test_malformed_batch_records_are_refused),
      TGT_TEST(test_replay_tool_dumps_a_batch_with_its_entries),
      TGT_TEST(test_connection_update_changes_the_six_fields_and_is_replayed),
      TGT_TEST(test_connection_update_refuses_other_endpoints_and_missing_ids),
      TGT_TEST(test_last_lsn_is_the_calling_threads_own),
      TGT_TEST(test_wait_durable_makes_a_relaxed_write_durable),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
