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
 * every record after L in LSN order. Checkpoints copy the changed records
 * under the store lock, so the snapshot is exact as of L: every record
 * <= L is in it and none after; replay is then an exact re-execution, and
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
#include "common/io.h"
#include "common/path.h"
#include "common/platform.h"

#define TG__DIR_FORMAT 1u
#define IDENTITY_NAME "TOKENGRAPH"
#define IDENTITY_PREFIX "tokengraph data directory\nformat "
/*
 * The checkpoint environment uses MDB_WRITEMAP: a first checkpoint of the
 * reference workload is one 720 MB transaction, and without WRITEMAP LMDB
 * keeps at most 131,072 dirty pages in memory and spills the rest, which
 * made checkpoints slow down with size (measured with tg-bench replay:
 * 3.3 M tokens/s at 4 M tokens, 1.5 M/s at 9.5 M). With WRITEMAP, LMDB sizes
 * the data file to the map size (sparse), so the map is kept at about twice
 * the data and grown before a transaction that needs more (grow_map()).
 */
#define LMDB_MAPSIZE_MIN (64ull << 20)

void tg__say(char *msg, size_t len, const char *fmt, ...) {
  if (!msg || !len || msg[0]) return; /* keep the first explanation */
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, len, fmt, ap);
  va_end(ap);
}

/* LMDB returns errno values or its own MDB_* codes. */
static int from_mdb(int rc) {
  if (rc == 0) return 0;
  if (rc == MDB_MAP_FULL || rc == ENOSPC) return TG_ENOSPC;
  if (rc == EIO) return TG_EIO;
  if (rc == ENOMEM) return TG_ENOMEM;
  if (rc == MDB_INVALID || rc == MDB_INCOMPATIBLE) return TG_ENOTTG;
  if (rc == MDB_VERSION_MISMATCH) return TG_EVERSION;
  if (rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == MDB_BAD_TXN)
    return TG_ECORRUPT;
  if (rc > 0) return -rc;
  return TG_EIO;
}

/* ---- directory, identity, lock ---------------------------------------- */

/* Is the directory empty, apart from a LOCK and a TOKENGRAPH.tmp left by
   an earlier open? The identity file is the first thing an open writes
   (temp, fsync, rename), so a process killed before the rename leaves
   exactly these two; that directory never held data and is still empty
   (found by stress/tg-crash --recovery-kills). */
static int dir_is_empty(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return -errno;
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

int tg__store_check_identity(const char *dir, char *msg, size_t len) {
  char *path = tg__path_join_alloc(dir, IDENTITY_NAME);
  if (!path) return TG_ENOMEM;
  int rc;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char buf[128];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    size_t pl = strlen(IDENTITY_PREFIX);
    unsigned fmt = 0;
    if (n < 0) {
      rc = -errno;
      tg__say(msg, len, "%s: cannot read: %s", path, strerror(errno));
    } else if ((size_t)n <= pl || memcmp(buf, IDENTITY_PREFIX, pl) ||
               (buf[n] = 0, sscanf(buf + pl, "%u", &fmt) != 1) || fmt == 0) {
      rc = TG_ENOTTG;
      tg__say(msg, len, "%s: not a tokengraph identity file; %s is not a "
          "tokengraph data directory (nothing was changed)", path, dir);
    } else if (fmt > TG__DIR_FORMAT) {
      rc = TG_EVERSION;
      tg__say(msg, len, "%s was written in format %u; this library reads format "
          "%u: use a newer tokengraph (nothing was changed)", dir, fmt,
          TG__DIR_FORMAT);
    } else {
      rc = 0;
    }
    free(path);
    return rc;
  }
  free(path);
  if (errno != ENOENT) {
    rc = -errno;
    tg__say(msg, len, "%s: cannot read %s: %s", dir, IDENTITY_NAME, strerror(errno));
    return rc;
  }
  rc = dir_is_empty(dir);
  if (rc < 0) {
    tg__say(msg, len, "%s: cannot list: %s", dir, strerror(-rc));
    return rc;
  }
  if (!rc) {
    tg__say(msg, len, "%s is not empty and has no %s file: it is not a tokengraph "
        "data directory (nothing was changed)", dir, IDENTITY_NAME);
    return TG_ENOTTG;
  }
  return 1;
}

/* Write the identity file atomically: temp, fsync, rename, fsync dir. */
static int write_identity(const char *dir) {
  char text[64];
  int n = snprintf(text, sizeof text, IDENTITY_PREFIX "%u\n", TG__DIR_FORMAT);
  char *path = tg__path_join_alloc(dir, IDENTITY_NAME);
  if (!path) return TG_ENOMEM;
  int rc = tg__write_file_atomic(AT_FDCWD, dir, path, text, (size_t)n, 0600);
  free(path);
  return rc;
}

