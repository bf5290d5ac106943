/*
 * tg_store: the token graph behind one lock (and, for several writer
 * threads, per-thread caches and striped adjacency locks), with the
 * guardian inline.
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
 *                 last_lsn, and the order of appends to the WAL; except
 *                 for token creates served from a thread's cache, which
 *                 its holder waits out after taking it (SHARDS, below).
 *   stripes       adjacency locks, one per stripe of token ids (STRIPES,
 *                 below; the lists' version counters g.lver, which a
 *                 striped call holds odd): taken, instead of `lock`, by connects,
 *                 disconnects and updates once the threads' caches are on;
 *                 they guard a token's liveness for those calls, its list
 *                 heads and degrees, and the links of connections that
 *                 thread its lists, and order those calls' appends.
 *   alloc_lock    the arenas' allocation state and the graph's side-table
 *                 state for what runs without the store lock: a thread
 *                 cache's refill, and a striped connect making the side
 *                 table of a token chunk (SHARDS, STRIPES, below); taken
 *                 only inside a cache's busy word, so never while the
 *                 store lock is held by another thread.
 *   ckpt_wake_mu  the checkpointer's wake-up (ckpt_stop, ckpt_wake).
 *   (WAL)         the WAL's own mutexes, taken inside tg_wal_* calls only.
 *   (metrics)     the collectors' mutex in src/trace, which calls
 *                 store_collect(), which reads the counters without the
 *                 store lock (READS, below).
 *
 * Lock order: ckpt_mu before lock; lock before any WAL-internal mutex. No
 * code calls into the metrics registry's collector API while holding lock.
 * ckpt_wake_mu is never held with another of them. A striped call holds
 * its cache's busy word, then at most two stripes (it never waits for
 * one while holding the other: it lets the first go, stripes_lock()),
 * then write-section counters (token/arena.h), and never waits for `lock`
 * while it holds any of them; `lock` and stripes are never held together
 * (the holder of `lock` has waited out every striped call). alloc_lock
 * is taken inside busy, with no stripe held, and nothing is taken under
 * it; the holder of `lock` never takes it (it has waited out busy).
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
 * Taking the store lock waits out every busy cache (SHARDS), and so a
 * refill in progress, which maps and faults a 2 MiB chunk itself when the
 * prefaulter has none ready.
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
 *    version counter of its stripe of token ids (g.lver, token/graph.h),
 *    which walks use as the lists' version; a walk that
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
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
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

/* A plain futex mutex (Drepper, "Futexes Are Tricky", mutex 2), below
   with the STRIPES: the adjacency stripes and alloc_lock (SHARDS). */
static inline void stripe_lock(atomic_int *l);
static inline void stripe_unlock(atomic_int *l);

/* 1 when this process registered for expedited membarrier (LOCKING). Set
   once by pthread_once before any store is returned. */
static int lock_membarrier;
static pthread_once_t lock_once = PTHREAD_ONCE_INIT;

static void lock_init_once(void) {
  lock_membarrier =
      syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
}

/* A full barrier on every running thread of the process (lock_membarrier
   set). A child forked after the registration may have to register its
   own memory map first; if even that fails, the global command (slow, no
   registration) still gives the barrier. */
static void heavy_barrier(void) {
  if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0) return;
  if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0 &&
      syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0)
    return;
  syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0);
}

static void lock_slow(tg_store *s) {
  for (unsigned i = 0; i < LOCK_SPINS; i++) {
    int c = 0;
    if (atomic_load_explicit(&s->lock, memory_order_relaxed) == 0 &&
        atomic_compare_exchange_weak_explicit(&s->lock, &c, 1, memory_order_seq_cst,
                                              memory_order_relaxed))
      return;
    tg__cpu_relax();
  }
  /* seq_cst: this thread's half of the Dekker pair with store_unlock()
     (sleepers, then lock); membarrier completes the releaser's half. One
     announcement covers every park below: sleepers stays raised. */
  atomic_fetch_add_explicit(&s->sleepers, 1, memory_order_seq_cst);
  if (lock_membarrier) heavy_barrier();
  for (;;) {
    int c = 0;
    if (atomic_compare_exchange_strong_explicit(&s->lock, &c, 1, memory_order_seq_cst,
                                                memory_order_relaxed))
      break;
    futex_wait(&s->lock, 1); /* returns at once unless still held */
  }
  atomic_fetch_sub_explicit(&s->sleepers, 1, memory_order_relaxed);
}

/* The holder of the store lock waits until no thread is inside a create
   without it (SHARDS): a short spin (a create is tens of nanoseconds),
   then sleeps of 20 us on the futex word until the thread left; the
   leaving thread wakes nobody, so its release costs a store. */
static void drain_slow(atomic_int *busy) {
  for (unsigned i = 0; i < LOCK_SPINS; i++) {
    if (!atomic_load_explicit(busy, memory_order_acquire)) return;
    tg__cpu_relax();
  }
  const struct timespec ts = {0, 20000};
  while (atomic_load_explicit(busy, memory_order_acquire))
    syscall(SYS_futex, (int *)busy, FUTEX_WAIT_PRIVATE, 1, &ts, NULL, 0);
}

static inline unsigned shards_in_use(tg_store *s) {
  unsigned n = atomic_load_explicit(&s->nshards, memory_order_acquire);
  return n < TG__SHARDS_MAX ? n : TG__SHARDS_MAX;
}

static __attribute__((noinline)) void drain_all(tg_store *s, unsigned n) {
  if (n > TG__SHARDS_MAX) n = TG__SHARDS_MAX;
  TG__STORE_RELAXED(s->holds, s->holds + 1u);
  /* ANNOUNCING: while calls announce with plain stores, the creators'
     half of the Dekker pair is made here: exchanges from now on (the
     announce word's change), then a barrier on every thread, so a call
     that stored busy before it is seen below and one that stores it after
     sees the lock held or the word changed. */
  unsigned a = atomic_load_explicit(&s->announce, memory_order_relaxed);
  if (__builtin_expect(a & 1u, 0)) {
    atomic_store_explicit(&s->announce, a + 1u, memory_order_relaxed);
    heavy_barrier();
  }
  for (unsigned i = 0; i < n; i++)
    /* seq_cst: the holder's half of the Dekker pair with create_unlocked()
       (lock, then busy; the creator stores busy, then loads lock). */
    if (atomic_load_explicit(&s->shards[i].busy, memory_order_seq_cst))
      drain_slow(&s->shards[i].busy);
}

/*
 * ANNOUNCING: how a thread announces a call without the store lock (a
 * create from its cache, a striped call): busy = 1, then it loads the lock;
 * the lock's holder stores the lock, then loads every busy (drain()). That
 * Dekker pair needs a full barrier between the store and the load on each
 * side. The announcing side has two ways to make it, chosen by the store's
 * `announce` word:
 *  - even: an exchange on busy. A locked instruction, and on this path the
 *    dearest part of a create: it waits for the previous call's stores to
 *    fresh memory to drain (perf annotate of tg-bench concurrent, two
 *    writers: about half of tg_token_create's samples).
 *  - odd: a plain store, and the lock's holder makes the barrier for every
 *    thread with membarrier(2) (the asymmetric fence of userspace RCU and
 *    folly). A holder that finds the word odd makes it even first, so only
 *    the first hold after plain announcements pays the system call: with a
 *    plain store always, every hold paid it, and two threads creating and
 *    deleting made 0.8-2.8 M pairs/s against 2.1-8.9 M with the exchange
 *    (docs/benchmarks.md).
 * The word goes odd again when a thread that announced ANNOUNCE_PROBE
 * calls by exchange saw no hold meanwhile (`holds`, counted by drain_all):
 * it takes the lock once and makes the word odd (announce_plain()). So a
 * store whose lock is taken often (deletes, batches, quota decisions, a
 * capture's steps) stays with exchanges, and one that only creates and
 * connects runs without a locked instruction per call, at one lock hold
 * per ANNOUNCE_PROBE calls at most.
 *
 * Why a plain announcement is safe. Only the lock's holder changes the
 * word, and every change adds one, so a word read twice with the same
 * value did not change between the reads (it would have to wrap 2^32
 * changes, each a lock hold, while one thread sits between two loads). A
 * call with a plain announcement loads the word (odd), stores busy, loads
 * the lock and then the word again, and goes on only with the lock free
 * and the word unchanged. A holder that loads the word odd runs the
 * barrier itself. One that loads it even: the last holder to make it even
 * (H) ran the barrier after its store. If the call's second load came
 * after that barrier on its thread, it read H's even word or a later one:
 * changed, so the call withdrew. If it came before, so did its store of
 * busy, which the barrier made visible to every later holder. Without
 * membarrier(2) the word stays even.
 */
