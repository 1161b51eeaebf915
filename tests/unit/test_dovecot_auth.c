/*
 * test_dovecot_auth.c - the Dovecot auth client: the reply parser (table of
 * cases, each fed whole and one octet at a time) and the client against a
 * fake server thread on a socketpair (what we send, what we make of OK,
 * FAIL, FAIL temp, CONT, garbage, silence).
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
#include <unistd.h>

#include "lib/lib.h"
#include "store/store.h"

#define HANDSHAKE "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n" \
                  "SPID\t42\nCUID\t7\nCOOKIE\t0123456789abcdef\nDONE\n"

struct parse_case {
    enum dovecot_mode mode;
    const char *input;
    int ret;        /* of the last feed: 1 done, -1 error, 0 more */
    int result;     /* when done */
};

static const struct parse_case cases[] = {
    {DOVECOT_MODE_AUTH, HANDSHAKE "OK\t1\tuser=alice@a.test\n", 1, DOVECOT_OK},
    {DOVECOT_MODE_AUTH, HANDSHAKE "FAIL\t1\tuser=alice@a.test\n", 1, DOVECOT_FAIL},
    {DOVECOT_MODE_AUTH, HANDSHAKE "FAIL\t1\ttemp\treason=db down\n", 1, DOVECOT_TEMP},
    {DOVECOT_MODE_AUTH, HANDSHAKE "FAIL\t1\tcode=temp_fail\n", 1, DOVECOT_TEMP},
    {DOVECOT_MODE_AUTH, HANDSHAKE "CONT\t1\t\n", -1, DOVECOT_TEMP},
    {DOVECOT_MODE_AUTH, HANDSHAKE "OK\t2\tuser=x\n", -1, DOVECOT_TEMP},
    {DOVECOT_MODE_AUTH, HANDSHAKE "BOGUS\t1\n", -1, DOVECOT_TEMP},
    {DOVECOT_MODE_AUTH, "VERSION\t2\t0\n", -1, DOVECOT_TEMP},
    {DOVECOT_MODE_AUTH, "MECH\tPLAIN\n", -1, DOVECOT_TEMP},
    {DOVECOT_MODE_AUTH, "VERSION\t1\t2\nMECH\tLOGIN\nDONE\n", -1, DOVECOT_TEMP},
    {DOVECOT_MODE_AUTH, HANDSHAKE, 0, DOVECOT_TEMP},
    {DOVECOT_MODE_AUTH, HANDSHAKE "OK\t1", 0, DOVECOT_TEMP},       /* no LF yet */
    {DOVECOT_MODE_AUTH, HANDSHAKE "OK\t1\r\n", 1, DOVECOT_OK},
    {DOVECOT_MODE_USERDB, "VERSION\t1\t1\nSPID\t9\nUSER\t1\ta@b\thome=/x\n", 1, DOVECOT_OK},
    {DOVECOT_MODE_USERDB, "VERSION\t1\t1\nSPID\t9\nNOTFOUND\t1\n", 1, DOVECOT_FAIL},
    {DOVECOT_MODE_USERDB, "VERSION\t1\t1\nSPID\t9\nFAIL\t1\treason=x\n", 1, DOVECOT_TEMP},
    {DOVECOT_MODE_USERDB, "VERSION\t1\t1\nSPID\t9\nUSER\t7\ta\n", -1, DOVECOT_TEMP},
    {DOVECOT_MODE_USERDB, "SPID\t9\n", -1, DOVECOT_TEMP},
};

static void test_parser_table(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const struct parse_case *k = &cases[c];
        for (int bytewise = 0; bytewise < 2; bytewise++) {
            struct dovecot_parse *p = malloc(sizeof *p);
            dovecot_parse_init(p, k->mode);
            size_t n = strlen(k->input);
            int r = 0;
            if (bytewise) {
                for (size_t i = 0; i < n && r == 0; i++)
                    r = dovecot_parse_feed(p, k->input + i, 1);
            } else {
                r = dovecot_parse_feed(p, k->input, n);
            }
            if (r != k->ret)
                fail_msg("case %zu (%s): got %d, want %d", c, bytewise ? "bytewise" : "whole",
                         r, k->ret);
            if (r == 1)
                assert_int_equal(p->result, k->result);
            free(p);
        }
    }
}

