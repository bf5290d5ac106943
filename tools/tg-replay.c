/*
 * tg-replay: the operator's tool to inspect and recover a tokengraph data
 * directory after a crash. See docs/operations.md for the guide and
 * docs/wal-format.md for the log format it reads.
 *
 *   tg-replay verify DIR [--json]
 *   tg-replay stats DIR [--json]
 *   tg-replay dump DIR [--from LSN] [--json]
 *   tg-replay recover DIR [--force-truncate-at-corruption]
 *
 * Exit codes: 0 clean, 1 torn tail only (recoverable), 2 corruption or
 * unreadable input, 64 usage error. A successful recover exits 0.
 *
 * Reading goes through tg_store_inspect() and the WAL reader, which never
 * change a file. Only `recover` writes, and only after it has decided what
 * to cut: it first copies every byte it is about to remove into a `.broken`
 * file (fsynced, and the directory fsynced) and only then truncates or
 * renames, so an interrupted recover loses nothing and can be run again.
 *
 * This program uses only the public headers. The few things the library
 * does not expose (where a given record's frame sits, which valid frames
 * follow a corruption) come from its own scan of the segments, written
 * from docs/wal-format.md alone; it is read-only and checked against what
 * the library's reader reported.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tokengraph/tokengraph.h"

#define EXIT_CLEAN 0
#define EXIT_TORN 1
#define EXIT_CORRUPT 2
#define EXIT_USAGE 64

#define SEG_HDR 64u       /* segment header bytes (docs/wal-format.md) */
#define FRAME_HDR 16u     /* len, crc, lsn_type */
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
    "      that cannot be read (missing, not a tokengraph directory, in use\n"
    "      by another process, a checkpoint that is not ours); recover\n"
    "      refused or failed\n"
    "  64  usage error\n";

static void usage_main(FILE *f) {
  fprintf(f,
          "usage: tg-replay COMMAND DIR [options]\n"
          "\n"
          "Inspect and recover a tokengraph data directory. Every command but\n"
          "'recover' only reads; none may run while a program has DIR open.\n"
          "\n"
          "commands:\n"
          "  verify DIR [--json]        read the checkpoint and every WAL segment;\n"
          "                             report records, first/last LSN and how the\n"
          "                             log ends (segment file and offset)\n"
          "  stats DIR [--json]         verify, plus tokens, connections, checkpoint\n"
          "                             LSN and counts, segments, replayed records\n"
          "  dump DIR [--from LSN] [--json]\n"
          "                             print the log's records (LSN, type, payload)\n"
          "  recover DIR [--force-truncate-at-corruption]\n"
          "                             cut a torn tail (bytes kept in a .broken\n"
          "                             file), open the store, write a checkpoint\n"
          "\n"
          "'tg-replay COMMAND --help' describes a command. A progress bar is drawn\n"
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
          "replayed after the checkpoint.\n"
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
          "  --json       one JSON object per line\n"
          "\n%s",
          exit_codes_help);
}

static void usage_recover(FILE *f) {
  fprintf(f,
          "usage: tg-replay recover DIR [--force-truncate-at-corruption]\n"
          "\n"
          "Make DIR openable again and write a fresh checkpoint:\n"
          "  1. verify the directory (as 'verify');\n"
          "  2. a torn tail: copy the bytes from the cut offset to the end of the\n"
          "     segment into SEGMENT.broken beside it (written and fsynced first),\n"
          "     then truncate the segment there;\n"
          "  3. corruption in the middle of the log, or a record that does not\n"
          "     apply: refuse (exit 2) and say how many valid records lie beyond\n"
          "     it, unless --force-truncate-at-corruption is given; then copy the\n"
          "     bytes from the corruption on into SEGMENT.broken, truncate the\n"
          "     segment there and rename every later segment to NAME.broken;\n"
          "  4. open the store (replaying the log) and write a checkpoint;\n"
          "  5. verify again and report.\n"
          "An existing .broken file is never overwritten (.broken.1, .2, ... are\n"
          "used). DIR must not be open in another process.\n"
          "\n"
          "  --force-truncate-at-corruption   drop the records after a corruption\n"
          "                                   (their bytes are kept in .broken files)\n"
          "\n%s",
          exit_codes_help);
}

/* ---- small helpers ---------------------------------------------------------- */

static uint32_t ld32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t ld16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }

static uint64_t ld64(const unsigned char *p) {
  return (uint64_t)ld32(p) | (uint64_t)ld32(p + 4) << 32;
}

static float ldf(const unsigned char *p) {
  uint32_t u = ld32(p);
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* CRC-32 (zlib's crc32(), reflected 0xEDB88320), one table, byte at a time:
   the tool only checks frames it looks at after a corruption. */
static uint32_t crc_table[256];

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    crc_table[i] = c;
  }
}

