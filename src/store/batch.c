/*
 * Atomic write batches (tg_batch_*), and the durable position
 * (tg_durable_lsn, tg_wait_durable, tg_last_lsn).
 *
 * A batch is built, outside the store lock, as the payload of the one WAL
 * record it will be (TG_REC_BATCH, docs/store-format.md): a u32 count, a
 * u32 zero, then the entries, each a u32 type and the payload a single
 * call of that kind logs. One record is one frame with one CRC, so the WAL
 * needs nothing new to keep a batch whole: a frame the crash cut short is
 * a torn tail, the ring file and segment switches move a record whole, and
 * the reader never yields part of one (docs/wal-format.md). Replay applies
 * the entries in order (durable.c).
 *
 * Ids are final at the call: tg_batch_token_create() and tg_batch_connect()
 * take a slot from the arena under the store lock (tg__arena_reserve()),
 * which no create can get and no read can see until the commit fills it or
 * the batch gives it back. A store holds at most TG_BATCH_MAX_RESERVED such
 * ids; replay accepts ids that far past the ones it has seen
 * (tg__arena_may_replay()), since a held id is logged after ids handed out
 * later.
 *
 * Commit, under the store lock: every entry is checked against the store
 * as it is, with the batch's earlier entries applied to a side map (struct
 * tg__idmap: which tokens and connections exist at that point, how each
 * token's degree changed), never to the graph; then the quotas, once, for
 * the state after the batch; then memory (the single calls' pressure
 * policy, sparing every token the batch names); then the side tables the
 * connects need; then the record is logged; and only then are the entries
 * applied, with the graph functions the single calls use, none of which can
 * fail at that point. So a failure anywhere changes nothing and logs
 * nothing.
 *
 * Handles: a store keeps the handles it made (batch_all) and reuses ended
 * ones (batch_free), so a steady stream of batches allocates nothing once
 * their buffers have grown, and an ended handle stays valid memory (calls
 * on it fail with TG_EINVAL) until it is handed out again. Lock order:
 * batch_mu is never held with another lock.
 */
#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/platform.h"
#include "store/store_internal.h"

_Static_assert(TG_BATCH_MAX_RESERVED == TG__ARENA_RESERVE_MAX,
               "replay's bound is the number of ids batches may hold");
#define HDR 8u                    /* count, zero */
#define ENTRY_HDR 4u              /* u32 type */
_Static_assert((uint64_t)TG_BATCH_MAX_ENTRIES * (ENTRY_HDR + 64) + HDR <= TG_WAL_MAX_PAYLOAD,
               "a full batch fits in one WAL record");

/* ---- the side map ------------------------------------------------------- */

enum { ST_NEW = 0, ST_LIVE = 1, ST_GONE = 2, ST_HELD = 3 };

typedef struct idslot {
  uint32_t key;     /* id; 0 = empty slot */
  uint8_t state;    /* ST_*: whether it exists at this point of the batch */
  int32_t ddeg;     /* tokens: degree change by the batch so far */
  uint32_t aux;     /* tokens: connects of the batch touching it;
                       connections created by the batch: payload offset of
                       their entry */
} idslot;

struct tg__idmap {
  idslot *v;        /* cap slots, open addressing, linear probing */
  uint32_t cap;     /* a power of two, or 0 */
  uint32_t n;       /* keys present */
};

static inline uint32_t idhash(uint32_t key, uint32_t cap) {
  return (key * 0x9E3779B1u) & (cap - 1u); /* Fibonacci hashing */
}

static idslot *idmap_find(const struct tg__idmap *m, uint32_t key) {
  if (!m->cap) return NULL;
  for (uint32_t i = idhash(key, m->cap);; i = (i + 1u) & (m->cap - 1u)) {
    if (m->v[i].key == key) return &m->v[i];
    if (!m->v[i].key) return NULL;
  }
}

int tg__idmap_has(const struct tg__idmap *m, uint32_t key) {
  return idmap_find(m, key) != NULL;
}

/* Empty the map with room for `want` keys at under half load; a map that
   grew far past that for one large batch shrinks again. */
