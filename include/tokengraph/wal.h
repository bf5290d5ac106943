/*
 * tokengraph write-ahead log: an append-only, CRC-framed, segmented log of
 * records (a type byte plus opaque payload bytes), written by one background
 * thread, with three durability levels and group commit.
 * The on-disk format, the reader's rules and the recovery rule are in
 * docs/wal-format.md.
 *
 * Threading: tg_wal_append(), tg_wal_sync(), tg_wal_stats_get(),
 * tg_wal_failed() and tg_wal_remove_upto() may be called from any number of
 * threads at once. tg_wal_open() and tg_wal_close() must not run
 * concurrently with any other call on the same handle, and every append must
 * have returned before tg_wal_close() is called.
 *
 * Only one tg_wal may have a directory open at a time (the store's lock file
 * guarantees that; the WAL itself does not lock).
 */
#ifndef TOKENGRAPH_WAL_H
#define TOKENGRAPH_WAL_H

#include <stddef.h>
#include <stdint.h>

#include "tokengraph/errors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest payload of one record, in bytes (16 MiB). */
#define TG_WAL_MAX_PAYLOAD (16u * 1024u * 1024u)
/* Largest LSN (LSNs are 56-bit; the top byte of the frame word is the type). */
#define TG_WAL_MAX_LSN ((UINT64_C(1) << 56) - 1)

/*
 * Durability levels: the one description of what each level promises, for
 * the WAL and for a store (tg_store_config.wal.level). Every level keeps
 * order: what survives a crash is always a prefix of the log, so recovery
 * never shows a later record without an earlier one. At every level a
 * process crash (kill -9, abort, a fatal signal) loses nothing that was
 * acknowledged: the queue is a shared mapping of a file in the directory
 * (its page cache outlives the process) and the next open in the same boot
 * appends what it holds. What each level gives up on a power loss (or an
 * OS crash: the queue is then ignored):
 *  - TG_WAL_STRICT gives up nothing: an append returns only after its record
 *    is on stable storage (fdatasync done). Concurrent appenders share one
 *    fdatasync (group commit). Costs one fdatasync latency per call.
 *  - TG_WAL_BALANCED gives up the records acknowledged in about the last
 *    sync_interval_ms plus one fdatasync: an append returns once the record
 *    is queued; the writer writes continuously (an idle one looks every
 *    linger_us) and a sync thread fdatasyncs while it writes. The queue is
 *    paced: an append that finds more records queued before its own than
 *    the writer drains in a quarter of sync_interval_ms (its measured rate)
 *    waits for the writer (nonblocking: TG_EAGAIN), and the sync thread
 *    starts an fdatasync every three quarters of sync_interval_ms, so queue
 *    delay plus cadence stay within the interval.
 *  - TG_WAL_RELAXED gives up everything since the last fdatasync:
 *    fdatasync happens only at a segment switch, tg_wal_sync() (a store:
 *    tg_sync(), a checkpoint) and close.
 *  - TG_WAL_REPLICATED (a store with replication only: tg_store_config's
 *    nats_url and repl_name) gives up what STRICT gives up, nothing, and
 *    adds a second copy: an append returns only after its record is
 *    fdatasynced locally AND acknowledged by the replication stream.
 *    Concurrent appenders share both. What the stream's acknowledgement
 *    promises depends on the server: docs/durability.md ("REPLICATED")
 *    says it for nats-server 2.9.10 (in memory on the stream's quorum, not
 *    yet fsynced there). A tg_wal opened without a store refuses it
 *    (TG_EINVAL): the stream is the store's. The same promise for a group
 *    of calls, waited for once and asynchronously, at any level:
 *    tg_wait_replicated() (tokengraph.h).
 * docs/durability.md has the bounds measured for each.
 */
enum tg_wal_level {
  TG_WAL_STRICT = 0,
  TG_WAL_BALANCED = 1,
  TG_WAL_RELAXED = 2,
  TG_WAL_REPLICATED = 3
};

/*
 * Limits of tg_wal_config, inclusive. tg_wal_open() and the INI loader
 * (tg_config_load, [wal] keys) accept exactly the same values.
 */
