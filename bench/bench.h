/*
 * Shared helpers for the tg-bench subcommands. Benchmarks use only the
 * public headers plus these and the programs' helper set (tg_progutil.h); each prints its figures next to a
 * reference measured in the same run.
 */
#ifndef TG_BENCH_H
#define TG_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tg_progutil.h"

/* Parse a non-negative integer option value ("9500000", "9.5M", "1e6").
   Prints an error naming the option and exits with 64 on bad input. */
uint64_t tgb_parse_count(const char *opt, const char *val);

/* Prevent the compiler from optimising away a value. */
#define TGB_KEEP(x) __asm__ volatile("" : : "g"(x) : "memory")

/* One subcommand: name, one-line description, entry point. */
typedef struct tgb_command {
  const char *name;
  const char *summary;
  int (*run)(int argc, char **argv); /* argv[0] is the subcommand name */
} tgb_command;

int tgb_tokens(int argc, char **argv);
int tgb_trace(int argc, char **argv);
int tgb_wal(int argc, char **argv);
int tgb_replay(int argc, char **argv);
int tgb_peers(int argc, char **argv);

#endif
