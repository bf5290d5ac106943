/*
 * tg-bench wal: append N records with 64-byte payloads through the WAL and
 * compare with the raw reference measured in the same run on the same disk:
 *  - chunks: the same bytes written in 1 MiB chunks, one fdatasync per chunk
 *    (the reference for BALANCED and RELAXED; run before and after the WAL,
 *    the faster run counts);
 *  - sync-each: one 80-byte write + fdatasync per record (the reference for
 *    STRICT: the rate a synchronous log reaches).
 * The WAL's time runs from the first append until tg_wal_sync() has made
 * every record durable, so both sides include their last fdatasync.
 */
#define _XOPEN_SOURCE 700 /* fdatasync; the bench is built without _GNU_SOURCE */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"
#include "raw_ref.h"
#include "tokengraph/wal.h"

#define PAYLOAD 64
#define FRAME 80 /* 16-byte frame header + 64-byte payload (docs/wal-format.md) */

typedef struct worker {
  tg_wal *wal;
  uint64_t count;    /* records this thread appends */
  uint64_t *lat;     /* ticks per append */
  int paced;         /* wait for the writer to drain every `burst` appends */
  uint64_t burst;
  int rc;
  pthread_t th;
} worker;

static pthread_barrier_t start_barrier;

static void wait_drained(tg_wal *w) {
  tg_wal_stats st;
  do {
    tg_wal_stats_get(w, &st);
    if (st.queue_depth) sched_yield();
  } while (st.queue_depth && !st.failed);
}

static void *worker_main(void *arg) {
  worker *k = arg;
  unsigned char payload[PAYLOAD];
  memset(payload, 0xA5, sizeof payload);
  pthread_barrier_wait(&start_barrier);
  for (uint64_t i = 0; i < k->count; i++) {
    memcpy(payload, &i, sizeof i);
    uint64_t t0 = tgp_ticks();
    int rc = tg_wal_append(k->wal, 1, payload, sizeof payload, NULL);
    uint64_t t1 = tgp_ticks();
    k->lat[i] = t1 - t0;
    if (rc) {
      k->rc = rc;
      break;
    }
    if (k->paced && (i + 1) % k->burst == 0) wait_drained(k->wal);
  }
  return NULL;
}

/* The process's CPU time so far (every thread) in ns, and its context
   switches (voluntary and not). */
static double cpu_ns(long *switches) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  *switches = ru.ru_nvcsw + ru.ru_nivcsw;
  return ((double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec) * 1e9 +
         ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) * 1e3;
}

/* Run `threads` appenders over a fresh WAL in dir/wal. Returns seconds;
   cpu (NULL: not wanted) gets the CPU time of every thread of the process
   (appenders, the WAL's writer and sync threads) per record while timed,
   and switches the context switches per 1,000 records. */
