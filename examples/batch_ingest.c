/*
 * A batch ingest.
 *
 *   batch_ingest DIR [N [BATCH]]
 *
 * Opens (or creates) the data directory DIR at STRICT, so that a commit
 * returns once its records are on stable storage, and ingests N tokens
 * (default 100,000), each connected to the one before it, BATCH tokens
 * (default 100) to an atomic batch: one commit, one log record and one
 * fdatasync per batch, all or nothing after a crash. Ids are final when an
 * entry is added, so a connection can name a token made earlier in the
 * same batch. Prints what the store holds at the end and the rate.
 *
 * Build: cc batch_ingest.c $(pkg-config --cflags --libs tokengraph)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tokengraph/tokengraph.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One batch: `count` tokens from number `first` on, each connected to the
   token before it (*prev: the last token of the previous batch, 0: none).
   All of it is committed, or none. */
static int ingest_batch(tg_store *s, long first, long count, uint32_t *prev) {
  tg_batch *b = NULL;
  uint32_t last = *prev;
  int rc = tg_batch_begin(s, &b);
  for (long i = first; !rc && i < first + count; i++) {
    tg_token t;
    memset(&t, 0, sizeof t);
    t.weight = (float)i;
    t.timestamp = (uint32_t)time(NULL);
    uint32_t id = 0, cid = 0;
    rc = tg_batch_token_create(b, &t, &id); /* id is final now */
    if (!rc && last) {
      tg_connection c;
      memset(&c, 0, sizeof c);
      c.from = last;
      c.to = id;
      c.type = TG_CONN_TYPE(TG_CAT_TEMPORAL, 0);
      c.weight = 1.0f;
      rc = tg_batch_connect(b, &c, &cid);
    }
    last = id;
  }
  if (rc) {
    if (b) tg_batch_abort(b);
    return rc;
  }
  if ((rc = tg_batch_commit(b))) return rc; /* nothing of it was applied */
  *prev = last;
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2 || argc > 4) {
    fprintf(stderr, "usage: %s DIR [N [BATCH]]\n", argv[0]);
    return 64;
  }
  long n = argc > 2 ? atol(argv[2]) : 100000;
  long per = argc > 3 ? atol(argv[3]) : 100;
  if (n < 0 || per < 1) {
    fprintf(stderr, "%s: N must be >= 0 and BATCH >= 1\n", argv[0]);
    return 64;
  }
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.wal.level = TG_STRICT;
  cfg.crash_dump = 0;
  tg_store *s = NULL;
  char msg[512];
  int rc = tg_store_open_msg(&s, argv[1], &cfg, msg, sizeof msg);
  if (rc) {
    fprintf(stderr, "%s: %s (%s)\n", argv[0], msg, tg_err_name(rc));
    return 1;
  }
  uint32_t prev = 0;
  double t0 = now_s();
  for (long i = 0; i < n && !rc; i += per)
    rc = ingest_batch(s, i, n - i < per ? n - i : per, &prev);
  double secs = now_s() - t0;
  if (rc) {
    fprintf(stderr, "%s: batch: %s (%s)\n", argv[0], tg_strerror(rc), tg_err_name(rc));
    tg_store_close(s);
    return 1;
  }
  tg_store_stats st;
  tg_store_stats_get(s, &st);
  printf("%llu tokens, %llu connections, last LSN %llu\n",
         (unsigned long long)st.live_tokens, (unsigned long long)st.live_connections,
         (unsigned long long)st.last_lsn);
  fprintf(stderr, "%ld tokens in %.3f s (%.0f tokens/s, batches of %ld, STRICT)\n", n, secs,
          secs > 0 ? (double)n / secs : 0.0, per);
  return tg_store_close(s) ? 1 : 0;
}
