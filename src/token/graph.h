/*
 * The token graph: tokens and connections in two arenas, and adjacency
 * threaded through the connection slots.
 *
 * Each connection sits in two doubly linked lists: the outgoing list of its
 * `from` token (next_out/prev_out) and the incoming list of its `to` token
 * (next_in/prev_in), so listing a token's neighbours costs O(degree) and
 * unlinking one connection costs O(1), with no hash table.
 *
 * The list heads and degrees cannot live in the token: its 64 bytes are all
 * semantic fields. They live in a side table per token slot chunk (16 bytes
 * per token slot, indexed by slot, not id, so a slot reused by a later id
 * reuses its entry), allocated only when a token in that chunk first gets a
 * connection, so a graph of unconnected tokens costs 64 bytes per token
 * (plus its id's 4 bytes in the arena's map).
 *
 * Not thread-safe: the store serialises calls.
 */
#ifndef TG_TOKEN_GRAPH_H
#define TG_TOKEN_GRAPH_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "token/arena.h"
#include "tokengraph/tokengraph.h"

_Static_assert(sizeof(tg_token) == 64, "tg_token is one 64-byte slot");
_Static_assert(sizeof(tg_connection) == 64, "tg_connection is one slot");
_Static_assert(offsetof(tg_token, id) == 48, "token layout");
_Static_assert(offsetof(tg_token, flags) == 52, "token layout");
_Static_assert(offsetof(tg_token, field_radius) == 54, "token layout");
_Static_assert(offsetof(tg_token, field_strength) == 55, "token layout");
_Static_assert(offsetof(tg_token, weight) == 56, "token layout");
_Static_assert(offsetof(tg_token, timestamp) == 60, "token layout");
_Static_assert(offsetof(tg_connection, to) == 4, "connection layout");
_Static_assert(offsetof(tg_connection, next_out) == 8, "connection layout");
_Static_assert(offsetof(tg_connection, prev_in) == 20, "connection layout");
_Static_assert(offsetof(tg_connection, type) == 24, "connection layout");
_Static_assert(offsetof(tg_connection, flags) == 28, "connection layout");
_Static_assert(offsetof(tg_connection, weight) == 32, "connection layout");
_Static_assert(offsetof(tg_connection, activation_count) == 40, "layout");
_Static_assert(offsetof(tg_connection, confidence) == 52, "connection layout");
_Static_assert(offsetof(tg_connection, id) == 56, "connection layout");
_Static_assert(offsetof(tg_connection, reserved2) == 60, "connection layout");

typedef struct tg__adj {
  uint32_t out_head; /* newest outgoing connection id, 0 = none */
  uint32_t in_head;  /* newest incoming connection id, 0 = none */
  uint32_t out_deg;  /* outgoing connections */
  uint32_t in_deg;   /* incoming connections */
} tg__adj;

#define TG__ADJ_TABLE_BYTES ((uint64_t)TG__CHUNK_SLOTS * sizeof(tg__adj))

typedef struct tg__graph {
  tg__arena tokens;
  tg__arena conns;
  tg__adj **adj;     /* per token chunk; NULL until a connection needs it */
  uint32_t nadj;     /* side tables allocated */
  int track_dirty;   /* durable stores: remember what changed since the
                        last checkpoint */
  uint8_t *tchunk_dirty; /* per token chunk: some token in it is DIRTY */
  uint64_t **cdirty; /* per connection id chunk (TG__ID_CHUNK): one bit
                        per id changed since the last checkpoint (links
                        included); a dead id's bit is its delete */
  uint32_t ncdirty;  /* chunks [0, ncdirty) have a bitmap */
  uint32_t *tdel;    /* track_dirty: token ids deleted since the last
                        checkpoint (a deleted token's slot is reused at
                        once, so it cannot carry the delete itself) */
  size_t ntdel, captdel; /* tdel's length and room */
} tg__graph;

/* Connection bitmaps: 32768 bits = 4 KiB per 2 MiB chunk. */
#define TG__CDIRTY_WORDS (TG__CHUNK_SLOTS / 64u)

int tg__graph_init(tg__graph *g);
void tg__graph_free(tg__graph *g);

/* Bytes the graph holds for live objects plus side tables: the number the
   memory quota is checked against (docs/quotas.md). */
