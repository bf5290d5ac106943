/*
 * tg-replay: the operator's tool to inspect and recover a tokengraph data
 * directory after a crash. See docs/operations.md for the guide.
 *
 *   tg-replay verify DIR [--json]
 *   tg-replay stats DIR [--json]
 *   tg-replay dump DIR [--from LSN] [--json]
 *   tg-replay recover DIR [--force-truncate-at-corruption] [--json] [--config FILE]
 *   tg-replay backup DIR DEST [--json]
 *   tg-replay --version | --help
 *
 * Exit codes: 0 clean, 1 torn tail only (recoverable), 2 corruption or
 * unreadable input, 64 usage error. A successful recover exits 0.
 *
 * This program is argument parsing and printing over the library: the
 * verdict is tg_store_inspect()'s (the one tg_store_open() reaches), the
 * records come from the WAL reader and tg_record_decode(), and recover is
 * tg_store_repair(). It knows no byte of the log format, computes no
 * checksum and takes no lock of its own, so it cannot disagree with the
 * store about a directory. verify, stats and dump work on a directory
 * another process holds open: tg_store_inspect() then reads it as a
 * read-only open does, up to the log's durable point; backup opens it
 * read-only (cfg.read_only) and calls tg_store_backup().
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tg_progutil.h"
#include "tokengraph/tokengraph.h"

#define EXIT_CLEAN 0
#define EXIT_TORN 1
#define EXIT_CORRUPT 2
#define EXIT_USAGE 64
#define MSG_LEN 1024

static const char *prog = "tg-replay";

__attribute__((format(printf, 1, 2)))
static void err_line(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s: ", prog);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

/* ---- help ------------------------------------------------------------------ */

static const char exit_codes_help[] =
    "exit codes:\n"
    "  0   clean: the log ends where its data ends (recover: recovered)\n"
    "  1   torn tail only: an incomplete last write, recoverable with\n"
    "      'tg-replay recover DIR'\n"
    "  2   corruption in the log, a record that does not apply, or input\n"
    "      that cannot be read (missing, not a tokengraph directory, a\n"
    "      checkpoint that is not ours; recover: in use by another process);\n"
    "      recover refused or failed\n"
    "  64  usage error\n";

static void usage_main(FILE *f) {
  fprintf(f,
          "usage: tg-replay COMMAND DIR [options]\n"
          "\n"
          "Inspect, back up and recover a tokengraph data directory. Every command\n"
          "but 'recover' only reads. verify, stats, dump and backup also work while\n"
          "a program has DIR open: they read it up to its log's durable point,\n"
          "without taking its lock. recover needs DIR closed.\n"
          "\n"
          "commands:\n"
          "  verify DIR [--json]        read the checkpoint and every WAL segment;\n"
          "                             report records, first/last LSN and how the\n"
          "                             log ends (segment file and offset)\n"
          "  stats DIR [--json]         verify, plus tokens, connections, checkpoint\n"
          "                             LSN and counts, segments, replayed records\n"
          "  dump DIR [--from LSN] [--json]\n"
          "                             print the log's records (LSN, type, payload)\n"
          "  recover DIR [--force-truncate-at-corruption] [--json] [--config FILE]\n"
          "                             cut a torn tail (bytes kept in a .broken\n"
          "                             file), open the store, write a checkpoint\n"
          "  backup DIR DEST [--json]   copy DIR, open or not, as of one LSN into\n"
          "                             the new or empty directory DEST\n"
          "\n"
          "'tg-replay COMMAND --help' describes a command; 'tg-replay --version'\n"
          "prints the library's version. With --json every command prints a result\n"
          "object, errors included. A progress bar is drawn\n"
          "on stderr for long runs when stderr is a terminal.\n"
          "\n%s",
          exit_codes_help);
}

static void usage_verify(FILE *f) {
  fprintf(f,
          "usage: tg-replay verify DIR [--json]\n"
          "\n"
          "Read DIR's checkpoint and every WAL segment without changing anything,\n"
          "replay the log in memory, and report the number of valid records, the\n"
          "first and last LSN, and how the log ends: clean, a torn tail, or\n"
          "corruption (with the segment file, the byte offset and what is wrong).\n"
          "A record that does not apply to the checkpoint is reported as well.\n"
          "\n"
          "  --json   print one JSON object with the keys records, first_lsn,\n"
          "           last_lsn, end (clean|torn_tail|corrupt), segment, offset,\n"
          "           tokens, connections and more (docs/operations.md)\n"
          "\n%s",
          exit_codes_help);
}

static void usage_stats(FILE *f) {
  fprintf(f,
          "usage: tg-replay stats DIR [--json]\n"
          "\n"
          "As 'verify', and also the state after replay: tokens, connections, the\n"
          "checkpoint's LSN and counts, the number of segments and of records\n"
          "replayed after the checkpoint, and the replication position the\n"
          "checkpoint saved (stream sequence and epoch; docs/operations.md).\n"
          "\n"
          "  --json   print one JSON object (the same keys as verify --json)\n"
          "\n%s",
          exit_codes_help);
}

static void usage_dump(FILE *f) {
  fprintf(f,
          "usage: tg-replay dump DIR [--from LSN] [--json]\n"
          "\n"
          "Print the records of DIR's log in LSN order: the LSN, the record type\n"
          "and the decoded payload (token fields, connection fields, or the id of\n"
          "a delete). Printing stops where the log ends; the end is reported on\n"
          "stderr when it is not clean. The checkpoint's contents are not\n"
          "printed (see 'stats' for its counts).\n"
          "\n"
          "  --from LSN   start at this LSN (default: the oldest record)\n"
          "  --json       one JSON object per line, then a result object (the keys\n"
          "               of verify --json, and \"printed\": the records printed);\n"
          "               if the directory cannot be read, the result object alone\n"
          "\n%s",
          exit_codes_help);
}

