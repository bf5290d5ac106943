/*
 * tg-bench trace: the cost of tracing spans, black-box events and metric
 * increments, each against the same loop untraced, in the same run.
 *
 * Two measurements, as issue 5 asks:
 *   reference: the predecessor's 10,000-operation measurement (697 ns per
 *     span there). A 64-byte record written into a warm arena per
 *     operation, repeated --reps times, variants interleaved, medians kept.
 *   large: 9,500,000 token creations through tg_token_create() into one
 *     in-memory store per round, in chunks of 50,000 whose variant rotates:
 *     untraced, one span per creation at 1%, 0% and 100% sampling. Every
 *     variant sees the same store growth and the same noise from the
 *     shared machine's neighbours; times are summed over --rounds.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bench.h"
#include "tokengraph/tokengraph.h"
#include "tokengraph/trace.h"

TG_SPAN_SITE(site_create, "token.create", "id", NULL, NULL, NULL);
TG_SPAN_SITE(site_op, "bench.op", "i", NULL, NULL, NULL);

static void usage(FILE *f) {
  fprintf(f,
          "usage: tg-bench trace [--count N] [--ref-count N] [--reps R] [--rounds K] [--json]\n\n"
          "Measures, each against the same loop untraced in the same run:\n"
          "  reference (--ref-count ops, default 10000, the predecessor's measurement;\n"
          "    --reps repetitions, default 51, medians): unsampled span ns, sampled\n"
          "    span ns, mean span ns at 1%% sampling, black-box event ns, metric\n"
          "    increment ns;\n"
          "  large (--count token creations, default 9500000, into one in-memory store\n"
          "    per round, --rounds default 3; variants interleaved in chunks of 50000):\n"
          "    overhead of one span per creation at 1%% sampling in %%, and the\n"
          "    unsampled/sampled span ns at that scale.\n"
          "Targets (docs/design.md): unsampled <= 2 ns, sampled <= 60 ns, 1%% adds <= 5%%.\n"
          "--json prints one object with unsampled_span_ns, sampled_span_ns,\n"
          "overhead_pct_at_1pct, blackbox_event_ns and the other figures.\n");
}

/* ---- the reference loop -------------------------------------------------- */

typedef struct rec64 {
  uint64_t w[8];
} rec64;

enum { V_PLAIN, V_UNSAMPLED, V_SAMPLED, V_1PCT, V_BLACKBOX, V_METRIC, NV };

/* One pass of n operations of variant v; returns ns. The body writes a
   64-byte record, like token creation does. noinline keeps each variant's
   loop compiled alike. */
__attribute__((noinline)) static uint64_t ref_pass(rec64 *arena, uint64_t n, int v) {
  uint64_t t0 = tgp_now_ns();
  switch (v) {
  case V_PLAIN:
    for (uint64_t i = 0; i < n; i++) {
      rec64 r = {{i, i + 1, i + 2, i + 3, i + 4, i + 5, i + 6, i + 7}};
      arena[i] = r;
      TGB_KEEP(arena);
    }
    break;
  case V_UNSAMPLED:
  case V_SAMPLED:
  case V_1PCT:
    for (uint64_t i = 0; i < n; i++) {
      tg_span s;
      tg_span_begin(&s, &site_op);
      tg_span_attr(&s, 0, i);
      rec64 r = {{i, i + 1, i + 2, i + 3, i + 4, i + 5, i + 6, i + 7}};
      arena[i] = r;
      TGB_KEEP(arena);
      tg_span_end(&s);
    }
    break;
  case V_BLACKBOX:
    for (uint64_t i = 0; i < n; i++) {
      rec64 r = {{i, i + 1, i + 2, i + 3, i + 4, i + 5, i + 6, i + 7}};
      arena[i] = r;
      TGB_KEEP(arena);
      tg_blackbox_record(TG_BB_USER, i, 0, 0, 0);
    }
    break;
  case V_METRIC:
    for (uint64_t i = 0; i < n; i++) {
      rec64 r = {{i, i + 1, i + 2, i + 3, i + 4, i + 5, i + 6, i + 7}};
      arena[i] = r;
      TGB_KEEP(arena);
      tg_metric_inc(TG_METRIC_QUOTA_CHECKS);
    }
    break;
  }
  return tgp_now_ns() - t0;
}

/* ---- the large loop: token creation ------------------------------------- */

