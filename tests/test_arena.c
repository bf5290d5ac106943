/* The arena: slot reuse, growth across chunks, id stability, OOM seam. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <cmocka.h>

#include "token/arena.h"
#include "tokengraph/errors.h"
#include "tokengraph/tokengraph.h"
#include "util.h"

/* The arena is tested with a token's layout: the id where tg_token keeps
   it, before the free-list link that a released slot carries. */
#define ID_OFF 48
_Static_assert(ID_OFF == offsetof(tg_token, id), "the id offset is tg_token's");
_Static_assert(ID_OFF + sizeof(uint32_t) <= TG__FREE_NEXT_OFF, "the id is not the free link");
_Static_assert(TG__CHUNK_BYTES == 2u << 20, "a chunk is one 2 MiB huge page");
/* The growth test fills two chunks and five slots of a third. */
_Static_assert(2ull * TG__CHUNK_SLOTS + 5 <= TG__MAX_SLOTS, "three chunks of ids exist");

static void *take(tg__arena *a, uint32_t *id) {
  int err = 0;
  void *p = tg__arena_alloc(a, id, &err);
  assert_non_null(p);
  tg__slot_set_u32(p, ID_OFF, *id);
  return p;
}

static void test_arena_ids_start_at_one_and_are_dense(void **state) {
  (void)state;
  tg__arena a;
  assert_int_equal(tg__arena_init(&a, ID_OFF), 0);
  for (uint32_t i = 1; i <= 100; i++) {
    uint32_t id;
    take(&a, &id);
    assert_int_equal(id, i);
  }
  assert_int_equal(a.live, 100);
  assert_null(tg__arena_get(&a, 0));
  assert_null(tg__arena_get(&a, 101));
  assert_non_null(tg__arena_get(&a, 100));
  tg__arena_free(&a);
}

static void test_arena_deleted_slots_are_reused_last_freed_first_under_new_ids(void **state) {
  (void)state;
  tg__arena a;
  assert_int_equal(tg__arena_init(&a, ID_OFF), 0);
  uint32_t id;
  void *p[10];
  for (int i = 0; i < 10; i++) p[i] = take(&a, &id);
  tg__arena_release(&a, p[3], 4);
  tg__arena_release(&a, p[7], 8);
  assert_null(tg__arena_get(&a, 4));
  assert_null(tg__arena_get(&a, 8));
  assert_int_equal(a.live, 8);
  void *q = take(&a, &id);
  assert_int_equal(id, 11); /* never a dead id */
  assert_ptr_equal(q, p[7]);
  q = take(&a, &id);
  assert_int_equal(id, 12);
  assert_ptr_equal(q, p[3]);
  q = take(&a, &id);
  assert_int_equal(id, 13); /* free list empty: bump again */
  assert_int_equal(a.next, 11);
  assert_null(tg__arena_get(&a, 4));
  assert_null(tg__arena_get(&a, 8));
  assert_int_equal(a.nchunks, 1);
  tg__arena_free(&a);
}

static void test_arena_ids_wrap_past_2_32_skipping_live_ones(void **state) {
  (void)state;
  tg__arena a;
  assert_int_equal(tg__arena_init(&a, ID_OFF), 0);
  uint32_t id;
  take(&a, &id); /* 1 */
  take(&a, &id); /* 2 */
  void *p3 = take(&a, &id); /* 3 */
  tg__arena_release(&a, p3, 3);
  /* As if 2^32 - 4 more ids had been handed out, all of them now dead. */
  tg__arena_set_cursor(&a, 0xFFFFFFFEu, 0);
  void *top = take(&a, &id);
  assert_int_equal(id, 0xFFFFFFFFu);
  assert_ptr_equal(tg__arena_get(&a, 0xFFFFFFFFu), top);
  assert_null(tg__arena_get(&a, 0)); /* id 0 never names anything */
  /* The wrap: 1 and 2 are live and skipped, 3 is dead and handed out. */
  take(&a, &id);
  assert_int_equal(id, 3);
  assert_int_equal(a.wrapped, 1);
  take(&a, &id);
  assert_int_equal(id, 4);
  assert_int_equal(a.live, 5);
  tg__arena_free(&a);
}

