/*
 * A private nats-server for a test or a benchmark: `nats-server -js` on
 * free loopback ports with a temporary store directory, one node or a
 * 3-node cluster (routes between them), started as child processes and
 * stopped by their process ids. Nothing here uses libnats: the server is
 * judged ready when each node's monitoring endpoint /healthz answers "ok"
 * (JetStream enabled and, in a cluster, its meta group has a leader).
 *
 * The binary: $TG_NATS_SERVER if set, else nats-server on PATH, in
 * /usr/sbin or /usr/local/sbin (Debian installs it in /usr/sbin).
 * A replication test that finds none prints "skipped: no nats-server" and
 * exits with ctest's skip code 77 (TGN_SKIP).
 */
#ifndef TG_TESTS_NATS_SERVER_H
#define TG_TESTS_NATS_SERVER_H

#include <stddef.h>
#include <sys/types.h>

#define TGN_SKIP 77
#define TGN_MAX_NODES 3

typedef struct tgn_node {
  pid_t pid;          /* 0: not running */
  int port;           /* client port */
  int cluster_port;   /* route port (cluster only) */
  int http_port;      /* monitoring port */
  char store[192];    /* its JetStream store directory */
} tgn_node;

typedef struct tgn_server {
  int nodes;                   /* 1 or 3 */
  tgn_node node[TGN_MAX_NODES];
  char dir[160];               /* the temporary directory holding it all */
  char url[256];               /* every node's client URL, comma-separated,
                                  for natsOptions_SetURL / a store's
                                  nats_url */
  char bin[256];               /* the nats-server binary used */
} tgn_server;

/* 1 if a nats-server binary is there (path in buf, when not NULL). */
int tgn_server_available(char *buf, size_t len);

/* Start a server of cluster_size nodes (1 or 3) and wait until every node
   answers. Returns 0, or -errno / -ETIMEDOUT with a reason on stderr (the
   started processes are stopped and the directory removed). */
int tgn_server_start(tgn_server *srv, int cluster_size);

/* Kill node i (SIGKILL, then reap it), keeping its ports and store. A
   crash: nats-server 2.9 acknowledges a message before its store is
   synced, so acknowledged messages may be gone after the restart. */
void tgn_server_kill_node(tgn_server *srv, int i);

/* Stop node i as an operator would (SIGTERM: the server flushes its store
   and exits; SIGKILL after 10 s), keeping its ports and store: an outage
   that loses nothing the server acknowledged. */
void tgn_server_stop_node(tgn_server *srv, int i);

/* Start node i again on the same ports and store; wait until it answers. */
int tgn_server_restart_node(tgn_server *srv, int i);

/* Kill every node and remove the directory. Accepts a server that was
   never started (zeroed) or already stopped. */
void tgn_server_stop(tgn_server *srv);

#endif