#define TG_WAL_SYNC_INTERVAL_MIN_MS 1u        /* 0 would mean an fdatasync per batch: use STRICT */
#define TG_WAL_SYNC_INTERVAL_MAX_MS 60000u    /* one minute */
#define TG_WAL_SEGMENT_MIN 4096u              /* a header and a few frames */
#define TG_WAL_SEGMENT_MAX (UINT64_C(1) << 36) /* 64 GiB */
#define TG_WAL_SEGMENT_ALIGN 4096u            /* segment_bytes is a multiple of this */
#define TG_WAL_RING_MIN 2u                    /* ring_slots is a power of two */
#define TG_WAL_RING_MAX (1u << 24)            /* 2 GiB of 128-byte slots, all
                                                 touched at open */
#define TG_WAL_LINGER_MAX_US 1000000u         /* one second */

/* The WAL's tunables. Fill with tg_wal_config_init(), then change fields. */
typedef struct tg_wal_config {
  int level;                 /* enum tg_wal_level; default TG_WAL_BALANCED */
  uint32_t sync_interval_ms; /* BALANCED: max time between fdatasyncs;
                                default 10 */
  uint64_t segment_bytes;    /* preallocated segment size; default 64 MiB */
  uint32_t ring_slots;       /* queue capacity in records; default 65536
                                (8 MiB of 128-byte slots) */
  int nonblocking;           /* 0 (default): a full queue blocks the caller;
                                1: a full queue returns TG_EAGAIN at once */
  uint32_t linger_us;        /* BALANCED/RELAXED: an idle writer sleeps up
                                to this long between looks at the queue
                                instead of being woken by every append (a
                                quarter-full queue, a sync request or close
                                still wake it at once); 0 = wake per append.
                                Default 1000. STRICT ignores it. */
} tg_wal_config;

/* Fill *cfg with the defaults listed above. */
TG_API void tg_wal_config_init(tg_wal_config *cfg);

/* What tg_wal_open() found in the directory. */
typedef struct tg_wal_open_info {
  uint64_t oldest_lsn;     /* first LSN of the oldest segment */
  uint64_t last_lsn;       /* last valid LSN found (0: the log holds no record) */
  uint64_t next_lsn;       /* the LSN the next append gets (last_lsn + 1;
                              1 for a new log) */
  uint32_t segments;       /* segments present after open */
  int torn_tail;           /* 1: the last segment ended in a torn tail, which
                              was cut off (see torn_*) */
  uint64_t torn_segment;   /* first LSN (= name) of that segment */
  uint64_t torn_offset;    /* byte offset the segment was cut at */
  char kept_name[48];      /* the bytes the cut removed (other than zeros)
                              were first kept in this file of the directory
                              ("<segment>.broken"); "" when there were none */
  uint64_t kept_bytes;     /* its size */
  uint64_t removed_segment; /* first LSN (= name) of a last segment that an
                              interrupted segment switch left (it holds no
                              marker frame: nothing in it was ever durable),
                              removed (0: none) */
  char removed_kept_name[48]; /* its frames (anything but zeros) were first
                              kept in this file of the directory; "" when
                              it held none */
  uint64_t removed_kept_bytes; /* that file's size */
  uint64_t corrupt_segment; /* TG_ECORRUPT / TG_EVERSION: the segment (first
                              LSN = name) ... */
  uint64_t corrupt_offset; /* ... and the byte offset in it where the log is
                              damaged ... */
  const char *corrupt_what; /* ... and why (static text); NULL otherwise */
  uint64_t ring_records;   /* records the log did not hold that were taken
                              from the ring file: appended by a process
                              that died (crash, kill -9) during this boot
                              and not yet written (docs/wal-format.md,
                              "The ring file") */
} tg_wal_open_info;

typedef struct tg_wal tg_wal;

