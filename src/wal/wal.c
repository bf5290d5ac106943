/*
 * tokengraph write-ahead log: writer side. Reader in reader.c.
 *
 * ON-DISK FORMAT (version 2; docs/wal-format.md is the full text and must be
 * kept in step with this comment). All integers little-endian. "CRC" is
 * zlib's crc32 (poly 0xEDB88320), computed by tg__crc32() (src/common/crc32.c).
 *
 * The WAL directory holds segments named "%020llu.wal" after the LSN of their
 * first record, possibly "next.tmp" (a segment being prepared, not part of
 * the log), "<segment>.broken[.N]" (bytes a recovery cut, kept) and "ring"
 * (the append queue, see RING FILE; never part of the log). LSNs are
 * consecutive across the whole log, in [1, 2^56).
 *
 * Segment header, 64 bytes at offset 0:
 *    0   8  magic "TGWALSEG"
 *    8   4  version = 2 (1 is still read, by its own rules, never appended to)
 *   12   4  header size = 64
 *   16   8  first LSN (= the file name)
 *   24   8  preallocated size (informational)
 *   32   4  frame alignment = 8
 *   36  24  reserved, zero
 *   60   4  CRC of bytes 0..59
 *
 * Frame at offset o (8-aligned, o >= 64):
 *    o+0   4  len = 16 + payload length
 *    o+4   4  CRC of bytes [o, o+4) then [o+8, o+len)
 *    o+8   8  bits 0..55 LSN, bits 56..63 record type
 *    o+16     payload (len - 16 bytes, at most TG_WAL_MAX_PAYLOAD)
 *    o+len    zero padding to the next multiple of 8
 * The 8-aligned 16-byte frame header never straddles a sector, so a torn
 * write cannot leave half a length. A 64-byte payload is an 80-byte frame.
 * A MARKER is a frame with LSN bits 0 and its kind in the type byte, len 32,
 * payload u64 offset, u64 lsn; readers skip it in the LSN sequence:
 *   DURABLE (1): bytes [0, offset) of this segment, holding every record up
 *     to lsn, were fdatasynced before it was written. The first batch after
 *     each fdatasync starts with one; close ends the log with one, synced.
 *   SWITCH (2): the segment ends here, the next one starts at LSN lsn and
 *     its name was durable before this was written; offset = its own.
 * A segment's DURABLE POINT D is the largest offset of its markers (any
 * valid marker in the segment, also after where reading stopped), at
 * least 64.
 *
 * VALIDITY. At frame position o in a file of size S exactly one holds:
 *   zeros: o == S, or fewer than 16 bytes left and all zero, or the 16
 *     header bytes all zero;
 *   valid frame: 16 <= len <= 16 + 16 MiB, o + len <= S, CRC matches, the
 *     padding present in the file is zero (a marker must also be well
 *     formed: offset in [64, o], 8-aligned; else it is a bad frame);
 *   bad frame: anything else.
 * A valid record must carry the expected LSN (previous + 1; the segment's
 * first LSN for its first frame), else the log is corrupt. A segment that
 * follows another must start at the expected LSN, else corrupt (LSN gap).
 *
 * CLASSIFICATION (version 2) where reading of the last segment stops at o
 * (zeros or a bad frame): o < D -> corruption (damage to durable bytes;
 * zeros followed by a valid frame included); zeros and only zeros after
 * -> clean, unless o is the end of a file shorter than its header's
 * preallocated size (cut short: a torn tail with nothing to cut); else ->
 * torn tail (garbage, or anything followed by valid frames, after the
 * durable point). A segment before the last must end with its SWITCH
 * marker, except the one before a last segment that holds NO MARKER frame
 * at any offset (an interrupted switch: it is then classified as the last,
 * and the unsealed one is not part of the log); a last segment ending with
 * a SWITCH marker
 * means its successor was deleted: corruption. Version 1: zeros end a
 * segment; a bad frame is a torn tail only in the last segment with no
 * valid frame after it. Also corruption: a bad header (an unsupported
 * version is TG_EVERSION), a record LSN gap or disorder.
 *
 * RECOVERY (tg_wal_open): delete *.tmp; read the last segment (from its
 * predecessor if it holds no marker); if corrupt, refuse naming segment,
 * offset and reason, and change nothing. An interrupted switch's unsealed
 * segment: keep its frames in <segment>.broken, remove it (fsync the
 * directory). If torn at E, first keep [E, size) in
 * <segment>.broken (fsync it and the directory): recovery never destroys
 * bytes. ftruncate to E, fsync (this also makes [0, E) durable after a mere
 * process crash), preallocate again and append from E with the next LSN; a
 * version-1 segment is not appended to (a new segment starts).
 *
 * WHY THE ORDERINGS. A segment switch fdatasyncs the old segment before the
 * new name exists; the new segment's header is fdatasynced before it is
 * renamed into place and the directory fsynced; only then is the SWITCH
 * marker written to the old segment and fdatasynced, and only then does
 * the new segment get a marker or a record published durable (records may
 * be written to it before: SWITCH SEALING). So every .wal name has a valid
 * durable header, a torn write can only be after a durable point, a SWITCH
 * marker proves its successor existed, and a segment without one has at
 * most an unsealed successor (no marker, nothing in it published durable).
 *
 * SWITCH SEALING. A switch used to hold the writer for four fdatasyncs, a
 * rename and a directory fsync, while appends kept being acknowledged into
 * the ring: with 256 KiB segments test_powerloss lost work acknowledged
 * 16-40 ms before a power loss at BALANCED. Now, with a sync thread, the
 * writer only writes the new segment's header into the prepared next.tmp
 * and goes on writing records after it; the sync thread seals the switch
 * before anything else (seal_switch: the old segment fdatasynced - its
 * records published durable -, the new one fdatasynced, renamed, the
 * directory fsynced, the SWITCH marker written and fdatasynced) and only
 * then publishes the new segment's records durable and lets the writer put
 * a DURABLE marker there. A power loss before the SWITCH marker is durable
 * leaves a last segment with records but no marker (or only next.tmp,
 * removed at open): recovery keeps its frames in .broken and removes it,
 * losing nothing that was published durable. The writer seals a pending
 * switch itself before its next switch, its own fdatasync and its close
 * marker (lock_sync_thread), and next.tmp is not prepared again until the
 * seal renamed it (seal_pending). STRICT (no sync thread) and the open's
 * recovery seal at once, before any record goes to the new segment. A marker is written after the fdatasync it reports, so it
 * never vouches for bytes that were not durable. Truncating to E at open
 * means stale bytes of an earlier incarnation can never be read back as
 * records with a plausible LSN.
 *
 * THE PIPELINE. Appenders claim an LSN with one atomic fetch_add on `head`
 * (LSN == ring sequence number, so file order == LSN order), copy their
 * frame header and payload into a 128-byte ring slot (a payload over 96
 * bytes goes to the ring file's spill region instead, see RING FILE) and
 * publish it with a release store (LMAX Disruptor / NanoLog style): no
 * lock, no allocation, no system call for a small record. There is one
 * such path, enqueue(); only the public entry points decide whether to wait
 * for durability afterwards. One writer thread drains published slots in
 * order into a 1 MiB buffer, computes each frame's CRC there, pwrites the
 * batch, and only then gives the slots back (`consumed`): until its record
 * is in the file, a slot is what a crash recovers it from. The writer
 * fdatasyncs at STRICT; at the other levels the sync thread does (SYNC
 * THREAD). It sleeps on a futex only when the ring is empty; an appender
 * pays for a wake-up only when it sees the writer's `sleeping` state set.
 *
 * RING FILE. The ring is not anonymous memory but a MAP_SHARED mapping of
 * the file "ring" in the WAL directory (docs/wal-format.md, "The ring
 * file", has the layout): a store to a slot is a store to the page cache,
 * which outlives the process. So a record published before a crash (kill
 * -9, abort, a fatal signal) is still there for the next open in the same
 * boot, at no cost to the append: the same copy and release store as into
 * anonymous memory. Layout: a 4096-byte header (magic "TGWALRNG", version
 * 1, header size, slot size 128, slot count, spill size, the boot id of
 * /proc/sys/kernel/random/boot_id, CRC of bytes 0..79, state), the slots
 * (published LSN, spill position, frame header, 96 inline payload bytes),
 * then the spill region (2 x TG_WAL_MAX_PAYLOAD bytes): a larger payload is
 * copied there, its bytes and its LSN claimed together under spill_mu so
 * that spill order is LSN order and the writer frees the region in order
 * (spill_consumed); a record that would cross the region's end starts at
 * its beginning. The file is created 0600, opened O_NOFOLLOW relative to
 * the directory, refused unless a regular file, and its blocks allocated
 * at open (a store into a hole of a shared mapping on a full disk would be
 * a SIGBUS in an appender). Recovery, at open after the log's end E is
 * known and before anything else: only if the header is valid, names this
 * boot (the page cache the records were stored into is still the one in
 * memory) and is not marked closed cleanly, append the slots for E+1, E+2,
 * ... in order while each is published for exactly that LSN (the published
 * word and the frame's LSN both) and its payload lies inside the file,
 * then fdatasync; info->ring_records says how many. A slot is never torn:
 * `published` is an append's last store, with release order, and after a
 * process crash the page cache holds exactly what the process stored, so
 * the checks only reject what is not a record of this log. Then the ring
 * is stamped with this boot, its slots zeroed (no stale LSN can match
 * later), and a clean close marks it closed (state 2), so that a log cut
 * short later, by hand or by a tool, is not extended again from it. After
 * a reboot (another boot id) the ring is ignored: only what was
 * fdatasynced counts, as the contract says for a power loss. The boot id
 * is read through the I/O seam (tg__io.boot_id), so tests simulate a
 * reboot. A failed WAL leaves the ring marked in use: the next open
 * appends what was queued and never written.
 *
 * SYNC THREAD. At BALANCED and RELAXED a second thread makes the log
 * durable, so that records keep flowing to the kernel while an fdatasync
 * is in flight (a writer that synced itself handed nothing new to the
 * kernel for the whole fdatasync, and BALANCED lost work acknowledged
 * several intervals back). After each write the writer tells it how far
 * the file goes (sync_fd, sync_written, under sync_mu); it fdatasyncs that
 * at BALANCED every sync_interval_ms less the pacing budget (PACING),
 * counted from the start of its previous fdatasync (so a record written at
 * t is durable by t + three quarters of sync_interval_ms + one fdatasync,
 * and one appended at t by t + sync_interval_ms + one fdatasync), and at
 * every level as soon as a
 * caller waits for durability (sync_req; tg_wal_sync, a checkpoint), and it
 * seals segment switches (SWITCH SEALING). The writer still syncs itself
 * at STRICT (every batch: group commit, below) and at close, and hands a
 * switch over: then it first waits for the thread's fdatasync in flight
 * and keeps it out (lock_sync_thread), so the thread never syncs, or
 * holds, a descriptor the writer hands over or closes.
 *
 * LINGER. At BALANCED and RELAXED an idle writer does not spin and is not
 * woken per append: it sleeps up to linger_us (default 1 ms; the BALANCED
 * fdatasync deadline can cut it short) in state WRITER_LINGERING, and
 * appenders wake it only once a quarter of the ring is queued; sync
 * requests, a full ring and close wake it at once. Measured on the reference
 * VM (2 vCPUs, reference workload: one append per 1,000 token creations,
 * about every 16 us): waking or spinning the writer for each append slowed
 * the creating thread by 24-36% (a futex wake and a vCPU wake-up per
 * append); lingering 1 ms brings that to 4-8%. What it gives up: on a
 * power loss, up to linger_us more of appends (they reach the file that
 * much later); on a process crash nothing, the ring file keeps them.
 * STRICT keeps the spin and the per-append wake.
 *
 * SHIPPING. A store that replicates (wal_store.h, tg__wal_ship) gets the
 * records of every batch the writer has written, on the writer thread,
 * right after the pwrite: the frames exactly as in the segment, markers
 * left out (a DURABLE marker can only lead a batch). The shipper publishes
 * them asynchronously, so the writer waits only when the client's window
 * of unacknowledged messages is full: that is the ring's backpressure,
 * not a wait per batch. Acknowledgements come back on the client's thread
 * through tg__wal_ship_acked, which raises `acked`; a refusal (fencing, a
 * lost stream) fails the log through tg__wal_ship_failed. TG_WAL_REPLICATED
 * runs as STRICT and its callers count a record durable once it is both
 * fdatasynced (`durable`) and acknowledged (`acked`): caller_durable().
 * Such a caller leaves the group commit's count (strict_inflight) once its
 * record is fdatasynced and only then waits for the ack (wait_local), and
 * an ack wakes the waiters only when it moves caller_durable().
 * tg__wal_wait_replicated's callers (any level) sleep each on a condition
 * variable of its own, and an ack or an fdatasync signals only those it
 * releases (wake_replicated).
 * A record whose payload is over the shipper's max_payload is refused
 * (TG_EINVAL): a record travels in one message, at most 1 MiB.
 *
 * PACING. BALANCED promises that a power loss loses at most what was
 * acknowledged in the last sync_interval_ms plus one fdatasync; the sync
 * thread bounds the time from a write to its fdatasync, but not the time
 * from an append to its write: appenders that outrun the writer (three of
 * them on two loaded cores) put it up to a full ring (65,536 records, a
 * hundred milliseconds and more) behind. So the queue's age is bounded too.
 * The writer measures how fast it drains (records over the wall time of
 * drains that found work back to back, preemption included, over windows
 * of PACE_WINDOW_NS) and keeps q_limit at what it drains in pace_budget_ns
 * (a quarter of the interval); the sync thread starts its fdatasyncs every
 * interval less that budget, so queue age plus cadence is still the
 * interval. claim() already loads `consumed` after its fetch_add: it
 * compares the distance with q_limit instead of the ring's size (one more
 * load, of a line the writer rarely writes), and only past it looks at
 * `written` (slots held for an unsealed switch are written already: the
 * sync thread's part) and, if more than q_limit records are queued ahead
 * of its own, waits on the futex pace_word until the writer has written
 * enough (pace_wait; the writer wakes paced appenders after each write).
 * A waiting appender leaves its core to the writer, which is what lets the
 * writer catch up on a loaded machine. Nonblocking appenders get TG_EAGAIN
 * at the limit instead. STRICT and RELAXED keep q_limit at ring_slots
 * (STRICT appenders wait for their fdatasync anyway; RELAXED promises no
 * window).
 *
 * LOCKING. Four mutexes. `mu` guards the waits on the two condition
 * variables (a waiter re-checks `durable`, `failed`, `consumed` or
 * `spill_consumed` under it, and whoever changes them broadcasts under
 * it) and the list of tg__wal_wait_replicated callers asleep (rwaiters:
 * each on a condition variable of its own, signalled under mu by whoever
 * moves `durable`, `acked` or `failed` past it); `seg_mu` guards the
 * segment list (the writer's switch against tg_wal_remove_upto, which
 * also unlinks under it); `spill_mu` orders the
 * spill region's allocation with the LSN claim of a spilled record;
 * `sync_mu` guards the sync_* fields shared by the writer and the sync
 * thread. Lock order: sync_mu before seg_mu and mu (the writer's switch
 * and its own fdatasyncs run under sync_mu); spill_mu before mu (a spilled
 * append waiting for space); mu and seg_mu are never held together. No
 * I/O under `mu`, `seg_mu` or `spill_mu`; `sync_mu` is held across the
 * writer's fdatasyncs and switch, which only the sync thread and callers
 * asking for a sync (sync_kick) wait for.
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
 *   CONSUMED/SPACE: the writer stores `spill_consumed` and `consumed` then
 *     loads `space_waiters`; a blocked appender adds to `space_waiters`
 *     then loads `consumed` (or `spill_consumed`) - it either sees the
 *     space or is sent the broadcast.
 *   PACE/WRITTEN: the writer stores `written` then loads `pace_waiters`; a
 *     paced appender adds to `pace_waiters` then loads `written` - it
 *     either sees the progress or is woken.
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
#include <stddef.h>
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

/* One queued record, in the ring file (RING FILE above). Written by one
   appender, then read by the writer, or by the next open's recovery after a
   crash. */
