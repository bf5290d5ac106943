/* Scans and filtered edges: id order, resumption, callbacks that call the
   store, and what a scan sees while writers run. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tokengraph/tokengraph.h"
#include "util.h"

static tg_store *open_mem(void) {
  tg_store *s = NULL;
  assert_int_equal(tg_store_open(&s, NULL, NULL), 0);
  return s;
}

static uint32_t mk(tg_store *s, uint32_t stamp) {
  tg_token t = {.timestamp = stamp};
  uint32_t id = 0;
  assert_int_equal(tg_token_create(s, &t, &id), 0);
  return id;
}

static uint32_t link_(tg_store *s, uint32_t from, uint32_t to, uint8_t type) {
  tg_connection c = {.from = from, .to = to, .type = type};
  uint32_t id = 0;
  assert_int_equal(tg_connect(s, &c, &id), 0);
  return id;
}

/* What a scan callback saw. */
typedef struct seen {
  uint32_t ids[100000];
  uint32_t stamps[100000];
  size_t n;
  size_t stop_after; /* return 7 after this many; 0 = never */
} seen;

static int see_token(void *arg, const tg_token *t) {
  seen *v = arg;
  assert_true(v->n < 100000);
  v->ids[v->n] = t->id;
  v->stamps[v->n++] = t->timestamp;
  return v->stop_after && v->n == v->stop_after ? 7 : 0;
}

static int see_conn(void *arg, const tg_connection *c) {
  seen *v = arg;
  v->ids[v->n] = c->id;
  v->stamps[v->n++] = c->type;
  return v->stop_after && v->n == v->stop_after ? 7 : 0;
}

static void test_token_scan_visits_live_tokens_in_id_order_after_the_given_id(void **state) {
  (void)state;
  tg_store *s = open_mem();
  static seen v;
  memset(&v, 0, sizeof v);
  uint32_t ids[1000];
  /* Enough to span several pages and a map chunk boundary's worth of
     deletes: every third token is deleted, and their slots reused by the
     tokens created after them (which get higher ids). */
  for (uint32_t i = 0; i < 1000; i++) ids[i] = mk(s, i);
  for (uint32_t i = 0; i < 1000; i += 3) assert_int_equal(tg_token_delete(s, ids[i]), 0);
  uint32_t more[100];
  for (uint32_t i = 0; i < 100; i++) more[i] = mk(s, 5000 + i);
  assert_int_equal(tg_token_scan(s, 0, see_token, &v), 0);
  assert_int_equal(v.n, 666 + 100);
  for (size_t i = 1; i < v.n; i++) assert_true(v.ids[i] > v.ids[i - 1]);
  size_t k = 0;
  for (uint32_t i = 0; i < 1000; i++) {
    if (i % 3 == 0) continue;
    assert_int_equal(v.ids[k], ids[i]);
    assert_int_equal(v.stamps[k], i);
    k++;
  }
  for (uint32_t i = 0; i < 100; i++, k++) assert_int_equal(v.ids[k], more[i]);
  /* After an id: only the ids above it. */
  memset(&v, 0, sizeof v);
  assert_int_equal(tg_token_scan(s, ids[997], see_token, &v), 0);
  assert_int_equal(v.n, 1 + 100); /* ids[998] (ids[999] is deleted), the 100 */
  assert_int_equal(v.ids[0], ids[998]);
  /* After a deleted id: as after any other. */
  memset(&v, 0, sizeof v);
  assert_int_equal(tg_token_scan(s, ids[999], see_token, &v), 0);
  assert_int_equal(v.n, 100);
  memset(&v, 0, sizeof v);
  assert_int_equal(tg_token_scan(s, more[99], see_token, &v), 0);
  assert_int_equal(v.n, 0);
  assert_int_equal(tg_token_scan(s, 0xFFFFFFFFu, see_token, &v), 0);
  assert_int_equal(v.n, 0);
  assert_int_equal(tg_token_scan(s, 0, NULL, NULL), TG_EINVAL);
  tg_store_close(s);
}

static void test_scan_skips_long_runs_of_dead_ids(void **state) {
  (void)state;
  tg_store *s = open_mem();
  static seen v;
  memset(&v, 0, sizeof v);
  uint32_t first = mk(s, 1);
  /* Seven map chunks' worth of ids that all died. */
  for (uint32_t i = 0; i < 7 * 32768u; i++) {
    uint32_t id = mk(s, 2);
    assert_int_equal(tg_token_delete(s, id), 0);
  }
  uint32_t last = mk(s, 3);
  assert_int_equal(last, first + 7 * 32768u + 1u);
  assert_int_equal(tg_token_scan(s, 0, see_token, &v), 0);
  assert_int_equal(v.n, 2);
  assert_int_equal(v.ids[0], first);
  assert_int_equal(v.ids[1], last);
  tg_store_close(s);
}

