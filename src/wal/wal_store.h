/*
 * The WAL protocol a store speaks and applications do not: where an empty
 * log starts, hooks run by the writer thread, and STRICT group commit for a
 * caller that appends under a lock of its own. Internal: src/store and the
 * tests use it; it is not installed and may change with any release.
 */
#ifndef TG_WAL_STORE_H
#define TG_WAL_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "tokengraph/wal.h"

/* Called after each fdatasync of a segment, with its latency and the LSN
   now durable: by the writer thread, or at BALANCED and RELAXED by the sync
   thread (never by both at once; on the opening thread for the fdatasync
   that follows records recovered from the ring file). Must be cheap and
   must not call into this WAL. */
typedef void (*tg__wal_sync_hook)(void *arg, uint64_t latency_ns, uint64_t durable_lsn);
/* Called by the writer thread when it starts a new segment (first LSN), and
   once at open (on the opening thread) for the segment appends continue in.
   Same rules. */
typedef void (*tg__wal_segment_hook)(void *arg, uint64_t first_lsn);

/* Called just before (phase 0) and just after (phase 1) each batch write
   (what = TG__WAL_IO_WRITE, n = bytes; the writer thread) and each
   fdatasync (what = TG__WAL_IO_SYNC, n = LSN it makes durable; the thread
   that syncs, as for the sync hook: a write and an fdatasync may run at
   the same time), so a caller can trace them. Not called for the opening
   thread's recovery from the ring file. Same rules as the other hooks. */
enum tg__wal_io { TG__WAL_IO_WRITE = 1, TG__WAL_IO_SYNC = 2 };
typedef void (*tg__wal_io_hook)(void *arg, int what, int phase, uint64_t n);

/* Shipping (wal.c, SHIPPING): ship() is called by the writer thread after
   each batch it wrote, with the batch's records (frames as in the segment,
   no markers; first_lsn..last_lsn contiguous, and contiguous with the
   previous call's). It must copy what it keeps. A non-zero return fails
   the log with that error (as an I/O error does). The shipper reports
   acknowledgements with tg__wal_ship_acked() and a fencing or transport
   failure with tg__wal_ship_failed(), from any thread. */
typedef struct tg__wal_ship {
  int (*ship)(void *ctx, const void *frames, size_t len, uint64_t first_lsn,
              uint64_t last_lsn);
  void *ctx;
  uint32_t max_payload; /* appends of a larger payload get TG_EINVAL (one
                           record must fit in one message); 0: no limit */
} tg__wal_ship;

typedef struct tg__wal_store_opts {
  uint64_t start_lsn;              /* LSN of the first record of an empty log
                                      (no segment yet); 0 means 1. A store
                                      passes its checkpoint's LSN + 1. */
  tg__wal_sync_hook on_sync;       /* NULL or called after each fdatasync */
  tg__wal_segment_hook on_segment; /* NULL or called per new segment */
  tg__wal_io_hook on_io;           /* NULL or called around writes and
                                      fdatasyncs */
  void *hook_arg;                  /* passed to every hook */
  const tg__wal_ship *ship;        /* NULL, or ship the records written
                                      (copied at open); needed by
                                      TG_WAL_REPLICATED */
} tg__wal_store_opts;

/* LSNs <= lsn are acknowledged by the replication stream: waiters at
   TG_WAL_REPLICATED and in tg__wal_wait_replicated() whose records are also
   fdatasynced return. */
void tg__wal_ship_acked(tg_wal *w, uint64_t lsn);
/* Fail the log with rc (TG_EFENCED: another writer owns the stream; any
   other code counts as TG_EIO): every later append and every waiter gets
   it; what is on disk stays. */
void tg__wal_ship_failed(tg_wal *w, int rc);
/* The highest LSN the stream acknowledged (every lower one too), as last
   reported with tg__wal_ship_acked(); 0 for a log that does not ship. */
uint64_t tg__wal_acked(tg_wal *w);
/* Wait until every record up to lsn is both fdatasynced and acknowledged
   by the stream, at any level (at BALANCED and RELAXED the wait asks for
   the fdatasync and the write at once, as tg_wal_sync() does; waiters share
   them), until deadline_ns on tg__now_ns()'s clock (0: do not wait, but
   ask for the write and the fdatasync all the same, so that polling gets
   there at RELAXED too).
   Returns 0; TG_EINVAL (a log that does not ship, or lsn not handed out
   yet); -ETIMEDOUT; or the failure that ended the log before lsn got
   there (TG_EFENCED, TG_EIO, TG_ENOSPC). */
