/*
 * Replication, the primary's side (src/store/ship.c, src/repl/): what a
 * replicating store puts in its JetStream stream, when a TG_REPLICATED call
 * returns, fencing, and the checkpoint's stream position. Each test runs
 * against a nats-server of its own making on loopback (tests/nats_server.h);
 * without libnats in the build or without the server binary the program
 * says so and exits 77, which ctest counts as skipped.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "nats_server.h"
#include "util.h"

#ifdef TG_HAVE_NATS
#include "common/endian.h"
#include "repl/repl.h"
#include "store/store_internal.h"
#include "wal/wal_internal.h"

static tgn_server srv1; /* one single-node server for the tests that do not
                           stop it; each test uses a stream of its own */

static int group_setup(void **state) {
  (void)state;
  int rc = tgn_server_start(&srv1, 1);
  if (rc) fprintf(stderr, "cannot start nats-server: %s\n", strerror(-rc));
  return rc ? -1 : 0;
}

static int group_teardown(void **state) {
  (void)state;
  tgn_server_stop(&srv1);
  return 0;
}

static tg_store_config repl_config(const char *url, const char *name, int level) {
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.nats_url = url;
  cfg.repl_name = name;
  cfg.wal.level = level;
  cfg.checkpoint_bytes = 0; /* checkpoints only where a test asks */
  return cfg;
}

static tg_store *open_repl(const tg_store_config *cfg) {
  tg_store *s = NULL;
  char msg[512] = "";
  int rc = tg_store_open_msg(&s, tgt_data, cfg, msg, sizeof msg);
  if (rc) fail_msg("tg_store_open_msg: %s: %s", tg_err_name(rc), msg);
  return s;
}

static tg__repl *connect_raw(const char *url) {
  tg__repl *r = NULL;
  char msg[256] = "";
  int rc = tg__repl_connect(&r, url, NULL, msg, sizeof msg);
  if (rc) fail_msg("tg__repl_connect: %s", msg);
  return r;
}

/* What the stream's last message says (Tg-Last-Lsn, Tg-Epoch). */
typedef struct last_info {
  uint64_t seq, first_lsn, last_lsn, epoch;
} last_info;
static int last_cb(void *arg, const tg__repl_msg *m) {
  last_info *li = arg;
  li->seq = m->seq;
  li->first_lsn = m->first_lsn;
  li->last_lsn = m->last_lsn;
  li->epoch = m->epoch;
  return 0;
}
static last_info stream_last(tg__repl *r, const char *stream) {
  last_info li = {0};
  int rc = tg__repl_get_msg(r, stream, 0, last_cb, &li);
  if (rc) fail_msg("last message of %s: %s", stream, tg_err_name(rc));
  return li;
}

/* Every message of a stream, checked as the contract says. */
typedef struct walk {
  uint64_t next_seq;   /* stream sequences are 1, 2, ... */
  uint64_t next_lsn;   /* LSNs contiguous across messages */
  uint64_t messages, records, max_len, split_batches;
  int failed;
  char why[256];
} walk;

static int walk_cb(void *arg, const tg__repl_msg *m) {
  walk *wk = arg;
  char id[64];
  const unsigned char *p = m->data;
  snprintf(id, sizeof id, "%" PRIu64 ":%" PRIu64, m->epoch, m->first_lsn);
#define BAD(...)                                            \
  do {                                                      \
    snprintf(wk->why, sizeof wk->why, __VA_ARGS__);         \
    wk->failed = 1;                                         \
    return 1;                                               \
  } while (0)
  if (m->seq != wk->next_seq) BAD("sequence %" PRIu64 " where %" PRIu64, m->seq, wk->next_seq);
  if (strcmp(m->id, id)) BAD("seq %" PRIu64 ": Nats-Msg-Id '%s', want '%s'", m->seq, m->id, id);
  if (m->epoch != 1) BAD("seq %" PRIu64 ": epoch %" PRIu64, m->seq, m->epoch);
  if (m->len > TG__REPL_MAX_MSG) BAD("seq %" PRIu64 ": %zu bytes", m->seq, m->len);
  if (m->first_lsn != wk->next_lsn)
    BAD("seq %" PRIu64 ": first LSN %" PRIu64 " where %" PRIu64, m->seq, m->first_lsn,
        wk->next_lsn);
  size_t o = 0;
  uint64_t lsn = m->first_lsn;
  while (o < m->len) {
    if (m->len - o < TG__WAL_FRAME_HDR) BAD("seq %" PRIu64 ": partial frame", m->seq);
    uint32_t len = tg__ld32(p + o);
    uint64_t word = tg__ld64(p + o + 8);
    if (len < TG__WAL_FRAME_HDR || o + tg__align8(len) > m->len)
      BAD("seq %" PRIu64 ": frame length %u at %zu", m->seq, len, o);
    if (tg__ld32(p + o + 4) != tg__wal_frame_crc(p + o, len))
      BAD("seq %" PRIu64 ": bad CRC at %zu", m->seq, o);
    if ((word & TG_WAL_MAX_LSN) != lsn)
      BAD("seq %" PRIu64 ": LSN %" PRIu64 " where %" PRIu64 " (a marker?)", m->seq,
          word & TG_WAL_MAX_LSN, lsn);
    lsn++;
    o += tg__align8(len);
  }
  if (lsn - 1 != m->last_lsn)
    BAD("seq %" PRIu64 ": Tg-Last-Lsn %" PRIu64 ", frames end at %" PRIu64, m->seq,
        m->last_lsn, lsn - 1);
#undef BAD
  wk->records += lsn - m->first_lsn;
  wk->next_lsn = lsn;
  wk->next_seq++;
  wk->messages++;
  if (m->len > wk->max_len) wk->max_len = m->len;
  return 0;
}

