/*
 * Clock conversion, async-signal-safe formatting and the atomic file
 * replacement used by the trace, black-box and metrics writers.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "trace/trace_internal.h"

/* ---- clock ---------------------------------------------------------------- */

static uint64_t ts_ns(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t tg__mono_ns(void) { return ts_ns(CLOCK_MONOTONIC); }
uint64_t tg__real_ns(void) { return ts_ns(CLOCK_REALTIME); }
uint64_t tg__ticks_fallback(void) { return ts_ns(CLOCK_MONOTONIC); }

static tg__clock_map anchor; /* written once by the constructor */

__attribute__((constructor)) static void clock_anchor(void) {
  anchor.mono0 = tg__mono_ns();
  anchor.tick0 = tg__ticks();
  anchor.real0 = tg__real_ns();
  anchor.ns_per_tick = 1.0;
}

/* Async-signal-safe: clock_gettime() and arithmetic only. */
void tg__clock_map_get(tg__clock_map *m) {
  *m = anchor;
#if defined(__x86_64__) || defined(__i386__)
  /* 10 ms between the two points bounds the slope error by the ~100 ns
     jitter of one point: 1e-5, i.e. 10 us per second of trace. */
  uint64_t mono1, tick1;
  for (;;) {
    mono1 = tg__mono_ns();
    tick1 = tg__ticks();
    if (mono1 - anchor.mono0 >= 10000000u) break;
  }
  if (tick1 > anchor.tick0)
    m->ns_per_tick = (double)(mono1 - anchor.mono0) / (double)(tick1 - anchor.tick0);
#endif
}

/* ---- async-signal-safe output ---------------------------------------------- */

int tg__write_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n > 0) {
    ssize_t w = write(fd, c, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (w == 0) return -EIO;
    c += w;
    n -= (size_t)w;
  }
  return 0;
}

void tg__fb_init(tg__fdbuf *b, int fd) {
  b->fd = fd;
  b->err = 0;
  b->n = 0;
}

int tg__fb_flush(tg__fdbuf *b) {
  if (b->n > 0 && b->err == 0) b->err = tg__write_all(b->fd, b->buf, b->n);
  b->n = 0;
  return b->err;
}

static void fb_putc(tg__fdbuf *b, char c) {
  if (b->n == sizeof b->buf) tg__fb_flush(b);
  b->buf[b->n++] = c;
}

void tg__fb_str(tg__fdbuf *b, const char *s) {
  while (*s) fb_putc(b, *s++);
}

void tg__fb_json_str(tg__fdbuf *b, const char *s) {
  static const char hex[] = "0123456789abcdef";
  fb_putc(b, '"');
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      fb_putc(b, '\\');
      fb_putc(b, (char)c);
    } else if (c < 0x20) {
      tg__fb_str(b, "\\u00");
      fb_putc(b, hex[c >> 4]);
      fb_putc(b, hex[c & 15]);
    } else {
      fb_putc(b, (char)c);
    }
  }
  fb_putc(b, '"');
}

void tg__fb_u64(tg__fdbuf *b, uint64_t v) {
  char tmp[24];
  int i = 0;
  do {
    tmp[i++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (i > 0) fb_putc(b, tmp[--i]);
}

void tg__fb_i64(tg__fdbuf *b, int64_t v) {
  if (v < 0) {
    fb_putc(b, '-');
    tg__fb_u64(b, (uint64_t)0 - (uint64_t)v);
  } else {
    tg__fb_u64(b, (uint64_t)v);
  }
}

/* ---- stdio JSON ---------------------------------------------------------- */

void tg__json_fputs(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      fprintf(f, "\\%c", c);
    else if (c < 0x20)
      fprintf(f, "\\u%04x", c);
    else
      fputc(c, f);
  }
  fputc('"', f);
}

/* ---- fsync seam and atomic replacement ------------------------------------ */

int (*tg__trace_fsync_hook)(int fd) = NULL;

int tg__trace_fsync(int fd) {
  if (tg__trace_fsync_hook) return tg__trace_fsync_hook(fd);
  return fsync(fd) == 0 ? 0 : -errno;
}

static int fsync_parent_dir(const char *path) {
  char dir[4096];
  const char *slash = strrchr(path, '/');
  if (slash == NULL) {
    strcpy(dir, ".");
  } else if (slash == path) {
    strcpy(dir, "/");
  } else {
    size_t n = (size_t)(slash - path);
    if (n >= sizeof dir) return -ENAMETOOLONG;
    memcpy(dir, path, n);
    dir[n] = '\0';
  }
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  int rc = tg__trace_fsync(fd);
  close(fd);
  return rc;
}

int tg__atomic_file_write(const char *path, int (*fill)(FILE *f, void *arg), void *arg) {
  char tmp[4096];
  int fd = -1, rc = 0, created = 0;
  FILE *f = NULL;

  if (path == NULL || *path == '\0') return TG_EINVAL;
  int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  if (n < 0 || (size_t)n >= sizeof tmp) return -ENAMETOOLONG;

  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    rc = -errno;
    goto fail;
  }
  created = 1;
  f = fdopen(fd, "w");
  if (f == NULL) {
    rc = -errno;
    goto fail;
  }
  fd = -1; /* owned by f now */
  rc = fill(f, arg);
  if (rc != 0) goto fail;
  if (fflush(f) != 0) {
    rc = -errno;
    goto fail;
  }
  rc = tg__trace_fsync(fileno(f));
  if (rc != 0) goto fail;
  if (fclose(f) != 0) {
    f = NULL;
    rc = -errno;
    goto fail;
  }
  f = NULL;
  if (rename(tmp, path) != 0) {
    rc = -errno;
    goto fail;
  }
  created = 0;
  return fsync_parent_dir(path);

fail:
  if (f) fclose(f);
  if (fd >= 0) close(fd);
  if (created) unlink(tmp);
  return rc;
}
