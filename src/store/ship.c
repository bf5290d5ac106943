/*
 * Replication, the primary's side: ship every record the WAL writer writes
 * to the NATS JetStream stream TG_<name> (docs/durability.md,
 * "REPLICATED"; the transport is src/repl/).
 *
 * A MESSAGE is a run of WAL frames exactly as the segment holds them
 * (docs/wal-format.md), records only, LSNs contiguous within and across
 * messages, body at most tg__repl_max_body() (1 MiB less room for the
 * headers), split on frame boundaries; headers Tg-First-Lsn, Tg-Last-Lsn,
 * Tg-Epoch; Nats-Msg-Id "<epoch>:<first_lsn>"; published with
 * ExpectLastSeq = the stream sequence of the message before it. We are the
 * stream's only writer, so that sequence is known before its ack comes:
 * message k after the one at sequence q is at q + k. A publish refused for
 * its expected sequence (JetStream 10071) means another writer appended:
 * the store is FENCED (the log fails with TG_EFENCED; reads go on).
 *
 * AT OPEN (tg__ship_start), before any mutation: the stream's last message
 * says how far it goes (Tg-Last-Lsn L_s, Tg-Epoch). If the stream goes
 * beyond this directory's log, another writer went on from it: refused,
 * TG_EFENCED. Otherwise the records after L_s (after the checkpoint's LSN
 * for an empty stream: the WAL holds everything after it) are read back
 * from the log and published synchronously, and only then does the writer
 * thread's hook ship. So a crash between a local write and its publish
 * loses nothing from the stream: the next open publishes it.
 *
 * ACKS come on a libnats thread, in publish order: each raises the WAL's
 * `acked` (tg__wal_ship_acked), which TG_REPLICATED callers wait for. A
 * message unacknowledged after ack_timeout_ms (the server gone, a message
 * lost in a reconnect) fails the log with TG_EIO: the store is closed and
 * reopened, and the open ships again what the stream lacks (a resent
 * message carries the same Nats-Msg-Id: a duplicate is acknowledged, not
 * stored twice).
 *
 * LOCKING. `mu` guards the in-flight list, the position history, `w` and
 * the failure; the writer thread's publishing state (next_lsn, pub_seq) is
 * its own (and the opening thread's before the hook is armed). Lock order:
 * mu before the WAL's locks (the ack callback and the watchdog call into
 * the WAL holding mu); a publish never runs under mu, because a full
 * window waits for acks, which need mu.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/platform.h"
#include "store/store_internal.h"
#include "wal/wal_store.h"

#ifndef TG_HAVE_NATS

int tg__ship_config_check(const tg_store_config *cfg, char *msg, size_t len) {
  if (!cfg->nats_url && !cfg->repl_name && cfg->wal.level != TG_REPLICATED) return 0;
  tg__say(msg, len, "replication (nats_url, repl_name, level TG_REPLICATED): %s",
          tg_strerror(TG_ENOTSUP));
  return TG_ENOTSUP;
}
int tg__ship_open(tg__ship **out, const tg_store_config *cfg, const struct tg__wal_ship **hook,
                  char *msg, size_t len) {
  (void)cfg;
  *out = NULL;
  *hook = NULL;
  tg__say(msg, len, "%s", tg_strerror(TG_ENOTSUP));
  return TG_ENOTSUP;
}
int tg__ship_start(tg__ship *sh, tg_wal *w, const char *waldir, uint64_t ckpt_lsn, char *msg,
                   size_t len) {
  (void)sh, (void)w, (void)waldir, (void)ckpt_lsn, (void)msg, (void)len;
  return TG_ENOTSUP;
}
void tg__ship_detach(tg__ship *sh) { (void)sh; }
void tg__ship_close(tg__ship *sh) { (void)sh; }
void tg__ship_position(tg__ship *sh, uint64_t lsn, uint64_t *seq, uint64_t *epoch) {
  (void)sh, (void)lsn;
  *seq = *epoch = 0;
}
void tg__ship_min_epoch(tg__ship *sh, uint64_t epoch) { (void)sh, (void)epoch; }
uint64_t tg__ship_acked_lsn(tg__ship *sh) {
  (void)sh;
  return 0;
}
void tg__ship_fence(tg__ship *sh) { (void)sh; }

#else /* TG_HAVE_NATS */