enum { L_PLAIN, L_1PCT, L_UNSAMPLED, L_SAMPLED, NL };
static const double l_rate[NL] = {0.0, 0.01, 0.0, 1.0};

#define CHUNK 50000 /* creations per timed chunk in the large phase */

/* One round: `n` creations into one fresh store, in chunks of CHUNK whose
   variant rotates plain, 1%, 0%, 100%, so every variant sees the same store
   growth and the same neighbours' noise. Adds ns and ops per variant. */
__attribute__((noinline)) static void large_round(uint64_t n, uint64_t ns[NL], uint64_t ops[NL]) {
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.guardian.max_tokens = n + 1;
  cfg.guardian.max_memory_bytes = (n + 1) * 128 + (64u << 20);
  cfg.guardian.memory_threshold = 0.95;
  tg_store *s = NULL;
  int rc = tg_store_open(&s, NULL, &cfg);
  if (rc != 0) {
    fprintf(stderr, "tg-bench trace: tg_store_open: %s\n", tg_strerror(rc));
    exit(1);
  }
  tg_token init;
  memset(&init, 0, sizeof init);
  init.timestamp = 1764000000u;
  uint32_t id = 0;
  uint64_t done = 0;
  for (uint64_t c = 0; done < n; c++) {
    int v = (int)(c % NL);
    uint64_t m = n - done < CHUNK ? n - done : CHUNK;
    tg_trace_set_rate(l_rate[v]);
    uint64_t t0 = tgp_now_ns();
    if (v == L_PLAIN) {
      for (uint64_t i = 0; i < m; i++) {
        init.coord[0][0] = (int16_t)i;
        rc |= tg_token_create(s, &init, &id);
      }
    } else {
      for (uint64_t i = 0; i < m; i++) {
        tg_span sp;
        tg_span_begin(&sp, &site_create);
        init.coord[0][0] = (int16_t)i;
        rc |= tg_token_create(s, &init, &id);
        tg_span_attr(&sp, 0, id);
        tg_span_end(&sp);
      }
    }
    ns[v] += tgp_now_ns() - t0;
    ops[v] += m;
    done += m;
  }
  TGB_KEEP(id);
  if (rc != 0) {
    fprintf(stderr, "tg-bench trace: tg_token_create failed: %s\n", tg_strerror(rc));
    exit(1);
  }
  tg_store_close(s);
}

