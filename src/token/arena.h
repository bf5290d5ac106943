/*
 * The arena: 64-byte slots handed out from 2 MiB chunks, and the map from
 * ids to slots.
 *
 * Why this shape: creating a token must cost about what writing 64 bytes
 * into fresh huge-page memory costs (7 ns measured on the reference machine,
 * against 150 ns with 4 KiB pages and far more with one malloc per object).
 * So memory comes in 2 MiB chunks, 2 MiB aligned, advised MADV_HUGEPAGE and
 * pre-faulted before the chunk is taken into use (by another thread ahead
 * of time when the store runs a prefaulter: tg__arena_prefault()); a slot
 * is found by a free list pop or a bump of `next`, both O(1) with no
 * system call.
 *
 * Ids are not slots. An id is handed out once and never again until the
 * 32-bit space wraps (docs/data-layout.md says why), while a deleted slot
 * is reused at once to keep memory dense. So id -> slot goes through a
 * map: `map[(id - 1) >> 15][(id - 1) & 32767]` holds the slot index + 1, 0
 * when no live object has that id (id 0's entry, the last of the last
 * chunk, is never set). Map chunk c covers the ids slot chunk c would hold
 * if nothing were deleted, so both grow in step. A lookup is three dependent
 * loads (map chunk, entry, slot chunk) and no hashing; the map costs 4 bytes
 * per id in a map chunk in use (128 KiB per 32,768 ids, carved from 2 MiB
 * huge-page regions and pre-faulted like the slot chunks). A lock-free read
 * also prefetches slot id - 1, where an arena that has freed nothing keeps
 * id, so the entry's and the slot's cache misses overlap
 * (tg__arena_read()). A map chunk whose ids are all dead once the cursor has left
 * it is handed back to the kernel (MADV_DONTNEED, its pages read as zero
 * again), so a store that creates and deletes forever does not keep 4 bytes
 * per id ever issued.
 *
 * The next id is the one after `cursor` (the last id handed out). Until
 * the cursor first passes 2^32 - 1 no id above it is live, so that is
 * cursor + 1, O(1). After the wrap it is the first id after the cursor
 * whose map entry is 0 (live ids are skipped, dead ones are handed out
 * again in id order).
 *
 * A free slot keeps the "next free" index (+1, 0 ends the list) in its last
 * four bytes and a zero in its id field (id_off); a live slot's id field
 * holds its id, so walking the slots finds the live objects without the map.
 *
 * Concurrency contract of the map, for readers that do not take the store
 * lock: every change happens under the arena's lock, which is the store
 * lock or, for a thread cache's refill made without it, the store's
 * alloc_lock (store.c, SHARDS: the two exclude each other), except the
 * entries of ids a thread holds in its cache (tg__arena_publish_held(),
 * tg__arena_release_held(): one word each, by the one thread that holds
 * the id, or the adjacency locks' holder), and the map chunks' counts,
 * which a striped disconnect decrements atomically. `map` (the chunk table,
 * TG__MAX_CHUNKS pointers) is allocated at init and never moves; a map
 * chunk pointer is published with a release store after its memory is
 * mapped and stays valid until tg__arena_free() (reclaimed chunks stay
 * mapped and read as zero). Entries are written with relaxed atomic
 * stores: a reader loads the chunk pointer with acquire, the entry with
 * relaxed (or acquire, to see the slot's contents as of the store), and
 * must then check the slot's id field under its own synchronisation (a
 * slot freed and reused between the two loads holds another id or 0).
 * Slot chunks, like map chunks, stay mapped until close.
 *
 * Readers that take no lock (the store's READS comment says who) go id ->
 * map entry (acquire: the entry is stored with release after the slot's
 * chunk pointer was, tg__arena_map_set) -> slot, and copy the slot inside
 * a seqlock of the slot's stripe (tg__arena_read()):
 *  - every slot word is written inside a write section of the slot's
 *    stripe (seq[], below): the writer makes the stripe's counter odd,
 *    issues a release fence, stores, and makes it even with a release
 *    store; a reader loads the counter with acquire, copies the slot with
 *    relaxed atomic loads, issues an acquire fence and loads the counter
 *    again, and retries when it changed or was odd (the seqlock of Boehm,
 *    "Can seqlocks get along with programming language memory models?",
 *    2012). The 64-byte slots have no spare bytes, so the counters are a
 *    side array of stripes (slot index i uses seq[i % TG__SEQ_STRIPES]):
 *    16 KiB per arena, at the cost of a rare retry when another slot of
 *    the same stripe changed;
 *  - one-word changes: a change of a single 8-byte word of a published
 *    slot, by one whole-word atomic store, needs no section when the word
 *    has one writer at a time and no writer of the slot's other words
 *    runs beside it without excluding that one: a copy loads each word
 *    once, atomically, so it holds the word before or after the store and
 *    the rest unchanged, an image the slot had. The graph's link changes
 *    are made so (graph.c, conn_set());
 *  - a copy is the object asked for only when its id field holds the id:
 *    a slot freed and reused between the map load and the copy holds
 *    another id (ids are not reused) or 0;
 *  - live and nchunks are published with relaxed stores for the counters
 *    (TG__STORE_RELAXED, common/platform.h).
 * The graph (graph.h) also uses the token arena's stripes, indexed by
 * token id, as the version of each token's adjacency lists.
 */
