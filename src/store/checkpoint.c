/*
 * The checkpoint of a durable store: an LMDB environment in DIR/checkpoint/
 * holding a snapshot of every token and connection as of one LSN. Opened
 * and loaded into the graph by tg_store_open(), written by tg_checkpoint()
 * and the checkpointer thread. The format is in docs/store-format.md; the
 * recovery rule in durable.c.
 *
 * Format 2 (this library writes it; format 1 is read, see below):
 *
 *   meta   "format" -> u64 2
 *          "state"  -> 44 bytes: u32 format (2), u32 id flags (bit 0:
 *                      token ids wrapped, bit 1: connection ids wrapped;
 *                      other bits zero), u64 lsn, u64 tokens, u64
 *                      connections, u32 token high-water mark, u32
 *                      connection high-water mark, u32 CRC-32 of the key
 *                      "state" and the 40 bytes before it
 *          "repl_stream_seq", "repl_epoch" -> u64 each, a replicating
 *                      store only (ship.c): the stream's position at lsn
 *   tokens u32 id   -> the 64-byte tg_token, then u32 CRC-32 of the key's
 *                      4 bytes and the 64 (68 bytes)
 *   conns  u32 id   -> the 64-byte tg_connection with its links, then its
 *                      CRC-32 the same way (68 bytes)
 *
 * LMDB checks no value, so the CRC is what tells a flipped bit in a record
 * from data: every value is checked at load, and the counts in the state
 * record catch a record that went missing with its page. The high-water
 * marks are the arenas' id cursors when the snapshot was taken: the last
 * ids the store had issued. They restore the cursors, so an id deleted
 * before the checkpoint is not handed out again after a restart; and
 * until the id space wraps (the flags) they are the highest ids issued,
 * which bound every id in the checkpoint and in the log replayed after it
 * (tg__arena_may_put()).
 *
 * Format 1 (no "state", "lsn" -> u64, 64-byte values without a CRC) is
 * loaded as it is, its ids unbounded, and the next checkpoint rewrites the
 * whole file in format 2 in one transaction (ckpt_full).
 *
 * Before LMDB is handed data.mdb, lmdb_check.c reads the whole file and
 * checks its structure: LMDB trusts every byte of it.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "store/checkpoint.h"
#include "common/crc32.h"
#include "common/endian.h"
#include "common/io.h"
#include "common/path.h"
#include "common/platform.h"
#include "store/lmdb_check.h"

/* The checkpoint's format ("format" in the meta database). */
#define TG__CKPT_FORMAT 2u
#define VALUE_BYTES 68u  /* format 2: image + CRC */
#define STATE_BYTES 44u
#define HW_UNKNOWN 0xFFFFFFFFu
/* Replication (docs/store-format.md): the stream sequence of the last WAL
   message the checkpoint's LSN covers wholly, and its epoch; u64 each,
   absent when the store never replicated. */
#define REPL_SEQ_KEY "repl_stream_seq"
#define REPL_EPOCH_KEY "repl_epoch"

/* What lmdb_check.c lets through: the three named databases and nothing
   else, with the key and value sizes either format can have. */
enum { DB_META, DB_TOKENS, DB_CONNS };
static const tg__lmdb_schema ckpt_schema[] = {
    [DB_META] = {"meta", 0, 1, 16, 8, STATE_BYTES},
    [DB_TOKENS] = {"tokens", MDB_INTEGERKEY, 4, 4, 64, VALUE_BYTES},
    [DB_CONNS] = {"conns", MDB_INTEGERKEY, 4, 4, 64, VALUE_BYTES},
};

/*
 * The checkpoint environment uses MDB_WRITEMAP: a first checkpoint of the
 * reference workload is one 720 MB transaction, and without WRITEMAP LMDB
 * keeps at most 131,072 dirty pages in memory and spills the rest, which
 * made checkpoints slow down with size (measured with tg-bench replay:
 * 3.3 M tokens/s at 4 M tokens, 1.5 M/s at 9.5 M). With WRITEMAP, LMDB sizes
 * the data file to the map size, so the map is kept at about twice the data
 * and grown before a transaction that needs more (grow_map()).
 * LMDB extends the file with ftruncate, which leaves a hole: a store into a
 * hole of a mapped file on a full disk is a SIGBUS, not an error. So the
 * whole map is allocated with fallocate (through the I/O seam) before any
 * transaction writes into it (reserve()), and a full disk is TG_ENOSPC.
 * Since the map is now real space, a new store starts with 8 MiB (it was
 * 64 MiB of holes); grow_map() sizes it for every transaction anyway.
 */
#define LMDB_MAPSIZE_MIN (8ull << 20)

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

/* ---- pacing -----------------------------------------------------------------
 * A checkpoint is background work on cores the application is using: on
 * 2 cores with a writer and a reader running, its CPU time (a first
 * checkpoint of 2 M tokens: about 0.1 s to capture, 0.5-1.3 s to write
 * LMDB, faulting the file's pages in through the map) comes out of
 * theirs. Whoever waits while it runs stands still, and so does the WAL's
 * writer thread that a BALANCED writer's pacing waits for. So:
 *  - the LMDB write, most of the CPU time and no lock a writer needs, runs
 *    on a thread of its own, CKPT_NICE above the caller's nice, so that it
 *    takes a smaller share of contended cores (a thread's nice cannot be
 *    lowered again without privilege, so the caller's own thread is left
 *    as it is); the capture stays on the caller's thread at its priority,
 *    because its store lock holds must not wait for a low-priority thread
 *    the scheduler preempted;
 *  - REST: both work in bursts of at most PACE_BURST_NS of CPU time and,
 *    when the cores are contended (more runnable threads than online
 *    CPUs, /proc/loadavg), sleep PACE_REST_NS after each, at a point
 *    where they hold no lock. A thread the checkpoint displaced gets its
 *    core back after one burst. They used to sched_yield() there instead,
 *    and that did not give way: perf sched during tg-bench concurrent's
 *    stall phase showed the nice-10 LMDB thread running 35-65 ms at a
 *    stretch, a hundred yields in each, while the application's writer
 *    waited on that core's run queue for 44-51 ms (under EEVDF a yield
 *    only moves the yielder's own deadline; who runs next is still
 *    decided by eligibility, and a thread that has been running is often
 *    not eligible). A sleeping thread cannot be picked. On idle cores it
 *    does not rest, so a checkpoint there is as fast as before; on busy
 *    ones it takes longer, but it always progresses (at least one burst
 *    per PACE_REST_NS plus the scheduler's wait), so tg_checkpoint() and
 *    close still end: unlike SCHED_IDLE, tried and dropped, which gave
 *    the checkpoint only the time nobody else wanted, none on cores the
 *    application keeps busy.
 *  - NO WRITEBACK STEPS: the write used to hand the disk the LMDB file a
 *    step at a time (sync_file_range every 16,384 records), so that the
 *    commit's msync would find little left. It found everything: with
 *    MDB_WRITEMAP, LMDB's commit clears the dirty flag in the header of
 *    every page the transaction wrote (mdb_page_flush), which dirties each
 *    page again, and the msync writes it again. A checkpoint of 1 M tokens
 *    (84 MB of pages) wrote 168.5 MB to the disk with the steps and 83.9
 *    MB without, in 1.24-1.31 s of CPU against 0.76 s (each step also
 *    write-protected the pages it wrote, one TLB shootdown of the other
 *    cores a page). So the file goes to the disk once, at the commit.
 */
