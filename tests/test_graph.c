/* Tokens and connections through the public API: CRUD, adjacency, deletes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "tokengraph/tokengraph.h"
#include "util.h"

/* Facts of the public header the tests below rely on. */
_Static_assert(TG_CONN_CATEGORY(TG_CONN_TYPE(TG_CAT_CAUSAL, 3)) == TG_CAT_CAUSAL,
               "a connection type's category is its high part");
_Static_assert(TG_CONN_TYPES == TG_CAT_COUNT * 16, "16 types per category");

static tg_store *open_store(void) {
  tg_store *s = NULL;
  assert_int_equal(tg_store_open(&s, NULL, NULL), 0);
  assert_non_null(s);
  return s;
}

static uint32_t mk(tg_store *s, float weight) {
  tg_token t;
  memset(&t, 0, sizeof t);
  t.weight = weight;
  uint32_t id = 0;
  assert_int_equal(tg_token_create(s, &t, &id), 0);
  assert_int_not_equal(id, 0);
  return id;
}

static uint32_t link_(tg_store *s, uint32_t from, uint32_t to, uint8_t type) {
  tg_connection c = {.from = from, .to = to, .type = type, .weight = 0.5f};
  return tgt_connect(s, &c);
}

static void test_token_fields_round_trip_and_id_is_assigned(void **state) {
  (void)state;
  tg_store *s = open_store();
  tg_token t, got;
  memset(&t, 0, sizeof t);
  for (int i = 0; i < TG_SPACES; i++) {
    t.coord[i][0] = (int16_t)(i * 3 - 100);
    t.coord[i][1] = (int16_t)(i * 1000);
    t.coord[i][2] = (int16_t)-i;
  }
  t.id = 999; /* ignored: the store assigns ids */
  t.flags = TG_TOKEN_PERSISTENT | (3u << TG_TOKEN_ENTITY_SHIFT);
  t.field_radius = 7;
  t.field_strength = 200;
  t.weight = 1.25f;
  t.timestamp = 1764000000u;
  uint32_t id;
  assert_int_equal(tg_token_create(s, &t, &id), 0);
  assert_int_equal(id, 1);
  assert_int_equal(tg_token_get(s, id, &got), 0);
  assert_int_equal(got.id, id);
  assert_int_equal(got.flags, t.flags | TG_TOKEN_ACTIVE);
  assert_memory_equal(got.coord, t.coord, sizeof t.coord);
  assert_int_equal(got.field_radius, 7);
  assert_int_equal(got.field_strength, 200);
  assert_true(got.weight == 1.25f);
  assert_int_equal(got.timestamp, 1764000000u);

  got.weight = 9.0f;
  got.flags = 0; /* ACTIVE is kept by the store */
  assert_int_equal(tg_token_update(s, &got), 0);
  tg_token again;
  assert_int_equal(tg_token_get(s, id, &again), 0);
  assert_true(again.weight == 9.0f);
  assert_int_equal(again.flags, TG_TOKEN_ACTIVE);

  assert_int_equal(tg_token_get(s, 0, &got), TG_ENOTFOUND);
  assert_int_equal(tg_token_get(s, 2, &got), TG_ENOTFOUND);
  tg_store_close(s);
}

static void test_ids_are_stable_while_others_come_and_go(void **state) {
  (void)state;
  tg_store *s = open_store();
  uint32_t keep = mk(s, 42.0f);
  for (int round = 0; round < 1000; round++) {
    uint32_t a = mk(s, 1.0f), b = mk(s, 2.0f);
    assert_int_equal(tg_token_delete(s, a), 0);
    assert_int_equal(tg_token_delete(s, b), 0);
  }
  tg_token t;
  assert_int_equal(tg_token_get(s, keep, &t), 0);
  assert_int_equal(t.id, keep);
  assert_true(t.weight == 42.0f);
  assert_int_equal(tgt_stats(s).live_tokens, 1);
  assert_int_equal(tgt_stats(s).tokens_created, 2001);
  tg_store_close(s);
}

