/*
 * tg-bench replicate: what shipping the log to NATS JetStream costs
 * (docs/durability.md, "REPLICATED"), on token creation through a durable
 * store, T threads, rounds alternating five configurations so that the
 * machine's drift hits them alike:
 *  - strict:        TG_STRICT, no replication (the local reference);
 *  - replicated:    TG_REPLICATED (fdatasync and the stream's ack), each
 *                   call blocked until both;
 *  - balanced:      TG_BALANCED, no replication;
 *  - balanced_ship: TG_BALANCED shipping every batch (must not slow
 *                   creation: the publish is asynchronous);
 *  - replicated_async: the asynchronous replicated commit: TG_BALANCED
 *                   shipping, each thread creating groups of G calls and
 *                   waiting for each group's last LSN with
 *                   tg_wait_replicated() (fdatasynced and acknowledged):
 *                   records replicated per second, until the last wait
 *                   returned; its p50/p99 are the waits'.
 * The raw reference (issue 14: "a plain async publish of the same bytes in
 * the same batching"): a replicated run's own messages, read back from
 * its stream once it closed (the same bodies, Tg-* headers, Nats-Msg-Id
 * and ExpectLastSeq), published with js_PublishMsgAsync to a new stream of
 * the same kind on a connection set up as the shipper's (SendAsap), with
 * the shipper's window (256 in flight), timed from the first publish to
 * the last ack: raw_publish_records_per_sec, records per second, for
 * replicated_async's messages; ratio_to_raw = replicated_async / raw.
 * The same for replicated's messages: replicated_call_ratio_to_raw (blocked
 * callers keep at most one record each in flight: a closed loop against
 * an open one), and those messages again with only as many in flight as T
 * blocked callers fill (T / records per message):
 * raw_same_inflight_records_per_sec, the stream's share of what a
 * closed loop of T callers can reach.
 * The creation rates count calls until the last returned; balanced_ship's
 * drain_ms is how long its tg_store_close() then took (a clean close waits
 * for the stream's acks: the shipping backlog; balanced's own close beside
 * it, balanced_close_ms, is the reference).
 * Then the follower, after the rounds, once each:
 *  - apply once delivered: a primary (TG_BALANCED, shipping) creates F
 *    tokens and closes (a clean close waits for the stream's acks, so
 *    every record is in the stream); a replica is then opened in a
 *    directory of its own: follower_apply_records_per_sec is its records
 *    over the time its follower spent checking and applying messages
 *    (tg_replica_status.apply_ns: the apply loop alone, the messages
 *    delivered), follower_catchup_records_per_sec is F over the time from
 *    tg_replica_open() until it applied the primary's last LSN (fetching
 *    included);
 *  - lag at an offered rate: a replica follows live while the primary's
 *    creating thread offers F tokens at --offered-rate, paced against the
 *    clock in bursts of 1000; every 1000th record's (LSN, time its call
 *    returned) is noted, and a sampler thread, waiting in tg_wait_lsn()
 *    for the oldest noted LSN not yet applied, takes for each noted LSN
 *    newly applied now - noted time: follower_lag_p99_ms. The rate the
 *    primary actually reached is printed next to the offered one: when it
 *    falls short, the lag was measured at that lower rate.
 * Without --nats a private nats-server is started on loopback
 * (tests/nats_server.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
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

enum { C_STRICT, C_REPLICATED, C_BALANCED, C_BALANCED_SHIP, C_REPLICATED_ASYNC, NCONF };
static const char *const conf_names[NCONF] = {"strict", "replicated", "balanced",
                                              "balanced_ship", "replicated_async"};

/* A wait for replication that fails the run rather than hang it (the
   store's ack timeout ends it sooner). */
#define ASYNC_WAIT_MS 60000u

typedef struct worker {
  tg_store *s;
  uint64_t count;
  uint64_t group;  /* > 0: replicated_async, a wait per group of calls */
  uint64_t *lat;   /* ticks per call, or per group's wait */
  uint64_t nlat;   /* entries of lat filled */
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
    k->lat[k->nlat++] = tgp_ticks() - t0;
    if (rc) {
      k->rc = rc;
      break;
    }
  }
  return NULL;
}

/* replicated_async's pipelining: how many groups a thread may have created
   and not yet seen replicated (--depth D; 1: each group waits before the
   next is created). */
static uint64_t group_depth = 1;

/* replicated_async: groups of `group` creates at the store's level; once a
   thread has `group_depth` groups created and not confirmed, it waits with
   one tg_wait_replicated() for the oldest group's last LSN before it
   creates the next, and at the end for its last group (which covers all
   of its records: the wait is for every LSN up to the one given). lat is
   each wait's time. With depth 1 that is: create a group, wait for it. */
static void *create_group_main(void *arg) {
  worker *k = arg;
  uint64_t pending[64], np = 0; /* last LSN of each unconfirmed group, oldest first */
  pthread_barrier_wait(&barrier);
  for (uint64_t i = 0; i < k->count || np;) {
    if (i < k->count) {
      uint64_t end = i + k->group < k->count ? i + k->group : k->count;
      for (; i < end; i++) {
        uint32_t id;
        int rc = tg_token_create(k->s, NULL, &id);
        if (rc) {
          k->rc = rc;
          return NULL;
        }
      }
      pending[np++] = tg_last_lsn(k->s);
      if (np < group_depth && i < k->count) continue;
    }
    /* The oldest group, or (creates done) the newest: it covers the rest. */
    uint64_t lsn = i < k->count ? pending[0] : pending[np - 1];
    uint64_t t0 = tgp_ticks();
    int rc = tg_wait_replicated(k->s, lsn, ASYNC_WAIT_MS);
    k->lat[k->nlat++] = tgp_ticks() - t0;
    if (rc) {
      k->rc = rc;
      return NULL;
    }
    if (i < k->count) {
      memmove(pending, pending + 1, (size_t)(np - 1) * sizeof *pending);
      np--;
    } else {
      np = 0;
    }
  }
  return NULL;
}

typedef struct result {
  double rps;       /* calls per second */
  uint64_t p50, p99; /* ticks */
  double drain_ms;
  double cpu_ns, srv_cpu_ns; /* CPU time per record while timed: this
                                process (all its threads), the private
                                server's nodes (0 with --nats) */
} result;

/* The private server (NULL with --nats): its nodes' CPU time is read from
   /proc, so the CPU a record costs on each side can be told apart. */
static const tgn_server *cpu_srv;

/* CPU seconds used so far by this process (every thread). */
static double self_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* CPU seconds used so far by the private server's nodes (0 without). */
static double server_cpu_s(void) {
  double t = 0;
  long hz = sysconf(_SC_CLK_TCK);
  for (int i = 0; cpu_srv && i < cpu_srv->nodes; i++) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)cpu_srv->node[i].pid);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* Fields 14 and 15 (utime, stime) follow the ")" that ends the name. */
    const char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
      t += (double)(ut + st) / (double)hz;
  }
  return t;
}

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

static void percentiles(worker *w, int threads, result *r) {
  uint64_t n = 0, k = 0;
  for (int i = 0; i < threads; i++) n += w[i].nlat;
  uint64_t *all = malloc((n ? n : 1) * sizeof *all);
  if (!all) return;
  for (int i = 0; i < threads; i++)
    for (uint64_t j = 0; j < w[i].nlat; j++) all[k++] = w[i].lat[j];
  tgp_sort_u64(all, n);
  r->p50 = tgp_quantile_sorted(all, n, 0.50);
  r->p99 = tgp_quantile_sorted(all, n, 0.99);
  free(all);
}

/* ---- the raw reference ---------------------------------------------- */

/* The shipper's window: libnats's PublishAsync.MaxPending as src/repl
   sets it (messages in flight before a publish waits). */
#define RAW_WINDOW 256