static void test_arena_map_chunk_of_dead_ids_is_given_back(void **state) {
  (void)state;
  tg__arena a;
  assert_int_equal(tg__arena_init(&a, ID_OFF), 0);
  uint32_t id;
  /* Create and delete one at a time across two map chunks: the slot is
     reused every time, and the first chunk's ids are all dead. */
  for (uint32_t i = 0; i < TG__CHUNK_SLOTS + 10; i++) {
    void *p = take(&a, &id);
    tg__arena_release(&a, p, id);
  }
  assert_int_equal(a.live, 0);
  assert_int_equal(a.next, 1);
  assert_int_equal(a.map_live[0], 0);
  assert_non_null(a.map[0]); /* still mapped: lock-free readers may look */
  /* ... but its pages went back to the kernel (and chunk 1's did not). */
  unsigned char vec[TG__MAP_CHUNK_BYTES / 4096];
  assert_int_equal(mincore(a.map[0], TG__MAP_CHUNK_BYTES, vec), 0);
  for (size_t i = 0; i < sizeof vec; i++) assert_int_equal(vec[i] & 1, 0);
  assert_int_equal(mincore(a.map[1], TG__MAP_CHUNK_BYTES, vec), 0);
  assert_int_equal(vec[0] & 1, 1);
  assert_null(tg__arena_get(&a, 1));
  assert_null(tg__arena_get(&a, TG__CHUNK_SLOTS));
  assert_int_equal(a.cursor, TG__CHUNK_SLOTS + 10);
  tg__arena_free(&a);
}

/* The VmFlags line of the mapping that holds p, from /proc/self/smaps. */
static int vmflags_of(const void *p, char *flags, size_t len) {
  FILE *f = fopen("/proc/self/smaps", "r");
  if (!f) return -1;
  char line[512];
  int in = 0, found = -1;
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    char perms[8];
    if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3) {
      in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
      continue;
    }
    if (in && strncmp(line, "VmFlags:", 8) == 0) {
      size_t n = strlen(line + 8);
      if (n >= len) n = len - 1;
      memcpy(flags, line + 8, n);
      flags[n] = 0;
      found = 0;
      break;
    }
  }
  fclose(f);
  return found;
}

static void test_arena_map_chunks_share_one_2mib_huge_page_region(void **state) {
  (void)state;
  tg__arena a;
  assert_int_equal(tg__arena_init(&a, ID_OFF), 0);
  uint32_t id;
  for (uint32_t i = 0; i < TG__CHUNK_SLOTS + 1; i++) take(&a, &id);
  assert_non_null(a.map[0]);
  assert_non_null(a.map[1]);
  /* One region, 2 MiB aligned, the chunks side by side in it. */
  assert_int_equal((uintptr_t)a.map[0] % TG__MAP_REGION_BYTES, 0);
  assert_ptr_equal((unsigned char *)a.map[1], (unsigned char *)a.map[0] + TG__MAP_CHUNK_BYTES);
  /* Advised for huge pages ("hg"), as the slot chunks are. */
  char flags[256];
  assert_int_equal(vmflags_of(a.map[0], flags, sizeof flags), 0);
  assert_non_null(strstr(flags, " hg"));
  tg__arena_free(&a);
}

static void test_arena_read_of_an_id_whose_slot_is_elsewhere_returns_that_slot(void **state) {
  (void)state;
  tg__arena a;
  assert_int_equal(tg__arena_init(&a, ID_OFF), 0);
  uint32_t id;
  unsigned char out[TG__SLOT_BYTES];
  /* 1, 2, 3 in slots 0, 1, 2; 1 deleted, so 4 reuses slot 0, while the
     read's first guess for 4 is slot 3 (handed out to nobody). */
  void *p1 = take(&a, &id);
  take(&a, &id);
  take(&a, &id);
  tg__arena_release(&a, p1, 1);
  void *p4 = take(&a, &id);
  assert_int_equal(id, 4);
  assert_ptr_equal(p4, p1);
  assert_int_equal(tg__arena_read(&a, 4, out), 1);
  assert_int_equal(tg__slot_u32(out, ID_OFF), 4);
  assert_int_equal(tg__arena_read(&a, 1, out), 0);
  assert_int_equal(tg__arena_read(&a, 3, out), 1);
  assert_int_equal(tg__slot_u32(out, ID_OFF), 3);
  tg__arena_free(&a);
}