static void usage_backup(FILE *f) {
  fprintf(f,
          "usage: tg-replay backup DIR DEST [--json]\n"
          "\n"
          "Copy the data directory DIR into DEST (missing, or an empty directory)\n"
          "as of one LSN, while a program may keep DIR open and keep writing: DIR\n"
          "is opened read-only (no lock is taken, nothing in DIR is written), its\n"
          "checkpoint is copied with LMDB's compacting copy and the log records\n"
          "after it, up to the log's durable point, are written into DEST's log.\n"
          "DEST's identity file is written last, after everything is fdatasynced:\n"
          "an interrupted backup is never taken for a store. DEST then opens as\n"
          "any data directory. Prints the LSN, the state, the bytes and the rate.\n"
          "\n"
          "  --json   print one JSON object: lsn, tokens, connections, bytes (the\n"
          "           checkpoint copy plus the log records' payloads), seconds (the\n"
          "           backup), open_seconds (opening DIR read-only first), mb_per_s,\n"
          "           records_per_s (errors: status and message)\n"
          "\n"
          "exit codes: 0 copied; 2 DIR cannot be read, DEST is not empty, or the\n"
          "copy failed; 64 usage error\n");
}

static void usage_recover(FILE *f) {
  fprintf(f,
          "usage: tg-replay recover DIR [--force-truncate-at-corruption] [--json]\n"
          "                             [--config FILE]\n"
          "\n"
          "Make DIR openable again and write a fresh checkpoint:\n"
          "  1. lock DIR and verify it (as 'verify');\n"
          "  2. a torn tail: copy the bytes from the cut offset to the end of the\n"
          "     segment into SEGMENT.broken beside it (written and fsynced first),\n"
          "     then truncate the segment there;\n"
          "  3. corruption in the middle of the log, or a record that does not\n"
          "     apply: refuse (exit 2) and say how many valid records lie beyond\n"
          "     it, unless --force-truncate-at-corruption is given; then copy the\n"
          "     bytes from the corruption on into SEGMENT.broken, truncate the\n"
          "     segment there and rename every later segment to NAME.broken;\n"
          "  4. open the store (replaying the log, still under the lock) and write\n"
          "     a checkpoint;\n"
          "  5. verify again and report.\n"
          "An existing .broken file is never overwritten (.broken.1, .2, ... are\n"
          "used). DIR must not be open in another process.\n"
          "\n"
          "  --force-truncate-at-corruption   drop the records after a corruption\n"
          "                                   (their bytes are kept in .broken files)\n"
          "  --json                           print one JSON object: what was found,\n"
          "                                   cut, kept and written\n"
          "  --config FILE                    the store's INI file: its [wal] settings\n"
          "                                   are used to replay, and its segment_bytes\n"
          "                                   bounds every segment's size (default\n"
          "                                   64 MiB; a segment header never raises it)\n"
          "\n%s",
          exit_codes_help);
}

/* ---- small helpers ---------------------------------------------------------- */

static char *wal_dir(const char *dir) {
  size_t n = strlen(dir) + sizeof "/wal";
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/wal", dir);
  return p;
}

static const char *plural(uint64_t n) { return n == 1 ? "" : "s"; }

/* ---- progress bar ------------------------------------------------------------ */

/* Segments are named by their first LSN, so an LSN places the reader among
   them; the last segment's end is estimated from the average span of the
   others (unknown with one segment: then only counts are shown). */
typedef struct progress {
  int on;           /* stderr is a terminal */
  int drawn;        /* a bar is on the screen */
  uint64_t first;   /* first LSN of the oldest segment */
  uint64_t end;     /* estimated LSN after the last record, 0 = unknown */
} progress;

static void progress_init(progress *p, const char *dir) {
  memset(p, 0, sizeof *p);
  p->on = isatty(STDERR_FILENO);
  if (!p->on) return;
  char *waldir = wal_dir(dir);
  tg_wal_reader *r = NULL;
  if (waldir && tg_wal_reader_open(&r, waldir, 0) == 0) {
    size_t n = tg_wal_reader_segments(r);
    if (n >= 2) {
      uint64_t a = tg_wal_reader_segment(r, 0), z = tg_wal_reader_segment(r, n - 1);
      p->first = a;
      p->end = z + (z - a) / (n - 1);
    }
  }
  tg_wal_reader_close(r);
  free(waldir);
}

static void progress_cb(void *arg, uint64_t records, uint64_t lsn) {
  progress *p = arg;
  if (!p->on) return;
  if (p->end > p->first && lsn >= p->first) {
    double frac = (double)(lsn - p->first) / (double)(p->end - p->first);
    if (frac > 0.99) frac = 0.99;
    int w = 30, k = (int)(frac * w);
    char bar[32];
    for (int i = 0; i < w; i++) bar[i] = i < k ? '#' : '.';
    bar[w] = 0;
    fprintf(stderr, "\r[%s] %3d%%  %" PRIu64 " records, LSN %" PRIu64 "\033[K", bar,
            (int)(frac * 100), records, lsn);
  } else {
    fprintf(stderr, "\rreading: %" PRIu64 " records, LSN %" PRIu64 "\033[K", records, lsn);
  }
  fflush(stderr);
  p->drawn = 1;
}

static void progress_done(progress *p) {
  if (p->drawn) fputs("\r\033[K", stderr);
  p->drawn = 0;
}

/* ---- verdicts ------------------------------------------------------------------- */

static const char *end_key(const tg_inspect_report *r) {
  switch (r->end.reason) {
  case TG_WAL_END_CLEAN: return "clean";
  case TG_WAL_END_TORN: return "torn_tail";
  default: return "corrupt"; /* corrupt, or a segment that cannot be read */
  }
}

static int exit_for(const tg_inspect_report *r) {
  if (r->apply_failed_lsn) return EXIT_CORRUPT;
  if (r->end.reason == TG_WAL_END_CLEAN) return EXIT_CLEAN;
  if (r->end.reason == TG_WAL_END_TORN) return EXIT_TORN;
  return EXIT_CORRUPT;
}

static const char *status_key(const tg_inspect_report *r) {
  return r->apply_failed_lsn ? "apply_failed" : end_key(r);
}

/* One line saying how the log ends, for stderr when it is not clean. */
static void diagnose(const char *dir, const tg_inspect_report *r) {
  const tg_wal_end *e = &r->end;
  if (r->apply_failed_lsn)
    err_line("%s: record LSN %" PRIu64 " %s (the log and the checkpoint disagree); "
             "'tg-replay recover --force-truncate-at-corruption' drops it and what follows",
             dir, r->apply_failed_lsn, r->apply_failed_what ? r->apply_failed_what : "does not apply");
  else if (tg_wal_end_is_gap(e))
    err_line("%s: records LSN %" PRIu64 "..%" PRIu64 " are missing from the log (wal/%s, %s); "
             "nothing after them can be replayed", dir, e->expected_lsn, e->found_lsn - 1,
             e->path, e->what ? e->what : "LSN gap");
  else if (e->reason == TG_WAL_END_TORN)
    err_line("%s: torn tail in wal/%s at offset %" PRIu64 " (%s) after LSN %" PRIu64
             "; 'tg-replay recover' cuts it", dir, e->path, e->offset, e->what ? e->what : "?",
             e->last_lsn);
  else if (e->reason == TG_WAL_END_CORRUPT)
    err_line("%s: corruption in wal/%s at offset %" PRIu64 " (%s) after LSN %" PRIu64
             "; nothing after it was read", dir, e->path, e->offset, e->what ? e->what : "?",
             e->last_lsn);
  else if (e->reason == TG_WAL_END_IO)
    err_line("%s: cannot read wal/%s: %s (%s)", dir, e->path, e->what ? e->what : "?",
             tg_strerror(e->err));
}

