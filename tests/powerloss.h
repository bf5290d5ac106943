/*
 * Power-loss simulation through the I/O seam (src/common/io.h).
 *
 * A process under test calls pl_record_start() before it opens a store:
 * from then on every file operation the library makes through the seam
 * (openat, write, pwrite, ftruncate, fallocate, fdatasync, fsync,
 * renameat, unlinkat, mkdirat) is performed for real AND appended to a
 * journal file, with the file's inode and path (writes before they are
 * made, syncs after they returned). The process can then be killed at any
 * moment (kill -9): the journal holds every operation that may have
 * reached the page cache, and which of them a completed sync made
 * durable.
 *
 * pl_reconstruct() then builds, in a new directory, what a disk could hold
 * after a power loss at the moment of the kill, under one of these models:
 *
 *   PL_DROP    only what was synced survives: each file as of its last
 *              fdatasync/fsync - a sync covers the writes made before it
 *              began; one made while it runs counts as unsynced;
 *   PL_TORN    unsynced writes survive in order up to a random point, the
 *              last one cut at a random 512-byte sector boundary;
 *   PL_PAGES   each 4 KiB page touched by unsynced writes independently
 *              keeps its synced or its latest contents (the page cache
 *              writes pages back in no particular order).
 *
 * With dir_entries_need_fsync set, a created, renamed or removed name
 * survives only if its directory was fsynced afterwards (POSIX): a create
 * that was not made durable is gone, a rename not made durable is undone,
 * an unlink not made durable is undone. Without it, names are as at the
 * kill.
 *
 * Files the journal never saw written (LMDB's data.mdb, which LMDB writes
 * itself; the LOCK file) are copied from the live directory as they are:
 * the simulation covers the log and the store's own files, not LMDB's
 * internals (LMDB's commit is an msync + fdatasync of its own).
 *
 * Files that existed before recording started are taken from a copy of
 * the directory made by pl_snapshot() before the process started, as
 * fully durable.
 */
#ifndef TG_TESTS_POWERLOSS_H
#define TG_TESTS_POWERLOSS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

enum pl_mode { PL_DROP = 0, PL_TORN = 1, PL_PAGES = 2 };

typedef struct pl_model {
  int mode;                   /* enum pl_mode */
  int dir_entries_need_fsync; /* 1: names durable only after a dir fsync */
  uint64_t seed;              /* randomness of PL_TORN / PL_PAGES */
} pl_model;

/* What a reconstruction did, for reports. */
typedef struct pl_stats {
  uint64_t ops;               /* journal records read */
  uint64_t unsynced_writes;   /* writes pending at the power loss */
  uint64_t unsynced_kept;     /* of which kept (whole or in part) */
  uint64_t names_undone;      /* creates, renames, unlinks reverted */
  int journal_torn;           /* the journal's last record was incomplete */
  uint64_t oldest_unsynced_wal_write_ns; /* CLOCK_MONOTONIC time of the oldest
                                 write to a WAL segment that no finished
                                 sync covered (0: none) */
  uint64_t oldest_sync_begun_ns; /* when the oldest sync of a WAL segment
                                 still running at the end began (0: none) */
  uint64_t bad_markers;       /* WAL marker frames that claimed as
                                 fdatasynced bytes no finished sync covered
                                 when they were written (the message names
                                 the first); pl_reconstruct still builds
                                 the image */
} pl_stats;

/*
 * Before the process under test starts (in the parent): begin journal_path
 * (created, truncated) with the entries below base_dir as they are now (it
 * may not exist yet), and copy its files to base_copy (the durable state of
 * pre-existing files), unless base_copy is NULL. Returns 0 or -errno.
 */
int pl_snapshot(const char *journal_path, const char *base_dir, const char *base_copy);

/* In the process under test: append to journal_path every operation made
   through the I/O seam from now on. Returns 0 or -errno. */
int pl_record_start(const char *journal_path);

/* How long the recorded process's fdatasyncs and fsyncs of WAL files (any
   regular file below a directory named "wal") took, from the call until
   the journal holds the sync: the moment the simulation counts the data
   durable. The process under test places this in memory it shares with
   the parent and passes it to pl_record_sync_stats() before
   pl_record_start(); the parent reads it after the kill. */
typedef struct pl_sync_stats {
  _Atomic uint64_t count;    /* syncs completed */
  _Atomic uint64_t max_ns;   /* the longest */
  _Atomic uint64_t total_ns; /* all of them */
} pl_sync_stats;

/* In the process under test: accumulate into s (NULL: stop). */
void pl_record_sync_stats(pl_sync_stats *s);

/* Stop recording (restore the real seam). */
void pl_record_stop(void);

/*
 * After the recording process died: build in out_dir (must not exist) the
 * directory live_dir as it could be after a power loss at that moment.
 * base_copy is what pl_snapshot() copied (NULL: the directory did not
 * exist). Returns 0, or -1 with a message in msg.
 */
int pl_reconstruct(const char *journal_path, const char *live_dir,
                   const char *base_copy, const char *out_dir,
                   const pl_model *m, pl_stats *st, char *msg, size_t msglen);

#endif
