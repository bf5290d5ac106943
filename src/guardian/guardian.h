/*
 * The guardian: quota limits, counters and the cleanup policy.
 *
 * It knows nothing of tokens (docs/design.md: guardian depends on nothing else
 * in the project, and does no I/O). The store asks it before each create or connect, with
 * the usage figures the arena keeps, and, under memory pressure, uses its
 * victim selector to pick which tokens to evict.
 *
 * Memory pressure: `trigger` is the usage above which the next pressure
 * event fires. It starts at the soft limit (max_memory * threshold). Once
 * pressure has been handled (tokens evicted, or the callback told), it is
 * re-armed at max(soft limit, usage + margin), so a store that stays above
 * the soft limit is not rescanned on every call; it drops back to the soft
 * limit once usage falls below soft limit - margin. The fast path compares
 * usage with one number, `slow_at` = min(trigger, max_memory).
 */
#ifndef TG_GUARDIAN_H
#define TG_GUARDIAN_H

#include <stddef.h>
#include <stdint.h>

#include "tokengraph/tokengraph.h"

typedef struct tg__guardian {
  uint64_t max_tokens;
  uint64_t max_connections;
  uint64_t max_memory;      /* hard limit, bytes */
  uint64_t soft_limit;      /* max_memory * threshold */
  uint64_t margin;          /* max_memory * cleanup_margin */
  uint64_t trigger;         /* next pressure event above this usage */
  uint64_t slow_at;         /* min(trigger, max_memory): fast-path bound */
  uint32_t max_degree;
  int cleanup;              /* evict (1) or call on_pressure (0) */
  void (*on_pressure)(void *arg, const tg_pressure_event *ev);
  void *on_pressure_arg;
  void (*on_evict)(void *arg, const uint32_t *ids, size_t n);
  void *on_evict_arg;
  uint64_t checks;          /* admissions asked that did not end in a
                               single create or connect: the store counts
                               those (tokens_created, connections_created)
                               and adds them, so a create bumps one
                               counter, not two */
  uint64_t rejections;      /* answered TG_EQUOTA */
  uint64_t evictions;       /* tokens evicted */
  uint64_t pressure_events; /* soft-limit crossings handled */
} tg__guardian;

/* Check a configuration: 0 or TG_EINVAL, with a reason in *why. */
int tg__guardian_validate(const tg_guardian_config *cfg, const char **why);

/* Initialise from a validated configuration. */
void tg__guardian_init(tg__guardian *gd, const tg_guardian_config *cfg);

/* Target usage eviction brings memory down to. */
static inline uint64_t tg__guardian_cleanup_target(const tg__guardian *gd) {
  return gd->soft_limit > gd->margin ? gd->soft_limit - gd->margin : 0;
}

/* Re-arm the pressure trigger after handling pressure at usage `mem`. */
static inline void tg__guardian_rearm(tg__guardian *gd, uint64_t mem) {
  uint64_t t = mem + gd->margin;
  gd->trigger = t > gd->soft_limit ? t : gd->soft_limit;
  gd->slow_at = gd->trigger < gd->max_memory ? gd->trigger : gd->max_memory;
}

/* Called after usage went down: drop the trigger back to the soft limit
   once usage is below soft limit - margin. */
static inline void tg__guardian_released(tg__guardian *gd, uint64_t mem) {
  if (gd->trigger > gd->soft_limit && mem < tg__guardian_cleanup_target(gd)) {
    gd->trigger = gd->soft_limit;
    gd->slow_at = gd->soft_limit;
  }
}

/* ---- victim selection: the k lowest-weight candidates ---------------- */

typedef struct tg__victim {
  float weight; /* NaN is treated as -infinity: evicted first */
  uint32_t id;
} tg__victim;

typedef struct tg__victims {
  tg__victim *v; /* a max-heap of the k best (lowest) candidates so far */
  size_t n;
  size_t cap;
} tg__victims;

/* 0 or TG_ENOMEM. cap may be 0 (then nothing is kept). */
int tg__victims_init(tg__victims *vs, size_t cap);
void tg__victims_free(tg__victims *vs);

/* Offer a candidate; O(log k). */
void tg__victims_offer(tg__victims *vs, float weight, uint32_t id);

/* Sort the kept candidates: lowest weight first, then lowest id. */
void tg__victims_sort(tg__victims *vs);

#endif /* TG_GUARDIAN_H */
