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
 * Threads: one writer at a time under the store lock, or several striped
 * writers without it (store.c, STRIPES: each holds the adjacency locks of
 * the tokens it changes; "striped writes" below), and readers without any
 * lock (tg__graph_token_read(), tg__graph_conn_read(), tg__graph_edges(),
 * the counters). Every slot change is a write section of its arena's stripe
 * (arena.h; a striped writer's sections exclude each other). A token's
 * adjacency (its list heads, and the links of the connections on its
 * lists) changes only inside a write section of its stripe's list version
 * (lver, below: a striped call holds it odd for the whole call), the
 * version of the token's lists: an edge walk that sees it unchanged around
 * a step knows the step followed the list as it was (tg__graph_edges() in
 * graph.c).
 * Side tables are published with a release store and kept until close.
 *
 * Checkpoints capture the graph as of one moment without stopping writers
 * for long (tg__capture, below): copy-on-write by units of 4096 slots.
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
_Static_assert(offsetof(tg_token, id) % 8 == 0, "id, flags, radius, strength: one word");
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
/* Side tables are carved from 2 MiB regions mapped and faulted for
   writing (tg__map_fresh()): a table from calloc() came from fresh
   mmap()ed pages, and the first connect into each 4 KiB of it read the
   list head (the zero page) and then wrote it, a copy-on-write fault
   with a TLB shootdown IPI to the other CPU (perf record of tg-bench
   concurrent: do_wp_page under link_new()). A region holds 4 tables; up
   to 3 carved ahead are not counted in the memory quota until used. */
#define TG__ADJ_REGION_BYTES ((size_t)2 << 20)
#define TG__ADJ_PER_REGION ((uint32_t)(TG__ADJ_REGION_BYTES / TG__ADJ_TABLE_BYTES))
_Static_assert(TG__ADJ_REGION_BYTES % TG__ADJ_TABLE_BYTES == 0, "tables tile a region");

typedef struct tg__capture tg__capture;

typedef struct tg__graph {
  tg__arena tokens;
  tg__arena conns;
  tg__adj **adj;     /* per token chunk; NULL until a connection needs it;
                        entries stored with release (under the store lock
                        or the store's alloc_lock), kept until close */
  uint32_t nadj;     /* side tables allocated (relaxed stores) */
  unsigned char *adj_cur; /* the 2 MiB region tables are carved from
                        (TG__ADJ_PER_REGION each, in order), NULL none */
  uint32_t adj_used; /* tables carved from adj_cur */
  unsigned char *adj_spare; /* a region mapped and faulted ahead by the
                        store's prefaulter (tg__graph_prefault_adj()):
                        atomic exchanges only, NULL none */
  int *adj_wake;     /* futex word to bump and wake when the spare was
                        taken (NULL: nobody makes spares) */
  tg__blockpool *pool; /* blocks faulted at open (prefault_bytes), taken
                        first by both arenas and the side tables; its own
                        allocation, so the struct may be moved */
  tg__capture *cap;  /* a checkpoint capture in progress, else NULL */
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
  /* The version of the adjacency lists of the tokens of each stripe of
     token ids (token id `id` uses lver[(id - 1) % TG__SEQ_STRIPES]): odd
     while a writer may change them, a seqlock for edge walks (graph.c).
     The holder of the store lock opens and closes it around each list
     change with plain increments (it runs alone); a striped call (store.c,
     STRIPES) holds it odd for its whole call instead: the counter is that
     call's adjacency lock (taken by a compare-and-swap from even to odd,
     and released by one release store, store.c), so list
     changes inside it open nothing more. Why: a striped connect took
     ten locked instructions (two adjacency locks, two list sections on
     the token arena's counters, three slot sections, two unlocks, busy),
     each waiting for the stores to fresh memory before it; two writers
     ran at 0.7 of one writer's creates per CPU second (docs/benchmarks.md,
     "Concurrency"). Its own cache lines: walkers load it. */
  _Alignas(TG__LINE) uint32_t lver[TG__SEQ_STRIPES];
} tg__graph;

/* The list version (and, for striped calls, the adjacency lock) of token
   `id`'s stripe. */
static inline uint32_t *tg__graph_lver(tg__graph *g, uint32_t id) {
  return &g->lver[(id - 1u) & (TG__SEQ_STRIPES - 1u)];
}


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

/* The same for a reader without the lock: each term as it was at some
   moment during the call. */
static inline uint64_t tg__graph_memory_relaxed(const tg__graph *g) {
  return (tg__arena_live_relaxed(&g->tokens) + tg__arena_live_relaxed(&g->conns)) *
             TG__SLOT_BYTES +
         (uint64_t)TG__LOAD_RELAXED(g->nadj) * TG__ADJ_TABLE_BYTES;
}

/* Lock-free reads (any thread, no lock): copy token / connection `id` as
   it was at one moment. 1 when it was live, 0 when not. */
static inline int tg__graph_token_read(const tg__graph *g, uint32_t id, tg_token *out) {
  return tg__arena_read(&g->tokens, id, out);
}

static inline int tg__graph_conn_read(const tg__graph *g, uint32_t id, tg_connection *out) {
  return tg__arena_read(&g->conns, id, out);
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
    /* Relaxed atomic: striped updates of two tokens of one chunk may mark
       it at once (store.c, STRIPES); stored only when not yet set, so the
       line is not written per update. */
    uint8_t *d = &g->tchunk_dirty[tg__graph_token_chunk(g, id)];
    if (!__atomic_load_n(d, __ATOMIC_RELAXED)) __atomic_store_n(d, 1, __ATOMIC_RELAXED);
  }
}