static int idmap_reset(struct tg__idmap *m, uint64_t want) {
  uint64_t cap = 64;
  while (cap < 2 * want) cap <<= 1;
  if (cap > (1u << 30)) return TG_ENOMEM;
  if (m->cap < cap || m->cap > 8 * cap) {
    idslot *v = calloc(cap, sizeof *v);
    if (!v) return TG_ENOMEM;
    free(m->v);
    m->v = v;
    m->cap = (uint32_t)cap;
  } else {
    memset(m->v, 0, (size_t)m->cap * sizeof *m->v);
  }
  m->n = 0;
  return 0;
}

static int idmap_grow(struct tg__idmap *m) {
  if (m->cap >= (1u << 30)) return TG_ENOMEM;
  uint32_t cap = m->cap * 2u;
  idslot *v = calloc(cap, sizeof *v);
  if (!v) return TG_ENOMEM;
  for (uint32_t i = 0; i < m->cap; i++) {
    if (!m->v[i].key) continue;
    uint32_t j = idhash(m->v[i].key, cap);
    while (v[j].key) j = (j + 1u) & (cap - 1u);
    v[j] = m->v[i];
  }
  free(m->v);
  m->v = v;
  m->cap = cap;
  return 0;
}

/* The slot of key, added (state ST_NEW) when missing; NULL: no memory. */
static idslot *idmap_get(struct tg__idmap *m, uint32_t key) {
  idslot *e = idmap_find(m, key);
  if (e) return e;
  if (2u * (m->n + 1u) > m->cap && idmap_grow(m)) return NULL;
  uint32_t i = idhash(key, m->cap);
  while (m->v[i].key) i = (i + 1u) & (m->cap - 1u);
  m->v[i].key = key;
  m->n++;
  return &m->v[i];
}

/* ---- handles ------------------------------------------------------------ */

struct tg_batch {
  tg_store *s;
  struct tg_batch *next_all;  /* s->batch_all list (batch_mu) */
  struct tg_batch *next_free; /* s->batch_free list (batch_mu) */
  int open;                   /* 1 between begin and commit/abort */
  unsigned char *buf;         /* the TG_REC_BATCH payload being built */
  size_t len, cap;            /* bytes used (>= HDR), allocated */
  uint32_t count;             /* entries */
  uint32_t *held;             /* ids this batch holds: tokens and
                                 connections, told apart by held_conn */
  uint8_t *held_conn;         /* 1: held[i] is a connection id */
  size_t nheld, capheld;
  struct tg__idmap toks, conns, chunks; /* commit's side maps */
};

static _Atomic uint64_t store_serials = 1;

int tg__batch_init(tg_store *s) {
  if (pthread_mutex_init(&s->batch_mu, NULL)) return TG_ENOMEM;
  /* Relaxed: the serial only has to be unique, not ordered. */
  s->serial = atomic_fetch_add_explicit(&store_serials, 1, memory_order_relaxed);
  return 0;
}

void tg__batch_fini(tg_store *s) {
  if (!s->serial) return; /* never initialised (serials start at 1) */
  for (tg_batch *b = s->batch_all, *n; b; b = n) {
    n = b->next_all;
    free(b->buf);
    free(b->held);
    free(b->held_conn);
    free(b->toks.v);
    free(b->conns.v);
    free(b->chunks.v);
    free(b);
  }
  s->batch_all = s->batch_free = NULL;
  pthread_mutex_destroy(&s->batch_mu);
  s->serial = 0;
}

int tg_batch_begin(tg_store *s, tg_batch **out) {
  if (!s || !out) return TG_EINVAL;
  TG__CALL_GUARD(s);
  *out = NULL;
  /* A batch could only fail to commit (a read-only handle, a replica). */
  if (__atomic_load_n(&s->writes_refused, __ATOMIC_RELAXED)) return TG_EREADONLY;
  pthread_mutex_lock(&s->batch_mu);
  tg_batch *b = s->batch_free;
  if (b) {
    s->batch_free = b->next_free;
  } else if ((b = calloc(1, sizeof *b))) {
    b->s = s;
    b->next_all = s->batch_all;
    s->batch_all = b;
  }
  pthread_mutex_unlock(&s->batch_mu);
  if (!b) return TG_ENOMEM;
  b->open = 1;
  b->len = HDR;
  b->count = 0;
  b->nheld = 0;
  *out = b;
  return 0;
}

