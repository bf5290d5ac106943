/*
 * tg-bench concurrent: writers alone, then the same writers with readers,
 * in one run; then the longest stall of every thread while a first
 * checkpoint runs, against the same run without one. See
 * docs/benchmarks.md.
 */
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "concurrent.h"
#include "tokengraph/tokengraph.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: tg-bench concurrent [--writers W] [--readers R] [--count N] [--dir DIR]\n"
          "                           [--checkpoint-bytes B] [--prefault B]\n"
          "                           [--level balanced|relaxed|strict] [--json]\n\n"
          "Phase 1: W writer threads (default 1) each create N tokens (default\n"
          "2000000), connecting every 4th to an earlier one, alone. Phase 2: the\n"
          "same writers create N more each while R reader threads (default 1)\n"
          "call tg_token_get() on random existing ids. The two alternate in 4\n"
          "rounds of N/4 creates per writer. Every call is timed.\n"
          "Both phases use an in-memory store, or a durable one in DIR (at --level,\n"
          "automatic checkpoints every B bytes of log, default 0: off).\n"
          "--prefault B opens that store with prefault_bytes B (default 0): B\n"
          "bytes of memory faulted in at open, so the creates take no fresh\n"
          "pages (the kernel's zeroing of them is paid before the phases).\n"
          "Phases 3 and 4 measure checkpoint stalls on a durable store (in DIR,\n"
          "or a temporary directory) holding N prefilled tokens that were never\n"
          "checkpointed: writers updating random tokens and the readers run\n"
          "while a first checkpoint of them runs, then as long again without one. The longest stall is the\n"
          "longest time between two consecutive calls' ends in any writer or\n"
          "reader thread. --level (default balanced) is the durability of every\n"
          "durable store here: at balanced and strict a writer also waits for the\n"
          "log's fdatasyncs, so its longest stall includes the disk's; at relaxed\n"
          "it waits only for the log's ring.\n"
          "Prints writer_ops_per_sec, writer_alone_ops_per_sec, ratio_to_alone,\n"
          "reader_ops_per_sec, reader_p50_ns, reader_p99_ns, reader_p999_ns,\n"
          "reader_max_ns, writer_p999_ns, writer_max_ns (phase 2),\n"
          "checkpoint_stall_max_ns and no_checkpoint_stall_max_ns; --json prints\n"
          "one JSON object with exactly those keys. Without --json it also prints\n"
          "the ratio per CPU second of the writers (CLOCK_THREAD_CPUTIME_ID), the\n"
          "share of a core the writers had alone and with readers, each stall by\n"
          "side, and the writers' context switches: a ratio below 1 with a ratio\n"
          "per CPU second near 1 is a busy machine, not interference. For the\n"
          "stall phases it prints the share of a core the writers and readers had,\n"
          "the gaps of 1 ms or more (count and total) and their context switches,\n"
          "with the checkpoint and without; and the readers' percentiles alone\n"
          "(1 s on the filled store, no writer): the floor of the machine.\n");
}

#define ROUNDS 4

/* Sum two runs' operations, times and histograms. */
static void add_result(tgc_result *into, const tgc_result *r) {
  into->seconds += r->seconds;
  into->writer_ops += r->writer_ops;
  into->reader_ops += r->reader_ops;
  into->writer_cpu_seconds += r->writer_cpu_seconds;
  into->writer_vcsw += r->writer_vcsw;
  into->writer_ivcsw += r->writer_ivcsw;
  into->reader_cpu_seconds += r->reader_cpu_seconds;
  into->reader_vcsw += r->reader_vcsw;
  into->reader_ivcsw += r->reader_ivcsw;
  for (unsigned i = 0; i < TGC_BUCKETS; i++) {
    into->w.b[i] += r->w.b[i];
    into->r.b[i] += r->r.b[i];
  }
  into->w.n += r->w.n;
  into->r.n += r->r.n;
  if (r->w.max > into->w.max) into->w.max = r->w.max;
  if (r->r.max > into->r.max) into->r.max = r->r.max;
}

