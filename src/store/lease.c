/*
 * The leader lease held by a running writer (docs/operations.md,
 * "Replication"; docs/durability.md, "Fencing").
 *
 * THE LEASE is the key `leader` of the KV bucket TG_LEASE_<name>, value
 * {"epoch":E,"owner":"<host>:<pid>:<random>","lsn":L,"ttl_ms":T}, always
 * written with compare-and-swap on the key's revision. A writer holds it
 * for its epoch and writes it again every T/3 (its renewal); the bucket's
 * max age removes a key nobody renewed. A follower judges the holder gone
 * when the key is absent, released (owner ""), older than T by its
 * timestamp, or not rewritten during T of the follower's own watching
 * (replica.c, "failover").
 *
 * AT OPEN of a replicating store (tg__lease_acquire, before the store
 * ships anything): the lease is taken for the epoch the store will ship
 * at. A lease of a newer epoch than both this directory and the stream
 * have seen is a promotion elsewhere: the open is refused, TG_EFENCED,
 * before this store publishes a record that would fence the promoted
 * writer. A lease of this epoch or an older one, held or not, is taken
 * over by compare-and-swap: its holder, if alive, is fenced by the
 * stream's expected sequence, and its next renewal finds the key taken.
 *
 * RENEWAL (the holder's thread, every period = min(T, bucket max age)/3):
 * compare-and-swap on the revision it last wrote. A refused swap reads
 * the key: ours (the reply was lost) is adopted; absent or released is
 * taken again; a lease of an older epoch is taken back; another owner at
 * this epoch or a newer one means a newer writer: the store is FENCED
 * (tg__ship_fence: every mutating call returns TG_EFENCED), as a refused
 * publish fences it. A renewal that cannot reach the server tries again
 * at the next period: the stream's expected sequence, not the lease, is
 * what stops two writers, and a writer cut off from the server cannot
 * publish either.
 *
 * CLOSE: the thread stops before the log closes; once the log closed
 * cleanly and its last messages were acknowledged, the lease is RELEASED
 * by compare-and-swap (owner "", epoch kept): a replica may be promoted at
 * once and a failover follower takes over at once. A store fenced, failed,
 * or whose lease moved on releases nothing.
 *
 * LOCKING: h->mu guards what is marked mu; the thread's KV calls run
 * without it (they wait for the server). Lock order: h->mu before the
 * shipper's mu (tg__ship_fence under h->mu).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store/store_internal.h"

#ifndef TG_HAVE_NATS

/* Without libnats no store replicates (tg__ship_open refuses), so none
   holds a lease: these are never reached with a holder. */
int tg__lease_acquire(tg__lease_holder **out, const tg_store_config *cfg, uint64_t dir_epoch,
                      uint64_t lsn, char *msg, size_t len) {
  (void)cfg, (void)dir_epoch, (void)lsn;
  *out = NULL;
  tg__say(msg, len, "%s", tg_strerror(TG_ENOTSUP));
  return TG_ENOTSUP;
}
int tg__lease_start(tg__lease_holder *h, tg__ship *ship) {
  (void)h, (void)ship;
  return TG_ENOTSUP;
}
void tg__lease_stop(tg__lease_holder *h) { (void)h; }
void tg__lease_release(tg__lease_holder *h, uint64_t lsn) { (void)h, (void)lsn; }
void tg__lease_free(tg__lease_holder *h) { (void)h; }

#else

#include "repl/repl.h"

#define LEASE_MIN_PERIOD_MS 50u /* a floor for tiny TTLs (tests) */

