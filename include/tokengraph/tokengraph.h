/*
 * tokengraph: an embedded storage core holding a graph of 64-byte tokens and
 * 64-byte connections, guarded by inline quotas.
 *
 * Threading model: a tg_store handle may be used from any number of threads
 * at once. Every call that changes the graph takes the store's one lock, so
 * changes are serialised in a single order (the log's); a thread waiting
 * for the lock sleeps in the kernel after a brief spin. Reads
 * (tg_token_get(), tg_connection_get(), tg_token_edges(),
 * tg_token_edges_filtered(), tg_store_stats_get()) take no lock and never
 * wait for a writer's call to finish: each returns an image of the object
 * as it was at one moment between the call's start and end, never one torn
 * between two changes (the edge walk: see tg_token_edges()). On a
 * read-only handle they take the lock, which only tg_store_refresh()
 * contends. The quota pressure and eviction callbacks run with the lock
 * held and must not call back into the same store; the callbacks of
 * tg_token_edges() (except on a read-only handle) and of the scans
 * (tg_token_scan()) run without it and may.
 *
 * Ids: token and connection ids are 32-bit, never 0, stable for the object's
 * life, and handed out in increasing order. A deleted id is not handed out
 * again until the 32-bit id space wraps (after 4,294,967,295 creates), and
 * even then only after every other free id: an id kept outside the store
 * names its object or nothing (TG_ENOTFOUND), never a later one, also
 * after a restart (docs/data-layout.md, "Ids").
 *
 * Ownership: nothing returned by this API needs freeing except the handle
 * itself (tg_store_close()). Structures passed in are copied.
 */
#ifndef TOKENGRAPH_H
#define TOKENGRAPH_H

#include <stddef.h>
#include <stdint.h>

#include "tokengraph/errors.h"
#include "tokengraph/version.h"
#include "tokengraph/wal.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- tokens and connections ------------------------------------------- */

#define TG_SPACES 8 /* semantic coordinate spaces per token */

/* Token flags (tg_token.flags, bits 0-7). */
enum tg_token_flag {
  TG_TOKEN_ACTIVE = 1u << 0,       /* set on every live token by the store */
  TG_TOKEN_PERSISTENT = 1u << 1,   /* never evicted under memory pressure */
  TG_TOKEN_MUTABLE = 1u << 2,
  TG_TOKEN_SYNCHRONIZED = 1u << 3,
  TG_TOKEN_COMPRESSED = 1u << 4,
  TG_TOKEN_ENCRYPTED = 1u << 5,
  TG_TOKEN_DIRTY = 1u << 6,        /* changed since the last checkpoint */
  TG_TOKEN_LOCKED = 1u << 7
};
#define TG_TOKEN_ENTITY_SHIFT 8    /* bits 8-11: entity type (0-15) */
#define TG_TOKEN_ENTITY_MASK 0x0F00u
#define TG_TOKEN_USER_SHIFT 12     /* bits 12-15: free for the application */
#define TG_TOKEN_USER_MASK 0xF000u

/*
 * A token: exactly 64 bytes, one cache line. Coordinates are int16 fixed
 * point (the scale is the application's). The byte layout is in
 * docs/data-layout.md and is the on-disk layout too (little-endian).
 */
typedef struct tg_token {
  int16_t coord[TG_SPACES][3]; /* (x, y, z) per semantic space        0..47 */
  uint32_t id;                 /* assigned by the store, never 0     48..51 */
  uint16_t flags;              /* enum tg_token_flag | entity | user 52..53 */
  uint8_t field_radius;        /*                                        54 */
  uint8_t field_strength;      /*                                        55 */
  float weight;                /* eviction takes lowest weight first 56..59 */
  uint32_t timestamp;          /* Unix seconds                       60..63 */
} tg_token;

/* Connection types: 11 categories of 16 types each (176 in all). */
enum tg_conn_category {
  TG_CAT_SEMANTIC = 0,
  TG_CAT_CAUSAL,
  TG_CAT_TEMPORAL,
  TG_CAT_SPATIAL,
  TG_CAT_LOGICAL,
  TG_CAT_ASSOCIATIVE,
  TG_CAT_STRUCTURAL,
  TG_CAT_FUNCTIONAL,
  TG_CAT_EMOTIONAL,
  TG_CAT_RULE_METAPHOR,
  TG_CAT_DYNAMIC,
  TG_CAT_COUNT /* 11 */
};
#define TG_CONN_TYPES (TG_CAT_COUNT * 16) /* 176 */
#define TG_CONN_TYPE(category, n) ((uint8_t)((category) * 16 + (n)))
#define TG_CONN_CATEGORY(type) ((type) / 16)

/*
 * A connection from token `from` to token `to`: exactly 64 bytes. The four
 * link fields thread it into the outgoing list of `from` and the incoming
 * list of `to`; the store owns them (values passed in are ignored).
 */
typedef struct tg_connection {
  uint32_t from;             /* source token id                       0..3 */
  uint32_t to;               /* target token id                       4..7 */
  uint32_t next_out;         /* next connection leaving `from`, 0 = end   */
  uint32_t prev_out;         /* previous one, 0 = `from`'s list head      */
  uint32_t next_in;          /* next connection arriving at `to`          */
  uint32_t prev_in;          /* previous one                        ..23 */
  uint8_t type;              /* 0..175, see TG_CONN_TYPE()             24 */
  uint8_t rigidity;          /*                                        25 */
  uint8_t active_levels;     /* one bit per semantic space             26 */
  uint8_t reserved0;         /* zero                                   27 */
  uint16_t flags;            /* application flags                  28..29 */
  uint16_t reserved1;        /* zero                               30..31 */
  float weight;              /*                                    32..35 */
  float pull_strength;       /*                                    36..39 */
  uint32_t activation_count; /*                                    40..43 */
  uint32_t created;          /* Unix seconds                       44..47 */
  uint32_t last_activated;   /* Unix seconds                       48..51 */
  float confidence;          /* 0..1                               52..55 */
  uint32_t id;               /* assigned by the store, never 0     56..59 */
  uint32_t reserved2;        /* zero                               60..63 */
} tg_connection;

/* ---- configuration ---------------------------------------------------- */

/* What the guardian reports to tg_guardian_config.on_pressure. */
typedef struct tg_pressure_event {
  uint64_t memory_bytes;     /* memory in use when the threshold was crossed */
  uint64_t soft_limit_bytes; /* max_memory_bytes * memory_threshold */
  uint64_t max_memory_bytes;
  uint64_t live_tokens;
} tg_pressure_event;

/*
 * Quotas, checked inline on every create/connect. A hard quota rejects the
 * call with TG_EQUOTA and changes nothing. Memory is counted from the
 * store's own counters: 64 bytes per live token or connection plus the
 * adjacency tables (see docs/quotas.md).
 */
typedef struct tg_guardian_config {
  uint64_t max_tokens;       /* live tokens; default 10,000,000 */
  uint64_t max_connections;  /* live connections; default 100,000,000 */
  uint64_t max_memory_bytes; /* default 1,024,000,000 */
  double memory_threshold;   /* soft limit as a fraction of max memory, (0,1];
                                default 0.8 */
  double cleanup_margin;     /* eviction stops at threshold - margin (a
                                fraction of max memory); default 0.05 */
  uint32_t max_degree;       /* connections in + out of one token; default
                                1,000,000 */
  int cleanup;               /* 0 (default): nothing is ever deleted behind
                                the application's back: crossing the soft
                                limit calls on_pressure, and a create or
                                connect past max_memory_bytes gets
                                TG_EQUOTA (tg_quota_exceeded() says
                                TG_QUOTA_MEMORY). 1 (opt-in eviction):
                                crossing the soft limit evicts
                                non-PERSISTENT tokens, lowest weight first,
                                and on_evict is told their ids */
  void (*on_pressure)(void *arg, const tg_pressure_event *ev);
  void *on_pressure_arg;
  /* With cleanup = 1: called once per eviction pass, before the create or
     connect that caused it returns, with the ids of the tokens the pass
     evicted (n >= 1; each token's connections went with it). Runs on the
     calling thread with the store locked and must not call into the
     store; `ids` is valid only during the call. May be NULL. */
  void (*on_evict)(void *arg, const uint32_t *ids, size_t n);
  void *on_evict_arg;
} tg_guardian_config;