static void print_end_json(const tg_wal_end *e) {
  printf("{\"reason\":");
  tgp_json_str(stdout, tg_wal_end_reason_name(e->reason));
  printf(",\"what\":");
  tgp_json_str(stdout, e->what);
  printf(",\"segment\":");
  tgp_json_str(stdout, e->path[0] ? e->path : NULL);
  printf(",\"offset\":%" PRIu64 ",\"last_lsn\":%" PRIu64 ",\"expected_lsn\":%" PRIu64
         ",\"found_lsn\":%" PRIu64 "}",
         e->offset, e->last_lsn, e->expected_lsn, e->found_lsn);
}

/* The members of a report, without the braces around them. */
static void print_report_members(const tg_inspect_report *r) {
  const tg_wal_end *e = &r->end;
  printf("\"records\":%" PRIu64 ",\"first_lsn\":%" PRIu64 ",\"last_lsn\":%" PRIu64, r->records,
         r->first_lsn, r->last_lsn);
  printf(",\"end\":\"%s\",\"reason\":", end_key(r));
  tgp_json_str(stdout, tg_wal_end_reason_name(e->reason));
  printf(",\"what\":");
  tgp_json_str(stdout, e->what);
  printf(",\"segment\":");
  tgp_json_str(stdout, e->path[0] ? e->path : NULL);
  printf(",\"segment_lsn\":%" PRIu64 ",\"offset\":%" PRIu64 ",\"valid_offset\":%" PRIu64, e->segment,
         e->offset, e->valid_offset);
  printf(",\"gap\":%s,\"expected_lsn\":%" PRIu64 ",\"found_lsn\":%" PRIu64,
         tg_wal_end_is_gap(e) ? "true" : "false", e->expected_lsn, e->found_lsn);
  printf(",\"error\":");
  tgp_json_str(stdout, e->err ? tg_err_name(e->err) : NULL);
  printf(",\"tokens\":%" PRIu64 ",\"connections\":%" PRIu64, r->tokens, r->connections);
  printf(",\"checkpoint_lsn\":%" PRIu64 ",\"checkpoint_tokens\":%" PRIu64
         ",\"checkpoint_connections\":%" PRIu64,
         r->checkpoint_lsn, r->checkpoint_tokens, r->checkpoint_connections);
  printf(",\"repl_stream_seq\":%" PRIu64 ",\"repl_epoch\":%" PRIu64, r->repl_stream_seq,
         r->repl_epoch);
  printf(",\"segments\":%" PRIu64 ",\"replayed\":%" PRIu64 ",\"apply_failed_lsn\":%" PRIu64
         ",\"apply_failed_what\":",
         r->segments, r->replayed, r->apply_failed_lsn);
  tgp_json_str(stdout, r->apply_failed_lsn ? r->apply_failed_what : NULL);
  printf(",\"live\":%s", r->live ? "true" : "false");
  printf(",\"covered_damage\":");
  if (r->covered_end.reason == TG_WAL_END_NONE) printf("null");
  else print_end_json(&r->covered_end);
}

static void print_json(const char *dir, const tg_inspect_report *r) {
  printf("{\"dir\":");
  tgp_json_str(stdout, dir);
  printf(",\"status\":\"%s\",\"exit\":%d,", status_key(r), exit_for(r));
  print_report_members(r);
  printf("}\n");
}

/* dump's last line: the verify object, and how many records were printed
   (the key "printed" tells it from the record lines). */
static void print_json_dump(const char *dir, const tg_inspect_report *r, uint64_t printed,
                            int ex) {
  printf("{\"dir\":");
  tgp_json_str(stdout, dir);
  printf(",\"status\":\"%s\",\"exit\":%d,\"printed\":%" PRIu64 ",", status_key(r), ex,
         printed);
  print_report_members(r);
  printf("}\n");
}

/* The result object of a command that could not read the directory. */
static void print_json_error(const char *dir, const char *status, int ex, int rc,
                             const char *message) {
  printf("{\"dir\":");
  tgp_json_str(stdout, dir);
  printf(",\"status\":\"%s\",\"exit\":%d,\"error\":", status, ex);
  tgp_json_str(stdout, rc ? tg_err_name(rc) : NULL);
  printf(",\"message\":");
  tgp_json_str(stdout, message);
  printf("}\n");
  fflush(stdout);
}

static void print_end_text(const tg_inspect_report *r) {
  const tg_wal_end *e = &r->end;
  switch (e->reason) {
  case TG_WAL_END_CLEAN:
    if (e->path[0])
      printf("end:         clean, wal/%s at offset %" PRIu64 "\n", e->path, e->offset);
    else
      printf("end:         clean (no segments)\n");
    break;
  case TG_WAL_END_TORN:
    printf("end:         torn tail in wal/%s at offset %" PRIu64 " (%s), after LSN %" PRIu64 "\n",
           e->path, e->offset, e->what ? e->what : "?", e->last_lsn);
    break;
  case TG_WAL_END_CORRUPT:
    printf("end:         CORRUPT in wal/%s at offset %" PRIu64 " (%s), after LSN %" PRIu64, e->path,
           e->offset, e->what ? e->what : "?", e->last_lsn);
    if (tg_wal_end_is_gap(e))
      printf("; LSN %" PRIu64 "..%" PRIu64 " missing", e->expected_lsn, e->found_lsn - 1);
    if (e->valid_offset) printf("; a valid frame follows at offset %" PRIu64, e->valid_offset);
    printf("\n");
    break;
  default:
    printf("end:         UNREADABLE wal/%s (%s: %s)\n", e->path, e->what ? e->what : "?",
           tg_strerror(e->err));
  }
  const tg_wal_end *c = &r->covered_end;
  if (c->reason != TG_WAL_END_NONE) {
    printf("covered:     %s in wal/%s at offset %" PRIu64, c->what ? c->what : "damage", c->path,
           c->offset);
    if (tg_wal_end_is_gap(c))
      printf(" (LSN %" PRIu64 "..%" PRIu64 " missing)", c->expected_lsn, c->found_lsn - 1);
    printf(", among records the checkpoint (LSN %" PRIu64 ") holds: replay does not read them\n",
           r->checkpoint_lsn);
  }
  if (r->apply_failed_lsn)
    printf("apply:       record LSN %" PRIu64 " %s; replay stopped there\n", r->apply_failed_lsn,
           r->apply_failed_what ? r->apply_failed_what : "does not apply");
}

