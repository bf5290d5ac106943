/*
 * The corruption sweep: a real data directory, damaged in every way a disk
 * or an operator can damage it, must open as a correct prefix of what was
 * written (with any loss reported), or be refused with a clear error;
 * never wrong data, never a crash or a hang, and the store and inspection
 * (tg_store_inspect, what tg-replay verify uses) reach the same verdict.
 *
 * The directory is built by the library at STRICT, so every record was
 * acknowledged durable: several small WAL segments, a checkpoint in the
 * middle, more records after it; token creates, updates and deletes,
 * connects and disconnects. The operations are kept, so the state after
 * any prefix of them can be rebuilt (in memory, by the same calls) and
 * compared with what an open of a damaged copy shows.
 *
 * Damage, each to a fresh copy: truncation of the last segment at every
 * byte of its last frames; bit flips across every segment, data.mdb and
 * the identity file (every Nth bit, so each bit position of a byte comes
 * up); each 512-byte sector of each segment zeroed; each 4 KiB page of
 * data.mdb zeroed; a segment deleted (each of them). Each case runs in a
 * forked child, so a crash is a failed case with its name; the parent
 * waits with a deadline, so a hang fails too. A sample of the cases also
 * runs the real tg-replay verify --json, which must agree.
 *
 * What is allowed, per case:
 *  - the open succeeds, showing exactly the state after the first k
 *    operations, where k is the last LSN the open reports; k is every
 *    record the damage left intact: all of them for damage in place (a
 *    STRICT record before the durable point may not be lost: that must be
 *    refused), and those before the cut for a truncation; k short of the
 *    whole log only with the loss reported (a torn tail cut);
 *  - or the open is refused with TG_ECORRUPT (TG_ENOTTG or TG_EVERSION for
 *    the identity file and headers), with a message naming the file and
 *    where in it (an offset, a page, a key or an LSN).
 * Counts per class and per kind of damage are printed at the end.
 *
 * TG_CORRUPTION_SWEEP=N makes the sampled sweeps (the bit flips) N times
 * denser, for a long manual run.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <poll.h>
#include <unistd.h>
#include <cmocka.h>

#include "util.h"

/* ---- the reference: the operations, and the state after any prefix ------- */

#define SEG_BYTES 8192u /* about 70 STRICT records a segment */
#define BEFORE_CKPT 400u /* operations before the checkpoint */
#define AFTER_CKPT 420u  /* and after it */
#define MAXOPS (BEFORE_CKPT + AFTER_CKPT)

enum op_kind { OP_CREATE, OP_UPDATE, OP_DELETE, OP_CONNECT, OP_DISCONNECT };

typedef struct op {
  int kind;        /* enum op_kind */
  uint32_t id;     /* the token or connection (created: the id it got) */
  tg_token t;      /* OP_CREATE, OP_UPDATE: the fields given */
  tg_connection c; /* OP_CONNECT: the fields given */
} op;

static op ops[MAXOPS];
static uint32_t nops;         /* one WAL record each: operation i is LSN i + 1 */
static uint64_t ckpt_lsn;     /* the LSN the checkpoint covers */

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(uint32_t n) {
  rng ^= rng << 13; /* xorshift64 */
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)((rng >> 11) % n);
}

/* Do operation o on s; a create or connect sets o->id, or checks it is the
   id it got before when `check_id`. Returns the call's result, or -1 for
   an id other than the one expected. */
static int apply_op(tg_store *s, op *o, int check_id) {
  uint32_t id = 0;
  int rc = 0;
  switch (o->kind) {
  case OP_CREATE: rc = tg_token_create(s, &o->t, &id); break;
  case OP_UPDATE: rc = tg_token_update(s, &o->t); break;
  case OP_DELETE: rc = tg_token_delete(s, o->id); break;
  case OP_CONNECT: rc = tg_connect(s, &o->c, &id); break;
  default: rc = tg_disconnect(s, o->id); break;
  }
  if (rc || (o->kind != OP_CREATE && o->kind != OP_CONNECT)) return rc;
  if (check_id) return id == o->id ? 0 : -1;
  o->id = id;
  return 0;
}

/* The model of what the store holds after the first k operations, rebuilt
   in memory by the same calls. Plain C: runs in the forked children. */
static int reference(uint64_t k, tgt_model *m) {
  tg_store *s = NULL;
  if (tg_store_open(&s, NULL, NULL)) return -1;
  for (uint64_t i = 0; i < k; i++)
    if (apply_op(s, &ops[i], 1)) {
      tg_store_close(s);
      return -1;
    }
  tgt_read_model(s, m);
  tg_store_close(s);
  return 0;
}

static tg_store_config config(void) {
  tg_store_config cfg;
  tg_store_config_init(&cfg);
  cfg.wal.level = TG_STRICT;
  cfg.wal.segment_bytes = SEG_BYTES;
  cfg.wal.ring_slots = 64;
  cfg.checkpoint_bytes = 0; /* the one checkpoint is the test's */
  cfg.crash_dump = 0;       /* a crash must show as the child's signal */
  return cfg;
}