typedef struct shipped_msg {
  unsigned char *data;
  size_t len;
  uint64_t first_lsn, last_lsn, epoch;
} shipped_msg;

/* The replicated run's messages, read back from its stream. */
typedef struct shipped {
  shipped_msg *m;
  size_t n;
  uint64_t records, bytes;
} shipped;

static void shipped_free(shipped *sh) {
  for (size_t i = 0; i < sh->n; i++) free(sh->m[i].data);
  free(sh->m);
  memset(sh, 0, sizeof *sh);
}

static uint64_t hdr_u64(natsMsg *m, const char *name) {
  const char *v = NULL;
  if (natsMsgHeader_Get(m, name, &v) != NATS_OK || !v) return 0;
  return strtoull(v, NULL, 10);
}

/* Read every message of stream (subject) into *out, in stream order, and
   delete the stream. */
static int load_stream(const char *url, const char *stream, const char *subject,
                       shipped *out) {
  natsConnection *nc = NULL;
  jsCtx *js = NULL;
  natsSubscription *sub = NULL;
  jsStreamInfo *si = NULL;
  int rc = -EIO;
  memset(out, 0, sizeof *out);
  if (natsConnection_ConnectTo(&nc, url) != NATS_OK ||
      natsConnection_JetStream(&js, nc, NULL) != NATS_OK ||
      js_GetStreamInfo(&si, js, stream, NULL, NULL) != NATS_OK)
    goto out;
  uint64_t want = si->State.Msgs;
  if (!(out->m = calloc(want ? want : 1, sizeof *out->m))) {
    rc = -ENOMEM;
    goto out;
  }
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream;
  so.Config.DeliverPolicy = js_DeliverAll;
  so.Config.AckPolicy = js_AckNone;
  /* No pending limit, as src/repl/repl.c (libnats' default: 64 MiB). */
  if (js_PullSubscribe(&sub, js, subject, NULL, NULL, &so, NULL) != NATS_OK ||
      natsSubscription_SetPendingLimits(sub, -1, -1) != NATS_OK)
    goto out;
  while (out->n < want) {
    natsMsgList list = {0};
    /* 16 messages a fetch (at most 16 MiB): fetches of 256 messages of
       about 450 KB (--group 10000) timed out after 76-117 of 181-197
       messages, in 3 runs of 4. */
    natsStatus st = natsSubscription_Fetch(&list, sub, 16, 5000, NULL);
    if (st != NATS_OK) {
      fprintf(stderr, "tg-bench replicate: %s: fetch after %zu of %llu messages: %s\n", stream,
              out->n, (unsigned long long)want, natsStatus_GetText(st));
      goto out;
    }
    for (int i = 0; i < list.Count && out->n < want; i++) {
      natsMsg *m = list.Msgs[i];
      shipped_msg *e = &out->m[out->n];
      e->len = (size_t)natsMsg_GetDataLength(m);
      e->first_lsn = hdr_u64(m, "Tg-First-Lsn");
      e->last_lsn = hdr_u64(m, "Tg-Last-Lsn");
      e->epoch = hdr_u64(m, "Tg-Epoch");
      if (!(e->data = malloc(e->len ? e->len : 1))) break;
      memcpy(e->data, natsMsg_GetData(m), e->len);
      out->records += e->last_lsn - e->first_lsn + 1;
      out->bytes += e->len;
      out->n++;
    }
    natsMsgList_Destroy(&list);
    if (out->n < want && !out->m[out->n].data && out->m[out->n].len) {
      rc = -ENOMEM;
      goto out;
    }
  }
  rc = 0;
out:
  if (sub) {
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
  }
  if (js) js_DeleteStream(js, stream, NULL, NULL);
  jsStreamInfo_Destroy(si);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  if (rc) shipped_free(out);
  return rc;
}

static int ships(int conf) {
  return conf == C_REPLICATED || conf == C_BALANCED_SHIP || conf == C_REPLICATED_ASYNC;
}

/* One configuration's run (replicated_async: in groups of `group` calls);
   sh (NULL: not wanted) gets the messages it shipped (read back from its
   stream). */
