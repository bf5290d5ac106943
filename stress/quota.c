/*
 * tg-stress quota behaviour: exhaustion of max_tokens (exact rejections,
 * nothing changed, nothing logged), eviction under memory pressure, and
 * backpressure from a small WAL ring (nonblocking: TG_EAGAIN counted and
 * nothing acknowledged lost; blocking: time blocked reported).
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "stress.h"
#include "tokengraph/trace.h"

/* Soft memory limit a guardian config implies. */
static uint64_t soft_limit(const tg_guardian_config *g) {
  return (uint64_t)((double)g->max_memory_bytes * g->memory_threshold);
}

/* ---- quota exhaustion ---- */

/* Durable part: once max_tokens is reached, a rejected create logs nothing
   and the log replays to exactly max_tokens tokens. */
static void exhaustion_durable(ts_run *r, uint64_t max, uint64_t overflow) {
  const ts_config *c = r->cfg;
  int level = c->levels[0];
  char dir[4300];
  snprintf(dir, sizeof dir, "%s/stress-quota-%s", r->dir, ts_level_name(level));
  tgp_rmtree(dir);
  tg_store_config sc = c->store;
  sc.wal.level = level;
  sc.crash_dump = 0;
  sc.guardian.max_tokens = max;
  ts_repl_cfg(r, &sc, level);
  tg_store *s = NULL;
  char msg[256] = "";
  int rc = ts_open(r, "quota (durable)", &s, dir, &sc);
  if (rc) return;
  tg_token t; /* ts_fill sets every field before each create */
  uint64_t ok = 0, rejected = 0, other = 0;
  for (uint64_t i = 0; i < max + overflow; i++) {
    ts_fill(&t, i);
    rc = tg_token_create(s, &t, NULL);
    if (rc == 0) ok++;
    else if (rc == TG_EQUOTA) rejected++;
    else other++;
  }
  tg_store_stats after;
  tg_store_stats_get(s, &after);
  uint64_t lsn = after.last_lsn;
  int src = tg_sync(s), crc = tg_store_close(s);
  s = NULL;
  rc = tg_store_open_msg(&s, dir, &sc, msg, sizeof msg);
  tg_store_stats re;
  memset(&re, 0, sizeof re);
  if (!rc) tg_store_stats_get(s, &re);
  tg_store_close(s);
  char what[96];
  snprintf(what, sizeof what, "quota@%s: rejected creates log nothing", ts_level_name(level));
  ts_check_add(r, !rc && !src && !crc && ok == max && rejected == overflow && !other &&
                      lsn == max && re.live_tokens == max && re.last_lsn == max,
               what,
               "%llu created, %llu rejected (expected %llu), last LSN %llu (expected %llu), "
               "%llu tokens after reopen%s%s",
               (unsigned long long)ok, (unsigned long long)rejected,
               (unsigned long long)overflow, (unsigned long long)lsn, (unsigned long long)max,
               (unsigned long long)re.live_tokens, rc ? ", reopen: " : "",
               rc ? msg : "");
}

