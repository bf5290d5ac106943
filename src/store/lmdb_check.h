/*
 * A structural check of an LMDB data file (lmdb_check.c), run before LMDB
 * is handed the file: LMDB trusts every byte of data.mdb (it crashes,
 * asserts or loops on a damaged one), so the store reads the file first
 * with bounds on everything and opens it only when the check passes.
 * Internal to src/store/.
 */
#ifndef TG_STORE_LMDB_CHECK_H
#define TG_STORE_LMDB_CHECK_H

#include <stddef.h>
#include <stdint.h>

/* What one named database of the file must look like. */
typedef struct tg__lmdb_schema {
  const char *name;     /* key in the main database */
  unsigned flags;       /* its persistent flags (MDB_INTEGERKEY or 0) */
  unsigned ksize_min;   /* leaf key sizes allowed */
  unsigned ksize_max;
  unsigned dsize_min;   /* leaf value sizes allowed */
  unsigned dsize_max;
} tg__lmdb_schema;

/* What the check found. */
typedef struct tg__lmdb_info {
  uint64_t txnid;       /* the chosen meta page's transaction, 0: nothing
                           was ever committed */
  uint64_t entries[8];  /* per schema entry: its records (0 when absent) */
  uint32_t psize;       /* page size */
  uint64_t last_pgno;   /* last page in use */
} tg__lmdb_info;

/*
 * Check the data file open as fd (a regular file; path names it in msg)
 * against LMDB 0.9's on-disk format (64-bit, little-endian): both meta
 * pages, the chosen one's place (meta page txnid & 1, the one every LMDB
 * open mode reads), page size, last page and trees; every page of
 * the free database, the main database and each named database in
 * schema[0..n) (n <= 8) is read once with pread, checked for its type, its
 * page number, its bounds and the order of its keys, and may be reached
 * only once; every free page must lie within the file and belong to no
 * tree. A database the main database names but the schema does not, a
 * schema database missing while another is present, or a flag LMDB would
 * act on that we never set, is refused too.
 * Returns 0 (info filled), TG_ENOTTG (not an LMDB file), TG_EVERSION (an
 * LMDB data version this library does not read), TG_ECORRUPT, TG_ENOMEM or
 * -errno, with a one-line msg naming path and the page.
 */
int tg__lmdb_check(int fd, const char *path, const tg__lmdb_schema *schema,
                   size_t n, tg__lmdb_info *info, char *msg, size_t len);

/*
 * Only the part of tg__lmdb_check() that mdb_env_open() depends on: both
 * meta pages, the page size, the chosen meta's place, its last page within
 * the file, its databases' flags. Cheap (two preads), for a file an owner
 * may be committing to, before LMDB is opened on it; the trees are checked
 * once a reader slot pins a snapshot (info->entries stay 0).
 */
int tg__lmdb_check_metas(int fd, const char *path, tg__lmdb_info *info, char *msg,
                         size_t len);

#endif /* TG_STORE_LMDB_CHECK_H */
