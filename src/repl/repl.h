/*
 * repl: a thin C wrapper over libnats (NATS JetStream), the transport of
 * replication. Only the store uses it (the WAL knows a generic shipping
 * hook, src/wal/wal_store.h), and no libnats type crosses this header, so
 * the store and the tests compile without nats.h.
 *
 * Names for a store named N (docs/durability.md, "REPLICATED"): stream
 * TG_N with subject tg.N.wal (WAL frames), TG_SNAP_N / tg.N.snap
 * (checkpoint chunks), KV bucket TG_LEASE_N. A WAL message carries the
 * headers Tg-First-Lsn, Tg-Last-Lsn, Tg-Epoch (decimal) and Nats-Msg-Id
 * "<epoch>:<first_lsn>"; its body is WAL frames as docs/wal-format.md
 * writes them, records only.
 *
 * Two handles: tg__repl, the primary's (shipping, src/store/ship.c), and
 * tg__follow, the replica's (src/store/replica.c, snapshot.c), over one
 * connection code, one stream lookup and one message reader.
 *
 * Errors of tg__repl_*: TG_EIO (the server refused or could not be
 * reached; the message says which), -ETIMEDOUT, TG_ENOTFOUND, TG_ENOMEM,
 * TG_EINVAL.
 * Threading: one tg__repl may be used from several threads (libnats
 * connections are thread-safe); the ack callbacks run on a libnats thread.
 */
#ifndef TG_REPL_H
#define TG_REPL_H

#include <stddef.h>
#include <stdint.h>

#define TG__REPL_NAME_MAX 64          /* a store name's longest length */
#define TG__REPL_MAX_MSG (1u << 20)   /* a message body never exceeds this */
#define TG__REPL_HDR_ROOM 256u        /* bytes kept for the headers below
                                         the server's max_payload */
#define TG__REPL_JS_WRONG_LAST_SEQ 10071 /* JetStream: expected last
                                            sequence did not match */

/* Stream, subject and bucket names of store `name` (checked by
   tg__repl_name_ok). */
typedef struct tg__repl_names {
  char stream[TG__REPL_NAME_MAX + 8];      /* TG_N */
  char subject[TG__REPL_NAME_MAX + 8];     /* tg.N.wal */
  char snap_stream[TG__REPL_NAME_MAX + 16]; /* TG_SNAP_N */
  char snap_subject[TG__REPL_NAME_MAX + 16]; /* tg.N.snap */
  char lease_bucket[TG__REPL_NAME_MAX + 16]; /* TG_LEASE_N */
} tg__repl_names;

/* 1 if name is 1..64 characters of [A-Za-z0-9_-] (valid in stream and
   subject names alike), else 0. */
int tg__repl_name_ok(const char *name);
/* Fill *n from a name tg__repl_name_ok accepts. */
void tg__repl_names_of(tg__repl_names *n, const char *name);

/* Called on a libnats thread for each asynchronously published message, in
   publish order: acked (stream_seq, duplicate: the server had it already
   under the same Nats-Msg-Id), or refused (js_code the JetStream error,
   e.g. TG__REPL_JS_WRONG_LAST_SEQ; 0 with a client status in text). The
   last_lsn is the message's Tg-Last-Lsn. Must not call back into tg__repl. */
typedef struct tg__repl_acks {
  void (*on_ack)(void *arg, uint64_t stream_seq, uint64_t last_lsn, int duplicate);
  void (*on_error)(void *arg, int js_code, uint64_t last_lsn, const char *text);
  void *arg;
  int max_pending; /* asynchronous publishes in flight before a publish
                      waits; 0: 256 */
} tg__repl_acks;

typedef struct tg__repl tg__repl;

/* Connect to url (acks may be NULL: no asynchronous publishing). msg gets
   a one-line reason on failure. The connection reconnects for as long as
   it is open. */
int tg__repl_connect(tg__repl **out, const char *url, const tg__repl_acks *acks, char *msg,
                     size_t msglen);
/* Close the connection (pending acks are dropped, their callbacks not
   called). Accepts NULL. */
void tg__repl_close(tg__repl *r);
/* Make a publish waiting for the window (and every later one that would)
   give up with -ETIMEDOUT: the caller has failed and must not hang. Any
   thread. */
void tg__repl_cancel(tg__repl *r);

/* Largest message body to publish: min(TG__REPL_MAX_MSG, the server's
   max_payload - TG__REPL_HDR_ROOM). */
size_t tg__repl_max_body(const tg__repl *r);

