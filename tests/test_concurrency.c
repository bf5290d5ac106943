/*
 * Concurrency: reads that take no lock, edge walks racing with writers, a
 * store lock whose waiters park, and checkpoints captured while writers and
 * readers run (src/store/store.c, READS and LOCKING). Threads count what
 * they saw go wrong; the main thread asserts (cmocka cannot fail a test
 * from another thread). Built and run under ThreadSanitizer too, where the
 * last test is the one that mixes every call with checkpoints.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "store/store_internal.h"
#include "util.h"

/* Every field of the image derives from k, so a copy torn between two
   updates has fields from two different k. */
static void image_of(tg_token *t, uint32_t id, uint32_t k) {
  memset(t, 0, sizeof *t);
  for (int s = 0; s < TG_SPACES; s++)
    for (int a = 0; a < 3; a++) t->coord[s][a] = (int16_t)(k + (uint32_t)(s * 3 + a));
  t->id = id;
  t->field_radius = (uint8_t)k;
  t->field_strength = (uint8_t)(k >> 8);
  t->weight = (float)(k & 0xFFFF);
  t->timestamp = k;
}

static int image_is_whole(const tg_token *t) {
  uint32_t k = t->timestamp;
  tg_token want;
  image_of(&want, t->id, k);
  want.flags = t->flags;
  return memcmp(&want, t, sizeof want) == 0;
}

/* ---- torn reads ------------------------------------------------------------ */

#define HOT_TOKENS 8
#define HOT_CONNS 4
#define SCRATCH 4 /* tokens deleted and made again: their slots are reused */

/* A connection's updatable fields derive from k (its activation count). */
static void conn_image_of(tg_connection *c, uint32_t k) {
  c->weight = (float)(k & 0xFFFF);
  c->pull_strength = (float)(k & 0xFF);
  c->activation_count = k;
  c->last_activated = k ^ 0x5A5A5A5Au;
  c->confidence = (float)(k & 0xF) / 16.0f;
  c->flags = (uint16_t)k;
}

static int conn_image_is_whole(const tg_connection *c) {
  tg_connection want = *c;
  conn_image_of(&want, c->activation_count);
  return memcmp(&want, c, sizeof want) == 0;
}

typedef struct torn_ctx {
  tg_store *s;
  uint32_t ids[HOT_TOKENS];
  uint32_t conns[HOT_CONNS], cfrom[HOT_CONNS], cto[HOT_CONNS];
  _Atomic uint32_t scratch[SCRATCH]; /* current ids, changed by the writer */
  _Atomic int stop, started;
  _Atomic uint64_t reads, torn, missing, progress;
} torn_ctx;

static void *torn_reader(void *arg) {
  torn_ctx *c = arg;
  uint64_t n = 0;
  atomic_fetch_add(&c->started, 1);
  while (!atomic_load_explicit(&c->stop, memory_order_relaxed)) {
    tg_token t;
    uint32_t id = c->ids[n % HOT_TOKENS];
    if (tg_token_get(c->s, id, &t)) atomic_fetch_add(&c->missing, 1);
    else if (t.id != id || !image_is_whole(&t)) atomic_fetch_add(&c->torn, 1);
    /* A scratch token may be gone; when found it is whole and its own. */
    uint32_t sid = atomic_load_explicit(&c->scratch[n % SCRATCH], memory_order_relaxed);
    if (tg_token_get(c->s, sid, &t) == 0 && (t.id != sid || !image_is_whole(&t)))
      atomic_fetch_add(&c->torn, 1);
    tg_connection cn;
    uint32_t k = (uint32_t)(n % HOT_CONNS);
    if (tg_connection_get(c->s, c->conns[k], &cn)) atomic_fetch_add(&c->missing, 1);
    else if (cn.id != c->conns[k] || cn.from != c->cfrom[k] || cn.to != c->cto[k] ||
             !conn_image_is_whole(&cn))
      atomic_fetch_add(&c->torn, 1);
    n++;
    /* Published for the writer, which waits on it (below). */
    if ((n & 63) == 0) atomic_fetch_add_explicit(&c->progress, 64, memory_order_relaxed);
  }
  atomic_fetch_add(&c->reads, n);
  return NULL;
}

/* Every kind of slot change a reader can race with: updates (plain, in a
   batch), creates and deletes that reuse slots, connects and disconnects
   that rewrite the links of the connections read, connection updates, and
   with a data directory, checkpoints whose copy-on-write clears flags. */
