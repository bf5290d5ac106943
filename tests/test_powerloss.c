/*
 * Simulated power losses (tests/powerloss.h): a child opens a durable
 * store with the I/O seam recording, runs writer threads, and is killed
 * (kill -9) at a random moment; the parent then builds what the disk could
 * hold after a power loss at that moment (unsynced writes dropped, torn at
 * a sector, or kept as a random subset of 4 KiB pages; directory entries
 * durable only after a directory fsync, or as they were), opens that image
 * and checks it against what the threads were told:
 *
 *   - the image opens (a torn or garbled unsynced tail is cut, never
 *     refused as corruption);
 *   - every marker frame the WAL wrote vouches only for bytes that a
 *     finished fdatasync covered (checked on the journal, powerloss.h);
 *   - the tokens written before the child started (a store the parent made
 *     and closed) are all there, exact;
 *   - each thread's tokens are exactly the result of a prefix of that
 *     thread's calls (a thread's calls are sequential, so the log holds
 *     them in order): nothing partial, nothing reordered, nothing invented;
 *   - STRICT: the prefix includes every call that returned (was
 *     acknowledged) before the kill;
 *   - BALANCED: the oldest acknowledged call that is missing was
 *     acknowledged at most --max-window-ms before the kill (reported
 *     always; enforced when the option is given); with --check-bound, at
 *     most sync_interval_ms + one fdatasync before it (balanced_bound_ns
 *     below), and every write the WAL handed to the kernel was fdatasynced
 *     within that bound less the linger.
 *
 *   test_powerloss [--iterations N] [--seed S] [--threads T]
 *                  [--level strict|balanced|relaxed|all]
 *                  [--dir-model on|off|random] [--model drop|torn|pages|random]
 *                  [--max-window-ms MS] [--check-bound] [--segment-kib K]
 *                  [--hog N] [--verbose] [--keep]
 *
 * --hog N runs N processes that only burn CPU for the whole run, beside
 * the child's writer threads: the load under which appenders outrun the
 * WAL's writer.
 *
 * Exit status 0 when every check held, 1 on the first failure (the images
 * are kept under the printed directory), 64 on a usage error.
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/io.h"
#include "powerloss.h"
#include "tokengraph/tokengraph.h"

enum { MAX_THREADS = 8, MAX_OPS = 1 << 16, BASE_TOKENS = 200 };
enum { OP_CREATE = 1, OP_UPDATE = 2, OP_DELETE = 3 };

typedef struct op {
  uint8_t type;
  uint32_t id;          /* create: set once acknowledged; others: the target */
  uint32_t version;     /* the token's weight after the call */
  uint64_t ack_ns;      /* CLOCK_MONOTONIC when the call returned 0 */
} op;

typedef struct shared {  /* MAP_SHARED between the child and the parent */
  _Atomic uint32_t issued[MAX_THREADS]; /* calls started */
  _Atomic uint32_t acked[MAX_THREADS];  /* calls returned 0 */
  _Atomic int ready;
  pl_sync_stats sync;                   /* the child's WAL fdatasyncs */
  _Atomic uint64_t late_max_ns;         /* the child's scheduling probe: the
                                           latest a 1 ms sleep woke up ... */
  _Atomic uint64_t sleep_start_ns;      /* ... and when its current sleep
                                           began (0: not started) */
  op ops[MAX_THREADS][MAX_OPS];
} shared;

typedef struct options {
  uint64_t iterations, seed, max_window_ms, segment_kib;
  int threads, level, dir_model, keep, verbose, check_bound, model, hogs;
} options;