static int run_store(int conf, const char *url, int replicas, const char *parent, int threads,
                     uint64_t per, uint64_t group, int round, result *r, shipped *sh) {
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
  if (ships(conf)) {
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
  int async = conf == C_REPLICATED_ASYNC;
  for (int i = 0; i < threads; i++) {
    w[i].s = s;
    w[i].count = per;
    w[i].group = async ? group : 0;
    w[i].lat = malloc((async ? per / group + 1 : per) * sizeof *w[i].lat);
  }
  uint64_t ticks = 0;
  double c0 = self_cpu_s(), s0 = server_cpu_s();
  rc = run_threads(w, threads, async ? create_group_main : create_main, &ticks);
  double nrec = (double)(per * (uint64_t)threads);
  r->cpu_ns = (self_cpu_s() - c0) * 1e9 / nrec;
  r->srv_cpu_ns = (server_cpu_s() - s0) * 1e9 / nrec;
  double npt = tgp_ns_per_tick();
  r->rps = nrec / ((double)ticks * npt / 1e9);
  percentiles(w, threads, r);
  if (!rc) rc = tg_sync(s);
  /* A clean close waits for the stream's acks: every message is in it.
     So its time is the shipping backlog's (tg_sync() at BALANCED does not
     wait for the stream, and read 0 ms every time). */
  uint64_t t0 = tgp_now_ns();
  int crc = tg_store_close(s);
  r->drain_ms = (double)(tgp_now_ns() - t0) / 1e6;
  if (!rc) rc = crc;
  if (!rc && ships(conf)) {
    char stream[96], subject[96];
    snprintf(stream, sizeof stream, "TG_%s", name);
    snprintf(subject, sizeof subject, "tg.%s.wal", name);
    shipped tmp;
    rc = load_stream(url, stream, subject, sh ? sh : &tmp);
    if (rc) fprintf(stderr, "tg-bench replicate: %s: cannot read its stream back\n",
                    conf_names[conf]);
    else if (!sh) shipped_free(&tmp);
  }
  if (rc) fprintf(stderr, "tg-bench replicate: %s: %s\n", conf_names[conf], tg_strerror(rc));
out:
  for (int i = 0; w && i < threads; i++) free(w[i].lat);
  free(w);
  tgp_rmtree(dir);
  return rc;
}

typedef struct raw_acks {
  uint64_t *sent;     /* ns each message was handed to libnats, by index */
  uint64_t *lat;      /* ns from then to its ack, by index */
  size_t n;
  _Atomic uint64_t acked, failed;
} raw_acks;

static void raw_ack_handler(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae,
                            void *closure) {
  (void)js;
  raw_acks *a = closure;
  uint64_t now = tgp_now_ns();
  if (pa && pa->Sequence >= 1 && pa->Sequence <= a->n) {
    a->lat[pa->Sequence - 1] = now - a->sent[pa->Sequence - 1];
    /* Release: the latency above is written before the count shows it. */
    atomic_fetch_add_explicit(&a->acked, 1, memory_order_release);
  } else if (pae) {
    atomic_fetch_add_explicit(&a->failed, 1, memory_order_release);
  }
  natsMsg_Destroy(msg);
}

/* The raw reference: the replicated run's messages (the same bodies, the
   same Tg-* headers, Nats-Msg-Id and ExpectLastSeq, so the server does the
   same work per message) published with js_PublishMsgAsync on a
   connection set up as the shipper's (SendAsap), at most `window` in
   flight, to a new stream of the same kind, from the first publish until
   the last ack.
   r->rps is records per second; p50/p99 are each message's publish-to-ack
   time, in ns. */
static int run_raw(const char *url, int replicas, const shipped *sh, int window, int round,
                   result *r) {
  char stream[64], subject[64];
  snprintf(stream, sizeof stream, "RAW_%d_%d_%d", (int)getpid(), round, window);
  snprintf(subject, sizeof subject, "raw.%d.%d.%d", (int)getpid(), round, window);
  natsOptions *o = NULL;
  natsConnection *nc = NULL;
  jsCtx *js = NULL;
  raw_acks a = {0};
  int rc = -EIO, made = 0;
  const char *why = "connect"; /* the step that failed, said on stderr */
  a.n = sh->n;
  a.sent = calloc(sh->n ? sh->n : 1, sizeof *a.sent);
  a.lat = calloc(sh->n ? sh->n : 1, sizeof *a.lat);
  if (!a.sent || !a.lat) {
    rc = -ENOMEM;
    goto out;
  }
  /* A cluster's URL is "url1,url2,...": each a server, as src/repl sets
     them (natsOptions_SetURL took only the first, unreachable once
     followed by the others: "No server available"). */
  char list[1024];
  const char *servers[16];
  int nserv = 0;
  snprintf(list, sizeof list, "%s", url);
  char *save = NULL;
  for (char *u = strtok_r(list, ",", &save); u && nserv < 16; u = strtok_r(NULL, ",", &save))
    servers[nserv++] = u;
  if (natsOptions_Create(&o) != NATS_OK || natsOptions_SetServers(o, servers, nserv) != NATS_OK ||
      natsOptions_SetSendAsap(o, true) != NATS_OK || natsConnection_Connect(&nc, o) != NATS_OK)
    goto out;
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.AckHandler = raw_ack_handler;
  jo.PublishAsync.AckHandlerClosure = &a;
  jo.PublishAsync.MaxPending = window;
  if (natsConnection_JetStream(&js, nc, &jo) != NATS_OK) goto out;
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
  why = "create its stream";
  if (js_AddStream(&si, js, &c, NULL, NULL) != NATS_OK) goto out;
  jsStreamInfo_Destroy(si);
  made = 1;
  why = "publish";
  double c0 = self_cpu_s(), s0 = server_cpu_s();
  uint64_t t0 = tgp_now_ns();
  for (size_t i = 0; i < sh->n; i++) {
    const shipped_msg *e = &sh->m[i];
    char id[48], v[24];
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, (const char *)e->data, (int)e->len);
    snprintf(v, sizeof v, "%" PRIu64, e->first_lsn);
    if (s == NATS_OK) s = natsMsgHeader_Set(m, "Tg-First-Lsn", v);
    snprintf(v, sizeof v, "%" PRIu64, e->last_lsn);
    if (s == NATS_OK) s = natsMsgHeader_Set(m, "Tg-Last-Lsn", v);
    snprintf(v, sizeof v, "%" PRIu64, e->epoch);
    if (s == NATS_OK) s = natsMsgHeader_Set(m, "Tg-Epoch", v);
    snprintf(id, sizeof id, "%" PRIu64 ":%" PRIu64, e->epoch, e->first_lsn);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = id;
    po.ExpectLastSeq = (uint64_t)i;
    a.sent[i] = tgp_now_ns();
    /* A full window waits (StallWait) and times out: publish it again. */
    while (s == NATS_OK && (s = js_PublishMsgAsync(js, &m, &po)) == NATS_TIMEOUT)
      s = NATS_OK;
    natsMsg_Destroy(m);
    if (s != NATS_OK) goto out;
  }
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = 60000;
  why = "wait for the acks";
  if (js_PublishAsyncComplete(js, &po) != NATS_OK) goto out;
  uint64_t ns = tgp_now_ns() - t0;
  r->cpu_ns = (self_cpu_s() - c0) * 1e9 / (double)(sh->records ? sh->records : 1);
  r->srv_cpu_ns = (server_cpu_s() - s0) * 1e9 / (double)(sh->records ? sh->records : 1);
  /* libnats may count a message done before its handler has run: wait for
     the handlers too (acquire: their latencies were written before). */
  uint64_t give_up = tgp_now_ns() + 10000000000ull;
  while (atomic_load_explicit(&a.acked, memory_order_acquire) +
             atomic_load_explicit(&a.failed, memory_order_acquire) < sh->n &&
         tgp_now_ns() < give_up)
    sched_yield();
  if (atomic_load_explicit(&a.failed, memory_order_relaxed) ||
      atomic_load_explicit(&a.acked, memory_order_relaxed) != sh->n) {
    why = "have every message acknowledged";
    goto out;
  }
  r->rps = (double)sh->records / ((double)ns / 1e9);
  tgp_sort_u64(a.lat, sh->n);
  /* In ticks, as the other configurations' (the caller converts). */
  r->p50 = (uint64_t)((double)tgp_quantile_sorted(a.lat, sh->n, 0.50) / tgp_ns_per_tick());
  r->p99 = (uint64_t)((double)tgp_quantile_sorted(a.lat, sh->n, 0.99) / tgp_ns_per_tick());
  rc = 0;
out:
  if (rc)
    fprintf(stderr, "tg-bench replicate: raw publish (window %d): cannot %s: %s\n", window, why,
            nats_GetLastError(NULL) ? nats_GetLastError(NULL) : "no detail");
  if (made) js_DeleteStream(js, stream, NULL, NULL);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  natsOptions_Destroy(o);
  free(a.sent);
  free(a.lat);
  return rc;
}

/* ---- the follower --------------------------------------------------- */

enum { FOLLOW_BURST = 1000, FOLLOW_NOTE_EVERY = 1000 };
/* How long a replica may take to apply what it was shown before the run
   is declared failed rather than left hanging. */
#define FOLLOW_PATIENCE_MS 300000u

/* A shipping TG_BALANCED primary in a new directory under parent. */
/* --linger-us: the follower parts' primary's wal.linger_us (-1: the
   store's default). */
static int64_t follow_linger_us = -1;

static int follow_primary(tg_store **s, char *dir, size_t dirlen, const char *url, int replicas,
                          const char *parent, const char *name) {
  int rc = tgp_mkdtemp(dir, dirlen, parent, "tg-bench-primary");
  if (rc) return rc;
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.checkpoint_bytes = 0;
  cfg.crash_dump = 0;
  cfg.wal.level = TG_BALANCED;
  if (follow_linger_us >= 0) cfg.wal.linger_us = (uint32_t)follow_linger_us;
  cfg.nats_url = url;
  cfg.repl_name = name;
  cfg.repl_replicas = replicas;
  char msg[512] = "";
  if ((rc = tg_store_open_msg(s, dir, &cfg, msg, sizeof msg)))
    fprintf(stderr, "tg-bench replicate: follower's primary: %s\n", msg);
  return rc;
}

/* A replica of name in a new directory under parent. */
static int follow_replica(tg_store **r, char *dir, size_t dirlen, const char *url,
                          const char *parent, const char *name) {
  int rc = tgp_mkdtemp(dir, dirlen, parent, "tg-bench-replica");
  if (rc) return rc;
  tg_replica_config cfg;
  tg_replica_config_init(&cfg);
  cfg.nats_url = url;
  cfg.repl_name = name;
  cfg.bootstrap_snapshot = 0; /* the whole stream, from its first message */
  cfg.store.checkpoint_bytes = 0;
  cfg.store.crash_dump = 0;
  char msg[512] = "";
  if ((rc = tg_replica_open_msg(r, dir, &cfg, msg, sizeof msg)))
    fprintf(stderr, "tg-bench replicate: replica: %s\n", msg);
  return rc;
}

static int create_n(tg_store *s, uint64_t n) {
  for (uint64_t i = 0; i < n; i++) {
    uint32_t id;
    int rc = tg_token_create(s, NULL, &id);
    if (rc) return rc;
  }
  return 0;
}

/* Apply once delivered: records per second from tg_replica_open() until
   the replica has applied every record already in the stream. */
