/*
 * test_milter_apply.c - the modifications a milter asks for at end of
 * message, against an in-process fake filter (milter_fake.h): which are
 * taken, negotiated, checked and limited; then milter_apply as a table of
 * message edits (ordinary mail and signed PEC).  Protocol: test_milter_proto.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "filters/milter.h"
#include "milter_fake.h"

/* ---- end of message: modifications -------------------------------- */

static int hook_mods(struct fake *f, char cmd, const char *d, size_t len)
{
    (void)d, (void)len;
    if (cmd != 'E')
        return 0;
    uint32_t i0 = 0, i2 = 2;
    fk_str2(f, 'h', NULL, "X-Added", "yes");
    fk_str2(f, 'i', &i0, "X-Top", "first");
    fk_str2(f, 'm', &i2, "Received", "");
    fk_send(f, 'b', "new ", 4);
    fk_send(f, 'p', NULL, 0);
    fk_send(f, 'b', "body\r\n", 6);
    fk_str2(f, '+', NULL, "<x@dest.example>", NULL);
    fk_str2(f, '2', NULL, "<y@dest.example>", "NOTIFY=NEVER");
    fk_str2(f, '-', NULL, "<a@dest.example>", NULL);
    fk_str2(f, 'e', NULL, "<bounce@src.example>", NULL);
    fk_str2(f, 'q', NULL, "looks odd", NULL);
    fk_send(f, 'c', NULL, 0);
    return 1;
}

static void test_modifications(void **state)
{
    (void)state;
    struct fake f = {.hook = hook_mods, .actions = ALL_ACTIONS};
    struct milter_result r;
    run_simple(&f, 1, &r);
    assert_int_equal(r.action, MILTER_QUARANTINE);
    assert_string_equal(r.quarantine_reason, "looks odd");
    assert_int_equal(r.nmods, 8);
    assert_int_equal(r.mods[0].kind, MILTER_MOD_ADD_HEADER);
    assert_string_equal(r.mods[0].name, "X-Added");
    assert_int_equal(r.mods[1].kind, MILTER_MOD_INSERT_HEADER);
    assert_int_equal(r.mods[1].index, 0);
    assert_int_equal(r.mods[2].kind, MILTER_MOD_CHANGE_HEADER);
    assert_int_equal(r.mods[2].index, 2);
    assert_string_equal(r.mods[2].value, "");
    assert_int_equal(r.mods[3].kind, MILTER_MOD_REPLACE_BODY);
    assert_int_equal(r.mods[3].len, 10);
    assert_memory_equal(r.mods[3].data, "new body\r\n", 10);
    assert_int_equal(r.mods[4].kind, MILTER_MOD_ADD_RCPT);
    assert_string_equal(r.mods[4].value, "x@dest.example");
    assert_string_equal(r.mods[5].value, "y@dest.example");
    assert_int_equal(r.mods[6].kind, MILTER_MOD_DEL_RCPT);
    assert_string_equal(r.mods[6].value, "a@dest.example");
    assert_int_equal(r.mods[7].kind, MILTER_MOD_CHANGE_FROM);
    assert_string_equal(r.mods[7].value, "bounce@src.example");
    milter_result_free(&r);
    assert_null(r.mods);
}

static void test_mod_not_negotiated(void **state)
{
    (void)state;
    struct fake f = {.hook = hook_mods, .actions = 0x01};   /* ADDHDRS only */
    struct milter_result r;
    run_simple(&f, 1, &r);
    assert_int_equal(r.action, MILTER_FAILED);
    assert_non_null(strstr(r.err, "not negotiated"));
    assert_int_equal(r.nmods, 0);
    milter_result_free(&r);
}

static int hook_early_mod(struct fake *f, char cmd, const char *d, size_t len)
{
    (void)d, (void)len;
    if (cmd != 'N')
        return 0;
    fk_str2(f, 'h', NULL, "X-Early", "1");
    fk_send(f, 'c', NULL, 0);
    return 1;
}

