/*
 * The checkpoint of a durable store (checkpoint.c): the LMDB environment
 * in DIR/checkpoint/, its load into the graph at open, and the writing of
 * snapshots (tg_checkpoint() and the checkpointer thread). The format is in
 * docs/store-format.md. Internal to src/store/.
 */
#ifndef TG_STORE_CHECKPOINT_H
#define TG_STORE_CHECKPOINT_H

#include <stddef.h>

#include "store/store_internal.h"

/* Open (readonly == 0: create if missing) the checkpoint environment of
   s->dir and read its LSN into s->ckpt_lsn. Read-only with no checkpoint
   yet: s->env stays NULL. On failure msg says why, naming the file. */
int tg__store_open_checkpoint(tg_store *s, int readonly, char *msg, size_t len);

/* Load every token and connection of the checkpoint into s->g, which is
   loading (tg__graph_begin_load()). */
int tg__store_load_checkpoint(tg_store *s, char *msg, size_t len);

/* The automatic checkpointer's thread body (arg: the tg_store); it runs
   until s->ckpt_stop is set under ckpt_wake_mu. */
void *tg__store_checkpointer(void *arg);

#endif /* TG_STORE_CHECKPOINT_H */