static void print_verdict(const tg_inspect_report *r) {
  switch (exit_for(r)) {
  case EXIT_CLEAN: printf("result:      clean (exit 0)\n"); break;
  case EXIT_TORN: printf("result:      torn tail, recoverable: run 'tg-replay recover' (exit 1)\n"); break;
  default:
    if (r->end.reason == TG_WAL_END_IO && !r->apply_failed_lsn) {
      printf("result:      a segment cannot be read: fix that (permissions, the disk) first; "
             "'tg-replay recover' will not cut it (exit 2)\n");
      break;
    }
    printf("result:      %s: 'tg-replay recover' refuses without "
           "--force-truncate-at-corruption (exit 2)\n",
           r->apply_failed_lsn ? "a record does not apply" : "corruption");
  }
}

static void print_text(const char *dir, const tg_inspect_report *r, int stats) {
  printf("directory:   %s\n", dir);
  if (r->live)
    printf("live:        open in another process: read without its lock, up to the log's\n"
           "             durable point; the records after the checkpoint are counted\n");
  printf("checkpoint:  LSN %" PRIu64 ", %" PRIu64 " tokens, %" PRIu64 " connections\n",
         r->checkpoint_lsn, r->checkpoint_tokens, r->checkpoint_connections);
  printf("log:         %" PRIu64 " segment%s, %" PRIu64 " record%s", r->segments,
         plural(r->segments), r->records, plural(r->records));
  if (r->records) printf(", LSN %" PRIu64 "..%" PRIu64, r->first_lsn, r->last_lsn);
  printf("\n");
  print_end_text(r);
  if (stats) {
    printf("replayed:    %" PRIu64 " record%s after the checkpoint\n", r->replayed,
           plural(r->replayed));
    printf("state:       %" PRIu64 " tokens, %" PRIu64 " connections\n", r->tokens, r->connections);
    if (r->repl_stream_seq || r->repl_epoch)
      printf("replication: stream sequence %" PRIu64 ", epoch %" PRIu64
             " (the checkpoint's position)\n", r->repl_stream_seq, r->repl_epoch);
    else
      printf("replication: none saved with the checkpoint\n");
  }
  print_verdict(r);
}

/* ---- command-line parsing ---------------------------------------------------------- */

typedef struct opts {
  const char *dir;
  const char *config; /* recover --config FILE */
  int json;
  int force;
  int has_from;
  uint64_t from;
} opts;

enum { OPT_JSON = 1, OPT_FROM = 2, OPT_FORCE = 4, OPT_CONFIG = 8 };

/* A usage error: the line on stderr, the usage, and with --json anywhere
   on the line the result object too. */
static int usage_error(int argc, char **argv, void (*usage)(FILE *), const char *what) {
  err_line("%s: %s", argv[0], what);
  usage(stderr);
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--json")) {
      print_json_error(NULL, "usage", EXIT_USAGE, 0, what);
      break;
    }
  return EXIT_USAGE;
}

/* 0: parsed; 1: --help or --version printed; EXIT_USAGE: bad usage
   (message printed). */
static int parse_args(int argc, char **argv, unsigned allowed, void (*usage)(FILE *), opts *o) {
  char what[256];
  memset(o, 0, sizeof *o);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 1;
    } else if (!strcmp(a, "--version")) {
      tgp_print_version(prog);
      return 1;
    } else if ((allowed & OPT_JSON) && !strcmp(a, "--json")) {
      o->json = 1;
    } else if ((allowed & OPT_FORCE) && !strcmp(a, "--force-truncate-at-corruption")) {
      o->force = 1;
    } else if ((allowed & OPT_CONFIG) && (!strcmp(a, "--config") || !strncmp(a, "--config=", 9))) {
      o->config = a[8] == '=' ? a + 9 : (i + 1 < argc ? argv[++i] : NULL);
      if (!o->config || !*o->config)
        return usage_error(argc, argv, usage, "--config needs a file");
    } else if ((allowed & OPT_FROM) && (!strcmp(a, "--from") || !strncmp(a, "--from=", 7))) {
      const char *v = a[6] == '=' ? a + 7 : (i + 1 < argc ? argv[++i] : NULL);
      if (!v || tgp_parse_u64(v, 0, UINT64_MAX, &o->from))
        return usage_error(argc, argv, usage, "--from needs an LSN (a non-negative integer)");
      o->has_from = 1;
    } else if (a[0] == '-' && a[1]) {
      snprintf(what, sizeof what, "unknown option '%s'", a);
      return usage_error(argc, argv, usage, what);
    } else if (!o->dir) {
      o->dir = a;
    } else {
      snprintf(what, sizeof what, "one directory only ('%s' is extra)", a);
      return usage_error(argc, argv, usage, what);
    }
  }
  if (!o->dir) return usage_error(argc, argv, usage, "missing DIR");
  return 0;
}

/* ---- verify, stats -------------------------------------------------------------------- */

/* Inspect o->dir; on failure print the error (and the JSON result object)
   and return EXIT_CORRUPT. */
static int inspect(const opts *o, tg_inspect_report *rep) {
  char msg[MSG_LEN] = "";
  progress pr;
  progress_init(&pr, o->dir);
  int rc = tg_store_inspect(o->dir, rep, progress_cb, &pr, msg, sizeof msg);
  progress_done(&pr);
  if (!rc) return 0;
  const char *what = msg[0] ? msg : tg_strerror(rc);
  err_line("%s (%s)", what, tg_err_name(rc));
  if (o->json) print_json_error(o->dir, "error", EXIT_CORRUPT, rc, what);
  return EXIT_CORRUPT;
}

