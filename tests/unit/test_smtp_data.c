/*
 * test_smtp_data.c - the DATA/BDAT scanner as a table; every case is fed
 * whole and one octet at a time and must give the same result.  The
 * smuggling variants of 2023 (bare LF/CR around the dot) must never end the
 * data and must be flagged.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp.h"

struct data_case {
    const char *name;
    const char *in;
    size_t inlen;        /* 0: strlen */
    bool raw;
    bool done;           /* end marker seen */
    size_t consumed;     /* 0: all of the input */
    const char *out;
    const char *verdict; /* prefix of the refusal, NULL = accepted */
};

#define BARE "550 5.6.0 Bare"

static const struct data_case cases[] = {
    {"simple", "Subject: x\r\n\r\nbody\r\n.\r\n", 0, false, true, 0, "Subject: x\r\n\r\nbody\r\n", NULL},
    {"empty", ".\r\n", 0, false, true, 0, "", NULL},
    {"stuffed", "..a\r\n...\r\n.\r\n", 0, false, true, 0, ".a\r\n..\r\n", NULL},
    {"dot inside", "a.b\r\n .\r\n.\r\n", 0, false, true, 0, "a.b\r\n .\r\n", NULL},
    {"after end", "a\r\n.\r\nMAIL FROM:<x>\r\n", 0, false, true, 15, "a\r\n", NULL},
    {"no end", "a\r\nb", 0, false, false, 0, "a\r\nb", NULL},
    {"smuggle LF.LF", "a\n.\nMAIL FROM:<x>\r\n.\r\n", 0, false, true, 0, "a\n.\nMAIL FROM:<x>\r\n", BARE},
    {"smuggle CR.CRLF", "a\r.\r\nMAIL FROM:<x>\r\n.\r\n", 0, false, true, 0, "a\r.\r\nMAIL FROM:<x>\r\n", BARE},
    {"smuggle LF.CRLF", "a\n.\r\nMAIL FROM:<x>\r\n.\r\n", 0, false, true, 0, "a\n.\r\nMAIL FROM:<x>\r\n", BARE},
    {"smuggle CRLF.CR", "a\r\n.\rMAIL FROM:<x>\r\n.\r\n", 0, false, true, 0, "a\r\n\rMAIL FROM:<x>\r\n", BARE},
    {"smuggle CRLF.LF", "a\r\n.\nMAIL\r\n.\r\n", 0, false, true, 0, "a\r\n\nMAIL\r\n", BARE},
    {"bare LF", "a\nb\r\n.\r\n", 0, false, true, 0, "a\nb\r\n", BARE},
    {"bare CR", "a\rb\r\n.\r\n", 0, false, true, 0, "a\rb\r\n", BARE},
    {"NUL", "a\0b\r\n.\r\n", 8, false, true, 0, NULL, "550 5.6.0 NUL"},
    {"raw", "a\r\n.\r\nb", 0, true, false, 0, "a\r\n.\r\nb", NULL},
    {"raw bare LF", "a\nb", 0, true, false, 0, "a\nb", BARE},
    {"raw trailing CR", "ab\r", 0, true, false, 0, "ab", BARE},
};

static void run(const struct data_case *c, size_t step, char *out, size_t *outlen,
                struct smtp_data *d, size_t *consumed)
{
    size_t n = c->inlen ? c->inlen : strlen(c->in);
    smtp_data_init(d, c->raw, 0, 1000);
    *outlen = 0;
    *consumed = 0;
    while (*consumed < n && !smtp_data_done(d)) {
        size_t take = step == 0 ? n - *consumed : 1;
        size_t produced;
        size_t used = smtp_data_feed(d, c->in + *consumed, take, out + *outlen, &produced);
        *outlen += produced;
        *consumed += used;
        if (used < take)
            break;
    }
}

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct data_case *c = &cases[i];
        size_t n = c->inlen ? c->inlen : strlen(c->in);
        for (size_t step = 0; step <= 1; step++) {
            char out[256];
            size_t outlen, consumed;
            struct smtp_data d;
            run(c, step, out, &outlen, &d, &consumed);
            if (smtp_data_done(&d) != c->done)
                fail_msg("%s (step %zu): done %d", c->name, step, smtp_data_done(&d));
            if (consumed != (c->consumed ? n - c->consumed : n))
                fail_msg("%s (step %zu): consumed %zu of %zu", c->name, step, consumed, n);
            if (c->out && (outlen != strlen(c->out) || memcmp(out, c->out, outlen) != 0))
                fail_msg("%s (step %zu): output '%.*s'", c->name, step, (int)outlen, out);
            const char *v = smtp_data_verdict(&d);
            if ((v == NULL) != (c->verdict == NULL) ||
                (v && strncmp(v, c->verdict, strlen(c->verdict)) != 0))
                fail_msg("%s (step %zu): verdict '%s'", c->name, step, v ? v : "(accepted)");
        }
    }
}