static void torn_run(const char *dir) {
  torn_ctx c;
  memset(&c, 0, sizeof c);
  tg_store_config cfg = tgt_small_log_config();
  cfg.wal.segment_bytes = 1 << 22;
  c.s = tgt_open(dir, dir ? &cfg : NULL);
  /* Slots freed first, so the tokens and connections read take reused
     slots whose index is not their id - 1: a writer and a reader that
     picked the stripe one by id and the other by slot would disagree. */
  uint32_t filler[HOT_TOKENS + SCRATCH];
  for (int i = 0; i < HOT_TOKENS + SCRATCH; i++)
    assert_int_equal(tg_token_create(c.s, NULL, &filler[i]), 0);
  tg_connection cn;
  memset(&cn, 0, sizeof cn);
  uint32_t cfill[HOT_CONNS + 1];
  for (int i = 0; i < HOT_CONNS + 1; i++) {
    cn.from = filler[i];
    cn.to = filler[i + 1];
    cfill[i] = tgt_connect(c.s, &cn);
  }
  for (int i = 0; i < HOT_CONNS + 1; i++) assert_int_equal(tg_disconnect(c.s, cfill[i]), 0);
  for (int i = 0; i < HOT_TOKENS + SCRATCH; i++)
    assert_int_equal(tg_token_delete(c.s, filler[i]), 0);
  for (int i = 0; i < HOT_TOKENS; i++) {
    tg_token t;
    image_of(&t, 0, 0);
    assert_int_equal(tg_token_create(c.s, &t, &c.ids[i]), 0);
  }
  for (int i = 0; i < SCRATCH; i++) {
    tg_token t;
    uint32_t id;
    image_of(&t, 0, 0);
    assert_int_equal(tg_token_create(c.s, &t, &id), 0);
    atomic_store(&c.scratch[i], id);
  }
  for (int i = 0; i < HOT_CONNS; i++) {
    cn.from = c.cfrom[i] = c.ids[i];
    cn.to = c.cto[i] = c.ids[(i + 1) % HOT_TOKENS];
    conn_image_of(&cn, 0);
    c.conns[i] = tgt_connect(c.s, &cn);
  }
  pthread_t r[2];
  for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&r[i], NULL, torn_reader, &c), 0);
  TGT_WAIT_UNTIL(atomic_load(&c.started) == 2, "the readers to start");
  uint32_t churn = 0; /* a connection made beside the hot ones, 0 = none */
  uint64_t seen = 0;
  for (uint32_t k = 1; k <= 200000; k++) {
    tg_token t;
    image_of(&t, c.ids[k % HOT_TOKENS], k);
    if (k % 11 == 0) { /* the same update through a batch */
      tg_batch *b = NULL;
      assert_int_equal(tg_batch_begin(c.s, &b), 0);
      assert_int_equal(tg_batch_token_update(b, &t), 0);
      assert_int_equal(tg_batch_commit(b), 0);
    } else {
      assert_int_equal(tg_token_update(c.s, &t), 0);
    }
    if (k % 3 == 0) {
      tg_connection u;
      uint32_t h = k % HOT_CONNS;
      memset(&u, 0, sizeof u);
      u.id = c.conns[h];
      u.from = c.cfrom[h];
      u.to = c.cto[h];
      conn_image_of(&u, k);
      assert_int_equal(tg_connection_update(c.s, &u), 0);
    }
    if (k % 5 == 0) { /* the hot connections' links move */
      if (churn) {
        assert_int_equal(tg_disconnect(c.s, churn), 0);
        churn = 0;
      } else {
        cn.from = c.ids[k % HOT_TOKENS];
        cn.to = c.ids[(k / 5) % HOT_TOKENS];
        conn_image_of(&cn, k);
        churn = tgt_connect(c.s, &cn);
      }
    }
    if (k % 7 == 3) { /* a token in a slot it was not the first to hold */
      uint32_t sid = atomic_load(&c.scratch[k % SCRATCH]);
      image_of(&t, sid, k);
      assert_int_equal(tg_token_update(c.s, &t), 0);
    }
    if (k % 7 == 0) { /* a slot freed and taken again by a new id */
      uint32_t i = k % SCRATCH, nid;
      assert_int_equal(tg_token_delete(c.s, atomic_load(&c.scratch[i])), 0);
      image_of(&t, 0, k);
      assert_int_equal(tg_token_create(c.s, &t, &nid), 0);
      atomic_store(&c.scratch[i], nid);
    }
    if (dir && k % 20000 == 0) assert_int_equal(tg_checkpoint(c.s), 0);
    /* Every 2048 writes the readers must have read meanwhile, so the reads
       overlap the writes even on one CPU, where the writer could otherwise
       finish within its time slice before a reader ran. */
    if (k % 2048 == 0) {
      TGT_WAIT_UNTIL(atomic_load_explicit(&c.progress, memory_order_relaxed) > seen,
                     "the readers to read between writes");
      seen = atomic_load_explicit(&c.progress, memory_order_relaxed);
    }
  }
  atomic_store(&c.stop, 1);
  for (int i = 0; i < 2; i++) pthread_join(r[i], NULL);
  assert_true(atomic_load(&c.reads) > 0);
  assert_int_equal(atomic_load(&c.torn), 0);
  assert_int_equal(atomic_load(&c.missing), 0);
  tg_store_close(c.s);
}