/*
 * Durability of a store opened with a data directory (ignored in memory):
 * every mutation is logged to the WAL before the call returns, and
 * tg_store_config.wal.level says when that record is on stable storage.
 * The levels and what each gives up are described once, at enum
 * tg_wal_level in tokengraph/wal.h; TG_STRICT, TG_BALANCED and TG_RELAXED
 * are the same values under shorter names. TG_REPLICATED's promise (the
 * record fdatasynced here and acknowledged by the NATS stream: in memory
 * on its quorum, not yet fsynced there, on nats-server 2.9) can also be
 * waited for per group of calls made at another level:
 * tg_wait_replicated() ("the replicated position" below).
 */
#define TG_STRICT TG_WAL_STRICT
#define TG_BALANCED TG_WAL_BALANCED
#define TG_RELAXED TG_WAL_RELAXED
#define TG_REPLICATED TG_WAL_REPLICATED

typedef struct tg_store_config {
  tg_guardian_config guardian;
  tg_wal_config wal;         /* the log's level and tunables, with the
                                WAL's defaults and limits (tokengraph/wal.h) */
  uint64_t checkpoint_bytes; /* durable stores: automatic checkpoint when
                                this many WAL bytes were written since the
                                last one; 0 = only tg_checkpoint(); default
                                256 MiB */
  int crash_dump;            /* durable stores: 1 (default) installs the
                                black box's fatal-signal handler, which dumps
                                recent events to DIR/blackbox.json on
                                SIGSEGV, SIGBUS, SIGABRT or SIGFPE (see
                                tokengraph/trace.h); 0 leaves signals alone */
  int read_only;             /* 1: open a data directory that another
                                process may hold, without writing to it and
                                without taking its LOCK (tg_store_refresh();
                                docs/operations.md, "Reading a live store").
                                Default 0 */
  /* Replication (docs/durability.md, "REPLICATED"): both NULL (default) =
     none. With both set, a durable store ships every record its WAL
     writes to the NATS JetStream stream TG_<repl_name> (subject
     tg.<repl_name>.wal) at every level, and wal.level may be
     TG_REPLICATED. Needs a build with libnats, else tg_store_open() fails
     with TG_ENOTSUP. The strings are copied at open. */
  const char *nats_url;      /* e.g. "nats://127.0.0.1:4222" */
  const char *repl_name;     /* store name N: [A-Za-z0-9_-], 1..64 chars */
  int repl_replicas;         /* copies the stream keeps when it is created
                                here: 1 (default) or 3 (a 3-server cluster) */
  uint64_t repl_epoch;       /* the epoch to publish in (Tg-Epoch, the
                                Nats-Msg-Id); 0 (default): the stream's
                                last message's, 1 for an empty stream. A
                                promoted replica passes the epoch its lease
                                gave it; a stream whose last message has a
                                higher epoch refuses the open (TG_EFENCED) */
  uint32_t repl_ack_timeout_ms; /* a message the stream has not acknowledged
                                after this long fails the log (TG_EIO,
                                tg_store_close and reopen to resume
                                shipping); default 10000 */
  int repl_snapshots;        /* 1 (default): after each checkpoint, publish
                                it for new replicas and purge the stream
                                below the older of the two newest
                                (tg_repl_snapshot_publish(); its failure
                                fails no checkpoint); 0: never */
  uint32_t repl_lease_ttl_ms; /* the leader lease (KV TG_LEASE_<repl_name>,
                                key leader; docs/operations.md,
                                "Replication"): the store takes it at open
                                for its epoch (TG_EFENCED when a newer
                                epoch holds it: a replica was promoted) and
                                renews it every third of this; a renewal
                                that finds another writer's newer epoch
                                fences the store (TG_EFENCED); one that
                                cannot reach the server tries again. A
                                clean close releases it. Followers judge a
                                lease not renewed for this long expired.
                                Default 10000 (10 s); at least 150 */
  uint64_t prefault_bytes;   /* memory to fault in at open, in 2 MiB blocks
                                (rounded up), which the store's first
                                tokens, connections, id maps and side
                                tables then take instead of fresh pages:
                                the kernel's zeroing of those pages is paid
                                by tg_store_open() instead of by the
                                threads that create (a quarter of the CPU
                                time of two creating threads on two cores,
                                docs/design.md), as a JVM's AlwaysPreTouch
                                does. The blocks count in the process's
                                resident memory from the open, and in the
                                store's memory_bytes only once taken; what
                                is left untaken is freed at close. At most
                                guardian.max_memory_bytes (else TG_EINVAL);
                                ignored by read-only handles. The open
                                fails with TG_ENOMEM when the memory cannot
                                be had. Default 0: none */
} tg_store_config;

/* Fill *cfg with the defaults listed above. */
TG_API void tg_store_config_init(tg_store_config *cfg);

/*
 * Load an INI file into *cfg, on top of what *cfg holds already.
 *
 *   [guardian]
 *   max_tokens = 9500000
 *   max_memory_bytes = 1024000000
 *   memory_threshold = 0.95
 *
 * Unknown sections or keys, malformed numbers and out-of-range values are
 * errors: the function returns TG_ECONFIG, writes "FILE:LINE: key 'K': what
 * is wrong" into errbuf (if not NULL), and leaves *cfg unchanged (nothing is
 * half-applied). A file that cannot be read gives -errno and a message.
 * Sections other than [guardian] are accepted only when listed in
 * docs/configuration.md. The [wal] keys set the fields of cfg->wal of the
 * same names (level, sync_interval_ms, segment_bytes, ring_slots,
 * linger_us; backpressure = block|error sets nonblocking) and accept
 * exactly what tg_wal_open() accepts (the TG_WAL_* limits of
 * tokengraph/wal.h); [wal] checkpoint_bytes sets cfg->checkpoint_bytes,
 * and [store] prefault_bytes cfg->prefault_bytes (at most max_memory_bytes,
 * as tg_store_open() requires).
 */
TG_API int tg_config_load(tg_store_config *cfg, const char *path, char *errbuf,
                          size_t errlen);

/*
 * Called for each key of an application's own section (tg_config_load_app).
 * Return NULL to accept the value, or a static or arg-owned description of
 * what is wrong ("not a positive integer"); the loader then fails with
 * "FILE:LINE: key 'KEY': <that>". Values must be applied only after the
 * load succeeds (keep them in a scratch copy), so nothing is half-applied.
 */
typedef const char *(*tg_config_key_cb)(void *arg, const char *key, const char *value);

/*
 * As tg_config_load(), and keys in [app_section] go to app_cb instead of
 * being unknown. Lets a program keep its settings beside the store's.
 */
TG_API int tg_config_load_app(tg_store_config *cfg, const char *path,
                              const char *app_section, tg_config_key_cb app_cb,
                              void *app_arg, char *errbuf, size_t errlen);

/* ---- the store -------------------------------------------------------- */

typedef struct tg_store tg_store;

/*
 * Open a store. dir == NULL gives an in-memory store (nothing survives
 * close). Otherwise dir is a data directory, created (0700, its parent must
 * exist) when missing: the checkpoint (checkpoint/, LMDB) is loaded, the
 * WAL (wal/) replayed from the checkpoint's LSN, a torn tail at the end of
 * the log cut off, and appends resume. One process at a time may hold a
 * directory open. cfg == NULL uses the defaults.
 * On success *out is the handle; on failure *out is NULL, nothing needs
 * releasing, and the directory is unchanged except for a torn tail cut.
 * Errors: TG_EINVAL (bad config), TG_ELOCKED (another handle or process has
 * the directory), TG_ENOTTG (a non-empty directory that is not a tokengraph
 * data directory, or a checkpoint that is not ours), TG_EVERSION (written
 * by a newer format), TG_ECORRUPT (corruption in the middle of the log or in
 * the checkpoint: see tg-replay), TG_ENOMEM, TG_ENOSPC, TG_EIO, -EPERM (the
 * directory belongs to another user: its owner must open it, since files
 * made now would lock the owner out; nothing is changed), -errno.
 * With replication (nats_url, repl_name; docs/durability.md "REPLICATED"):
 * TG_ECONFIG (an incomplete or invalid replication setting, or
 * TG_REPLICATED without one), TG_ENOTSUP (built without libnats), TG_EIO
 * (the server cannot be reached or refused the stream), TG_EFENCED (the
 * stream went on past this directory's log: another writer took over), and
 * the open first publishes what the stream lacks of the log.
 * A replicating store's mutating calls may also return TG_EFENCED (fenced:
 * every later mutation too; reads work) and, for a record too large for
 * one 1 MiB message (a batch over about 15,000 entries), TG_EINVAL with
 * nothing changed.
 */
