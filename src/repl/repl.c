/*
 * repl: the libnats wrapper (repl.h). Every libnats object is created and
 * destroyed here; the rest of the library sees only tg__repl handles.
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
#include <stdatomic.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokengraph/errors.h"

struct tg__repl {
  natsConnection *nc;
  jsCtx *js;
  tg__repl_acks acks; /* copied at connect; read-only after */
  size_t max_body;
  _Atomic int cancelled;  /* tg__repl_cancel: a waiting publish gives up */
};

struct tg__repl_sub {
  natsSubscription *sub;
};

struct tg__repl_kv {
  kvStore *kv;
};

/* "<what>: <libnats's reason>" into msg. */
static void say(char *msg, size_t len, const char *what, const char *a, natsStatus s) {
  if (!msg || !len) return;
  snprintf(msg, len, "%s %s: %s", what, a, natsStatus_GetText(s));
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

static uint64_t hdr_u64(natsMsg *m, const char *key) {
  const char *v = NULL;
  if (natsMsgHeader_Get(m, key, &v) != NATS_OK || !v) return 0;
  return strtoull(v, NULL, 10);
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

int tg__repl_connect(tg__repl **out, const char *url, const tg__repl_acks *acks, char *msg,
                     size_t msglen) {
  *out = NULL;
  natsOptions *o = NULL;
  tg__repl *r = calloc(1, sizeof *r);
  int rc = TG_ENOMEM;
  if (!r) goto fail;
  if (acks) r->acks = *acks;
  natsStatus s = natsOptions_Create(&o);
  /* A cluster is given as "url1,url2,...": each becomes a server to try. */
  char list[1024];
  const char *servers[16];
  int nserv = 0;
  snprintf(list, sizeof list, "%s", url);
  char *save = NULL;
  for (char *u = strtok_r(list, ", ", &save); u && nserv < 16; u = strtok_r(NULL, ", ", &save))
    servers[nserv++] = u;
  if (s == NATS_OK && nserv == 0) s = NATS_INVALID_ARG;
  if (s == NATS_OK) s = natsOptions_SetServers(o, servers, nserv);
  /* Keep reconnecting for as long as the store is open: an outage is
     bounded by the store's ack timeout, not by the client giving up. */
  /* A message is a whole batch of the log: send it at once. Buffered,
     libnats's flusher sends it up to 1 ms later, which was all but 66 us
     of a TG_REPLICATED call's 1,000 us median (tg-bench replicate, one
     thread, measured here). */
  if (s == NATS_OK) s = natsOptions_SetSendAsap(o, true);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(o, 100);
  if (s == NATS_OK) s = natsConnection_Connect(&r->nc, o);
  if (s != NATS_OK) {
    say(msg, msglen, "cannot connect to", url, s);
    rc = from_status(s);
    goto fail;
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  if (acks) {
    jo.PublishAsync.AckHandler = ack_handler;
    jo.PublishAsync.AckHandlerClosure = r;
    jo.PublishAsync.MaxPending = acks->max_pending > 0 ? acks->max_pending : 256;
  }
  s = natsConnection_JetStream(&r->js, r->nc, &jo);
  if (s != NATS_OK) {
    say(msg, msglen, "no JetStream context at", url, s);
    rc = from_status(s);
    goto fail;
  }
  int64_t mp = natsConnection_GetMaxPayload(r->nc);
  r->max_body = TG__REPL_MAX_MSG;
  if (mp > 0 && (uint64_t)mp - TG__REPL_HDR_ROOM < r->max_body)
    r->max_body = (size_t)mp - TG__REPL_HDR_ROOM;
  natsOptions_Destroy(o);
  *out = r;
  return 0;
fail:
  natsOptions_Destroy(o);
  tg__repl_close(r);
  return rc;
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

int tg__repl_stream_ensure(tg__repl *r, const char *stream, const char *subject, int replicas,
                           char *msg, size_t msglen) {
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  natsStatus s = js_GetStreamInfo(&si, r->js, stream, NULL, &jerr);
  if (s == NATS_OK) {
    jsStreamInfo_Destroy(si);
    return 0;
  }
  if (s != NATS_NOT_FOUND) {
    say(msg, msglen, "stream", stream, s);
    return from_status(s);
  }
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
  s = js_AddStream(&si, r->js, &c, NULL, &jerr);
  jsStreamInfo_Destroy(si);
  if (s != NATS_OK) {
    /* Another process created it meanwhile: use it. */
    if (js_GetStreamInfo(&si, r->js, stream, NULL, NULL) == NATS_OK) {
      jsStreamInfo_Destroy(si);
      return 0;
    }
    if (msg && msglen)
      snprintf(msg, msglen, "cannot create stream %s (R%d): %s (JetStream error %d)", stream,
               replicas, natsStatus_GetText(s), (int)jerr);
    return from_status(s);
  }
  return 0;
}

int tg__repl_stream_state_get(tg__repl *r, const char *stream, tg__repl_stream_state *st) {
  jsStreamInfo *si = NULL;
  natsStatus s = js_GetStreamInfo(&si, r->js, stream, NULL, NULL);
  if (s != NATS_OK) return from_status(s);
  st->first_seq = si->State.FirstSeq;
  st->last_seq = si->State.LastSeq;
  st->msgs = si->State.Msgs;
  st->bytes = si->State.Bytes;
  st->replicas = si->Config ? si->Config->Replicas : 0;
  jsStreamInfo_Destroy(si);
  return 0;
}

static int pass_msg(natsMsg *m, uint64_t seq, tg__repl_msg_cb cb, void *arg) {
  tg__repl_msg rm;
  const char *id = NULL;
  rm.data = natsMsg_GetData(m);
  rm.len = (size_t)natsMsg_GetDataLength(m);
  rm.seq = seq;
  rm.first_lsn = hdr_u64(m, "Tg-First-Lsn");
  rm.last_lsn = hdr_u64(m, "Tg-Last-Lsn");
  rm.epoch = hdr_u64(m, "Tg-Epoch");
  rm.id = natsMsgHeader_Get(m, "Nats-Msg-Id", &id) == NATS_OK && id ? id : "";
  return cb(arg, &rm);
}

int tg__repl_get_msg(tg__repl *r, const char *stream, uint64_t seq, tg__repl_msg_cb cb,
                     void *arg) {
  natsMsg *m = NULL;
  natsStatus s;
  if (seq) {
    s = js_GetMsg(&m, r->js, stream, seq, NULL, NULL);
  } else {
    /* The last message of any subject: ">" matches them all. */
    s = js_GetLastMsg(&m, r->js, stream, ">", NULL, NULL);
  }
  if (s != NATS_OK) return from_status(s);
  uint64_t mseq = seq ? seq : natsMsg_GetSequence(m);
  int rc = pass_msg(m, mseq, cb, arg);
  natsMsg_Destroy(m);
  return rc;
}

static natsStatus make_msg(natsMsg **out, const char *subject, const void *data, size_t len,
                           uint64_t first_lsn, uint64_t last_lsn, uint64_t epoch,
                           char *id, size_t idlen) {
  char v[24];
  natsMsg *m = NULL;
  natsStatus s = natsMsg_Create(&m, subject, NULL, data, (int)len);
  snprintf(v, sizeof v, "%" PRIu64, first_lsn);
  if (s == NATS_OK) s = natsMsgHeader_Set(m, "Tg-First-Lsn", v);
  snprintf(v, sizeof v, "%" PRIu64, last_lsn);
  if (s == NATS_OK) s = natsMsgHeader_Set(m, "Tg-Last-Lsn", v);
  snprintf(v, sizeof v, "%" PRIu64, epoch);
  if (s == NATS_OK) s = natsMsgHeader_Set(m, "Tg-Epoch", v);
  snprintf(id, idlen, "%" PRIu64 ":%" PRIu64, epoch, first_lsn);
  if (s != NATS_OK) {
    natsMsg_Destroy(m);
    m = NULL;
  }
  *out = m;
  return s;
}

int tg__repl_publish_async(tg__repl *r, const char *subject, const void *data, size_t len,
                           uint64_t first_lsn, uint64_t last_lsn, uint64_t epoch,
                           uint64_t expect_last_seq) {
  if (len > r->max_body) return TG_EINVAL;
  char id[48];
  natsMsg *m = NULL;
  natsStatus s = make_msg(&m, subject, data, len, first_lsn, last_lsn, epoch, id, sizeof id);
  if (s != NATS_OK) return from_status(s);
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MsgId = id;
  po.ExpectLastSeq = expect_last_seq;
  /* A full window (MaxPending in flight) makes the call wait StallWait
     (200 ms) and fail with a timeout; wait again: this is the writer's
     backpressure, bounded by the store's ack timeout. A closed
     connection ends it. */
  for (;;) {
    s = js_PublishMsgAsync(r->js, &m, &po);
    if (s != NATS_TIMEOUT) break;
    /* Relaxed: a flag polled every StallWait; nothing else hangs on it. */
    if (natsConnection_IsClosed(r->nc) || atomic_load_explicit(&r->cancelled, memory_order_relaxed))
      break;
  }
  natsMsg_Destroy(m); /* NULL once the library owns it */
  return from_status(s);
}

int tg__repl_publish_sync(tg__repl *r, const char *subject, const void *data, size_t len,
                          uint64_t first_lsn, uint64_t last_lsn, uint64_t epoch,
                          uint64_t expect_last_seq, uint64_t *seq) {
  if (len > r->max_body) return TG_EINVAL;
  char id[48];
  natsMsg *m = NULL;
  natsStatus s = make_msg(&m, subject, data, len, first_lsn, last_lsn, epoch, id, sizeof id);
  if (s != NATS_OK) return from_status(s);
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MsgId = id;
  po.ExpectLastSeq = expect_last_seq;
  jsPubAck *pa = NULL;
  jsErrCode jerr = 0;
  s = js_PublishMsg(&pa, r->js, m, &po, &jerr);
  natsMsg_Destroy(m);
  if (s == NATS_OK) {
    if (seq) *seq = pa->Sequence;
    jsPubAck_Destroy(pa);
    return 0;
  }
  if ((int)jerr == TG__REPL_JS_WRONG_LAST_SEQ) return TG_EFENCED;
  return from_status(s);
}

int tg__repl_purge_below(tg__repl *r, const char *stream, uint64_t seq) {
  jsOptions o;
  jsOptions_Init(&o);
  o.Stream.Purge.Sequence = seq;
  return from_status(js_PurgeStream(r->js, stream, &o, NULL));
}

int tg__repl_pull_open(tg__repl_sub **out, tg__repl *r, const char *stream, const char *subject,
                       uint64_t start_seq) {
  *out = NULL;
  tg__repl_sub *s = calloc(1, sizeof *s);
  if (!s) return TG_ENOMEM;
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream;
  so.Config.DeliverPolicy = start_seq ? js_DeliverByStartSequence : js_DeliverAll;
  so.Config.OptStartSeq = start_seq;
  so.Config.AckPolicy = js_AckNone;
  natsStatus st = js_PullSubscribe(&s->sub, r->js, subject, NULL, NULL, &so, NULL);
  if (st != NATS_OK) {
    free(s);
    return from_status(st);
  }
  *out = s;
  return 0;
}

int tg__repl_fetch(tg__repl_sub *s, int batch, uint32_t timeout_ms, tg__repl_msg_cb cb,
                   void *arg) {
  natsMsgList list = {0};
  natsStatus st = natsSubscription_Fetch(&list, s->sub, batch, (int64_t)timeout_ms, NULL);
  if (st == NATS_TIMEOUT) return 0;
  if (st != NATS_OK) return from_status(st);
  int n = 0, rc = 0;
  for (int i = 0; i < list.Count && !rc; i++) {
    jsMsgMetaData *md = NULL;
    uint64_t seq = 0;
    if (natsMsg_GetMetaData(&md, list.Msgs[i]) == NATS_OK) {
      seq = md->Sequence.Stream;
      jsMsgMetaData_Destroy(md);
    }
    rc = pass_msg(list.Msgs[i], seq, cb, arg);
    if (!rc) n++;
  }
  natsMsgList_Destroy(&list);
  return rc ? rc : n;
}

void tg__repl_pull_close(tg__repl_sub *s) {
  if (!s) return;
  natsSubscription_Unsubscribe(s->sub);
  natsSubscription_Destroy(s->sub);
  free(s);
}

int tg__repl_kv_open(tg__repl_kv **out, tg__repl *r, const char *bucket, int replicas,
                     uint32_t ttl_ms) {
  *out = NULL;
  tg__repl_kv *k = calloc(1, sizeof *k);
  if (!k) return TG_ENOMEM;
  natsStatus s = js_KeyValue(&k->kv, r->js, bucket);
  if (s == NATS_NOT_FOUND) {
    kvConfig c;
    kvConfig_Init(&c);
    c.Bucket = bucket;
    c.History = 1;
    c.TTL = (int64_t)ttl_ms; /* libnats takes milliseconds */
    c.Replicas = replicas;
    s = js_CreateKeyValue(&k->kv, r->js, &c);
    if (s != NATS_OK) s = js_KeyValue(&k->kv, r->js, bucket); /* raced */
  }
  if (s != NATS_OK) {
    free(k);
    return from_status(s);
  }
  *out = k;
  return 0;
}

int tg__repl_kv_get(tg__repl_kv *kv, const char *key, void *buf, size_t cap, size_t *len,
                    uint64_t *rev) {
  kvEntry *e = NULL;
  natsStatus s = kvStore_Get(&e, kv->kv, key);
  if (s != NATS_OK) return from_status(s);
  size_t n = (size_t)kvEntry_ValueLen(e);
  if (buf && cap) memcpy(buf, kvEntry_Value(e), n < cap ? n : cap);
  if (len) *len = n;
  if (rev) *rev = kvEntry_Revision(e);
  kvEntry_Destroy(e);
  return 0;
}

int tg__repl_kv_create(tg__repl_kv *kv, const char *key, const void *data, size_t len,
                       uint64_t *rev) {
  natsStatus s = kvStore_Create(rev, kv->kv, key, data, (int)len);
  if (s == NATS_OK) return 0;
  /* The client gives no JetStream code here: a key that is there now is
     the refusal's reason. */
  return tg__repl_kv_get(kv, key, NULL, 0, NULL, NULL) == 0 ? TG_EEXIST : from_status(s);
}

int tg__repl_kv_update(tg__repl_kv *kv, const char *key, const void *data, size_t len,
                       uint64_t last_rev, uint64_t *rev) {
  natsStatus s = kvStore_Update(rev, kv->kv, key, data, (int)len, last_rev);
  if (s == NATS_OK) return 0;
  uint64_t cur = 0;
  if (tg__repl_kv_get(kv, key, NULL, 0, NULL, &cur) == 0 && cur != last_rev) return TG_EEXIST;
  return from_status(s);
}

void tg__repl_kv_close(tg__repl_kv *kv) {
  if (!kv) return;
  kvStore_Destroy(kv->kv);
  free(kv);
}
