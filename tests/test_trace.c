/*
 * src/trace: sampled spans, Chrome trace export, black box (including a
 * real crash dump from a child process), Prometheus metrics.
 *
 * The JSON outputs are parsed with the strict RFC 8259 parser below, not
 * pattern-matched, so "valid JSON" is checked for real.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "util.h"

#include "store/store_internal.h"
#include "tokengraph/tokengraph.h"
#include "tokengraph/trace.h"
#include "tokengraph/wal.h"
#include "trace/trace_internal.h"
#include "common/io.h"

/* ======================================================================
 * A strict JSON parser (RFC 8259) building a small tree.
 * ====================================================================== */

enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

typedef struct jv {
  int type;
  double num;        /* J_NUM, J_BOOL */
  char *str;         /* J_STR */
  struct jv *items;  /* J_ARR elements, J_OBJ values */
  char **keys;       /* J_OBJ keys */
  size_t n, cap;     /* cap: items (and keys) allocated */
} jv;

typedef struct jp {
  const char *p, *end;
  int depth;
} jp;

static int jparse_value(jp *j, jv *out);

static void jskip(jp *j) {
  while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
    j->p++;
}

static int jparse_string(jp *j, char **out) {
  if (j->p >= j->end || *j->p != '"') return -1;
  j->p++;
  size_t cap = 16, n = 0;
  char *s = malloc(cap);
  while (j->p < j->end && *j->p != '"') {
    unsigned char c = (unsigned char)*j->p++;
    if (c < 0x20) goto bad; /* raw control characters are not allowed */
    if (c == '\\') {
      if (j->p >= j->end) goto bad;
      c = (unsigned char)*j->p++;
      switch (c) {
      case '"': case '\\': case '/': break;
      case 'b': c = '\b'; break;
      case 'f': c = '\f'; break;
      case 'n': c = '\n'; break;
      case 'r': c = '\r'; break;
      case 't': c = '\t'; break;
      case 'u':
        for (int k = 0; k < 4; k++)
          if (j->p + k >= j->end || !isxdigit((unsigned char)j->p[k])) goto bad;
        c = '?'; /* the tests only need the escape to be well-formed */
        j->p += 4;
        break;
      default: goto bad;
      }
    }
    if (n + 2 > cap) s = realloc(s, cap *= 2);
    s[n++] = (char)c;
  }
  if (j->p >= j->end) goto bad;
  j->p++;
  s[n] = '\0';
  *out = s;
  return 0;
bad:
  free(s);
  return -1;
}

static int jparse_number(jp *j, jv *out) {
  const char *s = j->p;
  if (j->p < j->end && *j->p == '-') j->p++;
  if (j->p >= j->end) return -1;
  if (*j->p == '0') {
    j->p++;
  } else if (*j->p >= '1' && *j->p <= '9') {
    while (j->p < j->end && isdigit((unsigned char)*j->p)) j->p++;
  } else {
    return -1;
  }
  if (j->p < j->end && *j->p == '.') {
    j->p++;
    if (j->p >= j->end || !isdigit((unsigned char)*j->p)) return -1;
    while (j->p < j->end && isdigit((unsigned char)*j->p)) j->p++;
  }
  if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
    j->p++;
    if (j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
    if (j->p >= j->end || !isdigit((unsigned char)*j->p)) return -1;
    while (j->p < j->end && isdigit((unsigned char)*j->p)) j->p++;
  }
  char buf[64];
  size_t len = (size_t)(j->p - s);
  if (len >= sizeof buf) return -1;
  memcpy(buf, s, len);
  buf[len] = '\0';
  out->type = J_NUM;
  out->num = strtod(buf, NULL);
  return 0;
}

static int jlit(jp *j, const char *lit) {
  size_t n = strlen(lit);
  if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0) return -1;
  j->p += n;
  return 0;
}

static int jparse_value(jp *j, jv *out) {
  memset(out, 0, sizeof *out);
  if (++j->depth > 64) return -1;
  jskip(j);
  if (j->p >= j->end) return -1;
  int rc = 0;
  char c = *j->p;
  if (c == '{' || c == '[') {
    int obj = c == '{';
    out->type = obj ? J_OBJ : J_ARR;
    j->p++;
    jskip(j);
    if (j->p < j->end && *j->p == (obj ? '}' : ']')) {
      j->p++;
      goto done;
    }
    for (;;) {
      /* Doubling: one element at a time was a copy of the whole array per
         element under the sanitizers' realloc (a trace has ~10^5 events). */
      if (out->n == out->cap) {
        out->cap = out->cap ? 2 * out->cap : 8;
        out->items = realloc(out->items, out->cap * sizeof(jv));
        if (obj) out->keys = realloc(out->keys, out->cap * sizeof(char *));
        assert_non_null(out->items);
        if (obj) assert_non_null(out->keys);
      }
      memset(&out->items[out->n], 0, sizeof(jv));
      if (obj) {
        out->keys[out->n] = NULL;
        jskip(j);
        if (jparse_string(j, &out->keys[out->n]) != 0) return -1;
        jskip(j);
        if (j->p >= j->end || *j->p++ != ':') {
          out->n++;
          out->items[out->n - 1].type = J_NULL;
          return -1;
        }
      }
      if (jparse_value(j, &out->items[out->n]) != 0) {
        out->n++;
        return -1;
      }
      out->n++;
      jskip(j);
      if (j->p >= j->end) return -1;
      if (*j->p == ',') {
        j->p++;
        continue;
      }
      if (*j->p == (obj ? '}' : ']')) {
        j->p++;
        break;
      }
      return -1;
    }
  } else if (c == '"') {
    out->type = J_STR;
    rc = jparse_string(j, &out->str);
  } else if (c == 't') {
    out->type = J_BOOL;
    out->num = 1;
    rc = jlit(j, "true");
  } else if (c == 'f') {
    out->type = J_BOOL;
    rc = jlit(j, "false");
  } else if (c == 'n') {
    rc = jlit(j, "null");
  } else {
    rc = jparse_number(j, out);
  }
done:
  j->depth--;
  return rc;
}

static void jfree(jv *v) {
  if (v == NULL) return;
  for (size_t i = 0; i < v->n; i++) {
    jfree(&v->items[i]);
    if (v->keys) free(v->keys[i]);
  }
  free(v->items);
  free(v->keys);
  free(v->str);
}

/* Parse the whole text; NULL if it is not exactly one valid JSON value. */
static jv *jparse(const char *text, size_t len) {
  jp j = {text, text + len, 0};
  jv *v = calloc(1, sizeof *v);
  if (jparse_value(&j, v) != 0) goto bad;
  jskip(&j);
  if (j.p != j.end) goto bad;
  return v;
bad:
  jfree(v);
  free(v);
  return NULL;
}

static const jv *jget(const jv *o, const char *key) {
  if (o == NULL || o->type != J_OBJ) return NULL;
  for (size_t i = 0; i < o->n; i++)
    if (strcmp(o->keys[i], key) == 0) return &o->items[i];
  return NULL;
}

static double jnum(const jv *o, const char *key) {
  const jv *v = jget(o, key);
  assert_non_null(v);
  assert_int_equal(v->type, J_NUM);
  return v->num;
}

static const char *jstr(const jv *o, const char *key) {
  const jv *v = jget(o, key);
  assert_non_null(v);
  assert_int_equal(v->type, J_STR);
  return v->str;
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return NULL;
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  size_t r;
  while ((r = fread(buf + n, 1, cap - n, f)) > 0) {
    n += r;
    if (n == cap) buf = realloc(buf, cap *= 2);
  }
  fclose(f);
  *len = n;
  return buf;
}

static jv *parse_file(const char *path) {
  size_t len = 0;
  char *text = read_file(path, &len);
  assert_non_null(text);
  jv *v = jparse(text, len);
  free(text);
  return v;
}

static void jdestroy(jv *v) {
  jfree(v);
  free(v);
}

static char tmpdir[256];

static void tmp_path(char *out, size_t n, const char *name) {
  snprintf(out, n, "%s/%s", tmpdir, name);
}