#ifndef TG_TOKEN_ARENA_H
#define TG_TOKEN_ARENA_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/platform.h"

#define TG__SLOT_BYTES 64u
#define TG__CHUNK_SHIFT 15u                         /* 32768 slots a chunk */
#define TG__CHUNK_SLOTS (1u << TG__CHUNK_SHIFT)
#define TG__CHUNK_MASK (TG__CHUNK_SLOTS - 1u)
#define TG__CHUNK_BYTES ((size_t)TG__CHUNK_SLOTS * TG__SLOT_BYTES) /* 2 MiB */
#define TG__MAX_CHUNKS (1u << (32u - TG__CHUNK_SHIFT)) /* covers 2^32 ids */
#define TG__MAX_SLOTS (0xFFFFFFFFu)                 /* ids 1 .. 2^32 - 1 */
#define TG__SEQ_STRIPES 4096u                       /* seqlock stripes an arena */
#define TG__FREE_NEXT_OFF 60u                       /* free-list link offset */

/* Cache lines (TG__LINE): what a lock-free reader loads on every lookup
   (chunks, map, id_off; written at init only) has a line of its own, apart
   from what the lock holder stores on every allocation (next, live, cursor,
   ...) and from the counters: sharing one line made every read pull the
   line the writer had just written, and the writer take it back (tg-bench
   concurrent, docs/benchmarks.md). */
#define TG__LINE 64

/* Blocks faulted in at open (tg_store_config.prefault_bytes; arena.c,
   BLOCKS), taken before any fresh mapping by the arenas and the graph
   that share it. Filled before any other thread sees the store; then
   only `n` changes, by compare-and-swap. */
typedef struct tg__blockpool {
  unsigned char **blocks; /* 2 MiB blocks, [0, n) not yet taken */
  uint32_t n;             /* atomics after the fill */
} tg__blockpool;

typedef struct tg__arena {
  unsigned char **chunks; /* TG__MAX_CHUNKS entries; NULL = not mapped */
  uint32_t **map;         /* TG__MAX_CHUNKS entries, never moves: id chunk
                             -> 32,768 entries of slot index + 1 (0: no
                             live object); a NULL chunk has none */
  uint32_t id_off;        /* offset of the object's u32 id within a slot */
  _Alignas(TG__LINE) uint32_t nchunks; /* chunks mapped, always a prefix of
                             `chunks`; the lock holder's fields from here */
  uint32_t next;          /* slots [0, next) were handed out at least once */
  uint32_t limit;         /* nchunks * TG__CHUNK_SLOTS, capped at MAX_SLOTS */
  uint32_t free_head;     /* index + 1 of the first free slot, 0 = none */
  int loading;            /* 1 while objects are put by id (checkpoint load,
                             replay): see tg__arena_put() */
  uint32_t put_max;       /* loading: the highest id the store had issued
                             before what is being loaded (the checkpoint's
                             high-water mark); see tg__arena_may_put() */
  uint64_t live;          /* slots in use (relaxed stores: stats readers) */
  uint32_t *map_live;     /* TG__MAX_CHUNKS counts: live ids per map chunk */
  uint32_t map_hi;        /* map chunks [0, map_hi) may be mapped */
  unsigned char **map_regions; /* TG__MAX_MAP_REGIONS entries: the 2 MiB
                             mappings the map chunks are carved from
                             (TG__MAP_REGION_CHUNKS each), NULL = none */
  uint32_t cursor;        /* the last id handed out (0: none yet) */
  int wrapped;            /* the cursor went past 2^32 - 1 at least once:
                             live ids may lie above it */
  unsigned char *map_spare; /* a map region (TG__MAP_REGION_BYTES) mapped
                             and faulted ahead, as `spare` is; taken by the
                             next map chunk that needs a new region */
  unsigned char *spare;   /* a chunk mapped and faulted ahead by another
                             thread (tg__arena_prefault()), taken by the
                             next grow; atomic exchanges only, NULL none */
  int *spare_wake;        /* a futex word to bump and wake when the grow
                             took the spare (NULL: nobody makes spares) */
  tg__blockpool *pool;    /* blocks faulted at open, taken first (NULL:
                             none); set before the arena is used */
  uint32_t fast_end;      /* the fast path may hand out cursor + 1 while
                             cursor < fast_end: up to the end of the map
                             chunk the slow path last mapped, before any
                             wrap; 0 otherwise, and whenever the cursor is
                             moved from outside */
  _Alignas(TG__LINE) uint32_t seq[TG__SEQ_STRIPES]; /* write-section counters, odd while a
                             slot of the stripe is being written (above) */
} tg__arena;

/*
 * The allocation seam (SQLite's SimulateIOError in spirit): after `n` more
 * chunks have been mapped, every further chunk mapping fails as if mmap
 * had, so tests can drive the arena into out-of-memory. n < 0 (the
 * default) means no limit. Not thread-safe: set it while no arena grows.
 */
