/*
 * Helpers the tests share: a scratch directory (and the cmocka fixture that
 * gives each test its own), waiting on observable state with a deadline,
 * reading a pipe with a deadline, a forked child that reports through a
 * pipe, threads started together, small file helpers, stores (opening one,
 * its statistics, connections and edge lists), the damage the data
 * directory tests do to segments and checkpoints, copies of a closed data
 * directory, a store's whole state read through the API (to compare two
 * stores), and running a program with its output captured. Include after <cmocka.h>: a helper that cannot
 * do its job fails the running test. Tests see src/ on their include path;
 * the helpers use the I/O seam (common/io.h) and the CRC
 * (common/crc32.h) from there.
 *
 * Every wait has a deadline, TGT_PATIENCE_NS, so that a bug makes a test
 * fail with a message instead of hanging the suite. It is not a time limit
 * on what is measured: each wait is for something that happens within
 * milliseconds when the code is right, and the patience is generous enough
 * for a loaded machine and a sanitizer build.
 */
#ifndef TG_TESTS_UTIL_H
#define TG_TESTS_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/io.h"
#include "tg_progutil.h"
#include "tokengraph/tokengraph.h"
#include "common/crc32.h"

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

/* The shared fixture: each test gets a fresh scratch directory, tgt_root,
   named after the test program, with tgt_data and tgt_wal the paths a data
   directory and its log would have inside it (neither is created). The
   teardown puts the I/O seam back to the system calls before removing the
   directory, so a test that injected faults cannot leak them into the
   next one. List such tests with TGT_TEST(fn). */
static char tgt_root[128] __attribute__((unused)); /* the scratch directory */
static char tgt_data[192] __attribute__((unused)); /* tgt_root/data */
static char tgt_wal[256] __attribute__((unused));  /* tgt_data/wal */

static inline int tgt_setup(void **state) {
  (void)state;
  tgt_mkdtemp(tgt_root, sizeof tgt_root, program_invocation_short_name);
  snprintf(tgt_data, sizeof tgt_data, "%s/data", tgt_root);
  snprintf(tgt_wal, sizeof tgt_wal, "%s/wal", tgt_data);
  return 0;
}

static inline int tgt_teardown(void **state) {
  (void)state;
  tg__io_reset();
  tgt_rmtree(tgt_root);
  return 0;
}

#define TGT_TEST(fn) cmocka_unit_test_setup_teardown(fn, tgt_setup, tgt_teardown)

/* ---- waiting ----------------------------------------------------------------- */

/* The scheduler state of thread tid of this process ('R' running, 'S'
   sleeping, ...), from /proc/self/task/TID/stat, or 0 when it is gone. */
static inline char tgt_thread_state(int tid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  return p && p[1] == ' ' ? p[2] : 0;
}

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

/* A forked child that reports to its parent through a pipe. */
typedef struct tgt_child {
  pid_t pid; /* the child's pid in the parent, 0 in the child */
  int fd;    /* the parent's read end, or the child's write end */
} tgt_child;

static inline tgt_child tgt_fork_piped(void) {
  int p[2];
  assert_int_equal(pipe(p), 0);
  fflush(NULL);
  tgt_child c;
  c.pid = fork();
  assert_true(c.pid >= 0);
  close(p[c.pid == 0 ? 0 : 1]);
  c.fd = p[c.pid == 0 ? 1 : 0];
  return c;
}

/* Run fn on each of the n arguments at args (stride bytes apart), each in
   its own thread started together, and wait for all of them. */
static inline void tgt_run_threads(int n, void *(*fn)(void *), void *args, size_t stride) {
  pthread_t th[64];
  assert_true(n > 0 && n <= 64);
  for (int i = 0; i < n; i++)
    assert_int_equal(pthread_create(&th[i], NULL, fn, (char *)args + (size_t)i * stride), 0);
  for (int i = 0; i < n; i++) assert_int_equal(pthread_join(th[i], NULL), 0);
}

/* ---- files ---------------------------------------------------------------- */

/* The whole of an existing file (malloc'd, with a NUL after its *len
   bytes); a file that cannot be read fails the test. */
static inline char *tgt_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) fail_msg("cannot read %s: %s", path, strerror(errno));
  assert_int_equal(fseek(f, 0, SEEK_END), 0);
  long n = ftell(f);
  assert_true(n >= 0);
  rewind(f);
  char *b = malloc((size_t)n + 1);
  assert_non_null(b);
  assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  b[n] = 0;
  if (len) *len = (size_t)n;
  return b;
}