static int cmd_report(int argc, char **argv, int stats) {
  opts o;
  int rc = parse_args(argc, argv, OPT_JSON, stats ? usage_stats : usage_verify, &o);
  if (rc) return rc == 1 ? EXIT_CLEAN : rc;
  tg_inspect_report r;
  if (inspect(&o, &r)) return EXIT_CORRUPT;
  if (o.json) print_json(o.dir, &r);
  else print_text(o.dir, &r, stats);
  fflush(stdout);
  if (exit_for(&r) != EXIT_CLEAN) diagnose(o.dir, &r);
  return exit_for(&r);
}

static int cmd_verify(int argc, char **argv) { return cmd_report(argc, argv, 0); }
static int cmd_stats(int argc, char **argv) { return cmd_report(argc, argv, 1); }

/* ---- dump ------------------------------------------------------------------------------ */

static const char *type_name(uint8_t type) {
  switch (type) {
  case TG_REC_TOKEN_PUT: return "TOKEN_PUT";
  case TG_REC_TOKEN_DEL: return "TOKEN_DEL";
  case TG_REC_CONN_PUT: return "CONN_PUT";
  case TG_REC_CONN_DEL: return "CONN_DEL";
  case TG_REC_TOKEN_EVICT: return "TOKEN_EVICT";
  case TG_REC_CONN_UPDATE: return "CONN_UPDATE";
  case TG_REC_BATCH: return "BATCH";
  default: return NULL;
  }
}

static const char *const category_names[TG_CAT_COUNT] = {
    "semantic",   "causal",     "temporal",  "spatial",       "logical", "associative",
    "structural", "functional", "emotional", "rule_metaphor", "dynamic"};

static void dump_token(const tg_token *t, int json) {
  unsigned flags = t->flags;
  unsigned entity = (flags & TG_TOKEN_ENTITY_MASK) >> TG_TOKEN_ENTITY_SHIFT;
  unsigned user = (flags & TG_TOKEN_USER_MASK) >> TG_TOKEN_USER_SHIFT;
  if (json) {
    printf(",\"token\":{\"id\":%" PRIu32 ",\"flags\":%u,\"entity\":%u,\"user\":%u"
           ",\"field_radius\":%u,\"field_strength\":%u,\"weight\":%.9g,\"timestamp\":%" PRIu32
           ",\"coord\":[",
           t->id, flags, entity, user, t->field_radius, t->field_strength, (double)t->weight,
           t->timestamp);
    for (int s = 0; s < TG_SPACES; s++)
      printf("%s[%d,%d,%d]", s ? "," : "", t->coord[s][0], t->coord[s][1], t->coord[s][2]);
    printf("]}");
  } else {
    static const char *const names[8] = {"ACTIVE",     "PERSISTENT", "MUTABLE", "SYNCHRONIZED",
                                         "COMPRESSED", "ENCRYPTED",  "DIRTY",   "LOCKED"};
    char fl[96] = "";
    for (int i = 0; i < 8; i++)
      if (flags & (1u << i)) {
        if (fl[0]) strcat(fl, "|");
        strcat(fl, names[i]);
      }
    printf(" id=%" PRIu32 " flags=0x%04x(%s) entity=%u user=%u radius=%u strength=%u weight=%.9g "
           "timestamp=%" PRIu32 " coord=",
           t->id, flags, fl, entity, user, t->field_radius, t->field_strength, (double)t->weight,
           t->timestamp);
    for (int s = 0; s < TG_SPACES; s++)
      printf("%s(%d,%d,%d)", s ? "," : "", t->coord[s][0], t->coord[s][1], t->coord[s][2]);
  }
}

static void dump_conn(const tg_connection *c, int json) {
  unsigned type = c->type;
  const char *cat = TG_CONN_CATEGORY(type) < TG_CAT_COUNT ? category_names[TG_CONN_CATEGORY(type)] : "invalid";
  if (json) {
    printf(",\"connection\":{\"id\":%" PRIu32 ",\"from\":%" PRIu32 ",\"to\":%" PRIu32
           ",\"type\":%u,\"category\":\"%s\",\"rigidity\":%u,\"active_levels\":%u,\"flags\":%u"
           ",\"weight\":%.9g,\"pull_strength\":%.9g,\"activation_count\":%" PRIu32
           ",\"created\":%" PRIu32 ",\"last_activated\":%" PRIu32 ",\"confidence\":%.9g}",
           c->id, c->from, c->to, type, cat, c->rigidity, c->active_levels, c->flags,
           (double)c->weight, (double)c->pull_strength, c->activation_count, c->created,
           c->last_activated, (double)c->confidence);
  } else {
    printf(" id=%" PRIu32 " from=%" PRIu32 " to=%" PRIu32 " type=%u (%s/%u) rigidity=%u "
           "active_levels=0x%02x flags=0x%04x weight=%.9g pull=%.9g activations=%" PRIu32
           " created=%" PRIu32 " last_activated=%" PRIu32 " confidence=%.9g",
           c->id, c->from, c->to, type, cat, type % 16u, c->rigidity, c->active_levels,
           (unsigned)c->flags, (double)c->weight, (double)c->pull_strength, c->activation_count,
           c->created, c->last_activated, (double)c->confidence);
  }
}

/* What a decoded record (or batch entry) holds, after its type. */
static void dump_body(const tg_record *rec, int json) {
  if (rec->type == TG_REC_TOKEN_PUT) dump_token(&rec->token, json);
  else if (rec->type == TG_REC_CONN_PUT || rec->type == TG_REC_CONN_UPDATE)
    dump_conn(&rec->connection, json);
  else if (json) printf(",\"id\":%" PRIu32, rec->id);
  else printf(" id=%" PRIu32, rec->id);
}

