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
 * Errors: TG_EIO (the server refused or could not be reached; the message
 * says which), -ETIMEDOUT, TG_ENOTFOUND, TG_EEXIST, TG_ENOMEM, TG_EINVAL.
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
   a one-line reason on failure. */
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
  uint64_t first_lsn; /* headers, 0 when absent */
  uint64_t last_lsn;
  uint64_t epoch;
  const char *id;     /* Nats-Msg-Id or "" */
} tg__repl_msg;
typedef int (*tg__repl_msg_cb)(void *arg, const tg__repl_msg *m);

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

/* Remove the messages of `stream` with a sequence below seq. */
int tg__repl_purge_below(tg__repl *r, const char *stream, uint64_t seq);

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

/* A key-value bucket (created when missing, with history 1 and ttl_ms:
   0 = no TTL). Revisions make compare-and-swap. */
typedef struct tg__repl_kv tg__repl_kv;
int tg__repl_kv_open(tg__repl_kv **out, tg__repl *r, const char *bucket, int replicas,
                     uint32_t ttl_ms);
/* TG_ENOTFOUND: no such key (or deleted). *len is the value's length; at
   most cap bytes are copied. */
int tg__repl_kv_get(tg__repl_kv *kv, const char *key, void *buf, size_t cap, size_t *len,
                    uint64_t *rev);
/* Create only if missing: TG_EEXIST otherwise. */
int tg__repl_kv_create(tg__repl_kv *kv, const char *key, const void *data, size_t len,
                       uint64_t *rev);
/* Update only if the key's revision is last_rev: TG_EEXIST (another
   revision) otherwise. */
int tg__repl_kv_update(tg__repl_kv *kv, const char *key, const void *data, size_t len,
                       uint64_t last_rev, uint64_t *rev);
void tg__repl_kv_close(tg__repl_kv *kv);

#endif
