/*
 * The checkpoint of a durable store (checkpoint.c): the LMDB environment
 * in DIR/checkpoint/, its load into the graph at open, and the writing of
 * snapshots (tg_checkpoint() and the checkpointer thread). The format is in
 * docs/store-format.md. Internal to src/store/; the open and the load,
 * which inspection shares, are declared in store_internal.h.
 */
#ifndef TG_STORE_CHECKPOINT_H
#define TG_STORE_CHECKPOINT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store_internal.h"

/* The automatic checkpointer's thread body (arg: the tg_store); it runs
   until s->ckpt_stop is set under ckpt_wake_mu. */
void *tg__store_checkpointer(void *arg);

/* Rests checkpoints took in this process (checkpoint.c, REST): a thread
   of a checkpoint that used its burst of CPU while more threads were
   runnable than there are cores slept before going on. Relaxed; for
   tests. */
extern _Atomic uint64_t tg__ckpt_rests;

#endif /* TG_STORE_CHECKPOINT_H */
