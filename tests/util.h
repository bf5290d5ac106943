/*
 * Helpers the tests share: a scratch directory, waiting on observable state
 * with a deadline, reading a pipe with a deadline, running a program with
 * its output captured, and small file helpers. Include after <cmocka.h>:
 * a helper that cannot do its job fails the running test.
 *
 * Every wait has a deadline, TGT_PATIENCE_NS, so that a bug makes a test
 * fail with a message instead of hanging the suite. It is not a time limit
 * on what is measured: each wait is for something that happens within
 * milliseconds when the code is right, and the patience is generous enough
 * for a loaded machine and a sanitizer build.
 */
#ifndef TG_TESTS_UTIL_H
#define TG_TESTS_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tg_progutil.h"

#define TGT_PATIENCE_NS (120ull * 1000000000ull)

/* ---- scratch directories ------------------------------------------------ */

/* Make a fresh "$TMPDIR/<name>.XXXXXX" directory into buf. */
static inline void tgt_mkdtemp(char *buf, size_t len, const char *name) {
  int rc = tgp_mkdtemp(buf, len, NULL, name);
  if (rc) fail_msg("cannot create a scratch directory for %s: %s", name, strerror(-rc));
}

/* Remove a scratch directory and everything in it. */
static inline void tgt_rmtree(const char *path) {
  int rc = tgp_rmtree(path);
  if (rc) fail_msg("cannot remove %s: %s", path, strerror(-rc));
}

/* ---- waiting ----------------------------------------------------------------- */

/* Pause between two looks at a condition another thread or process will
   make true: short next to what is awaited, long enough not to starve it
   on two cores. */
static inline void tgt_pause(void) {
  struct timespec ts = {0, 1000000}; /* 1 ms */
  nanosleep(&ts, NULL);
}

/* Evaluate cond until it holds; fail the test, naming what, if it does not
   within TGT_PATIENCE_NS. */
#define TGT_WAIT_UNTIL(cond, what)                                             \
  do {                                                                         \
    uint64_t tgt_deadline_ = tgp_now_ns() + TGT_PATIENCE_NS;                   \
    while (!(cond)) {                                                          \
      if (tgp_now_ns() > tgt_deadline_)                                        \
        fail_msg("gave up waiting for %s (%s)", what, #cond);                  \
      tgt_pause();                                                             \
    }                                                                          \
  } while (0)

/* Read exactly n bytes from fd (a pipe). Returns 1 when they were read, 0
   when the pipe ended first (at a message boundary or not: *got says how
   much arrived). Fails the test on a read error or when nothing arrives
   within TGT_PATIENCE_NS. */
static inline int tgt_read_full(int fd, void *buf, size_t n, size_t *got) {
  size_t have = 0;
  uint64_t deadline = tgp_now_ns() + TGT_PATIENCE_NS;
  while (have < n) {
    uint64_t now = tgp_now_ns();
    if (now > deadline) fail_msg("gave up waiting for %zu bytes on a pipe", n - have);
    struct pollfd p = {fd, POLLIN, 0};
    int pr = poll(&p, 1, (int)((deadline - now) / 1000000u) + 1);
    if (pr < 0 && errno != EINTR) fail_msg("poll: %s", strerror(errno));
    if (pr <= 0) continue;
    ssize_t r = read(fd, (char *)buf + have, n - have);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail_msg("read: %s", strerror(errno));
    if (r == 0) break;
    have += (size_t)r;
  }
  if (got) *got = have;
  return have == n;
}

/* Wait for child pid to end and return its waitpid status; SIGKILL it and
   fail the test if it has not ended within TGT_PATIENCE_NS. */
static inline int tgt_wait_child(pid_t pid) {
  uint64_t deadline = tgp_now_ns() + TGT_PATIENCE_NS;
  int st = 0;
  for (;;) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) return st;
    if (r < 0 && errno != EINTR) fail_msg("waitpid: %s", strerror(errno));
    if (tgp_now_ns() > deadline) {
      kill(pid, SIGKILL);
      while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
      }
      fail_msg("child %d did not end; killed it", (int)pid);
    }
    tgt_pause();
  }
}

/* ---- files ---------------------------------------------------------------- */

/* The whole file as a NUL-terminated string (malloc'd); "" if it is
   missing. */
static inline char *tgt_slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    char *e = strdup("");
    assert_non_null(e);
    return e;
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  assert_true(n >= 0);
  char *b = malloc((size_t)n + 1);
  assert_non_null(b);
  size_t got = fread(b, 1, (size_t)n, f);
  b[got] = 0;
  fclose(f);
  return b;
}

/* Create or replace path with text. */
static inline void tgt_write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (!f) fail_msg("cannot write %s: %s", path, strerror(errno));
  fputs(text, f);
  assert_int_equal(fclose(f), 0);
}

/* ---- running a program ---------------------------------------------------- */

typedef struct tgt_run_out {
  int status; /* exit status, or 128 + signal */
  char *out;  /* stdout, NUL-terminated, malloc'd */
  char *err;  /* stderr */
} tgt_run_out;

/* Run bin with args (NULL-terminated, without argv[0]); its stdout and
   stderr go through files in scratch_dir. env_path, if not NULL, replaces
   PATH in the child. Fails the test if it cannot start or does not end
   within TGT_PATIENCE_NS. Free the result with tgt_run_free(). */
static inline tgt_run_out tgt_run(const char *bin, const char *const *args,
                                  const char *env_path, const char *scratch_dir) {
  char outp[4200], errp[4200];
  snprintf(outp, sizeof outp, "%s/stdout", scratch_dir);
  snprintf(errp, sizeof errp, "%s/stderr", scratch_dir);
  const char *argv[32];
  int n = 0;
  argv[n++] = bin;
  for (int i = 0; args[i]; i++) {
    assert_true(n < 31);
    argv[n++] = args[i];
  }
  argv[n] = NULL;
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int o = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int e = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (o < 0 || e < 0) _exit(126);
    dup2(o, 1);
    dup2(e, 2);
    if (env_path) setenv("PATH", env_path, 1);
    execv(bin, (char *const *)argv);
    _exit(127);
  }
  int st = tgt_wait_child(pid);
  tgt_run_out r;
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  if (r.status == 127) fail_msg("could not run %s", bin);
  r.out = tgt_slurp(outp);
  r.err = tgt_slurp(errp);
  return r;
}

static inline void tgt_run_free(tgt_run_out *r) {
  free(r->out);
  free(r->err);
}

#endif /* TG_TESTS_UTIL_H */
