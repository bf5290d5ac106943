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
 * frame header and payload into a 128-byte ring slot and publish it with a
 * release store (LMAX Disruptor / NanoLog style): no lock, no allocation, no
 * system call. One writer thread drains published slots in order into a
 * 1 MiB buffer, computes each frame's CRC there, pwrites the batch and
 * fdatasyncs by level. It sleeps on a futex only when the ring is empty; an
 * appender pays for a wake-up only when it sees the writer's `sleeping` flag
 * (Dekker-style: the writer sets the flag then re-reads `head`, the appender
 * does its seq_cst fetch_add on `head` then reads the flag, so one of them
 * always sees the other).
 *
 * LINGER. At BALANCED and RELAXED an idle writer does not spin and is not
 * woken per append: it sleeps up to linger_us (default 1 ms; the BALANCED
 * fdatasync deadline can cut it short) with `sleeping` = 2, and appenders
 * wake it only once a quarter of the ring is queued; sync requests, a full
 * ring and close wake it at once. Measured on the reference VM (2 vCPUs,
 * reference workload: one append per 1,000 token creations, about every
 * 16 us): waking or spinning the writer for each append slowed the creating
 * thread by 24-36% (a futex wake and a vCPU wake-up per append); lingering
 * 1 ms brings that to 4-8%. What it gives up: on kill -9 up to linger_us of
 * appends can still be queued (the contract's "what was still queued").
 * STRICT keeps the spin and the per-append wake.
 */
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
#include "wal/wal_internal.h"

#define SLOT_BYTES 128
#define SLOT_FRAME (SLOT_BYTES - 16)              /* frame header + inline payload */
#define SLOT_INLINE (SLOT_FRAME - TG__WAL_FRAME_HDR) /* 96 payload bytes */
#define BUF_BYTES (1u << 20) /* writer batch: 1 MiB, the size the raw reference uses */
#define TMP_NAME "next.tmp"

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define RLX memory_order_relaxed
#define ACQ memory_order_acquire
#define REL memory_order_release

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
  /* Read-mostly by appenders. */
  slot *ring;                /* ring_slots slots, mmap'd, prefaulted */
  uint64_t mask;             /* ring_slots - 1 */
  uint64_t cap;              /* ring_slots */
  int level;                 /* enum tg_wal_level */
  int nonblocking;           /* TG_EAGAIN instead of blocking */
  _Atomic int failed;        /* 0, TG_ENOSPC or TG_EIO; set once */
  int os_errno;              /* errno behind `failed` (written before it) */

  alignas(64) _Atomic uint64_t head;     /* next LSN to hand out */
  alignas(64) _Atomic uint64_t consumed; /* LSNs < consumed have left the ring */
  alignas(64) _Atomic int sleeping;      /* writer is (about to be) in futex
                                            wait: 1 = wake on any append,
                                            2 = lingering, see LINGER */
  _Atomic uint32_t wake_word;            /* futex word the writer waits on */
  _Atomic int closing;                   /* tg_wal_close() has begun */
  _Atomic uint64_t sync_req;             /* highest LSN a tg_wal_sync() waits for */
  _Atomic uint32_t space_waiters;        /* appenders blocked on a full ring */
  _Atomic uint64_t durable;              /* LSNs <= durable are fdatasynced */
  _Atomic uint64_t written;              /* LSNs <= written are in the file */
  _Atomic uint32_t strict_inflight;      /* STRICT appenders inside tg_wal_append */

  pthread_mutex_t mu;                    /* guards the two condition variables */
  pthread_cond_t durable_cv;             /* broadcast after each fdatasync / failure */
  pthread_cond_t space_cv;               /* broadcast when ring space frees up */

  /* Counters: writer-only ones use plain relaxed load+store. */
  _Atomic uint64_t st_records, st_bytes, st_batches, st_fdatasyncs, st_segments;
  _Atomic uint64_t st_blocked, st_blocked_ns, st_rejected;

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
  uint64_t linger_ns;        /* BALANCED/RELAXED: idle writer wakes this often */
  uint64_t linger_wake;      /* ... or when this many records are queued */

  pthread_mutex_t seg_mu;    /* guards segs/nseg (tg_wal_remove_upto vs switch) */
  uint64_t *segs;            /* first LSNs of the segments on disk, sorted */
  size_t nseg, segcap;

  tg_wal_config cfg;
  char *dir;
  pthread_t thread;
  int thread_started;
};

