/*
 * tg-replica: run and inspect a read replica (docs/operations.md,
 * "Replication"). A thin client of tg_replica_open() and friends.
 *
 *   tg-replica follow  --nats URL --stream NAME --dir DIR [--bootstrap BACKUP]
 *                      [--failover] [--rebootstrap] [--lease-ttl-ms N] [--json]
 *   tg-replica status  --nats URL --stream NAME --dir DIR [--json]
 *   tg-replica promote --nats URL --stream NAME --dir DIR [--timeout-ms N] [--force]
 *                      [--json]
 *   tg-replica --version | --help
 */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tg_progutil.h"
#include "tokengraph/tokengraph.h"

#define EXIT_CLEAN 0
#define EXIT_FAILED 1 /* the replica stopped on an error, or a command failed */
#define EXIT_USAGE 64

static const char *prog = "tg-replica";

static void usage(FILE *f) {
  fprintf(f,
          "usage: tg-replica follow  --nats URL --stream NAME --dir DIR [--bootstrap BACKUP]\n"
          "                          [--failover] [--rebootstrap] [--lease-ttl-ms N] [--json]\n"
          "       tg-replica status  --nats URL --stream NAME --dir DIR [--json]\n"
          "       tg-replica promote --nats URL --stream NAME --dir DIR [--timeout-ms N]\n"
          "                          [--force] [--json]\n"
          "       tg-replica --version | --help\n"
          "\n"
          "A read replica applies the WAL stream a primary ships to NATS JetStream\n"
          "(stream TG_NAME, subject tg.NAME.wal) to its own data directory DIR.\n"
          "A running primary holds the leader lease (KV bucket TG_LEASE_NAME, key\n"
          "leader) and renews it every third of its TTL; a clean close releases it.\n"
          "\n"
          "  follow    open DIR as a replica (created when missing; with --bootstrap,\n"
          "            first copied from BACKUP, a 'tg-replay backup' of the primary)\n"
          "            and apply the stream until SIGINT or SIGTERM; a status line\n"
          "            every second (position, messages and records applied, the\n"
          "            apply loop's time and CPU time, times it pulled again after a\n"
          "            reconnect or a lost pull). On a signal: checkpoint (the\n"
          "            position is saved with it) and exit 0. If the stream cannot\n"
          "            be followed (a gap, a damaged message) it says why and exits 1.\n"
          "            --failover: once the lease expired (released, or not renewed\n"
          "            for its TTL), drain the stream and become the writer by itself\n"
          "            (of several followers exactly one wins; the others follow it);\n"
          "            it then holds and renews the lease until the signal.\n"
          "            --rebootstrap: when the stream was purged past DIR's position,\n"
          "            move DIR's content aside (DIR.gap.N, kept) and start again from\n"
          "            the newest snapshot on TG_SNAP_NAME, at the start and whenever\n"
          "            following stops on a gap.\n"
          "            --lease-ttl-ms: the TTL of the lease once promoted (default 10000).\n"
          "  status    the position DIR saved with its checkpoint (read without its\n"
          "            lock: works while 'follow' runs), its last LSN, the stream's\n"
          "            first and last sequence, and the leader lease (a running\n"
          "            follower's counters are in its 'follow' status lines).\n"
          "  promote   open DIR as a replica, take the leader lease (epoch + 1,\n"
          "            compare-and-swap), apply the stream to its end, checkpoint and\n"
          "            close: DIR is then the writer's directory, to open with\n"
          "            tg_store_open() (stop 'follow' on DIR first). Refused while\n"
          "            another process holds a live lease (a running primary), unless\n"
          "            --force (the old primary is then fenced at its next publish).\n"
          "            --timeout-ms bounds the drain (default 60000).\n"
          "\n"
          "  --json    print JSON objects instead of text (follow: one per line)\n"
          "\n"
          "exit codes: 0 done, 1 failed (the message says why), 64 usage error\n");
}

static void err_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void err_line(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", prog);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
}

typedef struct opts {
  const char *nats, *stream, *dir, *bootstrap;
  uint64_t timeout_ms;
  uint64_t lease_ttl_ms;
  int json, failover, rebootstrap, force;
} opts;

enum { OPT_FOLLOW = 1, OPT_PROMOTE = 2 }; /* which command's options parse takes */