/* The whole file as a NUL-terminated string (malloc'd); "" if it is
   missing. */
static inline char *tgt_slurp(const char *path) {
  struct stat st;
  if (stat(path, &st) != 0) {
    char *e = strdup("");
    assert_non_null(e);
    return e;
  }
  return tgt_read_file(path, NULL);
}

/* The size of an existing file. */
static inline uint64_t tgt_file_size(const char *path) {
  struct stat st;
  if (stat(path, &st) != 0) fail_msg("cannot stat %s: %s", path, strerror(errno));
  return (uint64_t)st.st_size;
}

/* Create or replace path with text. */
static inline void tgt_write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (!f) fail_msg("cannot write %s: %s", path, strerror(errno));
  fputs(text, f);
  assert_int_equal(fclose(f), 0);
}

/* ---- stores ---------------------------------------------------------------- */

/* Open the store in dir (NULL: in memory) with cfg (NULL: the defaults);
   an open that fails fails the test with the store's message. */
static inline tg_store *tgt_open(const char *dir, const tg_store_config *cfg) {
  tg_store *s = NULL;
  char msg[512] = "";
  int rc = tg_store_open_msg(&s, dir, cfg, msg, sizeof msg);
  if (rc) fail_msg("open %s: %s: %s", dir ? dir : "(memory)", tg_err_name(rc), msg);
  return s;
}

/* A store whose log soon spans several segments, for tests that damage
   or count them: 64 KiB segments (818 token records, 80-byte frames, in
   each), RELAXED, a checkpoint only when the test asks for one, no crash
   dump handlers. */
#define TGT_SEG_BYTES 65536u /* the small segment size */
#define TGT_FRAME 80u        /* a 64-byte payload makes an 80-byte frame */

static inline tg_store_config tgt_small_log_config(void) {
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.wal.level = TG_RELAXED;
  cfg.wal.segment_bytes = TGT_SEG_BYTES;
  cfg.checkpoint_bytes = 0;
  cfg.wal.ring_slots = 1024;
  cfg.crash_dump = 0;
  return cfg;
}

/* Open the store in tgt_data with tgt_small_log_config(). */
static inline tg_store *tgt_open_small_log(void) {
  tg_store_config cfg = tgt_small_log_config();
  return tgt_open(tgt_data, &cfg);
}

/* Make connection *c (its from, to, type and payload), asserting that the
   store accepts it; returns the new id. */
static inline uint32_t tgt_connect(tg_store *s, const tg_connection *c) {
  uint32_t id = 0;
  assert_int_equal(tg_connect(s, c, &id), 0);
  assert_int_not_equal(id, 0);
  return id;
}

/* The ids of the connections tg_token_edges() visits, in its order. */
typedef struct tgt_edges {
  uint32_t ids[256];
  int n;
} tgt_edges;

/* A tg_edge_cb that appends to the tgt_edges at arg. */
static inline int tgt_edges_add(void *arg, const tg_connection *c) {
  tgt_edges *e = arg;
  assert_true(e->n < (int)(sizeof e->ids / sizeof e->ids[0]));
  e->ids[e->n++] = c->id;
  return 0;
}

/* The edges of token id in direction dir (TG_OUT, TG_IN or TG_BOTH). */
static inline tgt_edges tgt_edges_of(tg_store *s, uint32_t id, int dir) {
  tgt_edges e;
  memset(&e, 0, sizeof e);
  assert_int_equal(tg_token_edges(s, id, dir, tgt_edges_add, &e), 0);
  return e;
}

/* The store's statistics now. */
static inline tg_store_stats tgt_stats(tg_store *s) {
  tg_store_stats st;
  assert_int_equal(tg_store_stats_get(s, &st), 0);
  return st;
}

/* The path of the log segment that begins at LSN first in tgt_wal, with
   suffix ("" or ".broken") after ".wal". */
static inline void tgt_seg_path(char *buf, size_t len, uint64_t first, const char *suffix) {
  snprintf(buf, len, "%s/%020llu.wal%s", tgt_wal, (unsigned long long)first, suffix);
}

/* A file's bytes as they were at one moment, to put back later: what a
   copy of a data directory taken at that moment would hold. */
typedef struct tgt_saved {
  char path[320]; /* the file */
  char *bytes;    /* its content when saved (malloc'd) */
  size_t len;     /* and length */
} tgt_saved;