#define CKPT_NICE 10
#define PACE_BURST_NS 500000ull /* 0.5 ms */
#define PACE_REST_NS 500000L    /* 0.5 ms */
#define PACE_EVERY 256u         /* records between two looks at the clock */

typedef struct ckpt_pace {
  uint64_t cpu0; /* the thread's CPU time when the burst began */
  uint32_t n;    /* records since the last look */
  int load_fd;   /* /proc/loadavg, or -1: then always rest */
} ckpt_pace;

static uint64_t thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void pace_init(ckpt_pace *p) {
  p->cpu0 = thread_cpu_ns();
  p->n = 0;
  /* Not the store's data: a read of the kernel's counters, outside the
     I/O seam like every read. */
  p->load_fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
}

static void pace_done(ckpt_pace *p) {
  if (p->load_fd >= 0) close(p->load_fd);
  p->load_fd = -1;
}

/* Whether some thread waits for a core right now: more runnable threads
   (this one included) than online CPUs, from /proc/loadavg's fourth
   field ("R/T"). Unknown: yes, so that the checkpoint rests. */
static int cores_contended(ckpt_pace *p) {
  static _Atomic long ncpu; /* relaxed: any thread's answer is the same */
  long n = atomic_load_explicit(&ncpu, memory_order_relaxed);
  if (!n) {
    n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    atomic_store_explicit(&ncpu, n, memory_order_relaxed);
  }
  char b[128];
  ssize_t r = p->load_fd >= 0 ? pread(p->load_fd, b, sizeof b - 1, 0) : -1;
  if (r <= 0) return 1;
  b[r] = 0;
  const char *q = b;
  for (int f = 0; f < 3 && q; f++) { /* skip the three averages */
    q = strchr(q, ' ');
    if (q) q++;
  }
  if (!q) return 1;
  long running = strtol(q, NULL, 10);
  return running > n;
}

_Atomic uint64_t tg__ckpt_rests;

/* At a point where the thread holds no lock another thread waits for. */
static void pace_now(ckpt_pace *p) {
  p->n = 0;
  uint64_t now = thread_cpu_ns();
  if (now - p->cpu0 < PACE_BURST_NS) return;
  if (cores_contended(p)) {
    struct timespec ts = {0, PACE_REST_NS};
    nanosleep(&ts, NULL);
    atomic_fetch_add_explicit(&tg__ckpt_rests, 1, memory_order_relaxed);
  }
  p->cpu0 = thread_cpu_ns();
}

static inline void pace_record(ckpt_pace *p) {
  if (p && ++p->n >= PACE_EVERY) pace_now(p);
}

/* ---- the records ---------------------------------------------------------- */

static uint32_t value_crc(uint32_t key, const void *image) {
  unsigned char k[4];
  tg__st32(k, key);
  return tg__crc32(tg__crc32(0, k, sizeof k), image, 64);
}

typedef struct ckpt_state {
  uint32_t format;
  uint64_t lsn, tokens, conns;
  uint32_t tokens_hw, conns_hw;
  uint32_t id_flags; /* CKPT_TOKENS_WRAPPED | CKPT_CONNS_WRAPPED */
} ckpt_state;

#define CKPT_TOKENS_WRAPPED 1u
#define CKPT_CONNS_WRAPPED 2u

static uint32_t state_crc(const unsigned char *b) {
  return tg__crc32(tg__crc32(0, "state", 5), b, STATE_BYTES - 4);
}

static void state_encode(const ckpt_state *st, unsigned char *b) {
  memset(b, 0, STATE_BYTES);
  tg__st32(b, st->format);
  tg__st32(b + 4, st->id_flags);
  tg__st64(b + 8, st->lsn);
  tg__st64(b + 16, st->tokens);
  tg__st64(b + 24, st->conns);
  tg__st32(b + 32, st->tokens_hw);
  tg__st32(b + 36, st->conns_hw);
  tg__st32(b + 40, state_crc(b));
}

/* 0, or TG_ECORRUPT when the bytes are not a state record. */
static int state_decode(const void *v, size_t n, ckpt_state *st) {
  const unsigned char *b = v;
  if (n != STATE_BYTES || tg__ld32(b + 40) != state_crc(b) ||
      (tg__ld32(b + 4) & ~(CKPT_TOKENS_WRAPPED | CKPT_CONNS_WRAPPED)))
    return TG_ECORRUPT;
  st->format = tg__ld32(b);
  st->id_flags = tg__ld32(b + 4);
  st->lsn = tg__ld64(b + 8);
  st->tokens = tg__ld64(b + 16);
  st->conns = tg__ld64(b + 24);
  st->tokens_hw = tg__ld32(b + 32);
  st->conns_hw = tg__ld32(b + 36);
  return 0;
}

static int meta_get(MDB_txn *txn, MDB_dbi dbi, const char *key, MDB_val *v) {
  MDB_val k = {strlen(key), (void *)key};
  return mdb_get(txn, dbi, &k, v);
}

static int meta_get_u64(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t *out) {
  MDB_val v;
  int rc = meta_get(txn, dbi, key, &v);
  if (rc) return rc;
  if (v.mv_size != sizeof *out) return MDB_CORRUPTED;
  memcpy(out, v.mv_data, sizeof *out);
  return 0;
}

static int meta_put(MDB_txn *txn, MDB_dbi dbi, const char *key, const void *val, size_t n) {
  MDB_val k = {strlen(key), (void *)key}, v = {n, (void *)val};
  return mdb_put(txn, dbi, &k, &v, 0);
}

static int meta_put_u64(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t val) {
  return meta_put(txn, dbi, key, &val, sizeof val);
}

static int state_put(MDB_txn *txn, MDB_dbi dbi, const ckpt_state *st) {
  unsigned char b[STATE_BYTES];
  state_encode(st, b);
  return meta_put(txn, dbi, "state", b, sizeof b);
}

/* ---- the file ------------------------------------------------------------- */

/* Allocate data.mdb up to the map size, so that no store through the map
   lands in a hole (see LMDB_MAPSIZE_MIN). A file system that cannot
   preallocate (-EOPNOTSUPP) is left as it is. Caller holds ckpt_mu or is
   the open. */
