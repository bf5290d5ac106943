/*
 * tg-bench peers: the same job in tokengraph and in established embedded
 * stores, at matched durability, in one run, on the same disk.
 *
 * The job: N records, each an 8-byte key (big-endian record number, so
 * every store sees keys in ascending order) and a 64-byte value. In
 * tokengraph a record is a token create: a 64-byte token whose id, assigned
 * by the store in ascending order, is the key. That is the store's real
 * write path (quota check, arena slot, one 80-byte WAL frame).
 *
 * Rows (docs/benchmarks.md says what each one means for each store):
 *  no-sync      records reach the OS page cache; nothing forces them to disk
 *               until one sync at the end, which is timed;
 *  batch-sync   a sync every `batch` (1,000) records;
 *  sync-1t      every record durable before the call returns, 1 thread;
 *  sync-Nt      the same with N threads writing at once.
 * Two tokengraph variants are shown without a ratio: tokengraph-checkpoint
 * (no-sync, ending with tg_checkpoint(), so the records also reach the LMDB
 * checkpoint as the peers' reach their index) and tokengraph-balanced
 * (batch-sync by time: BALANCED's fdatasync every 10 ms).
 * The clock runs from the moment every thread is released until the last
 * record is durable (for no-sync: until the final sync returns). Opening,
 * per-thread setup and closing are not timed.
 *
 * Peers are compiled in when CMake found them (TG_HAVE_ROCKSDB, ...); a
 * missing one is reported as "not built" with the package that provides it.
 */
#ifndef _GNU_SOURCE
#define _XOPEN_SOURCE 700
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "tokengraph/tokengraph.h"
#include "tokengraph/trace.h"

#ifdef TG_HAVE_ROCKSDB
#include <rocksdb/c.h>
#endif
#ifdef TG_HAVE_LEVELDB
#include <leveldb/c.h>
#endif
#ifdef TG_HAVE_LMDB
#include <lmdb.h>
#endif
#ifdef TG_HAVE_SQLITE
#include <sqlite3.h>
#endif

#define KEY_BYTES 8
#define VALUE_BYTES 64
#define ERRLEN 512

enum row { ROW_NOSYNC, ROW_BATCH, ROW_SYNC1, ROW_SYNCN, ROW_COUNT };

/* What one timed run does. */
typedef struct job {
  int row;             /* enum row */
  int threads;
  uint64_t per_thread; /* records each thread writes */
  uint64_t batch;      /* records per transaction / batch / sync (1,000) */
  uint64_t total;      /* threads * per_thread: sizes LMDB's map, tg quotas */
} job;

/* One store: open (untimed), per-thread setup (untimed), write a range of
   records at the row's durability, finish (timed: the final sync of the
   no-sync row), close. Functions return 0 or -1 with a message in err. */
typedef struct store_impl {
  const char *name;
  const char *package; /* Debian package that provides it, for "not built" */
  int built;
  int (*open)(void **db, const char *dir, const job *j, char *err);
  int (*thread_open)(void *db, void **ts, const job *j, char *err); /* NULL: none */
  int (*write)(void *db, void *ts, uint64_t first, uint64_t n, const job *j, char *err);
  int (*finish)(void *db, const job *j, char *err);    /* NULL: none */
  void (*thread_close)(void *ts);
  void (*close)(void *db);
  uint64_t (*syncs)(void *db); /* fdatasyncs so far, when the store tells */
} store_impl;

static void key_of(unsigned char k[KEY_BYTES], uint64_t rec) {
  for (int i = 0; i < KEY_BYTES; i++) k[i] = (unsigned char)(rec >> (8 * (KEY_BYTES - 1 - i)));
}

static void value_of(unsigned char v[VALUE_BYTES], uint64_t rec) {
  for (int i = 0; i < VALUE_BYTES / 8; i++) {
    uint64_t w = rec * 0x9E3779B97F4A7C15ull + (uint64_t)i;
    memcpy(v + 8 * i, &w, 8);
  }
}

static int fail(char *err, const char *what, const char *detail) {
  snprintf(err, ERRLEN, "%.200s: %.300s", what, detail ? detail : "failed");
  return -1;
}

/* ---- tokengraph --------------------------------------------------------- */

typedef struct tgdb {
  tg_store *s;
  int balanced;   /* the batch-sync variant that syncs by time, not by count */
  int checkpoint; /* the no-sync variant that ends with a checkpoint */
} tgdb;

static int tg_open_level(void **db, const char *dir, const job *j, int balanced, int checkpoint,
                         char *err) {
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.crash_dump = 0;
  if (j->row == ROW_NOSYNC || j->row == ROW_BATCH) cfg.wal.level = balanced ? TG_BALANCED : TG_RELAXED;
  else cfg.wal.level = TG_STRICT;
  /* The quotas must not be what is measured: room for every record. */
  if (cfg.guardian.max_tokens < j->total + 1) cfg.guardian.max_tokens = j->total + 1;
  if (cfg.guardian.max_memory_bytes < j->total * 256) cfg.guardian.max_memory_bytes = j->total * 256;
  tgdb *d = calloc(1, sizeof *d);
  if (!d) return fail(err, "tokengraph", "out of memory");
  d->balanced = balanced;
  d->checkpoint = checkpoint;
  char msg[ERRLEN - 64] = "";
  int rc = tg_store_open_msg(&d->s, dir, &cfg, msg, sizeof msg);
  if (rc) {
    free(d);
    return fail(err, "tg_store_open", *msg ? msg : tg_strerror(rc));
  }
  *db = d;
  return 0;
}