void tg__arena_set_map_budget(long n);

/* Initialise an empty arena whose objects keep their u32 id at id_off.
   Maps nothing yet. Returns 0 or TG_ENOMEM. */
int tg__arena_init(tg__arena *a, uint32_t id_off);

/* Unmap every chunk. Safe on a zeroed or failed arena. */
void tg__arena_free(tg__arena *a);

/* Take the region a prefaulter left in *spare (NULL when none is ready)
   and ask it for the next: a bump of the futex word *wake and a wake-up.
   Acquire: the taker sees the region mapped and faulted (the maker's
   compare-and-exchange is a release). Any thread, no lock. */
unsigned char *tg__spare_take(unsigned char **spare, int *wake);

/* Defer the wake-ups of tg__spare_take() on this thread until
   tg__spare_defer_end(), which issues the one pending (every spare of a
   store shares one futex word). For the holders of a lock other writers
   wait for (the store's alloc_lock): a wake-up inside it let the woken
   prefaulter preempt the holder on a machine whose cores the writers
   keep busy, and the other writers then slept on the lock until the
   prefaulter had faulted its 2 MiB and the holder got its core back
   (perf record -e sched:sched_switch of tg-bench concurrent with two
   writers: about 70 sleeps on alloc_lock per 4 M creates, nearly every
   one behind a holder preempted at that wake-up, docs/benchmarks.md).
   Not nested. */
void tg__spare_defer_begin(void);
void tg__spare_defer_end(void);

/* Map the next chunk; 0, TG_ENOMEM, or TG_EQUOTA when 2^32 - 1 slots.
   Takes the spare chunk when one is ready (no fault on this thread), then
   wakes whoever makes spares (a_spare_wake). */
int tg__arena_grow(tg__arena *a);

/*
 * Fresh memory off the creating thread: map and fault a chunk ahead and
 * leave it as the spare, unless one is there already; likewise a map
 * region once the map has one (map_spare). Any thread, no lock
 * (the spare is handed over by atomic exchanges). 1 when it made one, 0
 * when there was one, TG_ENOMEM. While the allocation seam limits chunks
 * (tg__arena_set_map_budget()), it makes none, so tests that drive the
 * arena out of memory count only the chunks creates map.
 */
int tg__arena_prefault(tg__arena *a);

/* Map `bytes` (a multiple of 2 MiB) of fresh memory, 2 MiB aligned,
   advised MADV_HUGEPAGE and faulted for writing now; NULL when it could
   not. What the arena's chunks and map regions, and the graph's adjacency
   tables, are made of: memory a caller first reads and then writes must
   not be left to the first touch, which maps the zero page and then takes
   a write fault that flushes the other CPUs' TLBs (an IPI each). */
void *tg__map_fresh(size_t bytes);
void tg__unmap_fresh(void *p, size_t bytes);

/* A zeroed table of `bytes` of which most pages are never touched (the
   per-chunk pointer and count tables): its own anonymous mapping, so a
   page becomes resident only when written. Not calloc(): once glibc has
   raised its mmap threshold past the size (it does after freeing a larger
   mapped block), calloc() takes the table from the heap and memsets all
   of it, a megabyte of page faults per table per open. NULL when the
   kernel refuses; freed with tg__table_free(). */
void *tg__table_alloc(size_t bytes);
void tg__table_free(void *p, size_t bytes);

/* A 2 MiB block from pool p (NULL: none) while it has one, else as
   tg__map_fresh(); other sizes as tg__map_fresh(). Either way it is
   unmapped with tg__unmap_fresh(). */
void *tg__map_block(tg__blockpool *p, size_t bytes);

/* Fault in `bytes` (rounded up to 2 MiB blocks) into pool p now. 0, or
   TG_ENOMEM with nothing kept. */
int tg__blockpool_fill(tg__blockpool *p, uint64_t bytes);

/* Unmap the blocks p still holds. */
void tg__blockpool_free(tg__blockpool *p);

/* Regions of address space reserved so far by this process for 2 MiB
   blocks (arena.c, BLOCKS): a block is carved from one without a system
   call that takes the mmap lock for writing. For tests. */
unsigned long tg__arena_regions_reserved(void);

/* Bytes mapped for slots. */
static inline uint64_t tg__arena_bytes(const tg__arena *a) {
  return (uint64_t)TG__LOAD_RELAXED(a->nchunks) * TG__CHUNK_BYTES;
}

/* Address of slot index i; i must be < a->next. */
static inline void *tg__arena_slot(const tg__arena *a, uint32_t i) {
  return a->chunks[i >> TG__CHUNK_SHIFT] +
         (size_t)(i & TG__CHUNK_MASK) * TG__SLOT_BYTES;
}

static inline uint32_t tg__slot_u32(const void *slot, uint32_t off) {
  uint32_t v;
  memcpy(&v, (const unsigned char *)slot + off, sizeof v);
  return v;
}