static uint32_t crc32_update(uint32_t crc, const unsigned char *p, size_t n) {
  crc = ~crc;
  while (n--) crc = crc_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

static char *path_join(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  char *p = malloc(la + lb + 2);
  if (!p) return NULL;
  memcpy(p, a, la);
  p[la] = '/';
  memcpy(p + la + 1, b, lb + 1);
  return p;
}

static void seg_name(char name[32], uint64_t first_lsn) {
  snprintf(name, 32, "%020" PRIu64 ".wal", first_lsn);
}

/* first LSN from a segment file name, or 0 if it is not one. */
static uint64_t parse_seg_name(const char *name) {
  uint64_t v = 0;
  for (int i = 0; i < 20; i++) {
    if (name[i] < '0' || name[i] > '9') return 0;
    unsigned d = (unsigned)(name[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return 0;
    v = v * 10 + d;
  }
  return strcmp(name + 20, ".wal") == 0 ? v : 0;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* The segments of waldir, sorted by first LSN. A missing directory is an
   empty list. */
static int list_segments(const char *waldir, uint64_t **out, size_t *n) {
  uint64_t *v = NULL;
  size_t cnt = 0, cap = 0;
  *out = NULL;
  *n = 0;
  DIR *d = opendir(waldir);
  if (!d) return errno == ENOENT ? 0 : -errno;
  struct dirent *e;
  while ((e = readdir(d))) {
    uint64_t lsn = parse_seg_name(e->d_name);
    if (!lsn) continue;
    if (cnt == cap) {
      size_t nc = cap ? cap * 2 : 16;
      uint64_t *nv = realloc(v, nc * sizeof *nv);
      if (!nv) {
        closedir(d);
        free(v);
        return -ENOMEM;
      }
      v = nv;
      cap = nc;
    }
    v[cnt++] = lsn;
  }
  closedir(d);
  if (cnt) qsort(v, cnt, sizeof *v, cmp_u64);
  *out = v;
  *n = cnt;
  return 0;
}

static void json_str(FILE *f, const char *s) {
  if (!s) {
    fputs("null", f);
    return;
  }
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
    else if (*p == '\n') fputs("\\n", f);
    else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
    else fputc(*p, f);
  }
  fputc('"', f);
}

static int parse_u64(const char *s, uint64_t *out) {
  if (!s || !*s || *s == '-' || *s == '+') return -1;
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end) return -1;
  *out = v;
  return 0;
}

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
  char *waldir = path_join(dir, "wal");
  uint64_t *segs = NULL;
  size_t n = 0;
  if (waldir && list_segments(waldir, &segs, &n) == 0 && n >= 2) {
    uint64_t span = (segs[n - 1] - segs[0]) / (n - 1);
    p->first = segs[0];
    p->end = segs[n - 1] + span;
  }
  free(segs);
  free(waldir);
}

static void progress_cb(void *arg, uint64_t records, uint64_t lsn) {
  progress *p = arg;
  if (!p->on) return;
  if (p->end > p->first) {
    double frac = (double)(lsn - p->first) / (double)(p->end - p->first);
    if (frac > 0.99) frac = 0.99;
    if (frac < 0) frac = 0;
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

/* ---- inspection and verdicts --------------------------------------------------- */

static const char gap_what[] = "records between the checkpoint and the oldest segment are missing";

/* tg_store_inspect() reads the log from its oldest segment, so it does not
   see records missing between the checkpoint and that segment (a deleted
   segment file); the store's own open does (it reads from the checkpoint's
   LSN) and refuses. Report that as corruption at the start of the log. */
static int check_gap(const char *dir, tg_inspect_report *rep) {
  char *waldir = path_join(dir, "wal");
  uint64_t *segs = NULL;
  size_t n = 0;
  if (!waldir) return -ENOMEM;
  int rc = list_segments(waldir, &segs, &n);
  if (!rc && n && segs[0] > rep->checkpoint_lsn + 1) {
    tg_wal_end *e = &rep->end;
    memset(e, 0, sizeof *e);
    e->reason = TG_WAL_END_CORRUPT;
    e->err = TG_ECORRUPT;
    e->segment = segs[0];
    e->last_lsn = rep->checkpoint_lsn;
    e->what = gap_what;
    seg_name(e->path, segs[0]);
  }
  free(segs);
  free(waldir);
  return rc;
}

static int inspect(const char *dir, tg_inspect_report *rep) {
  char msg[MSG_LEN] = "";
  progress pr;
  progress_init(&pr, dir);
  int rc = tg_store_inspect(dir, rep, progress_cb, &pr, msg, sizeof msg);
  progress_done(&pr);
  if (rc) err_line("%s (%s)", msg[0] ? msg : tg_strerror(rc), tg_err_name(rc));
  else if ((rc = check_gap(dir, rep))) err_line("%s/wal: cannot list: %s", dir, strerror(-rc));
  return rc;
}

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
  if (r->apply_failed_lsn && r->end.what != gap_what) return "apply_failed";
  return end_key(r);
}

/* One line saying how the log ends, for stderr when it is not clean. */
static void diagnose(const char *dir, const tg_inspect_report *r) {
  const tg_wal_end *e = &r->end;
  if (r->apply_failed_lsn && e->what != gap_what)
    err_line("%s: record LSN %" PRIu64 " %s (the log and the checkpoint disagree); "
             "'tg-replay recover --force-truncate-at-corruption' drops it and what follows",
             dir, r->apply_failed_lsn, r->apply_failed_what ? r->apply_failed_what : "does not apply");
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

static void print_json(const char *dir, const tg_inspect_report *r) {
  const tg_wal_end *e = &r->end;
  printf("{\"dir\":");
  json_str(stdout, dir);
  printf(",\"status\":\"%s\",\"exit\":%d", status_key(r), exit_for(r));
  printf(",\"records\":%" PRIu64 ",\"first_lsn\":%" PRIu64 ",\"last_lsn\":%" PRIu64, r->records,
         r->first_lsn, r->last_lsn);
  printf(",\"end\":\"%s\",\"reason\":", end_key(r));
  json_str(stdout, tg_wal_end_reason_name(e->reason));
  printf(",\"what\":");
  json_str(stdout, e->what);
  printf(",\"segment\":");
  json_str(stdout, e->path[0] ? e->path : NULL);
  printf(",\"segment_lsn\":%" PRIu64 ",\"offset\":%" PRIu64 ",\"valid_offset\":%" PRIu64, e->segment,
         e->offset, e->valid_offset);
  printf(",\"error\":");
  json_str(stdout, e->err ? tg_err_name(e->err) : NULL);
  printf(",\"tokens\":%" PRIu64 ",\"connections\":%" PRIu64, r->tokens, r->connections);
  printf(",\"checkpoint_lsn\":%" PRIu64 ",\"checkpoint_tokens\":%" PRIu64
         ",\"checkpoint_connections\":%" PRIu64,
         r->checkpoint_lsn, r->checkpoint_tokens, r->checkpoint_connections);
  printf(",\"segments\":%" PRIu64 ",\"replayed\":%" PRIu64 ",\"apply_failed_lsn\":%" PRIu64
         ",\"apply_failed_what\":",
         r->segments, r->replayed, r->apply_failed_lsn);
  json_str(stdout, r->apply_failed_lsn ? r->apply_failed_what : NULL);
  printf("}\n");
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
    if (e->valid_offset) printf("; a valid frame follows at offset %" PRIu64, e->valid_offset);
    printf("\n");
    break;
  default:
    printf("end:         UNREADABLE wal/%s (%s: %s)\n", e->path, e->what ? e->what : "?",
           tg_strerror(e->err));
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
  printf("checkpoint:  LSN %" PRIu64 ", %" PRIu64 " tokens, %" PRIu64 " connections\n",
         r->checkpoint_lsn, r->checkpoint_tokens, r->checkpoint_connections);
  printf("log:         %" PRIu64 " segment%s, %" PRIu64 " record%s", r->segments,
         r->segments == 1 ? "" : "s", r->records, r->records == 1 ? "" : "s");
  if (r->records) printf(", LSN %" PRIu64 "..%" PRIu64, r->first_lsn, r->last_lsn);
  printf("\n");
  print_end_text(r);
  if (stats) {
    printf("replayed:    %" PRIu64 " record%s after the checkpoint\n", r->replayed,
           r->replayed == 1 ? "" : "s");
    printf("state:       %" PRIu64 " tokens, %" PRIu64 " connections\n", r->tokens, r->connections);
  }
  print_verdict(r);
}

/* ---- command-line parsing ---------------------------------------------------------- */

typedef struct opts {
  const char *dir;
  int json;
  int force;
  int has_from;
  uint64_t from;
} opts;

enum { OPT_JSON = 1, OPT_FROM = 2, OPT_FORCE = 4 };

/* 0: parsed; 1: --help printed; EXIT_USAGE: bad usage (message printed). */
static int parse_args(int argc, char **argv, unsigned allowed, void (*usage)(FILE *), opts *o) {
  memset(o, 0, sizeof *o);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 1;
    } else if ((allowed & OPT_JSON) && !strcmp(a, "--json")) {
      o->json = 1;
    } else if ((allowed & OPT_FORCE) && !strcmp(a, "--force-truncate-at-corruption")) {
      o->force = 1;
    } else if ((allowed & OPT_FROM) && (!strcmp(a, "--from") || !strncmp(a, "--from=", 7))) {
      const char *v = a[6] == '=' ? a + 7 : (i + 1 < argc ? argv[++i] : NULL);
      if (!v || parse_u64(v, &o->from)) {
        err_line("%s: --from needs an LSN (a non-negative integer)", argv[0]);
        usage(stderr);
        return EXIT_USAGE;
      }
      o->has_from = 1;
    } else if (a[0] == '-' && a[1]) {
      err_line("%s: unknown option '%s'", argv[0], a);
      usage(stderr);
      return EXIT_USAGE;
    } else if (!o->dir) {
      o->dir = a;
    } else {
      err_line("%s: one directory only ('%s' is extra)", argv[0], a);
      usage(stderr);
      return EXIT_USAGE;
    }
  }
  if (!o->dir) {
    err_line("%s: missing DIR", argv[0]);
    usage(stderr);
    return EXIT_USAGE;
  }
  return 0;
}

/* ---- verify, stats -------------------------------------------------------------------- */

static int cmd_report(int argc, char **argv, int stats) {
  opts o;
  int rc = parse_args(argc, argv, OPT_JSON, stats ? usage_stats : usage_verify, &o);
  if (rc) return rc == 1 ? EXIT_CLEAN : rc;
  tg_inspect_report r;
  if (inspect(o.dir, &r)) return EXIT_CORRUPT;
  if (o.json) print_json(o.dir, &r);
  else print_text(o.dir, &r, stats);
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
  default: return NULL;
  }
}

