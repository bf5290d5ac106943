/*
 * A structural check of an LMDB 0.9 data file, before LMDB maps it.
 *
 * Why: LMDB trusts data.mdb completely. A damaged file makes it divide by
 * a zero page size (SIGFPE), follow a page number past the end of the map
 * (SIGSEGV, or SIGBUS past the end of a truncated file), assert on a page
 * of the wrong type (IS_LEAF, SIGABRT) or walk a cycle of branch pages for
 * ever (mdb_dbi_open). The checkpoint is input the store did not
 * necessarily write, so it is read here first, with pread and a bound on
 * every number, and LMDB gets the file only when every page it will touch
 * has been seen to be well formed. This costs one extra read of the file
 * at open (the load reads it again through LMDB); the alternatives were a
 * child process with a time limit (fork in a library whose caller may have
 * threads, and a time limit that must tell a hang from a large checkpoint)
 * or a second reader of the B-tree that replaces LMDB's (the next
 * checkpoint writes through LMDB and walks the same trees anyway, so they
 * must be checked either way).
 *
 * The layout read here is LMDB 0.9's (MDB_DATA_VERSION 1) on a 64-bit
 * little-endian host, the one liblmdb 0.9 writes:
 *
 *   page header, 16 bytes: u64 pgno, u16 pad, u16 flags, u16 lower,
 *     u16 upper (an overflow page: u32 page count at offset 12);
 *     lower - 16 is twice the number of nodes; u16 node offsets follow.
 *   meta (pages 0 and 1, after the header): u32 magic 0xBEEFC0DE,
 *     u32 version, u64 address, u64 mapsize, two 48-byte database records
 *     (free, main), u64 last page, u64 txnid. The one with the larger
 *     txnid is current (meta 0 on a tie), as mdb_env_read_header() picks.
 *   database record, 48 bytes: u32 pad (the page size, in the free
 *     database's record), u16 flags, u16 depth, u64 branch, leaf and
 *     overflow page counts, u64 entries, u64 root (~0: empty).
 *   node, 8 bytes + key + data: u16 lo, u16 hi, u16 flags, u16 key size;
 *     a leaf's data size is lo | hi << 16, a branch's child page
 *     lo | hi << 16 | flags << 32. F_BIGDATA (1): the data is on overflow
 *     pages, the node holds their first page number; F_SUBDATA (2): the
 *     data is a named database's record.
 *
 * What is checked, besides the bounds of every read: both meta pages are
 * meta pages of this magic and version with the same power-of-two page
 * size; the current meta lies on the page LMDB writes its txnid to (txnid
 * & 1: a locked open reads that page, an unlocked one the larger txnid),
 * and with txnid 0 (never committed) its trees are empty; the file holds
 * every page up to the current meta's last page; each
 * page of every tree lies in [2, last], says it is that page, has the type
 * its place in the tree requires, nodes that lie within it and exactly
 * fill it from `upper` down, keys in strictly ascending order within the
 * bounds its parent gives it, and all leaves at the tree's depth; each
 * tree's page and entry counts agree with its record; every page listed as
 * free lies in [2, last]; no page is reached twice (no cycles, no page
 * both free and in use); and the schema's databases are all present or all
 * absent.
 */
#include "store/lmdb_check.h"

#include <errno.h>
#include <lmdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/endian.h"
#include "store/store_internal.h"

#define PAGEHDRSZ 16u
#define NODESIZE 8u
#define P_BRANCH 0x01u
#define P_LEAF 0x02u
#define P_OVERFLOW 0x04u
#define P_META 0x08u
#define F_BIGDATA 0x01u
#define F_SUBDATA 0x02u
#define MDB_MAGIC 0xBEEFC0DEu
#define MDB_DATA_VERSION 1u
#define P_INVALID UINT64_MAX
#define DB_BYTES 48u
#define META_BYTES 136u
/* LMDB's cursors hold 32 pages (CURSOR_STACK); a checkpoint of 2^32 ids
   is a tree of depth 5 or so, so 16 is generous. */
#define MAX_DEPTH 16u
#define MAX_SCHEMA 8u
#define READ_RUN 64u

typedef struct dbrec {
  uint32_t pad;
  uint16_t flags, depth;
  uint64_t branch, leaf, overflow, entries, root;
} dbrec;

enum kind { K_FREE, K_MAIN, K_NAMED };

