/*
 * The data directory of a durable tg_store: identity, lock, LMDB
 * checkpoint, WAL replay, checkpoints. The layout and the recovery rule are
 * in docs/store-format.md; the durability contract in docs/durability.md.
 *
 *   DIR/TOKENGRAPH     identity: "tokengraph data directory\nformat 1\n"
 *   DIR/LOCK           flock()ed by the process that has DIR open
 *   DIR/checkpoint/    LMDB: tokens, conns (u32 id -> 64 bytes), meta
 *   DIR/wal/           WAL segments (docs/wal-format.md)
 *
 * Recovery: load the checkpoint (a consistent snapshot as of its LSN L),
 * open the WAL (which cuts a torn tail off the last segment), then redo
 * every record after L in LSN order. Checkpoints capture the changed
 * records as of L by copy-on-write (token/graph.h, tg__capture), so the
 * snapshot is exact as of L: every record <= L is in it and none after;
 * replay is then an exact re-execution, and
 * any record that does not apply (a delete of a missing token, say) is
 * corruption, not something to paper over.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store/store_internal.h"
#include "store/checkpoint.h"
#include "common/io.h"
#include "common/path.h"
#include "common/platform.h"

#define TG__DIR_FORMAT 1u
#define IDENTITY_NAME "TOKENGRAPH"
#define IDENTITY_PREFIX "tokengraph data directory\nformat "

void tg__say(char *msg, size_t len, const char *fmt, ...) {
  if (!msg || !len || msg[0]) return; /* keep the first explanation */
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, len, fmt, ap);
  va_end(ap);
}

/* ---- directory, identity, lock ---------------------------------------- */

/* What a non-regular entry is, for a message. */
static const char *kind_of(mode_t m) {
  if (S_ISLNK(m)) return "a symbolic link";
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISCHR(m) || S_ISBLK(m)) return "a device";
  if (S_ISREG(m)) return "a regular file";
  return "not a regular file";
}

/* The refusal of `name`, which is `what` where `want` belongs. */
static int refuse(const char *dir, const char *name, const char *what, const char *want,
                  char *msg, size_t len) {
  tg__say(msg, len, "%s/%s is %s, not %s: refused, not followed and not read "
          "(nothing was changed)", dir, name, what, want);
  return TG_ENOTTG;
}

int tg__dir_open_file(int dirfd, const char *dir, const char *name, int flags, char *msg,
                      size_t len) {
  struct stat st;
  int fd = tg__openat(dirfd, name, flags | O_NOFOLLOW | O_NONBLOCK, 0600);
  if (fd < 0) {
    int rc = fd;
    if (rc == -ENOENT && !(flags & O_CREAT)) return rc;
    /* ELOOP is the link O_NOFOLLOW refused; EISDIR, ENXIO (a socket) and
       the like are named by what is there. */
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(st.st_mode))
      return refuse(dir, name, kind_of(st.st_mode), "a regular file", msg, len);
    tg__say(msg, len, "%s/%s: cannot open: %s", dir, name, tg_strerror(rc));
    return rc;
  }
  if (fstat(fd, &st)) {
    int rc = -errno;
    tg__say(msg, len, "%s/%s: %s", dir, name, strerror(errno));
    close(fd);
    return rc;
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return refuse(dir, name, kind_of(st.st_mode), "a regular file", msg, len);
  }
  /* Regular files ignore O_NONBLOCK; it is cleared so that the descriptor
     is the plain one its users expect. */
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  return fd;
}

int tg__dir_check_regular(int dirfd, const char *dir, const char *name, char *msg,
                          size_t len) {
  struct stat st;
  if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW)) {
    if (errno == ENOENT) return 0;
    int rc = -errno;
    tg__say(msg, len, "%s/%s: %s", dir, name, strerror(errno));
    return rc;
  }
  return S_ISREG(st.st_mode) ? 0 : refuse(dir, name, kind_of(st.st_mode), "a regular file",
                                          msg, len);
}

