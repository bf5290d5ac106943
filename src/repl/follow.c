/*
 * The replica's side of NATS JetStream (follow.h): an ephemeral pull
 * consumer started at a stream sequence, the stream's bounds, and the
 * leader lease in a KV bucket. libnats 3.4.1.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nats/nats.h>

#include "repl/follow.h"
#include "tokengraph/errors.h"

struct tg__follow {
  natsConnection *nc;
  jsCtx *js;
  natsSubscription *sub; /* NULL until tg__follow_start() */
  kvStore *kv;           /* NULL until the lease is first used */
  char stream[160];      /* TG_<name> */
  char subject[160];     /* tg.<name>.wal */
  char bucket[160];      /* TG_LEASE_<name> */
};

static void say(char *msg, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(char *msg, size_t len, const char *fmt, ...) {
  if (!msg || !len || msg[0]) return; /* the first explanation is kept */
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, len, fmt, ap);
  va_end(ap);
}

/* A natsStatus as a tokengraph code. */
static int from_nats(natsStatus s) {
  switch (s) {
  case NATS_OK: return 0;
  case NATS_NO_MEMORY: return TG_ENOMEM;
  case NATS_NO_SERVER:
  case NATS_CONNECTION_CLOSED:
  case NATS_CONNECTION_DISCONNECTED: return -ECONNREFUSED;
  case NATS_TIMEOUT: return -ETIMEDOUT;
  case NATS_NOT_FOUND: return -ENOENT;
  case NATS_INVALID_ARG: return TG_EINVAL;
  default: return TG_EIO;
  }
}

int tg__follow_open(tg__follow **out, const char *url, const char *name, char *msg,
                    size_t len) {
  tg__follow *f = NULL;
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  natsStatus st;
  int rc = 0;
  *out = NULL;
  if (!url || !name || !*name || strchr(name, '.') || strchr(name, ' ') ||
      strchr(name, '*') || strchr(name, '>')) {
    say(msg, len, "replication name '%s' is empty or holds one of '. *>'", name ? name : "");
    return TG_EINVAL;
  }
  if (!(f = calloc(1, sizeof *f))) return TG_ENOMEM;
  if ((size_t)snprintf(f->stream, sizeof f->stream, "TG_%s", name) >= sizeof f->stream ||
      (size_t)snprintf(f->subject, sizeof f->subject, "tg.%s.wal", name) >= sizeof f->subject ||
      (size_t)snprintf(f->bucket, sizeof f->bucket, "TG_LEASE_%s", name) >= sizeof f->bucket) {
    say(msg, len, "replication name '%s' is too long", name);
    rc = TG_EINVAL;
    goto fail;
  }
  if ((st = natsConnection_ConnectTo(&f->nc, url)) != NATS_OK) {
    rc = from_nats(st);
    say(msg, len, "cannot connect to NATS at %s: %s", url, natsStatus_GetText(st));
    goto fail;
  }
  if ((st = natsConnection_JetStream(&f->js, f->nc, NULL)) != NATS_OK) {
    rc = from_nats(st);
    say(msg, len, "%s: no JetStream context: %s", url, natsStatus_GetText(st));
    goto fail;
  }
  st = js_GetStreamInfo(&si, f->js, f->stream, NULL, &jerr);
  if (st != NATS_OK) {
    rc = st == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr ? -ENOENT : from_nats(st);
    say(msg, len, "%s: stream %s: %s (no primary has shipped to it yet?)", url, f->stream,
        natsStatus_GetText(st));
    goto fail;
  }
  jsStreamInfo_Destroy(si);
  *out = f;
  return 0;
fail:
  tg__follow_close(f);
  return rc;
}

int tg__follow_bounds(tg__follow *f, uint64_t *first, uint64_t *last, char *msg,
                      size_t len) {
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  natsStatus st = js_GetStreamInfo(&si, f->js, f->stream, NULL, &jerr);
  if (st != NATS_OK) {
    say(msg, len, "stream %s: cannot read its state: %s", f->stream, natsStatus_GetText(st));
    return st == NATS_NOT_FOUND ? -ENOENT : from_nats(st);
  }
  *first = si->State.FirstSeq;
  *last = si->State.LastSeq;
  jsStreamInfo_Destroy(si);
  return 0;
}

