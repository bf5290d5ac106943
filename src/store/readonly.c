/*
 * Reading a live data directory (cfg.read_only, tg_store_refresh(),
 * tg_store_inspect() of a held directory) and hot backup
 * (tg_store_backup()).
 *
 * A read-only handle takes no LOCK and writes no file of the directory.
 * Another process may hold it open meanwhile and keep appending,
 * switching segments, checkpointing, and deleting the segments a
 * checkpoint covers. What a view is built from, and why each step is safe
 * against that owner:
 *
 * 1. The checkpoint, read under an LMDB read transaction registered in
 *    the owner's reader table (checkpoint.c, TG__CKPT_LIVE): the owner
 *    cannot reuse the snapshot's pages until the transaction ends; the
 *    page-by-page check runs on the pinned snapshot, and the records are
 *    read in that transaction, so the owner's commits meanwhile change
 *    nothing the load reads. Only a commit between the pin and the
 *    check's look at the meta pages throws the attempt away.
 * 2. The log after the checkpoint's LSN C, up to its DURABLE POINT: the
 *    last position a DURABLE or SWITCH marker vouches for
 *    (docs/wal-format.md). Records in a segment that ends with a SWITCH
 *    marker are all durable; in the last segment, those before its durable
 *    offset. A first pass reads the log to its end to find that cut, a
 *    second applies the records before it. Bytes the owner is writing lie
 *    after the cut, so a frame in progress is never applied, and a
 *    power loss cannot take back what a view shows.
 * 3. What the owner does meanwhile shows as a log that ends oddly: a
 *    segment deleted by a checkpoint (the log starts after C + 1, or a
 *    file vanishes: -ENOENT), a SWITCH marker naming a segment the
 *    reader's listing predates. Every such end throws the attempt away;
 *    the next one starts from the newer checkpoint. Real damage stays
 *    damage on every attempt and is reported after the last one.
 *
 * Hot backup copies the checkpoint with LMDB's own compacting copy (under
 * a read transaction, so the owner keeps committing), reads the copy's LSN
 * C from the copy itself, then writes the log records C + 1 .. L through
 * the WAL module into the destination (the one implementation of the
 * format), fdatasyncs, and writes the identity file last.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "common/io.h"
#include "common/path.h"
#include "common/platform.h"
#include "store/store_internal.h"

/* Attempts at a consistent view before giving up. Each one that fails
   raced a checkpoint or a segment switch of the owner; these are at least
   a segment's worth of log apart, so more than two in a row is rare on a
   quiet machine. On a loaded one a reader starved of CPU can meet several
   in a row (seen with a test's writer checkpointing continuously): 32
   tries, about a second of backoff in all, before TG_EAGAIN. */
#define RO_ATTEMPTS 32

#define RO_MSG 512

/* Where the durable part of the log ends: every record in a segment before
   `seg`, and in `seg` before `off`. seg == 0: the log holds no segment. */
typedef struct ro_cut {
  uint64_t seg;
  uint64_t off;
  uint64_t segments; /* segment files listed */
  tg_wal_end end;    /* how the first pass ended */
} ro_cut;

static int before_cut(const tg_wal_record *r, const ro_cut *c) {
  return r->segment < c->seg || (r->segment == c->seg && r->offset < c->off);
}

static void backoff(int attempt) {
  struct timespec ts = {0, (long)attempt * 2000000L}; /* 2 ms, 4 ms, ... */
  nanosleep(&ts, NULL);
}

/* Did the reader stop at the SWITCH marker of the last segment it had
   listed? The writer renames the next segment into place (and fsyncs the
   directory) before it writes that marker, so on a live log this means
   only that the listing predates the switch: the next segment is there
   now. (On a closed log it is missing, and the reader that continues
   from its LSN says so.) */
static int stopped_at_switch(const tg_wal_end *e) {
  return e->reason == TG_WAL_END_CORRUPT && e->err == TG_ECORRUPT && e->found_lsn == 0 &&
         e->expected_lsn && e->expected_lsn == e->last_lsn + 1;
}

/* wal/ of the directory open as dirfd, as the open reaches it: a real
   directory (tg__dir_open_subdir()), read through walpath (n bytes), the
   pinned path of *wfd (the caller closes it when >= 0). A missing wal/
   leaves walpath naming it, for the reader's -ENOENT (an empty log). */