static inline uint64_t tg__graph_memory(const tg__graph *g) {
  return (g->tokens.live + g->conns.live) * TG__SLOT_BYTES +
         (uint64_t)g->nadj * TG__ADJ_TABLE_BYTES;
}

static inline tg_token *tg__graph_token(const tg__graph *g, uint32_t id) {
  return (tg_token *)tg__arena_get(&g->tokens, id);
}

static inline tg_connection *tg__graph_conn(const tg__graph *g, uint32_t id) {
  return (tg_connection *)tg__arena_get(&g->conns, id);
}

/* The slot chunk of live token `id`: what its side table and its dirty
   mark are indexed by. */
static inline uint32_t tg__graph_token_chunk(const tg__graph *g, uint32_t id) {
  uint32_t e = tg__arena_index(&g->tokens, id);
  assert(e != 0);
  return (e - 1u) >> TG__CHUNK_SHIFT;
}

/* The side-table entry of live token `token_id`, or NULL when its slot's
   chunk has none yet (then the token has no connections). */
static inline tg__adj *tg__graph_adj(const tg__graph *g, uint32_t token_id) {
  uint32_t i = tg__arena_index(&g->tokens, token_id) - 1u;
  tg__adj *t = g->adj[i >> TG__CHUNK_SHIFT];
  return t ? &t[i & TG__CHUNK_MASK] : NULL;
}

/* Note that live token `id` changed since the last checkpoint: the DIRTY
   flag on *t (its slot, or a copy about to be stored there), and the slot's
   chunk marked. */
static inline void tg__graph_mark_token(tg__graph *g, tg_token *t, uint32_t id) {
  if (g->track_dirty) {
    t->flags |= TG_TOKEN_DIRTY;
    g->tchunk_dirty[tg__graph_token_chunk(g, id)] = 1;
  }
}

/* Make room to remember n token deletes (tracking on), so the deletes
   themselves cannot fail: call before deleting tokens. 0 or TG_ENOMEM. */
int tg__graph_reserve_deletes(tg__graph *g, uint64_t n);

/* Make sure the bitmap of every connection chunk in use, and of the one the
   next connect may map, exists, so marking cannot fail: call before a
   connect while dirty tracking is on. 0 or TG_ENOMEM. */
int tg__graph_reserve_conn_dirty(tg__graph *g);

/* Note that connection `id` changed (or was deleted) since the last
   checkpoint: its bit, by id. */
static inline void tg__graph_mark_conn(tg__graph *g, uint32_t id) {
  if (g->track_dirty) {
    uint32_t i = id - 1u;
    g->cdirty[TG__ID_CHUNK(id)][(i & TG__CHUNK_MASK) >> 6] |= 1ull << (i & 63);
  }
}

/* Create a token from *init (NULL = zeroes) and return it. NULL with *err
   TG_ENOMEM or TG_EQUOTA (2^32 - 1 slots); nothing changes on failure. */
static inline tg_token *tg__graph_token_create(tg__graph *g, const tg_token *init,
                                               uint32_t *id, int *err) {
  tg_token *t = (tg_token *)tg__arena_alloc(&g->tokens, id, err);
  if (!t) return NULL;
  if (init)
    *t = *init;
  else
    memset(t, 0, sizeof *t);
  t->id = *id;
  t->flags = (uint16_t)((t->flags & ~TG_TOKEN_DIRTY) | TG_TOKEN_ACTIVE);
  tg__graph_mark_token(g, t, *id);
  return t;
}

/* Undo the create that just returned t (its record could not be logged):
   the slot is freed and the cursor goes back, so the id is handed out
   again by the next create, as if this one had never run (nobody saw it). */
static inline void tg__graph_token_uncreate(tg__graph *g, tg_token *t, uint32_t id) {
  t->flags = 0;
  tg__arena_release(&g->tokens, t, id);
  tg__arena_give_back(&g->tokens, id);
}

/* A batch's create, at the id tg__arena_reserve() gave it: write *img
   (img->id is that id) into the reserved slot, as a create would. */
static inline tg_token *tg__graph_token_fill(tg__graph *g, const tg_token *img) {
  tg_token *t = (tg_token *)tg__arena_fill(&g->tokens, img->id);
  *t = *img;
  t->flags = (uint16_t)((t->flags & ~TG_TOKEN_DIRTY) | TG_TOKEN_ACTIVE);
  tg__graph_mark_token(g, t, img->id);
  return t;
}