static void test_limits(void **state)
{
    (void)state;
    struct smtp_data d;
    char out[4096];
    size_t outlen;
    /* size: 10 octets allowed */
    smtp_data_init(&d, false, 10, 0);
    const char *in = "0123456789AB\r\n.\r\n";
    size_t used = smtp_data_feed(&d, in, strlen(in), out, &outlen);
    assert_int_equal(used, strlen(in));
    assert_true(smtp_data_done(&d));
    assert_int_equal(outlen, 10);
    assert_string_equal(smtp_data_verdict(&d), "552 5.3.4 Message size exceeds fixed maximum message size");
    /* line: 1000 octets including CRLF is the limit */
    char line[1100];
    memset(line, 'x', 998);
    memcpy(line + 998, "\r\n.\r\n", 6);
    smtp_data_init(&d, false, 0, 1000);
    smtp_data_feed(&d, line, strlen(line), out, &outlen);
    assert_null(smtp_data_verdict(&d));
    memset(line, 'x', 999);
    memcpy(line + 999, "\r\n.\r\n", 6);
    smtp_data_init(&d, false, 0, 1000);
    smtp_data_feed(&d, line, strlen(line), out, &outlen);
    assert_non_null(smtp_data_verdict(&d));
    assert_true(d.line_too_long);
}

/* ---- the scanner against an octet-at-a-time model ----------------------
 * smtp_data_feed copies runs of plain octets in bulk; the model below looks
 * at one octet at a time (the rules of the header comment in data.c) and
 * the two must agree on everything: output, octets consumed, end, flags. */
struct model {
    int st;   /* 0 line start, 1 text, 2 CR, 3 dot at line start, 4 dot CR, 5 done */
    bool raw, bare_lf, bare_cr, nul, line_too_long, too_big;
    uint64_t size, max_size;
    size_t line_len, max_line;
};

static void m_emit(struct model *m, char c, char *out, size_t *o)
{
    if (m->max_size != 0 && m->size >= m->max_size) {
        m->too_big = true;
        return;
    }
    m->size++;
    out[(*o)++] = c;
}

static void m_text(struct model *m, char c, char *out, size_t *o)
{
    m->bare_lf |= c == '\n';
    m->nul |= c == '\0';
    m->line_len++;
    m->line_too_long |= m->max_line != 0 && m->line_len + 2 > m->max_line;
    m_emit(m, c, out, o);
    m->st = 1;
}

static size_t m_feed(struct model *m, const char *in, size_t len, char *out, size_t *outlen)
{
    size_t i = 0, o = 0;
    while (i < len && m->st != 5) {
        char c = in[i++];
        if (m->st == 0 && c == '.') {
            m->st = 3;
        } else if (m->st == 0 || m->st == 1) {
            if (c == '\r')
                m->st = 2;
            else
                m_text(m, c, out, &o);
        } else if (m->st == 2) {
            if (c == '\n') {
                m_emit(m, '\r', out, &o);
                m_emit(m, '\n', out, &o);
                m->line_len = 0;
                m->st = m->raw ? 1 : 0;
            } else {
                m->bare_cr = true;
                m_text(m, '\r', out, &o);
                i--;
            }
        } else if (m->st == 3) {
            if (c == '\r') {
                m->st = 4;
            } else {
                m->st = 1;
                i--;
            }
        } else if (m->st == 4) {
            if (c == '\n') {
                m->st = 5;
            } else {
                m->bare_cr = true;
                m_text(m, '\r', out, &o);
                i--;
            }
        }
    }
    *outlen = o;
    return i;
}

static void test_bulk_equals_octets(void **state)
{
    (void)state;
    static const char alphabet[] = "aaaaaaaaaaxyz. .\r\r\r\n\n\0";
    srand(6109);
    char in[600], out1[700], out2[700];
    for (int round = 0; round < 20000; round++) {
        size_t n = (size_t)(rand() % 500);
        for (size_t k = 0; k < n; k++)
            in[k] = alphabet[rand() % (int)(sizeof alphabet - 1)];
        bool raw = rand() % 4 == 0;
        uint64_t max_size = rand() % 3 == 0 ? (uint64_t)(rand() % 400) : 0;
        size_t max_line = rand() % 2 ? (size_t)(rand() % 80) : 0;
        struct smtp_data d;
        smtp_data_init(&d, raw, max_size, max_line);
        struct model m = {.st = raw ? 1 : 0, .raw = raw, .max_size = max_size,
                          .max_line = max_line};
        size_t used1 = 0, used2 = 0, o1 = 0, o2 = 0;
        /* the same input in random pieces for the scanner, whole for the model */
        while (used1 < n && !smtp_data_done(&d)) {
            size_t take = 1 + (size_t)rand() % (n - used1);
            size_t produced;
            size_t u = smtp_data_feed(&d, in + used1, take, out1 + o1, &produced);
            o1 += produced;
            used1 += u;
            if (u < take)
                break;
        }
        used2 = m_feed(&m, in, n, out2, &o2);
        if (used1 != used2 || o1 != o2 || memcmp(out1, out2, o1) != 0 ||
            smtp_data_done(&d) != (m.st == 5) || d.bare_lf != m.bare_lf ||
            d.bare_cr != m.bare_cr || d.nul != m.nul || d.line_too_long != m.line_too_long ||
            d.too_big != m.too_big || d.size != m.size)
            fail_msg("round %d: scanner and model differ (consumed %zu/%zu, out %zu/%zu)",
                     round, used1, used2, o1, o2);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_table), cmocka_unit_test(test_limits),
                                       cmocka_unit_test(test_bulk_equals_octets)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