typedef struct slot {
  _Atomic uint64_t published;       /* the LSN once frame (and spill bytes)
                                       are complete */
  uint64_t spill_pos;               /* payload > SLOT_INLINE: its position
                                       in the spill region (mod spill_cap) */
  unsigned char frame[SLOT_FRAME];  /* len, crc (left 0), lsn_type, payload */
} slot;
_Static_assert(sizeof(slot) == SLOT_BYTES, "ring slot is two cache lines");
_Static_assert(offsetof(slot, published) == 0 && offsetof(slot, spill_pos) == 8 &&
                   offsetof(slot, frame) == 16, "slot layout is docs/wal-format.md's");
_Static_assert(SLOT_INLINE == 96, "inline payload documented as 96 bytes");
/* spill_pos of an inline slot whose frame holds the CRC its appender
   checked (tg__wal_append_checked_nowait): the writer copies it instead of
   computing it again. Never a spill position (those stay below 2^63). */
#define SLOT_CRC_GIVEN (1ull << 63)

/* The ring file's header (RING FILE above): field offsets. */
enum {
  RH_MAGIC = 0,     /* 8 bytes "TGWALRNG" */
  RH_VERSION = 8,   /* u32 = 1 */
  RH_HDRSIZE = 12,  /* u32 = RING_HDR */
  RH_SLOTSIZE = 16, /* u32 = SLOT_BYTES */
  RH_SLOTS = 24,    /* u64 slot count, a power of two */
  RH_SPILL = 32,    /* u64 spill region bytes */
  RH_BOOT = 40,     /* TG__BOOT_ID_BYTES: the boot that wrote it */
  RH_CRC = 80,      /* u32 CRC of bytes 0..79 */
  RH_STATE = 88     /* u64 RING_OPEN or RING_CLOSED, written through the map */
};
#define RING_MAGIC "TGWALRNG"
#define RING_VERSION 1u
#define RING_HDR 4096u   /* one page: the slots start page-aligned */
#define RING_NAME TG__WAL_RING_NAME
#define RING_OPEN 1u     /* in use, or its process died */
#define RING_CLOSED 2u   /* closed cleanly: everything in it is in the log */
/* Twice the largest payload: a record always fits once the region is empty,
   even when it must skip the region's end (see spill_alloc). */
#define RING_SPILL (2ull * TG_WAL_MAX_PAYLOAD)
_Static_assert(RH_BOOT + TG__BOOT_ID_BYTES == RH_CRC, "boot id ends at the CRC");

struct tg_wal {
  /* Read-mostly by appenders; set at open. */
  slot *ring;                /* ring_slots slots in the ring file's shared
                                mapping, prefaulted */
  unsigned char *spill;      /* spill region (payloads over SLOT_INLINE) */
  uint64_t spill_cap;        /* its bytes */
  uint64_t mask;             /* ring_slots - 1 */
  uint64_t cap;              /* ring_slots */
  _Atomic uint64_t q_limit;  /* an appender that finds this many records
                                queued before its own waits for the writer
                                (PACING): ring_slots, or at BALANCED what
                                the writer drains in pace_budget_ns; the
                                writer updates it at most once per
                                PACE_WINDOW_NS of work */
  int level;                 /* enum tg_wal_level */
  int nonblocking;           /* TG_EAGAIN instead of blocking */
  uint64_t linger_wake;      /* a lingering writer is woken once this many
                                records are queued */
  _Atomic int failed;        /* 0, TG_ENOSPC or TG_EIO; set once, under mu */
  int os_errno;              /* errno behind `failed` (written before it) */
  uint64_t gen;              /* this open's number among the process's
                                (ACK ORDER's thread-local fast path) */

  alignas(64) _Atomic uint64_t head;     /* next LSN to hand out */
  alignas(64) _Atomic uint64_t consumed; /* LSNs < consumed have left the ring */
  alignas(64) _Atomic uint64_t ack_covered; /* LSNs < this are published
                                               (ACK ORDER; a lower bound) */
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
  /* SHIPPING: set at open, read-only after. */
  int replicated;                        /* TG_WAL_REPLICATED: run as STRICT,
                                            and callers' durable is
                                            min(durable, acked) */
  tg__wal_ship ship;                     /* the hook ({0}: none) */
  _Atomic uint64_t acked;                /* LSNs <= acked are acknowledged
                                            by the stream; stored under mu */
  alignas(64) pthread_mutex_t spill_mu;  /* orders spill allocation with the
                                            LSN claim of spilled records */
  uint64_t spill_head;                   /* under spill_mu: next spill byte */
  _Atomic uint64_t spill_consumed;       /* spill bytes < this are written
                                            to the log: free to reuse */
  alignas(64) _Atomic uint32_t pace_word; /* futex word paced appenders
                                            wait on (PACING) */
  _Atomic uint32_t pace_waiters;         /* appenders in pace_wait */

  pthread_mutex_t mu;                    /* guards the two condition variables */
  pthread_cond_t durable_cv;             /* broadcast after each fdatasync / failure */
  pthread_cond_t space_cv;               /* broadcast when ring space frees up */
  pthread_t mu_owner;                    /* holder of mu (assert_mu_held) */
  int mu_held;                           /* under mu: 1 while held */
  struct rwaiter *rwaiters;              /* under mu: tg__wal_wait_replicated
                                            callers asleep (wake_replicated) */

  /* Counters: writer-only ones use plain relaxed load+store. */
  _Atomic uint64_t st_records, st_bytes, st_batches, st_fdatasyncs, st_segments;
  _Atomic uint64_t st_blocked, st_blocked_ns, st_rejected;
  _Atomic uint64_t st_paced, st_paced_ns;
  _Atomic uint64_t st_sync_failures; /* failed fdatasyncs (writer and sync
                                        thread: fetch_add), added before
                                        `failed` is set, so whoever sees
                                        the failure sees it */

  /* Writer-private. */
  int fd;                    /* current segment */
  int next_fd;               /* prepared next.tmp, or -1 */
  uint64_t seg_first;        /* first LSN of the current segment */
  uint64_t seg_off;          /* bytes of the current segment in use */
  uint64_t dur_off;          /* bytes of the current segment known
                                fdatasynced (its durable point) */
  uint64_t dur_lsn;          /* the LSNs in [0, dur_off) end with this one */
  int marker_due;            /* dur_off moved since the last marker frame */
  int seg_v1;                /* the current segment is format version 1
                                (recovered, never appended to) */
  uint64_t next;             /* next LSN to drain from the ring */
  uint64_t w_written;        /* private copy of `written` */
  uint64_t spill_written;    /* spill bytes below this belong to records
                                in the file */
  uint64_t hold_lsn;         /* while seal_pending: slots from this LSN on */
  uint64_t hold_spill;       /* ... and spill bytes from here on are kept */
  uint64_t w_durable;        /* STRICT: private copy of `durable` (the
                                writer is then the only one to sync) */
  unsigned char *buf;        /* BUF_BYTES batch buffer */
  size_t buf_len;            /* bytes in buf */
  uint64_t buf_off;          /* flush_buf: where in the segment buf went */
  uint64_t buf_last;         /* LSN of the last frame in buf */
  uint64_t interval_ns;      /* BALANCED sync interval */
  uint64_t pace_budget_ns;   /* BALANCED: the queue age PACING allows
                                (sync_interval / PACE_SHARE); 0: no pacing */
  uint64_t sync_every_ns;    /* BALANCED: the sync thread's cadence,
                                sync_interval less pace_budget_ns */
  uint64_t pace_t;           /* end of the last drain that found work (0:
                                the writer was idle or waited since) */
  uint64_t pace_n, pace_ns;  /* records and time of the busy drains since
                                the last update of q_limit */
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
  unsigned char *ring_map;   /* the ring file's mapping (header, slots, spill) */
  size_t ring_map_bytes;
  int recovering;            /* open: appending from the ring file (no
                                thread runs yet) */

