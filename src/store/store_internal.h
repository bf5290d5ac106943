/*
 * tg_store internals, shared by store.c (the API and its lock), durable.c
 * (data directory, recovery, checkpoints) and the tests.
 */
#ifndef TG_STORE_INTERNAL_H
#define TG_STORE_INTERNAL_H

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "guardian/guardian.h"
#include "token/graph.h"
#include "tokengraph/tokengraph.h"
#include "tokengraph/trace.h"
#include "tokengraph/wal.h"
#include "wal/wal_store.h"

/* Each field names its guard (store.c, LOCKING): "lock" is the store
   lock, "ckpt_mu" the checkpoint mutex, "open/close" means set before the
   store is shared and read-only until close, "writer thread" means only the
   WAL writer's hooks touch it. */
struct tg_store {
  atomic_int lock;              /* 0 free, 1 held; see store.c */
  tg__graph g;                  /* lock */
  tg__guardian gd;              /* lock (limits: open/close) */
  uint64_t tokens_created;      /* lock */
  uint64_t connections_created; /* lock */

  /* Durable stores only (wal != NULL). */
  tg_wal *wal;                  /* open/close; the handle is thread-safe */
  int level;                    /* open/close; enum tg_wal_level */
  uint64_t last_lsn;            /* lock; last LSN appended */
  char *dir;                    /* open/close; data directory */
  int lock_fd;                  /* open/close; DIR/LOCK, flock()ed; -1 = none */
  MDB_env *env;                 /* open/close; DIR/checkpoint (txns: ckpt_mu) */
  MDB_dbi dbi_tokens, dbi_conns, dbi_meta; /* open/close */
  pthread_mutex_t ckpt_mu;      /* one checkpoint at a time */
  uint64_t ckpt_lsn;            /* written with ckpt_mu and lock held, read
                                   under either; LSN the last checkpoint
                                   covers */
  uint64_t checkpoints;         /* as ckpt_lsn */
  uint64_t ckpt_wal_bytes;      /* ckpt_mu; WAL bytes written at the last
                                   checkpoint */
  unsigned ckpt_format;         /* ckpt_mu; format of the checkpoint on disk
                                   (checkpoint.c) */
  int ckpt_full;                /* ckpt_mu; the next checkpoint rewrites
                                   every record (an older format was read) */
  int ckpt_failed;              /* ckpt_mu; a checkpoint's commit or sync
                                   failed: the error every later checkpoint
                                   returns until the store is reopened */
  uint64_t ckpt_reserved;       /* ckpt_mu; bytes of data.mdb allocated */
  uint64_t ckpt_tokens, ckpt_conns; /* open/close; records the checkpoint's
                                   state record counts (format 2) */
  uint32_t ckpt_tokens_hw, ckpt_conns_hw; /* open/close; its high-water
                                   marks (0xFFFFFFFF: format 1, unknown) */
  uint64_t checkpoint_bytes;    /* open/close; auto checkpoint threshold,
                                   0 = off */
  pthread_t ckpt_thread;        /* open/close; automatic checkpoints */
  int ckpt_thread_started;      /* open/close */
  pthread_mutex_t ckpt_wake_mu;
  pthread_cond_t ckpt_wake;     /* ckpt_wake_mu */
  int ckpt_stop;                /* ckpt_wake_mu */
  tg_recovery_info recovery;    /* open/close */
  uint64_t synced_lsn;          /* writer thread: durable LSN at the last
                                   fdatasync (records per fdatasync) */
  uint64_t segment_lsn;         /* writer thread: current segment */
  int crash_dump;               /* installed the fatal-signal handler */
  int collecting;               /* registered as a metrics collector */
  tg_span io_span[3];           /* writer thread: the open batch-write and
                                   fdatasync spans (enum tg__wal_io) */
  int writer_named;             /* writer thread: named in the trace */
  atomic_int failure_noted;     /* the log's failure is in the black box */
};

/* Debug builds: the store lock must be held here (store.c, LOCKING). */
#ifndef NDEBUG
#include <assert.h>
#define TG__ASSERT_LOCKED(s) \
  assert(atomic_load_explicit(&(s)->lock, memory_order_relaxed) == 1)
#else
#define TG__ASSERT_LOCKED(s) ((void)0)
#endif

/* Write a one-line explanation into msg, unless one is there already: the
   first failure is the one worth reporting (durable.c). */
__attribute__((format(printf, 3, 4)))
void tg__say(char *msg, size_t len, const char *fmt, ...);

/* Make sure path is a directory, creating it (0700) when missing; msg says
   why not (durable.c). */
int tg__store_make_dir(const char *path, char *msg, size_t len);

/* The store lock (store.c). */
void tg__store_lock(tg_store *s);
void tg__store_unlock(tg_store *s);

/* Open the data directory into a store whose graph and guardian are set
   up (durable.c). On failure the store is left for tg__store_close_dir. */
int tg__store_open_dir(tg_store *s, const char *dir, const tg_store_config *cfg,
                       char *msg, size_t msglen);

/* Stop the checkpointer, close the WAL, LMDB and the lock (durable.c).
   Returns the WAL's close status. Safe on a partly opened store. */
int tg__store_close_dir(tg_store *s);

#endif /* TG_STORE_INTERNAL_H */