static int ro_wal(int dirfd, const char *dir, char *walpath, size_t n, int *wfd, char *msg,
                  size_t len) {
  *wfd = tg__dir_open_subdir(dirfd, dir, "wal", 0, msg, len);
  if (*wfd == -ENOENT) return tg__path_join(walpath, n, dir, "wal");
  if (*wfd < 0) return *wfd;
  /* The ring is the owner's to drain, never read here; one the open would
     refuse is refused here too (the same verdict). */
  char waldir[4096];
  int rc = tg__path_join(waldir, sizeof waldir, dir, "wal");
  if (!rc) rc = tg__dir_check_regular(*wfd, waldir, TG__WAL_RING_NAME, msg, len);
  return rc ? rc : tg__store_wal_path(walpath, n, *wfd, dir, "wal");
}

/* Does a process hold LOCK of the directory open as dirfd, the owner's
   flock? Read from /proc/locks, which takes no lock: even a shared flock held for a moment could make
   an owner opening at that moment fail with TG_ELOCKED. 1 when it cannot
   tell (no /proc): the log is then read as a live one, which is never
   wrong, only more cautious. */
static int owner_holds(int dirfd) {
  struct stat st;
  if (fstatat(dirfd, "LOCK", &st, AT_SYMLINK_NOFOLLOW))
    return errno != ENOENT; /* no LOCK: never opened for writing */
  FILE *f = fopen("/proc/locks", "re");
  if (!f) return 1;
  char line[256];
  int held = 0;
  while (!held && fgets(line, sizeof line, f)) {
    char *save = NULL;
    if (!strstr(line, "FLOCK") || strstr(line, "->")) continue; /* "->": a waiter */
    for (char *t = strtok_r(line, " \t\n", &save); t; t = strtok_r(NULL, " \t\n", &save)) {
      unsigned maj, min;
      unsigned long long ino;
      if (sscanf(t, "%x:%x:%llu", &maj, &min, &ino) == 3) { /* MAJOR:MINOR:INODE */
        held = maj == major(st.st_dev) && min == minor(st.st_dev) && ino == st.st_ino;
        break;
      }
    }
  }
  fclose(f);
  return held;
}

/* Pass 1: read the log from `from` to its end and find where to cut: the
   durable point when an owner holds the directory (live), otherwise the end
   of the valid records, where the owner's next open would resume. walpath
   reaches wal/ (ro_wal()), waldir names it in messages. */
static int find_cut(const char *walpath, const char *waldir, uint64_t from, int live,
                    ro_cut *c, char *msg, size_t len) {
  tg_wal_reader *r = NULL;
  tg_wal_record rec;
  memset(c, 0, sizeof *c);
  int rc = tg_wal_reader_open(&r, walpath, from);
  if (rc == -ENOENT) return 0; /* no wal/ yet: an empty log */
  for (;;) {
    if (rc) {
      tg__say(msg, len, "%s: cannot read the log: %s", waldir, tg_strerror(rc));
      return rc;
    }
    c->segments = tg_wal_reader_segments(r);
    while (tg_wal_reader_next(r, &rec) == 1) {
    }
    c->end = *tg_wal_reader_end(r);
    tg_wal_reader_close(r);
    r = NULL;
    /* A writer faster than this reader switches segments while it reads
       (with small segments, every time): go on from the switch with a
       fresh listing instead of starting over. No progress means the
       segment is really missing. */
    if (!stopped_at_switch(&c->end) || c->end.expected_lsn <= from) break;
    from = c->end.expected_lsn;
    rc = tg_wal_reader_open(&r, walpath, from);
  }
  const tg_wal_end *e = &c->end;
  if (e->reason == TG_WAL_END_CORRUPT || e->reason == TG_WAL_END_IO) {
    rc = e->err ? e->err : TG_ECORRUPT;
    /* Records missing, or a file gone, while an owner holds the directory:
       its checkpoint deleted them under the reader. Worth another try
       (TG_EAGAIN if every try meets it); on a closed log, damage. */
    if (live && (tg_wal_end_is_gap(e) || (e->reason == TG_WAL_END_IO && e->err == -ENOENT)))
      rc = TG_EAGAIN;
    if (tg_wal_end_is_gap(e))
      tg__say(msg, len, "%s/%s: records LSN %llu..%llu are missing (%s)", waldir, e->path,
              (unsigned long long)e->expected_lsn, (unsigned long long)(e->found_lsn - 1),
              e->what ? e->what : "LSN gap");
    else
      tg__say(msg, len, "%s/%s: %s at offset %llu after LSN %llu: %s", waldir, e->path,
              e->what ? e->what : "cannot read", (unsigned long long)e->offset,
              (unsigned long long)e->last_lsn, tg_strerror(rc));
    return rc;
  }
  c->seg = e->segment;
  /* Version 2 segments always have a durable point (at least the header);
     a version-1 log has no markers: what was read is what there is. A log
     nobody holds changes no more: every valid record is shown, as an open
     (and tg_store_inspect()) would replay them. */
  c->off = live && e->durable_offset ? e->durable_offset : e->offset;
  return 0;
}