static void test_arena_grows_across_chunks_with_stable_addresses(void **state) {
  (void)state;
  tg__arena a;
  assert_int_equal(tg__arena_init(&a, ID_OFF), 0);
  uint32_t n = 2 * TG__CHUNK_SLOTS + 5, id;
  void *first = take(&a, &id);
  memset(first, 0xAB, ID_OFF); /* payload bytes before the id field */
  for (uint32_t i = 1; i < n; i++) {
    unsigned char *p = take(&a, &id);
    p[0] = (unsigned char)id;
  }
  assert_int_equal(a.nchunks, 3);
  assert_int_equal(tg__arena_bytes(&a), 3 * TG__CHUNK_BYTES);
  /* Growth never moves a slot: the first one is where it was. */
  assert_ptr_equal(tg__arena_get(&a, 1), first);
  assert_int_equal(((unsigned char *)first)[0], 0xAB);
  for (uint32_t i = 2; i <= n; i++) {
    unsigned char *p = tg__arena_get(&a, i);
    assert_non_null(p);
    assert_int_equal(p[0], (unsigned char)i);
  }
  /* Chunks are 2 MiB aligned so they can be huge pages. */
  for (uint32_t c = 0; c < a.nchunks; c++)
    assert_int_equal((uintptr_t)a.chunks[c] % TG__CHUNK_BYTES, 0);
  tg__arena_free(&a);
}

static void test_arena_out_of_memory_is_reported_and_changes_nothing(void **state) {
  (void)state;
  tg__arena_set_map_budget(1); /* one chunk, then mmap "fails" */
  tg__arena a;
  assert_int_equal(tg__arena_init(&a, ID_OFF), 0);
  uint32_t id;
  for (uint32_t i = 0; i < TG__CHUNK_SLOTS; i++) take(&a, &id);
  int err = 0;
  assert_null(tg__arena_alloc(&a, &id, &err));
  assert_int_equal(err, TG_ENOMEM);
  assert_int_equal(a.live, TG__CHUNK_SLOTS);
  assert_int_equal(a.next, TG__CHUNK_SLOTS);
  /* A freed slot can still be handed out without new slot memory, under
     the next id. */
  void *five = tg__arena_get(&a, 5);
  tg__arena_release(&a, five, 5);
  assert_ptr_equal(tg__arena_alloc(&a, &id, &err), five);
  assert_int_equal(id, TG__CHUNK_SLOTS + 1);
  tg__arena_free(&a);
  tg__arena_set_map_budget(-1);
}

/* A thread asleep on a spare's futex word (as the store's prefaulter
   sleeps) until the word moves and a wake-up arrives. */
typedef struct spare_waiter {
  int *word;
  atomic_int tid, woken;
} spare_waiter;