static void test_mod_before_eom(void **state)
{
    (void)state;
    struct fake f = {.hook = hook_early_mod, .actions = ALL_ACTIONS};
    struct milter_result r;
    run_simple(&f, 1, &r);
    assert_int_equal(r.action, MILTER_FAILED);
    assert_non_null(strstr(r.err, "before the end of the message"));
    milter_result_free(&r);
}

static const char *g_bad_name, *g_bad_value;

static int hook_bad_header(struct fake *f, char cmd, const char *d, size_t len)
{
    (void)d, (void)len;
    if (cmd != 'E')
        return 0;
    fk_str2(f, 'h', NULL, g_bad_name, g_bad_value);
    fk_send(f, 'a', NULL, 0);
    return 1;
}

static void test_mod_bad_header(void **state)
{
    (void)state;
    const char *cases[][2] = {{"X-A", "x\r\nBcc: evil@example"}, {"Bad Name", "v"},
                              {"X:Y", "v"}, {"", "v"}, {"X-A", "v\r"}};
    for (size_t i = 0; i < 5; i++) {
        struct fake f = {.hook = hook_bad_header, .actions = ALL_ACTIONS};
        struct milter_result r;
        g_bad_name = cases[i][0], g_bad_value = cases[i][1];
        run_simple(&f, 1, &r);
        if (r.action != MILTER_FAILED)
            fail_msg("case %zu accepted", i);
        milter_result_free(&r);
    }
}

static int hook_many_mods(struct fake *f, char cmd, const char *d, size_t len)
{
    (void)d, (void)len;
    if (cmd != 'E')
        return 0;
    for (int i = 0; i < 1001; i++)
        fk_str2(f, 'h', NULL, "X-N", "1");
    fk_send(f, 'a', NULL, 0);
    return 1;
}

static void test_too_many_mods(void **state)
{
    (void)state;
    struct fake f = {.hook = hook_many_mods, .actions = ALL_ACTIONS};
    struct milter_result r;
    run_simple(&f, 1, &r);
    assert_int_equal(r.action, MILTER_FAILED);
    assert_non_null(strstr(r.err, "more than 1000"));
    milter_result_free(&r);
}

static int hook_big_body(struct fake *f, char cmd, const char *d, size_t len)
{
    (void)d, (void)len;
    if (cmd != 'E')
        return 0;
    char *chunk = calloc(1, 600000);
    for (int i = 0; i < 4; i++)      /* 2.4 MB for a 60-octet message */
        fk_send(f, 'b', chunk, 600000);
    free(chunk);
    fk_send(f, 'a', NULL, 0);
    return 1;
}

static void test_replbody_limit(void **state)
{
    (void)state;
    struct fake f = {.hook = hook_big_body, .actions = ALL_ACTIONS};
    struct milter_result r;
    run_simple(&f, 1, &r);
    assert_int_equal(r.action, MILTER_FAILED);
    assert_non_null(strstr(r.err, "limit"));
    milter_result_free(&r);
}

/* ---- milter_apply ------------------------------------------------------------ */

#define HDR(k, i, n, v) {.kind = (k), .index = (i), .name = (char *)(n), .value = (char *)(v)}

static const char AMSG[] = "Received: from a\r\n\tby b\r\nReceived: from c\r\n"
                           "From: <s@src.example>\r\nSubject: one\r\n two\r\n\r\nbody\r\n";

struct apply_case {
    const char *name;
    const char *msg;
    struct milter_mod mods[4];
    size_t nmods;
    bool pec;
    const char *out;     /* NULL: refused, err contains errpart */
    const char *errpart;
};