#include "common/endian.h"
#include "repl/repl.h"
#include "wal/wal_internal.h"

#define FLIGHT_CAP 1024u   /* messages in flight (libnats waits at 256) */
#define HIST_CAP 65536u    /* positions kept for checkpoints: 64 GiB of
                              1 MiB messages, far more than one interval */

typedef struct flight {
  uint64_t last_lsn, seq, t_ns;
} flight;

typedef struct pos {
  uint64_t lsn, seq; /* message at seq ends with lsn */
} pos;

struct tg__ship {
  tg__repl *r;
  tg__repl_names names;
  tg__wal_ship hook;          /* read-only after open */
  uint64_t epoch;             /* read-only after start */
  uint64_t cfg_epoch;         /* tg_store_config.repl_epoch (0: the stream's) */
  uint64_t ack_timeout_ns;    /* read-only */
  size_t max_body;            /* read-only */

  /* The writer thread's (the opening thread's before armed). */
  uint64_t next_lsn;          /* next LSN to publish */
  uint64_t pub_seq;           /* stream sequence of the last message published */
  int armed;                  /* start done: the hook ships */

  pthread_mutex_t mu;
  pthread_cond_t cv;          /* under mu: acks (only while cv_waiters),
                                 failure, stop */
  int cv_waiters;             /* under mu: threads waiting on cv for acks
                                 (a full window, close) */
  pthread_cond_t wd_cv;       /* under mu: the watchdog's period and stop */
  tg_wal *w;                  /* under mu: NULL before start and after detach */
  flight fl[FLIGHT_CAP];      /* under mu: in publish order */
  size_t fl_head, fl_n;       /* under mu */
  pos *hist;                  /* under mu: ring of HIST_CAP */
  size_t hist_head, hist_n;   /* under mu */
  uint64_t acked_lsn;         /* under mu */
  int failed;                 /* under mu: 0, TG_EFENCED or TG_EIO */
  int stop;                   /* under mu: ends the watchdog */
  pthread_t watchdog;
  int watchdog_started;
};

int tg__ship_config_check(const tg_store_config *cfg, char *msg, size_t len) {
  int want = cfg->nats_url || cfg->repl_name;
  if (!want && cfg->wal.level != TG_REPLICATED) return 0;
  if (!want) {
    tg__say(msg, len, "invalid configuration: level TG_REPLICATED needs nats_url and "
            "repl_name");
    return TG_ECONFIG;
  }
  if (!cfg->nats_url || !cfg->repl_name) {
    tg__say(msg, len, "invalid configuration: replication needs both nats_url and "
            "repl_name");
    return TG_ECONFIG;
  }
  if (!tg__repl_name_ok(cfg->repl_name)) {
    tg__say(msg, len, "invalid configuration: repl_name '%s' is not 1..%d characters of "
            "[A-Za-z0-9_-]", cfg->repl_name, TG__REPL_NAME_MAX);
    return TG_ECONFIG;
  }
  if (cfg->repl_replicas != 1 && cfg->repl_replicas != 3) {
    tg__say(msg, len, "invalid configuration: repl_replicas %d is not 1 or 3",
            cfg->repl_replicas);
    return TG_ECONFIG;
  }
  if (cfg->repl_ack_timeout_ms == 0) {
    tg__say(msg, len, "invalid configuration: repl_ack_timeout_ms is 0");
    return TG_ECONFIG;
  }
  if (cfg->repl_lease_ttl_ms < 150) { /* renewed every 50 ms at least (lease.c) */
    tg__say(msg, len, "invalid configuration: repl_lease_ttl_ms %u is below 150",
            cfg->repl_lease_ttl_ms);
    return TG_ECONFIG;
  }
  if (cfg->read_only) {
    tg__say(msg, len, "invalid configuration: a read-only handle does not replicate");
    return TG_ECONFIG;
  }
  return 0;
}

