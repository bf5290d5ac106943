/*
 * Clock conversion, async-signal-safe formatting and the atomic file
 * replacement used by the trace, black-box and metrics writers. Every
 * file operation goes through the library's I/O seam (common/io.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/io.h"
#include "common/platform.h"
#include "trace/trace_internal.h"

/* ---- clock ---------------------------------------------------------------- */

uint64_t tg__real_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
uint64_t tg__ticks_fallback(void) { return tg__now_ns(); }

static tg__clock_map anchor; /* written once by the constructor */

__attribute__((constructor)) static void clock_anchor(void) {
  anchor.mono0 = tg__now_ns();
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
    mono1 = tg__now_ns();
    tick1 = tg__ticks();
    if (mono1 - anchor.mono0 >= 10000000u) break;
  }
  if (tick1 > anchor.tick0)
    m->ns_per_tick = (double)(mono1 - anchor.mono0) / (double)(tick1 - anchor.tick0);
#endif
}

/* ---- async-signal-safe output ---------------------------------------------- */

void tg__fb_init(tg__fdbuf *b, int fd) {
  b->fd = fd;
  b->err = 0;
  b->n = 0;
}

int tg__fb_flush(tg__fdbuf *b) {
  if (b->n > 0 && b->err == 0) b->err = tg__io_write_all(b->fd, b->buf, b->n);
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

/* The one JSON string escaper of the module, for both sinks below: the
   escape sequence for c into out (NUL-terminated), or 0 when c stands for
   itself. Async-signal-safe. */
static int json_escape(unsigned char c, char out[7]) {
  static const char hex[] = "0123456789abcdef";
  if (c == '"' || c == '\\') {
    out[0] = '\\';
    out[1] = (char)c;
    out[2] = '\0';
    return 1;
  }
  if (c >= 0x20) return 0;
  memcpy(out, "\\u00", 4);
  out[4] = hex[c >> 4];
  out[5] = hex[c & 15];
  out[6] = '\0';
  return 1;
}

void tg__fb_json_str(tg__fdbuf *b, const char *s) {
  char esc[7];
  fb_putc(b, '"');
  for (; *s; s++) {
    if (json_escape((unsigned char)*s, esc))
      tg__fb_str(b, esc);
    else
      fb_putc(b, *s);
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
  char esc[7];
  fputc('"', f);
  for (; *s; s++) {
    if (json_escape((unsigned char)*s, esc))
      fputs(esc, f);
    else
      fputc(*s, f);
  }
  fputc('"', f);
}

/* ---- atomic replacement ------------------------------------------------- */

int tg__tmp_name(char *out, size_t n, const char *base, long pid) {
  char digits[24];
  int k = 0;
  unsigned long v = (unsigned long)pid;
  do {
    digits[k++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  size_t bl = strlen(base);
  if (bl + 5 + (size_t)k + 1 > n) return -ENAMETOOLONG;
  memcpy(out, base, bl);
  memcpy(out + bl, ".tmp.", 5);
  bl += 5;
  while (k > 0) out[bl++] = digits[--k];
  out[bl] = '\0';
  return 0;
}

int tg__atomic_file_write(const char *path, mode_t mode, int (*fill)(FILE *f, void *arg),
                          void *arg) {
  char dir[4096], tmp[512];
  const char *base = NULL;
  int dirfd = -1, fd = -1, rc = 0, created = 0;
  FILE *f = NULL;

  if (path == NULL || *path == '\0') return TG_EINVAL;
  if ((rc = tg__split_path(path, dir, sizeof dir, &base))) return rc;
  if ((rc = tg__tmp_name(tmp, sizeof tmp, base, (long)getpid()))) return rc;
  dirfd = tg__openat(AT_FDCWD, dir, O_RDONLY | O_DIRECTORY, 0);
  if (dirfd < 0) return dirfd;
  /* A leftover temporary, or a link planted at its name, is removed and
     never followed: O_EXCL | O_NOFOLLOW refuse anything that reappears. */
  rc = tg__unlinkat(dirfd, tmp, 0);
  if (rc && rc != -ENOENT) goto cleanup;
  fd = tg__openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
  if (fd < 0) {
    rc = fd;
    goto cleanup;
  }
  created = 1;
  f = fdopen(fd, "w");
  if (f == NULL) {
    rc = -errno;
    goto cleanup;
  }
  fd = -1; /* owned by f now */
  rc = fill(f, arg);
  if (rc != 0) goto cleanup;
  if (fflush(f) != 0) {
    rc = -errno;
    goto cleanup;
  }
  rc = tg__fsync(fileno(f));
  if (rc != 0) goto cleanup;
  if (fclose(f) != 0) {
    f = NULL;
    rc = -errno;
    goto cleanup;
  }
  f = NULL;
  /* rename replaces whatever is at `base`, a symbolic link included,
     without following it. */
  if ((rc = tg__renameat(dirfd, tmp, dirfd, base))) goto cleanup;
  created = 0;
  rc = tg__fsync(dirfd);

cleanup:
  if (f) fclose(f);
  if (fd >= 0) close(fd);
  if (created) tg__unlinkat(dirfd, tmp, 0);
  close(dirfd);
  return rc;
}

int tg__stream_write(FILE *f, int (*fill)(FILE *f, void *arg), void *arg) {
  if (f == NULL) return TG_EINVAL;
  int rc = fill(f, arg);
  if (fflush(f) != 0 && rc == 0) rc = -errno;
  return rc;
}