int tg__dir_open_subdir(int dirfd, const char *dir, const char *name, int create,
                        char *msg, size_t len) {
  struct stat st;
  int made = 0;
  if (create) {
    /* mkdirat never follows a link at the name: a link there is EEXIST, and
       the open below refuses it. */
    int rc = tg__mkdirat(dirfd, name, 0700);
    if (rc && rc != -EEXIST) {
      tg__say(msg, len, "cannot create directory %s/%s: %s", dir, name, tg_strerror(rc));
      return rc;
    }
    made = rc == 0;
  }
  int fd = tg__openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK, 0);
  if (fd < 0) {
    if (fd == -ENOENT && !create) return fd;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode))
      return refuse(dir, name, kind_of(st.st_mode), "a directory", msg, len);
    tg__say(msg, len, "%s/%s: cannot open: %s", dir, name, tg_strerror(fd));
    return fd;
  }
  if (made) {
    /* The new entry must outlive a power loss before later files (and
       acknowledged records) live in it. */
    int rc = tg__fsync(dirfd);
    if (rc) {
      tg__say(msg, len, "cannot make the creation of %s/%s durable (fsync of %s): %s",
              dir, name, dir, tg_strerror(rc));
      close(fd);
      return rc;
    }
  }
  return fd;
}

int tg__store_open_dirfd(const char *dir, char *msg, size_t len) {
  int fd = tg__openat(AT_FDCWD, dir, O_RDONLY | O_DIRECTORY | O_NONBLOCK, 0);
  if (fd < 0) tg__say(msg, len, "%s: %s", dir, tg_strerror(fd));
  return fd;
}

int tg__store_wal_path(char *out, size_t n, int fd, const char *dir, const char *name) {
  if (tg__fd_path(out, n, fd) == 0) return 0;
  return tg__path_join(out, n, dir, name);
}

/* Is the directory empty, apart from a LOCK and a TOKENGRAPH.tmp left by
   an earlier open? The identity file is the first thing an open writes
   (temp, fsync, rename), so a process killed before the rename leaves
   exactly these two; that directory never held data and is still empty
   (found by stress/tg-crash --recovery-kills). */
static int dir_is_empty(int dirfd) {
  /* A descriptor of its own: closedir() closes it, and its offset is not
     dirfd's. */
  int fd = tg__openat(dirfd, ".", O_RDONLY | O_DIRECTORY, 0);
  if (fd < 0) return fd;
  DIR *d = fdopendir(fd);
  if (!d) {
    int rc = -errno;
    close(fd);
    return rc;
  }
  int empty = 1;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
        !strcmp(e->d_name, "LOCK") || !strcmp(e->d_name, IDENTITY_NAME ".tmp"))
      continue;
    empty = 0;
    break;
  }
  closedir(d);
  return empty;
}

int tg__store_check_identity(int dirfd, const char *dir, char *msg, size_t len) {
  int rc;
  int fd = tg__dir_open_file(dirfd, dir, IDENTITY_NAME, O_RDONLY, msg, len);
  if (fd >= 0) {
    char buf[128];
    ssize_t n;
    do n = read(fd, buf, sizeof buf - 1);
    while (n < 0 && errno == EINTR);
    int e = errno;
    close(fd);
    size_t pl = strlen(IDENTITY_PREFIX);
    unsigned fmt = 0;
    if (n < 0) {
      rc = -e;
      tg__say(msg, len, "%s/%s: cannot read: %s", dir, IDENTITY_NAME, strerror(e));
    } else if ((size_t)n <= pl || memcmp(buf, IDENTITY_PREFIX, pl) ||
               (buf[n] = 0, sscanf(buf + pl, "%u", &fmt) != 1) || fmt == 0) {
      rc = TG_ENOTTG;
      tg__say(msg, len, "%s/%s: not a tokengraph identity file; %s is not a "
          "tokengraph data directory (nothing was changed)", dir, IDENTITY_NAME, dir);
    } else if (fmt > TG__DIR_FORMAT) {
      rc = TG_EVERSION;
      tg__say(msg, len, "%s/%s was written in format %u; this library reads format "
          "%u: use a newer tokengraph (nothing was changed)", dir, IDENTITY_NAME, fmt,
          TG__DIR_FORMAT);
    } else {
      rc = 0;
    }
    return rc;
  }
  if (fd != -ENOENT) return fd; /* a link, a FIFO, a directory: msg says which */
  rc = dir_is_empty(dirfd);
  if (rc < 0) {
    tg__say(msg, len, "%s: cannot list: %s", dir, tg_strerror(rc));
    return rc;
  }
  if (!rc) {
    tg__say(msg, len, "%s is not empty and has no %s file: it is not a tokengraph "
        "data directory (nothing was changed)", dir, IDENTITY_NAME);
    return TG_ENOTTG;
  }
  return 1;
}

int tg__store_write_identity(int dirfd) {
  char text[64];
  int n = snprintf(text, sizeof text, IDENTITY_PREFIX "%u\n", TG__DIR_FORMAT);
  return tg__write_file_atomic(dirfd, NULL, IDENTITY_NAME, text, (size_t)n, 0600);
}