static void dump_record(const tg_wal_record *wr, int json) {
  tg_record rec;
  const char *name = type_name(wr->type);
  int known = tg_record_decode(wr, &rec) == 0;
  if (json) {
    printf("{\"lsn\":%" PRIu64 ",\"type\":", wr->lsn);
    if (name) printf("\"%s\"", name);
    else printf("%u", wr->type);
    printf(",\"len\":%" PRIu32, wr->len);
  } else {
    printf("LSN %" PRIu64 " ", wr->lsn);
    if (name) printf("%s", name);
    else printf("type=%u", wr->type);
  }
  if (!known) {
    if (json) printf(",\"malformed\":true}\n");
    else printf(" (%s, %" PRIu32 " payload bytes)\n", name ? "malformed" : "unknown type", wr->len);
    return;
  }
  if (rec.type == TG_REC_BATCH) {
    /* One record, its entries in the order they apply: one line each
       (text, indented), or an "entries" array (JSON). */
    size_t pos = 0;
    uint32_t i = 0;
    if (json) printf(",\"entries\":[");
    else printf(" entries=%" PRIu32 "\n", rec.id);
    while (tg_record_batch_next(wr, &pos, &rec) == 1) {
      if (json) printf("%s{\"type\":\"%s\"", i ? "," : "", type_name((uint8_t)rec.type));
      else printf("  [%" PRIu32 "] %s", i, type_name((uint8_t)rec.type));
      dump_body(&rec, json);
      printf(json ? "}" : "\n");
      i++;
    }
    if (json) printf("]}\n");
    return;
  }
  dump_body(&rec, json);
  printf(json ? "}\n" : "\n");
}

/* Print the records of waldir from `from` (0: the oldest) to where the
   reader stops, counting them in *printed; *stop gets how it stopped. */
static int dump_from(const char *waldir, uint64_t from, uint64_t upto, int json,
                     tg_wal_end *stop, uint64_t *printed) {
  tg_wal_reader *rd = NULL;
  tg_wal_record rec;
  int rc = tg_wal_reader_open(&rd, waldir, from);
  if (rc) return rc;
  while (tg_wal_reader_next(rd, &rec) == 1) {
    if (rec.lsn > upto) break; /* a live log: past its durable point */
    dump_record(&rec, json);
    (*printed)++;
  }
  *stop = *tg_wal_reader_end(rd);
  tg_wal_reader_close(rd);
  return 0;
}

static int cmd_dump(int argc, char **argv) {
  opts o;
  int rc = parse_args(argc, argv, OPT_JSON | OPT_FROM, usage_dump, &o);
  if (rc) return rc == 1 ? EXIT_CLEAN : rc;
  /* Check the directory as verify does (identity, lock, checkpoint, the
     whole log) so bad input gets the same one-line error. */
  tg_inspect_report r;
  if (inspect(&o, &r)) return EXIT_CORRUPT;
  int ex = exit_for(&r);
  char *waldir = wal_dir(o.dir);
  tg_wal_end stop;
  uint64_t printed = 0;
  if (!waldir) {
    err_line("out of memory");
    return EXIT_CORRUPT;
  }
  if (r.segments == 0) goto out;
  /* --from before the oldest record (older ones went with a checkpoint)
     means from the oldest record there is. */
  uint64_t from = o.has_from && o.from > r.first_lsn ? o.from : 0;
  /* A directory another process holds: its records up to the durable
     point the report was made at, never the ones still being written. */
  uint64_t upto = r.live ? r.last_lsn : UINT64_MAX;
  if (r.live && !r.records) goto out;
  if ((rc = dump_from(waldir, from, upto, o.json, &stop, &printed))) goto fail;
  /* Damage among the records the checkpoint covers stops a reader that
     starts below it, but not replay: go on where replay reads. */
  const tg_wal_end *c = &r.covered_end;
  if (c->reason != TG_WAL_END_NONE && stop.segment == c->segment && stop.offset == c->offset) {
    uint64_t resume = r.checkpoint_lsn + 1;
    if (tg_wal_end_is_gap(c) && c->found_lsn < resume) resume = c->found_lsn;
    if (from > resume) resume = from;
    if ((rc = dump_from(waldir, resume, upto, o.json, &stop, &printed))) goto fail;
  }
  goto out;
fail:
  err_line("%s: cannot read the log: %s", waldir, tg_strerror(rc));
  ex = EXIT_CORRUPT;
out:
  if (o.json && rc) print_json_error(o.dir, "error", ex, rc, "the log cannot be read");
  else if (o.json) print_json_dump(o.dir, &r, printed, ex);
  fflush(stdout);
  if (ex != EXIT_CLEAN && !rc) diagnose(o.dir, &r);
  free(waldir);
  return ex;
}

/* ---- recover ------------------------------------------------------------------------------ */

static void print_repair_json(const char *dir, const tg_repair_report *p, int rc, int ex,
                              const char *message) {
  char cut_name[64] = "";
  if (p->cut) tg_wal_segment_name(p->cut_segment, cut_name, sizeof cut_name);
  printf("{\"dir\":");
  tgp_json_str(stdout, dir);
  printf(",\"status\":\"%s\",\"exit\":%d,\"error\":",
         !rc ? "recovered" : p->refused ? "refused" : "failed", ex);
  tgp_json_str(stdout, rc ? tg_err_name(rc) : NULL);
  printf(",\"message\":");
  tgp_json_str(stdout, rc ? message : NULL);
  printf(",\"cut\":\"%s\"", p->cut == TG_REPAIR_CUT_TORN      ? "torn_tail"
                            : p->cut == TG_REPAIR_CUT_CORRUPT ? "corruption"
                                                              : "none");
  printf(",\"cut_segment\":");
  tgp_json_str(stdout, p->cut ? cut_name : NULL);
  printf(",\"cut_offset\":%" PRIu64 ",\"restart\":%s,\"dropped\":%" PRIu64
         ",\"beyond_frames\":%" PRIu64 ",\"kept_bytes\":%" PRIu64 ",\"kept\":",
         p->cut_offset, p->restart ? "true" : "false", p->beyond.above, p->beyond.frames,
         p->kept_bytes);
  tgp_json_str(stdout, p->kept_name[0] ? p->kept_name : NULL);
  printf(",\"moved\":%" PRIu32 ",\"segment_bytes\":%" PRIu64 ",\"replayed\":%" PRIu64
         ",\"checkpoint_lsn\":%" PRIu64 ",\"tokens\":%" PRIu64 ",\"connections\":%" PRIu64,
         p->moved, p->segment_bytes, p->opened.replayed_records, p->checkpoint_lsn, p->tokens,
         p->connections);
  printf(",\"before\":");
  if (p->before.end.reason != TG_WAL_END_NONE) {
    printf("{");
    print_report_members(&p->before);
    printf("}");
  } else {
    printf("null"); /* the directory could not be read */
  }
  printf(",\"after\":");
  if (!rc || p->after.end.reason != TG_WAL_END_NONE) {
    printf("{");
    print_report_members(&p->after);
    printf("}");
  } else {
    printf("null");
  }
  printf("}\n");
}

