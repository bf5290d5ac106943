/*
 * tokengraph write-ahead log: writer side. Reader in reader.c.
 *
 * ON-DISK FORMAT (version 1; docs/wal-format.md is the full text and must be
 * kept in step with this comment). All integers little-endian. "CRC" is
 * zlib's crc32 (poly 0xEDB88320), computed by tg__crc32() (src/common/crc32.c).
 *
 * The WAL directory holds segments named "%020llu.wal" after the LSN of their
 * first record, and possibly "next.tmp" (a segment being prepared, not part
 * of the log). LSNs are consecutive across the whole log, in [1, 2^56).
 *
 * Segment header, 64 bytes at offset 0:
 *    0   8  magic "TGWALSEG"
 *    8   4  version = 1
 *   12   4  header size = 64
 *   16   8  first LSN (= the file name)
 *   24   8  preallocated size (informational)
 *   32   4  frame alignment = 8
 *   36  24  reserved, zero
 *   60   4  CRC of bytes 0..59
 *
 * Record frame at offset o (8-aligned, o >= 64):
 *    o+0   4  len = 16 + payload length (0: no record, end of data)
 *    o+4   4  CRC of bytes [o, o+4) then [o+8, o+len)
 *    o+8   8  bits 0..55 LSN, bits 56..63 record type
 *    o+16     payload (len - 16 bytes, at most TG_WAL_MAX_PAYLOAD)
 *    o+len    zero padding to the next multiple of 8
 * The 8-aligned 16-byte frame header never straddles a sector, so a torn
 * write cannot leave half a length. A 64-byte payload is an 80-byte frame.
 *
 * VALIDITY. At frame position o in a file of size S exactly one holds:
 *   end of data: o == S, or fewer than 16 bytes left and all zero, or the 16
 *     header bytes all zero;
 *   valid frame: 16 <= len <= 16 + 16 MiB, o + len <= S, CRC matches, the
 *     padding present in the file is zero;
 *   bad frame: anything else.
 * A valid frame must carry the expected LSN (previous + 1; the segment's
 * first LSN for its first frame), else the log is corrupt. A segment that
 * follows another must start at the expected LSN, else corrupt (LSN gap).
 *
 * CLASSIFICATION of how a log ends: clean (the last segment's data ends);
 * torn tail (a bad frame in the LAST segment with no valid frame at any
 * 8-aligned offset after it); corruption (a bad frame in an earlier segment,
 * a bad frame followed by a valid one, an LSN gap or disorder, a bad segment
 * header; an unsupported version is reported as TG_EVERSION).
 *
 * RECOVERY (tg_wal_open): delete *.tmp; read the last segment; if it ends
 * clean or torn at E (end of its last valid frame), ftruncate it to E, fsync,
 * preallocate it again and append from E with the next LSN; if corrupt,
 * refuse to open and change nothing.
 *
 * WHY THE ORDERINGS. A segment switch fdatasyncs the old segment before the
 * new name exists, and the new segment's header is fdatasynced before it is
 * renamed into place and the directory fsynced: so every .wal name has a
 * valid durable header, and a torn write can only be in the last segment.
 * Truncating to E at open means stale bytes of an earlier incarnation can
 * never be read back as records with a plausible LSN.
 *
 * THE PIPELINE. Appenders claim an LSN with one atomic fetch_add on `head`
 * (LSN == ring sequence number, so file order == LSN order), copy their
 * frame header and payload into a 128-byte ring slot (or, for a payload over
 * 96 bytes, hang a malloc'd copy on the slot) and publish it with a release
 * store (LMAX Disruptor / NanoLog style): no lock, no allocation, no system
 * call for a small record. There is one such path, enqueue(); only the
 * public entry points decide whether to wait for durability afterwards. One
 * writer thread drains published slots in order into a 1 MiB buffer,
 * computes each frame's CRC there, pwrites the batch and fdatasyncs by
 * level. It sleeps on a futex only when the ring is empty; an appender pays
 * for a wake-up only when it sees the writer's `sleeping` state set.
 *
 * LINGER. At BALANCED and RELAXED an idle writer does not spin and is not
 * woken per append: it sleeps up to linger_us (default 1 ms; the BALANCED
 * fdatasync deadline can cut it short) in state WRITER_LINGERING, and
 * appenders wake it only once a quarter of the ring is queued; sync
 * requests, a full ring and close wake it at once. Measured on the reference
 * VM (2 vCPUs, reference workload: one append per 1,000 token creations,
 * about every 16 us): waking or spinning the writer for each append slowed
 * the creating thread by 24-36% (a futex wake and a vCPU wake-up per
 * append); lingering 1 ms brings that to 4-8%. What it gives up: on kill -9
 * up to linger_us of appends can still be queued (the contract's "what was
 * still queued"). STRICT keeps the spin and the per-append wake.
 *
 * LOCKING. Two mutexes, never held together: `mu` guards the waits on the
 * two condition variables (a waiter re-checks `durable`, `failed` or
 * `consumed` under it, and whoever changes them broadcasts under it);
 * `seg_mu` guards the segment list (the writer's switch against
 * tg_wal_remove_upto, which also unlinks under it). No I/O under `mu`.
 * Fields marked writer-private are used by the writer thread only, and by
 * tg_wal_open/close while no writer thread runs; debug builds assert both
 * (assert_writer, assert_mu_held).
 *
 * MEMORY ORDERS. Every atomic names its order. seq_cst appears only where a
 * store must be ordered before a later load of another variable - a Dekker
 * pair, where each side stores one and then loads the other, so at least
 * one side sees the other's store. The pairs:
 *   SLEEP/HEAD: the writer stores `sleeping` then loads `head`; an appender
 *     does its fetch_add on `head` then loads `sleeping` - an append never
 *     goes unseen by a writer about to sleep.
 *   SLEEP/SYNC: the writer stores `sleeping` then loads `sync_req`; a sync
 *     waiter raises `sync_req` then loads (or exchanges) `sleeping`.
 *   SLEEP/CLOSE: the writer stores `sleeping` then loads `closing`;
 *     tg_wal_close stores `closing` then exchanges `sleeping`.
 *   SLEEP/SPACE: the writer stores `sleeping` then loads `space_waiters`; a
 *     blocked appender adds to `space_waiters` then exchanges `sleeping`.
 *   CONSUMED/SPACE: the writer stores `consumed` then loads
 *     `space_waiters`; a blocked appender adds to `space_waiters` then loads
 *     `consumed` - it either sees the space or is sent the broadcast.
 * Each seq_cst operation below names its pair.
 */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/crc32.h"
#include "common/io.h"
#include "common/platform.h"
#include "wal/wal_internal.h"
#include "wal/wal_store.h"

