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
/* A thread's cache for creates without the store lock (store.c, SHARDS).
   One cache line for what the owner touches per create, then its slots. */
#define TG__SHARDS_MAX 64u   /* threads with a cache, per store */
#define TG__SHARD_BLOCK 256u /* ids, slots and quota credit taken at once
                               (a refill, under alloc_lock: SHARDS in
                               store.c); when refills took the store lock,
                               runs of 64 met on it often enough to park a
                               writer (40,000-60,000 futex calls per 5 M
                               calls, against 15,000-18,000 with 256) */
#define TG__SHARD_CSLOTS (TG__SHARD_BLOCK + 64u) /* connection slots a cache
                               holds: a refill's, and room for 64 more from
                               striped disconnects */
_Static_assert(TG__SHARDS_MAX * TG__SHARD_BLOCK <= TG__ARENA_CACHED_MAX,
               "replay's id bound covers the ids caches hold");

typedef struct tg__shard {
  atomic_int busy;       /* 1 while its thread creates without the lock */
  atomic_int owner;      /* the owning thread's number (gettid), 0 free */
  uint32_t xchg_calls;   /* owner only: calls announced by exchange
                            (store.c, ANNOUNCING) */
  int want_plain;        /* owner only: ask for plain announcements */
  uint64_t holds_seen;   /* owner only: `holds` at its last probe */
  uint32_t id_next, id_end; /* ids [id_next, id_end) held (owner inside
                            busy, or the store lock holder) */
  uint32_t nslots;       /* slots[0, nslots) held (likewise) */
  uint32_t credit;       /* tokens of quota held, counted in tokens.live
                            (likewise; relaxed stores: stats readers) */
  uint64_t created;      /* creates made here (relaxed stores: stats) */
  uint64_t last_lsn;     /* last LSN logged here (relaxed stores) */
  /* Connections, for striped connects and disconnects (STRIPES in
     store.c), under the same rules as the token fields above. */
  uint32_t cid_next, cid_end; /* connection ids [cid_next, cid_end) held */
  uint32_t ncslots;      /* cslots[0, ncslots) held */
  uint32_t ccredit;      /* connections of quota held, counted in
                            conns.live (relaxed stores: stats readers);
                            a striped disconnect adds one */
  uint64_t connected;    /* striped connects made here (relaxed stores) */
  uint32_t slots[TG__SHARD_BLOCK] __attribute__((aligned(64)));
  uint32_t cslots[TG__SHARD_CSLOTS]; /* connection slots held */
} __attribute__((aligned(64))) tg__shard;

