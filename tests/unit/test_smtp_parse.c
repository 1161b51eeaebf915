/*
 * test_smtp_parse.c - command-line parsing as tables (Dovecot lib-smtp
 * style): the line reader fed whole and one octet at a time, verbs, paths
 * and parameters, xtext.
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

/* ---- line reader ---------------------------------------------------------- */
struct line_case {
    const char *input;
    size_t max;
    /* expected events, joined: "L:text" line, "T" too long, "B" bare LF */
    const char *expect;
};

static const struct line_case line_cases[] = {
    {"EHLO x\r\n", 512, "L:EHLO x|"},
    {"A\r\nB\r\n", 512, "L:A|L:B|"},
    {"\r\n", 512, "L:|"},
    {"bare\nEHLO x\r\n", 512, "B|L:EHLO x|"},
    {"cr\rin\r\n", 512, "L:cr\rin|"},
    {"0123456789\r\nok\r\n", 12, "L:0123456789|L:ok|"},
    {"01234567890\r\nok\r\n", 12, "T|L:ok|"},
    {"0123456789012345678901234567890\r\nok\r\n", 12, "T|L:ok|"},
    {"0123456789012345678901234567890\nok\r\n", 12, "T|L:ok|"},
    {"incomplete", 512, ""},
    {"\n", 512, "B|"},
};

/* Feeds input with the given step (0 = whole) into an accumulating buffer,
 * as the server does with its evbuffer, and records the events. */
static void run_lines(const struct line_case *c, size_t step, char *out, size_t outlen)
{
    struct smtp_line_reader r = {0};
    char buf[4096];
    size_t have = 0, fed = 0, n = strlen(c->input);
    out[0] = '\0';
    while (fed < n || have > 0) {
        size_t add = step == 0 ? n - fed : (n - fed < step ? n - fed : step);
        memcpy(buf + have, c->input + fed, add);
        have += add;
        fed += add;
        for (;;) {
            size_t linelen, consumed;
            enum smtp_line_result res = smtp_line_next(&r, buf, have, c->max, &linelen, &consumed);
            char ev[600] = "";
            if (res == SMTP_LINE_OK)
                snprintf(ev, sizeof ev, "L:%.*s|", (int)linelen, buf);
            else if (res == SMTP_LINE_TOO_LONG)
                snprintf(ev, sizeof ev, "T|");
            else if (res == SMTP_LINE_BARE_LF)
                snprintf(ev, sizeof ev, "B|");
            strncat(out, ev, outlen - strlen(out) - 1);
            memmove(buf, buf + consumed, have - consumed);
            have -= consumed;
            if (res == SMTP_LINE_NEED_MORE && consumed == 0)
                break;
        }
        if (fed == n && have == 0)
            break;
        if (fed == n) {
            /* input exhausted: nothing more can complete */
            break;
        }
    }
}

static void test_line_reader(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof line_cases / sizeof line_cases[0]; i++) {
        char whole[2048], trickle[2048];
        run_lines(&line_cases[i], 0, whole, sizeof whole);
        run_lines(&line_cases[i], 1, trickle, sizeof trickle);
        if (strcmp(whole, line_cases[i].expect) != 0 || strcmp(trickle, line_cases[i].expect) != 0)
            fail_msg("case %zu (%s): whole '%s' trickle '%s' expected '%s'", i,
                     line_cases[i].input, whole, trickle, line_cases[i].expect);
    }
}

/* ---- verbs ---------------------------------------------------------------- */
static void test_verbs(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        enum smtp_verb verb;
        const char *args;
    } cases[] = {
        {"EHLO client.example", SMTP_V_EHLO, "client.example"},
        {"ehlo client.example", SMTP_V_EHLO, "client.example"},
        {"MAIL FROM:<a@b>", SMTP_V_MAIL, "FROM:<a@b>"},
        {"rcpt to:<a@b>", SMTP_V_RCPT, "to:<a@b>"},
        {"DATA", SMTP_V_DATA, ""},
        {"BDAT 100 LAST", SMTP_V_BDAT, "100 LAST"},
        {"STARTTLS", SMTP_V_STARTTLS, ""},
        {"AUTH PLAIN AGFAYg==", SMTP_V_AUTH, "PLAIN AGFAYg=="},
        {"QUIT", SMTP_V_QUIT, ""},
        {"GET / HTTP/1.1", SMTP_V_HTTP, "/ HTTP/1.1"},
        {"POST /x HTTP/1.0", SMTP_V_HTTP, "/x HTTP/1.0"},
        {"GET", SMTP_V_UNKNOWN, ""},
        {"MAILX FROM:<a@b>", SMTP_V_UNKNOWN, "FROM:<a@b>"},
        {"", SMTP_V_UNKNOWN, ""},
        {"EXPN list", SMTP_V_EXPN, "list"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct smtp_command c;
        smtp_command_parse(cases[i].line, &c);
        if (c.verb != cases[i].verb || strcmp(c.args, cases[i].args) != 0)
            fail_msg("case %zu '%s': verb %d args '%s'", i, cases[i].line, c.verb, c.args);
    }
}

