/* The concurrency driver; see concurrent.h. */
#include "concurrent.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "tg_progutil.h"

static unsigned bucket_of(uint64_t v) {
  if (v < 16) return (unsigned)v;
  unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= 4 */
  return (e - 3u) * 16u + (unsigned)((v >> (e - 4u)) & 15u);
}

static uint64_t bucket_top(unsigned i) {
  if (i < 16) return i;
  unsigned e = i / 16u + 3u, sub = i % 16u;
  return ((16ull + sub + 1ull) << (e - 4u)) - 1ull;
}

static inline void hist_add(tgc_hist *h, uint64_t v) {
  h->b[bucket_of(v)]++;
  h->n++;
  if (v > h->max) h->max = v;
}

static void hist_merge(tgc_hist *into, const tgc_hist *h) {
  for (unsigned i = 0; i < TGC_BUCKETS; i++) into->b[i] += h->b[i];
  into->n += h->n;
  if (h->max > into->max) into->max = h->max;
}

double tgc_hist_quantile_ns(const tgc_hist *h, double q, double ns_per_tick) {
  if (!h->n) return 0;
  uint64_t rank = (uint64_t)(q * (double)(h->n - 1)) + 1, seen = 0;
  for (unsigned i = 0; i < TGC_BUCKETS; i++) {
    seen += h->b[i];
    if (seen >= rank) {
      uint64_t top = bucket_top(i);
      return (double)(top < h->max ? top : h->max) * ns_per_tick;
    }
  }
  return (double)h->max * ns_per_tick;
}

uint64_t tgc_hist_over(const tgc_hist *h, double min_ns, double ns_per_tick, double *sum_ns) {
  uint64_t n = 0;
  double sum = 0;
  for (unsigned i = 0; i < TGC_BUCKETS; i++) {
    if (!h->b[i]) continue;
    uint64_t top = bucket_top(i) < h->max ? bucket_top(i) : h->max;
    if ((double)top * ns_per_tick < min_ns) continue;
    n += h->b[i];
    sum += (double)h->b[i] * (double)top * ns_per_tick;
  }
  if (sum_ns) *sum_ns = sum;
  return n;
}

/*
 * The driver must not be the interference it measures: a field one thread
 * stores per call and another loads per call moves a cache line between
 * the cores at every call (about 100 ns here, more than a read costs). So
 * each shared field that changes has a line of its own, the writers
 * publish their highest id every PUBLISH_EVERY creates (readers need only
 * ids that exist, not the newest), the readers look at it every
 * PUBLISH_EVERY reads, and each thread's counters sit on lines no other
 * thread touches.
 */
#define LINE 64
#define PUBLISH_EVERY 256u

typedef struct shared {
  const tgc_phase *p;
  pthread_barrier_t start;
  _Alignas(LINE) _Atomic uint32_t id_hi; /* highest token id a writer
                                published (at most PUBLISH_EVERY behind) */
  _Alignas(LINE) _Atomic int stop; /* readers (and open-ended writers)
                                stop; stored once */
  _Alignas(LINE) _Atomic unsigned writers_left;
  _Atomic int error;
  char pad[LINE];
} shared;

typedef struct worker {
  _Alignas(LINE) shared *sh;
  unsigned idx;
  uint64_t ops;
  uint64_t t0, t1;              /* ticks: first and last call */
  uint64_t cpu_ns;              /* the thread's CPU time over its calls */
  uint64_t vcsw, ivcsw;         /* its voluntary and involuntary context
                                   switches over them */
  tgc_hist h;
  char pad[LINE];               /* h.n and h.max off the next worker's line */
} worker;

static uint64_t thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void thread_switches(uint64_t *v, uint64_t *iv) {
  struct rusage ru;
  getrusage(RUSAGE_THREAD, &ru);
  *v = (uint64_t)ru.ru_nvcsw;
  *iv = (uint64_t)ru.ru_nivcsw;
}