static void test_token_reads_are_never_torn_by_concurrent_updates(void **state) {
  (void)state;
  torn_run(NULL);
}

static void test_reads_are_never_torn_by_batches_deletes_links_or_checkpoints(void **state) {
  (void)state;
  torn_run(tgt_data);
}

/* ---- reads while the lock is held ------------------------------------------ */

/* The guardian's pressure callback runs with the store lock held
   (tokengraph.h): while it waits, other threads' reads must complete and a
   writer must park (sleep in the kernel) rather than spin. */
typedef struct held_ctx {
  tg_store *s;
  uint32_t first;               /* a token that exists before the callback */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int in_callback, release;     /* mu */
  _Atomic int reads_done, writer_tid, writer_started;
  int reads_failed;
} held_ctx;

static void on_pressure_hold(void *arg, const tg_pressure_event *ev) {
  (void)ev;
  held_ctx *h = arg;
  pthread_mutex_lock(&h->mu);
  if (h->in_callback) { /* once */
    pthread_mutex_unlock(&h->mu);
    return;
  }
  h->in_callback = 1;
  pthread_cond_broadcast(&h->cv);
  /* Bounded: a read that waited for the lock would make the test fail, not
     hang (the main thread gives up and releases). */
  while (!h->release) pthread_cond_wait(&h->cv, &h->mu);
  pthread_mutex_unlock(&h->mu);
}

static void *held_creator(void *arg) {
  held_ctx *h = arg;
  for (int i = 0; i < 100000; i++) {
    uint32_t id;
    if (tg_token_create(h->s, NULL, &id)) break; /* the quota, eventually */
    pthread_mutex_lock(&h->mu);
    int done = h->in_callback;
    pthread_mutex_unlock(&h->mu);
    if (done) break;
  }
  return NULL;
}

static void *held_reader(void *arg) {
  held_ctx *h = arg;
  tg_token t;
  tg_store_stats st;
  int bad = 0;
  for (int i = 0; i < 1000; i++) {
    if (tg_token_get(h->s, h->first, &t) || t.id != h->first) bad++;
    if (tg_store_stats_get(h->s, &st) || st.live_tokens == 0) bad++;
    tgt_edges e = {{0}, 0};
    if (tg_token_edges(h->s, h->first, TG_BOTH, tgt_edges_add, &e) || e.n != 1) bad++;
  }
  h->reads_failed = bad;
  atomic_store(&h->reads_done, 1);
  return NULL;
}

static void *held_writer(void *arg) {
  held_ctx *h = arg;
  atomic_store(&h->writer_tid, (int)gettid());
  atomic_store(&h->writer_started, 1);
  uint32_t id;
  tg_token_create(h->s, NULL, &id); /* blocks on the lock until release */
  return NULL;
}


static void test_reads_complete_and_writers_park_while_the_lock_is_held(void **state) {
  (void)state;
  held_ctx h;
  memset(&h, 0, sizeof h);
  pthread_mutex_init(&h.mu, NULL);
  pthread_cond_init(&h.cv, NULL);
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.guardian.max_memory_bytes = 4 << 20; /* above one adjacency table (512 KiB) */
  cfg.guardian.memory_threshold = 0.5;
  cfg.guardian.cleanup = 0;
  cfg.guardian.on_pressure = on_pressure_hold;
  cfg.guardian.on_pressure_arg = &h;
  h.s = tgt_open(NULL, &cfg);
  uint32_t other;
  assert_int_equal(tg_token_create(h.s, NULL, &h.first), 0);
  assert_int_equal(tg_token_create(h.s, NULL, &other), 0);
  tg_connection cn;
  memset(&cn, 0, sizeof cn);
  cn.from = h.first;
  cn.to = other;
  tgt_connect(h.s, &cn);

  pthread_t creator, reader, writer;
  assert_int_equal(pthread_create(&creator, NULL, held_creator, &h), 0);
  pthread_mutex_lock(&h.mu);
  uint64_t deadline = tgp_now_ns() + TGT_PATIENCE_NS;
  while (!h.in_callback && tgp_now_ns() < deadline) {
    pthread_mutex_unlock(&h.mu);
    tgt_pause();
    pthread_mutex_lock(&h.mu);
  }
  int entered = h.in_callback;
  pthread_mutex_unlock(&h.mu);
  assert_true(entered);

  /* The lock is held now. Reads go through; a writer parks. */
  assert_int_equal(pthread_create(&reader, NULL, held_reader, &h), 0);
  assert_int_equal(pthread_create(&writer, NULL, held_writer, &h), 0);
  deadline = tgp_now_ns() + TGT_PATIENCE_NS;
  while (!atomic_load(&h.reads_done) && tgp_now_ns() < deadline) tgt_pause();
  int reads_done = atomic_load(&h.reads_done);
  char wstate = 0;
  while (tgp_now_ns() < deadline) {
    if (atomic_load(&h.writer_started) &&
        (wstate = tgt_thread_state(atomic_load(&h.writer_tid))) == 'S')
      break;
    tgt_pause();
  }
  pthread_mutex_lock(&h.mu);
  h.release = 1;
  pthread_cond_broadcast(&h.cv);
  pthread_mutex_unlock(&h.mu);
  pthread_join(creator, NULL);
  pthread_join(reader, NULL);
  pthread_join(writer, NULL);
  assert_true(reads_done);
  assert_int_equal(h.reads_failed, 0);
  assert_int_equal(wstate, 'S');
  tg_store_close(h.s);
}

