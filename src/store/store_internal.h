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

struct tg_store {
  atomic_int lock;              /* 0 free, 1 held; see store.c */
  tg__graph g;
  tg__guardian gd;
  uint64_t tokens_created;
  uint64_t connections_created;

  /* Durable stores only (wal != NULL). */
  tg_wal *wal;
  int level;                    /* enum tg_durability */
  uint64_t last_lsn;            /* last LSN appended (under the lock) */
  char *dir;                    /* data directory */
  int lock_fd;                  /* DIR/LOCK, flock()ed; -1 = none */
  MDB_env *env;                 /* DIR/checkpoint */
  MDB_dbi dbi_tokens, dbi_conns, dbi_meta;
  pthread_mutex_t ckpt_mu;      /* one checkpoint at a time */
  uint64_t ckpt_lsn;            /* LSN the last checkpoint covers */
  uint64_t checkpoints;
  uint64_t ckpt_wal_bytes;      /* WAL bytes written at the last checkpoint */
  uint64_t checkpoint_bytes;    /* auto checkpoint threshold, 0 = off */
  pthread_t ckpt_thread;        /* automatic checkpoints */
  int ckpt_thread_started;
  pthread_mutex_t ckpt_wake_mu;
  pthread_cond_t ckpt_wake;
  int ckpt_stop;                /* under ckpt_wake_mu */
  tg_recovery_info recovery;
  uint64_t synced_lsn;          /* writer thread: durable LSN at the last
                                   fdatasync (records per fdatasync) */
  uint64_t segment_lsn;         /* writer thread: current segment */
  int crash_dump;               /* installed the fatal-signal handler */
  int collecting;               /* registered as a metrics collector */
  tg_span io_span[3];           /* writer thread: the open batch-write and
                                   fdatasync spans (enum tg_wal_io) */
  int writer_named;             /* writer thread: named in the trace */
  atomic_int failure_noted;     /* the log's failure is in the black box */
  uint64_t bp_blocked;          /* checkpointer, then close: WAL appends that
                                   blocked, as of the last backpressure event */
  uint64_t bp_blocked_ns;       /* the same for the time they waited */
};

/* The store lock (store.c). */
void tg__store_lock(tg_store *s);
void tg__store_unlock(tg_store *s);

/* Record the log's failure in the black box, the first time a caller sees
   rc = TG_EIO or TG_ENOSPC from it (store.c). Any thread. */
void tg__store_note_log_failure(tg_store *s, int rc);

/* Open the data directory into a store whose graph and guardian are set
   up (durable.c). On failure the store is left for tg__store_close_dir. */
int tg__store_open_dir(tg_store *s, const char *dir, const tg_store_config *cfg,
                       char *msg, size_t msglen);

/* Stop the checkpointer, close the WAL, LMDB and the lock (durable.c).
   Returns the WAL's close status. Safe on a partly opened store. */
int tg__store_close_dir(tg_store *s);

#endif /* TG_STORE_INTERNAL_H */
