/* The messages and names behind TG_ERR_MAP; see include/tokengraph/errors.h. */
#include <stddef.h>
#include <string.h>

#include "tokengraph/errors.h"

/* One row per code, from the map: both lookups read the same table. */
typedef struct tg__err_row {
  int code;
  const char *name;
  const char *msg;
} tg__err_row;

static const tg__err_row tg__errs[] = {
#define TG__ERR_ROW(name, num, msg) {TG_##name, "TG_" #name, msg},
    TG_ERR_MAP(TG__ERR_ROW)
#undef TG__ERR_ROW
    {0, "OK", "success"},
};

static const tg__err_row *err_row(int err) {
  for (size_t i = 0; i < sizeof tg__errs / sizeof tg__errs[0]; i++)
    if (tg__errs[i].code == err) return &tg__errs[i];
  return NULL;
}

/* A negated errno is below 0 and above -4096 (the kernel's range). */
static int is_errno(int err) { return err < 0 && err > -4096; }

const char *tg_strerror(int err) {
  const tg__err_row *r = err_row(err);
  if (r) return r->msg;
  /* strerrordesc_np is static and thread-safe, unlike strerror(). */
  const char *d = is_errno(err) ? strerrordesc_np(-err) : NULL;
  return d ? d : "unknown error";
}

const char *tg_err_name(int err) {
  const tg__err_row *r = err_row(err);
  if (r) return r->name;
  const char *n = is_errno(err) ? strerrorname_np(-err) : NULL;
  return n ? n : "UNKNOWN";
}