/* Create stream `stream` with subject `subject` if missing: file storage,
   `replicas` copies (1 or 3), Discard=New, no message or byte limit. An
   existing stream is used as it is (its replica count is not changed). */
int tg__repl_stream_ensure(tg__repl *r, const char *stream, const char *subject, int replicas,
                           char *msg, size_t msglen);

typedef struct tg__repl_stream_state {
  uint64_t first_seq, last_seq, msgs, bytes;
  int replicas;
} tg__repl_stream_state;
/* TG_ENOTFOUND when the stream does not exist. */
int tg__repl_stream_state_get(tg__repl *r, const char *stream, tg__repl_stream_state *st);

/* A message read from a stream; data and id valid during the callback. */
typedef struct tg__repl_msg {
  const void *data;
  size_t len;
  uint64_t seq;       /* stream sequence */
  int64_t stored_ns;  /* when the server stored it (its CLOCK_REALTIME, ns;
                         0 when not known) */
  uint64_t first_lsn; /* headers, 0 when absent */
  uint64_t last_lsn;
  uint64_t epoch;
  const char *id;     /* Nats-Msg-Id or "" */
} tg__repl_msg;
/* Return 0 to go on, nonzero to stop (that value is returned). */
typedef int (*tg__repl_msg_cb)(void *arg, const tg__repl_msg *m);

/* A message header by name, as a decimal (0 when missing or not a
   number). */
typedef struct tg__repl_hdr {
  const char *name;
  uint64_t value;
} tg__repl_hdr;

/* Read the message at seq (0: the stream's last) and pass it to cb, whose
   return value is returned. TG_ENOTFOUND: no such message. */
int tg__repl_get_msg(tg__repl *r, const char *stream, uint64_t seq, tg__repl_msg_cb cb,
                     void *arg);

/* Publish asynchronously (the ack comes to tg__repl_acks) with
   Nats-Msg-Id "<epoch>:<first_lsn>", ExpectLastSeq = expect_last_seq and
   the Tg-* headers. Waits while max_pending are in flight (libnats
   StallWait, then again), so a publish is the caller's backpressure. */
int tg__repl_publish_async(tg__repl *r, const char *subject, const void *data, size_t len,
                           uint64_t first_lsn, uint64_t last_lsn, uint64_t epoch,
                           uint64_t expect_last_seq);
/* The same, synchronously: *seq gets the stream sequence. A refusal for
   the expected sequence is TG_EFENCED. */
int tg__repl_publish_sync(tg__repl *r, const char *subject, const void *data, size_t len,
                          uint64_t first_lsn, uint64_t last_lsn, uint64_t epoch,
                          uint64_t expect_last_seq, uint64_t *seq);

/* A pull consumer (ephemeral) on subject of stream, from start_seq. */
typedef struct tg__repl_sub tg__repl_sub;
int tg__repl_pull_open(tg__repl_sub **out, tg__repl *r, const char *stream, const char *subject,
                       uint64_t start_seq);
/* Fetch up to batch messages, waiting up to timeout_ms for the first;
   each is acked and passed to cb (a non-zero return stops and is
   returned). Returns the number passed (0: none within the timeout). */
int tg__repl_fetch(tg__repl_sub *s, int batch, uint32_t timeout_ms, tg__repl_msg_cb cb,
                   void *arg);
void tg__repl_pull_close(tg__repl_sub *s);

/* ---- the replica's side -------------------------------------------------
 * Reading a WAL stream from a stream sequence on, the stream's bounds, the
 * leader lease (KV bucket TG_LEASE_<name>, key "leader") and the snapshot
 * stream. These functions speak errno where their callers tell cases
 * apart: -ECONNREFUSED (no server answers), -ENOENT (no such stream or
 * message); otherwise TG_ENOMEM, TG_EINVAL, TG_EIO, and each writes a
 * one-line message, keeping one already there (the first explanation). */

typedef struct tg__follow tg__follow;

/* Connect to url and look up stream TG_<name> (name: no '.', ' ', '*',
   '>'). The connection keeps libnats's reconnect defaults. */
int tg__follow_open(tg__follow **out, const char *url, const char *name, char *msg,
                    size_t len);
/* As tg__follow_open(), the connection reconnecting for as long as it is
   open (every 100 ms), as the primary's: a replica's follower. */
int tg__follow_open_kept(tg__follow **out, const char *url, const char *name, char *msg,
                         size_t len);

