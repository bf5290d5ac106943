/*
 * tg-stress, run as a program: the JSON summary parses and passes on a small
 * config, config errors name file, line and key, quota exhaustion counts
 * exactly the expected rejections, every shipped config loads, and --plot
 * without gnuplot is a message, not a failure.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokengraph/version.h"
#include "util.h"

#ifndef TG_STRESS_BIN
#error "TG_STRESS_BIN must name the tg-stress executable"
#endif
#ifndef TG_CONFIG_DIR
#error "TG_CONFIG_DIR must name stress/configs"
#endif

/* Run tg-stress with args (NULL-terminated, without argv[0]); env_path (if
   not NULL) replaces PATH. */
static tgt_run_out run(const char *env_path, const char *const *args) {
  return tgt_run(TG_STRESS_BIN, args, env_path, tgt_root);
}

/* run(), for a run that must succeed: any other exit fails the test with
   what tg-stress printed. */
static tgt_run_out run_ok(const char *env_path, const char *const *args) {
  tgt_run_out r = run(env_path, args);
  if (r.status != 0)
    fail_msg("tg-stress exited %d\nstdout:\n%s\nstderr:\n%s", r.status, r.out, r.err);
  return r;
}

/* tg-stress refuses args: it exits with a failure and names want on
   stderr. */
static void assert_refused(const char *const *args, const char *want) {
  tgt_run_out r = run(NULL, args);
  if (r.status == 0 || !strstr(r.err, want))
    fail_msg("exit %d; want '%s' in: %s", r.status, want, r.err);
  tgt_run_free(&r);
}

/* ---- a small JSON validator: enough to say the output parses ---- */

typedef struct jp {
  const char *p;
  int depth;
} jp;

static void ws(jp *j) {
  while (*j->p == ' ' || *j->p == '\n' || *j->p == '\t' || *j->p == '\r') j->p++;
}

static int value(jp *j);

static int string(jp *j) {
  if (*j->p != '"') return -1;
  for (j->p++; *j->p != '"'; j->p++) {
    if (!*j->p || (unsigned char)*j->p < 0x20) return -1;
    if (*j->p == '\\') {
      j->p++;
      if (!*j->p) return -1;
    }
  }
  j->p++;
  return 0;
}

static int number(jp *j) {
  char *end;
  strtod(j->p, &end);
  if (end == j->p) return -1;
  j->p = end;
  return 0;
}

static int value(jp *j) {
  ws(j);
  if (++j->depth > 64) return -1;
  int rc = 0;
  if (*j->p == '{' || *j->p == '[') {
    char close = *j->p == '{' ? '}' : ']';
    int obj = close == '}';
    j->p++;
    ws(j);
    if (*j->p == close) {
      j->p++;
    } else {
      for (;;) {
        ws(j);
        if (obj) {
          if (string(j)) return -1;
          ws(j);
          if (*j->p++ != ':') return -1;
        }
        if (value(j)) return -1;
        ws(j);
        if (*j->p == ',') {
          j->p++;
          continue;
        }
        if (*j->p++ != close) return -1;
        break;
      }
    }
  } else if (*j->p == '"') {
    rc = string(j);
  } else if (!strncmp(j->p, "true", 4) || !strncmp(j->p, "null", 4)) {
    j->p += 4;
  } else if (!strncmp(j->p, "false", 5)) {
    j->p += 5;
  } else {
    rc = number(j);
  }
  j->depth--;
  return rc;
}

static int json_valid(const char *s) {
  jp j = {s, 0};
  if (value(&j)) return 0;
  ws(&j);
  return *j.p == 0;
}

static int count(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) n++;
  return n;
}

/* ---- tests ---- */

static const char small_config[] =
    "; a small run of every phase\n"
    "[guardian]\n"
    "max_tokens = 1000000\n"
    "[wal]\n"
    "level = balanced\n"
    "segment_bytes = 1048576\n"
    "[stress]\n"
    "phases = all\n"
    "levels = balanced, strict\n"
    "threads = 2\n"
    "tokens = 20000\n"
    "rounds = 1\n"
    "wal_tokens = 5000\n"
    "strict_ops = 40\n"
    "wal_every = 1000\n"
    "crash_ops = 3000\n"
    "trace_tokens = 10000\n"
    "quota_tokens = 1000\n"
    "quota_overflow = 10\n"
    "pressure_memory_bytes = 262144\n"
    "pressure_tokens = 20000\n"
    "persistent_every = 50\n"
    "backpressure_ring = 16\n"
    "backpressure_ops = 3000\n";

