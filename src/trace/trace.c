/*
 * Sampled tracing spans.
 *
 * Sampling is head-based: a root span decides for its whole tree. Instead of
 * drawing a random number per root, each thread draws from its splitmix64
 * generator the number of roots until its next sampled one, a geometric
 * variable with parameter `rate`, and counts it down. The decisions are then
 * exactly independent Bernoulli(rate) trials, but an unsampled root costs a
 * decrement and a compare instead of a generator step (the 2 ns budget).
 *
 * Each thread that records a sampled span owns a ring of 64-byte records
 * (one cache line each), allocated on its first sampled span and registered
 * in a global list. The owner writes a record and then publishes it by a
 * release store of `head`; nothing else writes the ring. Before writing the
 * slot of record h it stores wbegin = h + 1. The exporter copies records
 * without stopping the writer and keeps only those it can prove were not
 * being overwritten while it copied (a seqlock: record i shares its slot with
 * i + capacity, so it is good if wbegin, re-read after the copy, is at most
 * i + capacity).
 *
 * A span is recorded once, at its end, as a complete event (start and
 * duration), so a ring that wrapped still exports as valid, balanced JSON.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "trace/trace_internal.h"

typedef struct tg__span_rec { /* one cache line; every field atomic-accessed */
  const tg_span_site *site;   /* name and attribute names */
  uint64_t t0;                /* start, ticks */
  uint64_t t1;                /* end, ticks */
  uint64_t attr[TG_SPAN_ATTRS];
  uint64_t depth;             /* nesting depth at begin, 0 = root */
} tg__span_rec;
_Static_assert(sizeof(tg__span_rec) == 64, "span record is one cache line");

struct tg__trace_buf {
  uint64_t head;              /* records ever written; owner stores, release */
  uint64_t wbegin;            /* records whose writing has begun (head or head+1) */
  uint64_t base;              /* records before this index were reset away */
  uint64_t mask;              /* capacity - 1 */
  long tid;                   /* kernel thread id of the owner */
  int retired;                /* owner thread exited */
  char name[32];              /* thread name for the export */
  struct tg__trace_buf *next; /* registry list */
  tg__span_rec *rec;          /* capacity records, 64-byte aligned */
};

TG__THREAD_LOCAL tg__trace_tls tg__tls TG__TLS_MODEL;
uint64_t tg__trace_epoch = 1;

static uint64_t rate_bits;               /* double, as bits; set once below */
static uint64_t buffer_spans = 8192;     /* capacity for new rings */
static uint64_t lost_spans;              /* no ring could be allocated */
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tg__trace_buf *reg_head;   /* every ring, newest first */
static pthread_key_t buf_key;
static pthread_once_t buf_key_once = PTHREAD_ONCE_INIT;

/* Retired rings of exited threads are kept for export, but at most this
   many, so a program that churns threads does not grow without bound. */
#define MAX_RETIRED 16

__attribute__((constructor)) static void rate_init(void) {
  double d = 0.01;
  memcpy(&rate_bits, &d, sizeof d);
}

double tg_trace_get_rate(void) {
  uint64_t b = __atomic_load_n(&rate_bits, __ATOMIC_RELAXED);
  double d;
  memcpy(&d, &b, sizeof d);
  return d;
}

int tg_trace_set_rate(double rate) {
  if (!(rate >= 0.0 && rate <= 1.0)) return TG_EINVAL;
  uint64_t b;
  memcpy(&b, &rate, sizeof b);
  __atomic_store_n(&rate_bits, b, __ATOMIC_RELAXED);
  __atomic_fetch_add(&tg__trace_epoch, 1, __ATOMIC_RELEASE);
  return 0;
}

int tg_trace_set_buffer_spans(size_t spans) {
  if (spans == 0 || spans > ((size_t)1 << 26)) return TG_EINVAL;
  uint64_t cap = 64;
  while (cap < spans) cap <<= 1;
  __atomic_store_n(&buffer_spans, cap, __ATOMIC_RELAXED);
  return 0;
}

/* ---- sampling ------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Natural log for the geometric draw, so the library needs no libm: the
   atanh series to t^13 (|t| <= 0.172), error below 1e-12 and about 10 ns,
   against 30 ns for a 12-term loop with a division per term. x > 0. */
static double ln(double x) {
  uint64_t bits;
  memcpy(&bits, &x, sizeof bits);
  int e = (int)((bits >> 52) & 0x7FF) - 1022; /* x = m * 2^e, m in [0.5, 1) */
  bits = (bits & 0x000FFFFFFFFFFFFFull) | 0x3FE0000000000000ull;
  double m;
  memcpy(&m, &bits, sizeof m);
  if (m < 0.70710678118654752) {
    m *= 2;
    e--;
  }
  double t = (m - 1) / (m + 1), t2 = t * t;
  double q = 1.0 / 13;
  q = q * t2 + 1.0 / 11;
  q = q * t2 + 1.0 / 9;
  q = q * t2 + 1.0 / 7;
  q = q * t2 + 1.0 / 5;
  q = q * t2 + 1.0 / 3;
  q = q * t2 + 1.0;
  return 2 * t * q + e * 0.69314718055994531;
}

