/*
 * tg-bench batch: token creates at STRICT, one per call against batches of
 * B per tg_batch_commit(), in alternated rounds on the same store, so both
 * rates come from the same disk in the same minute.
 */
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "tokengraph/tokengraph.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: tg-bench batch [--singles N] [--count N] [--batch B] [--rounds R]\n"
          "                      [--level strict|balanced|relaxed] [--dir DIR] [--json]\n\n"
          "Creates tokens at a durability level (default strict) in R alternated\n"
          "rounds (default 10): N single tg_token_create() calls (--singles, default\n"
          "100), then --count creates (default 10000) in batches of B (default 100)\n"
          "committed with tg_batch_commit(). Short rounds keep both sides under the\n"
          "same disk conditions on a shared machine. Prints the rate of each\n"
          "(creates per second over all rounds) and the median of the rounds'\n"
          "ratios; the target at strict is a ratio >= 50 for batches of 100. DIR\n"
          "defaults to a temporary directory in $TMPDIR or /tmp, removed afterwards.\n");
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int tgb_batch(int argc, char **argv) {
  uint64_t singles = 100, count = 10000, bsize = 100, rounds = 10;
  const char *dir = NULL, *level_s = "strict";
  int json = 0;
  const tgb_opt opts[] = {{"--singles", &singles, NULL}, {"--count", &count, NULL},
                          {"--batch", &bsize, NULL},     {"--rounds", &rounds, NULL},
                          {"--dir", NULL, &dir},         {"--level", NULL, &level_s},
                          {NULL, NULL, NULL}};
  int prc = tgb_parse_args("batch", argc, argv, opts, &json, usage);
  if (prc >= 0) return prc;
  if (tgb_check_count("batch", count) || tgb_check_count("batch", singles)) return 64;
  int level;
  if (!strcmp(level_s, "strict")) level = TG_STRICT;
  else if (!strcmp(level_s, "balanced")) level = TG_BALANCED;
  else if (!strcmp(level_s, "relaxed")) level = TG_RELAXED;
  else return tgb_bad_option("batch", level_s, usage);
  if (bsize < 1 || bsize > TG_BATCH_MAX_ENTRIES || rounds < 1 || rounds > 99) {
    fprintf(stderr, "tg-bench batch: --batch must be 1..%u and --rounds 1..99\n",
            TG_BATCH_MAX_ENTRIES);
    return 64;
  }
  char tmp[4096], path[4200];
  if (!dir) {
    int mrc = tgp_mkdtemp(tmp, sizeof tmp, NULL, "tg-bench-batch");
    if (mrc) {
      fprintf(stderr, "tg-bench batch: cannot create a temporary directory: %s\n",
              strerror(-mrc));
      return 1;
    }
    snprintf(path, sizeof path, "%s/data", tmp);
  } else {
    snprintf(path, sizeof path, "%s", dir);
  }
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.wal.level = level;
  cfg.guardian.max_tokens = (singles + count) * rounds + 1000;
  cfg.guardian.max_memory_bytes = cfg.guardian.max_tokens * 64 * 2 + (64u << 20);
  cfg.checkpoint_bytes = 0;
  tg_store *s = NULL;
  char msg[512];
  int rc = tg_store_open_msg(&s, path, &cfg, msg, sizeof msg);
  if (rc) {
    fprintf(stderr, "tg-bench batch: open %s: %s: %s\n", path, tg_err_name(rc), msg);
    return 1;
  }
  double ratio[99];
  uint64_t single_ns = 0, batch_ns = 0;
  tg_token t;
  memset(&t, 0, sizeof t);
  for (uint64_t r = 0; r < rounds && !rc; r++) {
    uint64_t t0 = tgp_now_ns();
    for (uint64_t i = 0; i < singles && !rc; i++) {
      uint32_t id;
      t.timestamp = (uint32_t)i;
      rc = tg_token_create(s, &t, &id);
    }
    uint64_t t1 = tgp_now_ns();
    for (uint64_t done = 0; done < count && !rc;) {
      tg_batch *b;
      if ((rc = tg_batch_begin(s, &b))) break;
      for (uint64_t i = 0; i < bsize && done < count && !rc; i++, done++) {
        uint32_t id;
        t.timestamp = (uint32_t)done;
        rc = tg_batch_token_create(b, &t, &id);
      }
      if (rc) tg_batch_abort(b);
      else rc = tg_batch_commit(b);
    }
    uint64_t t2 = tgp_now_ns();
    single_ns += t1 - t0;
    batch_ns += t2 - t1;
    ratio[r] = ((double)count / (double)(t2 - t1)) / ((double)singles / (double)(t1 - t0));
  }
  if (rc) {
    fprintf(stderr, "tg-bench batch: %s\n", tg_strerror(rc));
    tg_store_close(s);
    return 1;
  }
  tg_store_stats st;
  tg_store_stats_get(s, &st);
  if ((rc = tg_store_close(s))) {
    fprintf(stderr, "tg-bench batch: close: %s\n", tg_strerror(rc));
    return 1;
  }
  int n = (int)rounds;
  double sr = (double)(singles * rounds) * 1e9 / (double)single_ns;
  double br = (double)(count * rounds) * 1e9 / (double)batch_ns;
  double mr = median(ratio, n);
  if (json) {
    printf("{\"level\": \"%s\", \"rounds\": %d, \"singles\": %llu, \"batched\": %llu, "
           "\"batch\": %llu, \"single_creates_per_sec\": %.0f, "
           "\"batched_creates_per_sec\": %.0f, \"ratio\": %.1f, \"ratio_of_totals\": %.1f, "
           "\"live_tokens\": %llu}\n",
           level_s, n, (unsigned long long)singles, (unsigned long long)count,
           (unsigned long long)bsize, sr, br, mr, br / sr, (unsigned long long)st.live_tokens);
  } else {
    printf("level                      %s, %d alternated rounds\n", level_s, n);
    printf("single calls               %.0f creates/s (%llu a round)\n", sr,
           (unsigned long long)singles);
    printf("batches of %-6llu          %.0f creates/s (%llu a round)\n",
           (unsigned long long)bsize, br, (unsigned long long)count);
    printf("ratio                      %.1fx median of the rounds, %.1fx of the totals "
           "(target at strict, batches of 100: >= 50x)\n", mr, br / sr);
  }
  if (!dir && tgp_rmtree(tmp)) fprintf(stderr, "tg-bench batch: could not remove %s\n", tmp);
  return 0;
}
