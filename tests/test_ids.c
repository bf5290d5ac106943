/* Ids: a deleted id never names another object, in memory, across replay,
   across checkpoints, and across the wrap of the 32-bit id space. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "store/store_internal.h"
#include "tokengraph/tokengraph.h"
#include "util.h"

static tg_store *open_dir(void) {
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.checkpoint_bytes = 0; /* checkpoints only where a test asks */
  cfg.crash_dump = 0;
  tg_store *s = NULL;
  char msg[512] = "";
  int rc = tg_store_open_msg(&s, tgt_data, &cfg, msg, sizeof msg);
  if (rc) fail_msg("open: %s: %s", tg_strerror(rc), msg);
  return s;
}

static uint32_t mk(tg_store *s, uint32_t stamp) {
  tg_token t = {.timestamp = stamp};
  uint32_t id = 0;
  assert_int_equal(tg_token_create(s, &t, &id), 0);
  return id;
}

static uint32_t link_(tg_store *s, uint32_t from, uint32_t to) {
  tg_connection c = {.from = from, .to = to, .activation_count = from * 1000u + to};
  uint32_t id = 0;
  assert_int_equal(tg_connect(s, &c, &id), 0);
  return id;
}

static void assert_gone(tg_store *s, uint32_t id) {
  tg_token t;
  assert_int_equal(tg_token_get(s, id, &t), TG_ENOTFOUND);
}

static void test_deleted_token_id_stays_dead_after_replay(void **state) {
  (void)state;
  tg_store *s = open_dir();
  uint32_t a = mk(s, 1), b = mk(s, 2), c = mk(s, 3);
  assert_int_equal(tg_token_delete(s, c), 0); /* the highest id issued */
  assert_int_equal(tg_token_delete(s, a), 0);
  assert_int_equal(tg_store_close(s), 0);
  s = open_dir();
  assert_gone(s, a);
  assert_gone(s, c);
  /* The log's last create was c: the next id comes after it, although
     c is dead and a's slot is free. */
  uint32_t d = mk(s, 4);
  assert_int_equal(d, c + 1);
  assert_gone(s, a);
  assert_gone(s, c);
  tg_token t;
  assert_int_equal(tg_token_get(s, b, &t), 0);
  assert_int_equal(t.timestamp, 2);
  assert_int_equal(tg_store_close(s), 0);
}

static void test_deleted_ids_stay_dead_after_a_checkpoint_and_restart(void **state) {
  (void)state;
  tg_store *s = open_dir();
  uint32_t ids[10];
  for (int i = 0; i < 10; i++) ids[i] = mk(s, (uint32_t)i);
  for (int i = 5; i < 10; i++) assert_int_equal(tg_token_delete(s, ids[i]), 0);
  assert_int_equal(tg_checkpoint(s), 0);
  /* After the checkpoint: one more create and delete, only in the log. */
  uint32_t x = mk(s, 100);
  assert_int_equal(x, ids[9] + 1);
  assert_int_equal(tg_token_delete(s, x), 0);
  assert_int_equal(tg_token_delete(s, ids[0]), 0);
  assert_int_equal(tg_store_close(s), 0);

  s = open_dir();
  for (int i = 5; i < 10; i++) assert_gone(s, ids[i]);
  assert_gone(s, x);
  assert_gone(s, ids[0]);
  uint32_t y = mk(s, 200);
  assert_int_equal(y, x + 1);
  /* Checkpointed with the deletes, then opened from the checkpoint alone
     (an empty log after it): the cursor comes from the checkpoint. */
  assert_int_equal(tg_checkpoint(s), 0);
  assert_int_equal(tg_store_close(s), 0);
  s = open_dir();
  tg_recovery_info ri;
  assert_int_equal(tg_store_recovery_info(s, &ri), 0);
  assert_int_equal(ri.replayed_records, 0);
  assert_int_equal(ri.checkpoint_tokens, 5);
  assert_int_equal(mk(s, 300), y + 1);
  assert_gone(s, ids[0]);
  assert_gone(s, x);
  assert_int_equal(tg_store_close(s), 0);
}

