/* Power-loss simulation through the I/O seam: see powerloss.h. */
#include "powerloss.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/io.h"

/* ---- the journal ---------------------------------------------------------- */

enum pl_op {
  OP_BASE = 1,   /* a file or directory present at the start: ino, path, a=isdir */
  OP_OPEN,       /* a successful open: ino, path, a=1 if it created the file */
  OP_WRITE,      /* ino, path, a=offset, b=CLOCK_MONOTONIC ns, data */
  OP_TRUNC,      /* ino, path, a=length */
  OP_FALLOC,     /* ino, path, a=offset, b=length (mode 0: extends, zeros) */
  OP_SYNC,       /* after a successful fdatasync/fsync: ino, path, a=isdir */
  OP_RENAME,     /* before: path -> path2 */
  OP_UNLINK,     /* before: path */
  OP_MKDIR,      /* before: path */
  OP_FAILED,     /* the namespace operation just journaled did not happen */
  OP_SYNC_BEGIN  /* before an fdatasync/fsync of a file: ino, path, a=its id
                    (the OP_SYNC that ends it carries the id in b),
                    b=CLOCK_MONOTONIC ns */
};

#define PL_MAGIC 0x314a4c50u /* "PLJ1" */
#define PL_TAIL 0x454e4f44u  /* "DONE" */

typedef struct rec_hdr {
  uint32_t magic;
  uint32_t op;
  uint64_t ino;
  uint64_t a, b;
  uint32_t plen, p2len;
  uint64_t dlen;
} rec_hdr;

static int jfd = -1;
static tg__io_ops real;
static pl_sync_stats *sync_stats;

void pl_record_sync_stats(pl_sync_stats *s) { sync_stats = s; }

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A WAL file: a regular file in a directory named "wal". */
static int wal_file(const char *p) {
  const char *b = strrchr(p, '/');
  return b && b - p >= 4 && !strncmp(b - 4, "/wal", 4);
}

static void note_sync(uint64_t ns) {
  atomic_fetch_add_explicit(&sync_stats->count, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&sync_stats->total_ns, ns, memory_order_relaxed);
  uint64_t m = atomic_load_explicit(&sync_stats->max_ns, memory_order_relaxed);
  while (ns > m && !atomic_compare_exchange_weak_explicit(&sync_stats->max_ns, &m, ns,
                                                          memory_order_relaxed,
                                                          memory_order_relaxed)) {
  }
}

static void jwrite(uint32_t op, uint64_t ino, uint64_t a, uint64_t b, const char *p,
                   const char *p2, const void *data, size_t dlen) {
  rec_hdr h = {PL_MAGIC, op, ino, a, b, p ? (uint32_t)strlen(p) : 0,
               p2 ? (uint32_t)strlen(p2) : 0, dlen};
  uint32_t tail = PL_TAIL;
  struct iovec iov[5] = {{&h, sizeof h},
                         {(void *)(p ? p : ""), h.plen},
                         {(void *)(p2 ? p2 : ""), h.p2len},
                         {(void *)data, dlen},
                         {&tail, sizeof tail}};
  /* One writev on an O_APPEND file: records of concurrent threads do not
     interleave, and a kill leaves at most the last one incomplete. */
  size_t want = sizeof h + h.plen + h.p2len + dlen + sizeof tail;
  ssize_t n = writev(jfd, iov, 5);
  if (n != (ssize_t)want) {
    fprintf(stderr, "powerloss: journal write failed\n");
    abort();
  }
}

static void fd_path(int fd, char *out, size_t n) {
  char link[64];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t r = readlink(link, out, n - 1);
  out[r > 0 ? r : 0] = '\0';
}

static uint64_t fd_ino(int fd, int *isdir) {
  struct stat st;
  if (fstat(fd, &st)) return 0;
  if (isdir) *isdir = S_ISDIR(st.st_mode);
  return (uint64_t)st.st_ino;
}

/* An absolute path for (dirfd, path). */
static void at_path(int dirfd, const char *path, char *out, size_t n) {
  /* The store hands the WAL /proc/self/fd/N of its wal/ (a path no link can
     redirect): the journal wants the directory's own path. */
  int pfd = -1, used = 0;
  if (sscanf(path, "/proc/self/fd/%d%n", &pfd, &used) == 1 && pfd >= 0 &&
      (path[used] == '/' || path[used] == '\0')) {
    char base[PATH_MAX];
    fd_path(pfd, base, sizeof base);
    snprintf(out, n, "%s%s", base, path + used);
    return;
  }
  if (path[0] == '/') {
    snprintf(out, n, "%s", path);
    return;
  }
  char base[PATH_MAX];
  if (dirfd == AT_FDCWD) {
    if (!getcwd(base, sizeof base)) base[0] = '\0';
  } else {
    fd_path(dirfd, base, sizeof base);
  }
  snprintf(out, n, "%s/%s", base, path);
}

