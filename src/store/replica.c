/*
 * Read replicas (tokengraph.h, "read replicas"; docs/operations.md,
 * "Replication"): a durable store whose only writer is a follower thread
 * that pulls the primary's WAL stream from NATS JetStream and applies it.
 *
 * A WAL message (the replication contract, docs/durability.md) is a body
 * of WAL frames exactly as a segment holds them (docs/wal-format.md:
 * 16-byte header, payload, padding to 8), records only, LSNs contiguous
 * within and across messages, with headers Tg-First-Lsn, Tg-Last-Lsn and
 * Tg-Epoch. The follower checks a whole message before it applies any of
 * it (sequence, CRCs, LSNs), then, in one hold of the store lock, appends
 * each record to the replica's own WAL (which gives it the same LSN: the
 * replica's log continues where its checkpoint and log end, as the
 * primary's did) and applies it to the graph as recovery redoes a record.
 * So the replica's directory is an ordinary data directory, and a
 * checkpoint, which reads last_lsn and the position under the same lock,
 * always falls on a message boundary: the position it saves
 * (repl_stream_seq, repl_epoch) names the message that ends at its LSN.
 *
 * Restart: the replica resumes at the saved sequence + 1, and skips the
 * records its own log already replayed (LSN <= last_lsn), so a message
 * half in the log (the log's tail was torn) is completed, never applied
 * twice. Without a saved position (a fresh replica, or one bootstrapped
 * from a backup of a primary that saved none) it starts at the stream's
 * first message and relies on the LSN check alone.
 *
 * LOCAL LOG. What the replica's own log must hold for that: a prefix of
 * what it applied, nothing more. Whatever the log lost (a power loss), the
 * restart fetches again from the checkpoint's position, which it does
 * anyway. So until promoted the log runs at RELAXED (no fdatasync but at
 * segment switches, checkpoints, tg_sync() and close; no pacing), and at
 * the promotion everything applied is made durable before the log is
 * reopened at the level the configuration asks. The log stays: it gives
 * the promotion its records, a restart the state it applied without the
 * stream, and tg-replay an ordinary directory. Each message's records go
 * in with one claim of the ring, with the CRCs checked here
 * (tg__wal_append_checked_nowait): the log writer writes them as they are
 * instead of computing each again.
 *
 * Promotion (tg_replica_promote(), or failover's watcher thread): the
 * leader lease (lease.c) is refused while another process holds it live,
 * unless forced; taken by compare-and-swap, it is renewed from then on by
 * a lease holder, during the drain too, and released if the promotion
 * fails. Failover's watcher reads the lease every quarter TTL and
 * promotes once it expired; a lost compare-and-swap (another follower
 * won) leaves the replica following, now the winner's stream.
 *
 * Re-bootstrap (cfg->rebootstrap): an open that finds the stream purged
 * past the position fetches the newest snapshot beside the directory,
 * renames the directory aside (kept) and the new one into its place, and
 * opens that.
 *
 * Locking: the follower takes the store lock per message (store.c,
 * LOCKING); rep->mu guards the follower's state (stop, error, counters).
 * Lock order: rep->promote_mu (one promotion at a time) before rep->mu
 * before the store lock (a promotion reads the position while it waits on
 * rep->cv) and the lease holder's mutex; the follower never holds both.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/endian.h"
#include "common/io.h"
#include "common/path.h"
#include "common/platform.h"
#include "store/store_internal.h"
#include "wal/wal_internal.h"

#ifdef TG_HAVE_NATS
#include "repl/repl.h"
#endif

/* tg_replica_config.fetch_batch: messages per pull request. Two requests
   are outstanding, so the largest buffers up to 512 messages (512 MiB). */
#define TG__FETCH_BATCH_DEFAULT 8u
#define TG__FETCH_BATCH_MAX 256u

void tg_replica_config_init(tg_replica_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  tg_store_config_init(&cfg->store);
  cfg->bootstrap_snapshot = 1;
  cfg->fetch_batch = TG__FETCH_BATCH_DEFAULT;
  cfg->lease_ttl_ms = 10000;
}

/* A failover's drain waits at most this long; the lease is released again
   after, and the next expiry tries again. */
#define FAILOVER_DRAIN_MS 60000u

/* The follower's state. */
struct tg__replica {
  pthread_mutex_t mu;      /* guards what is marked mu */
  pthread_cond_t cv;       /* mu: progress, an error, stop */
  int stop;                /* mu */
  int err;                 /* mu: what stopped following, 0 = none */
  char errmsg[256];        /* mu */
  uint64_t messages;       /* mu */
  uint64_t records;        /* mu */
  uint64_t max_bytes;      /* mu: the largest message applied */
  uint64_t apply_ns;       /* mu: time in on_message's check and apply */
  uint64_t apply_cpu_ns;   /* mu: the follower thread's CPU time in it */
  uint64_t pull_restarts;  /* mu: times the follower began pulling again */
  char restart_why[256];   /* mu: why, the last time ("" when never) */
  int promoted;            /* mu */
  pthread_t thread;        /* open/close */
  int started;             /* open/close */
  char *url, *name;        /* open/close */
  uint32_t fetch_batch;    /* open/close */
  uint32_t lease_ttl_ms;   /* open/close */
  tg_store_config writer;  /* open/close: the configuration a promotion
                              reopens the log with (cfg->store, shipping
                              to url/name) */
  char owner[128];         /* open/close: who this replica is in the lease */
  int force;               /* open/close: cfg->promote_force */
  int failover;            /* open/close: cfg->failover */
  char set_aside[512];     /* open/close: where a re-bootstrap moved the
                              old content ("" when none) */
  pthread_mutex_t promote_mu; /* one promotion at a time (the caller's and
                              the watcher's); before mu */
  pthread_t watcher;       /* open/close: failover's lease watcher */
  int watching;            /* open/close */
  int watch_stop;          /* mu: ends the watcher (close) */
#ifdef TG_HAVE_NATS
  struct tg__follow *f;    /* follower thread (promote: after it stopped) */
#endif
  uint64_t next_seq;       /* follower thread: the sequence expected next,
                              which must be the one delivered; 0 = the
                              stream's first, whatever it is (no saved
                              position: the LSN check alone) */
  /* Scratch for the frames of one message, follower thread. */
  tg_wal_record *recs;
  uint32_t *crcs;          /* recs[i]'s frame CRC, checked */
  size_t nrecs, caprecs;
};