/* Does another process hold DIR/LOCK? (Opened without O_CREAT: a
   directory without one gets none.) */
static int lock_is_held(int dirfd) {
  int fd = tg__dir_open_file(dirfd, "", "LOCK", O_RDONLY, NULL, 0);
  if (fd < 0) return 0;
  int held = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  close(fd);
  return held;
}

int tg__store_lock_dir(int dirfd, const char *dir, int create, int *fd_out, char *msg,
                       size_t len) {
  *fd_out = -1;
  int rc = 0;
  struct stat dst;
  if (create && fstat(dirfd, &dst) == 0 && dst.st_uid != geteuid()) {
    /* Files made now (LOCK, segments, the checkpoint) would belong to us,
       and the directory's owner could no longer open them (root running
       tg-replay recover on a user's store would lock the user out). */
    tg__say(msg, len, "%s belongs to uid %u but this process runs as uid %u: run "
            "as the directory's owner (files created now would lock the owner out; "
            "nothing was changed)", dir, (unsigned)dst.st_uid, (unsigned)geteuid());
    return -EPERM;
  }
  /* A reader says why only when it refuses: an unreadable LOCK is no
     error for it. */
  char why[512] = "";
  int fd = tg__dir_open_file(dirfd, dir, "LOCK", create ? O_RDWR | O_CREAT : O_RDONLY,
                             why, sizeof why);
  if (fd < 0 && (create || fd == TG_ENOTTG)) {
    tg__say(msg, len, "%s", why);
    rc = fd;
  } else if (fd < 0) {
    /* Missing: never opened, nobody holds it. Unreadable (another user's
       0600 LOCK): a reader cannot tell and goes on, as it only reads. */
    rc = 0;
  } else if (flock(fd, LOCK_EX | LOCK_NB)) {
    rc = errno == EWOULDBLOCK ? TG_ELOCKED : -errno;
    tg__say(msg, len, "%s is in use by another process or handle (%s/LOCK is locked): "
            "close it first", dir, dir);
    close(fd);
  } else {
    *fd_out = fd;
  }
  return rc;
}

/* A lock handed over by tg__store_open_locked() is already held. */
static int take_lock(tg_store *s, char *msg, size_t len) {
  if (s->lock_fd >= 0) return 0;
  return tg__store_lock_dir(s->dir_fd, s->dir, 1, &s->lock_fd, msg, len);
}

/* Create directory `path` (0700) when missing, and make its entry durable:
   fsync the parent after the mkdir, so a power loss cannot take back a
   directory that later files (and acknowledged records) live in. */
int tg__store_make_dir(const char *path, char *msg, size_t len) {
  struct stat st;
  if (stat(path, &st) == 0) {
    if (S_ISDIR(st.st_mode)) return 0;
    tg__say(msg, len, "%s exists and is not a directory", path);
    return -ENOTDIR;
  }
  int rc = errno == ENOENT ? tg__mkdirat(AT_FDCWD, path, 0700) : -errno;
  if (rc == -EEXIST) return 0; /* another process made it first */
  if (rc) {
    tg__say(msg, len, "cannot create directory %s: %s", path, tg_strerror(rc));
    return rc;
  }
  char parent[4096], trimmed[4096];
  const char *base;
  size_t l = strlen(path);
  while (l > 1 && path[l - 1] == '/') l--; /* "dir/" names dir */
  if (l >= sizeof trimmed) return -ENAMETOOLONG;
  memcpy(trimmed, path, l);
  trimmed[l] = '\0';
  if ((rc = tg__split_path(trimmed, parent, sizeof parent, &base))) return rc;
  if ((rc = tg__fsync_dir(parent)))
    tg__say(msg, len, "cannot make the creation of %s durable (fsync of %s): %s", path,
        parent, tg_strerror(rc));
  return rc;
}

/* ---- replay ------------------------------------------------------------- */

