/* Tokens, connections and adjacency lists; see graph.h. */
#include "token/graph.h"

#include <assert.h>
#include <stdlib.h>

#include "tokengraph/errors.h"

int tg__graph_init(tg__graph *g) {
  memset(g, 0, sizeof *g);
  int rc = tg__arena_init(&g->tokens, offsetof(tg_token, id));
  if (rc) goto fail;
  rc = tg__arena_init(&g->conns, offsetof(tg_connection, id));
  if (rc) goto fail;
  g->adj = calloc(TG__MAX_CHUNKS, sizeof *g->adj);
  g->cdirty = calloc(TG__MAX_CHUNKS, sizeof *g->cdirty);
  g->tchunk_dirty = calloc(TG__MAX_CHUNKS, 1);
  if (!g->adj || !g->cdirty || !g->tchunk_dirty) {
    rc = TG_ENOMEM;
    goto fail;
  }
  return 0;
fail:
  tg__graph_free(g);
  return rc;
}

void tg__graph_free(tg__graph *g) {
  if (g->adj) {
    for (uint32_t c = 0; c < TG__MAX_CHUNKS && g->nadj; c++) {
      if (g->adj[c]) {
        free(g->adj[c]);
        g->nadj--;
      }
    }
    free(g->adj);
  }
  if (g->cdirty) {
    /* Bitmaps are a prefix [0, ncdirty) (tg__graph_reserve_conn_dirty):
       not 131,072 calls of free(NULL) per close. */
    for (uint32_t c = 0; c < g->ncdirty; c++) free(g->cdirty[c]);
    free(g->cdirty);
  }
  free(g->tchunk_dirty);
  free(g->tdel);
  tg__arena_free(&g->tokens);
  tg__arena_free(&g->conns);
  memset(g, 0, sizeof *g);
}

static int reserve_one(tg__graph *g, uint32_t token_id) {
  uint32_t c = tg__graph_token_chunk(g, token_id);
  if (g->adj[c]) return 0;
  g->adj[c] = calloc(TG__CHUNK_SLOTS, sizeof(tg__adj));
  if (!g->adj[c]) return TG_ENOMEM;
  g->nadj++;
  return 0;
}

int tg__graph_reserve_adj(tg__graph *g, uint32_t from, uint32_t to) {
  int rc = reserve_one(g, from);
  return rc ? rc : reserve_one(g, to);
}

/* Bitmaps for id chunks [0, chunk]. */
static int reserve_conn_dirty_upto(tg__graph *g, uint32_t chunk) {
  /* Bitmaps are kept until close, so chunks [0, ncdirty) all have one. */
  for (; g->ncdirty <= chunk; g->ncdirty++) {
    g->cdirty[g->ncdirty] = calloc(TG__CDIRTY_WORDS, sizeof(uint64_t));
    if (!g->cdirty[g->ncdirty]) return TG_ENOMEM;
  }
  return 0;
}

int tg__graph_reserve_conn_dirty(tg__graph *g) {
  /* The next id is cursor + 1 before a wrap; after one, every id it can
     be lies at or below the highest chunk ever covered. */
  return reserve_conn_dirty_upto(g, TG__ID_CHUNK(g->conns.cursor + 1u == 0
                                                     ? 1u : g->conns.cursor + 1u));
}

int tg__graph_reserve_deletes(tg__graph *g, uint64_t n) {
  if (!g->track_dirty || n <= g->captdel - g->ntdel) return 0;
  size_t nc = g->captdel ? g->captdel : 1024;
  while (nc - g->ntdel < n) {
    if (nc > SIZE_MAX / 2 / sizeof *g->tdel) return TG_ENOMEM;
    nc *= 2;
  }
  uint32_t *p = realloc(g->tdel, nc * sizeof *p);
  if (!p) return TG_ENOMEM;
  g->tdel = p;
  g->captdel = nc;
  return 0;
}

/* A connection is on two lists: the outgoing list of its `from` token
   (in = 0: next_out, prev_out) and the incoming list of its `to` token
   (in = 1: next_in, prev_in). The list code below is written once for
   both; `in` is a constant at every call, so each call compiles to the
   field it names. */
static inline uint32_t *next_of(tg_connection *c, int in) {
  return in ? &c->next_in : &c->next_out;
}

static inline uint32_t *prev_of(tg_connection *c, int in) {
  return in ? &c->prev_in : &c->prev_out;
}

/* Push connection c (id) on the front of one of its lists, whose head is
   *head: O(1), newest first. A neighbour whose link changes is marked
   dirty. */