/* ---- paths ---------------------------------------------------------------- */
struct path_case {
    const char *args;
    const char *prefix;
    bool allow_null;
    enum smtp_path_error err;
    const char *addr, *local, *domain;
    bool utf8;
    size_t nparams;
    const char *param0, *value0;
};

static const struct path_case path_cases[] = {
    {"FROM:<a@example.it>", "FROM:", true, SMTP_PATH_OK, "a@example.it", "a", "example.it", false, 0, NULL, NULL},
    {"FROM:<>", "FROM:", true, SMTP_PATH_OK, "", NULL, NULL, false, 0, NULL, NULL},
    {"TO:<>", "TO:", false, SMTP_PATH_SYNTAX, NULL, NULL, NULL, false, 0, NULL, NULL},
    {"from:<a@b.it> SIZE=100 BODY=8BITMIME", "FROM:", true, SMTP_PATH_OK, "a@b.it", "a", "b.it", false, 2, "SIZE", "100"},
    {"FROM: <a@b.it>", "FROM:", true, SMTP_PATH_OK, "a@b.it", "a", "b.it", false, 0, NULL, NULL},
    {"FROM:a@b.it", "FROM:", true, SMTP_PATH_SYNTAX, NULL, NULL, NULL, false, 0, NULL, NULL},
    {"FROM:<a@b.it", "FROM:", true, SMTP_PATH_SYNTAX, NULL, NULL, NULL, false, 0, NULL, NULL},
    {"FROM:<a@b.it>x", "FROM:", true, SMTP_PATH_SYNTAX, NULL, NULL, NULL, false, 0, NULL, NULL},
    {"TO:<Postmaster>", "TO:", false, SMTP_PATH_OK, "Postmaster", "Postmaster", NULL, false, 0, NULL, NULL},
    {"TO:<alice>", "TO:", false, SMTP_PATH_SYNTAX, NULL, NULL, NULL, false, 0, NULL, NULL},
    {"TO:<@relay.it,@r2.it:bob@b.it>", "TO:", false, SMTP_PATH_OK, "bob@b.it", "bob", "b.it", false, 0, NULL, NULL},
    {"TO:<\"john doe\"@b.it>", "TO:", false, SMTP_PATH_OK, "\"john doe\"@b.it", "\"john doe\"", "b.it", false, 0, NULL, NULL},
    {"TO:<\"a>b\"@b.it> NOTIFY=NEVER", "TO:", false, SMTP_PATH_OK, "\"a>b\"@b.it", "\"a>b\"", "b.it", false, 1, "NOTIFY", "NEVER"},
    {"TO:<a..b@b.it>", "TO:", false, SMTP_PATH_SYNTAX, NULL, NULL, NULL, false, 0, NULL, NULL},
    {"TO:<.a@b.it>", "TO:", false, SMTP_PATH_SYNTAX, NULL, NULL, NULL, false, 0, NULL, NULL},
    {"TO:<a@-b.it>", "TO:", false, SMTP_PATH_SYNTAX, NULL, NULL, NULL, false, 0, NULL, NULL},
    {"TO:<a@b..it>", "TO:", false, SMTP_PATH_SYNTAX, NULL, NULL, NULL, false, 0, NULL, NULL},
    {"TO:<a@[127.0.0.1]>", "TO:", false, SMTP_PATH_OK, "a@[127.0.0.1]", "a", "[127.0.0.1]", false, 0, NULL, NULL},
    {"TO:<a b@b.it>", "TO:", false, SMTP_PATH_SYNTAX, NULL, NULL, NULL, false, 0, NULL, NULL},
    {"TO:<pi\xc3\xb9@b\xc3\xa8.it>", "TO:", false, SMTP_PATH_OK, "pi\xc3\xb9@b\xc3\xa8.it", "pi\xc3\xb9", "b\xc3\xa8.it", true, 0, NULL, NULL},
    {"TO:<pi\xc3@b.it>", "TO:", false, SMTP_PATH_SYNTAX, NULL, NULL, NULL, false, 0, NULL, NULL},
    {"FROM:<a@b.it> SMTPUTF8 REQUIRETLS", "FROM:", true, SMTP_PATH_OK, "a@b.it", "a", "b.it", false, 2, "SMTPUTF8", NULL},
    {"FROM:<a@b.it> =x", "FROM:", true, SMTP_PATH_SYNTAX, NULL, NULL, NULL, false, 0, NULL, NULL},
    {"FROM:<a@b.it> SIZE=", "FROM:", true, SMTP_PATH_SYNTAX, NULL, NULL, NULL, false, 0, NULL, NULL},
    {"FROM:<a@b.it> size=10", "FROM:", true, SMTP_PATH_OK, "a@b.it", "a", "b.it", false, 1, "SIZE", "10"},
    {"TO:<a@b.it>", "FROM:", true, SMTP_PATH_SYNTAX, NULL, NULL, NULL, false, 0, NULL, NULL},
};

