/*
 * repl: the libnats wrapper (repl.h), both sides of replication: the
 * primary's (tg__repl: shipping, snapshots' streams) and the replica's
 * (tg__follow: reading a WAL stream from a sequence on, the leader lease).
 * Every libnats object is created and destroyed here; the rest of the
 * library sees only these handles. One connect, one stream lookup, one
 * header parser and one message builder serve both; the follower pulls
 * with its own outstanding requests (PULLING).
 *
 * Facts of libnats 3.4.1 and nats-server 2.9.10 this file relies on
 * (measured on this project's reference machine, issue 14):
 *  - the client refuses a message over the server's max_payload (1 MiB by
 *    default), headers included: tg__repl_max_body keeps room for ours;
 *  - ExpectLastSeq makes the server refuse a publish whose stream's last
 *    sequence differs (JetStream error 10071): a second writer is fenced;
 *  - a repeated Nats-Msg-Id within the duplicate window gets a PubAck
 *    marked duplicate, checked before ExpectLastSeq, so a resend after a
 *    lost ack is harmless;
 *  - a pull consumer asked for a sequence below the stream's first
 *    silently starts at the first: callers compare the first sequence they
 *    are delivered with the one they asked for.
 */
#include "repl/repl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tokengraph/errors.h"

struct tg__repl {
  natsConnection *nc;
  jsCtx *js;
  tg__repl_acks acks; /* copied at connect; read-only after */
  size_t max_body;
  _Atomic int cancelled;  /* tg__repl_cancel: a waiting publish gives up */
  int64_t js_wait_ms;     /* set before connect: JetStream requests' wait
                             (0: libnats's 5 s) */
};

struct tg__repl_sub {
  natsSubscription *sub;
};

/* A one-line reason into msg. The primary's side writes it (say); the
   replica's side keeps the first explanation (say_first), so that a later,
   less precise one does not overwrite it. */
static void vsay(char *msg, size_t len, int keep_first, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));
static void vsay(char *msg, size_t len, int keep_first, const char *fmt, va_list ap) {
  if (!msg || !len || (keep_first && msg[0])) return;
  vsnprintf(msg, len, fmt, ap);
}
static void say(char *msg, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *msg, size_t len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsay(msg, len, 0, fmt, ap);
  va_end(ap);
}
static void say_first(char *msg, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say_first(char *msg, size_t len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsay(msg, len, 1, fmt, ap);
  va_end(ap);
}

static int from_status(natsStatus s) {
  switch (s) {
  case NATS_OK:
    return 0;
  case NATS_NO_MEMORY:
    return TG_ENOMEM;
  case NATS_TIMEOUT:
    return -ETIMEDOUT;
  case NATS_NOT_FOUND:
    return TG_ENOTFOUND;
  case NATS_INVALID_ARG:
    return TG_EINVAL;
  default:
    return TG_EIO;
  }
}

/* The replica's side (tg__follow) speaks errno for the cases its callers
   tell apart: no server, no such stream or message. */
static int from_status_follow(natsStatus s) {
  switch (s) {
  case NATS_NO_SERVER:
  case NATS_CONNECTION_CLOSED:
  case NATS_CONNECTION_DISCONNECTED:
    return -ECONNREFUSED;
  case NATS_NOT_FOUND:
    return -ENOENT;
  default:
    return from_status(s);
  }
}

int tg__repl_name_ok(const char *name) {
  if (!name) return 0;
  size_t n = strlen(name);
  if (n == 0 || n > TG__REPL_NAME_MAX) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '_' || c == '-'))
      return 0;
  }
  return 1;
}

void tg__repl_names_of(tg__repl_names *n, const char *name) {
  snprintf(n->stream, sizeof n->stream, "TG_%s", name);
  snprintf(n->subject, sizeof n->subject, "tg.%s.wal", name);
  snprintf(n->snap_stream, sizeof n->snap_stream, "TG_SNAP_%s", name);
  snprintf(n->snap_subject, sizeof n->snap_subject, "tg.%s.snap", name);
  snprintf(n->lease_bucket, sizeof n->lease_bucket, "TG_LEASE_%s", name);
}

/* A decimal header, 0 when missing or not a number. */
static uint64_t hdr_u64(natsMsg *m, const char *key) {
  const char *v = NULL;
  if (natsMsgHeader_Get(m, key, &v) != NATS_OK || !v || !*v) return 0;
  char *end = NULL;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 10);
  if (errno || *end || *v == '-') return 0;
  return (uint64_t)x;
}

/* A message on subject with the decimal headers hdrs[0..nh). */
static natsStatus make_msg(natsMsg **out, const char *subject, const void *data, size_t len,
                           const tg__repl_hdr *hdrs, int nh) {
  char v[24];
  natsMsg *m = NULL;
  natsStatus s = natsMsg_Create(&m, subject, NULL, data, (int)len);
  for (int i = 0; s == NATS_OK && i < nh; i++) {
    snprintf(v, sizeof v, "%" PRIu64, hdrs[i].value);
    s = natsMsgHeader_Set(m, hdrs[i].name, v);
  }
  if (s != NATS_OK) {
    natsMsg_Destroy(m);
    m = NULL;
  }
  *out = m;
  return s;
}

/* A WAL message with the Tg-* headers, and its publish options: the
   Nats-Msg-Id (written into id, which must outlive *po) and
   ExpectLastSeq. */
static natsStatus make_wal_msg(natsMsg **out, jsPubOptions *po, const char *subject,
                               const void *data, size_t len, uint64_t first_lsn,
                               uint64_t last_lsn, uint64_t epoch, uint64_t expect_last_seq,
                               char *id, size_t idlen) {
  const tg__repl_hdr h[3] = {
      {"Tg-First-Lsn", first_lsn}, {"Tg-Last-Lsn", last_lsn}, {"Tg-Epoch", epoch}};
  snprintf(id, idlen, "%" PRIu64 ":%" PRIu64, epoch, first_lsn);
  jsPubOptions_Init(po);
  po->MsgId = id;
  po->ExpectLastSeq = expect_last_seq;
  return make_msg(out, subject, data, len, h, 3);
}

