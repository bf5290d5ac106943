/*
 * Repairing a data directory (tg_store_repair(), 'tg-replay recover').
 *
 * The rule is that repair never destroys a byte. It decides everything
 * first, from an inspection made under the directory's lock, and then:
 *   1. renames every segment after the cut, newest first, to NAME.broken;
 *   2. copies the bytes from the cut to the end of the cut segment into
 *      SEGMENT.broken, fsyncs that file and then the directory;
 *   3. only then truncates the segment at the cut and fsyncs it and the
 *      directory.
 * An interrupted repair therefore leaves a log that still shows its damage
 * (or less of it), with everything removed so far kept beside it, and can
 * be run again. A cut at or before the checkpoint's LSN would leave a log
 * ending before the checkpoint, which the store refuses; then every segment
 * goes aside whole and the log restarts after the checkpoint (all it held
 * up to there is in the checkpoint).
 *
 * The lock is taken as tg_store_open() takes it and handed to the store
 * that replays the repaired log, so no other process can open the
 * directory between the inspection and the replay. Every write, truncate
 * and fsync goes through the I/O seam (common/io.h), so tests can fail them.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/store_internal.h"
#include "common/io.h"
#include "common/path.h"

#define NAME_MAX_LEN 64   /* a segment name is 24 bytes; .broken.NNN adds 11 */
#define KEEP_CHUNK (1u << 16)

/* A name in dfd for the kept bytes of `name` that does not exist yet:
   NAME.broken, then NAME.broken.1, .2, ... An existing one is never
   overwritten: it may be what an earlier repair kept. */
static int broken_name(int dfd, const char *name, char *out, size_t outlen) {
  for (int k = 0; k < 1000; k++) {
    int n = k == 0 ? snprintf(out, outlen, "%s.broken", name)
                   : snprintf(out, outlen, "%s.broken.%d", name, k);
    if (n < 0 || (size_t)n >= outlen) return -ENAMETOOLONG;
    struct stat st;
    if (fstatat(dfd, out, &st, AT_SYMLINK_NOFOLLOW) && errno == ENOENT) return 0;
  }
  return -EEXIST;
}

/* Rename segment `name` of dfd aside whole, to a fresh .broken name. */
static int move_aside(int dfd, const char *name, char *msg, size_t len) {
  char to[NAME_MAX_LEN];
  int rc = broken_name(dfd, name, to, sizeof to);
  if (rc) {
    tg__say(msg, len, "wal/%s: no free .broken name", name);
    return rc;
  }
  if ((rc = tg__renameat(dfd, name, dfd, to)))
    tg__say(msg, len, "cannot rename wal/%s to wal/%s: %s", name, to, tg_strerror(rc));
  return rc;
}