static int tg_open_counted(void **db, const char *dir, const job *j, char *err) {
  return tg_open_level(db, dir, j, 0, 0, err);
}

static int tg_open_checkpoint(void **db, const char *dir, const job *j, char *err) {
  return tg_open_level(db, dir, j, 0, 1, err);
}

static int tg_open_balanced(void **db, const char *dir, const job *j, char *err) {
  return tg_open_level(db, dir, j, 1, 0, err);
}

static int tg_write(void *db, void *ts, uint64_t first, uint64_t n, const job *j, char *err) {
  (void)ts;
  (void)first;
  tgdb *d = db;
  tg_token t;
  memset(&t, 0, sizeof t);
  for (uint64_t i = 0; i < n; i++) {
    /* The token carries 64 bytes of content like the peers' value (the
       store overwrites id and sets ACTIVE). */
    value_of((unsigned char *)&t, first + i);
    t.flags = 0;
    t.weight = 1.0f;
    t.timestamp = 1700000000u;
    uint32_t id;
    int rc = tg_token_create(d->s, &t, &id);
    if (rc) return fail(err, "tg_token_create", tg_strerror(rc));
    if (j->row == ROW_BATCH && !d->balanced && (i + 1) % j->batch == 0) {
      rc = tg_sync(d->s);
      if (rc) return fail(err, "tg_sync", tg_strerror(rc));
    }
  }
  return 0;
}

static int tg_finish(void *db, const job *j, char *err) {
  (void)j;
  tgdb *d = db;
  /* The checkpoint writes every token into the LMDB checkpoint in one
     durable transaction: the records then exist in their indexed on-disk
     form, as they do in the peers, not only as log frames. */
  if (d->checkpoint) {
    int rc = tg_checkpoint(d->s);
    if (rc) return fail(err, "tg_checkpoint", tg_strerror(rc));
  }
  int rc = tg_sync(d->s); /* a no-op when everything is durable already */
  return rc ? fail(err, "tg_sync", tg_strerror(rc)) : 0;
}

static void tg_close_db(void *db) {
  tgdb *d = db;
  if (!d) return;
  tg_store_close(d->s);
  free(d);
}

static uint64_t tg_syncs(void *db) {
  (void)db;
  tg_metric_values v;
  tg_metrics_snapshot(&v);
  return v.v[TG_METRIC_WAL_FDATASYNCS];
}

/* ---- RocksDB ------------------------------------------------------------ */
#ifdef TG_HAVE_ROCKSDB
typedef struct rdb {
  rocksdb_t *db;
  rocksdb_options_t *opts;
  rocksdb_writeoptions_t *wo_nosync, *wo_sync;
} rdb;

static void rdb_close(void *db) {
  rdb *d = db;
  if (!d) return;
  if (d->db) rocksdb_close(d->db);
  if (d->opts) rocksdb_options_destroy(d->opts);
  if (d->wo_nosync) rocksdb_writeoptions_destroy(d->wo_nosync);
  if (d->wo_sync) rocksdb_writeoptions_destroy(d->wo_sync);
  free(d);
}

static int rdb_open(void **db, const char *dir, const job *j, char *err) {
  (void)j;
  rdb *d = calloc(1, sizeof *d);
  if (!d) return fail(err, "rocksdb", "out of memory");
  d->opts = rocksdb_options_create();
  rocksdb_options_set_create_if_missing(d->opts, 1);
  /* Values are 64 bytes of hash output: compression would cost CPU and
     save nothing. Everything else stays at RocksDB's defaults (WAL on). */
  rocksdb_options_set_compression(d->opts, rocksdb_no_compression);
  d->wo_nosync = rocksdb_writeoptions_create();
  rocksdb_writeoptions_set_sync(d->wo_nosync, 0);
  d->wo_sync = rocksdb_writeoptions_create();
  rocksdb_writeoptions_set_sync(d->wo_sync, 1);
  char *e = NULL;
  d->db = rocksdb_open(d->opts, dir, &e);
  if (e) {
    fail(err, "rocksdb_open", e);
    rocksdb_free(e);
    rdb_close(d);
    return -1;
  }
  *db = d;
  return 0;
}