static shared *sh;
static tg_store *child_store;
static int child_stop;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t mix(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static tg_token make_token(int thread, uint32_t seq, uint32_t version) {
  tg_token t;
  memset(&t, 0, sizeof t);
  t.coord[0][0] = (int16_t)(thread + 1); /* 0: the base tokens */
  t.coord[0][1] = (int16_t)(seq & 0x7fff);
  t.coord[0][2] = (int16_t)(seq >> 15);
  t.timestamp = seq;
  t.weight = (float)version;
  return t;
}

typedef struct worker {
  int t;
  uint64_t seed;
} worker;

static void *worker_main(void *arg) {
  worker *w = arg;
  uint32_t live[MAX_OPS], nlive = 0, version = 0;
  for (uint32_t i = 0; i < MAX_OPS && !child_stop; i++) {
    op *o = &sh->ops[w->t][i];
    uint64_t r = mix(&w->seed) % 10;
    int rc;
    version++;
    if (nlive == 0 || r < 5) {
      o->type = OP_CREATE;
      o->version = version;
      atomic_store_explicit(&sh->issued[w->t], i + 1, memory_order_release);
      tg_token tk = make_token(w->t, i, version);
      uint32_t id = 0;
      rc = tg_token_create(child_store, &tk, &id);
      o->id = id;
      if (rc == 0) live[nlive++] = id;
    } else if (r < 8) {
      uint32_t k = (uint32_t)(mix(&w->seed) % nlive);
      o->type = OP_UPDATE;
      o->id = live[k];
      o->version = version;
      atomic_store_explicit(&sh->issued[w->t], i + 1, memory_order_release);
      tg_token tk;
      rc = tg_token_get(child_store, live[k], &tk);
      if (rc == 0) {
        tk.weight = (float)version;
        rc = tg_token_update(child_store, &tk);
      }
    } else {
      uint32_t k = (uint32_t)(mix(&w->seed) % nlive);
      o->type = OP_DELETE;
      o->id = live[k];
      atomic_store_explicit(&sh->issued[w->t], i + 1, memory_order_release);
      rc = tg_token_delete(child_store, live[k]);
      if (rc == 0) live[k] = live[--nlive];
    }
    if (rc) {
      fprintf(stderr, "child: thread %d call %u failed: %s\n", w->t, i, tg_err_name(rc));
      _exit(3);
    }
    o->ack_ns = now_ns();
    atomic_store_explicit(&sh->acked[w->t], i + 1, memory_order_release);
  }
  return NULL;
}

/* BALANCED's power-loss bound (docs/durability.md, "The BALANCED window"):
   a record is written within linger_us of its append when the writer is
   idle, and within a quarter of sync_interval_ms when it is busy (the
   WAL's pacing), and the sync thread starts an fdatasync every three
   quarters of sync_interval_ms counted from the start of the previous one,
   so it is durable at most sync_interval_ms plus one fdatasync after its
   append (the check of the write alone below keeps the whole interval) -
   when an fdatasync takes longer than
   the interval, the next one starts only when it returns, and the bound
   is then two fdatasyncs: max(sync_interval_ms, one fdatasync) + one
   fdatasync. "One fdatasync" is the longest the run observed
   (pl_sync_stats: from the call until the journal holds it).
   The scheduling allowance: the writer and then the sync thread must each
   be given a core once (after the linger, at the deadline). The child's
   probe thread measures how late a sleeping thread of that process is
   woken in the same run (late_max_ns), which covers load from other
   processes; twice that. The probe, woken every millisecond, is favoured
   by the scheduler over a thread that just ran long (the writer) or that
   waits on a lock held by a preempted thread, so one scheduling period is
   added on top: CFS's default sched_latency_ns on 2 CPUs, 12 ms (6 ms x
   (1 + log2 2)), the longest a runnable thread waits for its turn behind
   the three appenders that keep both cores busy. Plus 1 ms for the
   measurement itself (the acknowledgement time is read after the call
   returns, the loss time after kill(2) returns, the journal record of a
   sync is written after it). */
#define INTERVAL_MS 10u            /* sync_interval_ms, set in store_cfg */
#define LINGER_NS 1000000.0        /* linger_us (1 ms), set in store_cfg */
#define MEASURE_SLACK_NS 13000000.0 /* one scheduling period + 1 ms */

static uint64_t balanced_bound_ns(int level, uint64_t sync_max_ns, uint64_t late_max_ns) {
  if (level != TG_BALANCED) return 0;
  uint64_t interval = (uint64_t)INTERVAL_MS * 1000000u;
  return (sync_max_ns > interval ? sync_max_ns : interval) + sync_max_ns +
         (uint64_t)LINGER_NS + 2 * late_max_ns + (uint64_t)MEASURE_SLACK_NS;
}

static uint64_t segment_bytes = 256 << 10; /* segment switches within a run */

static void store_cfg(tg_store_config *c, int level) {
  tg_store_config_init(c);
  c->wal.level = level;
  c->wal.segment_bytes = segment_bytes;
  c->wal.sync_interval_ms = INTERVAL_MS; /* the bound below is computed from these */
  c->wal.linger_us = (uint32_t)(LINGER_NS / 1000);
  c->crash_dump = 0;
}

/* How late a thread of the child that sleeps 1 ms is woken: what the WAL's
   writer (lingering) and sync thread (waiting for its deadline) also wait
   for before they run, when the appenders and everything else on the
   machine keep the cores busy. */
static void *probe_main(void *arg) {
  (void)arg;
  for (;;) {
    uint64_t t0 = now_ns();
    atomic_store_explicit(&sh->sleep_start_ns, t0, memory_order_relaxed);
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
    uint64_t late = now_ns() - t0 - 1000000u;
    if (late > atomic_load_explicit(&sh->late_max_ns, memory_order_relaxed))
      atomic_store_explicit(&sh->late_max_ns, late, memory_order_relaxed);
  }
  return NULL;
}

static void child_main(const options *o, const char *dir, const char *journal,
                       uint64_t seed, int level) {
  pl_record_sync_stats(&sh->sync);
  pthread_t probe;
  pthread_create(&probe, NULL, probe_main, NULL);
  if (pl_record_start(journal)) _exit(4);
  tg_store_config c;
  store_cfg(&c, level);
  char msg[512] = "";
  int rc = tg_store_open_msg(&child_store, dir, &c, msg, sizeof msg);
  if (rc) {
    fprintf(stderr, "child: open: %s: %s\n", tg_err_name(rc), msg);
    _exit(5);
  }
  atomic_store(&sh->ready, 1);
  pthread_t th[MAX_THREADS];
  worker w[MAX_THREADS];
  for (int t = 0; t < o->threads; t++) {
    w[t] = (worker){t, seed * 131 + (uint64_t)t};
    pthread_create(&th[t], NULL, worker_main, &w[t]);
  }
  for (int t = 0; t < o->threads; t++) pthread_join(th[t], NULL);
  for (;;) pause(); /* wait for the kill */
}

/* ---- the parent's checks ---------------------------------------------------- */

/* The image is what a disk holds after the power came back: another boot.
   The WAL's ring file (a page-cache copy of the queue that only a process
   crash within the same boot may use) must then be ignored, as the library
   ignores it after a real reboot. */
static int other_boot(char *out, size_t n) {
  snprintf(out, n, "%s", "00000000-0000-0000-0000-powerloss000");
  return 0;
}

static void simulate_reboot(int on) {
  static int (*real_boot_id)(char *, size_t);
  if (on) {
    real_boot_id = tg__io.boot_id;
    tg__io.boot_id = other_boot;
  } else {
    tg__io.boot_id = real_boot_id;
  }
}

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "FAIL: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  return 1;
}

