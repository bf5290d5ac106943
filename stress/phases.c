/*
 * tg-stress timed phases: baseline token creation, the full stack (both WAL
 * variants, with the raw-write and replay references) and tracing overhead.
 *
 * Timing: each phase runs `rounds` times and the best round counts (the
 * machine is shared; the best round is the one least disturbed). Latency:
 * about one operation in `sample_every` is timed with the cycle counter, at
 * random gaps (ts_gap), so the timing adds about 20 ns / sample_every per
 * operation to every phase alike; percentiles are over the samples of every
 * round.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "raw_ref.h"
#include "stress.h"
#include "tokengraph/trace.h"
#include "tokengraph/wal.h"

#define HUGE_2M (2u << 20)
#define FRAME_BYTES 80 /* 16-byte frame header + 64-byte payload (docs/wal-format.md) */

/* ---- the creation loop every timed phase shares ---- */

typedef struct loop_args {
  tg_store *s;
  uint64_t first;    /* global index of this thread's first token */
  uint64_t n;        /* tokens this thread creates */
  uint32_t sample;   /* sample_every */
  uint64_t *lat;     /* latency samples (ticks) */
  size_t nlat, caplat;
  tg_wal *wal;       /* reference variant: the separate WAL, or NULL */
  uint64_t every;    /* ... one record per `every` tokens */
  pthread_barrier_t *start;
  int rc;            /* first error */
  uint64_t failed_at;
  pthread_t th;
} loop_args;

static void create_loop(loop_args *a) {
  tg_token t;
  memset(&t, 0, sizeof t);
  uint64_t left = a->every ? a->every - 1 - a->first % a->every : UINT64_MAX;
  uint64_t rng = 0x9E3779B97F4A7C15ull ^ a->first;
  uint32_t gap = ts_gap(&rng, a->sample);
  for (uint64_t i = 0; i < a->n; i++) {
    uint64_t g = a->first + i;
    uint32_t id;
    int rc;
    ts_fill(&t, g);
    if (--gap == 0 && a->nlat < a->caplat) {
      gap = ts_gap(&rng, a->sample);
      uint64_t t0 = tgp_ticks();
      rc = tg_token_create(a->s, &t, &id);
      if (!rc && left == 0) rc = tg_wal_append(a->wal, TG_REC_TOKEN_PUT, &t, sizeof t, NULL);
      a->lat[a->nlat++] = tgp_ticks() - t0;
    } else {
      rc = tg_token_create(a->s, &t, &id);
      if (!rc && left == 0) rc = tg_wal_append(a->wal, TG_REC_TOKEN_PUT, &t, sizeof t, NULL);
    }
    if (left-- == 0) left = a->every - 1;
    if (__builtin_expect(rc != 0, 0)) {
      a->rc = rc;
      a->failed_at = g;
      return;
    }
  }
}

static void *loop_thread(void *arg) {
  loop_args *a = arg;
  pthread_barrier_wait(a->start);
  create_loop(a);
  return NULL;
}

/* Run n creations split over `threads` threads; returns the seconds from
   the start to the last thread's end plus `tail` (called on the timed
   path, e.g. a final sync). Latency samples are appended to *lat. */
typedef struct timed_run {
  tg_store *s;
  tg_wal *wal;
  uint64_t every;
  uint64_t n;
  uint32_t threads;
  uint32_t sample_every;
  uint64_t *lat;     /* shared sample buffer */
  size_t nlat, caplat;
  int (*tail)(void *arg);
  void *tail_arg;
  int rc;
  uint64_t failed_at;
} timed_run;

