/*
 * Reading a data directory without changing it (tg_store_inspect()), and
 * the one decoding of the store's WAL records (tg_record_decode()), which
 * replay, inspection and tg-replay's dump share.
 *
 * Inspection reaches the verdict tg_store_open() would reach, by reading
 * the log the way the open does: from the checkpoint's LSN + 1, so that a
 * gap or a bad frame among the records the checkpoint already covers does
 * not condemn a directory the store opens without complaint (a copy taken
 * while a checkpoint deleted segments is such a directory). The covered
 * records are read as well, in a second pass, only to count them and to
 * report damage among them apart (covered_end).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/path.h"
#include "store/store_internal.h"

/* Records are the structs' bytes, little-endian on disk (docs/store-format.md). */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the record layout is little-endian; decode field by field on this host"
#endif
_Static_assert(sizeof(tg_token) == 64, "a token record is 64 bytes");
_Static_assert(sizeof(tg_connection) == 64, "a connection record is 64 bytes");

/* On the replay path, once per record: only the member the type uses is
   written (zeroing all 136 bytes cost about 5% of a pure replay's
   instructions, measured with callgrind on tg-bench replay). */
int tg_record_decode(const tg_wal_record *rec, tg_record *out) {
  out->type = rec->type;
  out->id = 0;
  switch (rec->type) {
  case TG_REC_TOKEN_PUT:
    if (rec->len != sizeof out->token) return TG_ECORRUPT;
    memcpy(&out->token, rec->payload, sizeof out->token);
    out->id = out->token.id;
    return out->id ? 0 : TG_ECORRUPT;
  case TG_REC_CONN_PUT:
    if (rec->len != sizeof out->connection) return TG_ECORRUPT;
    memcpy(&out->connection, rec->payload, sizeof out->connection);
    out->id = out->connection.id;
    return out->id ? 0 : TG_ECORRUPT;
  case TG_REC_CONN_UPDATE:
    if (rec->len != sizeof out->connection) return TG_ECORRUPT;
    memcpy(&out->connection, rec->payload, sizeof out->connection);
    out->id = out->connection.id;
    return out->id ? 0 : TG_ECORRUPT;
  case TG_REC_TOKEN_DEL:
  case TG_REC_CONN_DEL:
  case TG_REC_TOKEN_EVICT:
    if (rec->len != sizeof out->id) return TG_ECORRUPT;
    memcpy(&out->id, rec->payload, sizeof out->id);
    return 0;
  case TG_REC_BATCH: {
    /* The whole payload is checked here, so that a caller that decodes
       the record before it applies any entry never applies part of a
       malformed batch. */
    size_t pos = 0;
    uint32_t n = 0;
    tg_record e;
    int rc;
    uint32_t count;
    while ((rc = tg_record_batch_next(rec, &pos, &e)) == 1) n++;
    if (rc) return rc;
    memcpy(&count, rec->payload, 4);
    if (n != count) return TG_ECORRUPT;
    out->type = TG_REC_BATCH;
    out->id = n;
    return 0;
  }
  default:
    return TG_EINVAL;
  }
}

/* A batch payload: u32 count (>= 1), u32 zero, then count entries of a u32
   type and that type's payload (docs/store-format.md). *pos is 0 before
   the first entry, then the offset of the next one. */
int tg_record_batch_next(const tg_wal_record *rec, size_t *pos, tg_record *out) {
  const unsigned char *p = rec->payload;
  uint32_t count, zero, type;
  if (rec->type != TG_REC_BATCH) return TG_EINVAL;
  if (rec->len < 8) return TG_ECORRUPT;
  memcpy(&count, p, 4);
  memcpy(&zero, p + 4, 4);
  if (count == 0 || zero != 0) return TG_ECORRUPT;
  if (*pos == 0) *pos = 8;
  if (*pos == rec->len) return 0; /* tg_record_decode() checks the count */
  if (*pos > rec->len || rec->len - *pos < 4) return TG_ECORRUPT;
  memcpy(&type, p + *pos, 4);
  size_t body;
  switch (type) {
  case TG_REC_TOKEN_PUT:
  case TG_REC_CONN_PUT:
  case TG_REC_CONN_UPDATE:
    body = 64;
    break;
  case TG_REC_TOKEN_DEL:
  case TG_REC_CONN_DEL:
    body = 4;
    break;
  default: /* nothing else goes in a batch, nor a batch in a batch */
    return TG_ECORRUPT;
  }
  if (rec->len - *pos - 4 < body) return TG_ECORRUPT;
  tg_wal_record sub = *rec;
  sub.type = (uint8_t)type;
  sub.len = (uint32_t)body;
  sub.payload = p + *pos + 4;
  int rc = tg_record_decode(&sub, out);
  if (rc) return TG_ECORRUPT;
  *pos += 4 + body;
  return 1;
}