static walk walk_stream(const char *url, const char *stream, const char *subject) {
  walk wk = {.next_seq = 1, .next_lsn = 1};
  tg__repl *r = connect_raw(url);
  tg__repl_stream_state st;
  assert_int_equal(tg__repl_stream_state_get(r, stream, &st), 0);
  tg__repl_sub *sub = NULL;
  assert_int_equal(tg__repl_pull_open(&sub, r, stream, subject, 1), 0);
  uint64_t deadline = tgp_now_ns() + TGT_PATIENCE_NS;
  while (wk.next_seq <= st.last_seq && !wk.failed) {
    int n = tg__repl_fetch(sub, 256, 1000, walk_cb, &wk);
    if (n < 0 && !wk.failed) fail_msg("fetch: %s", tg_err_name(n));
    if (tgp_now_ns() > deadline) fail_msg("stream %s: fetched %" PRIu64 " of %" PRIu64, stream,
                                          wk.next_seq - 1, st.last_seq);
  }
  tg__repl_pull_close(sub);
  tg__repl_close(r);
  if (wk.failed) fail_msg("stream %s: %s", stream, wk.why);
  return wk;
}

/* ---- tests ----------------------------------------------------------------- */

static void test_messages_carry_ids_headers_and_contiguous_lsns(void **state) {
  (void)state;
  /* RELAXED with a large ring: the writer's batches fill its 1 MiB buffer,
     so most must be split into messages under the limit. */
  tg_store_config cfg = repl_config(srv1.url, "ship_msgs", TG_RELAXED);
  tg_store *s = open_repl(&cfg);
  uint32_t id;
  for (int i = 0; i < 200000; i++) assert_int_equal(tg_token_create(s, NULL, &id), 0);
  /* Batches of large records: 9,000 entries (about 612 KB) each. */
  for (int b = 0; b < 4; b++) {
    tg_batch *bt = NULL;
    assert_int_equal(tg_batch_begin(s, &bt), 0);
    for (int i = 0; i < 9000; i++) assert_int_equal(tg_batch_token_create(bt, NULL, &id), 0);
    assert_int_equal(tg_batch_commit(bt), 0);
  }
  uint64_t last = tg_last_lsn(s);
  assert_int_equal(tg_store_close(s), 0); /* waits for the last acks */
  walk wk = walk_stream(srv1.url, "TG_ship_msgs", "tg.ship_msgs.wal");
  assert_int_equal(wk.next_lsn - 1, last);
  assert_true(wk.max_len <= TG__REPL_MAX_MSG);
  /* 200,000 80-byte frames alone are 16 MB: split, not one message. */
  assert_true(wk.messages >= 16);
  printf("# %" PRIu64 " records in %" PRIu64 " messages, largest %" PRIu64 " bytes\n",
         wk.records, wk.messages, wk.max_len);
}

static void test_replicated_call_returns_after_the_stream_acked(void **state) {
  (void)state;
  tg_store_config cfg = repl_config(srv1.url, "ship_ack", TG_REPLICATED);
  tg_store *s = open_repl(&cfg);
  tg__repl *r = connect_raw(srv1.url);
  uint32_t id;
  for (int i = 0; i < 50; i++) {
    assert_int_equal(tg_token_create(s, NULL, &id), 0);
    /* On return, the record is in the stream and durable locally. */
    last_info li = stream_last(r, "TG_ship_ack");
    assert_int_equal(li.last_lsn, tg_last_lsn(s));
    assert_true(tg_durable_lsn(s) >= tg_last_lsn(s));
  }
  tg__repl_close(r);
  assert_int_equal(tg_store_close(s), 0);
}

typedef struct many_arg {
  tg_store *s;
  int fails;
} many_arg;
static void *create_many(void *arg) {
  many_arg *a = arg;
  uint32_t id;
  for (int i = 0; i < 300; i++)
    if (tg_token_create(a->s, NULL, &id)) a->fails++;
  return NULL;
}

static void test_concurrent_replicated_callers_share_messages(void **state) {
  (void)state;
  tg_store_config cfg = repl_config(srv1.url, "ship_many", TG_REPLICATED);
  tg_store *s = open_repl(&cfg);
  many_arg args[4] = {{s, 0}, {s, 0}, {s, 0}, {s, 0}};
  tgt_run_threads(4, create_many, args, sizeof args[0]);
  for (int i = 0; i < 4; i++) assert_int_equal(args[i].fails, 0);
  uint64_t last = tgt_stats(s).last_lsn;
  assert_int_equal(last, 1200);
  assert_true(tg_durable_lsn(s) >= last);
  assert_int_equal(tg_store_close(s), 0);
  walk wk = walk_stream(srv1.url, "TG_ship_many", "tg.ship_many.wal");
  assert_int_equal(wk.next_lsn - 1, last);
  /* Every call waited for an ack; a message acknowledged many of them. */
  printf("# 1,200 TG_REPLICATED creates by 4 threads in %" PRIu64 " messages\n", wk.messages);
  assert_true(wk.messages < 1200);
}

typedef struct create_arg {
  tg_store *s;
  int rc;
  _Atomic int done;
} create_arg;
static void *create_thread(void *arg) {
  create_arg *a = arg;
  uint32_t id;
  a->rc = tg_token_create(a->s, NULL, &id);
  atomic_store(&a->done, 1);
  return NULL;
}