TG_API int tg_store_open(tg_store **out, const char *dir,
                         const tg_store_config *cfg);

/*
 * Read-only access (cfg->read_only = 1). The directory is opened as it is,
 * also while another process holds it open and keeps writing: the
 * checkpoint is loaded (under a read transaction in LMDB's reader table,
 * checkpoint/lock.mdb, so the owner's checkpoints cannot reuse its pages;
 * that shared-memory slot is the only thing written, and only while
 * loading), and the log is replayed up to its durable point: the last
 * position a DURABLE or SWITCH marker vouches for (docs/wal-format.md), so
 * the handle never shows a record that a power loss could still take back.
 * At BALANCED the owner's last batch becomes visible once a later write
 * batch, a segment switch or its close records that it was synced. A
 * directory no process holds (no flock on DIR/LOCK in /proc/locks) is
 * replayed to the end of its valid records instead, as an open would. No
 * LOCK is taken, no file of the directory is created, changed or deleted,
 * and the ring file (wal/ring) is not read.
 * Reads (tg_token_get(), tg_token_edges(), tg_store_stats_get(), ...)
 * serve that state until tg_store_refresh() moves it forward. Every call
 * that would change the store (creates, updates, deletes, connects,
 * disconnects, tg_connection_update(), tg_batch_begin(), tg_checkpoint())
 * returns TG_EREADONLY and changes nothing;
 * tg_sync() returns 0 (nothing is ever pending). tg_store_stats_get()'s
 * last_lsn is the last LSN the handle shows, checkpoint_lsn that of the
 * checkpoint it loaded.
 * Errors besides tg_store_open()'s: -ENOENT (no such directory; nothing is
 * created), TG_ENOTTG (also for an empty directory), TG_EAGAIN (the owner
 * kept deleting the segments being read, checkpoint after checkpoint, for
 * every one of several tries: try again).
 */

/*
 * As tg_store_open(), and on failure writes a one-line explanation (what
 * failed, on which file, and what to do) into msg (if not NULL).
 */
TG_API int tg_store_open_msg(tg_store **out, const char *dir,
                             const tg_store_config *cfg, char *msg,
                             size_t msglen);

/*
 * Release the store and all its memory. A durable store first writes and
 * fdatasyncs everything logged. Accepts NULL. Returns 0, or TG_ENOSPC /
 * TG_EIO when the log had failed (then records after the last durable one
 * may be missing; the handle is released all the same).
 * Close needs no concurrent calls: every other call on this handle, in
 * every thread, must have returned, and none may start. Debug builds
 * (assertions on) detect a call still in progress and abort with a
 * message; release builds do not check.
 */
TG_API int tg_store_close(tg_store *s);

/*
 * Wait until every mutation made before this call is durable, at any level.
 * In memory: returns 0 at once. Errors: TG_ENOSPC, TG_EIO (the log failed).
 */
TG_API int tg_sync(tg_store *s);

/*
 * Write a checkpoint: every token and connection changed since the last
 * one (DIRTY), in one LMDB transaction with the LSN it covers, then delete
 * the WAL segments it covers. Other threads keep working while it runs:
 * the changed records are captured as of one moment by copy-on-write in
 * units of 4096 slots, so no call waits for more than one unit's copy
 * (readers for none). Its CPU work runs in bursts of at most 0.5 ms and,
 * while more threads are runnable than there are cores, sleeps between
 * them, so it gives way to the application's threads: on busy cores it
 * takes longer, but it always ends. Runs automatically in the background
 * when checkpoint_bytes of log were written since the last one.
 * In memory: TG_EINVAL. Errors: TG_ENOSPC, TG_EIO, TG_ENOMEM, -errno.
 * A full disk before the checkpoint's commit is retried by the next call.
 * After its commit or sync failed, every later call on this handle returns
 * that error without writing, until the store is reopened: the log keeps
 * every record since the last good checkpoint (docs/durability.md).
 */
TG_API int tg_checkpoint(tg_store *s);

/* What opening a data directory found and did. */
typedef struct tg_recovery_info {
  uint64_t checkpoint_lsn;   /* LSN the loaded checkpoint covers (0: none) */
  uint64_t checkpoint_tokens;
  uint64_t checkpoint_connections;
  uint64_t replayed_records; /* WAL records applied after the checkpoint */
  uint64_t last_lsn;         /* last LSN in the log after recovery */
  int torn_tail;             /* 1: an incomplete last write was cut off */
  uint64_t torn_segment;     /* its segment (first LSN) */
  uint64_t torn_offset;      /* and the offset it was cut at */
  uint64_t load_ns;          /* time to load the checkpoint */
  uint64_t replay_ns;        /* time to replay the log */
} tg_recovery_info;

/* Copy what the open found. In memory: all zero. */
TG_API int tg_store_recovery_info(tg_store *s, tg_recovery_info *out);

/* Progress: records read so far and the LSN just read (segment files are
   named by their first LSN, so the caller can place it among them). */
typedef void (*tg_progress_cb)(void *arg, uint64_t records, uint64_t lsn);

/*
 * A read-only handle: move forward to the log's current durable point,
 * replaying the records written since the last refresh (or, when the owner
 * has since checkpointed and deleted those segments, loading its newer
 * checkpoint and replaying from there). Readers of the handle see the old
 * state or the new one, never a part of the change: the records are applied
 * under the store lock. On failure the handle keeps serving the state it
 * had. Errors: TG_EINVAL (not a read-only handle), TG_ECORRUPT (damage
 * before the durable point), TG_EAGAIN, TG_ENOMEM, -errno.
 */
TG_API int tg_store_refresh(tg_store *s);

/*
 * Hot backup: write into dest_dir (missing, or an empty directory; its
 * parent must exist) a copy of the store as of one LSN, while other
 * threads keep calling the store. The copy is a data directory that
 * tg_store_open() opens as any other.
 * The LSN is: on a read-write handle, the last record logged when the
 * backup starts (made durable first, as tg_sync() does); on a read-only
 * handle, the last record the handle shows, or the newer LSN of the
 * owner's checkpoint if the owner has checkpointed past it.
 * How: a compacting copy of the checkpoint (mdb_env_copy2 under a read
 * transaction, so the owner's checkpoints go on), then the log records
 * after the checkpoint's LSN up to the backup's LSN, written through the
 * WAL into dest_dir/wal, everything fdatasynced, and the identity file
 * written last: an interrupted backup leaves a directory that every open
 * refuses (TG_ENOTTG), never a store that looks whole. Writers are never
 * paused; automatic checkpoints of a read-write handle wait while the log
 * is copied.
 * progress (may be NULL) is called about every 65,536 records with the
 * records copied so far and the LSN just copied, and once at the end with
 * the total and the backup's LSN.
 * In memory: TG_EINVAL. Errors: TG_EEXIST (dest_dir is not empty; nothing
 * was written), -ENOENT (its parent is missing), TG_ENOSPC, TG_EIO,
 * TG_EAGAIN (read-only handle: the owner deleted the segments being
 * copied, checkpoint after checkpoint, for every one of several tries),
 * TG_ECORRUPT, TG_ENOMEM, -errno. After a failure dest_dir may hold a
 * partial copy without an identity file: remove it before trying again.
 */
TG_API int tg_store_backup(tg_store *s, const char *dest_dir, tg_progress_cb progress,
                           void *arg);

/* As tg_store_backup(), and on failure writes a one-line explanation into
   msg (if not NULL). */