static const struct apply_case apply_cases[] = {
    {"add", AMSG, {HDR(MILTER_MOD_ADD_HEADER, 0, "X-A", "1")}, 1, false,
     "Received: from a\r\n\tby b\r\nReceived: from c\r\nFrom: <s@src.example>\r\n"
     "Subject: one\r\n two\r\nX-A: 1\r\n\r\nbody\r\n", NULL},
    {"insert top", AMSG, {HDR(MILTER_MOD_INSERT_HEADER, 0, "DKIM-Signature", "v=1;\n\tb=x")}, 1,
     false, "DKIM-Signature: v=1;\r\n\tb=x\r\nReceived: from a\r\n\tby b\r\nReceived: from c\r\n"
     "From: <s@src.example>\r\nSubject: one\r\n two\r\n\r\nbody\r\n", NULL},
    {"insert 2 and past the end", AMSG,
     {HDR(MILTER_MOD_INSERT_HEADER, 2, "X-2", "b"), HDR(MILTER_MOD_INSERT_HEADER, 99, "X-E", "e")},
     2, false, "Received: from a\r\n\tby b\r\nReceived: from c\r\nX-2: b\r\n"
     "From: <s@src.example>\r\nSubject: one\r\n two\r\nX-E: e\r\n\r\nbody\r\n", NULL},
    {"change second occurrence", AMSG, {HDR(MILTER_MOD_CHANGE_HEADER, 2, "received", "from z")}, 1,
     false, "Received: from a\r\n\tby b\r\nreceived: from z\r\nFrom: <s@src.example>\r\n"
     "Subject: one\r\n two\r\n\r\nbody\r\n", NULL},
    {"change folded, index 0 = 1", AMSG, {HDR(MILTER_MOD_CHANGE_HEADER, 0, "Subject", "new")}, 1,
     false, "Received: from a\r\n\tby b\r\nReceived: from c\r\nFrom: <s@src.example>\r\n"
     "Subject: new\r\n\r\nbody\r\n", NULL},
    {"delete folded first", AMSG, {HDR(MILTER_MOD_CHANGE_HEADER, 1, "Received", "")}, 1, false,
     "Received: from c\r\nFrom: <s@src.example>\r\nSubject: one\r\n two\r\n\r\nbody\r\n", NULL},
    {"change missing adds, delete missing is nothing", AMSG,
     {HDR(MILTER_MOD_CHANGE_HEADER, 3, "Received", "from q"),
      HDR(MILTER_MOD_CHANGE_HEADER, 1, "X-None", "")}, 2, false,
     "Received: from a\r\n\tby b\r\nReceived: from c\r\nFrom: <s@src.example>\r\n"
     "Subject: one\r\n two\r\nReceived: from q\r\n\r\nbody\r\n", NULL},
    {"replace body, LF to CRLF", AMSG,
     {{.kind = MILTER_MOD_REPLACE_BODY, .data = (char *)"l1\nl2\r\n", .len = 7}}, 1, false,
     "Received: from a\r\n\tby b\r\nReceived: from c\r\nFrom: <s@src.example>\r\n"
     "Subject: one\r\n two\r\n\r\nl1\r\nl2\r\n", NULL},
    {"envelope changes are not applied", AMSG,
     {{.kind = MILTER_MOD_ADD_RCPT, .value = (char *)"x@y"},
      {.kind = MILTER_MOD_CHANGE_FROM, .value = (char *)"b@y"}}, 2, false, AMSG, NULL},
    {"no mods: same bytes, even without a body", "Subject: x", {{0}}, 0, false, "Subject: x", NULL},
    {"no header section", "\r\nbody\r\n", {HDR(MILTER_MOD_ADD_HEADER, 0, "X-A", "1")}, 1, false,
     "X-A: 1\r\n\r\nbody\r\n", NULL},
    {"no blank line", "Subject: x", {HDR(MILTER_MOD_ADD_HEADER, 0, "X-A", "1")}, 1, false,
     "Subject: x\r\nX-A: 1\r\n", NULL},
    {"injected field refused", AMSG, {HDR(MILTER_MOD_ADD_HEADER, 0, "X-A", "1\r\nBcc: e@x")}, 1,
     false, NULL, "fold"},
    {"pec: DKIM-Signature and Received allowed", AMSG,
     {HDR(MILTER_MOD_INSERT_HEADER, 0, "DKIM-Signature", "v=1"),
      HDR(MILTER_MOD_ADD_HEADER, 0, "X-Spam-Status", "No")}, 2, true,
     "DKIM-Signature: v=1\r\nReceived: from a\r\n\tby b\r\nReceived: from c\r\n"
     "From: <s@src.example>\r\nSubject: one\r\n two\r\nX-Spam-Status: No\r\n\r\nbody\r\n", NULL},
    {"pec: change refused, nothing applied", AMSG,
     {HDR(MILTER_MOD_ADD_HEADER, 0, "X-A", "1"), HDR(MILTER_MOD_CHANGE_HEADER, 1, "Subject", "x")},
     2, true, NULL, "CHGHEADER Subject"},
    {"pec: body refused", AMSG, {{.kind = MILTER_MOD_REPLACE_BODY, .data = (char *)"x", .len = 1}},
     1, true, NULL, "REPLBODY"},
    {"pec: new Subject refused", AMSG, {HDR(MILTER_MOD_ADD_HEADER, 0, "subject", "x")}, 1, true,
     NULL, "ADDHEADER subject"},
    {"pec: Content-Type refused", AMSG, {HDR(MILTER_MOD_INSERT_HEADER, 0, "Content-Type", "x")},
     1, true, NULL, "Content-Type"},
    {"pec: X-Trasporto refused", AMSG, {HDR(MILTER_MOD_ADD_HEADER, 0, "X-Trasporto", "errore")},
     1, true, NULL, "X-Trasporto"},
    {"pec: envelope refused", AMSG, {{.kind = MILTER_MOD_DEL_RCPT, .value = (char *)"x@y"}}, 1,
     true, NULL, "DELRCPT"},
};