int ts_phase_quota(ts_run *r) {
  const ts_config *c = r->cfg;
  uint64_t max = c->quota_tokens, over = c->quota_overflow;
  ts_result *x = ts_result_add(r, "phase", "quota-exhaustion", -1);
  x->ops = max + over;
  ts_progress(r, "quota-exhaustion: %llu creates, %llu past max_tokens",
              (unsigned long long)max, (unsigned long long)over);
  tg_store_config sc = c->store;
  sc.guardian.max_tokens = max;
  /* max_tokens must be the quota that binds: keep the memory quota clear. */
  int raised = 0;
  while (soft_limit(&sc.guardian) < (max + 1) * 64 * 2) {
    sc.guardian.max_memory_bytes *= 2;
    raised = 1;
  }
  tg_store *s = NULL;
  int rc = ts_open(r, "quota", &s, NULL, &sc);
  if (rc) return 1;
  tg_token t, first_before, last_before, first_after, last_after;
  memset(&t, 0, sizeof t);
  uint32_t first_id = 0, last_id = 0;
  uint64_t ok = 0, rejected = 0, other = 0, extra_ok = 0;
  uint64_t *lat = ts_xcalloc((over + 1) * sizeof *lat);
  uint64_t t0 = tgp_now_ns();
  for (uint64_t i = 0; i < max; i++) {
    uint32_t id = 0;
    ts_fill(&t, i);
    rc = tg_token_create(s, &t, &id);
    if (rc) {
      other++;
      break;
    }
    ok++;
    if (!first_id) first_id = id;
    last_id = id;
  }
  tg_store_stats st0, st1;
  tg_store_stats_get(s, &st0);
  tg_token_get(s, first_id, &first_before);
  tg_token_get(s, last_id, &last_before);
  for (uint64_t i = 0; i < over; i++) {
    uint32_t id = 0;
    ts_fill(&t, max + i);
    uint64_t k0 = tgp_ticks();
    rc = tg_token_create(s, &t, &id);
    lat[i] = tgp_ticks() - k0;
    if (rc == TG_EQUOTA && id == 0) rejected++;
    else if (rc == 0) extra_ok++;
    else other++;
  }
  ts_keep_round(x, (double)(tgp_now_ns() - t0) / 1e9);
  tg_store_stats_get(s, &st1);
  int same = tg_token_get(s, first_id, &first_after) == 0 &&
             tg_token_get(s, last_id, &last_after) == 0 &&
             !memcmp(&first_before, &first_after, sizeof first_after) &&
             !memcmp(&last_before, &last_after, sizeof last_after);
  tg_store_close(s);
  ts_latency(r, x, lat, over);
  free(lat);
  snprintf(x->note, sizeof x->note,
           "max_tokens %llu; latency is of the %llu rejected creates%s", (unsigned long long)max,
           (unsigned long long)over, raised ? "; max_memory_bytes raised so max_tokens binds" : "");
  ts_check_add(r, ok == max && rejected == over && extra_ok == 0 && other == 0,
               "quota: exact TG_EQUOTA count past max_tokens",
               "%llu created of %llu, %llu rejected (expected %llu), %llu accepted past the "
               "quota, %llu other errors",
               (unsigned long long)ok, (unsigned long long)max, (unsigned long long)rejected,
               (unsigned long long)over, (unsigned long long)extra_ok, (unsigned long long)other);
  ts_check_add(r, st1.live_tokens == st0.live_tokens && st1.memory_bytes == st0.memory_bytes &&
                      st1.tokens_created == st0.tokens_created &&
                      st1.quota_rejections - st0.quota_rejections == over && same,
               "quota: rejections leave state unchanged",
               "live %llu -> %llu, memory %llu -> %llu, rejections counted %llu, first and "
               "last token %s",
               (unsigned long long)st0.live_tokens, (unsigned long long)st1.live_tokens,
               (unsigned long long)st0.memory_bytes, (unsigned long long)st1.memory_bytes,
               (unsigned long long)(st1.quota_rejections - st0.quota_rejections),
               same ? "unchanged" : "CHANGED");
  uint64_t dmax = max, dover = over;
  if (c->levels[0] == TG_STRICT && dmax > c->strict_ops) dmax = c->strict_ops;
  if (dover > 1000) dover = 1000;
  exhaustion_durable(r, dmax, dover);
  return 0;
}

/* ---- memory pressure ---- */