TG_API int tg_store_backup_msg(tg_store *s, const char *dest_dir, tg_progress_cb progress,
                               void *arg, char *msg, size_t msglen);

/*
 * The WAL records a durable store writes (the WAL's type byte). Each
 * carries what replay needs to redo the call exactly: after-images for
 * puts, ids for deletes; all little-endian, layouts as the structs above
 * (docs/store-format.md).
 */
enum tg_record_type {
  TG_REC_TOKEN_PUT = 1,  /* 64 bytes: the tg_token after a create/update */
  TG_REC_TOKEN_DEL = 2,  /* 4 bytes: token id; its connections go too */
  TG_REC_CONN_PUT = 3,   /* 64 bytes: the tg_connection created (links 0) */
  TG_REC_CONN_DEL = 4,   /* 4 bytes: connection id */
  TG_REC_TOKEN_EVICT = 5, /* 4 bytes: token id evicted under memory
                            pressure; its connections go too */
  TG_REC_CONN_UPDATE = 6, /* 64 bytes: the tg_connection after
                            tg_connection_update() (links 0) */
  TG_REC_BATCH = 7       /* a committed batch: a u32 count, a u32 zero, then
                            count entries, each a u32 type (TOKEN_PUT,
                            TOKEN_DEL, CONN_PUT, CONN_DEL, CONN_UPDATE)
                            followed by that type's payload. One record,
                            so one frame: replay applies all of it or, torn,
                            none (docs/store-format.md) */
};

/* A store record, decoded from the WAL's bytes. */
typedef struct tg_record {
  int type;                 /* enum tg_record_type */
  uint32_t id;              /* the token or connection the record is about */
  tg_token token;           /* TOKEN_PUT: the token; otherwise not written */
  tg_connection connection; /* CONN_PUT: the connection; otherwise not written */
} tg_record;

/*
 * Decode a record read with tg_wal_reader_next() into *out, the one
 * decoding replay uses too. Errors: TG_EINVAL (not a store record type),
 * TG_ECORRUPT (a store record type with a malformed payload: the wrong
 * length, or id 0).
 */
TG_API int tg_record_decode(const tg_wal_record *rec, tg_record *out);

/*
 * The entries of a TG_REC_BATCH record, one by one: *pos starts at 0 and
 * is advanced past each entry. Returns 1 with *out decoded as
 * tg_record_decode() would decode a record of the entry's own type, 0 after
 * the last entry, TG_EINVAL when rec is not a batch, TG_ECORRUPT when the
 * payload is malformed (an entry cut short, a type a batch cannot hold, id
 * 0). tg_record_decode() on a batch checks the whole payload this way, and
 * that the header's count matches the entries, and gives type TG_REC_BATCH
 * and id = the entry count: decode first, then iterate.
 */
TG_API int tg_record_batch_next(const tg_wal_record *rec, size_t *pos, tg_record *out);

/* ---- inspecting a data directory (tg-replay) ------------------------- */

typedef struct tg_inspect_report {
  uint64_t checkpoint_lsn;   /* LSN the checkpoint covers (0: none) */
  uint64_t checkpoint_tokens;
  uint64_t checkpoint_connections;
  uint64_t segments;         /* WAL segment files */
  uint64_t records;          /* valid records in the log, all segments */
  uint64_t first_lsn;        /* first and last valid LSN (0: none) */
  uint64_t last_lsn;
  uint64_t replayed;         /* records after the checkpoint applied */
  tg_wal_end end;            /* how the log ends (clean, torn, corrupt) */
  uint64_t tokens;           /* state after replay */
  uint64_t connections;
  uint64_t apply_failed_lsn; /* a record that did not apply (0: none);
                                replay stopped there */
  const char *apply_failed_what;
  uint64_t apply_failed_segment; /* where that record's frame lies: its */
  uint64_t apply_failed_offset;  /* segment (first LSN) and byte offset */
  tg_wal_end covered_end;    /* damage (a gap, a bad frame) in the part of
                                the log the checkpoint already covers;
                                reason TG_WAL_END_NONE when there is none.
                                Replay never reads that part, so it does
                                not change the verdict: a directory copied
                                while a checkpoint deleted segments looks
                                like this */
  int live;                  /* 1: another process held the directory, so
                                it was read as a read-only open reads it:
                                records up to the log's durable point, and
                                `end` says CLEAN at that point */
  uint64_t repl_stream_seq;  /* replication position the checkpoint saved:
                                the stream sequence of the last WAL message
                                its LSN covers wholly (0: none or never
                                replicated) */
  uint64_t repl_epoch;       /* and that message's epoch */
} tg_inspect_report;


/*
 * Read a data directory without changing anything: check its identity,
 * load the checkpoint and replay the log in memory exactly as
 * tg_store_open() would (from the checkpoint's LSN on), and report. `end`
 * is the verdict tg_store_open() would reach: CLEAN or TORN open, CORRUPT
 * and IO are refused. The records the checkpoint covers are read too, for
 * the counts, but damage among them goes to covered_end only. A
 * directory another process holds open is read as a read-only open reads
 * it (cfg.read_only): the records up to the log's durable point, with
 * out->live = 1 and out->end CLEAN at that point. progress (may be NULL)
 * is called about every million records.
 * Returns 0 when the directory could be read (look at out->end and
 * out->apply_failed_lsn for the log's condition), or an error with a
 * one-line explanation in msg: -ENOENT, -ENOTDIR, TG_ENOTTG, TG_EVERSION,
 * TG_ECORRUPT (the checkpoint; live: also damage before the durable point),
 * TG_EAGAIN (live: the owner kept deleting what was being read), TG_ENOMEM.
 */
TG_API int tg_store_inspect(const char *dir, tg_inspect_report *out,
                            tg_progress_cb progress, void *arg, char *msg,
                            size_t msglen);

/* ---- repairing a data directory (tg-replay recover) ------------------- */

enum tg_repair_flag {
  TG_REPAIR_FORCE = 1u << 0  /* cut at corruption too, dropping the valid
                                records that follow it (their bytes are
                                kept in .broken files) */
};

enum tg_repair_cut {
  TG_REPAIR_CUT_NONE = 0,    /* the log was clean: nothing was cut */
  TG_REPAIR_CUT_TORN = 1,    /* a torn tail was cut */
  TG_REPAIR_CUT_CORRUPT = 2  /* the log was cut at corruption, a gap or a
                                record that does not apply */
};

typedef struct tg_repair_report {
  tg_inspect_report before;  /* the directory as found */
  int cut;                   /* enum tg_repair_cut: what was found to cut */
  int refused;               /* 1: corruption without TG_REPAIR_FORCE;
                                nothing was changed */
  int restart;               /* 1: the cut fell at or before the
                                checkpoint's LSN, so every segment went
                                aside and the log restarts after it */
  uint64_t cut_segment;      /* segment (first LSN) the cut is in */
  uint64_t cut_offset;       /* and the byte offset it is at */
  uint64_t last_good_lsn;    /* last record kept in the log */
  tg_wal_salvage beyond;     /* valid frames from the cut to the end of
                                the log; beyond.above of them come after
                                the checkpoint: the records dropped */
  uint64_t kept_bytes;       /* bytes cut from the cut segment, kept ... */
  char kept_name[64];        /* ... in this file of wal/ ("": none) */
  int truncated;             /* 1: the cut segment was then truncated */
  uint32_t moved;            /* segments renamed whole to NAME.broken[.k] */
  uint64_t moved_first;      /* first LSN (name) of the oldest and of the */
  uint64_t moved_last;       /* newest of them */
  uint64_t segment_bytes;    /* segment size the log was reopened with */
  int reopened;              /* 1: the repaired directory was opened ... */
  tg_recovery_info opened;   /* ... and this is what the open found */
  int checkpointed;          /* 1: a checkpoint was then written ... */
  uint64_t checkpoint_lsn;   /* ... covering this LSN ... */
  uint64_t tokens;           /* ... and what it holds */
  uint64_t connections;
  tg_inspect_report after;   /* the directory after repair */
} tg_repair_report;