/* The batch is over: its handle goes back to the pool. */
static void batch_end(tg_batch *b) {
  tg_store *s = b->s;
  b->open = 0;
  pthread_mutex_lock(&s->batch_mu);
  b->next_free = s->batch_free;
  s->batch_free = b;
  pthread_mutex_unlock(&s->batch_mu);
}

/* Give back every id the batch holds (store lock held). */
static void release_held(tg_batch *b) {
  tg_store *s = b->s;
  TG__ASSERT_LOCKED(s);
  /* Newest first: ids that are still the last ones handed out go back
     to the cursor, one after the other (tg__arena_unreserve()). */
  for (size_t i = b->nheld; i-- > 0;)
    tg__arena_unreserve(b->held_conn[i] ? &s->g.conns : &s->g.tokens, b->held[i]);
  assert(s->batch_held >= b->nheld);
  s->batch_held -= (uint32_t)b->nheld;
  b->nheld = 0;
}

void tg_batch_abort(tg_batch *b) {
  if (!b || !b->open) return;
  tg_store *s = b->s;
  TG__CALL_GUARD(s);
  if (b->nheld) {
    tg__store_lock(s);
    release_held(b);
    tg__store_unlock(s);
  }
  batch_end(b);
}

/* Room for one more entry of `n` payload bytes (and, hold: one more held
   id), before anything is taken, so a failure leaves the batch as it was. */
static int batch_room(tg_batch *b, size_t n, int hold) {
  if (!b || !b->open) return TG_EINVAL;
  if (b->count >= TG_BATCH_MAX_ENTRIES) return TG_EQUOTA;
  size_t need = b->len + ENTRY_HDR + n;
  if (need > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < need) cap *= 2;
    unsigned char *p = realloc(b->buf, cap);
    if (!p) return TG_ENOMEM;
    b->buf = p;
    b->cap = cap;
  }
  if (hold && b->nheld == b->capheld) {
    size_t cap = b->capheld ? b->capheld * 2 : 64;
    uint32_t *h = realloc(b->held, cap * sizeof *h);
    if (!h) return TG_ENOMEM;
    b->held = h;
    uint8_t *hc = realloc(b->held_conn, cap);
    if (!hc) return TG_ENOMEM;
    b->held_conn = hc;
    b->capheld = cap;
  }
  return 0;
}

static void batch_put(tg_batch *b, uint32_t type, const void *p, size_t n) {
  memcpy(b->buf + b->len, &type, ENTRY_HDR);
  memcpy(b->buf + b->len + ENTRY_HDR, p, n);
  b->len += ENTRY_HDR + n;
  b->count++;
}

/* Hold a new id from the token (conn = 0) or connection arena. */
static int hold_id(tg_batch *b, int conn, uint32_t *id) {
  tg_store *s = b->s;
  int rc;
  tg__store_lock(s);
  if (s->batch_held >= TG_BATCH_MAX_RESERVED) {
    rc = TG_EQUOTA;
  } else if (!(rc = tg__arena_reserve(conn ? &s->g.conns : &s->g.tokens, id))) {
    s->batch_held++;
    b->held[b->nheld] = *id;
    b->held_conn[b->nheld] = (uint8_t)conn;
    b->nheld++;
  }
  tg__store_unlock(s);
  return rc;
}

int tg_batch_token_create(tg_batch *b, const tg_token *init, uint32_t *id) {
  if (!id) return TG_EINVAL;
  int rc = batch_room(b, sizeof(tg_token), 1);
  if (rc) return rc;
  TG__CALL_GUARD(b->s);
  tg_token t;
  if (init)
    t = *init;
  else
    memset(&t, 0, sizeof t);
  if ((rc = hold_id(b, 0, &t.id))) return rc;
  t.flags = (uint16_t)((t.flags & ~TG_TOKEN_DIRTY) | TG_TOKEN_ACTIVE);
  batch_put(b, TG_REC_TOKEN_PUT, &t, sizeof t);
  *id = t.id;
  return 0;
}

