/*
 * A whole data directory from fuzzer bytes, for the targets that open or
 * inspect one (fuzz_datadir.c, fuzz_replay.c), and the checks that nothing
 * outside it was touched.
 *
 * The targets take one byte of flags first (FZ_FIX_CRC and their own),
 * then a sequence of entries, each one file (or link, FIFO,
 * directory) of the directory:
 *
 *   kind    u8   low 5 bits: a name from a fixed list of plausible and odd
 *                names (fz_names in fuzz_dir.c); high 3 bits: what to make
 *                0, 1, 2, 7  a regular file
 *                3           a regular file in wal/ named by the LSN below
 *                4           a symbolic link to a file or directory outside
 *                            the case directory (the first data byte picks)
 *                5           a FIFO
 *                6           a directory
 *   lsn     u64  (kind 3 only) the segment's name, %020llu.wal
 *   offset  u24  where the data goes in the file
 *   size    u24  the file is extended with zeros to at least this size
 *   len     u16  data bytes that follow (fewer if the input ends)
 *   data
 *
 * A second entry for the same file writes into it at its offset without
 * truncating, so a sparse file (a preallocated segment, an LMDB file with a
 * few pages in use) takes a few entries of its non-zero bytes only: the
 * seed packer (fuzz_seed.c) writes real directories that way.
 *
 * With TG_FUZZ_REGULAR_ONLY=1 in the environment, kinds 4-6 make regular
 * files too: for a run that is to look at contents only.
 *
 * Outside the case directory lie a victim file and an empty directory that
 * the links point to: fz_check_outside() aborts if either changed.
 */
#ifndef TG_FUZZ_DIR_H
#define TG_FUZZ_DIR_H

#include <stddef.h>
#include <stdint.h>

#define FZ_KIND_SEGMENT 3
#define FZ_KIND_LINK 4
#define FZ_KIND_FIFO 5
#define FZ_KIND_DIR 6
#define FZ_MAX_SIZE (16u << 20) /* u24: the largest size an entry can ask */

/* Once per process: the base temporary directory (removed at exit) and
   the outside files. `tag` names the base ("tg_fuzz_<tag>_XXXXXX"). */
void fz_init(const char *tag);

/* The base directory, and a scratch path in it for the target's own use. */
const char *fz_base(void);

/* Remove whatever `dir` holds (links are removed, never followed) and the
   directory itself; nothing if it does not exist. Aborts on failure, so a
   leak of disk across iterations is a finding. */
void fz_remove(const char *dir);

/* fz_build() flags. FZ_FIX_CRC: after the entries are made, every wal/
   file named *.wal gets a valid header CRC and valid frame CRCs (as far
   as its frame lengths chain), so that mutated records get past the CRC
   to replay. */
#define FZ_FIX_CRC 1u

/* Make `dir` (removed first if it exists) and decode the entries of
   data[0..size) into it. Entries that cannot be made (a parent that is a
   file, say) are skipped: the directory is whatever could be made. */
void fz_build(const char *dir, const uint8_t *data, size_t size, unsigned flags);

/* Abort if the victim file or the outside directory differ from what
   fz_init() made. */
void fz_check_outside(void);

/* The name list, for the seed packer: index of `name`, or -1. */
int fz_name_index(const char *name);

#endif
