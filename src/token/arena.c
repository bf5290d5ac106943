/* The arena of 64-byte slots; the why is in arena.h. */
#include "token/arena.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "tokengraph/errors.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

/*
 * BLOCKS: every mapping of the arenas and the graph is a 2 MiB block,
 * 2 MiB aligned so the kernel can back it with one huge page, faulted in
 * before use (MADV_POPULATE_WRITE): a chunk is taken into use only when the
 * previous one is full, so paying the faults here keeps them off the
 * per-token path (a first touch costs about 10 us per 4 KiB page).
 *
 * Blocks are carved from regions of REGION_BLOCKS blocks reserved at once
 * (MAP_NORESERVE, advised MADV_HUGEPAGE once), not mapped one by one.
 * mmap() and madvise(MADV_HUGEPAGE) take the process's mmap lock for
 * writing, which waits for every fault and populate in progress in any
 * thread, and makes every later one wait behind it; with a mapping per
 * block, two creating threads spent about a third of their time asleep on
 * that lock while the prefaulter populated (perf sched timehist of two
 * writers, docs/benchmarks.md). Populating a carved block takes the lock
 * only for reading, beside other faults. Regions are process-wide, shared
 * by every store; a block given back is unmapped (its pages and its
 * address range go back to the kernel), the rest of its region stays
 * reserved for later blocks. Where a region cannot be reserved (a strict
 * overcommit policy counts all of it), a block is mapped on its own as
 * before.
 */
#define BLOCK_BYTES ((size_t)2 << 20)
#define REGION_BLOCKS 128u /* 256 MiB of address space a region */

static pthread_mutex_t region_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned char *region_next, *region_end; /* region_mu */
static unsigned long regions_reserved;          /* region_mu; tests */

/* A fork copies the address space, not the threads: the child must not
   inherit the mutex held by a thread that is gone. */
static void region_fork_prepare(void) { pthread_mutex_lock(&region_mu); }
static void region_fork_after(void) { pthread_mutex_unlock(&region_mu); }
static pthread_once_t region_once = PTHREAD_ONCE_INIT;
static void region_init_once(void) {
  (void)pthread_atfork(region_fork_prepare, region_fork_after, region_fork_after);
}

/* `bytes` of address space aligned to 2 MiB, advised for huge pages, not
   yet faulted; NULL when the kernel refuses. */
static unsigned char *map_aligned(size_t bytes, int flags) {
  size_t span = bytes + BLOCK_BYTES;
  unsigned char *raw = mmap(NULL, span, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
  if (raw == MAP_FAILED) return NULL;
  uintptr_t addr = (uintptr_t)raw;
  uintptr_t aligned = (addr + BLOCK_BYTES - 1) & ~(uintptr_t)(BLOCK_BYTES - 1);
  size_t head = aligned - addr;
  size_t tail = span - head - bytes;
  if (head) munmap(raw, head);
  if (tail) munmap((unsigned char *)aligned + bytes, tail);
#ifdef MADV_HUGEPAGE
  (void)madvise((void *)aligned, bytes, MADV_HUGEPAGE);
#endif
  return (unsigned char *)aligned;
}

/* The next block of a region, reserving a new region when the current one
   is used up (outside the mutex: mmap can wait on the mmap lock; a region
   reserved by two threads at once keeps one, the other is unmapped). */
static unsigned char *region_take(void) {
  pthread_once(&region_once, region_init_once);
  for (;;) {
    pthread_mutex_lock(&region_mu);
    unsigned char *p = NULL;
    if (region_next && region_next < region_end) {
      p = region_next;
      region_next += BLOCK_BYTES;
    }
    pthread_mutex_unlock(&region_mu);
    if (p) return p;
    unsigned char *r = map_aligned(REGION_BLOCKS * BLOCK_BYTES, MAP_NORESERVE);
    if (!r) return NULL;
    pthread_mutex_lock(&region_mu);
    int mine = !(region_next && region_next < region_end);
    if (mine) {
      region_next = r;
      region_end = r + REGION_BLOCKS * BLOCK_BYTES;
      regions_reserved++;
    }
    pthread_mutex_unlock(&region_mu);
    if (!mine) munmap(r, REGION_BLOCKS * BLOCK_BYTES);
  }
}

unsigned long tg__arena_regions_reserved(void) {
  pthread_mutex_lock(&region_mu);
  unsigned long n = regions_reserved;
  pthread_mutex_unlock(&region_mu);
  return n;
}

static void *default_map(size_t bytes) {
  unsigned char *p = bytes == BLOCK_BYTES ? region_take() : NULL;
  if (!p && !(p = map_aligned(bytes, 0))) return NULL;
  if (madvise(p, bytes, MADV_POPULATE_WRITE) != 0) {
    if (errno != EINVAL) {
      /* No memory to back it (ENOMEM, a cgroup's limit): an error to the
         caller, not a fault on a later write that the kernel answers with
         the OOM killer or SIGBUS. */
      munmap(p, bytes);
      return NULL;
    }
    /* Older kernels (no MADV_POPULATE_WRITE): touch one byte per page
       ourselves. */
    long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0) pg = 4096;
    for (size_t off = 0; off < bytes; off += (size_t)pg)
      ((volatile unsigned char *)p)[off] = 0;
  }
  return p;
}