/* The CLOCK_REALTIME instant ms from now: rep->cv's clock, for
   pthread_cond_timedwait (tg_wait_lsn too, in every build). */
static struct timespec deadline_in_ms(uint32_t ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (long)(ms % 1000) * 1000000L;
  ts.tv_sec += ts.tv_nsec / 1000000000L;
  ts.tv_nsec %= 1000000000L;
  return ts;
}

#ifdef TG_HAVE_NATS

static void *watcher_main(void *arg);

/* ---- checking a message ------------------------------------------------- */

/* Split body into records (rep->recs), checking every frame: length,
   CRC, a record (not a marker), LSNs contiguous from the first, and the
   Tg-*-Lsn headers where present. 0 or TG_ECORRUPT with msg. */
static int split_frames(struct tg__replica *rep, uint64_t seq, const unsigned char *b,
                        size_t n, uint64_t first_hdr, uint64_t last_hdr, char *msg,
                        size_t len) {
  size_t off = 0;
  uint64_t prev = 0;
  rep->nrecs = 0;
  while (off < n) {
    if (n - off < TG__WAL_FRAME_HDR) goto bad_len;
    uint32_t flen = tg__ld32(b + off);
    if (flen < TG__WAL_FRAME_HDR || tg__align8(flen) > n - off) goto bad_len;
    uint32_t crc = tg__ld32(b + off + 4);
    if (crc != tg__wal_frame_crc(b + off, flen)) {
      tg__say(msg, len, "stream message %" PRIu64 ": frame at offset %zu fails its CRC "
              "(damaged in transit or in the stream)", seq, off);
      return TG_ECORRUPT;
    }
    uint64_t lt = tg__ld64(b + off + 8);
    uint64_t lsn = lt & ((1ull << 56) - 1);
    if (lsn == 0) {
      tg__say(msg, len, "stream message %" PRIu64 ": frame at offset %zu is a marker, "
              "not a record: a WAL message carries records only", seq, off);
      return TG_ECORRUPT;
    }
    if (prev && lsn != prev + 1) {
      tg__say(msg, len, "stream message %" PRIu64 ": LSN %" PRIu64 " follows LSN %" PRIu64
              " (the LSNs of a message are contiguous)", seq, lsn, prev);
      return TG_ECORRUPT;
    }
    if (rep->nrecs == rep->caprecs) {
      size_t nc = rep->caprecs ? rep->caprecs * 2 : 1024;
      tg_wal_record *r = realloc(rep->recs, nc * sizeof *r);
      if (!r) return TG_ENOMEM;
      rep->recs = r;
      uint32_t *c = realloc(rep->crcs, nc * sizeof *c);
      if (!c) return TG_ENOMEM;
      rep->crcs = c;
      rep->caprecs = nc;
    }
    rep->crcs[rep->nrecs] = crc;
    tg_wal_record *r = &rep->recs[rep->nrecs++];
    memset(r, 0, sizeof *r);
    r->lsn = lsn;
    r->type = (uint8_t)(lt >> 56);
    r->payload = b + off + TG__WAL_FRAME_HDR;
    r->len = flen - TG__WAL_FRAME_HDR;
    prev = lsn;
    off += tg__align8(flen);
  }
  if (!rep->nrecs) {
    tg__say(msg, len, "stream message %" PRIu64 " holds no record", seq);
    return TG_ECORRUPT;
  }
  if ((first_hdr && first_hdr != rep->recs[0].lsn) || (last_hdr && last_hdr != prev)) {
    tg__say(msg, len, "stream message %" PRIu64 ": its headers say LSN %" PRIu64 "..%" PRIu64
            " but its frames hold %" PRIu64 "..%" PRIu64, seq, first_hdr, last_hdr,
            rep->recs[0].lsn, prev);
    return TG_ECORRUPT;
  }
  return 0;
bad_len:
  tg__say(msg, len, "stream message %" PRIu64 ": frame at offset %zu has a length that "
          "does not fit the message (%zu bytes)", seq, off, n);
  return TG_ECORRUPT;
}

/* The records of the message the replica's own log holds already (LSN
   <= its last, right after an open) must be the same records: a directory
   whose log went on without the stream (a fenced primary's last records)
   would otherwise skip the stream's and keep its own. Read back from the
   log and compared, type and payload. 0, TG_ECORRUPT with msg, or the
   reader's errors. Follower thread: s->last_lsn moves only here. */
static int check_overlap(tg_store *s, struct tg__replica *rep, uint64_t seq, char *msg,
                         size_t len) {
  uint64_t last = TG__LOAD_RELAXED(s->last_lsn);
  if (!rep->nrecs || rep->recs[0].lsn > last) return 0;
  char walpath[4096];
  tg_wal_reader *rd = NULL;
  tg_wal_record lr;
  int rc = tg__store_wal_path(walpath, sizeof walpath, s->wal_fd, s->dir, "wal");
  if (!rc) rc = tg_wal_reader_open(&rd, walpath, rep->recs[0].lsn);
  if (rc) {
    tg__say(msg, len, "%s/wal: cannot read the log back: %s", s->dir, tg_strerror(rc));
    return rc;
  }
  for (size_t i = 0; i < rep->nrecs && rep->recs[i].lsn <= last; i++) {
    const tg_wal_record *r = &rep->recs[i];
    int got;
    /* A checkpoint may have removed the segments: nothing to compare. */
    while ((got = tg_wal_reader_next(rd, &lr)) == 1 && lr.lsn < r->lsn) {
    }
    if (got != 1 || lr.lsn != r->lsn) break;
    if (lr.type != r->type || lr.len != r->len || memcmp(lr.payload, r->payload, r->len)) {
      rc = TG_ECORRUPT;
      tg__say(msg, len, "stream message %" PRIu64 ": LSN %" PRIu64 " differs from the record "
              "of that LSN in %s: this directory's log went on without the stream (a "
              "fenced primary's?); bootstrap a new replica", seq, r->lsn, s->dir);
      break;
    }
  }
  tg_wal_reader_close(rd);
  return rc;
}