static int reserve(tg_store *s) {
  MDB_envinfo ei;
  int fd = -1, mrc = mdb_env_info(s->env, &ei);
  if (!mrc) mrc = mdb_env_get_fd(s->env, &fd);
  if (mrc) return from_mdb(mrc);
  if (ei.me_mapsize <= s->ckpt_reserved) return 0;
  int rc = tg__fallocate(fd, 0, (off_t)ei.me_mapsize);
  if (rc == -EOPNOTSUPP) rc = 0;
  if (rc) return rc == -ENOSPC ? TG_ENOSPC : rc == -EIO ? TG_EIO : rc;
  s->ckpt_reserved = ei.me_mapsize;
  return 0;
}

/*
 * Commit txn and make it durable. The environment runs with
 * MDB_NOMETASYNC: LMDB's commit flushes the data pages before it writes
 * the meta page, and the flush of the meta page that makes the commit
 * durable is this fdatasync, through the I/O seam (tests fail it).
 * A failure here, or in the commit's own flush, poisons checkpoints until
 * the store is reopened (ckpt_failed): after a failed sync the kernel may
 * have dropped the dirty pages and LMDB's in-memory view of the file can
 * no longer be trusted to match the disk (PostgreSQL, 2018), so no later
 * transaction is built on it. The log keeps every record the checkpoint
 * would have covered (no segment is removed), and the next open reads
 * whichever snapshot reached the disk, checked page by page and value by
 * value.
 */
static int commit_durable(tg_store *s, MDB_txn *txn) {
  int fd = -1;
  int rc = from_mdb(mdb_txn_commit(txn));
  if (!rc) rc = from_mdb(mdb_env_get_fd(s->env, &fd));
  if (!rc) {
    rc = tg__fdatasync(fd);
    if (rc) rc = rc == -ENOSPC ? TG_ENOSPC : TG_EIO;
  }
  if (rc) s->ckpt_failed = rc;
  return rc;
}

/* 0 when data.mdb, open as fd (a regular file, checked by
   tg__dir_open_file(); st its fstat), may be handed to LMDB, 1 when it
   holds no checkpoint (empty, or never committed to), or an error with msg
   set. *txnid (may be NULL) gets the transaction of the meta page checked. */
static int check_file(int fd, const struct stat *st, const char *data, uint64_t *txnid,
                      char *msg, size_t len) {
  tg__lmdb_info info;
  if (st->st_size == 0) return 1; /* LMDB initialises an empty file: a
                                     checkpoint still to be made */
  int rc = tg__lmdb_check(fd, data, ckpt_schema, 3, &info, msg, len);
  if (rc) return rc;
  if (txnid) *txnid = info.txnid;
  return info.txnid == 0;
}

/* The newest transaction id of data.mdb's two meta pages (open as fd), or
   0 when they cannot be read: a cheap look at whether an owner committed.
   LMDB's meta: a 16-byte page header, then the meta whose free database
   record (at 24) begins with the page size, and whose txnid is at 128. */
static uint64_t newest_txnid(int fd) {
  unsigned char m[16 + 136];
  if (pread(fd, m, sizeof m, 0) != (ssize_t)sizeof m) return 0;
  uint64_t t = tg__ld64(m + 16 + 128);
  uint32_t psize = tg__ld32(m + 16 + 24);
  if (psize < 512 || psize > 32768 || (psize & (psize - 1))) return t;
  if (pread(fd, m, sizeof m, psize) != (ssize_t)sizeof m) return t;
  uint64_t t1 = tg__ld64(m + 16 + 128);
  return t1 > t ? t1 : t;
}

/* check_file() of a live data.mdb, whose owner may commit meanwhile. A
   failed check is only believed when no commit came during it: a commit
   may have torn a meta page as it was read, and without a pinned reader
   slot (before LMDB's open) the owner may reuse pages as they are walked.
   Otherwise TG_EAGAIN, and the caller tries again. */
static int check_live(int fd, const struct stat *st, const char *data, uint64_t *txnid,
                      char *msg, size_t len) {
  uint64_t before = newest_txnid(fd);
  int rc = check_file(fd, st, data, txnid, msg, len);
  if (rc < 0 && newest_txnid(fd) != before) {
    if (msg && len) msg[0] = 0;
    tg__say(msg, len, "%s: the owner committed a checkpoint while it was checked", data);
    rc = TG_EAGAIN;
  }
  return rc;
}

/* Is st (of a descriptor LMDB opened) the file we checked as want? */
static int same_file(const struct stat *st, const struct stat *want) {
  return st->st_dev == want->st_dev && st->st_ino == want->st_ino;
}

/* ---- open and load --------------------------------------------------------- */

/*
 * A live directory's checkpoint, for a read-only open while the owner may
 * commit checkpoints. The owner's environment has a reader table
 * (lock.mdb; the owner does not use MDB_NOLOCK). A reader outside that
 * table (MDB_NOLOCK) is invisible to the owner, whose third commit after
 * the reader's snapshot may reuse that snapshot's pages while they are
 * read: a torn tree, which LMDB would trust. So the environment is opened
 * with the reader table and a read transaction is begun first; its slot
 * keeps every page freed after its snapshot from reuse, and only then is
 * data.mdb (open as dfd, st its fstat) checked page by page; the state
 * and the records are then read in that same transaction, so commits
 * during the load change nothing it reads. If a commit came between the
 * pin and the check's look at the meta pages, the check saw a newer
 * snapshot than the pinned one: TG_EAGAIN, and the caller tries again (a
 * window of microseconds). The reader-table slot is the only thing
 * written, to LMDB's shared-memory lock file, and no lock is held that the
 * owner waits for: LMDB's reader mutex guards only taking a slot. envpath
 * is the pinned path of checkpoint/ (see below). Returns 0, 1 (no
 * checkpoint yet: no environment), or an error with msg set.
 */
static int pin_live(tg_store *s, const char *envpath, int dfd, const struct stat *st,
                    const char *data, char *msg, size_t len) {
  uint64_t checked = 0;
  int rc, mrc;
  if (st->st_size == 0) return 1;
  /* mdb_env_open() itself trusts the meta pages: a damaged one crashes it
     (SIGBUS past the end of the file, found by tests/fuzz/fuzz_replay.c
     through tg-replay backup). So the file is checked before LMDB sees
     it: its meta pages only, since nothing pins the trees yet (the owner
     may reuse their pages as they are walked); the whole file once a
     reader slot pins a snapshot. A check that races a commit and fails is
     answered like the second one: the caller tries again. */
  {
    tg__lmdb_info mi;
    uint64_t before = newest_txnid(dfd);
    rc = tg__lmdb_check_metas(dfd, data, &mi, msg, len);
    if (rc && newest_txnid(dfd) != before) {
      if (msg && len) msg[0] = 0;
      tg__say(msg, len, "%s: the owner committed a checkpoint while it was checked", data);
      return TG_EAGAIN;
    }
    if (rc) return rc;
    if (mi.txnid == 0) return 1; /* never committed to: no checkpoint yet */
  }
  uint64_t mapsize = (uint64_t)st->st_size > LMDB_MAPSIZE_MIN ? (uint64_t)st->st_size
                                                              : LMDB_MAPSIZE_MIN;
  if ((mrc = mdb_env_create(&s->env)) || (mrc = mdb_env_set_maxdbs(s->env, 4)) ||
      (mrc = mdb_env_set_mapsize(s->env, mapsize)) ||
      (mrc = mdb_env_open(s->env, envpath, MDB_NOTLS | MDB_RDONLY, 0600)) ||
      (mrc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->ro_pin))) {
    /* The owner grew the map between the stat and the open. */
    if (mrc == MDB_MAP_RESIZED) return TG_EAGAIN;
    tg__say(msg, len, "%s: cannot open the checkpoint for reading: %s", data,
            mdb_strerror(mrc));
    return from_mdb(mrc);
  }
  rc = check_live(dfd, st, data, &checked, msg, len);
  if (rc == 0 && checked != (uint64_t)mdb_txn_id(s->ro_pin)) rc = TG_EAGAIN;
  if (rc) { /* nothing to load from it: no environment, as without one */
    mdb_txn_abort(s->ro_pin);
    s->ro_pin = NULL;
    mdb_env_close(s->env);
    s->env = NULL;
  }
  return rc;
}