/* ---- small helpers ------------------------------------------------------- */

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void stat_add(_Atomic uint64_t *c, uint64_t n) {
  atomic_store_explicit(c, atomic_load_explicit(c, RLX) + n, RLX);
}

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t val, const struct timespec *rel) {
  syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, rel, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr) {
  syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void wake_writer(tg_wal *w) {
  if (atomic_exchange(&w->sleeping, 0)) {
    atomic_fetch_add(&w->wake_word, 1);
    futex_wake(&w->wake_word);
  }
}

/* An appender that saw the writer asleep: wake it, unless it is lingering
   and the queue is still short (see LINGER). */
static void wake_if_due(tg_wal *w, uint64_t seq) {
  if (atomic_load(&w->sleeping) == 2 &&
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
  if (atomic_load(&w->failed)) return;
  w->os_errno = -rc;
  int code = (rc == -ENOSPC || rc == -EDQUOT || rc == TG_ENOSPC) ? TG_ENOSPC : TG_EIO;
  pthread_mutex_lock(&w->mu);
  atomic_store(&w->failed, code);
  pthread_cond_broadcast(&w->durable_cv);
  pthread_cond_broadcast(&w->space_cv);
  pthread_mutex_unlock(&w->mu);
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
  unsigned char hdr[TG__WAL_HDR];
  char from[4096], to[4096], name[TG__WAL_NAME_LEN + 1];
  tg__wal_seg_name(name, first);
  int rc = path_in(from, sizeof from, w->dir, TMP_NAME);
  if (!rc) rc = path_in(to, sizeof to, w->dir, name);
  if (rc) return rc;
  tg__wal_header_encode(hdr, first, w->cfg.segment_bytes);
  rc = tg__pwrite_all(w->next_fd, hdr, sizeof hdr, 0);
  if (!rc) rc = tg__fdatasync(w->next_fd);
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
  uint64_t upto = w->w_written;
  if (w->cfg.on_io) w->cfg.on_io(w->cfg.hook_arg, TG_WAL_IO_SYNC, 0, upto);
  uint64_t t0 = now_ns();
  int rc = tg__fdatasync(w->fd);
  uint64_t t1 = now_ns();
  if (w->cfg.on_io) w->cfg.on_io(w->cfg.hook_arg, TG_WAL_IO_SYNC, 1, upto);
  stat_add(&w->st_fdatasyncs, 1);
  if (rc) {
    wal_fail(w, rc);
    return;
  }
  w->last_sync_ns = t1;
  w->w_durable = upto;
  /* The hook runs before the waiters are released, so whoever sees the
     record durable also sees the hook's effect for that fdatasync. */
  if (w->cfg.on_sync) w->cfg.on_sync(w->cfg.hook_arg, t1 - t0, upto);
  pthread_mutex_lock(&w->mu);
  atomic_store(&w->durable, upto);
  pthread_cond_broadcast(&w->durable_cv);
  pthread_mutex_unlock(&w->mu);
}

static void flush_buf(tg_wal *w) {
  if (!w->buf_len || atomic_load(&w->failed)) return; /* never write after a failure */
  if (w->cfg.on_io) w->cfg.on_io(w->cfg.hook_arg, TG_WAL_IO_WRITE, 0, w->buf_len);
  int rc = tg__pwrite_all(w->fd, w->buf, w->buf_len, (off_t)w->seg_off);
  if (w->cfg.on_io) w->cfg.on_io(w->cfg.hook_arg, TG_WAL_IO_WRITE, 1, w->buf_len);
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
  flush_buf(w);
  if (atomic_load(&w->failed)) return;
  if (w->w_written > w->w_durable) do_sync(w); /* the old segment is complete on disk */
  if (atomic_load(&w->failed)) return;
  int rc = w->next_fd >= 0 ? 0 : prepare_next(w);
  if (!rc) rc = install_next(w, first);
  if (rc) {
    wal_fail(w, rc);
    return;
  }
  stat_add(&w->st_segments, 1);
  if (w->cfg.on_segment) w->cfg.on_segment(w->cfg.hook_arg, first);
}

/* A frame too large for the batch buffer: write it in place, in pieces. */
static void write_big(tg_wal *w, slot *s, uint32_t len) {
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
  uint64_t head = atomic_load_explicit(&w->head, ACQ);
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
    /* The records are in the buffer: give the slots back before the write. */
    atomic_store(&w->consumed, w->next);
    if (atomic_load(&w->space_waiters)) {
      pthread_mutex_lock(&w->mu);
      pthread_cond_broadcast(&w->space_cv);
      pthread_mutex_unlock(&w->mu);
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
  uint64_t t0 = now_ns(), last = t0;
  while (w->w_written - w->w_durable < atomic_load_explicit(&w->strict_inflight, RLX)) {
    if (drain(w)) {
      last = now_ns();
      continue;
    }
    if (atomic_load_explicit(&w->failed, RLX)) return;
    uint64_t t = now_ns();
    if (t - last > GATHER_IDLE_NS || t - t0 > GATHER_MAX_NS) return;
    sched_yield(); /* let the woken appenders run on this core */
  }
}

/* Spin this long for new work before sleeping on the futex: a STRICT
   appender is back within microseconds of its wake-up, and a futex wake
   costs it a system call plus the writer's wake-up latency. */
#define IDLE_SPIN_NS 20000u

static void *writer_main(void *arg) {
  tg_wal *w = arg;
  unsigned spins = 0;
  while (!atomic_load_explicit(&w->failed, RLX)) {
    uint64_t n = drain(w);
    if (atomic_load_explicit(&w->failed, RLX)) break;

    if (w->next_fd < 0 && w->seg_off >= w->cfg.segment_bytes / 2) {
      int rc = prepare_next(w); /* before it is needed: a switch then costs no fallocate */
      if (rc) {
        wal_fail(w, rc);
        break;
      }
    }

    if (w->w_written > w->w_durable) {
      int need = w->level == TG_WAL_STRICT;
      if (!need && atomic_load(&w->sync_req) > w->w_durable) need = 1;
      if (!need && w->level == TG_WAL_BALANCED && now_ns() - w->last_sync_ns >= w->interval_ns)
        need = 1;
      if (!need && atomic_load(&w->closing) && w->next == atomic_load(&w->head)) need = 1;
      if (need) {
        if (w->level == TG_WAL_STRICT && atomic_load_explicit(&w->strict_inflight, RLX) > 1)
          gather(w);
        if (atomic_load_explicit(&w->failed, RLX)) break;
        do_sync(w);
        continue;
      }
    }
    if (n) {
      spins = 0;
      continue;
    }

    uint64_t head = atomic_load(&w->head);
    if (atomic_load(&w->closing) && w->next == head && w->w_written == w->w_durable) break;
    if (head != w->next) {
      /* Claimed but not yet published: the appender is mid-copy (or was
         preempted on this 2-core machine: then yield to it). */
      if (++spins < 64) cpu_relax();
      else sched_yield();
      continue;
    }
    spins = 0;
    if (w->linger_ns && !atomic_load(&w->closing)) {
      uint32_t ww = atomic_load(&w->wake_word);
      atomic_store(&w->sleeping, 2);
      if (atomic_load(&w->sync_req) > w->w_durable || atomic_load(&w->closing) ||
          atomic_load(&w->space_waiters)) {
        atomic_store(&w->sleeping, 0);
        continue;
      }
      uint64_t rel = w->linger_ns;
      if (w->level == TG_WAL_BALANCED && w->w_written > w->w_durable) {
        uint64_t due = w->last_sync_ns + w->interval_ns, t = now_ns();
        if (due <= t) rel = 0;
        else if (due - t < rel) rel = due - t;
      }
      struct timespec lts = {(time_t)(rel / 1000000000u), (long)(rel % 1000000000u)};
      if (rel) futex_wait(&w->wake_word, ww, &lts);
      atomic_store(&w->sleeping, 0);
      continue;
    }
    if (!atomic_load(&w->closing)) {
      uint64_t t0 = now_ns();
      int seen = 0;
      while (!seen && now_ns() - t0 < IDLE_SPIN_NS) {
        for (int i = 0; i < 64 && !seen; i++) {
          cpu_relax();
          seen = atomic_load_explicit(&w->head, RLX) != w->next ||
                 atomic_load_explicit(&w->sync_req, RLX) > w->w_durable;
        }
      }
      if (seen) continue;
    }

    uint32_t ww = atomic_load(&w->wake_word);
    atomic_store(&w->sleeping, 1);
    if (atomic_load(&w->head) != w->next || atomic_load(&w->sync_req) > w->w_durable ||
        atomic_load(&w->closing)) {
      atomic_store(&w->sleeping, 0);
      continue;
    }
    struct timespec ts, *tsp = NULL;
    if (w->level == TG_WAL_BALANCED && w->w_written > w->w_durable) {
      uint64_t due = w->last_sync_ns + w->interval_ns, t = now_ns();
      uint64_t rel = due > t ? due - t : 0;
      ts.tv_sec = (time_t)(rel / 1000000000u);
      ts.tv_nsec = (long)(rel % 1000000000u);
      tsp = &ts;
    }
    futex_wait(&w->wake_word, ww, tsp);
    atomic_store(&w->sleeping, 0);
  }
  return NULL;
}

/* ---- appending --------------------------------------------------------------- */

static int wait_space(tg_wal *w, uint64_t seq) {
  uint64_t t0 = now_ns();
  int rc = 0;
  for (int i = 0; i < 256; i++) {
    if (seq - atomic_load_explicit(&w->consumed, ACQ) < w->cap) goto done;
    cpu_relax();
  }
  pthread_mutex_lock(&w->mu);
  atomic_fetch_add(&w->space_waiters, 1);
  while (seq - atomic_load(&w->consumed) >= w->cap && !atomic_load(&w->failed)) {
    wake_writer(w);
    pthread_cond_wait(&w->space_cv, &w->mu);
  }
  atomic_fetch_sub(&w->space_waiters, 1);
  pthread_mutex_unlock(&w->mu);
done:
  if (seq - atomic_load_explicit(&w->consumed, ACQ) >= w->cap) rc = atomic_load(&w->failed);
  atomic_fetch_add_explicit(&w->st_blocked, 1, RLX);
  atomic_fetch_add_explicit(&w->st_blocked_ns, now_ns() - t0, RLX);
  return rc;
}

static inline int claim(tg_wal *w, uint64_t *seq) {
  if (likely(!w->nonblocking)) {
    uint64_t s = atomic_fetch_add(&w->head, 1);
    if (unlikely(s - atomic_load_explicit(&w->consumed, ACQ) >= w->cap)) {
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
  } while (!atomic_compare_exchange_weak(&w->head, &h, h + 1));
  *seq = h;
  return 0;
}

static int wait_durable(tg_wal *w, uint64_t lsn) {
  if (atomic_load_explicit(&w->durable, ACQ) >= lsn) return 0;
  if (w->level != TG_WAL_STRICT) {
    /* Ask the writer for an fdatasync (STRICT writers sync every batch). */
    uint64_t cur = atomic_load(&w->sync_req);
    while (cur < lsn && !atomic_compare_exchange_weak(&w->sync_req, &cur, lsn)) {
    }
    if (atomic_load(&w->sleeping)) wake_writer(w);
  }
  pthread_mutex_lock(&w->mu);
  while (atomic_load(&w->durable) < lsn && !atomic_load(&w->failed))
    pthread_cond_wait(&w->durable_cv, &w->mu);
  pthread_mutex_unlock(&w->mu);
  return atomic_load(&w->durable) >= lsn ? 0 : atomic_load(&w->failed);
}

static int append_large(tg_wal *w, uint8_t type, const void *payload, size_t len,
                        uint64_t *lsn_out) {
  if (len > TG_WAL_MAX_PAYLOAD) return TG_EINVAL;
  unsigned char *copy = malloc(len);
  if (!copy) return TG_ENOMEM;
  memcpy(copy, payload, len);
  uint64_t seq;
  int rc = claim(w, &seq);
  if (rc) {
    free(copy);
    return rc;
  }
  slot *s = &w->ring[seq & w->mask];
  s->ext = copy;
  tg__st32(s->frame, (uint32_t)(TG__WAL_FRAME_HDR + len));
  tg__st64(s->frame + 8, seq | (uint64_t)type << 56);
  atomic_store_explicit(&s->published, seq, REL);
  if (atomic_load(&w->sleeping)) wake_if_due(w, seq);
  if (lsn_out) *lsn_out = seq;
  return w->level == TG_WAL_STRICT ? wait_durable(w, seq) : 0;
}

static int append_inner(tg_wal *w, uint8_t type, const void *payload, size_t len,
                        uint64_t *lsn, int wait) {
  int f = atomic_load_explicit(&w->failed, RLX);
  if (unlikely(f)) return f;
  if (unlikely(!payload && len)) return TG_EINVAL;
  if (unlikely(len > SLOT_INLINE)) return append_large(w, type, payload, len, lsn);
  uint64_t seq;
  int rc = claim(w, &seq);
  if (unlikely(rc)) return rc;
  slot *s = &w->ring[seq & w->mask];
  tg__st32(s->frame, (uint32_t)(TG__WAL_FRAME_HDR + len));
  tg__st64(s->frame + 8, seq | (uint64_t)type << 56);
  memcpy(s->frame + TG__WAL_FRAME_HDR, payload, len);
  atomic_store_explicit(&s->published, seq, REL);
  /* seq_cst load, ordered after the fetch_add above: see THE PIPELINE. */
  if (unlikely(atomic_load(&w->sleeping))) wake_if_due(w, seq);
  if (lsn) *lsn = seq;
  if (wait && w->level == TG_WAL_STRICT) return wait_durable(w, seq);
  return 0;
}

static int append(tg_wal *w, uint8_t type, const void *payload, size_t len, uint64_t *lsn) {
  return append_inner(w, type, payload, len, lsn, 1);
}

static int append_strict(tg_wal *w, uint8_t type, const void *payload, size_t len,
                         uint64_t *lsn) {
  atomic_fetch_add_explicit(&w->strict_inflight, 1, RLX);
  int rc = append(w, type, payload, len, lsn);
  atomic_fetch_sub_explicit(&w->strict_inflight, 1, RLX);
  return rc;
}

int tg_wal_append(tg_wal *w, uint8_t type, const void *payload, size_t len, uint64_t *lsn) {
  if (w->level == TG_WAL_STRICT) return append_strict(w, type, payload, len, lsn);
  return append(w, type, payload, len, lsn);
}

void tg_wal_strict_begin(tg_wal *w) {
  if (w->level == TG_WAL_STRICT) atomic_fetch_add_explicit(&w->strict_inflight, 1, RLX);
}

int tg_wal_append_nowait(tg_wal *w, uint8_t type, const void *payload, size_t len,
                         uint64_t *lsn) {
  return append_inner(w, type, payload, len, lsn, 0);
}

int tg_wal_strict_end(tg_wal *w, uint64_t lsn) {
  if (w->level != TG_WAL_STRICT) return 0;
  int rc = lsn ? wait_durable(w, lsn) : 0;
  atomic_fetch_sub_explicit(&w->strict_inflight, 1, RLX);
  return rc;
}

int tg_wal_sync(tg_wal *w, uint64_t lsn) {
  uint64_t head = atomic_load(&w->head);
  if (lsn == 0) lsn = head - 1;
  if (lsn >= head) return TG_EINVAL;
  if (atomic_load_explicit(&w->durable, ACQ) >= lsn) return 0;
  int f = atomic_load(&w->failed);
  if (f) return f;
  uint64_t cur = atomic_load(&w->sync_req);
  while (cur < lsn && !atomic_compare_exchange_weak(&w->sync_req, &cur, lsn)) {
  }
  wake_writer(w);
  pthread_mutex_lock(&w->mu);
  while (atomic_load(&w->durable) < lsn && !atomic_load(&w->failed))
    pthread_cond_wait(&w->durable_cv, &w->mu);
  pthread_mutex_unlock(&w->mu);
  return atomic_load(&w->durable) >= lsn ? 0 : atomic_load(&w->failed);
}

int tg_wal_failed(const tg_wal *w, int *os_errno) {
  int f = atomic_load(&((tg_wal *)w)->failed);
  if (os_errno) *os_errno = f ? w->os_errno : 0;
  return f;
}

int tg_wal_stats_get(const tg_wal *cw, tg_wal_stats *o) {
  tg_wal *w = (tg_wal *)cw;
  memset(o, 0, sizeof *o);
  o->records = atomic_load_explicit(&w->st_records, RLX);
  o->bytes = atomic_load_explicit(&w->st_bytes, RLX);
  o->batches = atomic_load_explicit(&w->st_batches, RLX);
  o->fdatasyncs = atomic_load_explicit(&w->st_fdatasyncs, RLX);
  o->blocked = atomic_load_explicit(&w->st_blocked, RLX);
  o->blocked_ns = atomic_load_explicit(&w->st_blocked_ns, RLX);
  o->rejected = atomic_load_explicit(&w->st_rejected, RLX);
  o->segments = atomic_load_explicit(&w->st_segments, RLX);
  o->next_lsn = atomic_load(&w->head);
  o->written_lsn = atomic_load(&w->written);
  o->durable_lsn = atomic_load(&w->durable);
  o->queue_depth = o->next_lsn - 1 - o->written_lsn;
  if (o->written_lsn >= o->next_lsn) o->queue_depth = 0;
  o->failed = atomic_load(&w->failed);
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
  cfg->start_lsn = 1;
}

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
  if (c.start_lsn == 0) c.start_lsn = 1;
  if (c.level < TG_WAL_STRICT || c.level > TG_WAL_RELAXED || c.segment_bytes < TG__WAL_MIN_SEGMENT ||
      c.segment_bytes % 4096 || c.ring_slots < 2 || (c.ring_slots & (c.ring_slots - 1)) ||
      c.ring_slots > (1u << 26) || c.start_lsn > TG_WAL_MAX_LSN)
    return TG_EINVAL;

  w = calloc(1, sizeof *w);
  if (!w) return TG_ENOMEM;
  w->fd = -1;
  w->next_fd = -1;
  w->cfg = c;
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
    w->next = c.start_lsn;
    if ((rc = prepare_next(w)) != 0 || (rc = install_next(w, c.start_lsn)) != 0) goto fail;
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

  atomic_store(&w->head, w->next);
  atomic_store(&w->consumed, w->next);
  w->w_written = w->w_durable = w->next - 1;
  atomic_store(&w->written, w->next - 1);
  atomic_store(&w->durable, w->next - 1);
  w->last_sync_ns = now_ns();

  info->oldest_lsn = w->nseg ? w->segs[0] : 0;
  info->last_lsn = w->next - 1 >= w->segs[0] ? w->next - 1 : 0;
  if (nseg == 0) info->last_lsn = 0;
  info->next_lsn = w->next;
  info->segments = (uint32_t)w->nseg;

  if (c.on_segment) c.on_segment(c.hook_arg, w->seg_first);
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
    atomic_store(&w->closing, 1);
    wake_writer(w);
    pthread_join(w->thread, NULL);
  }
  int rc = atomic_load(&w->failed);
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
