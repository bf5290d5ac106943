/*
 * tg-stress at level replicated (stress/configs/replicated.ini, reduced):
 * against a private nats-server every replicated phase runs and passes
 * its checks, and with no server at the URL those phases are skipped with
 * an explicit line while the run still succeeds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nats_server.h"
#include "util.h"

#ifndef TG_STRESS_BIN
#error "TG_STRESS_BIN must name the tg-stress executable"
#endif

/* replicated.ini's form ([wal] level = replicated names the level of the
   durable phases) with counts small enough for a test: a create at
   REPLICATED waits for the server's acknowledgement. */
static const char small_replicated[] =
    "[wal]\n"
    "level = replicated\n"
    "[stress]\n"
    "phases = baseline, full-stack, crash, quota-exhaustion, backpressure\n"
    "repl_name = tgtest\n"
    "tokens = 20000\n"
    "rounds = 1\n"
    "wal_tokens = 3000\n"
    "crash_ops = 1000\n"
    "quota_tokens = 500\n"
    "quota_overflow = 10\n"
    "backpressure_ops = 1000\n";

static tgt_run_out run_small(const char *url) {
  char ini[256];
  snprintf(ini, sizeof ini, "%s/replicated-small.ini", tgt_root);
  tgt_write_file(ini, small_replicated);
  const char *args[] = {"--config", ini, "--nats-url", url, NULL};
  return tgt_run(TG_STRESS_BIN, args, NULL, tgt_root);
}

static void test_stress_replicated_without_a_server_skips_those_phases_and_succeeds(void **state) {
  (void)state;
  /* Port 1 on loopback: nothing listens there (it is privileged). */
  tgt_run_out r = run_small("nats://127.0.0.1:1");
  if (r.status != 0)
    fail_msg("tg-stress exited %d\nstdout:\n%s\nstderr:\n%s", r.status, r.out, r.err);
  assert_non_null(strstr(r.out, "\nskipped: replicated phases: "));
  assert_non_null(strstr(r.err, "tg-stress: skipped: replicated phases: "));
  /* The phases that keep no stream ran; none at replicated did. */
  assert_non_null(strstr(r.out, "ok   baseline: every create succeeds"));
  assert_null(strstr(r.out, "@replicated"));
  assert_non_null(strstr(r.out, "result: ok"));
  tgt_run_free(&r);
  /* The machine-readable outputs say it too. */
  char ini[256], jl[256];
  snprintf(ini, sizeof ini, "%s/replicated-small.ini", tgt_root);
  snprintf(jl, sizeof jl, "%s/report.jsonl", tgt_root);
  const char *args[] = {"--config", ini, "--nats-url", "nats://127.0.0.1:1", "--json",
                        "--report", jl, NULL};
  r = tgt_run(TG_STRESS_BIN, args, NULL, tgt_root);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "\"skipped\": \"replicated phases: "));
  assert_non_null(strstr(r.out, "\"ok\": true}"));
  tgt_run_free(&r);
  char *report = tgt_read_file(jl, NULL);
  assert_non_null(strstr(report, "{\"type\": \"result\", \"ok\": true, \"skipped\": \"replicated phases: "));
  free(report);
}

static void test_stress_replicated_against_a_server_runs_every_durable_phase(void **state) {
  (void)state;
  if (!tgn_server_available(NULL, 0)) skip();
#ifdef TG_SANITIZE_THREAD
  /* tg-stress's crash phase forks its child from a process that already
     runs libnats's threads, and TSan refuses new threads in such a child
     (die_after_fork). Replication runs under TSan in test_repl_ship and
     test_replica; this test runs in the Release and ASan builds. */
  skip();
#endif
  tgn_server srv;
  memset(&srv, 0, sizeof srv);
  assert_int_equal(tgn_server_start(&srv, 1), 0);
  tgt_run_out r = run_small(srv.url);
  tgn_server_stop(&srv);
#ifndef TG_HAVE_NATS
  /* A build without libnats skips them even with a server there. */
  assert_non_null(strstr(r.out, "skipped: replicated phases: this build has no libnats"));
  tgt_run_free(&r);
  skip();
#endif
  if (r.status != 0)
    fail_msg("tg-stress exited %d\nstdout:\n%s\nstderr:\n%s", r.status, r.out, r.err);
  assert_null(strstr(r.out, "skipped:"));
  const char *want[] = {
      "ok   full stack (every token): all logged",
      "ok   replay: every token back",
      "ok   crash@replicated: no acknowledged op lost",
      "ok   crash@replicated: recovered state is a prefix",
      "ok   quota@replicated: rejected creates log nothing",
      "ok   backpressure nonblocking@replicated: nothing lost",
      "ok   backpressure blocking@replicated: nothing lost",
      "full-stack-every-token@replicated",
      "result: ok",
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    if (!strstr(r.out, want[i])) fail_msg("no '%s' in:\n%s", want[i], r.out);
  tgt_run_free(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    TGT_TEST(test_stress_replicated_without_a_server_skips_those_phases_and_succeeds),
    TGT_TEST(test_stress_replicated_against_a_server_runs_every_durable_phase),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