static void test_deleted_connection_id_stays_dead_after_restart(void **state) {
  (void)state;
  tg_store *s = open_dir();
  uint32_t a = mk(s, 1), b = mk(s, 2);
  uint32_t ab = link_(s, a, b), ba = link_(s, b, a);
  assert_int_equal(tg_disconnect(s, ba), 0);
  assert_int_equal(tg_checkpoint(s), 0);
  uint32_t aa = link_(s, a, a);
  assert_int_equal(aa, ba + 1);
  assert_int_equal(tg_disconnect(s, aa), 0);
  assert_int_equal(tg_store_close(s), 0);
  s = open_dir();
  tg_connection c;
  assert_int_equal(tg_connection_get(s, ba, &c), TG_ENOTFOUND);
  assert_int_equal(tg_connection_get(s, aa, &c), TG_ENOTFOUND);
  assert_int_equal(tg_connection_get(s, ab, &c), 0);
  assert_int_equal(c.activation_count, a * 1000u + b);
  assert_int_equal(link_(s, b, b), aa + 1);
  assert_int_equal(tg_store_close(s), 0);
}

/* The state a program sees: every token and connection by id, with its
   bytes (DIRTY aside, which says only what the next checkpoint writes). */
typedef struct snapshot {
  tg_token t[64];
  int tlive[64];
  tg_connection c[64];
  int clive[64];
} snapshot;

static void take(tg_store *s, snapshot *sn) {
  memset(sn, 0, sizeof *sn);
  for (uint32_t id = 1; id < 64; id++) {
    sn->tlive[id] = tg_token_get(s, id, &sn->t[id]) == 0;
    sn->t[id].flags &= (uint16_t)~TG_TOKEN_DIRTY;
    sn->clive[id] = tg_connection_get(s, id, &sn->c[id]) == 0;
  }
}

static void test_replay_and_checkpoint_give_the_same_ids_as_the_live_run(void **state) {
  (void)state;
  tg_store *s = open_dir();
  uint32_t t[12];
  for (int i = 0; i < 12; i++) t[i] = mk(s, (uint32_t)i);
  uint32_t c1 = link_(s, t[0], t[1]);
  link_(s, t[1], t[2]);
  link_(s, t[3], t[3]);
  assert_int_equal(tg_token_delete(s, t[1]), 0); /* takes two connections */
  assert_int_equal(tg_checkpoint(s), 0);
  assert_int_equal(tg_token_delete(s, t[4]), 0);
  uint32_t n1 = mk(s, 50), n2 = mk(s, 51);
  link_(s, n1, n2);
  link_(s, n2, t[0]);
  assert_int_equal(tg_disconnect(s, c1), TG_ENOTFOUND); /* went with t[1] */
  snapshot live, again;
  take(s, &live);
  assert_int_equal(tg_store_close(s), 0);
  s = open_dir();
  take(s, &again);
  assert_memory_equal(&live, &again, sizeof live);
  /* And the next ids continue the live run's. */
  assert_int_equal(mk(s, 60), n2 + 1);
  assert_int_equal(tg_store_close(s), 0);
}