struct tg_store {
  int read_only;                /* open/close; 1: cfg.read_only (readonly.c):
                                   no WAL, no LOCK, nothing written. Read by
                                   every lock-free read, so it is kept off
                                   the lock's line (TG__LINE, arena.h) */
  atomic_uint announce;         /* how lock-free calls announce themselves:
                                   odd plain stores, even exchanges; every
                                   change adds one (store.c, ANNOUNCING).
                                   Loaded by every such call, changed only
                                   by the lock's holder: read-mostly, so on
                                   read_only's line */
  _Alignas(TG__LINE) atomic_int lock; /* 0 free, 1 held; store.c, LOCKING */
  atomic_int sleepers;          /* threads parked or about to park on lock */
  uint64_t holds;               /* lock; holds that drained the caches
                                   (relaxed stores: probed by their owners,
                                   ANNOUNCING) */
  atomic_uint calls;            /* debug builds: public calls in progress
                                   (TG__CALL_GUARD); 0 in release builds */
  tg__graph g;                  /* lock; read without it as store.c's
                                   READS says; starts on a line of its own
                                   (its arenas' read-mostly fields first) */
  tg__guardian gd;              /* lock (limits: open/close); counters
                                   relaxed stores (READS) */
  uint64_t tokens_created;      /* lock; relaxed stores (READS): single
                                   creates (each one quota check) */
  uint64_t connections_created; /* lock; relaxed stores (READS): single
                                   connects (each one quota check) */
  uint64_t tokens_batched;      /* lock; relaxed stores: made by batches */
  tg__shard *shards;            /* open/close: TG__SHARDS_MAX caches
                                   (SHARDS in store.c) */
  atomic_uint nshards;          /* caches claimed (may pass the maximum:
                                   read it through shards_in_use()) */
  _Alignas(TG__LINE) atomic_int alloc_lock; /* a futex lock (0 free, 1
                                   held, 2 held with waiters): the arenas'
                                   allocation state (next, free_head,
                                   cursor, live, chunks, map chunks) for a
                                   cache refill made without the store lock
                                   (SHARDS in store.c); taken only inside a
                                   cache's busy, so the store lock's holder,
                                   who waits out every busy cache, never
                                   meets a refill. Its own line: refills
                                   of several threads meet on it */
  char alloc_pad[TG__LINE - sizeof(atomic_int)];
  atomic_int lver_sleepers;     /* threads parked or about to park on an
                                   adjacency lock (STRIPES in store.c);
                                   loaded by every striped call's release,
                                   written only by parkers: a line of its
                                   own */
  char lver_pad[TG__LINE - sizeof(atomic_int)];
  pthread_t pf_thread;          /* open/close: makes the token arena's
                                   spare chunk (tg__arena_prefault) */
  int pf_started;               /* open/close: the pid that started the
                                   prefaulter, 0 none */
  int pf_word;                  /* futex word: bumped by a grow that took
                                   the spare, and by close (atomics) */
  atomic_int pf_stop;           /* close: the prefaulter ends */
  uint64_t connections_batched; /* lock; relaxed stores: made by batches */

  /* Durable stores only (wal != NULL). */
  tg_wal *wal;                  /* open/close; the handle is thread-safe */
  int level;                    /* open/close; enum tg_wal_level */
  struct tg__ship *ship;        /* open/close; replication (ship.c), or NULL */
  uint64_t ckpt_repl_seq;       /* as ckpt_lsn: the loaded or last written
                                   checkpoint's repl_stream_seq (0: none) */
  uint64_t ckpt_repl_epoch;     /* as ckpt_lsn: its repl_epoch (0: none) */
  uint64_t last_lsn;            /* lock; last LSN appended (read-only: the
                                   last LSN shown, written with ckpt_mu and
                                   lock held); relaxed stores (READS) */
  char *dir;                    /* open/close; data directory (its name, for
                                   messages: files are opened through dir_fd) */
  int dir_fd;                   /* open/close; the data directory, every entry
                                   of which is opened relative to it; -1 = none */
  int wal_fd;                   /* open/close; DIR/wal, a real directory: the
                                   WAL is given /proc/self/fd/N; -1 = none */
  int lock_fd;                  /* open/close; DIR/LOCK, flock()ed; -1 = none */
  MDB_env *env;                 /* open/close; DIR/checkpoint (txns: ckpt_mu) */
  MDB_dbi dbi_tokens, dbi_conns, dbi_meta; /* open/close */
  pthread_mutex_t ckpt_mu;      /* one checkpoint at a time; a read-only
                                   handle: one refresh or backup at a time
                                   (readonly.c) */
  uint64_t ckpt_lsn;            /* written with ckpt_mu and lock held
                                   (relaxed stores), read under either or
                                   relaxed (READS); LSN the last checkpoint
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
                                   marks, the id cursors (0xFFFFFFFF:
                                   format 1, unknown) */
  uint32_t ckpt_id_flags;       /* open/close; which id spaces had wrapped */
  uint64_t checkpoint_bytes;    /* open/close; auto checkpoint threshold,
                                   0 = off */
  pthread_t ckpt_thread;        /* open/close; automatic checkpoints */
  int ckpt_thread_started;      /* open/close */
  pthread_mutex_t ckpt_wake_mu;
  pthread_cond_t ckpt_wake;     /* ckpt_wake_mu */
  int ckpt_stop;                /* ckpt_wake_mu */
  tg_recovery_info recovery;    /* open/close */
  uint64_t synced_lsn;          /* writer thread (the WAL's fdatasyncs run on
                                   its writer or its sync thread, one at a
                                   time): durable LSN at the last fdatasync
                                   (records per fdatasync) */
  uint64_t segment_lsn;         /* writer thread: current segment */
  int crash_dump;               /* open/close; installed the fatal-signal
                                   handler (one count of it) */
  int bb_slot;                  /* open/close; this store's crash-dump path
                                   (tg_blackbox_add_path), -1 or 0 = none */
  int collecting;               /* registered as a metrics collector */
  tg_span io_span[3];           /* writer thread (likewise): the open
                                   batch-write and fdatasync spans (enum
                                   tg__wal_io) */
  atomic_int failure_noted;     /* the log's failure is in the black box */
  uint64_t bp_blocked;          /* checkpointer, then close: WAL appends that
                                   blocked, as of the last backpressure event */
  uint64_t bp_blocked_ns;       /* the same for the time they waited */

