/*
 * tg-bench tokens: token creation with the guardian inline, against the
 * cost of writing the same 64-byte records into fresh huge-page memory,
 * measured in the same run.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bench.h"
#include "tokengraph/tokengraph.h"

#define HUGE_2M (2u << 20)

static void usage(FILE *f) {
  fprintf(f,
          "usage: tg-bench tokens [--count N] [--rounds R] [--json]\n\n"
          "Creates N tokens (default 9500000) in an in-memory store whose guardian\n"
          "is configured as the reference workload (max_tokens 9500000 or N if\n"
          "larger, max_memory_bytes 1024000000, memory_threshold 0.95), and writes\n"
          "the same number of 64-byte records into fresh huge-page memory as the\n"
          "reference. Prints tokens, seconds, tokens_per_sec, ns_per_token,\n"
          "rss_bytes_per_token, reference_seconds and ratio (seconds /\n"
          "reference_seconds). --json prints one JSON object with those keys.\n");
}

static void fill(tg_token *t, uint64_t i) {
  memset(t, 0, sizeof *t);
  for (int s = 0; s < TG_SPACES; s++) t->coord[s][0] = (int16_t)(i + (uint64_t)s);
  t->weight = (float)(i & 1023);
  t->timestamp = 1764000000u;
}

/* The reference: N records of 64 bytes into freshly mapped, 2 MiB aligned,
   MADV_HUGEPAGE memory, first touch included, as docs/design.md measured it. */
static double reference_seconds(uint64_t n) {
  size_t bytes = (size_t)n * 64;
  size_t span = bytes + HUGE_2M;
  unsigned char *raw = mmap(NULL, span, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) {
    perror("tg-bench: mmap");
    exit(1);
  }
  tg_token *recs = (tg_token *)(((uintptr_t)raw + HUGE_2M - 1) & ~(uintptr_t)(HUGE_2M - 1));
  madvise(recs, bytes, MADV_HUGEPAGE);
  tg_token tmpl;
  uint64_t t0 = tgp_now_ns();
  for (uint64_t i = 0; i < n; i++) {
    fill(&tmpl, i);
    recs[i] = tmpl;
    recs[i].id = (uint32_t)(i + 1);
    recs[i].flags |= TG_TOKEN_ACTIVE;
  }
  TGB_KEEP(recs);
  uint64_t t1 = tgp_now_ns();
  munmap(raw, span);
  return (double)(t1 - t0) / 1e9;
}

int tgb_tokens(int argc, char **argv) {
  uint64_t count = 9500000, rounds = 3;
  int json = 0;
  const tgb_opt opts[] = {
      {"--count", &count, NULL}, {"--rounds", &rounds, NULL}, {NULL, NULL, NULL}};
  int prc = tgb_parse_args("tokens", argc, argv, opts, &json, usage);
  if (prc >= 0) return prc;
  if (rounds == 0) rounds = 1;
  if (tgb_check_count("tokens", count)) return 64;

  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.guardian.max_tokens = count > 9500000 ? count : 9500000;
  cfg.guardian.max_memory_bytes = 1024000000;
  if (count * 64 * 2 > cfg.guardian.max_memory_bytes)
    cfg.guardian.max_memory_bytes = count * 64 * 2;
  cfg.guardian.memory_threshold = 0.95;

  double ref = 1e300, secs = 1e300, rss_per = 0;
  tg_store_stats st;
  memset(&st, 0, sizeof st);
  for (uint64_t round = 0; round < rounds; round++) {
    double r = reference_seconds(count);
    if (r < ref) ref = r;
    uint64_t rss0 = tgp_rss_bytes();
    tg_store *s = NULL;
    int rc = tg_store_open(&s, NULL, &cfg);
    if (rc) {
      fprintf(stderr, "tg-bench tokens: open: %s\n", tg_strerror(rc));
      return 1;
    }
    tg_token tmpl;
    uint64_t t0 = tgp_now_ns();
    for (uint64_t i = 0; i < count; i++) {
      uint32_t id;
      fill(&tmpl, i);
      rc = tg_token_create(s, &tmpl, &id);
      if (rc) {
        fprintf(stderr, "tg-bench tokens: create #%llu: %s\n",
                (unsigned long long)i, tg_strerror(rc));
        tg_store_close(s);
        return 1;
      }
    }
    uint64_t t1 = tgp_now_ns();
    uint64_t rss1 = tgp_rss_bytes();
    tg_store_stats_get(s, &st);
    tg_store_close(s);
    double sec = (double)(t1 - t0) / 1e9;
    if (sec < secs) secs = sec;
    if (round == 0 && st.live_tokens)
      rss_per = (double)(rss1 - rss0) / (double)st.live_tokens;
  }

  if (json) {
    printf("{\"tokens\": %llu, \"seconds\": %.6f, \"tokens_per_sec\": %.0f, "
           "\"ns_per_token\": %.3f, \"rss_bytes_per_token\": %.3f, "
           "\"reference_seconds\": %.6f, \"ratio\": %.3f, \"quota_checks\": %llu}\n",
           (unsigned long long)st.live_tokens, secs, (double)count / secs,
           secs * 1e9 / (double)count, rss_per, ref, secs / ref,
           (unsigned long long)st.quota_checks);
  } else {
    printf("tokens               %llu\n", (unsigned long long)st.live_tokens);
    printf("seconds              %.6f\n", secs);
    printf("tokens_per_sec       %.0f\n", (double)count / secs);
    printf("ns_per_token         %.3f\n", secs * 1e9 / (double)count);
    printf("rss_bytes_per_token  %.3f\n", rss_per);
    printf("reference_seconds    %.6f  (64-byte records into fresh huge-page memory)\n", ref);
    printf("ratio                %.3f  (target <= 1.5)\n", secs / ref);
    printf("quota_checks         %llu\n", (unsigned long long)st.quota_checks);
  }
  return 0;
}
