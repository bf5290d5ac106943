/* Helpers shared by the tg-bench subcommands; see bench.h. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

uint64_t tgb_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t tgb_rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f) return 0;
  unsigned long size = 0, resident = 0;
  int n = fscanf(f, "%lu %lu", &size, &resident);
  fclose(f);
  if (n != 2) return 0;
  return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

uint64_t tgb_parse_count(const char *opt, const char *val) {
  if (!val || !*val) {
    fprintf(stderr, "tg-bench: %s needs a value\n", opt);
    exit(64);
  }
  char *end;
  errno = 0;
  double d = strtod(val, &end);
  double mult = 1;
  if (*end == 'k' || *end == 'K') mult = 1e3, end++;
  else if (*end == 'm' || *end == 'M') mult = 1e6, end++;
  else if (*end == 'g' || *end == 'G') mult = 1e9, end++;
  d *= mult;
  if (errno || end == val || *end || !isfinite(d) || d < 0 || d > 1e15 ||
      d != floor(d)) {
    fprintf(stderr, "tg-bench: %s: '%s' is not a non-negative integer\n", opt, val);
    exit(64);
  }
  return (uint64_t)d;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

uint64_t tgb_quantile(uint64_t *v, size_t n, double q) {
  if (!n) return 0;
  qsort(v, n, sizeof *v, cmp_u64);
  size_t i = (size_t)(q * (double)(n - 1) + 0.5);
  if (i >= n) i = n - 1;
  return v[i];
}

uint64_t tgb_quantile_sorted(const uint64_t *v, size_t n, double q) {
  if (!n) return 0;
  size_t i = (size_t)(q * (double)(n - 1) + 0.5);
  return v[i < n ? i : n - 1];
}