static void test_apply_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof apply_cases / sizeof apply_cases[0]; i++) {
        const struct apply_case *c = &apply_cases[i];
        struct milter_result r = {.mods = (struct milter_mod *)c->mods, .nmods = c->nmods};
        char *out = (char *)1, err[256] = "";
        size_t outlen = 99;
        int rc = milter_apply(&r, c->msg, strlen(c->msg), c->pec, &out, &outlen, err, sizeof err);
        if (c->out) {
            if (rc != 0)
                fail_msg("%s: refused: %s", c->name, err);
            if (outlen != strlen(c->out) || memcmp(out, c->out, outlen) != 0)
                fail_msg("%s: got\n%.*s", c->name, (int)outlen, out);
            free(out);
        } else {
            if (rc != -1 || out != NULL || outlen != 0)
                fail_msg("%s: applied", c->name);
            if (!strstr(err, c->errpart))
                fail_msg("%s: error \"%s\"", c->name, err);
        }
    }
}

/* mods from a real conversation apply in arrival order */
static void test_apply_from_run(void **state)
{
    (void)state;
    struct fake f = {.hook = hook_mods, .actions = ALL_ACTIONS};
    struct milter_result r;
    struct milter_facts fa = facts(1);
    run_fake(&f, &fa, AMSG, sizeof AMSG - 1, 2000, &r);
    assert_int_equal(r.action, MILTER_QUARANTINE);
    char *out, err[256];
    size_t outlen;
    assert_int_equal(milter_apply(&r, AMSG, sizeof AMSG - 1, false, &out, &outlen, err, sizeof err), 0);
    const char *want = "X-Top: first\r\nReceived: from a\r\n\tby b\r\nFrom: <s@src.example>\r\n"
                       "Subject: one\r\n two\r\nX-Added: yes\r\n\r\nnew body\r\n";
    assert_int_equal(outlen, strlen(want));
    assert_memory_equal(out, want, outlen);
    free(out);
    assert_int_equal(milter_apply(&r, AMSG, sizeof AMSG - 1, true, &out, &outlen, err, sizeof err), -1);
    assert_non_null(strstr(err, "CHGHEADER Received"));
    milter_result_free(&r);
}


int main(void)
{
    signal(SIGPIPE, SIG_IGN);     /* the fake filter writes to clients that are gone */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_modifications),     cmocka_unit_test(test_mod_not_negotiated),
        cmocka_unit_test(test_mod_before_eom),    cmocka_unit_test(test_mod_bad_header),
        cmocka_unit_test(test_too_many_mods),     cmocka_unit_test(test_replbody_limit),
        cmocka_unit_test(test_apply_table),       cmocka_unit_test(test_apply_from_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