/* ---- write sections -----------------------------------------------------
 * Two kinds of writer open sections. The holder of the store lock runs
 * alone (the store waits out every other writer when it takes the lock),
 * so it opens a section with a plain increment. A striped call (the
 * store's STRIPES: a connect, disconnect or update made without the store
 * lock, under the adjacency locks of its tokens) may meet another striped
 * call on the same counter: two connects whose tokens' slots or lists fall
 * in one stripe, or whose neighbours' connection slots do. It sets
 * tg__tl_striped for the call, and its sections take the counter from even
 * to odd with a compare-and-swap, so the counter is also the stripe's
 * write lock: a section waits while another one of the stripe is open (a
 * few stores). A striped call opens at most the two list stripes of its
 * tokens (which only the holders of their adjacency locks open, so never
 * in conflicting order) and, inside them, single sections of connection
 * stripes that open nothing inside: no cycle of waits. */

/* 1 while this thread is inside a striped call (store.c, STRIPES).
   Initial-exec: every write section and dirty mark reads it, and the
   default model for position-independent code made each read a call to
   __tls_get_addr (callgrind: a single-thread connect cost 568
   instructions against 510 before). */
extern _Thread_local int tg__tl_striped __attribute__((tls_model("initial-exec")));

static inline uint32_t *tg__arena_stripe(tg__arena *a, uint32_t i) {
  return &a->seq[i & (TG__SEQ_STRIPES - 1u)];
}

/* The striped writer's open: out of line (arena.c). */
void tg__seq_begin_shared(uint32_t *sq);

/* Open a write section on a stripe. Sections on one stripe never nest. */
static inline void tg__seq_begin(uint32_t *sq) {
  if (__builtin_expect(tg__tl_striped, 0)) {
    tg__seq_begin_shared(sq);
    return;
  }
  /* Only the lock holder, alone, writes the counter now. The load is a
     relaxed atomic (a plain mov here) because striped writers' failed
     compare-and-swaps, which ThreadSanitizer counts as writes, may meet
     it on other counters' sections (tg__seq_end()). */
  __atomic_store_n(sq, __atomic_load_n(sq, __ATOMIC_RELAXED) + 1u, __ATOMIC_RELAXED);
  /* Orders the odd counter before the data stores that follow: a reader
     that sees one of them sees the counter odd or advanced (its acquire
     fence pairs with this one). */
  __atomic_thread_fence(__ATOMIC_RELEASE);
}

/* Close it: the data stores happen before the even counter. The load
   reads the section's own odd value (nobody else stores while it is odd);
   it is a relaxed atomic, not a plain read, because a striped writer
   waiting on the stripe may try its compare-and-swap meanwhile, which
   fails (a load in C11) but which ThreadSanitizer counts as a write. */
static inline void tg__seq_end(uint32_t *sq) {
  __atomic_store_n(sq, __atomic_load_n(sq, __ATOMIC_RELAXED) + 1u, __ATOMIC_RELEASE);
}

/*
 * Store a whole 64-byte image into slot p, inside a write section.
 * ThreadSanitizer builds store it as eight relaxed atomic words, which is
 * what the C11 model asks of a store that a seqlock reader may race with.
 * Other builds copy it with plain (vector) stores: eight scalar stores into
 * a line that is not yet in cache, ahead of the store lock's locked
 * instruction, made a token create 1.4x slower here (tg-bench tokens ratio
 * 1.61 against 1.12, alternated runs). A reader that races with the copy
 * gets a torn image and discards it: the counter around its copy moved
 * (the section's release fence and release store keep the copy between
 * them), so no torn value is ever returned; the race is the benign one of
 * the seqlock literature (Boehm 2012), and the TSan build checks the same
 * protocol with atomics.
 */
#if defined(__SANITIZE_THREAD__)
#define TG__SLOT_ATOMIC_STORES 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TG__SLOT_ATOMIC_STORES 1
#endif
#endif

static inline void tg__slot_store(void *p, const void *img) {
#ifdef TG__SLOT_ATOMIC_STORES
  uint64_t w[8];
  memcpy(w, img, sizeof w);
  uint64_t *d = (uint64_t *)p;
  for (int k = 0; k < 8; k++) __atomic_store_n(&d[k], w[k], __ATOMIC_RELAXED);
#else
  memcpy(p, img, TG__SLOT_BYTES);
#endif
}

/* Store one 4-byte field (off a multiple of 4) inside a write section: the
   64-bit word around it is rewritten, so every access to slot memory is a
   whole-word atomic and readers never mix access sizes. */
static inline void tg__slot_set_u32(void *slot, uint32_t off, uint32_t v) {
  uint64_t *wp = (uint64_t *)((unsigned char *)slot + (off & ~7u));
  uint64_t w = *wp; /* plain: only the writer stores here */
  memcpy((unsigned char *)&w + (off & 7u), &v, sizeof v);
  __atomic_store_n(wp, w, __ATOMIC_RELAXED);
}

