/* The guardian: every quota at its exact boundary, eviction, configs. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
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

#include "guardian/guardian.h"
#include "tokengraph/tokengraph.h"
#include "util.h"

static tg_store *open_with(const tg_store_config *cfg) {
  tg_store *s = NULL;
  assert_int_equal(tg_store_open(&s, NULL, cfg), 0);
  return s;
}

static uint32_t mk(tg_store *s, float weight, uint16_t flags) {
  tg_token t = {.weight = weight, .flags = flags};
  uint32_t id = 0;
  assert_int_equal(tg_token_create(s, &t, &id), 0);
  return id;
}

/* An in-memory store whose memory quota is a hard limit of bytes: no soft
   threshold below it and no eviction, so a create that does not fit is
   rejected. */
static tg_store *open_hard_memory_quota(uint64_t bytes) {
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.guardian.max_memory_bytes = bytes;
  cfg.guardian.memory_threshold = 1.0;
  cfg.guardian.cleanup = 0;
  return open_with(&cfg);
}

static int try_link(tg_store *s, uint32_t from, uint32_t to, uint32_t *id) {
  tg_connection c = {.from = from, .to = to};
  return tg_connect(s, &c, id);
}

static void test_quota_max_tokens_allows_n_rejects_n_plus_one(void **state) {
  (void)state;
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.guardian.max_tokens = 1000;
  tg_store *s = open_with(&cfg);
  for (int i = 0; i < 1000; i++) mk(s, 1, 0);
  tg_store_stats before = tgt_stats(s);
  uint32_t id = 55;
  assert_int_equal(tg_quota_exceeded(s), TG_QUOTA_NONE);
  assert_int_equal(tg_token_create(s, NULL, &id), TG_EQUOTA);
  assert_int_equal(id, 0);
  assert_int_equal(tg_quota_exceeded(s), TG_QUOTA_TOKENS);
  assert_string_equal(tg_quota_name(tg_quota_exceeded(s)), "tokens");
  tg_store_stats after = tgt_stats(s);
  assert_int_equal(after.live_tokens, 1000);
  assert_int_equal(after.memory_bytes, before.memory_bytes);
  assert_int_equal(after.tokens_created, 1000);
  assert_int_equal(after.quota_rejections, 1);
  assert_int_equal(after.quota_checks, 1001);
  tg_token t;
  assert_int_equal(tg_token_get(s, 1001, &t), TG_ENOTFOUND);
  /* Room again after a delete (under a new id: ids are not reused). */
  assert_int_equal(tg_token_delete(s, 10), 0);
  assert_int_equal(tg_token_create(s, NULL, &id), 0);
  assert_int_equal(id, 1001);
  tg_store_close(s);
}

static void test_quota_max_connections_allows_n_rejects_n_plus_one(void **state) {
  (void)state;
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.guardian.max_connections = 5;
  tg_store *s = open_with(&cfg);
  uint32_t a = mk(s, 1, 0), b = mk(s, 1, 0), id;
  for (int i = 0; i < 5; i++) assert_int_equal(try_link(s, a, b, &id), 0);
  assert_int_equal(try_link(s, b, a, &id), TG_EQUOTA);
  assert_int_equal(id, 0);
  assert_int_equal(tg_quota_exceeded(s), TG_QUOTA_CONNECTIONS);
  tg_store_stats st = tgt_stats(s);
  assert_int_equal(st.live_connections, 5);
  assert_int_equal(st.quota_rejections, 1);
  tg_store_close(s);
}

static void test_quota_max_memory_allows_n_rejects_n_plus_one(void **state) {
  (void)state;
  tg_store *s = open_hard_memory_quota(64 * 300); /* exactly 300 tokens */
  for (int i = 0; i < 300; i++) mk(s, 1, 0);
  tg_store_stats before = tgt_stats(s);
  assert_int_equal(before.memory_bytes, 64 * 300);
  uint32_t id;
  assert_int_equal(tg_token_create(s, NULL, &id), TG_EQUOTA);
  assert_int_equal(tg_quota_exceeded(s), TG_QUOTA_MEMORY);
  tg_store_stats after = tgt_stats(s);
  assert_int_equal(after.live_tokens, 300);
  assert_int_equal(after.memory_bytes, before.memory_bytes);
  assert_int_equal(after.evictions, 0);
  assert_int_equal(after.quota_rejections, 1);
  tg_store_close(s);
}

