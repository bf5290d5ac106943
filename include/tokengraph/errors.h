/*
 * tokengraph error codes.
 *
 * Every public function returns int: 0 on success, a negative value on
 * failure. Operating-system failures are returned as -errno (for example
 * -ENOENT from opening a missing directory). tokengraph's own conditions use
 * the reserved range [TG_ERR_LAST, TG_ERR_FIRST], generated from the one
 * table below, which also drives tg_strerror() and tg_err_name().
 *
 * A full disk (TG_ENOSPC), an I/O error (TG_EIO) and a quota (TG_EQUOTA) are
 * kept apart: the first two put a durable store in a failed state that only
 * a reopen clears; a quota leaves the store usable and unchanged.
 */
#ifndef TOKENGRAPH_ERRORS_H
#define TOKENGRAPH_ERRORS_H

#include "tokengraph/version.h"

#ifdef __cplusplus
extern "C" {
#endif


/* XX(name, number, message) */
#define TG_ERR_MAP(XX)                                                        \
  XX(EQUOTA,    -30001, "quota reached: the call was rejected and nothing "   \
                        "changed")                                            \
  XX(ENOSPC,    -30002, "no space left on device: the log is failed; free "   \
                        "space, then reopen the store")                       \
  XX(EIO,       -30003, "I/O error: the log is failed and nothing after the " \
                        "last durable record is promised; reopen the store "  \
                        "to recover")                                         \
  XX(EAGAIN,    -30004, "queue full: the record was not logged; retry")       \
  XX(ENOTFOUND, -30005, "no such token or connection")                        \
  XX(EINVAL,    -30006, "invalid argument")                                   \
  XX(ENOMEM,    -30007, "out of memory")                                      \
  XX(ECORRUPT,  -30008, "data is corrupt")                                    \
  XX(EVERSION,  -30009, "written by a newer format version than this "        \
                        "library reads")                                      \
  XX(ECONFIG,   -30010, "invalid configuration")                              \
  XX(ELOCKED,   -30011, "data directory is in use by another process")        \
  XX(ENOTTG,    -30012, "not a tokengraph data directory")                    \
  XX(ECLOSED,   -30013, "the handle is closed")                               \
  XX(EEXIST,    -30014, "already exists")                                  \
  XX(EREADONLY, -30015, "the store was opened read-only: it cannot be "     \
                        "changed")                                            \
  XX(ENOTSUP,   -30016, "not supported by this build (replication needs "    \
                        "libnats)")                                           \
  XX(EFENCED,   -30017, "fenced: another writer took over the replication "  \
                        "stream; this store refuses changes (reads still "    \
                        "work); reopen it as a replica")

enum tg_errno {
#define TG__ERR_ENUM(name, num, msg) TG_##name = (num),
  TG_ERR_MAP(TG__ERR_ENUM)
#undef TG__ERR_ENUM
  TG_ERR_FIRST = -30001,
  TG_ERR_LAST = -30017
};

/*
 * A static, human-readable description of err: one of the codes above, a
 * -errno value, or 0. Never NULL; the string must not be freed.
 */
TG_API const char *tg_strerror(int err);

/*
 * The symbolic name of err ("TG_EQUOTA", "ENOENT", "OK"), static, never NULL.
 */
TG_API const char *tg_err_name(int err);

#ifdef __cplusplus
}
#endif
#endif /* TOKENGRAPH_ERRORS_H */
