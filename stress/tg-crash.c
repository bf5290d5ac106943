/*
 * tg-crash: kill -9 a process that mutates a durable tg_store, at random
 * moments, and prove that recovery gives exactly what the durability
 * contract (docs/durability.md) promises.
 *
 * How one iteration works
 * -----------------------
 * The parent holds a model of the store: every live token (64 bytes) and
 * connection (64 bytes, links aside), the LSN at which each connection was
 * made (adjacency lists are newest first, so that gives the expected list
 * order), and the LSN of the last record the model contains. At the start
 * of an iteration the model equals the data directory, which the parent has
 * just closed cleanly (so it is all durable).
 *
 * The parent forks. The child inherits the model (fork copies it), opens
 * the directory at the iteration's level and checks that the recovered
 * last_lsn equals the model's. It then runs a deterministic pseudo-random
 * mix of creates, updates, deletes, connects and disconnects (seeded by
 * --seed and the iteration number), chosen from the model it keeps up to
 * date, so every call is one the store must accept. For every call it sends
 * two fixed-size messages through a pipe (each < PIPE_BUF, so atomic):
 *
 *   INTENT  before the call: the op, its full arguments, and the LSN the
 *           call must get (previous + 1: each successful mutating call is
 *           exactly one WAL record and the child is the only writer);
 *   ACK     after the call returned 0 and tg_store_stats_get() confirmed
 *           last_lsn == that LSN: the id the store assigned.
 *
 * Reporting the intent first is what makes the model exact: the child is
 * single-threaded, so at any moment at most one call is in flight, and the
 * parent knows the arguments of every call that can possibly be in the log.
 * A call killed after its record reached the log but before its ACK was
 * written leaves an INTENT without ACK; if the recovered log contains that
 * LSN the parent applies it too. For a create or connect its id is then
 * unknown; the parent finds it as the one id the recovered store has and
 * the model does not, and the comparison below checks its contents.
 *
 * With --batches P, about P% of the calls are atomic batches
 * (tg_batch_commit()) of 1 to 8 entries chosen the same way, each from the
 * model as the entries before it leave it (a connect to a token the batch
 * creates, a delete of one it connected, ...). Batch ids are known at the
 * calls, so the child sends one BOP message per entry (op, arguments, id)
 * before the batch's INTENT (op "batch", the entry count); a batch is one
 * record, one LSN. The parent applies every entry of a batch whose LSN
 * the log holds and none of one it does not, so the comparison below sees
 * any part of a batch recovered without the rest.
 *
 * The child also reports SYNCED(lsn) after tg_sync() and CKPT_BEGIN /
 * CKPT_END(lsn) around explicit tg_checkpoint() calls (a checkpoint makes
 * everything it covers durable). Automatic checkpoints run too (small
 * checkpoint_bytes) and small segments make segment switches frequent, so
 * kills land in both.
 *
 * The parent SIGKILLs the child at a random moment: after a random number
 * of ACKs, after a random delay (log-uniform, 1 us .. 50 ms) from READY,
 * shortly after the n-th CKPT_BEGIN, after a random delay from fork (kills
 * during open), or once the child is idle. After the kill it reads the pipe
 * to EOF (messages written before death are all there), then opens the
 * directory and checks, with R the recovered last_lsn:
 *
 *   - R >= the LSN the iteration started from, and R >= every SYNCED /
 *     CKPT_END LSN (durable at every level);
 *   - STRICT: R >= the LSN of the last ACK (every acknowledged call);
 *   - R <= the LSN of the last INTENT (nothing that was never called);
 *   - the recovered state equals the model after applying exactly the
 *     INTENTs with LSN <= R, in LSN order: every token (all 64 bytes except
 *     the DIRTY flag), every connection (all but the four link fields), the
 *     order of every token's outgoing and incoming list (tg_token_edges),
 *     and the live counts. A partial record, a reordering, a lost record
 *     inside the prefix or a record from nowhere all show up here;
 *   - closing and opening again gives the same R, no torn tail, and the
 *     same state.
 * The next iteration continues on the same directory, so state, segments
 * and checkpoints accumulate and later recoveries start from a checkpoint
 * plus a log.
 *
 * --recovery-kills N kills the process while it recovers: first a few kills
 * while a fresh directory is created, then a directory with a log of
 * --recovery-records records (default 200,000) and no checkpoint is opened
 * N times and killed at a random moment of tg_store_open() (the last
 * quarter also run a tg_checkpoint() of the whole state after the open, so
 * kills land in that big LMDB transaction too). After every kill the
 * directory must open to exactly the full state.
 *
 * --threads T (T >= 2) runs T threads in each killed child, on shared
 * tokens and connections; the protocol and the checks for that mode are
 * described at "threaded children" below.
 *
 * Exit status: 0 when every check held, 1 on the first failed check (the
 * message names the iteration, seed, level and what differed; the
 * directory is kept), 64 on a usage error.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tg_progutil.h"
#include "tokengraph/tokengraph.h"

/* ---- options ------------------------------------------------------------ */

typedef struct options {
  const char *dir;             /* NULL: a temp dir removed at the end */
  long iterations;             /* kills of a mutating child */
  int level;                   /* -1: rotate through all three */
  uint64_t seed;
  long ops_per_child;          /* upper bound on calls per child */
  long batches;                /* percent of calls that are batches */
  long recovery_kills;         /* kills during recovery */
  long recovery_records;       /* size of the log recovery is killed in */
  uint64_t segment_bytes;
  uint64_t checkpoint_bytes;
  int json;
  int verbose;
  int threads;                 /* threads per killed child (kill phase) */
} options;

static const char *level_name(int level) {
  return level == TG_STRICT ? "strict" : level == TG_BALANCED ? "balanced" : "relaxed";
}

/* ---- small helpers ------------------------------------------------------ */

/* splitmix64: the seed of an iteration; xorshift-style step for draws. */
static uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

typedef struct rng {
  uint64_t s;
} rng;

static uint64_t rnd(rng *r) {
  r->s += 0x9E3779B97F4A7C15ull;
  return mix64(r->s);
}

static uint64_t rnd_below(rng *r, uint64_t n) { return n ? rnd(r) % n : 0; }

static double rnd_unit(rng *r) { return (double)(rnd(r) >> 11) / 9007199254740992.0; }

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);
  if (!p) {
    fprintf(stderr, "tg-crash: out of memory\n");
    exit(1);
  }
  return p;
}

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) {
    fprintf(stderr, "tg-crash: out of memory\n");
    exit(1);
  }
  return q;
}

/* ---- the model ---------------------------------------------------------- */

typedef struct model {
  uint32_t tcap, ccap;   /* array sizes (ids 0..cap-1) */
  tg_token *tok;         /* by id */
  uint32_t *tpos;        /* by id: index in tids + 1, 0 = not live */
  uint32_t *tids;        /* live token ids, dense */
  uint32_t ntok;
  uint32_t tmax;         /* highest token id ever live */
  tg_connection *conn;   /* by id, links zero */
  uint64_t *cborn;       /* by id: when it was made, LSN x 1024 + its entry
                            in a batch (list order: newest first) */
  uint32_t *cpos, *cids; /* as for tokens */
  uint32_t nconn;
  uint32_t cmax;
  uint64_t lsn;          /* the last record the model contains */
} model;

static void model_free(model *m) {
  free(m->tok);
  free(m->tpos);
  free(m->tids);
  free(m->conn);
  free(m->cborn);
  free(m->cpos);
  free(m->cids);
  memset(m, 0, sizeof *m);
}

static void grow_zero(void **p, size_t old, size_t nw, size_t size) {
  *p = xrealloc(*p, nw * size);
  memset((char *)*p + old * size, 0, (nw - old) * size);
}

/* Grow the n arrays indexed by one kind of id (array i has elements of
   size[i] bytes), and *cap with them, so that they hold id: capacities
   double from 1024, new elements are zero. */
static void reserve(uint32_t *cap, uint32_t id, void **const arrays[], const size_t size[],
                    int n) {
  if (id < *cap) return;
  uint32_t nc = *cap ? *cap : 1024;
  while (nc <= id) nc *= 2;
  for (int i = 0; i < n; i++) grow_zero(arrays[i], *cap, nc, size[i]);
  *cap = nc;
}

static void model_reserve_tok(model *m, uint32_t id) {
  void **const a[] = {(void **)&m->tok, (void **)&m->tpos, (void **)&m->tids};
  const size_t size[] = {sizeof *m->tok, sizeof *m->tpos, sizeof *m->tids};
  reserve(&m->tcap, id, a, size, 3);
}

static void model_reserve_conn(model *m, uint32_t id) {
  void **const a[] = {(void **)&m->conn, (void **)&m->cborn, (void **)&m->cpos,
                      (void **)&m->cids};
  const size_t size[] = {sizeof *m->conn, sizeof *m->cborn, sizeof *m->cpos, sizeof *m->cids};
  reserve(&m->ccap, id, a, size, 4);
}

static int tok_live(const model *m, uint32_t id) { return id && id < m->tcap && m->tpos[id]; }
static int conn_live(const model *m, uint32_t id) { return id && id < m->ccap && m->cpos[id]; }

static void model_drop_conn(model *m, uint32_t id) {
  uint32_t i = m->cpos[id] - 1, last = m->cids[--m->nconn];
  m->cids[i] = last;
  m->cpos[last] = i + 1;
  m->cpos[id] = 0;
  memset(&m->conn[id], 0, sizeof m->conn[id]);
  m->cborn[id] = 0;
}

enum op_kind {
  OP_CREATE = 1, OP_UPDATE, OP_DELETE, OP_CONNECT, OP_DISCONNECT, OP_BATCH,
  OP_CUPDATE /* tg_connection_update(): threaded children only */
};
static const char *op_name(int op) {
  static const char *names[] = {"?", "create", "update", "delete", "connect", "disconnect",
                                "batch", "connection-update"};
  return op >= 1 && op <= 7 ? names[op] : "?";
}
#define MAX_BATCH 8 /* entries of one batch */

/* The token image the store keeps for a create or update of *t. */
static tg_token stored_token(const tg_token *t, uint32_t id) {
  tg_token x = *t;
  x.id = id;
  x.flags = (uint16_t)((x.flags & ~TG_TOKEN_DIRTY) | TG_TOKEN_ACTIVE);
  return x;
}

static tg_connection stored_conn(const tg_connection *c, uint32_t id) {
  tg_connection x = *c;
  x.id = id;
  x.next_out = x.prev_out = x.next_in = x.prev_in = 0;
  x.reserved0 = 0;
  x.reserved1 = 0;
  x.reserved2 = 0;
  return x;
}

/* Endpoints of every connection the parent has seen (ids are not reused):
   a refused disconnect is explained by a delete of either endpoint. */
typedef struct th_pconn {
  uint32_t id, from, to;
} th_pconn;

static struct {
  uint32_t cap;
  th_pconn *c;
} g_endp;

static void endp_note(uint32_t id, uint32_t from, uint32_t to) {
  if (id >= g_endp.cap) {
    uint32_t nc = g_endp.cap ? g_endp.cap : 1024;
    while (nc <= id) nc *= 2;
    g_endp.c = xrealloc(g_endp.c, nc * sizeof *g_endp.c);
    memset(g_endp.c + g_endp.cap, 0, (nc - g_endp.cap) * sizeof *g_endp.c);
    g_endp.cap = nc;
  }
  g_endp.c[id] = (th_pconn){id, from, to};
}

/* Apply one logged call (the record with LSN lsn; entry `sub` of a batch,
   else 0) to the model. */
static void model_apply(model *m, int op, const void *arg, uint32_t id, uint64_t lsn,
                        unsigned sub) {
  switch (op) {
  case OP_CREATE:
  case OP_UPDATE:
    model_reserve_tok(m, id);
    if (op == OP_CREATE) {
      m->tids[m->ntok++] = id;
      m->tpos[id] = m->ntok;
      if (id > m->tmax) m->tmax = id;
    }
    m->tok[id] = stored_token(arg, id);
    break;
  case OP_DELETE: {
    for (uint32_t i = 0; i < m->nconn;) {
      uint32_t c = m->cids[i];
      if (m->conn[c].from == id || m->conn[c].to == id)
        model_drop_conn(m, c); /* moves the last one into slot i */
      else
        i++;
    }
    uint32_t i = m->tpos[id] - 1, last = m->tids[--m->ntok];
    m->tids[i] = last;
    m->tpos[last] = i + 1;
    m->tpos[id] = 0;
    memset(&m->tok[id], 0, sizeof m->tok[id]);
    break;
  }
  case OP_CONNECT:
    model_reserve_conn(m, id);
    m->cids[m->nconn++] = id;
    m->cpos[id] = m->nconn;
    if (id > m->cmax) m->cmax = id;
    m->conn[id] = stored_conn(arg, id);
    m->cborn[id] = lsn * 1024u + sub;
    endp_note(id, m->conn[id].from, m->conn[id].to);
    break;
  case OP_DISCONNECT:
    model_drop_conn(m, id);
    break;
  case OP_CUPDATE: {
    /* The fields tg_connection_update() takes; the rest stay. */
    const tg_connection *c = arg;
    tg_connection *x = &m->conn[id];
    x->flags = c->flags;
    x->weight = c->weight;
    x->pull_strength = c->pull_strength;
    x->activation_count = c->activation_count;
    x->last_activated = c->last_activated;
    x->confidence = c->confidence;
    break;
  }
  }
  m->lsn = lsn;
}

/* ---- the pipe protocol -------------------------------------------------- */

enum msg_kind {
  M_READY = 1,  /* lsn: last_lsn after open */
  M_INTENT,     /* op, lsn it must get, id (update/delete/disconnect), u */
  M_ACK,        /* lsn, id assigned */
  M_SYNCED,     /* lsn: tg_sync() returned, everything <= lsn is durable */
  M_CKPT_BEGIN, /* about to call tg_checkpoint() */
  M_CKPT_END,   /* lsn: the checkpoint returned, covering <= lsn */
  M_DONE,       /* no more calls; the child waits to be killed */
  M_BOP,        /* an entry of the batch whose INTENT follows: op, id, u */
  M_FAIL        /* text: the child saw something wrong; it exits 3 */
};

typedef struct msg {
  uint8_t kind;
  uint8_t op;
  uint16_t pad;
  uint32_t id;
  uint64_t lsn;
  uint64_t t_ns; /* ACK: the child's CLOCK_MONOTONIC when the call returned */
  union {
    tg_token t;
    tg_connection c;
    char text[120];
  } u;
} msg;
_Static_assert(sizeof(msg) <= 512, "pipe messages must be atomic (PIPE_BUF)");

/* ---- the child ---------------------------------------------------------- */

typedef struct child_plan {
  int level;
  long ops;            /* calls to make */
  int checkpoints;     /* explicit tg_checkpoint()/tg_sync() between calls */
  int after_open_ckpt; /* recovery kills: checkpoint everything after open */
  uint64_t seed;
  uint32_t target_tokens, target_conns; /* population the mix steers to */
  int batches;         /* percent of calls that are batches (default 0) */
} child_plan;

static void store_config(tg_store_config *cfg, const options *o, int level, int auto_ckpt) {
  tg_store_config_init(cfg);
  cfg->wal.level = level;
  cfg->wal.segment_bytes = o->segment_bytes;
  cfg->checkpoint_bytes = auto_ckpt ? o->checkpoint_bytes : 0;
}

static int child_fd = -1;

static void child_send(msg *mg) {
  if (tgp_write_all(child_fd, mg, sizeof *mg)) _exit(4);
}

__attribute__((format(printf, 1, 2), noreturn))
static void child_fail(const char *fmt, ...) {
  msg mg;
  memset(&mg, 0, sizeof mg);
  mg.kind = M_FAIL;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(mg.u.text, sizeof mg.u.text, fmt, ap);
  va_end(ap);
  child_send(&mg);
  _exit(3);
}

/* A message that carries only its kind and an LSN. */
static void child_note(int kind, uint64_t lsn) {
  msg mg;
  memset(&mg, 0, sizeof mg);
  mg.kind = (uint8_t)kind;
  mg.lsn = lsn;
  child_send(&mg);
}

/* An explicit checkpoint, announced before (a kill may land inside it) and
   reported after with the LSN it covers. */
