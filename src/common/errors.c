/* The messages and names behind TG_ERR_MAP; see include/tokengraph/errors.h. */
#include <string.h>

#include "tokengraph/errors.h"

const char *tg_strerror(int err) {
  switch (err) {
#define TG__ERR_MSG(name, num, msg) case TG_##name: return msg;
    TG_ERR_MAP(TG__ERR_MSG)
#undef TG__ERR_MSG
  case 0: return "success";
  default: break;
  }
  if (err < 0 && err > -4096) {
    /* strerrordesc_np is static and thread-safe, unlike strerror(). */
    const char *d = strerrordesc_np(-err);
    if (d) return d;
  }
  return "unknown error";
}

const char *tg_err_name(int err) {
  switch (err) {
#define TG__ERR_NAME(name, num, msg) case TG_##name: return "TG_" #name;
    TG_ERR_MAP(TG__ERR_NAME)
#undef TG__ERR_NAME
  case 0: return "OK";
  default: break;
  }
  if (err < 0 && err > -4096) {
    const char *n = strerrorname_np(-err);
    if (n) return n;
  }
  return "UNKNOWN";
}