/* The version each id of thread t holds after its first k calls: ver[id]
   (0: not live). Returns the number of ids differing from got[]. */
typedef struct checker {
  uint32_t *want, *got; /* indexed by id */
  uint32_t cap;
  int64_t diff;
} checker;

static void set_want(checker *c, uint32_t id, uint32_t v) {
  if (id >= c->cap) return;
  c->diff -= c->want[id] != c->got[id];
  c->want[id] = v;
  c->diff += c->want[id] != c->got[id];
}

static int check_image(const options *o, const char *img, int level, int fresh,
                       uint64_t kill_ns, uint64_t *max_window_ns, uint64_t *lost_acked) {
  tg_store_config c;
  store_cfg(&c, level);
  tg_store *s = NULL;
  char msg[512] = "";
  int rc = tg_store_open_msg(&s, img, &c, msg, sizeof msg);
  if (rc) return fail("the image does not open: %s: %s", tg_err_name(rc), msg);
  uint32_t cap = 1;
  for (int t = 0; t < o->threads; t++) cap += atomic_load(&sh->issued[t]);
  cap += BASE_TOKENS + 16;
  int bad = 0;
  checker ck = {calloc(cap, 4), calloc(cap, 4), cap, 0};
  int *owner = calloc(cap, sizeof *owner);
  uint32_t *gotv = calloc(cap, 4);
  /* Every id ever handed out is below cap: one per create. */
  for (uint32_t id = 1; id < cap; id++) {
    tg_token tk;
    if (tg_token_get(s, id, &tk)) continue;
    owner[id] = tk.coord[0][0];
    if (owner[id] == 0) continue;
    gotv[id] = (uint32_t)tk.weight;
  }
  uint32_t base_found = 0;
  for (uint32_t id = 1; id < cap; id++) {
    tg_token tk;
    if (tg_token_get(s, id, &tk) == 0 && owner[id] == 0) base_found++;
  }
  if (base_found != (fresh ? 0u : (uint32_t)BASE_TOKENS))
    bad = fail("%u of the %d tokens written before the child are there", base_found,
               fresh ? 0 : BASE_TOKENS);
  for (int t = 0; !bad && t < o->threads; t++) {
    uint32_t issued = atomic_load(&sh->issued[t]), acked = atomic_load(&sh->acked[t]);
    memset(ck.want, 0, cap * 4);
    ck.diff = 0;
    for (uint32_t id = 1; id < cap; id++) { /* this thread's tokens in the image */
      ck.got[id] = owner[id] == t + 1 ? gotv[id] : 0;
      ck.diff += ck.got[id] != 0;
    }
    int64_t found = ck.diff == 0 ? 0 : -1;
    for (uint32_t k = 0; k < issued; k++) {
      op *p = &sh->ops[t][k];
      if (p->type == OP_CREATE) {
        uint32_t id = p->id;
        if (k >= acked) { /* in flight: its id, if it got one, is the unowned one */
          id = 0;
          for (uint32_t x = 1; x < cap; x++)
            if (ck.want[x] == 0 && ck.got[x] == p->version) id = x;
        }
        if (id) set_want(&ck, id, p->version);
      } else if (p->type == OP_UPDATE) {
        set_want(&ck, p->id, p->version);
      } else {
        set_want(&ck, p->id, 0);
      }
      if (ck.diff == 0) found = (int64_t)k + 1; /* the longest matching prefix */
    }
    if (found < 0) {
      bad = fail("thread %d: the image is no prefix of its %u calls (%u acknowledged)", t,
                 issued, acked);
      break;
    }
    if ((uint32_t)found < acked) {
      *lost_acked += acked - (uint32_t)found;
      uint64_t w = kill_ns - sh->ops[t][found].ack_ns;
      if (w > *max_window_ns) *max_window_ns = w;
      if (level == TG_STRICT)
        bad = fail("thread %d: STRICT lost acknowledged calls: the image holds %lld of %u "
                   "acknowledged (%u issued)", t, (long long)found, acked, issued);
      else if (o->max_window_ms && w > o->max_window_ms * 1000000ull)
        bad = fail("thread %d: lost a call acknowledged %.1f ms before the power loss "
                   "(bound %llu ms)", t, (double)w / 1e6, (unsigned long long)o->max_window_ms);
    }
  }
  free(ck.want);
  free(ck.got);
  free(owner);
  free(gotv);
  rc = tg_store_close(s);
  if (!bad && rc) bad = fail("close of the image: %s", tg_err_name(rc));
  return bad;
}

