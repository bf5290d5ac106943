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
  g->pool = calloc(1, sizeof *g->pool);
  g->tokens.pool = g->pool;
  g->conns.pool = g->pool;
  g->adj = tg__table_alloc(TG__MAX_CHUNKS * sizeof *g->adj);
  g->cdirty = tg__table_alloc(TG__MAX_CHUNKS * sizeof *g->cdirty);
  g->tchunk_dirty = tg__table_alloc(TG__MAX_CHUNKS);
  if (!g->pool || !g->adj || !g->cdirty || !g->tchunk_dirty) {
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
    /* Each region's first table sits at its start (carved in order). */
    for (uint32_t c = 0; c < TG__MAX_CHUNKS && g->nadj; c++) {
      if (g->adj[c]) {
        if (((uintptr_t)g->adj[c] & (TG__ADJ_REGION_BYTES - 1u)) == 0)
          tg__unmap_fresh(g->adj[c], TG__ADJ_REGION_BYTES);
        g->nadj--;
      }
    }
    tg__table_free(g->adj, TG__MAX_CHUNKS * sizeof *g->adj);
  }
  if (g->adj_spare) tg__unmap_fresh(g->adj_spare, TG__ADJ_REGION_BYTES);
  if (g->pool) {
    tg__blockpool_free(g->pool);
    free(g->pool);
  }
  if (g->cdirty) {
    /* Bitmaps are a prefix [0, ncdirty) (tg__graph_reserve_conn_dirty):
       not 131,072 calls of free(NULL) per close. */
    for (uint32_t c = 0; c < g->ncdirty; c++) free(g->cdirty[c]);
    tg__table_free(g->cdirty, TG__MAX_CHUNKS * sizeof *g->cdirty);
  }
  tg__table_free(g->tchunk_dirty, TG__MAX_CHUNKS);
  free(g->tdel);
  tg__arena_free(&g->tokens);
  tg__arena_free(&g->conns);
  memset(g, 0, sizeof *g);
}

static int reserve_one(tg__graph *g, uint32_t token_id) {
  uint32_t c = tg__graph_token_chunk(g, token_id);
  if (g->adj[c]) return 0;
  if (!g->adj_cur || g->adj_used == TG__ADJ_PER_REGION) {
    unsigned char *r = g->adj_wake ? tg__spare_take(&g->adj_spare, g->adj_wake) : NULL;
    if (!r && !(r = tg__map_block(g->pool, TG__ADJ_REGION_BYTES))) return TG_ENOMEM;
    g->adj_cur = r;
    g->adj_used = 0;
  }
  /* Zero: fresh, and never handed out before (tables live until close). */
  tg__adj *t = (tg__adj *)(g->adj_cur + (size_t)g->adj_used++ * TG__ADJ_TABLE_BYTES);
  /* Release: a reader that loads the pointer (acquire) sees the zeroes. */
  __atomic_store_n(&g->adj[c], t, __ATOMIC_RELEASE);
  TG__STORE_RELAXED(g->nadj, g->nadj + 1u);
  return 0;
}