/*
 * Open the WAL in directory `dir` (the directory holding the segments, e.g.
 * DATADIR/wal; created if missing, its parent must exist), creating the
 * first segment if there is none. An existing log is recovered as
 * docs/wal-format.md says: *.tmp files are removed, the last segment is
 * read, a torn tail (garbage after the log's durable point) is first kept
 * in "<segment>.broken" and then cut off (ftruncate + fsync), and appends
 * continue after the last valid record. Damage before the durable point
 * is refused (TG_ECORRUPT, info->corrupt_* say where), never cut.
 * Earlier segments are not read: replay them with tg_wal_reader_open().
 * cfg == NULL uses the defaults; info may be NULL.
 * On success *out is the handle and the writer thread runs. On failure *out
 * is NULL and nothing needs releasing.
 * Errors: TG_EINVAL (a config value outside the TG_WAL_* limits above),
 * TG_ECORRUPT (the end of the log is damaged before its durable point, or
 * a segment is missing: nothing was changed; info->corrupt_* name the
 * segment, offset and reason; inspect with the reader), TG_EVERSION,
 * TG_ENOMEM, TG_ENOSPC (no space to create or preallocate a segment),
 * -errno (including a failure to keep cut bytes: then nothing was cut).
 */
TG_API int tg_wal_open(tg_wal **out, const char *dir, const tg_wal_config *cfg,
                       tg_wal_open_info *info);

/*
 * Append a record: `type` and `len` bytes at `payload` (copied; the caller
 * keeps ownership). On success *lsn (if not NULL) is the record's LSN; LSNs
 * are consecutive and the file order is LSN order.
 * STRICT: returns after the record is durable. BALANCED/RELAXED: returns
 * once the record is queued (see enum tg_wal_level for what that promises)
 * and every record with a lower LSN is queued too (another thread's append
 * between taking its LSN and queueing is waited for), so that what a
 * process crash keeps is a prefix that holds every acknowledged record.
 * Payloads up to 96 bytes are copied into the ring with no allocation,
 * lock or system call; larger ones (up to TG_WAL_MAX_PAYLOAD) are copied
 * into the ring file's spill region under a mutex (no allocation, no system
 * call), and wait while that region (32 MiB) is full.
 * A full queue blocks, or returns TG_EAGAIN with nothing logged when
 * cfg.nonblocking is set.
 * Errors: TG_EINVAL (len > TG_WAL_MAX_PAYLOAD, or payload NULL with len > 0),
 * TG_EAGAIN, TG_ENOMEM (large payload copy), TG_ENOSPC / TG_EIO (the WAL has
 * failed: the record was not logged, or - STRICT only - it was queued but is
 * not known to be durable, and *lsn is still set).
 */
TG_API int tg_wal_append(tg_wal *w, uint8_t type, const void *payload, size_t len,
                         uint64_t *lsn);

/*
 * Wait until every record with an LSN <= lsn is durable (lsn == 0: every
 * record appended before this call). Works at every level; the waiting
 * callers share fdatasyncs.
 * Errors: TG_ENOSPC / TG_EIO (the WAL failed before those records were
 * durable), TG_EINVAL (lsn was never handed out).
 */
TG_API int tg_wal_sync(tg_wal *w, uint64_t lsn);

/*
 * 0 if the WAL works, otherwise the error that failed it (TG_ENOSPC or
 * TG_EIO; for a store that replicates, also TG_EFENCED: another writer
 * took over its stream, docs/durability.md "REPLICATED"); *os_errno (if
 * not NULL) gets the errno the system call gave (0 for TG_EFENCED).
 * A failed WAL is never retried: every later append and sync returns the
 * error, records already durable stay durable, and reopening the
 * directory (after freeing space, for ENOSPC) recovers what is on disk.
 */
TG_API int tg_wal_failed(const tg_wal *w, int *os_errno);

/*
 * Delete the segments whose every record has an LSN <= lsn (a checkpoint
 * covering lsn makes them unnecessary), then fsync the directory. The
 * segment being written is never deleted. *removed (if not NULL) gets the
 * number of segments deleted.
 * Errors: -errno from unlink or fsync (segments already deleted stay deleted).
 */
TG_API int tg_wal_remove_upto(tg_wal *w, uint64_t lsn, uint32_t *removed);

