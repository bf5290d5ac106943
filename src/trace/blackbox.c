/*
 * The black box: a fixed ring of the last TG_BLACKBOX_EVENTS structured
 * events, kept in static memory so a fatal-signal handler can dump it
 * without allocating.
 *
 * Writers claim an index with one relaxed fetch_add and fill slot
 * index % capacity under a per-slot sequence number (a seqlock: seq = 0
 * while the slot is written, index + 1 once it is complete). A reader keeps
 * a slot only if it saw the same, expected sequence number before and after
 * copying it. A slot can be torn only if the ring laps a writer that was
 * preempted in the middle of its ~10 stores (4096 events in that time).
 *
 * Dumps format every number by hand and write through tg__fdbuf, so the
 * same code serves tg_blackbox_dump() and the signal handler and uses only
 * async-signal-safe calls (clock_gettime, getpid, and the I/O seam's
 * openat, write, fsync, renameat, unlinkat, whose defaults are the plain
 * system calls).
 *
 * The dump file (the store's DIR/blackbox.json) is written 0600 - it holds
 * fault addresses - to a temporary name and renamed over the file, both
 * relative to the directory's descriptor, opened when the path is set: a
 * symbolic link planted at either name is removed or replaced, never
 * followed, and a crash mid-dump leaves the previous dump whole.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/io.h"
#include "trace/trace_internal.h"

#define BB_MASK (TG_BLACKBOX_EVENTS - 1)
_Static_assert((TG_BLACKBOX_EVENTS & BB_MASK) == 0, "capacity is a power of two");

typedef struct bb_slot {
  uint64_t seq;     /* 0 while being written, else index + 1 */
  uint64_t ticks;   /* tg__ticks() when recorded */
  uint64_t type;    /* enum tg_bb_type */
  uint64_t tid;     /* kernel thread id of the recorder */
  uint64_t arg[4];  /* meaning depends on type, see trace.h */
} bb_slot;
_Static_assert(sizeof(bb_slot) == 64, "black-box slot is one cache line");

static _Alignas(64) bb_slot ring[TG_BLACKBOX_EVENTS];
static _Alignas(64) uint64_t bb_head; /* events ever recorded */
static TG__THREAD_LOCAL uint32_t bb_tid TG__TLS_MODEL;

/* The values are ABI (programs compiled against trace.h record types by
   value): a new type goes at the end of the map, so none of these moves. */
_Static_assert(TG_BB_OPEN == 1 && TG_BB_USER == 13, "black-box type values are stable");

/* The schema of trace.h, as the dump prints it. */
static const struct {
  const char *name;
  const char *arg[4]; /* NULL: not part of this event */
} types[TG_BB_TYPE_COUNT] = {
  [0] = {"unknown", {"a0", "a1", "a2", "a3"}},
#define BB_TYPE(e, name, l0, l1, l2, l3) [TG_BB_##e] = {#name, {l0, l1, l2, l3}},
  TG_BB_MAP(BB_TYPE)
#undef BB_TYPE
};

const char *tg__bb_type_name(int type) {
  if (type <= 0 || type >= TG_BB_TYPE_COUNT) return types[0].name;
  return types[type].name;
}

/* Async-signal-safe (no metrics shard, which may allocate). */
static void bb_record(int type, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3) {
  uint64_t t = tg__ticks();
  uint32_t tid = bb_tid;
  if (TG__UNLIKELY(tid == 0)) bb_tid = tid = (uint32_t)syscall(SYS_gettid);
  uint64_t i = __atomic_fetch_add(&bb_head, 1, __ATOMIC_RELAXED);
  bb_slot *s = &ring[i & BB_MASK];
  __atomic_store_n(&s->seq, 0, __ATOMIC_RELAXED);
  tg__fence_release();
  __atomic_store_n(&s->ticks, t, __ATOMIC_RELAXED);
  __atomic_store_n(&s->type, (uint64_t)type, __ATOMIC_RELAXED);
  __atomic_store_n(&s->tid, (uint64_t)tid, __ATOMIC_RELAXED);
  __atomic_store_n(&s->arg[0], a0, __ATOMIC_RELAXED);
  __atomic_store_n(&s->arg[1], a1, __ATOMIC_RELAXED);
  __atomic_store_n(&s->arg[2], a2, __ATOMIC_RELAXED);
  __atomic_store_n(&s->arg[3], a3, __ATOMIC_RELAXED);
  __atomic_store_n(&s->seq, i + 1, __ATOMIC_RELEASE);
}

void tg_blackbox_record(int type, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3) {
  if (type <= 0 || type >= TG_BB_TYPE_COUNT) type = TG_BB_USER;
  bb_record(type, a0, a1, a2, a3);
  tg__metric_slot_add(TG__METRIC_SLOT_BB + type, 1);
}