static double run_wal(const char *dir, int level, int threads, uint64_t count, int paced,
                      uint64_t **lat_out, uint64_t *nlat, tg_wal_stats *st, double *replay_rps,
                      double *cpu, double *switches) {
  char wdir[4200];
  snprintf(wdir, sizeof wdir, "%s/wal%s", dir, paced ? "-paced" : "");
  tg_wal_config c;
  tg_wal_config_init(&c);
  c.level = level;
  tg_wal *w = NULL;
  int rc = tg_wal_open(&w, wdir, &c, NULL);
  if (rc) {
    fprintf(stderr, "tg-bench wal: open %s: %s\n", wdir, tg_strerror(rc));
    return -1;
  }
  uint64_t per = count / (uint64_t)threads;
  uint64_t *lat = calloc(per * (uint64_t)threads + 1, sizeof *lat);
  worker *ws = calloc((size_t)threads, sizeof *ws);
  if (!lat || !ws) {
    fprintf(stderr, "tg-bench wal: out of memory\n");
    exit(70);
  }
  pthread_barrier_init(&start_barrier, NULL, (unsigned)threads + 1);
  for (int i = 0; i < threads; i++) {
    ws[i] = (worker){w, per, lat + (uint64_t)i * per, paced, c.ring_slots / 4, 0, 0};
    pthread_create(&ws[i].th, NULL, worker_main, &ws[i]);
  }
  long sw0 = 0, sw1 = 0;
  pthread_barrier_wait(&start_barrier);
  double c0 = cpu_ns(&sw0);
  uint64_t t0 = tgp_now_ns();
  for (int i = 0; i < threads; i++) pthread_join(ws[i].th, NULL);
  rc = tg_wal_sync(w, 0);
  uint64_t t1 = tgp_now_ns();
  double c1 = cpu_ns(&sw1);
  if (cpu) {
    uint64_t recs = per * (uint64_t)threads;
    double n = (double)(recs ? recs : 1);
    *cpu = (c1 - c0) / n;
    *switches = (double)(sw1 - sw0) * 1000.0 / n;
  }
  for (int i = 0; i < threads; i++)
    if (ws[i].rc) rc = ws[i].rc;
  tg_wal_stats_get(w, st);
  int crc = tg_wal_close(w);
  if (!rc) rc = crc;
  pthread_barrier_destroy(&start_barrier);
  free(ws);
  if (!rc && replay_rps) {
    /* Replay from the page cache: every record read back and checked. */
    tg_wal_reader *r = NULL;
    tg_wal_record rec;
    uint64_t n = 0, r0 = tgp_now_ns();
    if (tg_wal_reader_open(&r, wdir, 0) == 0) {
      while (tg_wal_reader_next(r, &rec) == 1) n++;
      if (tg_wal_reader_end(r)->reason != TG_WAL_END_CLEAN || n != per * (uint64_t)threads) {
        fprintf(stderr, "tg-bench wal: replay read %llu records, ended '%s'\n",
                (unsigned long long)n, tg_wal_end_reason_name(tg_wal_reader_end(r)->reason));
        rc = TG_ECORRUPT;
      }
      tg_wal_reader_close(r);
    }
    *replay_rps = (double)n / ((double)(tgp_now_ns() - r0) / 1e9);
  }
  tgp_rmtree(wdir);
  if (rc) {
    fprintf(stderr, "tg-bench wal: %s\n", tg_strerror(rc));
    free(lat);
    return -1;
  }
  *lat_out = lat;
  *nlat = per * (uint64_t)threads;
  return (double)(t1 - t0) / 1e9;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: tg-bench wal [--level strict|balanced|relaxed] [--threads N] [--count N]\n"
          "                    [--dir DIR] [--json]\n\n"
          "Append N records with 64-byte payloads (80-byte frames) through the WAL and\n"
          "compare, in the same run and on the same disk, with the raw reference: the\n"
          "same bytes in 1 MiB chunks with one fdatasync per chunk, and (STRICT) one\n"
          "write+fdatasync per record.\n\n"
          "  --level L    durability level (default balanced)\n"
          "  --threads N  appending threads; N records are split among them (default 1)\n"
          "  --count N    records (default 5M; 2000 per thread for strict)\n"
          "  --dir DIR    put the log in a new directory inside DIR (default: a\n"
          "               temporary directory under /tmp); removed afterwards\n"
          "  --json       one JSON object instead of text\n\n"
          "Append latencies are measured with the cycle counter around each call and\n"
          "include that timer's own cost (printed as timer_ns). The paced figures come\n"
          "from a second run that lets the writer drain every ring_slots/4 appends, so\n"
          "no append waits for queue space (BALANCED/RELAXED only).\n"
          "cpu_ns_per_record is the CPU time of every thread of the process (the\n"
          "appenders, with their timer, and the WAL's writer and sync threads) per\n"
          "record over the timed run, from getrusage; context_switches_per_1k_records\n"
          "counts both kinds of switch over the same span.\n");
}