static void default_unmap(void *p, size_t bytes) { munmap(p, bytes); }

void *tg__map_fresh(size_t bytes) { return default_map(bytes); }

void *tg__map_block(tg__blockpool *p, size_t bytes) {
  if (p && bytes == BLOCK_BYTES) {
    uint32_t n = __atomic_load_n(&p->n, __ATOMIC_RELAXED);
    /* Relaxed: the blocks were stored before the store was handed to any
       other thread (the fill happens at open). */
    while (n && !__atomic_compare_exchange_n(&p->n, &n, n - 1u, 1, __ATOMIC_RELAXED,
                                             __ATOMIC_RELAXED)) {
    }
    if (n) return p->blocks[n - 1u];
  }
  return default_map(bytes);
}

int tg__blockpool_fill(tg__blockpool *p, uint64_t bytes) {
  uint64_t want = (bytes + BLOCK_BYTES - 1) / BLOCK_BYTES;
  if (!want) return 0;
  if (want > UINT32_MAX) return TG_ENOMEM;
  unsigned char **b = calloc((size_t)want, sizeof *b);
  if (!b) return TG_ENOMEM;
  for (uint64_t i = 0; i < want; i++) {
    if (!(b[i] = default_map(BLOCK_BYTES))) {
      while (i--) default_unmap(b[i], BLOCK_BYTES);
      free(b);
      return TG_ENOMEM;
    }
  }
  tg__blockpool_free(p);
  p->blocks = b;
  p->n = (uint32_t)want;
  return 0;
}

void tg__blockpool_free(tg__blockpool *p) {
  for (uint32_t i = 0; i < p->n; i++) default_unmap(p->blocks[i], BLOCK_BYTES);
  free(p->blocks);
  p->blocks = NULL;
  p->n = 0;
}
void tg__unmap_fresh(void *p, size_t bytes) { default_unmap(p, bytes); }

/* LeakSanitizer scans the heap, stacks and globals for pointers, not
   anonymous mappings: a table is registered as a root region, or what only
   it points to (the connections' dirty bitmaps) is reported leaked. */
#if defined(__SANITIZE_ADDRESS__)
#define TG_LSAN_ROOTS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TG_LSAN_ROOTS 1
#endif
#endif
#ifdef TG_LSAN_ROOTS
#include <sanitizer/lsan_interface.h>
#endif

void *tg__table_alloc(size_t bytes) {
  void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return NULL;
#ifdef TG_LSAN_ROOTS
  __lsan_register_root_region(p, bytes);
#endif
  return p;
}

void tg__table_free(void *p, size_t bytes) {
  if (!p) return;
#ifdef TG_LSAN_ROOTS
  __lsan_unregister_root_region(p, bytes);
#endif
  munmap(p, bytes);
}

_Thread_local int tg__tl_striped __attribute__((tls_model("initial-exec")));