static int run_follow_apply(const char *url, int replicas, const char *parent, uint64_t n,
                            double *rps, double *cpu_rps, double *catchup, uint64_t *msgs) {
  char pdir[4096] = "", rdir[4096] = "", name[64];
  snprintf(name, sizeof name, "bench_apply_%d", (int)getpid());
  tg_store *p = NULL, *r = NULL;
  int rc = follow_primary(&p, pdir, sizeof pdir, url, replicas, parent, name);
  if (rc) goto out;
  if ((rc = create_n(p, n))) goto out;
  uint64_t last = tg_last_lsn(p);
  /* tg_sync() at BALANCED does not wait for the stream's acks; a clean
     close does (it leaves the stream complete): then all is delivered. */
  rc = tg_store_close(p);
  p = NULL;
  if (rc) goto out;
  uint64_t t0 = tgp_now_ns();
  if ((rc = follow_replica(&r, rdir, sizeof rdir, url, parent, name))) goto out;
  rc = tg_wait_lsn(r, last, FOLLOW_PATIENCE_MS);
  uint64_t ns = tgp_now_ns() - t0;
  if (rc) goto out;
  *catchup = (double)n / ((double)ns / 1e9);
  tg_replica_status st;
  if ((rc = tg_replica_status_get(r, &st))) goto out;
  *rps = st.apply_ns ? (double)st.records / ((double)st.apply_ns / 1e9) : 0;
  *cpu_rps = st.apply_cpu_ns ? (double)st.records / ((double)st.apply_cpu_ns / 1e9) : 0;
  *msgs = st.messages;
out:
  if (rc) fprintf(stderr, "tg-bench replicate: follower apply: %s\n", tg_strerror(rc));
  if (r) tg_store_close(r);
  if (p) tg_store_close(p);
  if (rdir[0]) tgp_rmtree(rdir);
  if (pdir[0]) tgp_rmtree(pdir);
  return rc;
}

typedef struct lag_note {
  uint64_t lsn, ns; /* a record's LSN and when its call returned */
} lag_note;

typedef struct lag_run {
  tg_store *replica;
  lag_note *notes;
  _Atomic uint64_t noted;   /* notes[0..noted) are written */
  _Atomic int primary_done; /* no more notes will come */
  uint64_t *lags;           /* ns, one per note, filled in order */
  uint64_t *applied_ns;     /* when each note was seen applied */
  uint64_t sampled;
  int rc;
} lag_run;

/* The sampler waits in tg_wait_lsn() for the oldest note not yet seen
   applied: the follower wakes it as it applies each message, so a note is
   timed when its message is applied (and this thread runs), not at the
   next look of a poll. Only while no note is pending (the creator notes
   one every FOLLOW_NOTE_EVERY records) does it look again every 100 us.
   It polled every 100 us throughout before: 10,000 wake-ups a second on
   the two cores the measured pipeline shares, with lags read up to 100 us
   late. */
static void *lag_sampler_main(void *arg) {
  lag_run *L = arg;
  uint64_t next = 0, give_up = 0;
  for (;;) {
    /* acquire: the notes below noted were written before it was raised. */
    int done = atomic_load_explicit(&L->primary_done, memory_order_acquire);
    uint64_t noted = atomic_load_explicit(&L->noted, memory_order_acquire);
    int rc = next < noted ? tg_wait_lsn(L->replica, L->notes[next].lsn, 100) : -ETIMEDOUT;
    if (rc && rc != -ETIMEDOUT) {
      L->rc = rc;
      break;
    }
    uint64_t applied = tg_replica_applied_lsn(L->replica);
    uint64_t now = tgp_now_ns();
    while (next < noted && L->notes[next].lsn <= applied) {
      L->lags[next] = now - L->notes[next].ns;
      L->applied_ns[next] = now;
      next++;
    }
    if (done && next == noted) break;
    if (done && !give_up) give_up = now + (uint64_t)FOLLOW_PATIENCE_MS * 1000000u;
    if (give_up && now > give_up) {
      L->rc = -ETIMEDOUT;
      break;
    }
    if (next == noted) {
      struct timespec ts = {0, 100000};
      nanosleep(&ts, NULL);
    }
  }
  L->sampled = next;
  return NULL;
}

/* Sleep until the monotonic clock reads due_ns (tgp_now_ns()'s clock). */
static void sleep_until(uint64_t due_ns) {
  uint64_t now = tgp_now_ns();
  if (now >= due_ns) return;
  uint64_t d = due_ns - now;
  struct timespec ts = {(time_t)(d / 1000000000u), (long)(d % 1000000000u)};
  nanosleep(&ts, NULL);
}

/* CPU SHARES of a lag run: who had the machine's cores while the primary
   offered its records and the replica applied them. The creating thread
   (CLOCK_THREAD_CPUTIME_ID), the rest of this process (getrusage: the
   primary's log writer and shipper, the replica's follower and log
   writer, the client library's threads), the private nats-server's
   processes (/proc/PID/stat), and the machine as a whole (/proc/stat):
   what is left of its busy time is other processes'. Each as a share of
   the cores' time over the run. */
typedef struct cpu_snap {
  uint64_t wall_ns, creator_ns, self_ns, server_ns, busy_ns, total_ns;
} cpu_snap;

typedef struct cpu_shares {
  double creator, rest, server, others, idle; /* of the cores' time */
  double cores;
} cpu_shares;

static uint64_t thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* utime + stime of process pid in ns, 0 when unknown. */
static uint64_t proc_cpu_ns(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')'); /* the name may hold spaces */
  unsigned long long ut = 0, st = 0;
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
    return 0;
  return (ut + st) * (1000000000u / (uint64_t)sysconf(_SC_CLK_TCK));
}

/* The machine's busy and total CPU time in ns (/proc/stat, all cores). */
static void machine_cpu_ns(uint64_t *busy, uint64_t *total) {
  unsigned long long v[8] = {0};
  *busy = *total = 0;
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return;
  int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                 &v[4], &v[5], &v[6], &v[7]);
  fclose(f);
  if (n != 8) return;
  uint64_t tick = 1000000000u / (uint64_t)sysconf(_SC_CLK_TCK);
  *busy = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) * tick; /* all but idle, iowait */
  *total = *busy + (v[3] + v[4]) * tick;
}

static void cpu_take(cpu_snap *c, const pid_t *server, int nserver) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  c->wall_ns = tgp_now_ns();
  c->creator_ns = thread_cpu_ns();
  c->self_ns = ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000u +
               ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000u;
  c->server_ns = 0;
  for (int i = 0; i < nserver; i++) c->server_ns += proc_cpu_ns(server[i]);
  machine_cpu_ns(&c->busy_ns, &c->total_ns);
}

static double share(uint64_t a, uint64_t b, uint64_t of) {
  return of && b >= a ? (double)(b - a) / (double)of : 0;
}

static void cpu_shares_of(const cpu_snap *a, const cpu_snap *b, cpu_shares *o) {
  uint64_t total = b->total_ns - a->total_ns;
  o->cores = b->wall_ns > a->wall_ns ? (double)total / (double)(b->wall_ns - a->wall_ns) : 0;
  o->creator = share(a->creator_ns, b->creator_ns, total);
  o->rest = share(a->self_ns, b->self_ns, total) - o->creator;
  o->server = share(a->server_ns, b->server_ns, total);
  o->others = share(a->busy_ns, b->busy_ns, total) - o->creator - o->rest - o->server;
  if (o->others < 0) o->others = 0; /* tick granularity */
  o->idle = 1 - share(a->busy_ns, b->busy_ns, total);
}

/* LAG STAGES (--lag-stages 1): a plain NATS subscriber on the stream's
   subject sees each WAL message when the server receives its publish, so
   a noted record's lag splits into returned -> published (the primary's
   batching, its log writer and shipper) and published -> applied (the
   server's store, the delivery to the follower, its apply). It receives
   every message a second time, which costs CPU the run then lacks: off by
   default. */