int tg__store_open_checked_dir(const char *dir, char *msg, size_t len) {
  struct stat st;
  if (stat(dir, &st)) {
    int rc = -errno;
    tg__say(msg, len, "%s: %s", dir, strerror(errno));
    return rc;
  }
  if (!S_ISDIR(st.st_mode)) {
    tg__say(msg, len, "%s is not a directory", dir);
    return -ENOTDIR;
  }
  int fd = tg__store_open_dirfd(dir, msg, len);
  if (fd < 0) return fd;
  int rc = tg__store_check_identity(fd, dir, msg, len);
  if (rc == 1) {
    tg__say(msg, len, "%s is empty: not a tokengraph data directory", dir);
    rc = TG_ENOTTG;
  }
  if (rc) {
    close(fd);
    return rc;
  }
  return fd;
}

/* What tg_store_open() concludes after a replay that ended CLEAN or TORN:
   the log must continue right after the checkpoint's LSN or after the last
   record replayed, or appends would reuse LSNs the checkpoint covers
   (durable.c makes the same two checks on tg_wal_open()'s answer). */
static void check_continuation(tg_wal_end *e, uint64_t from, uint64_t nseg) {
  if (e->reason != TG_WAL_END_CLEAN && e->reason != TG_WAL_END_TORN) return;
  uint64_t next = e->last_lsn ? e->last_lsn + 1 : nseg ? e->segment : from;
  uint64_t replayed_to = e->last_lsn >= from ? e->last_lsn : from - 1;
  if (replayed_to + 1 == next) return;
  e->reason = TG_WAL_END_CORRUPT;
  e->err = TG_ECORRUPT;
  e->expected_lsn = from;
  e->found_lsn = next;
  e->what = "the log ends before the checkpoint's LSN: files are missing or were replaced";
}