int tg_batch_token_update(tg_batch *b, const tg_token *t) {
  if (!t || !t->id) return TG_EINVAL;
  int rc = batch_room(b, sizeof *t, 0);
  if (rc) return rc;
  tg_token img = *t;
  img.flags = (uint16_t)((img.flags & ~TG_TOKEN_DIRTY) | TG_TOKEN_ACTIVE);
  batch_put(b, TG_REC_TOKEN_PUT, &img, sizeof img);
  return 0;
}

static int add_delete(tg_batch *b, uint32_t type, uint32_t id) {
  if (!id) return TG_EINVAL;
  int rc = batch_room(b, sizeof id, 0);
  if (rc) return rc;
  batch_put(b, type, &id, sizeof id);
  return 0;
}

int tg_batch_token_delete(tg_batch *b, uint32_t id) {
  return add_delete(b, TG_REC_TOKEN_DEL, id);
}

int tg_batch_disconnect(tg_batch *b, uint32_t id) {
  return add_delete(b, TG_REC_CONN_DEL, id);
}

int tg_batch_connect(tg_batch *b, const tg_connection *init, uint32_t *id) {
  if (!init || !id || !init->from || !init->to || init->type >= TG_CONN_TYPES)
    return TG_EINVAL;
  int rc = batch_room(b, sizeof *init, 1);
  if (rc) return rc;
  TG__CALL_GUARD(b->s);
  tg_connection c = *init; /* as tg__graph_connect() copies it */
  c.next_out = c.prev_out = c.next_in = c.prev_in = 0;
  c.reserved0 = 0;
  c.reserved1 = 0;
  c.reserved2 = 0;
  if ((rc = hold_id(b, 1, &c.id))) return rc;
  batch_put(b, TG_REC_CONN_PUT, &c, sizeof c);
  *id = c.id;
  return 0;
}

/* ---- commit ------------------------------------------------------------- */

/* A token's state at this point of the batch (resolving it from the graph
   the first time); NULL: no memory. */
static idslot *tok(tg_batch *b, uint32_t id) {
  idslot *e = idmap_get(&b->toks, id);
  if (e && e->state == ST_NEW)
    e->state = tg__graph_token(&b->s->g, id) ? ST_LIVE : ST_GONE;
  return e;
}

static idslot *conn(tg_batch *b, uint32_t id) {
  idslot *e = idmap_get(&b->conns, id);
  if (e && e->state == ST_NEW)
    e->state = tg__graph_conn(&b->s->g, id) ? ST_LIVE : ST_GONE;
  return e;
}

/* The endpoints of a connection that exists at this point: the batch's
   own entry for one it creates, else the graph's. */
static void conn_ends(tg_batch *b, const idslot *c, uint32_t *from, uint32_t *to) {
  if (c->aux) {
    memcpy(from, b->buf + c->aux + offsetof(tg_connection, from), 4);
    memcpy(to, b->buf + c->aux + offsetof(tg_connection, to), 4);
  } else {
    const tg_connection *g = tg__graph_conn(&b->s->g, c->key);
    *from = g->from;
    *to = g->to;
  }
}

typedef struct tally {
  uint64_t tokens_made, tokens_gone;
  uint64_t conns_made, conns_gone;
  int err;                       /* TG_ENOMEM from a map */
} tally;

/* Connection c (existing) goes: both endpoints lose a degree. */
static int drop_conn(tg_batch *b, idslot *c, tally *t) {
  uint32_t from, to;
  conn_ends(b, c, &from, &to);
  c->state = ST_GONE;
  t->conns_gone++;
  idslot *f = tok(b, from);
  if (!f) return TG_ENOMEM;
  f->ddeg--;
  idslot *e = tok(b, to);
  if (!e) return TG_ENOMEM;
  e->ddeg--;
  return 0;
}

typedef struct drop_ctx {
  tg_batch *b;
  tally *t;
} drop_ctx;

static int drop_graph_edge(void *arg, const tg_connection *gc) {
  drop_ctx *d = arg;
  idslot *c = conn(d->b, gc->id);
  if (!c) return TG_ENOMEM;
  return c->state == ST_LIVE ? drop_conn(d->b, c, d->t) : 0;
}