  /* Read-only handles (cfg.read_only; readonly.c). */
  MDB_txn *ro_pin;              /* loading only: the read transaction whose
                                   reader-table slot keeps the owner from
                                   reusing the checkpoint's pages while they
                                   are checked and loaded */

  /* Replication (replica.c; docs/operations.md, "Replication"). */
  int writes_refused;           /* relaxed (REFUSE_READ_ONLY): 1 on a
                                   read-only handle, and on a replica until
                                   it is promoted */
  uint64_t repl_seq;            /* lock: stream sequence of the last WAL
                                   message applied wholly (a replica), 0 =
                                   none; saved with each checkpoint */
  uint64_t repl_epoch;          /* lock: that message's epoch */
  struct tg__replica *replica;  /* open/close: the follower, NULL on a
                                   store that is not a replica */
  struct tg__lease_holder *lease; /* open/close (a promotion: before writes):
                                   the leader lease a replicating writer
                                   holds (lease.c), or NULL */
  char *repl_url, *repl_nm;     /* open/close (a promotion: before writes):
                                   where a shipping store publishes its
                                   snapshots after checkpoints, NULL = not */
  uint64_t snapshots;           /* ckpt_mu: snapshots published */
  int snapshot_err;             /* ckpt_mu: the last publish's error (0) */

  /* Batches (batch.c). */
  uint64_t serial;              /* open/close: unique among the stores this
                                   process opened (tg_last_lsn) */
  pthread_mutex_t batch_mu;     /* the handle pool below; never held with
                                   another lock */
  struct tg_batch *batch_all;   /* batch_mu: every handle made, freed at
                                   close */
  struct tg_batch *batch_free;  /* batch_mu: ended handles, for reuse */
  uint32_t batch_held;          /* lock: ids held by open batches */
  const struct tg__idmap *evict_keep; /* lock: tokens eviction must spare
                                   (those a committing batch names), or
                                   NULL */
};

/* Debug builds: every public call on a store counts itself in s->calls
   while it runs (a scoped guard), and tg_store_close() aborts with a
   message when any call is in progress: close needs no concurrent calls
   (tokengraph.h), and a close racing a call would otherwise free memory
   under it or hang. Release builds pay nothing. */
#ifndef NDEBUG
typedef struct tg__call_guard {
  tg_store *s;
} tg__call_guard;
static inline void tg__call_leave(tg__call_guard *g) {
  atomic_fetch_sub_explicit(&g->s->calls, 1, memory_order_release);
}
static inline tg_store *tg__call_enter(tg_store *s) {
  atomic_fetch_add_explicit(&s->calls, 1, memory_order_relaxed);
  return s;
}
#define TG__CALL_GUARD(s) \
  __attribute__((cleanup(tg__call_leave), unused)) tg__call_guard tg__guard_ = {tg__call_enter(s)}
#else
#define TG__CALL_GUARD(s) ((void)0)
#endif

/* Debug builds: the store lock must be held here (store.c, LOCKING). */
#ifndef NDEBUG
#include <assert.h>
#define TG__ASSERT_LOCKED(s) \
  assert(atomic_load_explicit(&(s)->lock, memory_order_relaxed) != 0)
#else
#define TG__ASSERT_LOCKED(s) ((void)0)
#endif