typedef struct tg_wal_stats {
  uint64_t records;        /* records written to the file by the writer */
  uint64_t bytes;          /* frame bytes written */
  uint64_t batches;        /* write batches (pwrite calls of the writer) */
  uint64_t fdatasyncs;     /* fdatasyncs of segment files */
  uint64_t fdatasync_failures; /* of those, failed: 0 or 1 (the first failure
                              fails the log), so 1 says that the failure
                              tg_wal_failed() reports was an fdatasync */
  uint64_t blocked;        /* appends that waited for queue space (counted
                              when the wait begins, so one waiting now is
                              included) */
  uint64_t blocked_ns;     /* total time appenders waited for queue space */
  uint64_t rejected;       /* appends refused with TG_EAGAIN */
  uint64_t queue_depth;    /* records appended but not yet written, now */
  uint64_t segments;       /* segment switches since open */
  uint64_t next_lsn;       /* the LSN the next append will get */
  uint64_t written_lsn;    /* highest LSN written to the file */
  uint64_t durable_lsn;    /* highest LSN known durable */
  int failed;              /* as tg_wal_failed() */
  uint64_t throttled;      /* BALANCED: appends that waited for the writer
                              to catch up (more records queued before
                              theirs than it writes in a quarter of
                              sync_interval_ms; counted when the wait
                              begins) */
  uint64_t throttled_ns;   /* total time appenders waited for that */
  uint64_t queue_limit;    /* BALANCED: the queued records past which an
                              append waits for the writer (or, nonblocking,
                              gets TG_EAGAIN), kept at what the writer
                              drains in a quarter of sync_interval_ms;
                              ring_slots at the other levels */
} tg_wal_stats;

/* Snapshot the counters (each read atomically; the set is not one instant).
   Records per fdatasync is records / fdatasyncs. */
TG_API int tg_wal_stats_get(const tg_wal *w, tg_wal_stats *out);

/*
 * Stop the writer after it has written everything appended, fdatasync,
 * close the files and free the handle. Accepts NULL (returns 0).
 * Returns 0, or the error the WAL had failed with (TG_ENOSPC, TG_EIO): in
 * that case records after the last durable one may be missing.
 */
TG_API int tg_wal_close(tg_wal *w);

/* ---- reading ------------------------------------------------------------ */

enum tg_wal_end_reason {
  TG_WAL_END_NONE = 0,    /* not ended yet */
  TG_WAL_END_CLEAN = 1,   /* the log ended where its data ends */
  TG_WAL_END_TORN = 2,    /* torn tail: an incomplete last write, nothing
                             valid after it (expected after a crash) */
  TG_WAL_END_CORRUPT = 3, /* corruption: a bad record or header followed by
                             valid data, an LSN gap, wrong magic or version */
  TG_WAL_END_IO = 4       /* a segment could not be opened or read */
};

typedef struct tg_wal_end {
  int reason;             /* enum tg_wal_end_reason */
  int err;                /* 0 (clean, torn), TG_ECORRUPT, TG_EVERSION or -errno */
  uint64_t segment;       /* first LSN (= name) of the segment it ended in; 0 if none */
  uint64_t offset;        /* byte offset in that segment where it ended */
  uint64_t last_lsn;      /* LSN of the last valid record seen (0: none) */
  uint64_t valid_offset;  /* CORRUPT: offset of the valid frame found after
                             the bad one, or 0 */
  const char *what;       /* static description ("bad CRC", "LSN gap", ...) */
  char path[256];         /* segment file name within the directory */
  uint64_t first_lsn;     /* LSN of the first valid record seen, counting
                             those below from_lsn that were passed over
                             (0: none); records are consecutive, so the
                             reader saw last_lsn - first_lsn + 1 of them */
  uint64_t expected_lsn;  /* CORRUPT by an LSN gap or disorder: the LSN the
                             log had to continue with ... */
  uint64_t found_lsn;     /* ... and the one it holds there instead (a
                             segment's first LSN, or a record's). Both 0
                             for any other end. found_lsn > expected_lsn
                             is a gap: records expected_lsn..found_lsn-1
                             are missing (tg_wal_end_is_gap()) */
  uint64_t segment_bytes; /* preallocated size that segment's header
                             records (0: the header was not valid);
                             informational, and untrusted */
  uint64_t durable_offset; /* format 2, last segment: its durable point,
                             the largest offset its marker frames say was
                             fdatasynced (damage before it is CORRUPT,
                             after it TORN); 0 otherwise */
  uint64_t empty_segment; /* first LSN (= name) of a last segment holding
                             no marker frame (empty, or records written
                             before its switch was sealed) that follows
                             `segment` because a switch was interrupted;
                             not part of the log (0: none) */
} tg_wal_end;

