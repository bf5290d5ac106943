/* Raw disk references for tg-bench and tg-stress; see raw_ref.h. */
#include "raw_ref.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tg_progutil.h"

/* Write `count` times `n` bytes of buf to a scratch file in dir, with an
   fdatasync after each write. */
static double timed_writes(const char *dir, const char *name, const unsigned char *buf,
                           size_t n, uint64_t count, uint64_t last_n) {
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  double s = -1;
  uint64_t t0 = tgp_now_ns();
  for (uint64_t i = 0; i < count; i++) {
    size_t len = i + 1 == count && last_n ? (size_t)last_n : n;
    if (write(fd, buf, len) != (ssize_t)len || fdatasync(fd) != 0) goto out;
  }
  s = (double)(tgp_now_ns() - t0) / 1e9;
out:
  close(fd);
  unlink(path);
  return s;
}

double tgb_raw_chunks_seconds(const char *dir, uint64_t bytes) {
  const size_t chunk = 1u << 20;
  unsigned char *buf = malloc(chunk);
  if (!buf) return -1;
  memset(buf, 0xA5, chunk);
  uint64_t count = (bytes + chunk - 1) / chunk;
  double s = timed_writes(dir, "raw-chunks.ref", buf, chunk, count, bytes % chunk);
  free(buf);
  return s;
}

double tgb_raw_sync_each_seconds(const char *dir, uint64_t records, size_t record_bytes) {
  unsigned char rec[256];
  if (record_bytes > sizeof rec) return -1;
  memset(rec, 0xA5, record_bytes);
  return timed_writes(dir, "raw-sync-each.ref", rec, record_bytes, records, 0);
}