void tg__store_unpin_checkpoint(tg_store *s) {
  if (!s->ro_pin) return;
  mdb_txn_abort(s->ro_pin);
  s->ro_pin = NULL;
}

/*
 * LMDB opens its files by path (DIR/checkpoint/data.mdb, lock.mdb), with
 * no O_NOFOLLOW, and believes what it finds. So the store opens them first
 * itself, relative to checkpoint/'s descriptor (tg__dir_open_file(): no
 * link followed, no FIFO blocking, regular files only; writable: created
 * 0600 when missing, so LMDB finds ours), checks data.mdb's structure, and
 * gives LMDB /proc/self/fd/N of checkpoint/ as its directory: a path no
 * link or rename can redirect (tg__fd_path()). After mdb_env_open it checks
 * that LMDB's data descriptor is the inode that was checked, and that
 * lock.mdb is still the regular file it was. Without /proc the directory's
 * plain path is used; the checks before and after still stand.
 */
int tg__store_open_checkpoint(tg_store *s, int readonly, char *msg, size_t len) {
  char *cdir = tg__path_join_alloc(s->dir, "checkpoint"), *data = NULL;
  char envpath[4096];
  MDB_txn *txn = NULL;
  int rc = 0, mrc, cfd = -1, dfd = -1, lfd = -1, have_lock;
  struct stat dst, lst, st;
  if (!cdir || !(data = tg__path_join_alloc(cdir, "data.mdb"))) {
    rc = TG_ENOMEM;
    goto cleanup;
  }
  if ((cfd = tg__dir_open_subdir(s->dir_fd, s->dir, "checkpoint", !readonly, msg, len)) < 0) {
    rc = cfd == -ENOENT ? 0 : cfd; /* read-only, no checkpoint/: no checkpoint yet */
    goto cleanup;
  }
  /* A reader opens no lock.mdb (MDB_NOLOCK), or, live, the owner's; either
     way one the open would refuse is refused here too, so that tg-replay
     and the store reach the same verdict, whether or not data.mdb exists;
     and before the open creates data.mdb, so that a refusal changes
     nothing. */
  if ((rc = tg__dir_check_regular(cfd, cdir, "lock.mdb", msg, len))) goto cleanup;
  dfd = tg__dir_open_file(cfd, cdir, "data.mdb", readonly ? O_RDONLY : O_RDWR | O_CREAT,
                          msg, len);
  if (dfd < 0) {
    rc = dfd == -ENOENT ? 0 : dfd; /* likewise */
    goto cleanup;
  }
  if (fstat(dfd, &dst)) {
    rc = -errno;
    tg__say(msg, len, "%s: %s", data, strerror(errno));
    goto cleanup;
  }
  have_lock = fstatat(cfd, "lock.mdb", &lst, AT_SYMLINK_NOFOLLOW) == 0;
  int live = readonly == TG__CKPT_LIVE;
  /* No lock.mdb: no owner has the environment open (it makes one at its
     open), and a reader table would have to be created. Read it as a
     closed directory is read, creating nothing. */
  if (live && !have_lock) live = 0;
  if (tg__fd_path(envpath, sizeof envpath, cfd) &&
      (rc = tg__path_join(envpath, sizeof envpath, s->dir, "checkpoint")))
    goto cleanup;
  if (live) rc = pin_live(s, envpath, dfd, &dst, data, msg, len);
  else rc = check_file(dfd, &dst, data, NULL, msg, len);
  if (rc < 0) goto cleanup;
  /* An environment no transaction was ever committed to holds nothing: an
     open killed between creating data.mdb and committing the first
     transaction leaves one. It is a checkpoint still to be made, not a
     foreign file (found by stress/tg-crash --recovery-kills). */
  int existed = rc == 0;
  rc = 0;
  if (readonly && !existed) goto cleanup;
  if (!readonly) {
    lfd = tg__dir_open_file(cfd, cdir, "lock.mdb", O_RDWR | O_CREAT, msg, len);
    if (lfd < 0 || fstat(lfd, &lst)) {
      rc = lfd < 0 ? lfd : -errno;
      tg__say(msg, len, "%s/lock.mdb: %s", cdir, tg_strerror(rc));
      goto cleanup;
    }
  }
  /* Read-only: MDB_NOLOCK so that not even lock.mdb is written. */
  unsigned flags = MDB_NOTLS |
                   (readonly ? MDB_RDONLY | MDB_NOLOCK : MDB_WRITEMAP | MDB_NOMETASYNC);
  uint64_t mapsize = LMDB_MAPSIZE_MIN;
  if (existed && (uint64_t)dst.st_size > mapsize) mapsize = (uint64_t)dst.st_size;
  if (!live &&
      ((mrc = mdb_env_create(&s->env)) || (mrc = mdb_env_set_maxdbs(s->env, 4)) ||
       (mrc = mdb_env_set_mapsize(s->env, mapsize)) ||
       (mrc = mdb_env_open(s->env, envpath, flags, 0600)))) {
    rc = from_mdb(mrc);
    tg__say(msg, len, "%s: cannot open the checkpoint: %s%s", data, mdb_strerror(mrc),
            mrc == MDB_INVALID ? " (not an LMDB file: not a tokengraph checkpoint)" : "");
    goto cleanup;
  }
  {
    int efd = -1, locked = !readonly || live; /* LMDB opened lock.mdb */
    if ((mrc = mdb_env_get_fd(s->env, &efd))) goto mdb_fail;
    if (fstat(efd, &st) || !same_file(&st, &dst) ||
        (locked && (fstatat(cfd, "lock.mdb", &st, AT_SYMLINK_NOFOLLOW) ||
                    !same_file(&st, &lst)))) {
      rc = TG_ENOTTG;
      tg__say(msg, len, "%s: replaced while it was being opened (a link or another file "
              "now stands where the checked one was): refused", cdir);
      goto cleanup;
    }
  }
  if (!readonly) {
    /* LMDB made no entry durable; data.mdb and lock.mdb may be new ones. */
    if ((rc = tg__fsync(cfd))) {
      tg__say(msg, len, "%s: cannot fsync the directory: %s", cdir, tg_strerror(rc));
      goto cleanup;
    }
    if ((rc = reserve(s))) {
      tg__say(msg, len, "%s: cannot allocate %llu bytes: %s", data,
              (unsigned long long)mapsize, tg_strerror(rc));
      goto cleanup;
    }
  }
  /* Live: read in the pinned transaction, the snapshot that was checked
     (a new one could see a later commit). */
  if (live) txn = s->ro_pin;
  else if ((mrc = mdb_txn_begin(s->env, NULL, readonly ? MDB_RDONLY : 0, &txn)))
    goto mdb_fail;
  mrc = mdb_dbi_open(txn, "meta", existed ? 0 : MDB_CREATE, &s->dbi_meta);
  if (mrc == MDB_NOTFOUND || mrc == MDB_INCOMPATIBLE) {
    rc = TG_ENOTTG;
    tg__say(msg, len, "%s is an LMDB file but not a tokengraph checkpoint (no "
            "'meta' database); nothing was changed", data);
    goto cleanup;
  }
  if (mrc) goto mdb_fail;
  uint64_t fmt = 0;
  ckpt_state cs = {TG__CKPT_FORMAT, 0, 0, 0, 0, 0, 0};
  MDB_val v;
  mrc = meta_get_u64(txn, s->dbi_meta, "format", &fmt);
  if (mrc == MDB_NOTFOUND && !existed) {
    fmt = TG__CKPT_FORMAT;
    if ((mrc = meta_put_u64(txn, s->dbi_meta, "format", fmt)) ||
        (mrc = state_put(txn, s->dbi_meta, &cs)))
      goto mdb_fail;
  } else if (mrc || fmt == 0) {
    rc = TG_ENOTTG;
    tg__say(msg, len, "%s: the checkpoint has no valid format record: not a "
            "tokengraph checkpoint", data);
    goto cleanup;
  } else if ((mrc = meta_get(txn, s->dbi_meta, "state", &v)) == 0) {
    /* The state record is checksummed; its format is the one to believe. */
    if (state_decode(v.mv_data, v.mv_size, &cs) || cs.format != fmt) {
      rc = TG_ECORRUPT;
      tg__say(msg, len, "%s: key 'state': checksum or format mismatch (corrupt "
              "checkpoint)", data);
      goto cleanup;
    }
  } else if (mrc != MDB_NOTFOUND) {
    goto mdb_fail;
  } else if (fmt > TG__CKPT_FORMAT) {
    rc = TG_EVERSION;
    tg__say(msg, len, "%s: checkpoint format %llu is newer than this library's %u",
            data, (unsigned long long)fmt, TG__CKPT_FORMAT);
    goto cleanup;
  } else if (fmt == 1) {
    cs.format = 1;
    cs.tokens_hw = cs.conns_hw = HW_UNKNOWN;
    if ((mrc = meta_get_u64(txn, s->dbi_meta, "lsn", &cs.lsn))) goto mdb_fail;
  } else {
    rc = TG_ECORRUPT;
    tg__say(msg, len, "%s: format %llu without its key 'state' (corrupt "
            "checkpoint)", data, (unsigned long long)fmt);
    goto cleanup;
  }
  unsigned create = readonly ? 0 : MDB_CREATE;
  if ((mrc = mdb_dbi_open(txn, "tokens", create | MDB_INTEGERKEY, &s->dbi_tokens)) ||
      (mrc = mdb_dbi_open(txn, "conns", create | MDB_INTEGERKEY, &s->dbi_conns)))
    goto mdb_fail;
  s->ckpt_lsn = cs.lsn;
  s->ckpt_format = cs.format;
  /* Replication's position at that LSN (absent: none, 0). */
  if ((mrc = meta_get_u64(txn, s->dbi_meta, REPL_SEQ_KEY, &s->ckpt_repl_seq)) &&
      mrc != MDB_NOTFOUND)
    goto mdb_fail;
  if ((mrc = meta_get_u64(txn, s->dbi_meta, REPL_EPOCH_KEY, &s->ckpt_repl_epoch)) &&
      mrc != MDB_NOTFOUND)
    goto mdb_fail;
  mrc = 0;
  s->ckpt_full = cs.format != TG__CKPT_FORMAT;
  s->ckpt_tokens = cs.tokens;
  s->ckpt_conns = cs.conns;
  s->ckpt_tokens_hw = cs.tokens_hw;
  s->ckpt_conns_hw = cs.conns_hw;
  s->ckpt_id_flags = cs.id_flags;
  /* A replica resumes from the position its checkpoint saved (replica.c). */
  s->repl_seq = s->ckpt_repl_seq;
  s->repl_epoch = s->ckpt_repl_epoch;
  /* Committed either way: the handles opened in it live only if it is.
     Live: the handles serve the pinned transaction, which the load goes
     on reading in, and which tg__store_unpin_checkpoint() ends. */
  if (live) {
    txn = NULL;
  } else if (readonly) {
    if ((mrc = mdb_txn_commit(txn))) {
      txn = NULL;
      goto mdb_fail;
    }
  } else if ((rc = commit_durable(s, txn))) {
    tg__say(msg, len, "%s: cannot write: %s", data, tg_strerror(rc));
  }
  txn = NULL;
  goto cleanup;
mdb_fail:
  rc = from_mdb(mrc);
  tg__say(msg, len, "%s: %s", data, mdb_strerror(mrc));
cleanup:
  if (txn && txn != s->ro_pin) mdb_txn_abort(txn);
  if (lfd >= 0) close(lfd);
  if (dfd >= 0) close(dfd);
  if (cfd >= 0) close(cfd);
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
  uint32_t key = 0;
  const char *what = NULL;
  size_t vsize = s->ckpt_format == 1 ? 64u : VALUE_BYTES;
  uint64_t n[2] = {0, 0};
  int pass;
  /* The cursors resume where the checkpoint's snapshot left them (format
     1 did not record them: then the highest id loaded or replayed). */
  for (pass = 0; pass < 2; pass++) {
    tg__arena *a = pass ? &s->g.conns : &s->g.tokens;
    uint32_t hw = pass ? s->ckpt_conns_hw : s->ckpt_tokens_hw;
    int wrapped = !!(s->ckpt_id_flags & (pass ? CKPT_CONNS_WRAPPED : CKPT_TOKENS_WRAPPED));
    a->put_max = hw;
    tg__arena_set_cursor(a, hw == HW_UNKNOWN ? 0 : hw, wrapped);
  }
  /* Live (readonly.c): in the pinned transaction, whose snapshot was
     checked and whose pages the owner cannot reuse. */
  if (s->ro_pin) txn = s->ro_pin;
  else if ((mrc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn))) goto mdb_fail;
  for (pass = 0; pass < 2; pass++) {
    MDB_dbi dbi = pass ? s->dbi_conns : s->dbi_tokens;
    tg__arena *a = pass ? &s->g.conns : &s->g.tokens;
    if ((mrc = mdb_cursor_open(txn, dbi, &cur))) goto mdb_fail;
    while ((mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
      const char *kind = pass ? "connection" : "token";
      if (k.mv_size != sizeof key || v.mv_size != vsize) {
        rc = TG_ECORRUPT;
        tg__say(msg, len, "%s/checkpoint/data.mdb: a %s record of %zu bytes "
                "(corrupt checkpoint)", s->dir, kind, v.mv_size);
        goto cleanup;
      }
      memcpy(&key, k.mv_data, sizeof key);
      /* Bounded before the arena maps anything for the key. */
      if (!tg__arena_may_put(a, key)) {
        what = "is past the highest id the checkpoint says was issued";
        goto bad_key;
      }
      if (vsize == VALUE_BYTES &&
          tg__ld32((const unsigned char *)v.mv_data + 64) != value_crc(key, v.mv_data)) {
        what = "fails its checksum";
        goto bad_key;
      }
      if (pass == 0) {
        tg_token t;
        memcpy(&t, v.mv_data, sizeof t);
        if (t.id != key) goto bad_id;
        rc = tg__graph_token_put(&s->g, &t);
        s->recovery.checkpoint_tokens++;
      } else {
        tg_connection c;
        memcpy(&c, v.mv_data, sizeof c);
        if (c.id != key) goto bad_id;
        rc = tg__graph_conn_load(&s->g, &c);
        s->recovery.checkpoint_connections++;
      }
      n[pass]++;
      if (rc) {
        tg__say(msg, len, "%s/checkpoint/data.mdb: cannot load %s key %u: %s",
                s->dir, kind, key, tg_strerror(rc));
        goto cleanup;
      }
    }
    if (mrc != MDB_NOTFOUND) goto mdb_fail;
    mdb_cursor_close(cur);
    cur = NULL;
  }
  if (s->ckpt_format != 1 && (n[0] != s->ckpt_tokens || n[1] != s->ckpt_conns)) {
    rc = TG_ECORRUPT;
    tg__say(msg, len, "%s/checkpoint/data.mdb: %llu tokens and %llu connections, "
            "key 'state' says %llu and %llu (corrupt checkpoint)", s->dir,
            (unsigned long long)n[0], (unsigned long long)n[1],
            (unsigned long long)s->ckpt_tokens, (unsigned long long)s->ckpt_conns);
    goto cleanup;
  }
  rc = tg__graph_link_loaded(&s->g);
  if (rc == TG_ECORRUPT)
    tg__say(msg, len, "%s/checkpoint/data.mdb: connections and their lists disagree "
            "(corrupt checkpoint)", s->dir);
  else if (rc)
    tg__say(msg, len, "%s/checkpoint/data.mdb: cannot link the connections: %s",
            s->dir, tg_strerror(rc));
  goto cleanup;
bad_key:
  rc = TG_ECORRUPT;
  tg__say(msg, len, "%s/checkpoint/data.mdb: %s key %u %s (corrupt checkpoint)",
          s->dir, pass ? "conns" : "tokens", key, what);
  goto cleanup;
bad_id:
  rc = TG_ECORRUPT;
  tg__say(msg, len, "%s/checkpoint/data.mdb: %s key %u holds a record whose id "
          "does not match it (corrupt checkpoint)", s->dir, pass ? "conns" : "tokens", key);
  goto cleanup;
mdb_fail:
  rc = from_mdb(mrc);
  tg__say(msg, len, "%s/checkpoint/data.mdb: %s", s->dir, mdb_strerror(mrc));
cleanup:
  if (cur) mdb_cursor_close(cur);
  if (txn && txn != s->ro_pin) mdb_txn_abort(txn);
  return rc;
}