typedef struct stage_msg {
  uint64_t first, last, ns; /* LSNs and when the subscriber got it */
} stage_msg;

typedef struct stage_sub {
  natsConnection *nc;
  natsSubscription *sub;
  stage_msg *msgs;
  size_t n, cap;
  _Atomic int stop;
  pthread_t th;
} stage_sub;

static uint64_t hdr_num(natsMsg *m, const char *k) {
  const char *v = NULL;
  return natsMsgHeader_Get(m, k, &v) == NATS_OK && v ? strtoull(v, NULL, 10) : 0;
}

static void *stage_main(void *arg) {
  stage_sub *S = arg;
  /* Relaxed: a flag polled every pass; the join publishes the rest. */
  while (!atomic_load_explicit(&S->stop, memory_order_relaxed)) {
    natsMsg *m = NULL;
    if (natsSubscription_NextMsg(&m, S->sub, 50) != NATS_OK) continue;
    uint64_t now = tgp_now_ns();
    if (S->n == S->cap) {
      size_t nc = S->cap ? S->cap * 2 : 4096;
      stage_msg *x = realloc(S->msgs, nc * sizeof *x);
      if (!x) {
        natsMsg_Destroy(m);
        break;
      }
      S->msgs = x;
      S->cap = nc;
    }
    S->msgs[S->n++] = (stage_msg){hdr_num(m, "Tg-First-Lsn"), hdr_num(m, "Tg-Last-Lsn"), now};
    natsMsg_Destroy(m);
  }
  return NULL;
}

static int stage_start(stage_sub *S, const char *url, const char *name) {
  char subj[128];
  snprintf(subj, sizeof subj, "tg.%s.wal", name);
  natsOptions *o = NULL;
  natsStatus st = natsOptions_Create(&o);
  if (st == NATS_OK) st = natsOptions_SetURL(o, url);
  if (st == NATS_OK) st = natsConnection_Connect(&S->nc, o);
  natsOptions_Destroy(o);
  if (st == NATS_OK) st = natsConnection_SubscribeSync(&S->sub, S->nc, subj);
  if (st == NATS_OK) st = natsSubscription_SetPendingLimits(S->sub, -1, -1);
  if (st == NATS_OK) st = natsConnection_Flush(S->nc);
  if (st == NATS_OK && pthread_create(&S->th, NULL, stage_main, S)) st = NATS_NO_MEMORY;
  if (st != NATS_OK) {
    fprintf(stderr, "tg-bench replicate: lag stages: %s\n", natsStatus_GetText(st));
    natsSubscription_Destroy(S->sub);
    natsConnection_Destroy(S->nc);
    S->sub = NULL;
    S->nc = NULL;
    return -EIO;
  }
  return 0;
}

static void stage_stop(stage_sub *S) {
  if (!S->nc) return;
  atomic_store_explicit(&S->stop, 1, memory_order_relaxed);
  pthread_join(S->th, NULL);
  natsSubscription_Destroy(S->sub);
  natsConnection_Destroy(S->nc);
  S->nc = NULL;
}

/* What a lag run measured. */
typedef struct lag_out {
  double p99_ms, p50_ms, reached;
  cpu_shares cpu;
  double pub_p50_ms, pub_p99_ms;   /* returned -> published (stages on) */
  double apply_p50_ms, apply_p99_ms; /* published -> applied */
  uint64_t restarts;               /* the follower's pull restarts */
  char restart_why[256];           /* the last one's reason */
} lag_out;

/* Lag at an offered rate: p99 of (applied on the replica - returned on
   the primary) in ms, and the creation rate the primary reached. */
static int run_follow_lag(const char *url, int replicas, const char *parent, uint64_t n,
                          double offered, const pid_t *server, int nserver, int stages,
                          lag_out *out) {
  char pdir[4096] = "", rdir[4096] = "", name[64];
  snprintf(name, sizeof name, "bench_lag_%d", (int)getpid());
  tg_store *p = NULL;
  lag_run L;
  memset(&L, 0, sizeof L);
  int started = 0;
  uint64_t nnotes = n / FOLLOW_NOTE_EVERY + 1;
  L.notes = calloc(nnotes, sizeof *L.notes);
  L.lags = calloc(nnotes, sizeof *L.lags);
  L.applied_ns = calloc(nnotes, sizeof *L.applied_ns);
  stage_sub S;
  memset(&S, 0, sizeof S);
  cpu_snap c0, c1;
  pthread_t th;
  int rc = -ENOMEM;
  if (!L.notes || !L.lags || !L.applied_ns) goto out;
  if ((rc = follow_primary(&p, pdir, sizeof pdir, url, replicas, parent, name))) goto out;
  /* One record first, so that the stream exists when the replica opens. */
  if ((rc = create_n(p, 1)) || (rc = tg_sync(p))) goto out;
  uint64_t first = tg_last_lsn(p);
  if ((rc = follow_replica(&L.replica, rdir, sizeof rdir, url, parent, name))) goto out;
  if ((rc = tg_wait_lsn(L.replica, first, FOLLOW_PATIENCE_MS))) goto out;
  if (stages && (rc = stage_start(&S, url, name))) goto out;
  cpu_take(&c0, server, nserver);
  if (pthread_create(&th, NULL, lag_sampler_main, &L)) {
    rc = -EAGAIN;
    goto out;
  }
  started = 1;
  double ns_per_rec = 1e9 / offered;
  uint64_t t0 = tgp_now_ns(), done = 0, last_ns = t0;
  while (done < n && !rc) {
    sleep_until(t0 + (uint64_t)((double)done * ns_per_rec));
    uint64_t burst = n - done < FOLLOW_BURST ? n - done : FOLLOW_BURST;
    for (uint64_t i = 0; i < burst; i++) {
      uint32_t id;
      if ((rc = tg_token_create(p, NULL, &id))) break;
      if (++done % FOLLOW_NOTE_EVERY == 0) {
        uint64_t k = atomic_load_explicit(&L.noted, memory_order_relaxed);
        last_ns = tgp_now_ns();
        L.notes[k] = (lag_note){tg_last_lsn(p), last_ns};
        /* release: the note is written before the sampler may read it. */
        atomic_store_explicit(&L.noted, k + 1, memory_order_release);
      }
    }
  }
  if (!rc) {
    /* The last burst's slot ends at n / offered: without waiting for it
       the reached rate would read above the offered one. */
    sleep_until(t0 + (uint64_t)((double)n * ns_per_rec));
    last_ns = tgp_now_ns();
    out->reached = (double)n / ((double)(last_ns - t0) / 1e9);
  }
  atomic_store_explicit(&L.primary_done, 1, memory_order_release);
  pthread_join(th, NULL);
  started = 0;
  /* Until the replica applied the last note: the whole pipeline's work. */
  cpu_take(&c1, server, nserver);
  cpu_shares_of(&c0, &c1, &out->cpu);
  if (!nserver) out->cpu.server = -1; /* a server given by --nats: among the others */
  stage_stop(&S);
  if (!rc) rc = L.rc;
  if (!rc && stages) {
    /* Each note's message, by LSN (messages arrive in LSN order). */
    uint64_t *pub = calloc(L.sampled + 1, sizeof *pub), *app = calloc(L.sampled + 1, sizeof *app);
    size_t k = 0, m = 0;
    for (uint64_t i = 0; pub && app && i < L.sampled; i++) {
      while (k < S.n && S.msgs[k].last < L.notes[i].lsn) k++;
      if (k == S.n || S.msgs[k].first > L.notes[i].lsn) continue;
      pub[m] = S.msgs[k].ns > L.notes[i].ns ? S.msgs[k].ns - L.notes[i].ns : 0;
      app[m] = L.applied_ns[i] > S.msgs[k].ns ? L.applied_ns[i] - S.msgs[k].ns : 0;
      m++;
    }
    if (m) {
      tgp_sort_u64(pub, m);
      tgp_sort_u64(app, m);
      out->pub_p50_ms = (double)tgp_quantile_sorted(pub, m, 0.50) / 1e6;
      out->pub_p99_ms = (double)tgp_quantile_sorted(pub, m, 0.99) / 1e6;
      out->apply_p50_ms = (double)tgp_quantile_sorted(app, m, 0.50) / 1e6;
      out->apply_p99_ms = (double)tgp_quantile_sorted(app, m, 0.99) / 1e6;
    }
    free(pub);
    free(app);
  }
  if (!rc) {
    tgp_sort_u64(L.lags, L.sampled);
    out->p99_ms = (double)tgp_quantile_sorted(L.lags, L.sampled, 0.99) / 1e6;
    out->p50_ms = (double)tgp_quantile_sorted(L.lags, L.sampled, 0.50) / 1e6;
  }
  if (L.replica) {
    tg_replica_status st;
    if (tg_replica_status_get(L.replica, &st) == 0) {
      out->restarts = st.pull_restarts;
      snprintf(out->restart_why, sizeof out->restart_why, "%s", st.pull_restart_reason);
    }
  }
out:
  if (started) {
    atomic_store_explicit(&L.primary_done, 1, memory_order_release);
    pthread_join(th, NULL);
  }
  if (rc) fprintf(stderr, "tg-bench replicate: follower lag: %s\n", tg_strerror(rc));
  if (L.replica) tg_store_close(L.replica);
  if (p) tg_store_close(p);
  if (rdir[0]) tgp_rmtree(rdir);
  if (pdir[0]) tgp_rmtree(pdir);
  stage_stop(&S);
  free(S.msgs);
  free(L.notes);
  free(L.lags);
  free(L.applied_ns);
  return rc;
}

