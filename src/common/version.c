/* tg_version(): the linked library's version (tokengraph/version.h). */
#include "tokengraph/version.h"

const char *tg_version(void) { return TG_VERSION_STRING; }