static void test_parser_limits(void **state)
{
    (void)state;
    struct dovecot_parse *p = malloc(sizeof *p);
    dovecot_parse_init(p, DOVECOT_MODE_AUTH);
    char *big = malloc(DOVECOT_LINE_MAX + 10);
    memset(big, 'A', DOVECOT_LINE_MAX + 10);
    assert_int_equal(dovecot_parse_feed(p, big, DOVECOT_LINE_MAX + 10), -1);
    /* too many lines */
    dovecot_parse_init(p, DOVECOT_MODE_AUTH);
    assert_int_equal(dovecot_parse_feed(p, "VERSION\t1\t2\n", 12), 0);
    int r = 0;
    for (int i = 0; i < DOVECOT_LINES_MAX + 5 && r == 0; i++)
        r = dovecot_parse_feed(p, "COOKIE\tx\n", 9);
    assert_int_equal(r, -1);
    /* a NUL inside a line */
    dovecot_parse_init(p, DOVECOT_MODE_AUTH);
    assert_int_equal(dovecot_parse_feed(p, "VERSION\t1\0\t2\n", 13), -1);
    free(big);
    free(p);
}

/* ---- the client against a fake server ---------------------------------- */

struct fake {
    int fd;
    const char *handshake;   /* sent at once */
    const char *answer;      /* sent after the request line; NULL = silence */
    char got[4096];          /* what the client sent */
    size_t gotlen;
};

static void *fake_server(void *arg)
{
    struct fake *f = arg;
    if (f->handshake)
        fs_write_all(f->fd, f->handshake, strlen(f->handshake));
    /* read until the request line (AUTH or USER) is complete */
    for (;;) {
        ssize_t r = read(f->fd, f->got + f->gotlen, sizeof f->got - 1 - f->gotlen);
        if (r <= 0)
            break;
        f->gotlen += (size_t)r;
        f->got[f->gotlen] = '\0';
        const char *req = strstr(f->got, "AUTH\t");
        if (req == NULL)
            req = strstr(f->got, "USER\t");
        if (req != NULL && strchr(req, '\n') != NULL)
            break;
    }
    if (f->answer)
        fs_write_all(f->fd, f->answer, strlen(f->answer));
    return NULL;
}

static char g_canon[256];

static int run_auth(struct fake *f, const char *user, const char *pass, unsigned ms, bool userdb)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    f->fd = sv[1];
    pthread_t th;
    pthread_create(&th, NULL, fake_server, f);
    char err[256] = "";
    int r = userdb ? dovecot_userdb_lookup_fd(sv[0], user, ms, err, sizeof err)
                   : dovecot_auth_plain_fd(sv[0], user, pass, "192.0.2.7", ms, g_canon,
                                           sizeof g_canon, err, sizeof err);
    close(sv[0]);   /* unblocks a silent fake server's read */
    pthread_join(th, NULL);
    close(sv[1]);
    return r;
}

static void test_client_ok(void **state)
{
    (void)state;
    struct fake f = {.handshake = HANDSHAKE, .answer = "OK\t1\tuser=alice@a.test\n"};
    assert_int_equal(run_auth(&f, "alice@a.test", "secret", 2000, false), DOVECOT_OK);
    assert_non_null(strstr(f.got, "VERSION\t1\t2\nCPID\t"));
    /* base64("\0alice@a.test\0secret") */
    assert_non_null(strstr(f.got, "AUTH\t1\tPLAIN\tservice=smtp\tsecured\tnologin\t"
                                  "rip=192.0.2.7\tresp=AGFsaWNlQGEudGVzdABzZWNyZXQ=\n"));
    assert_string_equal(g_canon, "alice@a.test");
    /* the canonical name Dovecot settled on (a login by another name) */
    struct fake f2 = {.handshake = HANDSHAKE, .answer = "OK\t1\tuser=Alice.Rossi@A.test\n"};
    assert_int_equal(run_auth(&f2, "arossi", "secret", 2000, false), DOVECOT_OK);
    assert_string_equal(g_canon, "Alice.Rossi@A.test");
    struct fake f3 = {.handshake = HANDSHAKE, .answer = "OK\t1\n"};
    assert_int_equal(run_auth(&f3, "arossi", "secret", 2000, false), DOVECOT_OK);
    assert_string_equal(g_canon, "");
    /* a name with a space or control character is not taken */
    struct fake f4 = {.handshake = HANDSHAKE, .answer = "OK\t1\tuser=a b@a.test\n"};
    assert_int_equal(run_auth(&f4, "arossi", "secret", 2000, false), DOVECOT_OK);
    assert_string_equal(g_canon, "");
}