static inline void push_front(tg__graph *g, tg_connection *c, uint32_t id, int in,
                              uint32_t *head) {
  *prev_of(c, in) = 0;
  *next_of(c, in) = *head;
  if (*head) {
    *prev_of(tg__graph_conn(g, *head), in) = id;
    tg__graph_mark_conn(g, *head);
  }
  *head = id;
}

/* Take connection c off one of its lists, whose head is *head. */
static inline void unlink_from(tg__graph *g, tg_connection *c, int in, uint32_t *head) {
  uint32_t prev = *prev_of(c, in), next = *next_of(c, in);
  if (prev) {
    *next_of(tg__graph_conn(g, prev), in) = next;
    tg__graph_mark_conn(g, prev);
  } else {
    *head = next;
  }
  if (next) {
    *prev_of(tg__graph_conn(g, next), in) = prev;
    tg__graph_mark_conn(g, next);
  }
}

/* Push connection c (id) on the front of both endpoints' lists. */
static void link_new(tg__graph *g, tg_connection *c, uint32_t id) {
  tg__adj *fa = tg__graph_adj(g, c->from);
  tg__adj *ta = tg__graph_adj(g, c->to);
  push_front(g, c, id, 0, &fa->out_head);
  fa->out_deg++;
  push_front(g, c, id, 1, &ta->in_head);
  ta->in_deg++;
  tg__graph_mark_conn(g, id);
}

static void copy_conn(tg_connection *c, const tg_connection *init, uint32_t id) {
  *c = *init;
  c->id = id;
  c->reserved0 = 0;
  c->reserved1 = 0;
  c->reserved2 = 0;
}

int tg__graph_connect(tg__graph *g, const tg_connection *init, uint32_t *id) {
  assert(tg__graph_token(g, init->from) && tg__graph_token(g, init->to));
  assert(init->type < TG_CONN_TYPES);
  assert(tg__graph_adj(g, init->from) && tg__graph_adj(g, init->to));
  int err = 0;
  tg_connection *c = (tg_connection *)tg__arena_alloc(&g->conns, id, &err);
  if (!c) return err;
  copy_conn(c, init, *id);
  link_new(g, c, *id);
  return 0;
}

void tg__graph_conn_fill(tg__graph *g, const tg_connection *img) {
  assert(tg__graph_token(g, img->from) && tg__graph_token(g, img->to));
  assert(img->type < TG_CONN_TYPES);
  assert(tg__graph_adj(g, img->from) && tg__graph_adj(g, img->to));
  tg_connection *c = (tg_connection *)tg__arena_fill(&g->conns, img->id);
  copy_conn(c, img, img->id);
  link_new(g, c, img->id);
}

int tg__graph_disconnect(tg__graph *g, uint32_t id) {
  tg_connection *c = tg__graph_conn(g, id);
  if (!c) return TG_ENOTFOUND;
  tg__adj *fa = tg__graph_adj(g, c->from);
  tg__adj *ta = tg__graph_adj(g, c->to);
  unlink_from(g, c, 0, &fa->out_head);
  fa->out_deg--;
  unlink_from(g, c, 1, &ta->in_head);
  ta->in_deg--;
  tg__graph_mark_conn(g, id); /* dirty and not live: a delete */
  tg__arena_release(&g->conns, c, id);
  return 0;
}

int tg__graph_token_delete(tg__graph *g, uint32_t id, uint64_t *nconns) {
  tg_token *t = tg__graph_token(g, id);
  if (!t) return TG_ENOTFOUND;
  uint64_t n = 0;
  tg__adj *a = tg__graph_adj(g, id);
  if (a) {
    /* A self-loop is on both lists; the out pass removes it from both. */
    while (a->out_head) {
      tg__graph_disconnect(g, a->out_head);
      n++;
    }
    while (a->in_head) {
      tg__graph_disconnect(g, a->in_head);
      n++;
    }
    assert(a->out_deg == 0 && a->in_deg == 0);
  }
  t->flags = 0;
  if (g->track_dirty) {
    assert(g->ntdel < g->captdel); /* tg__graph_reserve_deletes() */
    g->tdel[g->ntdel++] = id;
  }
  tg__arena_release(&g->tokens, t, id);
  if (nconns) *nconns = n;
  return 0;
}

/* Call cb on each connection of one list, from head, until one returns
   non-zero; returns that. */
static int walk(const tg__graph *g, uint32_t head, int in, tg_edge_cb cb, void *arg) {
  for (uint32_t c = head; c;) {
    const tg_connection *conn = tg__graph_conn(g, c);
    int rc = cb(arg, conn);
    if (rc) return rc;
    c = in ? conn->next_in : conn->next_out;
  }
  return 0;
}