static int rdb_write(void *db, void *ts, uint64_t first, uint64_t n, const job *j, char *err) {
  (void)ts;
  rdb *d = db;
  unsigned char k[KEY_BYTES], v[VALUE_BYTES];
  char *e = NULL;
  if (j->row == ROW_BATCH) {
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    for (uint64_t i = 0; i < n && !e; i++) {
      key_of(k, first + i);
      value_of(v, first + i);
      rocksdb_writebatch_put(b, (const char *)k, KEY_BYTES, (const char *)v, VALUE_BYTES);
      if ((i + 1) % j->batch == 0 || i + 1 == n) {
        rocksdb_write(d->db, d->wo_sync, b, &e);
        rocksdb_writebatch_clear(b);
      }
    }
    rocksdb_writebatch_destroy(b);
  } else {
    const rocksdb_writeoptions_t *wo = j->row == ROW_NOSYNC ? d->wo_nosync : d->wo_sync;
    for (uint64_t i = 0; i < n && !e; i++) {
      key_of(k, first + i);
      value_of(v, first + i);
      rocksdb_put(d->db, wo, (const char *)k, KEY_BYTES, (const char *)v, VALUE_BYTES, &e);
    }
  }
  if (e) {
    fail(err, "rocksdb write", e);
    rocksdb_free(e);
    return -1;
  }
  return 0;
}

static int rdb_finish(void *db, const job *j, char *err) {
  rdb *d = db;
  if (j->row != ROW_NOSYNC) return 0;
  char *e = NULL;
  rocksdb_flush_wal(d->db, 1, &e); /* write out and fsync the WAL */
  if (e) {
    fail(err, "rocksdb_flush_wal", e);
    rocksdb_free(e);
    return -1;
  }
  return 0;
}
#endif

/* ---- LevelDB ------------------------------------------------------------ */
#ifdef TG_HAVE_LEVELDB
typedef struct ldb {
  leveldb_t *db;
  leveldb_options_t *opts;
  leveldb_writeoptions_t *wo_nosync, *wo_sync;
} ldb;

static void ldb_close(void *db) {
  ldb *d = db;
  if (!d) return;
  if (d->db) leveldb_close(d->db);
  if (d->opts) leveldb_options_destroy(d->opts);
  if (d->wo_nosync) leveldb_writeoptions_destroy(d->wo_nosync);
  if (d->wo_sync) leveldb_writeoptions_destroy(d->wo_sync);
  free(d);
}

static int ldb_open(void **db, const char *dir, const job *j, char *err) {
  (void)j;
  ldb *d = calloc(1, sizeof *d);
  if (!d) return fail(err, "leveldb", "out of memory");
  d->opts = leveldb_options_create();
  leveldb_options_set_create_if_missing(d->opts, 1);
  leveldb_options_set_compression(d->opts, leveldb_no_compression);
  d->wo_nosync = leveldb_writeoptions_create();
  leveldb_writeoptions_set_sync(d->wo_nosync, 0);
  d->wo_sync = leveldb_writeoptions_create();
  leveldb_writeoptions_set_sync(d->wo_sync, 1);
  char *e = NULL;
  d->db = leveldb_open(d->opts, dir, &e);
  if (e) {
    fail(err, "leveldb_open", e);
    leveldb_free(e);
    ldb_close(d);
    return -1;
  }
  *db = d;
  return 0;
}

static int ldb_write(void *db, void *ts, uint64_t first, uint64_t n, const job *j, char *err) {
  (void)ts;
  ldb *d = db;
  unsigned char k[KEY_BYTES], v[VALUE_BYTES];
  char *e = NULL;
  if (j->row == ROW_BATCH) {
    leveldb_writebatch_t *b = leveldb_writebatch_create();
    for (uint64_t i = 0; i < n && !e; i++) {
      key_of(k, first + i);
      value_of(v, first + i);
      leveldb_writebatch_put(b, (const char *)k, KEY_BYTES, (const char *)v, VALUE_BYTES);
      if ((i + 1) % j->batch == 0 || i + 1 == n) {
        leveldb_write(d->db, d->wo_sync, b, &e);
        leveldb_writebatch_clear(b);
      }
    }
    leveldb_writebatch_destroy(b);
  } else {
    const leveldb_writeoptions_t *wo = j->row == ROW_NOSYNC ? d->wo_nosync : d->wo_sync;
    for (uint64_t i = 0; i < n && !e; i++) {
      key_of(k, first + i);
      value_of(v, first + i);
      leveldb_put(d->db, wo, (const char *)k, KEY_BYTES, (const char *)v, VALUE_BYTES, &e);
    }
  }
  if (e) {
    fail(err, "leveldb write", e);
    leveldb_free(e);
    return -1;
  }
  return 0;
}

static int ldb_finish(void *db, const job *j, char *err) {
  ldb *d = db;
  if (j->row != ROW_NOSYNC) return 0;
  /* LevelDB has no "sync the log" call; an empty batch written with
     sync=true appends an empty log record and fsyncs the log. */
  leveldb_writebatch_t *b = leveldb_writebatch_create();
  char *e = NULL;
  leveldb_write(d->db, d->wo_sync, b, &e);
  leveldb_writebatch_destroy(b);
  if (e) {
    fail(err, "leveldb final sync", e);
    leveldb_free(e);
    return -1;
  }
  return 0;
}
#endif

/* ---- LMDB --------------------------------------------------------------- */
#ifdef TG_HAVE_LMDB
typedef struct mdb {
  MDB_env *env;
  MDB_dbi dbi;
} mdb;

static void mdb_close_db(void *db) {
  mdb *d = db;
  if (!d) return;
  if (d->env) mdb_env_close(d->env);
  free(d);
}

