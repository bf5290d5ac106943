/*
 * Ingest records into a store.
 *
 *   batch_ingest DIR [N]
 *
 * Opens (or creates) the data directory DIR at STRICT, so that every
 * acknowledged record is on stable storage, and creates N tokens (default
 * 100,000), each connected to the one before it. Prints what the store
 * holds at the end.
 *
 * Build: cc batch_ingest.c $(pkg-config --cflags --libs tokengraph)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tokengraph/tokengraph.h>

static int fail(const char *what, int rc) {
  fprintf(stderr, "batch_ingest: %s: %s (%s)\n", what, tg_strerror(rc), tg_err_name(rc));
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s DIR [N]\n", argv[0]);
    return 64;
  }
  long n = argc > 2 ? atol(argv[2]) : 100000;
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.wal.level = TG_STRICT;
  cfg.crash_dump = 0;
  tg_store *s = NULL;
  char msg[512];
  int rc = tg_store_open_msg(&s, argv[1], &cfg, msg, sizeof msg);
  if (rc) {
    fprintf(stderr, "batch_ingest: %s (%s)\n", msg, tg_err_name(rc));
    return 1;
  }
  uint32_t prev = 0;
  for (long i = 0; i < n; i++) {
    tg_token t;
    memset(&t, 0, sizeof t);
    t.weight = (float)i;
    uint32_t id;
    if ((rc = tg_token_create(s, &t, &id))) return fail("create", rc);
    if (prev) {
      tg_connection c;
      memset(&c, 0, sizeof c);
      c.from = prev;
      c.to = id;
      c.type = TG_CONN_TYPE(TG_CAT_TEMPORAL, 0);
      uint32_t cid;
      if ((rc = tg_connect(s, &c, &cid))) return fail("connect", rc);
    }
    prev = id;
  }
  tg_store_stats st;
  tg_store_stats_get(s, &st);
  printf("%llu tokens, %llu connections, last LSN %llu\n",
         (unsigned long long)st.live_tokens, (unsigned long long)st.live_connections,
         (unsigned long long)st.last_lsn);
  return tg_store_close(s) ? 1 : 0;
}
