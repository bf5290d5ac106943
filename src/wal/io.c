/* The I/O seam: see io.h. */
#include "wal/io.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

static ssize_t sys_write(int fd, const void *buf, size_t n) { return write(fd, buf, n); }
static ssize_t sys_pwrite(int fd, const void *buf, size_t n, off_t off) {
  return pwrite(fd, buf, n, off);
}
static int sys_fdatasync(int fd) { return fdatasync(fd); }
static int sys_fsync(int fd) { return fsync(fd); }
static int sys_fallocate(int fd, int mode, off_t off, off_t len) {
  return fallocate(fd, mode, off, len);
}
static int sys_ftruncate(int fd, off_t len) { return ftruncate(fd, len); }
static int sys_sync_file_range(int fd, off_t off, off_t len, unsigned flags) {
  return sync_file_range(fd, off, len, flags);
}

tg__io_ops tg__io = {sys_write, sys_pwrite, sys_fdatasync, sys_fsync, sys_fallocate,
                     sys_ftruncate, sys_sync_file_range};

void tg__io_reset(void) {
  tg__io.write = sys_write;
  tg__io.pwrite = sys_pwrite;
  tg__io.fdatasync = sys_fdatasync;
  tg__io.fsync = sys_fsync;
  tg__io.fallocate = sys_fallocate;
  tg__io.ftruncate = sys_ftruncate;
  tg__io.sync_file_range = sys_sync_file_range;
}

int tg__start_writeback(int fd, off_t off, off_t len) {
  if (tg__io.sync_file_range(fd, off, len, SYNC_FILE_RANGE_WRITE) == 0) return 0;
  return -errno;
}

/* -errno of a call that failed; a failure that left errno at 0 is still a
   failure (-EIO), never a success. */
static int failure(void) { return errno ? -errno : -EIO; }

int tg__io_write_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t r = tg__io.write(fd, p, n);
    if (r < 0) {
      if (errno == EINTR) continue;
      return failure();
    }
    if (r == 0) return -EIO; /* no progress: never spin forever */
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

int tg__pwrite_all(int fd, const void *buf, size_t n, off_t off) {
  const char *p = buf;
  while (n > 0) {
    ssize_t r = tg__io.pwrite(fd, p, n, off);
    if (r < 0) {
      if (errno == EINTR) continue;
      return failure();
    }
    if (r == 0) return -EIO;
    p += r;
    n -= (size_t)r;
    off += r;
  }
  return 0;
}

int tg__fdatasync(int fd) {
  if (tg__io.fdatasync(fd) == 0) return 0;
  return errno == EINTR ? -EIO : failure();
}

int tg__fsync(int fd) {
  if (tg__io.fsync(fd) == 0) return 0;
  return errno == EINTR ? -EIO : -errno;
}

int tg__fsync_dir(const char *path) {
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  int r = tg__fsync(fd);
  close(fd);
  return r;
}

int tg__fallocate(int fd, off_t off, off_t len) {
  for (;;) {
    if (tg__io.fallocate(fd, 0, off, len) == 0) return 0;
    if (errno != EINTR) return -errno;
  }
}

int tg__ftruncate(int fd, off_t len) {
  for (;;) {
    if (tg__io.ftruncate(fd, len) == 0) return 0;
    if (errno != EINTR) return -errno;
  }
}