static double run_timed(timed_run *tr) {
  loop_args a[TS_MAX_THREADS];
  uint32_t k = tr->threads ? tr->threads : 1;
  size_t per_cap = ts_sample_cap(tr->n / k + 1, tr->sample_every);
  size_t need = per_cap * k;
  if (tr->nlat + need > tr->caplat) {
    size_t cap = (tr->nlat + need) * 2;
    uint64_t *p = realloc(tr->lat, cap * sizeof *p);
    if (!p) {
      fprintf(stderr, "tg-stress: out of memory for latency samples\n");
      exit(70);
    }
    tr->lat = p;
    tr->caplat = cap;
  }
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, k + 1);
  uint64_t *lat = malloc(need * sizeof *lat);
  if (!lat) exit(70);
  for (uint32_t i = 0; i < k; i++) {
    uint64_t lo = tr->n * i / k, hi = tr->n * (i + 1) / k;
    a[i] = (loop_args){.s = tr->s, .first = lo, .n = hi - lo, .sample = tr->sample_every,
                       .lat = lat + per_cap * i, .caplat = per_cap,
                       .wal = tr->wal, .every = tr->wal ? tr->every : 0, .start = &bar};
  }
  uint64_t t0 = 0, t1;
  if (k == 1) {
    /* One writer runs on the calling thread: no thread start in the timing. */
    t0 = tgp_now_ns();
    create_loop(&a[0]);
  } else {
    for (uint32_t i = 0; i < k; i++)
      if (pthread_create(&a[i].th, NULL, loop_thread, &a[i])) {
        fprintf(stderr, "tg-stress: cannot start a writer thread\n");
        exit(70);
      }
    t0 = tgp_now_ns();
    pthread_barrier_wait(&bar);
    for (uint32_t i = 0; i < k; i++) pthread_join(a[i].th, NULL);
  }
  int rc = 0;
  for (uint32_t i = 0; i < k; i++)
    if (a[i].rc && !rc) {
      rc = a[i].rc;
      tr->failed_at = a[i].failed_at;
    }
  if (!rc && tr->tail) rc = tr->tail(tr->tail_arg);
  t1 = tgp_now_ns();
  pthread_barrier_destroy(&bar);
  for (uint32_t i = 0; i < k; i++) {
    memcpy(tr->lat + tr->nlat, a[i].lat, a[i].nlat * sizeof *lat);
    tr->nlat += a[i].nlat;
  }
  free(lat);
  tr->rc = rc;
  return (double)(t1 - t0) / 1e9;
}

static void set_ratio(ts_run *r, ts_result *x) {
  if (r->baseline_ns_per_op > 0 && x->ops)
    x->ratio = x->seconds * 1e9 / (double)x->ops / r->baseline_ns_per_op;
}

/* ---- baseline ---- */

/* The reference of tg-bench tokens: n 64-byte records written into freshly
   mapped 2 MiB-aligned MADV_HUGEPAGE memory, first touch included. */
static double hugepage_seconds(uint64_t n) {
  size_t bytes = (size_t)n * 64, span = bytes + HUGE_2M;
  unsigned char *raw = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                            -1, 0);
  if (raw == MAP_FAILED) return -1;
  tg_token *recs = (tg_token *)(((uintptr_t)raw + HUGE_2M - 1) & ~(uintptr_t)(HUGE_2M - 1));
  madvise(recs, bytes, MADV_HUGEPAGE);
  tg_token t;
  memset(&t, 0, sizeof t);
  uint64_t t0 = tgp_now_ns();
  for (uint64_t i = 0; i < n; i++) {
    ts_fill(&t, i);
    recs[i] = t;
    recs[i].id = (uint32_t)(i + 1);
    recs[i].flags |= TG_TOKEN_ACTIVE;
  }
  __asm__ volatile("" : : "g"(recs) : "memory");
  uint64_t t1 = tgp_now_ns();
  munmap(raw, span);
  return (double)(t1 - t0) / 1e9;
}