void tg__graph_prefault_adj(tg__graph *g) {
  if (!__atomic_load_n(&g->nadj, __ATOMIC_RELAXED) ||
      __atomic_load_n(&g->adj_spare, __ATOMIC_ACQUIRE))
    return;
  unsigned char *r = tg__map_block(g->pool, TG__ADJ_REGION_BYTES), *none = NULL;
  /* Release: the reserve that takes it (acquire) sees it faulted. */
  if (r && !__atomic_compare_exchange_n(&g->adj_spare, &none, r, 0, __ATOMIC_RELEASE,
                                        __ATOMIC_RELAXED))
    tg__unmap_fresh(r, TG__ADJ_REGION_BYTES);
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
#define NEXT_OFF(in) ((in) ? offsetof(tg_connection, next_in) : offsetof(tg_connection, next_out))
#define PREV_OFF(in) ((in) ? offsetof(tg_connection, prev_in) : offsetof(tg_connection, prev_out))

/* Change one link of connection slot `id`: one whole-word store
   (tg__slot_set_u32) and no write section. A reader's copy loads each
   8-byte word once, atomically, so it holds the word as it was before the
   store or after it, and every other word unchanged: an image the slot had
   (arena.h, "one-word changes"). The word's writers exclude each other: a
   link word (next_out with prev_out, next_in with prev_in) changes only
   under the adjacency lock of the connection's `from` or `to` token
   (striped calls, or the store lock's holder alone), and the calls that
   store a whole image (a new connection, an update, a release) hold both.
   Why no section: a section of a striped call is a compare-and-swap, which
   waits for the stores to fresh memory before it; a connect made two of
   them here (docs/benchmarks.md, "Concurrency"). */
static inline void conn_set(tg__graph *g, uint32_t id, size_t off, uint32_t v) {
  tg__graph_will_write(g, 1, id - 1u);
  uint32_t i = tg__arena_index(&g->conns, id) - 1u; /* slot index */
  tg__slot_set_u32(tg__arena_slot(&g->conns, i), (uint32_t)off, v);
}

static inline void touch_conn(tg__graph *g, uint32_t id) {
  if (id) tg__graph_will_write(g, 1, id - 1u);
}

/* The list heads of a token are published with relaxed stores inside a
   write section of the token's list version (readers: tg__graph_edges). */
static inline void set_head(uint32_t *head, uint32_t v) { TG__STORE_RELAXED(*head, v); }

/* Push connection id (whose own links are already written) on the front
   of one of its lists, whose head is *head: O(1), newest first. A
   neighbour whose link changes is marked dirty. */
static inline void push_front(tg__graph *g, uint32_t id, int in, uint32_t *head) {
  uint32_t h = *head;
  if (h) {
    conn_set(g, h, PREV_OFF(in), id);
    tg__graph_mark_conn(g, h);
  }
  set_head(head, id);
}

/* Take connection c off one of its lists, whose head is *head. */
static inline void unlink_from(tg__graph *g, const tg_connection *c, int in,
                               uint32_t *head) {
  uint32_t prev = in ? c->prev_in : c->prev_out, next = in ? c->next_in : c->next_out;
  if (prev) {
    conn_set(g, prev, NEXT_OFF(in), next);
    tg__graph_mark_conn(g, prev);
  } else {
    set_head(head, next);
  }
  if (next) {
    conn_set(g, next, PREV_OFF(in), prev);
    tg__graph_mark_conn(g, next);
  }
}

/* Open (and close) the write sections of both endpoints' list versions
   (g->lver); one section when they share a stripe. A striped call holds
   both odd already (they are its adjacency locks, graph.h): nothing to
   open. */
static inline void lists_begin(tg__graph *g, uint32_t from, uint32_t to) {
  if (tg__tl_striped) return;
  uint32_t *a = tg__graph_lver(g, from), *b = tg__graph_lver(g, to);
  tg__seq_begin(a);
  if (b != a) tg__seq_begin(b);
}

static inline void lists_end(tg__graph *g, uint32_t from, uint32_t to) {
  if (tg__tl_striped) return;
  uint32_t *a = tg__graph_lver(g, from), *b = tg__graph_lver(g, to);
  if (b != a) tg__seq_end(b);
  tg__seq_end(a);
}

/* Write connection `id` from *init with its links at the front of both
   endpoints' lists, and push it there. `fresh`: the slot index of a
   connection whose map entry is not published yet (a striped connect,
   which publishes it after this): its image is stored without a section,
   as a new token's is (token/graph.h), because no reader can find it
   (not by id, and its lists' versions stay odd until the call ends),
   while a stale reader of the slot's previous connection sees an id field
   that is 0 or the new id, never the one it looks for. Otherwise 0. */
static void link_new(tg__graph *g, const tg_connection *init, uint32_t id, uint32_t fresh) {
  tg__adj *fa = tg__graph_adj(g, init->from);
  tg__adj *ta = tg__graph_adj(g, init->to);
  tg_connection img = *init;
  img.id = id;
  img.reserved0 = 0;
  img.reserved1 = 0;
  img.reserved2 = 0;
  img.prev_out = img.prev_in = 0;
  img.next_out = fa->out_head;
  /* A self-loop's in list gets it after its out list: same head table. */
  img.next_in = ta->in_head;
  /* Copy-on-write first, so that no unit copy runs inside the sections. */
  touch_conn(g, id);
  touch_conn(g, img.next_out);
  touch_conn(g, img.next_in);
  lists_begin(g, init->from, init->to);
  if (fresh) {
    tg__slot_store(tg__arena_slot(&g->conns, fresh - 1u), &img);
  } else {
    uint32_t i = tg__arena_index(&g->conns, id) - 1u, *sq = tg__arena_stripe(&g->conns, i);
    tg__seq_begin(sq);
    tg__slot_store(tg__arena_slot(&g->conns, i), &img);
    tg__seq_end(sq);
  }
  push_front(g, id, 0, &fa->out_head);
  fa->out_deg++;
  push_front(g, id, 1, &ta->in_head);
  ta->in_deg++;
  lists_end(g, init->from, init->to);
  tg__graph_mark_conn(g, id);
}

int tg__graph_connect(tg__graph *g, const tg_connection *init, uint32_t *id) {
  assert(tg__graph_token(g, init->from) && tg__graph_token(g, init->to));
  assert(init->type < TG_CONN_TYPES);
  assert(tg__graph_adj(g, init->from) && tg__graph_adj(g, init->to));
  int err = 0;
  tg_connection *c = (tg_connection *)tg__arena_alloc(&g->conns, id, &err);
  if (!c) return err;
  link_new(g, init, *id, 0);
  return 0;
}

void tg__graph_conn_fill(tg__graph *g, const tg_connection *img) {
  assert(tg__graph_token(g, img->from) && tg__graph_token(g, img->to));
  assert(img->type < TG_CONN_TYPES);
  assert(tg__graph_adj(g, img->from) && tg__graph_adj(g, img->to));
  tg__arena_fill(&g->conns, img->id);
  link_new(g, img, img->id, 0);
}

void tg__graph_connect_held(tg__graph *g, const tg_connection *init, uint32_t id,
                            uint32_t slot) {
  assert(tg__tl_striped && g->cap == NULL);
  assert(init->type < TG_CONN_TYPES);
  /* Written, then mapped (a release store: who finds the id finds the
     whole image), all while the caller holds both lists' versions odd, so
     no walk follows the new links before both are done (link_new()). */
  link_new(g, init, id, slot + 1u);
  tg__arena_publish_held(&g->conns, id, slot);
}

/* Take live connection `id` (at *cp) off both lists, inside the write
   sections of its endpoints' list stripes, which this opens and leaves
   open: the caller releases the slot, then closes them (lists_end()).
   Returns the image it had. */
static inline tg_connection unlink_begin(tg__graph *g, uint32_t id, tg_connection *cp) {
  /* Plain: the caller is the only writer of this slot's links (the store
     lock, or both endpoints' adjacency locks). */
  const tg_connection c = *cp;
  tg__adj *fa = tg__graph_adj(g, c.from);
  tg__adj *ta = tg__graph_adj(g, c.to);
  touch_conn(g, id);
  touch_conn(g, c.prev_out);
  touch_conn(g, c.next_out);
  touch_conn(g, c.prev_in);
  touch_conn(g, c.next_in);
  lists_begin(g, c.from, c.to);
  unlink_from(g, &c, 0, &fa->out_head);
  fa->out_deg--;
  /* A self-loop's in-neighbours may have been its out-neighbours: read the
     links again after the first unlink. */
  tg_connection c2 = *cp;
  unlink_from(g, &c2, 1, &ta->in_head);
  ta->in_deg--;
  return c;
}

uint32_t tg__graph_disconnect_held(tg__graph *g, uint32_t id) {
  assert(tg__tl_striped && g->cap == NULL);
  tg_connection *cp = tg__graph_conn(g, id);
  assert(cp);
  tg_connection c = unlink_begin(g, id, cp);
  uint32_t i = tg__arena_index(&g->conns, id) - 1u, *sq = tg__arena_stripe(&g->conns, i);
  tg__seq_begin(sq);
  tg__arena_release_held(&g->conns, cp, id);
  tg__seq_end(sq);
  lists_end(g, c.from, c.to);
  tg__graph_mark_conn(g, id); /* dirty and not live: a delete */
  return i;
}

int tg__graph_disconnect(tg__graph *g, uint32_t id) {
  tg_connection *cp = tg__graph_conn(g, id);
  if (!cp) return TG_ENOTFOUND;
  tg_connection c = unlink_begin(g, id, cp);
  uint32_t i = tg__arena_index(&g->conns, id) - 1u, *sq = tg__arena_stripe(&g->conns, i);
  tg__seq_begin(sq);
  tg__arena_release(&g->conns, cp, id);
  tg__seq_end(sq);
  lists_end(g, c.from, c.to);
  tg__graph_mark_conn(g, id); /* dirty and not live: a delete */
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
  if (g->track_dirty) {
    assert(g->ntdel < g->captdel); /* tg__graph_reserve_deletes() */
    g->tdel[g->ntdel++] = id;
  }
  tg__graph_token_release(g, t, id, 0);
  if (nconns) *nconns = n;
  return 0;
}

/* ---- lock-free edge walk ---------------------------------------------------
 *
 * A list changes only inside a write section of its token's list version
 * (g->lver, graph.h), so the walk reads that counter (v, even) before taking
 * the head, and after each step's copy of a connection checks it is still v:
 * then the head and every link followed so far were the list's as of v, and
 * the copy (a consistent image, tg__arena_read) is a member of it. When the
 * counter moved, the list (or another list of the same stripe) changed: the
 * walk starts again from the head and skips the connections it has
 * delivered, so each is delivered once. Inserts go to the head and removals
 * keep the order of the rest, so a connection on the list for the whole walk
 * is always still ahead of the restart point: none is missed. A consistent
 * list has no cycle, and each run follows one consistent version, so the
 * walk cannot loop; it ends once a run meets no change (restarts need a
 * writer to change a list of the same stripe within one step of the walk).
 */

typedef struct seen_set {
  uint32_t *ids;
  size_t n, cap, nsorted; /* ids[0, nsorted) are sorted */
  uint32_t inline_ids[64];
} seen_set;

static int seen_add(seen_set *ss, uint32_t id) {
  if (ss->n == ss->cap) {
    size_t nc = ss->cap * 2;
    uint32_t *p = ss->ids == ss->inline_ids ? malloc(nc * sizeof *p)
                                            : realloc(ss->ids, nc * sizeof *p);
    if (!p) return TG_ENOMEM;
    if (ss->ids == ss->inline_ids) memcpy(p, ss->inline_ids, sizeof ss->inline_ids);
    ss->ids = p;
    ss->cap = nc;
  }
  ss->ids[ss->n++] = id;
  return 0;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static int seen_has(const seen_set *ss, uint32_t id) {
  size_t lo = 0, hi = ss->nsorted;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (ss->ids[mid] < id) lo = mid + 1;
    else hi = mid;
  }
  return lo < ss->nsorted && ss->ids[lo] == id;
}

static int walk(const tg__graph *g, uint32_t tid, int in, tg_edge_cb cb, void *arg) {
  const uint32_t *tsq = &g->lver[(tid - 1u) & (TG__SEQ_STRIPES - 1u)];
  seen_set ss;
  ss.ids = ss.inline_ids;
  ss.n = ss.nsorted = 0;
  ss.cap = sizeof ss.inline_ids / sizeof ss.inline_ids[0];
  int rc = 0, restarted = 0;
  unsigned strays = 0;
  for (;;) {
    uint32_t v = __atomic_load_n(tsq, __ATOMIC_ACQUIRE);
    if (v & 1u) {
      tg__cpu_relax();
      continue;
    }
    if (restarted) {
      /* Each restart sorts what was delivered, so skipping is a search. */
      qsort(ss.ids, ss.n, sizeof *ss.ids, cmp_u32);
      ss.nsorted = ss.n;
    }
    tg_token t;
    if (!tg__graph_token_read(g, tid, &t)) break; /* deleted during the walk */
    /* The side table is indexed by slot: the map entry (acquire, as in
       tg__arena_read()). A slot freed and reused by another token since
       shows that token's list: its members fail the check below. */
    const uint32_t *m =
        __atomic_load_n(&g->tokens.map[TG__ID_CHUNK(tid)], __ATOMIC_ACQUIRE);
    uint32_t e = m ? __atomic_load_n(&m[TG__ID_ENTRY(tid)], __ATOMIC_ACQUIRE) : 0;
    if (!e) break; /* deleted since */
    uint32_t i = e - 1u;
    const tg__adj *tab = __atomic_load_n(&g->adj[i >> TG__CHUNK_SHIFT], __ATOMIC_ACQUIRE);
    if (!tab) break; /* never connected */
    const tg__adj *a = &tab[i & TG__CHUNK_MASK];
    uint32_t c = in ? TG__LOAD_RELAXED(a->in_head) : TG__LOAD_RELAXED(a->out_head);
    int changed = 0;
    while (c) {
      tg_connection img;
      int live = tg__graph_conn_read(g, c, &img);
      __atomic_thread_fence(__ATOMIC_ACQUIRE); /* the loads above before v's */
      if (__atomic_load_n(tsq, __ATOMIC_RELAXED) != v) {
        changed = 1;
        break;
      }
      /* Under an unchanged version the link was the list's, unless the
         slot read above was reused by another token (the token deleted
         meanwhile): start again, which finds it gone. The same thing
         seen over and over with the token still there is damage. */
      if (!live || (in ? img.to : img.from) != tid) {
        if (++strays > 1000000u) {
          rc = TG_ECORRUPT;
          goto out;
        }
        changed = 1;
        break;
      }
      uint32_t next = in ? img.next_in : img.next_out;
      if (!restarted || !seen_has(&ss, c)) {
        if ((rc = seen_add(&ss, c))) goto out;
        if ((rc = cb(arg, &img))) goto out;
      }
      c = next;
    }
    if (!changed) break;
    restarted = 1;
  }
out:
  if (ss.ids != ss.inline_ids) free(ss.ids);
  return rc;
}

int tg__graph_edges(const tg__graph *g, uint32_t id, int direction,
                    tg_edge_cb cb, void *arg) {
  tg_token t;
  if (!tg__graph_token_read(g, id, &t)) return TG_ENOTFOUND;
  int rc = 0;
  if (direction & TG_OUT) rc = walk(g, id, 0, cb, arg);
  if (!rc && (direction & TG_IN)) rc = walk(g, id, 1, cb, arg);
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
  tg_token cp = *img;
  cp.flags = (uint16_t)((cp.flags & ~TG_TOKEN_DIRTY) | TG_TOKEN_ACTIVE);
  tg__graph_mark_token(g, &cp, img->id);
  tg__graph_token_write(g, img->id, &cp);
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
  link_new(g, img, img->id, 0);
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

/* ---- checkpoint capture (graph.h) ---------------------------------------- */

#define UNITS_PER_CHUNK (1u << (TG__CHUNK_SHIFT - TG__CAP_UNIT_SHIFT))
#define UNIT_WORDS (TG__CAP_UNIT / 64u) /* bitmap words of a unit */

/* Set DIRTY on token slot i, whatever it holds now. */
static void mark_token_slot(tg__graph *g, uint32_t i) {
  tg_token *t = tg__arena_slot(&g->tokens, i);
  uint32_t *sq = tg__arena_stripe(&g->tokens, i);
  tg__seq_begin(sq);
  tg__slot_set_u16(t, offsetof(tg_token, flags), (uint16_t)(t->flags | TG_TOKEN_DIRTY));
  tg__seq_end(sq);
  g->tchunk_dirty[i >> TG__CHUNK_SHIFT] = 1;
}

/* Clear a token slot's flags to `flags` (a checkpoint took it). */
static void set_token_flags(tg__graph *g, uint32_t i, uint16_t flags) {
  uint32_t *sq = tg__arena_stripe(&g->tokens, i);
  tg__seq_begin(sq);
  tg__slot_set_u16(tg__arena_slot(&g->tokens, i), offsetof(tg_token, flags), flags);
  tg__seq_end(sq);
}

static uint64_t *unit_bits(const tg__graph *g, uint32_t u) {
  uint32_t c = u / UNITS_PER_CHUNK;
  if (c >= g->ncdirty) return NULL;
  return g->cdirty[c] + (u % UNITS_PER_CHUNK) * UNIT_WORDS;
}

/* A unit's buffers for nrec records and ndel deletes. A unit of more than
   a quarter full takes a pre-faulted spare when there is one: a fresh
   256 KiB malloc is an mmap and 64 page faults, which under the store lock
   were most of a unit's copy time (and of a writer's copy-on-write). 0 or
   TG_ENOMEM (then nothing is held). Store lock held. */
static int unit_alloc(tg__capture *cap, tg__cap_unit *cu, uint32_t nrec, uint32_t ndel) {
  if (nrec > TG__CAP_UNIT / 4u && cap->nspares) cu->recs = cap->spares[--cap->nspares];
  else if (nrec && !(cu->recs = malloc((size_t)nrec * TG__SLOT_BYTES))) return TG_ENOMEM;
  if (ndel && !(cu->dels = malloc((size_t)ndel * sizeof *cu->dels))) {
    free(cu->recs);
    cu->recs = NULL;
    return TG_ENOMEM;
  }
  return 0;
}

/* Copy unit u of arena `kind` into the capture and clear its marks. Store
   lock held. 0 or TG_ENOMEM (then nothing changed). */
static int copy_unit(tg__graph *g, tg__capture *cap, int kind, uint32_t u) {
  tg__cap_unit *cu = &cap->units[kind][u];
  /* Tokens: slot indexes [lo, hi); connections: ids lo + 1 .. hi. */
  uint32_t lo = u << TG__CAP_UNIT_SHIFT;
  uint64_t hi64 = (uint64_t)lo + TG__CAP_UNIT;
  uint32_t hi = hi64 > cap->hw[kind] ? cap->hw[kind] : (uint32_t)hi64;
  uint32_t nrec = 0, ndel = 0;
  if (kind == 0) {
    for (uint32_t i = lo; i < hi; i++) {
      const tg_token *t = tg__arena_slot(&g->tokens, i);
      int live = t->id != 0; /* 0: free, or held by a batch */
      if (cap->full || (t->flags & TG_TOKEN_DIRTY)) nrec += live;
    }
  } else {
    uint64_t *bits = unit_bits(g, u);
    for (uint32_t i = lo; i < hi; i++) {
      uint32_t b = i - lo;
      int marked = bits && (bits[b >> 6] >> (b & 63)) & 1;
      int live = tg__graph_conn(g, i + 1u) != NULL;
      if (cap->full) nrec += live;
      else if (marked) live ? nrec++ : ndel++;
    }
  }
  if (unit_alloc(cap, cu, nrec, ndel)) return TG_ENOMEM;
  if (kind == 0) {
    for (uint32_t i = lo; i < hi; i++) {
      tg_token *t = tg__arena_slot(&g->tokens, i);
      int live = t->id != 0, dirty = (t->flags & TG_TOKEN_DIRTY) != 0;
      if (live && (cap->full || dirty)) {
        tg_token img = *t;
        img.flags &= (uint16_t)~TG_TOKEN_DIRTY;
        memcpy(cu->recs + (size_t)cu->nrec++ * TG__SLOT_BYTES, &img, sizeof img);
        if (dirty) set_token_flags(g, i, img.flags);
      } else if (!live && dirty) {
        set_token_flags(g, i, 0); /* a free slot: its delete is in tdel */
      }
    }
  } else {
    uint64_t *bits = unit_bits(g, u);
    for (uint32_t i = lo; i < hi; i++) {
      uint32_t b = i - lo;
      int marked = bits && (bits[b >> 6] >> (b & 63)) & 1;
      const tg_connection *c = tg__graph_conn(g, i + 1u);
      if (c && (cap->full || marked))
        memcpy(cu->recs + (size_t)cu->nrec++ * TG__SLOT_BYTES, c, TG__SLOT_BYTES);
      else if (!c && marked && !cap->full)
        cu->dels[cu->ndel++] = i + 1u;
    }
    if (bits) memset(bits, 0, UNIT_WORDS * sizeof *bits);
  }
  assert(cu->nrec == nrec && cu->ndel == ndel);
  cap->nrec[kind] += nrec;
  cap->ndel[kind] += ndel;
  /* Relaxed: tg__capture_stage() looks without the lock, and checks again
     under it. */
  __atomic_store_n(&cap->pending[kind][u], 0, __ATOMIC_RELAXED);
  return 0;
}

/* Take unit u of `kind`, staged by tg__capture_stage() and still pending
   (no writer copied it, so nothing in it changed since begin and the
   stage holds it as of begin), into the capture, clearing its marks as
   copy_unit() does. The records are already in their buffer (a sparse
   unit's are copied into one of their size): the lock is held to clear
   the marks (and, for an incremental capture of connections, to keep the
   marked ones). Store lock held. 0 or TG_ENOMEM (nothing changed). */
static int take_staged(tg__graph *g, tg__capture *cap, int kind, uint32_t u) {
  tg__cap_unit *cu = &cap->units[kind][u];
  uint32_t lo = u << TG__CAP_UNIT_SHIFT;
  const uint64_t *sb = cap->stage_bits;
  uint64_t *bits = kind ? unit_bits(g, u) : NULL;
  /* Tokens: staged are the live records the capture takes (DIRTY
     cleared); the bits are the slots whose DIRTY flag must be cleared.
     Connections: staged is every live one of the unit in id order, its
     offset in stage_pos; the bits are the live offsets. An incremental
     capture keeps the marked ones (bits), and the marked dead are deletes. */
  int pick = kind == 1 && !cap->full;
  uint32_t nrec = cap->stage_n, ndel = 0;
  if (pick) {
    nrec = 0;
    for (uint32_t k = 0; k < cap->stage_n; k++) {
      uint32_t b = cap->stage_pos[k];
      nrec += bits && (bits[b >> 6] >> (b & 63)) & 1;
    }
    for (uint32_t w = 0; bits && w < UNIT_WORDS; w++)
      ndel += (uint32_t)__builtin_popcountll(bits[w] & ~sb[w]);
  }
  /* Everything that can fail first: nothing changes on TG_ENOMEM. A
     sparse unit (an incremental checkpoint) gets a buffer of its size, as
     copy_unit() gives it: a whole-unit buffer for each of many pending
     units would hold 256 KiB per changed record. */
  int whole = nrec > TG__CAP_UNIT / 4u;
  unsigned char *recs = whole ? cap->stage_buf : NULL;
  if ((!whole && nrec && !(recs = malloc((size_t)nrec * TG__SLOT_BYTES))) ||
      (ndel && !(cu->dels = malloc((size_t)ndel * sizeof *cu->dels)))) {
    if (!whole) free(recs);
    return TG_ENOMEM;
  }
  if (pick) {
    uint32_t j = 0, d = 0; /* j <= k: compacting in place is safe */
    for (uint32_t k = 0; k < cap->stage_n; k++) {
      uint32_t b = cap->stage_pos[k];
      if (!(bits && (bits[b >> 6] >> (b & 63)) & 1)) continue;
      if (recs + (size_t)j * TG__SLOT_BYTES != cap->stage_buf + (size_t)k * TG__SLOT_BYTES)
        memcpy(recs + (size_t)j * TG__SLOT_BYTES, cap->stage_buf + (size_t)k * TG__SLOT_BYTES,
               TG__SLOT_BYTES);
      j++;
    }
    for (uint32_t w = 0; bits && w < UNIT_WORDS; w++)
      for (uint64_t m = bits[w] & ~sb[w]; m; m &= m - 1)
        cu->dels[d++] = lo + w * 64u + (uint32_t)__builtin_ctzll(m) + 1u;
    assert(j == nrec && d == ndel);
  } else if (!whole && nrec) {
    memcpy(recs, cap->stage_buf, (size_t)nrec * TG__SLOT_BYTES);
  }
  if (kind == 0) {
    for (uint32_t w = 0; w < UNIT_WORDS; w++)
      for (uint64_t m = sb[w]; m; m &= m - 1) {
        uint32_t i = lo + w * 64u + (uint32_t)__builtin_ctzll(m);
        const tg_token *t = tg__arena_slot(&g->tokens, i);
        set_token_flags(g, i, t->id ? (uint16_t)(t->flags & ~TG_TOKEN_DIRTY) : 0);
      }
  } else if (bits) {
    memset(bits, 0, UNIT_WORDS * sizeof *bits);
  }
  if (whole) cap->stage_buf = NULL; /* the stage gets a new buffer */
  cu->recs = nrec ? recs : NULL;
  cu->nrec = nrec;
  cu->ndel = ndel;
  cap->nrec[kind] += nrec;
  cap->ndel[kind] += ndel;
  __atomic_store_n(&cap->pending[kind][u], 0, __ATOMIC_RELAXED);
  return 0;
}

/* Mark again what unit u of `kind` took. */
static void remark_unit(tg__graph *g, const tg__cap_unit *cu, int kind) {
  for (uint32_t k = 0; k < cu->nrec + cu->ndel; k++) {
    uint32_t id;
    if (k < cu->nrec)
      memcpy(&id, cu->recs + (size_t)k * TG__SLOT_BYTES +
                      (kind ? offsetof(tg_connection, id) : offsetof(tg_token, id)),
             sizeof id);
    else
      id = cu->dels[k - cu->nrec];
    if (kind == 1) {
      tg__graph_mark_conn(g, id);
    } else {
      uint32_t e = tg__arena_index(&g->tokens, id);
      if (e) mark_token_slot(g, e - 1u); /* deleted since: in tdel */
    }
  }
}

/* A copy failed: give back every mark the capture holds (copied units by
   marking their records again, pending token units by their chunk flag)
   and stop copy-on-write. */
static void void_capture(tg__graph *g, tg__capture *cap, int err) {
  g->cap = NULL;
  cap->err = err;
  for (int kind = 0; kind < 2; kind++) {
    for (uint32_t u = 0; u < cap->nunits[kind]; u++) {
      if (cap->pending[kind][u]) {
        if (kind == 0) g->tchunk_dirty[u / UNITS_PER_CHUNK] = 1;
      } else {
        remark_unit(g, &cap->units[kind][u], kind);
      }
    }
  }
}

int tg__capture_begin(tg__graph *g, tg__capture *cap, int full) {
  assert(!g->cap && g->track_dirty);
  memset(cap, 0, sizeof *cap);
  cap->full = full;
  /* Token units are of slots (their DIRTY flags), connection units of ids
     (their marks): every id up to the cursor, all of them after a wrap. */
  cap->hw[0] = g->tokens.next;
  cap->hw[1] = g->conns.wrapped ? TG__MAX_SLOTS : g->conns.cursor;
  cap->tokens_hw = g->tokens.cursor;
  cap->conns_hw = g->conns.cursor;
  cap->tokens_wrapped = g->tokens.wrapped;
  cap->conns_wrapped = g->conns.wrapped;
  for (int kind = 0; kind < 2; kind++) {
    uint32_t n = (uint32_t)(((uint64_t)cap->hw[kind] + TG__CAP_UNIT - 1) >> TG__CAP_UNIT_SHIFT);
    cap->nunits[kind] = n;
    cap->pending[kind] = calloc(n ? n : 1, 1);
    cap->units[kind] = calloc(n ? n : 1, sizeof(tg__cap_unit));
    if (!cap->pending[kind] || !cap->units[kind]) {
      tg__capture_free(cap);
      return TG_ENOMEM;
    }
    for (uint32_t u = 0; u < n; u++) {
      if (full) {
        cap->pending[kind][u] = 1;
      } else if (kind == 0) {
        cap->pending[kind][u] = g->tchunk_dirty[u / UNITS_PER_CHUNK];
      } else {
        const uint64_t *bits = unit_bits(g, u);
        for (uint32_t w = 0; bits && w < UNIT_WORDS && !cap->pending[kind][u]; w++)
          cap->pending[kind][u] = bits[w] != 0;
      }
    }
  }
  /* The pending flags hold the token chunks' marks now; marks set from
     here on belong to the next checkpoint. */
  memset(g->tchunk_dirty, 0, g->tokens.nchunks);
  /* The token deletes so far move into the capture whole (a full rewrite
     drops every key that is not live, so it needs none). An id live again
     (handed out anew after the id space wrapped) is a put, not a delete. */
  if (!full) {
    cap->tdel = g->tdel;
    cap->captdel = g->captdel;
    for (size_t k = 0; k < g->ntdel; k++)
      if (!tg__graph_token(g, g->tdel[k])) cap->tdel[cap->ntdel++] = g->tdel[k];
    g->tdel = NULL;
    g->captdel = 0;
  }
  g->ntdel = 0;
  g->cap = cap;
  return 0;
}

void tg__capture_touch(tg__graph *g, int kind, uint32_t slot) {
  tg__capture *cap = g->cap;
  uint32_t u = slot >> TG__CAP_UNIT_SHIFT;
  if (u >= cap->nunits[kind] || !cap->pending[kind][u]) return;
  int rc = copy_unit(g, cap, kind, u);
  if (rc) void_capture(g, cap, rc);
}

/* The next unit the checkpointer's steps would copy, from its cursor:
   1 and *kind, *u, or 0 when none is pending. Without the lock the answer
   may be stale (pending is loaded relaxed); the step checks again. */
static int next_pending(const tg__capture *cap, int *kind, uint32_t *u) {
  for (int k = 0; k < 2; k++)
    for (uint32_t v = cap->cursor[k]; v < cap->nunits[k]; v++)
      if (__atomic_load_n(&cap->pending[k][v], __ATOMIC_RELAXED)) {
        *kind = k;
        *u = v;
        return 1;
      }
  return 0;
}

/* Make a buffer of a whole unit of records, its pages faulted in now
   (outside the lock): one volatile store a page, since a memset of zeroes
   after malloc may be turned into a calloc, which writes nothing. */
static unsigned char *unit_buffer(void) {
  size_t bytes = (size_t)TG__CAP_UNIT * TG__SLOT_BYTES;
  unsigned char *p = malloc(bytes);
  for (size_t o = 0; p && o < bytes; o += 4096) ((volatile unsigned char *)p)[o] = 0;
  return p;
}

int tg__capture_stage(const tg__graph *g, tg__capture *cap) {
  cap->staged = 0;
  for (uint32_t k = 0; k < TG__CAP_SPARES; k++)
    if (!cap->fresh[k] && !(cap->fresh[k] = unit_buffer())) return TG_ENOMEM;
  if (!cap->stage_buf && !(cap->stage_buf = unit_buffer())) return TG_ENOMEM;
  int kind;
  uint32_t u;
  if (!next_pending(cap, &kind, &u)) return 0;
  uint32_t lo = u << TG__CAP_UNIT_SHIFT;
  uint64_t hi64 = (uint64_t)lo + TG__CAP_UNIT;
  uint32_t n = (hi64 > cap->hw[kind] ? cap->hw[kind] : (uint32_t)hi64) - lo;
  uint32_t nrec = 0;
  memset(cap->stage_bits, 0, sizeof cap->stage_bits);
  for (uint32_t b = 0; b < n; b++) {
    unsigned char *r = cap->stage_buf + (size_t)nrec * TG__SLOT_BYTES;
    if (kind == 0) {
      /* Slots below the `next` of begin: their chunks were mapped then. */
      tg__arena_read_slot(&g->tokens, lo + b, r);
      tg_token *t = (tg_token *)r;
      int dirty = (t->flags & TG_TOKEN_DIRTY) != 0;
      if (dirty) cap->stage_bits[b >> 6] |= 1ull << (b & 63);
      if (t->id && (cap->full || dirty)) {
        t->flags &= (uint16_t)~TG_TOKEN_DIRTY;
        nrec++;
      }
    } else if (tg__arena_read(&g->conns, lo + b + 1u, r)) {
      cap->stage_bits[b >> 6] |= 1ull << (b & 63);
      cap->stage_pos[nrec++] = (uint16_t)b;
    }
  }
  cap->stage_n = nrec;
  cap->staged = 1;
  cap->stage_kind = kind;
  cap->stage_unit = u;
  return 0;
}

int tg__capture_step(tg__graph *g, tg__capture *cap, uint32_t units) {
  if (cap->err) return cap->err;
  for (uint32_t k = 0; k < TG__CAP_SPARES; k++) {
    if (cap->fresh[k] && cap->nspares < TG__CAP_SPARES) {
      cap->spares[cap->nspares++] = cap->fresh[k];
      cap->fresh[k] = NULL;
    }
  }
  for (int kind = 0; kind < 2; kind++) {
    while (cap->cursor[kind] < cap->nunits[kind]) {
      uint32_t u = cap->cursor[kind]++;
      if (!cap->pending[kind][u]) continue;
      int rc = cap->staged && cap->stage_kind == kind && cap->stage_unit == u
                   ? take_staged(g, cap, kind, u)
                   : copy_unit(g, cap, kind, u);
      if (rc) {
        void_capture(g, cap, rc);
        return rc;
      }
      if (--units == 0) return 1;
    }
  }
  return 0;
}

void tg__capture_end(tg__graph *g, tg__capture *cap) {
  assert(g->cap == cap || cap->err);
  if (g->cap == cap) g->cap = NULL;
}

void tg__capture_remark(tg__graph *g, const tg__capture *cap) {
  assert(!g->cap);
  for (int kind = 0; kind < 2; kind++)
    for (uint32_t u = 0; u < cap->nunits[kind]; u++)
      if (!cap->pending[kind][u]) remark_unit(g, &cap->units[kind][u], kind);
}

void tg__capture_free(tg__capture *cap) {
  free(cap->tdel);
  free(cap->stage_buf);
  for (uint32_t k = 0; k < TG__CAP_SPARES; k++) {
    free(cap->fresh[k]);
    free(cap->spares[k]);
  }
  for (int kind = 0; kind < 2; kind++) {
    if (cap->units[kind])
      for (uint32_t u = 0; u < cap->nunits[kind]; u++) {
        free(cap->units[kind][u].recs);
        free(cap->units[kind][u].dels);
      }
    free(cap->units[kind]);
    free(cap->pending[kind]);
  }
  memset(cap, 0, sizeof *cap);
}