static tg_store_config store_config(uint64_t tokens, uint64_t checkpoint_bytes) {
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.guardian.max_tokens = tokens + 1000;
  cfg.guardian.max_connections = tokens + 1000;
  cfg.guardian.max_memory_bytes = (tokens * 2 + 100000) * 64 + (64ull << 20);
  cfg.guardian.memory_threshold = 1.0;
  cfg.checkpoint_bytes = checkpoint_bytes;
  cfg.crash_dump = 0;
  return cfg;
}

static int open_store(tg_store **s, const char *dir, const tg_store_config *cfg) {
  char msg[512] = "";
  int rc = tg_store_open_msg(s, dir, cfg, msg, sizeof msg);
  if (rc) fprintf(stderr, "tg-bench concurrent: open %s: %s\n", dir ? dir : "(memory)",
                  msg[0] ? msg : tg_strerror(rc));
  return rc;
}

int tgb_concurrent(int argc, char **argv) {
  uint64_t writers = 1, readers = 1, count = 2000000, ckpt_bytes = 0, prefault = 0;
  const char *dir = NULL, *level_s = "balanced";
  int json = 0, level;
  const tgb_opt opts[] = {{"--writers", &writers, NULL},
                          {"--readers", &readers, NULL},
                          {"--count", &count, NULL},
                          {"--checkpoint-bytes", &ckpt_bytes, NULL},
                          {"--prefault", &prefault, NULL},
                          {"--dir", NULL, &dir},
                          {"--level", NULL, &level_s},
                          {NULL, NULL, NULL}};
  int prc = tgb_parse_args("concurrent", argc, argv, opts, &json, usage);
  if (prc >= 0) return prc;
  if (!strcmp(level_s, "balanced")) level = TG_BALANCED;
  else if (!strcmp(level_s, "relaxed")) level = TG_RELAXED;
  else if (!strcmp(level_s, "strict")) level = TG_STRICT;
  else return tgb_bad_option("concurrent", level_s, usage);
  if (tgb_check_count("concurrent", count)) return 64;
  if (writers < 1 || writers > 64 || readers > 64) {
    fprintf(stderr, "tg-bench concurrent: --writers must be in [1, 64], --readers in [0, 64]\n");
    return 64;
  }
  double npt = tgp_ns_per_tick();
  uint64_t total = count * writers * 2 * 5 / 4 + count;
  if (total > 4000000000ull) {
    fprintf(stderr, "tg-bench concurrent: --count times --writers is too large\n");
    return 64;
  }
  tg_store_config cfg = store_config(total, ckpt_bytes);
  cfg.prefault_bytes = prefault;
  cfg.wal.level = level;
  tg_store *s = NULL;
  int status = 1;
  char tmp[512] = "", cdir[600];
  tgc_result alone, both, with_ckpt, without, ralone;
  if (open_store(&s, dir, &cfg)) return 1;
  /* Alone and with readers alternate in ROUNDS rounds of count / ROUNDS
     creates per writer, so that a drift of the machine's speed (another
     process's load) during the run hits both sides alike. */
  memset(&alone, 0, sizeof alone);
  memset(&both, 0, sizeof both);
  uint64_t per = count / ROUNDS ? count / ROUNDS : 1;
  for (int round = 0; round < ROUNDS; round++) {
    tgc_result a, b;
    tgc_phase p = {s, (unsigned)writers, 0, per, 0, 0, TGC_READ_GET, 4, TGC_WRITE_CREATE};
    if (tgc_run(&p, &a)) goto out;
    p.readers = (unsigned)readers;
    if (tgc_run(&p, &b)) goto out;
    add_result(&alone, &a);
    add_result(&both, &b);
  }
  /* The readers alone on the filled store for a second: the floor of
     their latency on this machine (cache misses of random ids, and
     interrupts), to tell from what a writer beside them adds. */
  memset(&ralone, 0, sizeof ralone);
  if (readers) {
    tgc_phase p = {s, 0, (unsigned)readers, 0, 1000000000ull, 0, TGC_READ_GET, 0,
                   TGC_WRITE_CREATE};
    if (tgc_run(&p, &ralone)) goto out;
  }
  tg_store_close(s);
  s = NULL;

  /* Checkpoint stalls: a fresh durable directory, N tokens never
     checkpointed, then the first checkpoint with writers and readers on. */
  if (dir) {
    snprintf(cdir, sizeof cdir, "%s/checkpoint-stall", dir);
  } else {
    int rc = tgp_mkdtemp(tmp, sizeof tmp, NULL, "tg-bench-concurrent");
    if (rc) {
      fprintf(stderr, "tg-bench concurrent: temporary directory: %s\n", strerror(-rc));
      goto out;
    }
    snprintf(cdir, sizeof cdir, "%s/data", tmp);
  }
  cfg.checkpoint_bytes = 0; /* the measured checkpoint is the only one */
  cfg.prefault_bytes = 0;   /* phases 1 and 2 only */
  if (open_store(&s, cdir, &cfg)) goto out;
  tgc_phase fill = {s, 1, 0, count, 0, 0, TGC_READ_GET, 4, TGC_WRITE_CREATE};
  tgc_result filled;
  if (tgc_run(&fill, &filled)) goto out;
  tgc_phase ck = {s, (unsigned)writers, (unsigned)readers, 0, 0, 1, TGC_READ_GET, 0,
                  TGC_WRITE_UPDATE};
  if (tgc_run(&ck, &with_ckpt)) goto out;
  ck.checkpoint = 0;
  ck.duration_ns = (uint64_t)(with_ckpt.seconds * 1e9);
  if (tgc_run(&ck, &without)) goto out;

  double wr = (double)both.writer_ops / both.seconds;
  double wa = (double)alone.writer_ops / alone.seconds;
  double rr = (double)both.reader_ops / both.seconds;
  double stall_ck =
      (double)(with_ckpt.w.max > with_ckpt.r.max ? with_ckpt.w.max : with_ckpt.r.max) * npt;
  double stall_no =
      (double)(without.w.max > without.r.max ? without.w.max : without.r.max) * npt;
  struct {
    const char *k;
    double v;
  } f[] = {
      {"writer_ops_per_sec", wr},
      {"writer_alone_ops_per_sec", wa},
      {"ratio_to_alone", wr / wa},
      {"reader_ops_per_sec", rr},
      {"reader_p50_ns", tgc_hist_quantile_ns(&both.r, 0.50, npt)},
      {"reader_p99_ns", tgc_hist_quantile_ns(&both.r, 0.99, npt)},
      {"reader_p999_ns", tgc_hist_quantile_ns(&both.r, 0.999, npt)},
      {"reader_max_ns", (double)both.r.max * npt},
      {"writer_p999_ns", tgc_hist_quantile_ns(&both.w, 0.999, npt)},
      {"writer_max_ns", (double)both.w.max * npt},
      {"checkpoint_stall_max_ns", stall_ck},
      {"no_checkpoint_stall_max_ns", stall_no},
  };
  size_t nf = sizeof f / sizeof f[0];
  if (json) {
    printf("{");
    for (size_t i = 0; i < nf; i++)
      printf("%s\"%s\": %.*f", i ? ", " : "", f[i].k, i == 2 ? 3 : 0, f[i].v);
    printf("}\n");
  } else {
    for (size_t i = 0; i < nf; i++) printf("%-28s %.*f\n", f[i].k, i == 2 ? 3 : 0, f[i].v);
    /* Not JSON keys (the issue fixes those): the same ratio per CPU
       second of the writers, and the share of a core each side had. */
    printf("%-28s %.3f\n", "ratio_to_alone_per_cpu",
           ((double)both.writer_ops / both.writer_cpu_seconds) /
               ((double)alone.writer_ops / alone.writer_cpu_seconds));
    printf("%-28s %.3f / %.3f\n", "writer_cpu_share alone/with",
           alone.writer_cpu_seconds / alone.seconds / (double)writers,
           both.writer_cpu_seconds / both.seconds / (double)writers);
    printf("%-28s %.0f / %.0f ns\n", "checkpoint stall writer/reader",
           (double)with_ckpt.w.max * npt, (double)with_ckpt.r.max * npt);
    printf("%-28s %.0f / %.0f ns\n", "no-checkpoint stall w/r", (double)without.w.max * npt,
           (double)without.r.max * npt);
    printf("%-28s %.0f / %.0f / %.0f ns\n", "reader alone p50/p99/p999",
           tgc_hist_quantile_ns(&ralone.r, 0.50, npt), tgc_hist_quantile_ns(&ralone.r, 0.99, npt),
           tgc_hist_quantile_ns(&ralone.r, 0.999, npt));
    printf("%-28s %.3f\n", "reader_cpu_share with",
           readers ? both.reader_cpu_seconds / both.seconds / (double)readers : 0.0);
    /* The stall phases on a busy machine: a longest stall is one sample
       of the scheduler's worst moment, so the share of a core each side
       had, the gaps of 1 ms or more (count and total) and the context
       switches (voluntary: waited for something; involuntary: preempted)
       tell what the checkpoint itself added. */
    double gw_ck, gr_ck, gw_no, gr_no;
    uint64_t nw_ck = tgc_hist_over(&with_ckpt.w, 1e6, npt, &gw_ck);
    uint64_t nr_ck = tgc_hist_over(&with_ckpt.r, 1e6, npt, &gr_ck);
    uint64_t nw_no = tgc_hist_over(&without.w, 1e6, npt, &gw_no);
    uint64_t nr_no = tgc_hist_over(&without.r, 1e6, npt, &gr_no);
    printf("%-28s %.3f+%.3f / %.3f+%.3f\n", "stall cpu share w+r ck/no",
           with_ckpt.writer_cpu_seconds / with_ckpt.seconds / (double)writers,
           readers ? with_ckpt.reader_cpu_seconds / with_ckpt.seconds / (double)readers : 0.0,
           without.writer_cpu_seconds / without.seconds / (double)writers,
           readers ? without.reader_cpu_seconds / without.seconds / (double)readers : 0.0);
    printf("%-28s %llu (%.1f ms) / %llu (%.1f ms)\n", "stall gaps>=1ms w+r ck/no",
           (unsigned long long)(nw_ck + nr_ck), (gw_ck + gr_ck) / 1e6,
           (unsigned long long)(nw_no + nr_no), (gw_no + gr_no) / 1e6);
    printf("%-28s %llu+%llu / %llu+%llu\n", "stall switches vol+invol ck/no",
           (unsigned long long)(with_ckpt.writer_vcsw + with_ckpt.reader_vcsw),
           (unsigned long long)(with_ckpt.writer_ivcsw + with_ckpt.reader_ivcsw),
           (unsigned long long)(without.writer_vcsw + without.reader_vcsw),
           (unsigned long long)(without.writer_ivcsw + without.reader_ivcsw));
    printf("%-28s %llu+%llu / %llu+%llu\n", "writer_switches vol+invol alone/with",
           (unsigned long long)alone.writer_vcsw, (unsigned long long)alone.writer_ivcsw,
           (unsigned long long)both.writer_vcsw, (unsigned long long)both.writer_ivcsw);
    printf("(%llu writer(s), %llu reader(s), %llu creates per writer per phase; "
           "first checkpoint of %llu+ tokens took %.3f s)\n",
           (unsigned long long)writers, (unsigned long long)readers,
           (unsigned long long)count, (unsigned long long)count, with_ckpt.checkpoint_seconds);
  }
  status = 0;
out:
  tg_store_close(s);
  if (tmp[0]) tgp_rmtree(tmp);
  return status;
}