static void test_json_parser_rejects_what_it_should(void **state) {
  (void)state;
  static const char *bad[] = {"", "{", "[1,]", "{\"a\":1,}", "{'a':1}", "[01]", "[1.]",
                              "\"\x01\"", "[1] [2]", "{\"a\" 1}", "[\"\\x\"]", "nul"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_null(jparse(bad[i], strlen(bad[i])));
  const char *good = "{\"a\":[1,-2.5e3,true,null,\"x\\n\\u00e9\"],\"b\":{}}";
  jv *v = jparse(good, strlen(good));
  assert_non_null(v);
  jdestroy(v);
}

/* ======================================================================
 * Spans and sampling
 * ====================================================================== */

TG_SPAN_SITE(site_root, "test.root", "i", NULL, NULL, NULL);
TG_SPAN_SITE(site_child, "test.child", "i", "j", NULL, NULL);
TG_SPAN_SITE(site_leaf, "test.\"leaf\"", NULL, NULL, NULL, "k");

static int root_with_children(uint64_t i) {
  tg_span r, c, l;
  tg_span_begin(&r, &site_root);
  tg_span_attr(&r, 0, i);
  int sampled = tg_span_sampled(&r);
  for (int k = 0; k < 2; k++) {
    tg_span_begin(&c, &site_child);
    tg_span_attr(&c, 0, i);
    tg_span_attr(&c, 1, (uint64_t)k);
    assert_int_equal(tg_span_sampled(&c), sampled);
    tg_span_begin(&l, &site_leaf);
    tg_span_attr(&l, 3, 7);
    assert_int_equal(tg_span_sampled(&l), sampled);
    tg_span_end(&l);
    tg_span_end(&c);
  }
  tg_span_end(&r);
  assert_int_equal(tg__tls.state & TG__DEPTH_MASK, 0);
  return sampled;
}

static void test_children_follow_the_sampling_decision_of_their_root(void **state) {
  (void)state;
  assert_int_equal(tg_trace_set_rate(0.5), 0);
  tg_trace_stats before, after;
  tg_trace_stats_get(&before);
  int sampled = 0;
  for (uint64_t i = 0; i < 2000; i++) sampled += root_with_children(i);
  tg_trace_stats_get(&after);
  /* Both outcomes occur, and each sampled root recorded itself plus its
     four descendants: no unsampled root leaked a child into the ring. */
  assert_true(sampled > 800 && sampled < 1200);
  assert_int_equal(after.sampled - before.sampled, (uint64_t)sampled * 5);
}

static void test_rate_zero_samples_nothing_and_rate_one_samples_everything(void **state) {
  (void)state;
  tg_trace_stats before, after;
  assert_int_equal(tg_trace_set_rate(0.0), 0);
  tg_trace_stats_get(&before);
  for (uint64_t i = 0; i < 200000; i++) assert_int_equal(root_with_children(i), 0);
  tg_trace_stats_get(&after);
  assert_int_equal(after.sampled, before.sampled);

  assert_int_equal(tg_trace_set_rate(1.0), 0);
  for (uint64_t i = 0; i < 20000; i++) assert_int_equal(root_with_children(i), 1);
  tg_trace_stats_get(&after);
  assert_int_equal(after.sampled - before.sampled, 20000u * 5);
  assert_int_equal(tg_trace_set_rate(0.01), 0);
}

static void test_one_percent_rate_samples_one_percent_of_roots(void **state) {
  (void)state;
  assert_int_equal(tg_trace_set_rate(0.01), 0);
  uint64_t n = 2000000, hits = 0;
  for (uint64_t i = 0; i < n; i++) {
    tg_span s;
    tg_span_begin(&s, &site_root);
    hits += (uint64_t)tg_span_sampled(&s);
    tg_span_end(&s);
  }
  /* Binomial(2e6, 0.01): mean 20000, sigma 141; allow 6 sigma. */
  assert_true(hits > 20000 - 850 && hits < 20000 + 850);
}

static void test_rate_outside_zero_to_one_is_rejected(void **state) {
  (void)state;
  assert_int_equal(tg_trace_set_rate(-0.01), TG_EINVAL);
  assert_int_equal(tg_trace_set_rate(1.01), TG_EINVAL);
  assert_int_equal(tg_trace_set_rate(NAN), TG_EINVAL);
  assert_int_equal(tg_trace_set_buffer_spans(0), TG_EINVAL);
  assert_true(tg_trace_get_rate() >= 0.0 && tg_trace_get_rate() <= 1.0);
}

/* Check the Chrome trace document; returns the number of "X" events whose
   name is `name` and tid is `tid` (tid 0: any). */
static size_t check_chrome_trace(const jv *doc, const char *name, double tid) {
  assert_non_null(doc);
  assert_int_equal(doc->type, J_OBJ);
  const jv *ev = jget(doc, "traceEvents");
  assert_non_null(ev);
  assert_int_equal(ev->type, J_ARR);
  assert_string_equal(jstr(doc, "displayTimeUnit"), "ns");
  size_t count = 0;
  for (size_t i = 0; i < ev->n; i++) {
    const jv *e = &ev->items[i];
    assert_int_equal(e->type, J_OBJ);
    const char *ph = jstr(e, "ph");
    jstr(e, "name");
    jnum(e, "pid");
    jnum(e, "tid");
    if (strcmp(ph, "M") == 0) continue;
    assert_string_equal(ph, "X");
    assert_true(jnum(e, "ts") >= -1e6);
    assert_true(jnum(e, "dur") >= 0);
    assert_int_equal(jget(e, "args")->type, J_OBJ);
    if (strcmp(jstr(e, "name"), name) == 0 && (tid == 0 || jnum(e, "tid") == tid)) count++;
  }
  return count;
}

static void test_chrome_trace_export_is_valid_json_with_nested_spans(void **state) {
  (void)state;
  char path[512];
  tmp_path(path, sizeof path, "trace.json");
  tg_trace_reset();
  assert_int_equal(tg_trace_set_rate(1.0), 0);
  assert_int_equal(tg_trace_set_thread_name("main \"thread\"\t\\"), 0);
  for (uint64_t i = 0; i < 10; i++) root_with_children(i);
  assert_int_equal(tg_trace_set_rate(0.01), 0);
  assert_int_equal(tg_trace_write(path), 0);

  jv *doc = parse_file(path);
  assert_non_null(doc);
  assert_int_equal(check_chrome_trace(doc, "test.root", 0), 10);
  assert_int_equal(check_chrome_trace(doc, "test.child", 0), 20);
  assert_int_equal(check_chrome_trace(doc, "test.\"leaf\"", 0), 20);

  /* Each child lies inside a root on the same thread, with its attributes
     named as the site says and one level deeper. */
  const jv *ev = jget(doc, "traceEvents");
  size_t checked = 0;
  for (size_t i = 0; i < ev->n; i++) {
    const jv *c = &ev->items[i];
    if (strcmp(jstr(c, "name"), "test.child") != 0) continue;
    const jv *args = jget(c, "args");
    assert_int_equal((int)jnum(args, "depth"), 1);
    double ci = jnum(args, "i");
    jnum(args, "j");
    int inside = 0;
    for (size_t k = 0; k < ev->n; k++) {
      const jv *r = &ev->items[k];
      if (strcmp(jstr(r, "name"), "test.root") != 0) continue;
      if (jnum(jget(r, "args"), "i") != ci) continue;
      assert_int_equal((int)jnum(jget(r, "args"), "depth"), 0);
      inside = jnum(c, "ts") >= jnum(r, "ts") &&
               jnum(c, "ts") + jnum(c, "dur") <= jnum(r, "ts") + jnum(r, "dur") + 0.002;
    }
    assert_true(inside);
    checked++;
  }
  assert_int_equal(checked, 20);
  jdestroy(doc);
}

static void *wrap_thread(void *arg) {
  double *tid = arg;
  tg_trace_set_buffer_spans(64);
  assert_int_equal(tg_trace_set_thread_name("wrapper"), 0);
  tg_trace_set_buffer_spans(8192);
  for (int i = 0; i < 1000; i++) {
    tg_span s;
    tg_span_begin(&s, &site_child);
    tg_span_attr(&s, 0, (uint64_t)i);
    tg_span_end(&s);
  }
  *tid = (double)syscall(SYS_gettid);
  return NULL;
}

static void test_chrome_trace_stays_valid_after_a_ring_wrapped(void **state) {
  (void)state;
  char path[512];
  tmp_path(path, sizeof path, "trace-wrapped.json");
  tg_trace_reset();
  assert_int_equal(tg_trace_set_rate(1.0), 0);
  pthread_t th;
  double tid = 0;
  assert_int_equal(pthread_create(&th, NULL, wrap_thread, &tid), 0);
  pthread_join(th, NULL);
  assert_int_equal(tg_trace_set_rate(0.01), 0);

  tg_trace_stats st;
  tg_trace_stats_get(&st);
  assert_true(st.dropped >= 1000 - 64);
  assert_int_equal(tg_trace_write(path), 0);
  jv *doc = parse_file(path);
  assert_non_null(doc);
  /* The exited thread's ring is kept and holds exactly the newest 64. */
  assert_int_equal(check_chrome_trace(doc, "test.child", tid), 64);
  const jv *ev = jget(doc, "traceEvents");
  double min_i = 1e9;
  for (size_t i = 0; i < ev->n; i++)
    if (jnum(&ev->items[i], "tid") == tid && strcmp(jstr(&ev->items[i], "ph"), "X") == 0) {
      double v = jnum(jget(&ev->items[i], "args"), "i");
      if (v < min_i) min_i = v;
    }
  assert_true(min_i == 1000 - 64);
  assert_true(jnum(jget(doc, "otherData"), "spans_dropped") >= 1000 - 64);
  jdestroy(doc);
}

static int stop_tracers;

static void *tracer_thread(void *arg) {
  (void)arg;
  uint64_t i = 0;
  while (!__atomic_load_n(&stop_tracers, __ATOMIC_RELAXED)) root_with_children(i++);
  return NULL;
}

static void test_export_while_threads_trace_gives_valid_json(void **state) {
  (void)state;
  char path[512];
  tmp_path(path, sizeof path, "trace-live.json");
  assert_int_equal(tg_trace_set_rate(1.0), 0);
  __atomic_store_n(&stop_tracers, 0, __ATOMIC_RELAXED);
  pthread_t th[2];
  for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&th[i], NULL, tracer_thread, NULL), 0);
  for (int round = 0; round < 5; round++) {
    assert_int_equal(tg_trace_write(path), 0);
    jv *doc = parse_file(path);
    assert_non_null(doc);
    check_chrome_trace(doc, "test.root", 0);
    jdestroy(doc);
  }
  __atomic_store_n(&stop_tracers, 1, __ATOMIC_RELAXED);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  assert_int_equal(tg_trace_set_rate(0.01), 0);
}