/* Does another process hold DIR/LOCK? (Opened without O_CREAT: a
   directory without one gets none.) */
static int lock_is_held(const char *dir) {
  char path[4096];
  if (tg__path_join(path, sizeof path, dir, "LOCK")) return 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) return 0;
  int held = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  close(fd);
  return held;
}

int tg__store_lock_dir(const char *dir, int create, int *fd_out, char *msg, size_t len) {
  char *path = tg__path_join_alloc(dir, "LOCK");
  *fd_out = -1;
  if (!path) return TG_ENOMEM;
  int rc = 0;
  int fd = open(path, create ? O_RDWR | O_CREAT | O_CLOEXEC : O_RDONLY | O_CLOEXEC, 0600);
  if (fd < 0 && !create) {
    /* Missing: never opened, nobody holds it. Unreadable (another user's
       0600 LOCK): a reader cannot tell and goes on, as it only reads. */
    rc = 0;
  } else if (fd < 0) {
    rc = -errno;
    tg__say(msg, len, "%s: cannot open: %s", path, strerror(errno));
  } else if (flock(fd, LOCK_EX | LOCK_NB)) {
    rc = errno == EWOULDBLOCK ? TG_ELOCKED : -errno;
    tg__say(msg, len, "%s is in use by another process or handle (%s is locked): "
            "close it first", dir, path);
    close(fd);
  } else {
    *fd_out = fd;
  }
  free(path);
  return rc;
}

/* A lock handed over by tg__store_open_locked() is already held. */
static int take_lock(tg_store *s, char *msg, size_t len) {
  if (s->lock_fd >= 0) return 0;
  return tg__store_lock_dir(s->dir, 1, &s->lock_fd, msg, len);
}

/* Create directory `path` (0700) when missing, and make its entry durable:
   fsync the parent after the mkdir, so a power loss cannot take back a
   directory that later files (and acknowledged records) live in. */
static int make_dir(const char *path, char *msg, size_t len) {
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
  char parent[4096];
  const char *slash = strrchr(path, '/');
  size_t l = slash ? (size_t)(slash - path) : 0;
  if (l >= sizeof parent) return -ENAMETOOLONG;
  if (slash && l == 0) l = 1; /* "/x": the parent is "/" */
  if (l) memcpy(parent, path, l);
  else parent[l++] = '.';
  parent[l] = '\0';
  if ((rc = tg__fsync_dir(parent)))
    tg__say(msg, len, "cannot make the creation of %s durable (fsync of %s): %s", path,
        parent, tg_strerror(rc));
  return rc;
}

/* ---- LMDB checkpoint ---------------------------------------------------- */

static int meta_get_u64(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t *out) {
  MDB_val k = {strlen(key), (void *)key}, v;
  int rc = mdb_get(txn, dbi, &k, &v);
  if (rc) return rc;
  if (v.mv_size != sizeof *out) return MDB_CORRUPTED;
  memcpy(out, v.mv_data, sizeof *out);
  return 0;
}

static int meta_put_u64(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t val) {
  MDB_val k = {strlen(key), (void *)key}, v = {sizeof val, &val};
  return mdb_put(txn, dbi, &k, &v, 0);
}