static void test_quota_memory_counts_connections_and_side_tables(void **state) {
  (void)state;
  /* Two tokens, one side table (both in chunk 0), one connection. */
  uint64_t exact = 2 * 64 + 16 * 32768 + 64;
  tg_store *s = open_hard_memory_quota(exact);
  uint32_t a = mk(s, 1, 0), b = mk(s, 1, 0), id;
  assert_int_equal(try_link(s, a, b, &id), 0);
  assert_int_equal(tgt_stats(s).memory_bytes, exact);
  assert_int_equal(try_link(s, a, b, &id), TG_EQUOTA);
  assert_int_equal(tgt_stats(s).live_connections, 1);
  tg_store_close(s);
}

static void test_quota_max_degree_checks_both_endpoints(void **state) {
  (void)state;
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.guardian.max_degree = 3;
  tg_store *s = open_with(&cfg);
  uint32_t hub = mk(s, 1, 0), x[5], id;
  for (int i = 0; i < 5; i++) x[i] = mk(s, 1, 0);
  for (int i = 0; i < 3; i++) assert_int_equal(try_link(s, hub, x[i], &id), 0);
  assert_int_equal(try_link(s, hub, x[3], &id), TG_EQUOTA); /* from side */
  assert_int_equal(tg_quota_exceeded(s), TG_QUOTA_DEGREE);
  assert_int_equal(try_link(s, x[4], hub, &id), TG_EQUOTA); /* to side */
  assert_int_equal(try_link(s, x[0], x[1], &id), 0);
  assert_int_equal(try_link(s, x[1], x[1], &id), TG_EQUOTA); /* loop = 2 */
  assert_int_equal(try_link(s, x[2], x[2], &id), 0);
  assert_int_equal(tgt_stats(s).live_connections, 5);
  assert_int_equal(tgt_stats(s).quota_rejections, 3);
  tg_store_close(s);
}

static void test_eviction_takes_lowest_weight_non_persistent_first(void **state) {
  (void)state;
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.guardian.max_memory_bytes = 64 * 100;
  cfg.guardian.memory_threshold = 0.5; /* soft limit: 50 tokens */
  cfg.guardian.cleanup_margin = 0.1;   /* evict down to 40 tokens */
  cfg.guardian.cleanup = 1;
  tg_store *s = open_with(&cfg);
  /* 50 tokens: weights are a permutation of 0..49; every 5th persistent. */
  uint32_t ids[50];
  float w[50];
  for (int i = 0; i < 50; i++) {
    w[i] = (float)((i * 37) % 50);
    ids[i] = mk(s, w[i], (i % 5 == 0) ? TG_TOKEN_PERSISTENT : 0);
  }
  assert_int_equal(tgt_stats(s).evictions, 0);
  /* The 51st crosses the soft limit: usage must end at or under 40
     tokens including the new one, so 11 are evicted. */
  uint32_t nid = mk(s, 1000, 0);
  tg_store_stats st = tgt_stats(s);
  assert_int_equal(st.evictions, 11);
  assert_int_equal(st.pressure_events, 1);
  assert_int_equal(st.live_tokens, 40);
  /* Exactly the 11 lowest-weight non-persistent tokens are gone. */
  float cut = -1;
  int gone = 0;
  for (int i = 0; i < 50; i++) {
    tg_token t;
    int rc = tg_token_get(s, ids[i], &t);
    assert_int_not_equal(ids[i], nid); /* the new token has a new id */
    if (i % 5 == 0) assert_int_equal(rc, 0); /* persistent: kept */
    if (rc == TG_ENOTFOUND) {
      gone++;
      if (w[i] > cut) cut = w[i];
    }
  }
  assert_int_equal(gone, 11);
  for (int i = 0; i < 50; i++) {
    tg_token t;
    if (i % 5 != 0 && w[i] < cut && ids[i] != nid)
      assert_int_equal(tg_token_get(s, ids[i], &t), TG_ENOTFOUND);
    if (w[i] > cut) assert_int_equal(tg_token_get(s, ids[i], &t), 0);
  }
  tg_token t;
  assert_int_equal(tg_token_get(s, nid, &t), 0);
  assert_true(t.weight == 1000.0f);
  tg_store_close(s);
}