static void child_checkpoint(tg_store *s, uint64_t lsn) {
  child_note(M_CKPT_BEGIN, 0);
  int rc = tg_checkpoint(s);
  if (rc) child_fail("tg_checkpoint: %s", tg_err_name(rc));
  child_note(M_CKPT_END, lsn);
}

/* tg_sync(), then SYNCED: everything up to lsn is durable. */
static void child_sync(tg_store *s, uint64_t lsn) {
  int rc = tg_sync(s);
  if (rc) child_fail("tg_sync: %s", tg_err_name(rc));
  child_note(M_SYNCED, lsn);
}

static void random_token(rng *r, tg_token *t) {
  for (int i = 0; i < TG_SPACES; i++)
    for (int j = 0; j < 3; j++) t->coord[i][j] = (int16_t)rnd(r);
  t->flags = (uint16_t)rnd(r); /* the store sets ACTIVE and owns DIRTY */
  t->field_radius = (uint8_t)rnd(r);
  t->field_strength = (uint8_t)rnd(r);
  t->weight = (float)(rnd_unit(r) * 100.0);
  t->timestamp = (uint32_t)rnd(r);
}

static void random_conn(rng *r, tg_connection *c, uint32_t from, uint32_t to) {
  memset(c, 0, sizeof *c);
  c->from = from;
  c->to = to;
  c->type = (uint8_t)rnd_below(r, TG_CONN_TYPES);
  c->rigidity = (uint8_t)rnd(r);
  c->active_levels = (uint8_t)rnd(r);
  c->flags = (uint16_t)rnd(r);
  c->weight = (float)rnd_unit(r);
  c->pull_strength = (float)(rnd_unit(r) * 4.0 - 2.0);
  c->activation_count = (uint32_t)rnd(r);
  c->created = (uint32_t)rnd(r);
  c->last_activated = (uint32_t)rnd(r);
  c->confidence = (float)rnd_unit(r);
  /* Links the store owns: garbage in must not matter. */
  c->next_out = (uint32_t)rnd(r);
  c->prev_in = (uint32_t)rnd(r);
}

/* Choose the next call from the model: only calls the store must accept. */
static int choose_op(rng *r, const model *m, const child_plan *p, msg *mg) {
  unsigned w_create = 30, w_update = 25, w_delete = 10, w_connect = 25, w_disc = 10;
  if (m->ntok < 2) {
    w_update = w_delete = w_connect = 0;
  }
  if (m->ntok > p->target_tokens) {
    w_create = 5;
    w_delete = 25;
  }
  if (m->nconn > p->target_conns) {
    w_connect = 5;
    w_disc = 30;
  }
  if (m->nconn == 0) w_disc = 0;
  uint64_t x = rnd_below(r, w_create + w_update + w_delete + w_connect + w_disc);
  memset(&mg->u, 0, sizeof mg->u);
  mg->id = 0;
  if (x < w_create) {
    random_token(r, &mg->u.t);
    mg->u.t.id = (uint32_t)rnd(r); /* ignored: the store assigns it */
    return OP_CREATE;
  }
  x -= w_create;
  if (x < w_update) {
    uint32_t id = m->tids[rnd_below(r, m->ntok)];
    random_token(r, &mg->u.t);
    mg->u.t.id = id;
    mg->id = id;
    return OP_UPDATE;
  }
  x -= w_update;
  if (x < w_delete) {
    mg->id = m->tids[rnd_below(r, m->ntok)];
    return OP_DELETE;
  }
  x -= w_delete;
  if (x < w_connect) {
    uint32_t a = m->tids[rnd_below(r, m->ntok)];
    /* Some self-loops and repeated pairs: both are allowed. */
    uint32_t b = rnd_below(r, 20) == 0 ? a : m->tids[rnd_below(r, m->ntok)];
    random_conn(r, &mg->u.c, a, b);
    return OP_CONNECT;
  }
  mg->id = m->cids[rnd_below(r, m->nconn)];
  return OP_DISCONNECT;
}

/* One batch of 1..MAX_BATCH entries, each chosen from the model as the
   entries before it left it: BOP per entry, INTENT, the commit, ACK. */
static void child_batch(tg_store *s, rng *r, model *m, const child_plan *p, uint64_t lsn) {
  tg_batch *b = NULL;
  int rc = tg_batch_begin(s, &b);
  if (rc) child_fail("tg_batch_begin: %s", tg_err_name(rc));
  unsigned n = 1 + (unsigned)rnd_below(r, MAX_BATCH);
  msg mg;
  for (unsigned j = 0; j < n; j++) {
    memset(&mg, 0, sizeof mg);
    mg.kind = M_BOP;
    mg.op = (uint8_t)choose_op(r, m, p, &mg);
    mg.lsn = lsn + 1;
    uint32_t id = mg.id;
    switch (mg.op) {
    case OP_CREATE: rc = tg_batch_token_create(b, &mg.u.t, &id); break;
    case OP_UPDATE: rc = tg_batch_token_update(b, &mg.u.t); break;
    case OP_DELETE: rc = tg_batch_token_delete(b, id); break;
    case OP_CONNECT: rc = tg_batch_connect(b, &mg.u.c, &id); break;
    case OP_DISCONNECT: rc = tg_batch_disconnect(b, id); break;
    }
    if (rc) child_fail("batch %s: %s", op_name(mg.op), tg_err_name(rc));
    mg.id = id;
    /* The model moves now, so the next entry may name what this one made. */
    model_apply(m, mg.op, &mg.u, id, lsn + 1, j);
    child_send(&mg);
  }
  memset(&mg, 0, sizeof mg);
  mg.kind = M_INTENT;
  mg.op = OP_BATCH;
  mg.id = n;
  mg.lsn = lsn + 1;
  child_send(&mg);
  rc = tg_batch_commit(b);
  if (rc) child_fail("batch commit (LSN %" PRIu64 "): %s", lsn + 1, tg_err_name(rc));
  tg_store_stats st;
  tg_store_stats_get(s, &st);
  if (st.last_lsn != lsn + 1 || tg_last_lsn(s) != lsn + 1)
    child_fail("batch: last_lsn %" PRIu64 " / tg_last_lsn %" PRIu64 " after the commit, "
               "expected %" PRIu64 " (one record per batch)", st.last_lsn, tg_last_lsn(s),
               lsn + 1);
  mg.t_ns = tgp_now_ns();
  mg.kind = M_ACK;
  child_send(&mg);
}

__attribute__((noreturn))
static void child_main(int fd, const char *dir, const options *o, const child_plan *p,
                       model *m) {
  child_fd = fd;
  tg_store_config cfg;
  store_config(&cfg, o, p->level, p->checkpoints);
  tg_store *s = NULL;
  char why[256] = "";
  int rc = tg_store_open_msg(&s, dir, &cfg, why, sizeof why);
  if (rc) child_fail("open: %s: %s", tg_err_name(rc), why);
  tg_store_stats st;
  tg_store_stats_get(s, &st);
  child_note(M_READY, st.last_lsn);
  if (st.last_lsn != m->lsn)
    child_fail("open recovered last_lsn %" PRIu64 ", expected %" PRIu64, st.last_lsn, m->lsn);
  if (p->after_open_ckpt) child_checkpoint(s, m->lsn);
  rng r = {p->seed};
  uint64_t lsn = m->lsn;
  msg mg;
  for (long i = 0; i < p->ops; i++) {
    if (p->checkpoints && rnd_below(&r, 300) == 0)
      child_checkpoint(s, lsn);
    else if (p->checkpoints && rnd_below(&r, 200) == 0)
      child_sync(s, lsn);
    memset(&mg, 0, sizeof mg);
    if (p->batches && rnd_below(&r, 100) < (uint64_t)p->batches) {
      child_batch(s, &r, m, p, lsn);
      lsn++;
      continue;
    }
    mg.kind = M_INTENT;
    mg.op = (uint8_t)choose_op(&r, m, p, &mg);
    mg.lsn = lsn + 1;
    child_send(&mg);
    uint32_t id = mg.id;
    switch (mg.op) {
    case OP_CREATE: rc = tg_token_create(s, &mg.u.t, &id); break;
    case OP_UPDATE: rc = tg_token_update(s, &mg.u.t); break;
    case OP_DELETE: rc = tg_token_delete(s, id); break;
    case OP_CONNECT: rc = tg_connect(s, &mg.u.c, &id); break;
    case OP_DISCONNECT: rc = tg_disconnect(s, id); break;
    }
    if (rc) child_fail("%s (LSN %" PRIu64 "): %s", op_name(mg.op), lsn + 1, tg_err_name(rc));
    tg_store_stats_get(s, &st);
    if (st.last_lsn != lsn + 1)
      child_fail("%s: last_lsn %" PRIu64 " after the call, expected %" PRIu64
                 " (one record per call)", op_name(mg.op), st.last_lsn, lsn + 1);
    mg.t_ns = tgp_now_ns();
    lsn++;
    model_apply(m, mg.op, &mg.u, id, lsn, 0);
    mg.kind = M_ACK;
    mg.id = id;
    child_send(&mg);
  }
  /* The recovery-kill log: make it all durable before DONE. */
  if (p->ops && !p->checkpoints) child_sync(s, lsn);
  child_note(M_DONE, lsn);
  for (;;) pause();
}

/* ---- checking a recovered store against the model ----------------------- */

typedef struct failure {
  char text[2048];
  size_t len;
  int count;
} failure;

__attribute__((format(printf, 2, 3)))
static void fail_add(failure *f, const char *fmt, ...) {
  f->count++;
  if (f->count > 8 || f->len + 2 >= sizeof f->text) return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(f->text + f->len, sizeof f->text - f->len, fmt, ap);
  va_end(ap);
  if (n > 0) f->len += (size_t)n;
  if (f->len > sizeof f->text - 2) f->len = sizeof f->text - 2;
  f->text[f->len++] = '\n';
  f->text[f->len] = 0;
}

static void hex64(char *out, const void *p) {
  const unsigned char *b = p;
  for (int i = 0; i < 64; i++) sprintf(out + 2 * i, "%02x", b[i]);
}

typedef struct edge_walk {
  const uint32_t *want;
  uint32_t n, i;
  int bad;
} edge_walk;

static int edge_cb(void *arg, const tg_connection *c) {
  edge_walk *w = arg;
  if (w->i >= w->n || c->id != w->want[w->i]) {
    w->bad = 1;
    return 1;
  }
  w->i++;
  return 0;
}

typedef struct born_id {
  uint64_t born;
  uint32_t id;
} born_id;

static int cmp_newest_first(const void *a, const void *b) {
  const born_id *x = a, *y = b;
  return x->born < y->born ? 1 : x->born > y->born ? -1 : 0;
}

/* One id: whether the model has it (want), what the store said (rc), and
   both 64-byte images, compared when both have it. */
static void compare_one(failure *f, const char *what, const char *aside, uint32_t id,
                        int want, int rc, const void *model_img, const void *got_img) {
  if (!want) {
    if (rc == 0) fail_add(f, "%s %" PRIu32 ": recovered but not in the model", what, id);
    return;
  }
  if (rc) {
    fail_add(f, "%s %" PRIu32 ": in the model, missing after recovery (%s)", what, id,
             tg_err_name(rc));
    return;
  }
  if (memcmp(model_img, got_img, 64)) {
    char h1[129], h2[129];
    hex64(h1, model_img);
    hex64(h2, got_img);
    fail_add(f, "%s %" PRIu32 " differs%s:\n  model     %s\n  recovered %s", what, id, aside,
             h1, h2);
  }
}

/* Compare every token, connection, adjacency list and count. */
static void compare(tg_store *s, const model *m, failure *f) {
  tg_store_stats st;
  tg_store_stats_get(s, &st);
  if (st.live_tokens != m->ntok)
    fail_add(f, "live tokens: recovered %" PRIu64 ", model %" PRIu32, st.live_tokens, m->ntok);
  if (st.live_connections != m->nconn)
    fail_add(f, "live connections: recovered %" PRIu64 ", model %" PRIu32,
             st.live_connections, m->nconn);
  for (uint32_t id = 1; id <= m->tmax + 1; id++) {
    int want = tok_live(m, id); /* ids up to tmax + 1 may lie past the arrays */
    tg_token got, a;
    memset(&got, 0, sizeof got);
    memset(&a, 0, sizeof a);
    if (want) a = m->tok[id];
    int rc = tg_token_get(s, id, &got);
    a.flags &= (uint16_t)~TG_TOKEN_DIRTY;
    got.flags &= (uint16_t)~TG_TOKEN_DIRTY;
    compare_one(f, "token", "", id, want, rc, &a, &got);
  }
  for (uint32_t id = 1; id <= m->cmax + 1; id++) {
    int want = conn_live(m, id);
    tg_connection got, a;
    memset(&got, 0, sizeof got);
    memset(&a, 0, sizeof a);
    if (want) a = m->conn[id];
    int rc = tg_connection_get(s, id, &got);
    tg_connection b = stored_conn(&got, got.id);
    b.reserved0 = got.reserved0;
    b.reserved1 = got.reserved1;
    b.reserved2 = got.reserved2;
    compare_one(f, "connection", " (links aside)", id, want, rc, &a, &b);
  }
  /* Adjacency lists: newest first, as a run without a crash lists them. */
  uint32_t nt = m->tmax + 2;
  uint32_t *ocount = xcalloc(nt + 1, sizeof *ocount), *icount = xcalloc(nt + 1, sizeof *icount);
  born_id *order = xcalloc(m->nconn, sizeof *order);
  for (uint32_t i = 0; i < m->nconn; i++) {
    uint32_t c = m->cids[i];
    order[i].born = m->cborn[c];
    order[i].id = c;
    ocount[m->conn[c].from + 1]++;
    icount[m->conn[c].to + 1]++;
  }
  qsort(order, m->nconn, sizeof *order, cmp_newest_first);
  for (uint32_t i = 1; i <= nt; i++) {
    ocount[i] += ocount[i - 1];
    icount[i] += icount[i - 1];
  }
  uint32_t *olist = xcalloc(m->nconn, sizeof *olist), *ilist = xcalloc(m->nconn, sizeof *ilist);
  uint32_t *ofill = xcalloc(nt, sizeof *ofill), *ifill = xcalloc(nt, sizeof *ifill);
  for (uint32_t i = 0; i < m->nconn; i++) {
    const tg_connection *c = &m->conn[order[i].id];
    olist[ocount[c->from] + ofill[c->from]++] = order[i].id;
    ilist[icount[c->to] + ifill[c->to]++] = order[i].id;
  }
  for (uint32_t i = 0; i < m->ntok; i++) {
    uint32_t id = m->tids[i];
    for (int dir = 0; dir < 2; dir++) {
      const uint32_t *cnt = dir ? icount : ocount;
      edge_walk w = {(dir ? ilist : olist) + cnt[id], cnt[id + 1] - cnt[id], 0, 0};
      int rc = tg_token_edges(s, id, dir ? TG_IN : TG_OUT, edge_cb, &w);
      if (rc == 0 && w.i != w.n) w.bad = 1;
      if (w.bad || (rc && rc != 1))
        fail_add(f, "token %" PRIu32 ": %s list differs from the model (%" PRIu32
                 " expected, differs at position %" PRIu32 ")", id,
                 dir ? "incoming" : "outgoing", w.n, w.i);
    }
  }
  free(ocount);
  free(icount);
  free(order);
  free(olist);
  free(ilist);
  free(ofill);
  free(ifill);
}

/* ---- the parent side of an iteration ------------------------------------ */

enum kill_how {
  K_AFTER_ACKS, /* after the k-th ACK */
  K_DELAY,      /* a delay after READY */
  K_IN_CKPT,    /* a short delay after the n-th CKPT_BEGIN */
  K_OPEN,       /* a delay after fork: during open / recovery */
  K_IDLE,       /* after DONE */
  K_COUNT
};
/* Idle time before a K_IDLE kill: 3x the default sync_interval_ms, so even
   BALANCED's timer has fired; a writer that "writes continuously" has long
   written everything. */
#define IDLE_NS (30 * 1000000ull)
static const char *kill_name[] = {"after-acks", "delay", "in-checkpoint", "during-open", "idle"};

typedef struct intent {
  msg m;        /* the INTENT */
  size_t bop;   /* a batch: its first entry in watch.bops (m.id entries) */
  int acked;
  uint32_t id;  /* from the ACK */
  uint64_t t_ns; /* when the call returned (the child's clock) */
} intent;