/* 1 if the log ended because records are missing (an LSN gap). */
static inline int tg_wal_end_is_gap(const tg_wal_end *e) {
  return e->reason == TG_WAL_END_CORRUPT && e->found_lsn > e->expected_lsn;
}

typedef struct tg_wal_record {
  uint64_t lsn;
  uint8_t type;
  uint32_t len;           /* payload bytes */
  const void *payload;    /* valid until the next tg_wal_reader_next() or
                             tg_wal_reader_close(); do not free */
  uint64_t segment;       /* first LSN (= name) of the segment holding it */
  uint64_t offset;        /* byte offset of its frame in that segment */
} tg_wal_record;

typedef struct tg_wal_reader tg_wal_reader;

/*
 * Open a reader over the WAL directory `dir` that yields records with
 * LSN >= from_lsn (0: from the oldest segment). It never changes the files.
 * It starts at the newest segment whose first LSN is <= from_lsn and reads
 * (and checks) that segment from its start; when the oldest segment starts
 * after from_lsn, the log ends at once as CORRUPT with expected_lsn =
 * from_lsn and found_lsn = that segment's first LSN (records are missing).
 * On failure *out is NULL. Errors: TG_ENOMEM, -errno (dir cannot be listed).
 */
TG_API int tg_wal_reader_open(tg_wal_reader **out, const char *dir, uint64_t from_lsn);

/*
 * Next record: returns 1 and fills *rec, or 0 when the log has ended (then
 * tg_wal_reader_end() says how). Records come in LSN order, consecutive.
 * Once it has returned 0 it keeps returning 0.
 */
TG_API int tg_wal_reader_next(tg_wal_reader *r, tg_wal_record *rec);

/* How the log ended (reason TG_WAL_END_NONE before the end). Valid until
   tg_wal_reader_close(); do not free. */
TG_API const tg_wal_end *tg_wal_reader_end(const tg_wal_reader *r);

/* Number of segment files the reader found in the directory, and the first
   LSN (= name) of the i-th of them in LSN order (0 when i is out of range). */
TG_API size_t tg_wal_reader_segments(const tg_wal_reader *r);
TG_API uint64_t tg_wal_reader_segment(const tg_wal_reader *r, size_t i);

/* The file name of the segment whose first LSN is first_lsn, into buf.
   Returns 0, or TG_EINVAL when it does not fit in len bytes. */
TG_API int tg_wal_segment_name(uint64_t first_lsn, char *buf, size_t len);

/* Release the reader. Accepts NULL. */
TG_API void tg_wal_reader_close(tg_wal_reader *r);

/* What lies from a position in the log to its end, read the way a
   salvager would: every valid frame at any 8-byte-aligned offset, with no
   regard to order or gaps. It tells an operator what cutting the log at
   that position would drop. */
typedef struct tg_wal_salvage {
  uint64_t frames;        /* valid frames found */
  uint64_t above;         /* of which with an LSN > above_lsn (the
                             records a cut would lose) */
  uint64_t min_lsn;       /* smallest and largest LSN among them (0: none) */
  uint64_t max_lsn;
} tg_wal_salvage;

/*
 * Scan the WAL directory `dir` from byte `offset` of segment `segment` (its
 * first LSN) to the end of the last segment, counting valid frames as
 * tg_wal_salvage says. Read-only. Errors: -ENOENT (no such segment),
 * TG_ENOMEM, -errno.
 */
TG_API int tg_wal_salvage_scan(const char *dir, uint64_t segment, uint64_t offset,
                               uint64_t above_lsn, tg_wal_salvage *out);

/* Name of an end reason ("clean", "torn tail", "corrupt", "io"). */
TG_API const char *tg_wal_end_reason_name(int reason);

#ifdef __cplusplus
}
#endif
#endif /* TOKENGRAPH_WAL_H */