/*
 * Make a data directory openable again and write a fresh checkpoint, as
 * 'tg-replay recover' does. Under the directory's lock (taken as
 * tg_store_open() takes it, and held until the repaired store is open):
 * inspect it (tg_store_inspect()); cut a torn tail; refuse corruption (a
 * bad frame followed by valid ones, an LSN gap after the checkpoint, a
 * record that does not apply) unless flags has TG_REPAIR_FORCE, then cut
 * there; open the store, which replays the log, write a checkpoint, close,
 * and inspect again.
 * Nothing is destroyed: the bytes from a cut to the end of its segment are
 * first copied to SEGMENT.broken (fsynced, then the directory fsynced) and
 * only then cut off; later segments are renamed whole to NAME.broken. An
 * existing .broken file is never overwritten (.broken.1, .2, ...). An
 * interrupted repair leaves a directory that shows the same damage and can
 * be repaired again.
 * cfg (NULL: defaults) gives the segment size the log is reopened with,
 * which bounds the size any segment file is given: a segment header's own
 * preallocated size is used only when it is smaller. Quotas are not
 * applied while replaying.
 * out (required) tells what was found and done, also on failure. Returns 0
 * when the directory is clean afterwards; otherwise an error and a
 * one-line explanation in msg: as tg_store_inspect(), TG_ECORRUPT (refused,
 * out->refused set, nothing changed; or still not clean after repair),
 * TG_EVERSION (a segment from a newer format: nothing changed), TG_EIO or
 * -errno (a segment cannot be read: nothing changed; or a file operation
 * failed), and tg_store_open()'s and tg_checkpoint()'s errors.
 */
TG_API int tg_store_repair(const char *dir, const tg_store_config *cfg, unsigned flags,
                           tg_repair_report *out, tg_progress_cb progress, void *arg,
                           char *msg, size_t msglen);

/*
 * Create a token from *init (NULL: all zero) and return its id in *id.
 * The store sets id and the ACTIVE flag; other fields are copied.
 * Errors: TG_EQUOTA (max_tokens or max_memory_bytes reached: nothing
 * changed), TG_ENOMEM (the arena could not grow: nothing changed).
 */
TG_API int tg_token_create(tg_store *s, const tg_token *init, uint32_t *id);

/* Copy token `id` into *out. Errors: TG_ENOTFOUND. */
TG_API int tg_token_get(tg_store *s, uint32_t id, tg_token *out);

/*
 * Replace the fields of token t->id with *t (ACTIVE stays set; its
 * connections are untouched). Errors: TG_ENOTFOUND.
 */
TG_API int tg_token_update(tg_store *s, const tg_token *t);

/*
 * Delete token `id` and every connection into or out of it (each removed
 * connection is counted as a disconnect). Errors: TG_ENOTFOUND.
 */
TG_API int tg_token_delete(tg_store *s, uint32_t id);

/*
 * Connect init->from to init->to (both must exist; a token may connect to
 * itself; several connections between the same pair are allowed). The
 * store assigns the id and the links; other fields are copied.
 * Errors: TG_ENOTFOUND (an endpoint is missing), TG_EINVAL (type >= 176),
 * TG_EQUOTA (max_connections, max_memory_bytes, or max_degree of either
 * endpoint reached: nothing changed), TG_ENOMEM.
 */
TG_API int tg_connect(tg_store *s, const tg_connection *init, uint32_t *id);

/* Remove connection `id`. Errors: TG_ENOTFOUND. */
TG_API int tg_disconnect(tg_store *s, uint32_t id);

/* Copy connection `id` into *out. Errors: TG_ENOTFOUND. */
TG_API int tg_connection_get(tg_store *s, uint32_t id, tg_connection *out);

/*
 * Update connection c->id: its weight, pull_strength, activation_count,
 * last_activated, confidence and flags are taken from *c, and logged (a
 * TG_REC_CONN_UPDATE record) like every mutation. Its endpoints cannot
 * change: c->from and c->to must be the connection's own. Every other field
 * (type, rigidity, active_levels, created, the links) is kept as it is and
 * the values in *c are ignored; the connection keeps its place in both
 * adjacency lists. The usual way is tg_connection_get(), change, update.
 * Errors: TG_EINVAL (c NULL, or from/to differ from the connection's:
 * nothing changed), TG_ENOTFOUND, and the log's TG_ENOSPC / TG_EIO /
 * TG_EAGAIN as for any mutation.
 */
TG_API int tg_connection_update(tg_store *s, const tg_connection *c);

enum tg_direction {
  TG_OUT = 1,           /* connections leaving the token */
  TG_IN = 2,            /* connections arriving at it */
  TG_BOTH = TG_OUT | TG_IN
};

/*
 * Visit a token's connections in O(degree): outgoing first (newest first),
 * then incoming. The callback gets a copy of each connection, runs with no
 * lock held and may call into this store (even change it; on a read-only
 * handle it runs with the lock held and must not call into it); returning
 * non-zero stops the walk, and that value is returned. The connection
 * pointer is valid only during the callback.
 * Concurrent changes: the walk takes no lock, never crashes and never
 * loops. It delivers every connection that was on the list for the whole
 * walk exactly once; a connection made or removed during the walk may or
 * may not be delivered; one changed during the walk (tg_connection_update)
 * is delivered with its image before or after the change; and if the token
 * is deleted during the walk, the walk ends early. A walk that another
 * thread's changes to the same lists
 * (or to those of a token sharing its lock stripe, 1 in 4096) make start
 * over skips what it delivered, remembering it on the heap past 64.
 * Errors: TG_ENOTFOUND (no such token at the start), TG_ENOMEM (a walk
 * that started over could not remember what it had delivered).
 */
typedef int (*tg_edge_cb)(void *arg, const tg_connection *c);
TG_API int tg_token_edges(tg_store *s, uint32_t id, int direction,
                          tg_edge_cb cb, void *arg);

/*
 * Visit a token's connections that pass a filter, as tg_token_edges() does
 * (same order, same locking: see tg_token_edges()). Initialise the filter with
 * TG_EDGE_FILTER_INIT, then narrow it. Errors: TG_ENOTFOUND, TG_EINVAL
 * (a NULL filter or callback, no direction, type >= 176).
 */
typedef struct tg_edge_filter {
  int direction;       /* TG_OUT, TG_IN or TG_BOTH */
  int type;            /* only this connection type (0..175), or -1: any */
  uint32_t categories; /* only these categories: bit c for category c
                          (1u << TG_CAT_CAUSAL, ...); 0: any */
} tg_edge_filter;
#define TG_EDGE_FILTER_INIT {TG_BOTH, -1, 0u}
TG_API int tg_token_edges_filtered(tg_store *s, uint32_t id, const tg_edge_filter *filter,
                                   tg_edge_cb cb, void *arg);

/*
 * Scans: visit every live token (tg_token_scan) or connection
 * (tg_connection_scan) whose id is greater than after_id, in increasing id
 * order. A non-zero return from the callback stops the scan and is
 * returned; so is an error. To read page by page, stop after a page and
 * scan again from the last id seen: ids are never reused (see "Ids" at the
 * top), so a resumed scan neither repeats nor skips a token that stayed
 * live.
 *
 * The callback runs without the store lock and may call any function of
 * this store (update or delete what it is shown, create, scan), from this
 * or other threads; the pointer is a copy, valid only during the call.
 *
 * What a scan sees while writers run: the scan copies up to 256 records
 * at a time under the store lock, then releases it and calls the callback
 * for each, so writers are held back for one page at a time, never for the
 * whole scan. Each object that stays live for the whole scan is visited
 * exactly once, with its contents as of some moment during the scan (the
 * moment its page was copied; objects of one page are copied at the same
 * moment). An object created or deleted while the scan runs may or may
 * not be visited; one created after the scan has passed its id never is,
 * and ids only grow, so objects created during a scan are visited unless
 * the scan ended before their creation. The scan is not a snapshot of the
 * whole store: for that, take a checkpoint or a backup.
 * Errors: TG_EINVAL (no callback).
 */
