/*
 * tg-bench replicate: what shipping the log to NATS JetStream costs
 * (docs/durability.md, "REPLICATED"), on token creation through a durable
 * store, T threads, rounds alternating four configurations so that the
 * machine's drift hits them alike:
 *  - strict:        TG_STRICT, no replication (the local reference);
 *  - replicated:    TG_REPLICATED (fdatasync and the stream's ack);
 *  - balanced:      TG_BALANCED, no replication;
 *  - balanced_ship: TG_BALANCED shipping every batch (must not slow
 *                   creation: the publish is asynchronous).
 * The raw reference: the same T threads each publishing 80-byte messages
 * (one frame's bytes) synchronously with libnats, one per call, as many
 * as the replicated run's calls: what a round trip to the stream costs
 * without tokengraph. ratio_to_raw = replicated / raw.
 * The creation rates count calls until the last returned; balanced_ship's
 * drain_ms is how long its tg_sync() then took (the shipping backlog).
 * Without --nats a private nats-server is started on loopback
 * (tests/nats_server.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "tokengraph/tokengraph.h"

#ifndef TG_HAVE_NATS
int tgb_replicate(int argc, char **argv) {
  (void)argc, (void)argv;
  fprintf(stderr, "tg-bench replicate: not built (this build has no libnats)\n");
  return 69;
}
#else
#include <nats/nats.h>

#include "nats_server.h"

enum { C_STRICT, C_REPLICATED, C_BALANCED, C_BALANCED_SHIP, NCONF };
static const char *const conf_names[NCONF] = {"strict", "replicated", "balanced",
                                              "balanced_ship"};

typedef struct worker {
  tg_store *s;
  natsConnection *nc; /* raw reference */
  jsCtx *js;
  const char *subject;
  uint64_t count;
  uint64_t *lat; /* ticks per call */
  int rc;
  pthread_t th;
} worker;

static pthread_barrier_t barrier;

static void *create_main(void *arg) {
  worker *k = arg;
  pthread_barrier_wait(&barrier);
  for (uint64_t i = 0; i < k->count; i++) {
    uint32_t id;
    uint64_t t0 = tgp_ticks();
    int rc = tg_token_create(k->s, NULL, &id);
    k->lat[i] = tgp_ticks() - t0;
    if (rc) {
      k->rc = rc;
      break;
    }
  }
  return NULL;
}

static void *publish_main(void *arg) {
  worker *k = arg;
  unsigned char frame[80];
  memset(frame, 0xA5, sizeof frame);
  pthread_barrier_wait(&barrier);
  for (uint64_t i = 0; i < k->count; i++) {
    uint64_t t0 = tgp_ticks();
    jsPubAck *pa = NULL;
    natsStatus s = js_Publish(&pa, k->js, k->subject, frame, sizeof frame, NULL, NULL);
    k->lat[i] = tgp_ticks() - t0;
    jsPubAck_Destroy(pa);
    if (s != NATS_OK) {
      k->rc = -EIO;
      break;
    }
  }
  return NULL;
}

typedef struct result {
  double rps;       /* calls per second */
  uint64_t p50, p99; /* ticks */
  double drain_ms;
} result;

static int run_threads(worker *w, int threads, void *(*fn)(void *), uint64_t *ticks) {
  pthread_barrier_init(&barrier, NULL, (unsigned)threads + 1);
  for (int i = 0; i < threads; i++) pthread_create(&w[i].th, NULL, fn, &w[i]);
  pthread_barrier_wait(&barrier);
  uint64_t t0 = tgp_ticks();
  int rc = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(w[i].th, NULL);
    if (w[i].rc) rc = w[i].rc;
  }
  *ticks = tgp_ticks() - t0;
  pthread_barrier_destroy(&barrier);
  return rc;
}

static void percentiles(worker *w, int threads, uint64_t per, result *r) {
  uint64_t n = per * (uint64_t)threads, k = 0;
  uint64_t *all = malloc(n * sizeof *all);
  if (!all) return;
  for (int i = 0; i < threads; i++)
    for (uint64_t j = 0; j < per; j++) all[k++] = w[i].lat[j];
  tgp_sort_u64(all, n);
  r->p50 = tgp_quantile_sorted(all, n, 0.50);
  r->p99 = tgp_quantile_sorted(all, n, 0.99);
  free(all);
}