/* Redo one decoded record (not a batch). */
static int apply_one(tg__graph *g, const tg_record *rec, const char **why) {
  int rc;
  switch (rec->type) {
  case TG_REC_TOKEN_PUT:
    if (!tg__arena_may_replay(&g->tokens, rec->id)) {
      *why = "names a token id past any the store had issued";
      return TG_ECORRUPT;
    }
    return tg__graph_token_put(g, &rec->token);
  case TG_REC_TOKEN_DEL:
  case TG_REC_TOKEN_EVICT:
    if ((rc = tg__graph_reserve_deletes(g, 1))) return rc;
    if (tg__graph_token_delete(g, rec->id, NULL)) {
      *why = "deletes a token that does not exist";
      return TG_ECORRUPT;
    }
    return 0;
  case TG_REC_CONN_PUT:
    if (!tg__arena_may_replay(&g->conns, rec->id)) {
      *why = "names a connection id past any the store had issued";
      return TG_ECORRUPT;
    }
    rc = tg__graph_conn_put(g, &rec->connection);
    if (rc == TG_ECORRUPT) *why = "connects missing tokens or reuses a live id";
    return rc;
  case TG_REC_CONN_UPDATE:
    if (tg__graph_conn_update(g, &rec->connection)) {
      *why = "updates a connection that does not exist or has other endpoints";
      return TG_ECORRUPT;
    }
    return 0;
  default: /* TG_REC_CONN_DEL; tg_record_decode() knows no other type */
    if (tg__graph_disconnect(g, rec->id)) {
      *why = "removes a connection that does not exist";
      return TG_ECORRUPT;
    }
    return 0;
  }
}

int tg__store_apply(tg__graph *g, const tg_wal_record *r, const char **why) {
  tg_record rec;
  int rc = tg_record_decode(r, &rec);
  if (rc) {
    *why = rc == TG_EINVAL ? "has an unknown record type" : "has a malformed payload";
    return TG_ECORRUPT;
  }
  if (rec.type != TG_REC_BATCH) return apply_one(g, &rec, why);
  /* A batch, checked whole by the decode above: its entries in order. An
     entry that does not apply is corruption like any record, and the open
     fails, so a part of a batch is never what a store serves. */
  size_t pos = 0;
  while ((rc = tg_record_batch_next(r, &pos, &rec)) == 1)
    if ((rc = apply_one(g, &rec, why))) return rc;
  return rc;
}

/* Replay dir's WAL after `from_lsn` into g: read through walpath (the
   pinned path of wal/, tg__store_wal_path()), named waldir in messages. *last gets the last LSN
   applied (from_lsn - 1 if none), *n the records; *end_out how it ended. */
static int replay(tg__graph *g, const char *walpath, const char *waldir,
                  uint64_t from_lsn, uint64_t *last, uint64_t *n, tg_wal_end *end_out,
                  char *msg, size_t len) {
  tg_wal_reader *r = NULL;
  tg_wal_record rec;
  const char *why = NULL;
  int rc = tg_wal_reader_open(&r, walpath, from_lsn);
  *last = from_lsn - 1;
  *n = 0;
  if (rc) {
    tg__say(msg, len, "%s: cannot read the log: %s", waldir, tg_strerror(rc));
    return rc;
  }
  while (tg_wal_reader_next(r, &rec) == 1) {
    /* Replay starts right after the checkpoint: a log whose first record
       comes later lost the ones between (a checkpoint that is missing or
       older than the segments that were deleted after it). */
    if (*n == 0 && rec.lsn != from_lsn) {
      rc = TG_ECORRUPT;
      tg__say(msg, len, "%s: the log resumes at LSN %llu but the checkpoint "
              "covers only up to %llu: the records between are missing",
              waldir, (unsigned long long)rec.lsn, (unsigned long long)(from_lsn - 1));
      goto out;
    }
    rc = tg__store_apply(g, &rec, &why);
    if (rc) {
      if (rc == TG_ECORRUPT)
        tg__say(msg, len, "%s: record LSN %llu (type %u) %s: the log and the "
            "checkpoint disagree; run 'tg-replay verify'", waldir,
            (unsigned long long)rec.lsn, rec.type, why);
      else
        tg__say(msg, len, "%s: cannot replay record LSN %llu (type %u): %s",
                waldir, (unsigned long long)rec.lsn, rec.type, tg_strerror(rc));
      goto out;
    }
    *last = rec.lsn;
    (*n)++;
  }
  const tg_wal_end *end = tg_wal_reader_end(r);
  if (end_out) *end_out = *end;
  if (end->reason == TG_WAL_END_CORRUPT) {
    rc = end->err ? end->err : TG_ECORRUPT;
    tg__say(msg, len, "%s/%s: %s at offset %llu after LSN %llu; later records "
        "were not replayed. Nothing was repaired: see 'tg-replay verify' and "
        "'tg-replay recover'", waldir, end->path, end->what ? end->what : "corruption",
        (unsigned long long)end->offset, (unsigned long long)end->last_lsn);
  } else if (end->reason == TG_WAL_END_IO) {
    rc = end->err ? end->err : TG_EIO;
    tg__say(msg, len, "%s/%s: cannot read: %s", waldir, end->path, tg_strerror(rc));
  }
out:
  tg_wal_reader_close(r);
  return rc;
}

