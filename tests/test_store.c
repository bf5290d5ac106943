/* The store handle: threads, out-of-memory, lifecycle. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "store/store_internal.h"
#include "token/arena.h"
#include "tokengraph/tokengraph.h"

/* The out-of-memory test deletes token 77 of a full first chunk. */
_Static_assert(77 < TG__CHUNK_SLOTS, "token 77 is in the first chunk");

static void test_close_accepts_null_and_open_needs_out(void **state) {
  (void)state;
  tg_store_close(NULL);
  assert_int_equal(tg_store_open(NULL, NULL, NULL), TG_EINVAL);
}

/* A close while another thread is inside a call on the same handle is
   detected in debug builds: the process aborts with a message instead of
   freeing the store under the call. (Release builds do not check.) */
#ifndef NDEBUG
static pthread_mutex_t edge_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t edge_cv = PTHREAD_COND_INITIALIZER;
static int edge_inside;

static int edge_blocks(void *arg, const tg_connection *c) {
  (void)arg;
  (void)c;
  pthread_mutex_lock(&edge_mu);
  edge_inside = 1;
  pthread_cond_broadcast(&edge_cv);
  for (;;) pthread_cond_wait(&edge_cv, &edge_mu); /* until the process dies */
  return 0;
}

static void *walk_edges(void *arg) {
  tg_store *s = arg;
  tg_token_edges(s, 1, TG_BOTH, edge_blocks, NULL);
  return NULL;
}
#endif

static void test_close_during_a_call_is_detected_in_debug_builds(void **state) {
  (void)state;
#ifdef NDEBUG
  skip();
#else
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    tg_store *s = NULL;
    uint32_t a, b, c;
    if (tg_store_open(&s, NULL, NULL) || tg_token_create(s, NULL, &a) ||
        tg_token_create(s, NULL, &b))
      _exit(90);
    tg_connection cn;
    memset(&cn, 0, sizeof cn);
    cn.from = a;
    cn.to = b;
    if (tg_connect(s, &cn, &c)) _exit(91);
    pthread_t t;
    pthread_create(&t, NULL, walk_edges, s);
    pthread_mutex_lock(&edge_mu);
    while (!edge_inside) pthread_cond_wait(&edge_cv, &edge_mu);
    pthread_mutex_unlock(&edge_mu);
    tg_store_close(s); /* must abort, not free the store under the walk */
    _exit(92);
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGABRT);
#endif
}

/* ---- out of memory through the arena seam ----------------------------- */

static void test_arena_exhaustion_gives_enomem_and_changes_nothing(void **state) {
  (void)state;
  tg__arena_set_map_budget(1); /* one chunk, then mmap "fails" */
  tg_store *s = NULL;
  assert_int_equal(tg_store_open(&s, NULL, NULL), 0);
  uint32_t id;
  for (uint32_t i = 0; i < TG__CHUNK_SLOTS; i++)
    assert_int_equal(tg_token_create(s, NULL, &id), 0);
  tg_store_stats before, after;
  tg_store_stats_get(s, &before);
  assert_int_equal(tg_token_create(s, NULL, &id), TG_ENOMEM);
  assert_int_equal(id, 0);
  tg_store_stats_get(s, &after);
  assert_int_equal(after.live_tokens, before.live_tokens);
  assert_int_equal(after.tokens_created, before.tokens_created);
  assert_int_equal(after.memory_bytes, before.memory_bytes);
  /* The connection arena cannot map its first chunk either. */
  tg_connection c = {.from = 1, .to = 2};
  assert_int_equal(tg_connect(s, &c, &id), TG_ENOMEM);
  tg_store_stats_get(s, &after);
  assert_int_equal(after.live_connections, 0);
  /* A delete frees a slot that the next create gets without mapping
     slot memory, under a new id. */
  assert_int_equal(tg_token_delete(s, 77), 0);
  assert_int_equal(tg_token_create(s, NULL, &id), 0);
  assert_int_equal(id, TG__CHUNK_SLOTS + 1);
  tg_store_close(s);
  tg__arena_set_map_budget(-1);
}

/* ---- several threads on one handle ------------------------------------ */

#define THREADS 4
#define ROUNDS 20000

typedef struct worker {
  tg_store *s;
  int n;             /* thread index */
  uint64_t created;  /* tokens this thread created and did not delete */
  uint64_t linked;   /* connections it made that still exist */
  int errors;
} worker;

static int count_edges(void *arg, const tg_connection *c) {
  (void)c;
  (*(int *)arg)++;
  return 0;
}