typedef struct checker {
  int fd;
  const char *path;
  uint32_t psize;
  uint64_t last;               /* last page in use (current meta) */
  uint8_t *seen;               /* one bit per page 0..last */
  unsigned char *buf[MAX_DEPTH + 1]; /* one page per tree level */
  unsigned char *run;          /* READ_RUN pages read ahead, from run_first */
  uint64_t run_first, run_n;
  const tg__lmdb_schema *schema;
  size_t n;
  dbrec named[MAX_SCHEMA];     /* records the main database gave */
  int have[MAX_SCHEMA];
  /* the tree being walked */
  enum kind kind;
  size_t idx;                  /* K_NAMED: its schema entry */
  unsigned depth;              /* its record's depth */
  uint64_t nbranch, nleaf, nover, nentries;
  char *msg;
  size_t len;
} checker;

__attribute__((format(printf, 3, 4)))
static int bad(checker *c, uint64_t pgno, const char *fmt, ...) {
  char what[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  tg__say(c->msg, c->len, "%s: page %llu: %s (corrupt checkpoint)", c->path,
          (unsigned long long)pgno, what);
  return TG_ECORRUPT;
}

static int read_at(checker *c, void *buf, size_t n, uint64_t off) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = pread(c->fd, (char *)buf + done, n - done, (off_t)(off + done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int rc = -errno;
      tg__say(c->msg, c->len, "%s: cannot read: %s", c->path, strerror(errno));
      return rc;
    }
    if (r == 0) {
      tg__say(c->msg, c->len, "%s: the file ends at %llu, inside a page "
              "(corrupt checkpoint)", c->path, (unsigned long long)(off + done));
      return TG_ECORRUPT;
    }
    done += (size_t)r;
  }
  return 0;
}

/* Page pgno (already checked to lie in the file) into buf. Trees written
   in key order (MDB_APPEND) lie in page order, so pages are read in runs:
   one pread per READ_RUN pages instead of one per page (a checkpoint of
   9.5 M tokens is 190,000 pages). */
static int read_page(checker *c, unsigned char *buf, uint64_t pgno) {
  if (pgno < c->run_first || pgno >= c->run_first + c->run_n) {
    uint64_t n = c->last + 1 - pgno;
    if (n > READ_RUN) n = READ_RUN;
    int rc = read_at(c, c->run, n * c->psize, pgno * c->psize);
    if (rc) return rc;
    c->run_first = pgno;
    c->run_n = n;
  }
  memcpy(buf, c->run + (pgno - c->run_first) * c->psize, c->psize);
  return 0;
}

static void get_db(const unsigned char *p, dbrec *d) {
  d->pad = tg__ld32(p);
  memcpy(&d->flags, p + 4, 2);
  memcpy(&d->depth, p + 6, 2);
  d->branch = tg__ld64(p + 8);
  d->leaf = tg__ld64(p + 16);
  d->overflow = tg__ld64(p + 24);
  d->entries = tg__ld64(p + 32);
  d->root = tg__ld64(p + 40);
}

static uint16_t ld16(const unsigned char *p) {
  uint16_t v;
  memcpy(&v, p, 2);
  return v;
}

/* Mark page pgno in use; a second use is a cycle or a shared page. */
static int mark(checker *c, uint64_t pgno, const char *what) {
  if (pgno < 2 || pgno > c->last)
    return bad(c, pgno, "%s outside the file's pages 2..%llu", what,
               (unsigned long long)c->last);
  uint8_t bit = (uint8_t)(1u << (pgno & 7));
  if (c->seen[pgno >> 3] & bit) return bad(c, pgno, "%s reached twice", what);
  c->seen[pgno >> 3] |= bit;
  return 0;
}

/* Key order of the tree being walked: <0, 0, >0. */
static int cmp_key(const checker *c, const unsigned char *a, unsigned al,
                   const unsigned char *b, unsigned bl) {
  unsigned flags = c->kind == K_FREE ? MDB_INTEGERKEY
                   : c->kind == K_MAIN ? 0u : c->schema[c->idx].flags;
  if (flags & MDB_INTEGERKEY) { /* sizes were checked equal */
    uint64_t x = al == 8 ? tg__ld64(a) : tg__ld32(a);
    uint64_t y = bl == 8 ? tg__ld64(b) : tg__ld32(b);
    return x < y ? -1 : x > y;
  }
  int r = memcmp(a, b, al < bl ? al : bl); /* LMDB's mdb_cmp_memn */
  return r ? r : (al > bl) - (al < bl);
}

