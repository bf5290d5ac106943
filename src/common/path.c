/* Path joining: see path.h. */
#include "common/path.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tokengraph/errors.h"

int tg__path_join(char *out, size_t n, const char *dir, const char *name) {
  int r = snprintf(out, n, "%s/%s", dir, name);
  if (r < 0 || (size_t)r >= n) {
    if (n) out[0] = '\0';
    return -ENAMETOOLONG;
  }
  return 0;
}

char *tg__path_join_alloc(const char *dir, const char *name) {
  size_t ld = strlen(dir), ln = strlen(name);
  char *p = malloc(ld + ln + 2);
  if (!p) return NULL;
  memcpy(p, dir, ld);
  p[ld] = '/';
  memcpy(p + ld + 1, name, ln + 1);
  return p;
}

int tg__split_path(const char *path, char *dir, size_t dirlen, const char **base) {
  const char *slash = strrchr(path, '/');
  const char *b = slash ? slash + 1 : path;
  if (*b == '\0' || strcmp(b, ".") == 0 || strcmp(b, "..") == 0) return TG_EINVAL;
  size_t n = slash == NULL ? 0 : slash == path ? 1 : (size_t)(slash - path);
  if (n + 2 > dirlen) return -ENAMETOOLONG;
  if (n == 0) dir[n++] = '.';
  else memcpy(dir, path, n);
  dir[n] = '\0';
  *base = b;
  return 0;
}

int tg__fd_path(char *out, size_t n, int fd) {
  struct stat a, b;
  int r = snprintf(out, n, "/proc/self/fd/%d", fd);
  if (r < 0 || (size_t)r >= n) {
    if (n) out[0] = '\0';
    return -ENAMETOOLONG;
  }
  if (fstat(fd, &a)) return -errno;
  /* Without /proc the path names nothing, or (a chroot with a stray /proc
     tree) something else: only the same inode will do. */
  if (stat(out, &b) || a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
    out[0] = '\0';
    return -ENOENT;
  }
  return 0;
}
