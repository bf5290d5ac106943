/*
 * The metrics registry and its Prometheus text exposition (format 0.0.4).
 *
 * Counters and gauge deltas live in per-thread shards: the owning thread
 * adds with a relaxed load + store (it is the only writer, so no update is
 * lost and no locked instruction is needed); the writer sums the shards
 * under `lock`. A thread's shard is folded into `retired` when the thread
 * exits. Histograms are observed off the hot path (per fdatasync), so they
 * use relaxed atomic adds on global buckets; `_count` is exported as the
 * sum of the buckets, so it always equals the `+Inf` bucket.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tokengraph/version.h"
#include "trace/trace_internal.h"

enum { GAUGE, COUNTER, HISTOGRAM };

#define NS_PER_S 1000000000u
#define MAX_BOUNDS 24

static const uint64_t fdatasync_bounds_ns[] = {
  10000, 25000, 50000, 100000, 250000, 500000,                 /* 10 us .. 0.5 ms */
  1000000, 2500000, 5000000, 10000000, 25000000, 50000000,     /* 1 ms .. 50 ms */
  100000000, 250000000, 500000000, 1000000000, 2500000000u};   /* .. 2.5 s */
static const uint64_t records_per_sync_bounds[] = {
  1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096,
  8192, 16384, 32768, 65536, 131072, 262144, 524288, 1048576};

typedef struct metric_def {
  const char *name;       /* full exported name */
  int type;               /* GAUGE, COUNTER, HISTOGRAM */
  uint64_t scale;         /* exported value = stored / scale (1 or ns->s) */
  const uint64_t *bounds; /* histogram upper bounds, stored units */
  int nbounds;
  const char *help;
} metric_def;

#define B(a) a, (int)(sizeof a / sizeof a[0])
static const metric_def defs[TG_METRIC_COUNT] = {
  [TG_METRIC_TOKENS_LIVE] = {"tokengraph_tokens_live", GAUGE, 1, NULL, 0,
    "Tokens currently live."},
  [TG_METRIC_CONNECTIONS_LIVE] = {"tokengraph_connections_live", GAUGE, 1, NULL, 0,
    "Connections currently live."},
  [TG_METRIC_MEMORY_BYTES] = {"tokengraph_memory_bytes", GAUGE, 1, NULL, 0,
    "Memory counted against the memory quota, in bytes."},
  [TG_METRIC_WAL_QUEUE_DEPTH] = {"tokengraph_wal_queue_depth", GAUGE, 1, NULL, 0,
    "Records queued for the WAL writer and not yet written."},
  [TG_METRIC_TOKENS_CREATED] = {"tokengraph_tokens_created_total", COUNTER, 1, NULL, 0,
    "Tokens created."},
  [TG_METRIC_CONNECTIONS_CREATED] = {"tokengraph_connections_created_total", COUNTER, 1, NULL, 0,
    "Connections created."},
  [TG_METRIC_QUOTA_CHECKS] = {"tokengraph_quota_checks_total", COUNTER, 1, NULL, 0,
    "Creates and connects checked against the quotas."},
  [TG_METRIC_QUOTA_REJECTIONS] = {"tokengraph_quota_rejections_total", COUNTER, 1, NULL, 0,
    "Creates and connects rejected with TG_EQUOTA."},
  [TG_METRIC_EVICTIONS] = {"tokengraph_evictions_total", COUNTER, 1, NULL, 0,
    "Tokens evicted under memory pressure."},
  [TG_METRIC_WAL_RECORDS] = {"tokengraph_wal_records_total", COUNTER, 1, NULL, 0,
    "Records appended to the write-ahead log."},
  [TG_METRIC_WAL_BYTES] = {"tokengraph_wal_bytes_total", COUNTER, 1, NULL, 0,
    "Bytes written to the write-ahead log, framing included."},
  [TG_METRIC_WAL_BATCHES] = {"tokengraph_wal_batches_total", COUNTER, 1, NULL, 0,
    "Batched writes issued by the WAL writer."},
  [TG_METRIC_WAL_FDATASYNCS] = {"tokengraph_wal_fdatasyncs_total", COUNTER, 1, NULL, 0,
    "fdatasync calls made by the WAL writer."},
  [TG_METRIC_WAL_FDATASYNC_FAILURES] = {"tokengraph_wal_fdatasync_failures_total", COUNTER, 1,
    NULL, 0, "fdatasync calls that failed (each puts the WAL in its failed state)."},
  [TG_METRIC_WAL_SEGMENT_SWITCHES] = {"tokengraph_wal_segment_switches_total", COUNTER, 1, NULL, 0,
    "WAL segments started."},
  [TG_METRIC_WAL_BACKPRESSURE_NS] = {"tokengraph_wal_backpressure_seconds_total", COUNTER,
    NS_PER_S, NULL, 0, "Time callers spent blocked on a full WAL queue, in seconds."},
  [TG_METRIC_CHECKPOINTS] = {"tokengraph_checkpoints_total", COUNTER, 1, NULL, 0,
    "Checkpoints completed."},
  [TG_METRIC_REPLAYED_RECORDS] = {"tokengraph_replayed_records_total", COUNTER, 1, NULL, 0,
    "WAL records replayed by recovery."},
  [TG_METRIC_TRACE_SPANS_SAMPLED] = {"tokengraph_trace_spans_sampled_total", COUNTER, 1, NULL, 0,
    "Trace spans sampled and recorded."},
  [TG_METRIC_TRACE_SPANS_DROPPED] = {"tokengraph_trace_spans_dropped_total", COUNTER, 1, NULL, 0,
    "Sampled trace spans lost: overwritten in a full per-thread ring, or no ring."},
  [TG_METRIC_WAL_FDATASYNC_NS] = {"tokengraph_wal_fdatasync_duration_seconds", HISTOGRAM,
    NS_PER_S, B(fdatasync_bounds_ns), "Duration of WAL fdatasync calls, in seconds."},
  [TG_METRIC_WAL_RECORDS_PER_SYNC] = {"tokengraph_wal_records_per_fdatasync", HISTOGRAM, 1,
    B(records_per_sync_bounds), "Records made durable by one WAL fdatasync (group commit)."},
};