static void test_replicated_call_fails_while_the_server_is_down_then_resumes(void **state) {
  (void)state;
  tgn_server srv;
  assert_int_equal(tgn_server_start(&srv, 1), 0);
  tg_store_config cfg = repl_config(srv.url, "ship_down", TG_REPLICATED);
  cfg.repl_ack_timeout_ms = 1500;
  tg_store *s = open_repl(&cfg);
  uint32_t id;
  for (int i = 0; i < 10; i++) assert_int_equal(tg_token_create(s, NULL, &id), 0);
  uint64_t acked = tg_last_lsn(s);
  tgn_server_kill_node(&srv, 0);
  /* With no server the call cannot be acknowledged: it must not succeed.
     It fails once the ack timeout passes (TG_EIO: the log is failed). */
  create_arg a = {.s = s};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, create_thread, &a), 0);
  pthread_join(t, NULL);
  assert_int_equal(a.rc, TG_EIO);
  assert_true(tg_durable_lsn(s) == acked);
  tg_store_close(s); /* TG_EIO: the log was failed */
  /* The server back, the reopen ships what the stream lacks, then goes on. */
  assert_int_equal(tgn_server_restart_node(&srv, 0), 0);
  s = open_repl(&cfg);
  uint64_t local = tgt_stats(s).last_lsn;
  assert_true(local >= acked);
  tg__repl *r = connect_raw(srv.url);
  assert_int_equal(stream_last(r, "TG_ship_down").last_lsn, local);
  assert_int_equal(tg_token_create(s, NULL, &id), 0);
  assert_int_equal(stream_last(r, "TG_ship_down").last_lsn, tg_last_lsn(s));
  tg__repl_close(r);
  assert_int_equal(tg_store_close(s), 0);
  walk wk = walk_stream(srv.url, "TG_ship_down", "tg.ship_down.wal");
  assert_int_equal(wk.next_lsn - 1, local + 1);
  tgn_server_stop(&srv);
}

static void test_balanced_store_fails_and_closes_when_the_server_is_gone(void **state) {
  (void)state;
  tgn_server srv;
  assert_int_equal(tgn_server_start(&srv, 1), 0);
  tg_store_config cfg = repl_config(srv.url, "ship_gone", TG_BALANCED);
  cfg.repl_ack_timeout_ms = 1000;
  cfg.wal.linger_us = 0; /* a batch per few appends: the window fills */
  tg_store *s = open_repl(&cfg);
  uint32_t id;
  assert_int_equal(tg_token_create(s, NULL, &id), 0);
  tgn_server_kill_node(&srv, 0);
  /* Creation goes on (nothing waits for the stream) until the ack timeout
     fails the log; the writer, stuck on a full window or not, gets out. */
  int rc = 0;
  uint64_t deadline = tgp_now_ns() + TGT_PATIENCE_NS;
  while ((rc = tg_token_create(s, NULL, &id)) == 0 && tgp_now_ns() < deadline) {
  }
  assert_int_equal(rc, TG_EIO);
  assert_int_equal(tg_store_close(s), TG_EIO); /* returns: nothing hangs */
  tgn_server_stop(&srv);
}

static void test_checkpoint_keeps_the_segments_the_stream_lacks(void **state) {
  (void)state;
  tgn_server srv;
  assert_int_equal(tgn_server_start(&srv, 1), 0);
  tg_store_config cfg = repl_config(srv.url, "ship_keep", TG_BALANCED);
  /* Longer than the creates and the checkpoint take on a loaded machine:
     no failure before the close, which then waits this long. */
  cfg.repl_ack_timeout_ms = 8000;
  cfg.wal.segment_bytes = 65536; /* 2,000 creates span several segments */
  tg_store *s = open_repl(&cfg);
  uint32_t id;
  assert_int_equal(tg_token_create(s, NULL, &id), 0);
  assert_int_equal(tg_sync(s), 0);
  /* LSN 1 acknowledged before the server goes: nothing in flight ages. */
  TGT_WAIT_UNTIL(tg__ship_acked_lsn(s->ship) >= 1, "LSN 1 acknowledged");
  tgn_server_kill_node(&srv, 0);
  /* Logged and checkpointed locally, never acknowledged by the stream. */
  for (int i = 0; i < 2000; i++) assert_int_equal(tg_token_create(s, NULL, &id), 0);
  assert_int_equal(tg_checkpoint(s), 0);
  uint64_t last = tgt_stats(s).last_lsn;
  tg_store_close(s); /* TG_EIO once the ack timeout passes, or 0 */
  /* The reopen ships what the stream lacks from the segments the
     checkpoint kept; with them deleted it could not (TG_ECORRUPT). */
  assert_int_equal(tgn_server_restart_node(&srv, 0), 0);
  s = open_repl(&cfg);
  assert_int_equal(tg_store_close(s), 0);
  walk wk = walk_stream(srv.url, "TG_ship_keep", "tg.ship_keep.wal");
  assert_int_equal(wk.next_lsn - 1, last);
  tgn_server_stop(&srv);
}