/* Check every entry in order against the store and the entries before
   it; count what the batch makes and removes. 0, TG_ENOTFOUND, TG_ENOMEM. */
static int check_entries(tg_batch *b, tally *t) {
  tg_store *s = b->s;
  int rc;
  memset(t, 0, sizeof *t);
  if ((rc = idmap_reset(&b->toks, 3u * b->count)) ||
      (rc = idmap_reset(&b->conns, b->count)))
    return rc;
  for (size_t i = 0; i < b->nheld; i++) {
    idslot *e = idmap_get(b->held_conn[i] ? &b->conns : &b->toks, b->held[i]);
    if (!e) return TG_ENOMEM;
    e->state = ST_HELD;
  }
  for (size_t off = HDR; off < b->len;) {
    uint32_t type, id;
    memcpy(&type, b->buf + off, 4);
    size_t body = off + ENTRY_HDR;
    idslot *e;
    switch (type) {
    case TG_REC_TOKEN_PUT:
      memcpy(&id, b->buf + body + offsetof(tg_token, id), 4);
      if (!(e = tok(b, id))) return TG_ENOMEM;
      if (e->state == ST_HELD) { /* its create */
        e->state = ST_LIVE;
        t->tokens_made++;
      } else if (e->state != ST_LIVE) {
        return TG_ENOTFOUND;
      }
      off = body + sizeof(tg_token);
      break;
    case TG_REC_TOKEN_DEL:
      memcpy(&id, b->buf + body, 4);
      if (!(e = tok(b, id))) return TG_ENOMEM;
      if (e->state != ST_LIVE) return TG_ENOTFOUND;
      e->state = ST_GONE;
      t->tokens_gone++;
      /* Its connections go with it: the graph's, then the batch's own. */
      if (tg__graph_token(&s->g, id)) {
        drop_ctx d = {b, t};
        rc = tg__graph_edges(&s->g, id, TG_BOTH, drop_graph_edge, &d);
        if (rc) return rc;
        e = tok(b, id); /* the map may have grown */
      }
      if (e->aux) {
        for (size_t h = 0; h < b->nheld; h++) {
          if (!b->held_conn[h]) continue;
          idslot *c = idmap_find(&b->conns, b->held[h]);
          uint32_t from, to;
          if (c->state != ST_LIVE) continue;
          conn_ends(b, c, &from, &to);
          if ((from == id || to == id) && (rc = drop_conn(b, c, t))) return rc;
        }
      }
      off = body + 4;
      break;
    case TG_REC_CONN_PUT: {
      tg_connection c;
      memcpy(&c, b->buf + body, sizeof c);
      idslot *f = tok(b, c.from), *to;
      if (!f) return TG_ENOMEM;
      if (f->state != ST_LIVE) return TG_ENOTFOUND;
      if (!(to = tok(b, c.to))) return TG_ENOMEM;
      if (to->state != ST_LIVE) return TG_ENOTFOUND;
      f = tok(b, c.from); /* the map may have grown */
      f->ddeg++;
      f->aux++;
      to->ddeg++;
      to->aux++;
      if (!(e = conn(b, c.id))) return TG_ENOMEM;
      assert(e->state == ST_HELD);
      e->state = ST_LIVE;
      e->aux = (uint32_t)body;
      t->conns_made++;
      off = body + sizeof c;
      break;
    }
    default: /* TG_REC_CONN_DEL: the builder writes no other type */
      assert(type == TG_REC_CONN_DEL);
      memcpy(&id, b->buf + body, 4);
      if (!(e = conn(b, id))) return TG_ENOMEM;
      if (e->state != ST_LIVE) return TG_ENOTFOUND;
      if ((rc = drop_conn(b, e, t))) return rc;
      off = body + 4;
      break;
    }
  }
  return 0;
}

/* The quotas, for the state after the batch. 0 or TG_EQUOTA (counted and
   recorded as a single call's rejection is). *need: memory it adds. */
