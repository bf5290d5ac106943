/*
 * Snapshots for replicas (docs/operations.md, "Replication"): the primary
 * publishes its last checkpoint to the stream TG_SNAP_<name> (subject
 * tg.<name>.snap), and a new replica starts from the newest one instead of
 * the WAL stream's first message.
 *
 * A snapshot is a compacting copy of the checkpoint's data.mdb (as
 * tg_store_backup() makes it: it carries the checkpoint's LSN and its
 * replication position in its meta), cut into chunks of at most
 * TG__SNAP_CHUNK bytes, each with headers Tg-Snap-Lsn (the checkpoint's
 * LSN) and Tg-Chunk (0, 1, ...), then a manifest, last, with header
 * Tg-Snap-Manifest: 1 and a JSON body
 *   {"lsn":L,"repl_stream_seq":S,"repl_epoch":E,"bytes":B,"chunks":N,
 *    "first_seq":F,"crc32":C}
 * (F the stream sequence of chunk 0, C the CRC-32 of the whole file). A
 * reader takes the last message of the subject: only a manifest makes a
 * snapshot visible, so a publisher that died halfway left chunks no
 * manifest names. After publishing, the older snapshots are purged, and
 * the WAL stream is purged below the previous snapshot's position: the
 * stream keeps what follows the older of the two newest snapshots, so a
 * replica that bootstrapped from either still finds its next message.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/crc32.h"
#include "common/io.h"
#include "common/path.h"
#include "store/store_internal.h"

#ifdef TG_HAVE_NATS
#include "repl/repl.h"

/* A chunk and its headers stay under the server's default max_payload of
   1 MiB (the contract's message limit). */
#define TG__SNAP_CHUNK ((1u << 20) - 4096u)

typedef struct manifest {
  uint64_t lsn, repl_seq, repl_epoch, bytes, chunks, first_seq, crc;
} manifest;

static uint64_t json_u64(const char *s, const char *key) {
  char pat[40];
  snprintf(pat, sizeof pat, "\"%s\":", key);
  const char *p = strstr(s, pat);
  return p ? strtoull(p + strlen(pat), NULL, 10) : 0;
}

/* The newest manifest of TG_SNAP_<name>: 0, -ENOENT (none), or an error. */
static int manifest_get(tg__follow *f, const char *stream, const char *subject, manifest *m,
                        char *msg, size_t len) {
  tg__repl_hdr h[1] = {{"Tg-Snap-Manifest", 0}};
  void *data = NULL;
  size_t n = 0;
  memset(m, 0, sizeof *m);
  int rc = tg__follow_get(f, stream, subject, 0, h, 1, &data, &n, NULL, msg, len);
  if (rc) return rc;
  if (h[0].value != 1) {
    free(data);
    return -ENOENT; /* chunks of a publish that never finished */
  }
  char *s = malloc(n + 1);
  if (!s) {
    free(data);
    return TG_ENOMEM;
  }
  memcpy(s, data, n);
  s[n] = 0;
  free(data);
  m->lsn = json_u64(s, "lsn");
  m->repl_seq = json_u64(s, "repl_stream_seq");
  m->repl_epoch = json_u64(s, "repl_epoch");
  m->bytes = json_u64(s, "bytes");
  m->chunks = json_u64(s, "chunks");
  m->first_seq = json_u64(s, "first_seq");
  m->crc = json_u64(s, "crc32");
  free(s);
  if (!m->chunks || !m->first_seq || m->chunks != (m->bytes + TG__SNAP_CHUNK - 1) / TG__SNAP_CHUNK) {
    tg__say(msg, len, "stream %s: the newest snapshot manifest is malformed", stream);
    return TG_ECORRUPT;
  }
  return 0;
}

static void snap_names(const char *name, char *stream, size_t sn, char *subject, size_t jn) {
  snprintf(stream, sn, "TG_SNAP_%s", name);
  snprintf(subject, jn, "tg.%s.snap", name);
}

/* held: the caller holds ckpt_mu (after a checkpoint), for the whole
   publish; otherwise it is taken for the copy only. */