int ts_phase_baseline(ts_run *r) {
  const ts_config *c = r->cfg;
  uint64_t n = c->tokens;
  ts_result *ref = ts_result_add(r, "reference", "fresh-hugepage-memory", -1);
  ts_result *x = ts_result_add(r, "phase", "baseline", -1);
  ref->ops = x->ops = n;
  snprintf(x->note, sizeof x->note, "in-memory store, guardian inline, tracing off, 1 thread");
  tg_trace_set_rate(0);
  timed_run tr = {.n = n, .threads = 1, .sample_every = c->sample_every};
  int rc = 0;
  uint64_t live = 0, rejected = 0;
  for (uint64_t round = 0; round < c->rounds; round++) {
    ts_progress(r, "baseline: round %llu/%llu, %llu tokens", (unsigned long long)round + 1,
                (unsigned long long)c->rounds, (unsigned long long)n);
    double hs = hugepage_seconds(n);
    if (hs > 0) ts_keep_round(ref, hs);
    uint64_t rss0 = tgp_rss_bytes();
    tg_store *s = NULL;
    if ((rc = ts_open(r, "baseline", &s, NULL, &c->store))) return 1;
    tr.s = s;
    double sec = run_timed(&tr);
    uint64_t rss1 = tgp_rss_bytes();
    tg_store_stats st;
    tg_store_stats_get(s, &st);
    tg_store_close(s);
    if (tr.rc) {
      rc = tr.rc;
      break;
    }
    ts_keep_round(x, sec);
    live = st.live_tokens;
    rejected = st.quota_rejections;
    double per = st.live_tokens ? (double)(rss1 - rss0) / (double)st.live_tokens : -1;
    if (per >= 0 && (x->rss_per_token < 0 || per < x->rss_per_token)) x->rss_per_token = per;
  }
  ts_latency(r, x, tr.lat, tr.nlat);
  free(tr.lat);
  if (!ts_check_add(r, rc == 0 && live == n && rejected == 0, "baseline: every create succeeds",
                    "%llu live of %llu, %llu rejected%s%s", (unsigned long long)live,
                    (unsigned long long)n, (unsigned long long)rejected, rc ? ", error: " : "",
                    rc ? tg_strerror(rc) : ""))
    return 0;
  r->baseline_ns_per_op = x->seconds * 1e9 / (double)n;
  x->ratio = 1.0;
  set_ratio(r, ref);
  if (ref->seconds > 0) {
    double q = x->seconds / ref->seconds;
    ts_figure_add(r, "baseline / fresh huge-page memory (same records)", q, "x", "<= 1.5",
                  q <= 1.5);
  }
  ts_figure_add(r, "baseline tokens per second", (double)n / x->seconds / 1e6, "M/s", ">= 100",
                (double)n / x->seconds >= 100e6);
  if (x->rss_per_token >= 0)
    ts_figure_add(r, "RSS bytes per live token (baseline)", x->rss_per_token, "B", "<= 68.5",
                  x->rss_per_token <= 68.5);
  return 0;
}

/* ---- full stack ---- */

typedef struct scraper {
  const char *path;
  uint64_t interval_ms;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stop;
  uint64_t writes;
  int rc;
  pthread_t th;
} scraper;

/* Rewrites the metrics file every interval, as a node_exporter textfile
   scrape would consume it: metrics stay on for the whole phase. */
/* ms milliseconds from now on CLOCK_REALTIME, the clock of a
   pthread_cond_timedwait() deadline (the condition variable keeps the
   default clock). */
static struct timespec realtime_after_ms(uint64_t ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t ns = (uint64_t)ts.tv_nsec + ms * 1000000u;
  ts.tv_sec += (time_t)(ns / 1000000000u);
  ts.tv_nsec = (long)(ns % 1000000000u);
  return ts;
}

static void *scraper_main(void *arg) {
  scraper *m = arg;
  pthread_mutex_lock(&m->mu);
  while (!m->stop) {
    struct timespec deadline = realtime_after_ms(m->interval_ms);
    pthread_cond_timedwait(&m->cv, &m->mu, &deadline);
    if (m->stop) break;
    pthread_mutex_unlock(&m->mu);
    int rc = tg_metrics_write_file(m->path);
    pthread_mutex_lock(&m->mu);
    if (rc && !m->rc) m->rc = rc;
    m->writes++;
  }
  pthread_mutex_unlock(&m->mu);
  return NULL;
}