/* ---- dump ------------------------------------------------------------------ */

static int dump_fd(int fd, const char *reason, int signo) {
  tg__fdbuf fb; /* 4 KiB on the stack: fine on the 64 KiB alternate stack */
  tg__clock_map cm;
  tg__fb_init(&fb, fd);
  tg__clock_map_get(&cm);

  uint64_t h = __atomic_load_n(&bb_head, __ATOMIC_ACQUIRE);
  uint64_t lo = h > TG_BLACKBOX_EVENTS ? h - TG_BLACKBOX_EVENTS : 0;

  tg__fb_str(&fb, "{\"format\":\"tokengraph-blackbox\",\"version\":1,\"pid\":");
  tg__fb_i64(&fb, (int64_t)getpid());
  tg__fb_str(&fb, ",\"reason\":");
  tg__fb_json_str(&fb, reason);
  tg__fb_str(&fb, ",\"signal\":");
  tg__fb_i64(&fb, signo);
  tg__fb_str(&fb, ",\"dumped_unix_ns\":");
  tg__fb_u64(&fb, tg__real_ns());
  tg__fb_str(&fb, ",\"capacity\":");
  tg__fb_u64(&fb, TG_BLACKBOX_EVENTS);
  tg__fb_str(&fb, ",\"recorded\":");
  tg__fb_u64(&fb, h);
  tg__fb_str(&fb, ",\"overwritten\":");
  tg__fb_u64(&fb, lo);
  tg__fb_str(&fb, ",\"events\":[");

  int first = 1;
  for (uint64_t i = lo; i < h; i++) {
    bb_slot *s = &ring[i & BB_MASK], c;
    uint64_t s1 = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
    if (s1 != i + 1) continue; /* being written, or already lapped */
    c.ticks = __atomic_load_n(&s->ticks, __ATOMIC_RELAXED);
    c.type = __atomic_load_n(&s->type, __ATOMIC_RELAXED);
    c.tid = __atomic_load_n(&s->tid, __ATOMIC_RELAXED);
    for (int k = 0; k < 4; k++) c.arg[k] = __atomic_load_n(&s->arg[k], __ATOMIC_RELAXED);
    tg__fence_acquire();
    if (__atomic_load_n(&s->seq, __ATOMIC_RELAXED) != s1) continue;

    int type = (c.type > 0 && c.type < TG_BB_TYPE_COUNT) ? (int)c.type : 0;
    int64_t rel = tg__ticks_to_rel_ns(&cm, c.ticks);
    tg__fb_str(&fb, first ? "\n{\"seq\":" : ",\n{\"seq\":");
    first = 0;
    tg__fb_u64(&fb, i + 1);
    tg__fb_str(&fb, ",\"type\":");
    tg__fb_json_str(&fb, types[type].name);
    tg__fb_str(&fb, ",\"tid\":");
    tg__fb_u64(&fb, c.tid);
    tg__fb_str(&fb, ",\"mono_ns\":");
    tg__fb_i64(&fb, (int64_t)cm.mono0 + rel);
    tg__fb_str(&fb, ",\"unix_ns\":");
    tg__fb_i64(&fb, (int64_t)cm.real0 + rel);
    tg__fb_str(&fb, ",\"args\":{");
    int firstarg = 1;
    for (int k = 0; k < 4; k++) {
      if (types[type].arg[k] == NULL) continue;
      if (!firstarg) tg__fb_str(&fb, ",");
      firstarg = 0;
      tg__fb_json_str(&fb, types[type].arg[k]);
      tg__fb_str(&fb, ":");
      tg__fb_u64(&fb, c.arg[k]);
    }
    tg__fb_str(&fb, "}}");
  }
  tg__fb_str(&fb, "\n]}\n");
  return tg__fb_flush(&fb);
}

int tg_blackbox_dump_fd(int fd) {
  if (fd < 0) return TG_EINVAL;
  return dump_fd(fd, "request", 0);
}

static int dump_fill(FILE *f, void *arg) {
  (void)arg;
  if (fflush(f) != 0) return -errno;
  return dump_fd(fileno(f), "request", 0);
}

int tg_blackbox_dump(const char *path) {
  return tg__atomic_file_write(path, 0600, dump_fill, NULL);
}

/* ---- fatal signals ------------------------------------------------------------ */

static const int fatal_signals[] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE};
#define NFATAL ((int)(sizeof fatal_signals / sizeof fatal_signals[0]))

/* Where the handler dumps: crash_name in the directory open as crash_dirfd.
   Set under install_lock; the handler reads crash_dirfd atomically (-1: no
   dump) and crash_name after it (acquire). */