/* Appends blocked on the full WAL queue since the last look: one
   backpressure event for them, recorded off the append path from the WAL's
   counters. An append is counted when its wait begins and its time when
   the wait ends, so a wait in progress shows in one event and its time in
   a later one. Runs on the checkpointer thread, and at close once that
   thread has stopped. */
void tg__store_note_backpressure(tg_store *s, const tg_wal_stats *ws) {
  if (ws->blocked == s->bp_blocked && ws->blocked_ns == s->bp_blocked_ns) return;
  tg_blackbox_record(TG_BB_BACKPRESSURE, ws->blocked - s->bp_blocked,
                     ws->blocked_ns - s->bp_blocked_ns, ws->queue_depth, 0);
  s->bp_blocked = ws->blocked;
  s->bp_blocked_ns = ws->blocked_ns;
}

/* WAL writer thread hooks: observability, and waking the checkpointer. */
static void on_segment(void *arg, uint64_t first_lsn) {
  tg_store *s = arg;
  if (s->segment_lsn)
    tg_blackbox_record(TG_BB_WAL_SEGMENT_SWITCH, s->segment_lsn, first_lsn, 0, 0);
  s->segment_lsn = first_lsn;
  pthread_cond_signal(&s->ckpt_wake);
}

TG_SPAN_SITE(site_wal_write, "wal.batch_write", "bytes", NULL, NULL, NULL);
TG_SPAN_SITE(site_wal_sync, "wal.fdatasync", "durable_lsn", NULL, NULL, NULL);

/* Spans around the writer's batch writes and the fdatasyncs; they run on
   the writer thread or the WAL's sync thread (never two syncs at once), and
   each names itself for the trace on its first call: the sync thread's
   first call is an fdatasync, the writer's a write. */
static void on_io(void *arg, int what, int phase, uint64_t n) {
  static _Thread_local int named;
  tg_store *s = arg;
  tg_span *sp = &s->io_span[what == TG__WAL_IO_SYNC ? 2 : 1];
  if (phase == 0) {
    if (!named) {
      tg_trace_set_thread_name(what == TG__WAL_IO_SYNC ? "wal-sync" : "wal-writer");
      named = 1;
    }
    tg_span_begin(sp, what == TG__WAL_IO_SYNC ? &site_wal_sync : &site_wal_write);
  } else {
    tg_span_attr(sp, 0, n);
    tg_span_end(sp);
  }
}

static void on_sync(void *arg, uint64_t latency_ns, uint64_t durable_lsn) {
  tg_store *s = arg;
  tg_metric_observe(TG_METRIC_WAL_FDATASYNC_NS, latency_ns);
  if (durable_lsn > s->synced_lsn) {
    if (s->synced_lsn)
      tg_metric_observe(TG_METRIC_WAL_RECORDS_PER_SYNC, durable_lsn - s->synced_lsn);
    s->synced_lsn = durable_lsn;
  }
}

/* The store's options for its log: replay starts after the checkpoint,
   the hooks feed the store's metrics, and ship (or NULL) replicates. */
static tg__wal_store_opts wal_opts(tg_store *s, const struct tg__wal_ship *ship) {
  return (tg__wal_store_opts){
      .ship = ship,
      .start_lsn = s->ckpt_lsn + 1,
      .on_sync = on_sync,
      .on_segment = on_segment,
      .on_io = on_io,
      .hook_arg = s,
  };
}

/* ---- open and close ------------------------------------------------------- */

