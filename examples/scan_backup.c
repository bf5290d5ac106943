/*
 * A scan with a backup.
 *
 *   scan_backup DIR DEST
 *
 * Opens the data directory DIR, pages through its tokens with
 * tg_token_scan(), 1,000 to a page, each page resuming after the last id
 * the one before saw (ids are never reused, so a resumed scan neither
 * repeats nor skips a token), and sums their weights. Then it backs the
 * store up into DEST (missing or empty) with tg_store_backup(), which other
 * threads could keep writing through, and opens the copy to show what it
 * holds.
 *
 * Build: cc scan_backup.c $(pkg-config --cflags --libs tokengraph)
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <tokengraph/tokengraph.h>

#define PAGE 1000

typedef struct page {
  uint32_t last_id; /* where the next page resumes */
  unsigned n;       /* tokens seen on this page */
  uint64_t total;   /* tokens seen on every page */
  double weight;    /* their weights, summed */
} page;

/* Runs for each token in id order; a non-zero return ends the scan, and
   tg_token_scan() returns it: here, "this page is full". */
static int on_token(void *arg, const tg_token *t) {
  page *p = arg;
  p->last_id = t->id;
  p->total++;
  p->weight += t->weight;
  return ++p->n == PAGE;
}

static void on_progress(void *arg, uint64_t records, uint64_t lsn) {
  (void)arg;
  fprintf(stderr, "backup: %llu log records copied, at LSN %llu\n",
          (unsigned long long)records, (unsigned long long)lsn);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s DIR DEST\n", argv[0]);
    return 64;
  }
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.crash_dump = 0;
  tg_store *s = NULL, *b = NULL;
  char msg[512];
  int rc = tg_store_open_msg(&s, argv[1], &cfg, msg, sizeof msg);
  if (rc) {
    fprintf(stderr, "%s: %s (%s)\n", argv[0], msg, tg_err_name(rc));
    return 1;
  }

  page p;
  memset(&p, 0, sizeof p);
  unsigned pages = 0;
  do {
    p.n = 0;
    rc = tg_token_scan(s, p.last_id, on_token, &p);
    if (p.n) pages++;
  } while (rc == 1); /* a full page: go on after its last id */
  if (rc) {
    fprintf(stderr, "%s: scan: %s\n", argv[0], tg_strerror(rc));
    tg_store_close(s);
    return 1;
  }
  printf("scanned %llu tokens in %u pages, total weight %.0f\n",
         (unsigned long long)p.total, pages, p.weight);

  rc = tg_store_backup_msg(s, argv[2], on_progress, NULL, msg, sizeof msg);
  tg_store_close(s);
  if (rc) {
    fprintf(stderr, "%s: backup: %s (%s)\n", argv[0], msg, tg_err_name(rc));
    return 1;
  }
  tg_store_stats st;
  if ((rc = tg_store_open_msg(&b, argv[2], &cfg, msg, sizeof msg))) {
    fprintf(stderr, "%s: %s (%s)\n", argv[0], msg, tg_err_name(rc));
    return 1;
  }
  tg_store_stats_get(b, &st);
  printf("backup %s: LSN %llu, %llu tokens, %llu connections\n", argv[2],
         (unsigned long long)st.last_lsn, (unsigned long long)st.live_tokens,
         (unsigned long long)st.live_connections);
  return tg_store_close(b) ? 1 : 0;
}