/* 1 / ln(1 - p), drawn once per rate change; 0 when p is 0, 1, or so small
   that 1 - p rounds to 1. */
static double inv_log_q(double p) {
  if (p <= 0.0 || p >= 1.0) return 0.0;
  double d = ln(1.0 - p);
  return d < 0.0 ? 1.0 / d : 0.0;
}

/* Roots until (and including) the next sampled one: Geometric(p) >= 1. */
static uint64_t draw_countdown(uint64_t *rng, double p, double inv) {
  if (p >= 1.0) return 1;
  if (p <= 0.0 || inv == 0.0) return UINT64_MAX;
  double u = ((double)(splitmix64(rng) >> 11) + 1.0) * 0x1.0p-53; /* (0,1] */
  double k = ln(u) * inv; /* >= 0; truncation is floor */
  if (!(k >= 0.0)) k = 0.0;
  if (!(k < 1.8e19)) return UINT64_MAX;
  return (uint64_t)k + 1;
}

/* The countdown field holds 47 bits: a rate below 2^-47 (7e-15) behaves
   as 2^-47. Rate 0 is exact: the slow path never samples then. */
#define COUNTDOWN_MAX ((1ull << 47) - 1)

static uint64_t with_countdown(uint64_t w, uint64_t cd) {
  if (cd > COUNTDOWN_MAX) cd = COUNTDOWN_MAX;
  return (w & (TG__DEPTH_MASK | TG__SAMPLED_BIT)) | (cd * TG__COUNTDOWN_ONE);
}

/* Called by tg_span_begin() for a root whose countdown ran out, or after a
   rate change, with the state already counted down and the sampled bit
   clear. Returns the new state, sampled bit set for a sampled root. */
uint64_t tg__trace_root_slow(tg__trace_tls *t, uint64_t w) {
  uint64_t epoch = __atomic_load_n(&tg__trace_epoch, __ATOMIC_ACQUIRE);
  double p = tg_trace_get_rate();
  if (t->rng == 0) {
    /* Seed from the thread's address and the clock: distinct per thread,
       no system call. */
    t->rng = (uint64_t)(uintptr_t)t ^ tg__ticks() ^ 0x5DEECE66Dull;
    if (t->rng == 0) t->rng = 1;
  }
  if (t->epoch != epoch) {
    t->epoch = epoch;
    t->inv_log_q = inv_log_q(p);
    uint64_t cd = draw_countdown(&t->rng, p, t->inv_log_q);
    if (cd > 1) return with_countdown(w, cd - 1); /* this root is not sampled */
  } else if (w >= TG__COUNTDOWN_ONE) {
    return w; /* unreachable: the inline check let us in for the epoch */
  }
  /* The countdown reached zero: this root is sampled, unless the rate is
     0 (then the countdown only ran out after 2^47 roots). */
  int sampled = p > 0.0;
  uint64_t cd = draw_countdown(&t->rng, p, t->inv_log_q);
  w = with_countdown(w, cd);
  return sampled ? w | TG__SAMPLED_BIT : w;
}

/* ---- per-thread rings ------------------------------------------------------ */

static void buf_free(struct tg__trace_buf *b) {
  if (b) {
    free(b->rec);
    free(b);
  }
}

/* Thread exit: keep the ring for export, mark it retired, and free the
   oldest retired rings beyond MAX_RETIRED. */
static void buf_thread_exit(void *p) {
  struct tg__trace_buf *b = p, *dead = NULL;
  pthread_mutex_lock(&reg_lock);
  b->retired = 1;
  int retired = 0;
  for (struct tg__trace_buf **pp = &reg_head; *pp;) {
    struct tg__trace_buf *x = *pp;
    if (x->retired && ++retired > MAX_RETIRED) {
      *pp = x->next;
      x->next = dead;
      dead = x;
      /* Spans lost with a freed ring count as dropped. */
      uint64_t h = __atomic_load_n(&x->head, __ATOMIC_RELAXED);
      __atomic_fetch_add(&lost_spans, h - x->base, __ATOMIC_RELAXED);
    } else {
      pp = &x->next;
    }
  }
  pthread_mutex_unlock(&reg_lock);
  if (tg__tls.buf == b) tg__tls.buf = NULL;
  while (dead) {
    struct tg__trace_buf *n = dead->next;
    buf_free(dead);
    dead = n;
  }
}