/* Pass 2: apply the records from `from` that lie before the cut. *last
   gets the last LSN applied (from - 1 if none), *n the count. */
static int apply_upto(tg__graph *g, const char *walpath, const char *waldir, uint64_t from,
                      const ro_cut *c,
                      uint64_t *last, uint64_t *n, tg_progress_cb progress, void *arg,
                      char *msg, size_t len) {
  tg_wal_reader *r = NULL;
  tg_wal_record rec;
  const char *why = NULL;
  int rc = 0, stopped = 0;
  *last = from - 1;
  *n = 0;
  if (!c->seg) return 0;
  if ((rc = tg_wal_reader_open(&r, walpath, from))) {
    tg__say(msg, len, "%s: cannot read the log: %s", waldir, tg_strerror(rc));
    return rc;
  }
  while (tg_wal_reader_next(r, &rec) == 1) {
    if (!before_cut(&rec, c)) {
      stopped = 1;
      break;
    }
    if (*n == 0 && rec.lsn != from) {
      rc = TG_ECORRUPT;
      tg__say(msg, len, "%s: the log resumes at LSN %llu but the checkpoint covers only "
              "up to %llu", waldir, (unsigned long long)rec.lsn,
              (unsigned long long)(from - 1));
      goto out;
    }
    if ((rc = tg__store_apply(g, &rec, &why))) {
      if (rc == TG_ECORRUPT)
        tg__say(msg, len, "%s: record LSN %llu (type %u) %s", waldir,
                (unsigned long long)rec.lsn, rec.type, why);
      else
        tg__say(msg, len, "%s: cannot apply record LSN %llu: %s", waldir,
                (unsigned long long)rec.lsn, tg_strerror(rc));
      goto out;
    }
    *last = rec.lsn;
    ++*n;
    if (progress && (*n & 0xFFFFF) == 0) progress(arg, *n, rec.lsn);
  }
  if (!stopped) {
    /* Ended before the cut: only a problem if the cut lay further on. */
    const tg_wal_end *e = tg_wal_reader_end(r);
    /* At the switch out of the cut's segment, every record before the cut
       was read: a listing older than the switch is no harm here. */
    int past = stopped_at_switch(e) && e->segment >= c->seg;
    if (!past && (e->reason == TG_WAL_END_CORRUPT || e->reason == TG_WAL_END_IO)) {
      rc = e->err ? e->err : TG_ECORRUPT;
      tg__say(msg, len, "%s/%s: %s at offset %llu: %s", waldir, e->path,
              e->what ? e->what : "cannot read", (unsigned long long)e->offset,
              tg_strerror(rc));
    }
  }
out:
  tg_wal_reader_close(r);
  return rc;
}

/* A view of a live directory: a graph as of `last`. */
typedef struct ro_view {
  tg__graph g;
  uint64_t ckpt_lsn;
  uint64_t ckpt_tokens, ckpt_conns;
  uint64_t repl_seq, repl_epoch; /* the checkpoint's replication position */
  uint64_t last;      /* last LSN applied (ckpt_lsn when none) */
  uint64_t replayed;  /* records applied after the checkpoint */
  ro_cut cut;
  uint64_t load_ns, replay_ns;
} ro_view;

/* One attempt at a view (the caller retries). v->g is initialised here
   and left for the caller to free, also on failure. */