/* ---- checkpoints ---------------------------------------------------------- */

/* Put n 64-byte records (ascending ids) into dbi, each with its CRC.
   Records beyond the database's current last key go in with MDB_APPEND,
   which fills pages in order without searching: a first checkpoint of
   9.5 M tokens is all appends. */
static int put_sorted(MDB_txn *txn, MDB_dbi dbi, const void *recs, size_t n,
                      size_t id_off, ckpt_pace *pace) {
  MDB_cursor *cur = NULL;
  MDB_val k, v;
  uint32_t last = 0;
  unsigned char val[VALUE_BYTES];
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
    memcpy(val, r, 64);
    tg__st32(val + 64, value_crc(key, r));
    k.mv_size = sizeof key;
    k.mv_data = &key;
    v.mv_size = sizeof val;
    v.mv_data = val;
    mrc = mdb_cursor_put(cur, &k, &v, key > last ? MDB_APPEND : 0);
    if (key > last) last = key;
    pace_record(pace);
  }
out:
  mdb_cursor_close(cur);
  return mrc;
}

/* Make the map (and so the data file, allocated by reserve()) large enough
   for a transaction adding `records` records: what is used now, plus about
   100 bytes per record (key, node header, page slack), doubled, in whole
   pages. No transaction may be open in this environment (ckpt_mu is
   held). */
