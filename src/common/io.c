/* The I/O seam: see io.h. */
#include "common/io.h"
#include "common/path.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
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

static int sys_openat(int dirfd, const char *path, int flags, mode_t mode) {
  return openat(dirfd, path, flags, mode);
}
static int sys_renameat(int od, const char *op, int nd, const char *np) {
  return renameat(od, op, nd, np);
}
static int sys_unlinkat(int dirfd, const char *path, int flags) {
  return unlinkat(dirfd, path, flags);
}
static int sys_mkdirat(int dirfd, const char *path, mode_t mode) {
  return mkdirat(dirfd, path, mode);
}

/* Read, not written, and outside the data directory: plain calls. */
static int sys_boot_id(char *out, size_t n) {
  if (n == 0) return -EINVAL;
  int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  ssize_t r;
  do r = read(fd, out, n - 1);
  while (r < 0 && errno == EINTR);
  int e = errno;
  close(fd);
  if (r <= 0) return r < 0 ? -e : -EIO;
  while (r > 0 && (out[r - 1] == '\n' || out[r - 1] == ' ')) r--;
  out[r] = '\0';
  return r > 0 ? 0 : -EIO;
}

tg__io_ops tg__io = {sys_write,     sys_pwrite,        sys_fdatasync, sys_fsync,
                     sys_fallocate, sys_ftruncate,     sys_sync_file_range,
                     sys_openat,    sys_renameat,      sys_unlinkat,  sys_mkdirat,
                     sys_boot_id};

void tg__io_reset(void) {
  tg__io.write = sys_write;
  tg__io.pwrite = sys_pwrite;
  tg__io.fdatasync = sys_fdatasync;
  tg__io.fsync = sys_fsync;
  tg__io.fallocate = sys_fallocate;
  tg__io.ftruncate = sys_ftruncate;
  tg__io.sync_file_range = sys_sync_file_range;
  tg__io.openat = sys_openat;
  tg__io.renameat = sys_renameat;
  tg__io.unlinkat = sys_unlinkat;
  tg__io.mkdirat = sys_mkdirat;
  tg__io.boot_id = sys_boot_id;
}

int tg__boot_id(char out[TG__BOOT_ID_BYTES]) {
  memset(out, 0, TG__BOOT_ID_BYTES);
  int rc = tg__io.boot_id(out, TG__BOOT_ID_BYTES);
  if (rc) memset(out, 0, TG__BOOT_ID_BYTES);
  out[TG__BOOT_ID_BYTES - 1] = '\0';
  return rc;
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
  int fd = tg__openat(AT_FDCWD, path, O_RDONLY | O_DIRECTORY, 0);
  if (fd < 0) return fd;
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

int tg__openat(int dirfd, const char *path, int flags, mode_t mode) {
  for (;;) {
    int fd = tg__io.openat(dirfd, path, flags | O_CLOEXEC, mode);
    if (fd >= 0) return fd;
    if (errno != EINTR) return failure();
  }
}

int tg__renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath) {
  return tg__io.renameat(olddirfd, oldpath, newdirfd, newpath) == 0 ? 0 : failure();
}

int tg__unlinkat(int dirfd, const char *path, int flags) {
  return tg__io.unlinkat(dirfd, path, flags) == 0 ? 0 : failure();
}

int tg__mkdirat(int dirfd, const char *path, mode_t mode) {
  return tg__io.mkdirat(dirfd, path, mode) == 0 ? 0 : failure();
}

int tg__write_file_atomic(int dirfd, const char *dir_path, const char *name,
                          const void *data, size_t n, mode_t mode) {
  char tmp[4096];
  int fd = -1, rc;
  int w = snprintf(tmp, sizeof tmp, "%s.tmp", name);
  if (w < 0 || (size_t)w >= sizeof tmp) return -ENAMETOOLONG;
  /* A leftover temporary (or a link planted there) is removed, never
     followed: O_EXCL | O_NOFOLLOW then refuses anything that reappears. */
  rc = tg__unlinkat(dirfd, tmp, 0);
  if (rc && rc != -ENOENT) return rc;
  fd = tg__openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
  if (fd < 0) return fd;
  if ((rc = tg__io_write_all(fd, data, n)) || (rc = tg__fsync(fd))) goto fail;
  close(fd);
  fd = -1;
  if ((rc = tg__renameat(dirfd, tmp, dirfd, name))) goto fail;
  if (dirfd == AT_FDCWD) {
    char dir[4096];
    const char *base;
    if (dir_path) return tg__fsync_dir(dir_path);
    /* name is a path: fsync its parent. */
    if ((rc = tg__split_path(name, dir, sizeof dir, &base))) return rc;
    return tg__fsync_dir(dir);
  }
  return tg__fsync(dirfd);
fail:
  if (fd >= 0) close(fd);
  tg__unlinkat(dirfd, tmp, 0);
  return rc;
}
