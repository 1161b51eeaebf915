/*
 * test_callout_policy.c - consent (RFC 3238 §2.1): which callouts run for a
 * message by the [callouts] lines of its sender and recipients; the trace
 * header; and the callout sections' configuration errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filters/callout.h"
#include "lib/config.h"
#include "lib/lib.h"

static struct config *load_text(const char *text, char *err, size_t errlen)
{
    char path[512];
    fs_mkdirs(TEST_TMPDIR, 0700);
    snprintf(path, sizeof path, "%s/pecd.conf", TEST_TMPDIR);
    FILE *f = fopen(path, "w");
    fputs("[provider]\ndomain = example.it\n[mx]\nlisten = 127.0.0.1:2525\ntls = none\n"
          "require_tls = no\n", f);
    fputs(text, f);
    fclose(f);
    return config_load(path, err, errlen);
}

static const char *conf =
    "[antivirus]\nclamd = unix:/run/clamav/clamd.ctl\n"
    "[milter.dkim]\nsocket = inet:8891@127.0.0.1\nphase = outgoing\n"
    "[milter.spam]\nsocket = unix:/run/rspamd/milter.sock\ndefault = accept\ntimeout = 3s\n"
    "[callouts]\n"
    "example.it = antivirus, dkim\n"
    "spam-lover@example.it = antivirus spam dkim\n"
    "nothing@example.it = none\n"
    "other.it = spam\n";

static void test_policy(void **state)
{
    (void)state;
    char err[512];
    struct config *cfg = load_text(conf, err, sizeof err);
    assert_non_null(cfg);
    assert_true(cfg->av_enabled);
    assert_int_equal(cfg->nmilters, 2);
    assert_int_equal(cfg->milters[0].phase, CONFIG_PHASE_OUTGOING);
    assert_int_equal(cfg->milters[1].dflt, CONFIG_FAIL_ACCEPT);
    assert_int_equal(cfg->milters[1].timeout, 3);
    assert_string_equal(config_callouts_for(cfg, "a@example.it"), "antivirus, dkim");
    assert_string_equal(config_callouts_for(cfg, "Spam-Lover@EXAMPLE.it"), "antivirus spam dkim");
    assert_string_equal(config_callouts_for(cfg, "x@elsewhere.test"), "antivirus");
    const char *one[] = {"a@example.it"};
    const char *lover[] = {"a@example.it", "spam-lover@example.it"};
    const char *none[] = {"nothing@example.it"};
    /* a filter runs when the sender's or any recipient's policy enables it */
    assert_false(callout_consented(cfg, "spam", "x@elsewhere.test", one, 1));
    assert_true(callout_consented(cfg, "spam", "x@elsewhere.test", lover, 2));
    assert_true(callout_consented(cfg, "spam", "someone@other.it", one, 1));
    assert_true(callout_consented(cfg, "antivirus", "x@elsewhere.test", none, 1));
    assert_false(callout_consented(cfg, "antivirus", "", none, 1));
    assert_false(callout_consented(cfg, "dkim", "", none, 1));
    assert_true(callout_consented(cfg, "dkim", "nothing@example.it", one, 1));
    assert_true(callout_list_has("a, b c", "b"));
    assert_false(callout_list_has("antivirus2", "antivirus"));
    assert_false(callout_list_has("", "antivirus"));
    config_free(cfg);
}

static void test_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"[antivirus]\nclamd = /run/clamd.ctl\n", "pecd.conf:8: clamd: '/run/clamd.ctl' is not"},
        {"[antivirus]\nclamd = tcp:host\n", "is not unix:/PATH or tcp:HOST:PORT"},
        {"[antivirus]\npool_size = 0\n", "pool_size"},
        {"[antivirus]\nfail_open = maybe\n", "fail_open: 'maybe' is not yes or no"},
        {"[antivirus]\nfoo = 1\n", "unknown key 'foo' in [antivirus]"},
        {"[milter.dkim]\nsocket = 8891\n", "is not unix:/PATH, inet:PORT@HOST"},
        {"[milter.dkim]\nphase = sometimes\n", "phase: 'sometimes'"},
        {"[milter.dkim]\ndefault = maybe\n", "default: 'maybe'"},
        {"[milter.a b]\nsocket = inet:1@h\n", "a filter name is"},
        {"[milter.antivirus]\nsocket = inet:1@h\n", "a filter name is"},
        {"[milter.dkim]\nphase = both\n", "[milter.dkim] needs socket"},
        {"[callouts]\ndefault = antivirus, nosuch\n", "'nosuch' is neither antivirus nor"},
        {"[callouts]\nlocalhost = antivirus\n", "is not default, workers, a domain or an address"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[512] = "";
        struct config *cfg = load_text(bad[i].text, err, sizeof err);
        if (cfg != NULL || strstr(err, bad[i].want) == NULL)
            fail_msg("case %zu: got '%s', want '%s'", i, err, bad[i].want);
    }
}

static void test_trace_header(void **state)
{
    (void)state;
    size_t n;
    char *m = callout_add_trace("mx.example.it", "antivirus=clean", "Subject: x\r\n\r\nbody",
                                strlen("Subject: x\r\n\r\nbody"), &n);
    const char *want = "OPES-Trace: by mx.example.it (pecd); antivirus=clean\r\nSubject: x\r\n";
    assert_memory_equal(m, want, strlen(want));
    assert_int_equal(n, strlen(want) + 6);
    free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_trace_header),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
