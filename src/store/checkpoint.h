/*
 * The checkpoint of a durable store (checkpoint.c): the LMDB environment
 * in DIR/checkpoint/, its load into the graph at open, and the writing of
 * snapshots (tg_checkpoint() and the checkpointer thread). The format is in
 * docs/store-format.md. Internal to src/store/; the open and the load,
 * which inspection shares, are declared in store_internal.h.
 */
#ifndef TG_STORE_CHECKPOINT_H
#define TG_STORE_CHECKPOINT_H

#include <stddef.h>

#include "store/store_internal.h"

/* The automatic checkpointer's thread body (arg: the tg_store); it runs
   until s->ckpt_stop is set under ckpt_wake_mu. */
void *tg__store_checkpointer(void *arg);

#endif /* TG_STORE_CHECKPOINT_H */