typedef struct totals {
  long kills;
  long kills_by_level[3];
  long kills_by_how[K_COUNT];
  long ops_acked;           /* ACKs received */
  long acked_lost[3];       /* ACKed calls not recovered (BALANCED/RELAXED) */
  long acked_lost_max[3];   /* most lost by one kill */
  uint64_t lost_age_max[3]; /* oldest lost call: ns from its return to the kill */
  long unacked_recovered;   /* calls logged but killed before their ACK */
  long batches_recovered;   /* batches found whole in a recovered log */
  long torn_tails;
  long ckpt_kills;          /* kills between a CKPT_BEGIN and its END */
  long before_ready;        /* kills before the open returned (in recovery) */
  long fails;
  uint64_t last_lsn;
} totals;

typedef struct iter_ctx {
  const options *o;
  const char *dir;
  long iter;
  uint64_t seed;
  int level;
  int how;
  const char *phase;
} iter_ctx;

__attribute__((format(printf, 2, 3)))
static void report_fail(const iter_ctx *c, const char *fmt, ...) {
  fprintf(stderr, "tg-crash: FAILED: %s iteration %ld, --seed %" PRIu64 " (iteration seed %"
          PRIx64 "), level %s, kill %s, dir %s:\n  ", c->phase, c->iter, c->o->seed, c->seed,
          level_name(c->level), kill_name[c->how], c->dir);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

static int open_store(const iter_ctx *c, tg_store **s, int level) {
  tg_store_config cfg;
  store_config(&cfg, c->o, level, 0); /* the check must not change the dir */
  char why[512] = "";
  int rc = tg_store_open_msg(s, c->dir, &cfg, why, sizeof why);
  if (rc) report_fail(c, "reopen after the kill failed: %s: %s", tg_err_name(rc), why);
  return rc;
}

/*
 * The parent's side of one iteration, in the order run_iteration() calls the
 * steps: start the child (start_child), read its messages and kill it at the
 * chosen moment (watch_child, with on_message and kill_due), reap it and make
 * sure our SIGKILL is what ended it (reap_child), then reopen the directory
 * twice and compare it with the model (check_recovery, with
 * check_first_reopen and apply_recovered).
 */

/* What the parent knows about the child of one iteration. */
typedef struct watch {
  pid_t pid;
  int fd;                  /* read end of the pipe */
  int how;                 /* enum kill_how */
  uint64_t delay_ns;       /* the kill delay `how` uses */
  long kill_acks;          /* K_AFTER_ACKS: kill after this many ACKs */
  long kill_ckpt;          /* K_IN_CKPT: kill a delay after this CKPT_BEGIN */
  uint64_t deadline;       /* kill at this time, UINT64_MAX: not yet known */
  intent *in;              /* every INTENT, in LSN order */
  size_t n, cap;
  msg *bops;               /* every batch entry (BOP), in order */
  size_t nb, capb;
  size_t pending;          /* BOPs not yet claimed by a batch's INTENT */
  uint64_t start_lsn;      /* the model's LSN when the child was forked */
  uint64_t durable;        /* highest LSN known durable (start, SYNCED, CKPT_END) */
  uint64_t last_acked;     /* LSN of the last ACK */
  long acks, ckpts;
  uint64_t kill_ns;        /* when the SIGKILL was sent */
  int ready, done, killed;
  int in_ckpt;             /* between CKPT_BEGIN and CKPT_END */
  int in_ckpt_at_kill;
  char child_msg[sizeof(((msg *)0)->u.text) + 1]; /* the child's M_FAIL text */
  _Atomic long *shm_acks;  /* threaded children: ACKs counted in shared memory */
} watch;

typedef struct th_shared th_shared;
static th_shared *g_th;
__attribute__((noreturn))
static void th_child_main(int fd, const char *dir, const options *o, const child_plan *p,
                          model *m, th_shared *sh);

/* Fork the child of plan p on a pipe. Returns 0, or 1 after a message. */
static int start_child(const iter_ctx *c, const child_plan *p, model *m, watch *w) {
  int fds[2];
  if (pipe(fds)) {
    perror("tg-crash: pipe");
    return 1;
  }
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    perror("tg-crash: fork");
    close(fds[0]);
    close(fds[1]);
    return 1;
  }
  if (pid == 0) {
    close(fds[0]);
    if (g_th) th_child_main(fds[1], c->dir, c->o, p, m, g_th);
    child_main(fds[1], c->dir, c->o, p, m);
  }
  close(fds[1]);
  w->pid = pid;
  w->fd = fds[0];
  return 0;
}

/* Has the moment to kill come? Messages move it: READY starts a K_DELAY
   countdown, the chosen CKPT_BEGIN a K_IN_CKPT one, DONE a K_IDLE one. */
static int kill_due(const watch *w) {
  long acks = w->shm_acks ? atomic_load_explicit(w->shm_acks, memory_order_relaxed) : w->acks;
  if (w->how == K_AFTER_ACKS && w->ready && acks >= w->kill_acks) return 1;
  /* The child ran out of calls before its kill moment: kill it idle. */
  if ((w->how == K_AFTER_ACKS || w->how == K_DELAY || w->how == K_IN_CKPT) && w->done)
    return 1;
  return tgp_now_ns() >= w->deadline;
}

/* Take one message into *w. Returns 0, or 1 after reporting a protocol
   error (the caller still reads the pipe to its end). */
static int on_message(const iter_ctx *c, watch *w, const msg *mg) {
  switch (mg->kind) {
  case M_READY:
    w->ready = 1;
    if (w->how == K_DELAY) w->deadline = tgp_now_ns() + w->delay_ns;
    return 0;
  case M_INTENT:
    if (mg->lsn != w->start_lsn + w->n + 1) {
      report_fail(c, "protocol: intent for LSN %" PRIu64 ", expected %" PRIu64, mg->lsn,
                  w->start_lsn + w->n + 1);
      return 1;
    }
    if (w->n == w->cap) {
      w->in = xrealloc(w->in, 2 * w->cap * sizeof *w->in);
      w->cap *= 2;
    }
    memset(&w->in[w->n], 0, sizeof w->in[w->n]);
    if ((mg->op == OP_BATCH) != (w->pending > 0) ||
        (mg->op == OP_BATCH && mg->id != w->pending)) {
      report_fail(c, "protocol: %s intent for LSN %" PRIu64 " after %zu batch entries",
                  op_name(mg->op), mg->lsn, w->pending);
      return 1;
    }
    w->in[w->n].bop = w->nb - w->pending;
    w->pending = 0;
    w->in[w->n++].m = *mg;
    return 0;
  case M_BOP:
    if (w->nb == w->capb) {
      w->capb = w->capb ? 2 * w->capb : 256;
      w->bops = xrealloc(w->bops, w->capb * sizeof *w->bops);
    }
    w->bops[w->nb++] = *mg;
    w->pending++;
    return 0;
  case M_ACK: {
    if (!w->n || mg->lsn != w->in[w->n - 1].m.lsn) {
      report_fail(c, "protocol: ack for LSN %" PRIu64 " without its intent", mg->lsn);
      return 1;
    }
    intent *it = &w->in[w->n - 1];
    it->acked = 1;
    it->id = mg->id;
    it->t_ns = mg->t_ns;
    w->last_acked = mg->lsn;
    w->acks++;
    return 0;
  }
  case M_SYNCED:
    if (mg->lsn > w->durable) w->durable = mg->lsn;
    return 0;
  case M_CKPT_BEGIN:
    w->in_ckpt = 1;
    if (w->how == K_IN_CKPT && ++w->ckpts == w->kill_ckpt)
      w->deadline = tgp_now_ns() + w->delay_ns;
    return 0;
  case M_CKPT_END:
    w->in_ckpt = 0;
    if (mg->lsn > w->durable) w->durable = mg->lsn;
    return 0;
  case M_DONE:
    w->done = 1;
    /* Idle for longer than the log writer may hold anything back: then a
       kill must lose nothing acknowledged, at any level. */
    if (w->how == K_IDLE) w->deadline = tgp_now_ns() + IDLE_NS;
    return 0;
  case M_FAIL:
    memcpy(w->child_msg, mg->u.text, sizeof mg->u.text);
    w->child_msg[sizeof mg->u.text] = 0;
    return 0;
  default:
    report_fail(c, "protocol: unknown message kind %u", mg->kind);
    return 1;
  }
}

/* Read the child's messages until the pipe ends, sending the SIGKILL when
   kill_due() says so. The pipe ends when the child is dead, and every
   message it wrote before is read. Returns 0, or 1 after a message. */
static int watch_child(const iter_ctx *c, watch *w) {
  char buf[sizeof(msg) * 64];
  size_t have = 0;
  int rc = 0;
  for (;;) {
    if (!w->killed && kill_due(w)) {
      w->kill_ns = tgp_now_ns();
      kill(w->pid, SIGKILL);
      w->killed = 1;
      w->in_ckpt_at_kill = w->in_ckpt;
    }
    /* Wake for the deadline while it is pending; once killed, the pipe's
       end is what ends the wait. */
    struct pollfd pfd = {w->fd, POLLIN, 0};
    struct timespec ts, *tsp = NULL;
    if (!w->killed && w->deadline != UINT64_MAX) {
      uint64_t t = tgp_now_ns(), left = w->deadline > t ? w->deadline - t : 0;
      ts.tv_sec = (time_t)(left / 1000000000u);
      ts.tv_nsec = (long)(left % 1000000000u);
      tsp = &ts;
    }
    /* Threaded children count their ACKs in shared memory, not in the
       pipe: look at the count every 50 us until it reaches the kill's. */
    if (!w->killed && w->shm_acks && w->how == K_AFTER_ACKS && w->ready &&
        (!tsp || ts.tv_sec > 0 || ts.tv_nsec > 50000)) {
      ts.tv_sec = 0;
      ts.tv_nsec = 50000;
      tsp = &ts;
    }
    int pr = ppoll(&pfd, 1, tsp, NULL);
    if (pr < 0 && errno != EINTR) {
      perror("tg-crash: poll");
      return 1;
    }
    if (pr <= 0) continue;
    ssize_t got = read(w->fd, buf + have, sizeof buf - have);
    if (got < 0) {
      if (errno == EINTR) continue;
      perror("tg-crash: read");
      return 1;
    }
    if (got == 0) {
      if (have) {
        report_fail(c, "the pipe ended inside a message (%zu bytes): messages must be atomic",
                    have);
        rc = 1;
      }
      return rc;
    }
    have += (size_t)got;
    size_t off = 0;
    for (; have - off >= sizeof(msg); off += sizeof(msg)) {
      msg mg;
      memcpy(&mg, buf + off, sizeof mg);
      rc |= on_message(c, w, &mg);
    }
    memmove(buf, buf + off, have - off);
    have -= off;
  }
}

/* Close the pipe and wait for the child; it must have died of our SIGKILL
   and reported nothing wrong. Returns 0, or 1 after a message. */