/* Append and apply the records of one checked message after s->last_lsn,
   in one hold of the store lock. 0, or an error with msg: TG_ECORRUPT /
   -ENODATA (the records do not continue the replica's LSNs), the log's
   errors. */
static int apply_message(tg_store *s, struct tg__replica *rep, uint64_t seq, uint64_t epoch,
                         uint64_t *applied, char *msg, size_t len) {
  int rc = 0;
  const char *why = NULL;
  *applied = 0;
  tg__store_lock(s);
  uint64_t last = s->last_lsn;
  size_t i = 0;
  while (i < rep->nrecs && rep->recs[i].lsn <= last) i++; /* in the log already */
  if (i < rep->nrecs && rep->recs[i].lsn != last + 1) {
    rc = -ENODATA;
    tg__say(msg, len, "stream message %" PRIu64 " starts at LSN %" PRIu64 " but the replica "
            "holds only up to LSN %" PRIu64 ": the records between are missing from the "
            "stream (purged?); bootstrap the replica again", seq, rep->recs[i].lsn, last);
    goto out;
  }
  if (epoch < s->repl_epoch) {
    rc = TG_ECORRUPT;
    tg__say(msg, len, "stream message %" PRIu64 " has epoch %" PRIu64 ", older than epoch %"
            PRIu64 " the replica applied already", seq, epoch, s->repl_epoch);
    goto out;
  }
  /* The message's records go to the replica's own log in one claim, then
     to the graph: all under this one hold of the lock, so no one sees the
     log ahead of the graph. A record that then fails to apply stops the
     follower (the replica and the primary disagree); the records logged
     after it make no difference to that: its log no longer replays. */
  uint64_t lsn = 0;
  if (i < rep->nrecs &&
      (rc = tg__wal_append_checked_nowait(s->wal, rep->recs + i, rep->crcs + i,
                                          rep->nrecs - i, &lsn))) {
    tg__say(msg, len, "cannot log LSNs %" PRIu64 "..%" PRIu64 " in the replica's own WAL: %s",
            rep->recs[i].lsn, rep->recs[rep->nrecs - 1].lsn, tg_strerror(rc));
    goto out;
  }
  if (i < rep->nrecs && lsn != rep->recs[i].lsn) {
    /* The replica's log gives the next LSN after last_lsn, which is
       recs[i].lsn by the check above; anything else is a bug to stop at. */
    rc = TG_ECORRUPT;
    tg__say(msg, len, "the replica's WAL logged LSN %" PRIu64 " as %" PRIu64,
            rep->recs[i].lsn, lsn);
    goto out;
  }
  tg__graph_begin_load(&s->g);
  for (; i < rep->nrecs; i++) {
    const tg_wal_record *r = &rep->recs[i];
    if ((rc = tg__store_apply(&s->g, r, &why))) {
      tg__say(msg, len, "stream message %" PRIu64 ": record LSN %" PRIu64 " (type %u) %s: "
              "the replica and the primary disagree", seq, r->lsn, r->type,
              why ? why : tg_strerror(rc));
      break;
    }
    (*applied)++;
  }
  tg__graph_end_load(&s->g);
  /* Once per message: tg_replica_applied_lsn() moves a message at a time
     (after a failure, to the last record applied). */
  if (*applied) TG__STORE_RELAXED(s->last_lsn, last + *applied);
  if (!rc) {
    s->repl_seq = seq;
    s->repl_epoch = epoch;
  }
out:
  tg__store_unlock(s);
  return rc;
}

/* ---- the follower --------------------------------------------------------- */

static void set_error(struct tg__replica *rep, int rc, const char *m) {
  pthread_mutex_lock(&rep->mu);
  if (!rep->err) {
    rep->err = rc;
    snprintf(rep->errmsg, sizeof rep->errmsg, "%s", m && *m ? m : tg_strerror(rc));
  }
  pthread_cond_broadcast(&rep->cv);
  pthread_mutex_unlock(&rep->mu);
}

typedef struct fetch_ctx {
  tg_store *s;
  int fatal;         /* the error that stops following */
  int restart;       /* a delivery was lost: pull again from the position */
  char msg[256];
} fetch_ctx;

/* The calling thread's CPU time: one system call a message (of up to
   13,107 records), for tg_replica_status.apply_cpu_ns. */
static uint64_t thread_cpu_ns(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)) return 0;
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int on_message(void *arg, const tg__repl_msg *m) {
  fetch_ctx *c = arg;
  tg_store *s = c->s;
  struct tg__replica *rep = s->replica;
  uint64_t applied = 0;
  int rc;
  if (rep->next_seq && m->seq != rep->next_seq) {
    /* Either the stream no longer holds next_seq (purged below it: the
       server silently starts at its first), or messages were lost on the
       way: sent into a connection that then broke (the consumer
       acknowledges nothing, so it counts them delivered) and the same
       pull requests served on after the reconnect. The stream's first
       sequence tells which; if it cannot be read now, the pull starts
       again and the next delivery is checked the same way. */
    uint64_t first = 0, last = 0;
    char why[256] = "";
    if (!tg__follow_bounds(rep->f, &first, &last, why, sizeof why) && first > rep->next_seq) {
      rc = -ENODATA;
      tg__say(c->msg, sizeof c->msg, "stream TG_%s delivered sequence %" PRIu64 " where the "
              "replica asked for %" PRIu64 ": messages were purged below the replica's "
              "position; bootstrap the replica again", rep->name, m->seq, rep->next_seq);
      goto fatal;
    }
    c->restart = 1;
    tg__say(c->msg, sizeof c->msg, "stream TG_%s delivered sequence %" PRIu64 " where %" PRIu64
            " was next (lost on the way, in a reconnect?): pulling again from %" PRIu64,
            rep->name, m->seq, rep->next_seq, rep->next_seq);
    return 1;
  }
  uint64_t t0 = tg__now_ns(), c0 = thread_cpu_ns();
  if ((rc = split_frames(rep, m->seq, m->data, m->len, m->first_lsn, m->last_lsn, c->msg,
                         sizeof c->msg)))
    goto fatal;
  if ((rc = check_overlap(s, rep, m->seq, c->msg, sizeof c->msg)) ||
      (rc = apply_message(s, rep, m->seq, m->epoch, &applied, c->msg, sizeof c->msg)))
    goto fatal;
  rep->next_seq = m->seq + 1;
  pthread_mutex_lock(&rep->mu);
  rep->messages++;
  rep->records += applied;
  if (m->len > rep->max_bytes) rep->max_bytes = m->len;
  rep->apply_ns += tg__now_ns() - t0;
  rep->apply_cpu_ns += thread_cpu_ns() - c0;
  pthread_cond_broadcast(&rep->cv);
  pthread_mutex_unlock(&rep->mu);
  return 0;
fatal:
  c->fatal = rc;
  return 1;
}

