/*
 * The checkpoint of a durable store: an LMDB environment in DIR/checkpoint/
 * holding a snapshot of every token and connection as of one LSN. Opened
 * and loaded into the graph by tg_store_open(), written by tg_checkpoint()
 * and the checkpointer thread. The format is in docs/store-format.md; the
 * recovery rule in durable.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "store/checkpoint.h"
#include "common/path.h"
#include "common/platform.h"

/* The checkpoint's format record ("format" in the meta database). */
#define TG__CKPT_FORMAT 1u

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

/* Open (readonly == 0: create if missing) the checkpoint environment and
   read its LSN. Read-only with no checkpoint yet: *s->env stays NULL. */
int tg__store_open_checkpoint(tg_store *s, int readonly, char *msg, size_t len) {
  char *cdir = tg__path_join_alloc(s->dir, "checkpoint"), *data = NULL;
  MDB_txn *txn = NULL;
  int rc = 0, mrc;
  if (!cdir || !(data = tg__path_join_alloc(cdir, "data.mdb"))) {
    rc = TG_ENOMEM;
    goto cleanup;
  }
  struct stat st;
  if (!readonly && (rc = tg__store_make_dir(cdir, msg, len))) goto cleanup;
  int existed = stat(data, &st) == 0;
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
    if ((mrc = meta_put_u64(txn, s->dbi_meta, "format", TG__CKPT_FORMAT)) ||
        (mrc = meta_put_u64(txn, s->dbi_meta, "lsn", 0)))
      goto mdb_fail;
  } else if (mrc) {
    rc = TG_ENOTTG;
    tg__say(msg, len, "%s: the checkpoint has no valid format record: not a "
        "tokengraph checkpoint", data);
    goto cleanup;
  } else if (fmt > TG__CKPT_FORMAT) {
    rc = TG_EVERSION;
    tg__say(msg, len, "%s: checkpoint format %llu is newer than this library's %u",
        data, (unsigned long long)fmt, TG__CKPT_FORMAT);
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

/* Load every token and connection of the checkpoint into the graph. */
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
   log segments the checkpoint covers. Caller holds ckpt_mu. */
static int checkpoint_body(tg_store *s, snapshot *sn) {
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
  tg_wal_remove_upto(s->wal, lsn, NULL);
  return 0;
}

TG_SPAN_SITE(site_ckpt, "checkpoint", "lsn", "tokens", "connections", "deletes");

/* Caller holds ckpt_mu. */
static int checkpoint_locked(tg_store *s) {
  snapshot sn;
  memset(&sn, 0, sizeof sn);
  uint64_t t0 = tg__now_ns();
  tg_span sp;
  tg_span_begin(&sp, &site_ckpt);
  int rc = checkpoint_body(s, &sn);
  tg_span_attr(&sp, 0, s->ckpt_lsn);
  tg_span_attr(&sp, 1, sn.ntok);
  tg_span_attr(&sp, 2, sn.nconn);
  tg_span_attr(&sp, 3, sn.ntdel + sn.ncdel);
  tg_span_end(&sp);
  if (!rc)
    tg_blackbox_record(TG_BB_CHECKPOINT, s->ckpt_lsn, sn.ntok + sn.nconn,
                       tg__now_ns() - t0, 0);
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

/* The automatic checkpointer: wakes at segment switches and every 100 ms,
   and checkpoints once checkpoint_bytes of log were written since the last
   checkpoint. */
void *tg__store_checkpointer(void *arg) {
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
    pthread_mutex_lock(&s->ckpt_mu);
    if (!ws.failed && ws.bytes - s->ckpt_wal_bytes >= s->checkpoint_bytes)
      checkpoint_locked(s); /* a failure leaves the marks for the next try */
    pthread_mutex_unlock(&s->ckpt_mu);
    pthread_mutex_lock(&s->ckpt_wake_mu);
  }
  pthread_mutex_unlock(&s->ckpt_wake_mu);
  return NULL;
}
