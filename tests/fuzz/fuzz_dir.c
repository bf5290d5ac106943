/* A data directory from fuzzer bytes: see fuzz_dir.h for the format. */
#include "fuzz_dir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/crc32.h"
#include "wal/wal_internal.h" /* the frame CRC, the header layout */

/* Plausible names and odd ones: segment names that are not quite segment
   names (LSN 0, too short, past 2^56, past 2^64, hex, signs, case),
   leftovers (.tmp, .broken), and the directories themselves. */
static const char *const fz_names[32] = {
    "TOKENGRAPH",
    "LOCK",
    "checkpoint/data.mdb",
    "checkpoint/lock.mdb",
    "wal/ring",
    "wal/next.tmp",
    "TOKENGRAPH.tmp",
    "blackbox.json",
    "wal",
    "checkpoint",
    "wal/00000000000000000000.wal",
    "wal/1.wal",
    "wal/99999999999999999999.wal",
    "wal/18446744073709551615.wal",
    "wal/00000000000000000001.wal.broken",
    "wal/00000000000000000001.wal.tmp",
    "wal/0000000000000000000a.wal",
    "wal/.wal",
    "wal/00000000000000000001.WAL",
    "wal/ 0000000000000000001.wal",
    "wal/+0000000000000000001.wal",
    "wal/00072057594037927935.wal", /* the largest LSN, 2^56 - 1 */
    "wal/00072057594037927936.wal", /* 2^56 */
    "wal/00000000000000000001.wal",
    "wal/00000000000000000002.wal",
    "wal/00000000000000000003.wal",
    "wal/00000000000000000001.wal.broken.1",
    "checkpoint/data.mdb.tmp",
    "wal/ring.tmp",
    "blackbox.json.tmp",
    "checkpoint/00000000000000000001.wal",
    "wal/00000000000000000001.wal/x",
};

#define VICTIM_TEXT "the victim file: outside the data directory\n"

static char base[64];
static int regular_only; /* TG_FUZZ_REGULAR_ONLY=1: no links, FIFOs, directories */
static char outside[96], victim[128], vdir[128];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f) {
  (void)st, (void)flag, (void)f;
  return remove(p);
}

void fz_remove(const char *dir) {
  struct stat st;
  if (lstat(dir, &st) == 0 && nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS)) {
    fprintf(stderr, "fuzz: cannot remove %s: %s\n", dir, strerror(errno));
    abort();
  }
}

static void remove_base(void) { fz_remove(base); }

const char *fz_base(void) { return base; }

int fz_name_index(const char *name) {
  for (int i = 0; i < 32; i++)
    if (!strcmp(fz_names[i], name)) return i;
  return -1;
}

static void write_all(int fd, const void *b, size_t n, off_t off) {
  const char *p = b;
  while (n) {
    ssize_t w = pwrite(fd, p, n, off);
    if (w <= 0) abort();
    p += w;
    off += w;
    n -= (size_t)w;
  }
}

void fz_init(const char *tag) {
  if (base[0]) return;
  const char *ro = getenv("TG_FUZZ_REGULAR_ONLY");
  regular_only = ro && *ro && strcmp(ro, "0");
  const char *root = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  snprintf(base, sizeof base, "%s/tg_fuzz_%s_XXXXXX", root, tag);
  if (!mkdtemp(base)) abort();
  atexit(remove_base); /* libFuzzer ends a timed run with exit() */
  snprintf(outside, sizeof outside, "%s/outside", base);
  snprintf(victim, sizeof victim, "%s/victim", outside);
  snprintf(vdir, sizeof vdir, "%s/vdir", outside);
  if (mkdir(outside, 0700) || mkdir(vdir, 0700)) abort();
  int fd = open(victim, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) abort();
  write_all(fd, VICTIM_TEXT, sizeof VICTIM_TEXT - 1, 0);
  close(fd);
}

/* Names in dir other than . and ..: how many, and the first. */
static int entries(const char *dir, char *first, size_t len) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    if (!n && first) snprintf(first, len, "%s", e->d_name);
    n++;
  }
  closedir(d);
  return n;
}

__attribute__((noreturn)) static void outside_changed(const char *what) {
  fprintf(stderr, "fuzz: a write outside the data directory: %s\n", what);
  abort();
}

void fz_check_outside(void) {
  char name[256];
  struct stat st;
  if (lstat(victim, &st) || !S_ISREG(st.st_mode) || (st.st_mode & 07777) != 0600 ||
      st.st_size != (off_t)(sizeof VICTIM_TEXT - 1))
    outside_changed(victim);
  char buf[sizeof VICTIM_TEXT];
  int fd = open(victim, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || read(fd, buf, sizeof buf) != (ssize_t)sizeof VICTIM_TEXT - 1 ||
      memcmp(buf, VICTIM_TEXT, sizeof VICTIM_TEXT - 1))
    outside_changed(victim);
  close(fd);
  if (lstat(vdir, &st) || !S_ISDIR(st.st_mode) || entries(vdir, name, sizeof name) != 0)
    outside_changed(vdir);
  if (entries(outside, name, sizeof name) != 2) outside_changed(outside);
}