static void buf_key_create(void) { pthread_key_create(&buf_key, buf_thread_exit); }

static struct tg__trace_buf *buf_register(tg__trace_tls *t) {
  uint64_t cap = __atomic_load_n(&buffer_spans, __ATOMIC_RELAXED);
  struct tg__trace_buf *b = calloc(1, sizeof *b);
  if (b == NULL) return NULL;
  b->rec = aligned_alloc(64, cap * sizeof(tg__span_rec));
  if (b->rec == NULL) {
    free(b);
    return NULL;
  }
  b->mask = cap - 1;
  b->tid = (long)syscall(SYS_gettid);
  pthread_once(&buf_key_once, buf_key_create);
  pthread_setspecific(buf_key, b);
  pthread_mutex_lock(&reg_lock);
  b->next = reg_head;
  reg_head = b;
  pthread_mutex_unlock(&reg_lock);
  t->buf = b;
  return b;
}

/* The sampled end path: one record into the thread's ring. */
void tg__span_record(const tg_span *s) {
  uint64_t t1 = tg__ticks();
  tg__trace_tls *t = &tg__tls;
  struct tg__trace_buf *b = t->buf;
  if (TG__UNLIKELY(b == NULL)) {
    b = buf_register(t);
    if (b == NULL) {
      __atomic_fetch_add(&lost_spans, 1, __ATOMIC_RELAXED);
      return;
    }
  }
  uint64_t h = __atomic_load_n(&b->head, __ATOMIC_RELAXED);
  tg__span_rec *r = &b->rec[h & b->mask];
  __atomic_store_n(&b->wbegin, h + 1, __ATOMIC_RELAXED);
  /* Pairs with the exporter's acquire fence: if it sees any of the stores
     below, its re-read of wbegin sees h + 1 and it discards record
     h - capacity, whose slot this is. */
  tg__fence_release();
  __atomic_store_n(&r->site, s->site, __ATOMIC_RELAXED);
  __atomic_store_n(&r->t0, s->t0, __ATOMIC_RELAXED);
  __atomic_store_n(&r->t1, t1, __ATOMIC_RELAXED);
  for (int i = 0; i < TG_SPAN_ATTRS; i++)
    __atomic_store_n(&r->attr[i], s->attr[i], __ATOMIC_RELAXED);
  __atomic_store_n(&r->depth, t->state & TG__DEPTH_MASK, __ATOMIC_RELAXED);
  __atomic_store_n(&b->head, h + 1, __ATOMIC_RELEASE);
}

int tg_trace_set_thread_name(const char *name) {
  if (name == NULL) return TG_EINVAL;
  tg__trace_tls *t = &tg__tls;
  struct tg__trace_buf *b = t->buf ? t->buf : buf_register(t);
  if (b == NULL) return TG_ENOMEM;
  pthread_mutex_lock(&reg_lock); /* the exporter reads name under the lock */
  snprintf(b->name, sizeof b->name, "%s", name);
  pthread_mutex_unlock(&reg_lock);
  return 0;
}

void tg_trace_reset(void) {
  pthread_mutex_lock(&reg_lock);
  for (struct tg__trace_buf *b = reg_head; b; b = b->next)
    __atomic_store_n(&b->base, __atomic_load_n(&b->head, __ATOMIC_ACQUIRE), __ATOMIC_RELAXED);
  __atomic_store_n(&lost_spans, 0, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&reg_lock);
}

void tg_trace_stats_get(tg_trace_stats *out) {
  uint64_t sampled = 0, dropped = 0, n = 0;
  pthread_mutex_lock(&reg_lock);
  for (struct tg__trace_buf *b = reg_head; b; b = b->next) {
    uint64_t h = __atomic_load_n(&b->head, __ATOMIC_ACQUIRE);
    uint64_t base = __atomic_load_n(&b->base, __ATOMIC_RELAXED);
    uint64_t cap = b->mask + 1;
    sampled += h - base;
    if (h - base > cap) dropped += h - base - cap;
    n++;
  }
  uint64_t lost = __atomic_load_n(&lost_spans, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&reg_lock);
  out->sampled = sampled + lost;
  out->dropped = dropped + lost;
  out->buffers = n;
}

/* ---- Chrome trace export ---------------------------------------------------- */

/* Copy the records of ring b that are provably intact into out (room for
   capacity records); returns how many. */
