/* Quotas and the cleanup policy; see guardian.h. */
#include "guardian/guardian.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tokengraph/errors.h"

int tg__guardian_validate(const tg_guardian_config *cfg, const char **why) {
  const char *w = NULL;
  if (cfg->max_tokens > 0xFFFFFFFFull)
    w = "max_tokens exceeds 4294967295 (ids are 32-bit)";
  else if (cfg->max_connections > 0xFFFFFFFFull)
    w = "max_connections exceeds 4294967295 (ids are 32-bit)";
  else if (!(cfg->memory_threshold > 0.0 && cfg->memory_threshold <= 1.0))
    w = "memory_threshold must be in (0, 1]";
  else if (!(cfg->cleanup_margin >= 0.0 &&
             cfg->cleanup_margin < cfg->memory_threshold))
    w = "cleanup_margin must be in [0, memory_threshold)";
  else if (cfg->cleanup != 0 && cfg->cleanup != 1)
    w = "cleanup must be 0 or 1";
  else if (cfg->max_memory_bytes > (1ull << 62))
    w = "max_memory_bytes is out of range";
  if (why) *why = w;
  return w ? TG_EINVAL : 0;
}

void tg__guardian_init(tg__guardian *gd, const tg_guardian_config *cfg) {
  memset(gd, 0, sizeof *gd);
  gd->max_tokens = cfg->max_tokens;
  gd->max_connections = cfg->max_connections;
  gd->max_memory = cfg->max_memory_bytes;
  gd->soft_limit = (uint64_t)((double)cfg->max_memory_bytes * cfg->memory_threshold);
  if (gd->soft_limit > gd->max_memory) gd->soft_limit = gd->max_memory;
  gd->margin = (uint64_t)((double)cfg->max_memory_bytes * cfg->cleanup_margin);
  gd->trigger = gd->soft_limit;
  gd->slow_at = gd->soft_limit; /* soft_limit <= max_memory */
  gd->max_degree = cfg->max_degree;
  gd->cleanup = cfg->cleanup;
  gd->on_pressure = cfg->on_pressure;
  gd->on_pressure_arg = cfg->on_pressure_arg;
  gd->on_evict = cfg->on_evict;
  gd->on_evict_arg = cfg->on_evict_arg;
}

/* ---- victim selection ------------------------------------------------- */

/* Total order: weight (NaN lowest), then id. */
static int victim_less(const tg__victim *a, const tg__victim *b) {
  float wa = isnan(a->weight) ? -INFINITY : a->weight;
  float wb = isnan(b->weight) ? -INFINITY : b->weight;
  if (wa != wb) return wa < wb;
  return a->id < b->id;
}

int tg__victims_init(tg__victims *vs, size_t cap) {
  vs->n = 0;
  vs->cap = cap;
  vs->v = NULL;
  if (cap == 0) return 0;
  if (cap > SIZE_MAX / sizeof *vs->v) return TG_ENOMEM;
  vs->v = malloc(cap * sizeof *vs->v);
  return vs->v ? 0 : TG_ENOMEM;
}

void tg__victims_free(tg__victims *vs) {
  free(vs->v);
  vs->v = NULL;
  vs->n = vs->cap = 0;
}

static void sift_down(tg__victim *h, size_t n, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < n && victim_less(&h[m], &h[l])) m = l;
    if (r < n && victim_less(&h[m], &h[r])) m = r;
    if (m == i) return;
    tg__victim t = h[i];
    h[i] = h[m];
    h[m] = t;
    i = m;
  }
}

void tg__victims_offer(tg__victims *vs, float weight, uint32_t id) {
  tg__victim c = {weight, id};
  tg__victim *h = vs->v;
  if (vs->n < vs->cap) {
    /* Sift up into the max-heap. */
    size_t i = vs->n++;
    while (i > 0) {
      size_t p = (i - 1) / 2;
      if (!victim_less(&h[p], &c)) break;
      h[i] = h[p];
      i = p;
    }
    h[i] = c;
  } else if (vs->cap && victim_less(&c, &h[0])) {
    h[0] = c; /* replaces the worst kept candidate */
    sift_down(h, vs->n, 0);
  }
}

void tg__victims_sort(tg__victims *vs) {
  /* Heap sort in place: repeatedly move the max to the end. */
  for (size_t end = vs->n; end > 1; end--) {
    tg__victim t = vs->v[0];
    vs->v[0] = vs->v[end - 1];
    vs->v[end - 1] = t;
    sift_down(vs->v, end - 1, 0);
  }
}
