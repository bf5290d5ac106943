/*
 * tg-stress crash recovery: a child process mutates a durable store at the
 * configured level and reports every acknowledged operation through a pipe;
 * the parent kills it with SIGKILL mid-run, reopens the directory and checks
 * the durability contract (docs/durability.md):
 *  - STRICT: every acknowledged operation is in the recovered state;
 *  - every level: the recovered state is a prefix of the operations in
 *    their order (operation k present implies every earlier one present).
 *
 * Operations are token creates (token i carries timestamp i + 1, so a
 * recovered token is matched to its operation) and, every 8th operation,
 * a connection from the previous token to the new one (activation_count =
 * the operation's sequence number). No operation deletes, so the recovered
 * state holds exactly P operations for some P: the check is that an
 * acknowledged operation is present exactly when its sequence number < P,
 * where P = live tokens + live connections.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "stress.h"

typedef struct ack {
  uint32_t seq;   /* operation number, from 0 */
  uint32_t kind;  /* 0 token, 1 connection */
  uint32_t id;    /* id the store returned */
  uint32_t arg;   /* token: its index i; connection: the `from` token id */
} ack;

/* The child: never returns. Acks are sent in batches (a pipe write per op
   would cost more than a BALANCED create); the parent only ever sees ops
   that were acknowledged, which is all the check needs. */
static void child_main(int fd, const char *dir, const tg_store_config *sc, uint64_t limit,
                       int strict) {
  tg_store *s = NULL;
  char msg[256];
  int rc = tg_store_open_msg(&s, dir, sc, msg, sizeof msg);
  if (rc) {
    fprintf(stderr, "tg-stress crash child: open: %s %s\n", tg_strerror(rc), msg);
    _exit(3);
  }
  enum { BATCH = 256 };
  ack buf[BATCH];
  size_t nb = 0, batch = strict ? 1 : BATCH;
  tg_token t;
  memset(&t, 0, sizeof t);
  uint32_t prev = 0;
  uint64_t i = 0;
  for (uint32_t seq = 0; seq < limit; seq++) {
    ack a = {seq, 0, 0, 0};
    if (seq % 8 == 7 && prev) {
      tg_connection cn;
      memset(&cn, 0, sizeof cn);
      cn.from = prev;
      cn.to = prev;
      cn.type = TG_CONN_TYPE(TG_CAT_CAUSAL, 1);
      cn.activation_count = seq;
      rc = tg_connect(s, &cn, &a.id);
      a.kind = 1;
      a.arg = prev;
    } else {
      ts_fill(&t, i);
      rc = tg_token_create(s, &t, &a.id);
      a.arg = (uint32_t)i++;
      prev = a.id;
    }
    if (rc) {
      fprintf(stderr, "tg-stress crash child: op %u: %s\n", seq, tg_strerror(rc));
      _exit(4);
    }
    buf[nb++] = a;
    if (nb == batch) {
      if (tgp_write_all(fd, buf, nb * sizeof *buf)) _exit(5);
      nb = 0;
    }
  }
  /* Not killed in time: leave without closing, like a crash. */
  if (nb) tgp_write_all(fd, buf, nb * sizeof *buf);
  _exit(0);
}