  /* The sync thread (BALANCED, RELAXED; see SYNC THREAD). */
  pthread_mutex_t sync_mu;   /* guards the sync_* fields below */
  pthread_cond_t sync_cv;    /* the sync thread waits for work on it; the
                                writer waits on it for sync_busy to clear */
  int sync_fd;               /* under sync_mu: the segment being written */
  uint64_t sync_written;     /* under sync_mu: LSNs <= this are in the file
                                (in sync_fd or in a durable segment) */
  int sync_busy;             /* under sync_mu: the sync thread is syncing
                                sync_fd (outside the lock); the writer neither
                                closes that fd nor syncs until it clears */
  int sync_idle;             /* under sync_mu: waiting with no deadline */
  int sync_waiting;          /* under sync_mu: waiting for its next fdatasync's
                                time (BALANCED) */
  int hint_src;              /* under sync_mu: the writer's segment descriptor
                                while it is sure to be open, else -1 (set by
                                sync_note_written, cleared at a switch) */
  int hint_stale;            /* under sync_mu: hint_src changed since the dup */
  uint64_t hint_off;         /* under sync_mu: bytes of hint_fd whose writeback
                                the sync thread started (WRITEBACK HINT) */
  int hint_fd;               /* sync-thread-private: its own dup of hint_src */
  int sync_stop;             /* under sync_mu: tg_wal_close ends the thread */
  uint64_t sync_last_start;  /* sync-thread-private: when its last
                                fdatasync began (the BALANCED cadence) */
  pthread_t sync_thread;
  int sync_started;          /* set by the opening thread */
  uint64_t sync_off;         /* under sync_mu: bytes of sync_fd written
                                (with sync_written) */
  int sync_done_fd;          /* under sync_mu: the fd the sync thread last
                                fdatasynced (-1: none since the switch) ... */
  uint64_t sync_done_off;    /* ... the bytes of it that made durable ... */
  uint64_t sync_done_lsn;    /* ... and the LSNs (<= this) */
  _Atomic int sync_done_new; /* the three above changed since the writer
                                took them (take_sync_done) */
  /* A segment switch the sync thread seals (SWITCH SEALING above). */
  int seal_fd;               /* under sync_mu: the old segment, -1: none */
  uint64_t seal_off;         /* under sync_mu: where its SWITCH marker goes */
  uint64_t seal_first;       /* under sync_mu: the new segment's first LSN */
  int seal_new_fd;           /* under sync_mu: the new segment, still named
                                next.tmp until the seal renames it */
  _Atomic int seal_pending;  /* set by the writer, cleared once sealed: until
                                then next.tmp is the new segment's name and
                                must not be prepared again */
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

/* A counter that the writer and the sync thread both change. */
static void stat_add_shared(_Atomic uint64_t *c, uint64_t n) {
  atomic_fetch_add_explicit(c, n, RLX);
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t val, const struct timespec *rel) {
  syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, rel, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr) {
  syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *addr) {
  syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* The writer stored `written` (or failed the WAL): wake the appenders
   waiting in pace_wait, if any. */
static void pace_notify(tg_wal *w) {
  /* seq_cst: the second half of PACE/WRITTEN (`written` was stored just
     before, seq_cst; wal_fail stores `failed` under mu, and the waiters
     re-check it after every wake). */
  if (atomic_load_explicit(&w->pace_waiters, SEQ)) {
    /* Release: a waiter that reads the new word also sees `written`. */
    atomic_fetch_add_explicit(&w->pace_word, 1, REL);
    futex_wake_all(&w->pace_word);
  }
}

/* The on_io hook, on the writer or the sync thread only: the records a
   recovering open appends from the ring file are not traced as the opening
   thread's. */
static void io_hook(tg_wal *w, int what, int phase, uint64_t n) {
  if (w->opts.on_io && !w->recovering) w->opts.on_io(w->opts.hook_arg, what, phase, n);
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

static void wake_replicated(tg_wal *w);

/* Poison the WAL (LMDB MDB_FATAL_ERROR, Redis after a failed AOF fsync):
   nothing is retried, every waiter and later caller gets the error. Runs on
   the writer or the sync thread: the first failure wins, under mu. */
static void wal_fail(tg_wal *w, int rc) {
  int code = (rc == -ENOSPC || rc == -EDQUOT || rc == TG_ENOSPC) ? TG_ENOSPC : TG_EIO;
  if (rc == TG_EFENCED) code = TG_EFENCED; /* the shipper's (SHIPPING) */
  mu_lock(w);
  /* Relaxed: `failed` is stored under mu. */
  if (!atomic_load_explicit(&w->failed, RLX)) {
    w->os_errno = rc > -4096 ? -rc : 0; /* a TG_E* code is no errno */
    /* Release: publishes os_errno to tg_wal_failed's acquire load. */
    atomic_store_explicit(&w->failed, code, REL);
  }
  pthread_cond_broadcast(&w->durable_cv);
  pthread_cond_broadcast(&w->space_cv);
  wake_replicated(w);
  mu_unlock(w);
  pace_notify(w);
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
  /* Through the seam, like every name change of the log, so a power-loss
     simulation sees the create; O_NOFOLLOW: a link planted at the name is
     refused, never written through. */
  int fd = tg__openat(AT_FDCWD, path, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW, 0600);
  if (fd < 0) return fd;
  rc = tg__fallocate(fd, 0, (off_t)w->cfg.segment_bytes);
  if (rc == -EOPNOTSUPP) rc = 0; /* no preallocation on this file system */
  if (rc) {
    close(fd);
    tg__unlinkat(AT_FDCWD, path, 0);
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
  if (!rc && (rc = tg__fdatasync(w->next_fd))) stat_add_shared(&w->st_sync_failures, 1);
  if (!rc) rc = tg__renameat(AT_FDCWD, from, AT_FDCWD, to);
  if (!rc) rc = tg__fsync_dir(w->dir);
  if (!rc) rc = seg_list_add(w, first);
  /* Only now, with the new name durable, does the old segment say where the
     log goes on, and that is durable before any record goes to the new one:
     so a SWITCH marker proves its successor existed (a missing one was
     deleted), and a segment without one has an empty successor at most. */
  if (!rc && w->fd >= 0 && !w->seg_v1) {
    unsigned char m[TG__WAL_MARKER_LEN];
    tg__wal_marker_encode(m, TG__WAL_MARK_SWITCH, w->seg_off, first);
    rc = tg__pwrite_all(w->fd, m, sizeof m, (off_t)w->seg_off);
    if (!rc && (rc = tg__fdatasync(w->fd))) stat_add_shared(&w->st_sync_failures, 1);
  }
  if (rc) return rc;
  if (w->fd >= 0) close(w->fd);
  w->fd = w->next_fd;
  w->next_fd = -1;
  w->seg_first = first;
  w->seg_off = TG__WAL_HDR;
  w->dur_off = TG__WAL_HDR; /* the header was fdatasynced above */
  w->dur_lsn = first - 1;
  w->marker_due = 0;
  w->seg_v1 = 0;
  return 0;
}

/* ---- the writer thread ----------------------------------------------------- */

/* What a caller waiting for durability counts as durable: fdatasynced, and
   at TG_WAL_REPLICATED also acknowledged by the stream (SHIPPING). The
   writer and the sync thread keep using `durable` alone: it says what they
   still have to fdatasync. Acquire: pairs with the release stores of
   publish_durable and tg__wal_ship_acked. */
static inline uint64_t caller_durable(tg_wal *w) {
  uint64_t d = atomic_load_explicit(&w->durable, ACQ);
  if (!w->replicated) return d;
  uint64_t a = atomic_load_explicit(&w->acked, ACQ);
  return a < d ? a : d;
}

/* Make LSNs <= lsn durable: the waiters see it once durable_cv is broadcast. */
static void publish_durable(tg_wal *w, uint64_t lsn) {
  mu_lock(w);
  /* Release: pairs with the fast-path acquire loads of `durable` that skip
     the mutex (the on_sync hook's effects become visible with it).
     Relaxed load: `durable` is stored under mu. */
  if (lsn > atomic_load_explicit(&w->durable, RLX))
    atomic_store_explicit(&w->durable, lsn, REL);
  pthread_cond_broadcast(&w->durable_cv);
  if (w->rwaiters) wake_replicated(w);
  mu_unlock(w);
}

/* fdatasync fd, which holds every written LSN up to `upto` not yet durable,
   and publish them durable. The writer (STRICT, a segment switch, close) or
   the sync thread, never both at once (sync_busy). Returns 0 or the error
   that failed the WAL. */
static void note_sync_done(tg_wal *w, int fd, uint64_t off, uint64_t upto);

/* from_thread: the sync thread calls, off is the bytes of fd it covers:
   they are handed to the writer for its DURABLE marker before the waiters
   are released, so a batch appended after a waiter returns carries it. */
static int sync_upto(tg_wal *w, int fd, uint64_t upto, int from_thread, uint64_t off) {
  io_hook(w, TG__WAL_IO_SYNC, 0, upto);
  uint64_t t0 = tg__now_ns();
  int rc = tg__fdatasync(fd);
  uint64_t t1 = tg__now_ns();
  io_hook(w, TG__WAL_IO_SYNC, 1, upto);
  stat_add_shared(&w->st_fdatasyncs, 1);
  if (rc) {
    stat_add_shared(&w->st_sync_failures, 1);
    wal_fail(w, rc);
    return rc;
  }
  if (from_thread) note_sync_done(w, fd, off, upto);
  /* The hook runs before the waiters are released, so whoever sees the
     record durable also sees the hook's effect for that fdatasync. */
  if (w->opts.on_sync) w->opts.on_sync(w->opts.hook_arg, t1 - t0, upto);
  publish_durable(w, upto);
  return 0;
}

/* The writer makes what it wrote durable itself: every batch at STRICT,
   and at every level before a segment switch and at close. With a sync
   thread, it first waits for the thread's fdatasync in flight and keeps it
   out (sync_mu held) until unlock_sync_thread. */
static int seal_switch(tg_wal *w, int old_fd, uint64_t old_off, uint64_t first, int new_fd,
                       int from_thread);

static void lock_sync_thread(tg_wal *w) {
  assert_writer(w);
  if (!w->sync_started) return;
  pthread_mutex_lock(&w->sync_mu);
  while (w->sync_busy) pthread_cond_wait(&w->sync_cv, &w->sync_mu);
  /* A switch the thread has not sealed yet: seal it here, so that what the
     writer does next (another switch, its own fdatasync, the close marker)
     comes after the SWITCH marker is durable. */
  if (w->seal_fd >= 0) {
    int fd = w->seal_fd;
    w->seal_fd = -1;
    int rc = seal_switch(w, fd, w->seal_off, w->seal_first, w->seal_new_fd, 0);
    /* Release: the rename of next.tmp is done (prepare_ahead's acquire). */
    atomic_store_explicit(&w->seal_pending, 0, REL);
    if (rc) wal_fail(w, rc);
  }
}

static void unlock_sync_thread(tg_wal *w) {
  if (!w->sync_started) return;
  /* Whatever the writer changed, the thread sees it under the lock. */
  w->sync_fd = w->fd;
  w->sync_written = w->w_written;
  w->sync_off = w->seg_off;
  pthread_cond_broadcast(&w->sync_cv);
  pthread_mutex_unlock(&w->sync_mu);
}

static void do_sync(tg_wal *w) {
  assert_writer(w);
  uint64_t upto = w->w_written;
  if (sync_upto(w, w->fd, upto, 0, 0) == 0) {
    w->w_durable = upto;
    w->dur_off = w->seg_off; /* flushed before every sync */
    w->dur_lsn = upto;
    w->marker_due = 1;
  }
}

/* The sync thread's fdatasync of fd made its first off bytes (LSNs <= upto)
   durable: the writer puts that in its next batch's DURABLE marker. */
static void note_sync_done(tg_wal *w, int fd, uint64_t off, uint64_t upto) {
  pthread_mutex_lock(&w->sync_mu);
  w->sync_done_fd = fd;
  w->sync_done_off = off;
  w->sync_done_lsn = upto;
  /* Release: with the fields above (the writer re-reads them under sync_mu;
     this only tells it to look). */
  atomic_store_explicit(&w->sync_done_new, 1, REL);
  pthread_mutex_unlock(&w->sync_mu);
}

/* Take the durable point of the sync thread's last fdatasync, with sync_mu
   held: a DURABLE marker is then due. Only for the segment being written:
   a switch makes the old segment durable itself and forgets the thread's
   result (sync_done_fd = -1), so a reused descriptor number cannot pass
   for the new segment. */
static void take_sync_done(tg_wal *w) {
  assert_writer(w);
  if (!w->sync_started) return;
  /* Relaxed: sync_mu orders the fields; the flag is only a hint. */
  atomic_store_explicit(&w->sync_done_new, 0, RLX);
  if (w->sync_done_fd == w->fd && w->sync_done_off > w->dur_off) {
    w->dur_off = w->sync_done_off;
    w->dur_lsn = w->sync_done_lsn;
    w->marker_due = 1;
  }
}

/* Writeback is started every this many bytes written (WRITEBACK HINT). */
#define HINT_BYTES (256u * 1024u)

/* After each write: tell the sync thread how far the file goes (and wake it
   when it waits with no deadline, or a caller waits for a sync, or it waits
   for its next fdatasync's time with a hint's worth written). */
static void sync_note_written(tg_wal *w) {
  assert_writer(w);
  if (!w->sync_started) return;
  pthread_mutex_lock(&w->sync_mu);
  if (w->hint_src != w->fd) {
    w->hint_src = w->fd;
    w->hint_stale = 1;
  }
  w->sync_fd = w->fd;
  w->sync_written = w->w_written;
  w->sync_off = w->seg_off;
  /* Acquire: a waiter's request (see sync_kick). */
  if (w->sync_idle || atomic_load_explicit(&w->sync_req, ACQ) > atomic_load_explicit(&w->durable, ACQ) ||
      (w->sync_waiting && (w->hint_stale || w->sync_off >= w->hint_off + HINT_BYTES)))
    pthread_cond_signal(&w->sync_cv);
  pthread_mutex_unlock(&w->sync_mu);
}

/*
 * Seal a segment switch (SWITCH SEALING above): make the old segment
 * durable (every record before `first`: published durable), then the new
 * segment's header - and whatever records were already written after it -
 * and its name (next.tmp renamed to the segment name, directory fsynced),
 * then the old segment's SWITCH marker at old_off; close the old segment.
 * Run by the sync thread (from_thread: sync_busy set, sync_mu not held) or
 * by the writer (sync_mu held, or no sync thread). Returns 0 or the error;
 * the caller fails the WAL.
 */
static int seal_switch(tg_wal *w, int old_fd, uint64_t old_off, uint64_t first, int new_fd,
                       int from_thread) {
  char from[4096], to[4096], name[TG__WAL_NAME_LEN + 1];
  uint64_t new_upto = 0, new_off = 0;
  tg__wal_seg_name(name, first);
  int rc = path_in(from, sizeof from, w->dir, TMP_NAME);
  if (!rc) rc = path_in(to, sizeof to, w->dir, name);
  /* The old segment is complete on disk before the new name exists: the
     SWITCH marker written after vouches for every byte before it. */
  if (!rc) rc = sync_upto(w, old_fd, first - 1, 0, 0);
  if (from_thread && !rc) {
    /* What the writer has put in the new segment so far: the fdatasync
       below covers it. */
    pthread_mutex_lock(&w->sync_mu);
    if (w->sync_fd == new_fd) {
      new_upto = w->sync_written;
      new_off = w->sync_off;
    }
    pthread_mutex_unlock(&w->sync_mu);
  }
  /* Like the header's and SWITCH marker's fdatasyncs before, these two are
     not in st_fdatasyncs: that counts the fdatasyncs that publish records
     durable, one on_sync call each. */
  if (!rc && (rc = tg__fdatasync(new_fd))) stat_add_shared(&w->st_sync_failures, 1);
  if (!rc) rc = tg__renameat(AT_FDCWD, from, AT_FDCWD, to);
  if (!rc) rc = tg__fsync_dir(w->dir);
  if (!rc) rc = seg_list_add(w, first);
  /* Only now, with the new name durable, does the old segment say where the
     log goes on: a SWITCH marker proves its successor existed (a missing
     one was deleted). Until this marker is durable the new segment holds
     no marker, so a power loss before it leaves a new segment that recovery
     sets aside whole (nothing in it was published durable). */
  if (!rc) {
    unsigned char m[TG__WAL_MARKER_LEN];
    tg__wal_marker_encode(m, TG__WAL_MARK_SWITCH, old_off, first);
    rc = tg__pwrite_all(old_fd, m, sizeof m, (off_t)old_off);
    if (!rc && (rc = tg__fdatasync(old_fd))) stat_add_shared(&w->st_sync_failures, 1);
  }
  close(old_fd);
  if (rc) return rc;
  if (new_upto >= first) {
    /* The records the new segment's fdatasync covered are durable now that
       the switch is: the writer's next batch records it in a DURABLE
       marker, after the SWITCH marker is on disk. */
    note_sync_done(w, new_fd, new_off, new_upto);
    publish_durable(w, new_upto);
  }
  return 0;
}

/* SHIPPING: hand the records of a batch just written (frames at buf, n
   bytes; a DURABLE marker may lead) to the shipper, markers left out. A
   refusal fails the log as an I/O error would: the shipper says why. */
static void ship_written(tg_wal *w, const unsigned char *buf, size_t n) {
  size_t o = 0;
  while (o + TG__WAL_FRAME_HDR <= n && (tg__ld64(buf + o + 8) & TG_WAL_MAX_LSN) == 0)
    o += tg__align8(tg__ld32(buf + o)); /* a marker: no LSN, not shipped */
  if (o >= n) return;
  uint64_t first = tg__ld64(buf + o + 8) & TG_WAL_MAX_LSN;
  int rc = w->ship.ship(w->ship.ctx, buf + o, n - o, first, w->buf_last);
  if (rc) wal_fail(w, rc);
}

static void flush_buf(tg_wal *w) {
  assert_writer(w);
  /* Never write after a failure. */
  if (!w->buf_len || atomic_load_explicit(&w->failed, RLX)) return;
  w->buf_off = w->seg_off;
  io_hook(w, TG__WAL_IO_WRITE, 0, w->buf_len);
  int rc = tg__pwrite_all(w->fd, w->buf, w->buf_len, (off_t)w->seg_off);
  io_hook(w, TG__WAL_IO_WRITE, 1, w->buf_len);
  stat_add(&w->st_batches, 1);
  if (rc) {
    wal_fail(w, rc);
    return;
  }
  /* No writeback hint here: the sync thread starts it (WRITEBACK HINT). */
  w->seg_off += w->buf_len;
  stat_add(&w->st_bytes, w->buf_len);
  w->buf_len = 0;
  w->w_written = w->buf_last;
  /* seq_cst: PACE/WRITTEN (also the release for the readers of `written`). */
  atomic_store_explicit(&w->written, w->buf_last, SEQ);
  pace_notify(w);
  sync_note_written(w);
  if (w->ship.ship) ship_written(w, w->buf, (size_t)(w->seg_off - w->buf_off));
}

/* Move to a new segment whose first record is LSN `first`: write its
   header into next.tmp and go on writing records after it. With a sync
   thread, the switch's fdatasyncs, rename and directory fsync are the
   thread's (seal_switch, SWITCH SEALING above); without one (STRICT, the
   open's recovery) the writer seals the switch before any record goes to
   the new segment. The sync thread is kept out meanwhile: it never syncs
   (or holds) a descriptor the writer hands over. */
static void switch_segment(tg_wal *w, uint64_t first) {
  assert_writer(w);
  assert(!w->seg_v1); /* a version-1 segment is never appended to */
  flush_buf(w);
  if (atomic_load_explicit(&w->failed, RLX)) return;
  lock_sync_thread(w); /* also seals the previous switch if still pending */
  take_sync_done(w);
  int rc = atomic_load_explicit(&w->failed, RLX);
  if (!rc) {
    unsigned char hdr[TG__WAL_HDR];
    tg__wal_header_encode(hdr, first, w->cfg.segment_bytes);
    rc = w->next_fd >= 0 ? 0 : prepare_next(w);
    if (!rc) rc = tg__pwrite_all(w->next_fd, hdr, sizeof hdr, 0);
    if (!rc && !w->sync_started) {
      rc = seal_switch(w, w->fd, w->seg_off, first, w->next_fd, 0);
      w->fd = -1; /* closed by the seal */
    } else if (!rc) {
      w->seal_fd = w->fd; /* sync_mu held */
      w->seal_off = w->seg_off;
      w->seal_first = first;
      w->seal_new_fd = w->next_fd;
      /* Relaxed: set and read by the writer; only the clear is a release. */
      atomic_store_explicit(&w->seal_pending, 1, RLX);
      w->fd = -1; /* the seal's now */
    }
    if (rc) {
      wal_fail(w, rc);
    } else {
      w->fd = w->next_fd;
      w->next_fd = -1;
      w->seg_first = first;
      w->seg_off = TG__WAL_HDR;
      w->dur_off = TG__WAL_HDR; /* fdatasynced by the seal before any marker */
      w->dur_lsn = first - 1;
      w->marker_due = 0;
    }
    if (w->sync_started) {
      w->sync_done_fd = -1; /* sync_mu held */
      w->hint_src = -1;     /* the old segment's is the seal's now */
      w->hint_stale = 1;
    }
  }
  unlock_sync_thread(w);
  if (rc) return;
  stat_add(&w->st_segments, 1);
  if (w->opts.on_segment) w->opts.on_segment(w->opts.hook_arg, first);
}

/* Where a published slot's payload is: inline, or in the spill region. */
static const unsigned char *slot_payload(const tg_wal *w, const slot *s, uint32_t len) {
  if (len - TG__WAL_FRAME_HDR <= SLOT_INLINE) return s->frame + TG__WAL_FRAME_HDR;
  return w->spill + s->spill_pos % w->spill_cap;
}

/* A frame too large for the batch buffer: write it in place, in pieces. */
static void write_big(tg_wal *w, slot *s, uint32_t len) {
  assert_writer(w);
  assert(!w->ship.ship); /* max_payload keeps shipped frames in buf */
  unsigned char hdr[TG__WAL_FRAME_HDR];
  static const unsigned char zeros[8];
  const unsigned char *payload = slot_payload(w, s, len);
  memcpy(hdr, s->frame, sizeof hdr);
  uint32_t crc = tg__crc32(tg__crc32(0, hdr, 4), hdr + 8, 8);
  crc = tg__crc32(crc, payload, len - TG__WAL_FRAME_HDR);
  tg__st32(hdr + 4, crc);
  size_t pad = tg__align8(len) - len;
  off_t o = (off_t)w->seg_off;
  int rc = tg__pwrite_all(w->fd, hdr, sizeof hdr, o);
  if (!rc) rc = tg__pwrite_all(w->fd, payload, len - TG__WAL_FRAME_HDR, o + 16);
  if (!rc && pad) rc = tg__pwrite_all(w->fd, zeros, pad, o + len);
  stat_add(&w->st_batches, 1);
  if (rc) {
    wal_fail(w, rc);
    return;
  }
  w->seg_off += tg__align8(len);
  stat_add(&w->st_bytes, tg__align8(len));
  w->w_written = tg__ld64(hdr + 8) & TG_WAL_MAX_LSN;
  /* seq_cst: PACE/WRITTEN (also the release for the readers of `written`). */
  atomic_store_explicit(&w->written, w->w_written, SEQ);
  pace_notify(w);
  sync_note_written(w);
}

/* Start a batch with a DURABLE marker when an fdatasync moved the durable
   point since the last one: the log then records how far it was made
   durable, which recovery needs to tell a torn unsynced tail (cut) from
   damage to durable data (refused). One 32-byte frame per fdatasync. */
static void put_marker(tg_wal *w) {
  assert_writer(w);
  /* Acquire: pairs with the sync thread's release (a hint; the fields are
     read under sync_mu). */
  if (w->sync_started && atomic_load_explicit(&w->sync_done_new, ACQ)) {
    pthread_mutex_lock(&w->sync_mu);
    take_sync_done(w);
    pthread_mutex_unlock(&w->sync_mu);
  }
  if (!w->marker_due || w->seg_v1 || BUF_BYTES - w->buf_len < TG__WAL_MARKER_LEN) return;
  tg__wal_marker_encode(w->buf + w->buf_len, TG__WAL_MARK_DURABLE, w->dur_off, w->dur_lsn);
  w->buf_len += TG__WAL_MARKER_LEN;
  w->marker_due = 0;
}

/* Give back the ring slots (and spill bytes) of the records in the file -
   except those in a segment whose switch is not sealed yet: until its
   SWITCH marker is durable a crash makes recovery set that segment aside
   (or remove next.tmp), and the ring is then what brings its records back
   (SWITCH SEALING). */
static void release_slots(tg_wal *w) {
  assert_writer(w);
  if (atomic_load_explicit(&w->failed, RLX)) return;
  uint64_t upto = w->next, spill = w->spill_written;
  /* Acquire: the seal is complete (its release store) before the slots of
     the new segment's records are given back. */
  if (atomic_load_explicit(&w->seal_pending, ACQ) && w->hold_lsn < upto) {
    upto = w->hold_lsn;
    spill = w->hold_spill;
  }
  /* Relaxed: only the writer stores them. */
  if (upto <= atomic_load_explicit(&w->consumed, RLX) &&
      spill <= atomic_load_explicit(&w->spill_consumed, RLX))
    return;
  /* The records are in the file: give their slots back. seq_cst:
     CONSUMED/SPACE (store consumed and spill_consumed, then load
     space_waiters); it also releases the slots to appenders' acquire
     loads. */
  if (spill > atomic_load_explicit(&w->spill_consumed, RLX))
    atomic_store_explicit(&w->spill_consumed, spill, SEQ);
  if (upto > atomic_load_explicit(&w->consumed, RLX))
    atomic_store_explicit(&w->consumed, upto, SEQ);
  if (atomic_load_explicit(&w->space_waiters, SEQ)) { /* CONSUMED/SPACE */
    mu_lock(w);
    pthread_cond_broadcast(&w->space_cv);
    mu_unlock(w);
  }
}

/* Copy published slots into the batch buffer (at most one buffer's worth),
   write it out, then give the slots (and their spill bytes) back. A slot is
   reused only once its record is in the file: until then the ring file is
   what a crash recovers it from. Returns the number of records taken. */
static uint64_t drain(tg_wal *w) {
  assert_writer(w);
  /* Relaxed: only a bound; each slot's own acquire load below is what makes
     its contents visible. */
  uint64_t head = atomic_load_explicit(&w->head, RLX);
  uint64_t n = 0, spill_end = 0;
  while (w->next < head) {
    slot *s = &w->ring[w->next & w->mask];
    if (atomic_load_explicit(&s->published, ACQ) != w->next) break;
    uint32_t len = tg__ld32(s->frame);
    size_t flen = tg__align8(len);
    /* Room is kept for the DURABLE marker this frame may bring and for the
       SWITCH marker, so that a segment before the last never grows past
       its preallocated size (the marker close writes may, by 32 bytes). */
    uint64_t used = w->seg_off + w->buf_len +
                    (w->buf_len == 0 && w->marker_due ? TG__WAL_MARKER_LEN : 0);
    if (used + flen + TG__WAL_MARKER_LEN > w->cfg.segment_bytes && used > TG__WAL_HDR) {
      if (spill_end) w->spill_written = spill_end;
      switch_segment(w, w->next);
      /* The slots from here on stay taken until the switch is sealed. */
      w->hold_lsn = w->next;
      w->hold_spill = w->spill_written;
      if (atomic_load_explicit(&w->failed, RLX)) break;
    }
    if (w->buf_len == 0) put_marker(w);
    if (flen > BUF_BYTES - w->buf_len) {
      if (w->buf_len) break; /* write this batch first; the frame goes next round */
      write_big(w, s, len);
      if (atomic_load_explicit(&w->failed, RLX)) break;
    } else {
      unsigned char *d = w->buf + w->buf_len;
      memcpy(d, s->frame, TG__WAL_FRAME_HDR);
      memcpy(d + TG__WAL_FRAME_HDR, slot_payload(w, s, len), len - TG__WAL_FRAME_HDR);
      memset(d + len, 0, flen - len);
      /* A CRC given with the slot came with the header copied above. A
         recovery computes it: it trusts no more of a dead process's slot
         than its length, LSN and payload. */
      if (s->spill_pos != SLOT_CRC_GIVEN || w->recovering)
        tg__st32(d + 4, tg__wal_frame_crc(d, len));
      w->buf_len += flen;
      w->buf_last = w->next;
    }
    if (len - TG__WAL_FRAME_HDR > SLOT_INLINE)
      spill_end = s->spill_pos + tg__align8(len - TG__WAL_FRAME_HDR);
    w->next++;
    n++;
  }
  flush_buf(w);
  if (n && !atomic_load_explicit(&w->failed, RLX)) stat_add(&w->st_records, n);
  if (spill_end) w->spill_written = spill_end;
  release_slots(w);
  return n;
}

/* PACING: the queue age BALANCED allows is sync_interval / PACE_SHARE; the
   drain rate is measured over at least PACE_WINDOW_NS of busy drains; the
   limit starts at PACE_START records (until the first measurement) and
   never goes below PACE_MIN (an appender then waits once per PACE_MIN
   records at worst, not per record). */
#define PACE_SHARE 4u
#define PACE_WINDOW_NS 1000000u
#define PACE_START 2048u
#define PACE_MIN 32u

/* After a drain that began at t0 and took n records: account it to the
   drain rate while the writer works back to back (pace_t), and once a
   window is full set q_limit to what that rate drains in pace_budget_ns.
   A drain that found nothing ends the streak: the time the writer then
   spends waiting (for appenders mid-copy, lingering) is not its own. */
static void pace_measure(tg_wal *w, uint64_t t0, uint64_t n) {
  assert_writer(w);
  if (!n) {
    w->pace_t = 0;
    return;
  }
  uint64_t t1 = tg__now_ns();
  w->pace_t = t1;
  w->pace_n += n;
  w->pace_ns += t1 - t0;
  if (w->pace_ns < PACE_WINDOW_NS) return;
  double lim = (double)w->pace_n * (double)w->pace_budget_ns / (double)w->pace_ns;
  uint64_t l = lim >= (double)w->cap ? w->cap : lim <= PACE_MIN ? PACE_MIN : (uint64_t)lim;
  if (l > w->cap) l = w->cap;
  /* Relaxed: a limit, read relaxed by appenders; written at most once per
     window and only when it moves by an eighth (or reaches a clamp), so
     the line stays read-mostly. */
  uint64_t cur = atomic_load_explicit(&w->q_limit, RLX);
  if (l != cur && (l == PACE_MIN || l == w->cap || l > cur + cur / 8 || l < cur - cur / 8))
    atomic_store_explicit(&w->q_limit, l, RLX);
  w->pace_n = w->pace_ns = 0;
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
  /* Acquire: the seal's rename of next.tmp is done before it is reused. */
  if (atomic_load_explicit(&w->seal_pending, ACQ)) return 0;
  int rc = prepare_next(w);
  if (rc) wal_fail(w, rc);
  return rc;
}

/* Whether the writer should fdatasync now what it wrote: every batch at
   STRICT; at the other levels the sync thread does it, and the writer only
   once everything is drained at close. */
static int sync_due(tg_wal *w) {
  assert_writer(w);
  /* Acquire: the sync thread's publication. */
  if (w->w_written <= atomic_load_explicit(&w->durable, ACQ)) return 0;
  if (w->level == TG_WAL_STRICT) return 1;
  return atomic_load_explicit(&w->closing, ACQ) &&
         w->next == atomic_load_explicit(&w->head, ACQ);
}

/* Work that must not wait for a sleeping writer. seq_cst loads: the second
   half of SLEEP/HEAD, SLEEP/SYNC, SLEEP/CLOSE and SLEEP/SPACE (idle_wait
   stored `sleeping` just before). A sync request is the writer's work only
   at STRICT; elsewhere the sync thread takes it. */
static int work_pending(const tg_wal *w) {
  tg_wal *m = (tg_wal *)w;
  return atomic_load_explicit(&m->head, SEQ) != w->next ||
         (w->level == TG_WAL_STRICT &&
          atomic_load_explicit(&m->sync_req, SEQ) > w->w_durable) ||
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
          (w->level == TG_WAL_STRICT &&
           atomic_load_explicit(&w->sync_req, RLX) > w->w_durable))
        return 1;
    }
  }
  return 0;
}

/* Sleep on the futex in state `how` (WRITER_SLEEPING: until woken;
   WRITER_LINGERING: at most linger_ns). Returns at once when
   work_pending() shows work that arrived before `sleeping` was set. */
static void idle_wait(tg_wal *w, enum writer_state how) {
  assert_writer(w);
  /* Relaxed: ordered before the store of `sleeping` below, which is what an
     appender's exchange reads (see wake_writer). */
  uint32_t ww = atomic_load_explicit(&w->wake_word, RLX);
  /* seq_cst: the first half of SLEEP/HEAD, SLEEP/SYNC, SLEEP/CLOSE and
     SLEEP/SPACE. */
  atomic_store_explicit(&w->sleeping, how, SEQ);
  if (!work_pending(w)) {
    uint64_t rel = how == WRITER_LINGERING ? w->linger_ns : NEVER;
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

/* At close, with everything synced: a last DURABLE marker, fdatasynced, puts
   the durable point at the end of the log, so that damage anywhere in a
   cleanly closed log is refused rather than cut. */
static void close_marker(tg_wal *w) {
  assert_writer(w);
  if (!w->marker_due || w->seg_v1 || w->buf_len || w->dur_off != w->seg_off ||
      atomic_load_explicit(&w->failed, RLX))
    return;
  put_marker(w);
  int rc = tg__pwrite_all(w->fd, w->buf, w->buf_len, (off_t)w->seg_off);
  if (!rc && (rc = tg__fdatasync(w->fd))) stat_add_shared(&w->st_sync_failures, 1);
  if (rc) {
    wal_fail(w, rc);
    return;
  }
  w->seg_off += w->buf_len;
  w->dur_off = w->seg_off;
  w->buf_len = 0;
}

/*
 * WRITEBACK HINT. Between its fdatasyncs the sync thread starts the
 * writeback of what the writer has written (sync_file_range, through the
 * seam), every HINT_BYTES, so that the disk works while the writer fills
 * the next batches instead of all at the next fdatasync (tg-bench wal
 * --level relaxed: 9.0 -> 12.4 M records/s when this was added). An error
 * is ignored: the fdatasync that follows reports real ones. Not while a
 * caller waits for a sync (tg_wal_sync, tg_wait_replicated): the
 * fdatasync starts at once, and a hint per batch then took more CPU than
 * the fdatasyncs themselves (perf, tg-bench replicate, 8 threads waiting
 * on groups). The writer used to start it itself after each batch (the
 * opening thread's recovery from the ring, before any thread runs, starts
 * none: the fdatasync at its end writes it); but the call can
 * sleep for as long as the device is busy: in the block layer's
 * writeback throttling (wbt_wait) and on the segment's inode behind the
 * fdatasync, 50-80 ms each while a checkpoint's pages went to the same
 * disk (perf sched, tg-bench concurrent), and the writer's appenders
 * waited for it meanwhile. On this thread such a sleep only delays the
 * next fdatasync's start. It uses a descriptor of its own (a dup of the
 * segment's), so that the writer may close the segment's at a switch
 * while a hint runs. Called with sync_mu held; returns 1 when it
 * released it (the caller looks at everything again), 0 when there was
 * nothing to start.
 */
static int sync_hint(tg_wal *w) {
  if (w->hint_stale) {
    if (w->hint_src < 0) return 0; /* a switch: wait for the new segment's */
    if (w->hint_fd >= 0) close(w->hint_fd);
    w->hint_fd = fcntl(w->hint_src, F_DUPFD_CLOEXEC, 0);
    w->hint_off = TG__WAL_HDR;
    w->hint_stale = 0;
  }
  /* sync_off is hint_src's: both are set together by sync_note_written. */
  if (w->hint_fd < 0 || w->sync_off < w->hint_off + HINT_BYTES) return 0;
  uint64_t from = w->hint_off, to = w->sync_off;
  w->hint_off = to;
  int fd = w->hint_fd;
  pthread_mutex_unlock(&w->sync_mu);
  (void)tg__start_writeback(fd, (off_t)from, (off_t)(to - from));
  pthread_mutex_lock(&w->sync_mu);
  return 1;
}

/* The sync thread (SYNC THREAD above): fdatasyncs what the writer wrote,
   at BALANCED every sync_interval_ms counted from the start of the previous
   fdatasync, and whenever a caller waits for durability, while the writer
   goes on writing. */
static void *sync_main(void *arg) {
  tg_wal *w = arg;
  pthread_mutex_lock(&w->sync_mu);
  for (;;) {
    /* Acquire: `durable` as last published, a waiter's request. */
    uint64_t durable = atomic_load_explicit(&w->durable, ACQ);
    if (atomic_load_explicit(&w->failed, ACQ)) break;
    if (w->seal_fd >= 0) { /* a switch to seal comes before anything else */
      int fd = w->seal_fd, nfd = w->seal_new_fd;
      uint64_t off = w->seal_off, first = w->seal_first;
      w->seal_fd = -1;
      w->sync_busy = 1;
      w->sync_last_start = tg__now_ns();
      pthread_mutex_unlock(&w->sync_mu);
      int rc = seal_switch(w, fd, off, first, nfd, 1);
      if (rc) wal_fail(w, rc);
      pthread_mutex_lock(&w->sync_mu);
      /* Release: the rename of next.tmp is done (prepare_ahead's acquire),
         and the held ring slots may go (release_slots' acquire). */
      atomic_store_explicit(&w->seal_pending, 0, REL);
      w->sync_busy = 0;
      pthread_cond_broadcast(&w->sync_cv); /* a writer waiting to switch */
      if (rc) break;
      /* A writer asleep with held slots (appenders maybe waiting for
         space) gives them back once it runs. */
      pthread_mutex_unlock(&w->sync_mu);
      wake_writer(w);
      pthread_mutex_lock(&w->sync_mu);
      continue;
    }
    if (w->sync_written <= durable) {
      if (w->sync_stop) break;
      w->sync_idle = 1;
      pthread_cond_wait(&w->sync_cv, &w->sync_mu);
      w->sync_idle = 0;
      continue;
    }
    uint64_t due = w->level == TG_WAL_BALANCED ? w->sync_last_start + w->sync_every_ns : NEVER;
    uint64_t now = tg__now_ns();
    if (!w->sync_stop && now < due &&
        atomic_load_explicit(&w->sync_req, ACQ) <= durable) {
      if (sync_hint(w)) continue;
      if (due == NEVER) {
        w->sync_idle = 1;
        pthread_cond_wait(&w->sync_cv, &w->sync_mu);
        w->sync_idle = 0;
      } else {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t at = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec + (due - now);
        ts.tv_sec = (time_t)(at / 1000000000u);
        ts.tv_nsec = (long)(at % 1000000000u);
        w->sync_waiting = 1;
        pthread_cond_timedwait(&w->sync_cv, &w->sync_mu, &ts);
        w->sync_waiting = 0;
      }
      continue;
    }
    int fd = w->sync_fd;
    uint64_t upto = w->sync_written, off = w->sync_off;
    w->sync_busy = 1;
    w->sync_last_start = now;
    pthread_mutex_unlock(&w->sync_mu);
    int rc = sync_upto(w, fd, upto, 1, off);
    pthread_mutex_lock(&w->sync_mu);
    w->sync_busy = 0;
    pthread_cond_broadcast(&w->sync_cv); /* a writer waiting to switch */
    if (rc) break;
  }
  pthread_mutex_unlock(&w->sync_mu);
  return NULL;
}

/* A caller waits for lsn to be durable: have the sync thread see it now. */
static void sync_kick(tg_wal *w) {
  if (!w->sync_started) return;
  pthread_mutex_lock(&w->sync_mu);
  pthread_cond_signal(&w->sync_cv);
  pthread_mutex_unlock(&w->sync_mu);
}

static void *writer_main(void *arg) {
  tg_wal *w = arg;
#ifndef NDEBUG
  tls_writer_of = w;
#endif
  unsigned spins = 0;
  long nap_ns = 1000; /* the next sleep waiting for a slot being filled */
  while (!atomic_load_explicit(&w->failed, RLX)) {
    uint64_t t0 = !w->pace_budget_ns ? 0 : w->pace_t ? w->pace_t : tg__now_ns();
    uint64_t n = drain(w);
    if (w->pace_budget_ns) pace_measure(w, t0, n);
    if (atomic_load_explicit(&w->failed, RLX) || prepare_ahead(w)) break;

    if (sync_due(w)) {
      if (w->level == TG_WAL_STRICT && atomic_load_explicit(&w->strict_inflight, RLX) > 1)
        gather(w);
      if (atomic_load_explicit(&w->failed, RLX)) break;
      lock_sync_thread(w);
      do_sync(w);
      unlock_sync_thread(w);
      continue;
    }
    if (n) {
      spins = 0;
      nap_ns = 1000;
      continue;
    }

    if (atomic_load_explicit(&w->head, ACQ) != w->next) {
      /* Claimed but not yet published: the appender is mid-copy, or was
         preempted, or waits in pace_wait() (it claims before it paces).
         Spin briefly, then sleep 1-100 us, doubling, as ack_order_slow()
         does: a sched_yield() loop here starved this thread itself, since
         each yield pushes a thread's deadline a slice later (EEVDF): with
         other processes runnable, the writer got the CPU back after up to
         120 ms, while a paced appender waited for it (perf sched, during
         tg-bench concurrent's checkpoint phase at load 6). */
      if (++spins < 64) {
        tg__cpu_relax();
      } else {
        struct timespec ts = {0, nap_ns};
        nanosleep(&ts, NULL);
        if (nap_ns < 100000) nap_ns *= 2;
      }
      continue;
    }
    spins = 0;
    nap_ns = 1000;
    /* Drained and nothing due to sync (sync_due syncs at close): done. The
       head read above may predate appends that returned before
       tg_wal_close: the acquire load of `closing` makes them visible, so
       look again before ending (else a clean close could drop them - seen
       as two acknowledged records missing after close, 1 run in 8). */
    if (atomic_load_explicit(&w->closing, ACQ)) {
      if (atomic_load_explicit(&w->head, ACQ) != w->next) continue;
      /* The close marker must vouch for every byte written, and only the
         writer writes it: take the sync thread's last result (which may
         already cover everything: then sync_due above saw nothing to do,
         and the marker was once left out, so that a read-only view missed
         the last batch), seal a pending switch (the close marker goes to
         the new segment only once its switch is sealed), and fdatasync
         whatever is still not covered. */
      if (w->sync_started) {
        /* Relaxed: the writer's own store (a pending seal is cleared under
           sync_mu, which lock_sync_thread takes). */
        int sealing = atomic_load_explicit(&w->seal_pending, RLX);
        lock_sync_thread(w);
        take_sync_done(w);
        if (!atomic_load_explicit(&w->failed, RLX) && (sealing || w->dur_off != w->seg_off))
          do_sync(w);
        unlock_sync_thread(w);
      }
      close_marker(w);
      break;
    }
    if (w->linger_ns) {
      idle_wait(w, WRITER_LINGERING);
      continue;
    }
    if (idle_spin(w)) continue;
    idle_wait(w, WRITER_SLEEPING);
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

/* PACING: whether LSN s has more than q_limit records queued before it
   that are not written yet. */
static int pace_due(tg_wal *w, uint64_t s, memory_order mo) {
  /* Relaxed q_limit: a stale limit paces one append more or less. */
  return s - atomic_load_explicit(&w->written, mo) - 1 >= atomic_load_explicit(&w->q_limit, RLX);
}

/* PACING: the records queued before LSN s (claimed, slot free) would take
   the writer longer than its budget to write: wait on the futex until it
   has written enough of them. Returns 0 (a failure of the WAL ends the
   wait; the append then goes on like any other racing the failure). */
static int pace_wait(tg_wal *w, uint64_t s) {
  /* Acquire: the writer's progress. */
  if (!pace_due(w, s, ACQ)) return 0;
  uint64_t t0 = tg__now_ns();
  atomic_fetch_add_explicit(&w->st_paced, 1, RLX);
  atomic_fetch_add_explicit(&w->pace_waiters, 1, SEQ); /* PACE/WRITTEN */
  /* seq_cst: SLEEP/HEAD (the fetch_add on head in claim()): a lingering
     writer is woken now, not after its linger. */
  if (atomic_load_explicit(&w->sleeping, SEQ)) wake_writer(w);
  for (;;) {
    /* Acquire: pairs with pace_notify's release increment. */
    uint32_t v = atomic_load_explicit(&w->pace_word, ACQ);
    if (!pace_due(w, s, SEQ) || atomic_load_explicit(&w->failed, ACQ)) break; /* PACE/WRITTEN */
    futex_wait(&w->pace_word, v, NULL);
  }
  atomic_fetch_sub_explicit(&w->pace_waiters, 1, RLX);
  atomic_fetch_add_explicit(&w->st_paced_ns, tg__now_ns() - t0, RLX);
  return 0;
}

static inline int claim(tg_wal *w, uint64_t *seq) {
  if (TG_LIKELY(!w->nonblocking)) {
    uint64_t s = atomic_fetch_add_explicit(&w->head, 1, SEQ); /* SLEEP/HEAD */
    /* Acquire: the writer is done reading the slot it gave back. Relaxed
       q_limit (<= cap): see pace_due. */
    uint64_t d = s - atomic_load_explicit(&w->consumed, ACQ);
    if (TG_UNLIKELY(d >= atomic_load_explicit(&w->q_limit, RLX))) {
      int rc = d >= w->cap ? wait_space(w, s) : pace_wait(w, s);
      if (rc) return rc;
    }
    *seq = s;
    return 0;
  }
  uint64_t h = atomic_load_explicit(&w->head, RLX);
  do {
    uint64_t d = h - atomic_load_explicit(&w->consumed, ACQ);
    /* Acquire `written`: as in pace_wait. */
    if (d >= atomic_load_explicit(&w->q_limit, RLX) && (d >= w->cap || pace_due(w, h, ACQ))) {
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
  while (caller_durable(w) < lsn && !atomic_load_explicit(&w->failed, RLX))
    mu_wait(w, &w->durable_cv);
  int rc = caller_durable(w) >= lsn ? 0 : atomic_load_explicit(&w->failed, RLX);
  mu_unlock(w);
  return rc;
}

/* TG_WAL_REPLICATED: wait until lsn is fdatasynced (the stream's ack
   aside), so that the appender can leave the group commit's count before
   it waits for the ack: gather() counts strict_inflight appenders, and one
   whose record is durable already will not append again until its ack
   comes; counted, it held every gathering to GATHER_IDLE_NS of spinning. */
static int wait_local(tg_wal *w, uint64_t lsn) {
  /* Acquire: as caller_durable's. */
  if (atomic_load_explicit(&w->durable, ACQ) >= lsn) return 0;
  mu_lock(w);
  /* Relaxed: `durable` and `failed` are stored under mu. */
  while (atomic_load_explicit(&w->durable, RLX) < lsn && !atomic_load_explicit(&w->failed, RLX))
    mu_wait(w, &w->durable_cv);
  int rc = atomic_load_explicit(&w->durable, RLX) >= lsn ? 0 : atomic_load_explicit(&w->failed, RLX);
  mu_unlock(w);
  return rc;
}

/* Ask the sync thread for an fdatasync up to lsn now, rather than after
   the linger and the sync interval, and a lingering writer for the write
   it needs first. Not at STRICT, whose writer syncs every batch. */
static void ask_sync(tg_wal *w, uint64_t lsn) {
  if (w->level == TG_WAL_STRICT) return;
  request_sync(w, lsn);
  sync_kick(w);
  if (atomic_load_explicit(&w->sleeping, SEQ)) wake_writer(w); /* SLEEP/SYNC */
}

static int wait_durable(tg_wal *w, uint64_t lsn) {
  if (caller_durable(w) >= lsn) return 0;
  ask_sync(w, lsn);
  return wait_durable_cv(w, lsn);
}

/*
 * The one append path: claim a slot, fill it, publish it. The payload
 * (len <= SLOT_INLINE) is copied into the slot, or, when `spilled`, it is
 * already in the spill region at spill_pos and the LSN was claimed by the
 * caller (spill_claim) and comes in *seq. Never waits for durability: the
 * public entry points decide that. On success *seq is the record's LSN; on
 * failure nothing was logged.
 */
static inline int enqueue(tg_wal *w, uint8_t type, const void *payload, size_t len,
                          int spilled, uint64_t spill_pos, uint64_t *seq) {
  uint64_t s = *seq;
  if (TG_LIKELY(!spilled)) {
    int rc = claim(w, &s);
    if (TG_UNLIKELY(rc)) return rc;
  }
  slot *sl = &w->ring[s & w->mask];
  sl->spill_pos = spill_pos;
  tg__st32(sl->frame, (uint32_t)(TG__WAL_FRAME_HDR + len));
  tg__st64(sl->frame + 8, s | (uint64_t)type << 56);
  if (TG_LIKELY(!spilled)) memcpy(sl->frame + TG__WAL_FRAME_HDR, payload, len);
  /* Release: the frame and the spill bytes are complete before the writer
     (or, after a crash, the next open reading the ring file) sees the LSN. */
  atomic_store_explicit(&sl->published, s, REL);
  /* seq_cst: SLEEP/HEAD, after the fetch_add on head in claim(). */
  if (TG_UNLIKELY(atomic_load_explicit(&w->sleeping, SEQ))) wake_if_due(w, s);
  *seq = s;
  return 0;
}

/*
 * ACK ORDER. At BALANCED and RELAXED an append returns once its record is
 * published in the ring, and a process crash keeps what is published: the
 * next open appends the ring's slots after the log's end in LSN order,
 * while each is published (RING FILE). A slot claimed and not yet
 * published (its appender preempted between the two) would end that walk,
 * and every record after it would be lost with the process although
 * acknowledged. So an append at these levels returns only once every LSN
 * below its own is published too. The usual case shares nothing: a thread
 * whose previous append on this log had the LSN just below its own knows
 * that everything up to it was published when that append returned
 * (thread-local, keyed by the open's number `gen`, so a log freed and
 * another allocated at the same address is not mistaken for it).
 * Otherwise the appender checks the slots from the highest point known
 * covered (ack_covered, or `consumed`) to its own, waits for one still
 * being filled (spinning briefly, then sleeping: its filler may need this
 * CPU), and raises ack_covered. STRICT and REPLICATED appenders wait for
 * durability instead, which the writer reaches in LSN order. A WAL that
 * failed while a slot below stayed unpublished (its appender's claim
 * failed) returns the failure.
 */
static _Atomic uint64_t wal_gens;
static _Thread_local uint64_t tl_ack_gen, tl_ack_last;

__attribute__((noinline)) static int ack_order_slow(tg_wal *w, uint64_t first, uint64_t last) {
  /* Acquire: LSNs below either were published (ack_covered: by the store
     of the appender that raised it; consumed: written by the writer). */
  uint64_t i = atomic_load_explicit(&w->ack_covered, ACQ);
  uint64_t c = atomic_load_explicit(&w->consumed, ACQ);
  if (c > i) i = c;
  unsigned spins = 0;
  long nap_ns = 1000;
  while (i < first) {
    /* Acquire: pairs with enqueue()'s release of `published`. */
    if (atomic_load_explicit(&w->ring[i & w->mask].published, ACQ) == i ||
        atomic_load_explicit(&w->consumed, ACQ) > i) { /* or written, slot reused */
      i++;
      spins = 0;
      continue;
    }
    int f = atomic_load_explicit(&w->failed, ACQ);
    if (f) return f;
    if (++spins < 256) {
      tg__cpu_relax();
    } else {
      struct timespec ts = {0, nap_ns};
      nanosleep(&ts, NULL);
      if (nap_ns < 100000) nap_ns *= 2;
    }
  }
  /* Release: what this thread saw published is seen by whoever acquires
     the raised bound. */
  uint64_t cov = atomic_load_explicit(&w->ack_covered, RLX);
  while (cov < last + 1 && !atomic_compare_exchange_weak_explicit(&w->ack_covered, &cov, last + 1,
                                                                  REL, RLX)) {
  }
  tl_ack_gen = w->gen;
  tl_ack_last = last;
  return 0;
}

/* Every LSN below first is published (first..last are this caller's). */
static inline int ack_order(tg_wal *w, uint64_t first, uint64_t last) {
  if (TG_LIKELY(tl_ack_gen == w->gen && tl_ack_last + 1 == first)) {
    tl_ack_last = last;
    return 0;
  }
  return ack_order_slow(w, first, last);
}

/* Wait until spill bytes up to `end` (a spill position) are free: the
   records using them are written. Called with spill_mu held. */
static int spill_wait(tg_wal *w, uint64_t end) {
  /* Acquire: the writer is done reading those bytes. */
  if (end - atomic_load_explicit(&w->spill_consumed, ACQ) <= w->spill_cap) return 0;
  if (w->nonblocking) {
    atomic_fetch_add_explicit(&w->st_rejected, 1, RLX);
    return TG_EAGAIN;
  }
  uint64_t t0 = tg__now_ns();
  atomic_fetch_add_explicit(&w->st_blocked, 1, RLX);
  mu_lock(w);
  atomic_fetch_add_explicit(&w->space_waiters, 1, SEQ); /* CONSUMED/SPACE, SLEEP/SPACE */
  while (end - atomic_load_explicit(&w->spill_consumed, SEQ) > w->spill_cap && /* CONSUMED/SPACE */
         !atomic_load_explicit(&w->failed, RLX)) {                          /* set under mu */
    wake_writer(w);
    mu_wait(w, &w->space_cv);
  }
  atomic_fetch_sub_explicit(&w->space_waiters, 1, RLX);
  int rc = end - atomic_load_explicit(&w->spill_consumed, RLX) <= w->spill_cap
               ? 0 : atomic_load_explicit(&w->failed, RLX);
  mu_unlock(w);
  atomic_fetch_add_explicit(&w->st_blocked_ns, tg__now_ns() - t0, RLX);
  return rc;
}

/* A payload over SLOT_INLINE goes to the spill region of the ring file, so
   that it survives a crash like an inline one. Its bytes and its LSN are
   claimed together under spill_mu, so spill order is LSN order and the
   writer frees the region in order (spill_consumed). A record that would
   cross the region's end starts at its beginning instead. */
static int append_spilled(tg_wal *w, uint8_t type, const void *payload, size_t len,
                          uint64_t *seq) {
  /* A shipped record travels in one message (SHIPPING). */
  if (w->ship.max_payload && len > w->ship.max_payload) return TG_EINVAL;
  uint64_t need = tg__align8(len), s = 0;
  pthread_mutex_lock(&w->spill_mu);
  uint64_t pos = w->spill_head, off = pos % w->spill_cap;
  if (off + need > w->spill_cap) pos += w->spill_cap - off;
  int rc = spill_wait(w, pos + need);
  if (!rc) rc = claim(w, &s);
  if (!rc) w->spill_head = pos + need;
  pthread_mutex_unlock(&w->spill_mu);
  if (rc) return rc;
  /* Ours alone: the writer reads it only after the slot is published. */
  memcpy(w->spill + pos % w->spill_cap, payload, len);
  *seq = s;
  return enqueue(w, type, payload, len, 1, pos, seq);
}

/* Check the arguments, enqueue. */
static inline int append_nowait(tg_wal *w, uint8_t type, const void *payload, size_t len,
                                uint64_t *seq) {
  /* Relaxed: a fast refusal; a failure that lands after this load is still
     reported, by the wait or by the next call. */
  int f = atomic_load_explicit(&w->failed, RLX);
  if (TG_UNLIKELY(f)) return f;
  if (TG_UNLIKELY(!payload && len)) return TG_EINVAL;
  if (TG_UNLIKELY(len > SLOT_INLINE)) {
    if (len > TG_WAL_MAX_PAYLOAD) return TG_EINVAL;
    return append_spilled(w, type, payload, len, seq);
  }
  return enqueue(w, type, payload, len, 0, 0, seq);
}

int tg_wal_append(tg_wal *w, uint8_t type, const void *payload, size_t len, uint64_t *lsn) {
  uint64_t seq = 0;
  if (w->level != TG_WAL_STRICT) {
    int rc = append_nowait(w, type, payload, len, &seq);
    if (TG_LIKELY(rc == 0)) {
      if (lsn) *lsn = seq; /* set even if the order wait fails: queued */
      rc = ack_order(w, seq, seq);
    }
    return rc;
  }
  /* Relaxed: strict_inflight is gather()'s heuristic. */
  atomic_fetch_add_explicit(&w->strict_inflight, 1, RLX);
  int rc = append_nowait(w, type, payload, len, &seq);
  if (rc == 0) {
    if (lsn) *lsn = seq; /* set even if the wait fails: queued, not durable */
    /* Counted until fdatasynced (gather); at REPLICATED the ack after. */
    rc = w->replicated ? wait_local(w, seq) : wait_durable(w, seq);
  }
  atomic_fetch_sub_explicit(&w->strict_inflight, 1, RLX);
  if (rc == 0 && w->replicated) rc = wait_durable(w, seq);
  return rc;
}

int tg__wal_test_claim(tg_wal *w, uint64_t *lsn) { return claim(w, lsn); }

int tg__wal_test_publish(tg_wal *w, uint64_t lsn, uint8_t type, const void *payload,
                         size_t len) {
  if (len > SLOT_INLINE) return TG_EINVAL; /* inline payloads only */
  uint64_t seq = lsn;
  /* Spilled: the LSN is the caller's; its payload inline all the same. */
  slot *sl = &w->ring[lsn & w->mask];
  memcpy(sl->frame + TG__WAL_FRAME_HDR, payload, len);
  return enqueue(w, type, payload, len, 1, 0, &seq);
}

int tg__wal_test_published(tg_wal *w, uint64_t lsn) {
  /* Acquire: as ack_order_slow's. */
  return atomic_load_explicit(&w->ring[lsn & w->mask].published, ACQ) == lsn;
}

static int append_many(tg_wal *w, const tg_wal_record *recs, const uint32_t *crcs, size_t n,
                       uint64_t *first) {
  *first = 0;
  if (!n) return 0;
  int f = atomic_load_explicit(&w->failed, RLX); /* as append_nowait's */
  if (TG_UNLIKELY(f)) return f;
  int inline_all = !w->nonblocking;
  for (size_t k = 0; k < n && inline_all; k++)
    if (recs[k].len > SLOT_INLINE || (!recs[k].payload && recs[k].len)) inline_all = 0;
  if (!inline_all) {
    /* Spilled payloads claim their LSNs with their spill bytes, and a
       nonblocking WAL refuses record by record: one at a time. */
    for (size_t k = 0; k < n; k++) {
      uint64_t lsn = 0;
      int rc = tg__wal_append_nowait(w, recs[k].type, recs[k].payload, recs[k].len, &lsn);
      if (rc) return rc;
      if (!k) *first = lsn;
    }
    return 0;
  }
  /* One claim for all: the per-record fetch_add and load of `consumed`
     (a line the writer stores to) were a fifth of a replica's apply time
     (perf, tg-bench replicate). seq_cst: SLEEP/HEAD, as claim()'s. */
  uint64_t s = atomic_fetch_add_explicit(&w->head, n, SEQ);
  uint64_t room = 0; /* LSNs below this have room (distance < q_limit) */
  for (size_t k = 0; k < n; k++) {
    uint64_t q = s + k;
    if (q >= room) {
      /* Acquire: as claim()'s. Relaxed q_limit: see pace_due. */
      uint64_t c = atomic_load_explicit(&w->consumed, ACQ);
      uint64_t lim = atomic_load_explicit(&w->q_limit, RLX);
      if (q - c >= lim) {
        int rc = q - c >= w->cap ? wait_space(w, q) : pace_wait(w, q);
        if (rc) return rc; /* the WAL failed: the rest is never published */
        c = atomic_load_explicit(&w->consumed, ACQ);
      }
      room = c + lim;
    }
    slot *sl = &w->ring[q & w->mask];
    /* A given CRC covers the LSN it was computed for: only for that one. */
    int given = crcs && recs[k].lsn == q;
    sl->spill_pos = given ? SLOT_CRC_GIVEN : 0;
    tg__st32(sl->frame, (uint32_t)(TG__WAL_FRAME_HDR + recs[k].len));
    if (given) tg__st32(sl->frame + 4, crcs[k]);
    tg__st64(sl->frame + 8, q | (uint64_t)recs[k].type << 56);
    memcpy(sl->frame + TG__WAL_FRAME_HDR, recs[k].payload, recs[k].len);
    /* Release: as enqueue()'s. */
    atomic_store_explicit(&sl->published, q, REL);
    /* seq_cst: SLEEP/HEAD, after the fetch_add on head above. */
    if (TG_UNLIKELY(atomic_load_explicit(&w->sleeping, SEQ))) wake_if_due(w, q);
  }
  *first = s;
  return w->level != TG_WAL_STRICT ? ack_order(w, s, s + n - 1) : 0;
}

int tg__wal_append_many_nowait(tg_wal *w, const tg_wal_record *recs, size_t n,
                               uint64_t *first) {
  return append_many(w, recs, NULL, n, first);
}

int tg__wal_append_checked_nowait(tg_wal *w, const tg_wal_record *recs, const uint32_t *crcs,
                                  size_t n, uint64_t *first) {
  return append_many(w, recs, crcs, n, first);
}

void tg__wal_strict_begin(tg_wal *w) {
  if (w->level == TG_WAL_STRICT) atomic_fetch_add_explicit(&w->strict_inflight, 1, RLX);
}

int tg__wal_append_nowait(tg_wal *w, uint8_t type, const void *payload, size_t len,
                          uint64_t *lsn) {
  uint64_t seq = 0;
  int rc = append_nowait(w, type, payload, len, &seq);
  if (TG_LIKELY(rc == 0)) {
    if (lsn) *lsn = seq;
    if (w->level != TG_WAL_STRICT) rc = ack_order(w, seq, seq);
  }
  return rc;
}

int tg__wal_strict_end(tg_wal *w, uint64_t lsn) {
  if (w->level != TG_WAL_STRICT) return 0;
  /* Counted until fdatasynced (gather); at REPLICATED the ack after
     (wait_local). */
  int rc = !lsn ? 0 : w->replicated ? wait_local(w, lsn) : wait_durable(w, lsn);
  atomic_fetch_sub_explicit(&w->strict_inflight, 1, RLX);
  if (lsn && rc == 0 && w->replicated) rc = wait_durable(w, lsn);
  return rc;
}

int tg_wal_sync(tg_wal *w, uint64_t lsn) {
  /* Acquire: covers appends that happen-before this call. */
  uint64_t head = atomic_load_explicit(&w->head, ACQ);
  if (lsn == 0) lsn = head - 1;
  if (lsn >= head) return TG_EINVAL;
  if (caller_durable(w) >= lsn) return 0;
  int f = atomic_load_explicit(&w->failed, ACQ);
  if (f) return f;
  request_sync(w, lsn);
  sync_kick(w);
  wake_writer(w);
  return wait_durable_cv(w, lsn);
}

void tg__wal_ship_acked(tg_wal *w, uint64_t lsn) {
  mu_lock(w);
  /* Relaxed loads: `acked` and `durable` are stored under mu. */
  uint64_t a = atomic_load_explicit(&w->acked, RLX), d = atomic_load_explicit(&w->durable, RLX);
  if (lsn > a) {
    /* Release: pairs with caller_durable's acquire. */
    atomic_store_explicit(&w->acked, lsn, REL);
    /* Wake the waiters only when an ack releases some (min(durable, acked)
       moved): an ack that comes before its fdatasync ends releases no one,
       and each broadcast woke every waiting caller on this 2-core machine
       (publish_durable's broadcast releases them then). On durable_cv only
       TG_WAL_REPLICATED callers wait for acks; tg__wal_wait_replicated's
       callers are woken one by one, only those this ack releases. */
    if (d > a) {
      if (w->replicated) pthread_cond_broadcast(&w->durable_cv);
      if (w->rwaiters) wake_replicated(w);
    }
  }
  mu_unlock(w);
}

void tg__wal_ship_failed(tg_wal *w, int rc) { wal_fail(w, rc); }

/* Fdatasynced and acknowledged by the stream, at any level (SHIPPING).
   Acquire: as caller_durable's. */
static inline uint64_t replicated_upto(tg_wal *w) {
  uint64_t d = atomic_load_explicit(&w->durable, ACQ);
  uint64_t a = atomic_load_explicit(&w->acked, ACQ);
  return a < d ? a : d;
}

/* A tg__wal_wait_replicated caller asleep, on its own stack, in
   w->rwaiters. Each has its own condition variable so that an ack or an
   fdatasync wakes only the callers it releases: one broadcast for all woke
   every waiting thread at every ack and every fdatasync, 1.7 futile
   wake-ups per wait with 8 threads waiting on groups (tg-bench replicate). */
typedef struct rwaiter {
  uint64_t lsn;             /* read-only while listed */
  pthread_cond_t cv;        /* CLOCK_MONOTONIC: the deadline is tg__now_ns's */
  struct rwaiter *next;     /* under mu */
} rwaiter;

/* Wake the listed callers whose LSN is replicated now, or all of them once
   the WAL failed. Called under mu, after the position or the failure was
   stored. */
static void wake_replicated(tg_wal *w) {
  assert_mu_held(w);
  uint64_t r = replicated_upto(w);
  /* Relaxed: `failed` is stored under mu. */
  int f = atomic_load_explicit(&w->failed, RLX) != 0;
  for (rwaiter *e = w->rwaiters; e; e = e->next)
    if (f || e->lsn <= r) pthread_cond_signal(&e->cv);
}

uint64_t tg__wal_acked(tg_wal *w) {
  /* Acquire: pairs with tg__wal_ship_acked's release. */
  return w->ship.ship ? atomic_load_explicit(&w->acked, ACQ) : 0;
}

int tg__wal_wait_replicated(tg_wal *w, uint64_t lsn, uint64_t deadline_ns) {
  /* Acquire: covers appends that happen-before this call (as tg_wal_sync). */
  if (!w->ship.ship || lsn >= atomic_load_explicit(&w->head, ACQ)) return TG_EINVAL;
  if (replicated_upto(w) >= lsn) return 0;
  int f = atomic_load_explicit(&w->failed, ACQ);
  if (f) return f;
  /* The ack needs the record written (the writer ships after each write),
     the fdatasync needs the sync thread: ask both now, as wait_durable
     does, rather than after a linger and a sync interval. At STRICT the
     writer syncs every batch by itself. Also when only looking (deadline
     0): at RELAXED nothing else would ever fdatasync it, and a caller
     polling would never see it replicated. */
  if (w->level != TG_WAL_STRICT && atomic_load_explicit(&w->durable, ACQ) < lsn)
    ask_sync(w, lsn);
  else if (atomic_load_explicit(&w->sleeping, SEQ)) wake_writer(w); /* SLEEP/SYNC */
  if (deadline_ns == 0) return -ETIMEDOUT;
  struct timespec ts = {(time_t)(deadline_ns / 1000000000u), (long)(deadline_ns % 1000000000u)};
  int rc = 0;
  rwaiter me = {.lsn = lsn, .next = NULL};
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&me.cv, &ca);
  pthread_condattr_destroy(&ca);
  mu_lock(w);
  me.next = w->rwaiters;
  w->rwaiters = &me;
  /* Relaxed `failed`: stored under mu. The positions are stored under mu
     too (publish_durable, tg__wal_ship_acked), and each store is followed
     by wake_replicated under mu, so a caller listed before it checks is
     never missed. */
  while (replicated_upto(w) < lsn && !(rc = atomic_load_explicit(&w->failed, RLX))) {
    if (tg__now_ns() >= deadline_ns) {
      rc = -ETIMEDOUT;
      break;
    }
    assert_mu_held(w);
    w->mu_held = 0;
    pthread_cond_timedwait(&me.cv, &w->mu, &ts);
    w->mu_owner = pthread_self();
    w->mu_held = 1;
  }
  if (replicated_upto(w) >= lsn) rc = 0; /* reached, whatever came after */
  rwaiter **pp = &w->rwaiters;
  while (*pp != &me) pp = &(*pp)->next;
  *pp = me.next;
  mu_unlock(w);
  pthread_cond_destroy(&me.cv);
  return rc;
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
  o->throttled = atomic_load_explicit(&w->st_paced, RLX);
  o->throttled_ns = atomic_load_explicit(&w->st_paced_ns, RLX);
  o->queue_limit = atomic_load_explicit(&w->q_limit, RLX);
  o->segments = atomic_load_explicit(&w->st_segments, RLX);
  o->next_lsn = atomic_load_explicit(&w->head, RLX);
  o->written_lsn = atomic_load_explicit(&w->written, RLX);
  o->durable_lsn = caller_durable(w);
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
    if (!rc) rc = tg__unlinkat(AT_FDCWD, path, 0);
    if (rc == -ENOENT) rc = 0;
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
  int ok = c->level >= TG_WAL_STRICT && c->level <= TG_WAL_REPLICATED &&
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

/* Create the WAL directory if it is missing, and then fsync its parent: a
   segment's name is only as durable as the directory that holds it. */
static int make_dir(const char *dir) {
  int rc = tg__mkdirat(AT_FDCWD, dir, 0700);
  if (rc == -EEXIST) return 0;
  if (rc) return rc;
  char parent[4096];
  size_t l = strlen(dir);
  while (l > 1 && dir[l - 1] == '/') l--; /* "a/wal/" names "a/wal" */
  while (l > 0 && dir[l - 1] != '/') l--;
  while (l > 1 && dir[l - 1] == '/') l--;
  if (l >= sizeof parent) return -ENAMETOOLONG;
  if (l == 0) parent[l++] = '.';
  else memcpy(parent, dir, l);
  parent[l] = '\0';
  return tg__fsync_dir(parent);
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
    if (path_in(path, sizeof path, dir, e->d_name) != 0) continue;
    rc = tg__unlinkat(AT_FDCWD, path, 0);
    if (rc == -ENOENT) rc = 0;
    if (rc) break;
  }
  closedir(d);
  return rc;
}

int tg__wal_broken_name(int dfd, const char *name, char *out, size_t outlen) {
  for (int k = 0; k < 1000; k++) {
    int n = k == 0 ? snprintf(out, outlen, "%s.broken", name)
                   : snprintf(out, outlen, "%s.broken.%d", name, k);
    if (n < 0 || (size_t)n >= outlen) return -ENAMETOOLONG;
    struct stat st;
    if (fstatat(dfd, out, &st, AT_SYMLINK_NOFOLLOW) && errno == ENOENT) return 0;
  }
  return -EEXIST;
}

#define KEEP_CHUNK (1u << 16)

int tg__wal_keep_tail(const char *dir, const char *name, uint64_t off, char *kept,
                      size_t kept_len, uint64_t *kept_bytes) {
  int dfd = -1, in = -1, out = -1, rc = 0;
  unsigned char *buf = NULL;
  struct stat st;
  if (kept_len) kept[0] = '\0';
  *kept_bytes = 0;
  if ((dfd = tg__openat(AT_FDCWD, dir, O_RDONLY | O_DIRECTORY, 0)) < 0) return dfd;
  if ((in = tg__openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0)) < 0) {
    rc = in;
    goto cleanup;
  }
  if (fstat(in, &st)) {
    rc = -errno;
    goto cleanup;
  }
  if (!S_ISREG(st.st_mode)) {
    rc = TG_ECORRUPT;
    goto cleanup;
  }
  if (!(buf = malloc(KEEP_CHUNK))) {
    rc = TG_ENOMEM;
    goto cleanup;
  }
  uint64_t size = (uint64_t)st.st_size;
  for (uint64_t pos = off; pos < size;) {
    size_t want = size - pos < KEEP_CHUNK ? (size_t)(size - pos) : KEEP_CHUNK;
    ssize_t n = pread(in, buf, want, (off_t)pos);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      rc = -errno;
      goto cleanup;
    }
    if (n == 0) break;
    size_t z = 0;
    while (z < (size_t)n && !buf[z]) z++;
    if (z < (size_t)n) { /* sparse: zeros (a preallocated segment) stay holes */
      if (out < 0) {
        if ((rc = tg__wal_broken_name(dfd, name, kept, kept_len))) goto cleanup;
        out = tg__openat(dfd, kept, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
        if (out < 0) {
          rc = out;
          goto cleanup;
        }
      }
      if ((rc = tg__pwrite_all(out, buf, (size_t)n, (off_t)(pos - off)))) goto cleanup;
    }
    pos += (uint64_t)n;
  }
  if (out < 0) goto cleanup; /* only zeros: nothing to keep */
  if ((rc = tg__ftruncate(out, (off_t)(size - off))) || (rc = tg__fsync(out)) ||
      (rc = tg__fsync(dfd)))
    goto cleanup;
  *kept_bytes = size - off;
cleanup:
  free(buf);
  if (out >= 0) close(out);
  if (rc && out >= 0) tg__unlinkat(dfd, kept, 0);
  if (rc && kept_len) kept[0] = '\0';
  if (in >= 0) close(in);
  if (dfd >= 0) close(dfd);
  return rc;
}

/* Read the log from segment `from` to its end. */
static int read_to_end(const char *dir, uint64_t from, tg_wal_end *end) {
  tg_wal_reader *r = NULL;
  tg_wal_record rec;
  int rc = tg_wal_reader_open(&r, dir, from);
  if (rc) return rc;
  while (tg_wal_reader_next(r, &rec) == 1) {
  }
  *end = *tg_wal_reader_end(r);
  tg_wal_reader_close(r);
  return 0;
}

/* Recover the end of the log (see RECOVERY above): leaves w->fd open on the
   segment appends continue in, positioned after its last valid frame, sets
   w->next, and drops from segs[] an empty last segment that an interrupted
   switch left (removed). */
static int recover_last(tg_wal *w, uint64_t *segs, size_t *nseg, tg_wal_open_info *info) {
  char path[4096], name[TG__WAL_NAME_LEN + 1];
  unsigned char hdr[TG__WAL_HDR];
  tg_wal_end end;
  uint64_t first = segs[*nseg - 1];
  int rc = read_to_end(w->dir, first, &end);
  /* A last segment with no marker may be what an interrupted switch left:
     only its predecessor's end tells (the reader checks it when it starts
     there). */
  if (!rc && *nseg >= 2 && (end.reason == TG_WAL_END_CLEAN || end.reason == TG_WAL_END_TORN) &&
      end.segment == first && end.durable_offset <= TG__WAL_HDR)
    rc = read_to_end(w->dir, segs[*nseg - 2], &end);
  if (rc) return rc;
  if (end.reason != TG_WAL_END_CLEAN && end.reason != TG_WAL_END_TORN) {
    info->corrupt_segment = end.segment;
    info->corrupt_offset = end.offset;
    info->corrupt_what = end.what;
    return end.err ? end.err : TG_ECORRUPT;
  }
  if (end.empty_segment) {
    /* Its predecessor never said the log goes on there, so none of its
       records was ever published durable (SWITCH SEALING): the log
       continues in the predecessor. Recovery never destroys bytes: its
       frames are kept in <segment>.broken first. Durable before any
       append. */
    assert(end.empty_segment == first && end.segment == segs[*nseg - 2]);
    tg__wal_seg_name(name, first);
    if ((rc = tg__wal_keep_tail(w->dir, name, TG__WAL_HDR, info->removed_kept_name,
                                sizeof info->removed_kept_name, &info->removed_kept_bytes)))
      return rc;
    if ((rc = path_in(path, sizeof path, w->dir, name)) ||
        (rc = tg__unlinkat(AT_FDCWD, path, 0)) || (rc = tg__fsync_dir(w->dir)))
      return rc;
    info->removed_segment = first;
    (*nseg)--;
    first = end.segment;
  }
  uint64_t e = end.offset < TG__WAL_HDR ? TG__WAL_HDR : end.offset;
  w->next = end.last_lsn ? end.last_lsn + 1 : first;
  if (end.reason == TG_WAL_END_TORN) {
    info->torn_tail = 1;
    info->torn_segment = first;
    info->torn_offset = e;
  }
  tg__wal_seg_name(name, first);
  /* Recovery never destroys bytes: what the cut removes (anything but
     zeros) is first kept beside the segment, durably. */
  if (end.reason == TG_WAL_END_TORN &&
      (rc = tg__wal_keep_tail(w->dir, name, e, info->kept_name, sizeof info->kept_name,
                              &info->kept_bytes)))
    return rc;
  if ((rc = path_in(path, sizeof path, w->dir, name))) return rc;
  w->fd = tg__openat(AT_FDCWD, path, O_RDWR | O_NOFOLLOW, 0);
  if (w->fd < 0) return w->fd;
  /* Cut everything after the last valid frame so nothing stale can be read
     back later; the fsync also makes everything before the cut durable
     (after a process crash it may have been in the page cache only), which
     the first DURABLE marker of this run then records. */
  rc = tg__ftruncate(w->fd, (off_t)e);
  if (!rc) rc = tg__fsync(w->fd);
  if (!rc && pread(w->fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr) rc = -EIO;
  if (rc) return rc;
  w->seg_v1 = tg__ld32(hdr + TG__SH_VERSION) == TG__WAL_VERSION_1;
  if (w->seg_v1 && w->next == first) {
    /* An empty version-1 segment: it becomes a version-2 one in place. */
    tg__wal_header_encode(hdr, first, w->cfg.segment_bytes);
    if ((rc = tg__pwrite_all(w->fd, hdr, sizeof hdr, 0)) || (rc = tg__fdatasync(w->fd)))
      return rc;
    w->seg_v1 = 0;
  }
  if (!w->seg_v1 && e < w->cfg.segment_bytes) {
    rc = tg__fallocate(w->fd, (off_t)e, (off_t)(w->cfg.segment_bytes - e));
    if (rc == -EOPNOTSUPP) rc = 0;
    if (rc) return rc;
  }
  w->seg_first = first;
  w->seg_off = e;
  w->dur_off = e;
  w->dur_lsn = w->next - 1;
  w->marker_due = e > TG__WAL_HDR;
  return 0;
}

/* ---- the ring file ------------------------------------------------------------- */

/* Set every position from w->next (what the log holds ends at w->next - 1). */
static void set_positions(tg_wal *w) {
  /* Relaxed: no other thread sees w before pthread_create, which orders these. */
  atomic_store_explicit(&w->head, w->next, RLX);
  atomic_store_explicit(&w->consumed, w->next, RLX);
  atomic_store_explicit(&w->ack_covered, w->next, RLX);
  w->w_written = w->w_durable = w->next - 1;
  atomic_store_explicit(&w->written, w->next - 1, RLX);
  atomic_store_explicit(&w->durable, w->next - 1, RLX);
}

static size_t ring_file_bytes(uint64_t slots, uint64_t spill) {
  return RING_HDR + (size_t)slots * SLOT_BYTES + (size_t)spill;
}

/* Map the whole ring file fd of `bytes` bytes, shared: stores to it are the
   page cache's, so they outlive the process. */
static int ring_map(tg_wal *w, int fd, size_t bytes, uint64_t slots, uint64_t spill) {
  void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) return -errno;
  w->ring_map = m;
  w->ring_map_bytes = bytes;
  w->ring = (slot *)(w->ring_map + RING_HDR);
  w->cap = slots;
  w->mask = slots - 1u;
  w->spill = w->ring_map + RING_HDR + (size_t)slots * SLOT_BYTES;
  w->spill_cap = spill;
  return 0;
}

static void ring_unmap(tg_wal *w) {
  if (w->ring_map) munmap(w->ring_map, w->ring_map_bytes);
  w->ring_map = NULL;
  w->ring = NULL;
  w->spill = NULL;
}

/* The geometry of a ring file header that is ours, of this boot and not
   closed cleanly (its process died); 0 if it is not one. */
static int ring_header_live(const unsigned char *h, uint64_t size, const char *boot,
                            uint64_t *slots, uint64_t *spill) {
  if (size < RING_HDR || memcmp(h + RH_MAGIC, RING_MAGIC, 8) ||
      tg__ld32(h + RH_VERSION) != RING_VERSION || tg__ld32(h + RH_HDRSIZE) != RING_HDR ||
      tg__ld32(h + RH_SLOTSIZE) != SLOT_BYTES ||
      tg__ld32(h + RH_CRC) != tg__crc32(0, h, RH_CRC))
    return 0;
  uint64_t n = tg__ld64(h + RH_SLOTS), sp = tg__ld64(h + RH_SPILL);
  /* Bounded by what could legitimately be there before mapping it. */
  if (n < TG_WAL_RING_MIN || n > TG_WAL_RING_MAX || (n & (n - 1)) || sp != RING_SPILL ||
      size < ring_file_bytes(n, sp))
    return 0;
  if (memcmp(h + RH_BOOT, boot, TG__BOOT_ID_BYTES) || tg__ld64(h + RH_STATE) != RING_OPEN)
    return 0;
  *slots = n;
  *spill = sp;
  return 1;
}

/* Whether the slot for lsn holds a complete record published for lsn whose
   payload lies inside the mapping. The release store of `published` is the
   last store of an append, and the dead process's stores are exactly what
   this boot's page cache holds, so a slot is never torn: these checks only
   reject what is not a record of this log at all. */
static int ring_slot_valid(const tg_wal *w, uint64_t lsn) {
  const slot *s = &w->ring[lsn & w->mask];
  /* Relaxed: the process that stored it is gone; the open is alone. */
  if (atomic_load_explicit(&((slot *)s)->published, RLX) != lsn) return 0;
  uint32_t len = tg__ld32(s->frame);
  if ((tg__ld64(s->frame + 8) & TG_WAL_MAX_LSN) != lsn || len < TG__WAL_FRAME_HDR ||
      len - TG__WAL_FRAME_HDR > TG_WAL_MAX_PAYLOAD)
    return 0;
  if (len - TG__WAL_FRAME_HDR <= SLOT_INLINE) return 1;
  return s->spill_pos % w->spill_cap + tg__align8(len - TG__WAL_FRAME_HDR) <= w->spill_cap;
}

/* A process crash: append the records the dead process published past the
   log's end (consecutive LSNs from w->next), then fdatasync. Uses the writer
   steps (drain, do_sync) before the writer thread exists. */
static int ring_recover(tg_wal *w, tg_wal_open_info *info) {
  assert_writer(w);
  uint64_t end = w->next;
  while (end <= TG_WAL_MAX_LSN && end - w->next < w->cap && ring_slot_valid(w, end)) end++;
  if (end == w->next) return 0;
  uint64_t first = w->next;
  set_positions(w);
  atomic_store_explicit(&w->head, end, RLX);
  /* Only the slots' order matters here: the spill region is read in place. */
  atomic_store_explicit(&w->spill_consumed, 0, RLX);
  w->spill_written = 0;
  w->recovering = 1;
  while (w->next < end && !atomic_load_explicit(&w->failed, RLX)) drain(w);
  if (!atomic_load_explicit(&w->failed, RLX) && w->w_written > w->w_durable) do_sync(w);
  w->recovering = 0;
  int rc = atomic_load_explicit(&w->failed, RLX);
  if (rc) return rc;
  info->ring_records = end - first;
  return 0;
}

/*
 * Zero [off, off+len) of fd in the file system, not through a mapping: 1 if
 * done. A store through the mapping into every page of the ring cost a
 * page fault each (8 MiB at the default size: 27 ms an open on a
 * paravirtual host, where a fault from user space is slow); the file
 * system zeroes the range at once and MADV_POPULATE_WRITE faults the
 * pages in from the kernel (3.4 ms). The blocks stay allocated. Not
 * through the I/O seam: like the stores it replaces, this writes nothing
 * that outlives the boot (the ring is ignored after a reboot). 0 where the
 * file system cannot (tmpfs: EOPNOTSUPP), and the caller stores zeroes.
 */
static int zero_file_range(int fd, off_t off, size_t len) {
#ifdef FALLOC_FL_ZERO_RANGE
  for (;;) {
    if (fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, (off_t)len) == 0)
      return 1;
    if (errno != EINTR) return 0;
  }
#else
  (void)fd, (void)off, (void)len;
  return 0;
#endif
}

/* Fault [p, p+len) of a shared mapping in for writing, from the kernel when
   it can (MADV_POPULATE_WRITE, Linux 5.14), else with a store per page of
   the byte already there. The file's blocks are allocated, so no fault can
   fail for space; one that fails for memory (ENOMEM) is left to the first
   store. */
static void prefault_write(unsigned char *p, size_t len) {
#ifdef MADV_POPULATE_WRITE
  if (madvise(p, len, MADV_POPULATE_WRITE) == 0 || errno != EINVAL) return;
#endif
  for (size_t off = 0; off < len; off += 4096) {
    volatile unsigned char *b = p + off;
    *b = *b;
  }
}

/*
 * Open (creating it if needed) the ring file in the WAL directory, recover
 * from it if the process that used it died during this boot, and leave it
 * mapped, sized for this configuration, zeroed and stamped as in use by
 * this boot. See RING FILE above.
 */
static int ring_open(tg_wal *w, tg_wal_open_info *info) {
  assert_writer(w);
  unsigned char h[RING_HDR];
  char boot[TG__BOOT_ID_BYTES];
  struct stat st;
  int dfd = -1, fd = -1, rc;
  uint64_t slots = 0, spill = 0;
  size_t want = ring_file_bytes(w->cfg.ring_slots, RING_SPILL);
  /* No boot id (no /proc): a ring found cannot be shown to be this boot's,
     so it is never read; a new one is still written for the next open. */
  int have_boot = tg__boot_id(boot) == 0;
  dfd = tg__openat(AT_FDCWD, w->dir, O_RDONLY | O_DIRECTORY, 0);
  if (dfd < 0) return dfd;
  /* O_NOFOLLOW and the S_ISREG check: a link or a FIFO planted at the name
     is refused, never mapped or written through. */
  fd = tg__openat(dfd, RING_NAME, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK, 0600);
  if (fd < 0) {
    rc = fd;
    goto cleanup;
  }
  if (fstat(fd, &st) < 0) {
    rc = -errno;
    goto cleanup;
  }
  if (!S_ISREG(st.st_mode)) {
    rc = TG_ECORRUPT;
    goto cleanup;
  }
  memset(h, 0, sizeof h);
  if (have_boot && st.st_size >= (off_t)RING_HDR && pread(fd, h, sizeof h, 0) == (ssize_t)sizeof h &&
      ring_header_live(h, (uint64_t)st.st_size, boot, &slots, &spill)) {
    if ((rc = ring_map(w, fd, ring_file_bytes(slots, spill), slots, spill)) != 0) goto cleanup;
    rc = ring_recover(w, info);
    ring_unmap(w);
    if (rc) goto cleanup;
  }
  /* Sized for this configuration, the blocks allocated now: a store to a
     hole of a shared mapping on a full disk would be a SIGBUS in an
     appender. */
  if ((uint64_t)st.st_size != want && (rc = tg__ftruncate(fd, (off_t)want)) != 0) goto cleanup;
  rc = tg__fallocate(fd, 0, (off_t)want);
  if (rc == -EOPNOTSUPP) rc = 0;
  if (rc) goto cleanup;
  memset(h, 0, sizeof h);
  memcpy(h + RH_MAGIC, RING_MAGIC, 8);
  tg__st32(h + RH_VERSION, RING_VERSION);
  tg__st32(h + RH_HDRSIZE, RING_HDR);
  tg__st32(h + RH_SLOTSIZE, SLOT_BYTES);
  tg__st64(h + RH_SLOTS, w->cfg.ring_slots);
  tg__st64(h + RH_SPILL, RING_SPILL);
  memcpy(h + RH_BOOT, boot, TG__BOOT_ID_BYTES);
  tg__st32(h + RH_CRC, tg__crc32(0, h, RH_CRC));
  tg__st64(h + RH_STATE, RING_OPEN);
  /* Not synced: after a reboot the ring is ignored whatever it holds. */
  if ((rc = tg__pwrite_all(fd, h, sizeof h, 0)) != 0) goto cleanup;
  /* Zero every slot: no stale LSN can be taken for a record. The spill
     region is only read through a published slot. */
  size_t slot_bytes = (size_t)w->cfg.ring_slots * SLOT_BYTES;
  int zeroed = zero_file_range(fd, RING_HDR, slot_bytes);
  if ((rc = ring_map(w, fd, want, w->cfg.ring_slots, RING_SPILL)) != 0) goto cleanup;
  /* And fault every slot's page in for writing now, so that no first touch
     (microseconds each) falls on an append. */
  prefault_write((unsigned char *)w->ring, slot_bytes);
  if (!zeroed) memset(w->ring, 0, slot_bytes);
cleanup:
  if (fd >= 0) close(fd); /* the mapping keeps the file */
  if (dfd >= 0) close(dfd);
  if (rc == -ENOSPC || rc == -EDQUOT) rc = TG_ENOSPC;
  return rc;
}

/* A clean close: everything in the ring is in the log (and durable). Marking
   it so keeps a later open from appending records again after the log was
   cut short by hand or by a tool. */
static void ring_mark_closed(tg_wal *w) {
  if (!w->ring_map) return;
  tg__st64(w->ring_map + RH_STATE, RING_CLOSED);
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
  /* REPLICATED needs someone to ship to (SHIPPING). */
  if (c.level == TG_WAL_REPLICATED && !(o.ship && o.ship->ship)) return TG_EINVAL;

  w = calloc(1, sizeof *w);
  if (!w) return TG_ENOMEM;
  w->fd = -1;
  w->next_fd = -1;
  w->seal_fd = -1;
  w->hint_fd = -1;
  w->cfg = c;
  w->opts = o;
  /* REPLICATED is STRICT (the writer fdatasyncs every batch, appenders
     wait) whose callers also wait for the stream's acknowledgement. */
  w->replicated = c.level == TG_WAL_REPLICATED;
  w->level = w->replicated ? TG_WAL_STRICT : c.level;
  if (o.ship) w->ship = *o.ship;
  w->opts.ship = NULL; /* the copy above is what is used */
  w->nonblocking = c.nonblocking;
  w->cap = c.ring_slots;
  w->mask = c.ring_slots - 1u;
  /* Relaxed: a unique number is all that is asked of it. */
  w->gen = atomic_fetch_add_explicit(&wal_gens, 1, RLX) + 1;
  w->interval_ns = (uint64_t)c.sync_interval_ms * 1000000u;
  w->linger_ns = w->level == TG_WAL_STRICT ? 0 : (uint64_t)c.linger_us * 1000u;
  w->linger_wake = w->cap / 4 ? w->cap / 4 : 1;
  w->sync_every_ns = w->interval_ns;
  /* Relaxed: no other thread sees w yet. */
  atomic_store_explicit(&w->q_limit, w->cap, RLX);
  if (c.level == TG_WAL_BALANCED) {
    w->pace_budget_ns = w->interval_ns / PACE_SHARE;
    w->sync_every_ns = w->interval_ns - w->pace_budget_ns;
    atomic_store_explicit(&w->q_limit, w->cap < PACE_START ? w->cap : PACE_START, RLX);
  }
  pthread_mutex_init(&w->mu, NULL);
  pthread_mutex_init(&w->seg_mu, NULL);
  pthread_mutex_init(&w->spill_mu, NULL);
  pthread_mutex_init(&w->sync_mu, NULL);
  /* The sync thread's timed wait is on the monotonic clock (tg__now_ns):
     the default, CLOCK_REALTIME, would put every deadline in the past. */
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&w->sync_cv, &ca);
  /* durable_cv too: tg__wal_wait_replicated's deadline is tg__now_ns's. */
  pthread_cond_init(&w->durable_cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_cond_init(&w->space_cv, NULL);
  w->dir = strdup(dir);
  if (!w->dir) {
    rc = TG_ENOMEM;
    goto fail;
  }
  if ((rc = make_dir(dir)) != 0) goto fail;
  if ((rc = remove_tmp_files(dir)) != 0) goto fail;
  if ((rc = tg__wal_list(dir, &segs, &nseg)) != 0) goto fail;

  if (nseg == 0) {
    w->next = o.start_lsn;
    if ((rc = prepare_next(w)) != 0 || (rc = install_next(w, o.start_lsn)) != 0) goto fail;
  } else {
    if ((rc = recover_last(w, segs, &nseg, info)) != 0) goto fail;
    for (size_t i = 0; i < nseg; i++)
      if ((rc = seg_list_add(w, segs[i])) != 0) goto fail;
    /* A version-1 segment is never appended to: the log goes on in a new
       version-2 segment (the reader takes a version-1 segment's end as it
       is, with no switch marker). */
    if (w->seg_v1 && ((rc = prepare_next(w)) != 0 || (rc = install_next(w, w->next)) != 0))
      goto fail;
  }
  if (w->next > TG_WAL_MAX_LSN) {
    rc = TG_EINVAL;
    goto fail;
  }

  w->buf = aligned_alloc(4096, BUF_BYTES);
  if (!w->buf) {
    rc = TG_ENOMEM;
    goto fail;
  }
  memset(w->buf, 0, BUF_BYTES);
  set_positions(w);
  if ((rc = ring_open(w, info)) != 0) goto fail;
  set_positions(w);
  atomic_store_explicit(&w->spill_consumed, 0, RLX);
  w->spill_written = 0;
  w->spill_head = 0;
  w->sync_fd = w->fd;
  w->sync_written = w->w_written;
  w->sync_off = w->seg_off;
  w->sync_done_fd = -1;
  w->hint_src = -1;
  w->sync_last_start = tg__now_ns();

  info->oldest_lsn = w->nseg ? w->segs[0] : 0;
  info->last_lsn = w->nseg && w->next > w->segs[0] ? w->next - 1 : 0;
  info->next_lsn = w->next;
  info->segments = (uint32_t)w->nseg;

  if (o.on_segment) o.on_segment(o.hook_arg, w->seg_first);
  /* The sync thread first: the writer reads sync_started, ordered by its
     own pthread_create. */
  if (w->level != TG_WAL_STRICT) {
    if ((rc = pthread_create(&w->sync_thread, NULL, sync_main, w)) != 0) {
      rc = -rc;
      goto fail;
    }
    w->sync_started = 1;
  }
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
  if (w->sync_started) {
    pthread_mutex_lock(&w->sync_mu);
    w->sync_stop = 1;
    pthread_cond_broadcast(&w->sync_cv);
    pthread_mutex_unlock(&w->sync_mu);
    pthread_join(w->sync_thread, NULL);
  }
  if (w->hint_fd >= 0) close(w->hint_fd);
  int rc = atomic_load_explicit(&w->failed, ACQ); /* both threads are joined */
  if (w->next_fd >= 0) {
    char path[4096];
    close(w->next_fd);
    if (path_in(path, sizeof path, w->dir, TMP_NAME) == 0) tg__unlinkat(AT_FDCWD, path, 0);
  }
  if (w->seal_fd >= 0) close(w->seal_fd); /* a switch a failure left unsealed */
  if (w->fd >= 0) close(w->fd);
  /* After a failure the ring stays marked in use: the next open appends
     what it still holds (acknowledged at BALANCED and RELAXED). */
  if (w->thread_started && !rc) ring_mark_closed(w);
  ring_unmap(w);
  free(w->buf);
  free(w->segs);
  free(w->dir);
  pthread_mutex_destroy(&w->mu);
  pthread_mutex_destroy(&w->seg_mu);
  pthread_mutex_destroy(&w->spill_mu);
  pthread_mutex_destroy(&w->sync_mu);
  pthread_cond_destroy(&w->sync_cv);
  pthread_cond_destroy(&w->durable_cv);
  pthread_cond_destroy(&w->space_cv);
  free(w);
  return rc;
}