/* ======================================================================
 * Black box
 * ====================================================================== */

/* The events of type `type` in a dump, in file order. */
static size_t bb_events_of(const jv *doc, const char *type, const jv **out, size_t max) {
  const jv *ev = jget(doc, "events");
  assert_non_null(ev);
  assert_int_equal(ev->type, J_ARR);
  size_t n = 0;
  double last_seq = 0;
  for (size_t i = 0; i < ev->n; i++) {
    const jv *e = &ev->items[i];
    double seq = jnum(e, "seq");
    assert_true(seq > last_seq); /* oldest first, strictly */
    last_seq = seq;
    jnum(e, "unix_ns");
    jnum(e, "mono_ns");
    jnum(e, "tid");
    assert_int_equal(jget(e, "args")->type, J_OBJ);
    if (strcmp(jstr(e, "type"), type) == 0 && n < max) out[n++] = e;
  }
  return n;
}

static void test_blackbox_dump_lists_events_in_order(void **state) {
  (void)state;
  char path[512];
  tmp_path(path, sizeof path, "bb.json");
  tg_blackbox_record(TG_BB_OPEN, 2, 10, 20, 30);
  for (uint64_t i = 0; i < 100; i++) tg_blackbox_record(TG_BB_USER, i, i * 2, 0, 0);
  tg_blackbox_record(TG_BB_QUOTA_REJECTION, TG_BB_QUOTA_TOKENS, 100, 100, 0);
  assert_int_equal(tg_blackbox_dump(path), 0);

  jv *doc = parse_file(path);
  assert_non_null(doc);
  assert_string_equal(jstr(doc, "format"), "tokengraph-blackbox");
  assert_string_equal(jstr(doc, "reason"), "request");
  assert_int_equal((int)jnum(doc, "capacity"), TG_BLACKBOX_EVENTS);
  const jv *user[TG_BLACKBOX_EVENTS];
  size_t n = bb_events_of(doc, "user", user, TG_BLACKBOX_EVENTS);
  assert_true(n >= 100);
  for (size_t i = 0; i < 100; i++) {
    const jv *e = user[n - 100 + i];
    assert_int_equal((uint64_t)jnum(jget(e, "args"), "a0"), i);
    assert_int_equal((uint64_t)jnum(jget(e, "args"), "a1"), i * 2);
    if (i > 0)
      assert_true(jnum(e, "mono_ns") >= jnum(user[n - 100 + i - 1], "mono_ns"));
  }
  const jv *q[4];
  assert_true(bb_events_of(doc, "quota_rejection", q, 4) >= 1);
  assert_int_equal((int)jnum(jget(q[0], "args"), "quota"), TG_BB_QUOTA_TOKENS);
  assert_int_equal((int)jnum(jget(q[0], "args"), "limit"), 100);
  const jv *o[4];
  assert_true(bb_events_of(doc, "open", o, 4) >= 1);
  assert_int_equal((int)jnum(jget(o[0], "args"), "connections"), 20);
  jdestroy(doc);
}

static void test_blackbox_ring_wraps_keeping_the_newest(void **state) {
  (void)state;
  char path[512];
  tmp_path(path, sizeof path, "bb-wrap.json");
  uint64_t total = TG_BLACKBOX_EVENTS + 1000;
  for (uint64_t i = 0; i < total; i++) tg_blackbox_record(TG_BB_EVICTION, i, 0, 0, 0);
  assert_int_equal(tg_blackbox_dump(path), 0);
  jv *doc = parse_file(path);
  assert_non_null(doc);
  static const jv *ev[TG_BLACKBOX_EVENTS];
  size_t n = bb_events_of(doc, "eviction", ev, TG_BLACKBOX_EVENTS);
  assert_int_equal(n, TG_BLACKBOX_EVENTS);
  for (size_t i = 0; i < n; i++)
    assert_int_equal((uint64_t)jnum(jget(ev[i], "args"), "tokens_evicted"), total - n + i);
  assert_true(jnum(doc, "overwritten") >= 1000);
  jdestroy(doc);
}

static void *bb_writer(void *arg) {
  for (uint64_t i = 0; i < 20000; i++) tg_blackbox_record(TG_BB_BACKPRESSURE, (uintptr_t)arg, i, 0, 0);
  return NULL;
}

static void test_blackbox_dump_during_concurrent_recording_parses(void **state) {
  (void)state;
  char path[512];
  tmp_path(path, sizeof path, "bb-live.json");
  pthread_t th[2];
  for (uintptr_t i = 0; i < 2; i++) assert_int_equal(pthread_create(&th[i], NULL, bb_writer, (void *)i), 0);
  for (int r = 0; r < 5; r++) {
    assert_int_equal(tg_blackbox_dump(path), 0);
    jv *doc = parse_file(path);
    assert_non_null(doc);
    const jv *ev[1];
    bb_events_of(doc, "backpressure", ev, 1);
    jdestroy(doc);
  }
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
}

/* The PROT_NONE page the SIGSEGV child writes to, mapped before the fork so
   the parent knows the fault address. */
static volatile int *segv_page;

/* Fork a child that installs the handler, records events and dies of
   `how`; return the parsed dump. */
static jv *crash_child(const char *name, int how, int *status) {
  char path[512];
  tmp_path(path, sizeof path, name);
  unlink(path);
  if (segv_page == NULL) {
    void *p = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    segv_page = p;
  }
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    /* cmocka catches fatal signals to report them; a program normally
       has the default disposition, which the handler re-raises into. */
    signal(SIGSEGV, SIG_DFL);
    signal(SIGABRT, SIG_DFL);
    if (tg_blackbox_set_path(path) != 0) _exit(90);
    if (tg_blackbox_install_signal_handlers() != 0) _exit(91);
    tg_blackbox_record(TG_BB_OPEN, 1, 0, 0, 0);
    for (uint64_t i = 0; i < 10; i++) tg_blackbox_record(TG_BB_USER, 4242, i, 0, 0);
    if (how == SIGSEGV) {
      /* A real invalid write, not raise(): to a PROT_NONE page, which
         UBSan's null-pointer check does not intercept. */
      *segv_page = 1;
    } else {
      abort();
    }
    _exit(92);
  }
  assert_int_equal(waitpid(pid, status, 0), pid);
  return parse_file(path);
}

static void check_crash_dump(jv *doc, int signo) {
  assert_non_null(doc);
  assert_string_equal(jstr(doc, "reason"), "signal");
  assert_int_equal((int)jnum(doc, "signal"), signo);
  const jv *user[TG_BLACKBOX_EVENTS];
  size_t n = bb_events_of(doc, "user", user, TG_BLACKBOX_EVENTS);
  assert_true(n >= 10);
  for (size_t i = 0; i < 10; i++) {
    assert_int_equal((int)jnum(jget(user[n - 10 + i], "args"), "a0"), 4242);
    assert_int_equal((int)jnum(jget(user[n - 10 + i], "args"), "a1"), (int)i);
  }
  /* The handler's own event is the last one. */
  const jv *ev = jget(doc, "events");
  const jv *last = &ev->items[ev->n - 1];
  assert_string_equal(jstr(last, "type"), "signal");
  const jv *args = jget(last, "args");
  assert_int_equal((int)jnum(args, "signo"), signo);
  if (signo == SIGSEGV) { /* a write to a mapped page it may not touch */
    assert_true(jnum(args, "fault_addr") == (double)(uintptr_t)segv_page);
    assert_int_equal((int)jnum(args, "si_code"), SEGV_ACCERR);
  }
}

static void test_fatal_segv_in_a_child_leaves_a_parseable_dump(void **state) {
  (void)state;
  int status = 0;
  jv *doc = crash_child("crash-segv.json", SIGSEGV, &status);
  /* The child still died of SIGSEGV: the handler re-raised it. (Under
     ASan, its own SEGV handler, restored by ours, reports and exits.) */
#ifndef TG_SANITIZE_ADDRESS
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGSEGV);
#else
  assert_false(WIFEXITED(status) && WEXITSTATUS(status) == 0);
#endif
  check_crash_dump(doc, SIGSEGV);
  jdestroy(doc);
}

static void test_abort_in_a_child_leaves_a_parseable_dump(void **state) {
  (void)state;
  int status = 0;
  jv *doc = crash_child("crash-abrt.json", SIGABRT, &status);
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGABRT);
  check_crash_dump(doc, SIGABRT);
  jdestroy(doc);
}

/* Installed once per process and counted: the handler stays until the last
   remove, which puts back what was there before. */
static void test_handlers_install_once_and_restore_at_the_last_remove(void **state) {
  (void)state;
  struct sigaction before, during, after;
  sigaction(SIGBUS, NULL, &before);
  assert_int_equal(tg_blackbox_install_signal_handlers(), 0);
  assert_int_equal(tg_blackbox_install_signal_handlers(), 0);
  sigaction(SIGBUS, NULL, &during);
  assert_true(during.sa_flags & SA_SIGINFO);
  tg_blackbox_remove_signal_handlers();
  sigaction(SIGBUS, NULL, &after);
  assert_true(after.sa_sigaction == during.sa_sigaction); /* one install left */
  tg_blackbox_remove_signal_handlers();
  sigaction(SIGBUS, NULL, &after);
  assert_true(after.sa_handler == before.sa_handler);
  assert_int_equal(tg_blackbox_set_path(NULL), 0);
  assert_int_equal(tg_blackbox_set_path(""), TG_EINVAL);
}