static int build_once(int dirfd, const char *dir, const char *walpath, const char *waldir,
                      ro_view *v, tg_progress_cb progress, void *arg, char *msg, size_t len) {
  tg_store *t = calloc(1, sizeof *t);
  int rc;
  if (!t) return TG_ENOMEM;
  t->lock_fd = t->wal_fd = -1;
  t->dir = (char *)dir; /* borrowed, as dir_fd: only the checkpoint code reads them */
  t->dir_fd = dirfd;
  if ((rc = tg__graph_init(&t->g))) goto out;
  uint64_t t0 = tg__now_ns();
  rc = tg__store_open_checkpoint(t, TG__CKPT_LIVE, msg, len);
  tg__graph_begin_load(&t->g);
  if (!rc && t->env) rc = tg__store_load_checkpoint(t, msg, len);
  if (t->env) {
    tg__store_unpin_checkpoint(t);
    mdb_env_close(t->env);
    t->env = NULL;
  }
  if (rc == TG_EAGAIN)
    tg__say(msg, len, "%s/checkpoint: the owner committed a checkpoint as it was opened",
            dir);
  if (rc) goto out;
  v->ckpt_lsn = t->ckpt_lsn;
  v->ckpt_tokens = t->recovery.checkpoint_tokens;
  v->ckpt_conns = t->recovery.checkpoint_connections;
  v->repl_seq = t->ckpt_repl_seq;
  v->repl_epoch = t->ckpt_repl_epoch;
  uint64_t t1 = tg__now_ns();
  v->load_ns = t1 - t0;
  if ((rc = find_cut(walpath, waldir, v->ckpt_lsn + 1, owner_holds(dirfd), &v->cut, msg,
                     len)))
    goto out;
  rc = apply_upto(&t->g, walpath, waldir, v->ckpt_lsn + 1, &v->cut, &v->last, &v->replayed,
                  progress,
                  arg, msg, len);
  v->replay_ns = tg__now_ns() - t1;
out:
  tg__graph_end_load(&t->g);
  v->g = t->g; /* moved: the arenas hold no pointer into the struct */
  free(t);
  return rc;
}

/* A view, trying again while the owner's checkpoints and switches race the
   read. Never leaves v->g to free on failure. */
static int build_view(int dirfd, const char *dir, ro_view *v, tg_progress_cb progress,
                      void *arg, char *msg, size_t len) {
  char *waldir = tg__path_join_alloc(dir, "wal");
  char m[RO_MSG], walpath[4096];
  int rc = TG_ENOMEM, wfd = -1;
  if (!waldir) return rc;
  for (int attempt = 0; attempt < RO_ATTEMPTS; attempt++) {
    if (attempt) backoff(attempt);
    memset(v, 0, sizeof *v);
    m[0] = 0;
    /* Again each time: the owner may make wal/ meanwhile. */
    if (wfd >= 0) close(wfd);
    if ((rc = ro_wal(dirfd, dir, walpath, sizeof walpath, &wfd, m, sizeof m))) break;
    rc = build_once(dirfd, dir, walpath, waldir, v, progress, arg, m, sizeof m);
    if (!rc) break;
    tg__graph_free(&v->g);
    memset(&v->g, 0, sizeof v->g);
    /* Final answers, except that a checkpoint the owner is creating right
       now (a new directory) may look foreign for a moment. */
    if (rc == TG_ENOMEM || rc == TG_EVERSION || (rc == TG_ENOTTG && !owner_holds(dirfd))) break;
  }
  if (rc) tg__say(msg, len, "%s%s", m[0] ? m : tg_strerror(rc),
                  rc == TG_EAGAIN || rc == TG_ECORRUPT || rc < 0
                      ? " (read-only: the same after several tries)" : "");
  if (wfd >= 0) close(wfd);
  free(waldir);
  return rc;
}

/* ---- the read-only handle ------------------------------------------------- */

static int refresh_locked(tg_store *s);