/* ---- edge walks ------------------------------------------------------------- */

#define STABLE 24 /* connections of the hub that live for the whole test */

typedef struct walk_ctx {
  tg_store *s;
  uint32_t hub;
  uint32_t stable[STABLE];      /* ids, sorted */
  _Atomic int stop;
  _Atomic uint64_t walks, missed, doubled, foreign;
  _Atomic uint64_t progress; /* walks so far, for the writer to wait on */
} walk_ctx;

typedef struct walk_seen {
  const walk_ctx *c;
  uint32_t ids[4096];
  int n, overflow, foreign;
} walk_seen;

static int walk_cb(void *arg, const tg_connection *cn) {
  walk_seen *w = arg;
  if (cn->from != w->c->hub && cn->to != w->c->hub) w->foreign++;
  if (w->n < (int)(sizeof w->ids / sizeof w->ids[0])) w->ids[w->n++] = cn->id;
  else w->overflow = 1;
  return 0;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static void *walker(void *arg) {
  walk_ctx *c = arg;
  walk_seen *w = malloc(sizeof *w);
  if (!w) return NULL;
  uint64_t n = 0;
  while (!atomic_load_explicit(&c->stop, memory_order_relaxed)) {
    memset(w, 0, sizeof *w);
    w->c = c;
    /* Out only: a connection is on the hub's out list once. */
    if (tg_token_edges(c->s, c->hub, TG_OUT, walk_cb, w) || w->overflow) {
      atomic_fetch_add(&c->missed, 1);
      continue;
    }
    qsort(w->ids, (size_t)w->n, sizeof w->ids[0], cmp_u32);
    for (int i = 1; i < w->n; i++)
      if (w->ids[i] == w->ids[i - 1]) atomic_fetch_add(&c->doubled, 1);
    for (int i = 0; i < STABLE; i++)
      if (!bsearch(&c->stable[i], w->ids, (size_t)w->n, sizeof w->ids[0], cmp_u32))
        atomic_fetch_add(&c->missed, 1);
    if (w->foreign) atomic_fetch_add(&c->foreign, (uint64_t)w->foreign);
    n++;
    atomic_fetch_add_explicit(&c->progress, 1, memory_order_relaxed);
  }
  atomic_fetch_add(&c->walks, n);
  free(w);
  return NULL;
}

static void test_edge_walks_see_every_lasting_connection_once_under_churn(void **state) {
  (void)state;
  walk_ctx c;
  memset(&c, 0, sizeof c);
  c.s = tgt_open(NULL, NULL);
  /* The hub, and tokens that share its seqlock stripe (ids 4096 apart), so
     that churn elsewhere restarts walks too. */
  uint32_t ids[3 * 4096 + 8];
  for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
    assert_int_equal(tg_token_create(c.s, NULL, &ids[i]), 0);
  c.hub = ids[0];
  uint32_t twin = ids[4096], twin2 = ids[8192], peer = ids[5];
  tg_connection cn;
  memset(&cn, 0, sizeof cn);
  /* Stable connections interleaved with churned ones on the hub's list. */
  for (int i = 0; i < STABLE; i++) {
    cn.from = c.hub;
    cn.to = ids[1 + i % 4];
    c.stable[i] = tgt_connect(c.s, &cn);
    cn.to = peer;
    tgt_connect(c.s, &cn); /* removed by the churn below */
  }
  qsort(c.stable, STABLE, sizeof c.stable[0], cmp_u32);
  pthread_t w[2];
  for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&w[i], NULL, walker, &c), 0);
  /* Churn: connect and disconnect on the hub (both ends) and on its stripe
     twins; delete and recreate connections so their slots are reused. */
  uint32_t churn[64];
  int nchurn = 0;
  uint64_t seen = 0;
  for (int round = 0; round < 60000; round++) {
    if (nchurn < 64 && (round % 3 != 2 || nchurn == 0)) {
      cn.from = round & 1 ? c.hub : twin;
      cn.to = round & 2 ? peer : (round & 4 ? c.hub : twin2);
      churn[nchurn++] = tgt_connect(c.s, &cn);
    } else {
      int k = round % nchurn;
      assert_int_equal(tg_disconnect(c.s, churn[k]), 0);
      churn[k] = churn[--nchurn];
    }
    /* The walks must overlap the churn: on one CPU the writer could finish
       within its time slice before a walker ran (walks == 0). */
    if (round % 2048 == 2047) {
      TGT_WAIT_UNTIL(atomic_load_explicit(&c.progress, memory_order_relaxed) > seen,
                     "the walkers to walk between changes");
      seen = atomic_load_explicit(&c.progress, memory_order_relaxed);
    }
  }
  /* And the connections made before the walkers started, one by one. */
  tgt_edges e = tgt_edges_of(c.s, peer, TG_IN);
  for (int i = 0; i < e.n; i++) {
    tg_connection got;
    if (tg_connection_get(c.s, e.ids[i], &got) == 0 && got.from == c.hub)
      assert_int_equal(tg_disconnect(c.s, e.ids[i]), 0);
  }
  atomic_store(&c.stop, 1);
  for (int i = 0; i < 2; i++) pthread_join(w[i], NULL);
  assert_true(atomic_load(&c.walks) > 0);
  assert_int_equal(atomic_load(&c.missed), 0);
  assert_int_equal(atomic_load(&c.doubled), 0);
  assert_int_equal(atomic_load(&c.foreign), 0);
  tg_store_close(c.s);
}

