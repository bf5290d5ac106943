/*
 * A read-only monitor of a live store.
 *
 *   monitor DIR [INTERVAL_MS [COUNT]]
 *
 * Opens the data directory DIR read-only (cfg.read_only = 1) while the
 * program that owns it keeps running: no lock is taken and nothing in DIR
 * is written, so the owner is never slowed down or blocked. Prints one line
 * per look: the LSN the handle shows (the log's durable point), the live
 * tokens and connections, and the checkpoint the handle loaded. Then
 * tg_store_refresh() moves it forward. COUNT looks (default 10; 0 means
 * until interrupted), INTERVAL_MS apart (default 1000).
 *
 * Build: cc monitor.c $(pkg-config --cflags --libs tokengraph)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <tokengraph/tokengraph.h>

int main(int argc, char **argv) {
  if (argc < 2 || argc > 4) {
    fprintf(stderr, "usage: %s DIR [INTERVAL_MS [COUNT]]\n", argv[0]);
    return 64;
  }
  long interval_ms = argc > 2 ? atol(argv[2]) : 1000;
  long count = argc > 3 ? atol(argv[3]) : 10;

  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.read_only = 1; /* no LOCK, no writes: the owner keeps the directory */
  cfg.crash_dump = 0;
  tg_store *s = NULL;
  char msg[512];
  int rc = tg_store_open_msg(&s, argv[1], &cfg, msg, sizeof msg);
  if (rc) {
    fprintf(stderr, "%s: %s (%s)\n", argv[0], msg, tg_err_name(rc));
    return 1;
  }
  for (long i = 0; count == 0 || i < count; i++) {
    if (i > 0) {
      struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
      nanosleep(&ts, NULL);
      /* On failure the handle keeps serving the state it had. */
      if ((rc = tg_store_refresh(s)))
        fprintf(stderr, "%s: refresh: %s\n", argv[0], tg_strerror(rc));
    }
    tg_store_stats st;
    tg_store_stats_get(s, &st);
    printf("LSN %llu: %llu tokens, %llu connections (checkpoint LSN %llu)\n",
           (unsigned long long)st.last_lsn, (unsigned long long)st.live_tokens,
           (unsigned long long)st.live_connections, (unsigned long long)st.checkpoint_lsn);
    fflush(stdout);
  }
  tg_store_close(s);
  return 0;
}