/* The same for a 2-byte field (off a multiple of 2). */
static inline void tg__slot_set_u16(void *slot, uint32_t off, uint16_t v) {
  uint64_t *wp = (uint64_t *)((unsigned char *)slot + (off & ~7u));
  uint64_t w = *wp;
  memcpy((unsigned char *)&w + (off & 7u), &v, sizeof v);
  __atomic_store_n(wp, w, __ATOMIC_RELAXED);
}


#define TG__MAP_CHUNK_BYTES ((size_t)TG__CHUNK_SLOTS * sizeof(uint32_t)) /* 128 KiB */
/* Map chunks are carved from 2 MiB regions, 2 MiB aligned and advised
   MADV_HUGEPAGE, as the slot chunks are: a lookup of a random id loads its
   map entry, and with 4 KiB pages the map of 4 M ids (16 MiB, 4,096 pages)
   missed the TLB on most lookups, a two-level page walk under the
   hypervisor (tg-bench concurrent's reader p99.9, docs/benchmarks.md). */
#define TG__MAP_REGION_CHUNKS 16u
#define TG__MAP_REGION_BYTES (TG__MAP_CHUNK_BYTES * TG__MAP_REGION_CHUNKS) /* 2 MiB */
#define TG__MAX_MAP_REGIONS (TG__MAX_CHUNKS / TG__MAP_REGION_CHUNKS)
#define TG__ID_CHUNK(id) (((uint32_t)(id) - 1u) >> TG__CHUNK_SHIFT) /* map chunk */
#define TG__ID_ENTRY(id) (((uint32_t)(id) - 1u) & TG__CHUNK_MASK)   /* entry in it */

/* Slot index + 1 of the live object with this id, or 0. */
static inline uint32_t tg__arena_index(const tg__arena *a, uint32_t id) {
  const uint32_t *m = a->map[TG__ID_CHUNK(id)];
  return m ? m[TG__ID_ENTRY(id)] : 0; /* id 0's entry is never set */
}

/* The live object with this id, or NULL. The slot's id field is checked
   too: an id a batch holds (tg__arena_reserve()) is mapped to a slot whose
   id field stays 0 until the object is written. */
static inline void *tg__arena_get(const tg__arena *a, uint32_t id) {
  uint32_t e = tg__arena_index(a, id);
  if (!e) return NULL;
  void *p = tg__arena_slot(a, e - 1u);
  return tg__slot_u32(p, a->id_off) == id ? p : NULL;
}

/*
 * Lock-free read: copy the image of object `id` into out (64 bytes) as it
 * was at one moment, never torn. Returns 1 when it was live then, 0 when
 * not (out then holds whatever the slot held, or nothing). Waits only while
 * a writer is inside a write section of the slot's stripe (a few stores;
 * more only if that writer was preempted there).
 */
static inline int tg__arena_read(const tg__arena *a, uint32_t id, void *out) {
  uint64_t w[8];
  /* Ids and slots start in step (a store that has deleted nothing holds id
     i in slot i - 1, or near it), so the slot at index id - 1 is fetched
     while the map entry is: two dependent cache misses overlap. A wrong
     guess costs one prefetch; the chunk table never moves and a prefetch
     never faults (a stale chunk pointer is still mapped). */
  const unsigned char *guess =
      __atomic_load_n(&a->chunks[(id - 1u) >> TG__CHUNK_SHIFT], __ATOMIC_RELAXED);
  if (guess) __builtin_prefetch(guess + (size_t)((id - 1u) & TG__CHUNK_MASK) * TG__SLOT_BYTES);
  for (;;) {
    /* Acquire, twice: the chunk of map entries, then the entry, which was
       stored (with release) after the slot's chunk pointer. */
    const uint32_t *m = __atomic_load_n(&a->map[TG__ID_CHUNK(id)], __ATOMIC_ACQUIRE);
    uint32_t e = m ? __atomic_load_n(&m[TG__ID_ENTRY(id)], __ATOMIC_ACQUIRE) : 0;
    if (!e) return 0;
    uint32_t i = e - 1u;
    const uint32_t *sq = &a->seq[i & (TG__SEQ_STRIPES - 1u)];
    uint32_t s0 = __atomic_load_n(sq, __ATOMIC_ACQUIRE);
    if (__builtin_expect(s0 & 1u, 0)) {
      tg__cpu_relax();
      continue;
    }
    const uint64_t *src = (const uint64_t *)tg__arena_slot(a, i);
    for (int k = 0; k < 8; k++) w[k] = __atomic_load_n(&src[k], __ATOMIC_RELAXED);
    /* Orders the copy before the second counter load (pairs with the
       writer's release fence in tg__seq_begin). */
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(sq, __ATOMIC_RELAXED) == s0) break;
  }
  memcpy(out, w, sizeof w);
  /* Another id (the slot was reused) or 0 (freed, or held by a batch). */
  return tg__slot_u32(w, a->id_off) == id;
}

/*
 * Lock-free read of slot index i (i < the `next` the reader saw under the
 * lock, so its chunk is mapped), whatever it holds: the 64 bytes as they
 * were at one moment, with the same seqlock as tg__arena_read().
 */