int tg__graph_edges(const tg__graph *g, uint32_t id, int direction,
                    tg_edge_cb cb, void *arg) {
  if (!tg__graph_token(g, id)) return TG_ENOTFOUND;
  const tg__adj *a = tg__graph_adj(g, id);
  if (!a) return 0;
  int rc = 0;
  if (direction & TG_OUT) rc = walk(g, a->out_head, 0, cb, arg);
  if (!rc && (direction & TG_IN)) rc = walk(g, a->in_head, 1, cb, arg);
  return rc;
}

int tg__graph_foreach_token(const tg__graph *g,
                            int (*fn)(void *arg, const tg_token *t), void *arg) {
  const tg__arena *a = &g->tokens;
  for (uint32_t i = 0; i < a->next; i++) {
    const tg_token *t = tg__arena_slot(a, i);
    if (!t->id) continue; /* a free slot */
    int rc = fn(arg, t);
    if (rc) return rc;
  }
  return 0;
}

/* ---- loading ------------------------------------------------------------ */

void tg__graph_begin_load(tg__graph *g) {
  tg__arena_begin_load(&g->tokens);
  tg__arena_begin_load(&g->conns);
}

void tg__graph_end_load(tg__graph *g) {
  tg__arena_rebuild_free(&g->tokens);
  tg__arena_rebuild_free(&g->conns);
}

int tg__graph_token_put(tg__graph *g, const tg_token *img) {
  int was_live = 0, err = 0;
  tg_token *t = tg__arena_put(&g->tokens, img->id, &was_live, &err);
  if (!t) return err;
  *t = *img;
  t->flags = (uint16_t)((t->flags & ~TG_TOKEN_DIRTY) | TG_TOKEN_ACTIVE);
  tg__graph_mark_token(g, t, img->id);
  return 0;
}

int tg__graph_conn_put(tg__graph *g, const tg_connection *img) {
  /* Before the chunk loop below maps anything for the id. */
  if (!tg__arena_may_replay(&g->conns, img->id)) return TG_ECORRUPT;
  if (img->type >= TG_CONN_TYPES || !tg__graph_token(g, img->from) ||
      !tg__graph_token(g, img->to) || tg__graph_conn(g, img->id))
    return TG_ECORRUPT;
  int rc = tg__graph_reserve_adj(g, img->from, img->to);
  if (!rc && g->track_dirty) rc = tg__graph_reserve_conn_dirty(g);
  if (rc) return rc;
  /* The id may lie chunks beyond the cursor: cover its bitmap too. */
  if (g->track_dirty && (rc = reserve_conn_dirty_upto(g, TG__ID_CHUNK(img->id))))
    return rc;
  int was_live = 0, err = 0;
  tg_connection *c = tg__arena_put(&g->conns, img->id, &was_live, &err);
  if (!c) return err;
  copy_conn(c, img, img->id);
  link_new(g, c, img->id);
  return 0;
}

int tg__graph_conn_load(tg__graph *g, const tg_connection *img) {
  int was_live = 0, err = 0;
  tg_connection *c = tg__arena_put(&g->conns, img->id, &was_live, &err);
  if (!c) return err;
  *c = *img;
  return 0;
}

int tg__graph_link_loaded(tg__graph *g) {
  const tg__arena *a = &g->conns;
  for (uint32_t i = 0; i < a->next; i++) {
    tg_connection *c = tg__arena_slot(a, i);
    uint32_t id = c->id;
    if (!id) continue; /* a free slot */
    if (c->type >= TG_CONN_TYPES || !tg__graph_token(g, c->from) ||
        !tg__graph_token(g, c->to))
      return TG_ECORRUPT;
    int rc = tg__graph_reserve_adj(g, c->from, c->to);
    if (rc) return rc;
    tg__adj *fa = tg__graph_adj(g, c->from), *ta = tg__graph_adj(g, c->to);
    /* Each link must point at a live connection that points back. */
    const tg_connection *n;
    if (c->next_out && (!(n = tg__graph_conn(g, c->next_out)) ||
                        n->prev_out != id || n->from != c->from))
      return TG_ECORRUPT;
    if (c->next_in && (!(n = tg__graph_conn(g, c->next_in)) ||
                       n->prev_in != id || n->to != c->to))
      return TG_ECORRUPT;
    if (c->prev_out == 0) {
      if (fa->out_head) return TG_ECORRUPT; /* two heads */
      fa->out_head = id;
    }
    if (c->prev_in == 0) {
      if (ta->in_head) return TG_ECORRUPT;
      ta->in_head = id;
    }
    fa->out_deg++;
    ta->in_deg++;
  }
  return 0;
}