static int publish(tg_store *s, const char *nats_url, const char *repl_name, int held,
                   uint64_t *lsn_out, char *msg, size_t len) {
  tg__follow *f = NULL;
  char stream[160], subject[160];
  unsigned char *buf = NULL;
  int rc, fd = -1;
  if (!s->wal || s->read_only) {
    tg__say(msg, len, "only a durable store opened for writing publishes snapshots");
    return TG_EINVAL;
  }
  snap_names(repl_name, stream, sizeof stream, subject, sizeof subject);
  if ((rc = tg__follow_open(&f, nats_url, repl_name, msg, len))) return rc;
  if ((rc = tg__follow_stream_ensure(f, stream, subject, msg, len))) goto out;
  manifest prev;
  rc = manifest_get(f, stream, subject, &prev, msg, len);
  if (rc == -ENOENT || rc == TG_ECORRUPT) {
    memset(&prev, 0, sizeof prev);
    if (msg && len) msg[0] = 0;
  } else if (rc) {
    goto out;
  }
  /* The copy, unnamed in the data directory (O_TMPFILE: nothing is left
     behind by a crash), while no checkpoint can commit. */
  fd = tg__openat(s->dir_fd, ".", O_RDWR | O_TMPFILE | O_CLOEXEC, 0600);
  if (fd < 0) {
    rc = fd;
    tg__say(msg, len, "%s: cannot make a temporary file for the snapshot: %s", s->dir,
            tg_strerror(rc));
    goto out;
  }
  if (!held) pthread_mutex_lock(&s->ckpt_mu);
  manifest m;
  memset(&m, 0, sizeof m);
  m.lsn = TG__LOAD_RELAXED(s->ckpt_lsn);
  m.repl_seq = s->ckpt_repl_seq;
  m.repl_epoch = s->ckpt_repl_epoch;
  int mrc = s->env ? mdb_env_copyfd2(s->env, fd, MDB_CP_COMPACT) : MDB_NOTFOUND;
  if (!held) pthread_mutex_unlock(&s->ckpt_mu);
  if (mrc) {
    rc = mrc == MDB_NOTFOUND ? TG_EINVAL : mrc == ENOSPC ? TG_ENOSPC : TG_EIO;
    tg__say(msg, len, "%s: %s", s->dir, mrc == MDB_NOTFOUND ? "no checkpoint to publish yet"
                                                            : mdb_strerror(mrc));
    goto out;
  }
  struct stat st;
  if (fstat(fd, &st)) {
    rc = -errno;
    goto out;
  }
  m.bytes = (uint64_t)st.st_size;
  m.chunks = (m.bytes + TG__SNAP_CHUNK - 1) / TG__SNAP_CHUNK;
  if (!(buf = malloc(TG__SNAP_CHUNK))) {
    rc = TG_ENOMEM;
    goto out;
  }
  uint32_t crc = 0;
  for (uint64_t i = 0; i < m.chunks; i++) {
    size_t want = (size_t)(m.bytes - i * TG__SNAP_CHUNK < TG__SNAP_CHUNK
                               ? m.bytes - i * TG__SNAP_CHUNK : TG__SNAP_CHUNK);
    ssize_t got = pread(fd, buf, want, (off_t)(i * TG__SNAP_CHUNK));
    if (got != (ssize_t)want) {
      rc = got < 0 ? -errno : TG_EIO;
      tg__say(msg, len, "%s: cannot read the snapshot copy back", s->dir);
      goto out;
    }
    crc = tg__crc32(crc, buf, want);
    tg__repl_hdr h[2] = {{"Tg-Snap-Lsn", m.lsn}, {"Tg-Chunk", i}};
    uint64_t seq = 0;
    if ((rc = tg__follow_publish(f, subject, buf, want, h, 2, &seq, msg, len))) goto out;
    if (i == 0) m.first_seq = seq;
  }
  m.crc = crc;
  char body[512];
  int n = snprintf(body, sizeof body,
                   "{\"lsn\":%" PRIu64 ",\"repl_stream_seq\":%" PRIu64 ",\"repl_epoch\":%" PRIu64
                   ",\"bytes\":%" PRIu64 ",\"chunks\":%" PRIu64 ",\"first_seq\":%" PRIu64
                   ",\"crc32\":%" PRIu64 "}",
                   m.lsn, m.repl_seq, m.repl_epoch, m.bytes, m.chunks, m.first_seq, m.crc);
  tg__repl_hdr mh[1] = {{"Tg-Snap-Manifest", 1}};
  if ((rc = tg__follow_publish(f, subject, body, (size_t)n, mh, 1, NULL, msg, len))) goto out;
  /* Only this snapshot is kept; the WAL stream keeps what follows the
     previous one (a replica may be bootstrapping from it right now).
     Failing to purge costs only space: the next publish tries again. */
  (void)tg__follow_purge_below(f, stream, m.first_seq, NULL, 0);
  if (prev.repl_seq) {
    char wal_stream[160];
    snprintf(wal_stream, sizeof wal_stream, "TG_%s", repl_name);
    (void)tg__follow_purge_below(f, wal_stream, prev.repl_seq + 1, NULL, 0);
  }
  if (lsn_out) *lsn_out = m.lsn;
out:
  free(buf);
  if (fd >= 0) close(fd);
  tg__follow_close(f);
  return rc;
}