struct tg__lease_holder {
  tg__follow *f;             /* the holder's own connection (thread, then
                                close) */
  char owner[128];           /* read-only */
  uint64_t epoch;            /* read-only after acquire */
  uint32_t ttl_ms;           /* read-only: written into the value */
  uint32_t period_ms;        /* read-only: renewal period */
  pthread_mutex_t mu;
  pthread_cond_t cv;         /* mu: stop */
  int stop;                  /* mu */
  int lost;                  /* mu: another owner holds it (fenced) */
  uint64_t revision;         /* mu: the revision we last wrote */
  uint64_t renewals;         /* mu: renewals that succeeded */
  uint64_t failures;         /* mu: renewals that could not reach the server */
  tg__ship *ship;            /* mu: fenced when the lease is lost, or NULL */
  uint64_t lsn;              /* mu: the LSN written without a shipper */
  pthread_t thread;
  int started;
};

void tg__lease_owner_id(char *out, size_t n) {
  char host[64] = "localhost";
  gethostname(host, sizeof host - 1);
  host[sizeof host - 1] = 0;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  unsigned r = (unsigned)ts.tv_nsec ^ ((unsigned)getpid() << 16) ^ (unsigned)ts.tv_sec;
  snprintf(out, n, "%s:%d:%08x", host, (int)getpid(), r);
}

int tg__lease_live(const tg__lease *l, const char *me, uint32_t default_ttl_ms) {
  if (!l->revision || !l->owner[0]) return 0; /* absent or released */
  if (me && !strcmp(l->owner, me)) return 0;  /* our own */
  uint64_t ttl = l->ttl_ms ? l->ttl_ms : default_ttl_ms;
  return l->age_ms < ttl;
}

static tg__lease_holder *holder_new(const char *url, const char *name, uint32_t ttl_ms,
                                    uint64_t epoch, const char *owner, char *msg, size_t len,
                                    int *rc) {
  tg__lease_holder *h = calloc(1, sizeof *h);
  if (!h) {
    *rc = TG_ENOMEM;
    return NULL;
  }
  pthread_mutex_init(&h->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&h->cv, &ca);
  pthread_condattr_destroy(&ca);
  h->ttl_ms = ttl_ms;
  h->epoch = epoch;
  h->period_ms = ttl_ms / 3 > LEASE_MIN_PERIOD_MS ? ttl_ms / 3 : LEASE_MIN_PERIOD_MS;
  if (owner) snprintf(h->owner, sizeof h->owner, "%s", owner);
  else tg__lease_owner_id(h->owner, sizeof h->owner);
  /* A request waits at most half the TTL: a slow answer still renews in
     time, and a renewal against a server gone away gives up before the
     lease would lapse anyway. */
  *rc = tg__lease_connect(&h->f, url, name, ttl_ms / 2, msg, len);
  if (*rc) {
    tg__lease_free(h);
    return NULL;
  }
  /* A bucket that keeps keys for less than our TTL (made by another
     configuration) sets the pace: renew within a third of it. */
  uint64_t bttl = 0;
  if (tg__follow_lease_bucket_ttl(h->f, &bttl, NULL, 0) == 0 && bttl && bttl < ttl_ms &&
      bttl / 3 < h->period_ms)
    h->period_ms = bttl / 3 > LEASE_MIN_PERIOD_MS ? (uint32_t)(bttl / 3) : LEASE_MIN_PERIOD_MS;
  return h;
}

/* The epoch of the stream's last message (0: empty). */
static int stream_epoch(tg__follow *f, const char *name, uint64_t *epoch, char *msg,
                        size_t len) {
  tg__repl_names n;
  tg__repl_names_of(&n, name);
  tg__repl_hdr h = {"Tg-Epoch", 0};
  void *data = NULL;
  size_t dlen = 0;
  int rc = tg__follow_get(f, n.stream, n.subject, 0, &h, 1, &data, &dlen, NULL, msg, len);
  free(data);
  *epoch = rc == 0 ? h.value : 0;
  return rc == -ENOENT ? 0 : rc;
}

