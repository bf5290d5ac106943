/* The programs' helper set (tools/util/tg_progutil.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tokengraph/version.h"
#include "util.h"

static void test_parse_u64_takes_whole_decimal_or_hex_numbers_only(void **state) {
  (void)state;
  uint64_t v = 7;
  assert_int_equal(tgp_parse_u64("0", 0, 10, &v), 0);
  assert_int_equal(v, 0);
  assert_int_equal(tgp_parse_u64("18446744073709551615", 0, UINT64_MAX, &v), 0);
  assert_true(v == UINT64_MAX);
  assert_int_equal(tgp_parse_u64("0x1F", 0, 100, &v), 0);
  assert_int_equal(v, 31);
  const char *bad[] = {"", " 1", "1 ", "+1", "-1", "12abc", "0x", "0x-1", "0x 1", "0x0x1", "1e3"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    v = 7;
    if (tgp_parse_u64(bad[i], 0, UINT64_MAX, &v) != -EINVAL) fail_msg("'%s' was taken", bad[i]);
    assert_int_equal(v, 7); /* untouched */
  }
  assert_int_equal(tgp_parse_u64("18446744073709551616", 0, UINT64_MAX, &v), -ERANGE);
  assert_int_equal(tgp_parse_u64("11", 1, 10, &v), -ERANGE);
  assert_int_equal(tgp_parse_u64("0", 1, 10, &v), -ERANGE);
  assert_int_equal(v, 7);
}

static void test_json_str_escapes_quotes_backslashes_and_controls(void **state) {
  (void)state;
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  assert_non_null(f);
  tgp_json_str(f, "a\"b\\c\n\x01\xc3\xa9");
  fputc(' ', f);
  tgp_json_str(f, NULL);
  assert_int_equal(fclose(f), 0);
  assert_string_equal(buf, "\"a\\\"b\\\\c\\u000a\\u0001\xc3\xa9\" null");
  free(buf);
}

static void test_quantile_is_the_nearest_rank_of_sorted_values(void **state) {
  (void)state;
  uint64_t v[] = {50, 10, 40, 30, 20, 100, 90, 80, 70, 60, 0};
  size_t n = sizeof v / sizeof v[0];
  tgp_sort_u64(v, n);
  for (size_t i = 0; i < n; i++) assert_int_equal(v[i], 10 * i);
  assert_int_equal(tgp_quantile_sorted(v, n, 0.0), 0);
  assert_int_equal(tgp_quantile_sorted(v, n, 0.5), 50);
  assert_int_equal(tgp_quantile_sorted(v, n, 0.99), 100);
  assert_int_equal(tgp_quantile_sorted(v, n, 1.0), 100);
  assert_int_equal(tgp_quantile_sorted(v, 0, 0.5), 0);
}

static void test_write_all_delivers_every_byte_through_a_pipe(void **state) {
  (void)state;
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  /* More than a pipe holds, so the writer sees short writes and blocks
     until the reader (the parent) drains it. */
  enum { N = 1 << 20 };
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    static unsigned char out[N];
    for (size_t i = 0; i < N; i++) out[i] = (unsigned char)(i * 31);
    _exit(tgp_write_all(fds[1], out, N) ? 1 : 0);
  }
  close(fds[1]);
  static unsigned char in[N];
  size_t got = 0;
  assert_true(tgt_read_full(fds[0], in, N, &got));
  for (size_t i = 0; i < N; i++)
    if (in[i] != (unsigned char)(i * 31)) fail_msg("byte %zu differs", i);
  int st = tgt_wait_child(pid);
  close(fds[0]);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
  /* A closed pipe is an error, not a loop. */
  assert_int_equal(pipe(fds), 0);
  close(fds[0]);
  signal(SIGPIPE, SIG_IGN);
  assert_int_equal(tgp_write_all(fds[1], "x", 1), -EPIPE);
  close(fds[1]);
}

static void test_mkdtemp_then_rmtree_leaves_nothing(void **state) {
  (void)state;
  char d[256], p[300];
  tgt_mkdtemp(d, sizeof d, "tg-test-progutil");
  struct stat st;
  assert_int_equal(stat(d, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0700);
  snprintf(p, sizeof p, "%s/a", d);
  assert_int_equal(mkdir(p, 0700), 0);
  snprintf(p, sizeof p, "%s/a/f", d);
  tgt_write_file(p, "x");
  snprintf(p, sizeof p, "%s/link", d);
  assert_int_equal(symlink("/", p), 0); /* removed, never followed */
  assert_int_equal(tgp_rmtree(d), 0);
  assert_int_equal(lstat(d, &st), -1);
  assert_int_equal(errno, ENOENT);
  assert_int_equal(tgp_rmtree(d), 0); /* already gone */
  char tiny[8];
  assert_int_equal(tgp_mkdtemp(tiny, sizeof tiny, "/tmp", "x"), -ENAMETOOLONG);
}

static void test_exe_dir_is_the_directory_of_this_test(void **state) {
  (void)state;
  char d[4096], self[4096];
  assert_int_equal(tgp_exe_dir(d, sizeof d), 0);
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  assert_true(n > 0);
  self[n] = 0;
  size_t dl = strlen(d);
  assert_true(dl > 0 && d[dl - 1] == '/');
  assert_memory_equal(d, self, dl);
  assert_null(strchr(self + dl, '/'));
  assert_int_equal(tgp_exe_dir(d, 4), -ENAMETOOLONG);
}

static void test_print_version_names_the_program_and_the_library(void **state) {
  (void)state;
  char d[256], p[300];
  tgt_mkdtemp(d, sizeof d, "tg-test-progutil");
  snprintf(p, sizeof p, "%s/out", d);
  fflush(stdout);
  int saved = dup(1);
  FILE *f = fopen(p, "w");
  assert_non_null(f);
  dup2(fileno(f), 1);
  tgp_print_version("tg-example");
  fflush(stdout);
  dup2(saved, 1);
  close(saved);
  fclose(f);
  char *got = tgt_slurp(p), want[64];
  snprintf(want, sizeof want, "tg-example %s\n", TG_VERSION_STRING);
  assert_string_equal(got, want);
  assert_string_equal(tg_version(), TG_VERSION_STRING);
  free(got);
  tgt_rmtree(d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_parse_u64_takes_whole_decimal_or_hex_numbers_only),
    cmocka_unit_test(test_json_str_escapes_quotes_backslashes_and_controls),
    cmocka_unit_test(test_quantile_is_the_nearest_rank_of_sorted_values),
    cmocka_unit_test(test_write_all_delivers_every_byte_through_a_pipe),
    cmocka_unit_test(test_mkdtemp_then_rmtree_leaves_nothing),
    cmocka_unit_test(test_exe_dir_is_the_directory_of_this_test),
    cmocka_unit_test(test_print_version_names_the_program_and_the_library),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