#define ANNOUNCE_PROBE 16384u

/* Announce a call without the lock: 0 when it may run (busy set, the lock
   seen free), 1 when the lock is held (busy withdrawn, nothing else
   changed). */
static inline int busy_enter(tg_store *s, tg__shard *sh) {
  unsigned a = atomic_load_explicit(&s->announce, memory_order_relaxed);
  if (__builtin_expect(a & 1u, 1)) {
    atomic_store_explicit(&sh->busy, 1, memory_order_relaxed);
    /* The store before the loads below: for the compiler only; the
       holder's membarrier orders them on the CPU. */
    atomic_signal_fence(memory_order_seq_cst);
    /* Acquire: the word's second load after the lock's. */
    if (__builtin_expect(!atomic_load_explicit(&s->lock, memory_order_acquire), 1) &&
        __builtin_expect(atomic_load_explicit(&s->announce, memory_order_relaxed) == a, 1))
      return 0;
    atomic_store_explicit(&sh->busy, 0, memory_order_release);
    /* The lock free and the word changed: announce by exchange below. */
    if (atomic_load_explicit(&s->lock, memory_order_relaxed)) return 1;
  }
  atomic_exchange_explicit(&sh->busy, 1, memory_order_seq_cst);
  if (__builtin_expect(atomic_load_explicit(&s->lock, memory_order_seq_cst) != 0, 0)) {
    atomic_store_explicit(&sh->busy, 0, memory_order_release);
    return 1;
  }
  if (__builtin_expect(++sh->xchg_calls % ANNOUNCE_PROBE == 0, 0)) {
    /* Relaxed: a hint; the word changes only under the lock. */
    uint64_t h = TG__LOAD_RELAXED(s->holds);
    if (h == sh->holds_seen && lock_membarrier) sh->want_plain = 1;
    sh->holds_seen = h;
  }
  return 0;
}

static inline void drain(tg_store *s) {
  /* seq_cst, after the lock's exchange: a thread that claimed the second
     cache did so before it announced a create without the lock, so if
     that create saw the lock free, this load sees the claim. Below two
     caches nobody creates without the lock. */
  unsigned n = atomic_load_explicit(&s->nshards, memory_order_seq_cst);
  if (__builtin_expect(n >= 2, 0)) drain_all(s, n);
}

