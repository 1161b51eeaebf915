/*
 * test_config_limits.c - the connection limits of the listeners (their share
 * of [limits] max_connections, explicit values, the sum check) and the AUTH
 * throttling keys of [limits], with their defaults and errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/config.h"
#include "lib/lib.h"

static char path[512];

#define BASE "[provider]\ndomain = example.it\n[tls]\ncertificate = c.pem\nkey = k.pem\n"
#define THREE BASE "[mx]\nlisten = 127.0.0.1:25\n[submission]\nlisten = 127.0.0.1:587\n" \
                   "[submissions]\nlisten = 127.0.0.1:465\n"

static struct config *load_text(const char *text, char *err, size_t errlen)
{
    fs_mkdirs(TEST_TMPDIR, 0700);
    snprintf(path, sizeof path, "%s/pecd.conf", TEST_TMPDIR);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    err[0] = '\0';
    return config_load(path, err, errlen);
}

static uint64_t lmax(const struct config *cfg, const char *name)
{
    const struct config_listener *l = config_listener(cfg, name);
    assert_non_null(l);
    return l->max_connections;
}

static uint64_t lmax_ip(const struct config *cfg, const char *name)
{
    return config_listener(cfg, name)->max_connections_per_ip;
}

static void test_default_shares(void **state)
{
    (void)state;
    char err[512];
    struct config *cfg = load_text(THREE, err, sizeof err);
    assert_non_null(cfg);
    assert_int_equal(cfg->max_connections, 1000);
    assert_int_equal(lmax(cfg, "submission"), 100);
    assert_int_equal(lmax(cfg, "submissions"), 100);
    assert_int_equal(lmax(cfg, "mx"), 800);
    assert_int_equal(lmax_ip(cfg, "mx"), 50);
    assert_int_equal(lmax_ip(cfg, "submission"), 50);
    assert_int_equal(cfg->min_data_rate, 500);
    assert_int_equal(cfg->auth_failure_delay, 2);
    assert_int_equal(cfg->auth_max_failures, 3);
    assert_int_equal(cfg->auth_failures_per_ip, 10);
    assert_int_equal(cfg->auth_failures_per_account, 20);
    assert_int_equal(cfg->auth_failure_window, 900);
    assert_int_equal(cfg->auth_track_max, 10000);
    config_free(cfg);

    /* a lone listener has the whole */
    cfg = load_text(BASE "[mx]\nlisten = 127.0.0.1:25\n", err, sizeof err);
    assert_non_null(cfg);
    assert_int_equal(lmax(cfg, "mx"), 1000);
    config_free(cfg);

    /* without [mx], the others share equally */
    cfg = load_text(BASE "[submission]\nlisten = 127.0.0.1:587\n[submissions]\n"
                         "listen = 127.0.0.1:465\n[limits]\nmax_connections = 300\n",
                    err, sizeof err);
    assert_non_null(cfg);
    assert_int_equal(lmax(cfg, "submission"), 150);
    assert_int_equal(lmax(cfg, "submissions"), 150);
    config_free(cfg);

    /* a small total: one slot each for the users, the rest for the MX */
    cfg = load_text(THREE "[limits]\nmax_connections = 5\nmax_connections_per_ip = 2\n", err,
                    sizeof err);
    assert_non_null(cfg);
    assert_int_equal(lmax(cfg, "submission"), 1);
    assert_int_equal(lmax(cfg, "submissions"), 1);
    assert_int_equal(lmax(cfg, "mx"), 3);
    assert_int_equal(lmax_ip(cfg, "submissions"), 2);
    config_free(cfg);
}

static void test_explicit_limits(void **state)
{
    (void)state;
    char err[512];
    struct config *cfg = load_text(BASE "[mx]\nlisten = 127.0.0.1:25\nmax_connections = 10\n"
                                        "max_connections_per_ip = 4\n"
                                        "[submission]\nlisten = 127.0.0.1:587\n"
                                        "[submissions]\nlisten = 127.0.0.1:465\n"
                                        "max_connections = 5\n[limits]\nmax_connections = 40\n",
                                   err, sizeof err);
    assert_non_null(cfg);
    assert_int_equal(lmax(cfg, "mx"), 10);
    assert_int_equal(lmax_ip(cfg, "mx"), 4);
    assert_int_equal(lmax_ip(cfg, "submission"), 50);
    assert_int_equal(lmax(cfg, "submissions"), 5);
    assert_int_equal(lmax(cfg, "submission"), 25);     /* what is left, without [mx] to take it */
    config_free(cfg);

    /* [mx] unset takes what the others leave */
    cfg = load_text(THREE "[submission]\nmax_connections = 7\n[limits]\nmax_connections = 100\n",
                    err, sizeof err);
    assert_non_null(cfg);
    assert_int_equal(lmax(cfg, "submission"), 7);
    assert_int_equal(lmax(cfg, "submissions"), 10);
    assert_int_equal(lmax(cfg, "mx"), 83);
    config_free(cfg);
}

static void test_errors(void **state)
{
    (void)state;
    char err[512];
    static const struct {
        const char *text, *reason;
    } cases[] = {
        {THREE "[mx]\nmax_connections = 900\n[submission]\nmax_connections = 200\n",
         "add up to 1100, more than [limits] max_connections = 1000"},
        {THREE "[limits]\nmax_connections = 2\n", "leaves no room for every listener"},
        {THREE "[mx]\nmax_connections = 0\n", "below the minimum"},
        {THREE "[mx]\nmax_connections_per_ip = x\n", "is not a number"},
        {THREE "[limits]\nauth_failure_delay = 61s\n", "auth_failure_delay: at most 60s"},
        {THREE "[limits]\nauth_failure_delay = soon\n", "is not a duration"},
        {THREE "[limits]\nauth_max_failures = 0\n", "below the minimum"},
        {THREE "[limits]\nauth_track_max = 10\n", "below the minimum"},
        {THREE "[limits]\nauth_track_max = 20000000\n", "at most 10000000"},
        {THREE "[limits]\nauth_failure_window = 0\n", "below the minimum"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct config *cfg = load_text(cases[i].text, err, sizeof err);
        if (cfg != NULL)
            fail_msg("case %zu loaded", i);
        if (strstr(err, cases[i].reason) == NULL || strstr(err, "pecd.conf") == NULL)
            fail_msg("case %zu: %s", i, err);
    }
    /* zero turns the delay and the per-address/account limits off */
    struct config *cfg = load_text(THREE "[limits]\nauth_failure_delay = 0\nauth_failures_per_ip = 0\n"
                                         "auth_failures_per_account = 0\nmin_data_rate = 0\n",
                                   err, sizeof err);
    assert_non_null(cfg);
    assert_int_equal(cfg->auth_failure_delay, 0);
    assert_int_equal(cfg->auth_failures_per_ip, 0);
    assert_int_equal(cfg->min_data_rate, 0);
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_shares),
        cmocka_unit_test(test_explicit_limits),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
