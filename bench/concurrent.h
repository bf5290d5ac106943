/*
 * The concurrency driver shared by tg-bench concurrent and tg-stress's
 * concurrent-recall phase: writer threads creating tokens and connections
 * at full rate, reader threads reading at the same time, optionally one
 * checkpoint running, every call timed (one cycle-counter read per call:
 * the time between two calls' ends, so a stall anywhere shows). Public API
 * only.
 */
#ifndef TG_BENCH_CONCURRENT_H
#define TG_BENCH_CONCURRENT_H

#include <stdint.h>

#include "tokengraph/tokengraph.h"

/* Log-linear histogram of durations in ticks: 16 buckets per power of two
   (about 6% resolution), and the exact maximum. */
#define TGC_BUCKETS (64 * 16)
typedef struct tgc_hist {
  uint64_t b[TGC_BUCKETS];
  uint64_t n, max;
} tgc_hist;

/* Value at quantile q in [0,1] (bucket upper bound), in nanoseconds. */
double tgc_hist_quantile_ns(const tgc_hist *h, double q, double ns_per_tick);

/* How many durations were at least min_ns, and their sum in nanoseconds
   (each counted at its bucket's upper bound, the maximum exactly). */
uint64_t tgc_hist_over(const tgc_hist *h, double min_ns, double ns_per_tick, double *sum_ns);

enum tgc_read { TGC_READ_GET, TGC_READ_EDGES };
enum tgc_write { TGC_WRITE_CREATE, TGC_WRITE_UPDATE };

typedef struct tgc_phase {
  tg_store *s;
  unsigned writers, readers;
  uint64_t ops;            /* per writer; 0: until the checkpoint ends or
                              duration_ns passed */
  uint64_t duration_ns;    /* with ops == 0 and no checkpoint */
  int checkpoint;          /* one tg_checkpoint() in its own thread; the
                              phase lasts until it returns */
  int read;                /* enum tgc_read */
  uint32_t connect_every;  /* a writer connects its new token to an earlier
                              one every this many creates (0: never) */
  int write;               /* enum tgc_write: create tokens (and connect),
                              or update random existing ones (the store
                              does not grow: for open-ended phases) */
} tgc_phase;

typedef struct tgc_result {
  double seconds;               /* the writers' time (or the phase's) */
  uint64_t writer_ops, reader_ops;
  double writer_cpu_seconds;    /* CPU time the writer threads used, summed
                                   (CLOCK_THREAD_CPUTIME_ID): with the wall
                                   time it tells a slowdown by interference
                                   (more CPU per call) from one by a busy
                                   machine (less CPU per second) */
  double reader_cpu_seconds;
  uint64_t reader_vcsw, reader_ivcsw; /* the same for the readers */
  uint64_t writer_vcsw, writer_ivcsw; /* the writers' voluntary (they
                                   blocked) and involuntary (preempted)
                                   context switches */  tgc_hist w, r;                /* per call, merged over threads */
  int checkpoint_rc;            /* the checkpoint's result */
  double checkpoint_seconds;
  int error;                    /* a call failed: its code (message said) */
} tgc_result;

/* Run one phase; 0 or the first error (also in out->error). */
int tgc_run(const tgc_phase *p, tgc_result *out);

#endif