typedef int (*tg_token_cb)(void *arg, const tg_token *t);
TG_API int tg_token_scan(tg_store *s, uint32_t after_id, tg_token_cb cb, void *arg);
TG_API int tg_connection_scan(tg_store *s, uint32_t after_id, tg_edge_cb cb, void *arg);

/* Counters, read without any lock: each one is a value it really had
   during the call, but under concurrent writers two of them may be from
   moments a few calls apart (live_tokens may already count a create that
   tokens_created does not yet). */
typedef struct tg_store_stats {
  uint64_t live_tokens;
  uint64_t live_connections;
  uint64_t memory_bytes;     /* what the memory quota is checked against */
  uint64_t arena_bytes;      /* bytes mapped for slots (RSS upper bound) */
  uint64_t quota_checks;     /* creates and connects checked */
  uint64_t quota_rejections; /* of which rejected with TG_EQUOTA */
  uint64_t evictions;        /* tokens evicted under memory pressure */
  uint64_t pressure_events;  /* soft-limit crossings */
  uint64_t tokens_created;
  uint64_t connections_created;
  uint64_t last_lsn;         /* last LSN logged (durable stores) */
  uint64_t checkpoint_lsn;   /* LSN the last checkpoint covers */
  uint64_t checkpoints;      /* checkpoints written since open */
} tg_store_stats;

TG_API int tg_store_stats_get(tg_store *s, tg_store_stats *out);

/* The quotas a call can hit (the same values as enum tg_bb_quota of
   tokengraph/trace.h, the black box's record of each rejection). */
enum tg_quota {
  TG_QUOTA_NONE = 0,
  TG_QUOTA_TOKENS = 1,      /* max_tokens */
  TG_QUOTA_CONNECTIONS = 2, /* max_connections */
  TG_QUOTA_MEMORY = 3,      /* max_memory_bytes */
  TG_QUOTA_DEGREE = 4       /* max_degree of an endpoint */
};

/*
 * Which quota the calling thread's most recent call on s that returned
 * TG_EQUOTA hit (enum tg_quota); TG_QUOTA_NONE when no call of this thread
 * on s was ever rejected. Per thread, so a rejection in another thread
 * never changes the answer; a later successful call does not clear it.
 */
TG_API int tg_quota_exceeded(tg_store *s);

/* "tokens", "connections", "memory", "degree", "none"; "unknown" for any
   other value. A static string. */
TG_API const char *tg_quota_name(int quota);

/* ---- the durable position --------------------------------------------- */

/*
 * Every mutation of a durable store is one WAL record with an LSN (a
 * batch is one record, so one LSN). These calls let a program that writes
 * at BALANCED or RELAXED learn when a given change is on stable storage,
 * without an fdatasync of its own: remember tg_last_lsn() after the
 * change, then wait for it or compare it with tg_durable_lsn().
 *
 * tg_durable_lsn(): the highest LSN known to be on stable storage (every
 * record up to it is). After an open it is at least the last LSN recovered.
 * In memory: 0.
 *
 * tg_wait_durable(): wait until every record up to `lsn` is on stable
 * storage, at any level (at STRICT it already is when the call returned);
 * callers waiting together share fdatasyncs. lsn 0 returns 0 at once.
 * Errors: TG_EINVAL (an LSN the store has not handed out yet; or an
 * in-memory store and lsn > 0), TG_ENOSPC / TG_EIO (the log failed before
 * lsn was durable).
 *
 * tg_last_lsn(): the LSN of the calling thread's last successful mutation
 * on this store (a create, update, delete, connect, disconnect, connection
 * update or committed batch), or 0 when it made none since the store was
 * opened. Other threads' calls do not change it. A thread remembers its
 * last LSN for the 8 stores it mutated most recently; for an older one
 * it gives 0. In memory: 0.
 */
TG_API uint64_t tg_durable_lsn(tg_store *s);
TG_API int tg_wait_durable(tg_store *s, uint64_t lsn);
TG_API uint64_t tg_last_lsn(tg_store *s);

/*
 * The replicated position: an asynchronous TG_REPLICATED commit for a
 * store that ships its log (nats_url and repl_name set; docs/durability.md
 * "REPLICATED"), at any level. Write at BALANCED or RELAXED, remember
 * tg_last_lsn() after the last change of a group, then wait for it:
 *
 *   for (i = 0; i < n; i++) tg_token_create(s, &t[i], &id[i]);
 *   rc = tg_wait_replicated(s, tg_last_lsn(s), 10000);
 *
 * On 0, every record up to that LSN has what a TG_REPLICATED call has on
 * return: it is fdatasynced locally and acknowledged by the stream. The
 * calls themselves returned at their own level's promise; until the wait
 * returns 0 a lost machine may lose them.
 *
 * What the acknowledgement means (nats-server 2.9): the message is stored
 * in the stream's memory on a quorum of its servers (the one server of an
 * R1 stream, 2 of 3 of an R3 one), before any fsync: the server syncs its
 * files every 60 s. So a replicated record survives this machine's loss
 * (disk and all) and, on R3, one server's; it does not survive this
 * machine's disk and the stream's quorum both lost within that minute.
 *
 * tg_replicated_lsn(): the highest LSN the stream has acknowledged (every
 * record up to it is in the stream; not necessarily fdatasynced here: see
 * tg_durable_lsn()). After an open it is the last LSN recovered (the open
 * ships what the stream lacks before it returns). 0 for a store that does
 * not replicate (in memory, read-only, a replica not promoted).
 *
 * tg_wait_replicated(): wait until tg_durable_lsn() and
 * tg_replicated_lsn() are both >= lsn, at most timeout_ms (0: only look,
 * -ETIMEDOUT when not yet). At BALANCED and RELAXED it asks for the write
 * and the fdatasync at once rather than after the linger and the sync
 * interval, also when only looking (so polling with 0 gets there at
 * RELAXED, where nothing else would fdatasync soon); threads waiting at
 * once share fdatasyncs and messages (one message carries every record
 * written together). The wait parks the thread. lsn 0 returns 0 at once.
 * The stream's silence is bounded: a message not acknowledged within
 * repl_ack_timeout_ms fails the log (TG_EIO), which ends every wait.
 * Errors: TG_EINVAL (s is NULL; a store that does not replicate; an LSN
 * the store has not handed out yet), -ETIMEDOUT (lsn not replicated
 * within timeout_ms; nothing is lost, wait again), TG_EFENCED (another
 * writer owns the stream: these records may never be in it), TG_EIO /
 * TG_ENOSPC (the log failed before lsn was replicated: close and reopen
 * the store; the open ships what the stream lacks).
 */
TG_API uint64_t tg_replicated_lsn(tg_store *s);
TG_API int tg_wait_replicated(tg_store *s, uint64_t lsn, uint32_t timeout_ms);

/* ---- atomic write batches --------------------------------------------- */

/*
 * A batch gathers creates, updates, deletes, connects and disconnects and
 * applies them all or none, in the order they were added, as if no other
 * call ran in between.
 *
 *   tg_batch *b;
 *   uint32_t a, z, c;
 *   tg_batch_begin(s, &b);
 *   tg_batch_token_create(b, NULL, &a);
 *   tg_batch_token_create(b, NULL, &z);
 *   tg_connection e = {.from = a, .to = z};
 *   tg_batch_connect(b, &e, &c);
 *   rc = tg_batch_commit(b);     // all three, or none
 *
 * Ids: tg_batch_token_create() and tg_batch_connect() give the new object's
 * id at once, and it is final: the object has that id once the batch
 * commits, so later calls in the same batch may name it (a connect between
 * two tokens the batch creates, an update or delete of one). Until the
 * commit the id names nothing: tg_token_get() gives TG_ENOTFOUND and no
 * other create is handed it. An id of a batch that is aborted, or whose
 * commit fails, names nothing afterwards: it is handed out again only when
 * it was still the last id handed out (no record ever named it); otherwise,
 * like a deleted id, not until the id space wraps.
 *
 * Checks: each call checks what it can alone (type < 176, an endpoint or
 * id that is 0) and fails with nothing added to the batch. Everything that
 * depends on the store is checked by tg_batch_commit(), against the store
 * as it is then: ids that must exist (tokens updated, deleted, or named as
 * endpoints; connections disconnected), with the batch's own earlier
 * entries taken into account (a token the batch deleted no longer exists
 * for the entries after it), and the quotas, once, for the state after the
 * whole batch (max_tokens, max_connections, max_degree, max_memory_bytes).
 * Any failure changes nothing and nothing is logged.
 *
 * Durability: a committed batch is one WAL record (TG_REC_BATCH), so it is
 * durable, lost or torn as one: recovery shows every entry of it or none,
 * at every level and after any crash. At STRICT tg_batch_commit() returns
 * once that record is on stable storage: one fdatasync for the whole batch
 * (shared with concurrent callers). In memory nothing is logged; all or
 * nothing holds the same.
 *
 * Threads: a batch belongs to the thread using it (one call at a time);
 * several threads may each fill their own batch on one store. The batch
 * calls before commit take the store lock only to hand out ids.
 *
 * Size: a batch holds at most TG_BATCH_MAX_ENTRIES entries (its record must
 * fit in one WAL record), and a store has at most TG_BATCH_MAX_RESERVED ids
 * handed out to open batches at once.
 *
 * Lifetime: the handle belongs to the store. tg_batch_commit() and
 * tg_batch_abort() end the batch; the ended handle keeps answering
 * TG_EINVAL (commit) or nothing (abort) until a later tg_batch_begin() on
 * the same store hands it out again, so do not keep it. Batches still open
 * at tg_store_close() are aborted and freed by it.
 */