static uint64_t path_ino(const char *p) {
  struct stat st;
  return lstat(p, &st) ? 0 : (uint64_t)st.st_ino;
}

static ssize_t rec_pwrite(int fd, const void *buf, size_t n, off_t off) {
  char p[PATH_MAX];
  fd_path(fd, p, sizeof p);
  jwrite(OP_WRITE, fd_ino(fd, NULL), (uint64_t)off, mono_ns(), p, NULL, buf, n);
  return real.pwrite(fd, buf, n, off);
}

static ssize_t rec_write(int fd, const void *buf, size_t n) {
  char p[PATH_MAX];
  off_t off = lseek(fd, 0, SEEK_CUR);
  fd_path(fd, p, sizeof p);
  if (off >= 0) jwrite(OP_WRITE, fd_ino(fd, NULL), (uint64_t)off, mono_ns(), p, NULL, buf, n);
  return real.write(fd, buf, n);
}

/* LMDB's data file: LMDB writes it through its own map, so the journal
   can never hold its contents; the store's fallocate and fdatasync of it
   go through the seam all the same and are passed through unrecorded, so
   the file stays "never seen" and is copied from live (see powerloss.h). */
static int lmdb_data(const char *p) {
  const char *b = strrchr(p, '/');
  return b && !strcmp(b + 1, "data.mdb");
}

static int rec_sync(int fd, int (*fn)(int)) {
  int isdir = 0;
  uint64_t ino = fd_ino(fd, &isdir);
  char p[PATH_MAX];
  fd_path(fd, p, sizeof p);
  if (lmdb_data(p)) return fn(fd);
  /* A sync covers only the writes made before it began: one made while it
     runs may reach the disk or not (the page may already have been written
     back). Journaling the start lets the reconstruction treat those as
     unsynced - which catches a durable point that claims them. */
  static _Atomic uint64_t next_id = 1;
  uint64_t id = atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed);
  uint64_t t0 = mono_ns();
  if (!isdir) jwrite(OP_SYNC_BEGIN, ino, id, t0, p, NULL, NULL, 0);
  int r = fn(fd);
  int e = errno;
  if (r == 0) jwrite(OP_SYNC, ino, (uint64_t)isdir, isdir ? 0 : id, p, NULL, NULL, 0);
  /* Until the journal holds it, a kill loses the sync: that is its end. */
  if (r == 0 && sync_stats && !isdir && wal_file(p)) note_sync(mono_ns() - t0);
  errno = e;
  return r;
}
static int rec_fdatasync(int fd) { return rec_sync(fd, real.fdatasync); }
static int rec_fsync(int fd) { return rec_sync(fd, real.fsync); }

static int rec_fallocate(int fd, int mode, off_t off, off_t len) {
  char p[PATH_MAX];
  fd_path(fd, p, sizeof p);
  if (mode == 0 && !lmdb_data(p)) jwrite(OP_FALLOC, fd_ino(fd, NULL), (uint64_t)off, (uint64_t)len, p, NULL, NULL, 0);
  return real.fallocate(fd, mode, off, len);
}

static int rec_ftruncate(int fd, off_t len) {
  char p[PATH_MAX];
  fd_path(fd, p, sizeof p);
  jwrite(OP_TRUNC, fd_ino(fd, NULL), (uint64_t)len, 0, p, NULL, NULL, 0);
  return real.ftruncate(fd, len);
}

static int rec_openat(int dirfd, const char *path, int flags, mode_t mode) {
  char p[PATH_MAX];
  at_path(dirfd, path, p, sizeof p);
  int existed = path_ino(p) != 0;
  int fd = real.openat(dirfd, path, flags, mode);
  if (fd >= 0) {
    int e = errno, isdir = 0;
    uint64_t ino = fd_ino(fd, &isdir);
    fd_path(fd, p, sizeof p);
    jwrite(OP_OPEN, ino, (uint64_t)(!existed && (flags & O_CREAT)), (uint64_t)isdir, p,
           NULL, NULL, 0);
    errno = e;
  }
  return fd;
}

/* A name operation: journaled before it is made (so a kill right after it
   cannot hide it), with OP_FAILED after it if it did not happen. */
static int name_op_done(int r) {
  int e = errno;
  if (r) jwrite(OP_FAILED, 0, 0, 0, NULL, NULL, NULL, 0);
  errno = e;
  return r;
}