int tg_repl_snapshot_publish(tg_store *s, const char *nats_url, const char *repl_name,
                             uint64_t *lsn_out, char *msg, size_t len) {
  if (msg && len) msg[0] = 0;
  if (!s || !nats_url || !repl_name) return TG_EINVAL;
  TG__CALL_GUARD(s);
  return publish(s, nats_url, repl_name, 0, lsn_out, msg, len);
}

void tg__store_snapshot_after_checkpoint(tg_store *s) {
  s->snapshot_err = publish(s, s->repl_url, s->repl_nm, 1, NULL, NULL, 0);
  if (!s->snapshot_err) s->snapshots++;
}

int tg__replica_bootstrap_snapshot(const char *dir, const char *nats_url, const char *name,
                                   char *msg, size_t len) {
  tg__follow *f = NULL;
  char stream[160], subject[160];
  char *cdir = NULL, *data = NULL;
  void *chunk = NULL;
  int rc, fd = -1;
  snap_names(name, stream, sizeof stream, subject, sizeof subject);
  if ((rc = tg__follow_open(&f, nats_url, name, msg, len))) return rc;
  manifest m;
  if ((rc = manifest_get(f, stream, subject, &m, msg, len))) {
    if (rc == -ENOENT) rc = 1; /* no snapshot: the caller starts from the stream */
    goto out;
  }
  if ((rc = tg__store_make_dir(dir, msg, len))) goto out;
  if (!(cdir = tg__path_join_alloc(dir, "checkpoint")) ||
      !(data = tg__path_join_alloc(cdir, "data.mdb"))) {
    rc = TG_ENOMEM;
    goto out;
  }
  if ((rc = tg__store_make_dir(cdir, msg, len))) goto out;
  fd = tg__openat(AT_FDCWD, data, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    rc = fd;
    tg__say(msg, len, "%s: cannot create: %s", data, tg_strerror(rc));
    goto out;
  }
  uint32_t crc = 0;
  uint64_t off = 0;
  for (uint64_t i = 0; i < m.chunks; i++) {
    tg__repl_hdr h[2] = {{"Tg-Snap-Lsn", 0}, {"Tg-Chunk", 0}};
    size_t n = 0;
    if ((rc = tg__follow_get(f, stream, NULL, m.first_seq + i, h, 2, &chunk, &n, NULL, msg,
                             len))) {
      if (rc == -ENOENT) {
        rc = -ENODATA;
        tg__say(msg, len, "stream %s: chunk %" PRIu64 " of the snapshot at LSN %" PRIu64
                " is gone (a newer snapshot replaced it): try again", stream, i, m.lsn);
      }
      goto out;
    }
    if (h[0].value != m.lsn || h[1].value != i || off + n > m.bytes) {
      rc = TG_ECORRUPT;
      tg__say(msg, len, "stream %s: message %" PRIu64 " is not chunk %" PRIu64 " of the "
              "snapshot at LSN %" PRIu64, stream, m.first_seq + i, i, m.lsn);
      goto out;
    }
    crc = tg__crc32(crc, chunk, n);
    if ((rc = tg__pwrite_all(fd, chunk, n, (off_t)off))) goto out;
    off += n;
    free(chunk);
    chunk = NULL;
  }
  if (off != m.bytes || crc != (uint32_t)m.crc) {
    rc = TG_ECORRUPT;
    tg__say(msg, len, "stream %s: the snapshot at LSN %" PRIu64 " has %" PRIu64 " bytes "
            "with CRC %08x; its manifest says %" PRIu64 " bytes, CRC %08x", stream, m.lsn, off,
            crc, m.bytes, (uint32_t)m.crc);
    goto out;
  }
  if ((rc = tg__fdatasync(fd))) goto out;
  close(fd);
  fd = -1;
  rc = tg__store_backup_seal(dir, msg, len);
out:
  if (fd >= 0) close(fd);
  if (rc < 0 && data) unlink(data); /* the next try starts empty */
  free(chunk);
  free(cdir);
  free(data);
  tg__follow_close(f);
  return rc;
}

#else /* !TG_HAVE_NATS */

void tg__store_snapshot_after_checkpoint(tg_store *s) { s->snapshot_err = TG_ENOTSUP; }

int tg_repl_snapshot_publish(tg_store *s, const char *nats_url, const char *repl_name,
                             uint64_t *lsn_out, char *msg, size_t len) {
  (void)s, (void)nats_url, (void)repl_name, (void)lsn_out;
  if (msg && len) msg[0] = 0;
  tg__say(msg, len, "snapshots need NATS: this tokengraph was built without libnats");
  return TG_ENOTSUP;
}

#endif
