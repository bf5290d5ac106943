/* The helper set shared by programs and tests; see tg_progutil.h. */
#include "tg_progutil.h"

#include <errno.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tokengraph/version.h"

uint64_t tgp_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double tgp_ns_per_tick(void) {
#if defined(__x86_64__) || defined(__i386__)
  uint64_t n0 = tgp_now_ns(), t0 = tgp_ticks();
  while (tgp_now_ns() - n0 < 20000000u) {
  }
  return (double)(tgp_now_ns() - n0) / (double)(tgp_ticks() - t0);
#else
  return 1.0;
#endif
}

uint64_t tgp_rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f) return 0;
  unsigned long long size = 0, resident = 0;
  int n = fscanf(f, "%llu %llu", &size, &resident);
  fclose(f);
  if (n != 2) return 0;
  return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

int tgp_cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

void tgp_sort_u64(uint64_t *v, size_t n) {
  if (n > 1) qsort(v, n, sizeof *v, tgp_cmp_u64);
}

uint64_t tgp_quantile_sorted(const uint64_t *v, size_t n, double q) {
  if (!n) return 0;
  size_t i = (size_t)(q * (double)(n - 1) + 0.5);
  return v[i < n ? i : n - 1];
}

void tgp_json_str(FILE *f, const char *s) {
  if (!s) {
    fputs("null", f);
    return;
  }
  fputc('"', f);
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
    else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
    else fputc(ch, f);
  }
  fputc('"', f);
}

int tgp_write_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (w == 0) return -EIO; /* no progress and no error: do not spin */
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

int tgp_parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out) {
  int base = 10;
  const char *digits = s;
  if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    base = 16;
    digits = s + 2;
  }
  /* strtoull itself would take blanks, a sign and, for base 16, a second
     "0x": only digits of the base may follow. */
  size_t n = strspn(digits, base == 16 ? "0123456789abcdefABCDEF" : "0123456789");
  if (n == 0 || digits[n]) return -EINVAL;
  errno = 0;
  unsigned long long x = strtoull(digits, NULL, base);
  if (errno == ERANGE || x < lo || x > hi) return -ERANGE;
  *out = x;
  return 0;
}

int tgp_mkdtemp(char *buf, size_t len, const char *parent, const char *name) {
  if (!parent) {
    parent = getenv("TMPDIR");
    if (!parent || !*parent) parent = "/tmp";
  }
  int n = snprintf(buf, len, "%s/%s.XXXXXX", parent, name);
  if (n < 0 || (size_t)n >= len) return -ENAMETOOLONG;
  return mkdtemp(buf) ? 0 : -errno;
}

/* nftw has no context argument; the first failure of the current walk. A
   program removes one tree at a time. */
static int rmtree_err;

static int rmtree_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  if (remove(p) && errno != ENOENT && !rmtree_err) rmtree_err = -errno;
  return 0;
}

int tgp_rmtree(const char *path) {
  struct stat st;
  if (lstat(path, &st)) return errno == ENOENT ? 0 : -errno;
  rmtree_err = 0;
  if (nftw(path, rmtree_cb, 16, FTW_DEPTH | FTW_PHYS)) return errno ? -errno : -EIO;
  return rmtree_err;
}

int tgp_exe_dir(char *buf, size_t len) {
  if (len < 2) return -ENAMETOOLONG;
  ssize_t n = readlink("/proc/self/exe", buf, len - 1);
  if (n < 0) return -errno;
  if ((size_t)n >= len - 1) return -ENAMETOOLONG;
  buf[n] = 0;
  char *slash = strrchr(buf, '/');
  if (!slash) return -ENOENT;
  slash[1] = 0;
  return 0;
}

void tgp_print_version(const char *prog) { printf("%s %s\n", prog, tg_version()); }

int tgp_main_commands(int argc, char **argv, const char *prog, void (*usage)(FILE *f),
                      const tgp_command *cmds, size_t n) {
  enum { USAGE = 64 }; /* sysexits' EX_USAGE, as every tool's usage errors */
  if (argc < 2) {
    usage(stderr);
    return USAGE;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    usage(stdout);
    return 0;
  }
  if (!strcmp(argv[1], "--version")) {
    tgp_print_version(prog);
    return 0;
  }
  for (size_t i = 0; i < n; i++)
    if (!strcmp(argv[1], cmds[i].name)) return cmds[i].run(argc - 1, argv + 1);
  fprintf(stderr, "%s: unknown command '%s'\n", prog, argv[1]);
  usage(stderr);
  return USAGE;
}
