/*
 * test_smtp_reply.c - the SMTP client's reply reader (src/smtp/reply.c) as a
 * table: each row is the lines of one server reply, what the reader must
 * make of them, and the RFC section that says so.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "smtp/client.h"

struct reply_case {
    const char *rfc;
    const char *lines[8];          /* NULL-terminated: at most 7 lines */
    bool ehlo;
    enum smtp_reply_step step;     /* after the last line */
    int code;
    const char *text;
    unsigned ext;
    uint64_t max_size;
};

static const struct reply_case cases[] = {
    {.rfc = "RFC 5321 §4.2", .lines = {"250 2.1.0 Sender OK"}, .step = SMTP_REPLY_DONE,
     .code = 250, .text = "2.1.0 Sender OK"},
    {.rfc = "RFC 5321 §4.2 (text is optional)", .lines = {"354"}, .step = SMTP_REPLY_DONE,
     .code = 354, .text = ""},
    {.rfc = "RFC 5321 §4.2.1 (multiline: the first line's text)",
     .lines = {"451-4.3.0 first", "451-second", "451 last"}, .step = SMTP_REPLY_DONE,
     .code = 451, .text = "4.3.0 first"},
    {.rfc = "RFC 5321 §4.2 (codes 2yz to 5yz)", .lines = {"150 x"},
     .step = SMTP_REPLY_MALFORMED},
    {.rfc = "RFC 5321 §4.2 (codes 2yz to 5yz)", .lines = {"650 x"},
     .step = SMTP_REPLY_MALFORMED},
    {.rfc = "RFC 5321 §4.2 (three digits)", .lines = {"25"}, .step = SMTP_REPLY_MALFORMED},
    {.rfc = "RFC 5321 §4.2 (SP or - after the code)", .lines = {"250x"},
     .step = SMTP_REPLY_MALFORMED},
    {.rfc = "RFC 5321 §4.2 (digits)", .lines = {"2a0 x"}, .step = SMTP_REPLY_MALFORMED},
    {.rfc = "RFC 5321 §4.2.1 (a bad line inside)", .lines = {"250-a", "garbage"},
     .step = SMTP_REPLY_MALFORMED},
    {.rfc = "RFC 5321 §4.1.1.1 (EHLO keywords)",
     .lines = {"250-mx.test", "250-PIPELINING", "250-SIZE 35882577", "250-8BITMIME",
               "250-ENHANCEDSTATUSCODES", "250 CHUNKING"},
     .ehlo = true, .step = SMTP_REPLY_DONE, .code = 250, .text = "mx.test",
     .ext = EXT_PIPELINING | EXT_SIZE | EXT_8BITMIME | EXT_ENHANCED | EXT_CHUNKING,
     .max_size = 35882577},
    {.rfc = "RFC 4954 §3 (AUTH mechanisms; keywords case-insensitive)",
     .lines = {"250-mx", "250-auth CRAM-MD5 login", "250-StartTLS", "250 REQUIRETLS"},
     .ehlo = true, .step = SMTP_REPLY_DONE, .code = 250, .text = "mx",
     .ext = EXT_AUTH_LOGIN | EXT_STARTTLS | EXT_REQUIRETLS},
    {.rfc = "RFC 4954 §3 (the old AUTH= form)", .lines = {"250-mx", "250 AUTH=PLAIN"},
     .ehlo = true, .step = SMTP_REPLY_DONE, .code = 250, .text = "mx", .ext = EXT_AUTH_PLAIN},
    {.rfc = "RFC 1870 §4 (SIZE without a value: no fixed limit)",
     .lines = {"250-mx", "250 SIZE"}, .ehlo = true, .step = SMTP_REPLY_DONE, .code = 250,
     .text = "mx", .ext = EXT_SIZE, .max_size = 0},
    {.rfc = "RFC 5321 §4.1.1.1 (a keyword is a whole token)",
     .lines = {"250-mx", "250-SIZEX 10", "250-PIPELINING now", "250 DSNX"}, .ehlo = true,
     .step = SMTP_REPLY_DONE, .code = 250, .text = "mx", .ext = 0},
    {.rfc = "RFC 5321 §4.1.1.1 (keywords only after EHLO)",
     .lines = {"250-x", "250 STARTTLS"}, .step = SMTP_REPLY_DONE, .code = 250, .text = "x",
     .ext = 0},
    {.rfc = "RFC 6531 §3.1, RFC 3461 §4", .lines = {"250-mx", "250-SMTPUTF8", "250 DSN"},
     .ehlo = true, .step = SMTP_REPLY_DONE, .code = 250, .text = "mx",
     .ext = EXT_SMTPUTF8 | EXT_DSN},
};

static void test_reply_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct reply_case *c = &cases[i];
        struct smtp_reply r = {0};
        struct smtp_reply_reader rr;
        smtp_reply_start(&rr, &r, c->ehlo);
        enum smtp_reply_step step = SMTP_REPLY_MORE;
        size_t n = 0;
        const size_t max = sizeof c->lines / sizeof c->lines[0] - 1;
        assert_null(c->lines[max]);     /* every row ends with a NULL */
        while (n < max && c->lines[n] != NULL) {
            step = smtp_reply_line(&rr, c->lines[n++]);
            /* a line before the last never ends the reply */
            if (c->lines[n] != NULL && step != SMTP_REPLY_MORE)
                break;
        }
        if (step != c->step || (step == SMTP_REPLY_DONE &&
                                (r.code != c->code || strcmp(r.text, c->text) != 0 ||
                                 rr.ext != c->ext || rr.max_size != c->max_size)))
            fail_msg("case %zu (%s, first line \"%s\"): step %d code %d text \"%s\" ext %#x "
                     "size %llu", i, c->rfc, c->lines[0], step, r.code, r.text, rr.ext,
                     (unsigned long long)rr.max_size);
    }
}

/* A bare "250" ending an EHLO reply offers nothing: the reader must not look
 * past the line's end (it used to read line + 4, what an earlier, longer
 * line had left in the buffer). */
static void test_bare_code_ends_ehlo(void **state)
{
    (void)state;
    struct smtp_reply r = {0};
    struct smtp_reply_reader rr;
    smtp_reply_start(&rr, &r, true);
    assert_int_equal(smtp_reply_line(&rr, "250-mx.test"), SMTP_REPLY_MORE);
    static const char last[] = "250\0STARTTLS";
    assert_int_equal(smtp_reply_line(&rr, last), SMTP_REPLY_DONE);
    assert_int_equal(rr.ext, 0);
}

/* RFC 5321 §4.5.3.2 wants a bound on everything a server can make us wait
 * for: SMTP_REPLY_MAX_LINES lines and no end is refused. */
static void test_too_many_lines(void **state)
{
    (void)state;
    struct smtp_reply r = {0};
    struct smtp_reply_reader rr;
    smtp_reply_start(&rr, &r, false);
    for (unsigned i = 1; i < SMTP_REPLY_MAX_LINES; i++)
        assert_int_equal(smtp_reply_line(&rr, "250-more"), SMTP_REPLY_MORE);
    assert_int_equal(smtp_reply_line(&rr, "250-more"), SMTP_REPLY_TOO_LONG);
    smtp_reply_start(&rr, &r, false);
    for (unsigned i = 1; i < SMTP_REPLY_MAX_LINES; i++)
        assert_int_equal(smtp_reply_line(&rr, "250-more"), SMTP_REPLY_MORE);
    assert_int_equal(smtp_reply_line(&rr, "250 end"), SMTP_REPLY_DONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_table),
        cmocka_unit_test(test_bare_code_ends_ehlo),
        cmocka_unit_test(test_too_many_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