static void test_eviction_never_takes_the_endpoints_being_connected(void **state) {
  (void)state;
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  /* Room for 6 tokens, one connection and one side table. */
  cfg.guardian.max_memory_bytes = 64 * 6 + 16 * 32768 + 64;
  cfg.guardian.memory_threshold = 0.999;
  cfg.guardian.cleanup_margin = 0.0;
  cfg.guardian.cleanup = 1;
  tg_store *s = open_with(&cfg);
  uint32_t a = mk(s, 0.0f, 0), b = mk(s, 0.5f, 0), id;
  for (int i = 0; i < 8; i++) mk(s, 5.0f + (float)i, 0);
  /* The side table pushes usage over the soft limit and cleanup cannot
     reach its target: all 8 others go, but a and b, the lowest weights,
     are the endpoints and must survive. */
  assert_int_equal(try_link(s, a, b, &id), 0);
  tg_token t;
  assert_int_equal(tg_token_get(s, a, &t), 0);
  assert_int_equal(tg_token_get(s, b, &t), 0);
  assert_int_equal(tgt_stats(s).evictions, 8);
  assert_int_equal(tgt_stats(s).live_tokens, 2);
  tg_store_close(s);
}

static int pressure_calls;
static tg_pressure_event last_ev;
static void on_pressure(void *arg, const tg_pressure_event *ev) {
  assert_ptr_equal(arg, &pressure_calls);
  pressure_calls++;
  last_ev = *ev;
}

static void test_without_cleanup_the_callback_is_told_and_nothing_evicted(void **state) {
  (void)state;
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.guardian.max_memory_bytes = 64 * 100;
  cfg.guardian.memory_threshold = 0.5;
  cfg.guardian.cleanup_margin = 0.1;
  cfg.guardian.cleanup = 0;
  cfg.guardian.on_pressure = on_pressure;
  cfg.guardian.on_pressure_arg = &pressure_calls;
  pressure_calls = 0;
  tg_store *s = open_with(&cfg);
  for (int i = 0; i < 50; i++) mk(s, 1, 0);
  assert_int_equal(pressure_calls, 0);
  mk(s, 1, 0); /* 51: crosses */
  assert_int_equal(pressure_calls, 1);
  assert_int_equal(last_ev.memory_bytes, 51 * 64);
  assert_int_equal(last_ev.soft_limit_bytes, 50 * 64);
  assert_int_equal(last_ev.max_memory_bytes, 100 * 64);
  /* Re-armed at usage + margin: told again only 10 tokens later. */
  for (int i = 0; i < 10; i++) mk(s, 1, 0);
  assert_int_equal(pressure_calls, 1);
  mk(s, 1, 0);
  assert_int_equal(pressure_calls, 2);
  tg_store_stats st = tgt_stats(s);
  assert_int_equal(st.evictions, 0);
  assert_int_equal(st.live_tokens, 62);
  /* Up to the hard limit, then TG_EQUOTA. */
  while (tgt_stats(s).live_tokens < 100) mk(s, 1, 0);
  uint32_t id;
  assert_int_equal(tg_token_create(s, NULL, &id), TG_EQUOTA);
  tg_store_close(s);
}

/* ---- eviction is opt-in ---------------------------------------------- */

static void test_default_config_never_evicts_and_memory_limit_gives_equota(void **state) {
  (void)state;
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  assert_int_equal(cfg.guardian.cleanup, 0);
  cfg.guardian.max_memory_bytes = 64 * 20;
  cfg.guardian.memory_threshold = 0.5; /* soft limit: 10 tokens */
  tg_store *s = open_with(&cfg);
  uint32_t ids[20];
  for (int i = 0; i < 20; i++) ids[i] = mk(s, (float)i, 0);
  uint32_t id = 7;
  assert_int_equal(tg_token_create(s, NULL, &id), TG_EQUOTA);
  assert_int_equal(id, 0);
  assert_int_equal(tg_quota_exceeded(s), TG_QUOTA_MEMORY);
  assert_string_equal(tg_quota_name(TG_QUOTA_MEMORY), "memory");
  /* All 20 creates returned 0, and all 20 tokens are still there. */
  tg_token t;
  for (int i = 0; i < 20; i++) assert_int_equal(tg_token_get(s, ids[i], &t), 0);
  tg_store_stats st = tgt_stats(s);
  assert_int_equal(st.evictions, 0);
  assert_int_equal(st.live_tokens, 20);
  tg_store_close(s);
}

typedef struct evict_log {
  uint32_t ids[256];
  size_t n;
  int calls;
} evict_log;

