/*
 * tg_store: the token graph behind one lock, with the guardian inline.
 *
 * LOCKING. The locks of a store, and what each guards (the fields of
 * struct tg_store in store_internal.h name their guard):
 *
 *   ckpt_mu       one checkpoint at a time; the LMDB write transaction and
 *                 ckpt_lsn, checkpoints, ckpt_wal_bytes. A read-only handle
 *                 (readonly.c) has no checkpoints: there it makes
 *                 tg_store_refresh() and tg_store_backup() one at a time,
 *                 and a refresh swaps or advances the graph under lock too,
 *                 so readers see the state before it or after it.
 *   lock          the store lock (a futex lock, below): the graph, the
 *                 guardian's counters, tokens_created, connections_created,
 *                 last_lsn, and the order of appends to the WAL.
 *   ckpt_wake_mu  the checkpointer's wake-up (ckpt_stop, ckpt_wake).
 *   (WAL)         the WAL's own mutexes, taken inside tg_wal_* calls only.
 *   (metrics)     the collectors' mutex in src/trace, which calls
 *                 store_collect(), which reads the counters without the
 *                 store lock (READS, below).
 *
 * Lock order: ckpt_mu before lock; lock before any WAL-internal mutex. No
 * code calls into the metrics registry's collector API while holding lock.
 * ckpt_wake_mu is never held with another of them.
 *
 * What may block under the store lock: a WAL append waiting for ring space
 * (backpressure, bounded by the writer draining the ring; the writer never
 * takes the store lock), and the guardian's pressure callback
 * (on_pressure, application code), and a checkpoint's take of one unit
 * of 4096 slots (read beforehand without the lock) or a writer's own copy
 * of one (copy-on-write, token/graph.h). Never a disk flush: STRICT
 * callers announce themselves before taking the lock and wait for
 * durability after releasing it (strict_enter / strict_wait below); never an LMDB call
 * (checkpoints copy in short lock holds and write outside the lock).
 *
 * Which thread runs the hooks: the WAL's on_sync, on_segment and on_io run
 * on the WAL writer thread and touch only the fields marked "writer
 * thread"; the guardian's on_pressure runs on the calling thread with the
 * store lock held; tg_token_edges' callback on the calling thread with no
 * lock held.
 *
 * The store lock is a futex lock: `lock` is 0 free or 1 held, and
 * `sleepers` counts threads that may be parked on it. Uncontended, an
 * acquire is one exchange and a release one plain release store and a
 * load: a release by exchange (Drepper, "Futexes Are Tricky", mutex
 * 2) doubled the cost of a token create here, because a locked instruction
 * waits for the create's stores to fresh memory to drain (tg-bench tokens:
 * 125 ns against 70 ns a token, this machine under load). A contended
 * acquire spins briefly (a holder's critical section is tens of
 * nanoseconds), then counts itself in `sleepers` and parks on the futex.
 * The release and the parking thread form a Dekker pair (the release
 * stores `lock` then loads `sleepers`; the parker adds to `sleepers` then
 * the kernel loads `lock`), which needs a full barrier on each side; the
 * release's side is made free with membarrier(2): the parker's
 * MEMBARRIER_CMD_PRIVATE_EXPEDITED runs a full barrier on every thread of
 * the process, so the release either sees the sleeper or has made its
 * store visible before the parker looks (the asymmetric fence of userspace
 * RCU and folly). Where membarrier is missing the release issues a
 * seq_cst fence instead. Nothing spins on sched_yield(): with more
 * runnable threads than cores (1 writer and 2 readers on 2 cores),
 * yielding spinners took the holder's CPU time and the writer ran 27x
 * slower than alone; parked waiters take none.
 *
 * Debug builds (assertions on: sanitizer builds and any build without
 * NDEBUG) check with TG__ASSERT_LOCKED that the lock is held where the
 * code depends on it. The lock has no owner, so the check is "held", not
 * "held by this thread".
 *
 * READS. tg_token_get, tg_connection_get, tg_token_edges,
 * tg_store_stats_get and the metrics collector take no lock and never wait
 * for the lock holder. The one place this design lives (docs/design.md,
 * "Concurrency", summarises it):
 *  - memory: arena chunks and adjacency side tables stay mapped until
 *    close, and their top-level tables have a fixed size and never move
 *    (token/arena.h), so a reader can always dereference what it found;
 *  - slots: every change of a 64-byte slot is a write section of a
 *    per-stripe sequence counter (a seqlock, token/arena.h); readers copy
 *    the slot with relaxed atomic loads between two loads of the counter
 *    and retry when it moved, so a copy is one image, never torn between
 *    two updates. A reader waits only while a write section of the same
 *    stripe is open (a few stores), or longer if its writer was preempted
 *    inside one;
 *  - edges: a token's lists change only inside write sections of the
 *    token's stripe, which walks use as the lists' version; a walk that
 *    sees it move starts again from the head and skips what it delivered
 *    (token/graph.c): it never crashes or loops, sees every connection that
 *    existed for the whole walk exactly once, and may or may not see one
 *    made or removed during it. The callback gets a copy and runs with no
 *    lock held;
 *  - counters: each is written by the lock holder with a relaxed atomic
 *    store and read with a relaxed load (TG__STORE_RELAXED,
 *    common/platform.h): each value is one the counter really had during
 *    the call, but two counters may be from moments a few calls apart;
 *  - writers: every slot change goes through token/graph.h's write
 *    functions (a section each, and the checkpoint's copy-on-write). Code
 *    that changes slots any other way breaks readers.
 *  - ids: a reader goes id -> map entry -> slot (token/arena.h) and keeps
 *    its copy only when the slot's id field holds the id: a slot freed and
 *    reused meanwhile holds another id (ids are not reused);
 *  - read-only handles: tg_store_refresh() may replace the whole graph, so
 *    there the readers take the lock (ro_lock below).
 */