static inline void tg__arena_read_slot(const tg__arena *a, uint32_t i, void *out) {
  uint64_t w[8];
  const uint32_t *sq = &a->seq[i & (TG__SEQ_STRIPES - 1u)];
  const uint64_t *src = (const uint64_t *)tg__arena_slot(a, i);
  for (;;) {
    uint32_t s0 = __atomic_load_n(sq, __ATOMIC_ACQUIRE);
    if (__builtin_expect(s0 & 1u, 0)) {
      tg__cpu_relax();
      continue;
    }
    for (int k = 0; k < 8; k++) w[k] = __atomic_load_n(&src[k], __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_ACQUIRE); /* as in tg__arena_read() */
    if (__atomic_load_n(sq, __ATOMIC_RELAXED) == s0) break;
  }
  memcpy(out, w, sizeof w);
}

/* Slots in use, for readers without the lock. */
static inline uint64_t tg__arena_live_relaxed(const tg__arena *a) {
  return TG__LOAD_RELAXED(a->live);
}

/* The id the next allocation will hand out (0: every id is live). */
uint32_t tg__arena_next_id(const tg__arena *a);

/* Map the map chunk that holds `id`. 0 or TG_ENOMEM. */
int tg__arena_map_cover(tg__arena *a, uint32_t id);

/* Give a map chunk with no live id back to the kernel. */
void tg__arena_map_reclaim(tg__arena *a, uint32_t chunk);

/* Point `id` at slot index i (live from now on). The map chunk exists. */
static inline void tg__arena_map_set(tg__arena *a, uint32_t id, uint32_t i) {
  uint32_t c = TG__ID_CHUNK(id);
  /* Release: a reader that loads the entry (acquire) finds the slot's
     chunk pointer, stored plain by tg__arena_grow() before. */
  __atomic_store_n(&a->map[c][TG__ID_ENTRY(id)], i + 1u, __ATOMIC_RELEASE);
  a->map_live[c]++;
  TG__STORE_RELAXED(a->live, a->live + 1u);
}

/*
 * Take a slot and an id for an object that nobody can find yet: the id is
 * not mapped (the caller maps it with tg__arena_publish() once the slot
 * holds the object, or hands both back with tg__arena_untake()). Returns
 * the slot's index (its id is then a->cursor), or TG_ENOMEM when a chunk
 * could not be mapped, or TG_EQUOTA when every id is live. Until it is
 * published or handed back, the arena must not take another slot (the
 * store lock keeps it so). Nothing is returned through pointers, so the
 * caller's locals stay in registers.
 *
 * Why unpublished: a slot that no map entry names can be written without a
 * write section. A reader finds a new object only through its map entry,
 * stored with release after the slot (so it copies the whole image); a
 * reader still holding an older id's entry for a reused slot keeps a copy
 * only when its id field holds that older id, and the slot's id field
 * holds 0 (freed, inside a write section that reader's counter check
 * covers) or the new id (one whole-word store). A create then costs no
 * counter bump, and no second map lookup to find its slot.
 */
int64_t tg__arena_take_slow(tg__arena *a);

static inline int64_t tg__arena_take(tg__arena *a) {
  /* The common case: before any wrap, cursor + 1 is free and its map
     chunk is there, which one comparison with fast_end says. Anything
     else (a new map chunk, the wrap, ids to skip, a new slot chunk) takes
     the slow path, which sets fast_end again. */
  if (__builtin_expect(a->cursor >= a->fast_end, 0)) return tg__arena_take_slow(a);
  uint32_t i;
  if (a->free_head) {
    i = a->free_head - 1u;
    a->free_head = tg__slot_u32(tg__arena_slot(a, i), TG__FREE_NEXT_OFF);
  } else if (__builtin_expect(a->next < a->limit, 1)) {
    i = a->next;
    a->next = i + 1u; /* read by nobody without the lock */
  } else {
    return tg__arena_take_slow(a);
  }
  a->cursor++;
  return i;
}

/*
 * For a thread's own cache of ids and slots (the store's lock-free
 * creates): hand out up to `want` ids, all in one map chunk, as
 * [*first, *first + n); returns n, 0 when the fast path could not (a wrap,
 * no memory for the map chunk): the caller then creates under the lock.
 * The ids count in their map chunk's live count from now on, so their
 * publish (tg__arena_publish_held()) counts nothing; an id never used
 * stays counted, which only keeps its map chunk mapped. Ids a thread never
 * used are dead: gaps, never handed out again (until a wrap).
 */
uint32_t tg__arena_take_ids(tg__arena *a, uint32_t want, uint32_t *first);

/* Would taking `want` slots map a new chunk? (The free list is empty and
   fewer than `want` fresh slots are left.) Under the arena's lock. */
static inline int tg__arena_would_grow(const tg__arena *a, uint32_t want) {
  return a->free_head == 0 && a->limit - a->next < want;
}

/* Take up to `want` slots (from the free list, then fresh ones) into out;
   returns how many (fewer when a chunk could not be mapped). They are
   neither live nor free until published or handed back; their id field is
   0, so walks of the slots see them as free. */
uint32_t tg__arena_take_slots(tg__arena *a, uint32_t *out, uint32_t want);

