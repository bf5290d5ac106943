/*
 * The arena: 64-byte slots handed out from 2 MiB chunks.
 *
 * Why this shape: creating a token must cost about what writing 64 bytes
 * into fresh huge-page memory costs (7 ns measured on the reference machine,
 * against 150 ns with 4 KiB pages and far more with one malloc per object).
 * So memory comes in 2 MiB chunks, 2 MiB aligned, advised MADV_HUGEPAGE and
 * pre-faulted when the chunk is taken into use; a slot is found by a free
 * list pop or a bump of `next`, both O(1) with no system call.
 *
 * Slot index i (0-based) is object id i + 1, so id -> slot is two loads
 * (chunk table, then offset). Id 0 is never handed out.
 *
 * A free slot keeps the "next free" index (+1, 0 ends the list) in its last
 * four bytes and a zero in its id field (id_off); a slot is live exactly when
 * its id field equals its id, which lets get() reject stale or unknown ids
 * without any side table.
 *
 * Readers that take no lock (the store's READS comment says who): one
 * writer at a time changes an arena (the store lock), any number of threads
 * read it at once. What makes that safe:
 *  - the chunk table has a fixed size (TG__MAX_CHUNKS entries) and never
 *    moves; an entry is written once, before `next` is published past it
 *    with a release store, and a chunk stays mapped until the arena is
 *    freed (close), so a reader that loaded `next` with acquire can always
 *    dereference slot i < next;
 *  - every slot word is written with a relaxed atomic 64-bit store inside a
 *    write section of the slot's stripe (seq[], below) and read with
 *    relaxed atomic loads: the seqlock of the C11 literature (Boehm, "Can
 *    seqlocks get along with programming language memory models?", 2012):
 *    the writer makes the stripe's counter odd, issues a release fence,
 *    stores, and makes it even with a release store; a reader loads the
 *    counter with acquire, copies, issues an acquire fence and loads it
 *    again, and retries when it changed or was odd. The 64-byte slots have
 *    no spare bytes, so the counters are a side array of stripes (slot i
 *    uses seq[i % TG__SEQ_STRIPES]): 16 KiB per arena instead of 4 bytes
 *    per slot, at the cost of a rare retry when another slot of the same
 *    stripe changed;
 *  - live and nchunks are published with relaxed stores for the counters
 *    (TG__STORE_RELAXED, common/platform.h).
 * The graph (graph.h) also uses the token arena's stripes as the version of
 * each token's adjacency lists.
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
#define TG__FREE_NEXT_OFF 60u                       /* free-list link offset */
#define TG__SEQ_STRIPES 4096u                       /* seqlock stripes an arena */