static void *work(void *arg) {
  worker *w = arg;
  uint32_t mine[64];
  int nmine = 0;
  for (int r = 0; r < ROUNDS; r++) {
    tg_token t;
    memset(&t, 0, sizeof t);
    t.weight = (float)w->n;
    t.timestamp = (uint32_t)r;
    uint32_t id;
    if (tg_token_create(w->s, &t, &id)) {
      w->errors++;
      continue;
    }
    tg_token got;
    if (tg_token_get(w->s, id, &got) || got.weight != (float)w->n ||
        got.timestamp != (uint32_t)r)
      w->errors++; /* nobody else may touch a token this thread owns */
    if (nmine < 64) {
      mine[nmine++] = id;
      w->created++;
      if (nmine >= 2) {
        tg_connection c;
        memset(&c, 0, sizeof c);
        c.from = mine[nmine - 2];
        c.to = id;
        uint32_t cid;
        if (tg_connect(w->s, &c, &cid)) w->errors++;
        else w->linked++;
      }
    } else {
      if (tg_token_delete(w->s, id)) w->errors++;
      /* Recycle: delete the oldest of mine with its connections. */
      if ((r & 7) == 0) {
        int edges = 0;
        tg_token_edges(w->s, mine[0], TG_BOTH, count_edges, &edges);
        if (tg_token_delete(w->s, mine[0])) w->errors++;
        w->linked -= (uint64_t)edges;
        w->created--;
        memmove(mine, mine + 1, sizeof mine[0] * 63);
        nmine--;
      }
    }
  }
  return NULL;
}

static void test_four_threads_share_one_handle_consistently(void **state) {
  (void)state;
  tg_store *s = NULL;
  assert_int_equal(tg_store_open(&s, NULL, NULL), 0);
  pthread_t th[THREADS];
  worker w[THREADS];
  for (int i = 0; i < THREADS; i++) {
    memset(&w[i], 0, sizeof w[i]);
    w[i].s = s;
    w[i].n = i;
    assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
  }
  uint64_t created = 0, linked = 0;
  for (int i = 0; i < THREADS; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(w[i].errors, 0);
    created += w[i].created;
    linked += w[i].linked;
  }
  tg_store_stats st;
  tg_store_stats_get(s, &st);
  assert_int_equal(st.live_tokens, created);
  assert_int_equal(st.live_connections, linked);
  assert_int_equal(st.tokens_created, (uint64_t)THREADS * ROUNDS);
  tg_store_close(s);
}

/* Resident memory of this process, in bytes (/proc/self/statm). */
static uint64_t resident_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  assert_non_null(f);
  unsigned long size = 0, res = 0;
  assert_int_equal(fscanf(f, "%lu %lu", &size, &res), 2);
  fclose(f);
  return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* prefault_bytes (tokengraph.h): the memory is resident from the open;
   the store's chunks are taken from it (no region of fresh address space
   is reserved while it lasts); what was not taken is freed at close. */
static void test_prefault_bytes_are_resident_at_open_taken_first_and_freed_at_close(
    void **state) {
  (void)state;
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.prefault_bytes = 64u << 20; /* 32 blocks */
  uint64_t r0 = resident_bytes();
  tg_store *s = NULL;
  assert_int_equal(tg_store_open(&s, NULL, &cfg), 0);
  assert_true(resident_bytes() >= r0 + (60u << 20));
  unsigned long regions = tg__arena_regions_reserved();
  uint32_t left = __atomic_load_n(&s->g.pool->n, __ATOMIC_RELAXED);
  assert_true(left <= 32 && left >= 28); /* the prefaulter's spares came from it */
  /* Four chunks of tokens (and their id map): taken from the pool. */
  for (uint32_t i = 0; i < 4 * TG__CHUNK_SLOTS; i++) assert_int_equal(tg_token_create(s, NULL, NULL), 0);
  assert_true(__atomic_load_n(&s->g.pool->n, __ATOMIC_RELAXED) + 4 <= left);
  assert_int_equal(tg__arena_regions_reserved(), regions);
  tg_store_stats st;
  tg_store_stats_get(s, &st);
  assert_int_equal(st.live_tokens, 4 * TG__CHUNK_SLOTS);
  /* The close gives back at least what was never taken (the whole
     resident size is not compared: sanitizers keep shadow memory). */
  uint64_t untaken = (uint64_t)__atomic_load_n(&s->g.pool->n, __ATOMIC_RELAXED) << 21;
  assert_true(untaken >= (16u << 20));
  uint64_t r1 = resident_bytes();
  tg_store_close(s);
  assert_true(resident_bytes() + untaken <= r1 + (2u << 20));
}

static void test_prefault_bytes_above_the_memory_limit_are_refused_with_a_message(void **state) {
  (void)state;
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.guardian.max_memory_bytes = 16u << 20;
  cfg.prefault_bytes = (16u << 20) + 1;
  tg_store *s = NULL;
  char msg[256] = "";
  assert_int_equal(tg_store_open_msg(&s, NULL, &cfg, msg, sizeof msg), TG_EINVAL);
  assert_null(s);
  assert_non_null(strstr(msg, "prefault_bytes"));
  cfg.prefault_bytes = 16u << 20; /* equal is allowed */
  assert_int_equal(tg_store_open_msg(&s, NULL, &cfg, msg, sizeof msg), 0);
  tg_store_close(s);
}

/* Sanitizer runtimes reserve terabytes of address space at start, so a
   limit on it cannot be tested under them. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TGT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TGT_SANITIZED 1
#endif
#endif

/* prefault_bytes that cannot be had: the open fails with TG_ENOMEM and a
   message, and leaves nothing behind (a child process, with its address
   space limited to 192 MiB more than it uses, asks for 1 GiB). */