static void test_scan_stops_on_a_callback_value_and_resumes_page_by_page(void **state) {
  (void)state;
  tg_store *s = open_mem();
  static seen all, page;
  memset(&all, 0, sizeof all);
  for (uint32_t i = 0; i < 1234; i++) mk(s, i);
  for (uint32_t id = 10; id < 1234; id += 7) assert_int_equal(tg_token_delete(s, id), 0);
  assert_int_equal(tg_token_scan(s, 0, see_token, &all), 0);
  /* Pages of 100: each stops with the callback's value (7), the next
     resumes after the last id seen; together they are the whole scan. */
  uint32_t after = 0;
  size_t got = 0, pages = 0;
  for (;;) {
    memset(&page, 0, sizeof page);
    page.stop_after = 100;
    int rc = tg_token_scan(s, after, see_token, &page);
    for (size_t i = 0; i < page.n; i++) assert_int_equal(page.ids[i], all.ids[got + i]);
    got += page.n;
    pages++;
    if (rc == 0) break;
    assert_int_equal(rc, 7);
    assert_int_equal(page.n, 100);
    after = page.ids[page.n - 1];
  }
  assert_int_equal(got, all.n);
  assert_int_equal(pages, all.n / 100 + 1);
  tg_store_close(s);
}

static void test_connection_scan_visits_live_connections_in_id_order(void **state) {
  (void)state;
  tg_store *s = open_mem();
  static seen v;
  memset(&v, 0, sizeof v);
  uint32_t a = mk(s, 1), b = mk(s, 2), c = mk(s, 3);
  uint32_t ab = link_(s, a, b, 1), bc = link_(s, b, c, 2), ca = link_(s, c, a, 3);
  uint32_t bb = link_(s, b, b, 4);
  assert_int_equal(tg_disconnect(s, bc), 0);
  assert_int_equal(tg_connection_scan(s, 0, see_conn, &v), 0);
  assert_int_equal(v.n, 3);
  assert_int_equal(v.ids[0], ab);
  assert_int_equal(v.ids[1], ca);
  assert_int_equal(v.ids[2], bb);
  assert_int_equal(v.stamps[2], 4);
  memset(&v, 0, sizeof v);
  v.stop_after = 1;
  assert_int_equal(tg_connection_scan(s, ab, see_conn, &v), 7);
  assert_int_equal(v.n, 1);
  assert_int_equal(v.ids[0], ca);
  /* Deleting a token takes its connections out of the scan. */
  memset(&v, 0, sizeof v);
  assert_int_equal(tg_token_delete(s, a), 0);
  assert_int_equal(tg_connection_scan(s, 0, see_conn, &v), 0);
  assert_int_equal(v.n, 1);
  assert_int_equal(v.ids[0], bb);
  tg_store_close(s);
}

/* ---- callbacks that call the store --------------------------------------- */

typedef struct reenter {
  tg_store *s;
  int visited;
  uint32_t created[16];
  int ncreated;
} reenter;

static int nested_count(void *arg, const tg_token *t) {
  (void)t;
  (*(int *)arg)++;
  return 0;
}

static int reenter_cb(void *arg, const tg_token *t) {
  reenter *r = arg;
  r->visited++;
  tg_token cur;
  /* Read, update, delete what the scan shows, create, and scan again:
     all from inside the callback, on the same store. */
  assert_int_equal(tg_token_get(r->s, t->id, &cur), 0);
  cur.weight = 99.0f;
  assert_int_equal(tg_token_update(r->s, &cur), 0);
  if (t->timestamp % 2 == 0) assert_int_equal(tg_token_delete(r->s, t->id), 0);
  if (r->ncreated < 16) {
    tg_token n = {.timestamp = 1001}; /* odd: kept */
    assert_int_equal(tg_token_create(r->s, &n, &r->created[r->ncreated++]), 0);
  }
  int inner = 0;
  assert_int_equal(tg_token_scan(r->s, 0, nested_count, &inner), 0);
  assert_true(inner > 0);
  tg_store_stats st;
  assert_int_equal(tg_store_stats_get(r->s, &st), 0);
  return 0;
}

