/* The error table: every code has a distinct name and message. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "tokengraph/errors.h"
#include "tokengraph/version.h"

static void test_every_code_has_a_name_and_message(void **state) {
  (void)state;
  int n = 0;
#define CHECK(name, num, msg)                                              \
  assert_string_equal(tg_err_name(TG_##name), "TG_" #name);                \
  assert_string_equal(tg_strerror(TG_##name), msg);                        \
  assert_true(TG_##name <= TG_ERR_FIRST && TG_##name >= TG_ERR_LAST);      \
  n++;
  TG_ERR_MAP(CHECK)
#undef CHECK
  assert_int_equal(n, TG_ERR_FIRST - TG_ERR_LAST + 1);
}

static void test_errno_values_map_to_system_names(void **state) {
  (void)state;
  assert_string_equal(tg_err_name(-ENOENT), "ENOENT");
  assert_string_equal(tg_strerror(-ENOENT), "No such file or directory");
  assert_string_equal(tg_err_name(0), "OK");
  assert_string_equal(tg_err_name(-29999), "UNKNOWN");
  assert_string_equal(tg_strerror(12345), "unknown error");
}

/* Both lookups read one table and one errno range, (-4096, 0): a code in
   neither is unknown to both, the range's edge (-1) is still an errno. */
static void test_codes_outside_both_ranges_are_unknown_and_zero_is_success(void **state) {
  (void)state;
  assert_string_equal(tg_strerror(0), "success");
  assert_string_equal(tg_err_name(-1), "EPERM");
  assert_string_equal(tg_strerror(-1), "Operation not permitted");
  assert_string_equal(tg_err_name(-4096), "UNKNOWN");
  assert_string_equal(tg_strerror(-4096), "unknown error");
  assert_string_equal(tg_err_name(1), "UNKNOWN");
  assert_string_equal(tg_strerror(1), "unknown error");
  assert_string_equal(tg_err_name(TG_ERR_LAST - 1), "UNKNOWN");
  assert_string_equal(tg_strerror(TG_ERR_FIRST + 1), "unknown error");
}

static void test_full_disk_io_error_and_quota_are_distinct(void **state) {
  (void)state;
  assert_int_not_equal(TG_ENOSPC, TG_EIO);
  assert_int_not_equal(TG_ENOSPC, TG_EQUOTA);
  assert_int_not_equal(TG_EIO, TG_EQUOTA);
  assert_int_not_equal(TG_ENOSPC, -ENOSPC);
}

static void test_linked_library_reports_the_header_version(void **state) {
  (void)state;
  assert_string_equal(tg_version(), TG_VERSION_STRING);
  assert_int_equal(TG_VERSION_NUMBER, TG_VERSION_MAJOR * 10000 +
                                          TG_VERSION_MINOR * 100 + TG_VERSION_PATCH);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_every_code_has_a_name_and_message),
    cmocka_unit_test(test_errno_values_map_to_system_names),
    cmocka_unit_test(test_codes_outside_both_ranges_are_unknown_and_zero_is_success),
    cmocka_unit_test(test_full_disk_io_error_and_quota_are_distinct),
    cmocka_unit_test(test_linked_library_reports_the_header_version),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
