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

#endif /* TG_COMMON_PATH_H */