/* Wait up to ms on rep->cv unless stopping; returns stop. */
static int pause_ms(struct tg__replica *rep, unsigned ms) {
  struct timespec ts = deadline_in_ms(ms);
  pthread_mutex_lock(&rep->mu);
  if (!rep->stop) pthread_cond_timedwait(&rep->cv, &rep->mu, &ts);
  int stop = rep->stop;
  pthread_mutex_unlock(&rep->mu);
  return stop;
}

static int stopping(struct tg__replica *rep) {
  pthread_mutex_lock(&rep->mu);
  int stop = rep->stop;
  pthread_mutex_unlock(&rep->mu);
  return stop;
}

/* (Re)start the consumer at the position. 0, or a transient error. */
static int start_at(struct tg__replica *rep, char *msg, size_t len) {
  if (!rep->next_seq) {
    uint64_t first = 0, last = 0;
    int rc = tg__follow_bounds(rep->f, &first, &last, msg, len);
    if (rc) return rc;
    return tg__follow_start(rep->f, first ? first : 1, (int)rep->fetch_batch, msg, len);
  }
  return tg__follow_start(rep->f, rep->next_seq, (int)rep->fetch_batch, msg, len);
}

/* FETCHING (repl.c, PULLING): the consumer keeps pull requests of
   fetch_batch messages outstanding, so a message stored on the server is
   sent at once and received while the follower applies the ones before.
   A fetch hands over what came, waiting at most FOLLOW_WAIT_MS for the
   first: that bounds how long a stop waits, not the latency. */
#define FOLLOW_WAIT_MS 200u

/* The follower gave up on its pull and starts again at its position. */
static void note_restart(struct tg__replica *rep, const char *why) {
  pthread_mutex_lock(&rep->mu);
  rep->pull_restarts++;
  snprintf(rep->restart_why, sizeof rep->restart_why, "%s", why && *why ? why : "pull failed");
  pthread_mutex_unlock(&rep->mu);
}

static void *follower(void *arg) {
  tg_store *s = arg;
  struct tg__replica *rep = s->replica;
  int need_start = 0; /* the consumer is started by the open */
  tg_trace_set_thread_name("replica");
  while (!stopping(rep)) {
    fetch_ctx c = {s, 0, 0, ""};
    if (need_start) {
      if (start_at(rep, c.msg, sizeof c.msg)) {
        if (pause_ms(rep, 200)) break;
        continue;
      }
      need_start = 0;
    }
    int rc = tg__follow_fetch(rep->f, (int)rep->fetch_batch, (int)FOLLOW_WAIT_MS, on_message,
                              &c, c.msg, sizeof c.msg);
    if (c.fatal) {
      set_error(rep, c.fatal, c.msg);
      break;
    }
    if (rc < 0 || c.restart) {
      /* The server went away, dropped the ephemeral consumer, left a pull
         unanswered, or a delivery was lost: start again at the position
         once it answers. */
      note_restart(rep, c.msg);
      need_start = 1;
      if (pause_ms(rep, 200)) break;
    }
  }
  return NULL;
}

/* 1 when dir is missing or an empty directory (a new replica), 0 when it
   is a data directory, or an error. */
static int is_new_dir(const char *dir, char *msg, size_t len) {
  struct stat st;
  if (stat(dir, &st)) return errno == ENOENT ? 1 : -errno;
  int dfd = tg__store_open_dirfd(dir, msg, len);
  if (dfd < 0) return dfd;
  int rc = tg__store_check_identity(dfd, dir, msg, len);
  close(dfd);
  return rc;
}

/* Copy a backup into dir when dir is missing or empty. */
static int bootstrap_from(const char *dir, const char *from, char *msg, size_t len) {
  struct stat st;
  int rc = is_new_dir(dir, msg, len);
  if (rc != 1) return rc; /* a data directory already: resume */
  tg_store *src = NULL;
  tg_store_config rc_cfg;
  tg_store_config_init(&rc_cfg);
  rc_cfg.read_only = 1;
  rc_cfg.crash_dump = 0;
  if ((rc = tg_store_open_msg(&src, from, &rc_cfg, msg, len))) return rc;
  if (stat(dir, &st) == 0) rmdir(dir); /* an empty directory: backup wants none */
  rc = tg_store_backup_msg(src, dir, NULL, NULL, msg, len);
  tg_store_close(src);
  return rc;
}

/* 1 when the stream no longer holds what follows the replica's position:
   purged below the saved sequence, or (no saved position) its first
   message starts past the replica's LSN. 0, or an error. */
static int behind_purge(tg_store *s, struct tg__replica *rep, uint64_t first, uint64_t last,
                        char *msg, size_t len) {
  if (last < first || !first) return 0; /* empty: nothing was purged past us */
  if (rep->next_seq) return first > rep->next_seq;
  char stream[96];
  snprintf(stream, sizeof stream, "TG_%s", rep->name);
  tg__repl_hdr h = {"Tg-First-Lsn", 0};
  void *data = NULL;
  size_t n = 0;
  int rc = tg__follow_get(rep->f, stream, NULL, first, &h, 1, &data, &n, NULL, msg, len);
  free(data);
  if (rc == -ENOENT) return 0; /* purged meanwhile: the follower will tell */
  if (rc) return rc;
  return h.value > TG__LOAD_RELAXED(s->last_lsn) + 1;
}

/* One open of dir as a replica; *gap set when it failed with -ENODATA
   because the stream was purged past its position. */