static void app_handler(int sig) { (void)sig; }
static void fresh_dirs(char *dir, char *out, size_t n, const char *name);

/* A handler the program installs after opening a store survives the
   store's close: the library restores only what is still its own. */
static void test_close_keeps_a_handler_the_program_installed_later(void **state) {
  (void)state;
  char dir[512], out[512];
  fresh_dirs(dir, out, sizeof dir, "bb-app-handler");
  char sdir[600];
  snprintf(sdir, sizeof sdir, "%s/store", dir);
  tg_store *s = NULL;
  assert_int_equal(tg_store_open(&s, sdir, NULL), 0);
  struct sigaction mine, after;
  memset(&mine, 0, sizeof mine);
  mine.sa_handler = app_handler;
  sigemptyset(&mine.sa_mask);
  struct sigaction prev;
  assert_int_equal(sigaction(SIGSEGV, &mine, &prev), 0);
  assert_int_equal(tg_store_close(s), 0);
  sigaction(SIGSEGV, NULL, &after);
  assert_true(after.sa_handler == app_handler);
  sigaction(SIGSEGV, &prev, NULL);
}

/* Two stores open, one closed: a crash still dumps into the other's
   directory (every open store has its own dump). */
static void test_each_open_store_gets_its_crash_dump(void **state) {
  (void)state;
  char dir[512], out[512], a[600], b[600], p[700];
  fresh_dirs(dir, out, sizeof dir, "bb-two-stores");
  snprintf(a, sizeof a, "%s/a", dir);
  snprintf(b, sizeof b, "%s/b", dir);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    tg_store *sa = NULL, *sb = NULL;
    if (tg_store_open(&sa, a, NULL) || tg_store_open(&sb, b, NULL)) _exit(90);
    if (tg_store_close(sa)) _exit(91);
    abort();
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGABRT);
  struct stat st;
  snprintf(p, sizeof p, "%s/blackbox.json", b);
  assert_int_equal(stat(p, &st), 0);
  assert_true(S_ISREG(st.st_mode) && st.st_size > 0);
  snprintf(p, sizeof p, "%s/blackbox.json", a);
  assert_int_equal(stat(p, &st), -1); /* closed before the crash: no dump */
}

/* ======================================================================
 * Black-box schema: each event, provoked through the public API (and the
 * I/O seam for failures), records what its labels in TG_BB_MAP say.
 * ====================================================================== */

static const struct {
  const char *name;
  const char *label[4];
} bb_schema[] = {
#define BB_ROW(e, name, l0, l1, l2, l3) {#name, {l0, l1, l2, l3}},
  TG_BB_MAP(BB_ROW)
#undef BB_ROW
};
#define BB_NTYPES (sizeof bb_schema / sizeof bb_schema[0])

/* A dump of the ring, parsed. */
static jv *bb_doc(void) {
  char path[512];
  tmp_path(path, sizeof path, "bb-schema.json");
  assert_int_equal(tg_blackbox_dump(path), 0);
  jv *doc = parse_file(path);
  assert_non_null(doc);
  return doc;
}

/* Events recorded so far: a mark to look for newer ones. */
static uint64_t bb_mark(void) {
  jv *doc = bb_doc();
  uint64_t n = (uint64_t)jnum(doc, "recorded");
  jdestroy(doc);
  return n;
}

/* The arguments of each event of `type` recorded after `mark`, oldest
   first (at most max), after checking that they are exactly the labels
   of the schema, in its order. */
static size_t bb_args_since(const jv *doc, uint64_t mark, const char *type,
                            const jv **out, size_t max) {
  const char *const *label = NULL;
  for (size_t t = 0; t < BB_NTYPES; t++)
    if (strcmp(bb_schema[t].name, type) == 0) label = bb_schema[t].label;
  assert_non_null(label);
  static const jv *all[TG_BLACKBOX_EVENTS];
  size_t n = bb_events_of(doc, type, all, TG_BLACKBOX_EVENTS), k = 0;
  for (size_t i = 0; i < n; i++) {
    if (jnum(all[i], "seq") <= (double)mark) continue;
    const jv *args = jget(all[i], "args");
    size_t want = 0;
    for (int a = 0; a < 4; a++) {
      if (label[a] == NULL) continue;
      assert_true(want < args->n);
      assert_string_equal(args->keys[want], label[a]);
      want++;
    }
    assert_int_equal(args->n, want);
    if (k < max) out[k++] = args;
  }
  return k;
}

/* The one event of `type` since mark: its arguments (doc owns them). */
static const jv *bb_one_since(const jv *doc, uint64_t mark, const char *type) {
  const jv *a[2];
  size_t n = bb_args_since(doc, mark, type, a, 2);
  if (n != 1) fail_msg("%zu '%s' events since %llu, expected 1", n, type,
                       (unsigned long long)mark);
  return a[0];
}

static uint64_t arg(const jv *args, const char *label) {
  return (uint64_t)jnum(args, label);
}

static tg_store_config store_cfg(int level) {
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.wal.level = level;
  cfg.crash_dump = 0;
  return cfg;
}

/* A fresh data directory under the test's tmpdir (not created). */
static void fresh_dir(char *out, size_t n, const char *name) {
  tmp_path(out, n, name);
  int rc = tgp_rmtree(out);
  if (rc && rc != -ENOENT) fail_msg("cannot remove %s: %s", out, strerror(-rc));
}

static tg_store *open_store(const char *dir, const tg_store_config *cfg) {
  tg_store *s = NULL;
  char msg[512] = "";
  int rc = tg_store_open_msg(&s, dir, cfg, msg, sizeof msg);
  if (rc) fail_msg("open %s: %s: %s", dir ? dir : "(memory)", tg_err_name(rc), msg);
  return s;
}

static uint32_t new_token(tg_store *s) {
  uint32_t id = 0;
  assert_int_equal(tg_token_create(s, NULL, &id), 0);
  return id;
}

static int link_tokens(tg_store *s, uint32_t from, uint32_t to) {
  tg_connection c;
  memset(&c, 0, sizeof c);
  c.from = from;
  c.to = to;
  uint32_t id;
  return tg_connect(s, &c, &id);
}

/* The first LSNs of the segments in DIR/wal, ascending. */
static size_t wal_segments(const char *dir, uint64_t *out, size_t max) {
  char waldir[600];
  snprintf(waldir, sizeof waldir, "%s/wal", dir);
  DIR *d = opendir(waldir);
  assert_non_null(d);
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    size_t l = strlen(e->d_name);
    if (l != 24 || strcmp(e->d_name + 20, ".wal") != 0) continue;
    assert_true(n < max);
    out[n++] = strtoull(e->d_name, NULL, 10);
  }
  closedir(d);
  for (size_t i = 1; i < n; i++) /* insertion sort: a handful */
    for (size_t j = i; j > 0 && out[j - 1] > out[j]; j--) {
      uint64_t t = out[j];
      out[j] = out[j - 1];
      out[j - 1] = t;
    }
  return n;
}

static void test_bb_open_and_close_record_the_counts_and_level(void **state) {
  (void)state;
  char dir[512];
  fresh_dir(dir, sizeof dir, "bb-open");
  tg_store_config cfg = store_cfg(TG_BALANCED);
  uint64_t mark = bb_mark();
  tg_store *s = open_store(dir, &cfg);
  uint32_t a = new_token(s), b = new_token(s);
  new_token(s);
  assert_int_equal(link_tokens(s, a, b), 0); /* LSNs 1..4 */
  assert_int_equal(tg_store_close(s), 0);
  s = open_store(dir, &cfg);
  assert_int_equal(tg_store_close(s), 0);
  tg_store *m = open_store(NULL, &cfg); /* in memory */
  new_token(m);
  assert_int_equal(tg_store_close(m), 0);

  jv *doc = bb_doc();
  const jv *open[3], *close[3];
  assert_int_equal(bb_args_since(doc, mark, "open", open, 3), 3);
  assert_int_equal(bb_args_since(doc, mark, "close", close, 3), 3);
  /* A fresh directory, its reopening, a store in memory. */
  assert_int_equal(arg(open[0], "durability"), TG_BALANCED);
  assert_int_equal(arg(open[0], "tokens"), 0);
  assert_int_equal(arg(open[0], "last_lsn"), 0);
  assert_int_equal(arg(close[0], "tokens"), 3);
  assert_int_equal(arg(close[0], "connections"), 1);
  assert_int_equal(arg(close[0], "last_lsn"), 4);
  assert_int_equal(arg(close[0], "clean"), 1);
  assert_int_equal(arg(open[1], "durability"), TG_BALANCED);
  assert_int_equal(arg(open[1], "tokens"), 3);
  assert_int_equal(arg(open[1], "connections"), 1);
  assert_int_equal(arg(open[1], "last_lsn"), 4);
  assert_true(jnum(open[2], "durability") == (double)UINT64_MAX);
  assert_int_equal(arg(close[2], "tokens"), 1);
  assert_int_equal(arg(close[2], "last_lsn"), 0);
  jdestroy(doc);
}