static int run_store(int conf, const char *url, int replicas, const char *parent, int threads,
                     uint64_t per, int round, result *r) {
  char dir[4096], name[64];
  int rc = tgp_mkdtemp(dir, sizeof dir, parent, "tg-bench-repl");
  if (rc) return rc;
  snprintf(name, sizeof name, "bench_%d_%d_%d", (int)getpid(), round, conf);
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.checkpoint_bytes = 0;
  cfg.crash_dump = 0;
  cfg.wal.level = conf == C_STRICT ? TG_STRICT : conf == C_REPLICATED ? TG_REPLICATED
                                                                       : TG_BALANCED;
  if (conf == C_REPLICATED || conf == C_BALANCED_SHIP) {
    cfg.nats_url = url;
    cfg.repl_name = name;
    cfg.repl_replicas = replicas;
  }
  tg_store *s = NULL;
  char msg[512] = "";
  worker *w = calloc((size_t)threads, sizeof *w);
  if ((rc = tg_store_open_msg(&s, dir, &cfg, msg, sizeof msg))) {
    fprintf(stderr, "tg-bench replicate: %s: %s\n", conf_names[conf], msg);
    goto out;
  }
  for (int i = 0; i < threads; i++) {
    w[i].s = s;
    w[i].count = per;
    w[i].lat = malloc(per * sizeof *w[i].lat);
  }
  uint64_t ticks = 0;
  rc = run_threads(w, threads, create_main, &ticks);
  double npt = tgp_ns_per_tick();
  r->rps = (double)(per * (uint64_t)threads) / ((double)ticks * npt / 1e9);
  percentiles(w, threads, per, r);
  uint64_t t0 = tgp_now_ns();
  if (!rc) rc = tg_sync(s);
  r->drain_ms = (double)(tgp_now_ns() - t0) / 1e6;
  int crc = tg_store_close(s);
  if (!rc) rc = crc;
  if (rc) fprintf(stderr, "tg-bench replicate: %s: %s\n", conf_names[conf], tg_strerror(rc));
out:
  for (int i = 0; w && i < threads; i++) free(w[i].lat);
  free(w);
  tgp_rmtree(dir);
  return rc;
}

static int run_raw(const char *url, int replicas, int threads, uint64_t per, int round,
                   result *r) {
  char stream[64], subject[64];
  snprintf(stream, sizeof stream, "RAW_%d_%d", (int)getpid(), round);
  snprintf(subject, sizeof subject, "raw.%d.%d", (int)getpid(), round);
  worker *w = calloc((size_t)threads, sizeof *w);
  natsConnection *nc = NULL;
  jsCtx *js = NULL;
  int rc = -EIO;
  if (natsConnection_ConnectTo(&nc, url) != NATS_OK ||
      natsConnection_JetStream(&js, nc, NULL) != NATS_OK)
    goto out;
  jsStreamConfig c;
  jsStreamConfig_Init(&c);
  const char *subjects[1] = {subject};
  c.Name = stream;
  c.Subjects = subjects;
  c.SubjectsLen = 1;
  c.Storage = js_FileStorage;
  c.Replicas = replicas;
  c.Discard = js_DiscardNew;
  jsStreamInfo *si = NULL;
  if (js_AddStream(&si, js, &c, NULL, NULL) != NATS_OK) goto out;
  jsStreamInfo_Destroy(si);
  for (int i = 0; i < threads; i++) {
    w[i].js = js;
    w[i].subject = subject;
    w[i].count = per;
    w[i].lat = malloc(per * sizeof *w[i].lat);
  }
  uint64_t ticks = 0;
  rc = run_threads(w, threads, publish_main, &ticks);
  r->rps = (double)(per * (uint64_t)threads) / ((double)ticks * tgp_ns_per_tick() / 1e9);
  percentiles(w, threads, per, r);
  js_DeleteStream(js, stream, NULL, NULL);
out:
  for (int i = 0; w && i < threads; i++) free(w[i].lat);
  free(w);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  return rc;
}

static void usage(FILE *f) {
  fprintf(f, "usage: tg-bench replicate [--nats URL] [--replicas 1|3] [--threads T]\n"
             "                          [--count N] [--sync-count M] [--rounds R]\n"
             "                          [--dir PARENT] [--json]\n\n"
             "Token creation through a durable store, alternated over R rounds (default 3):\n"
             "strict, replicated (TG_REPLICATED), balanced, balanced with shipping; and\n"
             "a raw reference: T threads publishing 80-byte messages synchronously.\n"
             "N (default 1000000) calls per balanced run, M (default 4000) per strict,\n"
             "replicated and raw run. Without --nats a private nats-server (-js, on\n"
             "loopback) is started: --replicas 3 makes it a 3-node cluster.\n"
             "The figures of each configuration are the medians over the rounds.\n");
}

static double median(double *v, int n) {
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
      double t = v[j];
      v[j] = v[j - 1];
      v[j - 1] = t;
    }
  return n ? v[n / 2] : 0;
}