static size_t buf_snapshot(struct tg__trace_buf *b, tg__span_rec *out) {
  uint64_t cap = b->mask + 1;
  uint64_t h1 = __atomic_load_n(&b->head, __ATOMIC_ACQUIRE);
  uint64_t base = __atomic_load_n(&b->base, __ATOMIC_RELAXED);
  uint64_t lo = h1 > cap ? h1 - cap : 0;
  if (lo < base) lo = base;
  for (uint64_t i = lo; i < h1; i++) {
    tg__span_rec *r = &b->rec[i & b->mask], *o = &out[i - lo];
    o->site = __atomic_load_n(&r->site, __ATOMIC_RELAXED);
    o->t0 = __atomic_load_n(&r->t0, __ATOMIC_RELAXED);
    o->t1 = __atomic_load_n(&r->t1, __ATOMIC_RELAXED);
    for (int k = 0; k < TG_SPAN_ATTRS; k++)
      o->attr[k] = __atomic_load_n(&r->attr[k], __ATOMIC_RELAXED);
    o->depth = __atomic_load_n(&r->depth, __ATOMIC_RELAXED);
  }
  tg__fence_acquire();
  uint64_t w2 = __atomic_load_n(&b->wbegin, __ATOMIC_RELAXED);
  /* Record i shares its slot with i + cap, which the writer may have been
     writing once wbegin reached i + cap + 1: keep i only if w2 <= i + cap. */
  uint64_t good = w2 > cap ? w2 - cap : 0;
  if (good <= lo) return (size_t)(h1 - lo);
  if (good >= h1) return 0;
  memmove(out, out + (good - lo), (size_t)(h1 - good) * sizeof *out);
  return (size_t)(h1 - good);
}

static void write_us(FILE *f, int64_t ns) {
  /* Chrome wants microseconds; keep nanosecond precision. */
  if (ns < 0) {
    fputc('-', f);
    ns = -ns;
  }
  fprintf(f, "%lld.%03lld", (long long)(ns / 1000), (long long)(ns % 1000));
}

static int trace_fill(FILE *f, void *arg) {
  (void)arg;
  tg__clock_map cm;
  tg__clock_map_get(&cm);
  long pid = (long)getpid();
  tg__span_rec *tmp = NULL;
  size_t tmp_cap = 0;
  int rc = 0, first = 1;

  fputs("{\"traceEvents\":[\n", f);
  fprintf(f, "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%ld,\"tid\":0,"
             "\"args\":{\"name\":\"tokengraph\"}}", pid);
  first = 0;

  pthread_mutex_lock(&reg_lock);
  for (struct tg__trace_buf *b = reg_head; b; b = b->next) {
    size_t cap = (size_t)b->mask + 1;
    if (cap > tmp_cap) {
      tg__span_rec *n = realloc(tmp, cap * sizeof *tmp);
      if (n == NULL) {
        rc = TG_ENOMEM;
        break;
      }
      tmp = n;
      tmp_cap = cap;
    }
    size_t n = buf_snapshot(b, tmp);
    if (b->name[0]) {
      fprintf(f, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%ld,\"tid\":%ld,"
                 "\"args\":{\"name\":", pid, b->tid);
      tg__json_fputs(f, b->name);
      fputs("}}", f);
    }
    for (size_t i = 0; i < n; i++) {
      const tg__span_rec *r = &tmp[i];
      const tg_span_site *site = r->site;
      fputs(first ? "" : ",\n", f);
      first = 0;
      fputs("{\"name\":", f);
      tg__json_fputs(f, site && site->name ? site->name : "?");
      fputs(",\"cat\":\"tokengraph\",\"ph\":\"X\",\"ts\":", f);
      write_us(f, tg__ticks_to_rel_ns(&cm, r->t0));
      fputs(",\"dur\":", f);
      uint64_t d = r->t1 > r->t0 ? r->t1 - r->t0 : 0;
      write_us(f, (int64_t)((double)d * cm.ns_per_tick));
      fprintf(f, ",\"pid\":%ld,\"tid\":%ld,\"args\":{\"depth\":%llu", pid, b->tid,
              (unsigned long long)r->depth);
      for (int k = 0; k < TG_SPAN_ATTRS; k++) {
        if (site == NULL || site->attr[k] == NULL) continue;
        fputc(',', f);
        tg__json_fputs(f, site->attr[k]);
        fprintf(f, ":%llu", (unsigned long long)r->attr[k]);
      }
      fputs("}}", f);
    }
  }
  pthread_mutex_unlock(&reg_lock);
  free(tmp);

  tg_trace_stats st;
  tg_trace_stats_get(&st);
  fprintf(f, "\n],\"displayTimeUnit\":\"ns\",\"otherData\":{\"sample_rate\":%.6g,"
             "\"spans_sampled\":%llu,\"spans_dropped\":%llu}}\n",
          tg_trace_get_rate(), (unsigned long long)st.sampled,
          (unsigned long long)st.dropped);
  if (rc == 0 && ferror(f)) rc = -EIO;
  return rc;
}

int tg_trace_write_fp(FILE *f) { return tg__stream_write(f, trace_fill, NULL); }

int tg_trace_write(const char *path) {
  return tg__atomic_file_write(path, 0644, trace_fill, NULL);
}