/* A replica's follower (replica.c): stop it and free it, before the
   store's WAL closes. Accepts NULL. */
struct tg__replica;
void tg__replica_free(struct tg__replica *rep);

/* The store lock (store.c). */
void tg__store_lock(tg_store *s);
void tg__store_unlock(tg_store *s);

/* The last LSN a change applied (store lock held): the largest of the
   store's and its threads' caches' (SHARDS). */
uint64_t tg__store_last_lsn(tg_store *s);

/* Give every thread's unused quota credit back (store lock held), so a
   quota decision is exact: done before any TG_EQUOTA. */
void tg__store_reclaim_credit(tg_store *s);

/* A call is rejected with TG_EQUOTA: count it, tell the calling thread
   which quota (tg_quota_exceeded()) and leave it in the black box (value,
   limit, the token concerned or 0). Under the store lock (store.c). */
void tg__store_quota_reject(tg_store *s, int quota, uint64_t value, uint64_t limit,
                            uint32_t id);

/* ---- the single calls' steps, for batch.c (store.c) --------------------
   A mutation: tg__store_strict_enter() before the lock; under it, admit
   memory, log (tg__store_log), apply; after unlocking,
   tg__store_strict_wait() (STRICT: waits for lsn; records tg_last_lsn). */
void tg__store_strict_enter(tg_store *s);
int tg__store_strict_wait(tg_store *s, int rc, uint64_t lsn);
int tg__store_log(tg_store *s, uint8_t type, const void *p, size_t n, uint64_t *lsn);
/* Usage plus `need` bytes against the memory quota, with the pressure
   policy (eviction spares s->evict_keep). 0 or TG_EQUOTA. Lock held. */
int tg__store_admit_memory(tg_store *s, uint64_t need);

/* Remember lsn as this thread's last mutation of s (tg_last_lsn). */
void tg__note_last_lsn(tg_store *s, uint64_t lsn);

/* A u32 -> u32 map (open addressing) for a batch's checks (batch.c). */
int tg__idmap_has(const struct tg__idmap *m, uint32_t key);

/* Set up and tear down the batch pool of a store (batch.c): at open,
   before the store is shared, and at close. */
int tg__batch_init(tg_store *s);
void tg__batch_fini(tg_store *s);

/* Record the log's failure in the black box, the first time a caller sees
   rc = TG_EIO or TG_ENOSPC from it (store.c). Any thread. */
void tg__store_note_log_failure(tg_store *s, int rc);

/* One backpressure event for the WAL appends that blocked since the last
   look (durable.c); the checkpointer's tick and close call it. */
void tg__store_note_backpressure(tg_store *s, const tg_wal_stats *ws);

/* Open the data directory into a store whose graph and guardian are set
   up (durable.c). On failure the store is left for tg__store_close_dir. */
int tg__store_open_dir(tg_store *s, const char *dir, const tg_store_config *cfg,
                       char *msg, size_t msglen);

/* Stop the checkpointer, close the WAL, LMDB and the lock (durable.c).
   Returns the WAL's close status. Safe on a partly opened store. */
int tg__store_close_dir(tg_store *s);

/* ---- replication, the primary's side (ship.c) ---------------------------
   Open: tg__ship_open() before the WAL (its hook goes into the WAL's
   options), tg__ship_start() once the log is recovered (ships what the
   stream lacks, then every batch the writer writes). Close: tg__ship_detach()
   before the WAL closes, tg__ship_close() after. Without libnats, open
   refuses a configuration that asks for replication (TG_ENOTSUP). */
typedef struct tg__ship tg__ship;
struct tg__wal_ship;
/* 0 when cfg asks for no replication or a valid one; TG_ECONFIG /
   TG_ENOTSUP with a message otherwise. */
int tg__ship_config_check(const tg_store_config *cfg, char *msg, size_t len);
int tg__ship_open(tg__ship **out, const tg_store_config *cfg, const struct tg__wal_ship **hook,
                  char *msg, size_t len);
int tg__ship_start(tg__ship *sh, tg_wal *w, const char *waldir, uint64_t ckpt_lsn, char *msg,
                   size_t len);