static int check_quotas(tg_batch *b, const tally *t, uint64_t *need) {
  tg_store *s = b->s;
  tg__guardian *gd = &s->gd;
  tg__graph *g = &s->g;
  uint64_t tokens = g->tokens.live + t->tokens_made - t->tokens_gone;
  uint64_t conns = g->conns.live + t->conns_made - t->conns_gone;
  gd->checks += t->tokens_made + t->conns_made;
  *need = 0;
  if (tokens > gd->max_tokens && tokens > g->tokens.live) {
    tg__store_quota_reject(s, TG_QUOTA_TOKENS, tokens, gd->max_tokens, 0);
    return TG_EQUOTA;
  }
  if (conns > gd->max_connections && conns > g->conns.live) {
    tg__store_quota_reject(s, TG_QUOTA_CONNECTIONS, conns, gd->max_connections, 0);
    return TG_EQUOTA;
  }
  /* Degrees of the tokens the batch connects, and the side tables their
     chunks still lack (each token chunk has one, 512 KiB). */
  uint64_t tables = 0;
  if (t->conns_made && idmap_reset(&b->chunks, 64)) return TG_ENOMEM;
  for (uint32_t i = 0; i < b->toks.cap; i++) {
    const idslot *e = &b->toks.v[i];
    if (!e->key) continue;
    if (e->aux) {
      uint32_t c = tg__graph_token_chunk(g, e->key); /* live or held: mapped */
      if (!g->adj[c]) {
        idslot *ce = idmap_get(&b->chunks, c + 1u);
        if (!ce) return TG_ENOMEM;
        if (ce->state == ST_NEW) {
          ce->state = ST_LIVE;
          tables++;
        }
      }
    }
    if (e->state != ST_LIVE || e->ddeg <= 0) continue;
    uint64_t deg = tg__graph_degree(g, e->key) + (uint64_t)e->ddeg;
    if (deg > gd->max_degree) {
      tg__store_quota_reject(s, TG_QUOTA_DEGREE, deg, gd->max_degree, e->key);
      return TG_EQUOTA;
    }
  }
  uint64_t now = tg__graph_memory(g);
  uint64_t after = (tokens + conns) * TG__SLOT_BYTES +
                   ((uint64_t)g->nadj + tables) * TG__ADJ_TABLE_BYTES;
  *need = after > now ? after - now : 0;
  return 0;
}

/* Apply the checked entries to the graph: nothing here can fail. */
static void apply_entries(tg_batch *b) {
  tg__graph *g = &b->s->g;
  for (size_t off = HDR; off < b->len;) {
    uint32_t type, id;
    memcpy(&type, b->buf + off, 4);
    const unsigned char *p = b->buf + off + ENTRY_HDR;
    switch (type) {
    case TG_REC_TOKEN_PUT: {
      tg_token img;
      memcpy(&img, p, sizeof img);
      tg_token *cur = tg__graph_token(g, img.id);
      if (cur) { /* an update, as tg_token_update() */
        tg__graph_mark_token(g, &img, img.id);
        tg__graph_token_write(g, img.id, &img); /* a write section: READS */
      } else { /* the create of an id the batch holds */
        tg__graph_token_fill(g, &img);
      }
      off += ENTRY_HDR + sizeof img;
      break;
    }
    case TG_REC_TOKEN_DEL:
      memcpy(&id, p, 4);
      tg__graph_token_delete(g, id, NULL);
      off += ENTRY_HDR + 4;
      break;
    case TG_REC_CONN_PUT: {
      tg_connection c;
      memcpy(&c, p, sizeof c);
      tg__graph_conn_fill(g, &c);
      off += ENTRY_HDR + sizeof c;
      break;
    }
    default: /* TG_REC_CONN_DEL */
      memcpy(&id, p, 4);
      tg__graph_disconnect(g, id);
      off += ENTRY_HDR + 4;
      break;
    }
  }
}

