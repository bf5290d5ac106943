/* The arena of 64-byte slots; the why is in arena.h. */
#include "token/arena.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tokengraph/errors.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

/*
 * Map `bytes` (a multiple of 2 MiB) aligned to 2 MiB so the kernel can back
 * it with huge pages, then fault it in now: a chunk is taken into use only
 * when the previous one is full, so paying the faults here keeps them off
 * the per-token path (a first touch costs about 10 us per 4 KiB page).
 */
static void *default_map(size_t bytes) {
  size_t span = bytes + TG__CHUNK_BYTES;
  unsigned char *raw = mmap(NULL, span, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return NULL;
  uintptr_t addr = (uintptr_t)raw;
  uintptr_t aligned = (addr + TG__CHUNK_BYTES - 1) & ~(uintptr_t)(TG__CHUNK_BYTES - 1);
  size_t head = aligned - addr;
  size_t tail = span - head - bytes;
  if (head) munmap(raw, head);
  if (tail) munmap((unsigned char *)aligned + bytes, tail);
  void *p = (void *)aligned;
#ifdef MADV_HUGEPAGE
  (void)madvise(p, bytes, MADV_HUGEPAGE);
#endif
  if (madvise(p, bytes, MADV_POPULATE_WRITE) != 0) {
    /* Older kernels: touch one byte per page ourselves. */
    long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0) pg = 4096;
    for (size_t off = 0; off < bytes; off += (size_t)pg)
      ((volatile unsigned char *)p)[off] = 0;
  }
  return p;
}

static void default_unmap(void *p, size_t bytes) { munmap(p, bytes); }

static long map_budget = -1;

void tg__arena_set_map_budget(long n) { map_budget = n; }

static void *map_chunk(size_t bytes) {
  if (map_budget == 0) return NULL;
  if (map_budget > 0) map_budget--;
  return default_map(bytes);
}

int tg__arena_init(tg__arena *a, uint32_t id_off) {
  assert(id_off + 4 <= TG__SLOT_BYTES && id_off != TG__FREE_NEXT_OFF);
  memset(a, 0, sizeof *a);
  a->id_off = id_off;
  /* 1 MiB of pointers, but calloc takes it from untouched zero pages, so
     only the entries in use ever become resident. */
  a->chunks = calloc(TG__MAX_CHUNKS, sizeof *a->chunks);
  return a->chunks ? 0 : TG_ENOMEM;
}

void tg__arena_free(tg__arena *a) {
  if (!a->chunks) return;
  for (uint32_t c = 0; c < a->nchunks; c++)
    default_unmap(a->chunks[c], TG__CHUNK_BYTES);
  free(a->chunks);
  memset(a, 0, sizeof *a);
}

int tg__arena_grow(tg__arena *a) {
  if (a->nchunks >= TG__MAX_CHUNKS) return TG_EQUOTA;
  unsigned char *p = map_chunk(TG__CHUNK_BYTES);
  if (!p) return TG_ENOMEM;
  /* Plain: readers reach this entry only through a `next` published past
     it later (release, tg__arena_alloc). */
  a->chunks[a->nchunks] = p;
  TG__STORE_RELAXED(a->nchunks, a->nchunks + 1u);
  uint64_t lim = (uint64_t)a->nchunks * TG__CHUNK_SLOTS;
  a->limit = lim > TG__MAX_SLOTS ? TG__MAX_SLOTS : (uint32_t)lim;
  return 0;
}

void *tg__arena_alloc_slow(tg__arena *a, uint32_t *id, int *err) {
  assert(!a->free_head && a->next == a->limit);
  int rc = tg__arena_grow(a);
  if (rc) {
    *err = rc;
    return NULL;
  }
  return tg__arena_alloc(a, id, err);
}

void tg__arena_begin_load(tg__arena *a) {
  a->loading = 1;
  a->free_head = 0;
}

void tg__arena_rebuild_free(tg__arena *a) {
  a->loading = 0;
  a->free_head = 0;
  for (uint32_t i = a->next; i-- > 0;) {
    void *p = tg__arena_slot(a, i);
    if (tg__slot_u32(p, a->id_off) != i + 1u) {
      tg__slot_set_u32(p, a->id_off, 0);
      tg__slot_set_u32(p, TG__FREE_NEXT_OFF, a->free_head);
      a->free_head = i + 1u;
    }
  }
}

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
  uint32_t i = id - 1u;
  while (i >= a->limit) {
    int rc = tg__arena_grow(a);
    if (rc) {
      *err = rc;
      return NULL;
    }
  }
  /* Slots skipped over stay free (id field 0) until a put or the rebuild. */
  for (; a->next <= i; a->next++)
    tg__slot_set_u32(tg__arena_slot(a, a->next), a->id_off, 0);
  void *p = tg__arena_slot(a, i);
  *was_live = tg__slot_u32(p, a->id_off) == id;
  if (!*was_live) TG__STORE_RELAXED(a->live, a->live + 1u);
  return p;
}