#define SLOT_BYTES 128
#define SLOT_FRAME (SLOT_BYTES - 16)              /* frame header + inline payload */
#define SLOT_INLINE (SLOT_FRAME - TG__WAL_FRAME_HDR) /* 96 payload bytes */
#define BUF_BYTES (1u << 20) /* writer batch: 1 MiB, the size the raw reference uses */
#define TMP_NAME "next.tmp"

#define RLX memory_order_relaxed
#define ACQ memory_order_acquire
#define REL memory_order_release
#define SEQ memory_order_seq_cst /* only with the name of its Dekker pair */

/* What the writer is doing, as appenders see it in `sleeping`. */
enum writer_state {
  WRITER_RUNNING = 0,   /* working or spinning: appenders need not wake it */
  WRITER_SLEEPING = 1,  /* in (or entering) futex wait: any append wakes it */
  WRITER_LINGERING = 2  /* in futex wait up to linger_us: an append wakes it
                           only once linger_wake records are queued (LINGER) */
};

/* One queued record. Written by one appender, then read by the writer. */
typedef struct slot {
  _Atomic uint64_t published;       /* the LSN once frame/ext are complete */
  unsigned char *ext;               /* payload > SLOT_INLINE: malloc'd copy,
                                       freed (and reset) by the writer */
  unsigned char frame[SLOT_FRAME];  /* len, crc (left 0), lsn_type, payload */
} slot;
_Static_assert(sizeof(slot) == SLOT_BYTES, "ring slot is two cache lines");
_Static_assert(SLOT_INLINE == 96, "inline payload documented as 96 bytes");

struct tg_wal {
  /* Read-mostly by appenders; set at open. */
  slot *ring;                /* ring_slots slots, mmap'd, prefaulted */
  uint64_t mask;             /* ring_slots - 1 */
  uint64_t cap;              /* ring_slots */
  int level;                 /* enum tg_wal_level */
  int nonblocking;           /* TG_EAGAIN instead of blocking */
  uint64_t linger_wake;      /* a lingering writer is woken once this many
                                records are queued */
  _Atomic int failed;        /* 0, TG_ENOSPC or TG_EIO; set once, under mu */
  int os_errno;              /* errno behind `failed` (written before it) */

  alignas(64) _Atomic uint64_t head;     /* next LSN to hand out */
  alignas(64) _Atomic uint64_t consumed; /* LSNs < consumed have left the ring */
  alignas(64) _Atomic int sleeping;      /* enum writer_state */
  _Atomic uint32_t wake_word;            /* futex word the writer waits on */
  _Atomic int closing;                   /* tg_wal_close() has begun */
  _Atomic uint64_t sync_req;             /* highest LSN a sync waiter waits for */
  _Atomic uint32_t space_waiters;        /* appenders blocked on a full ring;
                                            changed under mu */
  _Atomic uint64_t durable;              /* LSNs <= durable are fdatasynced;
                                            stored under mu */
  _Atomic uint64_t written;              /* LSNs <= written are in the file */
  _Atomic uint32_t strict_inflight;      /* STRICT appenders between their
                                            begin and end */

  pthread_mutex_t mu;                    /* guards the two condition variables */
  pthread_cond_t durable_cv;             /* broadcast after each fdatasync / failure */
  pthread_cond_t space_cv;               /* broadcast when ring space frees up */
  pthread_t mu_owner;                    /* holder of mu (assert_mu_held) */
  int mu_held;                           /* under mu: 1 while held */

  /* Counters: writer-only ones use plain relaxed load+store. */
  _Atomic uint64_t st_records, st_bytes, st_batches, st_fdatasyncs, st_segments;
  _Atomic uint64_t st_blocked, st_blocked_ns, st_rejected;
  _Atomic uint64_t st_sync_failures; /* failed fdatasyncs; writer-only, added
                                        before `failed` is set, so whoever
                                        sees the failure sees it */

  /* Writer-private. */
  int fd;                    /* current segment */
  int next_fd;               /* prepared next.tmp, or -1 */
  uint64_t seg_first;        /* first LSN of the current segment */
  uint64_t seg_off;          /* bytes of the current segment in use */
  uint64_t next;             /* next LSN to drain from the ring */
  uint64_t w_written;        /* private copy of `written` */
  uint64_t w_durable;        /* private copy of `durable` */
  unsigned char *buf;        /* BUF_BYTES batch buffer */
  size_t buf_len;            /* bytes in buf */
  uint64_t buf_last;         /* LSN of the last frame in buf */
  uint64_t last_sync_ns;     /* when the last fdatasync finished */
  uint64_t interval_ns;      /* BALANCED sync interval */
  uint64_t linger_ns;        /* BALANCED/RELAXED: an idle writer looks this
                                often; 0 = sleep until woken */

  pthread_mutex_t seg_mu;    /* guards segs/nseg (tg_wal_remove_upto vs switch) */
  uint64_t *segs;            /* first LSNs of the segments on disk, sorted */
  size_t nseg, segcap;

  tg_wal_config cfg;         /* as opened; read-only */
  tg__wal_store_opts opts;   /* as opened; read-only */
  char *dir;
  pthread_t thread;
  int thread_started;        /* set by the opening thread once the writer runs */
};

/* ---- small helpers ------------------------------------------------------- */

#ifndef NDEBUG
/* The WAL whose writer thread this is (debug builds, assert_writer). */
static _Thread_local const tg_wal *tls_writer_of;
#endif
/* Writer-private state is touched on the writer thread, or by open/close
   while no writer thread runs. */
#define assert_writer(w) assert(tls_writer_of == (w) || !(w)->thread_started)
#define assert_mu_held(w) assert((w)->mu_held && pthread_equal((w)->mu_owner, pthread_self()))

static void mu_lock(tg_wal *w) {
  pthread_mutex_lock(&w->mu);
  w->mu_owner = pthread_self();
  w->mu_held = 1;
}

static void mu_unlock(tg_wal *w) {
  assert_mu_held(w);
  w->mu_held = 0;
  pthread_mutex_unlock(&w->mu);
}

/* pthread_cond_wait on one of w's condition variables, mu held. */
static void mu_wait(tg_wal *w, pthread_cond_t *cv) {
  assert_mu_held(w);
  w->mu_held = 0;
  pthread_cond_wait(cv, &w->mu);
  w->mu_owner = pthread_self();
  w->mu_held = 1;
}

