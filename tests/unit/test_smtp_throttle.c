/*
 * test_smtp_throttle.c - the AUTH failure table (src/smtp/throttle.c): counts
 * within the window, expiry a window after an entry's first failure, the cap
 * on entries (the oldest goes first, memory stays bounded under rotation),
 * clear, and the client key (IPv4, IPv4-mapped, IPv6 /64).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "smtp/smtp.h"

static void test_counts_in_window(void **state)
{
    (void)state;
    struct smtp_throttle *t = smtp_throttle_new(100, 1000);
    assert_int_equal(smtp_throttle_count(t, "a", 0), 0);
    assert_int_equal(smtp_throttle_fail(t, "a", 0), 1);
    assert_int_equal(smtp_throttle_fail(t, "a", 10), 2);
    assert_int_equal(smtp_throttle_fail(t, "b", 20), 1);
    assert_int_equal(smtp_throttle_count(t, "a", 999), 2);
    assert_int_equal(smtp_throttle_count(t, "b", 999), 1);
    assert_int_equal(smtp_throttle_size(t), 2);
    smtp_throttle_free(t);
}

static void test_expiry_from_first_failure(void **state)
{
    (void)state;
    struct smtp_throttle *t = smtp_throttle_new(100, 1000);
    smtp_throttle_fail(t, "a", 0);
    smtp_throttle_fail(t, "b", 500);
    /* later failures do not extend a's window: a lock lasts one window at most */
    assert_int_equal(smtp_throttle_fail(t, "a", 900), 2);
    assert_int_equal(smtp_throttle_count(t, "a", 999), 2);
    assert_int_equal(smtp_throttle_count(t, "a", 1000), 0);
    assert_int_equal(smtp_throttle_size(t), 1);            /* a is gone, b is not */
    assert_int_equal(smtp_throttle_count(t, "b", 1499), 1);
    assert_int_equal(smtp_throttle_count(t, "b", 1500), 0);
    assert_int_equal(smtp_throttle_size(t), 0);
    /* a new window starts with the next failure */
    assert_int_equal(smtp_throttle_fail(t, "a", 2000), 1);
    smtp_throttle_free(t);
}

static void test_cap_evicts_oldest(void **state)
{
    (void)state;
    struct smtp_throttle *t = smtp_throttle_new(3, 1000000);
    smtp_throttle_fail(t, "old", 0);
    smtp_throttle_fail(t, "mid", 1);
    smtp_throttle_fail(t, "new", 2);
    smtp_throttle_fail(t, "old", 3);               /* counted, but still the oldest entry */
    assert_int_equal(smtp_throttle_count(t, "old", 4), 2);
    smtp_throttle_fail(t, "newer", 5);
    assert_int_equal(smtp_throttle_size(t), 3);
    assert_int_equal(smtp_throttle_count(t, "old", 6), 0);
    assert_int_equal(smtp_throttle_count(t, "mid", 6), 1);
    assert_int_equal(smtp_throttle_count(t, "newer", 6), 1);
    smtp_throttle_free(t);
}

static void test_rotation_stays_bounded(void **state)
{
    (void)state;
    /* an attacker rotating 100000 addresses or account names */
    struct smtp_throttle *t = smtp_throttle_new(1000, 60000);
    char key[32];
    for (int i = 0; i < 100000; i++) {
        snprintf(key, sizeof key, "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        smtp_throttle_fail(t, key, i / 10);
        assert_true(smtp_throttle_size(t) <= 1000);
    }
    assert_int_equal(smtp_throttle_size(t), 1000);
    /* the most recent ones are still counted */
    assert_int_equal(smtp_throttle_count(t, key, 9999), 1);
    /* and all expire in time */
    assert_int_equal(smtp_throttle_count(t, key, 9999 + 60000), 0);
    assert_int_equal(smtp_throttle_size(t), 0);
    smtp_throttle_free(t);
}

static void test_clear(void **state)
{
    (void)state;
    struct smtp_throttle *t = smtp_throttle_new(10, 1000);
    smtp_throttle_fail(t, "a", 0);
    smtp_throttle_fail(t, "b", 1);
    smtp_throttle_clear(t, "a");
    smtp_throttle_clear(t, "nothing");
    assert_int_equal(smtp_throttle_count(t, "a", 2), 0);
    assert_int_equal(smtp_throttle_count(t, "b", 2), 1);
    assert_int_equal(smtp_throttle_size(t), 1);
    /* the queue stays consistent: b expires on time, then a new a is counted */
    assert_int_equal(smtp_throttle_count(t, "b", 1001), 0);
    assert_int_equal(smtp_throttle_fail(t, "a", 1002), 1);
    assert_int_equal(smtp_throttle_size(t), 1);
    smtp_throttle_free(t);
}

static void test_clock_going_back(void **state)
{
    (void)state;
    struct smtp_throttle *t = smtp_throttle_new(10, 1000);
    smtp_throttle_fail(t, "a", 5000);
    smtp_throttle_fail(t, "b", 100);         /* an earlier time: kept behind a, not before */
    assert_int_equal(smtp_throttle_count(t, "b", 5999), 1);
    assert_int_equal(smtp_throttle_count(t, "a", 6000), 0);
    assert_int_equal(smtp_throttle_count(t, "b", 6000), 0);
    smtp_throttle_free(t);
}

static void test_client_key(void **state)
{
    (void)state;
    char k[SMTP_CLIENT_KEY_MAX];
    static const struct {
        const char *ip, *key;
    } cases[] = {
        {"192.0.2.7", "192.0.2.7"},
        {"::ffff:192.0.2.7", "192.0.2.7"},
        {"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
        {"2001:db8:1:2::9", "2001:db8:1:2::/64"},
        {"2001:db8:1:3::9", "2001:db8:1:3::/64"},
        {"::1", "::/64"},
        {"unknown", "unknown"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        smtp_client_key(cases[i].ip, k, sizeof k);
        assert_string_equal(k, cases[i].key);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_in_window),   cmocka_unit_test(test_expiry_from_first_failure),
        cmocka_unit_test(test_cap_evicts_oldest),  cmocka_unit_test(test_rotation_stays_bounded),
        cmocka_unit_test(test_clear),              cmocka_unit_test(test_clock_going_back),
        cmocka_unit_test(test_client_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