int tg__store_open_checkpoint(tg_store *s, int readonly, char *msg, size_t len) {
  char *cdir = tg__path_join_alloc(s->dir, "checkpoint"), *data = NULL;
  MDB_txn *txn = NULL;
  int rc = 0, mrc;
  if (!cdir || !(data = tg__path_join_alloc(cdir, "data.mdb"))) {
    rc = TG_ENOMEM;
    goto cleanup;
  }
  struct stat st;
  if (!readonly && (rc = make_dir(cdir, msg, len))) goto cleanup;
  /* A zero-length data.mdb holds no transaction: LMDB initialises it on a
     read-write open, so it is a checkpoint still to be made, for the
     read-only reader as for the store. */
  int existed = stat(data, &st) == 0 && st.st_size > 0;
  if (readonly && !existed) goto cleanup;
  /* Read-only: MDB_NOLOCK so that not even lock.mdb is written. */
  unsigned flags = MDB_NOTLS | (readonly ? MDB_RDONLY | MDB_NOLOCK : MDB_WRITEMAP);
  uint64_t mapsize = LMDB_MAPSIZE_MIN;
  if (existed && (uint64_t)st.st_size > mapsize) mapsize = (uint64_t)st.st_size;
  if ((mrc = mdb_env_create(&s->env)) || (mrc = mdb_env_set_maxdbs(s->env, 4)) ||
      (mrc = mdb_env_set_mapsize(s->env, mapsize)) ||
      (mrc = mdb_env_open(s->env, cdir, flags, 0600))) {
    rc = from_mdb(mrc);
    tg__say(msg, len, "%s: cannot open the checkpoint: %s%s", data, mdb_strerror(mrc),
        mrc == MDB_INVALID ? " (not an LMDB file: not a tokengraph checkpoint)" : "");
    goto cleanup;
  }
  if (existed) {
    /* An environment no transaction was ever committed to holds nothing:
       an open killed between creating data.mdb and committing the first
       transaction leaves one. It is a checkpoint still to be made, not a
       foreign file (found by stress/tg-crash --recovery-kills). */
    MDB_envinfo ei;
    if ((mrc = mdb_env_info(s->env, &ei))) goto mdb_fail;
    if (ei.me_last_txnid == 0) {
      existed = 0;
      if (readonly) {
        mdb_env_close(s->env);
        s->env = NULL;
        goto cleanup;
      }
    }
  }
  if ((mrc = mdb_txn_begin(s->env, NULL, readonly ? MDB_RDONLY : 0, &txn))) goto mdb_fail;
  mrc = mdb_dbi_open(txn, "meta", existed ? 0 : MDB_CREATE, &s->dbi_meta);
  if (mrc == MDB_NOTFOUND || mrc == MDB_INCOMPATIBLE) {
    rc = TG_ENOTTG;
    tg__say(msg, len, "%s is an LMDB file but not a tokengraph checkpoint (no "
        "'meta' database); nothing was changed", data);
    goto cleanup;
  }
  if (mrc) goto mdb_fail;
  uint64_t fmt = 0;
  mrc = meta_get_u64(txn, s->dbi_meta, "format", &fmt);
  if (mrc == MDB_NOTFOUND && !existed) {
    if ((mrc = meta_put_u64(txn, s->dbi_meta, "format", TG__DIR_FORMAT)) ||
        (mrc = meta_put_u64(txn, s->dbi_meta, "lsn", 0)))
      goto mdb_fail;
  } else if (mrc) {
    rc = TG_ENOTTG;
    tg__say(msg, len, "%s: the checkpoint has no valid format record: not a "
        "tokengraph checkpoint", data);
    goto cleanup;
  } else if (fmt > TG__DIR_FORMAT) {
    rc = TG_EVERSION;
    tg__say(msg, len, "%s: checkpoint format %llu is newer than this library's %u",
        data, (unsigned long long)fmt, TG__DIR_FORMAT);
    goto cleanup;
  }
  unsigned create = readonly ? 0 : MDB_CREATE;
  if ((mrc = mdb_dbi_open(txn, "tokens", create | MDB_INTEGERKEY, &s->dbi_tokens)) ||
      (mrc = mdb_dbi_open(txn, "conns", create | MDB_INTEGERKEY, &s->dbi_conns)) ||
      (mrc = meta_get_u64(txn, s->dbi_meta, "lsn", &s->ckpt_lsn)))
    goto mdb_fail;
  if ((mrc = mdb_txn_commit(txn))) {
    txn = NULL;
    goto mdb_fail;
  }
  txn = NULL;
  goto cleanup;
mdb_fail:
  rc = from_mdb(mrc);
  tg__say(msg, len, "%s: %s", data, mdb_strerror(mrc));
cleanup:
  if (txn) mdb_txn_abort(txn);
  free(cdir);
  free(data);
  return rc;
}