/* A callback may call back into the store: it runs with no lock held. */
static int delete_from_callback(void *arg, const tg_connection *cn) {
  return tg_disconnect(arg, cn->id);
}

static void test_an_edge_callback_may_change_the_store(void **state) {
  (void)state;
  tg_store *s = tgt_open(NULL, NULL);
  uint32_t a, b;
  assert_int_equal(tg_token_create(s, NULL, &a), 0);
  assert_int_equal(tg_token_create(s, NULL, &b), 0);
  tg_connection cn;
  memset(&cn, 0, sizeof cn);
  cn.from = a;
  cn.to = b;
  for (int i = 0; i < 10; i++) tgt_connect(s, &cn);
  assert_int_equal(tg_token_edges(s, a, TG_OUT, delete_from_callback, s), 0);
  assert_int_equal(tgt_stats(s).live_connections, 0);
  assert_int_equal(tgt_edges_of(s, a, TG_BOTH).n, 0);
  tg_store_close(s);
}

/* ---- every call, with checkpoints ------------------------------------------- */

#define MIX_WRITERS 2
#define MIX_READERS 2
#define MIX_ROUNDS 20000

typedef struct mix_ctx {
  tg_store *s;
  _Atomic int writers_left;
  _Atomic uint64_t errors, reads, checkpoints;
} mix_ctx;

typedef struct mix_arg {
  mix_ctx *c;
  unsigned seed;
} mix_arg;

static unsigned next_rand(unsigned *x) {
  *x = *x * 1103515245u + 12345u;
  return *x >> 8;
}

static int first_edge(void *arg, const tg_connection *cn) {
  *(uint32_t *)arg = cn->id;
  return 1; /* stop: one is enough */
}

static void *mix_writer(void *arg) {
  mix_arg *a = arg;
  mix_ctx *c = a->c;
  uint32_t mine[256];
  int n = 0;
  uint64_t errors = 0;
  for (int r = 0; r < MIX_ROUNDS; r++) {
    unsigned op = next_rand(&a->seed) % 10;
    if (n < 8 || op < 3) {
      tg_token t;
      image_of(&t, 0, (uint32_t)r);
      uint32_t id;
      if (tg_token_create(c->s, &t, &id)) errors++;
      else if (n < 256) mine[n++] = id;
    } else if (op < 5) {
      tg_token t;
      uint32_t id = mine[next_rand(&a->seed) % (unsigned)n];
      image_of(&t, id, (uint32_t)r);
      if (tg_token_update(c->s, &t)) errors++;
    } else if (op < 8) {
      tg_connection cn;
      memset(&cn, 0, sizeof cn);
      cn.from = mine[next_rand(&a->seed) % (unsigned)n];
      cn.to = mine[next_rand(&a->seed) % (unsigned)n];
      cn.weight = (float)r;
      uint32_t id;
      if (tg_connect(c->s, &cn, &id)) errors++;
    } else if (op < 9) {
      /* Disconnect one of a token's connections, found by a walk. */
      uint32_t first = 0;
      uint32_t id = mine[next_rand(&a->seed) % (unsigned)n];
      int rc = tg_token_edges(c->s, id, TG_OUT, first_edge, &first);
      if (rc != 0 && rc != 1) errors++;
      else if (first && tg_disconnect(c->s, first)) errors++;
    } else {
      int k = (int)(next_rand(&a->seed) % (unsigned)n);
      if (tg_token_delete(c->s, mine[k])) errors++;
      mine[k] = mine[--n];
    }
  }
  atomic_fetch_add(&c->errors, errors);
  atomic_fetch_sub(&c->writers_left, 1);
  return NULL;
}

static int count_cb(void *arg, const tg_connection *cn) {
  (void)cn;
  (*(int *)arg)++;
  return 0;
}