static int replica_open_once(tg_store **out, const char *dir, const tg_replica_config *cfg,
                             int *gap, char *msg, size_t len) {
  tg_store *s = NULL;
  struct tg__replica *rep = NULL;
  int rc;
  *gap = 0;
  if (cfg->bootstrap_dir && (rc = bootstrap_from(dir, cfg->bootstrap_dir, msg, len)))
    return rc;
  if (!cfg->bootstrap_dir && cfg->bootstrap_snapshot && (rc = is_new_dir(dir, msg, len))) {
    if (rc < 0) return rc;
    rc = tg__replica_bootstrap_snapshot(dir, cfg->nats_url, cfg->repl_name, msg, len);
    if (rc < 0) return rc;
  }
  if (!(rep = calloc(1, sizeof *rep))) return TG_ENOMEM;
  pthread_mutex_init(&rep->mu, NULL);
  pthread_mutex_init(&rep->promote_mu, NULL);
  pthread_cond_init(&rep->cv, NULL);
  rep->fetch_batch = cfg->fetch_batch ? cfg->fetch_batch : TG__FETCH_BATCH_DEFAULT;
  rep->lease_ttl_ms = cfg->lease_ttl_ms;
  rep->force = cfg->promote_force;
  rep->failover = cfg->failover;
  tg__lease_owner_id(rep->owner, sizeof rep->owner);
  if (!(rep->url = strdup(cfg->nats_url)) || !(rep->name = strdup(cfg->repl_name))) {
    rc = TG_ENOMEM;
    goto fail;
  }
  tg_store_config sc = cfg->store;
  sc.read_only = 0;
  sc.nats_url = NULL; /* a replica ships nothing: the stream is the primary's */
  sc.repl_name = NULL;
  /* Until promoted, the log is written at RELAXED whatever the level
     asked (LOCAL LOG, top of this file): a restart resumes at the position
     the last checkpoint saved, which the stream must hold at any level, so
     what the level would make durable sooner is never needed. BALANCED's
     pacing made the follower wait for its own log writer on every message
     (a message brings up to 13,107 records, pacing allows ~2,000 queued).
     The level asked applies from the promotion on (rep->writer). */
  sc.wal.level = TG_RELAXED;
  rep->writer = cfg->store;
  rep->writer.read_only = 0;
  rep->writer.nats_url = rep->url;
  rep->writer.repl_name = rep->name;
  rep->writer.repl_lease_ttl_ms = cfg->lease_ttl_ms;
  if ((rc = tg_store_open_msg(&s, dir, &sc, msg, len))) goto fail;
  if (!s->wal) {
    rc = TG_EINVAL;
    goto fail;
  }
  TG__STORE_RELAXED(s->writes_refused, 1);
  s->replica = rep;
  /* Reconnecting for as long as the replica is open: a follower resumes
     after an outage however long. */
  if ((rc = tg__follow_open_kept(&rep->f, cfg->nats_url, cfg->repl_name, msg, len)))
    goto fail;
  /* The saved position: the checkpoint's message, whose last LSN is the
     checkpoint's (a message boundary, see the top of this file). */
  uint64_t first = 0, last = 0;
  if ((rc = tg__follow_bounds(rep->f, &first, &last, msg, len))) goto fail;
  rep->next_seq = s->repl_seq ? s->repl_seq + 1 : 0;
  if (rep->next_seq && first > rep->next_seq) {
    rc = -ENODATA;
    *gap = 1;
    tg__say(msg, len, "stream TG_%s begins at sequence %" PRIu64 " but the replica in %s "
            "needs %" PRIu64 " next: the messages between were purged; bootstrap the "
            "replica again (rebootstrap)", cfg->repl_name, first, dir, rep->next_seq);
    goto fail;
  }
  /* Without a saved position the LSNs tell, once a message arrives; with
     rebootstrap asked for, they are looked at now, while it can help. */
  if (cfg->rebootstrap && (rc = behind_purge(s, rep, first, last, msg, len))) {
    if (rc == 1) {
      rc = -ENODATA;
      *gap = 1;
      tg__say(msg, len, "stream TG_%s begins past LSN %" PRIu64 " of the replica in %s: the "
              "records between were purged", cfg->repl_name, tg__store_last_lsn(s), dir);
    }
    goto fail;
  }
  if ((rc = start_at(rep, msg, len))) goto fail;
  if (pthread_create(&rep->thread, NULL, follower, s)) {
    rc = TG_ENOMEM;
    goto fail;
  }
  rep->started = 1;
  if (rep->failover) {
    if (pthread_create(&rep->watcher, NULL, watcher_main, s)) {
      rc = TG_ENOMEM;
      goto fail;
    }
    rep->watching = 1;
  }
  *out = s;
  return 0;
fail:
  if (s) {
    s->replica = NULL;
    tg_store_close(s);
  }
  if (rep) {
    tg__replica_free(rep);
  }
  return rc;
}

/* Make dir again from the newest snapshot: the snapshot is fetched into
   DIR.rebootstrap first, then DIR is renamed DIR.gap.N (N the first
   free) and DIR.rebootstrap renamed DIR, the parent fsynced. The path the
   old content went to is written to aside. */
