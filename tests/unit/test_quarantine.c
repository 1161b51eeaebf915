/*
 * test_quarantine.c - the quarantine store (src/store/quarantine.c): a stored
 * message and its .info, and the purge by age: whole UTC days older than the
 * retention go, the day of the limit and later days stay, names that are not
 * days are never touched, a missing store is no error.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/lib.h"
#include "store/quarantine.h"

#define DAY 86400

static bool exists(const char *dir, const char *name)
{
    char p[512];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &st) == 0;
}

static void make_day(const char *dir, const char *name)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    assert_int_equal(fs_mkdirs(p, 0700), 0);
    snprintf(p, sizeof p, "%s/%s/QID.eml", dir, name);
    assert_int_equal(fs_write_atomic(p, "x", 1, 0600), 0);
}

static void day_name(time_t t, char *out, size_t n)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%d", &tm);
}

static void test_store_and_info(void **state)
{
    (void)state;
    char dir[256], path[512], err[256];
    snprintf(dir, sizeof dir, "%s/store", TEST_TMPDIR);
    const char *rc[] = {"a@example.test", "b@example.test"};
    struct quarantine_info qi = {.qid = "ABC123", .reason = "virus Eicar-Signature",
                                 .sender = "s@client.test", .rcpts = rc, .nrcpts = 2};
    static const char msg[] = "Subject: x\r\n\r\nbody\r\n";
    assert_int_equal(quarantine_store(dir, &qi, msg, sizeof msg - 1, path, sizeof path, err,
                                      sizeof err), 0);
    assert_non_null(strstr(path, "/ABC123.eml"));
    char info[512], *buf;
    size_t len;
    snprintf(info, sizeof info, "%.*s.info", (int)(strlen(path) - 4), path);
    assert_int_equal(fs_read_file(info, &buf, &len, 65536), 0);
    assert_non_null(strstr(buf, "reason: virus Eicar-Signature\n"));
    assert_non_null(strstr(buf, "recipients: a@example.test b@example.test\n"));
    assert_non_null(strstr(buf, "client: local\n"));
    free(buf);
    /* a queue id that would leave the store is refused */
    qi.qid = "../evil";
    assert_int_equal(quarantine_store(dir, &qi, "x", 1, NULL, 0, err, sizeof err), -1);
}

static void test_purge_by_age(void **state)
{
    (void)state;
    char dir[256], err[256], d_old[16], d_limit[16], d_today[16];
    snprintf(dir, sizeof dir, "%s/purge", TEST_TMPDIR);
    time_t now = time(NULL), retention = 30 * DAY;
    day_name(now - retention - 5 * DAY, d_old, sizeof d_old);
    day_name(now - retention, d_limit, sizeof d_limit);
    day_name(now, d_today, sizeof d_today);
    make_day(dir, "2001-01-01");
    make_day(dir, d_old);
    make_day(dir, d_limit);
    make_day(dir, d_today);
    make_day(dir, "notaday");
    make_day(dir, "abcd-ef-gh");   /* the shape of a day, not digits */
    assert_int_equal(quarantine_purge(dir, now - retention, err, sizeof err), 2);
    assert_false(exists(dir, "2001-01-01"));
    assert_false(exists(dir, d_old));
    assert_true(exists(dir, d_limit));   /* not yet over: kept until the day ends */
    assert_true(exists(dir, d_today));
    assert_true(exists(dir, "notaday"));
    assert_true(exists(dir, "abcd-ef-gh"));
    /* nothing more to do; a missing store is not an error */
    assert_int_equal(quarantine_purge(dir, now - retention, err, sizeof err), 0);
    snprintf(dir, sizeof dir, "%s/missing", TEST_TMPDIR);
    assert_int_equal(quarantine_purge(dir, now, err, sizeof err), 0);
}

int main(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", TEST_TMPDIR);
    if (system(cmd) != 0)
        return 1;
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_store_and_info),
                                       cmocka_unit_test(test_purge_by_age)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