static void test_bb_recovery_records_checkpoint_segments_and_replay(void **state) {
  (void)state;
  char dir[512];
  fresh_dir(dir, sizeof dir, "bb-recovery");
  tg_store_config cfg = store_cfg(TG_RELAXED);
  tg_store *s = open_store(dir, &cfg);
  for (int i = 0; i < 10; i++) new_token(s);
  assert_int_equal(tg_checkpoint(s), 0); /* covers LSN 10 */
  for (int i = 0; i < 7; i++) new_token(s);
  assert_int_equal(tg_store_close(s), 0);
  uint64_t segs[64];
  size_t nseg = wal_segments(dir, segs, 64);

  uint64_t mark = bb_mark();
  s = open_store(dir, &cfg);
  assert_int_equal(tg_store_close(s), 0);
  jv *doc = bb_doc();
  const jv *start = bb_one_since(doc, mark, "recovery_start");
  assert_int_equal(arg(start, "checkpoint_lsn"), 10);
  assert_int_equal(arg(start, "segments"), nseg);
  const jv *end = bb_one_since(doc, mark, "recovery_end");
  assert_int_equal(arg(end, "records_replayed"), 7);
  assert_int_equal(arg(end, "last_lsn"), 17);
  assert_int_equal(arg(end, "torn_offset"), 0); /* a clean end */
  assert_true(arg(end, "duration_ns") > 0);
  jdestroy(doc);

  /* A torn tail: garbage where the next frame would go. */
  char waldir[600], seg[900];
  snprintf(waldir, sizeof waldir, "%s/wal", dir);
  tg_wal_reader *r;
  assert_int_equal(tg_wal_reader_open(&r, waldir, 0), 0);
  tg_wal_record rec;
  while (tg_wal_reader_next(r, &rec) == 1) {
  }
  const tg_wal_end *e = tg_wal_reader_end(r);
  assert_int_equal(e->reason, TG_WAL_END_CLEAN);
  uint64_t cut = e->offset;
  snprintf(seg, sizeof seg, "%s/%s", waldir, e->path);
  tg_wal_reader_close(r);
  int fd = open(seg, O_WRONLY | O_CLOEXEC);
  assert_true(fd >= 0);
  unsigned char junk[16];
  memset(junk, 0xAB, sizeof junk);
  assert_int_equal(pwrite(fd, junk, sizeof junk, (off_t)cut), (ssize_t)sizeof junk);
  close(fd);

  mark = bb_mark();
  s = open_store(dir, &cfg);
  assert_int_equal(tg_store_close(s), 0);
  doc = bb_doc();
  end = bb_one_since(doc, mark, "recovery_end");
  assert_int_equal(arg(end, "records_replayed"), 7);
  assert_int_equal(arg(end, "last_lsn"), 17);
  assert_int_equal(arg(end, "torn_offset"), cut);
  jdestroy(doc);
}

static void test_bb_checkpoint_and_segment_switches_name_the_segments(void **state) {
  (void)state;
  char dir[512];
  fresh_dir(dir, sizeof dir, "bb-checkpoint");
  tg_store_config cfg = store_cfg(TG_RELAXED);
  cfg.wal.segment_bytes = 65536; /* ~800 token records per segment */
  uint64_t mark = bb_mark();
  tg_store *s = open_store(dir, &cfg);
  for (int i = 0; i < 3000; i++) new_token(s);
  assert_int_equal(tg_sync(s), 0);
  uint64_t before[64], after[64];
  size_t nb = wal_segments(dir, before, 64);
  assert_true(nb >= 3);
  assert_int_equal(tg_checkpoint(s), 0);
  size_t na = wal_segments(dir, after, 64);
  assert_true(na < nb);

  jv *doc = bb_doc();
  /* One switch per segment after the first, naming both. */
  const jv *sw[64];
  assert_int_equal(bb_args_since(doc, mark, "wal_segment_switch", sw, 64), nb - 1);
  for (size_t i = 0; i + 1 < nb; i++) {
    assert_int_equal(arg(sw[i], "old_first_lsn"), before[i]);
    assert_int_equal(arg(sw[i], "new_first_lsn"), before[i + 1]);
  }
  const jv *ck = bb_one_since(doc, mark, "checkpoint");
  assert_int_equal(arg(ck, "lsn"), 3000);
  assert_int_equal(arg(ck, "records_written"), 3000);
  assert_true(arg(ck, "duration_ns") > 0);
  assert_int_equal(arg(ck, "segments_removed"), nb - na);
  jdestroy(doc);
  assert_int_equal(tg_store_close(s), 0);
}

static void test_bb_quota_rejections_record_what_the_call_would_reach(void **state) {
  (void)state;
  tg_store_config cfg = store_cfg(TG_BALANCED);
  cfg.guardian.max_tokens = 4;
  cfg.guardian.max_connections = 3;
  cfg.guardian.max_degree = 2;
  uint64_t mark = bb_mark();
  tg_store *s = open_store(NULL, &cfg);
  uint32_t t[4];
  for (int i = 0; i < 4; i++) t[i] = new_token(s);
  uint32_t id;
  assert_int_equal(tg_token_create(s, NULL, &id), TG_EQUOTA);
  assert_int_equal(link_tokens(s, t[0], t[1]), 0);
  assert_int_equal(link_tokens(s, t[0], t[2]), 0);
  assert_int_equal(link_tokens(s, t[0], t[3]), TG_EQUOTA); /* degree of t0: 3 */
  assert_int_equal(link_tokens(s, t[3], t[1]), 0);         /* 3 connections */
  assert_int_equal(link_tokens(s, t[3], t[2]), TG_EQUOTA); /* a 4th */
  assert_int_equal(tg_store_close(s), 0);

  /* Memory: room for 3 tokens, nothing evicted. */
  tg_store_config mcfg = store_cfg(TG_BALANCED);
  mcfg.guardian.max_memory_bytes = 3 * 64;
  mcfg.guardian.memory_threshold = 1.0;
  mcfg.guardian.cleanup = 0;
  s = open_store(NULL, &mcfg);
  for (int i = 0; i < 3; i++) new_token(s);
  assert_int_equal(tg_token_create(s, NULL, &id), TG_EQUOTA);
  assert_int_equal(tg_store_close(s), 0);

  jv *doc = bb_doc();
  const jv *q[4];
  assert_int_equal(bb_args_since(doc, mark, "quota_rejection", q, 4), 4);
  assert_int_equal(arg(q[0], "quota"), TG_BB_QUOTA_TOKENS);
  assert_int_equal(arg(q[0], "value"), 5);
  assert_int_equal(arg(q[0], "limit"), 4);
  assert_int_equal(arg(q[0], "token_id"), 0);
  assert_int_equal(arg(q[1], "quota"), TG_BB_QUOTA_DEGREE);
  assert_int_equal(arg(q[1], "value"), 3);
  assert_int_equal(arg(q[1], "limit"), 2);
  assert_int_equal(arg(q[1], "token_id"), t[0]);
  assert_int_equal(arg(q[2], "quota"), TG_BB_QUOTA_CONNECTIONS);
  assert_int_equal(arg(q[2], "value"), 4);
  assert_int_equal(arg(q[2], "limit"), 3);
  assert_int_equal(arg(q[2], "token_id"), t[3]);
  assert_int_equal(arg(q[3], "quota"), TG_BB_QUOTA_MEMORY);
  assert_int_equal(arg(q[3], "value"), 4 * 64);
  assert_int_equal(arg(q[3], "limit"), 3 * 64);
  assert_int_equal(arg(q[3], "token_id"), 0);
  jdestroy(doc);
}

static void test_bb_eviction_records_the_pass(void **state) {
  (void)state;
  tg_store_config cfg = store_cfg(TG_BALANCED);
  cfg.guardian.max_memory_bytes = 64 * 100;
  cfg.guardian.memory_threshold = 0.5; /* soft limit: 50 tokens */
  cfg.guardian.cleanup_margin = 0.1;   /* evict down to 40, the new one included */
  cfg.guardian.cleanup = 1;
  uint64_t mark = bb_mark();
  tg_store *s = open_store(NULL, &cfg);
  for (int i = 0; i < 51; i++) new_token(s);
  assert_int_equal(tg_store_close(s), 0);
  jv *doc = bb_doc();
  const jv *ev = bb_one_since(doc, mark, "eviction");
  assert_int_equal(arg(ev, "tokens_evicted"), 11);
  assert_int_equal(arg(ev, "bytes_freed"), 11 * 64);
  assert_int_equal(arg(ev, "memory_after"), 39 * 64);
  assert_int_equal(arg(ev, "soft_limit"), 50 * 64);
  jdestroy(doc);
}

/* ---- failures, through the I/O seam ---------------------------------------
 * The injections are installed before the store opens (the seam is read
 * without a lock) and armed through an atomic. */
static atomic_int inj_pwrite_errno, inj_fdatasync_errno, inj_stall;
static atomic_int inj_stalled;

static ssize_t inj_pwrite(int fd, const void *b, size_t n, off_t off) {
  int e = atomic_load(&inj_pwrite_errno);
  if (e) {
    errno = e;
    return -1;
  }
  if (atomic_load(&inj_stall)) {
    /* Hold the writer here until the test lets go, or its patience runs
       out: the test's own checks then fail rather than hang. */
    atomic_store(&inj_stalled, 1);
    uint64_t deadline = tgp_now_ns() + TGT_PATIENCE_NS;
    while (atomic_load(&inj_stall) && tgp_now_ns() < deadline) tgt_pause();
  }
  return pwrite(fd, b, n, off);
}