static int reap_child(const iter_ctx *c, watch *w) {
  close(w->fd);
  w->fd = -1;
  if (!w->killed) kill(w->pid, SIGKILL); /* the pipe broke early: make sure */
  int status = 0;
  while (waitpid(w->pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (w->child_msg[0]) {
    report_fail(c, "the child reported: %s", w->child_msg);
    return 1;
  }
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
    report_fail(c, "the child ended by itself (%s %d), not by our SIGKILL",
                WIFSIGNALED(status) ? "signal" : "exit status",
                WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    return 1;
  }
  return 0;
}

/* Apply to the model, in LSN order, every call the recovered log holds
   (LSN <= R), finding the id of a create or connect that was logged but
   killed before its ACK; then count the acknowledged calls that were lost. */
static void apply_recovered(const iter_ctx *c, tg_store *s, const watch *w, model *m,
                            uint64_t R, totals *tot, failure *f) {
  for (uint64_t l = w->start_lsn + 1; l <= R; l++) {
    const intent *it = &w->in[l - w->start_lsn - 1];
    if (it->m.op == OP_BATCH) {
      /* Logged, so all of it: the ids were known at the calls. */
      if (!it->acked) tot->unacked_recovered++;
      for (uint32_t j = 0; j < it->m.id; j++) {
        const msg *e = &w->bops[it->bop + j];
        model_apply(m, e->op, &e->u, e->id, l, j);
      }
      tot->batches_recovered++;
      continue;
    }
    int makes = it->m.op == OP_CREATE || it->m.op == OP_CONNECT;
    uint32_t id = makes ? it->id : it->m.id;
    if (!it->acked) tot->unacked_recovered++;
    if (!it->acked && makes) {
      /* Killed between the log and the ACK: the one new id the store has
         and the model does not is the one it got. */
      int tokk = it->m.op == OP_CREATE;
      uint32_t maxid = tokk ? m->tmax + 1 : m->cmax + 1, nfound = 0;
      for (uint32_t x = 1; x <= maxid; x++) {
        if (tokk ? tok_live(m, x) : conn_live(m, x)) continue;
        tg_token t;
        tg_connection cn;
        if ((tokk ? tg_token_get(s, x, &t) : tg_connection_get(s, x, &cn)) == 0) {
          id = x;
          nfound++;
        }
      }
      if (nfound != 1) {
        fail_add(f, "the unacknowledged %s at LSN %" PRIu64 " was recovered, but %" PRIu32
                 " new ids are present instead of 1", op_name(it->m.op), l, nfound);
        return;
      }
    }
    model_apply(m, it->m.op, &it->m.u, id, l, 0);
  }
  long lost = 0;
  for (size_t i = 0; i < w->n; i++)
    if (w->in[i].acked && w->in[i].m.lsn > R) {
      lost++;
      uint64_t age = w->kill_ns > w->in[i].t_ns ? w->kill_ns - w->in[i].t_ns : 0;
      if (age > tot->lost_age_max[c->level]) tot->lost_age_max[c->level] = age;
    }
  tot->acked_lost[c->level] += lost;
  if (lost > tot->acked_lost_max[c->level]) tot->acked_lost_max[c->level] = lost;
  m->lsn = R;
}

/* The first reopen after the kill recovered to R: check R against what the
   child reported (the durability contract's bounds), then bring the model
   to R. */
static void check_first_reopen(const iter_ctx *c, tg_store *s, const watch *w, model *m,
                               uint64_t R, totals *tot, failure *f) {
  uint64_t last_intent = w->start_lsn + w->n;
  if (R < w->durable)
    fail_add(f, "recovered last_lsn %" PRIu64 " < %" PRIu64 ", which was durable "
             "(start of the iteration, tg_sync or checkpoint)", R, w->durable);
  if (c->level == TG_STRICT && R < w->last_acked)
    fail_add(f, "STRICT: recovered last_lsn %" PRIu64 " < %" PRIu64
             ", the last acknowledged call (%s)", R, w->last_acked,
             op_name(w->in[w->last_acked - w->start_lsn - 1].m.op));
  if (w->how == K_IDLE && R != w->last_acked)
    fail_add(f, "killed after %d ms idle: recovered last_lsn %" PRIu64 ", but every call "
             "up to LSN %" PRIu64 " was acknowledged %d ms before; the log writer held "
             "%" PRIu64 " acknowledged record(s) back", (int)(IDLE_NS / 1000000), R,
             w->last_acked, (int)(IDLE_NS / 1000000), w->last_acked - R);
  if (R > last_intent)
    fail_add(f, "recovered last_lsn %" PRIu64 " > %" PRIu64 ", the last call made", R,
             last_intent);
  if (!f->count) apply_recovered(c, s, w, m, R, tot, f);
}

/* Open the directory twice: the first recovery gives R and brings the model
   to it, the second must find the same R, no torn tail, and the same state.
   Returns 0, or 1 after reporting what differed; *R_out is R. */
static int check_recovery(const iter_ctx *c, const watch *w, model *m, totals *tot,
                          uint64_t *R_out) {
  uint64_t R = 0;
  for (int round = 0; round < 2; round++) {
    tg_store *s = NULL;
    if (open_store(c, &s, c->level)) return 1;
    tg_recovery_info ri;
    tg_store_stats st;
    tg_store_recovery_info(s, &ri);
    tg_store_stats_get(s, &st);
    failure f;
    memset(&f, 0, sizeof f);
    if (ri.last_lsn != st.last_lsn)
      fail_add(&f, "recovery info last_lsn %" PRIu64 " but stats last_lsn %" PRIu64,
               ri.last_lsn, st.last_lsn);
    if (round == 0) {
      R = st.last_lsn;
      if (ri.torn_tail) tot->torn_tails++;
      check_first_reopen(c, s, w, m, R, tot, &f);
    } else {
      if (st.last_lsn != R)
        fail_add(&f, "second reopen: last_lsn %" PRIu64 ", first reopen %" PRIu64, st.last_lsn,
                 R);
      if (ri.torn_tail)
        fail_add(&f, "second reopen found a torn tail at segment %" PRIu64 " offset %" PRIu64
                 " (the first reopen should have cut it)", ri.torn_segment, ri.torn_offset);
    }
    if (!f.count) compare(s, m, &f);
    int crc = tg_store_close(s);
    if (crc) fail_add(&f, "close after recovery: %s", tg_err_name(crc));
    if (f.count) {
      report_fail(c, "%s reopen (recovered LSN %" PRIu64 ", %" PRIu64 " acked up to LSN %"
                  PRIu64 ", last call LSN %" PRIu64 ", %d problem(s)):\n%s",
                  round ? "second" : "first", R, (uint64_t)w->acks, w->last_acked,
                  w->start_lsn + w->n, f.count, f.text);
      return 1;
    }
  }
  *R_out = R;
  return 0;
}

/* ---- threaded children (--threads T) ------------------------------------ */

/*
 * With --threads T (T >= 2) each killed child runs T threads on one store
 * at once, and the model cannot be told each call before it is made: the
 * LSN a call gets depends on the race. So the protocol changes:
 *
 *  - Every thread keeps its own log of calls in memory shared with the
 *    parent (MAP_SHARED, inherited by the fork, so it outlives the kill):
 *    an entry is written whole (op, arguments, CLOCK_MONOTONIC before the
 *    call) and then published (release store of the count) before the
 *    call; after the call returns its outcome is added: the LSN
 *    (tg_last_lsn(): this thread's last mutation) and the id assigned, or
 *    the error. An entry without outcome is a call in flight at the kill:
 *    at most one per thread.
 *  - The threads share one pool of the tokens and connections they know
 *    to exist (those of the model at the fork, and what their calls made),
 *    and choose every argument from it: updates, deletes, connects and
 *    disconnects of objects another thread made, or is deleting. A call
 *    that loses such a race is refused with TG_ENOTFOUND, and that is the
 *    only refusal accepted (a batch's commit included); the parent checks
 *    that every refusal is explained by a removal of one of its objects
 *    that started before the refusal returned.
 *  - The pipe still carries READY, SYNCED / CKPT_BEGIN / CKPT_END (with
 *    the highest LSN acknowledged before the tg_sync() or tg_checkpoint()
 *    started, which it made durable), DONE and FAIL.
 *  - Once all threads are done, the child copies its in-memory state (every
 *    token, connection and adjacency list, read through the public API)
 *    into the shared memory before DONE. An idle kill then compares the
 *    recovered store with it: what the log replays is what the threads'
 *    memory held, list order included.
 *
 * After the kill the parent reopens the directory (R = last_lsn) and
 * checks:
 *  - every acknowledged LSN is unique and above the iteration's start; per
 *    thread they increase; and they respect real time: a call that
 *    returned before another started has the lower LSN;
 *  - R is at least every durable floor (SYNCED, CKPT_END); at STRICT at
 *    least every acknowledged LSN; after an idle kill exactly the last;
 *    at BALANCED and RELAXED an acknowledged call past R is counted as
 *    lost (and fails unless a call in flight explains the gap: see below);
 *  - each LSN up to R is an acknowledged call or a call in flight; the
 *    records still in the log (after the last checkpoint's cut) are read
 *    back (tg_wal_reader) and each must be exactly the call its thread
 *    acknowledged with that LSN, or a call in flight (which gives that
 *    call its LSN and id);
 *  - replaying those calls in LSN order on the model is a serial execution:
 *    every call applies (no update, delete or connect of a token that is
 *    not live, no connection to a deleted endpoint, no disconnect of one
 *    that is gone), and the resulting model equals the recovered store
 *    (tokens, connections, the order of every adjacency list, the counts);
 *  - tg_store_inspect() (what tg-replay verify runs) agrees: the log ends
 *    clean at R, every record applies, the same counts;
 *  - a second open gives the same R, no torn tail, and the same state.
 */

enum th_state { TE_INTENT = 1, TE_OK, TE_FAILED };

typedef union th_obj {
  tg_token t;
  tg_connection c;
} th_obj;

typedef struct th_entry {
  _Atomic uint8_t state; /* enum th_state */
  uint8_t op;
  uint8_t guess;  /* names an id another thread may be creating right now */
  uint8_t nb;     /* a batch: its entries */
  int32_t rc;     /* TE_FAILED: the error */
  uint32_t id;    /* the object named; a create or connect: the id it got */
  uint32_t bop;   /* a batch: its first entry in the thread's bops */
  uint64_t lsn;   /* TE_OK: tg_last_lsn() after the call */
  uint64_t t0;    /* CLOCK_MONOTONIC before the call */
  uint64_t t1;    /* ... and after it returned */
  th_obj u;
} th_entry;

typedef struct th_bop {
  uint32_t op;
  uint32_t id;
  th_obj u;
} th_bop;

typedef struct th_log {
  _Atomic uint32_t n; /* entries published */
  uint32_t nb;        /* batch entries written */
  th_entry *ent;
  th_bop *bops;
  char pad[40]; /* one cache line per thread */
} th_log;

/* A store's whole state as the public API shows it. */
typedef struct th_snap {
  uint32_t ntok, nconn, nlist, cap_tok, cap_conn;
  int overflow;
  tg_token *tok;       /* by increasing id, DIRTY cleared */
  tg_connection *conn; /* by increasing id, links and reserved fields zero */
  uint32_t *cnt;       /* per token: outgoing count, incoming count */
  uint32_t *list;      /* per token: outgoing ids, then incoming ids */
} th_snap;

struct th_shared {
  _Atomic long acks;          /* calls acknowledged, all threads */
  _Atomic uint64_t acked_max; /* highest LSN acknowledged */
  _Atomic int snap_done;      /* the child's snapshot below is whole */
  int threads;
  uint32_t cap;               /* entries per thread */
  th_log *logs;
  th_snap snap;
};

/* Snapshot capacity: far above the population the mix steers to. */
#define SNAP_TOKENS (1u << 15)
#define SNAP_CONNS (1u << 16)

static th_shared *th_shared_map(int threads, uint32_t cap) {
  size_t logs = (size_t)threads * sizeof(th_log);
  size_t ent = (size_t)threads * cap * sizeof(th_entry);
  size_t bops = (size_t)threads * cap * MAX_BATCH * sizeof(th_bop);
  size_t snap = SNAP_TOKENS * (sizeof(tg_token) + 2 * sizeof(uint32_t)) +
                SNAP_CONNS * (sizeof(tg_connection) + 2 * sizeof(uint32_t));
  size_t total = 64 + sizeof(th_shared) + logs + ent + bops + snap;
  char *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    perror("tg-crash: mmap");
    exit(1);
  }
  th_shared *sh = (th_shared *)p;
  char *q = p + ((sizeof *sh + 63) & ~(size_t)63);
  sh->threads = threads;
  sh->cap = cap;
  sh->logs = (th_log *)q;
  q += logs;
  for (int i = 0; i < threads; i++) {
    sh->logs[i].ent = (th_entry *)q;
    q += cap * sizeof(th_entry);
  }
  for (int i = 0; i < threads; i++) {
    sh->logs[i].bops = (th_bop *)q;
    q += (size_t)cap * MAX_BATCH * sizeof(th_bop);
  }
  th_snap *sn = &sh->snap;
  sn->cap_tok = SNAP_TOKENS;
  sn->cap_conn = SNAP_CONNS;
  sn->tok = (tg_token *)q;
  q += SNAP_TOKENS * sizeof(tg_token);
  sn->conn = (tg_connection *)q;
  q += SNAP_CONNS * sizeof(tg_connection);
  sn->cnt = (uint32_t *)q;
  q += 2 * SNAP_TOKENS * sizeof(uint32_t);
  sn->list = (uint32_t *)q;
  return sh;
}

/* Before each fork: no entries, no snapshot. */
static void th_shared_reset(th_shared *sh) {
  atomic_store_explicit(&sh->acks, 0, memory_order_relaxed);
  atomic_store_explicit(&sh->acked_max, 0, memory_order_relaxed);
  atomic_store_explicit(&sh->snap_done, 0, memory_order_relaxed);
  for (int i = 0; i < sh->threads; i++) {
    atomic_store_explicit(&sh->logs[i].n, 0, memory_order_relaxed);
    sh->logs[i].nb = 0;
  }
}

/* ---- snapshots ---- */

static int snap_tok_cb(void *arg, const tg_token *t) {
  th_snap *sn = arg;
  if (sn->ntok == sn->cap_tok) {
    sn->overflow = 1;
    return 1;
  }
  tg_token x = *t;
  x.flags &= (uint16_t)~TG_TOKEN_DIRTY;
  sn->tok[sn->ntok++] = x;
  return 0;
}

static int snap_conn_cb(void *arg, const tg_connection *c) {
  th_snap *sn = arg;
  if (sn->nconn == sn->cap_conn) {
    sn->overflow = 1;
    return 1;
  }
  sn->conn[sn->nconn++] = stored_conn(c, c->id);
  return 0;
}

static int snap_edge_cb(void *arg, const tg_connection *c) {
  th_snap *sn = arg;
  if (sn->nlist == 2 * sn->cap_conn) {
    sn->overflow = 1;
    return 1;
  }
  sn->list[sn->nlist++] = c->id;
  return 0;
}

/* Read the whole state of s (nothing else may change it meanwhile). */
static void snap_take(tg_store *s, th_snap *sn) {
  sn->ntok = sn->nconn = sn->nlist = 0;
  sn->overflow = 0;
  if (tg_token_scan(s, 0, snap_tok_cb, sn) < 0 || tg_connection_scan(s, 0, snap_conn_cb, sn) < 0)
    sn->overflow = 1;
  for (uint32_t i = 0; i < sn->ntok && !sn->overflow; i++)
    for (int d = 0; d < 2; d++) {
      uint32_t before = sn->nlist;
      int rc = tg_token_edges(s, sn->tok[i].id, d ? TG_IN : TG_OUT, snap_edge_cb, sn);
      if (rc) sn->overflow = 1;
      sn->cnt[2 * i + (uint32_t)d] = sn->nlist - before;
    }
}

static void snap_alloc(th_snap *sn) {
  sn->cap_tok = SNAP_TOKENS;
  sn->cap_conn = SNAP_CONNS;
  sn->tok = xcalloc(SNAP_TOKENS, sizeof *sn->tok);
  sn->conn = xcalloc(SNAP_CONNS, sizeof *sn->conn);
  sn->cnt = xcalloc(2 * SNAP_TOKENS, sizeof *sn->cnt);
  sn->list = xcalloc(2 * SNAP_CONNS, sizeof *sn->list);
}

static void snap_free(th_snap *sn) {
  free(sn->tok);
  free(sn->conn);
  free(sn->cnt);
  free(sn->list);
}

/* The child's memory (a) against the recovered store (b). */
static void snap_compare(const th_snap *a, const th_snap *b, failure *f) {
  if (a->overflow || b->overflow) {
    fail_add(f, "snapshot: more than %u tokens or %u connections (or a read failed)",
             SNAP_TOKENS, SNAP_CONNS);
    return;
  }
  uint32_t i = 0, j = 0, la = 0, lb = 0;
  while (i < a->ntok || j < b->ntok) {
    uint32_t ia = i < a->ntok ? a->tok[i].id : UINT32_MAX;
    uint32_t ib = j < b->ntok ? b->tok[j].id : UINT32_MAX;
    if (ia != ib) {
      fail_add(f, "token %" PRIu32 ": %s", ia < ib ? ia : ib,
               ia < ib ? "in the child's memory at the kill, not recovered"
                       : "recovered, not in the child's memory at the kill");
      if (ia < ib) la += a->cnt[2 * i] + a->cnt[2 * i + 1], i++;
      else lb += b->cnt[2 * j] + b->cnt[2 * j + 1], j++;
      continue;
    }
    char h1[129], h2[129];
    if (memcmp(&a->tok[i], &b->tok[j], sizeof(tg_token))) {
      hex64(h1, &a->tok[i]);
      hex64(h2, &b->tok[j]);
      fail_add(f, "token %" PRIu32 " differs from the child's memory:\n  memory    %s\n"
               "  recovered %s", ia, h1, h2);
    }
    for (int d = 0; d < 2; d++) {
      uint32_t na = a->cnt[2 * i + (uint32_t)d], nb = b->cnt[2 * j + (uint32_t)d];
      if (na != nb || memcmp(a->list + la, b->list + lb, (size_t)na * sizeof(uint32_t)))
        fail_add(f, "token %" PRIu32 ": %s list differs from the child's memory (%" PRIu32
                 " connections there, %" PRIu32 " recovered)", ia, d ? "incoming" : "outgoing",
                 na, nb);
      la += na;
      lb += nb;
    }
    i++;
    j++;
  }
  i = j = 0;
  while (i < a->nconn || j < b->nconn) {
    uint32_t ia = i < a->nconn ? a->conn[i].id : UINT32_MAX;
    uint32_t ib = j < b->nconn ? b->conn[j].id : UINT32_MAX;
    if (ia != ib) {
      fail_add(f, "connection %" PRIu32 ": %s", ia < ib ? ia : ib,
               ia < ib ? "in the child's memory at the kill, not recovered"
                       : "recovered, not in the child's memory at the kill");
      if (ia < ib) i++;
      else j++;
      continue;
    }
    if (memcmp(&a->conn[i], &b->conn[j], sizeof(tg_connection))) {
      char h1[129], h2[129];
      hex64(h1, &a->conn[i]);
      hex64(h2, &b->conn[j]);
      fail_add(f, "connection %" PRIu32 " differs from the child's memory (links aside):\n"
               "  memory    %s\n  recovered %s", ia, h1, h2);
    }
    i++;
    j++;
  }
}

/* ---- the child's threads ---- */


/* What the threads know to exist. A thread takes mu to choose and to
   record; never across a store call, so calls on shared objects race. */
typedef struct th_pool {
  pthread_mutex_t mu;
  _Atomic uint32_t last_made[64]; /* per thread: the id its last create got */
  uint32_t *tok;
  uint32_t ntok, tcap;
  th_pconn *conn;
  uint32_t nconn, ccap;
} th_pool;

static void pool_tok_add(uint32_t **tok, uint32_t *n, uint32_t *cap, uint32_t id) {
  if (*n == *cap) {
    *cap = *cap ? 2 * *cap : 256;
    *tok = xrealloc(*tok, *cap * sizeof **tok);
  }
  (*tok)[(*n)++] = id;
}

static void pool_conn_add(th_pconn **conn, uint32_t *n, uint32_t *cap, uint32_t id,
                          uint32_t from, uint32_t to) {
  if (*n == *cap) {
    *cap = *cap ? 2 * *cap : 256;
    *conn = xrealloc(*conn, *cap * sizeof **conn);
  }
  (*conn)[(*n)++] = (th_pconn){id, from, to};
}

static void pool_conn_del(th_pconn *conn, uint32_t *n, uint32_t id) {
  for (uint32_t i = 0; i < *n; i++)
    if (conn[i].id == id) {
      conn[i] = conn[--*n];
      return;
    }
}

/* A token goes, and every connection to or from it. */
static void pool_tok_del(uint32_t *tok, uint32_t *ntok, th_pconn *conn, uint32_t *nconn,
                         uint32_t id) {
  for (uint32_t i = 0; i < *ntok; i++)
    if (tok[i] == id) {
      tok[i] = tok[--*ntok];
      break;
    }
  for (uint32_t i = 0; i < *nconn;)
    if (conn[i].from == id || conn[i].to == id) conn[i] = conn[--*nconn];
    else i++;
}

typedef struct th_ctx {
  tg_store *s;
  th_pool *pool;
  th_shared *sh;
  th_log *log;
  long ops;
  int checkpoints, batches, index;
  uint32_t target_tokens, target_conns;
  uint64_t seed;
  uint64_t last_lsn; /* this thread's last acknowledged LSN */
} th_ctx;

/* An object of the pool: half the time one of the 16 added last (most
   likely just made by another thread, whose create may still be on its
   way into the log), so that calls on the same objects race. */
static uint32_t pick(rng *r, uint32_t n) {
  if (n > 16 && rnd_below(r, 2)) return n - 1 - (uint32_t)rnd_below(r, 16);
  return (uint32_t)rnd_below(r, n);
}

/* Choose a call among toks / conns (the pool, or a batch's own view),
   steered by the pool's population gt / gc. */
static int th_choose(rng *r, const th_ctx *x, const uint32_t *toks, uint32_t nt,
                     const th_pconn *conns, uint32_t nc, uint32_t gt, uint32_t gc, th_obj *u,
                     uint32_t *id) {
  unsigned w_create = 30, w_update = 20, w_delete = 10, w_connect = 25, w_disc = 10,
           w_cupd = 5;
  if (gt > x->target_tokens) {
    w_create = 5;
    w_delete = 25;
  }
  if (gc > x->target_conns) {
    w_connect = 5;
    w_disc = 30;
  }
  /* After the steering: a batch's own view may be smaller than the pool. */
  if (nt < 2) w_update = w_delete = w_connect = 0;
  if (nc == 0) w_disc = w_cupd = 0;
  uint64_t v = rnd_below(r, w_create + w_update + w_delete + w_connect + w_disc + w_cupd);
  memset(u, 0, sizeof *u);
  *id = 0;
  if (v < w_create) {
    random_token(r, &u->t);
    u->t.id = (uint32_t)rnd(r); /* ignored: the store assigns it */
    return OP_CREATE;
  }
  v -= w_create;
  if (v < w_update) {
    *id = toks[pick(r, nt)];
    random_token(r, &u->t);
    u->t.id = *id;
    return OP_UPDATE;
  }
  v -= w_update;
  if (v < w_delete) {
    *id = toks[pick(r, nt)];
    return OP_DELETE;
  }
  v -= w_delete;
  if (v < w_connect) {
    uint32_t a = toks[pick(r, nt)];
    uint32_t b = rnd_below(r, 20) == 0 ? a : toks[pick(r, nt)];
    random_conn(r, &u->c, a, b);
    return OP_CONNECT;
  }
  v -= w_connect;
  const th_pconn *pc = &conns[pick(r, nc)];
  *id = pc->id;
  if (v < w_disc) return OP_DISCONNECT;
  random_conn(r, &u->c, pc->from, pc->to);
  u->c.id = pc->id;
  return OP_CUPDATE;
}

/* Publish the intent of the thread's next call (before making it). */
static th_entry *th_intent(th_ctx *x, int op, uint32_t id, const th_obj *u, unsigned nb,
                           uint32_t bop) {
  uint32_t k = atomic_load_explicit(&x->log->n, memory_order_relaxed);
  if (k >= x->sh->cap) child_fail("thread %d: its call log is full (%u)", x->index, k);
  th_entry *e = &x->log->ent[k];
  e->op = (uint8_t)op;
  e->guess = 0;
  e->nb = (uint8_t)nb;
  e->rc = 0;
  e->id = id;
  e->bop = bop;
  e->lsn = 0;
  e->t1 = 0;
  if (u) e->u = *u;
  else memset(&e->u, 0, sizeof e->u);
  atomic_store_explicit(&e->state, TE_INTENT, memory_order_relaxed);
  e->t0 = tgp_now_ns();
  /* Release: whoever sees the count sees the entry whole (the parent
     reads it after the child's death; the order matters for a kill that
     lands between these stores). */
  atomic_store_explicit(&x->log->n, k + 1, memory_order_release);
  return e;
}

/* The call of e returned rc; ENOTFOUND is the only refusal a race explains. */
static void th_outcome(th_ctx *x, th_entry *e, int rc, uint32_t newid) {
  e->t1 = tgp_now_ns();
  if (rc) {
    if (rc != TG_ENOTFOUND || e->op == OP_CREATE)
      child_fail("thread %d: %s: %s", x->index, op_name(e->op), tg_err_name(rc));
    e->rc = rc;
    atomic_store_explicit(&e->state, TE_FAILED, memory_order_release);
    return;
  }
  uint64_t l = tg_last_lsn(x->s);
  if (l <= x->last_lsn)
    child_fail("thread %d: %s: tg_last_lsn %" PRIu64 " after the call, not above the "
               "thread's previous %" PRIu64, x->index, op_name(e->op), l, x->last_lsn);
  x->last_lsn = l;
  e->lsn = l;
  if (newid) e->id = newid;
  atomic_store_explicit(&e->state, TE_OK, memory_order_release);
  atomic_fetch_add_explicit(&x->sh->acks, 1, memory_order_relaxed);
  /* acq_rel: a thread that later reads the maximum as a durable floor
     reads it after this call's record was logged. */
  uint64_t cur = atomic_load_explicit(&x->sh->acked_max, memory_order_relaxed);
  while (cur < l && !atomic_compare_exchange_weak_explicit(&x->sh->acked_max, &cur, l,
                                                           memory_order_acq_rel,
                                                           memory_order_relaxed)) {
  }
}

/* A batch of 1..MAX_BATCH entries over a few tokens and connections of the
   pool, each entry chosen from what the entries before it leave, so that
   the batch itself never names what it removed: a refused commit is a
   race with another thread. */
static void th_batch(th_ctx *x, rng *r) {
  uint32_t toks[4 * MAX_BATCH], nt = 0, nc = 0, gt, gc;
  th_pconn conns[4 * MAX_BATCH];
  th_pool *p = x->pool;
  pthread_mutex_lock(&p->mu);
  gt = p->ntok;
  gc = p->nconn;
  for (int k = 0; k < 6 && p->ntok; k++) {
    uint32_t id = p->tok[rnd_below(r, p->ntok)], dup = 0;
    for (uint32_t i = 0; i < nt; i++) dup |= toks[i] == id;
    if (!dup) toks[nt++] = id;
  }
  for (int k = 0; k < 4 && p->nconn; k++) {
    th_pconn c = p->conn[rnd_below(r, p->nconn)];
    uint32_t dup = 0;
    for (uint32_t i = 0; i < nc; i++) dup |= conns[i].id == c.id;
    if (!dup) conns[nc++] = c;
  }
  pthread_mutex_unlock(&p->mu);

  tg_batch *b = NULL;
  int rc = tg_batch_begin(x->s, &b);
  if (rc) child_fail("thread %d: tg_batch_begin: %s", x->index, tg_err_name(rc));
  unsigned n = 1 + (unsigned)rnd_below(r, MAX_BATCH);
  uint32_t first = x->log->nb;
  if (first + n > x->sh->cap * MAX_BATCH) child_fail("thread %d: batch log full", x->index);
  for (unsigned j = 0; j < n; j++) {
    th_bop *e = &x->log->bops[first + j];
    uint32_t id = 0;
    int op = th_choose(r, x, toks, nt, conns, nc, gt, gc, &e->u, &id);
    switch (op) {
    case OP_CREATE: rc = tg_batch_token_create(b, &e->u.t, &id); break;
    case OP_UPDATE: rc = tg_batch_token_update(b, &e->u.t); break;
    case OP_DELETE: rc = tg_batch_token_delete(b, id); break;
    case OP_CONNECT: rc = tg_batch_connect(b, &e->u.c, &id); break;
    case OP_DISCONNECT: rc = tg_batch_disconnect(b, id); break;
    default: /* no connection update in a batch: choose a disconnect */
      op = OP_DISCONNECT;
      memset(&e->u, 0, sizeof e->u);
      rc = tg_batch_disconnect(b, id);
    }
    if (rc) child_fail("thread %d: batch %s: %s", x->index, op_name(op), tg_err_name(rc));
    e->op = (uint32_t)op;
    e->id = id;
    switch (op) { /* the batch's own view moves */
    case OP_CREATE:
      if (nt < 4 * MAX_BATCH) toks[nt++] = id;
      break;
    case OP_DELETE: pool_tok_del(toks, &nt, conns, &nc, id); break;
    case OP_CONNECT:
      if (nc < 4 * MAX_BATCH) conns[nc++] = (th_pconn){id, e->u.c.from, e->u.c.to};
      break;
    case OP_DISCONNECT: pool_conn_del(conns, &nc, id); break;
    }
  }
  x->log->nb = first + n;
  th_entry *e = th_intent(x, OP_BATCH, 0, NULL, n, first);
  rc = tg_batch_commit(b);
  th_outcome(x, e, rc, 0);
  if (rc) return;
  pthread_mutex_lock(&p->mu);
  for (unsigned j = 0; j < n; j++) {
    const th_bop *o = &x->log->bops[first + j];
    switch (o->op) {
    case OP_CREATE: pool_tok_add(&p->tok, &p->ntok, &p->tcap, o->id); break;
    case OP_DELETE: pool_tok_del(p->tok, &p->ntok, p->conn, &p->nconn, o->id); break;
    case OP_CONNECT:
      pool_conn_add(&p->conn, &p->nconn, &p->ccap, o->id, o->u.c.from, o->u.c.to);
      break;
    case OP_DISCONNECT: pool_conn_del(p->conn, &p->nconn, o->id); break;
    }
  }
  pthread_mutex_unlock(&p->mu);
}

static void *th_main(void *arg) {
  th_ctx *x = arg;
  th_pool *p = x->pool;
  rng r = {x->seed};
  for (long i = 0; i < x->ops; i++) {
    if (x->checkpoints && rnd_below(&r, 300) == 0) {
      /* Everything acknowledged before the call is covered by it. */
      uint64_t floor = atomic_load_explicit(&x->sh->acked_max, memory_order_acquire);
      child_note(M_CKPT_BEGIN, 0);
      int rc = tg_checkpoint(x->s);
      if (rc) child_fail("thread %d: tg_checkpoint: %s", x->index, tg_err_name(rc));
      child_note(M_CKPT_END, floor);
    } else if (x->checkpoints && rnd_below(&r, 200) == 0) {
      uint64_t floor = atomic_load_explicit(&x->sh->acked_max, memory_order_acquire);
      int rc = tg_sync(x->s);
      if (rc) child_fail("thread %d: tg_sync: %s", x->index, tg_err_name(rc));
      child_note(M_SYNCED, floor);
    }
    if (x->batches && rnd_below(&r, 100) < (uint64_t)x->batches) {
      th_batch(x, &r);
      continue;
    }
    th_obj u;
    uint32_t id = 0;
    pthread_mutex_lock(&p->mu);
    int op = th_choose(&r, x, p->tok, p->ntok, p->conn, p->nconn, p->ntok, p->nconn, &u, &id);
    pthread_mutex_unlock(&p->mu);
    /* One call in eight that names a token names, instead, the id another
       thread's next create will most likely get (its last one + 1): a
       token no thread knows yet, maybe being created at this moment, so
       a create's record must be in the log before anything another
       thread does to it. */
    uint32_t guess = 0;
    if ((op == OP_CONNECT || op == OP_UPDATE) && x->sh->threads > 1 && rnd_below(&r, 8) == 0) {
      int other = (x->index + 1 + (int)rnd_below(&r, (uint64_t)x->sh->threads - 1)) %
                  x->sh->threads;
      uint32_t last = atomic_load_explicit(&p->last_made[other], memory_order_relaxed);
      if (last) guess = last + 1;
    }
    if (guess && op == OP_UPDATE) id = u.t.id = guess;
    if (guess && op == OP_CONNECT) {
      if (rnd_below(&r, 2)) u.c.from = guess;
      else u.c.to = guess;
    }
    th_entry *e = th_intent(x, op, id, &u, 0, 0);
    e->guess = guess != 0;
    uint32_t nid = 0;
    int rc = 0;
    switch (op) {
    case OP_CREATE: rc = tg_token_create(x->s, &u.t, &nid); break;
    case OP_UPDATE: rc = tg_token_update(x->s, &u.t); break;
    case OP_DELETE: rc = tg_token_delete(x->s, id); break;
    case OP_CONNECT: rc = tg_connect(x->s, &u.c, &nid); break;
    case OP_DISCONNECT: rc = tg_disconnect(x->s, id); break;
    case OP_CUPDATE: rc = tg_connection_update(x->s, &u.c); break;
    }
    th_outcome(x, e, rc, nid);
    pthread_mutex_lock(&p->mu);
    switch (op) {
    case OP_CREATE:
      pool_tok_add(&p->tok, &p->ntok, &p->tcap, nid);
      atomic_store_explicit(&p->last_made[x->index], nid, memory_order_relaxed);
      break;
    case OP_DELETE: pool_tok_del(p->tok, &p->ntok, p->conn, &p->nconn, id); break;
    case OP_CONNECT:
      if (!rc) pool_conn_add(&p->conn, &p->nconn, &p->ccap, nid, u.c.from, u.c.to);
      break;
    case OP_DISCONNECT: pool_conn_del(p->conn, &p->nconn, id); break;
    case OP_CUPDATE:
      if (rc) pool_conn_del(p->conn, &p->nconn, id);
      break;
    }
    pthread_mutex_unlock(&p->mu);
  }
  return NULL;
}

__attribute__((noreturn))
static void th_child_main(int fd, const char *dir, const options *o, const child_plan *p,
                          model *m, th_shared *sh) {
  child_fd = fd;
  tg_store_config cfg;
  store_config(&cfg, o, p->level, p->checkpoints);
  tg_store *s = NULL;
  char why[256] = "";
  int rc = tg_store_open_msg(&s, dir, &cfg, why, sizeof why);
  if (rc) child_fail("open: %s: %s", tg_err_name(rc), why);
  tg_store_stats st;
  tg_store_stats_get(s, &st);
  child_note(M_READY, st.last_lsn);
  if (st.last_lsn != m->lsn)
    child_fail("open recovered last_lsn %" PRIu64 ", expected %" PRIu64, st.last_lsn, m->lsn);
  th_pool pool;
  memset(&pool, 0, sizeof pool);
  pthread_mutex_init(&pool.mu, NULL);
  for (uint32_t i = 0; i < m->ntok; i++) pool_tok_add(&pool.tok, &pool.ntok, &pool.tcap, m->tids[i]);
  for (uint32_t i = 0; i < m->nconn; i++) {
    const tg_connection *c = &m->conn[m->cids[i]];
    pool_conn_add(&pool.conn, &pool.nconn, &pool.ccap, c->id, c->from, c->to);
  }
  int T = sh->threads;
  th_ctx *x = xcalloc((size_t)T, sizeof *x);
  pthread_t *tid = xcalloc((size_t)T, sizeof *tid);
  long per = (p->ops + T - 1) / T;
  for (int i = 0; i < T; i++) {
    x[i] = (th_ctx){s, &pool, sh, &sh->logs[i], per, p->checkpoints, p->batches, i,
                    p->target_tokens, p->target_conns, mix64(p->seed + (uint64_t)i), 0};
    if (pthread_create(&tid[i], NULL, th_main, &x[i])) child_fail("pthread_create failed");
  }
  for (int i = 0; i < T; i++) pthread_join(tid[i], NULL);
  /* Quiet now (automatic checkpoints change nothing the API shows): the
     state an idle kill must recover. */
  snap_take(s, &sh->snap);
  atomic_store_explicit(&sh->snap_done, 1, memory_order_release);
  child_note(M_DONE, atomic_load_explicit(&sh->acked_max, memory_order_relaxed));
  for (;;) pause();
}

/* ---- the parent's check ---- */

/* One call of the iteration, as the parent sees it. */
typedef struct th_op {
  th_entry *e;
  int th;
  uint64_t lsn; /* acknowledged, or found in the log (0: not known) */
  uint32_t id;  /* the object (a create's or connect's: once known) */
} th_op;

static int cmp_op_lsn(const void *a, const void *b) {
  const th_op *x = *(th_op *const *)a, *y = *(th_op *const *)b;
  return x->lsn < y->lsn ? -1 : x->lsn > y->lsn;
}

/* NULL if the call (entry `sub` of a batch at lsn) applies to the model
   as it is, else why not. */
static const char *model_check_op(const model *m, int op, const th_obj *u, uint32_t id) {
  switch (op) {
  case OP_CREATE:
    if (!id) return "a create without an id";
    return tok_live(m, id) ? "creates a token id that is live" : NULL;
  case OP_UPDATE:
  case OP_DELETE:
    return tok_live(m, id) ? NULL : "names a token that is not live at that point of the log";
  case OP_CONNECT:
    if (!id) return "a connect without an id";
    if (conn_live(m, id)) return "creates a connection id that is live";
    if (!tok_live(m, u->c.from) || !tok_live(m, u->c.to))
      return "connects a token that is not live at that point of the log";
    return NULL;
  case OP_DISCONNECT:
    return conn_live(m, id) ? NULL : "removes a connection that is not live at that point";
  case OP_CUPDATE:
    if (!conn_live(m, id)) return "updates a connection that is not live at that point";
    if (m->conn[id].from != u->c.from || m->conn[id].to != u->c.to)
      return "updates a connection with other endpoints";
    return NULL;
  }
  return "an unknown call";
}

/* Does record rec hold exactly the call o (whose id, for a create or a
   connect, may not be known)? 1 yes, and *newid is the id it got. */
static int record_matches(const tg_wal_record *rec, const th_op *o, const th_shared *sh,
                          uint32_t *newid) {
  tg_record d;
  if (tg_record_decode(rec, &d)) return 0;
  const th_entry *e = o->e;
  *newid = 0;
  switch (e->op) {
  case OP_CREATE:
  case OP_UPDATE: {
    if (d.type != TG_REC_TOKEN_PUT) return 0;
    if (e->op == OP_UPDATE && d.id != e->id) return 0;
    if (e->op == OP_CREATE && e->state == TE_OK && d.id != e->id) return 0;
    tg_token want = stored_token(&e->u.t, d.id), got = d.token;
    want.flags &= (uint16_t)~TG_TOKEN_DIRTY;
    got.flags &= (uint16_t)~TG_TOKEN_DIRTY;
    *newid = d.id;
    return !memcmp(&want, &got, sizeof want);
  }
  case OP_DELETE: return d.type == TG_REC_TOKEN_DEL && d.id == e->id;
  case OP_DISCONNECT: return d.type == TG_REC_CONN_DEL && d.id == e->id;
  case OP_CONNECT: {
    if (d.type != TG_REC_CONN_PUT) return 0;
    if (e->state == TE_OK && d.id != e->id) return 0;
    tg_connection want = stored_conn(&e->u.c, d.id), got = stored_conn(&d.connection, d.id);
    *newid = d.id;
    return !memcmp(&want, &got, sizeof want);
  }
  case OP_CUPDATE: {
    if (d.type != TG_REC_CONN_UPDATE || d.id != e->id) return 0;
    const tg_connection *c = &d.connection, *w = &e->u.c;
    return c->from == w->from && c->to == w->to && c->flags == w->flags &&
           c->weight == w->weight && c->pull_strength == w->pull_strength &&
           c->activation_count == w->activation_count &&
           c->last_activated == w->last_activated && c->confidence == w->confidence;
  }
  case OP_BATCH: {
    if (d.type != TG_REC_BATCH || d.id != e->nb) return 0;
    size_t pos = 0;
    const th_bop *b = &sh->logs[o->th].bops[e->bop];
    for (unsigned j = 0; j < e->nb; j++) {
      tg_record x;
      if (tg_record_batch_next(rec, &pos, &x) != 1) return 0;
      const th_bop *y = &b[j];
      int want = y->op == OP_CREATE || y->op == OP_UPDATE ? TG_REC_TOKEN_PUT
                 : y->op == OP_DELETE ? TG_REC_TOKEN_DEL
                 : y->op == OP_CONNECT ? TG_REC_CONN_PUT : TG_REC_CONN_DEL;
      if (x.type != want || x.id != y->id) return 0;
      if (want == TG_REC_TOKEN_PUT) {
        tg_token a = stored_token(&y->u.t, y->id), g = x.token;
        a.flags &= (uint16_t)~TG_TOKEN_DIRTY;
        g.flags &= (uint16_t)~TG_TOKEN_DIRTY;
        if (memcmp(&a, &g, sizeof a)) return 0;
      }
      if (want == TG_REC_CONN_PUT) {
        tg_connection a = stored_conn(&y->u.c, y->id), g = stored_conn(&x.connection, y->id);
        if (memcmp(&a, &g, sizeof a)) return 0;
      }
    }
    return 1;
  }
  }
  return 0;
}

/* Totals of the threaded checks, beside `totals`. */
static struct {
  long inflight_found;    /* calls in flight at the kill found in the log */
  long records_matched;   /* log records checked against the call behind them */
  long refusals;          /* TG_ENOTFOUND refusals, each explained by a removal */
  long snapshots;         /* idle kills compared with the child's memory */
  long lost_behind_claim; /* acknowledged calls lost behind a call in flight */
  long unresolved;        /* iterations whose log the checkpoint had cut */
  long guesses;           /* calls that named another thread's next id... */
  long guesses_refused;   /* ... refused: it did not exist yet */
} g_tt;

/* The objects a refused call named (a batch's: those it did not create). */
static int refusal_names(const th_shared *sh, const th_op *o, uint32_t *tok, int *nt,
                         uint32_t *conn, int *nc) {
  const th_entry *e = o->e;
  *nt = *nc = 0;
  switch (e->op) {
  case OP_UPDATE:
  case OP_DELETE: tok[(*nt)++] = e->id; return 0;
  case OP_CONNECT:
    tok[(*nt)++] = e->u.c.from;
    tok[(*nt)++] = e->u.c.to;
    return 0;
  case OP_DISCONNECT:
  case OP_CUPDATE: conn[(*nc)++] = e->id; return 0;
  case OP_BATCH: {
    const th_bop *b = &sh->logs[o->th].bops[e->bop];
    for (unsigned j = 0; j < e->nb; j++) {
      const th_bop *y = &b[j];
      int made = 0; /* by an earlier entry of the batch */
      for (unsigned k = 0; k < j; k++) made |= b[k].op == OP_CREATE && b[k].id == y->id;
      if (y->op == OP_UPDATE || y->op == OP_DELETE) {
        if (!made) tok[(*nt)++] = y->id;
      } else if (y->op == OP_CONNECT) {
        tok[(*nt)++] = y->u.c.from;
        tok[(*nt)++] = y->u.c.to;
      } else if (y->op == OP_DISCONNECT) {
        conn[(*nc)++] = y->id;
      }
    }
    return 0;
  }
  }
  return 1;
}

/* Does call o (started at o->e->t0) remove token t or connection c? */
static int removes(const th_shared *sh, const th_op *o, uint32_t t, uint32_t c) {
  const th_entry *e = o->e;
  const th_pconn *ep = c && c < g_endp.cap ? &g_endp.c[c] : NULL;
  if (e->op == OP_DELETE)
    return (t && e->id == t) || (ep && ep->id && (e->id == ep->from || e->id == ep->to));
  if (e->op == OP_DISCONNECT) return c && e->id == c;
  if (e->op != OP_BATCH) return 0;
  const th_bop *b = &sh->logs[o->th].bops[e->bop];
  for (unsigned j = 0; j < e->nb; j++) {
    if (b[j].op == OP_DELETE &&
        ((t && b[j].id == t) || (ep && ep->id && (b[j].id == ep->from || b[j].id == ep->to))))
      return 1;
    if (b[j].op == OP_DISCONNECT && c && b[j].id == c) return 1;
  }
  return 0;
}

/* The index + 1 of connection id in sn->conn (sorted by id); 0 if absent. */
static uint32_t conn_ix(const th_snap *sn, uint32_t id) {
  uint32_t lo = 0, hi = sn->nconn;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (sn->conn[mid].id < id) lo = mid + 1;
    else hi = mid;
  }
  return lo < sn->nconn && sn->conn[lo].id == id ? lo + 1 : 0;
}

