/*
 * The seed packer: makes small real data directories with the library and
 * writes each as an input of fuzz_datadir and fuzz_replay (the container of
 * fuzz_dir.h, only the non-zero 4 KiB pieces of each file), and a few
 * configuration inputs for fuzz_config. The seeds under corpus/ were made
 * with it:
 *
 *   fuzz_seed tests/fuzz/corpus
 *
 * writes corpus/datadir/NAME, corpus/replay/NAME (the same directory after
 * each one's flags byte) and corpus/config/NAME.
 */
#include <dirent.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_dir.h"
#include "tokengraph/tokengraph.h"

typedef struct buf {
  uint8_t *p;
  size_t n, cap;
} buf;

static void put(buf *b, const void *p, size_t n) {
  if (b->n + n > b->cap) {
    b->cap = (b->n + n) * 2;
    b->p = realloc(b->p, b->cap);
    if (!b->p) abort();
  }
  memcpy(b->p + b->n, p, n);
  b->n += n;
}

static void put_le(buf *b, uint64_t v, int n) {
  for (int i = 0; i < n; i++) {
    uint8_t c = (uint8_t)(v >> (8 * i));
    put(b, &c, 1);
  }
}

/* One file of the directory as entries: its runs of non-zero bytes (LMDB
   fills a page from both ends; a preallocated segment is zeros after its
   data), the first one carrying the file's size. */
static void pack_file(buf *b, const char *path, const char *name) {
  unsigned long long lsn = 0;
  char tail[8];
  int idx = fz_name_index(name);
  int seg = idx < 0 && sscanf(name, "wal/%20llu.wa%1s", &lsn, tail) == 2 && !strcmp(tail, "l");
  if (idx < 0 && !seg) {
    fprintf(stderr, "fuzz_seed: %s: no name for it, left out\n", name);
    return;
  }
  FILE *f = fopen(path, "rb");
  if (!f) abort();
  struct stat st;
  if (fstat(fileno(f), &st)) abort();
  uint64_t size = (uint64_t)st.st_size;
  if (size >= FZ_MAX_SIZE) size = FZ_MAX_SIZE - 1;
  uint8_t piece[4096];
  uint64_t off = 0;
  int first = 1;
  size_t got;
  while ((got = fread(piece, 1, sizeof piece, f)) > 0) {
    /* Runs of bytes apart by 16 zeros or more are entries of their own. */
    size_t i = 0;
    for (;;) {
      while (i < got && !piece[i]) i++;
      size_t start = i, end = i, zeros = 0;
      for (; i < got && zeros < 16; i++) {
        zeros = piece[i] ? 0 : zeros + 1;
        if (piece[i]) end = i + 1;
      }
      if (end == start && !first) break;
      put_le(b, seg ? (FZ_KIND_SEGMENT << 5) : (uint64_t)idx, 1);
      if (seg) put_le(b, lsn, 8);
      put_le(b, off + start, 3);
      put_le(b, first ? size : 0, 3);
      put_le(b, end - start, 2);
      put(b, piece + start, end - start);
      first = 0;
      if (i >= got) break;
    }
    off += got;
    if (off >= FZ_MAX_SIZE - sizeof piece) break;
  }
  fclose(f);
}

static void pack_dir(buf *b, const char *dir, const char *sub) {
  char path[512];
  snprintf(path, sizeof path, "%s%s%s", dir, sub[0] ? "/" : "", sub);
  DIR *d = opendir(path);
  if (!d) abort();
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char p[768], name[256];
    snprintf(p, sizeof p, "%s/%s", path, e->d_name);
    snprintf(name, sizeof name, "%s%s%s", sub, sub[0] ? "/" : "", e->d_name);
    struct stat st;
    if (lstat(p, &st)) abort();
    if (S_ISDIR(st.st_mode)) pack_dir(b, dir, name);
    else if (S_ISREG(st.st_mode)) pack_file(b, p, name);
  }
  closedir(d);
}