/* Make room to remember n token deletes (tracking on), so the deletes
   themselves cannot fail: call before deleting tokens. 0 or TG_ENOMEM. */
int tg__graph_reserve_deletes(tg__graph *g, uint64_t n);

/* ---- writes (store lock held) --------------------------------------------
   Every change of a slot goes through these, so that a checkpoint capture
   copies the slot's unit before its first change (copy-on-write), and the
   change is a write section readers can detect. */

/* A capture is running and unit `index >> TG__CAP_UNIT_SHIFT` of `kind`
   (0: token slot index, 1: connection id - 1) may still hold what it must
   copy: copy it now (graph.c). */
void tg__capture_touch(tg__graph *g, int kind, uint32_t index);

static inline void tg__graph_will_write(tg__graph *g, int kind, uint32_t index) {
  if (__builtin_expect(g->cap != NULL, 0)) tg__capture_touch(g, kind, index);
}

/* Replace the image in the slot of live (or held) token `id` with *img. */
static inline void tg__graph_token_write(tg__graph *g, uint32_t id, const tg_token *img) {
  uint32_t i = tg__arena_index(&g->tokens, id) - 1u;
  tg__graph_will_write(g, 0, i);
  uint32_t *sq = tg__arena_stripe(&g->tokens, i);
  tg__seq_begin(sq);
  tg__slot_store(tg__arena_slot(&g->tokens, i), img);
  tg__seq_end(sq);
}

/* Release token slot t (id) with the flags its freed image keeps, in one
   write section: readers see the token live or gone, nothing between. */
static inline void tg__graph_token_release(tg__graph *g, tg_token *t, uint32_t id,
                                           uint16_t flags) {
  uint32_t i = tg__arena_index(&g->tokens, id) - 1u;
  tg__graph_will_write(g, 0, i);
  uint32_t *sq = tg__arena_stripe(&g->tokens, i);
  tg__seq_begin(sq);
  tg__slot_set_u16(t, offsetof(tg_token, flags), flags);
  tg__arena_release(&g->tokens, t, id);
  tg__seq_end(sq);
}

/* Make sure the bitmap of every connection chunk in use, and of the one the
   next connect may map, exists, so marking cannot fail: call before a
   connect while dirty tracking is on. 0 or TG_ENOMEM. */
int tg__graph_reserve_conn_dirty(tg__graph *g);

/* Note that connection `id` changed (or was deleted) since the last
   checkpoint: its bit, by id. */
static inline void tg__graph_mark_conn(tg__graph *g, uint32_t id) {
  if (g->track_dirty) {
    uint32_t i = id - 1u;
    uint64_t *w = &g->cdirty[TG__ID_CHUNK(id)][(i & TG__CHUNK_MASK) >> 6];
    uint64_t bit = 1ull << (i & 63);
    /* A striped call may share the word with another (STRIPES in
       arena.h): an atomic or then, and only when the bit is not set yet
       (a neighbour relinked since the last checkpoint has it), since a
       locked or waits for every store before it; the lock holder runs
       alone. */
    if (__builtin_expect(tg__tl_striped, 0)) {
      if (!(__atomic_load_n(w, __ATOMIC_RELAXED) & bit)) __atomic_fetch_or(w, bit, __ATOMIC_RELAXED);
    } else {
      *w |= bit;
    }
  }
}