static void test_second_writer_fences_the_first(void **state) {
  (void)state;
  tg_store_config cfg = repl_config(srv1.url, "ship_fence", TG_REPLICATED);
  tg_store *s = open_repl(&cfg);
  uint32_t id, kept = 0;
  for (int i = 0; i < 20; i++) assert_int_equal(tg_token_create(s, NULL, &kept), 0);
  /* Another writer (a promoted replica) appends with the expected sequence
     it read: the stream is now its. */
  tg__repl *r = connect_raw(srv1.url);
  last_info li = stream_last(r, "TG_ship_fence");
  uint64_t seq = 0;
  unsigned char frame[80] = {0};
  assert_int_equal(tg__repl_publish_sync(r, "tg.ship_fence.wal", frame, sizeof frame,
                                         li.last_lsn + 1, li.last_lsn + 1, 2, li.seq, &seq),
                   0);
  assert_int_equal(seq, li.seq + 1);
  /* A publish with the stale expectation is refused the same way (a new
     message: the same Nats-Msg-Id would be acknowledged as a duplicate). */
  assert_int_equal(tg__repl_publish_sync(r, "tg.ship_fence.wal", frame, sizeof frame,
                                         li.last_lsn + 2, li.last_lsn + 2, 2, li.seq, NULL),
                   TG_EFENCED);
  /* The first writer's next publish is refused: fenced. */
  assert_int_equal(tg_token_create(s, NULL, &id), TG_EFENCED);
  assert_int_equal(tg_token_create(s, NULL, &id), TG_EFENCED);
  assert_int_equal(tg_token_delete(s, kept), TG_EFENCED);
  tg_token t;
  assert_int_equal(tg_token_get(s, kept, &t), 0); /* reads still work */
  assert_string_equal(tg_err_name(TG_EFENCED), "TG_EFENCED");
  tg_store_close(s);
  /* Reopened, the stale directory is refused: the stream went on past it. */
  tg_store *s2 = NULL;
  char msg[512] = "";
  assert_int_equal(tg_store_open_msg(&s2, tgt_data, &cfg, msg, sizeof msg), TG_EFENCED);
  assert_non_null(strstr(msg, "another writer"));
  tg__repl_close(r);
}

static void test_checkpoint_keeps_the_stream_position(void **state) {
  (void)state;
  tg_store_config cfg = repl_config(srv1.url, "ship_ckpt", TG_REPLICATED);
  tg_store *s = open_repl(&cfg);
  uint32_t id;
  for (int i = 0; i < 30; i++) assert_int_equal(tg_token_create(s, NULL, &id), 0);
  assert_int_equal(tg_checkpoint(s), 0);
  tg__repl *r = connect_raw(srv1.url);
  last_info li = stream_last(r, "TG_ship_ckpt");
  assert_int_equal(li.last_lsn, tg_last_lsn(s));
  assert_int_equal(s->ckpt_repl_seq, li.seq);
  assert_int_equal(s->ckpt_repl_epoch, 1);
  assert_int_equal(tg_store_close(s), 0);
  /* Read back at open from the checkpoint's meta. */
  s = open_repl(&cfg);
  assert_int_equal(s->ckpt_repl_seq, li.seq);
  assert_int_equal(s->ckpt_repl_epoch, 1);
  assert_int_equal(tg_store_close(s), 0);
  tg__repl_close(r);
}

static void test_configured_epoch_is_published_and_a_stale_one_is_fenced(void **state) {
  (void)state;
  tg_store_config cfg = repl_config(srv1.url, "ship_epoch", TG_REPLICATED);
  tg_store *s = open_repl(&cfg);
  uint32_t id;
  assert_int_equal(tg_token_create(s, NULL, &id), 0);
  assert_int_equal(tg_store_close(s), 0);
  /* A promoted writer publishes in the epoch its lease gave it. */
  cfg.repl_epoch = 5;
  s = open_repl(&cfg);
  assert_int_equal(tg_token_create(s, NULL, &id), 0);
  assert_int_equal(tg_store_close(s), 0);
  tg__repl *r = connect_raw(srv1.url);
  last_info li = stream_last(r, "TG_ship_epoch");
  assert_int_equal(li.epoch, 5);
  tg__repl_close(r);
  /* An older epoch is refused at open. */
  cfg.repl_epoch = 4;
  char msg[512] = "";
  assert_int_equal(tg_store_open_msg(&s, tgt_data, &cfg, msg, sizeof msg), TG_EFENCED);
  assert_non_null(strstr(msg, "epoch 5"));
  /* 0 continues the stream's. */
  cfg.repl_epoch = 0;
  s = open_repl(&cfg);
  assert_int_equal(tg_token_create(s, NULL, &id), 0);
  assert_int_equal(tg_store_close(s), 0);
}

static void test_replication_config_is_checked(void **state) {
  (void)state;
  tg_store *s = NULL;
  char msg[256];
  tg_store_config cfg = repl_config(NULL, NULL, TG_REPLICATED);
  assert_int_equal(tg_store_open_msg(&s, tgt_data, &cfg, msg, sizeof msg), TG_ECONFIG);
  assert_non_null(strstr(msg, "TG_REPLICATED"));
  cfg = repl_config(srv1.url, "bad.name", TG_STRICT);
  assert_int_equal(tg_store_open_msg(&s, tgt_data, &cfg, msg, sizeof msg), TG_ECONFIG);
  cfg = repl_config(srv1.url, "ok", TG_STRICT);
  cfg.repl_replicas = 2;
  assert_int_equal(tg_store_open_msg(&s, tgt_data, &cfg, msg, sizeof msg), TG_ECONFIG);
  assert_null(s);
}

static void test_record_over_one_message_is_refused_and_nothing_changes(void **state) {
  (void)state;
  tg_store_config cfg = repl_config(srv1.url, "ship_big", TG_BALANCED);
  tg_store *s = open_repl(&cfg);
  uint32_t id;
  assert_int_equal(tg_token_create(s, NULL, &id), 0);
  uint64_t before = tg_last_lsn(s);
  tg_batch *b = NULL;
  assert_int_equal(tg_batch_begin(s, &b), 0);
  for (int i = 0; i < 20000; i++) assert_int_equal(tg_batch_token_create(b, NULL, &id), 0);
  assert_int_equal(tg_batch_commit(b), TG_EINVAL); /* 1.36 MB: over 1 MiB */
  assert_int_equal(tg_last_lsn(s), before);
  assert_int_equal(tgt_stats(s).live_tokens, 1);
  assert_int_equal(tg_token_create(s, NULL, &id), 0);
  assert_int_equal(tg_store_close(s), 0);
}