int tg__lease_acquire(tg__lease_holder **out, const tg_store_config *cfg, uint64_t dir_epoch,
                      uint64_t lsn, char *msg, size_t len) {
  int rc = 0;
  *out = NULL;
  tg__lease_holder *h = holder_new(cfg->nats_url, cfg->repl_name, cfg->repl_lease_ttl_ms, 0,
                                   NULL, msg, len, &rc);
  if (!h) return rc;
  /* The epoch this store will ship at (ship.c's rule, tg__ship_start): the
     configured one, else the newer of the stream's last message's and
     this directory's. */
  uint64_t se = 0;
  if ((rc = stream_epoch(h->f, cfg->repl_name, &se, msg, len))) goto fail;
  uint64_t epoch = se > dir_epoch ? se : dir_epoch;
  if (!epoch) epoch = 1;
  if (cfg->repl_epoch) epoch = cfg->repl_epoch;
  h->epoch = epoch;
  h->lsn = lsn;
  for (int tries = 0;; tries++) {
    tg__lease l;
    if ((rc = tg__follow_lease_get(h->f, h->ttl_ms, &l, msg, len))) goto fail;
    if (l.revision && l.epoch > epoch) {
      rc = TG_EFENCED;
      tg__say(msg, len, "the leader lease TG_LEASE_%s/leader is at epoch %" PRIu64 " (owner "
              "'%s'), past this store's %" PRIu64 " and the stream's: a replica was promoted; "
              "this directory must follow as a replica", cfg->repl_name, l.epoch,
              l.owner[0] ? l.owner : "released", epoch);
      goto fail;
    }
    uint64_t rev = 0;
    rc = tg__follow_lease_put(h->f, h->ttl_ms, l.revision, epoch, h->owner, lsn, &rev, msg,
                              len);
    if (rc == 0) {
      h->revision = rev;
      break;
    }
    /* Someone wrote the key between our read and our swap: read again
       (a few times; a key that keeps moving is another live writer's). */
    if (rc != TG_EEXIST || tries == 8) goto fail;
    if (msg && len) msg[0] = 0;
  }
  *out = h;
  return 0;
fail:
  tg__lease_free(h);
  return rc;
}

int tg__lease_adopt(tg__lease_holder **out, const char *url, const char *name, uint32_t ttl_ms,
                    uint64_t epoch, const char *owner, uint64_t revision, uint64_t lsn,
                    char *msg, size_t len) {
  int rc = 0;
  *out = NULL;
  tg__lease_holder *h = holder_new(url, name, ttl_ms, epoch, owner, msg, len, &rc);
  if (!h) return rc;
  h->revision = revision;
  h->lsn = lsn;
  if ((rc = tg__lease_start(h, NULL))) {
    tg__lease_free(h);
    return rc;
  }
  *out = h;
  return 0;
}

/* Lost to another owner: fence the store (once). Caller holds h->mu. */
static void lost_locked(tg__lease_holder *h, const tg__lease *l) {
  if (h->lost) return;
  h->lost = 1;
  fprintf(stderr, "tokengraph: replication: the leader lease is now held by '%s' at epoch %"
          PRIu64 " (this store's is %" PRIu64 "): the store is fenced\n", l->owner, l->epoch,
          h->epoch);
  if (h->ship) tg__ship_fence(h->ship);
}

/* One renewal; 0, or the error that made it fail (tried again later). */
static int renew(tg__lease_holder *h) {
  pthread_mutex_lock(&h->mu);
  uint64_t rev = h->revision;
  uint64_t lsn = h->ship ? tg__ship_acked_lsn(h->ship) : h->lsn;
  int lost = h->lost;
  pthread_mutex_unlock(&h->mu);
  if (lost) return 0;
  uint64_t nrev = 0;
  int rc = tg__follow_lease_put(h->f, h->ttl_ms, rev, h->epoch, h->owner, lsn, &nrev, NULL, 0);
  if (rc == TG_EEXIST) {
    tg__lease l;
    if ((rc = tg__follow_lease_get(h->f, h->ttl_ms, &l, NULL, 0))) return rc;
    if (l.revision && !strcmp(l.owner, h->owner)) { /* our write; its reply was lost */
      nrev = l.revision;
    } else if (l.revision && l.owner[0] && l.epoch >= h->epoch) {
      pthread_mutex_lock(&h->mu);
      lost_locked(h, &l);
      pthread_mutex_unlock(&h->mu);
      return 0;
    } else { /* absent (expired), released, or an older epoch's: ours again */
      rc = tg__follow_lease_put(h->f, h->ttl_ms, l.revision, h->epoch, h->owner, lsn, &nrev,
                                NULL, 0);
      if (rc) return rc; /* a swap lost again: judged at the next period */
    }
  } else if (rc) {
    return rc;
  }
  pthread_mutex_lock(&h->mu);
  h->revision = nrev;
  h->lsn = lsn;
  h->renewals++;
  pthread_mutex_unlock(&h->mu);
  return 0;
}