/* Publish id (from tg__arena_take_ids()) at slot index i (from
   tg__arena_take_slots()), once the slot holds the object. Counts nothing:
   the id's map chunk counted it when it was handed out, and the store
   counted the token in `live` when it gave the credit for it. Any thread,
   no lock: entries of distinct ids are distinct words. */
static inline void tg__arena_publish_held(tg__arena *a, uint32_t id, uint32_t i) {
  /* Release: as in tg__arena_publish(). */
  __atomic_store_n(&a->map[TG__ID_CHUNK(id)][TG__ID_ENTRY(id)], i + 1u, __ATOMIC_RELEASE);
}

/* Make taken `id` live at slot index i: after the slot holds the object
   (its id field included). The id's map chunk exists (take mapped it). */
static inline void tg__arena_publish(tg__arena *a, uint32_t id, uint32_t i) {
  uint32_t c = TG__ID_CHUNK(id);
  /* Release: a reader that loads the entry (acquire) finds the slot's
     chunk pointer, stored plain by tg__arena_grow() before, and the
     object's image, stored before this. */
  __atomic_store_n(&a->map[c][TG__ID_ENTRY(id)], i + 1u, __ATOMIC_RELEASE);
  a->map_live[c]++;
  TG__STORE_RELAXED(a->live, a->live + 1u);
}

/* Hand back a slot and id taken and not published (their object could not
   be logged): the slot returns to the free list and the cursor steps back,
   so the next take hands out `id` again (nobody saw it). A stale reader of
   an older id may be copying the slot: its fields are stored whole-word. */
static inline void tg__arena_untake(tg__arena *a, void *p, uint32_t i, uint32_t id) {
  tg__slot_set_u32(p, a->id_off, 0);
  tg__slot_set_u32(p, TG__FREE_NEXT_OFF, a->free_head);
  a->free_head = i + 1u;
  a->cursor = id - 1u;
  a->fast_end = 0;
}

/*
 * Take a slot and an id, mapped at once. Returns the slot's address and
 * stores the id in *id, or NULL with *err as tg__arena_take(). The caller must write
 * the id into the slot's id field (inside a write section) before the
 * arena is used again.
 */
static inline void *tg__arena_alloc(tg__arena *a, uint32_t *id, int *err) {
  int64_t i = tg__arena_take(a);
  if (__builtin_expect(i < 0, 0)) {
    *err = (int)i;
    return NULL;
  }
  *id = a->cursor;
  tg__arena_publish(a, *id, (uint32_t)i);
  return tg__arena_slot(a, (uint32_t)i);
}

/* Undo the allocation of `id`, the last one handed out, after its slot was
   released: the cursor steps back so the next allocation hands out `id`
   again (nobody saw it). */
static inline void tg__arena_give_back(tg__arena *a, uint32_t id) {
  a->cursor = id - 1u;
  a->fast_end = 0;
}

/* Return the live slot `p` (id `id`) to the free list; the id is dead and
   is not handed out again until the id space wraps. The caller has a write
   section of the slot's stripe open. */
static inline void tg__arena_release(tg__arena *a, void *p, uint32_t id) {
  uint32_t c = TG__ID_CHUNK(id);
  uint32_t *e = &a->map[c][TG__ID_ENTRY(id)];
  uint32_t slot1 = *e;
  __atomic_store_n(e, 0u, __ATOMIC_RELAXED);
  tg__slot_set_u32(p, a->id_off, 0);
  tg__slot_set_u32(p, TG__FREE_NEXT_OFF, a->free_head);
  a->free_head = slot1;
  TG__STORE_RELAXED(a->live, a->live - 1u);
  if (--a->map_live[c] == 0 && c != TG__ID_CHUNK(a->cursor))
    tg__arena_map_reclaim(a, c);
}

/*
 * A striped disconnect's release of live slot p (id `id`), inside the
 * caller's write section of the slot's stripe: the map entry and the id
 * field are cleared as tg__arena_release() clears them, but the slot goes
 * to the calling thread's cache (store.c, STRIPES), not to the free list,
 * and `live` stays (the store keeps the slot as quota credit). Other
 * striped threads may change counts of the same map chunk, so its count
 * drops by an atomic decrement; a chunk whose last id dies this way is not
 * reclaimed (it stays mapped: 128 KiB at most per such chunk).
 */
static inline void tg__arena_release_held(tg__arena *a, void *p, uint32_t id) {
  uint32_t c = TG__ID_CHUNK(id);
  __atomic_store_n(&a->map[c][TG__ID_ENTRY(id)], 0u, __ATOMIC_RELAXED);
  tg__slot_set_u32(p, a->id_off, 0);
  __atomic_fetch_sub(&a->map_live[c], 1u, __ATOMIC_RELAXED);
}

/*
 * Copy live objects in id order, starting after id *pos, into out (64
 * bytes each): at most `max` objects, looking at at most `budget` ids, so
 * the caller's lock is held for a bounded time however sparse the ids are.
 * *pos becomes the last id looked at. Returns how many were copied; *done
 * is set when no id after *pos can be live (the end of the ids issued).
 */