/* The index + 1 of token id in sn->tok (sorted by id); 0 if absent. */
static uint32_t tok_ix(const th_snap *sn, uint32_t id) {
  uint32_t lo = 0, hi = sn->ntok;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (sn->tok[mid].id < id) lo = mid + 1;
    else hi = mid;
  }
  return lo < sn->ntok && sn->tok[lo].id == id ? lo + 1 : 0;
}

/* A store's graph holds together, whatever the model says: every
   connection joins two tokens that exist, and is on its source's outgoing
   list and its target's incoming list exactly once; the lists hold
   nothing else. */
static void snap_check_links(const th_snap *sn, failure *f) {
  if (sn->overflow) return; /* snap_compare() says so */
  uint8_t *seen = xcalloc(sn->nconn + 1, 1);
  uint32_t pos = 0;
  for (uint32_t i = 0; i < sn->ntok; i++)
    for (int d = 0; d < 2; d++) {
      uint32_t cnt = sn->cnt[2 * i + (uint32_t)d], tid = sn->tok[i].id;
      for (uint32_t k = 0; k < cnt; k++) {
        uint32_t cid = sn->list[pos + k], ci = conn_ix(sn, cid);
        const tg_connection *c = ci ? &sn->conn[ci - 1] : NULL;
        if (!c || (d ? c->to : c->from) != tid || (seen[ci - 1] & (1u << d)))
          fail_add(f, "token %" PRIu32 "'s %s list holds connection %" PRIu32 ", which %s",
                   tid, d ? "incoming" : "outgoing", cid,
                   !c ? "does not exist" : (d ? c->to : c->from) != tid
                                               ? "has another endpoint there"
                                               : "it holds twice");
        else seen[ci - 1] |= (uint8_t)(1u << d);
      }
      pos += cnt;
    }
  for (uint32_t k = 0; k < sn->nconn; k++) {
    const tg_connection *c = &sn->conn[k];
    if (!tok_ix(sn, c->from) || !tok_ix(sn, c->to))
      fail_add(f, "connection %" PRIu32 " joins %" PRIu32 " -> %" PRIu32 ", and %" PRIu32
               " is no token", c->id, c->from, c->to, tok_ix(sn, c->from) ? c->to : c->from);
    else if (seen[k] != 3)
      fail_add(f, "connection %" PRIu32 " (%" PRIu32 " -> %" PRIu32 ") is missing from %s",
               c->id, c->from, c->to, seen[k] & 1 ? "its target's incoming list"
                                                  : "its source's outgoing list");
  }
  free(seen);
}