int tgb_trace(int argc, char **argv) {
  uint64_t count = 9500000, ref_count = 10000, reps = 51, rounds = 3;
  int json = 0;
  const tgb_opt opts[] = {{"--count", &count, NULL},
                          {"--ref-count", &ref_count, NULL},
                          {"--reps", &reps, NULL},
                          {"--rounds", &rounds, NULL},
                          {NULL, NULL, NULL}};
  int prc = tgb_parse_args("trace", argc, argv, opts, &json, usage);
  if (prc >= 0) return prc;
  if (count == 0 || ref_count == 0 || reps == 0 || rounds == 0) {
    fprintf(stderr, "tg-bench trace: counts must be positive\n");
    return 64;
  }
  double saved_rate = tg_trace_get_rate();

  /* ---- reference: 10,000 operations, medians of reps ---- */
  rec64 *arena = aligned_alloc(64, ref_count * sizeof(rec64));
  uint64_t *t[NV];
  for (int v = 0; v < NV; v++) t[v] = calloc(reps, sizeof(uint64_t));
  if (arena == NULL || t[NV - 1] == NULL) {
    fprintf(stderr, "tg-bench trace: out of memory\n");
    return 1;
  }
  memset(arena, 0, ref_count * sizeof(rec64));
  /* Warm up: fault the arena, allocate this thread's ring and shard. */
  tg_trace_set_rate(1.0);
  ref_pass(arena, ref_count, V_SAMPLED);
  ref_pass(arena, ref_count, V_METRIC);
  for (uint64_t r = 0; r < reps; r++) {
    for (int v = 0; v < NV; v++) {
      tg_trace_set_rate(v == V_SAMPLED ? 1.0 : v == V_1PCT ? 0.01 : 0.0);
      t[v][r] = ref_pass(arena, ref_count, v);
    }
  }
  double med[NV];
  for (int v = 0; v < NV; v++) {
    tgp_sort_u64(t[v], reps);
    med[v] = (double)tgp_quantile_sorted(t[v], reps, 0.5) / (double)ref_count;
  }
  double ref_plain = med[V_PLAIN];
  double ref_unsampled = med[V_UNSAMPLED] - ref_plain;
  double ref_sampled = med[V_SAMPLED] - ref_plain;
  double ref_1pct = med[V_1PCT] - ref_plain;
  double bb_ns = med[V_BLACKBOX] - ref_plain;
  double metric_ns = med[V_METRIC] - ref_plain;
  free(arena);
  for (int v = 0; v < NV; v++) free(t[v]);

  /* ---- large: token creation, variants interleaved in chunks ---- */
  uint64_t lns[NL] = {0}, lops[NL] = {0};
  for (uint64_t r = 0; r < rounds; r++) large_round(count, lns, lops);
  tg_trace_set_rate(saved_rate);
  double per[NL];
  for (int v = 0; v < NL; v++) per[v] = (double)lns[v] / (double)lops[v];
  double plain_ns = per[L_PLAIN];
  double pct1_ns = per[L_1PCT];
  double large_unsampled = per[L_UNSAMPLED] - plain_ns;
  double large_sampled = per[L_SAMPLED] - plain_ns;
  double overhead_pct = 100.0 * (pct1_ns - plain_ns) / plain_ns;
  tg_trace_stats st;
  tg_trace_stats_get(&st);

  if (json) {
    printf("{\"ref_ops\":%llu,\"ref_reps\":%llu,\"ref_untraced_op_ns\":%.3f,"
           "\"ref_unsampled_span_ns\":%.3f,\"ref_sampled_span_ns\":%.3f,"
           "\"ref_1pct_span_ns\":%.3f,"
           "\"tokens\":%llu,\"rounds\":%llu,\"untraced_create_ns\":%.3f,"
           "\"traced_1pct_create_ns\":%.3f,\"large_unsampled_span_ns\":%.3f,"
           "\"large_sampled_span_ns\":%.3f,"
           "\"unsampled_span_ns\":%.3f,\"sampled_span_ns\":%.3f,"
           "\"overhead_pct_at_1pct\":%.3f,\"blackbox_event_ns\":%.3f,"
           "\"metric_inc_ns\":%.3f,\"spans_sampled\":%llu,\"spans_dropped\":%llu}\n",
           (unsigned long long)ref_count, (unsigned long long)reps, ref_plain, ref_unsampled,
           ref_sampled, ref_1pct, (unsigned long long)count, (unsigned long long)rounds, plain_ns,
           pct1_ns, large_unsampled, large_sampled, ref_unsampled, ref_sampled, overhead_pct,
           bb_ns, metric_ns, (unsigned long long)st.sampled, (unsigned long long)st.dropped);
  } else {
    printf("reference: %llu operations (64-byte record each), median of %llu reps\n",
           (unsigned long long)ref_count, (unsigned long long)reps);
    printf("  untraced_op_ns        %8.3f\n", ref_plain);
    printf("  unsampled_span_ns     %8.3f  (target <= 2; predecessor 697 per span)\n",
           ref_unsampled);
    printf("  sampled_span_ns       %8.3f  (target <= 60)\n", ref_sampled);
    printf("  span_at_1pct_ns       %8.3f  (mean cost per span at 1%% sampling)\n", ref_1pct);
    printf("  blackbox_event_ns     %8.3f\n", bb_ns);
    printf("  metric_inc_ns         %8.3f\n", metric_ns);
    printf("large: %llu token creations (tg_token_create, one in-memory store) x %llu rounds,\n"
           "  variants interleaved in chunks of %d\n",
           (unsigned long long)count, (unsigned long long)rounds, CHUNK);
    printf("  untraced_create_ns    %8.3f\n", plain_ns);
    printf("  traced_1pct_create_ns %8.3f\n", pct1_ns);
    printf("  overhead_pct_at_1pct  %8.3f  (target <= 5)\n", overhead_pct);
    printf("  unsampled_span_ns     %8.3f  (span per creation at rate 0)\n", large_unsampled);
    printf("  sampled_span_ns       %8.3f  (span per creation at rate 1)\n", large_sampled);
    printf("spans sampled %llu, dropped (ring wrapped) %llu\n", (unsigned long long)st.sampled,
           (unsigned long long)st.dropped);
  }
  return 0;
}