static void on_evict(void *arg, const uint32_t *ids, size_t n) {
  evict_log *l = arg;
  l->calls++;
  for (size_t i = 0; i < n && l->n < 256; i++) l->ids[l->n++] = ids[i];
}

static void test_eviction_tells_on_evict_exactly_the_ids_that_went(void **state) {
  (void)state;
  evict_log log;
  memset(&log, 0, sizeof log);
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.guardian.max_memory_bytes = 64 * 100;
  cfg.guardian.memory_threshold = 0.5;
  cfg.guardian.cleanup_margin = 0.1;
  cfg.guardian.cleanup = 1;
  cfg.guardian.on_evict = on_evict;
  cfg.guardian.on_evict_arg = &log;
  tg_store *s = open_with(&cfg);
  uint32_t ids[50];
  for (int i = 0; i < 50; i++) ids[i] = mk(s, (float)i, 0);
  assert_int_equal(log.calls, 0);
  uint32_t nid = mk(s, 1000, 0); /* crosses the soft limit: 11 go, as they go */
  assert_int_equal(log.calls, 1);
  assert_int_equal(log.n, 11);
  assert_int_equal(tgt_stats(s).evictions, 11);
  /* The ids told are exactly the tokens that are gone, lowest weight
     first: weights 0..10. */
  for (size_t i = 0; i < log.n; i++) {
    tg_token t;
    assert_int_equal(log.ids[i], ids[i]);
    assert_int_not_equal(log.ids[i], nid); /* an evicted id is never handed out */
    assert_int_equal(tg_token_get(s, log.ids[i], &t), TG_ENOTFOUND);
  }
  for (int i = 11; i < 50; i++) {
    tg_token t;
    assert_int_equal(tg_token_get(s, ids[i], &t), 0);
  }
  tg_store_close(s);
}

static void test_evictions_are_logged_and_replay_reproduces_them(void **state) {
  (void)state;
  evict_log log;
  memset(&log, 0, sizeof log);
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.guardian.max_memory_bytes = 64 * 100;
  cfg.guardian.memory_threshold = 0.5;
  cfg.guardian.cleanup_margin = 0.1;
  cfg.guardian.cleanup = 1;
  cfg.guardian.on_evict = on_evict;
  cfg.guardian.on_evict_arg = &log;
  cfg.checkpoint_bytes = 0;
  tg_store *s = NULL;
  assert_int_equal(tg_store_open(&s, tgt_data, &cfg), 0);
  uint32_t ids[51];
  for (int i = 0; i < 51; i++) ids[i] = mk(s, (float)i, 0);
  assert_int_equal(log.n, 11);
  assert_int_equal(tg_store_close(s), 0);
  /* Reopened without eviction: replay alone removes the same 11. */
  tg_store_config_init(&cfg);
  assert_int_equal(tg_store_open(&s, tgt_data, &cfg), 0);
  assert_int_equal(tgt_stats(s).live_tokens, 40);
  assert_int_equal(tgt_stats(s).evictions, 0);
  for (size_t i = 0; i < log.n; i++) {
    tg_token t;
    assert_int_equal(tg_token_get(s, log.ids[i], &t), TG_ENOTFOUND);
  }
  tg_token t;
  assert_int_equal(tg_token_get(s, ids[50], &t), 0);
  assert_int_equal(tg_store_close(s), 0);
}

static void *reject_in_thread(void *arg) {
  tg_store *s = arg;
  uint32_t id;
  /* This thread's own rejection: tokens. */
  assert_int_equal(tg_token_create(s, NULL, &id), TG_EQUOTA);
  assert_int_equal(tg_quota_exceeded(s), TG_QUOTA_TOKENS);
  return NULL;
}

static void test_quota_exceeded_is_per_thread_and_per_store(void **state) {
  (void)state;
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.guardian.max_tokens = 2;
  cfg.guardian.max_degree = 1;
  tg_store *s = open_with(&cfg), *other = open_with(&cfg);
  uint32_t a = mk(s, 1, 0), b = mk(s, 1, 0), id;
  assert_int_equal(try_link(s, a, b, &id), 0);
  assert_int_equal(try_link(s, a, b, &id), TG_EQUOTA);
  assert_int_equal(tg_quota_exceeded(s), TG_QUOTA_DEGREE);
  assert_int_equal(tg_quota_exceeded(other), TG_QUOTA_NONE);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, reject_in_thread, s), 0);
  assert_int_equal(pthread_join(th, NULL), 0);
  /* Another thread's rejection does not change this thread's answer. */
  assert_int_equal(tg_quota_exceeded(s), TG_QUOTA_DEGREE);
  assert_int_equal(tg_quota_exceeded(NULL), TG_QUOTA_NONE);
  assert_string_equal(tg_quota_name(42), "unknown");
  tg_store_close(other);
  tg_store_close(s);
}

