/*
 * tokengraph observability: sampled tracing spans, a black-box flight
 * recorder and Prometheus metrics. See docs/observability.md.
 *
 * All three are process-wide (one trace, one black box, one metrics
 * registry per process, shared by every tg_store in it) and need no
 * initialisation: the first use sets up what it needs.
 *
 * Cost model (figures from `tg-bench trace` on the reference machine are in
 * docs/observability.md):
 *   - a span that is not sampled costs a thread-local depth check and, for a
 *     root span, one thread-local countdown decrement: no atomics, no clock;
 *   - a sampled span reads the cycle counter twice and writes one 64-byte
 *     record into the calling thread's ring; no lock, no allocation (the
 *     ring is allocated once, on the thread's first sampled span);
 *   - a metric increment is a plain add into the calling thread's counter
 *     shard (relaxed atomic store; the writer sums the shards);
 *   - a black-box event is one relaxed fetch_add on a global index plus a
 *     64-byte store.
 *
 * Threading: every function here may be called from any thread at any time.
 * Spans must be ended on the thread that began them, innermost first.
 */
#ifndef TOKENGRAPH_TRACE_H
#define TOKENGRAPH_TRACE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tokengraph/errors.h"

#ifdef __cplusplus
extern "C" {
#define TG__THREAD_LOCAL thread_local
#else
#define TG__THREAD_LOCAL _Thread_local
#endif

#if defined(__GNUC__)
#define TG__LIKELY(x) __builtin_expect(!!(x), 1)
#define TG__UNLIKELY(x) __builtin_expect(!!(x), 0)
/* initial-exec keeps thread-local access a single %fs-relative load even
   from the shared library (global-dynamic would call __tls_get_addr). */
#define TG__TLS_MODEL __attribute__((tls_model("initial-exec")))
#else
#define TG__LIKELY(x) (x)
#define TG__UNLIKELY(x) (x)
#define TG__TLS_MODEL
#endif

/* ======================================================================
 * Tracing
 * ====================================================================== */

#define TG_SPAN_ATTRS 4 /* numeric attributes per span */

/*
 * Where a span comes from: its name and the names of its attributes, all
 * static strings (only the pointers are stored; they must outlive the
 * process's last tg_trace_write()). Declare one per call site with
 * TG_SPAN_SITE(). A NULL attribute name leaves that attribute out of the
 * export.
 */
typedef struct tg_span_site {
  const char *name;                /* event name in the trace, e.g. "token.create" */
  const char *attr[TG_SPAN_ATTRS]; /* attribute names, NULL = unused */
} tg_span_site;

#define TG_SPAN_SITE(var, name, a0, a1, a2, a3)                               \
  static const tg_span_site var = {name, {a0, a1, a2, a3}}

/*
 * One open span, on the caller's stack. Fill it with tg_span_begin(), set
 * attributes with tg_span_attr(), close it with tg_span_end(). Fields are
 * private; only `sampled` may be read (tg_span_sampled()).
 */
typedef struct tg_span {
  const tg_span_site *site;      /* set only when sampled */
  uint64_t t0;                   /* start, in clock ticks; only when sampled */
  uint64_t attr[TG_SPAN_ATTRS];  /* attribute values; only when sampled */
  int sampled;                   /* non-zero: this span will be recorded */
} tg_span;

/* ---- private: the per-thread state the inline functions below use ----
 * `state` packs what a span touches into one word, so an unsampled span is
 * one load and one store at begin and at end: bits 0-15 the number of open
 * spans (nesting depth, at most 65535), bit 16 whether the current root is
 * sampled, bits 17-63 the roots left until the next sampled one. */
#define TG__DEPTH_MASK 0xFFFFull
#define TG__SAMPLED_BIT (1ull << 16)
#define TG__COUNTDOWN_ONE (1ull << 17)
struct tg__trace_buf;
typedef struct tg__trace_tls {
  uint64_t state;               /* depth | sampled | countdown, see above */
  uint64_t epoch;               /* tg__trace_epoch the countdown was drawn under */
  uint64_t rng;                 /* splitmix64 state, 0 = not seeded yet */
  double inv_log_q;             /* 1 / ln(1 - rate) for that epoch's rate */
  struct tg__trace_buf *buf;    /* this thread's span ring, NULL until first use */
  uint64_t *counters;           /* this thread's metric shard, NULL until first use */
} tg__trace_tls;

TG_API extern TG__THREAD_LOCAL tg__trace_tls tg__tls TG__TLS_MODEL;
TG_API extern uint64_t tg__trace_epoch; /* bumped by tg_trace_set_rate() */
TG_API uint64_t tg__trace_root_slow(tg__trace_tls *t, uint64_t state);
TG_API void tg__span_record(const tg_span *s);
TG_API uint64_t *tg__metrics_shard_slow(void);

/* The trace clock: the x86 time-stamp counter (about 10 ns on the reference
   VM, against 24 ns for clock_gettime), converted to nanoseconds only at
   export. Elsewhere CLOCK_MONOTONIC nanoseconds. */
TG_API uint64_t tg__ticks_fallback(void);
static inline uint64_t tg__ticks(void) {
#if defined(__x86_64__) || defined(__i386__)
  uint32_t lo, hi;
  __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
  return ((uint64_t)hi << 32) | lo;
#else
  return tg__ticks_fallback();
#endif
}

/* ---- spans -------------------------------------------------------------- */

/*
 * Open a span. A root span (no span open on this thread) draws the sampling
 * decision for itself and every span nested in it: children of a sampled
 * root are sampled, children of an unsampled root are not. Spans nest to
 * any depth; end them innermost first, on the same thread.
 */
static inline void tg_span_begin(tg_span *s, const tg_span_site *site) {
  tg__trace_tls *t = &tg__tls;
  uint64_t w = t->state;
  if ((w & TG__DEPTH_MASK) == 0) { /* a root: count down, clear the flag */
    w = (w - TG__COUNTDOWN_ONE) & ~TG__SAMPLED_BIT;
    if (TG__UNLIKELY(w < TG__COUNTDOWN_ONE ||
                     t->epoch != __atomic_load_n(&tg__trace_epoch, __ATOMIC_RELAXED)))
      w = tg__trace_root_slow(t, w);
  }
  t->state = w + 1;
  s->sampled = (int)((w >> 16) & 1);
  if (TG__UNLIKELY(s->sampled)) {
    s->site = site;
    for (int i = 0; i < TG_SPAN_ATTRS; i++) s->attr[i] = 0;
    s->t0 = tg__ticks();
  }
}

/* Set attribute i (0 <= i < TG_SPAN_ATTRS) of an open span. Free when the
   span is not sampled. */
static inline void tg_span_attr(tg_span *s, int i, uint64_t value) {
  if (TG__UNLIKELY(s->sampled)) s->attr[i] = value;
}

/* Non-zero when the span will be recorded: use it to skip computing
   expensive attributes. */
static inline int tg_span_sampled(const tg_span *s) { return s->sampled; }

/* Close the span; a sampled span is written to this thread's ring now, as
   one complete event. */
static inline void tg_span_end(tg_span *s) {
  tg__tls.state--;
  if (TG__UNLIKELY(s->sampled)) tg__span_record(s);
}

/*
 * The probability (0..1, default 0.01) that a root span is sampled. Takes
 * effect for every thread at its next root span. 0 samples nothing and 1
 * samples every span, exactly. Errors: TG_EINVAL (outside [0,1] or NaN).
 */
TG_API int tg_trace_set_rate(double rate);
TG_API double tg_trace_get_rate(void);

/*
 * Capacity, in spans, of per-thread rings created from now on (rounded up
 * to a power of two, at least 64; default 8192, i.e. 512 KiB per tracing
 * thread). When a ring is full the oldest spans are overwritten and counted
 * as dropped. Errors: TG_EINVAL (0 or above 2^26).
 */
TG_API int tg_trace_set_buffer_spans(size_t spans);

/* Name the calling thread in exported traces (copied, up to 31 bytes).
   Errors: TG_EINVAL (NULL), TG_ENOMEM. */
TG_API int tg_trace_set_thread_name(const char *name);

/*
 * Write every span still held in the per-thread rings to `path` in the
 * Chrome trace event JSON format (open in https://ui.perfetto.dev or
 * chrome://tracing). Each span is one complete ("X") event, so the file is
 * valid however the rings wrapped. Threads keep tracing while this runs;
 * spans written concurrently may or may not appear. The file (mode 0644)
 * is replaced atomically as tg_metrics_write_file() says. Returns 0 or
 * -errno.
 */
TG_API int tg_trace_write(const char *path);
/* Same, to an open stream (not closed; not flushed beyond fflush()). */
TG_API int tg_trace_write_fp(FILE *f);

/* Forget every span recorded so far (the rings stay allocated). */
TG_API void tg_trace_reset(void);

/* Spans recorded since start (or the last reset), and of those the ones
   overwritten before export or lost because no ring could be allocated. */
typedef struct tg_trace_stats {
  uint64_t sampled;
  uint64_t dropped;
  uint64_t buffers; /* per-thread rings allocated */
} tg_trace_stats;
TG_API void tg_trace_stats_get(tg_trace_stats *out);

/* ======================================================================
 * Black box (flight recorder)
 * ====================================================================== */

/*
 * The black-box schema, one line per event type:
 *   XX(ENUM, json_name, label0, label1, label2, label3)
 * gives the enum (TG_BB_<ENUM>), the type name in the JSON dump and the
 * names of the four arguments there; a NULL label leaves that argument out
 * of the dump (record 0 for it). docs/observability.md says when each event
 * is recorded; test_trace checks that table against this map and provokes
 * every event to check its arguments. The values are part of the ABI: add
 * a type at the end of the map only.
 *
 * What the arguments hold (LSNs are WAL log sequence numbers):
 *   open               durability: enum tg_wal_level, UINT64_MAX for a
 *                      store without a directory; the tokens, connections
 *                      and last LSN it opened with
 *   close              the same counts at close; clean: 1 if the close
 *                      returned 0
 *   quota_rejection    quota: enum tg_bb_quota; value: what the call would
 *                      have brought the count (tokens, connections, bytes of
 *                      memory, a token's degree) to; limit: the quota;
 *                      token_id: for the degree quota the token whose degree
 *                      is full, for a connect the connection's from token,
 *                      for a create 0
 *   eviction           tokens evicted and bytes freed by one cleanup pass,
 *                      memory in use after it, the soft limit that started it
 *   wal_segment_switch first LSN of the segment left and of the one begun
 *   fdatasync_failure  the first failure of the log was an fdatasync: the
 *                      errno, the LSN durable before it, the highest LSN
 *                      written, and the tokengraph error the log now returns
 *                      (negated: 30002 TG_ENOSPC, 30003 TG_EIO)
 *   write_failure      the same for any other failed operation of the log
 *                      (write, preallocation, segment creation)
 *   checkpoint         LSN covered, tokens plus connections written, time
 *                      taken, WAL segments deleted after it
 *   recovery_start     LSN the checkpoint covers, WAL segments present:
 *                      replay begins after this
 *   recovery_end       records replayed, last LSN, the byte offset a torn
 *                      tail was cut at (0: none), time to load and replay
 *   backpressure       since the store's previous such event: appends that
 *                      began to wait for space in a full WAL queue, the time
 *                      waited by the waits that ended; records queued when
 *                      it was recorded
 *   signal             the fatal signal, si_addr, si_code (by the handler)
 *   user               the application's own four values
 */
#define TG_BB_MAP(XX)                                                          \
  XX(OPEN, open, "durability", "tokens", "connections", "last_lsn")            \
  XX(CLOSE, close, "tokens", "connections", "last_lsn", "clean")               \
  XX(QUOTA_REJECTION, quota_rejection, "quota", "value", "limit", "token_id")  \
  XX(EVICTION, eviction, "tokens_evicted", "bytes_freed", "memory_after",      \
     "soft_limit")                                                             \
  XX(WAL_SEGMENT_SWITCH, wal_segment_switch, "old_first_lsn",                  \
     "new_first_lsn", NULL, NULL)                                              \
  XX(FDATASYNC_FAILURE, fdatasync_failure, "errno", "durable_lsn",             \
     "written_lsn", "error")                                                   \
  XX(WRITE_FAILURE, write_failure, "errno", "durable_lsn", "written_lsn",      \
     "error")                                                                  \
  XX(CHECKPOINT, checkpoint, "lsn", "records_written", "duration_ns",          \
     "segments_removed")                                                       \
  XX(RECOVERY_START, recovery_start, "checkpoint_lsn", "segments", NULL, NULL) \
  XX(RECOVERY_END, recovery_end, "records_replayed", "last_lsn",               \
     "torn_offset", "duration_ns")                                             \
  XX(BACKPRESSURE, backpressure, "appends_blocked", "wait_ns", "queue_depth",  \
     NULL)                                                                     \
  XX(SIGNAL, signal, "signo", "fault_addr", "si_code", NULL)                   \
  XX(USER, user, "a0", "a1", "a2", "a3")

enum tg_bb_type {
  TG_BB__NONE = 0, /* not an event: type 0 is never recorded */
#define TG__BB_ENUM(e, name, l0, l1, l2, l3) TG_BB_##e,
  TG_BB_MAP(TG__BB_ENUM)
#undef TG__BB_ENUM
  TG_BB_TYPE_COUNT
};

enum tg_bb_quota { /* argument 0 of TG_BB_QUOTA_REJECTION */
  TG_BB_QUOTA_TOKENS = 1,
  TG_BB_QUOTA_CONNECTIONS = 2,
  TG_BB_QUOTA_MEMORY = 3,
  TG_BB_QUOTA_DEGREE = 4
};

#define TG_BLACKBOX_EVENTS 4096 /* ring capacity: the newest 4096 are kept */

/* Record an event (any thread, a few ns). Unknown types are recorded as
   TG_BB_USER. */
TG_API void tg_blackbox_record(int type, uint64_t a0, uint64_t a1, uint64_t a2,
                               uint64_t a3);

/*
 * Write the ring as JSON (oldest first). The _fd variant uses only
 * async-signal-safe calls (write(2)). The path variant replaces the file
 * atomically: it creates "<path>.tmp.<pid>" with mode 0600 (removing a
 * leftover; O_EXCL | O_NOFOLLOW), fsyncs it and renames it over `path`,
 * then fsyncs the directory; a symbolic link at either name is replaced,
 * never followed. Returns 0 or -errno.
 */
TG_API int tg_blackbox_dump_fd(int fd);
TG_API int tg_blackbox_dump(const char *path);

/*
 * The file the fatal-signal handler writes (at most 4095 bytes, its last
 * component at most 223). The directory part is opened now and kept open
 * (one descriptor, until the next call); the handler writes the dump there
 * as tg_blackbox_dump() does: mode 0600, a temporary name renamed over the
 * last component, neither followed if it is a symbolic link. The store
 * sets it to "<data dir>/blackbox.json" at open. NULL clears it (the
 * handler then writes nothing). Errors: TG_EINVAL (too long, or no file
 * name), -errno (the directory cannot be opened; the previous path stays).
 */
TG_API int tg_blackbox_set_path(const char *path);

/*
 * Install a handler for SIGSEGV, SIGBUS, SIGABRT and SIGFPE that records a
 * TG_BB_SIGNAL event, dumps the ring to the configured path with
 * async-signal-safe calls only (openat/write/fsync/renameat), then restores the
 * disposition that was in place before (the default one unless the program
 * had its own handler) and re-raises the signal, so the process still dies
 * of it (core dump and exit status unchanged). Also gives the calling
 * thread an alternate signal stack if it has none, so a stack overflow on
 * it can still be dumped. Idempotent. Returns 0 or -errno.
 */
TG_API int tg_blackbox_install_signal_handlers(void);
/* Put back the dispositions saved by the install call. */
TG_API void tg_blackbox_remove_signal_handlers(void);

/* ======================================================================
 * Metrics
 * ====================================================================== */

/*
 * Every metric tokengraph exposes. Names, types, units and help texts are
 * in docs/observability.md and in the exposition itself. Values kept in
 * nanoseconds are exported in seconds.
 */
typedef enum tg_metric {
  /* gauges */
  TG_METRIC_TOKENS_LIVE = 0,        /* tokengraph_tokens_live */
  TG_METRIC_CONNECTIONS_LIVE,       /* tokengraph_connections_live */
  TG_METRIC_MEMORY_BYTES,           /* tokengraph_memory_bytes */
  TG_METRIC_WAL_QUEUE_DEPTH,        /* tokengraph_wal_queue_depth */
  /* counters */
  TG_METRIC_TOKENS_CREATED,         /* tokengraph_tokens_created_total */
  TG_METRIC_CONNECTIONS_CREATED,    /* tokengraph_connections_created_total */
  TG_METRIC_QUOTA_CHECKS,           /* tokengraph_quota_checks_total */
  TG_METRIC_QUOTA_REJECTIONS,       /* tokengraph_quota_rejections_total */
  TG_METRIC_EVICTIONS,              /* tokengraph_evictions_total */
  TG_METRIC_WAL_RECORDS,            /* tokengraph_wal_records_total */
  TG_METRIC_WAL_BYTES,              /* tokengraph_wal_bytes_total */
  TG_METRIC_WAL_BATCHES,            /* tokengraph_wal_batches_total */
  TG_METRIC_WAL_FDATASYNCS,         /* tokengraph_wal_fdatasyncs_total */
  TG_METRIC_WAL_FDATASYNC_FAILURES, /* tokengraph_wal_fdatasync_failures_total */
  TG_METRIC_WAL_SEGMENT_SWITCHES,   /* tokengraph_wal_segment_switches_total */
  TG_METRIC_WAL_BACKPRESSURE_NS,    /* tokengraph_wal_backpressure_seconds_total */
  TG_METRIC_CHECKPOINTS,            /* tokengraph_checkpoints_total */
  TG_METRIC_REPLAYED_RECORDS,       /* tokengraph_replayed_records_total */
  TG_METRIC_TRACE_SPANS_SAMPLED,    /* tokengraph_trace_spans_sampled_total (own) */
  TG_METRIC_TRACE_SPANS_DROPPED,    /* tokengraph_trace_spans_dropped_total (own) */
  /* histograms */
  TG_METRIC_WAL_FDATASYNC_NS,       /* tokengraph_wal_fdatasync_duration_seconds */
  TG_METRIC_WAL_RECORDS_PER_SYNC,   /* tokengraph_wal_records_per_fdatasync */
  TG_METRIC_COUNT
} tg_metric;

/* Add n to a counter, or a signed delta to a gauge (cast to uint64_t), from
   any thread: a plain add into the thread's shard. Only for counter and
   gauge ids. */
static inline void tg_metric_add(tg_metric id, uint64_t n) {
  uint64_t *c = tg__tls.counters;
  if (TG__UNLIKELY(c == NULL)) c = tg__metrics_shard_slow();
  /* Only this thread stores to its shard, so load+store is not a lost
     update; relaxed atomics make the writer's concurrent read defined. */
  __atomic_store_n(&c[id], __atomic_load_n(&c[id], __ATOMIC_RELAXED) + n,
                   __ATOMIC_RELAXED);
}
static inline void tg_metric_inc(tg_metric id) { tg_metric_add(id, 1); }

/* Set a gauge's base value (the exported value is base + the deltas added
   with tg_metric_add() + collector contributions). Gauge ids only. */
TG_API void tg_metric_set(tg_metric id, int64_t value);

/* Record one observation in a histogram (a relaxed atomic add on the
   bucket, count and sum). Nanoseconds for *_NS histograms. Histogram ids
   only. */
TG_API void tg_metric_observe(tg_metric id, uint64_t value);

/*
 * Values in the base unit of each metric (nanoseconds for *_NS), indexed by
 * tg_metric; histogram entries hold the observation count.
 */
typedef struct tg_metric_values {
  uint64_t v[TG_METRIC_COUNT]; /* gauges: int64_t stored as uint64_t */
} tg_metric_values;

/*
 * A collector supplies counter and gauge values the program already keeps
 * (the store's own counters), so the hot path need not count twice. It is
 * called at every tg_metrics_write()/tg_metrics_snapshot() with the
 * registry lock held; it ADDS its values to out->v[id] (so two stores each
 * add their own) and must not call tg_metrics_* functions. Histogram
 * entries are ignored.
 */
typedef void (*tg_metrics_collector)(void *arg, tg_metric_values *out);

/* Register a collector (at most 16). Errors: TG_EINVAL, TG_ENOMEM (full). */
TG_API int tg_metrics_add_collector(tg_metrics_collector fn, void *arg);
/* Unregister; once this returns the collector is not running and will not
   run again. Errors: TG_ENOTFOUND. */
TG_API int tg_metrics_remove_collector(tg_metrics_collector fn, void *arg);

/* Current values (shards + collectors), as tg_metrics_write() would print. */
TG_API void tg_metrics_snapshot(tg_metric_values *out);

/* The exported name of a metric ("tokengraph_wal_records_total"); NULL for
   an unknown id. Static. */
TG_API const char *tg_metric_name(tg_metric id);

/*
 * Write every metric in the Prometheus text exposition format 0.0.4
 * (# HELP, # TYPE, samples). Returns 0 or -errno (the stream's error).
 */
TG_API int tg_metrics_write(FILE *f);

/*
 * Write the exposition to `path` atomically, for node_exporter's textfile
 * collector: write "<path>.tmp.<pid>" (mode 0644, created with O_EXCL |
 * O_NOFOLLOW after removing a leftover), fsync it, rename it over `path`,
 * fsync the directory; a symbolic link at either name is replaced, never
 * followed. A reader sees the old file or the new one, never a partial one.
 * Name the file *.prom; the temporary name does not match.
 * Returns 0 or -errno (the temporary file is removed on failure).
 */
TG_API int tg_metrics_write_file(const char *path);

#ifdef __cplusplus
}
#endif
#endif /* TOKENGRAPH_TRACE_H */