static int rebootstrap(const char *dir, const tg_replica_config *cfg, char *aside, size_t asz,
                       char *msg, size_t len) {
  char tmp[480], old[500], parent[4096];
  const char *base = NULL;
  struct stat st;
  int rc;
  if ((size_t)snprintf(tmp, sizeof tmp, "%s.rebootstrap", dir) >= sizeof tmp) {
    tg__say(msg, len, "%s: path too long to bootstrap again beside it", dir);
    return TG_EINVAL;
  }
  if (lstat(tmp, &st) == 0) {
    tg__say(msg, len, "%s exists (an earlier re-bootstrap was interrupted): remove it to "
            "bootstrap %s again", tmp, dir);
    return -EEXIST;
  }
  rc = tg__replica_bootstrap_snapshot(tmp, cfg->nats_url, cfg->repl_name, msg, len);
  if (rc == 1) {
    tg__say(msg, len, "stream TG_SNAP_%s holds no snapshot to bootstrap %s from again",
            cfg->repl_name, dir);
    return -ENODATA;
  }
  if (rc) return rc;
  for (unsigned n = 1;; n++) {
    if ((size_t)snprintf(old, sizeof old, "%s.gap.%u", dir, n) >= sizeof old) return TG_EINVAL;
    if (lstat(old, &st) != 0 && errno == ENOENT) break;
    if (n == 100000) return -EEXIST;
  }
  if ((rc = tg__renameat(AT_FDCWD, dir, AT_FDCWD, old))) {
    tg__say(msg, len, "cannot move %s aside to %s: %s", dir, old, tg_strerror(rc));
    return rc;
  }
  if ((rc = tg__renameat(AT_FDCWD, tmp, AT_FDCWD, dir))) {
    tg__say(msg, len, "cannot rename %s to %s (the old content is in %s): %s", tmp, dir, old,
            tg_strerror(rc));
    return rc;
  }
  if (tg__split_path(dir, parent, sizeof parent, &base) == 0 &&
      (rc = tg__fsync_dir(parent[0] ? parent : "."))) {
    tg__say(msg, len, "%s: fsync after the re-bootstrap: %s", parent, tg_strerror(rc));
    return rc;
  }
  snprintf(aside, asz, "%s", old);
  return 0;
}

static int replica_open(tg_store **out, const char *dir, const tg_replica_config *cfg,
                        char *msg, size_t len) {
  int gap = 0;
  if (!cfg->nats_url || !cfg->repl_name || !dir) {
    tg__say(msg, len, "a replica needs a directory, nats_url and repl_name");
    return TG_EINVAL;
  }
  if (cfg->lease_ttl_ms < 150) {
    tg__say(msg, len, "invalid configuration: lease_ttl_ms %u is below 150", cfg->lease_ttl_ms);
    return TG_EINVAL;
  }
  if (cfg->fetch_batch > TG__FETCH_BATCH_MAX) {
    tg__say(msg, len, "invalid configuration: fetch_batch %u is above %u (two pull requests "
            "of it are outstanding: up to %u messages of 1 MiB would wait in memory)",
            cfg->fetch_batch, TG__FETCH_BATCH_MAX, 2 * TG__FETCH_BATCH_MAX);
    return TG_EINVAL;
  }
  int rc = replica_open_once(out, dir, cfg, &gap, msg, len);
  if (rc != -ENODATA || !gap || !cfg->rebootstrap) return rc;
  char aside[512] = "";
  if (msg && len) msg[0] = 0;
  if ((rc = rebootstrap(dir, cfg, aside, sizeof aside, msg, len))) return rc;
  if ((rc = replica_open_once(out, dir, cfg, &gap, msg, len))) return rc;
  snprintf((*out)->replica->set_aside, sizeof (*out)->replica->set_aside, "%s", aside);
  return 0;
}

#endif /* TG_HAVE_NATS */

/* Stop the follower (if running) and wait for it. */
static void stop_follower(struct tg__replica *rep) {
  pthread_mutex_lock(&rep->mu);
  rep->stop = 1;
  pthread_cond_broadcast(&rep->cv);
  pthread_mutex_unlock(&rep->mu);
  if (rep->started) pthread_join(rep->thread, NULL);
  rep->started = 0;
}

/* Stop failover's watcher (if running) and wait for it: a promotion it
   runs ends first (its drain gives up at once). */
static void stop_watcher(struct tg__replica *rep) {
  pthread_mutex_lock(&rep->mu);
  rep->watch_stop = 1;
  pthread_cond_broadcast(&rep->cv);
  pthread_mutex_unlock(&rep->mu);
  if (rep->watching) pthread_join(rep->watcher, NULL);
  rep->watching = 0;
}

void tg__replica_free(struct tg__replica *rep) {
  if (!rep) return;
  stop_watcher(rep);
  stop_follower(rep);
#ifdef TG_HAVE_NATS
  tg__follow_close(rep->f);
#endif
  free(rep->recs);
  free(rep->crcs);
  free(rep->url);
  free(rep->name);
  pthread_cond_destroy(&rep->cv);
  pthread_mutex_destroy(&rep->promote_mu);
  pthread_mutex_destroy(&rep->mu);
  free(rep);
}

int tg_replica_open_msg(tg_store **out, const char *dir, const tg_replica_config *cfg,
                        char *msg, size_t msglen) {
  if (msg && msglen) msg[0] = 0;
  if (!out || !cfg) return TG_EINVAL;
  *out = NULL;
#ifdef TG_HAVE_NATS
  return replica_open(out, dir, cfg, msg, msglen);
#else
  (void)dir;
  tg__say(msg, msglen, "replicas need NATS: this tokengraph was built without libnats");
  return TG_ENOTSUP;
#endif
}

int tg_replica_open(tg_store **out, const char *dir, const tg_replica_config *cfg) {
  return tg_replica_open_msg(out, dir, cfg, NULL, 0);
}

/* The store's last LSN without the lock (store.c, READS): on a replica
   the follower's, on a writer its threads' too. */
static uint64_t shown_lsn(tg_store *s) {
  tg_store_stats st;
  tg_store_stats_get(s, &st);
  return st.last_lsn;
}

uint64_t tg_replica_applied_lsn(tg_store *s) {
  return s ? shown_lsn(s) : 0;
}

int tg_wait_lsn(tg_store *s, uint64_t lsn, uint32_t timeout_ms) {
  if (!s) return TG_EINVAL;
  TG__CALL_GUARD(s);
  struct tg__replica *rep = s->replica;
  int promoted = 0;
  if (rep) {
    pthread_mutex_lock(&rep->mu);
    promoted = rep->promoted;
    pthread_mutex_unlock(&rep->mu);
  }
  if (!rep || promoted) { /* a writer: its own durability */
    if (!s->wal || s->read_only) return shown_lsn(s) >= lsn ? 0 : -ETIMEDOUT;
    if (shown_lsn(s) < lsn) return -ETIMEDOUT; /* not logged yet */
    return tg_wal_sync(s->wal, lsn);
  }
  struct timespec ts = deadline_in_ms(timeout_ms);
  int rc = 0;
  pthread_mutex_lock(&rep->mu);
  /* The follower stores last_lsn before it broadcasts under rep->mu, so a
     value read here after the wait is at least the one broadcast. */
  while (TG__LOAD_RELAXED(s->last_lsn) < lsn) {
    if (rep->err && !rep->promoted) {
      rc = rep->err;
      break;
    }
    if (rep->stop || timeout_ms == 0) {
      rc = -ETIMEDOUT;
      break;
    }
    if (pthread_cond_timedwait(&rep->cv, &rep->mu, &ts) == ETIMEDOUT &&
        TG__LOAD_RELAXED(s->last_lsn) < lsn) {
      rc = -ETIMEDOUT;
      break;
    }
  }
  pthread_mutex_unlock(&rep->mu);
  return rc;
}