/* The stream's state (st may be NULL: an existence check). */
static natsStatus stream_lookup(jsCtx *js, const char *stream, tg__repl_stream_state *st,
                                jsErrCode *jerr) {
  jsStreamInfo *si = NULL;
  natsStatus s = js_GetStreamInfo(&si, js, stream, NULL, jerr);
  if (s == NATS_OK && st) {
    st->first_seq = si->State.FirstSeq;
    st->last_seq = si->State.LastSeq;
    st->msgs = si->State.Msgs;
    st->bytes = si->State.Bytes;
    st->replicas = si->Config ? si->Config->Replicas : 0;
  }
  jsStreamInfo_Destroy(si);
  return s;
}

/* libnats calls this on its own thread, in publish order. */
static void ack_handler(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure) {
  (void)js;
  tg__repl *r = closure;
  uint64_t last = hdr_u64(msg, "Tg-Last-Lsn");
  if (pa) {
    if (r->acks.on_ack) r->acks.on_ack(r->acks.arg, pa->Sequence, last, pa->Duplicate ? 1 : 0);
  } else if (pae && r->acks.on_error) {
    char text[160];
    snprintf(text, sizeof text, "%s%s%s", natsStatus_GetText(pae->Err),
             pae->ErrText ? ": " : "", pae->ErrText ? pae->ErrText : "");
    r->acks.on_error(r->acks.arg, (int)pae->ErrCode, last, text);
  }
  natsMsg_Destroy(msg);
}

/* The one connect of both sides. keep_reconnecting: the primary's
   connection and the replica's follower's retry for as long as the store is
   open (with libnats's defaults, 60 tries 2 s apart, a server away for two
   minutes closed the follower's connection for good: it never resumed, and
   said nothing); the short-lived ones (a promotion, a lease read, a tool's
   look at the stream) keep libnats's defaults. */