static int rec_renameat(int od, const char *op, int nd, const char *np) {
  char a[PATH_MAX], b[PATH_MAX];
  at_path(od, op, a, sizeof a);
  at_path(nd, np, b, sizeof b);
  jwrite(OP_RENAME, path_ino(a), 0, 0, a, b, NULL, 0);
  return name_op_done(real.renameat(od, op, nd, np));
}

static int rec_unlinkat(int dirfd, const char *path, int flags) {
  char a[PATH_MAX];
  at_path(dirfd, path, a, sizeof a);
  jwrite(OP_UNLINK, path_ino(a), 0, 0, a, NULL, NULL, 0);
  return name_op_done(real.unlinkat(dirfd, path, flags));
}

static int rec_mkdirat(int dirfd, const char *path, mode_t mode) {
  char a[PATH_MAX];
  at_path(dirfd, path, a, sizeof a);
  jwrite(OP_MKDIR, 0, 0, 0, a, NULL, NULL, 0);
  return name_op_done(real.mkdirat(dirfd, path, mode));
}

/* Record every entry below dir as OP_BASE; copy files into copy. */
/* File contents whose bytes from `data` to `len` are zeros not stored:
   what an extension (fallocate, ftruncate) adds is not written out, so a
   preallocated 4 MiB segment or 8 MiB ring costs only the bytes written
   into it, not a copy, a memset and a write of all of it per image. */
typedef struct zbuf {
  unsigned char *p;
  size_t len, data; /* data <= len; p holds the first `data` bytes */
} zbuf;

static const unsigned char zero_page[4096];

static void *xrealloc(void *p, size_t n);

/* Store the first n bytes of z as zeros when they are implicit. */
static void zbuf_fill(zbuf *z, size_t n) {
  if (n > z->len) n = z->len;
  if (n <= z->data) return;
  z->p = xrealloc(z->p, n);
  memset(z->p + z->data, 0, n - z->data);
  z->data = n;
}

/* The contents of an existing file (an empty zbuf if it cannot be read),
   reading only its data extents (SEEK_DATA): the holes of a sparse copy
   and the unwritten preallocation of a live file read as zeros without a
   read. Trailing zero pages are left implicit. */
static zbuf read_sparse(const char *path) {
  zbuf z = {NULL, 0, 0};
  int fd = open(path, O_RDONLY);
  if (fd < 0) return z;
  struct stat st;
  if (fstat(fd, &st) || st.st_size <= 0) {
    close(fd);
    return z;
  }
  z.len = (size_t)st.st_size;
  off_t off = 0;
  while ((size_t)off < z.len) {
    off_t d = lseek(fd, off, SEEK_DATA), h;
    if (d < 0 && errno == ENXIO) break; /* only a hole is left */
    if (d < 0) d = off, h = (off_t)z.len; /* no SEEK_DATA: read it all */
    else if ((h = lseek(fd, d, SEEK_HOLE)) < 0 || (size_t)h > z.len) h = (off_t)z.len;
    zbuf_fill(&z, (size_t)d);
    z.p = xrealloc(z.p, (size_t)h);
    ssize_t n = pread(fd, z.p + d, (size_t)(h - d), d);
    if (n <= 0) break;
    z.data = (size_t)d + (size_t)n;
    off = d + n;
  }
  close(fd);
  while (z.data) {
    size_t o = (z.data - 1) & ~(size_t)4095;
    if (memcmp(z.p + o, zero_page, z.data - o)) break;
    z.data = o;
  }
  return z;
}

/* Write z to fd as a sparse file: its stored pages that are all zeros, and
   the zeros after them, are holes (they read the same). 0 or -1. */
static int write_sparse(int fd, const zbuf *z) {
  for (size_t o = 0; o < z->data; o += 4096) {
    size_t n = z->data - o < 4096 ? z->data - o : 4096;
    if (!memcmp(z->p + o, zero_page, n)) continue;
    if (pwrite(fd, z->p + o, n, (off_t)o) != (ssize_t)n) return -1;
  }
  return ftruncate(fd, (off_t)z->len);
}