/* 0 parsed, 1 --help/--version printed, EXIT_USAGE. */
static int parse(int argc, char **argv, int which, opts *o) {
  int allow_bootstrap = which == OPT_FOLLOW, allow_timeout = which == OPT_PROMOTE;
  memset(o, 0, sizeof *o);
  o->timeout_ms = 60000;
  o->lease_ttl_ms = 10000;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char **dst = NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 1;
    } else if (!strcmp(a, "--version")) {
      tgp_print_version(prog);
      return 1;
    } else if (!strcmp(a, "--json")) {
      o->json = 1;
      continue;
    } else if (which == OPT_FOLLOW && !strcmp(a, "--failover")) {
      o->failover = 1;
      continue;
    } else if (which == OPT_FOLLOW && !strcmp(a, "--rebootstrap")) {
      o->rebootstrap = 1;
      continue;
    } else if (which == OPT_PROMOTE && !strcmp(a, "--force")) {
      o->force = 1;
      continue;
    } else if (which == OPT_FOLLOW && !strcmp(a, "--lease-ttl-ms")) {
      if (i + 1 >= argc || tgp_parse_u64(argv[i + 1], 150, UINT32_MAX, &o->lease_ttl_ms)) {
        err_line("--lease-ttl-ms needs a number of milliseconds (150..%u)", UINT32_MAX);
        return EXIT_USAGE;
      }
      i++;
      continue;
    } else if (!strcmp(a, "--nats")) {
      dst = &o->nats;
    } else if (!strcmp(a, "--stream")) {
      dst = &o->stream;
    } else if (!strcmp(a, "--dir")) {
      dst = &o->dir;
    } else if (allow_bootstrap && !strcmp(a, "--bootstrap")) {
      dst = &o->bootstrap;
    } else if (allow_timeout && !strcmp(a, "--timeout-ms")) {
      if (i + 1 >= argc || tgp_parse_u64(argv[i + 1], 0, UINT32_MAX, &o->timeout_ms)) {
        err_line("--timeout-ms needs a number of milliseconds (0..%u)", UINT32_MAX);
        return EXIT_USAGE;
      }
      i++;
      continue;
    } else {
      err_line("unknown option '%s'", a);
      usage(stderr);
      return EXIT_USAGE;
    }
    if (i + 1 >= argc) {
      err_line("%s needs a value", a);
      return EXIT_USAGE;
    }
    *dst = argv[++i];
  }
  if (!o->nats || !o->stream || !o->dir) {
    err_line("--nats, --stream and --dir are required");
    usage(stderr);
    return EXIT_USAGE;
  }
  return 0;
}

static void print_status(const tg_replica_status *st, int json) {
  if (json) {
    printf("{\"applied_lsn\":%" PRIu64 ",\"stream_seq\":%" PRIu64 ",\"epoch\":%" PRIu64
           ",\"messages\":%" PRIu64 ",\"records\":%" PRIu64 ",\"apply_ns\":%" PRIu64
           ",\"apply_cpu_ns\":%" PRIu64 ",\"max_message_bytes\":%" PRIu64
           ",\"pull_restarts\":%" PRIu64 ",\"pull_restart_reason\":",
           st->applied_lsn, st->stream_seq, st->epoch, st->messages, st->records, st->apply_ns,
           st->apply_cpu_ns, st->max_message_bytes, st->pull_restarts);
    tgp_json_str(stdout, st->pull_restart_reason[0] ? st->pull_restart_reason : NULL);
    printf(",\"replica\":%s,\"promoted\":%s,\"error\":", st->is_replica ? "true" : "false",
           st->promoted ? "true" : "false");
    tgp_json_str(stdout, st->error ? tg_err_name(st->error) : NULL);
    printf(",\"message\":");
    tgp_json_str(stdout, st->error ? st->message : NULL);
    printf("}\n");
  } else {
    /* The apply loop's time and CPU time in ms: its rate is records over
       either (the CPU time leaves out what other threads had its core). */
    printf("%s LSN %" PRIu64 ", stream sequence %" PRIu64 ", epoch %" PRIu64 ", %" PRIu64
           " messages and %" PRIu64 " records since start, applying %.1f ms (%.1f ms of CPU)",
           st->promoted ? "writer (promoted): last" : "applied", st->applied_lsn,
           st->stream_seq, st->epoch, st->messages, st->records, (double)st->apply_ns / 1e6,
           (double)st->apply_cpu_ns / 1e6);
    if (st->pull_restarts)
      printf(", pulled again %" PRIu64 " times (last: %s)", st->pull_restarts,
             st->pull_restart_reason);
    printf("%s%s\n", st->error ? ": stopped: " : "", st->error ? st->message : "");
  }
  fflush(stdout);
}

