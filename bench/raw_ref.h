/*
 * The raw disk references the benchmarks compare the WAL against, shared by
 * tg-bench and tg-stress so that both measure exactly the same thing. Each
 * writes a scratch file in dir (removed afterwards) and returns the seconds
 * it took, or -1 on an I/O error.
 */
#ifndef TG_BENCH_RAW_REF_H
#define TG_BENCH_RAW_REF_H

#include <stddef.h>
#include <stdint.h>

/* `bytes` bytes in 1 MiB write() calls, one fdatasync per chunk. */
double tgb_raw_chunks_seconds(const char *dir, uint64_t bytes);

/* `records` write() calls of `record_bytes` each, an fdatasync after each
   (the STRICT reference). */
double tgb_raw_sync_each_seconds(const char *dir, uint64_t records, size_t record_bytes);

#endif