static int walk_base(const char *dir, const char *copy) {
  DIR *d = opendir(dir);
  if (!d) return errno == ENOENT ? 0 : -errno;
  int rc = 0;
  if (copy && mkdir(copy, 0700) && errno != EEXIST) rc = -errno;
  struct dirent *e;
  while (!rc && (e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char p[PATH_MAX], c[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    if (copy) snprintf(c, sizeof c, "%s/%s", copy, e->d_name);
    struct stat st;
    if (lstat(p, &st)) continue;
    if (S_ISDIR(st.st_mode)) {
      jwrite(OP_BASE, (uint64_t)st.st_ino, 1, 0, p, NULL, NULL, 0);
      rc = walk_base(p, copy ? c : NULL);
    } else if (S_ISREG(st.st_mode)) {
      jwrite(OP_BASE, (uint64_t)st.st_ino, 0, 0, p, NULL, NULL, 0);
      if (copy) {
        zbuf z = read_sparse(p);
        int out = open(c, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (out < 0) rc = -errno;
        else if (write_sparse(out, &z)) rc = -EIO;
        if (out >= 0) close(out);
        free(z.p);
      }
    }
  }
  closedir(d);
  return rc;
}

int pl_snapshot(const char *journal_path, const char *base_dir, const char *base_copy) {
  jfd = open(journal_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
  if (jfd < 0) return -errno;
  char abs[PATH_MAX];
  at_path(AT_FDCWD, base_dir, abs, sizeof abs);
  struct stat st;
  int rc = 0;
  if (lstat(abs, &st) == 0) {
    jwrite(OP_BASE, (uint64_t)st.st_ino, 1, 0, abs, NULL, NULL, 0);
    rc = walk_base(abs, base_copy);
  }
  close(jfd);
  jfd = -1;
  return rc;
}

int pl_record_start(const char *journal_path) {
  jfd = open(journal_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (jfd < 0) return -errno;
  real = tg__io;
  tg__io.write = rec_write;
  tg__io.pwrite = rec_pwrite;
  tg__io.fdatasync = rec_fdatasync;
  tg__io.fsync = rec_fsync;
  tg__io.fallocate = rec_fallocate;
  tg__io.ftruncate = rec_ftruncate;
  tg__io.openat = rec_openat;
  tg__io.renameat = rec_renameat;
  tg__io.unlinkat = rec_unlinkat;
  tg__io.mkdirat = rec_mkdirat;
  return 0;
}

void pl_record_stop(void) {
  tg__io = real;
  if (jfd >= 0) close(jfd);
  jfd = -1;
}

/* ---- reconstruction --------------------------------------------------------- */

typedef struct rec {
  rec_hdr h;
  char *p, *p2;
  unsigned char *data;
} rec;

typedef struct pend { /* an unsynced change to a file, in order */
  uint32_t op;        /* OP_WRITE, OP_TRUNC, OP_FALLOC */
  uint64_t a, b;      /* as journaled (OP_WRITE: b is when) */
  const unsigned char *data;
  size_t dlen;
} pend;

typedef struct sync_mark { /* a file sync that began: its id, how many of
                              the file's changes were made before it, when */
  uint64_t id, upto, t;
} sync_mark;

typedef struct file {
  uint64_t ino;
  int loaded;
  uint64_t applied;       /* changes made durable so far (dur) */
  int wal;                /* a WAL segment (check_markers saw it written) */
  sync_mark *marks;       /* syncs begun and not ended */
  size_t nmarks, mcap;
  zbuf dur;               /* contents as of the last sync */
  pend *pend;             /* changes since then */
  size_t npend, cap;
} file;

typedef struct entry {    /* a name: path -> ino (0 for a directory we made) */
  char *path;
  uint64_t ino;
  int isdir;
} entry;

typedef struct names {
  entry *v;
  size_t n, cap;
} names;

typedef struct recon {
  file *files;
  size_t nfiles, fcap;
  names cur, dur;         /* names now, and names made durable */
  const char *base_copy, *base_root;
  pl_stats *st;
} recon;

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) abort();
  return q;
}

static entry *names_find(names *ns, const char *p) {
  for (size_t i = 0; i < ns->n; i++)
    if (!strcmp(ns->v[i].path, p)) return &ns->v[i];
  return NULL;
}

static void names_set(names *ns, const char *p, uint64_t ino, int isdir) {
  entry *e = names_find(ns, p);
  if (!e) {
    if (ns->n == ns->cap) {
      ns->cap = ns->cap ? ns->cap * 2 : 32;
      ns->v = xrealloc(ns->v, ns->cap * sizeof *ns->v);
    }
    e = &ns->v[ns->n++];
    e->path = strdup(p);
  }
  e->ino = ino;
  e->isdir = isdir;
}

static void names_del(names *ns, const char *p) {
  entry *e = names_find(ns, p);
  if (!e) return;
  free(e->path);
  *e = ns->v[--ns->n];
}

static const char *name_of_ino(names *ns, uint64_t ino) {
  for (size_t i = 0; i < ns->n; i++)
    if (ns->v[i].ino == ino && !ns->v[i].isdir) return ns->v[i].path;
  return NULL;
}

static int parent_is(const char *p, const char *dir) {
  size_t l = strlen(dir);
  return !strncmp(p, dir, l) && p[l] == '/' && !strchr(p + l + 1, '/');
}

/* Directory dir was fsynced: its direct entries become durable as they are. */
static void dir_synced(recon *r, const char *dir) {
  for (size_t i = 0; i < r->dur.n;) {
    if (parent_is(r->dur.v[i].path, dir) && !names_find(&r->cur, r->dur.v[i].path)) {
      names_del(&r->dur, r->dur.v[i].path);
      continue;
    }
    i++;
  }
  for (size_t i = 0; i < r->cur.n; i++)
    if (parent_is(r->cur.v[i].path, dir))
      names_set(&r->dur, r->cur.v[i].path, r->cur.v[i].ino, r->cur.v[i].isdir);
}

static file *file_get(recon *r, uint64_t ino) {
  for (size_t i = 0; i < r->nfiles; i++)
    if (r->files[i].ino == ino) return &r->files[i];
  if (r->nfiles == r->fcap) {
    r->fcap = r->fcap ? r->fcap * 2 : 16;
    r->files = xrealloc(r->files, r->fcap * sizeof *r->files);
  }
  file *f = &r->files[r->nfiles++];
  memset(f, 0, sizeof *f);
  f->ino = ino;
  return f;
}

/* A file's synced contents start as the base copy's (if it existed). */
static void file_load(recon *r, file *f, const char *path_at_start) {
  if (f->loaded) return;
  f->loaded = 1;
  if (!r->base_copy || !path_at_start) return;
  size_t l = strlen(r->base_root);
  if (strncmp(path_at_start, r->base_root, l)) return;
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s%s", r->base_copy, path_at_start + l);
  f->dur = read_sparse(p);
}

static zbuf zbuf_copy(const zbuf *z) {
  zbuf c = *z;
  c.p = NULL;
  if (z->data) {
    c.p = xrealloc(NULL, z->data);
    memcpy(c.p, z->p, z->data);
  }
  return c;
}

static void buf_apply(zbuf *z, const pend *pd, size_t cut) {
  if (pd->op == OP_TRUNC) {
    z->len = (size_t)pd->a;
    if (z->data > z->len) z->data = z->len; /* an extension reads as zeros */
  } else if (pd->op == OP_FALLOC) {
    size_t end = (size_t)(pd->a + pd->b);
    if (end > z->len) z->len = end;
  } else {
    size_t n = cut < pd->dlen ? cut : pd->dlen;
    size_t end = (size_t)pd->a + n;
    if (end > z->len) z->len = end;
    zbuf_fill(z, (size_t)pd->a);
    if (end > z->data) {
      z->p = xrealloc(z->p, end);
      z->data = end;
    }
    if (n) memcpy(z->p + pd->a, pd->data, n); /* a torn write may keep none */
  }
}

/* The file's first k pending changes become durable. */
static void file_sync_n(file *f, size_t k) {
  if (k > f->npend) k = f->npend;
  for (size_t i = 0; i < k; i++) buf_apply(&f->dur, &f->pend[i], SIZE_MAX);
  memmove(f->pend, f->pend + k, (f->npend - k) * sizeof *f->pend);
  f->npend -= k;
  f->applied += k;
}

static void file_sync(file *f) { file_sync_n(f, f->npend); }

static void file_sync_begin(file *f, uint64_t id, uint64_t t) {
  if (f->nmarks == f->mcap) {
    f->mcap = f->mcap ? f->mcap * 2 : 4;
    f->marks = xrealloc(f->marks, f->mcap * sizeof *f->marks);
  }
  f->marks[f->nmarks++] = (sync_mark){id, f->applied + f->npend, t};
}

/* The sync `id` ended: what was written before it began is durable. A sync
   whose beginning the journal does not hold (none: an older journal) covers
   everything. */
static void file_sync_end(file *f, uint64_t id) {
  for (size_t i = 0; i < f->nmarks; i++) {
    if (f->marks[i].id != id) continue;
    uint64_t upto = f->marks[i].upto;
    f->marks[i] = f->marks[--f->nmarks];
    if (upto > f->applied) file_sync_n(f, (size_t)(upto - f->applied));
    return;
  }
  file_sync(f);
}

static void file_pend(file *f, uint32_t op, uint64_t a, uint64_t b, const unsigned char *d,
                      size_t dlen) {
  if (f->npend == f->cap) {
    f->cap = f->cap ? f->cap * 2 : 16;
    f->pend = xrealloc(f->pend, f->cap * sizeof *f->pend);
  }
  f->pend[f->npend++] = (pend){op, a, b, d, dlen};
}

static uint64_t rnd(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* The file's contents after the power loss, under the model. */
static zbuf file_final(const file *f, const pl_model *m, uint64_t *seed, pl_stats *st) {
  zbuf b = zbuf_copy(&f->dur);
  st->unsynced_writes += f->npend;
  if (m->mode == PL_TORN && f->npend) {
    size_t keep = (size_t)(rnd(seed) % (f->npend + 1)); /* whole changes kept */
    for (size_t i = 0; i < keep; i++) buf_apply(&b, &f->pend[i], SIZE_MAX);
    st->unsynced_kept += keep;
    if (keep < f->npend && f->pend[keep].op == OP_WRITE && f->pend[keep].dlen > 512) {
      size_t sectors = f->pend[keep].dlen / 512;
      buf_apply(&b, &f->pend[keep], 512 * (size_t)(rnd(seed) % sectors));
      st->unsynced_kept++;
    }
  } else if (m->mode == PL_PAGES && f->npend) {
    zbuf latest = zbuf_copy(&f->dur);
    for (size_t i = 0; i < f->npend; i++) buf_apply(&latest, &f->pend[i], SIZE_MAX);
    /* The size follows the latest metadata or the synced one, at random. */
    size_t flen = rnd(seed) & 1 ? latest.len : b.len;
    if (flen < b.len) {
      b.len = flen;
      if (b.data > flen) b.data = flen;
    }
    b.len = flen;
    /* Past both buffers' stored bytes every page is zeros in both. */
    size_t stored = b.data > latest.data ? b.data : latest.data;
    zbuf_fill(&b, stored);
    zbuf_fill(&latest, stored);
    for (size_t pg = 0; pg * 4096 < b.len; pg++) {
      if (!(rnd(seed) & 1)) continue;
      size_t o = pg * 4096, n = b.len - o < 4096 ? b.len - o : 4096;
      if (o < latest.len) {
        size_t c = latest.len - o < n ? latest.len - o : n;
        if (o >= f->dur.len || (o < stored && memcmp(b.p + o, latest.p + o, c < stored - o ? c : stored - o)))
          st->unsynced_kept++;
        if (o < stored) memcpy(b.p + o, latest.p + o, c < stored - o ? c : stored - o);
      }
    }
    free(latest.p);
  }
  return b;
}

static uint64_t ld64(const unsigned char *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v; /* little-endian machines only, like the log's own tests */
}

/* A write to a WAL segment (or the next.tmp it is prepared in) is a run of
   frames; a marker frame (LSN bits 0; kind 1 DURABLE or 2 SWITCH; 32 bytes)
   says bytes [0, offset) of the file were fdatasynced before it was
   written. Check that against the journal: every write to the file below
   that offset must be covered by a sync that ended before this write (one
   that had begun before it was made). A marker that claims more is
   counted in st->bad_markers, the first one described in msg. */
static int wal_segment(const char *p) {
  size_t pl = strlen(p);
  return (pl > 4 && !strcmp(p + pl - 4, ".wal")) || (pl > 9 && !strcmp(p + pl - 9, "/next.tmp"));
}

static void check_markers(file *f, const rec *x, pl_stats *st, char *msg, size_t msglen) {
  if (!wal_segment(x->p)) return;
  f->wal = 1;
  if (x->h.a < 64) return;
  const unsigned char *d = x->data;
  size_t n = (size_t)x->h.dlen;
  for (size_t q = 0; q + 16 <= n;) {
    uint32_t len;
    memcpy(&len, d + q, 4);
    if (len < 16 || len > n - q) break;
    uint64_t lt = ld64(d + q + 8);
    uint64_t kind = lt >> 56;
    if (!(lt & ((1ull << 56) - 1)) && (kind == 1 || kind == 2) && len == 32) {
      uint64_t off = ld64(d + q + 16);
      for (size_t i = 0; i < f->npend; i++) {
        const pend *p = &f->pend[i];
        if (p->op != OP_WRITE || p->a >= off) continue;
        if (!st->bad_markers)
          snprintf(msg, msglen, "%s: a %s marker at offset %llu says [0, %llu) was "
                   "fdatasynced, but the write of %zu bytes at offset %llu was not",
                   x->p, kind == 1 ? "DURABLE" : "SWITCH",
                   (unsigned long long)(x->h.a + q), (unsigned long long)off, p->dlen,
                   (unsigned long long)p->a);
        st->bad_markers++;
        break;
      }
    }
    q += (len + 7u) & ~7u;
  }
}

static void read_whole(const char *path, unsigned char **buf, size_t *len) {
  zbuf z = read_sparse(path);
  zbuf_fill(&z, z.len);
  *buf = z.p;
  *len = z.len;
}

static int read_journal(const char *path, rec **recs, size_t *n, pl_stats *st) {
  unsigned char *buf;
  size_t len, o = 0, cap = 0;
  read_whole(path, &buf, &len);
  *recs = NULL;
  *n = 0;
  while (o + sizeof(rec_hdr) <= len) {
    rec_hdr h;
    memcpy(&h, buf + o, sizeof h);
    size_t total = sizeof h + h.plen + h.p2len + h.dlen + 4;
    uint32_t tail = 0;
    if (h.magic != PL_MAGIC || o + total > len) break;
    memcpy(&tail, buf + o + total - 4, 4);
    if (tail != PL_TAIL) break;
    if (*n == cap) {
      cap = cap ? cap * 2 : 256;
      *recs = xrealloc(*recs, cap * sizeof **recs);
    }
    rec *r = &(*recs)[(*n)++];
    r->h = h;
    unsigned char *q = buf + o + sizeof h;
    r->p = strndup((char *)q, h.plen);
    r->p2 = strndup((char *)q + h.plen, h.p2len);
    r->data = xrealloc(NULL, h.dlen);
    memcpy(r->data, q + h.plen + h.p2len, h.dlen);
    o += total;
  }
  st->journal_torn = o != len;
  free(buf);
  return 0;
}

static int copy_file(const char *from, const char *to) {
  zbuf b = read_sparse(from);
  int fd = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) {
    free(b.p);
    return -1;
  }
  int rc = write_sparse(fd, &b);
  close(fd);
  free(b.p);
  return rc;
}

static int seen_path(recon *r, const char *p) {
  return names_find(&r->cur, p) || names_find(&r->dur, p);
}

/* Copy from live what the journal never saw (LMDB's files, LOCK), into
   directories that exist in the image. */
static void copy_unseen(recon *r, const char *live, const char *out, const char *live_root,
                        const char *out_root) {
  DIR *d = opendir(live);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char lp[PATH_MAX], op[PATH_MAX];
    snprintf(lp, sizeof lp, "%s/%s", live, e->d_name);
    snprintf(op, sizeof op, "%s/%s", out, e->d_name);
    struct stat st, ost;
    if (lstat(lp, &st)) continue;
    if (S_ISDIR(st.st_mode)) {
      if (stat(op, &ost) == 0) copy_unseen(r, lp, op, live_root, out_root);
    } else if (S_ISREG(st.st_mode) && !seen_path(r, lp) && !name_of_ino(&r->cur, st.st_ino)) {
      copy_file(lp, op);
    }
  }
  closedir(d);
  (void)live_root;
  (void)out_root;
}

static int cmp_entry_path(const void *a, const void *b) {
  return strcmp(((const entry *)a)->path, ((const entry *)b)->path);
}

int pl_reconstruct(const char *journal_path, const char *live_dir, const char *base_copy,
                   const char *out_dir, const pl_model *m, pl_stats *st, char *msg,
                   size_t msglen) {
  pl_stats dummy;
  if (!st) st = &dummy;
  memset(st, 0, sizeof *st);
  rec *recs = NULL;
  size_t n = 0;
  read_journal(journal_path, &recs, &n, st);
  st->ops = n;
  char live[PATH_MAX];
  at_path(AT_FDCWD, live_dir, live, sizeof live);
  recon r;
  memset(&r, 0, sizeof r);
  r.base_copy = base_copy;
  r.base_root = live;
  r.st = st;
  uint64_t seed = m->seed ? m->seed : 1;

  for (size_t i = 0; i < n; i++) {
    rec *x = &recs[i];
    int failed = i + 1 < n && recs[i + 1].h.op == OP_FAILED;
    switch (x->h.op) {
    case OP_BASE:
      names_set(&r.cur, x->p, x->h.ino, (int)x->h.a);
      names_set(&r.dur, x->p, x->h.ino, (int)x->h.a);
      if (!x->h.a) file_load(&r, file_get(&r, x->h.ino), x->p);
      break;
    case OP_OPEN: {
      const char *old = name_of_ino(&r.cur, x->h.ino);
      if (x->h.b) { /* a directory */
        if (!names_find(&r.cur, x->p)) names_set(&r.cur, x->p, x->h.ino, 1);
        break;
      }
      file *f = file_get(&r, x->h.ino);
      if (!f->loaded) f->loaded = 1; /* new to us: created empty or unseen */
      if (old && strcmp(old, x->p)) names_del(&r.cur, old); /* renamed unseen */
      names_set(&r.cur, x->p, x->h.ino, 0);
      break;
    }
    case OP_WRITE: case OP_TRUNC: case OP_FALLOC: {
      file *f = file_get(&r, x->h.ino);
      f->loaded = 1;
      /* The path of a write is read (readlink) when it is journaled, which
         can race with a rename journaled by another thread: a file with a
         name keeps the one the name operations gave it. */
      if (!name_of_ino(&r.cur, x->h.ino)) names_set(&r.cur, x->p, x->h.ino, 0);
      if (x->h.op == OP_WRITE) check_markers(f, x, st, msg, msglen);
      file_pend(f, x->h.op, x->h.a, x->h.b, x->data, (size_t)x->h.dlen);
      break;
    }
    case OP_SYNC_BEGIN:
      file_sync_begin(file_get(&r, x->h.ino), x->h.a, x->h.b);
      break;
    case OP_SYNC:
      if (x->h.a) dir_synced(&r, x->p);
      else file_sync_end(file_get(&r, x->h.ino), x->h.b);
      break;
    case OP_RENAME:
      if (failed) break;
      {
        entry *e = names_find(&r.cur, x->p);
        uint64_t ino = e ? e->ino : x->h.ino;
        int isdir = e ? e->isdir : 0;
        names_del(&r.cur, x->p);
        names_set(&r.cur, x->p2, ino, isdir);
      }
      break;
    case OP_UNLINK:
      if (!failed) names_del(&r.cur, x->p);
      break;
    case OP_MKDIR:
      if (!failed) names_set(&r.cur, x->p, 0, 1);
      break;
    default:
      break;
    }
  }

  for (size_t i = 0; i < r.nfiles; i++) {
    const file *f = &r.files[i];
    for (size_t k = 0; f->wal && k < f->nmarks; k++)
      if (f->marks[k].t && (!st->oldest_sync_begun_ns || f->marks[k].t < st->oldest_sync_begun_ns))
        st->oldest_sync_begun_ns = f->marks[k].t;
    for (size_t k = 0; f->wal && k < f->npend; k++)
      if (f->pend[k].op == OP_WRITE && f->pend[k].b &&
          (!st->oldest_unsynced_wal_write_ns || f->pend[k].b < st->oldest_unsynced_wal_write_ns))
        st->oldest_unsynced_wal_write_ns = f->pend[k].b;
  }

  names *fin = m->dir_entries_need_fsync ? &r.dur : &r.cur;
  if (m->dir_entries_need_fsync) {
    for (size_t i = 0; i < r.cur.n; i++)
      if (!names_find(&r.dur, r.cur.v[i].path)) st->names_undone++;
    for (size_t i = 0; i < r.dur.n; i++)
      if (!names_find(&r.cur, r.dur.v[i].path)) st->names_undone++;
  }
  if (fin->n) qsort(fin->v, fin->n, sizeof *fin->v, cmp_entry_path); /* parents first */

  int rc = 0;
  size_t ll = strlen(live);
  if (mkdir(out_dir, 0700)) {
    snprintf(msg, msglen, "mkdir %s: %s", out_dir, strerror(errno));
    rc = -1;
  }
  /* The data directory itself must be a durable name too (its parent's
     fsync), or nothing of it survives. */
  int root_ok = names_find(fin, live) != NULL || !m->dir_entries_need_fsync;
  for (size_t i = 0; !rc && root_ok && i < fin->n; i++) {
    entry *e = &fin->v[i];
    if (strncmp(e->path, live, ll) || e->path[ll] != '/') continue;
    char op[PATH_MAX];
    snprintf(op, sizeof op, "%s%s", out_dir, e->path + ll);
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", op);
    *strrchr(parent, '/') = '\0';
    struct stat ps;
    if (stat(parent, &ps)) continue; /* its directory did not survive */
    if (e->isdir) {
      mkdir(op, 0700);
      continue;
    }
    file *f = NULL;
    for (size_t k = 0; k < r.nfiles; k++)
      if (r.files[k].ino == e->ino) f = &r.files[k];
    if (!f) continue;
    zbuf b = file_final(f, m, &seed, st);
    int fd = open(op, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write_sparse(fd, &b)) {
      snprintf(msg, msglen, "write %s: %s", op, strerror(errno));
      rc = -1;
    }
    if (fd >= 0) close(fd);
    free(b.p);
  }
  if (!rc && root_ok) copy_unseen(&r, live, out_dir, live, out_dir);

  for (size_t i = 0; i < n; i++) {
    free(recs[i].p);
    free(recs[i].p2);
    free(recs[i].data);
  }
  free(recs);
  for (size_t i = 0; i < r.nfiles; i++) {
    free(r.files[i].dur.p);
    free(r.files[i].pend);
    free(r.files[i].marks);
  }
  free(r.files);
  for (size_t i = 0; i < r.cur.n; i++) free(r.cur.v[i].path);
  for (size_t i = 0; i < r.dur.n; i++) free(r.dur.v[i].path);
  free(r.cur.v);
  free(r.dur.v);
  return rc;
}