static void write_seed(const char *out, const char *target, const char *name, uint8_t prefix,
                       int with_prefix, const void *p, size_t n) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", out, target);
  (void)mkdir(path, 0755);
  snprintf(path, sizeof path, "%s/%s/%s", out, target, name);
  FILE *f = fopen(path, "wb");
  if (!f) abort();
  if (with_prefix) fputc(prefix, f);
  if (n && fwrite(p, 1, n, f) != n) abort();
  if (fclose(f)) abort();
  printf("%s: %zu bytes\n", path, n + (with_prefix ? 1 : 0));
}

/* The flags byte of both targets: FZ_FIX_CRC, so that mutations of the
   records reach replay, and for fuzz_replay its options. */
static void seed_dir(const char *out, const char *name, const char *dir, uint8_t replay_flags) {
  buf b = {0};
  pack_dir(&b, dir, "");
  /* The torn tail stays torn: its frame keeps its bad CRC. */
  uint8_t fix = strcmp(name, "torn-tail") ? FZ_FIX_CRC : 0;
  write_seed(out, "datadir", name, fix, 1, b.p, b.n);
  write_seed(out, "replay", name, (uint8_t)(replay_flags | fix), 1, b.p, b.n);
  free(b.p);
}

static tg_store *open_small(const char *dir) {
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.crash_dump = 0;
  cfg.checkpoint_bytes = 0;
  cfg.wal.segment_bytes = 4096;
  cfg.wal.ring_slots = 64;
  tg_store *s = NULL;
  char msg[512];
  if (tg_store_open_msg(&s, dir, &cfg, msg, sizeof msg)) {
    fprintf(stderr, "fuzz_seed: %s\n", msg);
    abort();
  }
  return s;
}

/* n tokens in a chain of connections, every third token deleted. */
static void some_changes(tg_store *s, int n) {
  uint32_t prev = 0, id, cid;
  tg_token t;
  memset(&t, 0, sizeof t);
  for (int i = 0; i < n; i++) {
    t.weight = (float)i;
    t.coord[0][0] = (int16_t)i;
    if (tg_token_create(s, &t, &id)) abort();
    if (prev) {
      tg_connection c;
      memset(&c, 0, sizeof c);
      c.from = prev;
      c.to = id;
      c.type = (uint8_t)(i % TG_CONN_TYPES);
      c.weight = 0.5f;
      if (tg_connect(s, &c, &cid)) abort();
    }
    if (i % 3 == 2 && tg_token_delete(s, prev)) abort();
    prev = id;
  }
}

/* Zero the last 8 bytes of data in the newest segment of dir/wal. */
static void tear_last_segment(const char *dir) {
  char wal[256], best[256] = "", path[512];
  snprintf(wal, sizeof wal, "%s/wal", dir);
  DIR *d = opendir(wal);
  if (!d) abort();
  struct dirent *e;
  while ((e = readdir(d)))
    if (strlen(e->d_name) == 24 && !strcmp(e->d_name + 20, ".wal") && strcmp(e->d_name, best) > 0)
      snprintf(best, sizeof best, "%s", e->d_name);
  closedir(d);
  snprintf(path, sizeof path, "%s/%s", wal, best);
  int fd = open(path, O_RDWR);
  if (!best[0] || fd < 0) abort();
  uint8_t b[4096];
  off_t last = -1, off = 0;
  ssize_t n;
  while ((n = pread(fd, b, sizeof b, off)) > 0) {
    for (ssize_t i = 0; i < n; i++)
      if (b[i]) last = off + i;
    off += n;
  }
  if (last < 8) abort();
  static const uint8_t zero[8];
  if (pwrite(fd, zero, 8, last - 7) != 8) abort();
  close(fd);
}

/* A batch: two tokens, a connection between them, an update; and a
   connection update. */