static int all_zero(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

/* Copy bytes [off, size) of the open segment `in` into a new file of dfd
   (a fresh .broken name, written into kept_name), sparse where the source
   is zero (a preallocated segment is mostly zeros), then fsync it. */
static int keep_bytes(int dfd, int in, const char *name, uint64_t off, uint64_t size,
                      char *kept_name, size_t kept_len, uint64_t *kept) {
  int out = -1, rc = 0;
  unsigned char *buf = NULL;
  for (int tries = 0; out < 0; tries++) {
    if ((rc = broken_name(dfd, name, kept_name, kept_len))) goto cleanup;
    out = tg__openat(dfd, kept_name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
    if (out < 0 && (out != -EEXIST || tries > 8)) {
      rc = out;
      out = -1;
      goto cleanup;
    }
    if (out < 0) out = -1; /* taken since we looked: the next name */
  }
  if (!(buf = malloc(KEEP_CHUNK))) {
    rc = TG_ENOMEM;
    goto cleanup;
  }
  uint64_t pos = off;
  while (pos < size) {
    size_t want = size - pos < KEEP_CHUNK ? (size_t)(size - pos) : KEEP_CHUNK;
    ssize_t n = pread(in, buf, want, (off_t)pos);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      rc = -errno;
      goto cleanup;
    }
    if (n == 0) break;
    if (!all_zero(buf, (size_t)n) &&
        (rc = tg__pwrite_all(out, buf, (size_t)n, (off_t)(pos - off))))
      goto cleanup;
    pos += (uint64_t)n;
  }
  if ((rc = tg__ftruncate(out, (off_t)(pos - off))) || (rc = tg__fsync(out))) goto cleanup;
  *kept = pos - off;
cleanup:
  free(buf);
  if (out >= 0 && close(out) && !rc) rc = -errno;
  if (rc && out >= 0) tg__unlinkat(dfd, kept_name, 0);
  if (rc) kept_name[0] = 0;
  return rc;
}

/* Keep [off, end) of segment `name`, then cut it at off. */
static int cut_segment(int dfd, const char *waldir, const char *name, uint64_t off,
                       tg_repair_report *out, char *msg, size_t len) {
  int rc = 0, fd = tg__openat(dfd, name, O_RDWR | O_NOFOLLOW, 0);
  struct stat st;
  if (fd < 0 || fstat(fd, &st)) {
    rc = fd < 0 ? fd : -errno;
    tg__say(msg, len, "wal/%s: %s; nothing was cut", name, tg_strerror(rc));
    goto cleanup;
  }
  if (!S_ISREG(st.st_mode)) {
    rc = TG_ECORRUPT;
    tg__say(msg, len, "wal/%s is not a regular file; nothing was cut", name);
    goto cleanup;
  }
  if ((rc = keep_bytes(dfd, fd, name, off, (uint64_t)st.st_size, out->kept_name,
                       sizeof out->kept_name, &out->kept_bytes)) ||
      (rc = tg__fsync_dir(waldir))) {
    tg__say(msg, len, "cannot keep the bytes of wal/%s in a .broken file: %s; nothing was cut",
            name, tg_strerror(rc));
    goto cleanup;
  }
  if (!(rc = tg__ftruncate(fd, (off_t)off))) out->truncated = 1;
  if (!rc) rc = tg__fsync(fd);
  if (rc)
    tg__say(msg, len, "cannot truncate wal/%s at %llu: %s (its bytes are kept in wal/%s)",
            name, (unsigned long long)off, tg_strerror(rc), out->kept_name);
cleanup:
  if (fd >= 0) close(fd);
  return rc;
}

/* Decide the cut from the inspection. 0, or an error with msg set when the
   directory must not be touched. */
static int decide(const tg_inspect_report *b, tg_repair_report *out, char *msg, size_t len) {
  const tg_wal_end *e = &b->end;
  out->last_good_lsn = e->last_lsn;
  if (b->apply_failed_lsn) {
    out->cut = TG_REPAIR_CUT_CORRUPT;
    out->cut_segment = b->apply_failed_segment;
    out->cut_offset = b->apply_failed_offset;
    out->last_good_lsn = b->apply_failed_lsn - 1;
  } else if (e->reason == TG_WAL_END_TORN || e->reason == TG_WAL_END_CORRUPT) {
    if (e->err == TG_EVERSION) {
      tg__say(msg, len, "wal/%s was written by a newer format version: use a newer "
              "tokengraph; nothing was changed", e->path);
      return TG_EVERSION;
    }
    out->cut = e->reason == TG_WAL_END_TORN ? TG_REPAIR_CUT_TORN : TG_REPAIR_CUT_CORRUPT;
    out->cut_segment = e->segment;
    out->cut_offset = e->offset;
  } else if (e->reason != TG_WAL_END_CLEAN) {
    tg__say(msg, len, "wal/%s cannot be read (%s: %s): fix that first; nothing was changed",
            e->path, e->what ? e->what : "?", tg_strerror(e->err));
    return e->err ? e->err : TG_EIO;
  }
  out->restart = out->cut != TG_REPAIR_CUT_NONE && b->checkpoint_lsn &&
                 out->last_good_lsn < b->checkpoint_lsn;
  if (out->restart) out->last_good_lsn = b->checkpoint_lsn;
  return 0;
}

/* Carry the decided cut out: later segments aside, then the cut one. */
static int apply_cut(const char *waldir, tg_repair_report *out, char *msg, size_t len) {
  tg_wal_reader *r = NULL;
  int dfd = -1, rc;
  char name[NAME_MAX_LEN];
  if ((rc = tg_wal_reader_open(&r, waldir, 0))) {
    tg__say(msg, len, "%s: cannot list: %s; nothing was changed", waldir, tg_strerror(rc));
    return rc;
  }
  size_t nseg = tg_wal_reader_segments(r), cut = 0;
  while (cut < nseg && tg_wal_reader_segment(r, cut) != out->cut_segment) cut++;
  if (cut == nseg) {
    rc = TG_ECORRUPT;
    tg__say(msg, len, "%s: the segment to cut is gone; nothing was changed", waldir);
    goto cleanup;
  }
  if ((dfd = tg__openat(AT_FDCWD, waldir, O_RDONLY | O_DIRECTORY, 0)) < 0) {
    rc = dfd;
    tg__say(msg, len, "%s: %s; nothing was changed", waldir, tg_strerror(rc));
    goto cleanup;
  }
  /* Offset 0 is a segment whose header is already wrong (or the gap before
     it): no frame of it can be kept in the log. */
  int whole = out->restart || out->cut_offset == 0;
  size_t lo = out->restart ? 0 : whole ? cut : cut + 1;
  for (size_t i = nseg; i-- > lo;) {
    uint64_t first = tg_wal_reader_segment(r, i);
    tg_wal_segment_name(first, name, sizeof name);
    if ((rc = move_aside(dfd, name, msg, len))) goto cleanup;
    if (!out->moved++) out->moved_last = first;
    out->moved_first = first;
  }
  if (!whole) {
    tg_wal_segment_name(out->cut_segment, name, sizeof name);
    if ((rc = cut_segment(dfd, waldir, name, out->cut_offset, out, msg, len))) goto cleanup;
  }
  if ((rc = tg__fsync_dir(waldir))) tg__say(msg, len, "%s: fsync: %s", waldir, tg_strerror(rc));
cleanup:
  if (dfd >= 0) close(dfd);
  tg_wal_reader_close(r);
  return rc;
}

/* The configuration the log is replayed with: the caller's, without quotas
   (recovery must not refuse or evict what the log holds), with one explicit
   checkpoint, no signal handlers, and a segment size no larger than the
   caller's: a header's own size is untrusted and only ever lowers it. */
static tg_store_config repair_config(const tg_store_config *cfg, uint64_t header_bytes) {
  tg_store_config c;
  if (cfg) c = *cfg;
  else tg_store_config_init(&c);
  c.guardian.max_tokens = 0xFFFFFFFFull;
  c.guardian.max_connections = 0xFFFFFFFFull;
  c.guardian.max_memory_bytes = 1ull << 62;
  c.guardian.memory_threshold = 1.0;
  c.guardian.cleanup = 0;
  c.guardian.max_degree = 0xFFFFFFFFu;
  c.checkpoint_bytes = 0;
  c.crash_dump = 0;
  if (header_bytes >= TG_WAL_SEGMENT_MIN && header_bytes % TG_WAL_SEGMENT_ALIGN == 0 &&
      header_bytes < c.wal.segment_bytes)
    c.wal.segment_bytes = header_bytes;
  return c;
}

static int clean(const tg_inspect_report *r) {
  return r->end.reason == TG_WAL_END_CLEAN && !r->apply_failed_lsn;
}

int tg_store_repair(const char *dir, const tg_store_config *cfg, unsigned flags,
                    tg_repair_report *out, tg_progress_cb progress, void *arg, char *msg,
                    size_t len) {
  int rc, lock_fd = -1;
  char *waldir = NULL;
  tg_store *s = NULL;
  if (msg && len) msg[0] = 0;
  if (!out) return TG_EINVAL;
  memset(out, 0, sizeof *out);
  if ((rc = tg__store_check_dir(dir, msg, len))) return rc;
  if ((rc = tg__store_lock_dir(dir, 1, &lock_fd, msg, len))) return rc;
  if ((rc = tg__store_inspect_dir(dir, &out->before, progress, arg, msg, len))) goto cleanup;
  if (!(waldir = tg__path_join_alloc(dir, "wal"))) {
    rc = TG_ENOMEM;
    goto cleanup;
  }
  if ((rc = decide(&out->before, out, msg, len))) goto cleanup;
  if (out->cut == TG_REPAIR_CUT_CORRUPT) {
    if ((rc = tg_wal_salvage_scan(waldir, out->cut_segment, out->cut_offset,
                                  out->before.checkpoint_lsn, &out->beyond))) {
      tg__say(msg, len, "%s: cannot read the segments: %s; nothing was changed", waldir,
              tg_strerror(rc));
      goto cleanup;
    }
    if (!(flags & TG_REPAIR_FORCE)) {
      out->refused = 1;
      rc = TG_ECORRUPT;
      tg__say(msg, len, "%s: refused to drop %llu record%s after corruption without the "
              "force flag; nothing was changed", dir, (unsigned long long)out->beyond.above,
              out->beyond.above == 1 ? "" : "s");
      goto cleanup;
    }
  }
  if (out->cut != TG_REPAIR_CUT_NONE && (rc = apply_cut(waldir, out, msg, len))) goto cleanup;

  tg_store_config c = repair_config(cfg, out->before.end.segment_bytes);
  out->segment_bytes = c.wal.segment_bytes;
  assert(lock_fd >= 0); /* held since the inspection: nobody opened DIR in between */
  rc = tg__store_open_locked(&s, dir, &c, lock_fd, msg, len);
  lock_fd = -1; /* the store has it, or closed it */
  if (rc) goto cleanup;
  out->reopened = 1;
  tg_store_recovery_info(s, &out->opened);
  if ((rc = tg_checkpoint(s))) {
    tg__say(msg, len, "%s: checkpoint failed: %s", dir, tg_strerror(rc));
    goto cleanup;
  }
  out->checkpointed = 1;
  tg_store_stats st;
  tg_store_stats_get(s, &st);
  out->checkpoint_lsn = st.checkpoint_lsn;
  out->tokens = st.live_tokens;
  out->connections = st.live_connections;
  rc = tg_store_close(s);
  s = NULL;
  if (rc) {
    tg__say(msg, len, "%s: close failed: %s", dir, tg_strerror(rc));
    goto cleanup;
  }
  if ((rc = tg_store_inspect(dir, &out->after, progress, arg, msg, len))) goto cleanup;
  if (!clean(&out->after)) {
    rc = TG_ECORRUPT;
    tg__say(msg, len, "%s is still not clean after repair", dir);
  }
cleanup:
  if (s) tg_store_close(s);
  if (lock_fd >= 0) close(lock_fd);
  free(waldir);
  return rc;
}