static int grow_map(tg_store *s, uint64_t records) {
  MDB_envinfo ei;
  MDB_stat st;
  int mrc = mdb_env_info(s->env, &ei);
  if (!mrc) mrc = mdb_env_stat(s->env, &st);
  if (mrc) return from_mdb(mrc);
  uint64_t used = ((uint64_t)ei.me_last_pgno + 1) * st.ms_psize;
  uint64_t want = (used + records * 100) * 2;
  want = (want + st.ms_psize - 1) / st.ms_psize * st.ms_psize;
  if (want > ei.me_mapsize && (mrc = mdb_env_set_mapsize(s->env, (size_t)want)))
    return from_mdb(mrc);
  return reserve(s);
}

/*
 * FAULTS. With MDB_WRITEMAP, LMDB writes a new page by storing into the
 * map, and the first store into each page of the (fallocated, unwritten)
 * file faults it in. The kernel serves a fault on a file map through its
 * readahead: one fault allocated and zero-filled a whole readahead window
 * of fresh page cache, and on this VM, where the host backs fresh memory
 * on first write at 0.2-0.6 GB/s, one such fault took up to 67-95 ms (a
 * probe touching 256 MB of a fallocated file through a shared map, a
 * store per 4 KiB page). A fault is one stretch on the core, which the
 * thread's bursts (pacing above) cannot cut: perf sched showed the LMDB
 * thread on a core for 34 ms ending in a fault in mdb_cursor_put. With
 * MADV_RANDOM each fault brings one page: the same probe's longest touch
 * fell to 8-12 ms under load, and its total from 0.9-1.1 s to 0.6 s. So
 * the writer's map is advised MADV_RANDOM for the write and MADV_NORMAL
 * again after it (a backup reads the file through the map). The map's
 * address is not in LMDB's API: it is the writable shared mapping of
 * data.mdb's inode at offset 0 in /proc/self/maps (a read-only handle in
 * the same process maps the file read-only). Not found: no advice, which
 * only costs the longer faults.
 */