static int mdb_open_db(void **db, const char *dir, const job *j, char *err) {
  mdb *d = calloc(1, sizeof *d);
  MDB_txn *txn = NULL;
  int rc;
  if (!d) return fail(err, "lmdb", "out of memory");
  if ((rc = mdb_env_create(&d->env))) goto fail;
  /* Room for every record with B-tree slack; the file is sparse. */
  size_t map = (size_t)1 << 30;
  while (map < j->total * 512) map *= 2;
  if ((rc = mdb_env_set_mapsize(d->env, map))) goto fail;
  unsigned flags = j->row == ROW_NOSYNC ? MDB_NOSYNC : 0;
  if ((rc = mdb_env_open(d->env, dir, flags, 0644))) goto fail;
  if ((rc = mdb_txn_begin(d->env, NULL, 0, &txn))) goto fail;
  if ((rc = mdb_dbi_open(txn, NULL, 0, &d->dbi))) goto fail;
  rc = mdb_txn_commit(txn);
  txn = NULL;
  if (rc) goto fail;
  *db = d;
  return 0;
fail:
  if (txn) mdb_txn_abort(txn);
  mdb_close_db(d);
  return fail(err, "lmdb open", mdb_strerror(rc));
}

static int mdb_write(void *db, void *ts, uint64_t first, uint64_t n, const job *j, char *err) {
  (void)ts;
  mdb *d = db;
  unsigned char k[KEY_BYTES], v[VALUE_BYTES];
  /* no-sync and batch-sync: transactions of `batch` records; sync rows:
     one transaction, and so one durable commit, per record. */
  uint64_t per_txn = j->row == ROW_NOSYNC || j->row == ROW_BATCH ? j->batch : 1;
  for (uint64_t i = 0; i < n;) {
    MDB_txn *txn;
    int rc = mdb_txn_begin(d->env, NULL, 0, &txn);
    if (rc) return fail(err, "mdb_txn_begin", mdb_strerror(rc));
    for (uint64_t m = 0; m < per_txn && i < n; m++, i++) {
      key_of(k, first + i);
      value_of(v, first + i);
      MDB_val mk = {KEY_BYTES, k}, mv = {VALUE_BYTES, v};
      if ((rc = mdb_put(txn, d->dbi, &mk, &mv, 0))) {
        mdb_txn_abort(txn);
        return fail(err, "mdb_put", mdb_strerror(rc));
      }
    }
    if ((rc = mdb_txn_commit(txn))) return fail(err, "mdb_txn_commit", mdb_strerror(rc));
  }
  return 0;
}

static int mdb_finish(void *db, const job *j, char *err) {
  mdb *d = db;
  if (j->row != ROW_NOSYNC) return 0;
  int rc = mdb_env_sync(d->env, 1);
  return rc ? fail(err, "mdb_env_sync", mdb_strerror(rc)) : 0;
}
#endif

/* ---- SQLite ------------------------------------------------------------- */
#ifdef TG_HAVE_SQLITE
typedef struct sqldb {
  sqlite3 *db; /* schema connection, held open so the WAL outlives threads */
  char path[4200];
} sqldb;

typedef struct sqlthr {
  sqlite3 *db;
  sqlite3_stmt *ins, *begin, *commit;
} sqlthr;

/* Writers on other connections hold the one write lock for microseconds
   (an insert, a WAL append, an fsync); SQLite's default busy handler sleeps
   1, 2, 5, 10... ms between tries, which would measure its back-off rather
   than its writes. Retry every 20 us instead, for up to 30 s. */
static int sql_busy(void *arg, int tries) {
  (void)arg;
  if (tries > 1500000) return 0;
  struct timespec ts = {0, 20000};
  nanosleep(&ts, NULL);
  return 1;
}

static int sql_exec(sqlite3 *db, const char *sql, char *err) {
  char *e = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &e) != SQLITE_OK) {
    fail(err, sql, e ? e : sqlite3_errmsg(db));
    sqlite3_free(e);
    return -1;
  }
  return 0;
}

static int sql_connect(sqlite3 **out, const char *path, const job *j, char *err) {
  sqlite3 *db = NULL;
  if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
    fail(err, "sqlite3_open", db ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_close(db);
    return -1;
  }
  sqlite3_busy_handler(db, sql_busy, NULL);
  /* WAL mode in every row. NORMAL: commits do not sync, the WAL is synced
     at each checkpoint; FULL: every commit syncs the WAL. */
  const char *sync = j->row == ROW_NOSYNC ? "PRAGMA synchronous=NORMAL" : "PRAGMA synchronous=FULL";
  if (sql_exec(db, "PRAGMA journal_mode=WAL", err) || sql_exec(db, sync, err)) {
    sqlite3_close(db);
    return -1;
  }
  *out = db;
  return 0;
}

static void sql_close(void *db) {
  sqldb *d = db;
  if (!d) return;
  sqlite3_close(d->db);
  free(d);
}

static int sql_open(void **db, const char *dir, const job *j, char *err) {
  sqldb *d = calloc(1, sizeof *d);
  if (!d) return fail(err, "sqlite", "out of memory");
  snprintf(d->path, sizeof d->path, "%s/kv.db", dir);
  /* An 8-byte integer key is SQLite's rowid: INTEGER PRIMARY KEY. */
  if (sql_connect(&d->db, d->path, j, err) ||
      sql_exec(d->db, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v BLOB NOT NULL)", err)) {
    sql_close(d);
    return -1;
  }
  *db = d;
  return 0;
}