static void test_three_copies_on_a_cluster(void **state) {
  (void)state;
  tgn_server srv3;
  int rc = tgn_server_start(&srv3, 3);
  if (rc) fail_msg("cannot start a 3-node nats-server cluster: %s", strerror(-rc));
  tg_store_config cfg = repl_config(srv3.url, "ship_r3", TG_REPLICATED);
  cfg.repl_replicas = 3;
  tg_store *s = NULL;
  char msg[512] = "";
  /* A new cluster may still be electing its stream leaders: retry the
     open while it says so, up to the patience. */
  uint64_t deadline = tgp_now_ns() + TGT_PATIENCE_NS;
  while ((rc = tg_store_open_msg(&s, tgt_data, &cfg, msg, sizeof msg)) != 0 &&
         tgp_now_ns() < deadline)
    tgt_pause();
  if (rc) fail_msg("open on the cluster: %s: %s", tg_err_name(rc), msg);
  uint32_t id;
  for (int i = 0; i < 100; i++) assert_int_equal(tg_token_create(s, NULL, &id), 0);
  tg__repl *r = connect_raw(srv3.url);
  tg__repl_stream_state st;
  assert_int_equal(tg__repl_stream_state_get(r, "TG_ship_r3", &st), 0);
  assert_int_equal(st.replicas, 3);
  assert_int_equal(stream_last(r, "TG_ship_r3").last_lsn, tg_last_lsn(s));
  tg__repl_close(r);
  assert_int_equal(tg_store_close(s), 0);
  tgn_server_stop(&srv3);
}

/* ---- the asynchronous replicated commit (tg_wait_replicated) --------------- */

/* The wait's patience in the tests: far past anything but a hang. */
#define WAIT_MS 120000u

static void test_wait_replicated_returns_once_the_stream_holds_the_records(void **state) {
  (void)state;
  tg_store_config cfg = repl_config(srv1.url, "wr_holds", TG_BALANCED);
  tg_store *s = open_repl(&cfg);
  /* After the open, everything recovered is in the stream (none here). */
  assert_int_equal(tg_replicated_lsn(s), 0);
  tg__repl *r = connect_raw(srv1.url);
  uint32_t id;
  for (int round = 0; round < 20; round++) {
    for (int i = 0; i < 50; i++) assert_int_equal(tg_token_create(s, NULL, &id), 0);
    uint64_t lsn = tg_last_lsn(s);
    assert_int_equal(tg_wait_replicated(s, lsn, WAIT_MS), 0);
    /* On return: in the stream, fdatasynced here, and said so. */
    assert_true(stream_last(r, "TG_wr_holds").last_lsn >= lsn);
    assert_true(tg_durable_lsn(s) >= lsn);
    assert_true(tg_replicated_lsn(s) >= lsn);
    /* Already replicated: the answer needs no waiting. */
    assert_int_equal(tg_wait_replicated(s, lsn, 0), 0);
  }
  assert_int_equal(tg_wait_replicated(s, 0, 0), 0);
  uint64_t last = tg_last_lsn(s);
  assert_int_equal(tg_store_close(s), 0);
  /* Reopened: what was recovered counts as replicated (the open shipped
     what the stream lacked before it returned). */
  s = open_repl(&cfg);
  assert_int_equal(tg_replicated_lsn(s), last);
  assert_int_equal(tg_store_close(s), 0);
  walk wk = walk_stream(srv1.url, "TG_wr_holds", "tg.wr_holds.wal");
  assert_int_equal(wk.next_lsn - 1, last);
  tg__repl_close(r);
}

static void test_wait_replicated_works_at_every_level(void **state) {
  (void)state;
  static const int levels[] = {TG_STRICT, TG_RELAXED, TG_REPLICATED};
  tg__repl *r = connect_raw(srv1.url);
  for (size_t k = 0; k < sizeof levels / sizeof levels[0]; k++) {
    char name[32], stream[40];
    snprintf(name, sizeof name, "wr_level_%d", levels[k]);
    snprintf(stream, sizeof stream, "TG_%s", name);
    tg_store_config cfg = repl_config(srv1.url, name, levels[k]);
    tg_store *s = open_repl(&cfg);
    uint32_t id;
    for (int i = 0; i < 30; i++) assert_int_equal(tg_token_create(s, NULL, &id), 0);
    uint64_t lsn = tg_last_lsn(s);
    assert_int_equal(tg_wait_replicated(s, lsn, WAIT_MS), 0);
    assert_true(stream_last(r, stream).last_lsn >= lsn);
    assert_true(tg_durable_lsn(s) >= lsn);
    assert_int_equal(tg_store_close(s), 0);
    tgt_teardown(NULL); /* a fresh directory for the next level */
    assert_int_equal(tgt_setup(NULL), 0);
  }
  tg__repl_close(r);
}

static void test_polling_wait_replicated_gets_there_at_relaxed(void **state) {
  (void)state;
  /* At RELAXED nothing fdatasyncs on its own (no interval): a look with
     timeout 0 asks for it, so polling alone gets there. */
  tg_store_config cfg = repl_config(srv1.url, "wr_poll", TG_RELAXED);
  tg_store *s = open_repl(&cfg);
  uint32_t id;
  for (int i = 0; i < 5; i++) assert_int_equal(tg_token_create(s, NULL, &id), 0);
  uint64_t lsn = tg_last_lsn(s);
  int rc;
  TGT_WAIT_UNTIL((rc = tg_wait_replicated(s, lsn, 0)) != -ETIMEDOUT, "LSN replicated by polling");
  assert_int_equal(rc, 0);
  assert_true(tg_durable_lsn(s) >= lsn);
  assert_true(tg_replicated_lsn(s) >= lsn);
  assert_int_equal(tg_store_close(s), 0);
}

