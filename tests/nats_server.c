/* A private nats-server for tests and benchmarks: see nats_server.h. */
#include "nats_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tg_progutil.h"

/* Generous for a loaded 2-core machine and a sanitizer build: a node
   answers within a second when nothing is wrong; a cluster elects its
   meta leader within a few. */
#define READY_NS (60ull * 1000000000ull)

static int exists_exec(const char *p) { return access(p, X_OK) == 0; }

int tgn_server_available(char *buf, size_t len) {
  char tmp[256];
  if (!buf) {
    buf = tmp;
    len = sizeof tmp;
  }
  const char *env = getenv("TG_NATS_SERVER");
  if (env && *env) {
    snprintf(buf, len, "%s", env);
    return exists_exec(buf);
  }
  const char *path = getenv("PATH");
  char dirs[4096];
  snprintf(dirs, sizeof dirs, "%s:/usr/sbin:/usr/local/sbin", path ? path : "/usr/bin:/bin");
  char *save = NULL;
  for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
    if (!*d) continue;
    snprintf(buf, len, "%s/nats-server", d);
    if (exists_exec(buf)) return 1;
  }
  return 0;
}

/* A loopback port the kernel says is free now, its socket left open in
   *fd so that the next call cannot be given the same one. Another process
   could still take it between the close and the server's bind; the start
   then sees the node exit and tries again with new ports. */
static int free_port(int *fd) {
  *fd = socket(AF_INET, SOCK_STREAM, 0);
  if (*fd < 0) return -errno;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  int port = -EADDRNOTAVAIL;
  if (bind(*fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(*fd, (struct sockaddr *)&a, &al) == 0)
    port = ntohs(a.sin_port);
  return port;
}

static int spawn(tgn_server *srv, int i) {
  tgn_node *n = &srv->node[i];
  char port[16], http[16], cport[64], name[16], routes[256], log[256];
  snprintf(port, sizeof port, "%d", n->port);
  snprintf(http, sizeof http, "%d", n->http_port);
  snprintf(cport, sizeof cport, "nats://127.0.0.1:%d", n->cluster_port);
  snprintf(name, sizeof name, "tg%d", i);
  snprintf(log, sizeof log, "%s/node%d.log", srv->dir, i);
  routes[0] = 0;
  for (int j = 0; j < srv->nodes; j++) {
    if (j == i) continue;
    size_t o = strlen(routes);
    snprintf(routes + o, sizeof routes - o, "%snats://127.0.0.1:%d", o ? "," : "",
             srv->node[j].cluster_port);
  }
  const char *argv[24];
  int a = 0;
  argv[a++] = srv->bin;
  argv[a++] = "-js";
  argv[a++] = "-a";
  argv[a++] = "127.0.0.1";
  argv[a++] = "-p";
  argv[a++] = port;
  argv[a++] = "-m";
  argv[a++] = http;
  argv[a++] = "-sd";
  argv[a++] = n->store;
  argv[a++] = "-n";
  argv[a++] = name;
  argv[a++] = "-l";
  argv[a++] = log;
  if (srv->nodes > 1) {
    argv[a++] = "--cluster_name";
    argv[a++] = "tgtest";
    argv[a++] = "--cluster";
    argv[a++] = cport;
    argv[a++] = "--routes";
    argv[a++] = routes;
  }
  argv[a] = NULL;
  pid_t pid = fork();
  if (pid < 0) return -errno;
  if (pid == 0) {
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
      dup2(fd, 0);
      dup2(fd, 1);
      dup2(fd, 2);
    }
    execv(srv->bin, (char *const *)argv);
    _exit(127);
  }
  n->pid = pid;
  return 0;
}

/* GET /healthz on the node's monitoring port: 1 when it says "ok". */
static int healthy(const tgn_node *n) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)n->http_port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int ok = 0;
  if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
    static const char req[] = "GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (write(fd, req, sizeof req - 1) == (ssize_t)(sizeof req - 1)) {
      char buf[1024];
      size_t got = 0;
      struct pollfd p = {.fd = fd, .events = POLLIN};
      while (got < sizeof buf - 1 && poll(&p, 1, 2000) > 0) {
        ssize_t r = read(fd, buf + got, sizeof buf - 1 - got);
        if (r <= 0) break;
        got += (size_t)r;
      }
      buf[got] = 0;
      ok = strstr(buf, " 200 ") && strstr(buf, "\"ok\"");
    }
  }
  close(fd);
  return ok;
}

/* 1 if the child exited (reaped), else 0. */
static int died(tgn_node *n) {
  int st;
  if (n->pid > 0 && waitpid(n->pid, &st, WNOHANG) == n->pid) {
    n->pid = 0;
    return 1;
  }
  return 0;
}