int tg_replica_status_get(tg_store *s, tg_replica_status *out) {
  if (!s || !out) return TG_EINVAL;
  TG__CALL_GUARD(s);
  memset(out, 0, sizeof *out);
  struct tg__replica *rep = s->replica;
  int writer = 1;
  /* The follower's state first, then the position: a promotion sets the
     epoch before `promoted`, so a status that says promoted shows the new
     epoch. */
  if (rep) {
    pthread_mutex_lock(&rep->mu);
    out->is_replica = !rep->promoted;
    out->promoted = rep->promoted;
    writer = rep->promoted;
    out->messages = rep->messages;
    out->records = rep->records;
    out->max_message_bytes = rep->max_bytes;
    out->apply_ns = rep->apply_ns;
    out->apply_cpu_ns = rep->apply_cpu_ns;
    out->pull_restarts = rep->pull_restarts;
    snprintf(out->pull_restart_reason, sizeof out->pull_restart_reason, "%s",
             rep->restart_why);
    out->error = rep->err;
    snprintf(out->message, sizeof out->message, "%s", rep->errmsg);
    snprintf(out->set_aside, sizeof out->set_aside, "%s", rep->set_aside);
    pthread_mutex_unlock(&rep->mu);
  }
  tg__store_lock(s);
  out->applied_lsn = tg__store_last_lsn(s);
  out->stream_seq = s->repl_seq;
  out->epoch = s->repl_epoch;
  tg__store_unlock(s);
#ifdef TG_HAVE_NATS
  /* s->lease is set before promoted (under rep->mu), and at open. */
  if (writer && s->lease) {
    uint64_t epoch, failures;
    tg__lease_info(s->lease, &epoch, &out->lease_renewals, &failures);
  }
#else
  (void)writer;
#endif
  return 0;
}


int tg_repl_stream_info_get(const char *nats_url, const char *repl_name,
                            tg_repl_stream_info *out, char *msg, size_t msglen) {
  if (msg && msglen) msg[0] = 0;
  if (!out || !nats_url || !repl_name) return TG_EINVAL;
  memset(out, 0, sizeof *out);
#ifndef TG_HAVE_NATS
  tg__say(msg, msglen, "replication needs NATS: this tokengraph was built without libnats");
  return TG_ENOTSUP;
#else
  tg__follow *f = NULL;
  tg__lease lease;
  int rc = tg__follow_open(&f, nats_url, repl_name, msg, msglen);
  if (!rc) rc = tg__follow_bounds(f, &out->first_seq, &out->last_seq, msg, msglen);
  if (!rc) rc = tg__follow_lease_get(f, UINT32_MAX, &lease, msg, msglen);
  if (!rc) {
    out->lease_epoch = lease.epoch;
    out->lease_lsn = lease.lsn;
    snprintf(out->lease_owner, sizeof out->lease_owner, "%s", lease.owner);
  }
  tg__follow_close(f);
  return rc;
#endif
}

#ifdef TG_HAVE_NATS
/* The promotion (tg_replica_promote(), and failover's watcher with
   watcher = 1). force: take the lease however live it looks; stale_rev:
   a revision the watcher saw unchanged for its TTL, taken as expired. */