#include <errno.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/platform.h"
#include "store/store_internal.h"

/* ---- lock ------------------------------------------------------------- */

static void futex_wait(atomic_int *w, int val) {
  syscall(SYS_futex, (int *)w, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(atomic_int *w) {
  syscall(SYS_futex, (int *)w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* Spins before parking: about 2 us of PAUSE, several times the longest
   common critical section (a create with its WAL append), far less than a
   park and wake-up (about 5-10 us each here). */
#define LOCK_SPINS 64

/* 1 when this process registered for expedited membarrier (LOCKING). Set
   once by pthread_once before any store is returned. */
static int lock_membarrier;
static pthread_once_t lock_once = PTHREAD_ONCE_INIT;

static void lock_init_once(void) {
  lock_membarrier =
      syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
}

static void lock_slow(tg_store *s) {
  for (unsigned i = 0; i < LOCK_SPINS; i++) {
    int c = 0;
    if (atomic_load_explicit(&s->lock, memory_order_relaxed) == 0 &&
        atomic_compare_exchange_weak_explicit(&s->lock, &c, 1, memory_order_acquire,
                                              memory_order_relaxed))
      return;
    tg__cpu_relax();
  }
  /* seq_cst: this thread's half of the Dekker pair with store_unlock()
     (sleepers, then lock); membarrier completes the releaser's half. One
     announcement covers every park below: sleepers stays raised. */
  atomic_fetch_add_explicit(&s->sleepers, 1, memory_order_seq_cst);
  if (lock_membarrier) syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
  for (;;) {
    int c = 0;
    if (atomic_compare_exchange_strong_explicit(&s->lock, &c, 1, memory_order_acquire,
                                                memory_order_relaxed))
      break;
    futex_wait(&s->lock, 1); /* returns at once unless still held */
  }
  atomic_fetch_sub_explicit(&s->sleepers, 1, memory_order_relaxed);
}

static inline void store_lock(tg_store *s) {
  /* An exchange, not a compare-and-swap: the word is only ever 0 or 1, so
     a failed exchange changes nothing, and it measured faster here (tg-bench
     tokens ratio 1.26 against 1.57). */
  if (__builtin_expect(atomic_exchange_explicit(&s->lock, 1, memory_order_acquire), 0))
    lock_slow(s);
}

static inline void store_unlock(tg_store *s) {
  atomic_store_explicit(&s->lock, 0, memory_order_release);
  /* The releaser's half of the Dekker pair with lock_slow(): the store
     above before the load of sleepers below. With membarrier the parker
     supplies the barrier, so only the compiler must keep the order. */
  if (__builtin_expect(lock_membarrier, 1))
    atomic_signal_fence(memory_order_seq_cst);
  else
    atomic_thread_fence(memory_order_seq_cst);
  if (__builtin_expect(atomic_load_explicit(&s->sleepers, memory_order_relaxed) != 0, 0))
    futex_wake(&s->lock);
}

/* For durable.c and checkpoint.c: the same lock, out of line. */
void tg__store_lock(tg_store *s) { store_lock(s); }
void tg__store_unlock(tg_store *s) { store_unlock(s); }

/* A counter that tg_store_stats_get() reads without the lock (READS). */
#define BUMP(x) TG__STORE_RELAXED(x, (x) + 1u)

/* ---- configuration ----------------------------------------------------- */

void tg_store_config_init(tg_store_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->guardian.max_tokens = 10000000;
  cfg->guardian.max_connections = 100000000;
  cfg->guardian.max_memory_bytes = 1024000000;
  cfg->guardian.memory_threshold = 0.8;
  cfg->guardian.cleanup_margin = 0.05;
  cfg->guardian.max_degree = 1000000;
  cfg->guardian.cleanup = 0; /* eviction is opt-in: see tokengraph.h */
  tg_wal_config_init(&cfg->wal);
  cfg->checkpoint_bytes = 256ull << 20;
  cfg->crash_dump = 1;
  cfg->repl_replicas = 1;
  cfg->repl_ack_timeout_ms = 10000;
  cfg->repl_snapshots = 1;
}

/* A read-only handle's refresh may replace its whole graph (readonly.c),
   which a reader without the lock could be inside: there reads take the
   lock, as every call did before (READS). Its only writer is the refresh,
   so they rarely wait. */
static inline void ro_lock(tg_store *s) {
  if (__builtin_expect(s->read_only, 0)) store_lock(s);
}

static inline void ro_unlock(tg_store *s) {
  if (__builtin_expect(s->read_only, 0)) store_unlock(s);
}

/* The counters, each loaded relaxed (READS): no lock. */
static void stats_read(tg_store *s, tg_store_stats *out) {
  tg__guardian *gd = &s->gd;
  out->live_tokens = tg__arena_live_relaxed(&s->g.tokens);
  out->live_connections = tg__arena_live_relaxed(&s->g.conns);
  out->memory_bytes = tg__graph_memory_relaxed(&s->g);
  out->arena_bytes = tg__arena_bytes(&s->g.tokens) + tg__arena_bytes(&s->g.conns);
  out->quota_checks = TG__LOAD_RELAXED(gd->checks);
  out->quota_rejections = TG__LOAD_RELAXED(gd->rejections);
  out->evictions = TG__LOAD_RELAXED(gd->evictions);
  out->pressure_events = TG__LOAD_RELAXED(gd->pressure_events);
  out->tokens_created = TG__LOAD_RELAXED(s->tokens_created);
  out->connections_created = TG__LOAD_RELAXED(s->connections_created);
  out->last_lsn = TG__LOAD_RELAXED(s->last_lsn);
  out->checkpoint_lsn = TG__LOAD_RELAXED(s->ckpt_lsn);
  out->checkpoints = TG__LOAD_RELAXED(s->checkpoints);
}

/* Add this store's own counters to a metrics snapshot, so the hot path
   counts nothing twice (tokengraph/trace.h, collectors). */
static void store_collect(void *arg, tg_metric_values *out) {
  tg_store *s = arg;
  tg_wal_stats ws;
  memset(&ws, 0, sizeof ws);
  if (s->wal) tg_wal_stats_get(s->wal, &ws);
  tg_store_stats st;
  ro_lock(s);
  stats_read(s, &st); /* no lock (READS) */
  ro_unlock(s);
  out->v[TG_METRIC_TOKENS_LIVE] += st.live_tokens;
  out->v[TG_METRIC_CONNECTIONS_LIVE] += st.live_connections;
  out->v[TG_METRIC_MEMORY_BYTES] += st.memory_bytes;
  out->v[TG_METRIC_TOKENS_CREATED] += st.tokens_created;
  out->v[TG_METRIC_CONNECTIONS_CREATED] += st.connections_created;
  out->v[TG_METRIC_QUOTA_CHECKS] += st.quota_checks;
  out->v[TG_METRIC_QUOTA_REJECTIONS] += st.quota_rejections;
  out->v[TG_METRIC_EVICTIONS] += st.evictions;
  out->v[TG_METRIC_CHECKPOINTS] += st.checkpoints;
  out->v[TG_METRIC_REPLAYED_RECORDS] += s->recovery.replayed_records;
  out->v[TG_METRIC_WAL_QUEUE_DEPTH] += ws.queue_depth;
  out->v[TG_METRIC_WAL_RECORDS] += ws.records;
  out->v[TG_METRIC_WAL_BYTES] += ws.bytes;
  out->v[TG_METRIC_WAL_BATCHES] += ws.batches;
  out->v[TG_METRIC_WAL_FDATASYNCS] += ws.fdatasyncs;
  out->v[TG_METRIC_WAL_FDATASYNC_FAILURES] += ws.fdatasync_failures;
  out->v[TG_METRIC_WAL_SEGMENT_SWITCHES] += ws.segments;
  out->v[TG_METRIC_WAL_BACKPRESSURE_NS] += ws.blocked_ns;
}

void tg__store_collector_pause(tg_store *s, int pause) {
  if (pause && s->collecting) {
    tg_metrics_remove_collector(store_collect, s);
    s->collecting = 0;
  } else if (!pause && !s->collecting && !s->read_only &&
             tg_metrics_add_collector(store_collect, s) == 0) {
    s->collecting = 1;
  }
}

/* ---- open / close ------------------------------------------------------ */

int tg_store_open(tg_store **out, const char *dir, const tg_store_config *cfg) {
  return tg_store_open_msg(out, dir, cfg, NULL, 0);
}

int tg_store_open_msg(tg_store **out, const char *dir, const tg_store_config *cfg,
                      char *msg, size_t msglen) {
  return tg__store_open_locked(out, dir, cfg, -1, msg, msglen);
}

int tg__store_open_locked(tg_store **out, const char *dir, const tg_store_config *cfg,
                          int lock_fd, char *msg, size_t msglen) {
  tg_store *s = NULL;
  tg_store_config defaults;
  const char *why = NULL;
  int rc;
  if (msg && msglen) msg[0] = 0;
  if (!out) {
    rc = TG_EINVAL;
    goto fail;
  }
  *out = NULL;
  if (!cfg) {
    tg_store_config_init(&defaults);
    cfg = &defaults;
  }
  if (tg__guardian_validate(&cfg->guardian, &why)) {
    if (msg && msglen) snprintf(msg, msglen, "invalid configuration: %s", why);
    rc = TG_EINVAL;
    goto fail;
  }
  /* Aligned: the struct keeps hot fields on separate cache lines. */
  s = aligned_alloc(_Alignof(tg_store), sizeof *s);
  if (s) memset(s, 0, sizeof *s);
  if (!s) {
    rc = TG_ENOMEM;
    goto fail;
  }
  pthread_once(&lock_once, lock_init_once);
  atomic_init(&s->lock, 0);
  atomic_init(&s->sleepers, 0);
  atomic_init(&s->calls, 0);
  atomic_init(&s->failure_noted, 0);
  s->lock_fd = lock_fd;
  s->bb_slot = -1;
  lock_fd = -1; /* the store owns it now */
  rc = tg__batch_init(s);
  if (rc) goto fail;
  rc = tg__graph_init(&s->g);
  if (rc) goto fail;
  tg__guardian_init(&s->gd, &cfg->guardian);
  if (dir) {
    rc = cfg->read_only ? tg__store_open_readonly(s, dir, msg, msglen)
                        : tg__store_open_dir(s, dir, cfg, msg, msglen);
    if (rc) goto fail;
  }
  /* A read-only handle is a view of another store's state: counted in its
     owner's metrics, not twice. */
  if (!s->read_only && tg_metrics_add_collector(store_collect, s) == 0) s->collecting = 1;
  tg_blackbox_record(TG_BB_OPEN, (uint64_t)(dir ? s->level : -1), s->g.tokens.live,
                     s->g.conns.live, s->last_lsn);
  *out = s;
  return 0;
fail:
  if (s) {
    tg__store_close_dir(s);
    if (s->lock_fd >= 0) close(s->lock_fd); /* handed over, dir never set */
    tg__batch_fini(s);
    tg__graph_free(&s->g);
    free(s);
  }
  if (lock_fd >= 0) close(lock_fd);
  return rc;
}

int tg_store_close(tg_store *s) {
  if (!s) return 0;
#ifndef NDEBUG
  unsigned busy = atomic_load_explicit(&s->calls, memory_order_acquire);
  if (busy) {
    fprintf(stderr, "tokengraph: tg_store_close() while %u call(s) on the same store "
            "are in progress in other threads; close needs no concurrent calls\n", busy);
    abort();
  }
#endif
  if (s->collecting) tg_metrics_remove_collector(store_collect, s);
  tg__replica_free(s->replica); /* its follower appends to the WAL */
  s->replica = NULL;
  uint64_t tokens = s->g.tokens.live, conns = s->g.conns.live, lsn = s->last_lsn;
  int rc = tg__store_close_dir(s);
  tg_blackbox_record(TG_BB_CLOSE, tokens, conns, lsn, rc == 0);
  tg__batch_fini(s);
  tg__graph_free(&s->g);
  free(s);
  return rc;
}

int tg_sync(tg_store *s) {
  TG__CALL_GUARD(s);
  if (!s->wal) return 0;
  int rc = tg_wal_sync(s->wal, 0);
  if (rc) tg__store_note_log_failure(s, rc);
  return rc;
}

/*
 * A STRICT call returns once its record is durable. It announces itself to
 * the WAL before taking the store lock (strict_enter), appends under the
 * lock without waiting, and waits after releasing it (strict_wait): so the
 * writer knows how many callers are coming and gathers their records into
 * one fdatasync (group commit), while the lock is never held across a
 * disk flush. At other levels both are free.
 */
static inline void strict_enter(tg_store *s) {
  if (s->wal) tg__wal_strict_begin(s->wal);
}

/* The first time the log reports a failure, leave it in the black box
   (the WAL itself depends on nothing, so the store records it), as an
   fdatasync failure or as a failure of any other operation of the log. */
void tg__store_note_log_failure(tg_store *s, int rc) {
  if (rc != TG_EIO && rc != TG_ENOSPC) return;
  int os_errno = 0;
  /* An acquire load of the WAL's `failed`: the stats read next include
     the failed fdatasync counted before it was set. 0 here: the error was
     not the log's (a checkpoint's LMDB write, say). */
  int failed = tg_wal_failed(s->wal, &os_errno);
  if (!failed) return;
  if (atomic_exchange_explicit(&s->failure_noted, 1, memory_order_relaxed)) return;
  tg_wal_stats ws;
  tg_wal_stats_get(s->wal, &ws);
  tg_blackbox_record(ws.fdatasync_failures ? TG_BB_FDATASYNC_FAILURE : TG_BB_WRITE_FAILURE,
                     (uint64_t)os_errno, ws.durable_lsn, ws.written_lsn, (uint64_t)-failed);
}

static inline int strict_wait(tg_store *s, int rc, uint64_t lsn) {
  if (s->wal) {
    int r = tg__wal_strict_end(s->wal, rc == 0 ? lsn : 0);
    if (rc == 0) rc = r;
    if (__builtin_expect(rc != 0, 0)) tg__store_note_log_failure(s, rc);
    else if (lsn) tg__note_last_lsn(s, lsn);
  }
  return rc;
}

/* Log a record for a change decided under the lock. */
static inline int log_rec(tg_store *s, uint8_t type, const void *p, size_t n,
                          uint64_t *lsn) {
  TG__ASSERT_LOCKED(s);
  int rc = tg__wal_append_nowait(s->wal, type, p, n, lsn);
  if (__builtin_expect(rc == 0, 1)) TG__STORE_RELAXED(s->last_lsn, *lsn);
  return rc;
}

/* A read-only handle (readonly.c) and a replica that was not promoted
   (replica.c) change nothing: every mutating call starts here. A relaxed
   load: promotion clears the flag once the follower has stopped, and a
   call that still sees it set is refused as it would have been a moment
   earlier. */
#define REFUSE_READ_ONLY(s)                                   \
  do {                                                        \
    if (__builtin_expect(TG__LOAD_RELAXED((s)->writes_refused), 0)) return TG_EREADONLY; \
  } while (0)

/* ---- quota rejections ---------------------------------------------------- */

/* The quota this thread's last TG_EQUOTA hit, and on which store: per
   thread, so concurrent callers each learn their own answer without a
   lock, and nothing is written on a call that is admitted. */
static _Thread_local struct {
  const tg_store *s;
  int quota; /* enum tg_quota */
} last_rejection;

void tg__store_quota_reject(tg_store *s, int quota, uint64_t value, uint64_t limit,
                            uint32_t id) {
  TG__ASSERT_LOCKED(s);
  BUMP(s->gd.rejections);
  last_rejection.s = s;
  last_rejection.quota = quota;
  tg_blackbox_record(TG_BB_QUOTA_REJECTION, (uint64_t)quota, value, limit, id);
}

_Static_assert((int)TG_QUOTA_TOKENS == (int)TG_BB_QUOTA_TOKENS &&
               (int)TG_QUOTA_CONNECTIONS == (int)TG_BB_QUOTA_CONNECTIONS &&
               (int)TG_QUOTA_MEMORY == (int)TG_BB_QUOTA_MEMORY &&
               (int)TG_QUOTA_DEGREE == (int)TG_BB_QUOTA_DEGREE,
               "enum tg_quota and enum tg_bb_quota are one numbering");

int tg_quota_exceeded(tg_store *s) {
  return s && last_rejection.s == s ? last_rejection.quota : TG_QUOTA_NONE;
}

const char *tg_quota_name(int quota) {
  switch (quota) {
  case TG_QUOTA_NONE: return "none";
  case TG_QUOTA_TOKENS: return "tokens";
  case TG_QUOTA_CONNECTIONS: return "connections";
  case TG_QUOTA_MEMORY: return "memory";
  case TG_QUOTA_DEGREE: return "degree";
  default: return "unknown";
  }
}

/* ---- memory pressure (slow path) --------------------------------------- */

typedef struct collect_ctx {
  tg__victims *vs;
  uint32_t keep_a, keep_b; /* endpoints of the connection being made */
  const struct tg__idmap *keep; /* tokens a committing batch names, or NULL */
} collect_ctx;

static int collect_victim(void *arg, const tg_token *t) {
  collect_ctx *c = arg;
  if (!(t->flags & TG_TOKEN_PERSISTENT) && t->id != c->keep_a && t->id != c->keep_b &&
      !(c->keep && tg__idmap_has(c->keep, t->id)))
    tg__victims_offer(c->vs, t->weight, t->id);
  return 0;
}

/*
 * Evict non-PERSISTENT tokens, lowest weight first, until usage plus `need`
 * is at or under the cleanup target. One scan of the arena keeps the k
 * lowest-weight candidates in a bounded heap, where k is how many 64-byte
 * tokens the excess amounts to (evicting a token frees at least its slot).
 */
static void evict(tg_store *s, uint64_t need, uint32_t keep_a, uint32_t keep_b) {
  TG__ASSERT_LOCKED(s);
  tg__guardian *gd = &s->gd;
  uint64_t target = tg__guardian_cleanup_target(gd);
  uint64_t mem = tg__graph_memory(&s->g);
  if (mem + need <= target) return;
  uint64_t k = (mem + need - target + TG__SLOT_BYTES - 1) / TG__SLOT_BYTES;
  if (k > s->g.tokens.live) k = s->g.tokens.live;
  tg__victims vs;
  uint32_t *gone = NULL; /* the ids evicted, for on_evict */
  if (tg__victims_init(&vs, (size_t)k)) return; /* no memory to plan: skip */
  /* Without room to tell the application which ids went, evict nothing:
     an eviction it cannot learn of is the silent loss this hook exists to
     prevent. */
  if (gd->on_evict && k && !(gone = malloc((size_t)k * sizeof *gone))) {
    tg__victims_free(&vs);
    return;
  }
  collect_ctx c = {&vs, keep_a, keep_b, s->evict_keep};
  uint64_t evicted_before = gd->evictions;
  size_t ngone = 0;
  tg__graph_foreach_token(&s->g, collect_victim, &c);
  tg__victims_sort(&vs);
  for (size_t i = 0; i < vs.n && tg__graph_memory(&s->g) + need > target; i++) {
    uint32_t vid = vs.v[i].id;
    uint64_t lsn;
    if (tg__graph_reserve_deletes(&s->g, 1)) break; /* no memory: stop here */
    if (s->wal && log_rec(s, TG_REC_TOKEN_EVICT, &vid, sizeof vid, &lsn))
      break; /* the log failed: evict nothing more */
    if (tg__graph_token_delete(&s->g, vid, NULL) == 0) {
      BUMP(gd->evictions);
      if (gone) gone[ngone++] = vid;
    }
  }
  uint64_t after = tg__graph_memory(&s->g);
  tg_blackbox_record(TG_BB_EVICTION, gd->evictions - evicted_before, mem - after,
                     after, gd->soft_limit);
  if (ngone) gd->on_evict(gd->on_evict_arg, gone, ngone);
  free(gone);
  tg__victims_free(&vs);
}

/* Usage plus `need` would pass gd->slow_at: handle pressure, then decide. */
static int admit_memory_slow(tg_store *s, uint64_t need, uint32_t keep_a,
                             uint32_t keep_b) {
  TG__ASSERT_LOCKED(s);
  tg__guardian *gd = &s->gd;
  uint64_t mem = tg__graph_memory(&s->g);
  if (mem + need > gd->trigger) {
    BUMP(gd->pressure_events);
    if (gd->cleanup) {
      evict(s, need, keep_a, keep_b);
    } else if (gd->on_pressure) {
      tg_pressure_event ev = {mem + need, gd->soft_limit, gd->max_memory,
                              s->g.tokens.live};
      gd->on_pressure(gd->on_pressure_arg, &ev);
    }
    mem = tg__graph_memory(&s->g);
    tg__guardian_rearm(gd, mem + need);
  }
  if (mem + need > gd->max_memory) {
    tg__store_quota_reject(s, TG_QUOTA_MEMORY, mem + need, gd->max_memory, keep_a);
    return TG_EQUOTA;
  }
  return 0;
}

/* ---- the single calls' steps, for batch.c ------------------------------ */

void tg__store_strict_enter(tg_store *s) { strict_enter(s); }
int tg__store_strict_wait(tg_store *s, int rc, uint64_t lsn) {
  return strict_wait(s, rc, lsn);
}
int tg__store_log(tg_store *s, uint8_t type, const void *p, size_t n, uint64_t *lsn) {
  return log_rec(s, type, p, n, lsn);
}
int tg__store_admit_memory(tg_store *s, uint64_t need) {
  TG__ASSERT_LOCKED(s);
  if (tg__graph_memory(&s->g) + need <= s->gd.slow_at) return 0;
  return admit_memory_slow(s, need, 0, 0);
}

/* ---- tokens ------------------------------------------------------------ */

/* The end of a create or a connect: leave the lock, wait for the record to
   be durable where the level asks for it, then give the new id (0 if the
   call failed). Returns the call's result. */
static inline int created(tg_store *s, int rc, uint64_t lsn, uint32_t nid, uint32_t *id) {
  store_unlock(s);
  rc = strict_wait(s, rc, lsn);
  if (id) *id = rc ? 0 : nid;
  return rc;
}

TG_SPAN_SITE(site_create, "token.create", "id", "lsn", NULL, NULL);
TG_SPAN_SITE(site_connect, "connect", "id", "from", "to", "lsn");

int tg_token_create(tg_store *s, const tg_token *init, uint32_t *id) {
  TG__CALL_GUARD(s);
  REFUSE_READ_ONLY(s);
  int rc = 0;
  uint32_t nid = 0;
  uint64_t lsn = 0;
  tg_span sp;
  tg_span_begin(&sp, &site_create);
  strict_enter(s);
  store_lock(s);
  tg__guardian *gd = &s->gd;
  BUMP(gd->checks);
  if (__builtin_expect(s->g.tokens.live >= gd->max_tokens, 0)) {
    tg__store_quota_reject(s, TG_QUOTA_TOKENS, s->g.tokens.live + 1, gd->max_tokens, 0);
    rc = TG_EQUOTA;
    goto out;
  }
  if (__builtin_expect(tg__graph_memory(&s->g) + TG__SLOT_BYTES > gd->slow_at, 0)) {
    rc = admit_memory_slow(s, TG__SLOT_BYTES, 0, 0);
    if (rc) goto out;
  }
  tg_token *t = tg__graph_token_create(&s->g, init, &nid, &rc);
  if (__builtin_expect(!t, 0)) goto out;
  if (s->wal && (rc = log_rec(s, TG_REC_TOKEN_PUT, t, sizeof *t, &lsn))) {
    tg__graph_token_uncreate(&s->g, t, nid);
    goto out;
  }
  BUMP(s->tokens_created);
out:
  rc = created(s, rc, lsn, nid, id);
  tg_span_attr(&sp, 0, nid);
  tg_span_attr(&sp, 1, lsn);
  tg_span_end(&sp);
  return rc;
}

int tg_token_get(tg_store *s, uint32_t id, tg_token *out) {
  TG__CALL_GUARD(s);
  tg_token t;
  ro_lock(s);
  int live = tg__graph_token_read(&s->g, id, &t); /* no lock: READS */
  ro_unlock(s);
  if (!live) return TG_ENOTFOUND;
  *out = t;
  return 0;
}

int tg_token_update(tg_store *s, const tg_token *t) {
  TG__CALL_GUARD(s);
  REFUSE_READ_ONLY(s);
  int rc = 0;
  uint64_t lsn = 0;
  strict_enter(s);
  store_lock(s);
  tg_token *cur = tg__graph_token(&s->g, t->id);
  if (!cur) {
    rc = TG_ENOTFOUND;
    goto out;
  }
  tg_token img = *t;
  img.flags = (uint16_t)((img.flags & ~TG_TOKEN_DIRTY) | TG_TOKEN_ACTIVE);
  tg__graph_mark_token(&s->g, &img, img.id); /* DIRTY travels with the copy */
  if (s->wal && (rc = log_rec(s, TG_REC_TOKEN_PUT, &img, sizeof img, &lsn)))
    goto out;
  tg__graph_token_write(&s->g, img.id, &img);
out:
  store_unlock(s);
  return strict_wait(s, rc, lsn);
}

/* A delete of a token (type TG_REC_TOKEN_DEL, with its connections) or of
   a connection (TG_REC_CONN_DEL): logged first, so that a failed append
   leaves the graph as it was. */
static int delete_rec(tg_store *s, uint8_t type, uint32_t id) {
  int rc = 0;
  uint64_t lsn = 0;
  int token = type == TG_REC_TOKEN_DEL;
  strict_enter(s);
  store_lock(s);
  if (token ? !tg__graph_token(&s->g, id) : !tg__graph_conn(&s->g, id)) {
    rc = TG_ENOTFOUND;
    goto out;
  }
  if (token && (rc = tg__graph_reserve_deletes(&s->g, 1))) goto out;
  if (s->wal && (rc = log_rec(s, type, &id, sizeof id, &lsn))) goto out;
  if (token) tg__graph_token_delete(&s->g, id, NULL);
  else tg__graph_disconnect(&s->g, id);
  tg__guardian_released(&s->gd, tg__graph_memory(&s->g));
out:
  store_unlock(s);
  return strict_wait(s, rc, lsn);
}

int tg_token_delete(tg_store *s, uint32_t id) {
  TG__CALL_GUARD(s);
  REFUSE_READ_ONLY(s);
  return delete_rec(s, TG_REC_TOKEN_DEL, id);
}

/* ---- connections ------------------------------------------------------- */

static uint64_t missing_adj_bytes(const tg__graph *g, uint32_t from, uint32_t to) {
  uint32_t cf = tg__graph_token_chunk(g, from), ct = tg__graph_token_chunk(g, to);
  uint64_t n = !g->adj[cf];
  if (ct != cf && !g->adj[ct]) n++;
  return n * TG__ADJ_TABLE_BYTES;
}

int tg_connect(tg_store *s, const tg_connection *init, uint32_t *id) {
  TG__CALL_GUARD(s);
  REFUSE_READ_ONLY(s);
  int rc = 0;
  uint32_t nid = 0;
  uint64_t lsn = 0;
  if (!init) return TG_EINVAL;
  if (init->type >= TG_CONN_TYPES) return TG_EINVAL;
  tg_span sp;
  tg_span_begin(&sp, &site_connect);
  strict_enter(s);
  store_lock(s);
  tg__guardian *gd = &s->gd;
  uint32_t from = init->from, to = init->to;
  if (!tg__graph_token(&s->g, from) || !tg__graph_token(&s->g, to)) {
    rc = TG_ENOTFOUND;
    goto out;
  }
  BUMP(gd->checks);
  uint64_t dfrom = tg__graph_degree(&s->g, from) + 1 + (from == to);
  uint64_t dto = tg__graph_degree(&s->g, to) + 1;
  if (s->g.conns.live >= gd->max_connections || dfrom > gd->max_degree ||
      dto > gd->max_degree) {
    if (s->g.conns.live >= gd->max_connections)
      tg__store_quota_reject(s, TG_QUOTA_CONNECTIONS, s->g.conns.live + 1,
                             gd->max_connections, from);
    else
      tg__store_quota_reject(s, TG_QUOTA_DEGREE, dfrom > gd->max_degree ? dfrom : dto,
                             gd->max_degree, dfrom > gd->max_degree ? from : to);
    rc = TG_EQUOTA;
    goto out;
  }
  uint64_t need = TG__SLOT_BYTES + missing_adj_bytes(&s->g, from, to);
  if (tg__graph_memory(&s->g) + need > gd->slow_at) {
    rc = admit_memory_slow(s, need, from, to);
    if (rc) goto out;
  }
  rc = tg__graph_reserve_adj(&s->g, from, to);
  if (!rc && s->g.track_dirty) rc = tg__graph_reserve_conn_dirty(&s->g);
  if (!rc) rc = tg__graph_connect(&s->g, init, &nid);
  if (rc) goto out;
  if (s->wal) {
    tg_connection img = *tg__graph_conn(&s->g, nid);
    img.next_out = img.prev_out = img.next_in = img.prev_in = 0;
    if ((rc = log_rec(s, TG_REC_CONN_PUT, &img, sizeof img, &lsn))) {
      tg__graph_disconnect(&s->g, nid);
      tg__arena_give_back(&s->g.conns, nid); /* the log never skips an id */
      goto out;
    }
  }
  BUMP(s->connections_created);
out:
  rc = created(s, rc, lsn, nid, id);
  tg_span_attr(&sp, 0, nid);
  tg_span_attr(&sp, 1, init->from);
  tg_span_attr(&sp, 2, init->to);
  tg_span_attr(&sp, 3, lsn);
  tg_span_end(&sp);
  return rc;
}

int tg_disconnect(tg_store *s, uint32_t id) {
  TG__CALL_GUARD(s);
  REFUSE_READ_ONLY(s);
  return delete_rec(s, TG_REC_CONN_DEL, id);
}

int tg_connection_get(tg_store *s, uint32_t id, tg_connection *out) {
  TG__CALL_GUARD(s);
  tg_connection c;
  ro_lock(s);
  int live = tg__graph_conn_read(&s->g, id, &c); /* no lock: READS */
  ro_unlock(s);
  if (!live) return TG_ENOTFOUND;
  *out = c;
  return 0;
}

int tg_connection_update(tg_store *s, const tg_connection *c) {
  TG__CALL_GUARD(s);
  REFUSE_READ_ONLY(s);
  int rc = 0;
  uint64_t lsn = 0;
  if (!c) return TG_EINVAL;
  strict_enter(s);
  store_lock(s);
  const tg_connection *cur = tg__graph_conn(&s->g, c->id);
  if (!cur) {
    rc = TG_ENOTFOUND;
    goto out;
  }
  if (cur->from != c->from || cur->to != c->to) {
    rc = TG_EINVAL; /* the endpoints are the connection's identity */
    goto out;
  }
  if (s->wal) {
    /* The record is the whole image after the update, links 0, so replay
       and tg-replay dump see the connection as it now is. */
    tg_connection img = *cur;
    img.weight = c->weight;
    img.pull_strength = c->pull_strength;
    img.activation_count = c->activation_count;
    img.last_activated = c->last_activated;
    img.confidence = c->confidence;
    img.flags = c->flags;
    img.next_out = img.prev_out = img.next_in = img.prev_in = 0;
    if ((rc = log_rec(s, TG_REC_CONN_UPDATE, &img, sizeof img, &lsn))) goto out;
  }
  rc = tg__graph_conn_update(&s->g, c);
out:
  store_unlock(s);
  return strict_wait(s, rc, lsn);
}

int tg_token_edges(tg_store *s, uint32_t id, int direction, tg_edge_cb cb,
                   void *arg) {
  TG__CALL_GUARD(s);
  if (!cb || !(direction & TG_BOTH)) return TG_EINVAL;
  ro_lock(s);
  int rc = tg__graph_edges(&s->g, id, direction, cb, arg); /* no lock: READS */
  ro_unlock(s);
  return rc;
}

typedef struct edge_filter_ctx {
  const tg_edge_filter *f;
  tg_edge_cb cb;
  void *arg;
} edge_filter_ctx;

static int edge_filter_cb(void *arg, const tg_connection *c) {
  const edge_filter_ctx *x = arg;
  if (x->f->type >= 0 && c->type != (unsigned)x->f->type) return 0;
  if (x->f->categories && !(x->f->categories & (1u << TG_CONN_CATEGORY(c->type)))) return 0;
  return x->cb(x->arg, c);
}

int tg_token_edges_filtered(tg_store *s, uint32_t id, const tg_edge_filter *filter,
                            tg_edge_cb cb, void *arg) {
  if (!filter || !cb || filter->type >= TG_CONN_TYPES || filter->type < -1) return TG_EINVAL;
  edge_filter_ctx x = {filter, cb, arg};
  return tg_token_edges(s, id, filter->direction, edge_filter_cb, &x);
}

/*
 * A scan copies a page of records under the lock and calls back outside
 * it. 256 records (16 KiB, on the stack) bound the pause a writer can see
 * to a copy of that size, and the id budget bounds it when ids are sparse
 * (an empty map chunk costs one unit, a live-or-dead id one).
 */
#define SCAN_PAGE 256u
#define SCAN_ID_BUDGET 4096u

static int scan(tg_store *s, uint32_t after_id, tg_token_cb tcb, tg_edge_cb ccb, void *arg) {
  union {
    tg_token t[SCAN_PAGE];
    tg_connection c[SCAN_PAGE];
  } page;
  uint32_t pos = after_id;
  int done = 0, rc = 0;
  if (!tcb && !ccb) return TG_EINVAL;
  while (!done && !rc) {
    store_lock(s);
    size_t n = tg__arena_scan(ccb ? &s->g.conns : &s->g.tokens, &pos, &page, SCAN_PAGE,
                              SCAN_ID_BUDGET, &done);
    store_unlock(s);
    for (size_t i = 0; i < n && !rc; i++) rc = ccb ? ccb(arg, &page.c[i]) : tcb(arg, &page.t[i]);
  }
  return rc;
}

int tg_token_scan(tg_store *s, uint32_t after_id, tg_token_cb cb, void *arg) {
  TG__CALL_GUARD(s);
  if (!cb) return TG_EINVAL;
  return scan(s, after_id, cb, NULL, arg);
}

int tg_connection_scan(tg_store *s, uint32_t after_id, tg_edge_cb cb, void *arg) {
  TG__CALL_GUARD(s);
  if (!cb) return TG_EINVAL;
  return scan(s, after_id, NULL, cb, arg);
}

int tg_store_stats_get(tg_store *s, tg_store_stats *out) {
  TG__CALL_GUARD(s);
  ro_lock(s);
  stats_read(s, out);
  ro_unlock(s);
  return 0;
}

int tg_store_recovery_info(tg_store *s, tg_recovery_info *out) {
  TG__CALL_GUARD(s);
  store_lock(s);
  *out = s->recovery;
  store_unlock(s);
  return 0;
}