static int scraper_start(scraper *m, const char *path, uint64_t interval_ms) {
  memset(m, 0, sizeof *m);
  m->path = path;
  m->interval_ms = interval_ms;
  pthread_mutex_init(&m->mu, NULL);
  pthread_cond_init(&m->cv, NULL);
  if (!interval_ms) return 0;
  return pthread_create(&m->th, NULL, scraper_main, m) ? -1 : 1;
}

static int scraper_stop(scraper *m, int started) {
  if (started == 1) {
    pthread_mutex_lock(&m->mu);
    m->stop = 1;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->th, NULL);
  }
  int rc = tg_metrics_write_file(m->path); /* the final state, always */
  if (rc && !m->rc) m->rc = rc;
  m->writes++;
  pthread_mutex_destroy(&m->mu);
  pthread_cond_destroy(&m->cv);
  return m->rc;
}

static int wal_sync_tail(void *arg) { return tg_wal_sync(arg, 0); }
static int store_sync_tail(void *arg) { return tg_sync(arg); }


static tg_store_config durable_cfg(const ts_config *c, int level) {
  tg_store_config sc = c->store;
  sc.wal.level = level;
  sc.crash_dump = 0; /* leave the signal handlers alone */
  return sc;
}

/* A timed round with what a production store would have on: tracing at 1%
   and the metrics file at prom rewritten every interval_ms. Returns its
   seconds; *mrc gets the scraper's error, *rss0 and *rss1 (when not NULL)
   the resident set size just before and just after the timed run. */
static double run_observed(timed_run *tr, const char *prom, uint64_t interval_ms, int *mrc,
                           uint64_t *rss0, uint64_t *rss1) {
  tg_trace_set_rate(0.01);
  scraper m;
  int started = scraper_start(&m, prom, interval_ms);
  if (rss0) *rss0 = tgp_rss_bytes();
  double sec = run_timed(tr);
  if (rss1) *rss1 = tgp_rss_bytes();
  *mrc = scraper_stop(&m, started);
  tg_trace_set_rate(0);
  return sec;
}

/* (a) the reference workload: in-memory store + a separate WAL that gets a
   record for every `wal_every`-th token. */