/* Key sizes the tree being walked allows. */
static void key_sizes(const checker *c, unsigned *kmin, unsigned *kmax) {
  if (c->kind == K_FREE) {
    *kmin = *kmax = 8;
  } else if (c->kind == K_MAIN) {
    *kmin = 1;
    *kmax = 64;
  } else {
    *kmin = c->schema[c->idx].ksize_min;
    *kmax = c->schema[c->idx].ksize_max;
  }
}

/* A free-list record: u64 count, then that many page numbers. */
static int check_idl(checker *c, uint64_t pgno, const unsigned char *d, uint64_t dsize) {
  if (dsize < 8 || dsize % 8) return bad(c, pgno, "a free-list record of %llu bytes",
                                         (unsigned long long)dsize);
  uint64_t n = tg__ld64(d);
  if (n > dsize / 8 - 1)
    return bad(c, pgno, "a free list of %llu pages in %llu bytes",
               (unsigned long long)n, (unsigned long long)dsize);
  /* LMDB keeps each list sorted, highest first, and finds runs of free
     pages by comparing entries n apart: an unsorted list would hand out
     pages that are in use. */
  for (uint64_t i = 1; i <= n; i++) {
    if (i > 1 && tg__ld64(d + i * 8) >= tg__ld64(d + (i - 1) * 8))
      return bad(c, pgno, "a free list out of order");
    int rc = mark(c, tg__ld64(d + i * 8), "a free page");
    if (rc) return rc;
  }
  return 0;
}

static int leaf_node(checker *c, uint64_t pgno, const unsigned char *node,
                     unsigned ksize, uint64_t dsize, unsigned flags) {
  const unsigned char *key = node + NODESIZE, *data = key + ksize;
  if (c->kind == K_FREE) {
    if (flags & ~F_BIGDATA) return bad(c, pgno, "free-list node flags 0x%x", flags);
    if (!(flags & F_BIGDATA)) return check_idl(c, pgno, data, dsize);
    /* The list is on overflow pages: the first has a header with the
       count, the data follows it contiguously. */
    uint64_t ov = tg__ld64(data);
    uint64_t need = (PAGEHDRSZ - 1 + dsize) / c->psize + 1;
    if (ov < 2 || ov > c->last)
      return bad(c, pgno, "overflow page %llu outside the file", (unsigned long long)ov);
    unsigned char hdr[PAGEHDRSZ];
    int rc = read_at(c, hdr, sizeof hdr, ov * c->psize);
    if (rc) return rc;
    /* LMDB may keep a larger run when it rewrites a record in place. */
    uint64_t pages = tg__ld32(hdr + 12);
    if (tg__ld64(hdr) != ov || ld16(hdr + 10) != P_OVERFLOW || pages < need ||
        pages > c->last - ov + 1)
      return bad(c, ov, "not the overflow run of %llu pages its node names (page %llu)",
                 (unsigned long long)need, (unsigned long long)pgno);
    for (uint64_t i = 0; i < pages; i++)
      if ((rc = mark(c, ov + i, "an overflow page"))) return rc;
    c->nover += pages;
    unsigned char *buf = malloc(dsize);
    if (!buf) return TG_ENOMEM;
    rc = read_at(c, buf, dsize, ov * c->psize + PAGEHDRSZ);
    if (!rc) rc = check_idl(c, ov, buf, dsize);
    free(buf);
    return rc;
  }
  if (c->kind == K_MAIN) {
    size_t i;
    for (i = 0; i < c->n; i++)
      if (strlen(c->schema[i].name) == ksize && !memcmp(c->schema[i].name, key, ksize))
        break;
    /* Someone else's LMDB environment, or ours with a damaged name. */
    if (i == c->n || flags != F_SUBDATA || dsize != DB_BYTES) {
      tg__say(c->msg, c->len, "%s is an LMDB file but not a tokengraph "
              "checkpoint (page %llu holds a record that is not one of its "
              "databases); nothing was changed", c->path, (unsigned long long)pgno);
      return TG_ENOTTG;
    }
    get_db(data, &c->named[i]);
    c->have[i] = 1;
    return 0;
  }
  const tg__lmdb_schema *sc = &c->schema[c->idx];
  if (flags || dsize < sc->dsize_min || dsize > sc->dsize_max)
    return bad(c, pgno, "a %s record of %llu bytes (flags 0x%x)", sc->name,
               (unsigned long long)dsize, flags);
  return 0;
}