static void test_prefault_bytes_that_cannot_be_had_fail_the_open_with_enomem(void **state) {
  (void)state;
#ifdef TGT_SANITIZED
  skip();
#endif
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0;
    if (!f || fscanf(f, "%lu", &size) != 1) _exit(3);
    fclose(f);
    struct rlimit rl;
    rl.rlim_cur = rl.rlim_max = (rlim_t)size * (rlim_t)sysconf(_SC_PAGESIZE) + (192u << 20);
    if (setrlimit(RLIMIT_AS, &rl)) _exit(4);
    tg_store_config cfg;
    tg_store_config_init(&cfg);
    cfg.guardian.max_memory_bytes = 2ull << 30;
    cfg.prefault_bytes = 1ull << 30;
    tg_store *s = NULL;
    char msg[256] = "";
    int rc = tg_store_open_msg(&s, NULL, &cfg, msg, sizeof msg);
    if (rc != TG_ENOMEM || s || !strstr(msg, "prefault_bytes")) _exit(5);
    /* Nothing kept: the same limit still lets a store without it open. */
    cfg.prefault_bytes = 0;
    if (tg_store_open(&s, NULL, &cfg)) _exit(6);
    tg_store_close(s);
    _exit(0);
  }
  int st = 0;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
}

/* A fresh data directory "<dir>/data" (dir a mkdtemp template, data
   `n` bytes), its default configuration without crash dumps, and the
   store opened there. */
static tg_store *open_in_temp(char *dir, char *data, size_t n, tg_store_config *cfg) {
  assert_non_null(mkdtemp(dir));
  snprintf(data, n, "%s/data", dir);
  tg_store_config_init(cfg);
  cfg->crash_dump = 0;
  tg_store *s = NULL;
  assert_int_equal(tg_store_open(&s, data, cfg), 0);
  return s;
}

static void remove_temp(const char *dir) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  assert_int_equal(system(cmd), 0);
}

/* What the store's mapped tables point to (the connections' dirty
   bitmaps, from the heap) is reachable for LeakSanitizer while the store
   is open: the tables are registered as root regions. Without that, a
   leak check in a process with an open store (a forked child's exit)
   reported every bitmap leaked. Checked only in the ASan build. */
#ifdef TG_SANITIZE_ADDRESS
#include <sanitizer/lsan_interface.h>
#endif
static void test_an_open_stores_tables_hide_nothing_from_the_leak_checker(void **state) {
  (void)state;
#ifdef TG_SANITIZE_ADDRESS
  char dir[] = "/tmp/tg_test_lsan_XXXXXX", data[64];
  tg_store_config cfg;
  tg_store *s = open_in_temp(dir, data, sizeof data, &cfg);
  uint32_t a, b, c;
  assert_int_equal(tg_token_create(s, NULL, &a), 0);
  assert_int_equal(tg_token_create(s, NULL, &b), 0);
  tg_connection init = {0};
  init.from = a;
  init.to = b;
  assert_int_equal(tg_connect(s, &init, &c), 0);
  assert_int_equal(__lsan_do_recoverable_leak_check(), 0);
  assert_int_equal(tg_store_close(s), 0);
  remove_temp(dir);
#else
  skip();
#endif
}

/* A read-only handle writes nothing, so it faults in nothing either. */
static void test_a_read_only_handle_ignores_prefault_bytes(void **state) {
  (void)state;
  char dir[] = "/tmp/tg_test_prefault_XXXXXX", data[64];
  tg_store_config cfg;
  tg_store *s = open_in_temp(dir, data, sizeof data, &cfg);
  assert_int_equal(tg_token_create(s, NULL, NULL), 0);
  assert_int_equal(tg_store_close(s), 0);
  cfg.read_only = 1;
  cfg.prefault_bytes = 64u << 20;
  assert_int_equal(tg_store_open(&s, data, &cfg), 0);
  assert_int_equal(__atomic_load_n(&s->g.pool->n, __ATOMIC_RELAXED), 0);
  tg_store_stats st;
  tg_store_stats_get(s, &st);
  assert_int_equal(st.live_tokens, 1);
  assert_int_equal(tg_store_close(s), 0);
  remove_temp(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_close_accepts_null_and_open_needs_out),
    cmocka_unit_test(test_an_open_stores_tables_hide_nothing_from_the_leak_checker),
    cmocka_unit_test(test_close_during_a_call_is_detected_in_debug_builds),
    cmocka_unit_test(test_arena_exhaustion_gives_enomem_and_changes_nothing),
    cmocka_unit_test(test_four_threads_share_one_handle_consistently),
    cmocka_unit_test(test_prefault_bytes_are_resident_at_open_taken_first_and_freed_at_close),
    cmocka_unit_test(test_prefault_bytes_above_the_memory_limit_are_refused_with_a_message),
    cmocka_unit_test(test_prefault_bytes_that_cannot_be_had_fail_the_open_with_enomem),
    cmocka_unit_test(test_a_read_only_handle_ignores_prefault_bytes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