int tg__store_open_dir(tg_store *s, const char *dir, const tg_store_config *cfg,
                       char *msg, size_t len) {
  char *waldir = NULL;
  char walpath[4096];
  int rc;
  if (tg__wal_config_check(&cfg->wal)) {
    const tg_wal_config *c = &cfg->wal;
    tg__say(msg, len, "invalid configuration: [wal] outside the TG_WAL_* limits of "
        "tokengraph/wal.h (level %d, sync_interval_ms %u, segment_bytes %llu, "
        "ring_slots %u, linger_us %u, nonblocking %d)", c->level, c->sync_interval_ms,
        (unsigned long long)c->segment_bytes, c->ring_slots, c->linger_us, c->nonblocking);
    return TG_EINVAL;
  }
  if ((rc = tg__ship_config_check(cfg, msg, len))) return rc;
  s->dir_fd = s->wal_fd = -1;
  s->dir = strdup(dir);
  if (!s->dir) return TG_ENOMEM;
  pthread_mutex_init(&s->ckpt_mu, NULL);
  pthread_mutex_init(&s->ckpt_wake_mu, NULL);
  pthread_cond_init(&s->ckpt_wake, NULL);
  s->level = cfg->wal.level;
  s->checkpoint_bytes = cfg->checkpoint_bytes;

  if ((rc = tg__store_make_dir(dir, msg, len))) return rc;
  if ((s->dir_fd = tg__store_open_dirfd(dir, msg, len)) < 0) return s->dir_fd;
  /* The identity is read before the lock, so that a directory that is not
     ours gets no LOCK file; and again under the lock, because another
     process may be creating the directory right now: while it holds the
     lock, what it has made so far (checkpoint/ without TOKENGRAPH) would
     look foreign, so a directory that is not ours but whose LOCK is held
     is TG_ELOCKED, and what we decide, we decide under the lock. */
  int fresh = tg__store_check_identity(s->dir_fd, dir, msg, len);
  if (fresh == TG_ENOTTG) {
    if (msg && len) msg[0] = 0;
    if (lock_is_held(s->dir_fd)) {
      tg__say(msg, len, "%s is in use by another process (it is being created or "
          "opened; its LOCK is held)", dir);
      return TG_ELOCKED;
    }
    /* A creator that released its lock between the two looks had written
       TOKENGRAPH before creating anything else: look once more. */
    fresh = tg__store_check_identity(s->dir_fd, dir, msg, len);
  }
  if (fresh < 0) return fresh;
  if ((rc = take_lock(s, msg, len))) return rc;
  if ((fresh = tg__store_check_identity(s->dir_fd, dir, msg, len)) < 0) return fresh;
  if (fresh && (rc = tg__store_write_identity(s->dir_fd))) {
    tg__say(msg, len, "%s: cannot write %s: %s", dir, IDENTITY_NAME, tg_strerror(rc));
    return rc;
  }
  /* Also makes the entries LMDB created durable (checkpoint.c). */
  if ((rc = tg__store_open_checkpoint(s, 0, msg, len))) return rc;

  uint64_t t0 = tg__now_ns();
  tg__graph_begin_load(&s->g);
  if ((rc = tg__store_load_checkpoint(s, msg, len))) return rc;
  s->recovery.checkpoint_lsn = s->ckpt_lsn;
  uint64_t t1 = tg__now_ns();
  s->recovery.load_ns = t1 - t0;

  if (!(waldir = tg__path_join_alloc(dir, "wal"))) return TG_ENOMEM;
  /* The store makes wal/ itself, so that its entry in DIR is durable
     before the first segment is; and opens it as a real directory, so
     that a link planted there leads the log nowhere. */
  if ((s->wal_fd = tg__dir_open_subdir(s->dir_fd, dir, "wal", 1, msg, len)) < 0) {
    rc = s->wal_fd;
    goto out;
  }
  /* The WAL refuses a ring that is not a regular file too, but says only
     "cannot open the log": this names it, as tg_store_inspect() does. */
  if ((rc = tg__dir_check_regular(s->wal_fd, waldir, TG__WAL_RING_NAME, msg, len))) goto out;
  if ((rc = tg__store_wal_path(walpath, sizeof walpath, s->wal_fd, dir, "wal"))) goto out;
  /* Replication: connected (the stream made) before the log opens, since
     its hook is part of the log's options; it ships once the log is
     recovered (tg__ship_start below). */
  const struct tg__wal_ship *ship_hook = NULL;
  if (cfg->nats_url && (rc = tg__ship_open(&s->ship, cfg, &ship_hook, msg, len))) goto out;
  tg__ship_min_epoch(s->ship, s->ckpt_repl_epoch); /* a promotion's epoch */
  tg__wal_store_opts wo = wal_opts(s, ship_hook);
  tg_wal_open_info info;
  rc = tg__wal_open_ex(&s->wal, walpath, &cfg->wal, &wo, &info);
  if (rc && info.corrupt_what) {
    char name[64];
    tg_wal_segment_name(info.corrupt_segment, name, sizeof name);
    tg__say(msg, len, "%s/%s: %s at offset %llu: %s; nothing was changed: see "
        "'tg-replay verify' and 'tg-replay recover'", waldir, name, info.corrupt_what,
        (unsigned long long)info.corrupt_offset, tg_strerror(rc));
    goto out;
  }
  if (rc) {
    tg__say(msg, len, "%s: cannot open the log: %s", waldir, tg_strerror(rc));
    goto out;
  }
  s->recovery.torn_tail = info.torn_tail;
  s->recovery.torn_segment = info.torn_segment;
  s->recovery.torn_offset = info.torn_offset;
  if (info.last_lsn && info.last_lsn < s->ckpt_lsn) {
    rc = TG_ECORRUPT;
    tg__say(msg, len, "%s: the log ends at LSN %llu, before the checkpoint's LSN "
        "%llu: files are missing or were replaced", dir,
        (unsigned long long)info.last_lsn, (unsigned long long)s->ckpt_lsn);
    goto out;
  }

  s->g.track_dirty = 1;
  if ((rc = tg__graph_reserve_conn_dirty(&s->g))) goto out;
  tg_blackbox_record(TG_BB_RECOVERY_START, s->ckpt_lsn, info.segments, 0, 0);
  uint64_t last = 0, n = 0;
  TG_SPAN_SITE(site_replay, "recovery.replay", "from_lsn", "records", "last_lsn", NULL);
  tg_span sp;
  tg_span_begin(&sp, &site_replay);
  rc = replay(&s->g, walpath, waldir, s->ckpt_lsn + 1, &last, &n, NULL, msg, len);
  tg_span_attr(&sp, 0, s->ckpt_lsn + 1);
  tg_span_attr(&sp, 1, n);
  tg_span_attr(&sp, 2, last);
  tg_span_end(&sp);
  if (rc) goto out;
  tg__graph_end_load(&s->g);
  s->last_lsn = last;
  s->recovery.replayed_records = n;
  s->recovery.last_lsn = last;
  s->recovery.replay_ns = tg__now_ns() - t1;
  if (last + 1 != info.next_lsn) {
    rc = TG_ECORRUPT;
    tg__say(msg, len, "%s: replay ended at LSN %llu but the log continues at %llu",
        waldir, (unsigned long long)last, (unsigned long long)info.next_lsn);
    goto out;
  }
  tg_blackbox_record(TG_BB_RECOVERY_END, n, last, info.torn_tail ? info.torn_offset : 0,
                     s->recovery.load_ns + s->recovery.replay_ns);
  /* The lease before the stream: a store that a promotion elsewhere has
     fenced must not publish its tail first (lease.c, AT OPEN). */
  if (s->ship &&
      (rc = tg__lease_acquire(&s->lease, cfg, s->ckpt_repl_epoch, last, msg, len)))
    goto out;
  if (s->ship && (rc = tg__ship_start(s->ship, s->wal, walpath, s->ckpt_lsn, msg, len))) goto out;
  if (s->lease && (rc = tg__lease_start(s->lease, s->ship))) goto out;
  if (s->ship && cfg->repl_snapshots &&
      (!(s->repl_url = strdup(cfg->nats_url)) || !(s->repl_nm = strdup(cfg->repl_name)))) {
    rc = TG_ENOMEM;
    goto out;
  }
  {
    char *bb = tg__path_join_alloc(dir, "blackbox.json");
    if (bb) tg_blackbox_add_path(bb, &s->bb_slot);
    free(bb);
  }
  if (cfg->crash_dump && tg_blackbox_install_signal_handlers() == 0) s->crash_dump = 1;
  if (s->checkpoint_bytes) {
    if (pthread_create(&s->ckpt_thread, NULL, tg__store_checkpointer, s)) {
      rc = TG_ENOMEM;
      goto out;
    }
    s->ckpt_thread_started = 1;
  }
out:
  free(waldir);
  return rc;
}