typedef struct tg__arena {
  unsigned char **chunks; /* TG__MAX_CHUNKS entries; NULL = not mapped;
                             fixed, never moved (readers) */
  uint32_t nchunks;       /* chunks mapped, always a prefix of `chunks`
                             (relaxed stores: stats readers) */
  uint32_t next;          /* slots [0, next) were handed out at least once;
                             release stores, readers load it with acquire */
  uint32_t limit;         /* nchunks * TG__CHUNK_SLOTS, capped at MAX_SLOTS */
  uint32_t free_head;     /* index + 1 of the first free slot, 0 = none */
  uint32_t id_off;        /* offset of the object's u32 id within a slot */
  int loading;            /* 1 while objects are put by id (checkpoint load,
                             replay): frees keep no list, see
                             tg__arena_rebuild_free() */
  uint32_t put_max;       /* loading: the highest id the store had issued
                             before what is being loaded (the checkpoint's
                             high-water mark); see tg__arena_may_put() */
  uint64_t live;          /* slots in use (relaxed stores: stats readers) */
  uint32_t seq[TG__SEQ_STRIPES]; /* write-section counters, odd while a
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

/* Map the next chunk; 0, TG_ENOMEM, or TG_EQUOTA when 2^32 - 1 slots. */
int tg__arena_grow(tg__arena *a);

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

/* ---- write sections (one writer: the caller holds the store lock) ------- */

static inline uint32_t *tg__arena_stripe(tg__arena *a, uint32_t i) {
  return &a->seq[i & (TG__SEQ_STRIPES - 1u)];
}

/* Open a write section on a stripe. Sections on one stripe never nest:
   the writer's own reads of *sq are plain (only it writes the counter). */
static inline void tg__seq_begin(uint32_t *sq) {
  __atomic_store_n(sq, *sq + 1u, __ATOMIC_RELAXED);
  /* Orders the odd counter before the data stores that follow: a reader
     that sees one of them sees the counter odd or advanced (its acquire
     fence pairs with this one). */
  __atomic_thread_fence(__ATOMIC_RELEASE);
}

/* Close it: the data stores happen before the even counter. */
static inline void tg__seq_end(uint32_t *sq) {
  __atomic_store_n(sq, *sq + 1u, __ATOMIC_RELEASE);
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

/* The live object with this id, or NULL. For the writer (store lock held)
   and single-threaded loading; readers without the lock use
   tg__arena_read(). */
static inline void *tg__arena_get(const tg__arena *a, uint32_t id) {
  uint32_t i = id - 1u; /* id 0 wraps to 0xFFFFFFFF, never < next */
  if (i >= a->next) return NULL;
  void *p = tg__arena_slot(a, i);
  return tg__slot_u32(p, a->id_off) == id ? p : NULL;
}

/*
 * Lock-free read: copy the image of object `id` into out (64 bytes) as it
 * was at one moment, never torn. Returns 1 when it was live then, 0 when
 * not (out then holds whatever the slot held, or nothing). Waits only while
 * a writer is inside a write section of the same stripe (a few stores; more
 * only if that writer was preempted there).
 */
static inline int tg__arena_read(const tg__arena *a, uint32_t id, void *out) {
  uint32_t i = id - 1u;
  const uint32_t *sq = &a->seq[i & (TG__SEQ_STRIPES - 1u)];
  uint64_t w[8];
  for (;;) {
    uint32_t s0 = __atomic_load_n(sq, __ATOMIC_ACQUIRE);
    if (__builtin_expect(s0 & 1u, 0)) {
      tg__cpu_relax();
      continue;
    }
    /* Acquire: the chunk pointer for slot i was stored before `next` was
       published past i. */
    if (i >= __atomic_load_n(&a->next, __ATOMIC_ACQUIRE)) return 0;
    const uint64_t *src = (const uint64_t *)tg__arena_slot(a, i);
    for (int k = 0; k < 8; k++) w[k] = __atomic_load_n(&src[k], __ATOMIC_RELAXED);
    /* Orders the copy before the second counter load (pairs with the
       writer's release fence in tg__seq_begin). */
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(sq, __ATOMIC_RELAXED) == s0) break;
  }
  memcpy(out, w, sizeof w);
  return tg__slot_u32(w, a->id_off) == id;
}

/* Slots in use and bytes mapped, for readers without the lock. */
static inline uint64_t tg__arena_live_relaxed(const tg__arena *a) {
  return TG__LOAD_RELAXED(a->live);
}

/*
 * Take a slot. Returns its address and stores its id in *id, or NULL when
 * a chunk could not be mapped (*err says why). Nothing is written into the
 * slot: the caller writes the object, id field included, in a write
 * section before the arena is used again. A fresh slot (bump of `next`)
 * holds zeroes, a free one a zero id, so readers see it as not live until
 * then.
 */
void *tg__arena_alloc_slow(tg__arena *a, uint32_t *id, int *err);

static inline void *tg__arena_alloc(tg__arena *a, uint32_t *id, int *err) {
  uint32_t i;
  if (a->free_head) {
    i = a->free_head - 1u;
    void *p = tg__arena_slot(a, i);
    a->free_head = tg__slot_u32(p, TG__FREE_NEXT_OFF);
    TG__STORE_RELAXED(a->live, a->live + 1u);
    *id = i + 1u;
    return p;
  }
  if (a->next < a->limit) {
    i = a->next;
    /* Release: pairs with tg__arena_read()'s acquire (chunk pointer). */
    __atomic_store_n(&a->next, i + 1u, __ATOMIC_RELEASE);
    TG__STORE_RELAXED(a->live, a->live + 1u);
    *id = i + 1u;
    return tg__arena_slot(a, i);
  }
  return tg__arena_alloc_slow(a, id, err);
}

/* Return the live slot `p` (id `id`) to the free list. The caller has a
   write section of the slot's stripe open. */
static inline void tg__arena_release(tg__arena *a, void *p, uint32_t id) {
  tg__slot_set_u32(p, a->id_off, 0);
  if (__builtin_expect(!a->loading, 1)) {
    tg__slot_set_u32(p, TG__FREE_NEXT_OFF, a->free_head);
    a->free_head = id;
  }
  TG__STORE_RELAXED(a->live, a->live - 1u);
}

/*
 * Loading (recovery): objects are put at the ids the log or checkpoint
 * names, which may be any free slot. Rather than unlink a slot from the
 * middle of the free list, loading keeps no free list at all (a free slot is
 * one whose id field is 0) and rebuilds it once at the end, lowest id first.
 */
void tg__arena_begin_load(tg__arena *a);
void tg__arena_rebuild_free(tg__arena *a);

/* Ids handed out ahead of their object (tg__arena_reserve()): at most
   this many at once per arena (the store refuses more, its
   TG_BATCH_MAX_RESERVED); see tg__arena_may_replay(). */
#define TG__ARENA_RESERVE_MAX (1u << 20)

/*
 * Could the store have issued `id`? It hands out the next id (slot `next`)
 * or a freed one, which lies below the highest id ever issued: so while
 * loading, an id past both next + 1 and put_max names an object that never
 * existed, and honouring it would map up to 256 GiB of arena for one
 * record. Checked before anything is allocated.
 */
static inline int tg__arena_may_put(const tg__arena *a, uint32_t id) {
  return id != 0 && (id <= (uint64_t)a->next + 1u || id <= a->put_max);
}

/*
 * The same for a record replayed from the log, which may also name an id a
 * batch held: held ids are logged when their batch commits, after ids
 * handed out later may have been, but at most TG__ARENA_RESERVE_MAX are
 * held at once and a new slot is taken only when no freed one is left, so
 * a logged id is at most that many past the highest logged before it (the
 * bound maps at most 64 MiB more for a forged id).
 */
static inline int tg__arena_may_replay(const tg__arena *a, uint32_t id) {
  return id != 0 &&
         (id <= (uint64_t)a->next + 1u + TG__ARENA_RESERVE_MAX || id <= a->put_max);
}

/*
 * Take a slot for an object that will exist later (a batch's create), and
 * give its id. The slot is neither live (its id field is 0, so get() does
 * not find it) nor free (off the free list) until tg__arena_fill() or
 * tg__arena_unreserve(). 0, TG_ENOMEM, TG_EQUOTA.
 */
static inline int tg__arena_reserve(tg__arena *a, uint32_t *id) {
  int err = 0;
  void *p = tg__arena_alloc(a, id, &err);
  if (!p) return err;
  /* The slot's id field is 0 already (fresh or free): readers see it as
     not live throughout, so no write section is needed, and its content
     is not what a checkpoint takes (a free slot is recorded by id). */
  TG__STORE_RELAXED(a->live, a->live - 1u);
  return 0;
}

/* The reserved slot of `id`; the caller writes the object there in a
   write section (graph.h) and it counts live from here. */
static inline void *tg__arena_fill(tg__arena *a, uint32_t id) {
  TG__STORE_RELAXED(a->live, a->live + 1u);
  return tg__arena_slot(a, id - 1u);
}

/* Give a reserved id back (its batch was aborted). */
static inline void tg__arena_unreserve(tg__arena *a, uint32_t id) {
  TG__STORE_RELAXED(a->live, a->live + 1u);
  uint32_t *sq = tg__arena_stripe(a, id - 1u);
  tg__seq_begin(sq);
  tg__arena_release(a, tg__arena_slot(a, id - 1u), id);
  tg__seq_end(sq);
}

/*
 * Loading only: the slot for `id`, mapping chunks as needed. *was_live says
 * whether it held a live object (then the caller overwrites it); otherwise
 * it is counted live now and the caller must write the id field.
 * NULL on failure (*err: TG_ENOMEM, TG_EINVAL for id 0, TG_ECORRUPT for an
 * id the store could not have issued, see tg__arena_may_put()).
 */
void *tg__arena_put(tg__arena *a, uint32_t id, int *was_live, int *err);

#endif /* TG_TOKEN_ARENA_H */
