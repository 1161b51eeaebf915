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
#include <glib.h>

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
    /* addresses compared without case, the local part too (DESIGN.md) */
    {"From: a@PEC.A.example\r\nTo: b@pec.b.example\r\nCc: C@pec.c.example\r\n" HDR "\r\nhi\r\n",
     "a@pec.a.EXAMPLE", {"b@PEC.B.EXAMPLE", "C@pec.c.example"}, 0, PEC_CHECK_OK},
    {"From: a@pec.a.example\r\nTo: b@pec.b.example\r\nCc: C@pec.c.example\r\n" HDR "\r\nhi\r\n",
     "a@pec.a.example", {"c@pec.c.example"}, 0, PEC_CHECK_OK},
    /* a look-alike is another address */
    {"From: a@pec.a.example\r\nTo: jimbob@pec.b.example\r\n" HDR "\r\nhi\r\n",
     "a@pec.a.example", {"bob@pec.b.example"}, 0, PEC_CHECK_FORWARD_PATH},
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
     {"b@pec.b.example"}, 0, PEC_CHECK_OK},
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
    assert_true(pec_addr_equal("A@x.example", "a@x.example"));   /* DESIGN.md: without case */
    assert_false(pec_addr_equal("bob@x.example", "jimbob@x.example"));
    assert_false(pec_addr_equal("a@x.example", NULL));
    assert_string_equal(pec_check_rule_name(PEC_CHECK_BCC), "bcc");
}

/* §3.3.2.2 (issue 17 item 5): To and Cc parsed as address lists, every
 * instance, compared as whole addresses without case. */
static void test_receipt_variant(void **state)
{
    (void)state;
    static const struct {
        const char *hdr;    /* header fields of the original */
        const char *rcpt;
        pec_variant asked, want;
    } rows[] = {
        {.hdr = "To: <bob@x.example>\r\n", .rcpt = "bob@x.example", .asked = PEC_VARIANT_BREVE,
         .want = PEC_VARIANT_BREVE},
        {.hdr = "To: <anna@x.example>\r\nCc: <bob@x.example>\r\n", .rcpt = "bob@x.example",
         .asked = PEC_VARIANT_BREVE, .want = PEC_VARIANT_SINTETICA},
        /* a look-alike in To does not make bob primary */
        {.hdr = "To: <jimbob@x.example>\r\nCc: <bob@x.example>\r\n", .rcpt = "bob@x.example",
         .asked = PEC_VARIANT_COMPLETA, .want = PEC_VARIANT_SINTETICA},
        /* ... nor a display name that contains the address */
        {.hdr = "To: \"bob@x.example\" <other@x.example>\r\nCc: bob@x.example\r\n",
         .rcpt = "bob@x.example", .asked = PEC_VARIANT_COMPLETA, .want = PEC_VARIANT_SINTETICA},
        /* a look-alike in Cc does not make bob a copy */
        {.hdr = "To: <anna@x.example>, <bob@x.example>\r\nCc: <bob@x.example.it>\r\n",
         .rcpt = "bob@x.example", .asked = PEC_VARIANT_BREVE, .want = PEC_VARIANT_BREVE},
        /* group syntax, an encoded display name, another case */
        {.hdr = "To: <anna@x.example>\r\nCc: squadra: =?UTF-8?Q?Bob_=C3=A8?= <BOB@X.example>, "
                "c@x.example;\r\n",
         .rcpt = "bob@x.example", .asked = PEC_VARIANT_COMPLETA, .want = PEC_VARIANT_SINTETICA},
        /* a second To field counts */
        {.hdr = "To: <anna@x.example>\r\nCc: <bob@x.example>\r\nTo: bob@x.example\r\n",
         .rcpt = "bob@x.example", .asked = PEC_VARIANT_BREVE, .want = PEC_VARIANT_BREVE},
        /* in neither (a re-wrapped message): primary */
        {.hdr = "To: <anna@x.example>\r\n", .rcpt = "bob@x.example",
         .asked = PEC_VARIANT_NONE, .want = PEC_VARIANT_COMPLETA},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char *m = g_strdup_printf("From: <a@y.example>\r\n%sSubject: s\r\n\r\nbody\r\n",
                                  rows[i].hdr);
        pec_variant got = pec_receipt_variant(m, strlen(m), rows[i].rcpt, rows[i].asked);
        if (got != rows[i].want)
            fail_msg("row %zu: %s, want %s", i, pec_variant_name(got),
                     pec_variant_name(rows[i].want));
        g_free(m);
    }
    /* 500 recipients in Cc, folded over many lines, bob the last: no 4 KB cut */
    GString *h = g_string_new("From: <a@y.example>\r\nTo: <anna@x.example>\r\nCc: ");
    for (int k = 0; k < 499; k++)
        g_string_append_printf(h, "\"Destinatario %d\" <dest%03d@x.example>,\r\n ", k, k);
    g_string_append(h, "<bob@x.example>\r\nSubject: s\r\n\r\nbody\r\n");
    assert_true(h->len > 16000);
    assert_int_equal(pec_receipt_variant(h->str, h->len, "bob@x.example", PEC_VARIANT_BREVE),
                     PEC_VARIANT_SINTETICA);
    assert_int_equal(pec_receipt_variant(h->str, h->len, "anna@x.example", PEC_VARIANT_BREVE),
                     PEC_VARIANT_BREVE);
    g_string_free(h, TRUE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_addr_equal),
        cmocka_unit_test(test_receipt_variant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