static int full_stack_every_nth(ts_run *r, int level) {
  const ts_config *c = r->cfg;
  uint64_t n = c->tokens;
  if (level == TG_STRICT && n > c->strict_ops * c->wal_every) n = c->strict_ops * c->wal_every;
  char name[64], waldir[4300], prom[4300];
  snprintf(name, sizeof name, "full-stack-%lluth", (unsigned long long)c->wal_every);
  snprintf(waldir, sizeof waldir, "%s/stress-ref-wal", r->dir);
  snprintf(prom, sizeof prom, "%s/stress-metrics.prom", r->dir);
  ts_result *x = ts_result_add(r, "phase", name, level);
  x->ops = n;
  snprintf(x->note, sizeof x->note,
           "in-memory store + separate WAL (%llu records), guardian, metrics file every %llu ms, "
           "tracing 1%%, %u thread(s)",
           (unsigned long long)(n / c->wal_every), (unsigned long long)c->metrics_interval_ms,
           c->threads);
  timed_run tr = {.n = n, .threads = c->threads, .sample_every = c->sample_every,
                  .every = c->wal_every, .tail = wal_sync_tail};
  int rc = 0;
  uint64_t live = 0, rejected = 0, records = 0;
  for (uint64_t round = 0; round < c->rounds && !rc; round++) {
    ts_progress(r, "%s: round %llu/%llu", x->name, (unsigned long long)round + 1,
                (unsigned long long)c->rounds);
    tgp_rmtree(waldir);
    tg_wal_config wc;
    tg_wal_config_init(&wc);
    wc.level = level;
    wc.sync_interval_ms = c->store.wal.sync_interval_ms;
    wc.segment_bytes = c->store.wal.segment_bytes;
    wc.ring_slots = c->store.wal.ring_slots;
    tg_wal *w = NULL;
    tg_store *s = NULL;
    char msg[256] = "";
    rc = tg_wal_open(&w, waldir, &wc, NULL);
    if (!rc) rc = tg_store_open_msg(&s, NULL, &c->store, msg, sizeof msg);
    if (rc) {
      ts_check_add(r, 0, "full stack: open", "%s %s", tg_strerror(rc), msg);
      tg_wal_close(w);
      return 1;
    }
    uint64_t rss0 = 0, rss1 = 0;
    tr.s = s;
    tr.wal = w;
    tr.tail_arg = w;
    int mrc = 0;
    double sec = run_observed(&tr, prom, c->metrics_interval_ms, &mrc, &rss0, &rss1);
    tg_store_stats st;
    tg_store_stats_get(s, &st);
    tg_wal_stats ws;
    tg_wal_stats_get(w, &ws);
    tg_store_close(s);
    int crc = tg_wal_close(w);
    rc = tr.rc ? tr.rc : crc ? crc : mrc;
    if (rc) break;
    ts_keep_round(x, sec);
    live = st.live_tokens;
    rejected = st.quota_rejections;
    records = ws.records;
    double per = live ? (double)(rss1 - rss0) / (double)live : -1;
    if (per >= 0 && (x->rss_per_token < 0 || per < x->rss_per_token)) x->rss_per_token = per;
  }
  tgp_rmtree(waldir);
  ts_latency(r, x, tr.lat, tr.nlat);
  free(tr.lat);
  ts_check_add(r, !rc && live == n && rejected == 0 && records == n / c->wal_every,
               "full stack (every Nth): all created, logged",
               "%llu live of %llu, %llu rejected, %llu WAL records%s%s",
               (unsigned long long)live, (unsigned long long)n, (unsigned long long)rejected,
               (unsigned long long)records, rc ? ", error: " : "", rc ? tg_strerror(rc) : "");
  if (rc) return 0;
  set_ratio(r, x);
  if (x->ratio >= 0) {
    char what[96];
    snprintf(what, sizeof what, "full stack every %lluth @%s / baseline",
             (unsigned long long)c->wal_every, ts_level_name(level));
    ts_figure_add(r, what, x->ratio, "x", level == TG_BALANCED ? "<= 1.10" : "",
                  level == TG_BALANCED ? x->ratio <= 1.10 : -1);
  }
  return 0;
}

/* (b) a WAL record for every token: a durable store, tg_sync at the end,
   against the raw write of the same bytes; then the replay of its log. */