void tg__ship_detach(tg__ship *sh);
/* Waits (up to the ack timeout) for what was published to be acknowledged.
   Accepts NULL. */
void tg__ship_close(tg__ship *sh);
/* The stream sequence of the last message wholly covered by lsn (0: none)
   and the epoch, for a checkpoint at lsn. */
void tg__ship_position(tg__ship *sh, uint64_t lsn, uint64_t *seq, uint64_t *epoch);
/* The highest LSN the stream has acknowledged (the open's catch-up
   included). */
uint64_t tg__ship_acked_lsn(tg__ship *sh);
/* Ship with at least this epoch (a directory promoted to it: its
   checkpoint's repl_epoch, or a promotion in progress, replica.c). Between
   tg__ship_open() and tg__ship_start(). Accepts NULL. */
void tg__ship_min_epoch(tg__ship *sh, uint64_t epoch);

/* Fence the store (lease.c: the leader lease is another writer's): the
   log fails with TG_EFENCED, as when the stream refuses a publish. Any
   thread; the first failure wins. */
void tg__ship_fence(tg__ship *sh);

/* ---- the leader lease (lease.c) -------------------------------------------
   A replicating writer holds TG_LEASE_<name>/leader for its epoch and
   renews it; see lease.c's opening comment for the rules. Without libnats
   nothing holds one. */
typedef struct tg__lease_holder tg__lease_holder;
struct tg__lease;
/* Take the lease at open, for the epoch the store will ship at (cfg's,
   else the newer of the stream's last message's and dir_epoch, the
   checkpoint's). TG_EFENCED when a newer epoch holds it; the NATS errors.
   The renewal thread starts with tg__lease_start(). */
int tg__lease_acquire(tg__lease_holder **out, const tg_store_config *cfg, uint64_t dir_epoch,
                      uint64_t lsn, char *msg, size_t len);
/* Hold a lease a promotion took (revision, owner) and start renewing it. */
int tg__lease_adopt(tg__lease_holder **out, const char *url, const char *name, uint32_t ttl_ms,
                    uint64_t epoch, const char *owner, uint64_t revision, uint64_t lsn,
                    char *msg, size_t len);
/* Start renewing (once); ship (or NULL) is fenced if the lease is lost. */
int tg__lease_start(tg__lease_holder *h, tg__ship *ship);
/* Fence ship if the lease is lost, now or later. */
void tg__lease_attach(tg__lease_holder *h, tg__ship *ship);
/* 1 once another owner took the lease. */
int tg__lease_lost(tg__lease_holder *h);
/* The epoch held, renewals made, renewals that failed to reach the server. */
void tg__lease_info(tg__lease_holder *h, uint64_t *epoch, uint64_t *renewals,
                    uint64_t *failures);
/* Stop renewing (before the shipper closes); accepts NULL. */
void tg__lease_stop(tg__lease_holder *h);
/* Release the lease by compare-and-swap on our revision (owner "", epoch
   kept, lsn the last acknowledged), unless lost; accepts NULL. */
void tg__lease_release(tg__lease_holder *h, uint64_t lsn);
/* Stop and free; accepts NULL. */
void tg__lease_free(tg__lease_holder *h);
/* 1 when lease l is held by another owner than me (may be NULL) and not
   older than its TTL (its value's, else default_ttl_ms). */
int tg__lease_live(const struct tg__lease *l, const char *me, uint32_t default_ttl_ms);
/* "<host>:<pid>:<random>" */
void tg__lease_owner_id(char *out, size_t n);

/* A promoted replica becomes a shipping writer (durable.c): the WAL is
   closed and opened again with cfg's level and a shipper (cfg->nats_url,
   repl_name) at epoch `epoch`, the checkpointer stopped meanwhile and the
   metrics collector off. Only reads may run concurrently. */
int tg__store_reopen_wal(tg_store *s, const tg_store_config *cfg, uint64_t epoch, char *msg,
                         size_t len);

/* Take this store's metrics collector off (pause 1) and put it back
   (store.c). */