static uint64_t xorshift(uint64_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

static void note_error(shared *sh, const char *what, int rc) {
  int zero = 0;
  if (atomic_compare_exchange_strong(&sh->error, &zero, rc))
    fprintf(stderr, "concurrent: %s: %s\n", what, tg_strerror(rc));
}

#define RECENT 1024

/* Raise the published highest id to at least id (relaxed: readers only
   need an id that exists; the store's own synchronisation covers what the
   id names). */
static void publish_id(shared *sh, uint32_t id) {
  uint32_t cur = atomic_load_explicit(&sh->id_hi, memory_order_relaxed);
  while (id > cur && !atomic_compare_exchange_weak_explicit(
                         &sh->id_hi, &cur, id, memory_order_relaxed, memory_order_relaxed)) {
  }
}

static void *writer_main(void *arg) {
  worker *w = arg;
  shared *sh = w->sh;
  const tgc_phase *p = sh->p;
  uint32_t recent[RECENT], id_max = 0;
  uint64_t n = 0, rng = 0x9E3779B97F4A7C15ull * (w->idx + 1);
  tg_token t;
  memset(&t, 0, sizeof t);
  tg_connection c;
  memset(&c, 0, sizeof c);
  pthread_barrier_wait(&sh->start);
  uint64_t cpu0 = thread_cpu_ns(), v0, iv0;
  thread_switches(&v0, &iv0);
  uint64_t prev = tgp_ticks();
  w->t0 = prev;
  for (;;) {
    if (p->ops ? n >= p->ops : atomic_load_explicit(&sh->stop, memory_order_relaxed)) break;
    uint32_t id;
    t.timestamp = (uint32_t)n;
    if (p->write == TGC_WRITE_UPDATE) {
      uint32_t hi = atomic_load_explicit(&sh->id_hi, memory_order_relaxed);
      t.id = 1u + (uint32_t)(xorshift(&rng) % (hi ? hi : 1));
      int rc = tg_token_update(p->s, &t);
      if (rc) {
        note_error(sh, "tg_token_update", rc);
        break;
      }
      uint64_t now = tgp_ticks();
      hist_add(&w->h, now - prev);
      prev = now;
      n++;
      continue;
    }
    int rc = tg_token_create(p->s, &t, &id);
    if (rc) {
      note_error(sh, "tg_token_create", rc);
      break;
    }
    recent[n % RECENT] = id;
    if (p->connect_every && n && n % p->connect_every == 0) {
      c.from = id;
      c.to = recent[xorshift(&rng) % (n < RECENT ? n : RECENT)];
      uint32_t cid;
      if ((rc = tg_connect(p->s, &c, &cid))) {
        note_error(sh, "tg_connect", rc);
        break;
      }
    }
    /* A relaxed maximum is enough: readers only need ids that exist. */
    if (id > id_max) id_max = id;
    if ((uint32_t)n % PUBLISH_EVERY == PUBLISH_EVERY - 1u) publish_id(sh, id_max);
    uint64_t now = tgp_ticks();
    hist_add(&w->h, now - prev);
    prev = now;
    n++;
  }
  publish_id(sh, id_max);
  w->cpu_ns = thread_cpu_ns() - cpu0;
  thread_switches(&w->vcsw, &w->ivcsw);
  w->vcsw -= v0;
  w->ivcsw -= iv0;
  w->t1 = prev;
  w->ops = n;
  if (atomic_fetch_sub(&sh->writers_left, 1) == 1 && sh->p->ops)
    atomic_store(&sh->stop, 1); /* the last writer ends the readers */
  return NULL;
}

static int count_edge(void *arg, const tg_connection *c) {
  (void)c;
  (*(uint64_t *)arg)++;
  return 0;
}

static void *reader_main(void *arg) {
  worker *w = arg;
  shared *sh = w->sh;
  const tgc_phase *p = sh->p;
  uint64_t n = 0, rng = 0xD1B54A32D192ED03ull * (w->idx + 7), edges = 0;
  tg_token t;
  pthread_barrier_wait(&sh->start);
  uint64_t cpu0 = thread_cpu_ns(), v0, iv0;
  thread_switches(&v0, &iv0);
  uint64_t prev = tgp_ticks();
  w->t0 = prev;
  uint32_t hi = 0;
  while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
    if ((uint32_t)n % PUBLISH_EVERY == 0)
      hi = atomic_load_explicit(&sh->id_hi, memory_order_relaxed);
    uint32_t id = hi ? 1u + (uint32_t)(xorshift(&rng) % hi) : 1u;
    int rc = p->read == TGC_READ_EDGES ? tg_token_edges(p->s, id, TG_BOTH, count_edge, &edges)
                                       : tg_token_get(p->s, id, &t);
    if (rc && rc != TG_ENOTFOUND) {
      note_error(sh, "read", rc);
      break;
    }
    uint64_t now = tgp_ticks();
    hist_add(&w->h, now - prev);
    prev = now;
    n++;
  }
  w->cpu_ns = thread_cpu_ns() - cpu0;
  thread_switches(&w->vcsw, &w->ivcsw);
  w->vcsw -= v0;
  w->ivcsw -= iv0;
  w->t1 = prev;
  w->ops = n;
  return NULL;
}

