/*
 * test_check.c - the formal checks of the access point (RFC 6109 §3.1.1),
 * a table of cases each naming the rule that must fail.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"

#define HDR "Subject: s\r\nDate: Mon, 16 Jun 2025 10:00:00 +0200\r\nMessage-ID: <m@c>\r\n"

static const struct {
    const char *msg;
    const char *mail_from;
    const char *rcpt[3];
    uint64_t limit;
    pec_check_rule rule;
} cases[] = {
    {"From: A <a@pec.a.example>\r\nTo: b@pec.b.example\r\n" HDR "\r\nhi\r\n", "a@pec.a.example",
     {"b@pec.b.example"}, 0, PEC_CHECK_OK},
    /* domain case-insensitive, local part exact (DESIGN.md) */
    {"From: a@PEC.A.example\r\nTo: b@pec.b.example\r\nCc: C@pec.c.example\r\n" HDR "\r\nhi\r\n",
     "a@pec.a.EXAMPLE", {"b@PEC.B.EXAMPLE", "C@pec.c.example"}, 0, PEC_CHECK_OK},
    {"From: a@pec.a.example\r\nTo: b@pec.b.example\r\nCc: C@pec.c.example\r\n" HDR "\r\nhi\r\n",
     "a@pec.a.example", {"c@pec.c.example"}, 0, PEC_CHECK_FORWARD_PATH},
    {"From: a@pec.a.example\r\nTo: b@pec.b.example\r\n" HDR "\r\nhi\r\n", "a@pec.a.example",
     {"b@pec.b.example", "hidden@pec.b.example"}, 0, PEC_CHECK_FORWARD_PATH},
    {"From: a@pec.a.example\r\nTo: b@pec.b.example\r\nBcc: x@pec.b.example\r\n" HDR "\r\nhi\r\n",
     "a@pec.a.example", {"b@pec.b.example"}, 0, PEC_CHECK_BCC},
    {"From: a@pec.a.example\r\nTo: b@pec.b.example\r\nBcc:\r\n" HDR "\r\nhi\r\n",
     "a@pec.a.example", {"b@pec.b.example"}, 0, PEC_CHECK_OK},
    {"From: a@pec.a.example, z@pec.a.example\r\nTo: b@pec.b.example\r\n" HDR "\r\nhi\r\n",
     "a@pec.a.example", {"b@pec.b.example"}, 0, PEC_CHECK_FROM},
    {"To: b@pec.b.example\r\n" HDR "\r\nhi\r\n", "a@pec.a.example", {"b@pec.b.example"}, 0,
     PEC_CHECK_FROM},
    {"From: a@pec.a.example\r\nCc: b@pec.b.example\r\n" HDR "\r\nhi\r\n", "a@pec.a.example",
     {"b@pec.b.example"}, 0, PEC_CHECK_TO},
    {"From: a@pec.a.example\r\nTo: b@pec.b.example\r\n" HDR "\r\nhi\r\n", "other@pec.a.example",
     {"b@pec.b.example"}, 0, PEC_CHECK_REVERSE_PATH},
    {"From: a@pec.a.example\r\nTo: b@pec.b.example\r\n" HDR "\r\nhi\r\n", "A@pec.a.example",
     {"b@pec.b.example"}, 0, PEC_CHECK_REVERSE_PATH},
    /* 100 bytes x 2 recipients above a 150-byte limit */
    {"From: a@pec.a.example\r\nTo: b@pec.b.example, c@pec.b.example\r\n" HDR "\r\nhi\r\n",
     "a@pec.a.example", {"b@pec.b.example", "c@pec.b.example"}, 150, PEC_CHECK_SIZE},
    {"no header separation", "a@pec.a.example", {"b@pec.b.example"}, 0, PEC_CHECK_SYNTAX},
};

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = 0;
        while (n < 3 && cases[i].rcpt[n])
            n++;
        pec_check_input in = {.msg = cases[i].msg, .len = strlen(cases[i].msg),
                              .reverse_path = cases[i].mail_from,
                              .forward_paths = cases[i].rcpt, .n_forward = n,
                              .max_total = cases[i].limit};
        pec_check_result r;
        int rc = pec_check_submission(&in, &r);
        if (r.rule != cases[i].rule)
            fprintf(stderr, "case %zu: got %s (%s)\n", i, pec_check_rule_name(r.rule), r.detail);
        assert_int_equal(r.rule, cases[i].rule);
        assert_int_equal(rc, cases[i].rule == PEC_CHECK_OK ? 0 : -1);
        if (rc < 0)
            assert_true(r.detail[0] != '\0');
    }
}

static void test_addr_equal(void **state)
{
    (void)state;
    assert_true(pec_addr_equal("a@X.example", "a@x.EXAMPLE"));
    assert_false(pec_addr_equal("A@x.example", "a@x.example"));
    assert_false(pec_addr_equal("a@x.example", NULL));
    assert_string_equal(pec_check_rule_name(PEC_CHECK_BCC), "bcc");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_addr_equal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