int tg__follow_start(tg__follow *f, uint64_t seq, char *msg, size_t len) {
  jsSubOptions so;
  jsErrCode jerr = 0;
  if (f->sub) {
    natsSubscription_Unsubscribe(f->sub);
    natsSubscription_Destroy(f->sub);
    f->sub = NULL;
  }
  jsSubOptions_Init(&so);
  so.Stream = f->stream;
  so.Config.DeliverPolicy = js_DeliverByStartSequence;
  so.Config.OptStartSeq = seq ? seq : 1;
  /* No acks: the replica's position is its own (persisted with its
     checkpoints), not the consumer's; an ephemeral consumer the server
     drops once the replica has gone. */
  so.Config.AckPolicy = js_AckNone;
  so.Config.InactiveThreshold = 60LL * 1000 * 1000 * 1000;
  natsStatus st = js_PullSubscribe(&f->sub, f->js, f->subject, NULL, NULL, &so, &jerr);
  if (st != NATS_OK) {
    say(msg, len, "stream %s: cannot start a consumer at sequence %" PRIu64 ": %s (%d)",
        f->stream, seq, natsStatus_GetText(st), (int)jerr);
    f->sub = NULL;
    return from_nats(st);
  }
  return 0;
}

/* A decimal header, 0 when missing or not a number. */
static uint64_t header_u64(natsMsg *m, const char *key) {
  const char *v = NULL;
  if (natsMsgHeader_Get(m, key, &v) != NATS_OK || !v || !*v) return 0;
  char *end = NULL;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 10);
  if (errno || *end || *v == '-') return 0;
  return (uint64_t)x;
}

int tg__follow_fetch(tg__follow *f, int batch, int timeout_ms, tg__follow_cb cb, void *ctx,
                     char *msg, size_t len) {
  natsMsgList list = {0};
  jsErrCode jerr = 0;
  int rc = 0, n = 0;
  if (!f->sub) return TG_EINVAL;
  natsStatus st = natsSubscription_Fetch(&list, f->sub, batch, timeout_ms, &jerr);
  if (st == NATS_TIMEOUT) return 0;
  if (st != NATS_OK) {
    say(msg, len, "stream %s: fetch failed: %s (%d)", f->stream, natsStatus_GetText(st),
        (int)jerr);
    return from_nats(st);
  }
  for (int i = 0; i < list.Count && !rc; i++) {
    natsMsg *m = list.Msgs[i];
    jsMsgMetaData *md = NULL;
    if (natsMsg_GetMetaData(&md, m) != NATS_OK) {
      say(msg, len, "stream %s: a delivered message has no JetStream metadata", f->stream);
      rc = TG_EIO;
      break;
    }
    tg__follow_msg fm = {
        .seq = md->Sequence.Stream,
        .first_lsn = header_u64(m, "Tg-First-Lsn"),
        .last_lsn = header_u64(m, "Tg-Last-Lsn"),
        .epoch = header_u64(m, "Tg-Epoch"),
        .body = natsMsg_GetData(m),
        .len = (size_t)natsMsg_GetDataLength(m),
    };
    jsMsgMetaData_Destroy(md);
    rc = cb(ctx, &fm);
    if (!rc) n++;
  }
  natsMsgList_Destroy(&list);
  return rc ? rc : n;
}

void tg__follow_close(tg__follow *f) {
  if (!f) return;
  if (f->sub) {
    natsSubscription_Unsubscribe(f->sub);
    natsSubscription_Destroy(f->sub);
  }
  if (f->kv) kvStore_Destroy(f->kv);
  if (f->js) jsCtx_Destroy(f->js);
  if (f->nc) {
    natsConnection_Close(f->nc);
    natsConnection_Destroy(f->nc);
  }
  free(f);
}

/* ---- the lease ---------------------------------------------------------- */

static int lease_bucket(tg__follow *f, uint32_t ttl_ms, char *msg, size_t len) {
  if (f->kv) return 0;
  natsStatus st = js_KeyValue(&f->kv, f->js, f->bucket);
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
    st = js_CreateKeyValue(&f->kv, f->js, &kc);
  }
  if (st != NATS_OK) {
    f->kv = NULL;
    say(msg, len, "lease bucket %s: %s", f->bucket, natsStatus_GetText(st));
    return from_nats(st);
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
    say(msg, len, "lease %s/leader: %s", f->bucket, natsStatus_GetText(st));
    return from_nats(st);
  }
  const char *v = kvEntry_Value(e);
  size_t n = (size_t)kvEntry_ValueLen(e);
  out->revision = kvEntry_Revision(e);
  out->epoch = json_u64(v, n, "epoch");
  out->lsn = json_u64(v, n, "lsn");
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
  int n = snprintf(v, sizeof v, "{\"epoch\":%" PRIu64 ",\"owner\":\"%s\",\"lsn\":%" PRIu64 "}",
                   epoch, owner, lsn);
  if (n < 0 || (size_t)n >= sizeof v) return TG_EINVAL;
  natsStatus st = revision ? kvStore_Update(&rev, f->kv, "leader", v, n, revision)
                           : kvStore_Create(&rev, f->kv, "leader", v, n);
  if (st != NATS_OK) {
    /* Both refuse with the stream's wrong-last-sequence error when the
       key moved on: someone else took the lease first. */
    const char *t = nats_GetLastError(NULL);
    if (t && (strstr(t, "wrong last sequence") || strstr(t, "10071") ||
              strstr(t, "key exists"))) {
      say(msg, len, "lease %s/leader changed since it was read (revision %" PRIu64
          "): another process took it first", f->bucket, revision);
      return TG_EEXIST;
    }
    say(msg, len, "lease %s/leader: %s", f->bucket, t ? t : natsStatus_GetText(st));
    return from_nats(st);
  }
  if (new_revision) *new_revision = rev;
  return 0;
}

