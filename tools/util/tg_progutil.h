/*
 * The small helper set shared by the programs (tg-bench, tg-stress,
 * tg-crash, tg-replay) and the tests: clocks, sorting and percentiles, a
 * JSON string escaper, a write that survives short writes, number parsing,
 * scratch directories and --version. One of each, so that the programs
 * cannot drift apart. Uses only the public headers of tokengraph; the
 * library's own internals have their own helpers in src/common/.
 *
 * Functions that can fail return 0 or a negative errno, as the library
 * does.
 */
#ifndef TG_PROGUTIL_H
#define TG_PROGUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- clocks ------------------------------------------------------------- */

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t tgp_now_ns(void);

/* A cycle counter for timing single short operations: clock_gettime costs
   ~20 ns itself, more than a token create. Where there is none it is
   tgp_now_ns(), and tgp_ns_per_tick() is 1. */
static inline uint64_t tgp_ticks(void) {
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_ia32_rdtsc();
#else
  return tgp_now_ns();
#endif
}

/* Nanoseconds per tgp_ticks() tick, measured against tgp_now_ns() over
   20 ms of spinning (so it takes 20 ms). */
double tgp_ns_per_tick(void);

/* Resident set size of this process in bytes (from /proc/self/statm), 0 if
   it cannot be read. */
uint64_t tgp_rss_bytes(void);

/* ---- sorting and percentiles --------------------------------------------- */

/* qsort comparator for uint64_t, ascending. */
int tgp_cmp_u64(const void *a, const void *b);

/* Sort v[0..n) ascending. */
void tgp_sort_u64(uint64_t *v, size_t n);

/* Value at quantile q in [0,1] of v[0..n), already sorted ascending: the
   nearest rank, index round(q * (n - 1)). 0 when n is 0. */
uint64_t tgp_quantile_sorted(const uint64_t *v, size_t n, double q);

/* ---- output --------------------------------------------------------------- */

/* Write s to f as a JSON string, quotes included: '"' and '\' escaped,
   control characters as \u00XX, other bytes (UTF-8) as they are. A NULL s
   is written as null. */
void tgp_json_str(FILE *f, const char *s);

/* Write all n bytes of buf to fd, looping on short writes and EINTR.
   Returns 0, or -errno of the write that failed (-EIO if it wrote 0). Safe
   to call in a forked child. */
int tgp_write_all(int fd, const void *buf, size_t n);

/* ---- parsing ---------------------------------------------------------------- */

/* Parse s as a whole unsigned number: decimal, or hexadecimal after "0x".
   No sign, no blanks, no suffix. Returns 0 and sets *out, -EINVAL if s is
   not such a number, -ERANGE if it is outside [lo, hi]. */
int tgp_parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out);

/* ---- directories ------------------------------------------------------------ */

/* Create a fresh private directory "<parent>/<name>.XXXXXX" and put its path
   in buf. A NULL parent is $TMPDIR, or /tmp when TMPDIR is unset or empty.
   Returns 0 or -errno (-ENAMETOOLONG if buf is too small). */
int tgp_mkdtemp(char *buf, size_t len, const char *parent, const char *name);

/* Remove path and everything below it, without following symbolic links.
   A missing path is success. Returns 0 or -errno of the first failure. */
int tgp_rmtree(const char *path);

/* The directory of the running executable, with a trailing '/', from
   /proc/self/exe. Returns 0 or -errno. */
int tgp_exe_dir(char *buf, size_t len);

/* ---- program conventions --------------------------------------------------- */

/* Print "<prog> <tg_version()>" on stdout: what --version prints. */
void tgp_print_version(const char *prog);

/* One subcommand of a program: run gets the arguments from its name on. */
typedef struct tgp_command {
  const char *name;
  int (*run)(int argc, char **argv);
} tgp_command;

/* The main of a program of subcommands. No argument: usage on stderr,
   exit 64; --help, -h or help: usage on stdout, 0; --version: the
   version, 0; a command of cmds[0..n): its run(argc - 1, argv + 1);
   anything else: "<prog>: unknown command 'X'" and usage on stderr, 64. */
int tgp_main_commands(int argc, char **argv, const char *prog, void (*usage)(FILE *f),
                      const tgp_command *cmds, size_t n);

#endif /* TG_PROGUTIL_H */