static void test_wait_replicated_refuses_what_it_cannot_promise(void **state) {
  (void)state;
  /* NULL, in memory, a directory without replication: TG_EINVAL. */
  assert_int_equal(tg_wait_replicated(NULL, 1, 0), TG_EINVAL);
  assert_int_equal(tg_replicated_lsn(NULL), 0);
  tg_store *m = NULL;
  assert_int_equal(tg_store_open(&m, NULL, NULL), 0);
  uint32_t id;
  assert_int_equal(tg_token_create(m, NULL, &id), 0);
  assert_int_equal(tg_wait_replicated(m, 0, 0), TG_EINVAL);
  assert_int_equal(tg_wait_replicated(m, 1, 0), TG_EINVAL);
  assert_int_equal(tg_replicated_lsn(m), 0);
  tg_store_close(m);
  tg_store_config plain;
  tg_store_config_init(&plain);
  tg_store *d = NULL;
  assert_int_equal(tg_store_open(&d, tgt_data, &plain), 0);
  assert_int_equal(tg_token_create(d, NULL, &id), 0);
  assert_int_equal(tg_wait_replicated(d, tg_last_lsn(d), WAIT_MS), TG_EINVAL);
  assert_int_equal(tg_replicated_lsn(d), 0);
  assert_int_equal(tg_store_close(d), 0);
  tgt_teardown(NULL);
  assert_int_equal(tgt_setup(NULL), 0);
  /* A replicating store: an LSN it has not handed out is TG_EINVAL, at
     once, whatever the timeout; and the store goes on. */
  tg_store_config cfg = repl_config(srv1.url, "wr_einval", TG_BALANCED);
  tg_store *s = open_repl(&cfg);
  assert_int_equal(tg_token_create(s, NULL, &id), 0);
  uint64_t lsn = tg_last_lsn(s);
  assert_int_equal(tg_wait_replicated(s, lsn + 1, WAIT_MS), TG_EINVAL);
  assert_int_equal(tg_wait_replicated(s, UINT64_MAX, WAIT_MS), TG_EINVAL);
  assert_int_equal(tg_wait_replicated(s, lsn, WAIT_MS), 0);
  assert_int_equal(tg_store_close(s), 0);
}

/* A BALANCED store shipping to a private single-node server (started in
   *srv) with a 3 s ack timeout: ten creates acknowledged up to *acked,
   then the server killed and one more create logged and fdatasynced here
   at *lsn, which nothing can acknowledge. */
static tg_store *store_that_lost_its_server(tgn_server *srv, const char *name, uint64_t *acked,
                                            uint64_t *lsn) {
  assert_int_equal(tgn_server_start(srv, 1), 0);
  tg_store_config cfg = repl_config(srv->url, name, TG_BALANCED);
  cfg.repl_ack_timeout_ms = 3000;
  tg_store *s = open_repl(&cfg);
  uint32_t id;
  for (int i = 0; i < 10; i++) assert_int_equal(tg_token_create(s, NULL, &id), 0);
  *acked = tg_last_lsn(s);
  assert_int_equal(tg_wait_replicated(s, *acked, WAIT_MS), 0);
  tgn_server_kill_node(srv, 0);
  assert_int_equal(tg_token_create(s, NULL, &id), 0);
  *lsn = tg_last_lsn(s);
  assert_int_equal(tg_wait_durable(s, *lsn), 0);
  return s;
}

static void test_wait_replicated_does_not_return_0_while_the_server_is_down(void **state) {
  (void)state;
  tgn_server srv;
  uint64_t acked, lsn;
  tg_store *s = store_that_lost_its_server(&srv, "wr_down", &acked, &lsn);
  /* A short wait ends without it (the ack timeout, 3 s, may have failed
     the log meanwhile on a slow machine: never 0). */
  int rc = tg_wait_replicated(s, lsn, 100);
  assert_true(rc == -ETIMEDOUT || rc == TG_EIO);
  assert_true(tg_replicated_lsn(s) < lsn);
  assert_true(tg_replicated_lsn(s) >= acked);
  /* A long one ends when the ack timeout fails the log: TG_EIO. */
  assert_int_equal(tg_wait_replicated(s, lsn, WAIT_MS), TG_EIO);
  assert_int_equal(tg_wait_replicated(s, acked, 0), 0); /* that one was */
  tg_store_close(s); /* TG_EIO: the log was failed */
  tgn_server_stop(&srv);
}

typedef struct waiter_arg {
  tg_store *s;
  uint64_t lsn;
  uint32_t timeout_ms;
  int rc;
  int before_deadline; /* returned before its own timeout ran out */
} waiter_arg;
static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
static void *wait_one(void *arg) {
  waiter_arg *a = arg;
  uint64_t deadline = mono_ns() + (uint64_t)a->timeout_ms * 1000000u;
  a->rc = tg_wait_replicated(a->s, a->lsn, a->timeout_ms);
  a->before_deadline = mono_ns() < deadline;
  return NULL;
}

/* Each waiter sleeps on its own condition variable in a list (wal.c,
   wake_replicated): those that time out leave it while others sleep on,
   and a failure of the log wakes every one still in it. */