static int inj_fdatasync(int fd) {
  int e = atomic_load(&inj_fdatasync_errno);
  if (e) {
    errno = e;
    return -1;
  }
  return fdatasync(fd);
}

static void inj_install(void) {
  atomic_store(&inj_pwrite_errno, 0);
  atomic_store(&inj_fdatasync_errno, 0);
  atomic_store(&inj_stall, 0);
  atomic_store(&inj_stalled, 0);
  tg__io.pwrite = inj_pwrite;
  tg__io.fdatasync = inj_fdatasync;
}

/* LSNs 1..5 made durable, then `inj` set to `err` and LSN 6 appended: the
   sync fails with tg_err, the metric counts `sync_failures` failed
   fdatasyncs, and the black box holds one event `type` (none of `other`)
   saying what the log had written. */
static void check_log_failure(const char *name, atomic_int *inj, int err, int tg_err,
                              const char *type, const char *other, uint64_t written,
                              uint64_t sync_failures) {
  char dir[512];
  fresh_dir(dir, sizeof dir, name);
  tg_store_config cfg = store_cfg(TG_RELAXED);
  inj_install();
  tg_store *s = open_store(dir, &cfg);
  for (int i = 0; i < 5; i++) new_token(s);
  assert_int_equal(tg_sync(s), 0);
  uint64_t mark = bb_mark();
  atomic_store(inj, err);
  new_token(s); /* queued: the writer's write or fdatasync of it fails */
  assert_int_equal(tg_sync(s), tg_err);
  assert_int_equal(tg_sync(s), tg_err);
  tg_metric_values v;
  tg_metrics_snapshot(&v);
  assert_int_equal(v.v[TG_METRIC_WAL_FDATASYNC_FAILURES], sync_failures);
  jv *doc = bb_doc();
  const jv *f = bb_one_since(doc, mark, type); /* once */
  assert_int_equal(arg(f, "errno"), err);
  assert_int_equal(arg(f, "durable_lsn"), 5);
  assert_int_equal(arg(f, "written_lsn"), written);
  assert_int_equal(arg(f, "error"), -tg_err);
  const jv *none[1];
  assert_int_equal(bb_args_since(doc, mark, other, none, 1), 0);
  jdestroy(doc);
  assert_int_equal(tg_store_close(s), tg_err);
  tg__io_reset();
}

static void test_bb_failed_write_is_a_write_failure_with_its_errno(void **state) {
  (void)state;
  check_log_failure("bb-write-failure", &inj_pwrite_errno, ENOSPC, TG_ENOSPC,
                    "write_failure", "fdatasync_failure", 5, 0);
}

static void test_bb_failed_fdatasync_is_told_apart_from_a_failed_write(void **state) {
  (void)state;
  check_log_failure("bb-sync-failure", &inj_fdatasync_errno, EIO, TG_EIO,
                    "fdatasync_failure", "write_failure", 6, 1);
}

typedef struct bp_arg {
  tg_store *s;
  atomic_int rc;
} bp_arg;

static void *bp_create(void *p) {
  bp_arg *a = p;
  uint32_t id;
  atomic_store(&a->rc, tg_token_create(a->s, NULL, &id));
  return NULL;
}

static uint64_t wal_next_lsn(tg_store *s) {
  tg_wal_stats ws;
  tg_wal_stats_get(s->wal, &ws);
  return ws.next_lsn;
}

static void test_bb_backpressure_records_the_blocked_appends(void **state) {
  (void)state;
  char dir[512];
  fresh_dir(dir, sizeof dir, "bb-backpressure");
  tg_store_config cfg = store_cfg(TG_RELAXED);
  cfg.wal.ring_slots = 8;
  inj_install();
  uint64_t mark = bb_mark();
  tg_store *s = open_store(dir, &cfg);
  atomic_store(&inj_stall, 1);
  new_token(s);
  TGT_WAIT_UNTIL(atomic_load(&inj_stalled), "the writer to hold LSN 1");
  /* LSNs 2..8 fill the ring: LSN 1 keeps its slot until it is written
     (the ring file is what a crash would recover it from). */
  for (int i = 0; i < 7; i++) new_token(s);
  bp_arg a = {s, 1};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, bp_create, &a), 0);
  /* LSN 9 handed out while the ring is full: that append is waiting. */
  TGT_WAIT_UNTIL(wal_next_lsn(s) == 10, "the 9th append to wait for space");
  atomic_store(&inj_stall, 0);
  pthread_join(th, NULL);
  assert_int_equal(atomic_load(&a.rc), 0);
  assert_int_equal(tg_sync(s), 0);
  assert_int_equal(tg_store_close(s), 0); /* records what the tick has not */
  tg__io_reset();

  jv *doc = bb_doc();
  const jv *bp[4];
  size_t n = bb_args_since(doc, mark, "backpressure", bp, 4);
  assert_true(n >= 1);
  uint64_t blocked = 0, waited = 0;
  for (size_t i = 0; i < n; i++) {
    blocked += arg(bp[i], "appends_blocked");
    waited += arg(bp[i], "wait_ns");
    assert_true(arg(bp[i], "queue_depth") <= 8);
  }
  assert_int_equal(blocked, 1);
  assert_true(waited > 0);
  jdestroy(doc);
}


/* docs/observability.md's black-box table lists the map's types, in its
   order, each with exactly its argument names. */
static void test_observability_doc_lists_the_schema(void **state) {
  (void)state;
  size_t len = 0;
  char *text = read_file(TG_SOURCE_DIR "/docs/observability.md", &len);
  assert_non_null(text);
  text = realloc(text, len + 1);
  text[len] = '\0';
  const char *head = "| type | recorded when | args |";
  char *p = strstr(text, head);
  assert_non_null(p);
  p = strchr(p, '\n') + 1; /* the header */
  p = strchr(p, '\n') + 1; /* |---|...| */
  size_t row = 0;
  while (*p == '|') {
    char *eol = strchr(p, '\n');
    assert_non_null(eol);
    *eol = '\0';
    char *col[4] = {0};
    char *c = p + 1;
    for (int k = 0; k < 4; k++) { /* no '|' inside a cell */
      char *bar = strchr(c, '|');
      assert_non_null(bar);
      *bar = '\0';
      col[k] = c;
      c = bar + 1;
    }
    assert_true(row < BB_NTYPES);
    char name[64];
    assert_int_equal(sscanf(col[0], " `%63[a-z_]`", name), 1);
    assert_string_equal(name, bb_schema[row].name);
    char want[256] = "";
    for (int a = 0; a < 4; a++) {
      if (bb_schema[row].label[a] == NULL) continue;
      if (want[0]) strcat(want, ", ");
      strcat(want, bb_schema[row].label[a]);
    }
    char *args = col[2];
    while (*args == ' ') args++;
    size_t al = strlen(args);
    while (al > 0 && args[al - 1] == ' ') args[--al] = '\0';
    assert_string_equal(args, want);
    row++;
    p = eol + 1;
  }
  assert_int_equal(row, BB_NTYPES);
  free(text);
}

/* ---- blackbox.json and planted symbolic links ------------------------------- */

/* DIR/blackbox.json is a link to OUT/victim (which holds "keep") and the
   temporary name of process `pid` a link to OUT/absent (which does not
   exist). */
static void plant_links(const char *dir, const char *out, long pid) {
  char p[700], t[700], tmpname[300];
  snprintf(p, sizeof p, "%s/victim", out);
  FILE *f = fopen(p, "w");
  assert_non_null(f);
  fputs("keep", f);
  fclose(f);
  snprintf(t, sizeof t, "%s/blackbox.json", dir);
  assert_int_equal(symlink(p, t), 0);
  snprintf(p, sizeof p, "%s/absent", out);
  assert_int_equal(tg__tmp_name(tmpname, sizeof tmpname, "blackbox.json", pid), 0);
  snprintf(t, sizeof t, "%s/%s", dir, tmpname);
  assert_int_equal(symlink(p, t), 0);
}

/* The links redirected nothing: the victim is intact, nothing was created
   outside, blackbox.json is now a private regular file holding a dump, and
   no temporary is left. Returns the parsed dump. */
static jv *check_links_untouched(const char *dir, const char *out, long pid) {
  char p[700], tmpname[300];
  size_t len = 0;
  snprintf(p, sizeof p, "%s/victim", out);
  char *text = read_file(p, &len);
  assert_non_null(text);
  assert_int_equal(len, 4);
  assert_memory_equal(text, "keep", 4);
  free(text);
  snprintf(p, sizeof p, "%s/absent", out);
  struct stat st;
  assert_int_equal(lstat(p, &st), -1);
  assert_int_equal(errno, ENOENT);
  snprintf(p, sizeof p, "%s/blackbox.json", dir);
  assert_int_equal(lstat(p, &st), 0);
  assert_true(S_ISREG(st.st_mode));
  assert_int_equal(st.st_mode & 0777, 0600);
  jv *doc = parse_file(p);
  assert_non_null(doc);
  assert_int_equal(tg__tmp_name(tmpname, sizeof tmpname, "blackbox.json", pid), 0);
  snprintf(p, sizeof p, "%s/%s", dir, tmpname);
  assert_int_equal(lstat(p, &st), -1);
  return doc;
}