static void *mix_reader(void *arg) {
  mix_arg *a = arg;
  mix_ctx *c = a->c;
  uint64_t n = 0, errors = 0;
  while (atomic_load(&c->writers_left) > 0) {
    tg_store_stats st;
    if (tg_store_stats_get(c->s, &st)) errors++;
    uint32_t id = 1 + next_rand(&a->seed) % (uint32_t)(st.tokens_created + 1);
    tg_token t;
    if (tg_token_get(c->s, id, &t) == 0 && (t.id != id || !image_is_whole(&t))) errors++;
    tg_connection cn;
    uint32_t cid = 1 + next_rand(&a->seed) % (uint32_t)(st.connections_created + 1);
    if (tg_connection_get(c->s, cid, &cn) == 0 && cn.id != cid) errors++;
    int edges = 0;
    int rc = tg_token_edges(c->s, id, TG_BOTH, count_cb, &edges);
    if (rc && rc != TG_ENOTFOUND) errors++;
    n++;
  }
  atomic_fetch_add(&c->reads, n);
  atomic_fetch_add(&c->errors, errors);
  return NULL;
}

static void *mix_checkpointer(void *arg) {
  mix_arg *a = arg;
  mix_ctx *c = a->c;
  uint64_t n = 0, errors = 0;
  while (atomic_load(&c->writers_left) > 0) {
    if (tg_checkpoint(c->s)) errors++;
    n++;
  }
  atomic_fetch_add(&c->checkpoints, n);
  atomic_fetch_add(&c->errors, errors);
  return NULL;
}

/* Every live token and connection, in id order: ids are at most the
   counts of creates since the first open (bound). */
typedef struct dump {
  tg_token *tok;
  tg_connection *conn;
  size_t ntok, nconn;
} dump;

static dump dump_store(tg_store *s, const tg_store_stats *bound) {
  const tg_store_stats *st = bound;
  dump d = {calloc(st->tokens_created + 1, sizeof(tg_token)),
            calloc(st->connections_created + 1, sizeof(tg_connection)), 0, 0};
  assert_non_null(d.tok);
  assert_non_null(d.conn);
  for (uint32_t id = 1; id <= st->tokens_created; id++)
    if (tg_token_get(s, id, &d.tok[d.ntok]) == 0) {
      d.tok[d.ntok].flags &= (uint16_t)~TG_TOKEN_DIRTY; /* bookkeeping, not data */
      d.ntok++;
    }
  for (uint32_t id = 1; id <= st->connections_created; id++)
    if (tg_connection_get(s, id, &d.conn[d.nconn]) == 0) d.nconn++;
  return d;
}

static void test_every_call_mixed_with_checkpoints_recovers_the_same_graph(void **state) {
  (void)state;
  tg_store_config cfg = tgt_small_log_config();
  cfg.wal.segment_bytes = 1 << 20;
  mix_ctx c;
  memset(&c, 0, sizeof c);
  c.s = tgt_open(tgt_data, &cfg);
  atomic_store(&c.writers_left, MIX_WRITERS);
  enum { N = MIX_WRITERS + MIX_READERS + 1 };
  mix_arg args[N];
  pthread_t th[N];
  for (int i = 0; i < N; i++) {
    args[i].c = &c;
    args[i].seed = 17u + (unsigned)i;
    void *(*fn)(void *) = i < MIX_WRITERS ? mix_writer
                          : i < MIX_WRITERS + MIX_READERS ? mix_reader : mix_checkpointer;
    assert_int_equal(pthread_create(&th[i], NULL, fn, &args[i]), 0);
  }
  for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
  assert_int_equal(atomic_load(&c.errors), 0);
  assert_true(atomic_load(&c.checkpoints) > 0);
  assert_true(atomic_load(&c.reads) > 0);
  /* The reopen loads the last of those checkpoints and replays the log
     after it: exact only if each captured the graph as of its LSN. */
  tg_store_stats bound = tgt_stats(c.s);
  dump before = dump_store(c.s, &bound);
  assert_int_equal(tg_store_close(c.s), 0);

  tg_store *s = tgt_open(tgt_data, &cfg);
  dump after = dump_store(s, &bound);
  assert_int_equal(after.ntok, before.ntok);
  assert_int_equal(after.nconn, before.nconn);
  assert_memory_equal(after.tok, before.tok, before.ntok * sizeof(tg_token));
  assert_memory_equal(after.conn, before.conn, before.nconn * sizeof(tg_connection));
  tg_store_close(s);
  free(before.tok);
  free(before.conn);
  free(after.tok);
  free(after.conn);
}


/* ---- checkpoint capture: staging outside the lock --------------------------- */

/* Step a capture to its end as the checkpointer does: stage a unit
   without the lock, then take it (or copy the next one) under it. When
   `meddle` is set, it runs once, between a stage of kind `kind` and its
   step, as a writer changing the staged unit would. */