static void sql_thread_close(void *ts) {
  sqlthr *t = ts;
  if (!t) return;
  sqlite3_finalize(t->ins);
  sqlite3_finalize(t->begin);
  sqlite3_finalize(t->commit);
  sqlite3_close(t->db);
  free(t);
}

static int sql_thread_open(void *db, void **ts, const job *j, char *err) {
  sqldb *d = db;
  sqlthr *t = calloc(1, sizeof *t);
  if (!t) return fail(err, "sqlite", "out of memory");
  if (sql_connect(&t->db, d->path, j, err)) {
    free(t);
    return -1;
  }
  if (sqlite3_prepare_v2(t->db, "INSERT INTO kv(k, v) VALUES(?, ?)", -1, &t->ins, NULL) ||
      sqlite3_prepare_v2(t->db, "BEGIN IMMEDIATE", -1, &t->begin, NULL) ||
      sqlite3_prepare_v2(t->db, "COMMIT", -1, &t->commit, NULL)) {
    fail(err, "sqlite3_prepare", sqlite3_errmsg(t->db));
    sql_thread_close(t);
    return -1;
  }
  *ts = t;
  return 0;
}

static int sql_step(sqlite3 *db, sqlite3_stmt *st, char *err) {
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return fail(err, "sqlite3_step", sqlite3_errmsg(db));
  return 0;
}

static int sql_write(void *db, void *ts, uint64_t first, uint64_t n, const job *j, char *err) {
  (void)db;
  sqlthr *t = ts;
  unsigned char v[VALUE_BYTES];
  int txns = j->row == ROW_NOSYNC || j->row == ROW_BATCH;
  for (uint64_t i = 0; i < n;) {
    /* no-sync: the last transaction commits with synchronous=FULL, which
       syncs the WAL and so makes everything before it durable too (the
       checkpoints before it synced the database under NORMAL). */
    if (j->row == ROW_NOSYNC && n - i <= j->batch &&
        sql_exec(t->db, "PRAGMA synchronous=FULL", err))
      return -1;
    if (txns && sql_step(t->db, t->begin, err)) return -1;
    for (uint64_t m = 0; m < (txns ? j->batch : 1) && i < n; m++, i++) {
      value_of(v, first + i);
      sqlite3_bind_int64(t->ins, 1, (sqlite3_int64)(first + i));
      sqlite3_bind_blob(t->ins, 2, v, VALUE_BYTES, SQLITE_STATIC);
      if (sql_step(t->db, t->ins, err)) return -1;
    }
    if (txns && sql_step(t->db, t->commit, err)) return -1;
  }
  return 0;
}
#endif

/* ---- the stores --------------------------------------------------------- */

enum { S_TOKENGRAPH, S_TOKENGRAPH_BALANCED, S_TOKENGRAPH_CKPT, S_ROCKSDB, S_LEVELDB, S_LMDB, S_SQLITE, S_COUNT };

#define NOT_BUILT NULL, NULL, NULL, NULL, NULL, NULL, NULL
static const store_impl stores[S_COUNT] = {
  {"tokengraph", NULL, 1, tg_open_counted, NULL, tg_write, tg_finish, NULL, tg_close_db, tg_syncs},
  {"tokengraph-balanced", NULL, 1, tg_open_balanced, NULL, tg_write, tg_finish, NULL, tg_close_db,
   tg_syncs},
  {"tokengraph-checkpoint", NULL, 1, tg_open_checkpoint, NULL, tg_write, tg_finish, NULL,
   tg_close_db, tg_syncs},
#ifdef TG_HAVE_ROCKSDB
  {"rocksdb", "librocksdb-dev", 1, rdb_open, NULL, rdb_write, rdb_finish, NULL, rdb_close, NULL},
#else
  {"rocksdb", "librocksdb-dev", 0, NOT_BUILT},
#endif
#ifdef TG_HAVE_LEVELDB
  {"leveldb", "libleveldb-dev", 1, ldb_open, NULL, ldb_write, ldb_finish, NULL, ldb_close, NULL},
#else
  {"leveldb", "libleveldb-dev", 0, NOT_BUILT},
#endif
#ifdef TG_HAVE_LMDB
  {"lmdb", "liblmdb-dev", 1, mdb_open_db, NULL, mdb_write, mdb_finish, NULL, mdb_close_db, NULL},
#else
  {"lmdb", "liblmdb-dev", 0, NOT_BUILT},
#endif
#ifdef TG_HAVE_SQLITE
  {"sqlite", "libsqlite3-dev", 1, sql_open, sql_thread_open, sql_write, NULL, sql_thread_close,
   sql_close, NULL},
#else
  {"sqlite", "libsqlite3-dev", 0, NOT_BUILT},
#endif
};