static void test_scan_callbacks_may_call_the_store_without_deadlock(void **state) {
  (void)state;
  tg_store *s = open_mem();
  for (uint32_t i = 0; i < 600; i++) mk(s, i);
  reenter r = {.s = s};
  assert_int_equal(tg_token_scan(s, 0, reenter_cb, &r), 0);
  /* The 600, then the 16 created during the scan (ids above them all,
     created before the scan reached them). */
  assert_int_equal(r.visited, 600 + 16);
  tg_store_stats st = tgt_stats(s);
  assert_int_equal(st.live_tokens, 300 + 16);
  tg_token t;
  assert_int_equal(tg_token_get(s, 2, &t), 0); /* timestamp 1: kept */
  assert_true(t.weight == 99.0f);
  assert_int_equal(tg_token_get(s, 1, &t), TG_ENOTFOUND);
  tg_store_close(s);
}

/* A writer in another thread completes while a scan callback waits for
   it: the scan does not hold the store lock across its callbacks. */
typedef struct blocker {
  tg_store *s;
  atomic_int done;
  uint32_t id;
} blocker;

static void *create_one(void *arg) {
  blocker *b = arg;
  tg_token t = {.timestamp = 7};
  assert_int_equal(tg_token_create(b->s, &t, &b->id), 0);
  atomic_store_explicit(&b->done, 1, memory_order_release);
  return NULL;
}

static int wait_for_writer(void *arg, const tg_token *t) {
  blocker *b = arg;
  if (t->id != 1) return 0;
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, create_one, b), 0);
  TGT_WAIT_UNTIL(atomic_load_explicit(&b->done, memory_order_acquire), "the writer");
  assert_int_equal(pthread_join(th, NULL), 0);
  return 0;
}

static void test_a_writer_completes_while_a_scan_callback_runs(void **state) {
  (void)state;
  tg_store *s = open_mem();
  for (uint32_t i = 0; i < 10; i++) mk(s, i);
  blocker b = {.s = s};
  atomic_init(&b.done, 0);
  assert_int_equal(tg_token_scan(s, 0, wait_for_writer, &b), 0);
  assert_int_equal(b.id, 11);
  tg_store_close(s);
}

/* ---- scans under concurrent writers (TSan) -------------------------------- */

#define STABLE 3000

typedef struct churn {
  tg_store *s;
  atomic_int stop;
  uint64_t ops;
} churn;

static void *churner(void *arg) {
  churn *c = arg;
  uint32_t mine[32];
  int n = 0;
  while (!atomic_load_explicit(&c->stop, memory_order_acquire)) {
    tg_token t = {.timestamp = 0xC0FFEE};
    uint32_t id;
    if (tg_token_create(c->s, &t, &id) == 0) {
      if (n == 32) {
        assert_int_equal(tg_token_delete(c->s, mine[0]), 0);
        memmove(mine, mine + 1, sizeof mine[0] * 31);
        n--;
      }
      mine[n++] = id;
      c->ops++;
    }
    /* Writers also update the stable tokens' weights under the scan. */
    tg_token st;
    uint32_t sid = 1u + (uint32_t)(c->ops % STABLE);
    if (tg_token_get(c->s, sid, &st) == 0) {
      st.weight += 1.0f;
      tg_token_update(c->s, &st);
    }
  }
  return NULL;
}

typedef struct check {
  uint32_t last;
  size_t stable_seen;
  int out_of_order;
} check;

static int check_cb(void *arg, const tg_token *t) {
  check *k = arg;
  if (t->id <= k->last) k->out_of_order++;
  k->last = t->id;
  if (t->timestamp != 0xC0FFEE) k->stable_seen++;
  return 0;
}

static void test_scans_under_concurrent_writers_see_every_stable_token_once(void **state) {
  (void)state;
  tg_store *s = open_mem();
  for (uint32_t i = 0; i < STABLE; i++) mk(s, i);
  churn c[2];
  pthread_t th[2];
  for (int i = 0; i < 2; i++) {
    memset(&c[i], 0, sizeof c[i]);
    c[i].s = s;
    atomic_init(&c[i].stop, 0);
    assert_int_equal(pthread_create(&th[i], NULL, churner, &c[i]), 0);
  }
  for (int round = 0; round < 20; round++) {
    check k = {0, 0, 0};
    assert_int_equal(tg_token_scan(s, 0, check_cb, &k), 0);
    assert_int_equal(k.out_of_order, 0);
    assert_int_equal(k.stable_seen, STABLE);
  }
  for (int i = 0; i < 2; i++) atomic_store_explicit(&c[i].stop, 1, memory_order_release);
  for (int i = 0; i < 2; i++) assert_int_equal(pthread_join(th[i], NULL), 0);
  tg_store_close(s);
}