void tg__store_collector_pause(tg_store *s, int pause);

/* As tg_store_open_msg(), with DIR/LOCK already held through lock_fd
   (tg__store_lock_dir()): the store takes the descriptor over and closes
   it on close, and on failure too (store.c). Repair uses it so that the
   directory stays locked from its cut to the replay. */
int tg__store_open_locked(tg_store **out, const char *dir, const tg_store_config *cfg,
                          int lock_fd, char *msg, size_t msglen);

/* ---- the data directory, shared by durable.c, inspect.c, repair.c ------ */

/* Write a one-line explanation into msg, unless one is there already: the
   first failure is the one worth reporting. */
__attribute__((format(printf, 3, 4)))
void tg__say(char *msg, size_t len, const char *fmt, ...);

/*
 * Entries of the data directory are input: opened only relative to the
 * directory's descriptor, never through a symbolic link, never blocking on
 * a FIFO, and refused at once when they are not what belongs there
 * (durable.c; docs/store-format.md, "Entries are opened through the
 * directory"). `dir` names the directory in messages only.
 */

/* Open regular file `name` of the directory open as dirfd: O_NOFOLLOW (a
   link there is refused, not followed), O_NONBLOCK (a FIFO cannot block the
   open; cleared again on the regular file), then fstat. flags: O_RDONLY or
   O_RDWR, with O_CREAT (mode 0600) and O_EXCL as wanted. Returns the
   descriptor; -ENOENT with no message when it is missing and O_CREAT was
   not given; TG_ENOTTG naming it and what it is when it is a link, a
   directory, a FIFO or another non-regular file; else -errno with msg. */
int tg__dir_open_file(int dirfd, const char *dir, const char *name, int flags, char *msg,
                      size_t len);

/* For a reader that does not open `name` itself but must reach the
   verdict of one that would: 0 when `name` of dirfd is missing or a
   regular file, else TG_ENOTTG as tg__dir_open_file() says it (lstat only:
   nothing is opened). */
int tg__dir_check_regular(int dirfd, const char *dir, const char *name, char *msg,
                          size_t len);

/* Open directory `name` of dirfd as a real directory (O_DIRECTORY |
   O_NOFOLLOW): a link there is refused, and nothing is ever created or
   deleted through one. create: make it (0700) when missing and make its
   entry durable (fsync of dirfd). Returns the descriptor; -ENOENT with no
   message when missing and !create; TG_ENOTTG naming it when it is a link
   or not a directory; else -errno with msg. */
int tg__dir_open_subdir(int dirfd, const char *dir, const char *name, int create,
                        char *msg, size_t len);

/* Open the data directory `dir` itself (a path the caller chose; a link
   there is the caller's own and is followed): its descriptor, or -errno /
   -ENOTDIR with msg. */
int tg__store_open_dirfd(const char *dir, char *msg, size_t len);

/* 0: the directory open as dirfd (named dir) is a tokengraph data
   directory; 1: empty, to be made one; or an error with msg set
   (TG_ENOTTG, TG_EVERSION, -errno). */
int tg__store_check_identity(int dirfd, const char *dir, char *msg, size_t len);

/* Take DIR/LOCK (flock, exclusive, non-blocking): the one lock of a data
   directory. create: make the file when missing (an open, a repair);
   otherwise (a reader, which must not write) a LOCK that is missing or
   cannot be read leaves *fd_out -1 and returns 0. A LOCK that is a link or
   not a regular file is refused either way (TG_ENOTTG). Errors:
   TG_ELOCKED (held elsewhere), TG_ENOTTG, -errno. */
int tg__store_lock_dir(int dirfd, const char *dir, int create, int *fd_out, char *msg,
                       size_t len);

/* Create directory `path` (0700) when missing and fsync its parent;
   msg says why not (durable.c). For the data directory itself, a path the
   caller chose; directories inside it go through tg__dir_open_subdir(). */
int tg__store_make_dir(const char *path, char *msg, size_t len);