static void test_client_fail_and_temp(void **state)
{
    (void)state;
    struct fake f1 = {.handshake = HANDSHAKE, .answer = "FAIL\t1\tuser=alice@a.test\n"};
    assert_int_equal(run_auth(&f1, "alice@a.test", "wrong", 2000, false), DOVECOT_FAIL);
    struct fake f2 = {.handshake = HANDSHAKE, .answer = "FAIL\t1\ttemp\n"};
    assert_int_equal(run_auth(&f2, "alice@a.test", "x", 2000, false), DOVECOT_TEMP);
    struct fake f3 = {.handshake = HANDSHAKE, .answer = "CONT\t1\t\n"};
    assert_int_equal(run_auth(&f3, "alice@a.test", "x", 2000, false), DOVECOT_TEMP);
    struct fake f4 = {.handshake = "garbage\n", .answer = NULL};
    assert_int_equal(run_auth(&f4, "alice@a.test", "x", 2000, false), DOVECOT_TEMP);
    /* a tab or newline cannot reach the server: refused before any I/O */
    struct fake f5 = {.handshake = HANDSHAKE, .answer = "OK\t1\n"};
    assert_int_equal(run_auth(&f5, "al\nice@a.test", "x", 2000, false), DOVECOT_FAIL);
    assert_int_equal(f5.gotlen, 0);
}

static void test_client_timeout(void **state)
{
    (void)state;
    /* handshake, then silence: the deadline ends the wait */
    struct fake f = {.handshake = HANDSHAKE, .answer = NULL};
    assert_int_equal(run_auth(&f, "alice@a.test", "x", 300, false), DOVECOT_TEMP);
    struct fake g = {.handshake = NULL, .answer = NULL};
    assert_int_equal(run_auth(&g, "alice@a.test", "x", 300, false), DOVECOT_TEMP);
}

static void test_client_userdb(void **state)
{
    (void)state;
    const char *hs = "VERSION\t1\t1\nSPID\t9\n";
    struct fake f = {.handshake = hs, .answer = "USER\t1\talice@a.test\t\n"};
    assert_int_equal(run_auth(&f, "alice@a.test", NULL, 2000, true), DOVECOT_OK);
    assert_non_null(strstr(f.got, "VERSION\t1\t0\nUSER\t1\talice@a.test\tservice=smtp\n"));
    struct fake g = {.handshake = hs, .answer = "NOTFOUND\t1\n"};
    assert_int_equal(run_auth(&g, "nobody@a.test", NULL, 2000, true), DOVECOT_FAIL);
    struct fake h = {.handshake = hs, .answer = "FAIL\t1\n"};
    assert_int_equal(run_auth(&h, "nobody@a.test", NULL, 2000, true), DOVECOT_TEMP);
}

static void test_no_server(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(dovecot_auth_plain("/nonexistent/auth-client", "a@b", "x", NULL, 500, NULL,
                                        0, err, sizeof err),
                     DOVECOT_TEMP);
    assert_non_null(strstr(err, "cannot connect"));
    assert_int_equal(dovecot_userdb_lookup("/nonexistent/auth-userdb", "a@b", 500, err,
                                           sizeof err),
                     DOVECOT_TEMP);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);   /* the fake server may write to a closed client */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parser_table),  cmocka_unit_test(test_parser_limits),
        cmocka_unit_test(test_client_ok),     cmocka_unit_test(test_client_fail_and_temp),
        cmocka_unit_test(test_client_timeout), cmocka_unit_test(test_client_userdb),
        cmocka_unit_test(test_no_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