/* Fail under mu: the first failure wins. */
static void fail_locked(tg__ship *sh, int rc) {
  if (sh->failed) return;
  sh->failed = rc;
  tg__repl_cancel(sh->r); /* a writer stuck on a full window returns */
  if (sh->w) tg__wal_ship_failed(sh->w, rc);
  pthread_cond_broadcast(&sh->cv);
}

static void on_ack(void *arg, uint64_t seq, uint64_t last_lsn, int duplicate) {
  (void)duplicate; /* a resend the stream had: acknowledged all the same */
  (void)seq;
  tg__ship *sh = arg;
  pthread_mutex_lock(&sh->mu);
  while (sh->fl_n && sh->fl[sh->fl_head].last_lsn <= last_lsn) {
    sh->fl_head = (sh->fl_head + 1) % FLIGHT_CAP;
    sh->fl_n--;
  }
  if (last_lsn > sh->acked_lsn) {
    sh->acked_lsn = last_lsn;
    if (sh->w) tg__wal_ship_acked(sh->w, last_lsn);
  }
  /* Only a full window or a close waits for acks here. The watchdog has a
     condition variable of its own: woken by every ack, it cost a context
     switch per message and looked at nothing new (its check is periodic). */
  if (sh->cv_waiters) pthread_cond_broadcast(&sh->cv);
  pthread_mutex_unlock(&sh->mu);
}

/* A refusal. A wrong expected sequence (10071) is another writer's append,
   unless a message published before this one was never acknowledged: acks
   come in publish order, so that one was lost (sent into a connection that
   died), and the stream is behind this store, not ahead of it. That is an
   I/O failure, which a reopen repairs by shipping what the stream lacks. */
static void on_error(void *arg, int js_code, uint64_t last_lsn, const char *text) {
  tg__ship *sh = arg;
  pthread_mutex_lock(&sh->mu);
  int lost = sh->fl_n && sh->fl[sh->fl_head].last_lsn < last_lsn;
  int rc = js_code == TG__REPL_JS_WRONG_LAST_SEQ && !lost ? TG_EFENCED : TG_EIO;
  if (!sh->failed)
    fprintf(stderr, "tokengraph: replication: the stream refused LSNs up to %" PRIu64
            ": %s (JetStream error %d)%s: the store is %s\n", last_lsn, text, js_code,
            lost ? " after losing an earlier message" : "",
            rc == TG_EFENCED ? "fenced" : "failed; reopen it to resume shipping");
  fail_locked(sh, rc);
  pthread_mutex_unlock(&sh->mu);
}

/* Fails the log when the oldest message in flight waited too long. A
   period of a tenth of the timeout keeps the bound within 10%. */