static void one_batch(tg_store *s) {
  tg_batch *b = NULL;
  tg_token t;
  memset(&t, 0, sizeof t);
  uint32_t x, y, c;
  if (tg_batch_begin(s, &b) || tg_batch_token_create(b, &t, &x) ||
      tg_batch_token_create(b, &t, &y))
    abort();
  tg_connection cn;
  memset(&cn, 0, sizeof cn);
  cn.from = x;
  cn.to = y;
  if (tg_batch_connect(b, &cn, &c)) abort();
  t.id = x;
  t.weight = 3.0f;
  if (tg_batch_token_update(b, &t) || tg_batch_commit(b)) abort();
  if (tg_connection_get(s, c, &cn)) abort();
  cn.confidence = 0.5f;
  if (tg_connection_update(s, &cn)) abort();
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: fuzz_seed CORPUS_DIR\n");
    return 64;
  }
  const char *out = argv[1];
  fz_init("seed");
  char d[128];
  tg_store *s;

  snprintf(d, sizeof d, "%s/empty", fz_base());
  s = open_small(d);
  tg_store_close(s);
  seed_dir(out, "empty-store", d, 0);

  /* Segments of 4 KiB: 150 records switch a few times. */
  snprintf(d, sizeof d, "%s/segments", fz_base());
  s = open_small(d);
  some_changes(s, 60);
  tg_store_close(s);
  seed_dir(out, "three-segments", d, 2 /* --json */);

  snprintf(d, sizeof d, "%s/checkpoint", fz_base());
  s = open_small(d);
  some_changes(s, 12);
  if (tg_checkpoint(s)) abort();
  some_changes(s, 9);
  one_batch(s);
  tg_store_close(s);
  seed_dir(out, "checkpoint-and-log", d, 8 /* dump --from */);

  /* A process killed after its changes, without close: what the ring
     holds is appended at the next open (same boot). */
  snprintf(d, sizeof d, "%s/killed", fz_base());
  pid_t pid = fork();
  if (pid < 0) abort();
  if (pid == 0) {
    s = open_small(d);
    some_changes(s, 15);
    _exit(0);
  }
  int status;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) abort();
  seed_dir(out, "killed-without-close", d, 4 /* --force-truncate-at-corruption */);

  /* A torn tail: the last bytes of the newest segment's data zeroed. */
  snprintf(d, sizeof d, "%s/torn", fz_base());
  s = open_small(d);
  some_changes(s, 10);
  tg_store_close(s);
  tear_last_segment(d);
  seed_dir(out, "torn-tail", d, 0);

  /* The configuration: every key, as docs/configuration.md lists them. */
  static const char all_keys[] =
      "; every key\n[guardian]\nmax_tokens = 9500000\nmax_connections = 100000000\n"
      "max_memory_bytes = 1024000000\nmemory_threshold = 0.95\ncleanup_margin = 0.05\n"
      "max_degree = 1000\ncleanup = false\n\n[wal]\nlevel = strict\nsync_interval_ms = 10\n"
      "segment_bytes = 65536\nring_slots = 1024\nlinger_us = 0\nbackpressure = error\n"
      "checkpoint_bytes = 1048576\n";
  write_seed(out, "config", "all-keys", 0, 1, all_keys, sizeof all_keys - 1);
  static const char bad[] = "[guardian]\nmax_tokens = 7\nmax_tokens = 8\n";
  write_seed(out, "config", "set-twice", 0, 1, bad, sizeof bad - 1);
  /* Round trip of the defaults' values (fuzz_config.c round_trip()). */
  tg_store_config c;
  tg_store_config_init(&c);
  buf b = {0};
  put_le(&b, c.guardian.max_tokens, 8);
  put_le(&b, c.guardian.max_connections, 8);
  put_le(&b, c.guardian.max_memory_bytes, 8);
  uint64_t bits;
  memcpy(&bits, &c.guardian.memory_threshold, 8);
  put_le(&b, bits, 8);
  memcpy(&bits, &c.guardian.cleanup_margin, 8);
  put_le(&b, bits, 8);
  put_le(&b, c.guardian.max_degree, 4);
  put_le(&b, (uint64_t)c.guardian.cleanup, 1);
  put_le(&b, (uint64_t)c.wal.level, 1);
  put_le(&b, c.wal.sync_interval_ms, 4);
  put_le(&b, c.wal.segment_bytes, 8);
  put_le(&b, c.wal.ring_slots, 4);
  put_le(&b, c.wal.linger_us, 4);
  put_le(&b, (uint64_t)c.wal.nonblocking, 1);
  put_le(&b, c.checkpoint_bytes, 8);
  write_seed(out, "config", "defaults-round-trip", 1, 1, b.p, b.n);
  free(b.p);
  return 0;
}