static void stat_add(_Atomic uint64_t *c, uint64_t n) {
  atomic_store_explicit(c, atomic_load_explicit(c, RLX) + n, RLX);
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t val, const struct timespec *rel) {
  syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, rel, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr) {
  syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void wake_writer(tg_wal *w) {
  /* seq_cst: the second half of SLEEP/SYNC, SLEEP/CLOSE and SLEEP/SPACE
     (callers stored their own variable just before). */
  if (atomic_exchange_explicit(&w->sleeping, WRITER_RUNNING, SEQ) != WRITER_RUNNING) {
    /* Relaxed: the exchange read the writer's store of `sleeping`, made after
       it read wake_word, so this increment is later than that read and the
       futex sees a changed word. */
    atomic_fetch_add_explicit(&w->wake_word, 1, RLX);
    futex_wake(&w->wake_word);
  }
}

/* An appender that saw the writer asleep: wake it, unless it is lingering
   and the queue is still short (see LINGER). */
static void wake_if_due(tg_wal *w, uint64_t seq) {
  /* Relaxed: the caller's seq_cst load already saw it non-zero; a stale
     value costs one wake-up too many or one linger too long. */
  if (atomic_load_explicit(&w->sleeping, RLX) == WRITER_LINGERING &&
      seq - atomic_load_explicit(&w->consumed, RLX) < w->linger_wake)
    return;
  wake_writer(w);
}

static int path_in(char *out, size_t n, const char *dir, const char *name) {
  return (size_t)snprintf(out, n, "%s/%s", dir, name) >= n ? -ENAMETOOLONG : 0;
}

/* Poison the WAL (LMDB MDB_FATAL_ERROR, Redis after a failed AOF fsync):
   nothing is retried, every waiter and later caller gets the error. */
static void wal_fail(tg_wal *w, int rc) {
  assert_writer(w);
  if (atomic_load_explicit(&w->failed, ACQ)) return;
  w->os_errno = -rc;
  int code = (rc == -ENOSPC || rc == -EDQUOT || rc == TG_ENOSPC) ? TG_ENOSPC : TG_EIO;
  mu_lock(w);
  /* Release: publishes os_errno to tg_wal_failed's acquire load. */
  atomic_store_explicit(&w->failed, code, REL);
  pthread_cond_broadcast(&w->durable_cv);
  pthread_cond_broadcast(&w->space_cv);
  mu_unlock(w);
}

static int seg_list_add(tg_wal *w, uint64_t first) {
  pthread_mutex_lock(&w->seg_mu);
  int rc = 0;
  if (w->nseg == w->segcap) {
    size_t ncap = w->segcap ? w->segcap * 2 : 16;
    uint64_t *n = realloc(w->segs, ncap * sizeof *n);
    if (!n) rc = TG_ENOMEM;
    else {
      w->segs = n;
      w->segcap = ncap;
    }
  }
  if (!rc) w->segs[w->nseg++] = first;
  pthread_mutex_unlock(&w->seg_mu);
  return rc;
}

/* ---- segment files --------------------------------------------------------- */

/* Create next.tmp and preallocate it. */
static int prepare_next(tg_wal *w) {
  assert_writer(w);
  char path[4096];
  int rc = path_in(path, sizeof path, w->dir, TMP_NAME);
  if (rc) return rc;
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return -errno;
  rc = tg__fallocate(fd, 0, (off_t)w->cfg.segment_bytes);
  if (rc == -EOPNOTSUPP) rc = 0; /* no preallocation on this file system */
  if (rc) {
    close(fd);
    unlink(path);
    return rc;
  }
  w->next_fd = fd;
  return 0;
}

/* Turn next.tmp into segment `first`: header, fdatasync, rename, fsync dir.
   On success *fd_out is the new segment (next_fd is consumed). */
static int install_next(tg_wal *w, uint64_t first) {
  assert_writer(w);
  unsigned char hdr[TG__WAL_HDR];
  char from[4096], to[4096], name[TG__WAL_NAME_LEN + 1];
  tg__wal_seg_name(name, first);
  int rc = path_in(from, sizeof from, w->dir, TMP_NAME);
  if (!rc) rc = path_in(to, sizeof to, w->dir, name);
  if (rc) return rc;
  tg__wal_header_encode(hdr, first, w->cfg.segment_bytes);
  rc = tg__pwrite_all(w->next_fd, hdr, sizeof hdr, 0);
  if (!rc && (rc = tg__fdatasync(w->next_fd))) stat_add(&w->st_sync_failures, 1);
  if (!rc && rename(from, to) < 0) rc = -errno;
  if (!rc) rc = tg__fsync_dir(w->dir);
  if (!rc) rc = seg_list_add(w, first);
  if (rc) return rc;
  if (w->fd >= 0) close(w->fd);
  w->fd = w->next_fd;
  w->next_fd = -1;
  w->seg_first = first;
  w->seg_off = TG__WAL_HDR;
  return 0;
}

/* ---- the writer thread ----------------------------------------------------- */

static void do_sync(tg_wal *w) {
  assert_writer(w);
  uint64_t upto = w->w_written;
  if (w->opts.on_io) w->opts.on_io(w->opts.hook_arg, TG__WAL_IO_SYNC, 0, upto);
  uint64_t t0 = tg__now_ns();
  int rc = tg__fdatasync(w->fd);
  uint64_t t1 = tg__now_ns();
  if (w->opts.on_io) w->opts.on_io(w->opts.hook_arg, TG__WAL_IO_SYNC, 1, upto);
  stat_add(&w->st_fdatasyncs, 1);
  if (rc) {
    stat_add(&w->st_sync_failures, 1);
    wal_fail(w, rc);
    return;
  }
  w->last_sync_ns = t1;
  w->w_durable = upto;
  /* The hook runs before the waiters are released, so whoever sees the
     record durable also sees the hook's effect for that fdatasync. */
  if (w->opts.on_sync) w->opts.on_sync(w->opts.hook_arg, t1 - t0, upto);
  mu_lock(w);
  /* Release: pairs with the fast-path acquire loads of `durable` that skip
     the mutex (the hook's effects above become visible with it). */
  atomic_store_explicit(&w->durable, upto, REL);
  pthread_cond_broadcast(&w->durable_cv);
  mu_unlock(w);
}

static void flush_buf(tg_wal *w) {
  assert_writer(w);
  /* Never write after a failure. */
  if (!w->buf_len || atomic_load_explicit(&w->failed, RLX)) return;
  if (w->opts.on_io) w->opts.on_io(w->opts.hook_arg, TG__WAL_IO_WRITE, 0, w->buf_len);
  int rc = tg__pwrite_all(w->fd, w->buf, w->buf_len, (off_t)w->seg_off);
  if (w->opts.on_io) w->opts.on_io(w->opts.hook_arg, TG__WAL_IO_WRITE, 1, w->buf_len);
  stat_add(&w->st_batches, 1);
  if (rc) {
    wal_fail(w, rc);
    return;
  }
  /* Let the disk work while we fill the next batch, instead of all at the
     next fdatasync (measured: RELAXED 5M records, see the commit). An
     error here is ignored: the fdatasync that follows reports real ones. */
  if (w->level != TG_WAL_STRICT)
    (void)tg__start_writeback(w->fd, (off_t)w->seg_off, (off_t)w->buf_len);
  w->seg_off += w->buf_len;
  stat_add(&w->st_bytes, w->buf_len);
  w->buf_len = 0;
  w->w_written = w->buf_last;
  atomic_store_explicit(&w->written, w->buf_last, REL);
}

/* Move to a new segment whose first record is LSN `first`. */
static void switch_segment(tg_wal *w, uint64_t first) {
  assert_writer(w);
  flush_buf(w);
  if (atomic_load_explicit(&w->failed, RLX)) return;
  if (w->w_written > w->w_durable) do_sync(w); /* the old segment is complete on disk */
  if (atomic_load_explicit(&w->failed, RLX)) return;
  int rc = w->next_fd >= 0 ? 0 : prepare_next(w);
  if (!rc) rc = install_next(w, first);
  if (rc) {
    wal_fail(w, rc);
    return;
  }
  stat_add(&w->st_segments, 1);
  if (w->opts.on_segment) w->opts.on_segment(w->opts.hook_arg, first);
}

/* A frame too large for the batch buffer: write it in place, in pieces. */
static void write_big(tg_wal *w, slot *s, uint32_t len) {
  assert_writer(w);
  unsigned char hdr[TG__WAL_FRAME_HDR];
  static const unsigned char zeros[8];
  memcpy(hdr, s->frame, sizeof hdr);
  uint32_t crc = tg__crc32(tg__crc32(0, hdr, 4), hdr + 8, 8);
  crc = tg__crc32(crc, s->ext, len - TG__WAL_FRAME_HDR);
  tg__st32(hdr + 4, crc);
  size_t pad = tg__align8(len) - len;
  off_t o = (off_t)w->seg_off;
  int rc = tg__pwrite_all(w->fd, hdr, sizeof hdr, o);
  if (!rc) rc = tg__pwrite_all(w->fd, s->ext, len - TG__WAL_FRAME_HDR, o + 16);
  if (!rc && pad) rc = tg__pwrite_all(w->fd, zeros, pad, o + len);
  stat_add(&w->st_batches, 1);
  if (rc) {
    wal_fail(w, rc);
    return;
  }
  w->seg_off += tg__align8(len);
  stat_add(&w->st_bytes, tg__align8(len));
  w->w_written = tg__ld64(hdr + 8) & TG_WAL_MAX_LSN;
  atomic_store_explicit(&w->written, w->w_written, REL);
}

/* Copy published slots into the batch buffer (at most one buffer's worth),
   write it out. Returns the number of records taken from the ring. */
static uint64_t drain(tg_wal *w) {
  assert_writer(w);
  /* Relaxed: only a bound; each slot's own acquire load below is what makes
     its contents visible. */
  uint64_t head = atomic_load_explicit(&w->head, RLX);
  uint64_t n = 0;
  while (w->next < head) {
    slot *s = &w->ring[w->next & w->mask];
    if (atomic_load_explicit(&s->published, ACQ) != w->next) break;
    uint32_t len = tg__ld32(s->frame);
    size_t flen = tg__align8(len);
    uint64_t used = w->seg_off + w->buf_len;
    if (used + flen > w->cfg.segment_bytes && used > TG__WAL_HDR) {
      switch_segment(w, w->next);
      if (atomic_load_explicit(&w->failed, RLX)) break;
    }
    if (flen > BUF_BYTES - w->buf_len) {
      if (w->buf_len) break; /* write this batch first; the frame goes next round */
      write_big(w, s, len);
      if (atomic_load_explicit(&w->failed, RLX)) break;
    } else {
      unsigned char *d = w->buf + w->buf_len;
      const unsigned char *src = s->ext ? s->ext : s->frame + TG__WAL_FRAME_HDR;
      memcpy(d, s->frame, TG__WAL_FRAME_HDR);
      memcpy(d + TG__WAL_FRAME_HDR, src, len - TG__WAL_FRAME_HDR);
      memset(d + len, 0, flen - len);
      tg__st32(d + 4, tg__wal_frame_crc(d, len));
      w->buf_len += flen;
      w->buf_last = w->next;
    }
    if (s->ext) {
      free(s->ext);
      s->ext = NULL;
    }
    w->next++;
    n++;
  }
  if (n) {
    stat_add(&w->st_records, n);
    /* The records are in the buffer: give the slots back before the write.
       seq_cst: CONSUMED/SPACE (store consumed, then load space_waiters);
       it also releases the slots to appenders' acquire loads. */
    atomic_store_explicit(&w->consumed, w->next, SEQ);
    if (atomic_load_explicit(&w->space_waiters, SEQ)) { /* CONSUMED/SPACE */
      mu_lock(w);
      pthread_cond_broadcast(&w->space_cv);
      mu_unlock(w);
    }
  }
  flush_buf(w);
  return n;
}

/* STRICT group commit. An fdatasync that released k waiting appenders will
   see them append again within microseconds; syncing at once would catch
   only the first of them (the batches alternate 1, k-1, 1, ... and averaged
   4.1 records per fdatasync with 8 threads, measured). So, when more than
   one appender is inside tg_wal_append, gather until the batch holds one
   record per such appender, appends stop arriving for GATHER_IDLE_NS, or
   GATHER_MAX_NS passed - small against one fdatasync (~170-300 us here).
   With one appender there is no wait at all. */
#define GATHER_IDLE_NS 20000u
#define GATHER_MAX_NS 100000u
static void gather(tg_wal *w) {
  assert_writer(w);
  uint64_t t0 = tg__now_ns(), last = t0;
  /* Relaxed strict_inflight: a count for a heuristic; a stale value only
     ends the gathering sooner or later. */
  while (w->w_written - w->w_durable < atomic_load_explicit(&w->strict_inflight, RLX)) {
    if (drain(w)) {
      last = tg__now_ns();
      continue;
    }
    if (atomic_load_explicit(&w->failed, RLX)) return;
    uint64_t t = tg__now_ns();
    if (t - last > GATHER_IDLE_NS || t - t0 > GATHER_MAX_NS) return;
    sched_yield(); /* let the woken appenders run on this core */
  }
}

/* Spin this long for new work before sleeping on the futex: a STRICT
   appender is back within microseconds of its wake-up, and a futex wake
   costs it a system call plus the writer's wake-up latency. */
#define IDLE_SPIN_NS 20000u
#define NEVER UINT64_MAX

/* Once the next segment is half used, prepare the next one, so that a
   switch costs no fallocate. Returns the error that failed the WAL, or 0. */
static int prepare_ahead(tg_wal *w) {
  assert_writer(w);
  if (w->next_fd >= 0 || w->seg_off < w->cfg.segment_bytes / 2) return 0;
  int rc = prepare_next(w);
  if (rc) wal_fail(w, rc);
  return rc;
}

/* When the BALANCED fdatasync of what is written falls due (monotonic ns),
   or NEVER: the one place that computes it, for sync_due and idle_wait. */
static uint64_t sync_deadline(const tg_wal *w) {
  if (w->level != TG_WAL_BALANCED || w->w_written <= w->w_durable) return NEVER;
  return w->last_sync_ns + w->interval_ns;
}

/* Whether to fdatasync now what is written. */
static int sync_due(tg_wal *w, uint64_t deadline) {
  assert_writer(w);
  if (w->w_written <= w->w_durable) return 0;
  if (w->level == TG_WAL_STRICT) return 1;
  /* Acquire: a waiter's request; the idle_wait re-check is the Dekker side. */
  if (atomic_load_explicit(&w->sync_req, ACQ) > w->w_durable) return 1;
  if (deadline != NEVER && tg__now_ns() >= deadline) return 1;
  /* Closing with everything drained: make it durable before the writer ends. */
  return atomic_load_explicit(&w->closing, ACQ) &&
         w->next == atomic_load_explicit(&w->head, ACQ);
}

/* Work that must not wait for a sleeping writer. seq_cst loads: the second
   half of SLEEP/HEAD, SLEEP/SYNC, SLEEP/CLOSE and SLEEP/SPACE (idle_wait
   stored `sleeping` just before). */
static int work_pending(const tg_wal *w) {
  tg_wal *m = (tg_wal *)w;
  return atomic_load_explicit(&m->head, SEQ) != w->next ||
         atomic_load_explicit(&m->sync_req, SEQ) > w->w_durable ||
         atomic_load_explicit(&m->closing, SEQ) ||
         atomic_load_explicit(&m->space_waiters, SEQ);
}

/* A writer that does not linger spins IDLE_SPIN_NS on an empty ring before
   sleeping. Returns 1 if work arrived. */
static int idle_spin(tg_wal *w) {
  assert_writer(w);
  uint64_t t0 = tg__now_ns();
  while (tg__now_ns() - t0 < IDLE_SPIN_NS) {
    for (int i = 0; i < 64; i++) {
      tg__cpu_relax();
      /* Relaxed: a hint to stop spinning; idle_wait re-checks in seq_cst. */
      if (atomic_load_explicit(&w->head, RLX) != w->next ||
          atomic_load_explicit(&w->sync_req, RLX) > w->w_durable)
        return 1;
    }
  }
  return 0;
}

/* Sleep on the futex in state `how` (WRITER_SLEEPING: until woken or the
   sync deadline; WRITER_LINGERING: at most linger_ns too). Returns at once
   when work_pending() shows work that arrived before `sleeping` was set. */
static void idle_wait(tg_wal *w, enum writer_state how, uint64_t deadline) {
  assert_writer(w);
  /* Relaxed: ordered before the store of `sleeping` below, which is what an
     appender's exchange reads (see wake_writer). */
  uint32_t ww = atomic_load_explicit(&w->wake_word, RLX);
  /* seq_cst: the first half of SLEEP/HEAD, SLEEP/SYNC, SLEEP/CLOSE and
     SLEEP/SPACE. */
  atomic_store_explicit(&w->sleeping, how, SEQ);
  if (!work_pending(w)) {
    uint64_t rel = how == WRITER_LINGERING ? w->linger_ns : NEVER;
    if (deadline != NEVER) {
      uint64_t t = tg__now_ns();
      uint64_t left = deadline > t ? deadline - t : 0;
      if (left < rel) rel = left;
    }
    if (rel == NEVER) {
      futex_wait(&w->wake_word, ww, NULL);
    } else if (rel) {
      struct timespec ts = {(time_t)(rel / 1000000000u), (long)(rel % 1000000000u)};
      futex_wait(&w->wake_word, ww, &ts);
    }
  }
  /* Relaxed: a stale non-zero seen by an appender costs one spurious wake. */
  atomic_store_explicit(&w->sleeping, WRITER_RUNNING, RLX);
}

static void *writer_main(void *arg) {
  tg_wal *w = arg;
#ifndef NDEBUG
  tls_writer_of = w;
#endif
  unsigned spins = 0;
  while (!atomic_load_explicit(&w->failed, RLX)) {
    uint64_t n = drain(w);
    if (atomic_load_explicit(&w->failed, RLX) || prepare_ahead(w)) break;

    uint64_t deadline = sync_deadline(w);
    if (sync_due(w, deadline)) {
      if (w->level == TG_WAL_STRICT && atomic_load_explicit(&w->strict_inflight, RLX) > 1)
        gather(w);
      if (atomic_load_explicit(&w->failed, RLX)) break;
      do_sync(w);
      continue;
    }
    if (n) {
      spins = 0;
      continue;
    }

    if (atomic_load_explicit(&w->head, ACQ) != w->next) {
      /* Claimed but not yet published: the appender is mid-copy (or was
         preempted on this 2-core machine: then yield to it). */
      if (++spins < 64) tg__cpu_relax();
      else sched_yield();
      continue;
    }
    spins = 0;
    /* Drained and nothing due to sync (sync_due syncs at close): done. */
    if (atomic_load_explicit(&w->closing, ACQ)) break;
    if (w->linger_ns) {
      idle_wait(w, WRITER_LINGERING, deadline);
      continue;
    }
    if (idle_spin(w)) continue;
    idle_wait(w, WRITER_SLEEPING, deadline);
  }
  return NULL;
}

/* ---- appending --------------------------------------------------------------- */

static int wait_space(tg_wal *w, uint64_t seq) {
  uint64_t t0 = tg__now_ns();
  int rc = 0;
  /* Counted on entry, so a caller blocked right now shows in the stats. */
  atomic_fetch_add_explicit(&w->st_blocked, 1, RLX);
  for (int i = 0; i < 256; i++) {
    if (seq - atomic_load_explicit(&w->consumed, ACQ) < w->cap) goto done;
    tg__cpu_relax();
  }
  mu_lock(w);
  atomic_fetch_add_explicit(&w->space_waiters, 1, SEQ); /* CONSUMED/SPACE, SLEEP/SPACE */
  while (seq - atomic_load_explicit(&w->consumed, SEQ) >= w->cap && /* CONSUMED/SPACE */
         !atomic_load_explicit(&w->failed, RLX)) {                  /* set under mu */
    wake_writer(w);
    mu_wait(w, &w->space_cv);
  }
  atomic_fetch_sub_explicit(&w->space_waiters, 1, RLX);
  mu_unlock(w);
done:
  if (seq - atomic_load_explicit(&w->consumed, ACQ) >= w->cap)
    rc = atomic_load_explicit(&w->failed, ACQ);
  atomic_fetch_add_explicit(&w->st_blocked_ns, tg__now_ns() - t0, RLX);
  return rc;
}

static inline int claim(tg_wal *w, uint64_t *seq) {
  if (TG_LIKELY(!w->nonblocking)) {
    uint64_t s = atomic_fetch_add_explicit(&w->head, 1, SEQ); /* SLEEP/HEAD */
    /* Acquire: the writer is done reading the slot it gave back. */
    if (TG_UNLIKELY(s - atomic_load_explicit(&w->consumed, ACQ) >= w->cap)) {
      int rc = wait_space(w, s);
      if (rc) return rc;
    }
    *seq = s;
    return 0;
  }
  uint64_t h = atomic_load_explicit(&w->head, RLX);
  do {
    if (h - atomic_load_explicit(&w->consumed, ACQ) >= w->cap) {
      atomic_fetch_add_explicit(&w->st_rejected, 1, RLX);
      return TG_EAGAIN;
    }
  } while (!atomic_compare_exchange_weak_explicit(&w->head, &h, h + 1, SEQ, /* SLEEP/HEAD */
                                                  RLX));
  *seq = h;
  return 0;
}

/* Raise sync_req to lsn (a writer that is not STRICT syncs on request). */
static void request_sync(tg_wal *w, uint64_t lsn) {
  uint64_t cur = atomic_load_explicit(&w->sync_req, RLX);
  while (cur < lsn && !atomic_compare_exchange_weak_explicit(&w->sync_req, &cur, lsn,
                                                             SEQ, /* SLEEP/SYNC */
                                                             RLX)) {
  }
}

/* Wait, on durable_cv, until lsn is durable or the WAL failed. */
static int wait_durable_cv(tg_wal *w, uint64_t lsn) {
  mu_lock(w);
  /* Relaxed: `durable` and `failed` are stored under mu. */
  while (atomic_load_explicit(&w->durable, RLX) < lsn && !atomic_load_explicit(&w->failed, RLX))
    mu_wait(w, &w->durable_cv);
  int rc = atomic_load_explicit(&w->durable, RLX) >= lsn ? 0 : atomic_load_explicit(&w->failed, RLX);
  mu_unlock(w);
  return rc;
}

static int wait_durable(tg_wal *w, uint64_t lsn) {
  if (atomic_load_explicit(&w->durable, ACQ) >= lsn) return 0;
  if (w->level != TG_WAL_STRICT) {
    /* Ask the writer for an fdatasync (STRICT writers sync every batch). */
    request_sync(w, lsn);
    if (atomic_load_explicit(&w->sleeping, SEQ)) wake_writer(w); /* SLEEP/SYNC */
  }
  return wait_durable_cv(w, lsn);
}

/*
 * The one append path: claim a slot, fill it, publish it. ext == NULL: the
 * payload (len <= SLOT_INLINE) is copied into the slot; otherwise ext is a
 * malloc'd copy of it that the slot takes over (the writer frees it). Never
 * waits for durability: the public entry points decide that. On success
 * *seq is the record's LSN; on failure nothing was logged and ext is still
 * the caller's.
 */
static inline int enqueue(tg_wal *w, uint8_t type, const void *payload, size_t len,
                          unsigned char *ext, uint64_t *seq) {
  uint64_t s;
  int rc = claim(w, &s);
  if (TG_UNLIKELY(rc)) return rc;
  slot *sl = &w->ring[s & w->mask];
  sl->ext = ext;
  tg__st32(sl->frame, (uint32_t)(TG__WAL_FRAME_HDR + len));
  tg__st64(sl->frame + 8, s | (uint64_t)type << 56);
  if (TG_LIKELY(!ext)) memcpy(sl->frame + TG__WAL_FRAME_HDR, payload, len);
  atomic_store_explicit(&sl->published, s, REL);
  /* seq_cst: SLEEP/HEAD, after the fetch_add on head in claim(). */
  if (TG_UNLIKELY(atomic_load_explicit(&w->sleeping, SEQ))) wake_if_due(w, s);
  *seq = s;
  return 0;
}

/* Check the arguments, make the large payload's copy, enqueue. */
static inline int append_nowait(tg_wal *w, uint8_t type, const void *payload, size_t len,
                                uint64_t *seq) {
  /* Relaxed: a fast refusal; a failure that lands after this load is still
     reported, by the wait or by the next call. */
  int f = atomic_load_explicit(&w->failed, RLX);
  if (TG_UNLIKELY(f)) return f;
  if (TG_UNLIKELY(!payload && len)) return TG_EINVAL;
  unsigned char *ext = NULL;
  if (TG_UNLIKELY(len > SLOT_INLINE)) {
    if (len > TG_WAL_MAX_PAYLOAD) return TG_EINVAL;
    if (!(ext = malloc(len))) return TG_ENOMEM;
    memcpy(ext, payload, len);
  }
  int rc = enqueue(w, type, payload, len, ext, seq);
  if (TG_UNLIKELY(rc)) free(ext);
  return rc;
}

int tg_wal_append(tg_wal *w, uint8_t type, const void *payload, size_t len, uint64_t *lsn) {
  uint64_t seq = 0;
  if (w->level != TG_WAL_STRICT) {
    int rc = append_nowait(w, type, payload, len, &seq);
    if (TG_LIKELY(rc == 0) && lsn) *lsn = seq;
    return rc;
  }
  /* Relaxed: strict_inflight is gather()'s heuristic. */
  atomic_fetch_add_explicit(&w->strict_inflight, 1, RLX);
  int rc = append_nowait(w, type, payload, len, &seq);
  if (rc == 0) {
    if (lsn) *lsn = seq; /* set even if the wait fails: queued, not durable */
    rc = wait_durable(w, seq);
  }
  atomic_fetch_sub_explicit(&w->strict_inflight, 1, RLX);
  return rc;
}

void tg__wal_strict_begin(tg_wal *w) {
  if (w->level == TG_WAL_STRICT) atomic_fetch_add_explicit(&w->strict_inflight, 1, RLX);
}

int tg__wal_append_nowait(tg_wal *w, uint8_t type, const void *payload, size_t len,
                          uint64_t *lsn) {
  uint64_t seq = 0;
  int rc = append_nowait(w, type, payload, len, &seq);
  if (TG_LIKELY(rc == 0) && lsn) *lsn = seq;
  return rc;
}

int tg__wal_strict_end(tg_wal *w, uint64_t lsn) {
  if (w->level != TG_WAL_STRICT) return 0;
  int rc = lsn ? wait_durable(w, lsn) : 0;
  atomic_fetch_sub_explicit(&w->strict_inflight, 1, RLX);
  return rc;
}

int tg_wal_sync(tg_wal *w, uint64_t lsn) {
  /* Acquire: covers appends that happen-before this call. */
  uint64_t head = atomic_load_explicit(&w->head, ACQ);
  if (lsn == 0) lsn = head - 1;
  if (lsn >= head) return TG_EINVAL;
  if (atomic_load_explicit(&w->durable, ACQ) >= lsn) return 0;
  int f = atomic_load_explicit(&w->failed, ACQ);
  if (f) return f;
  request_sync(w, lsn);
  wake_writer(w);
  return wait_durable_cv(w, lsn);
}

int tg_wal_failed(const tg_wal *w, int *os_errno) {
  /* Acquire: pairs with wal_fail's release, so os_errno is the one behind it. */
  int f = atomic_load_explicit(&((tg_wal *)w)->failed, ACQ);
  if (os_errno) *os_errno = f ? w->os_errno : 0;
  return f;
}

int tg_wal_stats_get(const tg_wal *cw, tg_wal_stats *o) {
  tg_wal *w = (tg_wal *)cw;
  memset(o, 0, sizeof *o);
  /* Relaxed throughout: counters, documented as not one instant. */
  o->records = atomic_load_explicit(&w->st_records, RLX);
  o->bytes = atomic_load_explicit(&w->st_bytes, RLX);
  o->batches = atomic_load_explicit(&w->st_batches, RLX);
  o->fdatasyncs = atomic_load_explicit(&w->st_fdatasyncs, RLX);
  o->fdatasync_failures = atomic_load_explicit(&w->st_sync_failures, RLX);
  o->blocked = atomic_load_explicit(&w->st_blocked, RLX);
  o->blocked_ns = atomic_load_explicit(&w->st_blocked_ns, RLX);
  o->rejected = atomic_load_explicit(&w->st_rejected, RLX);
  o->segments = atomic_load_explicit(&w->st_segments, RLX);
  o->next_lsn = atomic_load_explicit(&w->head, RLX);
  o->written_lsn = atomic_load_explicit(&w->written, RLX);
  o->durable_lsn = atomic_load_explicit(&w->durable, RLX);
  o->queue_depth = o->next_lsn - 1 - o->written_lsn;
  if (o->written_lsn >= o->next_lsn) o->queue_depth = 0;
  o->failed = atomic_load_explicit(&w->failed, RLX);
  return 0;
}

int tg_wal_remove_upto(tg_wal *w, uint64_t lsn, uint32_t *removed) {
  uint32_t cnt = 0;
  int rc = 0;
  char path[4096], name[TG__WAL_NAME_LEN + 1];
  pthread_mutex_lock(&w->seg_mu);
  /* Segment i holds LSNs [segs[i], segs[i+1]); the last one is being written. */
  while (w->nseg >= 2 && w->segs[1] - 1 <= lsn) {
    tg__wal_seg_name(name, w->segs[0]);
    rc = path_in(path, sizeof path, w->dir, name);
    if (!rc && unlink(path) < 0 && errno != ENOENT) rc = -errno;
    if (rc) break;
    memmove(w->segs, w->segs + 1, (w->nseg - 1) * sizeof *w->segs);
    w->nseg--;
    cnt++;
  }
  pthread_mutex_unlock(&w->seg_mu);
  if (cnt) {
    int r2 = tg__fsync_dir(w->dir);
    if (!rc) rc = r2;
  }
  if (removed) *removed = cnt;
  return rc;
}

/* ---- open and close ------------------------------------------------------------ */

void tg_wal_config_init(tg_wal_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->level = TG_WAL_BALANCED;
  cfg->sync_interval_ms = 10;
  cfg->segment_bytes = 64u << 20;
  cfg->ring_slots = 65536;
  cfg->linger_us = 1000;
}

int tg__wal_config_check(const tg_wal_config *c) {
  int ok = c->level >= TG_WAL_STRICT && c->level <= TG_WAL_RELAXED &&
         c->sync_interval_ms >= TG_WAL_SYNC_INTERVAL_MIN_MS &&
         c->sync_interval_ms <= TG_WAL_SYNC_INTERVAL_MAX_MS &&
         c->segment_bytes >= TG_WAL_SEGMENT_MIN && c->segment_bytes <= TG_WAL_SEGMENT_MAX &&
         c->segment_bytes % TG_WAL_SEGMENT_ALIGN == 0 && c->ring_slots >= TG_WAL_RING_MIN &&
         c->ring_slots <= TG_WAL_RING_MAX && (c->ring_slots & (c->ring_slots - 1)) == 0 &&
         (c->nonblocking == 0 || c->nonblocking == 1) && c->linger_us <= TG_WAL_LINGER_MAX_US;
  return ok ? 0 : TG_EINVAL;
}
_Static_assert(TG_WAL_SEGMENT_MIN >= TG__WAL_MIN_SEGMENT, "a segment holds its header");
_Static_assert(TG_WAL_SEGMENT_ALIGN % TG__WAL_ALIGN == 0, "frames stay aligned");

static int remove_tmp_files(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return -errno;
  struct dirent *e;
  char path[4096];
  int rc = 0;
  while ((e = readdir(d)) != NULL) {
    size_t l = strlen(e->d_name);
    if (l < 4 || strcmp(e->d_name + l - 4, ".tmp") != 0) continue;
    if (path_in(path, sizeof path, dir, e->d_name) == 0 && unlink(path) < 0 && errno != ENOENT) {
      rc = -errno;
      break;
    }
  }
  closedir(d);
  return rc;
}

/* Recover the last segment (see RECOVERY above): leaves w->fd open on it,
   positioned after its last valid frame, and sets w->next. */
static int recover_last(tg_wal *w, uint64_t first, tg_wal_open_info *info) {
  tg_wal_reader *r = NULL;
  tg_wal_record rec;
  char path[4096], name[TG__WAL_NAME_LEN + 1];
  int rc = tg_wal_reader_open(&r, w->dir, first);
  if (rc) return rc;
  while ((rc = tg_wal_reader_next(r, &rec)) == 1) {
  }
  const tg_wal_end *end = tg_wal_reader_end(r);
  if (end->reason != TG_WAL_END_CLEAN && end->reason != TG_WAL_END_TORN) {
    rc = end->err ? end->err : TG_ECORRUPT;
    goto cleanup;
  }
  uint64_t e = end->offset < TG__WAL_HDR ? TG__WAL_HDR : end->offset;
  w->next = end->last_lsn ? end->last_lsn + 1 : first;
  if (end->reason == TG_WAL_END_TORN) {
    info->torn_tail = 1;
    info->torn_segment = first;
    info->torn_offset = e;
  }
  tg__wal_seg_name(name, first);
  rc = path_in(path, sizeof path, w->dir, name);
  if (rc) goto cleanup;
  w->fd = open(path, O_RDWR | O_CLOEXEC);
  if (w->fd < 0) {
    rc = -errno;
    goto cleanup;
  }
  /* Cut everything after the last valid frame so nothing stale can be read
     back later, then preallocate again. */
  rc = tg__ftruncate(w->fd, (off_t)e);
  if (!rc) rc = tg__fsync(w->fd);
  if (!rc && e < w->cfg.segment_bytes) {
    rc = tg__fallocate(w->fd, (off_t)e, (off_t)(w->cfg.segment_bytes - e));
    if (rc == -EOPNOTSUPP) rc = 0;
  }
  if (rc) goto cleanup;
  w->seg_first = first;
  w->seg_off = e;
cleanup:
  tg_wal_reader_close(r);
  return rc;
}

int tg_wal_open(tg_wal **out, const char *dir, const tg_wal_config *cfg,
                tg_wal_open_info *info) {
  return tg__wal_open_ex(out, dir, cfg, NULL, info);
}

int tg__wal_open_ex(tg_wal **out, const char *dir, const tg_wal_config *cfg,
                    const tg__wal_store_opts *opts, tg_wal_open_info *info) {
  tg_wal_open_info dummy;
  tg_wal *w = NULL;
  uint64_t *segs = NULL;
  size_t nseg = 0;
  int rc = 0;
  *out = NULL;
  if (!info) info = &dummy;
  memset(info, 0, sizeof *info);

  tg_wal_config c;
  if (cfg) c = *cfg;
  else tg_wal_config_init(&c);
  tg__wal_store_opts o = {0};
  if (opts) o = *opts;
  if (o.start_lsn == 0) o.start_lsn = 1;
  if (tg__wal_config_check(&c) || o.start_lsn > TG_WAL_MAX_LSN) return TG_EINVAL;

  w = calloc(1, sizeof *w);
  if (!w) return TG_ENOMEM;
  w->fd = -1;
  w->next_fd = -1;
  w->cfg = c;
  w->opts = o;
  w->level = c.level;
  w->nonblocking = c.nonblocking;
  w->cap = c.ring_slots;
  w->mask = c.ring_slots - 1u;
  w->interval_ns = (uint64_t)c.sync_interval_ms * 1000000u;
  w->linger_ns = c.level == TG_WAL_STRICT ? 0 : (uint64_t)c.linger_us * 1000u;
  w->linger_wake = w->cap / 4 ? w->cap / 4 : 1;
  pthread_mutex_init(&w->mu, NULL);
  pthread_mutex_init(&w->seg_mu, NULL);
  pthread_cond_init(&w->durable_cv, NULL);
  pthread_cond_init(&w->space_cv, NULL);
  w->dir = strdup(dir);
  if (!w->dir) {
    rc = TG_ENOMEM;
    goto fail;
  }
  if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
    rc = -errno;
    goto fail;
  }
  if ((rc = remove_tmp_files(dir)) != 0) goto fail;
  if ((rc = tg__wal_list(dir, &segs, &nseg)) != 0) goto fail;

  if (nseg == 0) {
    w->next = o.start_lsn;
    if ((rc = prepare_next(w)) != 0 || (rc = install_next(w, o.start_lsn)) != 0) goto fail;
  } else {
    if ((rc = recover_last(w, segs[nseg - 1], info)) != 0) goto fail;
    for (size_t i = 0; i < nseg; i++)
      if ((rc = seg_list_add(w, segs[i])) != 0) goto fail;
  }
  if (w->next > TG_WAL_MAX_LSN) {
    rc = TG_EINVAL;
    goto fail;
  }

  size_t ring_bytes = (size_t)c.ring_slots * SLOT_BYTES;
  void *ring = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (ring == MAP_FAILED) {
    rc = TG_ENOMEM;
    goto fail;
  }
  w->ring = ring;
  madvise(ring, ring_bytes, MADV_HUGEPAGE);
  /* Touch every page now: a first touch costs ~10 us, never on the hot path. */
  memset(ring, 0, ring_bytes);
  w->buf = aligned_alloc(4096, BUF_BYTES);
  if (!w->buf) {
    rc = TG_ENOMEM;
    goto fail;
  }
  memset(w->buf, 0, BUF_BYTES);

  /* Relaxed: no other thread sees w before pthread_create, which orders these. */
  atomic_store_explicit(&w->head, w->next, RLX);
  atomic_store_explicit(&w->consumed, w->next, RLX);
  w->w_written = w->w_durable = w->next - 1;
  atomic_store_explicit(&w->written, w->next - 1, RLX);
  atomic_store_explicit(&w->durable, w->next - 1, RLX);
  w->last_sync_ns = tg__now_ns();

  info->oldest_lsn = w->nseg ? w->segs[0] : 0;
  info->last_lsn = w->next - 1 >= w->segs[0] ? w->next - 1 : 0;
  if (nseg == 0) info->last_lsn = 0;
  info->next_lsn = w->next;
  info->segments = (uint32_t)w->nseg;

  if (o.on_segment) o.on_segment(o.hook_arg, w->seg_first);
  if ((rc = pthread_create(&w->thread, NULL, writer_main, w)) != 0) {
    rc = -rc;
    goto fail;
  }
  w->thread_started = 1;
  free(segs);
  *out = w;
  return 0;
fail:
  free(segs);
  tg_wal_close(w);
  if (rc == -ENOSPC || rc == -EDQUOT) rc = TG_ENOSPC;
  return rc;
}

int tg_wal_close(tg_wal *w) {
  if (!w) return 0;
  if (w->thread_started) {
    atomic_store_explicit(&w->closing, 1, SEQ); /* SLEEP/CLOSE, then wake_writer */
    wake_writer(w);
    pthread_join(w->thread, NULL);
  }
  int rc = atomic_load_explicit(&w->failed, ACQ); /* the writer is joined */
  if (w->next_fd >= 0) {
    char path[4096];
    close(w->next_fd);
    if (path_in(path, sizeof path, w->dir, TMP_NAME) == 0) unlink(path);
  }
  if (w->fd >= 0) close(w->fd);
  if (w->ring) {
    /* Large payloads still queued after a failure. */
    for (uint64_t i = 0; i < w->cap; i++) free(w->ring[i].ext);
    munmap(w->ring, (size_t)w->cap * SLOT_BYTES);
  }
  free(w->buf);
  free(w->segs);
  free(w->dir);
  pthread_mutex_destroy(&w->mu);
  pthread_mutex_destroy(&w->seg_mu);
  pthread_cond_destroy(&w->durable_cv);
  pthread_cond_destroy(&w->space_cv);
  free(w);
  return rc;
}