#define FIRST_HIST ((int)TG_METRIC_WAL_FDATASYNC_NS)
#define NHIST ((int)TG_METRIC_COUNT - FIRST_HIST)

typedef struct hist {
  uint64_t bucket[MAX_BOUNDS + 1]; /* non-cumulative; last is +Inf */
  uint64_t sum;                    /* stored units */
} hist;

typedef struct shard {
  uint64_t v[TG__METRIC_SLOTS]; /* this thread's adds; see tg_metric_add() */
  struct shard *next;
} shard;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
/* Collectors have their own lock and run without `lock` held: a collector
   may wait for a lock of its program (the store's), whose holder may wait
   for a thread that is about to register its first shard under `lock`
   (a store's WAL writer records a black-box event at a segment switch
   while a create holding the store lock waits for ring space). */
static pthread_mutex_t collector_lock = PTHREAD_MUTEX_INITIALIZER;
static shard *shards;                        /* live threads' shards */
static uint64_t retired[TG__METRIC_SLOTS];   /* exited threads' adds */
static int64_t gauge_base[TG_METRIC_COUNT];  /* tg_metric_set() */
static hist hists[NHIST];
static struct {
  tg_metrics_collector fn;
  void *arg;
} collectors[16];
static pthread_key_t shard_key;
static pthread_once_t shard_once = PTHREAD_ONCE_INIT;

const char *tg_metric_name(tg_metric id) {
  if ((int)id < 0 || id >= TG_METRIC_COUNT) return NULL;
  return defs[id].name;
}

/* ---- shards ------------------------------------------------------------------ */

static void shard_thread_exit(void *p) {
  shard *s = p;
  pthread_mutex_lock(&lock);
  for (int i = 0; i < TG__METRIC_SLOTS; i++) retired[i] += s->v[i];
  for (shard **pp = &shards; *pp; pp = &(*pp)->next) {
    if (*pp == s) {
      *pp = s->next;
      break;
    }
  }
  pthread_mutex_unlock(&lock);
  if (tg__tls.counters == s->v) tg__tls.counters = NULL;
  free(s);
}

static void shard_key_create(void) { pthread_key_create(&shard_key, shard_thread_exit); }

/* If even one small allocation fails, adds go to this shared shard: counts
   may then lose updates under contention, but nothing crashes. */
static uint64_t fallback_shard[TG__METRIC_SLOTS];