/* Save the log segment that begins at LSN first. */
static inline tgt_saved tgt_save_segment(uint64_t first) {
  tgt_saved v;
  tgt_seg_path(v.path, sizeof v.path, first, "");
  v.bytes = tgt_read_file(v.path, &v.len);
  return v;
}

/* Write the saved bytes back (creating the file if it is gone) and free
   them. */
static inline void tgt_restore(tgt_saved *v) {
  FILE *f = fopen(v->path, "wb");
  if (!f) fail_msg("cannot write %s: %s", v->path, strerror(errno));
  assert_int_equal(fwrite(v->bytes, 1, v->len, f), v->len);
  assert_int_equal(fclose(f), 0);
  free(v->bytes);
  v->bytes = NULL;
}

/* Make the header of the segment at path claim a segment of `bytes` bytes,
   with a CRC that matches: only the value is wrong. */
static inline void tgt_claim_segment_bytes(const char *path, uint64_t bytes) {
  unsigned char h[64];
  int fd = open(path, O_RDWR);
  if (fd < 0) fail_msg("cannot open %s: %s", path, strerror(errno));
  assert_int_equal(pread(fd, h, sizeof h, 0), (ssize_t)sizeof h);
  memcpy(h + 24, &bytes, 8);
  uint32_t crc = tg__crc32(0, h, 60);
  memcpy(h + 60, &crc, 4);
  assert_int_equal(pwrite(fd, h, sizeof h, 0), (ssize_t)sizeof h);
  close(fd);
}

/* Replace the checkpoint of the data directory dir with an LMDB environment
   that is someone else's: one unnamed database holding "hello" -> "world". */