static const char *const category_names[TG_CAT_COUNT] = {
    "semantic",   "causal",     "temporal",  "spatial",       "logical", "associative",
    "structural", "functional", "emotional", "rule_metaphor", "dynamic"};

static void dump_token(const unsigned char *p, int json) {
  uint16_t flags = ld16(p + 52);
  if (json) {
    printf(",\"token\":{\"id\":%" PRIu32 ",\"flags\":%u,\"entity\":%u,\"user\":%u"
           ",\"field_radius\":%u,\"field_strength\":%u,\"weight\":%.9g,\"timestamp\":%" PRIu32
           ",\"coord\":[",
           ld32(p + 48), flags, (flags & TG_TOKEN_ENTITY_MASK) >> TG_TOKEN_ENTITY_SHIFT,
           (flags & TG_TOKEN_USER_MASK) >> TG_TOKEN_USER_SHIFT, p[54], p[55], (double)ldf(p + 56),
           ld32(p + 60));
    for (int s = 0; s < TG_SPACES; s++)
      printf("%s[%d,%d,%d]", s ? "," : "", (int16_t)ld16(p + 6 * s), (int16_t)ld16(p + 6 * s + 2),
             (int16_t)ld16(p + 6 * s + 4));
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
           ld32(p + 48), flags, fl, (flags & TG_TOKEN_ENTITY_MASK) >> TG_TOKEN_ENTITY_SHIFT,
           (flags & TG_TOKEN_USER_MASK) >> TG_TOKEN_USER_SHIFT, p[54], p[55], (double)ldf(p + 56),
           ld32(p + 60));
    for (int s = 0; s < TG_SPACES; s++)
      printf("%s(%d,%d,%d)", s ? "," : "", (int16_t)ld16(p + 6 * s), (int16_t)ld16(p + 6 * s + 2),
             (int16_t)ld16(p + 6 * s + 4));
  }
}