static void print_beyond(const tg_repair_report *p) {
  const tg_inspect_report *b = &p->before;
  const tg_wal_salvage *s = &p->beyond;
  char name[64];
  tg_wal_segment_name(p->cut_segment, name, sizeof name);
  printf("beyond:      %" PRIu64 " valid record%s from the %s at wal/%s offset %" PRIu64
         " to the end of the log",
         s->above, plural(s->above),
         b->apply_failed_lsn ? "failing record" : tg_wal_end_is_gap(&b->end) ? "gap" : "corruption",
         name, p->cut_offset);
  if (s->frames) printf(", LSN %" PRIu64 "..%" PRIu64, s->min_lsn, s->max_lsn);
  uint64_t next = b->end.last_lsn + 1;
  if (!b->apply_failed_lsn && !tg_wal_end_is_gap(&b->end) && b->end.found_lsn == 0 &&
      (!s->frames || s->min_lsn != next))
    printf("; the record at the corruption (LSN %" PRIu64 ") is unreadable", next);
  if (s->frames > s->above)
    printf("; %" PRIu64 " more are covered by the checkpoint", s->frames - s->above);
  printf("\n");
}

static void print_repair_text(const char *dir, const tg_repair_report *p, int rc, int force) {
  const tg_inspect_report *b = &p->before;
  char name[64];
  printf("directory:   %s\n", dir);
  printf("found:       %" PRIu64 " records", b->records);
  if (b->records) printf(", LSN %" PRIu64 "..%" PRIu64, b->first_lsn, b->last_lsn);
  printf("; checkpoint at LSN %" PRIu64 "\n", b->checkpoint_lsn);
  print_end_text(b);
  if (p->cut == TG_REPAIR_CUT_CORRUPT) print_beyond(p);
  if (p->refused) {
    printf("result:      refused: corruption is never repaired silently. Rerun with\n"
           "             --force-truncate-at-corruption to drop %" PRIu64 " record%s (their\n"
           "             bytes are kept in .broken files). Nothing was changed (exit 2)\n",
           p->beyond.above, plural(p->beyond.above));
    return;
  }
  if (p->cut == TG_REPAIR_CUT_CORRUPT && force)
    printf("dropping:    %" PRIu64 " record%s (--force-truncate-at-corruption)\n", p->beyond.above,
           plural(p->beyond.above));
  if (p->moved) {
    char last[64];
    tg_wal_segment_name(p->moved_first, name, sizeof name);
    tg_wal_segment_name(p->moved_last, last, sizeof last);
    if (p->moved == 1) printf("moved:       wal/%s -> wal/%s.broken\n", name, name);
    else printf("moved:       %" PRIu32 " segments, wal/%s .. wal/%s, each to NAME.broken\n",
                p->moved, name, last);
  }
  if (p->kept_name[0]) {
    tg_wal_segment_name(p->cut_segment, name, sizeof name);
    printf("kept:        %" PRIu64 " bytes [%" PRIu64 ", %" PRIu64 ") of wal/%s in wal/%s\n",
           p->kept_bytes, p->cut_offset, p->cut_offset + p->kept_bytes, name, p->kept_name);
    if (p->truncated)
      printf("cut:         wal/%s truncated to %" PRIu64 " bytes\n", name, p->cut_offset);
  }
  if (p->restart)
    printf("restart:     %s; every segment was moved aside and the log restarts after "
           "the checkpoint's LSN %" PRIu64 "\n",
           tg_wal_end_is_gap(&b->end) ? "records after the checkpoint are missing from the log"
                                      : "the cut fell before the checkpoint's LSN",
           b->checkpoint_lsn);
  if (p->cut == TG_REPAIR_CUT_NONE) printf("repair:      nothing to cut\n");
  if (p->reopened) {
    const tg_recovery_info *ri = &p->opened;
    printf("opened:      %" PRIu64 " record%s replayed after checkpoint LSN %" PRIu64
           ", last LSN %" PRIu64 "\n",
           ri->replayed_records, plural(ri->replayed_records), ri->checkpoint_lsn, ri->last_lsn);
  }
  if (p->checkpointed)
    printf("checkpoint:  written at LSN %" PRIu64 " (%" PRIu64 " tokens, %" PRIu64
           " connections)\n", p->checkpoint_lsn, p->tokens, p->connections);
  const tg_inspect_report *a = &p->after;
  if (!rc)
    printf("result:      recovered: clean; %" PRIu64 " tokens, %" PRIu64 " connections, last LSN %"
           PRIu64 "\n", a->tokens, a->connections,
           a->last_lsn > a->checkpoint_lsn ? a->last_lsn : a->checkpoint_lsn);
  else
    printf("result:      NOT recovered (exit 2)\n");
}

static int cmd_recover(int argc, char **argv) {
  opts o;
  int rc = parse_args(argc, argv, OPT_FORCE | OPT_JSON | OPT_CONFIG, usage_recover, &o);
  if (rc) return rc == 1 ? EXIT_CLEAN : rc;
  char msg[MSG_LEN] = "";
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  if (o.config && (rc = tg_config_load(&cfg, o.config, msg, sizeof msg))) {
    err_line("%s (%s)", msg[0] ? msg : tg_strerror(rc), tg_err_name(rc));
    if (o.json) print_json_error(o.dir, "error", EXIT_CORRUPT, rc, msg);
    return EXIT_CORRUPT;
  }
  tg_repair_report *p = calloc(1, sizeof *p);
  if (!p) {
    err_line("out of memory");
    return EXIT_CORRUPT;
  }
  progress pr;
  progress_init(&pr, o.dir);
  rc = tg_store_repair(o.dir, &cfg, o.force ? TG_REPAIR_FORCE : 0, p, progress_cb, &pr, msg,
                       sizeof msg);
  progress_done(&pr);
  int ex = rc ? EXIT_CORRUPT : EXIT_CLEAN;
  const char *what = msg[0] ? msg : tg_strerror(rc);
  /* Nothing was read: only the error to say. */
  int read = p->before.end.reason != TG_WAL_END_NONE;
  if (o.json) print_repair_json(o.dir, p, rc, ex, what);
  else if (read) print_repair_text(o.dir, p, rc, o.force);
  fflush(stdout);
  if (p->refused)
    err_line("%s: refused to drop %" PRIu64 " record%s after corruption without "
             "--force-truncate-at-corruption; nothing was changed",
             o.dir, p->beyond.above, plural(p->beyond.above));
  else if (rc == TG_ECORRUPT && p->after.end.reason != TG_WAL_END_NONE)
    diagnose(o.dir, &p->after); /* repaired, yet still not clean */
  else if (rc)
    err_line("%s (%s)", what, tg_err_name(rc));
  free(p);
  return ex;
}