int tgb_replicate(int argc, char **argv) {
  const char *url = NULL, *parent = "/tmp";
  uint64_t replicas = 1, threads = 8, count = 1000000, sync_count = 4000, rounds = 3;
  int json = 0;
  const tgb_opt opts[] = {{"--nats", NULL, &url},          {"--replicas", &replicas, NULL},
                          {"--threads", &threads, NULL},   {"--count", &count, NULL},
                          {"--sync-count", &sync_count, NULL}, {"--rounds", &rounds, NULL},
                          {"--dir", NULL, &parent},        {NULL, NULL, NULL}};
  int prc = tgb_parse_args("replicate", argc, argv, opts, &json, usage);
  if (prc >= 0) return prc;
  if ((replicas != 1 && replicas != 3) || threads < 1 || threads > 256 || rounds < 1 ||
      rounds > 100 || count < threads || sync_count < threads) {
    fprintf(stderr, "tg-bench replicate: --replicas 1|3, --threads 1..256, --rounds 1..100, "
                    "counts >= threads\n");
    return 64;
  }
  tgn_server srv;
  memset(&srv, 0, sizeof srv);
  if (!url) {
    int rc = tgn_server_start(&srv, (int)replicas);
    if (rc) {
      fprintf(stderr, "tg-bench replicate: cannot start nats-server (%s); give --nats URL\n",
              strerror(-rc));
      return 69;
    }
    url = srv.url;
  }
  int T = (int)threads, R = (int)rounds, rc = 0;
  double v[NCONF + 1][100], p50[NCONF + 1][100], p99[NCONF + 1][100], drain[100];
  for (int r = 0; r < R && !rc; r++) {
    for (int c = 0; c < NCONF && !rc; c++) {
      result res = {0};
      uint64_t per = (c == C_STRICT || c == C_REPLICATED ? sync_count : count) / threads;
      rc = run_store(c, url, (int)replicas, parent, T, per, r, &res);
      v[c][r] = res.rps;
      p50[c][r] = (double)res.p50 * tgp_ns_per_tick();
      p99[c][r] = (double)res.p99 * tgp_ns_per_tick();
      if (c == C_BALANCED_SHIP) drain[r] = res.drain_ms;
    }
    if (!rc) {
      result res = {0};
      rc = run_raw(url, (int)replicas, T, sync_count / threads, r, &res);
      if (rc) fprintf(stderr, "tg-bench replicate: the raw publish reference failed\n");
      v[NCONF][r] = res.rps;
      p50[NCONF][r] = (double)res.p50 * tgp_ns_per_tick();
      p99[NCONF][r] = (double)res.p99 * tgp_ns_per_tick();
    }
  }
  if (srv.nodes) tgn_server_stop(&srv);
  if (rc) return 1;
  double m[NCONF + 1], m50[NCONF + 1], m99[NCONF + 1];
  for (int c = 0; c <= NCONF; c++) {
    m[c] = median(v[c], R);
    m50[c] = median(p50[c], R);
    m99[c] = median(p99[c], R);
  }
  double md = median(drain, R);
  if (json) {
    printf("{\"bench\":\"replicate\",\"replicas\":%d,\"threads\":%d,\"rounds\":%d,"
           "\"records_per_sec\":%.0f,\"raw_publish_records_per_sec\":%.0f,"
           "\"ratio_to_raw\":%.3f,\"ack_p50_ns\":%.0f,\"ack_p99_ns\":%.0f,"
           "\"strict_records_per_sec\":%.0f,\"strict_p50_ns\":%.0f,\"strict_p99_ns\":%.0f,"
           "\"ratio_to_strict\":%.3f,\"balanced_records_per_sec\":%.0f,"
           "\"balanced_ship_records_per_sec\":%.0f,\"ship_ratio_to_balanced\":%.3f,"
           "\"balanced_ship_drain_ms\":%.1f,\"raw_publish_p50_ns\":%.0f}\n",
           (int)replicas, T, R, m[C_REPLICATED], m[NCONF], m[C_REPLICATED] / m[NCONF],
           m50[C_REPLICATED], m99[C_REPLICATED], m[C_STRICT], m50[C_STRICT], m99[C_STRICT],
           m[C_REPLICATED] / m[C_STRICT], m[C_BALANCED], m[C_BALANCED_SHIP],
           m[C_BALANCED_SHIP] / m[C_BALANCED], md, m50[NCONF]);
  } else {
    printf("tg-bench replicate: R%d, %d threads, %d rounds (medians)\n", (int)replicas, T, R);
    printf("  %-14s %12s %12s %12s\n", "", "calls/s", "p50 us", "p99 us");
    for (int c = 0; c <= NCONF; c++)
      printf("  %-14s %12.0f %12.1f %12.1f\n", c == NCONF ? "raw_publish" : conf_names[c], m[c],
             m50[c] / 1e3, m99[c] / 1e3);
    printf("  replicated / raw publish: %.3f; replicated / strict: %.3f\n",
           m[C_REPLICATED] / m[NCONF], m[C_REPLICATED] / m[C_STRICT]);
    printf("  balanced with shipping / without: %.3f (then %.1f ms to drain with tg_sync)\n",
           m[C_BALANCED_SHIP] / m[C_BALANCED], md);
  }
  return 0;
}
#endif