static void test_stress_json_summary_parses_and_passes(void **state) {
  (void)state;
  char cfg[300], work[300], report[300];
  snprintf(cfg, sizeof cfg, "%s/small.ini", tgt_root);
  snprintf(work, sizeof work, "%s/work", tgt_root);
  snprintf(report, sizeof report, "%s/report.jsonl", tgt_root);
  tgt_write_file(cfg, small_config);
  const char *args[] = {"--config", cfg, "--dir", work, "--json", "--report", report, NULL};
  tgt_run_out r = run_ok(NULL, args);
  assert_true(json_valid(r.out));
  assert_int_equal(count(r.out, "\n"), 1); /* one object, one line */
  assert_non_null(strstr(r.out, "\"phases\": ["));
  assert_non_null(strstr(r.out, "\"ok\": true}"));
  /* Every phase object carries every key the issue names. */
  const char *keys[] = {"\"name\": ", "\"ops\": ", "\"seconds\": ", "\"ops_per_sec\": ",
                        "\"ratio_to_baseline\": ", "\"p50_ns\": ", "\"p99_ns\": ",
                        "\"p999_ns\": "};
  const char *refs = strstr(r.out, "\"references\": [");
  assert_non_null(refs);
  size_t phases_len = (size_t)(refs - r.out);
  char *phases = strndup(r.out, phases_len);
  int n = count(phases, "\"name\": ");
  assert_true(n >= 12);
  for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) assert_int_equal(count(phases, keys[k]), n);
  const char *names[] = {"\"baseline\"", "\"full-stack-1000th@balanced\"",
                         "\"full-stack-every-token@balanced\"", "\"replay@balanced\"",
                         "\"crash-recovery@balanced\"", "\"crash-recovery@strict\"",
                         "\"trace-rate-0.01\"", "\"quota-exhaustion\"", "\"memory-pressure\"",
                         "\"backpressure-nonblocking@balanced\"",
                         "\"backpressure-blocking@strict\""};
  for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
    if (!strstr(phases, names[k])) fprintf(stderr, "missing phase %s\n", names[k]);
    assert_non_null(strstr(phases, names[k]));
  }
  free(phases);
  assert_int_equal(count(r.out, "\"pass\": false"), 0);

  /* The JSONL report: every line an object; measurements, then summaries,
     ending with the result. */
  char *jl = tgt_slurp(report);
  assert_true(count(jl, "{\"type\": \"measurement\"") >= n);
  assert_true(count(jl, "{\"type\": \"summary\"") >= n);
  assert_non_null(strstr(jl, "\"seconds_stddev\": "));
  assert_non_null(strstr(jl, "{\"type\": \"result\", \"ok\": true}\n"));
  for (char *line = strtok(jl, "\n"); line; line = strtok(NULL, "\n")) assert_true(json_valid(line));
  free(jl);
  tgt_run_free(&r);
}