int tg__store_open_readonly(tg_store *s, const char *dir, char *msg, size_t len) {
  ro_view v;
  int rc;
  pthread_mutex_init(&s->ckpt_mu, NULL);
  pthread_mutex_init(&s->ckpt_wake_mu, NULL);
  pthread_cond_init(&s->ckpt_wake, NULL);
  s->read_only = 1;
  s->writes_refused = 1;
  s->dir_fd = s->wal_fd = -1;
  if (!(s->dir = strdup(dir))) return TG_ENOMEM;
  if ((s->dir_fd = tg__store_open_checked_dir(dir, msg, len)) < 0) return s->dir_fd;
  /* Never taken, but held to what the owner's open accepts. */
  if ((rc = tg__dir_check_regular(s->dir_fd, dir, "LOCK", msg, len))) return rc;
  if ((rc = build_view(s->dir_fd, dir, &v, NULL, NULL, msg, len))) return rc;
  tg__graph_free(&s->g);
  s->g = v.g;
  s->ckpt_lsn = v.ckpt_lsn;
  s->last_lsn = v.last;
  s->recovery.checkpoint_lsn = v.ckpt_lsn;
  s->recovery.checkpoint_tokens = v.ckpt_tokens;
  s->recovery.checkpoint_connections = v.ckpt_conns;
  s->recovery.replayed_records = v.replayed;
  s->recovery.last_lsn = v.last;
  s->recovery.load_ns = v.load_ns;
  s->recovery.replay_ns = v.replay_ns;
  return 0;
}

int tg_store_refresh(tg_store *s) {
  if (!s || !s->read_only) return TG_EINVAL;
  TG__CALL_GUARD(s);
  /* One refresh or backup of a read-only handle at a time (ckpt_mu, which
     a read-only handle has no checkpoints to guard with): two refreshes
     from the same LSN would apply the same records twice. */
  pthread_mutex_lock(&s->ckpt_mu);
  int rc = refresh_locked(s);
  pthread_mutex_unlock(&s->ckpt_mu);
  return rc;
}

static int refresh_locked(tg_store *s) {
  char m[RO_MSG] = "", walpath[4096];
  char *waldir = tg__path_join_alloc(s->dir, "wal");
  ro_cut c;
  uint64_t last = 0, n = 0, from = s->last_lsn + 1;
  int rc, wfd = -1;
  if (!waldir) return TG_ENOMEM;
  /* Forward from where the handle is, while the segments are there. */
  rc = ro_wal(s->dir_fd, s->dir, walpath, sizeof walpath, &wfd, m, sizeof m);
  if (!rc) rc = find_cut(walpath, waldir, from, owner_holds(s->dir_fd), &c, m, sizeof m);
  if (!rc) {
    tg__store_lock(s);
    tg__graph_begin_load(&s->g);
    rc = apply_upto(&s->g, walpath, waldir, from, &c, &last, &n, NULL, NULL, m, sizeof m);
    tg__graph_end_load(&s->g);
    /* Records applied are whole: the handle is at `last` either way. */
    s->last_lsn = last;
    s->recovery.replayed_records += n;
    s->recovery.last_lsn = last;
    tg__store_unlock(s);
  }
  free(waldir);
  if (wfd >= 0) close(wfd);
  if (!rc) return 0;
  /* The segments after the handle's LSN went with a newer checkpoint (or
     the owner raced the read): start again from the checkpoint. */
  ro_view v;
  if ((rc = build_view(s->dir_fd, s->dir, &v, NULL, NULL, NULL, 0))) return rc;
  tg__graph old;
  tg__store_lock(s);
  old = s->g;
  s->g = v.g;
  s->ckpt_lsn = v.ckpt_lsn;
  s->last_lsn = v.last;
  s->recovery.checkpoint_lsn = v.ckpt_lsn;
  s->recovery.checkpoint_tokens = v.ckpt_tokens;
  s->recovery.checkpoint_connections = v.ckpt_conns;
  s->recovery.replayed_records = v.replayed;
  s->recovery.last_lsn = v.last;
  tg__store_unlock(s);
  tg__graph_free(&old);
  return 0;
}

/* ---- tg_store_inspect() of a held directory -------------------------------- */