/* Walk the subtree at pgno, `level` deep (the root is 1), whose keys must
   lie in [lo, hi) (NULL: unbounded). */
static int walk(checker *c, uint64_t pgno, unsigned level,
                const unsigned char *lo, unsigned lol,
                const unsigned char *hi, unsigned hil) {
  int rc;
  if (level > c->depth) return bad(c, pgno, "deeper than the tree's depth %u", c->depth);
  if ((rc = mark(c, pgno, "a tree page"))) return rc;
  unsigned char *p = c->buf[level];
  if ((rc = read_page(c, p, pgno))) return rc;
  uint16_t flags = ld16(p + 10), lower = ld16(p + 12), upper = ld16(p + 14);
  int leaf = level == c->depth;
  if (tg__ld64(p) != pgno) return bad(c, pgno, "the page says it is page %llu",
                                      (unsigned long long)tg__ld64(p));
  if (flags != (leaf ? P_LEAF : P_BRANCH))
    return bad(c, pgno, "flags 0x%x where a %s page belongs", flags,
               leaf ? "leaf" : "branch");
  if (lower < PAGEHDRSZ || (lower - PAGEHDRSZ) % 2 || lower > upper || upper > c->psize)
    return bad(c, pgno, "free space bounds %u..%u", lower, upper);
  unsigned n = (lower - PAGEHDRSZ) / 2u;
  if (n < (leaf ? 1u : 2u)) return bad(c, pgno, "%u nodes", n);
  if (leaf) c->nleaf++;
  else c->nbranch++;
  unsigned kmin, kmax;
  key_sizes(c, &kmin, &kmax);
  uint64_t filled = 0;
  const unsigned char *prev = NULL;
  unsigned prevl = 0;
  for (unsigned i = 0; i < n; i++) {
    unsigned off = ld16(p + PAGEHDRSZ + 2 * i);
    if (off < upper || off > c->psize - NODESIZE)
      return bad(c, pgno, "node %u at offset %u", i, off);
    const unsigned char *node = p + off;
    unsigned nlo = ld16(node), nhi = ld16(node + 2), nfl = ld16(node + 4);
    unsigned ksize = ld16(node + 6);
    uint64_t dsize = leaf ? (nlo | (uint64_t)nhi << 16) : 0;
    uint64_t inpage = leaf ? ((nfl & F_BIGDATA) ? 8u : dsize) : 0;
    uint64_t size = NODESIZE + ksize + inpage;
    if (off + size > c->psize) return bad(c, pgno, "node %u runs past the page", i);
    filled += (size + 1) & ~(uint64_t)1;
    const unsigned char *key = node + NODESIZE;
    /* A branch's first key is never compared (LMDB keeps it empty). */
    if (leaf || i > 0) {
      if (ksize < kmin || ksize > kmax)
        return bad(c, pgno, "node %u has a key of %u bytes", i, ksize);
      if (prev ? cmp_key(c, prev, prevl, key, ksize) >= 0
               : lo && cmp_key(c, lo, lol, key, ksize) > 0)
        return bad(c, pgno, "node %u is out of key order", i);
      if (hi && cmp_key(c, key, ksize, hi, hil) >= 0)
        return bad(c, pgno, "node %u is past its parent's bound", i);
      prev = key;
      prevl = ksize;
    }
    if (leaf) {
      c->nentries++;
      if ((rc = leaf_node(c, pgno, node, ksize, dsize, nfl))) return rc;
    }
  }
  if (filled != c->psize - upper)
    return bad(c, pgno, "nodes fill %llu of the %u bytes above the free space",
               (unsigned long long)filled, c->psize - upper);
  if (leaf) return 0;
  for (unsigned i = 0; i < n; i++) {
    /* Re-read the node from this level's buffer: the child's walk uses
       the next one. */
    const unsigned char *node = p + ld16(p + PAGEHDRSZ + 2 * i);
    uint64_t child = ld16(node) | (uint64_t)ld16(node + 2) << 16 |
                     (uint64_t)ld16(node + 4) << 32;
    const unsigned char *clo = lo, *chi = hi;
    unsigned clol = lol, chil = hil;
    if (i > 0) {
      clo = node + NODESIZE;
      clol = ld16(node + 6);
    }
    if (i + 1 < n) {
      const unsigned char *next = p + ld16(p + PAGEHDRSZ + 2 * (i + 1));
      chi = next + NODESIZE;
      chil = ld16(next + 6);
    }
    if ((rc = walk(c, child, level + 1, clo, clol, chi, chil))) return rc;
  }
  return 0;
}