static void test_a_batch_rejected_by_a_quota_says_which(void **state) {
  (void)state;
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.guardian.max_tokens = 3;
  tg_store *s = open_with(&cfg);
  tg_batch *b;
  uint32_t id;
  assert_int_equal(tg_batch_begin(s, &b), 0);
  for (int i = 0; i < 4; i++) assert_int_equal(tg_batch_token_create(b, NULL, &id), 0);
  assert_int_equal(tg_batch_commit(b), TG_EQUOTA);
  assert_int_equal(tg_quota_exceeded(s), TG_QUOTA_TOKENS);
  assert_int_equal(tgt_stats(s).live_tokens, 0);
  tg_store_close(s);
}

static void test_victims_keep_the_k_lowest_in_order(void **state) {
  (void)state;
  tg__victims vs;
  assert_int_equal(tg__victims_init(&vs, 4), 0);
  float w[] = {5, 3, 9, 1, 7, 3, NAN, 8};
  for (uint32_t i = 0; i < 8; i++) tg__victims_offer(&vs, w[i], i + 1);
  tg__victims_sort(&vs);
  assert_int_equal(vs.n, 4);
  assert_int_equal(vs.v[0].id, 7); /* NaN counts as lowest */
  assert_int_equal(vs.v[1].id, 4); /* 1 */
  assert_int_equal(vs.v[2].id, 2); /* 3, lower id first */
  assert_int_equal(vs.v[3].id, 6); /* 3 */
  tg__victims_free(&vs);
}

/* ---- configuration files ---------------------------------------------- */

static char path[64];

static void write_ini(const char *text) {
  strcpy(path, "/tmp/tg_test_cfg_XXXXXX");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
}

static void expect_error(const char *text, const char *needle) {
  tg_store_config cfg, orig;
  tg_store_config_init(&cfg);
  cfg.guardian.max_tokens = 4242;
  orig = cfg;
  write_ini(text);
  char err[256];
  assert_int_equal(tg_config_load(&cfg, path, err, sizeof err), TG_ECONFIG);
  char want[128];
  snprintf(want, sizeof want, "%s:%s", path, needle);
  if (!strstr(err, want)) fail_msg("error '%s' does not contain '%s'", err, want);
  /* Nothing half-applied. */
  assert_memory_equal(&cfg, &orig, sizeof cfg);
  unlink(path);
}

static void test_config_loads_every_guardian_key(void **state) {
  (void)state;
  write_ini("; the reference workload\n"
            "[guardian]\n"
            "max_tokens = 9500000\n"
            "max_connections = 123\n"
            "max_memory_bytes = 1024000000   ; bytes\n"
            "memory_threshold = 0.95\n"
            "cleanup_margin = 0.02\n"
            "max_degree = 17\n"
            "cleanup = false\n");
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  char err[256] = "untouched";
  assert_int_equal(tg_config_load(&cfg, path, err, sizeof err), 0);
  assert_string_equal(err, "");
  assert_int_equal(cfg.guardian.max_tokens, 9500000);
  assert_int_equal(cfg.guardian.max_connections, 123);
  assert_int_equal(cfg.guardian.max_memory_bytes, 1024000000);
  assert_true(cfg.guardian.memory_threshold == 0.95);
  assert_true(cfg.guardian.cleanup_margin == 0.02);
  assert_int_equal(cfg.guardian.max_degree, 17);
  assert_int_equal(cfg.guardian.cleanup, 0);
  unlink(path);
}

/* The INI file and the API accept the same guardian values: the edges of
   each range the API takes are taken from a file too. */
static void test_config_file_accepts_what_the_api_accepts(void **state) {
  (void)state;
  write_ini("[guardian]\nmemory_threshold = 1\ncleanup_margin = 0\n");
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  char err[256] = "";
  assert_int_equal(tg_config_load(&cfg, path, err, sizeof err), 0);
  assert_true(cfg.guardian.cleanup_margin == 0.0);
  assert_true(cfg.guardian.memory_threshold == 1.0);
  tg_store *s = NULL;
  assert_int_equal(tg_store_open(&s, NULL, &cfg), 0);
  tg_store_close(s);
  unlink(path);
}