static void usage(FILE *f) {
  fprintf(f, "usage: tg-bench replicate [--nats URL] [--replicas 1|3] [--threads T]\n"
             "                          [--count N] [--sync-count M] [--group G] [--depth D]\n"
             "                          [--rounds R] [--follow-count F] [--offered-rate O]\n"
             "                          [--lag-stages 0|1] [--linger-us U]\n"
             "                          [--dir PARENT] [--part all|ship|apply|lag] [--json]\n\n"
             "Token creation through a durable store, alternated over R rounds (default 3):\n"
             "strict, replicated (TG_REPLICATED: each call waits for its ack), balanced,\n"
             "balanced with shipping, and replicated_async (the asynchronous replicated\n"
             "commit: each thread creates G calls at balanced with shipping, then waits\n"
             "for the group's last LSN with tg_wait_replicated(); default G 1000; with\n"
             "--depth D a thread goes on creating while up to D of its groups wait, as an\n"
             "asynchronous producer does, and waits for the oldest one when D are\n"
             "unconfirmed; default 1); and\n"
             "the raw references: each replicated run's own messages (read back from its\n"
             "stream) published asynchronously, 256 in flight as the shipper; and\n"
             "replicated's again with only T callers' worth in flight.\n"
             "N (default 1000000) calls per balanced and replicated_async run, M\n"
             "(default 4000) per strict and replicated run. Without --nats a private\n"
             "nats-server (-js, on loopback) is started: --replicas 3 makes it a\n"
             "3-node cluster.\n"
             "The figures of each configuration are the medians over the rounds.\n"
             "Then the follower, once: a replica opened after a balanced primary with\n"
             "shipping put F (default 1000000, at least 1000) records in the stream and\n"
             "closed: its apply loop's rate (follower_apply_records_per_sec) and its\n"
             "catch-up rate from the open (follower_catchup_records_per_sec); and a\n"
             "replica following live while the primary offers F records at O records/s\n"
             "(default 1000000): the p99 of applied-on-replica minus returned-on-primary\n"
             "(follower_lag_p99_ms) and the rate the primary reached\n"
             "(follower_reached_records_per_sec, below O when it could not offer O),\n"
             "with the CPU each part had meanwhile (lag_cpu_*: shares of the cores' time;\n"
             "lag_cpu_nats_server -1 with --nats: that server is among lag_cpu_others);\n"
             "--lag-stages 1 splits the lag at the publish, seen by a subscriber of the\n"
             "stream's subject (lag_publish_*, lag_after_publish_*; it costs CPU).\n"
             "--linger-us U sets the follower parts' primary's wal.linger_us (default:\n"
             "the store's, 1000): how long its log writer gathers records into a batch,\n"
             "one message.\n"
             "--part ship|apply|lag runs only that part (default all).\n"
             "JSON keys: records_per_sec, raw_publish_records_per_sec, ratio_to_raw,\n"
             "ack_p50_ns, ack_p99_ns (the asynchronous commit's: records replicated per\n"
             "second, against its messages' raw publish; the p50/p99 of its waits),\n"
             "replicated_call_records_per_sec, replicated_call_ratio_to_raw,\n"
             "replicated_call_p50_ns, replicated_call_p99_ns (a TG_REPLICATED call's),\n"
             "balanced_ratio_to_raw (creation alone against the raw publish: the\n"
             "ceiling of ratio_to_raw when creating, not the stream, is the bound),\n"
             "cpu_ns_per_record, server_cpu_ns_per_record (replicated_async: this\n"
             "process's CPU time and the private server's per record while timed; the\n"
             "server's is 0 with --nats), raw_cpu_ns_per_record,\n"
             "raw_server_cpu_ns_per_record, balanced_cpu_ns_per_record,\n"
             "follower_apply_records_per_sec,\n"
             "follower_lag_p99_ms, follower_offered_records_per_sec,\n"
             "follower_reached_records_per_sec, follower_catchup_records_per_sec,\n"
             "follower_messages, follower_lag_p50_ms, follower_lag_pull_restarts,\n"
             "follower_apply_cpu_records_per_sec\n"
             "(the apply loop over its own CPU time), and the per-configuration figures.\n");
}

