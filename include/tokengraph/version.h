/*
 * tokengraph version and the export marker every public header uses.
 * The numbers here are the one source: CMake reads them for the library's
 * SONAME and the pkg-config file, and tg_version() returns the same string
 * from the library that was linked (which may differ from the header a
 * program was compiled with).
 */
#ifndef TOKENGRAPH_VERSION_H
#define TOKENGRAPH_VERSION_H

#ifdef __cplusplus
extern "C" {
#endif

#define TG_VERSION_MAJOR 0
#define TG_VERSION_MINOR 1
#define TG_VERSION_PATCH 0

#define TG__STR2(x) #x
#define TG__STR(x) TG__STR2(x)
/* "MAJOR.MINOR.PATCH" of the headers being compiled against. */
#define TG_VERSION_STRING                                                    \
  TG__STR(TG_VERSION_MAJOR) "." TG__STR(TG_VERSION_MINOR) "." TG__STR(TG_VERSION_PATCH)
/* One number for comparisons: MAJOR * 10000 + MINOR * 100 + PATCH. */
#define TG_VERSION_NUMBER                                                    \
  (TG_VERSION_MAJOR * 10000 + TG_VERSION_MINOR * 100 + TG_VERSION_PATCH)

/* Marks the library's exported symbols; everything else stays hidden. */
#if defined(TG_BUILDING) && defined(__GNUC__)
#define TG_API __attribute__((visibility("default")))
#else
#define TG_API
#endif

/* The version of the linked library, "MAJOR.MINOR.PATCH": static, never
   NULL, do not free. */
TG_API const char *tg_version(void);

#ifdef __cplusplus
}
#endif
#endif /* TOKENGRAPH_VERSION_H */
