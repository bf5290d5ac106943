/*
 * libFuzzer target: a whole data directory from any bytes (fuzz_dir.h:
 * segments with any names, checkpoint bytes, the ring, links, FIFOs; the
 * first byte's bit 0 gives the segments valid CRCs),
 * inspected as tg-replay does (tg_store_inspect()), then opened as a store
 * with small sizes, changed a little (single changes, a batch, a
 * connection update), checkpointed, closed, and opened again.
 *
 * What must hold, whatever the bytes:
 *  - no crash, hang (libFuzzer's -timeout), sanitizer report or leak;
 *  - nothing outside the case directory is written (fz_check_outside());
 *  - a refused open has a message and is one of the documented errors;
 *  - the store and inspection agree: a directory inspection calls corrupt
 *    (or whose checkpoint it refuses) does not open, and one that opens
 *    holds what inspection counted;
 *  - what opened and was closed opens again, holding what it held.
 * Each case directory is removed before the next (no disk leak).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_dir.h"
#include "tokengraph/tokengraph.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

__attribute__((noreturn)) static void fail(const char *what, int rc, const char *msg) {
  fprintf(stderr, "fuzz_datadir: %s (rc %d %s: %s)\n", what, rc, tg_err_name(rc),
          msg ? msg : "");
  abort();
}

/* Small sizes so that a case is fast: the smallest segment (a switch every
   few records) and ring; no automatic checkpoint; libFuzzer owns the fatal
   signals. */
static void small_config(tg_store_config *cfg) {
  tg_store_config_init(cfg);
  cfg->crash_dump = 0;
  cfg->checkpoint_bytes = 0;
  cfg->wal.segment_bytes = 4096;
  cfg->wal.ring_slots = 64;
}

/* The documented errors of tg_store_open() for a directory it may read. */
static int open_error_ok(int rc) {
  switch (rc) {
  case TG_ENOTTG: case TG_EVERSION: case TG_ECORRUPT: case TG_ENOMEM: case TG_ENOSPC:
  case TG_EIO: case TG_ELOCKED:
    return 1;
  default:
    return rc < 0 && rc > -4096; /* -errno */
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_init("datadir");
  char d[96], msg[1024], imsg[1024];
  snprintf(d, sizeof d, "%s/case", fz_base());
  if (!size) return 0;
  fz_build(d, data + 1, size - 1, data[0] & FZ_FIX_CRC);

  tg_inspect_report rep;
  memset(&rep, 0, sizeof rep);
  imsg[0] = 0;
  int irc = tg_store_inspect(d, &rep, NULL, NULL, imsg, sizeof imsg);
  if (irc && !imsg[0]) fail("inspection refused without a message", irc, NULL);
  /* The verdict tg_store_open() would reach (tools/tg-replay.c exit_for). */
  int inspect_opens = !irc && !rep.apply_failed_lsn &&
                      (rep.end.reason == TG_WAL_END_CLEAN || rep.end.reason == TG_WAL_END_TORN);

  tg_store_config cfg;
  small_config(&cfg);
  tg_store *s = NULL;
  msg[0] = 0;
  int rc = tg_store_open_msg(&s, d, &cfg, msg, sizeof msg);
  if (rc) {
    if (s) fail("a refused open returned a handle", rc, msg);
    if (!msg[0]) fail("a refused open without a message", rc, NULL);
    if (!open_error_ok(rc)) fail("an undocumented open error", rc, msg);
    /* A verdict on the contents is inspection's verdict too. */
    if ((rc == TG_ECORRUPT || rc == TG_ENOTTG || rc == TG_EVERSION) && inspect_opens)
      fail("the store refused what inspection would open", rc, msg);
    fz_check_outside();
    return 0;
  }
  tg_store_stats st;
  if (tg_store_stats_get(s, &st)) fail("stats", -1, NULL);
  if (irc == TG_ENOTTG) {
    /* Not a data directory yet (empty, or what an interrupted create
       leaves): the store made a new one. */
    if (st.live_tokens || st.live_connections)
      fail("a new store over what inspection called no data directory holds data", irc, NULL);
  } else {
    if (!inspect_opens)
      fail("the store opened what inspection refuses", irc, irc ? imsg : rep.end.what);
    if (st.live_tokens != rep.tokens || st.live_connections != rep.connections)
      fail("the store holds other counts than inspection replayed", 0, NULL);
  }

  /* A few changes on top of whatever was loaded: ids past the loaded ones,
     a connection to the first token there may be, a delete. */
  uint32_t a = 0, b = 0, c = 0;
  tg_token t;
  memset(&t, 0, sizeof t);
  t.weight = 1.0f;
  if ((rc = tg_token_create(s, &t, &a))) fail("token create", rc, NULL);
  if ((rc = tg_token_create(s, &t, &b))) fail("token create", rc, NULL);
  tg_connection cn;
  memset(&cn, 0, sizeof cn);
  cn.from = a;
  cn.to = b;
  if ((rc = tg_connect(s, &cn, &c))) fail("connect", rc, NULL);
  cn.to = 1; /* may be absent or deleted: any answer but a crash */
  uint32_t c2;
  (void)tg_connect(s, &cn, &c2);
  if ((rc = tg_token_delete(s, b))) fail("token delete", rc, NULL);
  if (a != 2) (void)tg_token_delete(s, 2); /* may be absent */
  /* A batch (one record) and a connection update. */
  tg_batch *bt = NULL;
  uint32_t x, y, z, cx;
  if ((rc = tg_batch_begin(s, &bt))) fail("batch begin", rc, NULL);
  if ((rc = tg_batch_token_create(bt, &t, &x)) || (rc = tg_batch_token_create(bt, &t, &y)) ||
      (rc = tg_batch_token_create(bt, &t, &z)))
    fail("batch create", rc, NULL);
  cn.from = x;
  cn.to = y;
  if ((rc = tg_batch_connect(bt, &cn, &cx))) fail("batch connect", rc, NULL);
  if ((rc = tg_batch_token_delete(bt, z))) fail("batch delete", rc, NULL);
  if ((rc = tg_batch_commit(bt))) fail("batch commit", rc, NULL);
  if ((rc = tg_connection_get(s, cx, &cn))) fail("connection get", rc, NULL);
  cn.weight = 2.0f;
  if ((rc = tg_connection_update(s, &cn))) fail("connection update", rc, NULL);
  if ((rc = tg_checkpoint(s))) fail("checkpoint", rc, NULL);
  if ((rc = tg_token_create(s, &t, &b))) fail("token create after checkpoint", rc, NULL);
  if ((rc = tg_store_stats_get(s, &st))) fail("stats", rc, NULL);
  if ((rc = tg_store_close(s))) fail("close", rc, NULL);

  /* What was closed opens again, as it was. */
  s = NULL;
  msg[0] = 0;
  if ((rc = tg_store_open_msg(&s, d, &cfg, msg, sizeof msg)))
    fail("a directory the store closed does not open again", rc, msg);
  tg_store_stats st2;
  if ((rc = tg_store_stats_get(s, &st2))) fail("stats", rc, NULL);
  if (st2.live_tokens != st.live_tokens || st2.live_connections != st.live_connections)
    fail("the reopened store holds other counts than were closed", 0, NULL);
  if (tg_token_get(s, a, &t)) fail("a token created before close is gone", 0, NULL);
  if ((rc = tg_store_close(s))) fail("close", rc, NULL);
  fz_check_outside();
  return 0;
}