int tg__wal_wait_replicated(tg_wal *w, uint64_t lsn, uint64_t deadline_ns);

/* The file in the WAL directory that holds the ring of published records
   (wal.c): a reader of the directory that does not drain it checks only
   that it is what the open would accept. */
#define TG__WAL_RING_NAME "ring"

/* 0 if cfg is within the TG_WAL_* limits of tokengraph/wal.h (what
   tg_wal_open() checks), else TG_EINVAL. The INI loader's [wal] table uses
   the same macros; a test holds the two to the same answers. */
int tg__wal_config_check(const tg_wal_config *cfg);

/* tg_wal_open() with the store's options (opts NULL: none, start at 1). */
int tg__wal_open_ex(tg_wal **out, const char *dir, const tg_wal_config *cfg,
                    const tg__wal_store_opts *opts, tg_wal_open_info *info);

/*
 * STRICT group commit for a caller that appends under a lock of its own but
 * must wait for durability outside it (the store does this): call
 * tg__wal_strict_begin() before taking the lock, so the writer counts the
 * caller as in flight and gathers its record into the same fdatasync as the
 * others'; append with tg__wal_append_nowait() (any number of records);
 * after releasing the lock, tg__wal_strict_end(w, lsn) waits until lsn is
 * durable (lsn 0: nothing was appended) and ends the count. Every begin
 * needs exactly one end. At other levels begin and end do nothing.
 * tg__wal_append_nowait() never waits for an fdatasync, at any level and
 * for any payload size (it may still block on a full queue unless the WAL
 * is nonblocking, and at BALANCED/RELAXED waits for another thread's
 * record with a lower LSN to be queued, as tg_wal_append() does); its
 * errors are tg_wal_append()'s.
 * tg__wal_strict_end errors: TG_ENOSPC / TG_EIO (the WAL failed before lsn
 * was durable).
 */
void tg__wal_strict_begin(tg_wal *w);
int tg__wal_append_nowait(tg_wal *w, uint8_t type, const void *payload, size_t len,
                          uint64_t *lsn);
int tg__wal_strict_end(tg_wal *w, uint64_t lsn);
/* tg__wal_append_nowait() of recs[0..n) (their type, payload and len; lsn
   is ignored) as consecutive LSNs, the first into *first. Records whose
   payloads fit a ring slot (96 bytes) are claimed in one step: what a
   replica applying a message of the primary's records does (replica.c).
   On an error the records from the failed one on are not logged (the WAL
   has failed, or a nonblocking one refused: TG_EAGAIN). */
int tg__wal_append_many_nowait(tg_wal *w, const tg_wal_record *recs, size_t n,
                               uint64_t *first);
/* tg__wal_append_many_nowait() of records whose frame CRCs the caller has
   checked already (a replica, on the primary's frames): crcs[k] is the CRC
   of recs[k]'s frame with LSN recs[k].lsn, and is written as it is when
   recs[k] gets that LSN (else the writer computes it, as always), so each
   frame's CRC is computed once on the replica. The ring slot carries it
   (docs/wal-format.md, "The ring file"). */
int tg__wal_append_checked_nowait(tg_wal *w, const tg_wal_record *recs, const uint32_t *crcs,
                                  size_t n, uint64_t *first);

/* A name in the directory open as dfd, for bytes of file `name` kept
   aside, that does not exist yet: NAME.broken, then NAME.broken.1, .2, ...
   An earlier one is never overwritten (it may be what an earlier recovery
   kept). Returns 0, -ENAMETOOLONG or -EEXIST (a thousand are taken). */
int tg__wal_broken_name(int dfd, const char *name, char *out, size_t outlen);

/*
 * Keep the bytes of segment `name` of the WAL directory `dir` from offset
 * `off` to its end in a new file beside it (NAME.broken, or .broken.N when
 * that exists), written sparse, fsynced, and the directory fsynced, before
 * a caller cuts the segment at `off`: recovery never destroys bytes. When
 * those bytes are all zeros nothing is written and *kept is "". On success
 * *kept (kept_len bytes) names the file and *kept_bytes its size.
 * Errors: -errno, TG_ENOMEM, TG_ECORRUPT (not a regular file); on error no
 * new file remains and the caller must not cut.
 */
int tg__wal_keep_tail(const char *dir, const char *name, uint64_t off, char *kept,
                      size_t kept_len, uint64_t *kept_bytes);

#endif
