/*
 * Phase concurrent-recall: writer threads create tokens and connections at
 * full rate, first alone, then while reader threads walk the edges of
 * random tokens (tg_token_edges, which takes no lock). Reports the read
 * and write latency percentiles (every call timed) and the writers' rate
 * with readers as a ratio to their rate alone. docs/stress.md.
 */
#include <string.h>

#include "concurrent.h"
#include "stress.h"

static void put_latency(ts_result *x, const tgc_hist *h, double npt) {
  x->have_lat = h->n > 0;
  x->lat_samples = h->n;
  x->p50 = tgc_hist_quantile_ns(h, 0.50, npt);
  x->p95 = tgc_hist_quantile_ns(h, 0.95, npt);
  x->p99 = tgc_hist_quantile_ns(h, 0.99, npt);
  x->p999 = tgc_hist_quantile_ns(h, 0.999, npt);
}

int ts_phase_concurrent(ts_run *r) {
  const ts_config *c = r->cfg;
  unsigned nw = (unsigned)c->conc_writers, nr = (unsigned)c->conc_readers;
  uint64_t n = c->conc_ops;
  tg_store_config sc = c->store;
  /* Two phases of n creates per writer, a connection every 4th. */
  uint64_t need = 2 * n * nw;
  if (sc.guardian.max_tokens < need) sc.guardian.max_tokens = need;
  if (sc.guardian.max_connections < need) sc.guardian.max_connections = need;
  if (sc.guardian.max_memory_bytes < need * 2 * 64 + (64ull << 20))
    sc.guardian.max_memory_bytes = need * 2 * 64 + (64ull << 20);
  ts_progress(r, "concurrent-recall: %u writer(s) x %llu creates alone, then with %u "
              "edge-walking reader(s)", nw, (unsigned long long)n, nr);
  tg_store *s = NULL;
  if (ts_open(r, "concurrent-recall", &s, NULL, &sc)) return 1;
  tgc_phase p = {s, nw, 0, n, 0, 0, TGC_READ_EDGES, 4, TGC_WRITE_CREATE};
  tgc_result alone, both;
  int rc = tgc_run(&p, &alone);
  if (!rc) {
    p.readers = nr;
    rc = tgc_run(&p, &both);
  }
  tg_store_close(s);
  ts_check_add(r, rc == 0, "concurrent-recall: every call succeeds", "%s",
               rc ? tg_strerror(rc) : "no error");
  if (rc) return 1;

  ts_result *ref = ts_result_add(r, "reference", "concurrent-recall-writers-alone", -1);
  ref->ops = alone.writer_ops;
  ts_keep_round(ref, alone.seconds);
  put_latency(ref, &alone.w, r->ns_per_tick);
  ts_result *w = ts_result_add(r, "phase", "concurrent-recall-writes", -1);
  w->ops = both.writer_ops;
  ts_keep_round(w, both.seconds);
  put_latency(w, &both.w, r->ns_per_tick);
  double ratio = ((double)both.writer_ops / both.seconds) /
                 ((double)alone.writer_ops / alone.seconds);
  snprintf(w->note, sizeof w->note,
           "%u writer(s) with %u edge-walking reader(s): %.3fx the writers' rate alone", nw,
           nr, ratio);
  ts_result *rd = ts_result_add(r, "phase", "concurrent-recall-reads", -1);
  rd->ops = both.reader_ops;
  ts_keep_round(rd, both.seconds);
  put_latency(rd, &both.r, r->ns_per_tick);
  snprintf(rd->note, sizeof rd->note,
           "%u reader(s) walking the edges of random tokens while %u writer(s) run; "
           "longest read %.0f ns", nr, nw, (double)both.r.max * r->ns_per_tick);
  const char *target = nr == 1 ? ">= 0.8" : nr == 2 ? ">= 0.5" : "";
  ts_figure_add(r, "concurrent-recall: writers with readers / alone", ratio, "x", target,
                !*target ? -1 : ratio >= (nr == 1 ? 0.8 : 0.5));
  ts_figure_add(r, "concurrent-recall: read P99.9", rd->p999, "ns", "<= 2000",
                rd->p999 <= 2000);
  ts_check_add(r, both.reader_ops > 0 || nr == 0, "concurrent-recall: readers made progress",
               "%llu reads", (unsigned long long)both.reader_ops);
  return 0;
}