static void fresh_dirs(char *dir, char *out, size_t n, const char *name) {
  char o[64];
  fresh_dir(dir, n, name);
  assert_int_equal(mkdir(dir, 0700), 0);
  snprintf(o, sizeof o, "%s-outside", name);
  fresh_dir(out, n, o);
  assert_int_equal(mkdir(out, 0700), 0);
}

static void test_blackbox_dump_replaces_planted_links_without_following_them(void **state) {
  (void)state;
  char dir[512], out[512], path[600];
  fresh_dirs(dir, out, sizeof dir, "bb-links");
  plant_links(dir, out, (long)getpid());
  snprintf(path, sizeof path, "%s/blackbox.json", dir);
  tg_blackbox_record(TG_BB_USER, 77, 0, 0, 0);
  assert_int_equal(tg_blackbox_dump(path), 0);
  jv *doc = check_links_untouched(dir, out, (long)getpid());
  assert_string_equal(jstr(doc, "reason"), "request");
  jdestroy(doc);
}

static void test_crash_dump_replaces_planted_links_without_following_them(void **state) {
  (void)state;
  char dir[512], out[512], path[600];
  fresh_dirs(dir, out, sizeof dir, "bb-crash-links");
  snprintf(path, sizeof path, "%s/blackbox.json", dir);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    signal(SIGABRT, SIG_DFL);
    if (tg_blackbox_set_path(path) != 0) _exit(90);
    if (tg_blackbox_install_signal_handlers() != 0) _exit(91);
    /* Planted after the path is set: the handler opens names then. */
    plant_links(dir, out, (long)getpid());
    abort();
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGABRT);
  jv *doc = check_links_untouched(dir, out, (long)pid);
  assert_string_equal(jstr(doc, "reason"), "signal");
  jdestroy(doc);
}

static void test_crash_path_needs_a_directory_and_a_name(void **state) {
  (void)state;
  char path[600];
  tmp_path(path, sizeof path, "no-such-dir/blackbox.json");
  assert_int_equal(tg_blackbox_set_path(path), -ENOENT);
  tmp_path(path, sizeof path, "");
  assert_int_equal(tg_blackbox_set_path(path), TG_EINVAL); /* ends in '/' */
  assert_int_equal(tg_blackbox_set_path(NULL), 0);
}

/* ======================================================================
 * Metrics
 * ====================================================================== */

static int valid_metric_name(const char *s, size_t n) {
  if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':')) return 0;
  for (size_t i = 1; i < n; i++)
    if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == ':')) return 0;
  return 1;
}

static int valid_label_name(const char *s, size_t n) {
  if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_')) return 0;
  for (size_t i = 1; i < n; i++)
    if (!(isalnum((unsigned char)s[i]) || s[i] == '_')) return 0;
  return 1;
}

/* Prometheus float: Go ParseFloat syntax, or +Inf/-Inf/NaN. */
static int parse_value(const char *s, double *out) {
  if (!strcmp(s, "+Inf")) return *out = INFINITY, 1;
  if (!strcmp(s, "-Inf")) return *out = -INFINITY, 1;
  if (!strcmp(s, "NaN")) return *out = NAN, 1;
  if (*s == '\0' || isspace((unsigned char)*s)) return 0;
  char *end;
  errno = 0;
  *out = strtod(s, &end);
  return *end == '\0' && errno == 0 && !isnan(*out) && !isinf(*out);
}

typedef struct family {
  char name[128];
  char type[16];
  int help_seen;
  /* histogram state */
  double last_le;
  double last_cum;
  double inf_count;
  int buckets, has_inf, has_sum, has_count;
  double count;
} family;

static void finish_family(family *f) {
  if (f->name[0] == '\0') return;
  if (strcmp(f->type, "histogram") == 0) {
    assert_true(f->buckets >= 2);
    assert_true(f->has_inf);
    assert_true(f->has_sum);
    assert_true(f->has_count);
    assert_true(f->inf_count == f->count);
  }
}

/* Check an exposition line by line; returns the number of samples and
   stores the value of `want` (exact sample text before the value). */
static int check_exposition(char *text, const char *want, double *want_value) {
  family fam;
  memset(&fam, 0, sizeof fam);
  char seen[64][128];
  int nseen = 0, samples = 0;
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    if (line[0] == '#') {
      char kw[8], name[128];
      int off = 0;
      assert_int_equal(sscanf(line, "# %7s %127s %n", kw, name, &off), 2);
      assert_true(valid_metric_name(name, strlen(name)));
      assert_memory_equal(name, "tokengraph_", 11);
      if (strcmp(kw, "HELP") == 0) {
        finish_family(&fam);
        /* A family appears once: HELP, then TYPE, then its samples. */
        for (int i = 0; i < nseen; i++) assert_string_not_equal(seen[i], name);
        assert_true(nseen < 64);
        snprintf(seen[nseen++], sizeof seen[0], "%s", name);
        memset(&fam, 0, sizeof fam);
        snprintf(fam.name, sizeof fam.name, "%s", name);
        fam.help_seen = 1;
        fam.last_le = -INFINITY;
        assert_true(off > 0 && line[off] != '\0'); /* help text present */
      } else {
        assert_string_equal(kw, "TYPE");
        assert_true(fam.help_seen);
        assert_string_equal(name, fam.name);
        assert_int_equal(fam.type[0], '\0');
        char *t = line + off;
        assert_true(!strcmp(t, "counter") || !strcmp(t, "gauge") || !strcmp(t, "histogram") ||
                    !strcmp(t, "summary") || !strcmp(t, "untyped"));
        snprintf(fam.type, sizeof fam.type, "%s", t);
      }
      continue;
    }
    assert_true(fam.type[0] != '\0'); /* every sample follows its TYPE */
    samples++;
    /* name */
    size_t nlen = 0;
    while (line[nlen] && line[nlen] != '{' && line[nlen] != ' ') nlen++;
    assert_true(valid_metric_name(line, nlen));
    char name[128];
    assert_true(nlen < sizeof name);
    memcpy(name, line, nlen);
    name[nlen] = '\0';
    const char *suffix = "";
    size_t flen = strlen(fam.name);
    assert_memory_equal(name, fam.name, flen);
    suffix = name + flen;
    if (strcmp(fam.type, "histogram") == 0)
      assert_true(!strcmp(suffix, "_bucket") || !strcmp(suffix, "_sum") || !strcmp(suffix, "_count"));
    else
      assert_string_equal(suffix, "");
    if (strcmp(fam.type, "counter") == 0) {
      size_t l = strlen(fam.name);
      assert_true(l > 6 && !strcmp(fam.name + l - 6, "_total"));
    }
    /* labels */
    char *p = line + nlen;
    double le = NAN;
    int le_inf = 0;
    if (*p == '{') {
      p++;
      int nlabels = 0;
      while (*p != '}') {
        if (nlabels > 0) {
          assert_int_equal(*p, ',');
          p++;
        }
        char *ln = p;
        while (*p && *p != '=') p++;
        assert_true(valid_label_name(ln, (size_t)(p - ln)));
        int is_le = (p - ln) == 2 && !memcmp(ln, "le", 2);
        assert_int_equal(*p++, '=');
        assert_int_equal(*p++, '"');
        char val[128];
        size_t vn = 0;
        while (*p && *p != '"') {
          if (*p == '\\') {
            p++;
            assert_true(*p == '\\' || *p == '"' || *p == 'n');
          }
          assert_true(vn + 1 < sizeof val);
          val[vn++] = *p++;
        }
        val[vn] = '\0';
        assert_int_equal(*p++, '"');
        if (is_le) {
          assert_true(parse_value(val, &le));
          le_inf = !strcmp(val, "+Inf");
        }
        nlabels++;
      }
      p++;
    }
    assert_int_equal(*p++, ' ');
    double v;
    assert_true(parse_value(p, &v)); /* no timestamp, nothing after */
    if (want && !strncmp(line, want, (size_t)(p - 1 - line)) && strlen(want) == (size_t)(p - 1 - line))
      *want_value = v;
    if (strcmp(fam.type, "counter") == 0 || strcmp(fam.type, "histogram") == 0) assert_true(v >= 0);
    if (strcmp(fam.type, "histogram") == 0) {
      if (!strcmp(suffix, "_bucket")) {
        assert_false(isnan(le));
        assert_false(fam.has_inf); /* +Inf is the last bucket */
        assert_true(le > fam.last_le); /* bounds ascending */
        assert_true(v >= fam.last_cum); /* counts cumulative */
        fam.last_le = le;
        fam.last_cum = v;
        fam.buckets++;
        if (le_inf) {
          fam.has_inf = 1;
          fam.inf_count = v;
        }
      } else if (!strcmp(suffix, "_sum")) {
        assert_true(fam.has_inf);
        fam.has_sum = 1;
      } else {
        assert_true(fam.has_inf);
        fam.has_count = 1;
        fam.count = v;
      }
    }
  }
  finish_family(&fam);
  return samples;
}

static char *metrics_text(void) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  assert_non_null(f);
  assert_int_equal(tg_metrics_write(f), 0);
  fclose(f);
  return buf;
}

static double metric_value(const char *sample) {
  char *text = metrics_text();
  double v = -1;
  check_exposition(text, sample, &v);
  free(text);
  return v;
}