static void test_waiters_time_out_alone_and_a_failed_log_wakes_the_rest(void **state) {
  (void)state;
  tgn_server srv;
  uint64_t acked, lsn;
  tg_store *s = store_that_lost_its_server(&srv, "wr_waiters", &acked, &lsn);
  /* Short waits in between long ones, so that some leave the list from
     its middle while the others are still in it. */
  enum { N = 6 };
  waiter_arg a[N];
  for (int i = 0; i < N; i++)
    a[i] = (waiter_arg){s, lsn, i % 2 ? WAIT_MS : 50u + 50u * (uint32_t)i, 1, 0};
  tgt_run_threads(N, wait_one, a, sizeof a[0]);
  for (int i = 0; i < N; i++) {
    if (i % 2) { /* woken by the failure (the 3 s ack timeout), not by its 120 s timeout */
      assert_int_equal(a[i].rc, TG_EIO);
      assert_true(a[i].before_deadline);
    }
    else { /* never 0: nothing acknowledged it (TG_EIO on a machine slower than 3 s) */
      assert_true(a[i].rc == -ETIMEDOUT || a[i].rc == TG_EIO);
    }
  }
  assert_true(tg_replicated_lsn(s) < lsn);
  assert_int_equal(tg_wait_replicated(s, acked, 0), 0); /* that one was */
  tg_store_close(s); /* TG_EIO: the log was failed */
  tgn_server_stop(&srv);
}

static void test_wait_replicated_of_a_fenced_store_fails_fenced(void **state) {
  (void)state;
  tg_store_config cfg = repl_config(srv1.url, "wr_fence", TG_BALANCED);
  tg_store *s = open_repl(&cfg);
  uint32_t id;
  for (int i = 0; i < 20; i++) assert_int_equal(tg_token_create(s, NULL, &id), 0);
  assert_int_equal(tg_wait_replicated(s, tg_last_lsn(s), WAIT_MS), 0);
  /* Another writer appends with the expected sequence it read. */
  tg__repl *r = connect_raw(srv1.url);
  last_info li = stream_last(r, "TG_wr_fence");
  unsigned char frame[80] = {0};
  assert_int_equal(tg__repl_publish_sync(r, "tg.wr_fence.wal", frame, sizeof frame,
                                         li.last_lsn + 1, li.last_lsn + 1, 2, li.seq, NULL),
                   0);
  /* At BALANCED the create returns before its publish is refused; the
     wait for it reports the refusal. */
  assert_int_equal(tg_token_create(s, NULL, &id), 0);
  uint64_t lsn = tg_last_lsn(s);
  assert_int_equal(tg_wait_replicated(s, lsn, WAIT_MS), TG_EFENCED);
  assert_true(tg_replicated_lsn(s) < lsn);
  assert_int_equal(tg_token_create(s, NULL, &id), TG_EFENCED);
  tg_store_close(s);
  tg__repl_close(r);
}

static void test_wait_replicated_on_a_replica_is_einval_until_promoted(void **state) {
  (void)state;
  tg_store_config cfg = repl_config(srv1.url, "wr_replica", TG_BALANCED);
  tg_store *s = open_repl(&cfg);
  uint32_t id;
  for (int i = 0; i < 10; i++) assert_int_equal(tg_token_create(s, NULL, &id), 0);
  uint64_t last = tg_last_lsn(s);
  assert_int_equal(tg_wait_replicated(s, last, WAIT_MS), 0);
  assert_int_equal(tg_store_close(s), 0); /* gives the lease up */
  tg_replica_config rc;
  tg_replica_config_init(&rc);
  rc.nats_url = srv1.url;
  rc.repl_name = "wr_replica";
  rc.store.crash_dump = 0;
  rc.store.checkpoint_bytes = 0;
  char dir[300], msg[512] = "";
  snprintf(dir, sizeof dir, "%s/replica", tgt_root);
  tg_store *r = NULL;
  int rc_open = tg_replica_open_msg(&r, dir, &rc, msg, sizeof msg);
  if (rc_open) fail_msg("tg_replica_open: %s: %s", tg_err_name(rc_open), msg);
  assert_int_equal(tg_wait_lsn(r, last, WAIT_MS), 0);
  /* Following, it ships nothing: nothing to wait for. */
  assert_int_equal(tg_wait_replicated(r, last, 0), TG_EINVAL);
  assert_int_equal(tg_replicated_lsn(r), 0);
  /* Promoted, it is the stream's writer: its records can be waited for. */
  assert_int_equal(tg_replica_promote(r, WAIT_MS, msg, sizeof msg), 0);
  assert_true(tg_replicated_lsn(r) >= last);
  assert_int_equal(tg_token_create(r, NULL, &id), 0);
  uint64_t lsn = tg_last_lsn(r);
  assert_true(lsn > last);
  assert_int_equal(tg_wait_replicated(r, lsn, WAIT_MS), 0);
  assert_true(tg_replicated_lsn(r) >= lsn);
  tg__repl *raw = connect_raw(srv1.url);
  assert_true(stream_last(raw, "TG_wr_replica").last_lsn >= lsn);
  tg__repl_close(raw);
  assert_int_equal(tg_store_close(r), 0);
}

typedef struct group_arg {
  tg_store *s;
  int fails;
  uint64_t max_lsn;
} group_arg;
static void *create_groups(void *arg) {
  group_arg *a = arg;
  uint32_t id;
  for (int g = 0; g < 25; g++) {
    for (int i = 0; i < 8; i++)
      if (tg_token_create(a->s, NULL, &id)) a->fails++;
    uint64_t lsn = tg_last_lsn(a->s);
    if (tg_wait_replicated(a->s, lsn, WAIT_MS)) a->fails++;
    /* Every record up to lsn is in the stream now, other threads' too. */
    if (tg_replicated_lsn(a->s) < lsn || tg_durable_lsn(a->s) < lsn) a->fails++;
    a->max_lsn = lsn;
  }
  return NULL;
}