/* The model of what s holds, as of LSN lsn: every token and connection,
   the connections ranked in an order every adjacency list agrees with
   (each list is newest first). 0, or 1 when the lists have no common
   order. */
static int model_from_store(tg_store *s, model *m, uint64_t lsn) {
  model_free(m);
  th_snap sn;
  snap_alloc(&sn);
  snap_take(s, &sn);
  int rc = sn.overflow;
  for (uint32_t k = 0; k < sn.ntok; k++) model_apply(m, OP_CREATE, &sn.tok[k], sn.tok[k].id, lsn, 0);
  uint32_t nc = sn.nconn;
  uint32_t *next = xcalloc(2 * (size_t)nc + 1, sizeof *next), *indeg = xcalloc(nc + 1, sizeof *indeg);
  uint32_t *order = xcalloc(nc + 1, sizeof *order);
  uint32_t pos = 0;
  for (uint32_t i = 0; i < sn.ntok && !rc; i++)
    for (int d = 0; d < 2; d++) {
      uint32_t cnt = sn.cnt[2 * i + (uint32_t)d];
      for (uint32_t k = 0; k + 1 < cnt; k++) {
        uint32_t a = conn_ix(&sn, sn.list[pos + k]), b = conn_ix(&sn, sn.list[pos + k + 1]);
        if (!a || !b) {
          rc = 1;
          break;
        }
        next[2 * (a - 1) + (uint32_t)d] = b; /* a is newer than b */
        indeg[b - 1]++;
      }
      pos += cnt;
    }
  uint32_t head = 0, tail = 0;
  for (uint32_t k = 0; k < nc; k++)
    if (!indeg[k]) order[tail++] = k;
  while (head < tail) {
    uint32_t k = order[head++];
    for (int d = 0; d < 2; d++) {
      uint32_t b = next[2 * k + (uint32_t)d];
      if (b && --indeg[b - 1] == 0) order[tail++] = b - 1;
    }
  }
  if (tail != nc) rc = 1;
  for (uint32_t k = 0; k < tail; k++) {
    const tg_connection *cn = &sn.conn[order[k]];
    model_apply(m, OP_CONNECT, cn, cn->id, lsn, 0);
    m->cborn[cn->id] = (uint64_t)(nc - k); /* newest first: the highest */
    endp_note(cn->id, cn->from, cn->to);
  }
  m->lsn = lsn;
  free(next);
  free(indeg);
  free(order);
  snap_free(&sn);
  return rc;
}