/* ---- backup ------------------------------------------------------------------------------ */

typedef struct backup_progress {
  progress bar;
  uint64_t lsn; /* the backup's LSN: the last call's */
} backup_progress;

static void backup_cb(void *arg, uint64_t records, uint64_t lsn) {
  backup_progress *b = arg;
  b->lsn = lsn;
  progress_cb(&b->bar, records, lsn);
}

/* What a backup in dest holds, in bytes: the checkpoint copy's size plus
   the payloads of the log records after it (read back with the WAL
   reader; preallocated segment space is not counted). */
static uint64_t backup_bytes(const char *dest) {
  char path[4096];
  struct stat st;
  uint64_t n = 0;
  snprintf(path, sizeof path, "%s/checkpoint/data.mdb", dest);
  if (stat(path, &st) == 0) n += (uint64_t)st.st_size;
  char *waldir = wal_dir(dest);
  tg_wal_reader *r = NULL;
  tg_wal_record rec;
  if (waldir && tg_wal_reader_open(&r, waldir, 0) == 0)
    while (tg_wal_reader_next(r, &rec) == 1) n += rec.len;
  tg_wal_reader_close(r);
  free(waldir);
  return n;
}

static int cmd_backup(int argc, char **argv) {
  opts o;
  const char *dest = NULL;
  char msg[MSG_LEN] = "";
  int json = 0;
  /* DIR DEST: the second positional argument is the destination; the
     rest is parsed as every command's. */
  char **args = calloc((size_t)argc + 1, sizeof *args);
  int n = 0, positional = 0;
  if (!args) return EXIT_CORRUPT;
  for (int i = 0; i < argc; i++) {
    if (i > 0 && argv[i][0] != '-' && ++positional == 2) dest = argv[i];
    else args[n++] = argv[i];
  }
  int rc = parse_args(n, args, OPT_JSON, usage_backup, &o);
  free(args);
  if (rc) return rc == 1 ? EXIT_CLEAN : rc;
  json = o.json;
  if (!dest) return usage_error(argc, argv, usage_backup, "missing DEST");
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.read_only = 1;
  cfg.crash_dump = 0;
  tg_store *s = NULL, *b = NULL;
  backup_progress bp;
  memset(&bp, 0, sizeof bp);
  progress_init(&bp.bar, o.dir);
  uint64_t t0 = tgp_now_ns(), t1 = t0;
  rc = tg_store_open_msg(&s, o.dir, &cfg, msg, sizeof msg);
  if (!rc) {
    t1 = tgp_now_ns();
    rc = tg_store_backup_msg(s, dest, backup_cb, &bp, msg, sizeof msg);
  }
  /* The rate is the backup's own; opening DIR read-only (loading it into
     memory) is reported apart. */
  double secs = (double)(tgp_now_ns() - t1) / 1e9, open_secs = (double)(t1 - t0) / 1e9;
  progress_done(&bp.bar);
  tg_store_close(s);
  tg_recovery_info ri;
  tg_store_stats st;
  memset(&ri, 0, sizeof ri);
  memset(&st, 0, sizeof st);
  /* What the copy holds, read back from it as an open reads it. */
  if (!rc && !(rc = tg_store_open_msg(&b, dest, &cfg, msg, sizeof msg))) {
    tg_store_recovery_info(b, &ri);
    tg_store_stats_get(b, &st);
    tg_store_close(b);
  }
  if (rc) {
    const char *what = msg[0] ? msg : tg_strerror(rc);
    err_line("%s (%s)", what, tg_err_name(rc));
    if (json) print_json_error(o.dir, "error", EXIT_CORRUPT, rc, what);
    return EXIT_CORRUPT;
  }
  uint64_t bytes = backup_bytes(dest);
  /* Records: the tokens and connections the copy holds (a log record may
     be a batch of many). */
  uint64_t records = st.live_tokens + st.live_connections;
  double mbps = secs > 0 ? (double)bytes / 1e6 / secs : 0;
  double rps = secs > 0 ? (double)records / secs : 0;
  if (json) {
    printf("{\"dir\":");
    tgp_json_str(stdout, o.dir);
    printf(",\"dest\":");
    tgp_json_str(stdout, dest);
    printf(",\"status\":\"copied\",\"exit\":0,\"lsn\":%" PRIu64 ",\"tokens\":%" PRIu64
           ",\"connections\":%" PRIu64 ",\"checkpoint_lsn\":%" PRIu64
           ",\"checkpoint_records\":%" PRIu64 ",\"log_records\":%" PRIu64
           ",\"bytes\":%" PRIu64 ",\"seconds\":%.6f,\"open_seconds\":%.6f,\"mb_per_s\":%.1f"
           ",\"records_per_s\":%.0f}\n",
           st.last_lsn, st.live_tokens, st.live_connections, ri.checkpoint_lsn,
           ri.checkpoint_tokens + ri.checkpoint_connections, ri.replayed_records, bytes, secs,
           open_secs, mbps, rps);
  } else {
    printf("backup:      %s -> %s\n", o.dir, dest);
    printf("as of:       LSN %" PRIu64 " (checkpoint LSN %" PRIu64 " + %" PRIu64 " log record%s)\n",
           st.last_lsn, ri.checkpoint_lsn, ri.replayed_records, plural(ri.replayed_records));
    printf("state:       %" PRIu64 " tokens, %" PRIu64 " connections\n", st.live_tokens,
           st.live_connections);
    printf("copied:      %" PRIu64 " bytes, %" PRIu64 " records in %.3f s (%.1f MB/s, %.0f "
           "records/s), after %.3f s to open %s read-only\n", bytes, records, secs, mbps, rps,
           open_secs, o.dir);
  }
  fflush(stdout);
  return EXIT_CLEAN;
}

/* ---- main --------------------------------------------------------------------------------- */

static const tgp_command commands[] = {
    {"verify", cmd_verify},
    {"stats", cmd_stats},
    {"dump", cmd_dump},
    {"recover", cmd_recover},
    {"backup", cmd_backup},
};

int main(int argc, char **argv) {
  return tgp_main_commands(argc, argv, prog, usage_main, commands,
                           sizeof commands / sizeof commands[0]);
}
