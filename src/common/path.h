/* Path joining for the project's few file names (segments, the identity
   file, the checkpoint directory). */
#ifndef TG_COMMON_PATH_H
#define TG_COMMON_PATH_H

#include <stddef.h>

/* "dir/name" into out (n bytes). Returns 0, or -ENAMETOOLONG when it does
   not fit (out is then an empty string). */
int tg__path_join(char *out, size_t n, const char *dir, const char *name);

/* The same in a malloc'd string the caller frees; NULL when out of memory. */
char *tg__path_join_alloc(const char *dir, const char *name);

/* Split path into its directory (into dir, "." when there is none) and its
   last component (*base points into path). TG_EINVAL when that component
   is empty, "." or ".."; -ENAMETOOLONG when dir does not fit. */
int tg__split_path(const char *path, char *dir, size_t dirlen, const char **base);

/* A path that names, for as long as fd stays open, exactly the file or
   directory open as fd: "/proc/self/fd/N" into out (n bytes, 32 is
   enough). Re-opening it reaches the same inode whatever is renamed or
   linked in the meantime, so a library that only takes paths (LMDB, and the
   WAL, which joins names under its directory path) cannot be led elsewhere
   by a symbolic link or a swapped directory. 0, or -ENOENT when /proc is
   not mounted (the path does not reach fd's inode: the caller falls back to
   the plain name), -ENAMETOOLONG, -errno from fstat. */
int tg__fd_path(char *out, size_t n, int fd);

#endif /* TG_COMMON_PATH_H */