static void rm_rf(const char *p) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", p);
  if (system(cmd)) {
  }
}

static int make_base(const char *dir, int level) {
  tg_store_config c;
  store_cfg(&c, level);
  tg_store *s = NULL;
  if (tg_store_open(&s, dir, &c)) return -1;
  for (uint32_t i = 0; i < BASE_TOKENS; i++) {
    tg_token t = make_token(-1, i, 1);
    uint32_t id;
    if (tg_token_create(s, &t, &id)) return -1;
  }
  return tg_store_close(s);
}

typedef struct lvl_report {
  uint64_t *windows, nlost;  /* each loss's oldest lost acknowledgement, ns */
  uint64_t window_max, window_max_sync, window_max_late;
  int64_t worst_excess;      /* max over losses of window - bound (BALANCED) */
  uint64_t lag_max;          /* the oldest unsynced WAL write at the loss */
  int64_t lag_excess;        /* max of lag - its bound (BALANCED) */
  uint64_t syncs, sync_total, sync_max;
} lvl_report;

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static double pct(lvl_report *lr, unsigned p) {
  if (!lr->nlost) return 0;
  qsort(lr->windows, lr->nlost, 8, cmp_u64);
  return (double)lr->windows[(lr->nlost - 1) * p / 100];
}

static const char *level_name(int l) {
  return l == TG_STRICT ? "strict" : l == TG_BALANCED ? "balanced" : "relaxed";
}