static void test_deleted_token_is_gone_and_its_id_never_names_another(void **state) {
  (void)state;
  tg_store *s = open_store();
  uint32_t a = mk(s, 1), b = mk(s, 2);
  assert_int_equal(tg_token_delete(s, a), 0);
  tg_token t;
  assert_int_equal(tg_token_get(s, a, &t), TG_ENOTFOUND);
  assert_int_equal(tg_token_delete(s, a), TG_ENOTFOUND);
  assert_int_equal(tg_token_update(s, &(tg_token){.id = a}), TG_ENOTFOUND);
  uint32_t c = mk(s, 3);
  /* The freed slot is reused, but not the id: a kept copy of `a` still
     names nothing rather than the new token. */
  assert_int_equal(c, b + 1);
  assert_int_equal(tg_token_get(s, a, &t), TG_ENOTFOUND);
  assert_int_equal(tg_token_get(s, c, &t), 0);
  assert_int_equal(tg_token_get(s, b, &t), 0);
  tg_store_close(s);
}

static void test_adjacency_lists_outgoing_and_incoming(void **state) {
  (void)state;
  tg_store *s = open_store();
  uint32_t a = mk(s, 1), b = mk(s, 1), c = mk(s, 1);
  uint32_t ab = link_(s, a, b, TG_CONN_TYPE(TG_CAT_CAUSAL, 3));
  uint32_t ac = link_(s, a, c, 0);
  uint32_t cb = link_(s, c, b, TG_CONN_TYPES - 1);
  tgt_edges out = tgt_edges_of(s, a, TG_OUT);
  assert_int_equal(out.n, 2);
  assert_int_equal(out.ids[0], ac); /* newest first */
  assert_int_equal(out.ids[1], ab);
  tgt_edges in = tgt_edges_of(s, b, TG_IN);
  assert_int_equal(in.n, 2);
  assert_int_equal(in.ids[0], cb);
  assert_int_equal(in.ids[1], ab);
  tgt_edges both = tgt_edges_of(s, c, TG_BOTH);
  assert_int_equal(both.n, 2);
  assert_int_equal(both.ids[0], cb);
  assert_int_equal(both.ids[1], ac);
  assert_int_equal(tgt_edges_of(s, b, TG_OUT).n, 0);

  tg_connection got;
  assert_int_equal(tg_connection_get(s, ab, &got), 0);
  assert_int_equal(got.from, a);
  assert_int_equal(got.to, b);
  assert_int_equal(got.type, TG_CONN_TYPE(TG_CAT_CAUSAL, 3));
  assert_true(got.weight == 0.5f);
  tg_store_close(s);
}

static void test_disconnect_unlinks_from_both_lists(void **state) {
  (void)state;
  tg_store *s = open_store();
  uint32_t a = mk(s, 1), b = mk(s, 1);
  uint32_t e1 = link_(s, a, b, 1), e2 = link_(s, a, b, 2), e3 = link_(s, a, b, 3);
  assert_int_equal(tg_disconnect(s, e2), 0); /* from the middle */
  tgt_edges out = tgt_edges_of(s, a, TG_OUT);
  assert_int_equal(out.n, 2);
  assert_int_equal(out.ids[0], e3);
  assert_int_equal(out.ids[1], e1);
  assert_int_equal(tg_disconnect(s, e3), 0); /* the head */
  assert_int_equal(tg_disconnect(s, e2), TG_ENOTFOUND);
  tgt_edges in = tgt_edges_of(s, b, TG_IN);
  assert_int_equal(in.n, 1);
  assert_int_equal(in.ids[0], e1);
  tg_connection c;
  assert_int_equal(tg_connection_get(s, e3, &c), TG_ENOTFOUND);
  tg_store_close(s);
}

static int count_any(void *arg, const tg_connection *c) {
  (void)arg;
  (void)c;
  return 0;
}

