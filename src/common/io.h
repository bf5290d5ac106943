/*
 * The one I/O seam of the library: every file creation, write, sync,
 * rename, unlink, truncation and preallocation done by the WAL, the store
 * (its identity file, checkpoint directory and repair) and the trace dumps
 * goes through tg__io, a table of function pointers that tests replace to
 * inject short writes, EINTR, ENOSPC, EIO and fdatasync failures, to count
 * fdatasyncs, and to simulate a power loss (drop what was never synced)
 * (SQLite's SimulateIOError, libuv's uv_replace_allocator). Reads are not
 * in the seam: a test damages files directly.
 *
 * The table is process-global and read without a lock. Each entry is an
 * atomic pointer (a plain load on x86-64, beside a system call), so a test
 * may replace one while a store's threads run: a call already made keeps
 * the entry it loaded. Copying the whole table is not atomic; do that only
 * while no store or WAL is open. tg__io_reset() restores the real system
 * calls. The defaults are plain system calls, so the helpers stay
 * async-signal-safe (the black box's crash dump uses them).
 *
 * All helpers return 0 (or a descriptor) on success and -errno on failure.
 */
#ifndef TG_COMMON_IO_H
#define TG_COMMON_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct tg__io_ops {
  ssize_t (*_Atomic write)(int fd, const void *buf, size_t n);              /* write(2) */
  ssize_t (*_Atomic pwrite)(int fd, const void *buf, size_t n, off_t off);  /* pwrite(2) */
  int (*_Atomic fdatasync)(int fd);                                         /* fdatasync(2) */
  int (*_Atomic fsync)(int fd);                                             /* fsync(2), files and directories */
  int (*_Atomic fallocate)(int fd, int mode, off_t off, off_t len);         /* fallocate(2) */
  int (*_Atomic ftruncate)(int fd, off_t len);                              /* ftruncate(2) */
  int (*_Atomic sync_file_range)(int fd, off_t off, off_t len, unsigned flags); /* sync_file_range(2) */
  int (*_Atomic openat)(int dirfd, const char *path, int flags, mode_t mode); /* openat(2) */
  int (*_Atomic renameat)(int olddirfd, const char *oldpath, int newdirfd,
                  const char *newpath);                             /* renameat(2) */
  int (*_Atomic unlinkat)(int dirfd, const char *path, int flags);          /* unlinkat(2) */
  int (*_Atomic mkdirat)(int dirfd, const char *path, mode_t mode);         /* mkdirat(2) */
  int (*_Atomic boot_id)(char *out, size_t n); /* this boot's id into out (NUL-
                                          terminated): 0 or -errno. Default:
                                          /proc/sys/kernel/random/boot_id.
                                          Tests replace it to simulate a
                                          reboot. */
} tg__io_ops;

extern tg__io_ops tg__io;

/* Bytes of a boot id buffer: the kernel's 36-character UUID, its NUL,
   zero padding. */
#define TG__BOOT_ID_BYTES 40

/* The id of the running boot (tg__io.boot_id) into out, zero-padded to
   TG__BOOT_ID_BYTES, so two ids compare with memcmp. It tells whether the
   page cache a file was written through is still the one in memory: same
   id, then nothing written since has been lost to a power loss or a
   reboot. Returns 0 or -errno (no /proc: callers must then assume
   another boot). */
int tg__boot_id(char out[TG__BOOT_ID_BYTES]);

/* Put the real system calls back into tg__io. */
void tg__io_reset(void);

/* Write all n bytes at the current position, completing short writes and
   retrying EINTR. A write that makes no progress (returns 0) gives -EIO. */
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

/* openat(dirfd, path, flags | O_CLOEXEC, mode), retrying EINTR: the new
   descriptor or -errno. dirfd may be AT_FDCWD. */
int tg__openat(int dirfd, const char *path, int flags, mode_t mode);

/* renameat, unlinkat and mkdirat: 0 or -errno. None of them is durable
   until the directory is fsynced (tg__fsync_dir / tg__fsync on its fd). */
int tg__renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath);
int tg__unlinkat(int dirfd, const char *path, int flags);
int tg__mkdirat(int dirfd, const char *path, mode_t mode);

/*
 * Replace file `name` in the directory open as dirfd (AT_FDCWD: name is a
 * path) with the n bytes at data, atomically: write "<name>.tmp" (created
 * with O_EXCL after removing a leftover, O_NOFOLLOW, the given mode), fsync
 * it, rename it over name, fsync the directory. A crash at any point leaves
 * either the old file or the new one, never a mix; a symbolic link at
 * either name is replaced, never followed. dir_path names the directory for
 * its fsync when dirfd is AT_FDCWD (else may be NULL).
 */
int tg__write_file_atomic(int dirfd, const char *dir_path, const char *name,
                          const void *data, size_t n, mode_t mode);

#endif
