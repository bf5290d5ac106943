/*
 * INI configuration loading (libinih): the store reads the file; the
 * guardian only validates the [guardian] values it will enforce.
 *
 * Keys are described by one table; each value is parsed and range-checked
 * into a copy of the caller's configuration, which is copied back only when
 * the whole file is valid, so a bad file changes nothing. Errors name the
 * file, the line and the key. inih does not tell its handler the line
 * number in the Debian build, so we feed it lines through our own reader and
 * count them.
 */
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "guardian/guardian.h" /* tg__guardian_validate */
#include "tokengraph/tokengraph.h"

enum key_type { K_U64, K_U32, K_FRACTION, K_BOOL, K_LEVEL, K_BACKPRESSURE };

typedef struct key_spec {
  const char *section;
  const char *name;
  enum key_type type;
  size_t off;       /* offset in tg_store_config */
  double min, max;  /* inclusive range for numbers */
  int min_open;     /* 1: min itself is not allowed */
} key_spec;

#define G(field) offsetof(tg_store_config, guardian.field)
static const key_spec keys[] = {
  {"guardian", "max_tokens", K_U64, G(max_tokens), 0, 4294967295.0, 0},
  {"guardian", "max_connections", K_U64, G(max_connections), 0, 4294967295.0, 0},
  {"guardian", "max_memory_bytes", K_U64, G(max_memory_bytes), 0, 4611686018427387904.0, 0},
  {"guardian", "memory_threshold", K_FRACTION, G(memory_threshold), 0, 1, 1},
  {"guardian", "cleanup_margin", K_FRACTION, G(cleanup_margin), 0, 1, 0},
  {"guardian", "max_degree", K_U32, G(max_degree), 0, 4294967295.0, 0},
  {"guardian", "cleanup", K_BOOL, G(cleanup), 0, 1, 0},
/* The [wal] limits are tg_wal_open()'s, from tokengraph/wal.h, so a value
   is accepted or refused alike by both. */
#define W(field) offsetof(tg_store_config, wal.field)
  {"wal", "level", K_LEVEL, W(level), 0, 0, 0},
  {"wal", "sync_interval_ms", K_U32, W(sync_interval_ms), TG_WAL_SYNC_INTERVAL_MIN_MS,
   TG_WAL_SYNC_INTERVAL_MAX_MS, 0},
  {"wal", "segment_bytes", K_U64, W(segment_bytes), TG_WAL_SEGMENT_MIN,
   (double)TG_WAL_SEGMENT_MAX, 0},
  {"wal", "ring_slots", K_U32, W(ring_slots), TG_WAL_RING_MIN, TG_WAL_RING_MAX, 0},
  {"wal", "linger_us", K_U32, W(linger_us), 0, TG_WAL_LINGER_MAX_US, 0},
  {"wal", "backpressure", K_BACKPRESSURE, W(nonblocking), 0, 0, 0},
  /* Any size: the API sets no limit either (past the log's size it only
     means "never automatically"). */
  {"wal", "checkpoint_bytes", K_U64, offsetof(tg_store_config, checkpoint_bytes), 0,
   18446744073709551615.0, 0},
  /* At most max_memory_bytes, which tg_store_open() checks: the file may
     set the two in either order. */
  {"store", "prefault_bytes", K_U64, offsetof(tg_store_config, prefault_bytes), 0,
   4611686018427387904.0, 0},
};
#undef W
#undef G
#define NKEYS (sizeof keys / sizeof keys[0])

typedef struct load_ctx {
  tg_store_config cfg;   /* the copy being filled */
  FILE *f;
  const char *path;
  int line;              /* line last handed to inih */
  int set_line[NKEYS];   /* where each key was set, 0 = not set */
  char *err;
  size_t errlen;
  int failed;
  const char *app_section;   /* the application's own section, or NULL */
  tg_config_key_cb app_cb;
  void *app_arg;
} load_ctx;

__attribute__((format(printf, 2, 3)))
static void fail(load_ctx *c, const char *fmt, ...) {
  if (c->failed) return; /* keep the first error */
  c->failed = 1;
  if (!c->err || !c->errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err, c->errlen, fmt, ap);
  va_end(ap);
}

/* inih's reader: one line per call into its buffer. A line that does not
   fit is an error, never split: a split line's tail would be parsed as a
   line of its own (a long comment ending in "max_tokens = 7" would set
   max_tokens). */
static char *reader(char *buf, int n, void *stream) {
  load_ctx *c = stream;
  if (c->failed) return NULL;
  char *r = fgets(buf, n, c->f);
  if (!r) return NULL;
  c->line++;
  size_t l = strlen(r);
  if (l == (size_t)n - 1 && r[l - 1] != '\n' && !feof(c->f)) {
    fail(c, "%s:%d: line too long (at most %d bytes)", c->path, c->line, n - 2);
    return NULL;
  }
  return r;
}

