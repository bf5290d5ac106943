/* Helpers shared by the tg-bench subcommands; see bench.h. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

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

int tgb_bad_option(const char *cmd, const char *arg, void (*usage)(FILE *)) {
  fprintf(stderr, "tg-bench %s: unknown or incomplete option '%s'\n", cmd, arg);
  usage(stderr);
  return 64;
}

int tgb_parse_args(const char *cmd, int argc, char **argv, const tgb_opt *opts, int *json,
                   void (*usage)(FILE *)) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    }
    if (!strcmp(a, "--json")) {
      *json = 1;
      continue;
    }
    const tgb_opt *o = opts;
    while (o->name && strcmp(o->name, a)) o++;
    if (!o->name || i + 1 >= argc) return tgb_bad_option(cmd, a, usage);
    const char *v = argv[++i];
    if (o->count) *o->count = tgb_parse_count(a, v);
    else *o->str = v;
  }
  return -1;
}

int tgb_check_count(const char *cmd, uint64_t count) {
  if (count >= 1 && count <= 4000000000ull) return 0;
  fprintf(stderr, "tg-bench %s: --count must be in [1, 4000000000]\n", cmd);
  return 64;
}