uint64_t *tg__metrics_shard_slow(void) {
  shard *s = calloc(1, sizeof *s);
  if (s == NULL) return tg__tls.counters = fallback_shard;
  pthread_once(&shard_once, shard_key_create);
  pthread_setspecific(shard_key, s);
  pthread_mutex_lock(&lock);
  s->next = shards;
  shards = s;
  pthread_mutex_unlock(&lock);
  return tg__tls.counters = s->v;
}

/* Sum of every shard for slot i; lock held. */
static uint64_t slot_total(int i) {
  uint64_t t = retired[i] + __atomic_load_n(&fallback_shard[i], __ATOMIC_RELAXED);
  for (shard *s = shards; s; s = s->next) t += __atomic_load_n(&s->v[i], __ATOMIC_RELAXED);
  return t;
}

void tg__metrics_bb_totals(uint64_t out[TG_BB_TYPE_COUNT]) {
  pthread_mutex_lock(&lock);
  for (int t = 0; t < TG_BB_TYPE_COUNT; t++) out[t] = slot_total(TG__METRIC_SLOT_BB + t);
  pthread_mutex_unlock(&lock);
}

/* ---- gauges and histograms ------------------------------------------------------- */

void tg_metric_set(tg_metric id, int64_t value) {
  if ((int)id < 0 || id >= TG_METRIC_COUNT || defs[id].type != GAUGE) return;
  __atomic_store_n(&gauge_base[id], value, __ATOMIC_RELAXED);
}

void tg_metric_observe(tg_metric id, uint64_t value) {
  if ((int)id < FIRST_HIST || id >= TG_METRIC_COUNT) return;
  const metric_def *d = &defs[id];
  hist *h = &hists[id - FIRST_HIST];
  int b = 0;
  while (b < d->nbounds && value > d->bounds[b]) b++;
  __atomic_fetch_add(&h->bucket[b], 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&h->sum, value, __ATOMIC_RELAXED);
}

/* ---- collectors --------------------------------------------------------------- */

/* Under collector_lock: the slot holding (fn, arg); (NULL, NULL) finds a
   free one. -1 if none. */
static int collector_slot(tg_metrics_collector fn, void *arg) {
  for (size_t i = 0; i < sizeof collectors / sizeof collectors[0]; i++)
    if (collectors[i].fn == fn && collectors[i].arg == arg) return (int)i;
  return -1;
}

int tg_metrics_add_collector(tg_metrics_collector fn, void *arg) {
  if (fn == NULL) return TG_EINVAL;
  pthread_mutex_lock(&collector_lock);
  int i = collector_slot(NULL, NULL);
  if (i >= 0) {
    collectors[i].fn = fn;
    collectors[i].arg = arg;
  }
  pthread_mutex_unlock(&collector_lock);
  return i >= 0 ? 0 : TG_ENOMEM;
}

int tg_metrics_remove_collector(tg_metrics_collector fn, void *arg) {
  pthread_mutex_lock(&collector_lock);
  int i = fn ? collector_slot(fn, arg) : -1;
  if (i >= 0) {
    collectors[i].fn = NULL;
    collectors[i].arg = NULL;
  }
  pthread_mutex_unlock(&collector_lock);
  return i >= 0 ? 0 : TG_ENOTFOUND;
}

/* ---- snapshot ------------------------------------------------------------------ */

typedef struct snapshot {
  tg_metric_values v;                 /* counters, gauges; hist counts */
  uint64_t buckets[NHIST][MAX_BOUNDS + 1];
  uint64_t sums[NHIST];
  uint64_t bb[TG_BB_TYPE_COUNT];
} snapshot;