/* Create a token from *init (NULL = zeroes) in a slot nobody can find yet
   (tg__arena_take()). Returns the slot's index, the new id being
   g->tokens.cursor; make it live with tg__graph_token_publish() once its
   record is logged, or undo it with tg__graph_token_unmake(). TG_ENOMEM or
   TG_EQUOTA (2^32 - 1 slots): nothing changed. */
static inline void tg__graph_token_write_new(tg__graph *g, const tg_token *init,
                                             uint32_t i, uint32_t id);

static inline int64_t tg__graph_token_make(tg__graph *g, const tg_token *init) {
  int64_t r = tg__arena_take(&g->tokens);
  if (__builtin_expect(r < 0, 0)) return r;
  tg__graph_token_write_new(g, init, (uint32_t)r, g->tokens.cursor);
  return r;
}

/* Write new token `id` from *init (NULL = zeroes) into slot index i, which
   no map entry names yet. Also called without the store lock by a thread
   that holds i and id in its own cache (store.c, SHARDS), while no capture
   runs: then another thread may be writing another new slot, and marks
   the same chunk dirty (hence the atomic byte). */
static inline void tg__graph_token_write_new(tg__graph *g, const tg_token *init,
                                             uint32_t i, uint32_t id) {
  tg_token *t = (tg_token *)tg__arena_slot(&g->tokens, i);
  static const tg_token zero;
  const tg_token *src = init ? init : &zero;
  uint16_t flags = (uint16_t)((src->flags & ~TG_TOKEN_DIRTY) | TG_TOKEN_ACTIVE);
  if (g->track_dirty) {
    flags |= TG_TOKEN_DIRTY;
    /* Stored only when not yet set: creates of several threads fill one
       chunk, and a store per create made its line travel between their
       cores on every create. */
    uint8_t *d = &g->tchunk_dirty[i >> TG__CHUNK_SHIFT];
    if (!__atomic_load_n(d, __ATOMIC_RELAXED)) __atomic_store_n(d, 1, __ATOMIC_RELAXED);
  }
  /* The 8 bytes at 48 (id, flags, radius, strength) as one word: patching
     id and flags into a copy and then loading it whole stalled store
     forwarding (a fifth of a create's time here). One whole-word store is
     also what a stale reader of the reused slot may see (arena.h). */
  uint64_t w6 = (uint64_t)id | (uint64_t)flags << 32 |
                (uint64_t)src->field_radius << 48 | (uint64_t)src->field_strength << 56;
  /* A capture copies the slot's unit as it was (the new token is not in
     it) before the first store; no write section: unpublished. */
  tg__graph_will_write(g, 0, i);
  tg__slot_store(t, src);
  __atomic_store_n((uint64_t *)((unsigned char *)t + offsetof(tg_token, id)), w6,
                   __ATOMIC_RELAXED);
}

/* Make the token tg__graph_token_make() wrote live: readers find it from
   now on, with its whole image. */
static inline void tg__graph_token_publish(tg__graph *g, uint32_t id, uint32_t slot) {
  tg__arena_publish(&g->tokens, id, slot);
}

/* Undo the make that returned t (its record could not be logged): the slot
   is freed and the cursor goes back, so the id is handed out again by the
   next create, as if this one had never run (nobody saw it). The chunk's
   dirty mark may stay: it only makes a checkpoint look at the chunk. */
static inline void tg__graph_token_unmake(tg__graph *g, tg_token *t, uint32_t id,
                                          uint32_t slot) {
  tg__slot_set_u16(t, offsetof(tg_token, flags), 0);
  tg__arena_untake(&g->tokens, t, slot, id);
}

/* A batch's create, at the id tg__arena_reserve() gave it: write *img
   (img->id is that id) into the reserved slot, as a create would. */
static inline tg_token *tg__graph_token_fill(tg__graph *g, const tg_token *img) {
  tg_token *t = (tg_token *)tg__arena_fill(&g->tokens, img->id);
  tg_token cp = *img;
  cp.flags = (uint16_t)((cp.flags & ~TG_TOKEN_DIRTY) | TG_TOKEN_ACTIVE);
  tg__graph_mark_token(g, &cp, img->id);
  tg__graph_token_write(g, img->id, &cp);
  return t;
}