/* Integer limits are compared as integers: one past max_memory_bytes'
   2^62 rounds to 2^62 as a double and passed the range check, to be
   refused only by the whole-config check, which named line 0 and another
   key. It is refused on its own line, as the API refuses it. */
static void test_config_refuses_one_past_an_integer_limit_the_api_refuses(void **state) {
  (void)state;
  expect_error("[guardian]\nmax_memory_bytes = 4611686018427387905\n",
               "2: key 'max_memory_bytes': 4611686018427387905 is out of range");
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.guardian.max_memory_bytes = 4611686018427387905ull;
  tg_store *s = NULL;
  assert_int_equal(tg_store_open(&s, NULL, &cfg), TG_EINVAL);
  write_ini("[guardian]\nmax_memory_bytes = 4611686018427387904\n");
  char err[256] = "";
  assert_int_equal(tg_config_load(&cfg, path, err, sizeof err), 0);
  assert_true(cfg.guardian.max_memory_bytes == 4611686018427387904ull);
  unlink(path);
}

/* checkpoint_bytes takes any size from a file, as from the API (which
   sets no limit: a size past the log's only means "never automatically";
   found by tests/fuzz/fuzz_config.c). */
static void test_config_accepts_any_checkpoint_bytes_as_the_api_does(void **state) {
  (void)state;
  write_ini("[wal]\ncheckpoint_bytes = 18446744073709551615\n");
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  char err[256] = "";
  assert_int_equal(tg_config_load(&cfg, path, err, sizeof err), 0);
  assert_true(cfg.checkpoint_bytes == UINT64_MAX);
  unlink(path);
  expect_error("[wal]\ncheckpoint_bytes = 18446744073709551616\n",
               "2: key 'checkpoint_bytes': '18446744073709551616' is not a non-negative integer");
}

/* [store] prefault_bytes: loaded into cfg.prefault_bytes; above
   max_memory_bytes it is refused as tg_store_open() refuses it, naming
   the later of the two keys. */
static void test_config_loads_prefault_bytes_up_to_max_memory_bytes(void **state) {
  (void)state;
  write_ini("[guardian]\nmax_memory_bytes = 8388608\n[store]\nprefault_bytes = 8388608\n");
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  char err[256] = "";
  assert_int_equal(tg_config_load(&cfg, path, err, sizeof err), 0);
  assert_true(cfg.prefault_bytes == 8388608u);
  unlink(path);
  expect_error("[guardian]\nmax_memory_bytes = 8388608\n[store]\nprefault_bytes = 8388609\n",
               "4: key 'prefault_bytes': prefault_bytes (8388609) is more than max_memory_bytes");
  expect_error("[store]\nprefault_bytes = 8388609\n[guardian]\nmax_memory_bytes = 8388608\n",
               "4: key 'max_memory_bytes': prefault_bytes (8388609) is more than max_memory_bytes");
}

/* A subnormal fraction is a value the API takes, so a file takes it too
   (strtod() says ERANGE for it); one that underflows to zero is refused.
   Found by tests/fuzz/fuzz_config.c. */
static void test_config_accepts_a_subnormal_fraction_as_the_api_does(void **state) {
  (void)state;
  write_ini("[guardian]\ncleanup_margin = 8.2890460584588558e-309\n");
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  char err[256] = "";
  assert_int_equal(tg_config_load(&cfg, path, err, sizeof err), 0);
  assert_true(cfg.guardian.cleanup_margin == 8.2890460584588558e-309);
  tg_store *s = NULL;
  assert_int_equal(tg_store_open(&s, NULL, &cfg), 0);
  tg_store_close(s);
  unlink(path);
  expect_error("[guardian]\ncleanup_margin = 1e-400\n",
               "2: key 'cleanup_margin': '1e-400' is not a number");
}

/* A line longer than the parser's buffer is refused, never split: the tail
   of a long comment must not be read as a key. */
static void test_config_refuses_a_line_longer_than_the_parser_reads(void **state) {
  (void)state;
  char text[512];
  int n = snprintf(text, sizeof text, "[guardian]\n; ");
  memset(text + n, 'x', 197); /* the split fell just before the key */
  snprintf(text + n + 197, sizeof text - (size_t)n - 197, " max_tokens = 7\n");
  expect_error(text, "2: line too long");
}