int ts_phase_pressure(ts_run *r) {
  const ts_config *c = r->cfg;
  uint64_t n = c->pressure_tokens, pe = c->persistent_every;
  ts_result *x = ts_result_add(r, "phase", "memory-pressure", -1);
  x->ops = n;
  tg_store_config sc = c->store;
  sc.guardian.max_memory_bytes = c->pressure_memory_bytes;
  if (sc.guardian.max_tokens < n) sc.guardian.max_tokens = n;
  sc.guardian.cleanup = 1;
  uint64_t soft = soft_limit(&sc.guardian);
  ts_progress(r, "memory-pressure: %llu creates into %llu bytes", (unsigned long long)n,
              (unsigned long long)sc.guardian.max_memory_bytes);
  tg_store *s = NULL;
  int rc = ts_open(r, "memory pressure", &s, NULL, &sc);
  if (rc) return 1;
  uint32_t *pers = ts_xcalloc(((pe ? n / pe : 0) + 1) * sizeof *pers);
  size_t caplat, npers = 0, nlat = 0;
  uint64_t *lat, rng;
  uint32_t gap = ts_sampling_start(n, c->sample_every, &lat, &caplat, &rng);
  tg_token t; /* ts_fill sets every field before each create */
  uint64_t rejected = 0, other = 0;
  uint64_t t0 = tgp_now_ns();
  for (uint64_t i = 0; i < n; i++) {
    uint32_t id = 0;
    ts_fill(&t, i);
    int p = pe && i % pe == 0;
    if (p) t.flags = TG_TOKEN_PERSISTENT;
    if (--gap == 0 && nlat < caplat) {
      gap = ts_gap(&rng, c->sample_every);
      uint64_t k0 = tgp_ticks();
      rc = tg_token_create(s, &t, &id);
      lat[nlat++] = tgp_ticks() - k0;
    } else {
      rc = tg_token_create(s, &t, &id);
    }
    if (rc == TG_EQUOTA) rejected++;
    else if (rc) other++;
    else if (p) pers[npers++] = id;
  }
  ts_keep_round(x, (double)(tgp_now_ns() - t0) / 1e9);
  tg_store_stats st;
  tg_store_stats_get(s, &st);
  uint64_t missing = 0;
  for (size_t k = 0; k < npers; k++) {
    tg_token g;
    if (tg_token_get(s, pers[k], &g) || !(g.flags & TG_TOKEN_PERSISTENT)) missing++;
  }
  tg_store_close(s);
  ts_latency(r, x, lat, nlat);
  free(lat);
  free(pers);
  snprintf(x->note, sizeof x->note,
           "max_memory_bytes %llu (soft limit %llu): %llu evictions in %llu pressure events, "
           "%llu live, %zu PERSISTENT kept, memory %llu at the end",
           (unsigned long long)sc.guardian.max_memory_bytes, (unsigned long long)soft,
           (unsigned long long)st.evictions, (unsigned long long)st.pressure_events,
           (unsigned long long)st.live_tokens, npers, (unsigned long long)st.memory_bytes);
  int expect_evict = n * 64 > soft;
  ts_check_add(r, !expect_evict || st.evictions > 0, "pressure: evictions happen",
               "%llu evictions (%s expected)", (unsigned long long)st.evictions,
               expect_evict ? "some" : "none");
  ts_check_add(r, missing == 0, "pressure: PERSISTENT tokens survive",
               "%zu persistent, %llu missing", npers, (unsigned long long)missing);
  ts_check_add(r, st.memory_bytes <= soft, "pressure: memory back under threshold",
               "%llu bytes in use, soft limit %llu", (unsigned long long)st.memory_bytes,
               (unsigned long long)soft);
  /* PERSISTENT tokens alone fitting under the cleanup target, eviction
     always finds room: a rejection or another error is unexpected. */
  uint64_t pers_bytes = (pe ? n / pe + 1 : 0) * 64;
  if (pers_bytes * 2 < soft)
    ts_check_add(r, rejected == 0 && other == 0, "pressure: creates admitted after eviction",
                 "%llu rejected, %llu other errors", (unsigned long long)rejected,
                 (unsigned long long)other);
  return 0;
}

/* ---- backpressure ---- */

static uint64_t backpressure_ns(void) {
  tg_metric_values v;
  tg_metrics_snapshot(&v);
  return v.v[TG_METRIC_WAL_BACKPRESSURE_NS];
}

