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
 */
#ifndef TG_TOKEN_ARENA_H
#define TG_TOKEN_ARENA_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define TG__SLOT_BYTES 64u
#define TG__CHUNK_SHIFT 15u                         /* 32768 slots a chunk */
#define TG__CHUNK_SLOTS (1u << TG__CHUNK_SHIFT)
#define TG__CHUNK_MASK (TG__CHUNK_SLOTS - 1u)
#define TG__CHUNK_BYTES ((size_t)TG__CHUNK_SLOTS * TG__SLOT_BYTES) /* 2 MiB */
#define TG__MAX_CHUNKS (1u << (32u - TG__CHUNK_SHIFT)) /* covers 2^32 ids */
#define TG__MAX_SLOTS (0xFFFFFFFFu)                 /* ids 1 .. 2^32 - 1 */
#define TG__FREE_NEXT_OFF 60u                       /* free-list link offset */

typedef struct tg__arena {
  unsigned char **chunks; /* TG__MAX_CHUNKS entries; NULL = not mapped */
  uint32_t nchunks;       /* chunks mapped, always a prefix of `chunks` */
  uint32_t next;          /* slots [0, next) were handed out at least once */
  uint32_t limit;         /* nchunks * TG__CHUNK_SLOTS, capped at MAX_SLOTS */
  uint32_t free_head;     /* index + 1 of the first free slot, 0 = none */
  uint32_t id_off;        /* offset of the object's u32 id within a slot */
  int loading;            /* 1 while objects are put by id (checkpoint load,
                             replay): frees keep no list, see
                             tg__arena_rebuild_free() */
  uint32_t put_max;       /* loading: the highest id the store had issued
                             before what is being loaded (the checkpoint's
                             high-water mark); see tg__arena_may_put() */
  uint64_t live;          /* slots in use */
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
  return (uint64_t)a->nchunks * TG__CHUNK_BYTES;
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

static inline void tg__slot_set_u32(void *slot, uint32_t off, uint32_t v) {
  memcpy((unsigned char *)slot + off, &v, sizeof v);
}

/* The live object with this id, or NULL. */
static inline void *tg__arena_get(const tg__arena *a, uint32_t id) {
  uint32_t i = id - 1u; /* id 0 wraps to 0xFFFFFFFF, never < next */
  if (i >= a->next) return NULL;
  void *p = tg__arena_slot(a, i);
  return tg__slot_u32(p, a->id_off) == id ? p : NULL;
}

/*
 * Take a slot. Returns its address and stores its id in *id, or NULL when
 * a chunk could not be mapped (*err says why). The caller must write the
 * id into the slot's id field before the arena is used again.
 */
void *tg__arena_alloc_slow(tg__arena *a, uint32_t *id, int *err);

static inline void *tg__arena_alloc(tg__arena *a, uint32_t *id, int *err) {
  uint32_t i;
  if (a->free_head) {
    i = a->free_head - 1u;
    void *p = tg__arena_slot(a, i);
    a->free_head = tg__slot_u32(p, TG__FREE_NEXT_OFF);
    a->live++;
    *id = i + 1u;
    return p;
  }
  if (a->next < a->limit) {
    i = a->next++;
    a->live++;
    *id = i + 1u;
    return tg__arena_slot(a, i);
  }
  return tg__arena_alloc_slow(a, id, err);
}

/* Return the live slot `p` (id `id`) to the free list. */
static inline void tg__arena_release(tg__arena *a, void *p, uint32_t id) {
  tg__slot_set_u32(p, a->id_off, 0);
  if (__builtin_expect(!a->loading, 1)) {
    tg__slot_set_u32(p, TG__FREE_NEXT_OFF, a->free_head);
    a->free_head = id;
  }
  a->live--;
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
  tg__slot_set_u32(p, a->id_off, 0);
  a->live--;
  return 0;
}

/* The reserved slot of `id`; the caller writes the object there (its id
   field last of all is what makes it live) and counts it live. */
static inline void *tg__arena_fill(tg__arena *a, uint32_t id) {
  a->live++;
  return tg__arena_slot(a, id - 1u);
}

/* Give a reserved id back (its batch was aborted). */
static inline void tg__arena_unreserve(tg__arena *a, uint32_t id) {
  a->live++;
  tg__arena_release(a, tg__arena_slot(a, id - 1u), id);
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