int tg__store_inspect_live(int dirfd, const char *dir, tg_inspect_report *out,
                           tg_progress_cb progress, void *arg, char *msg, size_t len) {
  ro_view v;
  memset(out, 0, sizeof *out);
  int rc = build_view(dirfd, dir, &v, progress, arg, msg, len);
  if (rc) return rc;
  out->live = 1;
  out->checkpoint_lsn = v.ckpt_lsn;
  out->checkpoint_tokens = v.ckpt_tokens;
  out->checkpoint_connections = v.ckpt_conns;
  out->repl_stream_seq = v.repl_seq;
  out->repl_epoch = v.repl_epoch;
  out->segments = v.cut.segments;
  out->records = v.replayed;
  out->replayed = v.replayed;
  out->first_lsn = v.replayed ? v.ckpt_lsn + 1 : 0;
  out->last_lsn = v.replayed ? v.last : 0;
  out->tokens = v.g.tokens.live;
  out->connections = v.g.conns.live;
  /* The log as far as it is durable ends there, cleanly: what lies after
     is the owner's, still being written. */
  out->end.reason = TG_WAL_END_CLEAN;
  out->end.segment = v.cut.seg;
  out->end.offset = v.cut.off;
  out->end.durable_offset = v.cut.off;
  out->end.last_lsn = v.last;
  out->end.first_lsn = out->first_lsn;
  if (v.cut.seg) tg_wal_segment_name(v.cut.seg, out->end.path, sizeof out->end.path);
  tg__graph_free(&v.g);
  return 0;
}

/* ---- hot backup ------------------------------------------------------------ */

/* Remove what an attempt left in dest (its checkpoint and log files), so
   the next attempt starts from an empty copy. */
static void undo_attempt(const char *dest) {
  char *cdir = tg__path_join_alloc(dest, "checkpoint");
  char *wdir = tg__path_join_alloc(dest, "wal");
  if (cdir) {
    int dfd = open(cdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      tg__unlinkat(dfd, "data.mdb", 0);
      tg__unlinkat(dfd, "lock.mdb", 0);
      close(dfd);
    }
  }
  if (wdir) {
    int dfd = open(wdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    struct dirent *e;
    while (d && (e = readdir(d)))
      if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) tg__unlinkat(dfd, e->d_name, 0);
    if (d) closedir(d);
    else if (dfd >= 0) close(dfd);
  }
  free(cdir);
  free(wdir);
}

/* The checkpoint LSN of the copy in dest/checkpoint (0: none), read back
   from the copy itself, through the same check every open makes. */
static int copied_lsn(const char *dest, uint64_t *lsn, char *msg, size_t len) {
  tg_store *t = calloc(1, sizeof *t);
  if (!t) return TG_ENOMEM;
  t->lock_fd = t->wal_fd = -1;
  t->dir = (char *)dest;
  int rc = t->dir_fd = tg__store_open_dirfd(dest, msg, len);
  if (rc >= 0) rc = tg__store_open_checkpoint(t, 1, msg, len);
  *lsn = t->ckpt_lsn;
  if (t->env) mdb_env_close(t->env);
  if (t->dir_fd >= 0) close(t->dir_fd);
  free(t);
  return rc;
}

/* Copy env's current snapshot, compacted, into dest/checkpoint/data.mdb,
   fdatasynced. The file is made through the I/O seam (0600, never over
   an existing one); LMDB writes the pages into it. */
static int copy_checkpoint(MDB_env *env, const char *dest, char *msg, size_t len) {
  char *cdir = tg__path_join_alloc(dest, "checkpoint");
  char *data = cdir ? tg__path_join_alloc(cdir, "data.mdb") : NULL;
  int rc = TG_ENOMEM, fd = -1;
  if (!data) goto out;
  if ((rc = tg__store_make_dir(cdir, msg, len))) goto out;
  fd = tg__openat(AT_FDCWD, data, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    rc = fd;
    tg__say(msg, len, "%s: cannot create: %s", data, tg_strerror(rc));
    goto out;
  }
  int mrc = mdb_env_copyfd2(env, fd, MDB_CP_COMPACT);
  if (mrc) {
    rc = mrc == ENOSPC ? TG_ENOSPC : mrc > 0 ? -mrc : TG_EIO;
    tg__say(msg, len, "%s: cannot copy the checkpoint: %s", data, mdb_strerror(mrc));
    goto out;
  }
  if ((rc = tg__fdatasync(fd)))
    tg__say(msg, len, "%s: cannot make the copy durable: %s", data, tg_strerror(rc));
out:
  if (fd >= 0) close(fd);
  free(cdir);
  free(data);
  return rc;
}

/* The log records from .. to of srcwal, appended in order to a new log in
   dest/wal that starts at `from`. *copied counts them. */