/* ---- snapshots ------------------------------------------------------------ */

int tg__follow_stream_ensure(tg__follow *f, const char *stream, const char *subject,
                             char *msg, size_t len) {
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  natsStatus st = js_GetStreamInfo(&si, f->js, stream, NULL, &jerr);
  if (st == NATS_OK) {
    jsStreamInfo_Destroy(si);
    return 0;
  }
  jsStreamConfig sc;
  jsStreamConfig_Init(&sc);
  const char *subj[1] = {subject};
  sc.Name = stream;
  sc.Subjects = subj;
  sc.SubjectsLen = 1;
  sc.Storage = js_FileStorage;
  st = js_AddStream(&si, f->js, &sc, NULL, &jerr);
  if (st != NATS_OK) {
    say(msg, len, "cannot create stream %s: %s (%d)", stream, natsStatus_GetText(st),
        (int)jerr);
    return from_nats(st);
  }
  jsStreamInfo_Destroy(si);
  return 0;
}

int tg__follow_publish(tg__follow *f, const char *subject, const void *data, size_t len,
                       const tg__follow_hdr *hdrs, int nh, uint64_t *seq, char *msg,
                       size_t mlen) {
  natsMsg *m = NULL;
  jsPubAck *pa = NULL;
  jsErrCode jerr = 0;
  char v[32];
  natsStatus st = natsMsg_Create(&m, subject, NULL, data, (int)len);
  for (int i = 0; st == NATS_OK && i < nh; i++) {
    snprintf(v, sizeof v, "%" PRIu64, hdrs[i].value);
    st = natsMsgHeader_Set(m, hdrs[i].name, v);
  }
  if (st == NATS_OK) st = js_PublishMsg(&pa, f->js, m, NULL, &jerr);
  if (st != NATS_OK) {
    say(msg, mlen, "publish on %s (%zu bytes): %s (%d)", subject, len, natsStatus_GetText(st),
        (int)jerr);
    natsMsg_Destroy(m);
    return from_nats(st);
  }
  if (seq) *seq = pa->Sequence;
  jsPubAck_Destroy(pa);
  natsMsg_Destroy(m);
  return 0;
}

int tg__follow_get(tg__follow *f, const char *stream, const char *subject, uint64_t seq,
                   tg__follow_hdr *hdrs, int nh, void **data, size_t *len, uint64_t *seq_out,
                   char *msg, size_t mlen) {
  natsMsg *m = NULL;
  jsErrCode jerr = 0;
  *data = NULL;
  *len = 0;
  natsStatus st = seq ? js_GetMsg(&m, f->js, stream, seq, NULL, &jerr)
                      : js_GetLastMsg(&m, f->js, stream, subject, NULL, &jerr);
  if (st != NATS_OK) {
    if (st == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr || jerr == JSStreamNotFoundErr)
      return -ENOENT;
    say(msg, mlen, "stream %s: cannot read message %" PRIu64 ": %s (%d)", stream, seq,
        natsStatus_GetText(st), (int)jerr);
    return from_nats(st);
  }
  for (int i = 0; i < nh; i++) hdrs[i].value = header_u64(m, hdrs[i].name);
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
  jsOptions o;
  jsErrCode jerr = 0;
  jsStreamInfo *si = NULL;
  /* Nothing below seq: no request at all (nats-server 2.9.10 purged a
     whole stream for a sequence at or below its first, seen here with
     sequence 1). */
  natsStatus st = js_GetStreamInfo(&si, f->js, stream, NULL, &jerr);
  if (st == NATS_OK) {
    uint64_t first = si->State.FirstSeq;
    jsStreamInfo_Destroy(si);
    if (seq <= first) return 0;
  }
  jsOptions_Init(&o);
  o.Stream.Purge.Sequence = seq;
  st = js_PurgeStream(f->js, stream, &o, &jerr);
  if (st != NATS_OK) {
    say(msg, len, "stream %s: cannot purge below %" PRIu64 ": %s (%d)", stream, seq,
        natsStatus_GetText(st), (int)jerr);
    return from_nats(st);
  }
  return 0;
}