static void *holder_main(void *arg) {
  tg__lease_holder *h = arg;
  tg_trace_set_thread_name("lease");
  pthread_mutex_lock(&h->mu);
  while (!h->stop) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t t = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec +
                 (uint64_t)h->period_ms * 1000000u;
    ts.tv_sec = (time_t)(t / 1000000000u);
    ts.tv_nsec = (long)(t % 1000000000u);
    while (!h->stop && pthread_cond_timedwait(&h->cv, &h->mu, &ts) != ETIMEDOUT) {
    }
    if (h->stop) break;
    pthread_mutex_unlock(&h->mu);
    int rc = renew(h);
    pthread_mutex_lock(&h->mu);
    if (rc) h->failures++;
  }
  pthread_mutex_unlock(&h->mu);
  return NULL;
}

int tg__lease_start(tg__lease_holder *h, tg__ship *ship) {
  pthread_mutex_lock(&h->mu);
  h->ship = ship;
  pthread_mutex_unlock(&h->mu);
  if (h->started) return 0;
  if (pthread_create(&h->thread, NULL, holder_main, h)) return TG_ENOMEM;
  h->started = 1;
  return 0;
}

void tg__lease_attach(tg__lease_holder *h, tg__ship *ship) {
  pthread_mutex_lock(&h->mu);
  h->ship = ship;
  /* Lost before the shipper existed (a promotion's drain): fenced now. */
  if (h->lost && ship) tg__ship_fence(ship);
  pthread_mutex_unlock(&h->mu);
}

int tg__lease_lost(tg__lease_holder *h) {
  pthread_mutex_lock(&h->mu);
  int lost = h->lost;
  pthread_mutex_unlock(&h->mu);
  return lost;
}

void tg__lease_info(tg__lease_holder *h, uint64_t *epoch, uint64_t *renewals,
                    uint64_t *failures) {
  pthread_mutex_lock(&h->mu);
  *epoch = h->epoch;
  *renewals = h->renewals;
  *failures = h->failures;
  pthread_mutex_unlock(&h->mu);
}

void tg__lease_stop(tg__lease_holder *h) {
  if (!h) return;
  pthread_mutex_lock(&h->mu);
  h->stop = 1;
  h->ship = NULL; /* the shipper closes after this */
  pthread_cond_broadcast(&h->cv);
  pthread_mutex_unlock(&h->mu);
  if (h->started) pthread_join(h->thread, NULL);
  h->started = 0;
}

void tg__lease_release(tg__lease_holder *h, uint64_t lsn) {
  if (!h || !h->f) return;
  pthread_mutex_lock(&h->mu);
  int lost = h->lost;
  uint64_t rev = h->revision;
  pthread_mutex_unlock(&h->mu);
  /* Only the revision we wrote: a key that moved on is not ours. */
  if (lost || !rev) return;
  tg__follow_lease_put(h->f, h->ttl_ms, rev, h->epoch, "", lsn, NULL, NULL, 0);
}

void tg__lease_free(tg__lease_holder *h) {
  if (!h) return;
  tg__lease_stop(h);
  tg__follow_close(h->f);
  pthread_cond_destroy(&h->cv);
  pthread_mutex_destroy(&h->mu);
  free(h);
}

#endif /* TG_HAVE_NATS */