static inline void tgt_foreign_checkpoint(const char *dir) {
  char cdir[320], p[400];
  snprintf(cdir, sizeof cdir, "%s/checkpoint", dir);
  snprintf(p, sizeof p, "%s/data.mdb", cdir);
  unlink(p);
  snprintf(p, sizeof p, "%s/lock.mdb", cdir);
  unlink(p);
  MDB_env *env = NULL;
  MDB_txn *txn = NULL;
  MDB_dbi dbi;
  assert_int_equal(mdb_env_create(&env), 0);
  assert_int_equal(mdb_env_open(env, cdir, 0, 0600), 0);
  assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
  MDB_val k = {5, "hello"}, v = {5, "world"};
  assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
  assert_int_equal(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

/* ---- copies of a data directory ---------------------------------------------- */

/* Bytes of DIR/checkpoint/data.mdb in use: up to the last page its newer
   meta page names; *psize gets the page size. A file too short for the
   two meta pages counts whole. */
static inline uint64_t tgt_checkpoint_used(const char *dir, uint32_t *psize) {
  char p[400];
  snprintf(p, sizeof p, "%s/checkpoint/data.mdb", dir);
  int fd = open(p, O_RDONLY);
  if (fd < 0) fail_msg("cannot open %s: %s", p, strerror(errno));
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  unsigned char m[2][160];
  uint32_t ps = 0;
  uint64_t used = (uint64_t)st.st_size;
  if (pread(fd, m[0], 160, 0) == 160) {
    memcpy(&ps, m[0] + 16 + 24, 4); /* the meta record's page size */
    if (ps >= 512 && ps <= 65536 && pread(fd, m[1], 160, ps) == 160) {
      uint64_t t0, t1, last;
      memcpy(&t0, m[0] + 16 + 128, 8); /* txnid */
      memcpy(&t1, m[1] + 16 + 128, 8);
      memcpy(&last, m[t1 > t0] + 16 + 120, 8); /* last page in use */
      if ((last + 1) * ps < used) used = (last + 1) * ps;
    }
  }
  close(fd);
  if (psize) *psize = ps;
  return used;
}

/* Copy file src to dst (created 0600): its first `limit` bytes, then
   extended to src's size, so a checkpoint's unused map copies as a hole. */
static inline void tgt_copy_file(const char *src, const char *dst, uint64_t limit) {
  int in = open(src, O_RDONLY), out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (in < 0 || out < 0) fail_msg("cannot copy %s to %s: %s", src, dst, strerror(errno));
  struct stat st;
  assert_int_equal(fstat(in, &st), 0);
  static char buf[1 << 16];
  uint64_t done = 0;
  while (done < limit) {
    ssize_t n = read(in, buf, sizeof buf);
    assert_true(n >= 0);
    if (n == 0) break;
    if ((uint64_t)n > limit - done) n = (ssize_t)(limit - done);
    assert_int_equal(write(out, buf, (size_t)n), n);
    done += (uint64_t)n;
  }
  assert_int_equal(ftruncate(out, st.st_size), 0);
  close(in);
  close(out);
}

/* Copy the closed data directory src to dst (which must not exist): what a
   copy of it holds that an open reads. The identity file, data.mdb (the
   pages in use; the rest a hole of the same size) and every file of wal/
   but the ring, which a cleanly closed store leaves to be ignored. */
static inline void tgt_copy_dir(const char *src, const char *dst) {
  char a[800], b[800];
  const char *sub[] = {"", "/checkpoint", "/wal"};
  for (int i = 0; i < 3; i++) {
    snprintf(b, sizeof b, "%s%s", dst, sub[i]);
    if (mkdir(b, 0700)) fail_msg("cannot create %s: %s", b, strerror(errno));
  }
  snprintf(a, sizeof a, "%s/TOKENGRAPH", src);
  snprintf(b, sizeof b, "%s/TOKENGRAPH", dst);
  tgt_copy_file(a, b, UINT64_MAX);
  snprintf(a, sizeof a, "%s/checkpoint/data.mdb", src);
  snprintf(b, sizeof b, "%s/checkpoint/data.mdb", dst);
  tgt_copy_file(a, b, tgt_checkpoint_used(src, NULL));
  snprintf(a, sizeof a, "%s/wal", src);
  DIR *d = opendir(a);
  if (!d) fail_msg("cannot list %s: %s", a, strerror(errno));
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.' || !strcmp(e->d_name, "ring")) continue;
    snprintf(a, sizeof a, "%s/wal/%s", src, e->d_name);
    snprintf(b, sizeof b, "%s/wal/%s", dst, e->d_name);
    tgt_copy_file(a, b, UINT64_MAX);
  }
  closedir(d);
}

/* ---- a store's whole state, read through the API ---------------------------- */

#define TGT_MODEL_IDS 4096u /* ids 1..this are read */

typedef struct tgt_model {
  uint64_t tokens, conns; /* live counts, from the statistics */
  unsigned char tok_live[TGT_MODEL_IDS + 1], conn_live[TGT_MODEL_IDS + 1];
  tg_token tok[TGT_MODEL_IDS + 1];
  tg_connection conn[TGT_MODEL_IDS + 1]; /* with their list links: the
                                             adjacency order */
} tgt_model;

/* Read every token and connection of s with an id up to TGT_MODEL_IDS.
   Plain C, no test assertion: safe in a forked child. */
static inline void tgt_read_model(tg_store *s, tgt_model *m) {
  memset(m, 0, sizeof *m);
  tg_store_stats st;
  memset(&st, 0, sizeof st);
  tg_store_stats_get(s, &st);
  m->tokens = st.live_tokens;
  m->conns = st.live_connections;
  for (uint32_t id = 1; id <= TGT_MODEL_IDS; id++) {
    m->tok_live[id] = tg_token_get(s, id, &m->tok[id]) == 0;
    m->conn_live[id] = tg_connection_get(s, id, &m->conn[id]) == 0;
  }
}

/* 0 when a and b hold the same tokens and connections; otherwise the id
   that differs (a token's as itself, a connection's as -id), or
   INT32_MIN for the counts. DIRTY says "changed since the last
   checkpoint", which a store rebuilt from the log has where one loaded
   from a checkpoint has not: it is not compared. */
static inline int64_t tgt_model_diff(const tgt_model *a, const tgt_model *b) {
  for (uint32_t id = 1; id <= TGT_MODEL_IDS; id++) {
    tg_token x = a->tok[id], y = b->tok[id];
    x.flags &= (uint16_t)~TG_TOKEN_DIRTY;
    y.flags &= (uint16_t)~TG_TOKEN_DIRTY;
    if (a->tok_live[id] != b->tok_live[id] || (a->tok_live[id] && memcmp(&x, &y, sizeof x)))
      return id;
    if (a->conn_live[id] != b->conn_live[id] ||
        (a->conn_live[id] && memcmp(&a->conn[id], &b->conn[id], sizeof a->conn[id])))
      return -(int64_t)id;
  }
  if (a->tokens != b->tokens || a->conns != b->conns) return INT32_MIN;
  return 0;
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