static inline void store_lock(tg_store *s) {
  /* An exchange, not a compare-and-swap: the word is only ever 0 or 1, so
     a failed exchange changes nothing, and it measured faster here (tg-bench
     tokens ratio 1.26 against 1.57). seq_cst (an exchange is a full
     barrier on x86 anyway): it opens the Dekker pair of drain(). */
  if (__builtin_expect(atomic_exchange_explicit(&s->lock, 1, memory_order_seq_cst), 0))
    lock_slow(s);
  drain(s);
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
  /* All of them: the word has two kinds of sleeper, threads parked in
     lock_slow() (counted in sleepers) and creates waiting in
     wait_lock_free() (timed, not counted). A wake of one could go to the
     latter and leave a parked thread asleep with the lock free: a TSan
     run of test_writers hung so, one writer parked on a free lock. */
  if (__builtin_expect(atomic_load_explicit(&s->sleepers, memory_order_relaxed) != 0, 0))
    syscall(SYS_futex, (int *)&s->lock, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* For durable.c and checkpoint.c: the same lock, out of line. */
void tg__store_lock(tg_store *s) { store_lock(s); }
void tg__store_unlock(tg_store *s) { store_unlock(s); }

/* Make announcements plain (ANNOUNCING), asked for by busy_enter(). Called
   by the cache's owner outside busy. */
static __attribute__((noinline)) void announce_plain(tg_store *s, tg__shard *sh) {
  sh->want_plain = 0;
  store_lock(s);
  unsigned a = atomic_load_explicit(&s->announce, memory_order_relaxed);
  if (!(a & 1u)) atomic_store_explicit(&s->announce, a + 1u, memory_order_relaxed);
  sh->holds_seen = s->holds;
  store_unlock(s);
}

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
  cfg->repl_lease_ttl_ms = 10000;
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
  /* The threads' caches (SHARDS): their unused credit is counted in
     tokens.live, their creates and LSNs are their own. */
  uint64_t credit = 0, made = 0, shard_lsn = 0, ccredit = 0, cmade = 0;
  if (s->shards) {
    unsigned n = shards_in_use(s);
    for (unsigned i = 0; i < n; i++) {
      const tg__shard *sh = &s->shards[i];
      credit += TG__LOAD_RELAXED(sh->credit);
      made += TG__LOAD_RELAXED(sh->created);
      ccredit += TG__LOAD_RELAXED(sh->ccredit);
      cmade += TG__LOAD_RELAXED(sh->connected);
      uint64_t l = TG__LOAD_RELAXED(sh->last_lsn);
      if (l > shard_lsn) shard_lsn = l;
    }
  }
  uint64_t live = tg__arena_live_relaxed(&s->g.tokens);
  out->live_tokens = live > credit ? live - credit : 0;
  uint64_t lc = tg__arena_live_relaxed(&s->g.conns);
  out->live_connections = lc > ccredit ? lc - ccredit : 0;
  uint64_t mem = tg__graph_memory_relaxed(&s->g), held = (credit + ccredit) * TG__SLOT_BYTES;
  out->memory_bytes = mem > held ? mem - held : 0;
  out->arena_bytes = tg__arena_bytes(&s->g.tokens) + tg__arena_bytes(&s->g.conns);
  uint64_t tc = TG__LOAD_RELAXED(s->tokens_created) + made;
  uint64_t cc = TG__LOAD_RELAXED(s->connections_created) + cmade;
  /* A single create or connect that succeeded was one check (gd->checks
     counts the others). */
  out->quota_checks = TG__LOAD_RELAXED(gd->checks) + tc + cc;
  out->quota_rejections = TG__LOAD_RELAXED(gd->rejections);
  out->evictions = TG__LOAD_RELAXED(gd->evictions);
  out->pressure_events = TG__LOAD_RELAXED(gd->pressure_events);
  out->tokens_created = tc + TG__LOAD_RELAXED(s->tokens_batched);
  out->connections_created = cc + TG__LOAD_RELAXED(s->connections_batched);
  out->last_lsn = TG__LOAD_RELAXED(s->last_lsn);
  if (shard_lsn > out->last_lsn) out->last_lsn = shard_lsn;
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

/* ---- fresh memory off the creating thread --------------------------------- */

/* The prefaulter: keeps one token chunk mapped and faulted ahead, so the
   create that fills a chunk (under the store lock, stalling other writers)
   takes it instead of faulting 2 MiB itself (token/arena.h). It sleeps on
   pf_word until a grow took the spare or close asks it to end. */
static void *prefaulter(void *arg) {
  tg_store *s = arg;
  for (;;) {
    int seen = __atomic_load_n(&s->pf_word, __ATOMIC_ACQUIRE);
    if (atomic_load_explicit(&s->pf_stop, memory_order_acquire)) break;
    /* No memory: the grow maps. Connections too: each connect chunk
       faulted by a grow under the store lock stalled every writer for
       its 2 MiB (a sixth of the CPU of tg-bench concurrent's writers,
       perf record, docs/benchmarks.md). */
    (void)tg__arena_prefault(&s->g.tokens);
    (void)tg__arena_prefault(&s->g.conns);
    tg__graph_prefault_adj(&s->g);
    syscall(SYS_futex, &s->pf_word, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
  }
  return NULL;
}

static void prefaulter_start(tg_store *s) {
  atomic_init(&s->pf_stop, 0);
  s->g.tokens.spare_wake = &s->pf_word;
  s->g.conns.spare_wake = &s->pf_word;
  s->g.adj_wake = &s->pf_word;
  /* Without the thread, grows map as before. */
  if (pthread_create(&s->pf_thread, NULL, prefaulter, s) == 0) {
    s->pf_started = (int)getpid();
  } else {
    s->g.tokens.spare_wake = NULL;
    s->g.conns.spare_wake = NULL;
    s->g.adj_wake = NULL;
  }
}

static void prefaulter_stop(tg_store *s) {
  if (!s->pf_started) return;
  /* A child forked after the open has no prefaulter to stop (its grows
     never waited for one: they map when no spare is there). */
  if (s->pf_started != (int)getpid()) return;
  atomic_store_explicit(&s->pf_stop, 1, memory_order_release);
  __atomic_fetch_add(&s->pf_word, 1, __ATOMIC_RELEASE);
  syscall(SYS_futex, &s->pf_word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
  pthread_join(s->pf_thread, NULL);
  s->pf_started = 0;
  s->g.tokens.spare_wake = NULL;
  s->g.conns.spare_wake = NULL;
  s->g.adj_wake = NULL;
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
  if (cfg->prefault_bytes > cfg->guardian.max_memory_bytes) {
    if (msg && msglen)
      snprintf(msg, msglen,
               "invalid configuration: prefault_bytes (%" PRIu64
               ") is more than guardian.max_memory_bytes (%" PRIu64 ")",
               cfg->prefault_bytes, cfg->guardian.max_memory_bytes);
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
  s->shards = aligned_alloc(64, TG__SHARDS_MAX * sizeof *s->shards);
  if (!s->shards) {
    rc = TG_ENOMEM;
    goto fail;
  }
  memset(s->shards, 0, TG__SHARDS_MAX * sizeof *s->shards);
  atomic_init(&s->nshards, 0);
  pthread_once(&lock_once, lock_init_once);
  atomic_init(&s->lock, 0);
  atomic_init(&s->announce, 0); /* exchanges until a cache asks (ANNOUNCING) */
  atomic_init(&s->alloc_lock, 0);
  atomic_init(&s->lver_sleepers, 0);
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
  /* Before the directory: a replay at open takes the blocks too. */
  if (cfg->prefault_bytes && !cfg->read_only &&
      (rc = tg__blockpool_fill(s->g.pool, cfg->prefault_bytes))) {
    if (msg && msglen)
      snprintf(msg, msglen, "cannot fault in prefault_bytes (%" PRIu64 ") of memory",
               cfg->prefault_bytes);
    goto fail;
  }
  tg__guardian_init(&s->gd, &cfg->guardian);
  if (dir) {
    rc = cfg->read_only ? tg__store_open_readonly(s, dir, msg, msglen)
                        : tg__store_open_dir(s, dir, cfg, msg, msglen);
    if (rc) goto fail;
  }
  /* A read-only handle is a view of another store's state: counted in its
     owner's metrics, not twice. */
  if (!s->read_only && tg_metrics_add_collector(store_collect, s) == 0) s->collecting = 1;
  if (!s->read_only) prefaulter_start(s);
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
    free(s->shards);
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
  prefaulter_stop(s);
  tg__store_reclaim_credit(s); /* no call runs: the counts are exact */
  uint64_t tokens = s->g.tokens.live, conns = s->g.conns.live, lsn = tg__store_last_lsn(s);
  int rc = tg__store_close_dir(s);
  tg_blackbox_record(TG_BB_CLOSE, tokens, conns, lsn, rc == 0);
  tg__batch_fini(s);
  tg__graph_free(&s->g);
  free(s->shards);
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
  tg__store_reclaim_credit(s); /* the decision below is exact (SHARDS) */
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

/*
 * SHARDS: creates without the store lock.
 *
 * Once a second thread creates tokens in a store (before that, creates
 * take the uncontended lock and ids have no gaps), each thread that
 * creates gets a cache of its own in the store (a tg__shard, one of
 * TG__SHARDS_MAX, found again through a thread-local pointer keyed by the
 * store's serial): up to TG__SHARD_BLOCK ids (a run
 * of the arena's ids, all in one map chunk), as many slots, and as many
 * tokens of quota credit. A create that finds all three in its cache takes
 * no lock:
 *  - it announces itself (busy = 1: busy_enter(), ANNOUNCING) and then
 *    loads the store lock; if the lock is held, it withdraws (busy = 0) and creates under
 *    the lock instead. The lock's holder, after taking it, waits until no
 *    cache is busy (drain()). The two sides are a Dekker pair (each stores
 *    its word and then loads the other's, seq_cst), so every call under
 *    the lock runs alone, as before: everything else in this file keeps
 *    its invariants, and a checkpoint's capture begins with every create
 *    whose LSN was claimed complete;
 *  - it writes a slot no map entry names (token/graph.h), logs the record
 *    (the WAL's claim is lock-free, so the log's order is the order of the
 *    claims), then maps the id (a release store: readers find the whole
 *    image). Anything that finds the new token (a get, a connect, a
 *    delete) finds it after its record was claimed, so a change to it is
 *    logged after its create; two creates share nothing but the log;
 *  - it touches no shared counter: the credit was counted in tokens.live
 *    when it was given (so every quota check and memory figure under the
 *    lock counts it as a token), the ids in their map chunk's count when
 *    they were handed out; the cache counts its own creates and last LSN,
 *    which stats_read() and tg__store_last_lsn() add;
 *  - while a checkpoint capture runs (g.cap set), creates take the lock:
 *    copy-on-write needs the unit copies serialised.
 * A create that finds its cache empty refills it without the store lock,
 * still inside busy (the lock free, no capture running), under alloc_lock,
 * which orders refills of several threads (shard_refill_busy()); other
 * threads' lock-free calls go on meanwhile. What a refill cannot give (a
 * quota near, the id space wrapping, no memory) a create under the lock
 * decides, and refills the cache again before leaving. The
 * credit is given only while the token and memory quotas have room for it
 * below the point where pressure is handled (gd->slow_at), so a create
 * without the lock never crosses a limit; every decision to refuse
 * (create_admit_slow, admit_memory_slow, a batch's commit) first takes all
 * credit back, so quotas stay exact at their limits. Ids a cache never
 * used are gaps: dead, never handed out again (ids are not reused), and
 * the log holds ids out of order across threads, which replay accepts
 * (tg__arena_may_replay()). A cache stays with its thread's number
 * (gettid): a thread that ends leaves it to the next thread given that
 * number; past TG__SHARDS_MAX threads, creates take the lock.
 */
static _Thread_local struct {
  uint64_t serial; /* the store the pointer below is for (0: none) */
  tg__shard *sh;   /* its cache for this thread, or NULL (none left) */
} tl_shard;
static _Thread_local int tl_tid;

static __attribute__((noinline)) tg__shard *shard_find(tg_store *s) {
  if (!tl_tid) tl_tid = (int)syscall(SYS_gettid);
  unsigned n = shards_in_use(s);
  tg__shard *sh = NULL;
  for (unsigned i = 0; i < n && !sh; i++)
    if (atomic_load_explicit(&s->shards[i].owner, memory_order_relaxed) == tl_tid)
      sh = &s->shards[i];
  if (!sh) {
    /* Relaxed: the index only has to be unique; the holder of the lock
       reads the shard's fields after an acquire load of nshards, and they
       are zero until this thread, inside busy, changes them. */
    unsigned i = atomic_fetch_add_explicit(&s->nshards, 1, memory_order_acq_rel);
    if (i < TG__SHARDS_MAX) {
      sh = &s->shards[i];
      atomic_store_explicit(&sh->owner, tl_tid, memory_order_relaxed);
    }
  }
  tl_shard.serial = s->serial;
  tl_shard.sh = sh;
  return sh;
}

/* This thread's cache, or NULL: none while only one thread has created
   on the store (it then keeps the old order: ids without gaps, the lock
   uncontended), nor past TG__SHARDS_MAX threads. */
static inline tg__shard *shard_get(tg_store *s) {
  if (__builtin_expect(tl_shard.serial != s->serial, 0)) return shard_find(s);
  return tl_shard.sh;
}

/* Quota credit for a thread's cache: as many objects as both the count
   limit (max, with live in use) and the memory below slow_at (one slot
   each) have room for, at most TG__SHARD_BLOCK. */
static uint64_t credit_block(uint64_t live, uint64_t max, uint64_t mem, uint64_t slow_at) {
  uint64_t n = max > live ? max - live : 0;
  uint64_t m = slow_at > mem ? (slow_at - mem) / TG__SLOT_BYTES : 0;
  if (n > m) n = m;
  return n < TG__SHARD_BLOCK ? n : TG__SHARD_BLOCK;
}

/* Debug builds: a refill runs under the store lock, or inside its cache's
   busy under alloc_lock (SHARDS). */
#define ASSERT_REFILL(s) \
  assert(atomic_load_explicit(&(s)->lock, memory_order_relaxed) != 0 || \
         atomic_load_explicit(&(s)->alloc_lock, memory_order_relaxed) != 0)

/* Refill a cache's token part (SHARDS). */
static __attribute__((noinline)) void shard_refill(tg_store *s, tg__shard *sh) {
  ASSERT_REFILL(s);
  tg__graph *g = &s->g;
  tg__guardian *gd = &s->gd;
  if (g->cap) return; /* creates take the lock until the capture ends */
  if (sh->nslots == 0) sh->nslots = tg__arena_take_slots(&g->tokens, sh->slots, TG__SHARD_BLOCK);
  if (sh->id_next == sh->id_end) {
    uint32_t first = 0, n = tg__arena_take_ids(&g->tokens, TG__SHARD_BLOCK, &first);
    sh->id_next = first;
    sh->id_end = first + n;
  }
  if (sh->credit == 0) {
    /* Each create without the lock adds one slot of memory and one token. */
    uint64_t live = g->tokens.live;
    uint64_t n = credit_block(live, gd->max_tokens, tg__graph_memory(g), gd->slow_at);
    if (n) {
      TG__STORE_RELAXED(sh->credit, (uint32_t)n);
      TG__STORE_RELAXED(g->tokens.live, live + n);
    }
  }
}

/* Refill a cache's connection part (STRIPES). */
static __attribute__((noinline)) void shard_refill_conns(tg_store *s, tg__shard *sh) {
  ASSERT_REFILL(s);
  tg__graph *g = &s->g;
  tg__guardian *gd = &s->gd;
  if (g->cap) return;
  if (sh->ncslots == 0)
    sh->ncslots = tg__arena_take_slots(&g->conns, sh->cslots, TG__SHARD_BLOCK);
  /* The bitmap of the next id's chunk first: the run is in that chunk, and
     a striped connect cannot allocate it. */
  if (sh->cid_next == sh->cid_end && (!g->track_dirty || !tg__graph_reserve_conn_dirty(g))) {
    uint32_t first = 0, n = tg__arena_take_ids(&g->conns, TG__SHARD_BLOCK, &first);
    sh->cid_next = first;
    sh->cid_end = first + n;
  }
  if (sh->ccredit == 0) {
    uint64_t live = g->conns.live;
    uint64_t n = credit_block(live, gd->max_connections, tg__graph_memory(g), gd->slow_at);
    if (n) {
      TG__STORE_RELAXED(sh->ccredit, (uint32_t)n);
      TG__STORE_RELAXED(g->conns.live, live + n);
    }
  }
}

/*
 * A refill without the store lock, by a thread inside its cache's busy
 * that found the lock free and no capture running (SHARDS): alloc_lock
 * orders it against other threads' refills, and the store lock's holder
 * runs only once it left busy, so the allocation state (the arenas' next,
 * free list, cursor, chunks and map chunks, live, the dirty bitmaps) has
 * one writer at a time as before. What else runs beside it touches none
 * of that: lock-free creates and striped calls write their own caches,
 * their slots, their ids' map entries, and a map chunk's count by atomic
 * decrement (tg__arena_release_held(), which tg__arena_take_ids() adds to
 * atomically). Why: when a refill took the store lock, every other
 * writer's lock-free calls withdrew while it was held, waited in timed
 * sleeps for it to be free (20 us and the timer's slack), and a refill
 * that met a grow without a spare chunk held it across a 2 MiB fault: two
 * writers of tg-bench concurrent slept about 7,000 times per 2 M creates
 * (perf record -e sched:sched_switch, docs/benchmarks.md).
 */
static __attribute__((noinline)) void shard_refill_busy(tg_store *s, tg__shard *sh,
                                                        int conns) {
  tg__arena *a = conns ? &s->g.conns : &s->g.tokens;
  int slots = conns ? sh->ncslots == 0 : sh->nslots == 0;
  /* The prefaulter is woken once alloc_lock is free (arena.h says why). */
  tg__spare_defer_begin();
  stripe_lock(&s->alloc_lock);
  /* This refill would grow the arena and the prefaulter has no chunk
     ready (it is behind, or has no core to itself beside two writers):
     fault one here, outside alloc_lock, so the other threads' refills do
     not wait for the fault, and two writers fault in parallel (on this
     VM fresh memory faults run about twice as fast from two threads as
     from one when the host must back them, docs/benchmarks.md). */
  if (slots && a->spare_wake && tg__arena_would_grow(a, TG__SHARD_BLOCK) &&
      !__atomic_load_n(&a->spare, __ATOMIC_ACQUIRE)) {
    stripe_unlock(&s->alloc_lock);
    (void)tg__arena_prefault(a);
    stripe_lock(&s->alloc_lock);
  }
  if (conns) shard_refill_conns(s, sh);
  else shard_refill(s, sh);
  stripe_unlock(&s->alloc_lock);
  tg__spare_defer_end();
}

void tg__store_reclaim_credit(tg_store *s) {
  if (!s->shards) return;
  unsigned n = shards_in_use(s);
  uint64_t c = 0, cc = 0;
  for (unsigned i = 0; i < n; i++) {
    c += s->shards[i].credit;
    TG__STORE_RELAXED(s->shards[i].credit, 0u);
    cc += s->shards[i].ccredit;
    TG__STORE_RELAXED(s->shards[i].ccredit, 0u);
  }
  if (c) TG__STORE_RELAXED(s->g.tokens.live, s->g.tokens.live - c);
  if (cc) TG__STORE_RELAXED(s->g.conns.live, s->g.conns.live - cc);
}

uint64_t tg__store_last_lsn(tg_store *s) {
  uint64_t l = s->last_lsn;
  unsigned n = s->shards ? shards_in_use(s) : 0;
  for (unsigned i = 0; i < n; i++)
    if (s->shards[i].last_lsn > l) l = s->shards[i].last_lsn;
  return l;
}

/* A create that may pass a quota: the token count, or memory past the
   point where pressure is handled. Out of line, so the common path keeps
   few registers live. 0 or TG_EQUOTA (after eviction, if chosen). */
static __attribute__((noinline, cold)) int create_admit_slow(tg_store *s) {
  TG__ASSERT_LOCKED(s);
  tg__guardian *gd = &s->gd;
  tg__store_reclaim_credit(s); /* exact from here: no thread holds any */
  if (s->g.tokens.live >= gd->max_tokens) {
    tg__store_quota_reject(s, TG_QUOTA_TOKENS, s->g.tokens.live + 1, gd->max_tokens, 0);
    return TG_EQUOTA;
  }
  if (tg__graph_memory(&s->g) + TG__SLOT_BYTES > gd->slow_at)
    return admit_memory_slow(s, TG__SLOT_BYTES, 0, 0);
  return 0;
}

/* Wait until the store lock is free, without taking it: a spin, then
   sleeps of 20 us on its futex word (the holder wakes only threads
   counted in sleepers, so a waiter that does not take the lock must not
   count itself there). 1 when it saw the lock free, 0 when it gave up
   (then the caller queues on the lock). */
static __attribute__((noinline)) int wait_lock_free(tg_store *s) {
  for (unsigned i = 0; i < 4 * LOCK_SPINS; i++) {
    if (!atomic_load_explicit(&s->lock, memory_order_relaxed)) return 1;
    tg__cpu_relax();
  }
  const struct timespec ts = {0, 20000};
  for (unsigned i = 0; i < 50; i++) {
    if (!atomic_load_explicit(&s->lock, memory_order_relaxed)) return 1;
    syscall(SYS_futex, (int *)&s->lock, FUTEX_WAIT_PRIVATE, 1, &ts, NULL, 0);
  }
  return 0;
}

/* A create from the calling thread's cache, without the store lock
   (SHARDS). 1 when it ran (*rc its result, *nid and *lsn set), 0 when the
   cache cannot serve it now, 2 when the lock is held (then nothing
   changed). */
static inline __attribute__((always_inline)) int create_unlocked(
    tg_store *s, tg__shard *sh, const tg_token *init, int durable, int *rc, uint32_t *nid,
    uint64_t *lsn) {
  /* This thread's half of the Dekker pair with drain() (busy, then
     lock; ANNOUNCING). 2: the lock is held (create() then waits for it
     to be free rather than queue on it). The cache is not looked at: its
     holder may be taking the credit back right now. */
  if (__builtin_expect(busy_enter(s, sh), 0)) return 2;
  if (__builtin_expect(!sh->credit || !sh->nslots || sh->id_next == sh->id_end ||
                           s->g.cap != NULL,
                       0)) {
    /* Refill here, beside other threads' lock-free calls; what it cannot
       give (a quota near, a wrap, no memory) the locked create decides. */
    if (s->g.cap == NULL) shard_refill_busy(s, sh, 0);
    if (!sh->credit || !sh->nslots || sh->id_next == sh->id_end || s->g.cap != NULL) {
      atomic_store_explicit(&sh->busy, 0, memory_order_release);
      return 0;
    }
  }
  uint32_t i = sh->slots[--sh->nslots], id = sh->id_next++;
  tg__graph_token_write_new(&s->g, init, i, id);
  if (durable) {
    tg_token *t = tg__arena_slot(&s->g.tokens, i);
    uint64_t l;
    int r = tg__wal_append_nowait(s->wal, TG_REC_TOKEN_PUT, t, sizeof *t, &l);
    if (__builtin_expect(r != 0, 0)) {
      /* Nobody saw it: the slot (id field 0 again) and the id go back to
         the cache. */
      tg__slot_set_u32(t, offsetof(tg_token, id), 0);
      sh->slots[sh->nslots++] = i;
      sh->id_next--;
      atomic_store_explicit(&sh->busy, 0, memory_order_release);
      *rc = r;
      *nid = 0;
      return 1;
    }
    TG__STORE_RELAXED(sh->last_lsn, l);
    *lsn = l;
  }
  tg__arena_publish_held(&s->g.tokens, id, i);
  /* Fetch the next create's slot line now: its stores then drain at
     once through the next create's exchange on busy, which otherwise
     waits for them to miss in cache (fresh memory). */
  if (__builtin_expect(sh->nslots != 0, 1))
    __builtin_prefetch(tg__arena_slot(&s->g.tokens, sh->slots[sh->nslots - 1u]), 1, 3);
  TG__STORE_RELAXED(sh->credit, sh->credit - 1u);
  TG__STORE_RELAXED(sh->created, sh->created + 1u);
  /* Release: the holder of the lock that sees busy 0 (acquire) sees this
     create whole. */
  atomic_store_explicit(&sh->busy, 0, memory_order_release);
  *rc = 0;
  *nid = id;
  return 1;
}

/* The create, once for durable stores and once for in-memory ones (a
   constant `durable`), so the in-memory path tests the log once, not at
   each step. */
static inline __attribute__((always_inline)) int create(tg_store *s, const tg_token *init,
                                                        uint32_t *id, const int durable) {
  int rc = 0;
  uint32_t nid = 0;
  uint64_t lsn = 0;
  tg_span sp;
  tg_span_begin(&sp, &site_create);
  if (durable) strict_enter(s);
  /* Relaxed: a hint; create_unlocked() decides under the Dekker pair. */
  tg__shard *sh = NULL;
  if (__builtin_expect(atomic_load_explicit(&s->nshards, memory_order_relaxed) >= 2, 0) &&
      (sh = shard_get(s)) != NULL) {
    int r = create_unlocked(s, sh, init, durable, &rc, &nid, &lsn);
    /* The lock is held (most often by another thread's refill): wait
       until it is free and try once more, rather than queue on the lock
       and hand it on (a lock-free create needs only the lock free, not
       held). */
    if (__builtin_expect(r == 2, 0) && wait_lock_free(s))
      r = create_unlocked(s, sh, init, durable, &rc, &nid, &lsn);
    if (r == 1) {
      if (__builtin_expect(sh->want_plain, 0)) announce_plain(s, sh);
      if (durable) rc = strict_wait(s, rc, lsn);
      if (id) *id = rc ? 0 : nid;
      goto out;
    }
  }
  store_lock(s);
  tg__guardian *gd = &s->gd;
  if (__builtin_expect(s->g.tokens.live >= gd->max_tokens ||
                       tg__graph_memory(&s->g) + TG__SLOT_BYTES > gd->slow_at, 0) &&
      (rc = create_admit_slow(s)))
    goto fail;
  /* The slot is written before its id is mapped (token/graph.h), and
     logged before that too: a record that cannot be logged leaves nothing
     anyone saw. */
  int64_t slot = tg__graph_token_make(&s->g, init);
  if (__builtin_expect(slot < 0, 0)) {
    rc = (int)slot;
    goto fail;
  }
  nid = s->g.tokens.cursor;
  if (durable) {
    tg_token *t = tg__arena_slot(&s->g.tokens, (uint32_t)slot);
    uint64_t l;
    if ((rc = log_rec(s, TG_REC_TOKEN_PUT, t, sizeof *t, &l))) {
      tg__graph_token_unmake(&s->g, t, nid, (uint32_t)slot);
      nid = 0;
      goto fail;
    }
    lsn = l;
  }
  tg__graph_token_publish(&s->g, nid, (uint32_t)slot);
  BUMP(s->tokens_created); /* and the quota check it passed (stats_read) */
  /* A thread new to the store claims its cache here (a second one turns
     the caches on); then each create under the lock refills it. */
  if (__builtin_expect(tl_shard.serial != s->serial, 0)) sh = shard_find(s);
  if (sh && atomic_load_explicit(&s->nshards, memory_order_relaxed) >= 2) shard_refill(s, sh);
  store_unlock(s);
  if (durable) rc = strict_wait(s, 0, lsn);
  if (id) *id = rc ? 0 : nid;
  goto out;
fail:
  BUMP(gd->checks);
  store_unlock(s);
  if (durable) rc = strict_wait(s, rc, lsn);
  if (id) *id = 0;
out:
  if (tg_span_sampled(&sp)) {
    tg_span_attr(&sp, 0, nid);
    tg_span_attr(&sp, 1, lsn);
  }
  tg_span_end(&sp);
  return rc;
}

static __attribute__((noinline)) int create_durable(tg_store *s, const tg_token *init,
                                                    uint32_t *id) {
  REFUSE_READ_ONLY(s); /* a replica has a log but takes no writes */
  return create(s, init, id, 1);
}

int tg_token_create(tg_store *s, const tg_token *init, uint32_t *id) {
  TG__CALL_GUARD(s);
  if (s->wal) return create_durable(s, init, id);
  REFUSE_READ_ONLY(s); /* a read-only handle has no log */
  return create(s, init, id, 0);
}

/*
 * STRIPES: connects, disconnects and updates without the store lock.
 *
 * Once the caches are on (a second thread created tokens, SHARDS), a
 * connect, a disconnect, a token update and a connection update first
 * try to run without the store lock, under adjacency locks instead: one
 * lock per stripe of token ids, the version of the lists of the
 * stripe's tokens (g.lver[(id - 1) % TG__SEQ_STRIPES], token/graph.h),
 * held odd for the call, so its list changes open no section of their
 * own. Why: with the bench's mix (every 4th create followed by a
 * connect) two writers on the one store lock took turns, and each turn
 * emptied the other's lock-free creates (they withdraw while the lock
 * is held) and parked one of them on the futex: two writers made 0.3x
 * the creates of one (perf: 110,000 futex calls per 5 M calls, the
 * writers off-CPU two thirds of the time; docs/benchmarks.md).
 *  - Entry: the call announces itself on its cache's busy word and checks
 *    the store lock, the Dekker pair of the lock-free creates (SHARDS):
 *    so whatever runs under the store lock (deletes, batches, evictions,
 *    a checkpoint's capture and steps, scans, quota refusals) still runs
 *    alone, and a striped call never begins while the lock is held or a
 *    capture runs (it then takes the lock as before).
 *  - Locks: a call locks the stripes of the tokens it touches: a connect
 *    and a disconnect both endpoints', in stripe order (one lock when they
 *    share a stripe), a token update the token's, a connection update its
 *    endpoints'. It never waits for the store lock while it holds one, and
 *    the store lock's holder waits for striped calls only through busy, so
 *    there is no cycle. A connection's out links change only under its
 *    `from`'s lock and its in links only under its `to`'s (token/graph.h),
 *    a token's list heads and degrees only under its own.
 *  - Order in the log: each call checks what it depends on (the tokens
 *    live, the connection live with its endpoints, the degree quota) and
 *    claims its LSN while it holds those locks, so two calls that touch a
 *    token are logged in the order they changed it, and replay (in LSN
 *    order) re-executes the same graph; calls that share no token commute.
 *    What they depend on was made before (a token is found only once its
 *    create was logged, SHARDS; a connection only once its connect was)
 *    or is changed only under the store lock (token deletes, which wait
 *    for every striped call), so it was logged earlier.
 *  - Resources come from the thread's cache as a create's do: connection
 *    ids (a run in one map chunk, whose dirty bitmap exists), slots, and
 *    connection quota credit counted in conns.live when given. A striped
 *    disconnect keeps the slot in the cache and turns the connection into
 *    credit (live and memory unchanged), so it touches no free list and no
 *    shared counter. Slot changes are write sections that take their
 *    counter with a compare-and-swap (arena.h), and dirty marks are atomic.
 *  - A token chunk without a side table yet gets one from the first
 *    striped connect into it, under alloc_lock inside busy
 *    (adj_reserve_busy()), while the memory below the pressure point has
 *    room for it; an empty cache is refilled likewise (SHARDS).
 *  - Anything else goes to the locked path, which decides exactly: a
 *    missing token or connection, a side table or a refill that would
 *    pass the pressure point, a degree past its limit. Nothing changed
 *    before that.
 * Token deletes and batches keep the store lock: a delete removes every
 * connection of the token, whose neighbours' stripes are not known before
 * the lists are read, and a batch may touch any token.
 */
static void stripe_lock_slow(atomic_int *l) {
  for (unsigned i = 0; i < LOCK_SPINS; i++) {
    int c = 0;
    if (atomic_load_explicit(l, memory_order_relaxed) == 0 &&
        atomic_compare_exchange_weak_explicit(l, &c, 1, memory_order_acquire,
                                              memory_order_relaxed))
      return;
    tg__cpu_relax();
  }
  /* 2: held with a possible waiter (Drepper, "Futexes Are Tricky", mutex
     2); the exchange is the acquire when it returns 0. */
  while (atomic_exchange_explicit(l, 2, memory_order_acquire) != 0) futex_wait(l, 2);
}

static inline void stripe_lock(atomic_int *l) {
  int c = 0;
  if (__builtin_expect(!atomic_compare_exchange_strong_explicit(
                           l, &c, 1, memory_order_acquire, memory_order_relaxed),
                       0))
    stripe_lock_slow(l);
}

static inline void stripe_unlock(atomic_int *l) {
  if (__builtin_expect(atomic_exchange_explicit(l, 0, memory_order_release) == 2, 0))
    futex_wake(l);
}

/* An adjacency lock: the list version of a stripe (token/graph.h), odd
   while held. Taken by a compare-and-swap from even to odd; released by a
   release store of the next even value and a look at lver_sleepers, the
   store lock's protocol (LOCKING): a waiter spins, then counts itself in
   lver_sleepers, runs membarrier (the release's half of the Dekker pair),
   and parks on the word until a release wakes it. Two writers meet on a
   stripe when their ids fall 4096 apart, which happens when one was
   preempted while the other created thousands of tokens; a waiter then
   waits for a preempted holder, and parks once instead of waking every
   20 us (tg-bench concurrent at load 7: 168 sleeps a run for 45 waits). */
static inline int lver_trylock(uint32_t *v) {
  uint32_t c = __atomic_load_n(v, __ATOMIC_RELAXED);
  if (!(c & 1u) &&
      __atomic_compare_exchange_n(v, &c, c + 1u, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
    /* As in tg__seq_begin(): the odd counter before the lists' stores. */
    __atomic_thread_fence(__ATOMIC_RELEASE);
    return 1;
  }
  return 0;
}

/* Wait until adjacency lock v is free (even), without taking it, or, with
   take, take it. A spin, then a park on the word. */
static __attribute__((noinline)) void lver_wait(tg_store *s, uint32_t *v, int take) {
  for (unsigned i = 0; i < 4 * LOCK_SPINS; i++) {
    if (take ? lver_trylock(v) : !(__atomic_load_n(v, __ATOMIC_ACQUIRE) & 1u)) return;
    tg__cpu_relax();
  }
  /* seq_cst: this thread's half of the Dekker pair with lver_unlock(). */
  atomic_fetch_add_explicit(&s->lver_sleepers, 1, memory_order_seq_cst);
  if (lock_membarrier) heavy_barrier();
  for (;;) {
    uint32_t c = __atomic_load_n(v, __ATOMIC_ACQUIRE);
    if (take ? lver_trylock(v) : !(c & 1u)) break;
    /* Returns at once when the word moved since c. */
    if (c & 1u) syscall(SYS_futex, v, FUTEX_WAIT_PRIVATE, c, NULL, NULL, 0);
  }
  atomic_fetch_sub_explicit(&s->lver_sleepers, 1, memory_order_relaxed);
}

static inline void lver_unlock(tg_store *s, uint32_t *v) {
  /* Release: the lists' stores before the even counter (walks). The load
     is the holder's own odd value: only the holder stores while odd. */
  __atomic_store_n(v, __atomic_load_n(v, __ATOMIC_RELAXED) + 1u, __ATOMIC_RELEASE);
  /* The releaser's half of the Dekker pair with lver_lock_slow(), as in
     store_unlock(). */
  if (__builtin_expect(lock_membarrier, 1))
    atomic_signal_fence(memory_order_seq_cst);
  else
    atomic_thread_fence(memory_order_seq_cst);
  if (__builtin_expect(atomic_load_explicit(&s->lver_sleepers, memory_order_relaxed) != 0, 0))
    syscall(SYS_futex, v, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* Lock the stripes of tokens a and b (one when shared): their list
   versions, held odd for the call (token/graph.h). A call never waits for
   one while it holds the other: walks of the held stripe's lists spin
   while it is odd, and must not spin for as long as another holder was
   preempted. So it takes the first, tries the second, and when that is
   held lets the first go and waits for the second to be free first. */
static inline void stripes_lock(tg_store *s, uint32_t a, uint32_t b) {
  uint32_t *x = tg__graph_lver(&s->g, a), *y = tg__graph_lver(&s->g, b);
  for (;;) {
    if (__builtin_expect(!lver_trylock(x), 0)) lver_wait(s, x, 1);
    if (__builtin_expect(y == x || lver_trylock(y), 1)) return;
    lver_unlock(s, x);
    lver_wait(s, y, 0);
  }
}

static inline void stripes_unlock(tg_store *s, uint32_t a, uint32_t b) {
  uint32_t *x = tg__graph_lver(&s->g, a), *y = tg__graph_lver(&s->g, b);
  lver_unlock(s, x);
  if (y != x) lver_unlock(s, y);
}

/* Enter a striped call: 1 with *out the thread's cache (busy set,
   tg__tl_striped set), 0 when the call must take the store lock. */
static inline int striped_enter(tg_store *s, tg__shard **out) {
  /* Relaxed: a hint, as in create(); the Dekker pair below decides. */
  if (__builtin_expect(atomic_load_explicit(&s->nshards, memory_order_relaxed) < 2, 1))
    return 0;
  tg__shard *sh = shard_get(s);
  if (!sh) return 0;
  /* This thread's half of the Dekker pair with drain() (busy, then
     lock), as in create_unlocked(). */
  if (__builtin_expect(busy_enter(s, sh), 0)) return 0;
  if (__builtin_expect(s->g.cap != NULL, 0)) {
    atomic_store_explicit(&sh->busy, 0, memory_order_release);
    return 0;
  }
  tg__tl_striped = 1;
  *out = sh;
  return 1;
}

static inline void striped_leave(tg__shard *sh) {
  tg__tl_striped = 0;
  /* Release: the lock holder that sees busy 0 (acquire) sees the call
     whole. */
  atomic_store_explicit(&sh->busy, 0, memory_order_release);
}

/* Live object `id` of arena a, for a striped call: acquire loads of the
   map chunk and entry (a lock-free create or a striped connect may have
   just published it), then its id field. NULL when not live. */
static inline void *live_acquire(const tg__arena *a, uint32_t id) {
  const uint32_t *m = __atomic_load_n(&a->map[TG__ID_CHUNK(id)], __ATOMIC_ACQUIRE);
  uint32_t e = m ? __atomic_load_n(&m[TG__ID_ENTRY(id)], __ATOMIC_ACQUIRE) : 0;
  if (!e) return NULL;
  void *p = tg__arena_slot(a, e - 1u);
  return tg__slot_u32(p, a->id_off) == id ? p : NULL;
}

static uint64_t missing_adj_bytes(const tg__graph *g, uint32_t from, uint32_t to) {
  uint32_t cf = tg__graph_token_chunk(g, from), ct = tg__graph_token_chunk(g, to);
  uint64_t n = !g->adj[cf];
  if (ct != cf && !g->adj[ct]) n++;
  return n * TG__ADJ_TABLE_BYTES;
}

/* The side table of live token `id` exists. Acquire: tables are made
   under the store lock or under alloc_lock by a striped connect of
   another thread (adj_reserve_busy()), which stores the pointer with
   release; this thread's later plain loads of it then follow the store. */
static inline int has_adj(const tg__graph *g, uint32_t id) {
  return __atomic_load_n(&g->adj[tg__graph_token_chunk(g, id)], __ATOMIC_ACQUIRE) != NULL;
}

/* Make the side tables of live tokens a and b without the store lock,
   inside busy, under alloc_lock (which orders the graph's table state,
   nadj and the region carved from, with other threads' refills and
   reserves; the store lock's holder waits out busy). Only while the
   memory below the point where pressure is handled has room for them, so
   no quota can be crossed; otherwise 0 and the locked connect decides. */
static __attribute__((noinline)) int adj_reserve_busy(tg_store *s, uint32_t a, uint32_t b) {
  tg__graph *g = &s->g;
  int ok = 0;
  tg__spare_defer_begin(); /* as in shard_refill_busy() */
  stripe_lock(&s->alloc_lock);
  if (tg__graph_memory(g) + missing_adj_bytes(g, a, b) <= s->gd.slow_at)
    ok = tg__graph_reserve_adj(g, a, b) == 0;
  stripe_unlock(&s->alloc_lock);
  tg__spare_defer_end();
  return ok;
}

/* A striped connect (STRIPES). 1 when it ran (*rc its result, *nid and
   *lsn set), 0 when the locked path must decide (nothing changed). */
static int connect_striped(tg_store *s, tg__shard *sh, const tg_connection *init, int *rc,
                           uint32_t *nid, uint64_t *lsn) {
  tg__graph *g = &s->g;
  uint32_t from = init->from, to = init->to;
  if (__builtin_expect(!sh->ccredit || !sh->ncslots || sh->cid_next == sh->cid_end, 0)) {
    /* Inside busy, no capture running (striped_enter()): as a create. */
    shard_refill_busy(s, sh, 1);
    if (!sh->ccredit || !sh->ncslots || sh->cid_next == sh->cid_end) return 0;
  }
  for (int tries = 0;; tries++) {
    stripes_lock(s, from, to);
    if (!live_acquire(&g->tokens, from) || !live_acquire(&g->tokens, to)) {
      stripes_unlock(s, from, to);
      return 0;
    }
    if (has_adj(g, from) && has_adj(g, to)) break;
    stripes_unlock(s, from, to);
    /* The first connect of a token chunk makes its side table here, as a
       refill takes slots: under alloc_lock, inside busy, so no other
       writer stops (one made under the store lock waited out the other
       writers' busy words: thousands of 20 us sleeps a run of tg-bench
       concurrent with two writers). Both tokens stay live meanwhile
       (deletes take the store lock). */
    if (tries || !adj_reserve_busy(s, from, to)) return 0;
  }
  if (tg__graph_degree(g, from) + 1 + (from == to) > s->gd.max_degree ||
      tg__graph_degree(g, to) + 1 > s->gd.max_degree) {
    stripes_unlock(s, from, to);
    return 0;
  }
  uint32_t id = sh->cid_next++, slot = sh->cslots[--sh->ncslots];
  if (s->wal) {
    /* The record before the change, as a create's (so a failed append
       leaves nothing): the image tg__graph_connect() would log, links 0. */
    tg_connection img = *init;
    img.id = id;
    img.reserved0 = img.reserved1 = img.reserved2 = 0;
    img.next_out = img.prev_out = img.next_in = img.prev_in = 0;
    uint64_t l;
    int r = tg__wal_append_nowait(s->wal, TG_REC_CONN_PUT, &img, sizeof img, &l);
    if (__builtin_expect(r != 0, 0)) {
      sh->cslots[sh->ncslots++] = slot; /* nobody saw either */
      sh->cid_next--;
      stripes_unlock(s, from, to);
      *rc = r;
      *nid = 0;
      return 1;
    }
    TG__STORE_RELAXED(sh->last_lsn, l);
    *lsn = l;
  }
  tg__graph_connect_held(g, init, id, slot);
  stripes_unlock(s, from, to);
  /* As in create_unlocked(): the next connect's slot line ahead. */
  if (__builtin_expect(sh->ncslots != 0, 1))
    __builtin_prefetch(tg__arena_slot(&g->conns, sh->cslots[sh->ncslots - 1u]), 1, 3);
  TG__STORE_RELAXED(sh->ccredit, sh->ccredit - 1u);
  TG__STORE_RELAXED(sh->connected, sh->connected + 1u);
  *rc = 0;
  *nid = id;
  return 1;
}

/* A striped disconnect: as connect_striped(), 1 when it ran. */
static int disconnect_striped(tg_store *s, tg__shard *sh, uint32_t id, int *rc,
                              uint64_t *lsn) {
  tg__graph *g = &s->g;
  tg_connection c;
  /* Room for the slot, and credit bounded (a cache holding much would
     make the quota checks under the lock take it back more often). */
  if (sh->ncslots >= TG__SHARD_CSLOTS || sh->ccredit >= 2 * TG__SHARD_BLOCK) return 0;
  if (!tg__graph_conn_read(g, id, &c)) return 0;
  /* Its endpoints never change while it lives (ids are not reused), so
     once locked, a connection still live is the one read. */
  stripes_lock(s, c.from, c.to);
  if (!live_acquire(&g->conns, id)) {
    stripes_unlock(s, c.from, c.to);
    return 0;
  }
  if (s->wal) {
    uint64_t l;
    int r = tg__wal_append_nowait(s->wal, TG_REC_CONN_DEL, &id, sizeof id, &l);
    if (__builtin_expect(r != 0, 0)) {
      stripes_unlock(s, c.from, c.to);
      *rc = r;
      return 1;
    }
    TG__STORE_RELAXED(sh->last_lsn, l);
    *lsn = l;
  }
  sh->cslots[sh->ncslots++] = tg__graph_disconnect_held(g, id);
  stripes_unlock(s, c.from, c.to);
  TG__STORE_RELAXED(sh->ccredit, sh->ccredit + 1u);
  *rc = 0;
  return 1;
}

/* A striped token update: 1 when it ran. */
static int token_update_striped(tg_store *s, tg__shard *sh, const tg_token *t, int *rc,
                                uint64_t *lsn) {
  tg__graph *g = &s->g;
  stripes_lock(s, t->id, t->id);
  if (!live_acquire(&g->tokens, t->id)) {
    stripes_unlock(s, t->id, t->id);
    return 0;
  }
  tg_token img = *t;
  img.flags = (uint16_t)((img.flags & ~TG_TOKEN_DIRTY) | TG_TOKEN_ACTIVE);
  tg__graph_mark_token(g, &img, img.id);
  if (s->wal) {
    uint64_t l;
    int r = tg__wal_append_nowait(s->wal, TG_REC_TOKEN_PUT, &img, sizeof img, &l);
    if (__builtin_expect(r != 0, 0)) {
      stripes_unlock(s, t->id, t->id);
      *rc = r;
      return 1;
    }
    TG__STORE_RELAXED(sh->last_lsn, l);
    *lsn = l;
  }
  tg__graph_token_write(g, img.id, &img);
  stripes_unlock(s, t->id, t->id);
  *rc = 0;
  return 1;
}

/* The record of a connection update: the image after it (cur with c's
   mutable fields), links 0, so that replay and tg-replay dump see the
   connection as it now is. */
static tg_connection conn_update_image(const tg_connection *cur, const tg_connection *c) {
  tg_connection img = *cur;
  tg__conn_take_mutable(&img, c);
  img.next_out = img.prev_out = img.next_in = img.prev_in = 0;
  return img;
}

/* A striped connection update: 1 when it ran. */
static int conn_update_striped(tg_store *s, tg__shard *sh, const tg_connection *c, int *rc,
                               uint64_t *lsn) {
  tg__graph *g = &s->g;
  tg_connection cur;
  if (!tg__graph_conn_read(g, c->id, &cur)) return 0;
  stripes_lock(s, cur.from, cur.to);
  tg_connection *p = live_acquire(&g->conns, c->id);
  if (!p) {
    stripes_unlock(s, cur.from, cur.to);
    return 0;
  }
  if (cur.from != c->from || cur.to != c->to) {
    *rc = TG_EINVAL; /* the endpoints are the connection's identity */
  } else {
    *rc = 0;
    if (s->wal) {
      /* As in tg_connection_update(): the whole image after, links 0.
         Plain copy: both endpoints' locks exclude every other writer of
         this slot. */
      tg_connection img = conn_update_image(p, c);
      uint64_t l;
      *rc = tg__wal_append_nowait(s->wal, TG_REC_CONN_UPDATE, &img, sizeof img, &l);
      if (!*rc) {
        TG__STORE_RELAXED(sh->last_lsn, l);
        *lsn = l;
      }
    }
    if (!*rc) *rc = tg__graph_conn_update(g, c);
  }
  stripes_unlock(s, cur.from, cur.to);
  return 1;
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
  tg__shard *sh;
  if (striped_enter(s, &sh)) {
    int done = token_update_striped(s, sh, t, &rc, &lsn);
    striped_leave(sh);
    if (done) return strict_wait(s, rc, lsn);
  }
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
  /* The caller announced itself (strict_enter). */
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
  strict_enter(s);
  return delete_rec(s, TG_REC_TOKEN_DEL, id);
}

/* ---- connections ------------------------------------------------------- */


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
  tg__shard *sh = NULL;
  if (striped_enter(s, &sh)) {
    int done = connect_striped(s, sh, init, &rc, &nid, &lsn);
    striped_leave(sh);
    if (done) {
      rc = strict_wait(s, rc, lsn);
      if (id) *id = rc ? 0 : nid;
      goto span;
    }
  }
  store_lock(s);
  tg__guardian *gd = &s->gd;
  uint32_t from = init->from, to = init->to;
  int checked = 0; /* a failure after the quota check counts as a check */
  if (!tg__graph_token(&s->g, from) || !tg__graph_token(&s->g, to)) {
    rc = TG_ENOTFOUND;
    goto out;
  }
  checked = 1;
  uint64_t dfrom = tg__graph_degree(&s->g, from) + 1 + (from == to);
  uint64_t dto = tg__graph_degree(&s->g, to) + 1;
  /* Caches' credit counts in conns.live: take it back before refusing,
     so the refusal is decided on the exact count (STRIPES). */
  if (s->g.conns.live >= gd->max_connections) tg__store_reclaim_credit(s);
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
  BUMP(s->connections_created); /* and the quota check it passed */
  /* A thread new to the store claims its cache here, as a create does;
     each connect under the lock refills the cache's connection part. */
  if (__builtin_expect(tl_shard.serial != s->serial, 0)) sh = shard_find(s);
  else sh = tl_shard.sh;
  if (sh && atomic_load_explicit(&s->nshards, memory_order_relaxed) >= 2)
    shard_refill_conns(s, sh);
out:
  if (rc && checked) BUMP(gd->checks);
  rc = created(s, rc, lsn, nid, id);
span:
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
  strict_enter(s);
  tg__shard *sh;
  if (striped_enter(s, &sh)) {
    int rc = 0;
    uint64_t lsn = 0;
    int done = disconnect_striped(s, sh, id, &rc, &lsn);
    striped_leave(sh);
    if (done) return strict_wait(s, rc, lsn);
  }
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
  tg__shard *sh;
  if (striped_enter(s, &sh)) {
    int done = conn_update_striped(s, sh, c, &rc, &lsn);
    striped_leave(sh);
    if (done) return strict_wait(s, rc, lsn);
  }
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
    tg_connection img = conn_update_image(cur, c);
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