/* ---- filtered edges -------------------------------------------------------- */

static int collect_edge(void *arg, const tg_connection *c) {
  seen *v = arg;
  v->ids[v->n++] = c->id;
  return 0;
}

static void test_edges_filter_by_type_category_and_direction(void **state) {
  (void)state;
  tg_store *s = open_mem();
  static seen v;
  uint32_t a = mk(s, 1), b = mk(s, 2);
  uint32_t c1 = link_(s, a, b, TG_CONN_TYPE(TG_CAT_CAUSAL, 0));
  uint32_t c2 = link_(s, a, b, TG_CONN_TYPE(TG_CAT_CAUSAL, 3));
  uint32_t c3 = link_(s, a, b, TG_CONN_TYPE(TG_CAT_SPATIAL, 3));
  uint32_t c4 = link_(s, b, a, TG_CONN_TYPE(TG_CAT_CAUSAL, 3));
  tg_edge_filter f = TG_EDGE_FILTER_INIT;
  memset(&v, 0, sizeof v);
  assert_int_equal(tg_token_edges_filtered(s, a, &f, collect_edge, &v), 0);
  assert_int_equal(v.n, 4); /* the initial filter lets everything through */

  f.type = TG_CONN_TYPE(TG_CAT_CAUSAL, 3);
  memset(&v, 0, sizeof v);
  assert_int_equal(tg_token_edges_filtered(s, a, &f, collect_edge, &v), 0);
  assert_int_equal(v.n, 2);
  assert_int_equal(v.ids[0], c2); /* outgoing first */
  assert_int_equal(v.ids[1], c4);

  f.type = -1;
  f.categories = 1u << TG_CAT_CAUSAL;
  f.direction = TG_OUT;
  memset(&v, 0, sizeof v);
  assert_int_equal(tg_token_edges_filtered(s, a, &f, collect_edge, &v), 0);
  assert_int_equal(v.n, 2);
  assert_int_equal(v.ids[0], c2); /* newest first */
  assert_int_equal(v.ids[1], c1);

  f.categories = (1u << TG_CAT_SPATIAL) | (1u << TG_CAT_TEMPORAL);
  f.direction = TG_BOTH;
  memset(&v, 0, sizeof v);
  assert_int_equal(tg_token_edges_filtered(s, b, &f, collect_edge, &v), 0);
  assert_int_equal(v.n, 1);
  assert_int_equal(v.ids[0], c3);

  /* Bad filters, missing tokens; the old call keeps working. */
  f.type = TG_CONN_TYPES;
  assert_int_equal(tg_token_edges_filtered(s, a, &f, collect_edge, &v), TG_EINVAL);
  f.type = -1;
  f.direction = 0;
  assert_int_equal(tg_token_edges_filtered(s, a, &f, collect_edge, &v), TG_EINVAL);
  assert_int_equal(tg_token_edges_filtered(s, a, NULL, collect_edge, &v), TG_EINVAL);
  f.direction = TG_BOTH;
  assert_int_equal(tg_token_edges_filtered(s, 999, &f, collect_edge, &v), TG_ENOTFOUND);
  memset(&v, 0, sizeof v);
  assert_int_equal(tg_token_edges(s, a, TG_BOTH, collect_edge, &v), 0);
  assert_int_equal(v.n, 4);
  tg_store_close(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_token_scan_visits_live_tokens_in_id_order_after_the_given_id),
    cmocka_unit_test(test_scan_skips_long_runs_of_dead_ids),
    cmocka_unit_test(test_scan_stops_on_a_callback_value_and_resumes_page_by_page),
    cmocka_unit_test(test_connection_scan_visits_live_connections_in_id_order),
    cmocka_unit_test(test_scan_callbacks_may_call_the_store_without_deadlock),
    cmocka_unit_test(test_a_writer_completes_while_a_scan_callback_runs),
    cmocka_unit_test(test_scans_under_concurrent_writers_see_every_stable_token_once),
    cmocka_unit_test(test_edges_filter_by_type_category_and_direction),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
