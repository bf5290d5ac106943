/*
 * The replica's side of NATS JetStream (follow.c): reading a WAL stream
 * from a stream sequence on, the stream's bounds, and the leader lease.
 * A thin layer over libnats with no tokengraph types, so that the store
 * (src/store/replica.c) never sees a NATS type. Names are fixed by the
 * replication contract (docs/operations.md, "Replication"): stream TG_<N>,
 * subject tg.<N>.wal, lease bucket TG_LEASE_<N>, key "leader".
 * Built only with libnats (TG_HAVE_NATS). Every function returns 0 or a
 * negative tokengraph / -errno code and, where it takes one, writes a
 * one-line message.
 */
#ifndef TG_REPL_FOLLOW_H
#define TG_REPL_FOLLOW_H

#include <stddef.h>
#include <stdint.h>

typedef struct tg__follow tg__follow;

/* One WAL message as delivered. body/len are valid during the callback
   only. first_lsn, last_lsn, epoch come from the headers Tg-First-Lsn,
   Tg-Last-Lsn, Tg-Epoch (0 when a header is missing or not a number). */
typedef struct tg__follow_msg {
  uint64_t seq;       /* stream sequence */
  uint64_t first_lsn; /* Tg-First-Lsn */
  uint64_t last_lsn;  /* Tg-Last-Lsn */
  uint64_t epoch;     /* Tg-Epoch */
  const void *body;
  size_t len;
} tg__follow_msg;

/* Return 0 to go on, nonzero to stop the fetch (that value is returned). */
typedef int (*tg__follow_cb)(void *ctx, const tg__follow_msg *m);

/* Connect to url and look up stream TG_<name>. -ECONNREFUSED (no server
   answers), -ENOENT (no such stream), TG_ENOMEM, TG_EIO with msg. */
int tg__follow_open(tg__follow **out, const char *url, const char *name, char *msg,
                    size_t len);

/* The stream's first and last sequence now (first > last: empty). */
int tg__follow_bounds(tg__follow *f, uint64_t *first, uint64_t *last, char *msg,
                      size_t len);

/* Start (or restart) delivery at stream sequence `seq`: an ephemeral pull
   consumer, DeliverByStartSequence, no acks. The server silently starts
   at the stream's first sequence when seq is below it: the caller checks
   the first sequence delivered. */
int tg__follow_start(tg__follow *f, uint64_t seq, char *msg, size_t len);

/* Fetch up to `batch` messages, waiting up to timeout_ms for the first,
   and hand each to cb in order. Returns the number handed over (0: none
   came in time), cb's nonzero value, or an error with msg. */
int tg__follow_fetch(tg__follow *f, int batch, int timeout_ms, tg__follow_cb cb, void *ctx,
                     char *msg, size_t len);

/* Close; accepts NULL. */
void tg__follow_close(tg__follow *f);

/* ---- the leader lease (KV bucket TG_LEASE_<name>, key "leader") -------- */

typedef struct tg__lease {
  uint64_t epoch;    /* the epoch in the value (0: no lease yet) */
  uint64_t lsn;      /* the LSN in the value */
  uint64_t revision; /* the key's revision (0: absent) */
  char owner[128];   /* "<host>:<pid>:<random>" */
} tg__lease;

/* Read the lease (bucket created when missing, with ttl_ms as its max
   age, 0 = none; ttl_ms == UINT32_MAX: not created, and a missing bucket
   reads as no lease). An absent key gives epoch 0, revision 0. */
int tg__follow_lease_get(tg__follow *f, uint32_t ttl_ms, tg__lease *out, char *msg,
                         size_t len);

/* Take the lease: write {"epoch":E,"owner":O,"lsn":L} if the key's
   revision is still `revision` (0: create it only if absent). TG_EEXIST
   when someone else changed it first (compare-and-swap lost). */
int tg__follow_lease_put(tg__follow *f, uint32_t ttl_ms, uint64_t revision, uint64_t epoch,
                         const char *owner, uint64_t lsn, uint64_t *new_revision,
                         char *msg, size_t len);

#endif /* TG_REPL_FOLLOW_H */

/* ---- snapshots (stream TG_SNAP_<name>, subject tg.<name>.snap) --------- */

/* Create stream `stream` with `subject` when missing (file storage). */
int tg__follow_stream_ensure(tg__follow *f, const char *stream, const char *subject,
                             char *msg, size_t len);

/* A header of a message, by name, as a decimal (see tg__follow_get). */
typedef struct tg__follow_hdr {
  const char *name;
  uint64_t value; /* 0 when missing or not a number */
} tg__follow_hdr;

/* Publish data synchronously on subject with headers hdrs[0..nh) (decimal
   values); *seq (may be NULL) gets the stream sequence. */
int tg__follow_publish(tg__follow *f, const char *subject, const void *data, size_t len,
                       const tg__follow_hdr *hdrs, int nh, uint64_t *seq, char *msg,
                       size_t mlen);

/* Read message `seq` of stream (seq 0: the last one on `subject`) into a
   malloc'd *data (the caller frees it), its headers into hdrs[i].value.
   -ENOENT: no such message. */
int tg__follow_get(tg__follow *f, const char *stream, const char *subject, uint64_t seq,
                   tg__follow_hdr *hdrs, int nh, void **data, size_t *len, uint64_t *seq_out,
                   char *msg, size_t mlen);

/* Remove the messages of stream below seq. */
int tg__follow_purge_below(tg__follow *f, const char *stream, uint64_t seq, char *msg,
                           size_t len);