static void test_deleting_a_token_removes_its_connections(void **state) {
  (void)state;
  tg_store *s = open_store();
  uint32_t a = mk(s, 1), b = mk(s, 1), c = mk(s, 1);
  uint32_t ab = link_(s, a, b, 0), ba = link_(s, b, a, 0), bc = link_(s, b, c, 0);
  uint32_t aa = link_(s, a, a, 0); /* a self-loop sits on both of a's lists */
  assert_int_equal(tg_token_delete(s, a), 0);
  tg_connection x;
  assert_int_equal(tg_connection_get(s, ab, &x), TG_ENOTFOUND);
  assert_int_equal(tg_connection_get(s, ba, &x), TG_ENOTFOUND);
  assert_int_equal(tg_connection_get(s, aa, &x), TG_ENOTFOUND);
  assert_int_equal(tg_connection_get(s, bc, &x), 0);
  tgt_edges bo = tgt_edges_of(s, b, TG_BOTH);
  assert_int_equal(bo.n, 1);
  assert_int_equal(bo.ids[0], bc);
  tg_store_stats st = tgt_stats(s);
  assert_int_equal(st.live_connections, 1);
  assert_int_equal(st.live_tokens, 2);
  /* The reused slot (a's) starts with no connections, under a new id. */
  uint32_t d = mk(s, 1);
  assert_int_equal(d, c + 1);
  assert_int_equal(tgt_edges_of(s, d, TG_BOTH).n, 0);
  assert_int_equal(tg_token_edges(s, a, TG_BOTH, count_any, NULL), TG_ENOTFOUND);
  tg_store_close(s);
}

static void test_connect_rejects_missing_endpoints_and_bad_types(void **state) {
  (void)state;
  tg_store *s = open_store();
  uint32_t a = mk(s, 1);
  tg_connection c;
  memset(&c, 0, sizeof c);
  c.from = a;
  c.to = 77;
  uint32_t id = 123;
  assert_int_equal(tg_connect(s, &c, &id), TG_ENOTFOUND);
  assert_int_equal(id, 0);
  c.to = a;
  c.type = TG_CONN_TYPES;
  assert_int_equal(tg_connect(s, &c, &id), TG_EINVAL);
  assert_int_equal(tg_token_edges(s, 77, TG_OUT, tgt_edges_add, &(tgt_edges){0}), TG_ENOTFOUND);
  assert_int_equal(tgt_stats(s).live_connections, 0);
  tg_store_close(s);
}

static int stop_after_one(void *arg, const tg_connection *c) {
  (void)c;
  (*(int *)arg)++;
  return 7;
}

static void test_edge_walk_stops_when_the_callback_says_so(void **state) {
  (void)state;
  tg_store *s = open_store();
  uint32_t a = mk(s, 1), b = mk(s, 1);
  link_(s, a, b, 0);
  link_(s, a, b, 0);
  int calls = 0;
  assert_int_equal(tg_token_edges(s, a, TG_OUT, stop_after_one, &calls), 7);
  assert_int_equal(calls, 1);
  tg_store_close(s);
}

static void test_many_connections_across_chunks_keep_lists_consistent(void **state) {
  (void)state;
  tg_store *s = open_store();
  /* Tokens in different arena chunks, so side tables of several chunks. */
  enum { N = 70000 };
  uint32_t hub = mk(s, 1);
  for (uint32_t i = 1; i < N; i++) mk(s, 1);
  uint32_t conns[200];
  for (int i = 0; i < 200; i++)
    conns[i] = link_(s, hub, (uint32_t)(1 + (i * 347) % N), (uint8_t)(i % TG_CONN_TYPES));
  for (int i = 0; i < 200; i += 2) assert_int_equal(tg_disconnect(s, conns[i]), 0);
  int count = 0;
  assert_int_equal(tg_token_edges(s, hub, TG_OUT, stop_after_one, &count), 7);
  tg_store_stats st = tgt_stats(s);
  assert_int_equal(st.live_connections, 100);
  for (int i = 1; i < 200; i += 2) {
    tg_connection c;
    assert_int_equal(tg_connection_get(s, conns[i], &c), 0);
    assert_int_equal(c.from, hub);
  }
  assert_int_equal(tg_token_delete(s, hub), 0);
  tg_store_stats_get(s, &st);
  assert_int_equal(st.live_connections, 0);
  tg_store_close(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_token_fields_round_trip_and_id_is_assigned),
    cmocka_unit_test(test_ids_are_stable_while_others_come_and_go),
    cmocka_unit_test(test_deleted_token_is_gone_and_its_id_never_names_another),
    cmocka_unit_test(test_adjacency_lists_outgoing_and_incoming),
    cmocka_unit_test(test_disconnect_unlinks_from_both_lists),
    cmocka_unit_test(test_deleting_a_token_removes_its_connections),
    cmocka_unit_test(test_connect_rejects_missing_endpoints_and_bad_types),
    cmocka_unit_test(test_edge_walk_stops_when_the_callback_says_so),
    cmocka_unit_test(test_many_connections_across_chunks_keep_lists_consistent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