static int check_recovery_threads(const iter_ctx *c, const watch *w, model *m, totals *tot,
                                  uint64_t *R_out) {
  th_shared *sh = g_th;
  failure f;
  memset(&f, 0, sizeof f);
  size_t nops = 0;
  for (int t = 0; t < sh->threads; t++)
    nops += atomic_load_explicit(&sh->logs[t].n, memory_order_acquire);
  th_op *ops = xcalloc(nops, sizeof *ops);
  th_op **acked = xcalloc(nops, sizeof *acked);
  size_t n = 0, nacked = 0, ninflight = 0;
  uint64_t max_acked = w->start_lsn;
  for (int t = 0; t < sh->threads; t++) {
    uint32_t k = atomic_load_explicit(&sh->logs[t].n, memory_order_acquire);
    uint64_t prev = w->start_lsn;
    for (uint32_t i = 0; i < k; i++) {
      th_entry *e = &sh->logs[t].ent[i];
      int st = atomic_load_explicit(&e->state, memory_order_acquire);
      ops[n] = (th_op){e, t, st == TE_OK ? e->lsn : 0, st == TE_OK || e->op != OP_CREATE ? e->id : 0};
      if (e->op == OP_CONNECT && st != TE_OK) ops[n].id = 0;
      if (e->guess && st == TE_OK) g_tt.guesses++;
      if (st == TE_OK) {
        if (e->lsn <= prev)
          fail_add(&f, "thread %d call %u (%s): LSN %" PRIu64 " not above the thread's "
                   "previous %" PRIu64 " (or the iteration's start)", t, i, op_name(e->op),
                   e->lsn, prev);
        prev = e->lsn;
        if (e->lsn > max_acked) max_acked = e->lsn;
        acked[nacked++] = &ops[n];
        if (e->op == OP_CONNECT) endp_note(e->id, e->u.c.from, e->u.c.to);
      } else if (st == TE_INTENT) {
        if (i + 1 != k)
          fail_add(&f, "thread %d call %u (%s) has no outcome but is not its last", t, i,
                   op_name(e->op));
        ninflight++;
      }
      if (e->op == OP_BATCH && st == TE_OK)
        for (unsigned j = 0; j < e->nb; j++) {
          const th_bop *y = &sh->logs[t].bops[e->bop + j];
          if (y->op == OP_CONNECT) endp_note(y->id, y->u.c.from, y->u.c.to);
        }
      n++;
    }
  }
  /* Unique LSNs, in the order of real time. */
  qsort(acked, nacked, sizeof *acked, cmp_op_lsn);
  uint64_t max_t0 = 0;
  const th_op *max_t0_op = NULL;
  for (size_t i = 0; i < nacked; i++) {
    const th_op *o = acked[i];
    if (i && acked[i - 1]->lsn == o->lsn)
      fail_add(&f, "two acknowledged calls got LSN %" PRIu64 " (threads %d and %d)", o->lsn,
               acked[i - 1]->th, o->th);
    if (max_t0_op && o->e->t1 < max_t0)
      fail_add(&f, "LSN order against real time: thread %d's %s (LSN %" PRIu64 ") returned "
               "before thread %d's %s (LSN %" PRIu64 ") was called",
               o->th, op_name(o->e->op), o->lsn, max_t0_op->th, op_name(max_t0_op->e->op),
               max_t0_op->lsn);
    if (o->e->t0 > max_t0) {
      max_t0 = o->e->t0;
      max_t0_op = o;
    }
  }

  /* The first open: R and the contract's bounds. */
  uint64_t R = 0;
  tg_store *s = NULL;
  int rc = 1;
  if (!f.count) {
    if (open_store(c, &s, c->level)) goto out;
    tg_recovery_info ri;
    tg_store_stats st;
    tg_store_recovery_info(s, &ri);
    tg_store_stats_get(s, &st);
    R = st.last_lsn;
    if (ri.torn_tail) tot->torn_tails++;
    int crc = tg_store_close(s);
    s = NULL;
    if (crc) fail_add(&f, "close after recovery: %s", tg_err_name(crc));
    if (R < w->durable)
      fail_add(&f, "recovered last_lsn %" PRIu64 " < %" PRIu64 ", which was durable "
               "(start of the iteration, tg_sync or checkpoint)", R, w->durable);
    if (c->level == TG_STRICT && R < max_acked)
      fail_add(&f, "STRICT: recovered last_lsn %" PRIu64 " < %" PRIu64
               ", an acknowledged call's", R, max_acked);
    if (atomic_load_explicit(&sh->snap_done, memory_order_acquire) &&
        (R != max_acked || ninflight))
      fail_add(&f, "killed idle: recovered last_lsn %" PRIu64 ", the last acknowledged %"
               PRIu64 ", %zu calls in flight", R, max_acked, ninflight);
    if (R > w->start_lsn + nacked + ninflight)
      fail_add(&f, "recovered last_lsn %" PRIu64 ": more records than the %zu calls "
               "acknowledged and %zu in flight since LSN %" PRIu64, R, nacked, ninflight,
               w->start_lsn);
    long lost = 0;
    for (size_t i = 0; i < nacked; i++)
      if (acked[i]->lsn > R) lost++;
    if (lost) {
      tot->acked_lost[c->level] += lost;
      if (lost > tot->acked_lost_max[c->level]) tot->acked_lost_max[c->level] = lost;
      /* The ring holds LSNs claimed in order but published by each thread
         on its own: a thread killed between its claim and its publish
         leaves a hole, and recovery stops before it. */
      if (!ninflight)
        fail_add(&f, "%ld acknowledged call(s) past the recovered LSN %" PRIu64
                 " and no call in flight to explain the gap", lost, R);
      else g_tt.lost_behind_claim += lost;
    }
  }
  if (f.count) goto report;

  /* Which call each LSN in (start, R] is. */
  size_t span = (size_t)(R - w->start_lsn);
  th_op **at = xcalloc(span + 1, sizeof *at);
  size_t known = 0;
  for (size_t i = 0; i < nacked; i++)
    if (acked[i]->lsn <= R) {
      at[acked[i]->lsn - w->start_lsn - 1] = acked[i];
      known++;
    }
  if (span - known > ninflight)
    fail_add(&f, "%zu LSNs up to %" PRIu64 " are no acknowledged call, but only %zu calls "
             "were in flight", span - known, R, ninflight);
  /* Read back what the log still holds of (start, R]. */
  if (span && !f.count) {
    char walpath[4200];
    snprintf(walpath, sizeof walpath, "%s/wal", c->dir);
    tg_wal_reader *rd = NULL;
    /* From the oldest segment: the one holding start + 1 may be gone. */
    if (tg_wal_reader_open(&rd, walpath, 0) == 0) {
      tg_wal_record rec;
      while (tg_wal_reader_next(rd, &rec) == 1 && rec.lsn <= R) {
        if (rec.lsn <= w->start_lsn) continue;
        th_op **slot = &at[rec.lsn - w->start_lsn - 1];
        uint32_t nid = 0;
        if (*slot) {
          if (!record_matches(&rec, *slot, sh, &nid))
            fail_add(&f, "the log's record at LSN %" PRIu64 " (type %u) is not thread %d's "
                     "%s acknowledged with that LSN", rec.lsn, rec.type, (*slot)->th,
                     op_name((*slot)->e->op));
          g_tt.records_matched++;
          continue;
        }
        for (size_t i = 0; i < n && !*slot; i++) {
          th_op *o = &ops[i];
          if (atomic_load_explicit(&o->e->state, memory_order_relaxed) != TE_INTENT || o->lsn)
            continue;
          if (record_matches(&rec, o, sh, &nid)) {
            o->lsn = rec.lsn;
            if (o->e->op == OP_CREATE || o->e->op == OP_CONNECT) o->id = nid;
            if (o->e->op == OP_CONNECT) endp_note(nid, o->e->u.c.from, o->e->u.c.to);
            *slot = o;
            g_tt.inflight_found++;
            g_tt.records_matched++;
          }
        }
        if (!*slot)
          fail_add(&f, "the log's record at LSN %" PRIu64 " (type %u) is no call any "
                   "thread made", rec.lsn, rec.type);
      }
      tg_wal_reader_close(rd);
    }
  }
  for (size_t i = 0; i < span && !f.count; i++)
    if (!at[i]) {
      /* A checkpoint covered the LSN and its segment is gone, and a call
         in flight is behind it: which one is unknown, so the model cannot
         follow this iteration. The recovered state (its lists give the
         connections' order) becomes the model, and the remaining checks
         (verify, the second open) still run. */
      g_tt.unresolved++;
      free(at);
      if (open_store(c, &s, c->level)) goto out;
      if (model_from_store(s, m, R)) fail_add(&f, "adjacency lists without a common order");
      int crc = tg_store_close(s);
      s = NULL;
      if (crc) fail_add(&f, "close after recovery: %s", tg_err_name(crc));
      goto verify;
    }

  /* Replay on the model, in LSN order, checking each call applies. */
  for (size_t i = 0; i < span && !f.count; i++) {
    th_op *o = at[i];
    uint64_t l = w->start_lsn + 1 + i;
    const th_entry *e = o->e;
    if (e->op == OP_BATCH) {
      const th_bop *b = &sh->logs[o->th].bops[e->bop];
      for (unsigned j = 0; j < e->nb && !f.count; j++) {
        const char *why = model_check_op(m, (int)b[j].op, &b[j].u, b[j].id);
        if (why)
          fail_add(&f, "not a serial order: LSN %" PRIu64 " (thread %d's batch, entry %u: %s "
                   "%" PRIu32 ") %s", l, o->th, j, op_name((int)b[j].op), b[j].id, why);
        else model_apply(m, (int)b[j].op, &b[j].u, b[j].id, l, j);
      }
      if (!e->lsn || atomic_load_explicit(&e->state, memory_order_relaxed) != TE_OK)
        tot->unacked_recovered++;
      tot->batches_recovered++;
      continue;
    }
    if (atomic_load_explicit(&e->state, memory_order_relaxed) != TE_OK) tot->unacked_recovered++;
    const char *why = model_check_op(m, e->op, &e->u, o->id);
    if (why)
      fail_add(&f, "not a serial order: LSN %" PRIu64 " (thread %d's %s %" PRIu32 ") %s", l,
               o->th, op_name(e->op), o->id, why);
    else model_apply(m, e->op, &e->u, o->id, l, 0);
  }
  m->lsn = R;

  /* Every refusal explained by a removal that started before it returned. */
  for (size_t i = 0; i < n && !f.count; i++) {
    const th_op *o = &ops[i];
    if (atomic_load_explicit(&o->e->state, memory_order_relaxed) != TE_FAILED) continue;
    if (o->e->guess) { /* named an id that may never have existed */
      g_tt.guesses_refused++;
      continue;
    }
    uint32_t tk[4 * MAX_BATCH], cn[4 * MAX_BATCH];
    int nt = 0, nc = 0, ok = 0;
    refusal_names(sh, o, tk, &nt, cn, &nc);
    for (size_t j = 0; j < n && !ok; j++) {
      const th_op *r = &ops[j];
      if (r == o || r->e->t0 > o->e->t1 ||
          atomic_load_explicit(&r->e->state, memory_order_relaxed) == TE_FAILED)
        continue;
      for (int a = 0; a < nt && !ok; a++) ok = removes(sh, r, tk[a], 0);
      for (int a = 0; a < nc && !ok; a++) ok = removes(sh, r, 0, cn[a]);
    }
    if (!ok) {
      char names[1024];
      size_t len = 0;
      names[0] = 0;
      for (int a = 0; a < nt + nc && len < sizeof names - 64; a++) {
        uint32_t id = a < nt ? tk[a] : cn[a - nt];
        int live = a < nt ? tok_live(m, id) : conn_live(m, id);
        len += (size_t)snprintf(names + len, sizeof names - len, " %s %" PRIu32 " (%s)",
                                a < nt ? "token" : "connection", id,
                                live ? "live after recovery" : "gone after recovery");
      }
      if (o->e->op == OP_BATCH) {
        const th_bop *b = &sh->logs[o->th].bops[o->e->bop];
        len += (size_t)snprintf(names + len, sizeof names - len, "; entries:");
        for (unsigned j = 0; j < o->e->nb && len < sizeof names - 40; j++)
          len += (size_t)snprintf(names + len, sizeof names - len, " %s %" PRIu32 "%s",
                                  op_name((int)b[j].op), b[j].id,
                                  b[j].op == OP_CONNECT ? "" : "");
        for (unsigned j = 0; j < o->e->nb && len < sizeof names - 40; j++)
          if (b[j].op == OP_CONNECT)
            len += (size_t)snprintf(names + len, sizeof names - len, " [%u: %" PRIu32
                                    "->%" PRIu32 "]", j, b[j].u.c.from, b[j].u.c.to);
      }
      /* The removals there were, whenever they started. */
      for (size_t j = 0; j < n && len < sizeof names - 120; j++) {
        const th_op *r = &ops[j];
        int hit = 0;
        for (int a = 0; a < nt && !hit; a++) hit = removes(sh, r, tk[a], 0);
        for (int a = 0; a < nc && !hit; a++) hit = removes(sh, r, 0, cn[a]);
        if (hit)
          len += (size_t)snprintf(names + len, sizeof names - len,
                                  "; removed by thread %d's %s (state %d, LSN %" PRIu64
                                  ") started %.1f us after the refusal returned", r->th,
                                  op_name(r->e->op), (int)r->e->state, r->lsn,
                                  ((double)r->e->t0 - (double)o->e->t1) / 1e3);
      }
      for (int a = 0; a < nc && len < sizeof names - 80; a++)
        len += (size_t)snprintf(names + len, sizeof names - len,
                                "; connection %" PRIu32 " joins %" PRIu32 " -> %" PRIu32, cn[a],
                                cn[a] < g_endp.cap ? g_endp.c[cn[a]].from : 0,
                                cn[a] < g_endp.cap ? g_endp.c[cn[a]].to : 0);
      fail_add(&f, "thread %d's %s (call %td) was refused (%s), but no call that started "
               "before the refusal removed what it named:%s", o->th, op_name(o->e->op),
               o->e - sh->logs[o->th].ent, tg_err_name(o->e->rc), names);
    }
    g_tt.refusals++;
  }
  free(at);
  if (f.count) goto report;

verify:;
  /* What tg-replay verify reads. */
  tg_inspect_report ir;
  char why[512] = "";
  int irc = tg_store_inspect(c->dir, &ir, NULL, NULL, why, sizeof why);
  if (irc)
    fail_add(&f, "tg_store_inspect (tg-replay verify): %s: %s", tg_err_name(irc), why);
  else {
    if (ir.end.reason != TG_WAL_END_CLEAN || ir.apply_failed_lsn)
      fail_add(&f, "tg-replay verify: the log ends %s%s (record LSN %" PRIu64 " %s)",
               tg_wal_end_reason_name(ir.end.reason), ir.apply_failed_lsn ? ", a record does "
               "not apply" : "", ir.apply_failed_lsn,
               ir.apply_failed_what ? ir.apply_failed_what : "");
    uint64_t vl = ir.last_lsn > ir.checkpoint_lsn ? ir.last_lsn : ir.checkpoint_lsn;
    if (vl != R || ir.tokens != m->ntok || ir.connections != m->nconn)
      fail_add(&f, "tg-replay verify: last LSN %" PRIu64 ", %" PRIu64 " tokens, %" PRIu64
               " connections; the open: LSN %" PRIu64 ", the model %" PRIu32 " and %" PRIu32,
               vl, ir.tokens, ir.connections, R, m->ntok, m->nconn);
  }

  /* The second open: the same R, no torn tail, the model's state; after an
     idle kill also the child's memory. */
  if (!f.count && !open_store(c, &s, c->level)) {
    tg_recovery_info ri;
    tg_store_stats st;
    tg_store_recovery_info(s, &ri);
    tg_store_stats_get(s, &st);
    if (st.last_lsn != R)
      fail_add(&f, "second open: last_lsn %" PRIu64 ", first %" PRIu64, st.last_lsn, R);
    if (ri.torn_tail) fail_add(&f, "second open found a torn tail the first did not cut");
    compare(s, m, &f);
    th_snap got;
    snap_alloc(&got);
    snap_take(s, &got);
    snap_check_links(&got, &f);
    if (atomic_load_explicit(&sh->snap_done, memory_order_acquire)) {
      snap_compare(&sh->snap, &got, &f);
      g_tt.snapshots++;
    }
    snap_free(&got);
    int crc = tg_store_close(s);
    s = NULL;
    if (crc) fail_add(&f, "close after recovery: %s", tg_err_name(crc));
  } else if (!f.count) {
    goto out;
  }
report:
  if (f.count) {
    report_fail(c, "recovered LSN %" PRIu64 ", %zu calls acknowledged up to LSN %" PRIu64
                ", %zu in flight, iteration started at LSN %" PRIu64 ", %d problem(s):\n%s",
                R, nacked, max_acked, ninflight, w->start_lsn, f.count, f.text);
  } else {
    rc = 0;
    *R_out = R;
  }
out:
  free(ops);
  free(acked);
  return rc;
}

/*
 * One kill: fork a child per *p, kill it per `how`, recover, check. *m is
 * the model of the directory on entry and on a successful return.
 * Returns 0, or 1 after reporting a failed check.
 */
static int run_iteration(iter_ctx *c, const child_plan *p, model *m, rng *r, int how,
                         uint64_t delay_ns, totals *tot) {
  watch w;
  memset(&w, 0, sizeof w);
  w.fd = -1;
  w.how = c->how = how;
  w.delay_ns = delay_ns;
  w.start_lsn = w.durable = w.last_acked = m->lsn;
  if (g_th) {
    th_shared_reset(g_th);
    w.shm_acks = &g_th->acks;
  }
  if (start_child(c, p, m, &w)) {
    tot->fails++;
    return 1;
  }
  uint64_t t_fork = tgp_now_ns();
  /* Drawn after the fork, as before the split, so a seed keeps its kills. */
  w.kill_acks = (long)rnd_below(r, (uint64_t)p->ops + 1);
  w.kill_ckpt = p->after_open_ckpt ? 1 : 1 + (long)rnd_below(r, 2);
  w.deadline = how == K_OPEN ? t_fork + delay_ns : UINT64_MAX;
  w.cap = 1024;
  w.in = xcalloc(w.cap, sizeof *w.in);

  int rc = watch_child(c, &w);
  rc |= reap_child(c, &w);
  if (g_th) w.acks = atomic_load_explicit(&g_th->acks, memory_order_relaxed);
  uint64_t R = 0;
  if (!rc) {
    tot->kills++;
    tot->kills_by_level[c->level]++;
    tot->kills_by_how[how]++;
    tot->ops_acked += w.acks;
    if (w.in_ckpt_at_kill) tot->ckpt_kills++;
    if (!w.ready) tot->before_ready++;
    rc = g_th ? check_recovery_threads(c, &w, m, tot, &R) : check_recovery(c, &w, m, tot, &R);
  }
  if (!rc) tot->last_lsn = m->lsn;
  if (g_th) w.n = w.acks;
  if (!rc && c->o->verbose)
    fprintf(stderr, "%s %ld %s kill=%s: calls %zu acked %ld recovered to LSN %" PRIu64
            " (started %" PRIu64 ")\n", c->phase, c->iter, level_name(c->level),
            kill_name[how], w.n, w.acks, R, w.start_lsn);
  free(w.in);
  free(w.bops);
  if (rc) tot->fails++;
  return rc;
}

/* ---- phases --------------------------------------------------------------- */