static void *spare_waiter_main(void *arg) {
  spare_waiter *w = arg;
  atomic_store(&w->tid, (int)gettid());
  while (__atomic_load_n(w->word, __ATOMIC_ACQUIRE) == 0)
    syscall(SYS_futex, w->word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
  atomic_store(&w->woken, 1);
  return NULL;
}


/* Start a waiter and return once it sleeps in the kernel on *word. */
static void spare_waiter_start(spare_waiter *w, int *word, pthread_t *th) {
  memset(w, 0, sizeof *w);
  w->word = word;
  assert_int_equal(pthread_create(th, NULL, spare_waiter_main, w), 0);
  uint64_t deadline = tgp_now_ns() + TGT_PATIENCE_NS;
  while (!atomic_load(&w->tid) || tgt_thread_state(atomic_load(&w->tid)) != 'S')
    assert_true(tgp_now_ns() < deadline);
}

static void spare_waiter_join(spare_waiter *w, pthread_t th) {
  uint64_t deadline = tgp_now_ns() + TGT_PATIENCE_NS;
  while (!atomic_load(&w->woken)) assert_true(tgp_now_ns() < deadline);
  pthread_join(th, NULL);
}

static void test_arena_spare_take_wakes_its_maker_at_once_or_when_a_deferral_ends(
    void **state) {
  (void)state;
  /* Static: a failed assertion leaves the waiter running on them. */
  static unsigned char a_region, b_region;
  static int word;
  static spare_waiter w;
  pthread_t th;
  word = 0;
  /* Not deferred: the take bumps the word and wakes the sleeper. */
  spare_waiter_start(&w, &word, &th);
  unsigned char *spare = &a_region;
  assert_ptr_equal(tg__spare_take(&spare, &word), &a_region);
  assert_null(spare);
  spare_waiter_join(&w, th);
  assert_int_equal(word, 1);
  /* Deferred: the word moves at the take, but the sleeper stays asleep
     (a wake-up would have made it runnable before the take returned)
     until the deferral ends. */
  word = 0;
  spare_waiter_start(&w, &word, &th);
  spare = &b_region;
  tg__spare_defer_begin();
  assert_ptr_equal(tg__spare_take(&spare, &word), &b_region);
  assert_int_equal(__atomic_load_n(&word, __ATOMIC_RELAXED), 1);
  assert_int_equal(tgt_thread_state(atomic_load(&w.tid)), 'S');
  assert_int_equal(atomic_load(&w.woken), 0);
  tg__spare_defer_end();
  spare_waiter_join(&w, th);
  /* A deferral with no take wakes nobody and leaves nothing pending. */
  tg__spare_defer_begin();
  tg__spare_defer_end();
}

/* Blocks (arena.c, BLOCKS): carved from regions reserved many at once,
   so taking 300 of them reserves at most three regions (one mmap each)
   rather than 300 mappings; each is 2 MiB aligned, reads as zeros and is
   its own memory. Another size is mapped on its own. */
static void test_blocks_come_from_regions_reserved_many_at_once(void **state) {
  (void)state;
  enum { N = 300 };
  const size_t b = (size_t)2 << 20;
  unsigned char **p = calloc(N, sizeof *p);
  assert_non_null(p);
  unsigned long r0 = tg__arena_regions_reserved();
  for (int i = 0; i < N; i++) {
    p[i] = tg__map_fresh(b);
    assert_non_null(p[i]);
    assert_int_equal((uintptr_t)p[i] % b, 0);
    assert_int_equal(p[i][0] | p[i][b / 2] | p[i][b - 1], 0);
    p[i][0] = (unsigned char)(i + 1);
    p[i][b - 1] = (unsigned char)(i + 1);
  }
  unsigned long used = tg__arena_regions_reserved() - r0;
  assert_true(used >= 2 && used <= 3);
  for (int i = 0; i < N; i++) {
    assert_int_equal(p[i][0], (unsigned char)(i + 1));
    assert_int_equal(p[i][b - 1], (unsigned char)(i + 1));
  }
  for (int i = 0; i < N; i++) tg__unmap_fresh(p[i], b);
  unsigned char *big = tg__map_fresh(2 * b);
  assert_non_null(big);
  assert_int_equal((uintptr_t)big % b, 0);
  assert_int_equal(big[0] | big[2 * b - 1], 0);
  big[2 * b - 1] = 1;
  tg__unmap_fresh(big, 2 * b);
  assert_int_equal(tg__arena_regions_reserved() - r0, used);
  free(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_arena_ids_start_at_one_and_are_dense),
    cmocka_unit_test(test_arena_deleted_slots_are_reused_last_freed_first_under_new_ids),
    cmocka_unit_test(test_arena_ids_wrap_past_2_32_skipping_live_ones),
    cmocka_unit_test(test_arena_map_chunk_of_dead_ids_is_given_back),
    cmocka_unit_test(test_arena_map_chunks_share_one_2mib_huge_page_region),
    cmocka_unit_test(test_arena_read_of_an_id_whose_slot_is_elsewhere_returns_that_slot),
    cmocka_unit_test(test_arena_grows_across_chunks_with_stable_addresses),
    cmocka_unit_test(test_arena_out_of_memory_is_reported_and_changes_nothing),
    cmocka_unit_test(test_arena_spare_take_wakes_its_maker_at_once_or_when_a_deferral_ends),
    cmocka_unit_test(test_blocks_come_from_regions_reserved_many_at_once),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