typedef struct ckpt_map {
  void *addr;
  size_t len;
} ckpt_map;

static ckpt_map writer_map(int fd) {
  ckpt_map m = {NULL, 0};
  struct stat st;
  if (fd < 0 || fstat(fd, &st)) return m;
  FILE *f = fopen("/proc/self/maps", "re");
  if (!f) return m;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi, ino;
    unsigned long long off;
    unsigned dmaj, dmin;
    char perms[8];
    if (sscanf(line, "%lx-%lx %7s %llx %x:%x %lu", &lo, &hi, perms, &off, &dmaj, &dmin,
               &ino) != 7)
      continue;
    if (ino == (unsigned long)st.st_ino && off == 0 && perms[0] == 'r' && perms[1] == 'w' &&
        perms[3] == 's' && makedev(dmaj, dmin) == st.st_dev) {
      m.addr = (void *)lo;
      m.len = hi - lo;
      break;
    }
  }
  fclose(f);
  return m;
}

static int del_ids(MDB_txn *txn, MDB_dbi dbi, const uint32_t *ids, size_t n,
                   ckpt_pace *pace) {
  for (size_t i = 0; i < n; i++) {
    pace_record(pace);
    uint32_t key = ids[i];
    MDB_val k = {sizeof key, &key};
    int mrc = mdb_del(txn, dbi, &k, NULL);
    if (mrc && mrc != MDB_NOTFOUND) return mrc;
  }
  return 0;
}

static int snapshot_write(tg_store *s, const tg__capture *cap, uint64_t lsn,
                          uint64_t repl_seq, uint64_t repl_epoch) {
  MDB_txn *txn = NULL;
  MDB_stat ts, cs;
  MDB_val lk = {3, (void *)"lsn"};
  int mrc = 0, rc;
  ckpt_pace pace;
  int fd = -1;
  if ((rc = grow_map(s, cap->nrec[0] + cap->nrec[1]))) return rc;
  if (mdb_env_get_fd(s->env, &fd)) fd = -1;
  pace_init(&pace);
  /* After grow_map(), which may have moved the map (FAULTS, above). */
  ckpt_map map = writer_map(fd);
  if (map.addr) (void)madvise(map.addr, map.len, MADV_RANDOM);
  /* A read-only process killed while it loaded the checkpoint leaves its
     slot in the reader table, and LMDB would keep every page freed since
     that snapshot forever: clear slots whose process is gone (readonly.c
     takes slots; the check is a scan of the table). */
  int dead = 0;
  mdb_reader_check(s->env, &dead);
  if ((mrc = mdb_txn_begin(s->env, NULL, 0, &txn))) goto cleanup;
  /* A full rewrite replaces the databases in the same transaction: a crash
     leaves the old checkpoint or the new one. */
  if (cap->full &&
      ((mrc = mdb_drop(txn, s->dbi_tokens, 0)) || (mrc = mdb_drop(txn, s->dbi_conns, 0)) ||
       (mrc = meta_put_u64(txn, s->dbi_meta, "format", TG__CKPT_FORMAT)) ||
       ((mrc = mdb_del(txn, s->dbi_meta, &lk, NULL)) && mrc != MDB_NOTFOUND)))
    goto cleanup;
  /* Format 2 has no "lsn" key: a whole rewrite of it (after a failed
     checkpoint that took token deletes) found none to delete, which is
     no error. It used to skip the writes below and fail the checkpoint
     with TG_EIO (test_checkpoint). */
  if (mrc == MDB_NOTFOUND) mrc = 0;
  /* Units in order: connections in ascending ids, tokens in slot order. */
  for (int kind = 0; kind < 2 && !mrc; kind++) {
    MDB_dbi dbi = kind ? s->dbi_conns : s->dbi_tokens;
    size_t id_off = kind ? offsetof(tg_connection, id) : offsetof(tg_token, id);
    for (uint32_t u = 0; u < cap->nunits[kind] && !mrc; u++) {
      const tg__cap_unit *cu = &cap->units[kind][u];
      if (cu->nrec) mrc = put_sorted(txn, dbi, cu->recs, cu->nrec, id_off, &pace);
      if (!mrc && cu->ndel) mrc = del_ids(txn, dbi, cu->dels, cu->ndel, &pace);
    }
    /* Token deletes are kept by id, apart from the slots (graph.h). */
    if (!mrc && kind == 0 && cap->ntdel) mrc = del_ids(txn, dbi, cap->tdel, cap->ntdel, &pace);
  }
  if (mrc || (mrc = mdb_stat(txn, s->dbi_tokens, &ts)) ||
      (mrc = mdb_stat(txn, s->dbi_conns, &cs)))
    goto cleanup;
  uint32_t id_flags = (cap->tokens_wrapped ? CKPT_TOKENS_WRAPPED : 0) |
                      (cap->conns_wrapped ? CKPT_CONNS_WRAPPED : 0);
  ckpt_state st = {TG__CKPT_FORMAT, lsn, ts.ms_entries, cs.ms_entries, cap->tokens_hw,
                   cap->conns_hw, id_flags};
  if ((mrc = state_put(txn, s->dbi_meta, &st))) goto cleanup;
  /* Replication: where the stream stands at this LSN, so that a replica
     bootstrapped from this checkpoint knows where to follow from, and a
     replica resumes where it was: a primary asks its shipper (ship.c), a
     replica passes the position it applied up to lsn (replica.c). */
  if (s->ship) tg__ship_position(s->ship, lsn, &repl_seq, &repl_epoch);
  if ((s->ship || repl_seq || repl_epoch) &&
      ((mrc = meta_put_u64(txn, s->dbi_meta, REPL_SEQ_KEY, repl_seq)) ||
       (mrc = meta_put_u64(txn, s->dbi_meta, REPL_EPOCH_KEY, repl_epoch))))
    goto cleanup;
  rc = commit_durable(s, txn);
  txn = NULL;
  if (!rc) {
    s->ckpt_repl_seq = repl_seq;
    s->ckpt_repl_epoch = repl_epoch;
  }
cleanup:
  if (mrc) rc = from_mdb(mrc); /* LMDB's own code */
  if (txn) mdb_txn_abort(txn);
  if (map.addr) (void)madvise(map.addr, map.len, MADV_NORMAL);
  pace_done(&pace);
  return rc;
}

/* snapshot_write on a thread of its own at nice CKPT_NICE (pacing, above);
   the caller waits for it. */
typedef struct ckpt_bg {
  tg_store *s;
  const tg__capture *cap;
  uint64_t lsn, repl_seq, repl_epoch;
  int rc;
} ckpt_bg;

