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
  if (!g->adj) {
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
  tg__arena_free(&g->tokens);
  tg__arena_free(&g->conns);
  memset(g, 0, sizeof *g);
}

static int reserve_one(tg__graph *g, uint32_t token_id) {
  uint32_t c = (token_id - 1u) >> TG__CHUNK_SHIFT;
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

int tg__graph_connect(tg__graph *g, const tg_connection *init, uint32_t *id) {
  assert(tg__graph_token(g, init->from) && tg__graph_token(g, init->to));
  assert(init->type < TG_CONN_TYPES);
  tg__adj *fa = tg__graph_adj(g, init->from);
  tg__adj *ta = tg__graph_adj(g, init->to);
  assert(fa && ta);
  int err = 0;
  tg_connection *c = (tg_connection *)tg__arena_alloc(&g->conns, id, &err);
  if (!c) return err;
  *c = *init;
  c->id = *id;
  c->reserved0 = 0;
  c->reserved1 = 0;
  c->reserved2 = 0;
  /* Push on the front of both lists: O(1), newest first. */
  c->prev_out = 0;
  c->next_out = fa->out_head;
  if (fa->out_head) tg__graph_conn(g, fa->out_head)->prev_out = *id;
  fa->out_head = *id;
  fa->out_deg++;
  c->prev_in = 0;
  c->next_in = ta->in_head;
  if (ta->in_head) tg__graph_conn(g, ta->in_head)->prev_in = *id;
  ta->in_head = *id;
  ta->in_deg++;
  return 0;
}

int tg__graph_disconnect(tg__graph *g, uint32_t id) {
  tg_connection *c = tg__graph_conn(g, id);
  if (!c) return TG_ENOTFOUND;
  tg__adj *fa = tg__graph_adj(g, c->from);
  tg__adj *ta = tg__graph_adj(g, c->to);
  if (c->prev_out)
    tg__graph_conn(g, c->prev_out)->next_out = c->next_out;
  else
    fa->out_head = c->next_out;
  if (c->next_out) tg__graph_conn(g, c->next_out)->prev_out = c->prev_out;
  fa->out_deg--;
  if (c->prev_in)
    tg__graph_conn(g, c->prev_in)->next_in = c->next_in;
  else
    ta->in_head = c->next_in;
  if (c->next_in) tg__graph_conn(g, c->next_in)->prev_in = c->prev_in;
  ta->in_deg--;
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
  tg__arena_release(&g->tokens, t, id);
  if (nconns) *nconns = n;
  return 0;
}

int tg__graph_edges(const tg__graph *g, uint32_t id, int direction,
                    tg_edge_cb cb, void *arg) {
  if (!tg__graph_token(g, id)) return TG_ENOTFOUND;
  const tg__adj *a = tg__graph_adj(g, id);
  if (!a) return 0;
  if (direction & TG_OUT) {
    for (uint32_t c = a->out_head; c;) {
      const tg_connection *conn = tg__graph_conn(g, c);
      int rc = cb(arg, conn);
      if (rc) return rc;
      c = conn->next_out;
    }
  }
  if (direction & TG_IN) {
    for (uint32_t c = a->in_head; c;) {
      const tg_connection *conn = tg__graph_conn(g, c);
      int rc = cb(arg, conn);
      if (rc) return rc;
      c = conn->next_in;
    }
  }
  return 0;
}

int tg__graph_foreach_token(const tg__graph *g,
                            int (*fn)(void *arg, const tg_token *t), void *arg) {
  const tg__arena *a = &g->tokens;
  for (uint32_t i = 0; i < a->next; i++) {
    const tg_token *t = tg__arena_slot(a, i);
    if (t->id != i + 1u) continue;
    int rc = fn(arg, t);
    if (rc) return rc;
  }
  return 0;
}