/* Make the parent directory of path (one level: names have at most two). */
static void make_parent(const char *dir, const char *name) {
  const char *slash = strchr(name, '/');
  if (!slash) return;
  char p[256];
  snprintf(p, sizeof p, "%s/%.*s", dir, (int)(slash - name), name);
  (void)mkdir(p, 0700);
}

static uint64_t get_le(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

static uint32_t ld32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void st32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Give a segment file a valid header CRC and every frame, as far as the
   lengths chain, a valid CRC (docs/wal-format.md), in its first MiB. */
static void fix_segment(int dfd, const char *name) {
  int fd = openat(dfd, name, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return;
  struct stat st;
  size_t n = 0;
  uint8_t *f = NULL;
  if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size < 64) goto out;
  n = st.st_size > (1 << 20) ? (size_t)1 << 20 : (size_t)st.st_size;
  if (!(f = malloc(n))) abort();
  if (pread(fd, f, n, 0) != (ssize_t)n) goto out;
  st32(f + TG__SH_CRC, tg__crc32(0, f, TG__SH_CRC));
  for (size_t o = TG__WAL_HDR; n - o >= TG__WAL_FRAME_HDR;) {
    uint32_t len = ld32(f + o);
    if (len < TG__WAL_FRAME_HDR || len > n - o) break;
    st32(f + o + 4, tg__wal_frame_crc(f + o, len));
    o += tg__align8(len);
  }
  write_all(fd, f, n, 0);
out:
  free(f);
  close(fd);
}

static void fix_segments(const char *dir) {
  char wal[256];
  snprintf(wal, sizeof wal, "%s/wal", dir);
  int dfd = open(wal, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0) return;
  DIR *d = fdopendir(dfd);
  if (!d) abort();
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t l = strlen(e->d_name);
    if (l > 4 && !strcmp(e->d_name + l - 4, ".wal")) fix_segment(dirfd(d), e->d_name);
  }
  closedir(d);
}

void fz_build(const char *dir, const uint8_t *data, size_t size, unsigned flags) {
  fz_remove(dir);
  if (mkdir(dir, 0700)) abort();
  size_t i = 0;
  while (i < size) {
    uint8_t kind = data[i++];
    int what = kind >> 5;
    if (regular_only && what >= FZ_KIND_LINK && what <= FZ_KIND_DIR) what = 0;
    char name[64];
    if (what == FZ_KIND_SEGMENT) {
      if (size - i < 8) break;
      snprintf(name, sizeof name, "wal/%020llu.wal", (unsigned long long)get_le(data + i, 8));
      i += 8;
    } else {
      snprintf(name, sizeof name, "%s", fz_names[kind & 31]);
    }
    if (size - i < 8) break;
    uint64_t off = get_le(data + i, 3), fsize = get_le(data + i + 3, 3);
    size_t len = (size_t)get_le(data + i + 6, 2);
    i += 8;
    if (len > size - i) len = size - i;
    const uint8_t *bytes = data + i;
    i += len;

    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    make_parent(dir, name);
    /* Never build through a link planted earlier in place of the parent
       (checkpoint -> outside): that write would be the builder's own, not
       the library's, outside the directory. */
    const char *slash = strchr(name, '/');
    if (slash) {
      char parent[256];
      struct stat ps;
      snprintf(parent, sizeof parent, "%s/%.*s", dir, (int)(slash - name), name);
      if (lstat(parent, &ps) || !S_ISDIR(ps.st_mode)) continue;
    }
    if (what == FZ_KIND_LINK) {
      const char *const targets[] = {victim, vdir, outside, "missing"};
      char t[160];
      unsigned k = len ? bytes[0] % 4 : 0;
      if (k == 3) snprintf(t, sizeof t, "%s/missing", outside);
      else snprintf(t, sizeof t, "%s", targets[k]);
      (void)symlink(t, path);
      continue;
    }
    if (what == FZ_KIND_FIFO) {
      (void)mkfifo(path, 0600);
      continue;
    }
    if (what == FZ_KIND_DIR) {
      (void)mkdir(path, 0700);
      continue;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
    if (fd < 0) continue; /* a link, FIFO or directory made earlier */
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
      close(fd);
      continue;
    }
    if (len) write_all(fd, bytes, len, (off_t)off);
    if ((uint64_t)st.st_size < fsize && ftruncate(fd, (off_t)fsize)) abort();
    close(fd);
  }
  if (flags & FZ_FIX_CRC) fix_segments(dir);
}