int main(int argc, char **argv) {
  options o = {200, 1, 0, 0, 3, -1, -1, 0, 0, 0, -1, 0};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--iterations") && v) o.iterations = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(a, "--seed") && v) o.seed = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(a, "--threads") && v) o.threads = atoi(argv[++i]);
    else if (!strcmp(a, "--max-window-ms") && v) o.max_window_ms = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(a, "--segment-kib") && v) o.segment_kib = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(a, "--verbose")) o.verbose = 1;
    else if (!strcmp(a, "--check-bound")) o.check_bound = 1;
    else if (!strcmp(a, "--hog") && v) o.hogs = atoi(argv[++i]);
    else if (!strcmp(a, "--level") && v) {
      i++;
      o.level = !strcmp(v, "strict") ? TG_STRICT : !strcmp(v, "balanced") ? TG_BALANCED
              : !strcmp(v, "relaxed") ? TG_RELAXED : -1;
      if (o.level < 0 && strcmp(v, "all")) return fprintf(stderr, "bad --level\n"), 64;
    } else if (!strcmp(a, "--dir-model") && v) {
      i++;
      o.dir_model = !strcmp(v, "on") ? 1 : !strcmp(v, "off") ? 0 : -1;
    } else if (!strcmp(a, "--model") && v) {
      i++;
      o.model = !strcmp(v, "drop") ? PL_DROP : !strcmp(v, "torn") ? PL_TORN
              : !strcmp(v, "pages") ? PL_PAGES : -1;
      if (o.model < 0 && strcmp(v, "random")) return fprintf(stderr, "bad --model\n"), 64;
    } else if (!strcmp(a, "--keep")) o.keep = 1;
    else if (!strcmp(a, "--help")) {
      printf("usage: test_powerloss [--iterations N] [--seed S] [--threads T] "
             "[--level strict|balanced|relaxed|all] [--dir-model on|off|random] "
             "[--model drop|torn|pages|random] [--max-window-ms MS] [--check-bound] "
             "[--segment-kib K] [--hog N] [--verbose] [--keep]\n");
      return 0;
    } else return fprintf(stderr, "unknown option %s\n", a), 64;
  }
  if (o.threads < 1 || o.threads > MAX_THREADS) return fprintf(stderr, "bad --threads\n"), 64;
  if (o.hogs < 0 || o.hogs > 16) return fprintf(stderr, "bad --hog\n"), 64;
  if (o.segment_kib && (o.segment_kib < 4 || o.segment_kib % 4))
    return fprintf(stderr, "bad --segment-kib\n"), 64;
  sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (sh == MAP_FAILED) return perror("mmap"), 1;
  char root[] = "/tmp/tg_powerloss_XXXXXX";
  if (!mkdtemp(root)) return perror("mkdtemp"), 1;
  uint64_t seed = o.seed, lost_total[3] = {0}, runs[3] = {0};
  lvl_report rep[3];
  memset(rep, 0, sizeof rep);
  for (int l = 0; l < 3; l++) rep[l].worst_excess = rep[l].lag_excess = INT64_MIN;
  for (int l = 0; l < 3; l++) rep[l].windows = calloc(o.iterations ? o.iterations : 1, 8);
  const char *mode_name[] = {"drop", "torn", "pages"};
  pid_t hog[16];
  for (int h = 0; h < o.hogs; h++) {
    hog[h] = fork();
    if (hog[h] == 0) {
      /* Burns CPU until killed; its parent dying ends it too. */
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      for (volatile uint64_t x = 0;; x++) {
      }
    }
  }
  uint64_t per_mode[3] = {0};
  int status = 0;
  for (uint64_t it = 0; it < o.iterations && !status; it++) {
    int level = o.level >= 0 ? o.level : (int)(mix(&seed) % 3);
    int fresh = mix(&seed) % 3 == 0;
    /* Without --segment-kib: a third of the runs in 256 KiB segments (one
       batch of the writer fills one: nearly every fdatasync is a switch's),
       the rest in 4 MiB ones (several fdatasyncs of the sync thread per
       segment, each followed by a DURABLE marker: a marker that claims
       bytes its fdatasync did not cover is caught there). */
    uint64_t seg_pick = mix(&seed);
    segment_bytes = o.segment_kib ? o.segment_kib << 10 : seg_pick % 3 == 0 ? 256u << 10 : 4u << 20;
    char dir[256], img[256], journal[256], base[256];
    snprintf(dir, sizeof dir, "%s/d%llu", root, (unsigned long long)it);
    snprintf(img, sizeof img, "%s/img%llu", root, (unsigned long long)it);
    snprintf(journal, sizeof journal, "%s/j%llu", root, (unsigned long long)it);
    snprintf(base, sizeof base, "%s/b%llu", root, (unsigned long long)it);
    if (!fresh && make_base(dir, level)) {
      status = fail("iteration %llu: could not make the base store", (unsigned long long)it);
      break;
    }
    memset(sh, 0, sizeof *sh);
    uint64_t cseed = mix(&seed);
    if (pl_snapshot(journal, dir, fresh ? NULL : base)) {
      status = fail("iteration %llu: snapshot of the base failed", (unsigned long long)it);
      break;
    }
    pid_t pid = fork();
    if (pid == 0) child_main(&o, dir, journal, cseed, level);
    /* Kill at a random moment: during the open, or 0.1-30 or 0.1-150 ms
       after it. */
    uint64_t r = mix(&seed);
    if (r % 5 == 0) {
      usleep((useconds_t)(mix(&seed) % 3000));
    } else {
      uint64_t t0 = now_ns();
      while (!atomic_load(&sh->ready) && now_ns() - t0 < 10ull * 1000000000ull) usleep(50);
      /* Half the losses come later, after several of the sync thread's
         fdatasyncs and the DURABLE markers that follow them: a marker that
         claimed bytes written while its fdatasync ran is then caught. */
      uint64_t span = mix(&seed) % 2 ? 30000 : 150000;
      usleep((useconds_t)(100 + mix(&seed) % span));
    }
    kill(pid, SIGKILL);
    uint64_t kill_ns = now_ns();
    int st = 0;
    waitpid(pid, &st, 0);
    if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)) {
      status = fail("iteration %llu: the child ended on its own (status %d)",
                    (unsigned long long)it, st);
      break;
    }
    int mode = (int)(mix(&seed) % 3);
    pl_model m = {o.model >= 0 ? o.model : mode,
                  o.dir_model >= 0 ? o.dir_model : (int)(mix(&seed) & 1), mix(&seed)};
    pl_stats ps;
    char msg[512] = "";
    if (pl_reconstruct(journal, dir, fresh ? NULL : base, img, &m, &ps, msg, sizeof msg)) {
      status = fail("iteration %llu: reconstruct: %s", (unsigned long long)it, msg);
      break;
    }
    if (ps.bad_markers) {
      status = fail("iteration %llu: %llu marker frame(s) vouch for bytes no finished "
                    "fdatasync covered; the first: %s", (unsigned long long)it,
                    (unsigned long long)ps.bad_markers, msg);
      o.keep = 1;
      break;
    }
    per_mode[m.mode]++;
    runs[level]++;
    uint64_t w = 0, lost = 0;
    struct stat sst;
    simulate_reboot(1);
    if (stat(img, &sst) == 0 && atomic_load(&sh->ready)) {
      if (check_image(&o, img, level, fresh, kill_ns, &w, &lost)) status = 1;
    } else if (stat(img, &sst) == 0) {
      /* Killed during the first open: the image must still open. */
      tg_store_config c;
      store_cfg(&c, level);
      tg_store *s = NULL;
      char m2[512] = "";
      int rc = tg_store_open_msg(&s, img, &c, m2, sizeof m2);
      if (rc) status = fail("iteration %llu: killed during open; the image does not open: %s: %s",
                            (unsigned long long)it, tg_err_name(rc), m2);
      else tg_store_close(s);
    }
    simulate_reboot(0);
    lost_total[level] += lost;
    uint64_t sync_max = atomic_load(&sh->sync.max_ns);
    /* An fdatasync still running at the loss counts as long as it ran. */
    if (ps.oldest_sync_begun_ns && kill_ns > ps.oldest_sync_begun_ns &&
        kill_ns - ps.oldest_sync_begun_ns > sync_max)
      sync_max = kill_ns - ps.oldest_sync_begun_ns;
    uint64_t late_max = atomic_load(&sh->late_max_ns);
    /* A sleep still unfinished at the loss was late by at least this. */
    uint64_t t_sleep = atomic_load(&sh->sleep_start_ns);
    if (t_sleep && kill_ns > t_sleep + 1000000u && kill_ns - t_sleep - 1000000u > late_max)
      late_max = kill_ns - t_sleep - 1000000u;
    lvl_report *lr = &rep[level];
    if (sync_max > lr->sync_max) lr->sync_max = sync_max;
    lr->syncs += atomic_load(&sh->sync.count);
    lr->sync_total += atomic_load(&sh->sync.total_ns);
    if (lost) {
      lr->windows[lr->nlost++] = w;
      /* The headroom against this loss's own bound: the fdatasyncs that
         decide its window are this child's. */
      uint64_t bound = balanced_bound_ns(level, sync_max, late_max);
      if (bound && (int64_t)(w - bound) > lr->worst_excess)
        lr->worst_excess = (int64_t)(w - bound);
      /* The whole window: the WAL paces appenders so that the writer's
         queue adds no more than the sync thread's shorter cadence leaves
         (docs/durability.md, "The BALANCED window"). */
      if (!status && o.check_bound && bound && w > bound)
        status = fail("iteration %llu: BALANCED lost a call acknowledged %.2f ms before the "
                      "power loss; the bound is %.2f ms (max(sync_interval_ms %u, the longest "
                      "fdatasync of this run %.2f ms) + that fdatasync + linger %.2f ms + twice "
                      "the latest wake-up %.2f ms + %.2f ms of scheduling period and "
                      "measurement)", (unsigned long long)it, (double)w / 1e6,
                      (double)bound / 1e6, (unsigned)INTERVAL_MS, (double)sync_max / 1e6,
                      LINGER_NS / 1e6, (double)late_max / 1e6, MEASURE_SLACK_NS / 1e6);
      if (w > lr->window_max) {
        lr->window_max = w;
        lr->window_max_sync = sync_max;
        lr->window_max_late = late_max;
      }
    }
    /* The sync thread's part, checked on its own: a write the writer
       handed to the kernel is durable within the bound (less the linger,
       which is before the write). The window above adds the writer's
       queue delay (acknowledged but not yet handed over), which the WAL's
       pacing keeps within a quarter of the interval. */
    uint64_t lag = ps.oldest_unsynced_wal_write_ns && kill_ns > ps.oldest_unsynced_wal_write_ns
                       ? kill_ns - ps.oldest_unsynced_wal_write_ns : 0;
    if (lag > lr->lag_max) lr->lag_max = lag;
    uint64_t lag_bound = balanced_bound_ns(level, sync_max, late_max);
    if (lag_bound) lag_bound -= (uint64_t)LINGER_NS;
    if (lag_bound && (int64_t)(lag - lag_bound) > lr->lag_excess)
      lr->lag_excess = (int64_t)(lag - lag_bound);
    if (!status && o.check_bound && lag_bound && lag > lag_bound)
      status = fail("iteration %llu: BALANCED: a write handed to the kernel %.2f ms before the "
                    "power loss was not yet fdatasynced; the bound is %.2f ms (max("
                    "sync_interval_ms %u, the longest fdatasync of this run %.2f ms) + that "
                    "fdatasync + twice the latest wake-up %.2f ms + %.2f ms of scheduling "
                    "period and measurement)",
                    (unsigned long long)it, (double)lag / 1e6, (double)lag_bound / 1e6,
                    (unsigned)INTERVAL_MS, (double)sync_max / 1e6, (double)late_max / 1e6,
                    MEASURE_SLACK_NS / 1e6);
    if (o.verbose)
      printf("iteration %llu %s: lost %llu, oldest lost %.2f ms, oldest unsynced write "
             "%.2f ms, longest fdatasync %.2f ms (of %llu), latest wake-up %.2f ms\n",
             (unsigned long long)it, level_name(level), (unsigned long long)lost,
             (double)w / 1e6, (double)lag / 1e6, (double)sync_max / 1e6,
             (unsigned long long)atomic_load(&sh->sync.count), (double)late_max / 1e6);
    if (status) {
      fprintf(stderr, "  iteration %llu, level %s, %s base, model %s, dir entries %s, "
              "%llu journal records, %llu unsynced writes (%llu kept), %llu names undone; "
              "kept under %s\n", (unsigned long long)it, level_name(level),
              fresh ? "no" : "a", mode_name[m.mode], m.dir_entries_need_fsync ? "need fsync" : "as is",
              (unsigned long long)ps.ops, (unsigned long long)ps.unsynced_writes,
              (unsigned long long)ps.unsynced_kept, (unsigned long long)ps.names_undone, root);
      o.keep = 1;
      break;
    }
    if (o.keep) continue; /* --keep: every iteration's files stay */
    rm_rf(dir);
    rm_rf(img);
    rm_rf(base);
    unlink(journal);
  }
  for (int h = 0; h < o.hogs; h++) {
    if (hog[h] > 0) {
      kill(hog[h], SIGKILL);
      waitpid(hog[h], NULL, 0);
    }
  }
  printf("power losses: strict %llu, balanced %llu, relaxed %llu (models: drop %llu, "
         "torn %llu, pages %llu)\n", (unsigned long long)runs[0], (unsigned long long)runs[1],
         (unsigned long long)runs[2], (unsigned long long)per_mode[0],
         (unsigned long long)per_mode[1], (unsigned long long)per_mode[2]);
  for (int l = 0; l < 3; l++) {
    lvl_report *lr = &rep[l];
    printf("  %-8s acknowledged calls lost %llu in %llu of %llu losses; oldest lost "
           "acknowledged before the loss: max %.2f ms, p99 %.2f, p90 %.2f, p50 %.2f ms; WAL "
           "fdatasyncs %llu, mean %.2f ms, longest %.2f ms\n",
           level_name(l), (unsigned long long)lost_total[l], (unsigned long long)lr->nlost,
           (unsigned long long)runs[l], lr->window_max / 1e6, pct(lr, 99) / 1e6,
           pct(lr, 90) / 1e6, pct(lr, 50) / 1e6, (unsigned long long)lr->syncs,
           lr->syncs ? (double)lr->sync_total / (double)lr->syncs / 1e6 : 0.0,
           lr->sync_max / 1e6);
    if (l == TG_BALANCED && lr->nlost)
      printf("  balanced bound per loss: max(sync_interval_ms %u, that run's longest fdatasync) "
             "+ that fdatasync + linger %.2f ms + twice that run's latest wake-up + %.2f ms; "
             "the max window's "
             "run: longest fdatasync %.2f ms, latest wake-up %.2f ms; window - bound at most "
             "%+.2f ms (checked%s)\n", (unsigned)INTERVAL_MS, LINGER_NS / 1e6, MEASURE_SLACK_NS / 1e6,
             lr->window_max_sync / 1e6, lr->window_max_late / 1e6, lr->worst_excess / 1e6,
             o.check_bound ? "" : " with --check-bound");
    if (l != TG_STRICT && runs[l])
      printf("  %-8s oldest write handed to the kernel and not fdatasynced at the loss: max "
             "%.2f ms%s", level_name(l), lr->lag_max / 1e6, l == TG_BALANCED ? "" : "\n");
    if (l == TG_BALANCED && runs[l])
      printf("; its bound less linger, checked%s: lag - bound at most %+.2f ms\n",
             o.check_bound ? "" : " with --check-bound", lr->lag_excess / 1e6);
    free(lr->windows);
  }
  if (!o.keep) rm_rf(root);
  printf("%s\n", status ? "FAILED" : "ok");
  return status;
}