int tg__store_inspect_dir(int dirfd, const char *dir, tg_inspect_report *out,
                          tg_progress_cb progress, void *arg, char *msg, size_t len) {
  tg_store *s = NULL;
  tg_wal_reader *r = NULL;
  char *waldir = NULL;
  char walpath[4096];
  tg_wal_record rec;
  int rc, wfd = -1;
  memset(out, 0, sizeof *out);
  if ((s = aligned_alloc(_Alignof(tg_store), sizeof *s))) memset(s, 0, sizeof *s);
  if (!s || !(s->dir = strdup(dir)) ||
      !(waldir = tg__path_join_alloc(dir, "wal"))) {
    rc = TG_ENOMEM;
    goto out;
  }
  s->lock_fd = s->wal_fd = -1;
  s->dir_fd = dirfd; /* the caller's */
  if ((rc = tg__graph_init(&s->g))) goto out;
  if ((rc = tg__store_open_checkpoint(s, 1, msg, len))) goto out;
  tg__graph_begin_load(&s->g);
  if (s->env && (rc = tg__store_load_checkpoint(s, msg, len))) goto out;
  out->checkpoint_lsn = s->ckpt_lsn;
  out->repl_stream_seq = s->ckpt_repl_seq;
  out->repl_epoch = s->ckpt_repl_epoch;
  out->checkpoint_tokens = s->recovery.checkpoint_tokens;
  out->checkpoint_connections = s->recovery.checkpoint_connections;

  /* Pass 1, the verdict: what the open replays. */
  uint64_t from = s->ckpt_lsn + 1, seen = 0;
  /* wal/ is read as the open reads it: a real directory, reached through
     its descriptor; no wal/ at all is an empty log. */
  if ((wfd = tg__dir_open_subdir(dirfd, dir, "wal", 0, msg, len)) == -ENOENT) {
    rc = 0;
    out->end.reason = TG_WAL_END_CLEAN;
    goto done;
  }
  if (wfd < 0) {
    rc = wfd;
    goto out;
  }
  /* The ring is drained by the open, not read here: it is only held to
     what the open accepts. */
  if ((rc = tg__dir_check_regular(wfd, waldir, TG__WAL_RING_NAME, msg, len))) goto out;
  if ((rc = tg__store_wal_path(walpath, sizeof walpath, wfd, dir, "wal"))) goto out;
  if ((rc = tg_wal_reader_open(&r, walpath, from))) {
    tg__say(msg, len, "%s: cannot read the log: %s", waldir, tg_strerror(rc));
    goto out;
  }
  out->segments = tg_wal_reader_segments(r);
  while (tg_wal_reader_next(r, &rec) == 1) {
    if (progress && (++seen & 0xFFFFF) == 0) progress(arg, seen, rec.lsn);
    if (out->apply_failed_lsn) continue;
    const char *why = NULL;
    int arc = tg__store_apply(&s->g, &rec, &why);
    if (arc) {
      out->apply_failed_lsn = rec.lsn;
      out->apply_failed_what = why ? why : tg_strerror(arc);
      out->apply_failed_segment = rec.segment;
      out->apply_failed_offset = rec.offset;
    } else {
      out->replayed++;
    }
  }
  out->end = *tg_wal_reader_end(r);
  tg_wal_reader_close(r);
  r = NULL;
  check_continuation(&out->end, from, out->segments);
  const tg_wal_end *e = &out->end;
  if (e->first_lsn) out->records = e->last_lsn - e->first_lsn + 1;
  out->first_lsn = e->first_lsn;
  out->last_lsn = e->last_lsn;

  /* Pass 2, the counts: the older segments, up to where pass 1 began; or,
     when pass 1 could read nothing, whatever valid records there are. */
  uint64_t bound = e->first_lsn ? e->first_lsn : UINT64_MAX;
  if ((rc = tg_wal_reader_open(&r, walpath, 0))) {
    tg__say(msg, len, "%s: cannot read the log: %s", waldir, tg_strerror(rc));
    goto out;
  }
  uint64_t n = 0, first = 0, last = 0;
  int reached = 0;
  while (tg_wal_reader_next(r, &rec) == 1) {
    if (rec.lsn >= bound) {
      reached = 1;
      break;
    }
    if (!first) first = rec.lsn;
    last = rec.lsn;
    n++;
    if (progress && (++seen & 0xFFFFF) == 0) progress(arg, seen, rec.lsn);
  }
  const tg_wal_end *e1 = tg_wal_reader_end(r);
  /* Damage pass 1 also met is its verdict already, not covered damage. */
  int same = !e->first_lsn && e->reason != TG_WAL_END_CLEAN && e->reason != TG_WAL_END_TORN;
  if (!reached && e1->reason != TG_WAL_END_CLEAN && !same) out->covered_end = *e1;
  out->records += n;
  if (first) out->first_lsn = first;
  if (!out->last_lsn) out->last_lsn = last;
done:
  tg__graph_end_load(&s->g);
  out->tokens = s->g.tokens.live;
  out->connections = s->g.conns.live;
out:
  tg_wal_reader_close(r);
  if (s) {
    if (s->env) mdb_env_close(s->env);
    tg__graph_free(&s->g);
    free(s->dir);
    free(s);
  }
  if (wfd >= 0) close(wfd);
  free(waldir);
  return rc;
}

int tg_store_inspect(const char *dir, tg_inspect_report *out, tg_progress_cb progress,
                     void *arg, char *msg, size_t len) {
  int lock_fd = -1;
  if (msg && len) msg[0] = 0;
  memset(out, 0, sizeof *out);
  int dirfd = tg__store_open_checked_dir(dir, msg, len);
  if (dirfd < 0) return dirfd;
  int rc = tg__store_lock_dir(dirfd, dir, 0, &lock_fd, msg, len);
  if (rc == TG_ELOCKED) {
    /* Held by its owner, who keeps writing: read it as a read-only open
       does, up to the log's durable point (readonly.c). */
    if (msg && len) msg[0] = 0;
    rc = tg__store_inspect_live(dirfd, dir, out, progress, arg, msg, len);
    close(dirfd);
    return rc;
  }
  if (!rc) rc = tg__store_inspect_dir(dirfd, dir, out, progress, arg, msg, len);
  if (lock_fd >= 0) close(lock_fd);
  close(dirfd);
  return rc;
}
