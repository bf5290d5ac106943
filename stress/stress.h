/*
 * tg-stress internals: the configuration read from the [stress] section, the
 * results each phase hands to the report, and the small helpers the phases
 * share. tg-stress uses only the public headers of tokengraph.
 */
#ifndef TG_STRESS_H
#define TG_STRESS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tg_progutil.h"
#include "tokengraph/tokengraph.h"

#define TS_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* Phases, enabled by name in `phases = ...`. */
enum ts_phase_bit {
  TS_BASELINE = 1u << 0,   /* token creation, in memory, guardian inline */
  TS_FULL_STACK = 1u << 1, /* guardian + WAL + metrics + tracing at 1% */
  TS_CRASH = 1u << 2,      /* fork, SIGKILL, reopen, check acknowledged ops */
  TS_TRACING = 1u << 3,    /* rate 0 vs 0.01 vs 1 */
  TS_QUOTA = 1u << 4,      /* create past max_tokens: exact rejections */
  TS_PRESSURE = 1u << 5,   /* eviction under memory pressure */
  TS_BACKPRESSURE = 1u << 6, /* small WAL ring, nonblocking and blocking */
  TS_CONC_RECALL = 1u << 7  /* writers alone, then with edge-walking readers */
};

#define TS_MAX_ROUNDS 20
#define TS_MAX_THREADS 64

typedef struct ts_config {
  char path[4096];           /* the file it was loaded from */
  tg_store_config store;     /* [guardian] and [wal] */
  unsigned phases;           /* enum ts_phase_bit */
  uint64_t tokens;           /* baseline, full stack every-1000th, tracing */
  uint64_t rounds;           /* repeat timed phases, keep the best */
  uint32_t threads;          /* writer threads of the full-stack phase */
  uint32_t sample_every;     /* time one op in this many (power of two) */
  int levels[4];             /* durability levels of the durable phases */
  int nlevels;
  uint64_t wal_every;        /* reference variant: one WAL record per N tokens */
  uint64_t wal_tokens;       /* every-token variant: tokens (= records) */
  uint64_t strict_ops;       /* bound on synced ops of any STRICT phase */
  uint64_t metrics_interval_ms; /* metrics file rewritten this often */
  uint64_t crash_ops;        /* acknowledged ops before the child is killed */
  uint64_t trace_tokens;     /* tokens per tracing variant */
  uint64_t quota_tokens;     /* max_tokens of the exhaustion phase */
  uint64_t quota_overflow;   /* creates attempted past it */
  uint64_t pressure_memory_bytes; /* max_memory_bytes of the pressure phase */
  uint64_t pressure_tokens;  /* creates in the pressure phase */
  uint64_t persistent_every; /* every Nth token there is PERSISTENT */
  uint32_t backpressure_ring; /* ring_slots of the backpressure phase */
  uint64_t backpressure_ops; /* creates per backpressure mode */
  uint64_t conc_writers;     /* concurrent-recall: writer threads */
  uint64_t conc_readers;     /* concurrent-recall: reader threads */
  uint64_t conc_ops;         /* concurrent-recall: creates per writer per
                                half */
  char nats_url[512];        /* replicated phases: the NATS server(s) */
  char repl_name[48];        /* replicated phases: prefix of the stream
                                names (one stream per store opened) */
} ts_config;

/* One row of the report. */
typedef struct ts_result {
  char name[64];
  const char *kind;          /* "phase" or "reference" */
  int level;                 /* durability level, -1 when not durable */
  uint64_t ops;
  int nrounds;
  double round_sec[TS_MAX_ROUNDS]; /* every round, for the JSONL file */
  double seconds;            /* best round */
  int per_op_ratio;          /* 1: ratio_to_baseline compares time per op */
  double ratio;              /* to the baseline, < 0 when not applicable */
  int have_lat;
  uint64_t lat_samples;
  double p50, p95, p99, p999; /* ns */
  double rss_per_token;      /* < 0: not measured */
  char note[256];
} ts_result;

/* A performance figure against its docs/design.md target (never fails a run). */
typedef struct ts_figure {
  char what[96];
  double value;
  char unit[16];
  char target[24];
  int met;                   /* 1 met, 0 missed, -1 no target */
} ts_figure;

/* A functional check: failing one makes the run fail. */
typedef struct ts_check {
  char what[96];
  int pass;
  char detail[256];
} ts_check;