static int check_tree(checker *c, const dbrec *d, enum kind kind, size_t idx,
                      const char *name) {
  c->kind = kind;
  c->idx = idx;
  c->depth = d->depth;
  c->nbranch = c->nleaf = c->nover = c->nentries = 0;
  if (d->root == P_INVALID) {
    if (d->depth || d->branch || d->leaf || d->overflow || d->entries)
      return bad(c, 0, "database '%s' is empty but its record counts pages", name);
    return 0;
  }
  if (d->depth == 0 || d->depth > MAX_DEPTH)
    return bad(c, d->root, "database '%s' has depth %u", name, d->depth);
  int rc = walk(c, d->root, 1, NULL, 0, NULL, 0);
  if (rc) return rc;
  if (c->nbranch != d->branch || c->nleaf != d->leaf || c->nover != d->overflow ||
      c->nentries != d->entries)
    return bad(c, d->root, "database '%s' has %llu/%llu/%llu pages and %llu "
               "entries, its record says %llu/%llu/%llu and %llu", name,
               (unsigned long long)c->nbranch, (unsigned long long)c->nleaf,
               (unsigned long long)c->nover, (unsigned long long)c->nentries,
               (unsigned long long)d->branch, (unsigned long long)d->leaf,
               (unsigned long long)d->overflow, (unsigned long long)d->entries);
  return 0;
}