/* a / b, 0 when b is 0 (a part not run: JSON has no NaN). */
static double ratio(double a, double b) { return b > 0 ? a / b : 0; }

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
  const char *url = NULL, *parent = "/tmp", *part = "all";
  uint64_t replicas = 1, threads = 8, count = 1000000, sync_count = 4000, rounds = 3;
  uint64_t group = 1000, depth = 1;
  uint64_t follow_count = 1000000, offered_rate = 1000000, lag_stages = 0;
  uint64_t linger_us = UINT64_MAX;
  int json = 0;
  const tgb_opt opts[] = {{"--nats", NULL, &url},          {"--replicas", &replicas, NULL},
                          {"--threads", &threads, NULL},   {"--count", &count, NULL},
                          {"--sync-count", &sync_count, NULL}, {"--rounds", &rounds, NULL},
                          {"--follow-count", &follow_count, NULL},
                          {"--offered-rate", &offered_rate, NULL},
                          {"--lag-stages", &lag_stages, NULL},
                          {"--linger-us", &linger_us, NULL},
                          {"--group", &group, NULL},       {"--depth", &depth, NULL},
                          {"--dir", NULL, &parent},        {"--part", NULL, &part},
                          {NULL, NULL, NULL}};
  int prc = tgb_parse_args("replicate", argc, argv, opts, &json, usage);
  if (prc >= 0) return prc;
  group_depth = depth;
  if ((replicas != 1 && replicas != 3) || threads < 1 || threads > 256 || rounds < 1 ||
      rounds > 100 || count < threads || sync_count < threads || follow_count < 1000 ||
      group < 1 || depth < 1 || depth > 64 ||
      (linger_us != UINT64_MAX && linger_us > TG_WAL_LINGER_MAX_US) ||
      offered_rate < 1 || (strcmp(part, "all") && strcmp(part, "ship") &&
                           strcmp(part, "apply") && strcmp(part, "lag"))) {
    fprintf(stderr, "tg-bench replicate: --replicas 1|3, --threads 1..256, --rounds 1..100, "
                    "counts >= threads, --follow-count >= 1000, --offered-rate >= 1, "
                    "--group >= 1, --depth 1..64, --linger-us 0..%u, "
                    "--part all|ship|apply|lag\n", TG_WAL_LINGER_MAX_US);
    return 64;
  }
  if (linger_us != UINT64_MAX) follow_linger_us = (int64_t)linger_us;
  int do_ship = !strcmp(part, "all") || !strcmp(part, "ship");
  int do_apply = !strcmp(part, "all") || !strcmp(part, "apply");
  int do_lag = !strcmp(part, "all") || !strcmp(part, "lag");
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
    cpu_srv = &srv;
  }
  int T = (int)threads, R = do_ship ? (int)rounds : 0, rc = 0;
  /* Rows: the configurations, then the raw references of replicated_async's
     messages (RAW_ASYNC) and of replicated's (RAW_CALL). */
  enum { RAW_ASYNC = NCONF, RAW_CALL, NROW };
  double v[NROW][100], p50[NROW][100], p99[NROW][100], drain[100], bclose[100];
  double cpu[NROW][100], scpu[NROW][100];
  double msgs[2][100], per_msg[2][100], vi[100], wi[100];
  for (int r = 0; r < R && !rc; r++) {
    shipped sh_call = {0}, sh_async = {0};
    for (int c = 0; c < NCONF && !rc; c++) {
      result res = {0};
      uint64_t per = (c == C_STRICT || c == C_REPLICATED ? sync_count : count) / threads;
      shipped *sh = c == C_REPLICATED ? &sh_call : c == C_REPLICATED_ASYNC ? &sh_async : NULL;
      rc = run_store(c, url, (int)replicas, parent, T, per, group, r, &res, sh);
      v[c][r] = res.rps;
      cpu[c][r] = res.cpu_ns;
      scpu[c][r] = res.srv_cpu_ns;
      p50[c][r] = (double)res.p50 * tgp_ns_per_tick();
      p99[c][r] = (double)res.p99 * tgp_ns_per_tick();
      if (c == C_BALANCED_SHIP) drain[r] = res.drain_ms;
      if (c == C_BALANCED) bclose[r] = res.drain_ms;
    }
    for (int k = 0; k < 2 && !rc; k++) {
      const shipped *sh = k == 0 ? &sh_async : &sh_call;
      result res = {0};
      rc = run_raw(url, (int)replicas, sh, RAW_WINDOW, r * 2 + k, &res);
      if (rc) fprintf(stderr, "tg-bench replicate: the raw publish reference failed\n");
      v[RAW_ASYNC + k][r] = res.rps;
      cpu[RAW_ASYNC + k][r] = res.cpu_ns;
      scpu[RAW_ASYNC + k][r] = res.srv_cpu_ns;
      p50[RAW_ASYNC + k][r] = (double)res.p50 * tgp_ns_per_tick();
      p99[RAW_ASYNC + k][r] = (double)res.p99 * tgp_ns_per_tick();
      msgs[k][r] = (double)sh->n;
      per_msg[k][r] = sh->n ? (double)sh->records / (double)sh->n : 0;
    }
    if (!rc) {
      /* replicated's messages with only as many in flight as its T blocked
         callers can fill: T / (records per message). */
      result ri = {0};
      int win = sh_call.n ? (int)((double)T * (double)sh_call.n / (double)sh_call.records + 0.5)
                          : 1;
      if (win < 1) win = 1;
      rc = run_raw(url, (int)replicas, &sh_call, win, R * 2 + r, &ri);
      vi[r] = ri.rps;
      wi[r] = win;
    }
    shipped_free(&sh_call);
    shipped_free(&sh_async);
  }
  double f_apply = 0, f_apply_cpu = 0, f_catchup = 0;
  lag_out lag;
  memset(&lag, 0, sizeof lag);
  pid_t spids[TGN_MAX_NODES];
  for (int i = 0; i < srv.nodes; i++) spids[i] = srv.node[i].pid;
  uint64_t f_msgs = 0;
  if (!rc && do_apply)
    rc = run_follow_apply(url, (int)replicas, parent, follow_count, &f_apply, &f_apply_cpu,
                          &f_catchup, &f_msgs);
  if (!rc && do_lag)
    rc = run_follow_lag(url, (int)replicas, parent, follow_count, (double)offered_rate, spids,
                        srv.nodes, lag_stages != 0, &lag);
  if (srv.nodes) tgn_server_stop(&srv);
  if (rc) return 1;
  double m[NROW], m50[NROW], m99[NROW], mc[NROW], ms[NROW];
  for (int c = 0; c < NROW; c++) {
    mc[c] = median(cpu[c], R);
    ms[c] = median(scpu[c], R);
    m[c] = median(v[c], R);
    m50[c] = median(p50[c], R);
    m99[c] = median(p99[c], R);
  }
  double md = median(drain, R), mbc = median(bclose, R);
  double mmsgs[2], mper[2];
  for (int k = 0; k < 2; k++) {
    mmsgs[k] = median(msgs[k], R);
    mper[k] = median(per_msg[k], R);
  }
  double mvi = median(vi, R), mwi = median(wi, R);
  if (json) {
    /* records_per_sec, ratio_to_raw, ack_p*: the asynchronous commit's
       (replicated_async); replicated_call_*: a TG_REPLICATED call's. */
    printf("{\"bench\":\"replicate\",\"replicas\":%d,\"threads\":%d,\"rounds\":%d,"
           "\"group\":%" PRIu64 ",\"depth\":%" PRIu64 ","
           "\"records_per_sec\":%.0f,\"raw_publish_records_per_sec\":%.0f,"
           "\"ratio_to_raw\":%.3f,\"ack_p50_ns\":%.0f,\"ack_p99_ns\":%.0f,"
           "\"raw_publish_p50_ns\":%.0f,\"raw_publish_p99_ns\":%.0f,"
           "\"replicated_messages\":%.0f,\"records_per_message\":%.1f,\"raw_window\":%d,"
           "\"replicated_call_records_per_sec\":%.0f,\"replicated_call_p50_ns\":%.0f,"
           "\"replicated_call_p99_ns\":%.0f,"
           "\"replicated_call_raw_publish_records_per_sec\":%.0f,"
           "\"replicated_call_ratio_to_raw\":%.3f,\"replicated_call_messages\":%.0f,"
           "\"replicated_call_records_per_message\":%.1f,"
           "\"raw_same_inflight_records_per_sec\":%.0f,\"raw_same_inflight_window\":%.0f,"
           "\"ratio_to_raw_same_inflight\":%.3f,"
           "\"strict_records_per_sec\":%.0f,\"strict_p50_ns\":%.0f,\"strict_p99_ns\":%.0f,"
           "\"ratio_to_strict\":%.3f,\"balanced_records_per_sec\":%.0f,"
           "\"balanced_ship_records_per_sec\":%.0f,\"ship_ratio_to_balanced\":%.3f,"
           "\"balanced_ship_drain_ms\":%.1f,\"balanced_close_ms\":%.1f,"
           "\"async_ratio_to_balanced_ship\":%.3f,\"async_ratio_to_balanced\":%.3f,"
           "\"balanced_ratio_to_raw\":%.3f,\"cpu_ns_per_record\":%.0f,"
           "\"server_cpu_ns_per_record\":%.0f,\"raw_cpu_ns_per_record\":%.0f,"
           "\"raw_server_cpu_ns_per_record\":%.0f,\"balanced_cpu_ns_per_record\":%.0f,",
           (int)replicas, T, R, group, depth, m[C_REPLICATED_ASYNC], m[RAW_ASYNC],
           ratio(m[C_REPLICATED_ASYNC], m[RAW_ASYNC]), m50[C_REPLICATED_ASYNC],
           m99[C_REPLICATED_ASYNC], m50[RAW_ASYNC], m99[RAW_ASYNC], mmsgs[0], mper[0],
           RAW_WINDOW, m[C_REPLICATED], m50[C_REPLICATED], m99[C_REPLICATED], m[RAW_CALL],
           ratio(m[C_REPLICATED], m[RAW_CALL]), mmsgs[1], mper[1], mvi, mwi,
           ratio(m[C_REPLICATED], mvi), m[C_STRICT], m50[C_STRICT], m99[C_STRICT],
           ratio(m[C_REPLICATED], m[C_STRICT]), m[C_BALANCED], m[C_BALANCED_SHIP],
           ratio(m[C_BALANCED_SHIP], m[C_BALANCED]), md, mbc,
           ratio(m[C_REPLICATED_ASYNC], m[C_BALANCED_SHIP]),
           ratio(m[C_REPLICATED_ASYNC], m[C_BALANCED]), ratio(m[C_BALANCED], m[RAW_ASYNC]),
           mc[C_REPLICATED_ASYNC], ms[C_REPLICATED_ASYNC], mc[RAW_ASYNC], ms[RAW_ASYNC],
           mc[C_BALANCED]);
    printf("\"follower_apply_cpu_records_per_sec\":%.0f,\"lag_cpu_cores\":%.2f,"
           "\"lag_cpu_creator\":%.3f,\"lag_cpu_rest_of_process\":%.3f,"
           "\"lag_cpu_nats_server\":%.3f,\"lag_cpu_others\":%.3f,\"lag_cpu_idle\":%.3f,"
           "\"lag_publish_p50_ms\":%.3f,\"lag_publish_p99_ms\":%.3f,"
           "\"lag_after_publish_p50_ms\":%.3f,\"lag_after_publish_p99_ms\":%.3f,"
           "\"follower_apply_records_per_sec\":%.0f,\"follower_lag_p99_ms\":%.3f,"
           "\"follower_offered_records_per_sec\":%.0f,"
           "\"follower_reached_records_per_sec\":%.0f,"
           "\"follower_catchup_records_per_sec\":%.0f,\"follower_messages\":%" PRIu64 ","
           "\"follower_lag_p50_ms\":%.3f,\"follower_lag_pull_restarts\":%" PRIu64 "}\n",
           f_apply_cpu, lag.cpu.cores, lag.cpu.creator, lag.cpu.rest, lag.cpu.server,
           lag.cpu.others, lag.cpu.idle, lag.pub_p50_ms, lag.pub_p99_ms, lag.apply_p50_ms,
           lag.apply_p99_ms, f_apply, lag.p99_ms, (double)offered_rate, lag.reached, f_catchup,
           f_msgs, lag.p50_ms, lag.restarts);
  } else {
    printf("tg-bench replicate: R%d, %d threads, %d rounds (medians)\n", (int)replicas, T, R);
    printf("  %-16s %12s %12s %12s\n", "", "records/s", "p50 us", "p99 us");
    static const char *const raw_names[2] = {"raw_publish", "raw_publish_call"};
    for (int c = 0; c < NROW; c++)
      printf("  %-16s %12.0f %12.1f %12.1f\n", c >= NCONF ? raw_names[c - NCONF] : conf_names[c],
             m[c], m50[c] / 1e3, m99[c] / 1e3);
    printf("  (replicated_async: groups of %" PRIu64 " creates at BALANCED, then\n"
           "   tg_wait_replicated(); its p50/p99 are the waits. raw_publish: its %.0f messages,\n"
           "   %.1f records each, published asynchronously; raw_publish_call: replicated's %.0f\n"
           "   messages, %.1f records each; their p50/p99 are per message, publish to ack)\n",
           group, mmsgs[0], mper[0], mmsgs[1], mper[1]);
    printf("  replicated_async / raw publish: %.3f (window %d); / balanced_ship: %.3f;"
           " / balanced: %.3f\n", ratio(m[C_REPLICATED_ASYNC], m[RAW_ASYNC]), RAW_WINDOW,
           ratio(m[C_REPLICATED_ASYNC], m[C_BALANCED_SHIP]),
           ratio(m[C_REPLICATED_ASYNC], m[C_BALANCED]));
    printf("  balanced (creation alone, nothing shipped) / raw publish: %.3f: the ceiling of\n"
           "  replicated_async / raw publish when creation, not the stream, is the bound\n",
           ratio(m[C_BALANCED], m[RAW_ASYNC]));
    printf("  CPU per record (ns): replicated_async %.0f here + %.0f server; raw publish %.0f"
           " here + %.0f server; balanced %.0f (server: 0 with --nats)\n",
           mc[C_REPLICATED_ASYNC], ms[C_REPLICATED_ASYNC], mc[RAW_ASYNC], ms[RAW_ASYNC],
           mc[C_BALANCED]);
    printf("  replicated (a call) / its raw publish: %.3f; replicated / strict: %.3f\n",
           ratio(m[C_REPLICATED], m[RAW_CALL]), ratio(m[C_REPLICATED], m[C_STRICT]));
    printf("  raw publish of replicated's messages with %.0f in flight (T callers' worth): %.0f"
           " records/s; replicated / that: %.3f\n", mwi, mvi, ratio(m[C_REPLICATED], mvi));
    printf("  balanced with shipping / without: %.3f (then %.1f ms to close, waiting for the"
           " stream's acks; %.1f ms without shipping)\n", ratio(m[C_BALANCED_SHIP], m[C_BALANCED]),
           md, mbc);
    printf("  follower: %" PRIu64 " records in %" PRIu64 " messages: applied at %.0f records/s"
           " (the apply loop alone; %.0f records/s of its own CPU time), caught up at %.0f"
           " records/s (open to last record, fetching included)\n", follow_count, f_msgs,
           f_apply, f_apply_cpu, f_catchup);
    printf("  follower lag p99: %.3f ms (p50 %.3f ms) at %.0f records/s reached (%.0f offered)\n",
           lag.p99_ms, lag.p50_ms, lag.reached, (double)offered_rate);
    if (do_lag && lag.restarts)
      printf("  the follower restarted its pull %" PRIu64 " time(s) during the lag run (last: %s)\n",
             lag.restarts, lag.restart_why);
    if (do_lag && lag.cpu.server >= 0)
      printf("  CPU while it ran, of %.1f cores: the creating thread %.0f%%, the rest of this"
             " process (log writers, shipper, follower, client threads) %.0f%%, nats-server"
             " %.0f%%, other processes %.0f%%, idle %.0f%%\n", lag.cpu.cores,
             100 * lag.cpu.creator, 100 * lag.cpu.rest, 100 * lag.cpu.server,
             100 * lag.cpu.others, 100 * lag.cpu.idle);
    else if (do_lag)
      printf("  CPU while it ran, of %.1f cores: the creating thread %.0f%%, the rest of this"
             " process (log writers, shipper, follower, client threads) %.0f%%, other processes"
             " (the server given by --nats among them) %.0f%%, idle %.0f%%\n", lag.cpu.cores,
             100 * lag.cpu.creator, 100 * lag.cpu.rest, 100 * lag.cpu.others,
             100 * lag.cpu.idle);
    if (do_lag && lag_stages)
      printf("  lag stages: returned -> published p50 %.3f / p99 %.3f ms, published ->"
             " applied p50 %.3f / p99 %.3f ms\n", lag.pub_p50_ms, lag.pub_p99_ms,
             lag.apply_p50_ms, lag.apply_p99_ms);
    if (lag.reached < 0.95 * (double)offered_rate)
      printf("  the primary could not offer %.0f records/s on this machine: the lag is the"
             " one at %.0f records/s\n",
             (double)offered_rate, lag.reached);
  }
  return 0;
}
#endif