int tg__store_load_checkpoint(tg_store *s, char *msg, size_t len) {
  MDB_txn *txn = NULL;
  MDB_cursor *cur = NULL;
  MDB_val k, v;
  int rc = 0, mrc;
  if ((mrc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn))) goto mdb_fail;
  for (int pass = 0; pass < 2; pass++) {
    MDB_dbi dbi = pass ? s->dbi_conns : s->dbi_tokens;
    if ((mrc = mdb_cursor_open(txn, dbi, &cur))) goto mdb_fail;
    while ((mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
      uint32_t key;
      if (k.mv_size != sizeof key || v.mv_size != 64) {
        rc = TG_ECORRUPT;
        tg__say(msg, len, "%s/checkpoint: a %s record has the wrong size", s->dir,
            pass ? "connection" : "token");
        goto cleanup;
      }
      memcpy(&key, k.mv_data, sizeof key);
      if (pass == 0) {
        tg_token t;
        memcpy(&t, v.mv_data, sizeof t);
        if (t.id != key || key == 0) goto bad_id;
        rc = tg__graph_token_put(&s->g, &t);
        s->recovery.checkpoint_tokens++;
      } else {
        tg_connection c;
        memcpy(&c, v.mv_data, sizeof c);
        if (c.id != key || key == 0) goto bad_id;
        rc = tg__graph_conn_load(&s->g, &c);
        s->recovery.checkpoint_connections++;
      }
      if (rc) goto cleanup;
    }
    if (mrc != MDB_NOTFOUND) goto mdb_fail;
    mdb_cursor_close(cur);
    cur = NULL;
  }
  rc = tg__graph_link_loaded(&s->g);
  if (rc == TG_ECORRUPT)
    tg__say(msg, len, "%s/checkpoint: connections and their lists disagree "
        "(corrupt checkpoint)", s->dir);
  goto cleanup;
bad_id:
  rc = TG_ECORRUPT;
  tg__say(msg, len, "%s/checkpoint: a record's id does not match its key", s->dir);
  goto cleanup;
mdb_fail:
  rc = from_mdb(mrc);
  tg__say(msg, len, "%s/checkpoint: %s", s->dir, mdb_strerror(mrc));
cleanup:
  if (cur) mdb_cursor_close(cur);
  if (txn) mdb_txn_abort(txn);
  return rc;
}

/* ---- replay ------------------------------------------------------------- */

int tg__store_apply(tg__graph *g, const tg_wal_record *r, const char **why) {
  tg_record rec;
  int rc = tg_record_decode(r, &rec);
  if (rc) {
    *why = rc == TG_EINVAL ? "has an unknown record type" : "has a malformed payload";
    return TG_ECORRUPT;
  }
  switch (rec.type) {
  case TG_REC_TOKEN_PUT:
    return tg__graph_token_put(g, &rec.token);
  case TG_REC_TOKEN_DEL:
  case TG_REC_TOKEN_EVICT:
    if (tg__graph_token_delete(g, rec.id, NULL)) {
      *why = "deletes a token that does not exist";
      return TG_ECORRUPT;
    }
    return 0;
  case TG_REC_CONN_PUT:
    rc = tg__graph_conn_put(g, &rec.connection);
    if (rc == TG_ECORRUPT) *why = "connects missing tokens or reuses a live id";
    return rc;
  default: /* TG_REC_CONN_DEL; tg_record_decode() knows no other type */
    if (tg__graph_disconnect(g, rec.id)) {
      *why = "removes a connection that does not exist";
      return TG_ECORRUPT;
    }
    return 0;
  }
}

/* Replay dir's WAL after `from_lsn` into g. *last gets the last LSN
   applied (from_lsn - 1 if none), *n the records; *end_out how it ended. */