static void test_paths(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof path_cases / sizeof path_cases[0]; i++) {
        const struct path_case *c = &path_cases[i];
        struct smtp_path *p = malloc(sizeof *p);
        enum smtp_path_error e = smtp_path_parse(c->args, c->prefix, c->allow_null, p);
        if (e != c->err)
            fail_msg("case %zu '%s': error %d, expected %d", i, c->args, e, c->err);
        if (e == SMTP_PATH_OK) {
            assert_string_equal(p->addr, c->addr);
            if (c->local)
                assert_string_equal(p->local, c->local);
            if (c->domain)
                assert_string_equal(p->domain, c->domain);
            else
                assert_null(p->domain);
            assert_int_equal(p->utf8, c->utf8);
            assert_int_equal(p->nparams, c->nparams);
            if (c->param0) {
                assert_string_equal(p->params[0].key, c->param0);
                if (c->value0)
                    assert_string_equal(p->params[0].value, c->value0);
                else
                    assert_null(p->params[0].value);
            }
        }
        free(p);
    }
}

static void test_path_too_long(void **state)
{
    (void)state;
    char args[600] = "TO:<";
    memset(args + 4, 'a', 300);
    strcpy(args + 304, "@b.it>");
    struct smtp_path *p = malloc(sizeof *p);
    assert_int_equal(smtp_path_parse(args, "TO:", false, p), SMTP_PATH_TOO_LONG);
    /* 17 parameters: one more than we keep */
    strcpy(args, "FROM:<a@b.it>");
    for (int i = 0; i < 17; i++)
        strcat(args, " X=1");
    assert_int_equal(smtp_path_parse(args, "FROM:", true, p), SMTP_PATH_TOO_MANY_PARAMS);
    free(p);
}

static void test_xtext(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } ok[] = {{"abc", "abc"}, {"a+2Bb", "a+b"}, {"rfc822+3Ba@b", "rfc822;a@b"}, {"", ""}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char buf[64];
        strcpy(buf, ok[i].in);
        assert_int_equal(smtp_xtext_decode(buf), 0);
        assert_string_equal(buf, ok[i].out);
    }
    static const char *const bad[] = {"a+2", "a+zz", "a+2b", "a=b", "a b", "+00"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char buf[64];
        strcpy(buf, bad[i]);
        if (smtp_xtext_decode(buf) != -1)
            fail_msg("xtext '%s' accepted", bad[i]);
    }
}

static void test_base64_and_plain(void **state)
{
    (void)state;
    char out[128];
    /* "\0alice@example.it\0secret" */
    int n = smtp_base64_decode("AGFsaWNlQGV4YW1wbGUuaXQAc2VjcmV0", out, sizeof out);
    assert_int_equal(n, 24);
    const char *z, *u, *p;
    assert_int_equal(smtp_sasl_plain_split(out, (size_t)n, &z, &u, &p), 0);
    assert_string_equal(z, "");
    assert_string_equal(u, "alice@example.it");
    assert_string_equal(p, "secret");
    assert_int_equal(smtp_base64_decode("YQ==", out, sizeof out), 1);
    assert_string_equal(out, "a");
    assert_int_equal(smtp_base64_decode("YWI=", out, sizeof out), 2);
    assert_int_equal(smtp_base64_decode("YWJj", out, sizeof out), 3);
    assert_int_equal(smtp_base64_decode("YQ=", out, sizeof out), -1);
    assert_int_equal(smtp_base64_decode("Y!==", out, sizeof out), -1);
    assert_int_equal(smtp_base64_decode("Y=Q=", out, sizeof out), -1);
    assert_int_equal(smtp_base64_decode("YWJj", out, 3), -1);
    /* PLAIN needs two NULs, a user and a password */
    assert_int_equal(smtp_sasl_plain_split("a\0b", 3, &z, &u, &p), -1);
    assert_int_equal(smtp_sasl_plain_split("\0\0pw", 4, &z, &u, &p), -1);
    assert_int_equal(smtp_sasl_plain_split("\0u\0", 3, &z, &u, &p), -1);
    char enc[16];
    assert_int_equal(smtp_base64_encode("ab", 2, enc, sizeof enc), 4);
    assert_string_equal(enc, "YWI=");
}

static void test_domains(void **state)
{
    (void)state;
    assert_true(smtp_domain_valid("example.it", false));
    assert_true(smtp_domain_valid("a-b.example.it", false));
    assert_true(smtp_domain_valid("[IPv6:::1]", false));
    assert_false(smtp_domain_valid("", false));
    assert_false(smtp_domain_valid("a_b.it", false));
    assert_false(smtp_domain_valid("ex\xc3\xa8.it", false));
    assert_true(smtp_domain_valid("ex\xc3\xa8.it", true));
    char label[80];
    memset(label, 'a', 64);
    strcpy(label + 64, ".it");
    assert_false(smtp_domain_valid(label, false));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_reader), cmocka_unit_test(test_verbs),
        cmocka_unit_test(test_paths),       cmocka_unit_test(test_path_too_long),
        cmocka_unit_test(test_xtext),       cmocka_unit_test(test_base64_and_plain),
        cmocka_unit_test(test_domains),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