static void run_capture(tg_store *s, tg__capture *cap, int kind,
                        void (*meddle)(tg_store *, void *), void *arg) {
  int rc;
  do {
    assert_int_equal(tg__capture_stage(&s->g, cap), 0);
    if (meddle && cap->staged && cap->stage_kind == kind) {
      meddle(s, arg);
      meddle = NULL;
    }
    tg__store_lock(s);
    rc = tg__capture_step(&s->g, cap, 1);
    if (rc == 0) tg__capture_end(&s->g, cap);
    tg__store_unlock(s);
  } while (rc == 1);
  assert_int_equal(rc, 0);
  assert_null(meddle); /* the change ran */
}

/* Each record of `kind` in the capture once; returns how many, and the
   records' timestamps (tokens) or activation counts (connections) by id. */
static uint32_t captured(const tg__capture *cap, int kind, uint32_t *val, uint32_t max_id) {
  uint32_t n = 0;
  for (uint32_t u = 0; u < cap->nunits[kind]; u++) {
    const tg__cap_unit *cu = &cap->units[kind][u];
    for (uint32_t k = 0; k < cu->nrec; k++) {
      const unsigned char *r = cu->recs + (size_t)k * 64;
      uint32_t id, v;
      memcpy(&id, r + (kind ? offsetof(tg_connection, id) : offsetof(tg_token, id)), 4);
      memcpy(&v, r + (kind ? offsetof(tg_connection, activation_count)
                           : offsetof(tg_token, timestamp)), 4);
      assert_true(id >= 1 && id <= max_id);
      assert_int_equal(val[id], 0); /* once */
      val[id] = v;
      n++;
    }
  }
  return n;
}

typedef struct meddle_arg {
  uint32_t token_changed, token_deleted, conn_changed, conn_deleted;
} meddle_arg;

static void change_tokens(tg_store *s, void *arg) {
  meddle_arg *m = arg;
  tg_token t;
  image_of(&t, m->token_changed, 2);
  assert_int_equal(tg_token_update(s, &t), 0);
  assert_int_equal(tg_token_delete(s, m->token_deleted), 0);
}

static void change_conns(tg_store *s, void *arg) {
  meddle_arg *m = arg;
  tg_connection c;
  assert_int_equal(tg_connection_get(s, m->conn_changed, &c), 0);
  conn_image_of(&c, 2);
  assert_int_equal(tg_connection_update(s, &c), 0);
  assert_int_equal(tg_disconnect(s, m->conn_deleted), 0);
}

/* Connection `id` is marked as changed since the last checkpoint. */
static int conn_marked(tg_store *s, uint32_t id) {
  uint32_t i = id - 1u;
  tg__store_lock(s);
  int m = (int)((s->g.cdirty[TG__ID_CHUNK(id)][(i & TG__CHUNK_MASK) >> 6] >> (i & 63)) & 1);
  tg__store_unlock(s);
  return m;
}