static int full_stack_every_token(ts_run *r, int level) {
  const ts_config *c = r->cfg;
  uint64_t n = c->wal_tokens;
  if (level == TG_STRICT && n > c->strict_ops) n = c->strict_ops;
  char dir[4300], prom[4300];
  snprintf(dir, sizeof dir, "%s/stress-every", r->dir);
  snprintf(prom, sizeof prom, "%s/stress-metrics.prom", r->dir);
  ts_result *ref = ts_result_add(r, "reference",
                                 level == TG_STRICT ? "raw-write+fdatasync-each"
                                                    : "raw-1MiB-writes+fdatasync",
                                 level);
  ts_result *x = ts_result_add(r, "phase", "full-stack-every-token", level);
  ref->ops = x->ops = n;
  snprintf(x->note, sizeof x->note,
           "durable store, every create logged (%llu records, %.1f MB of frames), tg_sync "
           "included, metrics, tracing 1%%, %u thread(s)",
           (unsigned long long)n, (double)n * FRAME_BYTES / 1e6, c->threads);
  tg_store_config sc = durable_cfg(c, level);
  timed_run tr = {.n = n, .threads = c->threads, .sample_every = c->sample_every,
                  .tail = store_sync_tail};
  int rc = 0;
  tg_store_stats last; /* of the last round that succeeded */
  memset(&last, 0, sizeof last);
  for (uint64_t round = 0; round < c->rounds && !rc; round++) {
    ts_progress(r, "%s: round %llu/%llu", x->name, (unsigned long long)round + 1,
                (unsigned long long)c->rounds);
    double rs = level == TG_STRICT ? tgb_raw_sync_each_seconds(r->dir, n, FRAME_BYTES)
                                   : tgb_raw_chunks_seconds(r->dir, n * FRAME_BYTES);
    if (rs > 0) ts_keep_round(ref, rs);
    tgp_rmtree(dir);
    ts_repl_cfg(r, &sc, level); /* a fresh log: a stream of its own */
    tg_store *s = NULL;
    if ((rc = ts_open(r, "full stack every token", &s, dir, &sc))) return 1;
    tr.s = s;
    tr.tail_arg = s;
    int mrc = 0;
    double sec = run_observed(&tr, prom, c->metrics_interval_ms, &mrc, NULL, NULL);
    tg_store_stats st;
    tg_store_stats_get(s, &st);
    int crc = tg_store_close(s);
    rc = tr.rc ? tr.rc : crc ? crc : mrc;
    if (rc) break;
    ts_keep_round(x, sec);
    last = st;
  }
  if (!rc && level != TG_STRICT) {
    double rs = tgb_raw_chunks_seconds(r->dir, n * FRAME_BYTES); /* after as well: the faster counts */
    if (rs > 0) ts_keep_round(ref, rs);
  }
  ts_latency(r, x, tr.lat, tr.nlat);
  free(tr.lat);
  ts_check_add(r,
               !rc && last.live_tokens == n && last.quota_rejections == 0 &&
                   last.last_lsn >= n,
               "full stack (every token): all logged",
               "%llu live of %llu, %llu rejected, last LSN %llu%s%s",
               (unsigned long long)last.live_tokens, (unsigned long long)n,
               (unsigned long long)last.quota_rejections, (unsigned long long)last.last_lsn,
               rc ? ", error: " : "", rc ? tg_strerror(rc) : "");
  if (rc) return 0;
  set_ratio(r, x);
  if (ref->seconds > 0) {
    double q = x->seconds / ref->seconds;
    char what[96];
    snprintf(what, sizeof what, "every-token @%s / %s", ts_level_name(level),
             level == TG_STRICT ? "raw write+fdatasync per record" : "raw 1 MiB writes");
    ts_figure_add(r, what, q, "x", level == TG_BALANCED ? "<= 1.25" : level == TG_STRICT ? "<= 1.00" : "",
                  level == TG_BALANCED ? q <= 1.25 : level == TG_STRICT ? q <= 1.0 : -1);
  }

  /* Replay: reopen the directory the last round left (no checkpoint unless
     checkpoint_bytes was reached), so the whole log is read back. */
  ts_progress(r, "replay@%s: reopening %llu records", ts_level_name(level),
              (unsigned long long)n);
  ts_result *rp = ts_result_add(r, "phase", "replay", level);
  tg_store *s = NULL;
  char msg[256] = "";
  uint64_t t0 = tgp_now_ns();
  rc = tg_store_open_msg(&s, dir, &sc, msg, sizeof msg);
  uint64_t t1 = tgp_now_ns();
  if (rc) {
    ts_check_add(r, 0, "replay: reopen", "%s %s", tg_strerror(rc), msg);
    return 0;
  }
  tg_recovery_info ri;
  tg_store_stats st;
  tg_store_recovery_info(s, &ri);
  tg_store_stats_get(s, &st);
  tg_store_close(s);
  rp->ops = ri.replayed_records;
  ts_keep_round(rp, (double)ri.replay_ns / 1e9);
  snprintf(rp->note, sizeof rp->note,
           "reopen of the every-token directory: %llu records replayed in %.1f ms, "
           "checkpoint load %.1f ms (%llu tokens), whole open %.1f ms",
           (unsigned long long)ri.replayed_records, (double)ri.replay_ns / 1e6,
           (double)ri.load_ns / 1e6, (unsigned long long)ri.checkpoint_tokens,
           (double)(t1 - t0) / 1e6);
  ts_check_add(r, st.live_tokens == n, "replay: every token back",
               "%llu live after reopen, %llu expected", (unsigned long long)st.live_tokens,
               (unsigned long long)n);
  if (rp->seconds > 0 && rp->ops) {
    char what[96];
    snprintf(what, sizeof what, "replay rate @%s (%llu records)", ts_level_name(level),
             (unsigned long long)rp->ops);
    double rate = (double)rp->ops / rp->seconds / 1e6;
    /* Below a million records the fixed cost of opening dominates: shown,
       not judged. */
    int judged = rp->ops >= 1000000;
    ts_figure_add(r, what, rate, "M rec/s", judged ? ">= 10" : "(too few)",
                  judged ? rate >= 10 : -1);
  }
  return 0;
}