/* What each store does in each row, printed with --help and in the docs. */
static const char *const meaning[ROW_COUNT][S_COUNT] = {
  {"RELAXED, one tg_sync() at the end", "",
   "RELAXED, one tg_checkpoint() (all tokens into LMDB) at the end", "put sync=false (WAL on), flush_wal(sync) at the end",
   "put sync=false, an empty sync=true write at the end",
   "MDB_NOSYNC, 1,000-record txns, mdb_env_sync at the end",
   "WAL, synchronous=NORMAL, 1,000-record txns, the last one FULL"},
  {"RELAXED, tg_sync() every 1,000 creates", "BALANCED (fdatasync every <=10 ms), tg_sync at the end", "",
   "1,000-record write batch, sync=true", "1,000-record write batch, sync=true",
   "1,000-record txns, durable commit", "WAL, synchronous=FULL, 1,000-record txns"},
  {"STRICT", "", "", "put sync=true", "put sync=true", "one txn per record", "WAL, FULL, one txn per record"},
  {"STRICT, one shared store (group commit)", "", "", "put sync=true, one shared db",
   "put sync=true, one shared db", "one txn per record (writers serialise)",
   "WAL, FULL, one connection per thread, one txn per record"},
};

/* ---- the driver --------------------------------------------------------- */

typedef struct worker {
  const store_impl *st;
  void *db, *ts;
  const job *j;
  uint64_t first;
  struct gate *gate;
  int rc;
  char err[ERRLEN];
  pthread_t th;
} worker;

/* Holds the workers until every one exists, then releases them at once
   (go = 1), or sends them home (go = -1) when a thread could not start. */
struct gate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int go;
};

static void gate_open(struct gate *g, int go) {
  pthread_mutex_lock(&g->mu);
  g->go = go;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

static void *worker_main(void *arg) {
  worker *w = arg;
  pthread_mutex_lock(&w->gate->mu);
  while (!w->gate->go) pthread_cond_wait(&w->gate->cv, &w->gate->mu);
  int go = w->gate->go;
  pthread_mutex_unlock(&w->gate->mu);
  if (go < 0) return NULL;
  w->rc = w->st->write(w->db, w->ts, w->first, w->j->per_thread, w->j, w->err);
  return NULL;
}

/* Flush what is dirty on this filesystem (other programs' writes, the
   previous store's deletes on this discard-mounted disk) so it is not
   charged to the next store's fsyncs. Untimed. */
static void settle(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    syncfs(fd);
    close(fd);
  }
}

typedef struct result {
  int status;     /* 0 not run, 1 ok, -1 failed, -2 not built */
  double seconds; /* best round */
  uint64_t records;
  uint64_t syncs; /* fdatasyncs (tokengraph only), in the best round */
  char err[ERRLEN];
} result;

/* One timed run of store st on job j in a fresh directory. */
static int run_one(const store_impl *st, const char *parent, const char *tag, const job *j,
                   double *secs, uint64_t *syncs, char *err) {
  char dir[4096 + 160];
  snprintf(dir, sizeof dir, "%s/%s", parent, tag);
  if (mkdir(dir, 0755) != 0) return fail(err, dir, strerror(errno));
  void *db = NULL;
  worker *ws = calloc((size_t)j->threads, sizeof *ws);
  int rc = -1, started = 0;
  struct gate gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
  if (!ws) {
    fail(err, st->name, "out of memory");
    goto cleanup;
  }
  if (st->open(&db, dir, j, err)) goto cleanup;
  for (int i = 0; i < j->threads; i++) {
    ws[i] = (worker){.st = st, .db = db, .j = j, .first = 1 + (uint64_t)i * j->per_thread};
    if (st->thread_open && st->thread_open(db, &ws[i].ts, j, err)) goto cleanup;
  }
  settle(dir);
  for (; started < j->threads; started++) {
    ws[started].gate = &gate;
    int e = pthread_create(&ws[started].th, NULL, worker_main, &ws[started]);
    if (e) {
      fail(err, "pthread_create", strerror(e));
      gate_open(&gate, -1);
      goto cleanup;
    }
  }
  uint64_t s0 = st->syncs ? st->syncs(db) : 0;
  uint64_t t0 = tgp_now_ns();
  gate_open(&gate, 1);
  for (int i = 0; i < started; i++) pthread_join(ws[i].th, NULL);
  started = 0;
  rc = 0;
  for (int i = 0; i < j->threads; i++)
    if (ws[i].rc && !rc) {
      snprintf(err, ERRLEN, "%s", ws[i].err);
      rc = -1;
    }
  if (!rc && st->finish) rc = st->finish(db, j, err);
  uint64_t t1 = tgp_now_ns();
  *secs = (double)(t1 - t0) / 1e9;
  *syncs = st->syncs ? st->syncs(db) - s0 : 0;
cleanup:
  for (int i = 0; i < started; i++) pthread_join(ws[i].th, NULL);
  if (ws)
    for (int i = 0; i < j->threads; i++)
      if (ws[i].ts && st->thread_close) st->thread_close(ws[i].ts);
  if (db) st->close(db);
  free(ws);
  tgp_rmtree(dir);
  settle(parent);
  return rc;
}