static void test_many_threads_wait_replicated_at_once(void **state) {
  (void)state;
  tg_store_config cfg = repl_config(srv1.url, "wr_many", TG_BALANCED);
  tg_store *s = open_repl(&cfg);
  enum { T = 8 };
  group_arg args[T];
  for (int i = 0; i < T; i++) args[i] = (group_arg){s, 0, 0};
  tgt_run_threads(T, create_groups, args, sizeof args[0]);
  uint64_t top = 0;
  for (int i = 0; i < T; i++) {
    assert_int_equal(args[i].fails, 0);
    if (args[i].max_lsn > top) top = args[i].max_lsn;
  }
  assert_int_equal(top, T * 25 * 8);
  assert_true(tg_replicated_lsn(s) >= top);
  tg__repl *r = connect_raw(srv1.url);
  assert_true(stream_last(r, "TG_wr_many").last_lsn >= top);
  tg__repl_close(r);
  assert_int_equal(tg_store_close(s), 0);
  walk wk = walk_stream(srv1.url, "TG_wr_many", "tg.wr_many.wal");
  assert_int_equal(wk.next_lsn - 1, top);
}

int main(void) {
  if (!tgn_server_available(NULL, 0)) {
    printf("skipped: no nats-server (set TG_NATS_SERVER or install nats-server)\n");
    return TGN_SKIP;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_replication_config_is_checked, tgt_setup, tgt_teardown),
      cmocka_unit_test_setup_teardown(test_messages_carry_ids_headers_and_contiguous_lsns,
                                      tgt_setup, tgt_teardown),
      cmocka_unit_test_setup_teardown(test_replicated_call_returns_after_the_stream_acked,
                                      tgt_setup, tgt_teardown),
      cmocka_unit_test_setup_teardown(
          test_configured_epoch_is_published_and_a_stale_one_is_fenced, tgt_setup, tgt_teardown),
      cmocka_unit_test_setup_teardown(test_concurrent_replicated_callers_share_messages,
                                      tgt_setup, tgt_teardown),
      cmocka_unit_test_setup_teardown(test_checkpoint_keeps_the_stream_position, tgt_setup,
                                      tgt_teardown),
      cmocka_unit_test_setup_teardown(test_record_over_one_message_is_refused_and_nothing_changes,
                                      tgt_setup, tgt_teardown),
      cmocka_unit_test_setup_teardown(
          test_balanced_store_fails_and_closes_when_the_server_is_gone, tgt_setup,
          tgt_teardown),
      cmocka_unit_test_setup_teardown(test_checkpoint_keeps_the_segments_the_stream_lacks,
                                      tgt_setup, tgt_teardown),
      cmocka_unit_test_setup_teardown(test_second_writer_fences_the_first, tgt_setup,
                                      tgt_teardown),
      cmocka_unit_test_setup_teardown(
          test_replicated_call_fails_while_the_server_is_down_then_resumes, tgt_setup,
          tgt_teardown),
      cmocka_unit_test_setup_teardown(test_three_copies_on_a_cluster, tgt_setup, tgt_teardown),
      cmocka_unit_test_setup_teardown(
          test_wait_replicated_returns_once_the_stream_holds_the_records, tgt_setup,
          tgt_teardown),
      cmocka_unit_test_setup_teardown(test_wait_replicated_works_at_every_level, tgt_setup,
                                      tgt_teardown),
      cmocka_unit_test_setup_teardown(test_wait_replicated_refuses_what_it_cannot_promise,
                                      tgt_setup, tgt_teardown),
      cmocka_unit_test_setup_teardown(test_polling_wait_replicated_gets_there_at_relaxed,
                                      tgt_setup, tgt_teardown),
      cmocka_unit_test_setup_teardown(
          test_wait_replicated_does_not_return_0_while_the_server_is_down, tgt_setup,
          tgt_teardown),
      cmocka_unit_test_setup_teardown(
          test_waiters_time_out_alone_and_a_failed_log_wakes_the_rest, tgt_setup, tgt_teardown),
      cmocka_unit_test_setup_teardown(test_wait_replicated_of_a_fenced_store_fails_fenced,
                                      tgt_setup, tgt_teardown),
      cmocka_unit_test_setup_teardown(test_many_threads_wait_replicated_at_once, tgt_setup,
                                      tgt_teardown),
      cmocka_unit_test_setup_teardown(
          test_wait_replicated_on_a_replica_is_einval_until_promoted, tgt_setup, tgt_teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

#else /* !TG_HAVE_NATS */

/* Without libnats a store asked to replicate says so. */
static void test_replication_without_libnats_is_not_supported(void **state) {
  (void)state;
  tg_store *s = NULL;
  char msg[256] = "";
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.nats_url = "nats://127.0.0.1:4222";
  cfg.repl_name = "x";
  assert_int_equal(tg_store_open_msg(&s, tgt_data, &cfg, msg, sizeof msg), TG_ENOTSUP);
  assert_non_null(strstr(msg, "libnats"));
}

/* Nothing replicates without libnats: the wait says so. */
static void test_wait_replicated_without_libnats_is_einval(void **state) {
  (void)state;
  tg_store *s = NULL;
  assert_int_equal(tg_store_open(&s, tgt_data, NULL), 0);
  uint32_t id;
  assert_int_equal(tg_token_create(s, NULL, &id), 0);
  assert_int_equal(tg_wait_replicated(s, tg_last_lsn(s), 1000), TG_EINVAL);
  assert_int_equal(tg_replicated_lsn(s), 0);
  assert_int_equal(tg_store_close(s), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_replication_without_libnats_is_not_supported,
                                      tgt_setup, tgt_teardown),
      cmocka_unit_test_setup_teardown(test_wait_replicated_without_libnats_is_einval,
                                      tgt_setup, tgt_teardown),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  if (rc) return rc;
  printf("skipped: built without libnats\n");
  return TGN_SKIP;
}

#endif