int ts_phase_full_stack(ts_run *r, int level) {
  /* The every-Nth variant logs through a tg_wal of its own, and only a
     store replicates: at REPLICATED the every-token variant is the run. */
  if (level == TG_REPLICATED) return full_stack_every_token(r, level);
  int e = full_stack_every_nth(r, level);
  if (e) return e;
  return full_stack_every_token(r, level);
}

/* ---- tracing overhead ---- */

int ts_phase_tracing(ts_run *r) {
  const ts_config *c = r->cfg;
  static const double rates[3] = {0, 0.01, 1};
  static const char *const names[3] = {"trace-rate-0", "trace-rate-0.01", "trace-rate-1"};
  uint64_t n = c->trace_tokens;
  ts_result *x[3];
  timed_run tr[3];
  for (int v = 0; v < 3; v++) {
    x[v] = ts_result_add(r, "phase", names[v], -1);
    x[v]->ops = n;
    tr[v] = (timed_run){.n = n, .threads = 1, .sample_every = c->sample_every};
  }
  snprintf(x[1]->note, sizeof x[1]->note,
           "token creation with 1%% of token.create spans sampled (in memory, 1 thread)");
  int rc = 0;
  /* Interleaved, so drift on the shared machine hits every rate alike. */
  for (uint64_t round = 0; round < c->rounds && !rc; round++)
    for (int v = 0; v < 3 && !rc; v++) {
      ts_progress(r, "tracing: rate %g, round %llu/%llu", rates[v],
                  (unsigned long long)round + 1, (unsigned long long)c->rounds);
      tg_store *s = NULL;
      rc = tg_store_open(&s, NULL, &c->store);
      if (rc) break;
      tg_trace_set_rate(rates[v]);
      tr[v].s = s;
      double sec = run_timed(&tr[v]);
      tg_trace_set_rate(0);
      tg_store_close(s);
      rc = tr[v].rc;
      if (!rc) ts_keep_round(x[v], sec);
    }
  for (int v = 0; v < 3; v++) {
    ts_latency(r, x[v], tr[v].lat, tr[v].nlat);
    free(tr[v].lat);
    set_ratio(r, x[v]);
  }
  ts_check_add(r, !rc, "tracing: every create succeeds", "%s", rc ? tg_strerror(rc) : "yes");
  if (rc) return 0;
  double q = x[1]->seconds / x[0]->seconds;
  ts_figure_add(r, "tracing 1% / tracing off (token creation)", q, "x", "<= 1.05", q <= 1.05);
  double span = (x[2]->seconds - x[0]->seconds) * 1e9 / (double)n;
  ts_figure_add(r, "sampled span cost (rate 1 - rate 0, per create)", span, "ns", "<= 60",
                span <= 60);
  return 0;
}