static const char *row_name(int row, int threads, char *buf, size_t len) {
  static const char *const names[] = {"no-sync", "batch-sync", "sync-1t"};
  if (row < ROW_SYNCN) return names[row];
  snprintf(buf, len, "sync-%dt", threads);
  return buf;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: tg-bench peers [--count N] [--batch-count N] [--sync-count N] [--threads N]\n"
          "                      [--rounds R] [--rows LIST] [--stores LIST] [--dir DIR] [--json]\n\n"
          "The same job in tokengraph and in the peers built in, at matched durability, on\n"
          "the same disk: N records of an 8-byte key and a 64-byte value (tokengraph: a\n"
          "64-byte token create, its assigned id is the key). Rows:\n"
          "  no-sync     records reach the page cache; one sync at the end (timed)\n"
          "  batch-sync  a sync every 1,000 records\n"
          "  sync-1t     every record durable before the call returns, 1 thread\n"
          "  sync-Nt     the same with N threads\n"
          "Prints records/s per row and store and the ratio tokengraph/peer.\n\n"
          "  --count N        records in the no-sync row (default 1M)\n"
          "  --batch-count N  records in the batch-sync row (default count/5)\n"
          "  --sync-count N   records per thread in the sync rows (default 2000)\n"
          "  --threads N      threads in the sync-Nt row (default 8)\n"
          "  --rounds R       run everything R times, interleaved; keep each store's\n"
          "                   best round (default 1)\n"
          "  --rows LIST      comma-separated subset of no-sync,batch-sync,sync-1t,sync-Nt\n"
          "  --stores LIST    comma-separated subset of the stores below\n"
          "  --dir DIR        work in a new directory inside DIR (default /tmp); every\n"
          "                   store gets a fresh subdirectory, removed afterwards\n"
          "  --json           one JSON object per row and store\n\n"
          "stores:\n");
  for (int s = 0; s < S_COUNT; s++)
    fprintf(f, "  %-22s %s\n", stores[s].name,
            stores[s].built ? "built" : "not built (install the package below and reconfigure)");
  fprintf(f, "\nwhat each row means per store: docs/benchmarks.md\n");
  for (int s = 0; s < S_COUNT; s++)
    if (!stores[s].built) fprintf(f, "  %s: apt-get install %s\n", stores[s].name, stores[s].package);
}

static int in_list(const char *list, const char *name) {
  if (!list) return 1;
  size_t n = strlen(name);
  for (const char *p = list; *p;) {
    const char *c = strchr(p, ',');
    size_t l = c ? (size_t)(c - p) : strlen(p);
    if (l == n && !strncmp(p, name, n)) return 1;
    if (!c) break;
    p = c + 1;
  }
  return 0;
}

static void json_num(int decimals, double v, int ok) {
  if (ok) printf("%.*f", decimals, v);
  else printf("null");
}