static int parse_u64(const char *v, uint64_t *out) {
  if (*v < '0' || *v > '9') return -1; /* no sign, no space, not empty */
  errno = 0;
  char *end;
  unsigned long long x = strtoull(v, &end, 10);
  if (errno || *end) return -1;
  *out = x;
  return 0;
}

static int handler(void *user, const char *section, const char *name,
                   const char *value) {
  load_ctx *c = user;
  if (c->failed) return 0;
  if (c->app_section && !strcmp(section, c->app_section)) {
    const char *why = c->app_cb(c->app_arg, name, value);
    if (why) {
      fail(c, "%s:%d: key '%s': %s", c->path, c->line, name, why);
      return 0;
    }
    return 1;
  }
  const key_spec *k = NULL;
  size_t ki = 0;
  int known_section = 0;
  for (size_t i = 0; i < NKEYS; i++) {
    if (strcmp(keys[i].section, section)) continue;
    known_section = 1;
    if (!strcmp(keys[i].name, name)) {
      k = &keys[i];
      ki = i;
      break;
    }
  }
  if (!known_section) {
    fail(c, "%s:%d: key '%s': unknown section [%s]", c->path, c->line, name,
         section);
    return 0;
  }
  if (!k) {
    fail(c, "%s:%d: key '%s': unknown key in [%s]", c->path, c->line, name,
         section);
    return 0;
  }
  if (c->set_line[ki]) {
    fail(c, "%s:%d: key '%s': already set on line %d", c->path, c->line, name,
         c->set_line[ki]);
    return 0;
  }
  unsigned char *dst = (unsigned char *)&c->cfg + k->off;
  switch (k->type) {
  case K_U64:
  case K_U32: {
    uint64_t x;
    if (parse_u64(value, &x)) {
      fail(c, "%s:%d: key '%s': '%s' is not a non-negative integer", c->path,
           c->line, name, value);
      return 0;
    }
    /* Compared as integers: as a double, 2^62 + 1 would round to the
       limit 2^62 and pass where the API refuses it. A max of 2^64 (the
       double nearest UINT64_MAX) means no limit. */
    uint64_t lo = (uint64_t)k->min;
    uint64_t hi = k->max >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)k->max;
    if (x < lo || x > hi) {
      fail(c, "%s:%d: key '%s': %s is out of range [%" PRIu64 ", %" PRIu64 "]",
           c->path, c->line, name, value, lo, hi);
      return 0;
    }
    if (!strcmp(k->name, "ring_slots") && (x & (x - 1))) {
      fail(c, "%s:%d: key '%s': %s is not a power of two", c->path, c->line,
           name, value);
      return 0;
    }
    if (!strcmp(k->name, "segment_bytes") && x % TG_WAL_SEGMENT_ALIGN) {
      fail(c, "%s:%d: key '%s': %s is not a multiple of %u", c->path,
           c->line, name, value, TG_WAL_SEGMENT_ALIGN);
      return 0;
    }
    if (k->type == K_U64) {
      memcpy(dst, &x, sizeof x);
    } else {
      uint32_t y = (uint32_t)x;
      memcpy(dst, &y, sizeof y);
    }
    break;
  }
  case K_FRACTION: {
    char *end;
    errno = 0;
    double d = strtod(value, &end);
    /* ERANGE with a non-zero result is a subnormal, a value the API takes
       as it is; with zero it underflowed and is refused. */
    int range_ok = errno == ERANGE && d != 0.0;
    if ((errno && !range_ok) || end == value || *end || !isfinite(d)) {
      fail(c, "%s:%d: key '%s': '%s' is not a number", c->path, c->line, name,
           value);
      return 0;
    }
    if (d < k->min || d > k->max || (k->min_open && d == k->min)) {
      fail(c, "%s:%d: key '%s': %s is out of range %s%g, %g]", c->path,
           c->line, name, value, k->min_open ? "(" : "[", k->min, k->max);
      return 0;
    }
    memcpy(dst, &d, sizeof d);
    break;
  }
  case K_LEVEL:
  case K_BACKPRESSURE: {
    /* In enum tg_wal_level order. "replicated" also needs the store's
       nats_url and repl_name, set by the program (tg_store_open checks). */
    static const char *const levels[] = {"strict", "balanced", "relaxed", "replicated", NULL};
    static const char *const modes[] = {"block", "error", NULL};
    const char *const *names = k->type == K_LEVEL ? levels : modes;
    int v = -1;
    for (int i = 0; names[i]; i++)
      if (!strcasecmp(value, names[i])) v = i;
    if (v < 0) {
      fail(c, "%s:%d: key '%s': '%s' is not one of %s", c->path, c->line, name,
           value, k->type == K_LEVEL ? "strict, balanced, relaxed, replicated" : "block, error");
      return 0;
    }
    memcpy(dst, &v, sizeof v);
    break;
  }
  case K_BOOL: {
    int b;
    if (!strcasecmp(value, "true") || !strcasecmp(value, "yes") ||
        !strcmp(value, "1") || !strcasecmp(value, "on"))
      b = 1;
    else if (!strcasecmp(value, "false") || !strcasecmp(value, "no") ||
             !strcmp(value, "0") || !strcasecmp(value, "off"))
      b = 0;
    else {
      fail(c, "%s:%d: key '%s': '%s' is not a boolean (true/false)", c->path,
           c->line, name, value);
      return 0;
    }
    memcpy(dst, &b, sizeof b);
    break;
  }
  }
  c->set_line[ki] = c->line;
  return 1;
}

