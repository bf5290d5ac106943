/*
 * tg-stress: load-test tokengraph under a quota configuration and report
 * each phase next to references measured in the same run.
 *
 *   tg-stress --config FILE|NAME [--dir DIR] [--json] [--report FILE.jsonl]
 *             [--plot FILE.png] [--nats-url URL] [--check-config] [--help] [--version]
 *
 * The phases, the configuration keys and the report are described in
 * docs/stress.md. Uses only the public headers.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "stress.h"
#include "tokengraph/trace.h"

/* Where the shipped configs are, relative to the executable's directory: the
   install layout (bindir to datadir), then the build tree, where CMake copies
   them beside the programs. No absolute build or source path is compiled in,
   so an installed binary does not point back into the tree it was built in. */
#define TG_STRESS_BUILD_CONFIG_DIR "share/tokengraph/configs"
#ifndef TG_STRESS_REL_CONFIG_DIR
#define TG_STRESS_REL_CONFIG_DIR "../share/tokengraph/configs"
#endif
#ifndef TG_STRESS_INSTALLED_CONFIG_DIR
#define TG_STRESS_INSTALLED_CONFIG_DIR "/usr/local/share/tokengraph/configs"
#endif

/* ---- helpers -------------------------------------------------------------- */

const char *ts_level_name(int level) {
  switch (level) {
  case TG_STRICT: return "strict";
  case TG_BALANCED: return "balanced";
  case TG_RELAXED: return "relaxed";
  case TG_REPLICATED: return "replicated";
  default: return "-";
  }
}