typedef struct ts_run {
  const ts_config *cfg;
  const char *dir;           /* working directory of durable phases */
  int progress;              /* stderr is a terminal */
  double ns_per_tick;
  ts_result res[64];
  int nres;
  ts_figure fig[32];
  int nfig;
  ts_check chk[64];
  int nchk;
  double baseline_ns_per_op; /* 0 until the baseline ran */
  char skipped[512];         /* why the replicated phases did not run ("" ran
                                or none configured) */
  unsigned repl_seq;         /* stream names handed out so far */
  char repl_names[32][96];   /* the names (a store config points at one) */
} ts_run;

/* ---- helpers (tg-stress.c; clocks, RSS and tgp_rmtree from tg_progutil.h) ---- */
const char *ts_level_name(int level);
void ts_progress(ts_run *r, const char *fmt, ...) TS_PRINTF(2, 3);
ts_result *ts_result_add(ts_run *r, const char *kind, const char *name, int level);
void ts_figure_add(ts_run *r, const char *what, double value, const char *unit,
                   const char *target, int met);
int ts_check_add(ts_run *r, int pass, const char *what, const char *fmt, ...)
    TS_PRINTF(4, 5);
/* tg_store_open_msg() that records a failed check "<what>: open" with the
   store's message when it fails. Returns its result. */
int ts_open(ts_run *r, const char *what, tg_store **s, const char *dir,
            const tg_store_config *cfg);
/* At TG_REPLICATED, point sc at the configured server with a stream name
   of its own (repl_name-PID-N: a new store's log cannot continue another
   store's stream, the open would be fenced). Other levels: unchanged. The
   strings live in r until the run ends. */
void ts_repl_cfg(ts_run *r, tg_store_config *sc, int level);
/* Record one round's seconds; the best (lowest) is the result. */
void ts_keep_round(ts_result *x, double sec);
/* Latency samples (ticks) to percentiles in ns, stored in *res. Sorts v. */
void ts_latency(ts_run *r, ts_result *res, uint64_t *v, size_t n);

/* Gap to the next timed operation: uniform in [1, 2 * every], so about one
   operation in `every` is timed, at irregular gaps. A fixed stride would
   alias with periodic events (a 2 MiB arena chunk is taken into use every
   32,768 tokens, a multiple of 64) and time every one of them. */
static inline uint32_t ts_gap(uint64_t *rng, uint32_t every) {
  if (every <= 1) return 1;
  uint64_t x = *rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  *rng = x;
  return 1 + (uint32_t)(x & (2u * every - 1));
}

/* Room for the samples of n operations. */
static inline size_t ts_sample_cap(uint64_t n, uint32_t every) {
  return (size_t)(n / every + n / every / 8 + 64);
}

/* n zeroed bytes; out of memory ends the run with status 70 (EX_SOFTWARE),
   as every phase treats it. */
void *ts_xcalloc(size_t n);

/* Start the sampling of a loop of n operations that times one in about
   `every`: *lat gets room for the samples (*cap of them), *rng the gap
   generator's seed. Returns the gap to the first timed operation. */
static inline uint32_t ts_sampling_start(uint64_t n, uint32_t every, uint64_t **lat,
                                         size_t *cap, uint64_t *rng) {
  *cap = ts_sample_cap(n, every);
  *lat = ts_xcalloc(*cap * sizeof **lat);
  *rng = 0x9E3779B97F4A7C15ull;
  return ts_gap(rng, every);
}

/* The token every phase creates as its i-th: unique content so a recovered
   token can be matched to the operation that created it. */
static inline void ts_fill(tg_token *t, uint64_t i) {
  for (int s = 0; s < TG_SPACES; s++) {
    t->coord[s][0] = (int16_t)(i + (uint64_t)s);
    t->coord[s][1] = 0;
    t->coord[s][2] = 0;
  }
  t->id = 0;
  t->flags = 0;
  t->field_radius = 0;
  t->field_strength = 0;
  t->weight = (float)(i & 1023);
  t->timestamp = (uint32_t)(i + 1);
}

/* ---- phases (phases.c, phase_crash.c, quota.c) ---- */
int ts_phase_baseline(ts_run *r);
int ts_phase_full_stack(ts_run *r, int level);
int ts_phase_crash(ts_run *r, int level);
int ts_phase_tracing(ts_run *r);
int ts_phase_quota(ts_run *r);
int ts_phase_pressure(ts_run *r);
int ts_phase_backpressure(ts_run *r, int level);
int ts_phase_concurrent(ts_run *r);

#endif