int ts_phase_crash(ts_run *r, int level) {
  const ts_config *c = r->cfg;
  uint64_t want = c->crash_ops;
  if (level == TG_STRICT && want > c->strict_ops) want = c->strict_ops;
  uint64_t limit = want * 4 + 1024; /* the child's own bound, far past the kill */
  char dir[4300];
  snprintf(dir, sizeof dir, "%s/stress-crash-%s", r->dir, ts_level_name(level));
  tgp_rmtree(dir);
  tg_store_config sc = r->cfg->store;
  sc.wal.level = level;
  sc.crash_dump = 0;
  ts_repl_cfg(r, &sc, level); /* the child and the reopen share the stream */
  ts_result *x = ts_result_add(r, "phase", "crash-recovery", level);
  ts_progress(r, "%s: child runs, killed after %llu acks", x->name, (unsigned long long)want);

  ack *acks = malloc((size_t)limit * sizeof *acks);
  if (!acks) exit(70);
  int fds[2];
  if (pipe(fds)) {
    ts_check_add(r, 0, "crash: pipe", "%s", strerror(errno));
    free(acks);
    return 1;
  }
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    ts_check_add(r, 0, "crash: fork", "%s", strerror(errno));
    close(fds[0]);
    close(fds[1]);
    free(acks);
    return 1;
  }
  if (pid == 0) {
    close(fds[0]);
    child_main(fds[1], dir, &sc, limit, level == TG_STRICT);
  }
  close(fds[1]);
  size_t got = 0, bytes = 0;
  int killed = 0;
  uint64_t t0 = tgp_now_ns(), tkill = 0;
  for (;;) {
    ssize_t n = read(fds[0], (char *)acks + bytes, (size_t)limit * sizeof *acks - bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    bytes += (size_t)n;
    got = bytes / sizeof *acks;
    if (!killed && got >= want) {
      kill(pid, SIGKILL);
      killed = 1;
      tkill = tgp_now_ns();
    }
  }
  close(fds[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  if (!killed) tkill = tgp_now_ns();
  int died_by_kill = WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
  if (!ts_check_add(r, killed && died_by_kill, "crash: child killed mid-run",
                    "%zu ops acknowledged, child %s", got,
                    died_by_kill ? "killed by SIGKILL"
                    : WIFEXITED(st) ? "exited before the kill (see its message)"
                                    : "died otherwise")) {
    free(acks);
    return 0;
  }

  /* Reopen: this is the recovery being measured. */
  tg_store *s = NULL;
  char msg[256] = "";
  uint64_t o0 = tgp_now_ns();
  int rc = tg_store_open_msg(&s, dir, &sc, msg, sizeof msg);
  uint64_t o1 = tgp_now_ns();
  if (rc) {
    ts_check_add(r, 0, "crash: reopen after SIGKILL", "%s %s", tg_strerror(rc), msg);
    free(acks);
    return 0;
  }
  tg_recovery_info ri;
  tg_store_stats stt;
  tg_store_recovery_info(s, &ri);
  tg_store_stats_get(s, &stt);
  uint64_t p = stt.live_tokens + stt.live_connections;
  uint64_t lost = 0, wrong = 0, beyond = 0;
  uint64_t first_bad = UINT64_MAX;
  for (size_t k = 0; k < got; k++) {
    const ack *a = &acks[k];
    int present = 0;
    if (a->kind == 0) {
      tg_token t;
      if (tg_token_get(s, a->id, &t) == 0) {
        present = 1;
        if (t.timestamp != a->arg + 1) wrong++;
      }
    } else {
      tg_connection cn;
      if (tg_connection_get(s, a->id, &cn) == 0) {
        present = 1;
        if (cn.activation_count != a->seq || cn.from != a->arg) wrong++;
      }
    }
    int expected = a->seq < p;
    if (present && !expected) beyond++;
    if (!present) lost++;
    if (present != expected && first_bad == UINT64_MAX) first_bad = a->seq;
  }
  tg_store_close(s);
  free(acks);

  x->ops = ri.replayed_records;
  if (ri.replay_ns) ts_keep_round(x, (double)ri.replay_ns / 1e9);
  snprintf(x->note, sizeof x->note,
           "killed after %zu acked ops (%.0f ms of child run); reopen %.1f ms: checkpoint "
           "%llu tokens, %llu records replayed in %.2f ms%s; recovered %llu ops, %llu acked "
           "ops lost",
           got, (double)(tkill - t0) / 1e6, (double)(o1 - o0) / 1e6,
           (unsigned long long)ri.checkpoint_tokens, (unsigned long long)ri.replayed_records,
           (double)ri.replay_ns / 1e6, ri.torn_tail ? ", torn tail cut" : "",
           (unsigned long long)p, (unsigned long long)lost);
  char what[96];
  /* A process crash loses nothing acknowledged at any level: a published
     record outlives the process in the WAL's ring file (docs/durability.md). */
  snprintf(what, sizeof what, "crash@%s: no acknowledged op lost", ts_level_name(level));
  ts_check_add(r, lost == 0, what, "%zu acked, %llu lost, %llu recovered", got,
               (unsigned long long)lost, (unsigned long long)p);
  snprintf(what, sizeof what, "crash@%s: recovered state is a prefix", ts_level_name(level));
  if (first_bad == UINT64_MAX)
    ts_check_add(r, wrong == 0 && beyond == 0, what,
                 "%llu ops recovered, content of every present op matches", (unsigned long long)p);
  else
    ts_check_add(r, 0, what, "op %llu is %s although %llu ops were recovered; %llu wrong",
                 (unsigned long long)first_bad, first_bad < p ? "missing" : "present",
                 (unsigned long long)p, (unsigned long long)wrong);
  return 0;
}