void ts_progress(ts_run *r, const char *fmt, ...) {
  if (!r->progress) return;
  char line[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\r\033[K[tg-stress] %s", line);
  fflush(stderr);
}

ts_result *ts_result_add(ts_run *r, const char *kind, const char *name, int level) {
  if (r->nres >= (int)(sizeof r->res / sizeof r->res[0])) {
    fprintf(stderr, "tg-stress: too many result rows\n");
    exit(70);
  }
  ts_result *x = &r->res[r->nres++];
  memset(x, 0, sizeof *x);
  x->kind = kind;
  x->level = level;
  x->ratio = -1;
  x->rss_per_token = -1;
  if (level >= 0)
    snprintf(x->name, sizeof x->name, "%s@%s", name, ts_level_name(level));
  else
    snprintf(x->name, sizeof x->name, "%s", name);
  return x;
}

void ts_figure_add(ts_run *r, const char *what, double value, const char *unit,
                   const char *target, int met) {
  if (r->nfig >= (int)(sizeof r->fig / sizeof r->fig[0])) return;
  ts_figure *f = &r->fig[r->nfig++];
  snprintf(f->what, sizeof f->what, "%s", what);
  snprintf(f->unit, sizeof f->unit, "%s", unit);
  snprintf(f->target, sizeof f->target, "%s", target ? target : "");
  f->value = value;
  f->met = met;
}

int ts_check_add(ts_run *r, int pass, const char *what, const char *fmt, ...) {
  if (r->nchk < (int)(sizeof r->chk / sizeof r->chk[0])) {
    ts_check *c = &r->chk[r->nchk++];
    snprintf(c->what, sizeof c->what, "%s", what);
    c->pass = pass;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->detail, sizeof c->detail, fmt, ap);
    va_end(ap);
  }
  return pass;
}

void ts_repl_cfg(ts_run *r, tg_store_config *sc, int level) {
  if (level != TG_REPLICATED) return;
  /* The names cycle through a fixed table: a phase uses one name for the
     stores it opens (the crash phase reopens under the same name), and no
     run opens anywhere near 32 replicated stores at once. */
  char *name = r->repl_names[r->repl_seq++ % 32];
  snprintf(name, sizeof r->repl_names[0], "%s-%ld-%u", r->cfg->repl_name, (long)getpid(),
           r->repl_seq);
  sc->nats_url = r->cfg->nats_url;
  sc->repl_name = name;
}

int ts_open(ts_run *r, const char *what, tg_store **s, const char *dir,
            const tg_store_config *cfg) {
  char msg[256] = "";
  int rc = tg_store_open_msg(s, dir, cfg, msg, sizeof msg);
  if (rc) {
    char check[96];
    snprintf(check, sizeof check, "%s: open", what);
    ts_check_add(r, 0, check, "%s %s", tg_strerror(rc), msg);
  }
  return rc;
}

void *ts_xcalloc(size_t n) {
  void *p = calloc(1, n ? n : 1);
  if (!p) {
    fprintf(stderr, "tg-stress: out of memory\n");
    exit(70);
  }
  return p;
}

void ts_keep_round(ts_result *x, double sec) {
  if (x->nrounds < TS_MAX_ROUNDS) x->round_sec[x->nrounds++] = sec;
  if (x->seconds == 0 || sec < x->seconds) x->seconds = sec;
}

void ts_latency(ts_run *r, ts_result *res, uint64_t *v, size_t n) {
  if (!n) return;
  tgp_sort_u64(v, n);
  res->have_lat = 1;
  res->lat_samples = n;
  res->p50 = (double)tgp_quantile_sorted(v, n, 0.50) * r->ns_per_tick;
  res->p95 = (double)tgp_quantile_sorted(v, n, 0.95) * r->ns_per_tick;
  res->p99 = (double)tgp_quantile_sorted(v, n, 0.99) * r->ns_per_tick;
  res->p999 = (double)tgp_quantile_sorted(v, n, 0.999) * r->ns_per_tick;
}

/* ---- configuration ------------------------------------------------------- */

/* The plain integer keys of [stress]: X(name, default, least, greatest).
   The defaults, the parser and the list of known keys all come from here;
   the keys with rules of their own (a list, a power of two) follow. */
#define TS_U64_KEYS(X)                                                         \
  X(tokens, 1000000, 1, 4000000000)                                            \
  X(rounds, 3, 1, TS_MAX_ROUNDS)                                               \
  X(wal_every, 1000, 1, 1000000000)                                            \
  X(wal_tokens, 1000000, 1, 4000000000)                                        \
  X(strict_ops, 2000, 1, 100000000)                                            \
  X(metrics_interval_ms, 100, 0, 3600000)                                      \
  X(crash_ops, 100000, 1, 100000000)                                           \
  X(trace_tokens, 1000000, 1, 4000000000)                                      \
  X(quota_tokens, 100000, 1, 100000000)                                        \
  X(quota_overflow, 1000, 0, 100000000)                                        \
  X(pressure_memory_bytes, 16u << 20, 65536, 1ull << 40)                       \
  X(pressure_tokens, 500000, 1, 1000000000)                                    \
  X(persistent_every, 100, 0, 1000000000)                                      \
  X(backpressure_ops, 100000, 1, 100000000)                                    \
  X(conc_writers, 1, 1, 64)                                                    \
  X(conc_readers, 2, 0, 64)                                                    \
  X(conc_ops, 1000000, 1, 1000000000)

#define TS_KEY_NAME(name, def, lo, hi) #name,
static const char *const key_names[] = {
    "phases", "threads", "sample_every", "levels", "backpressure_ring", "nats_url",
    "repl_name", TS_U64_KEYS(TS_KEY_NAME)};
#undef TS_KEY_NAME
#define NKEYS (sizeof key_names / sizeof key_names[0])

typedef struct load_ctx {
  ts_config scratch;   /* applied only when the whole file loaded */
  int levels_set;
  int seen[NKEYS];
  char why[160];
} load_ctx;

static int parse_level(const char *w, size_t n) {
  if (n == 6 && !strncasecmp(w, "strict", 6)) return TG_STRICT;
  if (n == 8 && !strncasecmp(w, "balanced", 8)) return TG_BALANCED;
  if (n == 7 && !strncasecmp(w, "relaxed", 7)) return TG_RELAXED;
  if (n == 10 && !strncasecmp(w, "replicated", 10)) return TG_REPLICATED;
  return -1;
}

static const struct {
  const char *name;
  unsigned bits;
} phase_names[] = {
    {"baseline", TS_BASELINE},
    {"full-stack", TS_FULL_STACK},
    {"crash", TS_CRASH},
    {"tracing", TS_TRACING},
    {"quota-exhaustion", TS_QUOTA},
    {"memory-pressure", TS_PRESSURE},
    {"backpressure", TS_BACKPRESSURE},
    {"concurrent-recall", TS_CONC_RECALL},
    {"quota", TS_QUOTA | TS_PRESSURE | TS_BACKPRESSURE},
    {"all", 0xFF},
};

/* Split a list on commas and blanks; call fn for each word. */
static const char *each_word(const char *v, const char *(*fn)(load_ctx *, const char *, size_t),
                             load_ctx *c) {
  const char *p = v;
  int words = 0;
  while (*p) {
    while (*p == ',' || *p == ' ' || *p == '\t') p++;
    if (!*p) break;
    const char *w = p;
    while (*p && *p != ',' && *p != ' ' && *p != '\t') p++;
    const char *why = fn(c, w, (size_t)(p - w));
    if (why) return why;
    words++;
  }
  return words ? NULL : "empty list";
}

static const char *add_phase(load_ctx *c, const char *w, size_t n) {
  for (size_t i = 0; i < sizeof phase_names / sizeof phase_names[0]; i++)
    if (strlen(phase_names[i].name) == n && !strncmp(phase_names[i].name, w, n)) {
      c->scratch.phases |= phase_names[i].bits;
      return NULL;
    }
  snprintf(c->why, sizeof c->why,
           "unknown phase '%.*s' (baseline, full-stack, crash, tracing, "
           "quota-exhaustion, memory-pressure, backpressure, concurrent-recall, quota, all)",
           (int)(n > 40 ? 40 : n), w);
  return c->why;
}

static const char *add_level(load_ctx *c, const char *w, size_t n) {
  int l = parse_level(w, n);
  if (l < 0) return "not a durability level (strict, balanced, relaxed, replicated)";
  for (int i = 0; i < c->scratch.nlevels; i++)
    if (c->scratch.levels[i] == l) return "level listed twice";
  c->scratch.levels[c->scratch.nlevels++] = l;
  return NULL;
}

static const char *stress_key(void *arg, const char *key, const char *value) {
  load_ctx *c = arg;
  ts_config *s = &c->scratch;
  size_t k = 0;
  while (k < NKEYS && strcmp(key_names[k], key)) k++;
  if (k == NKEYS) return "unknown key in [stress] (see docs/stress.md)";
  if (c->seen[k]) return "set twice";
  c->seen[k] = 1;
  uint64_t v = 0;
#define U64(name, def, lo, hi)                                                 \
  if (!strcmp(key, #name)) {                                                   \
    if (tgp_parse_u64(value, lo, hi, &v)) return "not an integer in [" #lo ", " #hi "]"; \
    s->name = v;                                                               \
    return NULL;                                                               \
  }
  if (!strcmp(key, "phases")) {
    s->phases = 0;
    return each_word(value, add_phase, c);
  }
  if (!strcmp(key, "levels")) {
    s->nlevels = 0;
    c->levels_set = 1;
    return each_word(value, add_level, c);
  }
  if (!strcmp(key, "threads")) {
    if (tgp_parse_u64(value, 1, TS_MAX_THREADS, &v)) return "not an integer in [1, 64]";
    s->threads = (uint32_t)v;
    return NULL;
  }
  if (!strcmp(key, "sample_every")) {
    if (tgp_parse_u64(value, 1, 1u << 20, &v) || (v & (v - 1)))
      return "not a power of two in [1, 1048576]";
    s->sample_every = (uint32_t)v;
    return NULL;
  }
  if (!strcmp(key, "nats_url")) {
    if (!*value || strlen(value) >= sizeof s->nats_url) return "empty or longer than 511 characters";
    snprintf(s->nats_url, sizeof s->nats_url, "%s", value);
    return NULL;
  }
  if (!strcmp(key, "repl_name")) {
    /* The stream name is repl_name-PID-N, within the library's 64. */
    size_t n = strlen(value);
    if (n < 1 || n > 40 || strspn(value, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                         "0123456789_-") != n)
      return "not 1..40 characters of [A-Za-z0-9_-]";
    snprintf(s->repl_name, sizeof s->repl_name, "%s", value);
    return NULL;
  }
  if (!strcmp(key, "backpressure_ring")) {
    if (tgp_parse_u64(value, 2, 1u << 24, &v) || (v & (v - 1)))
      return "not a power of two in [2, 16777216]";
    s->backpressure_ring = (uint32_t)v;
    return NULL;
  }
  TS_U64_KEYS(U64)
#undef U64
  return "unknown key in [stress]";
}

static void config_defaults(ts_config *c) {
  memset(c, 0, sizeof *c);
  tg_store_config_init(&c->store);
  c->phases = 0xFF;
  c->threads = 1;
  c->sample_every = 64;
  c->backpressure_ring = 64;
  snprintf(c->repl_name, sizeof c->repl_name, "tgstress");
  snprintf(c->nats_url, sizeof c->nats_url, "nats://127.0.0.1:4222");
#define TS_DEFAULT(name, def, lo, hi) c->name = def;
  TS_U64_KEYS(TS_DEFAULT)
#undef TS_DEFAULT
}

/* Line of `key` in [section] of path (for errors about a value that was
   valid alone but not with the rest), 0 if not found. */
static int key_line(const char *path, const char *section, const char *key) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  char buf[1024], cur[128] = "";
  int line = 0, found = 0;
  while (!found && fgets(buf, sizeof buf, f)) {
    line++;
    char *p = buf;
    while (*p == ' ' || *p == '\t') p++;
    if (*p == '[') {
      char *e = strchr(p, ']');
      if (e) snprintf(cur, sizeof cur, "%.*s", (int)(e - p - 1), p + 1);
      continue;
    }
    size_t n = strlen(key);
    if (!strcmp(cur, section) && !strncmp(p, key, n) &&
        (p[n] == ' ' || p[n] == '\t' || p[n] == '=' || p[n] == ':'))
      found = line;
  }
  fclose(f);
  return found;
}

static int load_config(ts_config *out, const char *path, char *err, size_t errlen) {
  load_ctx *c = calloc(1, sizeof *c);
  if (!c) return TG_ENOMEM;
  config_defaults(&c->scratch);
  snprintf(c->scratch.path, sizeof c->scratch.path, "%s", path);
  tg_store_config store = c->scratch.store;
  int rc = tg_config_load_app(&store, path, "stress", stress_key, c, err, errlen);
  if (rc) goto out;
  if (!c->levels_set) {
    c->scratch.nlevels = 1;
    c->scratch.levels[0] = store.wal.level;
  }
  /* [wal] level = replicated names the level of the durable phases; the
     stores of the other phases (baseline, memory pressure) keep no stream,
     so they run at BALANCED. */
  if (store.wal.level == TG_REPLICATED) store.wal.level = TG_BALANCED;
  c->scratch.store = store;
  /* Cross-key rules, checked once both sections are known. */
  if ((c->scratch.phases & (TS_BASELINE | TS_FULL_STACK | TS_TRACING)) &&
      c->scratch.tokens > store.guardian.max_tokens) {
    snprintf(err, errlen, "%.1500s:%d: key 'tokens': %llu is above [guardian] max_tokens %llu "
             "(the creation phases expect no rejection)", path,
             key_line(path, "stress", "tokens"), (unsigned long long)c->scratch.tokens,
             (unsigned long long)store.guardian.max_tokens);
    rc = TG_ECONFIG;
    goto out;
  }
  if ((c->scratch.phases & TS_BASELINE) &&
      c->scratch.tokens * 64 > (uint64_t)((double)store.guardian.max_memory_bytes *
                                          store.guardian.memory_threshold)) {
    snprintf(err, errlen, "%.1500s:%d: key 'tokens': %llu tokens of 64 bytes pass the soft "
             "memory limit (max_memory_bytes * memory_threshold): eviction would run",
             path, key_line(path, "stress", "tokens"), (unsigned long long)c->scratch.tokens);
    rc = TG_ECONFIG;
    goto out;
  }
  *out = c->scratch;
out:
  free(c);
  return rc;
}

/* --config NAME without a slash or ".ini" is a shipped config: look for it
   relative to the executable (an installed copy in any prefix, or the build
   tree), then in the configured data directory (a binary copied alone). */
static int resolve_config(const char *arg, char *out, size_t outlen) {
  if (strchr(arg, '/') || (strlen(arg) > 4 && !strcmp(arg + strlen(arg) - 4, ".ini"))) {
    snprintf(out, outlen, "%s", arg);
    return 0;
  }
  char exe[4096] = "";
  int have_exe = tgp_exe_dir(exe, sizeof exe) == 0;
  const char *rel[] = {TG_STRESS_REL_CONFIG_DIR, TG_STRESS_BUILD_CONFIG_DIR};
  for (size_t i = 0; have_exe && i < 2; i++) {
    snprintf(out, outlen, "%.3000s%.300s/%.200s.ini", exe, rel[i], arg);
    if (access(out, R_OK) == 0) return 0;
  }
  snprintf(out, outlen, "%.3000s/%.200s.ini", TG_STRESS_INSTALLED_CONFIG_DIR, arg);
  if (access(out, R_OK) == 0) return 0;
  snprintf(out, outlen, "%s", arg);
  return -1;
}

/* ---- report --------------------------------------------------------------- */

static void fmt_ns(char *b, size_t n, int have, double ns) {
  if (!have) snprintf(b, n, "-");
  else if (ns < 1000) snprintf(b, n, "%.0fns", ns);
  else if (ns < 1e6) snprintf(b, n, "%.1fus", ns / 1e3);
  else snprintf(b, n, "%.2fms", ns / 1e6);
}

static void fmt_rate(char *b, size_t n, double ops_per_sec) {
  if (ops_per_sec >= 1e6) snprintf(b, n, "%.2fM/s", ops_per_sec / 1e6);
  else if (ops_per_sec >= 1e3) snprintf(b, n, "%.1fK/s", ops_per_sec / 1e3);
  else snprintf(b, n, "%.0f/s", ops_per_sec);
}

static void print_table(FILE *f, const ts_run *r) {
  const ts_config *c = r->cfg;
  fprintf(f, "tg-stress  config %s\n", c->path);
  char levels[64] = "";
  for (int l = 0; l < c->nlevels; l++)
    snprintf(levels + strlen(levels), sizeof levels - strlen(levels), "%s%s", l ? ", " : "",
             ts_level_name(c->levels[l]));
  fprintf(f, "  guardian: max_tokens %llu, max_memory_bytes %llu, threshold %.2f; "
          "wal level %s (durable phases: %s); threads %u; best of %llu round(s)\n",
          (unsigned long long)c->store.guardian.max_tokens,
          (unsigned long long)c->store.guardian.max_memory_bytes,
          c->store.guardian.memory_threshold, ts_level_name(c->store.wal.level),
          levels[0] ? levels : "none", c->threads, (unsigned long long)c->rounds);
  fprintf(f, "  latency: about one operation in %u timed (random gaps of 1..%u, so periodic "
          "events are not aliased) with the\n  cycle counter (%.3f ns/tick); percentiles "
          "over the samples of every round\n\n", c->sample_every, 2 * c->sample_every,
          r->ns_per_tick);
  fprintf(f, "%-34s %11s %9s %10s %8s %8s %8s %8s %8s %7s\n", "phase", "ops", "seconds",
          "throughput", "vs base", "P50", "P95", "P99", "P99.9", "RSS B/t");
  for (int i = 0; i < r->nres; i++) {
    const ts_result *x = &r->res[i];
    if (strcmp(x->kind, "phase")) continue;
    char rate[24], ratio[16], p50[16], p95[16], p99[16], p999[16], rss[16];
    fmt_rate(rate, sizeof rate, x->seconds > 0 ? (double)x->ops / x->seconds : 0);
    if (x->ratio >= 0) snprintf(ratio, sizeof ratio, "%.2fx", x->ratio);
    else snprintf(ratio, sizeof ratio, "-");
    fmt_ns(p50, sizeof p50, x->have_lat, x->p50);
    fmt_ns(p95, sizeof p95, x->have_lat, x->p95);
    fmt_ns(p99, sizeof p99, x->have_lat, x->p99);
    fmt_ns(p999, sizeof p999, x->have_lat, x->p999);
    if (x->rss_per_token >= 0) snprintf(rss, sizeof rss, "%.1f", x->rss_per_token);
    else snprintf(rss, sizeof rss, "-");
    fprintf(f, "%-34s %11llu %9.4f %10s %8s %8s %8s %8s %8s %7s\n", x->name,
            (unsigned long long)x->ops, x->seconds, rate, ratio, p50, p95, p99, p999, rss);
  }
  int any = 0;
  for (int i = 0; i < r->nres; i++) {
    const ts_result *x = &r->res[i];
    if (!x->note[0]) continue;
    if (!any++) fprintf(f, "\nnotes:\n");
    fprintf(f, "  %-34s %s\n", x->name, x->note);
  }
  any = 0;
  for (int i = 0; i < r->nres; i++) {
    const ts_result *x = &r->res[i];
    if (strcmp(x->kind, "reference")) continue;
    if (!any++) fprintf(f, "\nreferences measured in this run:\n");
    char rate[24];
    fmt_rate(rate, sizeof rate, x->seconds > 0 ? (double)x->ops / x->seconds : 0);
    fprintf(f, "  %-36s %11llu %9.4f s %10s\n", x->name, (unsigned long long)x->ops,
            x->seconds, rate);
  }
  if (r->nfig) {
    fprintf(f, "\ntargets (docs/design.md; performance, reported, never failing the run):\n");
    for (int i = 0; i < r->nfig; i++) {
      const ts_figure *g = &r->fig[i];
      fprintf(f, "  %-58s %10.3f %-8s %-10s %s\n", g->what, g->value, g->unit, g->target,
              g->met < 0 ? "" : g->met ? "met" : "MISSED");
    }
  }
  if (r->skipped[0]) fprintf(f, "\nskipped: %s\n", r->skipped);
  fprintf(f, "\nchecks:\n");
  int ok = 1;
  for (int i = 0; i < r->nchk; i++) {
    const ts_check *k = &r->chk[i];
    ok &= k->pass;
    fprintf(f, "  %-4s %-48s %s\n", k->pass ? "ok" : "FAIL", k->what, k->detail);
  }
  fprintf(f, "\nresult: %s\n", ok ? "ok (every check passed)" : "FAILED");
}

static void json_num(FILE *f, int have, double v) {
  if (have && isfinite(v)) fprintf(f, "%.6g", v);
  else fputs("null", f);
}

/* The latency percentiles and RSS of a result, after a `"p50_ns": ` the
   caller has written (shared by the summary object and the JSONL lines). */
static void json_percentiles(FILE *f, const ts_result *x) {
  json_num(f, x->have_lat, x->p50);
  fputs(", \"p95_ns\": ", f);
  json_num(f, x->have_lat, x->p95);
  fputs(", \"p99_ns\": ", f);
  json_num(f, x->have_lat, x->p99);
  fputs(", \"p999_ns\": ", f);
  json_num(f, x->have_lat, x->p999);
  fputs(", \"rss_bytes_per_token\": ", f);
  json_num(f, x->rss_per_token >= 0, x->rss_per_token);
}

static void json_phase(FILE *f, const ts_result *x) {
  fputs("{\"name\": ", f);
  tgp_json_str(f, x->name);
  fprintf(f, ", \"level\": ");
  if (x->level >= 0) tgp_json_str(f, ts_level_name(x->level));
  else fputs("null", f);
  fprintf(f, ", \"ops\": %llu, \"seconds\": %.6f, \"ops_per_sec\": ",
          (unsigned long long)x->ops, x->seconds);
  json_num(f, x->seconds > 0, x->seconds > 0 ? (double)x->ops / x->seconds : 0);
  fputs(", \"ratio_to_baseline\": ", f);
  json_num(f, x->ratio >= 0, x->ratio);
  fputs(", \"p50_ns\": ", f);
  json_percentiles(f, x);
  fputs(", \"note\": ", f);
  tgp_json_str(f, x->note);
  fputc('}', f);
}

/* The members of a target and of a check after the caller's opening '{',
   and the closing '}' (shared by the summary object and the JSONL lines). */
static void json_target(FILE *f, const ts_figure *g) {
  fputs("\"what\": ", f);
  tgp_json_str(f, g->what);
  fputs(", \"value\": ", f);
  json_num(f, 1, g->value);
  fputs(", \"unit\": ", f);
  tgp_json_str(f, g->unit);
  fputs(", \"target\": ", f);
  tgp_json_str(f, g->target);
  fprintf(f, ", \"met\": %s}", g->met < 0 ? "null" : g->met ? "true" : "false");
}

static void json_check(FILE *f, const ts_check *k) {
  fputs("\"what\": ", f);
  tgp_json_str(f, k->what);
  fprintf(f, ", \"pass\": %s, \"detail\": ", k->pass ? "true" : "false");
  tgp_json_str(f, k->detail);
  fputc('}', f);
}

static int run_ok(const ts_run *r) {
  for (int i = 0; i < r->nchk; i++)
    if (!r->chk[i].pass) return 0;
  return 1;
}

static void print_json(FILE *f, const ts_run *r) {
  fputs("{\"config\": ", f);
  tgp_json_str(f, r->cfg->path);
  fputs(", \"phases\": [", f);
  int n = 0;
  for (int i = 0; i < r->nres; i++)
    if (!strcmp(r->res[i].kind, "phase")) {
      fputs(n++ ? ", " : "", f);
      json_phase(f, &r->res[i]);
    }
  fputs("], \"references\": [", f);
  n = 0;
  for (int i = 0; i < r->nres; i++)
    if (!strcmp(r->res[i].kind, "reference")) {
      fputs(n++ ? ", " : "", f);
      json_phase(f, &r->res[i]);
    }
  fputs("], \"targets\": [", f);
  for (int i = 0; i < r->nfig; i++) {
    fputs(i ? ", {" : "{", f);
    json_target(f, &r->fig[i]);
  }
  fputs("], \"checks\": [", f);
  for (int i = 0; i < r->nchk; i++) {
    fputs(i ? ", {" : "{", f);
    json_check(f, &r->chk[i]);
  }
  fputs("], \"skipped\": ", f);
  if (r->skipped[0]) tgp_json_str(f, r->skipped);
  else fputs("null", f);
  fprintf(f, ", \"ok\": %s}\n", run_ok(r) ? "true" : "false");
}

/* The replicated phases need a server at nats_url and a build with libnats:
   a store opened at REPLICATED in a scratch directory says whether both are
   there. Without them the replicated level is dropped from the run (and
   with no level left, the phases that need one), and r->skipped says why:
   a machine without a server is not a failed run. */
static void probe_replication(ts_run *r, ts_config *c) {
  int want = 0;
  for (int l = 0; l < c->nlevels; l++) want |= c->levels[l] == TG_REPLICATED;
  if (!want) return;
  char dir[4300], msg[256] = "";
  snprintf(dir, sizeof dir, "%s/stress-repl-probe", r->dir);
  tgp_rmtree(dir);
  tg_store_config sc = c->store;
  sc.wal.level = TG_REPLICATED;
  sc.crash_dump = 0;
  sc.repl_snapshots = 0;
  ts_repl_cfg(r, &sc, TG_REPLICATED);
  tg_store *s = NULL;
  int rc = tg_store_open_msg(&s, dir, &sc, msg, sizeof msg);
  if (!rc) rc = tg_store_close(s);
  tgp_rmtree(dir);
  if (!rc) return;
  if (rc == TG_ENOTSUP)
    snprintf(r->skipped, sizeof r->skipped,
             "replicated phases: this build has no libnats (TG_WITH_NATS)");
  else
    snprintf(r->skipped, sizeof r->skipped,
             "replicated phases: no NATS JetStream server answers at %.200s (%.200s)",
             c->nats_url, msg[0] ? msg : tg_strerror(rc));
  int n = 0;
  for (int l = 0; l < c->nlevels; l++)
    if (c->levels[l] != TG_REPLICATED) c->levels[n++] = c->levels[l];
  c->nlevels = n;
  if (!n) c->phases &= ~(unsigned)(TS_FULL_STACK | TS_CRASH | TS_QUOTA | TS_BACKPRESSURE);
}

static int write_jsonl(const char *path, const ts_run *r) {
  FILE *f = fopen(path, "w");
  if (!f) return -errno;
  long long now = (long long)time(NULL);
  for (int i = 0; i < r->nres; i++) {
    const ts_result *x = &r->res[i];
    for (int k = 0; k < x->nrounds; k++) {
      fprintf(f, "{\"type\": \"measurement\", \"time\": %lld, \"kind\": \"%s\", \"phase\": ",
              now, x->kind);
      tgp_json_str(f, x->name);
      fprintf(f, ", \"round\": %d, \"ops\": %llu, \"seconds\": %.9f, \"ops_per_sec\": ", k + 1,
              (unsigned long long)x->ops, x->round_sec[k]);
      json_num(f, x->round_sec[k] > 0, (double)x->ops / x->round_sec[k]);
      fputs("}\n", f);
    }
  }
  for (int i = 0; i < r->nres; i++) {
    const ts_result *x = &r->res[i];
    double sum = 0, sq = 0, rsum = 0, rsq = 0;
    for (int k = 0; k < x->nrounds; k++) {
      double rate = x->round_sec[k] > 0 ? (double)x->ops / x->round_sec[k] : 0;
      sum += x->round_sec[k];
      sq += x->round_sec[k] * x->round_sec[k];
      rsum += rate;
      rsq += rate * rate;
    }
    int n = x->nrounds ? x->nrounds : 1;
    double avg = sum / n, ravg = rsum / n;
    double sd = sqrt(fmax(0, sq / n - avg * avg)), rsd = sqrt(fmax(0, rsq / n - ravg * ravg));
    fprintf(f, "{\"type\": \"summary\", \"kind\": \"%s\", \"phase\": ", x->kind);
    tgp_json_str(f, x->name);
    fprintf(f, ", \"rounds\": %d, \"ops\": %llu, \"seconds_avg\": %.9f, \"seconds_stddev\": %.9f, "
            "\"seconds_best\": %.9f, \"ops_per_sec_avg\": %.6g, \"ops_per_sec_stddev\": %.6g, "
            "\"ops_per_sec_best\": ",
            x->nrounds, (unsigned long long)x->ops, avg, sd, x->seconds, ravg, rsd);
    json_num(f, x->seconds > 0, (double)x->ops / x->seconds);
    fputs(", \"ratio_to_baseline\": ", f);
    json_num(f, x->ratio >= 0, x->ratio);
    fprintf(f, ", \"latency_samples\": %llu, \"p50_ns\": ", (unsigned long long)x->lat_samples);
    json_percentiles(f, x);
    fputs("}\n", f);
  }
  for (int i = 0; i < r->nfig; i++) {
    fputs("{\"type\": \"target\", ", f);
    json_target(f, &r->fig[i]);
    fputc('\n', f);
  }
  for (int i = 0; i < r->nchk; i++) {
    fputs("{\"type\": \"check\", ", f);
    json_check(f, &r->chk[i]);
    fputc('\n', f);
  }
  fprintf(f, "{\"type\": \"result\", \"ok\": %s", run_ok(r) ? "true" : "false");
  if (r->skipped[0]) {
    fputs(", \"skipped\": ", f);
    tgp_json_str(f, r->skipped);
  }
  fputs("}\n", f);
  int rc = ferror(f) ? -EIO : 0;
  if (fclose(f) && !rc) rc = -errno;
  return rc;
}

/* Look for an executable on PATH. */
static int on_path(const char *prog) {
  const char *path = getenv("PATH");
  if (!path) return 0;
  char buf[4096];
  while (*path) {
    const char *e = strchr(path, ':');
    size_t n = e ? (size_t)(e - path) : strlen(path);
    snprintf(buf, sizeof buf, "%.*s/%s", (int)n, n ? path : ".", prog);
    if (access(buf, X_OK) == 0) return 1;
    path += n + (e ? 1 : 0);
  }
  return 0;
}

/* Two panels: throughput per phase (log scale) and the latency percentiles
   of the phases that sampled latency. Phase names carry the level. */
static int write_plot(const char *png, const ts_run *r, const char *tmpdir) {
  if (!on_path("gnuplot")) {
    fprintf(stderr, "tg-stress: --plot: gnuplot is not installed (on Debian: apt-get install "
            "gnuplot-nox); no plot written, the run itself is unaffected\n");
    return 0;
  }
  char dat[4300], gp[4300];
  snprintf(dat, sizeof dat, "%.4200s/plot.dat", tmpdir);
  snprintf(gp, sizeof gp, "%.4200s/plot.gp", tmpdir);
  FILE *d = fopen(dat, "w"), *g = fopen(gp, "w");
  if (!d || !g) {
    if (d) fclose(d);
    if (g) fclose(g);
    fprintf(stderr, "tg-stress: --plot: cannot write %s\n", tmpdir);
    return -1;
  }
  int nlat = 0, nrow = 0;
  fprintf(d, "# name ops_per_sec p50 p95 p99 p999 (ns)\n");
  for (int i = 0; i < r->nres; i++) {
    const ts_result *x = &r->res[i];
    if (x->seconds <= 0) continue;
    fprintf(d, "\"%s%s\" %.6g", strcmp(x->kind, "phase") ? "ref:" : "", x->name,
            (double)x->ops / x->seconds);
    if (x->have_lat) {
      fprintf(d, " %.6g %.6g %.6g %.6g\n", fmax(x->p50, 1), fmax(x->p95, 1), fmax(x->p99, 1),
              fmax(x->p999, 1));
      nlat++;
    } else {
      fprintf(d, " NaN NaN NaN NaN\n");
    }
    nrow++;
  }
  fclose(d);
  fprintf(g, "set terminal png size 1400,1000 font ',9'\n");
  fprintf(g, "set output '%s'\n", png);
  fprintf(g, "set multiplot layout 2,1 title 'tg-stress %s'\n", r->cfg->path);
  fprintf(g, "set style data histogram\nset style histogram clustered gap 1\n"
             "set style fill solid 0.8 border -1\nset boxwidth 0.9\n"
             "set xtics rotate by -35 noenhanced\nset logscale y\nset grid ytics\n"
             "set key noenhanced\nset bmargin 9\n");
  fprintf(g, "set ylabel 'operations per second'\nset title 'throughput per phase "
             "(best round)'\n");
  fprintf(g, "plot '%s' using 2:xtic(1) title 'ops/s' lc rgb '#3070b0'\n", dat);
  fprintf(g, "set yrange [1:*]\nset ylabel 'latency (ns)'\nset title 'latency percentiles (sampled ops)'\n");
  fprintf(g, "plot '%s' using 3:xtic(1) title 'P50', '' using 4 title 'P95', "
             "'' using 5 title 'P99', '' using 6 title 'P99.9'\n", dat);
  fprintf(g, "unset multiplot\n");
  fclose(g);
  (void)nlat;
  (void)nrow;
  char cmd[8600];
  snprintf(cmd, sizeof cmd, "gnuplot '%s' 2>&1", gp);
  int st = system(cmd);
  if (st != 0) {
    fprintf(stderr, "tg-stress: --plot: gnuplot failed (status %d); script kept in %s\n",
            WIFEXITED(st) ? WEXITSTATUS(st) : st, gp);
    return -1;
  }
  return 0;
}

/* ---- main ------------------------------------------------------------------- */

static void usage(FILE *f) {
  fprintf(f,
          "usage: tg-stress [--config FILE|NAME] [--dir DIR] [--json] [--report FILE.jsonl]\n"
          "                 [--plot FILE.png] [--nats-url URL] [--check-config] [--help]\n"
          "                 [--version]\n\n"
          "Load-tests tokengraph under a quota configuration: baseline token creation,\n"
          "the full stack (guardian + WAL + metrics + tracing at 1%%) with a WAL record for\n"
          "every token and for every 1,000th token, crash recovery (fork, SIGKILL, reopen,\n"
          "every acknowledged operation checked), tracing overhead, and quota behaviour\n"
          "(exhaustion, memory pressure, backpressure), each next to references measured\n"
          "in the same run. See docs/stress.md.\n\n"
          "  --config FILE|NAME  an INI file, or the name of a shipped config (default,\n"
          "                      strict, relaxed, quota-exhaustion, memory-pressure,\n"
          "                      backpressure, multi-writer, concurrent-recall,\n"
          "                      replicated).\n"
          "                      Default: default\n"
          "                      (NAME.ini is searched in %s and then %s\n"
          "                      beside the executable, then in %s)\n"
          "  --dir DIR           work in DIR (created if missing; kept afterwards).\n"
          "                      Default: a temporary directory, removed afterwards\n"
          "  --json              print one JSON summary object instead of the table\n"
          "  --report FILE       write JSON lines: one per measurement, then summaries\n"
          "  --plot FILE.png     draw throughput and latency per phase (needs gnuplot)\n"
          "  --nats-url URL      the NATS server of the replicated phases (replaces the\n"
          "                      config's nats_url; without a server answering there\n"
          "                      those phases are skipped, not failed)\n"
          "  --check-config      load and validate the config, run nothing\n"
          "  --help              this text\n"
          "  --version           print the program's and the library's version\n\n"
          "Exit status: 0 every check passed; 1 a check failed (a lost acknowledged\n"
          "operation, an unexpected quota result); 2 an error; 64 bad usage or config.\n",
          TG_STRESS_REL_CONFIG_DIR, TG_STRESS_BUILD_CONFIG_DIR, TG_STRESS_INSTALLED_CONFIG_DIR);
}

int main(int argc, char **argv) {
  const char *config_arg = "default", *dir_arg = NULL, *report = NULL, *plot = NULL;
  const char *nats_url = NULL;
  int json = 0, check_only = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char **val = NULL;
    if (!strcmp(a, "--config")) val = &config_arg;
    else if (!strcmp(a, "--dir")) val = &dir_arg;
    else if (!strcmp(a, "--report")) val = &report;
    else if (!strcmp(a, "--plot")) val = &plot;
    else if (!strcmp(a, "--nats-url")) val = &nats_url;
    else if (!strcmp(a, "--json")) json = 1;
    else if (!strcmp(a, "--check-config")) check_only = 1;
    else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(a, "--version")) {
      tgp_print_version("tg-stress");
      return 0;
    } else {
      fprintf(stderr, "tg-stress: unknown option '%s'\n", a);
      usage(stderr);
      return 64;
    }
    if (val) {
      if (i + 1 >= argc) {
        fprintf(stderr, "tg-stress: %s needs a value\n", a);
        return 64;
      }
      *val = argv[++i];
    }
  }

  static ts_config cfg;
  char path[4096], err[4096];
  if (resolve_config(config_arg, path, sizeof path)) {
    fprintf(stderr, "tg-stress: no config '%s' (looked for %s.ini in %s and %s beside the "
            "executable and in %s)\n", config_arg, config_arg, TG_STRESS_REL_CONFIG_DIR,
            TG_STRESS_BUILD_CONFIG_DIR, TG_STRESS_INSTALLED_CONFIG_DIR);
    return 64;
  }
  int rc = load_config(&cfg, path, err, sizeof err);
  if (rc) {
    fprintf(stderr, "tg-stress: %s\n", err[0] ? err : tg_strerror(rc));
    return 64;
  }
  if (nats_url) {
    if (!*nats_url || strlen(nats_url) >= sizeof cfg.nats_url) {
      fprintf(stderr, "tg-stress: --nats-url: empty or longer than %zu characters\n",
              sizeof cfg.nats_url - 1);
      return 64;
    }
    snprintf(cfg.nats_url, sizeof cfg.nats_url, "%s", nats_url);
  }
  if (check_only) {
    printf("%s: ok\n", path);
    return 0;
  }

  char dirbuf[4200];
  int temp = 0;
  if (dir_arg) {
    if (mkdir(dir_arg, 0700) && errno != EEXIST) {
      fprintf(stderr, "tg-stress: cannot create %s: %s\n", dir_arg, strerror(errno));
      return 2;
    }
    snprintf(dirbuf, sizeof dirbuf, "%s", dir_arg);
  } else {
    int mrc = tgp_mkdtemp(dirbuf, sizeof dirbuf, NULL, "tg-stress");
    if (mrc) {
      fprintf(stderr, "tg-stress: cannot create a temporary directory %s: %s\n", dirbuf,
              strerror(-mrc));
      return 2;
    }
    temp = 1;
  }

  static ts_run run;
  run.cfg = &cfg;
  run.dir = dirbuf;
  run.progress = isatty(2);
  run.ns_per_tick = tgp_ns_per_tick();
  double rate0 = tg_trace_get_rate();
  probe_replication(&run, &cfg);
  if (run.skipped[0]) fprintf(stderr, "tg-stress: skipped: %s\n", run.skipped);

  int err_phase = 0;
  if (cfg.phases & TS_BASELINE) err_phase |= ts_phase_baseline(&run);
  if (cfg.phases & TS_FULL_STACK)
    for (int l = 0; l < cfg.nlevels; l++) err_phase |= ts_phase_full_stack(&run, cfg.levels[l]);
  if (cfg.phases & TS_CRASH)
    for (int l = 0; l < cfg.nlevels; l++) err_phase |= ts_phase_crash(&run, cfg.levels[l]);
  if (cfg.phases & TS_TRACING) err_phase |= ts_phase_tracing(&run);
  if (cfg.phases & TS_QUOTA) err_phase |= ts_phase_quota(&run);
  if (cfg.phases & TS_PRESSURE) err_phase |= ts_phase_pressure(&run);
  if (cfg.phases & TS_BACKPRESSURE)
    for (int l = 0; l < cfg.nlevels; l++) err_phase |= ts_phase_backpressure(&run, cfg.levels[l]);
  if (cfg.phases & TS_CONC_RECALL) err_phase |= ts_phase_concurrent(&run);
  tg_trace_set_rate(rate0);
  if (run.progress) fprintf(stderr, "\r\033[K");

  if (json) print_json(stdout, &run);
  else print_table(stdout, &run);
  fflush(stdout);

  int status = err_phase ? 2 : run_ok(&run) ? 0 : 1;
  if (report) {
    int w = write_jsonl(report, &run);
    if (w) {
      fprintf(stderr, "tg-stress: cannot write %s: %s\n", report, tg_strerror(w));
      if (!status) status = 2;
    }
  }
  if (plot && write_plot(plot, &run, dirbuf) && !status) status = 2;
  if (temp) tgp_rmtree(dirbuf);
  else if (!json) printf("data kept in %s\n", dirbuf);
  return status;
}