/* A batch's connect, at the reserved id img->id: as tg__graph_connect()
   (live endpoints, type < TG_CONN_TYPES, side tables reserved, and with
   dirty tracking on, the bitmap of the id's chunk reserved). */
void tg__graph_conn_fill(tg__graph *g, const tg_connection *img);

/* Copy into *n the fields tg_connection_update() changes, from *img. */
static inline void tg__conn_take_mutable(tg_connection *n, const tg_connection *img) {
  n->weight = img->weight;
  n->pull_strength = img->pull_strength;
  n->activation_count = img->activation_count;
  n->last_activated = img->last_activated;
  n->confidence = img->confidence;
  n->flags = img->flags;
}

/* Take the fields tg_connection_update() changes from *img into live
   connection img->id, whose endpoints img must name. 0, TG_ENOTFOUND,
   TG_EINVAL (other endpoints: nothing changed). */
static inline int tg__graph_conn_update(tg__graph *g, const tg_connection *img) {
  tg_connection *c = tg__graph_conn(g, img->id);
  if (!c) return TG_ENOTFOUND;
  if (c->from != img->from || c->to != img->to) return TG_EINVAL;
  tg_connection n = *c; /* plain: only the writer stores here */
  tg__conn_take_mutable(&n, img);
  /* One write section: readers see the old image or the new one. The
     links do not change, so the lists' versions do not either. */
  tg__graph_will_write(g, 1, img->id - 1u);
  uint32_t *sq = tg__arena_stripe(&g->conns, tg__arena_index(&g->conns, img->id) - 1u);
  tg__seq_begin(sq);
  tg__slot_store(c, &n);
  tg__seq_end(sq);
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

/* The store's prefaulter: map and fault a side-table region ahead, once
   the graph has a table (a store that never connects pays nothing). Any
   thread, no lock. */
void tg__graph_prefault_adj(tg__graph *g);

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

/* ---- striped writes (store.c, STRIPES) --------------------------------------
 * Without the store lock, by a thread inside a striped call
 * (tg__tl_striped set) that holds the adjacency locks of both endpoints:
 * every link of a connection changes only under the lock of the endpoint
 * whose list it threads (out links: `from`, in links: `to`), a token's
 * list heads and degrees only under its own. No capture runs meanwhile. */

/* Connect as tg__graph_connect() does, at id `id` and slot index `slot`
   from the thread's cache (tg__arena_take_ids(), tg__arena_take_slots():
   the id counted in its map chunk, the slot counted live by the caller's
   quota credit). */
void tg__graph_connect_held(tg__graph *g, const tg_connection *init, uint32_t id,
                            uint32_t slot);

/* Disconnect live connection `id` as tg__graph_disconnect() does, but keep
   its slot (tg__arena_release_held()): returns the slot's index for the
   thread's cache. */
uint32_t tg__graph_disconnect_held(tg__graph *g, uint32_t id);

/* Walk a token's connections (see tg_token_edges), without any lock: any
   thread, while one writer changes the graph. Each connection is delivered
   as a copy. Sees every connection that was on the list for the whole walk,
   exactly once; one made or removed during the walk may or may not be seen;
   a connection changed during the walk is seen with one of its images.
   0, the callback's non-zero value, TG_ENOTFOUND (token not live at the
   start), TG_ENOMEM (a walk restarted and could not remember what it had
   delivered). */
int tg__graph_edges(const tg__graph *g, uint32_t id, int direction,
                    tg_edge_cb cb, void *arg);

/* ---- checkpoint capture ---------------------------------------------------
 * A capture copies what a checkpoint must write (every DIRTY token and
 * marked connection, or every live record when full) as of the moment it
 * begins, while writers keep going. Token slots (by slot index, where the
 * DIRTY flags are) and connection ids (where the marks are) are divided
 * into units of TG__CAP_UNIT. Begin (store lock held, O(units)) notes which units
 * hold something to copy; the checkpointer then copies them one unit per
 * short lock hold (tg__capture_step, from a copy read without the lock by
 * tg__capture_stage), and a writer about to change a slot
 * of a unit not yet copied copies that unit first (tg__capture_touch):
 * copy-on-write, so the capture is exactly the state at begin and replay
 * after its LSN stays an exact re-execution. Copying a unit clears the
 * marks it copied, as the old whole-graph copy did. */
#define TG__CAP_UNIT_SHIFT 12u
#define TG__CAP_UNIT (1u << TG__CAP_UNIT_SHIFT) /* 4096 slots, 256 KiB */

#define TG__CAP_SPARES 4u

typedef struct tg__cap_unit {
  unsigned char *recs;   /* live images, 64 bytes each (connections in
                            ascending ids, tokens in slot order) */
  uint32_t *dels;        /* ids whose delete the checkpoint records */
  uint32_t nrec, ndel;
} tg__cap_unit;

struct tg__capture {
  int full;              /* every live record (the file is rewritten) */
  uint32_t hw[2];        /* token slots in use (`next`) / connection ids
                            that may be live, at begin */
  uint32_t nunits[2];    /* units below hw */
  uint32_t tokens_hw, conns_hw; /* the arenas' id cursors at begin */
  int tokens_wrapped, conns_wrapped; /* and whether they wrapped */
  uint32_t *tdel;        /* token deletes before begin (ids) */
  size_t ntdel, captdel;
  uint8_t *pending[2];   /* per unit: 1 = still to copy */
  tg__cap_unit *units[2];
  uint32_t cursor[2];    /* the checkpointer's next unit */
  int err;               /* a copy failed (TG_ENOMEM): the capture is void */
  uint64_t nrec[2], ndel[2]; /* totals copied */
  /* The checkpointer's own (tg__capture_stage, outside the lock): the next
     pending unit's slots as read without the lock, and buffers it made
     ready for the next step to hand to the pool. */
  unsigned char *stage_buf; /* room for a whole unit: the staged records
                            (tokens: those the capture takes, DIRTY
                            cleared; connections: every live one) */
  uint32_t stage_n;      /* records in stage_buf */
  uint16_t stage_pos[TG__CAP_UNIT]; /* connections: each one's offset in
                            the unit */
  uint64_t stage_bits[TG__CAP_UNIT / 64u]; /* tokens: slots with DIRTY set;
                            connections: offsets live */
  int staged, stage_kind;
  uint32_t stage_unit;
  unsigned char *fresh[TG__CAP_SPARES];
  /* Store lock: pre-faulted buffers of a whole unit that copies take their
     records in (a writer's copy-on-write included), so no copy maps or
     faults memory while the lock is held. */
  unsigned char *spares[TG__CAP_SPARES];
  uint32_t nspares;
};

/* Start capturing (store lock held; track_dirty on). 0 or TG_ENOMEM. */
int tg__capture_begin(tg__graph *g, tg__capture *cap, int full);

/* Outside the store lock, by the thread that steps the capture: read the
   next pending unit's slots with seqlock reads into the capture's stage,
   and pre-fault spare record buffers, so that the next step's lock hold
   only checks that no writer copied the unit meanwhile (then nothing in it
   changed since begin, so the staged images are the unit as of begin),
   takes the images from cache and clears the marks. 0, or TG_ENOMEM (then
   the step copies under the lock as before). */
int tg__capture_stage(const tg__graph *g, tg__capture *cap);

/* Copy up to `units` pending units (store lock held), the staged one
   from its stage. Returns 1 while units remain, 0 when the capture is
   complete, or the error that voided it (then it has been ended, its
   marks restored). */
int tg__capture_step(tg__graph *g, tg__capture *cap, uint32_t units);

/* Stop copy-on-write (store lock held): after the last step. */
void tg__capture_end(tg__graph *g, tg__capture *cap);

/* Mark again everything a finished capture copied (its checkpoint could
   not be written), so the next checkpoint takes it (store lock held). */
void tg__capture_remark(tg__graph *g, const tg__capture *cap);

/* Release the capture's memory. Safe on a zeroed capture. */
void tg__capture_free(tg__capture *cap);

/* Call fn for every live token in slot order (not id order); a non-zero
   return stops the walk and is returned. fn must not create or delete
   tokens. */
int tg__graph_foreach_token(const tg__graph *g,
                            int (*fn)(void *arg, const tg_token *t), void *arg);

#endif /* TG_TOKEN_GRAPH_H */