/* A directory or a FIFO given as the config file: -errno or a refusal at
   once, never a block or a half-read. */
static void test_config_path_that_is_not_a_file_is_refused(void **state) {
  (void)state;
  tg_store_config cfg, orig;
  tg_store_config_init(&cfg);
  orig = cfg;
  char err[256] = "";
  assert_int_equal(tg_config_load(&cfg, "/", err, sizeof err), -EISDIR);
  assert_non_null(strstr(err, "is a directory"));
  char fifo[] = "/tmp/tg_cfg_fifo_XXXXXX";
  assert_non_null(mkdtemp(fifo));
  char fp[64];
  snprintf(fp, sizeof fp, "%s/f", fifo);
  assert_int_equal(mkfifo(fp, 0600), 0);
  assert_int_equal(tg_config_load(&cfg, fp, err, sizeof err), -EINVAL);
  assert_non_null(strstr(err, "not a regular file"));
  assert_memory_equal(&cfg, &orig, sizeof cfg);
  unlink(fp);
  rmdir(fifo);
}

static void test_config_loads_wal_keys(void **state) {
  (void)state;
  write_ini("[guardian]\nmax_tokens = 5\n\n"
            "[wal]\nlevel = strict\nsync_interval_ms = 25\nsegment_bytes = 1048576\n"
            "ring_slots = 1024\nbackpressure = error\ncheckpoint_bytes = 0\n");
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  char err[256];
  assert_int_equal(tg_config_load(&cfg, path, err, sizeof err), 0);
  assert_int_equal(cfg.wal.level, TG_STRICT);
  assert_int_equal(cfg.wal.sync_interval_ms, 25);
  assert_int_equal(cfg.wal.segment_bytes, 1048576);
  assert_int_equal(cfg.wal.ring_slots, 1024);
  assert_int_equal(cfg.wal.nonblocking, 1);
  assert_int_equal(cfg.checkpoint_bytes, 0);
  unlink(path);
}

static int app_seen;
static const char *app_key(void *arg, const char *key, const char *value) {
  assert_ptr_equal(arg, &app_seen);
  if (strcmp(key, "threads")) return "unknown key in [stress]";
  if (strcmp(value, "4")) return "not 4";
  app_seen++;
  return NULL;
}

static void test_config_passes_the_app_section_to_its_callback(void **state) {
  (void)state;
  write_ini("[guardian]\nmax_tokens = 7\n[stress]\nthreads = 4\n");
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  char err[256];
  app_seen = 0;
  assert_int_equal(tg_config_load_app(&cfg, path, "stress", app_key, &app_seen, err, sizeof err), 0);
  assert_int_equal(app_seen, 1);
  assert_int_equal(cfg.guardian.max_tokens, 7);
  unlink(path);
  write_ini("[guardian]\nmax_tokens = 7\n[stress]\n\nthreadz = 4\n");
  assert_int_equal(tg_config_load_app(&cfg, path, "stress", app_key, &app_seen, err, sizeof err), TG_ECONFIG);
  assert_non_null(strstr(err, ":5: key 'threadz': unknown key in [stress]"));
  /* Without the app section, [stress] is unknown. */
  assert_int_equal(tg_config_load(&cfg, path, err, sizeof err), TG_ECONFIG);
  assert_non_null(strstr(err, "unknown section [stress]"));
  unlink(path);
}