typedef struct tg_batch tg_batch;

#define TG_BATCH_MAX_ENTRIES 200000u    /* 68 bytes each: 13.6 MB < 16 MiB */
#define TG_BATCH_MAX_RESERVED (1u << 20) /* ids held by open batches, per
                                            store (bounds how far past the
                                            logged ids replay accepts one) */

/* Start a batch on s. Errors: TG_EINVAL (s or b NULL), TG_ENOMEM. */
TG_API int tg_batch_begin(tg_store *s, tg_batch **b);

/*
 * Add the create of a token from *init (NULL: all zero), as
 * tg_token_create(); *id gets its id at once (see Ids above).
 * Errors: TG_EINVAL (b NULL or ended, id NULL), TG_EQUOTA (the batch is
 * full, or TG_BATCH_MAX_RESERVED ids are out), TG_ENOMEM.
 */
TG_API int tg_batch_token_create(tg_batch *b, const tg_token *init, uint32_t *id);

/* Add the update of token t->id, as tg_token_update(). Errors: TG_EINVAL
   (b or t NULL, id 0, batch ended), TG_EQUOTA (batch full), TG_ENOMEM. */
TG_API int tg_batch_token_update(tg_batch *b, const tg_token *t);

/* Add the delete of token `id` with its connections, as tg_token_delete().
   Errors: as tg_batch_token_update(). */
TG_API int tg_batch_token_delete(tg_batch *b, uint32_t id);

/*
 * Add a connect, as tg_connect(); init->from and init->to may be tokens
 * created earlier in this batch. *id gets its id at once (see Ids above).
 * Errors: TG_EINVAL (b, init or id NULL, an endpoint 0, type >= 176,
 * batch ended), TG_EQUOTA (batch full, or too many ids out), TG_ENOMEM.
 */
TG_API int tg_batch_connect(tg_batch *b, const tg_connection *init, uint32_t *id);

/* Add the removal of connection `id`, as tg_disconnect(). Errors: as
   tg_batch_token_update(). */
TG_API int tg_batch_disconnect(tg_batch *b, uint32_t id);

/*
 * Apply and log the whole batch, then end it. An empty batch commits
 * nothing, logs nothing and returns 0. On success every entry is applied
 * and tg_last_lsn() is the batch's LSN; on failure nothing is.
 * Errors: TG_EINVAL (b NULL or ended: an abort or a commit ended it),
 * TG_ENOTFOUND (an entry names a token or connection that does not exist
 * at that point of the batch), TG_EQUOTA (the state after the batch would
 * pass a quota), TG_ENOMEM, and the log's errors (TG_ENOSPC, TG_EIO,
 * TG_EAGAIN) as a single mutation's: with TG_ENOSPC or TG_EIO at STRICT
 * the record may have been logged but is not known durable.
 */
TG_API int tg_batch_commit(tg_batch *b);

/* Drop the batch: nothing it holds is applied, its ids go back. Accepts
   NULL and an ended batch (then does nothing). */
TG_API void tg_batch_abort(tg_batch *b);

/* ---- read replicas (docs/operations.md, "Replication") ---------------- */

/*
 * A replica follows the WAL stream a primary ships to NATS JetStream
 * (stream TG_<repl_name>, subject tg.<repl_name>.wal) and applies every
 * record to a data directory of its own: records go to its own WAL with
 * the primary's LSNs, then to its graph, so the directory is a normal
 * tokengraph directory that tg_store_open() and tg-replay read, and a
 * promoted replica simply becomes the writer. Needs a build with libnats;
 * without it tg_replica_open() returns TG_ENOTSUP.
 */
typedef struct tg_replica_config {
  const char *nats_url;      /* e.g. "nats://127.0.0.1:4222"; required */
  const char *repl_name;     /* the primary's repl_name; required */
  tg_store_config store;     /* the replica's own store: guardian limits
                                (at least the primary's: records are never
                                refused), its WAL level and checkpoints.
                                Its nats_url / repl_name / read_only are
                                ignored. The WAL level applies once
                                promoted: while following, the log is
                                written at TG_RELAXED whatever the level
                                (a restart fetches again from the position
                                its last checkpoint saved, so a record its
                                log lost to a power loss comes again; see
                                tg_replica_open()) */
  const char *bootstrap_dir; /* NULL, or a directory tg_store_backup() of
                                the primary wrote: copied into dir when dir
                                is missing or empty, so the replica starts
                                at the backup's LSN instead of the stream's
                                first message. Default NULL */
  int bootstrap_snapshot;    /* 1 (default): a new replica (dir missing or
                                empty, no bootstrap_dir) starts from the
                                newest snapshot on TG_SNAP_<repl_name>
                                (tg_repl_snapshot_publish()) when there is
                                one; 0: always from the stream's first
                                message */
  uint32_t fetch_batch;      /* messages per pull request; two requests
                                are kept outstanding, so the server sends
                                each message as soon as it stores it and
                                at most 2 x fetch_batch messages (of up to
                                1 MiB each) wait in memory; 0 means the
                                default, 8; above 256 tg_replica_open()
                                refuses it (TG_EINVAL) */
  uint32_t lease_ttl_ms;     /* the TTL of the leader lease this replica
                                holds once promoted (renewed every third
                                of it), the bucket's max age when this
                                replica creates the bucket, and the TTL a
                                lease is judged by when its value names
                                none; default 10000, at least 150 */
  int promote_force;         /* 0 (default): tg_replica_promote() refuses
                                (TG_EEXIST) while another process holds a
                                live lease (written within its TTL: a
                                running primary renews it); 1: promote
                                anyway, the old primary, if it still runs,
                                being fenced by the stream's expected
                                sequence at its next publish */
  int failover;              /* 1: promote by itself once the leader lease
                                expired (absent, released, or not renewed
                                for its TTL), after draining the stream:
                                of several followers, exactly one wins the
                                lease (compare-and-swap) and the others go
                                on following it. Checked every quarter of
                                the TTL. Default 0 */
  int rebootstrap;           /* 1: a replica whose position the stream no
                                longer holds (purged below it) is, at
                                open, made again from the newest snapshot
                                on TG_SNAP_<repl_name>: its directory's
                                content is moved aside first (renamed to
                                DIR.gap.N, never deleted). 0 (default):
                                such an open fails with -ENODATA */
} tg_replica_config;

/* Fill *cfg with the defaults listed above (tg_store_config_init() for
   cfg->store). */
TG_API void tg_replica_config_init(tg_replica_config *cfg);