static void *watchdog_main(void *arg) {
  tg__ship *sh = arg;
  pthread_mutex_lock(&sh->mu);
  while (!sh->stop) {
    uint64_t now = tg__now_ns();
    if (!sh->failed && sh->fl_n && now - sh->fl[sh->fl_head].t_ns > sh->ack_timeout_ns) {
      fprintf(stderr, "tokengraph: replication: LSNs up to %" PRIu64 " not acknowledged "
              "by stream %s within %" PRIu64 " ms: the log is failed; reopen the store to "
              "resume shipping\n", sh->fl[sh->fl_head].last_lsn, sh->names.stream,
              sh->ack_timeout_ns / 1000000u);
      fail_locked(sh, TG_EIO);
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t t = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec + sh->ack_timeout_ns / 10;
    ts.tv_sec = (time_t)(t / 1000000000u);
    ts.tv_nsec = (long)(t % 1000000000u);
    pthread_cond_timedwait(&sh->wd_cv, &sh->mu, &ts);
  }
  pthread_mutex_unlock(&sh->mu);
  return NULL;
}

/* Publish one message of frames [p, p+n) holding first..last. */
static int publish_one(tg__ship *sh, const unsigned char *p, size_t n, uint64_t first,
                       uint64_t last, int sync) {
  if (sync) {
    uint64_t seq = 0;
    int rc = tg__repl_publish_sync(sh->r, sh->names.subject, p, n, first, last, sh->epoch,
                                   sh->pub_seq, &seq);
    if (rc) return rc;
    sh->pub_seq = seq;
  } else {
    pthread_mutex_lock(&sh->mu);
    sh->cv_waiters++;
    while (sh->fl_n == FLIGHT_CAP && !sh->failed) pthread_cond_wait(&sh->cv, &sh->mu);
    sh->cv_waiters--;
    int f = sh->failed;
    if (!f) {
      flight *e = &sh->fl[(sh->fl_head + sh->fl_n) % FLIGHT_CAP];
      e->last_lsn = last;
      e->seq = sh->pub_seq + 1;
      e->t_ns = tg__now_ns();
      sh->fl_n++;
    }
    pthread_mutex_unlock(&sh->mu);
    if (f) return f;
    int rc = tg__repl_publish_async(sh->r, sh->names.subject, p, n, first, last, sh->epoch,
                                    sh->pub_seq);
    if (rc) return rc == TG_EFENCED ? rc : TG_EIO;
    sh->pub_seq++;
  }
  pthread_mutex_lock(&sh->mu);
  pos *h = &sh->hist[(sh->hist_head + sh->hist_n) % HIST_CAP];
  if (sh->hist_n == HIST_CAP) sh->hist_head = (sh->hist_head + 1) % HIST_CAP;
  else sh->hist_n++;
  h->lsn = last;
  h->seq = sh->pub_seq;
  pthread_mutex_unlock(&sh->mu);
  return 0;
}

/* Split frames [buf, buf+len) (records first..) into messages on frame
   boundaries and publish them. */
static int ship_frames(tg__ship *sh, const unsigned char *buf, size_t len, int sync) {
  size_t o = 0;
  while (o < len) {
    size_t start = o;
    uint64_t first = tg__ld64(buf + o + 8) & TG_WAL_MAX_LSN, last = first;
    while (o < len) {
      size_t f = tg__align8(tg__ld32(buf + o));
      if (o + f - start > sh->max_body) break;
      last = tg__ld64(buf + o + 8) & TG_WAL_MAX_LSN;
      o += f;
    }
    if (o == start) return TG_EINVAL; /* a frame over the limit: max_payload forbids it */
    int rc = publish_one(sh, buf + start, o - start, first, last, sync);
    if (rc) return rc;
    sh->next_lsn = last + 1;
  }
  return 0;
}

/* The WAL writer's hook (wal_store.h): after each written batch. */
static int ship_hook(void *ctx, const void *frames, size_t len, uint64_t first, uint64_t last) {
  tg__ship *sh = ctx;
  if (!sh->armed) return 0; /* open: tg__ship_start reads these back */
  const unsigned char *p = frames;
  if (last < sh->next_lsn) return 0;
  while (first < sh->next_lsn) { /* shipped by the start already */
    size_t f = tg__align8(tg__ld32(p));
    p += f;
    len -= f;
    first++;
  }
  if (first != sh->next_lsn) {
    fprintf(stderr, "tokengraph: replication: the log handed LSN %" PRIu64 " where %" PRIu64
            " was next\n", first, sh->next_lsn);
    return TG_EIO;
  }
  if (len <= sh->max_body) {
    /* One message: its LSNs are the hook's, no need to walk the frames
       for a split (the walk read every frame's header again, a cache miss
       per 64 bytes of a batch the writer wrote a moment ago). */
    int rc = publish_one(sh, p, len, first, last, 0);
    if (!rc) sh->next_lsn = last + 1;
    return rc;
  }
  return ship_frames(sh, p, len, 0);
}

/* The stream's last message, its body copied (the caller frees data). */
static int last_msg_cb(void *arg, const tg__repl_msg *m) {
  tg__repl_msg *out = arg;
  *out = *m;
  out->id = NULL;
  void *d = malloc(m->len ? m->len : 1);
  if (!d) return TG_ENOMEM;
  memcpy(d, m->data, m->len);
  out->data = d;
  return 0;
}

/* Encode record r as its WAL frame at d (docs/wal-format.md); returns the
   frame's padded size. */
static size_t frame_encode(unsigned char *d, const tg_wal_record *r) {
  size_t f = tg__align8(TG__WAL_FRAME_HDR + r->len);
  tg__st32(d, (uint32_t)(TG__WAL_FRAME_HDR + r->len));
  tg__st64(d + 8, r->lsn | (uint64_t)r->type << 56);
  memcpy(d + TG__WAL_FRAME_HDR, r->payload, r->len);
  memset(d + TG__WAL_FRAME_HDR + r->len, 0, f - TG__WAL_FRAME_HDR - r->len);
  tg__st32(d + 4, tg__wal_frame_crc(d, (uint32_t)(TG__WAL_FRAME_HDR + r->len)));
  return f;
}

int tg__ship_open(tg__ship **out, const tg_store_config *cfg, const struct tg__wal_ship **hook,
                  char *msg, size_t len) {
  *out = NULL;
  *hook = NULL;
  tg__ship *sh = calloc(1, sizeof *sh);
  int rc = TG_ENOMEM;
  if (!sh || !(sh->hist = calloc(HIST_CAP, sizeof *sh->hist))) goto fail;
  pthread_mutex_init(&sh->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&sh->cv, &ca);
  pthread_cond_init(&sh->wd_cv, &ca);
  pthread_condattr_destroy(&ca);
  tg__repl_names_of(&sh->names, cfg->repl_name);
  sh->ack_timeout_ns = (uint64_t)cfg->repl_ack_timeout_ms * 1000000u;
  sh->cfg_epoch = cfg->repl_epoch;
  tg__repl_acks acks = {.on_ack = on_ack, .on_error = on_error, .arg = sh};
  if ((rc = tg__repl_connect(&sh->r, cfg->nats_url, &acks, msg, len))) goto fail;
  if ((rc = tg__repl_stream_ensure(sh->r, sh->names.stream, sh->names.subject,
                                   cfg->repl_replicas, msg, len)))
    goto fail;
  sh->max_body = tg__repl_max_body(sh->r);
  sh->hook.ship = ship_hook;
  sh->hook.ctx = sh;
  sh->hook.max_payload = (uint32_t)(sh->max_body - TG__WAL_FRAME_HDR - TG__WAL_ALIGN);
  *hook = &sh->hook;
  *out = sh;
  return 0;
fail:
  tg__ship_close(sh);
  return rc;
}

int tg__ship_start(tg__ship *sh, tg_wal *w, const char *waldir, uint64_t ckpt_lsn, char *msg,
                   size_t len) {
  tg__repl_stream_state st;
  tg__repl_msg last = {0};
  tg_wal_reader *rd = NULL;
  unsigned char *buf = NULL;
  int rc = tg__repl_stream_state_get(sh->r, sh->names.stream, &st);
  if (rc) {
    tg__say(msg, len, "stream %s: %s", sh->names.stream, tg_strerror(rc));
    return rc;
  }
  if (st.last_seq && (rc = tg__repl_get_msg(sh->r, sh->names.stream, st.last_seq, last_msg_cb,
                                            &last))) {
    tg__say(msg, len, "stream %s: cannot read its last message (%" PRIu64 "): %s",
            sh->names.stream, st.last_seq, tg_strerror(rc));
    return rc;
  }
  tg_wal_stats ws;
  tg_wal_stats_get(w, &ws);
  uint64_t local = ws.next_lsn - 1;
  if (last.last_lsn > local) {
    tg__say(msg, len, "stream %s holds LSNs up to %" PRIu64 " (epoch %" PRIu64 ") but this "
            "log ends at %" PRIu64 ": another writer went on from it; this directory must "
            "follow as a replica", sh->names.stream, last.last_lsn, last.epoch, local);
    rc = TG_EFENCED;
    goto out;
  }
  if (sh->cfg_epoch && last.epoch > sh->cfg_epoch) {
    tg__say(msg, len, "stream %s is at epoch %" PRIu64 ", past this store's %" PRIu64
            ": a newer writer owns it", sh->names.stream, last.epoch, sh->cfg_epoch);
    rc = TG_EFENCED;
    goto out;
  }
  /* The configured epoch; else the stream's, or a later one this
     directory was promoted to (tg__ship_min_epoch: its checkpoint's). */
  uint64_t se = last.epoch ? last.epoch : 1;
  if (sh->epoch < se) sh->epoch = se;
  if (sh->cfg_epoch) sh->epoch = sh->cfg_epoch;
  sh->pub_seq = st.last_seq;
  if (st.last_seq) {
    sh->hist[0].lsn = last.last_lsn; /* nothing else runs yet */
    sh->hist[0].seq = st.last_seq;
    sh->hist_n = 1;
  }
  sh->next_lsn = st.last_seq ? last.last_lsn + 1 : ckpt_lsn + 1;
  /* The stream's last message must be this log's frames byte for byte:
     a writer that took over may have appended the same LSNs with other
     records (this directory then kept a record the stream refused). When
     the log no longer holds them (checkpointed away) there is nothing to
     compare with, and the stream is taken as this log's. */
  if (st.last_seq && last.first_lsn > ckpt_lsn) {
    if (!(buf = malloc(sh->max_body))) {
      rc = TG_ENOMEM;
      goto out;
    }
    if ((rc = tg_wal_reader_open(&rd, waldir, last.first_lsn))) goto out;
    size_t n = 0;
    tg_wal_record r;
    while (tg_wal_reader_next(rd, &r) && r.lsn <= last.last_lsn) {
      if (r.lsn < last.first_lsn) continue;
      if (n + tg__align8(TG__WAL_FRAME_HDR + r.len) > sh->max_body) break;
      n += frame_encode(buf + n, &r);
    }
    tg_wal_reader_close(rd);
    rd = NULL;
    if (n != last.len || memcmp(buf, last.data, n)) {
      tg__say(msg, len, "stream %s: its last message (LSNs %" PRIu64 "..%" PRIu64 ", epoch %"
              PRIu64 ") differs from this log's records: another writer went on from it; "
              "this directory must follow as a replica", sh->names.stream, last.first_lsn,
              last.last_lsn, last.epoch);
      rc = TG_EFENCED;
      goto out;
    }
  }
  if (sh->next_lsn <= local) {
    /* What the stream lacks, read back from the log and published
       synchronously (an open only: the writer has nothing else yet). */
    if (!buf && !(buf = malloc(sh->max_body))) {
      rc = TG_ENOMEM;
      goto out;
    }
    if ((rc = tg_wal_reader_open(&rd, waldir, sh->next_lsn))) goto out;
    size_t n = 0;
    uint64_t from = sh->next_lsn;
    tg_wal_record r;
    while (tg_wal_reader_next(rd, &r)) {
      if (r.lsn < from) continue;
      size_t f = tg__align8(TG__WAL_FRAME_HDR + r.len);
      if (f > sh->max_body) {
        rc = TG_EINVAL;
        tg__say(msg, len, "LSN %" PRIu64 ": a record of %u bytes does not fit in one "
                "message of stream %s", r.lsn, r.len, sh->names.stream);
        goto out;
      }
      if (n + f > sh->max_body) {
        if ((rc = ship_frames(sh, buf, n, 1))) goto shipfail;
        n = 0;
      }
      n += frame_encode(buf + n, &r);
      if (r.lsn == local) break;
    }
    if (n && (rc = ship_frames(sh, buf, n, 1))) goto shipfail;
    if (sh->next_lsn != local + 1) {
      const tg_wal_end *e = tg_wal_reader_end(rd);
      rc = TG_ECORRUPT;
      tg__say(msg, len, "%s: cannot ship LSNs %" PRIu64 "..%" PRIu64 " to stream %s: the log "
              "ends at %" PRIu64 " (%s)", waldir, sh->next_lsn, local, sh->names.stream,
              e->last_lsn, e->what ? e->what : "records missing");
      goto out;
    }
  }
  pthread_mutex_lock(&sh->mu);
  sh->w = w;
  sh->acked_lsn = local;
  pthread_mutex_unlock(&sh->mu);
  tg__wal_ship_acked(w, local);
  if (pthread_create(&sh->watchdog, NULL, watchdog_main, sh) == 0) sh->watchdog_started = 1;
  else rc = TG_ENOMEM;
  sh->next_lsn = local + 1;
  sh->armed = 1;
  goto out;
shipfail:
  tg__say(msg, len, "stream %s: cannot publish LSNs from %" PRIu64 ": %s", sh->names.stream,
          sh->next_lsn, rc == TG_EFENCED ? "another writer appended meanwhile (fenced)"
                                         : tg_strerror(rc));
out:
  tg_wal_reader_close(rd);
  free(buf);
  free((void *)last.data);
  return rc;
}

void tg__ship_detach(tg__ship *sh) {
  if (!sh) return;
  pthread_mutex_lock(&sh->mu);
  sh->w = NULL;
  pthread_mutex_unlock(&sh->mu);
}

void tg__ship_close(tg__ship *sh) {
  if (!sh) return;
  if (sh->hist) {
    /* Let the last messages be acknowledged: a clean close leaves the
       stream complete. Bounded by the ack timeout (the watchdog fails it). */
    pthread_mutex_lock(&sh->mu);
    sh->cv_waiters++;
    while (sh->fl_n && !sh->failed && sh->watchdog_started) pthread_cond_wait(&sh->cv, &sh->mu);
    sh->cv_waiters--;
    sh->stop = 1;
    pthread_cond_broadcast(&sh->cv);
    pthread_cond_broadcast(&sh->wd_cv);
    pthread_mutex_unlock(&sh->mu);
  }
  if (sh->watchdog_started) pthread_join(sh->watchdog, NULL);
  tg__repl_close(sh->r);
  if (sh->hist) {
    pthread_cond_destroy(&sh->cv);
    pthread_cond_destroy(&sh->wd_cv);
    pthread_mutex_destroy(&sh->mu);
  }
  free(sh->hist);
  free(sh);
}

void tg__ship_min_epoch(tg__ship *sh, uint64_t epoch) {
  if (sh && epoch > sh->epoch) sh->epoch = epoch; /* before tg__ship_start */
}

void tg__ship_position(tg__ship *sh, uint64_t lsn, uint64_t *seq, uint64_t *epoch) {
  *seq = 0;
  *epoch = sh->epoch;
  pthread_mutex_lock(&sh->mu);
  /* Newest first: a checkpoint's LSN is recent. */
  for (size_t i = sh->hist_n; i > 0; i--) {
    const pos *h = &sh->hist[(sh->hist_head + i - 1) % HIST_CAP];
    if (h->lsn <= lsn) {
      *seq = h->seq;
      break;
    }
  }
  pthread_mutex_unlock(&sh->mu);
}

uint64_t tg__ship_acked_lsn(tg__ship *sh) {
  pthread_mutex_lock(&sh->mu);
  uint64_t a = sh->acked_lsn;
  pthread_mutex_unlock(&sh->mu);
  return a;
}

void tg__ship_fence(tg__ship *sh) {
  pthread_mutex_lock(&sh->mu);
  fail_locked(sh, TG_EFENCED);
  pthread_mutex_unlock(&sh->mu);
}

#endif /* TG_HAVE_NATS */

/* ---- the replicated position (tokengraph.h) ------------------------------ */

/* The log of a store that ships, or NULL. A read-only handle and a replica
   not promoted ship nothing. Acquire: a promotion reopens the log with a
   shipper, then clears writes_refused with a release (replica.c), so a
   caller that sees it cleared sees s->wal and s->ship as reopened. */
static tg_wal *shipping_wal(tg_store *s) {
  if (__atomic_load_n(&s->writes_refused, __ATOMIC_ACQUIRE)) return NULL;
  return s->wal && s->ship ? s->wal : NULL;
}

uint64_t tg_replicated_lsn(tg_store *s) {
  if (!s) return 0;
  TG__CALL_GUARD(s);
  tg_wal *w = shipping_wal(s);
  return w ? tg__wal_acked(w) : 0;
}

int tg_wait_replicated(tg_store *s, uint64_t lsn, uint32_t timeout_ms) {
  if (!s) return TG_EINVAL;
  TG__CALL_GUARD(s);
  tg_wal *w = shipping_wal(s);
  if (!w) return TG_EINVAL;
  if (!lsn) return 0;
  uint64_t deadline = timeout_ms ? tg__now_ns() + (uint64_t)timeout_ms * 1000000u : 0;
  int rc = tg__wal_wait_replicated(w, lsn, deadline);
  if (rc && rc != -ETIMEDOUT) tg__store_note_log_failure(s, rc);
  return rc;
}