static void take_snapshot(snapshot *s) {
  memset(s, 0, sizeof *s);
  tg_trace_stats ts;
  tg_trace_stats_get(&ts); /* takes the trace registry lock: not nested */
  pthread_mutex_lock(&lock);
  for (int i = 0; i < FIRST_HIST; i++) {
    s->v.v[i] = slot_total(i);
    if (defs[i].type == GAUGE)
      s->v.v[i] += (uint64_t)__atomic_load_n(&gauge_base[i], __ATOMIC_RELAXED);
  }
  for (int t = 0; t < TG_BB_TYPE_COUNT; t++) s->bb[t] = slot_total(TG__METRIC_SLOT_BB + t);
  pthread_mutex_unlock(&lock);
  pthread_mutex_lock(&collector_lock);
  for (size_t i = 0; i < sizeof collectors / sizeof collectors[0]; i++)
    if (collectors[i].fn) collectors[i].fn(collectors[i].arg, &s->v);
  pthread_mutex_unlock(&collector_lock);

  s->v.v[TG_METRIC_TRACE_SPANS_SAMPLED] += ts.sampled;
  s->v.v[TG_METRIC_TRACE_SPANS_DROPPED] += ts.dropped;
  for (int h = 0; h < NHIST; h++) {
    uint64_t n = 0;
    for (int b = 0; b <= defs[FIRST_HIST + h].nbounds; b++) {
      s->buckets[h][b] = __atomic_load_n(&hists[h].bucket[b], __ATOMIC_RELAXED);
      n += s->buckets[h][b];
    }
    s->sums[h] = __atomic_load_n(&hists[h].sum, __ATOMIC_RELAXED);
    s->v.v[FIRST_HIST + h] = n;
  }
}

void tg_metrics_snapshot(tg_metric_values *out) {
  snapshot *s = malloc(sizeof *s);
  if (s == NULL) {
    memset(out, 0, sizeof *out);
    return;
  }
  take_snapshot(s);
  *out = s->v;
  free(s);
}

/* ---- exposition -------------------------------------------------------------------- */

static void print_scaled(FILE *f, uint64_t v, uint64_t scale) {
  if (scale == 1)
    fprintf(f, "%llu", (unsigned long long)v);
  else
    fprintf(f, "%llu.%09llu", (unsigned long long)(v / scale),
            (unsigned long long)(v % scale)); /* scale is 1e9 */
}

static void print_le(FILE *f, uint64_t bound, uint64_t scale) {
  if (scale == 1)
    fprintf(f, "%llu", (unsigned long long)bound);
  else
    fprintf(f, "%.9g", (double)bound / (double)scale);
}

static int metrics_fill(FILE *f, void *arg) {
  (void)arg;
  snapshot *s = malloc(sizeof *s);
  if (s == NULL) return TG_ENOMEM;
  take_snapshot(s);

  for (int i = 0; i < TG_METRIC_COUNT; i++) {
    const metric_def *d = &defs[i];
    static const char *tnames[] = {"gauge", "counter", "histogram"};
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", d->name, d->help, d->name, tnames[d->type]);
    if (d->type == GAUGE) {
      fprintf(f, "%s %lld\n", d->name, (long long)(int64_t)s->v.v[i]);
    } else if (d->type == COUNTER) {
      fprintf(f, "%s ", d->name);
      print_scaled(f, s->v.v[i], d->scale);
      fputc('\n', f);
    } else {
      int h = i - FIRST_HIST;
      uint64_t cum = 0;
      for (int b = 0; b < d->nbounds; b++) {
        cum += s->buckets[h][b];
        fprintf(f, "%s_bucket{le=\"", d->name);
        print_le(f, d->bounds[b], d->scale);
        fprintf(f, "\"} %llu\n", (unsigned long long)cum);
      }
      cum += s->buckets[h][d->nbounds];
      fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum ", d->name, (unsigned long long)cum,
              d->name);
      print_scaled(f, s->sums[h], d->scale);
      fprintf(f, "\n%s_count %llu\n", d->name, (unsigned long long)cum);
    }
  }

  fputs("# HELP tokengraph_blackbox_events_total Black-box (flight recorder) events "
        "recorded, by type.\n# TYPE tokengraph_blackbox_events_total counter\n", f);
  for (int t = 1; t < TG_BB_TYPE_COUNT; t++)
    fprintf(f, "tokengraph_blackbox_events_total{type=\"%s\"} %llu\n", tg__bb_type_name(t),
            (unsigned long long)s->bb[t]);

  fprintf(f, "# HELP tokengraph_build_info The tokengraph library version.\n"
             "# TYPE tokengraph_build_info gauge\n"
             "tokengraph_build_info{version=\"%d.%d.%d\"} 1\n",
          TG_VERSION_MAJOR, TG_VERSION_MINOR, TG_VERSION_PATCH);
  free(s);
  return ferror(f) ? -EIO : 0;
}

int tg_metrics_write(FILE *f) { return tg__stream_write(f, metrics_fill, NULL); }

int tg_metrics_write_file(const char *path) {
  return tg__atomic_file_write(path, 0644, metrics_fill, NULL);
}