static void test_stress_config_error_names_file_line_and_key(void **state) {
  (void)state;
  char cfg[300];
  snprintf(cfg, sizeof cfg, "%s/bad.ini", tgt_root);
  struct {
    const char *text;
    const char *want; /* after "PATH:" */
  } cases[] = {
      {"[stress]\nrounds = 2\ntokens = 12abc\n", ":3: key 'tokens'"},
      {"[stress]\nphases = baseline, nonsense\n", ":2: key 'phases'"},
      {"[stress]\n\nthreads = 1\nnot_a_key = 1\n", ":4: key 'not_a_key'"},
      {"[guardian]\nmax_tokens = -5\n", ":2: key 'max_tokens'"},
      {"[stress]\nrounds = 1\nrounds = 2\n", ":3: key 'rounds'"},
      {"[stress]\nsample_every = 3\n", ":2: key 'sample_every'"},
      {"[guardian]\nmax_tokens = 100\n[stress]\nphases = baseline\ntokens = 1000\n",
       ":5: key 'tokens'"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    tgt_write_file(cfg, cases[i].text);
    const char *args[] = {"--config", cfg, "--check-config", NULL};
    char want[400];
    snprintf(want, sizeof want, "%s%s", cfg, cases[i].want);
    assert_refused(args, want);
  }
  /* A missing file is an error too, naming it. */
  const char *args[] = {"--config", "/nonexistent/x.ini", NULL};
  assert_refused(args, "/nonexistent/x.ini");
}

static void test_stress_quota_exhaustion_counts_exact_rejections(void **state) {
  (void)state;
  char cfg[300], report[300];
  snprintf(cfg, sizeof cfg, "%s/quota.ini", tgt_root);
  snprintf(report, sizeof report, "%s/quota.jsonl", tgt_root);
  tgt_write_file(cfg, "[guardian]\nmax_tokens = 3000\n[stress]\nphases = quota-exhaustion\n"
                  "quota_tokens = 3000\nquota_overflow = 77\n");
  const char *args[] = {"--config", cfg, "--json", "--report", report, NULL};
  tgt_run_out r = run_ok(NULL, args);
  assert_true(json_valid(r.out));
  assert_non_null(strstr(r.out, "\"ok\": true}"));
  assert_non_null(strstr(r.out, "\"name\": \"quota-exhaustion\", \"level\": null, \"ops\": 3077,"));
  assert_non_null(strstr(r.out, "3000 created of 3000, 77 rejected (expected 77), 0 accepted"));
  assert_non_null(strstr(r.out, "live 3000 -> 3000"));
  assert_non_null(strstr(r.out, "rejected creates log nothing\", \"pass\": true"));
  char *jl = tgt_slurp(report);
  assert_non_null(strstr(jl, "{\"type\": \"check\", \"what\": \"quota: exact TG_EQUOTA count past "
                             "max_tokens\", \"pass\": true"));
  free(jl);
  tgt_run_free(&r);
}

/* concurrent-recall reports the writers alone (a reference), the writes and
   the reads with readers (each with its latency percentiles), and the
   ratio of the writers' rates. run_ok() requires exit status 0: the
   figures' targets are not checks, the calls' success is. */
static void test_stress_concurrent_recall_reports_both_sides_and_the_ratio(void **state) {
  (void)state;
  char cfg[300];
  snprintf(cfg, sizeof cfg, "%s/conc.ini", tgt_root);
  tgt_write_file(cfg, "[stress]\nphases = concurrent-recall\nconc_writers = 2\n"
                      "conc_readers = 2\nconc_ops = 20000\n");
  const char *args[] = {"--config", cfg, "--json", NULL};
  tgt_run_out r = run_ok(NULL, args);
  assert_true(json_valid(r.out));
  assert_non_null(strstr(r.out, "\"name\": \"concurrent-recall-writers-alone\", \"level\": null, "
                                "\"ops\": 40000,"));
  assert_non_null(strstr(r.out, "\"name\": \"concurrent-recall-writes\", \"level\": null, "
                                "\"ops\": 40000,"));
  assert_non_null(strstr(r.out, "\"name\": \"concurrent-recall-reads\""));
  assert_non_null(strstr(r.out, "concurrent-recall: writers with readers / alone"));
  assert_non_null(strstr(r.out, "concurrent-recall: read P99.9"));
  assert_non_null(strstr(r.out, "every call succeeds\", \"pass\": true"));
  assert_non_null(strstr(r.out, "readers made progress\", \"pass\": true"));
  tgt_run_free(&r);
}

static void test_stress_every_shipped_config_loads(void **state) {
  (void)state;
  const char *names[] = {"default", "strict", "relaxed", "quota-exhaustion", "memory-pressure",
                         "backpressure", "multi-writer", "concurrent-recall"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s.ini", TG_CONFIG_DIR, names[i]);
    const char *args[] = {"--config", path, "--check-config", NULL};
    tgt_run_out r = run_ok(NULL, args);
    tgt_run_free(&r);
    /* and by bare name, found relative to the executable: in the build
       tree, the copy beside it */
    const char *args2[] = {"--config", names[i], "--check-config", NULL};
    r = run_ok(NULL, args2);
    char want[300];
    snprintf(want, sizeof want, "share/tokengraph/configs/%s.ini: ok", names[i]);
    assert_non_null(strstr(r.out, want));
    tgt_run_free(&r);
  }
  const char *none[] = {"--check-config", NULL};
  tgt_run_out r = run_ok(NULL, none); /* no --config: default.ini */
  assert_non_null(strstr(r.out, "default.ini: ok"));
  tgt_run_free(&r);
}

static void test_stress_plot_without_gnuplot_is_not_a_failure(void **state) {
  (void)state;
  char cfg[300], png[300];
  snprintf(cfg, sizeof cfg, "%s/plot.ini", tgt_root);
  snprintf(png, sizeof png, "%s/plot.png", tgt_root);
  tgt_write_file(cfg, "[stress]\nphases = quota-exhaustion\nquota_tokens = 100\nquota_overflow = 5\n");
  const char *args[] = {"--config", cfg, "--plot", png, NULL};
  tgt_run_out r = run_ok("/nonexistent", args);
  assert_non_null(strstr(r.err, "gnuplot is not installed"));
  assert_non_null(strstr(r.out, "result: ok"));
  tgt_run_free(&r);
}

static void test_stress_help_version_and_bad_option(void **state) {
  (void)state;
  const char *help[] = {"--help", NULL};
  tgt_run_out r = run_ok(NULL, help);
  assert_non_null(strstr(r.out, "usage: tg-stress"));
  tgt_run_free(&r);
  const char *version[] = {"--version", NULL};
  r = run_ok(NULL, version);
  char want[64];
  snprintf(want, sizeof want, "tg-stress %s\n", tg_version());
  assert_string_equal(r.out, want);
  tgt_run_free(&r);
  const char *bad[] = {"--frobnicate", NULL};
  r = run(NULL, bad);
  assert_int_equal(r.status, 64);
  tgt_run_free(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    TGT_TEST(test_stress_help_version_and_bad_option),
    TGT_TEST(test_stress_every_shipped_config_loads),
    TGT_TEST(test_stress_config_error_names_file_line_and_key),
    TGT_TEST(test_stress_quota_exhaustion_counts_exact_rejections),
    TGT_TEST(test_stress_concurrent_recall_reports_both_sides_and_the_ratio),
    TGT_TEST(test_stress_plot_without_gnuplot_is_not_a_failure),
    TGT_TEST(test_stress_json_summary_parses_and_passes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