int tg__store_close_dir(tg_store *s) {
  int rc = 0;
  if (!s->dir) return 0;
  if (s->crash_dump) tg_blackbox_remove_signal_handlers();
  tg_blackbox_remove_path(s->bb_slot);
  s->bb_slot = -1;
  if (s->ckpt_thread_started) {
    pthread_mutex_lock(&s->ckpt_wake_mu);
    s->ckpt_stop = 1;
    pthread_cond_signal(&s->ckpt_wake);
    pthread_mutex_unlock(&s->ckpt_wake_mu);
    pthread_join(s->ckpt_thread, NULL);
  }
  int clean = 1;
  tg__lease_stop(s->lease); /* it fences through the shipper, closed below */
  if (s->wal) {
    tg_wal_stats ws;
    tg_wal_stats_get(s->wal, &ws);
    tg__store_note_backpressure(s, &ws); /* what the checkpointer's tick has not seen */
    if (ws.failed) tg__store_note_log_failure(s, ws.failed);
    tg__ship_detach(s->ship); /* no acks into a WAL being freed */
    rc = tg_wal_close(s->wal);
    clean = !ws.failed && !rc;
  }
  s->wal = NULL;
  tg__ship_close(s->ship); /* after the log's last batch was shipped */
  s->ship = NULL;
  /* Everything logged was shipped: hand the lease over (lease.c, CLOSE).
     A failed log may hold what the stream lacks: keep it. */
  if (clean) tg__lease_release(s->lease, tg__store_last_lsn(s));
  tg__lease_free(s->lease);
  s->lease = NULL;
  free(s->repl_url);
  free(s->repl_nm);
  s->repl_url = s->repl_nm = NULL;
  if (s->env) mdb_env_close(s->env);
  s->env = NULL;
  if (s->lock_fd >= 0) close(s->lock_fd);
  s->lock_fd = -1;
  /* After the WAL: it reaches its segments through /proc/self/fd/wal_fd. */
  if (s->wal_fd >= 0) close(s->wal_fd);
  s->wal_fd = -1;
  if (s->dir_fd >= 0) close(s->dir_fd);
  s->dir_fd = -1;
  pthread_cond_destroy(&s->ckpt_wake);
  pthread_mutex_destroy(&s->ckpt_wake_mu);
  pthread_mutex_destroy(&s->ckpt_mu);
  free(s->dir);
  s->dir = NULL;
  return rc;
}