int tgb_wal(int argc, char **argv) {
  int level = TG_WAL_BALANCED, threads = 1, json = 0;
  uint64_t count = 0;
  const char *parent = "/tmp";
  const char *level_name = NULL;
  uint64_t nthreads = 1;
  const tgb_opt opts[] = {{"--level", NULL, &level_name},
                          {"--threads", &nthreads, NULL},
                          {"--count", &count, NULL},
                          {"--dir", NULL, &parent},
                          {NULL, NULL, NULL}};
  int prc = tgb_parse_args("wal", argc, argv, opts, &json, usage);
  if (prc >= 0) return prc;
  if (!level_name || !strcmp(level_name, "balanced")) level = TG_WAL_BALANCED;
  else if (!strcmp(level_name, "strict")) level = TG_WAL_STRICT;
  else if (!strcmp(level_name, "relaxed")) level = TG_WAL_RELAXED;
  else if (!strcmp(level_name, "replicated")) {
    /* The level ships to the store's stream: a log alone has none. */
    fprintf(stderr, "tg-bench wal: --level replicated needs a store with a stream: "
                    "'tg-bench replicate' measures it against strict, alternated\n");
    return 64;
  } else {
    fprintf(stderr, "tg-bench wal: --level: '%s' is not strict, balanced or relaxed\n", level_name);
    return 64;
  }
  if (nthreads < 1 || nthreads > 1024) {
    fprintf(stderr, "tg-bench wal: --threads must be 1..1024\n");
    return 64;
  }
  threads = (int)nthreads;
  if (!count) count = level == TG_WAL_STRICT ? 2000u * (uint64_t)threads : 5000000u;
  if (count < (uint64_t)threads) count = (uint64_t)threads;
  static const char *names[] = {"strict", "balanced", "relaxed"};

  char dir[4096];
  int mrc = tgp_mkdtemp(dir, sizeof dir, parent, "tg-bench-wal");
  if (mrc) {
    fprintf(stderr, "tg-bench wal: cannot create a directory in %s: %s\n", parent, strerror(-mrc));
    return 74;
  }
  double npt = tgp_ns_per_tick();
  uint64_t tmin = UINT64_MAX;
  for (int i = 0; i < 1000; i++) {
    uint64_t a = tgp_ticks(), b = tgp_ticks();
    if (b - a < tmin) tmin = b - a;
  }

  /* The chunk reference runs before and after the WAL (deleting hundreds
     of MB on this discard-mounted disk slows the writes that follow) and
     the faster of the two counts: the ratio is never flattered. */
  uint64_t est_bytes = (count / (uint64_t)threads) * (uint64_t)threads * FRAME;
  double ref_before_s = level == TG_WAL_STRICT ? -1 : tgb_raw_chunks_seconds(dir, est_bytes);
  tg_wal_stats st;
  uint64_t *lat = NULL, nlat = 0;
  double replay_rps = 0;
  double cpu = 0, switches = 0;
  double secs =
      run_wal(dir, level, threads, count, 0, &lat, &nlat, &st, &replay_rps, &cpu, &switches);
  if (secs < 0) {
    tgp_rmtree(dir);
    return 1;
  }
  uint64_t records = nlat;
  tgp_sort_u64(lat, nlat);
  uint64_t p50 = tgp_quantile_sorted(lat, nlat, 0.50);
  uint64_t p99 = tgp_quantile_sorted(lat, nlat, 0.99);
  uint64_t p999 = tgp_quantile_sorted(lat, nlat, 0.999);
  uint64_t pmax = nlat ? lat[nlat - 1] : 0;
  free(lat);

  /* Paced run: the same appends with no backpressure. */
  uint64_t q50 = 0, q99 = 0, q999 = 0, qmax = 0;
  if (level != TG_WAL_STRICT) {
    tg_wal_stats st2;
    uint64_t pc = count < 2000000u ? count : 2000000u;
    if (run_wal(dir, level, threads, pc, 1, &lat, &nlat, &st2, NULL, NULL, NULL) >= 0) {
      tgp_sort_u64(lat, nlat);
      q50 = tgp_quantile_sorted(lat, nlat, 0.50);
      q99 = tgp_quantile_sorted(lat, nlat, 0.99);
      q999 = tgp_quantile_sorted(lat, nlat, 0.999);
      qmax = nlat ? lat[nlat - 1] : 0;
      free(lat);
    }
  }

  uint64_t bytes = st.bytes;
  double ref_chunk_s = tgb_raw_chunks_seconds(dir, bytes);
  if (ref_before_s > 0 && est_bytes == bytes && (ref_chunk_s < 0 || ref_before_s < ref_chunk_s))
    ref_chunk_s = ref_before_s;
  uint64_t sync_each_n = records < 2000 ? records : 2000;
  double ref_sync_s = tgb_raw_sync_each_seconds(dir, sync_each_n, FRAME);
  tgp_rmtree(dir);
  if (ref_chunk_s < 0 || ref_sync_s < 0) {
    fprintf(stderr, "tg-bench wal: the raw reference failed: %s\n", strerror(errno));
    return 1;
  }

  double rps = (double)records / secs;
  double mbps = (double)bytes / secs / 1e6;
  double ref_chunk_rps = (double)records / ref_chunk_s;
  double ref_sync_rps = (double)sync_each_n / ref_sync_s;
  double ref_rps = level == TG_WAL_STRICT ? ref_sync_rps : ref_chunk_rps;
  double per_sync = st.fdatasyncs ? (double)records / (double)st.fdatasyncs : 0;
#define NS(t) ((double)(t) * npt)
  if (json) {
    printf("{\"bench\":\"wal\",\"level\":\"%s\",\"threads\":%d,\"records\":%llu,"
           "\"seconds\":%.4f,\"records_per_sec\":%.0f,\"mb_per_sec\":%.1f,"
           "\"fdatasyncs\":%llu,\"records_per_fdatasync\":%.2f,"
           "\"append_ns_p50\":%.0f,\"append_ns_p99\":%.0f,\"append_ns_p999\":%.0f,"
           "\"append_ns_max\":%.0f,\"paced_append_ns_p50\":%.0f,\"paced_append_ns_p99\":%.0f,"
           "\"paced_append_ns_p999\":%.0f,\"paced_append_ns_max\":%.0f,\"timer_ns\":%.1f,"
           "\"blocked_appends\":%llu,\"blocked_ms\":%.1f,"
           "\"throttled_appends\":%llu,\"throttled_ms\":%.1f,"
           "\"reference\":\"%s\",\"reference_records_per_sec\":%.0f,"
           "\"ratio_to_reference\":%.3f,\"reference_chunks_records_per_sec\":%.0f,"
           "\"reference_sync_each_records_per_sec\":%.0f,\"replay_records_per_sec\":%.0f,"
           "\"cpu_ns_per_record\":%.0f,\"context_switches_per_1k_records\":%.2f}\n",
           names[level], threads, (unsigned long long)records, secs, rps, mbps,
           (unsigned long long)st.fdatasyncs, per_sync, NS(p50), NS(p99), NS(p999), NS(pmax),
           NS(q50), NS(q99), NS(q999), NS(qmax), NS(tmin), (unsigned long long)st.blocked,
           (double)st.blocked_ns / 1e6, (unsigned long long)st.throttled,
           (double)st.throttled_ns / 1e6,
           level == TG_WAL_STRICT ? "write+fdatasync per record" : "1 MiB chunks + fdatasync",
           ref_rps, rps / ref_rps, ref_chunk_rps, ref_sync_rps, replay_rps, cpu, switches);
  } else {
    printf("wal %s, %d thread%s, %llu records of %d-byte payload (%d-byte frames)\n",
           names[level], threads, threads == 1 ? "" : "s", (unsigned long long)records, PAYLOAD,
           FRAME);
    printf("  wal:        %.3f s  %12.0f records/s  %8.1f MB/s\n", secs, rps, mbps);
    printf("  cpu:        %.0f ns per record, all threads (%.2f context switches per 1,000)\n",
           cpu, switches);
    printf("  fdatasyncs: %llu  (%.2f records per fdatasync)\n",
           (unsigned long long)st.fdatasyncs, per_sync);
    printf("  append ns:  p50 %.0f  p99 %.0f  p99.9 %.0f  max %.0f  (timer %.1f ns; %llu "
           "appends blocked, %.1f ms; %llu throttled, %.1f ms)\n",
           NS(p50), NS(p99), NS(p999), NS(pmax), NS(tmin), (unsigned long long)st.blocked,
           (double)st.blocked_ns / 1e6, (unsigned long long)st.throttled,
           (double)st.throttled_ns / 1e6);
    if (level != TG_WAL_STRICT)
      printf("  paced:      p50 %.0f  p99 %.0f  p99.9 %.0f  max %.0f  (no backpressure)\n", NS(q50),
             NS(q99), NS(q999), NS(qmax));
    printf("  reference:  1 MiB chunks + fdatasync: %12.0f records/s\n", ref_chunk_rps);
    printf("              write+fdatasync per record: %8.0f records/s (%llu records)\n",
           ref_sync_rps, (unsigned long long)sync_each_n);
    printf("  replay:     %12.0f records/s (reader, page cache)\n", replay_rps);
    printf("  ratio to reference (%s): %.3f\n",
           level == TG_WAL_STRICT ? "per-record sync" : "1 MiB chunks", rps / ref_rps);
  }
#undef NS
  return 0;
}