static int replay(tg__graph *g, const char *waldir, uint64_t from_lsn,
                  uint64_t *last, uint64_t *n, tg_wal_end *end_out, char *msg,
                  size_t len) {
  tg_wal_reader *r = NULL;
  tg_wal_record rec;
  const char *why = NULL;
  int rc = tg_wal_reader_open(&r, waldir, from_lsn);
  *last = from_lsn - 1;
  *n = 0;
  if (rc) {
    tg__say(msg, len, "%s: cannot read the log: %s", waldir, tg_strerror(rc));
    return rc;
  }
  while (tg_wal_reader_next(r, &rec) == 1) {
    rc = tg__store_apply(g, &rec, &why);
    if (rc) {
      if (rc == TG_ECORRUPT)
        tg__say(msg, len, "%s: record LSN %llu (type %u) %s: the log and the "
            "checkpoint disagree; run 'tg-replay verify'", waldir,
            (unsigned long long)rec.lsn, rec.type, why);
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

/* ---- checkpoints ---------------------------------------------------------- */

typedef struct snapshot {
  tg_token *tok;         /* live tokens to put */
  size_t ntok, captok;
  tg_connection *conn;   /* live connections to put */
  size_t nconn, capconn;
  uint32_t *tdel;        /* token ids to delete */
  size_t ntdel, captdel;
  uint32_t *cdel;        /* connection ids to delete */
  size_t ncdel, capcdel;
} snapshot;

static int grow(void **p, size_t *cap, size_t n, size_t size) {
  if (n < *cap) return 0;
  size_t nc = *cap ? *cap * 2 : 4096;
  if (nc > SIZE_MAX / size) return TG_ENOMEM;
  void *q = realloc(*p, nc * size);
  if (!q) return TG_ENOMEM;
  *p = q;
  *cap = nc;
  return 0;
}

static void snapshot_free(snapshot *sn) {
  free(sn->tok);
  free(sn->conn);
  free(sn->tdel);
  free(sn->cdel);
  memset(sn, 0, sizeof *sn);
}

/* Mark again what a snapshot took (its write failed): the next checkpoint
   must see it. Under the store lock. Whatever the slots hold now, marking
   them only costs a redundant write. */
static void snapshot_remark(tg_store *s, const snapshot *sn) {
  tg__graph *g = &s->g;
  for (size_t i = 0; i < sn->ntok + sn->ntdel; i++) {
    uint32_t id = i < sn->ntok ? sn->tok[i].id : sn->tdel[i - sn->ntok];
    tg_token *t = tg__arena_slot(&g->tokens, id - 1u);
    tg__graph_mark_token(g, t, id);
  }
  for (size_t i = 0; i < sn->nconn + sn->ncdel; i++)
    tg__graph_mark_conn(g, i < sn->nconn ? sn->conn[i].id : sn->cdel[i - sn->nconn]);
}

/* Under the store lock: copy out everything DIRTY and clear the marks. */
static int snapshot_take(tg_store *s, snapshot *sn) {
  TG__ASSERT_LOCKED(s);
  tg__graph *g = &s->g;
  int rc = 0;
  for (uint32_t c = 0; c < g->tokens.nchunks; c++) {
    if (!g->tchunk_dirty[c]) continue;
    g->tchunk_dirty[c] = 0;
    uint32_t lo = c << TG__CHUNK_SHIFT, hi = lo + TG__CHUNK_SLOTS;
    if (hi > g->tokens.next) hi = g->tokens.next;
    for (uint32_t i = lo; i < hi; i++) {
      tg_token *t = tg__arena_slot(&g->tokens, i);
      if (!(t->flags & TG_TOKEN_DIRTY)) continue;
      if (t->id == i + 1u) {
        if ((rc = grow((void **)&sn->tok, &sn->captok, sn->ntok, sizeof *sn->tok))) goto fail;
        t->flags &= (uint16_t)~TG_TOKEN_DIRTY;
        sn->tok[sn->ntok++] = *t;
      } else {
        if ((rc = grow((void **)&sn->tdel, &sn->captdel, sn->ntdel, sizeof *sn->tdel))) goto fail;
        t->flags = 0;
        sn->tdel[sn->ntdel++] = i + 1u;
      }
    }
  }
  for (uint32_t c = 0; c < TG__MAX_CHUNKS && g->cdirty[c]; c++) {
    uint64_t *bits = g->cdirty[c];
    for (uint32_t w = 0; w < TG__CDIRTY_WORDS; w++) {
      while (bits[w]) {
        uint32_t b = (uint32_t)__builtin_ctzll(bits[w]);
        uint32_t id = (c << TG__CHUNK_SHIFT) + w * 64u + b + 1u;
        const tg_connection *cn = tg__graph_conn(g, id);
        if (cn) {
          if ((rc = grow((void **)&sn->conn, &sn->capconn, sn->nconn, sizeof *sn->conn))) goto fail;
          sn->conn[sn->nconn++] = *cn;
        } else {
          if ((rc = grow((void **)&sn->cdel, &sn->capcdel, sn->ncdel, sizeof *sn->cdel))) goto fail;
          sn->cdel[sn->ncdel++] = id;
        }
        bits[w] &= bits[w] - 1;
      }
    }
  }
  return 0;
fail:
  snapshot_remark(s, sn);
  return rc;
}

/* Put n 64-byte records (ascending ids) into dbi. Records beyond the
   database's current last key go in with MDB_APPEND, which fills pages in
   order without searching: a first checkpoint of 9.5 M tokens is all
   appends. */
static int put_sorted(MDB_txn *txn, MDB_dbi dbi, const void *recs, size_t n,
                      size_t id_off) {
  MDB_cursor *cur = NULL;
  MDB_val k, v;
  uint32_t last = 0;
  int mrc = mdb_cursor_open(txn, dbi, &cur);
  if (mrc) return mrc;
  mrc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
  if (mrc == 0 && k.mv_size == sizeof last) memcpy(&last, k.mv_data, sizeof last);
  else if (mrc != MDB_NOTFOUND) goto out;
  mrc = 0;
  for (size_t i = 0; i < n && !mrc; i++) {
    const unsigned char *r = (const unsigned char *)recs + i * 64;
    uint32_t key;
    memcpy(&key, r + id_off, sizeof key);
    k.mv_size = sizeof key;
    k.mv_data = &key;
    v.mv_size = 64;
    v.mv_data = (void *)r;
    mrc = mdb_cursor_put(cur, &k, &v, key > last ? MDB_APPEND : 0);
    if (key > last) last = key;
  }
out:
  mdb_cursor_close(cur);
  return mrc;
}

/* Make the map (and so the sparse data file) large enough for a
   transaction adding `records` 64-byte records: what is used now, plus
   about 100 bytes per record (key, node header, page slack), doubled. No
   transaction may be open in this environment (ckpt_mu is held). */
static int grow_map(tg_store *s, uint64_t records) {
  MDB_envinfo ei;
  MDB_stat st;
  int mrc = mdb_env_info(s->env, &ei);
  if (!mrc) mrc = mdb_env_stat(s->env, &st);
  if (mrc) return mrc;
  uint64_t used = ((uint64_t)ei.me_last_pgno + 1) * st.ms_psize;
  uint64_t want = (used + records * 100) * 2;
  if (want <= ei.me_mapsize) return 0;
  return mdb_env_set_mapsize(s->env, (size_t)want);
}

static int snapshot_write(tg_store *s, const snapshot *sn, uint64_t lsn) {
  MDB_txn *txn = NULL;
  int mrc;
  if ((mrc = grow_map(s, sn->ntok + sn->nconn))) return from_mdb(mrc);
  if ((mrc = mdb_txn_begin(s->env, NULL, 0, &txn))) return from_mdb(mrc);
  if ((mrc = put_sorted(txn, s->dbi_tokens, sn->tok, sn->ntok, offsetof(tg_token, id))))
    goto fail;
  for (size_t i = 0; i < sn->ntdel; i++) {
    uint32_t key = sn->tdel[i];
    MDB_val k = {sizeof key, &key};
    mrc = mdb_del(txn, s->dbi_tokens, &k, NULL);
    if (mrc && mrc != MDB_NOTFOUND) goto fail;
  }
  if ((mrc = put_sorted(txn, s->dbi_conns, sn->conn, sn->nconn, offsetof(tg_connection, id))))
    goto fail;
  for (size_t i = 0; i < sn->ncdel; i++) {
    uint32_t key = sn->cdel[i];
    MDB_val k = {sizeof key, &key};
    mrc = mdb_del(txn, s->dbi_conns, &k, NULL);
    if (mrc && mrc != MDB_NOTFOUND) goto fail;
  }
  if ((mrc = meta_put_u64(txn, s->dbi_meta, "lsn", lsn))) goto fail;
  /* LMDB's commit fsyncs the data file (the environment is opened without
     MDB_NOSYNC), so the checkpoint is durable when this returns. */
  mrc = mdb_txn_commit(txn);
  return from_mdb(mrc);
fail:
  mdb_txn_abort(txn);
  return from_mdb(mrc);
}

/* Copy the changes out under the store lock, make the log durable up to
   the LSN they reflect, write them in one LMDB transaction, then drop the
   log segments the checkpoint covers (*removed of them). Caller holds
   ckpt_mu. */
static int checkpoint_body(tg_store *s, snapshot *sn, uint32_t *removed) {
  tg_wal_stats ws;
  tg__store_lock(s);
  uint64_t lsn = s->last_lsn;
  int rc = snapshot_take(s, sn);
  tg__store_unlock(s);
  if (rc) return rc;
  tg_wal_stats_get(s->wal, &ws);
  /* The checkpoint claims every record <= lsn: they must be durable first,
     or a crash could leave the log shorter than the checkpoint and reuse
     LSNs it covers. */
  if (lsn) rc = tg_wal_sync(s->wal, lsn);
  if (!rc) rc = snapshot_write(s, sn, lsn);
  tg__store_lock(s);
  if (rc) {
    snapshot_remark(s, sn);
  } else {
    s->ckpt_lsn = lsn;
    s->checkpoints++;
  }
  tg__store_unlock(s);
  if (rc) return rc;
  s->ckpt_wal_bytes = ws.bytes;
  /* Segments wholly <= lsn are now redundant. Failing to delete one only
     costs space: the next checkpoint tries again. */
  tg_wal_remove_upto(s->wal, lsn, removed);
  return 0;
}

TG_SPAN_SITE(site_ckpt, "checkpoint", "lsn", "tokens", "connections", "deletes");

/* Caller holds ckpt_mu. */
static int checkpoint_locked(tg_store *s) {
  snapshot sn;
  memset(&sn, 0, sizeof sn);
  uint32_t removed = 0;
  uint64_t t0 = tg__now_ns();
  tg_span sp;
  tg_span_begin(&sp, &site_ckpt);
  int rc = checkpoint_body(s, &sn, &removed);
  tg_span_attr(&sp, 0, s->ckpt_lsn);
  tg_span_attr(&sp, 1, sn.ntok);
  tg_span_attr(&sp, 2, sn.nconn);
  tg_span_attr(&sp, 3, sn.ntdel + sn.ncdel);
  tg_span_end(&sp);
  if (!rc)
    tg_blackbox_record(TG_BB_CHECKPOINT, s->ckpt_lsn, sn.ntok + sn.nconn,
                       tg__now_ns() - t0, removed);
  else
    tg__store_note_log_failure(s, rc);
  snapshot_free(&sn);
  return rc;
}

int tg_checkpoint(tg_store *s) {
  if (!s || !s->wal) return TG_EINVAL;
  pthread_mutex_lock(&s->ckpt_mu);
  int rc = checkpoint_locked(s);
  pthread_mutex_unlock(&s->ckpt_mu);
  return rc;
}

/* Appends blocked on the full WAL queue since the last look: one
   backpressure event for them, recorded off the append path from the WAL's
   counters. An append is counted when its wait begins and its time when
   the wait ends, so a wait in progress shows in one event and its time in
   a later one. Runs on the checkpointer thread, and at close once that
   thread has stopped. */
static void note_backpressure(tg_store *s, const tg_wal_stats *ws) {
  if (ws->blocked == s->bp_blocked && ws->blocked_ns == s->bp_blocked_ns) return;
  tg_blackbox_record(TG_BB_BACKPRESSURE, ws->blocked - s->bp_blocked,
                     ws->blocked_ns - s->bp_blocked_ns, ws->queue_depth, 0);
  s->bp_blocked = ws->blocked;
  s->bp_blocked_ns = ws->blocked_ns;
}

/* The automatic checkpointer: wakes at segment switches and every 100 ms,
   and checkpoints once checkpoint_bytes of log were written since the last
   checkpoint. */
static void *checkpointer(void *arg) {
  tg_store *s = arg;
  pthread_mutex_lock(&s->ckpt_wake_mu);
  while (!s->ckpt_stop) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 100 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&s->ckpt_wake, &s->ckpt_wake_mu, &ts);
    if (s->ckpt_stop) break;
    pthread_mutex_unlock(&s->ckpt_wake_mu);
    tg_wal_stats ws;
    tg_wal_stats_get(s->wal, &ws);
    note_backpressure(s, &ws);
    if (ws.failed) tg__store_note_log_failure(s, ws.failed);
    pthread_mutex_lock(&s->ckpt_mu);
    if (!ws.failed && ws.bytes - s->ckpt_wal_bytes >= s->checkpoint_bytes)
      checkpoint_locked(s); /* a failure leaves the marks for the next try */
    pthread_mutex_unlock(&s->ckpt_mu);
    pthread_mutex_lock(&s->ckpt_wake_mu);
  }
  pthread_mutex_unlock(&s->ckpt_wake_mu);
  return NULL;
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

/* Spans around the writer's batch writes and fdatasyncs; they run on the
   writer thread, which names itself for the trace on its first call. */
static void on_io(void *arg, int what, int phase, uint64_t n) {
  tg_store *s = arg;
  tg_span *sp = &s->io_span[what == TG__WAL_IO_SYNC ? 2 : 1];
  if (phase == 0) {
    if (!s->writer_named) {
      tg_trace_set_thread_name("wal-writer");
      s->writer_named = 1;
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

/* ---- open and close ------------------------------------------------------- */

int tg__store_open_dir(tg_store *s, const char *dir, const tg_store_config *cfg,
                       char *msg, size_t len) {
  char *waldir = NULL;
  int rc;
  if (tg__wal_config_check(&cfg->wal)) {
    const tg_wal_config *c = &cfg->wal;
    tg__say(msg, len, "invalid configuration: [wal] outside the TG_WAL_* limits of "
        "tokengraph/wal.h (level %d, sync_interval_ms %u, segment_bytes %llu, "
        "ring_slots %u, linger_us %u, nonblocking %d)", c->level, c->sync_interval_ms,
        (unsigned long long)c->segment_bytes, c->ring_slots, c->linger_us, c->nonblocking);
    return TG_EINVAL;
  }
  s->dir = strdup(dir);
  if (!s->dir) return TG_ENOMEM;
  pthread_mutex_init(&s->ckpt_mu, NULL);
  pthread_mutex_init(&s->ckpt_wake_mu, NULL);
  pthread_cond_init(&s->ckpt_wake, NULL);
  s->level = cfg->wal.level;
  s->checkpoint_bytes = cfg->checkpoint_bytes;

  if ((rc = make_dir(dir, msg, len))) return rc;
  /* The identity is read before the lock, so that a directory that is not
     ours gets no LOCK file; and again under the lock, because another
     process may be creating the directory right now: while it holds the
     lock, what it has made so far (checkpoint/ without TOKENGRAPH) would
     look foreign, so a directory that is not ours but whose LOCK is held
     is TG_ELOCKED, and what we decide, we decide under the lock. */
  int fresh = tg__store_check_identity(dir, msg, len);
  if (fresh == TG_ENOTTG) {
    if (msg && len) msg[0] = 0;
    if (lock_is_held(dir)) {
      tg__say(msg, len, "%s is in use by another process (it is being created or "
          "opened; its LOCK is held)", dir);
      return TG_ELOCKED;
    }
    /* A creator that released its lock between the two looks had written
       TOKENGRAPH before creating anything else: look once more. */
    fresh = tg__store_check_identity(dir, msg, len);
  }
  if (fresh < 0) return fresh;
  if ((rc = take_lock(s, msg, len))) return rc;
  if ((fresh = tg__store_check_identity(dir, msg, len)) < 0) return fresh;
  if (fresh && (rc = write_identity(dir))) {
    tg__say(msg, len, "%s: cannot write %s: %s", dir, IDENTITY_NAME, tg_strerror(rc));
    return rc;
  }
  if ((rc = tg__store_open_checkpoint(s, 0, msg, len))) return rc;
  /* LMDB creates data.mdb (and lock.mdb) without syncing their directory
     entries: make them durable before anything depends on the checkpoint. */
  {
    char *cdir = tg__path_join_alloc(dir, "checkpoint");
    if (!cdir) return TG_ENOMEM;
    rc = tg__fsync_dir(cdir);
    if (rc) tg__say(msg, len, "%s: cannot fsync the directory: %s", cdir, tg_strerror(rc));
    free(cdir);
    if (rc) return rc;
  }

  uint64_t t0 = tg__now_ns();
  tg__graph_begin_load(&s->g);
  if ((rc = tg__store_load_checkpoint(s, msg, len))) return rc;
  s->recovery.checkpoint_lsn = s->ckpt_lsn;
  uint64_t t1 = tg__now_ns();
  s->recovery.load_ns = t1 - t0;

  if (!(waldir = tg__path_join_alloc(dir, "wal"))) return TG_ENOMEM;
  /* The store makes wal/ itself, so that its entry in DIR is durable
     before the first segment is (make_dir fsyncs the parent). */
  if ((rc = make_dir(waldir, msg, len))) {
    free(waldir);
    return rc;
  }
  tg__wal_store_opts wo = {
      .start_lsn = s->ckpt_lsn + 1,
      .on_sync = on_sync,
      .on_segment = on_segment,
      .on_io = on_io,
      .hook_arg = s,
  };
  tg_wal_open_info info;
  rc = tg__wal_open_ex(&s->wal, waldir, &cfg->wal, &wo, &info);
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
  rc = replay(&s->g, waldir, s->ckpt_lsn + 1, &last, &n, NULL, msg, len);
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
  {
    char *bb = tg__path_join_alloc(dir, "blackbox.json");
    if (bb) tg_blackbox_add_path(bb, &s->bb_slot);
    free(bb);
  }
  if (cfg->crash_dump && tg_blackbox_install_signal_handlers() == 0) s->crash_dump = 1;
  if (s->checkpoint_bytes) {
    if (pthread_create(&s->ckpt_thread, NULL, checkpointer, s)) {
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
  if (s->wal) {
    tg_wal_stats ws;
    tg_wal_stats_get(s->wal, &ws);
    note_backpressure(s, &ws); /* what the checkpointer's tick has not seen */
    if (ws.failed) tg__store_note_log_failure(s, ws.failed);
    rc = tg_wal_close(s->wal);
  }
  s->wal = NULL;
  if (s->env) mdb_env_close(s->env);
  s->env = NULL;
  if (s->lock_fd >= 0) close(s->lock_fd);
  s->lock_fd = -1;
  pthread_cond_destroy(&s->ckpt_wake);
  pthread_mutex_destroy(&s->ckpt_wake_mu);
  pthread_mutex_destroy(&s->ckpt_mu);
  free(s->dir);
  s->dir = NULL;
  return rc;
}
