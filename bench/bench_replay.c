/*
 * tg-bench replay: recovery speed. Writes a log of N token creations, then
 * opens the store from the log alone (pure replay), writes a checkpoint,
 * and opens it again from the checkpoint.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "tokengraph/tokengraph.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: tg-bench replay [--count N] [--dir DIR] [--json]\n\n"
          "Writes a log of N token-create records (default 9500000) into DIR\n"
          "(default: a temporary directory in $TMPDIR or /tmp, removed afterwards), then\n"
          "measures: opening the store from the log alone (pure replay,\n"
          "records_per_sec), writing a checkpoint of every token\n"
          "(checkpoint_tokens_per_sec), and opening from that checkpoint\n"
          "(load_tokens_per_sec). The log is read from the page cache.\n");
}

static tg_store *open_or_die(const char *dir, const tg_store_config *cfg) {
  tg_store *s = NULL;
  char msg[512];
  int rc = tg_store_open_msg(&s, dir, cfg, msg, sizeof msg);
  if (rc) {
    fprintf(stderr, "tg-bench replay: open %s: %s: %s\n", dir, tg_err_name(rc), msg);
    exit(1);
  }
  return s;
}

int tgb_replay(int argc, char **argv) {
  uint64_t count = 9500000;
  const char *dir = NULL;
  int json = 0;
  const tgb_opt opts[] = {{"--count", &count, NULL}, {"--dir", NULL, &dir}, {NULL, NULL, NULL}};
  int prc = tgb_parse_args("replay", argc, argv, opts, &json, usage);
  if (prc >= 0) return prc;
  if (tgb_check_count("replay", count)) return 64;
  char tmp[4096];
  char path[4200];
  if (!dir) {
    int mrc = tgp_mkdtemp(tmp, sizeof tmp, NULL, "tg-bench-replay");
    if (mrc) {
      fprintf(stderr, "tg-bench replay: cannot create a temporary directory: %s\n",
              strerror(-mrc));
      return 1;
    }
    snprintf(path, sizeof path, "%s/data", tmp);
  } else {
    snprintf(path, sizeof path, "%s", dir);
  }

  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.guardian.max_tokens = count;
  cfg.guardian.max_memory_bytes = count * 64 * 2 + (64u << 20);
  cfg.guardian.memory_threshold = 0.95;
  cfg.wal.level = TG_RELAXED;
  cfg.checkpoint_bytes = 0;

  /* 1. The log. */
  tg_store *s = open_or_die(path, &cfg);
  tg_token t;
  memset(&t, 0, sizeof t);
  uint64_t t0 = tgp_now_ns();
  for (uint64_t i = 0; i < count; i++) {
    t.weight = (float)(i & 1023);
    t.timestamp = (uint32_t)i;
    uint32_t id;
    int rc = tg_token_create(s, &t, &id);
    if (rc) {
      fprintf(stderr, "tg-bench replay: create: %s\n", tg_strerror(rc));
      return 1;
    }
  }
  int rc = tg_sync(s);
  uint64_t t1 = tgp_now_ns();
  if (rc || (rc = tg_store_close(s))) {
    fprintf(stderr, "tg-bench replay: sync/close: %s\n", tg_strerror(rc));
    return 1;
  }

  /* 2. Pure replay. */
  uint64_t t2 = tgp_now_ns();
  s = open_or_die(path, &cfg);
  uint64_t t3 = tgp_now_ns();
  tg_recovery_info ri;
  tg_store_recovery_info(s, &ri);
  if (ri.replayed_records != count) {
    fprintf(stderr, "tg-bench replay: replayed %llu records, expected %llu\n",
            (unsigned long long)ri.replayed_records, (unsigned long long)count);
    return 1;
  }
  /* 3. A checkpoint of every token. */
  uint64_t t4 = tgp_now_ns();
  if ((rc = tg_checkpoint(s))) {
    fprintf(stderr, "tg-bench replay: checkpoint: %s\n", tg_strerror(rc));
    return 1;
  }
  uint64_t t5 = tgp_now_ns();
  tg_store_close(s);

  /* 4. Open from the checkpoint. */
  uint64_t t6 = tgp_now_ns();
  s = open_or_die(path, &cfg);
  uint64_t t7 = tgp_now_ns();
  tg_recovery_info ri2;
  tg_store_recovery_info(s, &ri2);
  tg_store_close(s);

  double write_s = (double)(t1 - t0) / 1e9, open_s = (double)(t3 - t2) / 1e9;
  double replay_s = (double)ri.replay_ns / 1e9, ckpt_s = (double)(t5 - t4) / 1e9;
  double open2_s = (double)(t7 - t6) / 1e9, load_s = (double)ri2.load_ns / 1e9;
  double n = (double)count;
  if (json) {
    printf("{\"records\": %llu, \"write_seconds\": %.6f, \"write_records_per_sec\": %.0f, "
           "\"open_seconds\": %.6f, \"replay_seconds\": %.6f, \"records_per_sec\": %.0f, "
           "\"checkpoint_seconds\": %.6f, \"checkpoint_tokens_per_sec\": %.0f, "
           "\"open_from_checkpoint_seconds\": %.6f, \"load_tokens_per_sec\": %.0f, "
           "\"replayed_after_checkpoint\": %llu}\n",
           (unsigned long long)count, write_s, n / write_s, open_s, replay_s,
           n / replay_s, ckpt_s, n / ckpt_s, open2_s, n / load_s,
           (unsigned long long)ri2.replayed_records);
  } else {
    printf("records                    %llu\n", (unsigned long long)count);
    printf("write (RELAXED) seconds    %.3f  (%.0f records/s)\n", write_s, n / write_s);
    printf("open, pure replay seconds  %.3f  (replay %.3f s: %.0f records/s; target >= 10M/s)\n",
           open_s, replay_s, n / replay_s);
    printf("checkpoint seconds         %.3f  (%.0f tokens/s; target >= 2M/s)\n", ckpt_s,
           n / ckpt_s);
    printf("open from checkpoint secs  %.3f  (load %.3f s: %.0f tokens/s; %llu records replayed)\n",
           open2_s, load_s, n / load_s, (unsigned long long)ri2.replayed_records);
  }
  if (!dir) {
    if (tgp_rmtree(tmp)) fprintf(stderr, "tg-bench replay: could not remove %s\n", tmp);
  }
  return 0;
}