static int line_of(const load_ctx *c, const char *name) {
  for (size_t i = 0; i < NKEYS; i++)
    if (!strcmp(keys[i].name, name)) return c->set_line[i];
  return 0;
}

int tg_config_load(tg_store_config *cfg, const char *path, char *errbuf,
                   size_t errlen) {
  return tg_config_load_app(cfg, path, NULL, NULL, NULL, errbuf, errlen);
}

int tg_config_load_app(tg_store_config *cfg, const char *path,
                       const char *app_section, tg_config_key_cb app_cb,
                       void *app_arg, char *errbuf, size_t errlen) {
  if (app_section && !app_cb) return TG_EINVAL;
  load_ctx *c = calloc(1, sizeof *c);
  if (!c) return TG_ENOMEM;
  int rc = 0;
  c->app_section = app_section;
  c->app_cb = app_cb;
  c->app_arg = app_arg;
  c->cfg = *cfg;
  c->path = path;
  c->err = errbuf;
  c->errlen = errlen;
  if (errbuf && errlen) errbuf[0] = 0;
  /* O_NONBLOCK: a FIFO at the path must not block the open; anything but
     a regular file is refused before it is read. */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  struct stat st;
  if (fd < 0 || fstat(fd, &st)) {
    rc = -errno;
    fail(c, "%s: cannot read: %s", path, strerror(errno));
    if (fd >= 0) close(fd);
    goto cleanup;
  }
  if (!S_ISREG(st.st_mode)) {
    rc = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
    fail(c, "%s: cannot read: %s", path,
         S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file");
    close(fd);
    goto cleanup;
  }
  c->f = fdopen(fd, "r");
  if (!c->f) {
    rc = -errno;
    close(fd);
    fail(c, "%s: cannot read: %s", path, strerror(-rc));
    goto cleanup;
  }
  int r = ini_parse_stream(reader, c, handler, c);
  if (r > 0 && !c->failed)
    fail(c, "%s:%d: syntax error (expected 'key = value' or '[section]')",
         path, r);
  if (r < 0 && !c->failed) fail(c, "%s: cannot parse (out of memory)", path);
  if (ferror(c->f) && !c->failed)
    fail(c, "%s:%d: read error", path, c->line);
  if (!c->failed) {
    const char *why = NULL;
    if (tg__guardian_validate(&c->cfg.guardian, &why)) {
      /* Only cross-key rules can fail here; point at the later key. */
      int l1 = line_of(c, "cleanup_margin"), l2 = line_of(c, "memory_threshold");
      fail(c, "%s:%d: key '%s': %s", path, l1 > l2 ? l1 : l2,
           l1 > l2 ? "cleanup_margin" : "memory_threshold", why);
    }
  }
  if (!c->failed && c->cfg.prefault_bytes > c->cfg.guardian.max_memory_bytes) {
    /* tg_store_open()'s rule, checked here so that a file accepts what
       the API accepts; the later of the two keys is named. */
    int l1 = line_of(c, "prefault_bytes"), l2 = line_of(c, "max_memory_bytes");
    fail(c, "%s:%d: key '%s': prefault_bytes (%" PRIu64 ") is more than max_memory_bytes (%" PRIu64 ")",
         path, l1 > l2 ? l1 : l2, l1 > l2 ? "prefault_bytes" : "max_memory_bytes",
         c->cfg.prefault_bytes, c->cfg.guardian.max_memory_bytes);
  }
  if (c->failed) {
    if (!rc) rc = TG_ECONFIG;
    goto cleanup;
  }
  *cfg = c->cfg;
cleanup:
  if (c->f) fclose(c->f);
  free(c);
  return rc;
}