static volatile sig_atomic_t got_signal;
static void on_signal(int sig) { got_signal = sig; }

static tg_store *open_replica(const opts *o) {
  tg_replica_config cfg;
  tg_replica_config_init(&cfg);
  cfg.nats_url = o->nats;
  cfg.repl_name = o->stream;
  cfg.bootstrap_dir = o->bootstrap;
  cfg.failover = o->failover;
  cfg.rebootstrap = o->rebootstrap;
  cfg.promote_force = o->force;
  cfg.lease_ttl_ms = (uint32_t)o->lease_ttl_ms;
  tg_store *r = NULL;
  char msg[512] = "";
  int rc = tg_replica_open_msg(&r, o->dir, &cfg, msg, sizeof msg);
  if (rc) {
    err_line("cannot open %s as a replica of %s: %s (%s)", o->dir, o->stream,
             msg[0] ? msg : tg_strerror(rc), tg_err_name(rc));
    return NULL;
  }
  tg_replica_status st;
  tg_replica_status_get(r, &st);
  if (st.set_aside[0])
    err_line("%s: the stream was purged past its position: bootstrapped again from the "
             "newest snapshot; the old content is in %s", o->dir, st.set_aside);
  return r;
}

static int close_replica(tg_store *r, const char *dir) {
  int rc = tg_checkpoint(r);
  if (rc) err_line("%s: checkpoint at exit: %s", dir, tg_strerror(rc));
  int c = tg_store_close(r);
  if (c) err_line("%s: close: %s", dir, tg_strerror(c));
  return rc || c ? EXIT_FAILED : EXIT_CLEAN;
}

static int cmd_follow(int argc, char **argv) {
  opts o;
  int rc = parse(argc, argv, OPT_FOLLOW, &o);
  if (rc) return rc == 1 ? EXIT_CLEAN : rc;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  tg_store *r = open_replica(&o);
  if (!r) return EXIT_FAILED;
  tg_replica_status st;
  int reopened = 0; /* reopened for a gap, and that open found no purge */
  while (!got_signal) {
    tg_replica_status_get(r, &st);
    print_status(&st, o.json);
    if (st.error == -ENODATA && o.rebootstrap && !st.promoted && !reopened) {
      /* A gap while following: the open bootstraps again when the stream
         was purged past the position. An open that finds no purge (the
         LSNs skip inside the stream) would meet the same gap: once only. */
      err_line("%s stopped following %s: %s; opening it again", o.dir, o.stream, st.message);
      if (close_replica(r, o.dir) != EXIT_CLEAN || !(r = open_replica(&o)))
        return EXIT_FAILED;
      tg_replica_status_get(r, &st);
      reopened = st.set_aside[0] == 0;
      continue;
    }
    if (st.error) {
      err_line("%s stopped following %s: %s", o.dir, o.stream, st.message);
      close_replica(r, o.dir);
      return EXIT_FAILED;
    }
    /* A heartbeat, not a measurement; a signal ends the sleep early. */
    struct timespec ts = {1, 0};
    nanosleep(&ts, NULL);
  }
  tg_replica_status_get(r, &st);
  print_status(&st, o.json);
  return close_replica(r, o.dir);
}