static int check(int fd, const char *path, const tg__lmdb_schema *schema, size_t n,
                 tg__lmdb_info *info, int metas_only, char *msg, size_t len) {
  checker c;
  memset(&c, 0, sizeof c);
  memset(info, 0, sizeof *info);
  c.fd = fd;
  c.path = path;
  c.schema = schema;
  c.n = n < MAX_SCHEMA ? n : MAX_SCHEMA;
  c.msg = msg;
  c.len = len;
  struct stat st;
  int rc;
  if (fstat(fd, &st)) {
    rc = -errno;
    tg__say(msg, len, "%s: %s", path, strerror(errno));
    return rc;
  }
  uint64_t fsize = (uint64_t)st.st_size;
  unsigned char m[2][PAGEHDRSZ + META_BYTES];
  dbrec free_db[2], main_db[2];
  uint32_t psize = 0;
  for (int i = 0; i < 2; i++) {
    uint64_t off = i ? psize : 0;
    if (fsize < off + sizeof m[i]) {
      tg__say(msg, len, "%s: %llu bytes, too short for LMDB's meta pages "
              "(corrupt checkpoint)", path, (unsigned long long)fsize);
      return TG_ECORRUPT;
    }
    if ((rc = read_at(&c, m[i], sizeof m[i], off))) return rc;
    const unsigned char *mm = m[i] + PAGEHDRSZ;
    if (tg__ld32(mm) != MDB_MAGIC || !(ld16(m[i] + 10) & P_META)) {
      tg__say(msg, len, "%s: meta page %d is not an LMDB meta page: %s", path, i,
              i ? "corrupt checkpoint" : "not an LMDB file");
      return i ? TG_ECORRUPT : TG_ENOTTG;
    }
    if (tg__ld32(mm + 4) != MDB_DATA_VERSION) {
      tg__say(msg, len, "%s: meta page %d: LMDB data version %u, this library reads %u",
              path, i, tg__ld32(mm + 4), MDB_DATA_VERSION);
      return TG_EVERSION;
    }
    get_db(mm + 24, &free_db[i]);
    get_db(mm + 24 + DB_BYTES, &main_db[i]);
    if (ld16(m[i] + 10) != P_META || tg__ld64(m[i]) != (uint64_t)i)
      return bad(&c, (uint64_t)i, "a meta page with flags 0x%x that says it is "
                 "page %llu", ld16(m[i] + 10), (unsigned long long)tg__ld64(m[i]));
    if (i == 0) psize = free_db[0].pad;
    if (psize < 512 || psize > 32768 || (psize & (psize - 1)) || free_db[i].pad != psize)
      return bad(&c, (uint64_t)i, "page size %u", free_db[i].pad);
  }
  c.psize = psize;
  int cur = tg__ld64(m[1] + PAGEHDRSZ + 128) > tg__ld64(m[0] + PAGEHDRSZ + 128);
  const unsigned char *mm = m[cur] + PAGEHDRSZ;
  c.last = tg__ld64(mm + 120);
  info->txnid = tg__ld64(mm + 128);
  info->psize = psize;
  info->last_pgno = c.last;
  /* LMDB writes transaction t's meta into page t & 1, and only a read
     without a lock file picks the meta by the larger txnid alone
     (mdb_env_pick_meta); with a lock file, the open records that txnid
     (mti_txnid) and every transaction then reads page txnid & 1
     (mdb_txn_renew0). A current meta on the wrong page would have the
     read-only open (MDB_NOLOCK) and the read-write one load different
     snapshots, so it is refused: no commit writes one. */
  if (info->txnid && (info->txnid & 1) != (uint64_t)cur)
    return bad(&c, (uint64_t)cur, "meta page %d holds transaction %llu, which LMDB "
               "writes to meta page %d", cur, (unsigned long long)info->txnid,
               (int)(info->txnid & 1));
  /* Transaction 0 is the one mdb_env_init_meta() writes: empty trees. The
     store treats such a file as a checkpoint still to be made (read-only:
     nothing to load), so it must hold nothing the read-write open would
     find and load. */
  if (!info->txnid && (free_db[cur].root != P_INVALID || main_db[cur].root != P_INVALID))
    return bad(&c, (uint64_t)cur, "meta page %d has transaction 0 (nothing committed) "
               "but its databases hold pages", cur);
  if (c.last < 1 || c.last >= fsize / psize)
    return bad(&c, c.last, "meta page %d claims %llu pages, the file holds %llu",
               cur, (unsigned long long)c.last + 1, (unsigned long long)(fsize / psize));
  /* The flags LMDB acts on: the free database is keyed by integer txnids
     (and holds the environment's flags, none of which we set), the main
     database by names. */
  if (free_db[cur].flags != MDB_INTEGERKEY || main_db[cur].flags != 0 ||
      main_db[cur].pad != 0)
    return bad(&c, (uint64_t)cur, "database flags 0x%x/0x%x", free_db[cur].flags,
               main_db[cur].flags);
  if (metas_only) return 0;

  rc = TG_ENOMEM;
  c.seen = calloc(c.last / 8 + 1, 1);
  if (!c.seen) goto cleanup;
  for (unsigned i = 0; i <= MAX_DEPTH; i++)
    if (!(c.buf[i] = malloc(psize))) goto cleanup;
  if (!(c.run = malloc((size_t)READ_RUN * psize))) goto cleanup;
  if ((rc = check_tree(&c, &free_db[cur], K_FREE, 0, "free pages")) ||
      (rc = check_tree(&c, &main_db[cur], K_MAIN, 0, "main")))
    goto cleanup;
  /* The schema's databases are created together (in the first
     transaction): one missing is a damaged main database, and the two
     opens would part over it (the read-write one creates it, the
     read-only one cannot). */
  for (size_t i = 1; i < c.n; i++)
    if (c.have[i] != c.have[0]) {
      rc = bad(&c, main_db[cur].root, "database '%s' is %s, database '%s' is not",
               schema[0].name, c.have[0] ? "present" : "absent", schema[i].name);
      goto cleanup;
    }
  for (size_t i = 0; i < c.n; i++) {
    if (!c.have[i]) continue;
    const dbrec *d = &c.named[i];
    if (d->flags != schema[i].flags || d->pad != 0) {
      rc = bad(&c, d->root, "database '%s' has flags 0x%x", schema[i].name, d->flags);
      goto cleanup;
    }
    if ((rc = check_tree(&c, d, K_NAMED, i, schema[i].name))) goto cleanup;
    info->entries[i] = d->entries;
  }
  rc = 0;
cleanup:
  if (rc == TG_ENOMEM)
    tg__say(msg, len, "%s: out of memory while checking the checkpoint (%llu pages)",
            path, (unsigned long long)c.last + 1);
  free(c.seen);
  free(c.run);
  for (unsigned i = 0; i <= MAX_DEPTH; i++) free(c.buf[i]);
  return rc;
}

int tg__lmdb_check(int fd, const char *path, const tg__lmdb_schema *schema,
                   size_t n, tg__lmdb_info *info, char *msg, size_t len) {
  return check(fd, path, schema, n, info, 0, msg, len);
}

int tg__lmdb_check_metas(int fd, const char *path, tg__lmdb_info *info, char *msg,
                         size_t len) {
  return check(fd, path, NULL, 0, info, 1, msg, len);
}
