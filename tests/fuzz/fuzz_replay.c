/*
 * libFuzzer target: tg-replay's own command code (tools/tg-replay.c,
 * compiled in with its main renamed tg_replay_main) run in-process on a
 * data directory from any bytes (fuzz_dir.h): verify, stats, dump, backup
 * (into a directory of its own) and then recover, with or without --json, --from and
 * --force-truncate-at-corruption as the first input byte says (and with
 * valid segment CRCs or not, fuzz_dir.h).
 *
 * Recover writes into the directory: it runs on the case directory built
 * for this input alone, which is removed before the next one. Its --config
 * file gives small segments and ring, so a case is fast.
 *
 * What must hold, whatever the bytes:
 *  - no crash, hang, sanitizer report or leak; nothing written outside the
 *    case directory (fz_check_outside());
 *  - the exit codes are the documented ones (0, 1, 2: never a usage
 *    error), and verify, stats and dump reach the same verdict;
 *  - backup copies exactly what verify reads (clean or torn) into a
 *    directory that verifies clean and holds the same counts;
 *  - a recover that exits 0 leaves a directory that verifies clean and
 *    that the store opens.
 * stdout goes to /dev/null (the commands' reports); stderr stays, for the
 * commands' one-line errors and the sanitizers (run with -close_fd_mask=2
 * to silence the former: libFuzzer keeps its reports).
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_dir.h"
#include "tokengraph/tokengraph.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int tg_replay_main(int argc, char **argv);

/* The first byte: FZ_FIX_CRC (bit 0) and these. */
enum { F_JSON = 2, F_FORCE = 4, F_FROM = 8 };

static char config[128];

__attribute__((noreturn)) static void fail(const char *what, int ex) {
  fprintf(stderr, "fuzz_replay: %s (exit %d)\n", what, ex);
  abort();
}

static char dest[128];

static int run(const char *cmd, const char *dir, unsigned flags) {
  char *argv[8];
  int argc = 0;
  argv[argc++] = (char *)"tg-replay";
  argv[argc++] = (char *)cmd;
  argv[argc++] = (char *)dir;
  if (!strcmp(cmd, "backup")) argv[argc++] = dest;
  if (flags & F_JSON) argv[argc++] = (char *)"--json";
  if (!strcmp(cmd, "dump") && (flags & F_FROM)) argv[argc++] = (char *)"--from=3";
  if (!strcmp(cmd, "recover")) {
    argv[argc++] = (char *)"--config";
    argv[argc++] = config;
    if (flags & F_FORCE) argv[argc++] = (char *)"--force-truncate-at-corruption";
  }
  argv[argc] = NULL;
  int ex = tg_replay_main(argc, argv);
  fflush(stdout);
  return ex;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!config[0]) {
    fz_init("replay");
    int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null < 0 || dup2(null, STDOUT_FILENO) < 0) abort();
    close(null);
    snprintf(config, sizeof config, "%s/small.ini", fz_base());
    snprintf(dest, sizeof dest, "%s/backup", fz_base());
    FILE *f = fopen(config, "w");
    if (!f) abort();
    fputs("[wal]\nsegment_bytes = 4096\nring_slots = 64\ncheckpoint_bytes = 0\n", f);
    if (fclose(f)) abort();
  }
  if (!size) return 0;
  unsigned flags = data[0];
  char d[96];
  snprintf(d, sizeof d, "%s/case", fz_base());
  fz_build(d, data + 1, size - 1, flags & FZ_FIX_CRC);

  int verify = run("verify", d, flags);
  if (verify < 0 || verify > 2) fail("verify: an undocumented exit code", verify);
  int stats = run("stats", d, flags);
  if (stats != verify) fail("stats and verify disagree", stats);
  int dump = run("dump", d, flags);
  if (dump != verify) fail("dump and verify disagree", dump);
  fz_check_outside();

  /* A backup of what verify reads, clean or torn, is a clean directory
     with the same contents. */
  fz_remove(dest);
  int backup = run("backup", d, flags);
  if (backup != 0 && backup != 2) fail("backup: an undocumented exit code", backup);
  if (verify != 2 && backup != 0) fail("verify read the directory, backup failed", backup);
  if (backup == 0) {
    if (verify == 2) fail("backup copied a directory verify refuses", backup);
    int v = run("verify", dest, 0);
    if (v != 0) fail("a backup that verify does not find clean", v);
    tg_inspect_report a, b;
    char msg[1024] = "";
    if (tg_store_inspect(d, &a, NULL, NULL, msg, sizeof msg) ||
        tg_store_inspect(dest, &b, NULL, NULL, msg, sizeof msg))
      fail("inspection after backup", 2);
    if (a.tokens != b.tokens || a.connections != b.connections)
      fail("the backup holds other counts than its source", 0);
  }
  fz_remove(dest);
  fz_check_outside();

  int recover = run("recover", d, flags);
  if (recover != 0 && recover != 2) fail("recover: an undocumented exit code", recover);
  /* Exit 1 promises "recoverable with 'tg-replay recover DIR'". */
  if (verify != 2 && recover != 0) fail("verify found it recoverable, recover failed", recover);
  fz_check_outside();
  if (recover == 0) {
    int after = run("verify", d, 0);
    if (after != 0) fail("recover exited 0, yet verify does not find the directory clean", after);
    tg_store_config cfg;
    tg_store_config_init(&cfg);
    cfg.crash_dump = 0;
    cfg.wal.segment_bytes = 4096;
    cfg.wal.ring_slots = 64;
    tg_store *s = NULL;
    char msg[1024] = "";
    int rc = tg_store_open_msg(&s, d, &cfg, msg, sizeof msg);
    if (rc) {
      fprintf(stderr, "fuzz_replay: %s\n", msg);
      fail("recover exited 0, yet the store does not open the directory", rc);
    }
    if ((rc = tg_store_close(s))) fail("close after recover", rc);
    fz_check_outside();
  }
  return 0;
}