static void random_token(tg_token *t) {
  memset(t, 0, sizeof *t);
  for (int k = 0; k < TG_SPACES; k++)
    for (int j = 0; j < 3; j++) t->coord[k][j] = (int16_t)(rnd(65536) - 32768);
  t->flags = (uint16_t)((rnd(16) << TG_TOKEN_ENTITY_SHIFT) | (rnd(16) << TG_TOKEN_USER_SHIFT) |
                        (rnd(2) ? TG_TOKEN_PERSISTENT : 0));
  t->field_radius = (uint8_t)rnd(256);
  t->field_strength = (uint8_t)rnd(256);
  t->weight = (float)rnd(100000) / 7.0f;
  t->timestamp = 1700000000u + rnd(1000000);
}

/* One operation that applies to the state the live lists describe. */
static void next_op(op *o, uint32_t *tok, uint32_t ntok, uint32_t *conn, uint32_t nconn) {
  memset(o, 0, sizeof *o);
  uint32_t r = rnd(100);
  if (ntok < 8 || r < 30) {
    o->kind = OP_CREATE;
    random_token(&o->t);
  } else if (r < 48) {
    o->kind = OP_UPDATE;
    random_token(&o->t);
    o->t.id = o->id = tok[rnd(ntok)];
  } else if (r < 58) {
    o->kind = OP_DELETE;
    o->id = tok[rnd(ntok)];
  } else if (r < 90 || nconn == 0) {
    o->kind = OP_CONNECT;
    o->c.from = tok[rnd(ntok)];
    o->c.to = rnd(8) ? tok[rnd(ntok)] : o->c.from;
    o->c.type = (uint8_t)rnd(TG_CONN_TYPES);
    o->c.rigidity = (uint8_t)rnd(256);
    o->c.active_levels = (uint8_t)rnd(256);
    o->c.flags = (uint16_t)rnd(65536);
    o->c.weight = (float)rnd(1000) / 3.0f;
    o->c.pull_strength = (float)rnd(1000) / 9.0f;
    o->c.activation_count = rnd(1000);
    o->c.created = 1700000000u + rnd(1000);
    o->c.last_activated = o->c.created + rnd(1000);
    o->c.confidence = (float)rnd(1001) / 1000.0f;
  } else {
    o->kind = OP_DISCONNECT;
    o->id = conn[rnd(nconn)];
  }
}

/* Build the data directory d: BEFORE_CKPT operations, a checkpoint,
   AFTER_CKPT more, close. Keeps the operations in ops[]. */
static void build(const char *d) {
  tg_store_config cfg = config();
  tg_store *s = tgt_open(d, &cfg);
  static uint32_t tok[MAXOPS], conn[MAXOPS];
  uint32_t ntok = 0, nconn = 0;
  for (nops = 0; nops < MAXOPS; nops++) {
    if (nops == BEFORE_CKPT) {
      assert_int_equal(tg_checkpoint(s), 0);
      ckpt_lsn = tgt_stats(s).checkpoint_lsn;
      assert_int_equal(ckpt_lsn, nops);
    }
    op *o = &ops[nops];
    next_op(o, tok, ntok, conn, nconn);
    assert_int_equal(apply_op(s, o, 0), 0);
    assert_true(o->id <= TGT_MODEL_IDS);
    if (o->kind == OP_CREATE) tok[ntok++] = o->id;
    if (o->kind == OP_CONNECT) conn[nconn++] = o->id;
    if (o->kind == OP_DELETE) {
      for (uint32_t i = 0; i < ntok; i++)
        if (tok[i] == o->id) tok[i--] = tok[--ntok];
    }
    if (o->kind == OP_DELETE || o->kind == OP_DISCONNECT) {
      /* A token's delete takes its connections with it. */
      tg_connection c;
      for (uint32_t i = 0; i < nconn; i++)
        if (tg_connection_get(s, conn[i], &c) == TG_ENOTFOUND) conn[i--] = conn[--nconn];
    }
  }
  assert_int_equal(tgt_stats(s).last_lsn, nops); /* one record per operation */
  assert_int_equal(tg_store_close(s), 0);
}

/* ---- the pristine log's layout ---------------------------------------------- */

#define MAXSEG 64

static uint64_t seg_first[MAXSEG]; /* the segments' first LSNs, in order */
static uint64_t seg_size[MAXSEG];  /* and file sizes */
static size_t nseg;
static uint64_t rec_seg[MAXOPS + 1]; /* LSN -> its segment's first LSN */
static uint64_t rec_end[MAXOPS + 1]; /* LSN -> the end of its frame */
static uint64_t log_end;             /* where the last segment's data ends */

/* Read the template's log with the library's reader: where each record's
   frame ends, and the segments. */