static int crash_dirfd = -1;
static char crash_name[256];
static struct sigaction saved[NFATAL]; /* dispositions before install */
static int installed;                  /* guarded by install_lock */
static int in_handler;                 /* first fatal signal only */
static char altstack[64 * 1024];
static int altstack_used;

static pthread_mutex_t install_lock = PTHREAD_MUTEX_INITIALIZER;

int tg_blackbox_set_path(const char *path) {
  char dir[4096];
  const char *base = NULL;
  int fd = -1, rc;
  if (path != NULL) {
    if (strlen(path) >= sizeof dir) return TG_EINVAL;
    if ((rc = tg__split_path(path, dir, sizeof dir, &base))) return TG_EINVAL;
    if (strlen(base) >= sizeof crash_name - 32) return TG_EINVAL; /* + ".tmp.<pid>" */
    fd = tg__openat(AT_FDCWD, dir, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0) return fd;
  }
  pthread_mutex_lock(&install_lock);
  /* The handler takes the descriptor, then the name. A fatal signal in
     another thread while this runs may find no descriptor (no dump), or
     the old one closed under it, or the name half rewritten: the dump is
     then lost, but nothing outside the directory can be written. Stores
     set the path at open, not while busy. */
  int old = __atomic_exchange_n(&crash_dirfd, -1, __ATOMIC_ACQ_REL);
  if (old >= 0) close(old);
  if (fd >= 0) {
    memcpy(crash_name, base, strlen(base) + 1);
    __atomic_store_n(&crash_dirfd, fd, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&install_lock);
  return 0;
}

/* The handler's dump: temporary file, fsync, rename, fsync the directory,
   all relative to dirfd. Async-signal-safe. */
static void crash_dump(int dirfd, int sig) {
  char tmp[sizeof crash_name];
  if (tg__tmp_name(tmp, sizeof tmp, crash_name, (long)getpid())) return;
  tg__unlinkat(dirfd, tmp, 0); /* a leftover, or a planted link */
  int fd = tg__openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
  if (fd < 0) return;
  int rc = dump_fd(fd, "signal", sig);
  if (!rc) rc = tg__fsync(fd);
  close(fd);
  if (!rc) rc = tg__renameat(dirfd, tmp, dirfd, crash_name);
  if (rc) {
    tg__unlinkat(dirfd, tmp, 0);
    return;
  }
  tg__fsync(dirfd);
}

static int signal_index(int sig) {
  for (int i = 0; i < NFATAL; i++)
    if (fatal_signals[i] == sig) return i;
  return -1;
}

static void on_fatal(int sig, siginfo_t *si, void *uctx) {
  (void)uctx;
  int saved_errno = errno;
  if (__atomic_exchange_n(&in_handler, 1, __ATOMIC_ACQ_REL) == 0) {
    bb_record(TG_BB_SIGNAL, (uint64_t)sig, si ? (uint64_t)(uintptr_t)si->si_addr : 0,
              si ? (uint64_t)(int64_t)si->si_code : 0, 0);
    int dirfd = __atomic_load_n(&crash_dirfd, __ATOMIC_ACQUIRE);
    if (dirfd >= 0) crash_dump(dirfd, sig);
  }
  /* Give the signal back to whoever had it (the default action unless the
     program had a handler) and re-raise: it stays blocked until we return,
     then kills the process as if we had never been here. A hardware fault
     would also simply recur when the faulting instruction reruns. */
  int i = signal_index(sig);
  if (i >= 0) {
    sigaction(sig, &saved[i], NULL);
  } else {
    signal(sig, SIG_DFL);
  }
  raise(sig);
  errno = saved_errno;
}

int tg_blackbox_install_signal_handlers(void) {
  int rc = 0;
  pthread_mutex_lock(&install_lock);
  if (installed) goto done;

  stack_t ss;
  if (!altstack_used && sigaltstack(NULL, &ss) == 0 && (ss.ss_flags & SS_DISABLE)) {
    ss.ss_sp = altstack;
    ss.ss_size = sizeof altstack;
    ss.ss_flags = 0;
    if (sigaltstack(&ss, NULL) == 0) altstack_used = 1;
  }

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fatal;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  for (int i = 0; i < NFATAL; i++) {
    if (sigaction(fatal_signals[i], &sa, &saved[i]) != 0) {
      rc = -errno;
      while (--i >= 0) sigaction(fatal_signals[i], &saved[i], NULL);
      goto done;
    }
  }
  installed = 1;
done:
  pthread_mutex_unlock(&install_lock);
  return rc;
}

void tg_blackbox_remove_signal_handlers(void) {
  pthread_mutex_lock(&install_lock);
  if (installed) {
    for (int i = 0; i < NFATAL; i++) sigaction(fatal_signals[i], &saved[i], NULL);
    installed = 0;
  }
  pthread_mutex_unlock(&install_lock);
}