static void dump_conn(const unsigned char *p, int json) {
  uint8_t type = p[24];
  const char *cat = TG_CONN_CATEGORY(type) < TG_CAT_COUNT ? category_names[TG_CONN_CATEGORY(type)] : "invalid";
  if (json) {
    printf(",\"connection\":{\"id\":%" PRIu32 ",\"from\":%" PRIu32 ",\"to\":%" PRIu32
           ",\"type\":%u,\"category\":\"%s\",\"rigidity\":%u,\"active_levels\":%u,\"flags\":%u"
           ",\"weight\":%.9g,\"pull_strength\":%.9g,\"activation_count\":%" PRIu32
           ",\"created\":%" PRIu32 ",\"last_activated\":%" PRIu32 ",\"confidence\":%.9g}",
           ld32(p + 56), ld32(p), ld32(p + 4), type, cat, p[25], p[26], ld16(p + 28),
           (double)ldf(p + 32), (double)ldf(p + 36), ld32(p + 40), ld32(p + 44), ld32(p + 48),
           (double)ldf(p + 52));
  } else {
    printf(" id=%" PRIu32 " from=%" PRIu32 " to=%" PRIu32 " type=%u (%s/%u) rigidity=%u "
           "active_levels=0x%02x flags=0x%04x weight=%.9g pull=%.9g activations=%" PRIu32
           " created=%" PRIu32 " last_activated=%" PRIu32 " confidence=%.9g",
           ld32(p + 56), ld32(p), ld32(p + 4), type, cat, type % 16u, p[25], p[26], ld16(p + 28),
           (double)ldf(p + 32), (double)ldf(p + 36), ld32(p + 40), ld32(p + 44), ld32(p + 48),
           (double)ldf(p + 52));
  }
}

static void dump_record(const tg_wal_record *rec, int json) {
  const unsigned char *p = rec->payload;
  const char *name = type_name(rec->type);
  int known = (rec->type == TG_REC_TOKEN_PUT || rec->type == TG_REC_CONN_PUT) ? rec->len == 64
              : name ? rec->len == 4 : 0;
  if (json) {
    printf("{\"lsn\":%" PRIu64 ",\"type\":", rec->lsn);
    if (name) printf("\"%s\"", name);
    else printf("%u", rec->type);
    printf(",\"len\":%" PRIu32, rec->len);
  } else {
    printf("LSN %" PRIu64 " ", rec->lsn);
    if (name) printf("%s", name);
    else printf("type=%u", rec->type);
  }
  if (!known) {
    if (json) printf(",\"malformed\":true}\n");
    else printf(" (%s, %" PRIu32 " payload bytes)\n", name ? "malformed" : "unknown type", rec->len);
    return;
  }
  if (rec->type == TG_REC_TOKEN_PUT) dump_token(p, json);
  else if (rec->type == TG_REC_CONN_PUT) dump_conn(p, json);
  else if (json) printf(",\"id\":%" PRIu32, ld32(p));
  else printf(" id=%" PRIu32, ld32(p));
  printf(json ? "}\n" : "\n");
}

static int cmd_dump(int argc, char **argv) {
  opts o;
  int rc = parse_args(argc, argv, OPT_JSON | OPT_FROM, usage_dump, &o);
  if (rc) return rc == 1 ? EXIT_CLEAN : rc;
  /* Check the directory as verify does (identity, lock, checkpoint, the
     whole log) so bad input gets the same one-line error. */
  tg_inspect_report r;
  if (inspect(o.dir, &r)) return EXIT_CORRUPT;
  char *waldir = path_join(o.dir, "wal");
  uint64_t *segs = NULL;
  size_t nseg = 0;
  tg_wal_reader *rd = NULL;
  int ex = exit_for(&r);
  if (!waldir) {
    err_line("out of memory");
    return EXIT_CORRUPT;
  }
  if ((rc = list_segments(waldir, &segs, &nseg))) {
    err_line("%s: cannot list: %s", waldir, strerror(-rc));
    ex = EXIT_CORRUPT;
    goto out;
  }
  if (nseg == 0) goto out;
  /* --from before the oldest segment (older ones went with a checkpoint)
     means from the oldest record there is. */
  uint64_t from = o.has_from && o.from > segs[0] ? o.from : 0;
  if ((rc = tg_wal_reader_open(&rd, waldir, from))) {
    err_line("%s: cannot read the log: %s", waldir, tg_strerror(rc));
    ex = EXIT_CORRUPT;
    goto out;
  }
  tg_wal_record rec;
  while (tg_wal_reader_next(rd, &rec) == 1) dump_record(&rec, o.json);
out:
  fflush(stdout);
  if (ex != EXIT_CLEAN) diagnose(o.dir, &r);
  tg_wal_reader_close(rd);
  free(segs);
  free(waldir);
  return ex;
}