static void *snapshot_bg_main(void *arg) {
  ckpt_bg *b = arg;
  /* Only this thread's nice (Linux: per thread), CKPT_NICE above the
     caller's (which it inherited), at most 19; failing leaves it as it
     is, which only costs the others more CPU. */
  id_t tid = (id_t)syscall(SYS_gettid);
  errno = 0;
  int nice = getpriority(PRIO_PROCESS, tid);
  if (!errno) (void)setpriority(PRIO_PROCESS, tid, nice + CKPT_NICE > 19 ? 19 : nice + CKPT_NICE);
  b->rc = snapshot_write(b->s, b->cap, b->lsn, b->repl_seq, b->repl_epoch);
  return NULL;
}

static int snapshot_write_bg(tg_store *s, const tg__capture *cap, uint64_t lsn,
                             uint64_t repl_seq, uint64_t repl_epoch) {
  ckpt_bg b = {s, cap, lsn, repl_seq, repl_epoch, 0};
  pthread_t th;
  /* No thread to be had: write here, at the caller's priority. */
  if (pthread_create(&th, NULL, snapshot_bg_main, &b))
    return snapshot_write(s, cap, lsn, repl_seq, repl_epoch);
  pthread_join(th, NULL);
  return b.rc;
}

/*
 * Capture the changes as of one LSN without pausing other threads for
 * more than one unit's copy (tg__capture in token/graph.h: the LSN and the
 * units to copy are fixed in one short lock hold, then the units are copied
 * one per lock hold while writers go on, a writer copying a unit itself
 * before its first change to it), make the log durable up to that LSN,
 * write the capture in one LMDB transaction, then drop the log segments
 * the checkpoint covers (*removed of them). The capture is exactly the
 * state at its LSN, so replay after it stays an exact re-execution.
 * Caller holds ckpt_mu.
 */
static int checkpoint_body(tg_store *s, tg__capture *cap, uint32_t *removed) {
  tg_wal_stats ws;
  if (s->ckpt_failed) return s->ckpt_failed;
  tg__store_lock(s);
  uint64_t lsn = tg__store_last_lsn(s); /* the threads' caches' too */
  /* Taken with the LSN: a replica applies a message in one lock hold, so
     the position names the message that ends at lsn. */
  uint64_t repl_seq = s->repl_seq, repl_epoch = s->repl_epoch;
  int rc = tg__capture_begin(&s->g, cap, s->ckpt_full);
  tg__store_unlock(s);
  if (rc) return rc;
  ckpt_pace pace;
  pace_init(&pace);
  do {
    pace_now(&pace); /* between two holds: no lock held */
    /* The unit's slots are read here, without the lock: the hold below
       only checks and takes them (tg__capture_stage). A failure to stage
       only means the step copies under the lock. */
    (void)tg__capture_stage(&s->g, cap);
    tg__store_lock(s);
    rc = tg__capture_step(&s->g, cap, 1);
    if (rc == 0) tg__capture_end(&s->g, cap);
    tg__store_unlock(s);
  } while (rc == 1);
  pace_done(&pace);
  if (rc) {
    /* Voided: its marks are back for the next try, but not the token
       deletes it took (giving the list back could need memory this path
       may not have): a full rewrite drops them implicitly. */
    if (cap->ntdel) s->ckpt_full = 1;
    return rc;
  }
  tg_wal_stats_get(s->wal, &ws);
  /* The checkpoint claims every record <= lsn: they must be durable first,
     or a crash could leave the log shorter than the checkpoint and reuse
     LSNs it covers. */
  if (lsn) rc = tg_wal_sync(s->wal, lsn);
  if (!rc) rc = snapshot_write_bg(s, cap, lsn, repl_seq, repl_epoch);
  tg__store_lock(s);
  if (rc) {
    tg__capture_remark(&s->g, cap);
    if (cap->ntdel) s->ckpt_full = 1; /* as for a voided capture */
  } else {
    /* Relaxed stores: tg_store_stats_get() reads them without the lock. */
    TG__STORE_RELAXED(s->ckpt_lsn, lsn);
    TG__STORE_RELAXED(s->checkpoints, s->checkpoints + 1u);
  }
  tg__store_unlock(s);
  if (rc) return rc;
  s->ckpt_format = TG__CKPT_FORMAT;
  s->ckpt_full = 0;
  s->ckpt_wal_bytes = ws.bytes;
  /* Segments wholly <= lsn are now redundant. Failing to delete one only
     costs space: the next checkpoint tries again. */
  /* A replicating store keeps what the stream has not acknowledged: the
     next open ships it from there (ship.c). */
  uint64_t upto = lsn;
  if (s->ship && tg__ship_acked_lsn(s->ship) < upto) upto = tg__ship_acked_lsn(s->ship);
  tg_wal_remove_upto(s->wal, upto, removed);
  return 0;
}

TG_SPAN_SITE(site_ckpt, "checkpoint", "lsn", "tokens", "connections", "deletes");

/* Caller holds ckpt_mu. */
static int checkpoint_locked(tg_store *s) {
  tg__capture cap;
  memset(&cap, 0, sizeof cap);
  uint32_t removed = 0;
  uint64_t t0 = tg__now_ns();
  tg_span sp;
  tg_span_begin(&sp, &site_ckpt);
  int rc = checkpoint_body(s, &cap, &removed);
  tg_span_attr(&sp, 0, s->ckpt_lsn);
  tg_span_attr(&sp, 1, cap.nrec[0]);
  tg_span_attr(&sp, 2, cap.nrec[1]);
  tg_span_attr(&sp, 3, cap.ndel[0] + cap.ndel[1]);
  tg_span_end(&sp);
  if (!rc)
    tg_blackbox_record(TG_BB_CHECKPOINT, s->ckpt_lsn, cap.nrec[0] + cap.nrec[1],
                       tg__now_ns() - t0, removed);
  if (!rc && s->repl_url) tg__store_snapshot_after_checkpoint(s); /* snapshot.c */
  else if (rc)
    tg__store_note_log_failure(s, rc);
  tg__capture_free(&cap);
  return rc;
}

int tg_checkpoint(tg_store *s) {
  if (s && s->read_only) return TG_EREADONLY;
  if (!s || !s->dir) return TG_EINVAL; /* in memory */
  TG__CALL_GUARD(s);
  pthread_mutex_lock(&s->ckpt_mu);
  /* s->wal under ckpt_mu: a failover's promotion (replica.c) replaces the
     log under it while the program may be checkpointing. */
  int rc = s->wal ? checkpoint_locked(s) : TG_EINVAL;
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
    tg__store_note_backpressure(s, &ws);
    if (ws.failed) tg__store_note_log_failure(s, ws.failed);
    pthread_mutex_lock(&s->ckpt_mu);
    /* A failure leaves the marks for the next try; a failed commit or sync
       (ckpt_failed) stops automatic checkpoints until reopen. */
    if (!ws.failed && !s->ckpt_failed &&
        ws.bytes - s->ckpt_wal_bytes >= s->checkpoint_bytes)
      checkpoint_locked(s);
    pthread_mutex_unlock(&s->ckpt_mu);
    pthread_mutex_lock(&s->ckpt_wake_mu);
  }
  pthread_mutex_unlock(&s->ckpt_wake_mu);
  return NULL;
}