/*
 * Open (creating it when missing) data directory `dir` as a replica of
 * cfg->repl_name. The directory is opened as tg_store_open() opens it
 * (checkpoint, then its own log), then a background thread pulls the
 * stream from the position the replica reached (the one saved with its
 * last checkpoint; the log after it is skipped by LSN) and applies each
 * message under the store lock: readers (tg_token_get(), tg_token_edges(),
 * ...) stay lock-free and see whole messages. Every mutating call returns
 * TG_EREADONLY until tg_replica_promote().
 * Each message is checked before any of it is applied: its stream sequence
 * is the one asked for (the server silently starts later when the
 * messages asked for were purged), every frame's CRC, and the LSNs
 * contiguous with what the replica holds. A failed check stops following
 * (the replica keeps serving what it has) and tg_replica_status() says
 * why: -ENODATA for a gap (the stream no longer holds the messages after
 * the replica's position: bootstrap it again), TG_ECORRUPT for a damaged
 * message or a record that does not apply. A sequence other than the one
 * asked for while the stream still holds that one (messages lost in a
 * reconnect), a reconnect, or a pull left unanswered make the follower
 * pull again from its position instead (tg_replica_status.pull_restarts);
 * its connection reconnects for as long as the replica is open.
 * With cfg->rebootstrap, a gap found at open is repaired from the newest
 * snapshot instead (the old content moved aside, tg_replica_status_get()'s
 * set_aside); a gap found while following still stops it: close and open
 * again. With cfg->failover, a background thread promotes the replica
 * (as tg_replica_promote(), not forced) once the leader lease expired.
 * Errors: tg_store_open()'s, TG_EINVAL (a field missing, lease_ttl_ms
 * below 150, fetch_batch above 256; nothing is created), TG_ENOTSUP,
 * -ECONNREFUSED (no server answers at nats_url), -ENOENT (no stream
 * TG_<repl_name>: no primary shipped to it yet), -ENODATA (a gap, as
 * above, found at open, or with rebootstrap no snapshot to start again
 * from), -EEXIST (rebootstrap: DIR.rebootstrap is left from an
 * interrupted one), TG_EIO. On failure *out is NULL.
 */
TG_API int tg_replica_open(tg_store **out, const char *dir, const tg_replica_config *cfg);

/* As tg_replica_open(), with a one-line explanation in msg on failure. */
TG_API int tg_replica_open_msg(tg_store **out, const char *dir, const tg_replica_config *cfg,
                               char *msg, size_t msglen);

/* The last LSN the replica applied (and its readers see); on any other
   store, its last LSN. */
TG_API uint64_t tg_replica_applied_lsn(tg_store *s);

/*
 * Wait until the store shows `lsn`: on a replica, until it has applied it
 * (a client that wrote on the primary reads its own write here), at most
 * timeout_ms (0: do not wait). On any other durable store (a promoted
 * replica too), until record `lsn` is durable at the store's level, as
 * tg_sync() waits (timeout_ms unused); -ETIMEDOUT at once when nothing
 * with that LSN was logged yet. In memory or read-only: 0 when the store
 * shows lsn, else -ETIMEDOUT at once.
 * Returns 0, -ETIMEDOUT, the error that stopped the replica following
 * (tg_replica_status_get()), or the log's errors.
 */
TG_API int tg_wait_lsn(tg_store *s, uint64_t lsn, uint32_t timeout_ms);

typedef struct tg_replica_status {
  int is_replica;            /* 1: following (or stopped by an error);
                                0: not a replica, or promoted */
  uint64_t applied_lsn;      /* last LSN applied */
  uint64_t stream_seq;       /* stream sequence of the last message applied
                                wholly (0: none since the checkpoint) */
  uint64_t epoch;            /* that message's epoch */
  uint64_t messages;         /* messages applied since open */
  uint64_t records;          /* records applied since open */
  uint64_t max_message_bytes; /* the largest message body applied since
                                open (a primary splits at 1 MiB) */
  uint64_t apply_ns;         /* time spent checking and applying messages
                                once delivered (records / apply_ns: the
                                apply rate, the network left out) */
  int error;                 /* 0, or what stopped following */
  char message[256];         /* that error, one line ("" when none) */
  int promoted;              /* 1 once promoted (by tg_replica_promote()
                                or by failover) */
  uint64_t lease_renewals;   /* a writer holding the leader lease: times
                                it renewed it since open (or promotion) */
  char set_aside[512];       /* "" or, when this open bootstrapped again
                                (rebootstrap), where the old content went */
  uint64_t apply_cpu_ns;     /* the follower thread's CPU time in those
                                checks and applies (apply_ns less the time
                                other threads and processes had its core:
                                records / apply_cpu_ns is the apply loop's
                                own rate on a loaded machine) */
  uint64_t pull_restarts;    /* times since open the follower gave up on
                                its pull and started again at its position
                                (the message after the last it applied):
                                after a reconnect, a pull the server ended
                                or left unanswered for 7 s, or a delivery
                                lost on the way. Nothing is skipped or
                                applied twice; a count that keeps growing
                                says the connection to the server does not
                                hold */
  char pull_restart_reason[256]; /* why, the last time ("" when never) */
} tg_replica_status;

/* Fill *out. TG_EINVAL when s or out is NULL. */
TG_API int tg_replica_status_get(tg_store *s, tg_replica_status *out);

/*
 * Publish the store's last checkpoint as a snapshot for new replicas:
 * a compacting copy of it, in chunks of under 1 MiB, then a manifest, on
 * the stream TG_SNAP_<repl_name> (created when missing; the WAL stream
 * TG_<repl_name> must exist). Older snapshots are then purged, and the WAL
 * stream below the position of the previous snapshot: the stream keeps
 * what follows the older of the two newest snapshots. A primary calls it
 * after its checkpoints; writers go on meanwhile (checkpoints wait while
 * the copy is made). *lsn_out (may be NULL) gets the snapshot's LSN.
 * Errors: TG_EINVAL (in memory, read-only, or no checkpoint yet: call
 * tg_checkpoint() first), TG_ENOTSUP, the NATS errors of
 * tg_replica_open(), TG_ENOSPC, TG_EIO.
 */
TG_API int tg_repl_snapshot_publish(tg_store *s, const char *nats_url, const char *repl_name,
                                    uint64_t *lsn_out, char *msg, size_t msglen);

/* What the replication stream and the lease of repl_name hold now. */
typedef struct tg_repl_stream_info {
  uint64_t first_seq;        /* the stream's first sequence (purged below) */
  uint64_t last_seq;         /* its last (0: nothing shipped yet) */
  uint64_t lease_epoch;      /* the leader lease's epoch (0: no lease) */
  uint64_t lease_lsn;        /* the LSN its holder wrote with it */
  char lease_owner[128];     /* "<host>:<pid>:<random>", "" when none */
} tg_repl_stream_info;

/* Read the stream TG_<repl_name> and the lease at nats_url (the lease
   bucket is not created when missing). Errors as tg_replica_open()'s
   NATS errors, with a one-line explanation in msg. */
TG_API int tg_repl_stream_info_get(const char *nats_url, const char *repl_name,
                                   tg_repl_stream_info *out, char *msg, size_t msglen);

/*
 * Make the replica the writer: take the leader lease (KV bucket
 * TG_LEASE_<repl_name>, key "leader") with compare-and-swap on its
 * revision and epoch + 1, drain the stream to its last message (the
 * primary is expected to be gone: a publish of the old primary after the
 * drain fences one of the two, never both writing), stop following, and
 * allow mutating calls. The lease is renewed from the moment it is taken
 * (every third of lease_ttl_ms), and released again if the promotion
 * fails. The new epoch is the replica's epoch from then on
 * (tg_replica_status()). timeout_ms bounds the drain.
 * Errors: TG_EEXIST (another process holds a live lease: its writer is
 * alive, refused unless cfg.promote_force; or another process changed
 * the lease first: it is promoting), -ETIMEDOUT (the drain did not reach
 * the stream's end), the error that stopped following (a replica that
 * lost messages must not become the writer), TG_EINVAL (not a replica, or
 * promoted already), TG_ENOTSUP, TG_EIO. Nothing changed on failure.
 */
TG_API int tg_replica_promote(tg_store *s, uint32_t timeout_ms, char *msg, size_t msglen);

#ifdef __cplusplus
}
#endif
#endif /* TOKENGRAPH_H */