/* A promoted replica's log, opened again to ship (replica.c). Every record
   it holds was made durable first (the caller's tg_sync), so the reopened
   log ends where this one did; the checkpointer, which reads s->wal, is
   stopped meanwhile, and the metrics collector, which does too, is off. */
int tg__store_reopen_wal(tg_store *s, const tg_store_config *cfg, uint64_t epoch, char *msg,
                         size_t len) {
  char walpath[4096];
  const struct tg__wal_ship *ship_hook = NULL;
  tg_wal_open_info info;
  int rc;
  if ((rc = tg__store_wal_path(walpath, sizeof walpath, s->wal_fd, s->dir, "wal"))) return rc;
  if (s->ckpt_thread_started) {
    pthread_mutex_lock(&s->ckpt_wake_mu);
    s->ckpt_stop = 1;
    pthread_cond_signal(&s->ckpt_wake);
    pthread_mutex_unlock(&s->ckpt_wake_mu);
    pthread_join(s->ckpt_thread, NULL);
    s->ckpt_thread_started = 0;
    s->ckpt_stop = 0;
  }
  tg__store_collector_pause(s, 1);
  pthread_mutex_lock(&s->ckpt_mu);
  if ((rc = tg_wal_close(s->wal))) {
    s->wal = NULL;
    tg__say(msg, len, "%s/wal: closing the replica's log failed: %s", s->dir, tg_strerror(rc));
    goto out;
  }
  s->wal = NULL;
  if ((rc = tg__ship_open(&s->ship, cfg, &ship_hook, msg, len))) goto out;
  tg__ship_min_epoch(s->ship, epoch);
  tg__wal_store_opts wo = wal_opts(s, ship_hook);
  if ((rc = tg__wal_open_ex(&s->wal, walpath, &cfg->wal, &wo, &info))) {
    tg__say(msg, len, "%s/wal: cannot open the log again: %s", s->dir, tg_strerror(rc));
    goto out;
  }
  if (info.next_lsn != s->last_lsn + 1) {
    rc = TG_ECORRUPT;
    tg__say(msg, len, "%s/wal: the log reopened at LSN %llu, not %llu", s->dir,
            (unsigned long long)info.next_lsn, (unsigned long long)(s->last_lsn + 1));
    goto out;
  }
  if ((rc = tg__ship_start(s->ship, s->wal, walpath, s->ckpt_lsn, msg, len))) goto out;
  s->level = cfg->wal.level;
  if (cfg->repl_snapshots && !s->repl_url &&
      (!(s->repl_url = strdup(cfg->nats_url)) || !(s->repl_nm = strdup(cfg->repl_name))))
    rc = TG_ENOMEM;
out:
  pthread_mutex_unlock(&s->ckpt_mu);
  tg__store_collector_pause(s, 0);
  if (s->checkpoint_bytes && s->wal &&
      pthread_create(&s->ckpt_thread, NULL, tg__store_checkpointer, s) == 0)
    s->ckpt_thread_started = 1;
  return rc;
}