void tg__seq_begin_shared(uint32_t *sq) {
  for (unsigned spins = 0;; spins++) {
    uint32_t v = __atomic_load_n(sq, __ATOMIC_RELAXED);
    /* Acquire: the previous section's stores (before its release store
       of the even value read here) happen before this one's. */
    if (!(v & 1u) &&
        __atomic_compare_exchange_n(sq, &v, v + 1u, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
      break;
    if (spins < 256) {
      tg__cpu_relax();
    } else {
      /* The holder was preempted inside its section: sleep in 20 us
         steps rather than spin its time slice away (it wakes nobody, so
         its close stays one store). */
      const struct timespec ts = {0, 20000};
      if (v & 1u) syscall(SYS_futex, sq, FUTEX_WAIT_PRIVATE, v, &ts, NULL, 0);
    }
  }
  /* As in tg__seq_begin(): the odd counter before the data stores. */
  __atomic_thread_fence(__ATOMIC_RELEASE);
}

static long map_budget = -1; /* relaxed atomic loads by tg__arena_prefault() */

void tg__arena_set_map_budget(long n) { __atomic_store_n(&map_budget, n, __ATOMIC_RELAXED); }

static void *map_chunk(tg__arena *a, size_t bytes) {
  long b = __atomic_load_n(&map_budget, __ATOMIC_RELAXED);
  if (b == 0) return NULL;
  if (b > 0) __atomic_store_n(&map_budget, b - 1, __ATOMIC_RELAXED);
  return tg__map_block(a->pool, bytes);
}

int tg__arena_init(tg__arena *a, uint32_t id_off) {
  assert(id_off + 4 <= TG__SLOT_BYTES && id_off != TG__FREE_NEXT_OFF);
  memset(a, 0, sizeof *a);
  a->id_off = id_off;
  /* 1 MiB of pointers each (and 512 KiB of counts) of which only the
     entries in use ever become resident. */
  a->chunks = tg__table_alloc(TG__MAX_CHUNKS * sizeof *a->chunks);
  a->map = tg__table_alloc(TG__MAX_CHUNKS * sizeof *a->map);
  a->map_live = tg__table_alloc(TG__MAX_CHUNKS * sizeof *a->map_live);
  a->map_regions = tg__table_alloc(TG__MAX_MAP_REGIONS * sizeof *a->map_regions);
  if (a->chunks && a->map && a->map_live && a->map_regions) return 0;
  tg__arena_free(a);
  return TG_ENOMEM;
}

void tg__arena_free(tg__arena *a) {
  if (a->chunks) {
    for (uint32_t c = 0; c < a->nchunks; c++)
      default_unmap(a->chunks[c], TG__CHUNK_BYTES);
  }
  if (a->map_regions) {
    for (uint32_t r = 0; r < TG__MAX_MAP_REGIONS && r * TG__MAP_REGION_CHUNKS < a->map_hi; r++)
      if (a->map_regions[r]) default_unmap(a->map_regions[r], TG__MAP_REGION_BYTES);
  }
  if (a->spare) default_unmap(a->spare, TG__CHUNK_BYTES);
  if (a->map_spare) default_unmap(a->map_spare, TG__MAP_REGION_BYTES);
  tg__table_free(a->chunks, TG__MAX_CHUNKS * sizeof *a->chunks);
  tg__table_free(a->map, TG__MAX_CHUNKS * sizeof *a->map);
  tg__table_free(a->map_live, TG__MAX_CHUNKS * sizeof *a->map_live);
  tg__table_free(a->map_regions, TG__MAX_MAP_REGIONS * sizeof *a->map_regions);
  memset(a, 0, sizeof *a);
}

int tg__arena_map_cover(tg__arena *a, uint32_t id) {
  uint32_t c = TG__ID_CHUNK(id);
  if (a->map[c]) return 0;
  unsigned char **reg = &a->map_regions[c / TG__MAP_REGION_CHUNKS];
  /* Not counted in the map budget, which is about slot chunks (the tests
     that drive the arena out of memory count them). Mapped and faulted
     whole (huge pages, TG__MAP_REGION_BYTES), off the per-create path as
     the slot chunks are: one region per 524,288 ids. */
  if (!*reg) {
    /* The spare region first (tg__arena_prefault()), then a mapping of
       its own; a taken spare asks for the next as a taken chunk does. */
    unsigned char *r = a->spare_wake ? tg__spare_take(&a->map_spare, a->spare_wake) : NULL;
    if (!r && !(r = tg__map_block(a->pool, TG__MAP_REGION_BYTES))) return TG_ENOMEM;
    *reg = r;
  }
  void *p = *reg + (size_t)(c % TG__MAP_REGION_CHUNKS) * TG__MAP_CHUNK_BYTES;
  /* A chunk given back (tg__arena_map_reclaim()) reads as zero; one never
     used is zero from the mapping. */
  /* Release: a reader that finds the pointer finds zeroed, mapped memory
     (the contract in arena.h). */
  __atomic_store_n(&a->map[c], (uint32_t *)p, __ATOMIC_RELEASE);
  if (c >= a->map_hi) __atomic_store_n(&a->map_hi, c + 1u, __ATOMIC_RELAXED);
  return 0;
}

void tg__arena_map_reclaim(tg__arena *a, uint32_t chunk) {
  assert(__atomic_load_n(&a->map_live[chunk], __ATOMIC_RELAXED) == 0);
  /* Every entry is 0 already, and MADV_DONTNEED makes the pages of a
     private anonymous mapping read as zero: a reader without the lock sees
     the same "no live object" either way. The chunk stays mapped, so the
     pointer stays valid; a write after a wrap faults in a fresh page. */
  if (a->map[chunk]) (void)madvise(a->map[chunk], TG__MAP_CHUNK_BYTES, MADV_DONTNEED);
}

uint32_t tg__arena_next_id(const tg__arena *a) {
  uint32_t id = a->cursor;
  for (uint64_t n = 0; n < TG__MAX_SLOTS; n++) {
    id = id == TG__MAX_SLOTS ? 1u : id + 1u;
    const uint32_t *m = a->map[TG__ID_CHUNK(id)];
    if (!m || !m[TG__ID_ENTRY(id)]) return id;
  }
  return 0;
}

/* A free slot, or a new one (mapping a chunk): its index, or -1 with *err. */
static int64_t take_slot(tg__arena *a, int *err) {
  if (a->free_head) {
    uint32_t i = a->free_head - 1u;
    a->free_head = tg__slot_u32(tg__arena_slot(a, i), TG__FREE_NEXT_OFF);
    return i;
  }
  if (a->next == a->limit) {
    int rc = tg__arena_grow(a);
    if (rc) {
      *err = rc;
      return -1;
    }
  }
  return a->next++;
}

size_t tg__arena_scan(const tg__arena *a, uint32_t *pos, void *out, size_t max,
                      uint32_t budget, int *done) {
  /* Before a wrap no id above the cursor was ever issued; after one, any
     id up to 2^32 - 1 may be live. */
  uint32_t hi = a->wrapped ? TG__MAX_SLOTS : a->cursor;
  uint32_t id = *pos;
  size_t n = 0;
  *done = 0;
  while (n < max && budget && id < hi) {
    uint32_t c = TG__ID_CHUNK(id + 1u);
    const uint32_t *m = a->map[c];
    if (!m || !a->map_live[c]) {
      /* No live id in this chunk: skip it whole, one unit of budget. */
      uint64_t end = ((uint64_t)c + 1u) << TG__CHUNK_SHIFT; /* its last id */
      id = end < hi ? (uint32_t)end : hi;
      budget--;
      continue;
    }
    id++;
    budget--;
    uint32_t e = m[TG__ID_ENTRY(id)];
    if (!e) continue;
    const void *p = tg__arena_slot(a, e - 1u);
    /* A batch's held id is mapped before its object is written. */
    if (tg__slot_u32(p, a->id_off) == id)
      memcpy((unsigned char *)out + n++ * TG__SLOT_BYTES, p, TG__SLOT_BYTES);
  }
  *pos = id;
  if (id >= hi) *done = 1;
  return n;
}

void tg__arena_set_cursor(tg__arena *a, uint32_t id, int wrapped) {
  a->cursor = id;
  a->wrapped = wrapped;
  a->fast_end = 0;
}

int tg__arena_prefault(tg__arena *a) {
  if (__atomic_load_n(&map_budget, __ATOMIC_RELAXED) >= 0) return 0;
  /* A map region ahead once the map has one (relaxed: a hint; map_hi
     only grows), so an arena that never maps an id costs no region. */
  if (__atomic_load_n(&a->map_hi, __ATOMIC_RELAXED) &&
      !__atomic_load_n(&a->map_spare, __ATOMIC_ACQUIRE)) {
    unsigned char *r = tg__map_block(a->pool, TG__MAP_REGION_BYTES), *none = NULL;
    if (r && !__atomic_compare_exchange_n(&a->map_spare, &none, r, 0, __ATOMIC_RELEASE,
                                          __ATOMIC_RELAXED))
      default_unmap(r, TG__MAP_REGION_BYTES);
  }
  if (__atomic_load_n(&a->spare, __ATOMIC_ACQUIRE)) return 0;
  unsigned char *p = tg__map_block(a->pool, TG__CHUNK_BYTES);
  if (!p) return TG_ENOMEM;
  unsigned char *none = NULL;
  /* Release: the grow that takes it (acquire) sees it mapped and faulted. */
  if (__atomic_compare_exchange_n(&a->spare, &none, p, 0, __ATOMIC_RELEASE,
                                  __ATOMIC_RELAXED))
    return 1;
  default_unmap(p, TG__CHUNK_BYTES);
  return 0;
}

/* tg__spare_defer_begin(): 1 while this thread defers its wake-ups, and
   the futex word of the one pending (NULL none). Thread-local: only the
   thread itself reads or writes them. */
static _Thread_local int spare_defer __attribute__((tls_model("initial-exec")));
static _Thread_local int *spare_pending __attribute__((tls_model("initial-exec")));

unsigned char *tg__spare_take(unsigned char **spare, int *wake) {
  unsigned char *r = __atomic_exchange_n(spare, NULL, __ATOMIC_ACQUIRE);
  /* Ask for the next one now (once per chunk or region taken): release,
     so the prefaulter that sees the bump sees the spare taken. The bump
     is enough for a prefaulter awake (it compares the word before it
     sleeps); the wake-up may wait for the end of a deferral. */
  __atomic_fetch_add(wake, 1, __ATOMIC_RELEASE);
  if (spare_defer) spare_pending = wake;
  else syscall(SYS_futex, wake, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
  return r;
}

void tg__spare_defer_begin(void) {
  assert(!spare_defer);
  spare_defer = 1;
}

void tg__spare_defer_end(void) {
  spare_defer = 0;
  int *w = spare_pending;
  if (w) {
    spare_pending = NULL;
    syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
  }
}

int tg__arena_grow(tg__arena *a) {
  if (a->nchunks >= TG__MAX_CHUNKS) return TG_EQUOTA;
  unsigned char *p = NULL;
  /* Not while the seam limits chunks: those tests count every chunk. */
  if (a->spare_wake && __atomic_load_n(&map_budget, __ATOMIC_RELAXED) < 0)
    p = tg__spare_take(&a->spare, a->spare_wake);
  if (!p) p = map_chunk(a, TG__CHUNK_BYTES);
  if (!p) return TG_ENOMEM;
  /* Relaxed: readers reach this entry to copy a slot only through a map
     entry published after it (release, tg__arena_publish); a read's
     prefetch of slot id - 1 loads it with no order at all (arena.h). */
  __atomic_store_n(&a->chunks[a->nchunks], p, __ATOMIC_RELAXED);
  TG__STORE_RELAXED(a->nchunks, a->nchunks + 1u);
  uint64_t lim = (uint64_t)a->nchunks * TG__CHUNK_SLOTS;
  a->limit = lim > TG__MAX_SLOTS ? TG__MAX_SLOTS : (uint32_t)lim;
  return 0;
}

int64_t tg__arena_take_slow(tg__arena *a) {
  uint32_t nid = tg__arena_next_id(a);
  if (!nid) return TG_EQUOTA; /* 2^32 - 1 live objects */
  int rc = tg__arena_map_cover(a, nid);
  if (rc) return rc;
  int64_t i = take_slot(a, &rc);
  if (i < 0) return rc;
  uint32_t prev = TG__ID_CHUNK(a->cursor);
  if (nid <= a->cursor) a->wrapped = 1;
  a->cursor = nid;
  /* The ids after nid in its map chunk are free before a wrap (none
     above the cursor was ever issued): hand them out on the fast path. */
  uint64_t end = ((uint64_t)TG__ID_CHUNK(nid) + 1u) << TG__CHUNK_SHIFT;
  if (end > TG__MAX_SLOTS) end = TG__MAX_SLOTS;
  a->fast_end = a->wrapped ? 0 : (uint32_t)end;
  /* The cursor left a map chunk whose ids all died already (a store that
     deletes what it creates): nothing will be mapped there again until a
     wrap, so give it back now rather than keep 4 bytes per id. */
  if (TG__ID_CHUNK(nid) != prev && a->map_live[prev] == 0)
    tg__arena_map_reclaim(a, prev);
  return i;
}

uint32_t tg__arena_take_ids(tg__arena *a, uint32_t want, uint32_t *first) {
  if (a->cursor >= a->fast_end) {
    /* Map the chunk of the next id as the slow path does, without taking
       a slot; none before a wrap only. */
    uint32_t nid = tg__arena_next_id(a);
    if (!nid || a->wrapped || nid <= a->cursor) return 0;
    if (tg__arena_map_cover(a, nid)) return 0;
    uint32_t prev = TG__ID_CHUNK(a->cursor);
    uint64_t end = ((uint64_t)TG__ID_CHUNK(nid) + 1u) << TG__CHUNK_SHIFT;
    if (end > TG__MAX_SLOTS) end = TG__MAX_SLOTS;
    a->fast_end = (uint32_t)end;
    /* Relaxed atomics on the counts: a striped disconnect may drop one
       meanwhile (tg__arena_release_held()), as the store's refills run
       beside striped calls (store.c, SHARDS). */
    if (TG__ID_CHUNK(nid) != prev && a->cursor &&
        __atomic_load_n(&a->map_live[prev], __ATOMIC_RELAXED) == 0)
      tg__arena_map_reclaim(a, prev);
  }
  uint32_t n = a->fast_end - a->cursor;
  if (n > want) n = want;
  *first = a->cursor + 1u;
  a->cursor += n;
  __atomic_fetch_add(&a->map_live[TG__ID_CHUNK(*first)], n, __ATOMIC_RELAXED);
  return n;
}

uint32_t tg__arena_take_slots(tg__arena *a, uint32_t *out, uint32_t want) {
  uint32_t n = 0;
  int err = 0;
  while (n < want) {
    int64_t i = take_slot(a, &err);
    if (i < 0) break;
    out[n++] = (uint32_t)i;
  }
  return n;
}

void tg__arena_begin_load(tg__arena *a) { a->loading = 1; }

void tg__arena_rebuild_free(tg__arena *a) { a->loading = 0; }

void *tg__arena_put(tg__arena *a, uint32_t id, int *was_live, int *err) {
  assert(a->loading);
  if (id == 0) {
    *err = TG_EINVAL;
    return NULL;
  }
  /* The loose bound: a checkpoint's loader checks its keys against the
     strict one (tg__arena_may_put()) before it puts them. */
  if (!tg__arena_may_replay(a, id)) {
    *err = TG_ECORRUPT;
    return NULL;
  }
  void *p = tg__arena_get(a, id);
  *was_live = p != NULL;
  if (p) return p;
  /* The id the original create was given, if the log is ours: computed
     before the id is mapped. */
  uint32_t expect = tg__arena_next_id(a);
  int rc = tg__arena_map_cover(a, id);
  if (rc) {
    *err = rc;
    return NULL;
  }
  int64_t i = take_slot(a, err);
  if (i < 0) return NULL;
  tg__arena_map_set(a, id, (uint32_t)i);
  a->fast_end = 0;
  if (id == expect) {
    if (id <= a->cursor) a->wrapped = 1;
    a->cursor = id;
  } else if (!a->wrapped && id > a->cursor) {
    a->cursor = id;
  }
  return tg__arena_slot(a, (uint32_t)i);
}