static int wait_ready(tgn_server *srv) {
  uint64_t deadline = tgp_now_ns() + READY_NS;
  for (;;) {
    int ready = 1;
    for (int i = 0; i < srv->nodes; i++) {
      tgn_node *n = &srv->node[i];
      if (!n->pid) continue; /* a killed node is not waited for */
      if (died(n)) {
        fprintf(stderr, "nats-server node %d exited at start (see %s/node%d.log)\n", i,
                srv->dir, i);
        return -ECHILD;
      }
      if (!healthy(n)) ready = 0;
    }
    if (ready) return 0;
    if (tgp_now_ns() > deadline) {
      fprintf(stderr, "nats-server not ready after %llu s (logs in %s)\n",
              READY_NS / 1000000000ull, srv->dir);
      return -ETIMEDOUT;
    }
    struct timespec ts = {0, 20 * 1000 * 1000}; /* a poll's period, not a sync */
    nanosleep(&ts, NULL);
  }
}

/* One try at starting the nodes on fresh ports. */
static int start_once(tgn_server *srv, int cluster_size) {
  int rc = tgp_mkdtemp(srv->dir, sizeof srv->dir, NULL, "tg_nats");
  if (rc) return rc;
  srv->nodes = cluster_size;
  int fds[3 * TGN_MAX_NODES], nfd = 0;
  for (int i = 0; i < cluster_size && !rc; i++) {
    tgn_node *n = &srv->node[i];
    int p[3];
    for (int k = 0; k < 3; k++) {
      p[k] = free_port(&fds[nfd]);
      if (fds[nfd] >= 0) nfd++;
      if (p[k] < 0 && !rc) rc = p[k];
    }
    if (rc) break;
    n->port = p[0];
    n->cluster_port = p[1];
    n->http_port = p[2];
    snprintf(n->store, sizeof n->store, "%s/node%d", srv->dir, i);
    if (mkdir(n->store, 0700)) rc = -errno;
    size_t o = strlen(srv->url);
    snprintf(srv->url + o, sizeof srv->url - o, "%snats://127.0.0.1:%d", o ? "," : "", p[0]);
  }
  while (nfd) close(fds[--nfd]);
  for (int i = 0; i < cluster_size && !rc; i++) rc = spawn(srv, i);
  if (!rc) rc = wait_ready(srv);
  if (rc) tgn_server_stop(srv);
  return rc;
}

int tgn_server_start(tgn_server *srv, int cluster_size) {
  memset(srv, 0, sizeof *srv);
  if (cluster_size != 1 && cluster_size != 3) return -EINVAL;
  if (!tgn_server_available(srv->bin, sizeof srv->bin)) return -ENOENT;
  char bin[sizeof srv->bin];
  memcpy(bin, srv->bin, sizeof bin);
  int rc = 0;
  /* A node that exits at start most likely lost a port to another
     process (tests run in parallel): new ports, a few times. */
  for (int attempt = 0; attempt < 4; attempt++) {
    memset(srv, 0, sizeof *srv);
    memcpy(srv->bin, bin, sizeof bin);
    if ((rc = start_once(srv, cluster_size)) != -ECHILD) break;
  }
  return rc;
}

void tgn_server_kill_node(tgn_server *srv, int i) {
  tgn_node *n = &srv->node[i];
  if (n->pid > 0) {
    kill(n->pid, SIGKILL);
    waitpid(n->pid, NULL, 0);
  }
  n->pid = 0;
}

void tgn_server_stop_node(tgn_server *srv, int i) {
  tgn_node *n = &srv->node[i];
  if (n->pid > 0) {
    kill(n->pid, SIGTERM);
    uint64_t deadline = tgp_now_ns() + 10ull * 1000000000u;
    while (waitpid(n->pid, NULL, WNOHANG) == 0) {
      if (tgp_now_ns() > deadline) {
        kill(n->pid, SIGKILL);
        waitpid(n->pid, NULL, 0);
        break;
      }
      struct timespec ts = {0, 10 * 1000 * 1000}; /* a poll's period */
      nanosleep(&ts, NULL);
    }
  }
  n->pid = 0;
}

int tgn_server_restart_node(tgn_server *srv, int i) {
  tgn_server_kill_node(srv, i);
  int rc = spawn(srv, i);
  return rc ? rc : wait_ready(srv);
}

void tgn_server_stop(tgn_server *srv) {
  for (int i = 0; i < srv->nodes && i < TGN_MAX_NODES; i++) tgn_server_kill_node(srv, i);
  if (srv->dir[0]) tgp_rmtree(srv->dir);
  srv->dir[0] = 0;
  srv->nodes = 0;
}