int tgb_peers(int argc, char **argv) {
  uint64_t count = 1000000, batch_count = 0, sync_count = 2000, rounds = 1;
  int threads = 8, json = 0;
  const char *parent = "/tmp", *rows = NULL, *only = NULL;
  uint64_t nthreads = (uint64_t)threads;
  const tgb_opt opts[] = {{"--count", &count, NULL},
                          {"--batch-count", &batch_count, NULL},
                          {"--sync-count", &sync_count, NULL},
                          {"--rounds", &rounds, NULL},
                          {"--threads", &nthreads, NULL},
                          {"--rows", NULL, &rows},
                          {"--stores", NULL, &only},
                          {"--dir", NULL, &parent},
                          {NULL, NULL, NULL}};
  int prc = tgb_parse_args("peers", argc, argv, opts, &json, usage);
  if (prc >= 0) return prc;
  if (nthreads < 1 || nthreads > 256) {
    fprintf(stderr, "tg-bench peers: --threads must be 1..256\n");
    return 64;
  }
  threads = (int)nthreads;
  if (!batch_count) batch_count = count / 5 ? count / 5 : 1;
  if (!count || !sync_count || !rounds) {
    fprintf(stderr, "tg-bench peers: counts and rounds must be at least 1\n");
    return 64;
  }
  static const char *const row_keys[ROW_COUNT] = {"no-sync", "batch-sync", "sync-1t", "sync-Nt"};
  int row_on[ROW_COUNT], store_on[S_COUNT];
  for (int r = 0; r < ROW_COUNT; r++) row_on[r] = in_list(rows, row_keys[r]);
  for (int s = 0; s < S_COUNT; s++) store_on[s] = in_list(only, stores[s].name);
  store_on[S_TOKENGRAPH] = 1; /* every ratio needs it */

  job jobs[ROW_COUNT] = {
    {ROW_NOSYNC, 1, count, 1000, count},
    {ROW_BATCH, 1, batch_count, 1000, batch_count},
    {ROW_SYNC1, 1, sync_count, 1000, sync_count},
    {ROW_SYNCN, threads, sync_count, 1000, sync_count * (uint64_t)threads},
  };

  char dir[4096];
  int mrc = tgp_mkdtemp(dir, sizeof dir, parent, "tg-bench-peers");
  if (mrc) {
    fprintf(stderr, "tg-bench peers: cannot create a directory in %s: %s\n", parent,
            strerror(-mrc));
    return 74;
  }
  int tty = isatty(2);
  static result res[ROW_COUNT][S_COUNT];
  memset(res, 0, sizeof res);
  int failed = 0;
  for (uint64_t round = 0; round < rounds; round++) {
    for (int r = 0; r < ROW_COUNT; r++) {
      if (!row_on[r]) continue;
      for (int s = 0; s < S_COUNT; s++) {
        result *x = &res[r][s];
        if (!store_on[s] || (s == S_TOKENGRAPH_BALANCED && r != ROW_BATCH) ||
            (s == S_TOKENGRAPH_CKPT && r != ROW_NOSYNC))
          continue;
        if (!stores[s].built) {
          x->status = -2;
          continue;
        }
        if (x->status < 0) continue; /* failed in an earlier round */
        char tag[128], rb[32];
        snprintf(tag, sizeof tag, "%s-%s-%llu", row_name(r, threads, rb, sizeof rb),
                 stores[s].name, (unsigned long long)round);
        double secs = 0;
        uint64_t syncs = 0;
        if (tty) fprintf(stderr, "\r\033[K  round %llu/%llu: %s ...",
                         (unsigned long long)round + 1, (unsigned long long)rounds, tag);
        if (run_one(&stores[s], dir, tag, &jobs[r], &secs, &syncs, x->err)) {
          x->status = -1;
          failed = 1;
          if (tty) fprintf(stderr, "\r\033[K");
          fprintf(stderr, "tg-bench peers: %s %s: %s\n", row_name(r, threads, rb, sizeof rb),
                  stores[s].name, x->err);
          continue;
        }
        if (x->status == 0 || secs < x->seconds) {
          x->seconds = secs;
          x->syncs = syncs;
        }
        x->status = 1;
        x->records = jobs[r].per_thread * (uint64_t)jobs[r].threads;
      }
    }
  }
  if (tty) fprintf(stderr, "\r\033[K");
  tgp_rmtree(dir);

  if (!json) {
    time_t now = time(NULL);
    char when[64];
    strftime(when, sizeof when, "%Y-%m-%d %H:%M", localtime(&now));
    printf("peers: %d-byte key + %d-byte value per record (tokengraph: one %d-byte token create);\n"
           "best of %llu round%s, %s, under %s\n\n",
           KEY_BYTES, VALUE_BYTES, (int)sizeof(tg_token), (unsigned long long)rounds,
           rounds == 1 ? "" : "s", when, parent);
    printf("%-11s %-21s %7s %9s %9s %13s %10s  %s\n", "row", "store", "threads", "records",
           "seconds", "records/s", "tg/peer", "what it does");
  }
  for (int r = 0; r < ROW_COUNT; r++) {
    if (!row_on[r]) continue;
    const result *tg = &res[r][S_TOKENGRAPH];
    double tg_rps = tg->status == 1 ? (double)tg->records / tg->seconds : 0;
    char rb[32];
    const char *rn = row_name(r, threads, rb, sizeof rb);
    for (int s = 0; s < S_COUNT; s++) {
      const result *x = &res[r][s];
      if (x->status == 0) continue;
      int ok = x->status == 1;
      double rps = ok ? (double)x->records / x->seconds : 0;
      int is_tg = s == S_TOKENGRAPH || s == S_TOKENGRAPH_BALANCED || s == S_TOKENGRAPH_CKPT;
      /* The variants are tokengraph too: no ratio for them. */
      int have_ratio = ok && tg_rps > 0 && !is_tg;
      double ratio = have_ratio ? tg_rps / rps : 0;
      if (json) {
        printf("{\"row\":\"%s\",\"store\":\"%s\",\"threads\":%d,\"records\":%llu,\"seconds\":", rn,
               stores[s].name, jobs[r].threads,
               (unsigned long long)(jobs[r].per_thread * (uint64_t)jobs[r].threads));
        json_num(6, x->seconds, ok);
        printf(",\"records_per_sec\":");
        json_num(0, rps, ok);
        printf(",\"ratio_tokengraph_to_peer\":");
        json_num(4, ratio, have_ratio);
        printf(",\"status\":\"%s\",\"durability\":\"%s\"",
               ok ? "ok" : x->status == -2 ? "not built" : "failed", meaning[r][s]);
        if (is_tg && ok) printf(",\"fdatasyncs\":%llu", (unsigned long long)x->syncs);
        printf("}\n");
        continue;
      }
      if (!ok) {
        printf("%-11s %-21s %7d %9s %9s %13s %10s  %s\n", rn, stores[s].name, jobs[r].threads, "-",
               "-", x->status == -2 ? "not built" : "FAILED", "-",
               x->status == -2 ? stores[s].package : x->err);
        continue;
      }
      char rat[32] = "-";
      if (have_ratio) snprintf(rat, sizeof rat, "%.2fx", ratio);
      char extra[64] = "";
      if (is_tg && x->syncs)
        snprintf(extra, sizeof extra, " [%llu fdatasyncs, %.1f rec/sync]",
                 (unsigned long long)x->syncs, (double)x->records / (double)x->syncs);
      printf("%-11s %-21s %7d %9llu %9.3f %13.0f %10s  %s%s\n", rn, stores[s].name,
             jobs[r].threads, (unsigned long long)x->records, x->seconds, rps, rat, meaning[r][s],
             extra);
    }
  }
  return failed ? 1 : 0;
}