static natsStatus connect_js(tg__repl *r, const char *url, int keep_reconnecting, char *msg,
                             size_t msglen) {
  natsOptions *o = NULL;
  natsStatus s = natsOptions_Create(&o);
  /* A cluster is given as "url1,url2,...": each becomes a server to try. */
  char list[1024];
  const char *servers[16];
  int nserv = 0;
  snprintf(list, sizeof list, "%s", url ? url : "");
  char *save = NULL;
  for (char *u = strtok_r(list, ", ", &save); u && nserv < 16; u = strtok_r(NULL, ", ", &save))
    servers[nserv++] = u;
  if (s == NATS_OK && nserv == 0) s = NATS_INVALID_ARG;
  if (s == NATS_OK) s = natsOptions_SetServers(o, servers, nserv);
  /* A message is a whole batch of the log: send it at once. Buffered,
     libnats's flusher sends it up to 1 ms later, which was all but 66 us
     of a TG_REPLICATED call's 1,000 us median (tg-bench replicate, one
     thread, measured here). */
  if (s == NATS_OK) s = natsOptions_SetSendAsap(o, true);
  /* Keep reconnecting for as long as the store is open: an outage is
     bounded by the store's ack timeout, not by the client giving up. */
  if (s == NATS_OK && keep_reconnecting) s = natsOptions_SetMaxReconnect(o, -1);
  if (s == NATS_OK && keep_reconnecting) s = natsOptions_SetReconnectWait(o, 100);
  if (s == NATS_OK) s = natsConnection_Connect(&r->nc, o);
  natsOptions_Destroy(o);
  if (s != NATS_OK) {
    say(msg, msglen, "cannot connect to NATS at %s: %s", url ? url : "", natsStatus_GetText(s));
    return s;
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  if (r->js_wait_ms > 0) jo.Wait = r->js_wait_ms;
  if (r->acks.on_ack || r->acks.on_error) {
    jo.PublishAsync.AckHandler = ack_handler;
    jo.PublishAsync.AckHandlerClosure = r;
    jo.PublishAsync.MaxPending = r->acks.max_pending > 0 ? r->acks.max_pending : 256;
  }
  s = natsConnection_JetStream(&r->js, r->nc, &jo);
  if (s != NATS_OK) {
    say(msg, msglen, "no JetStream context at %s: %s", url, natsStatus_GetText(s));
    return s;
  }
  int64_t mp = natsConnection_GetMaxPayload(r->nc);
  r->max_body = TG__REPL_MAX_MSG;
  if (mp > 0 && (uint64_t)mp - TG__REPL_HDR_ROOM < r->max_body)
    r->max_body = (size_t)mp - TG__REPL_HDR_ROOM;
  return NATS_OK;
}

int tg__repl_connect(tg__repl **out, const char *url, const tg__repl_acks *acks, char *msg,
                     size_t msglen) {
  *out = NULL;
  tg__repl *r = calloc(1, sizeof *r);
  if (!r) return TG_ENOMEM;
  if (acks) r->acks = *acks;
  natsStatus s = connect_js(r, url, 1, msg, msglen);
  if (s != NATS_OK) {
    tg__repl_close(r);
    return from_status(s);
  }
  *out = r;
  return 0;
}

void tg__repl_close(tg__repl *r) {
  if (!r) return;
  jsCtx_Destroy(r->js);
  natsConnection_Destroy(r->nc);
  free(r);
}

size_t tg__repl_max_body(const tg__repl *r) { return r->max_body; }

void tg__repl_cancel(tg__repl *r) {
  atomic_store_explicit(&r->cancelled, 1, memory_order_relaxed);
}

/* Create the stream when missing; an existing one is used as it is. */
static natsStatus ensure_stream(jsCtx *js, const char *stream, const char *subject, int replicas,
                                jsErrCode *jerr) {
  natsStatus s = stream_lookup(js, stream, NULL, jerr);
  if (s != NATS_NOT_FOUND) return s;
  jsStreamConfig c;
  jsStreamConfig_Init(&c);
  const char *subjects[1] = {subject};
  c.Name = stream;
  c.Subjects = subjects;
  c.SubjectsLen = 1;
  c.Storage = js_FileStorage;
  c.Replicas = replicas;
  /* Nothing is dropped before the primary purges it below a checkpoint. */
  c.Discard = js_DiscardNew;
  jsStreamInfo *si = NULL;
  s = js_AddStream(&si, js, &c, NULL, jerr);
  jsStreamInfo_Destroy(si);
  /* Another process created it meanwhile: use it. */
  if (s != NATS_OK && stream_lookup(js, stream, NULL, NULL) == NATS_OK) s = NATS_OK;
  return s;
}

int tg__repl_stream_ensure(tg__repl *r, const char *stream, const char *subject, int replicas,
                           char *msg, size_t msglen) {
  jsErrCode jerr = 0;
  natsStatus s = ensure_stream(r->js, stream, subject, replicas, &jerr);
  if (s != NATS_OK)
    say(msg, msglen, "cannot create stream %s (R%d): %s (JetStream error %d)", stream, replicas,
        natsStatus_GetText(s), (int)jerr);
  return from_status(s);
}

int tg__repl_stream_state_get(tg__repl *r, const char *stream, tg__repl_stream_state *st) {
  return from_status(stream_lookup(r->js, stream, st, NULL));
}

/* The one message reader: headers, body, Nats-Msg-Id. */
static int pass_msg(natsMsg *m, uint64_t seq, tg__repl_msg_cb cb, void *arg) {
  tg__repl_msg rm;
  const char *id = NULL;
  rm.data = natsMsg_GetData(m);
  rm.len = (size_t)natsMsg_GetDataLength(m);
  rm.seq = seq;
  rm.stored_ns = 0;
  rm.first_lsn = hdr_u64(m, "Tg-First-Lsn");
  rm.last_lsn = hdr_u64(m, "Tg-Last-Lsn");
  rm.epoch = hdr_u64(m, "Tg-Epoch");
  rm.id = natsMsgHeader_Get(m, "Nats-Msg-Id", &id) == NATS_OK && id ? id : "";
  return cb(arg, &rm);
}

/* Message seq of stream, or (seq 0) the last one on subject. */
static natsStatus get_msg(jsCtx *js, natsMsg **m, const char *stream, const char *subject,
                          uint64_t seq, jsErrCode *jerr) {
  return seq ? js_GetMsg(m, js, stream, seq, NULL, jerr)
             : js_GetLastMsg(m, js, stream, subject, NULL, jerr);
}

int tg__repl_get_msg(tg__repl *r, const char *stream, uint64_t seq, tg__repl_msg_cb cb,
                     void *arg) {
  natsMsg *m = NULL;
  /* The last message of any subject: ">" matches them all. */
  natsStatus s = get_msg(r->js, &m, stream, ">", seq, NULL);
  if (s != NATS_OK) return from_status(s);
  uint64_t mseq = seq ? seq : natsMsg_GetSequence(m);
  int rc = pass_msg(m, mseq, cb, arg);
  natsMsg_Destroy(m);
  return rc;
}

/* A publish that can succeed if made again on the same connection: a full
   window, or a connection lost and being re-established. */
static int publish_retryable(natsStatus s) {
  switch (s) {
  case NATS_TIMEOUT:
  case NATS_IO_ERROR:
  case NATS_CONNECTION_DISCONNECTED:
  case NATS_STALE_CONNECTION:
  case NATS_INSUFFICIENT_BUFFER:
    return 1;
  default:
    return 0;
  }
}

int tg__repl_publish_async(tg__repl *r, const char *subject, const void *data, size_t len,
                           uint64_t first_lsn, uint64_t last_lsn, uint64_t epoch,
                           uint64_t expect_last_seq) {
  if (len > r->max_body) return TG_EINVAL;
  char id[48];
  natsMsg *m = NULL;
  jsPubOptions po;
  natsStatus s = make_wal_msg(&m, &po, subject, data, len, first_lsn, last_lsn, epoch,
                              expect_last_seq, id, sizeof id);
  if (s != NATS_OK) return from_status(s);
  /* A full window (MaxPending in flight) makes the call wait StallWait
     (200 ms) and fail with a timeout; wait again: this is the writer's
     backpressure, bounded by the store's ack timeout. A lost connection
     fails the write itself (SendAsap writes in this thread) until the
     reader thread notices and buffers for the reconnect: send the same
     message again (a copy that did reach the stream makes the resend a
     duplicate, acknowledged and not stored twice). Only a closed
     connection or the store's cancel (the ack timeout passed) ends it. */
  for (;;) {
    s = js_PublishMsgAsync(r->js, &m, &po);
    if (!publish_retryable(s)) break;
    /* Relaxed: a flag polled every pass; nothing else hangs on it. */
    if (natsConnection_IsClosed(r->nc) || atomic_load_explicit(&r->cancelled, memory_order_relaxed))
      break;
    if (s != NATS_TIMEOUT) { /* StallWait paced the timeout; pace the rest */
      struct timespec ts = {0, 10 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
  }
  natsMsg_Destroy(m); /* NULL once the library owns it */
  return from_status(s);
}

/* Publish m synchronously (po may be NULL); m is destroyed. */
static natsStatus publish_sync(jsCtx *js, natsMsg *m, jsPubOptions *po, uint64_t *seq,
                               jsErrCode *jerr) {
  jsPubAck *pa = NULL;
  natsStatus s = js_PublishMsg(&pa, js, m, po, jerr);
  natsMsg_Destroy(m);
  if (s == NATS_OK && seq) *seq = pa->Sequence;
  jsPubAck_Destroy(pa);
  return s;
}

int tg__repl_publish_sync(tg__repl *r, const char *subject, const void *data, size_t len,
                          uint64_t first_lsn, uint64_t last_lsn, uint64_t epoch,
                          uint64_t expect_last_seq, uint64_t *seq) {
  if (len > r->max_body) return TG_EINVAL;
  char id[48];
  natsMsg *m = NULL;
  jsPubOptions po;
  natsStatus s = make_wal_msg(&m, &po, subject, data, len, first_lsn, last_lsn, epoch,
                              expect_last_seq, id, sizeof id);
  if (s != NATS_OK) return from_status(s);
  jsErrCode jerr = 0;
  s = publish_sync(r->js, m, &po, seq, &jerr);
  if (s != NATS_OK && (int)jerr == TG__REPL_JS_WRONG_LAST_SEQ) return TG_EFENCED;
  return from_status(s);
}

/* An ephemeral pull consumer on subject of stream from start_seq (0: the
   first). No acks: a reader's position is its own (a replica persists it
   with its checkpoints), not the consumer's; the server drops the
   consumer once its reader has gone. */
static natsStatus pull_subscribe(jsCtx *js, natsSubscription **sub, const char *stream,
                                 const char *subject, uint64_t start_seq, jsErrCode *jerr) {
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream;
  so.Config.DeliverPolicy = start_seq ? js_DeliverByStartSequence : js_DeliverAll;
  so.Config.OptStartSeq = start_seq;
  so.Config.AckPolicy = js_AckNone;
  so.Config.InactiveThreshold = 60LL * 1000 * 1000 * 1000;
  natsStatus s = js_PullSubscribe(sub, js, subject, NULL, NULL, &so, jerr);
  /* No pending limit: a pull delivers only what was asked for (a batch of
     messages of up to 1 MiB each), and libnats's default of 64 MiB would
     drop messages of a 64-message batch of full messages as a slow
     consumer's, which the follower would see as a gap. */
  if (s == NATS_OK) s = natsSubscription_SetPendingLimits(*sub, -1, -1);
  return s;
}

static void unsubscribe(natsSubscription *sub) {
  if (!sub) return;
  natsSubscription_Unsubscribe(sub);
  natsSubscription_Destroy(sub);
}

/* The fetch loop of tg__repl_fetch (a reader of a whole stream, such as
   the shipping tests'; the follower pulls as PULLING below says): up to
   batch messages, each passed to cb in order. Returns the number passed
   (0 with *st set: the fetch failed), cb's nonzero value, or TG_EIO with
   *no_meta set for a message without JetStream metadata.
   libnats 3.4.1's natsSubscription_Fetch first takes the messages already
   queued, then sends a no-wait pull; when the stream holds none past the
   consumer, a pull that waits until `batch` messages came or timeout_ms
   passed (from 20 ms on, libnats asks the server to end it 10 ms sooner).
   A fetch that gives up while the server still sends leaves messages
   queued, and a later fetch that finds more than half its batch queued
   overruns its array (PULLING): so the wait is never below FETCH_MIN_MS
   and a caller asks for batches that arrive within its wait. */
#define FETCH_MIN_MS 20
static int fetch_msgs(natsSubscription *sub, int batch, int64_t timeout_ms, tg__repl_msg_cb cb,
                      void *arg, natsStatus *st, jsErrCode *jerr, int *no_meta) {
  *no_meta = 0;
  natsMsgList list = {0};
  if (timeout_ms < FETCH_MIN_MS) timeout_ms = FETCH_MIN_MS;
  *st = natsSubscription_Fetch(&list, sub, batch, timeout_ms, jerr);
  if (*st == NATS_TIMEOUT) {
    *st = NATS_OK;
    return 0;
  }
  if (*st != NATS_OK) return 0;
  int n = 0, rc = 0;
  for (int i = 0; i < list.Count && !rc; i++) {
    jsMsgMetaData *md = NULL;
    if (natsMsg_GetMetaData(&md, list.Msgs[i]) != NATS_OK) {
      *no_meta = 1;
      rc = TG_EIO;
      break;
    }
    uint64_t seq = md->Sequence.Stream;
    jsMsgMetaData_Destroy(md);
    rc = pass_msg(list.Msgs[i], seq, cb, arg);
    if (!rc) n++;
  }
  natsMsgList_Destroy(&list);
  return rc ? rc : n;
}

int tg__repl_pull_open(tg__repl_sub **out, tg__repl *r, const char *stream, const char *subject,
                       uint64_t start_seq) {
  *out = NULL;
  tg__repl_sub *s = calloc(1, sizeof *s);
  if (!s) return TG_ENOMEM;
  natsStatus st = pull_subscribe(r->js, &s->sub, stream, subject, start_seq, NULL);
  if (st != NATS_OK) {
    free(s);
    return from_status(st);
  }
  *out = s;
  return 0;
}

int tg__repl_fetch(tg__repl_sub *s, int batch, uint32_t timeout_ms, tg__repl_msg_cb cb,
                   void *arg) {
  natsStatus st;
  int no_meta;
  int rc = fetch_msgs(s->sub, batch, (int64_t)timeout_ms, cb, arg, &st, NULL, &no_meta);
  return st != NATS_OK ? from_status(st) : rc;
}

void tg__repl_pull_close(tg__repl_sub *s) {
  if (!s) return;
  unsubscribe(s->sub);
  free(s);
}

/* Remove the messages of stream below seq. */
static natsStatus purge_below(jsCtx *js, const char *stream, uint64_t seq, jsErrCode *jerr) {
  /* Nothing below seq: no request at all (nats-server 2.9.10 purged a
     whole stream for a sequence at or below its first, seen here with
     sequence 1). */
  tg__repl_stream_state ss;
  if (stream_lookup(js, stream, &ss, NULL) == NATS_OK && seq <= ss.first_seq) return NATS_OK;
  jsOptions o;
  jsOptions_Init(&o);
  o.Stream.Purge.Sequence = seq;
  return js_PurgeStream(js, stream, &o, jerr);
}

/* ---- the replica's side (tg__follow) ------------------------------------ */

/* PULLING (tg__follow_start, tg__follow_fetch). The follower does not use
   natsSubscription_Fetch: in libnats 3.4.1 its loop ends when the count
   collected equals req->Batch, which it has just lowered by the messages
   it found already queued (_fetch: `req->Batch -= count`, then `while
   (count != req->Batch)`, read in the library's machine code). A fetch
   that starts with more than half its batch queued (left from an earlier
   pull the client gave up on while the server still sent) never meets
   that count: it stores every later message past the end of its array
   until its timeout (the heap-buffer-overflow ASan saw in test_replica);
   with fewer, it returns early and leaves the rest of its own pull to the
   next fetch. And a fetch is a round trip after each batch: the server
   idles while the follower applies, the follower while the server sends.
   Instead, an ephemeral pull consumer (js_AddConsumer, AckNone) and an
   inbox of the follower's own: PULL_AHEAD pull requests of `batch`
   messages each are kept outstanding, so the server sends each message
   as soon as it stores it (a waiting pull is served at once) while the
   follower applies the ones before, and libnats's reader thread receives
   them in parallel. A request ends when its messages came (counted: the
   server serves requests in order), or with status 408 when it expired;
   a new one is sent as soon as one ends. A start makes a new consumer
   and a new inbox, so nothing of an earlier pull can arrive among the
   new one's messages. Buffered at most: PULL_AHEAD x batch messages. A
   request the server neither served nor expired within PULL_EXPIRES_MS +
   PULL_GRACE_MS means it has lost the consumer: the fetch fails and the
   follower starts again at its position. So does a reconnect seen while
   no message comes: the server that answers now holds none of the
   requests (a restarted one), and waiting for their expiry would stall
   the follower for seconds. A server that kept them serves them on after
   the reconnect, and the messages it had sent into the broken connection
   are lost (the consumer acknowledges nothing, so it counts them
   delivered): the replica sees the next one's sequence skip and starts
   again at its position too (replica.c, on_message). */
#define PULL_AHEAD 2
#define PULL_EXPIRES_MS 5000
#define PULL_GRACE_MS 2000

/* The two above as used (tg__follow_set_pull_timing: a test shortens
   them). Relaxed: each request reads them once; a request sent before a
   change keeps the timing it was sent with (sent_ms + its own limit). */
static _Atomic uint32_t pull_expires_ms = PULL_EXPIRES_MS;
static _Atomic uint32_t pull_grace_ms = PULL_GRACE_MS;

void tg__follow_set_pull_timing(uint32_t expires_ms, uint32_t grace_ms) {
  atomic_store_explicit(&pull_expires_ms, expires_ms ? expires_ms : PULL_EXPIRES_MS,
                        memory_order_relaxed);
  atomic_store_explicit(&pull_grace_ms, grace_ms ? grace_ms : PULL_GRACE_MS,
                        memory_order_relaxed);
}

struct tg__follow {
  tg__repl r;            /* connection and JetStream context, no acks */
  natsSubscription *sub; /* the pull inbox; NULL until tg__follow_start() */
  kvStore *kv;           /* NULL until the lease is first used */
  char stream[160];      /* TG_<name> */
  char subject[160];     /* tg.<name>.wal */
  char bucket[160];      /* TG_LEASE_<name> */
  char consumer[64];     /* the ephemeral consumer's name ("" before start) */
  char next_subj[256];   /* $JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer> */
  char inbox[128];       /* where its messages come */
  int batch;             /* messages per pull request */
  int nreq;              /* outstanding requests, oldest first: */
  int left[PULL_AHEAD];  /* messages each may still bring */
  int64_t sent_ms[PULL_AHEAD]; /* when each was sent (nats_Now) */
  int64_t lost_ms[PULL_AHEAD]; /* sent_ms + expiry + grace: unanswered by
                                  then, the request is taken as lost */
  uint64_t reconnects;   /* the connection's count at the start */
};

static int follow_open(tg__follow **out, const char *url, const char *name, int keep,
                       char *msg, size_t len) {
  tg__follow *f = NULL;
  jsErrCode jerr = 0;
  natsStatus st;
  int rc = 0;
  *out = NULL;
  if (!url || !name || !*name || strchr(name, '.') || strchr(name, ' ') ||
      strchr(name, '*') || strchr(name, '>')) {
    say_first(msg, len, "replication name '%s' is empty or holds one of '. *>'",
              name ? name : "");
    return TG_EINVAL;
  }
  if (!(f = calloc(1, sizeof *f))) return TG_ENOMEM;
  if ((size_t)snprintf(f->stream, sizeof f->stream, "TG_%s", name) >= sizeof f->stream ||
      (size_t)snprintf(f->subject, sizeof f->subject, "tg.%s.wal", name) >= sizeof f->subject ||
      (size_t)snprintf(f->bucket, sizeof f->bucket, "TG_LEASE_%s", name) >= sizeof f->bucket) {
    say_first(msg, len, "replication name '%s' is too long", name);
    rc = TG_EINVAL;
    goto fail;
  }
  if ((st = connect_js(&f->r, url, keep, msg, len)) != NATS_OK) {
    rc = from_status_follow(st);
    goto fail;
  }
  st = stream_lookup(f->r.js, f->stream, NULL, &jerr);
  if (st != NATS_OK) {
    rc = st == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr ? -ENOENT : from_status_follow(st);
    say_first(msg, len, "%s: stream %s: %s (no primary has shipped to it yet?)", url, f->stream,
              natsStatus_GetText(st));
    goto fail;
  }
  *out = f;
  return 0;
fail:
  tg__follow_close(f);
  return rc;
}

int tg__follow_open(tg__follow **out, const char *url, const char *name, char *msg,
                    size_t len) {
  return follow_open(out, url, name, 0, msg, len);
}

int tg__follow_open_kept(tg__follow **out, const char *url, const char *name, char *msg,
                         size_t len) {
  return follow_open(out, url, name, 1, msg, len);
}

int tg__follow_bounds(tg__follow *f, uint64_t *first, uint64_t *last, char *msg,
                      size_t len) {
  tg__repl_stream_state ss;
  natsStatus st = stream_lookup(f->r.js, f->stream, &ss, NULL);
  if (st != NATS_OK) {
    say_first(msg, len, "stream %s: cannot read its state: %s", f->stream,
              natsStatus_GetText(st));
    return from_status_follow(st);
  }
  *first = ss.first_seq;
  *last = ss.last_seq;
  return 0;
}

/* Drop the pull inbox and the consumer: deleted when the server answers
   within a second, else (lost with a restarted server, or unreachable
   now) gone by its inactivity threshold; a close never waits longer. */
static void pull_stop(tg__follow *f) {
  if (f->sub) {
    natsSubscription_Unsubscribe(f->sub);
    natsSubscription_Destroy(f->sub);
    f->sub = NULL;
  }
  if (f->consumer[0] && natsConnection_Status(f->r.nc) == NATS_CONN_STATUS_CONNECTED) {
    jsOptions o;
    jsOptions_Init(&o);
    o.Wait = 1000;
    js_DeleteConsumer(f->r.js, f->stream, f->consumer, &o, NULL);
  }
  f->consumer[0] = 0;
  f->nreq = 0;
}

/* Send one pull request: f->batch messages, expiring after
   PULL_EXPIRES_MS (in ns on the wire). */
static natsStatus pull_request(tg__follow *f) {
  char body[96];
  uint32_t expires = atomic_load_explicit(&pull_expires_ms, memory_order_relaxed);
  uint32_t grace = atomic_load_explicit(&pull_grace_ms, memory_order_relaxed);
  int n = snprintf(body, sizeof body, "{\"batch\":%d,\"expires\":%lld}", f->batch,
                   (long long)expires * 1000000LL);
  natsStatus st = natsConnection_PublishRequest(f->r.nc, f->next_subj, f->inbox, body, n);
  if (st == NATS_OK) {
    f->left[f->nreq] = f->batch;
    f->sent_ms[f->nreq] = nats_Now();
    f->lost_ms[f->nreq] = f->sent_ms[f->nreq] + expires + grace;
    f->nreq++;
  }
  return st;
}

/* The oldest request ended. */
static void pull_pop(tg__follow *f) {
  for (int i = 1; i < f->nreq; i++) {
    f->left[i - 1] = f->left[i];
    f->sent_ms[i - 1] = f->sent_ms[i];
    f->lost_ms[i - 1] = f->lost_ms[i];
  }
  if (f->nreq) f->nreq--;
}

/* How many times the connection reconnected so far. */
static uint64_t reconnects_of(natsConnection *nc) {
  natsStatistics *stats = NULL;
  uint64_t n = 0;
  if (natsStatistics_Create(&stats) == NATS_OK && natsConnection_GetStats(nc, stats) == NATS_OK)
    natsStatistics_GetCounts(stats, NULL, NULL, NULL, NULL, &n);
  natsStatistics_Destroy(stats);
  return n;
}

int tg__follow_start(tg__follow *f, uint64_t seq, int batch, char *msg, size_t len) {
  jsErrCode jerr = 0;
  jsConsumerInfo *ci = NULL;
  natsInbox *inbox = NULL;
  natsStatus st;
  pull_stop(f);
  f->batch = batch > 0 ? batch : 1;
  f->reconnects = reconnects_of(f->r.nc);
  jsConsumerConfig cc;
  jsConsumerConfig_Init(&cc);
  cc.DeliverPolicy = js_DeliverByStartSequence;
  cc.OptStartSeq = seq ? seq : 1;
  /* No acks: a reader's position is its own (a replica persists it with
     its checkpoints), not the consumer's. */
  cc.AckPolicy = js_AckNone;
  cc.FilterSubject = f->subject;
  cc.InactiveThreshold = 60LL * 1000 * 1000 * 1000; /* gone once its reader is */
  st = js_AddConsumer(&ci, f->r.js, f->stream, &cc, NULL, &jerr);
  if (st == NATS_OK && (!ci || !ci->Name ||
                        (size_t)snprintf(f->consumer, sizeof f->consumer, "%s", ci->Name) >=
                            sizeof f->consumer))
    st = NATS_ERR;
  if (st == NATS_OK &&
      (size_t)snprintf(f->next_subj, sizeof f->next_subj, "$JS.API.CONSUMER.MSG.NEXT.%s.%s",
                       f->stream, f->consumer) >= sizeof f->next_subj)
    st = NATS_ERR;
  jsConsumerInfo_Destroy(ci);
  if (st == NATS_OK) st = natsInbox_Create(&inbox);
  if (st == NATS_OK) snprintf(f->inbox, sizeof f->inbox, "%s", (const char *)inbox);
  natsInbox_Destroy(inbox);
  if (st == NATS_OK) st = natsConnection_SubscribeSync(&f->sub, f->r.nc, f->inbox);
  /* No pending limit: the requests bound what comes (PULL_AHEAD x batch
     messages of up to 1 MiB), and libnats's default of 64 MiB would drop
     messages as a slow consumer's, which the follower would see as a gap. */
  if (st == NATS_OK) st = natsSubscription_SetPendingLimits(f->sub, -1, -1);
  while (st == NATS_OK && f->nreq < PULL_AHEAD) st = pull_request(f);
  if (st != NATS_OK) {
    say_first(msg, len, "stream %s: cannot start a consumer at sequence %" PRIu64 ": %s (%d)",
              f->stream, seq, natsStatus_GetText(st), (int)jerr);
    pull_stop(f);
    return from_status_follow(st);
  }
  return 0;
}

/* The stream sequence and the store time of a JetStream message, from
   its reply subject: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.
   <cseq>.<ns>.<pending> (and, from servers 2.9 with a domain on, two
   more tokens after ACK and one at the end). 0, or -1: not one. */
static int js_reply_meta(const char *reply, uint64_t *seq, int64_t *stored_ns) {
  const char *tok[13];
  int n = 0;
  if (!reply || strncmp(reply, "$JS.ACK.", 8)) return -1;
  for (const char *p = reply; n < 13;) {
    tok[n++] = p;
    p = strchr(p, '.');
    if (!p) break;
    p++;
  }
  int base = n == 9 ? 0 : n >= 11 ? 2 : -1; /* the index before <stream> is 1 + base */
  if (base < 0) return -1;
  *seq = strtoull(tok[5 + base], NULL, 10);
  *stored_ns = strtoll(tok[7 + base], NULL, 10);
  return *seq ? 0 : -1;
}

int tg__follow_fetch(tg__follow *f, int batch, int timeout_ms, tg__repl_msg_cb cb, void *ctx,
                     char *msg, size_t len) {
  if (!f->sub) return TG_EINVAL;
  int n = 0, rc = 0;
  int64_t wait = timeout_ms > 0 ? timeout_ms : 1;
  while (n < batch && !rc) {
    natsMsg *m = NULL;
    /* The first message may be waited for; the rest only taken while
       queued (a wait of 0 returns at once). */
    natsStatus st = natsSubscription_NextMsg(&m, f->sub, n ? 0 : wait);
    if (st == NATS_TIMEOUT) {
      if (n) break;
      if (f->nreq && nats_Now() > f->lost_ms[0]) {
        say_first(msg, len, "stream %s: the server neither served nor expired a pull within "
                  "%lld ms (it lost the consumer?)", f->stream,
                  (long long)(f->lost_ms[0] - f->sent_ms[0]));
        return TG_EIO;
      }
      if (reconnects_of(f->r.nc) != f->reconnects) {
        say_first(msg, len, "stream %s: reconnected to the server: pulling again", f->stream);
        return TG_EIO;
      }
      break;
    }
    if (st != NATS_OK) {
      /* NATS_NO_RESPONDERS: the consumer is gone. */
      say_first(msg, len, "stream %s: pull failed: %s", f->stream, natsStatus_GetText(st));
      return from_status_follow(st);
    }
    uint64_t seq = 0;
    int64_t stored = 0;
    if (js_reply_meta(natsMsg_GetReply(m), &seq, &stored) == 0) {
      if (f->nreq && --f->left[0] == 0) pull_pop(f);
      tg__repl_msg rm;
      const char *id = NULL;
      rm.data = natsMsg_GetData(m);
      rm.len = (size_t)natsMsg_GetDataLength(m);
      rm.seq = seq;
      rm.stored_ns = stored;
      rm.first_lsn = hdr_u64(m, "Tg-First-Lsn");
      rm.last_lsn = hdr_u64(m, "Tg-Last-Lsn");
      rm.epoch = hdr_u64(m, "Tg-Epoch");
      rm.id = natsMsgHeader_Get(m, "Nats-Msg-Id", &id) == NATS_OK && id ? id : "";
      rc = cb(ctx, &rm);
      if (!rc) n++;
    } else {
      /* A status: 408 (the oldest request expired) ends it; 100 (idle
         heartbeat) says nothing; any other (409: the consumer was
         deleted, or refuses the request) ends this pull. */
      const char *v = NULL;
      if (natsMsgHeader_Get(m, "Status", &v) != NATS_OK || !v) v = "";
      if (!strcmp(v, "408") || !strcmp(v, "404")) {
        pull_pop(f);
      } else if (strcmp(v, "100")) {
        const char *d = NULL;
        if (natsMsgHeader_Get(m, "Description", &d) != NATS_OK || !d) d = "";
        say_first(msg, len, "stream %s: the server ended the pull: status '%s' %s", f->stream,
                  v, d);
        rc = TG_EIO;
      }
    }
    natsMsg_Destroy(m);
    /* Keep PULL_AHEAD requests outstanding. */
    while (!rc && f->nreq < PULL_AHEAD) {
      natsStatus ps = pull_request(f);
      if (ps != NATS_OK) {
        say_first(msg, len, "stream %s: cannot send a pull request: %s", f->stream,
                  natsStatus_GetText(ps));
        return from_status_follow(ps);
      }
    }
  }
  return rc ? rc : n;
}

void tg__follow_close(tg__follow *f) {
  if (!f) return;
  pull_stop(f);
  if (f->kv) kvStore_Destroy(f->kv);
  if (f->r.js) jsCtx_Destroy(f->r.js);
  if (f->r.nc) {
    natsConnection_Close(f->r.nc);
    natsConnection_Destroy(f->r.nc);
  }
  free(f);
}

/* ---- the lease ---------------------------------------------------------- */

static int lease_bucket(tg__follow *f, uint32_t ttl_ms, char *msg, size_t len) {
  if (f->kv) return 0;
  natsStatus st = js_KeyValue(&f->kv, f->r.js, f->bucket);
  if ((st == NATS_NOT_FOUND || st == NATS_ERR) && ttl_ms == UINT32_MAX) {
    f->kv = NULL;
    return -ENOENT;
  }
  if (st == NATS_NOT_FOUND || st == NATS_ERR) {
    kvConfig kc;
    kvConfig_Init(&kc);
    kc.Bucket = f->bucket;
    kc.History = 1;
    kc.TTL = (int64_t)ttl_ms * 1000000;
    kc.StorageType = js_FileStorage;
    f->kv = NULL;
    st = js_CreateKeyValue(&f->kv, f->r.js, &kc);
  }
  if (st != NATS_OK) {
    f->kv = NULL;
    say_first(msg, len, "lease bucket %s: %s", f->bucket, natsStatus_GetText(st));
    return from_status_follow(st);
  }
  return 0;
}

/* A number after "key": in the lease's JSON; 0 when absent. */
static uint64_t json_u64(const char *js, size_t n, const char *key) {
  char pat[32], buf[512];
  if (n >= sizeof buf) n = sizeof buf - 1;
  memcpy(buf, js, n);
  buf[n] = 0;
  snprintf(pat, sizeof pat, "\"%s\":", key);
  const char *p = strstr(buf, pat);
  return p ? strtoull(p + strlen(pat), NULL, 10) : 0;
}

int tg__follow_lease_get(tg__follow *f, uint32_t ttl_ms, tg__lease *out, char *msg,
                         size_t len) {
  kvEntry *e = NULL;
  int rc = lease_bucket(f, ttl_ms, msg, len);
  memset(out, 0, sizeof *out);
  if (rc == -ENOENT && ttl_ms == UINT32_MAX) return 0; /* no bucket, no lease */
  if (rc) return rc;
  natsStatus st = kvStore_Get(&e, f->kv, "leader");
  if (st == NATS_NOT_FOUND) return 0;
  if (st != NATS_OK) {
    say_first(msg, len, "lease %s/leader: %s", f->bucket, natsStatus_GetText(st));
    return from_status_follow(st);
  }
  const char *v = kvEntry_Value(e);
  size_t n = (size_t)kvEntry_ValueLen(e);
  out->revision = kvEntry_Revision(e);
  out->epoch = json_u64(v, n, "epoch");
  out->lsn = json_u64(v, n, "lsn");
  out->ttl_ms = json_u64(v, n, "ttl_ms");
  /* The server's clock stamped the put; ours reads it: an age across
     machines is off by their clocks' difference (the caller's liveness
     rule says what that costs). */
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  int64_t created = kvEntry_Created(e);
  int64_t now_ns = (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
  out->age_ms = created > 0 && now_ns > created ? (uint64_t)(now_ns - created) / 1000000u : 0;
  const char *o = v ? memmem(v, n, "\"owner\":\"", 9) : NULL;
  if (o) {
    o += 9;
    size_t i = 0;
    while (o + i < v + n && o[i] != '"' && i + 1 < sizeof out->owner) {
      out->owner[i] = o[i];
      i++;
    }
    out->owner[i] = 0;
  }
  kvEntry_Destroy(e);
  return 0;
}

int tg__follow_lease_put(tg__follow *f, uint32_t ttl_ms, uint64_t revision, uint64_t epoch,
                         const char *owner, uint64_t lsn, uint64_t *new_revision,
                         char *msg, size_t len) {
  char v[256];
  uint64_t rev = 0;
  int rc = lease_bucket(f, ttl_ms, msg, len);
  if (rc) return rc;
  /* ttl_ms in the value: the holder's promise to write again within a
     third of it, which a follower's liveness rule reads (src/store/lease.c). */
  uint32_t vttl = ttl_ms == UINT32_MAX ? 0 : ttl_ms;
  int n = snprintf(v, sizeof v, "{\"epoch\":%" PRIu64 ",\"owner\":\"%s\",\"lsn\":%" PRIu64
                   ",\"ttl_ms\":%" PRIu32 "}", epoch, owner, lsn, vttl);
  if (n < 0 || (size_t)n >= sizeof v) return TG_EINVAL;
  natsStatus st = revision ? kvStore_Update(&rev, f->kv, "leader", v, n, revision)
                           : kvStore_Create(&rev, f->kv, "leader", v, n);
  if (st != NATS_OK) {
    /* Both refuse with the stream's wrong-last-sequence error when the
       key moved on: someone else took the lease first. */
    const char *t = nats_GetLastError(NULL);
    if (t && (strstr(t, "wrong last sequence") || strstr(t, "10071") ||
              strstr(t, "key exists"))) {
      say_first(msg, len, "lease %s/leader changed since it was read (revision %" PRIu64
                "): another process took it first", f->bucket, revision);
      return TG_EEXIST;
    }
    say_first(msg, len, "lease %s/leader: %s", f->bucket, t ? t : natsStatus_GetText(st));
    return from_status_follow(st);
  }
  if (new_revision) *new_revision = rev;
  return 0;
}

int tg__lease_connect(tg__follow **out, const char *url, const char *name, uint32_t wait_ms,
                      char *msg, size_t len) {
  tg__follow *f = NULL;
  *out = NULL;
  if (!tg__repl_name_ok(name)) {
    say_first(msg, len, "replication name '%s' is not 1..%d characters of [A-Za-z0-9_-]",
              name ? name : "", TG__REPL_NAME_MAX);
    return TG_EINVAL;
  }
  if (!(f = calloc(1, sizeof *f))) return TG_ENOMEM;
  snprintf(f->stream, sizeof f->stream, "TG_%s", name);
  snprintf(f->subject, sizeof f->subject, "tg.%s.wal", name);
  snprintf(f->bucket, sizeof f->bucket, "TG_LEASE_%s", name);
  f->r.js_wait_ms = wait_ms;
  /* Reconnecting for as long as the holder runs: a renewal that cannot
     reach the server tries again at its next period. */
  natsStatus st = connect_js(&f->r, url, 1, msg, len);
  if (st != NATS_OK) {
    tg__follow_close(f);
    return from_status_follow(st);
  }
  *out = f;
  return 0;
}

int tg__follow_lease_bucket_ttl(tg__follow *f, uint64_t *ttl_ms, char *msg, size_t len) {
  kvStatus *ks = NULL;
  *ttl_ms = 0;
  int rc = lease_bucket(f, UINT32_MAX, msg, len);
  if (rc == -ENOENT) return 0;
  if (rc) return rc;
  natsStatus st = kvStore_Status(&ks, f->kv);
  if (st != NATS_OK) {
    say_first(msg, len, "lease bucket %s: %s", f->bucket, natsStatus_GetText(st));
    return from_status_follow(st);
  }
  *ttl_ms = (uint64_t)kvStatus_TTL(ks) / 1000000u; /* the stream's MaxAge, in ns */
  kvStatus_Destroy(ks);
  return 0;
}

/* ---- snapshots ------------------------------------------------------------ */

int tg__follow_stream_ensure(tg__follow *f, const char *stream, const char *subject,
                             char *msg, size_t len) {
  jsErrCode jerr = 0;
  natsStatus st = ensure_stream(f->r.js, stream, subject, 1, &jerr);
  if (st != NATS_OK) {
    say_first(msg, len, "cannot create stream %s: %s (%d)", stream, natsStatus_GetText(st),
              (int)jerr);
    return from_status_follow(st);
  }
  return 0;
}

int tg__follow_publish(tg__follow *f, const char *subject, const void *data, size_t len,
                       const tg__repl_hdr *hdrs, int nh, uint64_t *seq, char *msg,
                       size_t mlen) {
  natsMsg *m = NULL;
  jsErrCode jerr = 0;
  natsStatus st = make_msg(&m, subject, data, len, hdrs, nh);
  if (st == NATS_OK) st = publish_sync(f->r.js, m, NULL, seq, &jerr);
  if (st != NATS_OK) {
    say_first(msg, mlen, "publish on %s (%zu bytes): %s (%d)", subject, len,
              natsStatus_GetText(st), (int)jerr);
    return from_status_follow(st);
  }
  return 0;
}

int tg__follow_get(tg__follow *f, const char *stream, const char *subject, uint64_t seq,
                   tg__repl_hdr *hdrs, int nh, void **data, size_t *len, uint64_t *seq_out,
                   char *msg, size_t mlen) {
  natsMsg *m = NULL;
  jsErrCode jerr = 0;
  *data = NULL;
  *len = 0;
  natsStatus st = get_msg(f->r.js, &m, stream, subject, seq, &jerr);
  if (st != NATS_OK) {
    if (st == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr || jerr == JSStreamNotFoundErr)
      return -ENOENT;
    say_first(msg, mlen, "stream %s: cannot read message %" PRIu64 ": %s (%d)", stream, seq,
              natsStatus_GetText(st), (int)jerr);
    return from_status_follow(st);
  }
  for (int i = 0; i < nh; i++) hdrs[i].value = hdr_u64(m, hdrs[i].name);
  size_t n = (size_t)natsMsg_GetDataLength(m);
  void *p = malloc(n ? n : 1);
  if (!p) {
    natsMsg_Destroy(m);
    return TG_ENOMEM;
  }
  memcpy(p, natsMsg_GetData(m), n);
  if (seq_out) *seq_out = natsMsg_GetSequence(m);
  natsMsg_Destroy(m);
  *data = p;
  *len = n;
  return 0;
}

int tg__follow_purge_below(tg__follow *f, const char *stream, uint64_t seq, char *msg,
                           size_t len) {
  jsErrCode jerr = 0;
  natsStatus st = purge_below(f->r.js, stream, seq, &jerr);
  if (st != NATS_OK) {
    say_first(msg, len, "stream %s: cannot purge below %" PRIu64 ": %s (%d)", stream, seq,
              natsStatus_GetText(st), (int)jerr);
    return from_status_follow(st);
  }
  return 0;
}