static void test_a_unit_changed_after_it_was_staged_is_captured_as_of_begin(void **state) {
  (void)state;
  tg_store_config cfg = tgt_small_log_config();
  cfg.wal.segment_bytes = 16u << 20;
  tg_store *s = tgt_open(tgt_data, &cfg);
  enum { NT = 3 * TG__CAP_UNIT, NC = 2 * TG__CAP_UNIT };
  uint32_t *ids = calloc(NT, sizeof *ids), *cids = calloc(NC, sizeof *cids);
  assert_non_null(ids);
  assert_non_null(cids);
  for (uint32_t i = 0; i < NT; i++) {
    tg_token t;
    image_of(&t, 0, 1);
    assert_int_equal(tg_token_create(s, &t, &ids[i]), 0);
  }
  for (uint32_t i = 0; i < NC; i++) {
    tg_connection c = {.from = ids[i], .to = ids[i + 1], .type = 1};
    conn_image_of(&c, 1);
    cids[i] = tgt_connect(s, &c);
  }
  /* Twice: a writer changes the token unit staged first (slots of unit
     0), then the connection unit staged first (ids of unit 0), between the
     stage and the step. The step must not take the stale stage: the unit
     is then in the capture once, as of begin, copied by the writer. */
  for (int kind = 0; kind < 2; kind++) {
    /* Round 0 deletes token ids[7], and with it connections cids[6] and
       cids[7]; round 1 changes others. */
    meddle_arg m = {ids[5], ids[7], cids[100], cids[101]};
    tg__capture cap;
    pthread_mutex_lock(&s->ckpt_mu); /* no checkpoint of the store's own */
    tg__store_lock(s);
    assert_int_equal(tg__capture_begin(&s->g, &cap, 1), 0);
    tg__store_unlock(s);
    run_capture(s, &cap, kind, kind ? change_conns : change_tokens, &m);
    uint32_t *tv = calloc(NT + 1, sizeof *tv), *cv = calloc(NC + 1, sizeof *cv);
    assert_non_null(tv);
    assert_non_null(cv);
    /* As of begin: the tokens and connections deleted in an earlier round
       are gone, everything else is there once with its image then. */
    uint32_t nt = captured(&cap, 0, tv, NT), nc = captured(&cap, 1, cv, NC);
    assert_int_equal(nt, NT - kind);
    assert_int_equal(nc, NC - 2 * kind);
    if (kind == 0) {
      assert_int_equal(tv[ids[5]], 1);
      assert_int_equal(tv[ids[7]], 1);
    } else {
      assert_int_equal(tv[ids[5]], 2); /* changed in round 0 */
      assert_int_equal(tv[ids[7]], 0);
    }
    assert_int_equal(cv[cids[100]], 1);
    assert_int_equal(cv[cids[101]], 1);
    /* What changed during the capture stays marked for the next
       checkpoint; what the capture took is no longer marked. */
    tg_token t;
    assert_int_equal(tg_token_get(s, ids[9], &t), 0);
    assert_int_equal(t.flags & TG_TOKEN_DIRTY, 0);
    if (kind == 0) {
      assert_int_equal(tg_token_get(s, ids[5], &t), 0);
      assert_int_not_equal(t.flags & TG_TOKEN_DIRTY, 0);
    } else {
      assert_true(conn_marked(s, cids[100]));
      assert_false(conn_marked(s, cids[102]));
    }
    free(tv);
    free(cv);
    tg__store_lock(s);
    tg__capture_remark(&s->g, &cap); /* as a checkpoint that failed */
    tg__store_unlock(s);
    tg__capture_free(&cap);
    pthread_mutex_unlock(&s->ckpt_mu);
  }
  assert_int_equal(tg_checkpoint(s), 0); /* the marks given back still work */

  /* An incremental capture of a few changes spread over units (sparse
     units: records in buffers of their size) takes exactly them, and the
     checkpoint written from it reopens with them. */
  uint32_t tch[3] = {ids[10], ids[TG__CAP_UNIT + 3], ids[2 * TG__CAP_UNIT + 9]};
  for (int k = 0; k < 3; k++) {
    tg_token t;
    image_of(&t, tch[k], 3);
    assert_int_equal(tg_token_update(s, &t), 0);
  }
  tg_connection c;
  assert_int_equal(tg_connection_get(s, cids[50], &c), 0);
  conn_image_of(&c, 3);
  assert_int_equal(tg_connection_update(s, &c), 0);
  assert_int_equal(tg_disconnect(s, cids[TG__CAP_UNIT + 20]), 0);
  tg__capture cap;
  pthread_mutex_lock(&s->ckpt_mu);
  tg__store_lock(s);
  assert_int_equal(tg__capture_begin(&s->g, &cap, 0), 0);
  tg__store_unlock(s);
  run_capture(s, &cap, 0, NULL, NULL);
  uint32_t *tv = calloc(NT + 1, sizeof *tv), *cv = calloc(NC + 1, sizeof *cv);
  assert_non_null(tv);
  assert_non_null(cv);
  assert_int_equal(captured(&cap, 0, tv, NT), 3);
  for (int k = 0; k < 3; k++) assert_int_equal(tv[tch[k]], 3);
  assert_int_equal(captured(&cap, 1, cv, NC), 1);
  assert_int_equal(cv[cids[50]], 3);
  assert_int_equal(cap.ndel[1], 1);
  free(tv);
  free(cv);
  tg__store_lock(s);
  tg__capture_remark(&s->g, &cap);
  tg__store_unlock(s);
  tg__capture_free(&cap);
  pthread_mutex_unlock(&s->ckpt_mu);
  assert_int_equal(tg_checkpoint(s), 0);
  tg_store_close(s);
  s = tgt_open(tgt_data, &cfg);
  tg_store_stats st = tgt_stats(s);
  assert_int_equal(st.checkpoint_lsn, st.last_lsn); /* nothing replayed after it */
  for (int k = 0; k < 3; k++) {
    tg_token t;
    assert_int_equal(tg_token_get(s, tch[k], &t), 0);
    assert_int_equal(t.timestamp, 3);
  }
  assert_int_equal(tg_connection_get(s, cids[50], &c), 0);
  assert_int_equal(c.activation_count, 3);
  assert_int_equal(tg_connection_get(s, cids[TG__CAP_UNIT + 20], &c), TG_ENOTFOUND);
  tg_store_close(s);
  free(ids);
  free(cids);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_token_reads_are_never_torn_by_concurrent_updates),
      TGT_TEST(test_reads_are_never_torn_by_batches_deletes_links_or_checkpoints),
      cmocka_unit_test(test_reads_complete_and_writers_park_while_the_lock_is_held),
      cmocka_unit_test(test_edge_walks_see_every_lasting_connection_once_under_churn),
      cmocka_unit_test(test_an_edge_callback_may_change_the_store),
      TGT_TEST(test_every_call_mixed_with_checkpoints_recovers_the_same_graph),
      TGT_TEST(test_a_unit_changed_after_it_was_staged_is_captured_as_of_begin),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
