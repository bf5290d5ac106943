/*
 * libFuzzer target: the INI configuration loader (tg_config_load()), and
 * the promise that the INI file and the API accept the same values.
 *
 * The first input byte picks one of two modes:
 *  - even: the rest is the text of an INI file, written to a temporary
 *    file and loaded over the defaults. A refusal is TG_ECONFIG with a
 *    message naming the file, and leaves the config untouched. What loads
 *    is accepted by the API: by the checks tg_store_open() makes
 *    (tg__guardian_validate(), tg__wal_config_check()), by an in-memory
 *    open, and by a durable open in a temporary directory (with the ring
 *    and segment sizes capped, so a case stays fast; their acceptance is
 *    the WAL check's, made above on the loaded values).
 *  - odd: the rest gives raw values for every key's field. They are
 *    written as an INI file (each value as the loader's syntax spells it),
 *    loaded, and the load must succeed exactly when the API's checks
 *    accept the values, giving back the same values. Fields the INI cannot
 *    spell (cleanup 2, a level of 3) are left out of that comparison.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_dir.h"
#include "guardian/guardian.h" /* tg__guardian_validate */
#include "tokengraph/tokengraph.h"
#include "wal/wal_store.h" /* tg__wal_config_check */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char ini[128], dir[128];

__attribute__((noreturn)) static void fail(const char *what, int rc, const char *msg) {
  fprintf(stderr, "fuzz_config: %s (rc %d %s: %s)\n", what, rc, tg_err_name(rc),
          msg ? msg : "");
  abort();
}

static void write_file(const char *path, const void *b, size_t n) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) abort();
  const char *p = b;
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w <= 0) abort();
    p += w;
    n -= (size_t)w;
  }
  close(fd);
}

/* The checks tg_store_open() makes on a durable store's config. */
static int api_accepts(const tg_store_config *c) {
  const char *why;
  return tg__guardian_validate(&c->guardian, &why) == 0 && tg__wal_config_check(&c->wal) == 0 &&
         c->prefault_bytes <= c->guardian.max_memory_bytes;
}

static void defaults(tg_store_config *c) {
  memset(c, 0, sizeof *c);
  tg_store_config_init(c);
}

/* The fields a file can set, compared one by one (doubles by their bits:
   "%.17g" spells a double exactly, and -0 stays -0). */
static int same(const tg_store_config *a, const tg_store_config *b) {
  const tg_guardian_config *x = &a->guardian, *y = &b->guardian;
  return x->max_tokens == y->max_tokens && x->max_connections == y->max_connections &&
         x->max_memory_bytes == y->max_memory_bytes &&
         !memcmp(&x->memory_threshold, &y->memory_threshold, sizeof(double)) &&
         !memcmp(&x->cleanup_margin, &y->cleanup_margin, sizeof(double)) &&
         x->max_degree == y->max_degree && x->cleanup == y->cleanup &&
         x->on_pressure == y->on_pressure && x->on_pressure_arg == y->on_pressure_arg &&
         a->wal.level == b->wal.level && a->wal.sync_interval_ms == b->wal.sync_interval_ms &&
         a->wal.segment_bytes == b->wal.segment_bytes && a->wal.ring_slots == b->wal.ring_slots &&
         a->wal.nonblocking == b->wal.nonblocking && a->wal.linger_us == b->wal.linger_us &&
         a->checkpoint_bytes == b->checkpoint_bytes && a->crash_dump == b->crash_dump &&
         a->prefault_bytes == b->prefault_bytes;
}

static void load_text(const uint8_t *data, size_t size) {
  write_file(ini, data, size);
  tg_store_config cfg, before;
  defaults(&cfg);
  before = cfg;
  char msg[512] = "";
  int rc = tg_config_load(&cfg, ini, msg, sizeof msg);
  if (rc) {
    if (rc != TG_ECONFIG) fail("a readable file refused with other than TG_ECONFIG", rc, msg);
    if (strncmp(msg, ini, strlen(ini))) fail("the message does not name the file", rc, msg);
    if (!same(&cfg, &before)) fail("a refused file changed the config", rc, msg);
    return;
  }
  if (!api_accepts(&cfg)) fail("the INI file accepted what the API refuses", 0, NULL);
  /* Memory faulted at open is capped, so a case stays fast and small. */
  if (cfg.prefault_bytes > (4u << 20)) cfg.prefault_bytes = 4u << 20;
  tg_store *s = NULL;
  if ((rc = tg_store_open_msg(&s, NULL, &cfg, msg, sizeof msg)))
    fail("an in-memory open refused a loaded config", rc, msg);
  tg_store_close(s);
  tg_store_config small = cfg;
  small.crash_dump = 0;
  if (small.wal.ring_slots > 64) small.wal.ring_slots = 64;
  if (small.wal.segment_bytes > 65536) small.wal.segment_bytes = 65536;
  fz_remove(dir);
  s = NULL;
  if ((rc = tg_store_open_msg(&s, dir, &small, msg, sizeof msg)))
    fail("a durable open refused a loaded config", rc, msg);
  if ((rc = tg_store_close(s))) fail("close", rc, NULL);
  fz_remove(dir);
}