/* ---- recover ------------------------------------------------------------------------------ */

typedef struct mapped {
  const unsigned char *p;
  size_t size;
} mapped;

static int map_file(const char *path, mapped *m) {
  m->p = NULL;
  m->size = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  struct stat st;
  if (fstat(fd, &st)) {
    int e = -errno;
    close(fd);
    return e;
  }
  m->size = (size_t)st.st_size;
  if (m->size) {
    void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = -errno;
      close(fd);
      m->size = 0;
      return e;
    }
    m->p = p;
  }
  close(fd);
  return 0;
}

static void unmap_file(mapped *m) {
  if (m->p) munmap((void *)m->p, m->size);
  m->p = NULL;
  m->size = 0;
}

/* A valid frame at m[off] (docs/wal-format.md, "Validity of a frame"):
   returns its len, or 0. */
static uint32_t valid_frame(const mapped *m, size_t off, uint64_t *lsn) {
  if (off >= m->size || m->size - off < FRAME_HDR) return 0;
  const unsigned char *f = m->p + off;
  uint32_t len = ld32(f);
  if (len < FRAME_HDR || len > FRAME_HDR + TG_WAL_MAX_PAYLOAD || len > m->size - off) return 0;
  if (crc32_update(crc32_update(0, f, 4), f + 8, len - 8u) != ld32(f + 4)) return 0;
  size_t pad_end = off + ((len + 7u) & ~(size_t)7);
  if (pad_end > m->size) pad_end = m->size;
  for (size_t i = off + len; i < pad_end; i++)
    if (m->p[i]) return 0;
  *lsn = ld64(f + 8) & TG_WAL_MAX_LSN;
  return len;
}

/* What lies beyond a cut: the valid frames from `off` of segment index
   `first` to the end of the log, found at any 8-aligned offset. */
typedef struct beyond {
  uint64_t frames;      /* valid frames found */
  uint64_t lost;        /* of which with an LSN above the checkpoint */
  uint64_t min_lsn, max_lsn;
} beyond;

static int scan_beyond(const char *waldir, const uint64_t *segs, size_t nseg, size_t first,
                       uint64_t off, uint64_t ckpt_lsn, beyond *b) {
  memset(b, 0, sizeof *b);
  for (size_t i = first; i < nseg; i++) {
    char name[32];
    seg_name(name, segs[i]);
    char *path = path_join(waldir, name);
    if (!path) return -ENOMEM;
    mapped m;
    int rc = map_file(path, &m);
    free(path);
    if (rc) return rc;
    size_t q = i == first ? (size_t)off & ~(size_t)7 : 0;
    while (q + FRAME_HDR <= m.size) {
      uint64_t lsn = 0;
      uint32_t len = valid_frame(&m, q, &lsn);
      if (!len) {
        q += 8;
        continue;
      }
      b->frames++;
      if (lsn > ckpt_lsn) b->lost++;
      if (!b->min_lsn || lsn < b->min_lsn) b->min_lsn = lsn;
      if (lsn > b->max_lsn) b->max_lsn = lsn;
      q += (len + 7u) & ~(size_t)7;
    }
    unmap_file(&m);
  }
  return 0;
}

/* Where the frame of record `lsn` is: the log is valid up to it (the
   library's reader yielded it), so walking valid frames in order finds it. */
static int find_record(const char *waldir, const uint64_t *segs, size_t nseg, uint64_t want,
                       size_t *seg_index, uint64_t *offset) {
  size_t i = nseg;
  while (i > 0 && segs[i - 1] > want) i--;
  if (i == 0) return -ENOENT;
  i--;
  char name[32];
  seg_name(name, segs[i]);
  char *path = path_join(waldir, name);
  if (!path) return -ENOMEM;
  mapped m;
  int rc = map_file(path, &m);
  free(path);
  if (rc) return rc;
  rc = -ENOENT;
  size_t q = SEG_HDR;
  uint64_t lsn = 0;
  uint32_t len;
  while ((len = valid_frame(&m, q, &lsn))) {
    if (lsn == want) {
      *seg_index = i;
      *offset = q;
      rc = 0;
      break;
    }
    q += (len + 7u) & ~(size_t)7;
  }
  unmap_file(&m);
  return rc;
}

/* A name for the kept bytes of `name` that does not exist yet:
   NAME.broken, then NAME.broken.1, .2, ... */
static int broken_name(const char *waldir, const char *name, char *out, size_t outlen) {
  for (int k = 0; k < 1000; k++) {
    if (k == 0) snprintf(out, outlen, "%s/%s.broken", waldir, name);
    else snprintf(out, outlen, "%s/%s.broken.%d", waldir, name, k);
    struct stat st;
    if (lstat(out, &st) && errno == ENOENT) return 0;
  }
  return -EEXIST;
}

static int fsync_path(const char *path, int dir) {
  int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDWR) | O_CLOEXEC);
  if (fd < 0) return -errno;
  int rc = fsync(fd) ? -errno : 0;
  close(fd);
  return rc;
}

