/*
 * Internal helpers shared by src/trace: the clock conversion, an
 * async-signal-safe buffered fd writer, and the atomic replacement of the
 * files it writes (through the library's I/O seam, common/io.h, which the
 * tests use to count fsyncs and force failures).
 */
#ifndef TG_TRACE_INTERNAL_H
#define TG_TRACE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "common/path.h" /* tg__split_path */
#include "tokengraph/trace.h"

/* ---- fences ----------------------------------------------------------------
 * The seqlocks need release/acquire fences. GCC refuses them under TSan
 * (-Wtsan); there every access involved is atomic anyway, so a compiler
 * barrier (all an acquire or release fence is on x86-64) keeps the TSan
 * build's race checking intact. */
#if defined(TG_SANITIZE_THREAD) && (defined(__x86_64__) || defined(__i386__))
#define tg__fence_release() __asm__ __volatile__("" ::: "memory")
#define tg__fence_acquire() __asm__ __volatile__("" ::: "memory")
#else
#define tg__fence_release() __atomic_thread_fence(__ATOMIC_RELEASE)
#define tg__fence_acquire() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#endif

/* ---- clock ----------------------------------------------------------------
 * Ticks (TSC) are converted with a line through two (ticks, monotonic ns)
 * points: the anchor taken when the library loads and a fresh one taken at
 * conversion time, at least 10 ms apart (the conversion waits if needed).
 * Everything here is async-signal-safe (clock_gettime only). */
typedef struct tg__clock_map {
  uint64_t tick0, mono0, real0; /* the load-time anchor */
  double ns_per_tick;           /* slope of the line */
} tg__clock_map;

void tg__clock_map_get(tg__clock_map *m);
uint64_t tg__real_ns(void); /* CLOCK_REALTIME; tg__now_ns() for MONOTONIC */
static inline int64_t tg__ticks_to_rel_ns(const tg__clock_map *m, uint64_t t) {
  return (int64_t)((double)(int64_t)(t - m->tick0) * m->ns_per_tick);
}

/* ---- async-signal-safe output --------------------------------------------- */
typedef struct tg__fdbuf {
  int fd;          /* destination */
  int err;         /* first -errno seen, 0 if none */
  size_t n;        /* bytes buffered */
  char buf[4096];  /* pending output */
} tg__fdbuf;

void tg__fb_init(tg__fdbuf *b, int fd);
void tg__fb_str(tg__fdbuf *b, const char *s);
void tg__fb_json_str(tg__fdbuf *b, const char *s); /* quoted and escaped */
void tg__fb_u64(tg__fdbuf *b, uint64_t v);
void tg__fb_i64(tg__fdbuf *b, int64_t v);
int tg__fb_flush(tg__fdbuf *b); /* writes through the seam; returns b->err */

/* ---- files -------------------------------------------------------------------- */


/* "<base>.tmp.<pid>" into out. Async-signal-safe. 0 or -ENAMETOOLONG. */
int tg__tmp_name(char *out, size_t n, const char *base, long pid);

/*
 * Replace `path` atomically with what fill() writes into a stdio stream:
 * in path's directory (opened once; every name below is relative to it),
 * remove a leftover "<base>.tmp.<pid>", create it with O_EXCL | O_NOFOLLOW
 * and `mode`, fill, fflush, fsync, rename it over <base>, fsync the
 * directory. A symbolic link at either name is replaced, never followed.
 * 0 or -errno; the temporary file is removed on failure.
 */
int tg__atomic_file_write(const char *path, mode_t mode, int (*fill)(FILE *f, void *arg),
                          void *arg);

/* fill(f, arg) into a stream the caller owns, then fflush it: 0, or the
   first error (fill's, else -errno of the flush). TG_EINVAL for a NULL f. */
int tg__stream_write(FILE *f, int (*fill)(FILE *f, void *arg), void *arg);

/* JSON string (quoted, escaped) to a stdio stream. */
void tg__json_fputs(FILE *f, const char *s);

/* ---- metrics hooks used by trace and blackbox -------------------------------
 * Hidden shard slots after the public ids: one counter per black-box type. */
#define TG__METRIC_SLOT_BB ((int)TG_METRIC_COUNT)
#define TG__METRIC_SLOTS ((int)TG_METRIC_COUNT + (int)TG_BB_TYPE_COUNT)

static inline void tg__metric_slot_add(int slot, uint64_t n) {
  uint64_t *c = tg__tls.counters;
  if (TG__UNLIKELY(c == NULL)) c = tg__metrics_shard_slow();
  __atomic_store_n(&c[slot], __atomic_load_n(&c[slot], __ATOMIC_RELAXED) + n,
                   __ATOMIC_RELAXED);
}

/* Black-box per-type totals (for tokengraph_blackbox_events_total). */
void tg__metrics_bb_totals(uint64_t out[TG_BB_TYPE_COUNT]);
const char *tg__bb_type_name(int type);

#endif
