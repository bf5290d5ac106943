/*
 * Platform helpers shared by every module: the monotonic clock, the CPU's
 * spin-wait hint and branch hints. Header-only so the hot paths inline them.
 * Linux only (the project builds with _GNU_SOURCE; see docs/design.md).
 */
#ifndef TG_COMMON_PLATFORM_H
#define TG_COMMON_PLATFORM_H

#include <stdint.h>
#include <time.h>

#define TG_LIKELY(x) __builtin_expect(!!(x), 1)
#define TG_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* CLOCK_MONOTONIC in nanoseconds: a vDSO call, about 20 ns here. */
static inline uint64_t tg__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
}

/* Tell the core we are spinning (x86 PAUSE, arm64 YIELD), so a sibling
   hyperthread gets the pipeline and the spin costs less power. */
static inline void tg__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield" ::: "memory");
#else
  __asm__ volatile("" ::: "memory");
#endif
}

/*
 * A field written by one thread at a time (under a lock) and read by
 * threads that do not take it (store.c, READS): the writer publishes each
 * new value with a relaxed atomic store and readers load it relaxed, so a
 * reader sees some value the field really had, never a torn one, and the
 * access is not a data race in the C11 model (ThreadSanitizer checks it).
 * The writer's own reads stay plain: no other thread writes the field.
 * Nothing is ordered by these; where a reader needs ordering it says so.
 */
#define TG__LOAD_RELAXED(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define TG__STORE_RELAXED(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

#endif /* TG_COMMON_PLATFORM_H */
