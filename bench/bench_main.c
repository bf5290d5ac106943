/* tg-bench: benchmark programs for tokengraph. See docs/benchmarks.md. */
#include <stdio.h>
#include <string.h>

#include "bench.h"

static const tgb_command commands[] = {
  {"tokens", "create N tokens with the guardian inline vs. raw huge-page writes", tgb_tokens},
  {"trace", "span, black-box and metric costs against an untraced loop", tgb_trace},
  {"wal", "append N 64-byte records at a durability level vs. raw 1 MiB writes + fdatasync", tgb_wal},
  {"replay", "recovery: pure log replay, checkpoint write, open from checkpoint", tgb_replay},
  {"batch", "creates at STRICT: single calls vs. atomic batches of B, alternated", tgb_batch},
  {"peers", "the same job in RocksDB, LevelDB, LMDB, SQLite at matched durability", tgb_peers},
  {"concurrent", "writers alone vs. with readers; stalls while a checkpoint runs", tgb_concurrent},
  {"replicate", "creates at TG_REPLICATED vs. STRICT and raw NATS publishes; BALANCED shipping",
   tgb_replicate},
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *f) {
  fprintf(f, "usage: tg-bench COMMAND [options]\n"
             "       tg-bench --help | --version\n\n"
             "Benchmarks that print their figures next to a reference measured\n"
             "in the same run. 'tg-bench COMMAND --help' for a command's options.\n\n"
             "commands:\n");
  for (size_t i = 0; i < NCOMMANDS; i++)
    fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 64;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    usage(stdout);
    return 0;
  }
  if (!strcmp(argv[1], "--version")) {
    tgp_print_version("tg-bench");
    return 0;
  }
  for (size_t i = 0; i < NCOMMANDS; i++)
    if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
  fprintf(stderr, "tg-bench: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return 64;
}
