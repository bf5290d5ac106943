/*
 * Repairing a data directory (tg_store_repair(), 'tg-replay recover').
 *
 * The rule is that repair never destroys a byte. It decides everything
 * first, from an inspection made under the directory's lock, and then:
 *   1. renames every segment after the cut, newest first, to NAME.broken;
 *   2. copies the bytes from the cut to the end of the cut segment into
 *      SEGMENT.broken (unless they are all zeros), fsyncs that file and
 *      then the directory - the WAL's tg__wal_keep_tail(), which the
 *      open's own recovery uses too;
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

/* Rename segment `name` of dfd aside whole, to a fresh .broken name. */
static int move_aside(int dfd, const char *name, char *msg, size_t len) {
  char to[NAME_MAX_LEN];
  int rc = tg__wal_broken_name(dfd, name, to, sizeof to);
  if (rc) {
    tg__say(msg, len, "wal/%s: no free .broken name", name);
    return rc;
  }
  if ((rc = tg__renameat(dfd, name, dfd, to)))
    tg__say(msg, len, "cannot rename wal/%s to wal/%s: %s", name, to, tg_strerror(rc));
  return rc;
}

/* Keep [off, end) of segment `name`, then cut it at off. */
static int cut_segment(int dfd, const char *walpath, const char *name, uint64_t off,
                       tg_repair_report *out, char *msg, size_t len) {
  /* No link followed, no FIFO waited on, only a regular file cut. */
  int rc = 0, fd = tg__dir_open_file(dfd, "wal", name, O_RDWR, msg, len);
  if (fd < 0) {
    rc = fd == TG_ENOTTG ? TG_ECORRUPT : fd;
    tg__say(msg, len, "wal/%s: %s; nothing was cut", name, tg_strerror(rc));
    goto cleanup;
  }
  /* The same keeping as the open's recovery (one implementation, in the
     WAL): sparse, fsynced, the directory fsynced; zeros alone are not kept. */
  if ((rc = tg__wal_keep_tail(walpath, name, off, out->kept_name, sizeof out->kept_name,
                              &out->kept_bytes))) {
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

/* Carry the decided cut out: later segments aside, then the cut one. wal/
   is open as dfd (walpath reaches it, waldir names it). */
static int apply_cut(int dfd, const char *walpath, const char *waldir, tg_repair_report *out,
                     char *msg, size_t len) {
  tg_wal_reader *r = NULL;
  int rc;
  char name[NAME_MAX_LEN];
  if ((rc = tg_wal_reader_open(&r, walpath, 0))) {
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
    if ((rc = cut_segment(dfd, walpath, name, out->cut_offset, out, msg, len))) goto cleanup;
  }
  if ((rc = tg__fsync(dfd))) tg__say(msg, len, "%s: fsync: %s", waldir, tg_strerror(rc));
cleanup:
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
  int rc, lock_fd = -1, dirfd = -1, wfd = -1;
  char *waldir = NULL;
  char walpath[4096];
  tg_store *s = NULL;
  if (msg && len) msg[0] = 0;
  if (!out) return TG_EINVAL;
  memset(out, 0, sizeof *out);
  if ((dirfd = tg__store_open_checked_dir(dir, msg, len)) < 0) return dirfd;
  if ((rc = tg__store_lock_dir(dirfd, dir, 1, &lock_fd, msg, len))) goto cleanup;
  if ((rc = tg__store_inspect_dir(dirfd, dir, &out->before, progress, arg, msg, len)))
    goto cleanup;
  if (!(waldir = tg__path_join_alloc(dir, "wal"))) {
    rc = TG_ENOMEM;
    goto cleanup;
  }
  if ((rc = decide(&out->before, out, msg, len))) goto cleanup;
  if (out->cut != TG_REPAIR_CUT_NONE) {
    /* A cut means the inspection read segments from wal/: a real
       directory, reached from here on only through its descriptor. */
    if ((wfd = tg__dir_open_subdir(dirfd, dir, "wal", 0, msg, len)) < 0) {
      rc = wfd;
      goto cleanup;
    }
    if ((rc = tg__store_wal_path(walpath, sizeof walpath, wfd, dir, "wal"))) goto cleanup;
  }
  if (out->cut == TG_REPAIR_CUT_CORRUPT) {
    if ((rc = tg_wal_salvage_scan(walpath, out->cut_segment, out->cut_offset,
                                  out->before.checkpoint_lsn, &out->beyond))) {
      char name[NAME_MAX_LEN];
      tg_wal_segment_name(out->cut_segment, name, sizeof name);
      tg__say(msg, len, "%s: cannot read the segments from %s on: %s; nothing was changed",
              waldir, name, tg_strerror(rc));
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
  if (out->cut != TG_REPAIR_CUT_NONE &&
      (rc = apply_cut(wfd, walpath, waldir, out, msg, len)))
    goto cleanup;

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
  if (wfd >= 0) close(wfd);
  if (dirfd >= 0) close(dirfd);
  free(waldir);
  return rc;
}