typedef struct ckpt_arg {
  shared *sh;
  int rc;
  uint64_t ns;
} ckpt_arg;

static void *checkpoint_main(void *arg) {
  ckpt_arg *c = arg;
  pthread_barrier_wait(&c->sh->start);
  uint64_t t0 = tgp_now_ns();
  c->rc = tg_checkpoint(c->sh->p->s);
  c->ns = tgp_now_ns() - t0;
  atomic_store(&c->sh->stop, 1);
  return NULL;
}

int tgc_run(const tgc_phase *p, tgc_result *out) {
  memset(out, 0, sizeof *out);
  unsigned nw = p->writers, nr = p->readers, n = nw + nr;
  shared sh;
  memset(&sh, 0, sizeof sh);
  sh.p = p;
  atomic_init(&sh.writers_left, nw);
  tg_store_stats st;
  tg_store_stats_get(p->s, &st);
  atomic_init(&sh.id_hi, (uint32_t)(st.live_tokens ? st.live_tokens : 0));
  /* aligned_alloc: workers are cache-line aligned (sizeof is a multiple). */
  worker *ws = aligned_alloc(LINE, (n ? n : 1) * sizeof *ws);
  if (ws) memset(ws, 0, (n ? n : 1) * sizeof *ws);
  pthread_t *th = calloc(n + 1, sizeof *th);
  ckpt_arg ca = {&sh, 0, 0};
  if (!ws || !th) {
    free(ws);
    free(th);
    return out->error = TG_ENOMEM;
  }
  pthread_barrier_init(&sh.start, NULL, n + 1 + (p->checkpoint ? 1 : 0));
  for (unsigned i = 0; i < n; i++) {
    ws[i].sh = &sh;
    ws[i].idx = i;
    pthread_create(&th[i], NULL, i < nw ? writer_main : reader_main, &ws[i]);
  }
  if (p->checkpoint) pthread_create(&th[n], NULL, checkpoint_main, &ca);
  pthread_barrier_wait(&sh.start);
  uint64_t t0 = tgp_now_ns();
  if (!p->ops && !p->checkpoint) {
    struct timespec ts = {(time_t)(p->duration_ns / 1000000000ull),
                          (long)(p->duration_ns % 1000000000ull)};
    nanosleep(&ts, NULL); /* a benchmark's run length, not synchronisation */
    atomic_store(&sh.stop, 1);
  }
  for (unsigned i = 0; i < n; i++) pthread_join(th[i], NULL);
  if (p->checkpoint) pthread_join(th[n], NULL);
  uint64_t t1 = tgp_now_ns();
  pthread_barrier_destroy(&sh.start);
  /* Writers' rate over the writers' own span: from the first start to the
     last end, in ticks converted by the caller; here in wall time. */
  out->seconds = (double)(t1 - t0) / 1e9;
  for (unsigned i = 0; i < n; i++) {
    if (i < nw) {
      out->writer_ops += ws[i].ops;
      out->writer_cpu_seconds += (double)ws[i].cpu_ns / 1e9;
      out->writer_vcsw += ws[i].vcsw;
      out->writer_ivcsw += ws[i].ivcsw;
      hist_merge(&out->w, &ws[i].h);
    } else {
      out->reader_ops += ws[i].ops;
      out->reader_cpu_seconds += (double)ws[i].cpu_ns / 1e9;
      out->reader_vcsw += ws[i].vcsw;
      out->reader_ivcsw += ws[i].ivcsw;
      hist_merge(&out->r, &ws[i].h);
    }
  }
  out->checkpoint_rc = ca.rc;
  out->checkpoint_seconds = (double)ca.ns / 1e9;
  out->error = atomic_load(&sh.error);
  if (!out->error && ca.rc) out->error = ca.rc;
  free(ws);
  free(th);
  return out->error;
}