static void test_config_errors_name_file_line_and_key(void **state) {
  (void)state;
  expect_error("[guardian]\nmax_tokens = 5\nmax_tokenz = 5\n", "3: key 'max_tokenz': unknown key");
  expect_error("[guardian]\n\n[wall]\nlevel = 1\n", "4: key 'level': unknown section [wall]");
  expect_error("[guardian]\nmax_tokens = 12abc\n", "2: key 'max_tokens': '12abc' is not");
  expect_error("[guardian]\nmax_tokens = -5\n", "2: key 'max_tokens': '-5' is not");
  expect_error("[guardian]\nmax_tokens = 99999999999\n", "2: key 'max_tokens': 99999999999 is out of range");
  expect_error("[guardian]\nmax_memory_bytes = 99999999999999999999999\n", "2: key 'max_memory_bytes'");
  expect_error("[guardian]\nmemory_threshold = 1.5\n", "2: key 'memory_threshold': 1.5 is out of range");
  expect_error("[guardian]\nmemory_threshold = 0\n", "2: key 'memory_threshold': 0 is out of range");
  expect_error("[guardian]\nmemory_threshold = nan\n", "2: key 'memory_threshold': 'nan' is not a number");
  expect_error("[guardian]\ncleanup = maybe\n", "2: key 'cleanup': 'maybe' is not a boolean");
  expect_error("[guardian]\nmax_degree = 1\nmax_degree = 2\n", "3: key 'max_degree': already set on line 2");
  expect_error("[guardian]\nmemory_threshold = 0.5\ncleanup_margin = 0.6\n", "3: key 'cleanup_margin'");
  expect_error("[guardian]\nmax_tokens = 1\nthis line is wrong\n", "3: syntax error");
  expect_error("max_tokens = 5\n", "1: key 'max_tokens': unknown section []");
  expect_error("[wal]\nlevel = paranoid\n", "2: key 'level': 'paranoid' is not one of");
  expect_error("[wal]\nring_slots = 1000\n", "2: key 'ring_slots': 1000 is not a power of two");
  expect_error("[wal]\nsegment_bytes = 100000\n", "2: key 'segment_bytes': 100000 is not a multiple");
  expect_error("[wal]\nsync_interval_ms = 0\n", "2: key 'sync_interval_ms': 0 is out of range");
  expect_error("[wal]\nbackpressure = drop\n", "2: key 'backpressure': 'drop' is not one of block, error");
}

static void test_config_missing_file_gives_errno_and_message(void **state) {
  (void)state;
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  char err[256];
  assert_int_equal(tg_config_load(&cfg, "/nonexistent/tg.ini", err, sizeof err), -ENOENT);
  assert_non_null(strstr(err, "/nonexistent/tg.ini: cannot read"));
}

static void test_open_rejects_an_invalid_config(void **state) {
  (void)state;
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.guardian.memory_threshold = 0;
  tg_store *s = (tg_store *)&cfg;
  assert_int_equal(tg_store_open(&s, NULL, &cfg), TG_EINVAL);
  assert_null(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_quota_max_tokens_allows_n_rejects_n_plus_one),
    cmocka_unit_test(test_quota_max_connections_allows_n_rejects_n_plus_one),
    cmocka_unit_test(test_quota_max_memory_allows_n_rejects_n_plus_one),
    cmocka_unit_test(test_quota_memory_counts_connections_and_side_tables),
    cmocka_unit_test(test_quota_max_degree_checks_both_endpoints),
    cmocka_unit_test(test_eviction_takes_lowest_weight_non_persistent_first),
    cmocka_unit_test(test_eviction_never_takes_the_endpoints_being_connected),
    cmocka_unit_test(test_without_cleanup_the_callback_is_told_and_nothing_evicted),
    cmocka_unit_test(test_default_config_never_evicts_and_memory_limit_gives_equota),
    cmocka_unit_test(test_eviction_tells_on_evict_exactly_the_ids_that_went),
    TGT_TEST(test_evictions_are_logged_and_replay_reproduces_them),
    cmocka_unit_test(test_quota_exceeded_is_per_thread_and_per_store),
    cmocka_unit_test(test_a_batch_rejected_by_a_quota_says_which),
    cmocka_unit_test(test_victims_keep_the_k_lowest_in_order),
    cmocka_unit_test(test_config_loads_every_guardian_key),
    cmocka_unit_test(test_config_file_accepts_what_the_api_accepts),
    cmocka_unit_test(test_config_refuses_one_past_an_integer_limit_the_api_refuses),
    cmocka_unit_test(test_config_accepts_any_checkpoint_bytes_as_the_api_does),
    cmocka_unit_test(test_config_loads_prefault_bytes_up_to_max_memory_bytes),
    cmocka_unit_test(test_config_accepts_a_subnormal_fraction_as_the_api_does),
    cmocka_unit_test(test_config_refuses_a_line_longer_than_the_parser_reads),
    cmocka_unit_test(test_config_path_that_is_not_a_file_is_refused),
    cmocka_unit_test(test_config_loads_wal_keys),
    cmocka_unit_test(test_config_passes_the_app_section_to_its_callback),
    cmocka_unit_test(test_config_errors_name_file_line_and_key),
    cmocka_unit_test(test_config_missing_file_gives_errno_and_message),
    cmocka_unit_test(test_open_rejects_an_invalid_config),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