static void layout(const char *d) {
  char wal[300], p[400];
  snprintf(wal, sizeof wal, "%s/wal", d);
  tg_wal_reader *r = NULL;
  assert_int_equal(tg_wal_reader_open(&r, wal, 0), 0);
  tg_wal_record rec;
  uint64_t n = 0;
  while (tg_wal_reader_next(r, &rec) == 1) {
    assert_true(rec.lsn >= 1 && rec.lsn <= nops);
    rec_seg[rec.lsn] = rec.segment;
    rec_end[rec.lsn] = rec.offset + ((16u + rec.len + 7u) & ~7u);
    n++;
  }
  tg_wal_end end = *tg_wal_reader_end(r); /* the reader's goes with it */
  const tg_wal_end *e = &end;
  assert_int_equal(e->reason, TG_WAL_END_CLEAN);
  assert_int_equal(e->last_lsn, nops);
  log_end = e->offset;
  nseg = tg_wal_reader_segments(r);
  assert_true(nseg >= 4 && nseg <= MAXSEG);
  for (size_t i = 0; i < nseg; i++) {
    seg_first[i] = tg_wal_reader_segment(r, i);
    char name[64];
    assert_int_equal(tg_wal_segment_name(seg_first[i], name, sizeof name), 0);
    snprintf(p, sizeof p, "%s/%s", wal, name);
    seg_size[i] = tgt_file_size(p);
  }
  tg_wal_reader_close(r);
  /* The checkpoint deleted the segments it covers whole. */
  assert_true(seg_first[0] <= ckpt_lsn + 1 && n == nops - seg_first[0] + 1);
  assert_int_equal(e->segment, seg_first[nseg - 1]);
}

/* The records a cut of the last segment at byte `at` leaves whole. */
static uint64_t records_before(uint64_t at) {
  uint64_t k = nops;
  while (k > 0 && rec_seg[k] == seg_first[nseg - 1] && rec_end[k] > at) k--;
  return k;
}

/* ---- one case ----------------------------------------------------------------- */

/* Classes of outcome. The first ones are allowed; the rest fail the test. */
enum outcome {
  OPENED_WHOLE,     /* opened with every record */
  OPENED_WHOLE_CUT, /* opened with every record, garbage after them cut */
  OPENED_PREFIX,    /* opened with a prefix, the loss reported */
  OPENED_ERASED_END, /* opened with the records before damage that erased
                       the end of the log: see run_case */
  REFUSED_CORRUPT,  /* TG_ECORRUPT naming the file and where */
  REFUSED_NOTTG,    /* TG_ENOTTG */
  REFUSED_VERSION,  /* TG_EVERSION */
  NALLOWED,
  WRONG_DATA = NALLOWED, /* opened, and the state is not the prefix's */
  LOST_DURABLE,     /* opened with fewer records than the damage left */
  LOST_UNREPORTED,  /* opened with a prefix, no loss reported */
  BAD_REFUSAL,      /* another error, or a message that does not say where */
  DISAGREE,         /* inspection or tg-replay reached another verdict */
  CHILD_FAILED,     /* the child could not run the case */
  NOUTCOMES
};
static const char *const outcome_name[NOUTCOMES] = {
    "opened whole", "opened whole, tail cut", "opened a prefix, loss reported",
    "opened a prefix, the log's end erased",
    "TG_ECORRUPT", "TG_ENOTTG", "TG_EVERSION", "WRONG DATA", "acknowledged records lost",
    "a loss not reported", "a refusal that names no place", "verdicts disagree",
    "the child failed"};

/* What the child found, sent through the pipe. */
typedef struct verdict {
  int outcome; /* enum outcome */
  int rc;      /* the open's result */
  int ok;      /* 1: the open succeeded */
  uint64_t k;  /* then: the last LSN it recovered */
  char msg[480]; /* the open's message, or what went wrong */
} verdict;

/* Does a refusal's message name a file of the directory and a place in
   it? */
static int names_a_place(const char *msg, const char *d) {
  if (!strstr(msg, d)) return 0;
  if (!strstr(msg, ".wal") && !strstr(msg, "data.mdb") && !strstr(msg, "TOKENGRAPH")) return 0;
  return strstr(msg, "offset") || strstr(msg, "page") || strstr(msg, "key") ||
         strstr(msg, "LSN") || strstr(msg, "ends at") || strstr(msg, "TOKENGRAPH");
}