/* Take n bytes (zero past the end) as a little-endian number. */
static uint64_t take(const uint8_t **p, size_t *left, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++) {
    uint64_t b = *left ? (*left)--, *(*p)++ : 0;
    v |= b << (8 * i);
  }
  return v;
}

static double take_double(const uint8_t **p, size_t *left) {
  uint64_t bits = take(p, left, 8);
  double d;
  memcpy(&d, &bits, sizeof d);
  return d;
}

static void round_trip(const uint8_t *p, size_t left) {
  static const char *const levels[] = {"strict", "balanced", "relaxed"};
  tg_store_config want;
  defaults(&want);
  tg_guardian_config *g = &want.guardian;
  tg_wal_config *w = &want.wal;
  g->max_tokens = take(&p, &left, 8);
  g->max_connections = take(&p, &left, 8);
  g->max_memory_bytes = take(&p, &left, 8);
  g->memory_threshold = take_double(&p, &left);
  g->cleanup_margin = take_double(&p, &left);
  g->max_degree = (uint32_t)take(&p, &left, 4);
  g->cleanup = (int)(take(&p, &left, 1) % 2);
  w->level = (int)(take(&p, &left, 1) % 3);
  w->sync_interval_ms = (uint32_t)take(&p, &left, 4);
  w->segment_bytes = take(&p, &left, 8);
  w->ring_slots = (uint32_t)take(&p, &left, 4);
  w->linger_us = (uint32_t)take(&p, &left, 4);
  w->nonblocking = (int)(take(&p, &left, 1) % 2);
  want.checkpoint_bytes = take(&p, &left, 8);
  /* Up to one past max_memory_bytes: mostly accepted, so the other
     fields' checks are not drowned in refusals of this one. */
  uint64_t pf = take(&p, &left, 8);
  want.prefault_bytes = g->max_memory_bytes < UINT64_MAX - 1u ? pf % (g->max_memory_bytes + 2u) : pf;

  char text[2048];
  snprintf(text, sizeof text,
           "[guardian]\nmax_tokens = %" PRIu64 "\nmax_connections = %" PRIu64
           "\nmax_memory_bytes = %" PRIu64 "\nmemory_threshold = %.17g\ncleanup_margin = %.17g"
           "\nmax_degree = %" PRIu32 "\ncleanup = %s\n"
           "[wal]\nlevel = %s\nsync_interval_ms = %" PRIu32 "\nsegment_bytes = %" PRIu64
           "\nring_slots = %" PRIu32 "\nlinger_us = %" PRIu32 "\nbackpressure = %s"
           "\ncheckpoint_bytes = %" PRIu64 "\n[store]\nprefault_bytes = %" PRIu64 "\n",
           g->max_tokens, g->max_connections, g->max_memory_bytes, g->memory_threshold,
           g->cleanup_margin, g->max_degree, g->cleanup ? "true" : "false", levels[w->level],
           w->sync_interval_ms, w->segment_bytes, w->ring_slots, w->linger_us,
           w->nonblocking ? "error" : "block", want.checkpoint_bytes, want.prefault_bytes);
  write_file(ini, text, strlen(text));
  tg_store_config got;
  defaults(&got);
  char msg[512] = "";
  int rc = tg_config_load(&got, ini, msg, sizeof msg);
  int api = api_accepts(&want);
  if (api && rc) {
    fprintf(stderr, "%s", text);
    fail("the INI file refused what the API accepts", rc, msg);
  }
  if (!api && !rc) {
    fprintf(stderr, "%s", text);
    fail("the INI file accepted what the API refuses", rc, NULL);
  }
  if (!rc && !same(&got, &want)) {
    fprintf(stderr, "%s", text);
    fail("the INI file loaded other values than it was given", rc, NULL);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!ini[0]) {
    fz_init("config");
    snprintf(ini, sizeof ini, "%s/fuzz.ini", fz_base());
    snprintf(dir, sizeof dir, "%s/store", fz_base());
  }
  if (!size) return 0;
  if (data[0] & 1) round_trip(data + 1, size - 1);
  else load_text(data + 1, size - 1);
  fz_check_outside();
  return 0;
}