static void test_ids_wrap_past_2_32_and_resume_at_the_cursor_after_restart(void **state) {
  (void)state;
  tg_store *s = open_dir();
  uint32_t a = mk(s, 1), b = mk(s, 2), c = mk(s, 3);
  assert_int_equal(tg_token_delete(s, c), 0);
  /* As if ids up to 2^32 - 2 had been handed out and had died: the
     checkpoint records the cursor, so replay after it accepts the ids. */
  tg__store_lock(s);
  tg__arena_set_cursor(&s->g.tokens, 0xFFFFFFFEu, 0);
  tg__store_unlock(s);
  assert_int_equal(tg_checkpoint(s), 0);
  uint32_t top = mk(s, 4);
  assert_int_equal(top, 0xFFFFFFFFu);
  uint32_t w = mk(s, 5); /* wraps: 1 and 2 are live, 3 is dead */
  assert_int_equal(w, c);
  assert_int_equal(tg_store_close(s), 0);

  s = open_dir(); /* replays the wrap */
  tg_token t;
  assert_int_equal(tg_token_get(s, top, &t), 0);
  assert_int_equal(t.timestamp, 4);
  assert_int_equal(tg_token_get(s, w, &t), 0);
  assert_int_equal(t.timestamp, 5);
  uint32_t d = mk(s, 6);
  assert_int_equal(d, c + 1);
  assert_int_equal(tg_token_delete(s, d), 0);
  assert_int_equal(tg_checkpoint(s), 0); /* records that ids wrapped */
  assert_int_equal(tg_store_close(s), 0);

  s = open_dir(); /* from the checkpoint alone */
  assert_int_equal(tg_token_get(s, top, &t), 0);
  assert_int_equal(tg_token_get(s, a, &t), 0);
  assert_int_equal(tg_token_get(s, b, &t), 0);
  assert_gone(s, d);
  assert_int_equal(mk(s, 7), d + 1);
  assert_int_equal(tg_store_close(s), 0);
}

static void test_a_batch_create_logged_after_a_later_id_keeps_ids_dead_after_restart(void **state) {
  (void)state;
  tg_store *s = open_dir();
  tg_batch *b;
  uint32_t held = 0;
  assert_int_equal(tg_batch_begin(s, &b), 0);
  assert_int_equal(tg_batch_token_create(b, NULL, &held), 0);
  uint32_t later = mk(s, 2); /* logged before the batch */
  assert_int_equal(later, held + 1);
  tg_token t;
  assert_int_equal(tg_token_get(s, held, &t), TG_ENOTFOUND); /* not yet */
  assert_int_equal(tg_batch_commit(b), 0);
  assert_int_equal(tg_token_get(s, held, &t), 0);
  assert_int_equal(tg_token_delete(s, later), 0);
  /* A batch aborted while others were handed out after it: its id stays
     dead. */
  uint32_t lost = 0;
  assert_int_equal(tg_batch_begin(s, &b), 0);
  assert_int_equal(tg_batch_token_create(b, NULL, &lost), 0);
  uint32_t after = mk(s, 3);
  tg_batch_abort(b);
  assert_int_equal(tg_token_get(s, lost, &t), TG_ENOTFOUND);
  uint32_t next = mk(s, 4);
  assert_int_equal(next, after + 1);
  assert_int_equal(tg_store_close(s), 0);

  s = open_dir();
  assert_int_equal(tg_token_get(s, held, &t), 0);
  assert_gone(s, later);
  assert_gone(s, lost);
  assert_int_equal(mk(s, 5), next + 1);
  assert_int_equal(tg_store_close(s), 0);
}

static void test_a_failed_create_gives_its_id_back(void **state) {
  (void)state;
  /* In memory, the arena out of slot memory: the id is not used up. */
  tg__arena_set_map_budget(0);
  tg_store *s = NULL;
  assert_int_equal(tg_store_open(&s, NULL, NULL), 0);
  uint32_t id = 9;
  assert_int_equal(tg_token_create(s, NULL, &id), TG_ENOMEM);
  assert_int_equal(id, 0);
  tg__arena_set_map_budget(-1);
  assert_int_equal(tg_token_create(s, NULL, &id), 0);
  assert_int_equal(id, 1);
  tg_store_close(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    TGT_TEST(test_deleted_token_id_stays_dead_after_replay),
    TGT_TEST(test_deleted_ids_stay_dead_after_a_checkpoint_and_restart),
    TGT_TEST(test_deleted_connection_id_stays_dead_after_restart),
    TGT_TEST(test_replay_and_checkpoint_give_the_same_ids_as_the_live_run),
    TGT_TEST(test_ids_wrap_past_2_32_and_resume_at_the_cursor_after_restart),
    TGT_TEST(test_a_batch_create_logged_after_a_later_id_keeps_ids_dead_after_restart),
    cmocka_unit_test(test_a_failed_create_gives_its_id_back),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