/* Copy bytes [off, size) of segment `src` into a new file `dst`, sparse
   where the source is zero (a preallocated segment is mostly zeros), then
   fsync it. dst has exactly size - off bytes. */
static int keep_bytes(const char *src, uint64_t off, const char *dst, uint64_t *kept) {
  int in = -1, out = -1, rc = 0;
  unsigned char *buf = NULL;
  const size_t chunk = 1u << 16;
  struct stat st;
  if ((in = open(src, O_RDONLY | O_CLOEXEC)) < 0 || fstat(in, &st)) goto sys_fail;
  if ((out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) goto sys_fail;
  if (!(buf = malloc(chunk))) {
    rc = -ENOMEM;
    goto cleanup;
  }
  uint64_t size = (uint64_t)st.st_size, pos = off;
  while (pos < size) {
    size_t want = size - pos < chunk ? (size_t)(size - pos) : chunk;
    ssize_t n = pread(in, buf, want, (off_t)pos);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) goto sys_fail;
    if (n == 0) break;
    int zero = 1;
    for (ssize_t i = 0; i < n && zero; i++) zero = !buf[i];
    for (ssize_t done = 0; !zero && done < n;) {
      ssize_t w = pwrite(out, buf + done, (size_t)(n - done), (off_t)(pos - off + (uint64_t)done));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) goto sys_fail;
      done += w;
    }
    pos += (uint64_t)n;
  }
  if (ftruncate(out, (off_t)(pos - off)) || fsync(out)) goto sys_fail;
  *kept = pos - off;
  goto cleanup;
sys_fail:
  rc = -errno;
cleanup:
  free(buf);
  if (in >= 0) close(in);
  if (out >= 0 && close(out) && !rc) rc = -errno;
  if (rc && out >= 0) unlink(dst);
  return rc;
}

static tg_store_config recover_config(void) {
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  /* Recovery must not refuse or evict what the log holds: no quotas. */
  cfg.guardian.max_tokens = 0xFFFFFFFFull;
  cfg.guardian.max_connections = 0xFFFFFFFFull;
  cfg.guardian.max_memory_bytes = 1ull << 62;
  cfg.guardian.memory_threshold = 1.0;
  cfg.guardian.cleanup = 0;
  cfg.guardian.max_degree = 0xFFFFFFFFu;
  cfg.checkpoint_bytes = 0; /* one explicit checkpoint */
  return cfg;
}

/* The segment size the store was using (the prealloc_bytes field of the
   newest segment header), so the cut segment is preallocated again to the
   size it had rather than to the default. */
static uint64_t segment_size(const char *waldir, uint64_t dflt) {
  uint64_t *segs = NULL, v = dflt;
  size_t n = 0;
  if (list_segments(waldir, &segs, &n) == 0 && n) {
    char name[32], path[4096];
    unsigned char h[SEG_HDR];
    seg_name(name, segs[n - 1]);
    snprintf(path, sizeof path, "%s/%s", waldir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      if (pread(fd, h, sizeof h, 0) == (ssize_t)sizeof h && !memcmp(h, "TGWALSEG", 8) &&
          crc32_update(0, h, 60) == ld32(h + 60)) {
        uint64_t p = ld64(h + 24);
        if (p >= 4096 && p % 4096 == 0 && p <= (1ull << 40)) v = p;
      }
      close(fd);
    }
  }
  free(segs);
  return v;
}

/* Move segment `name` aside whole (rename to NAME.broken[.k]). */
static int move_aside(const char *waldir, const char *name) {
  char from[4096], to[4096];
  snprintf(from, sizeof from, "%s/%s", waldir, name);
  int rc = broken_name(waldir, name, to, sizeof to);
  if (rc) {
    err_line("%s: no free .broken name", from);
    return rc;
  }
  if (rename(from, to)) {
    rc = -errno;
    err_line("cannot rename %s to %s: %s", from, to, strerror(errno));
    return rc;
  }
  printf("moved:       wal/%s -> wal/%s\n", name, strrchr(to, '/') + 1);
  return 0;
}

static int take_lock(const char *dir, int *fd_out) {
  char *path = path_join(dir, "LOCK");
  if (!path) return -ENOMEM;
  int rc = 0, fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    rc = -errno;
    err_line("%s: cannot open: %s", path, strerror(errno));
  } else if (flock(fd, LOCK_EX | LOCK_NB)) {
    rc = -errno;
    err_line("%s is open in another process: close it first", dir);
    close(fd);
    fd = -1;
  }
  free(path);
  *fd_out = fd;
  return rc;
}

