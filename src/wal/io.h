/*
 * The I/O seam of the WAL (and, later, of the store): every write, sync and
 * preallocation goes through tg__io, a table of function pointers that
 * tests replace to inject short writes, EINTR, ENOSPC, EIO and fdatasync
 * failures, and to count fdatasyncs (SQLite's SimulateIOError, libuv's
 * uv_replace_allocator).
 *
 * The table is process-global and read without a lock: replace entries only
 * while no WAL is open. tg__io_reset() restores the real system calls.
 *
 * All helpers return 0 on success and -errno on failure.
 */
#ifndef TG_WAL_IO_H
#define TG_WAL_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct tg__io_ops {
  ssize_t (*write)(int fd, const void *buf, size_t n);              /* write(2) */
  ssize_t (*pwrite)(int fd, const void *buf, size_t n, off_t off);  /* pwrite(2) */
  int (*fdatasync)(int fd);                                         /* fdatasync(2) */
  int (*fsync)(int fd);                                             /* fsync(2), files and directories */
  int (*fallocate)(int fd, int mode, off_t off, off_t len);         /* fallocate(2) */
  int (*ftruncate)(int fd, off_t len);                              /* ftruncate(2) */
  int (*sync_file_range)(int fd, off_t off, off_t len, unsigned flags); /* sync_file_range(2) */
} tg__io_ops;

extern tg__io_ops tg__io;

/* Put the real system calls back into tg__io. */
void tg__io_reset(void);

/* Write all n bytes at the current position, completing short writes and
   retrying EINTR. A write that makes no progress (returns 0) gives -EIO.
   Named tg__io_write_all because src/trace/trace_util.c already defines a
   tg__write_all() (the same loop calling write(2) directly, for its
   async-signal-safe crash dump); this one goes through the seam. */
int tg__io_write_all(int fd, const void *buf, size_t n);

/* The same at offset off (pwrite). */
int tg__pwrite_all(int fd, const void *buf, size_t n, off_t off);

/* fdatasync(fd). Not retried on any error: after a failed fsync the kernel
   may have dropped the dirty pages, so a retry could report a false success
   (PostgreSQL "fsyncgate", 2018). EINTR is reported as -EIO for that reason. */
int tg__fdatasync(int fd);

/* fsync(fd), same rules. */
int tg__fsync(int fd);

/* Open the directory at path, fsync it, close it: makes creates, renames
   and unlinks in it durable. */
int tg__fsync_dir(const char *path);

/* Allocate [off, off+len) (mode 0: reads as zeros, file size grows).
   -EOPNOTSUPP when the file system cannot preallocate; callers may treat
   that as "no preallocation". */
int tg__fallocate(int fd, off_t off, off_t len);

/* Start writeback of [off, off+len) without waiting (SYNC_FILE_RANGE_WRITE).
   No durability promise at all: it only spreads the disk work so that the
   next fdatasync has less to do (RocksDB's bytes_per_sync). */
int tg__start_writeback(int fd, off_t off, off_t len);

/* ftruncate(fd, len), retrying EINTR. */
int tg__ftruncate(int fd, off_t len);

#endif