/* Everything a commit does under the store lock. */
static int commit_locked(tg_batch *b, uint64_t *lsn) {
  tg_store *s = b->s;
  TG__ASSERT_LOCKED(s);
  tally t;
  uint64_t need;
  /* The quota checks below are exact: the threads' unused credit, counted
     as tokens until now, goes back first (store.c, SHARDS). */
  tg__store_reclaim_credit(s);
  int rc = check_entries(b, &t);
  if (!rc) rc = check_quotas(b, &t, &need);
  if (rc) return rc;
  if (need) {
    /* The pressure policy may evict; it spares every token the batch
       names (endpoints of the connections it removes included), so what
       was checked above still holds. */
    s->evict_keep = &b->toks;
    rc = tg__store_admit_memory(s, need);
    s->evict_keep = NULL;
    if (rc) return rc;
  }
  /* What the connects need, so that applying cannot fail halfway. */
  for (size_t off = HDR; off < b->len;) {
    uint32_t type;
    memcpy(&type, b->buf + off, 4);
    if (type == TG_REC_CONN_PUT) {
      tg_connection c;
      memcpy(&c, b->buf + off + ENTRY_HDR, sizeof c);
      if ((rc = tg__graph_reserve_adj(&s->g, c.from, c.to))) return rc;
      off += ENTRY_HDR + sizeof c;
    } else {
      off += ENTRY_HDR + (type == TG_REC_TOKEN_PUT ? sizeof(tg_token) : 4u);
    }
  }
  if (t.conns_made && s->g.track_dirty && (rc = tg__graph_reserve_conn_dirty(&s->g)))
    return rc;
  if (t.tokens_gone && (rc = tg__graph_reserve_deletes(&s->g, t.tokens_gone))) return rc;
  memcpy(b->buf, &b->count, 4);
  memset(b->buf + 4, 0, 4);
  if (s->wal && (rc = tg__store_log(s, TG_REC_BATCH, b->buf, b->len, lsn))) return rc;
  apply_entries(b);
  if (t.tokens_gone || t.conns_gone)
    tg__guardian_released(&s->gd, tg__graph_memory(&s->g));
  TG__STORE_RELAXED(s->tokens_batched, s->tokens_batched + t.tokens_made);
  TG__STORE_RELAXED(s->connections_batched, s->connections_batched + t.conns_made);
  /* Every held id is now filled (and perhaps deleted again). */
  s->batch_held -= (uint32_t)b->nheld;
  b->nheld = 0;
  return 0;
}

int tg_batch_commit(tg_batch *b) {
  if (!b || !b->open) return TG_EINVAL;
  tg_store *s = b->s;
  TG__CALL_GUARD(s);
  if (b->count == 0) {
    batch_end(b);
    return 0;
  }
  uint64_t lsn = 0;
  tg__store_strict_enter(s);
  tg__store_lock(s);
  int rc = commit_locked(b, &lsn);
  if (rc) release_held(b);
  tg__store_unlock(s);
  rc = tg__store_strict_wait(s, rc, lsn);
  batch_end(b);
  return rc;
}

/* ---- the durable position ----------------------------------------------- */

/* Each thread remembers its last LSN for the stores it mutated most
   recently, most recent first; a store is known by its serial, never its
   address, which a later open may reuse. */
#define LAST_STORES 8
static _Thread_local struct {
  uint64_t serial, lsn;
} last_lsn[LAST_STORES];

void tg__note_last_lsn(tg_store *s, uint64_t lsn) {
  if (last_lsn[0].serial == s->serial) {
    last_lsn[0].lsn = lsn;
    return;
  }
  int i = 1;
  while (i < LAST_STORES - 1 && last_lsn[i].serial != s->serial) i++;
  memmove(&last_lsn[1], &last_lsn[0], (size_t)i * sizeof last_lsn[0]);
  last_lsn[0].serial = s->serial;
  last_lsn[0].lsn = lsn;
}

uint64_t tg_last_lsn(tg_store *s) {
  if (!s) return 0;
  for (int i = 0; i < LAST_STORES; i++)
    if (last_lsn[i].serial == s->serial) return last_lsn[i].lsn;
  return 0;
}

uint64_t tg_durable_lsn(tg_store *s) {
  if (!s || !s->wal) return 0;
  tg_wal_stats ws;
  tg_wal_stats_get(s->wal, &ws);
  return ws.durable_lsn;
}

int tg_wait_durable(tg_store *s, uint64_t lsn) {
  if (!s) return TG_EINVAL;
  TG__CALL_GUARD(s);
  if (!lsn) return 0;
  if (!s->wal) return TG_EINVAL;
  int rc = tg_wal_sync(s->wal, lsn);
  if (rc) tg__store_note_log_failure(s, rc);
  return rc;
}