/* One mode. Returns 0, or 1 on an error that stops the run. */
static int backpressure_mode(ts_run *r, int level, int nonblocking) {
  const ts_config *c = r->cfg;
  uint64_t n = c->backpressure_ops;
  if (level == TG_STRICT && n > c->strict_ops) n = c->strict_ops;
  const char *mode = nonblocking ? "nonblocking" : "blocking";
  char name[64], dir[4300];
  snprintf(name, sizeof name, "backpressure-%s", mode);
  snprintf(dir, sizeof dir, "%s/stress-bp-%s-%s", r->dir, mode, ts_level_name(level));
  tgp_rmtree(dir);
  ts_result *x = ts_result_add(r, "phase", name, level);
  x->ops = n;
  ts_progress(r, "%s: %llu creates, ring of %u", x->name, (unsigned long long)n,
              c->backpressure_ring);
  tg_store_config sc = c->store;
  sc.wal.level = level;
  sc.wal.ring_slots = c->backpressure_ring;
  sc.wal.nonblocking = nonblocking;
  sc.crash_dump = 0;
  ts_repl_cfg(r, &sc, level);
  tg_store *s = NULL;
  int rc = ts_open(r, "backpressure", &s, dir, &sc);
  if (rc) return 1;
  uint32_t *ids = ts_xcalloc((size_t)n * sizeof *ids);
  size_t caplat, nlat = 0;
  uint64_t *lat, rng;
  uint32_t gap = ts_sampling_start(n, c->sample_every, &lat, &caplat, &rng);
  tg_token t; /* ts_fill sets every field before each create */
  uint64_t eagain = 0, other = 0;
  uint64_t bp0 = backpressure_ns();
  uint64_t t0 = tgp_now_ns();
  for (uint64_t i = 0; i < n && !other; i++) {
    ts_fill(&t, i);
    uint64_t k0 = 0;
    if (--gap == 0 && nlat < caplat) {
      gap = ts_gap(&rng, c->sample_every);
      k0 = tgp_ticks();
    }
    for (;;) {
      rc = tg_token_create(s, &t, &ids[i]);
      if (rc != TG_EAGAIN) break;
      eagain++;
      sched_yield();
    }
    if (k0) lat[nlat++] = tgp_ticks() - k0;
    if (rc) other++;
  }
  int src = tg_sync(s);
  double sec = (double)(tgp_now_ns() - t0) / 1e9;
  uint64_t blocked = backpressure_ns() - bp0;
  tg_store_stats st;
  tg_store_stats_get(s, &st);
  int crc = tg_store_close(s);
  ts_keep_round(x, sec);
  ts_latency(r, x, lat, nlat);
  free(lat);

  /* Everything acknowledged must come back, with its content. */
  s = NULL;
  uint64_t missing = 0, live = 0;
  char msg[256] = "";
  int orc = tg_store_open_msg(&s, dir, &sc, msg, sizeof msg);
  if (!orc) {
    tg_store_stats re;
    tg_store_stats_get(s, &re);
    live = re.live_tokens;
    for (uint64_t i = 0; i < n; i++) {
      tg_token g;
      if (tg_token_get(s, ids[i], &g) || g.timestamp != (uint32_t)(i + 1)) missing++;
    }
    tg_store_close(s);
  }
  free(ids);
  if (nonblocking)
    snprintf(x->note, sizeof x->note,
             "ring of %u slots, nonblocking: %llu TG_EAGAIN (each retried after a yield), "
             "latency includes the retries",
             c->backpressure_ring, (unsigned long long)eagain);
  else
    snprintf(x->note, sizeof x->note,
             "ring of %u slots, blocking: callers blocked %.2f ms in all (%.1f%% of the run)",
             c->backpressure_ring, (double)blocked / 1e6, (double)blocked / 1e9 / sec * 100);
  char what[96];
  snprintf(what, sizeof what, "backpressure %s@%s: nothing lost", mode, ts_level_name(level));
  ts_check_add(r, !other && !src && !crc && !orc && missing == 0 && live == n &&
                      st.tokens_created == n,
               what, "%llu acked, %llu back after tg_sync + reopen, %llu missing, %llu "
               "TG_EAGAIN%s%s",
               (unsigned long long)n, (unsigned long long)live, (unsigned long long)missing,
               (unsigned long long)eagain, orc ? ", reopen: " : "", orc ? msg : "");
  return 0;
}

int ts_phase_backpressure(ts_run *r, int level) {
  int e = backpressure_mode(r, level, 1);
  if (e) return e;
  return backpressure_mode(r, level, 0);
}