/* The stream's first and last sequence now (first > last: empty). */
int tg__follow_bounds(tg__follow *f, uint64_t *first, uint64_t *last, char *msg,
                      size_t len);

/* Start (or restart) delivery at stream sequence `seq`: a new ephemeral
   pull consumer (DeliverByStartSequence, no acks) and pull requests of
   `batch` messages each kept outstanding (repl.c, PULLING), so at most a
   few such batches are buffered. The server silently starts at the
   stream's first sequence when seq is below it: the caller checks the
   first sequence delivered. */
int tg__follow_start(tg__follow *f, uint64_t seq, int batch, char *msg, size_t len);

/* Hand to cb, in order, up to `batch` messages: the first waited for at
   most timeout_ms, then those already received. Returns the number
   handed over (0: none came in time), cb's nonzero value, or an error
   with msg (the consumer is gone or unanswered: start again). */
int tg__follow_fetch(tg__follow *f, int batch, int timeout_ms, tg__repl_msg_cb cb, void *ctx,
                     char *msg, size_t len);

/* Close; accepts NULL. */
void tg__follow_close(tg__follow *f);

/* Tests only: pull requests sent from now on expire after expires_ms, and
   one neither served nor expired grace_ms later is taken as lost (repl.c,
   PULLING); 0, 0 restores the defaults (5,000 and 2,000 ms). Any thread. */
void tg__follow_set_pull_timing(uint32_t expires_ms, uint32_t grace_ms);

typedef struct tg__lease {
  uint64_t epoch;    /* the epoch in the value (0: no lease yet) */
  uint64_t lsn;      /* the LSN in the value */
  uint64_t revision; /* the key's revision (0: absent) */
  uint64_t ttl_ms;   /* the TTL its holder wrote (0: not said) */
  uint64_t age_ms;   /* how long ago it was written, by the server's
                        timestamp against this machine's clock */
  char owner[128];   /* "<host>:<pid>:<random>"; "" when released */
} tg__lease;

/* Read the lease (bucket created when missing, with ttl_ms as its max
   age, 0 = none; ttl_ms == UINT32_MAX: not created, and a missing bucket
   reads as no lease). An absent key gives epoch 0, revision 0. */
int tg__follow_lease_get(tg__follow *f, uint32_t ttl_ms, tg__lease *out, char *msg,
                         size_t len);

/* Take the lease: write {"epoch":E,"owner":O,"lsn":L,"ttl_ms":T} if the key's
   revision is still `revision` (0: create it only if absent). TG_EEXIST
   when someone else changed it first (compare-and-swap lost). */
int tg__follow_lease_put(tg__follow *f, uint32_t ttl_ms, uint64_t revision, uint64_t epoch,
                         const char *owner, uint64_t lsn, uint64_t *new_revision,
                         char *msg, size_t len);

/* A connection for the leader lease only (the lease holder, lease.c):
   no stream looked up, reconnecting for as long as it is open, and every
   request waiting at most wait_ms (0: libnats's 5 s), so that a renewal
   against a server gone away returns within its period. Close with
   tg__follow_close(). */
int tg__lease_connect(tg__follow **out, const char *url, const char *name, uint32_t wait_ms,
                      char *msg, size_t len);

/* The lease bucket's max age (0: none, or no bucket yet). */
int tg__follow_lease_bucket_ttl(tg__follow *f, uint64_t *ttl_ms, char *msg, size_t len);

/* Create stream `stream` with `subject` when missing (file storage, one
   copy). */
int tg__follow_stream_ensure(tg__follow *f, const char *stream, const char *subject,
                             char *msg, size_t len);

/* Publish data synchronously on subject with headers hdrs[0..nh) (decimal
   values); *seq (may be NULL) gets the stream sequence. */
int tg__follow_publish(tg__follow *f, const char *subject, const void *data, size_t len,
                       const tg__repl_hdr *hdrs, int nh, uint64_t *seq, char *msg,
                       size_t mlen);

/* Read message `seq` of stream (seq 0: the last one on `subject`) into a
   malloc'd *data (the caller frees it), its headers into hdrs[i].value.
   -ENOENT: no such message. */
int tg__follow_get(tg__follow *f, const char *stream, const char *subject, uint64_t seq,
                   tg__repl_hdr *hdrs, int nh, void **data, size_t *len, uint64_t *seq_out,
                   char *msg, size_t mlen);

/* Remove the messages of stream below seq (no request at all when none is
   below it). */
int tg__follow_purge_below(tg__follow *f, const char *stream, uint64_t seq, char *msg,
                           size_t len);

#endif