static void say(verdict *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(verdict *v, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(v->msg, sizeof v->msg, fmt, ap);
  va_end(ap);
}

/* The case, in the child: inspect, open, compare. min_k is the fewest
   records the damage leaves intact. erased_end: the damage zeroed the
   last frames of the log and left nothing but zeros after them. Such a
   log cannot be told from one whose last writes never reached the disk:
   the DURABLE markers that vouched for those frames are zeros too, and
   the segment keeps its size. Its open may show the records before the
   damage without reporting a loss; that class is counted apart. */
static verdict run_case(const char *d, uint64_t min_k, int erased_end) {
  static tgt_model got, want;
  verdict v;
  memset(&v, 0, sizeof v);
  tg_inspect_report rep;
  char imsg[480] = "", msg[480] = "";
  int irc = tg_store_inspect(d, &rep, NULL, NULL, imsg, sizeof imsg);
  int iok = irc == 0 && rep.apply_failed_lsn == 0 &&
            (rep.end.reason == TG_WAL_END_CLEAN || rep.end.reason == TG_WAL_END_TORN);
  tg_store_config cfg = config();
  tg_store *s = NULL;
  v.rc = tg_store_open_msg(&s, d, &cfg, msg, sizeof msg);
  if (v.rc) {
    say(&v, "%s", msg);
    if (iok) {
      v.outcome = DISAGREE;
      say(&v, "inspection finds it good (last LSN %" PRIu64 "), the open refuses: %s: %s",
          rep.last_lsn, tg_err_name(v.rc), msg);
    } else if (!names_a_place(msg, d)) {
      v.outcome = BAD_REFUSAL;
    } else if (v.rc == TG_ECORRUPT) {
      v.outcome = REFUSED_CORRUPT;
    } else if (v.rc == TG_ENOTTG) {
      v.outcome = REFUSED_NOTTG;
    } else if (v.rc == TG_EVERSION) {
      v.outcome = REFUSED_VERSION;
    } else {
      v.outcome = BAD_REFUSAL;
      say(&v, "%s: %s", tg_err_name(v.rc), msg);
    }
    return v;
  }
  v.ok = 1;
  tg_recovery_info ri;
  memset(&ri, 0, sizeof ri);
  tg_store_recovery_info(s, &ri);
  v.k = ri.last_lsn;
  tgt_read_model(s, &got);
  tg_store_close(s);
  int64_t diff;
  if (v.k > nops || reference(v.k, &want)) {
    v.outcome = CHILD_FAILED;
    say(&v, "the reference state after %" PRIu64 " operations cannot be rebuilt", v.k);
  } else if ((diff = tgt_model_diff(&want, &got)) != 0) {
    v.outcome = WRONG_DATA;
    say(&v, "opened at LSN %" PRIu64 ", but %s %" PRId64 " differs from the state after it",
        v.k, diff == INT32_MIN ? "the count" : diff > 0 ? "token" : "connection",
        diff > 0 ? diff : -diff);
  } else if (v.k < min_k) {
    v.outcome = LOST_DURABLE;
    say(&v, "opened at LSN %" PRIu64 ", the damage left %" PRIu64 " records intact", v.k, min_k);
  } else if (v.k < nops && !ri.torn_tail && !erased_end) {
    v.outcome = LOST_UNREPORTED;
    say(&v, "opened at LSN %" PRIu64 " of %u without reporting a loss", v.k, nops);
  } else if (!iok || rep.last_lsn != v.k || rep.tokens != got.tokens ||
             rep.connections != got.conns) {
    v.outcome = DISAGREE;
    say(&v, "the open recovers LSN %" PRIu64 ", inspection %s (%s, last LSN %" PRIu64 "): %s",
        v.k, iok ? "agrees to open" : "refuses", tg_err_name(irc), rep.last_lsn, imsg);
  } else if (v.k < nops) {
    v.outcome = ri.torn_tail ? OPENED_PREFIX : OPENED_ERASED_END;
  } else {
    v.outcome = ri.torn_tail ? OPENED_WHOLE_CUT : OPENED_WHOLE;
  }
  return v;
}

/* ---- the sweep ---------------------------------------------------------------- */

enum kind { TRUNCATE, FLIP_SEGMENT, FLIP_CHECKPOINT, FLIP_IDENTITY, ZERO_SECTOR, ZERO_PAGE,
            DELETE_SEGMENT, NKINDS };
static const char *const kind_name[NKINDS] = {
    "truncation of the last segment", "bit flip in a segment", "bit flip in data.mdb",
    "bit flip in TOKENGRAPH", "zeroed 512-byte sector of a segment",
    "zeroed 4 KiB page of data.mdb", "deleted segment"};

static char root[160], tmpl[200], work[200];
static unsigned counts[NKINDS][NOUTCOMES];
static unsigned failures, verified, ncases;
static unsigned verify_every = 16; /* every 16th case also runs tg-replay */

static void seg_path(char *buf, size_t len, const char *d, size_t i) {
  char name[64];
  assert_int_equal(tg_wal_segment_name(seg_first[i], name, sizeof name), 0);
  snprintf(buf, len, "%s/wal/%s", d, name);
}

static void flip_bit(const char *path, uint64_t bit) {
  int fd = open(path, O_RDWR);
  if (fd < 0) fail_msg("cannot open %s: %s", path, strerror(errno));
  unsigned char c;
  assert_int_equal(pread(fd, &c, 1, (off_t)(bit / 8)), 1);
  c ^= (unsigned char)(1u << (bit % 8));
  assert_int_equal(pwrite(fd, &c, 1, (off_t)(bit / 8)), 1);
  close(fd);
}

static void zero_range(const char *path, uint64_t off, uint64_t n) {
  static const unsigned char z[4096];
  int fd = open(path, O_RDWR);
  if (fd < 0) fail_msg("cannot open %s: %s", path, strerror(errno));
  assert_true(n <= sizeof z);
  assert_int_equal(pwrite(fd, z, n, (off_t)off), (ssize_t)n);
  close(fd);
}

/* tg-replay verify --json on the damaged copy: its exit status (0 clean,
   1 torn tail, 2 refused) and the last LSN it reports. */
static int replay_verify(const char *d, uint64_t *last) {
  const char *args[] = {"verify", d, "--json", NULL};
  tgt_run_out r = tgt_run(TG_REPLAY_BIN, args, NULL, root);
  const char *p = strstr(r.out, "\"last_lsn\":");
  *last = p ? strtoull(p + 11, NULL, 10) : 0;
  int st = r.status;
  tgt_run_free(&r);
  return st;
}

/* Read the child's verdict: 1 when it came whole. The pipe ends when the
   child does; a child that has not ended within TGT_PATIENCE_NS (a case
   takes milliseconds) hangs: it is killed and the test fails, naming the
   case. */
static int child_verdict(tgt_child c, verdict *v, const char *what) {
  size_t have = 0;
  uint64_t deadline = tgp_now_ns() + TGT_PATIENCE_NS;
  for (;;) {
    uint64_t now = tgp_now_ns();
    if (now > deadline) {
      kill(c.pid, SIGKILL);
      while (waitpid(c.pid, NULL, 0) < 0 && errno == EINTR) {
      }
      fail_msg("%s: the child hangs (killed it)", what);
    }
    struct pollfd p = {c.fd, POLLIN, 0};
    int pr = poll(&p, 1, (int)((deadline - now) / 1000000u) + 1);
    if (pr < 0 && errno != EINTR) fail_msg("poll: %s", strerror(errno));
    if (pr <= 0) continue;
    ssize_t r = read(c.fd, (char *)v + have, sizeof *v - have);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail_msg("read: %s", strerror(errno));
    if (r == 0) break;
    have += (size_t)r;
  }
  close(c.fd);
  return have == sizeof *v;
}

/* Run the case already made in `work`: tg-replay on a sample (before the
   open, which cuts a torn tail), then the child. */
static void check_case(int kind, uint64_t min_k, int erased_end, const char *what) {
  int tool = -1;
  uint64_t tool_last = 0;
  if (ncases++ % verify_every == 0) {
    tool = replay_verify(work, &tool_last);
    verified++;
  }
  tgt_child c = tgt_fork_piped();
  if (c.pid == 0) {
    verdict v = run_case(work, min_k, erased_end);
    ssize_t w = write(c.fd, &v, sizeof v);
    _exit(w == (ssize_t)sizeof v ? 0 : 1);
  }
  verdict v;
  int full = child_verdict(c, &v, what);
  int st = 0;
  while (waitpid(c.pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(st)) {
    v.outcome = CHILD_FAILED;
    say(&v, "the child died of signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
  } else if (!full || WEXITSTATUS(st) != 0) {
    memset(&v, 0, sizeof v);
    v.outcome = CHILD_FAILED;
    say(&v, "the child exited with status %d", WEXITSTATUS(st));
  } else if (tool >= 0 && v.outcome < NALLOWED) {
    /* tg-replay: 0 or 1 and the same last LSN when the store opens, 2
       when it refuses. */
    int agree = v.ok ? (tool == 0 || tool == 1) && tool_last == v.k : tool == 2;
    if (!agree) {
      char m[sizeof v.msg];
      snprintf(m, sizeof m, "%s", v.msg);
      say(&v, "tg-replay verify exits %d (last LSN %" PRIu64 ") where the store %s %" PRIu64
              ": %s", tool, tool_last, v.ok ? "opens at LSN" : "refuses,", v.k, m);
      v.outcome = DISAGREE;
    }
  }
  counts[kind][v.outcome]++;
  if (v.outcome >= NALLOWED) {
    failures++;
    print_message("FAILED %s, %s: %s: %s\n", kind_name[kind], what, outcome_name[v.outcome],
                  v.msg);
  }
}

/* A fresh copy of the template in `work`. The ring file goes from one
   copy to the next: an open rewrites its header and zeroes its slots
   before use, and the children append nothing, so it never holds a
   record; allocating its 32 MiB anew for every case was half the sweep's
   time on tmpfs. */
static void fresh_copy(void) {
  char ring[300], kept[300];
  snprintf(ring, sizeof ring, "%s/wal/ring", work);
  snprintf(kept, sizeof kept, "%s/ring", root);
  if (rename(ring, kept) && errno != ENOENT) fail_msg("rename %s: %s", ring, strerror(errno));
  tgt_rmtree(work);
  tgt_copy_dir(tmpl, work);
  if (rename(kept, ring) && errno != ENOENT) fail_msg("rename %s: %s", kept, strerror(errno));
}

/* Sanitizer builds sample three (ASan) or nine (TSan) times more
   sparsely: each case is a store open in a forked child, several times
   slower there, and a child of a TSan process copies the runtime's
   metadata page by page. */
#if defined(TG_SANITIZE_THREAD)
#define SPARSE 9u
#elif defined(TG_SANITIZE_ADDRESS)
#define SPARSE 3u
#else
#define SPARSE 1u
#endif
/* The dense sweeps (a cut at every byte, every sector, every page) are
   sampled under TSan alone: ASan runs every damaged input's parse. */
#if defined(TG_SANITIZE_THREAD)
#define DENSE_STEP 9u
#else
#define DENSE_STEP 1u
#endif

/* The sweep's scratch directory goes, however the test ended. */
static int sweep_teardown(void **state) {
  (void)state;
  if (root[0]) tgt_rmtree(root);
  return 0;
}

/* A sampling step: odd, SPARSE times longer in sanitizer builds, `dense`
   times shorter on request. */
static uint64_t sweep_step(uint64_t base, unsigned dense) {
  return (base * SPARSE / dense) | 1u;
}

static void test_damaged_directories_open_a_correct_prefix_or_are_refused(void **state) {
  (void)state;
  unsigned dense = 1;
  const char *env = getenv("TG_CORRUPTION_SWEEP");
  if (env && atoi(env) > 0) dense = (unsigned)atoi(env);
  struct stat st;
  /* tmpfs when there is one: every case opens a store, which syncs
     several files. */
  const char *parent = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : NULL;
  assert_int_equal(tgp_mkdtemp(root, sizeof root, parent, "test_corruption"), 0);
  snprintf(tmpl, sizeof tmpl, "%s/template", root);
  snprintf(work, sizeof work, "%s/case", root);
  build(tmpl);
  layout(tmpl);
  uint32_t psize = 0;
  uint64_t used = tgt_checkpoint_used(tmpl, &psize);
  assert_true(psize >= 512 && used >= 4 * (uint64_t)psize);
  char path[400], what[160];

  /* The copy itself opens whole: the sweep starts from a good directory. */
  fresh_copy();
  check_case(TRUNCATE, nops, 0, "no damage");
  assert_int_equal(counts[TRUNCATE][OPENED_WHOLE], 1);
  counts[TRUNCATE][OPENED_WHOLE] = 0;

  /* Truncation at every byte of the last segment from the start of its
     second-to-last record's frame to where its data ends. */
  uint64_t from = rec_seg[nops - 1] == seg_first[nseg - 1] ? rec_end[nops - 2] : 64;
  for (uint64_t at = from; at <= log_end; at += DENSE_STEP) {
    fresh_copy();
    seg_path(path, sizeof path, work, nseg - 1);
    assert_int_equal(truncate(path, (off_t)at), 0);
    snprintf(what, sizeof what, "%s cut at %" PRIu64, strrchr(path, '/') + 1, at);
    check_case(TRUNCATE, records_before(at), 0, what);
  }

  /* Bit flips: every 13th bit of each segment's header, every 457th of
     the rest of each segment, every 997th of data.mdb's pages in use,
     every 5th of the identity file (TG_CORRUPTION_SWEEP=N: N times as
     many). The steps are odd, so every bit position of a byte comes up. */
  uint64_t step_hdr = sweep_step(13, dense), step = sweep_step(457, dense), bit = 0;
  for (size_t i = 0; i < nseg; i++) {
    for (; bit < 8 * seg_size[i]; bit += bit < 64 * 8 ? step_hdr : step) {
      fresh_copy();
      seg_path(path, sizeof path, work, i);
      flip_bit(path, bit);
      snprintf(what, sizeof what, "%s bit %" PRIu64 " (offset %" PRIu64 ")",
               strrchr(path, '/') + 1, bit, bit / 8);
      check_case(FLIP_SEGMENT, nops, 0, what);
    }
    bit %= step;
  }
  uint64_t step_ckpt = sweep_step(997, dense);
  for (bit = 5; bit < 8 * used; bit += step_ckpt) {
    fresh_copy();
    snprintf(path, sizeof path, "%s/checkpoint/data.mdb", work);
    flip_bit(path, bit);
    snprintf(what, sizeof what, "data.mdb bit %" PRIu64 " (page %" PRIu64 ")", bit,
             bit / 8 / psize);
    check_case(FLIP_CHECKPOINT, nops, 0, what);
  }
  snprintf(path, sizeof path, "%s/TOKENGRAPH", tmpl);
  uint64_t idsize = tgt_file_size(path);
  for (bit = 0; bit < 8 * idsize; bit += sweep_step(5, dense)) {
    fresh_copy();
    snprintf(path, sizeof path, "%s/TOKENGRAPH", work);
    flip_bit(path, bit);
    snprintf(what, sizeof what, "TOKENGRAPH bit %" PRIu64, bit);
    check_case(FLIP_IDENTITY, nops, 0, what);
  }

  /* Each sector of each segment, each page of data.mdb, zeroed. */
  for (size_t i = 0; i < nseg; i++)
    for (uint64_t off = 0; off < seg_size[i]; off += 512 * DENSE_STEP) {
      fresh_copy();
      seg_path(path, sizeof path, work, i);
      zero_range(path, off, 512);
      snprintf(what, sizeof what, "%s sector at %" PRIu64, strrchr(path, '/') + 1, off);
      int erased = i == nseg - 1 && off < log_end && log_end <= off + 512;
      check_case(ZERO_SECTOR, erased ? records_before(off) : nops, erased, what);
    }
  for (uint64_t pg = 0; pg * psize < used; pg += DENSE_STEP) {
    fresh_copy();
    snprintf(path, sizeof path, "%s/checkpoint/data.mdb", work);
    zero_range(path, pg * psize, psize);
    snprintf(what, sizeof what, "data.mdb page %" PRIu64, pg);
    check_case(ZERO_PAGE, nops, 0, what);
  }

  /* Each segment deleted: the first, the middle ones, the last. */
  for (size_t i = 0; i < nseg; i++) {
    fresh_copy();
    seg_path(path, sizeof path, work, i);
    assert_int_equal(unlink(path), 0);
    snprintf(what, sizeof what, "%s deleted", strrchr(path, '/') + 1);
    check_case(DELETE_SEGMENT, nops, 0, what);
  }

  print_message("# %u operations (LSN 1..%u), checkpoint at LSN %" PRIu64 ", %zu segments "
                "of %u bytes, data.mdb %" PRIu64 " bytes in use; %u cases, %u also through "
                "tg-replay verify --json\n",
                nops, nops, ckpt_lsn, nseg, SEG_BYTES, used, ncases, verified);
  unsigned total[NOUTCOMES] = {0};
  for (int k = 0; k < NKINDS; k++) {
    print_message("# %s:", kind_name[k]);
    for (int o = 0; o < NOUTCOMES; o++) {
      total[o] += counts[k][o];
      if (counts[k][o]) print_message(" %s %u;", outcome_name[o], counts[k][o]);
    }
    print_message("\n");
  }
  print_message("# all:");
  for (int o = 0; o < NOUTCOMES; o++)
    if (total[o]) print_message(" %s %u;", outcome_name[o], total[o]);
  print_message("\n");
  if (failures) fail_msg("%u damaged directories were not handled as they must be", failures);
  /* Every kind of damage met a refusal somewhere; truncations and flips
     also left directories that open. */
  assert_true(counts[TRUNCATE][OPENED_PREFIX] > 0);
  assert_true(counts[FLIP_SEGMENT][REFUSED_CORRUPT] > 0);
  assert_true(counts[FLIP_SEGMENT][OPENED_WHOLE] + counts[FLIP_SEGMENT][OPENED_WHOLE_CUT] > 0);
  assert_true(counts[FLIP_CHECKPOINT][REFUSED_CORRUPT] > 0);
  assert_true(counts[ZERO_SECTOR][REFUSED_CORRUPT] > 0);
  assert_true(counts[ZERO_PAGE][REFUSED_CORRUPT] > 0);
  assert_true(counts[DELETE_SEGMENT][REFUSED_CORRUPT] > 0);
}

/* ---- what the sweep found, one case each ------------------------------------ */

/* A STRICT store of n tokens in tgt_data, closed. */
static void strict_tokens(uint32_t n) {
  tg_store_config cfg = config();
  tg_store *s = tgt_open(tgt_data, &cfg);
  for (uint32_t i = 0; i < n; i++) {
    uint32_t id;
    assert_int_equal(tg_token_create(s, NULL, &id), 0);
  }
  assert_int_equal(tg_store_close(s), 0);
}

/* The end of record `lsn`'s frame in the log of tgt_data, and its segment. */
static uint64_t frame_end(uint64_t lsn, uint64_t *segment) {
  tg_wal_reader *r = NULL;
  assert_int_equal(tg_wal_reader_open(&r, tgt_wal, lsn), 0);
  tg_wal_record rec;
  assert_int_equal(tg_wal_reader_next(r, &rec), 1);
  assert_int_equal(rec.lsn, lsn);
  *segment = rec.segment;
  uint64_t end = rec.offset + ((16u + rec.len + 7u) & ~7u);
  tg_wal_reader_close(r);
  return end;
}

/* A cut exactly after a frame left a log that read as ending cleanly
   there: the open lost acknowledged STRICT records and said nothing. The
   segment is shorter than its preallocation, which only a cut makes. */
static void test_a_strict_log_cut_at_a_frame_boundary_reports_the_loss(void **state) {
  (void)state;
  strict_tokens(10);
  uint64_t seg, at = frame_end(8, &seg);
  char path[320];
  tgt_seg_path(path, sizeof path, seg, "");
  assert_int_equal(truncate(path, (off_t)at), 0);

  tg_inspect_report rep;
  char msg[512] = "";
  assert_int_equal(tg_store_inspect(tgt_data, &rep, NULL, NULL, msg, sizeof msg), 0);
  assert_int_equal(rep.end.reason, TG_WAL_END_TORN);
  assert_int_equal(rep.end.offset, at);
  assert_int_equal(rep.last_lsn, 8);
  const char *args[] = {"verify", tgt_data, "--json", NULL};
  tgt_run_out out = tgt_run(TG_REPLAY_BIN, args, NULL, tgt_root);
  assert_int_equal(out.status, 1); /* torn tail */
  assert_non_null(strstr(out.out, "\"end\":\"torn_tail\""));
  tgt_run_free(&out);

  tg_store_config cfg = config();
  tg_store *s = tgt_open(tgt_data, &cfg);
  tg_recovery_info ri;
  assert_int_equal(tg_store_recovery_info(s, &ri), 0);
  assert_int_equal(ri.torn_tail, 1);
  assert_int_equal(ri.torn_offset, at);
  assert_int_equal(ri.last_lsn, 8);
  assert_int_equal(tgt_stats(s).live_tokens, 8);
  assert_int_equal(tg_store_close(s), 0);
  /* Recovery preallocated the segment again: the next open is clean. */
  s = tgt_open(tgt_data, &cfg);
  assert_int_equal(tg_store_recovery_info(s, &ri), 0);
  assert_int_equal(ri.torn_tail, 0);
  assert_int_equal(ri.last_lsn, 8);
  assert_int_equal(tg_store_close(s), 0);
}

/* The limit the sweep counts apart (OPENED_ERASED_END): zeros over the
   log's last frames and the DURABLE marker after them, with only zeros
   beyond, are what a power loss before those writes reached the disk
   leaves. Nothing in the segment tells them apart, so the open shows the
   records before the zeros and reports no loss. */
static void test_zeros_over_the_logs_last_frames_read_as_an_end_never_written(void **state) {
  (void)state;
  strict_tokens(10);
  uint64_t seg, at = frame_end(8, &seg);
  char path[320];
  tgt_seg_path(path, sizeof path, seg, "");
  uint64_t size = tgt_file_size(path);
  unsigned char *z = calloc(1, size - at);
  assert_non_null(z);
  int fd = open(path, O_WRONLY);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, z, size - at, (off_t)at), (ssize_t)(size - at));
  close(fd);
  free(z);
  tg_store_config cfg = config();
  tg_store *s = tgt_open(tgt_data, &cfg);
  tg_recovery_info ri;
  assert_int_equal(tg_store_recovery_info(s, &ri), 0);
  assert_int_equal(ri.torn_tail, 0);
  assert_int_equal(ri.last_lsn, 8);
  assert_int_equal(tgt_stats(s).live_tokens, 8);
  assert_int_equal(tg_store_close(s), 0);
}

/* A flipped bit made the identity file claim format 9: the refusal named
   the directory, not the file. */
static void test_a_newer_identity_format_is_refused_naming_the_file(void **state) {
  (void)state;
  strict_tokens(1);
  char p[300];
  snprintf(p, sizeof p, "%s/TOKENGRAPH", tgt_data);
  tgt_write_file(p, "tokengraph data directory\nformat 9\n");
  tg_store *s = NULL;
  char msg[512] = "";
  tg_store_config cfg = config();
  assert_int_equal(tg_store_open_msg(&s, tgt_data, &cfg, msg, sizeof msg), TG_EVERSION);
  assert_non_null(strstr(msg, p));
  assert_non_null(strstr(msg, "format 9"));
}

/* A flipped bit in the LMDB data version of data.mdb's second meta page:
   the refusal did not say which page. */
static void test_an_lmdb_data_version_flip_is_refused_naming_the_meta_page(void **state) {
  (void)state;
  strict_tokens(5);
  tg_store_config cfg = config();
  tg_store *s = tgt_open(tgt_data, &cfg);
  assert_int_equal(tg_checkpoint(s), 0);
  assert_int_equal(tg_store_close(s), 0);
  uint32_t psize = 0;
  tgt_checkpoint_used(tgt_data, &psize);
  char p[300];
  snprintf(p, sizeof p, "%s/checkpoint/data.mdb", tgt_data);
  /* The meta record follows the 16-byte page header: magic, then the
     version (u32). */
  flip_bit(p, ((uint64_t)psize + 16 + 4) * 8 + 3);
  char msg[512] = "";
  assert_int_equal(tg_store_open_msg(&s, tgt_data, &cfg, msg, sizeof msg), TG_EVERSION);
  assert_non_null(strstr(msg, p));
  assert_non_null(strstr(msg, "meta page 1"));
  tg_inspect_report rep;
  char imsg[512] = "";
  assert_int_equal(tg_store_inspect(tgt_data, &rep, NULL, NULL, imsg, sizeof imsg), TG_EVERSION);
  assert_string_equal(imsg, msg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    TGT_TEST(test_a_strict_log_cut_at_a_frame_boundary_reports_the_loss),
    TGT_TEST(test_zeros_over_the_logs_last_frames_read_as_an_end_never_written),
    TGT_TEST(test_a_newer_identity_format_is_refused_naming_the_file),
    TGT_TEST(test_an_lmdb_data_version_flip_is_refused_naming_the_meta_page),
    cmocka_unit_test_teardown(test_damaged_directories_open_a_correct_prefix_or_are_refused,
                              sweep_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