static void test_metrics_exposition_is_well_formed_line_by_line(void **state) {
  (void)state;
  tg_metric_add(TG_METRIC_WAL_RECORDS, 1000);
  tg_metric_inc(TG_METRIC_WAL_BATCHES);
  tg_metric_set(TG_METRIC_WAL_QUEUE_DEPTH, 17);
  tg_metric_add(TG_METRIC_WAL_BACKPRESSURE_NS, 1500000000u);
  static const uint64_t sync_ns[] = {5000, 60000, 60000, 300000, 2000000, 9000000000u};
  for (size_t i = 0; i < sizeof sync_ns / sizeof sync_ns[0]; i++) {
    tg_metric_observe(TG_METRIC_WAL_FDATASYNC_NS, sync_ns[i]);
    tg_metric_observe(TG_METRIC_WAL_RECORDS_PER_SYNC, 3 * i + 1);
  }
  tg_blackbox_record(TG_BB_CHECKPOINT, 1, 2, 3, 4);
  char *text = metrics_text();
  char *copy = strdup(text);
  int samples = check_exposition(copy, NULL, NULL);
  free(copy);
  assert_true(samples > TG_METRIC_COUNT);
  /* Every registered metric is in the exposition. */
  for (int i = 0; i < TG_METRIC_COUNT; i++) {
    char line[256];
    snprintf(line, sizeof line, "# TYPE %s ", tg_metric_name((tg_metric)i));
    assert_non_null(strstr(text, line));
  }
  assert_null(tg_metric_name(TG_METRIC_COUNT));
  free(text);

  assert_true(metric_value("tokengraph_wal_queue_depth") == 17);
  assert_true(metric_value("tokengraph_wal_fdatasync_duration_seconds_bucket{le=\"+Inf\"}") >= 6);
  assert_true(metric_value("tokengraph_wal_backpressure_seconds_total") >= 1.5);
  assert_true(metric_value("tokengraph_blackbox_events_total{type=\"checkpoint\"}") >= 1);
  assert_true(metric_value("tokengraph_build_info{version=\"0.1.0\"}") == 1);
}

static void *adder(void *arg) {
  (void)arg;
  for (int i = 0; i < 100000; i++) tg_metric_inc(TG_METRIC_QUOTA_CHECKS);
  tg_metric_add(TG_METRIC_TOKENS_LIVE, (uint64_t)-5); /* gauge delta -5 */
  return NULL;
}

static void test_metric_adds_from_exited_threads_are_kept(void **state) {
  (void)state;
  tg_metric_values a, b;
  tg_metrics_snapshot(&a);
  pthread_t th[4];
  for (int i = 0; i < 4; i++) assert_int_equal(pthread_create(&th[i], NULL, adder, NULL), 0);
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  tg_metrics_snapshot(&b);
  assert_int_equal(b.v[TG_METRIC_QUOTA_CHECKS] - a.v[TG_METRIC_QUOTA_CHECKS], 400000);
  assert_int_equal((int64_t)(b.v[TG_METRIC_TOKENS_LIVE] - a.v[TG_METRIC_TOKENS_LIVE]), -20);
}

static void collect(void *arg, tg_metric_values *out) {
  out->v[TG_METRIC_TOKENS_CREATED] += *(uint64_t *)arg;
  out->v[TG_METRIC_CONNECTIONS_LIVE] += 7;
}

static void test_collector_values_are_added_until_removed(void **state) {
  (void)state;
  uint64_t created = 123456789;
  double before = metric_value("tokengraph_tokens_created_total");
  assert_int_equal(tg_metrics_add_collector(collect, &created), 0);
  assert_int_equal(tg_metrics_add_collector(collect, &created), 0); /* two stores */
  assert_true(metric_value("tokengraph_tokens_created_total") == before + 2 * 123456789.0);
  assert_int_equal(tg_metrics_remove_collector(collect, &created), 0);
  assert_true(metric_value("tokengraph_tokens_created_total") == before + 123456789.0);
  assert_int_equal(tg_metrics_remove_collector(collect, &created), 0);
  assert_int_equal(tg_metrics_remove_collector(collect, &created), TG_ENOTFOUND);
  assert_true(metric_value("tokengraph_tokens_created_total") == before);
  assert_int_equal(tg_metrics_add_collector(NULL, NULL), TG_EINVAL);
}

static int fsyncs, fail_fsync;

static int counting_fsync(int fd) {
  fsyncs++;
  if (fail_fsync) {
    errno = EIO;
    return -1;
  }
  return fsync(fd);
}

static void test_metrics_file_is_replaced_atomically_with_fsyncs(void **state) {
  (void)state;
  char path[512], tmp[600];
  tmp_path(path, sizeof path, "tokengraph.prom");
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  tg__io.fsync = counting_fsync;

  fsyncs = 0;
  fail_fsync = 0;
  assert_int_equal(tg_metrics_write_file(path), 0);
  assert_int_equal(fsyncs, 2); /* the file, then its directory */
  assert_int_equal(access(tmp, F_OK), -1);
  size_t len = 0;
  char *text = read_file(path, &len);
  assert_non_null(text);
  text = realloc(text, len + 1);
  text[len] = '\0';
  assert_true(check_exposition(text, NULL, NULL) > 0);
  free(text);

  /* A failed fsync leaves the previous file in place and no temporary. */
  struct stat st1, st2;
  assert_int_equal(stat(path, &st1), 0);
  fail_fsync = 1;
  assert_int_equal(tg_metrics_write_file(path), -EIO);
  assert_int_equal(stat(path, &st2), 0);
  assert_int_equal(st1.st_ino, st2.st_ino);
  assert_int_equal(access(tmp, F_OK), -1);
  tg__io_reset();

  assert_int_equal(tg_metrics_write_file("/nonexistent-dir/x.prom"), -ENOENT);
}

static void test_trace_counters_appear_in_metrics(void **state) {
  (void)state;
  tg_trace_stats st;
  tg_trace_stats_get(&st);
  tg_metric_values v;
  tg_metrics_snapshot(&v);
  assert_true(v.v[TG_METRIC_TRACE_SPANS_SAMPLED] >= st.sampled);
  assert_true(v.v[TG_METRIC_TRACE_SPANS_DROPPED] >= st.dropped);
}

static int setup(void **state) {
  (void)state;
  return tgp_mkdtemp(tmpdir, sizeof tmpdir, NULL, "tg-test-trace") ? -1 : 0;
}

static int teardown(void **state) {
  (void)state;
  return tgp_rmtree(tmpdir) ? -1 : 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_json_parser_rejects_what_it_should),
    cmocka_unit_test(test_children_follow_the_sampling_decision_of_their_root),
    cmocka_unit_test(test_rate_zero_samples_nothing_and_rate_one_samples_everything),
    cmocka_unit_test(test_one_percent_rate_samples_one_percent_of_roots),
    cmocka_unit_test(test_rate_outside_zero_to_one_is_rejected),
    cmocka_unit_test(test_chrome_trace_export_is_valid_json_with_nested_spans),
    cmocka_unit_test(test_chrome_trace_stays_valid_after_a_ring_wrapped),
    cmocka_unit_test(test_export_while_threads_trace_gives_valid_json),
    cmocka_unit_test(test_blackbox_dump_lists_events_in_order),
    cmocka_unit_test(test_blackbox_ring_wraps_keeping_the_newest),
    cmocka_unit_test(test_blackbox_dump_during_concurrent_recording_parses),
    cmocka_unit_test(test_fatal_segv_in_a_child_leaves_a_parseable_dump),
    cmocka_unit_test(test_abort_in_a_child_leaves_a_parseable_dump),
    cmocka_unit_test(test_handlers_install_once_and_restore_at_the_last_remove),
    cmocka_unit_test(test_close_keeps_a_handler_the_program_installed_later),
    cmocka_unit_test(test_each_open_store_gets_its_crash_dump),
    cmocka_unit_test(test_bb_open_and_close_record_the_counts_and_level),
    cmocka_unit_test(test_bb_recovery_records_checkpoint_segments_and_replay),
    cmocka_unit_test(test_bb_checkpoint_and_segment_switches_name_the_segments),
    cmocka_unit_test(test_bb_quota_rejections_record_what_the_call_would_reach),
    cmocka_unit_test(test_bb_eviction_records_the_pass),
    cmocka_unit_test(test_bb_failed_write_is_a_write_failure_with_its_errno),
    cmocka_unit_test(test_bb_failed_fdatasync_is_told_apart_from_a_failed_write),
    cmocka_unit_test(test_bb_backpressure_records_the_blocked_appends),
    cmocka_unit_test(test_observability_doc_lists_the_schema),
    cmocka_unit_test(test_blackbox_dump_replaces_planted_links_without_following_them),
    cmocka_unit_test(test_crash_dump_replaces_planted_links_without_following_them),
    cmocka_unit_test(test_crash_path_needs_a_directory_and_a_name),
    cmocka_unit_test(test_metrics_exposition_is_well_formed_line_by_line),
    cmocka_unit_test(test_metric_adds_from_exited_threads_are_kept),
    cmocka_unit_test(test_collector_values_are_added_until_removed),
    cmocka_unit_test(test_metrics_file_is_replaced_atomically_with_fsyncs),
    cmocka_unit_test(test_trace_counters_appear_in_metrics),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