static int promote(tg_store *s, uint32_t timeout_ms, int force, uint64_t stale_rev,
                   int watcher, char *msg, size_t msglen) {
  struct tg__replica *rep = s->replica;
  tg__lease lease;
  tg__lease_holder *h = NULL;
  tg__follow *f = NULL;
  uint64_t first = 0, last = 0, rev = 0, lsn = 0;
  int rc;
  pthread_mutex_lock(&rep->promote_mu);
  pthread_mutex_lock(&rep->mu);
  rc = rep->promoted ? TG_EINVAL : rep->err;
  if (rc && rc != TG_EINVAL) tg__say(msg, msglen, "%s", rep->errmsg);
  pthread_mutex_unlock(&rep->mu);
  if (rc) goto out;
  /* A connection of the promoter's own: the follower's is its thread's. */
  if ((rc = tg__follow_open(&f, rep->url, rep->name, msg, msglen))) goto out;
  if ((rc = tg__follow_lease_get(f, rep->lease_ttl_ms, &lease, msg, msglen))) goto out;
  if (!force && !(stale_rev && lease.revision == stale_rev) &&
      tg__lease_live(&lease, rep->owner, rep->lease_ttl_ms)) {
    rc = TG_EEXIST;
    tg__say(msg, msglen, "the leader lease TG_LEASE_%s/leader is held by '%s' at epoch %"
            PRIu64 ", written %" PRIu64 " ms ago (TTL %" PRIu64 " ms): its writer is alive; "
            "stop it and let the lease expire, or force the promotion (the old writer is "
            "then fenced at its next publish)", rep->name, lease.owner, lease.epoch,
            lease.age_ms, lease.ttl_ms ? lease.ttl_ms : rep->lease_ttl_ms);
    goto out;
  }
  tg__store_lock(s);
  uint64_t epoch = (lease.epoch > s->repl_epoch ? lease.epoch : s->repl_epoch) + 1;
  lsn = s->last_lsn;
  tg__store_unlock(s);
  if ((rc = tg__follow_lease_put(f, rep->lease_ttl_ms, lease.revision, epoch, rep->owner, lsn,
                                 &rev, msg, msglen)))
    goto out;
  /* Held from here, and renewed while the drain runs. */
  if ((rc = tg__lease_adopt(&h, rep->url, rep->name, rep->lease_ttl_ms, epoch, rep->owner,
                            rev, lsn, msg, msglen)))
    goto out;
  /* Drain: everything the stream holds now, which includes every message
     the old primary had acknowledged (its acks come after the stream
     stored them). */
  if ((rc = tg__follow_bounds(f, &first, &last, msg, msglen))) goto out;
  uint64_t deadline = tg__now_ns() + (uint64_t)timeout_ms * 1000000u;
  pthread_mutex_lock(&rep->mu);
  for (;;) {
    tg__store_lock(s);
    uint64_t seq = s->repl_seq;
    tg__store_unlock(s);
    if (seq >= last || (last < first)) break;
    if (rep->err) {
      rc = rep->err;
      tg__say(msg, msglen, "%s", rep->errmsg);
      break;
    }
    if (watcher && rep->watch_stop) {
      rc = -ECANCELED;
      tg__say(msg, msglen, "closed while draining for a failover");
      break;
    }
    if (tg__lease_lost(h)) {
      rc = TG_EEXIST;
      tg__say(msg, msglen, "another process took the leader lease while this replica "
              "drained the stream: not promoted");
      break;
    }
    uint64_t now = tg__now_ns();
    if (now >= deadline) {
      rc = -ETIMEDOUT;
      tg__say(msg, msglen, "the replica reached stream sequence %" PRIu64 " of %" PRIu64
              " within %u ms: not promoted (the lease taken at epoch %" PRIu64 " is released)",
              seq, last, timeout_ms, epoch);
      break;
    }
    /* Woken by each message applied; at least every 100 ms to look at the
       lease and the deadline. */
    uint64_t left = deadline - now;
    struct timespec ts = deadline_in_ms(left > 100000000u ? 100u : (uint32_t)(left / 1000000u) + 1);
    pthread_cond_timedwait(&rep->cv, &rep->mu, &ts);
  }
  pthread_mutex_unlock(&rep->mu);
  if (rc) goto out;
  stop_follower(rep);
  /* Become the stream's writer: everything applied made durable, then the
     log opened again with a shipper at the new epoch, which continues the
     stream after its last message (ExpectLastSeq). A failure leaves the
     handle refusing writes: close it. (tg_wal_sync, not tg_sync: the
     watcher is no caller of the API.) */
  if ((rc = tg_wal_sync(s->wal, 0)) ||
      (rc = tg__store_reopen_wal(s, &rep->writer, epoch, msg, msglen))) {
    set_error(rep, rc, msg);
    goto out;
  }
  tg__lease_attach(h, s->ship); /* lost meanwhile: fenced at once */
  tg__store_lock(s);
  s->repl_epoch = epoch;
  tg__store_unlock(s);
  pthread_mutex_lock(&rep->mu);
  s->lease = h; /* before promoted: tg_replica_status_get() */
  h = NULL;
  rep->promoted = 1;
  pthread_cond_broadcast(&rep->cv);
  pthread_mutex_unlock(&rep->mu);
  /* Writes allowed from here: the follower has stopped. Release: a
     caller that sees it sees the reopened log. */
  __atomic_store_n(&s->writes_refused, 0, __ATOMIC_RELEASE);
out:
  if (h) { /* not promoted: the lease goes back (unless lost) */
    tg__lease_stop(h);
    tg__lease_release(h, lsn);
    tg__lease_free(h);
  }
  tg__follow_close(f);
  pthread_mutex_unlock(&rep->promote_mu);
  return rc;
}

/* Failover (tg_replica_config.failover): every quarter of the TTL, read
   the lease; once its holder is gone (lease.c's rule: absent, released,
   older than its TTL by its timestamp, or the same revision for a whole
   TTL of our watching, which needs no clock agreement), promote. A lost
   race (TG_EEXIST: another follower took the lease) changes nothing: this
   replica goes on following, the winner's epoch next. */
static void *watcher_main(void *arg) {
  tg_store *s = arg;
  struct tg__replica *rep = s->replica;
  tg__follow *f = NULL;
  uint64_t seen_rev = 0, seen_ns = 0;
  uint32_t period = rep->lease_ttl_ms / 4;
  tg_trace_set_thread_name("failover");
  for (;;) {
    struct timespec ts = deadline_in_ms(period);
    pthread_mutex_lock(&rep->mu);
    while (!rep->watch_stop && !rep->promoted && !rep->err &&
           pthread_cond_timedwait(&rep->cv, &rep->mu, &ts) != ETIMEDOUT) {
    }
    int done = rep->watch_stop || rep->promoted || rep->err;
    pthread_mutex_unlock(&rep->mu);
    if (done) break;
    if (!f && tg__lease_connect(&f, rep->url, rep->name, period, NULL, 0)) continue;
    tg__lease l;
    if (tg__follow_lease_get(f, rep->lease_ttl_ms, &l, NULL, 0)) continue;
    uint64_t now = tg__now_ns();
    if (l.revision != seen_rev || !seen_ns) {
      seen_rev = l.revision;
      seen_ns = now;
    }
    uint64_t ttl = l.ttl_ms ? l.ttl_ms : rep->lease_ttl_ms;
    int stale = l.revision && now - seen_ns >= ttl * 1000000u;
    if (!stale && tg__lease_live(&l, rep->owner, rep->lease_ttl_ms)) continue;
    char msg[256] = "";
    int rc = promote(s, FAILOVER_DRAIN_MS, 0, stale ? l.revision : 0, 1, msg, sizeof msg);
    if (rc == 0) break;
    seen_ns = 0; /* the lease moved (or will): watch it anew */
  }
  tg__follow_close(f);
  return NULL;
}
#endif

int tg_replica_promote(tg_store *s, uint32_t timeout_ms, char *msg, size_t msglen) {
  if (msg && msglen) msg[0] = 0;
  if (!s || !s->replica) return TG_EINVAL;
  TG__CALL_GUARD(s);
#ifndef TG_HAVE_NATS
  (void)timeout_ms;
  tg__say(msg, msglen, "promotion needs NATS: this tokengraph was built without libnats");
  return TG_ENOTSUP;
#else
  return promote(s, timeout_ms, s->replica->force, 0, 0, msg, msglen);
#endif
}