/* A batch's connect, at the reserved id img->id: as tg__graph_connect()
   (live endpoints, type < TG_CONN_TYPES, side tables reserved, and with
   dirty tracking on, the bitmap of the id's chunk reserved). */
void tg__graph_conn_fill(tg__graph *g, const tg_connection *img);

/* Take the fields tg_connection_update() changes from *img into live
   connection img->id, whose endpoints img must name. 0, TG_ENOTFOUND,
   TG_EINVAL (other endpoints: nothing changed). */
static inline int tg__graph_conn_update(tg__graph *g, const tg_connection *img) {
  tg_connection *c = tg__graph_conn(g, img->id);
  if (!c) return TG_ENOTFOUND;
  if (c->from != img->from || c->to != img->to) return TG_EINVAL;
  c->weight = img->weight;
  c->pull_strength = img->pull_strength;
  c->activation_count = img->activation_count;
  c->last_activated = img->last_activated;
  c->confidence = img->confidence;
  c->flags = img->flags;
  tg__graph_mark_conn(g, img->id);
  return 0;
}

/* Delete a token and every connection into or out of it; *nconns (may be
   NULL) receives how many connections went with it. 0 or TG_ENOTFOUND.
   With tracking on, tg__graph_reserve_deletes() must have made room. */
int tg__graph_token_delete(tg__graph *g, uint32_t id, uint64_t *nconns);

/* Degree (in + out) of a live token. */
static inline uint64_t tg__graph_degree(const tg__graph *g, uint32_t id) {
  const tg__adj *a = tg__graph_adj(g, id);
  return a ? (uint64_t)a->out_deg + a->in_deg : 0;
}

/* Make sure both endpoints have side tables (allocating at most two), so a
   following tg__graph_connect cannot fail halfway. 0 or TG_ENOMEM. */
int tg__graph_reserve_adj(tg__graph *g, uint32_t from, uint32_t to);

/* Add a connection (endpoints must be live, type < TG_CONN_TYPES, side
   tables reserved). 0, TG_ENOMEM or TG_EQUOTA (slots exhausted). */
int tg__graph_connect(tg__graph *g, const tg_connection *init, uint32_t *id);

/* ---- loading: checkpoint load and WAL replay ---------------------------
   Between begin and end, objects are put at the ids their records name. */
void tg__graph_begin_load(tg__graph *g);
/* Rebuild the free lists. */
void tg__graph_end_load(tg__graph *g);

/* Create or overwrite the token img->id with *img. 0, TG_EINVAL (id 0),
   TG_ECORRUPT (an id the store could not have issued: tg__arena_may_put),
   TG_ENOMEM. */
int tg__graph_token_put(tg__graph *g, const tg_token *img);

/* Replay of a connect: add connection img->id (not live) between live
   endpoints, at the head of both lists as the original call did.
   0, TG_ECORRUPT (id live or never issuable, endpoint missing, bad type),
   TG_ENOMEM. */
int tg__graph_conn_put(tg__graph *g, const tg_connection *img);

/* Checkpoint load: store the connection with its links as saved. Call
   tg__graph_link_loaded() once all are in. 0, TG_EINVAL, TG_ECORRUPT (id
   past the high-water mark), TG_ENOMEM. */
int tg__graph_conn_load(tg__graph *g, const tg_connection *img);

/* Derive list heads and degrees from the loaded links and check that every
   connection's endpoints are live and its links agree. 0, TG_ECORRUPT,
   TG_ENOMEM. */
int tg__graph_link_loaded(tg__graph *g);

/* Remove a connection. 0 or TG_ENOTFOUND. */
int tg__graph_disconnect(tg__graph *g, uint32_t id);

/* Walk a token's connections (see tg_token_edges). */
int tg__graph_edges(const tg__graph *g, uint32_t id, int direction,
                    tg_edge_cb cb, void *arg);

/* Call fn for every live token in slot order (not id order); a non-zero
   return stops the walk and is returned. fn must not create or delete
   tokens. */
int tg__graph_foreach_token(const tg__graph *g,
                            int (*fn)(void *arg, const tg_token *t), void *arg);

#endif /* TG_TOKEN_GRAPH_H */
