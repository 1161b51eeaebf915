/*
 * test_tracking.c - the incoming point's record of messages taken in
 * (duplicate suppression) and its window: tracking_seen, tracking_purge_seen.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/lib.h"
#include "store/tracking.h"

static struct tracking *open_fresh(const char *name)
{
    char path[512], err[256];
    assert_int_equal(fs_mkdirs(TEST_TMPDIR, 0700), 0);
    snprintf(path, sizeof path, "%s/%s", TEST_TMPDIR, name);
    unlink(path);
    char wal[600];
    snprintf(wal, sizeof wal, "%s-wal", path);
    unlink(wal);
    struct tracking *t = tracking_open(path, err, sizeof err);
    if (t == NULL)
        fail_msg("tracking_open: %s", err);
    return t;
}

static void test_seen_and_window(void **state)
{
    (void)state;
    struct tracking *t = open_fresh("seen.db");
    char mid[64];
    for (int i = 0; i < 50; i++) {
        snprintf(mid, sizeof mid, "<m%d@pec.b.example>", i);
        assert_int_equal(tracking_seen(t, mid, "Anna@pec.a.example", "Q1"), 0);
    }
    /* a copy from another queue file is a duplicate; the same file again
     * (a stage replayed after a crash) is not; the recipient is compared
     * without case */
    assert_int_equal(tracking_seen(t, "<m0@pec.b.example>", "anna@pec.a.example", "Q2"), 1);
    assert_int_equal(tracking_seen(t, "<m0@pec.b.example>", "anna@pec.a.example", "Q1"), 0);
    /* nothing older than an hour: nothing forgotten */
    assert_int_equal(tracking_purge_seen(t, time(NULL) - 3600, 100), 0);
    assert_int_equal(tracking_seen(t, "<m1@pec.b.example>", "anna@pec.a.example", "Q2"), 1);
    /* all of them before the cut: forgotten oldest first, max per call */
    time_t cut = time(NULL) + 10;
    assert_int_equal(tracking_purge_seen(t, cut, 20), 20);
    assert_int_equal(tracking_seen(t, "<m0@pec.b.example>", "anna@pec.a.example", "Q3"), 0);
    assert_int_equal(tracking_seen(t, "<m25@pec.b.example>", "anna@pec.a.example", "Q3"), 1);
    /* 30 left before the cut plus the one just added */
    assert_int_equal(tracking_purge_seen(t, cut, 20), 20);
    assert_int_equal(tracking_purge_seen(t, cut, 20), 11);
    assert_int_equal(tracking_purge_seen(t, cut, 20), 0);
    assert_int_equal(tracking_seen(t, "<m49@pec.b.example>", "anna@pec.a.example", "Q3"), 0);
    tracking_close(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_seen_and_window)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