size_t tg__arena_scan(const tg__arena *a, uint32_t *pos, void *out, size_t max,
                      uint32_t budget, int *done);

/*
 * Loading (recovery): objects are put at the ids the log or checkpoint
 * names. Slots are taken as for any allocation (ids do not name slots), so
 * begin and end only mark the phase.
 */
void tg__arena_begin_load(tg__arena *a);
void tg__arena_rebuild_free(tg__arena *a);

/* Ids handed out ahead of their object (tg__arena_reserve()): at most
   this many at once per arena (the store refuses more, its
   TG_BATCH_MAX_RESERVED); see tg__arena_may_replay(). */
#define TG__ARENA_RESERVE_MAX (1u << 20)

/*
 * Could the store have issued `id`? Before the id space wraps it hands out
 * cursor + 1 each time: so while loading, an id past both cursor + 1 and
 * put_max names an object that never existed (the bound that keeps a
 * damaged record from being taken for data). After a wrap every id can
 * have been issued.
 */
static inline int tg__arena_may_put(const tg__arena *a, uint32_t id) {
  return id != 0 && (a->wrapped || id <= (uint64_t)a->cursor + 1u || id <= a->put_max);
}

/* Ids threads' caches may hold at once (the store's TG__SHARDS_MAX
   caches of TG__SHARD_BLOCK ids, store_internal.h), never used or logged
   out of order. */
#define TG__ARENA_CACHED_MAX (64u * 256u)

/*
 * The same for a record replayed from the log, which may also name an id a
 * batch held, or one a thread's cache held while ids handed out to other
 * threads after it were used and logged: held ids are logged when their
 * batch commits, after ids handed out later may have been, but at most
 * TG__ARENA_RESERVE_MAX are held at once, and at most TG__ARENA_CACHED_MAX
 * sit in caches, so before a wrap a logged id is at most that many past the
 * cursor (the bound maps at most about 4 MiB of id map more for a forged
 * id).
 */
static inline int tg__arena_may_replay(const tg__arena *a, uint32_t id) {
  return id != 0 && (a->wrapped ||
                     id <= (uint64_t)a->cursor + 1u + TG__ARENA_RESERVE_MAX + TG__ARENA_CACHED_MAX ||
                     id <= a->put_max);
}

/*
 * Take a slot for an object that will exist later (a batch's create), and
 * give its id. The id is mapped to the slot, but the slot is not live (its
 * id field is 0, so get() does not find it) nor free (off the free list)
 * until tg__arena_fill() or tg__arena_unreserve(). 0, TG_ENOMEM, TG_EQUOTA.
 */
static inline int tg__arena_reserve(tg__arena *a, uint32_t *id) {
  int err = 0;
  void *p = tg__arena_alloc(a, id, &err);
  if (!p) return err;
  /* The slot's id field is 0 already (fresh or free): readers see it as
     not live throughout, so no write section is needed. */
  TG__STORE_RELAXED(a->live, a->live - 1u);
  return 0;
}

/* The reserved slot of `id`; the caller writes the object there (its id
   field last of all is what makes it live) and counts it live. */
static inline void *tg__arena_fill(tg__arena *a, uint32_t id) {
  TG__STORE_RELAXED(a->live, a->live + 1u);
  return tg__arena_slot(a, tg__arena_index(a, id) - 1u);
}

/* Give a reserved id back (its batch was aborted). When it is still the
   last id handed out, the cursor steps back and the next allocation hands
   it out again, as replay would after a restart (no record names it);
   otherwise it stays dead until the id space wraps. */
static inline void tg__arena_unreserve(tg__arena *a, uint32_t id) {
  TG__STORE_RELAXED(a->live, a->live + 1u);
  uint32_t i = tg__arena_index(a, id) - 1u, *sq = tg__arena_stripe(a, i);
  tg__seq_begin(sq);
  tg__arena_release(a, tg__arena_slot(a, i), id);
  tg__seq_end(sq);
  if (id == a->cursor) tg__arena_give_back(a, id);
}

/*
 * Loading only: the slot for `id`. *was_live says whether it held a live
 * object (then the caller overwrites it); otherwise a slot is taken, the id
 * mapped to it, and the caller must write the id field. A put of a new id
 * is a create being replayed, so it moves the cursor as the create did:
 * to the id, when it is the one the allocator hands out next (also across
 * the wrap), or forward to it (ids written by a library that reused ids,
 * or held by a batch that committed late, never move the cursor back).
 * NULL on failure (*err: TG_ENOMEM, TG_EINVAL for id 0, TG_ECORRUPT for an
 * id the store could not have issued, see tg__arena_may_replay()).
 */
void *tg__arena_put(tg__arena *a, uint32_t id, int *was_live, int *err);

/* Tests: make the cursor `id` (0 <= id), as if ids up to it had been
   handed out. Only on an arena with nothing live above the new cursor. */
void tg__arena_set_cursor(tg__arena *a, uint32_t id, int wrapped);

#endif /* TG_TOKEN_ARENA_H */