static int copy_log(const char *srcwal, const char *dest, uint64_t from, uint64_t to,
                    uint64_t *copied, tg_progress_cb progress, void *arg, char *msg,
                    size_t len) {
  tg_wal_reader *r = NULL;
  tg_wal *w = NULL;
  tg_wal_record rec;
  char *wdir = tg__path_join_alloc(dest, "wal");
  int rc;
  *copied = 0;
  if (!wdir) return TG_ENOMEM;
  if ((rc = tg__store_make_dir(wdir, msg, len))) goto out;
  if (to < from) goto out; /* the checkpoint holds everything */
  tg_wal_config wc;
  tg_wal_config_init(&wc);
  /* Nothing waits on a record: one fdatasync at close makes them all
     durable, before the identity file makes the copy a store. */
  wc.level = TG_WAL_RELAXED;
  tg__wal_store_opts wo = {.start_lsn = from};
  tg_wal_open_info info;
  if ((rc = tg__wal_open_ex(&w, wdir, &wc, &wo, &info))) {
    tg__say(msg, len, "%s: cannot create the log: %s", wdir, tg_strerror(rc));
    goto out;
  }
  if ((rc = tg_wal_reader_open(&r, srcwal, from))) {
    tg__say(msg, len, "%s: cannot read the log: %s", srcwal, tg_strerror(rc));
    goto out;
  }
  uint64_t next = from;
  while (next <= to && tg_wal_reader_next(r, &rec) == 1) {
    uint64_t lsn = 0;
    if (rec.lsn != next) break; /* a gap: reported below */
    if ((rc = tg_wal_append(w, rec.type, rec.payload, rec.len, &lsn))) {
      tg__say(msg, len, "%s: cannot write the log: %s", wdir, tg_strerror(rc));
      goto out;
    }
    next++;
    ++*copied;
    if (progress && (*copied & 0xFFFF) == 0) progress(arg, *copied, rec.lsn);
  }
  if (next <= to) {
    const tg_wal_end *e = tg_wal_reader_end(r);
    /* Segments deleted under the reader (a checkpoint of the owner's) are
       worth another try from the newer checkpoint; damage is not. */
    int deleted = tg_wal_end_is_gap(e) || (e->reason == TG_WAL_END_IO && e->err == -ENOENT);
    rc = deleted ? TG_EAGAIN : e->err ? e->err : TG_ECORRUPT;
    tg__say(msg, len, "%s: the log ends at LSN %llu, before the backup's LSN %llu (%s)",
            srcwal, (unsigned long long)(next - 1), (unsigned long long)to,
            e->what ? e->what : "segments were deleted while they were copied");
  }
out:
  tg_wal_reader_close(r);
  if (w) {
    int crc = tg_wal_close(w);
    if (!rc && crc) {
      rc = crc;
      tg__say(msg, len, "%s: cannot make the log durable: %s", wdir, tg_strerror(crc));
    }
  }
  free(wdir);
  return rc;
}

/* One attempt: checkpoint copy from env, then the log up to `to` (raised to
   the copy's LSN when the copy is newer). *lsn gets the backup's LSN. */
static int backup_once(MDB_env *env, const char *srcwal, const char *dest, uint64_t to,
                       uint64_t *lsn, uint64_t *copied, tg_progress_cb progress, void *arg,
                       char *msg, size_t len) {
  uint64_t c = 0;
  int rc;
  if (env && ((rc = copy_checkpoint(env, dest, msg, len)) ||
              (rc = copied_lsn(dest, &c, msg, len))))
    return rc;
  if (to < c) to = c;
  *lsn = to;
  return copy_log(srcwal, dest, c + 1, to, copied, progress, arg, msg, len);
}

/* Make the copy a store: the directories fsynced (the files were, by
   copy_checkpoint() and the WAL's close), then the identity file, last. */
int tg__store_backup_seal(const char *dest, char *msg, size_t len) {
  char *cdir = tg__path_join_alloc(dest, "checkpoint");
  char *wdir = tg__path_join_alloc(dest, "wal");
  int rc = TG_ENOMEM;
  struct stat st;
  if (!cdir || !wdir) goto out;
  rc = 0;
  if (stat(cdir, &st) == 0) rc = tg__fsync_dir(cdir);
  if (!rc && stat(wdir, &st) == 0) rc = tg__fsync_dir(wdir);
  if (!rc) rc = tg__fsync_dir(dest);
  if (!rc) {
    int dfd = rc = tg__store_open_dirfd(dest, msg, len);
    if (dfd >= 0) {
      rc = tg__store_write_identity(dfd);
      close(dfd);
    }
  }
  if (rc) tg__say(msg, len, "%s: cannot make the backup durable: %s", dest, tg_strerror(rc));
out:
  free(cdir);
  free(wdir);
  return rc;
}