/* Open (readonly == 0: create if missing) the checkpoint environment of
   the directory open as s->dir_fd (named s->dir), after checking data.mdb
   page by page, and read its state (LSN
   into s->ckpt_lsn). Read-only with no checkpoint yet (missing, empty, or
   never committed to): s->env stays NULL. TG_ECORRUPT, TG_ENOTTG,
   TG_EVERSION with msg naming the file (checkpoint.c).
   readonly == TG__CKPT_LIVE: the directory may be open in another process
   that commits checkpoints meanwhile. The environment then uses LMDB's
   reader table (lock.mdb; MDB_NOLOCK would let the owner reuse pages under
   us), a read transaction is begun first and kept in s->ro_pin, and the
   check runs while it pins the snapshot, and the state is read in it (as
   tg__store_load_checkpoint() then reads the records); TG_EAGAIN when the
   check saw another snapshot than the pinned one (a commit in between: try
   again). The caller ends s->ro_pin (tg__store_unpin_checkpoint()) after
   loading. */
#define TG__CKPT_LIVE 2
int tg__store_open_checkpoint(tg_store *s, int readonly, char *msg, size_t len);

/* TG__CKPT_LIVE: end s->ro_pin, once the load is done (checkpoint.c). */
void tg__store_unpin_checkpoint(tg_store *s);

/* Write TOKENGRAPH atomically into the directory open as dirfd: temp,
   fsync, rename, fsync the directory; a leftover TOKENGRAPH.tmp, whatever
   it is, is unlinked, never followed (durable.c). */
int tg__store_write_identity(int dirfd);

/* Read-only handles (readonly.c): the open (dir checked, s->g set up). */
int tg__store_open_readonly(tg_store *s, const char *dir, char *msg, size_t len);

/* Make a copy in dest a store (readonly.c): its directories fsynced (the
   files must be already), then the identity file, last. */
int tg__store_backup_seal(const char *dest, char *msg, size_t len);

/* A new replica's directory from the newest snapshot on TG_SNAP_<name>
   (snapshot.c): 0 made, 1 no snapshot there (dir untouched), or an error
   with msg. Built with libnats only. */
int tg__replica_bootstrap_snapshot(const char *dir, const char *nats_url, const char *name,
                                   char *msg, size_t len);

/* After a checkpoint of a store that ships (repl_url set): publish it as
   the newest snapshot (snapshot.c). Caller holds ckpt_mu. The result is
   kept in s->snapshot_err, never the checkpoint's. */
void tg__store_snapshot_after_checkpoint(tg_store *s);

/* tg_store_inspect() of a directory another process holds (readonly.c). */
int tg__store_inspect_live(int dirfd, const char *dir, tg_inspect_report *out,
                           tg_progress_cb progress, void *arg, char *msg, size_t len);

/* Load every token and connection of the checkpoint into s->g, which is
   loading, checking each value's CRC and id bound (checkpoint.c). */
int tg__store_load_checkpoint(tg_store *s, char *msg, size_t len);

/* Redo one record exactly as the original call ran it. TG_ECORRUPT with
   *why set when it does not apply. */
int tg__store_apply(tg__graph *g, const tg_wal_record *r, const char **why);

/* tg_store_inspect() for a caller that has checked dir (open as dirfd,
   which stays the caller's) and holds (or has chosen not to take) its lock
   (inspect.c). */
int tg__store_inspect_dir(int dirfd, const char *dir, tg_inspect_report *out,
                          tg_progress_cb progress, void *arg, char *msg, size_t len);

/* Open dir and check its identity, for a reader: the directory's
   descriptor (the caller closes it), or -ENOENT, -ENOTDIR, TG_ENOTTG (also
   for an empty directory), TG_EVERSION, with msg set. */
int tg__store_open_checked_dir(const char *dir, char *msg, size_t len);

/* The path to hand the WAL for directory `name` of dir open as fd:
   /proc/self/fd/N, which cannot be redirected (common/path.h), or without
   /proc the joined name, checked as a real directory just before. Into out
   (n bytes); 0 or -ENAMETOOLONG. */
int tg__store_wal_path(char *out, size_t n, int fd, const char *dir, const char *name);

#endif /* TG_STORE_INTERNAL_H */
