/* Path joining: see path.h. */
#include "common/path.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