static int cmd_recover(int argc, char **argv) {
  opts o;
  int rc = parse_args(argc, argv, OPT_FORCE, usage_recover, &o);
  if (rc) return rc == 1 ? EXIT_CLEAN : rc;
  const char *dir = o.dir;
  tg_inspect_report r;
  char *waldir = NULL;
  uint64_t *segs = NULL;
  size_t nseg = 0;
  int lock_fd = -1, ex = EXIT_CORRUPT;
  tg_store *s = NULL;

  if (inspect(dir, &r)) return EXIT_CORRUPT;
  if (!(waldir = path_join(dir, "wal"))) goto oom;
  if ((rc = list_segments(waldir, &segs, &nseg))) {
    err_line("%s: cannot list: %s", waldir, strerror(-rc));
    goto out;
  }
  printf("directory:   %s\n", dir);
  printf("found:       %" PRIu64 " records", r.records);
  if (r.records) printf(", LSN %" PRIu64 "..%" PRIu64, r.first_lsn, r.last_lsn);
  printf("; checkpoint at LSN %" PRIu64 "\n", r.checkpoint_lsn);
  print_end_text(&r);

  /* Where to cut: the first record that does not apply, else the end. */
  enum { CUT_NONE, CUT_TORN, CUT_CORRUPT } kind = CUT_NONE;
  size_t cut_seg = 0;
  uint64_t cut_off = 0, last_good = r.end.last_lsn;
  int gap = r.end.what == gap_what;
  if (gap) {
    kind = CUT_CORRUPT; /* every segment goes aside, see restart below */
    last_good = r.checkpoint_lsn;
  } else if (r.apply_failed_lsn) {
    kind = CUT_CORRUPT;
    last_good = r.apply_failed_lsn - 1;
    if ((rc = find_record(waldir, segs, nseg, r.apply_failed_lsn, &cut_seg, &cut_off))) {
      err_line("%s: cannot find the frame of LSN %" PRIu64 " (%s): the log changed while it "
               "was read?", waldir, r.apply_failed_lsn, strerror(-rc));
      goto out;
    }
  } else if (r.end.reason == TG_WAL_END_TORN || r.end.reason == TG_WAL_END_CORRUPT) {
    if (r.end.err == TG_EVERSION) {
      err_line("%s/%s was written by a newer format version: use a newer tg-replay; "
               "nothing was changed", waldir, r.end.path);
      goto out;
    }
    kind = r.end.reason == TG_WAL_END_TORN ? CUT_TORN : CUT_CORRUPT;
    cut_off = r.end.offset;
    while (cut_seg < nseg && segs[cut_seg] != r.end.segment) cut_seg++;
    if (cut_seg == nseg) {
      err_line("%s: segment %s is gone: the log changed while it was read? Nothing was changed",
               waldir, r.end.path);
      goto out;
    }
  } else if (r.end.reason != TG_WAL_END_CLEAN) {
    err_line("%s/%s cannot be read (%s: %s): fix that first; nothing was changed", waldir,
             r.end.path, r.end.what ? r.end.what : "?", tg_strerror(r.end.err));
    goto out;
  }
  /* A cut before the checkpoint's LSN would leave the log ending before
     the checkpoint: then every segment goes aside (all it holds up to the
     checkpoint is in the checkpoint) and the log restarts after it. */
  int restart = gap || (kind != CUT_NONE && r.checkpoint_lsn && last_good < r.checkpoint_lsn);
  /* What the cut segment looked like when it was read: checked again under
     the lock, in case a program opened the directory in between. */
  struct stat seen;
  memset(&seen, 0, sizeof seen);
  char cut_path[4096] = "";
  if (kind != CUT_NONE) {
    char name[32];
    seg_name(name, segs[cut_seg]);
    snprintf(cut_path, sizeof cut_path, "%s/%s", waldir, name);
    if (stat(cut_path, &seen)) {
      err_line("%s: %s; nothing was changed", cut_path, strerror(errno));
      goto out;
    }
  }

  beyond b;
  memset(&b, 0, sizeof b);
  if (kind == CUT_CORRUPT) {
    if ((rc = scan_beyond(waldir, segs, nseg, cut_seg, cut_off, r.checkpoint_lsn, &b))) {
      err_line("%s: cannot read the segments: %s", waldir, strerror(-rc));
      goto out;
    }
    char cut_name[32];
    seg_name(cut_name, segs[cut_seg]);
    printf("beyond:      %" PRIu64 " valid record%s from the %s at wal/%s offset %" PRIu64
           " to the end of the log",
           b.lost, b.lost == 1 ? "" : "s",
           gap ? "start of the oldest segment" : r.apply_failed_lsn ? "failing record" : "corruption",
           cut_name, cut_off);
    if (b.frames) printf(", LSN %" PRIu64 "..%" PRIu64, b.min_lsn, b.max_lsn);
    if (!gap && !r.apply_failed_lsn && (!b.frames || b.min_lsn != last_good + 1))
      printf("; the record at the corruption (LSN %" PRIu64 ") is unreadable", last_good + 1);
    if (b.frames > b.lost)
      printf("; %" PRIu64 " more are covered by the checkpoint", b.frames - b.lost);
    printf("\n");
    if (!o.force) {
      printf("result:      refused: corruption is never repaired silently. Rerun with\n"
             "             --force-truncate-at-corruption to drop %" PRIu64 " record%s (their\n"
             "             bytes are kept in .broken files). Nothing was changed (exit 2)\n",
             b.lost, b.lost == 1 ? "" : "s");
      err_line("%s: refused to drop %" PRIu64 " record%s after corruption without "
               "--force-truncate-at-corruption; nothing was changed",
               dir, b.lost, b.lost == 1 ? "" : "s");
      goto out;
    }
    printf("dropping:    %" PRIu64 " record%s (--force-truncate-at-corruption)\n", b.lost,
           b.lost == 1 ? "" : "s");
  }

  if (kind != CUT_NONE) {
    if (take_lock(dir, &lock_fd)) goto out;
    struct stat now;
    if (stat(cut_path, &now) || now.st_size != seen.st_size ||
        now.st_mtim.tv_sec != seen.st_mtim.tv_sec || now.st_mtim.tv_nsec != seen.st_mtim.tv_nsec) {
      err_line("%s changed while it was being read (was the directory opened?): run recover "
               "again; nothing was changed", cut_path);
      goto out;
    }
    /* Later segments first, newest first: an interrupted recover leaves a
       log that still shows the same corruption, and can be run again. */
    int whole = restart || cut_off < SEG_HDR; /* the cut segment goes aside whole */
    size_t lo = restart ? 0 : whole ? cut_seg : cut_seg + 1;
    for (size_t i = nseg; i-- > lo;) {
      char name[32];
      seg_name(name, segs[i]);
      if (move_aside(waldir, name)) goto out;
    }
    if (!whole) {
      char name[32], path[4096], kept_path[4096];
      seg_name(name, segs[cut_seg]);
      snprintf(path, sizeof path, "%s/%s", waldir, name);
      if ((rc = broken_name(waldir, name, kept_path, sizeof kept_path))) {
        err_line("%s: no free .broken name", path);
        goto out;
      }
      uint64_t kept = 0;
      if ((rc = keep_bytes(path, cut_off, kept_path, &kept)) || (rc = fsync_path(waldir, 1))) {
        err_line("cannot keep the bytes of %s in %s: %s; nothing was cut", path, kept_path,
                 strerror(-rc));
        goto out;
      }
      printf("kept:        %" PRIu64 " bytes [%" PRIu64 ", %" PRIu64 ") of wal/%s in wal/%s\n", kept,
             cut_off, cut_off + kept, name, strrchr(kept_path, '/') + 1);
      if (truncate(path, (off_t)cut_off) || (rc = fsync_path(path, 0))) {
        rc = rc ? rc : -errno;
        err_line("cannot truncate %s at %" PRIu64 ": %s", path, cut_off, strerror(-rc));
        goto out;
      }
      printf("cut:         wal/%s truncated to %" PRIu64 " bytes\n", name, cut_off);
    }
    if ((rc = fsync_path(waldir, 1))) {
      err_line("%s: fsync: %s", waldir, strerror(-rc));
      goto out;
    }
    if (restart)
      printf("restart:     %s; every segment was moved aside and the log restarts after "
             "the checkpoint's LSN %" PRIu64 "\n",
             gap ? "records after the checkpoint are missing from the log"
                 : "the cut fell before the checkpoint's LSN",
             r.checkpoint_lsn);
    close(lock_fd);
    lock_fd = -1;
  } else {
    printf("repair:      nothing to cut\n");
  }

  /* Open (replays the log; the WAL recovery re-preallocates the cut
     segment) and write a fresh checkpoint. */
  tg_store_config cfg = recover_config();
  cfg.wal.segment_bytes = segment_size(waldir, cfg.wal.segment_bytes);
  char msg[MSG_LEN] = "";
  if ((rc = tg_store_open_msg(&s, dir, &cfg, msg, sizeof msg))) {
    err_line("%s (%s)", msg[0] ? msg : tg_strerror(rc), tg_err_name(rc));
    goto out;
  }
  tg_recovery_info ri;
  tg_store_recovery_info(s, &ri);
  printf("opened:      %" PRIu64 " record%s replayed after checkpoint LSN %" PRIu64 ", last LSN %" PRIu64
         "\n", ri.replayed_records, ri.replayed_records == 1 ? "" : "s", ri.checkpoint_lsn,
         ri.last_lsn);
  if ((rc = tg_checkpoint(s))) {
    err_line("%s: checkpoint failed: %s (%s)", dir, tg_strerror(rc), tg_err_name(rc));
    goto out;
  }
  tg_store_stats st;
  tg_store_stats_get(s, &st);
  printf("checkpoint:  written at LSN %" PRIu64 " (%" PRIu64 " tokens, %" PRIu64 " connections)\n",
         st.checkpoint_lsn, st.live_tokens, st.live_connections);
  rc = tg_store_close(s);
  s = NULL;
  if (rc) {
    err_line("%s: close failed: %s (%s)", dir, tg_strerror(rc), tg_err_name(rc));
    goto out;
  }
  tg_inspect_report after;
  if (inspect(dir, &after)) goto out;
  ex = exit_for(&after);
  if (ex == EXIT_CLEAN)
    printf("result:      recovered: clean; %" PRIu64 " tokens, %" PRIu64 " connections, last LSN %"
           PRIu64 "\n", after.tokens, after.connections,
           after.last_lsn > after.checkpoint_lsn ? after.last_lsn : after.checkpoint_lsn);
  else {
    printf("result:      NOT recovered: the directory still is not clean (exit 2)\n");
    diagnose(dir, &after);
    ex = EXIT_CORRUPT;
  }
  goto out;
oom:
  err_line("out of memory");
out:
  if (s) tg_store_close(s);
  if (lock_fd >= 0) close(lock_fd);
  free(segs);
  free(waldir);
  fflush(stdout);
  return ex;
}

/* ---- main --------------------------------------------------------------------------------- */

typedef struct command {
  const char *name;
  int (*run)(int argc, char **argv);
} command;

static const command commands[] = {
    {"verify", cmd_verify},
    {"stats", cmd_stats},
    {"dump", cmd_dump},
    {"recover", cmd_recover},
};

int main(int argc, char **argv) {
  crc_init();
  if (argc < 2) {
    usage_main(stderr);
    return EXIT_USAGE;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    usage_main(stdout);
    return EXIT_CLEAN;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
  err_line("unknown command '%s'", argv[1]);
  usage_main(stderr);
  return EXIT_USAGE;
}
