/*
 * libFuzzer target: any bytes as checkpoint/data.mdb of a data directory,
 * inspected (tg_store_inspect(), what tg-replay runs) and then opened and
 * closed as a store. Neither may crash, hang, read outside the file or
 * leak; a refusal must be one of the documented errors with a message
 * naming the directory. The seed corpus (corpus/checkpoint) holds a real
 * small data.mdb (its pages in use), so mutations start from LMDB's
 * structure rather than from noise.
 *
 * Each input gets a fresh directory holding only the identity file and
 * the checkpoint: with no log, the open loads the checkpoint and starts an
 * empty log after its LSN.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tokengraph/tokengraph.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char base[64];
static char identity[64];
static size_t identity_len;

static void write_file(const char *path, const void *b, size_t n) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) abort();
  const char *p = b;
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w <= 0) abort();
    p += w;
    n -= (size_t)w;
  }
  close(fd);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f) {
  (void)st, (void)flag, (void)f;
  return remove(p);
}

/* Remove a case directory and whatever the open made in it. */
static void remove_case(const char *d) {
  struct stat st;
  if (lstat(d, &st) == 0 && nftw(d, rm_one, 16, FTW_DEPTH | FTW_PHYS)) abort();
}

static void remove_base(void) { remove_case(base); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!base[0]) {
    const char *root = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(base, sizeof base, "%s/tg_fuzz_ckpt_XXXXXX", root);
    if (!mkdtemp(base)) abort();
    atexit(remove_base); /* libFuzzer ends a timed run with exit() */
    /* The identity file of this library's format. */
    tg_store *s = NULL;
    char d[96];
    snprintf(d, sizeof d, "%s/seed", base);
    if (tg_store_open(&s, d, NULL)) abort();
    tg_store_close(s);
    char p[128];
    snprintf(p, sizeof p, "%s/TOKENGRAPH", d);
    FILE *f = fopen(p, "rb");
    if (!f) abort();
    identity_len = fread(identity, 1, sizeof identity, f);
    fclose(f);
    remove_case(d);
  }
  char d[96], p[128], msg[512];
  snprintf(d, sizeof d, "%s/case", base);
  remove_case(d);
  if (mkdir(d, 0700)) abort();
  snprintf(p, sizeof p, "%s/TOKENGRAPH", d);
  write_file(p, identity, identity_len);
  snprintf(p, sizeof p, "%s/checkpoint", d);
  if (mkdir(p, 0700)) abort();
  snprintf(p, sizeof p, "%s/checkpoint/data.mdb", d);
  write_file(p, data, size);

  tg_inspect_report rep;
  msg[0] = 0;
  int irc = tg_store_inspect(d, &rep, NULL, NULL, msg, sizeof msg);
  if (irc && !strstr(msg, d)) abort(); /* every refusal names the file */

  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.crash_dump = 0; /* libFuzzer owns the fatal signals */
  cfg.checkpoint_bytes = 0;
  cfg.wal.segment_bytes = 65536;
  tg_store *s = NULL;
  msg[0] = 0;
  int rc = tg_store_open_msg(&s, d, &cfg, msg, sizeof msg);
  if (rc) {
    if (s || !strstr(msg, d)) abort();
    if (rc != TG_ECORRUPT && rc != TG_ENOTTG && rc != TG_EVERSION && rc != TG_ENOMEM &&
        rc != TG_ENOSPC && rc != TG_EIO)
      abort();
    /* A verdict on the file's contents is inspection's verdict too. */
    if ((rc == TG_ECORRUPT || rc == TG_ENOTTG || rc == TG_EVERSION) && !irc) abort();
  } else {
    /* What opened must be what inspection saw. */
    tg_store_stats st;
    tg_store_stats_get(s, &st);
    if (irc || st.live_tokens != rep.tokens || st.live_connections != rep.connections)
      abort();
    if (tg_checkpoint(s)) abort(); /* LMDB writes into what it was given */
    tg_store_close(s);
  }
  return 0;
}