static int cmd_status(int argc, char **argv) {
  opts o;
  int rc = parse(argc, argv, 0, &o);
  if (rc) return rc == 1 ? EXIT_CLEAN : rc;
  tg_inspect_report ir;
  char msg[512] = "";
  rc = tg_store_inspect(o.dir, &ir, NULL, NULL, msg, sizeof msg);
  if (rc) {
    err_line("%s: %s (%s)", o.dir, msg[0] ? msg : tg_strerror(rc), tg_err_name(rc));
    return EXIT_FAILED;
  }
  tg_repl_stream_info si;
  msg[0] = 0;
  rc = tg_repl_stream_info_get(o.nats, o.stream, &si, msg, sizeof msg);
  if (rc) {
    err_line("stream %s at %s: %s (%s)", o.stream, o.nats, msg[0] ? msg : tg_strerror(rc),
             tg_err_name(rc));
    return EXIT_FAILED;
  }
  uint64_t last = ir.last_lsn ? ir.last_lsn : ir.checkpoint_lsn;
  if (o.json) {
    printf("{\"dir\":");
    tgp_json_str(stdout, o.dir);
    printf(",\"last_lsn\":%" PRIu64 ",\"checkpoint_lsn\":%" PRIu64 ",\"repl_stream_seq\":%" PRIu64
           ",\"repl_epoch\":%" PRIu64 ",\"stream_first_seq\":%" PRIu64
           ",\"stream_last_seq\":%" PRIu64 ",\"lease_epoch\":%" PRIu64 ",\"lease_lsn\":%" PRIu64
           ",\"lease_owner\":", last, ir.checkpoint_lsn, ir.repl_stream_seq, ir.repl_epoch,
           si.first_seq, si.last_seq, si.lease_epoch, si.lease_lsn);
    tgp_json_str(stdout, si.lease_owner[0] ? si.lease_owner : NULL);
    printf(",\"live\":%s}\n", ir.live ? "true" : "false");
  } else {
    printf("directory:   %s%s\n", o.dir, ir.live ? " (open in another process)" : "");
    printf("log:         last LSN %" PRIu64 ", checkpoint LSN %" PRIu64 "\n", last,
           ir.checkpoint_lsn);
    printf("position:    stream sequence %" PRIu64 ", epoch %" PRIu64
           " (saved with the checkpoint)\n", ir.repl_stream_seq, ir.repl_epoch);
    printf("stream:      TG_%s, sequences %" PRIu64 "..%" PRIu64 "%s\n", o.stream, si.first_seq,
           si.last_seq, ir.repl_stream_seq + 1 < si.first_seq && ir.repl_stream_seq
               ? ": purged past the position, bootstrap again" : "");
    if (si.lease_epoch)
      printf("lease:       epoch %" PRIu64 ", %s%s, LSN %" PRIu64 "\n", si.lease_epoch,
             si.lease_owner[0] ? "owner " : "released (no owner)", si.lease_owner,
             si.lease_lsn);
    else
      printf("lease:       none\n");
  }
  return EXIT_CLEAN;
}

static int cmd_promote(int argc, char **argv) {
  opts o;
  int rc = parse(argc, argv, OPT_PROMOTE, &o);
  if (rc) return rc == 1 ? EXIT_CLEAN : rc;
  tg_store *r = open_replica(&o);
  if (!r) return EXIT_FAILED;
  char msg[512] = "";
  rc = tg_replica_promote(r, (uint32_t)o.timeout_ms, msg, sizeof msg);
  tg_replica_status st;
  tg_replica_status_get(r, &st);
  if (rc) {
    err_line("%s was not promoted: %s (%s)%s", o.dir, msg[0] ? msg : tg_strerror(rc),
             tg_err_name(rc), rc == TG_EEXIST && !o.force ? "; see --force" : "");
    tg_store_close(r);
    return EXIT_FAILED;
  }
  if (o.json)
    printf("{\"promoted\":true,\"epoch\":%" PRIu64 ",\"last_lsn\":%" PRIu64
           ",\"stream_seq\":%" PRIu64 "}\n", st.epoch, st.applied_lsn, st.stream_seq);
  else
    printf("promoted:    %s is the writer at epoch %" PRIu64 ", LSN %" PRIu64
           " (stream sequence %" PRIu64 ")\n", o.dir, st.epoch, st.applied_lsn, st.stream_seq);
  fflush(stdout);
  return close_replica(r, o.dir);
}

static const tgp_command commands[] = {
    {"follow", cmd_follow},
    {"status", cmd_status},
    {"promote", cmd_promote},
};

int main(int argc, char **argv) {
  return tgp_main_commands(argc, argv, prog, usage, commands,
                           sizeof commands / sizeof commands[0]);
}