static int kill_phase(const options *o, const char *dir, totals *tot) {
  model m;
  memset(&m, 0, sizeof m);
  int rc = 0;
  /* Threaded children: their call logs in shared memory, a calls' worth
     per thread (each makes its share of ops_per_child). */
  if (o->threads >= 2)
    g_th = th_shared_map(o->threads, (uint32_t)((o->ops_per_child + o->threads - 1) /
                                                o->threads + 1));
  for (long it = 0; it < o->iterations && !rc; it++) {
    iter_ctx c = {o, dir, it, mix64(o->seed ^ mix64((uint64_t)it + 1)), 0, 0, "kill"};
    c.level = o->level >= 0 ? o->level : (int)(it % 3);
    rng r = {c.seed};
    child_plan p = {c.level, o->ops_per_child, 1, 0, rnd(&r), 1500, 3000, (int)o->batches};
    /* Threads: a small population, so that their calls meet. */
    if (g_th) p.target_tokens = 120, p.target_conns = 240;
    uint64_t x = rnd_below(&r, 100);
    int how = x < 35 ? K_AFTER_ACKS : x < 65 ? K_DELAY : x < 82 ? K_IN_CKPT : x < 94 ? K_OPEN
                                                                                      : K_IDLE;
    /* Threaded: more idle kills, each compared with the child's memory. */
    if (g_th)
      how = x < 30 ? K_AFTER_ACKS : x < 58 ? K_DELAY : x < 73 ? K_IN_CKPT : x < 83 ? K_OPEN
                                                                                   : K_IDLE;
    uint64_t delay = 0;
    if (how == K_OPEN) delay = rnd_below(&r, 8000000); /* 0..8 ms from fork */
    if (how == K_DELAY) delay = (uint64_t)(1000.0 * pow(50000.0, rnd_unit(&r))); /* 1us..50ms */
    if (how == K_IN_CKPT) delay = rnd_below(&r, 2000000);
    rc = run_iteration(&c, &p, &m, &r, how, delay, tot);
  }
  g_th = NULL; /* the recovery phase's children are single-threaded */
  model_free(&m);
  return rc;
}

/* Run `plan` on dir without a kill in the middle (the child is killed once
   idle), timing the child from fork to DONE. */
static int recovery_phase(const options *o, const char *dir, totals *tot) {
  model m;
  memset(&m, 0, sizeof m);
  int rc = 0;
  iter_ctx c = {o, dir, 0, mix64(o->seed ^ 0x5245434Full), TG_RELAXED, K_OPEN, "recovery"};
  rng r = {c.seed};
  /* 1. Kills while a fresh directory is created: identity file, LMDB
        environment, first segment. */
  long fresh = o->recovery_kills < 8 ? o->recovery_kills : 8;
  for (long i = 0; i < fresh && !rc; i++) {
    c.iter = i;
    c.phase = "fresh-dir";
    tgp_rmtree(dir);
    model_free(&m);
    child_plan p = {TG_STRICT, 3, 0, 0, rnd(&r), 10, 10, 0};
    c.level = TG_STRICT;
    rc = run_iteration(&c, &p, &m, &r, K_OPEN, rnd_below(&r, 3000000), tot);
  }
  if (rc || o->recovery_kills <= fresh) goto out;

  /* 2. A directory with a long log and no checkpoint. */
  tgp_rmtree(dir);
  model_free(&m);
  c.phase = "recovery-build";
  c.iter = 0;
  c.level = TG_RELAXED;
  child_plan build = {TG_RELAXED, o->recovery_records, 0, 0, rnd(&r), 20000, 40000, 0};
  totals bt;
  memset(&bt, 0, sizeof bt);
  if ((rc = run_iteration(&c, &build, &m, &r, K_IDLE, 0, &bt))) goto out;
  tot->last_lsn = bt.last_lsn;

  /* 3. How long does an open take? */
  uint64_t t0 = tgp_now_ns();
  tg_store *s = NULL;
  if (open_store(&c, &s, TG_RELAXED)) {
    rc = 1;
    goto out;
  }
  uint64_t t_open = tgp_now_ns() - t0;
  tg_store_close(s);

  /* 4. Kill the open. The last quarter checkpoints after the open (a big
        LMDB transaction), so the kill window covers that too. */
  long nk = o->recovery_kills - fresh;
  for (long i = 0; i < nk && !rc; i++) {
    c.phase = "recovery";
    c.iter = i;
    int ck = i >= nk - nk / 4;
    child_plan p = {TG_RELAXED, 0, 0, ck, rnd(&r), 1, 1, 0};
    /* Kill within the open (plus fork), or within the checkpoint after it
       (which writes every replayed record: about as long as the open). */
    uint64_t window = t_open + t_open / 4 + 1000000;
    rc = run_iteration(&c, &p, &m, &r, ck ? K_IN_CKPT : K_OPEN, rnd_below(&r, window), tot);
  }
out:
  model_free(&m);
  return rc;
}

/* ---- main ----------------------------------------------------------------- */

static void usage(FILE *to) {
  fprintf(to,
          "usage: tg-crash [options]\n"
          "Kill -9 a process mutating a durable tokengraph store at random moments and\n"
          "check that recovery gives exactly what the durability contract promises.\n"
          "\n"
          "  --dir DIR              data directory root (must be empty or missing;\n"
          "                         default: a temp dir, removed unless a check fails)\n"
          "  --iterations N         kills of a mutating child (default 200)\n"
          "  --level L              strict | balanced | relaxed | all (default all, rotating)\n"
          "  --seed S               seed of the operation mix and kill points (default: time)\n"
          "  --ops-per-child N      most calls one child makes before it idles (default 1000)\n"
          "  --batches P            make P%% of the calls atomic batches of 1..8 entries\n"
          "                         (default 0)\n"
          "  --threads T            each killed child runs T threads on the store at\n"
          "                         once, on shared tokens and connections (default 1);\n"
          "                         the parent checks the log is a serial order of\n"
          "                         their calls (docs/durability.md)\n"
          "  --recovery-kills N     kills during recovery of a large log (default 0)\n"
          "  --recovery-records N   records in that log (default 200000)\n"
          "  --segment-bytes N      WAL segment size (default 65536)\n"
          "  --checkpoint-bytes N   automatic checkpoint after N log bytes (default 131072)\n"
          "  --json                 print the summary as one JSON object\n"
          "  --verbose              one line per iteration on stderr\n"
          "  --help                 this text\n"
          "  --version              print the program's and the library's version\n"
          "\n"
          "Exit status: 0 every check held; 1 a check failed (the message names the\n"
          "iteration, seed, level and what differed; the directory is kept); 64 usage.\n");
}

int main(int argc, char **argv) {
  options o = {NULL, 200, -1, 0, 1000, 0, 0, 200000, 65536, 131072, 0, 0, 1};
  int seeded = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    uint64_t v = 0;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    }
    if (!strcmp(a, "--version")) {
      tgp_print_version("tg-crash");
      return 0;
    }
    if (!strcmp(a, "--json")) {
      o.json = 1;
      continue;
    }
    if (!strcmp(a, "--verbose")) {
      o.verbose = 1;
      continue;
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "tg-crash: %s: unknown option or missing value\n", a);
      usage(stderr);
      return 64;
    }
    const char *val = argv[++i];
    if (!strcmp(a, "--dir")) {
      o.dir = val;
      continue;
    }
    if (!strcmp(a, "--level")) {
      if (!strcmp(val, "strict")) o.level = TG_STRICT;
      else if (!strcmp(val, "balanced")) o.level = TG_BALANCED;
      else if (!strcmp(val, "relaxed")) o.level = TG_RELAXED;
      else if (!strcmp(val, "all")) o.level = -1;
      else {
        fprintf(stderr, "tg-crash: --level %s: expected strict, balanced, relaxed or all\n", val);
        return 64;
      }
      continue;
    }
    if (tgp_parse_u64(val, 0, UINT64_MAX, &v)) {
      fprintf(stderr, "tg-crash: %s %s: not a non-negative number\n", a, val);
      return 64;
    }
    if (!strcmp(a, "--iterations")) o.iterations = (long)v;
    else if (!strcmp(a, "--seed")) o.seed = v, seeded = 1;
    else if (!strcmp(a, "--ops-per-child")) o.ops_per_child = (long)v;
    else if (!strcmp(a, "--batches")) {
      if (v > 100) {
        fprintf(stderr, "tg-crash: --batches is a percentage, 0..100, not %" PRIu64 "\n", v);
        return 64;
      }
      o.batches = (long)v;
    }
    else if (!strcmp(a, "--threads")) {
      if (v < 1 || v > 64) {
        fprintf(stderr, "tg-crash: --threads is 1..64, not %" PRIu64 "\n", v);
        return 64;
      }
      o.threads = (int)v;
    }
    else if (!strcmp(a, "--recovery-kills")) o.recovery_kills = (long)v;
    else if (!strcmp(a, "--recovery-records")) o.recovery_records = (long)v;
    else if (!strcmp(a, "--segment-bytes")) o.segment_bytes = v;
    else if (!strcmp(a, "--checkpoint-bytes")) o.checkpoint_bytes = v;
    else {
      fprintf(stderr, "tg-crash: %s: unknown option\n", a);
      usage(stderr);
      return 64;
    }
  }
  if (!seeded) o.seed = mix64(tgp_now_ns() ^ (uint64_t)getpid());
  signal(SIGPIPE, SIG_IGN);

  char root[4096], dmain[4200], drec[4200];
  int temp = !o.dir;
  if (temp) {
    int mrc = tgp_mkdtemp(root, sizeof root, NULL, "tg-crash");
    if (mrc) {
      fprintf(stderr, "tg-crash: cannot create a temporary directory %s: %s\n", root,
              strerror(-mrc));
      return 1;
    }
  } else {
    snprintf(root, sizeof root, "%s", o.dir);
    if (mkdir(root, 0700) && errno != EEXIST) {
      fprintf(stderr, "tg-crash: mkdir %s: %s\n", root, strerror(errno));
      return 1;
    }
  }
  snprintf(dmain, sizeof dmain, "%s/kill", root);
  snprintf(drec, sizeof drec, "%s/recovery", root);
  struct stat st;
  if (!stat(dmain, &st) || !stat(drec, &st)) {
    fprintf(stderr, "tg-crash: %s already holds a tg-crash run: give an empty directory\n",
            root);
    return 64;
  }
  if (!o.json)
    printf("tg-crash: seed %" PRIu64 ", %ld iterations at %s, %ld recovery kills, dir %s\n",
           o.seed, o.iterations, o.level < 0 ? "all levels" : level_name(o.level),
           o.recovery_kills, root);
  fflush(stdout);

  totals tot, rt;
  memset(&tot, 0, sizeof tot);
  memset(&rt, 0, sizeof rt);
  uint64_t t0 = tgp_now_ns();
  int rc = kill_phase(&o, dmain, &tot);
  uint64_t t1 = tgp_now_ns();
  if (!rc && o.recovery_kills) rc = recovery_phase(&o, drec, &rt);
  uint64_t t2 = tgp_now_ns();
  double sec = (double)(t2 - t0) / 1e9, ksec = (double)(t1 - t0) / 1e9,
         rsec = (double)(t2 - t1) / 1e9;

  if (o.json) {
    printf("{\"ok\":%s,\"seed\":%" PRIu64 ",\"iterations\":%ld,\"kills\":%ld,"
           "\"kills_strict\":%ld,\"kills_balanced\":%ld,\"kills_relaxed\":%ld,"
           "\"kills_in_checkpoint\":%ld,\"kills_during_open\":%ld,\"calls_acked\":%ld,"
           "\"last_lsn\":%" PRIu64 ",\"acked_lost_strict\":%ld,\"acked_lost_balanced\":%ld,"
           "\"acked_lost_relaxed\":%ld,\"acked_lost_max_balanced\":%ld,"
           "\"acked_lost_max_relaxed\":%ld,\"lost_age_max_us_balanced\":%.1f,"
           "\"lost_age_max_us_relaxed\":%.1f,\"unacked_recovered\":%ld,\"torn_tails\":%ld,"
           "\"batches_recovered\":%ld,"
           "\"recovery_kills\":%ld,\"recovery_kills_during_open\":%ld,"
           "\"recovery_kills_in_checkpoint\":%ld,\"recovery_log_records\":%" PRIu64 ","
           "\"threads\":%d,\"records_checked\":%ld,\"inflight_found\":%ld,"
           "\"refusals_explained\":%ld,\"idle_memory_compared\":%ld,"
           "\"acked_lost_behind_inflight\":%ld,\"inflight_hidden\":%ld,"
           "\"guesses_found\":%ld,\"guesses_refused\":%ld,"
           "\"seconds\":%.3f,\"kill_seconds\":%.3f,\"recovery_seconds\":%.3f}\n",
           rc ? "false" : "true", o.seed, o.iterations, tot.kills,
           tot.kills_by_level[TG_STRICT], tot.kills_by_level[TG_BALANCED],
           tot.kills_by_level[TG_RELAXED], tot.ckpt_kills, tot.before_ready, tot.ops_acked,
           tot.last_lsn, tot.acked_lost[TG_STRICT], tot.acked_lost[TG_BALANCED],
           tot.acked_lost[TG_RELAXED], tot.acked_lost_max[TG_BALANCED],
           tot.acked_lost_max[TG_RELAXED], (double)tot.lost_age_max[TG_BALANCED] / 1e3,
           (double)tot.lost_age_max[TG_RELAXED] / 1e3, tot.unacked_recovered, tot.torn_tails,
           tot.batches_recovered, rt.kills,
           rt.before_ready, rt.ckpt_kills, rt.last_lsn, o.threads, g_tt.records_matched,
           g_tt.inflight_found, g_tt.refusals, g_tt.snapshots, g_tt.lost_behind_claim,
           g_tt.unresolved, g_tt.guesses, g_tt.guesses_refused, sec, ksec, rsec);
  } else if (o.iterations) {
    printf("tg-crash: %s: %ld kills (strict %ld, balanced %ld, relaxed %ld), %ld calls "
           "acknowledged, log at LSN %" PRIu64 ", %.2f s\n",
           rc ? "FAILED" : "ok", tot.kills, tot.kills_by_level[TG_STRICT],
           tot.kills_by_level[TG_BALANCED], tot.kills_by_level[TG_RELAXED], tot.ops_acked,
           tot.last_lsn, ksec);
    printf("tg-crash:   kill moments:");
    for (int k = 0; k < K_COUNT; k++) printf(" %s %ld", kill_name[k], tot.kills_by_how[k]);
    printf("; %ld inside an explicit checkpoint, %ld before the open returned\n",
           tot.ckpt_kills, tot.before_ready);
    printf("tg-crash:   acknowledged calls lost: strict %ld, balanced %ld (at most %ld in one "
           "kill, the oldest %.0f us before it), relaxed %ld (at most %ld, %.0f us)\n",
           tot.acked_lost[TG_STRICT], tot.acked_lost[TG_BALANCED],
           tot.acked_lost_max[TG_BALANCED], (double)tot.lost_age_max[TG_BALANCED] / 1e3,
           tot.acked_lost[TG_RELAXED], tot.acked_lost_max[TG_RELAXED],
           (double)tot.lost_age_max[TG_RELAXED] / 1e3);
    printf("tg-crash:   unacknowledged calls found recovered %ld; torn tails cut %ld\n",
           tot.unacked_recovered, tot.torn_tails);
    if (o.batches)
      printf("tg-crash:   batches found whole in recovered logs %ld (each all or nothing)\n",
             tot.batches_recovered);
    if (o.threads >= 2)
      printf("tg-crash:   %d threads a child: %ld log records checked against their calls "
             "(%ld of calls in flight at the kill), %ld refusals each explained by a "
             "concurrent removal, %ld idle kills equal to the child's memory, %ld "
             "acknowledged calls lost behind a call in flight, %ld iterations whose "
             "in-flight call a checkpoint hid\n",
             o.threads, g_tt.records_matched, g_tt.inflight_found, g_tt.refusals,
             g_tt.snapshots, g_tt.lost_behind_claim, g_tt.unresolved);
    if (o.threads >= 2)
      printf("tg-crash:   calls on the id another thread's create was about to get: %ld "
             "found it, %ld refused\n", g_tt.guesses, g_tt.guesses_refused);
  }
  if (!o.json && o.recovery_kills) {
      printf("tg-crash: recovery: %ld kills (%ld before the open returned, %ld in the "
             "checkpoint after it), log of %" PRIu64 " records, %.2f s\n",
             rt.kills, rt.before_ready, rt.ckpt_kills, rt.last_lsn, rsec);
  }
  if (rc) {
    fprintf(stderr, "tg-crash: the directory is kept for inspection: %s (tg-replay verify)\n",
            root);
    return 1;
  }
  if (temp) tgp_rmtree(root);
  return 0;
}