static int backup_dest_ready(const char *dest, char *msg, size_t len) {
  int rc = tg__store_make_dir(dest, msg, len);
  if (rc) return rc;
  int dfd = rc = tg__store_open_dirfd(dest, msg, len);
  if (dfd < 0) return rc;
  rc = tg__store_check_identity(dfd, dest, msg, len);
  close(dfd);
  if (rc == 1) return 0;
  if (msg && len) msg[0] = 0;
  tg__say(msg, len, "%s is not empty: a backup goes into a new or empty directory "
          "(nothing was written)", dest);
  return rc < 0 && rc != TG_ENOTTG ? rc : TG_EEXIST;
}

int tg_store_backup_msg(tg_store *s, const char *dest, tg_progress_cb progress, void *arg,
                         char *msg, size_t len) {
  char srcwal[4096];
  uint64_t lsn = 0, copied = 0;
  int rc, wfd = -1;
  if (msg && len) msg[0] = 0;
  if (!s || !dest) return TG_EINVAL;
  TG__CALL_GUARD(s);
  if (!s->dir) { /* in memory: there is no log to copy a state from */
    tg__say(msg, len, "an in-memory store has no data directory to back up");
    return TG_EINVAL;
  }
  if ((rc = backup_dest_ready(dest, msg, len))) return rc;
  /* The source log is read through wal/'s descriptor, opened as the open
     opens it (no link followed), never through the path DIR/wal. */
  if ((rc = ro_wal(s->dir_fd, s->dir, srcwal, sizeof srcwal, &wfd, msg, len))) goto out;
  if (!s->read_only) {
    /* The owner: no checkpoint may delete segments while they are copied,
       so checkpoints wait (ckpt_mu); writers go on. */
    pthread_mutex_lock(&s->ckpt_mu);
    tg__store_lock(s);
    uint64_t to = tg__store_last_lsn(s); /* the threads' caches' too */
    tg__store_unlock(s);
    rc = to ? tg_wal_sync(s->wal, to) : 0;
    if (rc) tg__say(msg, len, "%s: the log failed: %s", s->dir, tg_strerror(rc));
    if (!rc)
      rc = backup_once(s->env, srcwal, dest, to, &lsn, &copied, progress, arg, msg, len);
    pthread_mutex_unlock(&s->ckpt_mu);
  } else {
    char m[RO_MSG];
    pthread_mutex_lock(&s->ckpt_mu); /* s->last_lsn stays put: no refresh */
    for (int attempt = 0; attempt < RO_ATTEMPTS; attempt++) {
      if (attempt) {
        undo_attempt(dest);
        backoff(attempt);
      }
      m[0] = 0;
      tg_store *t = calloc(1, sizeof *t);
      if (!t) {
        rc = TG_ENOMEM;
        break;
      }
      t->lock_fd = t->wal_fd = -1;
      t->dir = s->dir;
      t->dir_fd = s->dir_fd; /* borrowed */
      rc = tg__store_open_checkpoint(t, TG__CKPT_LIVE, m, sizeof m);
      tg__store_unpin_checkpoint(t); /* the copy reads in a transaction of its own */
      if (!rc)
        rc = backup_once(t->env, srcwal, dest, s->last_lsn, &lsn, &copied, progress, arg, m,
                         sizeof m);
      if (t->env) mdb_env_close(t->env);
      free(t);
      if (!rc || rc == TG_ENOMEM || rc == TG_ENOSPC) break;
    }
    pthread_mutex_unlock(&s->ckpt_mu);
    if (rc) tg__say(msg, len, "%s", m[0] ? m : tg_strerror(rc));
  }
  if (!rc) rc = tg__store_backup_seal(dest, msg, len);
  if (!rc && progress) progress(arg, copied, lsn);
out:
  if (wfd >= 0) close(wfd);
  return rc;
}

int tg_store_backup(tg_store *s, const char *dest, tg_progress_cb progress, void *arg) {
  return tg_store_backup_msg(s, dest, progress, arg, NULL, 0);
}
