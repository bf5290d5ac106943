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

/* A bad option of subcommand cmd: says which on stderr, prints the usage
   there and returns 64, the exit status of a usage error. */
int tgb_bad_option(const char *cmd, const char *arg, void (*usage)(FILE *));

/* One option of a subcommand that takes a value: a count (parsed with
   tgb_parse_count into *count) or a string (its argv entry, into *str). */
typedef struct tgb_opt {
  const char *name;  /* "--count" */
  uint64_t *count;   /* set for a count, else NULL */
  const char **str;  /* set for a string, else NULL */
} tgb_opt;

/* Parse argv[1..argc) of subcommand cmd: the options in opts (ended by a
   NULL name), --json (sets *json) and --help/-h (usage on stdout). Returns
   -1 when the subcommand should run, otherwise the exit status to return
   at once: 0 after --help, 64 after an unknown option or one without its
   value (said on stderr with the usage). */
int tgb_parse_args(const char *cmd, int argc, char **argv, const tgb_opt *opts, int *json,
                   void (*usage)(FILE *));

/* 0 if a --count is in [1, 4000000000] (ids and LSNs of one run stay
   32-bit); otherwise says so on stderr and returns 64. */
int tgb_check_count(const char *cmd, uint64_t count);

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
int tgb_concurrent(int argc, char **argv);
int tgb_batch(int argc, char **argv);
int tgb_replicate(int argc, char **argv);

#endif
